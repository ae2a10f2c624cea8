/* cli/cmd_monitor.c - `colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND...`
 *
 * What: starts COMMAND (PATH search), samples it (process and perf sources on its pid) and the
 * host (cpu, memory, gpu) while it runs, and writes DIR/metrics.csv (streamed) and
 * DIR/summary.json ({"command", "exit_status" | "signal", "duration_ns", "monitors"}).
 * Design: the monitor starts first, so the command's whole life is covered, and t0 is the
 * moment before the spawn. posix_spawnp starts the command (safe in a process that already has
 * the sampler thread, and it reports a failed exec as an error code: no pipe dance). SIGINT and
 * SIGTERM are forwarded to the command, whose exit then ends the monitoring normally; the child
 * gets default dispositions and an empty signal mask. The NVML library comes from
 * COLOBENCH_NVML_LIBRARY when set.
 * Exit status: the command's own; 128+N if it was killed by signal N; 2 bad usage; 127 the
 * command cannot be found (126 found but not executable); 1 the monitor itself failed.
 * Thread-safety: runs on the main thread; the only other thread is the monitor's sampler. The
 * child pid is the one process-wide variable, because a signal handler needs it.
 * Ownership: everything is released before returning.
 */
#include "cli/cmd_monitor.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analysis/json.h"
#include "core/clock.h"
#include "core/log.h"
#include "monitor/monitor.h"

extern char **environ;

#define CB_EXIT_FAILED 1
#define CB_EXIT_USAGE 2
#define CB_EXIT_NOT_EXECUTABLE 126
#define CB_EXIT_NOT_FOUND 127
#define CB_MONITOR_MAX_PERIOD_MS 3600000L

static const char cb__monitor_usage[] =
    "usage: colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND [ARGS...]\n"
    "  --period MS      sampling period in milliseconds (default 100)\n"
    "  -o, --output DIR where metrics.csv and summary.json go (default out/monitor)\n"
    "  --sources LIST   comma-separated: cpu,memory,process,gpu,perf (default all)\n"
    "  COLOBENCH_NVML_LIBRARY  NVML library to load (default libnvidia-ml.so.1)\n"
    "exit status: the command's own (128+N if killed by signal N), 2 bad usage,\n"
    "127 command not found\n";

/* The running command, for the signal handler (0 before the spawn), and a signal that arrived
 * before it existed. */
static volatile sig_atomic_t cb__child_pid;
static volatile sig_atomic_t cb__pending_sig;

static void cb__forward(int sig) {
    pid_t pid = (pid_t)cb__child_pid;
    if (pid > 0) kill(pid, sig);
    else cb__pending_sig = sig;
}

static int cb__usage_error(const char *fmt, const char *arg) {
    fputs("colobench: monitor: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n", stderr);
    fputs(cb__monitor_usage, stderr);
    return CB_EXIT_USAGE;
}

/* Parses a period in ms: decimal digits only, 1 .. CB_MONITOR_MAX_PERIOD_MS. */
static int cb__parse_period(const char *s, long *ms) {
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || s[0] == '-' || s[0] == '+' || v < 1 || v > CB_MONITOR_MAX_PERIOD_MS)
        return -1;
    *ms = v;
    return 0;
}

