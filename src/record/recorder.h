/* record/recorder.h - the writer of a run's records: it consumes the per-thread rings
 * (core/ring.h) and streams every record to disk.
 *
 * Design: the recorder is the run's record sink (cb_recorder_sink): it creates one ring per
 * producer thread, and one writer thread (`cb-writer`) follows every ring, formats CSV rows into
 * events.csv, queries.csv and stage_metrics.csv and appends the raw 64-byte records, as the
 * runtime made them (absolute CLOCK_MONOTONIC times, host byte order), to events.bin,
 * queries.bin and metrics.bin; splits.bin holds the dataset splits of the pipelines that have
 * one. The raw files are what the analysis reads back (summary, interference, trace) and what
 * `colobench summarize` rebuilds from: nothing is kept in memory, so the recorder's memory is
 * flat in the run's length (rings recycle their chunks and share a 32 MiB backlog bound, beyond
 * which producers wait for the writer; a fixed 256 KiB buffer per file; a 512 KiB recent-latency
 * window per pipeline for progress lines).
 *
 * Files: created without following symbolic links (core/path.h). Rows and records are written
 * whole, at least every flush_period_ns, so every file is valid up to its last flush at every
 * moment and a crash loses at most that period. A write error (a full disk) is never papered
 * over: the file that failed is truncated back to its last whole row, every file stops growing
 * (so they end at one cut), records are still consumed (memory stays bounded) but discarded, and
 * cb_recorder_check reports the error with its cause at once (the experiment stops the run);
 * cb_recorder_stop reports it again with how many records were written. Records a producer
 * could not keep (no memory for a chunk) are counted and reported the same way.
 *
 * Thread-safety: the sink's new_ring is thread-safe (mutex on the ring list); set_t0 and
 * set_splits are called before records arrive. cb_recorder_check and cb_recorder_progress may be
 * called from any thread at any time. A ring is used by one producer thread only.
 * Ownership: the recorder owns its rings and files; opts strings are borrowed for create.
 */
#ifndef CB_RECORD_RECORDER_H
#define CB_RECORD_RECORDER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/event.h"
#include "core/ring.h"
#include "core/spec.h"

typedef struct cb_recorder cb_recorder;

/* Header of events.csv (docs/outputs.md). device_ns, last, is empty for runs that reported no
 * device time. */
#define CB_EVENTS_CSV_HEADER \
    "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,enqueue_ns,start_ns,end_ns," \
    "device_ns\n"

#define CB_QUERIES_CSV_HEADER \
    "pipeline,query_id,split,epoch,batch,scheduled_ns,submit_ns,start_ns,end_ns,status\n"

/* Header of stage_metrics.csv (also written by the collocation parent when it merges). */
#define CB_STAGE_METRICS_CSV_HEADER \
    "pipeline,stage,stage_id,query_id,split,epoch,batch,worker,t_ns,metric,value\n"

/* splits.bin: one cb_splits_record per pipeline that has a dataset, host byte order. */
typedef struct cb_splits_record {
    int32_t pipeline;         /* index in the run's spec */
    int32_t reserved;
    cb_splits splits;
} cb_splits_record;

typedef struct cb_recorder_opts {
    const cb_spec *spec;
    const char *out_dir;       /* NULL: records are consumed and discarded (runtime benchmarks) */
    int64_t t0_ns;             /* run start (or set later through the sink) */
    int64_t flush_period_ns;   /* 0 = 50 ms */
} cb_recorder_opts;

#define CB_RECORDER_OPTS_DEFAULT {NULL, NULL, 0, 0}

/* Creates the files (headers written) and starts the writer thread. */
int cb_recorder_create(const cb_recorder_opts *opts, cb_recorder **out, cb_error *err);

/* The recorder as the runtime's record sink (valid until destroy). */
const cb_record_sink *cb_recorder_sink(cb_recorder *rec);

/* CB_OK, or the first write error (CB_EIO, its cause in err) or CB_ENOMEM when records were lost
 * for lack of memory. Any thread, any time. */
int cb_recorder_check(cb_recorder *rec, cb_error *err);

/* Live figures for progress lines (any thread, any time): queries ended so far and the
 * p50/p99 latency of the most recent ones (up to 65536), in ns. */
void cb_recorder_progress(cb_recorder *rec, size_t pipeline, uint64_t *ended, int64_t *p50_ns,
                          int64_t *p99_ns);

/* Drains every ring, writes and closes the files, joins the writer. Idempotent. Producers must
 * have stopped. Returns what cb_recorder_check would, with the counts of records written. */
int cb_recorder_stop(cb_recorder *rec, cb_error *err);

/* The time producer threads waited for the writer, summed (core/ring.h: when records come
 * faster than they can be written, producers wait instead of memory growing). */
int64_t cb_recorder_stall_ns(cb_recorder *rec);

/* The record backlog (core/ring.h): the most chunks ever written and not yet read, the bound,
 * and the number of rings. A producer exceeds the bound by at most two chunks per log, so
 * peak <= max + 6 x rings whatever the run's length or speed. */
void cb_recorder_backlog(const cb_recorder *rec, int64_t *peak_chunks, int64_t *max_chunks, size_t *n_rings);

/* Records written so far to each raw file (stage, query, metric). */
void cb_recorder_counts(const cb_recorder *rec, uint64_t *stage, uint64_t *query, uint64_t *metric);

void cb_recorder_destroy(cb_recorder *rec); /* NULL is a no-op; stops first */

/* Like destroy, but leaves the rings allocated: for a run whose stuck threads were abandoned
 * and may still push into them. */
void cb_recorder_destroy_keep_rings(cb_recorder *rec);

#endif
