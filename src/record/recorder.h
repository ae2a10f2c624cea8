/* record/recorder.h - per-thread event rings and the writer thread.
 *
 * Design: every thread that runs stages owns one cb_ring (three single-producer logs: stage
 * events, query events, stage metric reports) obtained with cb_recorder_ring(). The hot path
 * copies a 64-byte record into its log and publishes it with a release store: no lock, no
 * syscall, no formatting, no waiting. One writer thread (`cb-writer`) follows every log, formats
 * CSV rows into events.csv, queries.csv and stage_metrics.csv, writing whole lines and flushing
 * at least every flush_period_ns, so the files are valid CSV up to the last flush at every
 * moment and a crash loses at most that period. Records are never dropped;
 * the logs are kept and gathered per pipeline for the summary when the run stops.
 * Thread-safety: cb_recorder_ring is thread-safe (mutex on the ring list). A ring is used by one
 * producer thread only. Records arrays are read only after cb_recorder_stop().
 */
#ifndef CB_RECORD_RECORDER_H
#define CB_RECORD_RECORDER_H

#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

#include "analysis/summary.h"
#include "core/spec.h"
#include "core/event.h"

typedef struct cb_recorder cb_recorder;

/* Header of events.csv (docs/outputs.md). device_ns, last, is empty for runs that reported no
 * device time. */
#define CB_EVENTS_CSV_HEADER \
    "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,enqueue_ns,start_ns,end_ns," \
    "device_ns\n"

/* Header of stage_metrics.csv (also written by the collocation parent when it merges). */
#define CB_STAGE_METRICS_CSV_HEADER \
    "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,t_ns,metric,value\n"

/* A single-producer log of 64-byte records: a list of chunks that only grows. The producer
 * appends and publishes the count with a release store; the writer formats behind it and keeps
 * the chunks for the summary. The writer keeps one pre-faulted spare chunk per log so the
 * producer never page-faults or allocates on the hot path while the writer keeps up; when the
 * writer lags, the producer allocates a chunk itself (it never waits and never drops). Chunks
 * of stage and query logs hold CB_LOG_CHUNK_RECORDS records (1 MiB); the metric log, present
 * whenever a stage merely declares metrics, holds CB_LOG_METRIC_CHUNK_RECORDS (256 KiB), so a
 * run that never reports pays little for it. */
#define CB_LOG_CHUNK_RECORDS 16384u
#define CB_LOG_METRIC_CHUNK_RECORDS 4096u

typedef struct cb_log_chunk {
    _Atomic(struct cb_log_chunk *) next;  /* published with release by the producer */
    _Atomic uint32_t n;                   /* records published in this chunk */
    _Alignas(64) unsigned char recs[];    /* cap * 64 bytes (the log's cap) */
} cb_log_chunk;

typedef struct cb_log {
    uint32_t cap;                         /* records per chunk; set at init, then read-only */
    cb_log_chunk *first;                  /* for the writer and the summary */
    cb_log_chunk *cur;                    /* producer's chunk */
    uint32_t cur_n;                       /* producer's count in cur */
    _Atomic(cb_log_chunk *) spare;        /* writer fills, producer takes */
    cb_log_chunk *wchunk;                 /* writer's position */
    uint32_t wpos;
    _Atomic uint64_t self_alloc;          /* chunks the producer had to allocate itself */
} cb_log;

typedef struct cb_ring {
    cb_log stage;   /* cb_stage_event */
    cb_log query;   /* cb_query_event */
    cb_log metric;  /* cb_metric_event; no chunks (first == NULL) when no stage of the spec
                       declares metrics, so such runs pay no memory for it */
    struct cb_ring *next;
} cb_ring;

typedef struct cb_recorder_opts {
    const cb_spec *spec;
    const char *out_dir;       /* NULL: keep records in memory only (tests, benchmarks) */
    int64_t t0_ns;             /* run start (or set later with cb_recorder_set_t0) */
    int64_t flush_period_ns;   /* 0 = 50 ms */
    /* Also stream every record as written in memory (64-byte cb_stage_event / cb_query_event /
     * cb_metric_event, absolute CLOCK_MONOTONIC times, host byte order) to events.bin,
     * queries.bin and metrics.bin, and write the pipeline's cb_splits (when it has a dataset
     * stage) to splits.bin: how a collocation child hands its exact records to the parent.
     * Whole records up to the last flush at every moment; a reader ignores a trailing partial
     * record. */
    bool raw;
} cb_recorder_opts;

#define CB_RECORDER_OPTS_DEFAULT {NULL, NULL, 0, 0, false}

/* Opens the CSV files (writing their headers; stage_metrics.csv too, even when no stage declares
 * metrics) and starts the writer thread. */
int cb_recorder_create(const cb_recorder_opts *opts, cb_recorder **out, cb_error *err);

/* Sets the run's t0 (CSV times are relative to it) before any record is made. */
void cb_recorder_set_t0(cb_recorder *rec, int64_t t0_ns);

/* Sets the split names of a pipeline for the CSV `split` column and the summary (before records
 * arrive; not concurrently with itself). Raw mode also writes them to splits.bin. */
void cb_recorder_set_splits(cb_recorder *rec, size_t pipeline, const cb_splits *splits);

/* A new ring for the calling thread (owned by the recorder). NULL on OOM. */
cb_ring *cb_recorder_ring(cb_recorder *rec);

/* Drains every ring, writes and closes the files, joins the writer. Idempotent. Producers must
 * have stopped. */
int cb_recorder_stop(cb_recorder *rec, cb_error *err);

/* In-memory records of pipeline i (gathered at stop; valid until destroy). */
cb_pipeline_record cb_recorder_records(const cb_recorder *rec, size_t pipeline);

/* Live figures for progress lines (any thread, any time): queries ended so far and the
 * p50/p99 latency of the most recent ones (up to 65536), in ns. */
void cb_recorder_progress(cb_recorder *rec, size_t pipeline, uint64_t *ended, int64_t *p50_ns,
                          int64_t *p99_ns);

void cb_recorder_destroy(cb_recorder *rec); /* NULL is a no-op; stops first */

/* ---- hot path ---------------------------------------------------------------------------- */

void cb__log_grow(cb_log *l);

static inline void cb__log_push(cb_log *l, const void *rec64) {
    if (__builtin_expect(l->cur_n == l->cap, 0)) cb__log_grow(l);
    __builtin_memcpy(l->cur->recs + (size_t)l->cur_n * 64u, rec64, 64);
    l->cur_n++;
    atomic_store_explicit(&l->cur->n, l->cur_n, memory_order_release);
}

static inline void cb_ring_stage(cb_ring *r, const cb_stage_event *e) { cb__log_push(&r->stage, e); }
static inline void cb_ring_query(cb_ring *r, const cb_query_event *e) { cb__log_push(&r->query, e); }
/* Only for rings of a recorder whose spec declares metrics (the runtime bounds the index by the
 * stage's declared count first, so a stage without metrics never gets here). */
static inline void cb_ring_metric(cb_ring *r, const cb_metric_event *e) {
    cb__log_push(&r->metric, e);
}

#endif
