/* Tests of analysis/summary.c, analysis/json.c and experiment/env.c: statistics over a hand-built
 * spec and synthetic records with known values (warm-up excluded, statuses counted, transition
 * medians, throughput window, open-loop dispatch delay, undefined rates), summary.json and
 * env.json validated by Python's json module, JSON escaping, and the table layout. Also
 * analysis/interference.c's availability rules on synthetic collocated runs: no common window,
 * a pipeline under the minimum of queries in it, long steps counted by their overlap; the JSON
 * and the table give the same figures and reasons. */
#include "harness.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "analysis/interference.h"
#include "analysis/json.h"
#include "analysis/stage_metrics.h"
#include "analysis/summary.h"
#include "core/alloc.h"
#include "experiment/env.h"

#define T0 1000000000LL
#define MS 1000000LL

typedef struct fixture {
    cb_spec spec;
    cb_pipeline_spec pipes[2];
    cb_stage_spec stages0[2], stages1[1];
    cb_query_event q0[12], q1[5];
    cb_stage_event e0[32];
    size_t n_e0;
    cb_pipeline_record recs[2];
    cb_summary_input in;
    const char *errors[1];
} fixture;

static const char k_name0[] = "closed \"q\"\nx\\";

/* Pipeline 0: closed loop, 2 warm-up queries, stages decode -> model.
 * Queries 0-1 warm-up (huge latencies, must not count), 2-9 ok with latency (id-1) us,
 * 10 dropped after decode, 11 cancelled. Pipeline 1: poisson at 100 q/s, 5 queries submitted
 * id*100 ns late, one stage with disable_logs (no events). */
static void fixture_init(fixture *f) {
    memset(f, 0, sizeof *f);
    f->stages0[0] = (cb_stage_spec){.id = 1, .name = "decode", .component = "noop"};
    f->stages0[1] = (cb_stage_spec){.id = 2, .name = "model", .component = "spin"};
    f->stages1[0] = (cb_stage_spec){.id = 5, .name = "silent", .component = "noop",
                                    .disable_logs = true};
    f->pipes[0].name = k_name0;
    f->pipes[0].loadgen.kind = CB_LOADGEN_CLOSED;
    f->pipes[0].loadgen.warmup_queries = 2;
    f->pipes[0].stages = f->stages0;
    f->pipes[0].n_stages = 2;
    f->pipes[1].name = "open";
    f->pipes[1].loadgen.kind = CB_LOADGEN_POISSON;
    f->pipes[1].loadgen.rate_qps = 100.0;
    f->pipes[1].stages = f->stages1;
    f->pipes[1].n_stages = 1;
    f->spec.name = "bench";
    f->spec.pipelines = f->pipes;
    f->spec.n_pipelines = 2;

    /* Stored in reverse order: the records come in any order. */
    for (int id = 0; id < 12; id++) {
        cb_query_event *q = &f->q0[11 - id];
        q->query_id = (uint64_t)id;
        q->scheduled_ns = q->submit_ns = T0 + id * MS;
        q->start_ns = q->submit_ns + 100;
        int64_t lat = id < 2 ? 500 * MS : (id - 1) * 1000LL;
        q->end_ns = q->scheduled_ns + lat;
        q->status = id == 10 ? CB_QUERY_DROPPED : id == 11 ? CB_QUERY_CANCELLED : CB_QUERY_OK;
        q->warmup = id < 2;
        if (id == 11) continue;
        /* decode: queue 100, service 300 (warm-up: service 1 s), fed by the submission. */
        cb_stage_event *e = &f->e0[f->n_e0++];
        e->query_id = (uint64_t)id;
        e->stage = 0;
        e->prev_end_ns = q->submit_ns;
        e->enqueue_ns = q->submit_ns;
        e->start_ns = e->enqueue_ns + 100;
        e->end_ns = e->start_ns + (id < 2 ? 1000 * MS : 300);
        e->device_ns = CB_DEVICE_NS_NONE; /* a CPU stage */
        if (id == 10) continue;
        /* model: enqueued 10 ns after decode ended, queue 50, service 1000 + id. */
        cb_stage_event *m = &f->e0[f->n_e0++];
        m->query_id = (uint64_t)id;
        m->stage = 1;
        m->prev_end_ns = e->end_ns;
        m->enqueue_ns = e->end_ns + 10;
        m->start_ns = m->enqueue_ns + 50;
        m->end_ns = m->start_ns + 1000 + id;
        /* A GPU stage: device time 500 + id (warm-up ids 0, 1: 1 s, left out); id 9 none. */
        m->device_ns = id < 2 ? 1000 * MS : id == 9 ? CB_DEVICE_NS_NONE : 500 + id;
    }
    /* A stage index outside the spec is ignored. */
    f->e0[f->n_e0++] = (cb_stage_event){.query_id = 5, .stage = 7, .start_ns = 1, .end_ns = 2,
                                        .device_ns = 5};

    for (int id = 0; id < 5; id++) {
        cb_query_event *q = &f->q1[id];
        q->query_id = (uint64_t)id;
        q->pipeline = 1;
        q->scheduled_ns = T0 + id * 10 * MS;
        q->submit_ns = q->scheduled_ns + id * 100;
        q->start_ns = q->submit_ns;
        q->end_ns = q->submit_ns + 5000;
        q->status = CB_QUERY_OK;
    }
    f->recs[0] = (cb_pipeline_record){.queries = f->q0, .n_queries = 12, .stage_events = f->e0,
                                      .n_stage_events = f->n_e0};
    f->recs[1] = (cb_pipeline_record){.queries = f->q1, .n_queries = 5};
    f->errors[0] = "stage \"model\": failed once";
    f->in = (cb_summary_input){.spec = &f->spec, .t0_ns = T0, .end_ns = T0 + 2000 * MS,
                               .wall_start_ns = 1795428000123000000LL, .interrupted = false,
                               .timed_out = true, .errors = f->errors, .n_errors = 1,
                               .pipelines = f->recs};
}

