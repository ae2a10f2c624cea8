/* stages/util/gpu.h - what util.gpu_spin and util.gpu_copy share: the device a GPU stage runs
 * on, how its thread waits for the device (`gpu_wait`, gpu/wait.h), and whether the host can
 * take its device time. Header-only.
 *
 * The device is the stage's own `device` parameter when set, else the pipeline's device
 * (cb_stage_args.device, when the host's args cover it); it must be cuda:N. Both stages open the
 * CUDA module in prepare() (gpu/cuda.h), so a machine without a GPU fails before the start
 * barrier with the loader's message ("CUDA unavailable: ..." / "CUDA devices are unavailable:
 * ..."), and keep it open until destroy(). */
#ifndef CB_STAGES_UTIL_GPU_H
#define CB_STAGES_UTIL_GPU_H

#include <stddef.h>
#include <string.h>

#include "colobench/stage.h"
#include "gpu/cuda.h"
#include "gpu/wait.h"
#include "stages/util/util.h"

/* The `gpu_wait` parameter of both GPU stages (a cb_param_def initializer). */
#define CB_UTIL_GPU_WAIT_PARAM                                                                     \
    {"gpu_wait", CB_PARAM_ENUM, "block", CB_PARAM_UNBOUNDED, CB_GPU_WAITS,                         \
     "how the stage's thread waits for the device: block (sleeps; the default: leaves its core "  \
     "to collocated work), spin (polls, burning a core, lowest latency, PyTorch's default), "     \
     "yield (polls with sched_yield)"}

/* Resolves the stage's CUDA device into *ordinal. `param` is the stage's `device` value. */
static inline int cb_util_gpu_device(const cb_stage_args *args, const cb_param_value *param,
                                     const char *stage, int *ordinal, cb_error *err) {
    int own = 0;
    const char *dev = cb_util_stage_device(args, param, &own);
    if (!dev || strncmp(dev, "cuda:", 5) != 0)
        return cb_util_error(err, CB_ECONFIG, "%s needs a CUDA device: set the pipeline's device"
                             " or this stage's device to cuda:N (%s is \"%s\")", stage,
                             own ? "device" : "the pipeline's device", dev ? dev : "cpu");
    cb_error e;
    e.code = 0;
    e.msg[0] = '\0';
    if (cb_cuda_parse_device(dev, ordinal, &e) != CB_OK)
        return cb_util_error(err, CB_ECONFIG, "%s: %s", own ? "device" : "pipeline device", e.msg);
    return CB_OK;
}

/* The `gpu_wait` value (CB_UTIL_GPU_WAIT_PARAM) as a policy; the loader has checked the choice,
 * so an unknown one is an internal error. */
static inline int cb_util_gpu_wait(const cb_param_value *v, const char *stage, cb_gpu_wait *out,
                                   cb_error *err) {
    if (cb_gpu_wait_parse(v->s, out) != 0)
        return cb_util_error(err, CB_ECONFIG, "%s: gpu_wait: \"%s\" is not one of %s", stage,
                             v->s ? v->s : "", CB_GPU_WAITS);
    return CB_OK;
}

/* The host table has device_time (a host older than the field does not). */
static inline int cb_util_gpu_check_host(const cb_host *h, const char *stage, cb_error *err) {
    if (!cb_util_host_device_time(h))
        return cb_util_error(err, CB_EUNSUPPORTED, "%s needs a host with device_time (a newer"
                             " colobench)", stage);
    return CB_OK;
}

/* prepare(): opens the CUDA module on device `ordinal` once (a no-op when c is open; the loader
 * checks that the module has every entry). */
static inline int cb_util_gpu_open(cb_cuda *c, int ordinal, cb_error *err) {
    return c->handle ? CB_OK : cb_cuda_open_device(c, ordinal, err);
}

/* run(): hands the run's measured device time to the host. */
static inline int cb_util_gpu_device_time(const cb_host *h, cb_run_ctx *ctx, int64_t device_ns,
                                          cb_error *err) {
    int rc = h->device_time(ctx, device_ns);
    if (rc) return cb_util_error(err, rc, "device_time(%lld) refused", (long long)device_ns);
    return CB_OK;
}

#endif
