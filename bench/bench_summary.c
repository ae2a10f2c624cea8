/* bench/bench_summary.c - what summary.json costs for a long run, from memory and from files.
 *
 * Builds one open-loop pipeline of two stages with N queries (default 2,000,000) and 2 N stage
 * events (latency-like log-normal times, device time on the second stage), then times
 * cb_summary_write_json (to /dev/null), best of R runs (default 3):
 *  1. over the records in memory (arrays: cb_pipeline_record.queries / stage_events);
 *  2. over the same records written to queries.bin and events.bin in a temporary directory (the
 *     files the recorder streams; read from the page cache here), and prints the ratio of the
 *     two and the records per second of each;
 * and the same for trace.json (default cap of one million slices, so sampled).
 * With --files-only the records are generated straight into the files (never held in memory)
 * and only part 2 runs, so the peak resident memory printed is the summary's own.
 * Built against a tree without record/records.h (before the streaming summary) only part 1
 * runs, so the same program measures the old code: compile it there for a before/after.
 * Usage: bench_summary [--queries N] [--repeat R] [--files-only]
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "analysis/summary.h"
#include "analysis/trace.h"
#include "core/rng.h"

#if defined(__has_include)
#if __has_include("record/records.h")
#define BENCH_FILES 1
#endif
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best wall time of `repeat` trace.json writes over in's records (default cap: sampled). */
static double time_trace(const cb_summary_input *in, int repeat) {
    double best = INFINITY;
    for (int r = 0; r < repeat; r++) {
        FILE *out = fopen("/dev/null", "w");
        if (!out) return NAN;
        cb_trace_input ti = {.spec = in->spec, .t0_ns = in->t0_ns, .pipelines = in->pipelines};
        cb_error err;
        cb_error_clear(&err);
        double t = now_s();
        int rc = cb_trace_write(&ti, out, &err);
        t = now_s() - t;
        fclose(out);
        if (rc != CB_OK) {
            fprintf(stderr, "bench_summary: trace: %s\n", err.msg);
            return NAN;
        }
        if (t < best) best = t;
    }
    return best;
}

static long peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

/* Best wall time of `repeat` summaries of in. */
static double time_summary(const cb_summary_input *in, int repeat) {
    double best = INFINITY;
    for (int r = 0; r < repeat; r++) {
        FILE *out = fopen("/dev/null", "w");
        if (!out) return NAN;
        cb_error err;
        cb_error_clear(&err);
        double t = now_s();
        int rc = cb_summary_write_json(in, out, &err);
        t = now_s() - t;
        fclose(out);
        if (rc != CB_OK) {
            fprintf(stderr, "bench_summary: %s\n", err.msg);
            return NAN;
        }
        if (t < best) best = t;
    }
    return best;
}

#ifdef BENCH_FILES
static int write_file(const char *path, const void *recs, size_t bytes) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    const unsigned char *p = recs;
    while (bytes > 0) {
        ssize_t w = write(fd, p, bytes);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        bytes -= (size_t)w;
    }
    return close(fd);
}
#endif

static int files_only_run(size_t n, int repeat, int64_t t0);
static cb_spec *bench_spec(void);

/* Query i and its two stage runs (the rng advances in query order, so arrays and files hold
 * the same records). */
static void make_query(cb_rng *rng, int64_t t0, size_t i, cb_query_event *q, cb_stage_event *e) {
    int64_t sched = t0 + (int64_t)i * 1000; /* 1 M queries/s offered */
    int64_t submit = sched + (int64_t)(cb_rng_u64(rng) % 2000);
    int64_t s0 = (int64_t)(20000.0 * exp(0.5 * cb_rng_normal(rng)));
    int64_t s1 = (int64_t)(200000.0 * exp(0.8 * cb_rng_normal(rng)));
    int64_t q0 = (int64_t)(cb_rng_u64(rng) % 50000);
    cb_stage_event *a = &e[0], *b = &e[1];
    *a = (cb_stage_event){.enqueue_ns = submit, .prev_end_ns = submit, .start_ns = submit + q0,
                          .end_ns = submit + q0 + s0, .query_id = i, .stage = 0,
                          .device_ns = CB_DEVICE_NS_NONE};
    *b = (cb_stage_event){.enqueue_ns = a->end_ns + 500, .prev_end_ns = a->end_ns,
                          .start_ns = a->end_ns + 800, .end_ns = a->end_ns + 800 + s1,
                          .query_id = i, .stage = 1, .worker = (int16_t)(i % 4),
                          .device_ns = s1 - s1 / 8};
    *q = (cb_query_event){.scheduled_ns = sched, .submit_ns = submit, .start_ns = a->start_ns,
                          .end_ns = b->end_ns, .query_id = i, .status = CB_QUERY_OK};
}

