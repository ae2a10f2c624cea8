/* nn/exec.c - executors: pick the backend for a device and time every call.
 *
 * The common layer validates what every backend would (batch, n, labels pointer) so backends
 * only do their own work, and keeps the call statistics (wall time per call; backends add the
 * time inside their primitives when opts.profile is set).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "gpu/cuda.h"
#include "nn/nn.h"

static const char *const cb__precision_names[] = {"fp32", "tf32", "bf16", "fp16"};

int cb_nn_precision_parse(const char *s, cb_nn_precision *out) {
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, cb__precision_names[i]) == 0) {
            *out = (cb_nn_precision)i;
            return CB_OK;
        }
    return CB_EINVAL;
}

const char *cb_nn_precision_name(cb_nn_precision p) {
    return (unsigned)p < 4 ? cb__precision_names[p] : "?";
}

int cb_nn_exec_new(cb_nn_model *m, const cb_nn_exec_opts *opts, cb_nn_exec **out, cb_error *err) {
    *out = NULL;
    if (!m || !opts) return cb_error_set(err, CB_EINVAL, "no model or options");
    if (opts->batch < 1) return cb_error_set(err, CB_EINVAL, "batch must be >= 1, got %d", opts->batch);
    if (m->output <= 0 || m->output >= m->n_nodes || m->nodes[m->output].h != 1 ||
        m->nodes[m->output].w != 1)
        return cb_error_set(err, CB_EINVAL, "model %s has no flat output node", m->arch);
    const char *dev = opts->device && opts->device[0] ? opts->device : "cpu";
    if ((unsigned)opts->precision > CB_NN_FP16)
        return cb_error_set(err, CB_EINVAL, "unknown precision %d", (int)opts->precision);
    if ((unsigned)opts->gpu_wait > CB_GPU_WAIT_YIELD)
        return cb_error_set(err, CB_EINVAL, "unknown gpu_wait %d", (int)opts->gpu_wait);
    const cb_nn_backend *be = NULL;
    int index = -1;
    cb_cuda *cuda = NULL;
    if (strcmp(dev, "cpu") == 0) {
        be = &cb_nn_backend_cpu;
        if (opts->precision != CB_NN_FP32)
            return cb_error_set(err, CB_EUNSUPPORTED, "precision %s needs a cuda device (the CPU "
                                "backend computes fp32)", cb_nn_precision_name(opts->precision));
    } else if (strncmp(dev, "cuda:", 5) == 0) {
        int rc = cb_cuda_parse_device(dev, &index, err);
        if (rc) return rc;
        cuda = cb_calloc(1, sizeof *cuda);
        if (!cuda) return cb_error_set(err, CB_ENOMEM, "out of memory");
        rc = cb_cuda_open_device(cuda, index, err);
        if (rc) {
            cb_free(cuda);
            cb_error_prefix(err, "device %s", dev);
            return rc;
        }
        be = cuda->api->nn;
    } else {
        return cb_error_set(err, CB_EINVAL, "unknown device \"%s\" (expected cpu or cuda:N)", dev);
    }
    cb_nn_exec *e = cb_calloc(1, sizeof *e);
    if (!e) {
        if (cuda) {
            cb_cuda_close(cuda);
            cb_free(cuda);
        }
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    e->module = cuda;
    e->model = m;
    e->opts = *opts;
    e->opts.device = NULL; /* not kept: the caller's string may not outlive the executor */
    e->backend = be;
    e->device_index = index;
    int rc = be->create(e, err);
    if (rc) {
        cb_nn_exec_free(e);
        return rc;
    }
    *out = e;
    return CB_OK;
}

void cb_nn_exec_free(cb_nn_exec *e) {
    if (!e) return;
    e->backend->destroy(e);
    if (e->module) {
        cb_cuda_close(e->module);
        cb_free(e->module);
    }
    cb_free(e);
}

static int cb__check_n(const cb_nn_exec *e, const float *x, int n, cb_error *err) {
    if (!x) return cb_error_set(err, CB_EINVAL, "no input");
    if (n < 1 || n > e->opts.batch)
        return cb_error_set(err, CB_EINVAL, "%d images in a call to an executor of batch %d", n,
                            e->opts.batch);
    return CB_OK;
}

static int cb__check_labels(const cb_nn_exec *e, const int32_t *labels, int n, cb_error *err) {
    if (!labels) return cb_error_set(err, CB_EINVAL, "no labels");
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= e->model->classes)
            return cb_error_set(err, CB_EINVAL, "label %d of image %d is outside [0, %d)",
                                (int)labels[i], i, e->model->classes);
    return CB_OK;
}

static void cb__count(cb_nn_exec *e, int64_t t0) {
    e->stats.calls++;
    e->stats.total_ns += cb_clock_now_ns() - t0;
}

int cb_nn_exec_forward(cb_nn_exec *e, const float *x, int n, float *logits, cb_error *err) {
    int rc = cb__check_n(e, x, n, err);
    if (rc) return rc;
    int64_t t0 = cb_clock_now_ns();
    rc = e->backend->forward(e, x, n, logits, err);
    cb__count(e, t0);
    return rc;
}

int cb_nn_exec_eval(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                    cb_nn_result *r, cb_error *err) {
    int rc = cb__check_n(e, x, n, err);
    if (!rc) rc = cb__check_labels(e, labels, n, err);
    if (rc) return rc;
    int64_t t0 = cb_clock_now_ns();
    rc = e->backend->eval(e, x, labels, n, r, err);
    cb__count(e, t0);
    return rc;
}

int cb_nn_exec_train_step(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                          cb_nn_result *r, cb_error *err) {
    if (!e->opts.train)
        return cb_error_set(err, CB_EINVAL, "train step on an inference executor");
    int rc = cb__check_n(e, x, n, err);
    if (!rc) rc = cb__check_labels(e, labels, n, err);
    if (rc) return rc;
    int64_t t0 = cb_clock_now_ns();
    rc = e->backend->train_step(e, x, labels, n, r, err);
    cb__count(e, t0);
    return rc;
}

int cb_nn_exec_sync(cb_nn_exec *e, cb_error *err) { return e->backend->sync(e, err); }

int cb_nn_exec_grad(cb_nn_exec *e, const char *param, float *out, size_t count, cb_error *err) {
    if (!e->opts.train) return cb_error_set(err, CB_EINVAL, "gradients need a training executor");
    return e->backend->grad(e, param, out, count, err);
}

void cb_nn_exec_get_stats(const cb_nn_exec *e, cb_nn_exec_stats *out) { *out = e->stats; }
