/* tests/test_llm_config.c - decoder model configurations and weights (llm/lm_config.c,
 * llm/lm_weights.c).
 *
 * Presets: exact parameter counts derived by hand below from the shapes (and equal to the counts
 * the model cards publish), the tensor table's names and shapes, and both equal to those of the
 * models Hugging Face transformers builds (when installed). config.json: the published
 * files of the four presets, written here as Hugging Face publishes them, parse to the presets'
 * numbers; errors name file:line:col and the key. Weights: a tiny model written with
 * cb_safetensors_write in float32 and bfloat16, single file and index.json shards, loads back
 * bit-exact; shape mismatches and missing tensors name the tensor and both shapes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "harness.h"
#include "llm/lm_config.h"
#include "llm/lm_weights.h"
#include "nn/safetensors.h"

static const char *g_dir;

static const char *path_in(const char *name) { return cb_test_path(g_dir, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, strlen(text), f) != strlen(text))
        abort();
    fclose(f);
}

static cb_lm_config preset(const char *name) {
    cb_lm_config c;
    cb_error err = {0};
    memset(&c, 0, sizeof c);
    if (cb_lm_config_preset(name, &c, &err))
        cb__test_fail(__FILE__, __LINE__, "preset %s: %s", name, err.msg);
    return c;
}

/* ---- Presets ------------------------------------------------------------------------------ */

static void test_preset_params(void) {
    /* qwen2.5-0.5b: embed 151936 * 896 = 136,134,656 (tied: counted once). A layer: q 896 * 896
     * + 896 = 803,712; k, v 128 * 896 + 128 = 114,816 each; o 802,816; MLP 3 * 896 * 4864 =
     * 13,074,432; norms 2 * 896 = 1,792; 14,912,384 in all, * 24 = 357,897,216. Final norm
     * 896. Total 494,032,768 (Qwen2.5-0.5B's model card: 0.49B). */
    cb_lm_config c = preset("qwen2.5-0.5b");
    CB_CHECK_EQ_INT(cb_lm_config_layer_params(&c), 14912384);
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 494032768);
    /* llama-3.2-1b: embed 128256 * 2048 = 262,668,288 (tied). A layer: q 2048^2 = 4,194,304;
     * k, v 512 * 2048 = 1,048,576 each; o 4,194,304; MLP 3 * 2048 * 8192 = 50,331,648; norms
     * 4,096; 60,821,504, * 16 = 973,144,064. Final norm 2,048. Total 1,235,814,400 (1.24B). */
    c = preset("llama-3.2-1b");
    CB_CHECK_EQ_INT(cb_lm_config_layer_params(&c), 60821504);
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 1235814400);
    /* tinyllama-1.1b: embed and lm_head 32000 * 2048 = 65,536,000 each. A layer: q, o
     * 4,194,304 each; k, v 256 * 2048 = 524,288 each; MLP 3 * 2048 * 5632 = 34,603,008; norms
     * 4,096; 44,044,288, * 22 = 968,974,336. Final norm 2,048. Total 1,100,048,384 (1.1B). */
    c = preset("tinyllama-1.1b");
    CB_CHECK_EQ_INT(cb_lm_config_layer_params(&c), 44044288);
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 1100048384);
    /* qwen3-0.6b: embed 151936 * 1024 = 155,582,464 (tied). A layer (head_dim 128, q 2048
     * wide): q 2048 * 1024 = 2,097,152; k, v 1024 * 1024 = 1,048,576 each; o 2,097,152; q/k
     * norms 128 each; MLP 3 * 1024 * 3072 = 9,437,184; norms 2,048; 15,730,944, * 28 =
     * 440,466,432. Final norm 1,024. Total 596,049,920 (0.6B; 0.44B without embeddings). */
    c = preset("qwen3-0.6b");
    CB_CHECK_EQ_INT(cb_lm_config_layer_params(&c), 15730944);
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 596049920);
    /* tiny: embed 512 * 64 = 32,768 (tied). A layer: q 64 * 64 + 64 = 4,160; k, v 32 * 64 +
     * 32 = 2,080 each; o 4,096; MLP 3 * 64 * 160 = 30,720; norms 128; 43,264, * 2 = 86,528.
     * Final norm 64. Total 119,360. */
    c = preset("tiny");
    CB_CHECK_EQ_INT(cb_lm_config_layer_params(&c), 43264);
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 119360);
    /* tiny-llama: untied, no biases: layer 4,096 * 2 + 2,048 * 2 + 30,720 + 128 = 43,136;
     * 86,272 + 2 * 32,768 + 64 = 151,872. tiny-qwen3 (head_dim 32, q 128 wide): q, o 8,192
     * each, k, v 64 * 64 = 4,096 each, q/k norms 32 each, MLP 30,720, norms 128: 55,488;
     * 110,976 + 32,768 + 64 = 143,808. */
    c = preset("tiny-llama");
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 151872);
    c = preset("tiny-qwen3");
    CB_CHECK_EQ_INT(cb_lm_config_params(&c), 143808);
    /* KV cache of qwen2.5-0.5b: 2 (K, V) * 24 layers * 128 * 2 bytes = 12,288 bytes a token. */
    c = preset("qwen2.5-0.5b");
    CB_CHECK_EQ_INT(cb_lm_config_kv_bytes_per_token(&c, 2), 12288);
}

static void test_preset_names(void) {
    int n = 0;
    for (const char *name; (name = cb_lm_config_preset_name(n)); n++) {
        cb_lm_config c = preset(name);
        CB_CHECK_STR_EQ(c.name, name);
    }
    CB_CHECK_EQ_INT(n, 7);
    cb_lm_config c;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_lm_config_preset("qwen-7b", &c, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.msg, "unknown model preset \"qwen-7b\"");
    CB_CHECK_CONTAINS(err.msg, "qwen2.5-0.5b, llama-3.2-1b");
    CB_CHECK_EQ_INT(cb_lm_config_resolve("qwen-7b", &c, &err), CB_ENOENT);
    CB_CHECK_EQ_INT(cb_lm_config_resolve("tiny", &c, &err), 0);
    CB_CHECK_EQ_INT(c.hidden, 64);
    /* A directory: its config.json. */
    cb_test_write(g_dir, "config.json",
                  "{\"model_type\": \"qwen3\", \"hidden_size\": 32, "
                  "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                  "\"intermediate_size\": 8, \"vocab_size\": 10}");
    CB_CHECK_EQ_INT(cb_lm_config_resolve(g_dir, &c, &err), 0);
    CB_CHECK_EQ_INT(c.arch, CB_LM_QWEN3);
    CB_CHECK_EQ_INT(c.head_dim, 16);
    /* A directory named without a slash is a path, not an unknown preset. */
    char cwd[1024], sub[600];
    snprintf(sub, sizeof sub, "%s/qwen3-small", g_dir);
    mkdir(sub, 0755);
    cb_test_write(sub, "config.json",
                  "{\"model_type\": \"qwen3\", \"hidden_size\": 32, "
                  "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                  "\"intermediate_size\": 8, \"vocab_size\": 10}");
    if (getcwd(cwd, sizeof cwd) && chdir(g_dir) == 0) {
        memset(&c, 0, sizeof c);
        CB_CHECK_EQ_INT(cb_lm_config_resolve("qwen3-small", &c, &err), 0);
        CB_CHECK_EQ_INT(c.hidden, 32);
        CB_CHECK_EQ_INT(chdir(cwd), 0);
    }
}

