/* llm/lm_kernels.c - CPU kernels of the decoder forward pass (see lm_kernels.h).
 *
 * Design. Two forms of matrix product.
 *
 * The layers' matrices are packed (cb__lm_pack, once, when the model is made) into panels of 16
 * output columns, k-major: the broadcast micro-kernel (pk_tile) keeps 6 tokens x 16 columns in
 * 12 accumulators, and per k loads one 16-column weight row (two vectors; bfloat16 widened in
 * the register by a shift and a mask) and broadcasts each token's x[k]: 15 ymm registers, 12
 * FMAs to 3 vector loads and 6 broadcasts, about 93 % of the FMA peak from L1. The loop nest is
 * the BLIS one cut to this machine: chunks of 256 k (16 KiB of float32 weights, in L1 across
 * all the tokens), token blocks of at most 132 whose [tokens, 256] slice sits in L2, groups of 8
 * panels whose outputs accumulate in a contiguous 66 KiB buffer (rows of y, N floats apart,
 * fell into a few cache sets: the first version ran at 60 % of the kernel's speed), each chunk
 * prefetching the next one the loop visits. With more than 18 tokens a bfloat16 chunk is widened
 * to float32 once and read by every token tile; tiles are as even as they can be (8 tokens: 4 +
 * 4). With 6 tokens or fewer (decode) a thread walks its panels in memory order, one stream,
 * prefetching a chunk ahead. Measured (2-core EPYC, 128 tokens, alternating in one process): 142
 * to 147 GFLOP/s float32 on 2 threads at every qwen2.5-0.5b shape, 1.3-1.45x the dot-product
 * kernel below; batch-1 decode streams the weights at least as fast as it.
 *
 * The output head (the tied embedding, which must stay in rows for the embedding lookup) uses
 * dot products along k against the weights as Hugging Face stores them ([out, in], row-major),
 * so a decode step streams every row once. The AVX2 micro-kernel (mm_tile3) takes 3 weight rows
 * and up to 4 tokens: 12 accumulators of 8 lanes, 3 weight vectors and a token vector fill the 16
 * ymm registers exactly (named variables, so that -O2 keeps them in registers). Each weight
 * vector loaded serves up to 4 tokens; the kernel prefetches the next 3-row panel linearly, one
 * panel ahead (with the hardware prefetcher alone, interleaved rows streamed at half the
 * bandwidth a single stream gets on the 2-core EPYC; with it, at about all of it). bfloat16
 * weights are widened in the loop (zero-extend to 32 bits, shift left 16: exact).
 *
 * Order. Packed: each output element is the fused multiply-add chain over k = 0, 1, 2, ... from
 * zero, carried through memory between chunks (the same operations in the same order), then the
 * bias; the scalar path's fmaf chain is the same bits. Dot products: the 8-lane sum of its
 * products in k order (k = 0, 8, 16, ...), a fixed horizontal reduction (hsum8), the k % 8 tail
 * with fmaf, then the bias. In both, nothing depends on how many tokens share the tile, on the
 * thread that computes it, or on the token block, so batching never changes a result. Threads
 * split the panels of all parts (q, k and v, or gate and up, together) evenly.
 *
 * SwiGLU: e^x by Cephes' expf polynomial on 8 lanes (exp8, within 2 ulp of expf), row by row so
 * an element's path depends on its column alone; expf took 70 ms of a 128-token prefill.
 *
 * Attention: one work item per (sequence, query head), items spread over threads dynamically.
 * For each token, the keys of positions 0..p are visited in chunks of ATTN_CHUNK positions with
 * an online softmax (running max and sum, rescaled when a chunk raises the max; float32; the
 * weights e^(s - max) by exp8 on the AVX2 path, expf on the scalar one): the chunk boundaries
 * are fixed multiples of ATTN_CHUNK from position 0, so again the order depends only on the
 * position. Scores are taken four keys at a time (dot4_avx2: four independent chains, each
 * key's operations those of one dot product), and K and V rows are found by walking the blocks
 * (no division a position). Attention is about 5 % of a 128-token prefill and 17 % of a
 * 512-token one on qwen2.5-0.5b; a tiled kernel (several queries per pass over the keys) is
 * the next step.
 *
 * Threads: OpenMP regions of c->threads threads (one thread below MM_PARALLEL_MIN and
 * ATTN_PARALLEL_MIN multiply-adds). A decode step opens about 4 regions a layer; libgomp's
 * default wait policy spins at each barrier, which is right on idle cores and ruinous on
 * shared ones: on the 2-core machine at load 4.5, qwen2.5-0.5b bf16 decode took 1,186 ms a
 * step on 2 threads, 145 ms on 1, and 143 ms on 2 with OMP_WAIT_POLICY=passive (libgomp reads
 * it at load time, so it is the launcher's to set). Kernels write only their outputs; calls may
 * run concurrently on different outputs. */
#include "llm/lm_kernels.h"

#include "core/alloc.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LM_X86 1
#else
#define LM_X86 0
#endif

#ifdef _OPENMP
#include <omp.h>
#define LM_OMP_PARALLEL _Pragma("omp parallel num_threads(nth)")
#define LM_OMP_FOR_DYNAMIC _Pragma("omp parallel for num_threads(nth) schedule(dynamic, 1)")
#define LM_OMP_FOR_STATIC _Pragma("omp parallel for num_threads(nth) schedule(static)")
static int lm_thread_num(void) { return omp_get_thread_num(); }
static int lm_num_threads(void) { return omp_get_num_threads(); }
#else
#define LM_OMP_PARALLEL (void)nth;
#define LM_OMP_FOR_DYNAMIC (void)nth;
#define LM_OMP_FOR_STATIC (void)nth;
static int lm_thread_num(void) { return 0; }
static int lm_num_threads(void) { return 1; }
#endif

#define MM_RT 4                      /* tokens per micro-kernel */
#define MM_X_BLOCK_BYTES (192 << 10) /* activations of one token block */
#define MM_PARALLEL_MIN (1 << 16)   /* multiply-adds below which one thread runs */
#define ATTN_PARALLEL_MIN (1 << 18) /* multiply-adds */
#define ATTN_CHUNK 128               /* positions per online-softmax chunk */

int cb__lm_cpu_avx2(void) {
#if LM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static float *out_row(const cb__lm_mm_part *p, int64_t t) {
    return p->yrows ? p->yrows[t] : p->y + t * p->ldy;
}

/* ---- Scalar path (the reference) ------------------------------------------------------------- */

