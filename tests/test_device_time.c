/* Device time end to end (host->device_time): a test stage reports known device times per query
 * (one call, two calls that must add up, or none), and the stage records, every events.csv row
 * (device_ns column: the sum, empty for runs without and for the CPU stage in the same
 * pipeline), summary.json (device statistics computed here again from the known values, over
 * measured runs only) and the end-of-run table must agree; a negative value is refused with
 * CB_EINVAL and adds nothing. The GPU stages on this machine (no GPU, or no CUDA build): they fail
 * at prepare, before the start barrier, with a message that names CUDA, and bad parameters are
 * refused naming the key. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

#include "analysis/summary.h"
#include "analysis/trace.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "gpu/cuda.h"
#include "run_fixture.h"

#define CLI CB_TEST_COLOBENCH

#define NQ 30
#define WARMUP 4

/* What the test stage reports for query id: -1 = nothing; ids % 2 == 0 in two calls. */
static int64_t want_device(uint64_t id) {
    if (id % 5 == 3) return -1;
    return id % 2 == 0 ? (int64_t)(1000 * id) + 7 : (int64_t)(1000 * id);
}

typedef struct dev_state {
    const cb_host *host;
} dev_state;

static int dev_create(void *state, const cb_stage_args *args, cb_error *err) {
    (void)err;
    ((dev_state *)state)->host = args->host;
    return CB_OK;
}

static int dev_fail(cb_error *err, const char *what) {
    err->code = CB_EINVAL;
    snprintf(err->msg, sizeof err->msg, "%s", what);
    return CB_EINVAL;
}

static int dev_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    const cb_host *h = ((dev_state *)state)->host;
    if (h->struct_size < offsetof(cb_host, device_time) + sizeof h->device_time || !h->device_time)
        return dev_fail(err, "no device_time in the host table");
    /* A negative time is refused and adds nothing (checked through the records). */
    if (h->device_time(ctx, -1) != CB_EINVAL) return dev_fail(err, "negative accepted");
    int64_t want = want_device(q->id);
    if (want < 0) return CB_OK;
    if (q->id % 2 == 0) {
        if (h->device_time(ctx, (int64_t)(1000 * q->id)) != CB_OK) return dev_fail(err, "first");
        if (h->device_time(ctx, 7) != CB_OK) return dev_fail(err, "second");
    } else if (h->device_time(ctx, want) != CB_OK) {
        return dev_fail(err, "device_time");
    }
    return CB_OK;
}

static const cb_stage_ops k_dev_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.device",
    .summary = "reports device time from the query id",
    .state_size = sizeof(dev_state),
    .create = dev_create,
    .run = dev_run,
};

static const char k_yaml[] =
    "name: devtime\n"
    "pipelines:\n"
    "  - name: p\n"
    "    inputs: [0]\n"
    "    outputs: [1]\n"
    "    loadgen: {component: closed, warmup_queries: 4, max_queries: 30, config: {concurrency: 3}}\n"
    "    stages:\n"
    "      - {id: 0, name: cpu, component: util.noop, outputs: [1]}\n"
    "      - {id: 1, name: gpu, component: test.device, outputs: [], workers: 2}\n";

static void check_records(const cb_pipeline_record *r) {
    CB_CHECK_EQ_INT(r->n_stage_events, 2 * NQ);
    int seen[2][NQ];
    memset(seen, 0, sizeof seen);
    int bad = 0;
    for (size_t i = 0; i < r->n_stage_events; i++) {
        const cb_stage_event *e = &r->stage_events[i];
        if (e->stage > 1 || e->query_id >= NQ) {
            bad++;
            continue;
        }
        seen[e->stage][e->query_id]++;
        int64_t want = e->stage == 0 ? CB_DEVICE_NS_NONE : want_device(e->query_id);
        if (e->device_ns != want) {
            printf("# stage %u query %llu: device_ns %lld, expected %lld\n", e->stage,
                   (unsigned long long)e->query_id, (long long)e->device_ns, (long long)want);
            bad++;
        }
        if (e->batch != (int32_t)e->query_id) bad++; /* no dataset: the query index */
    }
    CB_CHECK_EQ_INT(bad, 0);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < NQ; k++) CB_CHECK_EQ_INT(seen[s][k], 1);
}

