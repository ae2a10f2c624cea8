/* Tests of a run's integrity, through build/colobench as a user runs it: nothing measured is
 * lost or torn, nothing is written outside the output directory, no run hangs, an untrusted
 * config runs no code.
 *
 * - hostile names (pipelines "..", "./a", "../../../x", a benchmark "../../x", the same through
 *   --set) are refused by validate and run, naming file, line, column and key, writing nothing;
 * - a symbolic link planted in the output directory is replaced, never followed;
 * - a second run into a directory in use is refused and the first finishes intact;
 * - a full disk (a 512 KiB tmpfs this test mounts; skipped where mounting is not allowed) gives
 *   "No space left on device", a non-zero exit, no temporary file left, no torn row;
 * - SIGKILL of a processes-mode parent: the children finish what they measured, and `colobench
 *   summarize` rebuilds the merged CSVs and summary.json;
 * - an interrupt during the baselines leaves a top-level summary.json, config.yaml, env.json;
 * - timeouts hold after the last query was issued (an overloaded open loop, a closed loop with
 *   every query in a 30 s stage run) and a 1 h util.sleep ends at the timeout;
 * - SIGINT during a long stage run ends the run; a plugin stage stuck in run() (ignoring
 *   cancellation) gets its thread abandoned and the run still ends with its summary;
 * - a config read from a pipe runs in processes mode (children get the text, not the path);
 * - workers: 1024 starts without gigabytes of buffers;
 * - validate runs no plugin constructor without --allow-plugins; a directory in plugin_paths
 *   and monitors.nvml_library without it are refused;
 * - control characters from a config are escaped in messages.
 * Times asserted are generous upper bounds (they hold on a loaded machine and under sanitizers)
 * that the old behaviour misses by a wide margin (it ran 22 s to 1 h).
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CLI CB_TEST_COLOBENCH
#define PLUGIN CB_TEST_BINDIR "/tests/plugins/test_plugin.so"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Starts colobench with args (NULL-terminated) in the background, output to log. */
static pid_t start(const char *log, const char *const *args) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)CLI;
        for (const char *const *a = args; *a && n < 31; a++) argv[n++] = (char *)*a;
        argv[n] = NULL;
        execv(CLI, argv);
        _exit(127);
    }
    return pid;
}

/* Waits for pid up to timeout_s; returns its exit status (128+signal when killed), -1 when it
 * did not end in time (it is then killed). *took gets the seconds it ran. */
static int wait_for(pid_t pid, double timeout_s, double *took) {
    double t0 = now_s();
    for (;;) {
        int ws;
        pid_t r = waitpid(pid, &ws, WNOHANG);
        if (r == pid) {
            if (took) *took = now_s() - t0;
            return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        }
        if (now_s() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
            if (took) *took = now_s() - t0;
            return -1;
        }
        sleep_s(0.02);
    }
}

static bool wait_file(const char *path, double timeout_s) {
    double t0 = now_s();
    struct stat sb;
    while (stat(path, &sb) != 0) {
        if (now_s() - t0 > timeout_s) return false;
        sleep_s(0.02);
    }
    return true;
}

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Every line of a CSV file has the header's number of fields (quoted fields without commas
 * inside, as colobench's names here), and the file ends with a newline. */
static void check_csv_whole(const char *path) {
    size_t len = 0;
    char *text = cb_test_read(path, &len);
    CB_CHECK(text != NULL);
    if (!text) return;
    CB_CHECK(len == 0 || text[len - 1] == '\n');
    int want = -1, bad = 0, lines = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        int fields = 1;
        for (char *c = line; *c; c++) fields += *c == ',';
        if (want < 0) want = fields;
        else if (fields != want) bad++;
        lines++;
        line = nl ? nl + 1 : NULL;
    }
    CB_CHECK_EQ_INT(bad, 0);
    if (bad) printf("# %s: %d of %d lines torn\n", path, bad, lines);
    free(text);
}

static const char *bench(const char *dir, const char *name, const char *yaml) {
    return cb_test_write(dir, name, yaml);
}

/* ---- names --------------------------------------------------------------------------------- */

