/* Tests of core/spec.c, core/params.c and core/graph.c: every bad input yields the exact
 * FILE:LINE:COL: key: message form; aliases, defaults, and the resolved YAML round trip. */
#include "harness.h"

#include <stdlib.h>
#include <sys/stat.h>

#include "core/path.h"
#include "core/registry.h"
#include "core/spec.h"
#include "spec_fixture.h"

#define HEAD "name: demo\npipelines:\n  - name: chain\n    inputs: [0]\n"

static void test_minimal_and_defaults(void) {
    cb_doc *doc;
    cb_spec *spec;
    int rc = spec_fixture_build(HEAD "    stages:\n      - id: 0\n        component: util.noop\n", &doc, &spec);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", g_msg);
        return;
    }
    CB_CHECK_STR_EQ(spec->name, "demo");
    CB_CHECK_EQ_INT(spec->n_pipelines, 1);
    const cb_pipeline_spec *p = &spec->pipelines[0];
    CB_CHECK_STR_EQ(p->name, "chain");
    CB_CHECK_EQ_INT(p->loadgen.kind, CB_LOADGEN_CLOSED);
    CB_CHECK_EQ_INT(p->loadgen.queue_depth, 10);
    CB_CHECK_EQ_INT(p->loadgen.max_queries, 0);
    CB_CHECK_EQ_INT(p->loadgen.timeout_ns, 60000000000LL);
    CB_CHECK_EQ_INT(p->loadgen.concurrency, 1);
    CB_CHECK_EQ_INT(p->loadgen.seed, 1);
    CB_CHECK_NEAR(p->loadgen.burstiness, 1.0, 0);
    CB_CHECK(p->loadgen.split_barrier);
    CB_CHECK_EQ_INT(p->dataset_stage_id, -1);
    CB_CHECK_EQ_INT(p->dataset_idx, -1);
    CB_CHECK(!p->serialize_queries);
    CB_CHECK_EQ_INT(p->n_outputs, 1); /* default: the sinks */
    CB_CHECK_EQ_INT(p->outputs[0], 0);
    const cb_stage_spec *s = &p->stages[0];
    CB_CHECK_STR_EQ(s->component, "util.noop");
    CB_CHECK_STR_EQ(s->name, "util.noop");
    CB_CHECK_EQ_INT(s->workers, 1);
    CB_CHECK_EQ_INT(s->policy, CB_POLICY_SINGLE);
    CB_CHECK(s->is_input && s->is_output && !s->is_router);
    CB_CHECK_EQ_INT(p->input_idx[0], 0);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

static const char *k_full =
    "name: full\n"
    "pipelines:\n"
    "  - name: train\n"
    "    inputs: [0]\n"
    "    outputs: [3]\n"
    "    dataset_stage_id: 0\n"
    "    serialize_queries: true\n"
    "    loadgen:\n"
    "      component: loadgen.PoissonLoadScheduler\n"
    "      queue_depth: 0\n"
    "      max_queries: 100\n"
    "      timeout: 2.5\n"
    "      warmup_queries: 3\n"
    "      config: {rate: 250.5, seed: 7, burstiness: 2, file: ignored.csv, max_in_flight: 4, "
    "split_barrier: false, concurrency: 3}\n"
    "    stages:\n"
    "      - id: 0\n"
    "        name: source\n"
    "        component: util.source\n"
    "        outputs: [1, 2]\n"
    "        config: {bytes: 4096, splits: {train: 10, val: 2}, fill: random}\n"
    "      - id: 1\n"
    "        name: a\n"
    "        component: stages.stage.Stage\n"
    "        outputs: [3]\n"
    "        workers: 4\n"
    "        polling_policy: utils.queues.polling.FirstSubmittedPolicy\n"
    "      - id: 2\n"
    "        name: b\n"
    "        component: util.sleep\n"
    "        outputs: [3]\n"
    "        max_input_queue_depth: 5\n"
    "        disable_logs: true\n"
    "        config: {duration_us: 12.5, distribution: lognormal}\n"
    "      - id: 3\n"
    "        name: join\n"
    "        component: util.noop\n"
    "        polling_policy: utils.queues.polling.MergePolicy\n"
    "  - name: other\n"
    "    inputs: 5\n"
    "    loadgen: {component: single_stream}\n"
    "    stages:\n"
    "      - {id: 5, name: r, component: util.router, outputs: [6], config: {max_hops: 3}}\n"
    "      - {id: 6, name: w, component: util.spin, outputs: [5]}\n";

