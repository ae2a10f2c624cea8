/* cuda/spin.cu - util.gpu_spin's device side: a kernel that takes `sms` multiprocessors away
 * from every other kernel for a chosen time (see gpu/cuda_api.h).
 *
 * Occupation (the default kernel, cb__spin_full): a launch has `blocks` = sms blocks (0 = one
 * per SM of the device) of 1024 threads (__launch_bounds__(1024, 1)), each with the device's
 * whole opt-in dynamic shared memory (cudaDevAttrMaxSharedMemoryPerBlockOptin, allowed with
 * cudaFuncAttributeMaxDynamicSharedMemorySize; carve-out preference: all shared memory). Every
 * block of every kernel also takes cudaDevAttrReservedSharedMemoryPerBlock (1 KiB on sm_80 and
 * later) from its SM, so when optin + reserved == cudaDevAttrMaxSharedMemoryPerMultiprocessor
 * (A100: 163 + 1 = 164 KiB; H100/H200: 227 + 1 = 228 KiB; sm_86/sm_89: 99 + 1 = 100 KiB) a spin
 * block leaves its SM no shared memory at all: no second spin block and no block of ANY other
 * kernel (this process's other streams, other processes under MPS) can be resident on that SM
 * until the spin block exits. So the blocks land on `blocks` distinct SMs, and those SMs run
 * nothing else for the spin's duration: `sms: N` takes N SMs away from co-runners.
 * spin_create checks one block per SM with the occupancy API (an error if not) and computes
 * what is left (shm_left = per-SM max - optin - reserved): on a GPU where that is not 0, a
 * block of another kernel that needs at most shm_left - reserved bytes of shared memory can
 * still sit beside a spin block (none of the GPUs above). Threads and registers are not what
 * excludes others: a spin block has 1024 of the SM's thread slots (H100: 2048) and 1024 x the
 * kernel's registers per thread (numRegs from cudaFuncGetAttributes, named in the error
 * message; 10 for sm_90 with CUDA 13, 16 K of the SM's 64 K registers after allocation
 * rounding). No portable way forces a register count, and none is needed while the shared
 * memory is full. Without MPS, kernels of other processes are time-sliced with this one by the
 * driver (a context switch takes the SMs away for its slice); that is not the kernel's to stop.
 *
 * Time: every thread spins on %globaltimer, the GPU's nanosecond timer (the same clock on
 * every SM, independent of the SM clock), from its own start until `ns` have passed; the
 * threads are kept busy by the loop itself. So a spin lasts its duration whatever the clocks do
 * (boost, idle down-clocking, power capping, thermal limits); nothing is calibrated against
 * the SM clock. The only calibration (spin_create, untimed) is the launch overhead seen by the
 * events: after a warm-up (a 0-ns launch: module load, carve-out; then a 1 ms spin), the best
 * of 5 event-timed 0-ns launches is overhead_ns, and run(duration) launches a spin of
 * duration - overhead_ns (>= 0), so the event-timed device time is close to the duration
 * asked for. The device time reported is that measured event interval, never the assumed one.
 *
 * Light kernel (CB_CUDA_SPIN_LIGHT, cb__spin_light): `blocks` blocks of one warp and no
 * dynamic shared memory, the same timer spin; it occupies nothing (several blocks may share an
 * SM) and fits wherever there is room: tests use it as a probe of what is free.
 *
 * Waiting: the end event e1 is made for the wait policy (cb__cuda_event_create: BlockingSync
 * for block) and waited on with cb__cuda_wait; e0 is only ever timed. Every launch clears an
 * earlier non-sticky error first (so it is not blamed on the spin) and checks its own after.
 * Everything runs on the object's own non-blocking stream.
 *
 * Thread-safety: one object per stage instance, used by one thread at a time; each call makes
 * its device current on the calling thread. Ownership: the object owns its stream and events.
 */
/* The CUDA libraries' own headers first, with their C++ declarations; then ours as C. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
extern "C" {
#include "core/alloc.h"
#include "cuda/cuda_int.h"
}

#include <math.h>
#include <stdint.h>

#define CB__SPIN_FULL_THREADS 1024
#define CB__SPIN_LIGHT_THREADS 32

struct cb_cuda_spin {
    int ordinal;
    int light;                /* CB_CUDA_SPIN_LIGHT */
    cb_gpu_wait wait;
    int blocks;               /* full: SMs occupied, one block each; light: blocks */
    size_t shm;               /* full: dynamic shared memory per block (the opt-in maximum) */
    long long shm_left;       /* full: per-SM shared memory a spin block leaves (0 = none) */
    cudaStream_t stream;
    cudaEvent_t e0, e1;
    int have_stream, have_e0, have_e1;
    double overhead_ns;       /* event-timed device time of a 0-ns spin (best of 5) */
};

