/* core/spec.c - builds the typed benchmark (cb_spec) from a YAML document, and writes it back.
 *
 * Design: a small table-free reader per map (benchmark, pipeline, loadgen, loadgen.config,
 * stage): each first rejects keys it does not know (with a did-you-mean among the keys it
 * does), then reads each key with a typed getter that reports FILE:LINE:COL: key: message at
 * the value (or, for a missing required key, at the parent map). Names of the reference Python
 * framework and of MLPerf scenarios are mapped to colobench names here (alias tables below).
 * A pipeline's `replicas: N` is expanded here into N ordinary pipelines (NAME.1 .. NAME.N, seed
 * + K - 1), so nothing downstream knows about replicas except the labels in cb_pipeline_spec;
 * `sweep` is only read and checked here (each point must load), the CLI runs it.
 * `servers` are read before the pipelines (bounds in spec.h), so a stage with both a `server`
 * and a `url` parameter can name one (`server: NAME`): its url is set to the server's URL here,
 * before the stage's check() (resolve_server_url).
 * Stage configs are resolved by params.c, graphs by graph.c. Relative paths (plugin_paths,
 * loadgen.config.file) resolve against the config file's directory and are stored absolute, so
 * cb_spec_write_yaml's output loads again from anywhere.
 * Thread-safety: reentrant; the registry is only read, except that plugin_paths load plugins
 * into it. Ownership: the spec and everything it points to live in its arena; the cb_doc is
 * borrowed and must outlive the spec (nodes are kept for positions).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sched.h>

#include "core/spec.h"
#include "core/monitor_sources.h"
#include "core/path.h"
#include "core/registry.h"
#include "core/schedule.h"
#include "core/suggest.h"

#define CB_SPEC_MAX_PIPELINES 64
#define CB_SPEC_MAX_STAGES 1024
#define CB_SPEC_MAX_LIST 1024
#define CB_SPEC_MAX_WORKERS 1024

typedef struct bctx {
    cb_arena *arena;
    cb_error *err;
    const char *dir; /* directory of the config file, "" for none */
    size_t plugins_not_loaded;   /* plugin_paths entries listed but not loaded */
    const cb_server_spec *servers; /* read before the pipelines: stages name them */
    size_t n_servers;
} bctx;

static int oom(cb_error *err) { return cb_error_set(err, CB_ENOMEM, "out of memory"); }