static void test_pipeline_stats(void) {
    fixture f;
    fixture_init(&f);
    cb_pipeline_stats st;
    CB_CHECK_EQ_INT(cb_pipeline_stats_compute(&f.in, 0, &st), 0);
    CB_CHECK_EQ_INT(st.queries_total, 12);
    CB_CHECK_EQ_INT(st.warmup, 2);
    CB_CHECK_EQ_INT(st.ok, 8);
    CB_CHECK_EQ_INT(st.measured, 8);
    CB_CHECK_EQ_INT(st.dropped, 1);
    CB_CHECK_EQ_INT(st.cancelled, 1);
    CB_CHECK_EQ_INT(st.errors, 0);
    /* Latencies 1000 .. 8000 ns. */
    CB_CHECK_EQ_INT(st.latency_ns.n, 8);
    CB_CHECK(st.latency_ns.exact && st.stages[1].service_ns.exact && st.stages[1].transition_exact);
    CB_CHECK_EQ_INT(st.latency_ns.min, 1000);
    CB_CHECK_EQ_INT(st.latency_ns.p50, 4000);
    CB_CHECK_EQ_INT(st.latency_ns.p90, 8000);
    CB_CHECK_EQ_INT(st.latency_ns.max, 8000);
    CB_CHECK_NEAR(st.latency_ns.mean, 4500.0, 1e-9);
    /* Window: scheduled of query 2 to end of query 9, relative to t0. */
    CB_CHECK_EQ_INT(st.window_start_ns, 2 * MS);
    CB_CHECK_EQ_INT(st.window_end_ns, 9 * MS + 8000);
    CB_CHECK_NEAR(st.throughput_qps, 8.0 / ((7 * MS + 8000) / 1e9), 1e-9);
    CB_CHECK(st.target_qps == 0.0 && st.achieved_qps == 0.0);
    CB_CHECK_EQ_INT(st.dispatch_delay_ns.n, 0);
    /* decode: ids 2..10 (the dropped query ran it too). */
    CB_CHECK_EQ_INT(st.stages[0].runs, 9);
    CB_CHECK_EQ_INT(st.stages[0].service_ns.p50, 300);
    CB_CHECK_EQ_INT(st.stages[0].service_ns.max, 300);
    CB_CHECK_EQ_INT(st.stages[0].queue_ns.p50, 100);
    CB_CHECK_EQ_INT(st.stages[0].transition_ns_p50, 100);
    /* model: ids 2..9, service 1002 .. 1009. */
    CB_CHECK_EQ_INT(st.stages[1].runs, 8);
    CB_CHECK_EQ_INT(st.stages[1].service_ns.min, 1002);
    CB_CHECK_EQ_INT(st.stages[1].service_ns.p50, 1005);
    CB_CHECK_EQ_INT(st.stages[1].service_ns.max, 1009);
    CB_CHECK_EQ_INT(st.stages[1].queue_ns.p50, 50);
    CB_CHECK_EQ_INT(st.stages[1].transition_ns_p50, 60);
    /* Device time: decode none; model ids 2..8 report 502 .. 508 (9 none, warm-up left out),
     * over its span from the start of id 2 to the end of id 9. */
    CB_CHECK_EQ_INT(st.stages[0].device_ns.n, 0);
    CB_CHECK_EQ_INT(st.stages[1].device_ns.n, 7);
    CB_CHECK_EQ_INT(st.stages[1].device_sum_ns, 3535);
    CB_CHECK_EQ_INT(st.stages[1].device_ns.min, 502);
    CB_CHECK_EQ_INT(st.stages[1].device_ns.p50, 505);
    CB_CHECK_EQ_INT(st.stages[1].device_ns.p99, 508);
    CB_CHECK_NEAR(st.stages[1].device_ns.mean, 505.0, 1e-9);
    CB_CHECK_EQ_INT(st.stages[1].span_ns, 7 * MS + 1009);
    CB_CHECK_NEAR(st.stages[1].device_busy_fraction, 3535.0 / (7 * MS + 1009), 1e-15);
    cb_pipeline_stats_fini(&st);
    cb_pipeline_stats_fini(&st); /* idempotent */

    CB_CHECK_EQ_INT(cb_pipeline_stats_compute(&f.in, 1, &st), 0);
    CB_CHECK_EQ_INT(st.measured, 5);
    CB_CHECK_EQ_INT(st.latency_ns.p50, 5000 + 200);
    CB_CHECK_NEAR(st.target_qps, 100.0, 1e-12);
    CB_CHECK_NEAR(st.achieved_qps, 4.0 / ((40 * MS + 400) / 1e9), 1e-9);
    CB_CHECK_EQ_INT(st.dispatch_delay_ns.n, 5);
    CB_CHECK_EQ_INT(st.dispatch_delay_ns.p50, 200);
    CB_CHECK_EQ_INT(st.dispatch_delay_ns.p99, 400);
    CB_CHECK_EQ_INT(st.dispatch_delay_ns.max, 400);
    CB_CHECK_EQ_INT(st.stages[0].runs, 0);
    cb_pipeline_stats_fini(&st);

    CB_CHECK_EQ_INT(cb_pipeline_stats_compute(&f.in, 2, &st), CB_EINVAL);
    /* Out of memory on any allocation: an error and nothing leaked (ASan checks). */
    for (long k = 1; k <= 6; k++) {
        cb__alloc_fail_after(k);
        int rc = cb_pipeline_stats_compute(&f.in, 0, &st);
        cb__alloc_fail_after(0);
        CB_CHECK(rc == 0 || rc == CB_ENOMEM);
        cb_pipeline_stats_fini(&st);
    }
}

/* Python checks of summary.json: it parses, and the values are the known ones. */
static const char k_check_summary[] =
    "import json, sys\n"
    "d = json.load(open(sys.argv[1], encoding='utf-8'))\n"
    "p0, p1 = d['pipelines']\n"
    "assert d['name'] == 'bench', d['name']\n"
    "assert isinstance(d['colobench_version'], str)\n"
    "assert d['duration_ns'] == 2000000000 and d['timed_out'] is True\n"
    "assert d['interrupted'] is False\n"
    "assert d['errors'] == ['stage \"model\": failed once'], d['errors']\n"
    "assert p0['name'] == 'closed \"q\"\\nx\\\\', repr(p0['name'])\n"
    "assert (p0['queries'], p0['queries_total'], p0['warmup']) == (8, 12, 2)\n"
    "assert (p0['dropped'], p0['failed'], p0['cancelled']) == (1, 0, 1)\n"
    "assert p0['window_ns'] == [2000000, 9008000], p0['window_ns']\n"
    "assert abs(p0['throughput_qps'] - 8 / 0.007008) < 1e-6\n"
    "l = p0['latency_ns']\n"
    "assert (l['p50'], l['p90'], l['p99'], l['max'], l['min']) == (4000, 8000, 8000, 8000, 1000)\n"
    "assert l['mean'] == 4500 and set(l) == {'p50','p90','p95','p99','p999','max','mean','min'}\n"
    "assert p0['loadgen_stats'] is None\n"
    "s0, s1 = p0['stages']\n"
    "assert (s0['id'], s0['name'], s0['component'], s0['runs']) == (1, 'decode', 'noop', 9)\n"
    "assert s0['service_ns']['p50'] == 300 and s0['queue_ns']['p50'] == 100\n"
    "assert s0['transition_ns_p50'] == 100\n"
    "assert s1['runs'] == 8 and s1['service_ns']['p50'] == 1005\n"
    "assert s1['transition_ns_p50'] == 60\n"
    "assert 'device' not in s0 and 'device_busy_fraction' not in s0, s0\n"
    "dv = s1['device']\n"
    "assert dv == {'count': 7, 'sum_ns': 3535, 'mean': 505, 'p50': 505, 'p90': 508, 'p99': 508,\n"
    "              'max': 508, 'min': 502}, dv\n"
    "assert abs(s1['device_busy_fraction'] - 3535 / 7001009) < 1e-15\n"
    "assert p1['loadgen_stats']['target_qps'] == 100\n"
    "assert abs(p1['loadgen_stats']['achieved_qps'] - 4 / 0.0400004) < 1e-6\n"
    "assert p1['loadgen_stats']['dispatch_delay_ns'] == {'p50': 200, 'p99': 400, 'max': 400}\n"
    "st = p1['stages'][0]\n"
    "assert st['runs'] == 0 and st['transition_ns_p50'] is None, st\n"
    "assert st['service_ns']['p50'] is None\n"
    "pr = d['precision']\n"
    "assert pr['exact'] is True and pr['approximate'] == [], pr\n"
    "assert pr['percentiles'] == {'exact_max_values': 8192, 'relative_error_max': 2 ** -10}, pr\n"
    "assert pr['stage_metric_tenths'] == {'exact_max_reports': 65536, 'query_id_bins': 8192}\n"
    "assert list(d)[-1] == 'precision', list(d)\n"
    "print('summary ok')\n";

