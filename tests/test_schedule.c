/* Tests of core/schedule.c: arrival statistics for fixed seeds (Poisson mean, CV and a
 * Kolmogorov-Smirnov test against the exponential law; gamma mean and CV), determinism, constant
 * exactness, timeout-bounded counts, limits, and replay CSV parsing with file:line errors. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/schedule.h"

static cb_loadgen_spec make_lg(cb_loadgen_kind kind, double rate, int64_t max_q) {
    cb_loadgen_spec lg;
    memset(&lg, 0, sizeof lg);
    lg.kind = kind;
    lg.rate_qps = rate;
    lg.max_queries = max_q;
    lg.timeout_ns = 60000000000LL;
    lg.seed = 1;
    lg.burstiness = 1.0;
    return lg;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Mean and coefficient of variation of the gaps. */
static void gap_stats(const int64_t *off, size_t n, double *mean, double *cv) {
    double sum = 0, sum2 = 0;
    for (size_t i = 1; i < n; i++) {
        double g = (double)(off[i] - off[i - 1]);
        sum += g;
        sum2 += g * g;
    }
    double m = sum / (double)(n - 1);
    double var = sum2 / (double)(n - 1) - m * m;
    *mean = m;
    *cv = sqrt(var) / m;
}

static void test_poisson_statistics(void) {
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_POISSON, 1000.0, 100001);
    int64_t *off = NULL;
    size_t n = 0;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), 0);
    CB_CHECK_EQ_INT(n, 100001);
    if (!off) return;
    CB_CHECK_EQ_INT(off[0], 0);
    int monotone = 1;
    for (size_t i = 1; i < n; i++) monotone &= off[i] >= off[i - 1];
    CB_CHECK(monotone);
    double mean, cv;
    gap_stats(off, n, &mean, &cv);
    CB_CHECK_NEAR(mean, 1e6, 0.01 * 1e6);
    CB_CHECK_NEAR(cv, 1.0, 0.02);

    /* Kolmogorov-Smirnov against Exp(mean 1 ms): D_n < 1.95 / sqrt(n) (alpha = 0.001). */
    size_t m = n - 1;
    double *g = malloc(m * sizeof *g);
    for (size_t i = 0; i < m; i++) g[i] = (double)(off[i + 1] - off[i]) / 1e6;
    qsort(g, m, sizeof *g, cmp_double);
    double d = 0;
    for (size_t i = 0; i < m; i++) {
        double f = 1.0 - exp(-g[i]);
        double lo = f - (double)i / (double)m, hi = (double)(i + 1) / (double)m - f;
        if (lo > d) d = lo;
        if (hi > d) d = hi;
    }
    double crit = 1.95 / sqrt((double)m);
    if (!(d < crit)) cb__test_fail(__FILE__, __LINE__, "KS D = %g >= %g", d, crit);
    /* And the test has power: gaps of the wrong mean are rejected. */
    double d_wrong = 0;
    for (size_t i = 0; i < m; i++) {
        double f = 1.0 - exp(-g[i] / 1.05);
        double lo = f - (double)i / (double)m, hi = (double)(i + 1) / (double)m - f;
        if (lo > d_wrong) d_wrong = lo;
        if (hi > d_wrong) d_wrong = hi;
    }
    CB_CHECK(d_wrong > crit);
    free(g);
    cb_free(off);
}

static void test_determinism(void) {
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_POISSON, 500.0, 1000);
    int64_t *a = NULL, *b = NULL, *c = NULL;
    size_t na = 0, nb = 0, nc = 0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &a, &na, NULL), 0);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &b, &nb, NULL), 0);
    lg.seed = 2;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &c, &nc, NULL), 0);
    CB_CHECK_EQ_INT(na, 1000);
    CB_CHECK_EQ_INT(nb, 1000);
    CB_CHECK_EQ_INT(nc, 1000);
    if (a && b && c) {
        CB_CHECK(memcmp(a, b, na * sizeof *a) == 0);
        CB_CHECK(memcmp(a, c, na * sizeof *a) != 0);
    }
    cb_free(a);
    cb_free(b);
    cb_free(c);
}

