// cuda/nn_own.cu - the CUDA backend's own batch norm (training forward with running statistics,
// inference, backward), ReLU (forward, backward from the output) and 2-D max/average pooling
// (forward, backward) kernels: exact re-implementations of PyTorch's semantics, used where
// legacy cuDNN does not support the activation type (bfloat16 batch norm) and, in a test mode,
// for float32 executors (checked against the CPU backend at float32 tolerance).
//
// Design. Activation kernels take the element type at run time (CB__DT_*) and dispatch to a
// template instance (with_type); loads and stores convert to and from float32 (ld, st) and all
// arithmetic is float32. Batch norm's reductions run one 512-thread block per channel: each
// thread sums a strided share of the channel's M = n * hw values in float32, the block combines
// the 512 partial sums by a tree in shared memory in double (fixed order: deterministic), first
// for the mean, then a second pass over the data for sum((x - mean)^2) (two-pass variance, not
// E[x^2] - E[x]^2), and the same block then writes its channel's outputs (forward y, backward
// dx), so no statistics travel between kernels. Element-wise kernels (batch norm inference,
// ReLU, pooling) are grid-stride loops of 256-thread blocks (at most 4096 blocks) with size_t
// element offsets. Pooling backward is a gather (one thread per input element summing, in a
// fixed order, the contributions of the output windows covering it; max pooling recomputes each
// window's argmax from x), so no atomics and bit-identical results run to run.
//
// The per-element pooling functions and the channel walk are __host__ __device__ so that a host
// program can check their index arithmetic against a brute-force reference.
//
// Thread safety: stateless; every wrapper only enqueues on the caller's stream.
#include "cuda/nn_own.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

#include <type_traits>

namespace {

constexpr int kThreads = 256;    // element-wise kernels
constexpr int kBnThreads = 512;  // batch norm: one block per channel (a power of two)

unsigned blocks_for(size_t count) {
    size_t b = (count + kThreads - 1) / kThreads;
    return (unsigned)(b < 4096 ? b : 4096);
}

__host__ __device__ inline float ld(const float *p, size_t i) { return p[i]; }
__host__ __device__ inline float ld(const __nv_bfloat16 *p, size_t i) {
    return __bfloat162float(p[i]);
}
__host__ __device__ inline float ld(const __half *p, size_t i) { return __half2float(p[i]); }
__host__ __device__ inline void st(float *p, size_t i, float v) { p[i] = v; }
__host__ __device__ inline void st(__nv_bfloat16 *p, size_t i, float v) {
    p[i] = __float2bfloat16(v);
}
__host__ __device__ inline void st(__half *p, size_t i, float v) { p[i] = __float2half(v); }

#define CB__GRID_LOOP(i, count)                                                                    \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (count);                    \
         i += (size_t)gridDim.x * blockDim.x)

__host__ __device__ inline int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ inline int imax(int a, int b) { return a > b ? a : b; }

// ---- Batch norm ----------------------------------------------------------------------------

// Walks the k-th, (k + step)-th, ... of one channel's M = n * hw values (k = img * hw + pos,
// image-major) without a division per element: a step advances img by step / hw and pos by
// step % hw, with at most one carry. The walk is over when img reaches n (k >= M).
struct ChanWalk {
    size_t img;
    int pos;
    size_t dimg;
    int dpos;
    __host__ __device__ ChanWalk(int k, int step, int hw)
        : img((size_t)(k / hw)), pos(k % hw), dimg((size_t)(step / hw)), dpos(step % hw) {}
    __host__ __device__ void next(int hw) {
        img += dimg;
        pos += dpos;
        if (pos >= hw) {
            pos -= hw;
            img++;
        }
    }
    // Element offset of the current value in NCHW x: ((img * c + ch) * hw + pos).
    __host__ __device__ size_t off(int c, int ch, int hw) const {
        return (img * (size_t)c + (size_t)ch) * (size_t)hw + (size_t)pos;
    }
};

