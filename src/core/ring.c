/* core/ring.c - chunk management of the per-thread record logs (see ring.h for the design, the
 * memory orders and the bound on chunks per log).
 * Thread-safety: one producer and one consumer per log, as ring.h says; cb_ring_init/fini run
 * with neither active. Ownership: chunks belong to the log and are freed by cb_ring_fini.
 */
#include "core/ring.h"

#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"

static cb_log_chunk *chunk_new(uint32_t cap) {
    size_t size = sizeof(cb_log_chunk) + (size_t)cap * 64u;
    cb_log_chunk *c = cb_malloc(size);
    if (!c) return NULL;
    memset(c, 0, size); /* also faults every page in, off the hot path when the consumer does it */
    return c;
}

static void log_init(cb_log *l, uint32_t cap, cb_ring_backlog *backlog) {
    memset(l, 0, sizeof *l);
    l->cap = cap;
    l->backlog = backlog;
    atomic_init(&l->head, NULL);
    atomic_init(&l->spare, NULL);
    atomic_init(&l->ahead, 0);
}

void cb_ring_init(cb_ring *r, cb_ring_backlog *backlog) {
    memset(r, 0, sizeof *r);
    log_init(&r->stage, CB_RING_CHUNK_RECORDS, backlog);
    log_init(&r->query, CB_RING_CHUNK_RECORDS, backlog);
    log_init(&r->metric, CB_RING_METRIC_CHUNK_RECORDS, backlog);
    atomic_init(&r->lost, 0);
    atomic_init(&r->stall_ns, 0);
}

static void log_fini(cb_log *l) {
    cb_log_chunk *c = l->rchunk ? l->rchunk : atomic_load_explicit(&l->head, memory_order_acquire);
    while (c) {
        cb_log_chunk *n = atomic_load_explicit(&c->next, memory_order_acquire);
        cb_free(c);
        c = n;
    }
    cb_free(atomic_exchange_explicit(&l->spare, NULL, memory_order_acq_rel));
    l->cur = l->rchunk = NULL;
    atomic_store(&l->head, NULL);
}

void cb_ring_fini(cb_ring *r) {
    if (!r) return;
    log_fini(&r->stage);
    log_fini(&r->query);
    log_fini(&r->metric);
}

int cb__log_grow(cb_ring *r, cb_log *l) {
    cb_ring_backlog *b = l->backlog;
    if (b && atomic_load_explicit(&l->ahead, memory_order_acquire) >= 2 &&
        atomic_load_explicit(&b->chunks, memory_order_relaxed) >= b->max_chunks) {
        /* The writer is behind by the whole bound and this log is a chunk ahead: wait for it
         * rather than grow (it always makes progress: it never waits on a producer). */
        int64_t t0 = cb_clock_now_ns();
        struct timespec ts = {0, 50000};
        while (atomic_load_explicit(&l->ahead, memory_order_acquire) >= 2 &&
               atomic_load_explicit(&b->chunks, memory_order_relaxed) >= b->max_chunks)
            nanosleep(&ts, NULL);
        atomic_fetch_add_explicit(&r->stall_ns, cb_clock_now_ns() - t0, memory_order_relaxed);
    }
    cb_log_chunk *c = atomic_exchange_explicit(&l->spare, NULL, memory_order_acq_rel);
    if (!c && !(c = chunk_new(l->cap))) {
        atomic_fetch_add_explicit(&r->lost, 1, memory_order_relaxed);
        return CB_ENOMEM;
    }
    atomic_store_explicit(&c->n, 0, memory_order_relaxed);
    atomic_store_explicit(&c->next, NULL, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->ahead, 1, memory_order_relaxed);
    if (b) {
        int64_t now = atomic_fetch_add_explicit(&b->chunks, 1, memory_order_relaxed) + 1;
        int64_t peak = atomic_load_explicit(&b->peak_chunks, memory_order_relaxed);
        while (now > peak && !atomic_compare_exchange_weak_explicit(&b->peak_chunks, &peak, now,
                                                                    memory_order_relaxed, memory_order_relaxed)) {
        }
    }
    if (l->cur)
        atomic_store_explicit(&l->cur->next, c, memory_order_release);
    else
        atomic_store_explicit(&l->head, c, memory_order_release);
    l->cur = c;
    l->cur_n = 0;
    return CB_OK;
}

/* A chunk read whole and left by the producer: the spare if there is none, else freed. */
static void recycle(cb_log *l, cb_log_chunk *c) {
    cb_log_chunk *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&l->spare, &expected, c, memory_order_acq_rel,
                                                 memory_order_relaxed))
        cb_free(c);
}

const unsigned char *cb_log_peek(cb_log *l, uint32_t *n) {
    *n = 0;
    if (!l->rchunk) {
        l->rchunk = atomic_load_explicit(&l->head, memory_order_acquire);
        l->rpos = 0;
        if (!l->rchunk) return NULL;
    }
    for (;;) {
        uint32_t avail = atomic_load_explicit(&l->rchunk->n, memory_order_acquire);
        if (avail > l->rpos) {
            *n = avail - l->rpos;
            return l->rchunk->recs + (size_t)l->rpos * 64u;
        }
        if (l->rpos < l->cap) return NULL; /* the producer is still on this chunk */
        cb_log_chunk *next = atomic_load_explicit(&l->rchunk->next, memory_order_acquire);
        if (!next) return NULL;
        cb_log_chunk *old = l->rchunk;
        l->rchunk = next;
        l->rpos = 0;
        recycle(l, old);
        atomic_fetch_sub_explicit(&l->ahead, 1, memory_order_release);
        if (l->backlog) atomic_fetch_sub_explicit(&l->backlog->chunks, 1, memory_order_relaxed);
    }
}

void cb_log_advance(cb_log *l, uint32_t n) { l->rpos += n; }

void cb_log_refill_spare(cb_log *l) {
    if (atomic_load_explicit(&l->spare, memory_order_relaxed)) return;
    if (!l->rchunk && !atomic_load_explicit(&l->head, memory_order_acquire)) return;
    cb_log_chunk *c = chunk_new(l->cap);
    if (c) recycle(l, c);
}
