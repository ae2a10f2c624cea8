/* tests/test_stages.c - the util.* built-in stages and the example plugin, called through their
 * ops tables with a test host (no runtime): tables, payload ownership, distributions, timing,
 * routing, failure injection.
 *
 * The test host is cb_host_init_base() plus a recording emit/n_outputs. cb_run_ctx is opaque
 * in the ABI; the runtime defines it in its own translation unit, and this file defines its own
 * version for the recorder (stages never look inside it). Parameter values are built from each
 * table's defaults by a small parser here (scalars), so the defaults are checked too; lists and
 * maps are set by hand. Statistical checks use fixed seeds, so they are deterministic.
 */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/stage.h"
#include "core/clock.h"
#include "core/host.h"
#include "core/spec.h"
#include "harness.h"
#include "run_fixture.h"
#include "stages/builtin.h"
#include "stages/util/util.h"

#define MAX_PARAMS 24
#define MAX_OUT 16

struct cb_run_ctx {
    int n_outputs;
    long counts[MAX_OUT];
    long calls;
    int last;
    uint32_t last_hops;    /* hops of the last query emitted */
    long reports;          /* host->report calls */
    int last_metric;
    double last_value;
};

static int rec_emit(cb_run_ctx *ctx, int output, const cb_query *q) {
    if (output < 0 || output >= ctx->n_outputs) return CB_EINVAL;
    ctx->counts[output]++;
    ctx->calls++;
    ctx->last = output;
    ctx->last_hops = q->hops;
    return CB_OK;
}

static int rec_n_outputs(const cb_run_ctx *ctx) { return ctx->n_outputs; }

static int rec_report(cb_run_ctx *ctx, int metric, double value) {
    ctx->reports++;
    ctx->last_metric = metric;
    ctx->last_value = value;
    return CB_OK;
}

static cb_host test_host(void) {
    cb_host h;
    cb_host_init_base(&h);
    h.emit = rec_emit;
    h.n_outputs = rec_n_outputs;
    h.report = rec_report;
    return h;
}

/* One stage instance with its values. */
typedef struct inst {
    const cb_stage_ops *ops;
    cb_host host;
    cb_param_value v[MAX_PARAMS];
    cb_stage_args args;
    void *state;
    cb_error err;
    int created;
} inst;

static int param_index(const cb_stage_ops *ops, const char *key) {
    for (size_t i = 0; i < ops->n_params; i++)
        if (strcmp(ops->params[i].key, key) == 0) return (int)i;
    cb__test_fail(__FILE__, __LINE__, "%s has no parameter %s", ops->name, key);
    return 0;
}

