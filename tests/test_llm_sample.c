/* tests/test_llm_sample.c - token sampling (llm/sample.c).
 *
 * Greedy is the argmax with ties to the lowest id (and NaN never wins); top_k 1 is greedy; a top_p
 * below the largest probability keeps that one token; top-k keeps exactly the k largest (ties to
 * lower ids) and top-p the smallest most-probable set reaching p, both checked against a
 * brute-force sort over many random vectors (every drawn token must be in the reference's kept
 * set, and every kept token drawn), also for a top_k above the heap's limit (quickselect).
 * Temperature sampling on a vocabulary of 8 matches the softmax distribution: 200000 draws,
 * Pearson's chi-square with 7 degrees of freedom below 60 (its p-value is about 1e-9; with a
 * fixed seed the draws are deterministic anyway, so the bound cannot flake: it guards against a
 * wrong distribution). The same seeds give the same tokens; different request seeds give
 * different streams.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/sample.h"

static cb_sampler *make(int32_t vocab) {
    cb_sampler *s = NULL;
    cb_error e = {0};
    CB_CHECK_EQ_INT(cb_sampler_create(vocab, &s, &e), 0);
    return s;
}

static void test_greedy(void) {
    cb_sampler *s = make(16);
    float l[16];
    for (int i = 0; i < 16; i++) l[i] = (float)(i % 5);
    cb_rng r;
    cb_sample_rng_seed(&r, 1, 2);
    cb_rng before = r;
    cb_sample_params g = CB_SAMPLE_PARAMS_GREEDY;
    CB_CHECK_EQ_INT(cb_sample_token(s, l, 16, &g, &r), 4); /* 4, 9, 14 tie: the lowest */
    CB_CHECK(memcmp(&before, &r, sizeof r) == 0);           /* no draw */
    l[2] = NAN;
    l[3] = 7;
    CB_CHECK_EQ_INT(cb_sample_token(s, l, 16, &g, &r), 3);
    cb_sample_params k1 = {1.5, 1, 1.0};
    CB_CHECK_EQ_INT(cb_sample_token(s, l, 16, &k1, &r), 3);
    /* a top_p below the largest probability keeps that one token, whatever the draws */
    cb_sample_params p1 = {1.0, 0, 0.05};
    for (int t = 0; t < 100; t++) CB_CHECK_EQ_INT(cb_sample_token(s, l, 16, &p1, &r), 3);
    /* all -inf */
    for (int i = 0; i < 16; i++) l[i] = -INFINITY;
    cb_sample_params t1 = {1.0, 0, 1.0};
    CB_CHECK_EQ_INT(cb_sample_token(s, l, 16, &t1, &r), 0);
    CB_CHECK_EQ_INT(cb_sample_token(s, l, 16, &g, &r), 0);
    cb_sampler_destroy(s);
}

static void test_params(void) {
    cb_error e = {0};
    cb_sample_params ok = {0.7, 50, 0.9}, bad_t = {-1, 0, 1}, bad_k = {1, -2, 1},
                     bad_p = {1, 0, 0}, bad_p2 = {1, 0, 1.5};
    CB_CHECK_EQ_INT(cb_sample_params_check(&ok, &e), 0);
    CB_CHECK_EQ_INT(cb_sample_params_check(&bad_t, &e), CB_EINVAL);
    CB_CHECK_CONTAINS(e.msg, "temperature");
    CB_CHECK_EQ_INT(cb_sample_params_check(&bad_k, &e), CB_EINVAL);
    CB_CHECK_CONTAINS(e.msg, "top_k");
    CB_CHECK_EQ_INT(cb_sample_params_check(&bad_p, &e), CB_EINVAL);
    CB_CHECK_CONTAINS(e.msg, "top_p");
    CB_CHECK_EQ_INT(cb_sample_params_check(&bad_p2, &e), CB_EINVAL);
    cb_sampler *s = NULL;
    CB_CHECK_EQ_INT(cb_sampler_create(0, &s, &e), CB_EINVAL);
    CB_CHECK(s == NULL);
}

