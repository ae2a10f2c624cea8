/* Tests of collocate/mps.c against tests/fake_mps/nvidia-cuda-mps-control, a stand-in for the
 * NVIDIA binary with the same CLI contract (no GPU or driver needed). Each test gets a fresh
 * TMPDIR and sets CUDA_MPS_PIPE_DIRECTORY itself; every fake daemon (and watchdog) a test sees is
 * recorded and killed in teardown, whatever the checks said. The watchdog tests SIGKILL a forked
 * owner of a private daemon and poll, with deadlines of 20 s or more, for the clean-up: nothing
 * depends on the machine's speed beyond those. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collocate/mps.h"
#include "core/clock.h"

#define FAKE_DIR CB_TEST_SRCDIR "/tests/fake_mps"
#define FAKE_BIN FAKE_DIR "/nvidia-cuda-mps-control"

static char g_orig_path[8192];
static char g_orig_tmpdir[1024];
#define SEC_NS 1000000000LL
#define CLEANUP_TIMEOUT_NS (20 * SEC_NS) /* generous: the clean-up needs well under 1 s */

static pid_t g_pids[32];
static int g_npids;
static const cb_logger g_log = {CB_LOG_INFO, NULL};

/* ---- helpers --------------------------------------------------------------------------------- */

static void use_fake_path(void) {
    char p[sizeof g_orig_path + 256];
    snprintf(p, sizeof p, "%s:%s", FAKE_DIR, g_orig_path);
    setenv("PATH", p, 1);
}

/* A fresh directory under the original TMPDIR, made the process's TMPDIR. */
static const char *fresh_tmpdir(void) {
    if (*g_orig_tmpdir)
        setenv("TMPDIR", g_orig_tmpdir, 1);
    else
        unsetenv("TMPDIR");
    const char *d = cb_test_tmpdir();
    setenv("TMPDIR", d, 1);
    return d;
}

static bool accepts(const char *pipe_dir) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control", pipe_dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return false;
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static bool wait_accepts(const char *pipe_dir, bool want, int64_t timeout_ns) {
    int64_t end = cb_clock_now_ns() + timeout_ns;
    while (accepts(pipe_dir) != want) {
        if (cb_clock_now_ns() > end) return false;
        usleep(10000);
    }
    return true;
}

static pid_t read_pid(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *s = cb_test_read(p, NULL);
    if (!s) return 0;
    long v = strtol(s, NULL, 10);
    free(s);
    return (pid_t)v;
}

/* Alive and not a zombie (the double-forked daemon's parent is pid 1, which may not reap). */
static bool alive(pid_t pid) {
    if (pid <= 0 || kill(pid, 0) != 0) return false;
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/stat", (long)pid);
    char *s = cb_test_read(p, NULL);
    if (!s) return true;
    const char *rp = strrchr(s, ')');
    bool zombie = rp && (rp[2] == 'Z' || rp[2] == 'X');
    free(s);
    return !zombie;
}

static bool wait_dead(pid_t pid, int64_t timeout_ns) {
    int64_t end = cb_clock_now_ns() + timeout_ns;
    while (alive(pid)) {
        if (cb_clock_now_ns() > end) return false;
        usleep(10000);
    }
    return true;
}

static void track(pid_t pid) {
    if (pid > 0 && g_npids < 32) g_pids[g_npids++] = pid;
}

static bool exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Number of entries in dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static bool starts_with(const char *s, const char *prefix) {
    return s && !strncmp(s, prefix, strlen(prefix));
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = s ? strlen(s) : 0, b = strlen(suffix);
    return s && a >= b && !strcmp(s + a - b, suffix);
}

static bool wait_missing(const char *path, int64_t timeout_ns) {
    int64_t end = cb_clock_now_ns() + timeout_ns;
    while (exists(path)) {
        if (cb_clock_now_ns() > end) return false;
        usleep(10000);
    }
    return true;
}

