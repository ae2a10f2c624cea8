/* experiment/phase.h - one phase of a benchmark (every pipeline collocated, or one pipeline alone
 * for its isolated baseline) in its collocation mode, into one directory of the run.
 *
 * Modes:
 *   in process  (threads) the pipelines run in this process on one cb_runtime; one recorder
 *               writes DIR/{events,queries,stage_metrics}.csv and the raw DIR/{events,queries,metrics}.bin files.
 *   children    (processes, mps, mig) one child process per pipeline (experiment/child.h) in
 *               DIR/pipelines/NAME, pinned to its cpus, with its MPS or MIG environment; children
 *               prepare (serially or in parallel), meet at the start barrier and are released
 *               together with one common t0. Each child streams its own records; the parent
 *               then writes DIR's events.csv/queries.csv/stage_metrics.csv as the children's rows
 *               in pipeline order (a child's trailing partial row, from a crash, is left out)
 *               and reads the children's raw files for the analysis. A child that crashes is
 *               reported with its exit status or signal; the others finish and keep their
 *               results.
 * Monitors (when enabled) run in this process for the whole phase, watching this process
 * (threads) or every child, and stream DIR/metrics.csv.
 * The phase's records are never held in memory: cb_phase.records name the raw files.
 *
 * Servers (experiment/servers.h): checked in every supervision slice; a server that ends by
 * itself stops the load at once (in process: cancel; children: SIGTERM, as a first signal
 * would) and the phase ends with the server's error; it is not marked interrupted.
 *
 * Stopping: the experiment's signal thread calls cb_phase_ctl_signal: the first SIGINT/SIGTERM
 * stops the load and lets in-flight queries drain, the second cancels them (children: SIGTERM
 * forwarded each time, SIGKILL from the third on), the third gives up on stage runs that do not
 * return. Before the start (preparing, at the barrier) any signal ends the phase.
 *
 * Thread-safety: one controlling thread; cb_phase_ctl_signal from the signal thread.
 * Ownership: opts are borrowed for the call; the result owns its strings and arrays until
 * cb_phase_fini.
 */
#ifndef CB_EXPERIMENT_PHASE_H
#define CB_EXPERIMENT_PHASE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "analysis/summary.h"
#include "collocate/mps.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "experiment/bench.h"
#include "experiment/child.h"
#include "experiment/servers.h"
#include "monitor/monitor.h"
#include "record/records.h"

/* What the signal thread may act on: the phase that runs now. */
typedef struct cb_phase_ctl {
    pthread_mutex_t mu;          /* protects everything below */
    int signals;                 /* SIGINT/SIGTERM so far */
    bool stopped;                /* a stop was requested: no further phase starts */
    bool abandoned;              /* a phase left threads running inside a stage run: nothing
                                    they may read (the benchmark) may be freed before exit */
    cb_runtime *rt;              /* the in-process phase's runtime, or NULL */
    pid_t *pids;                 /* the children of a phase, or NULL */
    size_t n_pids;
} cb_phase_ctl;

void cb_phase_ctl_init(cb_phase_ctl *c);
void cb_phase_ctl_fini(cb_phase_ctl *c);
/* The signal thread's callback (signals.h's cb_signal_fn, arg = the ctl). */
void cb_phase_ctl_signal(void *arg, int signo, int count);
bool cb_phase_ctl_stopped(cb_phase_ctl *c);

typedef struct cb_phase_opts {
    const cb_bench *bench;          /* the whole benchmark (children receive its text) */
    int only;                       /* -1: every pipeline; i: pipeline i alone (baseline) */
    const char *dir;                /* the phase directory; must exist, inside the locked
                                       output directory */
    bool in_process;                /* threads mode */
    const char *exe;                /* this executable, for children */
    cb_mps *mps;                    /* daemon for pipelines in mode mps, else NULL */
    const char *const *mig_uuids;   /* per spec pipeline: MIG UUID for mode mig, else NULL */
    const cb_logger *log;
    int progress;                   /* 0 none, 1 plain lines, 2 live line */
    FILE *progress_out;             /* NULL = stderr */
    cb_phase_ctl *ctl;              /* NULL: not stoppable by signals */
    bool monitor;                   /* run the monitors (spec->monitors) */
    const char *nvml_library;       /* overrides spec->monitors.nvml_library when set */
    int64_t drain_timeout_ns, abandon_timeout_ns; /* 0 = the runtime's defaults */
    cb_servers *servers;            /* the benchmark's running servers, or NULL: the monitors
                                       watch them, and one that ends stops the phase as a
                                       failure (not an interrupt; results so far are kept) */
} cb_phase_opts;

#define CB_PHASE_MAX_ERRORS 64

typedef struct cb_phase {
    cb_spec view;                   /* the phase's pipelines: the spec, or a one-pipeline view */
    cb_pipeline_record *records;    /* per phase pipeline: the raw files */
    char (*paths)[3][CB_PATH_MAX];  /* storage of those paths */
    cb_splits *splits;              /* per pipeline (zeroed when none) */
    int64_t t0_ns, end_ns, wall_start_ns;
    bool started;                   /* the load started (records may exist) */
    bool interrupted, timed_out, abandoned;
    size_t n_errors;
    char errors[CB_PHASE_MAX_ERRORS][1024];
    const char *error_ptrs[CB_PHASE_MAX_ERRORS];
    int64_t *prepare_ns;            /* flat per stage */
    int *pids;                      /* per phase pipeline */
    char (*status)[96];             /* per phase pipeline: "exited 0", "killed by signal 9 ..." */
    const char **status_ptrs;       /* NULL in process */
    int64_t barrier_skew_ns, barrier_max_delay_ns; /* -1 in process */
    int64_t record_stall_ns;        /* time the run's threads waited for the record writer */
    cb_monitor *monitor;            /* stopped; NULL when monitors are off */
} cb_phase;

/* Runs the phase. CB_OK when it ran (errors, crashes and interrupts are in the result);
 * another code (with err) when it could not start: a bad stage config (CB_ECONFIG), a child
 * that died before the start, a stop before the start (CB_ESTOPPED). Finalize the result in
 * every case. */
int cb_phase_run(const cb_phase_opts *opts, cb_phase *ph, cb_error *err);
/* The summary input over the phase's records. */
void cb_phase_summary_input(const cb_phase *ph, cb_summary_input *in);
void cb_phase_fini(cb_phase *ph);
void cb_phase_add_error(cb_phase *ph, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Points ph->records at the raw files of a phase directory as a phase leaves them (threads: one
 * set in dir; children: dir/pipelines/NAME), and reads the splits. Used by cb_phase_run and by
 * `colobench summarize`. ph->view must be set. */
int cb_phase_point_records(cb_phase *ph, const char *dir, bool in_process, cb_error *err);
/* Writes dir's events.csv, queries.csv and stage_metrics.csv from the children's (dropping a
 * trailing partial row of each). */
int cb_phase_merge_csv(const cb_spec *view, const char *dir, cb_error *err);
/* Allocates ph's per-pipeline arrays for view (also used by summarize). */
int cb_phase_alloc(cb_phase *ph, const cb_spec *view, cb_error *err);

#endif
