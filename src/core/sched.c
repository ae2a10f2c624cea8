/* core/sched.c - the scheduler: stages on worker threads, queues, routing, load generation
 * (the runtime's lifecycle is in runtime.c; both share runtime_int.h).
 *
 * Design (docs/internals/runtime.md has the long form):
 * - A stage has `workers` slots (one stage instance each) and one input queue. A query path is
 *   an item; handing an item to a stage either claims a free slot at once (when the queue is
 *   empty) or queues the item. Invariant: a non-empty queue implies every slot is claimed, and
 *   whoever releases a slot pops the next queued item with it, so queued work never waits for a
 *   dedicated thread.
 * - Run to completion: a claimed (stage, slot, item) is a task. A thread keeps one task as its
 *   private "next" and runs it right after the current one; any further task is published to the
 *   pipeline's ready ring, waking an idle pool thread only then. A chain with one query in
 *   flight therefore runs entirely on the thread that issued it: a hand-off is a mutex
 *   acquire/release and two clock reads, never a wake-up.
 * - Each pipeline has a driver thread (the load generator) and sum(workers) pool threads, enough
 *   for every slot to run at once. Closed and offline drivers run tasks themselves while their
 *   admission bound is reached. Open-loop drivers issue on an absolute schedule (sleep to a
 *   margin before each arrival, then a spin of at most CB_PACER_SPIN_CAP_NS: core/clock.h) and
 *   run a task themselves only when the stage's recent runs are short and twice that fits before
 *   the next arrival (cb__fits), else hand it to the pool; latency counts from the scheduled
 *   arrival.
 * - A query carries a token count: one per live path. Fan-out adds tokens, merge folds them,
 *   a path that ends (no emit, drop, error, cancel) returns its token; the last token ends the
 *   query and writes its record. The same word counts the paths parked at merges: when every
 *   path left is parked (an upstream stage sent the query down only some branches of a join),
 *   no merge can complete, and the thread whose change made it so fails the pipeline naming the
 *   merge and the query (cb__merge_stuck) instead of letting it wait forever.
 * - Back-pressure: a bounded queue that is full blocks the emitting thread (which keeps its own
 *   slot, as a blocked put would) except along edges that close a cycle, which never block.
 *   Before blocking, the thread publishes its private task so no claimed slot waits on it.
 * - Failure: the first failing run records a message naming pipeline, stage and query and sets
 *   the pipeline's abort flag; every task picked afterwards is cancelled, which drains queues.
 * - Stage metrics: host->report, called from run(), bounds-checks the index against the stage's
 *   declared metrics and writes one cb_metric_event (the running query, stage worker, now) into
 *   the running thread's ring, exactly as a stage event is written.
 * - Device time: host->device_time, called from run(), adds to a sum in the run's cb_run_ctx (a
 *   local of the running thread), which the run's stage event carries (-1 when never called).
 * - Records: each thread pushes into its own ring (core/ring.h) from the record sink; a push that
 *   finds no memory for a chunk ends the run like a stage error ("records could not be kept").
 * - Stopping: cb_runtime_stop sets flags (stop_issue, abort) that the drivers read; abort also
 *   wakes every host->wait_until sleeper (cancel_cv) so cancellable stage runs return at once.
 *   The deadline (timeout) holds until the pipeline's last query has ended, not only while it
 *   issues. A pipeline whose queries were cancelled but whose threads do not come back from a
 *   stage run within abandon_timeout is given up: join leaves its threads running.
 *
 * Locks and order: stage.mu (queue, slots, merge table) may be held while taking pipe.mu (ready
 * ring, idle count); never the reverse. Atomics: tokens and in_flight use acq_rel so the thread
 * that ends a query sees all writes of the others; driver_sleeping/in_flight form a Dekker pair
 * (seq_cst) so a completion never misses a sleeping driver.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/host.h"
#include "core/registry.h"
#include "core/ring.h"
#include "core/runtime_int.h"

/* ---- small helpers ----------------------------------------------------------------------- */

static void cb__query_ref_payloads(cb_query *q) {
    cb_buffer_ref(q->payload);
    for (int i = 0; i < q->nparts; i++) cb_buffer_ref(q->parts[i]);
}

static void cb__query_unref_payloads(cb_query *q) {
    cb_buffer_unref(q->payload);
    q->payload = NULL;
    for (int i = 0; i < q->nparts; i++) {
        cb_buffer_unref(q->parts[i]);
        q->parts[i] = NULL;
    }
    q->nparts = 0;
}

static cb_item *cb__item_alloc(cb_worker *w) {
    cb_item *it = w->free_items;
    if (it) {
        w->free_items = it->next;
        w->n_free_items--;
    } else {
        it = cb_malloc(sizeof(cb_item));
        if (!it) return NULL;
    }
    it->held_st = NULL; /* not held (host->complete checks it) */
    it->held_prev = NULL;
    return it;
}

static void cb__item_free(cb_worker *w, cb_item *it) {
    if (w->n_free_items < CB_FREELIST_MAX) {
        it->next = w->free_items;
        w->free_items = it;
        w->n_free_items++;
    } else {
        cb_free(it);
    }
}

static cb_qshared *cb__sh_alloc(cb_worker *w) {
    cb_qshared *sh = w->free_sh;
    if (sh) {
        w->free_sh = sh->next_free;
        w->n_free_sh--;
        return sh;
    }
    return cb_malloc(sizeof(cb_qshared));
}

static void cb__sh_free(cb_worker *w, cb_qshared *sh) {
    if (w->n_free_sh < CB_FREELIST_MAX) {
        sh->next_free = w->free_sh;
        w->free_sh = sh;
        w->n_free_sh++;
    } else {
        cb_free(sh);
    }
}

void cb__worker_fini(cb_worker *w) {
    for (cb_item *it = w->free_items, *n; it; it = n) {
        n = it->next;
        cb_free(it);
    }
    for (cb_qshared *s = w->free_sh, *n; s; s = n) {
        n = s->next_free;
        cb_free(s);
    }
    w->free_items = NULL;
    w->free_sh = NULL;
}

void cb__add_error(cb_runtime *rt, const char *msg) {
    pthread_mutex_lock(&rt->err_mu);
    cb_run_result *res = &rt->res;
    if (res->n_errors < CB_RUN_MAX_ERRORS) {
        snprintf(res->errors[res->n_errors], sizeof res->errors[0], "%s", msg);
        res->error_ptrs[res->n_errors] = res->errors[res->n_errors];
        res->n_errors++;
    }
    pthread_mutex_unlock(&rt->err_mu);
}

/* ---- ready ring and waking ---------------------------------------------------------------- */

static void cb__publish(cb_pipe *p, cb_task t) {
    pthread_mutex_lock(&p->mu);
    /* Capacity is the total number of slots: every task holds one, so this cannot overflow. */
    size_t pos = (p->ready_head + p->ready_len) % p->ready_cap;
    p->ready[pos] = t;
    p->ready_len++;
    if (p->idle > 0)
        pthread_cond_signal(&p->cv);
    else if (atomic_load(&p->driver_sleeping))
        pthread_cond_signal(&p->driver_cv);
    pthread_mutex_unlock(&p->mu);
}

