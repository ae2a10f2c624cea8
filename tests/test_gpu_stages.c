/* GPU stages on a real device (label gpu; skipped, exit 77, without one):
 * - util.gpu_spin's device time matches the duration asked for (within 10 % + 20 us) at 200 us,
 *   2 ms and 20 ms, also right after 200 ms of idling (the spin runs on the GPU's nanosecond
 *   timer, not the SM clock), and the host time covers it;
 * - `sms` really takes that many multiprocessors: two half-device spins run side by side, two
 *   whole-device spins one after the other; a light probe launched during a whole-device spin
 *   waits for it, one launched beside a spin of all SMs but 8 does not;
 * - gpu_wait: a spin waited for with block costs its thread little CPU time, with spin about
 *   all of it; an unknown gpu_wait is refused at load, naming the key (this check needs no
 *   device and runs without one too: it fails the test when it fails, and otherwise leaves the
 *   skip standing);
 * - util.gpu_copy moves 64 MiB host-to-device from pinned memory at more than 1 GB/s, and every
 *   direction reports a positive device time and its bytes.
 * Margins are for a busy 16-core host: a bound on wall time that host delays could break has
 * 5 ms or more to spare, and a co-residency run whose threads were descheduled is repeated. */
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "gpu/cuda.h"
#include "gpu_fixture.h"
#include "run_fixture.h"

#define US 1000LL
#define MS 1000000LL

static cb_cuda g_cuda;
static cb_cuda_device_info g_info;

/* A benchmark of one pipeline of the one stage `stage` (on cuda:0, pipeline on cpu), for n
 * queries after 2 of warm-up. */
static void stage_yaml(char *yaml, size_t size, const char *stage, int n) {
    snprintf(yaml, size,
             "name: gpu\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [0]\n"
             "    loadgen: {component: closed, warmup_queries: 2, max_queries: %d}\n"
             "    stages:\n"
             "      - {id: 0, name: g, outputs: [], %s}\n",
             n, stage);
}

