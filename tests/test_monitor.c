/* Monitor tests: real outcomes of the sampler on this machine (a busy child's CPU share, a
 * child's RSS, host rows), the GPU source against the fake NVML (tests/fake/fake_nvml.c), MIG
 * resolution, perf (whatever the kernel allows) and `colobench monitor` end to end. No check
 * times our own speed; the monitor's overhead is printed. */
#include "harness.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "analysis/json.h"
#include "core/clock.h"
#include "monitor/monitor.h"
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
    cb_monitor_set_t0(m, cb_clock_now_ns());
    pid_t pid = spawn_busy(600);
    CB_CHECK_EQ_INT(cb_monitor_add_process(m, pid, "busy"), CB_OK);
    int st;
    waitpid(pid, &st, 0);
    sleep_ms(120);
    CB_CHECK_EQ_INT(cb_monitor_stop(m, &e), CB_OK);
    rows rs = read_csv(dir);
    CB_CHECK(rs.header_ok);
    const row *sel[512];
    size_t n = select_rows(&rs, "process", "", pid, "cpu_percent", sel, 512);
    size_t busy = 0;
    for (size_t i = 0; i < n && i < 512; i++) busy += sel[i]->value > 50.0;
    printf("# busy child: %zu cpu_percent samples, %zu above 50%%\n", n, busy);
    CB_CHECK_CMP_INT(n, >=, 8);  /* 600 ms / 50 ms = 12, +-40 % */
    CB_CHECK_CMP_INT(n, <=, 17);
    CB_CHECK_CMP_INT(busy * 2, >, n);
    /* Spacing of the sample times: the median within +-30 % of the period. */
    long long gaps[512];
    size_t ng = 0;
    for (size_t i = 1; i < n && i < 512; i++) gaps[ng++] = sel[i]->t_ns - sel[i - 1]->t_ns;
    if (ng) {
        qsort(gaps, ng, sizeof gaps[0], cmp_ll);
        CB_CHECK_NEAR(gaps[ng / 2], 50 * MS, 15 * MS);
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
             CB_TEST_COLOBENCH " monitor -o %s/t -- sleep 5 & p=$!; sleep 0.5; kill -TERM $p; "
                               "wait $p",
             dir);
    int64_t t = cb_clock_now_ns();
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 128 + SIGTERM);
    CB_CHECK(cb_clock_now_ns() - t < 4000 * MS);
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
    CB_RUN(test_cli_monitor);
    return cb_test_done();
}
