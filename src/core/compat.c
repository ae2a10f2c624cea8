/* core/compat.c - translates the reference Python framework's configs into colobench's (see
 * compat.h and docs/porting.md).
 *
 * Design: one pass over the tree, in three steps. (1) Detect the dialect from keys and names
 * only the reference uses; a colobench config returns at once, untouched. (2) Collect every
 * component the config names that colobench lacks (reference module paths with no row below and
 * no registered stage of that name, `cells` models), and reject them all in one message. (3)
 * Rewrite copy-on-write: the root, each pipeline, its loadgen and each stage that changes are
 * copied into the caller's arena with their arrays; untouched subtrees are shared with the
 * document. New scalars and maps take the position of the text they come from, so spec.c's
 * errors still point into the file.
 * What maps: base `Stage` (and `TerminalCapture`) to util.noop, `DataInjector` to util.source,
 * `CopyStage` to util.copy; the dataset stage (`dataset_stage_id`) of the `Stage` family, which
 * reports one `train` split of one batch, to util.source with splits {train: 1} and one epoch per
 * query (the reference loops epochs until max_queries) and no split barrier (it has none);
 * `listeners` to `monitors.sources`; `loadgen.is_training` (ignored by the reference) and
 * `max_input_queue_depth: null` (its "unbounded", colobench's default) dropped.
 * Maxima: CB_COMPAT_MAX_MISSING distinct missing components are named (then "and N more"); the
 * message fits CB_ERROR_MSG_MAX. Time and memory are linear in the nodes visited.
 * Thread-safety: reentrant, no global mutable state. Ownership: see compat.h.
 */
#include "core/compat.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/monitor_sources.h"

#define CB_COMPAT_MAX_MISSING 64
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The reference's stage classes colobench has, by the names its configs use. */
typedef enum ref_kind { REF_STAGE, REF_CAPTURE, REF_INJECTOR, REF_COPY } ref_kind;

static const struct ref_component {
    const char *name;   /* as written in the reference's configs */
    const char *target; /* colobench component */
    ref_kind kind;
} ref_components[] = {
    {"stages.stage.Stage", "util.noop", REF_STAGE},
    {"stages.Stage", "util.noop", REF_STAGE},
    {"stages.capture.TerminalCapture", "util.noop", REF_CAPTURE},
    {"stages.TerminalCapture", "util.noop", REF_CAPTURE},
    {"stages.evaluation.data_injector.DataInjector", "util.source", REF_INJECTOR},
    {"stages.evaluation.DataInjector", "util.source", REF_INJECTOR},
    {"stages.evaluation.copy_stage.CopyStage", "util.copy", REF_COPY},
    {"stages.evaluation.CopyStage", "util.copy", REF_COPY},
};

/* The one `config` key each class reads (NULL: none); the reference ignores the others, we
 * reject them so a misspelt key is not silently lost. */
static const char *const ref_config_key[] = {
    [REF_STAGE] = NULL,
    [REF_CAPTURE] = "output_dir",
    [REF_INJECTOR] = "payload_size",
    [REF_COPY] = NULL,
};

/* The reference's load schedulers, long module paths to the names spec.c knows. */
static const struct {
    const char *name, *target;
} ref_loadgens[] = {
    {"loadgen.OfflineLoadScheduler", "loadgen.OfflineLoadScheduler"},
    {"loadgen.PoissonLoadScheduler", "loadgen.PoissonLoadScheduler"},
    {"loadgen.schedulers.offline_scheduler.OfflineLoadScheduler", "loadgen.OfflineLoadScheduler"},
    {"loadgen.schedulers.poisson_scheduler.PoissonLoadScheduler", "loadgen.PoissonLoadScheduler"},
};

/* radT listeners (the reference's `listeners`) and the monitor sources that sample the same. */
static const struct listener {
    const char *name;
    unsigned sources; /* CB_MON_* bits */
    const char *lacks; /* what no colobench source samples, NULL when nothing */
} listeners[] = {
    {"smi", CB_MON_GPU, NULL},
    {"dcgmi", CB_MON_GPU,
     "dcgmi's profiling fields (SM activity, occupancy, tensor/DRAM/PCIe activity)"},
    {"top", CB_MON_CPU | CB_MON_PROCESS, NULL},
    {"iostat", CB_MON_CPU, "iostat's per-device disk figures"},
    {"free", CB_MON_MEMORY, NULL},
    {"macmon", 0, "macmon (Apple Silicon power and utilization)"},
};

