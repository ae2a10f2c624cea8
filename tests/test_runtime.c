/* Runtime tests: every query's events must be consistent with its path through the graph,
 * bounds (workers, queue_depth, back-pressure) must hold, failures and timeouts must stop
 * cleanly. Each test builds a benchmark from YAML text and runs it in memory. */
#include "harness.h"

#include <stdlib.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/schedule.h"
#include "core/spec.h"
#include "run_fixture.h"


static cb_pipeline_record recs(run_fixture *f, size_t p) { return run_fixture_records(f, p); }

static int cmp_ev(const void *a, const void *b) {
    const cb_stage_event *x = a, *y = b;
    if (x->query_id != y->query_id) return x->query_id < y->query_id ? -1 : 1;
    return (x->start_ns > y->start_ns) - (x->start_ns < y->start_ns);
}

static void test_chain_events_follow_path(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: chain\n"
                      "pipelines:\n"
                      "  - name: c\n"
                      "    inputs: [0]\n"
                      "    outputs: [2]\n"
                      "    loadgen: {component: closed, max_queries: 300, config: {concurrency: 3}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: a, component: util.source, outputs: [1], config: {bytes: 64}}\n"
                      "      - {id: 1, name: b, component: util.noop, outputs: [2], workers: 2}\n"
                      "      - {id: 2, name: c, component: util.copy, outputs: []}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    CB_CHECK_EQ_INT(f.res.n_errors, 0);
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 300);
    CB_CHECK_EQ_INT(r.n_stage_events, 900);
    cb_stage_event *ev = malloc(r.n_stage_events * sizeof *ev);
    memcpy(ev, r.stage_events, r.n_stage_events * sizeof *ev);
    qsort(ev, r.n_stage_events, sizeof *ev, cmp_ev);
    int bad = 0;
    for (size_t i = 0; i + 2 < r.n_stage_events; i += 3) {
        for (int k = 0; k < 3; k++) {
            const cb_stage_event *e = &ev[i + (size_t)k];
            if (e->query_id != ev[i].query_id || e->stage != k) bad++;
            if (!(e->enqueue_ns <= e->start_ns && e->start_ns <= e->end_ns)) bad++;
            if (k > 0 && e->prev_end_ns != ev[i + (size_t)k - 1].end_ns) bad++;
        }
    }
    CB_CHECK_EQ_INT(bad, 0);
    /* Every query ok, ends at its last stage's end, starts at or after submission. */
    for (size_t i = 0; i < r.n_queries; i++) {
        const cb_query_event *q = &r.queries[i];
        if (q->status != CB_QUERY_OK) bad++;
        if (q->submit_ns > q->start_ns || q->start_ns > q->end_ns) bad++;
        if (q->scheduled_ns != q->submit_ns) bad++;
        const cb_stage_event *last = &ev[q->query_id * 3 + 2];
        if (last->query_id != q->query_id || last->end_ns > q->end_ns) bad++;
    }
    CB_CHECK_EQ_INT(bad, 0);
    free(ev);
    run_fixture_fini(&f);
}

/* Maximum number of overlapping [start, end) intervals among events of one stage. */
static int max_overlap(const cb_pipeline_record *r, int stage) {
    int best = 0;
    for (size_t i = 0; i < r->n_stage_events; i++) {
        const cb_stage_event *a = &r->stage_events[i];
        if (a->stage != stage) continue;
        int n = 0;
        for (size_t j = 0; j < r->n_stage_events; j++) {
            const cb_stage_event *b = &r->stage_events[j];
            if (b->stage == stage && b->start_ns <= a->start_ns && a->start_ns < b->end_ns) n++;
        }
        if (n > best) best = n;
    }
    return best;
}

static void test_workers_bound_concurrency(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: w\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: closed, max_queries: 48, config: {concurrency: 8}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: s, component: util.sleep, outputs: [], workers: 4,\n"
                      "         config: {duration_us: 3000}}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_stage_events, 48);
    int m = max_overlap(&r, 0);
    CB_CHECK_EQ_INT(m, 4);
    /* Distinct workers 0..3 all used, none beyond. */
    int used[8] = {0};
    for (size_t i = 0; i < r.n_stage_events; i++) {
        int w = r.stage_events[i].worker;
        if (w >= 0 && w < 8) used[w] = 1;
    }
    CB_CHECK(used[0] && used[1] && used[2] && used[3] && !used[4]);
    run_fixture_fini(&f);
}

