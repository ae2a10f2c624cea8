/* core/params.c - a stage's `config:` map resolved against its cb_param_def table.
 *
 * Design: one table per stage drives everything (Redis static_configs[]): the table is checked
 * first (keys [a-z0-9_]+ and unique, enums have choices, every default parses and fits its own
 * bounds: a broken table is CB_EINVAL naming the stage and key, so the registry can refuse it),
 * then every config key is matched against it (unknown keys get a did-you-mean), then each
 * parameter takes its configured value or its default. Scalars are typed strictly: an int
 * accepts only a plain decimal integer ("1.5", "64k", "true" and quoted "5" are rejected), a
 * float any plain finite number, a bool only true/false. Defaults are parsed as YAML with the
 * same converters, so a default is exactly as strict as a configured value. A path parameter
 * (CB_PARAM_PATH) resolves against the config's directory (core/path.h's one rule) and is
 * checked against what it must name (its choices: file, dir, file|dir, out), so `validate`
 * refuses a missing data set or a weights path that is a directory as `run` would.
 * Thread-safety: reentrant; the ops table and config are only read. Ownership: values, their
 * strings and arrays are allocated in the caller's arena; nothing else is kept.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "core/path.h"
#include "core/spec.h"
#include "core/suggest.h"

#define CB_PARAMS_MAX 256
#define CB__PARAMS_STR(x) #x
#define CB__PARAMS_XSTR(x) CB__PARAMS_STR(x)

static const char *type_name(cb_param_type t) {
    switch (t) {
    case CB_PARAM_INT: return "integer";
    case CB_PARAM_FLOAT: return "number";
    case CB_PARAM_BOOL: return "boolean";
    case CB_PARAM_STRING: return "string";
    case CB_PARAM_ENUM: return "one of";
    case CB_PARAM_INT_LIST: return "list of integers";
    case CB_PARAM_FLOAT_LIST: return "list of numbers";
    case CB_PARAM_INT_MAP: return "map of integers";
    case CB_PARAM_PATH: return "path";
    }
    return "value";
}

static int bounded(const cb_param_def *d) { return !(d->min > d->max); }

/* "integer in [0, 3600000000]" / "number" / "one of a|b". */
static void expectation(const cb_param_def *d, int element, char *buf, size_t size) {
    int is_int = d->type == CB_PARAM_INT || d->type == CB_PARAM_INT_LIST ||
                 d->type == CB_PARAM_INT_MAP;
    int is_num = is_int || d->type == CB_PARAM_FLOAT || d->type == CB_PARAM_FLOAT_LIST;
    const char *what = element ? (is_int ? "integer" : "number") : type_name(d->type);
    if (d->type == CB_PARAM_ENUM)
        snprintf(buf, size, "one of %s", d->choices ? d->choices : "");
    else if (is_num && bounded(d) && is_int)
        snprintf(buf, size, "%s in [%.0f, %.0f]", what, d->min, d->max);
    else if (is_num && bounded(d))
        snprintf(buf, size, "%s in [%.15g, %.15g]", what, d->min, d->max);
    else
        snprintf(buf, size, "%s", what);
}

typedef struct ctx {
    const cb_stage_ops *ops;
    const char *keypath;
    const char *dir; /* the config's directory: relative paths resolve against it ("" = cwd) */
    cb_arena *arena;
    cb_error *err;
    int is_default; /* converting a default_value string: errors are table errors */
} ctx;

