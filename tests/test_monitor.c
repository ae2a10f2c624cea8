/* Monitor tests: real outcomes of the sampler on this machine (a busy child's CPU share, a
 * child's RSS, host rows), the GPU source against the fake NVML (tests/fake/fake_nvml.c), MIG
 * resolution, perf (whatever the kernel allows) and `colobench monitor` end to end. The summary
 * (computed by reading metrics.csv back) is compared, text for text, with a brute-force
 * reference that keeps every sample in memory, over long synthetic series injected through
 * cb__monitor_inject; the monitor's memory is shown flat in the number of samples; metrics.csv
 * is created without following a planted symbolic link and survives a write error. `colobench
 * monitor` (experiment/watch.h): exit statuses, Ctrl-C forwarded to the command through the one
 * signal thread, a directory in use refused, planted symbolic links never followed. No check
 * times our own speed (bounds only stop a hung test); the monitor's overhead is printed. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "analysis/json.h"
#include "core/clock.h"
#include "monitor/monitor.h"
#include "monitor/monitor_int.h"
#include "monitor/nvml.h"

#define FAKE_NVML CB_TEST_BINDIR "/tests/fake_nvml.so"
#define MS 1000000LL

/* ---- helpers ------------------------------------------------------------------------------- */

typedef struct row {
    long long t_ns;
    char source[16], device[32], metric[48];
    int pid;
    double value;
} row;

typedef struct rows {
    row *r;
    size_t n;
    int header_ok;
} rows;

static void field(const char **p, char *dst, size_t size) {
    size_t k = 0;
    while (**p && **p != ',' && **p != '\n') {
        if (k + 1 < size) dst[k++] = **p;
        (*p)++;
    }
    dst[k] = '\0';
    if (**p == ',') (*p)++;
}

static rows read_csv(const char *dir) {
    rows out = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    char *text = cb_test_read(path, NULL);
    if (!text) return out;
    const char *hdr = "t_ns,source,device,pid,metric,value\n";
    out.header_ok = !strncmp(text, hdr, strlen(hdr));
    size_t cap = 1024;
    out.r = malloc(cap * sizeof *out.r);
    const char *p = strchr(text, '\n');
    while (p && *++p) {
        if (out.n == cap) out.r = realloc(out.r, (cap *= 2) * sizeof *out.r);
        row *r = &out.r[out.n++];
        char t[32], pid[16], val[64];
        field(&p, t, sizeof t);
        field(&p, r->source, sizeof r->source);
        field(&p, r->device, sizeof r->device);
        field(&p, pid, sizeof pid);
        field(&p, r->metric, sizeof r->metric);
        field(&p, val, sizeof val);
        r->t_ns = strtoll(t, NULL, 10);
        r->pid = pid[0] ? (int)strtol(pid, NULL, 10) : 0;
        r->value = strtod(val, NULL);
        p = strchr(p, '\n'); /* at the row's end already, unless a field was too long */
    }
    free(text);
    return out;
}

/* Rows matching source/device/metric (NULL = any) and pid (-1 = any) into out[]; the count. */
static size_t select_rows(const rows *rs, const char *source, const char *device, int pid,
                          const char *metric, const row **out, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *r = &rs->r[i];
        if (source && strcmp(r->source, source)) continue;
        if (device && strcmp(r->device, device)) continue;
        if (metric && strcmp(r->metric, metric)) continue;
        if (pid >= 0 && r->pid != pid) continue;
        if (out && n < max) out[n] = r;
        n++;
    }
    return n;
}

static void write_summary(const cb_monitor *m, const cb_monitor_window *w, size_t nw,
                          const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    cb_json j;
    cb_json_init(&j, f, 2);
    cb_monitor_summary_json(m, w, nw, &j);
    CB_CHECK_EQ_INT(cb_json_finish(&j), 0);
    fclose(f);
}

#define py_json cb_test_py_json

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static pid_t spawn_busy(long ms) {
    pid_t pid = fork();
    if (pid == 0) {
        int64_t end = cb_clock_now_ns() + ms * MS;
        volatile uint64_t x = 0;
        while (cb_clock_now_ns() < end) x++;
        _exit(0);
    }
    return pid;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_busy_child_cpu(void) {
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 50 * MS;
    o.sources = CB_MON_PROCESS;
    o.out_dir = dir;
    cb_monitor *m = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, &e), CB_OK);
    if (!m) return;
    int64_t t0 = cb_clock_now_ns();
    cb_monitor_set_t0(m, t0);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_CHILDREN, &ru0);
    int64_t t_spawn = cb_clock_now_ns();
    pid_t pid = spawn_busy(600);
    CB_CHECK_EQ_INT(cb_monitor_add_process(m, pid, "busy"), CB_OK);
    int st;
    waitpid(pid, &st, 0);
    int64_t t_reaped = cb_clock_now_ns();
    getrusage(RUSAGE_CHILDREN, &ru1);
    sleep_ms(120);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, &e), CB_OK);
    rows rs = read_csv(dir);
    CB_CHECK(rs.header_ok);
    const row *sel[512], *rss[512];
    size_t n = select_rows(&rs, "process", "", pid, "cpu_percent", sel, 512);
    size_t n_rss = select_rows(&rs, "process", "", pid, "rss_bytes", rss, 512);
    /* One sample per period while the child lived (600 ms: 12), however long it took to spawn
     * and reap it on a loaded machine; a sampler delayed by load samples less, never more. */
    long span_periods = (long)((t_reaped - t_spawn) / (50 * MS));
    CB_CHECK_CMP_INT(n, >=, 3);
    CB_CHECK_CMP_INT((long)n, <=, span_periods + 2);
    /* The child's CPU time as the monitor saw it: each cpu_percent covers the time since the
     * previous sample of the process (rss_bytes is written for every sample, the first
     * included). It equals the CPU time the kernel accounted to the child, except what the
     * child used before the first sample and after the last one: at most those wall times, as
     * it is single-threaded. A computation, so it holds however loaded the machine is. */
    CB_CHECK_EQ_INT(n_rss, n + 1);
    double seen_s = 0;
    for (size_t i = 0; i < n && i + 1 < n_rss && i < 511; i++) {
        CB_CHECK_EQ_INT(sel[i]->t_ns, rss[i + 1]->t_ns);
        seen_s += sel[i]->value / 100.0 * (double)(rss[i + 1]->t_ns - rss[i]->t_ns) / 1e9;
    }
    double cpu_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                   (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                   (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                   (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double unseen_s = n_rss ? (double)(t0 + rss[0]->t_ns - t_spawn) / 1e9 +
                                  (double)(t_reaped - (t0 + rss[n_rss - 1]->t_ns)) / 1e9
                            : 0;
    double tick_s = 2.0 / (double)sysconf(_SC_CLK_TCK); /* /proc counts whole clock ticks */
    printf("# busy child: %zu cpu_percent samples; %.3f s of CPU seen, %.3f s accounted, %.3f s "
           "of wall time unsampled\n",
           n, seen_s, cpu_s, unseen_s);
    CB_CHECK(seen_s <= cpu_s * 1.02 + tick_s);
    CB_CHECK(seen_s >= cpu_s - unseen_s - tick_s);
    CB_CHECK(seen_s > 0);
    /* Spacing of the sample times: absolute deadlines keep the median at the period; +-50 %
     * holds when the sampler shares a saturated core. */
    long long gaps[512];
    size_t ng = 0;
    for (size_t i = 1; i < n && i < 512; i++) gaps[ng++] = sel[i]->t_ns - sel[i - 1]->t_ns;
    if (ng) {
        qsort(gaps, ng, sizeof gaps[0], cmp_ll);
        CB_CHECK_NEAR(gaps[ng / 2], 50 * MS, 25 * MS);
    }
    CB_CHECK(select_rows(&rs, "process", "", pid, "threads", NULL, 0) > 0);
    CB_CHECK(select_rows(&rs, "process", "", pid, "voluntary_ctx_switches", NULL, 0) > 0);
    /* The exit was noticed once and the process is no longer sampled. */
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    char *v = py_json(path, "sum(\"exited\" in s for s in d[\"notices\"])");
    CB_CHECK_STR_EQ(v, "1");
    free(v);
    free(rs.r);
    cb_monitor_destroy(m);
}

static void test_child_rss(void) {
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 50 * MS;
    o.sources = CB_MON_PROCESS;
    o.out_dir = dir;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    pid_t pid = fork();
    if (pid == 0) {
        /* mmap and touch every page: sanitizer allocators may not back a malloc'd block. */
        size_t n = 64u << 20;
        volatile char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) _exit(1);
        for (size_t i = 0; i < n; i += 4096) p[i] = 0x5a;
        sleep_ms(400);
        _exit(p[4096] == 0x5a ? 0 : 1);
    }
    CB_CHECK_EQ_INT(cb_monitor_add_process(m, pid, "alloc"), CB_OK);
    int st;
    waitpid(pid, &st, 0);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, NULL), CB_OK);
    rows rs = read_csv(dir);
    const row *sel[256];
    size_t n = select_rows(&rs, "process", "", pid, "rss_bytes", sel, 256);
    double max = 0;
    for (size_t i = 0; i < n && i < 256; i++)
        if (sel[i]->value > max) max = sel[i]->value;
    printf("# rss max %.1f MiB over %zu samples\n", max / 1048576.0, n);
    CB_CHECK(max >= 60.0 * 1048576.0);
    free(rs.r);
    cb_monitor_destroy(m);
}

