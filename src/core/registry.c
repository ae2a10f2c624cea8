/* core/registry.c - the stage registry: built-ins and plugins in one sorted namespace.
 *
 * Design: a sorted array of (ops, origin) entries; built-ins come from stages/builtin.def.
 * Plugins are dlopen'ed with RTLD_NOW|RTLD_LOCAL and reached only through the data symbol
 * cb_plugin_entry. Everything is checked before any plugin function could run (ggml checks too
 * late; we do not): the entry's abi_major and struct_size, then every ops table (abi_major,
 * struct_size at least ABI 1's first layout, with appended fields read only when struct_size
 * covers them; name `family.name`, create/run present, the parameter table via
 * cb_params_resolve on an empty config, the metric table, names unique within the plugin and
 * against the registry). A plugin is added all or nothing; a rejected one is dlclosed at once.
 * (dlopen runs the object's ELF constructors; nothing in the ABI can prevent that.)
 * Thread-safety: not thread-safe while being filled; read-only afterwards and then shareable.
 * Ownership: the registry owns its entry array, an arena with origin strings and paths, and the
 * dlopen handles it closes in cb_registry_destroy; ops tables are borrowed from the built-in
 * objects or the loaded plugins, which stay loaded while the registry lives.
 */
#include "core/registry.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/spec.h"
#include "core/suggest.h"

#define CB_PLUGIN_MAX_STAGES 1024
#define CB_REGISTRY_MAX 4096
#define CB_PLUGIN_DIR_MAX 1024

typedef struct entry {
    const cb_stage_ops *ops;
    const char *origin;
} entry;

typedef struct plugin {
    const char *path; /* realpath */
    void *handle;
} plugin;

struct cb_registry {
    cb_arena *arena;
    entry *entries;
    size_t n, cap;
    plugin *plugins;
    size_t n_plugins, cap_plugins;
    bool allow_plugins;       /* loading plugins (running their code) is off unless allowed */
};

static int oom(cb_error *err) { return cb_error_set(err, CB_ENOMEM, "out of memory"); }

