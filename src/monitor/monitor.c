/* monitor/monitor.c - the sampler core (see monitor.h): one `cb-sampler` thread, the series kept
 * in memory, metrics.csv streaming and the "monitors" summary.
 *
 * Design: the thread samples on absolute CLOCK_MONOTONIC deadlines (next += period); a deadline
 * that has already passed by whole periods is skipped and counted (missed_periods), never
 * caught up in a burst. It waits on a condition variable (monotonic clock) so stop wakes it at
 * once. Each sample asks every source in turn (procfs.c, perf.c, nvml.c); they report values
 * with cb__mon_emit, which appends (t, value) to the series (found through an open-addressing
 * hash of source/device/pid/metric) and formats the CSV row into one buffer written with a
 * single write(2) per sample. Rows sampled before t0 is known are kept as (series, t, value) and
 * written when it is. The sampler's own CPU time (CLOCK_THREAD_CPUTIME_ID, plus the first sample
 * taken in create) is the monitor's overhead.
 *
 * Thread-safety: `mu` protects everything the sampler touches (processes, t0, series, notices,
 * the CSV buffer); the sampler holds it while sampling and releases it while waiting, so
 * cb_monitor_add_process and cb_monitor_set_t0 may be called at any time. The overhead counter
 * is atomic (relaxed: a statistic, no ordering needed). Summary and destroy run after stop on
 * the controlling thread. No lock order issue: `mu` is the only lock.
 * Ownership: the monitor copies every option string; the logger is borrowed and must outlive
 * the monitor; metrics.csv is closed by cb_monitor_stop.
 */
#include "monitor/monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "monitor/monitor_int.h"

#define CB_MON_MAX_SERIES 65536
#define CB_MON_MAX_SAMPLES_PER_SERIES (1u << 24)
#define CB_MON_MAX_PENDING (1u << 22)
#define CB_MON_MAX_PROCS 4096
#define CB_MON_MAX_NOTICES 64
#define CB_MON_NOTICE_MAX 320
#define CB_MON_CSV_MAX_BYTES (8u * 1024u * 1024u)
#define CB_MON_REASON_MAX 256

typedef struct cb__series {
    const char *source, *metric; /* literals */
    char device[CB_MON_DEVICE_MAX];
    char label[CB_MON_LABEL_MAX];
    pid_t pid;
    int64_t *t;
    double *v;
    size_t n, cap;
} cb__series;

typedef struct cb__pending {
    int64_t t_ns;
    double value;
    uint32_t series;
} cb__pending;

struct cb_monitor {
    int64_t period_ns;
    unsigned sources;
    char *out_dir, *nvml_library;
    bool attributable;
    const cb_logger *log;

    pthread_mutex_t mu; /* protects everything below except the atomics */
    pthread_cond_t cv;  /* signalled on stop */
    bool stop_req;
    pthread_t thread;
    bool thread_started, stopped;

    int64_t t0_ns;
    bool t0_set;
    int64_t start_ns, stop_ns, cur_t_ns;
    uint64_t n_samples, missed_periods;
    _Atomic int64_t cpu_ns;  /* sampler CPU time (relaxed) */
    int64_t create_cpu_ns;   /* the first sample, taken on the caller's thread */

    cb__series *series;
    size_t n_series, cap_series;
    uint32_t *hash; /* series index + 1; 0 = empty */
    size_t hash_size;
    bool series_full_noticed, samples_full_noticed;

    cb__pending *pending;
    size_t n_pending, cap_pending;

    int csv_fd;
    char *csv;
    size_t csv_len, csv_cap;
    int io_errno;

    char (*notices)[CB_MON_NOTICE_MAX];
    size_t n_notices, dropped_notices;

    cb__procfs *procfs;
    cb__mon_proc *procs;
    size_t n_procs, cap_procs;

