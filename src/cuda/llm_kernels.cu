// cuda/llm_kernels.cu - the LLM forward pass's own kernels (see llm_kernels.h): everything of
// transformers' Llama / Qwen2 / Qwen3 layer that is not a matrix product.
//
// Design: plain and obviously correct before fast. Element-wise kernels (embedding gather,
// bias, RoPE, KV write, SiLU * up, residual) are grid-stride loops of 256-thread blocks (at
// most 4096 blocks) with size_t offsets. RMSNorm is one 256-thread block per row: float32
// partial sums of squares combined by a fixed tree in shared memory (deterministic), the
// scale computed in double like the CPU path (llm/lm_kernels.c). RoPE takes each angle as the
// float32 product (float)pos * inv_freq[j] and its cos/sin in double rounded to float, which
// is what the CPU path computes on the host.
//
// Attention: one 128-thread block per (query token, head), so prefill and decode are the same
// kernel. The query is staged in shared memory; keys are visited in chunks of 128 positions
// from position 0: each warp takes every 4th position of a chunk and computes its score with
// the lanes striding over head_dim (coalesced reads of the key row) and a shuffle reduction;
// the chunk's max updates the running max m of an online softmax (running sum l and the
// accumulator rescaled by exp(m_old - m_new)); each thread then owns head_dim elements
// i = tid, tid + 128, ... of the accumulator (shared memory) and adds sum_j e_j * v_j[i] over
// the chunk (coalesced reads of value rows). Every thread computes the chunk's max and sum
// itself in the same order, so no second reduction is needed. Block ids come from the
// sequence's table per position (j / block_tokens); nothing is cached across chunks. Decode
// over long contexts with few heads leaves most SMs idle (one block per head): correct, not
// fast (a split-K kernel is the known next step).
//
// Thread safety: stateless; every wrapper only enqueues on the caller's stream.
#include "cuda/llm_kernels.h"

#include <cuda_bf16.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;      // element-wise and RMSNorm blocks (a power of two)
constexpr int kAttnThreads = 128;  // attention: 4 warps
constexpr int kAttnChunk = 128;    // positions per online-softmax chunk
constexpr int kWarp = 32;

unsigned blocks_for(size_t count) {
    size_t b = (count + kThreads - 1) / kThreads;
    return (unsigned)(b < 4096 ? b : 4096);
}

__device__ inline float ld(const float *p, size_t i) { return p[i]; }
__device__ inline float ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ inline void st(float *p, size_t i, float v) { p[i] = v; }
__device__ inline void st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

#define CB__GRID_LOOP(i, count)                                                                    \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (count);                    \
         i += (size_t)gridDim.x * blockDim.x)

// ---- Element-wise ------------------------------------------------------------------------------

template <typename T>
__global__ void embed_kernel(const T *e, const int32_t *tokens, int hidden, size_t count,
                             float *x) {
    CB__GRID_LOOP(i, count) {
        const size_t t = i / (size_t)hidden, j = i % (size_t)hidden;
        x[i] = ld(e, (size_t)tokens[t] * (size_t)hidden + j);
    }
}

__global__ void add_bias_kernel(float *y, const float *b, int n, size_t count) {
    CB__GRID_LOOP(i, count) y[i] += b[i % (size_t)n];
}

__global__ void residual_kernel(float *x, const float *y, const float *b, int n, size_t count) {
    CB__GRID_LOOP(i, count) x[i] += b ? y[i] + b[i % (size_t)n] : y[i];
}

template <typename T>
__global__ void swiglu_kernel(const float *g, const float *u, size_t count, T *h) {
    CB__GRID_LOOP(i, count) {
        const float a = g[i];
        st(h, i, a / (1.0f + expf(-a)) * u[i]);
    }
}

__global__ void rope_kernel(float *x, int n_heads, int hd, const int32_t *pos,
                            const float *inv_freq, size_t count) {
    const int half = hd / 2;
    CB__GRID_LOOP(i, count) {  // count = n_tokens * n_heads * half
        const size_t per_tok = (size_t)n_heads * half;
        const size_t t = i / per_tok, r = i % per_tok;
        const size_t h = r / half;
        const int j = (int)(r % half);
        const float ang = __fmul_rn((float)pos[t], inv_freq[j]);  // float32, never fused
        const float c = (float)cos((double)ang), sn = (float)sin((double)ang);
        float *v = x + (t * n_heads + h) * hd;
        const float a = v[j], b = v[j + half];
        v[j] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn));
        v[j + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn));
    }
}