static int fail_at(bctx *b, const cb_node *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(bctx *b, const cb_node *n, const char *key, const char *fmt, ...) {
    char msg[CB_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cb_error_set(b->err, CB_ECONFIG, "%s", msg);
    if (n) cb_error_at(b->err, n->file, n->line, n->col);
    cb_error_key(b->err, key);
    return CB_ECONFIG;
}

static void join(char *buf, size_t size, const char *path, const char *key) {
    if (path && path[0])
        snprintf(buf, size, "%s.%s", path, key);
    else
        snprintf(buf, size, "%s", key);
}

static const char *got(const cb_node *n, char *buf, size_t size) {
    if (n->kind == CB_NODE_MAP) return "a map";
    if (n->kind == CB_NODE_SEQ) return "a sequence";
    if (cb_node_is_null(n)) return "null";
    snprintf(buf, size, "\"%.120s\"", n->scalar);
    return buf;
}

/* Rejects keys not in known[], with a did-you-mean. */
static int check_keys(bctx *b, const cb_node *map, const char *path, const char *const *known,
                      size_t n_known) {
    for (size_t i = 0; i < map->n; i++) {
        const cb_node *k = map->keys[i];
        size_t j = 0;
        while (j < n_known && strcmp(known[j], k->scalar) != 0) j++;
        if (j < n_known) continue;
        char key[CB_ERROR_KEY_MAX];
        join(key, sizeof key, path, k->scalar);
        const char *best = cb_suggest(k->scalar, known, n_known);
        if (best) return fail_at(b, k, key, "unknown key (did you mean '%s'?)", best);
        char list[512];
        size_t off = 0;
        list[0] = '\0';
        for (j = 0; j < n_known && off < sizeof list; j++) {
            int w = snprintf(list + off, sizeof list - off, "%s%s", j ? ", " : "", known[j]);
            if (w > 0) off += (size_t)w;
        }
        return fail_at(b, k, key, "unknown key (expected one of: %s)", list);
    }
    return 0;
}

static int expect_map(bctx *b, const cb_node *n, const char *path) {
    if (n && n->kind == CB_NODE_MAP) return 0;
    char g[160];
    return fail_at(b, n, path, "expected a map, got %s", n ? got(n, g, sizeof g) : "nothing");
}

/* ---- typed getters: 0 = absent (default kept), 1 = read, negative = error ----------------- */



static int get_int(bctx *b, const cb_node *map, const char *key, const char *path, int64_t min,
                   int64_t max, int64_t *out) {
    const cb_node *n = cb_node_get(map, key);
    if (!n) return 0;
    char k[CB_ERROR_KEY_MAX], g[160];
    join(k, sizeof k, path, key);
    int64_t v;
    if (!cb_node_scalar_int(n, &v) || v < min || v > max) {
        if (max == INT64_MAX)
            return fail_at(b, n, k, "expected integer >= %lld, got %s", (long long)min, got(n, g, sizeof g));
        return fail_at(b, n, k, "expected integer in [%lld, %lld], got %s", (long long)min,
                       (long long)max, got(n, g, sizeof g));
    }
    *out = v;
    return 1;
}

/* min_open: the bound is exclusive (> min). */
static int get_float(bctx *b, const cb_node *map, const char *key, const char *path, double min,
                     int min_open, double max, double *out) {
    const cb_node *n = cb_node_get(map, key);
    if (!n) return 0;
    char k[CB_ERROR_KEY_MAX], g[160];
    join(k, sizeof k, path, key);
    double v;
    if (!cb_node_scalar_float(n, &v) || (min_open ? v <= min : v < min) || v > max) {
        if (max >= 1e300)
            return fail_at(b, n, k, "expected number %s %g, got %s", min_open ? ">" : ">=", min,
                           got(n, g, sizeof g));
        return fail_at(b, n, k, "expected number %s %g and <= %.15g, got %s", min_open ? ">" : ">=",
                       min, max, got(n, g, sizeof g));
    }
    *out = v;
    return 1;
}

static int get_bool(bctx *b, const cb_node *map, const char *key, const char *path, bool *out) {
    const cb_node *n = cb_node_get(map, key);
    if (!n) return 0;
    if (n->kind == CB_NODE_SCALAR && !n->quoted) {
        const char *s = n->scalar;
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return *out = true, 1;
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return *out = false, 1;
    }
    char k[CB_ERROR_KEY_MAX], g[160];
    join(k, sizeof k, path, key);
    return fail_at(b, n, k, "expected true or false, got %s", got(n, g, sizeof g));
}

static int get_string(bctx *b, const cb_node *map, const char *key, const char *path,
                      int nonempty, const char **out, const cb_node **node) {
    const cb_node *n = cb_node_get(map, key);
    if (!n) return 0;
    char k[CB_ERROR_KEY_MAX], g[160];
    join(k, sizeof k, path, key);
    if (n->kind != CB_NODE_SCALAR || cb_node_is_null(n) || (nonempty && !n->scalar[0]))
        return fail_at(b, n, k, "expected a%s string, got %s", nonempty ? " non-empty" : "",
                       got(n, g, sizeof g));
    if (!(*out = cb_arena_strdup(b->arena, n->scalar))) return oom(b->err);
    if (node) *node = n;
    return 1;
}

/* A list of ints (a single int is accepted as a one-item list). */
static int get_int_list(bctx *b, const cb_node *map, const char *key, const char *path,
                        int64_t min, int64_t max, int **out, size_t *n_out) {
    const cb_node *n = cb_node_get(map, key);
    if (!n) return 0;
    char k[CB_ERROR_KEY_MAX], g[160];
    join(k, sizeof k, path, key);
    const cb_node *const *items = (const cb_node *const *)&n;
    size_t count = 1;
    if (n->kind == CB_NODE_SEQ) {
        items = (const cb_node *const *)n->items;
        count = n->n;
    } else if (cb_node_is_null(n)) {
        count = 0;
    } else if (n->kind != CB_NODE_SCALAR) {
        return fail_at(b, n, k, "expected a list of stage ids, got %s", got(n, g, sizeof g));
    }
    if (count > CB_SPEC_MAX_LIST) return fail_at(b, n, k, "more than %d items", CB_SPEC_MAX_LIST);
    int *vals = cb_arena_alloc(b->arena, (count + 1) * sizeof *vals);
    if (!vals) return oom(b->err);
    for (size_t i = 0; i < count; i++) {
        int64_t v;
        if (!cb_node_scalar_int(items[i], &v) || v < min || v > max) {
            char ek[CB_ERROR_KEY_MAX];
            snprintf(ek, sizeof ek, "%s[%zu]", k, i);
            return fail_at(b, items[i], ek, "expected integer in [%lld, %lld], got %s",
                           (long long)min, (long long)max, got(items[i], g, sizeof g));
        }
        vals[i] = (int)v;
    }
    *out = vals;
    *n_out = count;
    return 1;
}

/* A path of the config, absolute by the one rule (core/path.h: against the config's
 * directory). NULL when out of memory or too long. */
static const char *resolve_path(bctx *b, const char *p) {
    char abs[PATH_MAX];
    if (cb_path_resolve(b->dir, p, abs, sizeof abs) != 0) return NULL;
    return cb_arena_strdup(b->arena, abs);
}

/* ---- aliases --------------------------------------------------------------------------- */

typedef struct alias {
    const char *name;
    int value;
} alias;

static const alias loadgen_aliases[] = {
    {"closed", CB_LOADGEN_CLOSED},
    {"offline", CB_LOADGEN_OFFLINE},
    {"poisson", CB_LOADGEN_POISSON},
    {"constant", CB_LOADGEN_CONSTANT},
    {"gamma", CB_LOADGEN_GAMMA},
    {"replay", CB_LOADGEN_REPLAY},
    {"loadgen.OfflineLoadScheduler", CB_LOADGEN_CLOSED}, /* reference framework */
    {"loadgen.PoissonLoadScheduler", CB_LOADGEN_POISSON},
    {"single_stream", CB_LOADGEN_CLOSED}, /* MLPerf scenarios */
    {"server", CB_LOADGEN_POISSON},
};

static const alias policy_aliases[] = {
    {"single", CB_POLICY_SINGLE},
    {"first", CB_POLICY_FIRST},
    {"merge", CB_POLICY_MERGE},
    {"utils.queues.polling.SingleQueuePolicy", CB_POLICY_SINGLE},
    {"utils.queues.polling.FirstSubmittedPolicy", CB_POLICY_FIRST},
    {"utils.queues.polling.MergePolicy", CB_POLICY_MERGE},
};

static const struct {
    const char *alias, *name;
} component_aliases[] = {
    {"stages.stage.Stage", "util.noop"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int lookup_alias(bctx *b, const cb_node *n, const char *key, const alias *tab, size_t count,
                        const char *what, int *out) {
    char g[160];
    if (n->kind != CB_NODE_SCALAR || cb_node_is_null(n))
        return fail_at(b, n, key, "expected a %s name, got %s", what, got(n, g, sizeof g));
    const char *names[16];
    for (size_t i = 0; i < count; i++) {
        names[i] = tab[i].name;
        if (strcmp(tab[i].name, n->scalar) == 0) {
            *out = tab[i].value;
            return 0;
        }
    }
    const char *best = cb_suggest(n->scalar, names, count);
    if (best) return fail_at(b, n, key, "unknown %s '%s' (did you mean '%s'?)", what, n->scalar, best);
    char list[256];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < count && off < sizeof list; i++) {
        if (strchr(names[i], '.')) continue; /* list canonical names only */
        int w = snprintf(list + off, sizeof list - off, "%s%s", off ? ", " : "", names[i]);
        if (w > 0) off += (size_t)w;
    }
    return fail_at(b, n, key, "unknown %s '%s' (expected one of: %s)", what, n->scalar, list);
}

const char *cb_policy_name(cb_policy p) {
    switch (p) {
    case CB_POLICY_SINGLE: return "single";
    case CB_POLICY_FIRST: return "first";
    case CB_POLICY_MERGE: return "merge";
    }
    return "?";
}

const char *cb_loadgen_kind_name(cb_loadgen_kind k) {
    switch (k) {
    case CB_LOADGEN_CLOSED: return "closed";
    case CB_LOADGEN_OFFLINE: return "offline";
    case CB_LOADGEN_POISSON: return "poisson";
    case CB_LOADGEN_CONSTANT: return "constant";
    case CB_LOADGEN_GAMMA: return "gamma";
    case CB_LOADGEN_REPLAY: return "replay";
    }
    return "?";
}

/* ---- readers --------------------------------------------------------------------------- */

static const char *const loadgen_keys[] = {"component", "queue_depth", "max_queries", "timeout",
                                           "warmup_queries", "config"};
static const char *const loadgen_config_keys[] = {"concurrency", "rate", "seed", "burstiness",
                                                  "file", "max_in_flight", "split_barrier"};

static int read_loadgen(bctx *b, const cb_node *pipe, const char *ppath, cb_loadgen_spec *lg) {
    char path[CB_ERROR_KEY_MAX], cpath[CB_ERROR_KEY_MAX], k[CB_ERROR_KEY_MAX];
    join(path, sizeof path, ppath, "loadgen");
    join(cpath, sizeof cpath, path, "config");
    lg->kind = CB_LOADGEN_CLOSED;
    lg->queue_depth = 10;
    lg->max_queries = 0;
    lg->timeout_ns = 60 * (int64_t)1000000000;
    lg->warmup_queries = 0;
    lg->concurrency = 1;
    lg->rate_qps = 0;
    lg->seed = 1;
    lg->burstiness = 1.0;
    lg->file = NULL;
    lg->max_in_flight = 0;
    lg->split_barrier = true;
    const cb_node *m = cb_node_get(pipe, "loadgen");
    lg->node = m;
    if (!m || cb_node_is_null(m)) return 0;
    int rc;
    if ((rc = expect_map(b, m, path)) || (rc = check_keys(b, m, path, loadgen_keys, COUNT(loadgen_keys))))
        return rc;
    const cb_node *comp = cb_node_get(m, "component");
    if (comp) {
        int kind;
        join(k, sizeof k, path, "component");
        if ((rc = lookup_alias(b, comp, k, loadgen_aliases, COUNT(loadgen_aliases),
                               "load generator", &kind)))
            return rc;
        lg->kind = (cb_loadgen_kind)kind;
    }
    int open = cb_loadgen_is_open(lg->kind);
    if ((rc = get_int(b, m, "queue_depth", path, open ? 0 : 1, INT32_MAX, &lg->queue_depth)) < 0 ||
        (rc = get_int(b, m, "max_queries", path, 0, INT64_MAX, &lg->max_queries)) < 0 ||
        (rc = get_int(b, m, "warmup_queries", path, 0, INT64_MAX, &lg->warmup_queries)) < 0)
        return rc;
    if (lg->max_queries > 0 && lg->warmup_queries >= lg->max_queries) {
        /* No measured query: every figure would be empty. */
        join(k, sizeof k, path, "warmup_queries");
        return fail_at(b, cb_node_get(m, "warmup_queries"), k,
                       "%lld warmup queries leave none of max_queries %lld measured (expected "
                       "warmup_queries < max_queries, or max_queries: 0 for unbounded)",
                       (long long)lg->warmup_queries, (long long)lg->max_queries);
    }
    double timeout_s = 60.0;
    if ((rc = get_float(b, m, "timeout", path, 0.0, 1, 1e9, &timeout_s)) < 0) return rc;
    lg->timeout_ns = (int64_t)llround(timeout_s * 1e9);
    if (lg->timeout_ns <= 0) lg->timeout_ns = 1;

    const cb_node *c = cb_node_get(m, "config");
    const cb_node *rate_node = NULL;
    if (c && !cb_node_is_null(c)) {
        if ((rc = expect_map(b, c, cpath)) ||
            (rc = check_keys(b, c, cpath, loadgen_config_keys, COUNT(loadgen_config_keys))))
            return rc;
        int64_t seed = 1;
        if ((rc = get_int(b, c, "concurrency", cpath, 1, 1 << 20, &lg->concurrency)) < 0 ||
            (rc = get_int(b, c, "seed", cpath, 0, INT64_MAX, &seed)) < 0 ||
            (rc = get_int(b, c, "max_in_flight", cpath, 0, INT32_MAX, &lg->max_in_flight)) < 0 ||
            (rc = get_float(b, c, "burstiness", cpath, 0.0, 1, 1e300, &lg->burstiness)) < 0 ||
            (rc = get_bool(b, c, "split_barrier", cpath, &lg->split_barrier)) < 0)
            return rc;
        lg->seed = (uint64_t)seed;
        rate_node = cb_node_get(c, "rate");
        if (rate_node) {
            char g[160];
            join(k, sizeof k, cpath, "rate");
            if (!cb_node_scalar_float(rate_node, &lg->rate_qps))
                return fail_at(b, rate_node, k, "expected a rate in queries per second, got %s",
                               got(rate_node, g, sizeof g));
            if (lg->rate_qps <= 0 && lg->kind != CB_LOADGEN_CLOSED && lg->kind != CB_LOADGEN_OFFLINE &&
                lg->kind != CB_LOADGEN_REPLAY)
                return fail_at(b, rate_node, k, "rate must be > 0 queries per second for %s, got %s",
                               cb_loadgen_kind_name(lg->kind), rate_node->scalar);
            if (lg->rate_qps > 1e9)
                return fail_at(b, rate_node, k, "rate %s is above 1e9 queries per second",
                               rate_node->scalar);
        }
        if (lg->kind != CB_LOADGEN_POISSON && lg->kind != CB_LOADGEN_CONSTANT &&
            lg->kind != CB_LOADGEN_GAMMA)
            lg->rate_qps = 0; /* accepted, ignored: users switch kinds often */
        const cb_node *fn = NULL;
        const char *file = NULL;
        if ((rc = get_string(b, c, "file", cpath, 1, &file, &fn)) < 0) return rc;
        if (file && lg->kind == CB_LOADGEN_REPLAY) {
            if (!(lg->file = resolve_path(b, file))) return oom(b->err);
            join(k, sizeof k, cpath, "file");
            if (access(lg->file, R_OK) != 0) {
                int e = errno;
                return fail_at(b, fn, k, "cannot read arrival file '%s': %s", lg->file, strerror(e));
            }
            /* What run would refuse (a directory, a time that is not a number or decreases),
             * validate refuses: a regular file is read once here, nothing kept (a stream such
             * as a pipe or /dev/zero is left to run: reading it here could block or not end). */
            cb_error re;
            cb_error_clear(&re);
            size_t count = 0;
            size_t max_n = lg->max_queries > 0 ? (size_t)lg->max_queries : 0;
            struct stat sb;
            bool readable = stat(lg->file, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode));
            if (readable && (rc = cb_schedule_read_replay(lg->file, max_n, NULL, &count, &re)) != 0) {
                if (rc == CB_ENOMEM) return oom(b->err);
                char why[CB_ERROR_MSG_MAX];
                cb_error_format(&re, why, sizeof why);
                return fail_at(b, fn, k, "arrival file %s", why);
            }
        }
    }
    if ((lg->kind == CB_LOADGEN_POISSON || lg->kind == CB_LOADGEN_CONSTANT ||
         lg->kind == CB_LOADGEN_GAMMA) && !rate_node) {
        join(k, sizeof k, cpath, "rate");
        return fail_at(b, c && !cb_node_is_null(c) ? c : m, k,
                       "the %s load generator needs config.rate (queries per second, > 0)",
                       cb_loadgen_kind_name(lg->kind));
    }
    if (lg->kind == CB_LOADGEN_REPLAY && !lg->file) {
        join(k, sizeof k, cpath, "file");
        return fail_at(b, c && !cb_node_is_null(c) ? c : m, k,
                       "the replay load generator needs config.file (a CSV of arrival times)");
    }
    return 0;
}

static int resolve_server_url(bctx *b, cb_stage_spec *s, const char *path);

static const char *const stage_keys[] = {"id", "name", "component", "outputs", "workers",
                                         "polling_policy", "max_input_queue_depth",
                                         "disable_logs", "config"};

static int read_stage(bctx *b, const cb_node *m, const char *path, cb_registry *reg,
                      cb_stage_spec *s) {
    int rc;
    char k[CB_ERROR_KEY_MAX], g[160];
    if ((rc = expect_map(b, m, path)) || (rc = check_keys(b, m, path, stage_keys, COUNT(stage_keys))))
        return rc;
    s->node = m;
    int64_t id = -1;
    if ((rc = get_int(b, m, "id", path, 0, INT32_MAX, &id)) < 0) return rc;
    if (rc == 0) return fail_at(b, m, path, "missing required key 'id'");
    s->id = (int)id;

    const cb_node *comp = cb_node_get(m, "component");
    join(k, sizeof k, path, "component");
    if (!comp) return fail_at(b, m, path, "missing required key 'component'");
    if (comp->kind != CB_NODE_SCALAR || cb_node_is_null(comp))
        return fail_at(b, comp, k, "expected a stage component name, got %s", got(comp, g, sizeof g));
    const char *cname = comp->scalar;
    for (size_t i = 0; i < COUNT(component_aliases); i++)
        if (strcmp(component_aliases[i].alias, cname) == 0) cname = component_aliases[i].name;
    s->ops = cb_registry_find(reg, cname);
    if (!s->ops) {
        const char *best = cb_registry_suggest(reg, cname);
        if (b->plugins_not_loaded)
            return fail_at(b, comp, k,
                           "unknown stage component '%s': it may come from the %zu plugin%s of "
                           "plugin_paths, which %s not loaded (loading a plugin runs its code: pass "
                           "--allow-plugins if you trust %s)",
                           cname, b->plugins_not_loaded, b->plugins_not_loaded == 1 ? "" : "s",
                           b->plugins_not_loaded == 1 ? "is" : "are",
                           b->plugins_not_loaded == 1 ? "it" : "them");
        if (best)
            return fail_at(b, comp, k, "unknown stage component '%s' (did you mean '%s'?)", cname, best);
        return fail_at(b, comp, k, "unknown stage component '%s' (`colobench stages` lists them)", cname);
    }
    s->component = s->ops->name;

    s->name = NULL;
    if ((rc = get_string(b, m, "name", path, 1, &s->name, NULL)) < 0) return rc;
    if (!s->name) s->name = s->component;
    for (const unsigned char *c = (const unsigned char *)s->name; *c; c++) {
        if (*c >= 0x20 && *c != 0x7f) continue;
        char key[CB_ERROR_KEY_MAX];
        join(key, sizeof key, path, "name");
        return fail_at(b, cb_node_get(m, "name"), key, "a stage name may not contain control characters");
    }
    if (strlen(s->name) > CB_SPEC_STAGE_NAME_MAX) {
        char key[CB_ERROR_KEY_MAX];
        join(key, sizeof key, path, "name");
        return fail_at(b, cb_node_get(m, "name"), key, "a stage name is at most %d bytes (every CSV row holds it whole), got %zu",
                       CB_SPEC_STAGE_NAME_MAX, strlen(s->name));
    }

    s->outputs = NULL;
    s->n_outputs = 0;
    if ((rc = get_int_list(b, m, "outputs", path, 0, INT32_MAX, &s->outputs, &s->n_outputs)) < 0)
        return rc;
    if (!s->outputs && !(s->outputs = cb_arena_alloc(b->arena, sizeof *s->outputs))) return oom(b->err);

    int64_t workers = 1, depth = 0;
    if ((rc = get_int(b, m, "workers", path, 1, CB_SPEC_MAX_WORKERS, &workers)) < 0 ||
        (rc = get_int(b, m, "max_input_queue_depth", path, 0, INT32_MAX, &depth)) < 0)
        return rc;
    s->workers = (int)workers;
    s->max_input_queue_depth = depth;
    s->disable_logs = false;
    if ((rc = get_bool(b, m, "disable_logs", path, &s->disable_logs)) < 0) return rc;
    s->policy = CB_POLICY_SINGLE;
    const cb_node *pol = cb_node_get(m, "polling_policy");
    if (pol) {
        int v;
        join(k, sizeof k, path, "polling_policy");
        if ((rc = lookup_alias(b, pol, k, policy_aliases, COUNT(policy_aliases), "polling policy", &v)))
            return rc;
        s->policy = (cb_policy)v;
    }
    s->config_node = cb_node_get(m, "config");
    join(k, sizeof k, path, "config");
    if ((rc = cb_params_resolve_at(s->ops, s->config_node, k, b->dir, b->arena, &s->values,
                                   b->err))) {
        if (rc == CB_EINVAL) /* a broken table, not a config mistake: still say where */
            cb_error_at(b->err, comp->file, comp->line, comp->col);
        return rc;
    }
    if ((rc = resolve_server_url(b, s, path))) return rc;
    s->is_router = false;
    for (size_t i = 0; i < s->ops->n_params; i++)
        if (strcmp(s->ops->params[i].key, "max_hops") == 0) s->is_router = true;
    return 0;
}

static const char *const pipeline_keys[] = {
    "name", "inputs", "outputs", "dataset_stage_id", "serialize_queries", "loadgen", "stages",
    "collocation", "device", "cpus", "start_delay", "mps_active_thread_percentage",
    "mps_memory_limit", "replicas"};

static const char *const colloc_mode_names[] = {"threads", "processes", "mps", "mig"};

const char *cb_colloc_mode_name(cb_colloc_mode m) {
    return (unsigned)m < COUNT(colloc_mode_names) ? colloc_mode_names[m] : "?";
}

/* One of names[] (did-you-mean otherwise); *out is its index. */
static int get_choice(bctx *b, const cb_node *n, const char *key, const char *const *names,
                      size_t count, const char *what, int *out) {
    char g[160];
    if (n->kind == CB_NODE_SCALAR && !cb_node_is_null(n))
        for (size_t i = 0; i < count; i++)
            if (!strcmp(n->scalar, names[i])) return *out = (int)i, 0;
    char list[256];
    size_t off = 0;
    for (size_t i = 0; i < count && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", names[i]);
        if (w > 0) off += (size_t)w;
    }
    const char *best = n->kind == CB_NODE_SCALAR ? cb_suggest(n->scalar, names, count) : NULL;
    if (best)
        return fail_at(b, n, key, "unknown %s %s (did you mean '%s'?)", what, got(n, g, sizeof g), best);
    return fail_at(b, n, key, "unknown %s %s (expected one of: %s)", what, got(n, g, sizeof g), list);
}

/* "4G", "512M", "1024K" or a plain number of bytes. */
static int parse_bytes(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0)) return -1;
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024.0, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    else if (*end == 'T' || *end == 't') mul = 1024.0 * 1024 * 1024 * 1024, end++;
    if (mul > 1 && (*end == 'i' || *end == 'B' || *end == 'b')) end += (*end == 'i') ? 1 : 0;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    if (v * mul > 9.2e18) return -1;
    *out = (int64_t)(v * mul);
    return 0;
}