static int value_error(ctx *c, const cb_param_def *d, const cb_node *at, const char *key,
                       int element, const char *extra) {
    char exp[160], got[200];
    expectation(d, element, exp, sizeof exp);
    if (!at)
        snprintf(got, sizeof got, "nothing");
    else if (at->kind == CB_NODE_MAP)
        snprintf(got, sizeof got, "a map");
    else if (at->kind == CB_NODE_SEQ)
        snprintf(got, sizeof got, "a sequence");
    else if (cb_node_is_null(at))
        snprintf(got, sizeof got, "null");
    else
        snprintf(got, sizeof got, "\"%.160s\"", at->scalar);
    if (c->is_default) {
        cb_error_set(c->err, CB_EINVAL, "stage %s: parameter '%s': bad default: expected %s, got %s%s",
                     c->ops->name ? c->ops->name : "?", d->key, exp, got, extra ? extra : "");
        return CB_EINVAL;
    }
    cb_error_set(c->err, CB_ECONFIG, "expected %s, got %s%s", exp, got, extra ? extra : "");
    if (at) cb_error_at(c->err, at->file, at->line, at->col);
    cb_error_key(c->err, key);
    return CB_ECONFIG;
}




/* What a path parameter must name (its choices): the checks `validate` makes. */
enum { PATH_FILE = 1, PATH_DIR = 2, PATH_OUT = 4 };

static int path_kind(const char *choices) {
    if (!choices) return 0;
    if (!strcmp(choices, "file")) return PATH_FILE;
    if (!strcmp(choices, "dir")) return PATH_DIR;
    if (!strcmp(choices, "file|dir")) return PATH_FILE | PATH_DIR;
    if (!strcmp(choices, "out")) return PATH_OUT;
    return 0;
}

/* Resolves a path value (the one rule: core/path.h) and checks that it names what the
 * parameter needs, as prepare would find it. */
static int convert_path(ctx *c, const cb_param_def *d, const cb_node *n, const char *key,
                        cb_param_value *v) {
    char abs[CB_PATH_MAX];
    if (cb_path_resolve(c->dir, n->scalar, abs, sizeof abs) != 0)
        return value_error(c, d, n, key, 0, " (longer than " CB__PARAMS_XSTR(CB_PATH_MAX) " bytes)");
    if (!(v->s = cb_arena_strdup(c->arena, abs)))
        return cb_error_set(c->err, CB_ENOMEM, "out of memory");
    if (c->is_default) return 0;
    int kind = path_kind(d->choices);
    struct stat sb;
    const char *why = NULL;
    char msg[CB_PATH_MAX + 160];
    if (kind & PATH_OUT) {
        /* Written at the end of the run, whose output directory may create its directory: the
         * path must not be a directory, and its nearest existing ancestor must be one. */
        char parent[CB_PATH_MAX];
        snprintf(parent, sizeof parent, "%s", abs);
        if (stat(abs, &sb) == 0 && S_ISDIR(sb.st_mode)) why = "is a directory, expected a file to write";
        for (char *slash; !why && (slash = strrchr(parent, '/')) && slash != parent;) {
            *slash = '\0';
            if (stat(parent, &sb) != 0) continue;
            if (!S_ISDIR(sb.st_mode))
                snprintf(msg, sizeof msg, "%s is not a directory", parent), why = msg;
            break;
        }
    } else if (stat(abs, &sb) != 0) {
        why = strerror(errno);
    } else if (S_ISDIR(sb.st_mode) && !(kind & PATH_DIR)) {
        why = "is a directory, expected a file";
    } else if (!S_ISDIR(sb.st_mode) && !(kind & PATH_FILE)) {
        why = "is not a directory";
    }
    if (!why) return 0;
    cb_error_set(c->err, CB_ECONFIG, "%s: %s", abs, why);
    cb_error_at(c->err, n->file, n->line, n->col);
    cb_error_key(c->err, key);
    return CB_ECONFIG;
}

static int in_bounds(const cb_param_def *d, double v) {
    return !bounded(d) || (v >= d->min && v <= d->max);
}