/* Keeps the first task as the thread's next one; later ones go to the ready ring. */
static void cb__offer(cb_worker *w, cb_task t) {
    /* The load generator's thread never keeps a step of a holding stage: it would step it for as
     * long as it holds queries instead of issuing. */
    if (!t.it && w == &w->pipe->workers[w->pipe->n_threads]) {
        cb__publish(w->pipe, t);
        return;
    }
    if (!w->has_next) {
        w->next = t;
        w->has_next = 1;
    } else {
        cb__publish(w->pipe, t);
    }
}

static void cb__publish_next(cb_worker *w) {
    if (w->has_next) {
        w->has_next = 0;
        cb__publish(w->pipe, w->next);
    }
}

void cb__wake_driver(cb_pipe *p) {
    if (atomic_load(&p->driver_sleeping)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->driver_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Cancels everything in flight on p: tasks picked from now on are cancellations, parked merges
 * are flushed by the driver, and cancellable stage runs (host->wait_until) wake up. */
void cb__abort(cb_pipe *p) {
    if (atomic_exchange(&p->abort, 1)) return;
    int64_t zero = 0;
    atomic_compare_exchange_strong(&p->abort_since_ns, &zero, cb_clock_now_ns());
    pthread_mutex_lock(&p->rt->cancel_mu);
    pthread_cond_broadcast(&p->rt->cancel_cv);
    pthread_mutex_unlock(&p->rt->cancel_mu);
    cb__wake_driver(p);
}

/* Out of memory while running (a ring chunk for a record, a merge arrival): the pipeline stops
 * with an error, once; what was recorded so far is kept. */
static void cb__oom(cb_pipe *p, const char *what) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&p->failed, &expected, 1)) {
        snprintf(p->error, sizeof p->error, "pipeline '%s': out of memory %s; the run was stopped",
                 p->spec->name, what);
        cb__add_error(p->rt, p->error);
    }
    cb__abort(p);
}

static void cb__lost(cb_pipe *p) { cb__oom(p, "keeping its records (some could not be kept)"); }

static inline void cb__rec_query(cb_worker *w, const cb_query_event *e) {
    if (w->ring && cb_ring_query(w->ring, e) != CB_OK) cb__lost(w->pipe);
}

static inline void cb__rec_stage(cb_worker *w, const cb_stage_event *e) {
    if (w->ring && cb_ring_stage(w->ring, e) != CB_OK) cb__lost(w->pipe);
}

/* ---- query end ----------------------------------------------------------------------------- */

static inline int32_t cb__live(int64_t v) { return (int32_t)(v & 0xffffffff); }
static inline int32_t cb__parked(int64_t v) { return (int32_t)(v >> 32); }
static inline int cb__stuck(int64_t v) { return cb__live(v) > 0 && cb__live(v) == cb__parked(v); }

/* Every live path of query qid is parked at a merge (stage index at, -1 unknown): none can
 * complete. Fails the pipeline, once, naming the merge and the query; the abort flushes the
 * parked parts. The query is marked an error when it is still parked at `at`. Called without
 * stage locks held, and without touching the query's shared state, which a concurrent flush
 * may free: it is only reached through the merge's table, under its lock. */
static void cb__merge_stuck(cb_pipe *p, uint64_t qid, int at) {
    if (atomic_load(&p->abort)) return; /* everything parked is being cancelled already */
    const cb_stage_spec *ms = at >= 0 ? p->stages[at].spec : NULL;
    if (ms) {
        cb_stage_rt *st = &p->stages[at];
        pthread_mutex_lock(&st->mu);
        for (cb_merge_pending *m = st->pending; m; m = m->next)
            if (m->qid == qid && m->count > 0) {
                atomic_fetch_or_explicit(&m->parts[0]->sh->flags, CB_QF_ERROR, memory_order_relaxed);
                break;
            }
        pthread_mutex_unlock(&st->mu);
    }
    int expected = 0;
    if (atomic_compare_exchange_strong(&p->failed, &expected, 1)) {
        snprintf(p->error, sizeof p->error,
                 "pipeline '%s': merge stage '%s' (id %d): query %llu can never arrive from all "
                 "%d of its inputs: no path of the query is left to bring the rest (a stage "
                 "upstream sent it down only some of its branches); to join branches of which "
                 "only some run, use polling_policy single or first",
                 p->spec->name, ms ? ms->name : "?", ms ? ms->id : -1, (unsigned long long)qid,
                 ms ? (int)ms->n_in_edges : 0);
        cb__add_error(p->rt, p->error);
    }
    cb__abort(p);
}

static void cb__end_path(cb_worker *w, cb_qshared *sh, int64_t now_ns) {
    /* Read while this path's token keeps sh alive: after the decrement only its merges hold it. */
    uint64_t qid = sh->id;
    int at = atomic_load_explicit(&sh->parked_at, memory_order_relaxed);
    int64_t left = atomic_fetch_sub_explicit(&sh->tokens, 1, memory_order_acq_rel) - 1;
    if (cb__live(left) != 0) {
        if (cb__stuck(left)) cb__merge_stuck(w->pipe, qid, at);
        return;
    }
    cb_pipe *p = w->pipe;
    int flags = atomic_load_explicit(&sh->flags, memory_order_relaxed);
    cb_query_event e;
    e.scheduled_ns = sh->scheduled_ns;
    e.submit_ns = sh->submit_ns;
    e.start_ns = atomic_load_explicit(&sh->start_ns, memory_order_relaxed);
    e.end_ns = now_ns;
    e.query_id = sh->id;
    e.batch = sh->batch;
    e.pipeline = p->index;
    e.split = (int16_t)sh->split;
    e.epoch = sh->epoch;
    e.status = (flags & CB_QF_ERROR)    ? CB_QUERY_ERROR
               : (flags & CB_QF_CANCEL) ? CB_QUERY_CANCELLED
               : (flags & CB_QF_OUTPUT) ? CB_QUERY_OK
                                        : CB_QUERY_DROPPED;
    e.warmup = (int64_t)sh->id < p->spec->loadgen.warmup_queries;
    cb__rec_query(w, &e);
    cb__sh_free(w, sh);
    atomic_fetch_sub(&p->in_flight, 1); /* seq_cst: pairs with driver_sleeping */
    cb__wake_driver(p);
}

static void cb__cancel_item(cb_worker *w, cb_item *it) {
    atomic_fetch_or_explicit(&it->sh->flags, CB_QF_CANCEL, memory_order_relaxed);
    cb_qshared *sh = it->sh;
    cb__query_unref_payloads(&it->q);
    cb__item_free(w, it);
    cb__end_path(w, sh, cb_clock_now_ns());
}

/* ---- stage queues ------------------------------------------------------------------------- */

static int cb__heap_less(const cb_item *a, const cb_item *b) {
    if (a->sh->submit_ns != b->sh->submit_ns) return a->sh->submit_ns < b->sh->submit_ns;
    return a->sh->id < b->sh->id;
}

/* Called with st->mu held. 0 or CB_ENOMEM. */
static int cb__enqueue(cb_stage_rt *st, cb_item *it) {
    if (st->spec->policy == CB_POLICY_FIRST) {
        if (st->qlen == st->heap_cap) {
            size_t nc = st->heap_cap ? st->heap_cap * 2 : 64;
            cb_item **nh = cb_realloc(st->heap, nc * sizeof *nh);
            if (!nh) return CB_ENOMEM;
            st->heap = nh;
            st->heap_cap = nc;
        }
        size_t i = st->qlen++;
        while (i > 0) {
            size_t parent = (i - 1) / 2;
            if (!cb__heap_less(it, st->heap[parent])) break;
            st->heap[i] = st->heap[parent];
            i = parent;
        }
        st->heap[i] = it;
        return CB_OK;
    }
    it->next = NULL;
    if (st->qtail)
        st->qtail->next = it;
    else
        st->qhead = it;
    st->qtail = it;
    st->qlen++;
    return CB_OK;
}

