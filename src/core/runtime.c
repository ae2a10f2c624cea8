/* core/runtime.c - the runtime's lifecycle (see runtime.h): stage instances created and
 * prepared, threads and rings set up, the start gate, waiting with the watchdog, stopping,
 * joining (or abandoning stuck threads), teardown. The scheduling itself (queues, tasks,
 * routing, the load generator and pool threads) is in sched.c; both share runtime_int.h.
 *
 * Design: create/prepare/start/wait/join/destroy run on one controlling thread; stop may come
 * from any thread (it only sets atomics and wakes threads). The watchdog (cb_runtime_wait, every
 * 5 ms) enforces each pipeline's deadline and the drain after a stop when its driver is itself
 * inside a stage run. Ownership: the runtime owns its pipelines, stage instances and threads;
 * rings belong to the record sink; the result's prepare_ns belongs to the caller after join.
 */
#include "core/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/host.h"
#include "core/ring.h"
#include "core/runtime_int.h"
#include "core/schedule.h"

/* ---- setup and teardown ------------------------------------------------------------------- */

static uint64_t cb__hash_name(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ULL;
    for (; s && *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static uint64_t cb__mix(uint64_t a, uint64_t b) {
    uint64_t x = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));
    return cb__splitmix64(&x);
}

static int cb__stage_setup(cb_runtime *rt, cb_pipe *p, size_t s, cb_error *err) {
    cb_stage_rt *st = &p->stages[s];
    const cb_stage_spec *ss = &p->spec->stages[s];
    st->spec = ss;
    st->pipe = p;
    st->idx = (int)s;
    size_t n_metrics;
    cb_registry_ops_metrics(ss->ops, &n_metrics);
    st->n_metrics = (int)n_metrics; /* <= CB_STAGE_MAX_METRICS: checked by the registry */
    pthread_mutex_init(&st->mu, NULL);
    /* Both are waited on with CLOCK_MONOTONIC deadlines. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->space_cv, &ca);
    pthread_cond_init(&st->step_cv, &ca);
    pthread_condattr_destroy(&ca);
    int n = ss->workers;
    st->free_slots = cb_calloc((size_t)n, sizeof(int));
    st->states = cb_calloc((size_t)n, sizeof(void *));
    st->created = cb_calloc((size_t)n, sizeof(int));
    st->args = cb_calloc((size_t)n, sizeof(cb_stage_args));
    st->held = cb_calloc((size_t)n, sizeof(cb_held_list));
    st->wakers = cb_calloc((size_t)n, sizeof(cb_waker));
    if (!st->free_slots || !st->states || !st->created || !st->args || !st->held || !st->wakers)
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) st->wakers[i].st = st;
    for (int i = n - 1; i >= 0; i--) st->free_slots[st->n_free++] = i;
    for (int i = 0; i < n; i++) {
        cb_stage_args *a = &st->args[i];
        a->abi_major = CB_STAGE_ABI_MAJOR;
        a->struct_size = sizeof *a;
        a->host = &rt->host;
        a->values = ss->values;
        a->pipeline = p->spec->name;
        a->stage = ss->name;
        a->stage_id = ss->id;
        a->worker = i;
        a->workers = n;
        a->n_outputs = (int)ss->n_outputs;
        /* Seeds mix the pipeline's name, not its index, so a pipeline run alone (isolated
         * baseline, child process) draws exactly what it draws collocated. */
        a->seed = cb__mix(cb__mix(p->spec->loadgen.seed, cb__hash_name(p->spec->name)),
                          ((uint64_t)(uint32_t)ss->id << 20) | (uint64_t)i);
        a->device = p->spec->device_is_mig ? "cuda:0" : p->spec->device ? p->spec->device : "cpu";
        st->states[i] = cb_calloc(1, ss->ops->state_size ? ss->ops->state_size : 1);
        if (!st->states[i]) return cb_error_set(err, CB_ENOMEM, "out of memory");
        cb_error e;
        cb_error_clear(&e);
        int rc = ss->ops->create(st->states[i], a, &e);
        if (rc < 0) {
            if (ss->ops->destroy) ss->ops->destroy(st->states[i]);
            cb_free(st->states[i]);
            st->states[i] = NULL;
            cb_error_clear(err);
            cb_error_set(err, rc == CB_ENOMEM ? CB_ENOMEM : CB_ECONFIG,
                         "pipeline '%s': stage '%s' (%s): %s", p->spec->name, ss->name,
                         ss->component, e.msg[0] ? e.msg : cb_strerror(rc));
            const cb_node *pos = ss->config_node ? ss->config_node : ss->node;
            if (pos) cb_error_at(err, pos->file, pos->line, pos->col);
            return err ? err->code : CB_ECONFIG;
        }
        st->created[i] = 1;
    }
    return CB_OK;
}

