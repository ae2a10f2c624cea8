/* llm/lm_config.c - decoder model configurations: presets, config.json, derived sizes (see
 * lm_config.h for the contract).
 *
 * Design: one table of the numeric config.json keys (name, kind, field, bounds, whether
 * required) drives parsing, type checks and the bounds in error messages; the few keys with a
 * structure of their own (model_type, rope_scaling, token ids, torch_dtype) are read by hand
 * after it. Presets are records written out from the published config.json files, each citing
 * its Hugging Face repository; every preset passes cb_lm_config_check like a loaded file.
 * Thread-safety: no state; every function may run on many threads at once. */
#include "llm/lm_config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/cfgtree.h"
#include "llm/jdom.h"

const char *cb_lm_config_arch_name(cb_lm_arch arch) {
    switch (arch) {
    case CB_LM_LLAMA:
        return "llama";
    case CB_LM_QWEN2:
        return "qwen2";
    case CB_LM_QWEN3:
        return "qwen3";
    }
    return "?";
}

/* ---- Presets ------------------------------------------------------------------------------ */

/* The attention variants of an architecture, as its model code sets them. */
static void set_variants(cb_lm_config *c, int attention_bias) {
    c->qkv_bias = c->arch == CB_LM_QWEN2 || attention_bias; /* Qwen2: q, k, v biased, o never */
    c->o_bias = c->arch != CB_LM_QWEN2 && attention_bias;
    c->qk_norm = c->arch == CB_LM_QWEN3;
}

/* One row per preset; rope_scaling llama3 where factor is non-zero. */
typedef struct preset {
    const char *name;
    cb_lm_arch arch;
    int32_t hidden, layers, heads, kv_heads, head_dim, ffn, vocab, max_pos;
    double eps, theta;
    int tied;
    int32_t bos, n_eos, eos[3];
    double factor, low, high;
    int32_t orig_max_pos;
    cb_lm_file_dtype dtype;
} preset;

/* Shapes as published. The Instruct/Chat repositories share them with the base models and carry
 * the end-of-turn tokens a chat run stops on, so their eos ids are the ones used.
 *  - qwen2.5-0.5b: Qwen/Qwen2.5-0.5B-Instruct, config.json (Qwen2ForCausalLM).
 *  - llama-3.2-1b: meta-llama/Llama-3.2-1B-Instruct, config.json (LlamaForCausalLM).
 *  - tinyllama-1.1b: TinyLlama/TinyLlama-1.1B-Chat-v1.0, config.json (LlamaForCausalLM).
 *  - qwen3-0.6b: Qwen/Qwen3-0.6B, config.json (Qwen3ForCausalLM; head_dim 128 makes q 2048
 *    wide on a 1024 hidden).
 *  - tiny, tiny-llama, tiny-qwen3: test sizes of each family (no published model): GQA 4:2,
 *    qwen2's QKV bias and tied embedding; llama3 rope scaling and a separate lm_head; qwen3's
 *    q/k norm with head_dim above hidden / heads. */
