/* Tests of analysis/stats.c: sorting against a readable reference and nearest-rank percentiles
 * against a brute-force definition evaluated in exact integer arithmetic. Tests of
 * analysis/hist.c: exact mode equal to cb_stats_pcts, histogram mode within CB_HIST_REL_ERROR of
 * the exact nearest-rank values over a million log-normal values, n/min/max/mean exact, memory
 * under CB_HIST_MAX_BYTES, allocation failures reported without a crash or a leak. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

#include "analysis/hist.h"
#include "analysis/stats.h"
#include "core/alloc.h"
#include "colobench/error.h"
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


/* ---- cb_hist ---------------------------------------------------------------------------- */

static void check_pcts_equal(const cb_pcts *a, const cb_pcts *b, size_t n, int mode) {
    if (a->n != b->n || a->min != b->min || a->max != b->max || a->p50 != b->p50 ||
        a->p90 != b->p90 || a->p95 != b->p95 || a->p99 != b->p99 || a->p999 != b->p999 ||
        a->mean != b->mean || a->exact != b->exact)
        cb__test_fail(__FILE__, __LINE__,
                      "n=%zu mode=%d: hist {%zu %lld %lld %lld %.17g %d} vs stats {%zu %lld %lld "
                      "%lld %.17g %d}", n, mode, a->n, (long long)a->min, (long long)a->p50,
                      (long long)a->max, a->mean, a->exact, b->n, (long long)b->min,
                      (long long)b->p50, (long long)b->max, b->mean, b->exact);
}

static void test_hist_exact_matches_stats(void) {
    cb_rng r;
    cb_rng_seed(&r, 2027);
    int64_t *v = malloc(CB_HIST_EXACT_MAX * sizeof *v);
    for (int trial = 0; trial < 60; trial++) {
        size_t n = trial == 0 ? 0 : trial == 1 ? 1 : trial == 2 ? CB_HIST_EXACT_MAX
                                                       : 1 + cb_rng_u64(&r) % CB_HIST_EXACT_MAX;
        int mode = trial % 4;
        fill(&r, v, n, mode == 0 ? 2 : mode); /* mode 0 (full int64 range) overflows the mean */
        cb_hist h;
        cb_hist_init(&h);
        for (size_t i = 0; i < n; i++) CB_CHECK_EQ_INT(cb_hist_add(&h, v[i]), CB_OK);
        cb_pcts got, want;
        CB_CHECK_EQ_INT(cb_hist_pcts(&h, &got), CB_OK);
        CB_CHECK(!h.histogram);
        cb_stats_pcts(v, n, &want);
        check_pcts_equal(&got, &want, n, mode);
        CB_CHECK(got.exact);
        if (n) {
            CB_CHECK_EQ_INT(cb_hist_percentile(&h, 0.5), want.p50);
            CB_CHECK_EQ_INT(cb_hist_percentile(&h, 0.0), want.min);
            CB_CHECK_EQ_INT(cb_hist_percentile(&h, 1.0), want.max);
        }
        CB_CHECK_CMP_INT(cb_hist_bytes(&h), <=, CB_HIST_EXACT_MAX * sizeof(int64_t));
        cb_hist_fini(&h);
        cb_hist_fini(&h); /* idempotent */
    }
    free(v);
}

/* |got - want| <= CB_HIST_REL_ERROR * |want| (want is an exact nearest-rank value). */
static void check_rel(int64_t got, int64_t want, const char *what) {
    double err = fabs((double)got - (double)want);
    if (err > CB_HIST_REL_ERROR * fabs((double)want))
        cb__test_fail(__FILE__, __LINE__, "%s: got %lld, exact %lld, relative error %.3g > %.3g",
                      what, (long long)got, (long long)want, err / fabs((double)want),
                      CB_HIST_REL_ERROR);
}

static void test_hist_lognormal(void) {
    const size_t n = 1000000;
    int64_t *v = malloc(n * sizeof *v), *sorted = malloc(n * sizeof *v);
    cb_rng r;
    cb_rng_seed(&r, 31337);
    cb_hist h;
    cb_hist_init(&h);
    long double sum = 0;
    for (size_t i = 0; i < n; i++) {
        /* latency-like: median 200 us, a long tail (sigma 1.2), never below 2 us */
        double x = 2000.0 + 200000.0 * exp(1.2 * cb_rng_normal(&r));
        v[i] = (int64_t)x;
        sum += (long double)v[i];
        CB_CHECK(cb_hist_add(&h, v[i]) == CB_OK);
    }
    memcpy(sorted, v, n * sizeof *v);
    qsort(sorted, n, sizeof *sorted, cmp_i64);
    cb_pcts p;
    CB_CHECK_EQ_INT(cb_hist_pcts(&h, &p), CB_OK);
    CB_CHECK(h.histogram);
    CB_CHECK(!p.exact);
    CB_CHECK_EQ_INT(p.n, n);
    CB_CHECK_EQ_INT(p.min, sorted[0]);
    CB_CHECK_EQ_INT(p.max, sorted[n - 1]);
    CB_CHECK(p.mean == (double)(sum / (long double)n));
    check_rel(p.p50, sorted_percentile(sorted, n, 500), "p50");
    check_rel(p.p90, sorted_percentile(sorted, n, 900), "p90");
    check_rel(p.p95, sorted_percentile(sorted, n, 950), "p95");
    check_rel(p.p99, sorted_percentile(sorted, n, 990), "p99");
    check_rel(p.p999, sorted_percentile(sorted, n, 999), "p999");
    /* every permille, through cb_hist_percentile */
    for (int k = 0; k <= 1000; k++) {
        char what[32];
        snprintf(what, sizeof what, "p%d/1000", k);
        check_rel(cb_hist_percentile(&h, k / 1000.0), sorted_percentile(sorted, n, k), what);
    }
    size_t bytes = cb_hist_bytes(&h);
    CB_CHECK_CMP_INT(bytes, <=, CB_HIST_MAX_BYTES);
    CB_CHECK_CMP_INT(bytes, <=, 128 * 1024); /* ~14 octaves of 4 KiB and the unit buckets */
    printf("# 1M log-normal values: %zu bytes of histogram\n", bytes);
    cb_hist_fini(&h);
    free(v);
    free(sorted);
}

