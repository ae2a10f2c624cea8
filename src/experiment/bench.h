/* experiment/bench.h - a benchmark loaded for running: its registry (built-in stages and the
 * plugins allowed), the config text exactly as read, the document with --set overrides applied,
 * and the validated spec.
 *
 * The config is read once (at most CB_BENCH_MAX_TEXT bytes), so a config given as /dev/stdin or
 * a pipe works, and the text is what child processes receive (experiment/child.h), never the
 * path: every process of a run runs the benchmark the parent read.
 *
 * Code loading (SQLite's extension-loading policy: off unless enabled): without allow_plugins no
 * shared object named by the config or the environment is loaded: plugin_paths are listed (a
 * notice) and a stage that needs one fails with a message saying so; COLOBENCH_PLUGIN_PATH is
 * ignored (a notice); monitors.nvml_library is an error at its position. With allow_plugins
 * they are loaded and every one is named in the notices (and in env.json).
 * Thread-safety: one thread. Ownership: everything belongs to the cb_bench until cb_bench_fini.
 */
#ifndef CB_EXPERIMENT_BENCH_H
#define CB_EXPERIMENT_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include "colobench/error.h"
#include "core/cfgtree.h"
#include "core/registry.h"
#include "core/spec.h"

#define CB_BENCH_MAX_TEXT (16u << 20)
#define CB_BENCH_MAX_NOTICES 16

typedef struct cb_bench_opts {
    const char *config_path;       /* read once; or NULL and: */
    const char *config_text;       /* the text itself (a child's) */
    size_t config_len;
    const char *config_name;       /* its name for messages and relative paths */
    const char *const *sets;       /* --set KEY=VALUE, applied in order */
    size_t n_sets;
    bool allow_plugins;            /* plugin_paths and monitors.nvml_library may load code */
    bool allow_servers;            /* the commands of `servers:` may be started */
} cb_bench_opts;

typedef struct cb_bench {
    cb_registry *reg;
    cb_doc *doc;
    cb_spec *spec;
    char *text;                    /* the config as read, NUL-terminated */
    size_t text_len;
    char *name;                    /* the config's name (its path as given) */
    const char *const *sets;       /* the overrides, borrowed from the options */
    size_t n_sets;
    bool allow_plugins;
    bool allow_servers;
    /* What the user should know about code loading: plugins loaded (and from where), plugins
     * listed but not loaded, COLOBENCH_PLUGIN_PATH ignored. One line each. */
    size_t n_notices;
    char notices[CB_BENCH_MAX_NOTICES][512];
} cb_bench;

int cb_bench_load(const cb_bench_opts *opts, cb_bench *b, cb_error *err);
void cb_bench_fini(cb_bench *b); /* safe on a zeroed cb_bench */

#endif
