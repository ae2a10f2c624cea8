/* llm/lm_model.c - the forward pass of a Llama-family decoder on the CPU and its paged KV cache
 * (see lm_model.h for the contract; the kernels are in lm_kernels.c).
 *
 * Design. One forward call is one engine step: the new tokens of all its sequences are rows of
 * one activation matrix (sequence after sequence), so every projection is one matrix product
 * over the whole step (q/k/v in one parallel pass, gate/up in one), which reads each weight
 * once per step however many sequences it holds. Per layer, transformers' modeling_llama /
 * modeling_qwen2 / modeling_qwen3 semantics: RMSNorm, q/k/v (+ bias), per-head q/k RMSNorm
 * (qwen3, before RoPE), RoPE (rotate_half), the step's keys and values written into the cache,
 * causal attention over the cache (GQA), o projection (+ bias), residual; RMSNorm, SwiGLU MLP,
 * residual. Then the final RMSNorm and the output head for the last token of each sequence that
 * asks for logits. Attention reads the step's own keys back from the cache, so a prompt fed in
 * chunks and in one call see the same (possibly bfloat16-rounded) keys: the same bits.
 *
 * RoPE: inv_freq as transformers computes it (float32 values; Llama 3 scaling by
 * _compute_llama3_parameters' rule, in double, rounded to float), the angle position * inv_freq
 * rounded to float as transformers' float32 product, its cos and sin in double rounded to
 * float; computed per step for the step's positions (hd/2 pairs per token: no table to bound).
 *
 * KV cache: one cb_malloc'd pool, 64-byte aligned blocks. A block holds block_tokens positions
 * as [layer][k|v][kv_head][block_tokens][head_dim]: the keys of one (layer, head) in a block
 * are contiguous rows, which is what attention streams. The free list is a stack of ids.
 *
 * Memory: the products run on matrices packed for the CPU kernels (cb__lm_pack: panels of 16
 * output columns, k-major). Weights loaded packed (cb_lm_weights_opts.packed, as llm.generate
 * loads them) are used in place, the output head included (the embedding lookup reads a packed
 * row back). Weights as rows: the model packs the layers' seven matrices into one allocation of
 * its own, the weights' matrix bytes again (cb_lm_model_packed_bytes), and the head keeps the
 * dot-product kernel on the rows (a packed copy of a tied embedding would be 0.5 GB more for
 * qwen2.5-0.5b in float32). Scratch for max_step_tokens tokens allocated at create (one
 * allocation); the MLP runs over chunks of MLP_CHUNK tokens so its [tokens, intermediate]
 * buffers stay bounded.
 *
 * Thread-safety: a model or cache is used by one forward call at a time (the kernels use the
 * model's threads inside the call). Ownership: the model borrows the weights. */
#include "llm/lm_model.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "llm/lm_cuda.h"
#include "llm/lm_kernels.h"

#define MLP_CHUNK 256 /* tokens per pass of the MLP */
#define THREADS_MAX 1024

typedef struct lm_layer {
    const void *q, *k, *v, *o, *gate, *up, *down;
    const float *q_bias, *k_bias, *v_bias, *o_bias, *q_norm, *k_norm, *attn_norm, *mlp_norm;
} lm_layer;

struct cb_lm_model {
    const cb_lm_weights *w;
    cb_lm_config cfg;
    cb_lm_dtype dtype;
    int max_step_tokens;
    cb__lm_kctx kc;
    lm_layer *layers;
    const void *embed, *head;
    const float *norm;
    void *packed_raw; /* the layers' matrices packed for the CPU kernels (cb__lm_pack) */
    size_t packed_bytes;
    int w_packed; /* the weights hold every matrix packed: used in place, the head too */
    float inv_freq[CB_LM_HEAD_DIM_MAX / 2];
    /* scratch, in one allocation (scratch_raw) */
    void *scratch_raw;
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *cos_t, *sin_t, *last;
    float **yrows;
    cb__lm_attn_seq *aseqs;
    cb_lm_forward_stats stats;
    cb_lm_model_opts opts; /* opts.device >= 0: a CUDA model (no CPU scratch) */
};

