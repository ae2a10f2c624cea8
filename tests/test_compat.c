/* Tests of core/compat.c: the reference framework's configs (our own, in its format, under
 * tests/refconfigs/) load as their colobench equivalents, keep their positions in errors, name
 * every component colobench lacks in one message, and colobench's own configs pass untouched. */
#include <stdlib.h>

#include "run_fixture.h"
#include "spec_fixture.h"

#include "core/monitor_sources.h"

#define REFCONFIGS CB_TEST_SRCDIR "/tests/refconfigs/"
#define MAX_TEXT_BYTES 65536

/* The file's text (static buffer, NUL-terminated); "" with a failure when it cannot be read. */
static const char *read_config(const char *name) {
    static char text[MAX_TEXT_BYTES];
    char path[512];
    snprintf(path, sizeof path, "%s%s", REFCONFIGS, name);
    text[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) {
        cb__test_fail(__FILE__, __LINE__, "cannot open %s", path);
        return text;
    }
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    if (n == sizeof text - 1) cb__test_fail(__FILE__, __LINE__, "%s: larger than the buffer", path);
    text[n] = '\0';
    return text;
}

static int build_file(const char *name, cb_doc **doc, cb_spec **spec) {
    return spec_fixture_build(read_config(name), doc, spec);
}

/* The spec of a config that must build (NULL, with a failure, when it does not). */
static cb_spec *build_ok(const char *name, cb_doc **doc) {
    cb_spec *spec = NULL;
    int rc = build_file(name, doc, &spec);
    if (rc) cb__test_fail(__FILE__, __LINE__, "%s: %s", name, g_msg);
    return rc ? NULL : spec;
}

static const cb_param_value *param(const cb_stage_spec *s, const char *key) {
    for (size_t i = 0; i < s->ops->n_params; i++)
        if (strcmp(s->ops->params[i].key, key) == 0) return &s->values[i];
    cb__test_fail(__FILE__, __LINE__, "%s has no parameter %s", s->component, key);
    static const cb_param_value none;
    return &none;
}

/* Base Stage chain: the dataset stage becomes util.source of one `train` batch per epoch, one
 * epoch per query; the others util.noop; policies and schedulers keep their aliases. */
static void test_noop_chain(void) {
    cb_doc *doc = NULL;
    cb_spec *spec = build_ok("noop_chain.yml", &doc);
    if (!spec) return;
    CB_CHECK(spec->compat.translated);
    CB_CHECK_EQ_INT(spec->compat.n_notes, 0);
    const cb_pipeline_spec *p = &spec->pipelines[0];
    CB_CHECK_EQ_INT(p->dataset_stage_id, 0);
    CB_CHECK_EQ_INT(p->loadgen.kind, CB_LOADGEN_CLOSED);
    CB_CHECK(!p->loadgen.split_barrier);
    CB_CHECK_STR_EQ(p->stages[0].component, "util.source");
    CB_CHECK_EQ_INT(param(&p->stages[0], "bytes")->i, 0);
    CB_CHECK_EQ_INT(param(&p->stages[0], "epochs")->i, 12);
    const cb_param_value *splits = param(&p->stages[0], "splits");
    CB_CHECK_EQ_INT(splits->n, 1);
    if (splits->n == 1) {
        CB_CHECK_STR_EQ(splits->keys[0], "train");
        CB_CHECK_EQ_INT(splits->ints[0], 1);
    }
    CB_CHECK_STR_EQ(p->stages[1].component, "util.noop");
    CB_CHECK_EQ_INT(p->stages[1].max_input_queue_depth, 0); /* null: unbounded */
    CB_CHECK_STR_EQ(p->stages[2].component, "util.noop");
    CB_CHECK_EQ_INT(p->stages[2].policy, CB_POLICY_FIRST);
    /* New nodes keep the position of the text they replace. */
    const cb_node *comp = cb_node_get(p->stages[0].node, "component");
    CB_CHECK_STR_EQ(comp->scalar, "util.source");
    CB_CHECK_EQ_INT(comp->line, 19);
    CB_CHECK_EQ_INT(comp->col, 16);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

/* It runs as the reference does: 12 queries, split train, batch 0, epoch = the query's count. */
static void test_noop_chain_runs(void) {
    run_fixture f;
    if (run_fixture_ok(&f, read_config("noop_chain.yml"), NULL, NULL) != 0) {
        run_fixture_fini(&f);
        return;
    }
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 12);
    unsigned seen = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        const cb_query_event *q = &r.queries[i];
        CB_CHECK_EQ_INT(q->split, 0);
        CB_CHECK_EQ_INT(q->batch, 0);
        CB_CHECK_EQ_INT(q->status, CB_QUERY_OK);
        if (q->epoch >= 0 && q->epoch < 12) seen |= 1u << q->epoch;
    }
    CB_CHECK_EQ_INT(seen, 0xfff);
    CB_CHECK(r.splits && r.splits->n == 1 && r.splits->epochs == 12);
    if (r.splits) CB_CHECK_STR_EQ(r.splits->split[0].name, "train");
    run_fixture_fini(&f);
}