/* Sums params over the table: the table and the count agree. */
static int64_t table_params(const cb_lm_config *c, cb_lm_tensor_spec *tab, int n) {
    int64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += tab[i].dims[0] * (tab[i].ndim == 2 ? tab[i].dims[1] : 1);
    (void)c;
    return sum;
}

static void test_table(void) {
    cb_lm_config c = preset("qwen2.5-0.5b");
    int n = cb_lm_weights_table(&c, NULL, 0);
    /* embed, 24 layers of 12 (q, k, v with biases, o, 3 MLP, 2 norms), norm; tied: no lm_head */
    CB_CHECK_EQ_INT(n, 1 + 24 * 12 + 1);
    CB_CHECK_CMP_INT(n, <=, CB_LM_TABLE_MAX(c.n_layers));
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    CB_CHECK_EQ_INT(cb_lm_weights_table(&c, tab, n), n);
    CB_CHECK_STR_EQ(tab[0].name, "model.embed_tokens.weight");
    CB_CHECK_EQ_INT(tab[0].dims[0], 151936);
    CB_CHECK_EQ_INT(tab[0].dims[1], 896);
    CB_CHECK_STR_EQ(tab[1].name, "model.layers.0.input_layernorm.weight");
    CB_CHECK_STR_EQ(tab[2].name, "model.layers.0.self_attn.q_proj.weight");
    CB_CHECK_STR_EQ(tab[3].name, "model.layers.0.self_attn.q_proj.bias");
    CB_CHECK_STR_EQ(tab[4].name, "model.layers.0.self_attn.k_proj.weight");
    CB_CHECK_EQ_INT(tab[4].dims[0], 128);
    CB_CHECK_EQ_INT(tab[4].dims[1], 896);
    CB_CHECK_STR_EQ(tab[8].name, "model.layers.0.self_attn.o_proj.weight");
    CB_CHECK_STR_EQ(tab[9].name, "model.layers.0.post_attention_layernorm.weight");
    CB_CHECK_STR_EQ(tab[11].name, "model.layers.0.mlp.up_proj.weight");
    CB_CHECK_EQ_INT(tab[11].dims[0], 4864);
    CB_CHECK_STR_EQ(tab[12].name, "model.layers.0.mlp.down_proj.weight");
    CB_CHECK_EQ_INT(tab[12].dims[0], 896);
    CB_CHECK_EQ_INT(tab[12].dims[1], 4864);
    CB_CHECK_STR_EQ(tab[n - 1].name, "model.norm.weight");
    CB_CHECK_EQ_INT(table_params(&c, tab, n), cb_lm_config_params(&c));
    free(tab);

    const char *names[] = {"llama-3.2-1b", "tinyllama-1.1b", "qwen3-0.6b", "tiny-llama",
                           "tiny-qwen3"};
    for (int p = 0; p < 5; p++) {
        c = preset(names[p]);
        n = cb_lm_weights_table(&c, NULL, 0);
        tab = calloc((size_t)n, sizeof *tab);
        cb_lm_weights_table(&c, tab, n);
        CB_CHECK_EQ_INT(table_params(&c, tab, n), cb_lm_config_params(&c));
        CB_CHECK_EQ_INT(strcmp(tab[n - 1].name, "lm_head.weight") == 0, !c.tied);
        int has_qnorm = 0, has_bias = 0;
        for (int i = 0; i < n; i++) {
            has_qnorm |= strcmp(tab[i].name, "model.layers.0.self_attn.q_norm.weight") == 0 &&
                         tab[i].dims[0] == c.head_dim;
            has_bias |= strstr(tab[i].name, ".bias") != NULL;
        }
        CB_CHECK_EQ_INT(has_qnorm, c.arch == CB_LM_QWEN3);
        CB_CHECK_EQ_INT(has_bias, 0);
        free(tab);
    }
}

/* ---- config.json -------------------------------------------------------------------------- */

/* The published files (keys and values as on the Hub; a few unread keys left in). */
static const char k_qwen25_json[] = "{\n"
                                    "  \"architectures\": [\"Qwen2ForCausalLM\"],\n"
                                    "  \"attention_dropout\": 0.0,\n"
                                    "  \"bos_token_id\": 151643,\n"
                                    "  \"eos_token_id\": 151645,\n"
                                    "  \"hidden_act\": \"silu\",\n"
                                    "  \"hidden_size\": 896,\n"
                                    "  \"initializer_range\": 0.02,\n"
                                    "  \"intermediate_size\": 4864,\n"
                                    "  \"max_position_embeddings\": 32768,\n"
                                    "  \"max_window_layers\": 21,\n"
                                    "  \"model_type\": \"qwen2\",\n"
                                    "  \"num_attention_heads\": 14,\n"
                                    "  \"num_hidden_layers\": 24,\n"
                                    "  \"num_key_value_heads\": 2,\n"
                                    "  \"rms_norm_eps\": 1e-06,\n"
                                    "  \"rope_theta\": 1000000.0,\n"
                                    "  \"sliding_window\": 32768,\n"
                                    "  \"tie_word_embeddings\": true,\n"
                                    "  \"torch_dtype\": \"bfloat16\",\n"
                                    "  \"transformers_version\": \"4.43.1\",\n"
                                    "  \"use_cache\": true,\n"
                                    "  \"use_sliding_window\": false,\n"
                                    "  \"vocab_size\": 151936\n"
                                    "}\n";

static const char k_llama32_json[] = "{\n"
                                     "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                                     "  \"attention_bias\": false,\n"
                                     "  \"attention_dropout\": 0.0,\n"
                                     "  \"bos_token_id\": 128000,\n"
                                     "  \"eos_token_id\": [128001, 128008, 128009],\n"
                                     "  \"head_dim\": 64,\n"
                                     "  \"hidden_act\": \"silu\",\n"
                                     "  \"hidden_size\": 2048,\n"
                                     "  \"initializer_range\": 0.02,\n"
                                     "  \"intermediate_size\": 8192,\n"
                                     "  \"max_position_embeddings\": 131072,\n"
                                     "  \"mlp_bias\": false,\n"
                                     "  \"model_type\": \"llama\",\n"
                                     "  \"num_attention_heads\": 32,\n"
                                     "  \"num_hidden_layers\": 16,\n"
                                     "  \"num_key_value_heads\": 8,\n"
                                     "  \"pretraining_tp\": 1,\n"
                                     "  \"rms_norm_eps\": 1e-05,\n"
                                     "  \"rope_scaling\": {\n"
                                     "    \"factor\": 32.0,\n"
                                     "    \"high_freq_factor\": 4.0,\n"
                                     "    \"low_freq_factor\": 1.0,\n"
                                     "    \"original_max_position_embeddings\": 8192,\n"
                                     "    \"rope_type\": \"llama3\"\n"
                                     "  },\n"
                                     "  \"rope_theta\": 500000.0,\n"
                                     "  \"tie_word_embeddings\": true,\n"
                                     "  \"torch_dtype\": \"bfloat16\",\n"
                                     "  \"use_cache\": true,\n"
                                     "  \"vocab_size\": 128256\n"
                                     "}\n";

