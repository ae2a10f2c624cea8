/* cuda/llm_model.c - the LLM forward pass on one CUDA device: the cb_cuda_api entries
 * lm_create, lm_forward, lm_stats, lm_destroy (gpu/cuda_api.h, version 3), with the contract
 * of the CPU path's cb_lm_forward (llm/lm_model.h) and its semantics (transformers' Llama,
 * Qwen2, Qwen3 layers).
 *
 * Design. lm_create uploads every tensor once into one device arena (256-byte aligned
 * tensors): matrices and the embedding in the host dtype (bfloat16 stays bfloat16, float32
 * stays float32: no conversion, so a float32 model runs float32 GEMMs and can be checked
 * tightly against the CPU), norms, biases and the RoPE inverse frequencies (computed on the
 * host in double by the caller, as the CPU path does) in float32; a tied head is the embedding,
 * uploaded once. Then the KV pool (floor(budget / block_bytes) blocks of the CPU layout:
 * [layer][k|v][kv_head][block_tokens][head_dim] in the model dtype, 64-byte multiples), the
 * activations for max_step_tokens tokens and max_step_seqs logits rows (one arena), pinned
 * host staging for a step's inputs and its logits, one cudaStreamNonBlocking stream, one
 * cuBLAS handle on it and two events.
 *
 * One forward call = one engine step: the checks of cb_lm_forward (nothing is enqueued for a
 * refused call); per token the host fills the staging with its id, position, KV block id and
 * slot, and the offset of its sequence's block table, then the tables and the rows whose
 * logits are asked (one cudaMemcpyAsync). On the stream: embedding gather; per layer RMSNorm
 * (to the model dtype), q/k/v GEMMs (cublasGemmEx: dtype in, float32 compute and out), biases,
 * q/k RMSNorm per head (qwen3), RoPE, the step's keys and values into their blocks, paged
 * attention (llm_kernels.cu; it reads the step's own keys back from the cache, as the CPU path
 * does), o GEMM, residual (+ o bias), RMSNorm, gate and up GEMMs, SiLU * up (to the dtype),
 * down GEMM, residual; then the final RMSNorm of the rows asked for, the head GEMM, and one
 * copy of their logits to pinned memory. The host waits for the end event (wait policy) and
 * copies each sequence's logits to its buffer. Device time is the interval between an event
 * before the input copy and one after the logits copy.
 *
 * Precision (what a comparison against the CPU path must allow): float32 models run float32
 * GEMMs (CUBLAS_COMPUTE_32F, no TF32), so only summation order differs; bfloat16 models round
 * the activations fed to each GEMM (normed x, attention output, SiLU * up) to bfloat16, which
 * the CPU path keeps in float32 (its bf16 weights are widened instead), so they differ by that
 * rounding, ~2^-9 relative per element. The KV cache is bfloat16 in both.
 *
 * Thread-safety: an object is used by one thread at a time; each entry makes its device
 * current on the calling thread. Ownership: the object owns all it allocates; destroy
 * releases whatever create acquired, also after a failed create. Nothing here has run on a
 * device yet (written on a machine without a GPU; see docs/internals/llm-cuda.md).
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "cuda/cuda_int.h"
#include "cuda/llm_kernels.h"
#include "cuda/llm_model.h"

#define LM_ALIGN ((size_t)256)         /* device arenas: each tensor or array */
#define LM_STEP_TOKENS_MAX 65536       /* CB_LM_STEP_TOKENS_MAX */
#define LM_STEP_SEQS_MAX 4096          /* CB_LM_STEP_SEQS_MAX */
#define LM_BLOCK_TOKENS_MAX 1024       /* CB_LM_BLOCK_TOKENS_MAX */
#define LM_TABLE_ENTRIES_MAX (1 << 24) /* block-table entries one step may pass */

