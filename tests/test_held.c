/* tests/test_held.c - held queries (stage.h "Held queries"): one stage instance keeps many
 * queries in flight and completes them out of order, as an LLM engine with continuous batching
 * does. The stage under test, test.hold, holds every query it runs; each step (a 2 ms wait, the
 * cancellable way) advances every held query by one unit of work, and completes those whose work
 * (1 + id % 5 units, so out of order) is done, reporting the units as a DIST metric.
 * Checked: every query completes and is forwarded, out of order, several held at once; stage
 * events span run to complete; DIST percentiles in the summary's metrics; an open loop keeps its
 * schedule while the stage holds; a timeout cancels what is held (also from a stage that ignores
 * cancellation); a failed complete or step fails the run with the stage's message; a stage that
 * returns CB_RUN_HELD without hold fails cleanly. Waiting steps (host->wait_step): a step that
 * sleeps with a 30 s deadline returns at once when a thread of the stage calls host->wake, or
 * when a new query is queued for the stage.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analysis/stage_metrics.h"
#include "harness.h"
#include "run_fixture.h"

#define HOLD_MAX 64

typedef struct hold_state {
    const cb_host *host;
    int mode;        /* 0 normal, 1 never completes (honours cancel), 2 ignores cancel, 3 fails
                        complete of query 5, 4 step fails, 5 returns HELD without hold, 6 a
                        thread finishes each query's work after 1 ms and wakes the step, 7 run()
                        completes what is held and the step waits for the next arrival */
    int n;
    cb_held *h[HOLD_MAX];
    cb_query *q[HOLD_MAX];
    int left[HOLD_MAX], units[HOLD_MAX];
    int max_held;
    struct wake_job *job[HOLD_MAX]; /* mode 6: the thread doing query i's work */
    cb_waker *waker;
} hold_state;

typedef struct wake_job {
    const cb_host *host;
    cb_waker *waker;
    pthread_t thread;
    atomic_int done;
} wake_job;

static void *wake_thread(void *arg) {
    wake_job *j = arg;
    struct timespec d = {0, 1000000};
    nanosleep(&d, NULL);
    atomic_store(&j->done, 1);
    j->host->wake(j->waker);
    return NULL;
}

static const cb_param_def hold_params[] = {
    {"mode", CB_PARAM_INT, "0", 0, 7, NULL, "behaviour under test"},
};
static const cb_metric_def hold_metrics[] = {
    {"units", CB_METRIC_DIST, "steps", "steps a query was held"},
    {"max_held", CB_METRIC_GAUGE, "queries", "queries held at once so far"},
};

static int hold_create(void *state, const cb_stage_args *a, cb_error *err) {
    hold_state *s = state;
    s->host = a->host;
    s->mode = (int)a->values[0].i;
    if (a->host->struct_size < offsetof(cb_host, arrival_ns) + sizeof a->host->arrival_ns)
        return cb_error_set(err, CB_EABI, "host without held queries");
    return CB_OK;
}

static int hold_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    hold_state *s = state;
    if (s->mode == 5) return CB_RUN_HELD;
    if (s->mode == 7) {
        for (int i = 0; i < s->n; i++) s->host->complete(ctx, s->h[i], CB_OK, NULL);
        s->n = 0;
    }
    if (s->n == HOLD_MAX) return cb_error_set(err, CB_EFULL, "more than %d held", HOLD_MAX);
    if (s->host->arrival_ns(ctx) <= 0) return cb_error_set(err, CB_EINVAL, "no arrival time");
    cb_held *h = s->host->hold(ctx);
    if (!h) return cb_error_set(err, CB_EINVAL, "hold returned NULL");
    if (s->host->hold(ctx) != NULL) return cb_error_set(err, CB_EINVAL, "second hold accepted");
    s->h[s->n] = h;
    s->q[s->n] = q;
    s->left[s->n] = 1 + (int)(q->id % 5);
    s->units[s->n] = 0;
    if (s->mode == 6) {
        wake_job *j = malloc(sizeof *j);
        if (!j) return cb_error_set(err, CB_ENOMEM, "out of memory");
        j->host = s->host;
        j->waker = s->host->waker(ctx);
        atomic_init(&j->done, 0);
        if (pthread_create(&j->thread, NULL, wake_thread, j) != 0) {
            free(j);
            return cb_error_set(err, CB_EIO, "pthread_create failed");
        }
        s->job[s->n] = j;
    }
    s->n++;
    if (s->n > s->max_held) s->max_held = s->n;
    return CB_RUN_HELD;
}

