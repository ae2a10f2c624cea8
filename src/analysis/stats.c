/* analysis/stats.c - sorting and nearest-rank percentiles of int64 samples (see stats.h).
 *
 * Design: cb_stats_sort is an LSD radix sort (8 passes of 8 bits over the sign-flipped key,
 * skipping every pass in which all keys share the byte, which for latencies is most of the high
 * bytes), so 10 million values sort in well under a second. It needs a scratch array of n
 * values; when that allocation fails it falls back to an in-place introsort (median-of-three
 * quicksort, heapsort past a depth limit, insertion sort for short ranges). Small arrays go
 * straight to insertion sort.
 * Percentiles follow MLPerf LoadGen's nearest-rank definition: the value at 1-based rank
 * ceil(p * n), clamped to [1, n]; p * n within a relative 1e-9 of an integer counts as that
 * integer, so 0.07 * 100 is rank 7, not 8, despite binary rounding.
 * cb_stats_rank is that rank alone, so the streaming histogram (hist.c) applies the very same
 * definition to its counts.
 * Thread-safety: pure functions over caller-owned arrays; no state.
 * Ownership: values are borrowed; the scratch array is allocated and freed inside the call.
 * Maxima: cb_stats_sort's scratch is n values (none on its in-place fallback); streams of any
 * length go through analysis/hist.h instead, which calls this on at most 8192 values.
 */
#include "analysis/stats.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"

#define CB_STATS_INSERTION_MAX 32
#define CB_STATS_RADIX_MIN 256

static void insertion_sort(int64_t *v, size_t n) {
    for (size_t i = 1; i < n; i++) {
        int64_t x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1] > x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static void sift_down(int64_t *v, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && v[child + 1] > v[child]) child++;
        if (v[root] >= v[child]) return;
        int64_t t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

static void heap_sort(int64_t *v, size_t n) {
    if (n < 2) return;
    for (size_t i = n / 2; i-- > 0;) sift_down(v, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        int64_t t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

static void intro_sort(int64_t *v, size_t n, int depth) {
    while (n > CB_STATS_INSERTION_MAX) {
        if (depth-- <= 0) {
            heap_sort(v, n);
            return;
        }
        /* Median of three as pivot. */
        int64_t a = v[0], b = v[n / 2], c = v[n - 1];
        int64_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        /* Hoare partition. */
        size_t i = 0, j = n - 1;
        for (;;) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i >= j) break;
            int64_t t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        size_t left = j + 1; /* v[0..left) <= pivot <= v[left..n) */
        if (left >= n) { /* cannot happen with a median-of-three pivot; never loop forever */
            heap_sort(v, n);
            return;
        }
        /* Recurse into the smaller side, loop on the larger: O(log n) stack. */
        if (left < n - left) {
            intro_sort(v, left, depth);
            v += left;
            n -= left;
        } else {
            intro_sort(v + left, n - left, depth);
            n = left;
        }
    }
    insertion_sort(v, n);
}

static void radix_sort(int64_t *v, int64_t *tmp, size_t n) {
    /* Keys as unsigned with the sign bit flipped, so unsigned order is signed order. */
    const uint64_t flip = UINT64_C(1) << 63;
    size_t counts[8][256];
    memset(counts, 0, sizeof counts);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = (uint64_t)v[i] ^ flip;
        for (int b = 0; b < 8; b++) counts[b][(k >> (8 * b)) & 0xff]++;
    }
    int64_t *src = v, *dst = tmp;
    for (int b = 0; b < 8; b++) {
        size_t *c = counts[b];
        uint64_t first_byte = (((uint64_t)v[0] ^ flip) >> (8 * b)) & 0xff;
        if (c[first_byte] == n) continue; /* every key has this byte: the pass is a no-op */
        size_t sum = 0;
        for (int d = 0; d < 256; d++) {
            size_t t = c[d];
            c[d] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t k = (uint64_t)src[i] ^ flip;
            dst[c[(k >> (8 * b)) & 0xff]++] = src[i];
        }
        int64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != v) memcpy(v, src, n * sizeof *v);
}

void cb_stats_sort(int64_t *values, size_t n) {
    if (!values || n < 2) return;
    if (n < CB_STATS_RADIX_MIN) {
        intro_sort(values, n, 64);
        return;
    }
    int64_t *tmp = cb_malloc(n * sizeof *tmp);
    if (tmp) {
        radix_sort(values, tmp, n);
        cb_free(tmp);
        return;
    }
    int depth = 0;
    for (size_t m = n; m > 1; m >>= 1) depth += 2;
    intro_sort(values, n, depth);
}

size_t cb_stats_rank(size_t n, double p) {
    if (n == 0) return 0;
    if (!(p > 0.0)) return 1; /* p = 0 (and NaN) is the minimum */
    if (p >= 1.0) return n;
    double x = p * (double)n;
    double r = nearbyint(x);
    if (fabs(x - r) <= 1e-9 * (r > 1.0 ? r : 1.0)) x = r;
    double rank = ceil(x);
    if (rank < 1.0) rank = 1.0;
    if (rank > (double)n) rank = (double)n;
    return (size_t)rank;
}

int64_t cb_stats_nearest_rank(const int64_t *sorted, size_t n, double p) {
    if (!sorted || n == 0) return 0;
    return sorted[cb_stats_rank(n, p) - 1];
}

void cb_stats_pcts(int64_t *values, size_t n, cb_pcts *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    out->exact = true;
    if (!values || n == 0) return;
    cb_stats_sort(values, n);
    out->n = n;
    out->min = values[0];
    out->max = values[n - 1];
    out->p50 = cb_stats_nearest_rank(values, n, 0.50);
    out->p90 = cb_stats_nearest_rank(values, n, 0.90);
    out->p95 = cb_stats_nearest_rank(values, n, 0.95);
    out->p99 = cb_stats_nearest_rank(values, n, 0.99);
    out->p999 = cb_stats_nearest_rank(values, n, 0.999);
    long double sum = 0.0L;
    for (size_t i = 0; i < n; i++) sum += (long double)values[i];
    out->mean = (double)(sum / (long double)n);
}
