/* stages/rag/promptbuild.c - a RAG prompt within a token budget (promptbuild.h). */
#include "stages/rag/promptbuild.h"

#include <stdio.h>
#include <string.h>

#include "llm/request.h"

#define PB_TEXT_MAX_BYTES ((size_t)CB_LLM_MAX_PROMPT_BYTES)

int cb_rag_grow(const cb_host *host, void **buf, size_t *cap, size_t need, size_t elem,
                size_t max) {
    if (need <= *cap) return CB_OK;
    if (need > max) return CB_EFULL;
    size_t n = *cap * 2 > need ? *cap * 2 : need;
    if (n > max) n = max;
    void *p = host->alloc(n * elem);
    if (!p) return CB_ENOMEM;
    if (*cap) memcpy(p, *buf, *cap * elem);
    host->free(*buf);
    *buf = p;
    *cap = n;
    return CB_OK;
}

/* Appends p[0..n) to the growing string *buf (len, cap), NUL-terminated. */
static int put(const cb_host *h, char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    int rc = cb_rag_grow(h, (void **)buf, cap, *len + n + 1, 1, PB_TEXT_MAX_BYTES + 1);
    if (rc) return rc;
    if (n) memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return CB_OK;
}

/* Encodes text into pb->ids (grown as needed, up to max ids: past it the ids are a prefix and
 * *n says how many the whole text has). */
static int encode(cb_rag_pb *pb, const char *text, size_t len, size_t max, size_t *n,
                  cb_error *err) {
    if (cb_rag_grow(pb->host, (void **)&pb->ids, &pb->ids_cap, 1024, sizeof(int32_t),
             CB_LLM_MAX_PROMPT_TOKENS))
        return cb_error_set(err, CB_ENOMEM, "out of memory for prompt ids");
    for (;;) {
        int rc = rag_tok_encode(pb->tok, text, len, pb->ids, pb->ids_cap, n, err);
        if (rc != CB_EFULL) return rc;
        if (pb->ids_cap >= max) return CB_OK; /* a prefix is enough */
        size_t want = *n < max ? *n : max;
        if (cb_rag_grow(pb->host, (void **)&pb->ids, &pb->ids_cap, want, sizeof(int32_t),
                 CB_LLM_MAX_PROMPT_TOKENS))
            return cb_error_set(err, CB_ENOMEM, "out of memory for %zu prompt ids", want);
    }
}

/* The template into pb->text with passages[0..np) for {passages}. */
static int render(cb_rag_pb *pb, const cb_rag_view *it, const char *passages, size_t np) {
    const cb_host *h = pb->host;
    pb->text_len = 0;
    int rc = put(h, &pb->text, &pb->text_len, &pb->text_cap, "", 0);
    const char *p = pb->tmpl;
    while (!rc && *p) {
        const char *b = strchr(p, '{');
        if (!b) return put(h, &pb->text, &pb->text_len, &pb->text_cap, p, strlen(p));
        rc = put(h, &pb->text, &pb->text_len, &pb->text_cap, p, (size_t)(b - p));
        if (rc) break;
        const char *val = NULL;
        size_t n = 0, klen = 0;
        if (!strncmp(b, "{question}", 10)) {
            val = it->question, n = it->question_bytes, klen = 10;
        } else if (!strncmp(b, "{query}", 7)) {
            klen = 7;
            val = it->query_bytes ? it->query : it->question;
            n = it->query_bytes ? it->query_bytes : it->question_bytes;
        } else if (!strncmp(b, "{passages}", 10)) {
            val = passages, n = np, klen = 10;
        } else if (!strncmp(b, "{answer}", 8)) {
            val = it->answer, n = it->answer_bytes, klen = 8;
        }
        if (klen) {
            rc = put(h, &pb->text, &pb->text_len, &pb->text_cap, val, n);
            p = b + klen;
        } else {
            rc = put(h, &pb->text, &pb->text_len, &pb->text_cap, "{", 1);
            p = b + 1;
        }
    }
    return rc;
}

