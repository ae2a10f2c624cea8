/* End-to-end tests of the colobench binary: outputs, exit codes, error messages, signals,
 * plugins. Each runs build/colobench in a shell and checks files and output. */
#include "harness.h"

#include <stdlib.h>

#define CLI CB_TEST_COLOBENCH

#define py_json cb_test_py_json

static void test_version_and_help(void) {
    char *out = NULL;
    CB_CHECK_EQ_INT(cb_test_sh(CLI " --version", &out), 0);
    CB_CHECK_CONTAINS(out, "colobench ");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI " --help", &out), 0);
    CB_CHECK_CONTAINS(out, "validate");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI " frobnicate", &out), 2);
    CB_CHECK_CONTAINS(out, "unknown command");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI, &out), 2);
    free(out);
}

static void test_run_demo_writes_everything(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             CLI " run " CB_TEST_SRCDIR "/examples/demo.yaml -o %s/out --quiet"
                 " --set pipelines.0.loadgen.max_queries=300 --set pipelines.serving.loadgen.max_queries=200",
             dir);
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    CB_CHECK_EQ_INT(st, 0);
    if (st) printf("# %s\n", out);
    free(out);
    char p[1024];
    const char *files[] = {"events.csv", "queries.csv", "summary.json", "config.yaml", "env.json",
                           "stage_metrics.csv"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/out/%s", dir, files[i]);
        CB_CHECK(cb_test_count_lines(p) > 0);
    }
    snprintf(p, sizeof p, "%s/out/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 300 + 200);
    snprintf(p, sizeof p, "%s/out/events.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 300 * 3 + 200 * 2);
    char *ev = cb_test_read(p, NULL);
    const char *hdr = "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,enqueue_ns,start_ns,end_ns,device_ns\n";
    CB_CHECK(ev && !strncmp(ev, hdr, strlen(hdr)));
    free(ev);
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    char *v = py_json(p, "d[\"pipelines\"][0][\"queries\"], d[\"pipelines\"][1][\"queries\"], d[\"interrupted\"]");
    CB_CHECK_STR_EQ(v, "250 200 False"); /* 300 - 50 warm-up queries */
    free(v);
    v = py_json(p, "all(d[\"pipelines\"][0][\"latency_ns\"][k] > 0 for k in (\"p50\",\"p99\",\"max\"))");
    CB_CHECK_STR_EQ(v, "True");
    free(v);
    v = py_json(p, "[s[\"runs\"] for s in d[\"pipelines\"][0][\"stages\"]]");
    CB_CHECK_STR_EQ(v, "[250, 250, 250]");
    free(v);
    /* util.source reports its payload bytes per query: one row each, summed outside warm-up. */
    v = py_json(p, "[q[\"stages\"][0][\"metrics\"][\"bytes\"][\"sum\"] for q in d[\"pipelines\"]]");
    CB_CHECK_STR_EQ(v, "[1024000, 102400]"); /* 250 x 4096, 200 x 512 */
    free(v);
    snprintf(p, sizeof p, "%s/out/stage_metrics.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 300 + 200);
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    /* Every stage reports its untimed prepare() duration (0 for stages without one). */
    v = py_json(p, "all(\"prepare_ns\" in s and s[\"prepare_ns\"] >= 0 for q in d[\"pipelines\"] for s in q[\"stages\"])");
    CB_CHECK_STR_EQ(v, "True");
    free(v);
    /* The resolved config loads again and validates. */
    snprintf(cmd, sizeof cmd, CLI " validate %s/out/config.yaml", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    snprintf(p, sizeof p, "%s/out/env.json", dir);
    v = py_json(p, "d[\"cores_online\"] > 0 and len(d[\"kernel\"]) > 0");
    CB_CHECK_STR_EQ(v, "True");
    free(v);
}

static void test_bad_config_exit_2_with_position(void) {
    const char *dir = cb_test_tmpdir();
    struct {
        const char *yaml, *expect;
    } cases[] = {
        {"name: x\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n    stages:\n"
         "      - {id: 0, name: s, component: util.nop, outputs: []}\n",
         "bad.yaml:7:"},
        {"name: x\npipelines: [\n", "bad.yaml:"},
        {"name: x\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n    stages:\n"
         "      - {id: 0, name: s, component: util.noop, workrs: 2, outputs: []}\n",
         "did you mean 'workers'"},
        {"name: x\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [0]\n"
         "    loadgen: {component: poisson, config: {rate: 0}}\n    stages:\n"
         "      - {id: 0, name: s, component: util.noop, outputs: []}\n",
         "rate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = cb_test_write(dir, "bad.yaml", cases[i].yaml);
        char cmd[2048], *out = NULL;
        snprintf(cmd, sizeof cmd, "cd %s && " CB_TEST_BINDIR "/colobench validate bad.yaml", dir);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
        CB_CHECK_CONTAINS(out, cases[i].expect);
        free(out);
        /* run refuses too, and writes nothing. */
        snprintf(cmd, sizeof cmd, CLI " run %s -o %s/never --quiet", path, dir);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
        free(out);
        snprintf(cmd, sizeof cmd, "%s/never", dir);
        char test[1100];
        snprintf(test, sizeof test, "test ! -e %s", cmd);
        CB_CHECK_EQ_INT(cb_test_sh(test, NULL), 0);
    }
}

static void test_unwritable_output_dir(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[2048], *out = NULL;
    /* A regular file where the directory should be: no permission games needed (root). */
    cb_test_write(dir, "file", "x");
    snprintf(cmd, sizeof cmd, CLI " run " CB_TEST_SRCDIR "/examples/demo.yaml -o %s/file/sub --quiet", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "output directory");
    free(out);
}

static void test_stage_failure_exit_1_keeps_results(void) {
    const char *dir = cb_test_tmpdir();
    const char *path = cb_test_write(dir, "fail.yaml",
                                     "name: f\npipelines:\n  - name: broken\n    inputs: [0]\n    outputs: [1]\n"
                                     "    loadgen: {component: closed, max_queries: 1000}\n    stages:\n"
                                     "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                                     "      - {id: 1, name: boom, component: util.fail, outputs: [], config: {on_query: 42}}\n");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " run %s -o %s/out --quiet", path, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 1);
    CB_CHECK_CONTAINS(out, "pipeline 'broken'");
    CB_CHECK_CONTAINS(out, "stage 'boom'");
    CB_CHECK_CONTAINS(out, "query 42");
    free(out);
    char p[1024];
    snprintf(p, sizeof p, "%s/out/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 43); /* 0..41 ok, 42 error */
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    char *v = py_json(p, "len(d[\"errors\"]), d[\"pipelines\"][0][\"queries\"]");
    CB_CHECK_STR_EQ(v, "1 42");
    free(v);
}

static void test_sigterm_keeps_every_row(void) {
    const char *dir = cb_test_tmpdir();
    const char *path = cb_test_write(dir, "long.yaml",
                                     "name: long\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [1]\n"
                                     "    loadgen: {component: closed, timeout: 60, config: {concurrency: 4}}\n    stages:\n"
                                     "      - {id: 0, name: a, component: util.noop, outputs: [1]}\n"
                                     "      - {id: 1, name: s, component: util.sleep, outputs: [], workers: 4, config: {duration_us: 300}}\n");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "o=%s/out; " CLI " run %s -o $o --quiet & pid=$!; i=0; "
             "while [ $i -lt 1200 ] && [ ! -s $o/queries.bin ]; do sleep 0.05; i=$((i+1)); done; "
             "kill -TERM $pid; wait $pid; echo \"exit=$?\"",
             dir, path);
    cb_test_sh(cmd, &out);
    CB_CHECK_CONTAINS(out, "exit=1");
    CB_CHECK_CONTAINS(out, "interrupted");
    free(out);
    char p[1024];
    snprintf(p, sizeof p, "%s/out/summary.json", dir);
    char *v = py_json(p, "d[\"interrupted\"], d[\"pipelines\"][0][\"queries_total\"]");
    CB_CHECK(v != NULL);
    if (v) {
        CB_CHECK(!strncmp(v, "True ", 5));
        long total = strtol(v + 5, NULL, 10);
        CB_CHECK(total > 0); /* the signal came once queries were recorded */
        snprintf(p, sizeof p, "%s/out/queries.csv", dir);
        CB_CHECK_EQ_INT(cb_test_count_lines(p), total + 1);
        /* every ended query has its two stage rows, except cancelled ones */
        snprintf(cmd, sizeof cmd, "awk -F, 'NR>1 && $10==\"ok\"' %s/out/queries.csv | wc -l", dir);
        char *okc = NULL;
        cb_test_sh(cmd, &okc);
        long ok = strtol(okc, NULL, 10);
        free(okc);
        snprintf(cmd, sizeof cmd, "awk -F, 'NR>1 && $2==\"s\"' %s/out/events.csv | wc -l", dir);
        char *sc = NULL;
        cb_test_sh(cmd, &sc);
        CB_CHECK_CMP_INT(strtol(sc, NULL, 10), >=, ok);
        free(sc);
    }
    free(v);
}

static void test_graph_and_stages(void) {
    char *out = NULL;
    CB_CHECK_EQ_INT(cb_test_sh(CLI " graph " CB_TEST_SRCDIR "/examples/demo.yaml", &out), 0);
    CB_CHECK_CONTAINS(out, "flowchart");
    CB_CHECK_CONTAINS(out, "preprocess");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI " graph --dot " CB_TEST_SRCDIR "/examples/demo.yaml", &out), 0);
    CB_CHECK_CONTAINS(out, "digraph");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI " stages", &out), 0);
    CB_CHECK_CONTAINS(out, "util.router");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI " stages util.sleep", &out), 0);
    CB_CHECK_CONTAINS(out, "duration_us");
    CB_CHECK_CONTAINS(out, "lognormal");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CLI " stages util.slep", &out), 2);
    CB_CHECK_CONTAINS(out, "util.sleep");
    free(out);
}

