/* core/ring.h - per-thread logs of 64-byte records: how the runtime's hot path hands every stage
 * run, query and metric report to whoever writes them (record/recorder.c) without a lock, a
 * syscall, formatting or waiting.
 *
 * A cb_log is a single-producer single-consumer list of chunks of `cap` records. The producer
 * copies a record into its chunk and publishes the chunk's count with a release store; the
 * consumer reads behind it (cb_log_peek / cb_log_advance). A chunk the consumer has read whole,
 * and which the producer has left (it linked a successor), is recycled as the producer's spare or
 * freed: a log that the consumer keeps up with holds at most three chunks (the one being
 * written, one being read, one spare), however long the run. Chunks are allocated lazily, on a
 * log's first record, so a thread that never records costs nothing.
 *
 * A producer that outruns the consumer allocates another chunk itself, so a burst never waits.
 * But memory must stay flat in the run's length even when records come faster than they can be
 * written for the whole run (an offline noop pipeline makes millions a second): all the rings
 * of a sink share a backlog, the chunks written but not yet read; when it reaches the sink's
 * bound, a producer that is already a chunk ahead on its log waits (sleeping in 50 us slices)
 * until the consumer has caught up, and the time it waited is counted (stall_ns), so the cost
 * of recording shows instead of memory growing. If a chunk allocation fails the record is
 * dropped, counted in the ring's `lost`, and the push returns CB_ENOMEM: the runtime then stops
 * the run with an error (records already published are kept and written).
 *
 * A cb_ring is one producer thread's three logs. Rings are created and owned by the consumer
 * (the record sink below); the runtime only pushes.
 *
 * Memory orders: record bytes, then the chunk count (release) / count read (acquire); a chunk's
 * fields are initialised before it is linked with a release store of `next` (or of `head` for
 * the first chunk), read with acquire. The spare moves consumer -> producer through atomic
 * exchange/compare-exchange (acq_rel).
 * Maxima: CB_RING_CHUNK_RECORDS records (64 KiB) per stage/query chunk,
 * CB_RING_METRIC_CHUNK_RECORDS (16 KiB) per metric chunk.
 */
#ifndef CB_CORE_RING_H
#define CB_CORE_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "colobench/error.h"
#include "colobench/stage.h"
#include "core/event.h"

#define CB_RING_CHUNK_RECORDS 1024u
#define CB_RING_METRIC_CHUNK_RECORDS 256u

typedef struct cb_log_chunk {
    _Atomic(struct cb_log_chunk *) next;  /* set once, by the producer (release) */
    _Atomic uint32_t n;                   /* records published in this chunk */
    _Alignas(64) unsigned char recs[];    /* cap * 64 bytes */
} cb_log_chunk;

/* The backlog the rings of one sink share (see above). Allocated by the sink; it outlives the
 * rings. */
typedef struct cb_ring_backlog {
    _Atomic int64_t chunks;               /* chunks published and not yet read, over all logs */
    _Atomic int64_t peak_chunks;          /* the most there ever were (tests, reports) */
    int64_t max_chunks;                   /* producers a chunk ahead wait above this */
} cb_ring_backlog;

typedef struct cb_log {
    uint32_t cap;                         /* records per chunk; set at init, then read-only */
    /* Producer side. */
    cb_log_chunk *cur;                    /* NULL until the first record */
    uint32_t cur_n;
    _Atomic(cb_log_chunk *) head;         /* the first chunk (release, once) */
    _Atomic(cb_log_chunk *) spare;        /* consumer fills, producer takes */
    /* Consumer side. */
    cb_log_chunk *rchunk;                 /* chunk being read; NULL before the first */
    uint32_t rpos;
    _Atomic int64_t ahead;                /* chunks linked and not yet passed by the consumer */
    struct cb_ring_backlog *backlog;      /* the sink's, or NULL; set at init */
} cb_log;



typedef struct cb_ring {
    cb_log stage;                         /* cb_stage_event */
    cb_log query;                         /* cb_query_event */
    cb_log metric;                        /* cb_metric_event */
    _Atomic uint64_t lost;                /* records dropped: no memory for a chunk */
    _Atomic int64_t stall_ns;             /* time the producer waited for the consumer */
    struct cb_ring *next;                 /* the consumer's list */
} cb_ring;

/* Where a run's records go. The runtime asks for one ring per thread that records (before the
 * run starts, from one thread), tells the sink the run's time origin and each pipeline's dataset
 * splits, and never frees a ring: the sink owns them. */
typedef struct cb_record_sink {
    void *ctx;
    cb_ring *(*new_ring)(void *ctx);                               /* NULL on OOM */
    void (*set_t0)(void *ctx, int64_t t0_ns);
    void (*set_splits)(void *ctx, size_t pipeline, const cb_splits *splits);
} cb_record_sink;

void cb_ring_init(cb_ring *r, cb_ring_backlog *backlog);
/* Frees every chunk. Producer and consumer must be done with the ring. */
void cb_ring_fini(cb_ring *r);

/* Producer slow path: a new chunk (the spare, or a new allocation). 0 or CB_ENOMEM. */
int cb__log_grow(cb_ring *r, cb_log *l);

static inline int cb__log_push(cb_ring *r, cb_log *l, const void *rec64) {
    if (__builtin_expect(l->cur == NULL || l->cur_n == l->cap, 0))
        if (cb__log_grow(r, l) != CB_OK) return CB_ENOMEM;
    memcpy(l->cur->recs + (size_t)l->cur_n * 64u, rec64, 64);
    l->cur_n++;
    atomic_store_explicit(&l->cur->n, l->cur_n, memory_order_release);
    return CB_OK;
}

static inline int cb_ring_stage(cb_ring *r, const cb_stage_event *e) { return cb__log_push(r, &r->stage, e); }
static inline int cb_ring_query(cb_ring *r, const cb_query_event *e) { return cb__log_push(r, &r->query, e); }
static inline int cb_ring_metric(cb_ring *r, const cb_metric_event *e) { return cb__log_push(r, &r->metric, e); }

/* Consumer: the next published records not yet consumed (*n of them, contiguous, at most a
 * chunk), or NULL when there are none now. Passing a chunk the producer has left recycles it. */
const unsigned char *cb_log_peek(cb_log *l, uint32_t *n);
/* Consumer: the first n records returned by the last peek are consumed. */
void cb_log_advance(cb_log *l, uint32_t n);
/* Consumer: keeps a pre-faulted spare ready for a log that is in use (a no-op when it has one,
 * or when the log has no record yet). */
void cb_log_refill_spare(cb_log *l);

#endif