static void test_host_rows_and_overhead(void) {
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 100 * MS;
    o.sources = CB_MON_CPU | CB_MON_MEMORY | CB_MON_PROCESS;
    o.out_dir = dir;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    CB_CHECK_EQ_INT(cb_monitor_add_process(m, getpid(), "self"), CB_OK);
    sleep_ms(1000);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, NULL), CB_OK);
    int64_t cpu_ns, wall_ns;
    cb_monitor_overhead(m, &cpu_ns, &wall_ns);
    printf("# overhead at 100 ms (cpu, memory, process): cpu_ns=%lld wall_ns=%lld "
           "percent_of_core=%.4f\n",
           (long long)cpu_ns, (long long)wall_ns, wall_ns ? 100.0 * cpu_ns / wall_ns : 0.0);
    CB_CHECK(cpu_ns > 0);
    CB_CHECK(wall_ns >= 900 * MS);
    rows rs = read_csv(dir);
    CB_CHECK(rs.header_ok);
    const row *sel[64];
    size_t n = select_rows(&rs, "cpu", "", -1, "util_percent", sel, 64);
    CB_CHECK_CMP_INT(n, >=, 5);
    for (size_t i = 0; i < n && i < 64; i++) CB_CHECK(sel[i]->value >= 0 && sel[i]->value <= 100);
    CB_CHECK(select_rows(&rs, "cpu", "cpu0", -1, "util_percent", NULL, 0) >= 5);
    CB_CHECK(select_rows(&rs, "cpu", "", -1, "iowait_percent", NULL, 0) >= 5);
    const row *tot[64], *av[64];
    size_t nt = select_rows(&rs, "memory", "", -1, "total_bytes", tot, 64);
    size_t na = select_rows(&rs, "memory", "", -1, "available_bytes", av, 64);
    CB_CHECK_CMP_INT(nt, >=, 5);
    CB_CHECK_EQ_INT(nt, na);
    for (size_t i = 0; i < nt && i < na && i < 64; i++) {
        CB_CHECK(tot[i]->value > 0);
        CB_CHECK(av[i]->value <= tot[i]->value);
    }
    /* No t0 set: rows are relative to the monitor's start, so none is negative. */
    int neg = 0;
    for (size_t i = 0; i < rs.n; i++) neg += rs.r[i].t_ns < 0;
    CB_CHECK_EQ_INT(neg, 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    char *v = py_json(path, "d[\"overhead\"][\"percent_of_core\"] >= 0, len(d[\"series\"]) > 10");
    CB_CHECK_STR_EQ(v, "True True");
    free(v);
    free(rs.r);
    cb_monitor_destroy(m);
}

static void fake_env(int gpus, int mig, int gpm, int pid) {
    char b[32];
    snprintf(b, sizeof b, "%d", gpus);
    setenv("FAKE_NVML_GPUS", b, 1);
    setenv("FAKE_NVML_MIG", mig ? "1" : "0", 1);
    setenv("FAKE_NVML_GPM", gpm ? "1" : "0", 1);
    snprintf(b, sizeof b, "%d", pid);
    setenv("FAKE_NVML_PID", b, 1);
}

static void test_fake_nvml_gpu_rows_and_energy(void) {
    const char *dir = cb_test_tmpdir();
    fake_env(1, 0, 1, (int)getpid());
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 50 * MS;
    o.sources = CB_MON_GPU | CB_MON_PROCESS;
    o.out_dir = dir;
    o.nvml_library = FAKE_NVML;
    o.gpu_per_process_attributable = false;
    cb_monitor *m = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, &e), CB_OK);
    if (!m) return;
    cb_monitor_set_t0(m, cb_clock_now_ns());
    CB_CHECK_EQ_INT(cb_monitor_add_process(m, getpid(), "pipe-a"), CB_OK);
    sleep_ms(200);
    int64_t w0 = cb_clock_now_ns();
    sleep_ms(300);
    int64_t p1 = cb_clock_now_ns();
    sleep_ms(300);
    int64_t w1 = cb_clock_now_ns();
    sleep_ms(150);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, &e), CB_OK);
    rows rs = read_csv(dir);
    const row *sel[256];
    size_t n = select_rows(&rs, "gpu", "gpu0", 0, "gpu_util_percent", sel, 256);
    CB_CHECK_CMP_INT(n, >=, 10);
    if (n) CB_CHECK_NEAR(sel[0]->value, 75, 0);
    n = select_rows(&rs, "gpu", "gpu0", 0, "power_watts", sel, 256);
    if (n) CB_CHECK_NEAR(sel[0]->value, 1.0, 1e-9);
    n = select_rows(&rs, "gpu", "gpu0", 0, "mem_total_bytes", sel, 256);
    if (n) CB_CHECK_NEAR(sel[0]->value, 80.0 * (1 << 30), 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "sm_clock_mhz", NULL, 0) > 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "temperature_c", NULL, 0) > 0);
    n = select_rows(&rs, "gpu", "gpu0", 0, "pcie_rx_bytes_per_s", sel, 256);
    if (n) CB_CHECK_NEAR(sel[0]->value, 2000 * 1024.0, 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "throttle_reasons", NULL, 0) > 0);
    n = select_rows(&rs, "gpu", "gpu0", (int)getpid(), "gpu_mem_bytes", sel, 256);
    CB_CHECK_CMP_INT(n, >=, 10);
    if (n) CB_CHECK_NEAR(sel[0]->value, 1 << 30, 0);
    n = select_rows(&rs, "gpu", "gpu0", (int)getpid(), "sm_util_percent", sel, 256);
    CB_CHECK_CMP_INT(n, >=, 5);
    if (n) CB_CHECK_NEAR(sel[0]->value, 42, 0);
    n = select_rows(&rs, "gpu", "gpu0", 0, "sm_activity_percent", sel, 256);
    CB_CHECK_CMP_INT(n, >=, 10);
    if (n) CB_CHECK_NEAR(sel[0]->value, 60, 1e-9);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "sm_occupancy_percent", NULL, 0) > 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "tensor_active_percent", NULL, 0) > 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "dram_active_percent", NULL, 0) > 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "energy_mj", NULL, 0) > 0);

    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    cb_monitor_window w[2] = {{NULL, w0, w1}, {"a", w0, p1}};
    write_summary(m, w, 2, path);
    char *s = cb_test_read(path, NULL);
    CB_CHECK_CONTAINS(s, "\"not attributable\"");
    free(s);
    char expr[512];
    snprintf(expr, sizeof expr,
             "abs(d[\"energy_j\"][\"window\"] / %.9f - 1) < 0.2, "
             "abs(d[\"energy_j\"][\"pipelines\"][\"a\"] / %.9f - 1) < 0.2, "
             "d[\"energy_j\"][\"window\"]",
             (double)(w1 - w0) / 1e9, (double)(p1 - w0) / 1e9);
    char *v = py_json(path, expr);
    printf("# energy over a %.3f s window: %s\n", (double)(w1 - w0) / 1e9, v ? v : "?");
    CB_CHECK(v && !strncmp(v, "True True", 9));
    free(v);
    v = py_json(path, "[x[\"mean\"] for x in d[\"series\"] if x[\"metric\"] == \"gpu_mem_bytes\"]"
                      "[0], [x[\"label\"] for x in d[\"series\"] if x[\"metric\"] == "
                      "\"gpu_mem_bytes\"][0], len(d[\"notices\"])");
    CB_CHECK_STR_EQ(v, "not attributable pipe-a 0");
    free(v);
    free(rs.r);
    cb_monitor_destroy(m);

    /* Attributable: the per-process series carries numbers. */
    dir = cb_test_tmpdir();
    o.out_dir = dir;
    o.gpu_per_process_attributable = true;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, &e), CB_OK);
    if (!m) return;
    CB_CHECK_EQ_INT(cb_monitor_add_process(m, getpid(), "pipe-a"), CB_OK);
    sleep_ms(200);
    cb_monitor_stop(m, NULL);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    v = py_json(path, "[x[\"mean\"] for x in d[\"series\"] if x[\"metric\"] == \"gpu_mem_bytes\"]"
                      "[0]");
    CB_CHECK_STR_EQ(v, "1073741824");
    free(v);
    cb_monitor_destroy(m);
}