static void test_plugin_from_env_runs(void) {
    const char *dir = cb_test_tmpdir();
    const char *path = cb_test_write(dir, "plug.yaml",
                                     "name: plug\npipelines:\n  - name: p\n    inputs: [0]\n    outputs: [1]\n"
                                     "    loadgen: {component: closed, max_queries: 100}\n    stages:\n"
                                     "      - {id: 0, name: src, component: util.source, outputs: [1], config: {bytes: 32}}\n"
                                     "      - {id: 1, name: scale, component: example.scale, outputs: [], config: {factor: 3}}\n");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, CLI " validate %s", path);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2); /* not found without the plugin path */
    CB_CHECK_CONTAINS(out, "example.scale");
    free(out);
    /* The environment names plugins, but loading them runs their code: only when allowed. */
    snprintf(cmd, sizeof cmd, "COLOBENCH_PLUGIN_PATH=" CB_TEST_BINDIR "/plugins " CLI " run %s -o %s/out --quiet",
             path, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "--allow-plugins");
    free(out);
    snprintf(cmd, sizeof cmd,
             "COLOBENCH_PLUGIN_PATH=" CB_TEST_BINDIR "/plugins " CLI " run %s -o %s/out --quiet --allow-plugins",
             path, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_CONTAINS(out, "loaded plugin");
    free(out);
    char envp[1024];
    snprintf(envp, sizeof envp, "%s/out/env.json", dir);
    char *env = cb_test_read(envp, NULL);
    CB_CHECK_CONTAINS(env, "example_plugin.so");
    free(env);
    char p[1024];
    snprintf(p, sizeof p, "%s/out/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 101);
}

/* The README's YAML snippet is a verbatim excerpt of examples/demo.yaml (it had drifted: lines
 * missing, comments the file did not have). */
static void test_readme_snippet_is_demo_excerpt(void) {
    const char *script = cb_test_write(cb_test_tmpdir(), "readme.py",
        "import sys\n"
        "src = sys.argv[1]\n"
        "readme = open(src + '/README.md', encoding='utf-8').read()\n"
        "demo = open(src + '/examples/demo.yaml', encoding='utf-8').read()\n"
        "start = readme.index('```yaml\\n') + len('```yaml\\n')\n"
        "snippet = readme[start:readme.index('```', start)]\n"
        "if snippet not in demo:\n"
        "    lines = snippet.splitlines()\n"
        "    bad = next((l for l in lines if l + '\\n' not in demo), '(every line is, not in this order)')\n"
        "    sys.exit('README.md: the yaml snippet is not an excerpt of examples/demo.yaml: %r is not in '\n"
        "             'the file, or not in that order' % bad)\n"
        "print('ok')\n");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "python3 %s " CB_TEST_SRCDIR, script);
    cb_test_sh_ok(cmd);
}

