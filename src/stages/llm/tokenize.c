/* stages/llm/tokenize.c - llm.tokenize and llm.detokenize: the tokenizer as pipeline stages.
 *
 * What: llm.tokenize turns the text of each request (llm/request.h, from llm.prompts) into
 * prompt ids with a byte-level BPE tokenizer (llm/tokenizer.h): a Hugging Face tokenizer.json
 * (`tokenizer`) or a tiktoken rank file (`tiktoken` + `pattern` + `special_tokens`). With
 * `chat_template` (llama3 or chatml) the text is first wrapped as one user message followed by
 * the generation prompt (cb_tok_chat_render), and special-token text is then encoded as the
 * special ids (allow_special defaults to true with a template: the template writes "<|im_start|>"
 * and friends as text, which must become their ids, as `apply_chat_template(tokenize=True)` does;
 * without a template it defaults to false, so a prompt that happens to contain "<|endoftext|>"
 * is encoded as ordinary text, as tiktoken's encode_ordinary does). The query gets a new payload
 * with the ids and the text that was encoded (the rendered conversation with a template), so
 * decode(prompt ids) == text holds for every tokenized request. A request that already has
 * prompt ids passes through unchanged (tokenizing twice is a no-op; a template never wraps
 * twice). A prompt longer than max_prompt_tokens is an error naming the request (truncating
 * would silently change the workload).
 * llm.detokenize decodes the output ids of each request (and the prompt ids with `prompt: true`)
 * and reports the decoded bytes; `check_roundtrip: true` also compares the decoded prompt with
 * the request's text (an error naming the request and the first differing byte). The payload
 * passes through unchanged: the stage exists so that a pipeline shows where detokenization time
 * goes.
 *
 * Design: one tokenizer per stage instance, loaded in prepare (untimed) and read-only after; the
 * parameter rows naming it are shared by both tables (TOKENIZER_PARAMS). Per query nothing is
 * allocated but the new payload: the ids, the rendered template and the decoded text go into
 * per-instance scratch buffers that grow geometrically up to their limits and are kept.
 *
 * Thread-safety: one instance per worker; run() of one instance is never concurrent, so the
 * scratch buffers need no lock; cb_tok is immutable. Ownership: the instance owns its tokenizer
 * and scratch (freed in destroy); llm.tokenize releases the query's old payload after making
 * the new one (on error the query keeps its payload); llm.detokenize only reads.
 */
#include <stdio.h>
#include <string.h>

#include "colobench/stage.h"
#include "llm/request.h"
#include "llm/tokenizer.h"
#include "stages/llm/toksrc.h"
#include "stages/util/util.h"

/* ---- parameters shared by both stages: stages/llm/toksrc.h ------------------------------------ */

/* Decoded text of one request at most (ids x 4096 bytes a token could be far more). */
#define DETOK_MAX_BYTES ((size_t)256 << 20)

/* Makes *buf hold at least need elements of size elem, growing geometrically up to max; the
 * old contents are not kept. 0, or CB_ENOMEM (also when need is over max). */
static int scratch_reserve(const cb_host *host, void **buf, size_t *cap, size_t need, size_t elem,
                           size_t max) {
    if (need <= *cap) return CB_OK;
    if (need > max) return CB_ENOMEM;
    size_t n = *cap * 2 > need ? *cap * 2 : need;
    if (n > max) n = max;
    void *p = host->alloc(n * elem);
    if (!p) return CB_ENOMEM;
    host->free(*buf);
    *buf = p;
    *cap = n;
    return CB_OK;
}

static void report(const cb_host *h, cb_run_ctx *ctx, int metric, double value) {
    if (ctx && h->struct_size >= offsetof(cb_host, report) + sizeof h->report && h->report)
        h->report(ctx, metric, value);
}

/* A payload that is not a request: the reason, and where requests come from. */
static int not_a_request(cb_error *err, const char *stage, const char *why) {
    return cb_util_error(err, CB_EINVAL, "%s (%s takes the LLM requests of llm.prompts)", why,
                         stage);
}

/* ---- llm.tokenize --------------------------------------------------------------------------- */

enum { T_ALLOW_SPECIAL = P_SHARED_COUNT, T_CHAT_TEMPLATE, T_MAX_PROMPT_TOKENS, T_COUNT };
enum { CHAT_NONE, CHAT_LLAMA3, CHAT_CHATML };