static void test_fake_nvml_mig_rows(void) {
    const char *dir = cb_test_tmpdir();
    fake_env(1, 1, 0, 0);
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 50 * MS;
    o.sources = CB_MON_GPU;
    o.out_dir = dir;
    o.nvml_library = FAKE_NVML;
    cb_logger quiet = {CB_LOG_ERROR, NULL};
    o.log = &quiet;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    sleep_ms(200);
    cb_monitor_stop(m, NULL);
    rows rs = read_csv(dir);
    const row *sel[64];
    size_t n = select_rows(&rs, "gpu", "gpu0/mig1", 0, "mem_used_bytes", sel, 64);
    CB_CHECK_CMP_INT(n, >=, 2);
    if (n) CB_CHECK_NEAR(sel[0]->value, 2.0 * (1 << 30), 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0/mig0", 0, "mem_used_bytes", NULL, 0) >= 2);
    /* Whole-GPU utilization is not supported under MIG: disabled after one notice, the rest go on. */
    CB_CHECK_EQ_INT(select_rows(&rs, "gpu", "gpu0", 0, "gpu_util_percent", NULL, 0), 0);
    CB_CHECK(select_rows(&rs, "gpu", "gpu0", 0, "power_watts", NULL, 0) >= 2);
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    char *v = py_json(path, "sum(\"Not Supported\" in s and \"Utilization\" in s for s in "
                            "d[\"notices\"])");
    CB_CHECK_STR_EQ(v, "1");
    free(v);
    free(rs.r);
    cb_monitor_destroy(m);
}

static void test_nvml_missing(void) {
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 50 * MS;
    o.sources = CB_MON_CPU | CB_MON_GPU;
    o.out_dir = dir;
    o.nvml_library = "/nonexistent/libnvidia-ml.so.1";
    char logpath[1024];
    snprintf(logpath, sizeof logpath, "%s/log.txt", dir);
    FILE *lf = fopen(logpath, "w");
    cb_logger lg = {CB_LOG_INFO, lf};
    o.log = &lg;
    cb_monitor *m = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, &e), CB_OK);
    if (!m) return;
    sleep_ms(250);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, NULL), CB_OK);
    fclose(lf);
    rows rs = read_csv(dir);
    CB_CHECK(select_rows(&rs, "cpu", "", -1, "util_percent", NULL, 0) >= 2);
    CB_CHECK_EQ_INT(select_rows(&rs, "gpu", NULL, -1, NULL, NULL, 0), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    char *v = py_json(path, "len(d[\"notices\"]), d[\"notices\"][0]");
    CB_CHECK(v && !strncmp(v, "1 gpu: NVML unavailable: ", 25));
    CB_CHECK_CONTAINS(v, "CPU monitors continue");
    printf("# %s\n", v ? v : "");
    free(v);
    CB_CHECK_EQ_INT(cb_test_count_lines(logpath), 1);
    free(rs.r);
    cb_monitor_destroy(m);

    /* A library without a GPU: the same single notice. */
    fake_env(0, 0, 0, 0);
    dir = cb_test_tmpdir();
    o.out_dir = dir;
    o.nvml_library = FAKE_NVML;
    o.log = NULL;
    cb_logger quiet = {CB_LOG_ERROR, NULL};
    o.log = &quiet;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, &e), CB_OK);
    if (!m) return;
    cb_monitor_stop(m, NULL);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    v = py_json(path, "len(d[\"notices\"]), \"no GPU\" in d[\"notices\"][0]");
    CB_CHECK_STR_EQ(v, "1 True");
    free(v);
    cb_monitor_destroy(m);
}

static void test_resolve_mig(void) {
    fake_env(2, 1, 0, 0);
    cb_nvml *n = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_nvml_open(FAKE_NVML, &n, &e), CB_OK);
    if (!n) return;
    CB_CHECK_EQ_INT(cb_nvml_device_count(n), 2);
    char uuid[128];
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "MIG-fa4e0000-0000-4000-8000-000000000001", uuid,
                                        sizeof uuid, &e),
                    CB_OK);
    CB_CHECK_STR_EQ(uuid, "MIG-fa4e0000-0000-4000-8000-000000000001");
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "mig:1", uuid, sizeof uuid, &e), CB_OK);
    CB_CHECK_STR_EQ(uuid, "MIG-fa4e0000-0000-4000-8000-000000000001");
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "mig:1:0", uuid, sizeof uuid, &e), CB_OK);
    CB_CHECK_STR_EQ(uuid, "MIG-fa4e0000-0000-4000-8000-000000000010");
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "MIG-00000000-dead-beef-0000-000000000000", uuid,
                                        sizeof uuid, &e),
                    CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "MIG-fa4e0000-0000-4000-8000-000000000000");
    CB_CHECK_CONTAINS(e.msg, "MIG-fa4e0000-0000-4000-8000-000000000011");
    printf("# %s\n", e.msg);
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "mig:5", uuid, sizeof uuid, &e), CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "no MIG device 5");
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "mig:7:0", uuid, sizeof uuid, &e), CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "2 GPUs");
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "mig:x", uuid, sizeof uuid, &e), CB_ECONFIG);
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "cuda:0", uuid, sizeof uuid, &e), CB_ECONFIG);
    CB_CHECK_EQ_INT(cb_nvml_check_gpu(n, 1, &e), CB_OK);
    CB_CHECK_EQ_INT(cb_nvml_check_gpu(n, 2, &e), CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "2 GPUs");
    cb_nvml_close(n);

    fake_env(1, 0, 0, 0);
    CB_CHECK_EQ_INT(cb_nvml_open(FAKE_NVML, &n, &e), CB_OK);
    if (!n) return;
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "mig:0", uuid, sizeof uuid, &e), CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "MIG mode is disabled");
    CB_CHECK_EQ_INT(cb_nvml_resolve_mig(n, "MIG-fa4e0000-0000-4000-8000-000000000001", uuid,
                                        sizeof uuid, &e),
                    CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "MIG mode is disabled");
    cb_nvml_close(n);

    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_nvml_open("/nonexistent/libnvidia-ml.so.1", &n, &e), CB_ENOENT);
    CB_CHECK_CONTAINS(e.msg, "nvml: ");
    setenv("FAKE_NVML_INIT_FAIL", "1", 1);
    CB_CHECK_EQ_INT(cb_nvml_open(FAKE_NVML, &n, &e), CB_EUNSUPPORTED);
    CB_CHECK_CONTAINS(e.msg, "Driver Not Loaded");
    unsetenv("FAKE_NVML_INIT_FAIL");
}