static size_t lower_bound(const cb_registry *reg, const char *name) {
    size_t lo = 0, hi = reg->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(reg->entries[mid].ops->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const entry *find_entry(const cb_registry *reg, const char *name) {
    if (!reg || !name) return NULL;
    size_t i = lower_bound(reg, name);
    return i < reg->n && strcmp(reg->entries[i].ops->name, name) == 0 ? &reg->entries[i] : NULL;
}

static int valid_name(const char *name) {
    if (!name || !name[0] || strlen(name) > 64) return 0;
    int dots = 0;
    char prev = '.';
    for (const char *p = name; *p; prev = *p++) {
        if (*p == '.') {
            if (prev == '.') return 0;
            dots++;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            return 0;
        }
    }
    return dots >= 1 && prev != '.';
}

const char *cb_metric_kind_name(cb_metric_kind kind) {
    switch (kind) {
    case CB_METRIC_COUNT: return "count";
    case CB_METRIC_GAUGE: return "gauge";
    case CB_METRIC_DIST: return "dist";
    }
    return "?";
}

/* [a-z0-9_]{1,64} */
static int valid_metric_name(const char *name) {
    if (!name || !name[0] || strlen(name) > 64) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return 0;
    return 1;
}

/* The metric table (read only when struct_size covers it): at most CB_STAGE_MAX_METRICS, names
 * [a-z0-9_]+ and unique, kinds known. */
static int check_metrics(const cb_stage_ops *ops, const char *origin, cb_error *err) {
    if (ops->struct_size < offsetof(cb_stage_ops, n_metrics) + sizeof ops->n_metrics) return 0;
    size_t n = ops->n_metrics;
    if (n == 0) return 0;
    if (n > CB_STAGE_MAX_METRICS)
        return cb_error_set(err, CB_EINVAL, "%s: stage %s declares %zu metrics, at most %d", origin,
                            ops->name, n, CB_STAGE_MAX_METRICS);
    if (!ops->metrics)
        return cb_error_set(err, CB_EINVAL, "%s: stage %s: n_metrics is %zu but metrics is NULL",
                            origin, ops->name, n);
    for (size_t i = 0; i < n; i++) {
        const cb_metric_def *m = &ops->metrics[i];
        if (!valid_metric_name(m->name))
            return cb_error_set(err, CB_EINVAL, "%s: stage %s: metric %zu: name '%s' is not "
                                "[a-z0-9_] (1 to 64 characters, e.g. loss)", origin, ops->name, i,
                                m->name ? m->name : "(null)");
        if (m->kind != CB_METRIC_COUNT && m->kind != CB_METRIC_GAUGE && m->kind != CB_METRIC_DIST)
            return cb_error_set(err, CB_EINVAL, "%s: stage %s: metric '%s': kind %d is not "
                                "CB_METRIC_COUNT, CB_METRIC_GAUGE or CB_METRIC_DIST", origin,
                                ops->name, m->name, (int)m->kind);
        for (size_t j = 0; j < i; j++)
            if (strcmp(ops->metrics[j].name, m->name) == 0)
                return cb_error_set(err, CB_EINVAL, "%s: stage %s: metric '%s' declared twice",
                                    origin, ops->name, m->name);
    }
    return 0;
}

/* Checks one ops table without calling into it. */
static int check_ops(const cb_stage_ops *ops, const char *origin, cb_error *err) {
    if (!ops) return cb_error_set(err, CB_EABI, "%s: NULL stage ops table", origin);
    if (ops->abi_major != CB_STAGE_ABI_MAJOR)
        return cb_error_set(err, CB_EABI, "%s: stage ABI %u, this colobench speaks ABI %u",
                            origin, (unsigned)ops->abi_major, (unsigned)CB_STAGE_ABI_MAJOR);
    if (ops->struct_size < CB_STAGE_OPS_MIN_SIZE)
        return cb_error_set(err, CB_EABI,
                            "%s: stage ops struct_size %u < %zu (not a stage ABI 1 table)", origin,
                            (unsigned)ops->struct_size, (size_t)CB_STAGE_OPS_MIN_SIZE);
    if (!valid_name(ops->name))
        return cb_error_set(err, CB_EINVAL, "%s: stage name '%s' is not of the form family.name "
                            "([a-z0-9_], e.g. util.sleep)", origin, ops->name ? ops->name : "(null)");
    if (!ops->create || !ops->run)
        return cb_error_set(err, CB_EINVAL, "%s: stage %s lacks the required %s function", origin,
                            ops->name, !ops->create ? "create" : "run");
    if (ops->state_size > ((size_t)1 << 30))
        return cb_error_set(err, CB_EINVAL, "%s: stage %s: state_size %zu is implausible", origin,
                            ops->name, ops->state_size);
    int mrc = check_metrics(ops, origin, err);
    if (mrc) return mrc;
    cb_arena *tmp = cb_arena_create();
    if (!tmp) return oom(err);
    cb_param_value *vals = NULL;
    int rc = cb_params_resolve(ops, NULL, ops->name, tmp, &vals, err);
    cb_arena_destroy(tmp);
    if (rc) cb_error_prefix(err, "%s", origin);
    return rc;
}

static int insert(cb_registry *reg, const cb_stage_ops *ops, const char *origin, cb_error *err) {
    if (reg->n >= CB_REGISTRY_MAX)
        return cb_error_set(err, CB_EINVAL, "more than %d stages registered", CB_REGISTRY_MAX);
    if (reg->n == reg->cap) {
        size_t ncap = reg->cap ? reg->cap * 2 : 16;
        entry *e = cb_realloc(reg->entries, ncap * sizeof *e);
        if (!e) return oom(err);
        reg->entries = e;
        reg->cap = ncap;
    }
    const char *o = cb_arena_strdup(reg->arena, origin);
    if (!o) return oom(err);
    size_t i = lower_bound(reg, ops->name);
    memmove(&reg->entries[i + 1], &reg->entries[i], (reg->n - i) * sizeof *reg->entries);
    reg->entries[i].ops = ops;
    reg->entries[i].origin = o;
    reg->n++;
    return 0;
}

static int duplicate_error(const cb_registry *reg, const cb_stage_ops *ops, const char *origin,
                           cb_error *err) {
    const entry *e = find_entry(reg, ops->name);
    return cb_error_set(err, CB_EINVAL, "stage %s from %s is already registered from %s",
                        ops->name, origin, e ? e->origin : "the same plugin");
}

int cb_registry_add(cb_registry *reg, const cb_stage_ops *ops, const char *origin, cb_error *err) {
    if (!reg) return cb_error_set(err, CB_EINVAL, "cb_registry_add: NULL registry");
    if (!origin) origin = "built-in";
    int rc = check_ops(ops, origin, err);
    if (rc) return rc;
    if (find_entry(reg, ops->name)) return duplicate_error(reg, ops, origin, err);
    return insert(reg, ops, origin, err);
}

int cb_registry_create(cb_registry **out, cb_error *err) {
    if (!out) return cb_error_set(err, CB_EINVAL, "cb_registry_create: NULL out");
    *out = NULL;
    cb_registry *reg = cb_calloc(1, sizeof *reg);
    if (!reg) return oom(err);
    if (!(reg->arena = cb_arena_create())) {
        cb_free(reg);
        return oom(err);
    }
    *out = reg;
    return 0;
}

void cb_registry_destroy(cb_registry *reg) {
    if (!reg) return;
    cb_free(reg->entries);
    reg->entries = NULL;
    reg->n = 0;
    for (size_t i = reg->n_plugins; i-- > 0;) dlclose(reg->plugins[i].handle);
    cb_free(reg->plugins);
    cb_arena_destroy(reg->arena);
    cb_free(reg);
}

void cb_registry_allow_plugins(cb_registry *reg, bool allow) {
    if (reg) reg->allow_plugins = allow;
}

bool cb_registry_plugins_allowed(const cb_registry *reg) { return reg && reg->allow_plugins; }

size_t cb_registry_n_plugins(const cb_registry *reg) { return reg ? reg->n_plugins : 0; }

const char *cb_registry_plugin_path(const cb_registry *reg, size_t i) {
    return reg && i < reg->n_plugins ? reg->plugins[i].path : NULL;
}

int cb_registry_load_plugin(cb_registry *reg, const char *path, cb_error *err) {
    if (!reg || !path) return cb_error_set(err, CB_EINVAL, "cb_registry_load_plugin: bad arguments");
    if (!reg->allow_plugins)
        return cb_error_set(err, CB_ECONFIG,
                            "plugin %s: not loaded: loading a plugin runs its code, which is off "
                            "unless allowed (--allow-plugins)",
                            path);
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        int e = errno;
        return cb_error_set(err, CB_ENOENT, "plugin %s: %s", path, strerror(e));
    }
    for (size_t i = 0; i < reg->n_plugins; i++)
        if (strcmp(reg->plugins[i].path, real) == 0) return 0;
    if (reg->n_plugins == reg->cap_plugins) {
        size_t ncap = reg->cap_plugins ? reg->cap_plugins * 2 : 4;
        plugin *p = cb_realloc(reg->plugins, ncap * sizeof *p);
        if (!p) return oom(err);
        reg->plugins = p;
        reg->cap_plugins = ncap;
    }
    const char *rp = cb_arena_strdup(reg->arena, real);
    if (!rp) return oom(err);

    dlerror();
    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return cb_error_set(err, CB_EIO, "plugin %s: cannot load: %s", path, why ? why : "dlopen failed");
    }
    int rc = 0;
    dlerror();
    const cb_plugin *entry_sym = dlsym(h, CB_PLUGIN_SYMBOL);
    if (!entry_sym) {
        rc = cb_error_set(err, CB_EABI, "plugin %s: not a colobench plugin (no symbol %s)", path,
                          CB_PLUGIN_SYMBOL);
        goto fail;
    }
    if (entry_sym->abi_major != CB_STAGE_ABI_MAJOR) {
        rc = cb_error_set(err, CB_EABI, "plugin %s: built for stage ABI %u, this colobench speaks ABI %u",
                          path, (unsigned)entry_sym->abi_major, (unsigned)CB_STAGE_ABI_MAJOR);
        goto fail;
    }
    if (entry_sym->struct_size < sizeof(cb_plugin)) {
        rc = cb_error_set(err, CB_EABI, "plugin %s: cb_plugin struct_size %u < %zu", path,
                          (unsigned)entry_sym->struct_size, sizeof(cb_plugin));
        goto fail;
    }
    if (entry_sym->n_stages == 0 || entry_sym->n_stages > CB_PLUGIN_MAX_STAGES || !entry_sym->stages) {
        rc = cb_error_set(err, CB_EABI, "plugin %s: bad stage list (n_stages %zu)", path,
                          entry_sym->n_stages);
        goto fail;
    }
    /* Check everything before adding anything: a plugin is registered whole or not at all. */
    for (size_t i = 0; i < entry_sym->n_stages; i++) {
        const cb_stage_ops *ops = entry_sym->stages[i];
        if ((rc = check_ops(ops, path, err))) goto fail;
        if (find_entry(reg, ops->name)) {
            rc = duplicate_error(reg, ops, path, err);
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(entry_sym->stages[j]->name, ops->name) == 0) {
                rc = cb_error_set(err, CB_EINVAL, "plugin %s: stage %s listed twice", path, ops->name);
                goto fail;
            }
        }
    }
    for (size_t i = 0; i < entry_sym->n_stages; i++) {
        if ((rc = insert(reg, entry_sym->stages[i], path, err))) {
            /* roll back what this plugin inserted */
            for (size_t j = 0; j < i; j++) {
                const entry *e = find_entry(reg, entry_sym->stages[j]->name);
                size_t k = (size_t)(e - reg->entries);
                memmove(&reg->entries[k], &reg->entries[k + 1], (reg->n - k - 1) * sizeof *reg->entries);
                reg->n--;
            }
            goto fail;
        }
    }
    reg->plugins[reg->n_plugins].path = rp;
    reg->plugins[reg->n_plugins].handle = h;
    reg->n_plugins++;
    return 0;
