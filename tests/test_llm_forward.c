/* tests/test_llm_forward.c - the decoder forward pass and its paged KV cache (llm/lm_model.c,
 * llm/lm_kernels.c).
 *
 * Oracles: (1) transformers itself: the fixtures of tests/data/llm (three tiny models built and
 * run by transformers 5.25.0, see its README) loaded from their safetensors; colobench in float32
 * within 1e-4 of transformers' float64 logits over the prefill and 64 teacher-forced decode
 * steps, the same greedy tokens at all 64; bfloat16 within 0.5 (test_llm_fixtures); (2) a plain
 * float64 forward pass written here from modeling_llama / qwen2 / qwen3 (no cache, the whole
 * sequence at once), on the tiny presets and on an odd-sized config that takes every remainder
 * path of the kernels (hidden 60, head_dim 20, intermediate 90, vocab 301), past one attention
 * chunk (131 prompt positions for it, 40 for the others); (3) the model's own scalar path (cb__lm_model_set_reference). Random
 * weights are spread wider than lm_weights' normal(0, 0.02) (matrices * 12, norms and biases
 * random) so that attention is far from uniform and a wrong position or head shows.
 *
 * Invariance (bit-identical logits, memcmp): a sequence alone and inside a batch with others of
 * different lengths, a prompt in one call and in chunks 5 + 7 + rest, blocks of 4 positions at
 * scattered ids against blocks of 16 in order. Errors: token id out of range, short block table,
 * budget below one block (messages checked), nothing written by a refused call, allocation
 * failures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "harness.h"
#include "llm/lm_config.h"
#include "llm/lm_kernels.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"

/* ---- Weights --------------------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double urand(void) { /* [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* Spreads the seeded weights (the test owns them, so it may write through the
 * table's pointers): matrices * 12, norms in [0.5, 1.5], biases in [-0.2, 0.2].
 */
static void spread(cb_lm_weights *w) {
    const cb_lm_config *c = cb_lm_weights_config(w);
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_lm_weights_table(c, tab, n);
    for (int i = 0; i < n; i++) {
        void *p = (void *)(uintptr_t)cb_lm_weights_get(w, tab[i].kind, tab[i].layer);
        int64_t count = tab[i].dims[0] * (tab[i].ndim == 2 ? tab[i].dims[1] : 1);
        int bf16 = cb_lm_weights_dtype_of(w, tab[i].kind) == CB_LM_BF16;
        int is_norm = strstr(tab[i].name, "norm") != NULL,
            is_bias = strstr(tab[i].name, "bias") != NULL;
        for (int64_t j = 0; j < count; j++) {
            float v;
            if (is_norm)
                v = (float)(1.0 + 0.5 * urand());
            else if (is_bias)
                v = (float)(0.2 * urand());
            else
                v = (bf16 ? cb_lm_bf16_to_f32(((uint16_t *)p)[j]) : ((float *)p)[j]) * 12.0f;
            if (bf16)
                ((uint16_t *)p)[j] = cb_lm_f32_to_bf16(v);
            else
                ((float *)p)[j] = v;
        }
    }
    free(tab);
}

static cb_lm_weights *weights_of(const cb_lm_config *c, cb_lm_dtype dt) {
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.dtype = dt;
    o.seed = 7;
    cb_lm_weights *w = NULL;
    cb_error err = {0};
    if (cb_lm_weights_create(c, &o, &w, &err)) {
        cb__test_fail(__FILE__, __LINE__, "weights %s: %s", c->name, err.msg);
        return NULL;
    }
    spread(w);
    return w;
}

/* The spread weights of weights_of, held packed (cb_lm_weights_opts.packed): a packed twin
 * whose every matrix is cb__lm_pack of the row twin's. */
static cb_lm_weights *packed_twin(const cb_lm_weights *rows) {
    const cb_lm_config *c = cb_lm_weights_config(rows);
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.dtype = cb_lm_weights_dtype_of(rows, CB_LM_W_EMBED);
    o.seed = 99;
    o.packed = 1;
    cb_lm_weights *w = NULL;
    cb_error err = {0};
    if (cb_lm_weights_create(c, &o, &w, &err)) {
        cb__test_fail(__FILE__, __LINE__, "packed weights: %s", err.msg);
        return NULL;
    }
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_lm_weights_table(c, tab, n);
    for (int i = 0; i < n; i++) {
        void *d = (void *)(uintptr_t)cb_lm_weights_get(w, tab[i].kind, tab[i].layer);
        const void *src = cb_lm_weights_get(rows, tab[i].kind, tab[i].layer);
        if (tab[i].ndim == 2)
            cb__lm_pack(d, src, tab[i].dims[0], tab[i].dims[1], o.dtype);
        else
            memcpy(d, src, (size_t)tab[i].dims[0] * sizeof(float));
    }
    free(tab);
    return w;
}

static cb_lm_weights *packed_weights_of(const cb_lm_config *c, cb_lm_dtype dt) {
    cb_lm_weights *rows = weights_of(c, dt);
    if (!rows)
        return NULL;
    cb_lm_weights *w = packed_twin(rows);
    cb_lm_weights_destroy(rows);
    return w;
}

static cb_lm_config config_of(const char *preset) {
    cb_lm_config c;
    cb_error err = {0};
    memset(&c, 0, sizeof c);
    if (cb_lm_config_preset(preset, &c, &err))
        cb__test_fail(__FILE__, __LINE__, "preset %s: %s", preset, err.msg);
    return c;
}

/* Every remainder: hidden 60 (k % 8 = 4), head_dim 20, intermediate 90 (rows %
 * 4 = 2, and k of the down projection % 8 = 2), vocab 301, GQA 3:1, untied, o
 * bias (llama attention_bias). */
static cb_lm_config config_odd(void) {
    static const char text[] =
        "{\"model_type\": \"llama\", \"hidden_size\": 60, \"num_hidden_layers\": "
        "2,"
        " \"num_attention_heads\": 3, \"num_key_value_heads\": 1, \"head_dim\": "
        "20,"
        " \"intermediate_size\": 90, \"vocab_size\": 301, \"rms_norm_eps\": 1e-5,"
        " \"rope_theta\": 10000.0, \"max_position_embeddings\": 512,"
        " \"tie_word_embeddings\": false, \"attention_bias\": true}";
    cb_lm_config c;
    cb_error err = {0};
    memset(&c, 0, sizeof c);
    if (cb_lm_config_parse(text, sizeof text - 1, "odd.json", &c, &err))
        cb__test_fail(__FILE__, __LINE__, "odd config: %s", err.msg);
    return c;
}

/* ---- The float64 reference ------------------------------------------------------------------- */

