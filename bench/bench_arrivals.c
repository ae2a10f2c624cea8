/* bench/bench_arrivals.c - how precisely and how cheaply open-loop arrivals are issued.
 *
 * Poisson load into a one-stage util.noop pipeline, records streamed to files as in a real run
 * and read back. For each rate: dispatch delay (submit - scheduled: how late the generator
 * issued each query) p50/p99, latency (end - scheduled) p50/p99, the CPU the load generator
 * thread burns per second of run (its /proc schedstat run time, polled every 10 ms, so the same
 * figure for any build), the process's CPU per second, and, where this build has them
 * (cb_runtime_driver_stats), spin time per second and the share of runs the driver did itself.
 * Then the highest Poisson rate whose p99 latency stays under --p99-us (bisection on a log
 * scale between the last passing and the first failing rate of a doubling sweep).
 * The source builds against older trees too (no driver stats there), so one program gives the
 * before/after figures: docs/benchmarks.md has the command.
 * Usage: bench_arrivals [--label NAME] [--rates R1,R2,...] [--seconds S] [--p99-us U] [--no-search]
 */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/stats.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "record/recorder.h"
#include "record/records.h"
#include "stages/builtin.h"

#define MAX_RATES 16

typedef struct arr_result {
    double rate;
    size_t queries;
    int64_t dispatch_p50_ns, dispatch_p99_ns, latency_p50_ns, latency_p99_ns;
    double gen_cpu_per_s, proc_cpu_per_s; /* CPU seconds per second of run */
    double spin_per_s, inline_share;      /* -1: not in this build */
} arr_result;

typedef struct bench_ctx {
    char tmp[256];
    cb_registry *reg;
    double seconds;
} bench_ctx;

static int64_t rusage_cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

/* The load generator's thread id, found by its name (cb-lg-...), or -1. */
static long find_driver_tid(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    long tid = -1;
    struct dirent *e;
    while ((e = readdir(d)) && tid < 0) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(comm, sizeof comm, f) && !strncmp(comm, "cb-lg-", 6)) tid = strtol(e->d_name, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return tid;
}

/* Time on CPU of thread tid in ns (schedstat's first field), or -1 once it has exited. */
static int64_t thread_cpu_ns(long tid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", tid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

static int write_yaml(const char *path, double rate, long n, long warmup) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "name: arrivals\npipelines:\n  - name: open\n    inputs: [0]\n    outputs: [0]\n"
            "    loadgen: {component: poisson, max_queries: %ld, warmup_queries: %ld, timeout: 60,\n"
            "              config: {rate: %.1f, seed: 11}}\n"
            "    stages:\n      - {id: 0, name: s, component: util.noop, outputs: []}\n",
            n, warmup, rate);
    return fclose(f) ? -1 : 0;
}

static void fail(const char *what, const cb_error *err) {
    char b[1100];
    cb_error_format(err, b, sizeof b);
    fprintf(stderr, "bench_arrivals: %s: %s\n", what, b);
}

