/* stages/llm/toksrc.h - which tokenizer a stage loads: the parameter rows naming it (a Hugging
 * Face tokenizer.json, or a tiktoken rank file with its split pattern and special tokens), their
 * checks and the loading, shared by llm.tokenize, llm.detokenize and the rag.* stages that count
 * or make tokens (rag.prompt, rag.grade).
 *
 * A table that uses TOKENIZER_PARAMS puts them first (indices P_TOKENIZER..P_SPECIAL) and
 * numbers its own from P_SHARED_COUNT. Header-only; no state.
 */
#ifndef CB_STAGES_LLM_TOKSRC_H
#define CB_STAGES_LLM_TOKSRC_H

#include <string.h>

#include "colobench/stage.h"
#include "llm/tokenizer.h"
#include "stages/util/util.h"

enum { P_TOKENIZER, P_TIKTOKEN, P_PATTERN, P_SPECIAL, P_SHARED_COUNT };

#define PATTERN_CHOICES "gpt2|cl100k|llama3|qwen2|o200k|none"

#define TOKENIZER_PARAMS                                                                           \
    [P_TOKENIZER] = {"tokenizer", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",               \
                     "a Hugging Face tokenizer.json, byte-level BPE (or give tiktoken)"},          \
    [P_TIKTOKEN] = {"tiktoken", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",                 \
                    "a tiktoken rank file, \"base64 rank\" a line (with pattern, special_tokens)"}, \
    [P_PATTERN] = {"pattern", CB_PARAM_ENUM, NULL, CB_PARAM_UNBOUNDED, PATTERN_CHOICES,          \
                   "tiktoken: the split pattern of the rank file (required with tiktoken)"},       \
    [P_SPECIAL] = {"special_tokens", CB_PARAM_INT_MAP, NULL, 0, CB_TOK_VOCAB_MAX - 1, NULL,        \
                   "tiktoken: special tokens, text -> id ({\"<|endoftext|>\": 100257})"}


/* Which file and how, copied from the values in create. */
typedef struct tok_source {
    const char *hf, *tiktoken, *pattern; /* pattern NULL: no split */
    const cb_param_value *special;
} tok_source;

static inline void source_init(tok_source *src, const cb_param_value *v) {
    src->hf = v[P_TOKENIZER].has_value ? v[P_TOKENIZER].s : NULL;
    src->tiktoken = v[P_TIKTOKEN].has_value ? v[P_TIKTOKEN].s : NULL;
    src->pattern = v[P_PATTERN].has_value && strcmp(v[P_PATTERN].s, "none") != 0 ? v[P_PATTERN].s
                                                                                 : NULL;
    src->special = &v[P_SPECIAL];
}

/* The checks both stages share: exactly one tokenizer, tiktoken's extras only with it. */
static inline int source_check(const cb_param_value *v, cb_error *err) {
    int hf = v[P_TOKENIZER].has_value, tt = v[P_TIKTOKEN].has_value;
    if (!hf && !tt)
        return cb_util_error(err, CB_ECONFIG, "tokenizer: is required (a tokenizer.json; or give "
                             "tiktoken, a rank file)");
    if (hf && tt)
        return cb_util_error(err, CB_ECONFIG, "tiktoken: give tokenizer or tiktoken, not both");
    if (hf && v[P_PATTERN].has_value)
        return cb_util_error(err, CB_ECONFIG, "pattern: only for a tiktoken rank file (a "
                             "tokenizer.json names its own)");
    if (hf && v[P_SPECIAL].has_value)
        return cb_util_error(err, CB_ECONFIG, "special_tokens: only for a tiktoken rank file (a "
                             "tokenizer.json lists its added_tokens)");
    if (tt && !v[P_PATTERN].has_value)
        return cb_util_error(err, CB_ECONFIG, "pattern: a tiktoken rank file needs its split "
                             "pattern (" PATTERN_CHOICES ")");
    return CB_OK;
}

/* Loads the tokenizer; its error (file:line:col: where: what) becomes the message. */
static inline int source_load(const tok_source *src, const cb_host *host, cb_tok **out, cb_error *err) {
    cb_error e;
    cb_error_clear(&e);
    int rc;
    if (src->hf) {
        rc = cb_tok_load_hf(src->hf, out, &e);
    } else {
        size_t n = src->special->has_value ? src->special->n : 0;
        cb_tok_special *sp = n ? host->alloc(n * sizeof *sp) : NULL;
        if (n && !sp) return cb_util_error(err, CB_ENOMEM, "special_tokens: out of memory");
        for (size_t i = 0; i < n; i++) {
            sp[i].text = src->special->keys[i];
            sp[i].id = (int32_t)src->special->ints[i];
        }
        rc = cb_tok_load_tiktoken(src->tiktoken, src->pattern, sp, n, out, &e);
        host->free(sp);
    }
    if (rc) {
        char msg[CB_ERROR_MSG_MAX];
        cb_error_format(&e, msg, sizeof msg);
        return cb_util_error(err, rc, "%s: %s", src->hf ? "tokenizer" : "tiktoken", msg);
    }
    return CB_OK;
}

#endif