/* Modes 6 and 7: complete what is done, else sleep until woken (30 s deadline, mode 6) or until
 * the next arrival (a 200 ms deadline completes the last query, mode 7). */
static int wait_step_mode(hold_state *s, cb_run_ctx *ctx) {
    const cb_host *host = s->host;
    int completed = 0;
    for (int i = 0; i < s->n;) {
        int done = s->mode == 6 ? atomic_load(&s->job[i]->done) : 0;
        if (host->cancelled(ctx)) done = 1;
        if (!done) {
            i++;
            continue;
        }
        if (s->mode == 6) {
            pthread_join(s->job[i]->thread, NULL);
            free(s->job[i]);
        }
        host->complete(ctx, s->h[i], host->cancelled(ctx) ? CB_ESTOPPED : CB_OK, NULL);
        completed++;
        s->n--;
        s->h[i] = s->h[s->n];
        s->q[i] = s->q[s->n];
        if (s->mode == 6) s->job[i] = s->job[s->n];
    }
    if (completed) return CB_OK;
    int64_t t0 = host->now_ns();
    host->wait_step(ctx, t0 + (s->mode == 6 ? 30000000000LL : 200000000LL));
    if (s->mode == 7 && host->now_ns() - t0 >= 200000000LL) { /* nothing arrived: the end */
        for (int i = 0; i < s->n; i++) host->complete(ctx, s->h[i], CB_OK, NULL);
        s->n = 0;
    }
    return CB_OK;
}

static int hold_step(void *state, cb_run_ctx *ctx, cb_error *err) {
    hold_state *s = state;
    const cb_host *host = s->host;
    if (host->report(ctx, 0, 1.0) != CB_EINVAL) return cb_error_set(err, CB_EINVAL, "report in step");
    if (host->cancelled(ctx) && s->mode != 2) {
        for (int i = 0; i < s->n; i++) host->complete(ctx, s->h[i], CB_ESTOPPED, NULL);
        s->n = 0;
        return CB_OK;
    }
    if (s->mode == 6 || s->mode == 7) return wait_step_mode(s, ctx);
    if (s->mode == 4) return cb_error_set(err, CB_EIO, "engine step failed on purpose");
    host->wait_until(ctx, host->now_ns() + 2000000);
    if (s->mode == 1 || s->mode == 2) return CB_OK;
    for (int i = 0; i < s->n;) {
        s->units[i]++;
        if (--s->left[i] > 0) {
            i++;
            continue;
        }
        s->q[i]->value = s->units[i];
        host->report_held(ctx, s->h[i], 0, s->units[i]);
        host->report_held(ctx, s->h[i], 1, s->max_held);
        int rc = s->mode == 3 && s->q[i]->id == 5 ? CB_EIO : CB_OK;
        if (host->complete(ctx, s->h[i], rc, "query 5 failed on purpose") != CB_OK)
            return cb_error_set(err, CB_EINVAL, "complete refused");
        if (host->complete(ctx, s->h[i], CB_OK, NULL) != CB_EINVAL)
            return cb_error_set(err, CB_EINVAL, "second complete accepted");
        s->n--;
        s->h[i] = s->h[s->n];
        s->q[i] = s->q[s->n];
        s->left[i] = s->left[s->n];
        s->units[i] = s->units[s->n];
    }
    return CB_OK;
}

static const cb_stage_ops hold_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.hold",
    .summary = "holds queries, completes them out of order",
    .params = hold_params,
    .n_params = 1,
    .state_size = sizeof(hold_state),
    .create = hold_create,
    .run = hold_run,
    .step = hold_step,
    .metrics = hold_metrics,
    .n_metrics = 2,
};

static void yaml_for(char *buf, size_t size, const char *loadgen, int mode) {
    snprintf(buf, size,
             "name: held\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [1]\n"
             "    loadgen: %s\n"
             "    stages:\n"
             "      - {id: 0, name: engine, component: test.hold, outputs: [1], config: {mode: %d}}\n"
             "      - {id: 1, name: sink, component: util.noop, outputs: []}\n",
             loadgen, mode);
}