template <typename T>
__global__ void kv_write_kernel(const float *k, const float *v, int n_kv, int hd,
                                const int32_t *blk, const int32_t *off, T *pool,
                                size_t block_elems, size_t layer_off, int bt, size_t count) {
    const size_t kvd = (size_t)n_kv * hd;
    const size_t part = kvd * (size_t)bt;  // elements of one layer's keys (or values) in a block
    CB__GRID_LOOP(i, count) {  // count = n_tokens * 2 * kvd
        const size_t t = i / (2 * kvd), r = i % (2 * kvd);
        const size_t kind = r / kvd, e = r % kvd;
        const size_t g = e / hd, j = e % hd;
        const float val = kind ? v[t * kvd + e] : k[t * kvd + e];
        const size_t dst = (size_t)blk[t] * block_elems + layer_off + kind * part +
                           (g * (size_t)bt + (size_t)off[t]) * hd + j;
        st(pool, dst, val);
    }
}

// ---- RMSNorm -----------------------------------------------------------------------------------

// Sum of every thread's v over the block (blockDim.x == kThreads), returned to every thread;
// a fixed tree, so deterministic.
__device__ float block_sum(float v, float *part) {
    part[threadIdx.x] = v;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
        if ((int)threadIdx.x < width) part[threadIdx.x] += part[threadIdx.x + width];
        __syncthreads();
    }
    const float r = part[0];
    __syncthreads();  // every thread has read part[0] before part is written again
    return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_kernel(const float *x, const int32_t *rows, int n, const float *w, double eps, T *y) {
    __shared__ float part[kThreads];
    const size_t r = blockIdx.x;
    const float *xr = x + (rows ? (size_t)rows[r] : r) * (size_t)n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += kThreads) ss += xr[i] * xr[i];
    ss = block_sum(ss, part);
    const float inv = (float)(1.0 / sqrt((double)ss / (double)n + eps));
    // In place (y == x): each thread rewrites only the elements it read.
    for (int i = threadIdx.x; i < n; i += kThreads) st(y, r * (size_t)n + i, (xr[i] * inv) * w[i]);
}

// ---- Attention ---------------------------------------------------------------------------------

template <typename T>
__device__ inline const T *kv_row(const cb__lk_attn &a, const int32_t *table, size_t head_off,
                                  int j) {
    const size_t b = (size_t)table[j / a.bt];
    return (const T *)a.pool + b * a.block_elems + head_off + (size_t)(j % a.bt) * a.hd;
}

template <typename T>
__global__ void __launch_bounds__(kAttnThreads) attn_kernel(cb__lk_attn a) {
    __shared__ float qs[CB__LK_HEAD_DIM_MAX];
    __shared__ float acc[CB__LK_HEAD_DIM_MAX];
    __shared__ float sc[kAttnChunk];
    const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int hd = a.hd, g = h / (a.n_heads / a.n_kv);
    const int p = a.pos[t];
    const int32_t *table = a.tables + a.tbl_off[t];
    const size_t head_k = a.k_off + (size_t)g * a.bt * hd;
    const size_t head_v = a.v_off + (size_t)g * a.bt * hd;
    const size_t row = ((size_t)t * a.n_heads + h) * hd;
    for (int i = tid; i < hd; i += kAttnThreads) {
        qs[i] = a.q[row + i];
        acc[i] = 0.0f;
    }
    __syncthreads();
    const int warp = tid / kWarp, lane = tid % kWarp, n_warps = kAttnThreads / kWarp;
    float m = -INFINITY, l = 0.0f;
    for (int j0 = 0; j0 <= p; j0 += kAttnChunk) {
        const int n = p + 1 - j0 < kAttnChunk ? p + 1 - j0 : kAttnChunk;
        for (int jj = warp; jj < n; jj += n_warps) {  // uniform per warp: shuffles are safe
            const T *kp = kv_row<T>(a, table, head_k, j0 + jj);
            float s = 0.0f;
            for (int i = lane; i < hd; i += kWarp) s += qs[i] * ld(kp, i);
            for (int o = kWarp / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0) sc[jj] = s * a.scale;
        }
        __syncthreads();
        float cm = -INFINITY;
        for (int jj = 0; jj < n; jj++) cm = fmaxf(cm, sc[jj]);
        const float m_new = fmaxf(m, cm);
        const float f = expf(m - m_new);  // 0 on the first chunk (m = -inf)
        __syncthreads();                  // every thread has read the scores
        for (int jj = tid; jj < n; jj += kAttnThreads) sc[jj] = expf(sc[jj] - m_new);
        __syncthreads();
        float cs = 0.0f;
        for (int jj = 0; jj < n; jj++) cs += sc[jj];
        l = l * f + cs;
        for (int i = tid; i < hd; i += kAttnThreads) {
            float v = acc[i] * f;
            for (int jj = 0; jj < n; jj++)
                v += sc[jj] * ld(kv_row<T>(a, table, head_v, j0 + jj), i);
            acc[i] = v;
        }
        m = m_new;
        __syncthreads();  // before the next chunk's scores overwrite sc
    }
    T *out = (T *)a.out;
    const float inv = 1.0f / l;
    for (int i = tid; i < hd; i += kAttnThreads) st(out, row + i, acc[i] * inv);
}

}  // namespace

