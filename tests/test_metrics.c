/* Stage metrics end to end: a stage reports values that depend on the query id through
 * host->report; every record (ids, values, split/epoch/batch, worker, time inside the stage
 * run), every stage_metrics.csv row, and the summary.json aggregates (computed here again,
 * independently, from the known values) must agree; warm-up reports are excluded; a bad index
 * is refused with CB_EINVAL and records nothing. A run without metrics writes a header-only
 * stage_metrics.csv. A collocated run of two child processes (a plugin compiled here) must give
 * the parent every row of both children and each pipeline's aggregates. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

#include "analysis/summary.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "run_fixture.h"

#define CLI CB_TEST_COLOBENCH

/* ---- a test stage: loss = 1 / (id + 1), images = id % 4 + 1, acc never reported ---------- */

enum { M_LOSS, M_IMAGES, M_ACC, M_N };

static const cb_metric_def k_metrics[M_N] = {
    [M_LOSS] = {"loss", CB_METRIC_GAUGE, "", "1 / (query id + 1)"},
    [M_IMAGES] = {"images", CB_METRIC_COUNT, "images", "query id % 4 + 1"},
    [M_ACC] = {"acc", CB_METRIC_GAUGE, "ratio", "declared, never reported"},
};

#define NAN_ID 13u /* this (measured) query also reports a NaN loss */

typedef struct loss_state {
    const cb_host *host;
} loss_state;

static int loss_create(void *state, const cb_stage_args *args, cb_error *err) {
    ((loss_state *)state)->host = args->host;
    return CB_OK;
}

static int loss_fail(cb_error *err, const char *what) {
    err->code = CB_EINVAL;
    snprintf(err->msg, sizeof err->msg, "%s", what);
    return CB_EINVAL;
}

static int loss_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    const cb_host *h = ((loss_state *)state)->host;
    if (h->report(ctx, M_LOSS, 1.0 / (double)(q->id + 1)) != CB_OK) return loss_fail(err, "report loss");
    if (h->report(ctx, M_IMAGES, (double)(q->id % 4 + 1)) != CB_OK) return loss_fail(err, "report images");
    if (q->id == NAN_ID && h->report(ctx, M_LOSS, NAN) != CB_OK) return loss_fail(err, "report nan");
    /* Bad indices are refused and record nothing (checked on the records). */
    if (h->report(ctx, M_N, 1.0) != CB_EINVAL) return loss_fail(err, "index 3 accepted");
    if (h->report(ctx, -1, 1.0) != CB_EINVAL) return loss_fail(err, "index -1 accepted");
    return CB_OK;
}

static const cb_stage_ops k_loss_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.loss",
    .summary = "reports loss and images from the query id",
    .state_size = sizeof(loss_state),
    .create = loss_create,
    .run = loss_run,
    .metrics = k_metrics,
    .n_metrics = M_N,
};


/* The dataset of the main test: 5 epochs of train (6 batches) then val (2): 40 queries, query id
 * = epoch * 8 + position. */
#define EPOCHS 5
#define PER_EPOCH 8
#define TRAIN 6
#define NQ (EPOCHS * PER_EPOCH)
#define WARMUP 8 /* 32 measured: ceil(n / 10) = 4, not round(n / 10) */
#define BYTES 32

static int split_of(uint64_t id) { return id % PER_EPOCH < TRAIN ? 0 : 1; }
static int64_t batch_of(uint64_t id) {
    uint64_t k = id % PER_EPOCH;
    return (int64_t)(k < TRAIN ? k : k - TRAIN);
}

static const char k_yaml[] =
    "name: metrics\n"
    "pipelines:\n"
    "  - name: train\n"
    "    dataset_stage_id: 0\n"
    "    inputs: [0]\n"
    "    outputs: [7]\n"
    "    loadgen: {component: closed, warmup_queries: 8, config: {concurrency: 3}}\n"
    "    stages:\n"
    "      - {id: 0, name: data, component: util.source, outputs: [7],\n"
    "         config: {bytes: 32, splits: {train: 6, val: 2}, epochs: 5}}\n"
    "      - {id: 7, name: model, component: test.loss, outputs: [], workers: 2}\n";

/* Finds the stage event of (stage, id): the run the report must lie in. */
static const cb_stage_event *find_event(const cb_pipeline_record *r, int stage, uint64_t id) {
    for (size_t i = 0; i < r->n_stage_events; i++)
        if (r->stage_events[i].stage == stage && r->stage_events[i].query_id == id)
            return &r->stage_events[i];
    return NULL;
}