/* events.csv: header with device_ns last, each row's device_ns the recorded sum or empty. */
static void check_csv(const char *out_dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/events.csv", out_dir);
    char *text = cb_test_read(path, NULL);
    CB_CHECK(text != NULL);
    if (!text) return;
    const char *hdr = "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,enqueue_ns,"
                      "start_ns,end_ns,device_ns\n";
    CB_CHECK(strncmp(text, hdr, strlen(hdr)) == 0);
    int rows = 0, bad = 0, empty_cpu = 0, dev_set = 0;
    char *line = strchr(text, '\n');
    while (line && line[1]) {
        line++;
        char *nl = strchr(line, '\n');
        if (!nl) break;
        *nl = '\0';
        /* 12 fields; names here have no commas or quotes. */
        char *f[13];
        int n = 0;
        for (char *p = line; n < 13;) {
            f[n++] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = '\0';
            p = c + 1;
        }
        rows++;
        if (n != 12) {
            bad++;
            line = nl;
            continue;
        }
        uint64_t id = strtoull(f[3], NULL, 10);
        if (strcmp(f[1], "cpu") == 0) {
            if (f[11][0] != '\0') bad++;
            else empty_cpu++;
        } else if (strcmp(f[1], "gpu") == 0) {
            int64_t want = want_device(id);
            if (want < 0 ? f[11][0] != '\0' : strtoll(f[11], NULL, 10) != want || !f[11][0]) {
                printf("# row %s %s: device_ns \"%s\", expected %lld\n", f[1], f[3], f[11],
                       (long long)want);
                bad++;
            }
            if (want >= 0) dev_set++;
        } else {
            bad++;
        }
        line = nl;
    }
    CB_CHECK_EQ_INT(rows, 2 * NQ);
    CB_CHECK_EQ_INT(bad, 0);
    CB_CHECK_EQ_INT(empty_cpu, NQ);
    int want_set = 0;
    for (uint64_t id = 0; id < NQ; id++) want_set += want_device(id) >= 0;
    CB_CHECK_EQ_INT(dev_set, want_set);
    free(text);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank, as docs/outputs.md defines it. */
static int64_t rank(const int64_t *sorted, size_t n, double p) {
    size_t k = (size_t)ceil(p * (double)n);
    return sorted[k ? k - 1 : 0];
}

static void check_num(const char *path, const char *expr, double want) {
    double v = cb_test_py_num(path, expr);
    if (!(fabs(v - want) <= 1e-9 * (fabs(want) > 1 ? fabs(want) : 1)))
        cb__test_fail(__FILE__, __LINE__, "%s: %.17g, expected %.17g", expr, v, want);
}

static void check_summary(run_fixture *f, const cb_pipeline_record *r, const char *out_dir) {
    /* Independent expectations over measured ids WARMUP..NQ-1 that reported. */
    int64_t vals[NQ];
    size_t n = 0;
    int64_t sum = 0;
    for (uint64_t id = WARMUP; id < NQ; id++) {
        int64_t v = want_device(id);
        if (v < 0) continue;
        vals[n++] = v;
        sum += v;
    }
    qsort(vals, n, sizeof vals[0], cmp_i64);
    /* the stage's span over its measured runs, from the records */
    int64_t first = INT64_MAX, last = INT64_MIN;
    for (size_t i = 0; i < r->n_stage_events; i++) {
        const cb_stage_event *e = &r->stage_events[i];
        if (e->stage != 1 || e->query_id < WARMUP) continue;
        if (e->start_ns < first) first = e->start_ns;
        if (e->end_ns > last) last = e->end_ns;
    }
    CB_CHECK(last > first);

    cb_pipeline_record recs[1];
    cb_summary_input in;
    run_fixture_summary_input(f, recs, &in);
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    FILE *out = fopen(path, "w");
    CB_CHECK(out != NULL);
    if (!out) return;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_summary_write_json(&in, out, &err), CB_OK);
    fclose(out);

#define S0 "d[\"pipelines\"][0][\"stages\"][0]"
#define S1 "d[\"pipelines\"][0][\"stages\"][1]"
#define DV S1 "[\"device\"]"
    char *v = cb_test_py_json(path, "\"device\" in " S0 ", \"device_busy_fraction\" in " S0
                                    ", sorted(" DV ")");
    CB_CHECK_STR_EQ(v, "False False ['count', 'max', 'mean', 'min', 'p50', 'p90', 'p99', 'sum_ns']");
    free(v);
    check_num(path, S1 "[\"runs\"]", NQ - WARMUP);
    check_num(path, DV "[\"count\"]", (double)n);
    check_num(path, DV "[\"sum_ns\"]", (double)sum);
    check_num(path, DV "[\"mean\"]", (double)sum / (double)n);
    check_num(path, DV "[\"p50\"]", (double)rank(vals, n, 0.5));
    check_num(path, DV "[\"p90\"]", (double)rank(vals, n, 0.9));
    check_num(path, DV "[\"p99\"]", (double)rank(vals, n, 0.99));
    check_num(path, DV "[\"min\"]", (double)vals[0]);
    check_num(path, DV "[\"max\"]", (double)vals[n - 1]);
    check_num(path, S1 "[\"device_busy_fraction\"]", (double)sum / (double)(last - first));
    /* host figures are still there, for both stages */
    check_num(path, "int(" S1 "[\"service_ns\"][\"p50\"] > 0)", 1);
    check_num(path, S0 "[\"runs\"]", NQ - WARMUP);
#undef S0
#undef S1
#undef DV

    /* The table: a device line for gpu (device and host times), none for cpu. */
    char *tab = NULL;
    size_t tlen = 0;
    FILE *t = open_memstream(&tab, &tlen);
    cb_summary_print_table(&in, t);
    fclose(t);
    char line[160];
    snprintf(line, sizeof line, "  gpu: device us p50 %.1f p99 %.1f, host us p50 ",
             (double)rank(vals, n, 0.5) / 1000.0, (double)rank(vals, n, 0.99) / 1000.0);
    CB_CHECK_CONTAINS(tab, line);
    CB_CHECK_CONTAINS(tab, "%\n");
    CB_CHECK(tab && strstr(tab, "cpu: device") == NULL);
    free(tab);
}