static void check_full(const cb_spec *spec) {
    CB_CHECK_EQ_INT(spec->n_pipelines, 2);
    const cb_pipeline_spec *p = &spec->pipelines[0];
    const cb_loadgen_spec *lg = &p->loadgen;
    CB_CHECK_EQ_INT(lg->kind, CB_LOADGEN_POISSON);
    CB_CHECK_EQ_INT(lg->queue_depth, 0);
    CB_CHECK_EQ_INT(lg->max_queries, 100);
    CB_CHECK_EQ_INT(lg->timeout_ns, 2500000000LL);
    CB_CHECK_EQ_INT(lg->warmup_queries, 3);
    CB_CHECK_NEAR(lg->rate_qps, 250.5, 0);
    CB_CHECK_EQ_INT(lg->seed, 7);
    CB_CHECK_NEAR(lg->burstiness, 2.0, 0);
    CB_CHECK(lg->file == NULL); /* not a replay: accepted and ignored */
    CB_CHECK_EQ_INT(lg->max_in_flight, 4);
    CB_CHECK(!lg->split_barrier);
    CB_CHECK_EQ_INT(lg->concurrency, 3);
    CB_CHECK(p->serialize_queries);
    CB_CHECK_EQ_INT(p->dataset_idx, 0);
    CB_CHECK_STR_EQ(p->stages[1].component, "util.noop");
    CB_CHECK_EQ_INT(p->stages[1].policy, CB_POLICY_FIRST);
    CB_CHECK_EQ_INT(p->stages[1].workers, 4);
    CB_CHECK_EQ_INT(p->stages[2].max_input_queue_depth, 5);
    CB_CHECK(p->stages[2].disable_logs);
    CB_CHECK_EQ_INT(p->stages[3].policy, CB_POLICY_MERGE);
    CB_CHECK_EQ_INT(p->stages[3].n_in_edges, 2);
    CB_CHECK(p->stages[3].is_output && !p->stages[2].is_output);
    CB_CHECK_EQ_INT(p->stages[0].out_idx[1], 2);
    /* source params: set values and defaults */
    const cb_param_value *v = p->stages[0].values;
    const cb_stage_ops *src = p->stages[0].ops;
    for (size_t i = 0; i < src->n_params; i++) {
        const char *k = src->params[i].key;
        if (!strcmp(k, "bytes")) {
            CB_CHECK_EQ_INT(v[i].i, 4096);
            CB_CHECK(v[i].is_set);
        } else if (!strcmp(k, "splits")) {
            CB_CHECK_EQ_INT(v[i].n, 2);
            if (v[i].n == 2) {
                CB_CHECK_STR_EQ(v[i].keys[1], "val");
                CB_CHECK_EQ_INT(v[i].ints[0], 10);
            }
        } else if (!strcmp(k, "fill")) {
            CB_CHECK_STR_EQ(v[i].s, "random");
            CB_CHECK_EQ_INT(v[i].i, 1);
        } else if (!strcmp(k, "epochs")) {
            CB_CHECK(v[i].has_value); /* a default here; set in the resolved YAML */
            CB_CHECK_EQ_INT(v[i].i, 1);
        }
    }
    const cb_pipeline_spec *q = &spec->pipelines[1];
    CB_CHECK_EQ_INT(q->loadgen.kind, CB_LOADGEN_CLOSED);
    CB_CHECK_EQ_INT(q->loadgen.concurrency, 1);
    CB_CHECK_EQ_INT(q->n_inputs, 1);
    CB_CHECK(q->stages[0].is_router);
    /* DFS from the input 5: 5 -> 6 -> 5 closes the cycle at 6's output */
    CB_CHECK(!q->stages[0].out_back[0]);
    CB_CHECK(q->stages[1].out_back[0]);
    CB_CHECK_EQ_INT(q->stages[0].n_in_edges, 1);
}

static void test_full_and_aliases(void) {
    cb_doc *doc;
    cb_spec *spec;
    int rc = spec_fixture_build(k_full, &doc, &spec);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", g_msg);
        return;
    }
    check_full(spec);

    /* resolved YAML loads again to an equivalent spec */
    const char *dir = cb_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/resolved.yaml", dir);
    FILE *f = fopen(path, "w");
    CB_CHECK_EQ_INT(cb_spec_write_yaml(spec, f), 0);
    fclose(f);
    cb_doc *doc2 = NULL;
    cb_spec *spec2 = NULL;
    cb_error err;
    cb_error_clear(&err);
    rc = cb_spec_load(path, NULL, 0, g_reg, &doc2, &spec2, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        char *text = cb_test_read(path, NULL);
        printf("# %s\n%s\n", err.msg, text ? text : "");
        free(text);
    } else {
        check_full(spec2);
        /* and writes identically */
        char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        FILE *fa = open_memstream(&a, &la), *fb = open_memstream(&b, &lb);
        cb_spec_write_yaml(spec, fa);
        cb_spec_write_yaml(spec2, fb);
        fclose(fa);
        fclose(fb);
        CB_CHECK_STR_EQ(a, b);
        free(a);
        free(b);
    }
    cb_spec_destroy(spec2);
    cb_doc_destroy(doc2);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

