/* llm/lm_cuda.c - the LLM forward pass on a CUDA device, colobench's side (see lm_cuda.h): the
 * module's lm_* entries behind lm_model.h's shapes.
 *
 * Design: create opens the CUDA module and the device through gpu/cuda.h (the messages of a
 * machine without CUDA come from there), fills a cb_cuda_lm_desc with the weights' host
 * pointers (lm_weights.h's table) and the RoPE frequencies, and lets the module upload and
 * allocate. The KV pool's free list lives here, on the host (a stack of ids popped in order 0,
 * 1, 2, ... like cb_lm_kv's, and a flag per block so a double release is ignored); the module
 * only addresses the blocks the tables name. forward copies the cb_lm_seq array into the
 * module's cb_cuda_lm_seq (the same fields; a scratch array of max_step_seqs entries, so no
 * allocation per step) and calls lm_forward, which does every check.
 *
 * Thread-safety: one thread at a time per object. Ownership: the object owns its module
 * reference (cb_cuda), the module's model and the free list; the weights are only read during
 * create.
 */
#include "llm/lm_cuda.h"

#include <string.h>

#include "core/alloc.h"
#include "gpu/cuda.h"

struct cb_lm_cuda {
    cb_cuda cuda;                  /* the module reference */
    cb_cuda_lm *dev;               /* the module's model */
    cb_lm_config cfg;
    cb_lm_dtype dtype;
    int max_step_seqs;
    cb_cuda_lm_stats info;         /* sizes, from create */
    int32_t n_free;
    int32_t *free_ids;             /* stack of n_free ids, n_blocks entries */
    unsigned char *in_use;         /* n_blocks flags */
    cb_cuda_lm_seq *seqs;          /* max_step_seqs entries: the step's sequences */
};

/* ---- Creation ------------------------------------------------------------------------------ */

void cb_lm_cuda_destroy(cb_lm_cuda *m) {
    if (!m) return;
    if (m->dev && m->cuda.api) m->cuda.api->lm_destroy(m->dev);
    cb_cuda_close(&m->cuda);
    cb_free(m->free_ids);
    cb_free(m->in_use);
    cb_free(m->seqs);
    cb_free(m);
}

static const void *tensor(const cb_lm_weights *w, cb_lm_wkind kind, int layer) {
    return cb_lm_weights_get(w, kind, layer);
}

static int check_opts(const cb_lm_cuda_opts *o, int *seqs, cb_error *err) {
    if (o->max_step_tokens < 1 || o->max_step_tokens > CB_LM_STEP_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "lm model (cuda): max_step_tokens %d outside [1, %d]",
                            o->max_step_tokens, CB_LM_STEP_TOKENS_MAX);
    int cap = o->max_step_tokens < CB_LM_STEP_SEQS_MAX ? o->max_step_tokens : CB_LM_STEP_SEQS_MAX;
    int s = o->max_step_seqs;
    if (s == 0) s = cap < CB_LM_CUDA_SEQS_DEFAULT ? cap : CB_LM_CUDA_SEQS_DEFAULT;
    if (s < 1 || s > cap)
        return cb_error_set(err, CB_EINVAL, "lm model (cuda): max_step_seqs %d outside [1, %d]",
                            o->max_step_seqs, cap);
    if (o->block_tokens < 1 || o->block_tokens > CB_LM_BLOCK_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "kv cache: block_tokens %d outside [1, %d]",
                            o->block_tokens, CB_LM_BLOCK_TOKENS_MAX);
    *seqs = s;
    return CB_OK;
}

/* The module's model from w (the layers' host pointers in a temporary table). */
static int create_device(cb_lm_cuda *m, const cb_lm_weights *w, const cb_lm_cuda_opts *o,
                         cb_error *err) {
    const cb_lm_config *c = &m->cfg;
    cb_cuda_lm_layer *layers = cb_calloc((size_t)c->n_layers, sizeof *layers);
    float *inv = cb_calloc((size_t)c->head_dim / 2 + 1, sizeof *inv);
    if (!layers || !inv) {
        cb_free(layers);
        cb_free(inv);
        return cb_error_set(err, CB_ENOMEM, "lm model (cuda): out of memory");
    }
    for (int l = 0; l < (int)c->n_layers; l++) {
        cb_cuda_lm_layer *L = &layers[l];
        L->q = tensor(w, CB_LM_W_Q, l);
        L->k = tensor(w, CB_LM_W_K, l);
        L->v = tensor(w, CB_LM_W_V, l);
        L->o = tensor(w, CB_LM_W_O, l);
        L->gate = tensor(w, CB_LM_W_GATE, l);
        L->up = tensor(w, CB_LM_W_UP, l);
        L->down = tensor(w, CB_LM_W_DOWN, l);
        L->q_bias = tensor(w, CB_LM_W_Q_BIAS, l);
        L->k_bias = tensor(w, CB_LM_W_K_BIAS, l);
        L->v_bias = tensor(w, CB_LM_W_V_BIAS, l);
        L->o_bias = tensor(w, CB_LM_W_O_BIAS, l);
        L->q_norm = c->qk_norm ? tensor(w, CB_LM_W_Q_NORM, l) : NULL;
        L->k_norm = c->qk_norm ? tensor(w, CB_LM_W_K_NORM, l) : NULL;
        L->attn_norm = tensor(w, CB_LM_W_ATTN_NORM, l);
        L->mlp_norm = tensor(w, CB_LM_W_MLP_NORM, l);
    }
    cb_lm_rope_inv_freq(c, inv);
    cb_cuda_lm_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.ordinal = o->ordinal;
    d.cfg = *c;
    d.bf16 = m->dtype == CB_LM_BF16;
    d.embed = tensor(w, CB_LM_W_EMBED, -1);
    d.head = tensor(w, CB_LM_W_LM_HEAD, -1); /* the embedding itself when tied */
    d.norm = tensor(w, CB_LM_W_NORM, -1);
    d.layers = layers;
    d.inv_freq = inv;
    d.kv_budget_bytes = o->kv_budget_bytes;
    d.block_tokens = o->block_tokens;
    d.max_step_tokens = o->max_step_tokens;
    d.max_step_seqs = m->max_step_seqs;
    d.wait = o->wait;
    int rc = m->cuda.api->lm_create(&d, &m->dev, err);
    cb_free(layers);
    cb_free(inv);
    return rc;
}