static void test_offline_queue_depth_bounds_in_flight(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: o\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [1]\n"
                      "    loadgen: {component: offline, queue_depth: 5, max_queries: 200}\n"
                      "    stages:\n"
                      "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, name: s, component: util.spin, outputs: [], workers: 2, config: {duration_us: 50}}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 200);
    int worst = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        int64_t t = r.queries[i].submit_ns;
        int n = 0;
        for (size_t j = 0; j < r.n_queries; j++)
            if (r.queries[j].submit_ns <= t && t < r.queries[j].end_ns) n++;
        if (n > worst) worst = n;
    }
    CB_CHECK_CMP_INT(worst, <=, 5);
    CB_CHECK_CMP_INT(worst, >=, 2);
    run_fixture_fini(&f);
}

static void test_fanout_and_merge(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: fm\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [3]\n"
                      "    loadgen: {component: closed, max_queries: 100, config: {concurrency: 4}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: src, component: util.source, outputs: [1, 2], config: {bytes: 16}}\n"
                      "      - {id: 1, name: left, component: util.copy, outputs: [3], workers: 2}\n"
                      "      - {id: 2, name: right, component: util.noop, outputs: [3], workers: 2}\n"
                      "      - {id: 3, name: join, component: util.noop, outputs: [], polling_policy: merge}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.res.n_errors, 0);
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 100);
    int per_stage[4] = {0};
    for (size_t i = 0; i < r.n_stage_events; i++) per_stage[r.stage_events[i].stage]++;
    CB_CHECK_EQ_INT(per_stage[0], 100);
    CB_CHECK_EQ_INT(per_stage[1], 100);
    CB_CHECK_EQ_INT(per_stage[2], 100);
    CB_CHECK_EQ_INT(per_stage[3], 100); /* one joined run per query, not two */
    /* The join starts after both branches ended. */
    int bad = 0;
    for (size_t i = 0; i < r.n_stage_events; i++) {
        const cb_stage_event *j = &r.stage_events[i];
        if (j->stage != 3) continue;
        for (size_t k = 0; k < r.n_stage_events; k++) {
            const cb_stage_event *b = &r.stage_events[k];
            if (b->query_id == j->query_id && (b->stage == 1 || b->stage == 2) && b->end_ns > j->start_ns) bad++;
        }
    }
    CB_CHECK_EQ_INT(bad, 0);
    for (size_t i = 0; i < r.n_queries; i++) bad += r.queries[i].status != CB_QUERY_OK;
    CB_CHECK_EQ_INT(bad, 0);
    run_fixture_fini(&f);
}

/* A router sends each query down one branch of a fork whose branches a merge joins: the merge
 * can never get both. The pipeline fails at once, naming the merge and the query, instead of
 * waiting forever (no timeout here: a hang would be the test's). */
static void test_merge_that_cannot_complete(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: stuck\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [3]\n"
                      "    loadgen: {component: closed, max_queries: 50, config: {concurrency: 2}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: pick, component: util.router, outputs: [1, 2], config: {mode: field, field: id}}\n"
                      "      - {id: 1, name: left, component: util.noop, outputs: [3]}\n"
                      "      - {id: 2, name: right, component: util.noop, outputs: [3]}\n"
                      "      - {id: 3, name: join, component: util.noop, polling_policy: merge}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.res.n_errors, 1); /* the run's result carries the failure */
    if (f.res.n_errors > 0) {
        CB_CHECK_CONTAINS(f.res.errors[0], "pipeline 'p': merge stage 'join' (id 3): query ");
        CB_CHECK_CONTAINS(f.res.errors[0], "can never arrive from all 2 of its inputs");
    }
    cb_pipeline_record r = recs(&f, 0);
    int errors = 0, ok_q = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        errors += r.queries[i].status == CB_QUERY_ERROR;
        ok_q += r.queries[i].status == CB_QUERY_OK;
    }
    CB_CHECK_CMP_INT(errors, >=, 1); /* the query named; others in flight are cancelled */
    CB_CHECK_EQ_INT(ok_q, 0);
    for (size_t i = 0; i < r.n_stage_events; i++) CB_CHECK(r.stage_events[i].stage != 3);
    run_fixture_fini(&f);
}