/* Called with st->mu held and qlen > 0. */
static cb_item *cb__dequeue(cb_stage_rt *st) {
    if (st->spec->policy == CB_POLICY_FIRST) {
        cb_item *top = st->heap[0];
        cb_item *last = st->heap[--st->qlen];
        size_t i = 0, n = st->qlen;
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= n) break;
            if (c + 1 < n && cb__heap_less(st->heap[c + 1], st->heap[c])) c++;
            if (!cb__heap_less(st->heap[c], last)) break;
            st->heap[i] = st->heap[c];
            i = c;
        }
        if (n) st->heap[i] = last;
        return top;
    }
    cb_item *it = st->qhead;
    st->qhead = it->next;
    if (!st->qhead) st->qtail = NULL;
    st->qlen--;
    return it;
}

/* Merge policy: adds an arrival; returns the merged item when the query has arrived from every
 * inbound edge, else NULL (the item is parked). Called with st->mu held. */
static cb_item *cb__merge_arrival(cb_worker *w, cb_stage_rt *st, cb_item *it, int *err,
                                  int *stuck) {
    cb_merge_pending **pp = &st->pending, *m;
    for (m = *pp; m; pp = &m->next, m = m->next)
        if (m->qid == it->sh->id) break;
    if (!m) {
        m = cb_calloc(1, sizeof *m);
        if (!m) {
            *err = CB_ENOMEM;
            return NULL;
        }
        m->qid = it->sh->id;
        m->next = st->pending;
        st->pending = m;
        pp = &st->pending;
    }
    /* Parts ordered by upstream stage index, so a merge sees its inputs in a stable order. */
    int pos = m->count;
    while (pos > 0 && m->parts[pos - 1]->from_stage > it->from_stage) {
        m->parts[pos] = m->parts[pos - 1];
        pos--;
    }
    m->parts[pos] = it;
    m->count++;
    if (m->count < st->spec->n_in_edges) {
        atomic_store_explicit(&it->sh->parked_at, (int32_t)st->idx, memory_order_relaxed);
        int64_t v = atomic_fetch_add_explicit(&it->sh->tokens, CB_PATH_PARKED, memory_order_acq_rel) +
                    CB_PATH_PARKED;
        *stuck = cb__stuck(v);
        return NULL;
    }
    *pp = m->next;
    cb_item *out = m->parts[0];
    cb_query merged = out->q;
    merged.nparts = 0;
    merged.payload = NULL;
    for (int i = 0; i < m->count; i++) {
        cb_query *pq = &m->parts[i]->q;
        /* Each input's payload becomes a part; the input's own reference moves into it. */
        merged.parts[merged.nparts++] = pq->payload;
        pq->payload = NULL;
        cb__query_unref_payloads(pq);
        if (merged.hops < pq->hops) merged.hops = pq->hops;
        if (out->prev_end_ns < m->parts[i]->prev_end_ns) out->prev_end_ns = m->parts[i]->prev_end_ns;
    }
    merged.payload = merged.parts[0];
    cb_buffer_ref(merged.payload);
    out->q = merged;
    /* The parked parts fold into this one: fewer live and fewer parked paths, in one step. */
    atomic_fetch_sub_explicit(&out->sh->tokens, (int64_t)(m->count - 1) * (CB_PATH_PARKED + 1),
                              memory_order_acq_rel);
    for (int i = 1; i < m->count; i++) cb__item_free(w, m->parts[i]);
    cb_free(m);
    return out;
}

/* Hands it to st. Returns 1 with *t filled when the caller claimed a slot and must run the
 * task; 0 when the item was queued, parked for a merge, or cancelled. */