static int choice_index(const char *choices, const char *name) {
    int idx = 0;
    size_t n = strlen(name);
    for (const char *p = choices; p && *p; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return idx;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

/* Fills v from the table's defaults (scalars parsed here; lists and maps start empty). */
static void defaults(const cb_stage_ops *ops, cb_param_value *v) {
    memset(v, 0, sizeof(cb_param_value) * MAX_PARAMS);
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        const char *t = d->default_value;
        char *end = NULL;
        v[i].has_value = t != NULL;
        if (!t) continue;
        switch (d->type) {
        case CB_PARAM_INT:
            v[i].i = strtoll(t, &end, 10);
            v[i].f = (double)v[i].i;
            CB_CHECK(end && *end == '\0');
            break;
        case CB_PARAM_FLOAT:
            v[i].f = strtod(t, &end);
            CB_CHECK(end && *end == '\0');
            break;
        case CB_PARAM_BOOL:
            CB_CHECK(strcmp(t, "true") == 0 || strcmp(t, "false") == 0);
            v[i].i = strcmp(t, "true") == 0;
            break;
        case CB_PARAM_ENUM:
            v[i].i = choice_index(d->choices, t);
            v[i].s = t;
            CB_CHECK_CMP_INT(v[i].i, >=, 0);
            break;
        default:
            break; /* lists and maps: set by the test */
        }
    }
}

static void set_int(inst *x, const char *key, int64_t val) {
    int i = param_index(x->ops, key);
    x->v[i].i = val;
    x->v[i].f = (double)val;
    x->v[i].is_set = x->v[i].has_value = 1;
}

static void set_float(inst *x, const char *key, double val) {
    int i = param_index(x->ops, key);
    x->v[i].f = val;
    x->v[i].is_set = x->v[i].has_value = 1;
}

static void set_enum(inst *x, const char *key, const char *name) {
    int i = param_index(x->ops, key);
    x->v[i].i = choice_index(x->ops->params[i].choices, name);
    x->v[i].s = name;
    x->v[i].is_set = x->v[i].has_value = 1;
    CB_CHECK_CMP_INT(x->v[i].i, >=, 0);
}

static void set_floats(inst *x, const char *key, const double *vals, size_t n) {
    int i = param_index(x->ops, key);
    x->v[i].floats = vals;
    x->v[i].n = n;
    x->v[i].is_set = x->v[i].has_value = 1;
}

static void inst_init(inst *x, const cb_stage_ops *ops) {
    memset(x, 0, sizeof *x);
    x->ops = ops;
    x->host = test_host();
    defaults(ops, x->v);
}

static int inst_create(inst *x, int n_outputs, uint64_t seed) {
    x->state = calloc(1, x->ops->state_size ? x->ops->state_size : 1);
    x->args = (cb_stage_args){.abi_major = CB_STAGE_ABI_MAJOR,
                              .struct_size = sizeof(cb_stage_args),
                              .host = &x->host,
                              .values = x->v,
                              .pipeline = "p",
                              .stage = x->ops->name,
                              .workers = 1,
                              .n_outputs = n_outputs,
                              .seed = seed};
    x->created = 1;
    int rc = x->ops->create(x->state, &x->args, &x->err);
    if (rc == CB_OK && x->ops->prepare) rc = x->ops->prepare(x->state, &x->err);
    return rc;
}

static void inst_destroy(inst *x) {
    if (x->created && x->ops->destroy) x->ops->destroy(x->state);
    free(x->state);
    x->state = NULL;
    x->created = 0;
}

static cb_query new_query(uint64_t id) {
    cb_query q;
    memset(&q, 0, sizeof q);
    q.abi_major = CB_STAGE_ABI_MAJOR;
    q.struct_size = sizeof q;
    q.id = id;
    q.batch = (int64_t)id;
    q.nparts = 1;
    return q;
}

static int run1(inst *x, cb_query *q, cb_run_ctx *ctx) { return x->ops->run(x->state, q, ctx, &x->err); }

static uint64_t refs(const cb_buffer *b) { return b->refcount; }

/* ---- tables ---------------------------------------------------------------------------- */

static int key_ok(const char *k) {
    if (!k || !*k) return 0;
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_')) return 0;
    return 1;
}

static void check_table(const cb_stage_ops *ops) {
    CB_CHECK_EQ_INT(ops->abi_major, CB_STAGE_ABI_MAJOR);
    CB_CHECK_EQ_INT(ops->struct_size, sizeof(cb_stage_ops));
    CB_CHECK(ops->name && strchr(ops->name, '.'));
    CB_CHECK(ops->summary && *ops->summary);
    CB_CHECK(ops->create && ops->run);
    CB_CHECK_CMP_INT(ops->n_params, <=, MAX_PARAMS);
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        CB_CHECK(key_ok(d->key));
        CB_CHECK(d->doc && *d->doc);
        if (d->type == CB_PARAM_ENUM) CB_CHECK(d->choices && *d->choices);
        for (size_t j = 0; j < i; j++) CB_CHECK(strcmp(d->key, ops->params[j].key) != 0);
    }
    CB_CHECK_CMP_INT(ops->n_metrics, <=, CB_STAGE_MAX_METRICS);
    CB_CHECK(ops->n_metrics == 0 || ops->metrics != NULL);
    for (size_t i = 0; i < ops->n_metrics; i++) {
        const cb_metric_def *m = &ops->metrics[i];
        CB_CHECK(key_ok(m->name));
        CB_CHECK(m->kind == CB_METRIC_COUNT || m->kind == CB_METRIC_GAUGE ||
                 m->kind == CB_METRIC_DIST);
        CB_CHECK(m->unit != NULL && m->doc && *m->doc);
        for (size_t j = 0; j < i; j++) CB_CHECK(strcmp(m->name, ops->metrics[j].name) != 0);
    }
    cb_param_value v[MAX_PARAMS];
    defaults(ops, v); /* checks every scalar default parses and lies in choices */
    for (size_t i = 0; i < ops->n_params; i++) {
        const cb_param_def *d = &ops->params[i];
        if ((d->type == CB_PARAM_INT || d->type == CB_PARAM_FLOAT) && d->min <= d->max) {
            CB_CHECK(v[i].f >= d->min && v[i].f <= d->max);
        }
    }
}

static void test_tables(void) {
#define CB_BUILTIN(sym) check_table(&sym);
#include "stages/builtin.def"
#undef CB_BUILTIN
}

/* Resolves a config (YAML text, or NULL for all defaults) with the real resolver (params.c)
 * into x->v. Returns the resolver's status. */
static int inst_resolve(inst *x, const char *yaml, cb_arena *arena) {
    cb_doc *doc = NULL;
    const cb_node *cfg = NULL;
    if (yaml) {
        CB_CHECK_EQ_INT(cb_doc_load_string(yaml, strlen(yaml), "test.yaml", &doc, &x->err), CB_OK);
        cfg = doc ? doc->root : NULL;
    }
    cb_param_value *vals = NULL;
    int rc = cb_params_resolve(x->ops, cfg, "config", arena, &vals, &x->err);
    if (rc == CB_OK) memcpy(x->v, vals, sizeof(cb_param_value) * x->ops->n_params);
    cb_doc_destroy(doc); /* values live in the arena */
    return rc;
}