static void test_router_loop_terminates(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: loop\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [2]\n"
                      "    loadgen: {component: closed, max_queries: 200, config: {concurrency: 2}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: work, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, name: route, component: util.router, outputs: [0, 2],\n"
                      "         config: {weights: [0.7, 0.3], max_hops: 9, on_max_hops: last}}\n"
                      "      - {id: 2, name: done, component: util.noop, outputs: []}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.res.n_errors, 0);
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 200);
    int done = 0, loops = 0, bad = 0;
    for (size_t i = 0; i < r.n_stage_events; i++) {
        if (r.stage_events[i].stage == 2) done++;
        if (r.stage_events[i].stage == 0) loops++;
    }
    CB_CHECK_EQ_INT(done, 200);
    CB_CHECK_CMP_INT(loops, >, 300); /* 0.7 loop-back probability: ~2.2 visits per query */
    /* hops bound: max_hops 9 = at most 9 rounds -> the work stage at most 10 times per query */
    for (uint64_t q = 0; q < 200; q++) {
        int n = 0;
        for (size_t i = 0; i < r.n_stage_events; i++)
            n += r.stage_events[i].query_id == q && r.stage_events[i].stage == 0;
        if (n > 10) bad++;
    }
    CB_CHECK_EQ_INT(bad, 0);
    run_fixture_fini(&f);
}

static void test_failure_stops_pipeline(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: fail\n"
                      "pipelines:\n"
                      "  - name: broken\n"
                      "    inputs: [0]\n"
                      "    outputs: [1]\n"
                      "    loadgen: {component: closed, max_queries: 100000, config: {concurrency: 2}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, name: boom, component: util.fail, outputs: [], config: {on_query: 5}}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    CB_CHECK_EQ_INT(f.res.n_errors, 1);
    CB_CHECK_CONTAINS(f.res.errors[0], "pipeline 'broken'");
    CB_CHECK_CONTAINS(f.res.errors[0], "stage 'boom'");
    CB_CHECK_CONTAINS(f.res.errors[0], "query 5");
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_CMP_INT(r.n_queries, <, 100); /* stopped promptly */
    int errs = 0, q5 = -1;
    for (size_t i = 0; i < r.n_queries; i++) {
        errs += r.queries[i].status == CB_QUERY_ERROR;
        if (r.queries[i].query_id == 5) q5 = r.queries[i].status;
    }
    CB_CHECK_EQ_INT(errs, 1);
    CB_CHECK_EQ_INT(q5, CB_QUERY_ERROR);
    run_fixture_fini(&f);
}

static void test_dataset_splits_and_epochs(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: ds\n"
                      "pipelines:\n"
                      "  - name: train\n"
                      "    inputs: [0]\n"
                      "    outputs: [1]\n"
                      "    dataset_stage_id: 0\n"
                      "    loadgen: {component: offline, queue_depth: 4}\n"
                      "    stages:\n"
                      "      - {id: 0, name: data, component: util.source, outputs: [1],\n"
                      "         config: {splits: {train: 3, val: 2}, epochs: 2}}\n"
                      "      - {id: 1, name: step, component: util.noop, outputs: []}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 10);
    /* Sequence by id: epoch 0 train 0..2, val 0..1, epoch 1 train 0..2, val 0..1. */
    int exp_split[10] = {0, 0, 0, 1, 1, 0, 0, 0, 1, 1};
    int exp_batch[10] = {0, 1, 2, 0, 1, 0, 1, 2, 0, 1};
    int bad = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        const cb_query_event *q = &r.queries[i];
        if (q->query_id >= 10) { bad++; continue; }
        if (q->split != exp_split[q->query_id] || q->batch != exp_batch[q->query_id] ||
            q->epoch != (q->query_id >= 5)) bad++;
    }
    CB_CHECK_EQ_INT(bad, 0);
    /* split barrier: no val query was submitted before every train query of its epoch ended. */
    for (size_t i = 0; i < r.n_queries; i++)
        for (size_t j = 0; j < r.n_queries; j++)
            if (r.queries[i].split == 1 && r.queries[j].split == 0 &&
                r.queries[j].epoch == r.queries[i].epoch && r.queries[j].end_ns > r.queries[i].submit_ns)
                bad++;
    CB_CHECK_EQ_INT(bad, 0);
    run_fixture_fini(&f);
}