static const char k_tinyllama_json[] = "{\n"
                                       "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                                       "  \"bos_token_id\": 1,\n"
                                       "  \"eos_token_id\": 2,\n"
                                       "  \"hidden_act\": \"silu\",\n"
                                       "  \"hidden_size\": 2048,\n"
                                       "  \"initializer_range\": 0.02,\n"
                                       "  \"intermediate_size\": 5632,\n"
                                       "  \"max_position_embeddings\": 2048,\n"
                                       "  \"model_type\": \"llama\",\n"
                                       "  \"num_attention_heads\": 32,\n"
                                       "  \"num_hidden_layers\": 22,\n"
                                       "  \"num_key_value_heads\": 4,\n"
                                       "  \"pretraining_tp\": 1,\n"
                                       "  \"rms_norm_eps\": 1e-05,\n"
                                       "  \"rope_scaling\": null,\n"
                                       "  \"rope_theta\": 10000.0,\n"
                                       "  \"tie_word_embeddings\": false,\n"
                                       "  \"torch_dtype\": \"bfloat16\",\n"
                                       "  \"transformers_version\": \"4.35.0\",\n"
                                       "  \"use_cache\": true,\n"
                                       "  \"vocab_size\": 32000\n"
                                       "}\n";

static const char k_qwen3_json[] = "{\n"
                                   "  \"architectures\": [\"Qwen3ForCausalLM\"],\n"
                                   "  \"attention_bias\": false,\n"
                                   "  \"attention_dropout\": 0.0,\n"
                                   "  \"bos_token_id\": 151643,\n"
                                   "  \"eos_token_id\": 151645,\n"
                                   "  \"head_dim\": 128,\n"
                                   "  \"hidden_act\": \"silu\",\n"
                                   "  \"hidden_size\": 1024,\n"
                                   "  \"initializer_range\": 0.02,\n"
                                   "  \"intermediate_size\": 3072,\n"
                                   "  \"max_position_embeddings\": 40960,\n"
                                   "  \"max_window_layers\": 28,\n"
                                   "  \"model_type\": \"qwen3\",\n"
                                   "  \"num_attention_heads\": 16,\n"
                                   "  \"num_hidden_layers\": 28,\n"
                                   "  \"num_key_value_heads\": 8,\n"
                                   "  \"rms_norm_eps\": 1e-06,\n"
                                   "  \"rope_scaling\": null,\n"
                                   "  \"rope_theta\": 1000000,\n"
                                   "  \"sliding_window\": null,\n"
                                   "  \"tie_word_embeddings\": true,\n"
                                   "  \"torch_dtype\": \"bfloat16\",\n"
                                   "  \"transformers_version\": \"4.51.0\",\n"
                                   "  \"use_cache\": true,\n"
                                   "  \"use_sliding_window\": false,\n"
                                   "  \"vocab_size\": 151936\n"
                                   "}\n";

/* The test sizes as config.json files (what a user would write for them). */
static const char k_tiny_json[] =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 64,\n"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
    " \"intermediate_size\": 160, \"vocab_size\": 512, \"max_position_embeddings\": 1024,\n"
    " \"rms_norm_eps\": 1e-6, \"rope_theta\": 1e6, \"tie_word_embeddings\": true,\n"
    " \"eos_token_id\": 1, \"torch_dtype\": \"float32\"}\n";

static const char k_tiny_llama_json[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 64,\n"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
    " \"intermediate_size\": 160, \"vocab_size\": 512, \"max_position_embeddings\": 1024,\n"
    " \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000.0, \"tie_word_embeddings\": false,\n"
    " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,\n"
    "   \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 128},\n"
    " \"bos_token_id\": 0, \"eos_token_id\": [1], \"torch_dtype\": \"float32\"}\n";

static const char k_tiny_qwen3_json[] =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"hidden_size\": 64,\n"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
    " \"head_dim\": 32, \"intermediate_size\": 160, \"vocab_size\": 512,\n"
    " \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000,\n"
    " \"tie_word_embeddings\": true, \"eos_token_id\": 1, \"torch_dtype\": \"float32\"}\n";

/* Every preset and its config.json. */
static const char *const k_files[7][2] = {{"qwen2.5-0.5b", k_qwen25_json},
                                          {"llama-3.2-1b", k_llama32_json},
                                          {"tinyllama-1.1b", k_tinyllama_json},
                                          {"qwen3-0.6b", k_qwen3_json},
                                          {"tiny", k_tiny_json},
                                          {"tiny-llama", k_tiny_llama_json},
                                          {"tiny-qwen3", k_tiny_qwen3_json}};

static void check_same(const cb_lm_config *a, const cb_lm_config *b, const char *what) {
    cb_lm_config x = *a, y = *b;
    memset(x.name, 0, sizeof x.name);
    memset(y.name, 0, sizeof y.name);
    if (memcmp(&x, &y, sizeof x) != 0)
        cb__test_fail(__FILE__, __LINE__, "%s: the parsed config differs from the preset", what);
    CB_CHECK_EQ_INT(x.hidden, y.hidden);
    CB_CHECK_EQ_INT(x.head_dim, y.head_dim);
    CB_CHECK_EQ_INT(x.n_eos, y.n_eos);
    CB_CHECK_EQ_INT(x.rope_llama3, y.rope_llama3);
    CB_CHECK_EQ_INT(x.qkv_bias, y.qkv_bias);
}

static void test_json_matches_presets(void) {
    for (int i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.json", k_files[i][0]);
        const char *path = cb_test_write(g_dir, name, k_files[i][1]);
        cb_lm_config c;
        cb_error err = {0};
        memset(&c, 0, sizeof c);
        if (cb_lm_config_load(path, &c, &err)) {
            cb__test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
            continue;
        }
        cb_lm_config p = preset(k_files[i][0]);
        check_same(&c, &p, k_files[i][0]);
        CB_CHECK_STR_EQ(c.name, path);
        /* A path resolves to the file. */
        memset(&c, 0, sizeof c);
        CB_CHECK_EQ_INT(cb_lm_config_resolve(path, &c, &err), 0);
        CB_CHECK_EQ_INT(c.vocab, p.vocab);
    }
}

/* Defaults: no num_key_value_heads (MHA), no head_dim, no optional keys. */
static void test_json_defaults(void) {
    static const char text[] =
        "{\"model_type\": \"llama\", \"hidden_size\": 96, \"num_hidden_layers\": 1,\n"
        " \"num_attention_heads\": 6, \"intermediate_size\": 200, \"vocab_size\": 100,\n"
        " \"attention_bias\": true, \"eos_token_id\": null}";
    cb_lm_config c;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_lm_config_parse(text, strlen(text), "d.json", &c, &err), 0);
    CB_CHECK_EQ_INT(c.n_kv_heads, 6);
    CB_CHECK_EQ_INT(c.head_dim, 16);
    CB_CHECK_EQ_INT(c.max_positions, 2048);
    CB_CHECK_NEAR(c.rope_theta, 10000.0, 0);
    CB_CHECK_NEAR(c.rms_eps, 1e-6, 0);
    CB_CHECK_EQ_INT(c.qkv_bias, 1);
    CB_CHECK_EQ_INT(c.o_bias, 1);
    CB_CHECK_EQ_INT(c.tied, 0);
    CB_CHECK_EQ_INT(c.bos_id, 1); /* LlamaConfig's default */
    CB_CHECK_EQ_INT(c.n_eos, 0);  /* null: none */
    CB_CHECK_EQ_INT(c.file_dtype, CB_LM_DTYPE_UNSET);
    /* qwen2 ignores attention_bias: q, k, v biased, o not. */
    static const char q2[] =
        "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"num_hidden_layers\": 1,\n"
        " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 64,\n"
        " \"vocab_size\": 100, \"dtype\": \"float32\"}";
    CB_CHECK_EQ_INT(cb_lm_config_parse(q2, strlen(q2), "q2.json", &c, &err), 0);
    CB_CHECK_EQ_INT(c.qkv_bias, 1);
    CB_CHECK_EQ_INT(c.o_bias, 0);
    CB_CHECK_EQ_INT(c.file_dtype, CB_LM_DTYPE_F32);
    CB_CHECK_EQ_INT(c.max_positions, 32768);
    CB_CHECK_EQ_INT(c.bos_id, -1); /* Qwen2Config: none */
    CB_CHECK_EQ_INT(c.n_eos, 0);
    /* llama with neither key: bos 1, eos 2. */
    static const char l2[] =
        "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 1,\n"
        " \"num_attention_heads\": 4, \"intermediate_size\": 64, \"vocab_size\": 100}";
    CB_CHECK_EQ_INT(cb_lm_config_parse(l2, strlen(l2), "l2.json", &c, &err), 0);
    CB_CHECK_EQ_INT(c.bos_id, 1);
    CB_CHECK_EQ_INT(c.n_eos, 1);
    CB_CHECK_EQ_INT(c.eos_ids[0], 2);
}

