/* cuda/module.c - the module's entry table, device queries, the version check of the CUDA stack
 * it runs on, and the wait on an event (see gpu/cuda_api.h, gpu/wait.h).
 *
 * Version rules (checked by device_count, so before any executor or stage touches a device, and
 * reported by `colobench devices`): the driver must run at least the CUDA major version the
 * module was built with (CUDA's minor-version compatibility covers the rest); cuDNN and cuBLAS
 * must be of the major version built against (their ABI holds within a major version), and
 * cuDNN must be built for the same CUDA major. Anything else is CB_EABI: a GPU machine whose
 * stack must be fixed, never a skipped test.
 */
#include <cudnn.h>
#include <cublas_api.h>
#include <library_types.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_int.h"
#include "cuda/llm_model.h"

int cb__cuda_fail(cb_error *err, cudaError_t e, const char *call, const char *file, int line) {
    int code = e == cudaErrorMemoryAllocation ? CB_ENOMEM : CB_EIO;
    const char *base = strrchr(file, '/');
    return cb_error_set(err, code, "%s failed: %s (%s) at %s:%d", call, cudaGetErrorString(e),
                        cudaGetErrorName(e), base ? base + 1 : file, line);
}

int cb__cuda_set_device(int ordinal, cb_error *err) {
    CB__CUDA(cudaSetDevice(ordinal));
    return CB_OK;
}

int cb__cuda_event_create(cudaEvent_t *ev, cb_gpu_wait wait, cb_error *err) {
    unsigned flags = wait == CB_GPU_WAIT_BLOCK ? cudaEventBlockingSync : cudaEventDefault;
    CB__CUDA(cudaEventCreateWithFlags(ev, flags));
    return CB_OK;
}

int cb__cuda_wait(cudaEvent_t ev, cb_gpu_wait wait, const char *what, cb_error *err) {
    cudaError_t e;
    if (wait == CB_GPU_WAIT_BLOCK) {
        e = cudaEventSynchronize(ev);
    } else {
        while ((e = cudaEventQuery(ev)) == cudaErrorNotReady)
            if (wait == CB_GPU_WAIT_YIELD) sched_yield();
    }
    if (e == cudaSuccess) return CB_OK;
    int rc = cb__cuda_fail(err, e, wait == CB_GPU_WAIT_BLOCK ? "cudaEventSynchronize"
                                                            : "cudaEventQuery",
                           __FILE__, __LINE__);
    cb_error_prefix(err, "waiting for %s", what);
    return rc;
}

static int cb__ver3(int major, int minor, int patch) { return major * 10000 + minor * 100 + patch; }

static int cb__versions(cb_cuda_versions *v, cb_error *err) {
    memset(v, 0, sizeof *v);
    v->built_runtime = CUDART_VERSION;
    v->built_cudnn = CUDNN_VERSION;
    v->built_cublas = cb__ver3(CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH);
    cudaDriverGetVersion(&v->driver);
    cudaRuntimeGetVersion(&v->runtime);
    v->cudnn = (int)cudnnGetVersion();
    v->cudnn_cudart = (int)cudnnGetCudartVersion();
    int major = 0, minor = 0, patch = 0;
    if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS)
        v->cublas = cb__ver3(major, minor, patch);
    if (v->driver == 0) return CB_OK; /* no driver: device_count says so (not a mismatch) */
    if (v->driver / 1000 < v->built_runtime / 1000)
        return cb_error_set(err, CB_EABI, "the NVIDIA driver runs CUDA up to %d.%d, older than "
                            "the CUDA %d.%d this module was built with: update the driver",
                            v->driver / 1000, v->driver % 1000 / 10, v->built_runtime / 1000,
                            v->built_runtime % 1000 / 10);
    if (v->cudnn / 10000 != v->built_cudnn / 10000)
        return cb_error_set(err, CB_EABI, "cuDNN %d.%d.%d is loaded, this module was built with "
                            "cuDNN %d.%d.%d (another major version)", v->cudnn / 10000,
                            v->cudnn / 100 % 100, v->cudnn % 100, v->built_cudnn / 10000,
                            v->built_cudnn / 100 % 100, v->built_cudnn % 100);
    if (v->cudnn_cudart / 1000 != v->built_runtime / 1000)
        return cb_error_set(err, CB_EABI, "the loaded cuDNN was built for CUDA %d.%d, this module "
                            "for CUDA %d.%d", v->cudnn_cudart / 1000, v->cudnn_cudart % 1000 / 10,
                            v->built_runtime / 1000, v->built_runtime % 1000 / 10);
    if (v->cublas / 10000 != v->built_cublas / 10000)
        return cb_error_set(err, CB_EABI, "cuBLAS %d.%d is loaded, this module was built with "
                            "cuBLAS %d.%d", v->cublas / 10000, v->cublas / 100 % 100,
                            v->built_cublas / 10000, v->built_cublas / 100 % 100);
    return CB_OK;
}

