/* experiment/watch.c - `colobench monitor`: one command under the monitors (see watch.h).
 *
 * Design: the output directory is locked before anything is written into it and stays locked
 * until summary.json is in place. The monitor starts before the command, so the command's whole
 * life is covered; t0 is the moment before the spawn. posix_spawnp starts the command: safe in
 * a process that already has threads (the sampler, the signal thread), and it reports a failed
 * exec as an error code (no pipe dance). The caller blocked SIGINT/SIGTERM in every thread, so
 * the spawn attributes give the child an empty mask and default dispositions.
 * Forwarding: the signal thread calls forward() with the watch's child record, which holds the
 * pid under its own mutex. The mutex is held across the spawn, so a signal is either recorded
 * as pending before it (and sent right after) or sent to the new pid. Once the command has
 * exited (waitid with WNOWAIT: still a zombie, so its pid cannot have been reused) the pid is
 * cleared under the mutex, and only then is it reaped: a signal is never sent to a recycled
 * pid.
 * Thread-safety: one controlling thread, plus the signal thread in forward() (lock: the
 * sigwatch's own mutex, then child.mu; this file never takes them in the other order). The
 * monitor's sampler is internal to monitor/. Ownership: see watch.h.
 */
#include "experiment/watch.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analysis/json.h"
#include "core/clock.h"
#include "core/log.h"
#include "experiment/outdir.h"
#include "monitor/monitor.h"

extern char **environ;

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_NOT_EXECUTABLE 126
#define EXIT_NOT_FOUND 127

/* The command, as far as the signal thread may act on it. */
typedef struct watch_child {
    pthread_mutex_t mu; /* protects everything below */
    pid_t pid;          /* the command while it may be signalled (spawned, not yet exited); else 0 */
    int pending;        /* a signal that arrived before the spawn, sent right after it; 0 none */
    bool ended;         /* the command exited: later signals are dropped */
} watch_child;

/* The signal thread's callback (signals.h's cb_signal_fn): every SIGINT/SIGTERM is passed on. */
static void forward(void *arg, int signo, int count) {
    watch_child *c = arg;
    (void)count;
    pthread_mutex_lock(&c->mu);
    if (c->pid > 0) (void)kill(c->pid, signo); /* it may have just exited: nothing to report */
    else if (!c->ended) c->pending = signo;
    pthread_mutex_unlock(&c->mu);
}

static void say(FILE *msg, const cb_error *e) {
    char buf[2048];
    cb_error_format(e, buf, sizeof buf); /* escapes control characters (names from argv) */
    fprintf(msg, "colobench: %s\n", buf);
}

typedef struct summary_ctx {
    char *const *argv;
    bool waited;         /* false: the command's end could not be observed */
    int status;          /* its wait status when waited */
    int64_t duration_ns;
    const cb_monitor *m;
    const cb_monitor_window *window;
} summary_ctx;

static int write_summary(void *arg, FILE *f, cb_error *err) {
    const summary_ctx *s = arg;
    (void)err; /* a failing stream is reported by cb_outdir_write_file with its errno */
    cb_json j;
    cb_json_init(&j, f, 2);
    cb_json_object_begin(&j);
    cb_json_key(&j, "command");
    cb_json_array_begin(&j);
    for (char *const *a = s->argv; *a; a++) cb_json_string(&j, *a);
    cb_json_array_end(&j);
    if (!s->waited) {
        cb_json_key(&j, "exit_status");
        cb_json_null(&j);
    } else if (WIFSIGNALED(s->status)) {
        char name[32];
        const char *abbrev = sigabbrev_np(WTERMSIG(s->status));
        if (abbrev) snprintf(name, sizeof name, "SIG%s", abbrev);
        else snprintf(name, sizeof name, "SIG%d", WTERMSIG(s->status));
        cb_json_key(&j, "signal");
        cb_json_string(&j, name);
    } else {
        cb_json_key(&j, "exit_status");
        cb_json_int(&j, WEXITSTATUS(s->status));
    }
    cb_json_key(&j, "duration_ns");
    cb_json_int(&j, s->duration_ns);
    cb_json_key(&j, "monitors");
    cb_monitor_summary_json(s->m, s->window, 1, &j);
    cb_json_object_end(&j);
    return cb_json_finish(&j) == 0 ? CB_OK : CB_EIO;
}

/* Starts the command with an empty signal mask and default SIGINT/SIGTERM. 0 or an errno. */
static int spawn(char *const *argv, pid_t *pid) {
    posix_spawnattr_t attr;
    int e = posix_spawnattr_init(&attr);
    if (e) return e;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    if (!e) e = posix_spawnattr_setsigmask(&attr, &none);
    if (!e) e = posix_spawnattr_setsigdefault(&attr, &dfl);
    if (!e) e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!e) e = posix_spawnp(pid, argv[0], NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    return e;
}

/* Waits until the command has exited without reaping it. 0 or an errno. */
static int wait_exited(pid_t pid) {
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == 0) return 0;
        if (errno != EINTR) return errno;
    }
}

static int reap(pid_t pid, int *status) {
    for (;;) {
        if (waitpid(pid, status, 0) == pid) return 0;
        if (errno != EINTR) return errno;
    }
}