static void cb__stage_teardown(cb_stage_rt *st) {
    if (!st->spec) return;
    for (int i = 0; st->states && i < st->spec->workers; i++) {
        if (st->states[i]) {
            if (st->created[i] && st->spec->ops->destroy) st->spec->ops->destroy(st->states[i]);
            cb_free(st->states[i]);
        }
    }
    cb_free(st->states);
    cb_free(st->created);
    cb_free(st->held);
    cb_free(st->wakers);
    cb_free(st->args);
    cb_free(st->free_slots);
    cb_free(st->heap);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->space_cv);
    pthread_cond_destroy(&st->step_cv);
}

static int cb__pipe_setup(cb_runtime *rt, size_t pi, cb_error *err) {
    cb_pipe *p = &rt->pipes[pi];
    const cb_pipeline_spec *ps = &rt->spec->pipelines[pi];
    p->rt = rt;
    p->spec = ps;
    p->index = (uint16_t)pi;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->driver_cv, &ca);
    pthread_condattr_destroy(&ca);
    p->stages = cb_calloc(ps->n_stages ? ps->n_stages : 1, sizeof *p->stages);
    if (!p->stages) return cb_error_set(err, CB_ENOMEM, "out of memory");
    size_t slots = 0;
    for (size_t s = 0; s < ps->n_stages; s++) {
        int rc = cb__stage_setup(rt, p, s, err);
        if (rc) return rc;
        slots += (size_t)ps->stages[s].workers;
        if (ps->stages[s].policy == CB_POLICY_MERGE) p->has_merge = 1;
    }
    p->ready_cap = slots + 1;
    p->ready = cb_calloc(p->ready_cap, sizeof *p->ready);
    p->n_threads = (int)slots;
    p->workers = cb_calloc(slots + 1, sizeof *p->workers);
    p->threads = cb_calloc(slots + 1, sizeof *p->threads);
    if (!p->ready || !p->workers || !p->threads) return cb_error_set(err, CB_ENOMEM, "out of memory");
    for (size_t i = 0; i <= slots; i++) p->workers[i].pipe = p;
    if (ps->dataset_idx >= 0) {
        cb_stage_rt *ds = &p->stages[ps->dataset_idx];
        if (ds->spec->ops->splits) {
            p->splits.abi_major = CB_STAGE_ABI_MAJOR;
            p->splits.struct_size = sizeof p->splits;
            cb_error e;
            cb_error_clear(&e);
            int rc = ds->spec->ops->splits(ds->states[0], &p->splits, &e);
            if (rc < 0 || p->splits.n < 1 || p->splits.n > CB_MAX_SPLITS || p->splits.epochs < 1)
                return cb_error_set(err, CB_ECONFIG, "pipeline '%s': dataset stage '%s' reported no usable splits%s%s",
                                    ps->name, ds->spec->name, e.msg[0] ? ": " : "", e.msg);
            for (int i = 0; i < p->splits.n; i++)
                if (p->splits.split[i].batches < 1)
                    return cb_error_set(err, CB_ECONFIG, "pipeline '%s': split '%s' has no batches",
                                        ps->name, p->splits.split[i].name);
            p->has_splits = 1;
        }
    }
    if (cb_loadgen_is_open(ps->loadgen.kind)) {
        int rc = cb_schedule_generate(&ps->loadgen, &p->schedule, &p->n_schedule, err);
        if (rc) return rc;
    }
    return CB_OK;
}

static void cb__pipe_teardown(cb_pipe *p) {
    if (!p->spec) return;
    for (size_t s = 0; p->stages && s < p->spec->n_stages; s++) cb__stage_teardown(&p->stages[s]);
    for (int i = 0; p->workers && i <= p->n_threads; i++) cb__worker_fini(&p->workers[i]);
    cb_free(p->stages);
    cb_free(p->ready);
    cb_free(p->workers);
    cb_free(p->threads);
    cb_free(p->schedule);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->driver_cv);
}