static void test_perf(void) {
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 50 * MS;
    o.sources = CB_MON_PERF;
    o.out_dir = dir;
    cb_logger quiet = {CB_LOG_ERROR, NULL};
    o.log = &quiet;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    pid_t pid = spawn_busy(300);
    cb_monitor_add_process(m, pid, "busy");
    int st;
    waitpid(pid, &st, 0);
    sleep_ms(100);
    cb_monitor_stop(m, NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    write_summary(m, NULL, 0, path);
    char *v = py_json(path, "d[\"perf\"]");
    printf("# perf: %s\n", v ? v : "?");
    rows rs = read_csv(dir);
    const row *sel[256];
    size_t n = select_rows(&rs, "perf", "", pid, "instructions", sel, 256);
    if (v && !strcmp(v, "available")) {
        double total = 0;
        for (size_t i = 0; i < n && i < 256; i++) total += sel[i]->value;
        printf("# perf: %.0f instructions\n", total);
        CB_CHECK(total > 0);
    } else {
        CB_CHECK(v && !strncmp(v, "unavailable: ", 13));
        CB_CHECK_CONTAINS(v, "perf_event_paranoid");
        CB_CHECK_EQ_INT(n, 0);
        char *nt = py_json(path, "sum(s.startswith(\"perf: unavailable: \") for s in d[\"notices\"])");
        CB_CHECK_STR_EQ(nt, "1");
        free(nt);
    }
    free(v);
    free(rs.r);
    cb_monitor_destroy(m);
}

static void test_t0_and_pending_rows(void) {
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 20 * MS;
    o.sources = CB_MON_MEMORY;
    o.out_dir = dir;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    sleep_ms(100);
    cb_monitor_set_t0(m, cb_clock_now_ns()); /* preparation rows get negative t_ns */
    sleep_ms(100);
    cb_monitor_stop(m, NULL);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, NULL), CB_OK); /* idempotent */
    rows rs = read_csv(dir);
    int neg = 0, pos = 0;
    long long prev = INT64_MIN;
    int sorted = 1;
    for (size_t i = 0; i < rs.n; i++) {
        neg += rs.r[i].t_ns < 0;
        pos += rs.r[i].t_ns >= 0;
        if (rs.r[i].t_ns < prev) sorted = 0;
        prev = rs.r[i].t_ns;
    }
    CB_CHECK(neg > 0);
    CB_CHECK(pos > 0);
    CB_CHECK(sorted);
    free(rs.r);
    cb_monitor_destroy(m);
    cb_monitor_destroy(NULL);
    CB_CHECK_EQ_INT(cb_monitor_source_bit("gpu"), CB_MON_GPU);
    CB_CHECK_EQ_INT(cb_monitor_source_bit("disk"), 0);
    CB_CHECK_STR_EQ(cb_monitor_source_name(CB_MON_PERF), "perf");
}

/* The one table of source names (core/monitor_sources.def): values kept, names in order. */
static void test_source_table(void) {
    CB_CHECK_EQ_INT(CB_MON_CPU, 1);
    CB_CHECK_EQ_INT(CB_MON_MEMORY, 2);
    CB_CHECK_EQ_INT(CB_MON_PROCESS, 4);
    CB_CHECK_EQ_INT(CB_MON_GPU, 8);
    CB_CHECK_EQ_INT(CB_MON_PERF, 16);
    CB_CHECK_EQ_INT(CB_MON_ALL, 31);
    CB_CHECK_EQ_INT(CB_MON_N_SOURCES, 5);
    for (size_t i = 0; i < CB_MON_N_SOURCES; i++) {
        const char *name = cb_monitor_source_names[i];
        unsigned bit = cb_monitor_source_bits[i];
        CB_CHECK_EQ_INT(cb_monitor_source_bit(name), bit);
        CB_CHECK_STR_EQ(cb_monitor_source_name(bit), name);
    }
    CB_CHECK(cb_monitor_source_name(CB_MON_CPU | CB_MON_GPU) == NULL);
    CB_CHECK_EQ_INT(cb_monitor_source_bit(NULL), 0);
    char b[64];
    CB_CHECK_EQ_INT(cb_monitor_sources_format(CB_MON_ALL, ", ", b, sizeof b), 31);
    CB_CHECK_STR_EQ(b, "cpu, memory, process, gpu, perf");
    cb_monitor_sources_format(CB_MON_GPU | CB_MON_CPU, "+", b, sizeof b);
    CB_CHECK_STR_EQ(b, "cpu+gpu");
    cb_monitor_sources_format(0, ", ", b, sizeof b);
    CB_CHECK_STR_EQ(b, "");
    CB_CHECK_EQ_INT(cb_monitor_sources_format(CB_MON_ALL, ", ", b, 8), 31); /* truncated */
    CB_CHECK_STR_EQ(b, "cpu, me");
}

/* ---- the summary against a brute-force reference ----------------------------------------- */

/* The series the synthetic run injects, in the order they first appear. */
typedef struct syn_def {
    const char *source, *device;
    pid_t pid;
    const char *label, *metric;
} syn_def;

static const syn_def k_syn[] = {
    {"gpu", "gpu0", 0, NULL, "energy_mj"},        /* cumulative, fractional */
    {"cpu", "", 0, NULL, "util_percent"},         /* any double in [0, 100) */
    {"process", "", 4242, "pipe-a", "cpu_percent"}, /* every 2nd sample, k/3 */
    {"gpu", "gpu0", 4242, "pipe-a", "sm_util_percent"}, /* every 3rd sample, integers */
    {"memory", "", 0, NULL, "used_bytes"},        /* beyond 2^53, and tiny negative ones */
    {"gpu", "gpu1", 0, NULL, "energy_mj"},        /* cumulative integers, samples 500..n-500 */
};
#define N_SYN (sizeof k_syn / sizeof k_syn[0])

typedef struct syn_rec {
    int64_t t_ns;
    double value;
    uint32_t series;
} syn_rec;

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sample k of n of the synthetic run (at most N_SYN values) at t0 + k * 100 ms + jitter; fills
 * out[] and recs[] (when given); the count. energy[] carries the cumulative counters. */
static size_t syn_sample(size_t k, size_t n, int64_t t0, uint64_t *rng, double energy[2],
                         cb__mon_value *out, syn_rec *recs, int64_t *t_out) {
    int64_t t = t0 + (int64_t)k * 100 * MS + (int64_t)(xorshift(rng) % (50 * MS));
    size_t c = 0;
    double v[N_SYN];
    bool on[N_SYN] = {true, true, k % 2 == 0, k % 3 == 0, true, k >= 500 && k + 500 < n};
    energy[0] += (double)(xorshift(rng) % 1000000) / 7.0;
    v[0] = energy[0];
    v[1] = (double)(xorshift(rng) >> 11) * 0x1.0p-53 * 100.0;
    v[2] = (double)k / 3.0;
    v[3] = (double)(xorshift(rng) % 101);
    v[4] = k % 5 == 0 ? -1e-9 * (double)(k % 977) : 1.0e17 + 3.0 * (double)k;
    energy[1] += (double)(xorshift(rng) % 300000);
    v[5] = energy[1];
    for (size_t i = 0; i < N_SYN; i++) {
        if (!on[i]) continue;
        out[c] = (cb__mon_value){k_syn[i].source, k_syn[i].device, k_syn[i].pid, k_syn[i].label,
                                 k_syn[i].metric, v[i]};
        if (recs) recs[c] = (syn_rec){t, v[i], (uint32_t)i};
        c++;
    }
    *t_out = t;
    return c;
}