int cb_watch_run(const cb_watch_opts *o, int *exit_status) {
    FILE *msg = o->msg ? o->msg : stderr;
    const char *dir = o->out_dir ? o->out_dir : CB_WATCH_DEFAULT_DIR;
    cb_error e;
    cb_error_clear(&e);
    *exit_status = EXIT_FAILED;
    if (!o->argv || !o->argv[0]) {
        cb_error_set(&e, CB_EINVAL, "monitor: no command");
        say(msg, &e);
        *exit_status = EXIT_USAGE;
        return CB_EINVAL;
    }

    cb_outdir od;
    int rc = cb_outdir_open(&od, dir, &e);
    if (rc == CB_OK) rc = cb_outdir_clear(&od, &e);
    if (rc != CB_OK) {
        cb_error_prefix(&e, "monitor");
        say(msg, &e);
        cb_outdir_close(&od);
        *exit_status = rc == CB_ECONFIG ? EXIT_USAGE : EXIT_FAILED;
        return rc;
    }

    cb_logger log = {CB_LOG_WARN, msg};
    cb_monitor_opts mo = CB_MONITOR_OPTS_DEFAULT;
    mo.period_ns = o->period_ns;
    mo.sources = o->sources;
    mo.out_dir = od.path;
    mo.nvml_library = o->nvml_library;
    mo.log = &log;
    cb_monitor *m = NULL;
    if ((rc = cb_monitor_create(&mo, &m, &e)) != CB_OK) {
        say(msg, &e);
        cb_outdir_close(&od);
        return rc;
    }

    watch_child child;
    memset(&child, 0, sizeof child);
    pthread_mutex_init(&child.mu, NULL);
    if (o->signals) {
        cb_sigwatch_set(o->signals, forward, &child);
        /* A signal taken before the watch was told about it (between the caller's start of the
         * signal thread and now) was only counted: pass the last one on after the spawn. */
        if (cb_sigwatch_count(o->signals) > 0) {
            int sig = atomic_load(&o->signals->last_signo);
            pthread_mutex_lock(&child.mu);
            if (!child.pending) child.pending = sig ? sig : SIGTERM;
            pthread_mutex_unlock(&child.mu);
        }
    }

    int64_t t_start = cb_clock_now_ns();
    cb_monitor_set_t0(m, t_start);
    pid_t pid = 0;
    pthread_mutex_lock(&child.mu);
    int se = spawn(o->argv, &pid);
    if (se == 0) {
        child.pid = pid;
        if (child.pending) (void)kill(pid, child.pending);
    } else {
        child.ended = true;
    }
    pthread_mutex_unlock(&child.mu);

    if (se != 0) {
        if (o->signals) cb_sigwatch_set(o->signals, NULL, NULL);
        pthread_mutex_destroy(&child.mu);
        cb_monitor_destroy(m);
        cb_outdir_close(&od);
        if (se == ENOENT) {
            cb_error_set(&e, CB_ENOENT, "monitor: %s: command not found", o->argv[0]);
            *exit_status = EXIT_NOT_FOUND;
        } else {
            cb_error_set(&e, CB_EUNSUPPORTED, "monitor: %s: cannot run: %s", o->argv[0], strerror(se));
            *exit_status = EXIT_NOT_EXECUTABLE;
        }
        say(msg, &e);
        return e.code;
    }
    (void)cb_monitor_add_process(m, pid, "command"); /* a process it cannot watch is a notice */

    int we = wait_exited(pid);
    int64_t t_end = cb_clock_now_ns();
    pthread_mutex_lock(&child.mu);
    child.pid = 0;
    child.ended = true;
    pthread_mutex_unlock(&child.mu);
    int status = 0;
    if (we == 0) we = reap(pid, &status);
    if (o->signals) cb_sigwatch_set(o->signals, NULL, NULL); /* returns once forward() is done */
    pthread_mutex_destroy(&child.mu);

    int first = CB_OK;
    int code;
    if (we != 0) {
        /* E.g. SIGCHLD inherited as ignored: the kernel reaped the command itself. */
        cb_error_set(&e, CB_EIO, "monitor: %s: cannot wait for the command: %s", o->argv[0],
                     strerror(we));
        say(msg, &e);
        first = CB_EIO;
        code = EXIT_FAILED;
    } else {
        code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    }

    if ((rc = cb_monitor_stop(m, &e)) != CB_OK) {
        say(msg, &e);
        if (!first) first = rc;
        if (code == 0) code = EXIT_FAILED;
    }
    cb_monitor_window w = {NULL, t_start, t_end};
    summary_ctx s = {o->argv, we == 0, status, t_end - t_start, m, &w};
    if ((rc = cb_outdir_write_file(od.path, "summary.json", write_summary, &s, &e)) != CB_OK) {
        cb_error_prefix(&e, "monitor");
        say(msg, &e);
        if (!first) first = rc;
        if (code == 0) code = EXIT_FAILED;
    }
    cb_monitor_destroy(m);
    cb_outdir_close(&od); /* releases the lock, after summary.json is in place */
    *exit_status = code;
    return first;
}