static double wget(const cb_lm_weights *w, cb_lm_wkind kind, int layer, int64_t i) {
    const void *p = cb_lm_weights_get(w, kind, layer);
    if (!p)
        return 0.0;
    if (cb_lm_weights_dtype_of(w, kind) == CB_LM_BF16)
        return cb_lm_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* y[n_out] = W x (+ bias) for a [n_out, n_in] matrix. */
static void ref_linear(const cb_lm_weights *w, cb_lm_wkind kind, cb_lm_wkind bias, int layer,
                       const double *x, int64_t n_in, int64_t n_out, double *y) {
    const void *p = cb_lm_weights_get(w, kind, layer);
    const int bf16 = cb_lm_weights_dtype_of(w, kind) == CB_LM_BF16;
    for (int64_t o = 0; o < n_out; o++) {
        double s = 0;
        for (int64_t i = 0; i < n_in; i++)
            s += (bf16 ? cb_lm_bf16_to_f32(((const uint16_t *)p)[o * n_in + i])
                       : ((const float *)p)[o * n_in + i]) *
                 x[i];
        y[o] = s + (bias != CB_LM_W_KINDS ? wget(w, bias, layer, o) : 0.0);
    }
}

static void ref_rmsnorm(const cb_lm_weights *w, cb_lm_wkind kind, int layer, double *x, int64_t n,
                        double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * r * wget(w, kind, layer, i);
}

static double ref_inv_freq(const cb_lm_config *c, int64_t i) {
    double f = pow(c->rope_theta, -2.0 * (double)i / (double)c->head_dim);
    if (!c->rope_llama3)
        return f;
    double wavelen = 2 * M_PI / f, old = (double)c->rope_original_max_positions;
    if (wavelen < old / c->rope_high_freq_factor)
        return f;
    if (wavelen > old / c->rope_low_freq_factor)
        return f / c->rope_factor;
    double s = (old / wavelen - c->rope_low_freq_factor) /
               (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1 - s) * f / c->rope_factor + s * f;
}

static void ref_rope(const cb_lm_config *c, double *v, int64_t pos) {
    int64_t half = c->head_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        double a = v[i], b = v[i + half], ang = (double)pos * ref_inv_freq(c, i);
        v[i] = a * cos(ang) - b * sin(ang);
        v[i + half] = b * cos(ang) + a * sin(ang);
    }
}

/* The logits after each of ids[from..n) (rows of vocab doubles). */
static void ref_logits(const cb_lm_weights *w, const int32_t *ids, int from, int n,
                       double *logits) {
    const cb_lm_config *c = cb_lm_weights_config(w);
    const int64_t H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const int64_t qd = nh * hd, kvd = nkv * hd, I = c->intermediate;
    const cb_lm_wkind none = CB_LM_W_KINDS;
    double *x = calloc((size_t)(n * H), sizeof(double)), *xn = malloc((size_t)H * 8);
    double *q = malloc((size_t)(n * qd) * 8), *k = malloc((size_t)(n * kvd) * 8);
    double *v = malloc((size_t)(n * kvd) * 8), *att = malloc((size_t)qd * 8);
    double *tmp = malloc((size_t)(H > I ? H : I) * 8), *g = malloc((size_t)I * 8);
    double *u = malloc((size_t)I * 8), *sc = malloc((size_t)n * 8);
    for (int t = 0; t < n; t++)
        for (int64_t i = 0; i < H; i++)
            x[t * H + i] = wget(w, CB_LM_W_EMBED, -1, ids[t] * H + i);
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < n; t++) {
            memcpy(xn, x + t * H, (size_t)H * 8);
            ref_rmsnorm(w, CB_LM_W_ATTN_NORM, l, xn, H, c->rms_eps);
            ref_linear(w, CB_LM_W_Q, c->qkv_bias ? CB_LM_W_Q_BIAS : none, l, xn, H, qd, q + t * qd);
            ref_linear(w, CB_LM_W_K, c->qkv_bias ? CB_LM_W_K_BIAS : none, l, xn, H, kvd,
                       k + t * kvd);
            ref_linear(w, CB_LM_W_V, c->qkv_bias ? CB_LM_W_V_BIAS : none, l, xn, H, kvd,
                       v + t * kvd);
            for (int64_t h = 0; h < nh; h++) {
                if (c->qk_norm)
                    ref_rmsnorm(w, CB_LM_W_Q_NORM, l, q + t * qd + h * hd, hd, c->rms_eps);
                ref_rope(c, q + t * qd + h * hd, t);
            }
            for (int64_t h = 0; h < nkv; h++) {
                if (c->qk_norm)
                    ref_rmsnorm(w, CB_LM_W_K_NORM, l, k + t * kvd + h * hd, hd, c->rms_eps);
                ref_rope(c, k + t * kvd + h * hd, t);
            }
        }
        for (int t = 0; t < n; t++) {
            for (int64_t h = 0; h < nh; h++) {
                int64_t gk = h / (nh / nkv);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < hd; d++)
                        s += q[t * qd + h * hd + d] * k[j * kvd + gk * hd + d];
                    sc[j] = s / sqrt((double)hd);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j <= t; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int64_t d = 0; d < hd; d++) {
                    double s = 0;
                    for (int j = 0; j <= t; j++)
                        s += sc[j] / sum * v[j * kvd + gk * hd + d];
                    att[h * hd + d] = s;
                }
            }
            ref_linear(w, CB_LM_W_O, c->o_bias ? CB_LM_W_O_BIAS : none, l, att, qd, H, tmp);
            for (int64_t i = 0; i < H; i++)
                x[t * H + i] += tmp[i];
            memcpy(xn, x + t * H, (size_t)H * 8);
            ref_rmsnorm(w, CB_LM_W_MLP_NORM, l, xn, H, c->rms_eps);
            ref_linear(w, CB_LM_W_GATE, none, l, xn, H, I, g);
            ref_linear(w, CB_LM_W_UP, none, l, xn, H, I, u);
            for (int64_t i = 0; i < I; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_linear(w, CB_LM_W_DOWN, none, l, g, I, H, tmp);
            for (int64_t i = 0; i < H; i++)
                x[t * H + i] += tmp[i];
        }
    }
    for (int t = from; t < n; t++) {
        memcpy(xn, x + (int64_t)t * H, (size_t)H * 8);
        ref_rmsnorm(w, CB_LM_W_NORM, -1, xn, H, c->rms_eps);
        ref_linear(w, CB_LM_W_LM_HEAD, none, -1, xn, H, c->vocab, logits + (t - from) * c->vocab);
    }
    free(x), free(xn), free(q), free(k), free(v), free(att), free(tmp), free(g), free(u), free(sc);
}