/* The in-memory computation the monitor used to do (every sample kept), as the reference. */
typedef struct ref_series {
    int64_t *t;
    double *v;
    size_t n;
} ref_series;

static double ref_interp(const ref_series *s, int64_t t) {
    if (s->n == 0) return NAN;
    if (t <= s->t[0]) return s->v[0];
    if (t >= s->t[s->n - 1]) return s->v[s->n - 1];
    size_t lo = 0, hi = s->n - 1; /* t[lo] < t <= t[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->t[mid] < t) lo = mid;
        else hi = mid;
    }
    double f = (double)(t - s->t[lo]) / (double)(s->t[hi] - s->t[lo]);
    return s->v[lo] + f * (s->v[hi] - s->v[lo]);
}

static bool ref_is_energy(size_t i) {
    return k_syn[i].pid == 0 && !strcmp(k_syn[i].source, "gpu") &&
           !strcmp(k_syn[i].metric, "energy_mj");
}

static double ref_energy(const ref_series *s, int64_t a, int64_t b) {
    double j = 0;
    for (size_t i = 0; i < N_SYN; i++)
        if (ref_is_energy(i)) j += (ref_interp(&s[i], b) - ref_interp(&s[i], a)) / 1000.0;
    return j;
}

/* The "series" and "energy_j" members of the summary from recs[from, to), written as the
 * monitor writes them. e0/e1: the energy window's edges when there is no window. */
static void ref_json(const syn_rec *recs, size_t from, size_t to, const cb_monitor_window *w,
                     size_t nw, int64_t e0, int64_t e1, cb_json *j) {
    ref_series s[N_SYN];
    memset(s, 0, sizeof s);
    for (size_t i = 0; i < N_SYN; i++) {
        s[i].t = malloc((to - from + 1) * sizeof *s[i].t);
        s[i].v = malloc((to - from + 1) * sizeof *s[i].v);
    }
    for (size_t r = from; r < to; r++) {
        ref_series *x = &s[recs[r].series];
        x->t[x->n] = recs[r].t_ns;
        x->v[x->n++] = recs[r].value;
    }
    int64_t w0 = INT64_MIN, w1 = INT64_MAX;
    if (nw > 0) w0 = w[0].start_ns, w1 = w[0].end_ns;
    cb_json_object_begin(j);
    cb_json_key(j, "series");
    cb_json_array_begin(j);
    for (size_t i = 0; i < N_SYN; i++) {
        double sum = 0, max = -INFINITY;
        size_t n = 0;
        for (size_t k = 0; k < s[i].n; k++) {
            if (s[i].t[k] < w0 || s[i].t[k] > w1) continue;
            sum += s[i].v[k];
            if (s[i].v[k] > max) max = s[i].v[k];
            n++;
        }
        cb_json_object_begin(j);
        cb_json_key(j, "source");
        cb_json_string(j, k_syn[i].source);
        cb_json_key(j, "device");
        cb_json_string(j, k_syn[i].device);
        cb_json_key(j, "pid");
        if (k_syn[i].pid) cb_json_int(j, k_syn[i].pid);
        else cb_json_null(j);
        cb_json_key(j, "label");
        cb_json_string(j, k_syn[i].label);
        cb_json_key(j, "metric");
        cb_json_string(j, k_syn[i].metric);
        cb_json_key(j, "mean");
        if (n) cb_json_double(j, sum / (double)n);
        else cb_json_null(j);
        cb_json_key(j, "max");
        if (n) cb_json_double(j, max);
        else cb_json_null(j);
        cb_json_key(j, "samples");
        cb_json_uint(j, n);
        cb_json_object_end(j);
    }
    cb_json_array_end(j);
    bool have_energy = false;
    for (size_t i = 0; i < N_SYN; i++) have_energy |= ref_is_energy(i) && s[i].n > 0;
    if (have_energy) {
        if (nw) e0 = w[0].start_ns, e1 = w[0].end_ns;
        cb_json_key(j, "energy_j");
        cb_json_object_begin(j);
        cb_json_key(j, "window");
        cb_json_double(j, ref_energy(s, e0, e1));
        cb_json_key(j, "devices");
        cb_json_object_begin(j);
        for (size_t i = 0; i < N_SYN; i++) {
            if (!ref_is_energy(i)) continue;
            cb_json_key(j, k_syn[i].device);
            cb_json_double(j, (ref_interp(&s[i], e1) - ref_interp(&s[i], e0)) / 1000.0);
        }
        cb_json_object_end(j);
        cb_json_key(j, "pipelines");
        cb_json_object_begin(j);
        for (size_t k = 1; k < nw; k++) {
            cb_json_key(j, w[k].name);
            cb_json_double(j, ref_energy(s, w[k].start_ns, w[k].end_ns));
        }
        cb_json_object_end(j);
        cb_json_object_end(j);
    }
    cb_json_object_end(j);
    for (size_t i = 0; i < N_SYN; i++) {
        free(s[i].t);
        free(s[i].v);
    }
}

/* Compares the monitor's summary from "series" on with the reference over recs[from, to); on a
 * difference, describes it in why. Runs in forked children too, so it checks nothing itself. */
static bool summary_matches(const cb_monitor *m, const syn_rec *recs, size_t from, size_t to,
                            const cb_monitor_window *w, size_t nw, int64_t e0, int64_t e1,
                            char *why, size_t why_size) {
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    FILE *fa = open_memstream(&a, &la), *fb = open_memstream(&b, &lb);
    cb_json ja, jb;
    cb_json_init(&ja, fa, 2);
    cb_json_init(&jb, fb, 2);
    cb_monitor_summary_json(m, w, nw, &ja);
    ref_json(recs, from, to, w, nw, e0, e1, &jb);
    int ea = cb_json_finish(&ja), eb = cb_json_finish(&jb);
    fclose(fa);
    fclose(fb);
    const char *sa = a ? strstr(a, "\"series\"") : NULL, *sb = b ? strstr(b, "\"series\"") : NULL;
    bool ok = ea == 0 && eb == 0 && sa && sb && !strcmp(sa, sb);
    if (!ok && sa && sb) {
        size_t k = 0;
        while (sa[k] && sa[k] == sb[k]) k++;
        size_t back = k > 200 ? 200 : k;
        snprintf(why, why_size, "differs at %zu: monitor \"...%.300s\" vs reference \"...%.300s\"",
                 k, sa + k - back, sb + k - back);
    } else if (!ok) {
        snprintf(why, why_size, "json errors %d %d, or no \"series\"", ea, eb);
    } else {
        snprintf(why, why_size, "OK");
    }
    free(a);
    free(b);
    return ok;
}

static cb_logger k_quiet = {CB_LOG_ERROR, NULL};

/* 100,000 injected samples of six series streamed to metrics.csv: the summary read back from
 * the file equals the brute-force one for several windows (edges between samples, on samples,
 * before the first and after the last), and the monitor's memory does not grow. */
static void test_summary_long_series_vs_reference(void) {
    const size_t n = 100000;
    const char *dir = cb_test_tmpdir();
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 1000 * MS; /* the sampler emits nothing (no sources) */
    o.sources = 0;
    o.out_dir = dir;
    o.log = &k_quiet;
    cb_monitor *m = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, &e), CB_OK);
    if (!m) return;
    /* Synthetic times start well after the monitor will have stopped. */
    int64_t t0 = cb_clock_now_ns() + 3600 * 1000 * MS;
    cb_monitor_set_t0(m, t0);
    syn_rec *recs = malloc(n * N_SYN * sizeof *recs);
    size_t n_recs = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    double energy[2] = {1234.5, 0};
    int64_t times[4] = {0};
    size_t bytes_1k = 0;
    for (size_t k = 0; k < n; k++) {
        cb__mon_value v[N_SYN];
        int64_t t;
        size_t c = syn_sample(k, n, t0, &rng, energy, v, recs + n_recs, &t);
        cb__monitor_inject(m, t, v, c);
        n_recs += c;
        if (k == 100) times[0] = t;
        if (k == n / 2) times[1] = t;
        if (k + 1 == 1000) bytes_1k = cb_monitor_bytes(m);
    }
    size_t bytes_100k = cb_monitor_bytes(m);
    printf("# monitor bytes: %zu after 1,000 samples, %zu after 100,000\n", bytes_1k, bytes_100k);
    CB_CHECK_EQ_INT(bytes_100k, bytes_1k);
    CB_CHECK(bytes_1k < (1u << 20));
    CB_CHECK_EQ_INT(cb_monitor_stop(m, &e), CB_OK);
    CB_CHECK_EQ_INT(cb_monitor_bytes(m), bytes_1k);

    int64_t span = (int64_t)n * 100 * MS;
    cb_monitor_window w[5] = {
        {NULL, t0 + span / 7 + 12345, t0 + 5 * span / 7 + 999},
        {"on-samples", times[0], times[1]},
        {"before-first", t0 - 10000 * MS, t0 + span / 20},
        {"after-last", t0 + span / 2, t0 + span + 10000 * MS},
        {"gpu1-starts", t0 + 20 * 100 * MS, t0 + span / 5},
    };
    char why[1024];
    CB_CHECK(summary_matches(m, recs, 0, n_recs, w, 5, 0, 0, why, sizeof why));
    printf("# windows: %s\n", why);
    CB_CHECK(summary_matches(m, recs, 0, n_recs, w, 1, 0, 0, why, sizeof why));
    /* No window: every sample; the energy edges (the monitor's start and stop) lie before the
     * first synthetic sample, so both clamp to it, as they do for any edge before it. */
    CB_CHECK(summary_matches(m, recs, 0, n_recs, NULL, 0, 0, 0, why, sizeof why));
    printf("# no window: %s\n", why);

    /* metrics.csv holds every row. */
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    CB_CHECK_EQ_INT(cb_test_count_lines(path), n_recs + 1);
    cb_monitor_destroy(m);
    free(recs);
}