typedef struct missing {
    const char *name;
    int line;
    size_t count;
} missing;

typedef struct tctx {
    cb_arena *arena;
    cb_error *err;
    const cb_registry *reg;
    const char *file;
    cb_compat_out *out;
    missing miss[CB_COMPAT_MAX_MISSING];
    size_t n_miss, n_miss_dropped; /* distinct names kept; distinct names past the maximum */
    bool capture_noted;
} tctx;

static int oom(tctx *t) { return cb_error_set(t->err, CB_ENOMEM, "out of memory"); }

/* Adds n's position and the key to the error just set (argument rc); returns rc. */
static int at(tctx *t, const cb_node *n, const char *key, int rc) {
    cb_error_at(t->err, n->file, n->line, n->col);
    cb_error_key(t->err, key);
    return rc;
}

static int note(tctx *t, const char *text) {
    if (t->out->n_notes >= CB_COMPAT_MAX_NOTES) return 0;
    if (!(t->out->notes[t->out->n_notes] = cb_arena_strdup(t->arena, text))) return oom(t);
    t->out->n_notes++;
    return 0;
}

/* ---- nodes ----------------------------------------------------------------------------- */

static const char *scalar(const cb_node *n) {
    return n && n->kind == CB_NODE_SCALAR && !cb_node_is_null(n) ? n->scalar : NULL;
}

static cb_node *node_at(tctx *t, cb_node_kind kind, const cb_node *pos) {
    cb_node *n = cb_arena_alloc(t->arena, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = pos->line;
    n->col = pos->col;
    n->file = pos->file;
    return n;
}

static cb_node *scalar_at(tctx *t, const char *text, const cb_node *pos) {
    cb_node *n = node_at(t, CB_NODE_SCALAR, pos);
    if (n && !(n->scalar = cb_arena_strdup(t->arena, text))) n = NULL;
    return n;
}

/* A map at pos with room for cap keys (or a copy of src's keys plus that room). */
static cb_node *map_at(tctx *t, const cb_node *src, const cb_node *pos, size_t cap) {
    size_t n = src ? src->n : 0;
    cb_node *m = node_at(t, CB_NODE_MAP, pos);
    if (!m || !(m->keys = cb_arena_alloc(t->arena, (n + cap + 1) * sizeof *m->keys)) ||
        !(m->items = cb_arena_alloc(t->arena, (n + cap + 1) * sizeof *m->items)))
        return NULL;
    if (n) {
        memcpy(m->keys, src->keys, n * sizeof *m->keys);
        memcpy(m->items, src->items, n * sizeof *m->items);
    }
    m->n = n;
    return m;
}

static cb_node *seq_copy(tctx *t, const cb_node *src) {
    cb_node *s = node_at(t, CB_NODE_SEQ, src);
    if (!s || !(s->items = cb_arena_alloc(t->arena, (src->n + 1) * sizeof *s->items))) return NULL;
    memcpy(s->items, src->items, src->n * sizeof *s->items);
    s->n = src->n;
    return s;
}

/* Replaces key's value, or appends key (the map must have room). Key nodes take pos. */
static int map_put(tctx *t, cb_node *m, const char *key, cb_node *value, const cb_node *pos) {
    if (!value) return oom(t);
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->keys[i]->scalar, key) == 0) {
            m->items[i] = value;
            return 0;
        }
    }
    cb_node *k = scalar_at(t, key, pos);
    if (!k) return oom(t);
    m->keys[m->n] = k;
    m->items[m->n++] = value;
    return 0;
}

static void map_del(cb_node *m, const char *key) {
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->keys[i]->scalar, key) != 0) continue;
        memmove(m->keys + i, m->keys + i + 1, (m->n - i - 1) * sizeof *m->keys);
        memmove(m->items + i, m->items + i + 1, (m->n - i - 1) * sizeof *m->items);
        m->n--;
        return;
    }
}

static int put_int(tctx *t, cb_node *m, const char *key, int64_t v, const cb_node *pos) {
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, v);
    return map_put(t, m, key, scalar_at(t, text, pos), pos);
}

/* ---- detection and missing components -------------------------------------------------- */

static const struct ref_component *ref_find(const char *name) {
    for (size_t i = 0; name && i < COUNT(ref_components); i++)
        if (strcmp(ref_components[i].name, name) == 0) return &ref_components[i];
    return NULL;
}

static bool is_module_path(const char *name) {
    return name && (strncmp(name, "stages.", 7) == 0 || strncmp(name, "torchvision.", 12) == 0);
}