/* Finds s in "a|b|c"; returns the index or -1, and the choice (arena copy) in *name. */
static int enum_index(ctx *c, const char *choices, const char *s, const char **name) {
    int i = 0;
    for (const char *p = choices; p && *p; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == strlen(s) && strncmp(p, s, len) == 0) {
            *name = cb_arena_strndup(c->arena, p, len);
            return *name ? i : -2;
        }
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

static void enum_suggest(const char *choices, const char *s, char *buf, size_t size) {
    buf[0] = '\0';
    char copy[512];
    snprintf(copy, sizeof copy, "%s", choices ? choices : "");
    const char *cands[32];
    size_t n = 0;
    char *p = copy;
    while (p && n < 32) {
        cands[n++] = p;
        char *bar = strchr(p, '|');
        if (bar) *bar = '\0';
        p = bar ? bar + 1 : NULL;
    }
    const char *best = cb_suggest(s, cands, n);
    if (best) snprintf(buf, size, " (did you mean '%s'?)", best);
}

static int convert_scalar_elem(ctx *c, const cb_param_def *d, const cb_node *n, const char *key,
                               int is_int, int64_t *iv, double *fv) {
    if (is_int) {
        if (!cb_node_scalar_int(n, iv) || !in_bounds(d, (double)*iv))
            return value_error(c, d, n, key, 1, NULL);
        *fv = (double)*iv;
    } else {
        if (!cb_node_scalar_float(n, fv) || !in_bounds(d, *fv)) return value_error(c, d, n, key, 1, NULL);
    }
    return 0;
}

static int convert(ctx *c, const cb_param_def *d, const cb_node *n, const char *key,
                   cb_param_value *v) {
    char ekey[CB_ERROR_KEY_MAX];
    v->has_value = 1;
    switch (d->type) {
    case CB_PARAM_INT:
        if (!cb_node_scalar_int(n, &v->i) || !in_bounds(d, (double)v->i))
            return value_error(c, d, n, key, 0, NULL);
        v->f = (double)v->i;
        return 0;
    case CB_PARAM_FLOAT:
        if (!cb_node_scalar_float(n, &v->f) || !in_bounds(d, v->f)) return value_error(c, d, n, key, 0, NULL);
        return 0;
    case CB_PARAM_BOOL:
        if (!cb_node_scalar_bool(n, &v->i)) return value_error(c, d, n, key, 0, NULL);
        v->f = (double)v->i;
        return 0;
    case CB_PARAM_STRING:
    case CB_PARAM_PATH:
        /* `key: null` means "none" for a string with no default (e.g. weights: null). */
        if (n && n->kind == CB_NODE_SCALAR && cb_node_is_null(n) && !d->default_value) {
            v->has_value = 0;
            v->s = NULL;
            return 0;
        }
        if (!n || n->kind != CB_NODE_SCALAR || cb_node_is_null(n))
            return value_error(c, d, n, key, 0, NULL);
        if (d->type == CB_PARAM_PATH) return convert_path(c, d, n, key, v);
        if (!(v->s = cb_arena_strdup(c->arena, n->scalar))) goto nomem;
        return 0;
    case CB_PARAM_ENUM: {
        if (!n || n->kind != CB_NODE_SCALAR) return value_error(c, d, n, key, 0, NULL);
        int idx = enum_index(c, d->choices, n->scalar, &v->s);
        if (idx == -2) goto nomem;
        if (idx < 0) {
            char sug[160];
            enum_suggest(d->choices, n->scalar, sug, sizeof sug);
            return value_error(c, d, n, key, 0, sug);
        }
        v->i = idx;
        return 0;
    }
    case CB_PARAM_INT_LIST:
    case CB_PARAM_FLOAT_LIST: {
        int is_int = d->type == CB_PARAM_INT_LIST;
        if (!n || n->kind != CB_NODE_SEQ) return value_error(c, d, n, key, 0, NULL);
        int64_t *ints = cb_arena_alloc(c->arena, (n->n + 1) * sizeof *ints);
        double *floats = cb_arena_alloc(c->arena, (n->n + 1) * sizeof *floats);
        if (!ints || !floats) goto nomem;
        for (size_t i = 0; i < n->n; i++) {
            snprintf(ekey, sizeof ekey, "%s[%zu]", key, i);
            int rc = convert_scalar_elem(c, d, n->items[i], ekey, is_int, &ints[i], &floats[i]);
            if (rc) return rc;
        }
        v->n = n->n;
        if (is_int) v->ints = ints;
        v->floats = floats;
        return 0;
    }
    case CB_PARAM_INT_MAP: {
        if (!n || n->kind != CB_NODE_MAP) return value_error(c, d, n, key, 0, NULL);
        int64_t *ints = cb_arena_alloc(c->arena, (n->n + 1) * sizeof *ints);
        const char **keys = cb_arena_alloc(c->arena, (n->n + 1) * sizeof *keys);
        if (!ints || !keys) goto nomem;
        for (size_t i = 0; i < n->n; i++) {
            snprintf(ekey, sizeof ekey, "%s.%s", key, n->keys[i]->scalar);
            double f;
            int rc = convert_scalar_elem(c, d, n->items[i], ekey, 1, &ints[i], &f);
            if (rc) return rc;
            if (!(keys[i] = cb_arena_strdup(c->arena, n->keys[i]->scalar))) goto nomem;
        }
        v->n = n->n;
        v->ints = ints;
        v->keys = keys;
        return 0;
    }
    }
    return value_error(c, d, n, key, 0, " (unknown parameter type)");
nomem:
    return cb_error_set(c->err, CB_ENOMEM, "out of memory");
}

static int table_error(ctx *c, const char *key, const char *what) {
    return cb_error_set(c->err, CB_EINVAL, "stage %s: parameter '%s': %s",
                        c->ops->name ? c->ops->name : "?", key ? key : "(null)", what);
}

static int check_table(ctx *c) {
    const cb_stage_ops *ops = c->ops;
    if (ops->n_params > CB_PARAMS_MAX)
        return cb_error_set(c->err, CB_EINVAL, "stage %s: more than %d parameters",
                            ops->name ? ops->name : "?", CB_PARAMS_MAX);
    if (ops->n_params && !ops->params)
        return cb_error_set(c->err, CB_EINVAL, "stage %s: n_params is %zu but params is NULL",
                            ops->name ? ops->name : "?", ops->n_params);
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        if (!d->key || !d->key[0]) return table_error(c, d->key, "empty key");
        for (const char *p = d->key; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                return table_error(c, d->key, "key must match [a-z0-9_]+");
        if (strlen(d->key) > 64) return table_error(c, d->key, "key longer than 64 characters");
        for (size_t j = 0; j < i; j++)
            if (strcmp(ops->params[j].key, d->key) == 0) return table_error(c, d->key, "duplicate key");
        if ((unsigned)d->type > (unsigned)CB_PARAM_PATH)
            return table_error(c, d->key, "unknown type");
        if (d->type == CB_PARAM_PATH && !path_kind(d->choices))
            return table_error(c, d->key, "a path's choices must be file, dir, file|dir or out");
        if (d->type == CB_PARAM_ENUM && (!d->choices || !d->choices[0]))
            return table_error(c, d->key, "enum without choices");
    }
    return 0;
}

static int parse_default(ctx *c, const cb_param_def *d, cb_param_value *v) {
    if (d->type == CB_PARAM_STRING) { /* taken literally: "" and "a: b" are fine defaults */
        v->has_value = 1;
        v->s = cb_arena_strdup(c->arena, d->default_value);
        return v->s ? 0 : cb_error_set(c->err, CB_ENOMEM, "out of memory");
    }
    cb_doc *doc = NULL;
    cb_error perr;
    cb_error_clear(&perr);
    int rc = cb_doc_load_string(d->default_value, strlen(d->default_value), "<default>", &doc, &perr);
    if (rc == CB_ENOMEM) return cb_error_set(c->err, CB_ENOMEM, "out of memory");
    if (rc) return table_error(c, d->key, "default is not valid YAML");
    cb_node empty = {.kind = CB_NODE_SCALAR, .scalar = "", .line = 1, .col = 1, .file = "<default>"};
    c->is_default = 1;
    rc = convert(c, d, doc->root ? doc->root : &empty, d->key, v);
    c->is_default = 0;
    cb_doc_destroy(doc); /* converted values were copied into c->arena */
    return rc;
}

int cb_params_resolve(const cb_stage_ops *ops, const cb_node *config, const char *keypath,
                      cb_arena *arena, cb_param_value **out, cb_error *err) {
    return cb_params_resolve_at(ops, config, keypath, "", arena, out, err);
}

int cb_params_resolve_at(const cb_stage_ops *ops, const cb_node *config, const char *keypath,
                         const char *dir, cb_arena *arena, cb_param_value **out, cb_error *err) {
    if (!ops || !arena || !out) return cb_error_set(err, CB_EINVAL, "cb_params_resolve: bad arguments");
    *out = NULL;
    ctx c = {ops, keypath ? keypath : "config", dir ? dir : "", arena, err, 0};
    int rc = check_table(&c);
    if (rc) return rc;
    cb_param_value *vals = cb_arena_alloc(arena, (ops->n_params + 1) * sizeof *vals);
    if (!vals) return cb_error_set(err, CB_ENOMEM, "out of memory");
    char key[CB_ERROR_KEY_MAX];

    if (config && cb_node_is_null(config)) config = NULL;
    if (config && config->kind != CB_NODE_MAP) {
        cb_error_set(err, CB_ECONFIG, "expected a map of parameters, got %s",
                     config->kind == CB_NODE_SEQ ? "a sequence" : "a scalar");
        cb_error_at(err, config->file, config->line, config->col);
        cb_error_key(err, c.keypath);
        return CB_ECONFIG;
    }
    /* Unknown keys first: a typo is the likeliest mistake and the clearest message. */
    for (size_t i = 0; config && i < config->n; i++) {
        const cb_node *k = config->keys[i];
        size_t j = 0;
        while (j < ops->n_params && strcmp(ops->params[j].key, k->scalar) != 0) j++;
        if (j < ops->n_params) continue;
        const char *cands[CB_PARAMS_MAX];
        for (j = 0; j < ops->n_params; j++) cands[j] = ops->params[j].key;
        const char *best = cb_suggest(k->scalar, cands, ops->n_params);
        snprintf(key, sizeof key, "%s.%s", c.keypath, k->scalar);
        if (best) {
            cb_error_set(err, CB_ECONFIG, "unknown key (did you mean '%s'?)", best);
        } else {
            char known[400];
            size_t off = 0;
            known[0] = '\0';
            for (j = 0; j < ops->n_params && off < sizeof known; j++) {
                int w = snprintf(known + off, sizeof known - off, "%s%s", j ? ", " : "", cands[j]);
                if (w > 0) off += (size_t)w;
            }
            if (ops->n_params)
                cb_error_set(err, CB_ECONFIG, "unknown key for stage %s (parameters: %s)", ops->name, known);
            else
                cb_error_set(err, CB_ECONFIG, "unknown key: stage %s has no parameters", ops->name);
        }
        cb_error_at(err, k->file, k->line, k->col);
        cb_error_key(err, key);
        return CB_ECONFIG;
    }
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        const cb_node *n = cb_node_get(config, d->key);
        if (d->default_value) {
            rc = parse_default(&c, d, &vals[i]);
            if (rc) return rc;
        }
        if (n) {
            cb_param_value v;
            memset(&v, 0, sizeof v);
            snprintf(key, sizeof key, "%s.%s", c.keypath, d->key);
            rc = convert(&c, d, n, key, &v);
            if (rc) return rc;
            v.is_set = 1;
            vals[i] = v;
        }
    }
    *out = vals;
    return 0;
}