/* Without a file, the most recent memory_samples_max samples are kept: memory stops growing at
 * that bound and the summary covers exactly those samples. */
static void test_summary_memory_only_bounded(void) {
    const size_t n = 100000, keep = 1000;
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 1000 * MS;
    o.sources = 0;
    o.memory_samples_max = keep;
    o.log = &k_quiet;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    int64_t t0 = cb_clock_now_ns() + 3600 * 1000 * MS;
    syn_rec *recs = malloc(n * N_SYN * sizeof *recs);
    size_t n_recs = 0;
    uint64_t rng = 12345;
    double energy[2] = {0, 0};
    size_t bytes_1k = 0;
    for (size_t k = 0; k < n; k++) {
        cb__mon_value v[N_SYN];
        int64_t t;
        size_t c = syn_sample(k, n, t0, &rng, energy, v, recs + n_recs, &t);
        cb__monitor_inject(m, t, v, c);
        n_recs += c;
        if (k + 1 == 1000) bytes_1k = cb_monitor_bytes(m);
    }
    size_t bytes_100k = cb_monitor_bytes(m);
    printf("# memory-only monitor bytes: %zu after 1,000 samples, %zu after 100,000\n", bytes_1k,
           bytes_100k);
    CB_CHECK_EQ_INT(bytes_100k, bytes_1k);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, NULL), CB_OK);
    int64_t span = (int64_t)n * 100 * MS;
    cb_monitor_window w[2] = {{NULL, t0 + span - 300 * 100 * MS, t0 + span - 50 * 100 * MS},
                              {"late", t0 + span - 150 * 100 * MS, t0 + span}};
    char why[1024];
    CB_CHECK(summary_matches(m, recs, n_recs - keep, n_recs, w, 2, 0, 0, why, sizeof why));
    printf("# memory only: %s\n", why);
    CB_CHECK(summary_matches(m, recs, n_recs - keep, n_recs, NULL, 0, 0, 0, why, sizeof why));
    /* One notice says the summary covers the most recent samples only. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cb_json j;
    cb_json_init(&j, f, 0);
    cb_monitor_summary_json(m, NULL, 0, &j);
    cb_json_finish(&j);
    fclose(f);
    CB_CHECK_CONTAINS(text, "the summary covers the most recent 1000");
    free(text);
    cb_monitor_destroy(m);
    free(recs);
}

/* A write error (here EFBIG from RLIMIT_FSIZE, as ENOSPC would be on a full disk) stops
 * metrics.csv at its last complete row, stop reports it, and the summary still covers every
 * sample (the file's rows, then the ones kept in memory). Runs in a child: the limit is
 * per process. */
static void test_write_error_truncates_and_summary_survives(void) {
    const char *dir = cb_test_tmpdir();
    const size_t n = 3000;
    const rlim_t limit = 48 * 1024;
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(2);
        cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
        o.period_ns = 1000 * MS;
        o.sources = 0;
        o.out_dir = dir;
        o.log = &k_quiet;
        cb_monitor *m = NULL;
        if (cb_monitor_create(&o, &m, NULL) != CB_OK) _exit(3);
        int64_t t0 = cb_clock_now_ns() + 3600 * 1000 * MS;
        cb_monitor_set_t0(m, t0);
        syn_rec *recs = malloc(n * N_SYN * sizeof *recs);
        size_t n_recs = 0;
        uint64_t rng = 777;
        double energy[2] = {0, 0};
        for (size_t k = 0; k < n; k++) {
            cb__mon_value v[N_SYN];
            int64_t t;
            size_t c = syn_sample(k, n, t0, &rng, energy, v, recs + n_recs, &t);
            cb__monitor_inject(m, t, v, c);
            n_recs += c;
        }
        cb_error e;
        cb_error_clear(&e);
        int rc = cb_monitor_stop(m, &e);
        char why[1024];
        cb_monitor_window w[2] = {{NULL, t0 + 100 * 100 * MS + 7, t0 + 2500 * 100 * MS},
                                  {"p", t0 + 10 * 100 * MS, t0 + 2900 * 100 * MS}};
        summary_matches(m, recs, 0, n_recs, w, 2, 0, 0, why, sizeof why);
        char out[2048];
        snprintf(out, sizeof out, "%d %s\n%s\n", rc, e.msg, why);
        cb_test_write(dir, "child.txt", out);
        cb_monitor_destroy(m);
        free(recs);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CB_CHECK(WIFEXITED(st));
    CB_CHECK_EQ_INT(WEXITSTATUS(st), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/child.txt", dir);
    char *res = cb_test_read(path, NULL);
    CB_CHECK(res != NULL);
    if (!res) return;
    printf("# %s", res);
    char first[64];
    snprintf(first, sizeof first, "%d ", CB_EIO);
    CB_CHECK(!strncmp(res, first, strlen(first)));
    CB_CHECK_CONTAINS(res, strerror(EFBIG));
    CB_CHECK_CONTAINS(res, "last complete row");
    CB_CHECK_CONTAINS(res, "\nOK\n");
    free(res);
    /* The file: within the limit, only whole rows of six fields. */
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    size_t len = 0;
    char *text = cb_test_read(path, &len);
    CB_CHECK(text != NULL);
    if (!text) return;
    CB_CHECK(len > 1000 && len <= limit);
    CB_CHECK(len > 0 && text[len - 1] == '\n');
    CB_CHECK(!strncmp(text, "t_ns,source,device,pid,metric,value\n", 36));
    size_t bad = 0, lines = 0;
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        if (!nl) {
            bad++;
            break;
        }
        int commas = 0;
        for (const char *q = p; q < nl; q++) commas += *q == ',';
        bad += commas != 5;
        lines++;
        p = nl + 1;
    }
    CB_CHECK_EQ_INT(bad, 0);
    CB_CHECK(lines > 100 && lines < n);
    free(text);
}

