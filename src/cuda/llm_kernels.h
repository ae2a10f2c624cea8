/* cuda/llm_kernels.h - the CUDA module's own kernels of the LLM forward pass (llm_kernels.cu),
 * for llm_model.c: embedding gather, RMSNorm, bias add, RoPE, KV write into paged blocks,
 * paged attention (prefill and decode), SiLU * up, residual add. The matrix products are
 * cuBLAS's (llm_model.c).
 *
 * Types: dt is CB__LK_F32 or CB__LK_BF16 (the model's dtype: its matrices, the activations fed
 * to them and the KV cache); the residual stream x, q, k, v, and the products' outputs are
 * float32; all arithmetic is float32 (the RMS's scale and the RoPE angles' cos/sin in double).
 * bfloat16 stores round to nearest even (as cb_lm_f32_to_bf16).
 *
 * Every wrapper clears a pending non-sticky error (cudaGetLastError), enqueues its kernel on
 * `s` and returns cudaGetLastError() (launch errors; execution errors surface at the stream's
 * synchronisation). Counts of 0 launch nothing. Shared by C and nvcc, so only C types here.
 */
#ifndef CB_CUDA_LLM_KERNELS_H
#define CB_CUDA_LLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CB__LK_F32 = 0, CB__LK_BF16 = 1 };  /* the values of cb_lm_dtype */
#define CB__LK_HEAD_DIM_MAX 1024           /* CB_LM_HEAD_DIM_MAX: attention's shared arrays */

/* x[t][i] = embed[tokens[t]][i] (float32 out), t < n_tokens, i < hidden. */
cudaError_t cb__lk_embed(const void *embed, int dt, const int32_t *tokens, int n_tokens,
                         int hidden, float *x, cudaStream_t s);

/* Row r < n_rows of y (dt, n wide) = RMSNorm of row rows[r] of x (row r when rows is NULL):
 * x * (1 / sqrt(mean(x^2) + eps)) * w, as (x * inv) * w. y may be x (dt f32, rows NULL). */
cudaError_t cb__lk_rmsnorm(const float *x, const int32_t *rows, int n_rows, int n,
                           const float *w, double eps, void *y, int dt, cudaStream_t s);

/* y[r][j] += b[j] for r < rows, j < n. */
cudaError_t cb__lk_add_bias(float *y, const float *b, int rows, int n, cudaStream_t s);

/* rotate_half RoPE in place on x [n_tokens, n_heads * hd]: for token t at position pos[t],
 * pair (j, j + hd/2) of every head rotated by angle = (float)pos[t] * inv_freq[j] (a float32
 * product, as transformers), cos and sin of it taken in double and rounded to float. */
cudaError_t cb__lk_rope(float *x, int n_tokens, int n_heads, int hd, const int32_t *pos,
                        const float *inv_freq, cudaStream_t s);

/* Writes keys k and values v [n_tokens, n_kv * hd] (float32) of one layer into the pool (dt):
 * token t goes to block blk[t], slot off[t]. A block is block_elems elements laid out as
 * [layer][k|v][kv_head][block_tokens][hd]; layer_off is the element offset of this layer's
 * keys of head 0 in a block (its values follow n_kv * bt * hd elements later). */
cudaError_t cb__lk_kv_write(const float *k, const float *v, int n_tokens, int n_kv, int hd,
                            const int32_t *blk, const int32_t *off, void *pool, int dt,
                            size_t block_elems, size_t layer_off, int bt, cudaStream_t s);

/* Causal attention of one layer over the paged cache (the step's keys and values already
 * written): query token t (position pos[t], block table tables + tbl_off[t]) and head h
 * attend to positions 0..pos[t] of kv head h / (n_heads / n_kv). One thread block per
 * (token, head); keys visited in chunks with an online softmax (float32). */
typedef struct cb__lk_attn {
    const float *q;                /* [n_tokens, n_heads * hd] */
    void *out;                     /* [n_tokens, n_heads * hd], dt */
    const void *pool;              /* dt, block b at b * block_elems elements */
    int dt;
    size_t block_elems;
    size_t k_off, v_off;           /* element offsets of this layer's keys / values, head 0 */
    int n_tokens, n_heads, n_kv, hd, bt;
    const int32_t *pos, *tbl_off, *tables;
    float scale;                   /* 1 / sqrt(hd) */
} cb__lk_attn;
cudaError_t cb__lk_attention(const cb__lk_attn *a, cudaStream_t s);

/* h[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u, i < count (h in dt). */
cudaError_t cb__lk_swiglu(const float *g, const float *u, size_t count, void *h, int dt,
                          cudaStream_t s);

/* x[r][j] += y[r][j] (+ b[j] when b is set), r < rows, j < n. */
cudaError_t cb__lk_residual(float *x, const float *y, const float *b, int rows, int n,
                            cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