/* Polls a file until it contains needle. */
static bool wait_contains(const char *path, const char *needle, int64_t timeout_ns) {
    int64_t end = cb_clock_now_ns() + timeout_ns;
    for (;;) {
        char *s = cb_test_read(path, NULL);
        bool found = s && strstr(s, needle);
        free(s);
        if (found) return true;
        if (cb_clock_now_ns() > end) return false;
        usleep(10000);
    }
}

/* The number after the first occurrence of key in a file (0 when absent). */
static long number_after(const char *path, const char *key) {
    char *s = cb_test_read(path, NULL);
    const char *k = s ? strstr(s, key) : NULL;
    long v = k ? strtol(k + strlen(key), NULL, 10) : 0;
    free(s);
    return v;
}

/* A process's name (/proc/<pid>/comm without the newline); "" when gone. */
static void proc_comm(pid_t pid, char *buf, size_t size) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/comm", (long)pid);
    char *s = cb_test_read(p, NULL);
    snprintf(buf, size, "%s", s ? s : "");
    free(s);
    buf[strcspn(buf, "\n")] = '\0';
}

static bool wait_comm(pid_t pid, const char *want, int64_t timeout_ns) {
    int64_t end = cb_clock_now_ns() + timeout_ns;
    char comm[64];
    for (;;) {
        proc_comm(pid, comm, sizeof comm);
        if (!strcmp(comm, want)) return true;
        if (cb_clock_now_ns() > end) {
            printf("# pid %ld is named \"%s\", not \"%s\"\n", (long)pid, comm, want);
            return false;
        }
        usleep(10000);
    }
}

/* Whether sig is in the SigIgn mask of /proc/<pid>/status. */
static bool ignores(pid_t pid, int sig) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/status", (long)pid);
    char *s = cb_test_read(p, NULL);
    const char *k = s ? strstr(s, "SigIgn:") : NULL;
    unsigned long long mask = k ? strtoull(k + strlen("SigIgn:"), NULL, 16) : 0;
    free(s);
    return (mask >> (sig - 1)) & 1;
}

/* This process has no child left, reaped or not. */
static bool no_children(void) { return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD; }

/* The name of the one entry of dir starting with prefix, as a path, into out; false if none. */
static bool find_prefixed(const char *dir, const char *prefix, char *out, size_t size) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            snprintf(out, size, "%s/%s", dir, e->d_name);
            found = true;
        }
    closedir(d);
    return found;
}

/* Every process recorded is killed; the environment goes back to a known state. */
static void teardown(void) {
    for (int i = 0; i < g_npids; i++)
        if (alive(g_pids[i])) {
            printf("# teardown: killing leftover process %ld\n", (long)g_pids[i]);
            kill(g_pids[i], SIGKILL);
        }
    g_npids = 0;
    unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    unsetenv("CUDA_MPS_LOG_DIRECTORY");
    unsetenv("FAKE_MPS_FAIL_START");
    unsetenv("FAKE_MPS_START_DELAY_MS");
    unsetenv("FAKE_MPS_TRACE");
    use_fake_path();
}

/* ---- an owner to SIGKILL ------------------------------------------------------------------- */

/* What the owner reports once acquire returned. */
typedef struct owner_report {
    int rc;
    pid_t daemon, watchdog;
    char pipe[512], msg[512];
} owner_report;

/* Forks a process that acquires a daemon (the given start timeout; 0 = default), writes an
 * owner_report to *report_fd's other end and then waits to be killed (SIGALRM ends it after
 * 120 s if the test itself dies first). */
static pid_t spawn_owner(int64_t start_timeout_ns, int *report_fd) {
    int p[2];
    if (pipe(p) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        alarm(120);
        owner_report r;
        memset(&r, 0, sizeof r);
        cb_mps_opts o = CB_MPS_OPTS_DEFAULT;
        o.start_timeout_ns = start_timeout_ns;
        cb_mps *m = NULL;
        cb_error err;
        cb_error_clear(&err);
        r.rc = cb_mps_acquire(&o, &m, &err);
        if (r.rc == 0) {
            snprintf(r.pipe, sizeof r.pipe, "%s", cb_mps_pipe_dir(m));
            r.daemon = read_pid(r.pipe, "fake.pid");
            r.watchdog = cb_mps_watchdog_pid(m);
        } else {
            snprintf(r.msg, sizeof r.msg, "%s", err.msg);
        }
        ssize_t w = write(p[1], &r, sizeof r);
        (void)w;
        for (;;) pause();
    }
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -1;
    }
    *report_fd = p[0];
    return pid;
}

