/* stages/util/noop.c - util.noop: forwards every query unchanged (minimal; template to follow). */
#include "colobench/stage.h"

static int cb_noop_create(void *state, const cb_stage_args *args, cb_error *err) { return CB_OK; }

static int cb_noop_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) { return CB_OK; }

const cb_stage_ops cb_stage_util_noop = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.noop",
    .summary = "forwards each query unchanged",
    .params = NULL,
    .n_params = 0,
    .state_size = 0,
    .create = cb_noop_create,
    .run = cb_noop_run,
};