/* trace.json: the gpu slices carry args.device_us, equal to the row's device_ns, and only those
 * (tests/check_trace.py checks every slice against events.csv). */
static void check_trace(run_fixture *f, const char *out_dir) {
    cb_pipeline_record recs[1];
    recs[0] = run_fixture_records(f, 0);
    cb_trace_input in = {.spec = f->spec, .t0_ns = f->res.t0_ns, .pipelines = recs};
    char path[600], cmd[2048];
    snprintf(path, sizeof path, "%s/trace.json", out_dir);
    FILE *out = fopen(path, "w");
    CB_CHECK(out != NULL);
    if (!out) return;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_OK);
    fclose(out);
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/check_trace.py' '%s' '%s/events.csv'",
             CB_TEST_SRCDIR, path, out_dir);
    char *o = NULL;
    int st = cb_test_sh(cmd, &o);
    CB_CHECK_EQ_INT(st, 0);
    if (st) printf("# %s\n", o ? o : "");
    free(o);
    int want = 0;
    for (uint64_t id = 0; id < NQ; id++) want += want_device(id) >= 0;
    check_num(path, "sum(1 for e in d[\"traceEvents\"] if \"device_us\" in e.get(\"args\", {}))",
              want);
}

static void test_device_time_records_csv_summary(void) {
    const char *out_dir = cb_test_tmpdir();
    run_fixture f;
    if (run_fixture_ok(&f, k_yaml, out_dir, &k_dev_ops) != 0) {
        run_fixture_fini(&f);
        return;
    }
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, NQ);
    check_records(&r);
    check_csv(out_dir);
    check_summary(&f, &r, out_dir);
    check_trace(&f, out_dir);
    run_fixture_fini(&f);
}

/* The stage event is still exactly one cache line, and device_ns is where the raw records of
 * events.bin (read back by the collocation parent) have it. */
static void test_event_layout(void) {
    CB_CHECK_EQ_INT(sizeof(cb_stage_event), 64);
    CB_CHECK_EQ_INT(offsetof(cb_stage_event, device_ns), 40);
    CB_CHECK_EQ_INT(sizeof(((cb_stage_event *)0)->batch), 4);
}

/* Runs `colobench run` on a two-stage pipeline whose second stage is `stage`; returns the exit
 * status and the output (malloc'd). */
