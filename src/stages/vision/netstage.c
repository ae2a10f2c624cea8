/* stages/vision/netstage.c - model setup shared by the vision.* model stages (netstage.h).
 *
 * Design: the model and its executor are compiled once (prepare, or the first batch when the
 * input shape comes from the data) and reused by every query; nothing is allocated per query.
 * Errors name the stage's weights file or the batch that does not fit.
 */
#include "stages/vision/netstage.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "stages/util/util.h"

int cb_netstage_create(cb_netstage *ns, const cb_stage_args *args, int train, cb_error *err) {
    const cb_param_value *v = args->values;
    ns->host = args->host;
    ns->stage = args->stage;
    ns->arch = (int)v[CB_NP_MODEL].i;
    ns->arch_name = v[CB_NP_MODEL].s;
    ns->classes = (int)v[CB_NP_CLASSES].i;
    if (v[CB_NP_SHAPE].has_value) {
        if (v[CB_NP_SHAPE].n != 3)
            return cb_util_error(err, CB_ECONFIG, "shape: expected [C, H, W], got %zu numbers",
                                 v[CB_NP_SHAPE].n);
        ns->c = (int)v[CB_NP_SHAPE].ints[0];
        ns->h = (int)v[CB_NP_SHAPE].ints[1];
        ns->w = (int)v[CB_NP_SHAPE].ints[2];
    }
    ns->weights = v[CB_NP_WEIGHTS].has_value && v[CB_NP_WEIGHTS].s[0] ? v[CB_NP_WEIGHTS].s : NULL;
    ns->seed = v[CB_NP_SEED].i >= 0 ? (uint64_t)v[CB_NP_SEED].i : args->seed;
    int own = 0;
    const char *dev = cb_util_stage_device(args, &v[CB_NP_DEVICE], &own);
    snprintf(ns->device, sizeof ns->device, "%s", dev ? dev : "cpu");
    if (strcmp(ns->device, "cpu") != 0 && strncmp(ns->device, "cuda:", 5) != 0)
        return cb_util_error(err, CB_ECONFIG, "device: expected cpu or cuda:N, got \"%s\"",
                             ns->device);
    cb_nn_precision prec = CB_NN_FP32;
    if (cb_nn_precision_parse(v[CB_NP_PRECISION].s, &prec) != 0)
        return cb_util_error(err, CB_ECONFIG, "precision: expected %s, got \"%s\"",
                             CB_NN_PRECISIONS, v[CB_NP_PRECISION].s);
    if (prec != CB_NN_FP32 && strcmp(ns->device, "cpu") == 0)
        return cb_util_error(err, CB_ECONFIG, "precision: %s needs a CUDA device (device: cuda:N);"
                             " the CPU backend computes fp32", v[CB_NP_PRECISION].s);
    ns->opts.precision = prec;
    ns->opts.cudnn_benchmark = (int)v[CB_NP_CUDNN_BENCHMARK].i;
    if (cb_gpu_wait_parse(v[CB_NP_GPU_WAIT].s, &ns->opts.gpu_wait) != 0)
        return cb_util_error(err, CB_ECONFIG, "gpu_wait: expected %s, got \"%s\"", CB_GPU_WAITS,
                             v[CB_NP_GPU_WAIT].s);
    ns->opts.batch = (int)v[CB_NP_BATCH_SIZE].i;
    ns->opts.threads = (int)v[CB_NP_THREADS].i;
    ns->opts.train = train;
    ns->opts.fuse = 1;
    ns->opts.device = ns->device;
    return CB_OK;
}

static int cb__build(cb_netstage *ns, cb_error *err) {
    int rc = cb_nn_model_build(ns->arch_name, ns->classes, ns->c, ns->h, ns->w, &ns->model, err);
    if (rc) return rc;
    if (ns->weights) {
        rc = cb_nn_model_load(ns->model, ns->weights, 0, err);
        if (rc) return rc;
    } else {
        cb_nn_model_init(ns->model, ns->seed);
    }
    rc = cb_nn_exec_new(ns->model, &ns->opts, &ns->exec, err);
    if (rc) return rc;
    ns->logits = ns->host->alloc((size_t)ns->opts.batch * (size_t)ns->classes * sizeof(float));
    if (!ns->logits) return cb_util_error(err, CB_ENOMEM, "out of memory for logits");
    return CB_OK;
}

int cb_netstage_prepare(cb_netstage *ns, cb_error *err) {
    if (ns->model || ns->classes < 1 || ns->c < 1) return CB_OK;
    return cb__build(ns, err);
}

int cb_netstage_batch(cb_netstage *ns, const cb_query *q, cb_image_batch **out, cb_error *err) {
    const char *why = NULL;
    if (cb_image_batch_check(q->payload, &why))
        return cb_util_error(err, CB_EINVAL, "query %llu: %s (a model stage takes image batches "
                             "from a data.* stage)", (unsigned long long)q->id, why);
    cb_image_batch *b = q->payload->data;
    if (b->layout != CB_BATCH_F32_NCHW)
        return cb_util_error(err, CB_EINVAL,
                             "query %llu: the batch holds %s images; a model takes float NCHW "
                             "batches: put vision.preprocess before this stage",
                             (unsigned long long)q->id,
                             b->layout == CB_BATCH_ENCODED ? "encoded" : "8-bit HWC");
    if (b->n < 1 || b->n > (uint32_t)ns->opts.batch)
        return cb_util_error(err, CB_EINVAL, "query %llu: batch of %u images, batch_size is %d",
                             (unsigned long long)q->id, b->n, ns->opts.batch);
    if (!ns->model) {
        if (ns->c < 1) {
            ns->c = (int)b->c;
            ns->h = (int)b->h;
            ns->w = (int)b->w;
        }
        if (ns->classes < 1) ns->classes = (int)b->classes;
        if (ns->classes < 1)
            return cb_util_error(err, CB_ECONFIG, "classes: the data does not say how many "
                                 "classes it has; set classes");
        int rc = cb__build(ns, err);
        if (rc) return rc;
    }
    if ((int)b->c != ns->c || (int)b->h != ns->h || (int)b->w != ns->w)
        return cb_util_error(err, CB_EINVAL, "query %llu: batch of [%u, %u, %u] images, the model "
                             "takes [%d, %d, %d]", (unsigned long long)q->id, b->c, b->h, b->w,
                             ns->c, ns->h, ns->w);
    *out = b;
    return CB_OK;
}

int cb_netstage_labels_ok(const cb_netstage *ns, cb_image_batch *b) {
    const int32_t *l = cb_image_batch_labels(b);
    for (uint32_t i = 0; i < b->n; i++)
        if (l[i] < 0 || l[i] >= ns->classes) return 0;
    return 1;
}

void cb_netstage_report_device(cb_netstage *ns, cb_run_ctx *ctx, int mem_metric) {
    if (!ns->exec || ns->exec->device_index < 0) return;
    cb_nn_exec_stats st;
    cb_nn_exec_get_stats(ns->exec, &st);
    ns->host->report(ctx, mem_metric, (double)st.device_mem_peak_bytes);
    ns->host->report(ctx, mem_metric + 1, (double)st.device_mem_plan_peak_bytes);
    int (*device_time)(cb_run_ctx *, int64_t) = cb_util_host_device_time(ns->host);
    if (device_time) device_time(ctx, st.last_device_ns);
}

void cb_netstage_destroy(cb_netstage *ns) {
    cb_nn_exec_free(ns->exec);
    cb_nn_model_free(ns->model);
    if (ns->host) ns->host->free(ns->logits);
    ns->exec = NULL;
    ns->model = NULL;
    ns->logits = NULL;
}