    cb_nvml *nvml;
    int n_gpus;
    char gpu_status[CB_MON_REASON_MAX];
    bool perf_ok;
    char perf_status[CB_MON_REASON_MAX];
};

/* ---- sources by name ---------------------------------------------------------------------- */

static const struct {
    unsigned bit;
    const char *name;
} cb__source_names[] = {{CB_MON_CPU, "cpu"},
                        {CB_MON_MEMORY, "memory"},
                        {CB_MON_PROCESS, "process"},
                        {CB_MON_GPU, "gpu"},
                        {CB_MON_PERF, "perf"}};

unsigned cb_monitor_source_bit(const char *name) {
    for (size_t i = 0; name && i < sizeof cb__source_names / sizeof cb__source_names[0]; i++)
        if (!strcmp(name, cb__source_names[i].name)) return cb__source_names[i].bit;
    return 0;
}

const char *cb_monitor_source_name(unsigned bit) {
    for (size_t i = 0; i < sizeof cb__source_names / sizeof cb__source_names[0]; i++)
        if (cb__source_names[i].bit == bit) return cb__source_names[i].name;
    return NULL;
}

/* ---- notices ------------------------------------------------------------------------------ */

void cb__mon_notice(cb_monitor *m, int level, const char *fmt, ...) {
    char msg[CB_MON_NOTICE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cb_logf(m->log, level, "monitor", "%s", msg);
    if (m->n_notices < CB_MON_MAX_NOTICES)
        memcpy(m->notices[m->n_notices++], msg, sizeof msg);
    else
        m->dropped_notices++;
}

/* ---- CSV ---------------------------------------------------------------------------------- */

static void cb__csv_flush(cb_monitor *m) {
    size_t off = 0;
    while (off < m->csv_len && m->csv_fd >= 0) {
        ssize_t k = write(m->csv_fd, m->csv + off, m->csv_len - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (!m->io_errno) m->io_errno = errno;
            break;
        }
        off += (size_t)k;
    }
    m->csv_len = 0;
}

/* Shortest faithful text for a metric value: integers exactly, others with 6 decimals,
 * trailing zeros removed. */
static int cb__fmt_value(char *b, size_t n, double v) {
    if (!isfinite(v)) return snprintf(b, n, "nan");
    if (v == floor(v) && fabs(v) < 9.0e15) return snprintf(b, n, "%lld", (long long)v);
    int k = snprintf(b, n, "%.6f", v);
    if (k <= 0 || (size_t)k >= n) return k;
    while (k > 1 && b[k - 1] == '0') b[--k] = '\0';
    if (b[k - 1] == '.') b[--k] = '\0';
    return k;
}

static void cb__csv_row(cb_monitor *m, const cb__series *s, int64_t t_ns, double value) {
    if (m->csv_fd < 0) return;
    char val[64], pid[24];
    cb__fmt_value(val, sizeof val, value);
    if (s->pid) snprintf(pid, sizeof pid, "%d", (int)s->pid);
    else pid[0] = '\0';
    char row[256];
    int k = snprintf(row, sizeof row, "%lld,%s,%s,%s,%s,%s\n", (long long)(t_ns - m->t0_ns),
                     s->source, s->device, pid, s->metric, val);
    if (k <= 0 || (size_t)k >= sizeof row) return;
    if (m->csv_len + (size_t)k > m->csv_cap) {
        if (m->csv_cap < CB_MON_CSV_MAX_BYTES) {
            size_t nc = m->csv_cap * 2;
            char *nb = cb_realloc(m->csv, nc);
            if (nb) m->csv = nb, m->csv_cap = nc;
        }
        if (m->csv_len + (size_t)k > m->csv_cap) cb__csv_flush(m);
    }
    memcpy(m->csv + m->csv_len, row, (size_t)k);
    m->csv_len += (size_t)k;
}

static void cb__write_pending(cb_monitor *m) {
    for (size_t i = 0; i < m->n_pending; i++)
        cb__csv_row(m, &m->series[m->pending[i].series], m->pending[i].t_ns, m->pending[i].value);
    m->n_pending = 0;
    cb_free(m->pending);
    m->pending = NULL;
    m->cap_pending = 0;
}

/* ---- series -------------------------------------------------------------------------------- */

static uint64_t cb__hash_key(const char *source, const char *device, pid_t pid, const char *metric) {
    uint64_t h = 1469598103934665603ULL;
    const char *parts[3] = {source, device, metric};
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xffu) * 1099511628211ULL;
    }
    h = (h ^ (uint64_t)(uint32_t)pid) * 1099511628211ULL;
    return h;
}