/* device: cpu | cuda:N | MIG-<uuid> | mig:I | mig:G:I */
static int parse_device(const char *s, int *gpu, bool *mig) {
    *gpu = -1;
    *mig = false;
    if (!strcmp(s, "cpu")) return 0;
    if (!strncmp(s, "MIG-", 4) && s[4]) return *mig = true, *gpu = 0, 0;
    const char *p;
    int vals[2], n = 0;
    if (!strncmp(s, "cuda:", 5)) p = s + 5;
    else if (!strncmp(s, "mig:", 4)) p = s + 4, *mig = true;
    else return -1;
    for (;;) {
        if (*p < '0' || *p > '9' || n == 2) return -1;
        long v = 0;
        while (*p >= '0' && *p <= '9' && v < 100000) v = v * 10 + (*p++ - '0');
        vals[n++] = (int)v;
        if (*p == '\0') break;
        if (*p != ':' || !*mig) return -1;
        p++;
    }
    *gpu = *mig && n == 1 ? 0 : vals[0];
    return 0;
}

/* `cpus` of map m (a pipeline's or a server's): CPU numbers this process may run on. */
static int read_cpus(bctx *b, const cb_node *m, const char *path, int **cpus, size_t *n_cpus) {
    int rc;
    if ((rc = get_int_list(b, m, "cpus", path, 0, CPU_SETSIZE - 1, cpus, n_cpus)) < 0) return rc;
    if (!*n_cpus) return 0;
    const cb_node *node = cb_node_get(m, "cpus");
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return 0;
    for (size_t i = 0; i < *n_cpus; i++) {
        if (CPU_ISSET((*cpus)[i], &allowed)) continue;
        char list[256], k[CB_ERROR_KEY_MAX];
        size_t off = 0;
        list[0] = '\0';
        for (int c = 0; c < CPU_SETSIZE && off < sizeof list; c++) {
            if (!CPU_ISSET(c, &allowed)) continue;
            int w = snprintf(list + off, sizeof list - off, "%s%d", off ? "," : "", c);
            if (w > 0) off += (size_t)w;
        }
        snprintf(k, sizeof k, "%s.cpus[%zu]", path, i);
        const cb_node *cn = node->kind == CB_NODE_SEQ ? node->items[i] : node;
        return fail_at(b, cn, k, "cpu %d is not available here (allowed cpus: %s)", (*cpus)[i], list);
    }
    return 0;
}

/* The per-pipeline collocation keys; the mode itself is resolved against the benchmark's in
 * resolve_collocation (it needs every pipeline). */
static int read_pipeline_colloc(bctx *b, const cb_node *m, const char *path, cb_pipeline_spec *p) {
    int rc;
    char k[CB_ERROR_KEY_MAX], g[160];
    p->device = "cpu";
    p->gpu_index = -1;
    const cb_node *dn = NULL;
    if ((rc = get_string(b, m, "device", path, 1, &p->device, &dn)) < 0) return rc;
    p->device_node = dn;
    if (dn && parse_device(p->device, &p->gpu_index, &p->device_is_mig) != 0) {
        join(k, sizeof k, path, "device");
        return fail_at(b, dn, k, "expected cpu, cuda:N, MIG-<uuid>, mig:I or mig:GPU:I, got %s",
                       got(dn, g, sizeof g));
    }
    if ((rc = read_cpus(b, m, path, &p->cpus, &p->n_cpus))) return rc;
    p->cpus_node = cb_node_get(m, "cpus");
    double delay_s = 0;
    if ((rc = get_float(b, m, "start_delay", path, 0.0, 0, 1e6, &delay_s)) < 0) return rc;
    p->start_delay_ns = (int64_t)llround(delay_s * 1e9);
    int64_t pct = 0;
    if ((rc = get_int(b, m, "mps_active_thread_percentage", path, 1, 100, &pct)) < 0) return rc;
    p->mps_active_thread_percentage = (int)pct;
    const cb_node *ml = cb_node_get(m, "mps_memory_limit");
    if (ml) {
        join(k, sizeof k, path, "mps_memory_limit");
        if (ml->kind != CB_NODE_SCALAR || parse_bytes(ml->scalar, &p->mps_memory_limit_bytes) != 0)
            return fail_at(b, ml, k, "expected a size in bytes such as 4G, 512M or 1073741824, got %s",
                           got(ml, g, sizeof g));
    }
    return 0;
}

static const char *const colloc_keys[] = {"mode", "baseline", "prepare"};
static const char *const pipe_colloc_keys[] = {"mode"};
static const char *const baseline_names[] = {"none", "isolated"};
static const char *const prepare_names[] = {"serial", "parallel"};