/* Reads the owner's report; false when it ended without one. */
static bool read_report(int fd, owner_report *r) {
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t n = read(fd, (char *)r + got, sizeof *r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        got += (size_t)n;
    }
    return true;
}

static void kill_owner(pid_t owner) {
    CB_CHECK_EQ_INT(kill(owner, SIGKILL), 0);
    int st = 0;
    CB_CHECK_EQ_INT(waitpid(owner, &st, 0), owner);
    CB_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_starts_private_daemon_and_stops_it(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024], trace[1024];
    /* The default pipe directory when nothing else answers there; otherwise one of our own. */
    if (accepts("/tmp/nvidia-mps")) {
        snprintf(none, sizeof none, "%s/none", tmp);
        setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
        printf("# a daemon answers on /tmp/nvidia-mps: testing with %s instead\n", none);
    } else {
        unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    }
    snprintf(trace, sizeof trace, "%s/trace.log", tmp);
    setenv("FAKE_MPS_TRACE", trace, 1);

    cb_mps_opts o = CB_MPS_OPTS_DEFAULT;
    o.log = &g_log;
    cb_mps *m = NULL;
    cb_error err;
    cb_error_clear(&err);
    int64_t t0 = cb_clock_now_ns();
    int rc = cb_mps_acquire(&o, &m, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err.msg);
        return;
    }
    printf("# started in %.1f ms\n", (double)(cb_clock_now_ns() - t0) / 1e6);
    CB_CHECK(cb_mps_started_here(m));
    char prefix[1100];
    snprintf(prefix, sizeof prefix, "%s/colobench-mps-", tmp);
    const char *pipe = cb_mps_pipe_dir(m), *logd = cb_mps_log_dir(m);
    CB_CHECK(starts_with(pipe, prefix) && ends_with(pipe, "/pipe"));
    CB_CHECK(starts_with(logd, prefix) && ends_with(logd, "/log"));
    CB_CHECK(accepts(pipe));
    pid_t pid = read_pid(pipe, "fake.pid");
    track(pid);
    CB_CHECK(alive(pid));
    CB_CHECK_EQ_INT(read_pid(pipe, "nvidia-cuda-mps-control.pid"), pid);
    /* The parent's environment is left alone; the child's names our directories. */
    CB_CHECK(getenv("CUDA_MPS_LOG_DIRECTORY") == NULL);
    char buf[2048], want[1200];
    const char *vars[8];
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 0, 0, 0, buf, sizeof buf, vars, 8), 2);
    snprintf(want, sizeof want, "CUDA_MPS_PIPE_DIRECTORY=%s", pipe);
    CB_CHECK_STR_EQ(vars[0], want);
    snprintf(want, sizeof want, "CUDA_MPS_LOG_DIRECTORY=%s", logd);
    CB_CHECK_STR_EQ(vars[1], want);
    char root[1024];
    snprintf(root, sizeof root, "%.*s", (int)(strlen(pipe) - strlen("/pipe")), pipe);
    CB_CHECK(exists(root));
    /* The watchdog: named, in its own process group, deaf to ^C and group signals. */
    pid_t watch = cb_mps_watchdog_pid(m);
    track(watch);
    CB_CHECK_CMP_INT(watch, >, 0);
    CB_CHECK(watch != pid);
    CB_CHECK(wait_comm(watch, "cb-mps-watch", CLEANUP_TIMEOUT_NS));
    CB_CHECK_EQ_INT(getpgid(watch), watch);
    CB_CHECK(ignores(watch, SIGINT));
    CB_CHECK(ignores(watch, SIGTERM));
    CB_CHECK(ignores(watch, SIGHUP));
    CB_CHECK(!ignores(watch, SIGCHLD));

    rc = cb_mps_release(m, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", err.msg);
    CB_CHECK(!alive(pid));
    CB_CHECK(!exists(root));
    /* Release reaped the watchdog: no process, no zombie, no child of ours at all. */
    CB_CHECK(kill(watch, 0) != 0 && errno == ESRCH);
    CB_CHECK(no_children());
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
    char *log = cb_test_read(trace, NULL);
    CB_CHECK_CONTAINS(log, "start");
    CB_CHECK_CONTAINS(log, "quit");
    free(log);
    CB_CHECK_EQ_INT(cb_mps_release(NULL, &err), 0); /* NULL is a no-op */
}

