/* cuda/module.c - the module's entry table and device queries (see gpu/cuda_api.h). */
#include <cudnn.h>
#include <cublas_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_int.h"

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

static int cb__device_count(int *count, cb_error *err) {
    *count = 0;
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
        return cb_error_set(err, CB_EUNSUPPORTED, "the NVIDIA driver supports CUDA %d.%d, older"
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
};