static float w_at(const void *w, int bf16, int64_t i) {
    return bf16 ? cb_lm_bf16_to_f32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

/* Rows r0..r1 of one part for tokens t0..t1: sum in k order, then the bias. */
static void mm_rows_scalar(const float *x, int64_t ldx, int64_t t0, int64_t t1, int64_t k, int bf16,
                           const cb__lm_mm_part *p, int64_t r0, int64_t r1) {
    for (int64_t t = t0; t < t1; t++) {
        const float *xt = x + t * ldx;
        float *yt = out_row(p, t);
        for (int64_t r = r0; r < r1; r++) {
            float s = 0.0f;
            for (int64_t i = 0; i < k; i++)
                s += xt[i] * w_at(p->w, bf16, r * k + i);
            yt[r] = p->bias ? s + p->bias[r] : s;
        }
    }
}

/* ---- AVX2 path ------------------------------------------------------------------------------- */

#if LM_X86
#define LM_AVX2 __attribute__((target("avx2,fma")))
#define LM_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

LM_AVX2_INLINE __m256 ld_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* The fixed horizontal sum: (lanes 0-3 + lanes 4-7), then pairs, then the last
 * two. */
LM_AVX2_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One output element's end: the lanes' sum, the k % 8 tail in k order, the bias. */
LM_AVX2_INLINE float mm_finish(__m256 acc, const float *x, const void *w, int bf16, int64_t k8,
                               int64_t k, const float *bias) {
    float s = hsum8(acc);
    for (int64_t kk = k8; kk < k; kk++) {
        const float wk =
            bf16 ? cb_lm_bf16_to_f32(((const uint16_t *)w)[kk]) : ((const float *)w)[kk];
        s = fmaf(wk, x[kk], s);
    }
    return bias ? s + *bias : s;
}

LM_AVX2_INLINE __m256 mm_ldw(const void *w, int bf16, int64_t i) {
    return bf16 ? ld_bf16((const uint16_t *)w + i) : _mm256_loadu_ps((const float *)w + i);
}

static inline const void *mm_row(const void *w, int bf16, int64_t i) {
    return bf16 ? (const void *)((const uint16_t *)w + i) : (const void *)((const float *)w + i);
}

/* The micro-kernel: 3 weight rows (stride ldw; rows r..r+2 of the part) times RT <= 4 tokens:
 * twelve accumulators, three weight vectors and one token vector, the 16 ymm registers exactly
 * (named variables, not an array, so -O2 keeps them in registers; 4 rows x 3 tokens needed 17
 * and spilled one accumulator, whose store-to-load chain halved the speed). bf16 and RT are
 * constants at every call, so each combination compiles to its own unrolled loop. */
LM_AVX2_INLINE void mm_tile3(const float *x, int64_t ldx, const void *w, int64_t ldw,
                             const int bf16, int64_t k, const float *bias, float **yt, int64_t r,
                             const int RT) {
    __m256 a00 = _mm256_setzero_ps(), a10 = a00, a20 = a00, a01 = a00, a11 = a00, a21 = a00;
    __m256 a02 = a00, a12 = a00, a22 = a00, a03 = a00, a13 = a00, a23 = a00;
    const int64_t k8 = k & ~(int64_t)7;
    const void *w1 = mm_row(w, bf16, ldw), *w2 = mm_row(w, bf16, 2 * ldw);
    for (int64_t kk = 0; kk < k8; kk += 8) {
        { /* the next panel, linearly, one panel ahead (hardware prefetch alone fell to half
           * the read bandwidth on interleaved rows; this reaches it) */
            const char *nx = (const char *)mm_row(w, bf16, 3 * ldw + 3 * kk);
            _mm_prefetch(nx, _MM_HINT_T0);
            if (!bf16)
                _mm_prefetch(nx + 64, _MM_HINT_T0);
        }
        const __m256 v0 = mm_ldw(w, bf16, kk), v1 = mm_ldw(w1, bf16, kk);
        const __m256 v2 = mm_ldw(w2, bf16, kk);
        __m256 xv = _mm256_loadu_ps(x + kk);
        a00 = _mm256_fmadd_ps(v0, xv, a00);
        a10 = _mm256_fmadd_ps(v1, xv, a10);
        a20 = _mm256_fmadd_ps(v2, xv, a20);
        if (RT > 1) {
            xv = _mm256_loadu_ps(x + ldx + kk);
            a01 = _mm256_fmadd_ps(v0, xv, a01);
            a11 = _mm256_fmadd_ps(v1, xv, a11);
            a21 = _mm256_fmadd_ps(v2, xv, a21);
        }
        if (RT > 2) {
            xv = _mm256_loadu_ps(x + 2 * ldx + kk);
            a02 = _mm256_fmadd_ps(v0, xv, a02);
            a12 = _mm256_fmadd_ps(v1, xv, a12);
            a22 = _mm256_fmadd_ps(v2, xv, a22);
        }
        if (RT > 3) {
            xv = _mm256_loadu_ps(x + 3 * ldx + kk);
            a03 = _mm256_fmadd_ps(v0, xv, a03);
            a13 = _mm256_fmadd_ps(v1, xv, a13);
            a23 = _mm256_fmadd_ps(v2, xv, a23);
        }
    }
    const __m256 acc[4][3] = {{a00, a10, a20}, {a01, a11, a21}, {a02, a12, a22}, {a03, a13, a23}};
    const void *rows[3] = {w, w1, w2};
    for (int j = 0; j < RT; j++)
        for (int i = 0; i < 3; i++)
            yt[j][r + i] = mm_finish(acc[j][i], x + j * ldx, rows[i], bf16, k8, k,
                                     bias ? bias + r + i : NULL);
}

/* One weight row times one token (the last rows of a part), in the same order. */
LM_AVX2_INLINE float mm_dot1(const float *x, const void *w, const int bf16, int64_t k,
                             const float *bias) {
    __m256 a = _mm256_setzero_ps();
    const int64_t k8 = k & ~(int64_t)7;
    for (int64_t kk = 0; kk < k8; kk += 8)
        a = _mm256_fmadd_ps(mm_ldw(w, bf16, kk), _mm256_loadu_ps(x + kk), a);
    return mm_finish(a, x, w, bf16, k8, k, bias);
}

/* Tokens t0..t1 against rows r0..r0+rw (rw <= CB__LM_PANEL_ROWS) of weights w0 (row r0, stride
 * k). */
static LM_AVX2 void mm_panel_avx2(const float *x, int64_t ldx, int64_t t0, int64_t t1, int64_t k,
                                  const void *w0, int bf16, int64_t rw, const cb__lm_mm_part *p,
                                  int64_t r0) {
    for (int64_t t = t0; t < t1; t += MM_RT) {
        const int rt = t1 - t < MM_RT ? (int)(t1 - t) : MM_RT;
        float *yt[MM_RT];
        for (int j = 0; j < rt; j++)
            yt[j] = out_row(p, t + j);
        const float *xt = x + t * ldx;
        if (rw == CB__LM_PANEL_ROWS) {
            switch (bf16 * 4 + rt) { /* constant arguments: one unrolled kernel each */
            case 1: mm_tile3(xt, ldx, w0, k, 0, k, p->bias, yt, r0, 1); break;
            case 2: mm_tile3(xt, ldx, w0, k, 0, k, p->bias, yt, r0, 2); break;
            case 3: mm_tile3(xt, ldx, w0, k, 0, k, p->bias, yt, r0, 3); break;
            case 4: mm_tile3(xt, ldx, w0, k, 0, k, p->bias, yt, r0, 4); break;
            case 5: mm_tile3(xt, ldx, w0, k, 1, k, p->bias, yt, r0, 1); break;
            case 6: mm_tile3(xt, ldx, w0, k, 1, k, p->bias, yt, r0, 2); break;
            case 7: mm_tile3(xt, ldx, w0, k, 1, k, p->bias, yt, r0, 3); break;
            default: mm_tile3(xt, ldx, w0, k, 1, k, p->bias, yt, r0, 4); break;
            }
            continue;
        }
        for (int64_t i = 0; i < rw; i++) { /* the last rows of a part */
            const void *wi = mm_row(w0, bf16, i * k);
            const float *b = p->bias ? p->bias + r0 + i : NULL;
            for (int j = 0; j < rt; j++)
                yt[j][r0 + i] = bf16 ? mm_dot1(xt + j * ldx, wi, 1, k, b)
                                     : mm_dot1(xt + j * ldx, wi, 0, k, b);
        }
    }
}
#endif

/* Threads for a product of `work` multiply-adds over n_panels panels: one below
 * MM_PARALLEL_MIN, never more than the panels. */
static int mm_threads(const cb__lm_kctx *c, int64_t work, int64_t n_panels) {
    int64_t nth = work < MM_PARALLEL_MIN ? 1 : c->threads;
    if (nth > n_panels)
        nth = n_panels;
    return nth < 1 ? 1 : (int)nth;
}

/* ---- Matmul driver --------------------------------------------------------------------------- */

void cb__lm_matmul(const cb__lm_kctx *c, const float *x, int64_t ldx, int64_t t, int64_t k,
                   cb_lm_dtype wd, const cb__lm_mm_part *parts, int n_parts) {
    int64_t first[CB__LM_MM_PARTS_MAX + 1]; /* first panel of each part */
    first[0] = 0;
    for (int i = 0; i < n_parts; i++)
        first[i + 1] = first[i] + (parts[i].n + CB__LM_PANEL_ROWS - 1) / CB__LM_PANEL_ROWS;
    const int64_t n_panels = first[n_parts];
    int64_t tb = MM_X_BLOCK_BYTES / (k * (int64_t)sizeof(float)) / MM_RT * MM_RT;
    if (tb < MM_RT)
        tb = MM_RT;
    const int bf16 = wd == CB_LM_BF16;
    int64_t rows = 0;
    for (int i = 0; i < n_parts; i++)
        rows += parts[i].n;
    const int nth = mm_threads(c, rows * k * t, n_panels);
    LM_OMP_PARALLEL {
        const int tid = lm_thread_num(), nt = lm_num_threads();
        const int64_t p0 = n_panels * tid / nt, p1 = n_panels * (tid + 1) / nt;
        for (int64_t t0 = 0; t0 < t; t0 += tb) {
            const int64_t t1 = t0 + tb < t ? t0 + tb : t;
            int part = 0;
            for (int64_t pi = p0; pi < p1; pi++) {
                while (pi >= first[part + 1])
                    part++;
                const cb__lm_mm_part *p = &parts[part];
                const int64_t r0 = (pi - first[part]) * CB__LM_PANEL_ROWS;
                const int64_t r1 = r0 + CB__LM_PANEL_ROWS < p->n ? r0 + CB__LM_PANEL_ROWS : p->n;
#if LM_X86
                if (c->avx2) {
                    const void *w0 = bf16 ? (const void *)((const uint16_t *)p->w + r0 * k)
                                          : (const void *)((const float *)p->w + r0 * k);
                    mm_panel_avx2(x, ldx, t0, t1, k, w0, bf16, r1 - r0, p, r0);
                    continue;
                }
#endif
                mm_rows_scalar(x, ldx, t0, t1, k, bf16, p, r0, r1);
            }
        }
    }
}

/* ---- Packed products ------------------------------------------------------------------------- */

#define PK_MR 6       /* tokens per micro-kernel */
#define PK_KC_F32 256 /* k per weight chunk: 256 x 16 float32 = 16 KiB, in L1 across tokens */
#define PK_KC_BF16 512
#define PK_TB 132 /* tokens per block (a multiple of PK_MR) */
#define PK_NB 8   /* panels per group */
#define PK_WIDEN_MIN 18 /* tokens above which bfloat16 chunks are widened once */

size_t cb__lm_packed_bytes(int64_t n, int64_t k, cb_lm_dtype wd) {
    const size_t b = (size_t)((n + CB__LM_NR - 1) / CB__LM_NR) * (size_t)k * CB__LM_NR *
                     (wd == CB_LM_BF16 ? 2 : 4);
    return (b + 63) & ~(size_t)63;
}

/* The position of column j (< NR) within a packed bfloat16 row of 16. */
static int pk_bf16_slot(int j) { return j < 8 ? 2 * j : 2 * (j - 8) + 1; }

void cb__lm_pack(void *dst, const void *w, int64_t n, int64_t k, cb_lm_dtype wd) {
    const int64_t panels = (n + CB__LM_NR - 1) / CB__LM_NR;
    for (int64_t p = 0; p < panels; p++)
        for (int j = 0; j < CB__LM_NR; j++) {
            const int64_t r = p * CB__LM_NR + j;
            if (wd == CB_LM_BF16) {
                uint16_t *d = (uint16_t *)dst + p * k * CB__LM_NR + pk_bf16_slot(j);
                const uint16_t *s = (const uint16_t *)w + r * k;
                for (int64_t kk = 0; kk < k; kk++)
                    d[kk * CB__LM_NR] = r < n ? s[kk] : 0;
            } else {
                float *d = (float *)dst + p * k * CB__LM_NR + j;
                const float *s = (const float *)w + r * k;
                for (int64_t kk = 0; kk < k; kk++)
                    d[kk * CB__LM_NR] = r < n ? s[kk] : 0.0f;
            }
        }
}

/* Weight (column j, k index kk) of panel pw (k per panel). */
static float pk_w(const void *pw, int bf16, int64_t kk, int j) {
    return bf16 ? cb_lm_bf16_to_f32(((const uint16_t *)pw)[kk * CB__LM_NR + pk_bf16_slot(j)])
                : ((const float *)pw)[kk * CB__LM_NR + j];
}

void cb__lm_packed_row(float *dst, const void *packed, int64_t n, int64_t k, int64_t r,
                       cb_lm_dtype wd) {
    (void)n;
    const int bf16 = wd == CB_LM_BF16;
    const char *pw = (const char *)packed + (r / CB__LM_NR) * k * CB__LM_NR * (bf16 ? 2 : 4);
    for (int64_t kk = 0; kk < k; kk++)
        dst[kk] = pk_w(pw, bf16, kk, (int)(r % CB__LM_NR));
}

/* Columns col..col+ncols of panel pw for tokens 0..n_tok: the fmaf chain in k order, the bias. */
static void pk_panel_scalar(const float *x, int64_t ldx, int64_t n_tok, int64_t k,
                            const void *pw, int bf16, const cb__lm_mm_part *p, int64_t col,
                            int ncols) {
    for (int64_t t = 0; t < n_tok; t++) {
        const float *xt = x + t * ldx;
        float *yt = out_row(p, t);
        for (int j = 0; j < ncols; j++) {
            float s = 0.0f;
            for (int64_t kk = 0; kk < k; kk++)
                s = fmaf(xt[kk], pk_w(pw, bf16, kk, j), s);
            yt[col + j] = p->bias ? s + p->bias[col + j] : s;
        }
    }
}

#if LM_X86
/* The micro-kernel's rows, token i in accumulators ci0 (columns 0-7) and ci1 (8-15): each
 * macro is one row's step, applied to the rows below MR (a constant, so the rest vanish). */
#define PK_ROWS(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5)
#define PK_LOAD_ROW(i)                                                                             \
    if (MR > i)                                                                                    \
        c##i##0 = _mm256_loadu_ps(yr[i]), c##i##1 = _mm256_loadu_ps(yr[i] + 8);
#define PK_FMA_ROW(i)                                                                              \
    if (MR > i) {                                                                                  \
        a = _mm256_broadcast_ss(x##i + kk);                                                        \
        c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                                                 \
        c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                                                 \
    }
#define PK_BIAS_ROW(i) c##i##0 = _mm256_add_ps(c##i##0, bv0), c##i##1 = _mm256_add_ps(c##i##1, bv1);
#define PK_STORE_ROW(i)                                                                            \
    if (MR > i)                                                                                    \
        _mm256_storeu_ps(yr[i], c##i##0), _mm256_storeu_ps(yr[i] + 8, c##i##1);

/* The broadcast micro-kernel: MR <= 6 tokens times one panel chunk of kc: 12 accumulators (MR
 * x 2 vectors of 8 columns), 2 weight vectors, 1 broadcast token value: 15 ymm registers. The
 * accumulators start from zero (first chunk) or from y, and go back to y (the chain goes on
 * through memory: the same operations in the same order); the last chunk adds the bias. pf:
 * the next chunk, prefetched a line a k (NULL: it is in cache). MR and BF16 are constants at
 * every call. */
LM_AVX2_INLINE void pk_tile(const float *x, int64_t ldx, const void *b, int64_t kc,
                            float *const *yo, int ncols, const float *bias, int first, int last,
                            const char *pf, const int MR, const int BF16) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    float tmp[PK_MR][CB__LM_NR];
    float *yr[PK_MR];
    for (int i = 0; i < MR; i++)
        yr[i] = yo[i];
    if (ncols < CB__LM_NR) /* a last, partial panel: through tmp */
        for (int i = 0; i < MR; i++) {
            for (int j = 0; j < CB__LM_NR; j++)
                tmp[i][j] = !first && j < ncols ? yo[i][j] : 0.0f;
            yr[i] = tmp[i];
        }
    if (!first) {
        PK_ROWS(PK_LOAD_ROW)
    }
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
    const float *x4 = x + 4 * ldx, *x5 = x + 5 * ldx;
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    for (int64_t kk = 0; kk < kc; kk++) {
        __m256 b0, b1;
        if (BF16) {
            if (pf)
                _mm_prefetch(pf + kk * 32, _MM_HINT_T0); /* 2 k a line: every other hits */
            const __m256i raw = _mm256_loadu_si256((const __m256i *)((const uint16_t *)b + kk * 16));
            b0 = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
            b1 = _mm256_castsi256_ps(_mm256_and_si256(raw, hi_mask));
        } else {
            if (pf)
                _mm_prefetch(pf + kk * 64, _MM_HINT_T0);
            b0 = _mm256_loadu_ps((const float *)b + kk * 16);
            b1 = _mm256_loadu_ps((const float *)b + kk * 16 + 8);
        }
        __m256 a;
        PK_ROWS(PK_FMA_ROW)
    }
    if (last && bias) {
        float bb[CB__LM_NR];
        for (int j = 0; j < CB__LM_NR; j++)
            bb[j] = j < ncols ? bias[j] : 0.0f;
        const __m256 bv0 = _mm256_loadu_ps(bb), bv1 = _mm256_loadu_ps(bb + 8);
        PK_ROWS(PK_BIAS_ROW)
    }
    PK_ROWS(PK_STORE_ROW)
    if (ncols < CB__LM_NR)
        for (int i = 0; i < MR; i++)
            memcpy(yo[i], tmp[i], (size_t)ncols * sizeof(float));
}

/* Tokens t0..t1 (t1 - t0 <= PK_MR) against one chunk: the kernel for their count. */
static LM_AVX2 void pk_tokens(const float *x, int64_t ldx, int rt, const void *b, int64_t kc,
                              float *const *y, int ncols, const float *bias, int first, int last,
                              const char *pf, int bf16) {
    switch (bf16 * 8 + rt) { /* constant arguments: one unrolled kernel each */
    case 1: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 1, 0); break;
    case 2: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 2, 0); break;
    case 3: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 3, 0); break;
    case 4: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 4, 0); break;
    case 5: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 5, 0); break;
    case 6: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 6, 0); break;
    case 9: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 1, 1); break;
    case 10: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 2, 1); break;
    case 11: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 3, 1); break;
    case 12: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 4, 1); break;
    case 13: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 5, 1); break;
    default: pk_tile(x, ldx, b, kc, y, ncols, bias, first, last, pf, 6, 1); break;
    }
}