/* Pins the pipeline's pool threads and load generator to its cpus. */
static int cb__pin_pipe(cb_pipe *p, cb_error *err) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (size_t i = 0; i < p->spec->n_cpus; i++) CPU_SET(p->spec->cpus[i], &set);
    int e = 0;
    for (int k = 0; !e && k < p->n_threads_started; k++)
        e = pthread_setaffinity_np(p->threads[k], sizeof set, &set);
    if (!e && p->driver_started) e = pthread_setaffinity_np(p->driver, sizeof set, &set);
    if (e)
        return cb_error_set(err, CB_EINVAL, "pipeline '%s': cannot pin to its cpus: %s",
                            p->spec->name, strerror(e));
    return CB_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

int cb_runtime_create(const cb_runtime_opts *opts, cb_runtime **out, cb_error *err) {
    *out = NULL;
    cb_runtime *rt = cb_calloc(1, sizeof *rt);
    if (!rt) return cb_error_set(err, CB_ENOMEM, "out of memory");
    rt->opts = *opts;
    rt->spec = opts->spec;
    rt->drain_ns = opts->drain_timeout_ns > 0 ? opts->drain_timeout_ns : 2000000000LL;
    rt->abandon_ns = opts->abandon_timeout_ns > 0 ? opts->abandon_timeout_ns : 2000000000LL;
    pthread_mutex_init(&rt->err_mu, NULL);
    pthread_mutex_init(&rt->gate_mu, NULL);
    pthread_cond_init(&rt->gate_cv, NULL);
    pthread_mutex_init(&rt->cancel_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->cancel_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&rt->stop_requested, 0);
    cb_host_init_base(&rt->host);
    rt->host.emit = cb__host_emit;
    rt->host.n_outputs = cb__host_n_outputs;
    rt->host.report = cb__host_report;
    rt->host.device_time = cb__host_device_time;
    rt->host.wait_until = cb__host_wait_until;
    rt->host.cancelled = cb__host_cancelled;
    rt->host.hold = cb__host_hold;
    rt->host.complete = cb__host_complete;
    rt->host.report_held = cb__host_report_held;
    rt->host.arrival_ns = cb__host_arrival_ns;
    rt->host.wait_step = cb__host_wait_step;
    rt->host.waker = cb__host_waker;
    rt->host.wake = cb__host_wake;
    rt->res.t0_ns = rt->res.end_ns = 0;
    *out = rt; /* from here on cb_runtime_destroy releases whatever was set up */
    rt->n_pipes = rt->spec->n_pipelines;
    rt->pipes = cb_calloc(rt->n_pipes ? rt->n_pipes : 1, sizeof *rt->pipes);
    size_t nstages_total = 0;
    for (size_t i = 0; i < rt->n_pipes; i++) nstages_total += rt->spec->pipelines[i].n_stages;
    rt->prepare_ns = cb_calloc(nstages_total ? nstages_total : 1, sizeof(int64_t));
    if (!rt->pipes || !rt->prepare_ns) return cb_error_set(err, CB_ENOMEM, "out of memory");
    /* Create every stage instance (configuration errors surface here, before any output). */
    for (size_t i = 0; i < rt->n_pipes; i++) {
        int rc = cb__pipe_setup(rt, i, err);
        if (rc) return rc;
    }
    return CB_OK;
}

int cb_runtime_prepare(cb_runtime *rt, cb_error *err) {
    size_t flat = 0;
    for (size_t i = 0; i < rt->n_pipes; i++) {
        cb_pipe *p = &rt->pipes[i];
        for (size_t s = 0; s < p->spec->n_stages; s++, flat++) {
            cb_stage_rt *st = &p->stages[s];
            if (!st->spec->ops->prepare) continue;
            int64_t t = cb_clock_now_ns();
            for (int k = 0; k < st->spec->workers; k++) {
                if (atomic_load(&rt->stop_requested))
                    return cb_error_set(err, CB_ESTOPPED, "stopped while preparing");
                cb_error e;
                cb_error_clear(&e);
                int prc = st->spec->ops->prepare(st->states[k], &e);
                if (prc < 0)
                    return cb_error_set(err, CB_ESTAGE, "pipeline '%s': stage '%s' (%s): prepare: %s",
                                        p->spec->name, st->spec->name, st->spec->component,
                                        e.msg[0] ? e.msg : cb_strerror(prc));
            }
            rt->prepare_ns[flat] = cb_clock_now_ns() - t;
        }
    }
    if (atomic_load(&rt->stop_requested)) return cb_error_set(err, CB_ESTOPPED, "stopped while preparing");
    rt->state = RT_PREPARED;
    return CB_OK;
}