struct cb_cuda_lm {
    int ordinal;
    cb_gpu_wait wait;
    cb_lm_config cfg;
    int dt;                        /* CB__LK_F32 or CB__LK_BF16 */
    size_t es;                     /* bytes of one dt element */
    cudaDataType_t cdt;            /* dt for cuBLAS */
    int max_tokens, max_seqs, bt;
    int32_t n_blocks;
    size_t block_bytes;
    int64_t table_entries;         /* staging capacity for block-table entries */
    cudaStream_t stream;
    cublasHandle_t blas;
    cudaEvent_t ev0, ev1;
    int have_stream, have_blas, have_ev0, have_ev1;
    /* device: weights */
    unsigned char *wmem;
    size_t wbytes;
    cb_cuda_lm_layer *layers;      /* host array of device pointers, n_layers */
    const void *embed, *head;
    const float *norm, *inv_freq;
    /* device: KV pool and activations */
    void *kv;
    size_t kv_bytes;
    unsigned char *amem;
    size_t abytes;
    float *x, *q, *k, *v, *y, *g, *u, *logits;
    void *xn, *att, *h, *last;
    int32_t *d_stage;
    /* host, pinned */
    int32_t *h_stage;
    float *h_logits;
    size_t stage_bytes, pinned_bytes;
    cb_cuda_lm_stats stats;
};

static size_t align_up(size_t n) { return (n + LM_ALIGN - 1) & ~(LM_ALIGN - 1); }

void cb__cuda_lm_destroy(cb_cuda_lm *m) {
    if (!m) return;
    /* Best effort: the device may be gone; nothing to report from a destructor. */
    if (cudaSetDevice(m->ordinal) == cudaSuccess) {
        if (m->have_stream) (void)cudaStreamSynchronize(m->stream);
        if (m->have_blas) (void)cublasDestroy(m->blas);
        if (m->have_ev0) (void)cudaEventDestroy(m->ev0);
        if (m->have_ev1) (void)cudaEventDestroy(m->ev1);
        if (m->have_stream) (void)cudaStreamDestroy(m->stream);
        if (m->wmem) (void)cudaFree(m->wmem);
        if (m->kv) (void)cudaFree(m->kv);
        if (m->amem) (void)cudaFree(m->amem);
        if (m->h_stage) (void)cudaFreeHost(m->h_stage);
        if (m->h_logits) (void)cudaFreeHost(m->h_logits);
    }
    cb_free(m->layers);
    cb_free(m);
}

/* ---- Creation ------------------------------------------------------------------------------ */

static int check_desc(const cb_cuda_lm_desc *d, cb_error *err) {
    if (!d || d->struct_size < sizeof(cb_cuda_lm_desc))
        return cb_error_set(err, CB_EINVAL, "lm (cuda): descriptor of another build");
    const cb_lm_config *c = &d->cfg;
    if (c->n_layers < 1 || c->n_layers > CB_LM_LAYERS_MAX || c->hidden < 1 ||
        c->hidden > CB_LM_HIDDEN_MAX || c->n_heads < 1 || c->n_heads > CB_LM_HEADS_MAX ||
        c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0 || c->head_dim < 2 ||
        c->head_dim % 2 != 0 || c->head_dim > CB__LK_HEAD_DIM_MAX || c->intermediate < 1 ||
        c->intermediate > CB_LM_INTERMEDIATE_MAX || c->vocab < 1 || c->vocab > CB_LM_VOCAB_MAX)
        return cb_error_set(err, CB_EINVAL, "lm (cuda): config %s outside the supported shapes",
                            c->name);
    if (!d->embed || !d->head || !d->norm || !d->layers || !d->inv_freq)
        return cb_error_set(err, CB_EINVAL, "lm (cuda): descriptor lacks global tensors");
    for (int64_t l = 0; l < c->n_layers; l++) {
        const cb_cuda_lm_layer *L = &d->layers[l];
        if (!L->q || !L->k || !L->v || !L->o || !L->gate || !L->up || !L->down || !L->attn_norm ||
            !L->mlp_norm || (c->qkv_bias && (!L->q_bias || !L->k_bias || !L->v_bias)) ||
            (c->o_bias && !L->o_bias) || (c->qk_norm && (!L->q_norm || !L->k_norm)))
            return cb_error_set(err, CB_EINVAL, "lm (cuda): layer %lld lacks tensors",
                                (long long)l);
    }
    if (d->block_tokens < 1 || d->block_tokens > LM_BLOCK_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "kv cache: block_tokens %d outside [1, %d]",
                            d->block_tokens, LM_BLOCK_TOKENS_MAX);
    if (d->max_step_tokens < 1 || d->max_step_tokens > LM_STEP_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "lm (cuda): max_step_tokens %d outside [1, %d]",
                            d->max_step_tokens, LM_STEP_TOKENS_MAX);
    const int smax = d->max_step_tokens < LM_STEP_SEQS_MAX ? d->max_step_tokens : LM_STEP_SEQS_MAX;
    if (d->max_step_seqs < 1 || d->max_step_seqs > smax)
        return cb_error_set(err, CB_EINVAL, "lm (cuda): max_step_seqs %d outside [1, %d]",
                            d->max_step_seqs, smax);
    return CB_OK;
}

