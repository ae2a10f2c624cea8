/* stages/util/spin.c - util.spin: burns CPU per query (minimal: deadline mode only). */
#include "colobench/stage.h"

enum { P_DURATION_US, P_MODE, P_COUNT };

static const cb_param_def cb_spin_params[P_COUNT] = {
    [P_DURATION_US] = {"duration_us", CB_PARAM_FLOAT, "100", 0, 3.6e9, NULL,
                       "CPU time to burn per query, in microseconds"},
    [P_MODE] = {"mode", CB_PARAM_ENUM, "deadline", CB_PARAM_UNBOUNDED, "deadline|work",
                "deadline: spin until a wall-clock deadline; work: a fixed amount of arithmetic"},
};

typedef struct cb_spin_state {
    const cb_host *host;
    int64_t duration_ns;
} cb_spin_state;

static int cb_spin_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_spin_state *s = state;
    s->host = args->host;
    s->duration_ns = (int64_t)(args->values[P_DURATION_US].f * 1e3);
    return CB_OK;
}

static int cb_spin_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_spin_state *s = state;
    int64_t deadline = s->host->now_ns() + s->duration_ns;
    while (s->host->now_ns() < deadline) {
    }
    return CB_OK;
}

const cb_stage_ops cb_stage_util_spin = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.spin",
    .summary = "burns CPU per query (to a deadline, or a calibrated amount of work)",
    .params = cb_spin_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_spin_state),
    .create = cb_spin_create,
    .run = cb_spin_run,
};
