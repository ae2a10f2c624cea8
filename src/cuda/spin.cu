/* cuda/spin.cu - util.gpu_spin's device side: a kernel that keeps `sms` multiprocessors busy
 * for a chosen time (see gpu/cuda_api.h).
 *
 * Design:
 * - One block per SM: a launch has `blocks` = sms blocks of one warp, each asking for more than
 *   half of an SM's shared memory (dynamic, unused), so no SM can hold two of them and the
 *   blocks land on `blocks` distinct SMs. spin_create checks this with the occupancy API (one
 *   block per SM at most) and fails if the device would co-locate them.
 * - Each block spins on clock64() (the SM's cycle counter; differences within one block only)
 *   until `cycles` have passed. Calibration (spin_create, untimed): kernels of C1 and C2 cycles
 *   are timed with CUDA events (best of 3 each, after a warm-up launch); the slope
 *   (C2 - C1) / (t2 - t1) is the SM clock in cycles per ns and the intercept t1 - C1 / rate the
 *   launch overhead seen by the events, so duration -> cycles = (duration - overhead) * rate
 *   and the event-timed device time of a spin is close to the duration asked for. The rate is
 *   the clock at calibration time: if the GPU changes clocks later (power capping, thermal
 *   limits), a spin of fixed cycles takes longer or shorter; the device time reported is
 *   measured, not assumed, so it stays exact.
 * - Everything runs on the object's own non-blocking stream; run waits with
 *   cudaEventSynchronize on its end event.
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

#define CB__SPIN_THREADS 32

struct cb_cuda_spin {
    int ordinal;
    int blocks;               /* SMs occupied: one block each */
    size_t shm;               /* dynamic shared memory per block: forces one block per SM */
    cudaStream_t stream;
    cudaEvent_t e0, e1;
    int have_stream, have_e0, have_e1;
    double cycles_per_ns;     /* calibrated SM clock */
    double overhead_ns;       /* event-timed launch overhead (intercept) */
};

__global__ void cb__spin_kernel(long long cycles, int *sink) {
    extern __shared__ int cb__spin_hog[]; /* reserved, not used: one block per SM */
    long long t0 = clock64();
    long long n = 0;
    while (clock64() - t0 < cycles) n++;
    if (n < 0) { /* never true; keeps the shared array referenced */
        cb__spin_hog[threadIdx.x] = (int)n;
        sink[blockIdx.x] = cb__spin_hog[threadIdx.x];
    }
}

/* One launch of `cycles` on the object's stream, timed with its events. */
static int cb__spin_timed(cb_cuda_spin *s, long long cycles, double *ns, cb_error *err) {
    CB__CUDA(cudaEventRecord(s->e0, s->stream));
    cb__spin_kernel<<<s->blocks, CB__SPIN_THREADS, s->shm, s->stream>>>(cycles, NULL);
    CB__CUDA(cudaGetLastError());
    CB__CUDA(cudaEventRecord(s->e1, s->stream));
    CB__CUDA(cudaEventSynchronize(s->e1));
    float ms = 0.0f;
    CB__CUDA(cudaEventElapsedTime(&ms, s->e0, s->e1));
    *ns = (double)ms * 1e6;
    return CB_OK;
}

/* Best (shortest) of three timed launches. */
static int cb__spin_best(cb_cuda_spin *s, long long cycles, double *ns, cb_error *err) {
    double best = INFINITY;
    for (int i = 0; i < 3; i++) {
        double t = 0;
        int rc = cb__spin_timed(s, cycles, &t, err);
        if (rc) return rc;
        if (t < best) best = t;
    }
    *ns = best;
    return CB_OK;
}

static int cb__spin_setup(cb_cuda_spin *s, int sms, cb_error *err) {
    int rc = cb__cuda_set_device(s->ordinal, err);
    if (rc) return rc;
    int n_sm = 0, smem_sm = 0, smem_optin = 0, smem_reserved = 0;
    CB__CUDA(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, s->ordinal));
    CB__CUDA(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor,
                                    s->ordinal));
    CB__CUDA(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                    s->ordinal));
    CB__CUDA(cudaDeviceGetAttribute(&smem_reserved, cudaDevAttrReservedSharedMemoryPerBlock,
                                    s->ordinal));
    if (sms < 0 || sms > n_sm)
        return cb_error_set(err, CB_EINVAL, "sms: %d, but device cuda:%d has %d multiprocessors"
                            " (0 = all)", sms, s->ordinal, n_sm);
    s->blocks = sms == 0 ? n_sm : sms;
    /* More than half of an SM's shared memory (with the per-block reservation) per block. */
    size_t half = (size_t)smem_sm / 2 + 1;
    size_t shm = half > (size_t)smem_reserved ? half - (size_t)smem_reserved : 1;
    shm = (shm + 255) / 256 * 256;
    if (shm > (size_t)smem_optin) shm = (size_t)smem_optin;
    s->shm = shm;
    CB__CUDA(cudaFuncSetAttribute(cb__spin_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)shm));
    int per_sm = 0;
    CB__CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, cb__spin_kernel,
                                                           CB__SPIN_THREADS, shm));
    if (per_sm != 1)
        return cb_error_set(err, CB_EUNSUPPORTED, "cuda:%d: cannot place one spin block per SM "
                            "(%d blocks of %zu bytes of shared memory fit on one)", s->ordinal,
                            per_sm, shm);
    CB__CUDA(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    s->have_stream = 1;
    CB__CUDA(cudaEventCreate(&s->e0));
    s->have_e0 = 1;
    CB__CUDA(cudaEventCreate(&s->e1));
    s->have_e1 = 1;

    /* Calibration: warm-up, then the slope between two lengths. */
    const long long c1 = 1LL << 20, c2 = 1LL << 23; /* ~0.5 ms and ~4 ms at 2 GHz */
    double t1 = 0, t2 = 0;
    rc = cb__spin_timed(s, 1LL << 16, &t1, err);
    if (!rc) rc = cb__spin_best(s, c1, &t1, err);
    if (!rc) rc = cb__spin_best(s, c2, &t2, err);
    if (rc) return rc;
    if (!(t2 > t1) || !isfinite(t2))
        return cb_error_set(err, CB_EIO, "cuda:%d: spin calibration failed (%lld cycles in %.0f"
                            " ns, %lld in %.0f ns)", s->ordinal, c1, t1, c2, t2);
    s->cycles_per_ns = (double)(c2 - c1) / (t2 - t1);
    s->overhead_ns = t1 - (double)c1 / s->cycles_per_ns;
    if (s->overhead_ns < 0) s->overhead_ns = 0;
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
    (void)flags;
    (void)wait;
    *out = NULL;
    cb_cuda_spin *s = (cb_cuda_spin *)cb_calloc(1, sizeof *s);
    if (!s) return cb_error_set(err, CB_ENOMEM, "out of memory");
    s->ordinal = ordinal;
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
    double c = ((double)duration_ns - s->overhead_ns) * s->cycles_per_ns;
    long long cycles = c <= 0 ? 0 : c >= 9.0e18 ? (long long)9.0e18 : (long long)c;
    double ns = 0;
    rc = cb__spin_timed(s, cycles, &ns, err);
    if (rc) return rc;
    *device_ns = (int64_t)llround(ns);
    return CB_OK;
}