static void test_constant_exact(void) {
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_CONSTANT, 1000.0, 5000);
    int64_t *off = NULL;
    size_t n = 0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, NULL), 0);
    CB_CHECK_EQ_INT(n, 5000);
    int exact = 1;
    for (size_t i = 0; off && i < n; i++) exact &= off[i] == (int64_t)i * 1000000;
    CB_CHECK(exact);
    cb_free(off);

    /* A period that is not a whole number of ns: no drift after 3 million arrivals. */
    lg = make_lg(CB_LOADGEN_CONSTANT, 3.0, 3000001);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, NULL), 0);
    CB_CHECK_EQ_INT(n, 3000001);
    if (off) {
        CB_CHECK_EQ_INT(off[1], 333333333);
        CB_CHECK_EQ_INT(off[2], 666666667);
        CB_CHECK_EQ_INT(off[3], 1000000000);
        CB_CHECK_EQ_INT(off[3000000], 1000000000000000LL);
        int close = 1;
        for (size_t i = 0; i < n; i += 997)
            close &= llabs(off[i] - (int64_t)llround((double)i * 1e9 / 3.0)) <= 1;
        CB_CHECK(close);
    }
    cb_free(off);
}

static void test_gamma_burstiness(void) {
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_GAMMA, 1000.0, 100001);
    lg.burstiness = 0.25;
    int64_t *off = NULL;
    size_t n = 0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, NULL), 0);
    CB_CHECK_EQ_INT(n, 100001);
    if (!off) return;
    double mean, cv;
    gap_stats(off, n, &mean, &cv);
    CB_CHECK_NEAR(mean, 1e6, 0.02 * 1e6);
    CB_CHECK_NEAR(cv, 2.0, 0.05 * 2.0);
    cb_free(off);

    /* burstiness 4: smoother than Poisson, CV = 1/2. */
    lg.burstiness = 4.0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, NULL), 0);
    gap_stats(off, n, &mean, &cv);
    CB_CHECK_NEAR(mean, 1e6, 0.02 * 1e6);
    CB_CHECK_NEAR(cv, 0.5, 0.05 * 0.5);
    cb_free(off);

    /* The raw variate: Gamma(k, 1) has mean k and variance k. */
    cb_rng r;
    cb_rng_seed(&r, 3);
    const double shapes[] = {0.1, 0.5, 1.0, 2.5, 10.0};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        double k = shapes[s], sum = 0, sum2 = 0;
        const int m = 200000;
        for (int i = 0; i < m; i++) {
            double x = cb_rng_gamma(&r, k);
            sum += x;
            sum2 += x * x;
        }
        double mu = sum / m, var = sum2 / m - mu * mu;
        CB_CHECK_NEAR(mu, k, 0.02 * k);
        CB_CHECK_NEAR(var, k, 0.06 * k);
    }
    CB_CHECK(isnan(cb_rng_gamma(&r, 0.0)));
}

static void test_timeout_bounded(void) {
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_CONSTANT, 1000.0, 0);
    lg.timeout_ns = 1000000000LL;
    int64_t *off = NULL;
    size_t n = 0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, NULL), 0);
    CB_CHECK_EQ_INT(n, 1000); /* 0 .. 999 ms; the arrival at exactly 1 s is not before it */
    if (off) CB_CHECK_EQ_INT(off[n - 1], 999000000);
    cb_free(off);

    lg = make_lg(CB_LOADGEN_POISSON, 2000.0, 0);
    lg.timeout_ns = 5000000000LL;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, NULL), 0);
    CB_CHECK_NEAR((double)n, 10000.0, 400.0); /* 4 sigma of Poisson(10000) */
    if (off) CB_CHECK_CMP_INT(off[n - 1], <, lg.timeout_ns);
    /* The same seed with one more arrival by count: that arrival is past the timeout. */
    cb_loadgen_spec lg2 = lg;
    lg2.max_queries = (int64_t)n + 1;
    int64_t *off2 = NULL;
    size_t n2 = 0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg2, &off2, &n2, NULL), 0);
    CB_CHECK_EQ_INT(n2, n + 1);
    if (off && off2) {
        CB_CHECK(memcmp(off, off2, n * sizeof *off) == 0);
        CB_CHECK_CMP_INT(off2[n], >=, lg.timeout_ns);
    }
    cb_free(off);
    cb_free(off2);
}