static int run_cli(const char *stage, char **out) {
    const char *dir = cb_test_tmpdir();
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "name: gpu\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [1]\n"
             "    loadgen: {component: closed, max_queries: 5}\n"
             "    stages:\n"
             "      - {id: 0, name: cpu, component: util.noop, outputs: [1]}\n"
             "      - {id: 1, name: gpu, outputs: [], %s}\n",
             stage);
    const char *path = cb_test_write(dir, "bench.yaml", yaml);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out --quiet", path, dir);
    return cb_test_sh(cmd, out);
}

/* Without a usable GPU (this build machine), both GPU stages fail in prepare with the loader's
 * message, which names CUDA: a clean non-zero exit, no crash, no query run. */
static void test_gpu_stages_fail_without_gpu(void) {
    cb_cuda c;
    cb_error err;
    cb_error_clear(&err);
    if (cb_cuda_open_device(&c, 0, &err) == CB_OK) {
        cb_cuda_close(&c);
        printf("# a CUDA device is usable here: the no-GPU failure is not checked\n");
        return;
    }
    const char *stages[] = {
        "component: util.gpu_spin, config: {duration_us: 100, device: 'cuda:0'}",
        "component: util.gpu_copy, config: {bytes: 4096, direction: d2h, device: 'cuda:0'}",
    };
    for (size_t i = 0; i < 2; i++) {
        char *out = NULL;
        int st = run_cli(stages[i], &out);
        CB_CHECK(st > 0 && st < 128); /* an error exit, not a signal */
        CB_CHECK_CONTAINS(out, "prepare: CUDA");
        CB_CHECK_CONTAINS(out, i == 0 ? "(util.gpu_spin)" : "(util.gpu_copy)");
        free(out);
    }
    /* In process too: the run reports the failure, nothing crashes, destroy is clean (ASan). */
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                              "name: gpu\n"
                              "pipelines:\n"
                              "  - name: p\n"
                              "    inputs: [0]\n"
                              "    outputs: [0]\n"
                              "    loadgen: {component: closed, max_queries: 5}\n"
                              "    stages:\n"
                              "      - {id: 0, name: g, component: util.gpu_spin, outputs: [],\n"
                              "         workers: 2, config: {device: 'cuda:0', sms: 1}}\n",
                              NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok == 0) {
        CB_CHECK(f.rc != CB_OK || f.res.n_errors > 0);
        char all[4096] = "";
        snprintf(all, sizeof all, "%s %s", f.err.msg, f.res.n_errors ? f.res.errors[0] : "");
        CB_CHECK_CONTAINS(all, "CUDA");
        { /* nothing recorded when the run ended before its start */
            cb_pipeline_record r = run_fixture_records(&f, 0);
            CB_CHECK_EQ_INT(r.n_stage_events, 0);
        }
    }
    run_fixture_fini(&f);
}

/* Configuration errors name the key (or say what device is missing), whatever the machine. */
static void test_gpu_stage_params(void) {
    static const struct {
        const char *stage, *want;
    } cases[] = {
        {"component: util.gpu_copy, config: {direction: sideways, device: 'cuda:0'}",
         "config.direction: expected one of h2d|d2h|d2d, got \"sideways\""},
        {"component: util.gpu_copy, config: {bytes: -5, device: 'cuda:0'}",
         "config.bytes: expected integer in [1, 68719476736], got \"-5\""},
        {"component: util.gpu_spin, config: {sms: -1, device: 'cuda:0'}", "config.sms:"},
        {"component: util.gpu_spin, config: {duration_us: -1, device: 'cuda:0'}",
         "config.duration_us:"},
        {"component: util.gpu_spin, config: {device: 'cuda:x'}", "device: device \"cuda:x\""},
        {"component: util.gpu_spin",
         "util.gpu_spin needs a CUDA device: set the pipeline's device or this stage's device to"
         " cuda:N"},
        {"component: util.gpu_copy, config: {device: cpu}",
         "util.gpu_copy needs a CUDA device: set the pipeline's device or this stage's device to"
         " cuda:N (device is \"cpu\")"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int st = run_cli(cases[i].stage, &out);
        CB_CHECK_EQ_INT(st, 2); /* a configuration error */
        CB_CHECK_CONTAINS(out, cases[i].want);
        free(out);
    }
}

int main(void) {
    CB_RUN(test_event_layout);
    CB_RUN(test_device_time_records_csv_summary);
    CB_RUN(test_gpu_stages_fail_without_gpu);
    CB_RUN(test_gpu_stage_params);
    return cb_test_done();
}