/* validate on a machine without the config's GPU: a warning, exit 0 (run refuses). And the
 * path rule through the CLI: relative paths against the config's directory, a config from
 * stdin against the current one. */
static void test_validate_device_warning_and_paths(void) {
    const char *dir = cb_test_tmpdir();
    char sub[1024], cmd[4096];
    snprintf(sub, sizeof sub, "%s/cfg", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", sub);
    cb_test_sh_ok(cmd);
    cb_test_write(sub, "times.csv", "0\n0.001\n");
    const char *gpu = cb_test_write(sub, "gpu.yaml",
                                    "pipelines:\n  - name: g\n    inputs: [0]\n    device: cuda:0\n"
                                    "    stages: [{id: 0, component: util.noop}]\n");
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "COLOBENCH_NVML_LIBRARY=%s/no-nvml.so " CLI " validate %s", dir, gpu);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_CONTAINS(out, "colobench: warning: ");
    CB_CHECK_CONTAINS(out, "gpu.yaml:4:13: pipelines[0].device: cuda:0 requested, but CUDA devices are unavailable here");
    CB_CHECK_CONTAINS(out, "gpu.yaml: ok");
    free(out);
    snprintf(cmd, sizeof cmd, "COLOBENCH_NVML_LIBRARY=%s/no-nvml.so " CLI " run %s -o %s/gpu_out -q", dir, gpu, dir);
    CB_CHECK(cb_test_sh(cmd, &out) != 0);
    free(out);
    const char *replay = "pipelines:\n  - name: r\n    inputs: [0]\n"
                         "    loadgen: {component: replay, config: {file: times.csv}}\n"
                         "    stages: [{id: 0, component: util.noop}]\n";
    const char *cfg = cb_test_write(sub, "replay.yaml", replay);
    snprintf(cmd, sizeof cmd, "cd / && " CB_TEST_BINDIR "/colobench validate %s", cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0); /* found next to the config, not in / */
    free(out);
    snprintf(cmd, sizeof cmd, "cd %s && " CB_TEST_BINDIR "/colobench validate /dev/stdin < %s", sub, cfg);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0); /* stdin: the current directory */
    free(out);
    snprintf(cmd, sizeof cmd, "cd / && " CB_TEST_BINDIR "/colobench validate /dev/stdin < %s", cfg);
    CB_CHECK(cb_test_sh(cmd, &out) != 0);
    CB_CHECK_CONTAINS(out, "/times.csv': No such file or directory");
    free(out);
    /* Child processes get the config's name and the working directory: they resolve alike. */
    const char *two = cb_test_write(
        sub, "two.yaml",
        "collocation: {mode: processes}\npipelines:\n"
        "  - {name: a, inputs: [0], loadgen: {component: replay, config: {file: times.csv}},\n"
        "     stages: [{id: 0, component: util.noop}]}\n"
        "  - {name: b, inputs: [0], loadgen: {component: replay, config: {file: times.csv}},\n"
        "     stages: [{id: 0, component: util.noop}]}\n");
    snprintf(cmd, sizeof cmd, "cd / && " CB_TEST_BINDIR "/colobench run %s -o %s/two -q", two, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/two/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(cmd), 1 + 4); /* 2 arrivals per pipeline */
}

