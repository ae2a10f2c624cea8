/* Tests of core/registry.c: built-ins, checks of ops tables, plugin loading (good and bad
 * objects, compiled at test time where needed), printing and Markdown. */
#include "harness.h"

#include <stddef.h>
#include <stdlib.h>

#include "core/registry.h"
#include "stages/builtin.h"

/* Number of built-in stages (stages/builtin.def): the plugin tests count on top of it. */
static const size_t n_builtins = 0
#define CB_BUILTIN(sym) +1
#include "stages/builtin.def"
#undef CB_BUILTIN
    ;

static const char *k_ops_tail =
    "static int c(void *s, const cb_stage_args *a, cb_error *e) { (void)s; (void)a; (void)e; return 0; }\n"
    "static int r(void *s, cb_query *q, cb_run_ctx *x, cb_error *e) { (void)s; (void)q; (void)x; (void)e; return 0; }\n";

/* Compiles src into dir/name.so; returns the path or NULL (and fails the test). */
static const char *compile_plugin(const char *dir, const char *name, const char *src) {
    char file[64];
    snprintf(file, sizeof file, "%s.c", name);
    const char *c = cb_test_write(dir, file, src);
    static char so[16][512];
    static int n;
    char *out = so[n++ % 16];
    snprintf(out, 512, "%s/%s.so", dir, name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cc -std=c17 -shared -fPIC -I '%s/include' -o '%s' '%s' 2>&1",
             CB_TEST_SRCDIR, out, c);
    char *log = NULL;
    int rc = cb_test_sh(cmd, &log);
    if (rc != 0) cb__test_fail(__FILE__, __LINE__, "compile %s failed: %s", name, log ? log : "");
    free(log);
    return rc == 0 ? out : NULL;
}

static void test_builtins(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    if (!reg) return;
    const char *names[] = {"util.copy", "util.fail", "util.noop", "util.router",
                           "util.sleep", "util.source", "util.spin", "util.gpu_spin",
                           "util.gpu_copy", "data.synthetic",
                           "data.cifar", "data.images", "vision.decode", "vision.preprocess",
                           "vision.train", "vision.infer", "vision.eval", "llm.prompts",
                           "llm.tokenize", "llm.detokenize", "llm.generate", "llm.openai",
                           "rag.prompt", "rag.answer", "rag.grade", "rag.rewrite", "rag.lookup",
                           "rag.keyword", "rag.fuse", "rag.questions", "rag.retrieve",
                           "rag.embed"};
    size_t n_names = sizeof names / sizeof names[0];
    CB_CHECK_EQ_INT(cb_registry_count(reg), n_names);
    for (size_t i = 0; i < n_names; i++) {
        CB_CHECK(cb_registry_find(reg, names[i]) != NULL);
        CB_CHECK_STR_EQ(cb_registry_origin(reg, names[i]), "built-in");
    }
    for (size_t i = 0; i + 1 < cb_registry_count(reg); i++)
        CB_CHECK(strcmp(cb_registry_at(reg, i)->name, cb_registry_at(reg, i + 1)->name) < 0);
    CB_CHECK(cb_registry_at(reg, 99) == NULL);
    CB_CHECK(cb_registry_find(reg, "util.nope") == NULL);
    CB_CHECK_STR_EQ(cb_registry_suggest(reg, "util.slep"), "util.sleep");
    CB_CHECK(cb_registry_suggest(reg, "completely.different") == NULL);
    CB_CHECK(cb_registry_find(reg, "util.source")->splits != NULL);

    /* adding a built-in again names both origins */
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, cb_registry_find(reg, "util.noop"), "mine.so", &err), CB_EINVAL);
    CB_CHECK_STR_EQ(err.msg, "stage util.noop from mine.so is already registered from built-in");
    cb_registry_destroy(reg);
    cb_registry_destroy(NULL);
}

static int ok_create(void *s, const cb_stage_args *a, cb_error *e) { return 0; }
static int ok_run(void *s, cb_query *q, cb_run_ctx *x, cb_error *e) { return 0; }