static void test_summary_json(void) {
    fixture f;
    fixture_init(&f);
    const char *dir = cb_test_tmpdir();
    char path[600], cmd[1500];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *out = fopen(path, "w");
    CB_CHECK(out != NULL);
    if (!out) return;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_summary_write_json(&f.in, out, &err), 0);
    fclose(out);
    char *text = cb_test_read(path, NULL);
    CB_CHECK_CONTAINS(text, "\"name\": \"closed \\\"q\\\"\\u000ax\\\\\"");
    CB_CHECK_CONTAINS(text, "\"queries\": 8,");
    CB_CHECK_CONTAINS(text, "\"dropped\": 1,");
    CB_CHECK_CONTAINS(text, "\"loadgen_stats\": null");
    CB_CHECK_CONTAINS(text, "\"colobench_version\": \"" CB_VERSION "\"");
    free(text);

    snprintf(cmd, sizeof cmd, "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' %s",
             path);
    char *o = NULL;
    int rc = cb_test_sh(cmd, &o);
    if (rc != 0) cb__test_fail(__FILE__, __LINE__, "json.load failed: %s", o ? o : "");
    free(o);

    const char *check = cb_test_write(dir, "check_summary.py", k_check_summary);
    snprintf(cmd, sizeof cmd, "python3 %s %s", check, path);
    o = NULL;
    rc = cb_test_sh(cmd, &o);
    if (rc != 0) cb__test_fail(__FILE__, __LINE__, "check_summary.py: %s", o ? o : "");
    CB_CHECK_CONTAINS(o, "summary ok");
    free(o);
}

static void test_table(void) {
    fixture f;
    fixture_init(&f);
    f.pipes[0].name = "closed";
    f.stages0[1].name = "a_stage_name_longer_than_the_column";
    const char *dir = cb_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/table.txt", dir);
    FILE *out = fopen(path, "w");
    if (!out) {
        CB_CHECK(out != NULL);
        return;
    }
    cb_summary_print_table(&f.in, out);
    fclose(out);
    char *text = cb_test_read(path, NULL);
    CB_CHECK_CONTAINS(text, "pipeline closed");
    CB_CHECK_CONTAINS(text, "8 queries");
    CB_CHECK_CONTAINS(text, "p50 4.0");
    CB_CHECK_CONTAINS(text, "decode");
    CB_CHECK_CONTAINS(text, "target 100.0 q/s");
    CB_CHECK_CONTAINS(text, "error: stage \"model\": failed once");
    /* Every line fits 100 columns; stage rows align with their header. */
    size_t header_len = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        CB_CHECK_CMP_INT(len, <=, 100);
        if (strncmp(line, "  stage (", 9) == 0) header_len = len;
        if (strncmp(line, "  decode ", 9) == 0 || strncmp(line, "  a_stage_name_longe ", 21) == 0)
            CB_CHECK_EQ_INT(len, header_len);
        line = nl ? nl + 1 : NULL;
    }
    CB_CHECK(header_len > 0);
    /* The device line of the GPU stage, none for the CPU stage. */
    CB_CHECK_CONTAINS(text, "  a_stage_name_longer_than_the_column: device us p50 0.5 p99 0.5, host us"
                            " p50 1.0 p99 1.0, busy 0%\n");
    CB_CHECK(strstr(text, "decode: device") == NULL);
    CB_CHECK(strstr(text, "percentiles of more than") == NULL); /* every percentile exact */
    fputs(text, stdout);
    free(text);
}

/* Writes with the JSON writer into a string (open_memstream). */
typedef struct membuf {
    char *data;
    size_t size;
    FILE *f;
} membuf;

static void mem_open(membuf *m) {
    m->data = NULL;
    m->size = 0;
    m->f = open_memstream(&m->data, &m->size);
}

static char *mem_close(membuf *m) {
    fclose(m->f);
    return m->data;
}

static void test_json_writer(void) {
    membuf m;
    cb_json j;
    mem_open(&m);
    cb_json_init(&j, m.f, 0);
    cb_json_object_begin(&j);
    cb_json_key(&j, "a");
    cb_json_array_begin(&j);
    cb_json_int(&j, INT64_MIN);
    cb_json_uint(&j, UINT64_MAX);
    cb_json_double(&j, 0.1);
    cb_json_double(&j, 1e300);
    cb_json_double(&j, NAN);
    cb_json_double(&j, -INFINITY);
    cb_json_double(&j, 2.0 / 3.0);
    cb_json_bool(&j, true);
    cb_json_null(&j);
    cb_json_string(&j, NULL);
    cb_json_array_end(&j);
    cb_json_key(&j, "e");
    cb_json_object_begin(&j);
    cb_json_object_end(&j);
    cb_json_key(&j, "s\t");
    cb_json_string(&j, "q\"b\\c\x01\x1f\x7f é \xff\xc3");
    cb_json_object_end(&j);
    CB_CHECK_EQ_INT(cb_json_finish(&j), 0);
    char *s = mem_close(&m);
    CB_CHECK_STR_EQ(s, "{\"a\":[-9223372036854775808,18446744073709551615,0.1,1e+300,null,null,"
                       "0.6666666666666666,true,null,null],\"e\":{},"
                       "\"s\\u0009\":\"q\\\"b\\\\c\\u0001\\u001f\\u007f é \\ufffd\\ufffd\"}\n");
    free(s);

    /* Indented output. */
    mem_open(&m);
    cb_json_init(&j, m.f, 2);
    cb_json_object_begin(&j);
    cb_json_key(&j, "x");
    cb_json_array_begin(&j);
    cb_json_int(&j, 1);
    cb_json_int(&j, 2);
    cb_json_array_end(&j);
    cb_json_key(&j, "y");
    cb_json_array_begin(&j);
    cb_json_array_end(&j);
    cb_json_object_end(&j);
    CB_CHECK_EQ_INT(cb_json_finish(&j), 0);
    s = mem_close(&m);
    CB_CHECK_STR_EQ(s, "{\n  \"x\": [\n    1,\n    2\n  ],\n  \"y\": []\n}\n");
    free(s);

    /* Misuse is sticky and reported once. */
    mem_open(&m);
    cb_json_init(&j, m.f, 0);
    cb_json_array_begin(&j);
    cb_json_object_end(&j); /* wrong kind is not tracked, but an unbalanced end is: */
    cb_json_array_end(&j);
    CB_CHECK_EQ_INT(cb_json_finish(&j), CB_EINVAL);
    free(mem_close(&m));
    mem_open(&m);
    cb_json_init(&j, m.f, 0);
    for (int i = 0; i < CB_JSON_MAX_DEPTH + 1; i++) cb_json_array_begin(&j);
    CB_CHECK_EQ_INT(cb_json_finish(&j), CB_EINVAL);
    free(mem_close(&m));
    mem_open(&m);
    cb_json_init(&j, m.f, 0);
    cb_json_object_begin(&j);
    cb_json_key(&j, "k");
    CB_CHECK_EQ_INT(cb_json_finish(&j), CB_EINVAL);
    free(mem_close(&m));
}

static const char k_check_env[] =
    "import json, sys\n"
    "d = json.load(open(sys.argv[1], encoding='utf-8'))\n"
    "keys = ['host','cpu_model','cores_online','kernel','machine','compiler',\n"
    "        'colobench_version','wall_start_ns','wall_start_iso','argv','cpu_affinity',\n"
    "        'environment','libraries']\n"
    "assert d['cpu_affinity'] and all(isinstance(c, int) for c in d['cpu_affinity'])\n"
    "env = d['environment']\n"
    "assert env['OMP_NUM_THREADS'] == '3' and env['CB_CUDA_MODULE'] == '/x/y.so', env\n"
    "assert env['TMPDIR'] and env['PATH'] and env['CUDA_MPS_PIPE_DIRECTORY'] == '/p', env\n"
    "assert 'CB_TEST_NOT_RECORDED_' not in ''.join(env) and 'SHELLX_TEST' not in env, env\n"
    "assert d['libraries'] == [{'path': '/p/x.so', 'why': 'plugin'}], d['libraries']\n"
    "assert list(d) == keys, list(d)\n"
    "assert d['wall_start_iso'] == '2026-11-23T10:00:00.123Z', d['wall_start_iso']\n"
    "assert d['wall_start_ns'] == 1795428000123000000\n"
    "assert d['argv'] == ['colobench', 'run', 'a \"b\"\\n', '\\ufffd'], d['argv']\n"
    "assert d['cores_online'] >= 1 and d['kernel'].startswith('Linux')\n"
    "assert d['compiler'].startswith(('gcc', 'clang')), d['compiler']\n"
    "print('env ok')\n";

