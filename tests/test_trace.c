/* Tests of analysis/trace.c: a real two-pipeline benchmark runs in-process with events.csv
 * written, its trace.json is checked against events.csv and a hand-written metrics.csv by
 * tests/check_trace.py (every slice matches one row, flows chain every multi-slice query,
 * counters match the metrics rows, thread names exist), and the checker is shown to fail on a
 * corrupted trace. Also: query sampling under max_slices, shared pids, malformed and missing
 * metrics.csv (errors name file and line, nothing written), an empty run, the stride choice
 * on sparse query ids and on a query 0 larger than the cap, and the stride doubling when the
 * first choice (ids assumed evenly spread) keeps more slices than the cap. */
#include "harness.h"

#include <stdlib.h>

#include "analysis/trace.h"
#include "core/registry.h"
#include "stages/builtin.h"
#include "core/runtime.h"
#include "record/recorder.h"
#include "record/records.h"
#include "core/spec.h"

/* Pipeline 0 has a name that needs JSON and CSV escaping; 5 warm-up queries. */
static const char k_bench_yaml[] =
    "name: trace-test\n"
    "pipelines:\n"
    "  - name: 'main \"p\" \\ x'\n"
    "    inputs: [0]\n"
    "    outputs: [2]\n"
    "    loadgen: {component: closed, max_queries: 50, warmup_queries: 5,\n"
    "              config: {concurrency: 4}}\n"
    "    stages:\n"
    "      - {id: 0, name: decode, component: util.noop, outputs: [1]}\n"
    "      - {id: 1, name: model, component: util.spin, outputs: [2], workers: 2,\n"
    "         config: {mode: deadline, duration_us: 20}}\n"
    "      - {id: 2, name: post, component: util.copy, outputs: []}\n"
    "  - name: side\n"
    "    inputs: [0]\n"
    "    outputs: [1]\n"
    "    loadgen: {component: closed, max_queries: 20, config: {concurrency: 2}}\n"
    "    stages:\n"
    "      - {id: 0, name: src, component: util.source, outputs: [1], config: {bytes: 16}}\n"
    "      - {id: 1, name: sink, component: util.noop, outputs: []}\n";

static const char k_metrics_csv[] =
    "t_ns,source,device,pid,metric,value\n"
    "-1000,cpu,,,util_percent,12.5\n"
    "0,cpu,cpu0,,util_percent,99\n"
    "1500,memory,,,used_bytes,123456789\n"
    "2500,process,,4242,rss_bytes,1048576\n"
    "\n"
    "3500,gpu,gpu0/mig1,,power_watts,1e2\n";

typedef struct fixture {
    const char *dir;
    cb_registry *reg;
    cb_doc *doc;
    cb_spec *spec;
    cb_run_result res;
    cb_pipeline_record recs[4];
    char bins[4][3][1024];
    cb_summary_input sin;
    char events[1024], metrics[1024], trace[1024];
} fixture;

