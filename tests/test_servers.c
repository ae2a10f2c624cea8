/* Servers as part of an experiment (experiment/servers.h, `servers:` in core/spec.c), with real
 * server processes: `python3 -m http.server` (readiness on /), and `sh -c` commands that
 * misbehave (never ready, exit early, die mid-run). Each lifecycle case runs build/colobench
 * and checks, by pid, that no process of the server's group is left afterwards: after a normal
 * end, a stage error, SIGINT, SIGTERM and SIGKILL of colobench. The test process is a child
 * subreaper, so a supervisor orphaned by a SIGKILLed colobench is reparented here and reaped
 * (a zombie would still answer kill(pid, 0)). Ports: a free one is picked per run (bind port 0,
 * read it, close) and given with --set servers.0.port=N. Config checks (unknown keys, bounds,
 * `server:` resolution, config.yaml round trip) load specs in process with a test stage that
 * has `server` and `url` parameters. Every wait is bounded; no timing outcome is asserted
 * beyond generous bounds.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cfgtree.h"
#include "core/clock.h"
#include "core/registry.h"
#include "core/spec.h"
#include "stages/builtin.h"

#define CLI CB_TEST_COLOBENCH

/* ---- helpers ------------------------------------------------------------------------------ */

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reaps orphans reparented to this (subreaper) process. */
static void reap_orphans(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

/* colobench with args (NULL-terminated after argv[0] = CLI), stdout+stderr into log. */
static pid_t spawn_cli(const char *const *args, const char *log) {
    pid_t p = fork();
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(99);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(CLI, (char *const *)args);
        _exit(98);
    }
    return p;
}

/* Exit code, -N for signal N, or -1000 when it did not end within seconds (then killed). */
static int wait_cli(pid_t pid, double seconds) {
    int64_t until = cb_clock_now_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
        if (r < 0) return -2000;
        if (cb_clock_now_ns() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1000;
        }
        sleep_ms(20);
    }
}

/* Whether pid is gone (ESRCH) within seconds; reaps orphans meanwhile. */
static bool gone(pid_t pid, double seconds) {
    int64_t until = cb_clock_now_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        reap_orphans();
        if (kill(pid, 0) != 0 && errno == ESRCH) return true;
        if (cb_clock_now_ns() > until) return false;
        sleep_ms(20);
    }
}

/* Processes (zombies excluded) whose process group is pgid, up to max. */
static size_t group_members(pid_t pgid, pid_t *out, size_t max) {
    size_t n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && n < max && (e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = '\0';
        char *p = strrchr(buf, ')'), state;
        int ppid, pg;
        if (p && sscanf(p + 1, " %c %d %d", &state, &ppid, &pg) == 3 && pg == (int)pgid && state != 'Z')
            out[n++] = (pid_t)pid;
    }
    if (d) closedir(d);
    return n;
}

/* Waits (bounded) until path exists and holds a pid; 0 when it never does. */
static pid_t read_pid_file(const char *path, double seconds) {
    int64_t until = cb_clock_now_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        char *t = cb_test_read(path, NULL);
        long v = t ? strtol(t, NULL, 10) : 0;
        free(t);
        if (v > 0) return (pid_t)v;
        if (cb_clock_now_ns() > until) return 0;
        sleep_ms(20);
    }
}

/* Waits (bounded) until file path contains needle. */
static bool wait_contains(const char *path, const char *needle, double seconds) {
    int64_t until = cb_clock_now_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        char *t = cb_test_read(path, NULL);
        bool ok = t && strstr(t, needle);
        free(t);
        if (ok) return true;
        if (cb_clock_now_ns() > until) return false;
        sleep_ms(20);
    }
}

/* A benchmark with one server (its command a YAML flow list) and one pipeline of `stage`
 * (a stage map) that runs for at most timeout seconds. */
static const char *write_bench(const char *dir, const char *command, const char *server_extra, const char *stage,
                               const char *loadgen) {
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: srv\n"
             "servers:\n"
             "  - name: web\n"
             "    command: %s\n"
             "    port: 1\n"
             "%s"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    loadgen: %s\n"
             "    stages:\n"
             "      - %s\n",
             command, server_extra, loadgen, stage);
    return cb_test_write(dir, "bench.yaml", yaml);
}

