/* llm/lm_weights.h - the parameters of a decoder model (lm_config.h): the tensor table with the
 * Hugging Face names and shapes, loading from safetensors, seeded random initialisation.
 *
 * Tensor table (transformers' LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM names;
 * matrices [out, in], row-major, as torch.nn.Linear stores them):
 *   model.embed_tokens.weight                          [vocab, hidden]
 *   model.layers.{i}.input_layernorm.weight            [hidden]
 *   model.layers.{i}.self_attn.q_proj.weight           [n_heads * head_dim, hidden]  (+ .bias)
 *   model.layers.{i}.self_attn.k_proj.weight           [n_kv_heads * head_dim, hidden] (+ .bias)
 *   model.layers.{i}.self_attn.v_proj.weight           [n_kv_heads * head_dim, hidden] (+ .bias)
 *   model.layers.{i}.self_attn.o_proj.weight           [hidden, n_heads * head_dim]  (+ .bias)
 *   model.layers.{i}.self_attn.q_norm.weight           [head_dim]          (qwen3)
 *   model.layers.{i}.self_attn.k_norm.weight           [head_dim]          (qwen3)
 *   model.layers.{i}.post_attention_layernorm.weight   [hidden]
 *   model.layers.{i}.mlp.gate_proj.weight              [intermediate, hidden]
 *   model.layers.{i}.mlp.up_proj.weight                [intermediate, hidden]
 *   model.layers.{i}.mlp.down_proj.weight              [hidden, intermediate]
 *   model.norm.weight                                  [hidden]
 *   lm_head.weight                                     [vocab, hidden]     (unless tied)
 * Biases are present as the config says (qkv_bias, o_bias).
 *
 * In memory: matrices in the requested precision (float32 or bfloat16), vectors (norms and
 * biases) always float32; one arena per model, each tensor 64-byte aligned. The arena's size is
 * cb_lm_weights_bytes, at most CB_LM_WEIGHTS_MAX_BYTES; loading also holds one safetensors file
 * (one shard) in memory at a time, so the peak is the arena plus the largest shard.
 *
 * Loading: opts.path is a .safetensors file, a model.safetensors.index.json (its "weight_map":
 * tensor name -> shard file, relative to the index's directory), or a directory holding
 * model.safetensors or else model.safetensors.index.json. Every tensor of the table must be
 * present with its exact shape; the file's dtype may be F32, BF16, F16 or F64 and is converted
 * (bf16 -> float32 exact; to bf16 rounded to nearest even). Tensors the table does not name
 * (rotary inv_freq buffers, a tied checkpoint's lm_head.weight) are ignored and counted
 * (cb_lm_weights_ignored). Errors name the file and the tensor:
 *   "model.layers.3.mlp.up_proj.weight: file has [4864, 896], the config needs [4864, 1024]".
 *
 * Random (opts.path NULL): matrices normal(0, 0.02) (transformers' initializer_range), biases 0,
 * norms 1; a pure function of (config, seed, precision), each tensor from its own stream. The
 * normal deviates are the Irwin-Hall sum of four 16-bit uniforms scaled to standard deviation
 * 0.02 exactly (tails end at 3.46 sigma): speed runs need the shapes, not the distribution's
 * tails, and one 64-bit draw per value costs a few ns (seconds for a 1B model, on the calling
 * thread). cb_lm_weights_random says so, for the engine to print.
 *
 * Ownership and threads: cb_lm_weights_create copies the config; the result owns the arena and
 * is immutable after it returns, so any number of threads may read it. On error nothing is
 * returned and nothing leaks. */
#ifndef CB_LLM_LM_WEIGHTS_H
#define CB_LLM_LM_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "llm/lm_config.h"

#define CB_LM_WEIGHTS_MAX_BYTES ((size_t)1 << 38) /* 256 GiB: the arena of one model */
#define CB_LM_TENSOR_NAME_MAX 96                  /* bytes of a table name, with the NUL */
#define CB_LM_SHARDS_MAX 4096                     /* files one index may name */

typedef enum cb_lm_dtype { CB_LM_F32 = 0, CB_LM_BF16 } cb_lm_dtype;