static void test_hostile_names(void) {
    const char *dir = cb_test_tmpdir();
    static const struct {
        const char *top, *pipe, *set, *key, *pos;
    } cases[] = {
        {"t", "..", NULL, "pipelines[0].name", ":3:11:"},
        {"t", "./a", NULL, "pipelines[0].name", ":3:11:"},
        {"t", "../../../x", NULL, "pipelines[0].name", ":3:11:"},
        {"../../x", "a", NULL, "name: ", ":1:7:"},
        {"t", "a", "pipelines.0.name=../x", "pipelines[0].name", "<--set>"},
        {"t", "a", "name=../../x", "name", "<--set>"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml,
                 "name: \"%s\"\npipelines:\n  - name: \"%s\"\n    inputs: [0]\n    outputs: [0]\n"
                 "    loadgen: {component: closed, max_queries: 5}\n"
                 "    stages:\n      - {id: 0, component: util.noop}\n",
                 cases[i].top, cases[i].pipe);
        const char *path = bench(dir, "names.yaml", yaml);
        char cmd[2048], set[256] = "";
        if (cases[i].set) snprintf(set, sizeof set, "--set '%s'", cases[i].set);
        char *out = NULL;
        snprintf(cmd, sizeof cmd, "cd %s && " CLI " validate %s %s", dir, path, set);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
        CB_CHECK_CONTAINS(out, cases[i].key);
        CB_CHECK_CONTAINS(out, cases[i].pos);
        CB_CHECK_CONTAINS(out, "names a directory");
        free(out);
        /* run refuses too, and creates nothing (not even out/ beside the config). */
        snprintf(cmd, sizeof cmd, "cd %s/ && mkdir -p w/x && cd w/x && " CLI " run %s %s --quiet", dir, path, set);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
        free(out);
        snprintf(cmd, sizeof cmd, "test -z \"$(find %s -newer %s ! -type d ! -name names.yaml)\" && ! test -e %s/w/x/out",
                 dir, path, dir);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    }
    /* Names with spaces and other text are fine ("RAG serve plain"). */
    const char *ok = bench(dir, "ok.yaml",
                           "name: my bench\npipelines:\n  - name: RAG serve plain\n    inputs: [0]\n"
                           "    outputs: [0]\n    loadgen: {component: closed, max_queries: 5}\n"
                           "    stages:\n      - {id: 0, component: util.noop}\n  - name: b+c\n"
                           "    inputs: [0]\n    outputs: [0]\n    loadgen: {component: closed, max_queries: 5}\n"
                           "    stages:\n      - {id: 0, component: util.noop}\n");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/ok --quiet", ok, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/ok/pipelines/RAG serve plain/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 6);
}

/* Names are written whole in every CSV: two pipelines whose names share a 120-byte prefix of
 * quotes and commas (242 bytes escaped), stage names sharing a 200-byte prefix, multi-byte UTF-8
 * (the old recorder cut escaped names at 159 bytes: the pipelines became one, a character was
 * split). In both modes: env.json's wall_start_ns is summary.json's (it was taken apart, up to
 * 80 ms before). */