static const preset k_presets[] = {
    /* clang-format off */
    /* name, arch, hidden_size, layers, heads, KV heads, head_dim, intermediate_size, vocab,
     * max_position_embeddings, rms_norm_eps, rope_theta, tie_word_embeddings;
     * bos, how many eos, eos ids, llama3 factor, low and high freq factors, original max
     * positions, torch_dtype. */
    {"qwen2.5-0.5b",   CB_LM_QWEN2, 896,  24, 14, 2, 64,  4864, 151936, 32768,  1e-6, 1e6,   1,
                     151643, 1, {151645},                 0,  0, 0, 0,    CB_LM_DTYPE_BF16},
    {"llama-3.2-1b",   CB_LM_LLAMA, 2048, 16, 32, 8, 64,  8192, 128256, 131072, 1e-5, 5e5,   1,
                     128000, 3, {128001, 128008, 128009}, 32, 1, 4, 8192, CB_LM_DTYPE_BF16},
    {"tinyllama-1.1b", CB_LM_LLAMA, 2048, 22, 32, 4, 64,  5632, 32000,  2048,   1e-5, 1e4,   0,
                     1,      1, {2},                      0,  0, 0, 0,    CB_LM_DTYPE_BF16},
    {"qwen3-0.6b",     CB_LM_QWEN3, 1024, 28, 16, 8, 128, 3072, 151936, 40960,  1e-6, 1e6,   1,
                     151643, 1, {151645},                 0,  0, 0, 0,    CB_LM_DTYPE_BF16},
    {"tiny",           CB_LM_QWEN2, 64,   2,  4,  2, 16,  160,  512,    1024,   1e-6, 1e6,   1,
                     -1,     1, {1},                      0,  0, 0, 0,    CB_LM_DTYPE_F32},
    {"tiny-llama",     CB_LM_LLAMA, 64,   2,  4,  2, 16,  160,  512,    1024,   1e-5, 5e5,   0,
                     0,      1, {1},                      8,  1, 4, 128,  CB_LM_DTYPE_F32},
    {"tiny-qwen3",     CB_LM_QWEN3, 64,   2,  4,  2, 32,  160,  512,    1024,   1e-6, 1e6,   1,
                     -1,     1, {1},                      0,  0, 0, 0,    CB_LM_DTYPE_F32},
    /* clang-format on */
};
#define N_PRESETS ((int)(sizeof k_presets / sizeof k_presets[0]))

static void from_preset(const preset *p, cb_lm_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = p->arch;
    c->hidden = p->hidden;
    c->n_layers = p->layers;
    c->n_heads = p->heads;
    c->n_kv_heads = p->kv_heads;
    c->head_dim = p->head_dim;
    c->intermediate = p->ffn;
    c->vocab = p->vocab;
    c->max_positions = p->max_pos;
    c->rms_eps = p->eps;
    c->rope_theta = p->theta;
    c->rope_llama3 = p->factor > 0;
    c->rope_factor = p->factor;
    c->rope_low_freq_factor = p->low;
    c->rope_high_freq_factor = p->high;
    c->rope_original_max_positions = p->orig_max_pos;
    c->tied = p->tied;
    c->bos_id = p->bos;
    c->n_eos = p->n_eos;
    for (int i = 0; i < p->n_eos; i++)
        c->eos_ids[i] = p->eos[i];
    c->file_dtype = p->dtype;
    set_variants(c, 0);
}

const char *cb_lm_config_preset_name(int i) {
    return i >= 0 && i < N_PRESETS ? k_presets[i].name : NULL;
}

static void set_name(cb_lm_config *c, const char *name) {
    snprintf(c->name, sizeof c->name, "%s", name);
}