/* Replaces the first `from` in base with `to` and parses it: the error. */
static int parse_edit(const char *base, const char *from, const char *to, cb_error *err) {
    char buf[4096];
    const char *at = strstr(base, from);
    if (!at)
        abort();
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    cb_lm_config c;
    memset(err, 0, sizeof *err);
    return cb_lm_config_parse(buf, strlen(buf), "config.json", &c, err);
}

static void test_json_errors(void) {
    cb_error err;
    char line[CB_ERROR_MSG_MAX + 512];
    /* A string where an integer belongs: line 7 (hidden_size), the value's column. */
    CB_CHECK_EQ_INT(
        parse_edit(k_qwen25_json, "\"hidden_size\": 896", "\"hidden_size\": \"896\"", &err),
        CB_ECONFIG);
    cb_error_format(&err, line, sizeof line);
    CB_CHECK_STR_EQ(line, "config.json:7:18: hidden_size: expected an integer in [1, 65536], "
                          "got \"896\"");
    CB_CHECK_EQ_INT(
        parse_edit(k_qwen25_json, "\"num_hidden_layers\": 24", "\"num_hidden_layers\": 2.5", &err),
        CB_ECONFIG);
    CB_CHECK_EQ_INT(err.line, 14);
    CB_CHECK_STR_EQ(err.key, "num_hidden_layers");
    CB_CHECK_EQ_INT(parse_edit(k_qwen25_json, "\"tie_word_embeddings\": true",
                               "\"tie_word_embeddings\": 1", &err),
                    CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "tie_word_embeddings");
    CB_CHECK_CONTAINS(err.msg, "expected true or false, got 1");
    CB_CHECK_EQ_INT(
        parse_edit(k_qwen25_json, "\"rope_theta\": 1000000.0", "\"rope_theta\": null", &err),
        0); /* null: the default */
    /* Unknown model_type. */
    CB_CHECK_EQ_INT(parse_edit(k_qwen25_json, "\"qwen2\"", "\"mistral\"", &err), CB_EUNSUPPORTED);
    cb_error_format(&err, line, sizeof line);
    CB_CHECK_STR_EQ(line, "config.json:12:17: model_type: unknown model_type \"mistral\" "
                          "(supported: llama, qwen2, qwen3)");
    /* Missing required key. */
    CB_CHECK_EQ_INT(parse_edit(k_qwen25_json, "\"vocab_size\"", "\"vocab\"", &err), CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "vocab_size");
    CB_CHECK_CONTAINS(err.msg, "missing");
    /* rope_scaling: other types refused, fields checked. */
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "\"llama3\"", "\"yarn\"", &err), CB_EUNSUPPORTED);
    CB_CHECK_STR_EQ(err.key, "rope_scaling.rope_type");
    CB_CHECK_EQ_INT(err.line, 25);
    CB_CHECK_CONTAINS(err.msg, "rope scaling \"yarn\" is not supported");
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "\"factor\": 32.0", "\"factor\": \"32\"", &err),
                    CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "rope_scaling.factor");
    CB_CHECK_EQ_INT(err.line, 21);
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "\"low_freq_factor\": 1.0,", "", &err), CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "rope_scaling.low_freq_factor");
    /* eos lists: a bad entry names its index. */
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "128008", "\"x\"", &err), CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "eos_token_id[1]");
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "128009", "128256", &err), CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "eos_token_id[2]");
    /* Unsupported variants. */
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "\"mlp_bias\": false", "\"mlp_bias\": true", &err),
                    CB_EUNSUPPORTED);
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "\"silu\"", "\"gelu\"", &err), CB_EUNSUPPORTED);
    CB_CHECK_STR_EQ(err.key, "hidden_act");
    CB_CHECK_EQ_INT(parse_edit(k_llama32_json, "\"bfloat16\"", "\"int8\"", &err), CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "torch_dtype");
    /* Inconsistent shapes. */
    CB_CHECK_EQ_INT(
        parse_edit(k_qwen25_json, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", &err),
        CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "num_key_value_heads must divide num_attention_heads");
    CB_CHECK_STR_EQ(err.file, "config.json");
    CB_CHECK_EQ_INT(parse_edit(k_tinyllama_json, "\"num_attention_heads\": 32",
                               "\"num_attention_heads\": 48", &err),
                    CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "head_dim");
    /* Syntax errors and files. */
    CB_CHECK_EQ_INT(
        parse_edit(k_qwen25_json, "\"use_cache\": true,", "\"use_cache\": true,,", &err),
        CB_ECONFIG);
    CB_CHECK_EQ_INT(err.line, 22);
    CB_CHECK_STR_EQ(err.file, "config.json");
    cb_lm_config c;
    CB_CHECK_CMP_INT(cb_lm_config_load(path_in("absent.json"), &c, &err), <, 0);
    CB_CHECK_CONTAINS(err.file, "absent.json");
    CB_CHECK_EQ_INT(cb_lm_config_parse("[1]", 3, "a.json", &c, &err), CB_ECONFIG);
}

/* transformers 5 writes rope_theta and the scaling into "rope_parameters" (config.to_json_string
 * of the tiny-llama and tiny configs with transformers 5.25.0, labels and unread keys kept). */
static const char k_tiny_llama_v5_json[] =
    "{\n  \"_name_or_path\": \"\",\n  \"architectures\": [\"LlamaForCausalLM\"],\n"
    "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n  \"bos_token_id\": 0,\n"
    "  \"chunk_size_feed_forward\": 0,\n  \"dtype\": \"float32\",\n  \"eos_token_id\": 1,\n"
    "  \"head_dim\": 16,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": 64,\n"
    "  \"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"},\n  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 160,\n  \"max_position_embeddings\": 1024,\n"
    "  \"mlp_bias\": false,\n  \"model_type\": \"llama\",\n  \"num_attention_heads\": 4,\n"
    "  \"num_hidden_layers\": 2,\n  \"num_key_value_heads\": 2,\n  \"pad_token_id\": null,\n"
    "  \"rms_norm_eps\": 1e-05,\n  \"rope_parameters\": {\n    \"factor\": 8.0,\n"
    "    \"high_freq_factor\": 4.0,\n    \"low_freq_factor\": 1.0,\n"
    "    \"original_max_position_embeddings\": 128,\n    \"rope_theta\": 500000.0,\n"
    "    \"rope_type\": \"llama3\"\n  },\n  \"tie_word_embeddings\": false,\n"
    "  \"transformers_version\": \"5.25.0\",\n  \"use_cache\": true,\n  \"vocab_size\": 512\n}\n";