/* One token against two whole panels at once (batch-1 decode): 4 accumulator chains over two
 * streams, where one panel's 2 chains left the weight stream below the read bandwidth (the
 * FMA latency, not the loads, set the pace). Full k in registers: the same chain, hence the
 * same bits, as chunk by chunk. Full panels only (16 columns each). */
#define PK_PF_AHEAD 4096 /* bytes a stream prefetches ahead */
LM_AVX2_INLINE void pk_dec2(const float *x, const void *wa, const void *wb, int64_t k, float *ya,
                            float *yb, const float *bias_a, const float *bias_b, const int BF16) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    const int64_t row = BF16 ? 32 : 64; /* bytes of one k */
    const char *pa = (const char *)wa, *pb = (const char *)wb;
    for (int64_t kk = 0; kk < k; kk++, pa += row, pb += row) {
        _mm_prefetch(pa + PK_PF_AHEAD, _MM_HINT_T0);
        _mm_prefetch(pb + PK_PF_AHEAD, _MM_HINT_T0);
        __m256 wa0, wa1, wb0, wb1;
        if (BF16) {
            const __m256i ra = _mm256_loadu_si256((const __m256i *)(const void *)pa);
            const __m256i rb = _mm256_loadu_si256((const __m256i *)(const void *)pb);
            wa0 = _mm256_castsi256_ps(_mm256_slli_epi32(ra, 16));
            wa1 = _mm256_castsi256_ps(_mm256_and_si256(ra, hi_mask));
            wb0 = _mm256_castsi256_ps(_mm256_slli_epi32(rb, 16));
            wb1 = _mm256_castsi256_ps(_mm256_and_si256(rb, hi_mask));
        } else {
            wa0 = _mm256_loadu_ps((const float *)(const void *)pa);
            wa1 = _mm256_loadu_ps((const float *)(const void *)pa + 8);
            wb0 = _mm256_loadu_ps((const float *)(const void *)pb);
            wb1 = _mm256_loadu_ps((const float *)(const void *)pb + 8);
        }
        const __m256 xv = _mm256_broadcast_ss(x + kk);
        a0 = _mm256_fmadd_ps(xv, wa0, a0);
        a1 = _mm256_fmadd_ps(xv, wa1, a1);
        b0 = _mm256_fmadd_ps(xv, wb0, b0);
        b1 = _mm256_fmadd_ps(xv, wb1, b1);
    }
    if (bias_a)
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(bias_a)),
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(bias_a + 8));
    if (bias_b)
        b0 = _mm256_add_ps(b0, _mm256_loadu_ps(bias_b)),
        b1 = _mm256_add_ps(b1, _mm256_loadu_ps(bias_b + 8));
    _mm256_storeu_ps(ya, a0), _mm256_storeu_ps(ya + 8, a1);
    _mm256_storeu_ps(yb, b0), _mm256_storeu_ps(yb + 8, b1);
}