static void test_loadgen_aliases(void) {
    static const struct {
        const char *name;
        cb_loadgen_kind kind;
    } cases[] = {{"loadgen.OfflineLoadScheduler", CB_LOADGEN_CLOSED},
                 {"single_stream", CB_LOADGEN_CLOSED},
                 {"offline", CB_LOADGEN_OFFLINE},
                 {"server", CB_LOADGEN_POISSON},
                 {"constant", CB_LOADGEN_CONSTANT},
                 {"gamma", CB_LOADGEN_GAMMA}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text,
                 HEAD "    loadgen: {component: %s, config: {rate: 5}}\n"
                      "    stages: [{id: 0, component: util.noop}]\n",
                 cases[i].name);
        cb_doc *doc;
        cb_spec *spec;
        int rc = spec_fixture_build(text, &doc, &spec);
        CB_CHECK_EQ_INT(rc, 0);
        if (rc) {
            printf("# %s: %s\n", cases[i].name, g_msg);
            continue;
        }
        CB_CHECK_EQ_INT(spec->pipelines[0].loadgen.kind, cases[i].kind);
        CB_CHECK_STR_EQ(cb_loadgen_kind_name(spec->pipelines[0].loadgen.kind),
                        cb_loadgen_kind_name(cases[i].kind));
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    CB_CHECK_STR_EQ(cb_policy_name(CB_POLICY_MERGE), "merge");
}