static void check_records(run_fixture *f, const cb_pipeline_record *r) {
    /* data: bytes for every query; model: loss and images for every query, one more loss */
    CB_CHECK_EQ_INT(r->n_metrics, NQ + 2 * NQ + 1);
    int seen[2][M_N][NQ];
    memset(seen, 0, sizeof seen);
    int bad = 0, nan_seen = 0;
    for (size_t i = 0; i < r->n_metrics; i++) {
        const cb_metric_event *e = &r->metrics[i];
        int ok = e->pipeline == 0 && e->stage <= 1 && e->query_id < NQ && e->metric >= 0 &&
                 e->metric < (e->stage == 0 ? 1 : M_IMAGES + 1);
        if (!ok) {
            bad++;
            continue;
        }
        uint64_t id = e->query_id;
        seen[e->stage][e->metric][id]++;
        if (e->split != split_of(id) || e->epoch != (int32_t)(id / PER_EPOCH) ||
            e->batch != batch_of(id))
            bad++;
        if (e->reserved0 || e->reserved[0] || e->reserved[1] || e->reserved[2] || e->reserved[3])
            bad++;
        if (e->worker < 0 || e->worker >= (e->stage == 0 ? 1 : 2)) bad++;
        /* reported during the stage's run of that query */
        const cb_stage_event *ev = find_event(r, e->stage, id);
        if (!ev || e->t_ns < ev->start_ns || e->t_ns > ev->end_ns || e->worker != ev->worker) bad++;
        if (e->t_ns < f->res.t0_ns || e->t_ns > f->res.end_ns) bad++;
        double want = e->stage == 0 ? BYTES
                      : e->metric == M_LOSS ? 1.0 / (double)(id + 1)
                                            : (double)(id % 4 + 1);
        if (e->stage == 1 && e->metric == M_LOSS && id == NAN_ID && isnan(e->value))
            nan_seen++;
        else if (e->value != want)
            bad++;
    }
    CB_CHECK_EQ_INT(bad, 0);
    CB_CHECK_EQ_INT(nan_seen, 1);
    int missing = 0;
    for (uint64_t id = 0; id < NQ; id++) {
        missing += seen[0][0][id] != 1;
        missing += seen[1][M_LOSS][id] != (id == NAN_ID ? 2 : 1);
        missing += seen[1][M_IMAGES][id] != 1;
        missing += seen[1][M_ACC][id] != 0;
    }
    CB_CHECK_EQ_INT(missing, 0);
}

/* Splits a CSV line (no quoted fields here) in place into at most max fields. */
static int split_csv(char *line, char **fields, int max) {
    int n = 0;
    fields[n++] = line;
    for (char *p = line; *p && n < max; p++) {
        if (*p == ',') {
            *p = '\0';
            fields[n++] = p + 1;
        }
    }
    return n;
}