int main(int argc, char **argv) {
    size_t n = 2000000;
    int repeat = 3, files_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--queries") && i + 1 < argc) {
            n = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = (int)strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--files-only")) {
            files_only = 1;
        } else {
            fprintf(stderr, "usage: bench_summary [--queries N] [--repeat R] [--files-only]\n");
            return 2;
        }
    }
    if (n < 1 || repeat < 1) return 2;
    const int64_t t0 = 1000000000LL;
    if (files_only) return files_only_run(n, repeat, t0);
    cb_query_event *q = calloc(n, sizeof *q);
    cb_stage_event *e = calloc(2 * n, sizeof *e);
    if (!q || !e) {
        fprintf(stderr, "bench_summary: out of memory\n");
        return 1;
    }
    cb_rng rng;
    cb_rng_seed(&rng, 1);
    for (size_t i = 0; i < n; i++) make_query(&rng, t0, i, &q[i], &e[2 * i]);
    cb_pipeline_record rec = {.queries = q, .n_queries = n, .stage_events = e,
                              .n_stage_events = 2 * n};
    cb_summary_input in = {.spec = bench_spec(), .t0_ns = t0, .end_ns = t0 + (int64_t)n * 1000 + 1,
                           .pipelines = &rec};
    double records = 3.0 * (double)n;
    printf("bench_summary: %zu queries + %zu stage events (%.0f MB of records), best of %d\n",
           n, 2 * n, records * 64 / 1e6, repeat);
    long rss0 = peak_rss_mib();
    double ta = time_summary(&in, repeat);
    printf("  arrays: %.3f s (%.1f M records/s), peak RSS %ld MiB (records in memory: %ld MiB)\n",
           ta, records / ta / 1e6, peak_rss_mib(), rss0);
    double tta = time_trace(&in, repeat);
    printf("  trace.json (1 M of %zu slices) from arrays: %.3f s\n", 2 * n, tta);
#ifdef BENCH_FILES
    char dir[] = "/tmp/bench_summary.XXXXXX", qb[64], eb[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(qb, sizeof qb, "%s/queries.bin", dir);
    snprintf(eb, sizeof eb, "%s/events.bin", dir);
    if (write_file(qb, q, n * sizeof *q) || write_file(eb, e, 2 * n * sizeof *e)) {
        perror("bench_summary: write");
        return 1;
    }
    cb_pipeline_record frec = {.queries_bin = qb, .events_bin = eb, .file_pipeline = -1};
    in.pipelines = &frec;
    double tf = time_summary(&in, repeat);
    printf("  files:  %.3f s (%.1f M records/s), page cache warm\n", tf, records / tf / 1e6);
    printf("  ratio files / arrays: %.2f\n", tf / ta);
    double ttf = time_trace(&in, repeat);
    printf("  trace.json from files: %.3f s (ratio files / arrays %.2f)\n", ttf, ttf / tta);
    unlink(qb);
    unlink(eb);
    rmdir(dir);
#else
    printf("  (no record/records.h in this tree: arrays only)\n");
#endif
    free(q);
    free(e);
    return 0;
}

static cb_spec *bench_spec(void) {
    static cb_stage_spec st[2] = {
        {.id = 0, .name = "decode", .component = "util.noop", .workers = 1},
        {.id = 1, .name = "model", .component = "util.spin", .workers = 4}};
    static cb_pipeline_spec ps = {.name = "p", .stages = st, .n_stages = 2};
    static cb_spec spec = {.name = "bench_summary", .pipelines = &ps, .n_pipelines = 1};
    ps.loadgen.kind = CB_LOADGEN_POISSON;
    ps.loadgen.rate_qps = 1e6;
    return &spec;
}

static int files_only_run(size_t n, int repeat, int64_t t0) {
#ifdef BENCH_FILES
    enum { CHUNK = 16384 };
    char dir[] = "/tmp/bench_summary.XXXXXX", qb[64], eb[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(qb, sizeof qb, "%s/queries.bin", dir);
    snprintf(eb, sizeof eb, "%s/events.bin", dir);
    FILE *fq = fopen(qb, "wb"), *fe = fopen(eb, "wb");
    cb_query_event *q = malloc(CHUNK * sizeof *q);
    cb_stage_event *e = malloc(2 * CHUNK * sizeof *e);
    if (!fq || !fe || !q || !e) {
        perror("bench_summary");
        return 1;
    }
    cb_rng rng;
    cb_rng_seed(&rng, 1);
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < CHUNK && i < n; k++, i++) make_query(&rng, t0, i, &q[k], &e[2 * k]);
        if (fwrite(q, sizeof *q, k, fq) != k || fwrite(e, sizeof *e, 2 * k, fe) != 2 * k) {
            perror("bench_summary: write");
            return 1;
        }
    }
    free(q);
    free(e);
    if (fclose(fq) || fclose(fe)) return 1;
    cb_pipeline_record frec = {.queries_bin = qb, .events_bin = eb, .file_pipeline = -1};
    cb_summary_input in = {.spec = bench_spec(), .t0_ns = t0, .end_ns = t0 + (int64_t)n * 1000 + 1,
                           .pipelines = &frec};
    double records = 3.0 * (double)n;
    printf("bench_summary --files-only: %zu queries + %zu stage events (%.0f MB of files), "
           "best of %d\n", n, 2 * n, records * 64 / 1e6, repeat);
    long rss0 = peak_rss_mib();
    double tf = time_summary(&in, repeat);
    printf("  files:  %.3f s (%.1f M records/s), peak RSS %ld MiB (before the summary: %ld MiB)\n",
           tf, records / tf / 1e6, peak_rss_mib(), rss0);
    unlink(qb);
    unlink(eb);
    rmdir(dir);
    return 0;
#else
    (void)n, (void)repeat, (void)t0;
    fprintf(stderr, "bench_summary: --files-only needs record/records.h\n");
    return 2;
#endif
}