static bool is_reference(const cb_node *root) {
    if (cb_node_get(root, "listeners") || cb_node_get(root, "cells")) return true;
    const cb_node *pl = cb_node_get(root, "pipelines");
    for (size_t i = 0; pl && pl->kind == CB_NODE_SEQ && i < pl->n; i++) {
        const cb_node *lg = cb_node_get(pl->items[i], "loadgen");
        if (cb_node_get(lg, "is_training")) return true;
        const cb_node *st = cb_node_get(pl->items[i], "stages");
        for (size_t j = 0; st && st->kind == CB_NODE_SEQ && j < st->n; j++)
            if (is_module_path(scalar(cb_node_get(st->items[j], "component")))) return true;
    }
    return false;
}

static void add_missing(tctx *t, const char *name, const cb_node *at) {
    for (size_t i = 0; i < t->n_miss; i++) {
        if (strcmp(t->miss[i].name, name) == 0) {
            t->miss[i].count++;
            return;
        }
    }
    if (t->n_miss == CB_COMPAT_MAX_MISSING) {
        t->n_miss_dropped++; /* may count a name twice: only said as "N more" */
        return;
    }
    t->miss[t->n_miss++] = (missing){name, at->line, 1};
}

/* One message naming every missing component: "FILE: PREFIXneeds components ...". */
static int fail_missing(tctx *t, const char *prefix, const char *unit) {
    static const char tail[] = "; see docs/porting.md";
    char msg[CB_ERROR_MSG_MAX];
    size_t off = (size_t)snprintf(msg, sizeof msg, "%sneeds components colobench does not have: ",
                                  prefix);
    size_t shown = 0;
    for (; shown < t->n_miss; shown++) {
        const missing *m = &t->miss[shown];
        char item[256];
        if (m->count > 1)
            snprintf(item, sizeof item, "%s%s (line %d, %zu %ss)", shown ? ", " : "", m->name,
                     m->line, m->count, unit);
        else
            snprintf(item, sizeof item, "%s%s (line %d)", shown ? ", " : "", m->name, m->line);
        /* keep room for ", and NNN more" and the tail */
        if (off + strlen(item) + 24 + sizeof tail > sizeof msg) break;
        off += (size_t)snprintf(msg + off, sizeof msg - off, "%s", item);
    }
    size_t more = t->n_miss - shown + t->n_miss_dropped;
    if (more) off += (size_t)snprintf(msg + off, sizeof msg - off, ", and %zu more", more);
    snprintf(msg + off, sizeof msg - off, "%s", tail);
    cb_error_set(t->err, CB_ECONFIG, "%s", msg);
    cb_error_at(t->err, t->file, 0, 0);
    return CB_ECONFIG;
}

/* A stage component colobench lacks: a reference module path with no row in ref_components
 * and no stage registered under that name. Other unknown names are left to spec.c, which
 * suggests the nearest. */
static bool lacks(tctx *t, const char *name) {
    return is_module_path(name) && !ref_find(name) && !cb_registry_find(t->reg, name);
}

static void collect_missing(tctx *t, const cb_node *root) {
    const cb_node *pl = cb_node_get(root, "pipelines");
    for (size_t i = 0; pl && pl->kind == CB_NODE_SEQ && i < pl->n; i++) {
        const cb_node *st = cb_node_get(pl->items[i], "stages");
        for (size_t j = 0; st && st->kind == CB_NODE_SEQ && j < st->n; j++) {
            const cb_node *c = cb_node_get(st->items[j], "component");
            if (lacks(t, scalar(c))) add_missing(t, c->scalar, c);
        }
        const cb_node *c = cb_node_get(cb_node_get(pl->items[i], "loadgen"), "component");
        const char *name = scalar(c);
        if (!name || strncmp(name, "loadgen.", 8) != 0) continue;
        bool known = false;
        for (size_t k = 0; k < COUNT(ref_loadgens); k++)
            known |= !strcmp(ref_loadgens[k].name, name);
        if (!known) add_missing(t, name, c);
    }
}

/* `cells:` is the reference's scale-sweep manifest for run_modularity.py (model, weights and
 * batch of its torchvision_training.yml per cell), not a benchmark: name its models. */
