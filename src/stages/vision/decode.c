/* stages/vision/decode.c - vision.decode: ENCODED image batches to decoded 8-bit RGB (U8_HWC).
 *
 * What: decodes every JPEG/PNG of an ENCODED batch (data.images with `decode: false`) into a new
 * U8_HWC batch, so decoding shows as its own stage in the timing breakdown and can get its own
 * workers. Grayscale, palette and alpha images become 3-channel RGB. A corrupt or truncated
 * image fails the query with the image's path and the decoder's message (image.h).
 *
 * Design: a thin stage over cb__image_decode_batch (image.c), the same code data.images runs
 * with `decode: true`. No parameters.
 *
 * Thread-safety: stateless apart from the host pointer; instances run in parallel.
 * Ownership: the query's ENCODED payload is released and replaced by the decoded batch; on
 * error the query keeps its payload.
 */
#include "colobench/stage.h"
#include "stages/util/util.h"
#include "stages/vision/batch.h"
#include "stages/vision/image.h"

typedef struct cb_decode_state {
    const cb_host *host;
} cb_decode_state;

static int cb_decode_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_decode_state *s = state;
    s->host = args->host;
    return CB_OK;
}

static int cb_decode_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_decode_state *s = state;
    const char *why = NULL;
    if (cb_image_batch_check(q->payload, &why) != 0)
        return cb_util_error(err, CB_EINVAL, "input is not a valid image batch: %s", why);
    const cb_image_batch *b = q->payload->data;
    if (b->layout != CB_BATCH_ENCODED)
        return cb_util_error(err, CB_EINVAL,
                             "input is a %s batch, but vision.decode takes ENCODED file bytes: "
                             "use data.images with decode: false before it (or drop this stage)",
                             cb_image_batch_layout_name(b->layout));
    cb_buffer *out = NULL;
    int rc = cb__image_decode_batch(s->host, q->payload, &out, err);
    if (rc) return rc;
    s->host->buffer_unref(q->payload);
    q->payload = out;
    return CB_OK;
}

const cb_stage_ops cb_stage_vision_decode = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "vision.decode",
    .summary = "decodes JPEG/PNG file bytes (data.images decode: false) to 8-bit RGB images",
    .params = NULL,
    .n_params = 0,
    .state_size = sizeof(cb_decode_state),
    .create = cb_decode_create,
    .run = cb_decode_run,
};