static void test_env_json(void) {
    const char *dir = cb_test_tmpdir();
    char path[600], cmd[1500];
    snprintf(path, sizeof path, "%s/env.json", dir);
    FILE *out = fopen(path, "w");
    if (!out) {
        CB_CHECK(out != NULL);
        return;
    }
    char a0[] = "colobench", a1[] = "run", a2[] = "a \"b\"\n", a3[] = "\xfe";
    char *const argv[] = {a0, a1, a2, a3, NULL};
    cb_error err;
    cb_error_clear(&err);
    /* 2026-11-23T10:00:00.123Z */
    /* Variables that change what a run does are recorded; others are not. */
    setenv("OMP_NUM_THREADS", "3", 1);
    setenv("CB_CUDA_MODULE", "/x/y.so", 1);
    setenv("CUDA_MPS_PIPE_DIRECTORY", "/p", 1);
    setenv("SHELLX_TEST", "1", 1);
    if (!getenv("TMPDIR")) setenv("TMPDIR", "/tmp", 1);
    cb_env_library libs[] = {{"/p/x.so", "plugin"}};
    CB_CHECK_EQ_INT(cb_env_write_json(out, 1795428000123000000LL, 4, argv, libs, 1, &err), 0);
    unsetenv("OMP_NUM_THREADS");
    unsetenv("CB_CUDA_MODULE");
    unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    unsetenv("SHELLX_TEST");
    fclose(out);
    const char *check = cb_test_write(dir, "check_env.py", k_check_env);
    snprintf(cmd, sizeof cmd, "python3 %s %s", check, path);
    char *o = NULL;
    int rc = cb_test_sh(cmd, &o);
    if (rc != 0) cb__test_fail(__FILE__, __LINE__, "check_env.py: %s", o ? o : "");
    CB_CHECK_CONTAINS(o, "env ok");
    free(o);
}

/* ---- stage metrics ---------------------------------------------------------------------- */

static const cb_metric_def k_mdefs[] = {{"loss", CB_METRIC_GAUGE, "", "loss"},
                                        {"images", CB_METRIC_COUNT, "images", "images"}};

/* Stage metrics over hand-made reports of pipeline 0 (warm-up: ids 0-1) in a scrambled order:
 * loss = 100 / (id + 1) for ids 0..25, the last query (25) reporting twice (the earlier report
 * comes first in query order, so "last" is the later one), query 7 a NaN, one report on a split
 * outside the dataset; images = id; reports naming no declared stage or metric ignored; stage
 * 0's ops table predates metrics (its garbage metric fields are not read). Expectations are
 * built here in query order. */
static void test_stage_metrics(void) {
    fixture f;
    fixture_init(&f);
    cb_stage_ops model = {.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_stage_ops),
                          .name = "t.model", .metrics = k_mdefs, .n_metrics = 2};
    cb_stage_ops old = {.abi_major = CB_STAGE_ABI_MAJOR,
                        .struct_size = (uint32_t)offsetof(cb_stage_ops, metrics),
                        .name = "t.old", .metrics = (const cb_metric_def *)(uintptr_t)8,
                        .n_metrics = 5};
    f.stages0[0].ops = &old;
    f.stages0[1].ops = &model;
    cb_splits splits = {.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_splits),
                        .epochs = 1, .n = 3,
                        .split = {{"train", 1}, {"val", 1}, {"test", 1}}};
    f.recs[0].splits = &splits;

    enum { NID = 26, NREC = 2 * NID + 1 + 3 };
    cb_metric_event ordered[NREC];
    size_t n = 0;
    double loss[NID + 1];           /* expected finite measured losses, query order */
    int loss_split[NID + 1];
    size_t nl = 0;
    double images = 0;
    for (int id = 0; id < NID; id++) {
        int split = id == 17 ? 5 : id % 3;
        double v = id == 7 ? NAN : 100.0 / (id + 1);
        if (id == NID - 1) {
            ordered[n++] = (cb_metric_event){.t_ns = T0 + 50, .query_id = (uint64_t)id,
                                             .stage = 1, .metric = 0, .value = 7.0,
                                             .split = (int16_t)split};
            loss[nl] = 7.0;
            loss_split[nl++] = split;
        }
        ordered[n++] = (cb_metric_event){.t_ns = T0 + 100, .query_id = (uint64_t)id, .stage = 1,
                                         .metric = 0, .value = v, .split = (int16_t)split};
        ordered[n++] = (cb_metric_event){.t_ns = T0 + 100, .query_id = (uint64_t)id, .stage = 1,
                                         .metric = 1, .value = id, .split = (int16_t)split};
        if (id < 2) continue; /* warm-up */
        images += id;
        if (id == 7) continue;
        loss[nl] = v;
        loss_split[nl++] = split;
    }
    ordered[n++] = (cb_metric_event){.query_id = 3, .stage = 9, .metric = 0, .value = 1e9};
    ordered[n++] = (cb_metric_event){.query_id = 3, .stage = 1, .metric = 2, .value = 1e9};
    ordered[n++] = (cb_metric_event){.query_id = 3, .stage = 0, .metric = 0, .value = 1e9};
    CB_CHECK_EQ_INT(n, NREC);
    cb_metric_event recs[NREC]; /* scrambled: 5 is coprime to NREC = 56 */
    for (size_t i = 0; i < NREC; i++) recs[i] = ordered[(i * 5) % NREC];
    /* and the later of query 25's two losses stored first */
    size_t early = NREC, late = NREC;
    for (size_t i = 0; i < NREC; i++) {
        if (recs[i].query_id == NID - 1 && recs[i].stage == 1 && recs[i].metric == 0) {
            if (recs[i].t_ns == T0 + 50) early = i;
            else late = i;
        }
    }
    CB_CHECK(early < NREC && late < NREC);
    if (early < late) {
        cb_metric_event tmp = recs[early];
        recs[early] = recs[late];
        recs[late] = tmp;
    }
    f.recs[0].metrics = recs;
    f.recs[0].n_metrics = NREC;

    size_t tenth = (nl + 9) / 10; /* 24 finite measured -> 3 */
    double sum = 0, head = 0, tail = 0, mn = INFINITY, mx = -INFINITY, ssum[3] = {0};
    size_t sn[3] = {0};
    double slast[3] = {0};
    for (size_t i = 0; i < nl; i++) {
        sum += loss[i];
        if (i < tenth) head += loss[i];
        if (i >= nl - tenth) tail += loss[i];
        mn = loss[i] < mn ? loss[i] : mn;
        mx = loss[i] > mx ? loss[i] : mx;
        if (loss_split[i] < 3) {
            ssum[loss_split[i]] += loss[i];
            sn[loss_split[i]]++;
            slast[loss_split[i]] = loss[i];
        }
    }
    const int64_t window = 9008000 - 2000000; /* pipeline 0's throughput window */
    cb_stage_metrics m;
    CB_CHECK_EQ_INT(cb_stage_metrics_compute(&f.in, 0, window, &m), CB_OK);
    CB_CHECK_EQ_INT(m.n_stages, 2);
    CB_CHECK_EQ_INT(m.first[1] - m.first[0], 0); /* the old table declares nothing */
    CB_CHECK_EQ_INT(m.first[2] - m.first[1], 2);
    if (m.first[2] - m.first[1] == 2) {
        const cb_metric_stats *l = &m.stats[m.first[1]], *im = &m.stats[m.first[1] + 1];
        CB_CHECK_EQ_INT(nl, 24);
        CB_CHECK_EQ_INT(l->n, nl);
        CB_CHECK_EQ_INT(l->non_finite, 1);
        CB_CHECK_NEAR(l->first, 100.0 / 3, 0);
        CB_CHECK_NEAR(l->last, 100.0 / 26, 0);
        CB_CHECK_NEAR(l->mean, sum / (double)nl, 1e-12);
        CB_CHECK_NEAR(l->min, mn, 0);
        CB_CHECK_NEAR(l->max, mx, 0);
        CB_CHECK_NEAR(l->first_tenth_mean, head / (double)tenth, 1e-12);
        CB_CHECK_NEAR(l->first_tenth_mean, (100.0 / 3 + 25 + 20) / 3, 1e-12);
        CB_CHECK_NEAR(l->last_tenth_mean, (100.0 / 25 + 7.0 + 100.0 / 26) / 3, 1e-12);
        CB_CHECK_NEAR(l->last_tenth_mean, tail / (double)tenth, 1e-12);
        CB_CHECK_EQ_INT(l->n_splits, 3);
        for (int k = 0; k < 3; k++) {
            CB_CHECK_EQ_INT(l->by_split[k].n, sn[k]);
            CB_CHECK_NEAR(l->by_split[k].mean, ssum[k] / (double)sn[k], 1e-12);
            CB_CHECK_NEAR(l->by_split[k].last, slast[k], 0);
        }
        CB_CHECK(isnan(l->per_second)); /* a gauge has no rate */
        CB_CHECK_EQ_INT(im->n, NID - 2);
        CB_CHECK_NEAR(im->sum, images, 0);
        CB_CHECK_NEAR(im->mean, images / (NID - 2), 1e-12);
        CB_CHECK_NEAR(im->per_second, images / (window / 1e9), 1e-9);
        CB_CHECK_EQ_INT(im->n_splits, 0);
    }
    CB_CHECK_EQ_INT(m.images_stage, 1);
    CB_CHECK_NEAR(m.images_per_s, images / (window / 1e9), 1e-9);
    cb_stage_metrics_fini(&m);
    /* No window: rates are undefined. */
    CB_CHECK_EQ_INT(cb_stage_metrics_compute(&f.in, 0, 0, &m), CB_OK);
    CB_CHECK(isnan(m.images_per_s));
    cb_stage_metrics_fini(&m);

    /* JSON: the same figures, splits by name; the table line. */
    const char *dir = cb_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *out = fopen(path, "w");
    CB_CHECK_EQ_INT(cb_summary_write_json(&f.in, out, NULL), CB_OK);
    fclose(out);
    char *v = cb_test_py_json(path, "d[\"pipelines\"][0][\"stages\"][0][\"metrics\"], "
                                    "sorted(d[\"pipelines\"][0][\"stages\"][1][\"metrics\"][\"loss\"][\"by_split\"]), "
                                    "d[\"pipelines\"][0][\"stages\"][1][\"metrics\"][\"loss\"][\"by_split\"][\"val\"][\"n\"], "
                                    "\"images_per_s\" in d[\"pipelines\"][1]");
    char want[128];
    snprintf(want, sizeof want, "{} ['test', 'train', 'val'] %zu False", sn[1]);
    CB_CHECK_STR_EQ(v, want);
    free(v);
    v = cb_test_py_json(path, "d[\"pipelines\"][0][\"images_per_s\"]");
    CB_CHECK_NEAR(v ? strtod(v, NULL) : -1, images / (window / 1e9), 1e-6);
    free(v);
    char *tab = NULL;
    size_t tlen = 0;
    FILE *t = open_memstream(&tab, &tlen);
    cb_summary_print_table(&f.in, t);
    fclose(t);
    char line[200];
    snprintf(line, sizeof line, "  model: loss %.4g -> %.4g  images %.0f (%.1f/s)\n",
             head / (double)tenth, tail / (double)tenth, images, images / (window / 1e9));
    CB_CHECK_CONTAINS(tab, line);
    free(tab);
}