static const cb_param_def tokenize_params[T_COUNT] = {
    TOKENIZER_PARAMS,
    [T_ALLOW_SPECIAL] = {"allow_special", CB_PARAM_BOOL, NULL, CB_PARAM_UNBOUNDED, NULL,
                         "encode special-token text as the special ids (unset: true with a "
                         "chat_template, else false)"},
    [T_CHAT_TEMPLATE] = {"chat_template", CB_PARAM_ENUM, "none", CB_PARAM_UNBOUNDED,
                         "none|llama3|chatml",
                         "wrap the prompt as one user message plus the generation prompt "
                         "(llama3: Llama 3; chatml: Qwen2/2.5/3)"},
    [T_MAX_PROMPT_TOKENS] = {"max_prompt_tokens", CB_PARAM_INT, "0", 0, CB_LLM_MAX_PROMPT_TOKENS,
                             NULL, "longest prompt in tokens; a longer one is an error naming "
                                   "the request (0 = 1048576, the payload's maximum)"},
};

enum { TM_PROMPT_TOKENS, TM_PROMPT_BYTES, TM_COUNT };

static const cb_metric_def tokenize_metrics[TM_COUNT] = {
    [TM_PROMPT_TOKENS] = {"prompt_tokens", CB_METRIC_COUNT, "tokens",
                          "prompt ids of the request after tokenizing"},
    [TM_PROMPT_BYTES] = {"prompt_bytes", CB_METRIC_COUNT, "bytes",
                         "text bytes encoded (the rendered template; 0 when passed through)"},
};

typedef struct tokenize_state {
    const cb_host *host;
    tok_source src;
    cb_tok *tok;
    int chat;             /* CHAT_* */
    int allow_special;
    uint32_t max_tokens;  /* in [1, CB_LLM_MAX_PROMPT_TOKENS] */
    int32_t vocab;
    int32_t *ids;         /* scratch: the encoded ids */
    size_t ids_cap;
    char *text;           /* scratch: the rendered template */
    size_t text_cap;
} tokenize_state;

static int tokenize_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    int rc = source_check(v, err);
    if (rc) return rc;
    if (v[T_CHAT_TEMPLATE].i != CHAT_NONE && v[T_ALLOW_SPECIAL].has_value &&
        !v[T_ALLOW_SPECIAL].i)
        return cb_util_error(err, CB_ECONFIG, "allow_special: false would encode the special "
                             "tokens chat_template %s writes as plain text", v[T_CHAT_TEMPLATE].s);
    return CB_OK;
}

static int tokenize_create(void *state, const cb_stage_args *args, cb_error *err) {
    tokenize_state *s = state;
    const cb_param_value *v = args->values;
    int rc = tokenize_check(args, err);
    if (rc) return rc;
    s->host = args->host;
    source_init(&s->src, v);
    s->chat = (int)v[T_CHAT_TEMPLATE].i;
    s->allow_special = v[T_ALLOW_SPECIAL].has_value ? (int)v[T_ALLOW_SPECIAL].i
                                                    : s->chat != CHAT_NONE;
    s->max_tokens = v[T_MAX_PROMPT_TOKENS].i ? (uint32_t)v[T_MAX_PROMPT_TOKENS].i
                                             : CB_LLM_MAX_PROMPT_TOKENS;
    return CB_OK;
}

static int tokenize_prepare(void *state, cb_error *err) {
    tokenize_state *s = state;
    int rc = source_load(&s->src, s->host, &s->tok, err);
    if (rc) return rc;
    s->vocab = cb_tok_vocab_size(s->tok);
    /* the template's special tokens must be in the vocabulary, or they would be plain text */
    static const char *const llama3[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                         "<|end_header_id|>", "<|eot_id|>", NULL};
    static const char *const chatml[] = {"<|im_start|>", "<|im_end|>", NULL};
    const char *const *need = s->chat == CHAT_LLAMA3 ? llama3 : s->chat == CHAT_CHATML ? chatml
                                                                                       : NULL;
    for (size_t i = 0; need && need[i]; i++)
        if (cb_tok_special_id(s->tok, need[i]) < 0)
            return cb_util_error(err, CB_EINVAL, "chat_template: %s needs the special token %s, "
                                 "which '%s' does not have", s->chat == CHAT_LLAMA3 ? "llama3"
                                                                                    : "chatml",
                                 need[i], s->src.hf ? s->src.hf : s->src.tiktoken);
    size_t first = s->max_tokens < 4096 ? s->max_tokens : 4096;
    if (scratch_reserve(s->host, (void **)&s->ids, &s->ids_cap, first, sizeof *s->ids,
                        s->max_tokens))
        return cb_util_error(err, CB_ENOMEM, "out of memory");
    return CB_OK;
}