/* Opens the start gate: every driver starts (and stops at once when stop_issue is set). */
static void cb__open_gate(cb_runtime *rt) {
    pthread_mutex_lock(&rt->gate_mu);
    rt->gate_open = 1;
    pthread_cond_broadcast(&rt->gate_cv);
    pthread_mutex_unlock(&rt->gate_mu);
}

int cb_runtime_start(cb_runtime *rt, const cb_record_sink *sink, cb_error *err) {
    if (rt->state != RT_PREPARED) return cb_error_set(err, CB_EINVAL, "cb_runtime_start: not prepared");
    rt->state = RT_STARTED;
    int rc = CB_OK;
    if (sink)
        for (size_t i = 0; i < rt->n_pipes; i++)
            if (rt->pipes[i].has_splits) sink->set_splits(sink->ctx, i, &rt->pipes[i].splits);
    /* Threads: every pool thread and driver gets its ring before the barrier. */
    for (size_t i = 0; i < rt->n_pipes && !rc; i++) {
        cb_pipe *p = &rt->pipes[i];
        for (int k = 0; sink && k <= p->n_threads; k++) {
            p->workers[k].ring = sink->new_ring(sink->ctx);
            if (!p->workers[k].ring) {
                rc = cb_error_set(err, CB_ENOMEM, "out of memory");
                break;
            }
        }
        for (int k = 0; !rc && k < p->n_threads; k++) {
            int e = pthread_create(&p->threads[k], NULL, cb__pool_main, &p->workers[k]);
            if (e) {
                rc = cb_error_set(err, CB_EIO, "pipeline '%s': cannot create worker thread %d: %s",
                                  p->spec->name, k, strerror(e));
                break;
            }
            p->n_threads_started++;
        }
        if (!rc) {
            int e = pthread_create(&p->driver, NULL, cb__driver_main, &p->workers[p->n_threads]);
            if (e)
                rc = cb_error_set(err, CB_EIO, "pipeline '%s': cannot create its load generator thread: %s",
                                  p->spec->name, strerror(e));
            else
                p->driver_started = 1;
        }
        if (!rc && p->spec->n_cpus) rc = cb__pin_pipe(p, err);
    }
    if (!rc && atomic_load(&rt->stop_requested)) rc = cb_error_set(err, CB_ESTOPPED, "stopped before the start");
    /* t0 after every thread and ring exists, so start-up costs stay out of the measurements.
     * Records made after the gate opens see t0 (gate mutex -> driver -> release of a record). */
    rt->t0_ns = cb_clock_now_ns();
    if (!rc && rt->opts.on_ready) {
        /* The collocation barrier: blocks until every process is ready, and may move t0 to the
         * common release time so all processes share one time origin. */
        rc = rt->opts.on_ready(rt->opts.on_ready_arg, &rt->t0_ns, err);
    }
    if (rc)
        for (size_t j = 0; j < rt->n_pipes; j++) atomic_store(&rt->pipes[j].stop_issue, 1);
    rt->res.wall_start_ns = cb_clock_wall_ns() - (cb_clock_now_ns() - rt->t0_ns);
    rt->res.t0_ns = rt->t0_ns;
    if (sink) sink->set_t0(sink->ctx, rt->t0_ns);
    /* Open the gate: every pipeline starts now (stopped at once if setup failed half-way). */
    cb__open_gate(rt);
    return rc;
}

/* A pipeline that is done, or that cancelled its queries long enough ago that a thread still
 * inside a stage run is given up on. */
