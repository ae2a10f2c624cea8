/* Pipeline replicas and collocation sweeps: replicas expand at spec load (names, seeds, the
 * resolved YAML), bad values name FILE:LINE:COL and the key, and `colobench run` of a sweep runs
 * every point (real CPU interference: util.spin in work mode on one core), writes sweep.csv and
 * sweep.json, runs the baseline of replicated pipelines once, adds images/s where the pipelines
 * report images, keeps going past a failed point and stops after the current point on SIGINT.
 *
 * The end-to-end checks assert each point's figures as computed from its runs, not how large
 * they are (a timing outcome: docs/benchmarks.md). CMake runs this test alone (RUN_SERIAL), so
 * that its pipelines run as configured. */
#include "harness.h"

#include <stdlib.h>
#include <sys/stat.h>

#include "core/registry.h"
#include "core/spec.h"
#include "spec_fixture.h"

#define CLI CB_TEST_COLOBENCH

/* Two pipelines: `a` (replicas, seed 5) and `b` (one, default seed). */
#define PIPES(reps_line)                                                                           \
    "pipelines:\n"                                                                                 \
    "  - name: a\n" reps_line "    inputs: [0]\n"                                                  \
    "    loadgen: {max_queries: 5, config: {seed: 5}}\n"                                           \
    "    stages: [{id: 0, component: util.noop}]\n"                                                \
    "  - name: b\n"                                                                                \
    "    inputs: [0]\n"                                                                            \
    "    stages: [{id: 0, component: util.noop}]\n"

