/* stages/util/gpu_copy.c - util.gpu_copy: one host/device copy of a fixed size per query.
 *
 * What: models the data movement of a GPU pipeline (input upload, result download, device
 * staging) to measure PCIe/NVLink or HBM bandwidth alone or under collocation. Each query does
 * one copy of `bytes` in `direction` (h2d, d2h, d2d), from pinned host memory (the default) or
 * pageable memory, on the stage's own non-blocking stream, waits for it as `gpu_wait` says
 * (block: the thread sleeps; spin, yield: it polls), and reports its event-timed device time
 * through host->device_time and the bytes moved as the metric `bytes` (COUNT: summary.json
 * gives the sum and bytes per second over the pipeline's window). The device-side bandwidth of
 * a run is bytes / device_ns.
 *
 * Design: buffers, stream and events are made once in prepare() (src/cuda/copy.c), before the
 * start barrier; on a machine without a GPU the run fails there with the loader's message. Each
 * worker instance has its own module reference, buffers and stream; destroy() releases them.
 * The query's payload is not touched: the copy is synthetic.
 *
 * Thread-safety: one instance per worker, all state private. Ownership: the query is borrowed
 * and not changed.
 */
#include <stddef.h>

#include "colobench/stage.h"
#include "stages/util/gpu.h"
#include "stages/util/util.h"

#define CB_GPU_COPY "util.gpu_copy"

enum { P_BYTES, P_DIRECTION, P_PINNED, P_DEVICE, P_GPU_WAIT, P_COUNT };

static const cb_param_def cb_gpu_copy_params[P_COUNT] = {
    [P_BYTES] = {"bytes", CB_PARAM_INT, "67108864", 1, 68719476736.0, NULL,
                 "size of each copy in bytes"},
    /* the choice indices are cb_cuda_copy_dir values */
    [P_DIRECTION] = {"direction", CB_PARAM_ENUM, "h2d", CB_PARAM_UNBOUNDED, "h2d|d2h|d2d",
                     "h2d: host to device; d2h: device to host; d2d: within the device"},
    [P_PINNED] = {"pinned", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                  "h2d/d2h: page-locked host memory (false: pageable, staged by the driver)"},
    [P_DEVICE] = {"device", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                  "cuda:N; default: the pipeline's device (which must then be cuda:N)"},
    [P_GPU_WAIT] = CB_UTIL_GPU_WAIT_PARAM,
};

enum { M_BYTES, M_COUNT };

static const cb_metric_def cb_gpu_copy_metrics[M_COUNT] = {
    [M_BYTES] = {"bytes", CB_METRIC_COUNT, "bytes", "bytes copied by the query"},
};

typedef struct cb_gpu_copy_state {
    const cb_host *host;
    size_t bytes;
    cb_cuda_copy_dir dir;
    int pinned;
    int ordinal;
    cb_gpu_wait wait;
    cb_cuda cuda;        /* the module, open from prepare to destroy */
    cb_cuda_copy *copy;  /* NULL until prepared */
} cb_gpu_copy_state;

static int cb_gpu_copy_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_gpu_copy_state *s = state;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->bytes = (size_t)v[P_BYTES].i;
    s->dir = (cb_cuda_copy_dir)v[P_DIRECTION].i;
    s->pinned = (int)v[P_PINNED].i;
    int rc = cb_util_gpu_device(args, &v[P_DEVICE], CB_GPU_COPY, &s->ordinal, err);
    if (rc) return rc;
    rc = cb_util_gpu_wait(&v[P_GPU_WAIT], CB_GPU_COPY, &s->wait, err);
    if (rc) return rc;
    rc = cb_util_gpu_check_host(s->host, CB_GPU_COPY, err);
    if (rc) return rc;
    if (s->host->struct_size < offsetof(cb_host, report) + sizeof s->host->report ||
        !s->host->report)
        return cb_util_error(err, CB_EUNSUPPORTED, CB_GPU_COPY " needs a host with report");
    return CB_OK;
}

static int cb_gpu_copy_prepare(void *state, cb_error *err) {
    cb_gpu_copy_state *s = state;
    if (s->copy) return CB_OK;
    int rc = cb_util_gpu_open(&s->cuda, s->ordinal, err);
    if (rc) return rc;
    return s->cuda.api->copy_create(s->ordinal, s->bytes, s->dir, s->pinned, s->wait,
                                     &s->copy, err);
}

static int cb_gpu_copy_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    (void)q;
    cb_gpu_copy_state *s = state;
    if (!s->copy) { /* prepare() was not called */
        int rc = cb_gpu_copy_prepare(s, err);
        if (rc) return rc;
    }
    int64_t device_ns = 0;
    int rc = s->cuda.api->copy_run(s->copy, &device_ns, err);
    if (rc) return rc;
    rc = cb_util_gpu_device_time(s->host, ctx, device_ns, err);
    if (rc) return rc;
    s->host->report(ctx, M_BYTES, (double)s->bytes);
    return CB_OK;
}

static void cb_gpu_copy_destroy(void *state) {
    cb_gpu_copy_state *s = state;
    if (s->copy && s->cuda.api) s->cuda.api->copy_destroy(s->copy);
    s->copy = NULL;
    cb_cuda_close(&s->cuda);
}

const cb_stage_ops cb_stage_util_gpu_copy = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = CB_GPU_COPY,
    .summary = "one host/device copy of bytes per query (h2d, d2h, d2d); reports the device "
               "time and the bytes",
    .params = cb_gpu_copy_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_gpu_copy_state),
    .create = cb_gpu_copy_create,
    .prepare = cb_gpu_copy_prepare,
    .run = cb_gpu_copy_run,
    .destroy = cb_gpu_copy_destroy,
    .metrics = cb_gpu_copy_metrics,
    .n_metrics = M_COUNT,
};