static LM_AVX2 void pk_dec2_avx2(const float *x, const void *wa, const void *wb, int64_t k,
                                 float *ya, float *yb, const float *bias_a, const float *bias_b,
                                 int bf16) {
    if (bf16)
        pk_dec2(x, wa, wb, k, ya, yb, bias_a, bias_b, 1);
    else
        pk_dec2(x, wa, wb, k, ya, yb, bias_a, bias_b, 0);
}

/* A bfloat16 chunk of kc packed rows widened to the float32 packed layout (exact). */
static LM_AVX2 void pk_widen(float *dst, const uint16_t *src, int64_t kc) {
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    for (int64_t kk = 0; kk < kc; kk++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(src + kk * 16));
        _mm256_storeu_ps(dst + kk * 16, _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16)));
        _mm256_storeu_ps(dst + kk * 16 + 8, _mm256_castsi256_ps(_mm256_and_si256(raw, hi_mask)));
    }
}

/* One chunk (k0, kc) of one panel (column col, ncols valid) for all t tokens, the chunk reused
 * by every token from L1; the first token block prefetches pf (NULL: none). */
/* Outputs of a chunk: row t at rows[t] + col when rows is set, else y + t * ldy. */
typedef struct pk_out {
    float *y;
    int64_t ldy;
    float *const *rows;
    int64_t col;
} pk_out;