static void check_csv(run_fixture *f, const cb_pipeline_record *r, const char *out_dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/stage_metrics.csv", out_dir);
    size_t len = 0;
    char *text = cb_test_read(path, &len);
    CB_CHECK(text != NULL);
    if (!text) return;
    const char *header = "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,t_ns,metric,value\n";
    CB_CHECK(strncmp(text, header, strlen(header)) == 0);
    int rows = 0, bad = 0;
    int *used = calloc(r->n_metrics, sizeof *used);
    char *save = NULL;
    for (char *line = strtok_r(text + strlen(header), "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        rows++;
        char *fl[12];
        if (split_csv(line, fl, 12) != 11) {
            bad++;
            continue;
        }
        int stage = !strcmp(fl[1], "data") ? 0 : !strcmp(fl[1], "model") ? 1 : -1;
        uint64_t id = strtoull(fl[3], NULL, 10);
        int64_t t = strtoll(fl[8], NULL, 10) + f->res.t0_ns;
        double v = strtod(fl[10], NULL);
        int metric = -1;
        for (int m = 0; m < M_N; m++)
            if (!strcmp(fl[9], stage == 0 ? "bytes" : k_metrics[m].name)) metric = stage == 0 ? 0 : m;
        if (strcmp(fl[0], "train") || stage < 0 || metric < 0 ||
            strcmp(fl[2], stage == 0 ? "0" : "7") ||
            strcmp(fl[4], split_of(id) ? "val" : "train") ||
            strtol(fl[5], NULL, 10) != (long)(id / PER_EPOCH) ||
            strtoll(fl[6], NULL, 10) != batch_of(id)) {
            bad++;
            continue;
        }
        /* the record it came from, exactly (value round-trips; NaN as "nan") */
        int found = 0;
        for (size_t i = 0; i < r->n_metrics && !found; i++) {
            const cb_metric_event *e = &r->metrics[i];
            if (used[i] || e->stage != stage || e->metric != metric || e->query_id != id || e->t_ns != t)
                continue;
            if (!(e->value == v || (isnan(e->value) && isnan(v) && !strcmp(fl[10], "nan")))) continue;
            if (e->worker != strtol(fl[7], NULL, 10)) continue;
            used[i] = found = 1;
        }
        if (!found) {
            printf("# row without record: %s,%s,...,%s,%s\n", fl[1], fl[3], fl[9], fl[10]);
            bad++;
        }
    }
    CB_CHECK_EQ_INT(rows, r->n_metrics);
    CB_CHECK_EQ_INT(bad, 0);
    free(used);
    free(text);
}

/* Compares a number printed by Python with an expected value (relative 1e-12). */
static void check_num(const char *json, const char *expr, double want) {
    char *got = cb_test_py_json(json, expr);
    CB_CHECK(got != NULL);
    if (!got) return;
    double v = strtod(got, NULL);
    double tol = 1e-12 * (fabs(want) > 1 ? fabs(want) : 1);
    if (!(fabs(v - want) <= tol)) cb__test_fail(__FILE__, __LINE__, "%s: %s, expected %.17g", expr, got, want);
    free(got);
}

static void check_summary(run_fixture *f, const cb_pipeline_record *r, const char *out_dir) {
    /* Independent expectations over the measured ids WARMUP..NQ-1 (NaN left out). */
    int n = NQ - WARMUP, tenth = (n + 9) / 10;
    double sum = 0, head = 0, tail = 0, img = 0, tr_sum = 0, va_sum = 0;
    int tr_n = 0, va_n = 0;
    for (int k = 0; k < n; k++) {
        uint64_t id = (uint64_t)(WARMUP + k);
        double loss = 1.0 / (double)(id + 1);
        sum += loss;
        if (k < tenth) head += loss;
        if (k >= n - tenth) tail += loss;
        img += (double)(id % 4 + 1);
        if (split_of(id)) {
            va_sum += loss;
            va_n++;
        } else {
            tr_sum += loss;
            tr_n++;
        }
    }
    /* the throughput window, from the query records */
    int64_t ws = INT64_MAX, we = INT64_MIN;
    for (size_t i = 0; i < r->n_queries; i++) {
        const cb_query_event *q = &r->queries[i];
        if (q->query_id < WARMUP || q->status != CB_QUERY_OK) continue;
        if (q->scheduled_ns < ws) ws = q->scheduled_ns;
        if (q->end_ns > we) we = q->end_ns;
    }
    double window_s = (double)(we - ws) / 1e9;

    cb_pipeline_record recs[1];
    cb_summary_input in;
    run_fixture_summary_input(f, recs, &in);
    char path[512];
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    FILE *out = fopen(path, "w");
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_summary_write_json(&in, out, &err), CB_OK);
    fclose(out);

#define P "d[\"pipelines\"][0]"
#define LOSS P "[\"stages\"][1][\"metrics\"][\"loss\"]"
#define IMG P "[\"stages\"][1][\"metrics\"][\"images\"]"
    char *v = cb_test_py_json(path, "sorted(" P "[\"stages\"][1][\"metrics\"]), sorted(" P "[\"stages\"][0][\"metrics\"])");
    CB_CHECK_STR_EQ(v, "['images', 'loss'] ['bytes']"); /* acc: declared, never reported */
    free(v);
    v = cb_test_py_json(path, LOSS "[\"kind\"], repr(" LOSS "[\"unit\"]), " LOSS "[\"n\"], " LOSS "[\"non_finite\"], "
                              IMG "[\"kind\"], " IMG "[\"unit\"], " IMG "[\"n\"]");
    char want[128];
    snprintf(want, sizeof want, "gauge '' %d 1 count images %d", n, n);
    CB_CHECK_STR_EQ(v, want);
    free(v);
    check_num(path, LOSS "[\"first\"]", 1.0 / (WARMUP + 1));
    check_num(path, LOSS "[\"last\"]", 1.0 / NQ);
    check_num(path, LOSS "[\"min\"]", 1.0 / NQ);
    check_num(path, LOSS "[\"max\"]", 1.0 / (WARMUP + 1));
    check_num(path, LOSS "[\"mean\"]", sum / n);
    check_num(path, LOSS "[\"first_tenth_mean\"]", head / tenth);
    check_num(path, LOSS "[\"last_tenth_mean\"]", tail / tenth);
    check_num(path, LOSS "[\"by_split\"][\"train\"][\"n\"]", tr_n);
    check_num(path, LOSS "[\"by_split\"][\"train\"][\"mean\"]", tr_sum / tr_n);
    check_num(path, LOSS "[\"by_split\"][\"train\"][\"last\"]", 1.0 / ((EPOCHS - 1) * PER_EPOCH + TRAIN));
    check_num(path, LOSS "[\"by_split\"][\"val\"][\"n\"]", va_n);
    check_num(path, LOSS "[\"by_split\"][\"val\"][\"mean\"]", va_sum / va_n);
    check_num(path, LOSS "[\"by_split\"][\"val\"][\"last\"]", 1.0 / NQ);
    check_num(path, IMG "[\"sum\"]", img);
    check_num(path, IMG "[\"mean\"]", img / n);
    check_num(path, IMG "[\"per_second\"]", img / window_s);
    check_num(path, P "[\"images_per_s\"]", img / window_s);
    check_num(path, P "[\"stages\"][0][\"metrics\"][\"bytes\"][\"sum\"]", (double)n * BYTES);
    check_num(path, P "[\"stages\"][0][\"metrics\"][\"bytes\"][\"per_second\"]", n * BYTES / window_s);
    v = cb_test_py_json(path, "\"by_split\" in " IMG);
    CB_CHECK_STR_EQ(v, "False"); /* by_split is for gauges */
    free(v);
#undef P
#undef LOSS
#undef IMG

    /* The table: one line per stage with metrics, gauges as first -> last tenth means. */
    char *tab = NULL;
    size_t tlen = 0;
    FILE *t = open_memstream(&tab, &tlen);
    cb_summary_print_table(&in, t);
    fclose(t);
    char line[256];
    snprintf(line, sizeof line, "  model: loss %.4g -> %.4g  images %.0f (%.1f/s)\n", head / tenth,
             tail / tenth, img, img / window_s);
    CB_CHECK_CONTAINS(tab, line);
    snprintf(line, sizeof line, "  data: bytes %d (", n * BYTES);
    CB_CHECK_CONTAINS(tab, line);
    snprintf(line, sizeof line, " q/s, %.1f images/s\n", img / window_s);
    CB_CHECK_CONTAINS(tab, line);
    free(tab);
}

