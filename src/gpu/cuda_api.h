/* gpu/cuda_api.h - the interface between colobench and its CUDA module.
 *
 * Everything that calls CUDA, cuDNN or cuBLAS lives in build/lib/colobench_cuda.so (src/cuda/),
 * built whenever the toolkit is present and loaded with dlopen only when a config asks for a
 * CUDA device (gpu/cuda.h). So the one build/colobench runs on machines without a GPU or
 * driver, and says why a CUDA device is unavailable when one is asked for.
 *
 * The module exports one data symbol, CB_CUDA_ENTRY_SYMBOL, a cb_cuda_api. The loader checks
 * version and struct_size before calling anything. Both sides are built from this header in
 * the same build, so the version only guards against a stale module found on the search path.
 *
 * Module rules: every function returns CB_OK or a negative CB_E* code with a message in err
 * (the module has its own copy of core/error.c); every call is made with the module's own
 * objects, which are used by one thread at a time (like an executor); each object works on
 * its own CUDA stream (cudaStreamNonBlocking), never the legacy default stream, so pipelines in
 * one process (collocation mode threads) only share the GPU, not an ordering.
 */
#ifndef CB_GPU_CUDA_API_H
#define CB_GPU_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "nn/nn.h"

/* Version history: 1 issue 6; 2 issue 14 (versions; device_info.free_bytes; spin_create and
 * copy_create take the wait policy, spin_create its flags). */
#define CB_CUDA_API_VERSION 2
#define CB_CUDA_ENTRY_SYMBOL "cb_cuda_entry"

typedef struct cb_cuda_device_info {
    char name[128];                /* "NVIDIA H100 80GB HBM3" */
    int major, minor;              /* compute capability */
    int sms;                       /* multiprocessors */
    int64_t memory_bytes;          /* total global memory */
    int64_t clock_khz;             /* SM clock (cudaDevAttrClockRate) */
    int64_t free_bytes;            /* free global memory now (cudaMemGetInfo) */
} cb_cuda_device_info;

/* The CUDA stack this process runs on, against what the module was built with. Versions are
 * as the libraries encode them: CUDA 13000 = 13.0; cuDNN 91900 = 9.19.0; cuBLAS 130100 =
 * 13.1.0 (major * 10000 + minor * 100 + patch). 0 = could not be read. */
typedef struct cb_cuda_versions {
    int driver;                    /* cudaDriverGetVersion: the newest CUDA the driver runs */
    int runtime, built_runtime;    /* cudaRuntimeGetVersion, CUDART_VERSION */
    int cudnn, built_cudnn;        /* cudnnGetVersion, CUDNN_VERSION */
    int cudnn_cudart;              /* cudnnGetCudartVersion: the CUDA cuDNN was built for */
    int cublas, built_cublas;      /* cublasGetProperty, CUBLAS_VERSION's parts */
} cb_cuda_versions;

/* util.gpu_spin: a busy kernel on `sms` multiprocessors (one block per SM, each taking the
 * whole SM: all its shared memory and 1024 threads, so no other kernel's block can be resident
 * there while it runs) that spins on the GPU's nanosecond timer for a chosen time. */
typedef struct cb_cuda_spin cb_cuda_spin;
/* util.gpu_copy: host/device copies of a fixed size. */
typedef struct cb_cuda_copy cb_cuda_copy;

typedef enum cb_cuda_copy_dir {
    CB_CUDA_H2D = 0,               /* host -> device */
    CB_CUDA_D2H = 1,               /* device -> host */
    CB_CUDA_D2D = 2,               /* device -> device (on the same device) */
} cb_cuda_copy_dir;

typedef struct cb_cuda_api {
    uint32_t version;              /* CB_CUDA_API_VERSION */
    uint32_t struct_size;          /* sizeof(cb_cuda_api) */
    const char *build;             /* "CUDA 13.0, cuDNN 9.x.y, cuBLAS 13.x" as compiled */

    /* Devices visible to this process (>= 1), or a negative code whose message says why there
     * are none: CB_EUNSUPPORTED for no driver or no device; CB_EABI for a CUDA stack this
     * module cannot run on (a driver older than the CUDA it was built with, a cuDNN or cuBLAS
     * of another major version): a machine with a GPU that must be fixed, not skipped. */
    int (*device_count)(int *count, cb_error *err);
    int (*device_info)(int ordinal, cb_cuda_device_info *out, cb_error *err);

    /* The cuDNN/cuBLAS backend of src/nn (device "cuda:N"; e->device_index is N). */
    const cb_nn_backend *nn;

    /* util.gpu_spin. create allocates on device `ordinal` and measures the launch overhead
     * (untimed setup). run launches one spin of duration_ns on its stream, waits for it (as
     * `wait` says) and returns its device time (CUDA events) in *device_ns. flags:
     * CB_CUDA_SPIN_LIGHT makes a light kernel instead (one warp per block, no shared memory:
     * it occupies nothing, so other kernels fit beside it; tests use it as a probe). */
    int (*spin_create)(int ordinal, int sms, unsigned flags, cb_gpu_wait wait,
                       cb_cuda_spin **out, cb_error *err);
    int (*spin_run)(cb_cuda_spin *s, int64_t duration_ns, int64_t *device_ns, cb_error *err);
    void (*spin_destroy)(cb_cuda_spin *s);               /* NULL is a no-op */

    /* util.gpu_copy. create allocates `bytes` on the device and, for H2D/D2H, a host buffer
     * (pinned = 1: cudaHostAlloc; 0: pageable malloc). run does one copy on its stream, waits,
     * and returns the device time of the copy in *device_ns. */
    int (*copy_create)(int ordinal, size_t bytes, cb_cuda_copy_dir dir, int pinned,
                       cb_gpu_wait wait, cb_cuda_copy **out, cb_error *err);
    int (*copy_run)(cb_cuda_copy *c, int64_t *device_ns, cb_error *err);
    void (*copy_destroy)(cb_cuda_copy *c);               /* NULL is a no-op */

    /* Versions of the CUDA stack (driver, runtime, cuDNN, cuBLAS) beside the built ones; CB_OK
     * when compatible, CB_EABI with the reason when not (out filled either way, as far as it
     * could be read). Needs no device. */
    int (*versions)(cb_cuda_versions *out, cb_error *err);
} cb_cuda_api;

#define CB_CUDA_SPIN_LIGHT 1u

#endif
