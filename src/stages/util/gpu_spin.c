/* stages/util/gpu_spin.c - util.gpu_spin: takes GPU multiprocessors away from other work for a
 * set time per query.
 *
 * What: the GPU analogue of util.spin's deadline mode, to occupy a known share of a GPU (sms of
 * its multiprocessors) for a known time: collocation experiments on GPUs (time slicing, MPS,
 * MIG) without a model. Each query launches one kernel of `sms` blocks (0 = one per SM of the
 * device), waits for it as `gpu_wait` says, and reports its event-timed device time through
 * host->device_time, so summary.json shows the device time next to the host service time
 * (launch and wait included).
 *
 * `sms: N` means N whole SMs: each block has 1024 threads and all the shared memory an SM can
 * give a block, which with the 1 KiB every block reserves is all of the SM's shared memory (on
 * A100, H100, H200; spin.cu says what is left on a GPU where it is not), so the blocks land on
 * N distinct SMs and no block of any other kernel (other stages' streams, MPS clients) runs on
 * those SMs until the spin ends; the other SMs stay free for them. Every block spins on the
 * GPU's nanosecond timer (%globaltimer) for duration_us less the launch overhead measured at
 * prepare, so the duration holds whatever the SM clock does (src/cuda/spin.cu has the details
 * and the limits).
 *
 * Design: the stage opens the CUDA module and creates its spin object (own stream, events,
 * the overhead measurement) in prepare(), before the start barrier: on a machine without a
 * GPU the run fails there with the loader's message. Each worker instance has its own module
 * reference and stream; destroy() releases both.
 *
 * Thread-safety: one instance per worker, all state private. Ownership: the query is borrowed
 * and not changed.
 */
#include <stddef.h>

#include "colobench/stage.h"
#include "stages/util/gpu.h"
#include "stages/util/util.h"

#define CB_GPU_SPIN "util.gpu_spin"

enum { P_DURATION_US, P_SMS, P_DEVICE, P_GPU_WAIT, P_COUNT };

static const cb_param_def cb_gpu_spin_params[P_COUNT] = {
    [P_DURATION_US] = {"duration_us", CB_PARAM_FLOAT, "1000", 0, 3.6e9, NULL,
                       "GPU time to spin per query, in microseconds"},
    [P_SMS] = {"sms", CB_PARAM_INT, "0", 0, 65536, NULL,
               "multiprocessors to take away from other kernels: one block of 1024 threads and "
               "all of the SM's shared memory on each (0 = all of the device's)"},
    [P_DEVICE] = {"device", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                  "cuda:N; default: the pipeline's device (which must then be cuda:N)"},
    [P_GPU_WAIT] = CB_UTIL_GPU_WAIT_PARAM,
};

typedef struct cb_gpu_spin_state {
    const cb_host *host;
    int64_t duration_ns;
    int sms;
    int ordinal;
    cb_gpu_wait wait;
    cb_cuda cuda;        /* the module, open from prepare to destroy */
    cb_cuda_spin *spin;  /* NULL until prepared */
} cb_gpu_spin_state;

static int cb_gpu_spin_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_gpu_spin_state *s = state;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->duration_ns = (int64_t)(v[P_DURATION_US].f * 1e3 + 0.5);
    s->sms = (int)v[P_SMS].i;
    int rc = cb_util_gpu_device(args, &v[P_DEVICE], CB_GPU_SPIN, &s->ordinal, err);
    if (rc) return rc;
    rc = cb_util_gpu_wait(&v[P_GPU_WAIT], CB_GPU_SPIN, &s->wait, err);
    if (rc) return rc;
    return cb_util_gpu_check_host(s->host, CB_GPU_SPIN, err);
}

static int cb_gpu_spin_prepare(void *state, cb_error *err) {
    cb_gpu_spin_state *s = state;
    if (s->spin) return CB_OK;
    int rc = cb_util_gpu_open(&s->cuda, s->ordinal, err);
    if (rc) return rc;
    return s->cuda.api->spin_create(s->ordinal, s->sms, 0, s->wait, &s->spin, err);
}

static int cb_gpu_spin_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    (void)q;
    cb_gpu_spin_state *s = state;
    if (!s->spin) { /* prepare() was not called */
        int rc = cb_gpu_spin_prepare(s, err);
        if (rc) return rc;
    }
    int64_t device_ns = 0;
    int rc = s->cuda.api->spin_run(s->spin, s->duration_ns, &device_ns, err);
    if (rc) return rc;
    return cb_util_gpu_device_time(s->host, ctx, device_ns, err);
}

static void cb_gpu_spin_destroy(void *state) {
    cb_gpu_spin_state *s = state;
    if (s->spin && s->cuda.api) s->cuda.api->spin_destroy(s->spin);
    s->spin = NULL;
    cb_cuda_close(&s->cuda);
}

const cb_stage_ops cb_stage_util_gpu_spin = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = CB_GPU_SPIN,
    .summary = "takes sms GPU multiprocessors away from other kernels for duration_us per "
               "query; reports the device time",
    .params = cb_gpu_spin_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_gpu_spin_state),
    .create = cb_gpu_spin_create,
    .prepare = cb_gpu_spin_prepare,
    .run = cb_gpu_spin_run,
    .destroy = cb_gpu_spin_destroy,
};