/* The weight arena is laid out twice by the same walk: pass 0 only sizes it, pass 1 copies
 * each tensor to its place and returns its device address. */
typedef struct lm_upload {
    cb_cuda_lm *m;
    int pass;
    size_t off;
    cudaError_t e;                 /* the first failed copy */
} lm_upload;

static const void *upload(lm_upload *u, const void *host, size_t bytes) {
    if (!host) return NULL;
    const size_t at = u->off;
    u->off += align_up(bytes);
    if (!u->pass) return NULL;
    if (u->e == cudaSuccess)
        u->e = cudaMemcpyAsync(u->m->wmem + at, host, bytes, cudaMemcpyHostToDevice,
                               u->m->stream);
    return u->m->wmem + at;
}

static void upload_weights(lm_upload *u, const cb_cuda_lm_desc *d) {
    cb_cuda_lm *m = u->m;
    const cb_lm_config *c = &m->cfg;
    const size_t H = (size_t)c->hidden, qd = (size_t)cb_lm_config_q_dim(c);
    const size_t kvd = (size_t)cb_lm_config_kv_dim(c), I = (size_t)c->intermediate;
    const size_t hd = (size_t)c->head_dim, es = m->es, f = sizeof(float);
    for (int64_t l = 0; l < c->n_layers; l++) {
        const cb_cuda_lm_layer *s = &d->layers[l];
        cb_cuda_lm_layer *L = &m->layers[l];
        L->q = upload(u, s->q, qd * H * es);
        L->k = upload(u, s->k, kvd * H * es);
        L->v = upload(u, s->v, kvd * H * es);
        L->o = upload(u, s->o, H * qd * es);
        L->gate = upload(u, s->gate, I * H * es);
        L->up = upload(u, s->up, I * H * es);
        L->down = upload(u, s->down, H * I * es);
        L->q_bias = upload(u, c->qkv_bias ? s->q_bias : NULL, qd * f);
        L->k_bias = upload(u, c->qkv_bias ? s->k_bias : NULL, kvd * f);
        L->v_bias = upload(u, c->qkv_bias ? s->v_bias : NULL, kvd * f);
        L->o_bias = upload(u, c->o_bias ? s->o_bias : NULL, H * f);
        L->q_norm = upload(u, c->qk_norm ? s->q_norm : NULL, hd * f);
        L->k_norm = upload(u, c->qk_norm ? s->k_norm : NULL, hd * f);
        L->attn_norm = upload(u, s->attn_norm, H * f);
        L->mlp_norm = upload(u, s->mlp_norm, H * f);
    }
    const size_t table = (size_t)c->vocab * H * es;
    m->embed = upload(u, d->embed, table);
    m->head = d->head == d->embed ? m->embed : upload(u, d->head, table);
    m->norm = upload(u, d->norm, H * f);
    m->inv_freq = upload(u, d->inv_freq, hd / 2 * f);
}

