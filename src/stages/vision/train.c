/* stages/vision/train.c - vision.train: one training step of an image classifier per query.
 *
 * What: one query = one batch = one step (forward, softmax cross-entropy, backward, optimizer
 * update) on batches whose split is "train"; batches of any other split (val, test) are
 * evaluated with the current weights and running statistics, without an update, so a pipeline
 * with splits {train: N, val: M} trains and validates each epoch. Per query it reports loss,
 * accuracy (of that batch) and images; query.value carries the loss. The summary shows images/s
 * and the ends of the loss curve.
 *
 * Design: the model and executor (netstage.h) are compiled once; the optimizer state lives in
 * the executor. `save` writes the trained weights (safetensors, torchvision names) at finish,
 * so a later run's vision.infer or vision.eval can load them. A training stage holds one model:
 * more than one worker would train independent copies, so workers must be 1 (use `threads`).
 *
 * Thread-safety: one instance; compute threads are the executor's (`threads`). Ownership: the
 * batch is borrowed; the query keeps its payload.
 */
#include <stdio.h>
#include <string.h>

#include "stages/util/util.h"
#include "stages/vision/netstage.h"

enum {
    P_OPTIMIZER = CB_NP_COMMON, P_LR, P_MOMENTUM, P_WEIGHT_DECAY, P_NESTEROV, P_BETA1, P_BETA2,
    P_EPS, P_SAVE, P_WINOGRAD, P_COUNT
};

static const cb_param_def cb_train_params[P_COUNT] = {
    CB_NETSTAGE_PARAMS,
    [P_OPTIMIZER] = {"optimizer", CB_PARAM_ENUM, "sgd", CB_PARAM_UNBOUNDED, "sgd|adam",
                     "torch.optim.SGD or torch.optim.Adam semantics"},
    [P_LR] = {"lr", CB_PARAM_FLOAT, "0.1", 0, 1e6, NULL, "learning rate"},
    [P_MOMENTUM] = {"momentum", CB_PARAM_FLOAT, "0.9", 0, 1, NULL, "SGD momentum"},
    [P_WEIGHT_DECAY] = {"weight_decay", CB_PARAM_FLOAT, "0.0001", 0, 1e3, NULL,
                        "L2 weight decay added to every gradient"},
    [P_NESTEROV] = {"nesterov", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                    "SGD with Nesterov momentum"},
    [P_BETA1] = {"beta1", CB_PARAM_FLOAT, "0.9", 0, 1, NULL, "Adam first-moment decay"},
    [P_BETA2] = {"beta2", CB_PARAM_FLOAT, "0.999", 0, 1, NULL, "Adam second-moment decay"},
    [P_EPS] = {"eps", CB_PARAM_FLOAT, "1e-8", 0, 1, NULL, "Adam epsilon"},
    [P_SAVE] = {"save", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "out",
                "write the trained weights to this safetensors file at the end (null = no)"},
    [P_WINOGRAD] = {"winograd", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                    "3x3 stride-1 convolutions by Winograd where oneDNN has it (faster, float32 "
                    "error ~5x larger than direct; PyTorch uses direct)"},
};

enum { M_LOSS, M_ACCURACY, M_IMAGES, M_DEVICE_MEM, M_DEVICE_MEM_PLAN, M_LOSS_SCALE, M_SKIPPED, M_COUNT };

static const cb_metric_def cb_train_metrics[M_COUNT] = {
    [M_LOSS] = {"loss", CB_METRIC_GAUGE, "", "mean cross-entropy of the batch"},
    [M_ACCURACY] = {"accuracy", CB_METRIC_GAUGE, "ratio", "top-1 accuracy of the batch"},
    [M_IMAGES] = {"images", CB_METRIC_COUNT, "images", "images processed"},
    [M_DEVICE_MEM] = CB_NETSTAGE_MEM_METRICS,
    [M_LOSS_SCALE] = {"loss_scale", CB_METRIC_GAUGE, "",
                      "GradScaler's loss scale after the step (fp16 on CUDA only)"},
    [M_SKIPPED] = {"skipped_step", CB_METRIC_COUNT, "steps",
                   "1 for a step GradScaler skipped (inf/NaN gradients: no update); fp16 only"},
};

typedef struct cb_train_state {
    cb_netstage ns;
    int64_t skipped;               /* GradScaler's skipped steps reported so far */
    const char *save;
    int64_t steps;
} cb_train_state;