/* ---- Running the model ----------------------------------------------------------------------- */

typedef struct runner {
    cb_lm_model *m;
    cb_lm_kv *kv;
    int bt;
} runner;

static runner runner_make(const cb_lm_weights *w, int threads, int block_tokens, int n_blocks) {
    runner r = {NULL, NULL, block_tokens};
    cb_error err = {0};
    if (cb_lm_model_create(w, threads, 512, &r.m, &err))
        cb__test_fail(__FILE__, __LINE__, "model: %s", err.msg);
    else if (cb_lm_kv_create(r.m, cb_lm_kv_block_bytes(r.m, block_tokens) * (size_t)n_blocks,
                             block_tokens, &r.kv, &err))
        cb__test_fail(__FILE__, __LINE__, "kv: %s", err.msg);
    return r;
}

static void runner_free(runner *r) {
    cb_lm_kv_destroy(r->kv);
    cb_lm_model_destroy(r->m);
}

/* One step: tokens[pos0..pos0+n) of a sequence with block table blocks. */
static int step1(runner *r, const int32_t *ids, int pos0, int n, const int32_t *blocks,
                 int n_blocks, float *logits) {
    cb_lm_seq s = {ids + pos0, n, pos0, blocks, n_blocks, logits};
    cb_error err = {0};
    int rc = cb_lm_forward(r->m, r->kv, &s, 1, &err);
    if (rc)
        cb__test_fail(__FILE__, __LINE__, "forward: %s", err.msg);
    return rc;
}

static void prompt_ids(int32_t *ids, int n, int64_t vocab, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)((seed >> 8) % (uint32_t)vocab);
    }
}

static double max_abs(const double *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* max |got - ref| / max |ref|. */
static double rel_err(const float *got, const double *ref, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        e = d > e || d != d ? d : e;
    }
    return e / max_abs(ref, n);
}

/* ---- Against the float64 reference ----------------------------------------------------------- */

/* A prompt of n_prompt tokens in one call, then 3 decode steps, each checked against the
 * reference: the worst relative error within tol. */
static void check_family(const cb_lm_config *c, cb_lm_dtype dt, int reference, double tol,
                         int n_prompt) {
    const int N_PROMPT = n_prompt, N = n_prompt + 3;
    cb_lm_weights *w = weights_of(c, dt);
    if (!w)
        return;
    runner r = runner_make(w, 2, 16, 16);
    if (reference)
        cb__lm_model_set_reference(r.m, 1);
    int32_t ids[160], blocks[16];
    for (int i = 0; i < 16; i++)
        blocks[i] = cb_lm_kv_alloc(r.kv);
    prompt_ids(ids, N, c->vocab, 11);
    float *lg = malloc((size_t)c->vocab * sizeof(float));
    double *ref = malloc((size_t)(c->vocab * 4) * sizeof(double)), worst = 0;
    ref_logits(w, ids, N_PROMPT - 1, N, ref);
    for (int n = N_PROMPT; n <= N; n++) {
        int pos0 = n == N_PROMPT ? 0 : n - 1;
        if (step1(&r, ids, pos0, n - pos0, blocks, 16, lg))
            break;
        double e = rel_err(lg, ref + (n - N_PROMPT) * c->vocab, c->vocab);
        worst = e > worst ? e : worst;
    }
    printf("# %s %s %s: max |logit - f64 ref| / max |ref| = %.3g (bound %.1g)\n", c->name,
           dt == CB_LM_BF16 ? "bf16" : "f32", reference ? "scalar" : "fast", worst, tol);
    CB_CHECK_CMP_INT(worst <= tol, ==, 1);
    free(lg), free(ref);
    runner_free(&r);
    cb_lm_weights_destroy(w);
}

#define LONG 131 /* prompt positions past one attention chunk (128) */

/* float32: every family on the AVX2 path; the odd config (every kernel tail) on the scalar path
 * too (at -O0 under ASan the scalar path is the slow one). */
static void test_f32_vs_f64_reference(void) {
    const char *presets[] = {"tiny", "tiny-llama", "tiny-qwen3"};
    for (int i = 0; i < 3; i++) {
        cb_lm_config c = config_of(presets[i]);
        check_family(&c, CB_LM_F32, 0, 2e-5, 40);
    }
    cb_lm_config odd = config_odd();
    check_family(&odd, CB_LM_F32, 0, 2e-5, LONG);
    check_family(&odd, CB_LM_F32, 1, 2e-5, LONG);
}

/* bf16 weights: the reference widens the same bf16 weights, so the error is the bfloat16 KV
 * cache (keys and values rounded to 8 bits of mantissa) alone. qwen3 (q/k norm) and the odd
 * config; the fixtures below cover the three families against transformers. */
static void test_bf16_vs_f64_reference(void) {
    cb_lm_config c = config_of("tiny-qwen3");
    check_family(&c, CB_LM_BF16, 0, 5e-2, 40);
    cb_lm_config odd = config_odd();
    check_family(&odd, CB_LM_BF16, 0, 5e-2, LONG);
    check_family(&odd, CB_LM_BF16, 1, 5e-2, 40);
}

/* ---- Against transformers (tests/data/llm) ------------------------------------------------ */

typedef struct ref_file {
    char *data;
    size_t len;
    uint32_t n_prompt, n_steps, vocab, n_runs;
    const int32_t *prompt;
} ref_file;

static uint32_t rd_u32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int ref_open(const char *path, ref_file *r) {
    memset(r, 0, sizeof *r);
    r->data = cb_test_read(path, &r->len);
    if (!r->data || r->len < 32 || memcmp(r->data, "CBLMREF1", 8) != 0 || rd_u32(r->data + 8) != 1)
        return -1;
    r->n_prompt = rd_u32(r->data + 12);
    r->n_steps = rd_u32(r->data + 16);
    r->vocab = rd_u32(r->data + 20);
    r->n_runs = rd_u32(r->data + 24);
    size_t need = 32 + 4 * (size_t)r->n_prompt +
                  (size_t)r->n_runs * 4 * (r->vocab + (size_t)r->n_steps * (1 + r->vocab));
    if (r->len != need || r->n_prompt > 4096 || r->n_steps > 4096)
        return -1;
    r->prompt = (const int32_t *)(const void *)(r->data + 32);
    return 0;
}