static int pipeline_modes(bctx *b, const cb_node *root, cb_spec *spec, cb_colloc_mode mode);

/* Benchmark-level collocation, then each pipeline's mode and the rules between them. */
static int resolve_collocation(bctx *b, const cb_node *root, cb_spec *spec) {
    int rc, v;
    cb_colloc_spec *c = &spec->collocation;
    c->mode = spec->n_pipelines > 1 ? CB_COLLOC_PROCESSES : CB_COLLOC_THREADS;
    c->isolated_baseline = false;
    c->serial_prepare = true;
    const cb_node *m = cb_node_get(root, "collocation");
    c->node = m;
    const cb_node *mode_node = NULL;
    if (m && !cb_node_is_null(m)) {
        if ((rc = expect_map(b, m, "collocation")) ||
            (rc = check_keys(b, m, "collocation", colloc_keys, COUNT(colloc_keys))))
            return rc;
        if ((mode_node = cb_node_get(m, "mode"))) {
            if ((rc = get_choice(b, mode_node, "collocation.mode", colloc_mode_names,
                                 COUNT(colloc_mode_names), "collocation mode", &v)))
                return rc;
            c->mode = (cb_colloc_mode)v;
        }
        const cb_node *n;
        if ((n = cb_node_get(m, "baseline"))) {
            if ((rc = get_choice(b, n, "collocation.baseline", baseline_names,
                                 COUNT(baseline_names), "baseline", &v)))
                return rc;
            c->isolated_baseline = v == 1;
        }
        if ((n = cb_node_get(m, "prepare"))) {
            if ((rc = get_choice(b, n, "collocation.prepare", prepare_names, COUNT(prepare_names),
                                 "prepare order", &v)))
                return rc;
            c->serial_prepare = v == 0;
        }
    }
    return pipeline_modes(b, root, spec, c->mode);
}

/* Each pipeline's mode under the benchmark mode `mode`, and the rules between them (also run
 * for each mode of a sweep, to refuse a point that could not load). */
static int pipeline_modes(bctx *b, const cb_node *root, cb_spec *spec, cb_colloc_mode mode) {
    int rc, v;
    char k[CB_ERROR_KEY_MAX];
    const cb_node *pl = cb_node_get(root, "pipelines");
    for (size_t i = 0; i < spec->n_pipelines; i++) {
        cb_pipeline_spec *p = &spec->pipelines[i];
        const cb_node *pn = pl->items[p->src_index];
        char path[64];
        snprintf(path, sizeof path, "pipelines[%zu]", p->src_index);
        p->mode = mode;
        const cb_node *pm = cb_node_get(pn, "collocation");
        const cb_node *pmode = NULL;
        if (pm && !cb_node_is_null(pm)) {
            join(k, sizeof k, path, "collocation");
            if ((rc = expect_map(b, pm, k)) ||
                (rc = check_keys(b, pm, k, pipe_colloc_keys, COUNT(pipe_colloc_keys))))
                return rc;
            if ((pmode = cb_node_get(pm, "mode"))) {
                join(k, sizeof k, path, "collocation.mode");
                if ((rc = get_choice(b, pmode, k, colloc_mode_names, COUNT(colloc_mode_names),
                                     "collocation mode", &v)))
                    return rc;
                if ((mode == CB_COLLOC_THREADS) != (v == CB_COLLOC_THREADS))
                    return fail_at(b, pmode, k,
                                   "a pipeline can override the mode only among processes, mps "
                                   "and mig (the benchmark's mode is %s)",
                                   cb_colloc_mode_name(mode));
                p->mode = (cb_colloc_mode)v;
            }
        }
        /* A MIG device pins a process: it implies mode mig, and mode mig needs one. */
        if (p->device_is_mig) {
            if (p->mode == CB_COLLOC_THREADS) {
                join(k, sizeof k, path, "device");
                return fail_at(b, p->device_node, k,
                               "a MIG instance needs its own process: set collocation.mode to mig "
                               "(or processes)");
            }
            p->mode = CB_COLLOC_MIG;
        } else if (p->mode == CB_COLLOC_MIG) {
            join(k, sizeof k, path, "device");
            return fail_at(b, p->device_node ? p->device_node : pn, k,
                           "collocation mode mig needs device: MIG-<uuid>, mig:I or mig:GPU:I");
        }
        if (p->mode != CB_COLLOC_MPS) {
            const char *mk = p->mps_active_thread_percentage ? "mps_active_thread_percentage"
                             : p->mps_memory_limit_bytes     ? "mps_memory_limit"
                                                             : NULL;
            if (mk) {
                join(k, sizeof k, path, mk);
                return fail_at(b, cb_node_get(pn, mk), k,
                               "applies only under collocation mode mps (this pipeline runs "
                               "under %s)", cb_colloc_mode_name(p->mode));
            }
        }
    }
    return 0;
}

/* Source names and bits come from one table, core/monitor_sources.def. */
static const char *const monitor_keys[] = {"enabled", "period_ms", "sources", "nvml_library"};

static int read_monitors(bctx *b, const cb_node *root, cb_spec *spec) {
    int rc;
    char g[160];
    cb_monitors_spec *ms = &spec->monitors;
    ms->enabled = true;
    ms->period_ns = 100000000LL;
    ms->sources = CB_MON_CPU | CB_MON_MEMORY | CB_MON_PROCESS;
    for (size_t i = 0; i < spec->n_pipelines; i++)
        if (spec->pipelines[i].gpu_index >= 0) ms->sources |= CB_MON_GPU;
    const cb_node *m = cb_node_get(root, "monitors");
    ms->node = m;
    if (!m || cb_node_is_null(m)) return 0;
    if (m->kind == CB_NODE_SCALAR) {
        bool on;
        if ((rc = get_bool(b, root, "monitors", "", &on)) < 0) return rc;
        ms->enabled = on;
        return 0;
    }
    if ((rc = expect_map(b, m, "monitors")) ||
        (rc = check_keys(b, m, "monitors", monitor_keys, COUNT(monitor_keys))))
        return rc;
    if ((rc = get_bool(b, m, "enabled", "monitors", &ms->enabled)) < 0) return rc;
    double period_ms = 100;
    if ((rc = get_float(b, m, "period_ms", "monitors", 1.0, 0, 3.6e6, &period_ms)) < 0) return rc;
    ms->period_ns = (int64_t)llround(period_ms * 1e6);
    if ((rc = get_string(b, m, "nvml_library", "monitors", 1, &ms->nvml_library, NULL)) < 0) return rc;
    /* A bare library name (no '/') is dlopen's to search for, as documented; a path follows
     * the one rule. */
    if (ms->nvml_library && strchr(ms->nvml_library, '/') &&
        !(ms->nvml_library = resolve_path(b, ms->nvml_library)))
        return oom(b->err);
    const cb_node *src = cb_node_get(m, "sources");
    if (src) {
        if (src->kind != CB_NODE_SEQ) {
            char names[128];
            cb_monitor_sources_format(CB_MON_ALL, ", ", names, sizeof names);
            return fail_at(b, src, "monitors.sources", "expected a list of sources (%s), got %s",
                           names, got(src, g, sizeof g));
        }
        ms->sources = 0;
        for (size_t i = 0; i < src->n; i++) {
            char k[CB_ERROR_KEY_MAX];
            int v;
            snprintf(k, sizeof k, "monitors.sources[%zu]", i);
            if ((rc = get_choice(b, src->items[i], k, cb_monitor_source_names, CB_MON_N_SOURCES,
                                 "monitor source", &v)))
                return rc;
            ms->sources |= cb_monitor_source_bits[v];
        }
    }
    return 0;
}

static const char *const trace_keys[] = {"enabled", "max_slices"};

static int read_trace(bctx *b, const cb_node *root, cb_spec *spec) {
    int rc;
    spec->trace.enabled = true;
    spec->trace.max_slices = 1000000;
    const cb_node *m = cb_node_get(root, "trace");
    if (!m || cb_node_is_null(m)) return 0;
    if (m->kind == CB_NODE_SCALAR) {
        if ((rc = get_bool(b, root, "trace", "", &spec->trace.enabled)) < 0) return rc;
        return 0;
    }
    if ((rc = expect_map(b, m, "trace")) || (rc = check_keys(b, m, "trace", trace_keys, COUNT(trace_keys))))
        return rc;
    if ((rc = get_bool(b, m, "enabled", "trace", &spec->trace.enabled)) < 0 ||
        (rc = get_int(b, m, "max_slices", "trace", 1, INT64_MAX, &spec->trace.max_slices)) < 0)
        return rc;
    return 0;
}

cb_spec cb_spec_single(const cb_spec *spec, size_t i) {
    cb_spec one = *spec;
    one.pipelines = &spec->pipelines[i];
    one.n_pipelines = 1;
    return one;
}

/* Names that become path components (the benchmark's: out/NAME; a pipeline's:
 * pipelines/NAME, baseline/NAME): 1 to CB_SPEC_NAME_MAX bytes of text, no '/', no
 * control character, not starting with '.' (no ".", "..", no hidden names) or '-' or a space,
 * not ending with a space. Spaces and UTF-8 are fine ("RAG serve plain"). NULL when the name is
 * fine, else why not. */
const char *cb_spec_path_name_problem(const char *name) {
    size_t n = strlen(name);
    if (n == 0) return "is empty";
    if (n > CB_SPEC_NAME_MAX) return "is longer than " CB_SPEC_NAME_MAX_STR " bytes";
    if (name[0] == '.') return "starts with '.'";
    if (name[0] == '-') return "starts with '-'";
    if (name[0] == ' ' || name[n - 1] == ' ') return "starts or ends with a space";
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        if (*c == '/') return "contains a '/'";
        if (*c < 0x20 || *c == 0x7f) return "contains a control character";
    }
    return NULL;
}

static int check_path_name(bctx *b, const cb_node *m, const char *key, const char *name) {
    const char *why = cb_spec_path_name_problem(name);
    if (!why) return 0;
    char shown[64];
    cb_error_escape(shown, sizeof shown, name);
    return fail_at(b, m, key,
                   "name \"%s\" %s: it names a directory of the results (any text of at most "
                   CB_SPEC_NAME_MAX_STR " bytes without '/' or control characters, not "
                   "starting with '.', '-' or a space)",
                   shown, why);
}

/* Each stage's own check (cb_stage_ops.check): what its create would refuse from the values and
 * the graph alone (the count of outputs, combinations), refused when the config is loaded. */