static void test_long_names_whole_and_one_wall_start(void) {
    const char *dir = cb_test_tmpdir();
    char prefix[512] = "", yaml[8192];
    size_t o = 0;
    for (int i = 0; i < 100; i++) o += (size_t)snprintf(prefix + o, sizeof prefix - o, "\\\"");
    for (int i = 0; i < 20; i++) o += (size_t)snprintf(prefix + o, sizeof prefix - o, ",");
    char stage[256];
    memset(stage, 's', 200);
    stage[200] = '\0';
    o = (size_t)snprintf(yaml, sizeof yaml, "name: names\nmonitors: false\npipelines:\n");
    for (int k = 0; k < 2; k++)
        o += (size_t)snprintf(yaml + o, sizeof yaml - o,
                              "  - name: \"%s%s\"\n    inputs: [0]\n    outputs: [1]\n"
                              "    loadgen: {component: closed, max_queries: 5}\n    stages:\n"
                              "      - {id: 0, name: \"%s-first\", component: util.noop, outputs: [1]}\n"
                              "      - {id: 1, name: \"%s-second\", component: util.noop}\n",
                              prefix, k ? "two" : "one", stage, stage);
    o += (size_t)snprintf(yaml + o, sizeof yaml - o, "  - name: \"");
    for (int i = 0; i < 60; i++) o += (size_t)snprintf(yaml + o, sizeof yaml - o, "\xc3\xa9");
    o += (size_t)snprintf(yaml + o, sizeof yaml - o,
                          "\xc3\xbc\"\n    inputs: [0]\n    outputs: [0]\n"
                          "    loadgen: {component: closed, max_queries: 5}\n    stages:\n"
                          "      - {id: 0, name: \"");
    for (int i = 0; i < 40; i++) o += (size_t)snprintf(yaml + o, sizeof yaml - o, "\xe5\x90\x8d\xe5\x89\x8d");
    snprintf(yaml + o, sizeof yaml - o, "\", component: util.noop}\n");
    const char *cfg = bench(dir, "names.yaml", yaml);
    const char *script = cb_test_write(dir, "check_names.py",
        "import csv, json, sys\n"
        "d = sys.argv[1]\n"
        "q = '\"' * 100 + ',' * 20\n"
        "s = 's' * 200\n"
        "u, w = '\\u00e9' * 60 + '\\u00fc', '\\u540d\\u524d' * 40\n"
        "want = {(q + 'one', s + '-first'), (q + 'one', s + '-second'), (q + 'two', s + '-first'),\n"
        "        (q + 'two', s + '-second'), (u, w)}\n"
        "def rows(f): return list(csv.DictReader(open(d + '/' + f, encoding='utf-8', newline='')))\n"
        "got = {r['pipeline'] for r in rows('queries.csv')}\n"
        "assert got == {p for p, _ in want}, 'queries.csv pipelines: %r' % sorted(got)\n"
        "got = {(r['pipeline'], r['stage']) for r in rows('events.csv')}\n"
        "assert got == want, 'events.csv (pipeline, stage): %r' % sorted(got)\n"
        "e, m = json.load(open(d + '/env.json')), json.load(open(d + '/summary.json'))\n"
        "assert e['wall_start_ns'] == m['wall_start_ns'], 'env.json wall_start_ns %d, summary.json %d' % "
        "(e['wall_start_ns'], m['wall_start_ns'])\n"
        "print('ok')\n");
    const char *modes[] = {"threads", "processes"};
    for (int k = 0; k < 2; k++) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, CLI " run %s --set collocation.mode=%s -o %s/%s --quiet && python3 %s %s/%s",
                 cfg, modes[k], dir, modes[k], script, dir, modes[k]);
        cb_test_sh_ok(cmd);
    }
    /* A stage name longer than the records hold is refused at validate, naming the key. */
    char big[1100];
    memset(big, 'n', 1025);
    big[1025] = '\0';
    snprintf(yaml, sizeof yaml,
             "name: big\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n"
             "    stages:\n      - {id: 0, name: %s, component: util.noop}\n", big);
    const char *bigcfg = bench(dir, "big.yaml", yaml);
    char *said = NULL;
    char vcmd[2048];
    snprintf(vcmd, sizeof vcmd, CLI " validate %s", bigcfg);
    CB_CHECK_EQ_INT(cb_test_sh(vcmd, &said), 2);
    CB_CHECK_CONTAINS(said, "pipelines[0].stages[0].name: a stage name is at most 1024 bytes");
    free(said);
    /* A child's own env.json and summary.json agree too. */
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s/processes/pipelines' && for p in *; do python3 -c 'import json, sys; "
             "e, m = (json.load(open(sys.argv[1] + f)) for f in (\"/env.json\", \"/summary.json\")); "
             "assert e[\"wall_start_ns\"] == m[\"wall_start_ns\"], (e[\"wall_start_ns\"], m[\"wall_start_ns\"])' \"$p\" || exit 1; done",
             dir);
    cb_test_sh_ok(cmd);
}

/* ---- the output directory ---------------------------------------------------------------- */

static const char k_small[] =
    "name: small\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [1]\n"
    "    loadgen: {component: closed, max_queries: 200}\n    stages:\n"
    "      - {id: 0, name: src, component: util.source, outputs: [1], config: {bytes: 64}}\n"
    "      - {id: 1, name: sink, component: util.noop}\n";

static void test_symlink_not_followed(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = bench(dir, "small.yaml", k_small);
    const char *victim = cb_test_write(dir, "victim", "precious\n");
    char out[1024], cmd[2048];
    snprintf(out, sizeof out, "%s/out", dir);
    mkdir(out, 0755);
    static const char *const planted[] = {"queries.csv", "summary.json", "events.bin", "env.json",
                                          "config.yaml", "metrics.csv"};
    for (size_t i = 0; i < sizeof planted / sizeof planted[0]; i++) {
        char link[1200];
        snprintf(link, sizeof link, "%s/%s", out, planted[i]);
        CB_CHECK_EQ_INT(symlink(victim, link), 0);
    }
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s --quiet", cfg, out);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    char *v = cb_test_read(victim, NULL);
    CB_CHECK_STR_EQ(v, "precious\n");
    free(v);
    for (size_t i = 0; i < sizeof planted / sizeof planted[0]; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", out, planted[i]);
        struct stat sb;
        CB_CHECK(lstat(p, &sb) == 0 && S_ISREG(sb.st_mode));
    }
    snprintf(cmd, sizeof cmd, "%s/queries.csv", out);
    CB_CHECK_EQ_INT(cb_test_count_lines(cmd), 201);
    /* A symbolic link where colobench makes a directory is refused, not followed. */
    char other[1024], link[1200];
    snprintf(other, sizeof other, "%s/elsewhere", dir);
    mkdir(other, 0755);
    snprintf(link, sizeof link, "%s/pout", dir);
    mkdir(link, 0755);
    snprintf(link, sizeof link, "%s/pout/pipelines", dir);
    CB_CHECK_EQ_INT(symlink(other, link), 0);
    const char *two = bench(dir, "two.yaml",
                            "name: two\ncollocation: {mode: processes}\npipelines:\n"
                            "  - name: a\n    inputs: [0]\n    outputs: [0]\n"
                            "    loadgen: {component: closed, max_queries: 5}\n"
                            "    stages:\n      - {id: 0, component: util.noop}\n");
    char *o = NULL;
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/pout --quiet", two, dir);
    CB_CHECK(cb_test_sh(cmd, &o) != 0);
    CB_CHECK_CONTAINS(o, "pipelines");
    free(o);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", other);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
}

