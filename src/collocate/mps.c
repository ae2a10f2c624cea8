/* collocate/mps.c - CUDA MPS control daemon: use the one that runs, or start a private one and
 * stop exactly what was started (see mps.h, docs/internals/mps.md).
 *
 * Design. A daemon "runs" on a pipe directory when <dir>/control is a UNIX socket and a
 * non-blocking connect() to it succeeds (EAGAIN - a full backlog - also means someone listens);
 * a socket file nobody listens on (a crashed daemon) is not running and is never touched. A
 * private daemon lives in a fresh $TMPDIR/colobench-mps-XXXXXX/{pipe,log}: the control binary is
 * run as `nvidia-cuda-mps-control -d` by fork + execve with an environment built in the parent
 * (the parent's own environment is never changed), the launcher is reaped (it daemonizes and
 * exits 0), then the socket is polled every 10 ms until it accepts or start_timeout_ns passes.
 * Release pipes "quit\n" into the same binary with the same environment, waits (bounded) for the
 * socket to stop answering and the daemon's pid (from its pid file) to go, then removes the
 * private tree. Every child waited for has a deadline; one that overruns is killed and reaped.
 * Between fork and execve the child only calls async-signal-safe functions (it resets the signal
 * mask and the dispositions a daemon must not inherit, redirects 0/1/2, closes other fds).
 *
 * The watchdog (issue 12: a private daemon leaked when colobench was SIGKILLed). Before the `-d`
 * launcher runs, acquire forks a watchdog process ("cb-mps-watch") that holds one end of a
 * socket pair whose other end only this process holds (SOCK_CLOEXEC: children that exec do not
 * keep it). It blocks in read(): 'u' + pid says the daemon is up, 'r' says it was released (the
 * watchdog exits 0 at once); EOF without 'r', once getppid() shows the parent really gone, means
 * the parent died holding the daemon: the watchdog then runs release's sequence (quit through the
 * control binary with the same environment, the same bounded waits, SIGTERM then SIGKILL of a
 * daemon still up) and removes the private tree. If no 'u' came (the parent died while starting
 * the daemon) it first waits up to start_timeout_ns for the daemon to answer, since the launcher
 * outlives its parent. The watchdog does not exec: it is a plain fork of a process that may have
 * other threads, so from fork on it only calls async-signal-safe functions (the probes, spawn,
 * wait and tree removal below are written that way, allocation-free) on data prepared before the
 * fork (mps_watch). It moves to its own process group and ignores SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU: a Ctrl-C, a hang-up, `timeout -s KILL` or
 * `kill -9 %1` to colobench's group must not take the watchdog with it, since cleaning up after
 * exactly those is its job; SIGKILL aimed at its own pid still ends it. Colobench itself still
 * gets its Ctrl-C, releases, and so dismisses the watchdog. Its lifetime is bounded by its parent's
 * plus the cleanup's deadlines. Release tells it 'r' only after its own cleanup, so a parent
 * killed during release is still covered, and reaps it (2 s, then SIGKILL).
 *
 * Thread-safety: one controlling thread per handle; handles are independent. acquire reads the
 * environment (getenv), so nobody may setenv concurrently. fork() is safe from a multi-threaded
 * process here because everything the children need (launcher, quit client, watchdog) is
 * allocated before the fork. A thread that forks without exec'ing while a handle is held would
 * keep the watchdog's socket open (delaying the clean-up to its exit); colobench has none.
 *
 * Ownership: the handle owns copies of its paths and frees them in release. Only a handle that
 * started its daemon ever removes anything, and only the colobench-mps-XXXXXX tree it created.
 */
#include "collocate/mps.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"

extern char **environ;

#define MPS_BINARY "nvidia-cuda-mps-control"
#define MPS_DEFAULT_PIPE_DIR "/tmp/nvidia-mps"
#define MPS_DEFAULT_LOG_DIR "/var/log/nvidia-mps"
#define MPS_PID_FILE "nvidia-cuda-mps-control.pid"
#define MPS_DEFAULT_START_TIMEOUT_NS (10LL * 1000000000LL)
#define MPS_STOP_TIMEOUT_NS (5LL * 1000000000LL)
#define MPS_POLL_NS (10LL * 1000000LL)
#define MPS_KILL_WAIT_NS 1000000000LL  /* after SIGTERM, before SIGKILL */
#define MPS_WATCH_REAP_NS (2LL * 1000000000LL)
#define MPS_PATH_MAX 4096
#define MPS_TAIL_MAX 320 /* bytes of a log quoted in an error message */
#define MPS_RM_DEPTH 8   /* the private tree is 3 deep */
#define MPS_WATCH_NAME "cb-mps-watch"
#define MPS_WATCH_UP 'u'       /* then the daemon's pid, int32_t in native order */
#define MPS_WATCH_RELEASED 'r' /* the watchdog exits without doing anything */