static void test_report_records_csv_summary(void) {
    const char *out_dir = cb_test_tmpdir();
    run_fixture f;
    if (run_fixture_ok(&f, k_yaml, out_dir, &k_loss_ops) != 0) {
        run_fixture_fini(&f);
        return;
    }
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, NQ);
    CB_CHECK(r.splits != NULL && r.splits->n == 2);
    check_records(&f, &r);
    check_csv(&f, &r, out_dir);
    check_summary(&f, &r, out_dir);
    run_fixture_fini(&f);
}

static void test_no_metrics_header_only(void) {
    const char *out_dir = cb_test_tmpdir();
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: none\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: closed, max_queries: 20}\n"
                      "    stages: [{id: 0, name: a, component: util.noop, outputs: []}]\n",
                      out_dir, &k_loss_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 20);
    CB_CHECK_EQ_INT(r.n_metrics, 0);
    CB_CHECK(r.splits == NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/stage_metrics.csv", out_dir);
    char *text = cb_test_read(path, NULL);
    CB_CHECK_STR_EQ(text, "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,t_ns,metric,value\n");
    free(text);
    cb_pipeline_record recs[1];
    cb_summary_input in;
    run_fixture_summary_input(&f, recs, &in);
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    FILE *out = fopen(path, "w");
    CB_CHECK_EQ_INT(cb_summary_write_json(&in, out, NULL), CB_OK);
    fclose(out);
    char *v = cb_test_py_json(path, "d[\"pipelines\"][0][\"stages\"][0][\"metrics\"], \"images_per_s\" in d[\"pipelines\"][0]");
    CB_CHECK_STR_EQ(v, "{} False");
    free(v);
    run_fixture_fini(&f);
}

/* Many reports from one thread cross the metric log's chunk boundaries (4096 records): none is
 * lost or repeated, in memory or in the CSV. */