static float *pk_row(const pk_out *o, int64_t t) {
    return o->rows ? o->rows[t] + o->col : o->y + t * o->ldy;
}

static void pk_chunk_avx2(const float *x, int64_t ldx, int64_t t, int64_t k, const char *b,
                          int64_t k0, int64_t kc, int bf16, const pk_out *o, int ncols,
                          const float *bias, const char *pf) {
    /* tiles as even as they can be (8 tokens: 4 + 4, not 6 + 2: a tile of 2 runs at the
     * latency of its 4 chains, not the throughput of 12) */
    const int64_t n_tiles = (t + PK_MR - 1) / PK_MR, base = t / n_tiles, extra = t % n_tiles;
    for (int64_t i = 0, t0 = 0; i < n_tiles; i++) {
        const int rt = (int)(base + (i < extra));
        float *rows[PK_MR];
        for (int j = 0; j < rt; j++)
            rows[j] = pk_row(o, t0 + j);
        pk_tokens(x + t0 * ldx + k0, ldx, rt, b, kc, rows, ncols, bias, k0 == 0, k0 + kc == k,
                  t0 ? NULL : pf, bf16);
        t0 += rt;
    }
}

/* One panel for a few tokens, chunk after chunk, the next chunk of the panel prefetched. */
static void pk_panel_few(const float *x, int64_t ldx, int64_t t, int64_t k, const char *pw,
                         int bf16, const cb__lm_mm_part *p, int64_t col, int ncols, int64_t es) {
    const int64_t kc_max = bf16 ? PK_KC_BF16 : PK_KC_F32;
    for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
        const int64_t kc = k - k0 < kc_max ? k - k0 : kc_max;
        const char *b = pw + k0 * CB__LM_NR * es;
        const pk_out o = {p->yrows ? NULL : p->y + col, p->ldy, p->yrows, col};
        pk_chunk_avx2(x, ldx, t, k, b, k0, kc, bf16, &o, ncols, p->bias ? p->bias + col : NULL,
                      k0 + kc < k ? b + kc * CB__LM_NR * es : NULL);
    }
}
#endif

/* Where the panels of a call are: part of panel pi, its first column and valid columns, its
 * packed data. */
typedef struct pk_panels {
    const cb__lm_mm_part *parts;
    int64_t first[CB__LM_MM_PARTS_MAX + 1]; /* first panel of each part */
    int64_t panel_bytes;
} pk_panels;

static const char *pk_at(const pk_panels *pp, int64_t pi, const cb__lm_mm_part **p, int64_t *col,
                         int *ncols) {
    int part = 0;
    while (pi >= pp->first[part + 1])
        part++;
    *p = &pp->parts[part];
    *col = (pi - pp->first[part]) * CB__LM_NR;
    *ncols = (*p)->n - *col < CB__LM_NR ? (int)((*p)->n - *col) : CB__LM_NR;
    return (const char *)(*p)->w + (pi - pp->first[part]) * pp->panel_bytes;
}