static void test_limits_and_errors(void) {
    cb_error err;
    int64_t *off = NULL;
    size_t n = 0;
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_POISSON, 1e9, 0);
    lg.timeout_ns = 1000000000LL;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "100000000");
    CB_CHECK(off == NULL);
    lg = make_lg(CB_LOADGEN_CONSTANT, 10.0, 100000001);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_ECONFIG);
    lg = make_lg(CB_LOADGEN_POISSON, 0.0, 10);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "loadgen.config.rate");
    lg = make_lg(CB_LOADGEN_GAMMA, 10.0, 10);
    lg.burstiness = 0.0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_ECONFIG);
    lg = make_lg(CB_LOADGEN_POISSON, 10.0, 0);
    lg.timeout_ns = 0;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_ECONFIG);
    lg = make_lg(CB_LOADGEN_CLOSED, 10.0, 10);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_EINVAL);
    /* Out of memory: an error, nothing returned. */
    lg = make_lg(CB_LOADGEN_POISSON, 10.0, 10);
    cb__alloc_fail_after(1);
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), CB_ENOMEM);
    cb__alloc_fail_after(0);
    CB_CHECK(off == NULL);
}

static void read_ok(const char *path, size_t max_n, const int64_t *want, size_t n_want) {
    int64_t *off = NULL;
    size_t n = 0;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_schedule_read_replay(path, max_n, &off, &n, &err);
    if (rc != 0) {
        char buf[1200];
        cb_error_format(&err, buf, sizeof buf);
        cb__test_fail(__FILE__, __LINE__, "%s: %s", path, buf);
        return;
    }
    CB_CHECK_EQ_INT(n, n_want);
    for (size_t i = 0; i < n && i < n_want; i++)
        if (off[i] != want[i])
            cb__test_fail(__FILE__, __LINE__, "%s[%zu]: got %lld want %lld", path, i,
                          (long long)off[i], (long long)want[i]);
    cb_free(off);
}

static void read_err(const char *dir, const char *name, const char *text, int line,
                     const char *what) {
    const char *path = cb_test_write(dir, name, text);
    int64_t *off = NULL;
    size_t n = 0;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_schedule_read_replay(path, 0, &off, &n, &err);
    CB_CHECK(rc < 0);
    CB_CHECK(off == NULL);
    char buf[1200], want[600];
    cb_error_format(&err, buf, sizeof buf);
    snprintf(want, sizeof want, "%s:%d:1: ", path, line > 0 ? line : 1);
    CB_CHECK_CONTAINS(buf, want);
    CB_CHECK_CONTAINS(buf, what);
    /* Checking only (validate): the same error, nothing allocated. */
    char again[1200];
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_schedule_read_replay(path, 0, NULL, &n, &err), rc);
    cb_error_format(&err, again, sizeof again);
    CB_CHECK_STR_EQ(again, buf);
}