/* A directory that did not hold colobench results is not cleared (`-o .`), and a run never
 * replaces its own benchmark file. */
static void test_foreign_dir_and_own_config(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[2048], *o = NULL;
    cb_test_write(dir, "events.csv", "my own data\n");
    const char *cfg = bench(dir, "config.yaml", k_small);
    snprintf(cmd, sizeof cmd, "cd %s && " CLI " run config.yaml -o . --quiet", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 2);
    CB_CHECK_CONTAINS(o, "the benchmark file is the output directory's config.yaml");
    free(o);
    char *v = cb_test_read(cfg, NULL);
    CB_CHECK_STR_EQ(v, k_small);
    free(v);
    /* Into a directory of other files: they stay (only what the run writes is replaced). */
    char out[1200], keep[1300];
    snprintf(out, sizeof out, "%s/mine", dir);
    mkdir(out, 0755);
    snprintf(keep, sizeof keep, "%s/trace.json", out);
    cb_test_write(out, "trace.json", "{}\n");
    cb_test_write(out, "notes.txt", "mine\n");
    const char *notrace = bench(dir, "n.yaml", "name: n\ntrace: false\npipelines:\n  - name: p\n    inputs: [0]\n"
                                               "    outputs: [0]\n    loadgen: {max_queries: 5}\n"
                                               "    stages:\n      - {id: 0, component: util.noop}\n");
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s --quiet", notrace, out);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    v = cb_test_read(keep, NULL);
    CB_CHECK_STR_EQ(v, "{}\n");
    free(v);
    /* Once it holds colobench results, a rerun clears what the earlier run left. */
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    CB_CHECK(!exists(keep));
    snprintf(keep, sizeof keep, "%s/notes.txt", out);
    CB_CHECK(exists(keep));
}

static void test_two_runs_one_dir(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = bench(dir, "slow.yaml",
                            "name: slow\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n"
                            "    loadgen: {component: closed, max_queries: 30}\n    stages:\n"
                            "      - {id: 0, component: util.sleep, config: {duration_us: 50000}}\n");
    char out[1024], log1[1024], state[1200];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(log1, sizeof log1, "%s/first.log", dir);
    snprintf(state, sizeof state, "%s/run.state", out);
    const char *a1[] = {"run", cfg, "-o", out, "--quiet", NULL};
    pid_t first = start(log1, a1);
    CB_CHECK(wait_file(state, 60));
    char cmd[2048], *o = NULL;
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s --quiet", cfg, out);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 2);
    CB_CHECK_CONTAINS(o, "in use by another colobench run (pid");
    free(o);
    CB_CHECK_EQ_INT(wait_for(first, 120, NULL), 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/queries.csv", out);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 31);
    check_csv_whole(p);
    snprintf(p, sizeof p, "%s/summary.json", out);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "d[\"pipelines\"][0][\"queries\"]"), 30);
}

static void test_disk_full(void) {
    const char *dir = cb_test_tmpdir();
    char mnt[1024];
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=512k") != 0) {
        printf("# SKIP disk full: cannot mount a tmpfs here (%s): needs root\n", strerror(errno));
        return;
    }
    const char *modes[] = {"threads", "processes"};
    for (int m = 0; m < 2; m++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml,
                 "name: full\ncollocation: {mode: %s}\nmonitors: false\npipelines:\n"
                 "  - name: p\n    inputs: [0]\n    outputs: [1]\n"
                 "    loadgen: {component: offline, max_queries: 100000}\n    stages:\n"
                 "      - {id: 0, name: src, component: util.noop, outputs: [1]}\n"
                 "      - {id: 1, name: sink, component: util.noop}\n",
                 modes[m]);
        const char *cfg = bench(dir, "full.yaml", yaml);
        char out[1200], cmd[2048], *o = NULL;
        snprintf(out, sizeof out, "%s/%s", mnt, modes[m]);
        snprintf(cmd, sizeof cmd, CLI " run %s -o %s --quiet", cfg, out);
        int st = cb_test_sh(cmd, &o);
        CB_CHECK_EQ_INT(st, 1);
        CB_CHECK_CONTAINS(o, "No space left on device");
        free(o);
        /* No temporary file is left, and whatever was written is whole. */
        snprintf(cmd, sizeof cmd, "test -z \"$(find %s -name '*.tmp.*')\"", out);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
        static const char *const csvs[] = {"queries.csv", "events.csv", "pipelines/p/queries.csv",
                                           "pipelines/p/events.csv"};
        for (size_t i = 0; i < 4; i++) {
            char p[1400];
            snprintf(p, sizeof p, "%s/%s", out, csvs[i]);
            if (exists(p)) check_csv_whole(p);
        }
        snprintf(cmd, sizeof cmd, "rm -rf %s", out);
        cb_test_sh(cmd, NULL);
    }
    umount2(mnt, MNT_DETACH);
}