static void test_add_checks(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    if (!reg) return;
    static const cb_param_def bad_default[] = {{"n", CB_PARAM_INT, "1.5", 0, 10, NULL, "n"}};
    static const cb_param_def dup[] = {{"n", CB_PARAM_INT, "1", 0, 10, NULL, "n"},
                                       {"n", CB_PARAM_INT, "1", 0, 10, NULL, "n"}};
    static const cb_param_def no_choices[] = {{"m", CB_PARAM_ENUM, "a", CB_PARAM_UNBOUNDED, NULL, "m"}};
    cb_stage_ops ops = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), "test.ok", "ok", NULL, 0, 0,
                        ok_create, NULL, ok_run, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    CB_CHECK_EQ_INT(cb_registry_add(reg, &ops, "t", &err), 0);
    CB_CHECK(cb_registry_find(reg, "test.ok") == &ops);

    cb_stage_ops o = ops;
    o.name = "test.abi";
    o.abi_major = 2;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EABI);
    CB_CHECK_STR_EQ(err.msg, "t: stage ABI 2, this colobench speaks ABI 1");
    o = ops;
    o.name = "test.small";
    o.struct_size = 16;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EABI);
    CB_CHECK_CONTAINS(err.msg, "struct_size 16 <");
    o = ops;
    o.name = "NoFamily";
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "is not of the form family.name");
    o = ops;
    o.name = "test.norun";
    o.run = NULL;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EINVAL);
    CB_CHECK_STR_EQ(err.msg, "t: stage test.norun lacks the required run function");
    o = ops;
    o.name = "test.baddefault";
    o.params = bad_default;
    o.n_params = 1;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EINVAL);
    CB_CHECK_STR_EQ(err.msg, "t: stage test.baddefault: parameter 'n': bad default: expected "
                             "integer in [0, 10], got \"1.5\"");
    o.params = dup;
    o.n_params = 2;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "parameter 'n': duplicate key");
    o.params = no_choices;
    o.n_params = 1;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "parameter 'm': enum without choices");
    CB_CHECK(cb_registry_find(reg, "test.baddefault") == NULL);
    cb_registry_destroy(reg);
}