static int check_stages(bctx *b, const cb_pipeline_spec *p, const char *path) {
    for (size_t i = 0; i < p->n_stages; i++) {
        const cb_stage_spec *s = &p->stages[i];
        int (*check)(const cb_stage_args *, cb_error *) = cb_registry_ops_check(s->ops);
        if (!check) continue;
        cb_stage_args a;
        memset(&a, 0, sizeof a);
        a.abi_major = CB_STAGE_ABI_MAJOR;
        a.struct_size = sizeof a;
        a.values = s->values;
        a.pipeline = p->name;
        a.stage = s->name;
        a.stage_id = s->id;
        a.workers = s->workers;
        a.n_outputs = (int)s->n_outputs;
        a.seed = p->loadgen.seed;
        a.device = p->device;
        cb_error se;
        cb_error_clear(&se);
        int rc = check(&a, &se);
        if (rc == 0) continue;
        if (rc == CB_ENOMEM) return oom(b->err);
        char k[CB_ERROR_KEY_MAX];
        snprintf(k, sizeof k, "%s.stages[%zu].config", path, i);
        return fail_at(b, s->config_node ? s->config_node : s->node, k, "%s",
                       se.msg[0] ? se.msg : cb_strerror(rc));
    }
    return 0;
}

static int read_pipeline(bctx *b, const cb_node *m, const char *path, cb_registry *reg,
                         cb_pipeline_spec *p) {
    int rc;
    char k[CB_ERROR_KEY_MAX], g[160];
    if ((rc = expect_map(b, m, path)) ||
        (rc = check_keys(b, m, path, pipeline_keys, COUNT(pipeline_keys))))
        return rc;
    p->node = m;
    if ((rc = get_string(b, m, "name", path, 1, &p->name, NULL)) < 0) return rc;
    if (!p->name) return fail_at(b, m, path, "missing required key 'name'");
    join(k, sizeof k, path, "name");
    if ((rc = check_path_name(b, cb_node_get(m, "name"), k, p->name))) return rc;
    if ((rc = get_int_list(b, m, "inputs", path, 0, INT32_MAX, &p->inputs, &p->n_inputs)) < 0) return rc;
    if (rc == 0) return fail_at(b, m, path, "missing required key 'inputs'");
    int64_t reps = 1;
    if ((rc = get_int(b, m, "replicas", path, 1, CB_SPEC_MAX_PIPELINES, &reps)) < 0) return rc;
    p->replicas_set = rc == 1;
    p->n_replicas = (int)reps;
    p->replica = 1;
    p->base_name = p->name;
    p->dataset_stage_id = -1;
    int64_t ds = -1;
    if ((rc = get_int(b, m, "dataset_stage_id", path, 0, INT32_MAX, &ds)) < 0) return rc;
    p->dataset_stage_id = (int)ds;
    p->serialize_queries = false;
    if ((rc = get_bool(b, m, "serialize_queries", path, &p->serialize_queries)) < 0) return rc;
    if ((rc = read_loadgen(b, m, path, &p->loadgen))) return rc;
    if ((rc = read_pipeline_colloc(b, m, path, p))) return rc;

    const cb_node *st = cb_node_get(m, "stages");
    join(k, sizeof k, path, "stages");
    if (!st) return fail_at(b, m, path, "missing required key 'stages'");
    if (st->kind != CB_NODE_SEQ || st->n == 0)
        return fail_at(b, st, k, "expected a non-empty list of stages, got %s",
                       st->kind == CB_NODE_SEQ ? "an empty list" : got(st, g, sizeof g));
    if (st->n > CB_SPEC_MAX_STAGES)
        return fail_at(b, st, k, "more than %d stages", CB_SPEC_MAX_STAGES);
    p->n_stages = st->n;
    if (!(p->stages = cb_arena_alloc(b->arena, st->n * sizeof *p->stages))) return oom(b->err);
    for (size_t i = 0; i < st->n; i++) {
        char sp[CB_ERROR_KEY_MAX];
        snprintf(sp, sizeof sp, "%s[%zu]", k, i);
        if ((rc = read_stage(b, st->items[i], sp, reg, &p->stages[i]))) return rc;
    }
    /* outputs default to the sinks: stages without outputs. */
    if ((rc = get_int_list(b, m, "outputs", path, 0, INT32_MAX, &p->outputs, &p->n_outputs)) < 0)
        return rc;
    if (rc == 0) {
        if (!(p->outputs = cb_arena_alloc(b->arena, (p->n_stages + 1) * sizeof *p->outputs)))
            return oom(b->err);
        p->n_outputs = 0;
        for (size_t i = 0; i < p->n_stages; i++)
            if (p->stages[i].n_outputs == 0) p->outputs[p->n_outputs++] = p->stages[i].id;
    }
    if ((rc = cb_graph_resolve(p, path, b->arena, b->err))) return rc;
    return check_stages(b, p, path);
}

static const char *const top_keys[] = {"name", "plugin_paths", "servers", "pipelines",
                                       "collocation", "monitors", "trace", "sweep"};

/* ---- servers ---------------------------------------------------------------------------- */

static const char *const server_keys[] = {"name", "command", "env", "cwd", "host", "port", "ready",
                                          "ready_timeout", "stop_timeout", "device", "cpus", "mps"};

/* Bytes [a-z0-9_-], at least one: a server's name names its files (servers/NAME.stdout). */
static bool server_name_ok(const char *s) {
    if (!*s || strlen(s) > CB_SERVER_NAME_MAX) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-')) return false;
    return true;
}

/* A host name, an IPv4 address or an IPv6 address without brackets: [A-Za-z0-9.:-]. */
static bool server_host_ok(const char *s) {
    if (!*s || strlen(s) > CB_SERVER_HOST_MAX) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '-' || *s == ':'))
            return false;
    return true;
}