static void test_errors(void) {
    /* YAML syntax */
    EXPECT_ERROR("name: demo\npipelines:\n  - name: [x\n", "bench.yaml:4:1: while parsing a flow sequence did not find expected ',' or ']'");
    /* wrong types */
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.sleep\n"
                      "        config: {duration_us: 64k}\n",
                 "bench.yaml:8:31: pipelines[0].stages[0].config.duration_us: expected number in "
                 "[0, 3600000000], got \"64k\"");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.source\n"
                      "        config: {bytes: 1.5}\n",
                 "bench.yaml:8:25: pipelines[0].stages[0].config.bytes: expected integer in "
                 "[0, 1073741824], got \"1.5\"");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.source\n"
                      "        config: {bytes: true}\n",
                 "bench.yaml:8:25: pipelines[0].stages[0].config.bytes: expected integer in "
                 "[0, 1073741824], got \"true\"");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.source\n"
                      "        config: {fill: rnadom}\n",
                 "bench.yaml:8:24: pipelines[0].stages[0].config.fill: expected one of "
                 "zero|random, got \"rnadom\" (did you mean 'random'?)");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.source\n"
                      "        config: {splits: {train: 0}}\n",
                 "bench.yaml:8:34: pipelines[0].stages[0].config.splits.train: expected integer "
                 "in [1, 9200000000000000000], got \"0\"");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n        workers: many\n",
                 "bench.yaml:8:18: pipelines[0].stages[0].workers: expected integer in [1, 1024], "
                 "got \"many\"");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n        workers: 0\n",
                 "bench.yaml:8:18: pipelines[0].stages[0].workers: expected integer in [1, 1024], "
                 "got \"0\"");
    EXPECT_ERROR(HEAD "    serialize_queries: yes\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:24: pipelines[0].serialize_queries: expected true or false, got \"yes\"");
    /* unknown keys, with did-you-mean */
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n        workrs: 2\n",
                 "bench.yaml:8:9: pipelines[0].stages[0].workrs: unknown key (did you mean 'workers'?)");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.source\n"
                      "        config: {byts: 1}\n",
                 "bench.yaml:8:18: pipelines[0].stages[0].config.byts: unknown key (did you mean "
                 "'bytes'?)");
    EXPECT_ERROR(HEAD "    loadgen: {config: {rat: 1}}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:24: pipelines[0].loadgen.config.rat: unknown key (did you mean 'rate'?)");
    EXPECT_ERROR("nmae: x\n", "bench.yaml:1:1: nmae: unknown key (did you mean 'name'?)");
    /* unknown component and policy */
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n        outputs: [1]\n"
                      "      - id: 1\n        component: util.nop\n",
                 "bench.yaml:10:20: pipelines[0].stages[1].component: unknown stage component "
                 "'util.nop' (did you mean 'util.noop'?)");
    EXPECT_ERROR(HEAD "    loadgen: {component: poison}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:26: pipelines[0].loadgen.component: unknown load generator 'poison' "
                 "(did you mean 'poisson'?)");
    EXPECT_ERROR(HEAD "    stages: [{id: 0, component: util.noop, polling_policy: fifo}]\n",
                 "bench.yaml:5:60: pipelines[0].stages[0].polling_policy: unknown polling policy "
                 "'fifo' (expected one of: single, first, merge)");
    /* missing required keys: at the parent map */
    EXPECT_ERROR("name: x\n", "bench.yaml:1:1: missing required key 'pipelines'");
    EXPECT_ERROR("pipelines:\n  - inputs: [0]\n    stages: []\n",
                 "bench.yaml:2:5: pipelines[0]: missing required key 'name'");
    EXPECT_ERROR("pipelines:\n  - name: a\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:2:5: pipelines[0]: missing required key 'inputs'");
    EXPECT_ERROR(HEAD, "bench.yaml:3:5: pipelines[0]: missing required key 'stages'");
    EXPECT_ERROR(HEAD "    stages:\n      - component: util.noop\n",
                 "bench.yaml:6:9: pipelines[0].stages[0]: missing required key 'id'");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n",
                 "bench.yaml:6:9: pipelines[0].stages[0]: missing required key 'component'");
    /* graph */
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n        outputs: [1, 7]\n"
                      "      - id: 1\n        component: util.noop\n",
                 "bench.yaml:8:22: pipelines[0].stages[0].outputs[1]: no stage with id 7 in this pipeline");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n"
                      "      - id: 0\n        component: util.noop\n",
                 "bench.yaml:8:13: pipelines[0].stages[1].id: duplicate stage id 0 (first used by "
                 "stages[0] at line 6)");
    EXPECT_ERROR(HEAD "    stages:\n      - id: 0\n        component: util.noop\n"
                      "      - id: 1\n        component: util.noop\n",
                 "bench.yaml:8:9: pipelines[0].stages[1]: stage 1 'util.noop' is unreachable from the "
                 "pipeline inputs");
    EXPECT_ERROR("pipelines:\n  - name: a\n    inputs: [3]\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:3:14: pipelines[0].inputs[0]: no stage with id 3 in this pipeline");
    EXPECT_ERROR(HEAD "    outputs: [9]\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:15: pipelines[0].outputs[0]: no stage with id 9 in this pipeline");
    EXPECT_ERROR(HEAD "    dataset_stage_id: 0\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:23: pipelines[0].dataset_stage_id: stage 0 (util.noop) is not a "
                 "dataset stage: it reports no splits");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, component: util.noop, outputs: [2]}\n"
                      "      - {id: 2, component: util.noop, outputs: [1]}\n",
                 "bench.yaml:8:49: pipelines[0].stages[2].outputs[0]: cycle 1 -> 2 -> 1 passes "
                 "through no router (util.router bounds loops with max_hops)");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, component: util.noop, polling_policy: merge}\n",
                 "bench.yaml:7:55: pipelines[0].stages[1].polling_policy: merge joins one arrival "
                 "from each inbound edge and needs at least 2; stage 1 has 1");
    /* rates */
    EXPECT_ERROR(HEAD "    loadgen: {component: poisson, config: {rate: 0}}\n"
                      "    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:50: pipelines[0].loadgen.config.rate: rate must be > 0 queries per "
                 "second for poisson, got 0");
    EXPECT_ERROR(HEAD "    loadgen: {component: constant, config: {rate: -5}}\n"
                      "    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:51: pipelines[0].loadgen.config.rate: rate must be > 0 queries per "
                 "second for constant, got -5");
    EXPECT_ERROR(HEAD "    loadgen: {component: gamma}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:14: pipelines[0].loadgen.config.rate: the gamma load generator needs "
                 "config.rate (queries per second, > 0)");
    EXPECT_ERROR(HEAD "    loadgen: {component: gamma, config: {rate: 1, burstiness: 0}}\n"
                      "    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:63: pipelines[0].loadgen.config.burstiness: expected number > 0, got \"0\"");
    EXPECT_ERROR(HEAD "    loadgen: {config: {concurrency: 0}}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:37: pipelines[0].loadgen.config.concurrency: expected integer in [1, "
                 "1048576], got \"0\"");
    EXPECT_ERROR(HEAD "    loadgen: {queue_depth: 0}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:28: pipelines[0].loadgen.queue_depth: expected integer in [1, "
                 "2147483647], got \"0\"");
    EXPECT_ERROR(HEAD "    loadgen: {timeout: 0}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:24: pipelines[0].loadgen.timeout: expected number > 0 and <= 1000000000, got \"0\"");
    /* names */
    EXPECT_ERROR("pipelines:\n  - {name: a, inputs: [0], stages: [{id: 0, component: util.noop}]}\n"
                 "  - {name: a, inputs: [0], stages: [{id: 0, component: util.noop}]}\n",
                 "bench.yaml:3:12: pipelines[1].name: duplicate pipeline name 'a' (also pipelines[0])");
    EXPECT_ERROR(HEAD "    stages: [{id: 0, name: '', component: util.noop}]\n",
                 "bench.yaml:5:28: pipelines[0].stages[0].name: expected a non-empty string, got \"\"");
    EXPECT_ERROR("[1, 2]\n", "bench.yaml:1:1: expected a map, got a sequence");
    EXPECT_ERROR("", "bench.yaml:1:1: empty document: expected a map with 'pipelines'");
}

