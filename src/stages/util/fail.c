/* stages/util/fail.c - util.fail: injects a stage failure, to test error paths.
 *
 * What: fails (CB_ESTAGE, "injected failure on query N") when the query id equals `on_query`,
 * and, independently, fails any query with probability `probability`; otherwise forwards the
 * query unchanged. Defaults: on_query 0, so a bare util.fail fails the first query. When
 * `probability` is given and `on_query` is not, only the random failure applies; -1 disables
 * on_query explicitly.
 *
 * Design: random failures are drawn from a cb_rng seeded by the instance's seed, so the failing
 * query is reproducible for a given seed and worker assignment. `action: error` (default)
 * returns an error, which the runtime reports and which stops the pipeline. `action: kill`
 * sends SIGKILL to the whole process instead, as the OOM killer or a crash would: under a
 * process collocation mode the parent reports the child's death and the other pipelines go on
 * (in threads mode it kills every pipeline: that is what a crash does there).
 *
 * Thread-safety: one instance per worker, rng private to it. Ownership: the query is borrowed.
 */
#include <signal.h>
#include <unistd.h>

#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/util/util.h"

enum { P_ON_QUERY, P_PROBABILITY, P_ACTION, P_COUNT };
enum { ACTION_ERROR, ACTION_KILL };

static const cb_param_def cb_fail_params[P_COUNT] = {
    [P_ON_QUERY] = {"on_query", CB_PARAM_INT, "0", -1, 9.2e18, NULL,
                    "id of the query that fails (-1 = none; not applied when only probability "
                    "is given)"},
    [P_PROBABILITY] = {"probability", CB_PARAM_FLOAT, "0", 0, 1, NULL,
                       "probability that any query fails (0..1)"},
    [P_ACTION] = {"action", CB_PARAM_ENUM, "error", CB_PARAM_UNBOUNDED, "error|kill",
                  "what failing does: return an error, or SIGKILL the whole process (a crash)"},
};

typedef struct cb_fail_state {
    int64_t on_query;
    double probability;
    int action;
    cb_rng rng;
} cb_fail_state;

static int cb_fail_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_fail_state *s = state;
    const cb_param_value *v = args->values;
    s->on_query = v[P_ON_QUERY].i;
    s->probability = v[P_PROBABILITY].f;
    s->action = (int)v[P_ACTION].i;
    if (v[P_PROBABILITY].is_set && !v[P_ON_QUERY].is_set) s->on_query = -1;
    cb_rng_seed(&s->rng, args->seed);
    return CB_OK;
}

static int cb_fail_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_fail_state *s = state;
    int fail = (s->on_query >= 0 && q->id == (uint64_t)s->on_query) ||
               (s->probability > 0 && cb_rng_uniform(&s->rng) < s->probability);
    if (fail && s->action == ACTION_KILL) kill(getpid(), SIGKILL);
    if (s->on_query >= 0 && q->id == (uint64_t)s->on_query)
        return cb_util_error(err, CB_ESTAGE, "injected failure on query %llu",
                             (unsigned long long)q->id);
    if (fail)
        return cb_util_error(err, CB_ESTAGE, "injected failure on query %llu (random, p=%g)",
                             (unsigned long long)q->id, s->probability);
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
