/* collocate/launch.h - runs one phase of a benchmark (all pipelines collocated, or one pipeline
 * alone for its isolated baseline) in the benchmark's collocation mode, and gathers its records.
 *
 * Modes:
 *   in_process  (threads) the pipelines run in this process with cb_run; one start gate.
 *   children    (processes, mps, mig) one child per pipeline: this executable re-executed as
 *               `colobench run CONFIG [--set ...] --child I --child-fd FD -o DIR/pipelines/NAME`,
 *               which pins itself to its cpus (the whole process, before it prepares: the
 *               spec is loaded unpinned, so the other pipelines' cpus validate), with its MPS or
 *               MIG environment, its own process
 *               group (a terminal's Ctrl-C reaches the parent, which forwards one SIGTERM), and
 *               PR_SET_PDEATHSIG so it stops if the parent dies. Children prepare (serially or in
 *               parallel), then wait at the start barrier (barrier.h); the parent releases them
 *               together with one common t0. Each child streams its records as CSV and as raw
 *               64-byte records (events.bin, queries.bin, metrics.bin; splits.bin holds its
 *               dataset's splits); the parent reads the raw records back (whole records up to
 *               the last flush, so a crashed child keeps what it recorded), and writes the
 *               phase's events.csv/queries.csv/stage_metrics.csv as the children's rows in
 *               pipeline order. A child that crashes is reported with its exit status or
 *               signal; the others finish and keep their results.
 * Monitors (when enabled) run in this process for the whole phase, watching this process
 * (threads) or every child, and stream DIR/metrics.csv.
 *
 * Thread-safety: one controlling thread. Ownership: opts are borrowed for the call; the result
 * owns its records, monitor and strings until cb_launch_result_fini.
 */
#ifndef CB_COLLOCATE_LAUNCH_H
#define CB_COLLOCATE_LAUNCH_H

#include <stdbool.h>
#include <stdint.h>

#include "analysis/summary.h"
#include "collocate/mps.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "monitor/monitor.h"

typedef struct cb_launch_opts {
    const cb_spec *spec;            /* the whole benchmark */
    int only;                       /* -1: every pipeline; i: pipeline i alone (baseline) */
    const char *out_dir;            /* must exist */
    bool in_process;                /* threads mode */
    /* Children: what they load (the same file and overrides as this process). */
    const char *exe;                /* this executable (/proc/self/exe) */
    const char *config;
    const char *const *sets;
    size_t n_sets;
    cb_mps *mps;                    /* daemon for pipelines in mode mps, else NULL */
    const char *const *mig_uuids;   /* per spec pipeline: MIG UUID for mode mig, else NULL */
    /* Common. */
    const cb_logger *log;
    int progress;                   /* 0 none, 1 plain lines, 2 live line */
    FILE *progress_out;             /* NULL = stderr */
    bool handle_signals;
    /* Once every pipeline is ready, before the release (the CLI writes config.yaml, env.json). */
    int (*on_start)(void *arg, int64_t wall_start_ns, cb_error *err);
    void *on_start_arg;
    bool monitor;                   /* run the monitors (spec->monitors) */
    const char *nvml_library;       /* overrides spec->monitors.nvml_library when set */
} cb_launch_opts;

#define CB_LAUNCH_MAX_ERRORS 64

typedef struct cb_launch_result {
    cb_spec view;                   /* the phase's pipelines: the spec, or a one-pipeline view */
    cb_run_result run;              /* in-process phases: the runtime's result */
    cb_pipeline_record *records;    /* per phase pipeline */
    cb_query_event **child_queries; /* children: owned record arrays per pipeline */
    cb_stage_event **child_events;
    cb_metric_event **child_metrics;
    cb_splits *child_splits;        /* children: each one's dataset splits (zeroed when none) */
    int64_t t0_ns, end_ns, wall_start_ns;
    bool interrupted, timed_out;
    size_t n_errors;
    char errors[CB_LAUNCH_MAX_ERRORS][1024];
    const char *error_ptrs[CB_LAUNCH_MAX_ERRORS];
    int64_t *prepare_ns;            /* flat per stage (children: as reported at the barrier) */
    int *pids;                      /* per phase pipeline */
    char (*status)[96];             /* per phase pipeline: "exited 0", "killed by signal 9 ..." */
    const char **status_ptrs;       /* NULL in process */
    int64_t barrier_skew_ns, barrier_max_delay_ns; /* -1 in process */
    cb_monitor *monitor;            /* stopped; NULL when monitors are off */
} cb_launch_result;

/* Runs the phase. CB_OK when it ran (errors, crashes and interrupts are in the result);
 * another code (with err) when it could not start: bad stage config (CB_ECONFIG), a child that
 * died before the start, an interrupt before the start. Finalize the result in every case. */
int cb_launch(const cb_launch_opts *opts, cb_launch_result *res, cb_error *err);
/* Summary input over the phase's records (for summary.json, interference, the trace). */
void cb_launch_summary_input(const cb_launch_result *res, cb_summary_input *in);
void cb_launch_result_fini(cb_launch_result *res);

/* Child side, used by the CLI for `--child`: the on_ready hook (arg = the cb_launch_child). */
typedef struct cb_launch_child {
    int fd;
    const cb_spec *spec;            /* the child's one-pipeline view */
    const cb_run_result *res;       /* its prepare_ns is filled by the time on_ready runs */
} cb_launch_child;
int cb_launch_child_on_ready(void *arg, int64_t *t0_ns, cb_error *err);

#endif