static int cb__submit(cb_worker *w, cb_stage_rt *st, cb_item *it, int back_edge, cb_task *t) {
    cb_pipe *p = w->pipe;
    pthread_mutex_lock(&st->mu);
    if (atomic_load_explicit(&p->abort, memory_order_relaxed)) {
        pthread_mutex_unlock(&st->mu);
        cb__cancel_item(w, it);
        return 0;
    }
    if (st->spec->policy == CB_POLICY_MERGE) {
        int err = 0, stuck = 0;
        cb_item *arrived = it;
        uint64_t qid = arrived->sh->id;
        it = cb__merge_arrival(w, st, arrived, &err, &stuck);
        if (!it) {
            pthread_mutex_unlock(&st->mu);
            if (stuck) cb__merge_stuck(p, qid, (int)st->idx);
            if (err) { /* no memory to park it: this path ends, cancelled (its token returned) */
                cb__cancel_item(w, arrived);
                cb__oom(p, "parking a merge arrival");
            }
            return 0;
        }
    }
    int64_t bound = st->spec->max_input_queue_depth;
    for (;;) {
        if (st->n_free > 0 && st->qlen == 0) {
            t->slot = st->free_slots[--st->n_free];
            t->st = st;
            t->it = it;
            pthread_mutex_unlock(&st->mu);
            return 1;
        }
        if (bound <= 0 || back_edge || (int64_t)st->qlen < bound ||
            atomic_load_explicit(&p->abort, memory_order_relaxed))
            break;
        /* Full: wait for room, keeping our own slot (a blocked put), but never a claimed task. */
        if (w->has_next) {
            pthread_mutex_unlock(&st->mu);
            cb__publish_next(w);
            pthread_mutex_lock(&st->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        st->space_waiters++;
        pthread_cond_timedwait(&st->space_cv, &st->mu, &ts);
        st->space_waiters--;
    }
    if (cb__enqueue(st, it) != CB_OK) {
        pthread_mutex_unlock(&st->mu);
        cb__oom(p, "queueing a query");
        cb__cancel_item(w, it);
        return 0;
    }
    /* An instance sleeping in host->wait_step returns, so the query is run at once. */
    if (st->step_waiters) pthread_cond_broadcast(&st->step_cv);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

/* Releases slot of st: returns 1 with the next queued item as a task (slot kept), or, when the
 * instance holds queries and none is queued, a step of it (slot kept), else 0. An instance that
 * holds queries thus keeps its slot claimed until it holds none (held lists need no lock). */
static int cb__release(cb_stage_rt *st, int slot, cb_task *t) {
    pthread_mutex_lock(&st->mu);
    if (st->qlen > 0) {
        t->it = cb__dequeue(st);
        t->st = st;
        t->slot = slot;
        if (st->space_waiters) pthread_cond_signal(&st->space_cv);
        pthread_mutex_unlock(&st->mu);
        return 1;
    }
    if (st->held[slot].n > 0 && !st->held[slot].broken) {
        t->it = NULL;
        t->st = st;
        t->slot = slot;
        pthread_mutex_unlock(&st->mu);
        return 1;
    }
    st->free_slots[st->n_free++] = slot;
    pthread_mutex_unlock(&st->mu);
    return 0;
}

/* ---- running a task ------------------------------------------------------------------------ */

int cb__host_emit(cb_run_ctx *ctx, int output, const cb_query *q) {
    cb_worker *w = ctx->w;
    int n_out = (int)ctx->st->spec->n_outputs;
    ctx->explicit_emit = 1;
    if (!q || output < CB_EMIT_ALL || output >= n_out) {
        ctx->emit_error = CB_EINVAL;
        return CB_EINVAL;
    }
    int first = output == CB_EMIT_ALL ? 0 : output;
    int last = output == CB_EMIT_ALL ? n_out - 1 : output;
    for (int i = first; i <= last; i++) {
        if (w->n_emits >= CB_MAX_EMITS) {
            ctx->emit_error = CB_EFULL;
            return CB_EFULL;
        }
        cb_emit_rec *e = &w->emits[w->n_emits++];
        e->target = i;
        e->q = *q;
        cb__query_ref_payloads(&e->q);
    }
    return CB_OK;
}

int cb__host_n_outputs(const cb_run_ctx *ctx) { return (int)ctx->st->spec->n_outputs; }

/* One 64-byte record into this thread's ring, like a stage event: no lock, no allocation while
 * the writer keeps a spare chunk, no formatting. */
static int cb__report(cb_run_ctx *ctx, const cb_qshared *sh, int metric, double value) {
    const cb_stage_rt *st = ctx->st;
    if (metric < 0 || metric >= st->n_metrics || !sh) return CB_EINVAL;
    cb_metric_event m = {
        .t_ns = cb_clock_now_ns(),
        .query_id = sh->id,
        .batch = sh->batch,
        .value = value,
        .pipeline = ctx->w->pipe->index,
        .stage = (uint16_t)st->idx,
        .split = (int16_t)sh->split,
        .metric = (int16_t)metric,
        .epoch = sh->epoch,
        .worker = (int16_t)ctx->slot,
    };
    cb_worker *w = ctx->w;
    if (w->ring && cb_ring_metric(w->ring, &m) != CB_OK) {
        cb__lost(w->pipe);
        return CB_ENOMEM;
    }
    return CB_OK;
}

/* host->report: against the query being run (none in a step: CB_EINVAL). */
int cb__host_report(cb_run_ctx *ctx, int metric, double value) {
    return cb__report(ctx, ctx->sh, metric, value);
}

/* host->device_time: adds to this run's device time (the ctx is private to the run, so no
 * synchronisation); the stage event written after run() returns carries the sum. */
int cb__host_device_time(cb_run_ctx *ctx, int64_t device_ns) {
    if (!ctx || device_ns < 0) return CB_EINVAL;
    if (ctx->device_ns == CB_DEVICE_NS_NONE) ctx->device_ns = 0;
    ctx->device_ns = device_ns > INT64_MAX - ctx->device_ns ? INT64_MAX : ctx->device_ns + device_ns;
    return CB_OK;
}

/* host->cancelled: the run's pipeline is cancelling its queries (a stop, a timeout past its
 * drain, a failure elsewhere in the pipeline). */
int cb__host_cancelled(const cb_run_ctx *ctx) {
    return ctx && atomic_load_explicit(&ctx->w->pipe->abort, memory_order_relaxed);
}

/* host->wait_until: sleeps until deadline_ns or until the pipeline cancels, whichever is first. */
int cb__host_wait_until(cb_run_ctx *ctx, int64_t deadline_ns) {
    if (!ctx) return CB_EINVAL;
    cb_pipe *p = ctx->w->pipe;
    cb_runtime *rt = p->rt;
    if (atomic_load(&p->abort)) return CB_ESTOPPED;
    if (cb_clock_now_ns() >= deadline_ns) return CB_OK;
    struct timespec ts = {(time_t)(deadline_ns / 1000000000LL), (long)(deadline_ns % 1000000000LL)};
    pthread_mutex_lock(&rt->cancel_mu);
    while (!atomic_load(&p->abort) && cb_clock_now_ns() < deadline_ns)
        if (pthread_cond_timedwait(&rt->cancel_cv, &rt->cancel_mu, &ts) == ETIMEDOUT) break;
    pthread_mutex_unlock(&rt->cancel_mu);
    return atomic_load(&p->abort) ? CB_ESTOPPED : CB_OK;
}

/* A wait_step sleeps in slices of this much, rechecking the pipeline's abort flag (which is set
 * without the stage's lock): cancellation reaches a waiting step within it. */
#define CB_WAIT_STEP_SLICE_NS 20000000LL

/* host->wait_step: from step() only (ctx->it is NULL there). */
int cb__host_wait_step(cb_run_ctx *ctx, int64_t deadline_ns) {
    if (!ctx || ctx->it) return CB_EINVAL;
    cb_pipe *p = ctx->w->pipe;
    cb_stage_rt *st = ctx->st;
    cb_waker *wk = &st->wakers[ctx->slot];
    pthread_mutex_lock(&st->mu);
    st->step_waiters++;
    for (;;) {
        if (atomic_load(&p->abort) || st->qlen > 0 || wk->woken) break;
        int64_t now = cb_clock_now_ns();
        if (now >= deadline_ns) break;
        int64_t until = deadline_ns - now > CB_WAIT_STEP_SLICE_NS ? now + CB_WAIT_STEP_SLICE_NS
                                                                 : deadline_ns;
        struct timespec ts = {(time_t)(until / 1000000000LL), (long)(until % 1000000000LL)};
        pthread_cond_timedwait(&st->step_cv, &st->mu, &ts);
    }
    wk->woken = 0;
    st->step_waiters--;
    pthread_mutex_unlock(&st->mu);
    return atomic_load(&p->abort) ? CB_ESTOPPED : CB_OK;
}

/* host->waker: the instance's handle (its slot's). */
cb_waker *cb__host_waker(cb_run_ctx *ctx) {
    if (!ctx) return NULL;
    return &ctx->st->wakers[ctx->slot];
}

/* host->wake: any thread. */
void cb__host_wake(cb_waker *wk) {
    if (!wk) return;
    cb_stage_rt *st = wk->st;
    pthread_mutex_lock(&st->mu);
    wk->woken = 1;
    if (st->step_waiters) pthread_cond_broadcast(&st->step_cv);
    pthread_mutex_unlock(&st->mu);
}

/* Fails the pipeline (the first failure names the stage and, when known, the query). */
static void cb__fail_msg(cb_pipe *p, cb_stage_rt *st, const cb_qshared *sh, const char *msg,
                         int rc) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&p->failed, &expected, 1)) {
        if (sh)
            snprintf(p->error, sizeof p->error, "pipeline '%s': stage '%s' (id %d, %s): query %llu: %s",
                     p->spec->name, st->spec->name, st->spec->id, st->spec->component,
                     (unsigned long long)sh->id, msg && msg[0] ? msg : cb_strerror(rc));
        else
            snprintf(p->error, sizeof p->error, "pipeline '%s': stage '%s' (id %d, %s): %s",
                     p->spec->name, st->spec->name, st->spec->id, st->spec->component,
                     msg && msg[0] ? msg : cb_strerror(rc));
        cb__add_error(p->rt, p->error);
    }
    cb__abort(p);
}

static void cb__fail(cb_worker *w, cb_stage_rt *st, cb_item *it, const cb_error *e, int rc) {
    atomic_fetch_or_explicit(&it->sh->flags, CB_QF_ERROR, memory_order_relaxed);
    cb__fail_msg(w->pipe, st, it->sh, e->msg, rc);
}