static void test_replicas_expand(void) {
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    CB_CHECK_EQ_INT(spec_fixture_build("name: r\n" PIPES("    replicas: 3\n"), &doc, &spec), 0);
    if (!spec) {
        printf("# %s\n", g_msg);
        return;
    }
    CB_CHECK_EQ_INT(spec->n_pipelines, 4);
    const char *names[] = {"a.1", "a.2", "a.3", "b"};
    const unsigned long long seeds[] = {5, 6, 7, 1};
    for (size_t i = 0; i < 4 && i < spec->n_pipelines; i++) {
        const cb_pipeline_spec *p = &spec->pipelines[i];
        CB_CHECK_STR_EQ(p->name, names[i]);
        CB_CHECK_EQ_INT(p->loadgen.seed, seeds[i]);
        CB_CHECK_EQ_INT(p->src_index, i < 3 ? 0 : 1);
        CB_CHECK_EQ_INT(p->replica, i < 3 ? (int)i + 1 : 1);
        CB_CHECK_EQ_INT(p->n_replicas, i < 3 ? 3 : 1);
        CB_CHECK_EQ_INT(p->replicas_set, i < 3);
        CB_CHECK_STR_EQ(p->base_name, i < 3 ? "a" : "b");
        /* identical workloads otherwise */
        CB_CHECK_EQ_INT(p->loadgen.max_queries, i < 3 ? 5 : 0);
    }
    /* Four pipelines: the default mode is processes. */
    CB_CHECK_EQ_INT(spec->collocation.mode, CB_COLLOC_PROCESSES);
    CB_CHECK_EQ_INT(spec->sweep.n_modes + spec->sweep.n_replicas, 0);
    /* The resolved YAML holds ordinary pipelines and loads again to the same benchmark. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CB_CHECK_EQ_INT(cb_spec_write_yaml(spec, f), 0);
    fclose(f);
    cb_doc *doc2 = NULL;
    cb_spec *spec2 = NULL;
    CB_CHECK_EQ_INT(spec_fixture_build(text, &doc2, &spec2), 0);
    if (spec2) {
        CB_CHECK_EQ_INT(spec2->n_pipelines, 4);
        for (size_t i = 0; i < 4 && i < spec2->n_pipelines; i++) {
            CB_CHECK_STR_EQ(spec2->pipelines[i].name, names[i]);
            CB_CHECK_EQ_INT(spec2->pipelines[i].loadgen.seed, seeds[i]);
        }
    }
    free(text);
    cb_spec_destroy(spec2);
    cb_doc_destroy(doc2);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);

    /* replicas: 1 keeps the name; one pipeline alone defaults to threads. */
    CB_CHECK_EQ_INT(spec_fixture_build("name: r\n" PIPES("    replicas: 1\n"), &doc, &spec), 0);
    if (spec) {
        CB_CHECK_EQ_INT(spec->n_pipelines, 2);
        CB_CHECK_STR_EQ(spec->pipelines[0].name, "a");
        CB_CHECK_EQ_INT(spec->pipelines[0].loadgen.seed, 5);
        CB_CHECK_EQ_INT(spec->pipelines[0].replicas_set, 1);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
}

static void test_sweep_parsed(void) {
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    CB_CHECK_EQ_INT(spec_fixture_build("sweep: {mode: [processes, threads], replicas: [1, 4]}\n" PIPES(""), &doc, &spec), 0);
    if (!spec) {
        printf("# %s\n", g_msg);
        return;
    }
    CB_CHECK_EQ_INT(spec->sweep.n_modes, 2);
    CB_CHECK_EQ_INT(spec->sweep.modes[0], CB_COLLOC_PROCESSES);
    CB_CHECK_EQ_INT(spec->sweep.modes[1], CB_COLLOC_THREADS);
    CB_CHECK_EQ_INT(spec->sweep.n_replicas, 2);
    CB_CHECK_EQ_INT(spec->sweep.replicas[1], 4);
    /* The benchmark itself is unchanged by its sweep (default mode, per-pipeline modes). */
    CB_CHECK_EQ_INT(spec->n_pipelines, 2);
    CB_CHECK_EQ_INT(spec->collocation.mode, CB_COLLOC_PROCESSES);
    CB_CHECK_EQ_INT(spec->pipelines[0].mode, CB_COLLOC_PROCESSES);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    /* A single value is a one-item list. */
    CB_CHECK_EQ_INT(spec_fixture_build("sweep: {replicas: 2}\n" PIPES(""), &doc, &spec), 0);
    if (spec) {
        CB_CHECK_EQ_INT(spec->sweep.n_replicas, 1);
        CB_CHECK_EQ_INT(spec->sweep.n_modes, 0);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
}

static void test_errors(void) {
    EXPECT_ERROR(PIPES("    replicas: 0\n"),
                 "bench.yaml:3:15: pipelines[0].replicas: expected integer in [1, 64], got \"0\"");
    EXPECT_ERROR(PIPES("    replicas: many\n"),
                 "bench.yaml:3:15: pipelines[0].replicas: expected integer in [1, 64], got \"many\"");
    EXPECT_ERROR(PIPES("    replicas: 65\n"),
                 "bench.yaml:3:15: pipelines[0].replicas: expected integer in [1, 64], got \"65\"");
    /* 64 replicas and one more pipeline: 65. */
    EXPECT_ERROR(PIPES("    replicas: 64\n"),
                 "bench.yaml:7:5: pipelines[1]: 65 pipelines with these replicas (at most 64)");
    EXPECT_ERROR(PIPES("    replica: 2\n"),
                 "bench.yaml:3:5: pipelines[0].replica: unknown key (did you mean 'replicas'?)");
    /* A replica's name must not collide with another pipeline's. */
    EXPECT_ERROR("pipelines:\n"
                 "  - {name: a, replicas: 2, inputs: [0], stages: [{id: 0, component: util.noop}]}\n"
                 "  - {name: a.2, inputs: [0], stages: [{id: 0, component: util.noop}]}\n",
                 "bench.yaml:3:12: pipelines[1].name: duplicate pipeline name 'a.2' (also pipelines[0], a replica)");
    EXPECT_ERROR("sweep: {mode: [teleport]}\n" PIPES(""),
                 "bench.yaml:1:16: sweep.mode[0]: unknown collocation mode \"teleport\" (expected one "
                 "of: threads, processes, mps, mig)");
    EXPECT_ERROR("sweep: {mode: [threads, proceses]}\n" PIPES(""),
                 "bench.yaml:1:25: sweep.mode[1]: unknown collocation mode \"proceses\" (did you mean "
                 "'processes'?)");
    EXPECT_ERROR("sweep: {mode: [processes, processes]}\n" PIPES(""),
                 "bench.yaml:1:27: sweep.mode[1]: mode processes is already in the list");
    EXPECT_ERROR("sweep: {mode: [mig]}\n" PIPES(""),
                 "bench.yaml:1:16: sweep.mode[0]: mode mig does not fit this benchmark: "
                 "pipelines[0].device: collocation mode mig needs device: MIG-<uuid>, mig:I or mig:GPU:I");
    EXPECT_ERROR("sweep: {replicas: [1, 0]}\n" PIPES(""),
                 "bench.yaml:1:23: sweep.replicas[1]: expected integer in [1, 64], got \"0\"");
    EXPECT_ERROR("sweep: {replicas: [2, 2]}\n" PIPES(""),
                 "bench.yaml:1:23: sweep.replicas[1]: 2 replicas are already in the list");
    /* a keeps its own 40; b gets 32: 72 pipelines. */
    EXPECT_ERROR("sweep: {replicas: [32]}\n" PIPES("    replicas: 40\n"),
                 "bench.yaml:1:20: sweep.replicas[0]: 72 pipelines with 32 replicas (at most 64)");
    EXPECT_ERROR("sweep: {replicas: []}\n" PIPES(""),
                 "bench.yaml:1:19: sweep.replicas: expected a non-empty list, got an empty list");
    EXPECT_ERROR("sweep: {modes: [mps]}\n" PIPES(""),
                 "bench.yaml:1:9: sweep.modes: unknown key (did you mean 'mode'?)");
    EXPECT_ERROR("sweep: [mps]\n" PIPES(""), "bench.yaml:1:8: sweep: expected a map, got a sequence");
}

/* ---- end to end --------------------------------------------------------------------------- */

/* `spin` (replicas unset: the sweep multiplies it) and `fixed` (replicas: 1, kept), both
 * util.spin work on cpu 0, isolated baselines. */
static const char *sweep_config(const char *dir, const char *sweep, int queries) {
    char y[2048];
    snprintf(y, sizeof y,
             "name: sweep_test\n"
             "collocation: {baseline: isolated}\n"
             "sweep: %s\n"
             "monitors: false\n"
             "trace: false\n"
             "pipelines:\n"
             "  - name: spin\n    cpus: [0]\n    inputs: [0]\n    outputs: [0]\n"
             "    loadgen: {component: closed, max_queries: %d, warmup_queries: 20}\n"
             "    stages: [{id: 0, name: spin, component: util.spin, config: {duration_us: 500, mode: work}}]\n"
             "  - name: fixed\n    replicas: 1\n    cpus: [0]\n    inputs: [0]\n    outputs: [0]\n"
             "    loadgen: {component: closed, max_queries: %d, warmup_queries: 20}\n"
             "    stages: [{id: 0, name: spin, component: util.spin, config: {duration_us: 500, mode: work}}]\n",
             sweep, queries, queries);
    return cb_test_write(dir, "sweep.yaml", y);
}

/* cmd exits 0 and prints exactly want. */
static void sh_says(const char *cmd, const char *want, int line) {
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    if (st != 0 || !out || strcmp(out, want) != 0)
        cb__test_fail(__FILE__, line, "%s: exit %d, printed \"%s\", expected \"%s\"", cmd, st,
                      out ? out : "", want);
    free(out);
}

static void test_sweep_end_to_end(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = sweep_config(dir, "{replicas: [1, 2], mode: [threads, processes]}", 300);
    char cmd[4096], p[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out", cfg, dir);
    int st = cb_test_sh(cmd, &out);
    if (st != 0) printf("# exit %d: %s\n", st, out ? out : "");
    CB_CHECK_EQ_INT(st, 0);
    /* The table: one line per point, in order. */
    CB_CHECK_CONTAINS(out, "sweep: 4 points");
    const char *t1 = out ? strstr(out, "threads       1") : NULL, *t2 = out ? strstr(out, "threads       2") : NULL;
    const char *p1 = out ? strstr(out, "processes     1") : NULL, *p2 = out ? strstr(out, "processes     2") : NULL;
    CB_CHECK(t1 && t2 && p1 && p2 && t1 < t2 && t2 < p1 && p1 < p2);
    free(out);
    const char *dirs[] = {"threads-x1", "threads-x2", "processes-x1", "processes-x2"};
    const int npipes[] = {2, 3, 2, 3};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/out/%s/summary.json", dir, dirs[i]);
        char *mode = cb_test_py_json(p, "d[\"collocation\"][\"mode\"]");
        CB_CHECK_STR_EQ(mode, i < 2 ? "threads" : "processes");
        free(mode);
        CB_CHECK_EQ_INT(cb_test_py_num(p, "len(d[\"pipelines\"])"), npipes[i]);
        /* The baselines ran once per pipeline as written: spin and fixed, never spin.2. */
        snprintf(cmd, sizeof cmd, "ls %s/out/%s/baseline | tr '\\n' ' '", dir, dirs[i]);
        sh_says(cmd, "fixed spin ", __LINE__);
    }
    /* sweep.csv: 4 points, in order, with their pipeline counts; each point's figures are its
     * summary.json's (what the code computes, not how fast this machine was). */
    snprintf(p, sizeof p, "%s/out/sweep.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 5);
    const char *script = cb_test_write(dir, "check.py",
        "import csv,json,os,sys\n"
        "rows=list(csv.DictReader(open(sys.argv[1])))\n"
        "def near(a, b, what, r):\n"
        "  assert b is not None, '%s: %s is null in %s/summary.json: %s' % (r['dir'], what, r['dir'], c['unavailable'])\n"
        "  assert abs(a - b) <= 1e-3 * abs(b), '%s: %s %r in sweep.csv, %r in its summary.json' % (r['dir'], what, a, b)\n"
        "print(' '.join('%s:%s:%s:%s' % (r['dir'], r['status'], r['pipelines'], r['stp']) for r in rows), file=sys.stderr)\n"
        "assert [(r['mode'], r['replicas'], r['dir']) for r in rows] == [('threads','1','threads-x1'),"
        " ('threads','2','threads-x2'), ('processes','1','processes-x1'), ('processes','2','processes-x2')], rows\n"
        "assert [r['pipelines'] for r in rows] == ['2','3','2','3']\n"
        "for r in rows:\n"
        "  assert r['status'] == 'ok', r\n"
        "  c=json.load(open(os.path.join(os.path.dirname(sys.argv[1]), r['dir'], 'summary.json')))['collocation']\n"
        "  near(float(r['stp'] or 'nan'), c['stp'], 'stp', r)\n"
        "  sl=[q['slowdown'] for q in c['pipelines']]\n"
        "  assert None not in sl, '%s: a slowdown is null in its summary.json: %r' % (r['dir'], [q['unavailable'] for q in c['pipelines']])\n"
        "  near(float(r['slowdown_mean']), sum(sl) / len(sl), 'slowdown_mean', r)\n"
        "  near(float(r['slowdown_max']), max(sl), 'slowdown_max', r)\n"
        "  agg=float(r['aggregate_qps']); iso=float(r['isolated_qps']); rel=float(r['relative'])\n"
        "  assert abs(rel - agg/iso) < 1e-3 * rel, r\n"
        "  lo,mean,hi=(float(r['slowdown_'+k]) for k in ('min','mean','max'))\n"
        "  assert 0 < lo <= mean <= hi, r\n"
        "  assert r['aggregate_images_per_s'] == '', r\n"
        "print('ok')\n");
    snprintf(cmd, sizeof cmd, "python3 %s %s", script, p);
    cb_test_sh_ok(cmd);
    /* Three pipelines sharing one core: each at about a third of its isolated speed (slowdown 3)
     * on a quiet machine; printed, not asserted: another process during a baseline but not the
     * collocated phase moves it anywhere (test_colloc checks the sharing itself). */
    snprintf(p, sizeof p, "%s/out/sweep.json", dir);
    double mean = cb_test_py_num(p, "d[\"points\"][3][\"slowdown\"][\"mean\"]");
    printf("# processes x2: mean slowdown %.2f\n", mean);
    CB_CHECK(mean > 0);
    CB_CHECK_EQ_INT(cb_test_py_num(p, "len(d[\"points\"][3][\"pipelines\"])"), 3);
    /* The replicas' shared baseline: said in its own summary and in the collocated one. */
    snprintf(p, sizeof p, "%s/out/processes-x2/baseline/spin/summary.json", dir);
    char *v = cb_test_py_json(p, "d[\"baseline\"][\"ran_as\"], d[\"baseline\"][\"used_by\"], [q[\"name\"] for q in d[\"pipelines\"]]");
    CB_CHECK_STR_EQ(v, "spin.1 ['spin.1', 'spin.2'] ['spin.1']");
    free(v);
    snprintf(p, sizeof p, "%s/out/processes-x2/summary.json", dir);
    v = cb_test_py_json(p, "[(q[\"name\"], q[\"baseline\"][\"dir\"], q[\"baseline\"][\"shared_by\"]) for q in d[\"collocation\"][\"pipelines\"]]");
    CB_CHECK_STR_EQ(v, "[('spin.1', 'baseline/spin', 2), ('spin.2', 'baseline/spin', 2), ('fixed', 'baseline/fixed', 1)]");
    free(v);
    /* Each replica has its own seed, in the resolved config of the point. */
    snprintf(cmd, sizeof cmd, "grep -c 'seed: 2' %s/out/processes-x2/config.yaml", dir);
    sh_says(cmd, "1\n", __LINE__);
    /* The replicas ran in processes of their own. */
    snprintf(cmd, sizeof cmd, "ls %s/out/processes-x2/pipelines | tr '\\n' ' '", dir);
    sh_says(cmd, "fixed spin.1 spin.2 ", __LINE__);
}

/* Pipelines that report images (a tiny MLP training on synthetic batches): the sweep adds their
 * images/s, and the relative figure is in images/s against the shared baseline's. */
static void test_sweep_images(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = cb_test_write(dir, "img.yaml",
        "name: img\n"
        "collocation: {baseline: isolated}\n"
        "sweep: {replicas: [1, 2], mode: threads}\n"
        "monitors: false\n"
        "trace: false\n"
        "pipelines:\n"
        "  - name: mlp\n    inputs: [0]\n    outputs: [1]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: offline, queue_depth: 2, warmup_queries: 2}\n"
        "    stages:\n"
        "      - {id: 0, name: data, component: data.synthetic, outputs: [1],\n"
        "         config: {shape: [1, 8, 8], classes: 4, batch_size: 16, batches_per_epoch: 40, seed: 1}}\n"
        "      - {id: 1, name: train, component: vision.train, outputs: [],\n"
        "         config: {model: mlp, batch_size: 16, threads: 1, classes: 4, shape: [1, 8, 8]}}\n");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out -q", cfg, dir);
    cb_test_sh_ok(cmd);
    const char *script = cb_test_write(dir, "check_images.py",
        "import json,sys\n"
        "d=sys.argv[1]; pts=json.load(open(d+'/sweep.json'))['points']\n"
        "assert [(p['dir'], p['status'], p['n_pipelines']) for p in pts] == [('threads-x1','ok',1), ('threads-x2','ok',2)], pts\n"
        "for p in pts:\n"
        "  s=json.load(open(d+'/'+p['dir']+'/summary.json'))\n"
        "  b=json.load(open(d+'/'+p['dir']+'/baseline/mlp/summary.json'))\n"
        "  iso=b['pipelines'][0]['images_per_s']\n"
        "  # several pipelines: each at its common-window rate (summary.json's collocation block),\n"
        "  # its whole run's images per query; one: its summary figures\n"
        "  co=s['collocation']['pipelines'] if p['n_pipelines'] > 1 else None\n"
        "  for k,(q,sp) in enumerate(zip(s['pipelines'], p['pipelines'])):\n"
        "    qps=co[k]['collocated_qps'] if co else q['throughput_qps']\n"
        "    img=q['images_per_s']*qps/q['throughput_qps']\n"
        "    assert abs(sp['throughput_qps']-qps) < 1e-6*qps and abs(sp['images_per_s']-img) < 1e-6*img, (sp, qps, img)\n"
        "  agg=sum(q['images_per_s'] for q in p['pipelines'])\n"
        "  aq=s['collocation']['aggregate_qps'] if co else s['pipelines'][0]['throughput_qps']\n"
        "  assert agg > 0 and abs(p['aggregate_images_per_s'] - agg) < 1e-6 * agg, (p, agg)\n"
        "  assert abs(p['aggregate_qps'] - aq) < 1e-6 * aq and p['unavailable'] is None, (p, aq)\n"
        "  assert abs(p['isolated_images_per_s'] - iso) < 1e-6 * iso, (p, iso)\n"
        "  assert abs(p['relative'] - agg / iso) < 1e-6, p\n"
        "  assert [q['name'] for q in p['pipelines']] == [q['name'] for q in s['pipelines']]\n"
        "  assert p['relative_to'] == 'baseline', p\n"
        "print('ok')\n");
    snprintf(cmd, sizeof cmd, "python3 %s %s/out", script, dir);
    cb_test_sh_ok(cmd);
    /* Without baselines: no STP, and the relative figure is against the 1-replica point. */
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/nobase -q --set collocation.baseline=none", cfg, dir);
    cb_test_sh_ok(cmd);
    script = cb_test_write(dir, "check_nobase.py",
        "import json,sys\n"
        "pts=json.load(open(sys.argv[1]+'/sweep.json'))['points']\n"
        "x1,x2=pts\n"
        "assert [p['relative_to'] for p in pts] == ['threads-x1', 'threads-x1'], pts\n"
        "assert x1['relative'] == 1.0 and x1['stp'] is None and x2['isolated_images_per_s'] is None, pts\n"
        "r=x2['aggregate_images_per_s']/x1['aggregate_images_per_s']\n"
        "assert r > 0 and abs(x2['relative'] - r) < 1e-9, pts\n"
        "print('ok')\n");
    snprintf(cmd, sizeof cmd, "python3 %s %s/nobase", script, dir);
    cb_test_sh_ok(cmd);
}

/* Runs cmd, which must exit 1 saying `says`, then returns sweep.json's expr (malloc'd). */
static char *run_failing_sweep(const char *cmd, const char *says, const char *dir, const char *expr) {
    char *out = NULL, p[1024];
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 1);
    CB_CHECK_CONTAINS(out, says);
    free(out);
    snprintf(p, sizeof p, "%s/out/sweep.json", dir);
    return cb_test_py_json(p, expr);
}

/* A point that cannot run (mps without the MPS tools: PATH leads nowhere) is marked failed, the
 * next still runs, and the exit status says so. */
static void test_failed_point_keeps_going(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = sweep_config(dir, "{mode: [mps, threads]}", 100);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "env PATH=/nonexistent " CLI " run %s -o %s/out -q", cfg, dir);
    char *v = run_failing_sweep(cmd, "sweep point mps-x1 failed", dir,
                                "[(q[\"dir\"], q[\"status\"], q[\"n_pipelines\"]) for q in d[\"points\"]], "
                                "d[\"points\"][1][\"stp\"] > 0.3");
    CB_CHECK_STR_EQ(v, "[('mps-x1', 'failed', 0), ('threads-x1', 'ok', 2)] True");
    free(v);
}

/* SIGINT during the second point: the first point's results stay, the sweep stops after the
 * current point (the last two never run), sweep.json says so, exit status 1. */
static void test_interrupt_stops_after_current_point(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = sweep_config(dir, "{replicas: [1, 2], mode: [threads, processes]}", 1500);
    char cmd[4096], p[1024];
    snprintf(cmd, sizeof cmd,
             CLI " run %s -o %s/out -q & pid=$!; "
             "for i in $(seq 400); do [ -f %s/out/threads-x1/summary.json ] && break; sleep 0.05; done; "
             "sleep 0.3; kill -INT $pid; wait $pid",
             cfg, dir, dir);
    char *v = run_failing_sweep(cmd, "sweep interrupted", dir, "[q[\"status\"] for q in d[\"points\"]]");
    CB_CHECK_STR_EQ(v, "['ok', 'interrupted', 'not_run', 'not_run']");
    free(v);
    snprintf(p, sizeof p, "%s/out/processes-x1", dir);
    struct stat sb;
    CB_CHECK(stat(p, &sb) != 0);
}

int main(void) {
    if (spec_fixture_init() != 0) return 1;
    CB_RUN(test_replicas_expand);
    CB_RUN(test_sweep_parsed);
    CB_RUN(test_errors);
    cb_registry_destroy(g_reg);
    CB_RUN(test_sweep_end_to_end);
    CB_RUN(test_sweep_images);
    CB_RUN(test_failed_point_keeps_going);
    CB_RUN(test_interrupt_stops_after_current_point);
    return cb_test_done();
}
