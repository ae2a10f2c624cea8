/* analysis/hist.c - streaming nearest-rank percentiles: exact up to CB_HIST_EXACT_MAX values,
 * then a log-linear histogram (see hist.h for the contract and the precision).
 *
 * Design: the layout is HDR Histogram's with 1024 sub-buckets. Chunk 0 counts the values
 * [0, 1024) one by one; chunk k >= 1 counts [2^(9+k), 2^(10+k)) in 512 buckets of width 2^k, so
 * a value v >= 1024 with highest bit e has k = e - 9 and bucket (v >> k) - 512: one
 * count-leading-zeros and a shift per value. Chunks are allocated on first use. Percentiles
 * walk the chunks in value order accumulating counts until each target rank (cb_stats_rank) is
 * reached; the value reported is the bucket's midpoint lo + 2^(k-1) (exact in chunk 0), clamped
 * to [min, max]. The exact sum is a two-word (128-bit two's complement) integer, so the mean is
 * exact however many values there are.
 * Thread-safety: one thread per cb_hist; no global state.
 * Ownership: the hist owns its array and chunks (cb_malloc'd), freed by cb_hist_fini.
 * Maxima: CB_HIST_MAX_BYTES of heap per hist (hist.h).
 */
#include "analysis/hist.h"

#include <string.h>

#include "colobench/error.h"
#include "core/alloc.h"

#define CB_HIST_EXACT_FIRST_CAP 64

void cb_hist_init(cb_hist *h) {
    if (!h) return;
    memset(h, 0, sizeof *h);
}

void cb_hist_fini(cb_hist *h) {
    if (!h) return;
    cb_free(h->exact);
    for (int k = 0; k < CB_HIST_CHUNKS; k++) cb_free(h->chunk[k]);
    memset(h, 0, sizeof *h);
}

static void fail(cb_hist *h) {
    cb_free(h->exact);
    h->exact = NULL;
    h->exact_cap = 0;
    for (int k = 0; k < CB_HIST_CHUNKS; k++) {
        cb_free(h->chunk[k]);
        h->chunk[k] = NULL;
    }
    h->chunk_bytes = 0;
    h->failed = true;
}

static inline size_t chunk_len(int k) { return k == 0 ? CB_HIST_SUB_BUCKETS : CB_HIST_HALF; }

/* Chunk and bucket of a value >= 0. */
static inline void locate(int64_t v, int *k, size_t *i) {
    if (v < CB_HIST_SUB_BUCKETS) {
        *k = 0;
        *i = (size_t)v;
        return;
    }
    int e = 63 - __builtin_clzll((unsigned long long)v);
    int c = e - (CB_HIST_SUB_BITS - 1);
    *k = c;
    *i = (size_t)(((uint64_t)v >> c) - CB_HIST_HALF);
}

/* Smallest value of bucket i of chunk k, and the midpoint reported for it. */
static inline int64_t bucket_mid(int k, size_t i) {
    if (k == 0) return (int64_t)i;
    uint64_t lo = ((uint64_t)CB_HIST_HALF + i) << k;
    return (int64_t)(lo + ((uint64_t)1 << (k - 1)));
}

/* Counts one value in histogram mode. */
static int hist_count(cb_hist *h, int64_t v) {
    if (v < 0) {
        h->negative++;
        v = 0;
    }
    int k;
    size_t i;
    locate(v, &k, &i);
    uint64_t *c = h->chunk[k];
    if (!c) {
        c = cb_calloc(chunk_len(k), sizeof *c);
        if (!c) {
            fail(h);
            return CB_ENOMEM;
        }
        h->chunk[k] = c;
        h->chunk_bytes += chunk_len(k) * sizeof *c;
    }
    c[i]++;
    return CB_OK;
}

/* Moves the kept values into the histogram and frees the array. */
static int to_histogram(cb_hist *h) {
    h->histogram = true;
    for (size_t j = 0; j < h->n; j++)
        if (hist_count(h, h->exact[j]) != CB_OK) return CB_ENOMEM;
    cb_free(h->exact);
    h->exact = NULL;
    h->exact_cap = 0;
    return CB_OK;
}