static void test_router_cycle_ok(void) {
    cb_doc *doc;
    cb_spec *spec;
    int rc = spec_fixture_build(HEAD "    stages:\n      - {id: 0, component: util.noop, outputs: [1]}\n"
                        "      - {id: 1, component: util.router, outputs: [2, 3]}\n"
                        "      - {id: 2, component: util.noop, outputs: [1]}\n"
                        "      - {id: 3, component: util.noop}\n",
                   &doc, &spec);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", g_msg);
        return;
    }
    const cb_pipeline_spec *p = &spec->pipelines[0];
    CB_CHECK(p->stages[1].is_router);
    CB_CHECK(p->stages[2].out_back[0]);
    CB_CHECK(!p->stages[1].out_back[0] && !p->stages[1].out_back[1]);
    CB_CHECK_EQ_INT(p->stages[1].n_in_edges, 2);
    CB_CHECK_EQ_INT(p->n_outputs, 1);
    CB_CHECK_EQ_INT(p->outputs[0], 3);

    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_graph_write_mermaid(spec, f), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "flowchart LR\n");
    CB_CHECK_CONTAINS(out, "subgraph p0[\"chain\"]");
    CB_CHECK_CONTAINS(out, "p0_s1[\"util.router<br/>util.router\"]");
    CB_CHECK_CONTAINS(out, "p0_lg --> p0_s0");
    CB_CHECK_CONTAINS(out, "p0_s2 -.-> p0_s1");
    free(out);
    out = NULL;
    f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_graph_write_dot(spec, f), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "digraph colobench {");
    CB_CHECK_CONTAINS(out, "p0_s2 -> p0_s1 [style=dashed");
    free(out);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

/* text builds; else the error is printed and the check fails. */
static void expect_builds(const char *text, int line) {
    cb_doc *doc;
    cb_spec *spec;
    int rc = spec_fixture_build(text, &doc, &spec);
    if (rc) {
        cb__test_fail(__FILE__, line, "expected the spec to build, got \"%s\"", g_msg);
        return;
    }
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}
#define EXPECT_BUILDS(text) expect_builds((text), __LINE__)

/* warmup_queries >= max_queries measures nothing: refused with both numbers. */
static void test_warmup_leaves_queries(void) {
    EXPECT_ERROR(HEAD "    loadgen: {max_queries: 5, warmup_queries: 5}\n"
                      "    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:47: pipelines[0].loadgen.warmup_queries: 5 warmup queries leave none "
                 "of max_queries 5 measured (expected warmup_queries < max_queries, or "
                 "max_queries: 0 for unbounded)");
    EXPECT_BUILDS(HEAD "    loadgen: {max_queries: 5, warmup_queries: 4}\n"
                       "    stages: [{id: 0, component: util.noop}]\n");
    /* unbounded: the timeout ends the run */
    EXPECT_BUILDS(HEAD "    loadgen: {max_queries: 0, warmup_queries: 40}\n"
                       "    stages: [{id: 0, component: util.noop}]\n");
}

/* A merge on a loop must have every inbound edge inside the loop: an edge from outside (or the
 * load generator) delivers once, so a query that goes round again waits forever. */
static void test_merge_in_loop(void) {
    /* 0 -> 1 (merge) <- 2 (router) <- 1: the loop re-enters the merge, the edge 0 -> 1 is
     * outside it. */
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, name: src, component: util.noop, outputs: [1]}\n"
                      "      - {id: 1, name: join, component: util.noop, outputs: [2], polling_policy: merge}\n"
                      "      - {id: 2, name: again, component: util.router, outputs: [1, 3]}\n"
                      "      - {id: 3, component: util.noop}\n",
                 "bench.yaml:7:81: pipelines[0].stages[1].polling_policy: merge stage 1 'join' is on "
                 "the loop closed by the back edge 2 -> 1 (router 2 'again'), but its inbound edge "
                 "from stage 0 'src' comes from outside the loop: a query that goes round again "
                 "would wait forever for its partner (keep the whole join inside the loop body, or "
                 "merge after the loop)");
    /* A merge that is a pipeline input, on a loop. */
    EXPECT_ERROR("pipelines:\n  - name: p\n    inputs: [1]\n    stages:\n"
                 "      - {id: 1, name: join, component: util.noop, outputs: [2], polling_policy: merge}\n"
                 "      - {id: 2, name: a, component: util.noop, outputs: [4]}\n"
                 "      - {id: 3, name: b, component: util.noop, outputs: [1]}\n"
                 "      - {id: 4, name: r, component: util.router, outputs: [1, 3]}\n",
                 "bench.yaml:5:81: pipelines[0].stages[0].polling_policy: merge stage 1 'join' is on "
                 "the loop closed by the back edge 4 -> 1 (router 4 'r'), but it is a pipeline "
                 "input: the load generator's arrival comes from outside the loop: a query that "
                 "goes round again would wait forever for its partner (keep the whole join inside "
                 "the loop body, or merge after the loop)");
    /* The whole fork and join inside the loop body: each round brings one arrival per edge. */
    EXPECT_BUILDS(
        HEAD "    stages:\n      - {id: 0, component: util.noop, outputs: [1]}\n"
             "      - {id: 1, name: fork, component: util.noop, outputs: [2, 3]}\n"
             "      - {id: 2, component: util.noop, outputs: [4]}\n"
             "      - {id: 3, component: util.noop, outputs: [4]}\n"
             "      - {id: 4, name: join, component: util.noop, outputs: [5], polling_policy: merge}\n"
             "      - {id: 5, name: r, component: util.router, outputs: [1, 6]}\n"
             "      - {id: 6, component: util.noop}\n");
    /* A merge after the loop: one edge from the loop's exit, one from before it. */
    EXPECT_BUILDS(
        HEAD "    stages:\n      - {id: 0, component: util.noop, outputs: [1, 3]}\n"
             "      - {id: 1, component: util.noop, outputs: [2]}\n"
             "      - {id: 2, name: r, component: util.router, outputs: [1, 3]}\n"
             "      - {id: 3, name: join, component: util.noop, polling_policy: merge}\n");
}

