/* stages/util/router.c - util.router: sends each query to one output (minimal). */
#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/util/util.h"

enum { P_MODE, P_WEIGHTS, P_FIELD, P_MAX_HOPS, P_ON_MAX_HOPS, P_COUNT };
enum { MODE_PROBABILITY, MODE_FIELD };
enum { FIELD_ID, FIELD_SPLIT, FIELD_EPOCH, FIELD_BATCH, FIELD_TAG, FIELD_HOPS };
enum { ON_MAX_DROP, ON_MAX_LAST };

static const cb_param_def cb_router_params[P_COUNT] = {
    [P_MODE] = {"mode", CB_PARAM_ENUM, "probability", CB_PARAM_UNBOUNDED, "probability|field",
                "probability: random output by weight; field: output = field mod outputs"},
    [P_WEIGHTS] = {"weights", CB_PARAM_FLOAT_LIST, "[]", 0, 1e300, NULL,
                   "relative weight of each output (empty = uniform)"},
    [P_FIELD] = {"field", CB_PARAM_ENUM, "tag", CB_PARAM_UNBOUNDED,
                 "id|split|epoch|batch|tag|hops", "query field used in field mode"},
    [P_MAX_HOPS] = {"max_hops", CB_PARAM_INT, "16", 1, 1e6, NULL,
                    "queries with at least this many hops are not routed normally"},
    [P_ON_MAX_HOPS] = {"on_max_hops", CB_PARAM_ENUM, "drop", CB_PARAM_UNBOUNDED, "drop|last",
                       "what happens at max_hops: drop the query or send it to the last output"},
};

#define CB_ROUTER_MAX_OUTPUTS 64

typedef struct cb_router_state {
    const cb_host *host;
    int mode, field, on_max, n_outputs;
    uint32_t max_hops;
    double cum[CB_ROUTER_MAX_OUTPUTS];
    cb_rng rng;
} cb_router_state;

static int cb_router_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_router_state *s = state;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->mode = (int)v[P_MODE].i;
    s->field = (int)v[P_FIELD].i;
    s->on_max = (int)v[P_ON_MAX_HOPS].i;
    s->max_hops = (uint32_t)v[P_MAX_HOPS].i;
    s->n_outputs = args->n_outputs;
    if (s->n_outputs < 1)
        return cb_util_error(err, CB_ECONFIG, "router needs at least one output, has none");
    if (s->n_outputs > CB_ROUTER_MAX_OUTPUTS)
        return cb_util_error(err, CB_ECONFIG, "router supports at most %d outputs, has %d",
                             CB_ROUTER_MAX_OUTPUTS, s->n_outputs);
    size_t nw = v[P_WEIGHTS].n;
    if (nw != 0 && nw != (size_t)s->n_outputs)
        return cb_util_error(err, CB_ECONFIG, "weights: %zu weights given for %d outputs", nw,
                             s->n_outputs);
    double total = 0;
    for (int i = 0; i < s->n_outputs; i++) {
        total += nw ? v[P_WEIGHTS].floats[i] : 1.0;
        s->cum[i] = total;
    }
    if (!(total > 0)) return cb_util_error(err, CB_ECONFIG, "weights: sum must be > 0");
    for (int i = 0; i < s->n_outputs; i++) s->cum[i] /= total;
    cb_rng_seed(&s->rng, args->seed);
    return CB_OK;
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
        uint64_t key;
        switch (s->field) {
        case FIELD_ID: key = q->id; break;
        case FIELD_SPLIT: key = (uint64_t)q->split; break;
        case FIELD_EPOCH: key = (uint64_t)q->epoch; break;
        case FIELD_BATCH: key = (uint64_t)q->batch; break;
        case FIELD_HOPS: key = q->hops; break;
        default: key = (uint64_t)q->tag; break;
        }
        out = (int)(key % (uint64_t)s->n_outputs);
    }
    int rc = s->host->emit(ctx, out, q);
    if (rc < 0) return cb_util_error(err, rc, "emit to output %d failed", out);
    return CB_OK; /* emitted: not forwarded again */
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
};