fail:
    dlclose(h);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int load_dir(cb_registry *reg, const char *dir, cb_error *err) {
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return cb_error_set(err, CB_ENOENT, "plugin directory %s: %s", dir, strerror(e));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 3, ".so") != 0) continue;
        if (n >= CB_PLUGIN_DIR_MAX) {
            rc = cb_error_set(err, CB_EINVAL, "plugin directory %s: more than %d .so files", dir,
                              CB_PLUGIN_DIR_MAX);
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char **nn = cb_realloc(names, ncap * sizeof *nn);
            if (!nn) {
                rc = oom(err);
                break;
            }
            names = nn;
            cap = ncap;
        }
        if (!(names[n] = cb_strdup(de->d_name))) rc = oom(err);
        else n++;
    }
    closedir(d);
    if (!rc) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = cb_registry_load_plugin(reg, path, err);
    }
    for (size_t i = 0; i < n; i++) cb_free(names[i]);
    cb_free(names);
    return rc;
}

int cb_registry_load_path(cb_registry *reg, const char *list, cb_error *err) {
    if (!reg || !list) return cb_error_set(err, CB_EINVAL, "cb_registry_load_path: bad arguments");
    const char *p = list;
    while (*p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        if (len > 0) {
            char path[PATH_MAX];
            if (len >= sizeof path) return cb_error_set(err, CB_EINVAL, "plugin path too long");
            memcpy(path, p, len);
            path[len] = '\0';
            struct stat st;
            int rc;
            if (stat(path, &st) != 0) {
                int e = errno;
                rc = cb_error_set(err, CB_ENOENT, "plugin path %s: %s", path, strerror(e));
            } else if (S_ISDIR(st.st_mode)) {
                rc = load_dir(reg, path, err);
            } else {
                rc = cb_registry_load_plugin(reg, path, err);
            }
            if (rc) return rc;
        }
        if (!colon) break;
        p = colon + 1;
    }
    return 0;
}

