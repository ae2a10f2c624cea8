/* stages/rag/promptbuild.h - a RAG prompt within a token budget: the work of rag.prompt, shared
 * with rag.monolith.
 *
 * The template's placeholders are {question}, {query} (the question when there is no rewrite),
 * {passages} (each "[n] text\n") and {answer}. Passages go in by rank while they fit the budget;
 * the first that does not is cut to the tokens left (decoded back, so ids and text agree); the
 * rest are left out. Tokens do not add up exactly across the joins of a BPE text, so the whole
 * prompt is encoded at the end and the passages' room shrunk until it fits.
 *
 * A builder keeps its scratch (ids, text, the passages block) between calls, grown geometrically
 * up to the LLM request's maxima: nothing is allocated per prompt once they are large enough.
 * One builder per stage instance (not thread-safe).
 */
#ifndef CB_STAGES_RAG_PROMPTBUILD_H
#define CB_STAGES_RAG_PROMPTBUILD_H

#include <stddef.h>
#include <stdint.h>

#include "rag/item.h"
#include "stages/rag/ragtok.h"

#define CB_RAG_DEFAULT_TEMPLATE                                                              \
    "Answer the question using the passages below. Say so if they do not contain the "     \
    "answer.\n\nPassages:\n{passages}\nQuestion: {question}\nAnswer:"

typedef struct cb_rag_pb {
    const cb_host *host;  /* set before the first build */
    const rag_tok *tok;
    const char *tmpl;
    size_t budget;        /* max prompt tokens */
    uint32_t max_passages;/* 0: every hit */
    /* results of the last build */
    int32_t *ids;         /* n ids */
    size_t n;
    char *text;           /* text_len bytes, NUL after */
    size_t text_len;
    uint32_t used, cut;   /* passages put in (whole or cut); cut or left out */
    size_t fixed;         /* tokens of the template without passages */
    /* scratch */
    size_t ids_cap, text_cap, piece_cap, blk_len, blk_cap;
    char *piece, *blk;
} cb_rag_pb;

/* Builds the prompt of item it. 0; 1 when the template without passages is over the budget
 * (pb->fixed says how many tokens it has; nothing else is valid); a negative code (err). */
int cb_rag_pb_build(cb_rag_pb *pb, const cb_rag_view *it, cb_error *err);

void cb_rag_pb_free(cb_rag_pb *pb);

/* Makes *buf hold need elements of elem bytes (contents kept), growing geometrically up to max
 * elements: 0, CB_EFULL past max, CB_ENOMEM. The scratch rule of the rag stages. */
int cb_rag_grow(const cb_host *host, void **buf, size_t *cap, size_t need, size_t elem,
                size_t max);

#endif