// Sum of every thread's v over the block (blockDim.x == kBnThreads), returned to every thread.
// Tree in double over part[kBnThreads]: a fixed order, so deterministic.
__device__ double block_sum(double v, double *part) {
    part[threadIdx.x] = v;
    __syncthreads();
    for (int width = kBnThreads / 2; width > 0; width /= 2) {
        if ((int)threadIdx.x < width) part[threadIdx.x] += part[threadIdx.x + width];
        __syncthreads();
    }
    double r = part[0];
    __syncthreads();  // every thread has read part[0] before part is written again
    return r;
}

// Training forward of channel blockIdx.x: statistics, running update, saves, then y.
template <typename T>
__global__ void __launch_bounds__(kBnThreads)
    bn_train_kernel(const T *x, T *y, int n, int c, int hw, const float *gamma,
                    const float *beta, float momentum, float eps, float *run_mean,
                    float *run_var, float *save_mean, float *save_invstd) {
    __shared__ double part[kBnThreads];
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * hw;
    float s = 0;
    for (ChanWalk it((int)threadIdx.x, kBnThreads, hw); it.img < (size_t)n; it.next(hw))
        s += ld(x, it.off(c, ch, hw));
    const float mean = (float)(block_sum(s, part) / (double)m);
    float q = 0;
    for (ChanWalk it((int)threadIdx.x, kBnThreads, hw); it.img < (size_t)n; it.next(hw)) {
        float d = ld(x, it.off(c, ch, hw)) - mean;
        q += d * d;
    }
    const float var = (float)(block_sum(q, part) / (double)m);
    const float invstd = 1.0f / sqrtf(var + eps);
    if (threadIdx.x == 0) {
        if (save_mean) save_mean[ch] = mean;
        if (save_invstd) save_invstd[ch] = invstd;
        // Unbiased variance as the CPU backend computes it (factor in double); M == 1: var.
        float unbiased = m > 1 ? (float)((double)var * ((double)m / (double)(m - 1))) : var;
        if (run_mean) run_mean[ch] = (1 - momentum) * run_mean[ch] + momentum * mean;
        if (run_var) run_var[ch] = (1 - momentum) * run_var[ch] + momentum * unbiased;
    }
    const float g = gamma ? gamma[ch] : 1.0f, b = beta ? beta[ch] : 0.0f;
    // Each element is read and written by the same thread, after both reductions: y may be x.
    for (ChanWalk it((int)threadIdx.x, kBnThreads, hw); it.img < (size_t)n; it.next(hw)) {
        size_t o = it.off(c, ch, hw);
        st(y, o, (ld(x, o) - mean) * invstd * g + b);
    }
}

template <typename T>
__global__ void bn_infer_kernel(const T *x, T *y, int c, int hw, size_t count,
                                const float *gamma, const float *beta, const float *run_mean,
                                const float *run_var, float eps) {
    CB__GRID_LOOP(i, count) {
        int ch = (int)((i / (size_t)hw) % (size_t)c);
        float g = gamma ? gamma[ch] : 1.0f, b = beta ? beta[ch] : 0.0f;
        st(y, i, (ld(x, i) - run_mean[ch]) / sqrtf(run_var[ch] + eps) * g + b);
    }
}

// Backward of channel blockIdx.x: sum(dy), sum(dy * xhat), then dx.
template <typename T>
__global__ void __launch_bounds__(kBnThreads)
    bn_bwd_kernel(const T *x, const T *dy, T *dx, int n, int c, int hw, const float *gamma,
                  const float *save_mean, const float *save_invstd, float *dgamma, float *dbeta,
                  int accum) {
    __shared__ double part[kBnThreads];
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * hw;
    const float mean = save_mean[ch], invstd = save_invstd[ch];
    float sdy = 0, sdyx = 0;
    for (ChanWalk it((int)threadIdx.x, kBnThreads, hw); it.img < (size_t)n; it.next(hw)) {
        size_t o = it.off(c, ch, hw);
        float d = ld(dy, o);
        sdy += d;
        sdyx += d * ((ld(x, o) - mean) * invstd);
    }
    const double sum_dy = block_sum(sdy, part);
    const double sum_dyx = block_sum(sdyx, part);
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[ch] = (float)sum_dyx;
        if (dbeta) dbeta[ch] = (float)sum_dy;
    }
    if (!dx) return;  // uniform over the block: no barrier follows
    const float mdy = (float)(sum_dy / (double)m), mdyx = (float)(sum_dyx / (double)m);
    const float k = (gamma ? gamma[ch] : 1.0f) * invstd;
    for (ChanWalk it((int)threadIdx.x, kBnThreads, hw); it.img < (size_t)n; it.next(hw)) {
        size_t o = it.off(c, ch, hw);
        float xhat = (ld(x, o) - mean) * invstd;
        float v = (ld(dy, o) - mdy - xhat * mdyx) * k;
        st(dx, o, accum ? ld(dx, o) + v : v);
    }
}