#define HTTP_SERVER "[python3, -m, http.server, \"{port}\", --bind, \"{host}\"]"
#define READY_ROOT "    ready: /\n    ready_timeout: 60\n"
#define LONG_LOAD "{max_queries: 0, timeout: 60}"
#define SLEEP_STAGE "{id: 0, component: util.sleep, config: {duration_us: 20000}}"

/* Runs colobench run on bench with the port set; returns its pid (log in dir/log). */
static pid_t start_run(const char *dir, const char *bench, int port, const char *extra_arg) {
    static char out[1024], set[64];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(set, sizeof set, "servers.0.port=%d", port);
    const char *args[] = {CLI, "run", bench, "-o", out, "--allow-servers", "--set", set, extra_arg, NULL};
    return spawn_cli(args, cb_test_path(dir, "log"));
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void test_normal_end(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, HTTP_SERVER, READY_ROOT, "{id: 0, component: util.noop}", "{max_queries: 20}");
    int port = free_port();
    pid_t cli = start_run(dir, bench, port, NULL);
    int rc = wait_cli(cli, 60);
    char *log = cb_test_read(cb_test_path(dir, "log"), NULL);
    CB_CHECK_EQ_INT(rc, 0);
    CB_CHECK_CONTAINS(log, "ready at http://127.0.0.1:");
    free(log);
    pid_t pid = read_pid_file(cb_test_path(dir, "out/servers/web.pid"), 0);
    CB_CHECK(pid > 0);
    if (pid > 0) CB_CHECK(gone(pid, 5));
    const char *sum = cb_test_path(dir, "out/summary.json");
    char *v = cb_test_py_json(sum, "d[\"servers\"][0][\"ended\"], d[\"servers\"][0][\"pid\"], d[\"servers\"][0][\"ready\"], "
                                   "d[\"servers\"][0][\"ready_ns\"] > 0, d[\"servers\"][0][\"url\"]");
    char want[256];
    snprintf(want, sizeof want, "stopped %d True True http://127.0.0.1:%d", (int)pid, port);
    CB_CHECK_STR_EQ(v, want);
    free(v);
    /* The monitors watched it; its logs are there; config.yaml has the section and loads. */
    v = cb_test_py_json(sum, "any(s[\"label\"] == \"server:web\" for s in d[\"monitors\"][\"series\"])");
    CB_CHECK_STR_EQ(v, "True");
    free(v);
    char *err = cb_test_read(cb_test_path(dir, "out/servers/web.stderr"), NULL);
    CB_CHECK_CONTAINS(err, "GET / HTTP");
    free(err);
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " validate %s/out/config.yaml", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_CONTAINS(out, "--allow-servers"); /* validate's notice */
    free(out);
}

static void test_stage_error(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, HTTP_SERVER, READY_ROOT, "{id: 0, component: util.fail, config: {on_query: 3}}",
                                    "{max_queries: 20}");
    pid_t cli = start_run(dir, bench, free_port(), NULL);
    CB_CHECK_EQ_INT(wait_cli(cli, 60), 1);
    pid_t pid = read_pid_file(cb_test_path(dir, "out/servers/web.pid"), 0);
    CB_CHECK(pid > 0);
    if (pid > 0) CB_CHECK(gone(pid, 5));
    char *v = cb_test_py_json(cb_test_path(dir, "out/summary.json"), "d[\"servers\"][0][\"ended\"]");
    CB_CHECK_STR_EQ(v, "stopped");
    free(v);
}

/* A signal to colobench mid-run: the run ends interrupted, the server with it. */
static void signal_mid_run(int sig) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, HTTP_SERVER, READY_ROOT, SLEEP_STAGE, LONG_LOAD);
    pid_t cli = start_run(dir, bench, free_port(), NULL);
    CB_CHECK(wait_contains(cb_test_path(dir, "log"), "ready at", 60));
    pid_t pid = read_pid_file(cb_test_path(dir, "out/servers/web.pid"), 10);
    sleep_ms(300);
    kill(cli, sig);
    CB_CHECK_EQ_INT(wait_cli(cli, 60), 1);
    CB_CHECK(pid > 0);
    if (pid > 0) CB_CHECK(gone(pid, 5));
    char *v = cb_test_py_json(cb_test_path(dir, "out/summary.json"), "d[\"interrupted\"], d[\"servers\"][0][\"ended\"]");
    CB_CHECK_STR_EQ(v, "True stopped");
    free(v);
}

static void test_sigint_mid_run(void) { signal_mid_run(SIGINT); }
static void test_sigterm_mid_run(void) { signal_mid_run(SIGTERM); }