/* Every built-in resolves from its defaults alone and creates with them. */
static void test_resolved_defaults(void) {
    static const cb_stage_ops *const all[] = {
#define CB_BUILTIN(sym) &sym,
#include "stages/builtin.def"
#undef CB_BUILTIN
    };
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        cb_arena *arena = cb_arena_create();
        inst x;
        inst_init(&x, all[k]);
        int rc = inst_resolve(&x, NULL, arena);
        if (rc != CB_OK) printf("# %s: %s\n", all[k]->name, x.err.msg);
        CB_CHECK_EQ_INT(rc, CB_OK);
        rc = inst_create(&x, 1, 1);
        if (rc == CB_ECONFIG && strstr(x.err.msg, "is required")) {
            /* a stage with a required parameter (a dataset path) cannot run on defaults alone;
             * it must say so by name ("path: is required ...") */
            inst_destroy(&x);
            cb_arena_destroy(arena);
            continue;
        }
        if (strncmp(all[k]->name, "util.gpu_", 9) == 0) {
            /* a GPU stage on a CPU pipeline (no device here) says what it needs */
            CB_CHECK_EQ_INT(rc, CB_ECONFIG);
            CB_CHECK_CONTAINS(x.err.msg, "needs a CUDA device: set the pipeline's device or this"
                                         " stage's device to cuda:N");
            inst_destroy(&x);
            cb_arena_destroy(arena);
            continue;
        }
        CB_CHECK_EQ_INT(rc, CB_OK);
        if (all[k] == &cb_stage_util_source) {
            cb_splits sp;
            memset(&sp, 0, sizeof sp);
            CB_CHECK_EQ_INT(x.ops->splits(x.state, &sp, &x.err), CB_OK);
            CB_CHECK_EQ_INT(sp.epochs, 1);
            CB_CHECK_EQ_INT(sp.n, 1);
            CB_CHECK_STR_EQ(sp.split[0].name, "train");
            CB_CHECK_EQ_INT(sp.split[0].batches, 1);
        }
        inst_destroy(&x);
        cb_arena_destroy(arena);
    }
}

/* Configs through the resolver reach create as documented. */
static void test_resolved_configs(void) {
    cb_arena *arena = cb_arena_create();
    inst x;
    inst_init(&x, &cb_stage_util_source);
    CB_CHECK_EQ_INT(inst_resolve(&x, "bytes: 64\nfill: random\nsplits: {train: 3, val: 1}\n"
                                     "epochs: 2\n", arena), CB_OK);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_splits sp;
    memset(&sp, 0, sizeof sp);
    CB_CHECK_EQ_INT(x.ops->splits(x.state, &sp, &x.err), CB_OK);
    CB_CHECK_EQ_INT(sp.epochs, 2);
    CB_CHECK_EQ_INT(sp.n, 2);
    CB_CHECK_STR_EQ(sp.split[1].name, "val");
    CB_CHECK_EQ_INT(sp.split[0].batches, 3);
    cb_run_ctx ctx = {.n_outputs = 1};
    cb_query q = new_query(0);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK(q.payload && q.payload->size_bytes == 64);
    cb_buffer_unref(q.payload);
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_router);
    CB_CHECK_EQ_INT(inst_resolve(&x, "weights: [1, 2]\n", arena), CB_OK);
    CB_CHECK_EQ_INT(inst_create(&x, 3, 1), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "2 weights for 3 outputs");
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_sleep); /* the table rejects what create must never see */
    CB_CHECK_EQ_INT(inst_resolve(&x, "distribution: gamma\n", arena), CB_ECONFIG);
    CB_CHECK_EQ_INT(inst_resolve(&x, "duration_us: -1\n", arena), CB_ECONFIG);
    inst_init(&x, &cb_stage_util_source);
    CB_CHECK_EQ_INT(inst_resolve(&x, "splits: {train: 0}\n", arena), CB_ECONFIG);
    cb_arena_destroy(arena);
}

/* ---- util.noop ------------------------------------------------------------------------- */

static char g_last_log[256]; /* test-only recorder for the log sink */

static void rec_log(int level, const char *stage, const char *msg) {
    snprintf(g_last_log, sizeof g_last_log, "%s: %s", stage, msg);
}

static void test_noop(void) {
    inst x;
    inst_init(&x, &cb_stage_util_noop);
    x.host.log = rec_log;
    set_int(&x, "log_summary", 1);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_run_ctx ctx = {.n_outputs = 1};
    cb_query q = new_query(7);
    q.tag = 42;
    for (int i = 0; i < 3; i++) CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK_EQ_INT(ctx.calls, 0);
    CB_CHECK_EQ_INT(q.tag, 42);
    CB_CHECK(q.payload == NULL);
    g_last_log[0] = '\0';
    x.ops->finish(x.state);
    CB_CHECK_CONTAINS(g_last_log, "util.noop: worker 0 forwarded 3 queries");
    inst_destroy(&x);
}

/* ---- util.source ----------------------------------------------------------------------- */

static void set_splits(inst *x, const char *const *keys, const int64_t *vals, size_t n) {
    int i = param_index(x->ops, "splits");
    x->v[i].keys = keys;
    x->v[i].ints = vals;
    x->v[i].n = n;
}

static const char *const k_train[] = {"train"};
static const int64_t k_one[] = {1};