static int fixture_run(fixture *f, const char *yaml, bool run) {
    memset(f, 0, sizeof *f);
    cb_error err;
    cb_error_clear(&err);
    f->dir = cb_test_tmpdir();
    snprintf(f->events, sizeof f->events, "%s/events.csv", f->dir);
    snprintf(f->trace, sizeof f->trace, "%s/trace.json", f->dir);
    snprintf(f->metrics, sizeof f->metrics, "%s",
             cb_test_write(f->dir, "metrics.csv", k_metrics_csv));
    const char *path = cb_test_write(f->dir, "bench.yaml", yaml);
    if (cb_builtin_registry(&f->reg, &err) != CB_OK ||
        cb_spec_load(path, NULL, 0, f->reg, &f->doc, &f->spec, &err) != CB_OK) {
        char buf[2048];
        cb_error_format(&err, buf, sizeof buf);
        printf("# spec error: %s\n", buf);
        return -1;
    }
    if (!run) {
        /* No run: an events.csv with the header only and empty records. */
        cb_test_write(f->dir, "events.csv",
                      "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,enqueue_ns,"
                      "start_ns,end_ns,device_ns\n");
        return 0;
    }
    /* As a run does: the recorder streams into the directory, the trace reads the raw files. */
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = f->spec;
    cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
    ro.spec = f->spec;
    ro.out_dir = f->dir;
    cb_recorder *rec = NULL;
    int rc = cb_recorder_create(&ro, &rec, &err);
    if (rc == CB_OK) rc = cb_run(&o, cb_recorder_sink(rec), &f->res, &err);
    if (rc == CB_OK) rc = cb_recorder_stop(rec, &err);
    cb_recorder_destroy(rec);
    if (rc != CB_OK || f->res.n_errors) {
        printf("# run failed: %d %s\n", rc, err.msg);
        return -1;
    }
    memset(&f->sin, 0, sizeof f->sin);
    for (size_t i = 0; i < f->spec->n_pipelines && i < 4; i++) {
        static const char *const names[3] = {"queries.bin", "events.bin", "metrics.bin"};
        for (int k = 0; k < 3; k++) snprintf(f->bins[i][k], sizeof f->bins[i][k], "%s/%s", f->dir, names[k]);
        f->recs[i].queries_bin = f->bins[i][0];
        f->recs[i].events_bin = f->bins[i][1];
        f->recs[i].metrics_bin = f->bins[i][2];
        f->recs[i].file_pipeline = (int)i;
    }
    f->sin.spec = f->spec;
    f->sin.t0_ns = f->res.t0_ns;
    f->sin.end_ns = f->res.end_ns;
    f->sin.pipelines = f->recs;
    f->sin.prepare_ns = f->res.prepare_ns;
    return 0;
}

static void fixture_fini(fixture *f) {
    cb_run_result_fini(&f->res);
    cb_spec_destroy(f->spec);
    cb_doc_destroy(f->doc);
    cb_registry_destroy(f->reg);
}

static cb_trace_input trace_input(fixture *f) {
    cb_trace_input in = {.spec = f->spec, .t0_ns = f->res.t0_ns, .pipelines = f->recs,
                         .metrics_csv = f->metrics};
    return in;
}

static int write_trace(const cb_trace_input *in, const char *path, cb_error *err) {
    FILE *out = fopen(path, "w");
    if (!out) return -1;
    int rc = cb_trace_write(in, out, err);
    fclose(out);
    if (rc != CB_OK) printf("# cb_trace_write: %d %s\n", rc, err->msg);
    return rc;
}

/* Runs the checker; returns its exit status and prints its output when it is not `want`. */
static int check(const fixture *f, const char *trace, const char *extra, int want) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/check_trace.py' '%s' '%s' '%s' %s",
             CB_TEST_SRCDIR, trace, f->events, f->metrics, extra);
    char *outp = NULL;
    int st = cb_test_sh(cmd, &outp);
    if ((st == 0) != (want == 0)) printf("# %s\n%s", cmd, outp ? outp : "");
    free(outp);
    return st;
}

