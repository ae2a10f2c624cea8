/* analysis/stage_metrics.h - aggregates of the metrics stages report (host->report) for
 * summary.json and the end-of-run table.
 *
 * Definitions (also in docs/outputs.md), over one stage's measured reports of one metric (query
 * id not warm-up), ordered by (query id, report time):
 * - reports whose value is NaN or infinite are counted in non_finite and enter nothing else;
 *   n counts the others;
 * - COUNT: sum, mean = sum / n, per_second = sum / the pipeline's throughput window (first
 *   measured scheduled_ns to last measured end_ns), undefined when that window is empty;
 * - GAUGE: first, last, mean, min, max, and first_tenth_mean / last_tenth_mean: the means of the
 *   first and of the last ceil(n / 10) reports; by_split (when the pipeline has a dataset): per
 *   split, n, mean and last of the reports made on queries of that split;
 * - precision: everything is exact (sums compensated, so their rounding does not depend on the
 *   order the reports are read in) except the tenths of a metric with more than
 *   CB_STAGE_METRICS_EXACT_MAX reports: those come from CB_STAGE_METRICS_BINS bins of equal
 *   query-id width over [min id, max id] (count and sum each), whole bins up to the one that
 *   straddles the tenth's boundary, which contributes pro rata (its sum times the share of its
 *   reports the tenth needs); so only the reports of that one bin at each end are averaged
 *   rather than taken in order (tenths_exact false);
 * - DIST: mean, min, max (exact) and p50, p90, p95, p99: nearest-rank percentiles of the values
 *   rounded to integers (analysis/hist.h: exact up to CB_HIST_EXACT_MAX reports, then within
 *   CB_HIST_REL_ERROR, percentiles_exact says which); no tenths, no by_split;
 * - images_per_s: per_second of the first stage's COUNT metric named "images", if any.
 * Statistics of an empty set are NAN (null in JSON, "-" in the table).
 * Memory is bounded whatever the number of reports (stage_metrics.c states the bound).
 * Pure functions over borrowed inputs; thread-safe.
 */
#ifndef CB_ANALYSIS_STAGE_METRICS_H
#define CB_ANALYSIS_STAGE_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/json.h"
#include "analysis/summary.h"

#define CB_STAGE_METRICS_EXACT_MAX 65536  /* reports per GAUGE kept for exact tenths */
#define CB_STAGE_METRICS_BINS 8192        /* query-id bins for the tenths beyond that */

typedef struct cb_split_metric {
    size_t n;
    double mean, last;
} cb_split_metric;

typedef struct cb_metric_stats {
    const cb_metric_def *def;  /* borrowed from the stage's ops */
    size_t n;                  /* measured reports with a finite value */
    size_t non_finite;         /* measured reports that were NaN or infinite */
    double sum, mean, first, last, min, max;
    double first_tenth_mean, last_tenth_mean;
    double per_second;         /* COUNT: sum per second of the window; NAN when undefined */
    int n_splits;              /* GAUGE with a dataset: entries of by_split, else 0 */
    cb_split_metric by_split[CB_MAX_SPLITS];
    bool tenths_exact;         /* first/last_tenth_mean exact (n <= CB_STAGE_METRICS_EXACT_MAX) */
    double p50, p90, p95, p99; /* DIST: nearest-rank percentiles of the values rounded to integers */
    bool pcts_exact;           /* DIST: exact, else within CB_HIST_REL_ERROR (analysis/hist.h) */
} cb_metric_stats;

typedef struct cb_stage_metrics {
    size_t n_stages;
    size_t *first;             /* n_stages + 1 offsets: stage s owns stats[first[s], first[s+1]) */
    cb_metric_stats *stats;    /* every declared metric of every stage, in declaration order */
    int images_stage;          /* stage of the first COUNT metric named "images", or -1 */
    double images_per_s;       /* its per_second; NAN without one or without a window */
    cb_error err;              /* after a failed compute: why (CB_EIO names the file) */
} cb_stage_metrics;

/* Computes pipeline `pipeline`'s stage metrics; window_ns is the length of its throughput
 * window (0 when it has none). Free with cb_stage_metrics_fini (also after an error). */
int cb_stage_metrics_compute(const cb_summary_input *in, size_t pipeline, int64_t window_ns,
                             cb_stage_metrics *out);
void cb_stage_metrics_fini(cb_stage_metrics *m);

/* Writes `"metrics": {...}` for stage s: every declared metric with measured reports, in
 * declaration order. splits names the by_split keys (NULL: no by_split). */
void cb_stage_metrics_json(cb_json *j, const cb_stage_metrics *m, size_t s,
                           const cb_splits *splits);

/* One table line for stage s, `  NAME: images 1600 (412.3/s)  loss 2.31 -> 0.41`; nothing when
 * the stage has no measured reports. */
void cb_stage_metrics_print(FILE *out, const cb_stage_metrics *m, size_t s, const char *name);

#endif