static void test_source_payloads(void) {
    cb_run_ctx ctx = {.n_outputs = 1};
    /* bytes 0: no payload. */
    inst x;
    inst_init(&x, &cb_stage_util_source);
    set_splits(&x, k_train, k_one, 1);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_query q = new_query(0);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK(q.payload == NULL);
    CB_CHECK_EQ_INT(ctx.reports, 0); /* no payload, no `bytes` report */
    inst_destroy(&x);

    /* zero fill, private buffers; an existing payload is released. */
    inst_init(&x, &cb_stage_util_source);
    set_splits(&x, k_train, k_one, 1);
    set_int(&x, "bytes", 1000);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_buffer *old = cb_buffer_new(16);
    cb_buffer_ref(old); /* the test keeps one reference */
    q.payload = old;
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK_EQ_INT(refs(old), 1);
    cb_buffer_unref(old);
    CB_CHECK(q.payload != NULL && q.payload->size_bytes == 1000);
    CB_CHECK_EQ_INT(refs(q.payload), 1);
    int zeros = 1;
    for (size_t i = 0; i < 1000; i++) zeros &= ((unsigned char *)q.payload->data)[i] == 0;
    CB_CHECK(zeros);
    cb_query q2 = new_query(1);
    CB_CHECK_EQ_INT(run1(&x, &q2, &ctx), CB_OK);
    CB_CHECK(q2.payload != q.payload);
    /* metric `bytes` (index 0): the payload size, once per query */
    CB_CHECK_EQ_INT(ctx.reports, 2);
    CB_CHECK_EQ_INT(ctx.last_metric, 0);
    CB_CHECK_STR_EQ(cb_stage_util_source.metrics[0].name, "bytes");
    CB_CHECK(ctx.last_value == 1000.0);
    cb_buffer_unref(q.payload);
    cb_buffer_unref(q2.payload);
    inst_destroy(&x);

    /* A host table from before report was appended: the stage does not call it. */
    inst_init(&x, &cb_stage_util_source);
    x.host.struct_size = (uint32_t)offsetof(cb_host, report);
    set_splits(&x, k_train, k_one, 1);
    set_int(&x, "bytes", 8);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    ctx.reports = 0;
    q = new_query(2);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK_EQ_INT(ctx.reports, 0);
    cb_buffer_unref(q.payload);
    inst_destroy(&x);

    /* random fill: reproducible from the seed, different across seeds. */
    cb_buffer *b[3];
    uint64_t seeds[3] = {5, 5, 6};
    for (int k = 0; k < 3; k++) {
        inst_init(&x, &cb_stage_util_source);
        set_splits(&x, k_train, k_one, 1);
        set_int(&x, "bytes", 4099);
        set_enum(&x, "fill", "random");
        CB_CHECK_EQ_INT(inst_create(&x, 1, seeds[k]), CB_OK);
        q = new_query(0);
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
        b[k] = q.payload;
        inst_destroy(&x); /* the query's payload outlives the stage */
    }
    CB_CHECK(b[0]->size_bytes == 4099 && b[2]->size_bytes == 4099);
    CB_CHECK(memcmp(b[0]->data, b[1]->data, 4099) == 0);
    CB_CHECK(memcmp(b[0]->data, b[2]->data, 4099) != 0);
    long hist[256] = {0};
    for (size_t i = 0; i < 4099; i++) hist[((unsigned char *)b[0]->data)[i]]++;
    long maxc = 0;
    for (int i = 0; i < 256; i++) maxc = hist[i] > maxc ? hist[i] : maxc;
    CB_CHECK_CMP_INT(maxc, <, 60); /* mean 16 per value */
    for (int k = 0; k < 3; k++) cb_buffer_unref(b[k]);

    /* share: every query references one buffer. */
    inst_init(&x, &cb_stage_util_source);
    set_splits(&x, k_train, k_one, 1);
    set_int(&x, "bytes", 64);
    set_int(&x, "share", 1);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    q = new_query(0);
    q2 = new_query(1);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK_EQ_INT(run1(&x, &q2, &ctx), CB_OK);
    CB_CHECK(q.payload == q2.payload);
    CB_CHECK_EQ_INT(refs(q.payload), 3); /* template + two queries */
    cb_buffer_unref(q2.payload);
    inst_destroy(&x);
    CB_CHECK_EQ_INT(refs(q.payload), 1);
    cb_buffer_unref(q.payload);
}

static void test_source_splits(void) {
    static const char *const keys[] = {"train", "val", "test"};
    static const int64_t vals[] = {5, 2, 1};
    inst x;
    inst_init(&x, &cb_stage_util_source);
    set_splits(&x, keys, vals, 3);
    set_int(&x, "epochs", 3);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_splits sp;
    memset(&sp, 0, sizeof sp);
    sp.abi_major = CB_STAGE_ABI_MAJOR;
    sp.struct_size = sizeof sp;
    CB_CHECK_EQ_INT(x.ops->splits(x.state, &sp, &x.err), CB_OK);
    CB_CHECK_EQ_INT(sp.epochs, 3);
    CB_CHECK_EQ_INT(sp.n, 3);
    CB_CHECK_STR_EQ(sp.split[0].name, "train");
    CB_CHECK_STR_EQ(sp.split[1].name, "val");
    CB_CHECK_STR_EQ(sp.split[2].name, "test");
    CB_CHECK_EQ_INT(sp.split[0].batches, 5);
    CB_CHECK_EQ_INT(sp.split[1].batches, 2);
    CB_CHECK_EQ_INT(sp.split[2].batches, 1);
    inst_destroy(&x);

    static const char *const dup[] = {"train", "train"};
    inst_init(&x, &cb_stage_util_source);
    set_splits(&x, dup, vals, 2);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "given twice");
    inst_destroy(&x);

    static const char *const longname[] = {"a_split_name_longer_than_thirty_one_chars"};
    inst_init(&x, &cb_stage_util_source);
    set_splits(&x, longname, vals, 1);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_ECONFIG);
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_source); /* an empty map */
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_ECONFIG);
    inst_destroy(&x);
}