static size_t count_str(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* Writes text with the line containing `needle` (the first one) removed or, with `replace`,
 * `needle` replaced by it. */
static const char *corrupt(const fixture *f, const char *text, const char *name,
                           const char *needle, const char *replace) {
    const char *hit = strstr(text, needle);
    if (!hit) return NULL;
    size_t len = strlen(text);
    char *buf = malloc(len + (replace ? strlen(replace) : 0) + 1);
    if (replace) {
        size_t a = (size_t)(hit - text);
        memcpy(buf, text, a);
        memcpy(buf + a, replace, strlen(replace));
        memcpy(buf + a + strlen(replace), hit + strlen(needle), len - a - strlen(needle) + 1);
    } else {
        const char *b = hit;
        while (b > text && b[-1] != '\n') b--;
        const char *e = strchr(hit, '\n');
        e = e ? e + 1 : text + len;
        memcpy(buf, text, (size_t)(b - text));
        memcpy(buf + (b - text), e, (size_t)(text + len - e) + 1);
    }
    const char *path = cb_test_write(f->dir, name, buf);
    free(buf);
    return path;
}

static void test_trace_matches_events(void) {
    fixture f;
    int ok = fixture_run(&f, k_bench_yaml, true);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    size_t want_events[2] = {150, 40};
    for (int p = 0; p < 2; p++) {
        cb_loaded_records l;
        CB_CHECK_EQ_INT(cb_records_load(&f.recs[p], &l, NULL), CB_OK);
        CB_CHECK_EQ_INT(l.rec.n_stage_events, want_events[p]);
        cb_loaded_records_fini(&l);
    }
    cb_trace_input in = trace_input(&f);
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(write_trace(&in, f.trace, &err), CB_OK);
    CB_CHECK_EQ_INT(check(&f, f.trace, "", 0), 0);

    char *text = cb_test_read(f.trace, NULL);
    CB_CHECK(text != NULL);
    if (!text) goto out;
    CB_CHECK_EQ_INT(count_str(text, "\"ph\":\"X\""), 190);
    CB_CHECK_EQ_INT(count_str(text, "\"ph\":\"s\""), 70);
    CB_CHECK_EQ_INT(count_str(text, "\"ph\":\"f\""), 70);
    CB_CHECK_EQ_INT(count_str(text, "\"ph\":\"t\""), 50);
    CB_CHECK_EQ_INT(count_str(text, "\"ph\":\"C\""), 5);
    CB_CHECK_EQ_INT(count_str(text, "\"warmup\":true"), 15); /* 5 warm-up queries x 3 stages */
    CB_CHECK_CONTAINS(text, "\"name\":\"pipeline main \\\"p\\\" \\\\ x\"");
    CB_CHECK_CONTAINS(text, "\"args\":{\"name\":\"model #1\"}");
    CB_CHECK_CONTAINS(text, "\"args\":{\"name\":\"monitors\"}");
    CB_CHECK_CONTAINS(text, "\"name\":\"gpu/gpu0/mig1/power_watts\"");
    CB_CHECK_CONTAINS(text, "\"sampled\":false");
    CB_CHECK_CONTAINS(text, "\"benchmark\":\"trace-test\"");

    /* The checker can fail: a slice deleted, a slice moved in time, a flow end removed. */
    const char *bad = corrupt(&f, text, "del.json", "{\"ph\":\"X\"", NULL);
    CB_CHECK(bad != NULL);
    if (bad) CB_CHECK(check(&f, bad, "", 1) != 0);
    bad = corrupt(&f, text, "ts.json", "\"dur\":", "\"dur\":1");
    CB_CHECK(bad != NULL);
    if (bad) CB_CHECK(check(&f, bad, "", 1) != 0);
    bad = corrupt(&f, text, "flow.json", "{\"ph\":\"f\"", NULL);
    CB_CHECK(bad != NULL);
    if (bad) CB_CHECK(check(&f, bad, "", 1) != 0);
    bad = corrupt(&f, text, "ctr.json", "\"value\":99", "\"value\":98");
    CB_CHECK(bad != NULL);
    if (bad) CB_CHECK(check(&f, bad, "", 1) != 0);
    free(text);
out:
    fixture_fini(&f);
}

static void test_trace_sampling(void) {
    fixture f;
    int ok = fixture_run(&f, k_bench_yaml, true);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_trace_input in = trace_input(&f);
    /* 190 slices; expected kept with stride k (ids 0..49 x 3 slices, 0..19 x 2):
     * (49 / k + 1) * 3 + (19 / k + 1) * 2: 49 for k = 4, 38 for k = 5, which is also what
     * stride 5 keeps: 10 x 3 + 4 x 2. */
    in.max_slices = 40;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(write_trace(&in, f.trace, &err), CB_OK);
    CB_CHECK_EQ_INT(check(&f, f.trace, "--sampled", 0), 0);
    char *text = cb_test_read(f.trace, NULL);
    CB_CHECK(text != NULL);
    if (text) {
        CB_CHECK_CONTAINS(text, "\"sampled\":true");
        CB_CHECK_CONTAINS(text, "\"slices_total\":190");
        CB_CHECK_CONTAINS(text, "\"slices_written\":38");
        CB_CHECK_CONTAINS(text, "\"query_sampling_stride\":5");
        CB_CHECK_CONTAINS(text, "\"max_slices\":40");
        CB_CHECK_EQ_INT(count_str(text, "\"ph\":\"X\""), 38);
        /* The unsampled checker must notice the missing slices. */
        CB_CHECK(check(&f, f.trace, "", 1) != 0);
        free(text);
    }
    /* A cap that everything fits under: not sampled. */
    in.max_slices = 190;
    CB_CHECK_EQ_INT(write_trace(&in, f.trace, &err), CB_OK);
    CB_CHECK_EQ_INT(check(&f, f.trace, "", 0), 0);
    fixture_fini(&f);
}

/* Both pipelines in one process: one process track, pipeline-qualified thread names. */
static void test_trace_shared_pid(void) {
    fixture f;
    int ok = fixture_run(&f, k_bench_yaml, true);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    const int pids[2] = {4242, 4242};
    cb_trace_input in = trace_input(&f);
    in.pids = pids;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(write_trace(&in, f.trace, &err), CB_OK);
    CB_CHECK_EQ_INT(check(&f, f.trace, "", 0), 0);
    char *text = cb_test_read(f.trace, NULL);
    CB_CHECK(text != NULL);
    if (text) {
        CB_CHECK_EQ_INT(count_str(text, "\"name\":\"process_name\""), 2); /* 4242 + monitors */
        CB_CHECK_CONTAINS(text, "\"args\":{\"name\":\"side: sink #0\"}");
        CB_CHECK_CONTAINS(text, " + side\"");
        free(text);
    }
    fixture_fini(&f);
}

static void test_trace_bad_metrics(void) {
    fixture f;
    int ok = fixture_run(&f, k_bench_yaml, true);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_trace_input in = trace_input(&f);
    cb_error err;
    struct {
        const char *text, *where, *what;
    } cases[] = {
        {"t_ns,source,device,pid,metric,value\n1,cpu,,,util_percent,1\n2,cpu,,,util_percent,abc\n",
         ":3:", "value"},
        {"t_ns,source,device,pid,metric,value\n1,cpu,,,util_percent\n", ":2:", "fields"},
        {"t_ns,source,device,pid,metric,value\nx1,cpu,,,m,1\n", ":2:", "t_ns"},
        {"t_ns,source,device,pid,metric,value\n1,cpu,,,m,nan\n", ":2:", "value"},
        {"t_ns,source,device,pid,metric,value\n1,cpu,,,m,1,9\n", ":2:", "fields"},
        {"t_ns,source,device,pid,metric,value\n1,\"cpu,,,m,1\n", ":2:", "quoted"},
        {"time,source,device,pid,metric,value\n", ":1:", "header"},
        {"", ":1:", "header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = cb_test_write(f.dir, "bad_metrics.csv", cases[i].text);
        in.metrics_csv = path;
        cb_error_clear(&err);
        FILE *out = tmpfile();
        int rc = cb_trace_write(&in, out, &err);
        CB_CHECK_EQ_INT(rc, CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, "bad_metrics.csv");
        CB_CHECK_CONTAINS(err.msg, cases[i].where);
        CB_CHECK_CONTAINS(err.msg, cases[i].what);
        CB_CHECK_EQ_INT(ftell(out), 0); /* validated before the first byte */
        fclose(out);
    }
    /* A line over the 1024-byte bound. */
    char *long_text = malloc(4096);
    snprintf(long_text, 4096, "t_ns,source,device,pid,metric,value\n1,cpu,,,m,1\n1,cpu,,,%01500d,1\n",
             7);
    in.metrics_csv = cb_test_write(f.dir, "long_metrics.csv", long_text);
    free(long_text);
    cb_error_clear(&err);
    FILE *out = tmpfile();
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "long_metrics.csv:3:");
    CB_CHECK_CONTAINS(err.msg, "longer than 1024");
    fclose(out);
    /* Missing file: the error names it. */
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/no_such_metrics.csv", f.dir);
    in.metrics_csv = missing;
    cb_error_clear(&err);
    out = tmpfile();
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.msg, "no_such_metrics.csv");
    fclose(out);
    fixture_fini(&f);
}