struct cb_lm_kv {
    int block_tokens;
    int32_t n_blocks, n_free;
    size_t block_bytes;
    int64_t n_layers, n_kv_heads, head_dim;
    cb_lm_dtype dtype;
    unsigned char *raw, *base;
    int32_t *free_ids;     /* stack of n_free ids */
    unsigned char *in_use; /* n_blocks flags */
    cb_lm_cuda *cuda;      /* a CUDA model's device weights and pool: every call goes there */
};

static size_t elem_bytes(cb_lm_dtype d) { return d == CB_LM_BF16 ? 2 : 4; }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- RoPE frequencies ------------------------------------------------------------------------ */

void cb_lm_rope_inv_freq(const cb_lm_config *c, float *inv) {
    const int64_t half = c->head_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        const float e = (float)(2 * i) / (float)c->head_dim; /* transformers: float32 */
        double f = (double)(float)(1.0 / pow(c->rope_theta, (double)e));
        if (c->rope_llama3) {
            const double old = (double)c->rope_original_max_positions;
            const double low_wl = old / c->rope_low_freq_factor;
            const double high_wl = old / c->rope_high_freq_factor;
            const double wl = 2.0 * M_PI / f;
            if (wl > low_wl) {
                f = f / c->rope_factor;
            } else if (!(wl < high_wl)) {
                const double s = (old / wl - c->rope_low_freq_factor) /
                                 (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - s) * f / c->rope_factor + s * f;
            }
        }
        inv[i] = (float)f;
    }
}

/* ---- Model ----------------------------------------------------------------------------------- */

static const float *vec(const cb_lm_weights *w, cb_lm_wkind kind, int layer) {
    return (const float *)cb_lm_weights_get(w, kind, layer);
}

int cb_lm_model_create_opts(const cb_lm_weights *w, const cb_lm_model_opts *o, cb_lm_model **out,
                            cb_error *err) {
    *out = NULL;
    if (!o || o->device < 0) {
        int rc = cb_lm_model_create(w, o ? o->threads : 1, o ? o->max_step_tokens : 512, out, err);
        if (rc == 0 && o)
            (*out)->opts = *o;
        return rc;
    }
    if (!w)
        return cb_error_set(err, CB_EINVAL, "lm model: no weights");
    if (cb_lm_weights_packed(w))
        return cb_error_set(err, CB_EINVAL,
                            "lm model: the weights are packed for the CPU kernels; a CUDA model "
                            "needs them as rows (cb_lm_weights_opts.packed 0)");
    if (o->max_step_tokens < 1 || o->max_step_tokens > CB_LM_STEP_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "lm model: max_step_tokens %d outside [1, %d]",
                            o->max_step_tokens, CB_LM_STEP_TOKENS_MAX);
    /* A CUDA model: the configuration and options; the device copy comes with the KV cache. */
    cb_lm_model *m = cb_calloc(1, sizeof *m);
    if (!m)
        return cb_error_set(err, CB_ENOMEM, "lm model: out of memory");
    m->w = w;
    m->cfg = *cb_lm_weights_config(w);
    m->dtype = cb_lm_weights_dtype_of(w, CB_LM_W_EMBED);
    m->max_step_tokens = o->max_step_tokens;
    m->opts = *o;
    *out = m;
    return 0;
}

int cb_lm_model_device(const cb_lm_model *m) { return m->opts.device; }

/* The layers' seven matrices, packed (cb__lm_pack) into one allocation that the model owns; the
 * layer pointers move there. Packing runs over the layers on the model's threads. */