/* An environment variable's name: [A-Za-z_][A-Za-z0-9_]*. */
static bool env_name_ok(const char *s) {
    if (strlen(s) > CB_SERVER_MAX_STRING) return false;
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* A scalar string of at most CB_SERVER_MAX_STRING bytes (empty allowed unless nonempty). */
static int server_string(bctx *b, const cb_node *n, const char *key, bool nonempty, const char *what,
                         const char **out) {
    char g[160];
    if (n->kind != CB_NODE_SCALAR || cb_node_is_null(n) || (nonempty && !n->scalar[0]))
        return fail_at(b, n, key, "expected %s, got %s", what, got(n, g, sizeof g));
    if (strlen(n->scalar) > CB_SERVER_MAX_STRING)
        return fail_at(b, n, key, "longer than %d bytes", CB_SERVER_MAX_STRING);
    if (!(*out = cb_arena_strdup(b->arena, n->scalar))) return oom(b->err);
    return 0;
}

static int read_server_command(bctx *b, const cb_node *m, const char *path, cb_server_spec *sv) {
    char k[CB_ERROR_KEY_MAX], g[160];
    const cb_node *c = cb_node_get(m, "command");
    join(k, sizeof k, path, "command");
    if (!c) return fail_at(b, m, path, "missing required key 'command'");
    if (c->kind != CB_NODE_SEQ || c->n == 0)
        return fail_at(b, c, k,
                       "expected a non-empty list of strings (the program and its arguments, run "
                       "without a shell: [sh, -c, \"...\"] for one), got %s",
                       c->kind == CB_NODE_SEQ ? "an empty list" : got(c, g, sizeof g));
    if (c->n > CB_SERVER_MAX_ARGS) return fail_at(b, c, k, "more than %d arguments", CB_SERVER_MAX_ARGS);
    const char **argv = cb_arena_alloc(b->arena, (c->n + 1) * sizeof *argv);
    if (!argv) return oom(b->err);
    for (size_t i = 0; i < c->n; i++) {
        char ik[CB_ERROR_KEY_MAX];
        snprintf(ik, sizeof ik, "%s[%zu]", k, i);
        int rc = server_string(b, c->items[i], ik, i == 0, i == 0 ? "a program name or path" : "a string",
                               &argv[i]);
        if (rc) return rc;
    }
    argv[c->n] = NULL;
    sv->command = argv;
    sv->n_command = c->n;
    return 0;
}

static int read_server_env(bctx *b, const cb_node *m, const char *path, cb_server_spec *sv) {
    char k[CB_ERROR_KEY_MAX], g[160];
    const cb_node *e = cb_node_get(m, "env");
    if (!e || cb_node_is_null(e)) return 0;
    join(k, sizeof k, path, "env");
    if (e->kind != CB_NODE_MAP) return fail_at(b, e, k, "expected a map of NAME: value, got %s", got(e, g, sizeof g));
    if (e->n > CB_SERVER_MAX_ENV) return fail_at(b, e, k, "more than %d variables", CB_SERVER_MAX_ENV);
    const char **names = cb_arena_alloc(b->arena, (e->n + 1) * sizeof *names);
    const char **values = cb_arena_alloc(b->arena, (e->n + 1) * sizeof *values);
    if (!names || !values) return oom(b->err);
    for (size_t i = 0; i < e->n; i++) {
        const cb_node *key = e->keys[i];
        char ik[CB_ERROR_KEY_MAX];
        join(ik, sizeof ik, k, key->scalar);
        if (!env_name_ok(key->scalar))
            return fail_at(b, key, ik, "not an environment variable name (letters, digits and '_', not "
                                       "starting with a digit)");
        int rc = server_string(b, e->items[i], ik, false, "a string", &values[i]);
        if (rc) return rc;
        if (!(names[i] = cb_arena_strdup(b->arena, key->scalar))) return oom(b->err);
    }
    sv->env_names = names;
    sv->env_values = values;
    sv->n_env = e->n;
    return 0;
}

/* What colobench sets itself (device, mps) is not also set through env. */
static int check_server_env(bctx *b, const cb_node *m, const char *path, const cb_server_spec *sv) {
    for (size_t i = 0; i < sv->n_env; i++) {
        const char *n = sv->env_names[i];
        const char *why = NULL;
        if (sv->device && !strcmp(n, "CUDA_VISIBLE_DEVICES")) why = "device sets it";
        else if (sv->mps && !strncmp(n, "CUDA_MPS_", 9)) why = "mps: true sets the MPS variables";
        if (!why) continue;
        char k[CB_ERROR_KEY_MAX];
        snprintf(k, sizeof k, "%s.env.%s", path, n);
        return fail_at(b, cb_node_get(m, "env")->keys[i], k, "%s: set one or the other", why);
    }
    return 0;
}

static int read_server(bctx *b, const cb_node *m, const char *path, cb_server_spec *sv) {
    int rc;
    char k[CB_ERROR_KEY_MAX], g[160];
    if ((rc = expect_map(b, m, path)) || (rc = check_keys(b, m, path, server_keys, COUNT(server_keys))))
        return rc;
    sv->node = m;
    const cb_node *nn = cb_node_get(m, "name");
    join(k, sizeof k, path, "name");
    if (!nn) return fail_at(b, m, path, "missing required key 'name'");
    if (nn->kind != CB_NODE_SCALAR || cb_node_is_null(nn) || !server_name_ok(nn->scalar))
        return fail_at(b, nn, k, "expected a name of 1 to %d characters a-z, 0-9, '_' or '-' (it names "
                                 "servers/NAME.stdout), got %s",
                       CB_SERVER_NAME_MAX, got(nn, g, sizeof g));
    if (!(sv->name = cb_arena_strdup(b->arena, nn->scalar))) return oom(b->err);
    if ((rc = read_server_command(b, m, path, sv)) || (rc = read_server_env(b, m, path, sv))) return rc;
    const char *cwd = ".";
    const cb_node *cn = cb_node_get(m, "cwd");
    join(k, sizeof k, path, "cwd");
    if (cn && (rc = server_string(b, cn, k, true, "a directory", &cwd))) return rc;
    if (!(sv->cwd = resolve_path(b, cwd))) return oom(b->err);
    struct stat sb;
    if (stat(sv->cwd, &sb) != 0) return fail_at(b, cn ? cn : m, k, "%s: %s", sv->cwd, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return fail_at(b, cn ? cn : m, k, "%s: not a directory", sv->cwd);
    sv->host = "127.0.0.1";
    const cb_node *hn = cb_node_get(m, "host");
    join(k, sizeof k, path, "host");
    if (hn && (hn->kind != CB_NODE_SCALAR || cb_node_is_null(hn) || !server_host_ok(hn->scalar)))
        return fail_at(b, hn, k, "expected a host name or an IP address, got %s", got(hn, g, sizeof g));
    if (hn && !(sv->host = cb_arena_strdup(b->arena, hn->scalar))) return oom(b->err);
    int64_t port = 0;
    if ((rc = get_int(b, m, "port", path, 1, 65535, &port)) < 0) return rc;
    if (rc == 0) return fail_at(b, m, path, "missing required key 'port'");
    sv->port = (int)port;
    char url[CB_SERVER_URL_MAX];
    bool v6 = strchr(sv->host, ':') != NULL;
    snprintf(url, sizeof url, "http://%s%s%s:%d", v6 ? "[" : "", sv->host, v6 ? "]" : "", sv->port);
    if (!(sv->url = cb_arena_strdup(b->arena, url))) return oom(b->err);
    sv->ready = "/health";
    const cb_node *rn = cb_node_get(m, "ready");
    join(k, sizeof k, path, "ready");
    if (rn && (rc = server_string(b, rn, k, true, "an HTTP path such as /health", &sv->ready))) return rc;
    if (sv->ready[0] != '/')
        return fail_at(b, rn, k, "expected an HTTP path starting with '/', got %s", got(rn, g, sizeof g));
    for (const unsigned char *c = (const unsigned char *)sv->ready; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return fail_at(b, rn, k, "an HTTP path has no spaces or control characters");
    double ready_s = 120, stop_s = 10;
    if ((rc = get_float(b, m, "ready_timeout", path, 0.0, 1, 86400.0, &ready_s)) < 0 ||
        (rc = get_float(b, m, "stop_timeout", path, 0.0, 0, 3600.0, &stop_s)) < 0)
        return rc;
    sv->ready_timeout_ns = (int64_t)llround(ready_s * 1e9);
    if (sv->ready_timeout_ns <= 0) sv->ready_timeout_ns = 1;
    sv->stop_timeout_ns = (int64_t)llround(stop_s * 1e9);
    sv->gpu_index = -1;
    const cb_node *dn = NULL;
    if ((rc = get_string(b, m, "device", path, 1, &sv->device, &dn)) < 0) return rc;
    sv->device_node = dn;
    if (dn && (parse_device(sv->device, &sv->gpu_index, &sv->device_is_mig) != 0 ||
               (sv->device_is_mig && strncmp(sv->device, "MIG-", 4) != 0))) {
        join(k, sizeof k, path, "device");
        return fail_at(b, dn, k, "expected cpu, cuda:N or MIG-<uuid>, got %s", got(dn, g, sizeof g));
    }
    if ((rc = read_cpus(b, m, path, &sv->cpus, &sv->n_cpus))) return rc;
    if ((rc = get_bool(b, m, "mps", path, &sv->mps)) < 0) return rc;
    return check_server_env(b, m, path, sv);
}

/* `servers:`: a list of maps, names unique, no two on one host and port. */
static int read_servers(bctx *b, const cb_node *root, cb_spec *spec) {
    char g[160];
    const cb_node *l = cb_node_get(root, "servers");
    spec->servers_node = l;
    if (!l || cb_node_is_null(l)) return 0;
    if (l->kind != CB_NODE_SEQ) return fail_at(b, l, "servers", "expected a list of servers, got %s", got(l, g, sizeof g));
    if (l->n > CB_SPEC_MAX_SERVERS) return fail_at(b, l, "servers", "more than %d servers", CB_SPEC_MAX_SERVERS);
    if (l->n && !(spec->servers = cb_arena_alloc(b->arena, l->n * sizeof *spec->servers))) return oom(b->err);
    for (size_t i = 0; i < l->n; i++) {
        cb_server_spec *sv = &spec->servers[i];
        memset(sv, 0, sizeof *sv);
        char path[64], k[CB_ERROR_KEY_MAX];
        snprintf(path, sizeof path, "servers[%zu]", i);
        int rc = read_server(b, l->items[i], path, sv);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++) {
            const cb_server_spec *o = &spec->servers[j];
            if (!strcmp(o->name, sv->name)) {
                join(k, sizeof k, path, "name");
                return fail_at(b, cb_node_get(sv->node, "name"), k, "duplicate server name '%s' (also servers[%zu])",
                               sv->name, j);
            }
            if (o->port == sv->port && !strcmp(o->host, sv->host)) {
                join(k, sizeof k, path, "port");
                return fail_at(b, cb_node_get(sv->node, "port"), k, "servers[%zu] ('%s') listens on %s already", j,
                               o->name, sv->url);
            }
        }
        spec->n_servers = i + 1;
    }
    b->servers = spec->servers;
    b->n_servers = spec->n_servers;
    return 0;
}

/* A stage whose parameters include both `server` and `url` (strings) may name a declared server
 * instead of a URL (`server: NAME`): its url becomes the server's http://HOST:PORT here, before
 * the stage's check() and create. */
static int resolve_server_url(bctx *b, cb_stage_spec *s, const char *path) {
    size_t si = SIZE_MAX, ui = SIZE_MAX;
    for (size_t i = 0; i < s->ops->n_params; i++) {
        const cb_param_def *d = &s->ops->params[i];
        if (d->type != CB_PARAM_STRING) continue;
        if (!strcmp(d->key, "server")) si = i;
        else if (!strcmp(d->key, "url")) ui = i;
    }
    if (si == SIZE_MAX || ui == SIZE_MAX || !s->values[si].has_value || !s->values[si].s) return 0;
    const char *name = s->values[si].s;
    const cb_node *sn = s->config_node ? cb_node_get(s->config_node, "server") : NULL;
    char k[CB_ERROR_KEY_MAX];
    snprintf(k, sizeof k, "%s.config.server", path);
    if (s->values[ui].is_set)
        return fail_at(b, sn ? sn : s->node, k, "set server (a server of `servers:`) or url, not both");
    const char *names[CB_SPEC_MAX_SERVERS];
    for (size_t i = 0; i < b->n_servers; i++) {
        names[i] = b->servers[i].name;
        if (strcmp(names[i], name) != 0) continue;
        s->values[ui].s = b->servers[i].url;
        s->values[ui].has_value = 1;
        s->url_from_server = true;
        return 0;
    }
    if (!b->n_servers)
        return fail_at(b, sn ? sn : s->node, k, "unknown server '%s': the benchmark declares no `servers:`", name);
    const char *best = cb_suggest(name, names, b->n_servers);
    if (best) return fail_at(b, sn ? sn : s->node, k, "unknown server '%s' (did you mean '%s'?)", name, best);
    char list[CB_SPEC_MAX_SERVERS * (CB_SERVER_NAME_MAX + 2)];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < b->n_servers && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", names[i]);
        if (w > 0) off += (size_t)w;
    }
    return fail_at(b, sn ? sn : s->node, k, "unknown server '%s' (declared servers: %s)", name, list);
}

/* Replica k (1-based) of a pipeline whose loadgen seed is `seed`: seed + k - 1, modulo 2^63
 * (seeds are integers >= 0 that fit an int64). Replica 1 keeps the pipeline's own seed. */
static uint64_t replica_seed(uint64_t seed, int k) {
    return (seed + (uint64_t)(k - 1)) & (uint64_t)INT64_MAX;
}

/* Expands src[0..n_src) (as read, one per document pipeline) into spec->pipelines: replicas
 * become ordinary pipelines NAME.1 .. NAME.N; then names must be unique. */
static int expand_replicas(bctx *b, const cb_node *pl, cb_pipeline_spec *src, size_t n_src,
                           cb_spec *spec) {
    size_t total = 0;
    for (size_t i = 0; i < n_src; i++) {
        total += (size_t)src[i].n_replicas;
        if (total > CB_SPEC_MAX_PIPELINES) {
            char k[64];
            snprintf(k, sizeof k, "pipelines[%zu].replicas", i);
            const cb_node *rn = cb_node_get(pl->items[i], "replicas");
            if (!rn) snprintf(k, sizeof k, "pipelines[%zu]", i);
            return fail_at(b, rn ? rn : pl->items[i], k,
                           "%zu pipelines with these replicas (at most %d)", total,
                           CB_SPEC_MAX_PIPELINES);
        }
    }
    if (!(spec->pipelines = cb_arena_alloc(b->arena, total * sizeof *spec->pipelines)))
        return oom(b->err);
    size_t n = 0;
    for (size_t i = 0; i < n_src; i++) {
        for (int r = 1; r <= src[i].n_replicas; r++) {
            cb_pipeline_spec *p = &spec->pipelines[n++];
            *p = src[i]; /* shares the read-only stage tables */
            p->replica = r;
            if (p->n_replicas > 1) {
                char name[512];
                snprintf(name, sizeof name, "%s.%d", src[i].base_name, r);
                if (!(p->name = cb_arena_strdup(b->arena, name))) return oom(b->err);
                p->loadgen.seed = replica_seed(src[i].loadgen.seed, r);
            }
        }
    }
    spec->n_pipelines = n;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(spec->pipelines[j].name, spec->pipelines[i].name) != 0) continue;
            size_t si = spec->pipelines[i].src_index, sj = spec->pipelines[j].src_index;
            char k[80];
            snprintf(k, sizeof k, "pipelines[%zu].name", si);
            if (si == sj) continue; /* cannot happen: replicas differ by suffix */
            return fail_at(b, cb_node_get(pl->items[si], "name"), k,
                           "duplicate pipeline name '%s' (also pipelines[%zu]%s)",
                           spec->pipelines[i].name, sj,
                           spec->pipelines[j].n_replicas > 1 ? ", a replica" : "");
        }
    }
    return 0;
}