/* ---- util.sleep ------------------------------------------------------------------------ */

static void test_sleep_fixed(void) {
    inst x;
    inst_init(&x, &cb_stage_util_sleep);
    set_float(&x, "duration_us", 2000);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_run_ctx ctx = {.n_outputs = 1};
    for (int i = 0; i < 5; i++) {
        cb_query q = new_query((uint64_t)i);
        int64_t t0 = cb_clock_now_ns();
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
        int64_t dt = cb_clock_now_ns() - t0;
        CB_CHECK_CMP_INT(dt, >=, 2000000);
        CB_CHECK_CMP_INT(dt, <=, 2000000000); /* only "it ends": no timed assertions */
    }
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_sleep); /* zero: returns at once */
    set_float(&x, "duration_us", 0);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_query q = new_query(0);
    int64_t t0 = cb_clock_now_ns();
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK_CMP_INT(cb_clock_now_ns() - t0, <, 1000000);
    inst_destroy(&x);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Draws n durations (us) of a configured sleep through the test hook. */
static void draw(const char *dist, double mean_us, double sigma, uint64_t seed, double *out,
                 int n) {
    inst x;
    inst_init(&x, &cb_stage_util_sleep);
    set_enum(&x, "distribution", dist);
    set_float(&x, "duration_us", mean_us);
    set_float(&x, "sigma", sigma);
    CB_CHECK_EQ_INT(inst_create(&x, 1, seed), CB_OK);
    for (int i = 0; i < n; i++) out[i] = (double)cb__util_sleep_draw_ns(x.state) / 1e3;
    inst_destroy(&x);
}

static void test_sleep_distributions(void) {
    enum { N = 20000 };
    static double d[N];
    double sum = 0;
    long above = 0;
    draw("exponential", 100, 0.5, 11, d, N);
    for (int i = 0; i < N; i++) sum += d[i], above += d[i] > 100;
    CB_CHECK_NEAR(sum / N, 100, 3);                 /* sd of the mean: 0.7 */
    CB_CHECK_NEAR((double)above / N, exp(-1), 0.015); /* P(T > mean) = 1/e */

    sum = 0;
    draw("lognormal", 100, 0.5, 12, d, N);
    for (int i = 0; i < N; i++) sum += d[i];
    CB_CHECK_NEAR(sum / N, 100, 2); /* sd of the mean: 0.38 */
    qsort(d, N, sizeof d[0], cmp_double);
    CB_CHECK_NEAR(d[N / 2], 100 * exp(-0.125), 2); /* median exp(mu) */

    sum = 0;
    draw("lognormal", 50, 1.0, 13, d, N);
    for (int i = 0; i < N; i++) sum += d[i];
    CB_CHECK_NEAR(sum / N, 50, 2.5); /* heavier tail: sd of the mean ~0.5 */

    draw("fixed", 123, 0.5, 14, d, 3);
    CB_CHECK_NEAR(d[0], 123, 1e-9);
    CB_CHECK_NEAR(d[2], 123, 1e-9);

    /* Different seeds give different sequences; equal seeds equal ones. */
    double a[4], b[4], c[4];
    draw("exponential", 100, 0.5, 1, a, 4);
    draw("exponential", 100, 0.5, 1, b, 4);
    draw("exponential", 100, 0.5, 2, c, 4);
    CB_CHECK(memcmp(a, b, sizeof a) == 0);
    CB_CHECK(memcmp(a, c, sizeof a) != 0);

    /* One exponential run() sleeps (smoke test of the random path). */
    inst x;
    inst_init(&x, &cb_stage_util_sleep);
    set_enum(&x, "distribution", "exponential");
    set_float(&x, "duration_us", 200);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 3), CB_OK);
    cb_run_ctx ctx = {.n_outputs = 1};
    cb_query q = new_query(0);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    inst_destroy(&x);
}

/* ---- util.spin ------------------------------------------------------------------------- */

static int64_t time_run(inst *x) {
    cb_run_ctx ctx = {.n_outputs = 1};
    cb_query q = new_query(0);
    int64_t t0 = cb_clock_now_ns();
    CB_CHECK_EQ_INT(run1(x, &q, &ctx), CB_OK);
    return cb_clock_now_ns() - t0;
}

static void test_spin_deadline(void) {
    inst x;
    inst_init(&x, &cb_stage_util_spin);
    set_float(&x, "duration_us", 2000);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    for (int i = 0; i < 5; i++) {
        int64_t dt = time_run(&x);
        CB_CHECK_CMP_INT(dt, >=, 2000000);
        CB_CHECK_CMP_INT(dt, <=, 2000000000); /* only "it ends": no timed assertions */
    }
    inst_destroy(&x);
}