/* Run `run`: its prefill logits (step -1) or step i's token and logits. */
static const char *ref_run(const ref_file *r, int run) {
    return r->data + 32 + 4 * (size_t)r->n_prompt +
           (size_t)run * 4 * (r->vocab + (size_t)r->n_steps * (1 + r->vocab));
}
static void ref_step(const ref_file *r, int run, int i, int32_t *token, float *logits) {
    const char *p = ref_run(r, run);
    if (i < 0) {
        memcpy(logits, p, 4 * (size_t)r->vocab);
        return;
    }
    p += 4 * (size_t)r->vocab + (size_t)i * 4 * (1 + r->vocab);
    memcpy(token, p, 4);
    memcpy(logits, p + 4, 4 * (size_t)r->vocab);
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t j = 1; j < n; j++)
        best = v[j] > v[best] ? (int32_t)j : best;
    return best;
}

/* Teacher-forced run of the fixture against reference run `run`: the max |logit difference|
 * over the prefill and every step, and how many leading steps' greedy tokens agree. */
static void fixture_run(const char *dir, const ref_file *ref, cb_lm_dtype dt, int run,
                        double *max_diff, int *agree) {
    cb_lm_config c;
    cb_error err = {0};
    *max_diff = INFINITY;
    *agree = -1;
    if (cb_lm_config_resolve(dir, &c, &err)) {
        cb__test_fail(__FILE__, __LINE__, "%s: %s", dir, err.msg);
        return;
    }
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.dtype = dt;
    o.path = dir;
    cb_lm_weights *w = NULL;
    if (cb_lm_weights_create(&c, &o, &w, &err)) {
        cb__test_fail(__FILE__, __LINE__, "%s: %s", dir, err.msg);
        return;
    }
    CB_CHECK_EQ_INT(c.vocab, ref->vocab);
    runner r = runner_make(w, 2, 16, 8);
    int32_t blocks[8];
    for (int i = 0; i < 8; i++)
        blocks[i] = cb_lm_kv_alloc(r.kv);
    float *lg = malloc(4 * (size_t)c.vocab), *want = malloc(4 * (size_t)c.vocab);
    int32_t *ids = malloc(4 * ((size_t)ref->n_prompt + ref->n_steps));
    memcpy(ids, ref->prompt, 4 * (size_t)ref->n_prompt);
    double md = 0;
    int ag = 0, diverged = 0;
    if (step1(&r, ids, 0, (int)ref->n_prompt, blocks, 8, lg) == 0) {
        for (int i = -1; i < (int)ref->n_steps; i++) {
            int32_t tok = 0;
            ref_step(ref, run, i, &tok, want);
            if (i >= 0) { /* the token the reference chose from its previous logits */
                if (!diverged && argmax(lg, c.vocab) == tok)
                    ag++;
                else
                    diverged = 1;
                ids[ref->n_prompt + i] = tok;
                if (step1(&r, ids, (int)ref->n_prompt + i, 1, blocks, 8, lg))
                    break;
            }
            for (int64_t j = 0; j < c.vocab; j++) {
                double d = fabs((double)lg[j] - want[j]);
                md = d > md || d != d ? d : md;
            }
        }
    }
    *max_diff = md;
    *agree = ag;
    free(lg), free(want), free(ids);
    runner_free(&r);
    cb_lm_weights_destroy(w);
}

/* transformers' float64 run against colobench in float32: max |logit difference| within 1e-4
 * (the logits span about [-8, 9]; measured 1.8e-5 llama, 2.2e-5 qwen2, 8.6e-6 qwen3, and
 * transformers' own float32 run is 1.4e-5, 9.5e-6, 7.1e-6 away) and the same greedy token at
 * all 64 steps. bfloat16 weights (activations float32, KV cache bf16): within 0.5 of the float64
 * run (measured 0.36, 0.31, 0.09) and within 1.0 of transformers' bfloat16 run, whose
 * activations are bf16 too (0.51, 0.31, 0.20); greedy tokens equal float64's for the first 64,
 * 10 and 64 steps (transformers' bf16 run: 47, 10, 64; qwen2's 11th step is a near tie). */
static void test_llm_fixtures(void) {
    static const struct {
        const char *family;
        int bf16_agree_min; /* leading greedy steps of the bf16 path equal to float64's */
    } fam[] = {{"llama", 64}, {"qwen2", 10}, {"qwen3", 64}};
    for (int f = 0; f < 3; f++) {
        char dir[512], path[600];
        snprintf(dir, sizeof dir, "%s/tests/data/llm/%s", CB_TEST_SRCDIR, fam[f].family);
        snprintf(path, sizeof path, "%s/ref.bin", dir);
        ref_file ref;
        if (ref_open(path, &ref)) {
            cb__test_fail(__FILE__, __LINE__, "%s: missing or malformed", path);
            free(ref.data);
            continue;
        }
        double d32, d16, d16b;
        int a32, a16, a16b;
        fixture_run(dir, &ref, CB_LM_F32, 0, &d32, &a32);
        fixture_run(dir, &ref, CB_LM_BF16, 0, &d16, &a16);
        fixture_run(dir, &ref, CB_LM_BF16, 2, &d16b, &a16b);
        printf("# %s: f32 vs transformers f64: max |diff| %.3g, greedy %d/%u; bf16 vs f64: %.3g, "
               "greedy %d; bf16 vs transformers bf16: %.3g, greedy %d\n",
               fam[f].family, d32, a32, ref.n_steps, d16, a16, d16b, a16b);
        CB_CHECK_CMP_INT(d32 <= 1e-4, ==, 1);
        CB_CHECK_EQ_INT(a32, ref.n_steps);
        CB_CHECK_CMP_INT(d16 <= 0.5, ==, 1);
        CB_CHECK_CMP_INT(d16b <= 1.0, ==, 1);
        CB_CHECK_CMP_INT(a16, >=, fam[f].bf16_agree_min);
        free(ref.data);
    }
}

/* ---- Invariance ------------------------------------------------------------------------------ */

typedef struct seqrun {
    int32_t ids[96];
    int n_prompt, pos; /* tokens done */
    int32_t blocks[32];
} seqrun;

/* Sequence A (prompt 37, then 5 decode steps fed its own greedy token) alone,
 * then with B and C (prompts 50 and 9 of different content) in the same steps;
 * the logits of A's steps must be the same bits. dt, block_tokens. */
