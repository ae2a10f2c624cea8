/* experiment/bench.c - loading a benchmark (see bench.h): the registry with the built-in stages
 * and the plugins the user allowed, the config text read once, overrides, the spec.
 * Thread-safety: one thread. Ownership: see bench.h.
 */
#include "experiment/bench.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "experiment/outdir.h"
#include "stages/builtin.h"

static void notice(cb_bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(cb_bench *b, const char *fmt, ...) {
    if (b->n_notices >= CB_BENCH_MAX_NOTICES) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->notices[b->n_notices++], sizeof b->notices[0], fmt, ap);
    va_end(ap);
}

int cb_bench_load(const cb_bench_opts *o, cb_bench *b, cb_error *err) {
    memset(b, 0, sizeof *b);
    b->allow_plugins = o->allow_plugins;
    b->allow_servers = o->allow_servers;
    b->sets = o->sets;
    b->n_sets = o->n_sets;
    int rc = cb_builtin_registry(&b->reg, err);
    if (rc) return rc;
    cb_registry_allow_plugins(b->reg, o->allow_plugins);
    const char *env = getenv("COLOBENCH_PLUGIN_PATH");
    if (env && *env && !o->allow_plugins) {
        notice(b, "COLOBENCH_PLUGIN_PATH is set but its plugins are not loaded without --allow-plugins "
                  "(loading a plugin runs its code)");
    } else if (env && *env && (rc = cb_registry_load_path(b->reg, env, err)) != CB_OK) {
        cb_error_prefix(err, "COLOBENCH_PLUGIN_PATH");
        cb_bench_fini(b);
        return rc;
    }
    size_t from_env = cb_registry_n_plugins(b->reg);
    if (o->config_path) {
        rc = cb_doc_read_file(o->config_path, &b->text, &b->text_len, err); /* 16 MiB */
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
    if (!rc && b->spec->monitors.nvml_library && !o->allow_plugins) {
        /* A config may not pick a library to load either. */
        const cb_node *mn = b->spec->monitors.node;
        const cb_node *ln = mn ? cb_node_get(mn, "nvml_library") : NULL;
        rc = cb_error_set(err, CB_ECONFIG,
                          "loading %s runs its code: a config may name an NVML library only with "
                          "--allow-plugins (or set COLOBENCH_NVML_LIBRARY)",
                          b->spec->monitors.nvml_library);
        if (ln) cb_error_at(err, ln->file, ln->line, ln->col);
        cb_error_key(err, "monitors.nvml_library");
    }
    if (!rc) {
        for (size_t i = 0; i < b->spec->compat.n_notes; i++) notice(b, "%s", b->spec->compat.notes[i]);
        for (size_t i = 0; i < cb_registry_n_plugins(b->reg); i++)
            notice(b, "loaded plugin %s (from %s)", cb_registry_plugin_path(b->reg, i),
                   i < from_env ? "COLOBENCH_PLUGIN_PATH" : "plugin_paths");
        if (b->spec->n_servers && !o->allow_servers)
            notice(b, "the benchmark declares %zu server%s (servers:); `colobench run` starts %s only with "
                      "--allow-servers (starting a server runs the command the config names)",
                   b->spec->n_servers, b->spec->n_servers == 1 ? "" : "s", b->spec->n_servers == 1 ? "it" : "them");
        if (b->spec->n_plugins_not_loaded)
            notice(b, "plugin_paths lists %zu plugin%s, not loaded (loading a plugin runs its code: "
                      "pass --allow-plugins if you trust %s)",
                   b->spec->n_plugins_not_loaded, b->spec->n_plugins_not_loaded == 1 ? "" : "s",
                   b->spec->n_plugins_not_loaded == 1 ? "it" : "them");
    }
    if (rc && env && *env && !o->allow_plugins && err && strstr(err->msg, "unknown stage component")) {
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof err->msg - l,
                 " (COLOBENCH_PLUGIN_PATH is set, but its plugins are loaded only with --allow-plugins)");
    }
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