// ---- ReLU -----------------------------------------------------------------------------------

__host__ __device__ inline float relu(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }
__host__ __device__ inline float relu_grad(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

template <typename T>
__global__ void relu_fwd_kernel(const T *x, T *y, size_t count) {
    CB__GRID_LOOP(i, count) st(y, i, relu(ld(x, i)));
}

template <typename T>
__global__ void relu_bwd_kernel(const T *y, const T *dy, T *dx, size_t count, int accum) {
    CB__GRID_LOOP(i, count) {
        float g = relu_grad(ld(y, i), ld(dy, i));
        st(dx, i, accum ? ld(dx, i) + g : g);
    }
}

// ---- Pooling --------------------------------------------------------------------------------

struct PoolGeom {
    int h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

// Max pooling's window (oy, ox) over one plane (x + base, h x w), as PyTorch's
// max_pool_forward_nchw: the window clipped to the input, best = -inf, argmax initially its
// first in-bounds element, replaced on (v > best || isnan(v)). Returns the argmax's offset in
// the plane (ih * w + iw), or -1 when the window has no in-bounds element; *val = best.
template <typename T>
__host__ __device__ inline long long pool_argmax(const T *x, size_t base, const PoolGeom &g,
                                                 int oy, int ox, float *val) {
    int hs = oy * g.sh - g.ph, ws = ox * g.sw - g.pw;
    int he = imin(hs + g.kh, g.h), we = imin(ws + g.kw, g.w);
    hs = imax(hs, 0);
    ws = imax(ws, 0);
    float best = -INFINITY;
    if (hs >= he || ws >= we) {
        *val = best;
        return -1;
    }
    long long arg = (long long)hs * g.w + ws;
    for (int ih = hs; ih < he; ih++)
        for (int iw = ws; iw < we; iw++) {
            long long o = (long long)ih * g.w + iw;
            float v = ld(x, base + (size_t)o);
            if (v > best || v != v) {
                best = v;
                arg = o;
            }
        }
    *val = best;
    return arg;
}

// Average pooling's divisor of window (oy, ox) with count_include_pad, PyTorch's formula:
// the window clipped to the padded input, (hend - hstart) * (wend - wstart). The in-bounds
// range is returned in [*hs, *he) x [*ws, *we) (empty when none).
__host__ __device__ inline int pool_avg_window(const PoolGeom &g, int oy, int ox, int *hs,
                                               int *he, int *ws, int *we) {
    int h0 = oy * g.sh - g.ph, w0 = ox * g.sw - g.pw;
    int h1 = imin(h0 + g.kh, g.h + g.ph), w1 = imin(w0 + g.kw, g.w + g.pw);
    int size = (h1 - h0) * (w1 - w0);
    *hs = imax(h0, 0);
    *ws = imax(w0, 0);
    *he = imin(h1, g.h);
    *we = imin(w1, g.w);
    return size;
}

// Average of window (oy, ox): in-bounds sum (float, row-major) / divisor; 0 when no element is
// in bounds (PyTorch's avg_pool2d_out_cuda_frame).
template <typename T>
__host__ __device__ inline float pool_avg(const T *x, size_t base, const PoolGeom &g, int oy,
                                          int ox) {
    int hs, he, ws, we;
    int size = pool_avg_window(g, oy, ox, &hs, &he, &ws, &we);
    if (hs >= he || ws >= we) return 0.0f;
    float sum = 0;
    for (int ih = hs; ih < he; ih++)
        for (int iw = ws; iw < we; iw++) sum += ld(x, base + (size_t)ih * g.w + iw);
    return sum / (float)size;
}

// Output element i of y [planes, oh, ow].
template <typename T>
__host__ __device__ inline float pool_out(const T *x, const PoolGeom &g, int is_max, size_t i) {
    int ox = (int)(i % (size_t)g.ow);
    size_t t = i / (size_t)g.ow;
    int oy = (int)(t % (size_t)g.oh);
    size_t plane = t / (size_t)g.oh;
    size_t base = plane * (size_t)g.h * (size_t)g.w;
    if (!is_max) return pool_avg(x, base, g, oy, ox);
    float v;
    pool_argmax(x, base, g, oy, ox, &v);
    return v;
}

// Gradient of input element i of x [planes, h, w]: the windows covering (ih, iw) are
// oy in [oy0, oy1) with oy0 = first oy whose window end oy * sh - ph + kh - 1 >= ih, i.e.
// ceil((ih + ph - kh + 1) / sh) clamped at 0, and oy1 = (ih + ph) / sh + 1 clamped at oh
// (ih + ph >= 0, so every division here is of non-negative numbers); likewise ox. Summed in
// row-major window order (PyTorch's avg_pool2d_backward / max_pool_backward_nchw gathers).
template <typename T>
__host__ __device__ inline float pool_grad(const T *x, const T *dy, const PoolGeom &g,
                                           int is_max, size_t i) {
    int iw = (int)(i % (size_t)g.w);
    size_t t = i / (size_t)g.w;
    int ih = (int)(t % (size_t)g.h);
    size_t plane = t / (size_t)g.h;
    size_t xbase = plane * (size_t)g.h * (size_t)g.w;
    size_t ybase = plane * (size_t)g.oh * (size_t)g.ow;
    int hp = ih + g.ph, wp = iw + g.pw;
    int oy0 = hp < g.kh ? 0 : (hp - g.kh) / g.sh + 1, oy1 = imin(hp / g.sh + 1, g.oh);
    int ox0 = wp < g.kw ? 0 : (wp - g.kw) / g.sw + 1, ox1 = imin(wp / g.sw + 1, g.ow);
    long long self = (long long)ih * g.w + iw;
    float grad = 0;
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = ox0; ox < ox1; ox++) {
            size_t o = ybase + (size_t)oy * g.ow + ox;
            if (is_max) {
                float v;
                if (pool_argmax(x, xbase, g, oy, ox, &v) == self) grad += ld(dy, o);
            } else {
                int hs, he, ws, we;
                int size = pool_avg_window(g, oy, ox, &hs, &he, &ws, &we);
                if (hs >= he || ws >= we) continue;
                grad += ld(dy, o) / (float)size;
            }
        }
    return grad;
}

template <typename T>
__global__ void pool_fwd_kernel(const T *x, T *y, PoolGeom g, int is_max, size_t count) {
    CB__GRID_LOOP(i, count) st(y, i, pool_out(x, g, is_max, i));
}

template <typename T>
__global__ void pool_bwd_kernel(const T *x, const T *dy, T *dx, PoolGeom g, int is_max,
                                size_t count, int accum) {
    CB__GRID_LOOP(i, count) {
        float v = pool_grad(x, dy, g, is_max, i);
        st(dx, i, accum ? ld(dx, i) + v : v);
    }
}

// Calls f with a null pointer of the C++ type of element type dt (only its type is used).
template <typename F>
void with_type(int dt, F f) {
    if (dt == CB__DT_BF16) f((__nv_bfloat16 *)nullptr);
    else if (dt == CB__DT_F16) f((__half *)nullptr);
    else f((float *)nullptr);
}

bool pool_geom_ok(int kh, int kw, int sh, int sw, int ph, int pw) {
    return kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0;
}

}  // namespace

