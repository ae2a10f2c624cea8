/* experiment/watch.h - `colobench monitor`: one command run under the resource monitors, end to
 * end: the layer that owns the output directory, the command's process and its signals.
 *
 * In order: the output directory is opened, locked and cleared of an earlier run's files
 * (experiment/outdir.h; a directory another colobench run or monitor holds is refused); the
 * monitor starts (monitor/monitor.h: it creates DIR/metrics.csv without following a symbolic
 * link and streams it); t0 is taken and COMMAND is started with posix_spawnp (PATH search,
 * default SIGINT/SIGTERM dispositions and an empty signal mask in the child, whatever the
 * caller blocked); its pid is watched (process and perf sources); SIGINT/SIGTERM that reach
 * colobench are forwarded to it through the caller's cb_sigwatch, every time, so its exit ends
 * the watch normally (a signal that arrived before the spawn is forwarded right after it); once
 * it has exited the monitor stops and DIR/summary.json is written atomically, never through a
 * symbolic link (cb_outdir_write_file):
 *   {"command": [...], "exit_status": N | "signal": "SIGNAME", "duration_ns", "monitors": {...}}
 *
 * Exit status (*exit_status, what `colobench monitor` ends with): the command's own; 128+N when
 * it was killed by signal N; 127 it cannot be found, 126 it cannot be run; 2 the output
 * directory cannot be used (cannot be created, or in use by another colobench run); 1 the
 * monitor failed before the command ran. A failure after it ran (metrics.csv or summary.json
 * could not be written) turns a command's 0 into 1 and leaves any other status as it was.
 *
 * Thread-safety: one controlling thread; the signal thread only calls the watch's forwarding
 * function, which reads the child's pid under the watch's own mutex (no global state: two
 * watches may run in one process, each with its own cb_sigwatch or none). Ownership: opts and
 * the strings they point to are borrowed for the call; everything is released on return.
 */
#ifndef CB_EXPERIMENT_WATCH_H
#define CB_EXPERIMENT_WATCH_H

#include <stdint.h>
#include <stdio.h>

#include "experiment/signals.h"

#define CB_WATCH_DEFAULT_DIR "out/monitor"

typedef struct cb_watch_opts {
    int64_t period_ns;          /* sampling period; 0 = the monitor's default (100 ms) */
    unsigned sources;           /* CB_MON_* bits (core/monitor_sources.h) */
    const char *out_dir;        /* NULL: CB_WATCH_DEFAULT_DIR */
    char *const *argv;          /* the command, NULL-terminated; argv[0] is searched in PATH */
    const char *nvml_library;   /* NULL: libnvidia-ml.so.1 */
    FILE *msg;                  /* messages ("colobench: monitor: ..."); NULL: stderr */
    cb_sigwatch *signals;       /* started by the caller; NULL: signals not forwarded */
} cb_watch_opts;
#define CB_WATCH_OPTS_DEFAULT {0, 0, NULL, NULL, NULL, NULL, NULL}

/* Runs the command under the monitors (see above) and sets *exit_status. Returns CB_OK when the
 * command ran and every result was written; otherwise the first failure (messages with their
 * cause went to opts->msg): CB_ECONFIG the output directory (*exit_status 2), CB_ENOENT the
 * command was not found (127), CB_EUNSUPPORTED it could not be run (126), CB_EINVAL no command,
 * CB_EIO/CB_ENOMEM/... the monitor or a write failed. */
int cb_watch_run(const cb_watch_opts *opts, int *exit_status);

#endif