/* colobench SIGKILLed: the supervisor's parent-death signal ends the server's whole group, a
 * child the server forked included. */
static void test_sigkill_mid_run(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, "[sh, -c, \"python3 -m http.server {port} --bind {host} & wait\"]",
                                    READY_ROOT, SLEEP_STAGE, LONG_LOAD);
    pid_t cli = start_run(dir, bench, free_port(), NULL);
    CB_CHECK(wait_contains(cb_test_path(dir, "log"), "ready at", 60));
    pid_t pid = read_pid_file(cb_test_path(dir, "out/servers/web.pid"), 10);
    CB_CHECK(pid > 0);
    if (pid <= 0) {
        kill(cli, SIGKILL);
        wait_cli(cli, 10);
        return;
    }
    pid_t members[16];
    size_t n = group_members(pid, members, 16);
    CB_CHECK_CMP_INT(n, >=, 2); /* sh and python3 */
    kill(cli, SIGKILL);
    CB_CHECK_EQ_INT(wait_cli(cli, 10), -SIGKILL);
    for (size_t i = 0; i < n; i++) CB_CHECK(gone(members[i], 15));
    CB_CHECK_EQ_INT(group_members(pid, members, 16), 0);
}

/* ---- failures of the server itself --------------------------------------------------------- */

static void test_ready_timeout(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, "[sh, -c, \"echo never-ready-marker >&2; exec sleep 60\"]",
                                    "    ready_timeout: 1\n    stop_timeout: 1\n", SLEEP_STAGE, LONG_LOAD);
    int64_t t0 = cb_clock_now_ns();
    pid_t cli = start_run(dir, bench, free_port(), NULL);
    CB_CHECK_EQ_INT(wait_cli(cli, 60), 1);
    CB_CHECK_CMP_INT((cb_clock_now_ns() - t0) / 1000000000LL, <, 30); /* not the sleep's 60 s */
    char *log = cb_test_read(cb_test_path(dir, "log"), NULL);
    CB_CHECK_CONTAINS(log, "server 'web'");
    CB_CHECK_CONTAINS(log, "ready_timeout");
    CB_CHECK_CONTAINS(log, "/health"); /* the URL probed */
    CB_CHECK_CONTAINS(log, "never-ready-marker");
    free(log);
    pid_t pid = read_pid_file(cb_test_path(dir, "out/servers/web.pid"), 0);
    CB_CHECK(pid > 0);
    if (pid > 0) CB_CHECK(gone(pid, 5));
    char *v = cb_test_py_json(cb_test_path(dir, "out/summary.json"), "d[\"stopped_in\"], d[\"servers\"][0][\"ready\"]");
    CB_CHECK_STR_EQ(v, "servers False");
    free(v);
}

/* A signal while colobench waits for readiness ends the wait promptly (not after
 * ready_timeout), the server with it. */
static void test_signal_during_readiness(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, "[sh, -c, \"exec sleep 60\"]", "    ready_timeout: 60\n", SLEEP_STAGE, LONG_LOAD);
    int64_t t0 = cb_clock_now_ns();
    pid_t cli = start_run(dir, bench, free_port(), NULL);
    pid_t pid = read_pid_file(cb_test_path(dir, "out/servers/web.pid"), 30);
    CB_CHECK(pid > 0);
    kill(cli, SIGTERM);
    CB_CHECK_EQ_INT(wait_cli(cli, 60), 1);
    CB_CHECK_CMP_INT((cb_clock_now_ns() - t0) / 1000000000LL, <, 30); /* not the 60 s timeout */
    if (pid > 0) CB_CHECK(gone(pid, 5));
    char *v = cb_test_py_json(cb_test_path(dir, "out/summary.json"), "d[\"stopped_in\"], d[\"interrupted\"]");
    CB_CHECK_STR_EQ(v, "servers True");
    free(v);
}

static void test_exits_before_ready(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, "[sh, -c, \"echo early-exit-marker >&2; sleep 1; exit 3\"]", "", SLEEP_STAGE,
                                    LONG_LOAD);
    pid_t cli = start_run(dir, bench, free_port(), NULL);
    CB_CHECK_EQ_INT(wait_cli(cli, 60), 1);
    char *log = cb_test_read(cb_test_path(dir, "log"), NULL);
    CB_CHECK_CONTAINS(log, "server 'web'");
    CB_CHECK_CONTAINS(log, "exited 3 before it was ready");
    CB_CHECK_CONTAINS(log, "early-exit-marker");
    free(log);
    char *v = cb_test_py_json(cb_test_path(dir, "out/summary.json"),
                              "d[\"servers\"][0][\"ended\"], d[\"servers\"][0][\"exit_status\"]");
    CB_CHECK_STR_EQ(v, "died 3");
    free(v);
}