int cb_lm_config_preset(const char *name, cb_lm_config *out, cb_error *err) {
    for (int i = 0; i < N_PRESETS; i++) {
        if (strcmp(name, k_presets[i].name) == 0) {
            from_preset(&k_presets[i], out);
            set_name(out, name);
            return cb_lm_config_check(out, err);
        }
    }
    char list[512];
    size_t k = 0;
    for (int i = 0; i < N_PRESETS && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", k_presets[i].name);
    return cb_error_set(err, CB_ENOENT, "unknown model preset \"%s\" (presets: %s)", name, list);
}

/* ---- Checks and sizes --------------------------------------------------------------------- */

int cb_lm_config_check(const cb_lm_config *c, cb_error *err) {
    const char *bad = NULL;
    if (c->hidden < 1 || c->hidden > CB_LM_HIDDEN_MAX)
        bad = "hidden_size out of range";
    else if (c->n_layers < 1 || c->n_layers > CB_LM_LAYERS_MAX)
        bad = "num_hidden_layers out of range";
    else if (c->n_heads < 1 || c->n_heads > CB_LM_HEADS_MAX)
        bad = "num_attention_heads out of range";
    else if (c->n_kv_heads < 1 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        bad = "num_key_value_heads must divide num_attention_heads";
    else if (c->head_dim < 2 || c->head_dim > CB_LM_HEAD_DIM_MAX || c->head_dim % 2)
        bad = "head_dim must be even, in [2, 1024]";
    else if (c->intermediate < 1 || c->intermediate > CB_LM_INTERMEDIATE_MAX)
        bad = "intermediate_size out of range";
    else if (c->vocab < 1 || c->vocab > CB_LM_VOCAB_MAX)
        bad = "vocab_size out of range";
    else if (c->max_positions < 1 || c->max_positions > CB_LM_POSITIONS_MAX)
        bad = "max_position_embeddings out of range";
    else if (!(c->rms_eps > 0 && c->rms_eps < 1))
        bad = "rms_norm_eps must be in (0, 1)";
    else if (!(c->rope_theta > 1 && c->rope_theta < 1e12))
        bad = "rope_theta must be in (1, 1e12)";
    else if (c->rope_llama3 && !(c->rope_factor >= 1 && c->rope_low_freq_factor > 0 &&
                                 c->rope_high_freq_factor > c->rope_low_freq_factor &&
                                 c->rope_original_max_positions >= 1))
        bad = "rope_scaling llama3 needs factor >= 1, 0 < low_freq_factor < high_freq_factor and "
              "original_max_position_embeddings >= 1";
    else if (c->n_eos < 0 || c->n_eos > CB_LM_EOS_MAX)
        bad = "too many eos_token_id values";
    if (!bad) {
        for (int i = 0; i < c->n_eos && !bad; i++)
            if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab)
                bad = "eos_token_id out of the vocabulary";
        if (c->bos_id >= c->vocab)
            bad = "bos_token_id out of the vocabulary";
    }
    return bad ? cb_error_set(err, CB_ECONFIG, "model %s: %s", c->name, bad) : 0;
}

int64_t cb_lm_config_layer_params(const cb_lm_config *c) {
    int64_t h = c->hidden, q = cb_lm_config_q_dim(c), kv = cb_lm_config_kv_dim(c);
    int64_t n = q * h + 2 * kv * h + h * q; /* q, k, v, o */
    if (c->qkv_bias)
        n += q + 2 * kv;
    if (c->o_bias)
        n += h;
    if (c->qk_norm)
        n += 2 * c->head_dim;
    n += 3 * h * c->intermediate; /* gate, up, down */
    return n + 2 * h;             /* the two RMSNorms */
}

int64_t cb_lm_config_params(const cb_lm_config *c) {
    int64_t embed = c->vocab * c->hidden;
    return embed * (c->tied ? 1 : 2) + c->n_layers * cb_lm_config_layer_params(c) + c->hidden;
}

/* ---- config.json ------------------------------------------------------------------------- */

typedef struct ctx {
    const char *name, *text;
    size_t len;
    cb_error *err;
} ctx;

static int fail(const ctx *x, const cb__jdom_node *at, const char *key, int code, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));
static int fail(const ctx *x, const cb__jdom_node *at, const char *key, int code, const char *fmt,
                ...) {
    char msg[CB_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cb_error_set(x->err, code, "%s", msg);
    int line = 1, col = 1;
    if (at)
        cb__jdom_linecol(x->text, x->len, at->off, &line, &col);
    cb_error_at(x->err, x->name, line, col);
    cb_error_key(x->err, key);
    return code;
}

/* What a node is, for "got ..." in messages. */
static const char *got(const cb__jdom_node *n, char *buf, size_t cap) {
    switch (n->type) {
    case CB_JDOM_NULL:
        return "null";
    case CB_JDOM_BOOL:
        return n->v.b ? "true" : "false";
    case CB_JDOM_NUM:
        snprintf(buf, cap, "%.17g", n->v.num);
        return buf;
    case CB_JDOM_STR:
        snprintf(buf, cap, "\"%.48s\"", n->v.str);
        return buf;
    case CB_JDOM_ARR:
        return "an array";
    case CB_JDOM_OBJ:
        return "an object";
    }
    return "?";
}

static int is_null(const cb__jdom_node *n) { return !n || n->type == CB_JDOM_NULL; }

/* An integer in [lo, hi] (a JSON number with no fraction). */
static int get_int(const ctx *x, const cb__jdom_node *n, const char *key, int64_t lo, int64_t hi,
                   int64_t *out) {
    char b[64];
    if (n->type != CB_JDOM_NUM || n->v.num != floor(n->v.num) || n->v.num < (double)lo ||
        n->v.num > (double)hi)
        return fail(x, n, key, CB_ECONFIG, "expected an integer in [%lld, %lld], got %s",
                    (long long)lo, (long long)hi, got(n, b, sizeof b));
    *out = (int64_t)n->v.num;
    return 0;
}

static int get_num(const ctx *x, const cb__jdom_node *n, const char *key, double *out) {
    char b[64];
    if (n->type != CB_JDOM_NUM)
        return fail(x, n, key, CB_ECONFIG, "expected a number, got %s", got(n, b, sizeof b));
    *out = n->v.num;
    return 0;
}

static int get_bool(const ctx *x, const cb__jdom_node *n, const char *key, int *out) {
    char b[64];
    if (n->type != CB_JDOM_BOOL)
        return fail(x, n, key, CB_ECONFIG, "expected true or false, got %s", got(n, b, sizeof b));
    *out = n->v.b;
    return 0;
}

/* The numeric and boolean keys: one row each. Optional keys keep the model_type's default. */
typedef enum { K_INT, K_NUM, K_BOOL } kind;
typedef struct field {
    const char *key;
    kind k;
    size_t off;
    int64_t lo, hi; /* K_INT bounds */
    int required;
} field;

#define F(key, k, member, lo, hi, req)                                                             \
    { key, k, offsetof(cb_lm_config, member), lo, hi, req }
static const field k_fields[] = {
    F("hidden_size", K_INT, hidden, 1, CB_LM_HIDDEN_MAX, 1),
    F("num_hidden_layers", K_INT, n_layers, 1, CB_LM_LAYERS_MAX, 1),
    F("num_attention_heads", K_INT, n_heads, 1, CB_LM_HEADS_MAX, 1),
    F("num_key_value_heads", K_INT, n_kv_heads, 1, CB_LM_HEADS_MAX, 0),
    F("head_dim", K_INT, head_dim, 2, CB_LM_HEAD_DIM_MAX, 0),
    F("intermediate_size", K_INT, intermediate, 1, CB_LM_INTERMEDIATE_MAX, 1),
    F("vocab_size", K_INT, vocab, 1, CB_LM_VOCAB_MAX, 1),
    F("max_position_embeddings", K_INT, max_positions, 1, CB_LM_POSITIONS_MAX, 0),
    F("rms_norm_eps", K_NUM, rms_eps, 0, 0, 0),
    F("rope_theta", K_NUM, rope_theta, 0, 0, 0),
    F("tie_word_embeddings", K_BOOL, tied, 0, 0, 0),
};
#undef F

static int read_fields(const ctx *x, const cb__jdom_node *root, cb_lm_config *c) {
    for (size_t i = 0; i < sizeof k_fields / sizeof k_fields[0]; i++) {
        const field *f = &k_fields[i];
        const cb__jdom_node *n = cb__jdom_get(root, f->key);
        if (is_null(n)) {
            if (f->required)
                return fail(x, root, f->key, CB_ECONFIG, "missing (required for %s)",
                            cb_lm_config_arch_name(c->arch));
            continue;
        }
        char *p = (char *)c + f->off;
        int rc = f->k == K_INT   ? get_int(x, n, f->key, f->lo, f->hi, (int64_t *)(void *)p)
                 : f->k == K_NUM ? get_num(x, n, f->key, (double *)(void *)p)
                                 : get_bool(x, n, f->key, (int *)(void *)p);
        if (rc)
            return rc;
    }
    return 0;
}

static int read_model_type(const ctx *x, const cb__jdom_node *root, cb_lm_config *c) {
    const cb__jdom_node *n = cb__jdom_get(root, "model_type");
    char b[64];
    if (!n)
        return fail(x, root, "model_type", CB_ECONFIG, "missing (llama, qwen2 or qwen3)");
    if (n->type != CB_JDOM_STR)
        return fail(x, n, "model_type", CB_ECONFIG, "expected a string, got %s",
                    got(n, b, sizeof b));
    for (int a = CB_LM_LLAMA; a <= CB_LM_QWEN3; a++) {
        if (strcmp(n->v.str, cb_lm_config_arch_name((cb_lm_arch)a)) == 0) {
            c->arch = (cb_lm_arch)a;
            return 0;
        }
    }
    return fail(x, n, "model_type", CB_EUNSUPPORTED,
                "unknown model_type %s (supported: llama, qwen2, qwen3)", got(n, b, sizeof b));
}

/* transformers' defaults for keys a file leaves out. */
static void set_defaults(cb_lm_config *c) {
    int llama = c->arch == CB_LM_LLAMA;
    c->max_positions = llama ? 2048 : 32768;
    c->rms_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->bos_id = llama ? 1 : -1; /* LlamaConfig: bos 1, eos 2; Qwen2/3Config: none */
    c->n_eos = llama;
    c->eos_ids[0] = llama ? 2 : 0;
}

/* Rotary settings: transformers 5's "rope_parameters" {rope_theta, rope_type, ...} when
 * present, else the older top-level rope_theta (read with the table) and "rope_scaling". */
static int read_rope(const ctx *x, const cb__jdom_node *root, cb_lm_config *c) {
    const char *name = "rope_parameters";
    const cb__jdom_node *rs = cb__jdom_get(root, name), *t;
    char b[64], key[96];
    int rc;
    if (is_null(rs))
        rs = cb__jdom_get(root, name = "rope_scaling");
    if (is_null(rs))
        return 0;
    if (rs->type != CB_JDOM_OBJ)
        return fail(x, rs, name, CB_ECONFIG, "expected null or an object, got %s",
                    got(rs, b, sizeof b));
    const cb__jdom_node *theta = cb__jdom_get(rs, "rope_theta");
    snprintf(key, sizeof key, "%s.rope_theta", name);
    if (!is_null(theta) && (rc = get_num(x, theta, key, &c->rope_theta)))
        return rc;
    snprintf(key, sizeof key, "%s.rope_type", name);
    t = cb__jdom_get(rs, "rope_type");
    if (!t) {
        t = cb__jdom_get(rs, "type"); /* the older name */
        snprintf(key, sizeof key, "%s.type", name);
    }
    if (!t || t->type != CB_JDOM_STR)
        return fail(x, t ? t : rs, key, CB_ECONFIG, "expected a string (\"llama3\"), got %s",
                    t ? got(t, b, sizeof b) : "nothing");
    if (strcmp(t->v.str, "default") == 0)
        return 0;
    if (strcmp(t->v.str, "llama3") != 0)
        return fail(x, t, key, CB_EUNSUPPORTED,
                    "rope scaling %s is not supported (null, \"default\" or \"llama3\")",
                    got(t, b, sizeof b));
    static const char *const keys[4] = {"factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings"};
    double *dst[3] = {&c->rope_factor, &c->rope_low_freq_factor, &c->rope_high_freq_factor};
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.%s", name, keys[i]);
        const cb__jdom_node *n = cb__jdom_get(rs, keys[i]);
        if (!n)
            return fail(x, rs, key, CB_ECONFIG, "missing (required by rope_type llama3)");
        rc = i < 3 ? get_num(x, n, key, dst[i])
                   : get_int(x, n, key, 1, CB_LM_POSITIONS_MAX, &c->rope_original_max_positions);
        if (rc)
            return rc;
    }
    c->rope_llama3 = 1;
    return 0;
}