int cb_hist_add(cb_hist *h, int64_t v) {
    if (h->failed) return CB_ENOMEM;
    if (!h->histogram) {
        if (h->n < CB_HIST_EXACT_MAX) {
            if (h->n == h->exact_cap) {
                size_t cap = h->exact_cap ? 2 * h->exact_cap : CB_HIST_EXACT_FIRST_CAP;
                if (cap > CB_HIST_EXACT_MAX) cap = CB_HIST_EXACT_MAX;
                int64_t *a = cb_realloc(h->exact, cap * sizeof *a);
                if (!a) {
                    fail(h);
                    return CB_ENOMEM;
                }
                h->exact = a;
                h->exact_cap = cap;
            }
            h->exact[h->n] = v;
        } else if (to_histogram(h) != CB_OK || hist_count(h, v) != CB_OK) {
            return CB_ENOMEM;
        }
    } else if (hist_count(h, v) != CB_OK) {
        return CB_ENOMEM;
    }
    if (h->n == 0 || v < h->min) h->min = v;
    if (h->n == 0 || v > h->max) h->max = v;
    uint64_t lo = h->sum_lo + (uint64_t)v;
    h->sum_hi += (int64_t)(lo < h->sum_lo) - (int64_t)(v < 0);
    h->sum_lo = lo;
    h->n++;
    return CB_OK;
}

double cb_hist_mean(const cb_hist *h) {
    if (!h || h->n == 0) return 0.0;
    long double sum = (long double)h->sum_hi * 18446744073709551616.0L + (long double)h->sum_lo;
    return (double)(sum / (long double)h->n);
}

size_t cb_hist_bytes(const cb_hist *h) {
    return h ? h->exact_cap * sizeof *h->exact + h->chunk_bytes : 0;
}

/* Histogram mode: the reported values at ascending 1-based ranks r[0..m) (each in [1, n]). */
static void hist_ranks(const cb_hist *h, const size_t *r, int m, int64_t *out) {
    uint64_t cum = 0;
    int j = 0;
    for (int k = 0; k < CB_HIST_CHUNKS && j < m; k++) {
        const uint64_t *c = h->chunk[k];
        if (!c) continue;
        size_t len = chunk_len(k);
        for (size_t i = 0; i < len && j < m; i++) {
            if (!c[i]) continue;
            cum += c[i];
            while (j < m && cum >= r[j]) {
                int64_t v = bucket_mid(k, i);
                out[j++] = v < h->min ? h->min : v > h->max ? h->max : v;
            }
        }
    }
    for (; j < m; j++) out[j] = h->max; /* counts always reach n; never reached */
}

/* Every bucket a value of this hist fell in has width 1. */
static bool unit_buckets_only(const cb_hist *h) {
    return h->negative == 0 && h->max < CB_HIST_SUB_BUCKETS;
}

int cb_hist_pcts(cb_hist *h, cb_pcts *out) {
    memset(out, 0, sizeof *out);
    out->exact = true;
    if (!h || h->failed) {
        out->exact = false;
        return CB_ENOMEM;
    }
    if (h->n == 0) return CB_OK;
    if (!h->histogram) {
        cb_stats_pcts(h->exact, h->n, out);
        return CB_OK;
    }
    static const double ps[5] = {0.50, 0.90, 0.95, 0.99, 0.999};
    size_t r[5];
    int64_t v[5];
    for (int j = 0; j < 5; j++) r[j] = cb_stats_rank(h->n, ps[j]);
    hist_ranks(h, r, 5, v);
    out->n = h->n;
    out->min = h->min;
    out->max = h->max;
    out->p50 = v[0];
    out->p90 = v[1];
    out->p95 = v[2];
    out->p99 = v[3];
    out->p999 = v[4];
    out->mean = cb_hist_mean(h);
    out->exact = unit_buckets_only(h);
    return CB_OK;
}

int64_t cb_hist_percentile(cb_hist *h, double p) {
    if (!h || h->failed || h->n == 0) return 0;
    if (!h->histogram) {
        cb_stats_sort(h->exact, h->n);
        return cb_stats_nearest_rank(h->exact, h->n, p);
    }
    size_t r = cb_stats_rank(h->n, p);
    int64_t v;
    hist_ranks(h, &r, 1, &v);
    return v;
}