/* DataInjector, CopyStage, TerminalCapture, listeners, is_training, a long scheduler path. */
static void test_payload_copy(void) {
    cb_doc *doc = NULL;
    cb_spec *spec = build_ok("payload_copy.yml", &doc);
    if (!spec) return;
    const cb_pipeline_spec *p = &spec->pipelines[0];
    CB_CHECK_EQ_INT(p->loadgen.kind, CB_LOADGEN_CLOSED);
    CB_CHECK_STR_EQ(p->stages[0].component, "util.source");
    CB_CHECK_EQ_INT(param(&p->stages[0], "bytes")->i, 4096);
    CB_CHECK_EQ_INT(param(&p->stages[0], "share")->i, 1);
    CB_CHECK_EQ_INT(param(&p->stages[0], "epochs")->i, 8);
    CB_CHECK_STR_EQ(p->stages[1].component, "util.copy");
    CB_CHECK_EQ_INT(param(&p->stages[1], "bytes")->i, 0);
    CB_CHECK_STR_EQ(p->stages[2].component, "util.noop");
    CB_CHECK_EQ_INT(spec->monitors.sources,
                    CB_MON_CPU | CB_MON_PROCESS | CB_MON_MEMORY | CB_MON_GPU);
    CB_CHECK_EQ_INT(spec->compat.n_notes, 1);
    if (spec->compat.n_notes == 1) {
        CB_CHECK_CONTAINS(spec->compat.notes[0], "bench.yaml:33: stages.TerminalCapture");
        CB_CHECK_CONTAINS(spec->compat.notes[0], "no outputs JSONL");
    }
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

/* Listeners without a full equivalent: one note naming each once; open loop without barrier. */
static void test_listeners_partial(void) {
    cb_doc *doc = NULL;
    cb_spec *spec = build_ok("listeners_partial.yml", &doc);
    if (!spec) return;
    CB_CHECK_EQ_INT(spec->monitors.sources, CB_MON_GPU | CB_MON_CPU);
    CB_CHECK_EQ_INT(spec->pipelines[0].loadgen.kind, CB_LOADGEN_POISSON);
    CB_CHECK(!spec->pipelines[0].loadgen.split_barrier);
    CB_CHECK_EQ_INT(spec->compat.n_notes, 1);
    if (spec->compat.n_notes == 1) {
        const char *n = spec->compat.notes[0];
        CB_CHECK_CONTAINS(n, "bench.yaml:4: listeners: no colobench monitor samples dcgmi's");
        CB_CHECK_CONTAINS(n, "iostat's per-device disk figures");
        CB_CHECK_CONTAINS(n, "macmon");
        const char *first = strstr(n, "dcgmi");
        CB_CHECK(first && !strstr(first + 1, "dcgmi")); /* listed twice, noted once */
    }
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
}

/* Two missing components, one of them twice: one message names both, with lines and counts. */
static void test_two_missing(void) {
    CB_CHECK_EQ_INT(build_file("two_missing.yml", NULL, NULL), CB_ECONFIG);
    CB_CHECK_CONTAINS(g_msg, "bench.yaml: needs components colobench does not have: ");
    CB_CHECK_CONTAINS(g_msg, "stages.llm_huggingface.MockDataLoader (line 17), ");
    CB_CHECK_CONTAINS(g_msg, "stages.llm_mlx.Inference (line 26, 2 stages); see docs/porting.md");
}

static void test_cells(void) {
    CB_CHECK_EQ_INT(build_file("cells.yml", NULL, NULL), CB_ECONFIG);
    CB_CHECK_CONTAINS(g_msg, "bench.yaml: a sweep manifest of the reference's run_modularity.py");
    CB_CHECK_CONTAINS(g_msg, "torchvision.models.resnet18 (line 3), "
                             "torchvision.models.mobilenet_v3_small (line 4, 2 cells)");
}

/* More distinct missing components than the message holds: it ends with "and N more". */
static void test_many_missing(void) {
    char text[16384];
    size_t off = (size_t)snprintf(text, sizeof text,
                                  "pipelines:\n- name: p\n  inputs: [0]\n  stages:\n");
    for (int i = 0; i < 80; i++)
        off += (size_t)snprintf(text + off, sizeof text - off,
                                "  - {id: %d, component: stages.many.Component%02d%s}\n", i, i,
                                i < 79 ? ", outputs: [1]" : "");
    CB_CHECK_EQ_INT(spec_fixture_build(text, NULL, NULL), CB_ECONFIG);
    CB_CHECK_CONTAINS(g_msg, "stages.many.Component00 (line 5), stages.many.Component01 (line 6)");
    CB_CHECK_CONTAINS(g_msg, " more; see docs/porting.md");
    CB_CHECK_CMP_INT(strlen(g_msg), <, CB_ERROR_MSG_MAX + 32);
}

/* Keys that cannot be mapped are reported where they are written. */
static void test_errors_keep_positions(void) {
    static const char head[] = "pipelines:\n- name: p\n  inputs: [0]\n  stages:\n";
    char text[1024];
    snprintf(text, sizeof text, "listeners: [top, nvtop]\n%s  - {id: 0, component: stages.Stage}\n",
             head);
    EXPECT_ERROR(text, "bench.yaml:1:18: listeners[1]: unknown radT listener 'nvtop' "
                       "(expected one of: smi, dcgmi, top, iostat, free, macmon)");
    snprintf(text, sizeof text,
             "listeners: [top]\nmonitors: false\n%s  - {id: 0, component: stages.Stage}\n", head);
    EXPECT_ERROR(text, "bench.yaml:1:12: listeners: both `listeners` (the reference's) and "
                       "`monitors` are set: keep one");
    snprintf(text, sizeof text,
             "%s  - {id: 0, component: stages.evaluation.data_injector.DataInjector,\n"
             "     config: {payload_sise: 10}}\n", head);
    EXPECT_ERROR(text, "bench.yaml:6:15: pipelines[0].stages[0].config.payload_sise: unknown key "
                       "for the reference's stages.evaluation.data_injector.DataInjector "
                       "(expected: payload_size)");
    snprintf(text, sizeof text,
             "%s  - {id: 0, component: stages.evaluation.DataInjector, "
             "config: {payload_size: 1k}}\n",
             head);
    EXPECT_ERROR(text, "bench.yaml:5:79: pipelines[0].stages[0].config.payload_size: expected a "
                       "payload size in bytes (an integer >= 0)");
    EXPECT_ERROR("pipelines:\n- name: p\n  inputs: [0]\n  dataset_stage_id: 0\n  stages:\n"
                 "  - {id: 0, component: stages.Stage, config: {x: 1}}\n",
                 "bench.yaml:6:47: pipelines[0].stages[0].config.x: unknown key for the "
                 "reference's stages.Stage (it reads no key)");
    /* After translation spec.c still reports at the original text. */
    snprintf(text, sizeof text, "%s  - {id: 0, component: stages.Stage, outputs: [7]}\n", head);
    EXPECT_ERROR(text, "bench.yaml:5:48: pipelines[0].stages[0].outputs[0]: no stage with id 7 in "
                       "this pipeline");
}

/* colobench's own configs: untouched, nothing noted, the same errors as before. */
static void test_native_untouched(void) {
    static const char native[] = "pipelines:\n- name: p\n  inputs: [0]\n  dataset_stage_id: 0\n"
                                 "  stages:\n  - {id: 0, component: util.source}\n";
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    CB_CHECK_EQ_INT(spec_fixture_build(native, &doc, &spec), CB_OK);
    if (spec) {
        CB_CHECK(!spec->compat.translated);
        CB_CHECK(spec->compat.root == doc->root);
        CB_CHECK_EQ_INT(spec->compat.n_notes, 0);
        CB_CHECK(spec->pipelines[0].loadgen.split_barrier);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    /* colobench's alias of the base Stage, with util.noop's parameter: as before. */
    static const char alias[] = "pipelines:\n- name: p\n  inputs: [0]\n  stages:\n"
                                "  - {id: 0, component: stages.stage.Stage, "
                                "config: {log_summary: true}}\n";
    CB_CHECK_EQ_INT(spec_fixture_build(alias, &doc, &spec), CB_OK);
    if (spec) {
        CB_CHECK_STR_EQ(spec->pipelines[0].stages[0].component, "util.noop");
        CB_CHECK_EQ_INT(param(&spec->pipelines[0].stages[0], "log_summary")->i, 1);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    EXPECT_ERROR("pipelines:\n- name: p\n  inputs: [0]\n  dataset_stage_id: 0\n"
                 "  stages:\n  - {id: 0, component: util.noop}\n",
                 "bench.yaml:4:21: pipelines[0].dataset_stage_id: stage 0 (util.noop) is not a "
                 "dataset stage: it reports no splits");
}

/* scripts/check_reference_configs.sh on our configs (no pipeline_configs/: every YAML). */
static void test_check_script(void) {
    char *out = NULL;
    int rc = cb_test_sh("COLOBENCH=" CB_TEST_BINDIR "/colobench " CB_TEST_SRCDIR
                        "/scripts/check_reference_configs.sh " CB_TEST_SRCDIR "/tests/refconfigs",
                        &out);
    CB_CHECK_EQ_INT(rc, 0);
    if (!out) return;
    CB_CHECK_CONTAINS(out, "| file | result | message |\n|---|---|---|\n| cells.yml | rejected | "
                           "a sweep manifest");
    CB_CHECK_CONTAINS(out, "| noop_chain.yml | loads |  |\n");
    CB_CHECK_CONTAINS(out, "| payload_copy.yml | loads | 33: stages.TerminalCapture: runs as "
                           "util.noop");
    CB_CHECK_CONTAINS(out, "| two_missing.yml | rejected | needs components colobench does not "
                           "have: stages.llm_huggingface.MockDataLoader (line 17), ");
    CB_CHECK_CONTAINS(out, "\n5 files: 3 load, 2 rejected\n");
    free(out);
}

int main(void) {
    if (spec_fixture_init() != 0) return 1;
    CB_RUN(test_noop_chain);
    CB_RUN(test_noop_chain_runs);
    CB_RUN(test_payload_copy);
    CB_RUN(test_listeners_partial);
    CB_RUN(test_two_missing);
    CB_RUN(test_cells);
    CB_RUN(test_many_missing);
    CB_RUN(test_errors_keep_positions);
    CB_RUN(test_native_untouched);
    CB_RUN(test_check_script);
    cb_registry_destroy(g_reg);
    return cb_test_done();
}