/* Parses "cpu,memory,..." into CB_MON_* bits; on an unknown name returns -1 and copies it. */
static int cb__parse_sources(const char *s, unsigned *bits, char *bad, size_t bad_size) {
    *bits = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[32];
        if (len == 0 || len >= sizeof name) {
            snprintf(bad, bad_size, "%.*s", (int)(len < 64 ? len : 64), p);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        unsigned b = cb_monitor_source_bit(name);
        if (!b) {
            snprintf(bad, bad_size, "%s", name);
            return -1;
        }
        *bits |= b;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

/* mkdir -p */
static int cb__mkdirs(const char *dir) {
    char path[4096];
    int k = snprintf(path, sizeof path, "%s", dir);
    if (k <= 0 || (size_t)k >= sizeof path) return -1;
    for (size_t i = 1; i <= (size_t)k; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
        path[i] = c;
    }
    struct stat sb;
    return stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -1;
}

static int cb__write_summary(const char *dir, char **cmd, int status, int64_t duration_ns,
                             const cb_monitor *m, const cb_monitor_window *w) {
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/summary.json.tmp", dir);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    cb_json j;
    cb_json_init(&j, f, 2);
    cb_json_object_begin(&j);
    cb_json_key(&j, "command");
    cb_json_array_begin(&j);
    for (char **a = cmd; *a; a++) cb_json_string(&j, *a);
    cb_json_array_end(&j);
    if (WIFSIGNALED(status)) {
        char name[32];
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        if (abbrev) snprintf(name, sizeof name, "SIG%s", abbrev);
        else snprintf(name, sizeof name, "SIG%d", WTERMSIG(status));
        cb_json_key(&j, "signal");
        cb_json_string(&j, name);
    } else {
        cb_json_key(&j, "exit_status");
        cb_json_int(&j, WEXITSTATUS(status));
    }
    cb_json_key(&j, "duration_ns");
    cb_json_int(&j, duration_ns);
    cb_json_key(&j, "monitors");
    cb_monitor_summary_json(m, w, 1, &j);
    cb_json_object_end(&j);
    int rc = cb_json_finish(&j);
    if (fclose(f) != 0) rc = -1;
    if (rc != 0 || rename(tmp, path) != 0) return -1;
    return 0;
}

int cb_cli_monitor(int argc, char **argv) {
    long period_ms = 100;
    const char *out_dir = "out/monitor";
    unsigned sources = CB_MON_ALL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) break;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cb__monitor_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--period")) {
            if (i + 1 >= argc || cb__parse_period(argv[i + 1], &period_ms) != 0)
                return cb__usage_error("--period needs a whole number of milliseconds in "
                                       "[1, 3600000], got '%s'",
                                       i + 1 < argc ? argv[i + 1] : "");
            i++;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) return cb__usage_error("%s needs a directory", a);
            out_dir = argv[++i];
        } else if (!strcmp(a, "--sources")) {
            char bad[80];
            if (i + 1 >= argc) return cb__usage_error("%s needs a list", a);
            if (cb__parse_sources(argv[i + 1], &sources, bad, sizeof bad) != 0)
                return cb__usage_error("unknown source '%s' (cpu, memory, process, gpu, perf)", bad);
            i++;
        } else {
            return cb__usage_error("expected options, then '--' and the command; got '%s'", a);
        }
    }
    if (i >= argc) return cb__usage_error("%s", "missing '--' before the command");
    char **cmd = argv + i + 1;
    if (!cmd[0]) return cb__usage_error("%s", "no command after '--'");
    if (cb__mkdirs(out_dir) != 0) {
        fprintf(stderr, "colobench: monitor: %s: cannot create output directory: %s\n", out_dir,
                strerror(errno));
        return CB_EXIT_USAGE;
    }

    cb_logger log = {CB_LOG_WARN, NULL};
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = (int64_t)period_ms * 1000000LL;
    o.sources = sources;
    o.out_dir = out_dir;
    const char *lib = getenv("COLOBENCH_NVML_LIBRARY");
    o.nvml_library = lib && *lib ? lib : NULL;
    o.log = &log;
    cb_monitor *m = NULL;
    cb_error e;
    cb_error_clear(&e);
    if (cb_monitor_create(&o, &m, &e) != CB_OK) {
        fprintf(stderr, "colobench: %s\n", e.msg);
        return CB_EXIT_FAILED;
    }

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cb__forward;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    int64_t t_start = cb_clock_now_ns();
    cb_monitor_set_t0(m, t_start);
    pid_t pid = 0;
    int src = posix_spawnp(&pid, cmd[0], NULL, &attr, cmd, environ);
    posix_spawnattr_destroy(&attr);
    if (src != 0) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        cb_monitor_destroy(m);
        if (src == ENOENT)
            fprintf(stderr, "colobench: monitor: %s: command not found\n", cmd[0]);
        else
            fprintf(stderr, "colobench: monitor: %s: cannot run: %s\n", cmd[0], strerror(src));
        return src == ENOENT ? CB_EXIT_NOT_FOUND : CB_EXIT_NOT_EXECUTABLE;
    }
    cb__child_pid = pid;
    if (cb__pending_sig) kill(pid, cb__pending_sig);
    cb_monitor_add_process(m, pid, "command");

    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            status = 0;
            break;
        }
    }
    int64_t t_end = cb_clock_now_ns();
    cb__child_pid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

    int code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    if (cb_monitor_stop(m, &e) != CB_OK) {
        fprintf(stderr, "colobench: %s\n", e.msg);
        if (code == 0) code = CB_EXIT_FAILED;
    }
    cb_monitor_window w = {NULL, t_start, t_end};
    if (cb__write_summary(out_dir, cmd, status, t_end - t_start, m, &w) != 0) {
        fprintf(stderr, "colobench: monitor: %s/summary.json: cannot write: %s\n", out_dir,
                strerror(errno));
        if (code == 0) code = CB_EXIT_FAILED;
    }
    cb_monitor_destroy(m);
    return code;
}