static void invariance_batch(const cb_lm_config *c, cb_lm_dtype dt, int packed) {
    cb_lm_weights *w = packed ? packed_weights_of(c, dt) : weights_of(c, dt);
    if (!w)
        return;
    const int64_t V = c->vocab;
    float *alone = malloc((size_t)(6 * V) * sizeof(float));
    float *batched = malloc((size_t)(6 * V) * sizeof(float));
    float *scratch = malloc((size_t)(2 * V) * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        runner r = runner_make(w, 2, 8, 64);
        seqrun s[3];
        const int lens[3] = {37, 50, 9};
        for (int i = 0; i < 3; i++) {
            prompt_ids(s[i].ids, 96, V, 100 + (uint32_t)i);
            s[i].n_prompt = lens[i];
            s[i].pos = 0;
            for (int b = 0; b < 12; b++)
                s[i].blocks[b] = cb_lm_kv_alloc(r.kv);
        }
        float *out = pass ? batched : alone;
        for (int stepi = 0; stepi < 6; stepi++) {
            cb_lm_seq q[3];
            int n = pass ? 3 : 1;
            for (int i = 0; i < n; i++) {
                /* B: prompt in chunks of 20; C: prompt at once; then decode */
                int todo = s[i].pos < s[i].n_prompt ? s[i].n_prompt - s[i].pos : 1;
                if (i == 1 && todo > 20)
                    todo = 20;
                q[i] = (cb_lm_seq){
                    s[i].ids + s[i].pos, todo, s[i].pos,
                    s[i].blocks,         12,   i == 0 ? out + stepi * V : scratch + (i - 1) * V};
            }
            /* A sits last in the batch: its rows are not the first of the products.
             */
            cb_lm_seq order[3] = {q[1], q[2], q[0]};
            cb_error err = {0};
            int rc = cb_lm_forward(r.m, r.kv, pass ? order : q, n, &err);
            CB_CHECK_EQ_INT(rc, 0);
            if (rc)
                break;
            for (int i = 0; i < n; i++) {
                s[i].pos += q[i].n_tokens;
                if (s[i].pos >= s[i].n_prompt) { /* greedy next token */
                    const float *lg = q[i].logits;
                    int32_t best = 0;
                    for (int64_t j = 1; j < V; j++)
                        best = lg[j] > lg[best] ? (int32_t)j : best;
                    s[i].ids[s[i].pos] = best;
                    s[i].n_prompt = s[i].pos; /* decode from here on */
                }
            }
        }
        runner_free(&r);
    }
    CB_CHECK(memcmp(alone, batched, (size_t)(6 * V) * sizeof(float)) == 0);
    free(alone), free(batched), free(scratch);
    cb_lm_weights_destroy(w);
}

static void test_batch_invariance(void) {
    cb_lm_config c = config_of("tiny-qwen3");
    invariance_batch(&c, CB_LM_F32, 0);
    invariance_batch(&c, CB_LM_BF16, 0);
    cb_lm_config odd = config_odd();
    invariance_batch(&odd, CB_LM_F32, 0);
    invariance_batch(&odd, CB_LM_BF16, 0);
    invariance_batch(&odd, CB_LM_F32, 1); /* weights packed: the packed output head too */
    invariance_batch(&odd, CB_LM_BF16, 1);
}

/* One call against chunks 5 + 7 + rest, and blocks of 16 in order against
 * blocks of 4 at scattered ids: the logits after the prompt and after 3 decode
 * steps, same bits. */
static void chunks_and_pages(const cb_lm_config *c, cb_lm_dtype dt) {
    enum { N = 45 };
    cb_lm_weights *w = weights_of(c, dt);
    if (!w)
        return;
    const int64_t V = c->vocab;
    int32_t ids[N + 3];
    prompt_ids(ids, N + 3, V, 5);
    float *res[3];
    for (int v = 0; v < 3; v++) {
        res[v] = malloc((size_t)(4 * V) * sizeof(float));
        int bt = v == 2 ? 4 : 16;
        runner r = runner_make(w, 2, bt, 40);
        int32_t blocks[16];
        int nb = (N + 3 + bt - 1) / bt;
        for (int b = 0; b < nb; b++) /* scattered: 3, 10, 17, ... modulo 40 */
            blocks[b] = v == 2 ? (int32_t)((3 + 7 * b) % 40) : cb_lm_kv_alloc(r.kv);
        if (v == 1) {
            step1(&r, ids, 0, 5, blocks, nb, NULL);
            step1(&r, ids, 5, 7, blocks, nb, NULL);
            step1(&r, ids, 12, N - 12, blocks, nb, res[v]);
        } else {
            step1(&r, ids, 0, N, blocks, nb, res[v]);
        }
        for (int d = 0; d < 3; d++)
            step1(&r, ids, N + d, 1, blocks, nb, res[v] + (d + 1) * V);
        runner_free(&r);
    }
    CB_CHECK(memcmp(res[0], res[1], (size_t)(4 * V) * sizeof(float)) == 0);
    CB_CHECK(memcmp(res[0], res[2], (size_t)(4 * V) * sizeof(float)) == 0);
    for (int v = 0; v < 3; v++)
        free(res[v]);
    cb_lm_weights_destroy(w);
}

static void test_chunks_and_paging(void) {
    cb_lm_config c = config_of("tiny");
    chunks_and_pages(&c, CB_LM_F32);
    chunks_and_pages(&c, CB_LM_BF16);
    cb_lm_config odd = config_odd();
    chunks_and_pages(&odd, CB_LM_BF16);
}

/* ---- Kernels -------------------------------------------------------------------------------- */

/* The product kernel alone at a shape the models above do not reach: k = 1003 (a tail), 50 rows
 * (a partial panel), a bias, 70 tokens (two token blocks of 48 and 22). The 70 tokens in one
 * call equal 70 calls of one token bit for bit, on 2 threads and on 1; the scalar path agrees to
 * rounding. */
static void test_matmul_blocks(void) {
    enum { N = 50, K = 1003, T = 70 };
    float *x = malloc(sizeof(float) * T * K), *bias = malloc(sizeof(float) * N);
    float *w32 = malloc(sizeof(float) * N * K);
    uint16_t *w16 = malloc(sizeof(uint16_t) * N * K);
    float *y[4];
    for (int i = 0; i < 4; i++)
        y[i] = malloc(sizeof(float) * T * N);
    for (int i = 0; i < T * K; i++)
        x[i] = (float)urand();
    for (int i = 0; i < N * K; i++) {
        w32[i] = (float)urand() * 0.1f;
        w16[i] = cb_lm_f32_to_bf16(w32[i]);
    }
    for (int i = 0; i < N; i++)
        bias[i] = (float)urand();
    for (int dt = 0; dt < 2; dt++) {
        const void *w = dt ? (const void *)w16 : (const void *)w32;
        cb_lm_dtype wd = dt ? CB_LM_BF16 : CB_LM_F32;
        cb__lm_kctx two = {2, cb__lm_cpu_avx2()}, one = {1, cb__lm_cpu_avx2()}, ref = {1, 0};
        cb__lm_mm_part p = {w, bias, N, y[0], N, NULL};
        cb__lm_matmul(&two, x, K, T, K, wd, &p, 1);
        p.y = y[1];
        cb__lm_matmul(&one, x, K, T, K, wd, &p, 1);
        for (int t = 0; t < T; t++) {
            p.y = y[2] + t * N;
            cb__lm_matmul(&two, x + t * K, K, 1, K, wd, &p, 1);
        }
        p.y = y[3];
        cb__lm_matmul(&ref, x, K, T, K, wd, &p, 1);
        CB_CHECK(memcmp(y[0], y[1], sizeof(float) * T * N) == 0);
        CB_CHECK(memcmp(y[0], y[2], sizeof(float) * T * N) == 0);
        double e = cb_test_rel_err(y[0], y[3], (size_t)T * N);
        printf("# matmul %s [%d x %d] x [%d x %d]^T: fast vs scalar %.3g\n", dt ? "bf16" : "f32",
               T, K, N, K, e);
        CB_CHECK_CMP_INT(e < 1e-5, ==, 1);
    }
    for (int i = 0; i < 4; i++)
        free(y[i]);
    free(x), free(bias), free(w32), free(w16);
}