static void test_replay_file(void) {
    const char *dir = cb_test_tmpdir();
    cb_test_write(dir, "arrivals.csv", "0\n1000\n");
    const char *yaml = HEAD "    loadgen: {component: replay, config: {file: arrivals.csv}}\n"
                            "    stages: [{id: 0, component: util.noop}]\n";
    const char *path = cb_test_write(dir, "bench.yaml", yaml);
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_spec_load(path, NULL, 0, g_reg, &doc, &spec, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CB_CHECK_CONTAINS(spec->pipelines[0].loadgen.file, "/arrivals.csv");
        CB_CHECK(spec->pipelines[0].loadgen.file[0] == '/');
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    /* missing file, via --set */
    const char *sets[] = {"pipelines.chain.loadgen.config.file=missing.csv"};
    cb_error_clear(&err);
    rc = cb_spec_load(path, sets, 1, g_reg, &doc, &spec, &err);
    CB_CHECK_EQ_INT(rc, CB_ECONFIG);
    char buf[1024];
    cb_error_format(&err, buf, sizeof buf);
    CB_CHECK_CONTAINS(buf, "<--set>:1:37: pipelines[0].loadgen.config.file: cannot read arrival file '");
    CB_CHECK_CONTAINS(buf, "/missing.csv': No such file or directory");
    /* validate reads the file as run would: a time that is not a number, times that
     * decrease, a directory are refused at the config's key, with the CSV's line. */
    const struct {
        const char *set, *want;
    } bad_files[] = {
        {"pipelines.chain.loadgen.config.file=garbage.csv", "/garbage.csv:2:1: arrival time \"x7\""},
        {"pipelines.chain.loadgen.config.file=down.csv", "/down.csv:3:1: arrival time \"1\" is earlier"},
        {"pipelines.chain.loadgen.config.file=.", ":1:1: is a directory, not a replay CSV file"},
    };
    cb_test_write(dir, "garbage.csv", "0\nx7\n");
    cb_test_write(dir, "down.csv", "0\n2\n1\n");
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_spec_load(path, &bad_files[i].set, 1, g_reg, &doc, &spec, &err), CB_ECONFIG);
        cb_error_format(&err, buf, sizeof buf);
        CB_CHECK_CONTAINS(buf, "<--set>:1:37: pipelines[0].loadgen.config.file: arrival file /");
        CB_CHECK_CONTAINS(buf, bad_files[i].want);
    }
    /* A stream is left to run (reading /dev/zero for a line would never end). */
    EXPECT_BUILDS(HEAD "    loadgen: {component: replay, config: {file: /dev/zero}}\n"
                       "    stages: [{id: 0, component: util.noop}]\n");
    /* replay without a file */
    EXPECT_ERROR(HEAD "    loadgen: {component: replay}\n    stages: [{id: 0, component: util.noop}]\n",
                 "bench.yaml:5:14: pipelines[0].loadgen.config.file: the replay load generator needs "
                 "config.file (a CSV of arrival times)");
    /* --set errors surface from cb_spec_load */
    const char *bad[] = {"pipelines.9.name=x"};
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_spec_load(path, bad, 1, g_reg, &doc, &spec, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "segment '9'");
    CB_CHECK(doc == NULL && spec == NULL);
}

/* The string value of a stage's parameter key ("" when absent). */
static const char *param_s(const cb_stage_spec *s, const char *key) {
    for (size_t i = 0; i < s->ops->n_params; i++)
        if (!strcmp(s->ops->params[i].key, key)) return s->values[i].s ? s->values[i].s : "";
    return "";
}

/* One rule for relative paths: every path of a config (replay files, plugins, stage paths,
 * --set values) resolves against the config file's directory, whatever the current one; path
 * parameters are checked when the config is loaded, as run would find them. */