static bool cb__series_is(const cb__series *s, const char *source, const char *device, pid_t pid,
                          const char *metric) {
    return s->pid == pid && (s->metric == metric || !strcmp(s->metric, metric)) &&
           (s->source == source || !strcmp(s->source, source)) && !strcmp(s->device, device);
}

static bool cb__hash_grow(cb_monitor *m) {
    size_t ns = m->hash_size ? m->hash_size * 2 : 256;
    uint32_t *h = cb_calloc(ns, sizeof *h);
    if (!h) return false;
    for (size_t i = 0; i < m->n_series; i++) {
        const cb__series *s = &m->series[i];
        size_t k = (size_t)cb__hash_key(s->source, s->device, s->pid, s->metric) & (ns - 1);
        while (h[k]) k = (k + 1) & (ns - 1);
        h[k] = (uint32_t)i + 1;
    }
    cb_free(m->hash);
    m->hash = h;
    m->hash_size = ns;
    return true;
}

/* The series index, created on first use; -1 when out of memory or over the bound. */
static long cb__series_find(cb_monitor *m, const char *source, const char *device, pid_t pid,
                            const char *label, const char *metric) {
    if (m->hash_size) {
        size_t k = (size_t)cb__hash_key(source, device, pid, metric) & (m->hash_size - 1);
        while (m->hash[k]) {
            const cb__series *s = &m->series[m->hash[k] - 1];
            if (cb__series_is(s, source, device, pid, metric)) return (long)m->hash[k] - 1;
            k = (k + 1) & (m->hash_size - 1);
        }
    }
    if (m->n_series >= CB_MON_MAX_SERIES) {
        if (!m->series_full_noticed)
            cb__mon_notice(m, CB_LOG_WARN, "monitor: more than %d series; further ones dropped",
                           CB_MON_MAX_SERIES);
        m->series_full_noticed = true;
        return -1;
    }
    if ((m->n_series + 1) * 2 > m->hash_size && !cb__hash_grow(m)) return -1;
    if (m->n_series == m->cap_series) {
        size_t nc = m->cap_series ? m->cap_series * 2 : 64;
        cb__series *ns = cb_realloc(m->series, nc * sizeof *ns);
        if (!ns) return -1;
        m->series = ns;
        m->cap_series = nc;
    }
    cb__series *s = &m->series[m->n_series];
    memset(s, 0, sizeof *s);
    s->source = source;
    s->metric = metric;
    s->pid = pid;
    snprintf(s->device, sizeof s->device, "%s", device);
    snprintf(s->label, sizeof s->label, "%s", label ? label : "");
    size_t k = (size_t)cb__hash_key(source, device, pid, metric) & (m->hash_size - 1);
    while (m->hash[k]) k = (k + 1) & (m->hash_size - 1);
    m->hash[k] = (uint32_t)m->n_series + 1;
    return (long)m->n_series++;
}