static const char *const sweep_keys[] = {"mode", "replicas"};

/* `sweep: {mode: [...], replicas: [...]}`: each value checked like the key it overrides, and
 * each point must load (a mode every pipeline accepts, at most 64 pipelines). */
static int read_sweep(bctx *b, const cb_node *root, cb_spec *spec) {
    int rc;
    char k[CB_ERROR_KEY_MAX], g[160];
    cb_sweep_spec *sw = &spec->sweep;
    memset(sw, 0, sizeof *sw);
    const cb_node *m = cb_node_get(root, "sweep");
    sw->node = m;
    if (!m || cb_node_is_null(m)) return 0;
    if ((rc = expect_map(b, m, "sweep")) || (rc = check_keys(b, m, "sweep", sweep_keys, COUNT(sweep_keys))))
        return rc;
    if (m->n == 0) return fail_at(b, m, "sweep", "expected mode and/or replicas, got an empty map");
    for (int which = 0; which < 2; which++) {
        const char *key = sweep_keys[which];
        const cb_node *l = cb_node_get(m, key);
        if (!l) continue;
        join(k, sizeof k, "sweep", key);
        const cb_node *const *items = (const cb_node *const *)&l;
        size_t count = 1;
        if (l->kind == CB_NODE_SEQ) {
            items = (const cb_node *const *)l->items;
            count = l->n;
        } else if (l->kind != CB_NODE_SCALAR || cb_node_is_null(l)) {
            return fail_at(b, l, k, "expected a list of %s, got %s",
                           which ? "replica counts" : "collocation modes", got(l, g, sizeof g));
        }
        if (count == 0) return fail_at(b, l, k, "expected a non-empty list, got an empty list");
        if (count > CB_SWEEP_MAX_VALUES)
            return fail_at(b, l, k, "more than %d values", CB_SWEEP_MAX_VALUES);
        for (size_t i = 0; i < count; i++) {
            const cb_node *it = items[i];
            char ik[CB_ERROR_KEY_MAX];
            snprintf(ik, sizeof ik, "%s[%zu]", k, i);
            if (which == 0) {
                int v;
                if ((rc = get_choice(b, it, ik, colloc_mode_names, COUNT(colloc_mode_names),
                                     "collocation mode", &v)))
                    return rc;
                for (size_t j = 0; j < i; j++)
                    if (sw->modes[j] == (cb_colloc_mode)v)
                        return fail_at(b, it, ik, "mode %s is already in the list", it->scalar);
                /* The point must load: the same rules as collocation.mode. */
                cb_error le;
                cb_error_clear(&le);
                bctx tb = *b;
                tb.err = &le;
                if (pipeline_modes(&tb, root, spec, (cb_colloc_mode)v) != 0)
                    return fail_at(b, it, ik, "mode %s does not fit this benchmark: %s: %s",
                                   it->scalar, le.key, le.msg);
                sw->modes[sw->n_modes++] = (cb_colloc_mode)v;
            } else {
                int64_t v;
                if (!cb_node_scalar_int(it, &v) || v < 1 || v > CB_SPEC_MAX_PIPELINES)
                    return fail_at(b, it, ik, "expected integer in [1, %d], got %s",
                                   CB_SPEC_MAX_PIPELINES, got(it, g, sizeof g));
                for (size_t j = 0; j < i; j++)
                    if (sw->replicas[j] == (int)v)
                        return fail_at(b, it, ik, "%lld replicas are already in the list", (long long)v);
                /* Pipelines with their own `replicas` keep it; the others get v each. */
                size_t total = 0, last_src = (size_t)-1;
                for (size_t p = 0; p < spec->n_pipelines; p++) {
                    const cb_pipeline_spec *ps = &spec->pipelines[p];
                    if (ps->src_index == last_src) continue;
                    last_src = ps->src_index;
                    total += ps->replicas_set ? (size_t)ps->n_replicas : (size_t)v;
                }
                if (total > CB_SPEC_MAX_PIPELINES)
                    return fail_at(b, it, ik, "%zu pipelines with %lld replicas (at most %d)", total,
                                   (long long)v, CB_SPEC_MAX_PIPELINES);
                sw->replicas[sw->n_replicas++] = (int)v;
            }
        }
    }
    /* pipeline_modes left the last tried mode behind: back to the benchmark's. */
    return pipeline_modes(b, root, spec, spec->collocation.mode);
}

static int build(bctx *b, const cb_doc *doc, cb_registry *reg, cb_spec *spec) {
    int rc;
    char g[160];
    const cb_node *root = doc->root;
    if (!root) {
        cb_error_set(b->err, CB_ECONFIG, "empty document: expected a map with 'pipelines'");
        cb_error_at(b->err, doc->file, 1, 1);
        return CB_ECONFIG;
    }
    if ((rc = expect_map(b, root, "")) || (rc = check_keys(b, root, "", top_keys, COUNT(top_keys))))
        return rc;
    spec->name = NULL;
    if ((rc = get_string(b, root, "name", "", 1, &spec->name, NULL)) < 0) return rc;
    if (!spec->name) spec->name = "benchmark";
    else if ((rc = check_path_name(b, cb_node_get(root, "name"), "name", spec->name))) return rc;

    const cb_node *pp = cb_node_get(root, "plugin_paths");
    if (pp && !cb_node_is_null(pp)) {
        const cb_node *const *items = (const cb_node *const *)&pp;
        size_t count = 1;
        if (pp->kind == CB_NODE_SEQ) {
            items = (const cb_node *const *)pp->items;
            count = pp->n;
        } else if (pp->kind != CB_NODE_SCALAR) {
            return fail_at(b, pp, "plugin_paths", "expected a list of paths, got %s", got(pp, g, sizeof g));
        }
        const char **paths = cb_arena_alloc(b->arena, (count + 1) * sizeof *paths);
        if (!paths) return oom(b->err);
        for (size_t i = 0; i < count; i++) {
            char k[CB_ERROR_KEY_MAX];
            snprintf(k, sizeof k, "plugin_paths[%zu]", i);
            if (items[i]->kind != CB_NODE_SCALAR || cb_node_is_null(items[i]) || !items[i]->scalar[0])
                return fail_at(b, items[i], k, "expected a path, got %s", got(items[i], g, sizeof g));
            if (!(paths[i] = resolve_path(b, items[i]->scalar))) return oom(b->err);
            /* A file only: a directory would load every library in it (a system directory, its
             * first .so's constructors). */
            struct stat sb;
            if (stat(paths[i], &sb) != 0)
                return fail_at(b, items[i], k, "plugin %s: %s", paths[i], strerror(errno));
            if (!S_ISREG(sb.st_mode))
                return fail_at(b, items[i], k,
                               "plugin %s: not a file: plugin_paths name .so files (a directory "
                               "would load every library in it)",
                               paths[i]);
            if (!cb_registry_plugins_allowed(reg)) {
                /* Listed, not loaded: loading runs the plugin's code (--allow-plugins). */
                spec->n_plugins_not_loaded++;
                b->plugins_not_loaded++;
                continue;
            }
            cb_error perr;
            cb_error_clear(&perr);
            rc = cb_registry_load_plugin(reg, paths[i], &perr);
            if (rc) {
                fail_at(b, items[i], k, "%s", perr.msg);
                if (b->err) b->err->code = rc;
                return rc;
            }
        }
        spec->plugin_paths = paths;
        spec->n_plugin_paths = count;
    }

    if ((rc = read_servers(b, root, spec))) return rc;
    const cb_node *pl = cb_node_get(root, "pipelines");
    if (!pl) return fail_at(b, root, "", "missing required key 'pipelines'");
    if (pl->kind != CB_NODE_SEQ || pl->n == 0)
        return fail_at(b, pl, "pipelines", "expected a non-empty list of pipelines, got %s",
                       pl->kind == CB_NODE_SEQ ? "an empty list" : got(pl, g, sizeof g));
    if (pl->n > CB_SPEC_MAX_PIPELINES)
        return fail_at(b, pl, "pipelines", "more than %d pipelines", CB_SPEC_MAX_PIPELINES);
    cb_pipeline_spec *src = cb_arena_alloc(b->arena, pl->n * sizeof *src);
    if (!src) return oom(b->err);
    for (size_t i = 0; i < pl->n; i++) {
        char path[64];
        snprintf(path, sizeof path, "pipelines[%zu]", i);
        if ((rc = read_pipeline(b, pl->items[i], path, reg, &src[i]))) return rc;
        src[i].src_index = i;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(src[j].name, src[i].name) == 0) {
                char k[80];
                snprintf(k, sizeof k, "%s.name", path);
                return fail_at(b, cb_node_get(pl->items[i], "name"), k,
                               "duplicate pipeline name '%s' (also pipelines[%zu])",
                               src[i].name, j);
            }
        }
    }
    if ((rc = expand_replicas(b, pl, src, pl->n, spec))) return rc;
    if ((rc = resolve_collocation(b, root, spec)) || (rc = read_monitors(b, root, spec)) ||
        (rc = read_trace(b, root, spec)) || (rc = read_sweep(b, root, spec)))
        return rc;
    return 0;
}

int cb_spec_build(const cb_doc *doc, cb_registry *reg, cb_spec **out, cb_error *err) {
    if (!doc || !reg || !out) return cb_error_set(err, CB_EINVAL, "cb_spec_build: bad arguments");
    *out = NULL;
    cb_arena *arena = cb_arena_create();
    if (!arena) return oom(err);
    cb_spec *spec = cb_arena_alloc(arena, sizeof *spec);
    if (!spec) {
        cb_arena_destroy(arena);
        return oom(err);
    }
    spec->arena = arena;
    spec->doc = doc;
    spec->file = cb_arena_strdup(arena, doc->file ? doc->file : "<string>");
    char dirbuf[PATH_MAX];
    cb_path_config_dir(doc->file, dirbuf, sizeof dirbuf);
    char *dir = cb_arena_strdup(arena, dirbuf);
    if (!spec->file || !dir) {
        cb_arena_destroy(arena);
        return oom(err);
    }
    bctx b = {arena, err, dir, 0, NULL, 0};
    /* The reference framework's configs are read through a translated tree (core/compat.c). */
    cb_doc read = *doc;
    int rc = cb_compat_translate(doc, reg, arena, &spec->compat, err);
    read.root = spec->compat.root;
    if (!rc) rc = build(&b, &read, reg, spec);
    if (rc) {
        cb_arena_destroy(arena);
        return rc;
    }
    *out = spec;
    return 0;
}