/* A server that dies while the pipelines run fails the run (not an interrupt), in both the
 * in-process and the child-process phases. */
static void dies_mid_run(const char *mode) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir,
                                    "[sh, -c, \"python3 -m http.server {port} --bind {host} & sleep 4; "
                                    "echo dying-marker >&2; kill $!; exit 3\"]",
                                    READY_ROOT, SLEEP_STAGE, LONG_LOAD);
    char set[64];
    snprintf(set, sizeof set, "collocation.mode=%s", mode);
    static char out[1024], port[64];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(port, sizeof port, "servers.0.port=%d", free_port());
    const char *args[] = {CLI, "run", bench, "-o", out, "--allow-servers", "--set", port, "--set", set, NULL};
    pid_t cli = spawn_cli(args, cb_test_path(dir, "log"));
    CB_CHECK_EQ_INT(wait_cli(cli, 60), 1);
    char *log = cb_test_read(cb_test_path(dir, "log"), NULL);
    CB_CHECK_CONTAINS(log, "server 'web'");
    CB_CHECK_CONTAINS(log, "exited 3 while the benchmark ran");
    CB_CHECK_CONTAINS(log, "dying-marker");
    free(log);
    const char *sum = cb_test_path(dir, "out/summary.json");
    char *v = cb_test_py_json(sum, "d[\"interrupted\"], d[\"servers\"][0][\"ended\"], d[\"servers\"][0][\"exit_status\"], "
                                   "any(\"exited 3\" in e for e in d[\"errors\"]), d[\"pipelines\"][0][\"queries_total\"] > 0");
    CB_CHECK_STR_EQ(v, "False died 3 True True");
    free(v);
}

static void test_dies_mid_run_threads(void) { dies_mid_run("threads"); }
static void test_dies_mid_run_processes(void) { dies_mid_run("processes"); }

/* What the server's process gets: {host}/{port} in env values, device: cpu (an empty
 * CUDA_VISIBLE_DEVICES), mps: true (the MPS daemon's directories: tests/fake_mps's stand-in
 * daemon), cwd (the config's directory by default), cpus (its affinity). */
static void test_server_environment(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir,
                                    "[sh, -c, \"echo pipe=$CUDA_MPS_PIPE_DIRECTORY cvd=[$CUDA_VISIBLE_DEVICES] a=$A "
                                    "pwd=$(pwd) $(grep Cpus_allowed_list /proc/self/status) >&2; "
                                    "exec python3 -m http.server {port} --bind {host}\"]",
                                    READY_ROOT "    env: {A: \"v{port}\"}\n    device: cpu\n    mps: true\n"
                                               "    cpus: [0]\n",
                                    "{id: 0, component: util.noop}", "{max_queries: 5}");
    int port = free_port();
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "env -u CUDA_MPS_PIPE_DIRECTORY TMPDIR=%s PATH=" CB_TEST_SRCDIR "/tests/fake_mps:$PATH " CLI
             " run %s -o %s/out -q --allow-servers --set servers.0.port=%d",
             dir, bench, dir, port);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    char *err = cb_test_read(cb_test_path(dir, "out/servers/web.stderr"), NULL);
    char want[128];
    snprintf(want, sizeof want, "a=v%d ", port);
    CB_CHECK_CONTAINS(err, want);
    CB_CHECK_CONTAINS(err, "cvd=[]");
    CB_CHECK_CONTAINS(err, "pipe=/");
    CB_CHECK(!strstr(err, "pipe= ")); /* the daemon's pipe directory, not empty */
    char real[4096];
    CB_CHECK(realpath(dir, real) != NULL);
    snprintf(cmd, sizeof cmd, "pwd=%s ", real);
    CB_CHECK_CONTAINS(err, cmd);
    CB_CHECK_CONTAINS(err, "Cpus_allowed_list: 0\n"); /* echo joined the words */
    free(err);
}

/* ---- the flag and config errors ------------------------------------------------------------- */