/* Carves the activation arena: pass 0 sizes it (base NULL), pass 1 sets the pointers. */
static size_t carve_activations(cb_cuda_lm *m, unsigned char *base) {
    const cb_lm_config *c = &m->cfg;
    const size_t T = (size_t)m->max_tokens, S = (size_t)m->max_seqs, H = (size_t)c->hidden;
    const size_t qd = (size_t)cb_lm_config_q_dim(c), kvd = (size_t)cb_lm_config_kv_dim(c);
    const size_t I = (size_t)c->intermediate, V = (size_t)c->vocab, es = m->es, f = sizeof(float);
    struct {
        void **p;
        size_t bytes;
    } arr[] = {
        {(void **)&m->x, T * H * f},       {&m->xn, T * H * es},
        {(void **)&m->q, T * qd * f},      {(void **)&m->k, T * kvd * f},
        {(void **)&m->v, T * kvd * f},     {&m->att, T * qd * es},
        {(void **)&m->y, T * H * f},       {(void **)&m->g, T * I * f},
        {(void **)&m->u, T * I * f},       {&m->h, T * I * es},
        {&m->last, S * H * es},            {(void **)&m->logits, S * V * f},
        {(void **)&m->d_stage, m->stage_bytes},
    };
    size_t off = 0;
    for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) {
        if (base) *arr[i].p = base + off;
        off += align_up(arr[i].bytes);
    }
    return off;
}

static int create_parts(cb_cuda_lm *m, const cb_cuda_lm_desc *d, cb_error *err) {
    int rc = cb__cuda_set_device(m->ordinal, err);
    if (rc) return rc;
    CB__CUDA(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking));
    m->have_stream = 1;
    /* ev0 is only timed; ev1 ends every step and is waited on as the policy says. */
    if ((rc = cb__cuda_event_create(&m->ev0, CB_GPU_WAIT_SPIN, err))) return rc;
    m->have_ev0 = 1;
    if ((rc = cb__cuda_event_create(&m->ev1, m->wait, err))) return rc;
    m->have_ev1 = 1;
    CB__CUBLAS(cublasCreate(&m->blas));
    m->have_blas = 1;
    CB__CUBLAS(cublasSetStream(m->blas, m->stream));
    /* float32 GEMMs stay float32 (no TF32): CUBLAS_COMPUTE_32F below, default math mode. */
    CB__CUBLAS(cublasSetMathMode(m->blas, CUBLAS_DEFAULT_MATH));

    lm_upload u = {m, 0, 0, cudaSuccess};
    upload_weights(&u, d);
    m->wbytes = u.off;
    CB__CUDA(cudaMalloc((void **)&m->wmem, m->wbytes));
    u = (lm_upload){m, 1, 0, cudaSuccess};
    upload_weights(&u, d);
    if (u.e != cudaSuccess)
        return cb__cuda_fail(err, u.e, "cudaMemcpyAsync (weights)", __FILE__, __LINE__);
    CB__CUDA(cudaStreamSynchronize(m->stream));

    CB__CUDA(cudaMalloc(&m->kv, m->kv_bytes));
    CB__CUDA(cudaHostAlloc((void **)&m->h_stage, m->stage_bytes, cudaHostAllocDefault));
    const size_t logits_bytes = (size_t)m->max_seqs * (size_t)m->cfg.vocab * sizeof(float);
    CB__CUDA(cudaHostAlloc((void **)&m->h_logits, logits_bytes, cudaHostAllocDefault));
    m->pinned_bytes = m->stage_bytes + logits_bytes;
    m->abytes = carve_activations(m, NULL);
    CB__CUDA(cudaMalloc((void **)&m->amem, m->abytes));
    carve_activations(m, m->amem);
    return CB_OK;
}

