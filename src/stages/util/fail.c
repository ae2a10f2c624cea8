/* stages/util/fail.c - util.fail: injects a stage failure (minimal version). */
#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/util/util.h"

enum { P_ON_QUERY, P_PROBABILITY, P_COUNT };

static const cb_param_def cb_fail_params[P_COUNT] = {
    [P_ON_QUERY] = {"on_query", CB_PARAM_INT, "-1", -1, 9.2e18, NULL,
                    "fail when the query id equals this (-1 = never)"},
    [P_PROBABILITY] = {"probability", CB_PARAM_FLOAT, "0", 0, 1, NULL,
                       "probability that any query fails (0..1)"},
};

typedef struct cb_fail_state {
    int64_t on_query;
    double probability;
    cb_rng rng;
} cb_fail_state;

static int cb_fail_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_fail_state *s = state;
    s->on_query = args->values[P_ON_QUERY].i;
    s->probability = args->values[P_PROBABILITY].f;
    cb_rng_seed(&s->rng, args->seed);
    return CB_OK;
}

static int cb_fail_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_fail_state *s = state;
    if (s->on_query >= 0 && q->id == (uint64_t)s->on_query)
        return cb_util_error(err, CB_ESTAGE, "injected failure on query %llu",
                             (unsigned long long)q->id);
    if (s->probability > 0 && cb_rng_uniform(&s->rng) < s->probability)
        return cb_util_error(err, CB_ESTAGE, "injected random failure on query %llu",
                             (unsigned long long)q->id);
    return CB_OK;
}

const cb_stage_ops cb_stage_util_fail = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.fail",
    .summary = "fails on a chosen query or at random (tests error paths)",
    .params = cb_fail_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_fail_state),
    .create = cb_fail_create,
    .run = cb_fail_run,
};