/* Histogram mode over values that all fit the unit buckets is exact; negative values count as
 * 0 there (min stays exact); values up to INT64_MAX land in the top octave. */
static void test_hist_edges(void) {
    size_t n = 3 * CB_HIST_EXACT_MAX;
    int64_t *v = malloc(n * sizeof *v);
    cb_rng r;
    cb_rng_seed(&r, 5);
    cb_hist h;
    cb_hist_init(&h);
    for (size_t i = 0; i < n; i++) {
        v[i] = (int64_t)(cb_rng_u64(&r) % CB_HIST_SUB_BUCKETS);
        cb_hist_add(&h, v[i]);
    }
    cb_pcts got, want;
    cb_hist_pcts(&h, &got);
    cb_stats_pcts(v, n, &want);
    CB_CHECK(h.histogram);
    check_pcts_equal(&got, &want, n, -1);
    CB_CHECK(got.exact);
    cb_hist_add(&h, -5);
    cb_hist_pcts(&h, &got);
    CB_CHECK(!got.exact);
    CB_CHECK_EQ_INT(got.min, -5);
    CB_CHECK_EQ_INT(h.negative, 1);
    cb_hist_fini(&h);

    cb_hist_init(&h);
    for (size_t i = 0; i <= CB_HIST_EXACT_MAX; i++) cb_hist_add(&h, INT64_MAX - (int64_t)i);
    cb_hist_add(&h, 0);
    cb_hist_pcts(&h, &got);
    CB_CHECK_EQ_INT(got.max, INT64_MAX);
    CB_CHECK_EQ_INT(got.min, 0);
    check_rel(got.p50, INT64_MAX - CB_HIST_EXACT_MAX / 2 - 1, "top p50"); /* rank 4097 of 8194 */
    CB_CHECK(got.p999 <= INT64_MAX && got.p999 > 0);
    /* the exact 128-bit sum: mean of 8193 values near 2^63 and a 0 */
    long double want_mean = 0;
    for (size_t i = 0; i <= CB_HIST_EXACT_MAX; i++)
        want_mean += (long double)(INT64_MAX - (int64_t)i) / (CB_HIST_EXACT_MAX + 2);
    CB_CHECK_NEAR(got.mean, (double)want_mean, 1e-12 * (double)want_mean);
    CB_CHECK_CMP_INT(cb_hist_bytes(&h), <=, CB_HIST_MAX_BYTES);
    cb_hist_fini(&h);
    free(v);

    /* empty */
    cb_hist_init(&h);
    CB_CHECK_EQ_INT(cb_hist_pcts(&h, &got), CB_OK);
    CB_CHECK(got.n == 0 && got.exact && got.p50 == 0);
    CB_CHECK_EQ_INT(cb_hist_percentile(&h, 0.5), 0);
    cb_hist_fini(&h);
}

/* Every allocation of a run that goes through both modes fails in turn: the failure is
 * reported (CB_ENOMEM from add or pcts), nothing crashes, nothing leaks (ASan). */
static void test_hist_alloc_failure(void) {
    cb_rng r;
    cb_rng_seed(&r, 77);
    int failures = 0;
    for (long k = 1; k <= 40; k++) {
        cb_hist h;
        cb_hist_init(&h);
        int add_rc = CB_OK;
        cb__alloc_fail_after(k);
        for (int i = 0; i < 3 * CB_HIST_EXACT_MAX; i++) {
            int rc = cb_hist_add(&h, (int64_t)(cb_rng_u64(&r) % 100000000));
            if (rc != CB_OK) add_rc = rc;
        }
        cb_pcts p;
        int rc = cb_hist_pcts(&h, &p);
        cb__alloc_fail_after(0);
        CB_CHECK(rc == CB_OK || rc == CB_ENOMEM);
        CB_CHECK_EQ_INT(rc, add_rc);
        if (rc != CB_OK) {
            failures++;
            CB_CHECK(h.failed && p.n == 0);
            CB_CHECK_EQ_INT(cb_hist_add(&h, 1), CB_ENOMEM); /* stays failed */
        }
        cb_hist_fini(&h);
    }
    CB_CHECK_CMP_INT(failures, >=, 10);
    /* and with the size limit: the first chunk is 8 KiB */
    cb_hist h;
    cb_hist_init(&h);
    cb__alloc_limit_bytes(4096);
    int rc = CB_OK;
    for (int i = 0; i < 2 * CB_HIST_EXACT_MAX && rc == CB_OK; i++) rc = cb_hist_add(&h, i % 10);
    cb__alloc_limit_bytes(0);
    CB_CHECK_EQ_INT(rc, CB_ENOMEM);
    cb_hist_fini(&h);
}

int main(void) {
    CB_RUN(test_sort_matches_qsort);
    CB_RUN(test_sort_fallback_without_memory);
    CB_RUN(test_percentiles_brute_force);
    CB_RUN(test_percentiles_large);
    CB_RUN(test_mlperf_definition);
    CB_RUN(test_empty);
    CB_RUN(test_hist_exact_matches_stats);
    CB_RUN(test_hist_lognormal);
    CB_RUN(test_hist_edges);
    CB_RUN(test_hist_alloc_failure);
    return cb_test_done();
}
