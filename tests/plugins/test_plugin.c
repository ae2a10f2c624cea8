/* tests/plugins/test_plugin.c - a plugin for the integrity tests (test_integrity.c), built as
 * build/tests/plugins/test_plugin.so.
 *
 * - Its constructor creates the file named by $CB_TEST_CTOR_MARKER (when set): the proof that
 *   the object was loaded (dlopen runs constructors), so a test can check that `colobench
 *   validate` without --allow-plugins loads nothing.
 * - `test.stuck`: a stage whose run() blocks in nanosleep for `seconds` and ignores
 *   cancellation (it never calls host->wait_until or host->cancelled): what a plugin stuck in a
 *   driver call looks like. The runtime must give up on its thread, write what was recorded and
 *   end the run.
 * Links nothing of colobench, like any plugin.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <colobench/stage.h>

__attribute__((constructor)) static void mark_loaded(void) {
    const char *path = getenv("CB_TEST_CTOR_MARKER");
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
}

enum { P_SECONDS, P_COUNT };

static const cb_param_def stuck_params[P_COUNT] = {
    [P_SECONDS] = {"seconds", CB_PARAM_FLOAT, "3600", 0, 86400, NULL,
                   "how long run() blocks, ignoring cancellation"},
};

typedef struct stuck_state {
    double seconds;
} stuck_state;

static int stuck_create(void *state, const cb_stage_args *args, cb_error *err) {
    (void)err;
    ((stuck_state *)state)->seconds = args->values[P_SECONDS].f;
    return CB_OK;
}

static int stuck_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    (void)q;
    (void)ctx;
    (void)err;
    double s = ((stuck_state *)state)->seconds;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
    return CB_OK;
}

static const cb_stage_ops stuck_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.stuck",
    .summary = "blocks in run() for a long time and ignores cancellation (tests)",
    .params = stuck_params,
    .n_params = P_COUNT,
    .state_size = sizeof(stuck_state),
    .create = stuck_create,
    .run = stuck_run,
};

static const cb_stage_ops *const stages[] = {&stuck_ops};

const cb_plugin cb_plugin_entry = {CB_STAGE_ABI_MAJOR, sizeof(cb_plugin), "test", 1, stages};
