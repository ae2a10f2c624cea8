/* stages/util/copy.c - util.copy: copies the payload into a new buffer.
 *
 * What: models a stage that materialises its input (decode, collate, host-to-host staging):
 * one allocation and one memcpy per query, a memory-bandwidth load. The new buffer has `bytes`
 * bytes, or the input's size when `bytes` is 0. A larger output repeats the input to fill it;
 * a smaller one takes the input's first bytes. A query without payload (or with an empty one)
 * gets a zero-filled buffer of `bytes`.
 *
 * Design: the copy is always a fresh buffer, even when the input is not shared, because the
 * copy is the work being modelled (buffer_make_writable would skip it for a private buffer).
 * Only host memory is copied: a device payload fails the query with CB_EUNSUPPORTED.
 *
 * Thread-safety: one instance per worker, no shared state; the input buffer is only read, which
 * is safe while other queries hold references to it. Ownership: the query's reference to the old
 * payload is released after the copy; the query owns the one reference to the new buffer. After
 * a merge only `payload` is replaced; `parts` keep their own references.
 */
#include <string.h>

#include "colobench/stage.h"
#include "stages/util/util.h"

enum { P_BYTES, P_COUNT };

static const cb_param_def cb_copy_params[P_COUNT] = {
    [P_BYTES] = {"bytes", CB_PARAM_INT, "0", 0, 1073741824.0, NULL,
                 "size of the copy in bytes (0 = same as the input)"},
};

typedef struct cb_copy_state {
    const cb_host *host;
    size_t bytes;
} cb_copy_state;

static int cb_copy_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_copy_state *s = state;
    s->host = args->host;
    s->bytes = (size_t)args->values[P_BYTES].i;
    return CB_OK;
}

static int cb_copy_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_copy_state *s = state;
    if (q->payload && q->payload->kind == CB_BUFFER_DEVICE)
        return cb_util_error(err, CB_EUNSUPPORTED, "cannot copy a device payload");
    size_t in = q->payload ? q->payload->size_bytes : 0;
    size_t out = s->bytes ? s->bytes : in;
    cb_buffer *b = s->host->buffer_new(out);
    if (!b) return cb_util_error(err, CB_ENOMEM, "cannot allocate %zu bytes", out);
    unsigned char *d = b->data;
    size_t done = 0;
    while (in > 0 && done < out) {
        size_t n = out - done < in ? out - done : in;
        memcpy(d + done, q->payload->data, n);
        done += n;
    }
    memset(d + done, 0, out - done);
    s->host->buffer_unref(q->payload);
    q->payload = b;
    return CB_OK;
}

const cb_stage_ops cb_stage_util_copy = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.copy",
    .summary = "copies the payload into a new buffer (memory-bandwidth load)",
    .params = cb_copy_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_copy_state),
    .create = cb_copy_create,
    .run = cb_copy_run,
};