static int pack_layers(cb_lm_model *m) {
    const cb_lm_config *c = &m->cfg;
    const int64_t H = c->hidden, qd = cb_lm_config_q_dim(c), kvd = cb_lm_config_kv_dim(c);
    const int64_t I = c->intermediate;
    const int64_t shape[7][2] = {{qd, H}, {kvd, H}, {kvd, H}, {H, qd}, {I, H}, {I, H}, {H, I}};
    size_t per_layer = 0;
    for (int i = 0; i < 7; i++)
        per_layer += cb__lm_packed_bytes(shape[i][0], shape[i][1], m->dtype);
    m->packed_raw = cb_malloc(per_layer * (size_t)c->n_layers + 64);
    if (!m->packed_raw)
        return -1;
    m->packed_bytes = per_layer * (size_t)c->n_layers;
    unsigned char *base = (unsigned char *)(((uintptr_t)m->packed_raw + 63) & ~(uintptr_t)63);
    const int nth = m->kc.threads;
    (void)nth;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
#endif
    for (int l = 0; l < (int)c->n_layers; l++) {
        lm_layer *L = &m->layers[l];
        const void **mats[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        unsigned char *d = base + per_layer * (size_t)l;
        for (int i = 0; i < 7; i++) {
            cb__lm_pack(d, *mats[i], shape[i][0], shape[i][1], m->dtype);
            *mats[i] = d;
            d += cb__lm_packed_bytes(shape[i][0], shape[i][1], m->dtype);
        }
    }
    return 0;
}

int cb_lm_model_create(const cb_lm_weights *w, int threads, int max_step_tokens, cb_lm_model **out,
                       cb_error *err) {
    *out = NULL;
    if (!w)
        return cb_error_set(err, CB_EINVAL, "lm model: no weights");
    if (threads < 1 || threads > THREADS_MAX)
        return cb_error_set(err, CB_EINVAL, "lm model: threads %d outside [1, %d]", threads,
                            THREADS_MAX);
    if (max_step_tokens < 1 || max_step_tokens > CB_LM_STEP_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "lm model: max_step_tokens %d outside [1, %d]",
                            max_step_tokens, CB_LM_STEP_TOKENS_MAX);
    const cb_lm_config *c = cb_lm_weights_config(w);
    cb_lm_model *m = cb_calloc(1, sizeof *m);
    if (!m)
        return cb_error_set(err, CB_ENOMEM, "lm model: out of memory");
    m->w = w;
    m->cfg = *c;
    m->dtype = cb_lm_weights_dtype_of(w, CB_LM_W_EMBED);
    m->max_step_tokens = max_step_tokens;
    m->opts = (cb_lm_model_opts)CB_LM_MODEL_OPTS_DEFAULT;
    m->opts.threads = threads;
    m->opts.max_step_tokens = max_step_tokens;
    m->kc.threads = threads;
    m->kc.avx2 = cb__lm_cpu_avx2();
    m->layers = cb_calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers)
        goto oom;
    for (int l = 0; l < (int)c->n_layers; l++) {
        lm_layer *L = &m->layers[l];
        L->q = cb_lm_weights_get(w, CB_LM_W_Q, l);
        L->k = cb_lm_weights_get(w, CB_LM_W_K, l);
        L->v = cb_lm_weights_get(w, CB_LM_W_V, l);
        L->o = cb_lm_weights_get(w, CB_LM_W_O, l);
        L->gate = cb_lm_weights_get(w, CB_LM_W_GATE, l);
        L->up = cb_lm_weights_get(w, CB_LM_W_UP, l);
        L->down = cb_lm_weights_get(w, CB_LM_W_DOWN, l);
        L->q_bias = vec(w, CB_LM_W_Q_BIAS, l);
        L->k_bias = vec(w, CB_LM_W_K_BIAS, l);
        L->v_bias = vec(w, CB_LM_W_V_BIAS, l);
        L->o_bias = vec(w, CB_LM_W_O_BIAS, l);
        L->q_norm = c->qk_norm ? vec(w, CB_LM_W_Q_NORM, l) : NULL;
        L->k_norm = c->qk_norm ? vec(w, CB_LM_W_K_NORM, l) : NULL;
        L->attn_norm = vec(w, CB_LM_W_ATTN_NORM, l);
        L->mlp_norm = vec(w, CB_LM_W_MLP_NORM, l);
    }
    m->w_packed = cb_lm_weights_packed(w);
    if (!m->w_packed && pack_layers(m)) {
        cb_lm_model_destroy(m);
        return cb_error_set(err, CB_ENOMEM,
                            "lm model: out of memory (the packed copy of the layers' matrices)");
    }
    m->embed = cb_lm_weights_get(w, CB_LM_W_EMBED, -1);
    m->head = cb_lm_weights_get(w, CB_LM_W_LM_HEAD, -1);
    m->norm = vec(w, CB_LM_W_NORM, -1);
    cb_lm_rope_inv_freq(c, m->inv_freq);

    /* Scratch: each array rounded to 16 floats (64 bytes). */
    const int64_t T = max_step_tokens, H = c->hidden, qd = cb_lm_config_q_dim(c);
    const int64_t kvd = cb_lm_config_kv_dim(c), I = c->intermediate, half = c->head_dim / 2;
    const int64_t S = min64(T, CB_LM_STEP_SEQS_MAX), C = min64(T, MLP_CHUNK);
    const int64_t sizes[] = {T * H, T * H, T * qd,   T * kvd,  T * kvd, T * qd,
                             C * I, C * I, T * half, T * half, S * H};
    enum { N_ARR = sizeof sizes / sizeof sizes[0] };
    int64_t total = 16;
    for (int i = 0; i < N_ARR; i++)
        total += (sizes[i] + 15) & ~(int64_t)15;
    size_t bytes = (size_t)total * sizeof(float) + (size_t)T * sizeof(float *) +
                   (size_t)S * sizeof(cb__lm_attn_seq);
    m->scratch_raw = cb_malloc(bytes);
    if (!m->scratch_raw)
        goto oom;
    float *p = (float *)(((uintptr_t)m->scratch_raw + 63) & ~(uintptr_t)63);
    float **arr[N_ARR] = {&m->x,    &m->xn, &m->q,     &m->k,     &m->v,   &m->att,
                          &m->gate, &m->up, &m->cos_t, &m->sin_t, &m->last};
    for (int i = 0; i < N_ARR; i++) {
        *arr[i] = p;
        p += (sizes[i] + 15) & ~(int64_t)15;
    }
    m->yrows = (float **)(void *)p;
    m->aseqs = (cb__lm_attn_seq *)(void *)(m->yrows + T);
    *out = m;
    return 0;
oom:
    cb_lm_model_destroy(m);
    return cb_error_set(err, CB_ENOMEM, "lm model: out of memory (scratch for %d tokens)",
                        max_step_tokens);
}