/* Renders the chat template around text[0..len) into s->text; *out, *out_len the result. */
static int tokenize_render(tokenize_state *s, const cb_llm_request *r, const char *text,
                           size_t len, const char **out, size_t *out_len, cb_error *err) {
    if (memchr(text, 0, len))
        return cb_util_error(err, CB_EINVAL, "request %lld: the prompt text has a NUL byte, which "
                             "a chat template cannot wrap", (long long)r->index);
    cb_tok_msg m = {"user", text};
    cb_tok_chat fmt = s->chat == CHAT_LLAMA3 ? CB_TOK_CHAT_LLAMA3 : CB_TOK_CHAT_CHATML;
    cb_error e;
    cb_error_clear(&e);
    size_t n = 0;
    int rc = cb_tok_chat_render(fmt, &m, 1, 1, s->text, s->text_cap, &n, &e);
    if (rc == CB_EFULL) {
        if (n > CB_LLM_MAX_PROMPT_BYTES)
            return cb_util_error(err, CB_EINVAL, "request %lld: the rendered prompt has %zu "
                                 "bytes, more than a request holds (%u)", (long long)r->index, n,
                                 CB_LLM_MAX_PROMPT_BYTES);
        if (scratch_reserve(s->host, (void **)&s->text, &s->text_cap, n, 1,
                            CB_LLM_MAX_PROMPT_BYTES))
            return cb_util_error(err, CB_ENOMEM, "request %lld: out of memory", (long long)r->index);
        rc = cb_tok_chat_render(fmt, &m, 1, 1, s->text, s->text_cap, &n, &e);
    }
    if (rc) return cb_util_error(err, rc, "request %lld: %s", (long long)r->index, e.msg);
    *out = s->text;
    *out_len = n;
    return CB_OK;
}

/* Encodes text[0..len) into s->ids; *n the count. */
static int tokenize_encode(tokenize_state *s, const cb_llm_request *r, const char *text,
                           size_t len, size_t *n, cb_error *err) {
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_tok_encode(s->tok, text, len, s->allow_special, s->ids, s->ids_cap, n, &e);
    if (rc == CB_EFULL && *n <= s->max_tokens) {
        if (scratch_reserve(s->host, (void **)&s->ids, &s->ids_cap, *n, sizeof *s->ids,
                            s->max_tokens))
            return cb_util_error(err, CB_ENOMEM, "request %lld: out of memory", (long long)r->index);
        rc = cb_tok_encode(s->tok, text, len, s->allow_special, s->ids, s->ids_cap, n, &e);
    }
    if (*n > s->max_tokens)
        return cb_util_error(err, CB_EINVAL, "request %lld: the prompt has %zu tokens, more than "
                             "max_prompt_tokens (%u)", (long long)r->index, *n, s->max_tokens);
    if (rc) return cb_util_error(err, rc, "request %lld: %s", (long long)r->index, e.msg);
    if (*n == 0)
        return cb_util_error(err, CB_EINVAL, "request %lld: the prompt encodes to no tokens",
                             (long long)r->index);
    return CB_OK;
}