static void test_path_rule(void) {
    const char *dir = cb_test_tmpdir();
    char sub[1024], path[1100];
    snprintf(sub, sizeof sub, "%s/conf", dir);
    CB_CHECK_EQ_INT(mkdir(sub, 0755), 0);
    cb_test_write(sub, "w.safetensors", "not read when loaded");
    cb_test_write(sub, "arrivals.csv", "0\n1\n");
    snprintf(path, sizeof path, "%s/data", sub);
    CB_CHECK_EQ_INT(mkdir(path, 0755), 0);
    const char *cfg = cb_test_write(
        sub, "bench.yaml",
        "pipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: replay, config: {file: arrivals.csv}}\n"
        "    stages:\n"
        "      - {id: 0, component: data.cifar, outputs: [1], config: {path: data}}\n"
        "      - {id: 1, component: vision.infer, outputs: [2], config: {weights: w.safetensors}}\n"
        "      - {id: 2, component: vision.train, config: {save: out/trained.safetensors}}\n");
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    char buf[2048], want[2048];
    int rc = cb_spec_load(cfg, NULL, 0, g_reg, &doc, &spec, &err); /* cwd is not conf/ */
    cb_error_format(&err, buf, sizeof buf);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", buf);
    char real[1024];
    CB_CHECK(realpath(sub, real) != NULL);
    if (!rc) {
        const cb_pipeline_spec *p = &spec->pipelines[0];
        snprintf(want, sizeof want, "%s/arrivals.csv", real);
        CB_CHECK_STR_EQ(p->loadgen.file, want);
        snprintf(want, sizeof want, "%s/data", real);
        CB_CHECK_STR_EQ(param_s(&p->stages[0], "path"), want);
        snprintf(want, sizeof want, "%s/w.safetensors", real);
        CB_CHECK_STR_EQ(param_s(&p->stages[1], "weights"), want);
        snprintf(want, sizeof want, "%s/out/trained.safetensors", real); /* out/ made by the run */
        CB_CHECK_STR_EQ(param_s(&p->stages[2], "save"), want);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    /* --set values too; what run would refuse, validate refuses at the value. */
    const struct {
        const char *set, *want;
    } bad[] = {
        {"pipelines.0.stages.0.config.path=missing", "/conf/missing: No such file or directory"},
        {"pipelines.0.stages.1.config.weights=data", "/conf/data: is a directory, expected a file"},
        {"pipelines.0.stages.2.config.save=data", "/conf/data: is a directory, expected a file to write"},
        {"pipelines.0.stages.2.config.save=w.safetensors/x", "/conf/w.safetensors is not a directory"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_spec_load(cfg, &bad[i].set, 1, g_reg, &doc, &spec, &err), CB_ECONFIG);
        cb_error_format(&err, buf, sizeof buf);
        snprintf(want, sizeof want, "<--set>:1:%d: pipelines[0].stages[%c].config.",
                 (int)(strchr(bad[i].set, '=') - bad[i].set) + 2, bad[i].set[19]);
        CB_CHECK_CONTAINS(buf, want);
        CB_CHECK_CONTAINS(buf, bad[i].want);
    }
    /* monitors.nvml_library: a bare library name is dlopen's to search, a path follows the rule. */
    const struct {
        const char *set, *want;
    } nvml[] = {{"monitors.nvml_library=libnvidia-ml.so.1", "libnvidia-ml.so.1"},
                {"monitors.nvml_library=lib/libnvidia-ml.so.1", "/lib/libnvidia-ml.so.1"}};
    for (size_t i = 0; i < sizeof nvml / sizeof nvml[0]; i++) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_spec_load(cfg, &nvml[i].set, 1, g_reg, &doc, &spec, &err), 0);
        if (!spec) continue;
        snprintf(want, sizeof want, "%s%s", i ? real : "", nvml[i].want);
        CB_CHECK_STR_EQ(spec->monitors.nvml_library, want);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    /* The directory of a config: its name's, or the current one for a stream. */
    char d[256];
    cb_path_config_dir("/dev/stdin", d, sizeof d);
    CB_CHECK_STR_EQ(d, "");
    cb_path_config_dir("/proc/self/fd/0", d, sizeof d);
    CB_CHECK_STR_EQ(d, "");
    cb_path_config_dir("bench.yaml", d, sizeof d);
    CB_CHECK_STR_EQ(d, "");
    cb_path_config_dir("examples/a.yaml", d, sizeof d);
    CB_CHECK_STR_EQ(d, "examples");
    cb_path_config_dir("/a.yaml", d, sizeof d);
    CB_CHECK_STR_EQ(d, "/");
    CB_CHECK_EQ_INT(cb_path_resolve("/x/y", "/abs", d, sizeof d), 0);
    CB_CHECK_STR_EQ(d, "/abs");
    CB_CHECK_EQ_INT(cb_path_resolve("/nonexistent-dir", "a/b", d, sizeof d), 0);
    CB_CHECK_STR_EQ(d, "/nonexistent-dir/a/b");
}

/* What a stage's create would refuse from its values and the graph alone (cb_stage_ops.check)
 * is refused when the config is loaded, at the stage's config. */
