/* GPU stages on a real device (label gpu; skipped, exit 77, without one): util.gpu_spin's
 * device time matches the duration asked for (within 10 %) and the host time covers it;
 * `sms` really occupies that many multiprocessors (two half-device spins run side by side,
 * two whole-device spins one after the other); util.gpu_copy moves 64 MiB host-to-device from
 * pinned memory at more than 1 GB/s, and every direction reports a positive device time and
 * its bytes. */
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "gpu/cuda.h"
#include "gpu_fixture.h"
#include "run_fixture.h"

#define MS 1000000LL

static cb_cuda g_cuda;
static cb_cuda_device_info g_info;

/* Runs a one-stage pipeline of `stage` (on cuda:0, pipeline on cpu) for n queries; 0 = ran. */
static int run_stage(run_fixture *f, const char *stage, int n) {
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "name: gpu\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [0]\n"
             "    loadgen: {component: closed, warmup_queries: 2, max_queries: %d}\n"
             "    stages:\n"
             "      - {id: 0, name: g, outputs: [], %s}\n",
             n, stage);
    return run_fixture_ok(f, yaml, NULL, NULL);
}

static void test_spin_duration(void) {
    run_fixture f;
    if (run_stage(&f, "component: util.gpu_spin, config: {duration_us: 2000, device: 'cuda:0'}",
                  20) == 0) {
        cb_pipeline_record r = run_fixture_records(&f, 0);
        CB_CHECK_EQ_INT(r.n_stage_events, 20);
        for (size_t i = 0; i < r.n_stage_events; i++) {
            const cb_stage_event *e = &r.stage_events[i];
            if (e->query_id < 2) continue; /* warm-up */
            CB_CHECK_CMP_INT(e->device_ns, >=, 1800000);
            CB_CHECK_CMP_INT(e->device_ns, <=, 2200000);
            CB_CHECK_CMP_INT(e->end_ns - e->start_ns, >=, e->device_ns);
        }
    }
    run_fixture_fini(&f);
}

typedef struct spin_job {
    cb_cuda_spin *s;
    int64_t device_ns;
    int rc;
    pthread_barrier_t *go;
} spin_job;

static void *spin_thread(void *arg) {
    spin_job *j = arg;
    cb_error err;
    cb_error_clear(&err);
    pthread_barrier_wait(j->go);
    j->rc = g_cuda.api->spin_run(j->s, 20 * MS, &j->device_ns, &err);
    if (j->rc) printf("# spin_run: %s\n", err.msg);
    return NULL;
}

/* Wall time of two concurrent 20 ms spins of `sms` SMs each, from two threads and streams. */
static int64_t two_spins_wall(int sms) {
    cb_error err;
    cb_error_clear(&err);
    cb_cuda_spin *s[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        int rc = g_cuda.api->spin_create(0, sms, 0, CB_GPU_WAIT_BLOCK, &s[i], &err);
        CB_CHECK_EQ_INT(rc, CB_OK);
        if (rc) {
            printf("# spin_create(sms %d): %s\n", sms, err.msg);
            g_cuda.api->spin_destroy(s[0]);
            return -1;
        }
    }
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 3);
    spin_job j[2] = {{s[0], 0, 0, &go}, {s[1], 0, 0, &go}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, spin_thread, &j[i]);
    pthread_barrier_wait(&go);
    int64_t t0 = cb_clock_now_ns();
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    int64_t wall = cb_clock_now_ns() - t0;
    pthread_barrier_destroy(&go);
    for (int i = 0; i < 2; i++) {
        CB_CHECK_EQ_INT(j[i].rc, CB_OK);
        g_cuda.api->spin_destroy(s[i]);
    }
    printf("# two spins of 20 ms on %d SMs each: %.1f ms wall\n", sms, (double)wall / 1e6);
    return wall;
}