static void test_uses_running_daemon_and_leaves_it(void) {
    const char *tmp = fresh_tmpdir();
    char pipe[1024], logd[1024], cmd[4096];
    snprintf(pipe, sizeof pipe, "%s/ext-pipe", tmp);
    snprintf(logd, sizeof logd, "%s/ext-log", tmp);
    snprintf(cmd, sizeof cmd,
             "CUDA_MPS_PIPE_DIRECTORY='%s' CUDA_MPS_LOG_DIRECTORY='%s' "
             "nvidia-cuda-mps-control -d",
             pipe, logd);
    char *out = NULL;
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    CB_CHECK(wait_accepts(pipe, true, 5000000000LL));
    pid_t pid = read_pid(pipe, "fake.pid");
    track(pid);
    CB_CHECK(alive(pid));
    setenv("CUDA_MPS_PIPE_DIRECTORY", pipe, 1);
    setenv("CUDA_MPS_LOG_DIRECTORY", logd, 1);

    cb_mps_opts o = CB_MPS_OPTS_DEFAULT;
    o.log = &g_log;
    cb_mps *m = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_mps_acquire(&o, &m, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err.msg);
        return;
    }
    CB_CHECK(!cb_mps_started_here(m));
    CB_CHECK_EQ_INT(cb_mps_watchdog_pid(m), 0); /* nothing of ours to watch */
    CB_CHECK(no_children());
    CB_CHECK_STR_EQ(cb_mps_pipe_dir(m), pipe);
    CB_CHECK_STR_EQ(cb_mps_log_dir(m), logd);
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
    char buf[2048], want[1200];
    const char *vars[8];
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 0, 0, 0, buf, sizeof buf, vars, 8), 2);
    snprintf(want, sizeof want, "CUDA_MPS_PIPE_DIRECTORY=%s", pipe);
    CB_CHECK_STR_EQ(vars[0], want);
    CB_CHECK_EQ_INT(cb_mps_release(m, &err), 0);
    CB_CHECK(accepts(pipe));
    CB_CHECK(alive(pid));

    /* Stop it the way a user would. */
    snprintf(cmd, sizeof cmd, "echo quit | CUDA_MPS_PIPE_DIRECTORY='%s' nvidia-cuda-mps-control",
             pipe);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    CB_CHECK(wait_accepts(pipe, false, 5000000000LL));
    CB_CHECK(wait_dead(pid, 5000000000LL));
}

static void test_stale_socket_is_not_running_and_left_alone(void) {
    const char *tmp = fresh_tmpdir();
    char stale[1024];
    snprintf(stale, sizeof stale, "%s/stale", tmp);
    CB_CHECK_EQ_INT(mkdir(stale, 0700), 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control", stale);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CB_CHECK_EQ_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* bound, never listened, closed: what a crashed daemon leaves */
    struct stat before, after;
    CB_CHECK_EQ_INT(lstat(sa.sun_path, &before), 0);
    CB_CHECK(S_ISSOCK(before.st_mode));
    CB_CHECK(!accepts(stale));
    setenv("CUDA_MPS_PIPE_DIRECTORY", stale, 1);

    cb_mps *m = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_mps_acquire(NULL, &m, &err); /* NULL opts = defaults */
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err.msg);
        return;
    }
    CB_CHECK(cb_mps_started_here(m));
    CB_CHECK(strcmp(cb_mps_pipe_dir(m), stale) != 0);
    CB_CHECK(accepts(cb_mps_pipe_dir(m)));
    pid_t pid = read_pid(cb_mps_pipe_dir(m), "fake.pid");
    track(pid);
    CB_CHECK_EQ_INT(lstat(sa.sun_path, &after), 0);
    CB_CHECK_EQ_INT(after.st_ino, before.st_ino);
    CB_CHECK_EQ_INT(cb_mps_release(m, &err), 0);
    CB_CHECK(!alive(pid));
    CB_CHECK_EQ_INT(lstat(sa.sun_path, &after), 0);
    CB_CHECK(S_ISSOCK(after.st_mode));
    CB_CHECK_EQ_INT(after.st_ino, before.st_ino);
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
}