/* The GPU's nanosecond timer (PTX %globaltimer). */
static __device__ __forceinline__ unsigned long long cb__globaltimer(void) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Spins until `ns` nanoseconds have passed since this thread's start; returns the polls. */
static __device__ __forceinline__ long long cb__spin_for(long long ns) {
    unsigned long long t0 = cb__globaltimer();
    long long n = 0;
    while ((long long)(cb__globaltimer() - t0) < ns) n++;
    return n;
}

/* sink is always NULL at run time; the compiler cannot know, so the shared array stays
 * referenced (the dynamic shared memory is allocated by the launch either way). */
__global__ void __launch_bounds__(CB__SPIN_FULL_THREADS, 1) cb__spin_full(long long ns, int *sink) {
    extern __shared__ int cb__spin_hog[];
    long long n = cb__spin_for(ns);
    if (sink) {
        cb__spin_hog[threadIdx.x] = (int)n;
        sink[blockIdx.x * blockDim.x + threadIdx.x] = cb__spin_hog[threadIdx.x];
    }
}

__global__ void __launch_bounds__(CB__SPIN_LIGHT_THREADS) cb__spin_light(long long ns, int *sink) {
    long long n = cb__spin_for(ns);
    if (sink) sink[blockIdx.x * blockDim.x + threadIdx.x] = (int)n;
}

/* One launch of a spin of `ns` on the object's stream, waited for as s->wait says, timed with
 * its events (*out: the event interval in ns). */
static int cb__spin_timed(cb_cuda_spin *s, long long ns, double *out, cb_error *err) {
    CB__CUDA(cudaEventRecord(s->e0, s->stream));
    (void)cudaGetLastError(); /* an earlier non-sticky error is not the spin's */
    if (s->light)
        cb__spin_light<<<s->blocks, CB__SPIN_LIGHT_THREADS, 0, s->stream>>>(ns, NULL);
    else
        cb__spin_full<<<s->blocks, CB__SPIN_FULL_THREADS, s->shm, s->stream>>>(ns, NULL);
    CB__CUDA(cudaGetLastError());
    CB__CUDA(cudaEventRecord(s->e1, s->stream));
    int rc = cb__cuda_wait(s->e1, s->wait, "the spin kernel", err);
    if (rc) return rc;
    float ms = 0.0f;
    CB__CUDA(cudaEventElapsedTime(&ms, s->e0, s->e1));
    *out = (double)ms * 1e6;
    return CB_OK;
}

/* The full kernel's launch shape: the opt-in shared memory, one block per SM (checked). */
static int cb__spin_setup_full(cb_cuda_spin *s, cb_error *err) {
    int smem_sm = 0, smem_optin = 0, smem_reserved = 0;
    CB__CUDA(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor,
                                    s->ordinal));
    CB__CUDA(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                    s->ordinal));
    CB__CUDA(cudaDeviceGetAttribute(&smem_reserved, cudaDevAttrReservedSharedMemoryPerBlock,
                                    s->ordinal));
    s->shm = (size_t)smem_optin;
    s->shm_left = (long long)smem_sm - smem_optin - smem_reserved;
    if (s->shm_left < 0) s->shm_left = 0;
    CB__CUDA(cudaFuncSetAttribute(cb__spin_full, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  smem_optin));
    CB__CUDA(cudaFuncSetAttribute(cb__spin_full, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  (int)cudaSharedmemCarveoutMaxShared));
    struct cudaFuncAttributes fa;
    CB__CUDA(cudaFuncGetAttributes(&fa, cb__spin_full));
    int per_sm = 0;
    CB__CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, cb__spin_full,
                                                           CB__SPIN_FULL_THREADS, s->shm));
    if (per_sm != 1)
        return cb_error_set(err, CB_EUNSUPPORTED, "cuda:%d: cannot place exactly one spin block "
                            "per SM (%d blocks of %d threads x %d registers and %zu bytes of "
                            "shared memory fit on one; the SM has %d bytes)", s->ordinal,
                            per_sm, CB__SPIN_FULL_THREADS, fa.numRegs, s->shm, smem_sm);
    return CB_OK;
}