static int tokenize_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    tokenize_state *s = state;
    const char *why = NULL;
    if (cb_llm_request_check(q->payload, &why) != 0)
        return not_a_request(err, "llm.tokenize", why);
    cb_llm_request *r = q->payload->data;
    if (r->n_prompt_tokens > 0) { /* already tokenized: unchanged */
        report(s->host, ctx, TM_PROMPT_TOKENS, (double)r->n_prompt_tokens);
        report(s->host, ctx, TM_PROMPT_BYTES, 0);
        return CB_OK;
    }
    const char *text = cb_llm_request_text(r);
    size_t len = (size_t)r->prompt_bytes, n = 0;
    int rc = s->chat != CHAT_NONE ? tokenize_render(s, r, text, len, &text, &len, err) : CB_OK;
    if (!rc) rc = tokenize_encode(s, r, text, len, &n, err);
    if (rc) return rc;
    size_t bytes = cb_llm_request_bytes((uint32_t)n, r->n_output_tokens, len);
    cb_buffer *buf = bytes ? s->host->buffer_new(bytes) : NULL;
    if (!buf)
        return cb_util_error(err, CB_ENOMEM, "request %lld: cannot allocate the tokenized request "
                             "(%zu bytes)", (long long)r->index, bytes);
    cb_llm_request *t = cb_llm_request_init(buf, (uint32_t)n, r->n_output_tokens, len);
    cb_llm_request_copy_fields(t, r);
    t->vocab_size = (uint32_t)s->vocab;
    memcpy(cb_llm_request_prompt_ids(t), s->ids, n * sizeof *s->ids);
    if (r->n_output_tokens) {
        const int32_t *o = cb_llm_request_output_ids(r);
        memcpy(cb_llm_request_output_ids(t), o, r->n_output_tokens * sizeof *o);
        for (uint32_t i = 0; i < r->n_output_tokens; i++)
            if (o[i] >= s->vocab) t->vocab_size = 0; /* ids from elsewhere: range unknown */
    }
    memcpy(cb_llm_request_text(t), text, len);
    s->host->buffer_unref(q->payload);
    q->payload = buf;
    report(s->host, ctx, TM_PROMPT_TOKENS, (double)n);
    report(s->host, ctx, TM_PROMPT_BYTES, (double)len);
    return CB_OK;
}

static void tokenize_destroy(void *state) {
    tokenize_state *s = state;
    cb_tok_free(s->tok);
    s->tok = NULL;
    if (!s->host) return;
    s->host->free(s->ids);
    s->host->free(s->text);
    s->ids = NULL;
    s->text = NULL;
}

const cb_stage_ops cb_stage_llm_tokenize = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "llm.tokenize",
    .summary = "encodes each request's prompt text into token ids (byte-level BPE, chat templates)",
    .params = tokenize_params,
    .n_params = T_COUNT,
    .state_size = sizeof(tokenize_state),
    .create = tokenize_create,
    .prepare = tokenize_prepare,
    .run = tokenize_run,
    .destroy = tokenize_destroy,
    .metrics = tokenize_metrics,
    .n_metrics = TM_COUNT,
    .check = tokenize_check,
};

/* ---- llm.detokenize ------------------------------------------------------------------------- */

enum { D_PROMPT = P_SHARED_COUNT, D_CHECK_ROUNDTRIP, D_COUNT };

static const cb_param_def detokenize_params[D_COUNT] = {
    TOKENIZER_PARAMS,
    [D_PROMPT] = {"prompt", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                  "decode the prompt ids too, not only the output ids (flag)"},
    [D_CHECK_ROUNDTRIP] = {"check_roundtrip", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                           "decode the prompt ids and compare them with the request's text; a "
                           "difference is an error naming the request (flag)"},
};

enum { DM_OUTPUT_TOKENS, DM_OUTPUT_BYTES, DM_PROMPT_BYTES, DM_COUNT };

static const cb_metric_def detokenize_metrics[DM_COUNT] = {
    [DM_OUTPUT_TOKENS] = {"output_tokens", CB_METRIC_COUNT, "tokens",
                          "output ids of the request decoded"},
    [DM_OUTPUT_BYTES] = {"output_bytes", CB_METRIC_COUNT, "bytes",
                         "bytes of text the output ids decode to"},
    [DM_PROMPT_BYTES] = {"prompt_bytes", CB_METRIC_COUNT, "bytes",
                         "bytes of text the prompt ids decode to (prompt or check_roundtrip)"},
};

typedef struct detokenize_state {
    const cb_host *host;
    tok_source src;
    cb_tok *tok;
    int prompt, roundtrip;
    char *out; /* scratch: the decoded text */
    size_t out_cap;
} detokenize_state;

static int detokenize_check(const cb_stage_args *args, cb_error *err) {
    return source_check(args->values, err);
}

