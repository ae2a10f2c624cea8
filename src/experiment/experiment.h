/* experiment/experiment.h - one `colobench run` end to end: the layer that owns a run.
 *
 * Phases, in order: the GPU devices the benchmark names are checked (NVML: cuda:N exists, MIG
 * instances exist); the output directory is opened, locked and cleared of an earlier run's
 * files (experiment/outdir.h); config.yaml (the resolved benchmark) and env.json are written
 * first, so every run directory has them whatever happens later; a CUDA MPS daemon is acquired
 * when a pipeline or a server needs one; the benchmark's servers start and are probed until
 * ready (experiment/servers.h; only with allow_servers); the isolated baselines run (each
 * pipeline alone, into baseline/NAME); the collocated phase runs (a server that dies meanwhile
 * fails it); the servers stop (on every path out of the run); summary.json (with the
 * collocation figures, the monitors and the servers) and trace.json are written; the MPS daemon
 * is released. A benchmark with `sweep:`
 * runs every point as such a run into DIR/MODE-xN and writes DIR/sweep.csv and DIR/sweep.json.
 *
 * Whatever stops a run (SIGINT/SIGTERM, a stage error, a full disk, a child that crashes), the
 * directory always ends with a top-level summary.json that says what happened: the phase that
 * ran last, whether it was interrupted, the errors. A parent killed with SIGKILL cannot write
 * one: `colobench summarize DIR` (cb_experiment_summarize) rebuilds the merged CSVs and the
 * summary from what the children left.
 *
 * Signals are read in one place, the cb_sigwatch the caller started (experiment/signals.h);
 * the experiment tells it what a signal means in each phase (cb_phase_ctl).
 *
 * Thread-safety: one controlling thread. Ownership: opts are borrowed for the call.
 */
#ifndef CB_EXPERIMENT_EXPERIMENT_H
#define CB_EXPERIMENT_EXPERIMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "colobench/error.h"
#include "experiment/bench.h"
#include "experiment/signals.h"

typedef struct cb_experiment_opts {
    const cb_bench *bench;          /* the benchmark as loaded (its text goes to children) */
    const char *out_dir;            /* NULL: out/NAME */
    const char *exe;                /* this executable, for child processes */
    int argc;                       /* the command line, for env.json */
    char **argv;
    FILE *out;                      /* the end-of-run tables; NULL: none */
    FILE *msg;                      /* messages and progress; NULL: stderr */
    int progress;                   /* 0 none, 1 plain lines, 2 live terminal line */
    bool quiet;                     /* no informational messages (errors are still printed) */
    cb_sigwatch *signals;           /* started by the caller; NULL: signals not watched */
    int64_t drain_timeout_ns;       /* 0 = the runtime's default (2 s) */
    int64_t abandon_timeout_ns;     /* 0 = the runtime's default (2 s) */
    /* Out: set when a stage run never returned and its threads were left running. They may
     * still read the benchmark: the caller must not free it, and should exit promptly (with
     * _exit, so no destructor runs under them). NULL: not reported. */
    bool *threads_abandoned;
} cb_experiment_opts;

/* Runs the benchmark (or its sweep). Returns CB_OK when everything ran and every result was
 * written, CB_ECONFIG for a configuration error found before anything ran (devices, the output
 * directory in use), or another negative code when the run failed, was interrupted or could
 * not write its results (messages went to opts->msg, results so far are in the directory). */
int cb_experiment_run(const cb_experiment_opts *opts);

/* `validate`: checks the benchmark's GPU devices (cuda:N, MIG instances) as run does, and says
 * the first problem on msg as a warning ("colobench: warning: FILE:LINE:COL: KEY: ..."), so a
 * config written on one machine for a GPU host still validates. CB_OK, or the problem's code. */
int cb_experiment_check_devices(const cb_spec *spec, FILE *msg);

/* `run --child-fd FD`: one pipeline of a collocated phase, in the process the parent started
 * for it (experiment/child.h). Returns the process's exit status. */
int cb_experiment_child(int fd, FILE *msg);

/* `colobench summarize DIR`: rebuilds DIR's merged CSVs (processes modes) and summary.json (with
 * the collocation figures when DIR/baseline/ has the baselines) from the raw records and state
 * files the run left, e.g. after its parent was killed. DIR/config.yaml is the benchmark. */
int cb_experiment_summarize(const char *dir, bool allow_plugins, FILE *out, FILE *msg);

#endif