const cb_stage_ops *cb_registry_find(const cb_registry *reg, const char *name) {
    const entry *e = find_entry(reg, name);
    return e ? e->ops : NULL;
}

const char *cb_registry_origin(const cb_registry *reg, const char *name) {
    const entry *e = find_entry(reg, name);
    return e ? e->origin : NULL;
}

size_t cb_registry_count(const cb_registry *reg) { return reg ? reg->n : 0; }

const cb_stage_ops *cb_registry_at(const cb_registry *reg, size_t i) {
    return reg && i < reg->n ? reg->entries[i].ops : NULL;
}

const char *cb_registry_suggest(const cb_registry *reg, const char *name) {
    if (!reg || !name || reg->n == 0) return NULL;
    const char **cands = cb_malloc(reg->n * sizeof *cands);
    if (!cands) return NULL;
    for (size_t i = 0; i < reg->n; i++) cands[i] = reg->entries[i].ops->name;
    const char *best = cb_suggest(name, cands, reg->n);
    cb_free(cands);
    return best;
}

/* ---- printing -------------------------------------------------------------------------- */

static const char *param_type_name(cb_param_type t) {
    switch (t) {
    case CB_PARAM_INT: return "int";
    case CB_PARAM_FLOAT: return "float";
    case CB_PARAM_BOOL: return "bool";
    case CB_PARAM_STRING: return "string";
    case CB_PARAM_ENUM: return "enum";
    case CB_PARAM_INT_LIST: return "int list";
    case CB_PARAM_FLOAT_LIST: return "float list";
    case CB_PARAM_INT_MAP: return "int map";
    case CB_PARAM_PATH: return "path";
    }
    return "?";
}