/* The reference kept set: sort by (logit desc, id asc), top-k, then the top-p prefix. */
static const float *g_l;
static int cmp_ref(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_l[x] != g_l[y]) return g_l[x] > g_l[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

static int32_t ref_kept(const float *l, int32_t n, const cb_sample_params *p, double t,
                        int32_t *order) {
    for (int32_t i = 0; i < n; i++) order[i] = i;
    g_l = l;
    qsort(order, (size_t)n, sizeof *order, cmp_ref);
    int32_t m = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    double sum = 0, c = 0;
    for (int32_t i = 0; i < m; i++) sum += exp((l[order[i]] - l[order[0]]) / t);
    if (p->top_p >= 1) return m;
    for (int32_t i = 0; i < m; i++) {
        c += exp((l[order[i]] - l[order[0]]) / t);
        if (c >= p->top_p * sum) return i + 1;
    }
    return m;
}

static void test_kept_sets(void) {
    enum { N = 64 };
    cb_sampler *s = make(N);
    cb_rng gen;
    cb_rng_seed(&gen, 42);
    float l[N];
    int32_t order[N];
    const cb_sample_params ps[] = {{1.0, 5, 1.0}, {0.8, 0, 0.5}, {2.0, 10, 0.7}, {1.0, 1, 0.3},
                                   {0.5, 0, 0.95}, {1.0, 63, 1.0}, {1.0, 64, 0.999}};
    int bad = 0, unseen = 0;
    for (int trial = 0; trial < 40; trial++) {
        for (int i = 0; i < N; i++) /* coarse values: ties happen */
            l[i] = (float)floor(cb_rng_normal(&gen) * 4) / 2;
        for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
            int32_t m = ref_kept(l, N, &ps[k], ps[k].temperature, order);
            int seen[N] = {0};
            cb_rng r;
            cb_sample_rng_seed(&r, (uint64_t)trial, k);
            for (int d = 0; d < 400; d++) {
                int32_t t = cb_sample_token(s, l, N, &ps[k], &r);
                int in = 0;
                for (int32_t i = 0; i < m; i++) {
                    if (order[i] == t) {
                        in = 1;
                        seen[i] = 1;
                    }
                }
                bad += !in;
            }
            /* every kept token with probability >= 2% of the kept mass shows up in 400 draws
             * (a miss has probability below 0.98^400 = 3e-4 each; deterministic seeds) */
            double sum = 0, t = ps[k].temperature;
            for (int32_t i = 0; i < m; i++) sum += exp((l[order[i]] - l[order[0]]) / t);
            for (int32_t i = 0; i < m; i++)
                if (!seen[i] && exp((l[order[i]] - l[order[0]]) / t) / sum > 0.02) unseen++;
        }
    }
    CB_CHECK_EQ_INT(bad, 0);
    CB_CHECK_EQ_INT(unseen, 0);
    cb_sampler_destroy(s);
}

/* A top_k above the heap's limit (4096) takes the quickselect path: the same kept sets. */
static void test_large_k(void) {
    enum { N = 6000 };
    cb_sampler *s = make(N);
    float *l = malloc(sizeof *l * N);
    int32_t *order = malloc(sizeof *order * N);
    char *kept = malloc(N);
    cb_rng gen;
    cb_rng_seed(&gen, 9);
    for (int i = 0; i < N; i++) l[i] = (float)floor(cb_rng_normal(&gen) * 8) / 4; /* ties */
    const cb_sample_params ps[] = {{1.0, 5000, 1.0}, {0.7, 4500, 0.6}, {1.0, 0, 0.3}};
    int bad = 0;
    for (size_t k = 0; k < 3; k++) {
        int32_t m = ref_kept(l, N, &ps[k], ps[k].temperature, order);
        memset(kept, 0, N);
        for (int32_t i = 0; i < m; i++) kept[order[i]] = 1;
        cb_rng r;
        cb_sample_rng_seed(&r, 3, k);
        for (int d = 0; d < 2000; d++) bad += !kept[cb_sample_token(s, l, N, &ps[k], &r)];
        }
    CB_CHECK_EQ_INT(bad, 0);
    free(kept);
    free(order);
    free(l);
    cb_sampler_destroy(s);
}