/* Beyond the exact limits: 20000 measured latencies (a permutation of 1000 + 37 * j) go to the
 * histogram (within 2^-10 of the nearest-rank values, n/min/max/mean exact); a gauge with 70000
 * reports (value = query id) gets its tenths from the query-id bins; summary.json lists exactly
 * those figures in "precision" and the table says percentiles are approximate. */
static void test_beyond_exact_limits(void) {
    fixture f;
    fixture_init(&f);
    enum { NQ = 20000, NM = 70000 };
    cb_query_event *q = calloc(NQ, sizeof *q);
    for (int i = 0; i < NQ; i++) {
        q[i].query_id = (uint64_t)i + 2; /* past the 2 warm-up ids */
        q[i].scheduled_ns = q[i].submit_ns = T0 + i * 1000LL;
        q[i].end_ns = q[i].scheduled_ns + 1000 + 37LL * ((i * 7919LL) % NQ);
        q[i].status = CB_QUERY_OK;
    }
    cb_metric_event *m = calloc(NM, sizeof *m);
    for (int i = 0; i < NM; i++)
        m[i] = (cb_metric_event){.t_ns = T0, .query_id = (uint64_t)((i * 13LL) % NM) + 2,
                                 .stage = 1, .metric = 0, .value = (double)((i * 13LL) % NM)};
    cb_stage_ops model = {.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_stage_ops),
                          .name = "t.model", .metrics = k_mdefs, .n_metrics = 2};
    f.stages0[1].ops = &model;
    f.recs[0].queries = q;
    f.recs[0].n_queries = NQ;
    f.recs[0].metrics = m;
    f.recs[0].n_metrics = NM;
    cb_pipeline_stats st;
    CB_CHECK_EQ_INT(cb_pipeline_stats_compute(&f.in, 0, &st), CB_OK);
    CB_CHECK(!st.latency_ns.exact);
    CB_CHECK_EQ_INT(st.latency_ns.n, NQ);
    CB_CHECK_EQ_INT(st.latency_ns.min, 1000);
    CB_CHECK_EQ_INT(st.latency_ns.max, 1000 + 37LL * (NQ - 1));
    CB_CHECK_NEAR(st.latency_ns.mean, 1000 + 37.0 * (NQ - 1) / 2, 1e-9);
    int64_t exact50 = 1000 + 37LL * (NQ / 2 - 1), exact99 = 1000 + 37LL * (NQ * 99 / 100 - 1);
    CB_CHECK_NEAR(st.latency_ns.p50, exact50, exact50 / 1024.0);
    CB_CHECK_NEAR(st.latency_ns.p99, exact99, exact99 / 1024.0);
    CB_CHECK(st.stages[1].service_ns.exact); /* 8 runs */
    cb_pipeline_stats_fini(&st);
    cb_stage_metrics sm;
    CB_CHECK_EQ_INT(cb_stage_metrics_compute(&f.in, 0, 0, &sm), CB_OK);
    const cb_metric_stats *l = &sm.stats[sm.first[1]];
    CB_CHECK_EQ_INT(l->n, NM);
    CB_CHECK(!l->tenths_exact);
    CB_CHECK(l->first == 0 && l->last == NM - 1 && l->min == 0 && l->max == NM - 1);
    CB_CHECK_NEAR(l->mean, (NM - 1) / 2.0, 1e-9);
    /* ids 2..70001: bins of w = 69999 / 8192 + 1 = 9 ids; the first tenth (7000 reports) takes
     * 777 whole bins (6993 reports: values 0..6992) and 7/9 of the next (values 6993..7001). */
    double head = (6992.0 * 6993.0 / 2 + 7.0 / 9.0 * (6993 + 7001) * 9.0 / 2) / 7000.0;
    CB_CHECK_NEAR(l->first_tenth_mean, head, 1e-9);
    CB_CHECK_NEAR(l->first_tenth_mean, 3499.5, 0.01); /* the exact mean of 0..6999 */
    CB_CHECK_NEAR(l->last_tenth_mean, 66499.5, 0.01);
    cb_stage_metrics_fini(&sm);

    const char *dir = cb_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *out = fopen(path, "w");
    CB_CHECK_EQ_INT(cb_summary_write_json(&f.in, out, NULL), CB_OK);
    fclose(out);
    char *v = cb_test_py_json(path, "d[\"precision\"][\"exact\"], d[\"precision\"][\"approximate\"]");
    CB_CHECK_STR_EQ(v, "False ['/pipelines/0/latency_ns', "
                       "'/pipelines/0/stages/1/metrics/loss/first_tenth_mean', "
                       "'/pipelines/0/stages/1/metrics/loss/last_tenth_mean']");
    free(v);
    char *tab = NULL;
    size_t tlen = 0;
    FILE *t = open_memstream(&tab, &tlen);
    cb_summary_print_table(&f.in, t);
    fclose(t);
    CB_CHECK_CONTAINS(tab, "  (percentiles of more than 8192 values: within 0.098%)\n");
    free(tab);
    free(q);
    free(m);
}