static void test_needs_allow_servers(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, HTTP_SERVER, READY_ROOT, "{id: 0, component: util.noop}", "{max_queries: 5}");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out", bench, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "bench.yaml:3:");
    CB_CHECK_CONTAINS(out, "servers:");
    CB_CHECK_CONTAINS(out, "--allow-servers");
    free(out);
    snprintf(cmd, sizeof cmd, "test ! -e %s/out/servers", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0); /* nothing started */
    free(out);
    snprintf(cmd, sizeof cmd, CLI " validate %s", bench);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_CONTAINS(out, "ok");
    CB_CHECK_CONTAINS(out, "--allow-servers");
    free(out);
}

static void test_config_errors_cli(void) {
    const char *dir = cb_test_tmpdir();
    const char *bench = write_bench(dir, HTTP_SERVER, READY_ROOT, "{id: 0, component: util.noop}", "{max_queries: 5}");
    static const struct {
        const char *set, *want;
    } cases[] = {
        {"servers.0.prot=80", "servers[0].prot: unknown key (did you mean 'port'?)"},
        {"servers.0.port=70000", "servers[0].port: expected integer in [1, 65535]"},
        {"servers.0.name=Web", "servers[0].name: expected a name"},
        {"servers.0.command=[]", "servers[0].command: expected a non-empty list"},
        {"servers.0.ready=health", "servers[0].ready: expected an HTTP path starting with '/'"},
        {"servers.0.ready_timeout=0", "servers[0].ready_timeout: expected number > 0"},
        {"servers.0.device=gpu0", "servers[0].device: expected cpu, cuda:N or MIG-<uuid>"},
        {"servers.0.env={1X: a}", "servers[0].env.1X: not an environment variable name"},
        {"servers.0.cwd=no-such-dir", "servers[0].cwd:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[2048], *out = NULL;
        snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out --allow-servers --set '%s'", bench, dir, cases[i].set);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
        CB_CHECK_CONTAINS(out, "<--set>:1:");
        CB_CHECK_CONTAINS(out, cases[i].want);
        free(out);
    }
    /* A position in the file, and a program that is not on PATH (found before anything starts). */
    const char *bad = cb_test_write(dir, "bad.yaml",
                                    "pipelines:\n  - {name: p, inputs: [0], stages: [{id: 0, component: util.noop}]}\n"
                                    "servers:\n  - name: a\n    command: [x]\n    port: 99999\n");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " validate %s", bad);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "bad.yaml:6:11: servers[0].port:");
    free(out);
    /* `server:` of llm.openai (a stage with server and url) naming no declared server. */
    bad = cb_test_write(dir, "client.yaml",
                        "servers:\n  - {name: engine, command: [x], port: 9}\n"
                        "pipelines:\n  - name: p\n    inputs: [0]\n    stages:\n"
                        "      - {id: 0, component: llm.openai, config: {server: engin}}\n");
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/client --allow-servers", bad, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "client.yaml:7:57: pipelines[0].stages[0].config.server: unknown server 'engin' (did you "
                           "mean 'engine'?)");
    free(out);
    bad = cb_test_write(dir, "nocmd.yaml",
                        "pipelines:\n  - {name: p, inputs: [0], stages: [{id: 0, component: util.noop}]}\n"
                        "servers:\n  - name: a\n    command: [no-such-program-colobench]\n    port: 9\n");
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/nocmd --allow-servers", bad, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "nocmd.yaml:5:15: servers[0].command[0]: server 'a': cannot run 'no-such-program-colobench'");
    free(out);
}

/* ---- `server:` resolution (a test stage with `server` and `url`) ---------------------------- */

enum { P_SERVER, P_URL, P_COUNT };
static const cb_param_def k_client_params[P_COUNT] = {
    [P_SERVER] = {"server", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL, "a server of `servers:`"},
    [P_URL] = {"url", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL, "the server's base URL"},
};

static int client_create(void *state, const cb_stage_args *args, cb_error *err) { return CB_OK; }
static int client_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) { return CB_OK; }
/* check() sees the url the loader set. */
static int client_check(const cb_stage_args *a, cb_error *err) {
    const char *u = a->values[P_URL].s;
    if (!a->values[P_URL].has_value || !u || strncmp(u, "http://", 7) != 0)
        return cb_error_set(err, CB_ECONFIG, "test.client needs a url (got %s)", u ? u : "none");
    return CB_OK;
}