/* metrics.csv is created anew: a symbolic link planted under its name is removed, never
 * followed; a stale file is replaced; a directory of that name is an error. */
/* A fresh directory base/name (the harness allows 16 temporary directories per process). */
static const char *subdir(const char *base, const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", base, name);
    CB_CHECK_EQ_INT(mkdir(buf, 0755), 0);
    return buf;
}

static void test_csv_not_following_symlinks(void) {
    const char *base = cb_test_tmpdir();
    char dbuf[1024];
    const char *dir = subdir(base, "link", dbuf, sizeof dbuf);
    cb_test_write(dir, "victim.txt", "precious\n");
    char link_path[1024], victim[1024];
    snprintf(link_path, sizeof link_path, "%s/metrics.csv", dir);
    snprintf(victim, sizeof victim, "%s/victim.txt", dir);
    CB_CHECK_EQ_INT(symlink(victim, link_path), 0);
    cb_monitor_opts o = CB_MONITOR_OPTS_DEFAULT;
    o.period_ns = 1000 * MS;
    o.sources = CB_MON_MEMORY;
    o.out_dir = dir;
    cb_monitor *m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&o, &m, NULL), CB_OK);
    if (!m) return;
    CB_CHECK_EQ_INT(cb_monitor_stop(m, NULL), CB_OK);
    cb_monitor_destroy(m);
    char *v = cb_test_read(victim, NULL);
    CB_CHECK_STR_EQ(v, "precious\n");
    free(v);
    struct stat stt;
    CB_CHECK_EQ_INT(lstat(link_path, &stt), 0);
    CB_CHECK(S_ISREG(stt.st_mode));
    mode_t mask = umask(0);
    umask(mask);
    CB_CHECK_EQ_INT(stt.st_mode & 0777, 0644 & ~mask);
    rows rs = read_csv(dir);
    CB_CHECK(rs.header_ok);
    CB_CHECK(select_rows(&rs, "memory", "", -1, "total_bytes", NULL, 0) >= 1);
    free(rs.r);

    /* A dangling link: its target is not created. */
    dir = subdir(base, "dangling", dbuf, sizeof dbuf);
    snprintf(link_path, sizeof link_path, "%s/metrics.csv", dir);
    snprintf(victim, sizeof victim, "%s/created-through-link", dir);
    CB_CHECK_EQ_INT(symlink(victim, link_path), 0);
    CB_CHECK_EQ_INT(cb_monitor_create(&(cb_monitor_opts){.period_ns = 1000 * MS, .out_dir = dir},
                                      &m, NULL),
                    CB_OK);
    cb_monitor_destroy(m);
    CB_CHECK(access(victim, F_OK) != 0);
    CB_CHECK_EQ_INT(lstat(link_path, &stt), 0);
    CB_CHECK(S_ISREG(stt.st_mode));

    /* A stale file is replaced; a directory is an error that names the file. */
    dir = subdir(base, "stale", dbuf, sizeof dbuf);
    cb_test_write(dir, "metrics.csv", "stale,rows\n1,2\n");
    CB_CHECK_EQ_INT(cb_monitor_create(&(cb_monitor_opts){.period_ns = 1000 * MS, .out_dir = dir},
                                      &m, NULL),
                    CB_OK);
    cb_monitor_destroy(m);
    rs = read_csv(dir);
    CB_CHECK(rs.header_ok);
    CB_CHECK_EQ_INT(rs.n, 0);
    free(rs.r);
    dir = subdir(base, "isdir", dbuf, sizeof dbuf);
    snprintf(link_path, sizeof link_path, "%s/metrics.csv", dir);
    CB_CHECK_EQ_INT(mkdir(link_path, 0755), 0);
    cb_error e;
    cb_error_clear(&e);
    m = NULL;
    CB_CHECK_EQ_INT(cb_monitor_create(&(cb_monitor_opts){.period_ns = 1000 * MS, .out_dir = dir},
                                      &m, &e),
                    CB_EIO);
    CB_CHECK(m == NULL);
    CB_CHECK_CONTAINS(e.msg, "metrics.csv: cannot create");
}

/* ---- colobench monitor ---------------------------------------------------------------------- */

static void test_cli_monitor(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[2048], path[1024];
    char *out = NULL;
    snprintf(cmd, sizeof cmd,
             "COLOBENCH_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 " CB_TEST_COLOBENCH
             " monitor --period 50 -o %s/m -- sh -c 'sleep 0.3; exit 3'",
             dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 3);
    printf("# %s", out ? out : "");
    free(out);
    snprintf(path, sizeof path, "%s/m/metrics.csv", dir);
    CB_CHECK(cb_test_count_lines(path) > 5);
    snprintf(path, sizeof path, "%s/m", dir);
    rows rs = read_csv(path);
    CB_CHECK(rs.header_ok);
    CB_CHECK(select_rows(&rs, "process", "", -1, "rss_bytes", NULL, 0) > 0);
    CB_CHECK(select_rows(&rs, "cpu", "", -1, "util_percent", NULL, 0) > 0);
    free(rs.r);
    snprintf(path, sizeof path, "%s/m/summary.json", dir);
    char *v = py_json(path, "d[\"command\"], d[\"exit_status\"], d[\"duration_ns\"] > 2e8, "
                            "d[\"monitors\"][\"period_ms\"], d[\"monitors\"][\"gpu\"][:12]");
    CB_CHECK_STR_EQ(v, "['sh', '-c', 'sleep 0.3; exit 3'] 3 True 50 unavailable:");
    free(v);

    snprintf(cmd, sizeof cmd, CB_TEST_COLOBENCH " monitor -o %s/k -- sh -c 'kill -9 $$'", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 128 + 9);
    free(out);
    snprintf(path, sizeof path, "%s/k/summary.json", dir);
    v = py_json(path, "d[\"signal\"], \"exit_status\" in d");
    CB_CHECK_STR_EQ(v, "SIGKILL False");
    free(v);

    /* SIGTERM to colobench is forwarded to the command, whose death by it is the exit status. */
    snprintf(cmd, sizeof cmd,
             CB_TEST_COLOBENCH " monitor -o %s/t -- sleep 60 & p=$!; sleep 0.5; kill -TERM $p; "
                               "wait $p",
             dir);
    int64_t t = cb_clock_now_ns();
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 128 + SIGTERM);
    CB_CHECK(cb_clock_now_ns() - t < 30000 * MS); /* not the command's 60 s */
    free(out);
    snprintf(path, sizeof path, "%s/t/summary.json", dir);
    v = py_json(path, "d[\"signal\"]");
    CB_CHECK_STR_EQ(v, "SIGTERM");
    free(v);

    snprintf(cmd, sizeof cmd, CB_TEST_COLOBENCH " monitor -o %s/n -- /nonexistent/command-xyz", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 127);
    CB_CHECK_CONTAINS(out, "command-xyz");
    free(out);
    snprintf(cmd, sizeof cmd, CB_TEST_COLOBENCH " monitor -o %s/u sh -c true", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "--");
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CB_TEST_COLOBENCH " monitor --period 0 -- true", &out), 2);
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CB_TEST_COLOBENCH " monitor --period 10x -- true", &out), 2);
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CB_TEST_COLOBENCH " monitor --", &out), 2);
    free(out);
    CB_CHECK_EQ_INT(cb_test_sh(CB_TEST_COLOBENCH " monitor --sources cpu,disk -- true", &out), 2);
    CB_CHECK_CONTAINS(out, "disk");
    free(out);
    snprintf(cmd, sizeof cmd,
             CB_TEST_COLOBENCH " monitor --sources cpu,memory -o %s/ok -- true", dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
}

/* `colobench monitor` started directly (not through a shell, which would leave SIGINT ignored
 * in a background job), its output in dir/name.out. */