/* ---- undefined rates ---- */

/* An open-loop pipeline with `measured` measured queries (after one warm-up query): the rates that
 * need a span are null in JSON and "-" in the table, never 0. */
static void check_undefined_rates(int measured) {
    cb_stage_spec stage = {.id = 1, .name = "s", .component = "noop"};
    cb_pipeline_spec ps = {.name = "open", .stages = &stage, .n_stages = 1};
    ps.loadgen.kind = CB_LOADGEN_REPLAY;
    ps.loadgen.warmup_queries = 1;
    cb_spec spec = {.name = "rates", .pipelines = &ps, .n_pipelines = 1};
    cb_query_event q[2];
    memset(q, 0, sizeof q);
    for (int id = 0; id < 1 + measured; id++) {
        q[id] = (cb_query_event){.query_id = (uint64_t)id,
                                 .scheduled_ns = T0 + id * MS,
                                 .submit_ns = T0 + id * MS + 100,
                                 .end_ns = T0 + id * MS + 5000,
                                 .status = CB_QUERY_OK};
    }
    cb_pipeline_record rec = {.queries = q, .n_queries = (size_t)(1 + measured)};
    cb_summary_input in = {.spec = &spec, .t0_ns = T0, .end_ns = T0 + 10 * MS, .pipelines = &rec};
    cb_pipeline_stats st;
    CB_CHECK_EQ_INT(cb_pipeline_stats_compute(&in, 0, &st), 0);
    CB_CHECK_EQ_INT(st.measured, measured);
    CB_CHECK(isnan(st.achieved_qps) && isnan(st.target_qps));
    /* throughput: none without a query; one query is one over its own latency */
    if (measured == 0)
        CB_CHECK(isnan(st.throughput_qps));
    else
        CB_CHECK_NEAR(st.throughput_qps, 1e9 / 5000.0, 1e-6);
    cb_pipeline_stats_fini(&st);

    const char *dir = cb_test_tmpdir();
    char path[600], tpath[600];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    snprintf(tpath, sizeof tpath, "%s/table.txt", dir);
    FILE *out = fopen(path, "w"), *tab = fopen(tpath, "w");
    CB_CHECK(out && tab);
    if (!out || !tab) return;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_summary_write_json(&in, out, &err), 0);
    cb_summary_print_table(&in, tab);
    fclose(out);
    fclose(tab);
    char *v = cb_test_py_json(path, "[d[\"pipelines\"][0][\"loadgen_stats\"][k] for k in "
                                    "(\"target_qps\", \"achieved_qps\")], "
                                    "d[\"pipelines\"][0][\"throughput_qps\"] is None");
    CB_CHECK_STR_EQ(v, measured == 0 ? "[None, None] True" : "[None, None] False");
    free(v);
    char *t = cb_test_read(tpath, NULL);
    CB_CHECK_CONTAINS(t, "open loop: target - q/s, achieved - q/s\n");
    CB_CHECK_CONTAINS(t, measured == 0 ? "0 queries, - q/s" : "1 queries, 200000.0 q/s");
    free(t);
}

static void test_undefined_rates(void) {
    check_undefined_rates(0);
    check_undefined_rates(1);
}

/* ---- collocation figures ---- */

#define COLO_MAX 64

/* Two closed-loop pipelines a and b without stages, collocated, each with an isolated baseline of
 * its own records (colo_init, colo_query), times in ms from T0. */
typedef struct colo_fixture {
    cb_spec spec, iso_spec[2];
    cb_pipeline_spec pipes[2];
    cb_query_event q[2][COLO_MAX], iq[2][COLO_MAX];
    size_t nq[2], niq[2];
    cb_pipeline_record recs[2], iso_recs[2];
    cb_summary_input in, iso_in[2];
    const cb_summary_input *iso_ptrs[2];
    cb_interference_input ii;
    cb_interference r; /* after colo_compute; cb_interference_fini(&f->r) */
    const char *json;  /* DIR/colo.json */
    char *table;       /* malloc'd */
} colo_fixture;

static void colo_steps(colo_fixture *f, int p, bool iso, double start_ms, double step_ms, int n);

/* runs: {start_ms, step_ms, n} of a's and b's collocated queries, then of their baselines'. */
static void colo_init(colo_fixture *f, const double runs[4][3]) {
    memset(f, 0, sizeof *f);
    const char *names[2] = {"a", "b"};
    for (int p = 0; p < 2; p++) {
        f->pipes[p].name = names[p];
        f->pipes[p].device = "cpu";
        f->pipes[p].loadgen.kind = CB_LOADGEN_CLOSED;
    }
    f->spec = (cb_spec){.name = "colo", .pipelines = f->pipes, .n_pipelines = 2};
    for (int k = 0; k < 4; k++)
        colo_steps(f, k % 2, k >= 2, runs[k][0], runs[k][1], (int)runs[k][2]);
}

static void colo_query(cb_query_event *q, size_t *n, double start_ms, double end_ms) {
    if (*n >= COLO_MAX) return;
    q[*n] = (cb_query_event){.query_id = *n,
                             .scheduled_ns = T0 + (int64_t)(start_ms * MS),
                             .end_ns = T0 + (int64_t)(end_ms * MS),
                             .status = CB_QUERY_OK};
    q[*n].submit_ns = q[*n].start_ns = q[*n].scheduled_ns;
    (*n)++;
}

/* n back-to-back queries of step_ms each from start_ms, collocated or in the baseline. */
static void colo_steps(colo_fixture *f, int p, bool iso, double start_ms, double step_ms, int n) {
    for (int i = 0; i < n; i++)
        colo_query(iso ? f->iq[p] : f->q[p], iso ? &f->niq[p] : &f->nq[p], start_ms + i * step_ms,
                   start_ms + (i + 1) * step_ms);
}