static int cb__device_count(int *count, cb_error *err) {
    *count = 0;
    cb_cuda_versions v;
    int vrc = cb__versions(&v, err);
    if (vrc) return vrc;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return cb_error_set(err, CB_EUNSUPPORTED, "no CUDA-capable device is visible to this "
                            "process (CUDA_VISIBLE_DEVICES=%s)",
                            getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES")
                                                           : "unset");
    if (e == cudaErrorInsufficientDriver) {
        int drv = 0;
        cudaDriverGetVersion(&drv);
        if (drv == 0)
            return cb_error_set(err, CB_EUNSUPPORTED, "no NVIDIA driver on this machine "
                                "(libcuda.so.1 not found)");
        return cb_error_set(err, CB_EABI, "the NVIDIA driver supports CUDA %d.%d, older"
                            " than this build's CUDA %d.%d", drv / 1000, drv % 1000 / 10,
                            CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    }
    if (e != cudaSuccess)
        return cb_error_set(err, CB_EUNSUPPORTED, "cudaGetDeviceCount: %s (%s)",
                            cudaGetErrorString(e), cudaGetErrorName(e));
    *count = n;
    return CB_OK;
}

static int cb__device_info(int ordinal, cb_cuda_device_info *out, cb_error *err) {
    memset(out, 0, sizeof *out);
    struct cudaDeviceProp p;
    CB__CUDA(cudaGetDeviceProperties(&p, ordinal));
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->major = p.major;
    out->minor = p.minor;
    out->sms = p.multiProcessorCount;
    out->memory_bytes = (int64_t)p.totalGlobalMem;
    int khz = 0;
    CB__CUDA(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, ordinal));
    out->clock_khz = khz;
    int cur = 0;
    CB__CUDA(cudaGetDevice(&cur));
    CB__CUDA(cudaSetDevice(ordinal));
    size_t free_b = 0, total_b = 0;
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    cudaSetDevice(cur);
    if (e != cudaSuccess) return cb__cuda_fail(err, e, "cudaMemGetInfo", __FILE__, __LINE__);
    out->free_bytes = (int64_t)free_b;
    return CB_OK;
}

#define CB__STR2(x) #x
#define CB__STR(x) CB__STR2(x)

__attribute__((visibility("default"))) const cb_cuda_api cb_cuda_entry = {
    .version = CB_CUDA_API_VERSION,
    .struct_size = sizeof(cb_cuda_api),
    .build = "CUDA " CB__STR(CUDART_VERSION) ", cuDNN " CB__STR(CUDNN_MAJOR) "." CB__STR(
        CUDNN_MINOR) "." CB__STR(CUDNN_PATCHLEVEL) ", cuBLAS " CB__STR(CUBLAS_VER_MAJOR) "." CB__STR(CUBLAS_VER_MINOR),
    .device_count = cb__device_count,
    .device_info = cb__device_info,
    .nn = &cb__cuda_nn_backend,              /* the cuDNN/cuBLAS backend (nn_*.c) */
    .spin_create = cb__cuda_spin_create,   /* util.gpu_spin (spin.cu) */
    .spin_run = cb__cuda_spin_run,
    .spin_destroy = cb__cuda_spin_destroy,
    .copy_create = cb__cuda_copy_create,   /* util.gpu_copy (copy.c) */
    .copy_run = cb__cuda_copy_run,
    .copy_destroy = cb__cuda_copy_destroy,
    .versions = cb__versions,
    .lm_create = cb__cuda_lm_create,       /* the LLM forward pass (llm_model.c) */
    .lm_forward = cb__cuda_lm_forward,
    .lm_stats = cb__cuda_lm_stats,
    .lm_destroy = cb__cuda_lm_destroy,
};