// ---- Wrappers ----------------------------------------------------------------------------------

extern "C" cudaError_t cb__lk_embed(const void *embed, int dt, const int32_t *tokens,
                                    int n_tokens, int hidden, float *x, cudaStream_t s) {
    (void)cudaGetLastError();
    const size_t count = (size_t)n_tokens * (size_t)hidden;
    if (count == 0) return cudaSuccess;
    if (dt == CB__LK_BF16)
        embed_kernel<<<blocks_for(count), kThreads, 0, s>>>((const __nv_bfloat16 *)embed, tokens,
                                                            hidden, count, x);
    else
        embed_kernel<<<blocks_for(count), kThreads, 0, s>>>((const float *)embed, tokens, hidden,
                                                            count, x);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_rmsnorm(const float *x, const int32_t *rows, int n_rows, int n,
                                      const float *w, double eps, void *y, int dt,
                                      cudaStream_t s) {
    (void)cudaGetLastError();
    if (n_rows <= 0 || n <= 0) return cudaSuccess;
    if (dt == CB__LK_BF16)
        rmsnorm_kernel<<<n_rows, kThreads, 0, s>>>(x, rows, n, w, eps, (__nv_bfloat16 *)y);
    else
        rmsnorm_kernel<<<n_rows, kThreads, 0, s>>>(x, rows, n, w, eps, (float *)y);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_add_bias(float *y, const float *b, int rows, int n,
                                       cudaStream_t s) {
    (void)cudaGetLastError();
    const size_t count = rows > 0 && n > 0 ? (size_t)rows * (size_t)n : 0;
    if (count == 0) return cudaSuccess;
    add_bias_kernel<<<blocks_for(count), kThreads, 0, s>>>(y, b, n, count);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_rope(float *x, int n_tokens, int n_heads, int hd,
                                   const int32_t *pos, const float *inv_freq, cudaStream_t s) {
    (void)cudaGetLastError();
    const size_t count =
        n_tokens > 0 && n_heads > 0 && hd > 1 ? (size_t)n_tokens * n_heads * (size_t)(hd / 2) : 0;
    if (count == 0) return cudaSuccess;
    rope_kernel<<<blocks_for(count), kThreads, 0, s>>>(x, n_heads, hd, pos, inv_freq, count);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_kv_write(const float *k, const float *v, int n_tokens, int n_kv,
                                       int hd, const int32_t *blk, const int32_t *off,
                                       void *pool, int dt, size_t block_elems, size_t layer_off,
                                       int bt, cudaStream_t s) {
    (void)cudaGetLastError();
    const size_t count =
        n_tokens > 0 && n_kv > 0 && hd > 0 ? (size_t)n_tokens * 2 * (size_t)n_kv * hd : 0;
    if (count == 0) return cudaSuccess;
    if (dt == CB__LK_BF16)
        kv_write_kernel<<<blocks_for(count), kThreads, 0, s>>>(
            k, v, n_kv, hd, blk, off, (__nv_bfloat16 *)pool, block_elems, layer_off, bt, count);
    else
        kv_write_kernel<<<blocks_for(count), kThreads, 0, s>>>(
            k, v, n_kv, hd, blk, off, (float *)pool, block_elems, layer_off, bt, count);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_attention(const cb__lk_attn *a, cudaStream_t s) {
    (void)cudaGetLastError();
    if (a->n_tokens <= 0 || a->n_heads <= 0) return cudaSuccess;
    if (a->hd > CB__LK_HEAD_DIM_MAX || a->n_kv <= 0 || a->n_heads % a->n_kv != 0)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)a->n_tokens, (unsigned)a->n_heads);
    if (a->dt == CB__LK_BF16)
        attn_kernel<__nv_bfloat16><<<grid, kAttnThreads, 0, s>>>(*a);
    else
        attn_kernel<float><<<grid, kAttnThreads, 0, s>>>(*a);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_swiglu(const float *g, const float *u, size_t count, void *h,
                                     int dt, cudaStream_t s) {
    (void)cudaGetLastError();
    if (count == 0) return cudaSuccess;
    if (dt == CB__LK_BF16)
        swiglu_kernel<<<blocks_for(count), kThreads, 0, s>>>(g, u, count, (__nv_bfloat16 *)h);
    else
        swiglu_kernel<<<blocks_for(count), kThreads, 0, s>>>(g, u, count, (float *)h);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__lk_residual(float *x, const float *y, const float *b, int rows, int n,
                                       cudaStream_t s) {
    (void)cudaGetLastError();
    const size_t count = rows > 0 && n > 0 ? (size_t)rows * (size_t)n : 0;
    if (count == 0) return cudaSuccess;
    residual_kernel<<<blocks_for(count), kThreads, 0, s>>>(x, y, b, n, count);
    return cudaGetLastError();
}
