/* llm/lm_kernels.h - the CPU kernels of the decoder forward pass (lm_model.c): matrix products
 * against float32 or bfloat16 weights, RMSNorm, rotary embeddings, SwiGLU, attention over the
 * paged KV cache. Internal to src/llm (cb__ prefix).
 *
 * Every kernel has two paths: AVX2+FMA (functions compiled with target("avx2,fma"), chosen at
 * run time by cb__lm_kctx.avx2) and a plain scalar one (the reference, and the fallback on CPUs
 * without AVX2). Each output element is computed by one thread in an order fixed by its own
 * inputs alone (never by the number of tokens, by where a row sits in the batch, or by the
 * thread count), so a sequence's results are bit-identical alone or in any batch
 * (lm_kernels.c). */
#ifndef CB_LLM_LM_KERNELS_H
#define CB_LLM_LM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "llm/lm_weights.h"

/* How kernels run: threads (OpenMP) and which path. */
typedef struct cb__lm_kctx {
    int threads;
    int avx2;     /* 1: the AVX2+FMA path; 0: the scalar path */
} cb__lm_kctx;

/* Rows of W one micro-kernel call covers (a panel). */
#define CB__LM_PANEL_ROWS 3

/* 1 when this CPU runs the AVX2+FMA path. */
int cb__lm_cpu_avx2(void);

/* One output of a product: y[t][j] = sum_k x[t][k] * w[j][k] + bias[j], for j <
 * n. Row t of the output starts at yrows[t] when yrows is set, else at y + t *
 * ldy. */
typedef struct cb__lm_mm_part {
    const void *w;     /* [n, k] row-major, float32 or bfloat16 */
    const float *bias; /* n floats or NULL */
    int64_t n;
    float *y;
    int64_t ldy;
    float *const *yrows; /* NULL, or t row pointers */
} cb__lm_mm_part;
#define CB__LM_MM_PARTS_MAX 4

/* The products of x [t, k] (row stride ldx) with each part's matrix (all of
 * dtype wd), in one parallel pass over the parts' rows (q, k and v together;
 * gate and up together). */
void cb__lm_matmul(const cb__lm_kctx *c, const float *x, int64_t ldx, int64_t t, int64_t k,
                   cb_lm_dtype wd, const cb__lm_mm_part *parts, int n_parts);

/* ---- Packed products (the layers' matrices) ----
 *
 * A matrix [n, k] packed for the broadcast micro-kernel: panels of CB__LM_NR output columns,
 * panel p holding, for kk = 0..k-1 in order, the CB__LM_NR weights w[p * NR + j][kk] (columns
 * past n are zeros). float32: in column order. bfloat16: as 8 32-bit words, word i = column i
 * in its low half and column 8 + i in its high half (so that a shift and a mask widen the 16
 * columns to two float32 vectors). Panel after panel, so one thread's panels are one stream.
 *
 * Order: each output element is the fused multiply-add chain over kk = 0, 1, 2, ... from 0
 * (fmaf in the scalar path, the same bits), then the bias: a function of its own inputs alone,
 * as for cb__lm_matmul. */
#define CB__LM_NR 16

/* Bytes of the packed form of an [n, k] matrix of dtype wd (a multiple of 64). */
size_t cb__lm_packed_bytes(int64_t n, int64_t k, cb_lm_dtype wd);

/* Packs w [n, k] (row-major, dtype wd) into dst (cb__lm_packed_bytes, any alignment; 64-byte
 * aligned is best). */
void cb__lm_pack(void *dst, const void *w, int64_t n, int64_t k, cb_lm_dtype wd);

/* Row r (< n) of a packed [n, k] matrix, widened to float32 into dst (k floats): the
 * embedding lookup of a packed tied embedding. */
void cb__lm_packed_row(float *dst, const void *packed, int64_t n, int64_t k, int64_t r,
                       cb_lm_dtype wd);

/* As cb__lm_matmul with packed matrices (parts[i].w from cb__lm_pack).
 * Above 6 tokens each thread takes an 83 KiB buffer for the call (cb_malloc; without it the
 * outputs accumulate in y directly: the same bits, slower). */
void cb__lm_matmul_packed(const cb__lm_kctx *c, const float *x, int64_t ldx, int64_t t, int64_t k,
                          cb_lm_dtype wd, const cb__lm_mm_part *parts, int n_parts);

/* y[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w, per row of n (y may be x). */
void cb__lm_rmsnorm(const cb__lm_kctx *c, float *y, const float *x, const float *w, int64_t t,
                    int64_t n, double eps);

/* Rotary embedding (Hugging Face rotate_half: pairs (i, i + hd/2)) of n_heads
 * heads of hd in each of t rows of stride ld; cos/sin [t, hd/2]. */
void cb__lm_rope(float *x, int64_t ld, int64_t t, int64_t n_heads, int64_t hd, const float *cos_t,
                 const float *sin_t);

/* g[i] = silu(g[i]) * u[i] for t rows of n. */
void cb__lm_swiglu(const cb__lm_kctx *c, float *g, const float *u, int64_t t, int64_t n);

/* x = GELU(x) (erf form) for t rows of n (lm_kernels.c: erf within 1.5e-7 on the AVX2 path). */
void cb__lm_gelu(const cb__lm_kctx *c, float *x, int64_t t, int64_t n);

/* v[i] = e^(v[i] - m) for i < n (exp8 on the AVX2 path); returns their sum. */
float cb__lm_exp_shifted(const cb__lm_kctx *c, float *v, int64_t n, float m);

/* sum a[i] * b[i] over n floats. */
float cb__lm_dot(const cb__lm_kctx *c, const float *a, const float *b, int64_t n);

/* Attention of one step over the paged cache (the keys and values of the step's
 * tokens already written). For each sequence and query head, each of its
 * n_tokens tokens (position pos0 + i) attends to positions 0..pos0 + i of its
 * blocks. */
typedef struct cb__lm_attn_seq {
    int64_t row0; /* first row of the sequence's tokens in q and out */
    int32_t n_tokens, pos0;
    const int32_t *blocks;
} cb__lm_attn_seq;

typedef struct cb__lm_attn {
    const float *q; /* [rows, n_heads * hd] (ld q_ld) */
    int64_t q_ld;
    float *out; /* [rows, n_heads * hd] (ld out_ld) */
    int64_t out_ld;
    int64_t n_heads, n_kv_heads, hd;
    float scale;
    cb_lm_dtype kv_dtype;
    const unsigned char *pool; /* block b at pool + b * block_bytes */
    size_t block_bytes;
    int64_t block_tokens;
    int64_t k_off, v_off; /* element offsets within a block of this layer's kv head 0 keys
                             and values; head g adds g * block_tokens * hd */
} cb__lm_attn;

void cb__lm_attention(const cb__lm_kctx *c, const cb__lm_attn *a, const cb__lm_attn_seq *seqs,
                      int n_seqs);

#endif