static void test_poisson_open_loop_latency_from_schedule(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: open\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: poisson, max_queries: 300, config: {rate: 3000, seed: 7}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: s, component: util.spin, outputs: [], config: {duration_us: 20}}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 300);
    int bad = 0;
    int64_t first = INT64_MAX, last = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        const cb_query_event *q = &r.queries[i];
        if (q->scheduled_ns > q->submit_ns) bad++; /* never issued early */
        if (q->scheduled_ns < first) first = q->scheduled_ns;
        if (q->scheduled_ns > last) last = q->scheduled_ns;
    }
    CB_CHECK_EQ_INT(bad, 0);
    /* 300 arrivals at 3000/s span about 0.1 s. */
    double span_s = (double)(last - first) / 1e9;
    CB_CHECK(span_s > 0.06 && span_s < 0.15);
    run_fixture_fini(&f);
}

/* A generator held back (max_in_flight 1 in front of a 1 ms stage, at 5000/s) issues late: each
 * query keeps its scheduled arrival, so the lateness is in its latency, as in LoadGen. */
static void test_late_arrival_keeps_its_schedule(void) {
    run_fixture f;
    int ok = run_fixture_ok(&f,
                      "name: late\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: poisson, max_queries: 100,\n"
                      "              config: {rate: 5000, seed: 3, max_in_flight: 1}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: s, component: util.spin, outputs: [], config: {duration_us: 1000}}\n",
                      NULL, NULL);
    if (ok) return;
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 100);
    int64_t *sched = NULL;
    size_t n = 0;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_schedule_generate(&f.spec->pipelines[0].loadgen, &sched, &n, &e), CB_OK);
    int bad = 0;
    int64_t last_late = 0;
    for (size_t i = 0; sched && i < r.n_queries; i++) {
        const cb_query_event *q = &r.queries[i];
        if (q->query_id >= n || q->scheduled_ns != f.res.t0_ns + sched[q->query_id]) bad++;
        if (q->end_ns - q->scheduled_ns < q->submit_ns - q->scheduled_ns) bad++;
        if (q->query_id == 99) last_late = q->submit_ns - q->scheduled_ns;
    }
    CB_CHECK_EQ_INT(bad, 0);
    /* 99 runs of >= 1 ms precede the last issue; its arrival was due about 20 ms in. */
    CB_CHECK_CMP_INT(last_late, >, 50000000);
    cb_free(sched);
    run_fixture_fini(&f);
}

/* The pacer's margin follows the wake-up lateness (about its 95th percentile) within [0, cap]. */
static void test_pacer_margin_follows_lateness(void) {
    cb_pacer pc;
    cb_pacer_init(&pc, 50000);
    CB_CHECK_EQ_INT(pc.margin_ns, 25000);
    for (int i = 0; i < 1000; i++) cb_pacer_note_wake(&pc, 200000);
    CB_CHECK_EQ_INT(pc.margin_ns, 50000); /* capped */
    for (int i = 0; i < 1000; i++) cb_pacer_note_wake(&pc, -5000);
    CB_CHECK_EQ_INT(pc.margin_ns, 0);
    /* Nine wakes 10 us late, one 30 us late, repeated: settles near 30 us. */
    for (int i = 0; i < 10000; i++) cb_pacer_note_wake(&pc, i % 10 == 9 ? 30000 : 10000);
    CB_CHECK_CMP_INT(pc.margin_ns, >=, 30000 - 10 * CB_PACER_STEP_NS);
    CB_CHECK_CMP_INT(pc.margin_ns, <=, 30000 + 19 * CB_PACER_STEP_NS);
    CB_CHECK_EQ_INT((int64_t)pc.sleeps, 12000);
    /* A spin toward a far deadline stops at the cap; a past deadline is not spun for. */
    int64_t t0 = cb_clock_now_ns();
    int64_t end = cb_pacer_spin(&pc, t0 + 10000000000LL);
    CB_CHECK_CMP_INT(end - t0, >=, 50000);
    CB_CHECK_EQ_INT((int64_t)pc.spins, 1);
    CB_CHECK_CMP_INT(pc.spin_ns, >=, 50000);
    CB_CHECK_EQ_INT(pc.max_spin_ns, pc.spin_ns);
    cb_pacer_spin(&pc, t0);
    CB_CHECK_EQ_INT((int64_t)pc.spins, 1);
}

