/* analysis/trace.h - trace.json in the Chrome trace-event JSON format (opened by Perfetto
 * ui.perfetto.dev and chrome://tracing).
 *
 * Layout: one process track per pipeline (pid = the OS pid that ran it when known, else
 * 1 + pipeline index; named "pipeline NAME" via process_name metadata), one thread track per
 * stage worker (tid derived from stage index and worker, named "STAGE #W"), one complete event
 * ("ph":"X") per stage run with args {query, split, epoch, batch, queue_us}, flow events
 * ("ph":"s"/"t"/"f", bound to the enclosing slice) that follow each query from stage to stage in
 * time order, and counter tracks ("ph":"C") for the monitored metrics read from metrics.csv
 * (one track per source/device/pid/metric series, on a separate "monitors" process).
 * Times in microseconds relative to the run's t0 (the JSON format's unit), with ns precision.
 *
 * Long runs: when the run has more than max_slices stage runs, whole queries are sampled (every
 * k-th query id, in every pipeline, so each kept query keeps all its slices and flows) to stay
 * under the cap, and the file's "metadata" says so ({"sampled": true, "slices_total": N,
 * "slices_written": M, "query_sampling_stride": k}). k is the smallest stride whose expected
 * kept slices fit (ids assumed evenly spread), doubled while the kept slices do not fit; query 0
 * is always kept, whole, even when it alone has more slices than the cap. Warm-up queries are
 * included and marked in args. The records are read in streaming passes (record/records.h):
 * memory is O(max_slices) whatever the length of the run (trace.c states the bound).
 *
 * Pure function over borrowed inputs; thread-safe.
 */
#ifndef CB_ANALYSIS_TRACE_H
#define CB_ANALYSIS_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/summary.h"
#include "colobench/error.h"
#include "core/spec.h"

#define CB_TRACE_DEFAULT_MAX_SLICES 1000000

typedef struct cb_trace_input {
    const cb_spec *spec;
    int64_t t0_ns;                          /* absolute CLOCK_MONOTONIC origin */
    const cb_pipeline_record *pipelines;    /* spec->n_pipelines entries */
    const int *pids;                        /* per pipeline OS pid, or NULL */
    const char *metrics_csv;                /* path of metrics.csv (t_ns already relative to
                                               t0), or NULL: no counter tracks */
    size_t max_slices;                      /* 0 = CB_TRACE_DEFAULT_MAX_SLICES */
} cb_trace_input;

/* Writes the trace. A malformed metrics.csv row is an error naming the file and line; a record
 * file that cannot be read is CB_EIO naming it. */
int cb_trace_write(const cb_trace_input *in, FILE *out, cb_error *err);

#endif