/* The stage event of one run of it in st. */
static void cb__rec_run(cb_worker *w, const cb_stage_rt *st, const cb_item *it, int slot,
                        int64_t start_ns, int64_t end_ns, int64_t device_ns) {
    if (st->spec->disable_logs) return;
    const cb_qshared *sh = it->sh;
    cb_stage_event ev;
    ev.enqueue_ns = it->enqueue_ns;
    ev.start_ns = start_ns;
    ev.end_ns = end_ns;
    ev.prev_end_ns = it->prev_end_ns;
    ev.query_id = sh->id;
    ev.device_ns = device_ns;
    ev.batch = sh->batch > INT32_MAX ? INT32_MAX : (int32_t)sh->batch;
    ev.pipeline = w->pipe->index;
    ev.stage = (uint16_t)st->idx;
    ev.worker = (int16_t)slot;
    ev.split = (int16_t)sh->split;
    ev.epoch = sh->epoch;
    cb__rec_stage(w, &ev);
}

/* Ends this path of it here: payloads released, the item freed, the path ended with `flag`
 * (0, CB_QF_CANCEL) added to the query's flags. */
static void cb__end_item(cb_worker *w, cb_item *it, int flag, int64_t end_ns) {
    cb_qshared *sh = it->sh;
    if (flag) atomic_fetch_or_explicit(&sh->flags, flag, memory_order_relaxed);
    cb__query_unref_payloads(&it->q);
    cb__item_free(w, it);
    cb__end_path(w, sh, end_ns);
}

/* Forwards it to every output of st: the item itself to the first, copies to the rest. */
static void cb__forward_all(cb_worker *w, cb_stage_rt *st, cb_item *it, int64_t end_ns) {
    cb_pipe *p = w->pipe;
    const cb_stage_spec *ss = st->spec;
    cb_qshared *sh = it->sh;
    cb_task nt;
    int k = (int)ss->n_outputs;
    if (k > 1) atomic_fetch_add_explicit(&sh->tokens, k - 1, memory_order_relaxed);
    it->enqueue_ns = end_ns;
    it->prev_end_ns = end_ns;
    it->from_stage = st->idx;
    for (int i = k - 1; i >= 0; i--) {
        cb_item *x = it;
        if (i > 0) {
            x = cb__item_alloc(w);
            if (!x) { /* out of memory: this path ends, cancelled, and the run stops */
                cb__oom(p, "forwarding a query");
                atomic_fetch_or_explicit(&sh->flags, CB_QF_CANCEL, memory_order_relaxed);
                cb__end_path(w, sh, end_ns);
                continue;
            }
            *x = *it;
            cb__query_ref_payloads(&x->q);
        }
        if (cb__submit(w, &p->stages[ss->out_idx[i]], x, ss->out_back[i], &nt)) cb__offer(w, nt);
    }
}

/* ---- held queries (stage.h "Held queries") -------------------------------------------------- */

static void cb__held_unlink(cb_held_list *hl, cb_item *it) {
    if (it->held_prev) it->held_prev->next = it->next;
    else hl->head = it->next;
    if (it->next) it->next->held_prev = it->held_prev;
    it->next = it->held_prev = NULL;
    it->held_st = NULL;
    hl->n--;
}

/* host->hold: the item being run joins its instance's held list. */
cb_held *cb__host_hold(cb_run_ctx *ctx) {
    if (!ctx || !ctx->it || ctx->held || !cb_registry_ops_step(ctx->st->spec->ops)) return NULL;
    cb_held_list *hl = &ctx->st->held[ctx->slot];
    if (hl->broken) return NULL;
    cb_item *it = ctx->it;
    it->held_st = ctx->st;
    it->held_slot = ctx->slot;
    it->run_start_ns = ctx->start_ns;
    it->held_prev = NULL;
    it->next = hl->head;
    if (hl->head) hl->head->held_prev = it;
    hl->head = it;
    hl->n++;
    ctx->held = 1;
    return (cb_held *)it;
}

/* The item behind h when this ctx's instance holds it, else NULL. */
static cb_item *cb__held_item(const cb_run_ctx *ctx, cb_held *h) {
    cb_item *it = (cb_item *)h;
    if (!ctx || !it || it->held_st != ctx->st || it->held_slot != ctx->slot) return NULL;
    return it;
}

int cb__host_report_held(cb_run_ctx *ctx, cb_held *h, int metric, double value) {
    cb_item *it = cb__held_item(ctx, h);
    if (!it) return CB_EINVAL;
    return cb__report(ctx, it->sh, metric, value);
}

int64_t cb__host_arrival_ns(const cb_run_ctx *ctx) { return ctx && ctx->sh ? ctx->sh->scheduled_ns : 0; }

/* host->complete: the held query's run in this stage ends now with rc. */
int cb__host_complete(cb_run_ctx *ctx, cb_held *h, int rc, const char *msg) {
    if (!ctx) return CB_EINVAL;
    cb_held_list *hl = &ctx->st->held[ctx->slot];
    if (hl->broken) return CB_ESTOPPED;
    cb_item *it = cb__held_item(ctx, h);
    if (!it) return CB_EINVAL;
    cb_worker *w = ctx->w;
    cb_pipe *p = w->pipe;
    cb_stage_rt *st = ctx->st;
    cb__held_unlink(hl, it);
    int64_t end_ns = cb_clock_now_ns();
    cb__rec_run(w, st, it, ctx->slot, it->run_start_ns, end_ns, CB_DEVICE_NS_NONE);
    if (rc == CB_ESTOPPED && atomic_load_explicit(&p->abort, memory_order_relaxed)) {
        cb__end_item(w, it, CB_QF_CANCEL, end_ns);
        return CB_OK;
    }
    if (rc == CB_RUN_FAILED) { /* the query failed here; the pipeline goes on */
        atomic_fetch_or_explicit(&it->sh->flags, CB_QF_ERROR, memory_order_relaxed);
        cb__end_item(w, it, 0, end_ns);
        return CB_OK;
    }
    if (rc < 0 || rc > CB_RUN_DROP) {
        if (rc >= 0) rc = CB_EINVAL, msg = "host->complete: rc is neither CB_OK, CB_RUN_DROP, CB_RUN_FAILED nor an error";
        atomic_fetch_or_explicit(&it->sh->flags, CB_QF_ERROR, memory_order_relaxed);
        cb__fail_msg(p, st, it->sh, msg, rc);
        cb__end_item(w, it, 0, end_ns);
        return CB_OK;
    }
    if (st->spec->is_output && !(atomic_load_explicit(&it->sh->flags, memory_order_relaxed) & CB_QF_OUTPUT))
        atomic_fetch_or_explicit(&it->sh->flags, CB_QF_OUTPUT, memory_order_relaxed);
    if (rc == CB_OK && st->spec->n_outputs > 0) cb__forward_all(w, st, it, end_ns);
    else cb__end_item(w, it, 0, end_ns);
    return CB_OK;
}

/* Ends every query the instance still holds, cancelled, and stops its step and complete: the
 * stage failed, or did not end them while its pipeline cancels. */
