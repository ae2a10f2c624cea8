/* record/records.h - where a pipeline's recorded records are, and how to read them in batches
 * of bounded size: the one way the analysis layer sees records.
 *
 * A cb_pipeline_record names one pipeline's records of the three kinds (queries, stage events,
 * stage metric reports; the 64-byte structs of core/event.h). Each kind is either an in-memory
 * array (hand-built inputs in tests and tools) or a raw file the recorder streamed
 * (queries.bin, events.bin, metrics.bin: whole records in host byte order, as written in
 * memory). When a kind's path is set, the file is read and the array ignored. A file may hold
 * several pipelines (threads mode: one set of files for the run, each record's `pipeline` field
 * the pipeline's index in the spec): file_pipeline selects the records whose field equals it,
 * or -1 takes every record (processes mode: each child's own files, whose records say 0).
 * Arrays are never filtered. A trailing partial record (a crash mid-write) is ignored; a file
 * that does not exist holds no records (a child that died before creating it); any other
 * failure to open or read is an error naming the file.
 *
 * The iterator yields batches of one kind: an array as one batch (no copy); a file through one
 * buffer of CB_REC_BUF_BYTES (1 MiB) filled with read(2), filtered in place. So a pass over any
 * number of records costs one buffer. Several passes = open again.
 *
 *   cb_rec_iter it;
 *   int rc = cb_rec_iter_open(&it, rec, CB_REC_QUERIES, err);
 *   const void *b; size_t n;
 *   while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &n)) > 0)
 *       for (const cb_query_event *q = b, *e = q + n; q < e; q++) ...;
 *   cb_rec_iter_close(&it);      (rc: 0 at the end, negative CB_E* with err on a read error)
 *
 * cb_records_load reads a record source whole into arrays (tests, tools): its memory grows with
 * the records, so the analysis never uses it.
 *
 * Layering: record/ includes nothing from analysis/ (the analysis includes this header).
 * Thread-safety: an iterator is used by one thread; a cb_pipeline_record is read-only, so any
 * number of iterators may read one concurrently. Ownership: everything a cb_pipeline_record
 * points to is borrowed and must outlive the iterators over it; a batch is valid until the next
 * cb_rec_iter_next or cb_rec_iter_close.
 *
 * History: 2026-12-07 cb_pipeline_record moved here from analysis/summary.h (its fields unchanged)
 * and gained queries_bin, events_bin, metrics_bin and file_pipeline (appended).
 */
#ifndef CB_RECORD_RECORDS_H
#define CB_RECORD_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "colobench/stage.h"
#include "core/event.h"

typedef struct cb_pipeline_record {
    const cb_query_event *queries; size_t n_queries;      /* every ended query, any order */
    const cb_stage_event *stage_events; size_t n_stage_events; /* every recorded stage run */
    const cb_metric_event *metrics; size_t n_metrics;     /* every stage metric report, any order */
    const cb_splits *splits;       /* the dataset's splits (names for by_split); NULL: none */
    /* Raw files, read instead of the arrays when set (NULL: the array). */
    const char *queries_bin;       /* cb_query_event records */
    const char *events_bin;        /* cb_stage_event records */
    const char *metrics_bin;       /* cb_metric_event records */
    int file_pipeline;             /* files only: keep the records whose `pipeline` field equals
                                      it (0 in a zeroed struct); -1 = every record */
} cb_pipeline_record;

typedef enum cb_rec_kind {
    CB_REC_QUERIES = 0,            /* cb_query_event */
    CB_REC_EVENTS = 1,             /* cb_stage_event */
    CB_REC_METRICS = 2,            /* cb_metric_event */
} cb_rec_kind;

#define CB_REC_BYTES 64u                        /* every record kind is 64 bytes */
#define CB_REC_BUF_BYTES (1u << 20)             /* one iterator's buffer: 16384 records */

typedef struct cb_rec_iter {
    cb_rec_kind kind;
    cb_error *err;                 /* borrowed; may be NULL */
    const void *array;             /* array source: the batch, yielded once */
    size_t n_array;
    int fd;                        /* file source: open descriptor, -1 when none */
    const char *path;              /* borrowed from the record */
    unsigned char *buf;            /* CB_REC_BUF_BYTES, cb_malloc'd */
    size_t carry;                  /* bytes of a record cut by the buffer's end ... */
    size_t carry_off;              /* ... at this offset, moved to the front by the next call */
    int file_pipeline;
    size_t pipeline_offset;        /* of the kind's `pipeline` field */
    bool eof;
    uint64_t records;              /* records yielded so far */
    uint64_t bytes_ignored;        /* trailing partial record bytes at the end of the file */
} cb_rec_iter;

/* Starts a pass over rec's records of one kind. CB_OK (a missing file is an empty source), or
 * CB_EIO naming the file when it exists and cannot be opened, or CB_ENOMEM. On error nothing
 * is left to close (closing anyway is harmless). err may be NULL. */
int cb_rec_iter_open(cb_rec_iter *it, const cb_pipeline_record *rec, cb_rec_kind kind,
                     cb_error *err);

/* The next batch: 1 with *batch and *n (n >= 1 records of the kind), 0 at the end, or a negative
 * CB_E* code (CB_EIO, the message naming the file) on a read error. */
int cb_rec_iter_next(cb_rec_iter *it, const void **batch, size_t *n);

/* Ends the pass (releases the descriptor and the buffer). Safe on a zeroed iterator and
 * repeatedly. */
void cb_rec_iter_close(cb_rec_iter *it);

/* Whether rec's records of a kind come from a file. */
bool cb_records_from_file(const cb_pipeline_record *rec, cb_rec_kind kind);

/* A record source read whole into arrays: `rec` points at them (with src's splits), so it can
 * stand wherever src did. Memory grows with the number of records (tests and tools only). */
typedef struct cb_loaded_records {
    cb_pipeline_record rec;
    cb_query_event *queries;
    cb_stage_event *stage_events;
    cb_metric_event *metrics;
} cb_loaded_records;

/* Fills out from src (arrays are copied too). On error out is empty (nothing to free, though
 * cb_loaded_records_fini is harmless). */
int cb_records_load(const cb_pipeline_record *src, cb_loaded_records *out, cb_error *err);
void cb_loaded_records_fini(cb_loaded_records *l); /* safe on a zeroed struct, idempotent */

#endif
