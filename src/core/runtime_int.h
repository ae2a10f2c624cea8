/* core/runtime_int.h - the runtime's private structures, shared by runtime.c (the lifecycle:
 * setup, start, stop, join, teardown) and sched.c (the scheduler: queues, tasks, routing, the
 * load generator and pool threads). Nothing outside src/core/runtime.c and src/core/sched.c
 * includes it. Thread-safety and lock order: see sched.c.
 */
#ifndef CB_CORE_RUNTIME_INT_H
#define CB_CORE_RUNTIME_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ring.h"
#include "core/runtime.h"

#define CB_MAX_EMITS 256
#define CB_FREELIST_MAX 4096
#define CB_QF_OUTPUT 1
#define CB_QF_ERROR 2
#define CB_QF_CANCEL 4
#define CB_PATH_PARKED ((int64_t)1 << 32)

typedef struct cb_runtime cb_runtime;
typedef struct cb_pipe cb_pipe;
typedef struct cb_stage_rt cb_stage_rt;

typedef struct cb_qshared {
    /* Paths of the query: live ones (every path, the token count) in the low 32 bits, those
     * parked at a merge in the high 32 (CB_PATH_PARKED each). One word, so the change that
     * leaves every live path parked (no path left to complete a merge) is seen by exactly the
     * thread that made it. */
    _Atomic int64_t tokens;
    _Atomic int32_t parked_at;   /* stage index of the latest merge it parked at; -1 none */
    _Atomic int32_t flags;
    _Atomic int64_t start_ns;
    int64_t scheduled_ns, submit_ns;
    uint64_t id;
    int64_t batch;
    int32_t split, epoch;
    struct cb_qshared *next_free;
} cb_qshared;

typedef struct cb_item {
    cb_query q;
    cb_qshared *sh;
    int64_t enqueue_ns, prev_end_ns;
    int from_stage;            /* upstream stage index, -1 for the load generator */
    struct cb_item *next;      /* queue link or free list; the held list while held */
    /* While a stage holds it (host->hold): the list links, the holder and its run's start. */
    struct cb_item *held_prev;
    const struct cb_stage_rt *held_st; /* NULL when not held */
    int held_slot;
    int64_t run_start_ns;
} cb_item;

/* The queries one stage instance holds (host->hold), touched only by the thread that has the
 * instance's slot claimed (run, step and complete all run with the slot claimed), so unlocked. */
typedef struct cb_held_list {
    cb_item *head;
    int64_t n;
    int broken;                /* the host ended them itself: no more step or complete */
} cb_held_list;

typedef struct cb_task {
    cb_stage_rt *st;
    cb_item *it;               /* NULL: a step of the instance at slot (it holds queries) */
    int slot;
} cb_task;

typedef struct cb_merge_pending {
    uint64_t qid;
    int count;
    cb_item *parts[CB_QUERY_MAX_PARTS];
    struct cb_merge_pending *next;
} cb_merge_pending;

/* host->waker's handle of one stage instance. */
struct cb_waker {
    struct cb_stage_rt *st;
    int woken;                   /* under st->mu: a wake not yet consumed by a wait_step */
};

struct cb_stage_rt {
    pthread_mutex_t mu;          /* protects the fields up to "end of mu" */
    cb_item *qhead, *qtail;      /* single: FIFO */
    cb_item **heap;              /* first: min-heap on (submit_ns, id) */
    size_t qlen, heap_cap;
    cb_merge_pending *pending;   /* merge: queries waiting for their other inputs */
    int *free_slots;
    int n_free;
    int space_waiters;
    pthread_cond_t space_cv;     /* a bounded queue got room */
    int step_waiters;            /* instances in host->wait_step */
    pthread_cond_t step_cv;      /* a query was queued, a wake came, or the pipeline cancels */
    struct cb_waker *wakers;     /* one per worker: host->waker's handles, woken flag under mu */
    /* end of mu */
    _Atomic int64_t run_est_ns;  /* recent run time (EWMA), 0 = never run; relaxed: a hint */
    const cb_stage_spec *spec;
    cb_pipe *pipe;
    int idx;
    int n_metrics;               /* metrics the stage's ops declare (host->report bound) */
    void **states;               /* one per worker */
    int *created;                /* create() succeeded for worker i */
    cb_stage_args *args;         /* one per worker */
    cb_held_list *held;          /* one per worker: the queries the instance holds */
};

typedef struct cb_emit_rec {
    int target;                  /* output index */
    cb_query q;
} cb_emit_rec;

typedef struct cb_worker {
    cb_pipe *pipe;
    cb_ring *ring;
    cb_task next;
    int has_next;
    cb_item *free_items;
    int n_free_items;
    cb_qshared *free_sh;
    int n_free_sh;
    int n_emits;
    cb_emit_rec emits[CB_MAX_EMITS];
} cb_worker;