int cb__cuda_lm_create(const cb_cuda_lm_desc *d, cb_cuda_lm **out, cb_error *err) {
    *out = NULL;
    int rc = check_desc(d, err);
    if (rc) return rc;
    const cb_lm_config *c = &d->cfg;
    const size_t es = d->bf16 ? 2 : 4;
    size_t bb = (size_t)cb_lm_config_kv_bytes_per_token(c, (int)es) * (size_t)d->block_tokens;
    bb = (bb + 63) & ~(size_t)63; /* as the CPU pool: 64-byte multiples */
    if (d->kv_budget_bytes < bb)
        return cb_error_set(err, CB_ECONFIG,
                            "kv_cache_bytes: %zu bytes is smaller than one block of %zu bytes "
                            "(%d positions of %s)",
                            d->kv_budget_bytes, bb, d->block_tokens, c->name);
    size_t nb = d->kv_budget_bytes / bb;
    if (nb > INT32_MAX) nb = INT32_MAX;

    cb_cuda_lm *m = cb_calloc(1, sizeof *m);
    if (!m) return cb_error_set(err, CB_ENOMEM, "lm (cuda): out of memory");
    m->layers = cb_calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        cb_free(m);
        return cb_error_set(err, CB_ENOMEM, "lm (cuda): out of memory");
    }
    m->ordinal = d->ordinal;
    m->wait = d->wait;
    m->cfg = *c;
    m->dt = d->bf16 ? CB__LK_BF16 : CB__LK_F32;
    m->es = es;
    m->cdt = d->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    m->max_tokens = d->max_step_tokens;
    m->max_seqs = d->max_step_seqs;
    m->bt = d->block_tokens;
    m->n_blocks = (int32_t)nb;
    m->block_bytes = bb;
    m->kv_bytes = nb * bb;
    /* A sequence's table needs at most ceil(max_positions / bt) entries and never more than
     * the pool's blocks (a table of distinct blocks). */
    int64_t per_seq = (c->max_positions + m->bt - 1) / m->bt;
    per_seq = per_seq < m->n_blocks ? per_seq : m->n_blocks;
    m->table_entries = (int64_t)m->max_seqs * per_seq;
    if (m->table_entries > LM_TABLE_ENTRIES_MAX) m->table_entries = LM_TABLE_ENTRIES_MAX;
    m->stage_bytes =
        (size_t)(5 * (int64_t)m->max_tokens + m->max_seqs + m->table_entries) * sizeof(int32_t);

    rc = create_parts(m, d, err);
    if (rc) {
        cb_error_prefix(err, "lm (cuda) on cuda:%d: %zu bytes of weights, %zu of KV pool",
                        d->ordinal, m->wbytes, m->kv_bytes);
        cb__cuda_lm_destroy(m);
        return rc;
    }
    m->stats.n_blocks = m->n_blocks;
    m->stats.block_tokens = m->bt;
    m->stats.block_bytes = m->block_bytes;
    m->stats.weight_bytes = m->wbytes;
    m->stats.kv_bytes = m->kv_bytes;
    m->stats.activation_bytes = m->abytes;
    m->stats.pinned_bytes = m->pinned_bytes;
    m->stats.bf16 = d->bf16 ? 1 : 0;
    *out = m;
    return CB_OK;
}

void cb__cuda_lm_stats(const cb_cuda_lm *m, cb_cuda_lm_stats *out) { *out = m->stats; }

/* ---- Forward ------------------------------------------------------------------------------- */

/* cb_lm_forward's checks: the step's tokens, table entries and logits rows, or CB_EINVAL
 * naming the sequence. */