static const cb_stage_ops k_client_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.client",
    .summary = "a client of a server (test)",
    .params = k_client_params,
    .n_params = P_COUNT,
    .state_size = 8,
    .create = client_create,
    .run = client_run,
    .check = client_check,
};

static const char k_client_yaml[] =
    "name: c\n"
    "servers:\n"
    "  - name: vllm\n"
    "    command: [vllm, serve, m, --port, \"{port}\"]\n"
    "    host: 127.0.0.2\n"
    "    port: 8001\n"
    "    env: {A: \"x{port}\", B: \"\"}\n"
    "    cpus: [0]\n"
    "    stop_timeout: 2.5\n"
    "  - name: other\n"
    "    command: [other]\n"
    "    host: \"::1\"\n"
    "    port: 8002\n"
    "    device: cuda:1\n"
    "pipelines:\n"
    "  - name: p\n"
    "    inputs: [0]\n"
    "    stages:\n"
    "      - {id: 0, component: test.client, config: {server: vllm}}\n";

static int load_client(cb_registry *reg, const char *text, const char *const *sets, size_t n_sets, cb_doc **doc,
                       cb_spec **spec, cb_error *e) {
    cb_error_clear(e);
    *doc = NULL;
    *spec = NULL;
    int rc = cb_doc_load_string(text, strlen(text), "c.yaml", doc, e);
    for (size_t i = 0; !rc && i < n_sets; i++) rc = cb_doc_set(*doc, sets[i], e);
    if (!rc) rc = cb_spec_build(*doc, reg, spec, e);
    return rc;
}