static int cb__spin_setup(cb_cuda_spin *s, int sms, cb_error *err) {
    int rc = cb__cuda_set_device(s->ordinal, err);
    if (rc) return rc;
    int n_sm = 0;
    CB__CUDA(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, s->ordinal));
    if (sms < 0 || sms > n_sm)
        return cb_error_set(err, CB_EINVAL, "sms: %d, but device cuda:%d has %d multiprocessors"
                            " (0 = all)", sms, s->ordinal, n_sm);
    s->blocks = sms == 0 ? n_sm : sms;
    if (!s->light) {
        rc = cb__spin_setup_full(s, err);
        if (rc) return rc;
    }
    CB__CUDA(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    s->have_stream = 1;
    rc = cb__cuda_event_create(&s->e0, CB_GPU_WAIT_SPIN, err); /* only ever timed */
    if (rc) return rc;
    s->have_e0 = 1;
    rc = cb__cuda_event_create(&s->e1, s->wait, err);
    if (rc) return rc;
    s->have_e1 = 1;

    /* Warm-up (module load, carve-out, a real 1 ms spin), then the launch overhead: the best
     * of five 0-ns spins. */
    double t = 0;
    rc = cb__spin_timed(s, 0, &t, err);
    if (!rc) rc = cb__spin_timed(s, 1000000, &t, err);
    if (rc) return rc;
    double best = INFINITY;
    for (int i = 0; i < 5; i++) {
        rc = cb__spin_timed(s, 0, &t, err);
        if (rc) return rc;
        if (t < best) best = t;
    }
    if (!isfinite(best) || best < 0)
        return cb_error_set(err, CB_EIO, "cuda:%d: spin calibration failed (a 0-ns spin took "
                            "%.0f ns)", s->ordinal, best);
    s->overhead_ns = best;
    return CB_OK;
}

extern "C" void cb__cuda_spin_destroy(cb_cuda_spin *s) {
    if (!s) return;
    /* Best effort: the device may be gone; nothing to report from a destructor. */
    if (cudaSetDevice(s->ordinal) == cudaSuccess) {
        if (s->have_stream) (void)cudaStreamSynchronize(s->stream);
        if (s->have_e0) (void)cudaEventDestroy(s->e0);
        if (s->have_e1) (void)cudaEventDestroy(s->e1);
        if (s->have_stream) (void)cudaStreamDestroy(s->stream);
    }
    cb_free(s);
}

extern "C" int cb__cuda_spin_create(int ordinal, int sms, unsigned flags, cb_gpu_wait wait,
                                    cb_cuda_spin **out, cb_error *err) {
    *out = NULL;
    if (flags & ~CB_CUDA_SPIN_LIGHT)
        return cb_error_set(err, CB_EINVAL, "spin_create: unknown flags 0x%x", flags);
    if (wait != CB_GPU_WAIT_BLOCK && wait != CB_GPU_WAIT_SPIN && wait != CB_GPU_WAIT_YIELD)
        return cb_error_set(err, CB_EINVAL, "gpu_wait: unknown wait policy %d", (int)wait);
    cb_cuda_spin *s = (cb_cuda_spin *)cb_calloc(1, sizeof *s);
    if (!s) return cb_error_set(err, CB_ENOMEM, "out of memory");
    s->ordinal = ordinal;
    s->light = (flags & CB_CUDA_SPIN_LIGHT) != 0;
    s->wait = wait;
    int rc = cb__spin_setup(s, sms, err);
    if (rc) {
        cb__cuda_spin_destroy(s);
        return rc;
    }
    *out = s;
    return CB_OK;
}

extern "C" int cb__cuda_spin_run(cb_cuda_spin *s, int64_t duration_ns, int64_t *device_ns,
                                 cb_error *err) {
    *device_ns = 0;
    if (duration_ns < 0) return cb_error_set(err, CB_EINVAL, "negative spin duration");
    int rc = cb__cuda_set_device(s->ordinal, err);
    if (rc) return rc;
    double ask = (double)duration_ns - s->overhead_ns;
    long long ns = ask <= 0 ? 0 : (long long)ask;
    double t = 0;
    rc = cb__spin_timed(s, ns, &t, err);
    if (rc) return rc;
    *device_ns = (int64_t)llround(t);
    return CB_OK;
}
