/* Tests of analysis/stats.c: sorting against a readable reference and nearest-rank percentiles
 * against a brute-force definition evaluated in exact integer arithmetic. */
#include "harness.h"

#include <stdlib.h>

#include "analysis/stats.h"
#include "core/alloc.h"
#include "core/rng.h"

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Brute force, from the definition: the smallest sample value x such that at least k/1000 of
 * the sample is <= x (k = 0 gives the minimum). Integer arithmetic: no rounding questions. */
static int64_t brute_percentile(const int64_t *v, size_t n, int k) {
    int64_t best = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        size_t le = 0;
        for (size_t j = 0; j < n; j++) le += v[j] <= v[i];
        if ((uint64_t)le * 1000 >= (uint64_t)k * n && (!found || v[i] < best)) {
            best = v[i];
            found = 1;
        }
    }
    return best;
}

/* Faster brute force for large n: count_le over the qsort-ed copy. */
static int64_t sorted_percentile(const int64_t *sorted, size_t n, int k) {
    for (size_t i = 0; i < n; i++) {
        size_t le = i + 1;
        while (le < n && sorted[le] == sorted[i]) le++;
        if ((uint64_t)le * 1000 >= (uint64_t)k * n) return sorted[i];
    }
    return sorted[n - 1];
}

static void fill(cb_rng *r, int64_t *v, size_t n, int mode) {
    for (size_t i = 0; i < n; i++) {
        uint64_t x = cb_rng_u64(r);
        switch (mode) {
        case 0: v[i] = (int64_t)x; break;                           /* full range, signed */
        case 1: v[i] = (int64_t)(x % 7);  break;                    /* heavy duplicates */
        case 2: v[i] = (int64_t)(x % 5000000) + 1000; break;        /* latency-like ns */
        default: v[i] = -(int64_t)(x % 1000); break;                /* negative small */
        }
    }
}

static const int k_pcts[] = {0, 1, 10, 70, 290, 500, 900, 950, 990, 999, 1000};

static void test_sort_matches_qsort(void) {
    static const size_t sizes[] = {0, 1, 2, 3, 5, 31, 32, 33, 255, 256, 257, 1000, 4099, 100000};
    cb_rng r;
    cb_rng_seed(&r, 42);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int mode = 0; mode < 4; mode++) {
            size_t n = sizes[s];
            int64_t *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
            fill(&r, a, n, mode);
            memcpy(b, a, n * sizeof *a);
            cb_stats_sort(a, n);
            qsort(b, n, sizeof *b, cmp_i64);
            CB_CHECK(n == 0 || memcmp(a, b, n * sizeof *a) == 0);
            free(a);
            free(b);
        }
    }
}

static void test_sort_fallback_without_memory(void) {
    /* The radix scratch allocation fails: introsort must still sort, including adversarial
     * inputs (sorted, reversed, all equal, organ pipe). */
    size_t n = 50000;
    int64_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    cb_rng r;
    cb_rng_seed(&r, 7);
    for (int pattern = 0; pattern < 5; pattern++) {
        for (size_t i = 0; i < n; i++) {
            switch (pattern) {
            case 0: a[i] = (int64_t)i; break;
            case 1: a[i] = (int64_t)(n - i); break;
            case 2: a[i] = 5; break;
            case 3: a[i] = (int64_t)(i < n / 2 ? i : n - i); break;
            default: a[i] = (int64_t)(cb_rng_u64(&r) % 100); break;
            }
        }
        memcpy(b, a, n * sizeof *a);
        cb__alloc_fail_after(1);
        cb_stats_sort(a, n);
        cb__alloc_fail_after(0);
        qsort(b, n, sizeof *b, cmp_i64);
        CB_CHECK(memcmp(a, b, n * sizeof *a) == 0);
    }
    free(a);
    free(b);
}