static int check_step(const cb_cuda_lm *m, const cb_cuda_lm_seq *seqs, int n_seqs,
                      int64_t *n_tokens, int64_t *n_entries, int *n_out, cb_error *err) {
    const cb_lm_config *c = &m->cfg;
    if (!seqs || n_seqs < 1 || n_seqs > m->max_seqs)
        return cb_error_set(err, CB_EINVAL, "lm forward (cuda): %d sequences outside [1, %d]",
                            seqs ? n_seqs : 0, m->max_seqs);
    int64_t tokens = 0, entries = 0;
    int outs = 0;
    for (int s = 0; s < n_seqs; s++) {
        const cb_cuda_lm_seq *q = &seqs[s];
        if (!q->tokens || q->n_tokens < 1)
            return cb_error_set(err, CB_EINVAL, "lm forward (cuda): sequence %d has no tokens", s);
        const int64_t end = (int64_t)q->pos0 + q->n_tokens; /* one past the last position */
        if (q->pos0 < 0 || end > c->max_positions)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward (cuda): sequence %d: positions %d..%lld beyond "
                                "max_positions %lld",
                                s, q->pos0, (long long)end - 1, (long long)c->max_positions);
        tokens += q->n_tokens;
        if (tokens > m->max_tokens)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward (cuda): more than max_step_tokens %d tokens in one "
                                "step", m->max_tokens);
        for (int32_t i = 0; i < q->n_tokens; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= c->vocab)
                return cb_error_set(err, CB_EINVAL,
                                    "lm forward (cuda): sequence %d: token id %d (index %d) "
                                    "outside the vocabulary [0, %lld)",
                                    s, q->tokens[i], i, (long long)c->vocab);
        const int64_t need = (end + m->bt - 1) / m->bt;
        if (!q->blocks || q->n_blocks < need)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward (cuda): sequence %d: block table of %d blocks, "
                                "positions 0..%lld need %lld",
                                s, q->blocks ? q->n_blocks : 0, (long long)end - 1,
                                (long long)need);
        for (int64_t b = 0; b < need; b++)
            if (q->blocks[b] < 0 || q->blocks[b] >= m->n_blocks)
                return cb_error_set(err, CB_EINVAL,
                                    "lm forward (cuda): sequence %d: block id %d (entry %lld) "
                                    "outside the cache's %d blocks",
                                    s, q->blocks[b], (long long)b, m->n_blocks);
        entries += need;
        if (entries > m->table_entries)
            return cb_error_set(err, CB_EINVAL,
                                "lm forward (cuda): the step's block tables exceed %lld entries",
                                (long long)m->table_entries);
        outs += q->logits != NULL;
    }
    *n_tokens = tokens;
    *n_entries = entries;
    *n_out = outs;
    return CB_OK;
}

/* The step's inputs at their offsets in the staging (the same offsets on the device). */
typedef struct lm_step {
    int T, n_out;
    size_t o_tok, o_pos, o_blk, o_off, o_tbl, o_rows, o_tables, n_ints;
} lm_step;

static lm_step fill_stage(cb_cuda_lm *m, const cb_cuda_lm_seq *seqs, int n_seqs, int64_t T,
                          int64_t n_entries, int n_out) {
    lm_step st;
    st.T = (int)T;
    st.n_out = n_out;
    st.o_tok = 0;
    st.o_pos = (size_t)T;
    st.o_blk = 2 * (size_t)T;
    st.o_off = 3 * (size_t)T;
    st.o_tbl = 4 * (size_t)T;
    st.o_rows = 5 * (size_t)T;
    st.o_tables = st.o_rows + (size_t)n_out;
    st.n_ints = st.o_tables + (size_t)n_entries;
    int32_t *h = m->h_stage;
    size_t row = 0, e = 0, o = 0;
    for (int s = 0; s < n_seqs; s++) {
        const cb_cuda_lm_seq *q = &seqs[s];
        const int64_t need = ((int64_t)q->pos0 + q->n_tokens + m->bt - 1) / m->bt;
        for (int32_t i = 0; i < q->n_tokens; i++, row++) {
            const int32_t p = q->pos0 + i;
            h[st.o_tok + row] = q->tokens[i];
            h[st.o_pos + row] = p;
            h[st.o_blk + row] = q->blocks[p / m->bt];
            h[st.o_off + row] = p % m->bt;
            h[st.o_tbl + row] = (int32_t)e;
        }
        if (q->logits) h[st.o_rows + o++] = (int32_t)(row - 1);
        memcpy(h + st.o_tables + e, q->blocks, (size_t)need * sizeof(int32_t));
        e += (size_t)need;
    }
    return st;
}