static const char k_tiny_v5_json[] =
    "{\n  \"architectures\": [\"Qwen2ForCausalLM\"],\n  \"bos_token_id\": null,\n"
    "  \"dtype\": \"float32\",\n  \"eos_token_id\": 1,\n  \"head_dim\": 16,\n"
    "  \"hidden_act\": \"silu\",\n  \"hidden_size\": 64,\n  \"intermediate_size\": 160,\n"
    "  \"layer_types\": [\"full_attention\", \"full_attention\"],\n"
    "  \"max_position_embeddings\": 1024,\n  \"max_window_layers\": 28,\n"
    "  \"model_type\": \"qwen2\",\n  \"num_attention_heads\": 4,\n  \"num_hidden_layers\": 2,\n"
    "  \"num_key_value_heads\": 2,\n  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_parameters\": {\n    \"rope_theta\": 1000000.0,\n    \"rope_type\": \"default\"\n  "
    "},\n"
    "  \"sliding_window\": null,\n  \"tie_word_embeddings\": true,\n"
    "  \"use_sliding_window\": false,\n  \"vocab_size\": 512\n}\n";

static void test_json_transformers5(void) {
    const char *files[2][2] = {{"tiny-llama", k_tiny_llama_v5_json}, {"tiny", k_tiny_v5_json}};
    for (int i = 0; i < 2; i++) {
        cb_lm_config c, p = preset(files[i][0]);
        cb_error err = {0};
        int rc = cb_lm_config_parse(files[i][1], strlen(files[i][1]), "v5.json", &c, &err);
        CB_CHECK_EQ_INT(rc, 0);
        if (rc)
            cb__test_fail(__FILE__, __LINE__, "%s: %s", files[i][0], err.msg);
        else
            check_same(&c, &p, files[i][0]);
    }
    cb_error err;
    CB_CHECK_EQ_INT(parse_edit(k_tiny_llama_v5_json, "\"llama3\"", "\"yarn\"", &err),
                    CB_EUNSUPPORTED);
    CB_CHECK_STR_EQ(err.key, "rope_parameters.rope_type");
    CB_CHECK_EQ_INT(err.line, 30);
    CB_CHECK_EQ_INT(parse_edit(k_tiny_llama_v5_json, "\"rope_theta\": 500000.0",
                               "\"rope_theta\": \"5e5\"", &err),
                    CB_ECONFIG);
    CB_CHECK_STR_EQ(err.key, "rope_parameters.rope_theta");
    CB_CHECK_EQ_INT(parse_edit(k_tiny_v5_json, "\"use_sliding_window\": false",
                               "\"use_sliding_window\": true", &err),
                    CB_EUNSUPPORTED);
    CB_CHECK_STR_EQ(err.key, "use_sliding_window");
    CB_CHECK_EQ_INT(
        parse_edit(k_tiny_v5_json, "\"full_attention\"]", "\"sliding_attention\"]", &err),
        CB_EUNSUPPORTED);
    CB_CHECK_STR_EQ(err.key, "layer_types[1]");
}

/* Sorted "NAME D0 [D1]" lines of c's table, then "params N": llm_model_ref.py's format. */
static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *table_text(const cb_lm_config *c) {
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    char **lines = calloc((size_t)n, sizeof *lines);
    size_t cap = (size_t)n * 128 + 64, len = 0;
    char *text = malloc(cap);
    cb_lm_weights_table(c, tab, n);
    for (int i = 0; i < n; i++) {
        lines[i] = malloc(128);
        int k = snprintf(lines[i], 128, "%s %lld", tab[i].name, (long long)tab[i].dims[0]);
        if (tab[i].ndim == 2)
            snprintf(lines[i] + k, 128 - (size_t)k, " %lld", (long long)tab[i].dims[1]);
    }
    qsort(lines, (size_t)n, sizeof *lines, cmp_str);
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, cap - len, "%s\n", lines[i]);
        free(lines[i]);
    }
    snprintf(text + len, cap - len, "params %lld\n", (long long)cb_lm_config_params(c));
    free(lines);
    free(tab);
    return text;
}

/* Every preset's tensor names, shapes and parameter count equal those of the model that
 * Hugging Face transformers builds from the same config.json (tests/llm_model_ref.py), where a
 * Python with transformers is at hand (.venv-test or .venv-bench); elsewhere this says so and
 * compares nothing (the exact counts above still hold). Checked with transformers 5.25.0. */
static void test_table_vs_transformers(void) {
    const char *pys[2] = {CB_TEST_SRCDIR "/.venv-test/bin/python",
                          CB_TEST_SRCDIR "/.venv-bench/bin/python"};
    const char *py = NULL;
    char cmd[4096];
    for (int i = 0; i < 2 && !py; i++) {
        snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, transformers'", pys[i]);
        if (cb_test_sh(cmd, NULL) == 0)
            py = pys[i];
    }
    if (!py) {
        printf("# transformers not installed in .venv-test or .venv-bench: the tables are not "
               "compared with it\n");
        return;
    }
    const char *dir = cb_test_tmpdir();
    size_t k = (size_t)snprintf(cmd, sizeof cmd, "'%s' '%s/tests/llm_model_ref.py' '%s'", py,
                                CB_TEST_SRCDIR, dir);
    for (int i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.json", k_files[i][0]);
        cb_test_write(dir, name, k_files[i][1]);
        k += (size_t)snprintf(cmd + k, sizeof cmd - k, " '%s'", k_files[i][0]);
    }
    cb_test_sh_ok(cmd);
    for (int i = 0; i < 7; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s.ref", dir, k_files[i][0]);
        char *ref = cb_test_read(path, NULL);
        cb_lm_config c = preset(k_files[i][0]);
        char *mine = table_text(&c);
        if (!ref || strcmp(ref, mine) != 0) { /* show the first line that differs */
            size_t at = 0, line = 0;
            while (ref && ref[at] && ref[at] == mine[at])
                at++;
            while (at > line && mine[at - 1] != '\n')
                at--;
            line = at;
            cb__test_fail(__FILE__, __LINE__, "%s: transformers has \"%.60s\", colobench \"%.60s\"",
                          k_files[i][0], ref ? ref + line : "(nothing)", mine + line);
        }
        free(ref);
        free(mine);
    }
}

/* ---- Weights ------------------------------------------------------------------------------ */

/* Writes every table tensor of w in its in-memory dtype to path; skip (a name or NULL) is left
 * out; extra adds a rotary inv_freq buffer, as some checkpoints carry. */
static void write_weights(const cb_lm_weights *w, const char *path, const char *skip, int extra) {
    const cb_lm_config *c = cb_lm_weights_config(w);
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_safetensors_entry *e = calloc((size_t)n + 1, sizeof *e);
    cb_lm_weights_table(c, tab, n);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (skip && strcmp(tab[i].name, skip) == 0)
            continue;
        e[k].name = tab[i].name;
        e[k].dtype = cb_lm_weights_dtype_of(w, tab[i].kind) == CB_LM_F32 ? CB_SAFETENSORS_F32
                                                                         : CB_SAFETENSORS_BF16;
        e[k].ndim = tab[i].ndim;
        e[k].dims = tab[i].dims;
        e[k].data = cb_lm_weights_get(w, tab[i].kind, tab[i].layer);
        k++;
    }
    static const float inv_freq[4] = {1, 0.5f, 0.25f, 0.125f};
    static const int64_t four = 4;
    if (extra)
        e[k++] = (cb_safetensors_entry){"model.layers.0.self_attn.rotary_emb.inv_freq",
                                        CB_SAFETENSORS_F32, 1, &four, inv_freq};
    cb_error err = {0};
    if (cb_safetensors_write(path, e, k, NULL, 0, &err))
        cb__test_fail(__FILE__, __LINE__, "write %s: %s", path, err.msg);
    free(e);
    free(tab);
}