/* The open-loop driver's figures: one spin at most per arrival (and the start), each counted,
 * runs done by the driver itself counted, none of it changing what the queries record. */
static void test_open_loop_driver_stats(void) {
    cb_registry *reg = NULL;
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &e), CB_OK);
    const char *path = cb_test_write(cb_test_tmpdir(), "open.yaml",
                      "name: open\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [1]\n"
                      "    loadgen: {component: poisson, max_queries: 300, config: {rate: 3000, seed: 5}}\n"
                      "    stages:\n"
                      "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, name: b, component: util.noop, outputs: []}\n");
    CB_CHECK_EQ_INT(cb_spec_load(path, NULL, 0, reg, &doc, &spec, &e), CB_OK);
    if (!spec) return;
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = spec;
    cb_runtime *rt = NULL;
    cb_driver_stats ds;
    CB_CHECK_EQ_INT(cb_runtime_create(&o, &rt, &e), CB_OK);
    CB_CHECK_EQ_INT(cb_runtime_driver_stats(rt, 0, &ds), CB_EINVAL); /* not joined yet */
    CB_CHECK_EQ_INT(cb_runtime_prepare(rt, &e), CB_OK);
    CB_CHECK_EQ_INT(cb_runtime_start(rt, NULL, &e), CB_OK);
    cb_run_result res;
    CB_CHECK_EQ_INT(cb_runtime_join(rt, &res), CB_OK);
    CB_CHECK_EQ_INT(res.n_errors, 0);
    CB_CHECK_EQ_INT(cb_runtime_driver_stats(rt, 1, &ds), CB_EINVAL);
    CB_CHECK_EQ_INT(cb_runtime_driver_stats(rt, 0, &ds), CB_OK);
    CB_CHECK_EQ_INT(cb_runtime_issued(rt, 0), 300);
    CB_CHECK_EQ_INT(ds.spin_cap_ns, CB_PACER_SPIN_CAP_NS);
    CB_CHECK_CMP_INT((int64_t)ds.spins, <=, 301);
    CB_CHECK_CMP_INT(ds.spin_ns, >=, 0);
    CB_CHECK_CMP_INT(ds.max_spin_ns, <=, ds.spin_ns);
    CB_CHECK(ds.margin_ns >= 0 && ds.margin_ns <= ds.spin_cap_ns);
    CB_CHECK_CMP_INT((int64_t)ds.inline_runs, <=, 600); /* two stages, 300 queries */
    CB_CHECK_CMP_INT(ds.cpu_ns, >, 0);
    cb_run_result_fini(&res);
    cb_runtime_destroy(rt);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    cb_registry_destroy(reg);
}

static void test_backpressure_bounded_queue(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: bp\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [2]\n"
                      "    loadgen: {component: offline, queue_depth: 64, max_queries: 200}\n"
                      "    stages:\n"
                      "      - {id: 0, name: fast, component: util.noop, outputs: [1], workers: 2}\n"
                      "      - {id: 1, name: mid, component: util.noop, outputs: [2]}\n"
                      "      - {id: 2, name: slow, component: util.spin, outputs: [], max_input_queue_depth: 2,\n"
                      "         config: {duration_us: 100}}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 200);
    /* At any start of the slow stage, at most 2 items were waiting for it (enqueued, not started). */
    int worst = 0;
    for (size_t i = 0; i < r.n_stage_events; i++) {
        const cb_stage_event *a = &r.stage_events[i];
        if (a->stage != 2) continue;
        int waiting = 0;
        for (size_t j = 0; j < r.n_stage_events; j++) {
            const cb_stage_event *b = &r.stage_events[j];
            if (b->stage == 2 && b->enqueue_ns <= a->start_ns && b->start_ns > a->start_ns) waiting++;
        }
        if (waiting > worst) worst = waiting;
    }
    CB_CHECK_CMP_INT(worst, <=, 3); /* 2 queued + one blocked emitter counted at the boundary */
    run_fixture_fini(&f);
}