/* "[1, 4096]", "fixed|exponential" or "" */
static void param_range(const cb_param_def *d, char *buf, size_t size) {
    buf[0] = '\0';
    if (d->type == CB_PARAM_ENUM || d->type == CB_PARAM_PATH) { /* a path: what it names */
        snprintf(buf, size, "%s", d->choices ? d->choices : "");
    } else if (!(d->min > d->max) && d->type != CB_PARAM_BOOL && d->type != CB_PARAM_STRING) {
        int is_int = d->type == CB_PARAM_INT || d->type == CB_PARAM_INT_LIST ||
                     d->type == CB_PARAM_INT_MAP;
        if (is_int)
            snprintf(buf, size, "[%.0f, %.0f]", d->min, d->max);
        else
            snprintf(buf, size, "[%.15g, %.15g]", d->min, d->max);
    }
}

static void print_metrics(const cb_stage_ops *ops, FILE *out) {
    size_t n;
    const cb_metric_def *m = cb_registry_ops_metrics(ops, &n);
    if (n == 0) {
        fprintf(out, "metrics: none\n");
        return;
    }
    int wn = 4, wu = 4;
    for (size_t i = 0; i < n; i++) {
        int l = (int)strlen(m[i].name);
        if (l > wn) wn = l;
        l = (int)strlen(m[i].unit ? m[i].unit : "");
        if (l > wu) wu = l;
    }
    fprintf(out, "metrics (reported per query):\n");
    fprintf(out, "  %-*s  %-5s  %-*s  %s\n", wn, "name", "kind", wu, "unit", "description");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-*s  %-5s  %-*s  %s\n", wn, m[i].name, cb_metric_kind_name(m[i].kind), wu,
                m[i].unit ? m[i].unit : "", m[i].doc ? m[i].doc : "");
}

static void print_params(const cb_stage_ops *ops, FILE *out) {
    int wk = 3, wt = 4, wd = 7, wr = 6;
    char range[160];
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        int l = (int)strlen(d->key);
        if (l > wk) wk = l;
        l = (int)strlen(param_type_name(d->type));
        if (l > wt) wt = l;
        l = (int)strlen(d->default_value ? d->default_value : "-");
        if (l > wd) wd = l;
        param_range(d, range, sizeof range);
        l = (int)strlen(range);
        if (l > wr) wr = l;
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wk, "key", wt, "type", wd, "default", wr,
            "range", "description");
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        param_range(d, range, sizeof range);
        fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wk, d->key, wt, param_type_name(d->type), wd,
                d->default_value ? d->default_value : "-", wr, range, d->doc ? d->doc : "");
    }
}

int cb_registry_print(const cb_registry *reg, const char *name, FILE *out, cb_error *err) {
    if (!reg || !out) return cb_error_set(err, CB_EINVAL, "cb_registry_print: bad arguments");
    if (name) {
        const entry *e = find_entry(reg, name);
        if (!e) {
            const char *best = cb_registry_suggest(reg, name);
            if (best)
                return cb_error_set(err, CB_ENOENT, "unknown stage '%s' (did you mean '%s'?)", name, best);
            return cb_error_set(err, CB_ENOENT, "unknown stage '%s' (`colobench stages` lists them)", name);
        }
        fprintf(out, "%s - %s\n", e->ops->name, e->ops->summary ? e->ops->summary : "");
        fprintf(out, "origin: %s\n", e->origin);
        fprintf(out, "dataset stage: %s\n", e->ops->splits ? "yes (reports splits)" : "no");
        if (e->ops->n_params == 0) {
            fprintf(out, "parameters: none\n");
        } else {
            fprintf(out, "parameters:\n");
            print_params(e->ops, out);
        }
        print_metrics(e->ops, out);
        return ferror(out) ? cb_error_set(err, CB_EIO, "write error") : 0;
    }
    int w = 4;
    for (size_t i = 0; i < reg->n; i++) {
        int l = (int)strlen(reg->entries[i].ops->name);
        if (l > w) w = l;
    }
    for (size_t i = 0; i < reg->n; i++) {
        const entry *e = &reg->entries[i];
        fprintf(out, "%-*s  %s", w, e->ops->name, e->ops->summary ? e->ops->summary : "");
        if (strcmp(e->origin, "built-in") != 0) fprintf(out, "  [%s]", e->origin);
        fputc('\n', out);
        if (e->ops->n_params) {
            fprintf(out, "%-*s  params:", w, "");
            for (size_t j = 0; j < e->ops->n_params; j++)
                fprintf(out, " %s%s", e->ops->params[j].key, j + 1 < e->ops->n_params ? "," : "");
            fputc('\n', out);
        }
        size_t nm;
        const cb_metric_def *m = cb_registry_ops_metrics(e->ops, &nm);
        if (nm) {
            fprintf(out, "%-*s  metrics:", w, "");
            for (size_t j = 0; j < nm; j++)
                fprintf(out, " %s (%s)%s", m[j].name, cb_metric_kind_name(m[j].kind),
                        j + 1 < nm ? "," : "");
            fputc('\n', out);
        }
    }
    return ferror(out) ? cb_error_set(err, CB_EIO, "write error") : 0;
}