static cb_lm_weights *make(const char *preset_name, cb_lm_dtype dt, const char *path, uint64_t seed,
                           cb_error *err) {
    cb_lm_config c = preset(preset_name);
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.dtype = dt;
    o.path = path;
    o.seed = seed;
    cb_lm_weights *w = NULL;
    memset(err, 0, sizeof *err);
    int rc = cb_lm_weights_create(&c, &o, &w, err);
    if (rc)
        return NULL;
    return w;
}

/* Every table tensor of a and b has the same bytes (both in one dtype). */
static int same_weights(const cb_lm_weights *a, const cb_lm_weights *b) {
    const cb_lm_config *c = cb_lm_weights_config(a);
    int n = cb_lm_weights_table(c, NULL, 0), diff = 0;
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_lm_weights_table(c, tab, n);
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)(tab[i].dims[0] * (tab[i].ndim == 2 ? tab[i].dims[1] : 1)) *
                       (cb_lm_weights_dtype_of(a, tab[i].kind) == CB_LM_F32 ? 4 : 2);
        if (memcmp(cb_lm_weights_get(a, tab[i].kind, tab[i].layer),
                   cb_lm_weights_get(b, tab[i].kind, tab[i].layer), bytes) != 0) {
            if (!diff)
                cb__test_fail(__FILE__, __LINE__, "%s differs", tab[i].name);
            diff++;
        }
    }
    free(tab);
    return diff == 0;
}

static void test_random(void) {
    cb_error err;
    cb_lm_weights *a = make("tiny", CB_LM_F32, NULL, 42, &err);
    cb_lm_weights *b = make("tiny", CB_LM_F32, NULL, 42, &err);
    cb_lm_weights *d = make("tiny", CB_LM_F32, NULL, 43, &err);
    CB_CHECK(a && b && d);
    if (!a || !b || !d)
        return;
    CB_CHECK_EQ_INT(cb_lm_weights_random(a), 1);
    CB_CHECK(same_weights(a, b)); /* deterministic */
    const float *ea = cb_lm_weights_get(a, CB_LM_W_EMBED, 0);
    const float *ed = cb_lm_weights_get(d, CB_LM_W_EMBED, 0);
    CB_CHECK(memcmp(ea, ed, 64 * sizeof(float)) != 0); /* the seed matters */
    /* normal(0, 0.02): over the 32,768 embedding values, the mean within 6 standard errors
     * (6 * 0.02 / sqrt(32768) = 6.6e-4) and the standard deviation within 2%. */
    double s = 0, s2 = 0, mx = 0;
    for (int i = 0; i < 512 * 64; i++) {
        s += ea[i];
        s2 += (double)ea[i] * ea[i];
        if (fabs(ea[i]) > mx)
            mx = fabs(ea[i]);
    }
    double mean = s / 32768, sd = sqrt(s2 / 32768 - mean * mean);
    CB_CHECK_NEAR(mean, 0, 6.6e-4);
    CB_CHECK_NEAR(sd, 0.02, 0.0004);
    CB_CHECK_CMP_INT(mx * 1e6, <=, 0.02 * 3.47 * 1e6);
    CB_CHECK(cb_lm_weights_get(a, CB_LM_W_LM_HEAD, 0) == (const void *)ea); /* tied */
    const float *norm = cb_lm_weights_get(a, CB_LM_W_ATTN_NORM, 1);
    const float *bias = cb_lm_weights_get(a, CB_LM_W_Q_BIAS, 1);
    CB_CHECK(norm && bias);
    if (norm && bias) {
        CB_CHECK_NEAR(norm[0], 1.0, 0);
        CB_CHECK_NEAR(norm[63], 1.0, 0);
        CB_CHECK_NEAR(bias[63], 0.0, 0);
    }
    CB_CHECK(cb_lm_weights_get(a, CB_LM_W_O_BIAS, 0) == NULL);
    CB_CHECK(cb_lm_weights_get(a, CB_LM_W_Q_NORM, 0) == NULL);
    CB_CHECK(cb_lm_weights_get(a, CB_LM_W_Q, 2) == NULL); /* no such layer */
    /* Arena: the tensors' bytes, each rounded up to 64. 119,360 floats in 4 bytes, plus the
     * padding of the vectors (32-float biases: 128 bytes, already aligned; all aligned). */
    CB_CHECK_EQ_INT(cb_lm_weights_bytes(a), 119360 * 4);
    for (int k = 0; k < CB_LM_W_KINDS; k++) {
        const void *p = cb_lm_weights_get(a, (cb_lm_wkind)k, 0);
        CB_CHECK_EQ_INT(p ? (uintptr_t)p % 64 : 0, 0);
    }
    /* bf16: the same values, rounded. */
    cb_lm_weights *h = make("tiny", CB_LM_BF16, NULL, 42, &err);
    CB_CHECK(h != NULL);
    if (h) {
        const uint16_t *eh = cb_lm_weights_get(h, CB_LM_W_EMBED, 0);
        for (int i = 0; i < 100; i++)
            CB_CHECK_EQ_INT(eh[i], cb_lm_f32_to_bf16(ea[i]));
        CB_CHECK_EQ_INT(cb_lm_weights_dtype_of(h, CB_LM_W_UP), CB_LM_BF16);
        CB_CHECK_EQ_INT(cb_lm_weights_dtype_of(h, CB_LM_W_MLP_NORM), CB_LM_F32);
    }
    cb_lm_weights_destroy(h);
    cb_lm_weights_destroy(a);
    cb_lm_weights_destroy(b);
    cb_lm_weights_destroy(d);
    cb_lm_weights_destroy(NULL);
}

static void test_bf16_rounding(void) {
    CB_CHECK_EQ_INT(cb_lm_f32_to_bf16(1.0f), 0x3F80);
    CB_CHECK_EQ_INT(cb_lm_f32_to_bf16(-2.0f), 0xC000);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1). 1 + 3 * 2^-8: up. */
    CB_CHECK_EQ_INT(cb_lm_f32_to_bf16(1.0f + 0x1p-8f), 0x3F80);
    CB_CHECK_EQ_INT(cb_lm_f32_to_bf16(1.0f + 0x3p-8f), 0x3F82);
    CB_CHECK_EQ_INT(cb_lm_f32_to_bf16(INFINITY), 0x7F80);
    CB_CHECK(isnan(cb_lm_bf16_to_f32(cb_lm_f32_to_bf16(NAN))));
    CB_CHECK_NEAR(cb_lm_bf16_to_f32(0xBF00), -0.5, 0);
}

