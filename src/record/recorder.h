/* record/recorder.h - per-thread event rings and the writer thread.
 *
 * Design: every thread that runs stages owns one cb_ring (single producer) obtained with
 * cb_recorder_ring(). The hot path copies a 64-byte record into the ring and publishes it with a
 * release store: no lock, no syscall, no formatting. One writer thread (`cb-writer`) drains
 * every ring, appends the records to in-memory arrays (for the summary) and formats CSV rows into
 * events.csv and queries.csv, writing whole lines and flushing at least every flush_period_ns, so
 * the files are valid CSV up to the last flush at every moment and a crash loses at most that
 * period. A full ring makes its producer wait (yielding) for the writer: records are never
 * dropped.
 * Thread-safety: cb_recorder_ring is thread-safe (mutex on the ring list). A ring is used by one
 * producer thread only. Records arrays are read only after cb_recorder_stop().
 */
#ifndef CB_RECORD_RECORDER_H
#define CB_RECORD_RECORDER_H

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "analysis/summary.h"
#include "core/spec.h"
#include "record/event.h"

typedef struct cb_recorder cb_recorder;

/* A single-producer single-consumer ring of 64-byte records. */
typedef struct cb_ring_half {
    _Alignas(64) _Atomic uint64_t head;   /* written by the producer (release) */
    uint64_t tail_cache;                  /* producer's last view of tail */
    _Alignas(64) _Atomic uint64_t tail;   /* written by the writer (release) */
    uint64_t mask;
    void *slots;                          /* (mask + 1) * 64 bytes */
} cb_ring_half;

typedef struct cb_ring {
    cb_ring_half stage;   /* cb_stage_event */
    cb_ring_half query;   /* cb_query_event */
    struct cb_ring *next;
} cb_ring;

typedef struct cb_recorder_opts {
    const cb_spec *spec;
    const char *out_dir;       /* NULL: keep records in memory only (tests, benchmarks) */
    int64_t t0_ns;             /* run start; CSV times are relative to it */
    uint32_t ring_records;     /* per ring half, power of two; 0 = 65536 */
    int64_t flush_period_ns;   /* 0 = 50 ms */
} cb_recorder_opts;

#define CB_RECORDER_OPTS_DEFAULT {NULL, NULL, 0, 0, 0}

/* Opens the CSV files (writing their headers) and starts the writer thread. */
int cb_recorder_create(const cb_recorder_opts *opts, cb_recorder **out, cb_error *err);

/* Sets the split names of a pipeline for the CSV `split` column (before records arrive). */
void cb_recorder_set_splits(cb_recorder *rec, size_t pipeline, const cb_splits *splits);

/* A new ring for the calling thread (owned by the recorder). NULL on OOM. */
cb_ring *cb_recorder_ring(cb_recorder *rec);

/* Drains every ring, writes and closes the files, joins the writer. Idempotent. Producers must
 * have stopped. */
int cb_recorder_stop(cb_recorder *rec, cb_error *err);

/* In-memory records of pipeline i (valid after stop, until destroy). */
cb_pipeline_record cb_recorder_records(const cb_recorder *rec, size_t pipeline);

/* Live figures for progress lines (any thread, any time): queries ended so far and the
 * p50/p99 latency of the most recent ones (up to 65536), in ns. */
void cb_recorder_progress(cb_recorder *rec, size_t pipeline, uint64_t *ended, int64_t *p50_ns,
                          int64_t *p99_ns);

void cb_recorder_destroy(cb_recorder *rec); /* NULL is a no-op; stops first */

/* ---- hot path ---------------------------------------------------------------------------- */

static inline void cb__ring_push(cb_ring_half *h, const void *rec64) {
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    if (head - h->tail_cache > h->mask) {
        /* Looks full: refresh the view of tail; wait for the writer if it really is full. */
        for (;;) {
            h->tail_cache = atomic_load_explicit(&h->tail, memory_order_acquire);
            if (head - h->tail_cache <= h->mask) break;
            sched_yield();
        }
    }
    __builtin_memcpy((char *)h->slots + (head & h->mask) * 64u, rec64, 64);
    atomic_store_explicit(&h->head, head + 1, memory_order_release);
}

static inline void cb_ring_stage(cb_ring *r, const cb_stage_event *e) { cb__ring_push(&r->stage, e); }
static inline void cb_ring_query(cb_ring *r, const cb_query_event *e) { cb__ring_push(&r->query, e); }

#endif
