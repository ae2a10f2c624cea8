/* collocate/mps.h - CUDA MPS control daemon: use the one that runs, or start a private one and
 * stop exactly what was started.
 *
 * cb_mps_acquire looks for a running control daemon on the pipe directory the environment names
 * ($CUDA_MPS_PIPE_DIRECTORY, else /tmp/nvidia-mps): one is running when its `control` socket
 * accepts a connection. If so, it is used and never stopped. Otherwise a private daemon is
 * started with `nvidia-cuda-mps-control -d` (found on PATH) with CUDA_MPS_PIPE_DIRECTORY and
 * CUDA_MPS_LOG_DIRECTORY set to fresh directories under $TMPDIR (colobench-mps-XXXXXX/{pipe,log});
 * acquire returns once its control socket accepts connections (or fails after a timeout with the
 * daemon's log tail in the message). cb_mps_release sends `quit` to a daemon it started (through
 * `nvidia-cuda-mps-control` with the same environment), waits for it to exit, and removes the
 * private directories; for a daemon it did not start it does nothing. Release is idempotent and
 * is called on every exit path of the launcher (normal end, a child's crash, SIGINT/SIGTERM).
 *
 * A private daemon outlives a colobench that is SIGKILLed or crashes (it daemonizes, so it cannot
 * be given PR_SET_PDEATHSIG), hence a watchdog: with a private daemon, acquire also forks a small
 * process, "cb-mps-watch" (cb_mps_watchdog_pid), that waits on a socket only this process holds
 * (close-on-exec, so children that exec do not keep it). Release tells it to exit ('r') after its
 * own clean-up and reaps it. If the socket reaches EOF without that, the parent died holding the
 * daemon: the watchdog runs release's sequence itself (quit with the same binary and environment,
 * bounded waits, SIGTERM then SIGKILL of a daemon still up), removes the private directories and
 * exits. It sits in its own process group and ignores SIGINT/SIGTERM/SIGHUP/SIGQUIT (and the
 * job-control stops), so a Ctrl-C or a group kill that ends colobench does not end the clean-up;
 * SIGKILL to its pid does. See mps.c and docs/internals/mps.md.
 *
 * Children join the daemon through the environment: cb_mps_child_env gives the variables to set
 * in a child (pipe and log directories, plus the per-pipeline limits).
 *
 * Thread-safety: one controlling thread. Ownership: the handle owns its directories' paths.
 */
#ifndef CB_COLLOCATE_MPS_H
#define CB_COLLOCATE_MPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "colobench/error.h"
#include "core/log.h"

typedef struct cb_mps cb_mps;

typedef struct cb_mps_opts {
    const char *control_binary;  /* NULL = "nvidia-cuda-mps-control" looked up on PATH */
    int64_t start_timeout_ns;    /* 0 = 10 s */
    const cb_logger *log;
} cb_mps_opts;
#define CB_MPS_OPTS_DEFAULT {NULL, 0, NULL}

/* Errors: CB_ENOENT when the control binary is not found ("mps: nvidia-cuda-mps-control not
 * found on PATH: CUDA MPS needs the NVIDIA driver's MPS tools"), CB_EIO when it fails to start. */
int cb_mps_acquire(const cb_mps_opts *opts, cb_mps **out, cb_error *err);

bool cb_mps_started_here(const cb_mps *m);   /* true: a private daemon this process started */
const char *cb_mps_pipe_dir(const cb_mps *m);
const char *cb_mps_log_dir(const cb_mps *m);
/* The watchdog's pid while a private daemon is held; 0 for a daemon not started here. */
pid_t cb_mps_watchdog_pid(const cb_mps *m);

/* Environment for a child joining this daemon, as "NAME=VALUE" strings written into buf
 * (NUL-separated, at most max_vars entries, pointers stored in vars). active_thread_percentage
 * <= 0 and mem_limit_bytes <= 0 leave those limits unset; device_ordinal is the CUDA ordinal the
 * memory limit applies to. Returns the number of variables, or -1 if buf is too small. */
int cb_mps_child_env(const cb_mps *m, int active_thread_percentage, int64_t mem_limit_bytes,
                     int device_ordinal, char *buf, size_t buf_size, const char **vars,
                     size_t max_vars);

/* Stops a daemon started here (quit, wait, remove directories) and frees the handle. NULL is a
 * no-op. Returns CB_OK or the first error (the handle is freed in every case). */
int cb_mps_release(cb_mps *m, cb_error *err);

#endif