static void test_many_reports_cross_chunks(void) {
    const char *out_dir = cb_test_tmpdir();
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: many\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: offline, queue_depth: 4, max_queries: 20000}\n"
                      "    stages: [{id: 0, name: src, component: util.source, outputs: [],\n"
                      "              config: {bytes: 3, share: true}}]\n",
                      out_dir, &k_loss_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_metrics, 20000);
    unsigned char *seen = calloc(20000, 1);
    int bad = 0;
    for (size_t i = 0; i < r.n_metrics; i++) {
        const cb_metric_event *e = &r.metrics[i];
        if (e->query_id >= 20000 || seen[e->query_id]++ || e->value != 3.0 || e->metric != 0) bad++;
    }
    CB_CHECK_EQ_INT(bad, 0);
    free(seen);
    char path[512];
    snprintf(path, sizeof path, "%s/stage_metrics.csv", out_dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(path), 20001);
    run_fixture_fini(&f);
}

/* ---- collocation: two child processes --------------------------------------------------- */

static const char k_plugin_src[] =
    "#include <colobench/stage.h>\n"
    "static const cb_metric_def m[] = {{\"loss\", CB_METRIC_GAUGE, \"\", \"1/(id+1)\"},\n"
    "                                  {\"images\", CB_METRIC_COUNT, \"images\", \"id%4+1\"}};\n"
    "typedef struct st { const cb_host *h; } st;\n"
    "static int c(void *s, const cb_stage_args *a, cb_error *e) { (void)e; ((st *)s)->h = a->host; return 0; }\n"
    "static int r(void *s, cb_query *q, cb_run_ctx *x, cb_error *e) {\n"
    "    (void)e; const cb_host *h = ((st *)s)->h;\n"
    "    h->report(x, 0, 1.0 / (double)(q->id + 1));\n"
    "    h->report(x, 1, (double)(q->id % 4 + 1));\n"
    "    return 0;\n"
    "}\n"
    "static const cb_stage_ops ops = {.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_stage_ops),\n"
    "    .name = \"test.loss\", .summary = \"x\", .state_size = sizeof(st), .create = c, .run = r,\n"
    "    .metrics = m, .n_metrics = 2};\n"
    "static const cb_stage_ops *const list[] = {&ops};\n"
    "const cb_plugin cb_plugin_entry = {CB_STAGE_ABI_MAJOR, sizeof(cb_plugin), \"t\", 1, list};\n";

/* Recomputes every aggregate of summary.json from the merged CSV, and checks the merged CSV is
 * exactly the children's rows. */
static const char k_check_py[] =
    "import csv, json, math, sys\n"
    "d = sys.argv[1]; s = json.load(open(d + '/summary.json'))\n"
    "rows = list(csv.DictReader(open(d + '/stage_metrics.csv')))\n"
    "assert rows, 'no rows'\n"
    "for p in s['pipelines']:\n"
    "    name = p['name']\n"
    "    mine = [r for r in rows if r['pipeline'] == name]\n"
    "    child = list(csv.DictReader(open(d + '/pipelines/' + name + '/stage_metrics.csv')))\n"
    "    assert sorted(map(lambda r: tuple(r.values()), mine)) == sorted(map(lambda r: tuple(r.values()), child)), name\n"
    "    warm = {'a': 9, 'b': 0}[name]\n"
    "    ws, we = p['window_ns']; win = (we - ws) / 1e9\n"
    "    for st in p['stages']:\n"
    "        for metric, m in st['metrics'].items():\n"
    "            rs = sorted(((int(r['query_id']), int(r['t_ns']), float(r['value']), r['split']) for r in mine\n"
    "                         if r['stage'] == st['name'] and r['metric'] == metric and int(r['query_id']) >= warm))\n"
    "            v = [x[2] for x in rs]; n = len(v); k = (n + 9) // 10\n"
    "            close = lambda a, b: abs(a - b) <= 1e-12 * max(1.0, abs(b))\n"
    "            assert m['n'] == n and n > 0, (name, metric, m['n'], n)\n"
    "            if m['kind'] == 'count':\n"
    "                assert close(m['sum'], sum(v)) and close(m['per_second'], sum(v) / win), (name, metric)\n"
    "            else:\n"
    "                for key, want in (('first', v[0]), ('last', v[-1]), ('mean', sum(v) / n), ('min', min(v)),\n"
    "                                  ('max', max(v)), ('first_tenth_mean', sum(v[:k]) / k),\n"
    "                                  ('last_tenth_mean', sum(v[-k:]) / k)):\n"
    "                    assert close(m[key], want), (name, metric, key, m[key], want)\n"
    "                for sp, agg in m.get('by_split', {}).items():\n"
    "                    sv = [x[2] for x in rs if x[3] == sp]\n"
    "                    assert agg['n'] == len(sv) and close(agg['mean'], sum(sv) / len(sv)) and agg['last'] == sv[-1], (name, sp)\n"
    "    img = p['stages'][1]['metrics']['images']\n"
    "    assert close(p['images_per_s'], img['sum'] / win), name\n"
    "assert {r['pipeline'] for r in rows} == {'a', 'b'}\n"
    "assert set(s['pipelines'][0]['stages'][1]['metrics']['loss']['by_split']) == {'train', 'val'}\n"
    "assert 'by_split' not in s['pipelines'][1]['stages'][1]['metrics']['loss']\n"
    "print('ok')\n";