static void test_examples_validate_and_run(void) {
    char *out = NULL;
    /* Every example is a valid benchmark (validate checks data paths: the CIFAR example's data
     * is made by a script, so it gets a directory that exists). */
    CB_CHECK_EQ_INT(cb_test_sh("for f in " CB_TEST_SRCDIR "/examples/*.yaml; do s=; case $f in "
                               "*cifar*) s='--set pipelines.0.stages.0.config.path=/';; esac; " CLI
                               " validate $f $s || exit 1; done", &out), 0);
    CB_CHECK_CONTAINS(out, "router_loop.yaml: ok");
    free(out);
    const char *dir = cb_test_tmpdir();
    char cmd[2048], p[1024];
    /* Training epochs: 3 x (100 train + 10 val) batches, in order. */
    snprintf(cmd, sizeof cmd, CLI " run " CB_TEST_SRCDIR "/examples/training_epochs.yaml -o %s/t -q"
             " --set pipelines.0.stages.2.config.duration_us=10", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    snprintf(p, sizeof p, "%s/t/queries.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(p), 1 + 330);
    snprintf(cmd, sizeof cmd, "awk -F, 'NR>1 {n[$3\",\"$4]++} END {for (k in n) print k, n[k]}' %s | sort", p);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_STR_EQ(out, "train,0 100\ntrain,1 100\ntrain,2 100\nval,0 10\nval,1 10\nval,2 10\n");
    free(out);
    /* Replay: exactly the trace's 500 arrivals, scheduled at the trace's offsets. */
    snprintf(cmd, sizeof cmd, CLI " run " CB_TEST_SRCDIR "/examples/open_loop.yaml -o %s/o -q"
             " --set pipelines.0.loadgen.max_queries=200 --set pipelines.1.loadgen.max_queries=200", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "awk -F, '$1==\"replay\"' %s/o/queries.csv | wc -l", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_EQ_INT(strtol(out, NULL, 10), 500);
    free(out);
}

int main(void) {
    CB_RUN(test_version_and_help);
    CB_RUN(test_run_demo_writes_everything);
    CB_RUN(test_bad_config_exit_2_with_position);
    CB_RUN(test_unwritable_output_dir);
    CB_RUN(test_stage_failure_exit_1_keeps_results);
    CB_RUN(test_sigterm_keeps_every_row);
    CB_RUN(test_graph_and_stages);
    CB_RUN(test_plugin_from_env_runs);
    CB_RUN(test_examples_validate_and_run);
    CB_RUN(test_validate_device_warning_and_paths);
    CB_RUN(test_readme_snippet_is_demo_excerpt);
    return cb_test_done();
}
