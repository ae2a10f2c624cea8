/* stages/vision/infer.c - vision.infer: image classification of one batch per query.
 *
 * What: the inference side of a serving pipeline: a forward pass of the model over the batch
 * (eval mode: running statistics), the top-1 class of each image. Reports images per query and,
 * when the batch has labels, the batch's accuracy; query.tag carries the first image's class.
 * With `fuse` (default) the executor folds batch norm into the convolutions and fuses ReLU and
 * the residual add, as inference engines do; `fuse: false` runs every layer as written (to
 * measure what fusion buys). `output: logits` replaces the payload with the n x classes float
 * logits for a downstream stage; `batch` (default) passes the batch on.
 *
 * Design and thread-safety: netstage.h. Several workers each hold their own copy of the model
 * (as replicas of a server would). Ownership: with output logits the query's payload is
 * replaced by a new buffer it owns.
 */
#include <string.h>

#include "stages/util/util.h"
#include "stages/vision/netstage.h"

enum { P_FUSE = CB_NP_COMMON, P_OUTPUT, P_COUNT };

static const cb_param_def cb_infer_params[P_COUNT] = {
    CB_NETSTAGE_PARAMS,
    [P_FUSE] = {"fuse", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                "fold batch norm into convolutions and fuse ReLU and residual adds"},
    [P_OUTPUT] = {"output", CB_PARAM_ENUM, "batch", CB_PARAM_UNBOUNDED, "batch|logits",
                  "what the query carries on: the input batch, or the logits (n x classes "
                  "float32)"},
};

enum { M_IMAGES, M_ACCURACY, M_DEVICE_MEM, M_DEVICE_MEM_PLAN, M_COUNT };

static const cb_metric_def cb_infer_metrics[M_COUNT] = {
    [M_IMAGES] = {"images", CB_METRIC_COUNT, "images", "images classified"},
    [M_ACCURACY] = {"accuracy", CB_METRIC_GAUGE, "ratio",
                    "top-1 accuracy of the batch (batches with labels only)"},
    [M_DEVICE_MEM] = CB_NETSTAGE_MEM_METRICS,
};

typedef struct cb_infer_state {
    cb_netstage ns;
    int output_logits;
} cb_infer_state;

static int cb_infer_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_infer_state *s = state;
    int rc = cb_netstage_create(&s->ns, args, 0, err);
    if (rc) return rc;
    s->ns.opts.fuse = (int)args->values[P_FUSE].i;
    s->output_logits = args->values[P_OUTPUT].i == 1;
    return CB_OK;
}

static int cb_infer_prepare(void *state, cb_error *err) {
    cb_infer_state *s = state;
    return cb_netstage_prepare(&s->ns, err);
}

static int cb_infer_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_infer_state *s = state;
    cb_image_batch *b;
    int rc = cb_netstage_batch(&s->ns, q, &b, err);
    if (rc) return rc;
    cb_error e;
    cb_error_clear(&e);
    const float *x = (const float *)(const void *)cb_image_batch_data(b);
    rc = cb_nn_exec_forward(s->ns.exec, x, (int)b->n, s->ns.logits, &e);
    if (rc) return cb_util_error(err, rc, "query %llu: %s", (unsigned long long)q->id, e.msg);
    int k = s->ns.classes;
    const int32_t *labels = cb_image_batch_labels(b);
    int64_t correct = 0, first = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        const float *l = s->ns.logits + (size_t)i * (size_t)k;
        int best = 0;
        for (int c = 1; c < k; c++)
            if (l[c] > l[best]) best = c;
        if (i == 0) first = best;
        correct += best == labels[i];
    }
    q->tag = first;
    s->ns.host->report(ctx, M_IMAGES, (double)b->n);
    cb_netstage_report_device(&s->ns, ctx, M_DEVICE_MEM);
    if (cb_netstage_labels_ok(&s->ns, b))
        s->ns.host->report(ctx, M_ACCURACY, (double)correct / (double)b->n);
    if (s->output_logits) {
        size_t bytes = (size_t)b->n * (size_t)k * sizeof(float);
        cb_buffer *out = s->ns.host->buffer_new(bytes);
        if (!out) return cb_util_error(err, CB_ENOMEM, "out of memory for logits");
        memcpy(out->data, s->ns.logits, bytes);
        s->ns.host->buffer_unref(q->payload);
        q->payload = out;
    }
    return CB_OK;
}

static void cb_infer_destroy(void *state) {
    cb_infer_state *s = state;
    cb_netstage_destroy(&s->ns);
}

const cb_stage_ops cb_stage_vision_infer = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "vision.infer",
    .summary = "image classification of one batch per query (CPU: oneDNN, fused; CUDA: cuDNN/cuBLAS)",
    .params = cb_infer_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_infer_state),
    .create = cb_infer_create,
    .prepare = cb_infer_prepare,
    .run = cb_infer_run,
    .destroy = cb_infer_destroy,
    .metrics = cb_infer_metrics,
    .n_metrics = M_COUNT,
};
