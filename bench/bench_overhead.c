/* bench/bench_overhead.c - what the framework itself costs.
 *
 * Runs, in one process and one run of this program:
 *  1. noop chains of depth 1, 10 and 100, closed loop, one query in flight, N queries, with
 *     recording on (CSV files written to a temporary directory): median stage transition (end of
 *     a stage run to the start of the next stage's run for the same query) and median query
 *     latency;
 *  2. the same chains with disable_logs: true on every stage (the baseline for the cost of
 *     recording): ratio of median latencies;
 *  3. offline throughput through a depth-1 noop pipeline (queries/s), recording on and off;
 *  4. optionally (--python) the reference framework's architecture measured on this machine: a
 *     thread per stage joined by queue.Queue, as bench/ref_chain.py does, for the hand-off ratio.
 * Usage: bench_overhead [--queries N] [--offline N] [--python] [--json FILE]
 * Figures go to stdout; docs/benchmarks.md records them with the machine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/stats.h"
#include "core/alloc.h"
#include "core/registry.h"
#include "stages/builtin.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "record/recorder.h"
#include "record/records.h"

typedef struct bench_result {
    double transition_p50_ns;
    double latency_p50_ns, latency_p99_ns;
    double qps;
    size_t queries;
} bench_result;

static char g_tmp[256];

static int write_chain_yaml(const char *path, int depth, const char *loadgen, int disable_logs) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "name: bench\npipelines:\n  - name: chain\n    inputs: [0]\n    outputs: [%d]\n", depth - 1);
    fprintf(f, "    loadgen: %s\n    stages:\n", loadgen);
    for (int i = 0; i < depth; i++) {
        fprintf(f, "      - {id: %d, name: s%d, component: util.noop, disable_logs: %s, outputs: [", i, i,
                disable_logs ? "true" : "false");
        if (i + 1 < depth) fprintf(f, "%d", i + 1);
        fprintf(f, "]}\n");
    }
    fclose(f);
    return 0;
}

static int run_one(cb_registry *reg, int depth, const char *loadgen, int disable_logs, int to_disk,
                   bench_result *out) {
    char path[512], outdir[512];
    snprintf(path, sizeof path, "%s/bench.yaml", g_tmp);
    snprintf(outdir, sizeof outdir, "%s/out", g_tmp);
    if (write_chain_yaml(path, depth, loadgen, disable_logs)) return -1;
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    if (cb_spec_load(path, NULL, 0, reg, &doc, &spec, &err) != CB_OK) {
        char b[1024];
        cb_error_format(&err, b, sizeof b);
        fprintf(stderr, "bench: %s\n", b);
        return -1;
    }
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = spec;
    /* Records stream to files (as in a real run) and are read back for the figures. */
    cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
    ro.spec = spec;
    ro.out_dir = to_disk ? outdir : NULL;
    cb_recorder *recorder = NULL;
    cb_run_result res;
    memset(&res, 0, sizeof res);
    int rc = cb_recorder_create(&ro, &recorder, &err);
    if (rc == CB_OK) rc = cb_run(&o, cb_recorder_sink(recorder), &res, &err);
    if (rc == CB_OK) rc = cb_recorder_stop(recorder, &err);
    if (rc != CB_OK || res.n_errors) {
        char b[1024];
        cb_error_format(&err, b, sizeof b);
        fprintf(stderr, "bench: run failed: %s %s\n", b, res.n_errors ? res.errors[0] : "");
        cb_run_result_fini(&res);
        cb_recorder_destroy(recorder);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
        return -1;
    }
    cb_recorder_destroy(recorder);
    char qpath[600], epath[600];
    snprintf(qpath, sizeof qpath, "%s/queries.bin", outdir);
    snprintf(epath, sizeof epath, "%s/events.bin", outdir);
    cb_pipeline_record src;
    memset(&src, 0, sizeof src);
    src.queries_bin = qpath;
    src.events_bin = epath;
    cb_loaded_records loaded;
    if (cb_records_load(&src, &loaded, &err) != CB_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        cb_run_result_fini(&res);
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
        return -1;
    }
    cb_pipeline_record r = loaded.rec;
    int64_t *lat = cb_malloc((r.n_queries + 1) * sizeof *lat);
    int64_t first = INT64_MAX, last = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        lat[i] = r.queries[i].end_ns - r.queries[i].scheduled_ns;
        if (r.queries[i].submit_ns < first) first = r.queries[i].submit_ns;
        if (r.queries[i].end_ns > last) last = r.queries[i].end_ns;
    }
    cb_pcts p;
    cb_stats_pcts(lat, r.n_queries, &p);
    out->latency_p50_ns = (double)p.p50;
    out->latency_p99_ns = (double)p.p99;
    out->queries = r.n_queries;
    out->qps = last > first ? (double)r.n_queries / ((double)(last - first) / 1e9) : 0;
    cb_free(lat);
    out->transition_p50_ns = 0;
    if (r.n_stage_events) {
        int64_t *tr = cb_malloc(r.n_stage_events * sizeof *tr);
        size_t n = 0;
        for (size_t i = 0; i < r.n_stage_events; i++)
            if (r.stage_events[i].stage > 0) tr[n++] = r.stage_events[i].start_ns - r.stage_events[i].prev_end_ns;
        if (n) {
            cb_stats_pcts(tr, n, &p);
            out->transition_p50_ns = (double)p.p50;
        }
        cb_free(tr);
    }
    cb_loaded_records_fini(&loaded);
    cb_run_result_fini(&res);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    return 0;
}