/* Computes the figures into f->r, the JSON into f->json, the table into f->table. */
static int colo_compute(colo_fixture *f) {
    cb_interference *r = &f->r;
    for (int p = 0; p < 2; p++) {
        f->recs[p] = (cb_pipeline_record){.queries = f->q[p], .n_queries = f->nq[p]};
        f->iso_recs[p] = (cb_pipeline_record){.queries = f->iq[p], .n_queries = f->niq[p]};
        f->iso_spec[p] = (cb_spec){.name = "colo", .pipelines = &f->pipes[p], .n_pipelines = 1};
        f->iso_in[p] = (cb_summary_input){.spec = &f->iso_spec[p],
                                          .t0_ns = T0,
                                          .end_ns = T0 + 1000 * MS,
                                          .pipelines = &f->iso_recs[p]};
        f->iso_ptrs[p] = &f->iso_in[p];
    }
    f->in = (cb_summary_input){
        .spec = &f->spec, .t0_ns = T0, .end_ns = T0 + 1000 * MS, .pipelines = f->recs};
    f->ii = (cb_interference_input){.mode = "threads",
                                    .collocated = &f->in,
                                    .isolated = f->iso_ptrs,
                                    .barrier_skew_ns = -1,
                                    .barrier_max_delay_ns = -1};
    int rc = cb_interference_compute(&f->ii, r);
    static char path[600];
    snprintf(path, sizeof path, "%s/colo.json", cb_test_tmpdir());
    f->json = path;
    FILE *out = fopen(path, "w");
    if (!out) return -1;
    cb_json j;
    cb_json_init(&j, out, 2);
    cb_json_object_begin(&j);
    cb_interference_json(r, &j);
    cb_json_object_end(&j);
    CB_CHECK_EQ_INT(cb_json_finish(&j), 0);
    fclose(out);
    membuf m;
    mem_open(&m);
    cb_interference_print_table(r, m.f);
    f->table = mem_close(&m);
    fputs(f->table, stdout);
    return rc;
}

/* colo_init, then colo_compute, checking the block's reason is `why`. */
static void colo_run(colo_fixture *f, const double runs[4][3], const char *why) {
    colo_init(f, runs);
    CB_CHECK_EQ_INT(colo_compute(f), 0);
    CB_CHECK_STR_EQ(f->r.unavailable, why);
}

/* a runs 0-10 ms, b 20-30 ms: no common window, so no aggregate, STP, ANTT, fairness or slowdown,
 * and the same reason in the JSON and the table. */
static void test_colo_no_common_window(void) {
    static const double runs[4][3] = {{0, 1, 10}, {20, 1, 10}, {0, 1, 10}, {0, 1, 10}};
    const char *why = "pipelines a and b never ran measured load at the same time "
                      "(windows 0.000-0.010 s and 0.020-0.030 s)";
    colo_fixture f;
    colo_run(&f, runs, why);
    CB_CHECK(!f.r.window_overlap);
    CB_CHECK(isnan(f.r.aggregate_qps) && isnan(f.r.stp) && isnan(f.r.antt) && isnan(f.r.fairness));
    for (int p = 0; p < 2; p++) {
        CB_CHECK(isnan(f.r.pipelines[p].slowdown));
        CB_CHECK_STR_EQ(f.r.pipelines[p].unavailable, why);
    }
    char *v = cb_test_py_json(f.json,
                              "[d[\"collocation\"][k] for k in (\"window_ns\", \"window_overlap\", "
                              "\"aggregate_qps\", \"stp\", \"antt\", \"fairness\")], "
                              "[p[\"slowdown\"] for p in d[\"collocation\"][\"pipelines\"]]");
    CB_CHECK_STR_EQ(v, "[None, False, None, None, None, None] [None, None]");
    free(v);
    v = cb_test_py_json(f.json, "d[\"collocation\"][\"unavailable\"], "
                                "{p[\"unavailable\"] for p in d[\"collocation\"][\"pipelines\"]}");
    char want[512];
    snprintf(want, sizeof want, "%s {'%s'}", why, why);
    CB_CHECK_STR_EQ(v, want);
    free(v);
    snprintf(want, sizeof want, "  aggregate, STP, ANTT, fairness unavailable: %s\n", why);
    CB_CHECK_CONTAINS(f.table, want);
    CB_CHECK(strstr(f.table, " q/s   STP") == NULL);
    free(f.table);
    cb_interference_fini(&f.r);
}

/* b has one query in the common window (5-100 ms), under the minimum of 2: its slowdown, the
 * aggregate, STP, ANTT and fairness are unavailable with its reason, in the JSON and the table; a's
 * slowdown is not. */
static void test_colo_under_minimum(void) {
    _Static_assert(CB_INTERFERENCE_MIN_QUERIES == 2, "the figures below assume a minimum of 2");
    /* a: 0-100 ms; b: below; a alone: 50 q/s */
    static const double runs[4][3] = {{0, 10, 10}, {0, 0, 0}, {0, 20, 5}, {0, 1, 10}};
    colo_fixture f;
    colo_init(&f, runs);
    colo_query(f.q[1], &f.nq[1], 5, 6);     /* b passes its warm-up at 5 ms, */
    colo_query(f.q[1], &f.nq[1], 150, 151); /* its next query after a finished */
    CB_CHECK_EQ_INT(colo_compute(&f), 0);
    const char *why = "pipeline b has 1 query in the common window (0.005-0.100 s), "
                      "fewer than the minimum of 2";
    CB_CHECK(f.r.window_overlap);
    CB_CHECK_EQ_INT(f.r.window_start_ns - T0, 5 * MS);
    CB_CHECK_EQ_INT(f.r.window_end_ns - T0, 100 * MS);
    CB_CHECK_STR_EQ(f.r.unavailable, why);
    CB_CHECK_STR_EQ(f.r.pipelines[1].unavailable, why);
    CB_CHECK_STR_EQ(f.r.pipelines[0].unavailable, "");
    CB_CHECK(isnan(f.r.aggregate_qps) && isnan(f.r.stp) && isnan(f.r.antt) && isnan(f.r.fairness));
    CB_CHECK(isnan(f.r.pipelines[1].slowdown));
    /* a: its first query counts for the half inside the window, 9.5 queries over 95 ms */
    CB_CHECK_EQ_INT(f.r.pipelines[0].queries_in_window, 10);
    CB_CHECK_NEAR(f.r.pipelines[0].progress_in_window, 9.5, 1e-12);
    CB_CHECK_NEAR(f.r.pipelines[0].collocated_qps, 100.0, 1e-9);
    CB_CHECK_NEAR(f.r.pipelines[0].isolated_qps, 50.0, 1e-9);
    CB_CHECK_NEAR(f.r.pipelines[0].slowdown, 0.5, 1e-12);
    char *v = cb_test_py_json(
        f.json, "[d[\"collocation\"][k] for k in (\"aggregate_qps\", \"stp\", \"antt\", "
                "\"fairness\", \"min_queries_in_window\")], "
                "[(p[\"queries_in_window\"], p[\"slowdown\"] is None, "
                "p[\"unavailable\"]) "
                "for p in d[\"collocation\"][\"pipelines\"]]");
    char want[600];
    snprintf(want, sizeof want, "[None, None, None, None, 2] [(10, False, None), (1, True, '%s')]",
             why);
    CB_CHECK_STR_EQ(v, want);
    free(v);
    v = cb_test_py_json(f.json, "d[\"collocation\"][\"unavailable\"]");
    CB_CHECK_STR_EQ(v, why);
    free(v);
    snprintf(want, sizeof want, "    slowdown unavailable: %s\n", why);
    CB_CHECK_CONTAINS(f.table, want);
    snprintf(want, sizeof want, "  aggregate, STP, ANTT, fairness unavailable: %s\n", why);
    CB_CHECK_CONTAINS(f.table, want);
    CB_CHECK_CONTAINS(f.table, "0.50x"); /* a's slowdown */
    free(f.table);
    cb_interference_fini(&f.r);

    /* With a second query of b in the window, every figure is there. */
    colo_query(f.q[1], &f.nq[1], 50, 51);
    CB_CHECK_EQ_INT(colo_compute(&f), 0);
    CB_CHECK_STR_EQ(f.r.unavailable, "");
    CB_CHECK(isfinite(f.r.aggregate_qps) && isfinite(f.r.stp) && isfinite(f.r.fairness));
    CB_CHECK(strstr(f.table, "unavailable") == NULL);
    free(f.table);
    cb_interference_fini(&f.r);
}