/* ---- killed and interrupted runs ----------------------------------------------------------- */

static const char k_two_slow[] =
    "name: killed\ncollocation: {mode: processes}\nmonitors: false\npipelines:\n"
    "  - name: a\n    inputs: [0]\n    outputs: [0]\n"
    "    loadgen: {component: closed, max_queries: 400}\n    stages:\n"
    "      - {id: 0, component: util.sleep, config: {duration_us: 10000}}\n"
    "  - name: b\n    inputs: [0]\n    outputs: [0]\n"
    "    loadgen: {component: closed, max_queries: 400}\n    stages:\n"
    "      - {id: 0, component: util.sleep, config: {duration_us: 10000}}\n";

/* k_two_slow with isolated baselines. */
static void with_baselines(char *yaml, size_t size) {
    snprintf(yaml, size, "%s", k_two_slow);
    char *c = strstr(yaml, "collocation: {mode: processes}");
    const char *rep = "collocation: {mode: processes, baseline: isolated}";
    memmove(c + strlen(rep), c + strlen("collocation: {mode: processes}"),
            strlen(c + strlen("collocation: {mode: processes}")) + 1);
    memcpy(c, rep, strlen(rep));
}

static void sigkill_then_summarize(bool baselines) {
    const char *dir = cb_test_tmpdir();
    char yaml[2048];
    if (baselines) with_baselines(yaml, sizeof yaml);
    else snprintf(yaml, sizeof yaml, "%s", k_two_slow);
    const char *cfg = bench(dir, "k.yaml", yaml);
    char out[1024], log[1024], state[1200];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(log, sizeof log, "%s/run.log", dir);
    snprintf(state, sizeof state, "%s/run.state", out);
    const char *args[] = {"run", cfg, "-o", out, "--quiet", NULL};
    pid_t pid = start(log, args);
    CB_CHECK(wait_file(state, 60));
    sleep_s(0.5);
    kill(pid, SIGKILL);
    wait_for(pid, 10, NULL);
    /* The children saw their parent die (SIGTERM), drained, and wrote their results. */
    char ca[1200], cbs[1200], cmd[2048];
    snprintf(ca, sizeof ca, "%s/pipelines/a/summary.json", out);
    snprintf(cbs, sizeof cbs, "%s/pipelines/b/summary.json", out);
    CB_CHECK(wait_file(ca, 60) && wait_file(cbs, 60));
    sleep_s(0.5);
    char *o = NULL;
    snprintf(cmd, sizeof cmd, CLI " summarize %s", out);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 0);
    CB_CHECK_CONTAINS(o, "rebuilt");
    free(o);
    char p[1200];
    snprintf(p, sizeof p, "%s/summary.json", out);
    double qa = cb_test_py_num(p, "d[\"pipelines\"][0][\"queries_total\"]");
    double qb = cb_test_py_num(p, "d[\"pipelines\"][1][\"queries_total\"]");
    CB_CHECK(qa > 0 && qa < 400);
    CB_CHECK(qb > 0 && qb < 400);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "int(d[\"interrupted\"])"), 1);
    char *err = cb_test_py_json(p, "\" \".join(d[\"errors\"])");
    CB_CHECK_CONTAINS(err, "parent");
    free(err);
    if (baselines) { /* the collocation figures against the baselines, rebuilt too */
        /* a null slowdown shows its reason */
        char *sl = cb_test_py_json(p, "[x[\"slowdown\"] is not None or x[\"unavailable\"] "
                                      "for x in d[\"collocation\"][\"pipelines\"]]");
        CB_CHECK_STR_EQ(sl, "[True, True]");
        free(sl);
    }
    snprintf(p, sizeof p, "%s/queries.csv", out);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + (size_t)qa + (size_t)qb);
    check_csv_whole(p);
}

static void test_sigkill_parent_then_summarize(void) {
    sigkill_then_summarize(false);
    sigkill_then_summarize(true);
}