static void test_trace_empty_run(void) {
    fixture f;
    int ok = fixture_run(&f, k_bench_yaml, false);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    /* Zero records, no metrics: still a valid file with the metadata. */
    cb_trace_input in = {.spec = f.spec, .t0_ns = 0, .pipelines = f.recs};
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(write_trace(&in, f.trace, &err), CB_OK);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
             "m=d[\"metadata\"]; assert m[\"sampled\"] is False and m[\"slices_total\"]==0, m' '%s'",
             f.trace);
    char *outp = NULL;
    int st = cb_test_sh(cmd, &outp);
    CB_CHECK_EQ_INT(st, 0);
    if (st) printf("# %s\n", outp ? outp : "");
    free(outp);
    /* The checker agrees (empty events.csv; metrics.csv rows as counters). */
    in.metrics_csv = f.metrics;
    CB_CHECK_EQ_INT(write_trace(&in, f.trace, &err), CB_OK);
    CB_CHECK_EQ_INT(check(&f, f.trace, "", 0), 0);
    /* No pipelines at all. */
    cb_spec empty = {.name = "none"};
    cb_trace_input in0 = {.spec = &empty};
    CB_CHECK_EQ_INT(write_trace(&in0, f.trace, &err), CB_OK);
    snprintf(cmd, sizeof cmd, "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' '%s'",
             f.trace);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    fixture_fini(&f);
}