static int detokenize_create(void *state, const cb_stage_args *args, cb_error *err) {
    detokenize_state *s = state;
    const cb_param_value *v = args->values;
    int rc = source_check(v, err);
    if (rc) return rc;
    s->host = args->host;
    source_init(&s->src, v);
    s->roundtrip = (int)v[D_CHECK_ROUNDTRIP].i;
    s->prompt = (int)v[D_PROMPT].i || s->roundtrip;
    return CB_OK;
}

static int detokenize_prepare(void *state, cb_error *err) {
    detokenize_state *s = state;
    int rc = source_load(&s->src, s->host, &s->tok, err);
    if (rc) return rc;
    if (scratch_reserve(s->host, (void **)&s->out, &s->out_cap, 16384, 1, DETOK_MAX_BYTES))
        return cb_util_error(err, CB_ENOMEM, "out of memory");
    return CB_OK;
}

/* Decodes ids[0..n) into s->out; *len the bytes. what names the ids in errors. */
static int detokenize_decode(detokenize_state *s, const cb_llm_request *r, const int32_t *ids,
                             size_t n, const char *what, size_t *len, cb_error *err) {
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_tok_decode(s->tok, ids, n, s->out, s->out_cap, len, &e);
    if (rc == CB_EFULL) {
        if (*len > DETOK_MAX_BYTES)
            return cb_util_error(err, CB_EINVAL, "request %lld: the %s ids decode to %zu bytes, "
                                 "more than %zu", (long long)r->index, what, *len, DETOK_MAX_BYTES);
        if (scratch_reserve(s->host, (void **)&s->out, &s->out_cap, *len, 1, DETOK_MAX_BYTES))
            return cb_util_error(err, CB_ENOMEM, "request %lld: out of memory", (long long)r->index);
        rc = cb_tok_decode(s->tok, ids, n, s->out, s->out_cap, len, &e);
    }
    if (rc) return cb_util_error(err, rc, "request %lld: %s ids: %s", (long long)r->index, what,
                                 e.msg);
    return CB_OK;
}

static int detokenize_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    detokenize_state *s = state;
    const char *why = NULL;
    if (cb_llm_request_check(q->payload, &why) != 0)
        return not_a_request(err, "llm.detokenize", why);
    cb_llm_request *r = q->payload->data;
    size_t len = 0;
    int rc = detokenize_decode(s, r, cb_llm_request_output_ids(r), r->n_output_tokens, "output",
                               &len, err);
    if (rc) return rc;
    report(s->host, ctx, DM_OUTPUT_TOKENS, (double)r->n_output_tokens);
    report(s->host, ctx, DM_OUTPUT_BYTES, (double)len);
    if (!s->prompt) return CB_OK;
    rc = detokenize_decode(s, r, cb_llm_request_prompt_ids(r), r->n_prompt_tokens, "prompt", &len,
                           err);
    if (rc) return rc;
    report(s->host, ctx, DM_PROMPT_BYTES, (double)len);
    /* only a request with both ids and text can be compared (llm.tokenize's output has both) */
    if (s->roundtrip && r->n_prompt_tokens && r->prompt_bytes) {
        const char *text = cb_llm_request_text(r);
        size_t m = len < r->prompt_bytes ? len : (size_t)r->prompt_bytes, at = 0;
        while (at < m && s->out[at] == text[at]) at++;
        if (at < m || len != r->prompt_bytes)
            return cb_util_error(err, CB_EINVAL, "request %lld: check_roundtrip: the prompt ids "
                                 "decode to %zu bytes that differ from its %llu bytes of text at "
                                 "byte %zu", (long long)r->index, len,
                                 (unsigned long long)r->prompt_bytes, at);
    }
    return CB_OK;
}

static void detokenize_destroy(void *state) {
    detokenize_state *s = state;
    cb_tok_free(s->tok);
    s->tok = NULL;
    if (!s->host) return;
    s->host->free(s->out);
    s->out = NULL;
}

const cb_stage_ops cb_stage_llm_detokenize = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "llm.detokenize",
    .summary = "decodes each request's output ids (and prompt ids) to text; reports the bytes",
    .params = detokenize_params,
    .n_params = D_COUNT,
    .state_size = sizeof(detokenize_state),
    .create = detokenize_create,
    .prepare = detokenize_prepare,
    .run = detokenize_run,
    .destroy = detokenize_destroy,
    .metrics = detokenize_metrics,
    .n_metrics = DM_COUNT,
    .check = detokenize_check,
};