void cb__mon_emit(cb_monitor *m, const char *source, const char *device, pid_t pid,
                  const char *label, const char *metric, double value) {
    long idx = cb__series_find(m, source, device ? device : "", pid, label, metric);
    if (idx < 0) return;
    cb__series *s = &m->series[idx];
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        int64_t *nt = nc <= CB_MON_MAX_SAMPLES_PER_SERIES ? cb_realloc(s->t, nc * sizeof *nt) : NULL;
        if (nt) s->t = nt;
        double *nv = nt ? cb_realloc(s->v, nc * sizeof *nv) : NULL;
        if (nv) s->v = nv;
        if (!nt || !nv) {
            if (!m->samples_full_noticed)
                cb__mon_notice(m, CB_LOG_WARN,
                               "monitor: cannot keep more samples in memory; the summary covers "
                               "the first ones, metrics.csv has all");
            m->samples_full_noticed = true;
        } else {
            s->cap = nc;
        }
    }
    if (s->n < s->cap) {
        s->t[s->n] = m->cur_t_ns;
        s->v[s->n] = value;
        s->n++;
    }
    if (m->csv_fd < 0) return;
    if (m->t0_set) {
        cb__csv_row(m, s, m->cur_t_ns, value);
        return;
    }
    if (m->n_pending == m->cap_pending) {
        size_t nc = m->cap_pending ? m->cap_pending * 2 : 256;
        cb__pending *np = nc <= CB_MON_MAX_PENDING ? cb_realloc(m->pending, nc * sizeof *np) : NULL;
        if (!np) return; /* bounded: rows before t0 beyond the bound are not written */
        m->pending = np;
        m->cap_pending = nc;
    }
    m->pending[m->n_pending++] = (cb__pending){m->cur_t_ns, value, (uint32_t)idx};
}

/* ---- sampling ------------------------------------------------------------------------------ */

static int64_t cb__thread_cpu_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void cb__proc_finish(cb_monitor *m, cb__mon_proc *p) {
    if (p->perf && (m->sources & CB_MON_PERF)) cb__perf_sample(p, m); /* final counts */
    cb__perf_detach(p);
    cb__proc_close(p);
    p->exited = true;
}

/* One sample of every source; mu held. */
static void cb__sample(cb_monitor *m) {
    m->cur_t_ns = cb_clock_now_ns();
    if (m->procfs) cb__procfs_sample_host(m->procfs, m, m->cur_t_ns);
    bool procs = (m->sources & (CB_MON_PROCESS | CB_MON_PERF)) != 0;
    for (size_t i = 0; procs && i < m->n_procs; i++) {
        cb__mon_proc *p = &m->procs[i];
        if (p->exited) continue;
        if (!cb__proc_sample(p, m, m->cur_t_ns, (m->sources & CB_MON_PROCESS) != 0)) {
            cb__mon_notice(m, CB_LOG_INFO, "process %d%s%s%s: exited; no longer sampled",
                           (int)p->pid, p->label[0] ? " (" : "", p->label,
                           p->label[0] ? ")" : "");
            cb__proc_finish(m, p);
            continue;
        }
        if (p->perf) cb__perf_sample(p, m);
    }
    if (m->nvml) cb__nvml_gpu_sample(m->nvml, m, m->procs, m->n_procs);
    m->n_samples++;
    if (m->t0_set) cb__csv_flush(m);
}