void cb_lm_model_destroy(cb_lm_model *m) {
    if (!m)
        return;
    cb_free(m->scratch_raw);
    cb_free(m->packed_raw);
    cb_free(m->layers);
    cb_free(m);
}

const cb_lm_config *cb_lm_model_config(const cb_lm_model *m) { return &m->cfg; }
cb_lm_dtype cb_lm_model_kv_dtype(const cb_lm_model *m) { return m->dtype; }

size_t cb_lm_model_step_weight_bytes(const cb_lm_model *m) {
    const cb_lm_config *c = &m->cfg;
    const int64_t H = c->hidden, qd = cb_lm_config_q_dim(c), kvd = cb_lm_config_kv_dim(c);
    const int64_t mat = H * qd * 2 + H * kvd * 2 + 3 * H * c->intermediate;
    int64_t vecs = 2 * H;
    if (c->qkv_bias)
        vecs += qd + 2 * kvd;
    if (c->o_bias)
        vecs += H;
    if (c->qk_norm)
        vecs += 2 * c->head_dim;
    const size_t es = elem_bytes(m->dtype);
    return (size_t)c->n_layers * ((size_t)mat * es + (size_t)vecs * 4) +
           (size_t)(c->vocab * H) * es + (size_t)H * 4;
}

size_t cb_lm_model_packed_bytes(const cb_lm_model *m) { return m->packed_bytes; }

void cb__lm_model_set_reference(cb_lm_model *m, int on) { m->kc.avx2 = on ? 0 : cb__lm_cpu_avx2(); }

/* ---- KV cache -------------------------------------------------------------------------------- */

static size_t block_bytes_of(const cb_lm_config *c, cb_lm_dtype d, int block_tokens) {
    size_t b =
        (size_t)cb_lm_config_kv_bytes_per_token(c, (int)elem_bytes(d)) * (size_t)block_tokens;
    return (b + 63) & ~(size_t)63;
}

size_t cb_lm_kv_block_bytes(const cb_lm_model *m, int block_tokens) {
    return block_bytes_of(&m->cfg, m->dtype, block_tokens);
}

