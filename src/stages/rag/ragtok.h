/* stages/rag/ragtok.h - the generator's tokenizer as the rag.* stages use it: a real one
 * (stages/llm/toksrc.h: tokenizer.json or tiktoken) or, when none is given, bytes (one token per
 * UTF-8 byte, id = the byte), which any model with a vocabulary of 256 or more accepts: the
 * token counts of a speed run with random weights are then those of the text's bytes.
 *
 * Decoding in bytes mode writes ids 1..127 as their ASCII byte and every other id as " ID" (as
 * `colobench serve` does without a tokenizer), so a random model's output is still valid UTF-8
 * text that any later stage can tokenize.
 *
 * Header-only. A rag_tok is immutable after loading; one per stage instance.
 */
#ifndef CB_STAGES_RAG_RAGTOK_H
#define CB_STAGES_RAG_RAGTOK_H

#include <stdio.h>
#include <string.h>

#include "llm/tokenizer.h"
#include "stages/llm/toksrc.h"

typedef struct rag_tok {
    cb_tok *tok;   /* NULL: bytes */
    int32_t vocab; /* 1 + the largest id */
} rag_tok;

/* What the table gave: none (bytes), or exactly one tokenizer (source_check's rules). */
static inline int rag_tok_check(const cb_param_value *v, cb_error *err) {
    if (!v[P_TOKENIZER].has_value && !v[P_TIKTOKEN].has_value) {
        if (v[P_PATTERN].has_value || v[P_SPECIAL].has_value)
            return cb_util_error(err, CB_ECONFIG, "pattern: only with tiktoken");
        return CB_OK;
    }
    return source_check(v, err);
}

static inline int rag_tok_load(rag_tok *t, const cb_param_value *v, const cb_host *host,
                               cb_error *err) {
    t->tok = NULL;
    t->vocab = 256;
    if (!v[P_TOKENIZER].has_value && !v[P_TIKTOKEN].has_value) return CB_OK;
    tok_source src;
    source_init(&src, v);
    int rc = source_load(&src, host, &t->tok, err);
    if (rc) return rc;
    t->vocab = cb_tok_vocab_size(t->tok);
    return CB_OK;
}

static inline void rag_tok_free(rag_tok *t) {
    cb_tok_free(t->tok);
    t->tok = NULL;
}

/* Encodes text[0..len) into ids[0..cap); *n the count needed. CB_EFULL when cap is short (ids
 * then hold a prefix). */
static inline int rag_tok_encode(const rag_tok *t, const char *text, size_t len, int32_t *ids,
                                 size_t cap, size_t *n, cb_error *err) {
    if (t->tok) return cb_tok_encode(t->tok, text, len, 0, ids, cap, n, err);
    for (size_t i = 0; i < len && i < cap; i++) ids[i] = (unsigned char)text[i];
    *n = len;
    return len > cap ? CB_EFULL : CB_OK;
}

/* Decodes ids into out[0..cap); *len the bytes needed. CB_EFULL when cap is short. */
static inline int rag_tok_decode(const rag_tok *t, const int32_t *ids, size_t n, char *out,
                                 size_t cap, size_t *len, cb_error *err) {
    if (t->tok) return cb_tok_decode(t->tok, ids, n, out, cap, len, err);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char tmp[16];
        size_t m;
        if (ids[i] > 0 && ids[i] < 128) {
            tmp[0] = (char)ids[i];
            m = 1;
        } else {
            m = (size_t)snprintf(tmp, sizeof tmp, " %ld", (long)ids[i]);
        }
        if (k + m <= cap) memcpy(out + k, tmp, m);
        k += m;
    }
    *len = k;
    return k > cap ? CB_EFULL : CB_OK;
}

#endif