static int reject_cells(tctx *t, const cb_node *cells) {
    for (size_t i = 0; cells->kind == CB_NODE_SEQ && i < cells->n; i++) {
        const cb_node *m = cb_node_get(cells->items[i], "model");
        const char *model = scalar(m);
        if (!model) continue;
        char name[160];
        snprintf(name, sizeof name, "torchvision.models.%s", model);
        const char *kept = cb_arena_strdup(t->arena, name);
        if (!kept) return oom(t);
        add_missing(t, kept, m);
    }
    if (t->n_miss == 0)
        return at(t, cells, "cells",
                  cb_error_set(t->err, CB_ECONFIG,
                               "a sweep manifest of the reference's run_modularity.py, not a "
                               "benchmark (no pipelines); see docs/porting.md"));
    return fail_missing(t, "a sweep manifest of the reference's run_modularity.py (cells of "
                           "torchvision_training.yml), not a benchmark; it ", "cell");
}

/* ---- rewriting ------------------------------------------------------------------------- */

/* `listeners: [smi, top, ...]` -> `monitors: {sources: [...]}`; one note for what no source
 * samples. */
static int translate_listeners(tctx *t, cb_node *root, const cb_node *l) {
    if (cb_node_get(root, "monitors"))
        return at(t, l, "listeners",
                  cb_error_set(t->err, CB_ECONFIG,
                               "both `listeners` (the reference's) and `monitors` are set: "
                               "keep one"));
    if (l->kind != CB_NODE_SEQ)
        return at(t, l, "listeners",
                  cb_error_set(t->err, CB_ECONFIG, "expected a list of radT listener names"));
    unsigned bits = 0;
    char lacking[512];
    size_t off = 0;
    lacking[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        const char *name = scalar(l->items[i]);
        const struct listener *f = NULL;
        for (size_t k = 0; name && k < COUNT(listeners); k++)
            if (strcmp(listeners[k].name, name) == 0) f = &listeners[k];
        if (!f) {
            char key[32];
            snprintf(key, sizeof key, "listeners[%zu]", i);
            return at(t, l->items[i], key,
                      cb_error_set(t->err, CB_ECONFIG,
                                   "unknown radT listener '%s' (expected one of: smi, dcgmi, top, "
                                   "iostat, free, macmon)",
                                   name ? name : ""));
        }
        bits |= f->sources;
        if (f->lacks && !strstr(lacking, f->lacks) && off < sizeof lacking) {
            int w = snprintf(lacking + off, sizeof lacking - off, "%s%s", off ? "; " : "",
                             f->lacks);
            if (w > 0) off += (size_t)w;
        }
    }
    cb_node *mon = map_at(t, NULL, l, 2);
    cb_node *src = node_at(t, CB_NODE_SEQ, l);
    if (!mon || !src ||
        !(src->items = cb_arena_alloc(t->arena, (CB_MON_N_SOURCES + 1) * sizeof *src->items)))
        return oom(t);
    for (size_t i = 0; i < CB_MON_N_SOURCES; i++) {
        if (!(bits & cb_monitor_source_bits[i])) continue;
        if (!(src->items[src->n++] = scalar_at(t, cb_monitor_source_names[i], l))) return oom(t);
    }
    int rc;
    if (bits == 0 && (rc = map_put(t, mon, "enabled", scalar_at(t, "false", l), l))) return rc;
    if (bits && (rc = map_put(t, mon, "sources", src, l))) return rc;
    map_del(root, "listeners");
    if ((rc = map_put(t, root, "monitors", mon, l))) return rc;
    if (lacking[0]) {
        char text[640];
        snprintf(text, sizeof text, "%s:%d: listeners: no colobench monitor samples %s%s",
                 l->file, l->line, lacking, bits ? "" : " (monitors are off)");
        return note(t, text);
    }
    return 0;
}

/* The stage's reference `config`, checked against the one key its class reads; *value is that
 * key's node or NULL. */
static int ref_config(tctx *t, const cb_node *stage, const char *path, ref_kind kind,
                      const cb_node **value) {
    *value = NULL;
    const cb_node *c = cb_node_get(stage, "config");
    if (!c || cb_node_is_null(c)) return 0;
    char key[CB_ERROR_KEY_MAX];
    snprintf(key, sizeof key, "%s.config", path);
    if (c->kind != CB_NODE_MAP)
        return at(t, c, key, cb_error_set(t->err, CB_ECONFIG, "expected a map"));
    const char *want = ref_config_key[kind];
    for (size_t i = 0; i < c->n; i++) {
        if (want && strcmp(c->keys[i]->scalar, want) == 0) {
            *value = c->items[i];
            continue;
        }
        snprintf(key, sizeof key, "%s.config.%s", path, c->keys[i]->scalar);
        return at(t, c->keys[i], key,
                  cb_error_set(t->err, CB_ECONFIG, "unknown key for the reference's %s (%s%s)",
                               scalar(cb_node_get(stage, "component")),
                               want ? "expected: " : "it reads no key", want ? want : ""));
    }
    return 0;
}