static void test_server_url_resolution(void) {
    cb_registry *reg = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &e), 0);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &k_client_ops, "test", &e), 0);
    cb_doc *doc;
    cb_spec *spec;
    int rc = load_client(reg, k_client_yaml, NULL, 0, &doc, &spec, &e);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s: %s\n", e.key, e.msg);
    if (!rc) {
        CB_CHECK_EQ_INT(spec->n_servers, 2);
        CB_CHECK_STR_EQ(spec->pipelines[0].stages[0].values[P_URL].s, "http://127.0.0.2:8001");
        CB_CHECK_STR_EQ(spec->servers[1].url, "http://[::1]:8002");
        CB_CHECK_EQ_INT(spec->servers[0].stop_timeout_ns, 2500000000LL);
        CB_CHECK_EQ_INT(spec->servers[0].ready_timeout_ns, 120000000000LL);
        CB_CHECK_STR_EQ(spec->servers[0].ready, "/health");
        CB_CHECK_EQ_INT(spec->servers[1].gpu_index, 1);
        /* config.yaml: the servers come back the same; url is not written (server is). */
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        CB_CHECK_EQ_INT(cb_spec_write_yaml(spec, f), 0);
        fclose(f);
        CB_CHECK(!strstr(text, "url:"));
        CB_CHECK_CONTAINS(text, "server: \"vllm\"");
        cb_doc *doc2;
        cb_spec *spec2;
        rc = load_client(reg, text, NULL, 0, &doc2, &spec2, &e);
        CB_CHECK_EQ_INT(rc, 0);
        if (rc) printf("# reload: %s: %s\n%s\n", e.key, e.msg, text);
        if (!rc) {
            const cb_server_spec *a = &spec->servers[0], *b = &spec2->servers[0];
            CB_CHECK_EQ_INT(b->n_command, a->n_command);
            CB_CHECK_STR_EQ(b->command[4], "{port}");
            CB_CHECK_EQ_INT(b->n_env, 2);
            CB_CHECK_STR_EQ(b->env_values[0], "x{port}");
            CB_CHECK_STR_EQ(b->cwd, a->cwd);
            CB_CHECK_EQ_INT(b->n_cpus, 1);
            CB_CHECK_EQ_INT(b->stop_timeout_ns, a->stop_timeout_ns);
            CB_CHECK_STR_EQ(spec2->servers[1].device, "cuda:1");
            CB_CHECK_STR_EQ(spec2->pipelines[0].stages[0].values[P_URL].s, "http://127.0.0.2:8001");
        }
        cb_spec_destroy(spec2);
        cb_doc_destroy(doc2);
        free(text);
    }
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    static const struct {
        const char *set, *want;
    } cases[] = {
        {"pipelines.0.stages.0.config.server=vlm", "config.server: unknown server 'vlm' (did you mean 'vllm'?)"},
        {"pipelines.0.stages.0.config.server=zzzzzzzz", "unknown server 'zzzzzzzz' (declared servers: vllm, other)"},
        {"pipelines.0.stages.0.config.url=http://x", "set server (a server of `servers:`) or url, not both"},
        {"servers.1.name=vllm", "servers[1].name: duplicate server name 'vllm'"},
        {"servers.1.host=127.0.0.2", "servers[1].port: servers[0] ('vllm') listens on http://127.0.0.2:8001"},
        {"servers.1.env={CUDA_VISIBLE_DEVICES: \"0\"}", "servers[1].env.CUDA_VISIBLE_DEVICES: device sets it"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *sets[2] = {cases[i].set, "servers.1.port=8001"};
        size_t n_sets = strstr(cases[i].want, "servers[1].port") ? 2 : 1;
        rc = load_client(reg, k_client_yaml, sets, n_sets, &doc, &spec, &e);
        CB_CHECK_EQ_INT(rc, CB_ECONFIG);
        char shown[2048];
        cb_error_format(&e, shown, sizeof shown);
        CB_CHECK_CONTAINS(shown, cases[i].want);
        CB_CHECK(e.line > 0 && e.col > 0);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    /* No servers at all: the position is the `server` key's value. */
    const char *noservers = "pipelines:\n  - name: p\n    inputs: [0]\n    stages:\n"
                            "      - {id: 0, component: test.client, config: {server: web}}\n";
    rc = load_client(reg, noservers, NULL, 0, &doc, &spec, &e);
    CB_CHECK_EQ_INT(rc, CB_ECONFIG);
    CB_CHECK_CONTAINS(e.msg, "unknown server 'web': the benchmark declares no `servers:`");
    CB_CHECK_EQ_INT(e.line, 5);
    CB_CHECK_EQ_INT(e.col, 58);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    cb_registry_destroy(reg);
}

/* The bounds that keep the loader (and the fuzzer) bounded. */
static void test_bounds(void) {
    cb_registry *reg = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &e), 0);
    char *text = malloc(1 << 20);
    size_t off = (size_t)snprintf(text, 1 << 20, "pipelines:\n  - {name: p, inputs: [0], stages: [{id: 0, component: util.noop}]}\nservers:\n");
    for (int i = 0; i <= CB_SPEC_MAX_SERVERS; i++)
        off += (size_t)snprintf(text + off, (1 << 20) - off, "  - {name: s%d, command: [x], port: %d}\n", i, 1000 + i);
    cb_doc *doc;
    cb_spec *spec;
    int rc = load_client(reg, text, NULL, 0, &doc, &spec, &e);
    CB_CHECK_EQ_INT(rc, CB_ECONFIG);
    CB_CHECK_CONTAINS(e.msg, "more than 16 servers");
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    off = (size_t)snprintf(text, 1 << 20, "pipelines:\n  - {name: p, inputs: [0], stages: [{id: 0, component: util.noop}]}\n"
                                          "servers:\n  - name: s\n    port: 1\n    command: [x");
    for (int i = 0; i < CB_SERVER_MAX_ARGS; i++) off += (size_t)snprintf(text + off, (1 << 20) - off, ", a");
    snprintf(text + off, (1 << 20) - off, "]\n");
    rc = load_client(reg, text, NULL, 0, &doc, &spec, &e);
    CB_CHECK_EQ_INT(rc, CB_ECONFIG);
    CB_CHECK_CONTAINS(e.msg, "more than 256 arguments");
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    free(text);
    cb_registry_destroy(reg);
}

int main(void) {
    /* Supervisors orphaned by a SIGKILLed colobench come here to be reaped. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    CB_RUN(test_server_url_resolution);
    CB_RUN(test_bounds);
    CB_RUN(test_needs_allow_servers);
    CB_RUN(test_config_errors_cli);
    CB_RUN(test_normal_end);
    CB_RUN(test_server_environment);
    CB_RUN(test_stage_error);
    CB_RUN(test_sigint_mid_run);
    CB_RUN(test_sigterm_mid_run);
    CB_RUN(test_sigkill_mid_run);
    CB_RUN(test_ready_timeout);
    CB_RUN(test_signal_during_readiness);
    CB_RUN(test_exits_before_ready);
    CB_RUN(test_dies_mid_run_threads);
    CB_RUN(test_dies_mid_run_processes);
    reap_orphans();
    return cb_test_done();
}