static void test_metric_checks(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    if (!reg) return;
    static const cb_metric_def good[] = {{"loss", CB_METRIC_GAUGE, "", "training loss"},
                                         {"images", CB_METRIC_COUNT, "images", "images"}};
    static const cb_metric_def upper[] = {{"Loss", CB_METRIC_GAUGE, "", "x"}};
    static const cb_metric_def empty[] = {{"", CB_METRIC_GAUGE, "", "x"}};
    static const cb_metric_def noname[] = {{NULL, CB_METRIC_GAUGE, "", "x"}};
    static const cb_metric_def dotted[] = {{"a.b", CB_METRIC_COUNT, "", "x"}};
    static const cb_metric_def badkind[] = {{"loss", (cb_metric_kind)7, "", "x"}};
    static const cb_metric_def twice[] = {{"loss", CB_METRIC_GAUGE, "", "x"},
                                          {"acc", CB_METRIC_GAUGE, "", "x"},
                                          {"loss", CB_METRIC_COUNT, "", "x"}};
    cb_metric_def many[CB_STAGE_MAX_METRICS + 1];
    char names[CB_STAGE_MAX_METRICS + 1][8];
    for (int i = 0; i <= CB_STAGE_MAX_METRICS; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        many[i] = (cb_metric_def){names[i], CB_METRIC_COUNT, "", "x"};
    }
    cb_stage_ops ops = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), "test.metrics", "ok", NULL, 0, 0,
                        ok_create, NULL, ok_run, NULL, NULL, NULL, good, 2, NULL, NULL};
    CB_CHECK_EQ_INT(cb_registry_add(reg, &ops, "t", &err), 0);
    size_t n = 0;
    CB_CHECK(cb_registry_ops_metrics(&ops, &n) == good);
    CB_CHECK_EQ_INT(n, 2);

    /* exactly the maximum is fine, one more is not (the registry keeps pointers to the tables it
     * accepts: each gets its own storage) */
    cb_stage_ops max_ops = ops, none_ops = ops, old_ops = ops, o;
    max_ops.name = "test.max";
    max_ops.metrics = many;
    max_ops.n_metrics = CB_STAGE_MAX_METRICS;
    CB_CHECK_EQ_INT(cb_registry_add(reg, &max_ops, "t", &err), 0);
    struct {
        const cb_metric_def *defs;
        size_t n;
        const char *msg;
    } bad[] = {
        {upper, 1, "t: stage test.bad: metric 0: name 'Loss' is not [a-z0-9_] (1 to 64 characters, e.g. loss)"},
        {empty, 1, "t: stage test.bad: metric 0: name '' is not [a-z0-9_]"},
        {noname, 1, "t: stage test.bad: metric 0: name '(null)' is not [a-z0-9_]"},
        {dotted, 1, "t: stage test.bad: metric 0: name 'a.b' is not [a-z0-9_]"},
        {badkind, 1, "t: stage test.bad: metric 'loss': kind 7 is not CB_METRIC_COUNT, CB_METRIC_GAUGE or CB_METRIC_DIST"},
        {twice, 3, "t: stage test.bad: metric 'loss' declared twice"},
        {many, CB_STAGE_MAX_METRICS + 1, "t: stage test.bad declares 17 metrics, at most 16"},
        {NULL, 2, "t: stage test.bad: n_metrics is 2 but metrics is NULL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = ops;
        o.name = "test.bad";
        o.metrics = bad[i].defs;
        o.n_metrics = bad[i].n;
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, bad[i].msg);
        CB_CHECK(cb_registry_find(reg, "test.bad") == NULL);
    }
    /* NULL metrics with n 0 is "none" */
    none_ops.name = "test.none";
    none_ops.metrics = NULL;
    none_ops.n_metrics = 0;
    CB_CHECK_EQ_INT(cb_registry_add(reg, &none_ops, "t", &err), 0);
    CB_CHECK(cb_registry_ops_metrics(&none_ops, &n) == NULL && n == 0);

    /* An ops table built before the metric fields were appended: accepted, and the fields its
     * struct_size does not cover are never read (here they hold garbage). */
    old_ops.name = "test.old";
    old_ops.struct_size = (uint32_t)offsetof(cb_stage_ops, metrics);
    old_ops.metrics = (const cb_metric_def *)(uintptr_t)1;
    old_ops.n_metrics = 99;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &old_ops, "t", &err), 0);
    CB_CHECK(cb_registry_ops_metrics(&old_ops, &n) == NULL && n == 0);
    /* Nor its check callback (appended 2026-12-07): a table that ends before it has none. */
    o = ops;
    o.check = (int (*)(const cb_stage_args *, cb_error *))(uintptr_t)1;
    o.struct_size = (uint32_t)offsetof(cb_stage_ops, check);
    CB_CHECK(cb_registry_ops_check(&o) == NULL);
    CB_CHECK(cb_registry_ops_check(&old_ops) == NULL);
    CB_CHECK(cb_registry_ops_check(&cb_stage_util_router) != NULL);
    o = old_ops;
    o.name = "test.tooold";
    o.struct_size = (uint32_t)offsetof(cb_stage_ops, metrics) - 8;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_add(reg, &o, "t", &err), CB_EABI);
    CB_CHECK_CONTAINS(err.msg, "struct_size");
    cb_registry_destroy(reg);
}