int cb_lm_kv_create(const cb_lm_model *m, size_t budget_bytes, int block_tokens, cb_lm_kv **out,
                    cb_error *err) {
    *out = NULL;
    if (block_tokens < 1 || block_tokens > CB_LM_BLOCK_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "kv cache: block_tokens %d outside [1, %d]",
                            block_tokens, CB_LM_BLOCK_TOKENS_MAX);
    const size_t bb = cb_lm_kv_block_bytes(m, block_tokens);
    if (budget_bytes < bb)
        return cb_error_set(err, CB_ECONFIG,
                            "kv_cache_bytes: %zu bytes is smaller than one block of %zu bytes "
                            "(%d positions of %s)",
                            budget_bytes, bb, block_tokens, m->cfg.name);
    size_t nb = budget_bytes / bb;
    if (nb > INT32_MAX)
        nb = INT32_MAX;
    cb_lm_kv *kv = cb_calloc(1, sizeof *kv);
    if (!kv)
        return cb_error_set(err, CB_ENOMEM, "kv cache: out of memory");
    if (m->opts.device >= 0) {
        cb_lm_cuda_opts co = CB_LM_CUDA_OPTS_DEFAULT;
        co.ordinal = m->opts.device;
        co.max_step_tokens = m->max_step_tokens;
        co.max_step_seqs = m->opts.max_step_seqs;
        co.kv_budget_bytes = budget_bytes;
        co.block_tokens = block_tokens;
        co.wait = (cb_gpu_wait)m->opts.gpu_wait;
        int rc = cb_lm_cuda_create(m->w, &co, &kv->cuda, err);
        if (rc) {
            cb_free(kv);
            return rc;
        }
        kv->block_tokens = block_tokens;
        kv->n_blocks = cb_lm_cuda_kv_n_blocks(kv->cuda);
        kv->block_bytes = cb_lm_cuda_kv_block_bytes(kv->cuda);
        kv->dtype = cb_lm_cuda_kv_dtype(kv->cuda);
        *out = kv;
        return 0;
    }
    kv->block_tokens = block_tokens;
    kv->n_blocks = (int32_t)nb;
    kv->block_bytes = bb;
    kv->n_layers = m->cfg.n_layers;
    kv->n_kv_heads = m->cfg.n_kv_heads;
    kv->head_dim = m->cfg.head_dim;
    kv->dtype = m->dtype;
    kv->raw = nb <= SIZE_MAX / bb - 1 ? cb_malloc(nb * bb + 64) : NULL;
    kv->free_ids = cb_malloc(nb * sizeof(int32_t));
    kv->in_use = cb_calloc(nb, 1);
    if (!kv->raw || !kv->free_ids || !kv->in_use) {
        cb_lm_kv_destroy(kv);
        return cb_error_set(err, CB_ENOMEM, "kv cache: out of memory for %zu blocks of %zu bytes",
                            nb, bb);
    }
    kv->base = (unsigned char *)(((uintptr_t)kv->raw + 63) & ~(uintptr_t)63);
    for (int32_t i = 0; i < kv->n_blocks; i++) /* popped in order 0, 1, 2, ... */
        kv->free_ids[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    *out = kv;
    return 0;
}

void cb_lm_kv_destroy(cb_lm_kv *kv) {
    if (!kv)
        return;
    cb_lm_cuda_destroy(kv->cuda);
    cb_free(kv->raw);
    cb_free(kv->free_ids);
    cb_free(kv->in_use);
    cb_free(kv);
}

int cb_lm_kv_block_tokens(const cb_lm_kv *kv) { return kv->block_tokens; }
int32_t cb_lm_kv_n_blocks(const cb_lm_kv *kv) { return kv->n_blocks; }
int32_t cb_lm_kv_free_blocks(const cb_lm_kv *kv) {
    return kv->cuda ? cb_lm_cuda_kv_free_blocks(kv->cuda) : kv->n_free;
}

int32_t cb_lm_kv_alloc(cb_lm_kv *kv) {
    if (kv->cuda)
        return cb_lm_cuda_kv_alloc(kv->cuda);
    if (kv->n_free == 0)
        return -1;
    int32_t b = kv->free_ids[--kv->n_free];
    kv->in_use[b] = 1;
    return b;
}

void cb_lm_kv_release(cb_lm_kv *kv, int32_t block) {
    if (kv->cuda) {
        cb_lm_cuda_kv_release(kv->cuda, block);
        return;
    }
    /* An id out of range or already free is ignored (the engine's bug, never a
     * corruption). */
    if (block < 0 || block >= kv->n_blocks || !kv->in_use[block])
        return;
    kv->in_use[block] = 0;
    kv->free_ids[kv->n_free++] = block;
}

/* ---- Forward --------------------------------------------------------------------------------- */

static int check_step(const cb_lm_model *m, const cb_lm_kv *kv, const cb_lm_seq *seqs, int n_seqs,
                      int64_t *n_tokens, cb_error *err) {
    const cb_lm_config *c = &m->cfg;
    if (!kv || !seqs)
        return cb_error_set(err, CB_EINVAL, "lm forward: no %s", kv ? "sequences" : "KV cache");
    if (kv->n_layers != c->n_layers || kv->n_kv_heads != c->n_kv_heads ||
        kv->head_dim != c->head_dim || kv->dtype != m->dtype)
        return cb_error_set(err, CB_EINVAL, "lm forward: the KV cache was made for another model");
    if (n_seqs < 1 || n_seqs > CB_LM_STEP_SEQS_MAX)
        return cb_error_set(err, CB_EINVAL, "lm forward: %d sequences outside [1, %d]", n_seqs,
                            CB_LM_STEP_SEQS_MAX);
    int64_t total = 0;
    for (int s = 0; s < n_seqs; s++) {
        const cb_lm_seq *q = &seqs[s];
        if (q->n_tokens < 1 || !q->tokens)
            return cb_error_set(err, CB_EINVAL, "lm forward: sequence %d has no tokens", s);
        if (q->pos0 < 0 || (int64_t)q->pos0 + q->n_tokens > c->max_positions)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward: sequence %d: positions %d..%lld beyond "
                                "max_positions %lld",
                                s, q->pos0, (long long)q->pos0 + q->n_tokens - 1,
                                (long long)c->max_positions);
        total += q->n_tokens;
        if (total > m->max_step_tokens)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward: more than max_step_tokens %d tokens in one step",
                                m->max_step_tokens);
        for (int32_t i = 0; i < q->n_tokens; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= c->vocab)
                return cb_error_set(err, CB_EINVAL,
                                    "lm forward: sequence %d: token id %d (index %d) outside "
                                    "the vocabulary [0, %lld)",
                                    s, q->tokens[i], i, (long long)c->vocab);
        const int64_t need =
            ((int64_t)q->pos0 + q->n_tokens + kv->block_tokens - 1) / kv->block_tokens;
        if (!q->blocks || q->n_blocks < need)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward: sequence %d: block table of %d blocks, positions "
                                "0..%lld need %lld",
                                s, q->blocks ? q->n_blocks : 0,
                                (long long)q->pos0 + q->n_tokens - 1, (long long)need);
        for (int64_t b = 0; b < need; b++)
            if (q->blocks[b] < 0 || q->blocks[b] >= kv->n_blocks)
                return cb_error_set(err, CB_EINVAL,
                                    "lm forward: sequence %d: block id %d (entry %lld) outside "
                                    "the cache's %d blocks",
                                    s, q->blocks[b], (long long)b, kv->n_blocks);
    }
    *n_tokens = total;
    return 0;
}