static pid_t start_colobench(char *const argv[], const char *dir, const char *name) {
    char out[1024];
    snprintf(out, sizeof out, "%s/%s.out", dir, name);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execv(CB_TEST_COLOBENCH, argv);
        _exit(99);
    }
    return pid;
}

/* Waits at most timeout_ms for pid; on timeout kills it (so no test hangs) and returns -1.
 * Otherwise its exit status, or -signal. */
static int wait_bounded(pid_t pid, long timeout_ms, int64_t *took_ns) {
    int64_t t0 = cb_clock_now_ns();
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (took_ns) *took_ns = cb_clock_now_ns() - t0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
        }
        if (r < 0 && errno != EINTR) return -1000;
        if (cb_clock_now_ns() - t0 > timeout_ms * MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_ms(10);
    }
}

/* Waits (at most 20 s) until path exists and contains needle. */
static bool wait_for_text(const char *path, const char *needle) {
    for (int i = 0; i < 2000; i++) {
        char *t = cb_test_read(path, NULL);
        bool ok = t && strstr(t, needle);
        free(t);
        if (ok) return true;
        sleep_ms(10);
    }
    return false;
}

/* Ctrl-C: SIGINT reaches colobench's one signal thread, which forwards it to the command; the
 * command's death by it is the exit status (130), and summary.json is complete. */
static void test_cli_monitor_sigint(void) {
    const char *dir = cb_test_tmpdir();
    char out_dir[1024], path[1024];
    snprintf(out_dir, sizeof out_dir, "%s/i", dir);
    char *argv[] = {"colobench", "monitor", "--period", "50", "-o", out_dir, "--", "sleep", "30",
                    NULL};
    pid_t pid = start_colobench(argv, dir, "i");
    CB_CHECK(pid > 0);
    /* The command runs once the monitor has sampled its process. */
    snprintf(path, sizeof path, "%s/metrics.csv", out_dir);
    CB_CHECK(wait_for_text(path, ",process,"));
    CB_CHECK_EQ_INT(kill(pid, SIGINT), 0);
    int64_t took = 0;
    CB_CHECK_EQ_INT(wait_bounded(pid, 20000, &took), 128 + SIGINT);
    printf("# SIGINT to exit: %.1f ms\n", (double)took / 1e6);
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    char *v = py_json(path, "d[\"command\"], d[\"signal\"], \"exit_status\" in d, "
                            "d[\"duration_ns\"] < 20e9, d[\"monitors\"][\"period_ms\"]");
    CB_CHECK_STR_EQ(v, "['sleep', '30'] SIGINT False True 50");
    free(v);
}

/* A directory another colobench run holds is refused (exit 2, like `run`), and the first run's
 * results are untouched. */
static void test_cli_monitor_dir_in_use(void) {
    const char *dir = cb_test_tmpdir();
    char out_dir[1024], path[1024], cmd[2048];
    snprintf(out_dir, sizeof out_dir, "%s/busy", dir);
    char *argv[] = {"colobench", "monitor", "--sources", "cpu,process", "-o", out_dir, "--",
                    "sleep", "3", NULL};
    pid_t pid = start_colobench(argv, dir, "first");
    CB_CHECK(pid > 0);
    /* metrics.csv is created after the lock is taken. */
    snprintf(path, sizeof path, "%s/metrics.csv", out_dir);
    CB_CHECK(wait_for_text(path, "t_ns,"));
    char *out = NULL;
    snprintf(cmd, sizeof cmd, CB_TEST_COLOBENCH " monitor -o %s -- sh -c 'echo ran; exit 5'",
             out_dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "in use by another colobench run");
    CB_CHECK(!strstr(out ? out : "", "ran"));
    free(out);
    CB_CHECK_EQ_INT(wait_bounded(pid, 30000, NULL), 0);
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    char *v = py_json(path, "d[\"command\"], d[\"exit_status\"]");
    CB_CHECK_STR_EQ(v, "['sleep', '3'] 0");
    free(v);
    /* Free again once the first has finished. */
    snprintf(cmd, sizeof cmd, CB_TEST_COLOBENCH " monitor --sources cpu -o %s -- true", out_dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
}

/* Planted symbolic links never redirect a write: summary.json (planted before the run, and
 * again by the command itself while it runs, together with the temporary name
 * summary.json.tmp.PID of the atomic write), summary.json.tmp, metrics.csv, and the lock file
 * (refused). */
static void test_cli_monitor_symlinks(void) {
    const char *dir = cb_test_tmpdir();
    char out_dir[1024], victim[1024], path[1024], cmd[4096];
    snprintf(out_dir, sizeof out_dir, "%s/s", dir);
    CB_CHECK_EQ_INT(mkdir(out_dir, 0755), 0);
    cb_test_write(dir, "victim.txt", "precious\n");
    snprintf(victim, sizeof victim, "%s/victim.txt", dir);
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    CB_CHECK_EQ_INT(symlink(victim, path), 0);
    snprintf(path, sizeof path, "%s/metrics.csv", out_dir);
    CB_CHECK_EQ_INT(symlink(victim, path), 0);
    snprintf(path, sizeof path, "%s/summary.json.tmp", out_dir); /* the name fopen once used */
    CB_CHECK_EQ_INT(symlink(victim, path), 0);
    char *out = NULL;
    snprintf(cmd, sizeof cmd,
             CB_TEST_COLOBENCH " monitor --sources cpu,memory -o %s -- sh -c "
                               "'ln -sf %s %s/summary.json && ln -sf %s %s/summary.json.tmp.$PPID'",
             out_dir, victim, out_dir, victim, out_dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    free(out);
    char *v = cb_test_read(victim, NULL);
    CB_CHECK_STR_EQ(v, "precious\n");
    free(v);
    struct stat sb;
    snprintf(path, sizeof path, "%s/summary.json", out_dir);
    CB_CHECK(lstat(path, &sb) == 0 && S_ISREG(sb.st_mode));
    v = py_json(path, "d[\"exit_status\"], d[\"command\"][0]");
    CB_CHECK_STR_EQ(v, "0 sh");
    free(v);
    snprintf(path, sizeof path, "%s/metrics.csv", out_dir);
    CB_CHECK(lstat(path, &sb) == 0 && S_ISREG(sb.st_mode));

    /* A lock file that is a symbolic link: refused, nothing written through it. */
    snprintf(out_dir, sizeof out_dir, "%s/l", dir);
    CB_CHECK_EQ_INT(mkdir(out_dir, 0755), 0);
    snprintf(path, sizeof path, "%s/.colobench.lock", out_dir);
    CB_CHECK_EQ_INT(symlink(victim, path), 0);
    snprintf(cmd, sizeof cmd, CB_TEST_COLOBENCH " monitor -o %s -- true", out_dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    CB_CHECK_CONTAINS(out, "symbolic link");
    free(out);
    v = cb_test_read(victim, NULL);
    CB_CHECK_STR_EQ(v, "precious\n");
    free(v);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    CB_RUN(test_busy_child_cpu);
    CB_RUN(test_child_rss);
    CB_RUN(test_host_rows_and_overhead);
    CB_RUN(test_fake_nvml_gpu_rows_and_energy);
    CB_RUN(test_fake_nvml_mig_rows);
    CB_RUN(test_nvml_missing);
    CB_RUN(test_resolve_mig);
    CB_RUN(test_perf);
    CB_RUN(test_t0_and_pending_rows);
    CB_RUN(test_source_table);
    CB_RUN(test_summary_long_series_vs_reference);
    CB_RUN(test_summary_memory_only_bounded);
    CB_RUN(test_write_error_truncates_and_summary_survives);
    CB_RUN(test_csv_not_following_symlinks);
    CB_RUN(test_cli_monitor);
    CB_RUN(test_cli_monitor_sigint);
    CB_RUN(test_cli_monitor_dir_in_use);
    CB_RUN(test_cli_monitor_symlinks);
    return cb_test_done();
}