/* Sliding-window attention (Qwen2/3's use_sliding_window, layer_types other than
 * "full_attention") is refused: every layer here attends to the whole context. */
static int read_attention_kind(const ctx *x, const cb__jdom_node *root) {
    const cb__jdom_node *n = cb__jdom_get(root, "use_sliding_window");
    int on = 0, rc;
    char b[64], key[48];
    if (!is_null(n) && (rc = get_bool(x, n, "use_sliding_window", &on)))
        return rc;
    if (on)
        return fail(x, n, "use_sliding_window", CB_EUNSUPPORTED,
                    "sliding-window attention is not supported");
    n = cb__jdom_get(root, "layer_types");
    if (is_null(n))
        return 0;
    if (n->type != CB_JDOM_ARR)
        return fail(x, n, "layer_types", CB_ECONFIG, "expected an array, got %s",
                    got(n, b, sizeof b));
    for (size_t i = 0; i < n->n; i++) {
        const cb__jdom_node *e = &n->v.items[i];
        if (e->type == CB_JDOM_STR && strcmp(e->v.str, "full_attention") == 0)
            continue;
        snprintf(key, sizeof key, "layer_types[%zu]", i);
        return fail(x, e, key, CB_EUNSUPPORTED,
                    "only \"full_attention\" layers are supported, got %s", got(e, b, sizeof b));
    }
    return 0;
}