static void embed_rows(const cb_lm_model *m, const cb_lm_seq *seqs, int n_seqs) {
    const int64_t H = m->cfg.hidden;
    int64_t row = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int32_t i = 0; i < seqs[s].n_tokens; i++, row++) {
            const int64_t id = seqs[s].tokens[i];
            float *x = m->x + row * H;
            if (m->w_packed) {
                cb__lm_packed_row(x, m->embed, m->cfg.vocab, H, id, m->dtype);
            } else if (m->dtype == CB_LM_BF16) {
                const uint16_t *e = (const uint16_t *)m->embed + id * H;
                for (int64_t j = 0; j < H; j++)
                    x[j] = cb_lm_bf16_to_f32(e[j]);
            } else {
                memcpy(x, (const float *)m->embed + id * H, (size_t)H * sizeof(float));
            }
        }
}

static void rope_tables(const cb_lm_model *m, const cb_lm_seq *seqs, int n_seqs) {
    const int64_t half = m->cfg.head_dim / 2;
    int64_t row = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int32_t i = 0; i < seqs[s].n_tokens; i++, row++) {
            const float pos = (float)(seqs[s].pos0 + i);
            for (int64_t j = 0; j < half; j++) {
                const float ang = pos * m->inv_freq[j]; /* float32, as transformers */
                m->cos_t[row * half + j] = (float)cos((double)ang);
                m->sin_t[row * half + j] = (float)sin((double)ang);
            }
        }
}