static void test_print(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    if (!reg) return;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_registry_print(reg, NULL, f, &err), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "util.noop");
    CB_CHECK_CONTAINS(out, "util.sleep");
    CB_CHECK_CONTAINS(out, "params: distribution, duration_us");
    CB_CHECK_CONTAINS(out, "metrics: bytes (count)");
    free(out);

    out = NULL;
    f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_registry_print(reg, "util.source", f, &err), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "metrics (reported per query):\n  name   kind   unit   description\n"
                           "  bytes  count  bytes  payload bytes attached to the query\n");
    free(out);

    out = NULL;
    f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_registry_print(reg, "util.sleep", f, &err), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "util.sleep - ");
    CB_CHECK_CONTAINS(out, "origin: built-in");
    CB_CHECK_CONTAINS(out, "metrics: none");
    CB_CHECK_CONTAINS(out, "duration_us");
    CB_CHECK_CONTAINS(out, "float");
    CB_CHECK_CONTAINS(out, "[0, 3600000000]");
    CB_CHECK_CONTAINS(out, "fixed|");
    free(out);

    out = NULL;
    f = open_memstream(&out, &len);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_print(reg, "util.slep", f, &err), CB_ENOENT);
    fclose(f);
    CB_CHECK_STR_EQ(err.msg, "unknown stage 'util.slep' (did you mean 'util.sleep'?)");
    free(out);

    out = NULL;
    f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_registry_write_markdown(reg, f), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "# Stages");
    CB_CHECK_CONTAINS(out, "## `util.router`");
    CB_CHECK_CONTAINS(out, "| `max_hops` | int | `16` | [1, 1000000] |");
    CB_CHECK_CONTAINS(out, "probability\\|field");
    CB_CHECK_CONTAINS(out, "| metric | kind | unit | description |\n|---|---|---|---|\n"
                           "| `bytes` | count | bytes | payload bytes attached to the query |\n");
    free(out);
    cb_registry_destroy(reg);
}

static void test_example_plugin(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    cb_registry_allow_plugins(reg, true); /* off unless allowed */
    if (!reg) return;
    const char *path = CB_TEST_BINDIR "/plugins/example_plugin.so";
    int rc = cb_registry_load_plugin(reg, path, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", err.msg);
    CB_CHECK(cb_registry_find(reg, "example.scale") != NULL);
    CB_CHECK_STR_EQ(cb_registry_origin(reg, "example.scale"), path);
    CB_CHECK_EQ_INT(cb_registry_count(reg), n_builtins + 1);
    /* the same path again is a no-op */
    CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, path, &err), 0);
    CB_CHECK_EQ_INT(cb_registry_load_path(reg, CB_TEST_BINDIR "/plugins", &err), 0);
    CB_CHECK_EQ_INT(cb_registry_count(reg), n_builtins + 1);
    cb_registry_destroy(reg);
}