static bool cb__pipe_settled(const cb_runtime *rt, const cb_pipe *p, int64_t now) {
    if (!p->driver_started || atomic_load(&p->driver_done)) return true;
    int64_t since = atomic_load(&p->abort_since_ns);
    return since != 0 && now - since >= rt->abandon_ns;
}

/* What a driver cannot do while it runs a stage itself (closed and offline drivers do): at the
 * deadline, or drain_ns after a stop, the pipeline's queries are cancelled from here. */
static void cb__watchdog(cb_runtime *rt, int64_t now) {
    int64_t stop_at = atomic_load(&rt->stop_at_ns);
    for (size_t i = 0; i < rt->n_pipes; i++) {
        cb_pipe *p = &rt->pipes[i];
        if (!p->driver_started || atomic_load(&p->driver_done) || atomic_load(&p->abort)) continue;
        int64_t dl = atomic_load(&p->deadline_ns);
        if (dl && now >= dl) {
            if (!atomic_load(&p->stop_issue)) atomic_store(&p->timed_out, 1);
            atomic_store(&p->stop_issue, 1);
            if (now >= dl + rt->drain_ns) cb__abort(p);
        }
        if (stop_at && now >= stop_at + rt->drain_ns) cb__abort(p);
    }
}

bool cb_runtime_wait(cb_runtime *rt, int64_t timeout_ns) {
    if (rt->state < RT_STARTED) return true;
    int64_t until = cb_clock_now_ns() + (timeout_ns > 0 ? timeout_ns : 0);
    for (;;) {
        int64_t now = cb_clock_now_ns();
        cb__watchdog(rt, now);
        bool all = true;
        for (size_t i = 0; i < rt->n_pipes && all; i++) all = cb__pipe_settled(rt, &rt->pipes[i], now);
        if (all) return true;
        if (now >= until) return false;
        int64_t slice = until - now < 5000000 ? until - now : 5000000;
        cb_clock_sleep_until_ns(now + slice);
    }
}

void cb_runtime_stop(cb_runtime *rt, cb_stop_mode mode) {
    if (!rt) return;
    atomic_store(&rt->stop_requested, 1);
    int64_t zero = 0;
    atomic_compare_exchange_strong(&rt->stop_at_ns, &zero, cb_clock_now_ns());
    for (size_t i = 0; i < rt->n_pipes; i++) {
        cb_pipe *p = &rt->pipes[i];
        if (!p->spec) continue;
        atomic_store(&p->stop_issue, 1);
        if (mode == CB_STOP_CANCEL) cb__abort(p);
        else cb__wake_driver(p);
    }
}

const int64_t *cb_runtime_prepare_ns(const cb_runtime *rt) { return rt->prepare_ns; }

void cb_runtime_start_times(const cb_runtime *rt, int64_t *t0_ns, int64_t *wall_start_ns) {
    *t0_ns = rt->res.t0_ns;
    *wall_start_ns = rt->res.wall_start_ns;
}

uint64_t cb_runtime_issued(const cb_runtime *rt, size_t pipeline) {
    return pipeline < rt->n_pipes ? atomic_load_explicit(&rt->pipes[pipeline].issued, memory_order_relaxed)
                                  : 0;
}

int cb_runtime_driver_stats(const cb_runtime *rt, size_t pipeline, cb_driver_stats *out) {
    memset(out, 0, sizeof *out);
    if (!rt || pipeline >= rt->n_pipes || !rt->pipes[pipeline].joined) return CB_EINVAL;
    *out = rt->pipes[pipeline].driver_stats;
    return CB_OK;
}

/* Copies the result out; prepare_ns becomes the caller's. */
static int cb__result_out(cb_runtime *rt, cb_run_result *res) {
    pthread_mutex_lock(&rt->err_mu);
    *res = rt->res;
    pthread_mutex_unlock(&rt->err_mu);
    for (size_t i = 0; i < res->n_errors; i++) res->error_ptrs[i] = res->errors[i];
    res->prepare_ns = rt->prepare_ns;
    rt->prepare_ns = NULL;
    return CB_OK;
}