/* Writes the step's keys and values of layer l into the sequences' blocks. */
static void write_kv(const cb_lm_model *m, cb_lm_kv *kv, const cb_lm_seq *seqs, int n_seqs, int l) {
    const int64_t nkv = kv->n_kv_heads, hd = kv->head_dim, bt = kv->block_tokens;
    const int64_t kvd = nkv * hd;
    int64_t row = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int32_t i = 0; i < seqs[s].n_tokens; i++, row++) {
            const int64_t p = (int64_t)seqs[s].pos0 + i, off = p % bt;
            unsigned char *blk = kv->base + (size_t)seqs[s].blocks[p / bt] * kv->block_bytes;
            for (int kind = 0; kind < 2; kind++) {
                const float *src = (kind ? m->v : m->k) + row * kvd;
                for (int64_t g = 0; g < nkv; g++) {
                    const int64_t e = (((int64_t)l * 2 + kind) * nkv + g) * bt * hd + off * hd;
                    if (kv->dtype == CB_LM_BF16) {
                        uint16_t *d = (uint16_t *)(void *)blk + e;
                        for (int64_t j = 0; j < hd; j++)
                            d[j] = cb_lm_f32_to_bf16(src[g * hd + j]);
                    } else {
                        memcpy((float *)(void *)blk + e, src + g * hd, (size_t)hd * sizeof(float));
                    }
                }
            }
        }
}

