/* rag/item.h - the RAG payload that rag.* stages exchange: one question and what the pipeline
 * learned about it so far.
 *
 * One cb_buffer (host memory) holds one item:
 *
 *   [cb_rag_item header, 128 bytes][float embedding[dim]][cb_rag_hit hits[n_hits]]
 *   [question text NUL][query text NUL][passages text NUL][answer text NUL]
 *
 * Every region starts at an offset stored in the header (embedding and hits 8-byte aligned);
 * texts are UTF-8 with a NUL after their *_bytes. The question is what the user asked; the query
 * is what retrieval searches for (the question, or a rewrite of it after a failed round of
 * self-RAG); passages are the texts of the hits that rag.lookup fetched, concatenated, hit i's
 * text at passages + hits[i].text_off, hits[i].text_bytes long (no NUL between them); the answer
 * is what a generator produced. A region may be empty (0 bytes, or dim 0, n_hits 0).
 *
 * Stages never grow an item in place: cb_rag_item_build writes a new buffer from a cb_rag_view
 * (the regions to put in, any of them borrowed from the old item), and the stage replaces the
 * query's payload (unref the old one). An item is immutable once emitted, so any thread may read
 * it; consumers validate it with cb_rag_item_view (a payload is input like any other; all the
 * arithmetic on its header is bounds-checked).
 *
 * Header-only, libc-only (usable from plugins).
 */
#ifndef CB_RAG_ITEM_H
#define CB_RAG_ITEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "colobench/buffer.h"
#include "colobench/stage.h"

#define CB_RAG_ITEM_MAGIC 0x47415243u /* "CRAG" little-endian */
#define CB_RAG_ITEM_VERSION 1u

/* Maxima of one item (a payload beyond them fails the check). */
#define CB_RAG_MAX_DIM 8192u               /* embedding floats */
#define CB_RAG_MAX_HITS 4096u              /* retrieved passages */
#define CB_RAG_MAX_TEXT_BYTES (1u << 24)   /* each text region, without its NUL */

/* Where a hit came from (cb_rag_hit.source). */
enum { CB_RAG_SRC_VECTOR = 0, CB_RAG_SRC_KEYWORD = 1, CB_RAG_SRC_FUSED = 2 };

/* Grades (cb_rag_item.grade): what the last grader decided; also written to q->tag. */
enum { CB_RAG_GRADE_NONE = -1, CB_RAG_GRADE_NO = 0, CB_RAG_GRADE_YES = 1 };

typedef struct cb_rag_hit {
    int64_t id;           /* passage id (the store's and the index's) */
    float score;          /* retriever's score: inner product, -L2 distance, BM25 (higher is
                             better for every source), or the fused score */
    uint32_t source;      /* CB_RAG_SRC_* */
    uint32_t text_off;    /* passage text in the passages region (rag.lookup); 0/0 before */
    uint32_t text_bytes;
    uint32_t rank;        /* 0-based rank in its retriever's list */
    uint32_t reserved;
} cb_rag_hit;
_Static_assert(sizeof(cb_rag_hit) == 32, "cb_rag_hit layout is part of the payload");

typedef struct cb_rag_item {
    uint32_t magic;          /* CB_RAG_ITEM_MAGIC */
    uint32_t version;        /* CB_RAG_ITEM_VERSION */
    int64_t index;           /* question number in its dataset */
    int64_t answer_id;       /* passage known to answer the question; -1 when unknown */
    uint32_t dim;            /* embedding floats (0: not embedded) */
    uint32_t n_hits;
    uint32_t rewrites;       /* times the query was rewritten (self-RAG) */
    int32_t grade;           /* CB_RAG_GRADE_* of the last grader */
    uint64_t question_bytes, query_bytes, passages_bytes, answer_bytes;
    uint64_t emb_off, hits_off, question_off, query_off, passages_off, answer_off;
    uint64_t total_bytes;    /* the item's length (<= the buffer's size_bytes) */
} cb_rag_item;
_Static_assert(sizeof(cb_rag_item) == 128, "cb_rag_item layout is part of the payload");

/* The regions of an item, as pointers: what cb_rag_item_view fills from a payload, and what
 * cb_rag_item_build writes. Texts need no NUL (their lengths say), but view's always have one. */
typedef struct cb_rag_view {
    int64_t index, answer_id;
    uint32_t rewrites;
    int32_t grade;
    const float *emb;  uint32_t dim;
    const cb_rag_hit *hits;  uint32_t n_hits;
    const char *question;  size_t question_bytes;
    const char *query;  size_t query_bytes;
    const char *passages;  size_t passages_bytes;
    const char *answer;  size_t answer_bytes;
} cb_rag_view;

static inline size_t cb_rag__align8(size_t n) { return (n + 7u) & ~(size_t)7u; }

/* Bytes of an item with these regions; 0 when one is over its maximum. */
static inline size_t cb_rag_item_bytes(const cb_rag_view *v) {
    if (v->dim > CB_RAG_MAX_DIM || v->n_hits > CB_RAG_MAX_HITS ||
        v->question_bytes > CB_RAG_MAX_TEXT_BYTES || v->query_bytes > CB_RAG_MAX_TEXT_BYTES ||
        v->passages_bytes > CB_RAG_MAX_TEXT_BYTES || v->answer_bytes > CB_RAG_MAX_TEXT_BYTES)
        return 0;
    size_t n = sizeof(cb_rag_item) + cb_rag__align8(sizeof(float) * v->dim) +
               sizeof(cb_rag_hit) * v->n_hits;
    return n + v->question_bytes + v->query_bytes + v->passages_bytes + v->answer_bytes + 4;
}