/* The packed product (the layers' matrices) at shapes that take every path: k = 1003 (four
 * chunks, the last partial), two parts of 50 and 21 rows (partial panels, a part boundary inside
 * a thread's panels), a bias on one part, 140 tokens (two token blocks of 72 and 68, partial
 * token tiles), 5 tokens (the few-token path) and 1. Every result equals the scalar path's fmaf
 * chain bit for bit, on 2 threads and on 1, in one call and token by token, into rows of y or
 * through row pointers. */
static void test_matmul_packed(void) {
    enum { K = 1003, T = 140, NA = 50, NB = 21 };
    float *x = malloc(sizeof(float) * T * K), *bias = malloc(sizeof(float) * NA);
    float *wa = malloc(sizeof(float) * NA * K), *wb = malloc(sizeof(float) * NB * K);
    uint16_t *ha = malloc(sizeof(uint16_t) * NA * K), *hb = malloc(sizeof(uint16_t) * NB * K);
    float *ya[4], *yb[4];
    for (int i = 0; i < 4; i++)
        ya[i] = malloc(sizeof(float) * T * NA), yb[i] = malloc(sizeof(float) * T * NB);
    for (int i = 0; i < T * K; i++)
        x[i] = (float)urand();
    for (int i = 0; i < NA * K; i++)
        wa[i] = (float)urand() * 0.1f, ha[i] = cb_lm_f32_to_bf16(wa[i]);
    for (int i = 0; i < NB * K; i++)
        wb[i] = (float)urand() * 0.1f, hb[i] = cb_lm_f32_to_bf16(wb[i]);
    for (int i = 0; i < NA; i++)
        bias[i] = (float)urand();
    for (int dt = 0; dt < 2; dt++) {
        const cb_lm_dtype wd = dt ? CB_LM_BF16 : CB_LM_F32;
        void *pa = malloc(cb__lm_packed_bytes(NA, K, wd)), *pb = malloc(cb__lm_packed_bytes(NB, K, wd));
        CB_CHECK_EQ_INT((int)(cb__lm_packed_bytes(NA, K, wd) % 64), 0);
        cb__lm_pack(pa, dt ? (const void *)ha : (const void *)wa, NA, K, wd);
        cb__lm_pack(pb, dt ? (const void *)hb : (const void *)wb, NB, K, wd);
        cb__lm_kctx two = {2, cb__lm_cpu_avx2()}, one = {1, cb__lm_cpu_avx2()}, ref = {1, 0};
        cb__lm_mm_part p[2] = {{pa, bias, NA, ya[0], NA, NULL}, {pb, NULL, NB, yb[0], NB, NULL}};
        cb__lm_matmul_packed(&ref, x, K, T, K, wd, p, 2);
        p[0].y = ya[1], p[1].y = yb[1];
        cb__lm_matmul_packed(&two, x, K, T, K, wd, p, 2);
        p[0].y = ya[2], p[1].y = yb[2];
        cb__lm_matmul_packed(&one, x, K, T, K, wd, p, 2);
        for (int t = 0; t < T;) { /* 1, 5, 1, 5, ... tokens a call */
            const int n = (t / 6) % 2 == 0 && t % 6 == 0 && t + 5 <= T ? 5 : 1;
            p[0].y = ya[3] + t * NA, p[1].y = yb[3] + t * NB;
            cb__lm_matmul_packed(&two, x + t * K, K, n, K, wd, p, 2);
            t += n;
        }
        for (int i = 1; i < 4; i++) {
            CB_CHECK(memcmp(ya[0], ya[i], sizeof(float) * T * NA) == 0);
            CB_CHECK(memcmp(yb[0], yb[i], sizeof(float) * T * NB) == 0);
        }
        /* outputs through row pointers (the output head's logits), in reverse order, for 140
         * tokens and for 5 */
        float *rows_a[T], *rows_b[T];
        for (int n = T; n > 0; n = n == T ? 5 : 0) {
            for (int t = 0; t < n; t++)
                rows_a[t] = ya[3] + (n - 1 - t) * NA, rows_b[t] = yb[3] + (n - 1 - t) * NB;
            cb__lm_mm_part r[2] = {{pa, bias, NA, NULL, 0, rows_a}, {pb, NULL, NB, NULL, 0, rows_b}};
            cb__lm_matmul_packed(&two, x, K, n, K, wd, r, 2);
            for (int t = 0; t < n; t++) {
                CB_CHECK(memcmp(rows_a[t], ya[0] + t * NA, sizeof(float) * NA) == 0);
                CB_CHECK(memcmp(rows_b[t], yb[0] + t * NB, sizeof(float) * NB) == 0);
            }
        }
        /* and the fmaf chain is the product: against a double sum */
        double worst = 0.0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < NA; j++) {
                double s = bias[j];
                for (int k = 0; k < K; k++)
                    s += (double)x[t * K + k] * (dt ? cb_lm_bf16_to_f32(ha[j * K + k]) : wa[j * K + k]);
                const double e = fabs(s - ya[0][t * NA + j]);
                worst = e > worst ? e : worst;
            }
        printf("# packed matmul %s [%d x %d] x [%d + %d x %d]^T: paths bit-identical, max |y - f64| %.3g\n",
               dt ? "bf16" : "f32", T, K, NA, NB, K, worst);
        CB_CHECK_CMP_INT(worst < 1e-4, ==, 1);
        free(pa), free(pb);
    }
    for (int i = 0; i < 4; i++)
        free(ya[i]), free(yb[i]);
    free(x), free(bias), free(wa), free(wb), free(ha), free(hb);
}

/* SwiGLU's fast path (exp8) against expf: within 4 ulp-ish relative error, over the range a
 * gate takes and its extremes (overflowing e^-g, underflowing), and a row's results do not
 * depend on the row. */
