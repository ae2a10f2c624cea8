/* llm/lm_model.h - the forward pass of a decoder-only transformer of the Llama family (Llama,
 * Qwen2/2.5, Qwen3) on the CPU, over a paged KV cache.
 *
 * The model (cb_lm_model) borrows immutable weights (lm_weights.h) and owns scratch memory and
 * its kernels' thread count. The KV cache (cb_lm_kv) is a pool of fixed-size blocks carved from
 * one allocation sized by a byte budget (the PagedAttention idea): a block holds block_tokens
 * positions of keys and values for every layer and KV head, and a sequence is a list of block
 * ids (its block table), so sequences of any length share the pool without fragmentation. The
 * engine (engine.h) decides which sequence owns which block; the model only addresses blocks.
 *
 * One forward call runs one engine step: a list of sequences, each with some new tokens at
 * consecutive positions after the ones already cached (a prompt chunk, or one decode token). For
 * each sequence it writes the new tokens' keys and values into the sequence's blocks and, when
 * asked, the logits of its last new token. Sequences are independent: a sequence's results do
 * not depend on what else is in the batch (up to the floating-point order of the batch's
 * matmuls, which the kernels keep per row: see lm_model.c).
 *
 * Precision: the weights' dtype (float32 or bfloat16 matrices). Activations, accumulations,
 * norms and softmax are float32; the KV cache is float32 for float32 weights and bfloat16 for
 * bfloat16 weights (kv_dtype).
 *
 * Threads: cb_lm_forward uses `threads` threads (OpenMP) inside the call; the call itself must
 * not be made concurrently on one model or one cache. Different models are independent.
 *
 * Errors: CB_EINVAL for a bad argument (a token id outside the vocabulary, a position beyond
 * max_positions, a block table too short, more tokens than reserved), with a message naming it;
 * CB_ENOMEM. Nothing is written to the cache for a call that fails its checks. */
#ifndef CB_LLM_LM_MODEL_H
#define CB_LLM_LM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "llm/lm_config.h"
#include "llm/lm_weights.h"

typedef struct cb_lm_model cb_lm_model;
typedef struct cb_lm_kv cb_lm_kv;

/* Maxima. */
#define CB_LM_STEP_TOKENS_MAX 65536 /* tokens of one forward call */
#define CB_LM_STEP_SEQS_MAX 4096    /* sequences of one forward call */
#define CB_LM_BLOCK_TOKENS_MAX 1024 /* positions per KV block */

/* Creates a model over w (borrowed: it must outlive the model). threads >= 1. max_step_tokens
 * bounds the tokens of one forward call (scratch is sized for it at create). Weights loaded
 * packed (cb_lm_weights_opts.packed) are used in place; otherwise the model packs the layers'
 * matrices into a copy it owns (cb_lm_model_packed_bytes), on its threads. */
int cb_lm_model_create(const cb_lm_weights *w, int threads, int max_step_tokens,
                       cb_lm_model **out, cb_error *err);

/* Where the forward pass runs. device -1: the CPU (this file's kernels, `threads` threads);
 * N >= 0: CUDA device cuda:N through the CUDA module (llm/lm_cuda.h). A CUDA model is the same
 * object to its users: its KV cache (cb_lm_kv_create) is the device's pool, created together
 * with the device copy of the weights (so the device is opened, and its errors surface, at
 * cb_lm_kv_create: CB_EUNSUPPORTED where there is no module, driver or device), and
 * cb_lm_forward runs there; every cb_lm_kv_* call and the stats work unchanged. */
typedef struct cb_lm_model_opts {
    int threads;         /* CPU: threads of the forward pass */
    int max_step_tokens; /* tokens of one forward call */
    int device;          /* -1: CPU; N: cuda:N */
    int max_step_seqs;   /* CUDA: sequences of one call (0: lm_cuda.h's default) */
    int gpu_wait;        /* CUDA: cb_gpu_wait (gpu/wait.h): how a forward waits for the device */
} cb_lm_model_opts;
#define CB_LM_MODEL_OPTS_DEFAULT {1, 512, -1, 0, 0}
int cb_lm_model_create_opts(const cb_lm_weights *w, const cb_lm_model_opts *o, cb_lm_model **out,
                            cb_error *err);