static void cb__held_break(cb_worker *w, cb_stage_rt *st, int slot) {
    cb_held_list *hl = &st->held[slot];
    hl->broken = 1;
    int64_t now = cb_clock_now_ns();
    while (hl->head) {
        cb_item *it = hl->head;
        cb__held_unlink(hl, it);
        cb__end_item(w, it, CB_QF_CANCEL, now);
    }
}

/* One step of the instance at t.slot, which holds queries. */
static void cb__run_step(cb_worker *w, cb_task t) {
    cb_pipe *p = w->pipe;
    cb_stage_rt *st = t.st;
    cb_held_list *hl = &st->held[t.slot];
    cb_task nt;
    int (*step)(void *, cb_run_ctx *, cb_error *) = cb_registry_ops_step(st->spec->ops);
    if (hl->n > 0 && !hl->broken && step) {
        int aborting = atomic_load_explicit(&p->abort, memory_order_relaxed);
        int64_t before = hl->n;
        cb_run_ctx ctx = {w, st, NULL, t.slot, 0, 0, CB_DEVICE_NS_NONE, NULL, 0, cb_clock_now_ns()};
        cb_error e;
        e.code = 0;
        e.msg[0] = '\0';
        int rc = step(st->states[t.slot], &ctx, &e);
        if (rc < 0 && !(rc == CB_ESTOPPED && atomic_load_explicit(&p->abort, memory_order_relaxed))) {
            cb__fail_msg(p, st, NULL, e.msg[0] ? e.msg : "step failed", rc);
            cb__held_break(w, st, t.slot);
        } else if (rc < 0 || (aborting && hl->n > 0 && hl->n >= before)) {
            cb__held_break(w, st, t.slot);
        }
    }
    if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
}

static void cb__run_task(cb_worker *w, cb_task t) {
    if (!t.it) {
        cb__run_step(w, t);
        return;
    }
    cb_pipe *p = w->pipe;
    cb_stage_rt *st = t.st;
    cb_item *it = t.it;
    const cb_stage_spec *ss = st->spec;
    cb_qshared *sh = it->sh;
    cb_task nt;

    if (atomic_load_explicit(&p->abort, memory_order_relaxed)) {
        cb__cancel_item(w, it);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        return;
    }
    cb_query *q = &it->q; /* q->hops counts router passes: routers add to it, not the runtime */
    int64_t start_ns = cb_clock_now_ns();
    if (atomic_load_explicit(&sh->start_ns, memory_order_relaxed) == 0) {
        int64_t zero = 0;
        atomic_compare_exchange_strong_explicit(&sh->start_ns, &zero, start_ns,
                                                memory_order_relaxed, memory_order_relaxed);
    }
    cb_run_ctx ctx = {w, st, sh, t.slot, 0, 0, CB_DEVICE_NS_NONE, it, 0, start_ns};
    w->n_emits = 0;
    cb_error e;
    e.code = 0;
    e.msg[0] = '\0';
    int rc = ss->ops->run(st->states[t.slot], q, &ctx, &e);
    int64_t end_ns = cb_clock_now_ns();
    /* The stage's recent run time (EWMA, 1/8), for the open-loop driver's cb__fits. A sample
     * counts for at most 4x the estimate, so one run preempted for a time slice does not make a
     * short stage look long (a stage that got slower takes a few runs to show it). Relaxed: an
     * estimate; concurrent updates may lose one sample. */
    int64_t est = atomic_load_explicit(&st->run_est_ns, memory_order_relaxed);
    int64_t run_ns = end_ns - start_ns > 0 ? end_ns - start_ns : 1;
    if (est && run_ns > 4 * est) run_ns = 4 * est;
    atomic_store_explicit(&st->run_est_ns, est ? est + (run_ns - est) / 8 : run_ns,
                          memory_order_relaxed);
    if (ctx.held || rc == CB_RUN_HELD) {
        /* The stage keeps the query: its stage event comes with its complete(). Explicit emits
         * do not apply to a held query. */
        for (int i = 0; i < w->n_emits; i++) cb__query_unref_payloads(&w->emits[i].q);
        w->n_emits = 0;
        if (ctx.held && rc == CB_RUN_HELD) {
            if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
            return;
        }
        /* A broken promise: held without CB_RUN_HELD, or CB_RUN_HELD without hold. */
        if (ctx.held && it->held_st) cb__held_unlink(&st->held[t.slot], it);
        if (rc >= 0) {
            rc = CB_EINVAL;
            snprintf(e.msg, sizeof e.msg, "%s", ctx.held ? "run() called host->hold but did not return CB_RUN_HELD"
                                                   : "run() returned CB_RUN_HELD without host->hold");
        }
        cb__rec_run(w, st, it, t.slot, start_ns, end_ns, ctx.device_ns);
        cb__fail(w, st, it, &e, rc);
        cb__end_item(w, it, 0, end_ns);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        return;
    }
    cb__rec_run(w, st, it, t.slot, start_ns, end_ns, ctx.device_ns);
    if (rc >= 0 && ctx.emit_error) {
        rc = ctx.emit_error;
        snprintf(e.msg, sizeof e.msg, "emit failed: %s", cb_strerror(rc));
    }
    if (rc == CB_ESTOPPED && atomic_load_explicit(&p->abort, memory_order_relaxed)) {
        /* A cancellable run that gave up because the pipeline is cancelling: a cancellation. */
        for (int i = 0; i < w->n_emits; i++) cb__query_unref_payloads(&w->emits[i].q);
        w->n_emits = 0;
        cb__end_item(w, it, CB_QF_CANCEL, end_ns);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        return;
    }
    if (rc < 0) {
        cb__fail(w, st, it, &e, rc);
        for (int i = 0; i < w->n_emits; i++) cb__query_unref_payloads(&w->emits[i].q);
        w->n_emits = 0;
        cb__end_item(w, it, 0, end_ns);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        return;
    }
    if (rc == CB_RUN_FAILED) { /* the query failed here (status error); the pipeline goes on */
        atomic_fetch_or_explicit(&it->sh->flags, CB_QF_ERROR, memory_order_relaxed);
        for (int i = 0; i < w->n_emits; i++) cb__query_unref_payloads(&w->emits[i].q);
        w->n_emits = 0;
        cb__end_item(w, it, 0, end_ns);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        return;
    }
    if (ss->is_output && !(atomic_load_explicit(&sh->flags, memory_order_relaxed) & CB_QF_OUTPUT))
        atomic_fetch_or_explicit(&sh->flags, CB_QF_OUTPUT, memory_order_relaxed);

    cb_stage_rt *stages = p->stages;
    if (!ctx.explicit_emit && rc != CB_RUN_DROP && ss->n_outputs > 0) {
        cb__forward_all(w, st, it, end_ns);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        return;
    }
    /* Explicit emits (possibly none): new items carry the emitted copies. */
    int k = w->n_emits;
    if (k > 1) atomic_fetch_add_explicit(&sh->tokens, k - 1, memory_order_relaxed);
    cb__query_unref_payloads(q);
    if (k == 0) {
        cb__item_free(w, it);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        cb__end_path(w, sh, end_ns);
        return;
    }
    /* Copy the emit records out first: submitting may run nothing here, but keeps it simple to
     * reason about (emits[] is reused by the next run on this thread). */
    cb_emit_rec local[8];
    cb_emit_rec *recs = k <= 8 ? local : cb_malloc((size_t)k * sizeof *recs);
    if (!recs) {
        cb__oom(p, "emitting a query");
        for (int i = 0; i < k; i++) cb__query_unref_payloads(&w->emits[i].q);
        atomic_fetch_sub_explicit(&sh->tokens, k - 1, memory_order_relaxed);
        atomic_fetch_or_explicit(&sh->flags, CB_QF_CANCEL, memory_order_relaxed);
        cb__item_free(w, it);
        if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
        cb__end_path(w, sh, end_ns);
        return;
    }
    memcpy(recs, w->emits, (size_t)k * sizeof *recs);
    w->n_emits = 0;
    for (int i = 0; i < k; i++) {
        cb_item *x = i == 0 ? it : cb__item_alloc(w);
        if (!x) {
            cb__oom(p, "emitting a query");
            cb__query_unref_payloads(&recs[i].q);
            atomic_fetch_or_explicit(&sh->flags, CB_QF_CANCEL, memory_order_relaxed);
            cb__end_path(w, sh, end_ns);
            continue;
        }
        x->q = recs[i].q;
        x->sh = sh;
        x->enqueue_ns = end_ns;
        x->prev_end_ns = end_ns;
        x->from_stage = st->idx;
        int o = recs[i].target;
        if (cb__submit(w, &stages[ss->out_idx[o]], x, ss->out_back[o], &nt)) cb__offer(w, nt);
    }
    if (recs != local) cb_free(recs);
    if (cb__release(st, t.slot, &nt)) cb__offer(w, nt);
}