static void test_bad_plugins(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    cb_registry_allow_plugins(reg, true); /* off unless allowed */
    if (!reg) return;
    const char *dir = cb_test_tmpdir();

    /* missing file */
    char missing[512];
    snprintf(missing, sizeof missing, "%s/nope.so", dir);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, missing, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.msg, "No such file or directory");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_load_path(reg, missing, &err), CB_ENOENT);

    /* not a shared object at all */
    const char *text = cb_test_write(dir, "text.so", "hello\n");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, text, &err), CB_EIO);
    CB_CHECK_CONTAINS(err.msg, "cannot load:");

    /* a shared object without the entry symbol */
    const char *nosym = compile_plugin(dir, "nosym", "int not_a_plugin = 1;\n");
    if (nosym) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, nosym, &err), CB_EABI);
        CB_CHECK_CONTAINS(err.msg, "not a colobench plugin (no symbol cb_plugin_entry)");
    }

    /* wrong ABI major */
    char src[4096];
    snprintf(src, sizeof src,
             "#include \"colobench/stage.h\"\n%s"
             "static const cb_stage_ops ops = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), \"bad.abi\", "
             "\"x\", 0, 0, 0, c, 0, r, 0, 0, 0};\n"
             "static const cb_stage_ops *const list[] = {&ops};\n"
             "const cb_plugin cb_plugin_entry = {99, sizeof(cb_plugin), \"bad\", 1, list};\n",
             k_ops_tail);
    const char *badabi = compile_plugin(dir, "badabi", src);
    if (badabi) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, badabi, &err), CB_EABI);
        CB_CHECK_CONTAINS(err.msg, "built for stage ABI 99, this colobench speaks ABI 1");
        CB_CHECK(cb_registry_find(reg, "bad.abi") == NULL);
    }

    /* an ops table with an old struct_size */
    snprintf(src, sizeof src,
             "#include \"colobench/stage.h\"\n%s"
             "static const cb_stage_ops ops = {CB_STAGE_ABI_MAJOR, 24, \"bad.size\", "
             "\"x\", 0, 0, 0, c, 0, r, 0, 0, 0};\n"
             "static const cb_stage_ops *const list[] = {&ops};\n"
             "const cb_plugin cb_plugin_entry = {CB_STAGE_ABI_MAJOR, sizeof(cb_plugin), \"bad\", 1, list};\n",
             k_ops_tail);
    const char *badsize = compile_plugin(dir, "badsize", src);
    if (badsize) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, badsize, &err), CB_EABI);
        CB_CHECK_CONTAINS(err.msg, "stage ops struct_size 24 <");
    }

    /* a bad metric table: rejected before anything of the plugin runs */
    snprintf(src, sizeof src,
             "#include \"colobench/stage.h\"\n%s"
             "static const cb_metric_def m[] = {{\"loss\", CB_METRIC_GAUGE, \"\", \"x\"}, "
             "{\"Top-1\", CB_METRIC_GAUGE, \"ratio\", \"x\"}};\n"
             "static const cb_stage_ops ops = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), \"bad.metric\", "
             "\"x\", 0, 0, 0, c, 0, r, 0, 0, 0, m, 2};\n"
             "static const cb_stage_ops *const list[] = {&ops};\n"
             "const cb_plugin cb_plugin_entry = {CB_STAGE_ABI_MAJOR, sizeof(cb_plugin), \"bad\", 1, list};\n",
             k_ops_tail);
    const char *badmetric = compile_plugin(dir, "badmetric", src);
    if (badmetric) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, badmetric, &err), CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, "badmetric.so: stage bad.metric: metric 1: name 'Top-1' is not [a-z0-9_]");
        CB_CHECK(cb_registry_find(reg, "bad.metric") == NULL);
    }

    /* a plugin that redefines a built-in, listed after a good stage: nothing is added */
    snprintf(src, sizeof src,
             "#include \"colobench/stage.h\"\n%s"
             "static const cb_stage_ops a = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), \"dup.fine\", "
             "\"x\", 0, 0, 0, c, 0, r, 0, 0, 0};\n"
             "static const cb_stage_ops b = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), \"util.noop\", "
             "\"x\", 0, 0, 0, c, 0, r, 0, 0, 0};\n"
             "static const cb_stage_ops *const list[] = {&a, &b};\n"
             "const cb_plugin cb_plugin_entry = {CB_STAGE_ABI_MAJOR, sizeof(cb_plugin), \"dup\", 2, list};\n",
             k_ops_tail);
    const char *dupso = compile_plugin(dir, "dup", src);
    if (dupso) {
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, dupso, &err), CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, "stage util.noop from ");
        CB_CHECK_CONTAINS(err.msg, "dup.so is already registered from built-in");
        CB_CHECK(cb_registry_find(reg, "dup.fine") == NULL);
    }
    CB_CHECK_EQ_INT(cb_registry_count(reg), n_builtins);
    cb_registry_destroy(reg);
}

/* Plugins are off unless allowed: nothing is dlopen'ed (no constructor runs). */
static void test_plugins_off_by_default(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_builtin_registry(&reg, &err), 0);
    CB_CHECK(!cb_registry_plugins_allowed(reg));
    CB_CHECK_EQ_INT(cb_registry_load_plugin(reg, CB_TEST_BINDIR "/plugins/example_plugin.so", &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "--allow-plugins");
    CB_CHECK_EQ_INT(cb_registry_n_plugins(reg), 0);
    CB_CHECK(cb_registry_find(reg, "example.scale") == NULL);
    cb_registry_destroy(reg);
}

int main(void) {
    CB_RUN(test_plugins_off_by_default);
    CB_RUN(test_builtins);
    CB_RUN(test_add_checks);
    CB_RUN(test_metric_checks);
    CB_RUN(test_print);
    CB_RUN(test_example_plugin);
    CB_RUN(test_bad_plugins);
    return cb_test_done();
}