void cb__lm_matmul_packed(const cb__lm_kctx *c, const float *x, int64_t ldx, int64_t t, int64_t k,
                          cb_lm_dtype wd, const cb__lm_mm_part *parts, int n_parts) {
    const int bf16 = wd == CB_LM_BF16;
    const int64_t es = bf16 ? 2 : 4;
    pk_panels pp = {.parts = parts, .panel_bytes = k * CB__LM_NR * es};
    pp.first[0] = 0;
    for (int i = 0; i < n_parts; i++)
        pp.first[i + 1] = pp.first[i] + (parts[i].n + CB__LM_NR - 1) / CB__LM_NR;
    const int64_t n_panels = pp.first[n_parts];
    const int nth = mm_threads(c, n_panels * CB__LM_NR * k * t, n_panels);
    LM_OMP_PARALLEL {
        const int tid = lm_thread_num(), nt = lm_num_threads();
        const int64_t p0 = n_panels * tid / nt, p1 = n_panels * (tid + 1) / nt;
        const cb__lm_mm_part *p;
        int64_t col;
        int ncols;
#if LM_X86
        if (c->avx2 && t <= PK_MR) {
            /* A few tokens (decode). One token: the thread's panels as two halves walked side
             * by side (pk_dec2), each half in memory order. Otherwise, and for a partial panel:
             * panel after panel, chunk after chunk, one stream, the next chunk prefetched. */
            const int64_t h = t == 1 ? (p1 - p0 + 1) / 2 : p1 - p0;
            for (int64_t i = 0; i < h; i++) {
                const int64_t pa = p0 + i, pb = t == 1 ? p0 + h + i : p1;
                const cb__lm_mm_part *q = NULL;
                int64_t colb = 0;
                int ncolsb = 0;
                const char *wa = pk_at(&pp, pa, &p, &col, &ncols), *wb = NULL;
                if (pb < p1)
                    wb = pk_at(&pp, pb, &q, &colb, &ncolsb);
                if (wb && ncols == CB__LM_NR && ncolsb == CB__LM_NR) {
                    pk_dec2_avx2(x, wa, wb, k, out_row(p, 0) + col, out_row(q, 0) + colb,
                                 p->bias ? p->bias + col : NULL, q->bias ? q->bias + colb : NULL,
                                 bf16);
                    continue;
                }
                pk_panel_few(x, ldx, t, k, wa, bf16, p, col, ncols, es);
                if (wb)
                    pk_panel_few(x, ldx, t, k, wb, bf16, q, colb, ncolsb, es);
            }
        } else if (c->avx2) {
            /* Many tokens: blocks of at most PK_TB tokens, whose [tokens, kc] slice (at most
             * 132 KiB) stays in L2; within a block, groups of PK_NB panels whose outputs
             * accumulate in cbuf (contiguous, 66 KiB, in L2: rows of y N floats apart would
             * fall into a few cache sets) while their chunks go by in k order, then go to y;
             * each chunk is reused by every token from L1 and prefetches the next one this
             * loop visits. */
            const int64_t kc_max = PK_KC_F32; /* bfloat16 chunks are widened to float32 */
            const int64_t n_tb = (t + PK_TB - 1) / PK_TB;
            int64_t tb = (t + n_tb - 1) / n_tb;
            tb = (tb + PK_MR - 1) / PK_MR * PK_MR;
            float *cbuf = cb_malloc(sizeof(float) * (PK_TB * PK_NB + PK_KC_F32) * CB__LM_NR + 64);
            float *wbuf = cbuf ? (float *)(((uintptr_t)(cbuf + PK_TB * PK_NB * CB__LM_NR) + 63) &
                                           ~(uintptr_t)63)
                               : NULL;
            for (int64_t t0 = 0; t0 < t; t0 += tb) {
                const int64_t tn = t - t0 < tb ? t - t0 : tb;
                for (int64_t j0 = p0; j0 < p1; j0 += PK_NB) {
                    const int64_t j1 = j0 + PK_NB < p1 ? j0 + PK_NB : p1;
                    for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
                        const int64_t kc = k - k0 < kc_max ? k - k0 : kc_max;
                        for (int64_t pi = j0; pi < j1; pi++) {
                            const char *pw = pk_at(&pp, pi, &p, &col, &ncols), *pf = NULL;
                            const cb__lm_mm_part *pn;
                            int64_t cn;
                            int nn;
                            if (pi + 1 < j1)
                                pf = pk_at(&pp, pi + 1, &pn, &cn, &nn) + k0 * CB__LM_NR * es;
                            else if (k0 + kc < k)
                                pf = pk_at(&pp, j0, &pn, &cn, &nn) + (k0 + kc) * CB__LM_NR * es;
                            else if (j1 < p1)
                                pf = pk_at(&pp, j1, &pn, &cn, &nn);
                            const pk_out o =
                                cbuf ? (pk_out){cbuf + (pi - j0) * tn * CB__LM_NR, CB__LM_NR,
                                                NULL, 0}
                                     : (pk_out){p->yrows ? NULL : p->y + t0 * p->ldy + col,
                                                p->ldy, p->yrows ? p->yrows + t0 : NULL, col};
                            const char *b = pw + k0 * CB__LM_NR * es;
                            int wide = bf16;
                            if (bf16 && wbuf && tn > PK_WIDEN_MIN) { /* widened once, read by
                                                                        every token */
                                pk_widen(wbuf, (const uint16_t *)(const void *)b, kc);
                                b = (const char *)wbuf;
                                wide = 0;
                            }
                            pk_chunk_avx2(x + t0 * ldx, ldx, tn, k, b, k0, kc, wide, &o, ncols,
                                          p->bias ? p->bias + col : NULL, pf);
                        }
                    }
                    for (int64_t pi = j0; cbuf && pi < j1; pi++) {
                        pk_at(&pp, pi, &p, &col, &ncols);
                        const float *src = cbuf + (pi - j0) * tn * CB__LM_NR;
                        for (int64_t i = 0; i < tn; i++)
                            memcpy(out_row(p, t0 + i) + col, src + i * CB__LM_NR,
                                   (size_t)ncols * sizeof(float));
                    }
                }
            }
            cb_free(cbuf);
        } else
#endif
        {
            for (int64_t pi = p0; pi < p1; pi++) {
                const char *pw = pk_at(&pp, pi, &p, &col, &ncols);
                pk_panel_scalar(x, ldx, t, k, pw, bf16, p, col, ncols);
            }
        }
    }
}

/* ---- Element-wise ---------------------------------------------------------------------------- */

void cb__lm_rmsnorm(const cb__lm_kctx *c, float *y, const float *x, const float *w, int64_t t,
                    int64_t n, double eps) {
    int nth = t >= 64 ? c->threads : 1;
    LM_OMP_FOR_STATIC
    for (int64_t r = 0; r < t; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        const float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
        for (int64_t i = 0; i < n; i++)
            yr[i] = (xr[i] * inv) * w[i];
    }
}

