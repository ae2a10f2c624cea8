// cuda/nn_kernels.cu - the CUDA backend's own kernels: residual add, gradient accumulation, type
// conversion, linear and (16-bit) convolution bias forward and backward, softmax cross-entropy
// with accuracy and its gradient, GradScaler's unscale, and the fused optimizers (SGD, Adam)
// over the flat parameter arrays. Everything else (convolution, batch norm, pooling, ReLU,
// matrix products) is cuDNN or cuBLAS (nn_layers.c).
//
// Activation kernels take the element type at run time (CB__DT_*) and dispatch to a template
// instance; arithmetic is float32 (double in the loss). Each wrapper clears the calling thread's
// last error first (a non-sticky error left by another call, e.g. cuDNN's workspace probing,
// must not be blamed on our kernel), launches on the caller's stream and returns
// cudaGetLastError(): the launch's own error. Grid-stride loops with 256-thread blocks and at most
// 4096 blocks; element-wise kernels index with size_t.
#include "cuda/nn_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

#include <type_traits>

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t count) {
    size_t b = (count + kThreads - 1) / kThreads;
    return (unsigned)(b < 4096 ? b : 4096);
}

__device__ inline float ld(const float *p, size_t i) { return p[i]; }
__device__ inline float ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ inline float ld(const __half *p, size_t i) { return __half2float(p[i]); }
__device__ inline void st(float *p, size_t i, float v) { p[i] = v; }
__device__ inline void st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }
__device__ inline void st(__half *p, size_t i, float v) { p[i] = __float2half(v); }

#define CB__GRID_LOOP(i, count)                                                                    \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (count);                    \
         i += (size_t)gridDim.x * blockDim.x)

template <typename T>
__global__ void add_kernel(T *y, const T *a, const T *b, size_t count) {
    CB__GRID_LOOP(i, count) st(y, i, ld(a, i) + ld(b, i));
}

template <typename T>
__global__ void accum_kernel(T *dst, const T *src, size_t count, int beta) {
    CB__GRID_LOOP(i, count) st(dst, i, beta ? ld(dst, i) + ld(src, i) : ld(src, i));
}

template <typename D, typename S>
__global__ void convert_kernel(D *dst, const S *src, size_t count, float mul) {
    CB__GRID_LOOP(i, count) st(dst, i, ld(src, i) * mul);
}

template <typename T>
__global__ void bias_rows_kernel(T *y, const float *b, int rows, int cols) {
    CB__GRID_LOOP(i, (size_t)rows * cols) st(y, i, ld(y, i) + b[i % cols]);
}

template <typename T>
__global__ void colsum_kernel(float *db, const T *dy, int rows, int cols) {
    CB__GRID_LOOP(j, (size_t)cols) {
        float s = 0;
        for (int r = 0; r < rows; r++) s += ld(dy, (size_t)r * cols + j);
        db[j] = s;
    }
}

template <typename T>
__global__ void bias_chan_kernel(T *y, const float *b, int n, int c, int hw) {
    CB__GRID_LOOP(i, (size_t)n * c * hw) st(y, i, ld(y, i) + b[(i / hw) % c]);
}

// One block per channel, a shared-memory tree over its n * hw values.
template <typename T>
__global__ void chan_sum_kernel(float *db, const T *dy, int n, int c, int hw) {
    __shared__ float part[kThreads];
    int ch = blockIdx.x;
    float s = 0;
    for (size_t k = threadIdx.x; k < (size_t)n * hw; k += blockDim.x) {
        size_t img = k / hw, pos = k % hw;
        s += ld(dy, (img * c + ch) * hw + pos);
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
        if ((int)threadIdx.x < width) part[threadIdx.x] += part[threadIdx.x + width];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[ch] = part[0];
}

// One thread per row: class counts are small (10 to 1000) and so is n; double arithmetic so the
// loss matches the CPU backend's to double rounding.
template <typename T>
__global__ void xent_kernel(const T *z, const int32_t *labels, int n, int classes, T *dz,
                            float scale, double *loss_rows, int32_t *correct) {
    CB__GRID_LOOP(i, (size_t)n) {
        size_t row = i * classes;
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (ld(z, row + k) > ld(z, row + best)) best = k;
        double top = ld(z, row + best), sum = 0;
        for (int k = 0; k < classes; k++) sum += exp((double)ld(z, row + k) - top);
        double lse = top + log(sum);
        int y = labels[i];
        loss_rows[i] = lse - (double)ld(z, row + y);
        correct[i] = best == y;
        if (!dz) continue;
        for (int k = 0; k < classes; k++) {
            double p = exp((double)ld(z, row + k) - lse);
            st(dz, row + k, (float)((double)scale * (p - (k == y ? 1.0 : 0.0)) / n));
        }
    }
}

__global__ void unscale_kernel(float *g, size_t count, float inv, int32_t *found) {
    CB__GRID_LOOP(i, count) {
        float v = g[i] * inv;
        g[i] = v;
        if (!isfinite(v)) *found = 1;
    }
}

__global__ void sgd_kernel(float *w, const float *g, float *m, size_t count, float lr, float wd,
                           float mom, int first, int nesterov, const int32_t *skip) {
    if (skip && *skip) return;
    CB__GRID_LOOP(i, count) {
        float d = g[i] + wd * w[i];
        if (!m) {
            w[i] -= lr * d;
            continue;
        }
        float buf = first ? d : mom * m[i] + d;
        m[i] = buf;
        w[i] -= lr * (nesterov ? d + mom * buf : buf);
    }
}

__global__ void adam_kernel(float *w, const float *g, float *m1, float *m2, size_t count,
                            float step, float bc2, float b1, float b2, float eps, float wd,
                            const int32_t *skip) {
    if (skip && *skip) return;
    CB__GRID_LOOP(i, count) {
        float d = g[i] + wd * w[i];
        float a = b1 * m1[i] + (1 - b1) * d;
        float v = b2 * m2[i] + (1 - b2) * d * d;
        m1[i] = a;
        m2[i] = v;
        w[i] -= step * a / (sqrtf(v) / bc2 + eps);
    }
}

// Calls f with a null pointer of the C++ type of element type dt (only its type is used).
template <typename F>
void with_type(int dt, F f) {
    if (dt == CB__DT_BF16) f((__nv_bfloat16 *)nullptr);
    else if (dt == CB__DT_F16) f((__half *)nullptr);
    else f((float *)nullptr);
}

}  // namespace