static void *cb__sampler_main(void *arg) {
    cb_monitor *m = arg;
    pthread_setname_np(pthread_self(), "cb-sampler");
    int64_t cpu0 = cb__thread_cpu_ns();
    pthread_mutex_lock(&m->mu);
    int64_t next = m->start_ns + m->period_ns;
    while (!m->stop_req) {
        struct timespec ts = {.tv_sec = next / 1000000000LL, .tv_nsec = next % 1000000000LL};
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        if (m->stop_req) break;
        int64_t now = cb_clock_now_ns();
        if (now < next) continue; /* spurious wake-up */
        if (now - next >= m->period_ns) {
            int64_t skip = (now - next) / m->period_ns;
            m->missed_periods += (uint64_t)skip;
            next += skip * m->period_ns;
        }
        cb__sample(m);
        next += m->period_ns;
        atomic_store_explicit(&m->cpu_ns, m->create_cpu_ns + cb__thread_cpu_ns() - cpu0,
                              memory_order_relaxed);
    }
    cb__sample(m); /* the last one, at stop */
    atomic_store_explicit(&m->cpu_ns, m->create_cpu_ns + cb__thread_cpu_ns() - cpu0,
                          memory_order_relaxed);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---- public -------------------------------------------------------------------------------- */

static void cb__perf_probe(cb_monitor *m) {
    cb__mon_proc self;
    memset(&self, 0, sizeof self);
    self.pid = getpid();
    char reason[CB_MON_REASON_MAX];
    if (cb__perf_attach(&self, reason, sizeof reason) == CB_OK) {
        cb__perf_detach(&self);
        m->perf_ok = true;
        snprintf(m->perf_status, sizeof m->perf_status, "available");
    } else {
        m->perf_ok = false;
        snprintf(m->perf_status, sizeof m->perf_status, "unavailable: %s", reason);
        cb__mon_notice(m, CB_LOG_WARN, "perf: unavailable: %s", reason);
    }
}

int cb_monitor_create(const cb_monitor_opts *opts, cb_monitor **out, cb_error *err) {
    *out = NULL;
    if (!opts || opts->period_ns < 0)
        return cb_error_set(err, CB_EINVAL, "monitor: period must be positive");
    if (opts->sources & ~(unsigned)CB_MON_ALL)
        return cb_error_set(err, CB_EINVAL, "monitor: unknown source bits 0x%x", opts->sources);
    cb_monitor *m = cb_calloc(1, sizeof *m);
    if (!m) return cb_error_set(err, CB_ENOMEM, "monitor: out of memory");
    m->period_ns = opts->period_ns ? opts->period_ns : 100000000LL;
    if (m->period_ns < 1000000LL) m->period_ns = 1000000LL; /* 1 ms floor */
    m->sources = opts->sources;
    m->attributable = opts->gpu_per_process_attributable;
    m->log = opts->log;
    m->csv_fd = -1;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    m->notices = cb_calloc(CB_MON_MAX_NOTICES, sizeof *m->notices);
    m->out_dir = opts->out_dir ? cb_strdup(opts->out_dir) : NULL;
    m->nvml_library = cb_strdup(opts->nvml_library ? opts->nvml_library : "libnvidia-ml.so.1");
    m->csv_cap = 64u * 1024u;
    m->csv = cb_malloc(m->csv_cap);
    snprintf(m->gpu_status, sizeof m->gpu_status, "not requested");
    snprintf(m->perf_status, sizeof m->perf_status, "not requested");
    if (!m->notices || !m->nvml_library || !m->csv || (opts->out_dir && !m->out_dir)) {
        cb_monitor_destroy(m);
        return cb_error_set(err, CB_ENOMEM, "monitor: out of memory");
    }
    int rc = CB_OK;
    if (m->out_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.csv", m->out_dir);
        m->csv_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (m->csv_fd < 0) {
            rc = cb_error_set(err, CB_EIO, "monitor: %s: cannot create: %s", path, strerror(errno));
            cb_monitor_destroy(m);
            return rc;
        }
        static const char header[] = "t_ns,source,device,pid,metric,value\n";
        memcpy(m->csv, header, sizeof header - 1);
        m->csv_len = sizeof header - 1;
        cb__csv_flush(m);
    }
    if (m->sources & (CB_MON_CPU | CB_MON_MEMORY)) {
        rc = cb__procfs_create(&m->procfs, m->sources, err);
        if (rc) {
            cb_monitor_destroy(m);
            return rc;
        }
    }
    if (m->sources & CB_MON_GPU) {
        cb_error ne;
        cb_error_clear(&ne);
        if (cb_nvml_open(m->nvml_library, &m->nvml, &ne) != CB_OK) {
            snprintf(m->gpu_status, sizeof m->gpu_status, "unavailable: %s", ne.msg);
            cb__mon_notice(m, CB_LOG_WARN, "gpu: NVML unavailable: %s; CPU monitors continue",
                           ne.msg);
        } else {
            m->n_gpus = cb_nvml_device_count(m->nvml);
            snprintf(m->gpu_status, sizeof m->gpu_status, "available: %d GPU%s", m->n_gpus,
                     m->n_gpus == 1 ? "" : "s");
            cb__nvml_gpu_start(m->nvml, m);
        }
    }
    if (m->sources & CB_MON_PERF) cb__perf_probe(m);

    int64_t cpu0 = cb__thread_cpu_ns();
    m->start_ns = cb_clock_now_ns();
    pthread_mutex_lock(&m->mu);
    cb__sample(m); /* baseline of every delta */
    pthread_mutex_unlock(&m->mu);
    m->create_cpu_ns = cb__thread_cpu_ns() - cpu0;
    atomic_store_explicit(&m->cpu_ns, m->create_cpu_ns, memory_order_relaxed);
    if (pthread_create(&m->thread, NULL, cb__sampler_main, m) != 0) {
        cb_monitor_destroy(m);
        return cb_error_set(err, CB_EIO, "monitor: cannot start the sampler thread");
    }
    m->thread_started = true;
    *out = m;
    return CB_OK;
}

void cb_monitor_set_t0(cb_monitor *m, int64_t t0_ns) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    if (!m->t0_set) {
        m->t0_ns = t0_ns;
        m->t0_set = true;
        cb__write_pending(m);
        cb__csv_flush(m);
    }
    pthread_mutex_unlock(&m->mu);
}