struct cb_mps {
    bool started_here;
    pid_t daemon_pid;     /* from the daemon's pid file; 0 when unknown */
    const cb_logger *log; /* borrowed from the opts; may be NULL */
    char *binary;         /* resolved control binary; NULL unless started here */
    char *root_dir;       /* colobench-mps-XXXXXX; NULL unless started here */
    char *pipe_dir;
    char *log_dir;
    pid_t watch_pid;      /* the watchdog (private daemon only); 0 when none or reaped */
    int watch_fd;         /* our end of the watchdog's socket pair; -1 when none */
};

/* The environment of a control-binary child: the parent's, with our two directories. */
typedef struct mps_env {
    char **envp;
    char *pipe_var, *log_var;
} mps_env;

static void mps_sleep_ns(int64_t ns) { cb_clock_sleep_until_ns(cb_clock_now_ns() + ns); }

static bool mps_has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- probing --------------------------------------------------------------------------------- */
/* The probes below are async-signal-safe and allocation-free unless they say otherwise: the
 * watchdog calls them after fork. */

/* <pipe_dir>/control as a socket address; false when it does not fit (snprintf: before a fork). */
static bool mps_sockaddr(const char *pipe_dir, struct sockaddr_un *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/control", pipe_dir);
    return n > 0 && (size_t)n < sizeof sa->sun_path;
}