struct cb_run_ctx {
    cb_worker *w;
    cb_stage_rt *st;
    const cb_qshared *sh;        /* the query being run (id, split, epoch, batch); NULL in step */
    int slot;                    /* the stage worker running it */
    int explicit_emit;
    int emit_error;
    int64_t device_ns;           /* host->device_time sum; CB_DEVICE_NS_NONE when not called */
    cb_item *it;                 /* the item being run (host->hold); NULL in step */
    int held;                    /* host->hold was called in this run */
    int64_t start_ns;            /* when this run started */
};

struct cb_pipe {
    cb_runtime *rt;
    const cb_pipeline_spec *spec;
    uint16_t index;
    cb_stage_rt *stages;
    pthread_mutex_t mu;          /* protects ready ring, idle, shutdown */
    pthread_cond_t cv;           /* pool threads: a task was published or shutdown */
    pthread_cond_t driver_cv;    /* driver: a task was published or a query ended */
    cb_task *ready;
    size_t ready_cap, ready_head, ready_len;
    int idle;
    int shutdown;
    _Atomic int driver_sleeping;
    _Atomic int64_t in_flight;
    _Atomic int abort;           /* cancel everything in flight (set through cb__abort) */
    _Atomic int64_t abort_since_ns; /* when abort was set (0: not set) */
    _Atomic uint64_t issued;     /* queries issued so far (progress) */
    _Atomic int stop_issue;      /* issue no more queries */
    _Atomic int failed;
    _Atomic int driver_done;
    _Atomic int timed_out;       /* the deadline stopped it (driver or watchdog) */
    _Atomic int64_t deadline_ns; /* the load's deadline (0 until the driver starts) */
    int has_merge;
    pthread_t driver;
    int driver_started;
    int joined, abandoned;       /* controlling thread only */
    pthread_t *threads;
    int n_threads, n_threads_started;
    cb_worker *workers;          /* n_threads + 1 (the last is the driver's) */
    cb_splits splits;
    int has_splits;
    int64_t *schedule;
    size_t n_schedule;
    cb_driver_stats driver_stats; /* written by the driver before driver_done, read after */
    char error[1024];
};

enum { RT_CREATED, RT_PREPARED, RT_STARTED, RT_JOINED };

struct cb_runtime {
    cb_runtime_opts opts;
    const cb_spec *spec;
    cb_host host;
    cb_pipe *pipes;
    size_t n_pipes;
    int state;                   /* RT_*: controlling thread only */
    pthread_mutex_t gate_mu;     /* start gate: protects gate_open */
    pthread_cond_t gate_cv;
    int gate_open;
    int64_t t0_ns;
    int64_t drain_ns, abandon_ns;
    _Atomic int stop_requested;  /* cb_runtime_stop was called (any mode) */
    _Atomic int64_t stop_at_ns;  /* when it was first called (0: never) */
    pthread_mutex_t cancel_mu;   /* with cancel_cv: host->wait_until sleepers; protects nothing */
    pthread_cond_t cancel_cv;    /* broadcast when any pipeline aborts */
    pthread_mutex_t err_mu;      /* protects res.errors */
    cb_run_result res;           /* filled as the run goes; copied out by join */
    int64_t *prepare_ns;         /* flat per stage */
};

/* sched.c, for runtime.c */
void cb__worker_fini(cb_worker *w);
void cb__add_error(cb_runtime *rt, const char *msg);
void cb__wake_driver(cb_pipe *p);
void cb__abort(cb_pipe *p);
int cb__host_emit(cb_run_ctx *ctx, int output, const cb_query *q);
int cb__host_n_outputs(const cb_run_ctx *ctx);
int cb__host_report(cb_run_ctx *ctx, int metric, double value);
int cb__host_device_time(cb_run_ctx *ctx, int64_t device_ns);
int cb__host_cancelled(const cb_run_ctx *ctx);
int cb__host_wait_until(cb_run_ctx *ctx, int64_t deadline_ns);
cb_held *cb__host_hold(cb_run_ctx *ctx);
int cb__host_complete(cb_run_ctx *ctx, cb_held *h, int rc, const char *msg);
int cb__host_report_held(cb_run_ctx *ctx, cb_held *h, int metric, double value);
int64_t cb__host_arrival_ns(const cb_run_ctx *ctx);
int cb__host_wait_step(cb_run_ctx *ctx, int64_t deadline_ns);
cb_waker *cb__host_waker(cb_run_ctx *ctx);
void cb__host_wake(cb_waker *w);
void *cb__pool_main(void *arg);
void *cb__driver_main(void *arg);

#endif