/* Runs the private task and everything it leads to on this thread. */
static void cb__run_chain(cb_worker *w) {
    while (w->has_next) {
        w->has_next = 0;
        cb__run_task(w, w->next);
    }
}

/* ---- pool threads -------------------------------------------------------------------------- */

void *cb__pool_main(void *arg) {
    cb_worker *w = arg;
    cb_pipe *p = w->pipe;
    char name[16];
    snprintf(name, sizeof name, "cb-w%d-%.8s", (int)(w - p->workers), p->spec->name);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        cb__run_chain(w);
        pthread_mutex_lock(&p->mu);
        while (p->ready_len == 0 && !p->shutdown) {
            p->idle++;
            pthread_cond_wait(&p->cv, &p->mu);
            p->idle--;
        }
        if (p->ready_len == 0) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        cb_task t = p->ready[p->ready_head];
        p->ready_head = (p->ready_head + 1) % p->ready_cap;
        p->ready_len--;
        pthread_mutex_unlock(&p->mu);
        cb__run_task(w, t);
    }
    return NULL;
}

/* ---- the driver (load generator) ------------------------------------------------------------ */

static int cb__below(cb_pipe *p, int64_t cap) { return atomic_load(&p->in_flight) < cap; }

static void cb__flush_merges(cb_worker *w) {
    cb_pipe *p = w->pipe;
    for (size_t s = 0; s < p->spec->n_stages; s++) {
        cb_stage_rt *st = &p->stages[s];
        if (st->spec->policy != CB_POLICY_MERGE) continue;
        pthread_mutex_lock(&st->mu);
        cb_merge_pending *m = st->pending;
        st->pending = NULL;
        pthread_mutex_unlock(&st->mu);
        while (m) {
            cb_merge_pending *n = m->next;
            for (int i = 0; i < m->count; i++) {
                atomic_fetch_sub_explicit(&m->parts[i]->sh->tokens, CB_PATH_PARKED, memory_order_acq_rel);
                cb__cancel_item(w, m->parts[i]);
            }
            cb_free(m);
            m = n;
        }
    }
}

/* Waits until fewer than cap queries are in flight or until_ns passes, running tasks meanwhile
 * if may_run. */
static void cb__driver_wait(cb_worker *w, int64_t cap, int64_t until_ns, int may_run) {
    cb_pipe *p = w->pipe;
    while (!cb__below(p, cap)) {
        if (may_run && w->has_next) {
            cb__run_chain(w);
            continue;
        }
        int64_t now = cb_clock_now_ns();
        if (now >= until_ns) return;
        if (atomic_load(&p->abort) && p->has_merge) cb__flush_merges(w);
        pthread_mutex_lock(&p->mu);
        if (may_run && p->ready_len > 0) {
            cb_task t = p->ready[p->ready_head];
            p->ready_head = (p->ready_head + 1) % p->ready_cap;
            p->ready_len--;
            pthread_mutex_unlock(&p->mu);
            cb__run_task(w, t);
            continue;
        }
        atomic_store(&p->driver_sleeping, 1);
        if (!cb__below(p, cap)) {
            int64_t wake = until_ns < now + 10000000 ? until_ns : now + 10000000;
            struct timespec ts = {wake / 1000000000LL, wake % 1000000000LL};
            pthread_cond_timedwait(&p->driver_cv, &p->mu, &ts);
        }
        atomic_store(&p->driver_sleeping, 0);
        pthread_mutex_unlock(&p->mu);
    }
}

static int cb__stopping(cb_pipe *p) {
    return atomic_load_explicit(&p->stop_issue, memory_order_relaxed) ||
           atomic_load_explicit(&p->abort, memory_order_relaxed);
}

/* Reaches t_ns on time: sleeps (in 20 ms slices, returning early when the pipeline stops) to
 * the pacer's margin before it, then spins the rest (at most the pacer's cap). */
static void cb__sleep_until(cb_pipe *p, cb_pacer *pc, int64_t t_ns) {
    for (;;) {
        int64_t now = cb_clock_now_ns();
        if (now >= t_ns || cb__stopping(p)) return;
        int64_t wake = t_ns - pc->margin_ns;
        if (now >= wake) break;
        if (wake - now > 20000000) {
            cb_clock_sleep_until_ns(now + 20000000);
            continue;
        }
        cb_clock_sleep_until_ns(wake);
        cb_pacer_note_wake(pc, cb_clock_now_ns() - wake);
        break;
    }
    cb_pacer_spin(pc, t_ns);
}

/* An open-loop driver runs a task itself, with no hand-off and no wake-up, when the stage's
 * recent runs were short (CB_INLINE_MAX_NS) and twice that fits before the next arrival, or
 * whatever the time when twice that is under CB_INLINE_LATE_NS: handing such a run off costs
 * the driver about as much as running it, and a pool thread's wake-up costs the query more (a
 * driver that fell behind catches up faster alone). Otherwise a pool thread runs it. A stage
 * never run yet has no estimate and is handed off. */
#define CB_INLINE_MAX_NS 100000
#define CB_INLINE_LATE_NS 2000

static int cb__fits(const cb_task *t, int64_t now_ns, int64_t next_ns) {
    int64_t est = atomic_load_explicit(&t->st->run_est_ns, memory_order_relaxed);
    return est > 0 && est <= CB_INLINE_MAX_NS &&
           (2 * est <= CB_INLINE_LATE_NS || now_ns + 2 * est <= next_ns);
}

/* Open loop, after an issue: runs the thread's private tasks while they fit before next_ns,
 * then hands what is left to the pool. Returns the number of runs done here. */
static uint64_t cb__run_inline(cb_worker *w, int64_t next_ns) {
    uint64_t n = 0;
    while (w->has_next) {
        if (!cb__fits(&w->next, cb_clock_now_ns(), next_ns)) {
            cb__publish_next(w);
            break;
        }
        w->has_next = 0;
        cb__run_task(w, w->next);
        n++;
    }
    return n;
}