int main(int argc, char **argv) {
    long nq = 10000, noff = 1000000;
    int python = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--queries") && i + 1 < argc) nq = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--offline") && i + 1 < argc) noff = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--python")) python = 1;
        else {
            fprintf(stderr, "usage: bench_overhead [--queries N] [--offline N] [--python]\n");
            return 2;
        }
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/cbbench-XXXXXX");
    if (!mkdtemp(g_tmp)) return 1;
    char outdir[300];
    snprintf(outdir, sizeof outdir, "%s/out", g_tmp);
    if (mkdir(outdir, 0755) != 0) return 1;
    cb_registry *reg = NULL;
    cb_error err;
    if (cb_builtin_registry(&reg, &err) != CB_OK) return 1;

    char closed[256], offline[256];
    snprintf(closed, sizeof closed, "{component: closed, max_queries: %ld, warmup_queries: 100, config: {concurrency: 1}}", nq);
    snprintf(offline, sizeof offline, "{component: offline, queue_depth: 256, max_queries: %ld}", noff);

    printf("colobench overhead benchmark: %ld queries per closed-loop run, %ld offline\n", nq, noff);
    printf("%-28s %14s %14s %14s %12s\n", "run", "transition p50", "latency p50", "latency p99", "queries/s");
    int depths[3] = {1, 10, 100};
    bench_result rec[3], norec[3];
    for (int d = 0; d < 3; d++) {
        if (run_one(reg, depths[d], closed, 0, 1, &rec[d]) || run_one(reg, depths[d], closed, 1, 1, &norec[d]))
            return 1;
        char name[64];
        snprintf(name, sizeof name, "closed depth %d, recording", depths[d]);
        printf("%-28s %11.0f ns %11.0f ns %11.0f ns %12.0f\n", name, rec[d].transition_p50_ns,
               rec[d].latency_p50_ns, rec[d].latency_p99_ns, rec[d].qps);
        snprintf(name, sizeof name, "closed depth %d, no logs", depths[d]);
        printf("%-28s %14s %11.0f ns %11.0f ns %12.0f\n", name, "-", norec[d].latency_p50_ns,
               norec[d].latency_p99_ns, norec[d].qps);
    }
    bench_result off_rec, off_norec;
    if (run_one(reg, 1, offline, 0, 1, &off_rec) || run_one(reg, 1, offline, 1, 1, &off_norec)) return 1;
    printf("%-28s %14s %14s %14s %12.0f\n", "offline depth 1, recording", "-", "-", "-", off_rec.qps);
    printf("%-28s %14s %14s %14s %12.0f\n", "offline depth 1, no logs", "-", "-", "-", off_norec.qps);

    printf("\nratios (this run):\n");
    for (int d = 0; d < 3; d++)
        printf("  recording cost, depth %-3d   latency p50 recording / no logs = %.2fx (floor: <= 2x)\n",
               depths[d], rec[d].latency_p50_ns / (norec[d].latency_p50_ns > 0 ? norec[d].latency_p50_ns : 1));
    printf("  recording cost, offline     throughput no logs / recording = %.2fx (floor: <= 2x)\n",
           off_norec.qps / (off_rec.qps > 0 ? off_rec.qps : 1));
    printf("  transition p50 depth 10 = %.0f ns (floor: <= 1000 ns); depth-1 latency p50 = %.0f ns "
           "(floor: <= 5000 ns); offline %.2f M q/s (floor: >= 1.0)\n",
           rec[1].transition_p50_ns, rec[0].latency_p50_ns, off_rec.qps / 1e6);
    if (python) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "python3 %s/ref_chain.py --queries 5000", CB_BENCH_DIR);
        FILE *p = popen(cmd, "r");
        double py_handoff = 0, py_query = 0;
        if (p && fscanf(p, "%lf %lf", &py_handoff, &py_query) == 2) {
            printf("  reference architecture (Python threads + queue.Queue, this machine): hand-off p50 "
                   "%.0f ns, depth-1 query p50 %.0f ns\n", py_handoff, py_query);
            printf("  hand-off ratio reference / colobench = %.0fx (floor: >= 25x); query ratio = %.0fx\n",
                   py_handoff / (rec[1].transition_p50_ns > 0 ? rec[1].transition_p50_ns : 1),
                   py_query / (rec[0].latency_p50_ns > 0 ? rec[0].latency_p50_ns : 1));
        } else {
            printf("  reference architecture: python3 run failed\n");
        }
        if (p) pclose(p);
    }
    cb_registry_destroy(reg);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "bench: could not remove %s\n", g_tmp);
    return 0;
}
