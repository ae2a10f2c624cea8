/* stages/data/prefetch.h - background producers of numbered batches for the data.* stages.
 *
 * A prefetcher runs `threads` producer threads that call make(ctx, seq) for seq = 0, 1, 2, ...
 * (the order the load generator asks for batches) and keep at most `depth` batches made or in
 * the making. The one consumer (a stage instance's run(), never concurrent with itself) takes
 * batch seq with cb__prefetch_get: a ready batch is handed over, one in the making is waited
 * for, and anything else (a batch already taken, skipped, or far ahead) is made synchronously
 * in the caller's thread by the same make(). Asking for seq also discards every ready batch
 * below it (nobody will ask for them in order) and moves the producers past seq when they are
 * behind, so several instances sharing one stream, or out-of-order queries, stay correct and
 * never stall the producers. Whatever the timing, get(seq) returns make(seq)'s result: make must
 * be a pure function of seq (the data.* stages derive everything from (seed, split, epoch,
 * batch)), and it is called from several threads at once.
 *
 * Thread-safety: create/destroy and get from one thread (the stage instance's); producers are
 * internal. Ownership: get hands the caller one reference to the batch; destroy stops and joins
 * every producer (each finishes the batch it is making first) and releases undelivered batches,
 * whether or not the stream was consumed to the end.
 */
#ifndef CB_STAGES_DATA_PREFETCH_H
#define CB_STAGES_DATA_PREFETCH_H

#include <stdint.h>

#include "colobench/stage.h"

/* Makes batch seq into *out (one new reference). 0, or a CB_E* code with a message in err. */
typedef int (*cb_prefetch_make_fn)(void *ctx, int64_t seq, cb_buffer **out, cb_error *err);

typedef struct cb_prefetch_opts {
    const cb_host *host;      /* alloc/free/buffer_unref; lives longer than the prefetcher */
    const char *name;         /* for thread names, "cb-pf-NAME" (truncated to 15 bytes) */
    int depth;                /* batches made ahead at most, >= 1 */
    int threads;              /* producer threads, >= 1 */
    int64_t planned;          /* producers stop at this seq unless get() asks beyond it */
    cb_prefetch_make_fn make; /* thread-safe */
    void *ctx;
} cb_prefetch_opts;

typedef struct cb_prefetch cb_prefetch;

/* Starts the producers. 0, or CB_ENOMEM / CB_EIO (thread creation) with a message. */
int cb__prefetch_create(const cb_prefetch_opts *opts, cb_prefetch **out, cb_error *err);

/* Batch seq (>= 0), blocking until it is ready; returns make(seq)'s status and, on success, a
 * reference in *out. */
int cb__prefetch_get(cb_prefetch *pf, int64_t seq, cb_buffer **out, cb_error *err);

/* Counters for tests and logs: batches handed over ready (hits) and made in get() (misses). */
void cb__prefetch_stats(const cb_prefetch *pf, uint64_t *hits, uint64_t *misses);

/* Stops and joins the producers, releases everything. NULL is a no-op. */
void cb__prefetch_destroy(cb_prefetch *pf);

#endif
