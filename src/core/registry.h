/* core/registry.h - the stage registry: built-ins and plugins, one namespace.
 *
 * Built-ins are added by the stages layer (cb_builtin_register, stages/builtin.h: core knows
 * no stage). Plugins are shared objects exporting
 * `cb_plugin_entry` (see colobench/stage.h); they are opened with RTLD_NOW|RTLD_LOCAL, and the
 * entry and every ops table are checked (abi_major, struct_size, required functions, unique
 * names, parameter tables, metric tables) before anything of the plugin is called. A registry
 * is not thread-safe while it is being filled; afterwards it is read-only and may be shared.
 */
#ifndef CB_CORE_REGISTRY_H
#define CB_CORE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "colobench/stage.h"

typedef struct cb_registry cb_registry;

/* The smallest ops table the registry accepts: ABI 1 before metrics were appended. */
#define CB_STAGE_OPS_MIN_SIZE offsetof(cb_stage_ops, metrics)

/* The metrics an ops table declares (*n of them): ops->metrics when its struct_size covers the
 * field, else none (a table built before the field was appended). NULL ops declares none. The
 * one place that reads the field, so every reader honours struct_size. */
static inline const cb_metric_def *cb_registry_ops_metrics(const cb_stage_ops *ops, size_t *n) {
    *n = 0;
    if (!ops || ops->struct_size < offsetof(cb_stage_ops, n_metrics) + sizeof ops->n_metrics ||
        !ops->metrics)
        return NULL;
    *n = ops->n_metrics;
    return ops->metrics;
}

/* The ops table's check callback when its struct_size covers the field, else NULL (absent). */
static inline int (*cb_registry_ops_check(const cb_stage_ops *ops))(const cb_stage_args *, cb_error *) {
    if (!ops || ops->struct_size < offsetof(cb_stage_ops, check) + sizeof ops->check) return NULL;
    return ops->check;
}

/* The ops table's step callback (held queries) when its struct_size covers the field, else NULL. */
static inline int (*cb_registry_ops_step(const cb_stage_ops *ops))(void *, cb_run_ctx *, cb_error *) {
    if (!ops || ops->struct_size < offsetof(cb_stage_ops, step) + sizeof ops->step) return NULL;
    return ops->step;
}

const char *cb_metric_kind_name(cb_metric_kind kind); /* "count", "gauge", "dist", "?" */

/* An empty registry (cb_builtin_registry in stages/builtin.h makes one with the built-ins). */
int cb_registry_create(cb_registry **out, cb_error *err);
void cb_registry_destroy(cb_registry *reg); /* NULL is a no-op; dlcloses plugins */

/* Adds one ops table after checking it; origin ("built-in" or the .so path) is copied. */
int cb_registry_add(cb_registry *reg, const cb_stage_ops *ops, const char *origin, cb_error *err);

/* Plugin policy, in the spirit of SQLite's extension loading: a registry loads no plugin (runs
 * no code from a shared object) unless allowed; `colobench ... --allow-plugins` allows it. */
void cb_registry_allow_plugins(cb_registry *reg, bool allow);
bool cb_registry_plugins_allowed(const cb_registry *reg);
/* The plugins loaded so far (their real paths), in load order. */
size_t cb_registry_n_plugins(const cb_registry *reg);
const char *cb_registry_plugin_path(const cb_registry *reg, size_t i);

/* Loads one plugin .so (CB_ECONFIG when plugins are not allowed). Loading the same path twice is
 * a no-op. */
int cb_registry_load_plugin(cb_registry *reg, const char *path, cb_error *err);

/* Loads a ':'-separated list of .so files and directories (every *.so inside, sorted). */
int cb_registry_load_path(cb_registry *reg, const char *list, cb_error *err);

const cb_stage_ops *cb_registry_find(const cb_registry *reg, const char *name);
const char *cb_registry_origin(const cb_registry *reg, const char *name);
size_t cb_registry_count(const cb_registry *reg);
const cb_stage_ops *cb_registry_at(const cb_registry *reg, size_t i); /* sorted by name */

/* Closest registered name, or NULL. */
const char *cb_registry_suggest(const cb_registry *reg, const char *name);

/* `colobench stages [NAME]`: every stage (or one) with summary and parameters: key, type,
 * default, bounds/choices, doc. CB_ENOENT (with a did-you-mean) for an unknown NAME. */
int cb_registry_print(const cb_registry *reg, const char *name, FILE *out, cb_error *err);

/* Writes docs/stages.md content (Markdown) generated from the parameter tables. */
int cb_registry_write_markdown(const cb_registry *reg, FILE *out);

#endif
