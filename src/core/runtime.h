/* core/runtime.h - runs a validated benchmark: stages on worker threads, bounded queues,
 * routing, load generators and termination; every stage run, query and metric report goes into
 * the rings of a record sink (core/ring.h).
 *
 * One cb_runtime is the context object of a run: it owns every thread, queue and stage instance,
 * and there is no other mutable state, so two runs (two tests, two collocated benchmarks) can
 * share a process. The runtime reads no signals and writes no file: whoever runs it (the
 * experiment layer) watches signals and calls cb_runtime_stop. See docs/internals/runtime.md.
 *
 * Lifecycle (libuv-like):
 *   cb_runtime_create   every stage instance (ops->create): configuration errors surface here,
 *                       before anything is written; dataset splits and open-loop schedules
 *   cb_runtime_prepare  ops->prepare of every instance (untimed, its duration recorded); it
 *                       returns CB_ESTOPPED early once cb_runtime_stop has been called
 *   cb_runtime_start    rings from the record sink (NULL: nothing is recorded), threads and
 *                       pinning, then opts.on_ready (the start barrier of a collocated run),
 *                       then the start gate opens: the load begins
 *   cb_runtime_wait     until every pipeline has finished, or a timeout
 *   cb_runtime_stop     any thread, any time, repeatedly: DRAIN stops issuing and gives the
 *                       queries in flight drain_timeout to finish before they are cancelled;
 *                       CANCEL cancels them at once (queued work is dropped, cancellable stage
 *                       runs -- host->wait_until, host->cancelled -- return early)
 *   cb_runtime_join     joins the threads and calls ops->finish; a pipeline whose threads are
 *                       still inside a stage run abandon_timeout after its queries were
 *                       cancelled is abandoned: its threads are left running and the result
 *                       says so (the caller writes what was recorded and exits)
 *   cb_runtime_destroy  releases everything (what abandoned threads may still touch is leaked
 *                       on purpose)
 * A pipeline ends when its load generator has issued everything (max_queries, the schedule, the
 * dataset's epochs) and every query has ended, or at its timeout: from the common start, the
 * load stops at `timeout` whatever is in flight, and queries still in flight get drain_timeout
 * to finish before they are cancelled.
 *
 * Thread-safety: create/prepare/start/wait/join/destroy from one controlling thread;
 * cb_runtime_stop and cb_runtime_progress from any thread.
 */
#ifndef CB_CORE_RUNTIME_H
#define CB_CORE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"
#include "core/ring.h"
#include "core/spec.h"

typedef struct cb_runtime cb_runtime;

typedef enum cb_stop_mode {
    CB_STOP_DRAIN = 1,   /* stop issuing; in-flight queries finish (bounded by drain_timeout) */
    CB_STOP_CANCEL = 2,  /* stop issuing and cancel everything in flight now */
} cb_stop_mode;

typedef struct cb_runtime_opts {
    const cb_spec *spec;
    const cb_logger *log;        /* NULL = stderr at WARN */
    int64_t drain_timeout_ns;    /* after a stop or timeout: in-flight queries may finish this
                                    long before they are cancelled; 0 = 2 s */
    int64_t abandon_timeout_ns;  /* after cancellation: how long a stage run may take to return
                                    before its thread is abandoned; 0 = 2 s */
    /* Called once every thread exists, just before the load starts: the start barrier of a
     * collocated run. It may block, and may set *t0_ns (proposed: now) to the common release
     * time shared by every process, which becomes the origin of every recorded time. A
     * negative return stops the run before any query. NULL = none. */
    int (*on_ready)(void *arg, int64_t *t0_ns, cb_error *err);
    void *on_ready_arg;
} cb_runtime_opts;

#define CB_RUNTIME_OPTS_DEFAULT {NULL, NULL, 0, 0, NULL, NULL}

#define CB_RUN_MAX_ERRORS 16

typedef struct cb_run_result {
    int64_t t0_ns, end_ns, wall_start_ns;
    bool stopped;                /* cb_runtime_stop was called */
    bool timed_out;              /* a pipeline reached its timeout */
    bool abandoned;              /* some threads were still inside a stage run and were left */
    size_t n_errors;
    char errors[CB_RUN_MAX_ERRORS][1024];
    const char *error_ptrs[CB_RUN_MAX_ERRORS];
    int64_t *prepare_ns;         /* per pipeline, per stage: summed over workers; flat array
                                    owned by the result (cb_run_result_fini) */
} cb_run_result;

void cb_run_result_fini(cb_run_result *res);

int cb_runtime_create(const cb_runtime_opts *opts, cb_runtime **out, cb_error *err);
int cb_runtime_prepare(cb_runtime *rt, cb_error *err);
int cb_runtime_start(cb_runtime *rt, const cb_record_sink *sink, cb_error *err);
/* true when every pipeline has ended (or was given up on: see join), false after timeout_ns. */
bool cb_runtime_wait(cb_runtime *rt, int64_t timeout_ns);
void cb_runtime_stop(cb_runtime *rt, cb_stop_mode mode);
/* Fills res (errors, times, flags) and joins. CB_OK, or CB_ESTOPPED when threads were
 * abandoned (res->abandoned). */
int cb_runtime_join(cb_runtime *rt, cb_run_result *res);
void cb_runtime_destroy(cb_runtime *rt); /* NULL is a no-op */

/* prepare() durations per stage (flat, pipeline then stage order), once prepared; valid until
 * join hands them to the result. */
const int64_t *cb_runtime_prepare_ns(const cb_runtime *rt);

/* The run's time origin (CLOCK_MONOTONIC) and its wall-clock time, once started. */
void cb_runtime_start_times(const cb_runtime *rt, int64_t *t0_ns, int64_t *wall_start_ns);

/* Queries issued so far by pipeline i's load generator (any thread). */
uint64_t cb_runtime_issued(const cb_runtime *rt, size_t pipeline);

/* What a pipeline's load generator (driver thread) did, from the start gate to its end. */
typedef struct cb_driver_stats {
    int64_t cpu_ns;              /* CPU time of the driver thread (inline stage runs included) */
    int64_t spin_ns;             /* time spun to reach arrivals (open loop) */
    int64_t max_spin_ns;         /* the longest single spin */
    int64_t spin_cap_ns;         /* a spin stops after this long */
    int64_t margin_ns;           /* the final wake-up margin (sleep to deadline - margin, spin) */
    uint64_t spins, sleeps;      /* spins and timed sleeps to a deadline's wake point */
    uint64_t inline_runs;        /* stage runs an open-loop driver did itself (no hand-off) */
} cb_driver_stats;

/* Pipeline i's driver figures once joined: CB_OK, or CB_EINVAL (no such pipeline, not joined,
 * or its threads were abandoned). */
int cb_runtime_driver_stats(const cb_runtime *rt, size_t pipeline, cb_driver_stats *out);

/* Convenience for tests and benchmarks: create, prepare, start (records into sink, which may be
 * NULL), wait, join, destroy. CB_OK when the run happened (stage errors are in res), else the
 * error that stopped it from starting (res is filled either way; cb_run_result_fini it). */
int cb_run(const cb_runtime_opts *opts, const cb_record_sink *sink, cb_run_result *res,
           cb_error *err);

#endif
