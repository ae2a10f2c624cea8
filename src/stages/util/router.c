/* stages/util/router.c - util.router: sends each query to exactly one of its outputs.
 *
 * What: in `probability` mode the output is drawn at random with the given relative `weights`
 * (empty = uniform); in `field` mode it is the chosen query field modulo the number of outputs
 * (a non-negative remainder, also for negative tags), which makes routing deterministic
 * (e.g. `field: split` sends train and val batches to different branches). A router may sit on
 * a cycle (retry loops, multi-pass models). Every pass of a query through a router adds one to
 * its hop count (q->hops; nothing else changes it), so on a loop through one router the count
 * is the number of rounds. A query that arrives with `max_hops` hops already is not routed
 * normally: it is dropped (`on_max_hops: drop`) or sent to the last output (`last`, the
 * conventional "exit" edge), so a query goes round a loop at most max_hops times.
 *
 * Design: weights are normalised at create into a cumulative table (one allocation through the
 * host, per instance); a draw is one uniform number and a linear scan (outputs are few). The
 * draws come from a cb_rng seeded by the instance's seed: routing is reproducible per worker.
 * Configuration errors the parameter table cannot express (no outputs, weights count differing
 * from the outputs count, all-zero weights) are refused by check when the config is loaded
 * (and by create), with a message naming the counts.
 *
 * Thread-safety: one instance per worker; the table and rng are private. Ownership: the query is
 * borrowed; host->emit passes it on (the runtime copies what it needs); run returns CB_OK after
 * emitting, so nothing else is forwarded, or CB_RUN_DROP when the query is dropped.
 */
#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/util/util.h"

enum { P_MODE, P_WEIGHTS, P_FIELD, P_MAX_HOPS, P_ON_MAX_HOPS, P_COUNT };
enum { MODE_PROBABILITY, MODE_FIELD };
enum { FIELD_ID, FIELD_SPLIT, FIELD_EPOCH, FIELD_BATCH, FIELD_TAG, FIELD_HOPS };
enum { ON_MAX_DROP, ON_MAX_LAST };

static const cb_param_def cb_router_params[P_COUNT] = {
    [P_MODE] = {"mode", CB_PARAM_ENUM, "probability", CB_PARAM_UNBOUNDED, "probability|field",
                "probability: random output drawn by weight; field: output = field mod outputs"},
    [P_WEIGHTS] = {"weights", CB_PARAM_FLOAT_LIST, "[]", 0, 1e300, NULL,
                   "relative weight of each output, one per output (empty = uniform)"},
    [P_FIELD] = {"field", CB_PARAM_ENUM, "tag", CB_PARAM_UNBOUNDED,
                 "id|split|epoch|batch|tag|hops",
                 "query field used in field mode (hops: passes through routers so far)"},
    [P_MAX_HOPS] = {"max_hops", CB_PARAM_INT, "16", 1, 1e6, NULL,
                    "rounds of a loop: a query that has passed through routers this many "
                    "times is not routed normally (passes)"},
    [P_ON_MAX_HOPS] = {"on_max_hops", CB_PARAM_ENUM, "drop", CB_PARAM_UNBOUNDED, "drop|last",
                       "at max_hops: drop the query, or send it to the last output"},
};

typedef struct cb_router_state {
    const cb_host *host;
    int mode, field, on_max, n_outputs;
    uint32_t max_hops;
    double *cum; /* n_outputs cumulative probabilities, last == 1; host->alloc'd */
    cb_rng rng;
} cb_router_state;

/* What the table cannot say: outputs, one weight per output, a positive total (validate). */
static int cb_router_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *w = &args->values[P_WEIGHTS];
    if (args->n_outputs < 1)
        return cb_util_error(err, CB_ECONFIG, "outputs: a router needs at least 1 output, has 0");
    if (w->n != 0 && w->n != (size_t)args->n_outputs)
        return cb_util_error(err, CB_ECONFIG, "weights: %zu weights for %d outputs (give one "
                             "per output, or none for uniform)", w->n, args->n_outputs);
    double total = 0;
    for (size_t i = 0; i < w->n; i++) total += w->floats[i];
    if (w->n && !(total > 0))
        return cb_util_error(err, CB_ECONFIG, "weights: at least one weight must be > 0");
    return CB_OK;
}

static int cb_router_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_router_state *s = state;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->mode = (int)v[P_MODE].i;
    s->field = (int)v[P_FIELD].i;
    s->on_max = (int)v[P_ON_MAX_HOPS].i;
    s->max_hops = (uint32_t)v[P_MAX_HOPS].i;
    s->n_outputs = args->n_outputs;
    cb_rng_seed(&s->rng, args->seed);
    int rc = cb_router_check(args, err);
    if (rc) return rc;
    size_t nw = v[P_WEIGHTS].n;
    s->cum = s->host->alloc(sizeof(double) * (size_t)s->n_outputs);
    if (!s->cum) return cb_util_error(err, CB_ENOMEM, "out of memory");
    double total = 0;
    for (int i = 0; i < s->n_outputs; i++) {
        total += nw ? v[P_WEIGHTS].floats[i] : 1.0;
        s->cum[i] = total;
    }
    for (int i = 0; i < s->n_outputs; i++) s->cum[i] /= total;
    s->cum[s->n_outputs - 1] = 1.0;
    return CB_OK;
}

static int64_t cb_router_field(const cb_router_state *s, const cb_query *q) {
    switch (s->field) {
    case FIELD_ID: return (int64_t)(q->id & INT64_MAX);
    case FIELD_SPLIT: return q->split;
    case FIELD_EPOCH: return q->epoch;
    case FIELD_BATCH: return q->batch;
    case FIELD_HOPS: return q->hops;
    default: return q->tag;
    }
}

static int cb_router_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_router_state *s = state;
    int out;
    if (q->hops >= s->max_hops) {
        if (s->on_max == ON_MAX_DROP) return CB_RUN_DROP;
        out = s->n_outputs - 1;
    } else if (s->mode == MODE_PROBABILITY) {
        double u = cb_rng_uniform(&s->rng);
        out = 0;
        while (out < s->n_outputs - 1 && u >= s->cum[out]) out++;
    } else {
        int64_t r = cb_router_field(s, q) % s->n_outputs;
        out = (int)(r < 0 ? r + s->n_outputs : r);
    }
    if (q->hops < UINT32_MAX) q->hops++; /* this pass: the emitted query carries it */
    int rc = s->host->emit(ctx, out, q);
    if (rc < 0) return cb_util_error(err, rc, "emit to output %d failed", out);
    return CB_OK; /* emitted: not forwarded again */
}

static void cb_router_destroy(void *state) {
    cb_router_state *s = state;
    if (s->host && s->cum) s->host->free(s->cum);
    s->cum = NULL;
}

const cb_stage_ops cb_stage_util_router = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.router",
    .summary = "routes each query to one output, at random by weight or by a query field",
    .params = cb_router_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_router_state),
    .create = cb_router_create,
    .run = cb_router_run,
    .destroy = cb_router_destroy,
    .check = cb_router_check,
};