static void test_spin_work(void) {
    inst x;
    inst_init(&x, &cb_stage_util_spin);
    set_float(&x, "duration_us", 5000);
    set_enum(&x, "mode", "work");
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK); /* runs prepare: calibration */
    CB_CHECK(cb__util_spin_iters_per_us(x.state) > 10);
    int64_t best = INT64_MAX;
    for (int i = 0; i < 5; i++) {
        int64_t dt = time_run(&x);
        if (dt < best) best = dt;
    }
    /* Calibrated work takes on the order of the duration; loose bounds because other tests
     * share the CPUs (timing itself is measured in bench/, not asserted here). A broken
     * calibration (no work, or a unit error) lands far outside. */
    CB_CHECK_CMP_INT(best, >=, 5000000 / 10);
    CB_CHECK_CMP_INT(best, <=, 5000000 * 20);
    inst_destroy(&x);
}

/* ---- util.copy ------------------------------------------------------------------------- */

static void test_copy(void) {
    cb_run_ctx ctx = {.n_outputs = 1};
    inst x;
    inst_init(&x, &cb_stage_util_copy);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_buffer *orig = cb_buffer_new(100);
    for (int i = 0; i < 100; i++) ((unsigned char *)orig->data)[i] = (unsigned char)(i * 7 + 1);
    cb_buffer_ref(orig); /* the test's reference; the query owns the other */
    cb_query q = new_query(0);
    q.payload = orig;
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK(q.payload != orig);
    CB_CHECK_EQ_INT(q.payload->size_bytes, 100);
    CB_CHECK(memcmp(q.payload->data, orig->data, 100) == 0);
    CB_CHECK_EQ_INT(refs(orig), 1);
    CB_CHECK_EQ_INT(refs(q.payload), 1);
    CB_CHECK_EQ_INT(((unsigned char *)orig->data)[99], (unsigned char)(99 * 7 + 1));
    cb_buffer_unref(q.payload);
    inst_destroy(&x);

    /* Larger: repeats the input; smaller: a prefix. */
    size_t sizes[2] = {250, 40};
    for (int k = 0; k < 2; k++) {
        inst_init(&x, &cb_stage_util_copy);
        set_int(&x, "bytes", (int64_t)sizes[k]);
        CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
        cb_buffer_ref(orig);
        q = new_query(0);
        q.payload = orig;
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
        CB_CHECK_EQ_INT(q.payload->size_bytes, sizes[k]);
        int same = 1;
        for (size_t i = 0; i < sizes[k]; i++)
            same &= ((unsigned char *)q.payload->data)[i] == ((unsigned char *)orig->data)[i % 100];
        CB_CHECK(same);
        cb_buffer_unref(q.payload);
        CB_CHECK_EQ_INT(refs(orig), 1);
        inst_destroy(&x);
    }
    cb_buffer_unref(orig);

    /* No payload: a zeroed buffer of `bytes`. */
    inst_init(&x, &cb_stage_util_copy);
    set_int(&x, "bytes", 64);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    q = new_query(0);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK(q.payload && q.payload->size_bytes == 64);
    int zeros = 1;
    for (size_t i = 0; i < 64; i++) zeros &= ((unsigned char *)q.payload->data)[i] == 0;
    CB_CHECK(zeros);
    cb_buffer_unref(q.payload);
    inst_destroy(&x);
}

/* ---- util.router ----------------------------------------------------------------------- */

static void test_router_probability(void) {
    static const double w[3] = {1, 2, 7};
    enum { N = 100000 };
    inst x;
    inst_init(&x, &cb_stage_util_router);
    set_floats(&x, "weights", w, 3);
    CB_CHECK_EQ_INT(inst_create(&x, 3, 99), CB_OK);
    cb_run_ctx ctx = {.n_outputs = 3};
    for (int i = 0; i < N; i++) {
        cb_query q = new_query((uint64_t)i);
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    }
    CB_CHECK_EQ_INT(ctx.calls, N);
    double chi2 = 0;
    for (int i = 0; i < 3; i++) {
        double e = N * w[i] / 10.0;
        chi2 += (ctx.counts[i] - e) * (ctx.counts[i] - e) / e;
    }
    printf("# counts %ld %ld %ld chi2 %.2f\n", ctx.counts[0], ctx.counts[1], ctx.counts[2], chi2);
    CB_CHECK(chi2 < 13.8); /* 2 degrees of freedom, p = 0.001 */
    inst_destroy(&x);

    /* Uniform when no weights; a zero weight is never chosen. */
    static const double wz[2] = {0, 1};
    inst_init(&x, &cb_stage_util_router);
    set_floats(&x, "weights", wz, 2);
    CB_CHECK_EQ_INT(inst_create(&x, 2, 5), CB_OK);
    cb_run_ctx c2 = {.n_outputs = 2};
    for (int i = 0; i < 1000; i++) {
        cb_query q = new_query((uint64_t)i);
        run1(&x, &q, &c2);
    }
    CB_CHECK_EQ_INT(c2.counts[0], 0);
    CB_CHECK_EQ_INT(c2.counts[1], 1000);
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_router);
    CB_CHECK_EQ_INT(inst_create(&x, 4, 5), CB_OK);
    cb_run_ctx c4 = {.n_outputs = 4};
    for (int i = 0; i < 40000; i++) {
        cb_query q = new_query((uint64_t)i);
        run1(&x, &q, &c4);
    }
    for (int i = 0; i < 4; i++) CB_CHECK_NEAR(c4.counts[i], 10000, 400);
    inst_destroy(&x);
}