/* Rewrites one stage of the Stage family in place (st is already a copy); as_dataset makes it
 * the pipeline's util.source of one `train` batch per epoch, `epochs` epochs. */
static int translate_stage(tctx *t, cb_node *st, const char *path, const struct ref_component *rc_,
                           bool as_dataset, int64_t epochs) {
    const cb_node *comp = cb_node_get(st, "component");
    const cb_node *value;
    int rc;
    /* A base Stage keeps its config: util.noop checks it, as for colobench's alias of it. */
    if (rc_->kind == REF_STAGE && !as_dataset)
        return map_put(t, st, "component", scalar_at(t, rc_->target, comp), comp);
    if ((rc = ref_config(t, st, path, rc_->kind, &value))) return rc;
    if (rc_->kind != REF_INJECTOR) value = NULL; /* output_dir: nothing to map */
    const cb_node *cpos = cb_node_get(st, "config");
    if (!cpos) cpos = st;
    if (rc_->kind == REF_CAPTURE && !t->capture_noted) {
        char text[512];
        t->capture_noted = true;
        snprintf(text, sizeof text,
                 "%s:%d: %s: runs as util.noop: colobench writes no outputs JSONL (queries.csv "
                 "records each query)", comp->file, comp->line, comp->scalar);
        if ((rc = note(t, text))) return rc;
    }
    cb_node *cfg = map_at(t, NULL, cpos, 4);
    if (!cfg) return oom(t);
    const char *target = rc_->target;
    if (as_dataset || rc_->kind == REF_INJECTOR) {
        int64_t bytes = 0;
        if (value && (!cb_node_scalar_int(value, &bytes) || bytes < 0)) {
            char key[CB_ERROR_KEY_MAX];
            snprintf(key, sizeof key, "%s.config.payload_size", path);
            return at(t, value, key,
                      cb_error_set(t->err, CB_ECONFIG,
                                   "expected a payload size in bytes (an integer >= 0)"));
        }
        target = "util.source";
        /* The reference hands every query the same preallocated payload: shared, no copy. */
        if ((rc = put_int(t, cfg, "bytes", bytes, value ? value : cpos)) ||
            (rc = map_put(t, cfg, "share", scalar_at(t, "true", cpos), cpos)))
            return rc;
        if (as_dataset) {
            cb_node *splits = map_at(t, NULL, cpos, 1);
            if (!splits) return oom(t);
            if ((rc = put_int(t, splits, "train", 1, cpos)) ||
                (rc = map_put(t, cfg, "splits", splits, cpos)) ||
                (rc = put_int(t, cfg, "epochs", epochs, cpos)))
                return rc;
        }
    }
    if ((rc = map_put(t, st, "component", scalar_at(t, target, comp), comp))) return rc;
    return map_put(t, st, "config", cfg, cpos);
}