/* Hand-built records: sparse query ids and a query 0 that alone exceeds the cap (written
 * whole: every stride keeps it). */
static void test_trace_stride_edges(void) {
    cb_stage_spec st[1] = {{.name = "s", .workers = 1}};
    cb_pipeline_spec ps = {.name = "p", .stages = st, .n_stages = 1};
    cb_spec spec = {.name = "edges", .pipelines = &ps, .n_pipelines = 1};
    cb_stage_event ev[8];
    memset(ev, 0, sizeof ev);
    for (int i = 0; i < 4; i++) {
        ev[i].query_id = (uint64_t)i * 1000000000000ull; /* 0, 1e12, 2e12, 3e12 */
        ev[i].start_ns = 1000 + i * 100;
        ev[i].end_ns = ev[i].start_ns + 50;
        ev[i].device_ns = CB_DEVICE_NS_NONE;
    }
    cb_pipeline_record r = {.stage_events = ev, .n_stage_events = 4};
    cb_trace_input in = {.spec = &spec, .pipelines = &r, .max_slices = 2};
    cb_error err;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_OK);
    fclose(out);
    /* Expected kept, ids assumed spread over 0..3e12: (3e12 / k + 1) * 4 / (3e12 + 1), just
     * above 2 for k = 2, 1.33 for k = 3: k = 3, which keeps 0 and 3e12. */
    CB_CHECK_CONTAINS(buf, "\"query_sampling_stride\":3,");
    CB_CHECK_CONTAINS(buf, "\"slices_written\":2,");
    free(buf);

    /* Query 0 with 5 slices, queries 1-3 with one each, cap 2: expected kept (3 / k + 1) * 2
     * is 2 for k = 4 (query 0 only); the buffer holds max(cap, query 0's 5 slices). */
    for (int i = 0; i < 8; i++) {
        ev[i].query_id = i < 5 ? 0 : (uint64_t)i - 4;
        ev[i].start_ns = 1000 + i * 100;
        ev[i].end_ns = ev[i].start_ns + 50;
    }
    r.n_stage_events = 8;
    buf = NULL;
    out = open_memstream(&buf, &len);
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_OK);
    fclose(out);
    CB_CHECK_CONTAINS(buf, "\"query_sampling_stride\":4,");
    CB_CHECK_CONTAINS(buf, "\"slices_written\":5,");
    CB_CHECK_EQ_INT(count_str(buf, "\"ph\":\"X\""), 5);
    CB_CHECK_EQ_INT(count_str(buf, "\"ph\":\"t\""), 3);
    free(buf);
}