static void test_missing_binary_is_enoent(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024];
    snprintf(none, sizeof none, "%s/none", tmp);
    setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
    cb_mps *m = (cb_mps *)&m; /* must be reset to NULL */
    cb_error err;

    setenv("PATH", CB_TEST_BINDIR ":/nonexistent-dir", 1);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_mps_acquire(NULL, &m, &err), CB_ENOENT);
    CB_CHECK(m == NULL);
    CB_CHECK_CONTAINS(err.msg, "nvidia-cuda-mps-control not found on PATH");
    use_fake_path();

    cb_mps_opts o = CB_MPS_OPTS_DEFAULT;
    o.control_binary = "/nonexistent/x";
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_mps_acquire(&o, &m, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.msg, "nvidia-cuda-mps-control");
    CB_CHECK_CONTAINS(err.msg, "/nonexistent/x");
    printf("# %s\n", err.msg);

    o.control_binary = "no-such-mps-control";
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_mps_acquire(&o, &m, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.msg, "nvidia-cuda-mps-control");
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
}

static void test_start_timeout_cleans_up(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024];
    snprintf(none, sizeof none, "%s/none", tmp);
    setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
    setenv("FAKE_MPS_FAIL_START", "1", 1);
    cb_mps_opts o = CB_MPS_OPTS_DEFAULT;
    /* Long enough that the Python launcher itself exits in time on a loaded machine, so the
     * timeout that fires is the daemon's bind, the case under test. */
    o.start_timeout_ns = 2000 * 1000000LL;
    cb_mps *m = NULL;
    cb_error err;
    cb_error_clear(&err);
    int64_t t0 = cb_clock_now_ns();
    CB_CHECK_EQ_INT(cb_mps_acquire(&o, &m, &err), CB_EIO);
    int64_t took = cb_clock_now_ns() - t0;
    CB_CHECK(m == NULL);
    CB_CHECK_CONTAINS(err.msg, "timeout");
    CB_CHECK_CONTAINS(err.msg, "2000 ms");
    printf("# %s\n", err.msg);
    CB_CHECK_CMP_INT(took, >=, 2000 * 1000000LL);
    CB_CHECK_CMP_INT(took, <, 30000 * 1000000LL); /* ended by the timeout, not hung: any load */
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
    CB_CHECK(no_children()); /* the watchdog was dismissed and reaped */
}

static void test_launcher_failure_reports_output(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024];
    snprintf(none, sizeof none, "%s/none", tmp);
    setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/bin", tmp);
    CB_CHECK_EQ_INT(mkdir(dir, 0700), 0);
    const char *bin =
        cb_test_write(dir, "nvidia-cuda-mps-control", "#!/bin/sh\necho \"boom: $1\" >&2\nexit 3\n");
    CB_CHECK_EQ_INT(chmod(bin, 0700), 0);
    cb_mps_opts o = CB_MPS_OPTS_DEFAULT;
    o.control_binary = bin;
    cb_mps *m = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_mps_acquire(&o, &m, &err), CB_EIO);
    CB_CHECK(m == NULL);
    CB_CHECK_CONTAINS(err.msg, "status 3");
    CB_CHECK_CONTAINS(err.msg, "boom: -d");
    printf("# %s\n", err.msg);
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
    CB_CHECK(no_children());
}