static int translate_pipeline(tctx *t, cb_node *p, size_t pi) {
    char path[64];
    int rc;
    snprintf(path, sizeof path, "pipelines[%zu]", pi);
    /* loadgen: drop is_training, map long scheduler paths, and (with a dataset) no barrier. */
    const cb_node *lg0 = cb_node_get(p, "loadgen");
    cb_node *lg = NULL;
    int64_t max_queries = 0;
    if (lg0 && lg0->kind == CB_NODE_MAP) {
        if (!(lg = map_at(t, lg0, lg0, 1))) return oom(t);
        map_del(lg, "is_training");
        const cb_node *c = cb_node_get(lg, "component");
        for (size_t k = 0; scalar(c) && k < COUNT(ref_loadgens); k++)
            if (!strcmp(ref_loadgens[k].name, c->scalar) &&
                (rc = map_put(t, lg, "component", scalar_at(t, ref_loadgens[k].target, c), c)))
                return rc;
        if (!cb_node_scalar_int(cb_node_get(lg, "max_queries"), &max_queries)) max_queries = 0;
        if ((rc = map_put(t, p, "loadgen", lg, lg0))) return rc;
    }
    int64_t ds = -1;
    const cb_node *dsn = cb_node_get(p, "dataset_stage_id");
    if (dsn && !cb_node_scalar_int(dsn, &ds)) ds = -1;
    const cb_node *st0 = cb_node_get(p, "stages");
    if (!st0 || st0->kind != CB_NODE_SEQ) return 0;
    cb_node *st = seq_copy(t, st0);
    if (!st) return oom(t);
    for (size_t j = 0; j < st->n; j++) {
        const cb_node *s0 = st->items[j];
        const struct ref_component *r = ref_find(scalar(cb_node_get(s0, "component")));
        /* `max_input_queue_depth: null` is the reference's "unbounded", colobench's default. */
        const cb_node *depth = cb_node_get(s0, "max_input_queue_depth");
        bool unbounded = depth && cb_node_is_null(depth);
        if ((!r && !unbounded) || s0->kind != CB_NODE_MAP) continue;
        cb_node *s = map_at(t, s0, s0, 2);
        if (!s) return oom(t);
        st->items[j] = s;
        if (unbounded) map_del(s, "max_input_queue_depth");
        if (!r) continue;
        int64_t id = -1;
        bool as_dataset = ds >= 0 && cb_node_scalar_int(cb_node_get(s0, "id"), &id) && id == ds;
        char sp[96];
        snprintf(sp, sizeof sp, "%s.stages[%zu]", path, j);
        /* The reference loops epochs of one batch until max_queries: one epoch per query. */
        int64_t epochs = max_queries > 0 && max_queries < INT32_MAX ? max_queries : INT32_MAX;
        if ((rc = translate_stage(t, s, sp, r, as_dataset, epochs))) return rc;
    }
    if ((rc = map_put(t, p, "stages", st, st0))) return rc;
    if (dsn && lg) {
        const cb_node *c0 = cb_node_get(lg, "config");
        if (c0 && !cb_node_is_null(c0) && c0->kind != CB_NODE_MAP) return 0; /* spec.c reports */
        if (c0 && cb_node_get(c0, "split_barrier")) return 0;
        cb_node *c = map_at(t, c0 && !cb_node_is_null(c0) ? c0 : NULL, c0 ? c0 : lg0, 1);
        if (!c) return oom(t);
        if ((rc = map_put(t, c, "split_barrier", scalar_at(t, "false", c), c)) ||
            (rc = map_put(t, lg, "config", c, c)))
            return rc;
    }
    return 0;
}

static int translate(tctx *t, const cb_node *root0) {
    int rc;
    const cb_node *cells = cb_node_get(root0, "cells");
    if (cells) return reject_cells(t, cells);
    /* plugin_paths may register the missing names: spec.c loads them and reports then. */
    if (!cb_node_get(root0, "plugin_paths")) collect_missing(t, root0);
    if (t->n_miss) return fail_missing(t, "", "stage");
    cb_node *root = map_at(t, root0, root0, 1);
    if (!root) return oom(t);
    const cb_node *l = cb_node_get(root0, "listeners");
    if (l && (rc = translate_listeners(t, root, l))) return rc;
    const cb_node *pl0 = cb_node_get(root0, "pipelines");
    if (pl0 && pl0->kind == CB_NODE_SEQ) {
        cb_node *pl = seq_copy(t, pl0);
        if (!pl) return oom(t);
        for (size_t i = 0; i < pl->n; i++) {
            if (pl->items[i]->kind != CB_NODE_MAP) continue;
            cb_node *p = map_at(t, pl->items[i], pl->items[i], 1);
            if (!p) return oom(t);
            if ((rc = translate_pipeline(t, p, i))) return rc;
            pl->items[i] = p;
        }
        if ((rc = map_put(t, root, "pipelines", pl, pl0))) return rc;
    }
    t->out->root = root;
    return 0;
}

int cb_compat_translate(const cb_doc *doc, const cb_registry *reg, cb_arena *arena,
                        cb_compat_out *out, cb_error *err) {
    if (!doc || !reg || !arena || !out)
        return cb_error_set(err, CB_EINVAL, "cb_compat_translate: bad arguments");
    memset(out, 0, sizeof *out);
    out->root = doc->root;
    if (!doc->root || doc->root->kind != CB_NODE_MAP || !is_reference(doc->root)) return 0;
    tctx t;
    memset(&t, 0, sizeof t);
    t.arena = arena;
    t.err = err;
    t.reg = reg;
    t.file = doc->file ? doc->file : "<string>";
    t.out = out;
    out->translated = true;
    int rc = translate(&t, doc->root);
    if (rc) out->root = doc->root;
    return rc;
}