static void test_spin_sms(void) {
    int half = g_info.sms / 2;
    CB_CHECK(half >= 1);
    if (half < 1) return;
    /* Half the SMs through the stage: the same duration. */
    run_fixture f;
    char stage[256];
    snprintf(stage, sizeof stage,
             "component: util.gpu_spin, config: {duration_us: 2000, sms: %d, device: 'cuda:0'}",
             half);
    if (run_stage(&f, stage, 10) == 0) {
        cb_pipeline_record r = run_fixture_records(&f, 0);
        for (size_t i = 0; i < r.n_stage_events; i++) {
            if (r.stage_events[i].query_id < 2) continue;
            CB_CHECK_CMP_INT(r.stage_events[i].device_ns, >=, 1800000);
            CB_CHECK_CMP_INT(r.stage_events[i].device_ns, <=, 2200000);
        }
    }
    run_fixture_fini(&f);
    /* Two half-device spins fit side by side; two whole-device spins take turns. */
    int64_t w_half = two_spins_wall(half);
    int64_t w_all = two_spins_wall(0);
    CB_CHECK(w_half > 0 && w_half < 30 * MS);
    CB_CHECK(w_all >= 36 * MS);
    /* More SMs than the device has: refused, naming the key. */
    cb_error err;
    cb_error_clear(&err);
    cb_cuda_spin *s = NULL;
    CB_CHECK_EQ_INT(g_cuda.api->spin_create(0, g_info.sms + 1, 0, CB_GPU_WAIT_BLOCK, &s, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "sms:");
    CB_CHECK(s == NULL);
}

static void test_copy_h2d_bandwidth(void) {
    run_fixture f;
    if (run_stage(&f, "component: util.gpu_copy, config: {bytes: 67108864, direction: h2d,"
                      " pinned: true, device: 'cuda:0'}", 10) == 0) {
        cb_pipeline_record r = run_fixture_records(&f, 0);
        CB_CHECK_EQ_INT(r.n_stage_events, 10);
        for (size_t i = 0; i < r.n_stage_events; i++) {
            const cb_stage_event *e = &r.stage_events[i];
            CB_CHECK_CMP_INT(e->device_ns, >, 0);
            if (e->query_id < 2 || e->device_ns <= 0) continue;
            double gbps = 67108864.0 / (double)e->device_ns; /* bytes per ns = GB/s */
            if (!(gbps > 1.0))
                cb__test_fail(__FILE__, __LINE__, "h2d bandwidth %.2f GB/s", gbps);
            CB_CHECK_CMP_INT(e->end_ns - e->start_ns, >=, e->device_ns);
        }
        /* the bytes metric: one report of 64 MiB per query */
        CB_CHECK_EQ_INT(r.n_metrics, 10);
        for (size_t i = 0; i < r.n_metrics; i++) CB_CHECK(r.metrics[i].value == 67108864.0);
    }
    run_fixture_fini(&f);
}

static void test_copy_directions(void) {
    const char *cfg[] = {
        "component: util.gpu_copy, config: {bytes: 1048576, direction: d2h, device: 'cuda:0'}",
        "component: util.gpu_copy, config: {bytes: 1048576, direction: d2d, device: 'cuda:0'}",
        ("component: util.gpu_copy, config: {bytes: 1048576, direction: h2d, pinned: false,"
         " device: 'cuda:0'}"),
    };
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        run_fixture f;
        if (run_stage(&f, cfg[k], 5) == 0) {
            cb_pipeline_record r = run_fixture_records(&f, 0);
            CB_CHECK_EQ_INT(r.n_stage_events, 5);
            for (size_t i = 0; i < r.n_stage_events; i++)
                CB_CHECK_CMP_INT(r.stage_events[i].device_ns, >, 0);
        }
        run_fixture_fini(&f);
    }
}

int main(void) {
    cb_error err;
    cb_error_clear(&err);
    if (gpu_fixture_open(&g_cuda, 0)) return cb_test_done();
    if (g_cuda.api->device_info(0, &g_info, &err) != CB_OK) {
        cb__test_fail(__FILE__, __LINE__, "device_info: %s", err.msg);
        cb_cuda_close(&g_cuda);
        return cb_test_done();
    }
    printf("# %s, %d SMs, module %s\n", g_info.name, g_info.sms, g_cuda.api->build);
    CB_RUN(test_spin_duration);
    CB_RUN(test_spin_sms);
    CB_RUN(test_copy_h2d_bandwidth);
    CB_RUN(test_copy_directions);
    cb_cuda_close(&g_cuda);
    return cb_test_done();
}