/* The stride doubles while filling: ids 0..99, multiples of 8 with 10 slices each and the
 * others one, cap 30. Spread evenly, 217 slices over 100 ids would fit with k = 8 (13 ids x
 * 2.17 = 28.2); really k = 8 keeps 13 x 10. Read in id order, the buffer (30 slices) fills at
 * id 24 (k -> 16: keeps 0, 16), at 48 (k -> 32: 0, 32) and at 96 (k -> 64: 0, 64). */
static void test_trace_stride_doubling(void) {
    cb_stage_spec st[1] = {{.name = "s", .workers = 1}};
    cb_pipeline_spec ps = {.name = "p", .stages = st, .n_stages = 1};
    cb_spec spec = {.name = "doubling", .pipelines = &ps, .n_pipelines = 1};
    cb_stage_event ev[300];
    size_t n = 0;
    for (int id = 0; id < 100; id++)
        for (int k = 0; k < (id % 8 == 0 ? 10 : 1); k++)
            ev[n++] = (cb_stage_event){.query_id = (uint64_t)id, .start_ns = 1000 * id + 10 * k,
                                       .end_ns = 1000 * id + 10 * k + 5,
                                       .device_ns = CB_DEVICE_NS_NONE};
    CB_CHECK_EQ_INT(n, 217);
    cb_pipeline_record r = {.stage_events = ev, .n_stage_events = n};
    cb_trace_input in = {.spec = &spec, .pipelines = &r, .max_slices = 30};
    cb_error err;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_OK);
    fclose(out);
    CB_CHECK_CONTAINS(buf, "\"slices_total\":217,\"slices_written\":20,\"query_sampling_stride\":64,");
    CB_CHECK_EQ_INT(count_str(buf, "\"ph\":\"X\""), 20);
    CB_CHECK_EQ_INT(count_str(buf, "\"query\":64,"), 10);
    CB_CHECK_EQ_INT(count_str(buf, "\"query\":0,"), 10);
    free(buf);
    /* Cap 40: first k = 6 (expected 17 ids x 2.17 = 36.9), which really keeps 62; doubled to
     * 12, 24, then 48: 0, 48, 96 (30 slices). */
    in.max_slices = 40;
    buf = NULL;
    out = open_memstream(&buf, &len);
    CB_CHECK_EQ_INT(cb_trace_write(&in, out, &err), CB_OK);
    fclose(out);
    CB_CHECK_CONTAINS(buf, "\"slices_written\":30,\"query_sampling_stride\":48,");
    free(buf);
}

int main(void) {
    CB_RUN(test_trace_matches_events);
    CB_RUN(test_trace_sampling);
    CB_RUN(test_trace_shared_pid);
    CB_RUN(test_trace_bad_metrics);
    CB_RUN(test_trace_empty_run);
    CB_RUN(test_trace_stride_edges);
    CB_RUN(test_trace_stride_doubling);
    return cb_test_done();
}