static void test_swiglu(void) {
    enum { T = 3, N = 37 };
    float g[T * N], u[T * N], g2[T * N];
    for (int i = 0; i < T * N; i++) {
        g[i] = (float)(30.0 * urand());
        u[i] = (float)urand();
    }
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -87.5f, g[4] = 88.9f;
    for (int r = 1; r < T; r++) { /* the same row three times */
        memcpy(g + r * N, g, sizeof(float) * N);
        memcpy(u + r * N, u, sizeof(float) * N);
    }
    memcpy(g2, g, sizeof g);
    cb__lm_kctx fast = {2, cb__lm_cpu_avx2()}, ref = {1, 0};
    cb__lm_swiglu(&fast, g, u, T, N);
    cb__lm_swiglu(&ref, g2, u, T, N);
    double worst = 0.0;
    for (int i = 0; i < T * N; i++) {
        const double d = fabs((double)g[i] - g2[i]) / (fabs((double)g2[i]) + 1e-30);
        worst = d > worst ? d : worst;
        CB_CHECK(isfinite(g[i]));
    }
    for (int r = 1; r < T; r++)
        CB_CHECK(memcmp(g + r * N, g, sizeof(float) * N) == 0);
    printf("# swiglu fast vs expf: max relative difference %.3g\n", worst);
    CB_CHECK_CMP_INT(worst < 1e-6, ==, 1);
}

/* Weights loaded packed (as llm.generate loads them for the CPU): each matrix is cb__lm_pack of
 * the rows (a seeded random model, both precisions), vectors unchanged; a model on them needs no
 * copy, gives the same greedy tokens as a model on the rows over a prefill and 6 decode steps,
 * logits within 1e-5 of the largest (the layers' bits are the same; only the output head's
 * summation order differs: one fmaf chain against 8 lanes); a CUDA model refuses them. */
static void test_packed_weights(void) {
    cb_lm_config c = config_odd();
    for (int dt = 0; dt < 2; dt++) {
        const cb_lm_dtype wd = dt ? CB_LM_BF16 : CB_LM_F32;
        cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
        o.dtype = wd, o.seed = 7;
        cb_lm_weights *rows = NULL, *packed = NULL;
        cb_error err = {0};
        CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &rows, &err), 0);
        o.packed = 1;
        CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &packed, &err), 0);
        if (!rows || !packed)
            return;
        CB_CHECK_EQ_INT(cb_lm_weights_packed(packed), 1);
        CB_CHECK_EQ_INT(cb_lm_weights_packed(rows), 0);
        int n = cb_lm_weights_table(&c, NULL, 0), bad = 0;
        cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
        cb_lm_weights_table(&c, tab, n);
        for (int i = 0; i < n; i++) {
            const void *a = cb_lm_weights_get(rows, tab[i].kind, tab[i].layer);
            const void *b = cb_lm_weights_get(packed, tab[i].kind, tab[i].layer);
            if (tab[i].ndim == 1) {
                bad += memcmp(a, b, (size_t)tab[i].dims[0] * sizeof(float)) != 0;
                continue;
            }
            const size_t pb = cb__lm_packed_bytes(tab[i].dims[0], tab[i].dims[1], wd);
            void *want = malloc(pb);
            memset(want, 0, pb);
            cb__lm_pack(want, a, tab[i].dims[0], tab[i].dims[1], wd);
            bad += memcmp(want, b, pb) != 0;
            float row[512];
            cb__lm_packed_row(row, b, tab[i].dims[0], tab[i].dims[1], tab[i].dims[0] - 1, wd);
            for (int64_t k = 0; k < tab[i].dims[1] && k < 512; k++) {
                const size_t at = (size_t)(tab[i].dims[0] - 1) * (size_t)tab[i].dims[1] + (size_t)k;
                const float v = dt ? cb_lm_bf16_to_f32(((const uint16_t *)a)[at]) : ((const float *)a)[at];
                bad += row[k] != v;
            }
            free(want);
        }
        CB_CHECK_EQ_INT(bad, 0);
        free(tab);

        runner ra = runner_make(rows, 2, 8, 32), rb = runner_make(packed, 2, 8, 32);
        CB_CHECK_EQ_INT((int)cb_lm_model_packed_bytes(rb.m), 0);
        CB_CHECK(cb_lm_model_packed_bytes(ra.m) > 0);
        const int64_t V = c.vocab;
        float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
        int32_t ids[64], blocks[16];
        for (int i = 0; i < 16; i++)
            blocks[i] = i;
        prompt_ids(ids, 20, V, 3u + (uint32_t)dt);
        double worst = 0.0;
        int same = 1;
        for (int step = 0; step < 7; step++) {
            const int pos0 = step ? 19 + step : 0, len = step ? 1 : 20;
            step1(&ra, ids, pos0, len, blocks, 16, la);
            step1(&rb, ids, pos0, len, blocks, 16, lb);
            double top = 0.0, d = 0.0;
            int32_t ga = 0, gb = 0;
            for (int64_t j = 0; j < V; j++) {
                top = fabs(la[j]) > top ? fabs(la[j]) : top;
                d = fabs((double)la[j] - lb[j]) > d ? fabs((double)la[j] - lb[j]) : d;
                ga = la[j] > la[ga] ? (int32_t)j : ga;
                gb = lb[j] > lb[gb] ? (int32_t)j : gb;
            }
            worst = d / top > worst ? d / top : worst;
            same &= ga == gb;
            ids[pos0 + len] = ga;
        }
        printf("# packed weights %s: logits within %.3g of rows' (relative to the largest), greedy %s\n",
               dt ? "bf16" : "f32", worst, same ? "equal" : "DIFFERENT");
        CB_CHECK_CMP_INT(worst < 1e-5, ==, 1);
        CB_CHECK_EQ_INT(same, 1);
        runner_free(&ra), runner_free(&rb);
        free(la), free(lb);

        cb_lm_model_opts mo = CB_LM_MODEL_OPTS_DEFAULT;
        mo.device = 0;
        cb_lm_model *m = NULL;
        CB_CHECK_EQ_INT(cb_lm_model_create_opts(packed, &mo, &m, &err), CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, "packed for the CPU kernels");
        CB_CHECK(m == NULL);
        cb_lm_weights_destroy(rows), cb_lm_weights_destroy(packed);
    }
}

/* ---- KV pool and errors ---------------------------------------------------------------------- */