/* Writes v into a new buffer (host->buffer_new). Regions of v may point into another item.
 * NULL when out of memory or a region is over its maximum. */
static inline cb_buffer *cb_rag_item_build(const cb_host *host, const cb_rag_view *v) {
    size_t total = cb_rag_item_bytes(v);
    if (!total) return NULL;
    cb_buffer *b = host->buffer_new(total);
    if (!b) return NULL;
    unsigned char *p = (unsigned char *)b->data;
    cb_rag_item *h = (cb_rag_item *)(void *)p;
    memset(h, 0, sizeof *h);
    h->magic = CB_RAG_ITEM_MAGIC;
    h->version = CB_RAG_ITEM_VERSION;
    h->index = v->index;
    h->answer_id = v->answer_id;
    h->dim = v->dim;
    h->n_hits = v->n_hits;
    h->rewrites = v->rewrites;
    h->grade = v->grade;
    size_t off = sizeof *h;
    h->emb_off = off;
    if (v->dim) memcpy(p + off, v->emb, sizeof(float) * v->dim);
    off += cb_rag__align8(sizeof(float) * v->dim);
    memset(p + off - (cb_rag__align8(sizeof(float) * v->dim) - sizeof(float) * v->dim), 0,
           cb_rag__align8(sizeof(float) * v->dim) - sizeof(float) * v->dim);
    h->hits_off = off;
    if (v->n_hits) memcpy(p + off, v->hits, sizeof(cb_rag_hit) * v->n_hits);
    off += sizeof(cb_rag_hit) * v->n_hits;
#define CB_RAG__PUT(field)                                                                   \
    h->field##_off = off;                                                                    \
    h->field##_bytes = v->field##_bytes;                                                     \
    if (v->field##_bytes) memcpy(p + off, v->field, v->field##_bytes);                       \
    off += v->field##_bytes;                                                                 \
    p[off++] = 0;
    CB_RAG__PUT(question)
    CB_RAG__PUT(query)
    CB_RAG__PUT(passages)
    CB_RAG__PUT(answer)
#undef CB_RAG__PUT
    h->total_bytes = off;
    return b;
}

/* Checks the payload and fills v with pointers into it (valid while the buffer is). 0, or -1
 * with the reason in why (why_cap bytes, may be 0). */
static inline int cb_rag_item_view(const cb_buffer *b, cb_rag_view *v, char *why, size_t why_cap) {
#define CB_RAG__BAD(...)                                                                     \
    do {                                                                                     \
        if (why_cap) snprintf(why, why_cap, __VA_ARGS__);                                    \
        return -1;                                                                           \
    } while (0)
    if (!b || !b->data || b->kind != CB_BUFFER_HOST || b->size_bytes < sizeof(cb_rag_item))
        CB_RAG__BAD("not a RAG item (payload missing or %zu bytes; rag.questions makes items)",
                    b ? b->size_bytes : (size_t)0);
    const unsigned char *p = (const unsigned char *)b->data;
    const cb_rag_item *h = (const cb_rag_item *)(const void *)p;
    if (h->magic != CB_RAG_ITEM_MAGIC) CB_RAG__BAD("not a RAG item (magic %08x)", h->magic);
    if (h->version != CB_RAG_ITEM_VERSION) CB_RAG__BAD("RAG item version %u", h->version);
    if (h->total_bytes > b->size_bytes) CB_RAG__BAD("RAG item longer than its buffer");
    if (h->dim > CB_RAG_MAX_DIM || h->n_hits > CB_RAG_MAX_HITS)
        CB_RAG__BAD("RAG item: dim %u or %u hits over the maxima", h->dim, h->n_hits);
    uint64_t end = h->total_bytes;
    if (h->emb_off % 8 || h->emb_off > end || sizeof(float) * (uint64_t)h->dim > end - h->emb_off)
        CB_RAG__BAD("RAG item: embedding out of bounds");
    if (h->hits_off % 8 || h->hits_off > end ||
        sizeof(cb_rag_hit) * (uint64_t)h->n_hits > end - h->hits_off)
        CB_RAG__BAD("RAG item: hits out of bounds");
#define CB_RAG__TXT(field)                                                                   \
    if (h->field##_bytes > CB_RAG_MAX_TEXT_BYTES || h->field##_off > end ||                 \
        h->field##_bytes + 1 > end - h->field##_off || p[h->field##_off + h->field##_bytes]) \
        CB_RAG__BAD("RAG item: " #field " text out of bounds");                              \
    v->field = (const char *)p + h->field##_off;                                             \
    v->field##_bytes = (size_t)h->field##_bytes;
    CB_RAG__TXT(question)
    CB_RAG__TXT(query)
    CB_RAG__TXT(passages)
    CB_RAG__TXT(answer)
#undef CB_RAG__TXT
    v->index = h->index;
    v->answer_id = h->answer_id;
    v->rewrites = h->rewrites;
    v->grade = h->grade;
    v->dim = h->dim;
    v->emb = (const float *)(const void *)(p + h->emb_off);
    v->n_hits = h->n_hits;
    v->hits = (const cb_rag_hit *)(const void *)(p + h->hits_off);
    for (uint32_t i = 0; i < h->n_hits; i++)
        if ((uint64_t)v->hits[i].text_off + v->hits[i].text_bytes > h->passages_bytes)
            CB_RAG__BAD("RAG item: hit %u text out of bounds", i);
    return 0;
#undef CB_RAG__BAD
}

/* Replaces q's payload with b (b's reference moves into q). After a merge the parts keep their
 * own references (the runtime releases them with the query). */
static inline void cb_rag_item_replace(const cb_host *host, cb_query *q, cb_buffer *b) {
    host->buffer_unref(q->payload);
    q->payload = b;
}

#endif