static void test_out_of_order_completion(void) {
    char y[1024];
    yaml_for(y, sizeof y, "{component: closed, max_queries: 200, config: {concurrency: 8}}", 0);
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    CB_CHECK_EQ_INT(f.res.n_errors, 0);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 200);
    size_t ok_q = 0;
    for (size_t i = 0; i < r.n_queries; i++) ok_q += r.queries[i].status == CB_QUERY_OK;
    CB_CHECK_EQ_INT(ok_q, 200);
    /* Every query ran once in each stage; the engine's events span run() to complete(): at least
     * one 2 ms step each. Some query finished before a lower id that entered the engine earlier. */
    size_t n_engine = 0, n_sink = 0, inversions = 0;
    int64_t end_of[200] = {0}, start_of[200] = {0};
    for (size_t i = 0; i < r.n_stage_events; i++) {
        const cb_stage_event *e = &r.stage_events[i];
        if (e->stage == 1) {
            n_sink++;
            continue;
        }
        n_engine++;
        CB_CHECK_CMP_INT(e->end_ns - e->start_ns, >=, 2000000);
        if (e->query_id < 200) {
            end_of[e->query_id] = e->end_ns;
            start_of[e->query_id] = e->start_ns;
        }
    }
    CB_CHECK_EQ_INT(n_engine, 200);
    CB_CHECK_EQ_INT(n_sink, 200);
    for (int i = 0; i + 1 < 200; i++)
        if (start_of[i] < start_of[i + 1] && end_of[i] > end_of[i + 1]) inversions++;
    CB_CHECK_CMP_INT(inversions, >, 0);
    /* The metrics: units = 1 + id % 5, 40 queries each: DIST percentiles exact. */
    cb_pipeline_record pr[1];
    cb_summary_input in;
    run_fixture_summary_input(&f, pr, &in);
    cb_stage_metrics m;
    CB_CHECK_EQ_INT(cb_stage_metrics_compute(&in, 0, 1000000000, &m), CB_OK);
    const cb_metric_stats *u = &m.stats[m.first[0]];
    CB_CHECK_EQ_INT(u->n, 200);
    CB_CHECK(u->mean == 3.0 && u->min == 1.0 && u->max == 5.0);
    CB_CHECK(u->p50 == 3.0 && u->p90 == 5.0 && u->p99 == 5.0 && u->pcts_exact);
    const cb_metric_stats *mh = &m.stats[m.first[0] + 1];
    printf("# most queries held at once: %.0f\n", mh->max);
    CB_CHECK(mh->max >= 2.0); /* closed loop of 8: the driver issues several within one step */
    cb_stage_metrics_fini(&m);
    run_fixture_fini(&f);
}

/* Continuous, not drained batches: with the engine as the pipeline's last stage (nothing
 * downstream for the completing thread to run instead), queries are still issued while others
 * are held. A load generator that kept the engine's steps would issue only once it emptied. */
static void test_closed_loop_keeps_issuing(void) {
    char y[1024];
    snprintf(y, sizeof y,
             "name: held\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [0]\n"
             "    loadgen: {component: closed, max_queries: 100, config: {concurrency: 8}}\n"
             "    stages:\n"
             "      - {id: 0, name: engine, component: test.hold, outputs: []}\n");
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 100);
    size_t issued_while_held = 0;
    for (size_t j = 0; j < r.n_queries; j++) {
        int64_t sub = r.queries[j].submit_ns;
        for (size_t i = 0; i < r.n_stage_events; i++)
            if (r.stage_events[i].start_ns < sub && sub < r.stage_events[i].end_ns) {
                issued_while_held++;
                break;
            }
    }
    printf("# queries issued while others were held: %zu of 100\n", issued_while_held);
    CB_CHECK_CMP_INT(issued_while_held, >, 0);
    run_fixture_fini(&f);
}

static void test_open_loop_keeps_issuing(void) {
    char y[1024];
    yaml_for(y, sizeof y, "{component: constant, max_queries: 100, config: {rate: 2000}}", 0);
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 100);
    /* The schedule spans 50 ms. A driver that stepped the engine itself would issue the next
     * query only once the engine emptied: 1 to 5 steps of >= 2 ms each, about 600 ms for 100
     * queries. So the last issue within 300 ms of the first separates the two with room for a
     * loaded machine. */
    int64_t first = INT64_MAX, last = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        if (r.queries[i].submit_ns < first) first = r.queries[i].submit_ns;
        if (r.queries[i].submit_ns > last) last = r.queries[i].submit_ns;
        CB_CHECK_EQ_INT(r.queries[i].status, CB_QUERY_OK);
    }
    CB_CHECK_CMP_INT(last - first, <, 300000000);
    run_fixture_fini(&f);
}