static void test_timeout_stops_run(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: to\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: closed, timeout: 0.2}\n"
                      "    stages:\n"
                      "      - {id: 0, name: s, component: util.sleep, outputs: [], config: {duration_us: 20000}}\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK(f.res.timed_out);
    CB_CHECK_EQ_INT(f.res.n_errors, 0);
    cb_pipeline_record r = recs(&f, 0);
    /* Each query sleeps >= 20 ms, so at most 10 end in 0.2 s (one more at the boundary); how
     * many do depends on the machine's load (4 under TSan beside a busy core), so only >= 1. */
    CB_CHECK_CMP_INT(r.n_queries, >=, 1);
    CB_CHECK_CMP_INT(r.n_queries, <=, 11);
    CB_CHECK_CMP_INT(f.res.end_ns - f.res.t0_ns, <, 1500000000);
    run_fixture_fini(&f);
}

/* Even query ids take a 5 ms detour, odd ones go straight to s, so s's queue receives them out
 * of submission order while its first run (50 ms) blocks it. Afterwards `first` must serve the
 * queue in submission (id) order, `single` in arrival order. Returns the ids in run order. */
static int policy_order(const char *policy, uint64_t *ids) {
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "name: first\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [3]\n"
             "    loadgen: {component: offline, queue_depth: 8, max_queries: 8}\n"
             "    stages:\n"
             "      - {id: 0, name: route, component: util.router, outputs: [1, 2],\n"
             "         config: {mode: field, field: id}}\n"
             "      - {id: 1, name: detour, component: util.sleep, outputs: [3], workers: 4,\n"
             "         config: {duration_us: 5000}}\n"
             "      - {id: 2, name: direct, component: util.noop, outputs: [3]}\n"
             "      - {id: 3, name: s, component: util.sleep, outputs: [], polling_policy: %s,\n"
             "         config: {duration_us: 50000}}\n",
             policy);
    run_fixture f;
    if (run_fixture_yaml(&f, yaml, NULL, NULL)) return -1;
    cb_pipeline_record r = recs(&f, 0);
    cb_stage_event ev[8];
    int n = 0;
    for (size_t i = 0; i < r.n_stage_events; i++)
        if (r.stage_events[i].stage == 3 && n < 8) ev[n++] = r.stage_events[i];
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (ev[j].start_ns < ev[i].start_ns) {
                cb_stage_event t = ev[i];
                ev[i] = ev[j];
                ev[j] = t;
            }
    for (int i = 0; i < n; i++) ids[i] = ev[i].query_id;
    run_fixture_fini(&f);
    return n;
}

static void test_first_policy_orders_by_submission(void) {
    uint64_t first[8], single[8];
    CB_CHECK_EQ_INT(policy_order("first", first), 8);
    CB_CHECK_EQ_INT(policy_order("single", single), 8);
    /* The first run is whichever odd id arrived first; after it, ids ascend under `first`. */
    int sorted_first = 1, sorted_single = 1;
    for (int i = 2; i < 8; i++) {
        if (first[i] < first[i - 1]) sorted_first = 0;
        if (single[i] < single[i - 1]) sorted_single = 0;
    }
    CB_CHECK(sorted_first);
    CB_CHECK(!sorted_single); /* FIFO serves the odd ids (arrived first) before the even ones */
    CB_CHECK_EQ_INT(first[0] % 2, 1);
}

static void test_csv_matches_records(void) {
    const char *dir = cb_test_tmpdir();
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: csv\n"
                      "pipelines:\n"
                      "  - name: p\n"
                      "    inputs: [0]\n"
                      "    outputs: [1]\n"
                      "    loadgen: {component: offline, queue_depth: 8, max_queries: 5000}\n"
                      "    stages:\n"
                      "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, name: b, component: util.noop, outputs: [], disable_logs: true}\n",
                      dir, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/events.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(path), 5001); /* header + stage a only */
    snprintf(path, sizeof path, "%s/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(path), 5001);
    char *text = cb_test_read(path, NULL);
    const char *hdr = "pipeline,query_id,split,epoch,batch,scheduled_ns,submit_ns,start_ns,end_ns,status\n";
    CB_CHECK(text && !strncmp(text, hdr, strlen(hdr)));
    CB_CHECK_CONTAINS(text, ",ok\n");
    free(text);
    run_fixture_fini(&f);
}