/* Round trips: float32 and bfloat16 files, each preset family, a single file. */
static void test_load_roundtrip(void) {
    const char *names[] = {"tiny", "tiny-llama", "tiny-qwen3"};
    for (int p = 0; p < 3; p++) {
        cb_error err;
        cb_lm_weights *src = make(names[p], CB_LM_F32, NULL, 7, &err);
        cb_lm_weights *src16 = make(names[p], CB_LM_BF16, NULL, 7, &err);
        const char *f32 = path_in("w32.safetensors"), *b16 = path_in("w16.safetensors");
        write_weights(src, f32, NULL, 1);
        write_weights(src16, b16, NULL, 0);
        cb_lm_weights *a = make(names[p], CB_LM_F32, f32, 0, &err);
        CB_CHECK(a != NULL);
        cb_lm_weights *b = make(names[p], CB_LM_BF16, b16, 0, &err);
        CB_CHECK(b != NULL);
        cb_lm_weights *wide = make(names[p], CB_LM_F32, b16, 0, &err);
        cb_lm_weights *narrow = make(names[p], CB_LM_BF16, f32, 0, &err);
        CB_CHECK(wide && narrow);
        if (a && b && wide && narrow) {
            CB_CHECK_EQ_INT(cb_lm_weights_random(a), 0);
            CB_CHECK(same_weights(a, src));        /* f32 -> f32 bit-exact */
            CB_CHECK(same_weights(b, src16));      /* bf16 -> bf16 bit-exact */
            CB_CHECK(same_weights(narrow, src16)); /* f32 -> bf16 rounds as the random init did */
            const char *first = NULL;
            CB_CHECK_EQ_INT(cb_lm_weights_ignored(a, &first), 1);
            CB_CHECK_STR_EQ(first, "model.layers.0.self_attn.rotary_emb.inv_freq");
            CB_CHECK_EQ_INT(cb_lm_weights_ignored(b, NULL), 0);
            /* bf16 -> f32: exact widening of every value. */
            const uint16_t *h = cb_lm_weights_get(b, CB_LM_W_DOWN, 1);
            const float *f = cb_lm_weights_get(wide, CB_LM_W_DOWN, 1);
            int bad = 0;
            for (int i = 0; i < 64 * 160; i++)
                bad += f[i] != cb_lm_bf16_to_f32(h[i]);
            CB_CHECK_EQ_INT(bad, 0);
            const float *hn = cb_lm_weights_get(b, CB_LM_W_NORM, 0);
            CB_CHECK_NEAR(hn[5], 1.0, 0);
        }
        cb_lm_weights_destroy(a);
        cb_lm_weights_destroy(b);
        cb_lm_weights_destroy(wide);
        cb_lm_weights_destroy(narrow);
        cb_lm_weights_destroy(src);
        cb_lm_weights_destroy(src16);
    }
}

/* A file with F16 tensors converts exactly (values representable in all three formats). */
static void test_load_f16(void) {
    cb_error err;
    cb_lm_weights *src = make("tiny", CB_LM_F32, NULL, 3, &err);
    const cb_lm_config *c = cb_lm_weights_config(src);
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_safetensors_entry *e = calloc((size_t)n, sizeof *e);
    uint16_t **bufs = calloc((size_t)n, sizeof *bufs);
    cb_lm_weights_table(c, tab, n);
    /* Half bit patterns and their values: 0, 2^-10, -2^-9, 1, 2^-24 (the smallest subnormal). */
    static const uint16_t halves[5] = {0x0000, 0x1400, 0x9800, 0x3C00, 0x0001};
    static const float values[5] = {0.0f, 0x1p-10f, -0x1p-9f, 1.0f, 0x1p-24f};
    for (int i = 0; i < n; i++) {
        size_t numel = (size_t)(tab[i].dims[0] * (tab[i].ndim == 2 ? tab[i].dims[1] : 1));
        bufs[i] = calloc(numel, 2);
        for (size_t j = 0; j < numel; j++)
            bufs[i][j] = halves[(j + (size_t)i) % 5];
        e[i] = (cb_safetensors_entry){tab[i].name, CB_SAFETENSORS_F16, tab[i].ndim, tab[i].dims,
                                      bufs[i]};
    }
    const char *path = path_in("w_f16.safetensors");
    CB_CHECK_EQ_INT(cb_safetensors_write(path, e, n, NULL, 0, &err), 0);
    cb_lm_weights *w = make("tiny", CB_LM_F32, path, 0, &err);
    CB_CHECK(w != NULL);
    if (w) {
        int bad = 0;
        for (int i = 0; i < n; i++) {
            const float *f = cb_lm_weights_get(w, tab[i].kind, tab[i].layer);
            size_t numel = (size_t)(tab[i].dims[0] * (tab[i].ndim == 2 ? tab[i].dims[1] : 1));
            for (size_t j = 0; j < numel; j++)
                bad += f[j] != values[(j + (size_t)i) % 5];
        }
        CB_CHECK_EQ_INT(bad, 0);
    }
    cb_lm_weights_destroy(w);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(e);
    free(tab);
    cb_lm_weights_destroy(src);
}

/* Writes w's tensors into two shards and an index.json in dir (made here). */
static void write_sharded(const cb_lm_weights *w, const char *dir) {
    const cb_lm_config *c = cb_lm_weights_config(w);
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_safetensors_entry *e[2] = {calloc((size_t)n, sizeof **e), calloc((size_t)n, sizeof **e)};
    int k[2] = {0, 0};
    cb_lm_weights_table(c, tab, n);
    char index[16384];
    size_t len = (size_t)snprintf(index, sizeof index,
                                  "{\"metadata\": {\"total_size\": 0},\n \"weight_map\": {\n");
    for (int i = 0; i < n; i++) {
        int s = tab[i].layer == 1 || tab[i].layer < 0 ? 1 : 0; /* layer 1 and globals: shard 2 */
        e[s][k[s]++] = (cb_safetensors_entry){
            tab[i].name,
            cb_lm_weights_dtype_of(w, tab[i].kind) == CB_LM_F32 ? CB_SAFETENSORS_F32
                                                                : CB_SAFETENSORS_BF16,
            tab[i].ndim, tab[i].dims, cb_lm_weights_get(w, tab[i].kind, tab[i].layer)};
        len += (size_t)snprintf(index + len, sizeof index - len,
                                "  \"%s\": \"model-0000%d-of-00002.safetensors\",\n", tab[i].name,
                                s + 1);
    }
    snprintf(index + len, sizeof index - len,
             "  \"model.layers.0.self_attn.rotary_emb.inv_freq\": "
             "\"model-00001-of-00002.safetensors\"\n }\n}\n");
    mkdir(dir, 0755);
    char path[600];
    cb_error err = {0};
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/model-0000%d-of-00002.safetensors", dir, s + 1);
        CB_CHECK_EQ_INT(cb_safetensors_write(path, e[s], k[s], NULL, 0, &err), 0);
        free(e[s]);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, index);
    free(tab);
}