void cb_spec_destroy(cb_spec *spec) {
    if (spec) cb_arena_destroy(spec->arena);
}

int cb_spec_load(const char *path, const char *const *sets, size_t n_sets, cb_registry *reg,
                 cb_doc **doc_out, cb_spec **spec_out, cb_error *err) {
    if (!doc_out || !spec_out) return cb_error_set(err, CB_EINVAL, "cb_spec_load: bad arguments");
    *doc_out = NULL;
    *spec_out = NULL;
    cb_doc *doc = NULL;
    int rc = cb_doc_load_file(path, &doc, err);
    if (rc) return rc;
    for (size_t i = 0; i < n_sets; i++) {
        if ((rc = cb_doc_set(doc, sets[i], err))) {
            cb_doc_destroy(doc);
            return rc;
        }
    }
    cb_spec *spec = NULL;
    if ((rc = cb_spec_build(doc, reg, &spec, err))) {
        cb_doc_destroy(doc);
        return rc;
    }
    *doc_out = doc;
    *spec_out = spec;
    return 0;
}

/* ---- writer ---------------------------------------------------------------------------- */

static void yaml_str(const char *s, FILE *out) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", out);
        else if (*p < 0x20 || *p == 0x7f) fprintf(out, "\\x%02x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

static void yaml_float(double v, FILE *out) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    fputs(buf, out);
    if (!strpbrk(buf, ".eEn")) fputs(".0", out);
}

static void int_list(const int *v, size_t n, FILE *out) {
    fputc('[', out);
    for (size_t i = 0; i < n; i++) fprintf(out, "%s%d", i ? ", " : "", v[i]);
    fputc(']', out);
}

static void write_value(const cb_param_def *d, const cb_param_value *v, FILE *out) {
    switch (d->type) {
    case CB_PARAM_INT: fprintf(out, "%lld", (long long)v->i); break;
    case CB_PARAM_FLOAT: yaml_float(v->f, out); break;
    case CB_PARAM_BOOL: fputs(v->i ? "true" : "false", out); break;
    case CB_PARAM_STRING:
    case CB_PARAM_PATH: yaml_str(v->s ? v->s : "", out); break;
    case CB_PARAM_ENUM: yaml_str(v->s ? v->s : "", out); break;
    case CB_PARAM_INT_LIST:
    case CB_PARAM_FLOAT_LIST:
        fputc('[', out);
        for (size_t i = 0; i < v->n; i++) {
            if (i) fputs(", ", out);
            if (d->type == CB_PARAM_INT_LIST) fprintf(out, "%lld", (long long)v->ints[i]);
            else yaml_float(v->floats[i], out);
        }
        fputc(']', out);
        break;
    case CB_PARAM_INT_MAP:
        fputc('{', out);
        for (size_t i = 0; i < v->n; i++) {
            if (i) fputs(", ", out);
            yaml_str(v->keys[i], out);
            fprintf(out, ": %lld", (long long)v->ints[i]);
        }
        fputc('}', out);
        break;
    }
}

/* A stage's url set from its `server` is not written: the server's name is, and it resolves
 * again when the file is loaded (both together would be refused). */
static bool derived_url(const cb_stage_spec *s, size_t j) {
    return s->url_from_server && !strcmp(s->ops->params[j].key, "url");
}

static void write_servers(const cb_spec *spec, FILE *out) {
    if (!spec->n_servers) return;
    fputs("servers:\n", out);
    for (size_t i = 0; i < spec->n_servers; i++) {
        const cb_server_spec *sv = &spec->servers[i];
        fputs("  - name: ", out);
        yaml_str(sv->name, out);
        fputs("\n    command: [", out);
        for (size_t a = 0; a < sv->n_command; a++) {
            if (a) fputs(", ", out);
            yaml_str(sv->command[a], out);
        }
        fputs("]\n", out);
        if (sv->n_env) {
            fputs("    env:\n", out);
            for (size_t e = 0; e < sv->n_env; e++) {
                fputs("      ", out);
                yaml_str(sv->env_names[e], out);
                fputs(": ", out);
                yaml_str(sv->env_values[e], out);
                fputc('\n', out);
            }
        }
        fputs("    cwd: ", out);
        yaml_str(sv->cwd, out);
        fputs("\n    host: ", out);
        yaml_str(sv->host, out);
        fprintf(out, "\n    port: %d\n    ready: ", sv->port);
        yaml_str(sv->ready, out);
        fputs("\n    ready_timeout: ", out);
        yaml_float((double)sv->ready_timeout_ns / 1e9, out);
        fputs("\n    stop_timeout: ", out);
        yaml_float((double)sv->stop_timeout_ns / 1e9, out);
        fputc('\n', out);
        if (sv->device) {
            fputs("    device: ", out);
            yaml_str(sv->device, out);
            fputc('\n', out);
        }
        fputs("    cpus: ", out);
        int_list(sv->cpus, sv->n_cpus, out);
        fprintf(out, "\n    mps: %s\n", sv->mps ? "true" : "false");
    }
}

int cb_spec_write_yaml(const cb_spec *spec, FILE *out) {
    if (!spec || !out) return CB_EINVAL;
    fputs("# resolved by colobench: canonical names, every default filled in\nname: ", out);
    yaml_str(spec->name, out);
    fputc('\n', out);
    if (spec->n_plugin_paths) {
        fputs("plugin_paths:\n", out);
        for (size_t i = 0; i < spec->n_plugin_paths; i++) {
            fputs("  - ", out);
            yaml_str(spec->plugin_paths[i], out);
            fputc('\n', out);
        }
    }
    write_servers(spec, out);
    const cb_colloc_spec *c = &spec->collocation;
    fprintf(out, "collocation:\n  mode: %s\n  baseline: %s\n  prepare: %s\n",
            cb_colloc_mode_name(c->mode), c->isolated_baseline ? "isolated" : "none",
            c->serial_prepare ? "serial" : "parallel");
    const cb_monitors_spec *ms = &spec->monitors;
    fprintf(out, "monitors:\n  enabled: %s\n  period_ms: ", ms->enabled ? "true" : "false");
    yaml_float((double)ms->period_ns / 1e6, out);
    char names[128];
    cb_monitor_sources_format(ms->sources, ", ", names, sizeof names);
    fprintf(out, "\n  sources: [%s]\n", names);
    if (ms->nvml_library) {
        fputs("  nvml_library: ", out);
        yaml_str(ms->nvml_library, out);
        fputc('\n', out);
    }
    fprintf(out, "trace:\n  enabled: %s\n  max_slices: %lld\n", spec->trace.enabled ? "true" : "false",
            (long long)spec->trace.max_slices);
    fputs("pipelines:\n", out);
    for (size_t pi = 0; pi < spec->n_pipelines; pi++) {
        const cb_pipeline_spec *p = &spec->pipelines[pi];
        const cb_loadgen_spec *lg = &p->loadgen;
        fputs("  - name: ", out);
        yaml_str(p->name, out);
        fputs("\n    inputs: ", out);
        int_list(p->inputs, p->n_inputs, out);
        fputs("\n    outputs: ", out);
        int_list(p->outputs, p->n_outputs, out);
        fputc('\n', out);
        if (p->dataset_stage_id >= 0) fprintf(out, "    dataset_stage_id: %d\n", p->dataset_stage_id);
        fprintf(out, "    serialize_queries: %s\n", p->serialize_queries ? "true" : "false");
        if (p->mode != c->mode) fprintf(out, "    collocation: {mode: %s}\n", cb_colloc_mode_name(p->mode));
        fputs("    device: ", out);
        yaml_str(p->device, out);
        fputs("\n    cpus: ", out);
        int_list(p->cpus, p->n_cpus, out);
        fputs("\n    start_delay: ", out);
        yaml_float((double)p->start_delay_ns / 1e9, out);
        fputc('\n', out);
        if (p->mps_active_thread_percentage)
            fprintf(out, "    mps_active_thread_percentage: %d\n", p->mps_active_thread_percentage);
        if (p->mps_memory_limit_bytes)
            fprintf(out, "    mps_memory_limit: %lld\n", (long long)p->mps_memory_limit_bytes);
        fprintf(out, "    loadgen:\n      component: %s\n", cb_loadgen_kind_name(lg->kind));
        fprintf(out, "      queue_depth: %lld\n      max_queries: %lld\n      timeout: ",
                (long long)lg->queue_depth, (long long)lg->max_queries);
        yaml_float((double)lg->timeout_ns / 1e9, out);
        fprintf(out, "\n      warmup_queries: %lld\n      config:\n", (long long)lg->warmup_queries);
        fprintf(out, "        concurrency: %lld\n", (long long)lg->concurrency);
        if (lg->rate_qps > 0) {
            fputs("        rate: ", out);
            yaml_float(lg->rate_qps, out);
            fputc('\n', out);
        }
        fprintf(out, "        seed: %llu\n        burstiness: ", (unsigned long long)lg->seed);
        yaml_float(lg->burstiness, out);
        fputc('\n', out);
        if (lg->file) {
            fputs("        file: ", out);
            yaml_str(lg->file, out);
            fputc('\n', out);
        }
        fprintf(out, "        max_in_flight: %lld\n        split_barrier: %s\n",
                (long long)lg->max_in_flight, lg->split_barrier ? "true" : "false");
        fputs("    stages:\n", out);
        for (size_t i = 0; i < p->n_stages; i++) {
            const cb_stage_spec *s = &p->stages[i];
            fprintf(out, "      - id: %d\n        name: ", s->id);
            yaml_str(s->name, out);
            fprintf(out, "\n        component: %s\n        outputs: ", s->component);
            int_list(s->outputs, s->n_outputs, out);
            fprintf(out, "\n        workers: %d\n        polling_policy: %s\n"
                         "        max_input_queue_depth: %lld\n        disable_logs: %s\n",
                    s->workers, cb_policy_name(s->policy), (long long)s->max_input_queue_depth,
                    s->disable_logs ? "true" : "false");
            size_t shown = 0;
            for (size_t j = 0; j < s->ops->n_params; j++) shown += s->values[j].has_value && !derived_url(s, j);
            if (shown == 0) {
                fputs("        config: {}\n", out);
                continue;
            }
            fputs("        config:\n", out);
            for (size_t j = 0; j < s->ops->n_params; j++) {
                if (!s->values[j].has_value || derived_url(s, j)) continue;
                fprintf(out, "          %s: ", s->ops->params[j].key);
                write_value(&s->ops->params[j], &s->values[j], out);
                fputc('\n', out);
            }
        }
    }
    return ferror(out) ? CB_EIO : 0;
}