static void test_replay(void) {
    const char *dir = cb_test_tmpdir();
    {
        const int64_t want[] = {0, 500000000, 750000000, 750000000};
        read_ok(cb_test_write(dir, "s.csv", "0.5\n1.0\n1.25,x,y\n1.25\n"), 0, want, 4);
        read_ok(cb_test_write(dir, "s2.csv", "time\r\n 10.5 \r\n11\r\n11.75\r\n"), 0,
                (const int64_t[]){0, 500000000, 1250000000}, 3);
    }
    {
        const int64_t want[] = {0, 50500000, 50500001};
        read_ok(cb_test_write(dir, "ms.csv",
                              "# a trace\nt_ms,tokens\n\n100,3\n# mid comment\n150.5,4\n"
                              "150.500001,9\n"),
                0, want, 3);
    }
    read_ok(cb_test_write(dir, "us.csv", "arrival_us\n7\n8\n"), 0, (const int64_t[]){0, 1000},
            2);
    read_ok(cb_test_write(dir, "ns.csv", "T_NS\n1700000000123456789\n1700000000123456790\n"), 0,
            (const int64_t[]){0, 1}, 2);
    /* Epoch seconds keep nanosecond precision; exponent notation also parses. */
    read_ok(cb_test_write(dir, "epoch.csv", "1700000000.123456789\n1700000000.12345679\n2e9\n"),
            0, (const int64_t[]){0, 1, 299999999876543211LL}, 3);
    /* max_n bounds the count; the file has no trailing newline. */
    read_ok(cb_test_write(dir, "max.csv", "1\n2\n3\n4"), 2, (const int64_t[]){0, 1000000000}, 2);
    read_ok(cb_test_write(dir, "nonl.csv", "1\n2\n3\n4"), 0,
            (const int64_t[]){0, 1000000000, 2000000000, 3000000000}, 4);

    read_err(dir, "bad.csv", "t_ms\n1\n2x\n", 3, "not a number");
    read_err(dir, "dec.csv", "1\n2\n1.5\n", 3, "earlier than the previous");
    read_err(dir, "neg.csv", "# c\nt\n-1\n", 3, "negative");
    read_err(dir, "neg2.csv", "1\n-2\n", 2, "negative");
    read_err(dir, "hdr2.csv", "t_s\nsecond_header\n", 2, "not a number");
    read_err(dir, "empty.csv", "# nothing\n\n", 0, "no arrival times");

    cb_error err;
    int64_t *off = NULL;
    size_t n = 0;
    CB_CHECK_EQ_INT(cb_schedule_read_replay("/nonexistent/x.csv", 0, &off, &n, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.file, "/nonexistent/x.csv");
    /* A directory opens but is not a CSV. */
    char buf[1200], want[600];
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_schedule_read_replay(dir, 0, &off, &n, &err), CB_ECONFIG);
    cb_error_format(&err, buf, sizeof buf);
    snprintf(want, sizeof want, "%s:1:1: is a directory, not a replay CSV file", dir);
    CB_CHECK_STR_EQ(buf, want);
    /* Checking only counts the times (max_n bounds it too). */
    const char *four = cb_test_write(dir, "four.csv", "1\n2\n3\n4\n");
    CB_CHECK_EQ_INT(cb_schedule_read_replay(four, 0, NULL, &n, &err), 0);
    CB_CHECK_EQ_INT(n, 4);
    CB_CHECK_EQ_INT(cb_schedule_read_replay(four, 3, NULL, &n, &err), 0);
    CB_CHECK_EQ_INT(n, 3);

    /* Through cb_schedule_generate: the timeout truncates, max_queries bounds. */
    cb_loadgen_spec lg = make_lg(CB_LOADGEN_REPLAY, 0.0, 0);
    lg.file = cb_test_write(dir, "gen.csv", "t_ms\n0\n10\n20\n30\n");
    lg.timeout_ns = 25000000;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), 0);
    CB_CHECK_EQ_INT(n, 3);
    cb_free(off);
    lg.max_queries = 2;
    CB_CHECK_EQ_INT(cb_schedule_generate(&lg, &off, &n, &err), 0);
    CB_CHECK_EQ_INT(n, 2);
    cb_free(off);
}

static void test_replay_long_lines(void) {
    /* Trailing columns of any length are skipped; an overlong first column is an error. */
    const char *dir = cb_test_tmpdir();
    size_t big = 100000;
    char *text = malloc(big + 64);
    size_t k = 0;
    k += (size_t)snprintf(text + k, 64, "t_s,prompt\n1,");
    memset(text + k, 'a', big);
    k += big;
    snprintf(text + k, 64, "\n2,b\n");
    read_ok(cb_test_write(dir, "long.csv", text), 0, (const int64_t[]){0, 1000000000}, 2);
    memset(text, '1', big);
    snprintf(text + big, 64, "\n");
    read_err(dir, "longfield.csv", text, 1, "longer than");
    free(text);
    /* A file with no line end (/dev/zero) is refused after CB_REPLAY_LINE_MAX bytes, not read
     * forever. */
    int64_t *off = NULL;
    size_t n = 0;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_schedule_read_replay("/dev/zero", 0, &off, &n, &err), CB_ECONFIG);
    char buf[512];
    cb_error_format(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "/dev/zero:1:1: line longer than 1048576 bytes (1 MiB, the maximum)");
    CB_CHECK(off == NULL);
}

int main(void) {
    CB_RUN(test_poisson_statistics);
    CB_RUN(test_determinism);
    CB_RUN(test_constant_exact);
    CB_RUN(test_gamma_burstiness);
    CB_RUN(test_timeout_bounded);
    CB_RUN(test_limits_and_errors);
    CB_RUN(test_replay);
    CB_RUN(test_replay_long_lines);
    return cb_test_done();
}
