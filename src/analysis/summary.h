/* analysis/summary.h - summary.json and the end-of-run table, computed from the records.
 *
 * The records are read in streaming passes (record/records.h: arrays or raw .bin files), so the
 * memory of every function here is bounded whatever the number of records (the bound is in
 * summary.c's header). Precision: counts, sums, means, minima, maxima, windows and rates are
 * exact; percentiles are exact over at most CB_HIST_EXACT_MAX (8192) values and otherwise
 * within a relative CB_HIST_REL_ERROR (2^-10) of the exact nearest-rank value (analysis/hist.h);
 * cb_pcts.exact and summary.json's "precision" object say which (docs/outputs.md, Precision).
 *
 * Definitions (also in docs/outputs.md):
 * - Warm-up queries are the first loadgen.warmup_queries query ids of a pipeline; they and their
 *   stage events are recorded but left out of every statistic.
 * - queries: measured queries that completed with status ok.
 * - latency = end_ns - scheduled_ns (scheduled == submit for closed and offline loads, so open
 *   loads count queueing before submission too: no coordinated omission).
 * - throughput_qps = queries / (last measured end - first measured scheduled).
 * - a rate that is undefined (no span: fewer than 2 queries for achieved_qps) is NaN, written
 *   as null in JSON and "-" in the table, never 0.
 * - per stage: runs, service_ns = end - start, queue_ns = start - enqueue, transition_ns_p50 =
 *   median of start - prev_end (end of the upstream run that fed it) over its runs.
 * - per stage with device time (runs that called host->device_time): device_ns statistics over
 *   those measured runs, their sum, and device_busy_fraction = sum / the stage's span (first
 *   start to last end of its measured runs; above 1 when several workers overlap on the GPU).
 * - open loop: target_qps (config), achieved_qps (measured submissions over their span) and the
 *   dispatch delay submit - scheduled (p50, p99, max).
 * - per stage "metrics" and the pipeline's images_per_s: aggregates of the stage metric reports
 *   over the throughput window (analysis/stage_metrics.h).
 * A record file that exists but cannot be read is CB_EIO, with a message naming it.
 * Pure functions over borrowed inputs; thread-safe.
 */
#ifndef CB_ANALYSIS_SUMMARY_H
#define CB_ANALYSIS_SUMMARY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/json.h"
#include "analysis/stats.h"
#include "core/event.h"
#include "core/spec.h"
#include "record/records.h" /* cb_pipeline_record: a pipeline's records, in arrays or files */

typedef struct cb_summary_input {
    const cb_spec *spec;
    int64_t t0_ns;                 /* run start, monotonic */
    int64_t end_ns;                /* run end, monotonic */
    int64_t wall_start_ns;         /* CLOCK_REALTIME at t0 */
    bool interrupted;              /* SIGINT/SIGTERM stopped the run */
    bool timed_out;                /* a pipeline hit its timeout */
    const char *const *errors; size_t n_errors; /* one line each */
    const cb_pipeline_record *pipelines;        /* spec->n_pipelines entries */
    const int64_t *prepare_ns;     /* untimed prepare() per stage (summed over workers), flat in
                                      pipeline then stage order; NULL when unknown */
    /* Optional: writes further top-level members ("collocation", "monitors", ...) after
     * "pipelines" (key and value each). NULL = none. */
    void (*extra_json)(void *arg, cb_json *j);
    void *extra_arg;
} cb_summary_input;

typedef struct cb_stage_stats {
    size_t runs;
    cb_pcts service_ns, queue_ns;
    int64_t transition_ns_p50;
    /* Device time (host->device_time): over the measured runs that reported some. */
    cb_pcts device_ns;             /* device_ns.n == 0: no measured run reported device time */
    int64_t device_sum_ns;         /* sum of device_ns over those runs */
    int64_t span_ns;               /* last end - first start of the stage's measured runs */
    double device_busy_fraction;   /* device_sum_ns / span_ns; 0 when undefined */
    bool transition_exact;         /* transition_ns_p50 is exact (else within CB_HIST_REL_ERROR) */
} cb_stage_stats;

typedef struct cb_pipeline_stats {
    size_t queries_total, warmup, ok, dropped, errors, cancelled;
    size_t measured;               /* non-warm-up queries with status ok */
    int64_t window_start_ns, window_end_ns; /* relative to t0 */
    double throughput_qps;         /* NaN without a measured query or a window of length 0 */
    cb_pcts latency_ns;
    double target_qps;             /* open loop only, else 0; replay: NaN under 2 queries */
    double achieved_qps;           /* open loop only, else 0; NaN under 2 submitted queries */
    cb_pcts dispatch_delay_ns;     /* open loop only */
    cb_stage_stats *stages;        /* n_stages entries, cb_malloc'd */
    cb_error err;                  /* after a failed compute: why (CB_EIO names the file) */
} cb_pipeline_stats;

/* Only the throughput window of pipeline `pipeline` (as cb_pipeline_stats_compute defines it:
 * first measured ok scheduled_ns to last measured ok end_ns, absolute), from one pass over its
 * query records: *has is false when it measured nothing. CB_OK or CB_EIO with err. */
int cb_pipeline_window(const cb_summary_input *in, size_t pipeline, int64_t *start_ns,
                       int64_t *end_ns, bool *has, cb_error *err);

/* Computes one pipeline's statistics; free with cb_pipeline_stats_fini (also after an error).
 * CB_OK, CB_EINVAL, CB_ENOMEM or CB_EIO (out->err says which file). */
int cb_pipeline_stats_compute(const cb_summary_input *in, size_t pipeline, cb_pipeline_stats *out);
void cb_pipeline_stats_fini(cb_pipeline_stats *s);

/* summary.json: the pipelines, then "precision" (what is approximate, docs/outputs.md), then
 * in->extra_json's members. On error the output is incomplete and err says why. */
int cb_summary_write_json(const cb_summary_input *in, FILE *out, cb_error *err);
/* The end-of-run table; a pipeline whose statistics fail gets a line with the reason. */
void cb_summary_print_table(const cb_summary_input *in, FILE *out);

#endif