static void test_distribution(void) {
    enum { N = 8, DRAWS = 200000 };
    cb_sampler *s = make(N);
    const float l[N] = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -0.5f, 1.5f, 0.25f};
    const double temp = 0.8;
    cb_sample_params p = {temp, 0, 1.0};
    double prob[N], sum = 0;
    for (int i = 0; i < N; i++) sum += prob[i] = exp(l[i] / temp);
    long count[N] = {0};
    cb_rng r;
    cb_sample_rng_seed(&r, 7, 11);
    for (int d = 0; d < DRAWS; d++) count[cb_sample_token(s, l, N, &p, &r)]++;
    double chi2 = 0;
    for (int i = 0; i < N; i++) {
        double e = DRAWS * prob[i] / sum;
        chi2 += (count[i] - e) * (count[i] - e) / e;
    }
    printf("# chi-square over %d draws, 7 degrees of freedom: %.2f\n", DRAWS, chi2);
    CB_CHECK(chi2 < 60);
    /* top-k 3 and top-p over the same vector: the kept set's renormalised distribution */
    cb_sample_params pk = {temp, 3, 1.0};
    long ck[N] = {0};
    for (int d = 0; d < DRAWS; d++) ck[cb_sample_token(s, l, N, &pk, &r)]++;
    double sk = prob[2] + prob[6] + prob[4];
    chi2 = 0;
    for (int i = 0; i < N; i++) {
        if (i != 2 && i != 6 && i != 4) {
            CB_CHECK_EQ_INT(ck[i], 0);
            continue;
        }
        double e = DRAWS * prob[i] / sk;
        chi2 += (ck[i] - e) * (ck[i] - e) / e;
    }
    printf("# top-k 3: chi-square %.2f (2 degrees of freedom)\n", chi2);
    CB_CHECK(chi2 < 50);
    cb_sampler_destroy(s);
}

static void test_reproducible(void) {
    enum { N = 1000, T = 300 };
    cb_sampler *s = make(N);
    float *l = malloc(sizeof *l * N);
    cb_rng gen;
    cb_rng_seed(&gen, 3);
    for (int i = 0; i < N; i++) l[i] = (float)cb_rng_normal(&gen);
    const cb_sample_params ps[] = {{1.0, 0, 1.0}, {0.7, 40, 0.9}, {1.2, 0, 0.8}};
    for (size_t k = 0; k < 3; k++) {
        int32_t a[T], b[T], c[T];
        cb_rng ra, rb, rc;
        cb_sample_rng_seed(&ra, 99, 5);
        cb_sample_rng_seed(&rb, 99, 5);
        cb_sample_rng_seed(&rc, 100, 5);
        for (int t = 0; t < T; t++) a[t] = cb_sample_token(s, l, N, &ps[k], &ra);
        for (int t = 0; t < T; t++) b[t] = cb_sample_token(s, l, N, &ps[k], &rb);
        for (int t = 0; t < T; t++) c[t] = cb_sample_token(s, l, N, &ps[k], &rc);
        CB_CHECK(memcmp(a, b, sizeof a) == 0);
        CB_CHECK(memcmp(a, c, sizeof a) != 0);
    }
    cb_rng x, y;
    cb_sample_rng_seed(&x, 1, 2);
    cb_sample_rng_seed(&y, 2, 1);
    CB_CHECK(cb_rng_u64(&x) != cb_rng_u64(&y));
    free(l);
    cb_sampler_destroy(s);
}

int main(void) {
    CB_RUN(test_greedy);
    CB_RUN(test_params);
    CB_RUN(test_kept_sets);
    CB_RUN(test_large_k);
    CB_RUN(test_distribution);
    CB_RUN(test_reproducible);
    return cb_test_done();
}
