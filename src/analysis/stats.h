/* analysis/stats.h - latency statistics. Pure functions, thread-safe.
 * Percentiles are nearest-rank, as MLPerf LoadGen defines them: the value at 1-based rank
 * ceil(p * n) of the sorted sample (rank 1 for p = 0). cb_pcts is filled exactly here
 * (cb_stats_pcts) or, for streams of any length, by analysis/hist.h, which says in `exact`
 * whether it could keep every value. */
#ifndef CB_ANALYSIS_STATS_H
#define CB_ANALYSIS_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cb_pcts {
    size_t n;
    int64_t min, p50, p90, p95, p99, p999, max;
    double mean;
    /* true: the percentiles are the exact nearest-rank values (always from cb_stats_pcts, and
     * from a cb_hist that kept every value); false: each is within the relative error stated in
     * analysis/hist.h (CB_HIST_REL_ERROR). n, min, max and mean are exact either way. */
    bool exact;
} cb_pcts;

/* The 1-based nearest-rank of percentile p over n values: ceil(p * n) clamped to [1, n], where
 * p * n within a relative 1e-9 of an integer counts as that integer (0.07 * 100 is rank 7);
 * 0 when n == 0. The one definition, shared by the exact and the histogram paths. */
size_t cb_stats_rank(size_t n, double p);

/* Sorts values in place (ascending). */
void cb_stats_sort(int64_t *values, size_t n);

/* Nearest-rank percentile of an ascending array; 0 when n == 0. p in [0, 1]. */
int64_t cb_stats_nearest_rank(const int64_t *sorted, size_t n, double p);

/* Sorts values in place and fills out (all zero when n == 0; exact = true). */
void cb_stats_pcts(int64_t *values, size_t n, cb_pcts *out);

#endif