static int run_rate(bench_ctx *bc, double rate, arr_result *out) {
    memset(out, 0, sizeof *out);
    out->rate = rate;
    out->spin_per_s = out->inline_share = -1;
    long n = (long)(rate * bc->seconds);
    if (n < 1000) n = 1000;
    char path[512], outdir[512];
    snprintf(path, sizeof path, "%s/arrivals.yaml", bc->tmp);
    snprintf(outdir, sizeof outdir, "%s/out", bc->tmp);
    if (write_yaml(path, rate, n, n / 10)) return -1;
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    if (cb_spec_load(path, NULL, 0, bc->reg, &doc, &spec, &err) != CB_OK) {
        fail("config", &err);
        return -1;
    }
    cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
    ro.spec = spec;
    ro.out_dir = outdir;
    cb_recorder *recorder = NULL;
    cb_runtime *rt = NULL;
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = spec;
    cb_run_result res;
    memset(&res, 0, sizeof res);
    int rc = cb_recorder_create(&ro, &recorder, &err);
    if (!rc) rc = cb_runtime_create(&o, &rt, &err);
    if (!rc) rc = cb_runtime_prepare(rt, &err);
    int64_t cpu0 = rusage_cpu_ns(), t0 = cb_clock_now_ns(), gen_ns = 0, gen_at = t0;
    if (!rc) rc = cb_runtime_start(rt, cb_recorder_sink(recorder), &err);
    if (!rc) {
        long tid = -1;
        for (int k = 0; k < 200 && tid < 0; k++) {
            tid = find_driver_tid();
            if (tid < 0) cb_clock_sleep_until_ns(cb_clock_now_ns() + 100000);
        }
        for (;;) {
            bool done = cb_runtime_wait(rt, 10000000);
            int64_t c = tid >= 0 ? thread_cpu_ns(tid) : -1;
            if (c >= 0) {
                gen_ns = c;
                gen_at = cb_clock_now_ns();
            }
            if (done) break;
        }
    }
    int64_t t1 = cb_clock_now_ns(), cpu1 = rusage_cpu_ns();
    if (rt) {
        cb_runtime_join(rt, &res);
#ifdef CB_PACER_SPIN_CAP_NS /* this build has driver stats */
        cb_driver_stats ds;
        if (cb_runtime_driver_stats(rt, 0, &ds) == CB_OK) {
            out->spin_per_s = (double)ds.spin_ns / (double)(t1 - t0);
            out->inline_share = (double)ds.inline_runs / (double)n;
        }
#endif
    }
    cb_runtime_destroy(rt);
    if (recorder) {
        int src = cb_recorder_stop(recorder, &err);
        if (!rc) rc = src;
    }
    cb_recorder_destroy(recorder);
    if (rc || res.n_errors) {
        if (rc) fail("run", &err);
        if (res.n_errors) fprintf(stderr, "bench_arrivals: %s\n", res.errors[0]);
        cb_run_result_fini(&res);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
        return -1;
    }
    cb_run_result_fini(&res);
    out->gen_cpu_per_s = gen_at > t0 ? (double)gen_ns / (double)(gen_at - t0) : 0;
    out->proc_cpu_per_s = (double)(cpu1 - cpu0) / (double)(t1 - t0);

    char qpath[600];
    snprintf(qpath, sizeof qpath, "%s/queries.bin", outdir);
    cb_pipeline_record src;
    memset(&src, 0, sizeof src);
    src.queries_bin = qpath;
    cb_loaded_records loaded;
    if (cb_records_load(&src, &loaded, &err) != CB_OK) {
        fail("records", &err);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
        return -1;
    }
    const cb_pipeline_record *r = &loaded.rec;
    int64_t *disp = cb_malloc((r->n_queries + 1) * sizeof *disp);
    int64_t *lat = cb_malloc((r->n_queries + 1) * sizeof *lat);
    size_t m = 0;
    for (size_t i = 0; disp && lat && i < r->n_queries; i++) {
        const cb_query_event *q = &r->queries[i];
        if (q->warmup || q->status != CB_QUERY_OK) continue;
        disp[m] = q->submit_ns - q->scheduled_ns;
        lat[m++] = q->end_ns - q->scheduled_ns;
    }
    out->queries = m;
    cb_pcts p;
    cb_stats_pcts(disp, m, &p);
    out->dispatch_p50_ns = p.p50;
    out->dispatch_p99_ns = p.p99;
    cb_stats_pcts(lat, m, &p);
    out->latency_p50_ns = p.p50;
    out->latency_p99_ns = p.p99;
    cb_free(disp);
    cb_free(lat);
    cb_loaded_records_fini(&loaded);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    return m ? 0 : -1;
}

static void print_row(const char *label, const arr_result *a) {
    char spin[32] = "-", inl[32] = "-";
    if (a->spin_per_s >= 0) snprintf(spin, sizeof spin, "%.3f", a->spin_per_s);
    if (a->inline_share >= 0) snprintf(inl, sizeof inl, "%.2f", a->inline_share);
    printf("%-8s %9.0f %8zu %9.1f %9.1f %9.1f %9.1f %8.3f %8.3f %8s %7s\n", label, a->rate, a->queries,
           a->dispatch_p50_ns / 1e3, a->dispatch_p99_ns / 1e3, a->latency_p50_ns / 1e3,
           a->latency_p99_ns / 1e3, a->gen_cpu_per_s, a->proc_cpu_per_s, spin, inl);
    fflush(stdout);
}