static void test_timeout_cancels_held(int mode) {
    char y[1024];
    yaml_for(y, sizeof y, "{component: closed, timeout: 0.1, config: {concurrency: 4}}", mode);
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK(f.res.timed_out);
    CB_CHECK_EQ_INT(f.res.n_errors, 0);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 4);
    for (size_t i = 0; i < r.n_queries; i++) CB_CHECK_EQ_INT(r.queries[i].status, CB_QUERY_CANCELLED);
    CB_CHECK_CMP_INT(f.res.end_ns - f.res.t0_ns, <, 10000000000LL);
    run_fixture_fini(&f);
}

static void test_failures(int mode, const char *want) {
    char y[1024];
    yaml_for(y, sizeof y, "{component: closed, max_queries: 40, config: {concurrency: 4}}", mode);
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK(f.rc != CB_OK || f.res.n_errors > 0);
    CB_CHECK_CMP_INT(f.res.n_errors, >=, 1);
    if (f.res.n_errors >= 1) {
        printf("# error: %s\n", f.res.errors[0]);
        CB_CHECK_CONTAINS(f.res.errors[0], want);
        CB_CHECK_CONTAINS(f.res.errors[0], "stage 'engine'");
    }
    cb_pipeline_record r = run_fixture_records(&f, 0);
    /* Every issued query has its record, whatever happened to it. */
    CB_CHECK_CMP_INT(r.n_queries, >=, 1);
    run_fixture_fini(&f);
}

static void test_timeout_cancels_held_honoured(void) { test_timeout_cancels_held(1); }
static void test_timeout_cancels_held_ignored(void) { test_timeout_cancels_held(2); }
static void test_failed_complete(void) { test_failures(3, "query 5: query 5 failed on purpose"); }
static void test_failed_step(void) { test_failures(4, "engine step failed on purpose"); }
static void test_held_without_hold(void) {
    test_failures(5, "run() returned CB_RUN_HELD without host->hold");
}

/* Mode 6: 200 queries, 4 at a time, each done by a thread after 1 ms that wakes the step; a step
 * that slept to its 30 s deadline would make this take minutes: under 20 s holds on any machine. */
static void test_wake_ends_wait_step(void) {
    char y[1024];
    yaml_for(y, sizeof y, "{component: closed, max_queries: 200, config: {concurrency: 4}}", 6);
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 200);
    for (size_t i = 0; i < r.n_queries; i++) CB_CHECK_EQ_INT(r.queries[i].status, CB_QUERY_OK);
    CB_CHECK_CMP_INT(f.res.end_ns - f.res.t0_ns, <, 20000000000LL);
    run_fixture_fini(&f);
}

/* Mode 7: 50 arrivals 2 ms apart; each is run while the step sleeps (200 ms deadline) and
 * completes the one before. Were arrivals not waking the step, each would wait 200 ms (10 s in
 * all); woken, the run takes about 100 ms + 200 ms. Each query's stage event must end before the
 * next arrival's + 150 ms, and the run under 5 s. */
static void test_arrival_ends_wait_step(void) {
    char y[1024];
    yaml_for(y, sizeof y, "{component: constant, max_queries: 50, config: {rate: 500}}", 7);
    run_fixture f;
    int ok = run_fixture_yaml(&f, y, NULL, &hold_ops);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 50);
    for (size_t i = 0; i < r.n_queries; i++) CB_CHECK_EQ_INT(r.queries[i].status, CB_QUERY_OK);
    CB_CHECK_CMP_INT(f.res.end_ns - f.res.t0_ns, <, 5000000000LL);
    run_fixture_fini(&f);
}

int main(void) {
    CB_RUN(test_out_of_order_completion);
    CB_RUN(test_closed_loop_keeps_issuing);
    CB_RUN(test_open_loop_keeps_issuing);
    CB_RUN(test_timeout_cancels_held_honoured);
    CB_RUN(test_timeout_cancels_held_ignored);
    CB_RUN(test_failed_complete);
    CB_RUN(test_failed_step);
    CB_RUN(test_held_without_hold);
    CB_RUN(test_wake_ends_wait_step);
    CB_RUN(test_arrival_ends_wait_step);
    return cb_test_done();
}
