/* Tests of core/registry.c: built-ins, checks of ops tables, plugin loading (good and bad
 * objects, compiled at test time where needed), printing and Markdown. */
#include "harness.h"

#include <stdlib.h>

#include "core/registry.h"

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
    CB_CHECK_EQ_INT(cb_registry_create(&reg, &err), 0);
    if (!reg) return;
    const char *names[] = {"util.copy", "util.fail", "util.noop", "util.router",
                           "util.sleep", "util.source", "util.spin", "data.synthetic",
                           "data.cifar", "data.images", "vision.decode", "vision.preprocess"};
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
    CB_CHECK_EQ_INT(cb_registry_create(&reg, &err), 0);
    if (!reg) return;
    static const cb_param_def bad_default[] = {{"n", CB_PARAM_INT, "1.5", 0, 10, NULL, "n"}};
    static const cb_param_def dup[] = {{"n", CB_PARAM_INT, "1", 0, 10, NULL, "n"},
                                       {"n", CB_PARAM_INT, "1", 0, 10, NULL, "n"}};
    static const cb_param_def no_choices[] = {{"m", CB_PARAM_ENUM, "a", CB_PARAM_UNBOUNDED, NULL, "m"}};
    cb_stage_ops ops = {CB_STAGE_ABI_MAJOR, sizeof(cb_stage_ops), "test.ok", "ok", NULL, 0, 0,
                        ok_create, NULL, ok_run, NULL, NULL, NULL};
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

static void test_print(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_create(&reg, &err), 0);
    if (!reg) return;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_registry_print(reg, NULL, f, &err), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "util.noop");
    CB_CHECK_CONTAINS(out, "util.sleep");
    CB_CHECK_CONTAINS(out, "params: distribution, duration_us");
    free(out);

    out = NULL;
    f = open_memstream(&out, &len);
    CB_CHECK_EQ_INT(cb_registry_print(reg, "util.sleep", f, &err), 0);
    fclose(f);
    CB_CHECK_CONTAINS(out, "util.sleep - ");
    CB_CHECK_CONTAINS(out, "origin: built-in");
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
    free(out);
    cb_registry_destroy(reg);
}

static void test_example_plugin(void) {
    cb_registry *reg = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_registry_create(&reg, &err), 0);
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
    CB_CHECK_EQ_INT(cb_registry_create(&reg, &err), 0);
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

int main(void) {
    CB_RUN(test_builtins);
    CB_RUN(test_add_checks);
    CB_RUN(test_print);
    CB_RUN(test_example_plugin);
    CB_RUN(test_bad_plugins);
    return cb_test_done();
}