static void test_interrupt_during_baselines(void) {
    const char *dir = cb_test_tmpdir();
    char yaml[2048];
    with_baselines(yaml, sizeof yaml);
    const char *cfg = bench(dir, "b.yaml", yaml);
    char out[1024], log[1024], state[1200];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(log, sizeof log, "%s/run.log", dir);
    snprintf(state, sizeof state, "%s/baseline/a/run.state", out);
    const char *args[] = {"run", cfg, "-o", out, "--quiet", NULL};
    pid_t pid = start(log, args);
    CB_CHECK(wait_file(state, 60));
    kill(pid, SIGINT);
    double took = 0;
    CB_CHECK_EQ_INT(wait_for(pid, 60, &took), 1);
    char p[1200];
    snprintf(p, sizeof p, "%s/summary.json", out);
    char *v = cb_test_py_json(p, "d[\"stopped_in\"], d[\"interrupted\"], d[\"completed\"]");
    CB_CHECK_STR_EQ(v, "baselines True False");
    free(v);
    snprintf(p, sizeof p, "%s/config.yaml", out);
    CB_CHECK(exists(p));
    snprintf(p, sizeof p, "%s/env.json", out);
    CB_CHECK(exists(p));
    snprintf(p, sizeof p, "%s/baseline/a/summary.json", out);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "int(d[\"interrupted\"])"), 1);
}

/* ---- timeouts and stuck stages ------------------------------------------------------------- */

static int run_timed(const char *dir, const char *yaml, double limit_s, double *took, char **log_out) {
    const char *cfg = bench(dir, "t.yaml", yaml);
    char out[1024], log[1024];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(log, sizeof log, "%s/run.log", dir);
    const char *args[] = {"run", cfg, "-o", out, "--quiet", "--allow-plugins", NULL};
    pid_t pid = start(log, args);
    int st = wait_for(pid, limit_s, took);
    if (log_out) *log_out = cb_test_read(log, NULL);
    return st;
}

static void test_timeout_after_last_issue(void) {
    /* An overloaded open loop: 2000 q/s for 2 s into a 10 ms stage with one worker is 40 s of
     * work; the run must end at its timeout plus the drain (the old code ran it all). */
    const char *dir = cb_test_tmpdir();
    double took = 0;
    int st = run_timed(dir,
                       "name: over\nmonitors: false\npipelines:\n  - name: p\n    inputs: [0]\n"
                       "    outputs: [0]\n    loadgen: {component: poisson, timeout: 2, config: {rate: 2000}}\n"
                       "    stages:\n      - {id: 0, component: util.sleep, config: {duration_us: 10000}}\n",
                       60, &took, NULL);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK(took < 20);
    printf("# overloaded open loop, timeout 2 s: ended after %.1f s\n", took);
    char p[1200];
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "int(d[\"timed_out\"])"), 1);
    CB_CHECK(cb_test_py_num(p, "d[\"pipelines\"][0][\"cancelled\"]") > 0);
    /* A closed loop with every query inside a 30 s stage run. */
    dir = cb_test_tmpdir();
    st = run_timed(dir,
                   "name: closed\nmonitors: false\npipelines:\n  - name: p\n    inputs: [0]\n"
                   "    outputs: [0]\n    loadgen: {component: closed, timeout: 1, config: {concurrency: 4}}\n"
                   "    stages:\n      - {id: 0, component: util.sleep, workers: 4, config: {duration_us: 30000000}}\n",
                   60, &took, NULL);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK(took < 20);
    printf("# closed loop all in flight, timeout 1 s: ended after %.1f s\n", took);
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "int(d[\"timed_out\"])"), 1);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "d[\"pipelines\"][0][\"cancelled\"]"), 4);
}

static void test_long_stage_and_signals(void) {
    /* A 1 h sleep with a 1 s timeout ends at the timeout (the sleep is cancellable). */
    const char *dir = cb_test_tmpdir();
    static const char k_long[] =
        "name: long\nmonitors: false\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n"
        "    loadgen: {component: closed, timeout: %d}\n"
        "    stages:\n      - {id: 0, component: util.sleep, config: {duration_us: 3600000000}}\n";
    char yaml[1024];
    snprintf(yaml, sizeof yaml, k_long, 1);
    double took = 0;
    CB_CHECK_EQ_INT(run_timed(dir, yaml, 60, &took, NULL), 0);
    CB_CHECK(took < 20);
    /* SIGINT ends it too, long before its timeout: the first drains (2 s), then cancels. */
    dir = cb_test_tmpdir();
    snprintf(yaml, sizeof yaml, k_long, 600);
    const char *cfg = bench(dir, "t.yaml", yaml);
    char out[1024], log[1024], state[1200];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(log, sizeof log, "%s/run.log", dir);
    snprintf(state, sizeof state, "%s/run.state", out);
    const char *args[] = {"run", cfg, "-o", out, "--quiet", NULL};
    pid_t pid = start(log, args);
    CB_CHECK(wait_file(state, 60));
    /* run.state is written before the gate opens: give the driver time to issue its query
     * (a loaded machine under a sanitizer may not have yet; then nothing is in flight, which
     * the checks below accept, and the signal still has to end the run). */
    usleep(1000000);
    kill(pid, SIGINT);
    CB_CHECK_EQ_INT(wait_for(pid, 30, &took), 1);
    CB_CHECK(took < 20);
    char p[1200];
    snprintf(p, sizeof p, "%s/summary.json", out);
    CB_CHECK_EQ_INT((int)cb_test_py_num(p, "int(d[\"interrupted\"])"), 1);
    /* The query in the 1 h sleep (if it was issued) is cancelled, not left running. */
    char *v = cb_test_py_json(p, "d[\"pipelines\"][0][\"queries_total\"], d[\"pipelines\"][0][\"cancelled\"]");
    CB_CHECK(v && (strcmp(v, "1 1") == 0 || strcmp(v, "0 0") == 0));
    if (v && strcmp(v, "0 0") == 0) printf("# SIGINT came before the first query was issued\n");
    free(v);
}