static void test_percentiles_brute_force(void) {
    static const size_t sizes[] = {1, 2, 3, 4, 7, 10, 99, 100, 101, 1000};
    cb_rng r;
    cb_rng_seed(&r, 1234);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int mode = 0; mode < 4; mode++) {
            size_t n = sizes[s];
            int64_t *v = malloc(n * sizeof *v), *sorted = malloc(n * sizeof *v);
            fill(&r, v, n, mode);
            memcpy(sorted, v, n * sizeof *v);
            cb_stats_sort(sorted, n);
            for (size_t k = 0; k < sizeof k_pcts / sizeof k_pcts[0]; k++) {
                int64_t got = cb_stats_nearest_rank(sorted, n, k_pcts[k] / 1000.0);
                int64_t want = brute_percentile(v, n, k_pcts[k]);
                if (got != want)
                    cb__test_fail(__FILE__, __LINE__, "n=%zu mode=%d p=%d/1000: got %lld want %lld",
                                  n, mode, k_pcts[k], (long long)got, (long long)want);
            }
            free(v);
            free(sorted);
        }
    }
}

static void test_percentiles_large(void) {
    size_t n = 100000;
    int64_t *v = malloc(n * sizeof *v), *ref = malloc(n * sizeof *v);
    cb_rng r;
    cb_rng_seed(&r, 99);
    for (int mode = 1; mode <= 2; mode++) {
        fill(&r, v, n, mode);
        memcpy(ref, v, n * sizeof *v);
        qsort(ref, n, sizeof *ref, cmp_i64);
        cb_pcts p;
        cb_stats_pcts(v, n, &p);
        CB_CHECK_EQ_INT(p.n, n);
        CB_CHECK_EQ_INT(p.min, ref[0]);
        CB_CHECK_EQ_INT(p.max, ref[n - 1]);
        CB_CHECK_EQ_INT(p.p50, sorted_percentile(ref, n, 500));
        CB_CHECK_EQ_INT(p.p90, sorted_percentile(ref, n, 900));
        CB_CHECK_EQ_INT(p.p95, sorted_percentile(ref, n, 950));
        CB_CHECK_EQ_INT(p.p99, sorted_percentile(ref, n, 990));
        CB_CHECK_EQ_INT(p.p999, sorted_percentile(ref, n, 999));
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += (double)ref[i];
        CB_CHECK_NEAR(p.mean, sum / (double)n, 1e-6 * (sum / (double)n) + 1e-9);
    }
    free(v);
    free(ref);
}

static void test_mlperf_definition(void) {
    int64_t v[100];
    for (int i = 0; i < 100; i++) v[99 - i] = i + 1; /* 100..1, sorted by cb_stats_pcts */
    cb_pcts p;
    cb_stats_pcts(v, 100, &p);
    CB_CHECK_EQ_INT(p.min, 1);
    CB_CHECK_EQ_INT(p.p50, 50);
    CB_CHECK_EQ_INT(p.p90, 90);
    CB_CHECK_EQ_INT(p.p95, 95);
    CB_CHECK_EQ_INT(p.p99, 99);
    CB_CHECK_EQ_INT(p.p999, 100);
    CB_CHECK_EQ_INT(p.max, 100);
    CB_CHECK_NEAR(p.mean, 50.5, 1e-12);
    /* Rank ceil(p * n) with binary-unfriendly p: 0.07 * 100 is 7.000000000000001 in doubles. */
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(v, 100, 0.07), 7);
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(v, 100, 0.0), 1);
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(v, 100, 0.001), 1);
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(v, 100, 0.011), 2);
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(v, 100, 1.0), 100);
    int64_t one = 42;
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(&one, 1, 0.5), 42);
    int64_t two[2] = {3, 9};
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(two, 2, 0.5), 3);
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(two, 2, 0.51), 9);
}

static void test_empty(void) {
    cb_pcts p;
    memset(&p, 0x5a, sizeof p);
    cb_stats_pcts(NULL, 0, &p);
    CB_CHECK_EQ_INT(p.n, 0);
    CB_CHECK_EQ_INT(p.p50, 0);
    CB_CHECK_EQ_INT(p.max, 0);
    CB_CHECK(p.mean == 0.0);
    int64_t x = 1;
    CB_CHECK_EQ_INT(cb_stats_nearest_rank(&x, 0, 0.5), 0);
    cb_stats_sort(NULL, 0);
}

int main(void) {
    CB_RUN(test_sort_matches_qsort);
    CB_RUN(test_sort_fallback_without_memory);
    CB_RUN(test_percentiles_brute_force);
    CB_RUN(test_percentiles_large);
    CB_RUN(test_mlperf_definition);
    CB_RUN(test_empty);
    return cb_test_done();
}