static void md_cell(const char *s, FILE *out) {
    for (; s && *s; s++) {
        if (*s == '|') fputs("\\|", out);
        else if (*s == '\n') fputc(' ', out);
        else fputc(*s, out);
    }
}

/* The stage's metric table, when it declares any. */
static void md_metrics(const cb_stage_ops *ops, FILE *out) {
    size_t n;
    const cb_metric_def *m = cb_registry_ops_metrics(ops, &n);
    if (n == 0) return;
    fputs("\nMetrics, reported per query (`stage_metrics.csv`, `summary.json`; see "
          "[outputs](outputs.md#stage_metricscsv)):\n\n"
          "| metric | kind | unit | description |\n|---|---|---|---|\n", out);
    for (size_t i = 0; i < n; i++) {
        fprintf(out, "| `%s` | %s | ", m[i].name, cb_metric_kind_name(m[i].kind));
        md_cell(m[i].unit, out);
        fputs(" | ", out);
        md_cell(m[i].doc, out);
        fputs(" |\n", out);
    }
}

int cb_registry_write_markdown(const cb_registry *reg, FILE *out) {
    if (!reg || !out) return CB_EINVAL;
    fputs("# Stages\n\n"
          "Generated by `colobench stages --markdown` from the parameter tables; do not edit.\n\n"
          "A `path` is relative to the config file's directory; its range says what it must name "
          "when the config is loaded (`validate` checks it): an existing `file` or `dir`, or "
          "`out`, a file to write in an existing directory.\n\n",
          out);
    for (size_t i = 0; i < reg->n; i++) {
        const entry *e = &reg->entries[i];
        fprintf(out, "- [`%s`](#", e->ops->name);
        for (const char *p = e->ops->name; *p; p++)
            if (*p != '.') fputc(*p, out);
        fprintf(out, ") - ");
        md_cell(e->ops->summary, out);
        fputc('\n', out);
    }
    char range[160];
    for (size_t i = 0; i < reg->n; i++) {
        const entry *e = &reg->entries[i];
        fprintf(out, "\n## `%s`\n\n", e->ops->name);
        md_cell(e->ops->summary, out);
        fprintf(out, "\n\nOrigin: %s.%s\n\n", e->origin,
                e->ops->splits ? " Dataset stage (reports splits)." : "");
        if (e->ops->n_params == 0) {
            fputs("No parameters.\n", out);
            md_metrics(e->ops, out);
            continue;
        }
        fputs("| key | type | default | range | description |\n|---|---|---|---|---|\n", out);
        for (size_t j = 0; j < e->ops->n_params; j++) {
            const cb_param_def *d = &e->ops->params[j];
            param_range(d, range, sizeof range);
            fprintf(out, "| `%s` | %s | ", d->key, param_type_name(d->type));
            if (d->default_value) {
                fputc('`', out);
                md_cell(d->default_value, out);
                fputc('`', out);
            } else {
                fputs("-", out);
            }
            fputs(" | ", out);
            md_cell(range, out);
            fputs(" | ", out);
            md_cell(d->doc, out);
            fputs(" |\n", out);
        }
        md_metrics(e->ops, out);
    }
    return ferror(out) ? CB_EIO : 0;
}