static void test_stuck_plugin_abandoned(void) {
    const char *modes[] = {"threads", "processes"};
    for (int m = 0; m < 2; m++) {
        const char *dir = cb_test_tmpdir();
        char yaml[1024];
        snprintf(yaml, sizeof yaml,
                 "name: stuck\nplugin_paths: ['" PLUGIN "']\ncollocation: {mode: %s}\nmonitors: false\n"
                 "pipelines:\n  - name: p\n    inputs: [0]\n    outputs: [1]\n"
                 "    loadgen: {component: closed, timeout: 1, config: {concurrency: 2}}\n"
                 "    stages:\n      - {id: 0, name: fast, component: util.noop, outputs: [1]}\n"
                 "      - {id: 1, name: stuck, component: test.stuck, workers: 2}\n",
                 modes[m]);
        double took = 0;
        char *log = NULL;
        int st = run_timed(dir, yaml, 60, &took, &log);
        CB_CHECK_EQ_INT(st, 1);
        CB_CHECK(took < 30);
        CB_CHECK_CONTAINS(log, "abandoned");
        free(log);
        printf("# %s: a stage stuck in run(): the run ended after %.1f s\n", modes[m], took);
        char p[1200];
        snprintf(p, sizeof p, "%s/out/summary.json", dir);
        /* The two stuck queries never ended (no query record); the runs before the stuck stage
         * were recorded. */
        char *v = cb_test_py_json(p, "\"2 queries in flight\" in \" \".join(d[\"errors\"]), "
                                     "d[\"pipelines\"][0][\"queries_total\"], d[\"pipelines\"][0][\"stages\"][0][\"runs\"]");
        CB_CHECK_STR_EQ(v, "True 0 2");
        free(v);
    }
}

/* ---- config handling ---------------------------------------------------------------------- */

static void test_config_from_pipe_processes(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = bench(dir, "pipe.yaml",
                            "name: piped\ncollocation: {mode: processes}\nmonitors: false\npipelines:\n"
                            "  - name: a\n    inputs: [0]\n    outputs: [0]\n"
                            "    loadgen: {component: closed, max_queries: 20}\n"
                            "    stages:\n      - {id: 0, component: util.noop}\n"
                            "  - name: b\n    inputs: [0]\n    outputs: [0]\n"
                            "    loadgen: {component: closed, max_queries: 30}\n"
                            "    stages:\n      - {id: 0, component: util.noop}\n");
    char cmd[2048];
    /* The config comes from a pipe: the parent reads it once, and children that re-read the
     * path (as they used to) would find the pipe empty. */
    snprintf(cmd, sizeof cmd, "cat %s | " CLI " run /dev/stdin -o %s/out --quiet --set pipelines.1.loadgen.max_queries=40",
             cfg, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/out/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 20 + 40);
}