void cb__lm_rope(float *x, int64_t ld, int64_t t, int64_t n_heads, int64_t hd, const float *cos_t,
                 const float *sin_t) {
    const int64_t half = hd / 2;
    for (int64_t r = 0; r < t; r++) {
        const float *cr = cos_t + r * half, *sr = sin_t + r * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + r * ld + h * hd;
            for (int64_t i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half];
                v[i] = a * cr[i] - b * sr[i];
                v[i + half] = b * cr[i] + a * sr[i];
            }
        }
    }
}

#if LM_X86
/* e^x for 8 floats: Cephes' expf (x = n ln 2 + r, |r| <= ln 2 / 2, a degree-7 polynomial in r,
 * times 2^n), within 2 ulp of expf; +inf above 88.72, the smallest normal below -87.34. */
LM_AVX2_INLINE __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.72284f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* g[i] = g[i] / (1 + e^-g[i]) * u[i] for i in [i0, i1), with exp8 (the tail with expf). */
static LM_AVX2 void swiglu_avx2(float *g, const float *u, int64_t i0, int64_t i1) {
    int64_t i = i0;
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= i1; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 d = _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, gv)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, d), _mm256_loadu_ps(u + i)));
    }
    for (; i < i1; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif

/* Each element alone: row by row, the columns below n rounded down to 8 with exp8, the rest
 * with expf, so an element's result depends on its value and column, never on its row. */
void cb__lm_swiglu(const cb__lm_kctx *c, float *g, const float *u, int64_t t, int64_t n) {
    const int64_t total = t * n;
#if LM_X86
    if (c->avx2) {
        int nth = t > 1 && total >= 16384 ? c->threads : 1;
        LM_OMP_FOR_STATIC
        for (int64_t r = 0; r < t; r++)
            swiglu_avx2(g + r * n, u + r * n, 0, n);
        return;
    }
#endif
    int nth = total >= 4096 ? c->threads : 1; /* expf: ~10 ns an element */
    LM_OMP_FOR_STATIC
    for (int64_t i = 0; i < total; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* GELU (the erf form): x / 2 (1 + erf(x / sqrt 2)). The AVX2 path takes erf from Abramowitz and
 * Stegun 7.1.26 (|error| <= 1.5e-7; exp8 for the exponential), the scalar path from erff. For the
 * BERT encoder (rag/encoder.c), whose feed-forward applies it to every intermediate value. */
#if LM_X86
static LM_AVX2 void gelu_avx2(float *x, int64_t i0, int64_t i1) {
    const __m256 p = _mm256_set1_ps(0.3275911f), one = _mm256_set1_ps(1.0f),
                 half = _mm256_set1_ps(0.5f), rs2 = _mm256_set1_ps(0.70710678118654752f),
                 sign = _mm256_set1_ps(-0.0f), a1 = _mm256_set1_ps(0.254829592f),
                 a2 = _mm256_set1_ps(-0.284496736f), a3 = _mm256_set1_ps(1.421413741f),
                 a4 = _mm256_set1_ps(-1.453152027f), a5 = _mm256_set1_ps(1.061405429f);
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i), z = _mm256_mul_ps(v, rs2);
        const __m256 az = _mm256_andnot_ps(sign, z);
        const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(p, az, one));
        __m256 poly = _mm256_fmadd_ps(a5, t, a4);
        poly = _mm256_fmadd_ps(poly, t, a3);
        poly = _mm256_fmadd_ps(poly, t, a2);
        poly = _mm256_fmadd_ps(poly, t, a1);
        poly = _mm256_mul_ps(poly, t);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(az, az)));
        const __m256 erfa = _mm256_fnmadd_ps(poly, e, one);
        const __m256 erf = _mm256_or_ps(erfa, _mm256_and_ps(z, sign));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, erf)));
    }
    for (; i < i1; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}
#endif

void cb__lm_gelu(const cb__lm_kctx *c, float *x, int64_t t, int64_t n) {
    const int64_t total = t * n;
#if LM_X86
    if (c->avx2) {
        int nth = t > 1 && total >= 16384 ? c->threads : 1;
        LM_OMP_FOR_STATIC
        for (int64_t r = 0; r < t; r++)
            gelu_avx2(x + r * n, 0, n);
        return;
    }
#endif
    int nth = total >= 4096 ? c->threads : 1;
    LM_OMP_FOR_STATIC
    for (int64_t i = 0; i < total; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* ---- Attention ------------------------------------------------------------------------------- */

static float dot_scalar(const float *q, const void *k, int bf16, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += q[i] * w_at(k, bf16, i);
    return s;
}

static void axpy_scalar(float *acc, float e, const void *v, int bf16, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        acc[i] += e * w_at(v, bf16, i);
}

#if LM_X86
static LM_AVX2 float dot_avx2(const float *q, const void *k, int bf16, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 kv = bf16 ? ld_bf16((const uint16_t *)k + i) : _mm256_loadu_ps((const float *)k + i);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), kv, acc);
    }
    float s = hsum8(acc);
    for (int64_t i = n8; i < n; i++)
        s = fmaf(q[i], w_at(k, bf16, i), s);
    return s;
}

/* The dot product of n floats, for attention outside the paged cache (rag/encoder.c). */
float cb__lm_dot(const cb__lm_kctx *c, const float *a, const float *b, int64_t n) {
    return c->avx2 ? dot_avx2(a, b, 0, n) : dot_scalar(a, b, 0, n);
}

/* Four keys' dot products with q at once: four independent chains, each key's operations
 * exactly dot_avx2's (so the same bits), the latency of one chain hidden by the others. */
static LM_AVX2 void dot4_avx2(const float *q, const void *const *k, int bf16, int64_t n,
                              float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        if (bf16) {
            a0 = _mm256_fmadd_ps(qv, ld_bf16((const uint16_t *)k[0] + i), a0);
            a1 = _mm256_fmadd_ps(qv, ld_bf16((const uint16_t *)k[1] + i), a1);
            a2 = _mm256_fmadd_ps(qv, ld_bf16((const uint16_t *)k[2] + i), a2);
            a3 = _mm256_fmadd_ps(qv, ld_bf16((const uint16_t *)k[3] + i), a3);
        } else {
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps((const float *)k[0] + i), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps((const float *)k[1] + i), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps((const float *)k[2] + i), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps((const float *)k[3] + i), a3);
        }
    }
    const __m256 acc[4] = {a0, a1, a2, a3};
    for (int r = 0; r < 4; r++) {
        float s = hsum8(acc[r]);
        for (int64_t i = n8; i < n; i++)
            s = fmaf(q[i], w_at(k[r], bf16, i), s);
        out[r] = s;
    }
}