static int read_token_ids(const ctx *x, const cb__jdom_node *root, cb_lm_config *c) {
    int64_t v = 0;
    const cb__jdom_node *n = cb__jdom_get(root, "bos_token_id");
    if (!is_null(n)) {
        if (get_int(x, n, "bos_token_id", 0, c->vocab - 1, &v))
            return CB_ECONFIG;
        c->bos_id = (int32_t)v;
    } else if (n)
        c->bos_id = -1; /* null: none */
    n = cb__jdom_get(root, "eos_token_id");
    if (n && n->type == CB_JDOM_NULL)
        c->n_eos = c->eos_ids[0] = 0; /* null: none */
    if (is_null(n))
        return 0;
    const cb__jdom_node *items = n;
    size_t count = 1;
    if (n->type == CB_JDOM_ARR) {
        items = n->v.items;
        count = n->n;
        if (count > CB_LM_EOS_MAX)
            return fail(x, n, "eos_token_id", CB_ECONFIG, "more than %d ids", CB_LM_EOS_MAX);
    }
    for (size_t i = 0; i < count; i++) {
        char key[48];
        if (n->type == CB_JDOM_ARR)
            snprintf(key, sizeof key, "eos_token_id[%zu]", i);
        else
            snprintf(key, sizeof key, "eos_token_id");
        if (get_int(x, &items[i], key, 0, c->vocab - 1, &v))
            return CB_ECONFIG;
        c->eos_ids[i] = (int32_t)v;
    }
    c->n_eos = (int)count;
    return 0;
}