static void add_rows(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* A product, its time added to *ns (the stats' matmul_ns: products only). packed: the parts'
 * matrices are packed (the layers' always; the head's when the weights are), else rows. */
static void matmul_timed(const cb_lm_model *m, const float *x, int64_t ldx, int64_t t, int64_t k,
                         const cb__lm_mm_part *parts, int n_parts, int packed, int64_t *ns) {
    const int64_t t0 = cb_clock_now_ns();
    if (packed)
        cb__lm_matmul_packed(&m->kc, x, ldx, t, k, m->dtype, parts, n_parts);
    else
        cb__lm_matmul(&m->kc, x, ldx, t, k, m->dtype, parts, n_parts);
    *ns += cb_clock_now_ns() - t0;
}

static void layer_forward(cb_lm_model *m, cb_lm_kv *kv, const cb_lm_seq *seqs, int n_seqs,
                          int64_t T, int l, int64_t *mm_ns, int64_t *attn_ns) {
    const cb_lm_config *c = &m->cfg;
    const lm_layer *L = &m->layers[l];
    const int64_t H = c->hidden, qd = cb_lm_config_q_dim(c), kvd = cb_lm_config_kv_dim(c);
    const int64_t hd = c->head_dim, I = c->intermediate;
    const cb__lm_kctx *kc = &m->kc;

    cb__lm_rmsnorm(kc, m->xn, m->x, L->attn_norm, T, H, c->rms_eps);
    cb__lm_mm_part qkv[3] = {{L->q, L->q_bias, qd, m->q, qd, NULL},
                             {L->k, L->k_bias, kvd, m->k, kvd, NULL},
                             {L->v, L->v_bias, kvd, m->v, kvd, NULL}};
    matmul_timed(m, m->xn, H, T, H, qkv, 3, 1, mm_ns);
    if (L->q_norm) { /* per head, before RoPE */
        cb__lm_rmsnorm(kc, m->q, m->q, L->q_norm, T * c->n_heads, hd, c->rms_eps);
        cb__lm_rmsnorm(kc, m->k, m->k, L->k_norm, T * c->n_kv_heads, hd, c->rms_eps);
    }
    cb__lm_rope(m->q, qd, T, c->n_heads, hd, m->cos_t, m->sin_t);
    cb__lm_rope(m->k, kvd, T, c->n_kv_heads, hd, m->cos_t, m->sin_t);
    write_kv(m, kv, seqs, n_seqs, l);

    int64_t t0 = cb_clock_now_ns();
    const int64_t head_elems = kv->block_tokens * hd;
    cb__lm_attn a = {m->q,
                     qd,
                     m->att,
                     qd,
                     c->n_heads,
                     c->n_kv_heads,
                     hd,
                     (float)(1.0 / sqrt((double)hd)),
                     kv->dtype,
                     kv->base,
                     kv->block_bytes,
                     kv->block_tokens,
                     ((int64_t)l * 2) * c->n_kv_heads * head_elems,
                     ((int64_t)l * 2 + 1) * c->n_kv_heads * head_elems};
    cb__lm_attention(kc, &a, m->aseqs, n_seqs);
    *attn_ns += cb_clock_now_ns() - t0;

    cb__lm_mm_part o = {L->o, L->o_bias, H, m->xn, H, NULL};
    matmul_timed(m, m->att, qd, T, qd, &o, 1, 1, mm_ns);
    add_rows(m->x, m->xn, T * H);
    cb__lm_rmsnorm(kc, m->xn, m->x, L->mlp_norm, T, H, c->rms_eps);
    for (int64_t r0 = 0; r0 < T; r0 += MLP_CHUNK) {
        const int64_t n = min64(MLP_CHUNK, T - r0);
        float *xr = m->xn + r0 * H;
        cb__lm_mm_part gu[2] = {{L->gate, NULL, I, m->gate, I, NULL},
                                {L->up, NULL, I, m->up, I, NULL}};
        matmul_timed(m, xr, H, n, H, gu, 2, 1, mm_ns);
        cb__lm_swiglu(kc, m->gate, m->up, n, I);
        cb__lm_mm_part d = {L->down, NULL, H, xr, H, NULL}; /* xr is free again */
        matmul_timed(m, m->gate, I, n, I, &d, 1, 1, mm_ns);
        add_rows(m->x + r0 * H, xr, n * H);
    }
}

int cb_lm_forward(cb_lm_model *m, cb_lm_kv *kv, const cb_lm_seq *seqs, int n_seqs, cb_error *err) {
    if ((m->opts.device >= 0) != (kv->cuda != NULL))
        return cb_error_set(err, CB_EINVAL, "lm forward: a %s model with a %s KV cache",
                            m->opts.device >= 0 ? "CUDA" : "CPU", kv->cuda ? "CUDA" : "CPU");
    if (kv->cuda) {
        int rc = cb_lm_cuda_forward(kv->cuda, seqs, n_seqs, err);
        cb_lm_cuda_last_stats(kv->cuda, &m->stats);
        return rc;
    }
    const int64_t start = cb_clock_now_ns();
    int64_t T = 0;
    int rc = check_step(m, kv, seqs, n_seqs, &T, err);
    if (rc)
        return rc;
    const cb_lm_config *c = &m->cfg;
    const int64_t H = c->hidden;
    int64_t row = 0;
    for (int s = 0; s < n_seqs; s++) {
        m->aseqs[s] = (cb__lm_attn_seq){row, seqs[s].n_tokens, seqs[s].pos0, seqs[s].blocks};
        row += seqs[s].n_tokens;
    }
    embed_rows(m, seqs, n_seqs);
    rope_tables(m, seqs, n_seqs);
    int64_t mm_ns = 0, attn_ns = 0;
    for (int l = 0; l < (int)c->n_layers; l++)
        layer_forward(m, kv, seqs, n_seqs, T, l, &mm_ns, &attn_ns);

    /* The output head, for the last token of each sequence that asks. */
    int64_t n_out = 0;
    for (int s = 0; s < n_seqs; s++) {
        if (!seqs[s].logits)
            continue;
        const int64_t last = m->aseqs[s].row0 + seqs[s].n_tokens - 1;
        memcpy(m->last + n_out * H, m->x + last * H, (size_t)H * sizeof(float));
        m->yrows[n_out++] = seqs[s].logits;
    }
    if (n_out) {
        cb__lm_rmsnorm(&m->kc, m->last, m->last, m->norm, n_out, H, c->rms_eps);
        cb__lm_mm_part head = {m->head, NULL, c->vocab, NULL, 0, m->yrows};
        matmul_timed(m, m->last, H, n_out, H, &head, 1, m->w_packed, &mm_ns);
    }
    m->stats.total_ns = cb_clock_now_ns() - start;
    m->stats.matmul_ns = mm_ns;
    m->stats.attention_ns = attn_ns;
    m->stats.tokens = (int32_t)T;
    m->stats.seqs = n_seqs;
    return 0;
}

void cb_lm_forward_last_stats(const cb_lm_model *m, cb_lm_forward_stats *out) { *out = m->stats; }