static void test_stage_checks(void) {
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: util.router, outputs: [1, 2], "
                      "config: {weights: [1, 1, 1]}}\n"
                      "      - {id: 1, component: util.noop}\n      - {id: 2, component: util.noop}\n",
                 "bench.yaml:6:66: pipelines[0].stages[0].config: weights: 3 weights for 2 outputs "
                 "(give one per output, or none for uniform)");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: util.router, outputs: [1], "
                      "config: {weights: [0]}}\n      - {id: 1, component: util.noop}\n",
                 "bench.yaml:6:63: pipelines[0].stages[0].config: weights: at least one weight must "
                 "be > 0");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: util.router}\n",
                 "bench.yaml:6:9: pipelines[0].stages[0].config: outputs: a router needs at least 1 "
                 "output, has 0");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: vision.train, workers: 2}\n",
                 "bench.yaml:6:9: pipelines[0].stages[0].config: workers: a training stage holds one "
                 "model, so it runs one worker (got 2); use threads to give it more cores");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: vision.train, config: {nesterov: true, optimizer: adam}}\n",
                 "bench.yaml:6:50: pipelines[0].stages[0].config: nesterov: needs optimizer sgd and "
                 "momentum > 0");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: util.source, config: {splits: {}}}\n",
                 "bench.yaml:6:49: pipelines[0].stages[0].config: splits: expected 1 to 8 splits, got 0");
    EXPECT_ERROR(HEAD "    stages:\n      - {id: 0, component: vision.preprocess, config: {mean: []}}\n",
                 "bench.yaml:6:55: pipelines[0].stages[0].config: mean, std: expected 1 to 64 values "
                 "each, got 0 and 3");
    EXPECT_BUILDS(HEAD "    stages:\n      - {id: 0, component: util.router, outputs: [1, 2], "
                       "config: {weights: [1, 0]}}\n"
                       "      - {id: 1, component: util.noop}\n      - {id: 2, component: util.noop}\n");
}

static void test_set_override_then_build(void) {
    const char *dir = cb_test_tmpdir();
    const char *path = cb_test_write(dir, "b.yaml",
                                     HEAD "    stages:\n      - id: 0\n        name: s\n"
                                          "        component: util.sleep\n");
    const char *sets[] = {"pipelines.chain.stages.s.config.duration_us=50",
                          "pipelines.0.loadgen={component: offline, max_queries: 5}"};
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_spec_load(path, sets, 2, g_reg, &doc, &spec, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err.msg);
        return;
    }
    const cb_stage_spec *s = &spec->pipelines[0].stages[0];
    for (size_t i = 0; i < s->ops->n_params; i++)
        if (!strcmp(s->ops->params[i].key, "duration_us")) CB_CHECK_NEAR(s->values[i].f, 50.0, 0);
    CB_CHECK_EQ_INT(spec->pipelines[0].loadgen.kind, CB_LOADGEN_OFFLINE);
    CB_CHECK_EQ_INT(spec->pipelines[0].loadgen.max_queries, 5);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

static void test_params_direct(void) {
    static const cb_param_def bad_default[] = {
        {"n", CB_PARAM_INT, "12x", CB_PARAM_UNBOUNDED, NULL, "broken"},
    };
    static const cb_param_def lists[] = {
        {"ints", CB_PARAM_INT_LIST, "[1, 2]", 0, 10, NULL, "ints"},
        {"floats", CB_PARAM_FLOAT_LIST, "[0.5]", CB_PARAM_UNBOUNDED, NULL, "floats"},
        {"opt", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL, "unset"},
        {"s", CB_PARAM_STRING, "", CB_PARAM_UNBOUNDED, NULL, "empty default"},
    };
    cb_stage_ops ops;
    memset(&ops, 0, sizeof ops);
    ops.name = "test.params";
    ops.params = bad_default;
    ops.n_params = 1;
    cb_arena *a = cb_arena_create();
    cb_param_value *v = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_params_resolve(&ops, NULL, "cfg", a, &v, &err), CB_EINVAL);
    CB_CHECK_STR_EQ(err.msg, "stage test.params: parameter 'n': bad default: expected integer, got \"12x\"");
    ops.params = lists;
    ops.n_params = 4;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_params_resolve(&ops, NULL, "cfg", a, &v, &err), 0);
    if (v) {
        CB_CHECK_EQ_INT(v[0].n, 2);
        CB_CHECK_EQ_INT(v[0].ints[1], 2);
        CB_CHECK_NEAR(v[1].floats[0], 0.5, 0);
        CB_CHECK_EQ_INT(v[2].has_value, 0);
        CB_CHECK_STR_EQ(v[3].s, "");
    }
    cb_doc *doc = NULL;
    const char *t = "ints: [1, 11]\n";
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "p.yaml", &doc, &err), 0);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_params_resolve(&ops, doc->root, "cfg", a, &v, &err), CB_ECONFIG);
    char buf[512];
    cb_error_format(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "p.yaml:1:11: cfg.ints[1]: expected integer in [0, 10], got \"11\"");
    cb_doc_destroy(doc);
    cb_arena_destroy(a);
}

int main(void) {
    if (spec_fixture_init() != 0) return 1;
    CB_RUN(test_minimal_and_defaults);
    CB_RUN(test_full_and_aliases);
    CB_RUN(test_loadgen_aliases);
    CB_RUN(test_errors);
    CB_RUN(test_router_cycle_ok);
    CB_RUN(test_replay_file);
    CB_RUN(test_warmup_leaves_queries);
    CB_RUN(test_merge_in_loop);
    CB_RUN(test_set_override_then_build);
    CB_RUN(test_path_rule);
    CB_RUN(test_stage_checks);
    CB_RUN(test_params_direct);
    cb_registry_destroy(g_reg);
    return cb_test_done();
}