/* True when the socket at sa (<pipe_dir>/control) accepts a connection. */
static bool mps_accepts_at(const struct sockaddr_un *sa) {
    struct stat st;
    if (lstat(sa->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    int rc;
    do {
        rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    } while (rc != 0 && errno == EINTR);
    bool ok = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
    close(fd);
    return ok;
}

/* mps_accepts_at for <pipe_dir>/control (not async-signal-safe: snprintf). */
static bool mps_accepts(const char *pipe_dir) {
    struct sockaddr_un sa;
    return mps_sockaddr(pipe_dir, &sa) && mps_accepts_at(&sa);
}

/* A process that exists and is not a zombie (a double-forked daemon is reparented to pid 1, which
 * in containers does not always reap). */
static bool mps_pid_alive(pid_t pid) {
    if (pid <= 0) return false;
    if (kill(pid, 0) != 0 && errno != EPERM) return false;
    char path[32] = "/proc/", digits[16], buf[256];
    size_t nd = 0, o = strlen(path);
    for (unsigned long v = (unsigned long)pid; v; v /= 10) digits[nd++] = (char)('0' + v % 10);
    while (nd) path[o++] = digits[--nd];
    memcpy(path + o, "/stat", sizeof "/stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true; /* no /proc: trust kill() */
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." - comm may contain spaces */
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

/* A daemon's pid from a pid file ("1234\n": leading blanks, digits, anything after); 0 when absent
 * or not a plausible pid. A hand-written parser: strtol is not async-signal-safe. */
static pid_t mps_read_pid_file(const char *path) {
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *c = buf;
    while (*c == ' ' || *c == '\t') c++;
    long v = 0;
    int digits = 0;
    for (; *c >= '0' && *c <= '9'; c++, digits++) {
        if (digits == 10) return 0;
        v = v * 10 + (*c - '0');
    }
    if (digits == 0 || v <= 1 || v > 0x3fffffffL) return 0;
    return (pid_t)v;
}

/* <pipe_dir>/nvidia-cuda-mps-control.pid (snprintf: before a fork). */
static void mps_pid_path(const char *pipe_dir, char *path, size_t size) {
    snprintf(path, size, "%s/%s", pipe_dir, MPS_PID_FILE);
}

/* The control daemon's pid from <pipe_dir>/nvidia-cuda-mps-control.pid; 0 when unknown (not
 * async-signal-safe: snprintf). */
static pid_t mps_read_pid(const char *pipe_dir) {
    char path[MPS_PATH_MAX];
    mps_pid_path(pipe_dir, path, sizeof path);
    return mps_read_pid_file(path);
}

/* Waits until the socket at sa stops answering and pid (when known) is gone; false at deadline. */
static bool mps_wait_gone(const struct sockaddr_un *sa, pid_t pid, int64_t deadline_ns) {
    for (;;) {
        if (!mps_accepts_at(sa) && !mps_pid_alive(pid)) return true;
        if (cb_clock_now_ns() >= deadline_ns) return false;
        mps_sleep_ns(MPS_POLL_NS);
    }
}

/* A daemon that did not quit: SIGTERM, then SIGKILL after MPS_KILL_WAIT_NS. Only called for a
 * daemon on a private pipe directory, which is ours by construction. */
static void mps_terminate(const struct sockaddr_un *sa, pid_t pid) {
    if (!mps_pid_alive(pid)) return;
    kill(pid, SIGTERM);
    if (!mps_wait_gone(sa, pid, cb_clock_now_ns() + MPS_KILL_WAIT_NS)) kill(pid, SIGKILL);
}

/* The last lines of a log file, newlines shown as " | ", into out ("" when unreadable). */
static void mps_log_tail(const char *path, char *out, size_t size) {
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[MPS_TAIL_MAX + 1];
    off_t len = lseek(fd, 0, SEEK_END);
    off_t from = len > MPS_TAIL_MAX ? len - MPS_TAIL_MAX : 0;
    ssize_t n = len > 0 ? pread(fd, buf, (size_t)(len - from), from) : 0;
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    const char *s = buf;
    if (from > 0) { /* skip the cut line */
        const char *nl = strchr(s, '\n');
        if (nl) s = nl + 1;
    }
    while (*s == '\n') s++;
    size_t o = 0;
    for (; *s && o + 4 < size; s++) {
        if (*s == '\n') {
            if (s[1] == '\0') break;
            memcpy(out + o, " | ", 3);
            o += 3;
        } else if ((unsigned char)*s >= 0x20) {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

/* ---- the control binary ---------------------------------------------------------------------- */

static bool mps_executable(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* want: NULL (look up nvidia-cuda-mps-control on PATH), a name (looked up) or a path (has '/'). */
static int mps_find_binary(const char *want, char **out, cb_error *err) {
    const char *name = want && *want ? want : MPS_BINARY;
    if (strchr(name, '/')) {
        if (!mps_executable(name))
            return cb_error_set(err, CB_ENOENT,
                                "mps: control binary %s (" MPS_BINARY ") not found or not "
                                "executable: CUDA MPS needs the NVIDIA driver's MPS tools",
                                name);
        *out = cb_strdup(name);
        return *out ? CB_OK : cb_error_set(err, CB_ENOMEM, "mps: out of memory");
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    char cand[MPS_PATH_MAX];
    for (const char *p = path;;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        int n = len ? snprintf(cand, sizeof cand, "%.*s/%s", (int)len, p, name)
                    : snprintf(cand, sizeof cand, "./%s", name); /* empty entry = cwd */
        if (n > 0 && (size_t)n < sizeof cand && mps_executable(cand)) {
            *out = cb_strdup(cand);
            return *out ? CB_OK : cb_error_set(err, CB_ENOMEM, "mps: out of memory");
        }
        if (!colon) break;
        p = colon + 1;
    }
    if (strcmp(name, MPS_BINARY) == 0)
        return cb_error_set(err, CB_ENOENT,
                            "mps: " MPS_BINARY " not found on PATH: CUDA MPS needs the NVIDIA "
                            "driver's MPS tools");
    return cb_error_set(err, CB_ENOENT,
                        "mps: control binary %s (" MPS_BINARY ") not found on PATH: CUDA MPS "
                        "needs the NVIDIA driver's MPS tools",
                        name);
}

static char *mps_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = cb_malloc(la + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static void mps_env_free(mps_env *e) {
    cb_free(e->envp);
    cb_free(e->pipe_var);
    cb_free(e->log_var);
    memset(e, 0, sizeof *e);
}

static int mps_env_build(mps_env *e, const char *pipe_dir, const char *log_dir) {
    memset(e, 0, sizeof *e);
    size_t n = 0;
    for (char **v = environ; v && *v; v++) n++;
    e->envp = cb_calloc(n + 3, sizeof *e->envp);
    e->pipe_var = mps_join("CUDA_MPS_PIPE_DIRECTORY=", pipe_dir);
    e->log_var = mps_join("CUDA_MPS_LOG_DIRECTORY=", log_dir);
    if (!e->envp || !e->pipe_var || !e->log_var) {
        mps_env_free(e);
        return CB_ENOMEM;
    }
    size_t k = 0;
    for (char **v = environ; v && *v; v++)
        if (!mps_has_prefix(*v, "CUDA_MPS_PIPE_DIRECTORY=") &&
            !mps_has_prefix(*v, "CUDA_MPS_LOG_DIRECTORY="))
            e->envp[k++] = *v;
    e->envp[k++] = e->pipe_var;
    e->envp[k++] = e->log_var;
    e->envp[k] = NULL;
    return CB_OK;
}

/* The bound of the fd-closing loop where close_range is missing (computed before a fork). */
static long mps_max_fd(void) {
    long max_fd = sysconf(_SC_OPEN_MAX);
    return max_fd < 0 || max_fd > 65536 ? 65536 : max_fd;
}

/* Closes every fd from low up. Async-signal-safe. */
static void mps_close_from(int low, long max_fd) {
    if (close_range((unsigned)low, ~0U, 0) != 0)
        for (long fd = low; fd < max_fd; fd++) close((int)fd);
}

/* fork + execve(binary, {binary, arg?}, envp) with stdin from in_fd and stdout+stderr to out_fd.
 * Returns the child's pid, or -1 with errno set. Async-signal-safe (the watchdog spawns `quit`
 * with it), max_fd from mps_max_fd. */
static pid_t mps_spawn(const char *binary, const char *arg, char *const envp[], int in_fd,
                       int out_fd, long max_fd) {
    char *argv[3] = {(char *)binary, (char *)arg, NULL};
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* Child: async-signal-safe calls only. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored dispositions survive execve: the watchdog's must not reach the quit client. */
    static const int reset[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP, SIGCHLD,
                                SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU};
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaction(reset[i], &dfl, NULL);
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0) _exit(127);
    mps_close_from(3, max_fd);
    execve(binary, argv, envp);
    _exit(127);
}

/* Waits for a child until deadline_ns; kills (SIGKILL) and reaps it when it overruns. Returns 0
 * with *status set, 1 on timeout (killed), -1 when it cannot be waited for. */
static int mps_wait(pid_t pid, int64_t deadline_ns, int *status) {
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 0;
        if (r < 0 && errno != EINTR) return -1; /* ECHILD: SIGCHLD ignored by the host */
        if (r == 0 && cb_clock_now_ns() >= deadline_ns) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
            }
            return 1;
        }
        if (r == 0) mps_sleep_ns(MPS_POLL_NS);
    }
}

static void mps_describe_status(int status, char *buf, size_t size) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        snprintf(buf, size, "could not be executed (exit 127)");
    else if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, size, "ended with wait status %d", status);
}

/* Runs `binary [arg]` with stdin from in_fd and output to <log_dir>/<out_name>, waiting until
 * deadline_ns. Returns CB_OK when it exits 0; otherwise an error naming what happened, with the
 * tail of its output. */
static int mps_run(const char *binary, const char *arg, const mps_env *env, int in_fd,
                   const char *log_dir, const char *out_name, int64_t deadline_ns, cb_error *err) {
    char out_path[MPS_PATH_MAX];
    snprintf(out_path, sizeof out_path, "%s/%s", log_dir, out_name);
    int out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out_fd < 0) out_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (out_fd < 0)
        return cb_error_set(err, CB_EIO, "mps: cannot open %s: %s", out_path, strerror(errno));
    pid_t pid = mps_spawn(binary, arg, env->envp, in_fd, out_fd, mps_max_fd());
    int e = errno;
    close(out_fd);
    if (pid < 0) return cb_error_set(err, CB_EIO, "mps: fork for %s: %s", binary, strerror(e));
    int status = 0, w = mps_wait(pid, deadline_ns, &status);
    if (w < 0) return CB_OK; /* cannot know (SIGCHLD ignored); the socket check decides */
    char what[96], tail[MPS_TAIL_MAX + 64];
    mps_log_tail(out_path, tail, sizeof tail);
    if (w == 1)
        return cb_error_set(err, CB_EIO, "mps: `%s%s%s` did not finish in time (timeout)%s%s",
                            binary, arg ? " " : "", arg ? arg : "", *tail ? ": " : "", tail);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return CB_OK;
    mps_describe_status(status, what, sizeof what);
    return cb_error_set(err, CB_EIO, "mps: `%s%s%s` %s%s%s", binary, arg ? " " : "", arg ? arg : "",
                        what, *tail ? ": " : "", tail);
}

/* ---- private directories --------------------------------------------------------------------- */

/* Removes name (relative to dirfd) and everything under it without following symlinks, at most
 * MPS_RM_DEPTH levels deep. Returns 0 (also when it did not exist) or an errno value.
 * Async-signal-safe and allocation-free (getdents64 into a stack buffer, not opendir): the
 * watchdog removes the private tree with it. */
static int mps_rm_at(int dirfd, const char *name, int depth) {
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return 0;
    int unlink_errno = errno;
    if (unlink_errno != EISDIR && unlink_errno != EPERM) return unlink_errno; /* Linux: EISDIR */
    if (depth >= MPS_RM_DEPTH) return ELOOP;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : errno == ENOTDIR ? unlink_errno : errno;
    int rc = 0;
    /* A few passes: removing entries while reading a directory may hide others from one pass. */
    for (int pass = 0; pass < 4; pass++) {
        if (pass > 0 && lseek(fd, 0, SEEK_SET) != 0) break;
        bool removed_any = false;
        for (;;) {
            _Alignas(struct dirent64) char buf[2048];
            ssize_t n = getdents64(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                rc = errno;
                break;
            }
            if (n == 0) break;
            for (ssize_t off = 0; off < n;) {
                const struct dirent64 *d = (const struct dirent64 *)(const void *)(buf + off);
                off += d->d_reclen;
                const char *e = d->d_name;
                if (e[0] == '.' && (e[1] == '\0' || (e[1] == '.' && e[2] == '\0'))) continue;
                int r = mps_rm_at(fd, e, depth + 1);
                if (r)
                    rc = r;
                else
                    removed_any = true;
            }
        }
        if (!removed_any) break;
    }
    close(fd);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
    return rc ? rc : errno;
}

/* Not async-signal-safe (cb_error_set); the watchdog calls mps_rm_at directly. */
static int mps_rmtree(const char *root, cb_error *err) {
    int e = mps_rm_at(AT_FDCWD, root, 0);
    if (e) return cb_error_set(err, CB_EIO, "mps: cannot remove %s: %s", root, strerror(e));
    return CB_OK;
}

/* Creates $TMPDIR/colobench-mps-XXXXXX/{pipe,log} and stores the three paths in m. */
static int mps_make_dirs(cb_mps *m, cb_error *err) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char root[MPS_PATH_MAX];
    int n = snprintf(root, sizeof root, "%s/colobench-mps-XXXXXX", base);
    struct sockaddr_un probe;
    if (n <= 0 || (size_t)n + sizeof "/pipe/control" > sizeof probe.sun_path)
        return cb_error_set(err, CB_EINVAL,
                            "mps: TMPDIR %s is too long for the MPS control socket path (at "
                            "most %zu bytes in all); set a shorter TMPDIR",
                            base, sizeof probe.sun_path - 1);
    if (!mkdtemp(root))
        return cb_error_set(err, CB_EIO, "mps: cannot create %s: %s", root, strerror(errno));
    m->root_dir = cb_strdup(root);
    m->pipe_dir = mps_join(root, "/pipe");
    m->log_dir = mps_join(root, "/log");
    if (!m->root_dir || !m->pipe_dir || !m->log_dir) {
        rmdir(root);
        cb_free(m->root_dir);
        m->root_dir = NULL;
        return cb_error_set(err, CB_ENOMEM, "mps: out of memory");
    }
    if (mkdir(m->pipe_dir, 0700) != 0 || mkdir(m->log_dir, 0700) != 0) {
        int e = errno;
        mps_rmtree(root, NULL);
        cb_free(m->root_dir);
        m->root_dir = NULL;
        return cb_error_set(err, CB_EIO, "mps: cannot create directories in %s: %s", root,
                            strerror(e));
    }
    return CB_OK;
}

/* ---- the watchdog ---------------------------------------------------------------------------- */

/* Everything the watchdog needs, prepared before the fork: after it, the watchdog allocates
 * nothing and calls only async-signal-safe functions. */
typedef struct mps_watch {
    const char *binary;          /* the control binary (the handle's copy) */
    char *const *envp;           /* release's environment for it (the fork's copy) */
    const char *root_dir;        /* the private tree */
    struct sockaddr_un control;  /* <pipe>/control */
    char pid_path[MPS_PATH_MAX]; /* <pipe>/nvidia-cuda-mps-control.pid */
    char note[512];              /* written to stderr when it cleans up */
    size_t note_len;
    pid_t parent;
    int64_t start_timeout_ns;
    long max_fd;
} mps_watch;

/* The parent died holding the daemon: release's sequence (quit through the control binary, the
 * same bounded waits, SIGTERM then SIGKILL), then the tree goes. up: the parent saw the daemon
 * answer; pid: the one it read then (0: read the pid file now). */
static void mps_watch_clean(const mps_watch *w, pid_t pid, bool up) {
    if (!up) { /* the parent died while starting it: the launcher outlives its parent */
        int64_t end = cb_clock_now_ns() + w->start_timeout_ns;
        while (!mps_accepts_at(&w->control) && cb_clock_now_ns() < end) mps_sleep_ns(MPS_POLL_NS);
    }
    if (pid <= 0) pid = mps_read_pid_file(w->pid_path);
    int64_t deadline = cb_clock_now_ns() + MPS_STOP_TIMEOUT_NS;
    int q[2];
    if (mps_accepts_at(&w->control) && pipe2(q, O_CLOEXEC) == 0) {
        ssize_t n = write(q[1], "quit\n", 5); /* fits any pipe buffer */
        close(q[1]);
        int out = open("/dev/null", O_WRONLY | O_CLOEXEC);
        pid_t c = -1;
        if (n == 5 && out >= 0) c = mps_spawn(w->binary, NULL, w->envp, q[0], out, w->max_fd);
        int status = 0;
        if (c > 0) mps_wait(c, deadline, &status);
        if (out >= 0) close(out);
        close(q[0]);
    }
    if (!mps_wait_gone(&w->control, pid, deadline)) mps_terminate(&w->control, pid);
    mps_rm_at(AT_FDCWD, w->root_dir, 0);
}

/* The watchdog process: fd is its end of the socket pair, parent_fd the parent's (closed here). */
static _Noreturn void mps_watch_main(const mps_watch *w, int fd, int parent_fd) {
    close(parent_fd);
    /* Its own process group, and the signals a terminal or a group kill sends are ignored:
     * surviving exactly those is its job. SIGCHLD is default so waitpid sees the quit client. */
    setpgid(0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    static const int ignored[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT,
                                  SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        sigaction(ignored[i], &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* fds: the socket as 3, stdin/stdout /dev/null, stderr kept (for the note), nothing else: no
     * copy of the parent's end, of its output files or of its locks. */
    if (fd != 3) {
        if (dup2(fd, 3) < 0) _exit(1);
        close(fd);
        fd = 3;
    }
    mps_close_from(4, w->max_fd);
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        if (nul > 3) close(nul);
    }
    prctl(PR_SET_NAME, MPS_WATCH_NAME, 0, 0, 0); /* last: tests take the name as "set up" */

    pid_t pid = 0;
    bool up = false;
    unsigned char msg[1 + sizeof(int32_t)];
    size_t have = 0;
    for (;;) {
        unsigned char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (have == 0 && buf[i] == MPS_WATCH_RELEASED) _exit(0);
            if (have == 0 && buf[i] != MPS_WATCH_UP) continue;
            msg[have++] = buf[i];
            if (have == sizeof msg) {
                int32_t v;
                memcpy(&v, msg + 1, sizeof v);
                pid = (pid_t)v;
                up = true;
                have = 0;
            }
        }
    }
    /* EOF without 'r'. Act once the parent is really gone: a dying process's files are closed
     * before its children are reparented, and a parent that only lost the fd still owns its
     * daemon (then this waits for its exit). */
    while (getppid() == w->parent) mps_sleep_ns(MPS_POLL_NS);
    ssize_t wr = write(2, w->note, w->note_len);
    (void)wr;
    mps_watch_clean(w, pid, up);
    _exit(0);
}

/* Forks the watchdog for m's private tree; env is the environment release gives the binary. */
static int mps_watch_start(cb_mps *m, const mps_env *env, int64_t start_timeout_ns,
                           cb_error *err) {
    mps_watch w;
    memset(&w, 0, sizeof w);
    w.binary = m->binary;
    w.envp = env->envp;
    w.root_dir = m->root_dir;
    if (!mps_sockaddr(m->pipe_dir, &w.control))
        return cb_error_set(err, CB_EINVAL, "mps: pipe directory %s is too long", m->pipe_dir);
    mps_pid_path(m->pipe_dir, w.pid_path, sizeof w.pid_path);
    w.parent = getpid();
    w.start_timeout_ns = start_timeout_ns;
    w.max_fd = mps_max_fd();
    int n = snprintf(w.note, sizeof w.note,
                     "mps: watchdog: process %ld ended without releasing its private control "
                     "daemon on %s: stopping it and removing %s\n",
                     (long)w.parent, m->pipe_dir, m->root_dir);
    w.note_len = n < 0 ? 0 : (size_t)n < sizeof w.note ? (size_t)n : sizeof w.note - 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return cb_error_set(err, CB_EIO, "mps: watchdog: socketpair: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) mps_watch_main(&w, sv[1], sv[0]);
    int e = errno;
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return cb_error_set(err, CB_EIO, "mps: watchdog: fork: %s", strerror(e));
    }
    m->watch_pid = pid;
    m->watch_fd = sv[0];
    return CB_OK;
}

/* Sends msg to the watchdog; false when it is gone (never raises SIGPIPE). */
static bool mps_watch_send(cb_mps *m, const void *msg, size_t len) {
    if (m->watch_fd < 0) return false;
    ssize_t n;
    do {
        n = send(m->watch_fd, msg, len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)len;
}

static void mps_watch_up(cb_mps *m) {
    unsigned char msg[1 + sizeof(int32_t)];
    int32_t v = (int32_t)m->daemon_pid;
    msg[0] = MPS_WATCH_UP;
    memcpy(msg + 1, &v, sizeof v);
    if (!mps_watch_send(m, msg, sizeof msg))
        cb_logf(m->log, CB_LOG_WARN, "mps",
                "the watchdog (pid %ld) is gone: if colobench dies before releasing it, the "
                "control daemon on %s outlives it",
                (long)m->watch_pid, m->pipe_dir);
}

/* Tells the watchdog there is nothing left to do ('r'), closes our end and reaps it (killed if it
 * overruns MPS_WATCH_REAP_NS). Idempotent. */
static void mps_watch_stop(cb_mps *m) {
    if (m->watch_fd >= 0) {
        char r = MPS_WATCH_RELEASED;
        (void)mps_watch_send(m, &r, 1); /* a dead watchdog is reaped below all the same */
        close(m->watch_fd);
        m->watch_fd = -1;
    }
    if (m->watch_pid <= 0) return;
    int status = 0;
    int w = mps_wait(m->watch_pid, cb_clock_now_ns() + MPS_WATCH_REAP_NS, &status);
    if (w == 1) {
        cb_logf(m->log, CB_LOG_WARN, "mps",
                "the watchdog (pid %ld) did not exit within %lld ms; killed", (long)m->watch_pid,
                (long long)(MPS_WATCH_REAP_NS / 1000000));
    } else if (w == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char what[96];
        mps_describe_status(status, what, sizeof what);
        cb_logf(m->log, CB_LOG_WARN, "mps", "the watchdog (pid %ld) %s", (long)m->watch_pid, what);
    }
    m->watch_pid = 0;
}

/* ---- acquire / release ----------------------------------------------------------------------- */

static void mps_free(cb_mps *m) {
    mps_watch_stop(m);
    cb_free(m->binary);
    cb_free(m->root_dir);
    cb_free(m->pipe_dir);
    cb_free(m->log_dir);
    cb_free(m);
}

/* Cleans up after a failed start: stops a daemon that came up without answering, removes the tree,
 * dismisses the watchdog. The daemon is ours by construction (its pipe directory is private). */
static void mps_abort_start(cb_mps *m) {
    struct sockaddr_un sa;
    if (mps_sockaddr(m->pipe_dir, &sa)) mps_terminate(&sa, mps_read_pid(m->pipe_dir));
    mps_rmtree(m->root_dir, NULL);
    mps_watch_stop(m);
}

static int mps_start(cb_mps *m, const cb_mps_opts *opts, cb_error *err) {
    int rc = mps_find_binary(opts->control_binary, &m->binary, err);
    if (rc) return rc;
    rc = mps_make_dirs(m, err);
    if (rc) return rc;
    int64_t t0 = cb_clock_now_ns();
    int64_t timeout =
        opts->start_timeout_ns > 0 ? opts->start_timeout_ns : MPS_DEFAULT_START_TIMEOUT_NS;
    int64_t deadline = t0 + timeout;
    mps_env env;
    cb_error run_err;
    cb_error_clear(&run_err);
    if (mps_env_build(&env, m->pipe_dir, m->log_dir) != CB_OK) {
        mps_rmtree(m->root_dir, NULL);
        return cb_error_set(err, CB_ENOMEM, "mps: out of memory");
    }
    /* The watchdog first: from here on, a death of this process is cleaned up after. */
    rc = mps_watch_start(m, &env, timeout, err);
    if (rc) {
        mps_env_free(&env);
        mps_rmtree(m->root_dir, NULL);
        return rc;
    }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) {
        rc = cb_error_set(err, CB_EIO, "mps: cannot open /dev/null: %s", strerror(errno));
    } else {
        rc =
            mps_run(m->binary, "-d", &env, null_fd, m->log_dir, "launcher.out", deadline, &run_err);
        close(null_fd);
    }
    mps_env_free(&env);
    char control_log[MPS_PATH_MAX], tail[MPS_TAIL_MAX + 64];
    snprintf(control_log, sizeof control_log, "%s/control.log", m->log_dir);
    if (rc) {
        mps_log_tail(control_log, tail, sizeof tail);
        const char *why = run_err.msg;
        if (mps_has_prefix(why, "mps: ")) why += strlen("mps: ");
        cb_error_set(err, CB_EIO, "mps: cannot start the control daemon: %s; control.log: %s", why,
                     *tail ? tail : "(empty or missing)");
        mps_abort_start(m);
        return CB_EIO;
    }
    while (!mps_accepts(m->pipe_dir)) {
        if (cb_clock_now_ns() >= deadline) {
            mps_log_tail(control_log, tail, sizeof tail);
            cb_error_set(err, CB_EIO,
                         "mps: `%s -d` ran, but the control socket %s/control did not accept "
                         "connections within %lld ms (timeout); control.log: %s",
                         m->binary, m->pipe_dir, (long long)(timeout / 1000000),
                         *tail ? tail : "(empty or missing)");
            mps_abort_start(m);
            return CB_EIO;
        }
        mps_sleep_ns(MPS_POLL_NS);
    }
    m->daemon_pid = mps_read_pid(m->pipe_dir);
    m->started_here = true;
    mps_watch_up(m);
    cb_logf(m->log, CB_LOG_INFO, "mps",
            "started a private control daemon (pid %ld) on %s in %.1f ms (watchdog pid %ld)",
            (long)m->daemon_pid, m->pipe_dir, (double)(cb_clock_now_ns() - t0) / 1e6,
            (long)m->watch_pid);
    return CB_OK;
}

int cb_mps_acquire(const cb_mps_opts *opts, cb_mps **out, cb_error *err) {
    static const cb_mps_opts defaults = CB_MPS_OPTS_DEFAULT;
    if (!out) return cb_error_set(err, CB_EINVAL, "mps: acquire needs an output handle");
    *out = NULL;
    if (!opts) opts = &defaults;
    cb_mps *m = cb_calloc(1, sizeof *m);
    if (!m) return cb_error_set(err, CB_ENOMEM, "mps: out of memory");
    m->log = opts->log;
    m->watch_fd = -1;

    const char *env_pipe = getenv("CUDA_MPS_PIPE_DIRECTORY");
    if (!env_pipe || !*env_pipe) env_pipe = MPS_DEFAULT_PIPE_DIR;
    if (mps_accepts(env_pipe)) {
        const char *env_log = getenv("CUDA_MPS_LOG_DIRECTORY");
        if (!env_log || !*env_log) env_log = MPS_DEFAULT_LOG_DIR;
        m->pipe_dir = cb_strdup(env_pipe);
        m->log_dir = cb_strdup(env_log);
        if (!m->pipe_dir || !m->log_dir) {
            mps_free(m);
            return cb_error_set(err, CB_ENOMEM, "mps: out of memory");
        }
        m->daemon_pid = mps_read_pid(env_pipe);
        cb_logf(m->log, CB_LOG_INFO, "mps", "using the running control daemon on %s (pid %ld)",
                m->pipe_dir, (long)m->daemon_pid);
        *out = m;
        return CB_OK;
    }
    struct sockaddr_un sa;
    struct stat st;
    if (mps_sockaddr(env_pipe, &sa) && lstat(sa.sun_path, &st) == 0)
        cb_logf(m->log, CB_LOG_WARN, "mps",
                "%s exists but no control daemon answers on it (stale?); starting "
                "a private one "
                "and leaving it alone",
                sa.sun_path);
    int rc = mps_start(m, opts, err);
    if (rc) {
        mps_free(m);
        return rc;
    }
    *out = m;
    return CB_OK;
}

bool cb_mps_started_here(const cb_mps *m) { return m && m->started_here; }
const char *cb_mps_pipe_dir(const cb_mps *m) { return m ? m->pipe_dir : NULL; }
const char *cb_mps_log_dir(const cb_mps *m) { return m ? m->log_dir : NULL; }
pid_t cb_mps_watchdog_pid(const cb_mps *m) { return m ? m->watch_pid : 0; }

int cb_mps_child_env(const cb_mps *m, int active_thread_percentage, int64_t mem_limit_bytes,
                     int device_ordinal, char *buf, size_t buf_size, const char **vars,
                     size_t max_vars) {
    if (!m || !buf || !vars) return -1;
    const char *names[4], *values[4];
    char pct[16], mem[48];
    size_t k = 0;
    names[k] = "CUDA_MPS_PIPE_DIRECTORY", values[k++] = m->pipe_dir;
    names[k] = "CUDA_MPS_LOG_DIRECTORY", values[k++] = m->log_dir;
    if (active_thread_percentage > 0) { /* MPS accepts 1..100; above 100 means no limit */
        snprintf(pct, sizeof pct, "%d",
                 active_thread_percentage > 100 ? 100 : active_thread_percentage);
        names[k] = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", values[k++] = pct;
    }
    if (mem_limit_bytes > 0) { /* "<ordinal>=<n>M": whole MiB, rounded down, at least 1 */
        int64_t mib = mem_limit_bytes >> 20;
        snprintf(mem, sizeof mem, "%d=%lldM", device_ordinal < 0 ? 0 : device_ordinal,
                 (long long)(mib > 0 ? mib : 1));
        names[k] = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", values[k++] = mem;
    }
    if (k > max_vars) return -1;
    size_t used = 0;
    for (size_t i = 0; i < k; i++) {
        int n = snprintf(buf + used, buf_size - used, "%s=%s", names[i], values[i]);
        if (n < 0 || (size_t)n >= buf_size - used) return -1;
        vars[i] = buf + used;
        used += (size_t)n + 1;
    }
    return (int)k;
}

int cb_mps_release(cb_mps *m, cb_error *err) {
    if (!m) return CB_OK;
    if (!m->started_here) {
        cb_logf(m->log, CB_LOG_DEBUG, "mps", "leaving the control daemon on %s running",
                m->pipe_dir);
        mps_free(m);
        return CB_OK;
    }
    int rc = CB_OK;
    int64_t t0 = cb_clock_now_ns(), deadline = t0 + MPS_STOP_TIMEOUT_NS;
    mps_env env;
    int fds[2] = {-1, -1};
    if (!mps_accepts(m->pipe_dir)) {
        cb_logf(m->log, CB_LOG_WARN, "mps", "the private control daemon on %s no longer answers",
                m->pipe_dir);
    } else if (mps_env_build(&env, m->pipe_dir, m->log_dir) != CB_OK) {
        rc = cb_error_set(err, CB_ENOMEM, "mps: out of memory");
    } else {
        if (pipe2(fds, O_CLOEXEC) != 0) {
            rc = cb_error_set(err, CB_EIO, "mps: pipe: %s", strerror(errno));
        } else {
            /* 5 bytes fit any pipe buffer: write all, close, let the client read to EOF. */
            ssize_t w = write(fds[1], "quit\n", 5);
            close(fds[1]);
            if (w != 5) {
                rc = cb_error_set(err, CB_EIO, "mps: pipe write: %s", strerror(errno));
            } else {
                rc = mps_run(m->binary, NULL, &env, fds[0], m->log_dir, "quit.out", deadline, err);
                if (rc) cb_error_prefix(err, "mps: quit");
            }
            close(fds[0]);
        }
        mps_env_free(&env);
    }
    struct sockaddr_un sa;
    mps_sockaddr(m->pipe_dir, &sa); /* fits: checked when the tree was made */
    if (!mps_wait_gone(&sa, m->daemon_pid, deadline)) {
        int e = cb_error_set(rc ? NULL : err, CB_EIO,
                             "mps: the control daemon on %s (pid %ld) did not quit within %lld "
                             "ms",
                             m->pipe_dir, (long)m->daemon_pid,
                             (long long)(MPS_STOP_TIMEOUT_NS / 1000000));
        if (!rc) rc = e;
        if (mps_pid_alive(m->daemon_pid)) {
            cb_logf(m->log, CB_LOG_WARN, "mps", "sending SIGTERM to control daemon pid %ld",
                    (long)m->daemon_pid);
            mps_terminate(&sa, m->daemon_pid);
        }
    }
    int rr = mps_rmtree(m->root_dir, rc ? NULL : err);
    if (!rc) rc = rr;
    /* Only now: a release cut short (SIGKILL in the middle) is finished by the watchdog. */
    mps_watch_stop(m);
    cb_logf(m->log, rc ? CB_LOG_WARN : CB_LOG_INFO, "mps",
            "stopped the private control daemon (pid %ld) in %.1f ms%s", (long)m->daemon_pid,
            (double)(cb_clock_now_ns() - t0) / 1e6, rc ? " (with errors)" : "");
    mps_free(m);
    return rc;
}