int cb_lm_cuda_create(const cb_lm_weights *w, const cb_lm_cuda_opts *o, cb_lm_cuda **out,
                      cb_error *err) {
    *out = NULL;
    if (!w || !o)
        return cb_error_set(err, CB_EINVAL, "lm model (cuda): no %s", w ? "options" : "weights");
    int n_seqs = 0;
    int rc = check_opts(o, &n_seqs, err);
    if (rc) return rc;
    cb_lm_cuda *m = cb_calloc(1, sizeof *m);
    if (!m) return cb_error_set(err, CB_ENOMEM, "lm model (cuda): out of memory");
    m->cfg = *cb_lm_weights_config(w);
    m->dtype = cb_lm_weights_dtype_of(w, CB_LM_W_EMBED);
    m->max_step_seqs = n_seqs;
    if ((rc = cb_cuda_open_device(&m->cuda, o->ordinal, err)) ||
        (rc = create_device(m, w, o, err))) {
        cb_lm_cuda_destroy(m);
        return rc;
    }
    m->cuda.api->lm_stats(m->dev, &m->info);
    const size_t nb = (size_t)m->info.n_blocks;
    m->free_ids = cb_malloc(nb * sizeof *m->free_ids);
    m->in_use = cb_calloc(nb, 1);
    m->seqs = cb_calloc((size_t)n_seqs, sizeof *m->seqs);
    if (!m->free_ids || !m->in_use || !m->seqs) {
        cb_lm_cuda_destroy(m);
        return cb_error_set(err, CB_ENOMEM, "lm model (cuda): out of memory for the free list "
                            "of %zu blocks", nb);
    }
    for (size_t i = 0; i < nb; i++) /* the top of the stack is block 0 */
        m->free_ids[i] = (int32_t)(nb - 1 - i);
    m->n_free = (int32_t)nb;
    *out = m;
    return CB_OK;
}

const cb_lm_config *cb_lm_cuda_config(const cb_lm_cuda *m) { return &m->cfg; }
cb_lm_dtype cb_lm_cuda_kv_dtype(const cb_lm_cuda *m) { return m->dtype; }

/* ---- KV free list -------------------------------------------------------------------------- */

size_t cb_lm_cuda_kv_block_bytes(const cb_lm_cuda *m) { return m->info.block_bytes; }
int cb_lm_cuda_kv_block_tokens(const cb_lm_cuda *m) { return m->info.block_tokens; }
int32_t cb_lm_cuda_kv_n_blocks(const cb_lm_cuda *m) { return m->info.n_blocks; }
int32_t cb_lm_cuda_kv_free_blocks(const cb_lm_cuda *m) { return m->n_free; }

int32_t cb_lm_cuda_kv_alloc(cb_lm_cuda *m) {
    if (m->n_free <= 0) return -1;
    const int32_t id = m->free_ids[--m->n_free];
    m->in_use[id] = 1;
    return id;
}

void cb_lm_cuda_kv_release(cb_lm_cuda *m, int32_t block) {
    /* The engine's bug (an unknown id, a double release) must not corrupt the list. */
    if (block >= 0 && block < m->info.n_blocks && m->in_use[block]) {
        m->in_use[block] = 0;
        m->free_ids[m->n_free++] = block;
    }
}

/* ---- Forward ------------------------------------------------------------------------------- */

int cb_lm_cuda_forward(cb_lm_cuda *m, const cb_lm_seq *seqs, int n_seqs, cb_error *err) {
    if (!seqs || n_seqs < 1 || n_seqs > m->max_step_seqs)
        return cb_error_set(err, CB_EINVAL, "lm forward (cuda): %d sequences outside [1, %d]",
                            seqs ? n_seqs : 0, m->max_step_seqs);
    for (int s = 0; s < n_seqs; s++) {
        const cb_lm_seq *a = &seqs[s];
        m->seqs[s] = (cb_cuda_lm_seq){a->tokens, a->n_tokens, a->pos0, a->blocks, a->n_blocks,
                                      a->logits};
    }
    return m->cuda.api->lm_forward(m->dev, m->seqs, n_seqs, err);
}

void cb_lm_cuda_info(const cb_lm_cuda *m, cb_cuda_lm_stats *out) {
    m->cuda.api->lm_stats(m->dev, out);
}

void cb_lm_cuda_last_stats(const cb_lm_cuda *m, cb_lm_forward_stats *out) {
    cb_cuda_lm_stats s;
    m->cuda.api->lm_stats(m->dev, &s);
    memset(out, 0, sizeof *out);
    out->total_ns = s.total_ns;
    out->tokens = s.tokens;
    out->seqs = s.seqs;
}