/* Issues query id: the first task it claims becomes the thread's private next (closed and
 * offline drivers run it in cb__driver_wait, open-loop drivers in cb__run_inline or hand it off),
 * further ones are published. */
static int cb__issue(cb_worker *w, uint64_t id, int32_t split, int32_t epoch, int64_t batch,
                     int64_t scheduled_ns, int open) {
    cb_pipe *p = w->pipe;
    const cb_pipeline_spec *ps = p->spec;
    cb_qshared *sh = cb__sh_alloc(w);
    if (!sh) return CB_ENOMEM;
    int64_t now = cb_clock_now_ns();
    atomic_store_explicit(&sh->tokens, (int64_t)ps->n_inputs, memory_order_relaxed);
    atomic_store_explicit(&sh->parked_at, -1, memory_order_relaxed);
    atomic_store_explicit(&sh->flags, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->start_ns, 0, memory_order_relaxed);
    sh->submit_ns = now;
    sh->scheduled_ns = open ? scheduled_ns : now;
    sh->id = id;
    sh->split = split;
    sh->epoch = epoch;
    sh->batch = batch;
    atomic_fetch_add(&p->in_flight, 1);
    atomic_fetch_add_explicit(&p->issued, 1, memory_order_relaxed);
    for (size_t i = 0; i < ps->n_inputs; i++) {
        cb_item *it = cb__item_alloc(w);
        if (!it) {
            cb__oom(p, "issuing a query");
            atomic_fetch_or_explicit(&sh->flags, CB_QF_CANCEL, memory_order_relaxed);
            cb__end_path(w, sh, now);
            continue;
        }
        memset(&it->q, 0, sizeof it->q);
        it->q.abi_major = CB_STAGE_ABI_MAJOR;
        it->q.struct_size = sizeof(cb_query);
        it->q.id = id;
        it->q.split = split;
        it->q.epoch = epoch;
        it->q.batch = batch;
        it->sh = sh;
        it->enqueue_ns = now;
        it->prev_end_ns = now;
        it->from_stage = -1;
        cb_task t;
        if (cb__submit(w, &p->stages[ps->input_idx[i]], it, 0, &t)) cb__offer(w, t);
    }
    return CB_OK;
}

void *cb__driver_main(void *arg) {
    cb_worker *w = arg;
    cb_pipe *p = w->pipe;
    cb_runtime *rt = p->rt;
    const cb_loadgen_spec *lg = &p->spec->loadgen;
    char name[16];
    snprintf(name, sizeof name, "cb-lg-%.9s", p->spec->name);
    pthread_setname_np(pthread_self(), name);
    int open = cb_loadgen_is_open(lg->kind);
    if (open) prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake on time, not 50 us late */
    cb_pacer pc;
    cb_pacer_init(&pc, CB_PACER_SPIN_CAP_NS);
    uint64_t inline_runs = 0;

    pthread_mutex_lock(&rt->gate_mu); /* the common start gate */
    while (!rt->gate_open) pthread_cond_wait(&rt->gate_cv, &rt->gate_mu);
    pthread_mutex_unlock(&rt->gate_mu);
    int64_t cpu0 = cb_clock_thread_cpu_ns();
    int64_t start = rt->t0_ns + p->spec->start_delay_ns;
    if (p->spec->start_delay_ns > 0) cb__sleep_until(p, &pc, start);
    int64_t deadline = start + lg->timeout_ns;
    atomic_store(&p->deadline_ns, deadline);
    int64_t cap = 0; /* 0 = no bound */
    switch (lg->kind) {
    case CB_LOADGEN_CLOSED: cap = lg->concurrency; break;
    case CB_LOADGEN_OFFLINE: cap = lg->queue_depth; break;
    default: cap = lg->max_in_flight; break;
    }
    if (p->spec->serialize_queries) cap = 1;
    int64_t wait_cap = cap > 0 ? cap : INT64_MAX;

    int32_t split = 0, epoch = 0;
    int64_t batch = 0;
    for (uint64_t i = 0;; i++) {
        if (lg->max_queries > 0 && (int64_t)i >= lg->max_queries) break;
        if (cb__stopping(p)) break;
        if (p->has_splits) {
            if (i > 0 && ++batch >= p->splits.split[split].batches) {
                batch = 0;
                if (++split >= p->splits.n) {
                    split = 0;
                    if (++epoch >= p->splits.epochs) break;
                }
                if (lg->split_barrier) cb__driver_wait(w, 1, deadline, !open);
            }
        } else {
            batch = (int64_t)i;
        }
        int64_t scheduled = 0;
        if (open) {
            if (i >= p->n_schedule) break;
            scheduled = start + p->schedule[i];
            if (scheduled >= deadline) break;
            cb__sleep_until(p, &pc, scheduled);
            if (cb__stopping(p)) break;
        }
        if (atomic_load(&p->in_flight) >= wait_cap)
            cb__driver_wait(w, wait_cap, deadline, !open);
        if (cb_clock_now_ns() >= deadline) {
            atomic_store(&p->timed_out, 1);
            break;
        }
        if (cb__stopping(p)) break;
        if (cb__issue(w, i, split, epoch, batch, scheduled, open) != CB_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "pipeline '%s': load generator: out of memory issuing a query",
                     p->spec->name);
            cb__add_error(rt, msg);
            cb__abort(p);
            cb__publish_next(w);
            break;
        }
        if (open) {
            int64_t next = i + 1 < p->n_schedule ? start + p->schedule[i + 1] : deadline;
            inline_runs += cb__run_inline(w, next < deadline ? next : deadline);
        }
    }
    /* Drain: the queries in flight end on their own until the deadline; after a stop, a failure
     * or the deadline they get drain_ns more, then they are cancelled. Once cancelled, the
     * driver waits for the runs still in progress (a stuck one is the joiner's business). */
    int64_t drain_until = INT64_MAX;
    for (;;) {
        if (atomic_load(&p->in_flight) < 1) break;
        int64_t now = cb_clock_now_ns();
        int aborted = atomic_load(&p->abort);
        if (drain_until == INT64_MAX && (aborted || atomic_load(&p->stop_issue) || now >= deadline)) {
            if (now >= deadline && !atomic_load(&p->stop_issue)) atomic_store(&p->timed_out, 1);
            drain_until = now + rt->drain_ns;
        }
        if (!aborted && now >= drain_until) cb__abort(p); /* cancel what is left */
        int64_t until = aborted ? now + 10000000 : drain_until != INT64_MAX ? drain_until : deadline;
        cb__driver_wait(w, 1, until, 1);
    }
    cb_driver_stats *ds = &p->driver_stats; /* read by join after driver_done (seq_cst) */
    ds->cpu_ns = cb_clock_thread_cpu_ns() - cpu0;
    ds->spin_ns = pc.spin_ns;
    ds->max_spin_ns = pc.max_spin_ns;
    ds->spin_cap_ns = pc.cap_ns;
    ds->margin_ns = pc.margin_ns;
    ds->spins = pc.spins;
    ds->sleeps = pc.sleeps;
    ds->inline_runs = inline_runs;
    pthread_mutex_lock(&p->mu);
    p->shutdown = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    atomic_store(&p->driver_done, 1);
    return NULL;
}