extern "C" cudaError_t cb__k_bn_train_fwd(const void *x, void *y, int dt, int n, int c, int hw,
                                          const float *gamma, const float *beta, float momentum,
                                          float eps, float *run_mean, float *run_var,
                                          float *save_mean, float *save_invstd, cudaStream_t s) {
    (void)cudaGetLastError();
    if (n > 0 && c > 0 && hw > 0)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            bn_train_kernel<T><<<c, kBnThreads, 0, s>>>((const T *)x, (T *)y, n, c, hw, gamma,
                                                        beta, momentum, eps, run_mean, run_var,
                                                        save_mean, save_invstd);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_bn_infer_fwd(const void *x, void *y, int dt, int n, int c, int hw,
                                          const float *gamma, const float *beta,
                                          const float *run_mean, const float *run_var, float eps,
                                          cudaStream_t s) {
    (void)cudaGetLastError();
    if (n > 0 && c > 0 && hw > 0) {
        size_t count = (size_t)n * c * hw;
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            bn_infer_kernel<T><<<blocks_for(count), kThreads, 0, s>>>(
                (const T *)x, (T *)y, c, hw, count, gamma, beta, run_mean, run_var, eps);
        });
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_bn_bwd(const void *x, const void *dy, void *dx, int dt, int n,
                                    int c, int hw, const float *gamma, const float *save_mean,
                                    const float *save_invstd, float *dgamma, float *dbeta,
                                    int accum, cudaStream_t s) {
    (void)cudaGetLastError();
    if (n > 0 && c > 0 && hw > 0)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            bn_bwd_kernel<T><<<c, kBnThreads, 0, s>>>((const T *)x, (const T *)dy, (T *)dx, n, c,
                                                      hw, gamma, save_mean, save_invstd, dgamma,
                                                      dbeta, accum);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_relu_fwd(const void *x, void *y, int dt, size_t count,
                                      cudaStream_t s) {
    (void)cudaGetLastError();
    if (count)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            relu_fwd_kernel<T><<<blocks_for(count), kThreads, 0, s>>>((const T *)x, (T *)y,
                                                                      count);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_relu_bwd(const void *y, const void *dy, void *dx, int dt,
                                      size_t count, int accum, cudaStream_t s) {
    (void)cudaGetLastError();
    if (count)
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            relu_bwd_kernel<T><<<blocks_for(count), kThreads, 0, s>>>(
                (const T *)y, (const T *)dy, (T *)dx, count, accum);
        });
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_pool_fwd(const void *x, void *y, int dt, int max, int n, int c,
                                      int h, int w, int oh, int ow, int kh, int kw, int sh,
                                      int sw, int ph, int pw, cudaStream_t s) {
    (void)cudaGetLastError();
    if (!pool_geom_ok(kh, kw, sh, sw, ph, pw)) return cudaErrorInvalidValue;
    if (n > 0 && c > 0 && h > 0 && w > 0 && oh > 0 && ow > 0) {
        size_t count = (size_t)n * c * oh * ow;
        PoolGeom g = {h, w, oh, ow, kh, kw, sh, sw, ph, pw};
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            pool_fwd_kernel<T><<<blocks_for(count), kThreads, 0, s>>>((const T *)x, (T *)y, g,
                                                                      max, count);
        });
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_pool_bwd(const void *x, const void *dy, void *dx, int dt, int max,
                                      int n, int c, int h, int w, int oh, int ow, int kh, int kw,
                                      int sh, int sw, int ph, int pw, int accum, cudaStream_t s) {
    (void)cudaGetLastError();
    if (!pool_geom_ok(kh, kw, sh, sw, ph, pw)) return cudaErrorInvalidValue;
    // oh or ow of 0 still launches: no window covers any input, so dx = 0 (or is unchanged).
    if (n > 0 && c > 0 && h > 0 && w > 0 && oh >= 0 && ow >= 0) {
        size_t count = (size_t)n * c * h * w;
        PoolGeom g = {h, w, oh, ow, kh, kw, sh, sw, ph, pw};
        with_type(dt, [&](auto *t) {
            using T = typename std::remove_pointer<decltype(t)>::type;
            pool_bwd_kernel<T><<<blocks_for(count), kThreads, 0, s>>>(
                (const T *)x, (const T *)dy, (T *)dx, g, max, count, accum);
        });
    }
    return cudaGetLastError();
}