static void test_two_pipelines_run_together(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                      "name: two\n"
                      "pipelines:\n"
                      "  - name: a\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: closed, timeout: 0.5}\n"
                      "    stages: [{id: 0, name: s, component: util.sleep, outputs: [], config: {duration_us: 2000}}]\n"
                      "  - name: b\n"
                      "    inputs: [0]\n"
                      "    outputs: [0]\n"
                      "    loadgen: {component: closed, timeout: 0.5}\n"
                      "    stages: [{id: 0, name: s, component: util.sleep, outputs: [], config: {duration_us: 2000}}]\n",
                      NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    cb_pipeline_record a = recs(&f, 0), b = recs(&f, 1);
    CB_CHECK_CMP_INT(a.n_queries, >=, 1);
    CB_CHECK_CMP_INT(b.n_queries, >=, 1);
    /* They overlap in time: each started before the other finished. Both issue until the same
     * deadline (0.5 s, not a query count: a count of 20 x 2 ms let one pipeline finish before
     * the other's driver was scheduled on a busy machine under ASan). */
    int64_t a0 = INT64_MAX, a1 = 0, b0 = INT64_MAX, b1 = 0;
    for (size_t i = 0; i < a.n_queries; i++) {
        if (a.queries[i].submit_ns < a0) a0 = a.queries[i].submit_ns;
        if (a.queries[i].end_ns > a1) a1 = a.queries[i].end_ns;
    }
    for (size_t i = 0; i < b.n_queries; i++) {
        if (b.queries[i].submit_ns < b0) b0 = b.queries[i].submit_ns;
        if (b.queries[i].end_ns > b1) b1 = b.queries[i].end_ns;
    }
    CB_CHECK(a0 < b1 && b0 < a1);
    run_fixture_fini(&f);
}

/* Allocation failure anywhere in a running benchmark (the recorder's files, buffers, rings and
 * chunks, the runtime's queries and items, merges) ends the run cleanly with an error, never a
 * hang or a crash, and everything is released (ASan checks the leaks). For every n, the n-th
 * allocation after the stages were prepared fails, and every later one. */
static void test_allocation_failure_everywhere(void) {
    static const char yaml[] =
        "name: oom\n"
        "pipelines:\n"
        "  - name: a\n"
        "    inputs: [0]\n"
        "    outputs: [3]\n"
        "    loadgen: {component: offline, queue_depth: 32, max_queries: 100}\n"
        "    stages:\n"
        "      - {id: 0, name: src, component: util.source, outputs: [1, 2], config: {bytes: 64}}\n"
        "      - {id: 1, name: l, component: util.noop, outputs: [3], workers: 2}\n"
        "      - {id: 2, name: r, component: util.copy, outputs: [3]}\n"
        "      - {id: 3, name: m, component: util.noop, polling_policy: merge}\n"
        "  - name: b\n"
        "    inputs: [0]\n"
        "    outputs: [0]\n"
        "    loadgen: {component: closed, max_queries: 100, config: {concurrency: 4}}\n"
        "    stages:\n"
        "      - {id: 0, name: n, component: util.noop, workers: 4}\n";
    run_fixture f;
    memset(&f, 0, sizeof f);
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&f.reg, &err), CB_OK);
    const char *path = cb_test_write(cb_test_tmpdir(), "oom.yaml", yaml);
    CB_CHECK_EQ_INT(cb_spec_load(path, NULL, 0, f.reg, &f.doc, &f.spec, &err), CB_OK);
    if (err.code) printf("# %s\n", err.msg);
    if (!f.spec) return;
    const char *out = cb_test_tmpdir();
    int ok_runs = 0, failed_runs = 0;
    for (long n = 1; n <= 5000 && ok_runs < 3; n++) {
        cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
        o.spec = f.spec;
        cb_runtime *rt = NULL;
        cb_recorder *rec = NULL;
        cb_error_clear(&err);
        int rc = cb_runtime_create(&o, &rt, &err);
        if (!rc) rc = cb_runtime_prepare(rt, &err);
        CB_CHECK_EQ_INT(rc, CB_OK);
        cb__alloc_fail_after(n);
        cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
        ro.spec = f.spec;
        ro.out_dir = out;
        int rrc = cb_recorder_create(&ro, &rec, &err);
        int src = rrc == CB_OK ? cb_runtime_start(rt, cb_recorder_sink(rec), &err) : rrc;
        bool ended = cb_runtime_wait(rt, 60000000000LL);
        CB_CHECK(ended);
        if (!ended) {
            cb__alloc_fail_after(0);
            printf("# n=%ld: the run did not end\n", n);
            cb_runtime_stop(rt, CB_STOP_CANCEL);
        }
        cb_run_result res;
        cb_runtime_join(rt, &res);
        cb__alloc_fail_after(0);
        cb_error re;
        cb_error_clear(&re);
        int stop = rec ? cb_recorder_stop(rec, &re) : CB_OK;
        bool failed = rrc != CB_OK || src != CB_OK || res.n_errors > 0 || stop != CB_OK;
        if (failed) {
            failed_runs++;
            /* The failure says what it is. */
            char all[4096];
            snprintf(all, sizeof all, "%s %s %s", err.msg, res.n_errors ? res.errors[0] : "", re.msg);
            /* ("cannot allocate ...": a stage's own message for its failed allocation) */
            if (!strstr(all, "out of memory") && !strstr(all, "allocate")) {
                printf("# n=%ld: %s\n", n, all);
                CB_CHECK(strstr(all, "out of memory") != NULL);
            }
        } else {
            ok_runs++; /* n is beyond every allocation the run makes */
        }
        cb_run_result_fini(&res);
        cb_recorder_destroy(rec);
        cb_runtime_destroy(rt);
    }
    printf("# %d runs failed cleanly on an allocation failure before the first run with none\n", failed_runs);
    CB_CHECK(failed_runs >= 10);
    CB_CHECK_CMP_INT(ok_runs, >=, 1);
    cb_spec_destroy(f.spec);
    cb_doc_destroy(f.doc);
    cb_registry_destroy(f.reg);
}