/* -1 for the CPU, else the CUDA ordinal. */
int cb_lm_model_device(const cb_lm_model *m);

/* RoPE inverse frequencies of c (head_dim / 2 floats) as transformers computes them (the
 * exponent in float32, Llama 3 scaling in double): the one rule both the CPU and the CUDA
 * forward use. */
void cb_lm_rope_inv_freq(const cb_lm_config *c, float *inv);
void cb_lm_model_destroy(cb_lm_model *m); /* NULL is a no-op */
const cb_lm_config *cb_lm_model_config(const cb_lm_model *m);
cb_lm_dtype cb_lm_model_kv_dtype(const cb_lm_model *m);
/* Bytes of weights one decode step reads (every matrix once; the embedding row excluded unless
 * tied as the output head): the numerator of the memory-bandwidth roofline. */
size_t cb_lm_model_step_weight_bytes(const cb_lm_model *m);
/* Bytes of the model's packed copy of the layers' matrices (0 for a CUDA model, and for
 * weights loaded packed). */
size_t cb_lm_model_packed_bytes(const cb_lm_model *m);

/* ---- KV cache ---------------------------------------------------------------------------- */

/* Bytes of one block of block_tokens positions (all layers, keys and values). */
size_t cb_lm_kv_block_bytes(const cb_lm_model *m, int block_tokens);
/* A pool of floor(budget_bytes / block_bytes) blocks. CB_ECONFIG ("kv_cache_bytes: ... smaller
 * than one block of N bytes") when not even one block fits. */
int cb_lm_kv_create(const cb_lm_model *m, size_t budget_bytes, int block_tokens, cb_lm_kv **out,
                    cb_error *err);
void cb_lm_kv_destroy(cb_lm_kv *kv); /* NULL is a no-op */
int cb_lm_kv_block_tokens(const cb_lm_kv *kv);
int32_t cb_lm_kv_n_blocks(const cb_lm_kv *kv);
/* The free list: alloc returns a block id, or -1 when none is free; release returns one. */
int32_t cb_lm_kv_alloc(cb_lm_kv *kv);
void cb_lm_kv_release(cb_lm_kv *kv, int32_t block);
int32_t cb_lm_kv_free_blocks(const cb_lm_kv *kv);

/* ---- Forward ----------------------------------------------------------------------------- */

typedef struct cb_lm_seq {
    const int32_t *tokens; /* n_tokens new token ids */
    int32_t n_tokens;      /* >= 1 */
    int32_t pos0;          /* position of tokens[0]: the positions 0..pos0-1 are in the cache */
    const int32_t *blocks; /* block table: at least ceil((pos0 + n_tokens) / block_tokens) ids */
    int32_t n_blocks;
    float *logits;         /* NULL, or vocab floats: the logits after the last new token */
} cb_lm_seq;

/* Time of the last forward call by part (CLOCK_MONOTONIC), for the engine's overhead figure. */
typedef struct cb_lm_forward_stats {
    int64_t total_ns;
    int64_t matmul_ns;    /* the projections, MLP and output head */
    int64_t attention_ns; /* scores, softmax and weighted sum over the cache */
    int32_t tokens, seqs;
} cb_lm_forward_stats;

int cb_lm_forward(cb_lm_model *m, cb_lm_kv *kv, const cb_lm_seq *seqs, int n_seqs,
                  cb_error *err);
void cb_lm_forward_last_stats(const cb_lm_model *m, cb_lm_forward_stats *out);

/* Internal (tests): 1 runs every kernel on its plain scalar path (the readable reference the
 * AVX2 kernels are tested against), 0 goes back to the fastest path the CPU has. */
void cb__lm_model_set_reference(cb_lm_model *m, int on);

#endif
