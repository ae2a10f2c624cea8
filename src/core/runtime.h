/* core/runtime.h - runs a validated benchmark: stages on worker threads, bounded queues,
 * routing, load generators, termination, and recording of every stage run and query.
 *
 * One cb_runtime is the context object of a run: it owns every thread, queue and stage instance,
 * and there is no other mutable state, so two runs (two tests, two collocated benchmarks) can
 * share a process. See docs/internals/runtime.md for the scheduling design.
 */
#ifndef CB_CORE_RUNTIME_H
#define CB_CORE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/summary.h"
#include "core/log.h"
#include "core/spec.h"
#include "record/recorder.h"

typedef struct cb_runtime_opts {
    const cb_spec *spec;
    const char *out_dir;        /* events.csv and queries.csv go here; NULL = memory only */
    const cb_logger *log;       /* NULL = stderr at WARN */
    int progress;               /* 0 none, 1 plain lines every few seconds, 2 live terminal line */
    FILE *progress_out;         /* NULL = stderr */
    bool handle_signals;        /* SIGINT/SIGTERM stop the load, drain, flush (CLI only) */
    int64_t drain_timeout_ns;   /* after a stop: how long in-flight queries may finish; 0 = 2 s */
    int64_t flush_period_ns;    /* recorder flush period; 0 = 50 ms */
    /* Called once every stage is created and prepared, just before the load starts (the CLI
     * writes config.yaml and env.json there, so a configuration error leaves nothing behind).
     * A negative return stops the run with that status. NULL = none. */
    int (*on_start)(void *arg, int64_t wall_start_ns, cb_error *err);
    void *on_start_arg;
    /* Called once every thread exists, just before the load starts: the start barrier of a
     * collocated run. It may block, and may set *t0_ns (proposed: now) to the common release
     * time shared by every process, which becomes the origin of every recorded time. A
     * negative return stops the run before any query. NULL = none. */
    int (*on_ready)(void *arg, int64_t *t0_ns, cb_error *err);
    void *on_ready_arg;
    bool raw_records;           /* also write events.bin/queries.bin (see recorder.h) */
} cb_runtime_opts;

#define CB_RUNTIME_OPTS_DEFAULT {NULL, NULL, NULL, 0, NULL, false, 0, 0, NULL, NULL, NULL, NULL, false}

#define CB_RUN_MAX_ERRORS 16

typedef struct cb_run_result {
    cb_recorder *recorder;      /* owned; records for the summary (stopped) */
    int64_t t0_ns, end_ns, wall_start_ns;
    bool interrupted, timed_out;
    size_t n_errors;
    char errors[CB_RUN_MAX_ERRORS][1024];
    const char *error_ptrs[CB_RUN_MAX_ERRORS];
    int64_t *prepare_ns;        /* per pipeline, per stage: summed over workers; flat array */
} cb_run_result;

/* Runs the benchmark to completion. Returns CB_OK when the run happened (even if stages failed:
 * then res->n_errors > 0), CB_ECONFIG when a stage rejected its configuration at create (with
 * the stage's position), or another code when the run could not start. res must be finalized
 * with cb_run_result_fini in every case. */
int cb_run(const cb_runtime_opts *opts, cb_run_result *res, cb_error *err);
void cb_run_result_fini(cb_run_result *res);

/* Builds the summary input over the result's records (pipelines is caller storage with
 * spec->n_pipelines entries). */
void cb_run_summary_input(const cb_run_result *res, const cb_spec *spec,
                          cb_pipeline_record *pipelines, cb_summary_input *in);

#endif