static void test_load_sharded(void) {
    cb_error err;
    const char *names[] = {"tiny-llama", "tiny-qwen3"};
    for (int p = 0; p < 2; p++) {
        for (int dt = 0; dt < 2; dt++) {
            cb_lm_weights *src = make(names[p], (cb_lm_dtype)dt, NULL, 11, &err);
            const char *dir = path_in("sharded");
            write_sharded(src, dir);
            char index[600];
            snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
            cb_lm_weights *a = make(names[p], (cb_lm_dtype)dt, index, 0, &err);
            CB_CHECK(a != NULL);
            if (!a)
                cb__test_fail(__FILE__, __LINE__, "%s", err.msg);
            cb_lm_weights *b = make(names[p], (cb_lm_dtype)dt, dir, 0, &err); /* the directory */
            CB_CHECK(b != NULL);
            if (a && b) {
                CB_CHECK(same_weights(a, src));
                CB_CHECK(same_weights(b, src));
                CB_CHECK_EQ_INT(cb_lm_weights_ignored(a, NULL), 1); /* inv_freq */
            }
            cb_lm_weights_destroy(a);
            cb_lm_weights_destroy(b);
            cb_lm_weights_destroy(src);
        }
    }
    /* A shard the index names but that lacks a tensor; an index naming a file outside. */
    cb_lm_weights *src = make("tiny", CB_LM_F32, NULL, 1, &err);
    const char *dir = path_in("sharded");
    write_sharded(src, dir);
    char path[600], index[600];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    write_weights(src, path, "model.layers.0.mlp.up_proj.weight", 0); /* replaces shard 1 */
    CB_CHECK(make("tiny", CB_LM_F32, index, 0, &err) == NULL);
    CB_CHECK_CONTAINS(err.msg, "model.layers.0.mlp.up_proj.weight: missing from");
    CB_CHECK_CONTAINS(err.msg, "(the config needs [160, 64])");
    CB_CHECK_CONTAINS(err.file, "model-00001-of-00002.safetensors");
    write_text(index, "{\"weight_map\": {\"model.embed_tokens.weight\": \"../x.safetensors\"}}");
    CB_CHECK(make("tiny", CB_LM_F32, index, 0, &err) == NULL);
    CB_CHECK_STR_EQ(err.key, "model.embed_tokens.weight");
    CB_CHECK_EQ_INT(err.line, 1);
    write_text(index, "{\"weight_map\": {}}");
    CB_CHECK(make("tiny", CB_LM_F32, index, 0, &err) == NULL);
    CB_CHECK_CONTAINS(err.msg, "model.embed_tokens.weight: missing from the index's weight_map");
    write_text(index, "{\"weight_map\": []}");
    CB_CHECK(make("tiny", CB_LM_F32, index, 0, &err) == NULL);
    CB_CHECK_STR_EQ(err.key, "weight_map");
    cb_lm_weights_destroy(src);
}

static void test_load_errors(void) {
    cb_error err;
    /* A file of the tiny shape loaded with a config whose MLP is wider. */
    cb_lm_weights *src = make("tiny", CB_LM_F32, NULL, 5, &err);
    const char *path = path_in("tiny.safetensors");
    write_weights(src, path, NULL, 0);
    cb_lm_config c = preset("tiny");
    c.intermediate = 192;
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.path = path;
    cb_lm_weights *w = NULL;
    memset(&err, 0, sizeof err);
    CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &w, &err), CB_EINVAL);
    CB_CHECK(w == NULL);
    CB_CHECK_STR_EQ(err.msg, "model.layers.0.mlp.gate_proj.weight: file has [160, 64], the "
                             "config needs [192, 64]");
    CB_CHECK_STR_EQ(err.file, path);
    /* The brief's own example: the hidden size differs. */
    c = preset("tiny");
    c.hidden = 96;
    c.head_dim = 24;
    CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &w, &err), CB_EINVAL);
    CB_CHECK_STR_EQ(err.msg, "model.embed_tokens.weight: file has [512, 64], the config needs "
                             "[512, 96]");
    /* Missing tensor; an untied config wants lm_head.weight. */
    write_weights(src, path, "model.layers.1.self_attn.v_proj.bias", 0);
    CB_CHECK(make("tiny", CB_LM_F32, path, 0, &err) == NULL);
    CB_CHECK_CONTAINS(err.msg, "model.layers.1.self_attn.v_proj.bias: missing from ");
    CB_CHECK_CONTAINS(err.msg, "(the config needs [32])");
    write_weights(src, path, NULL, 0);
    c = preset("tiny");
    c.tied = 0;
    CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &w, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "lm_head.weight: missing from");
    CB_CHECK_CONTAINS(err.msg, "(the config needs [512, 64])");
    c = preset("tiny");
    /* Not a file; a bad precision; a config that fails its checks. */
    CB_CHECK(make("tiny", CB_LM_F32, path_in("nothing.safetensors"), 0, &err) == NULL);
    CB_CHECK_CMP_INT(err.code, <, 0);
    o.path = NULL;
    o.dtype = (cb_lm_dtype)7;
    CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &w, &err), CB_EINVAL);
    o.dtype = CB_LM_F32;
    c.n_kv_heads = 3;
    CB_CHECK_EQ_INT(cb_lm_weights_create(&c, &o, &w, &err), CB_ECONFIG);
    cb_lm_weights_destroy(src);
}

/* A file of the wrong dtype names the tensor and the dtype. */
static void test_load_dtype(void) {
    cb_error err;
    cb_lm_weights *src = make("tiny", CB_LM_F32, NULL, 5, &err);
    const cb_lm_config *c = cb_lm_weights_config(src);
    int n = cb_lm_weights_table(c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_safetensors_entry *e = calloc((size_t)n, sizeof *e);
    cb_lm_weights_table(c, tab, n);
    int32_t *ints = calloc(64, sizeof *ints);
    for (int i = 0; i < n; i++) {
        int norm = strcmp(tab[i].name, "model.norm.weight") == 0;
        e[i] = (cb_safetensors_entry){
            tab[i].name, norm ? CB_SAFETENSORS_I32 : CB_SAFETENSORS_F32, tab[i].ndim, tab[i].dims,
            norm ? (const void *)ints : cb_lm_weights_get(src, tab[i].kind, tab[i].layer)};
    }
    const char *path = path_in("ints.safetensors");
    CB_CHECK_EQ_INT(cb_safetensors_write(path, e, n, NULL, 0, &err), 0);
    CB_CHECK(make("tiny", CB_LM_F32, path, 0, &err) == NULL);
    CB_CHECK_STR_EQ(err.msg, "model.norm.weight: dtype I32 is not a float type (F32, BF16, F16, "
                             "F64)");
    free(ints);
    free(e);
    free(tab);
    cb_lm_weights_destroy(src);
}

/* Every allocation failure is CB_ENOMEM with nothing leaked (ASan checks the leaks). */
static void test_alloc_failures(void) {
    cb_error err;
    cb_lm_weights *src = make("tiny", CB_LM_F32, NULL, 9, &err);
    const char *dir = path_in("sharded_oom");
    write_sharded(src, dir);
    char index[600];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    int ok = 0;
    for (long k = 1; k < 200 && !ok; k++) {
        cb__alloc_fail_after(k);
        cb_lm_weights *w = make("tiny", CB_LM_F32, index, 0, &err);
        cb__alloc_fail_after(0);
        if (w)
            ok = 1;
        else
            CB_CHECK_EQ_INT(err.code, CB_ENOMEM);
        cb_lm_weights_destroy(w);
    }
    CB_CHECK(ok);
    cb_lm_weights_destroy(src);
}

int main(void) {
    g_dir = cb_test_tmpdir();
    CB_RUN(test_preset_params);
    CB_RUN(test_preset_names);
    CB_RUN(test_table);
    CB_RUN(test_json_matches_presets);
    CB_RUN(test_table_vs_transformers);
    CB_RUN(test_json_defaults);
    CB_RUN(test_json_errors);
    CB_RUN(test_json_transformers5);
    CB_RUN(test_bf16_rounding);
    CB_RUN(test_random);
    CB_RUN(test_load_roundtrip);
    CB_RUN(test_load_f16);
    CB_RUN(test_load_sharded);
    CB_RUN(test_load_errors);
    CB_RUN(test_load_dtype);
    CB_RUN(test_alloc_failures);
    return cb_test_done();
}
