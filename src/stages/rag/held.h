/* stages/rag/held.h - the batching the rag.* model stages share (rag.embed, rag.retrieve,
 * rag.grade): run() holds each query (stage.h, "Held queries"); the held ones are processed
 * together when max of them are held (from run()) or when no new query is queued (from step()),
 * so a batch is exactly the queries that are waiting, as a server batches its requests.
 *
 * Header-only. One per stage instance (never shared between threads). The table is host->alloc'd
 * (max entries) and freed with rag_held_free.
 */
#ifndef CB_STAGES_RAG_HELD_H
#define CB_STAGES_RAG_HELD_H

#include "colobench/stage.h"
#include "stages/util/util.h"

typedef struct rag_held_q {
    cb_query *q;
    cb_held *h;
} rag_held_q;

typedef struct rag_held {
    rag_held_q *at; /* n held queries */
    int n, max;
} rag_held;

static inline int rag_held_init(rag_held *b, const cb_host *h, int max) {
    b->at = h->alloc(sizeof *b->at * (size_t)max);
    b->n = 0;
    b->max = max;
    return b->at ? CB_OK : CB_ENOMEM;
}

static inline void rag_held_free(rag_held *b, const cb_host *h) {
    if (h && b->at) h->free(b->at);
    b->at = NULL;
}

/* From run(): holds q. 1 when the batch is now full (process it before returning CB_RUN_HELD),
 * 0 when not, or a negative code (err says why; return it). */
static inline int rag_held_add(rag_held *b, const cb_host *h, cb_query *q, cb_run_ctx *ctx,
                               cb_error *err) {
    cb_held *hh = h->hold(ctx);
    if (!hh)
        return cb_util_error(err, CB_EINVAL, "the host refused to hold query %llu",
                             (unsigned long long)q->id);
    b->at[b->n].q = q;
    b->at[b->n].h = hh;
    b->n++;
    return b->n >= b->max;
}

/* Completes every held query with rc (msg for a negative rc) and empties the batch. */
static inline void rag_held_complete(rag_held *b, const cb_host *h, cb_run_ctx *ctx, int rc,
                                     const char *msg) {
    for (int i = 0; i < b->n; i++) h->complete(ctx, b->at[i].h, rc, msg);
    b->n = 0;
}

/* At the start of a batch: when the pipeline cancels, every held query ends as stopped (1). */
static inline int rag_held_cancelled(rag_held *b, const cb_host *h, cb_run_ctx *ctx) {
    if (!h->cancelled(ctx)) return 0;
    rag_held_complete(b, h, ctx, CB_ESTOPPED, NULL);
    return 1;
}

#endif