static void test_router_field_and_hops(void) {
    inst x;
    inst_init(&x, &cb_stage_util_router);
    set_enum(&x, "mode", "field");
    CB_CHECK_EQ_INT(inst_create(&x, 3, 1), CB_OK); /* field: tag (default) */
    cb_run_ctx ctx = {.n_outputs = 3};
    int64_t tags[] = {0, 1, 2, 3, 7, -1, -3};
    int expect[] = {0, 1, 2, 0, 1, 2, 0};
    for (int i = 0; i < 7; i++) {
        cb_query q = new_query(0);
        q.tag = tags[i];
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
        CB_CHECK_EQ_INT(ctx.last, expect[i]);
    }
    /* max_hops (default 16), on_max_hops drop. */
    long calls = ctx.calls;
    cb_query q = new_query(0);
    q.hops = 16;
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_RUN_DROP);
    CB_CHECK_EQ_INT(ctx.calls, calls);
    q.hops = 15;
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    CB_CHECK_EQ_INT(ctx.calls, calls + 1);
    CB_CHECK_EQ_INT(ctx.last_hops, 16); /* each pass through a router adds one */
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_router);
    set_enum(&x, "mode", "field");
    set_enum(&x, "field", "split");
    set_int(&x, "max_hops", 2);
    set_enum(&x, "on_max_hops", "last");
    CB_CHECK_EQ_INT(inst_create(&x, 2, 1), CB_OK);
    cb_run_ctx c2 = {.n_outputs = 2};
    q = new_query(0);
    q.split = 1;
    CB_CHECK_EQ_INT(run1(&x, &q, &c2), CB_OK);
    CB_CHECK_EQ_INT(c2.last, 1);
    q.split = 0;
    q.hops = 2;
    CB_CHECK_EQ_INT(run1(&x, &q, &c2), CB_OK);
    CB_CHECK_EQ_INT(c2.last, 1); /* last output, not split 0 */
    inst_destroy(&x);
}

/* max_hops counts rounds: on a loop of 4 stages (the router and 3 body stages) with
 * max_hops: 3, every query runs the body exactly 3 times, whatever the loop's length, then
 * leaves by the last output. Counts from the records. */
static void test_router_rounds(void) {
    run_fixture f;
    int ok = run_fixture_yaml(&f,
                              "pipelines:\n"
                              "  - name: p\n"
                              "    inputs: [0]\n"
                              "    loadgen: {component: closed, max_queries: 20, config: {concurrency: 2}}\n"
                              "    stages:\n"
                              "      - {id: 0, name: in, component: util.noop, outputs: [1]}\n"
                              "      - {id: 1, name: again, component: util.router, outputs: [2, 5],\n"
                              "         config: {weights: [1, 0], max_hops: 3, on_max_hops: last}}\n"
                              "      - {id: 2, name: a, component: util.noop, outputs: [3]}\n"
                              "      - {id: 3, name: b, component: util.noop, outputs: [4]}\n"
                              "      - {id: 4, name: c, component: util.noop, outputs: [1]}\n"
                              "      - {id: 5, name: out, component: util.noop}\n",
                              NULL, NULL);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return;
    CB_CHECK_EQ_INT(f.rc, CB_OK);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    CB_CHECK_EQ_INT(r.n_queries, 20);
    long runs[6] = {0};
    for (size_t i = 0; i < r.n_stage_events; i++)
        if (r.stage_events[i].stage < 6) runs[r.stage_events[i].stage]++;
    CB_CHECK_EQ_INT(runs[0], 20);
    CB_CHECK_EQ_INT(runs[1], 4 * 20); /* 3 rounds and the exit */
    CB_CHECK_EQ_INT(runs[2], 3 * 20);
    CB_CHECK_EQ_INT(runs[3], 3 * 20);
    CB_CHECK_EQ_INT(runs[4], 3 * 20);
    CB_CHECK_EQ_INT(runs[5], 20);
    run_fixture_fini(&f);
}

static void test_router_errors(void) {
    static const double w[2] = {1, 1};
    inst x;
    inst_init(&x, &cb_stage_util_router);
    set_floats(&x, "weights", w, 2);
    CB_CHECK_EQ_INT(inst_create(&x, 3, 1), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "2 weights for 3 outputs");
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_router);
    CB_CHECK_EQ_INT(inst_create(&x, 0, 1), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "at least 1 output");
    inst_destroy(&x);

    static const double wz[2] = {0, 0};
    inst_init(&x, &cb_stage_util_router);
    set_floats(&x, "weights", wz, 2);
    CB_CHECK_EQ_INT(inst_create(&x, 2, 1), CB_ECONFIG);
    inst_destroy(&x); /* after a failed create, destroy releases the table */
}

/* ---- util.fail ------------------------------------------------------------------------- */

