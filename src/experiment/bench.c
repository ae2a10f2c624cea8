/* experiment/bench.c - loading a benchmark (see bench.h): the registry with the built-in stages
 * and the plugins the user allowed, the config text read once, overrides, the spec.
 * Thread-safety: one thread. Ownership: see bench.h.
 */
#include "experiment/bench.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "experiment/outdir.h"
#include "stages/builtin.h"

int cb_bench_load(const cb_bench_opts *o, cb_bench *b, cb_error *err) {
    memset(b, 0, sizeof *b);
    b->allow_plugins = o->allow_plugins;
    b->sets = o->sets;
    b->n_sets = o->n_sets;
    int rc = cb_builtin_registry(&b->reg, err);
    if (rc) return rc;
    const char *env = getenv("COLOBENCH_PLUGIN_PATH");
    if (env && *env && (rc = cb_registry_load_path(b->reg, env, err)) != CB_OK) {
        cb_error_prefix(err, "COLOBENCH_PLUGIN_PATH");
        cb_bench_fini(b);
        return rc;
    }
    if (o->config_path) {
        rc = cb_read_file(o->config_path, CB_BENCH_MAX_TEXT, &b->text, &b->text_len, err);
        if (rc == CB_ENOENT) rc = err ? err->code : CB_ENOENT;
        b->name = cb_strdup(o->config_path);
    } else {
        b->text = cb_malloc(o->config_len + 1);
        if (b->text) {
            memcpy(b->text, o->config_text, o->config_len);
            b->text[o->config_len] = '\0';
            b->text_len = o->config_len;
        }
        b->name = cb_strdup(o->config_name ? o->config_name : "<config>");
        if (!b->text) rc = cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    if (!rc && !b->name) rc = cb_error_set(err, CB_ENOMEM, "out of memory");
    if (!rc) rc = cb_doc_load_string(b->text, b->text_len, b->name, &b->doc, err);
    for (size_t i = 0; !rc && i < o->n_sets; i++) rc = cb_doc_set(b->doc, o->sets[i], err);
    if (!rc) rc = cb_spec_build(b->doc, b->reg, &b->spec, err);
    if (rc) cb_bench_fini(b);
    return rc;
}

void cb_bench_fini(cb_bench *b) {
    if (!b) return;
    cb_spec_destroy(b->spec);
    cb_doc_destroy(b->doc);
    cb_registry_destroy(b->reg);
    cb_free(b->text);
    cb_free(b->name);
    memset(b, 0, sizeof *b);
}