/* Per-layer tensors, then the three global ones. X(kind, Hugging Face suffix). */
#define CB_LM_LAYER_TENSORS(X)                                                                     \
    X(ATTN_NORM, "input_layernorm.weight")                                                         \
    X(Q, "self_attn.q_proj.weight")                                                                \
    X(Q_BIAS, "self_attn.q_proj.bias")                                                             \
    X(K, "self_attn.k_proj.weight")                                                                \
    X(K_BIAS, "self_attn.k_proj.bias")                                                             \
    X(V, "self_attn.v_proj.weight")                                                                \
    X(V_BIAS, "self_attn.v_proj.bias")                                                             \
    X(O, "self_attn.o_proj.weight")                                                                \
    X(O_BIAS, "self_attn.o_proj.bias")                                                             \
    X(Q_NORM, "self_attn.q_norm.weight")                                                           \
    X(K_NORM, "self_attn.k_norm.weight")                                                           \
    X(MLP_NORM, "post_attention_layernorm.weight")                                                 \
    X(GATE, "mlp.gate_proj.weight")                                                                \
    X(UP, "mlp.up_proj.weight")                                                                    \
    X(DOWN, "mlp.down_proj.weight")

typedef enum cb_lm_wkind {
#define CB_LM_X(kind, suffix) CB_LM_W_##kind,
    CB_LM_LAYER_TENSORS(CB_LM_X)
#undef CB_LM_X
        CB_LM_W_LAYER_KINDS,
    CB_LM_W_EMBED = CB_LM_W_LAYER_KINDS, /* model.embed_tokens.weight */
    CB_LM_W_NORM,                        /* model.norm.weight */
    CB_LM_W_LM_HEAD,                     /* lm_head.weight */
    CB_LM_W_KINDS
} cb_lm_wkind;

typedef struct cb_lm_tensor_spec {
    char name[CB_LM_TENSOR_NAME_MAX];
    cb_lm_wkind kind;
    int layer; /* -1 for the global tensors */
    int ndim;  /* 1 or 2 */
    int64_t dims[2];
} cb_lm_tensor_spec;

/* The table of config c in file order (embed, layers, norm, lm_head): writes up to cap
 * entries and returns how many there are (call with cap 0 to size it). */
int cb_lm_weights_table(const cb_lm_config *c, cb_lm_tensor_spec *out, int cap);
/* The most entries a table can have: 15 per layer and 3. */
#define CB_LM_TABLE_MAX(n_layers) ((int)(n_layers)*CB_LM_W_LAYER_KINDS + 3)

typedef struct cb_lm_weights_opts {
    cb_lm_dtype dtype; /* in-memory precision of the matrices */
    const char *path;  /* NULL: seeded random weights */
    uint64_t seed;     /* random weights only */
    int packed;        /* 1: every matrix in the CPU kernels' packed layout (below) */
} cb_lm_weights_opts;
#define CB_LM_WEIGHTS_OPTS_DEFAULT                                                                 \
    { CB_LM_F32, NULL, 0, 0 }

typedef struct cb_lm_weights cb_lm_weights;

int cb_lm_weights_create(const cb_lm_config *c, const cb_lm_weights_opts *o, cb_lm_weights **out,
                         cb_error *err);
void cb_lm_weights_destroy(cb_lm_weights *w); /* NULL is a no-op */

/* 1 when the matrices (every 2-D tensor: the layers', the embedding, a separate lm_head) are
 * held in the packed layout of the CPU kernels (lm_kernels.h, cb__lm_pack: panels of 16 rows,
 * k-major; each tensor's slot cb__lm_packed_bytes long) instead of rows. A CPU model then uses
 * them in place, with no copy, the output head included; the CUDA path refuses them. Packing
 * happens once, after loading or generating, through one temporary of the largest matrix. */
int cb_lm_weights_packed(const cb_lm_weights *w);

/* A tensor's data (float32 or bfloat16 as cb_lm_weights_dtype_of says), or NULL where the
 * config has none (a bias it lacks, q_norm outside qwen3). layer is ignored for the global
 * kinds; a tied lm_head returns the embedding. */
const void *cb_lm_weights_get(const cb_lm_weights *w, cb_lm_wkind kind, int layer);
cb_lm_dtype cb_lm_weights_dtype_of(const cb_lm_weights *w, cb_lm_wkind kind);
const cb_lm_config *cb_lm_weights_config(const cb_lm_weights *w);
size_t cb_lm_weights_bytes(const cb_lm_weights *w); /* the arena */
int cb_lm_weights_random(const cb_lm_weights *w);   /* 1: seeded random, not trained */
/* Tensors in the files that the table does not name, and the first of them ("" if none). */
int cb_lm_weights_ignored(const cb_lm_weights *w, const char **first);

/* bfloat16 <-> float32: widening is exact; narrowing rounds to nearest even (NaN stays NaN). */
static inline float cb_lm_bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)h << 16};
    return v.f;
}
uint16_t cb_lm_f32_to_bf16(float f);

#endif
