/* llm/lm_kernels.c - CPU kernels of the decoder forward pass (see lm_kernels.h).
 *
 * Design. Matrix products are dot products along k: the weights stay as Hugging Face stores
 * them ([out, in], row-major), so a decode step (one token) streams every weight row once. The
 * AVX2 micro-kernel (mm_tile3) takes 3 weight rows and up to 4 tokens: 12 accumulators of 8
 * lanes, 3 weight vectors and a token vector fill the 16 ymm registers exactly (named
 * variables, so that -O2 keeps them in registers). Each weight vector loaded serves up to 4
 * tokens; the kernel prefetches the next 3-row panel linearly, one panel ahead (with the
 * hardware prefetcher alone, interleaved rows streamed at half the bandwidth a single stream
 * gets on the 2-core EPYC; with it, at about all of it). bfloat16 weights are widened in the
 * loop (zero-extend to 32 bits, shift left 16: exact); widening a panel once into scratch and
 * reusing it for more tokens was measured slower at 8 to 128 tokens, so it is not done.
 *
 * Order: each output element is the 8-lane sum of its products in k order (k = 0, 8, 16, ...),
 * a fixed horizontal reduction (hsum8), the k % 8 tail with fmaf, then the bias. Nothing
 * depends on how many tokens share the tile, on the thread that computes it, or on the token
 * block, so batching never changes a result. Tokens are processed in blocks whose activations
 * fit in 192 KiB of L2 (MM_X_BLOCK_BYTES), so a weight panel is reused by every token of a block; threads
 * split the panels of all parts (q, k and v, or gate and up, together) evenly.
 *
 * Attention: one work item per (sequence, query head), items spread over threads dynamically.
 * For each token, the keys of positions 0..p are visited in chunks of ATTN_CHUNK positions with
 * an online softmax (running max and sum, rescaled when a chunk raises the max; float32, expf):
 * the chunk boundaries are fixed multiples of ATTN_CHUNK from position 0, so again the order
 * depends only on the position.
 *
 * Threads: OpenMP regions of c->threads threads (one thread below MM_PARALLEL_MIN and
 * ATTN_PARALLEL_MIN multiply-adds). A decode step opens about 4 regions a layer; libgomp's
 * default wait policy spins at each barrier, which is right on idle cores and ruinous on
 * shared ones: on the 2-core machine at load 4.5, qwen2.5-0.5b bf16 decode took 1,186 ms a
 * step on 2 threads, 145 ms on 1, and 143 ms on 2 with OMP_WAIT_POLICY=passive (libgomp reads
 * it at load time, so it is the launcher's to set). Kernels write only their outputs; calls may
 * run concurrently on different outputs. */
#include "llm/lm_kernels.h"

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
    int nth = rows * k * t < MM_PARALLEL_MIN ? 1 : c->threads;
    if (nth > n_panels)
        nth = (int)n_panels;
    if (nth < 1)
        nth = 1;
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

void cb__lm_swiglu(const cb__lm_kctx *c, float *g, const float *u, int64_t t, int64_t n) {
    const int64_t total = t * n;
    int nth = total >= 4096 ? c->threads : 1; /* expf: ~10 ns an element */
    LM_OMP_FOR_STATIC
    for (int64_t i = 0; i < total; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
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

/* Address of the key (kind 0) or value (kind 1) of position j of kv head g. */
static const void *kv_at(const cb__lm_attn *a, const int32_t *blocks, int64_t j, int64_t g,
                         int kind) {
    const int64_t b = j / a->block_tokens, off = j % a->block_tokens;
    const int64_t e = (kind ? a->v_off : a->k_off) + (g * a->block_tokens + off) * a->hd;
    const size_t es = a->kv_dtype == CB_LM_BF16 ? 2 : 4;
    return a->pool + (size_t)blocks[b] * a->block_bytes + (size_t)e * es;
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
        for (int64_t j = j0; j < j1; j++) {
            const void *kp = kv_at(a, blocks, j, g, 0);
#if LM_X86
            float s = c->avx2 ? dot_avx2(q, kp, bf16, hd) : dot_scalar(q, kp, bf16, hd);
#else
            float s = dot_scalar(q, kp, bf16, hd);
#endif
            s *= a->scale;
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
        for (int64_t j = j0; j < j1; j++) {
            const float e = expf(sc[j - j0] - m);
            l += e;
            const void *vp = kv_at(a, blocks, j, g, 1);
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