/* The passages block within `room` tokens into pb->blk. */
static int build_block(cb_rag_pb *pb, const cb_rag_view *it, size_t room, cb_error *err) {
    const cb_host *h = pb->host;
    pb->blk_len = 0;
    pb->used = pb->cut = 0;
    uint32_t n = it->n_hits;
    if (pb->max_passages && n > pb->max_passages) {
        pb->cut += n - pb->max_passages;
        n = pb->max_passages;
    }
    size_t left = room;
    for (uint32_t i = 0; i < n; i++) {
        const cb_rag_hit *hit = &it->hits[i];
        char head[32];
        int hl = snprintf(head, sizeof head, "[%u] ", i + 1);
        size_t mark = pb->blk_len;
        if (put(h, &pb->blk, &pb->blk_len, &pb->blk_cap, head, (size_t)hl) ||
            put(h, &pb->blk, &pb->blk_len, &pb->blk_cap, it->passages + hit->text_off,
                hit->text_bytes) ||
            put(h, &pb->blk, &pb->blk_len, &pb->blk_cap, "\n", 1))
            return cb_error_set(err, CB_ENOMEM, "out of memory for the passages");
        size_t ntok = 0;
        int rc = encode(pb, pb->blk + mark, pb->blk_len - mark, left + 1, &ntok, err);
        if (rc) return rc;
        if (ntok <= left) {
            left -= ntok;
            pb->used++;
            continue;
        }
        /* Cut this entry to the tokens left (decoded back, so ids and text agree). */
        pb->blk_len = mark;
        pb->blk[mark] = 0;
        pb->cut += n - i;
        if (left > 0) {
            size_t need = 0;
            if (cb_rag_grow(h, (void **)&pb->piece, &pb->piece_cap, left * 16 + 64, 1,
                            PB_TEXT_MAX_BYTES))
                return cb_error_set(err, CB_ENOMEM, "out of memory for a cut passage");
            rc = rag_tok_decode(pb->tok, pb->ids, left, pb->piece, pb->piece_cap, &need, err);
            if (rc == CB_EFULL) {
                if (cb_rag_grow(h, (void **)&pb->piece, &pb->piece_cap, need, 1, PB_TEXT_MAX_BYTES))
                    return cb_error_set(err, CB_ENOMEM, "out of memory for a cut passage");
                rc = rag_tok_decode(pb->tok, pb->ids, left, pb->piece, pb->piece_cap, &need,
                                    err);
            }
            if (rc) return rc;
            if (put(h, &pb->blk, &pb->blk_len, &pb->blk_cap, pb->piece, need) ||
                put(h, &pb->blk, &pb->blk_len, &pb->blk_cap, "\n", 1))
                return cb_error_set(err, CB_ENOMEM, "out of memory for the passages");
            pb->used++;
        }
        break;
    }
    return CB_OK;
}

int cb_rag_pb_build(cb_rag_pb *pb, const cb_rag_view *it, cb_error *err) {
    pb->n = 0;
    pb->used = pb->cut = 0;
    if (render(pb, it, "", 0)) return cb_error_set(err, CB_ENOMEM, "prompt text too long");
    int rc = encode(pb, pb->text, pb->text_len, pb->budget + 1, &pb->fixed, err);
    if (rc) return rc;
    if (pb->fixed > pb->budget) return 1;
    size_t room = pb->budget - pb->fixed, n = 0;
    for (int round = 0; round < 4; round++) {
        rc = build_block(pb, it, room, err);
        if (!rc && render(pb, it, pb->blk ? pb->blk : "", pb->blk_len))
            rc = cb_error_set(err, CB_ENOMEM, "prompt text too long");
        if (!rc) rc = encode(pb, pb->text, pb->text_len, CB_LLM_MAX_PROMPT_TOKENS, &n, err);
        if (rc || n <= pb->budget) break;
        size_t over = n - pb->budget;
        room = room > over ? room - over : 0;
    }
    if (rc) return rc;
    if (n > pb->budget || n > pb->ids_cap)
        return cb_error_set(err, CB_EINVAL, "question %lld: the prompt has %zu tokens, over the "
                            "budget of %zu", (long long)it->index, n, pb->budget);
    pb->n = n;
    return CB_OK;
}

void cb_rag_pb_free(cb_rag_pb *pb) {
    if (!pb->host) return;
    pb->host->free(pb->ids);
    pb->host->free(pb->text);
    pb->host->free(pb->piece);
    pb->host->free(pb->blk);
    pb->ids = NULL, pb->text = NULL, pb->piece = NULL, pb->blk = NULL;
}