int cb_runtime_join(cb_runtime *rt, cb_run_result *res) {
    memset(res, 0, sizeof *res);
    if (rt->state != RT_STARTED) {
        if (atomic_load(&rt->stop_requested)) rt->res.stopped = true;
        return cb__result_out(rt, res);
    }
    (void)cb_runtime_wait(rt, INT64_MAX / 2); /* returns once every pipeline is settled */
    int rc = CB_OK;
    for (size_t i = 0; i < rt->n_pipes; i++) {
        cb_pipe *p = &rt->pipes[i];
        if (p->driver_started && !atomic_load(&p->driver_done)) {
            /* Cancelled, but a thread is still inside a stage run: give up on this pipeline. */
            p->abandoned = 1;
            rt->res.abandoned = true;
            rc = CB_ESTOPPED;
            char msg[512];
            snprintf(msg, sizeof msg,
                     "pipeline '%s': a stage run did not return %.1f s after its queries were "
                     "cancelled; its threads were abandoned with %lld quer%s in flight (not "
                     "recorded: they never ended)",
                     p->spec->name, (double)rt->abandon_ns / 1e9, (long long)atomic_load(&p->in_flight),
                     atomic_load(&p->in_flight) == 1 ? "y" : "ies");
            cb__add_error(rt, msg);
            continue;
        }
        if (p->driver_started) pthread_join(p->driver, NULL);
        else {
            pthread_mutex_lock(&p->mu);
            p->shutdown = 1;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
        }
        for (int k = 0; k < p->n_threads_started; k++) pthread_join(p->threads[k], NULL);
        p->joined = 1;
        if (atomic_load(&p->timed_out)) rt->res.timed_out = true;
    }
    rt->res.end_ns = cb_clock_now_ns();
    /* finish() in stage order once nothing runs: every upstream has finished by then. */
    for (size_t i = 0; i < rt->n_pipes; i++) {
        cb_pipe *p = &rt->pipes[i];
        if (!p->joined) continue;
        for (size_t s = 0; s < p->spec->n_stages; s++) {
            cb_stage_rt *st = &p->stages[s];
            if (!st->spec->ops->finish) continue;
            for (int k = 0; k < st->spec->workers; k++)
                if (st->created[k]) st->spec->ops->finish(st->states[k]);
        }
    }
    if (atomic_load(&rt->stop_requested)) rt->res.stopped = true;
    rt->state = RT_JOINED;
    cb__result_out(rt, res);
    return rc;
}

void cb_runtime_destroy(cb_runtime *rt) {
    if (!rt) return;
    if (rt->state == RT_STARTED) { /* never joined: stop and join now */
        cb_runtime_stop(rt, CB_STOP_CANCEL);
        cb_run_result r;
        cb_runtime_join(rt, &r);
        cb_run_result_fini(&r);
    }
    bool abandoned = false;
    for (size_t i = 0; rt->pipes && i < rt->n_pipes; i++) abandoned |= rt->pipes[i].abandoned;
    if (abandoned) {
        /* Threads still run inside stage code and may touch anything of the runtime: leave it
         * all allocated. The process is about to exit. */
        return;
    }
    for (size_t i = 0; rt->pipes && i < rt->n_pipes; i++) cb__pipe_teardown(&rt->pipes[i]);
    cb_free(rt->pipes);
    cb_free(rt->prepare_ns);
    pthread_mutex_destroy(&rt->err_mu);
    pthread_mutex_destroy(&rt->gate_mu);
    pthread_cond_destroy(&rt->gate_cv);
    pthread_mutex_destroy(&rt->cancel_mu);
    pthread_cond_destroy(&rt->cancel_cv);
    cb_free(rt);
}

void cb_run_result_fini(cb_run_result *res) {
    if (!res) return;
    cb_free(res->prepare_ns);
    res->prepare_ns = NULL;
}

int cb_run(const cb_runtime_opts *opts, const cb_record_sink *sink, cb_run_result *res,
           cb_error *err) {
    memset(res, 0, sizeof *res);
    cb_runtime *rt = NULL;
    int rc = cb_runtime_create(opts, &rt, err);
    if (!rc) rc = cb_runtime_prepare(rt, err);
    if (!rc) rc = cb_runtime_start(rt, sink, err);
    if (rt) {
        if (rc && rt->state == RT_STARTED) cb_runtime_stop(rt, CB_STOP_CANCEL);
        cb_runtime_join(rt, res);
    }
    cb_runtime_destroy(rt);
    return rc;
}