/* The highest rate whose p99 latency is under limit_ns: doubling from 10k/s, then 6 bisection
 * steps on a log scale. Returns 0 when even 10k/s fails. */
static double search_rate(bench_ctx *bc, const char *label, int64_t limit_ns) {
    double lo = 0, hi = 0;
    arr_result a;
    for (double r = 10000; r <= 8e6; r *= 2) {
        if (run_rate(bc, r, &a)) return -1;
        print_row(label, &a);
        if (a.latency_p99_ns < limit_ns) {
            lo = r;
        } else {
            hi = r;
            break;
        }
    }
    if (lo == 0 || hi == 0) return lo;
    for (int k = 0; k < 6; k++) {
        double mid = (double)(int64_t)(lo * sqrt(hi / lo));
        if (run_rate(bc, mid, &a)) return -1;
        print_row(label, &a);
        if (a.latency_p99_ns < limit_ns) lo = mid;
        else hi = mid;
    }
    return lo;
}

static int parse_rates(const char *s, double *rates, int *n) {
    *n = 0;
    while (*s && *n < MAX_RATES) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || v <= 0 || v > 1e8) return -1;
        rates[(*n)++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return *s ? -1 : 0;
}

int main(int argc, char **argv) {
    bench_ctx bc;
    memset(&bc, 0, sizeof bc);
    bc.seconds = 1.0;
    double rates[MAX_RATES] = {1000, 10000, 100000, 500000};
    int n_rates = 4, search = 1;
    double p99_us = 100;
    const char *label = "this";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--label") && v) label = argv[++i];
        else if (!strcmp(a, "--seconds") && v) bc.seconds = strtod(argv[++i], NULL);
        else if (!strcmp(a, "--p99-us") && v) p99_us = strtod(argv[++i], NULL);
        else if (!strcmp(a, "--rates") && v && !parse_rates(argv[++i], rates, &n_rates)) continue;
        else if (!strcmp(a, "--no-search")) search = 0;
        else {
            fprintf(stderr, "usage: bench_arrivals [--label NAME] [--rates R1,R2,...] [--seconds S] "
                            "[--p99-us U] [--no-search]\n");
            return 2;
        }
    }
    if (!(bc.seconds > 0 && bc.seconds <= 60) || !(p99_us > 0)) {
        fprintf(stderr, "bench_arrivals: --seconds must be in (0, 60], --p99-us > 0\n");
        return 2;
    }
    snprintf(bc.tmp, sizeof bc.tmp, "/tmp/cbarrivals-XXXXXX");
    if (!mkdtemp(bc.tmp)) return 1;
    char outdir[300];
    snprintf(outdir, sizeof outdir, "%s/out", bc.tmp);
    if (mkdir(outdir, 0755) != 0) return 1;
    cb_error err;
    if (cb_builtin_registry(&bc.reg, &err) != CB_OK) return 1;

    printf("%-8s %9s %8s %9s %9s %9s %9s %8s %8s %8s %7s\n", "build", "rate/s", "queries",
           "disp p50", "disp p99", "lat p50", "lat p99", "gen cpu", "proc cpu", "spin", "inline");
    printf("%-8s %9s %8s %9s %9s %9s %9s %8s %8s %8s %7s\n", "", "", "", "us", "us", "us", "us",
           "s/s", "s/s", "s/s", "share");
    int rc = 0;
    for (int i = 0; i < n_rates && !rc; i++) {
        arr_result a;
        rc = run_rate(&bc, rates[i], &a);
        if (!rc) print_row(label, &a);
    }
    if (!rc && search) {
        double best = search_rate(&bc, label, (int64_t)(p99_us * 1000));
        if (best < 0) rc = 1;
        else printf("%-8s highest Poisson rate with p99 latency < %.0f us: %.0f/s\n", label, p99_us, best);
    }
    cb_registry_destroy(bc.reg);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", bc.tmp);
    if (system(cmd) != 0) fprintf(stderr, "bench_arrivals: could not remove %s\n", bc.tmp);
    return rc ? 1 : 0;
}