static void test_child_env_strings(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024];
    snprintf(none, sizeof none, "%s/none", tmp);
    setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
    cb_mps *m = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_mps_acquire(NULL, &m, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err.msg);
        return;
    }
    track(read_pid(cb_mps_pipe_dir(m), "fake.pid"));
    char buf[4096], want[1200];
    const char *vars[8];
    int n = cb_mps_child_env(m, 50, 4LL << 30, 0, buf, sizeof buf, vars, 8);
    CB_CHECK_EQ_INT(n, 4);
    snprintf(want, sizeof want, "CUDA_MPS_PIPE_DIRECTORY=%s", cb_mps_pipe_dir(m));
    CB_CHECK_STR_EQ(vars[0], want);
    snprintf(want, sizeof want, "CUDA_MPS_LOG_DIRECTORY=%s", cb_mps_log_dir(m));
    CB_CHECK_STR_EQ(vars[1], want);
    CB_CHECK_STR_EQ(vars[2], "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50");
    CB_CHECK_STR_EQ(vars[3], "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4096M");
    /* Exactly the bytes needed fits; one less does not; too few slots does not. */
    size_t need = 0;
    for (int i = 0; i < 4; i++) need += strlen(vars[i]) + 1;
    char *exact = malloc(need);
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 50, 4LL << 30, 0, exact, need, vars, 4), 4);
    CB_CHECK_STR_EQ(vars[3], "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4096M");
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 50, 4LL << 30, 0, exact, need - 1, vars, 4), -1);
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 50, 4LL << 30, 0, exact, need, vars, 3), -1);
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 50, 4LL << 30, 0, buf, 16, vars, 8), -1);
    free(exact);
    /* Other ordinals, sub-MiB remainders rounded down, percentages capped at 100. */
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 0, (3LL << 29) + 12345, 1, buf, sizeof buf, vars, 8), 3);
    CB_CHECK_STR_EQ(vars[2], "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=1=1536M");
    CB_CHECK_EQ_INT(cb_mps_child_env(m, 150, 0, 0, buf, sizeof buf, vars, 8), 3);
    CB_CHECK_STR_EQ(vars[2], "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=100");
    CB_CHECK_EQ_INT(cb_mps_release(m, &err), 0);
}

/* Issue 12: the owner of a private daemon is SIGKILLed after acquire; the watchdog quits the
 * daemon and removes its directories. ^C, SIGTERM and SIGHUP sent to the watchdog first (what a
 * terminal or a group kill would send it) change nothing. */
static void test_sigkilled_owner_is_cleaned_up_by_watchdog(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024], trace[1024];
    snprintf(none, sizeof none, "%s/none", tmp);
    setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
    snprintf(trace, sizeof trace, "%s/trace.log", tmp);
    setenv("FAKE_MPS_TRACE", trace, 1);

    int fd = -1;
    pid_t owner = spawn_owner(0, &fd);
    CB_CHECK_CMP_INT(owner, >, 0);
    if (owner <= 0) return;
    track(owner);
    owner_report r;
    bool got = read_report(fd, &r);
    close(fd);
    CB_CHECK(got);
    if (got) CB_CHECK_EQ_INT(r.rc, 0);
    if (!got || r.rc) {
        if (got) printf("# %s\n", r.msg);
        kill_owner(owner);
        return;
    }
    track(r.daemon);
    track(r.watchdog);
    CB_CHECK(alive(r.daemon));
    CB_CHECK(accepts(r.pipe));
    CB_CHECK_CMP_INT(r.watchdog, >, 0);
    CB_CHECK(wait_comm(r.watchdog, "cb-mps-watch", CLEANUP_TIMEOUT_NS));
    char root[1024];
    snprintf(root, sizeof root, "%.*s", (int)(strlen(r.pipe) - strlen("/pipe")), r.pipe);
    CB_CHECK(exists(root));

    kill(r.watchdog, SIGINT);
    kill(r.watchdog, SIGTERM);
    kill(r.watchdog, SIGHUP);
    kill_owner(owner);
    int64_t t0 = cb_clock_now_ns();
    CB_CHECK(wait_dead(r.daemon, CLEANUP_TIMEOUT_NS));
    CB_CHECK(wait_missing(root, CLEANUP_TIMEOUT_NS));
    CB_CHECK(wait_dead(r.watchdog, CLEANUP_TIMEOUT_NS));
    printf("# cleaned up %.1f ms after the SIGKILL\n", (double)(cb_clock_now_ns() - t0) / 1e6);
    CB_CHECK(!accepts(r.pipe));
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
    char *log = cb_test_read(trace, NULL);
    CB_CHECK_CONTAINS(log, "quit"); /* asked to quit, as release does, not just killed */
    free(log);
}