static void test_collocated_children(void) {
    const char *dir = cb_test_tmpdir();
    const char *src = cb_test_write(dir, "loss_plugin.c", k_plugin_src);
    char cmd[4096], so[512];
    snprintf(so, sizeof so, "%s/loss_plugin.so", dir);
    snprintf(cmd, sizeof cmd, "cc -std=c17 -shared -fPIC -I '%s/include' -o '%s' '%s' 2>&1",
             CB_TEST_SRCDIR, so, src);
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    if (st != 0) printf("# %s\n", out ? out : "");
    CB_CHECK_EQ_INT(st, 0);
    free(out);
    if (st != 0) return;
    char y[4096];
    snprintf(y, sizeof y,
             "name: colo_metrics\n"
             "plugin_paths: ['%s']\n"
             "collocation: {mode: processes}\n"
             "monitors: false\n"
             "trace: false\n"
             "pipelines:\n"
             "  - name: a\n"
             "    dataset_stage_id: 0\n"
             "    inputs: [0]\n"
             "    outputs: [1]\n"
             "    loadgen: {component: closed, warmup_queries: 9, config: {concurrency: 2}}\n"
             "    stages:\n"
             "      - {id: 0, name: data, component: util.source, outputs: [1],\n"
             "         config: {bytes: 16, splits: {train: 4, val: 1}, epochs: 6}}\n"
             "      - {id: 1, name: model, component: test.loss, outputs: [], workers: 2}\n"
             "  - name: b\n"
             "    inputs: [0]\n"
             "    outputs: [1]\n"
             "    loadgen: {component: closed, max_queries: 25}\n"
             "    stages:\n"
             "      - {id: 0, name: data, component: util.source, outputs: [1], config: {bytes: 64}}\n"
             "      - {id: 1, name: model, component: test.loss, outputs: []}\n",
             so);
    const char *cfg = cb_test_write(dir, "colo.yaml", y);
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out -q --allow-plugins", cfg, dir);
    out = NULL;
    st = cb_test_sh(cmd, &out);
    if (st != 0) printf("# %s\n# exit %d: %s\n", cmd, st, out ? out : "");
    CB_CHECK_EQ_INT(st, 0);
    free(out);
    if (st != 0) return;
    char p[1024];
    /* a: 30 queries x (bytes + loss + images), b: 25 x 3, and the header */
    snprintf(p, sizeof p, "%s/out/stage_metrics.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 30 * 3 + 25 * 3);
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    char *v = cb_test_py_json(p, "[x[\"stages\"][1][\"metrics\"][\"loss\"][\"n\"] for x in d[\"pipelines\"]], "
                                 "[x[\"stages\"][0][\"metrics\"][\"bytes\"][\"sum\"] for x in d[\"pipelines\"]]");
    CB_CHECK_STR_EQ(v, "[21, 25] [336, 1600]");
    free(v);
    const char *script = cb_test_write(dir, "check.py", k_check_py);
    snprintf(cmd, sizeof cmd, "python3 %s %s/out", script, dir);
    out = NULL;
    st = cb_test_sh(cmd, &out);
    if (st != 0) printf("# %s\n", out ? out : "");
    CB_CHECK_EQ_INT(st, 0);
    free(out);
}

int main(void) {
    CB_RUN(test_report_records_csv_summary);
    CB_RUN(test_no_metrics_header_only);
    CB_RUN(test_many_reports_cross_chunks);
    CB_RUN(test_collocated_children);
    return cb_test_done();
}