static void test_many_workers_start_small(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = bench(dir, "w.yaml",
                            "name: wide\nmonitors: false\npipelines:\n  - name: p\n    inputs: [0]\n"
                            "    outputs: [0]\n    loadgen: {component: offline, max_queries: 5000}\n"
                            "    stages:\n      - {id: 0, component: util.noop, workers: 1024}\n");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out --quiet", cfg, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    /* The old code took 4 MiB per worker before the start (4.2 GB here). */
    printf("# workers: 1024: peak RSS of the largest child so far %ld MiB\n", ru.ru_maxrss / 1024);
    CB_CHECK_CMP_INT(ru.ru_maxrss / 1024, <, 512);
    char p[1200];
    snprintf(p, sizeof p, "%s/out/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 5001);
}

static void test_plugins_run_no_code_unless_allowed(void) {
    const char *dir = cb_test_tmpdir();
    char marker[1024], cmd[4096], yaml[1024];
    snprintf(marker, sizeof marker, "%s/loaded", dir);
    snprintf(yaml, sizeof yaml,
             "name: plug\nplugin_paths: ['" PLUGIN "']\npipelines:\n  - name: p\n    inputs: [0]\n"
             "    outputs: [0]\n    loadgen: {component: closed, max_queries: 3}\n"
             "    stages:\n      - {id: 0, component: util.noop}\n");
    const char *cfg = bench(dir, "plug.yaml", yaml);
    char *o = NULL;
    snprintf(cmd, sizeof cmd, "CB_TEST_CTOR_MARKER=%s " CLI " validate %s", marker, cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 0);
    CB_CHECK_CONTAINS(o, "not loaded");
    free(o);
    CB_CHECK(!exists(marker));
    snprintf(cmd, sizeof cmd, "CB_TEST_CTOR_MARKER=%s " CLI " graph %s", marker, cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, NULL), 0);
    CB_CHECK(!exists(marker));
    /* A stage of the plugin: refused, saying why. */
    snprintf(yaml, sizeof yaml,
             "name: plug\nplugin_paths: ['" PLUGIN "']\npipelines:\n  - name: p\n    inputs: [0]\n"
             "    outputs: [0]\n    loadgen: {component: closed, max_queries: 3}\n"
             "    stages:\n      - {id: 0, component: test.stuck, config: {seconds: 0}}\n");
    cfg = bench(dir, "plug2.yaml", yaml);
    snprintf(cmd, sizeof cmd, "CB_TEST_CTOR_MARKER=%s " CLI " run %s -o %s/out --quiet", marker, cfg, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 2);
    CB_CHECK_CONTAINS(o, "--allow-plugins");
    CB_CHECK_CONTAINS(o, ":9:");
    free(o);
    CB_CHECK(!exists(marker));
    /* Allowed: loaded, named in the output and in env.json. */
    snprintf(cmd, sizeof cmd, "CB_TEST_CTOR_MARKER=%s " CLI " run %s -o %s/out --quiet --allow-plugins", marker, cfg,
             dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 0);
    CB_CHECK_CONTAINS(o, "loaded plugin");
    free(o);
    CB_CHECK(exists(marker));
    char p[1200];
    snprintf(p, sizeof p, "%s/out/env.json", dir);
    char *v = cb_test_py_json(p, "[l[\"why\"] for l in d[\"libraries\"] if l[\"path\"].endswith(\"test_plugin.so\")]");
    CB_CHECK_STR_EQ(v, "['plugin']");
    free(v);
    /* A directory would load every library in it: refused even with --allow-plugins. */
    cfg = bench(dir, "dir.yaml",
                "name: d\nplugin_paths: ['/usr/lib']\npipelines:\n  - name: p\n    inputs: [0]\n"
                "    outputs: [0]\n    stages:\n      - {id: 0, component: util.noop}\n");
    snprintf(cmd, sizeof cmd, CLI " validate %s --allow-plugins", cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 2);
    CB_CHECK_CONTAINS(o, "plugin_paths[0]");
    CB_CHECK_CONTAINS(o, "not a file");
    free(o);
    /* A config may not name an NVML library to load without --allow-plugins. */
    cfg = bench(dir, "nvml.yaml",
                "name: n\nmonitors: {nvml_library: ./evil.so}\npipelines:\n  - name: p\n    inputs: [0]\n"
                "    outputs: [0]\n    stages:\n      - {id: 0, component: util.noop}\n");
    snprintf(cmd, sizeof cmd, CLI " validate %s", cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 2);
    CB_CHECK_CONTAINS(o, "monitors.nvml_library");
    CB_CHECK_CONTAINS(o, ":2:");
    free(o);
}

static void test_control_characters_escaped(void) {
    const char *dir = cb_test_tmpdir();
    /* YAML's "\e" is an ESC in the scalar: it must reach the terminal as text. */
    const char *cfg = bench(dir, "esc.yaml",
                            "name: esc\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n"
                            "    stages:\n      - {id: 0, component: \"util.noop\\e[2J\\e]0;owned\\a\"}\n");
    char cmd[2048], *o = NULL;
    snprintf(cmd, sizeof cmd, CLI " validate %s", cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &o), 2);
    CB_CHECK(o && strchr(o, 0x1b) == NULL && strchr(o, 0x07) == NULL);
    CB_CHECK_CONTAINS(o, "\\x1b[2J");
    free(o);
}

int main(void) {
    CB_RUN(test_hostile_names);
    CB_RUN(test_long_names_whole_and_one_wall_start);
    CB_RUN(test_symlink_not_followed);
    CB_RUN(test_foreign_dir_and_own_config);
    CB_RUN(test_two_runs_one_dir);
    CB_RUN(test_disk_full);
    CB_RUN(test_sigkill_parent_then_summarize);
    CB_RUN(test_interrupt_during_baselines);
    CB_RUN(test_timeout_after_last_issue);
    CB_RUN(test_long_stage_and_signals);
    CB_RUN(test_stuck_plugin_abandoned);
    CB_RUN(test_config_from_pipe_processes);
    CB_RUN(test_many_workers_start_small);
    CB_RUN(test_plugins_run_no_code_unless_allowed);
    CB_RUN(test_control_characters_escaped);
    return cb_test_done();
}