static LM_AVX2 void axpy_avx2(float *acc, float e, const void *v, int bf16, int64_t n) {
    const __m256 ev = _mm256_set1_ps(e);
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 vv = bf16 ? ld_bf16((const uint16_t *)v + i) : _mm256_loadu_ps((const float *)v + i);
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(ev, vv, _mm256_loadu_ps(acc + i)));
    }
    for (int64_t i = n8; i < n; i++)
        acc[i] = fmaf(e, w_at(v, bf16, i), acc[i]);
}
#endif

/* Where the keys and values of a run of positions are: block blocks[b], offset off in it. A
 * position's rows without a division: the walk steps through the blocks. */
typedef struct kv_walk {
    int64_t b, off;
} kv_walk;

static kv_walk kv_walk_at(const cb__lm_attn *a, int64_t j) {
    return (kv_walk){j / a->block_tokens, j % a->block_tokens};
}

static void kv_next(const cb__lm_attn *a, kv_walk *w) {
    if (++w->off == a->block_tokens) {
        w->off = 0;
        w->b++;
    }
}

#if LM_X86
/* v[i] = e^(v[i] - m) for i < n, 8 lanes at a time with exp8 (a partial last group through a
 * padded copy, so every element takes the same path whatever n is). */
static LM_AVX2 void exp_shifted_avx2(float *v, int64_t n, float m) {
    const __m256 mv = _mm256_set1_ps(m);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(v + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(v + i), mv)));
    if (i < n) {
        float t[8] = {0};
        memcpy(t, v + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, exp8(_mm256_sub_ps(_mm256_loadu_ps(t), mv)));
        memcpy(v + i, t, (size_t)(n - i) * sizeof(float));
    }
}

/* v[i] = e^(v[i] - m) for i < n, and their sum (the softmax of rag/encoder.c's attention). */
float cb__lm_exp_shifted(const cb__lm_kctx *c, float *v, int64_t n, float m) {
    if (c->avx2) exp_shifted_avx2(v, n, m);
    else
        for (int64_t i = 0; i < n; i++) v[i] = expf(v[i] - m);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i];
    return sum;
}
#endif

/* Address of the key (kind 0) or value (kind 1) at w of kv head g. */
static const void *kv_row(const cb__lm_attn *a, const int32_t *blocks, const kv_walk *w, int64_t g,
                          int kind) {
    const int64_t e = (kind ? a->v_off : a->k_off) + (g * a->block_tokens + w->off) * a->hd;
    const size_t es = a->kv_dtype == CB_LM_BF16 ? 2 : 4;
    return a->pool + (size_t)blocks[w->b] * a->block_bytes + (size_t)e * es;
}

/* One token's attention for one head: out = softmax(q . K^T * scale) V over
 * positions 0..p. */
static void attend_one(const cb__lm_kctx *c, const cb__lm_attn *a, const int32_t *blocks, int64_t g,
                       int64_t p, const float *q, float *out) {
    float sc[ATTN_CHUNK];
    float acc[CB_LM_HEAD_DIM_MAX];
    const int64_t hd = a->hd;
    const int bf16 = a->kv_dtype == CB_LM_BF16;
    float m = -INFINITY, l = 0.0f;
    memset(acc, 0, (size_t)hd * sizeof(float));
    for (int64_t j0 = 0; j0 <= p; j0 += ATTN_CHUNK) {
        const int64_t j1 = j0 + ATTN_CHUNK <= p + 1 ? j0 + ATTN_CHUNK : p + 1;
        float cm = -INFINITY;
        kv_walk w = kv_walk_at(a, j0);
        for (int64_t j = j0; j < j1;) {
#if LM_X86
            if (c->avx2 && j1 - j >= 4) { /* four keys at once */
                const void *kp[4];
                for (int r = 0; r < 4; r++, kv_next(a, &w))
                    kp[r] = kv_row(a, blocks, &w, g, 0);
                dot4_avx2(q, kp, bf16, hd, sc + (j - j0));
                j += 4;
                continue;
            }
            float s = c->avx2 ? dot_avx2(q, kv_row(a, blocks, &w, g, 0), bf16, hd)
                              : dot_scalar(q, kv_row(a, blocks, &w, g, 0), bf16, hd);
#else
            float s = dot_scalar(q, kv_row(a, blocks, &w, g, 0), bf16, hd);
#endif
            kv_next(a, &w);
            sc[j - j0] = s;
            j++;
        }
        for (int64_t j = j0; j < j1; j++) {
            const float s = sc[j - j0] * a->scale;
            sc[j - j0] = s;
            cm = s > cm ? s : cm;
        }
        if (cm > m) {
            const float f = expf(m - cm);
            l *= f;
            for (int64_t i = 0; i < hd; i++)
                acc[i] *= f;
            m = cm;
        }
        kv_walk wv = kv_walk_at(a, j0);
#if LM_X86
        if (c->avx2)
            exp_shifted_avx2(sc, j1 - j0, m);
        else
#endif
            for (int64_t j = j0; j < j1; j++)
                sc[j - j0] = expf(sc[j - j0] - m);
        for (int64_t j = j0; j < j1; j++, kv_next(a, &wv)) {
            const float e = sc[j - j0];
            l += e;
            const void *vp = kv_row(a, blocks, &wv, g, 1);
#if LM_X86
            if (c->avx2)
                axpy_avx2(acc, e, vp, bf16, hd);
            else
                axpy_scalar(acc, e, vp, bf16, hd);
#else
            axpy_scalar(acc, e, vp, bf16, hd);
#endif
        }
    }
    const float inv = 1.0f / l;
    for (int64_t i = 0; i < hd; i++)
        out[i] = acc[i] * inv;
}

void cb__lm_attention(const cb__lm_kctx *c, const cb__lm_attn *a, const cb__lm_attn_seq *seqs,
                      int n_seqs) {
    const int64_t items = (int64_t)n_seqs * a->n_heads;
    const int64_t group = a->n_heads / a->n_kv_heads;
    /* Multiply-adds of the step (scores and weighted sum): below ATTN_PARALLEL_MIN, one thread
     * (a parallel region costs more than a decode step's attention over a short context). */
    int64_t work = 0;
    for (int s = 0; s < n_seqs; s++)
        work += (int64_t)seqs[s].n_tokens * (seqs[s].pos0 + seqs[s].n_tokens);
    work *= 2 * a->n_heads * a->hd;
    int nth = work < ATTN_PARALLEL_MIN ? 1 : c->threads;
    LM_OMP_FOR_DYNAMIC
    for (int64_t it = 0; it < items; it++) {
        const cb__lm_attn_seq *s = &seqs[it / a->n_heads];
        const int64_t h = it % a->n_heads, g = h / group;
        for (int32_t i = 0; i < s->n_tokens; i++) {
            const int64_t row = s->row0 + i;
            attend_one(c, a, s->blocks, g, (int64_t)s->pos0 + i, a->q + row * a->q_ld + h * a->hd,
                       a->out + row * a->out_ld + h * a->hd);
        }
    }
}