/* attention_bias, mlp_bias, hidden_act, torch_dtype / dtype. */
static int read_variants(const ctx *x, const cb__jdom_node *root, cb_lm_config *c) {
    const cb__jdom_node *n = cb__jdom_get(root, "attention_bias");
    int bias = 0, rc;
    char b[64];
    if (!is_null(n) && (rc = get_bool(x, n, "attention_bias", &bias)))
        return rc;
    set_variants(c, bias);
    n = cb__jdom_get(root, "mlp_bias");
    if (!is_null(n) && (rc = get_bool(x, n, "mlp_bias", &bias)))
        return rc;
    if (!is_null(n) && bias)
        return fail(x, n, "mlp_bias", CB_EUNSUPPORTED, "MLP biases are not supported");
    n = cb__jdom_get(root, "hidden_act");
    if (!is_null(n) && (n->type != CB_JDOM_STR || strcmp(n->v.str, "silu") != 0))
        return fail(x, n, "hidden_act", CB_EUNSUPPORTED, "expected \"silu\", got %s",
                    got(n, b, sizeof b));
    const char *dkey = "torch_dtype";
    n = cb__jdom_get(root, dkey);
    if (is_null(n))
        n = cb__jdom_get(root, dkey = "dtype");
    if (is_null(n))
        return 0;
    static const char *const names[] = {"float32", "bfloat16", "float16"};
    for (int i = 0; i < 3 && n->type == CB_JDOM_STR; i++) {
        if (strcmp(n->v.str, names[i]) == 0) {
            c->file_dtype = (cb_lm_file_dtype)(CB_LM_DTYPE_F32 + i);
            return 0;
        }
    }
    return fail(x, n, dkey, CB_ECONFIG, "expected \"float32\", \"bfloat16\" or \"float16\", got %s",
                got(n, b, sizeof b));
}

