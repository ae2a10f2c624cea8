/* analysis/stats.h - latency statistics. Pure functions, thread-safe.
 * Percentiles are nearest-rank, as MLPerf LoadGen defines them: the value at 1-based rank
 * ceil(p * n) of the sorted sample (rank 1 for p = 0). */
#ifndef CB_ANALYSIS_STATS_H
#define CB_ANALYSIS_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef struct cb_pcts {
    size_t n;
    int64_t min, p50, p90, p95, p99, p999, max;
    double mean;
} cb_pcts;

/* Sorts values in place (ascending). */
void cb_stats_sort(int64_t *values, size_t n);

/* Nearest-rank percentile of an ascending array; 0 when n == 0. p in [0, 1]. */
int64_t cb_stats_nearest_rank(const int64_t *sorted, size_t n, double p);

/* Sorts values in place and fills out (all zero when n == 0). */
void cb_stats_pcts(int64_t *values, size_t n, cb_pcts *out);

#endif