/* Runs stage_yaml(stage, n); 0 = ran. */
static int run_stage(run_fixture *f, const char *stage, int n) {
    char yaml[1024];
    stage_yaml(yaml, sizeof yaml, stage, n);
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

/* A spin object on cuda:0, or NULL (a failed check, with the reason). */
static cb_cuda_spin *make_spin(int sms, unsigned flags, cb_gpu_wait wait) {
    cb_error err;
    cb_error_clear(&err);
    cb_cuda_spin *s = NULL;
    int rc = g_cuda.api->spin_create(0, sms, flags, wait, &s, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    if (rc) {
        printf("# spin_create(sms %d, flags %u, %s): %s\n", sms, flags, cb_gpu_wait_name(wait),
               err.msg);
        return NULL;
    }
    return s;
}

/* One spin of `ns`: its device time, or -1 (a failed check). */
static int64_t spin_once(cb_cuda_spin *s, int64_t ns) {
    cb_error err;
    cb_error_clear(&err);
    int64_t device_ns = 0;
    int rc = g_cuda.api->spin_run(s, ns, &device_ns, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    if (rc) {
        printf("# spin_run(%lld ns): %s\n", (long long)ns, err.msg);
        return -1;
    }
    return device_ns;
}

/* The device time of a spin of `asked` ns is within 10 % + 20 us of it. */
static void check_spin_time(const char *what, int64_t got, int64_t asked) {
    int64_t tol = asked / 10 + 20 * US;
    printf("# %s: asked %.3f ms, device time %.3f ms\n", what, (double)asked / 1e6,
           (double)got / 1e6);
    if (got < asked - tol || got > asked + tol)
        cb__test_fail(__FILE__, __LINE__, "%s: device time %lld ns for a spin of %lld ns "
                      "(allowed: %lld to %lld)", what, (long long)got, (long long)asked,
                      (long long)(asked - tol), (long long)(asked + tol));
}

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Through the API at three lengths, whole device: one warm-up run, then three checked. */
static void test_spin_lengths(void) {
    cb_cuda_spin *s = make_spin(0, 0, CB_GPU_WAIT_BLOCK);
    if (!s) return;
    const int64_t asked[] = {200 * US, 2 * MS, 20 * MS};
    for (size_t k = 0; k < sizeof asked / sizeof asked[0]; k++) {
        if (spin_once(s, asked[k]) < 0) break; /* warm-up */
        for (int i = 0; i < 3; i++) {
            int64_t got = spin_once(s, asked[k]);
            if (got < 0) break;
            check_spin_time("spin", got, asked[k]);
        }
    }
    g_cuda.api->spin_destroy(s);
}

/* After 200 ms of idling (clocks may drop) a spin still lasts what was asked: the kernel
 * counts nanoseconds of the GPU's timer, not SM cycles. */
static void test_spin_after_idle(void) {
    cb_cuda_spin *s = make_spin(0, 0, CB_GPU_WAIT_BLOCK);
    if (!s) return;
    const int64_t asked[] = {2 * MS, 200 * US, 20 * MS};
    if (spin_once(s, 2 * MS) >= 0) { /* warm-up */
        for (size_t k = 0; k < sizeof asked / sizeof asked[0]; k++) {
            cb_clock_sleep_until_ns(cb_clock_now_ns() + 200 * MS);
            int64_t got = spin_once(s, asked[k]);
            if (got < 0) break;
            check_spin_time("spin after 200 ms idle", got, asked[k]);
        }
    }
    g_cuda.api->spin_destroy(s);
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
    /* Half the SMs through the stage (waiting by polling): the same duration. */
    run_fixture f;
    char stage[256];
    snprintf(stage, sizeof stage,
             "component: util.gpu_spin, config: {duration_us: 2000, sms: %d, device: 'cuda:0',"
             " gpu_wait: spin}", half);
    if (run_stage(&f, stage, 10) == 0) {
        cb_pipeline_record r = run_fixture_records(&f, 0);
        for (size_t i = 0; i < r.n_stage_events; i++) {
            if (r.stage_events[i].query_id < 2) continue;
            CB_CHECK_CMP_INT(r.stage_events[i].device_ns, >=, 1800000);
            CB_CHECK_CMP_INT(r.stage_events[i].device_ns, <=, 2200000);
        }
    }
    run_fixture_fini(&f);
    /* Every spin block takes a whole SM (1024 threads, all its shared memory): two launches
     * of half the SMs each fill the device together and run side by side (~20 ms); two
     * whole-device launches cannot share an SM and take turns (>= 40 ms of device time). */
    int64_t w_half = two_spins_wall(half);
    int64_t w_all = two_spins_wall(0);
    CB_CHECK(w_half > 0 && w_half < 30 * MS);
    CB_CHECK(w_all >= 36 * MS);
    /* More SMs than the device has: refused, naming the key. */
    cb_error err;
    cb_error_clear(&err);
    cb_cuda_spin *s = NULL;
    CB_CHECK_EQ_INT(g_cuda.api->spin_create(0, g_info.sms + 1, 0, CB_GPU_WAIT_BLOCK, &s, &err),
                    CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "sms:");
    CB_CHECK(s == NULL);
}

/* Co-residency: thread A spins `big` for 60 ms; thread B, 10 ms after both passed the barrier,
 * launches the light probe (one warp, 0 ns) and times it on the wall clock. */
typedef struct probe_run {
    cb_cuda_spin *big, *probe;
    pthread_barrier_t go;
    int64_t big_call_ns;      /* when A called spin_run */
    int64_t probe_call_ns;    /* when B called spin_run */
    int64_t probe_wall_ns;
    int rc_big, rc_probe;
} probe_run;

static void *probe_big_thread(void *arg) {
    probe_run *r = arg;
    cb_error err;
    cb_error_clear(&err);
    int64_t device_ns = 0;
    pthread_barrier_wait(&r->go);
    r->big_call_ns = cb_clock_now_ns();
    r->rc_big = g_cuda.api->spin_run(r->big, 60 * MS, &device_ns, &err);
    if (r->rc_big) printf("# spin_run (60 ms): %s\n", err.msg);
    return NULL;
}

static void *probe_thread(void *arg) {
    probe_run *r = arg;
    cb_error err;
    cb_error_clear(&err);
    int64_t device_ns = 0;
    pthread_barrier_wait(&r->go);
    cb_clock_sleep_until_ns(cb_clock_now_ns() + 10 * MS);
    r->probe_call_ns = cb_clock_now_ns();
    r->rc_probe = g_cuda.api->spin_run(r->probe, 0, &device_ns, &err);
    r->probe_wall_ns = cb_clock_now_ns() - r->probe_call_ns;
    if (r->rc_probe) printf("# spin_run (probe): %s\n", err.msg);
    return NULL;
}

/* The probe's wall time beside a 60 ms spin of `sms` SMs (0 = all), or -1. A run where A
 * called spin_run less than 5 ms or more than 30 ms before the probe (a thread descheduled on
 * a busy host; then the probe may come before the spin or find only its last 30 ms) is
 * repeated, up to 3 times. */
static int64_t probe_wall(int sms) {
    cb_cuda_spin *big = make_spin(sms, 0, CB_GPU_WAIT_BLOCK);
    cb_cuda_spin *probe = make_spin(1, CB_CUDA_SPIN_LIGHT, CB_GPU_WAIT_BLOCK);
    int64_t wall = -1;
    for (int attempt = 0; big && probe && attempt < 3; attempt++) {
        probe_run r;
        memset(&r, 0, sizeof r);
        r.big = big;
        r.probe = probe;
        pthread_barrier_init(&r.go, NULL, 2);
        pthread_t ta, tb;
        pthread_create(&ta, NULL, probe_big_thread, &r);
        pthread_create(&tb, NULL, probe_thread, &r);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&r.go);
        CB_CHECK_EQ_INT(r.rc_big, CB_OK);
        CB_CHECK_EQ_INT(r.rc_probe, CB_OK);
        if (r.rc_big || r.rc_probe) break;
        int64_t lead = r.probe_call_ns - r.big_call_ns;
        if (lead < 5 * MS || lead > 30 * MS) {
            printf("# probe beside %d SMs: the spin started %.1f ms before the probe (a thread "
                   "was descheduled); again\n", sms, (double)lead / 1e6);
            continue;
        }
        wall = r.probe_wall_ns;
        break;
    }
    g_cuda.api->spin_destroy(big);
    g_cuda.api->spin_destroy(probe);
    return wall;
}

static void test_spin_excludes(void) {
    /* All SMs taken: the probe (which needs only a warp and the 1 KiB every block reserves)
     * finds no room and waits for the spin's end, about 50 ms. */
    int64_t w_all = probe_wall(0);
    printf("# light probe during a 60 ms spin of all %d SMs: %.1f ms wall\n", g_info.sms,
           (double)w_all / 1e6);
    CB_CHECK(w_all >= 0);
    if (w_all >= 0 && w_all < 25 * MS)
        cb__test_fail(__FILE__, __LINE__, "the probe ran beside a spin of every SM (%.1f ms "
                      "wall; expected >= 25 ms)", (double)w_all / 1e6);
    if (g_info.sms <= 8) return;
    /* All but 8 SMs taken: the probe runs at once on a free one. */
    int64_t w_part = probe_wall(g_info.sms - 8);
    printf("# light probe during a 60 ms spin of %d of %d SMs: %.1f ms wall\n", g_info.sms - 8,
           g_info.sms, (double)w_part / 1e6);
    CB_CHECK(w_part >= 0);
    if (w_part >= 0 && w_part >= 15 * MS)
        cb__test_fail(__FILE__, __LINE__, "the probe waited %.1f ms although 8 SMs were free "
                      "(expected < 15 ms)", (double)w_part / 1e6);
}

/* gpu_wait: a 30 ms spin waited for with block costs the thread little CPU time; with spin,
 * the thread polls through it. */
static void test_wait_policy(void) {
    const cb_gpu_wait waits[] = {CB_GPU_WAIT_BLOCK, CB_GPU_WAIT_SPIN, CB_GPU_WAIT_YIELD};
    int64_t cpu[3] = {-1, -1, -1};
    for (int k = 0; k < 3; k++) {
        cb_cuda_spin *s = make_spin(0, 0, waits[k]);
        if (!s) continue;
        if (spin_once(s, 1 * MS) >= 0) { /* warm-up */
            int64_t c0 = thread_cpu_ns();
            int64_t w0 = cb_clock_now_ns();
            int64_t got = spin_once(s, 30 * MS);
            cpu[k] = thread_cpu_ns() - c0;
            printf("# 30 ms spin, gpu_wait %s: %.1f ms CPU time of the waiting thread, %.1f ms "
                   "wall, %.1f ms device\n", cb_gpu_wait_name(waits[k]), (double)cpu[k] / 1e6,
                   (double)(cb_clock_now_ns() - w0) / 1e6, (double)got / 1e6);
            if (got < 0) cpu[k] = -1;
        }
        g_cuda.api->spin_destroy(s);
    }
    CB_CHECK(cpu[0] >= 0 && cpu[1] >= 0);
    if (cpu[0] >= 10 * MS)
        cb__test_fail(__FILE__, __LINE__, "gpu_wait block: the waiting thread used %.1f ms of "
                      "CPU in a 30 ms spin (expected < 10 ms)", (double)cpu[0] / 1e6);
    if (cpu[1] >= 0 && cpu[1] < 10 * MS)
        cb__test_fail(__FILE__, __LINE__, "gpu_wait spin: the waiting thread used only %.1f ms "
                      "of CPU in a 30 ms spin (expected >= 10 ms)", (double)cpu[1] / 1e6);
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
        ("component: util.gpu_copy, config: {bytes: 1048576, direction: d2d, device: 'cuda:0',"
         " gpu_wait: yield}"),
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

/* 0 when both GPU stages refuse `gpu_wait: bogus` at load, naming the key and the choices, and
 * accept `gpu_wait: spin`; else 1 with the reason in why. Needs no device: the choice is
 * checked when the config is loaded, before any device is opened. */
static int gpu_wait_param_problem(char *why, size_t n) {
    const char *stages[] = {"util.gpu_spin", "util.gpu_copy"};
    const char *values[] = {"bogus", "spin"};
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    if (cb_builtin_registry(&reg, &err) != CB_OK) {
        snprintf(why, n, "registry: %s", err.msg);
        return 1;
    }
    int bad = 0;
    const char *dir = cb_test_tmpdir();
    for (size_t i = 0; i < 2 && !bad; i++)
        for (size_t k = 0; k < 2 && !bad; k++) {
            char stage[256], yaml[1024];
            snprintf(stage, sizeof stage, "component: %s, config: {device: 'cuda:0', gpu_wait: %s}",
                     stages[i], values[k]);
            stage_yaml(yaml, sizeof yaml, stage, 3);
            const char *path = cb_test_write(dir, "bench.yaml", yaml);
            cb_doc *doc = NULL;
            cb_spec *spec = NULL;
            cb_error_clear(&err);
            int rc = cb_spec_load(path, NULL, 0, reg, &doc, &spec, &err);
            char msg[2048];
            cb_error_format(&err, msg, sizeof msg);
            if (k == 0 && rc == CB_OK) {
                snprintf(why, n, "%s: gpu_wait: bogus was accepted", stages[i]);
                bad = 1;
            } else if (k == 0 && (!strstr(msg, "gpu_wait") || !strstr(msg, CB_GPU_WAITS))) {
                snprintf(why, n, "%s: gpu_wait: bogus refused without naming the key and the "
                         "choices: %s", stages[i], msg);
                bad = 1;
            } else if (k == 1 && rc != CB_OK) {
                snprintf(why, n, "%s: gpu_wait: spin refused: %s", stages[i], msg);
                bad = 1;
            }
            cb_spec_destroy(spec);
            cb_doc_destroy(doc);
        }
    cb_registry_destroy(reg);
    return bad;
}

static void test_gpu_wait_param(void) {
    char why[2600];
    if (gpu_wait_param_problem(why, sizeof why)) cb__test_fail(__FILE__, __LINE__, "%s", why);
}

int main(void) {
    cb_error err;
    cb_error_clear(&err);
    if (gpu_fixture_open(&g_cuda, 0)) {
        /* No device: the parameter check needs none; it is recorded only when it fails, so
         * a machine without a GPU still reports the test as skipped. */
        char why[2600];
        if (gpu_wait_param_problem(why, sizeof why)) CB_RUN(test_gpu_wait_param);
        return cb_test_done(); /* skipped, or failed when gpu_fixture_open failed a check */
    }
    if (g_cuda.api->device_info(0, &g_info, &err) != CB_OK) {
        cb__test_fail(__FILE__, __LINE__, "device_info: %s", err.msg);
        cb_cuda_close(&g_cuda);
        return cb_test_done();
    }
    printf("# %s, %d SMs, module %s\n", g_info.name, g_info.sms, g_cuda.api->build);
    CB_RUN(test_gpu_wait_param);
    CB_RUN(test_spin_duration);
    CB_RUN(test_spin_lengths);
    CB_RUN(test_spin_after_idle);
    CB_RUN(test_spin_sms);
    CB_RUN(test_spin_excludes);
    CB_RUN(test_wait_policy);
    CB_RUN(test_copy_h2d_bandwidth);
    CB_RUN(test_copy_directions);
    cb_cuda_close(&g_cuda);
    return cb_test_done();
}