/* Records made faster than they are written (an offline noop pipeline makes millions a second)
 * do not pile up in memory: the backlog of chunks written and not yet read stays within its bound
 * (plus two chunks per log), however fast this machine is; every record still reaches the files. */
static void test_record_backlog_bounded(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                              "name: fast\n"
                              "pipelines:\n"
                              "  - name: p\n"
                              "    inputs: [0]\n"
                              "    outputs: [1]\n"
                              "    loadgen: {component: offline, queue_depth: 256, max_queries: 400000}\n"
                              "    stages:\n"
                              "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                              "      - {id: 1, name: b, component: util.noop}\n",
                              NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    CB_CHECK_CMP_INT(f.backlog_peak, <=, f.backlog_max + 6 * (int64_t)f.n_rings);
    printf("# backlog peak %lld chunks of 64 KiB (bound %lld, %zu rings); producers waited %.1f ms\n",
           (long long)f.backlog_peak, (long long)f.backlog_max, f.n_rings, (double)f.stall_ns / 1e6);
    cb_pipeline_record r = recs(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 400000);
    CB_CHECK_EQ_INT(r.n_stage_events, 800000);
    run_fixture_fini(&f);
}

int main(void) {
    CB_RUN(test_allocation_failure_everywhere);
    CB_RUN(test_record_backlog_bounded);
    CB_RUN(test_chain_events_follow_path);
    CB_RUN(test_workers_bound_concurrency);
    CB_RUN(test_offline_queue_depth_bounds_in_flight);
    CB_RUN(test_fanout_and_merge);
    CB_RUN(test_merge_that_cannot_complete);
    CB_RUN(test_router_loop_terminates);
    CB_RUN(test_failure_stops_pipeline);
    CB_RUN(test_dataset_splits_and_epochs);
    CB_RUN(test_poisson_open_loop_latency_from_schedule);
    CB_RUN(test_late_arrival_keeps_its_schedule);
    CB_RUN(test_pacer_margin_follows_lateness);
    CB_RUN(test_open_loop_driver_stats);
    CB_RUN(test_backpressure_bounded_queue);
    CB_RUN(test_timeout_stops_run);
    CB_RUN(test_first_policy_orders_by_submission);
    CB_RUN(test_csv_matches_records);
    CB_RUN(test_two_pipelines_run_together);
    return cb_test_done();
}