int cb_lm_config_parse(const char *text, size_t len, const char *name, cb_lm_config *out,
                       cb_error *err) {
    ctx x = {name, text, len, err};
    cb__jdom *d = NULL;
    int rc = cb__jdom_parse(text, len, name, &d, err);
    if (rc == CB_EINVAL && err)
        err->code = CB_ECONFIG; /* a syntax error is a config error */
    if (rc)
        return rc == CB_EINVAL ? CB_ECONFIG : rc;
    const cb__jdom_node *root = cb__jdom_root(d);
    cb_lm_config c;
    memset(&c, 0, sizeof c);
    set_name(&c, name);
    if (root->type != CB_JDOM_OBJ) {
        rc = fail(&x, root, "", CB_ECONFIG, "expected an object at the top");
    } else if (!(rc = read_model_type(&x, root, &c))) {
        set_defaults(&c);
        if (!(rc = read_fields(&x, root, &c)) && !(rc = read_rope(&x, root, &c)) &&
            !(rc = read_attention_kind(&x, root)) && !(rc = read_variants(&x, root, &c))) {
            if (!cb__jdom_get(root, "num_key_value_heads"))
                c.n_kv_heads = c.n_heads;
            if (!cb__jdom_get(root, "head_dim") || is_null(cb__jdom_get(root, "head_dim"))) {
                if (c.hidden % c.n_heads)
                    rc = fail(&x, root, "head_dim", CB_ECONFIG,
                              "missing, and hidden_size %lld is not a multiple of "
                              "num_attention_heads %lld",
                              (long long)c.hidden, (long long)c.n_heads);
                c.head_dim = c.hidden / c.n_heads;
            }
            if (!rc)
                rc = read_token_ids(&x, root, &c);
            if (!rc && (rc = cb_lm_config_check(&c, err)))
                cb_error_at(err, name, 1, 1);
        }
    }
    cb__jdom_free(d);
    if (!rc)
        *out = c;
    return rc;
}

int cb_lm_config_load(const char *path, cb_lm_config *out, cb_error *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = cb_doc_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    rc = cb_lm_config_parse(text, len, path, out, err);
    cb_free(text);
    return rc;
}

int cb_lm_config_resolve(const char *model, cb_lm_config *out, cb_error *err) {
    for (int i = 0; i < N_PRESETS; i++)
        if (strcmp(model, k_presets[i].name) == 0)
            return cb_lm_config_preset(model, out, err);
    struct stat st;
    char path[4096];
    int exists = stat(model, &st) == 0;
    if (!exists && !strchr(model, '/') && !strstr(model, ".json"))
        return cb_lm_config_preset(model, out, err); /* a mistyped preset: names the presets */
    if (exists && S_ISDIR(st.st_mode)) {             /* a model directory */
        int n = snprintf(path, sizeof path, "%s/config.json", model);
        if (n < 0 || (size_t)n >= sizeof path)
            return cb_error_set(err, CB_EINVAL, "model: path longer than %zu bytes", sizeof path);
        return cb_lm_config_load(path, out, err);
    }
    return cb_lm_config_load(model, out, err);
}
