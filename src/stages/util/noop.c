/* stages/util/noop.c - util.noop: forwards every query unchanged. The template stage.
 *
 * What: the smallest complete stage. It forwards each query as is, so a pipeline made of noops
 * measures the runtime's own overhead (hand-off, queues, timing), like MLPerf's null SUT. With
 * `log_summary: true` it logs, per instance, how many queries it forwarded.
 *
 * How to write a stage (copy this file; every step below is in the code, in this order):
 *   1. Name the parameter indices with an enum (P_*, ending in P_COUNT) and declare the
 *      parameters in a cb_param_def table indexed by it: key, type, default (YAML text), bounds
 *      (min, max; CB_PARAM_UNBOUNDED for none), choices (enums), and a one-line doc WITH the
 *      unit. The host validates the config against this table before create is called, fills
 *      defaults and prints it for `colobench stages`: create never sees a bad value, so do not
 *      re-check types or bounds; check only what the table cannot express (relations between
 *      parameters, the number of outputs).
 *   2. Put everything an instance needs into a state struct. The host allocates state_size
 *      zeroed bytes per instance (one per worker) and frees them; never use file-level
 *      variables (two pipelines, or two tests, share the process).
 *   3. create(state, args, err): copy what you need out of args. args->host, args->values and
 *      the name strings live as long as the instance; the args struct itself does not. Each
 *      instance gets its own args->seed: seed your cb_rng from it, never from the time. On
 *      failure return a negative CB_E* code with a message (cb_util_error); destroy() is
 *      still called, so leave the state consistent.
 *   4. prepare(state, err), optional: heavy, untimed setup (loading a model, calibrating).
 *   5. run(state, q, ctx, err): one query. Return CB_OK to forward q to every output; call
 *      host->emit(ctx, i, q) to choose outputs yourself (then return CB_OK; nothing more is
 *      forwarded); return CB_RUN_DROP to end the query here; return a negative CB_E* code with
 *      a message to fail the pipeline. If you replace q->payload, unref the old one first: the
 *      query owns exactly one reference. If you write into a payload you did not create, call
 *      host->buffer_make_writable(&q->payload) first (it copies only when it is shared).
 *      To report a figure per query (loss, images), declare it in a cb_metric_def table
 *      (ops->metrics) and call host->report(ctx, index, value) here (util.source does).
 *   6. finish(state), optional: after the instance's last query (flush, log a summary).
 *   7. destroy(state), optional: release what create/prepare acquired; must be safe on a state
 *      whose create failed half-way (it is zeroed before create).
 *   8. Fill a `const cb_stage_ops` with abi_major = CB_STAGE_ABI_MAJOR and struct_size =
 *      sizeof(cb_stage_ops). A built-in adds its symbol to src/stages/builtin.def; a plugin
 *      lists it in its cb_plugin_entry (see examples/plugins/example_plugin.c).
 *   9. Reach the host only through args->host (buffers, clock, emit, log), never through
 *      colobench's internal functions: then the same file works as a plugin.
 *  10. Test it by calling the ops directly (tests/test_stages.c shows a test host).
 *
 * Thread-safety: one instance per worker; run() of one instance is never called concurrently,
 * so the counter below needs no atomics. Ownership: the query is borrowed for the call.
 */
#include <stdio.h>

#include "colobench/stage.h"

/* Step 1: parameter indices and table. */
enum { P_LOG_SUMMARY, P_COUNT };

static const cb_param_def cb_noop_params[P_COUNT] = {
    [P_LOG_SUMMARY] = {"log_summary", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                       "log the number of forwarded queries per worker at the end (flag)"},
};

/* Step 2: per-instance state. */
typedef struct cb_noop_state {
    const cb_host *host;
    const char *stage;     /* borrowed from args, lives as long as the instance */
    int worker;
    int log_summary;
    uint64_t queries;      /* forwarded so far */
} cb_noop_state;

/* Step 3. */
static int cb_noop_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_noop_state *s = state;
    s->host = args->host;
    s->stage = args->stage;
    s->worker = args->worker;
    s->log_summary = (int)args->values[P_LOG_SUMMARY].i;
    return CB_OK;
}

/* Step 5: returning CB_OK without emit forwards the query to every output. */
static int cb_noop_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_noop_state *s = state;
    s->queries++;
    return CB_OK;
}

/* Step 6: the host's log sink takes a complete line; formatting happens off the hot path. */
static void cb_noop_finish(void *state) {
    cb_noop_state *s = state;
    if (!s->log_summary || !s->host->log) return;
    char line[128];
    snprintf(line, sizeof line, "worker %d forwarded %llu queries", s->worker,
             (unsigned long long)s->queries);
    s->host->log(CB_LOG_INFO, s->stage, line);
}

/* Step 8 (no prepare/destroy: nothing to set up or release). */
const cb_stage_ops cb_stage_util_noop = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.noop",
    .summary = "forwards each query unchanged (measures the runtime's own overhead)",
    .params = cb_noop_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_noop_state),
    .create = cb_noop_create,
    .run = cb_noop_run,
    .finish = cb_noop_finish,
};