/* y [t, n] (float32) = x [t, k] (dtype) . w^T, w [n, k] row-major (dtype). In cuBLAS's
 * column-major terms: y^T (n x t, ld n) = op_T(w as k x n, ld k) . x^T (k x t, ld k). */
static int gemm(cb_cuda_lm *m, const void *w, int64_t n, int64_t k, const void *x, int t,
                float *y, cb_error *err) {
    const float one = 1.0f, zero = 0.0f;
    CB__CUBLAS(cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, t, (int)k, &one, w, m->cdt,
                            (int)k, x, m->cdt, (int)k, &zero, y, CUDA_R_32F, (int)n,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return CB_OK;
}

static int layer_forward(cb_cuda_lm *m, const lm_step *st, int l, cb_error *err) {
    const cb_lm_config *c = &m->cfg;
    const cb_cuda_lm_layer *L = &m->layers[l];
    const int T = st->T, H = (int)c->hidden, nh = (int)c->n_heads, nkv = (int)c->n_kv_heads;
    const int hd = (int)c->head_dim, I = (int)c->intermediate;
    const int qd = nh * hd, kvd = nkv * hd;
    const cudaStream_t s = m->stream;
    const int32_t *pos = m->d_stage + st->o_pos;
    int rc;

    CB__CUDA(cb__lk_rmsnorm(m->x, NULL, T, H, L->attn_norm, c->rms_eps, m->xn, m->dt, s));
    if ((rc = gemm(m, L->q, qd, H, m->xn, T, m->q, err))) return rc;
    if ((rc = gemm(m, L->k, kvd, H, m->xn, T, m->k, err))) return rc;
    if ((rc = gemm(m, L->v, kvd, H, m->xn, T, m->v, err))) return rc;
    if (L->q_bias) {
        CB__CUDA(cb__lk_add_bias(m->q, L->q_bias, T, qd, s));
        CB__CUDA(cb__lk_add_bias(m->k, L->k_bias, T, kvd, s));
        CB__CUDA(cb__lk_add_bias(m->v, L->v_bias, T, kvd, s));
    }
    if (L->q_norm) { /* per head, before RoPE (qwen3) */
        CB__CUDA(cb__lk_rmsnorm(m->q, NULL, T * nh, hd, L->q_norm, c->rms_eps, m->q, CB__LK_F32,
                                s));
        CB__CUDA(cb__lk_rmsnorm(m->k, NULL, T * nkv, hd, L->k_norm, c->rms_eps, m->k, CB__LK_F32,
                                s));
    }
    CB__CUDA(cb__lk_rope(m->q, T, nh, hd, pos, m->inv_freq, s));
    CB__CUDA(cb__lk_rope(m->k, T, nkv, hd, pos, m->inv_freq, s));

    const size_t part = (size_t)kvd * (size_t)m->bt; /* one layer's keys (or values) */
    const size_t layer_off = (size_t)l * 2 * part;
    CB__CUDA(cb__lk_kv_write(m->k, m->v, T, nkv, hd, m->d_stage + st->o_blk,
                             m->d_stage + st->o_off, m->kv, m->dt, m->block_bytes / m->es,
                             layer_off, m->bt, s));
    cb__lk_attn a = {m->q, m->att, m->kv, m->dt, m->block_bytes / m->es, layer_off,
                     layer_off + part, T, nh, nkv, hd, m->bt, pos, m->d_stage + st->o_tbl,
                     m->d_stage + st->o_tables, 0.0f};
    a.scale = (float)(1.0 / sqrt((double)hd));
    CB__CUDA(cb__lk_attention(&a, s));

    if ((rc = gemm(m, L->o, H, qd, m->att, T, m->y, err))) return rc;
    CB__CUDA(cb__lk_residual(m->x, m->y, L->o_bias, T, H, s));
    CB__CUDA(cb__lk_rmsnorm(m->x, NULL, T, H, L->mlp_norm, c->rms_eps, m->xn, m->dt, s));
    if ((rc = gemm(m, L->gate, I, H, m->xn, T, m->g, err))) return rc;
    if ((rc = gemm(m, L->up, I, H, m->xn, T, m->u, err))) return rc;
    CB__CUDA(cb__lk_swiglu(m->g, m->u, (size_t)T * (size_t)I, m->h, m->dt, s));
    if ((rc = gemm(m, L->down, H, I, m->h, T, m->y, err))) return rc;
    CB__CUDA(cb__lk_residual(m->x, m->y, NULL, T, H, s));
    return CB_OK;
}

/* Everything of one step on the stream, up to the end event. */
static int enqueue_step(cb_cuda_lm *m, const lm_step *st, cb_error *err) {
    const cb_lm_config *c = &m->cfg;
    const cudaStream_t s = m->stream;
    CB__CUDA(cudaEventRecord(m->ev0, s));
    CB__CUDA(cudaMemcpyAsync(m->d_stage, m->h_stage, st->n_ints * sizeof(int32_t),
                             cudaMemcpyHostToDevice, s));
    CB__CUDA(cb__lk_embed(m->embed, m->dt, m->d_stage + st->o_tok, st->T, (int)c->hidden, m->x, s));
    for (int l = 0; l < (int)c->n_layers; l++) {
        int rc = layer_forward(m, st, l, err);
        if (rc) {
            cb_error_prefix(err, "layer %d", l);
            return rc;
        }
    }
    if (st->n_out) {
        CB__CUDA(cb__lk_rmsnorm(m->x, m->d_stage + st->o_rows, st->n_out, (int)c->hidden, m->norm,
                                c->rms_eps, m->last, m->dt, s));
        int rc = gemm(m, m->head, c->vocab, c->hidden, m->last, st->n_out, m->logits, err);
        if (rc) return rc;
        CB__CUDA(cudaMemcpyAsync(m->h_logits, m->logits,
                                 (size_t)st->n_out * (size_t)c->vocab * sizeof(float),
                                 cudaMemcpyDeviceToHost, s));
    }
    CB__CUDA(cudaEventRecord(m->ev1, s));
    return CB_OK;
}

int cb__cuda_lm_forward(cb_cuda_lm *m, const cb_cuda_lm_seq *seqs, int n_seqs, cb_error *err) {
    const int64_t start = cb_clock_now_ns();
    int64_t T = 0, n_entries = 0;
    int n_out = 0;
    int rc = check_step(m, seqs, n_seqs, &T, &n_entries, &n_out, err);
    if (rc) return rc;
    if ((rc = cb__cuda_set_device(m->ordinal, err))) return rc;
    const lm_step st = fill_stage(m, seqs, n_seqs, T, n_entries, n_out);
    rc = enqueue_step(m, &st, err);
    if (!rc) rc = cb__cuda_wait(m->ev1, m->wait, "an LLM forward step", err);
    if (rc) {
        /* The staging may still be read by enqueued work: let it drain before returning. */
        (void)cudaStreamSynchronize(m->stream);
        cb_error_prefix(err, "lm forward (cuda) on cuda:%d", m->ordinal);
        return rc;
    }
    const size_t V = (size_t)m->cfg.vocab;
    int o = 0;
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].logits)
            memcpy(seqs[s].logits, m->h_logits + (size_t)o++ * V, V * sizeof(float));
    float ms = 0.0f;
    CB__CUDA(cudaEventElapsedTime(&ms, m->ev0, m->ev1));
    m->stats.device_ns = (int64_t)((double)ms * 1e6);
    m->stats.total_ns = cb_clock_now_ns() - start;
    m->stats.tokens = (int32_t)T;
    m->stats.seqs = n_seqs;
    return CB_OK;
}