static void test_fail(void) {
    cb_run_ctx ctx = {.n_outputs = 1};
    inst x;
    inst_init(&x, &cb_stage_util_fail); /* default: the first query */
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    cb_query q = new_query(0);
    CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_ESTAGE);
    CB_CHECK_STR_EQ(x.err.msg, "injected failure on query 0");
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_fail);
    set_int(&x, "on_query", 5);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    for (uint64_t i = 0; i < 10; i++) {
        q = new_query(i);
        int rc = run1(&x, &q, &ctx);
        CB_CHECK_EQ_INT(rc, i == 5 ? CB_ESTAGE : CB_OK);
        if (i == 5) CB_CHECK_STR_EQ(x.err.msg, "injected failure on query 5");
    }
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_fail); /* probability only: on_query not applied */
    set_float(&x, "probability", 0.25);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 77), CB_OK);
    long fails = 0;
    for (uint64_t i = 0; i < 20000; i++) {
        q = new_query(i);
        int rc = run1(&x, &q, &ctx);
        if (rc == CB_ESTAGE) {
            fails++;
            CB_CHECK_CONTAINS(x.err.msg, "injected failure on query");
        } else {
            CB_CHECK_EQ_INT(rc, CB_OK);
        }
    }
    CB_CHECK_NEAR((double)fails / 20000, 0.25, 0.01);
    inst_destroy(&x);

    inst_init(&x, &cb_stage_util_fail);
    set_int(&x, "on_query", -1);
    CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
    for (uint64_t i = 0; i < 100; i++) {
        q = new_query(i);
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
    }
    inst_destroy(&x);
}

/* ---- example plugin -------------------------------------------------------------------- */

static void test_example_plugin(void) {
    void *so = dlopen(CB_TEST_BINDIR "/plugins/example_plugin.so", RTLD_NOW | RTLD_LOCAL);
    CB_CHECK(so != NULL);
    if (!so) {
        printf("# dlopen: %s\n", dlerror());
        return;
    }
    const cb_plugin *entry = dlsym(so, CB_PLUGIN_SYMBOL);
    CB_CHECK(entry != NULL);
    if (entry) {
        CB_CHECK_EQ_INT(entry->abi_major, CB_STAGE_ABI_MAJOR);
        CB_CHECK_EQ_INT(entry->struct_size, sizeof(cb_plugin));
        CB_CHECK_EQ_INT(entry->n_stages, 1);
        const cb_stage_ops *ops = entry->stages[0];
        check_table(ops);
        CB_CHECK_STR_EQ(ops->name, "example.scale");

        inst x;
        inst_init(&x, ops);
        set_int(&x, "factor", 3);
        CB_CHECK_EQ_INT(inst_create(&x, 1, 1), CB_OK);
        cb_buffer *orig = cb_buffer_new(4);
        unsigned char in[4] = {1, 2, 3, 100};
        memcpy(orig->data, in, 4);
        cb_buffer_ref(orig); /* shared: the stage must copy before writing */
        cb_query q = new_query(0);
        q.payload = orig;
        cb_run_ctx ctx = {.n_outputs = 1};
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
        CB_CHECK(q.payload != orig);
        CB_CHECK(memcmp(orig->data, in, 4) == 0);
        CB_CHECK_EQ_INT(refs(orig), 1);
        unsigned char *p = q.payload->data;
        CB_CHECK_EQ_INT(p[0], 3);
        CB_CHECK_EQ_INT(p[1], 6);
        CB_CHECK_EQ_INT(p[2], 9);
        CB_CHECK_EQ_INT(p[3], 44); /* 300 mod 256 */
        CB_CHECK_EQ_INT(q.tag, 3 + 6 + 9 + 44);
        /* metric mean_byte, once per query */
        CB_CHECK_EQ_INT(ops->n_metrics, 1);
        CB_CHECK_STR_EQ(ops->metrics[0].name, "mean_byte");
        CB_CHECK_EQ_INT(ctx.reports, 1);
        CB_CHECK_EQ_INT(ctx.last_metric, 0);
        CB_CHECK_NEAR(ctx.last_value, (3 + 6 + 9 + 44) / 4.0, 0);
        /* A private payload is changed in place. */
        cb_buffer *priv = q.payload;
        CB_CHECK_EQ_INT(run1(&x, &q, &ctx), CB_OK);
        CB_CHECK(q.payload == priv);
        CB_CHECK_EQ_INT(p[0], 9);
        cb_buffer_unref(q.payload);
        cb_buffer_unref(orig);
        inst_destroy(&x);
    }
    dlclose(so);
}

int main(void) {
    CB_RUN(test_tables);
    CB_RUN(test_resolved_defaults);
    CB_RUN(test_resolved_configs);
    CB_RUN(test_noop);
    CB_RUN(test_source_payloads);
    CB_RUN(test_source_splits);
    CB_RUN(test_sleep_fixed);
    CB_RUN(test_sleep_distributions);
    CB_RUN(test_spin_deadline);
    CB_RUN(test_spin_work);
    CB_RUN(test_copy);
    CB_RUN(test_router_probability);
    CB_RUN(test_router_field_and_hops);
    CB_RUN(test_router_rounds);
    CB_RUN(test_router_errors);
    CB_RUN(test_fail);
    CB_RUN(test_example_plugin);
    return cb_test_done();
}
