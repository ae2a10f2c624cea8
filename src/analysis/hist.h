/* analysis/hist.h - a streaming accumulator of int64 nanosecond values with nearest-rank
 * percentiles, in memory bounded whatever the number of values.
 *
 * Two modes, switched once and never back:
 * - exact: the first CB_HIST_EXACT_MAX values are kept (an array grown by doubling); percentiles
 *   are then exactly those of analysis/stats.h (cb_stats_pcts on the kept values);
 * - histogram: at value CB_HIST_EXACT_MAX + 1 the kept values move into a log-linear histogram
 *   (HDR-style) and the array is freed. Values in [0, CB_HIST_SUB_BUCKETS) have a bucket each
 *   (exact); above, each power of two [2^e, 2^(e+1)) is split into CB_HIST_SUB_BUCKETS / 2
 *   linear buckets of width 2^(e-9). A percentile is the nearest-rank value's bucket (found from
 *   the counts with the same rank as cb_stats_rank), reported as the bucket's midpoint clamped to
 *   [min, max]: it is within CB_HIST_REL_ERROR = 2^-10 (~0.1%) of the exact nearest-rank value,
 *   relatively (the midpoint is at most half a bucket, 2^(e-10), from any value of the bucket,
 *   and every such value is at least 2^e). Buckets of one power of two ("octave", 4 KiB of
 *   counts) are allocated the first time a value falls in it, so latencies spanning 1 us to
 *   10 ms cost about 60 KiB.
 * n, min, max and mean are exact in both modes (the sum is kept in 128 bits). Negative values,
 * which a correct recorder never produces, are exact in exact mode; in histogram mode they are
 * counted in `negative` and enter the buckets as 0 (min and mean stay exact).
 * Memory: the heap one cb_hist owns is at most CB_HIST_MAX_BYTES (284 KiB: the exact array,
 * 64 KiB, while it is moved into a fully populated histogram, 220 KiB); cb_hist_bytes says how
 * much it owns now. The struct itself (sizeof(cb_hist), under 600 bytes) is the caller's.
 * Errors: an allocation failure makes the hist failed (every later add is ignored) and
 * cb_hist_add / cb_hist_pcts return CB_ENOMEM; nothing crashes, cb_hist_fini frees what it has.
 * Lifecycle: cb_hist_init / cb_hist_fini (fini is safe on a zeroed or already finished struct).
 * Thread-safety: a cb_hist is used by one thread at a time; no shared state.
 */
#ifndef CB_ANALYSIS_HIST_H
#define CB_ANALYSIS_HIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/stats.h"

#define CB_HIST_EXACT_MAX 8192         /* values kept exactly */
#define CB_HIST_SUB_BITS 10
#define CB_HIST_SUB_BUCKETS 1024       /* 2^CB_HIST_SUB_BITS: values below it are exact */
#define CB_HIST_HALF 512               /* linear buckets per octave above CB_HIST_SUB_BUCKETS */
#define CB_HIST_CHUNKS 54              /* [0, 1024), then octaves 2^10 .. 2^62 */
#define CB_HIST_REL_ERROR (1.0 / 1024.0) /* bound on |reported - exact| / exact, histogram mode */
#define CB_HIST_MAX_BYTES                                                                          \
    ((size_t)CB_HIST_EXACT_MAX * 8u + (size_t)CB_HIST_SUB_BUCKETS * 8u +                           \
     (size_t)(CB_HIST_CHUNKS - 1) * CB_HIST_HALF * 8u)

typedef struct cb_hist {
    size_t n;                  /* values added */
    int64_t min, max;          /* exact; 0 when n == 0 */
    uint64_t sum_lo;           /* exact sum, two's complement 128 bits: sum_hi * 2^64 + sum_lo */
    int64_t sum_hi;
    size_t negative;           /* histogram mode: negative values counted as 0 */
    int64_t *exact;            /* exact mode: the values (n of them), cb_malloc'd */
    size_t exact_cap;
    uint64_t *chunk[CB_HIST_CHUNKS]; /* histogram mode: counts, each allocated on first use */
    size_t chunk_bytes;        /* heap held by chunk[] */
    bool histogram;            /* switched to histogram mode */
    bool failed;               /* an allocation failed: results unavailable */
} cb_hist;

void cb_hist_init(cb_hist *h);
void cb_hist_fini(cb_hist *h);

/* Adds one value. CB_OK, or CB_ENOMEM when the hist is (now) failed. */
int cb_hist_add(cb_hist *h, int64_t v);

/* Fills out: n, min, max, mean exact; p50 .. p999 nearest-rank, exact when out->exact (every
 * value kept, or every value in the unit buckets), else within CB_HIST_REL_ERROR; all zero (and
 * exact) when n == 0. Sorts the kept values in place (adding more afterwards is allowed).
 * CB_ENOMEM (out zeroed) when the hist failed. */
int cb_hist_pcts(cb_hist *h, cb_pcts *out);

/* Nearest-rank percentile p in [0, 1] alone, with the same precision (0 when empty or failed). */
int64_t cb_hist_percentile(cb_hist *h, double p);

/* Exact mean (0 when empty). */
double cb_hist_mean(const cb_hist *h);

/* Heap bytes the hist owns now (at most CB_HIST_MAX_BYTES). */
size_t cb_hist_bytes(const cb_hist *h);

#endif