/* Training-like steps of 40 ms (a) around a window of 50-100 ms set by b's 1 ms queries: a has no
 * query that both starts and ends in it, yet its steps 40-80 and 80-120 ms count for 30/40 and
 * 20/40 of a query: 1.25 queries over 50 ms = 25 q/s. Alone, a ran 20 ms steps (50 q/s): slowdown
 * 2. b: 50 queries over 50 ms, as alone: slowdown 1. By hand: STP 0.5 + 1 = 1.5, ANTT (2 + 1) / 2 =
 * 1.5, fairness 0.5 / 1 = 0.5, aggregate (1.25 + 50) / 0.05 = 1025 q/s. */
static void test_colo_long_steps(void) {
    static const double runs[4][3] = {{0, 40, 3}, {50, 1, 50}, {0, 20, 5}, {0, 1, 50}};
    colo_fixture f;
    colo_run(&f, runs, "");
    CB_CHECK_EQ_INT(f.r.window_start_ns - T0, 50 * MS);
    CB_CHECK_EQ_INT(f.r.window_end_ns - T0, 100 * MS);
    const cb_interference_pipeline *a = &f.r.pipelines[0], *b = &f.r.pipelines[1];
    CB_CHECK_EQ_INT(a->queries_in_window, 2);
    CB_CHECK_NEAR(a->progress_in_window, 1.25, 1e-12);
    CB_CHECK_NEAR(a->collocated_qps, 25.0, 1e-9);
    CB_CHECK_NEAR(a->isolated_qps, 50.0, 1e-9);
    CB_CHECK_NEAR(a->slowdown, 2.0, 1e-12);
    CB_CHECK_EQ_INT(b->queries_in_window, 50);
    CB_CHECK(b->progress_in_window == 50.0); /* whole queries: an exact count */
    CB_CHECK_NEAR(b->slowdown, 1.0, 1e-12);
    CB_CHECK_NEAR(f.r.stp, 1.5, 1e-12);
    CB_CHECK_NEAR(f.r.antt, 1.5, 1e-12);
    CB_CHECK_NEAR(f.r.fairness, 0.5, 1e-12);
    CB_CHECK_NEAR(f.r.aggregate_qps, 1025.0, 1e-9);
    /* collocated latency: over the two steps in the window */
    CB_CHECK_EQ_INT(a->collocated_p50_ns, 40 * MS);
    char *v = cb_test_py_json(
        f.json, "d[\"collocation\"][\"unavailable\"], d[\"collocation\"][\"window_ns\"], "
                "[(p[\"progress_in_window\"], round(p[\"slowdown\"], 9)) "
                "for p in d[\"collocation\"][\"pipelines\"]]");
    CB_CHECK_STR_EQ(v, "None [50000000, 100000000] [(1.25, 2), (50, 1)]");
    free(v);
    CB_CHECK_CONTAINS(f.table, "  aggregate 1025.0 q/s   STP 1.50   ANTT 1.50   fairness 0.50\n");
    free(f.table);
    cb_interference_fini(&f.r);
}

/* A queued load (two in flight, as the offline generator's queue_depth 2): a's warm-up query
 * 0-40 ms still runs when its first measured query is scheduled (0 ms), so it did work in the
 * window 20-100 ms (set by b) and counts there: 20/40 + 60/80 (0-80) + 20/40 (80-120) + 20/80
 * (80-160) = 2 queries over 80 ms = 25 q/s. Its baseline, the same run alone, counts the same
 * way over its own window 0-160 ms: 4 whole queries = 25 q/s, slowdown 1; its summary's
 * throughput_qps leaves the warm-up query out (3 / 0.16 s = 18.75). */
static void test_colo_warmup_work(void) {
    static const double runs[4][3] = {{0, 0, 0}, {20, 2, 40}, {0, 0, 0}, {20, 2, 40}};
    static const double a[4][2] = {{0, 40}, {0, 80}, {80, 120}, {80, 160}};
    colo_fixture f;
    colo_init(&f, runs);
    f.pipes[0].loadgen.warmup_queries = 1;
    for (int i = 0; i < 4; i++) {
        colo_query(f.q[0], &f.nq[0], a[i][0], a[i][1]);
        colo_query(f.iq[0], &f.niq[0], a[i][0], a[i][1]);
    }
    CB_CHECK_EQ_INT(colo_compute(&f), 0);
    const cb_interference_pipeline *pa = &f.r.pipelines[0];
    CB_CHECK_STR_EQ(f.r.unavailable, "");
    CB_CHECK_EQ_INT(f.r.window_start_ns - T0, 20 * MS);
    CB_CHECK_EQ_INT(f.r.window_end_ns - T0, 100 * MS);
    CB_CHECK_EQ_INT(pa->queries_in_window, 4);
    CB_CHECK_NEAR(pa->progress_in_window, 2.0, 1e-12);
    CB_CHECK_NEAR(pa->collocated_qps, 25.0, 1e-9);
    CB_CHECK_NEAR(pa->isolated_qps, 25.0, 1e-9);
    CB_CHECK_NEAR(pa->slowdown, 1.0, 1e-12);
    CB_CHECK_EQ_INT(pa->collocated_p50_ns, 80 * MS); /* measured queries only: 80, 40, 80 ms */
    CB_CHECK_NEAR(f.r.pipelines[1].slowdown, 1.0, 1e-12);
    CB_CHECK_NEAR(f.r.aggregate_qps, 525.0, 1e-9);
    cb_pipeline_stats st;
    CB_CHECK_EQ_INT(cb_pipeline_stats_compute(&f.iso_in[0], 0, &st), 0);
    CB_CHECK_NEAR(st.throughput_qps, 18.75, 1e-9);
    cb_pipeline_stats_fini(&st);
    free(f.table);
    cb_interference_fini(&f.r);
}

/* b's baseline has one query: the aggregate (collocated only) is there, b's slowdown and with it
 * STP, ANTT and fairness are not, with the baseline's reason in the JSON and the table. */
static void test_colo_baseline_under_minimum(void) {
    static const double runs[4][3] = {{0, 10, 10}, {0, 10, 10}, {0, 10, 10}, {0, 10, 1}};
    const char *why = "the baseline of b has 1 query in its measured window, fewer than the "
                      "minimum of 2";
    colo_fixture f;
    colo_run(&f, runs, why);
    CB_CHECK_STR_EQ(f.r.pipelines[1].unavailable, why);
    CB_CHECK_NEAR(f.r.aggregate_qps, 200.0, 1e-9);
    CB_CHECK_NEAR(f.r.pipelines[0].slowdown, 1.0, 1e-12);
    CB_CHECK(isnan(f.r.pipelines[1].slowdown) && isnan(f.r.stp) && isnan(f.r.fairness));
    char *v = cb_test_py_json(f.json, "[d[\"collocation\"][k] for k in "
                                      "(\"aggregate_qps\", \"stp\", \"unavailable\")]");
    char want[300];
    snprintf(want, sizeof want, "[200, None, '%s']", why);
    CB_CHECK_STR_EQ(v, want);
    free(v);
    snprintf(want, sizeof want, "  aggregate 200.0 q/s   STP, ANTT, fairness unavailable: %s\n",
             why);
    CB_CHECK_CONTAINS(f.table, want);
    free(f.table);
    cb_interference_fini(&f.r);
}

int main(void) {
    CB_RUN(test_pipeline_stats);
    CB_RUN(test_stage_metrics);
    CB_RUN(test_summary_json);
    CB_RUN(test_table);
    CB_RUN(test_beyond_exact_limits);
    CB_RUN(test_json_writer);
    CB_RUN(test_env_json);
    CB_RUN(test_undefined_rates);
    CB_RUN(test_colo_no_common_window);
    CB_RUN(test_colo_under_minimum);
    CB_RUN(test_colo_long_steps);
    CB_RUN(test_colo_warmup_work);
    CB_RUN(test_colo_baseline_under_minimum);
    return cb_test_done();
}