extern "C" cudaError_t cb__k_add(void *y, const void *a, const void *b, int dt, size_t count,
                                 cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (count)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            add_kernel<T><<<blocks_for(count), kThreads, 0, s>>>((T *)y, (const T *)a,
                                                                 (const T *)b, count);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_accum(void *dst, const void *src, int dt, size_t count, int beta,
                                   cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (count)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            accum_kernel<T><<<blocks_for(count), kThreads, 0, s>>>((T *)dst, (const T *)src,
                                                                   count, beta);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_convert(void *dst, int ddt, const void *src, int sdt, size_t count,
                                     float mul, cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (count)
        with_type(ddt, [&](auto *dt_) {
            using D = typename std::remove_pointer<decltype(dt_)>::type;
            with_type(sdt, [&](auto *st_) {
                using S = typename std::remove_pointer<decltype(st_)>::type;
                convert_kernel<D, S><<<blocks_for(count), kThreads, 0, s>>>(
                    (D *)dst, (const S *)src, count, mul);
            });
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_bias_rows(void *y, int dt, const float *b, int rows, int cols,
                                       cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    size_t count = (size_t)rows * cols;
    if (count)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            bias_rows_kernel<T><<<blocks_for(count), kThreads, 0, s>>>((T *)y, b, rows, cols);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_colsum(float *db, const void *dy, int dt, int rows, int cols,
                                    cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (cols > 0)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            colsum_kernel<T><<<blocks_for((size_t)cols), kThreads, 0, s>>>(db, (const T *)dy,
                                                                           rows, cols);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_bias_chan(void *y, int dt, const float *b, int n, int c, int hw,
                                       cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    size_t count = (size_t)n * c * hw;
    if (count)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            bias_chan_kernel<T><<<blocks_for(count), kThreads, 0, s>>>((T *)y, b, n, c, hw);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_chan_sum(float *db, const void *dy, int dt, int n, int c, int hw,
                                      cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (c > 0)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            chan_sum_kernel<T><<<c, kThreads, 0, s>>>(db, (const T *)dy, n, c, hw);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_xent(const void *z, int dt, const int32_t *labels, int n,
                                  int classes, void *dz, float scale, double *loss_rows,
                                  int32_t *correct, cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (n > 0)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            xent_kernel<T><<<blocks_for((size_t)n), kThreads, 0, s>>>(
                (const T *)z, labels, n, classes, (T *)dz, scale, loss_rows, correct);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_unscale(float *g, size_t count, float inv, int32_t *found,
                                     cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (count) unscale_kernel<<<blocks_for(count), kThreads, 0, s>>>(g, count, inv, found);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_sgd(float *w, const float *g, float *m, size_t count, float lr,
                                 float wd, float mom, int first, int nesterov,
                                 const int32_t *skip, cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (count)
        sgd_kernel<<<blocks_for(count), kThreads, 0, s>>>(w, g, m, count, lr, wd, mom, first,
                                                          nesterov, skip);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_adam(float *w, const float *g, float *m1, float *m2, size_t count,
                                  float step, float bc2, float b1, float b2, float eps, float wd,
                                  const int32_t *skip, cudaStream_t s) {
    (void)cudaGetLastError(); // an earlier non-sticky error is not ours to report
    if (count)
        adam_kernel<<<blocks_for(count), kThreads, 0, s>>>(w, g, m1, m2, count, step, bc2, b1, b2,
                                                           eps, wd, skip);
    return cudaGetLastError();
}