/* The owner is SIGKILLed while acquire waits for the daemon's socket: the launcher, which outlives
 * it, still brings the daemon up; the watchdog waits for it, quits it and removes the tree. */
static void test_owner_sigkilled_during_start_is_cleaned_up(void) {
    const char *tmp = fresh_tmpdir();
    char none[1024], trace[1024], root[1024];
    snprintf(none, sizeof none, "%s/none", tmp);
    setenv("CUDA_MPS_PIPE_DIRECTORY", none, 1);
    snprintf(trace, sizeof trace, "%s/trace.log", tmp);
    setenv("FAKE_MPS_TRACE", trace, 1);
    setenv("FAKE_MPS_START_DELAY_MS", "1500", 1); /* the daemon binds 1.5 s after its launch */

    int fd = -1;
    pid_t owner = spawn_owner(30 * SEC_NS, &fd);
    CB_CHECK_CMP_INT(owner, >, 0);
    if (owner <= 0) return;
    track(owner);
    /* The launcher logs "launch" once it runs: the watchdog exists by then (it is forked first). */
    bool launched = wait_contains(trace, "launch (pid", CLEANUP_TIMEOUT_NS);
    CB_CHECK(launched);
    bool have_root = find_prefixed(tmp, "colobench-mps-", root, sizeof root);
    CB_CHECK(have_root);
    kill_owner(owner);
    owner_report r;
    if (read_report(fd, &r)) /* not a failure: the kill came late on a very slow machine */
        printf("# note: acquire had returned (rc %d) before the SIGKILL\n", r.rc);
    close(fd);
    if (!launched || !have_root) return;

    CB_CHECK(wait_contains(trace, "start (pid", 30 * SEC_NS));
    pid_t daemon = (pid_t)number_after(trace, "start (pid ");
    track(daemon);
    CB_CHECK_CMP_INT(daemon, >, 0);
    CB_CHECK(wait_dead(daemon, CLEANUP_TIMEOUT_NS + 30 * SEC_NS));
    CB_CHECK(wait_missing(root, CLEANUP_TIMEOUT_NS));
    CB_CHECK_EQ_INT(count_prefixed(tmp, "colobench-mps-"), 0);
    char *log = cb_test_read(trace, NULL);
    CB_CHECK_CONTAINS(log, "quit");
    free(log);
}

int main(void) {
    const char *p = getenv("PATH");
    snprintf(g_orig_path, sizeof g_orig_path, "%s", p ? p : "/usr/local/bin:/usr/bin:/bin");
    const char *t = getenv("TMPDIR");
    snprintf(g_orig_tmpdir, sizeof g_orig_tmpdir, "%s", t ? t : "");
    setenv("FAKE_MPS_MAX_LIFETIME_S", "120", 1); /* a leaked fake daemon ends by itself */
    teardown();
    CB_RUN(test_starts_private_daemon_and_stops_it);
    teardown();
    CB_RUN(test_uses_running_daemon_and_leaves_it);
    teardown();
    CB_RUN(test_stale_socket_is_not_running_and_left_alone);
    teardown();
    CB_RUN(test_missing_binary_is_enoent);
    teardown();
    CB_RUN(test_start_timeout_cleans_up);
    teardown();
    CB_RUN(test_launcher_failure_reports_output);
    teardown();
    CB_RUN(test_child_env_strings);
    teardown();
    CB_RUN(test_sigkilled_owner_is_cleaned_up_by_watchdog);
    teardown();
    CB_RUN(test_owner_sigkilled_during_start_is_cleaned_up);
    teardown();
    return cb_test_done();
}
