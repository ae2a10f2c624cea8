/* stages/vision/eval.c - vision.eval: accuracy of a model over the batches it is given.
 *
 * What: evaluates a model (a `weights` file, typically saved by vision.train's `save`, or a
 * random initialization) on labelled batches: per query the batch's loss, accuracy and images;
 * at the end it logs the accuracy and mean loss over every image it saw, and per split in the
 * summary's by_split. Give it the validation split (e.g. data.cifar's test_batch.bin) to measure
 * what a training run reached.
 *
 * Design and thread-safety: netstage.h (eval mode: running statistics, no fusion, so the
 * numbers are those of the trained graph as written). Each worker keeps its own totals and logs
 * them at finish. Ownership: the batch is borrowed.
 */
#include <stdio.h>

#include "stages/util/util.h"
#include "stages/vision/netstage.h"

enum { P_COUNT = CB_NP_COMMON };

static const cb_param_def cb_eval_params[P_COUNT] = {CB_NETSTAGE_PARAMS};

enum { M_LOSS, M_ACCURACY, M_IMAGES, M_DEVICE_MEM, M_DEVICE_MEM_PLAN, M_COUNT };

static const cb_metric_def cb_eval_metrics[M_COUNT] = {
    [M_LOSS] = {"loss", CB_METRIC_GAUGE, "", "mean cross-entropy of the batch"},
    [M_ACCURACY] = {"accuracy", CB_METRIC_GAUGE, "ratio", "top-1 accuracy of the batch"},
    [M_IMAGES] = {"images", CB_METRIC_COUNT, "images", "images evaluated"},
    [M_DEVICE_MEM] = CB_NETSTAGE_MEM_METRICS,
};

typedef struct cb_eval_state {
    cb_netstage ns;
    int64_t images, correct;
    double loss_sum;
} cb_eval_state;

static int cb_eval_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_eval_state *s = state;
    int rc = cb_netstage_create(&s->ns, args, 0, err);
    s->ns.opts.fuse = 0;
    return rc;
}

static int cb_eval_prepare(void *state, cb_error *err) {
    cb_eval_state *s = state;
    return cb_netstage_prepare(&s->ns, err);
}

static int cb_eval_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_eval_state *s = state;
    cb_image_batch *b;
    int rc = cb_netstage_batch(&s->ns, q, &b, err);
    if (rc) return rc;
    cb_nn_result r = {0};
    cb_error e;
    cb_error_clear(&e);
    rc = cb_nn_exec_eval(s->ns.exec, (const float *)(const void *)cb_image_batch_data(b),
                         cb_image_batch_labels(b), (int)b->n, &r, &e);
    if (rc) return cb_util_error(err, rc, "query %llu: %s", (unsigned long long)q->id, e.msg);
    s->images += b->n;
    s->correct += r.correct;
    s->loss_sum += r.loss * b->n;
    q->value = (double)r.correct / (double)b->n;
    s->ns.host->report(ctx, M_LOSS, r.loss);
    s->ns.host->report(ctx, M_ACCURACY, (double)r.correct / (double)b->n);
    s->ns.host->report(ctx, M_IMAGES, (double)b->n);
    cb_netstage_report_device(&s->ns, ctx, M_DEVICE_MEM);
    return CB_OK;
}

static void cb_eval_finish(void *state) {
    cb_eval_state *s = state;
    if (s->images == 0) return;
    char line[256];
    snprintf(line, sizeof line, "accuracy %.4f (%lld of %lld images), mean loss %.4f",
             (double)s->correct / (double)s->images, (long long)s->correct,
             (long long)s->images, s->loss_sum / (double)s->images);
    s->ns.host->log(CB_LOG_INFO, s->ns.stage, line);
}

static void cb_eval_destroy(void *state) {
    cb_eval_state *s = state;
    cb_netstage_destroy(&s->ns);
}

const cb_stage_ops cb_stage_vision_eval = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "vision.eval",
    .summary = "accuracy and loss of a model over labelled batches",
    .params = cb_eval_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_eval_state),
    .create = cb_eval_create,
    .prepare = cb_eval_prepare,
    .run = cb_eval_run,
    .finish = cb_eval_finish,
    .destroy = cb_eval_destroy,
    .metrics = cb_eval_metrics,
    .n_metrics = M_COUNT,
};
