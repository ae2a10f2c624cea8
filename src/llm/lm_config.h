/* llm/lm_config.h - the shape of a decoder-only transformer of the Llama family (Llama 2/3,
 * TinyLlama, Qwen2/2.5, Qwen3): named presets, Hugging Face config.json files, derived sizes.
 *
 * config.json: the fields those models publish (transformers' LlamaConfig, Qwen2Config,
 * Qwen3Config). Read: model_type ("llama", "qwen2", "qwen3"), hidden_size, num_hidden_layers,
 * num_attention_heads, num_key_value_heads, head_dim, intermediate_size, vocab_size,
 * rms_norm_eps, rope_theta, rope_scaling (null, {"rope_type": "default"} or Llama 3's
 * {"rope_type": "llama3", factor, low_freq_factor, high_freq_factor,
 * original_max_position_embeddings}) or transformers 5's rope_parameters (the same with
 * rope_theta inside), use_sliding_window and layer_types (full attention only),
 * max_position_embeddings, tie_word_embeddings, attention_bias, mlp_bias (false only),
 * hidden_act ("silu" only), bos_token_id, eos_token_id (an integer, a list or null), torch_dtype
 * (or its newer name dtype). Other keys are ignored. Missing optional keys take transformers'
 * defaults for the model_type (llama: bos 1, eos 2). The biases follow the model
 * code: llama and qwen3 put attention_bias on q, k, v and o; qwen2 always has q, k, v biases and
 * no o bias; qwen3 adds per-head RMSNorm of q and k (weights of head_dim).
 *
 * Errors (CB_ECONFIG, CB_EUNSUPPORTED for a known but unsupported setting) name the file,
 * line:col and key: "config.json:4:18: hidden_size: expected an integer in [1, 65536], got
 * \"896\"" (cb_error_format).
 *
 * Ownership: cb_lm_config is a plain record, copied by value; it owns no memory. */
#ifndef CB_LLM_LM_CONFIG_H
#define CB_LLM_LM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

/* Limits: a config beyond them is refused (the largest published Llama-family models fit). */
#define CB_LM_HIDDEN_MAX 65536
#define CB_LM_LAYERS_MAX 1024
#define CB_LM_HEADS_MAX 1024
#define CB_LM_HEAD_DIM_MAX 1024
#define CB_LM_INTERMEDIATE_MAX 262144
#define CB_LM_VOCAB_MAX (1 << 22)
#define CB_LM_POSITIONS_MAX (1 << 24)
#define CB_LM_EOS_MAX 8   /* eos_token_id entries */
#define CB_LM_NAME_MAX 64 /* bytes of cb_lm_config.name, with the NUL */

typedef enum cb_lm_arch { CB_LM_LLAMA = 0, CB_LM_QWEN2, CB_LM_QWEN3 } cb_lm_arch;

/* torch_dtype as published (the precision the weights were saved in); informative only. */
typedef enum cb_lm_file_dtype {
    CB_LM_DTYPE_UNSET = 0,
    CB_LM_DTYPE_F32,
    CB_LM_DTYPE_BF16,
    CB_LM_DTYPE_F16
} cb_lm_file_dtype;

typedef struct cb_lm_config {
    char name[CB_LM_NAME_MAX]; /* the preset's name, or the config file's path (truncated) */
    cb_lm_arch arch;
    int64_t hidden;        /* hidden_size */
    int64_t n_layers;      /* num_hidden_layers */
    int64_t n_heads;       /* num_attention_heads */
    int64_t n_kv_heads;    /* num_key_value_heads (divides n_heads) */
    int64_t head_dim;      /* head_dim, or hidden / n_heads; even */
    int64_t intermediate;  /* intermediate_size */
    int64_t vocab;         /* vocab_size */
    int64_t max_positions; /* max_position_embeddings */
    double rms_eps;        /* rms_norm_eps */
    double rope_theta;
    int rope_llama3; /* rope_scaling of type llama3; the four fields below are then set */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_positions;
    int tied;       /* tie_word_embeddings: no lm_head.weight, the embedding is reused */
    int qkv_bias;   /* q_proj, k_proj, v_proj have a bias */
    int o_bias;     /* o_proj has a bias */
    int qk_norm;    /* q_norm, k_norm (qwen3) */
    int32_t bos_id; /* -1: none */
    int n_eos;
    int32_t eos_ids[CB_LM_EOS_MAX];
    cb_lm_file_dtype file_dtype;
} cb_lm_config;

/* "llama", "qwen2", "qwen3". */
const char *cb_lm_config_arch_name(cb_lm_arch arch);

/* Presets: 0 and *out, or CB_ENOENT naming the presets. */
int cb_lm_config_preset(const char *name, cb_lm_config *out, cb_error *err);
/* The i-th preset's name, NULL past the end. */
const char *cb_lm_config_preset_name(int i);

/* A config.json file (at most 16 MiB), or its text (name labels errors). */
int cb_lm_config_load(const char *path, cb_lm_config *out, cb_error *err);
int cb_lm_config_parse(const char *text, size_t len, const char *name, cb_lm_config *out,
                       cb_error *err);

/* A preset name, or else a path to a config.json or to a directory holding one (the `model`
 * parameter of a stage). */
int cb_lm_config_resolve(const char *model, cb_lm_config *out, cb_error *err);

/* The invariants every loaded config meets (limits, n_kv_heads divides n_heads, even head_dim,
 * positive eps and theta, llama3 factors); 0 or CB_ECONFIG. Presets and loads call it. */
int cb_lm_config_check(const cb_lm_config *c, cb_error *err);

/* Derived sizes. */
static inline int64_t cb_lm_config_q_dim(const cb_lm_config *c) { return c->n_heads * c->head_dim; }
static inline int64_t cb_lm_config_kv_dim(const cb_lm_config *c) {
    return c->n_kv_heads * c->head_dim;
}
/* Parameters of one layer, and of the whole model (exact, from the tensor shapes; a tied
 * lm_head is counted once). */
int64_t cb_lm_config_layer_params(const cb_lm_config *c);
int64_t cb_lm_config_params(const cb_lm_config *c);
/* Bytes of the K and V cache of one token over all layers, at elem_bytes per element. */
static inline int64_t cb_lm_config_kv_bytes_per_token(const cb_lm_config *c, int elem_bytes) {
    return 2 * c->n_layers * cb_lm_config_kv_dim(c) * elem_bytes;
}

#endif