/* What the table cannot say: one worker, nesterov's needs (refused when the config is loaded). */
static int cb_train_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    if (args->workers > 1)
        return cb_util_error(err, CB_ECONFIG, "workers: a training stage holds one model, so it "
                             "runs one worker (got %d); use threads to give it more cores",
                             args->workers);
    if (v[P_NESTEROV].i && (v[P_OPTIMIZER].i != 0 || !(v[P_MOMENTUM].f > 0)))
        return cb_util_error(err, CB_ECONFIG, "nesterov: needs optimizer sgd and momentum > 0");
    return CB_OK;
}

static int cb_train_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_train_state *s = state;
    const cb_param_value *v = args->values;
    int rc = cb_train_check(args, err);
    if (rc) return rc;
    rc = cb_netstage_create(&s->ns, args, 1, err);
    if (rc) return rc;
    cb_nn_optim *o = &s->ns.opts.optim;
    o->kind = v[P_OPTIMIZER].i == 1 ? CB_NN_ADAM : CB_NN_SGD;
    o->lr = v[P_LR].f;
    o->momentum = v[P_MOMENTUM].f;
    o->weight_decay = v[P_WEIGHT_DECAY].f;
    o->nesterov = (int)v[P_NESTEROV].i;
    o->beta1 = v[P_BETA1].f;
    o->beta2 = v[P_BETA2].f;
    o->eps = v[P_EPS].f;
    s->save = v[P_SAVE].has_value && v[P_SAVE].s[0] ? v[P_SAVE].s : NULL;
    s->ns.opts.winograd = (int)v[P_WINOGRAD].i;
    return CB_OK;
}

static int cb_train_prepare(void *state, cb_error *err) {
    cb_train_state *s = state;
    return cb_netstage_prepare(&s->ns, err);
}

static int cb_train_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_train_state *s = state;
    cb_image_batch *b;
    int rc = cb_netstage_batch(&s->ns, q, &b, err);
    if (rc) return rc;
    const float *x = (const float *)(const void *)cb_image_batch_data(b);
    const int32_t *labels = cb_image_batch_labels(b);
    cb_nn_result r = {0};
    cb_error e;
    cb_error_clear(&e);
    if (strcmp(b->split_name, "train") == 0 || b->split_name[0] == '\0') {
        rc = cb_nn_exec_train_step(s->ns.exec, x, labels, (int)b->n, &r, &e);
        s->steps++;
    } else {
        rc = cb_nn_exec_eval(s->ns.exec, x, labels, (int)b->n, &r, &e);
    }
    if (rc) return cb_util_error(err, rc, "query %llu: %s", (unsigned long long)q->id, e.msg);
    q->value = r.loss;
    s->ns.host->report(ctx, M_LOSS, r.loss);
    s->ns.host->report(ctx, M_ACCURACY, (double)r.correct / (double)b->n);
    s->ns.host->report(ctx, M_IMAGES, (double)b->n);
    cb_netstage_report_device(&s->ns, ctx, M_DEVICE_MEM);
    cb_nn_exec_stats st;
    cb_nn_exec_get_stats(s->ns.exec, &st);
    if (st.loss_scale > 0) {
        s->ns.host->report(ctx, M_LOSS_SCALE, st.loss_scale);
        s->ns.host->report(ctx, M_SKIPPED, (double)(st.skipped_steps - s->skipped));
        s->skipped = st.skipped_steps;
    }
    return CB_OK;
}

static void cb_train_finish(void *state) {
    cb_train_state *s = state;
    if (!s->save || !s->ns.exec) return;
    cb_error e;
    cb_error_clear(&e);
    char line[1024];
    if (cb_nn_exec_sync(s->ns.exec, &e) || cb_nn_model_save(s->ns.model, s->save, &e)) {
        snprintf(line, sizeof line, "cannot save weights to %s: %s", s->save, e.msg);
        s->ns.host->log(CB_LOG_ERROR, s->ns.stage, line);
        return;
    }
    snprintf(line, sizeof line, "saved weights after %lld steps to %s", (long long)s->steps,
             s->save);
    s->ns.host->log(CB_LOG_INFO, s->ns.stage, line);
}

static void cb_train_destroy(void *state) {
    cb_train_state *s = state;
    cb_netstage_destroy(&s->ns);
}

const cb_stage_ops cb_stage_vision_train = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "vision.train",
    .summary = "one training step of an image classifier per batch (CPU: oneDNN; CUDA: cuDNN/cuBLAS)",
    .params = cb_train_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_train_state),
    .create = cb_train_create,
    .prepare = cb_train_prepare,
    .run = cb_train_run,
    .finish = cb_train_finish,
    .destroy = cb_train_destroy,
    .metrics = cb_train_metrics,
    .n_metrics = M_COUNT,
    .check = cb_train_check,
};