int cb_monitor_add_process(cb_monitor *m, pid_t pid, const char *label) {
    if (!m || pid <= 0) return CB_EINVAL;
    int rc = CB_OK;
    pthread_mutex_lock(&m->mu);
    if (m->stopped) {
        rc = CB_ESTOPPED;
    } else if (m->n_procs >= CB_MON_MAX_PROCS) {
        cb__mon_notice(m, CB_LOG_WARN, "process %d: not watched: at most %d processes",
                       (int)pid, CB_MON_MAX_PROCS);
        rc = CB_EFULL;
    } else {
        if (m->n_procs == m->cap_procs) {
            size_t nc = m->cap_procs ? m->cap_procs * 2 : 8;
            cb__mon_proc *np = cb_realloc(m->procs, nc * sizeof *np);
            if (np) m->procs = np, m->cap_procs = nc;
        }
        if (m->n_procs == m->cap_procs) {
            rc = CB_ENOMEM;
        } else {
            cb__mon_proc *p = &m->procs[m->n_procs];
            cb_error e;
            cb_error_clear(&e);
            rc = cb__proc_open(p, pid, label, &e);
            if (rc) {
                cb__mon_notice(m, CB_LOG_WARN, "%s", e.msg);
            } else {
                if ((m->sources & CB_MON_PERF) && m->perf_ok) {
                    char reason[CB_MON_REASON_MAX];
                    if (cb__perf_attach(p, reason, sizeof reason) != CB_OK)
                        cb__mon_notice(m, CB_LOG_WARN, "perf: process %d: %s", (int)pid, reason);
                }
                m->n_procs++;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int cb_monitor_stop(cb_monitor *m, cb_error *err) {
    if (!m || m->stopped) return CB_OK;
    pthread_mutex_lock(&m->mu);
    m->stop_req = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->thread_started) pthread_join(m->thread, NULL);
    m->thread_started = false;
    pthread_mutex_lock(&m->mu);
    m->stopped = true;
    m->stop_ns = cb_clock_now_ns();
    if (!m->t0_set) {
        m->t0_ns = m->start_ns;
        m->t0_set = true;
        cb__write_pending(m);
    }
    cb__csv_flush(m);
    for (size_t i = 0; i < m->n_procs; i++)
        if (!m->procs[i].exited) {
            cb__perf_detach(&m->procs[i]);
            cb__proc_close(&m->procs[i]);
        }
    cb_nvml_close(m->nvml);
    m->nvml = NULL;
    cb__procfs_destroy(m->procfs);
    m->procfs = NULL;
    int rc = CB_OK;
    if (m->csv_fd >= 0 && close(m->csv_fd) != 0 && !m->io_errno) m->io_errno = errno;
    m->csv_fd = -1;
    if (m->io_errno)
        rc = cb_error_set(err, CB_EIO, "monitor: writing metrics.csv failed: %s",
                          strerror(m->io_errno));
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void cb_monitor_overhead(const cb_monitor *m, int64_t *cpu_ns, int64_t *wall_ns) {
    if (cpu_ns) *cpu_ns = m ? atomic_load_explicit(&m->cpu_ns, memory_order_relaxed) : 0;
    if (wall_ns) {
        /* stop_ns is written under mu by stop, on the same controlling thread that calls this. */
        int64_t end = m && m->stopped ? m->stop_ns : cb_clock_now_ns();
        *wall_ns = m ? end - m->start_ns : 0;
    }
}

void cb_monitor_destroy(cb_monitor *m) {
    if (!m) return;
    cb_monitor_stop(m, NULL);
    for (size_t i = 0; i < m->n_series; i++) {
        cb_free(m->series[i].t);
        cb_free(m->series[i].v);
    }
    cb_free(m->series);
    cb_free(m->hash);
    cb_free(m->pending);
    cb_free(m->procs);
    cb_free(m->notices);
    cb_free(m->csv);
    cb_free(m->out_dir);
    cb_free(m->nvml_library);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    cb_free(m);
}

/* ---- summary ------------------------------------------------------------------------------- */

/* The series value at time t by linear interpolation (clamped to the first/last sample). */
static double cb__interp(const cb__series *s, int64_t t) {
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

static bool cb__is_energy(const cb__series *s) {
    return s->pid == 0 && !strcmp(s->source, "gpu") && !strcmp(s->metric, "energy_mj");
}

/* Joules over [start, end] summed over every GPU's energy counter (mJ). */
static double cb__energy_j(const cb_monitor *m, int64_t start, int64_t end) {
    double j = 0;
    for (size_t i = 0; i < m->n_series; i++)
        if (cb__is_energy(&m->series[i]))
            j += (cb__interp(&m->series[i], end) - cb__interp(&m->series[i], start)) / 1000.0;
    return j;
}

void cb_monitor_summary_json(const cb_monitor *m, const cb_monitor_window *windows,
                             size_t n_windows, cb_json *j) {
    cb_json_object_begin(j);
    cb_json_key(j, "period_ms");
    cb_json_double(j, (double)m->period_ns / 1e6);
    cb_json_key(j, "sources");
    cb_json_array_begin(j);
    for (size_t i = 0; i < sizeof cb__source_names / sizeof cb__source_names[0]; i++)
        if (m->sources & cb__source_names[i].bit) cb_json_string(j, cb__source_names[i].name);
    cb_json_array_end(j);
    if (m->sources & CB_MON_GPU) {
        cb_json_key(j, "gpu");
        cb_json_string(j, m->gpu_status);
    }
    if (m->sources & CB_MON_PERF) {
        cb_json_key(j, "perf");
        cb_json_string(j, m->perf_status);
    }
    cb_json_key(j, "notices");
    cb_json_array_begin(j);
    for (size_t i = 0; i < m->n_notices; i++) cb_json_string(j, m->notices[i]);
    cb_json_array_end(j);
    if (m->dropped_notices) {
        cb_json_key(j, "notices_dropped");
        cb_json_uint(j, m->dropped_notices);
    }
    int64_t cpu_ns, wall_ns;
    cb_monitor_overhead(m, &cpu_ns, &wall_ns);
    cb_json_key(j, "overhead");
    cb_json_object_begin(j);
    cb_json_key(j, "cpu_ns");
    cb_json_int(j, cpu_ns);
    cb_json_key(j, "wall_ns");
    cb_json_int(j, wall_ns);
    cb_json_key(j, "percent_of_core");
    cb_json_double(j, wall_ns > 0 ? 100.0 * (double)cpu_ns / (double)wall_ns : 0.0);
    cb_json_key(j, "samples");
    cb_json_uint(j, m->n_samples);
    cb_json_key(j, "missed_periods");
    cb_json_uint(j, m->missed_periods);
    cb_json_object_end(j);

    int64_t w0 = INT64_MIN, w1 = INT64_MAX;
    if (n_windows > 0) w0 = windows[0].start_ns, w1 = windows[0].end_ns;
    cb_json_key(j, "series");
    cb_json_array_begin(j);
    for (size_t i = 0; i < m->n_series; i++) {
        const cb__series *s = &m->series[i];
        double sum = 0, max = -INFINITY;
        size_t n = 0;
        for (size_t k = 0; k < s->n; k++) {
            if (s->t[k] < w0 || s->t[k] > w1) continue;
            sum += s->v[k];
            if (s->v[k] > max) max = s->v[k];
            n++;
        }
        cb_json_object_begin(j);
        cb_json_key(j, "source");
        cb_json_string(j, s->source);
        cb_json_key(j, "device");
        cb_json_string(j, s->device);
        cb_json_key(j, "pid");
        if (s->pid) cb_json_int(j, s->pid);
        else cb_json_null(j);
        cb_json_key(j, "label");
        if (s->label[0]) cb_json_string(j, s->label);
        else cb_json_null(j);
        cb_json_key(j, "metric");
        cb_json_string(j, s->metric);
        bool unattributable = !m->attributable && s->pid && !strcmp(s->source, "gpu");
        cb_json_key(j, "mean");
        if (unattributable) cb_json_string(j, "not attributable");
        else if (n) cb_json_double(j, sum / (double)n);
        else cb_json_null(j);
        cb_json_key(j, "max");
        if (unattributable) cb_json_string(j, "not attributable");
        else if (n) cb_json_double(j, max);
        else cb_json_null(j);
        cb_json_key(j, "samples");
        cb_json_uint(j, n);
        cb_json_object_end(j);
    }
    cb_json_array_end(j);

    bool have_energy = false;
    for (size_t i = 0; i < m->n_series && !have_energy; i++)
        have_energy = cb__is_energy(&m->series[i]) && m->series[i].n > 0;
    if (have_energy) {
        int64_t e0 = n_windows ? windows[0].start_ns : m->start_ns;
        int64_t e1 = n_windows ? windows[0].end_ns : (m->stop_ns ? m->stop_ns : cb_clock_now_ns());
        cb_json_key(j, "energy_j");
        cb_json_object_begin(j);
        cb_json_key(j, "window");
        cb_json_double(j, cb__energy_j(m, e0, e1));
        cb_json_key(j, "devices");
        cb_json_object_begin(j);
        for (size_t i = 0; i < m->n_series; i++) {
            const cb__series *s = &m->series[i];
            if (!cb__is_energy(s)) continue;
            cb_json_key(j, s->device);
            cb_json_double(j, (cb__interp(s, e1) - cb__interp(s, e0)) / 1000.0);
        }
        cb_json_object_end(j);
        cb_json_key(j, "pipelines");
        cb_json_object_begin(j);
        for (size_t w = 1; w < n_windows; w++) {
            cb_json_key(j, windows[w].name ? windows[w].name : "");
            cb_json_double(j, cb__energy_j(m, windows[w].start_ns, windows[w].end_ns));
        }
        cb_json_object_end(j);
        cb_json_object_end(j);
    }
    cb_json_object_end(j);
}