static void test_kv_pool(void) {
    cb_lm_config c = config_of("tiny");
    cb_lm_weights *w = weights_of(&c, CB_LM_BF16);
    cb_lm_model *m = NULL;
    cb_lm_kv *kv = NULL;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_lm_model_create(w, 1, 64, &m, &err), 0);
    CB_CHECK_EQ_INT(cb_lm_model_kv_dtype(m), CB_LM_BF16);
    /* 2 layers * (k, v) * 32 kv dims * 2 bytes = 256 bytes a position */
    CB_CHECK_EQ_INT(cb_lm_kv_block_bytes(m, 16), 4096);
    CB_CHECK_EQ_INT(cb_lm_kv_block_bytes(m, 1), 256);
    CB_CHECK_EQ_INT(cb_lm_kv_create(m, 4095, 16, &kv, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "kv_cache_bytes: 4095 bytes is smaller than one block of 4096");
    CB_CHECK(kv == NULL);
    CB_CHECK_EQ_INT(cb_lm_kv_create(m, 4096, 0, &kv, &err), CB_EINVAL);
    CB_CHECK_EQ_INT(cb_lm_kv_create(m, 3 * 4096 + 100, 16, &kv, &err), 0);
    CB_CHECK_EQ_INT(cb_lm_kv_n_blocks(kv), 3);
    CB_CHECK_EQ_INT(cb_lm_kv_block_tokens(kv), 16);
    CB_CHECK_EQ_INT(cb_lm_kv_alloc(kv), 0);
    CB_CHECK_EQ_INT(cb_lm_kv_alloc(kv), 1);
    CB_CHECK_EQ_INT(cb_lm_kv_alloc(kv), 2);
    CB_CHECK_EQ_INT(cb_lm_kv_alloc(kv), -1);
    cb_lm_kv_release(kv, 1);
    cb_lm_kv_release(kv, 1); /* twice: ignored */
    cb_lm_kv_release(kv, 7); /* out of range: ignored */
    CB_CHECK_EQ_INT(cb_lm_kv_free_blocks(kv), 1);
    CB_CHECK_EQ_INT(cb_lm_kv_alloc(kv), 1);
    CB_CHECK_EQ_INT(cb_lm_kv_free_blocks(kv), 0);
    /* step_weight_bytes: tiny has 119,360 parameters; a step reads all but the
     * embedding rows it looks up, and the tied embedding is the head: matrices in
     * bf16, vectors in f32. */
    size_t mats = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 160) + 512 * 64;
    size_t vecs = 2 * (2 * 64 + 64 + 2 * 32) + 64;
    CB_CHECK_EQ_INT(cb_lm_model_step_weight_bytes(m), mats * 2 + vecs * 4);
    cb_lm_kv_destroy(kv);
    cb_lm_model_destroy(m);
    cb_lm_weights_destroy(w);
}

static void test_bad_input(void) {
    cb_lm_config c = config_of("tiny");
    cb_lm_weights *w = weights_of(&c, CB_LM_F32);
    runner r = runner_make(w, 1, 4, 4);
    int32_t ids[20], blocks[4] = {0, 1, 2, 3};
    prompt_ids(ids, 20, c.vocab, 3);
    float lg[512], lg2[512];
    CB_CHECK_EQ_INT(step1(&r, ids, 0, 8, blocks, 4, lg), 0);
    cb_error err = {0};
    int32_t bad[2] = {5, 512};
    cb_lm_seq s = {bad, 2, 8, blocks, 4, lg2};
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "token id 512 (index 1) outside the vocabulary [0, 512)");
    bad[1] = -1;
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "token id -1");
    s = (cb_lm_seq){ids + 8, 9, 8, blocks, 4, lg2}; /* positions 0..16 need 5 blocks of 4 */
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "block table of 4 blocks, positions 0..16 need 5");
    int32_t wrong[4] = {0, 1, 9, 3};
    s = (cb_lm_seq){ids + 8, 2, 8, wrong, 4, lg2};
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "block id 9 (entry 2) outside the cache's 4 blocks");
    s = (cb_lm_seq){ids, 0, 0, blocks, 4, lg2};
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "sequence 0 has no tokens");
    s = (cb_lm_seq){ids, 1, 1024, blocks, 4, lg2};
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "beyond max_positions 1024");
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 0, &err), CB_EINVAL);
    /* refused calls wrote nothing: the next token decodes as if they never
     * happened */
    CB_CHECK_EQ_INT(step1(&r, ids, 8, 1, blocks, 4, lg), 0);
    runner ok = runner_make(w, 1, 4, 4);
    CB_CHECK_EQ_INT(step1(&ok, ids, 0, 9, blocks, 4, lg2), 0);
    CB_CHECK(memcmp(lg, lg2, sizeof lg) == 0);
    runner_free(&ok);
    /* model arguments */
    cb_lm_model *m = NULL;
    CB_CHECK_EQ_INT(cb_lm_model_create(w, 0, 16, &m, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "threads 0");
    CB_CHECK_EQ_INT(cb_lm_model_create(w, 1, 0, &m, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "max_step_tokens 0");
    /* more tokens than max_step_tokens (512) */
    int32_t *many = calloc(600, sizeof *many);
    s = (cb_lm_seq){many, 600, 0, blocks, 4, NULL};
    CB_CHECK_EQ_INT(cb_lm_forward(r.m, r.kv, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "max_step_tokens 512");
    free(many);
    runner_free(&r);
    cb_lm_weights_destroy(w);
}

/* Allocation failures at create leave nothing behind (ASan checks the leaks).
 */
static void test_alloc_failures(void) {
    cb_lm_config c = config_of("tiny");
    cb_lm_weights *w = weights_of(&c, CB_LM_F32);
    for (long n = 1; n <= 8; n++) {
        cb_lm_model *m = NULL;
        cb_lm_kv *kv = NULL;
        cb_error err = {0};
        cb__alloc_fail_after(n);
        int rc = cb_lm_model_create(w, 1, 8, &m, &err);
        if (rc == 0)
            rc = cb_lm_kv_create(m, 1 << 16, 16, &kv, &err);
        cb__alloc_fail_after(0);
        if (rc)
            CB_CHECK_EQ_INT(rc, CB_ENOMEM);
        cb_lm_kv_destroy(kv);
        cb_lm_model_destroy(m);
    }
    cb_lm_weights_destroy(w);
}

int main(void) {
    CB_RUN(test_f32_vs_f64_reference);
    CB_RUN(test_bf16_vs_f64_reference);
    CB_RUN(test_llm_fixtures);
    CB_RUN(test_batch_invariance);
    CB_RUN(test_chunks_and_paging);
    CB_RUN(test_matmul_blocks);
    CB_RUN(test_matmul_packed);
    CB_RUN(test_swiglu);
    CB_RUN(test_packed_weights);
    CB_RUN(test_kv_pool);
    CB_RUN(test_bad_input);
    CB_RUN(test_alloc_failures);
    return cb_test_done();
}
