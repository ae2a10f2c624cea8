/* monitor/monitor.c - the sampler core (see monitor.h): one `cb-sampler` thread, the series
 * table, metrics.csv streaming and the "monitors" summary computed from it.
 *
 * Design: the thread samples on absolute CLOCK_MONOTONIC deadlines (next += period); a deadline
 * that has already passed by whole periods is skipped and counted (missed_periods), never
 * caught up in a burst. It waits on a condition variable (monotonic clock) so stop wakes it at
 * once. Each sample asks every source in turn (procfs.c, perf.c, nvml.c); they report values
 * with cb__mon_emit, which finds the series (an open-addressing hash of source/device/pid/metric;
 * the table holds names and labels only, never samples) and formats the CSV row into one buffer
 * written with a single write(2) per sample. Rows sampled before t0 is known are kept as
 * (series, t, value), at most CB_MON_MAX_PENDING, and written when it is. The sampler's own CPU
 * time (CLOCK_THREAD_CPUTIME_ID, plus the first sample taken in create) is the monitor's
 * overhead.
 *
 * Memory is flat in the run's length. The summary (mean, max and count per series over a window,
 * GPU energy interpolated at window edges) is computed at the end in one pass over metrics.csv,
 * read back through the descriptor that wrote it with a bounded cursor parser; values are
 * written as the shortest text that reads back to the same double, so the figures equal those
 * of an in-memory computation. Samples that have no file to go to (out_dir NULL, or after a
 * write error) go to a ring of the most recent memory_samples_max records, which the pass reads
 * after the file. A write error truncates the file to its last complete row (the unwritten rows
 * of the buffer are parsed back into the ring), and stop reports it.
 *
 * Thread-safety: `mu` protects everything the sampler touches (processes, t0, series, notices,
 * the CSV buffer and file state, the ring); the sampler holds it while sampling and releases it
 * while waiting, so cb_monitor_add_process, cb_monitor_set_t0 and cb_monitor_bytes may be
 * called at any time. The overhead counter is atomic (relaxed: a statistic, no ordering needed).
 * Summary and destroy run after stop on the controlling thread. No lock order issue: `mu` is the
 * only lock.
 * Ownership: the monitor copies every option string; the logger is borrowed and must outlive
 * the monitor; metrics.csv's writing descriptor is closed by cb_monitor_stop, the reading one by
 * cb_monitor_destroy.
 */
#include "monitor/monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include "core/fmt.h"
#include "monitor/monitor_int.h"

#define CB_MON_MAX_SERIES 65536
#define CB_MON_MAX_PENDING (1u << 22)
#define CB_MON_MAX_PROCS 4096
#define CB_MON_MAX_NOTICES 64
#define CB_MON_NOTICE_MAX 320
#define CB_MON_CSV_MAX_BYTES (8u * 1024u * 1024u)
#define CB_MON_REASON_MAX 256
#define CB_MON_SOURCE_NAME_MAX 16  /* bytes of a source name, NUL included */
#define CB_MON_METRIC_NAME_MAX 64  /* bytes of a metric name, NUL included */
#define CB_MON_VALUE_TEXT_MAX 48   /* bytes of a value's text, NUL included */
#define CB_MON_ROW_MAX 256         /* bytes of one metrics.csv row, newline included */
#define CB_MON_READ_CHUNK (64u * 1024u)
#define CB_MON_MEMORY_DEFAULT (1u << 18)
#define CB_MON_MEMORY_MIN 16u
#define CB_MON_MEMORY_MAX (1u << 24)

static const char k_header[] = "t_ns,source,device,pid,metric,value\n";
static const char k_csv_name[] = "metrics.csv";

typedef struct cb__series {
    const char *source, *metric; /* literals */
    char device[CB_MON_DEVICE_MAX];
    char label[CB_MON_LABEL_MAX];
    pid_t pid;
} cb__series;

/* One sample of one series: rows waiting for t0, and the in-memory ring. */
typedef struct mon_rec {
    int64_t t_ns; /* absolute */
    double value;
    uint32_t series;
} mon_rec;

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
    bool series_full_noticed, pending_full_noticed;

    mon_rec *pending; /* rows before t0 (with a file), at most CB_MON_MAX_PENDING */
    size_t n_pending, cap_pending;

    /* metrics.csv: csv_fd stays open (for the summary) after writing stops. */
    int csv_fd;          /* -1: no file */
    bool csv_writing;    /* rows go to the file (false: no file, or it failed) */
    char *csv;           /* rows not yet written: whole rows only */
    size_t csv_len, csv_cap;
    uint64_t csv_bytes;  /* bytes in the file: the header and whole rows */
    int io_errno;        /* the first write error */

    /* The ring of samples kept in memory when they have no file to go to. */
    mon_rec *mem;
    size_t mem_cap, mem_max, mem_head, mem_n;
    uint64_t mem_dropped;
    bool mem_noticed;

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

/* ---- series -------------------------------------------------------------------------------- */

static uint64_t hash_key(const char *source, const char *device, pid_t pid, const char *metric) {
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

static bool series_is(const cb__series *s, const char *source, const char *device, pid_t pid,
                      const char *metric) {
    return s->pid == pid && (s->metric == metric || !strcmp(s->metric, metric)) &&
           (s->source == source || !strcmp(s->source, source)) && !strcmp(s->device, device);
}

/* The index of an existing series; -1 if there is none. */
static long series_lookup(const cb_monitor *m, const char *source, const char *device, pid_t pid,
                          const char *metric) {
    if (!m->hash_size) return -1;
    size_t k = (size_t)hash_key(source, device, pid, metric) & (m->hash_size - 1);
    while (m->hash[k]) {
        const cb__series *s = &m->series[m->hash[k] - 1];
        if (series_is(s, source, device, pid, metric)) return (long)m->hash[k] - 1;
        k = (k + 1) & (m->hash_size - 1);
    }
    return -1;
}

static bool hash_grow(cb_monitor *m) {
    size_t ns = m->hash_size ? m->hash_size * 2 : 256;
    uint32_t *h = cb_calloc(ns, sizeof *h);
    if (!h) return false;
    for (size_t i = 0; i < m->n_series; i++) {
        const cb__series *s = &m->series[i];
        size_t k = (size_t)hash_key(s->source, s->device, s->pid, s->metric) & (ns - 1);
        while (h[k]) k = (k + 1) & (ns - 1);
        h[k] = (uint32_t)i + 1;
    }
    cb_free(m->hash);
    m->hash = h;
    m->hash_size = ns;
    return true;
}

/* The series index, created on first use; -1 when out of memory or over a bound. */
static long series_find(cb_monitor *m, const char *source, const char *device, pid_t pid,
                        const char *label, const char *metric) {
    long idx = series_lookup(m, source, device, pid, metric);
    if (idx >= 0) return idx;
    if (m->n_series >= CB_MON_MAX_SERIES) {
        if (!m->series_full_noticed)
            cb__mon_notice(m, CB_LOG_WARN, "more than %d series; further ones dropped",
                           CB_MON_MAX_SERIES);
        m->series_full_noticed = true;
        return -1;
    }
    /* Names must fit the row (and the reader's fields); a device or metric name never has a
     * comma or a line break. */
    if (strlen(source) >= CB_MON_SOURCE_NAME_MAX || strlen(metric) >= CB_MON_METRIC_NAME_MAX ||
        strlen(device) >= CB_MON_DEVICE_MAX || strpbrk(device, ",\n\r") ||
        strpbrk(source, ",\n\r") || strpbrk(metric, ",\n\r"))
        return -1;
    if ((m->n_series + 1) * 2 > m->hash_size && !hash_grow(m)) return -1;
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
    size_t k = (size_t)hash_key(source, device, pid, metric) & (m->hash_size - 1);
    while (m->hash[k]) k = (k + 1) & (m->hash_size - 1);
    m->hash[k] = (uint32_t)m->n_series + 1;
    return (long)m->n_series++;
}

/* ---- samples kept in memory ------------------------------------------------------------------ */

/* Appends to the ring; when it is full (mem_max records), the oldest record is dropped. */
static void mem_push(cb_monitor *m, uint32_t series, int64_t t_ns, double value) {
    mon_rec r = {t_ns, value, series};
    if (m->mem_n < m->mem_cap) { /* not full, so it has never wrapped: mem_head is 0 */
        m->mem[m->mem_n++] = r;
        return;
    }
    if (m->mem_cap < m->mem_max) {
        size_t nc = m->mem_cap ? m->mem_cap * 2 : 1024;
        if (nc > m->mem_max) nc = m->mem_max;
        mon_rec *nm = cb_realloc(m->mem, nc * sizeof *nm);
        if (nm) {
            m->mem = nm;
            m->mem_cap = nc;
            m->mem[m->mem_n++] = r;
            return;
        }
    }
    if (!m->mem_cap) return; /* out of memory before the first record */
    m->mem[m->mem_head] = r;
    m->mem_head = (m->mem_head + 1) % m->mem_cap;
    m->mem_dropped++;
    if (!m->mem_noticed)
        cb__mon_notice(m, CB_LOG_WARN,
                       "more than %zu samples without a file to write them to; the "
                       "summary covers the most recent %zu",
                       m->mem_cap, m->mem_cap);
    m->mem_noticed = true;
}

/* ---- metrics.csv rows: writing ------------------------------------------------------------- */

/* Formats one row (t relative to t0) into row (CB_MON_ROW_MAX bytes); its length. */
static size_t format_row(const cb_monitor *m, const cb__series *s, int64_t t_ns, double value,
                         char *row) {
    /* series_find bounds every name, so a row fits: t 20 + source 15 + device 31 + pid 10 +
     * metric 63 + value 32 (cb_fmt_double) + 6 separators = 177 < CB_MON_ROW_MAX */
    char *p = cb_fmt_i64(row, t_ns - m->t0_ns);
    *p++ = ',';
    size_t n = strlen(s->source);
    memcpy(p, s->source, n);
    p += n;
    *p++ = ',';
    n = strlen(s->device);
    memcpy(p, s->device, n);
    p += n;
    *p++ = ',';
    if (s->pid) p = cb_fmt_i64(p, s->pid);
    *p++ = ',';
    n = strlen(s->metric);
    memcpy(p, s->metric, n);
    p += n;
    *p++ = ',';
    p = cb_fmt_double(p, value);
    *p++ = '\n';
    return (size_t)(p - row);
}

static bool parse_row(const cb_monitor *m, const char *p, const char *end, uint32_t *series,
                      int64_t *t_rel, double *value);

/* The file failed after `written` bytes of the buffer: keep its whole rows, truncate the rest,
 * stop writing and move the unwritten rows to memory. */
static void csv_fail(cb_monitor *m, int e, size_t written) {
    size_t whole = written;
    while (whole > 0 && m->csv[whole - 1] != '\n') whole--;
    m->csv_bytes += whole;
    if (!m->io_errno) m->io_errno = e;
    m->csv_writing = false;
    int te = ftruncate(m->csv_fd, (off_t)m->csv_bytes) != 0 ? errno : 0;
    cb__mon_notice(m, CB_LOG_WARN,
                   "metrics.csv: write failed: %s; the file ends at its last complete "
                   "row (%llu bytes)%s%s; later samples are kept in memory for the summary",
                   strerror(e), (unsigned long long)m->csv_bytes,
                   te ? ", but truncating it failed: " : "", te ? strerror(te) : "");
    const char *p = m->csv + whole, *end = m->csv + m->csv_len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        uint32_t idx;
        int64_t t_rel;
        double v;
        if (parse_row(m, p, nl, &idx, &t_rel, &v)) mem_push(m, idx, m->t0_ns + t_rel, v);
        p = nl + 1;
    }
    m->csv_len = 0;
}

static void csv_flush(cb_monitor *m) {
    if (!m->csv_writing) {
        m->csv_len = 0;
        return;
    }
    size_t off = 0;
    while (off < m->csv_len) {
        ssize_t k = write(m->csv_fd, m->csv + off, m->csv_len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            csv_fail(m, k < 0 ? errno : EIO, off);
            return;
        }
        off += (size_t)k;
    }
    m->csv_bytes += m->csv_len;
    m->csv_len = 0;
}

/* One sample of series idx: a row of metrics.csv, or a record in memory. t0 is set. */
static void csv_row(cb_monitor *m, uint32_t idx, int64_t t_ns, double value) {
    if (!m->csv_writing) {
        mem_push(m, idx, t_ns, value);
        return;
    }
    char row[CB_MON_ROW_MAX];
    size_t k = format_row(m, &m->series[idx], t_ns, value, row);
    if (m->csv_len + k > m->csv_cap) {
        if (m->csv_cap < CB_MON_CSV_MAX_BYTES) {
            size_t nc = m->csv_cap * 2;
            char *nb = cb_realloc(m->csv, nc);
            if (nb) m->csv = nb, m->csv_cap = nc;
        }
        if (m->csv_len + k > m->csv_cap) csv_flush(m);
        if (!m->csv_writing) {
            mem_push(m, idx, t_ns, value);
            return;
        }
    }
    memcpy(m->csv + m->csv_len, row, k);
    m->csv_len += k;
}

static void write_pending(cb_monitor *m) {
    for (size_t i = 0; i < m->n_pending; i++)
        csv_row(m, m->pending[i].series, m->pending[i].t_ns, m->pending[i].value);
    m->n_pending = 0;
    cb_free(m->pending);
    m->pending = NULL;
    m->cap_pending = 0;
}

void cb__mon_emit(cb_monitor *m, const char *source, const char *device, pid_t pid,
                  const char *label, const char *metric, double value) {
    long idx = series_find(m, source, device ? device : "", pid, label, metric);
    if (idx < 0) return;
    if (!m->csv_writing) {
        mem_push(m, (uint32_t)idx, m->cur_t_ns, value);
        return;
    }
    if (m->t0_set) {
        csv_row(m, (uint32_t)idx, m->cur_t_ns, value);
        return;
    }
    if (m->n_pending == m->cap_pending) {
        size_t nc = m->cap_pending ? m->cap_pending * 2 : 256;
        mon_rec *np = nc <= CB_MON_MAX_PENDING ? cb_realloc(m->pending, nc * sizeof *np) : NULL;
        if (!np) { /* bounded: rows before t0 beyond the bound are lost */
            if (!m->pending_full_noticed)
                cb__mon_notice(m, CB_LOG_WARN,
                               "more than %zu rows before t0; later ones are left out "
                               "of metrics.csv and the summary",
                               m->cap_pending);
            m->pending_full_noticed = true;
            return;
        }
        m->pending = np;
        m->cap_pending = nc;
    }
    m->pending[m->n_pending++] = (mon_rec){m->cur_t_ns, value, (uint32_t)idx};
}

/* Creates out_dir/metrics.csv: an existing entry of that name is removed first (a symbolic
 * link is removed, never followed), then the file is created with O_EXCL | O_NOFOLLOW. Read and
 * write: the summary reads back this very file, whatever happens to the directory. */
static int csv_create(cb_monitor *m, cb_error *err) {
    int dfd = open(m->out_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return cb_error_set(err, CB_EIO, "monitor: %s: cannot open the output directory: %s",
                            m->out_dir, strerror(errno));
    int fd = -1, e = 0;
    if (unlinkat(dfd, k_csv_name, 0) != 0 && errno != ENOENT)
        e = errno;
    else if ((fd = openat(dfd, k_csv_name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          0644)) < 0)
        e = errno;
    close(dfd);
    if (fd < 0)
        return cb_error_set(err, CB_EIO, "monitor: %s/%s: cannot create: %s", m->out_dir,
                            k_csv_name, strerror(e));
    m->csv_fd = fd;
    m->csv_writing = true;
    memcpy(m->csv, k_header, sizeof k_header - 1);
    m->csv_len = sizeof k_header - 1;
    csv_flush(m);
    return CB_OK;
}

/* ---- metrics.csv rows: reading ------------------------------------------------------------- */

/* Copies the field at the cursor (up to ',' or the end) into dst; false if it does not fit.
 * The cursor ends after the comma. */
static bool take_field(cb__cur *c, char *dst, size_t size, bool last) {
    const char *start = c->p;
    while (c->p < c->end && *c->p != ',') c->p++;
    size_t n = (size_t)(c->p - start);
    if (n >= size) return false;
    memcpy(dst, start, n);
    dst[n] = '\0';
    if (last) return c->p == c->end;
    if (c->p == c->end) return false;
    c->p++;
    return true;
}

/* Parses one row [p, end) (no newline) of metrics.csv into its series, t_ns (relative to t0)
 * and value; false for a malformed row or an unknown series. */
static bool parse_row(const cb_monitor *m, const char *p, const char *end, uint32_t *series,
                      int64_t *t_rel, double *value) {
    cb__cur c = {p, end};
    bool neg = c.p < c.end && *c.p == '-';
    if (neg) c.p++;
    uint64_t t;
    if (c.p == c.end || *c.p < '0' || *c.p > '9' || !cb__cur_u64(&c, &t) ||
        t > (uint64_t)INT64_MAX || c.p == c.end || *c.p != ',')
        return false;
    c.p++;
    char source[CB_MON_SOURCE_NAME_MAX], device[CB_MON_DEVICE_MAX], pid_text[16],
        metric[CB_MON_METRIC_NAME_MAX], text[CB_MON_VALUE_TEXT_MAX];
    if (!take_field(&c, source, sizeof source, false) ||
        !take_field(&c, device, sizeof device, false) ||
        !take_field(&c, pid_text, sizeof pid_text, false) ||
        !take_field(&c, metric, sizeof metric, false) || !take_field(&c, text, sizeof text, true))
        return false;
    uint64_t pid = 0;
    if (pid_text[0]) {
        cb__cur pc = {pid_text, pid_text + strlen(pid_text)};
        if (pid_text[0] < '0' || pid_text[0] > '9' || !cb__cur_u64(&pc, &pid) ||
            pc.p != pc.end || pid == 0 || pid > INT_MAX)
            return false;
    }
    if (!text[0]) return false;
    char *vend = NULL;
    double v = strtod(text, &vend);
    if (!vend || *vend != '\0' || text[0] == ' ') return false;
    long idx = series_lookup(m, source, device, (pid_t)pid, metric);
    if (idx < 0) return false;
    *series = (uint32_t)idx;
    *t_rel = neg ? -(int64_t)t : (int64_t)t;
    *value = v;
    return true;
}

/* ---- sampling ------------------------------------------------------------------------------ */

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void proc_finish(cb_monitor *m, cb__mon_proc *p) {
    if (p->perf && (m->sources & CB_MON_PERF)) cb__perf_sample(p, m); /* final counts */
    cb__perf_detach(p);
    cb__proc_close(p);
    p->exited = true;
}

/* One sample of every source; mu held. */
static void sample(cb_monitor *m) {
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
            proc_finish(m, p);
            continue;
        }
        if (p->perf) cb__perf_sample(p, m);
    }
    if (m->nvml) cb__nvml_gpu_sample(m->nvml, m, m->procs, m->n_procs);
    m->n_samples++;
    if (m->t0_set) csv_flush(m);
}

void cb__monitor_inject(cb_monitor *m, int64_t t_ns, const cb__mon_value *values, size_t n) {
    pthread_mutex_lock(&m->mu);
    int64_t saved = m->cur_t_ns;
    m->cur_t_ns = t_ns;
    for (size_t i = 0; i < n; i++)
        cb__mon_emit(m, values[i].source, values[i].device, values[i].pid, values[i].label,
                     values[i].metric, values[i].value);
    m->cur_t_ns = saved;
    if (m->t0_set) csv_flush(m);
    pthread_mutex_unlock(&m->mu);
}

static void *sampler_main(void *arg) {
    cb_monitor *m = arg;
    pthread_setname_np(pthread_self(), "cb-sampler");
    int64_t cpu0 = thread_cpu_ns();
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
        sample(m);
        next += m->period_ns;
        atomic_store_explicit(&m->cpu_ns, m->create_cpu_ns + thread_cpu_ns() - cpu0,
                              memory_order_relaxed);
    }
    sample(m); /* the last one, at stop */
    atomic_store_explicit(&m->cpu_ns, m->create_cpu_ns + thread_cpu_ns() - cpu0,
                          memory_order_relaxed);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---- public -------------------------------------------------------------------------------- */

static void perf_probe(cb_monitor *m) {
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
    m->mem_max = opts->memory_samples_max ? opts->memory_samples_max : CB_MON_MEMORY_DEFAULT;
    if (m->mem_max < CB_MON_MEMORY_MIN) m->mem_max = CB_MON_MEMORY_MIN;
    if (m->mem_max > CB_MON_MEMORY_MAX) m->mem_max = CB_MON_MEMORY_MAX;
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
    if (m->out_dir && (rc = csv_create(m, err)) != CB_OK) {
        cb_monitor_destroy(m);
        return rc;
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
    if (m->sources & CB_MON_PERF) perf_probe(m);

    int64_t cpu0 = thread_cpu_ns();
    m->start_ns = cb_clock_now_ns();
    pthread_mutex_lock(&m->mu);
    sample(m); /* baseline of every delta */
    pthread_mutex_unlock(&m->mu);
    m->create_cpu_ns = thread_cpu_ns() - cpu0;
    atomic_store_explicit(&m->cpu_ns, m->create_cpu_ns, memory_order_relaxed);
    if (pthread_create(&m->thread, NULL, sampler_main, m) != 0) {
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
        write_pending(m);
        csv_flush(m);
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
        write_pending(m);
    }
    csv_flush(m);
    for (size_t i = 0; i < m->n_procs; i++)
        if (!m->procs[i].exited) {
            cb__perf_detach(&m->procs[i]);
            cb__proc_close(&m->procs[i]);
        }
    cb_nvml_close(m->nvml);
    m->nvml = NULL;
    cb__procfs_destroy(m->procfs);
    m->procfs = NULL;
    if (m->csv_fd >= 0) {
        /* Close the descriptor that wrote (where a network file system reports late write
         * errors); a duplicate stays open for the summary to read back. */
        int rfd = fcntl(m->csv_fd, F_DUPFD_CLOEXEC, 0);
        if (rfd >= 0) {
            if (close(m->csv_fd) != 0 && m->csv_writing && !m->io_errno) m->io_errno = errno;
            m->csv_fd = rfd;
        }
    }
    m->csv_writing = false;
    int rc = CB_OK;
    if (m->io_errno)
        rc = cb_error_set(err, CB_EIO,
                          "monitor: %s/%s: writing failed: %s; the file ends at its last complete "
                          "row (%llu bytes), and the summary includes the later samples kept in "
                          "memory",
                          m->out_dir ? m->out_dir : ".", k_csv_name, strerror(m->io_errno),
                          (unsigned long long)m->csv_bytes);
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

size_t cb_monitor_bytes(cb_monitor *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    size_t b = sizeof *m + m->cap_series * sizeof *m->series + m->hash_size * sizeof *m->hash +
               m->cap_pending * sizeof *m->pending + m->mem_cap * sizeof *m->mem + m->csv_cap +
               (m->notices ? CB_MON_MAX_NOTICES * sizeof *m->notices : 0) +
               m->cap_procs * sizeof *m->procs + (m->out_dir ? strlen(m->out_dir) + 1 : 0) +
               (m->nvml_library ? strlen(m->nvml_library) + 1 : 0);
    pthread_mutex_unlock(&m->mu);
    return b;
}

void cb_monitor_destroy(cb_monitor *m) {
    if (!m) return;
    cb_monitor_stop(m, NULL);
    if (m->csv_fd >= 0) close(m->csv_fd);
    cb_free(m->series);
    cb_free(m->hash);
    cb_free(m->pending);
    cb_free(m->mem);
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

/* What one pass over the samples accumulates: per series the count, sum and max inside the
 * window [w0, w1] and the count of all; per energy series its first and last sample and, for
 * each window edge, the last sample before it and the first at or after it. That is all the
 * in-memory computation (sum in sample order, linear interpolation between the two samples
 * bracketing an edge, clamped to the first/last sample) needs, so the results are the same. */
typedef struct series_acc {
    uint64_t n_all, n;
    double sum, max;
    size_t energy; /* energy slot + 1; 0: not an energy series */
} series_acc;

typedef struct energy_acc {
    int64_t first_t, last_t;
    double first_v, last_v;
} energy_acc;

typedef struct edge_acc {
    int64_t lo_t, hi_t; /* lo: last sample with t < edge; hi: first with t >= edge */
    double lo_v, hi_v;
    bool lo, hi;
} edge_acc;

typedef struct summary_pass {
    int64_t w0, w1;
    const int64_t *edges;
    size_t n_edges;
    series_acc *acc;
    energy_acc *en;
    edge_acc *ed; /* [energy slot * n_edges + edge] */
    uint64_t skipped_rows;
    char error[CB_MON_NOTICE_MAX];
} summary_pass;

static bool is_energy(const cb__series *s) {
    return s->pid == 0 && !strcmp(s->source, "gpu") && !strcmp(s->metric, "energy_mj");
}

static void pass_add(summary_pass *ps, uint32_t idx, int64_t t, double v) {
    series_acc *a = &ps->acc[idx];
    a->n_all++;
    if (t >= ps->w0 && t <= ps->w1) {
        a->sum += v;
        if (v > a->max) a->max = v;
        a->n++;
    }
    if (!a->energy) return;
    energy_acc *e = &ps->en[a->energy - 1];
    if (a->n_all == 1) e->first_t = t, e->first_v = v;
    e->last_t = t, e->last_v = v;
    edge_acc *ed = &ps->ed[(a->energy - 1) * ps->n_edges];
    for (size_t k = 0; k < ps->n_edges; k++) {
        if (t < ps->edges[k]) ed[k].lo_t = t, ed[k].lo_v = v, ed[k].lo = true;
        else if (!ed[k].hi) ed[k].hi_t = t, ed[k].hi_v = v, ed[k].hi = true;
    }
}

/* The rows of metrics.csv, read back through the monitor's descriptor in bounded chunks. */
static void pass_file(const cb_monitor *m, summary_pass *ps) {
    if (m->csv_fd < 0 || m->csv_bytes == 0) return;
    char *buf = cb_malloc(CB_MON_READ_CHUNK + CB_MON_ROW_MAX);
    if (!buf) {
        snprintf(ps->error, sizeof ps->error, "out of memory reading metrics.csv back");
        return;
    }
    uint64_t pos = 0;
    size_t have = 0;
    bool header = false, discard = false;
    while (pos < m->csv_bytes) {
        size_t want = CB_MON_READ_CHUNK;
        if (want > m->csv_bytes - pos) want = (size_t)(m->csv_bytes - pos);
        ssize_t k = pread(m->csv_fd, buf + have, want, (off_t)pos);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            snprintf(ps->error, sizeof ps->error, "metrics.csv: reading it back failed at byte "
                     "%llu: %s", (unsigned long long)pos, k < 0 ? strerror(errno) : "it is shorter "
                     "than written");
            break;
        }
        pos += (uint64_t)k;
        have += (size_t)k;
        char *p = buf, *end = buf + have;
        for (char *nl; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1) {
            if (discard) { /* the rest of an over-long line */
                discard = false;
                continue;
            }
            if (!header) {
                if ((size_t)(nl + 1 - p) != sizeof k_header - 1 ||
                    memcmp(p, k_header, sizeof k_header - 1) != 0) {
                    snprintf(ps->error, sizeof ps->error, "metrics.csv: the header is not \"%.*s\"",
                             (int)sizeof k_header - 2, k_header);
                    cb_free(buf);
                    return;
                }
                header = true;
                continue;
            }
            uint32_t idx;
            int64_t t_rel;
            double v;
            if (parse_row(m, p, nl, &idx, &t_rel, &v)) pass_add(ps, idx, m->t0_ns + t_rel, v);
            else ps->skipped_rows++;
        }
        have = (size_t)(end - p);
        if (have >= CB_MON_ROW_MAX) { /* no row is this long: skip to the next newline */
            if (!discard) ps->skipped_rows++;
            discard = true;
            have = 0;
        } else {
            memmove(buf, p, have);
        }
    }
    if (have && !ps->error[0]) ps->skipped_rows++; /* a last row without its newline */
    cb_free(buf);
}

static void pass_memory(const cb_monitor *m, summary_pass *ps) {
    for (size_t i = 0; i < m->mem_n; i++) {
        const mon_rec *r = &m->mem[(m->mem_head + i) % m->mem_cap];
        if (r->series < m->n_series) pass_add(ps, r->series, r->t_ns, r->value);
    }
}

/* The value of an energy series at time t: cb__interp of the in-memory design, from the pass. */
static double energy_at(const summary_pass *ps, const series_acc *a, size_t edge) {
    if (a->n_all == 0) return NAN;
    const energy_acc *e = &ps->en[a->energy - 1];
    const edge_acc *ed = &ps->ed[(a->energy - 1) * ps->n_edges + edge];
    int64_t t = ps->edges[edge];
    if (t <= e->first_t) return e->first_v;
    if (t >= e->last_t) return e->last_v;
    double f = (double)(t - ed->lo_t) / (double)(ed->hi_t - ed->lo_t);
    return ed->lo_v + f * (ed->hi_v - ed->lo_v);
}

/* Joules between edges e0 and e1 summed over every GPU's energy counter (mJ). */
static double energy_j(const cb_monitor *m, const summary_pass *ps, size_t e0, size_t e1) {
    double j = 0;
    for (size_t i = 0; i < m->n_series; i++)
        if (ps->acc[i].energy)
            j += (energy_at(ps, &ps->acc[i], e1) - energy_at(ps, &ps->acc[i], e0)) / 1000.0;
    return j;
}

void cb_monitor_summary_json(const cb_monitor *m, const cb_monitor_window *windows,
                             size_t n_windows, cb_json *j) {
    /* Edges: 0 and 1 are the energy window (windows[0], or the monitor's life), then each
     * further window's start and end. */
    summary_pass ps;
    memset(&ps, 0, sizeof ps);
    ps.w0 = INT64_MIN, ps.w1 = INT64_MAX;
    if (n_windows > 0) ps.w0 = windows[0].start_ns, ps.w1 = windows[0].end_ns;
    size_t n_edges = 2 * (n_windows > 1 ? n_windows : 1);
    int64_t *edges = cb_malloc(n_edges * sizeof *edges);
    size_t n_energy = 0;
    for (size_t i = 0; i < m->n_series; i++) n_energy += is_energy(&m->series[i]);
    ps.acc = cb_calloc(m->n_series ? m->n_series : 1, sizeof *ps.acc);
    ps.en = cb_calloc(n_energy ? n_energy : 1, sizeof *ps.en);
    ps.ed = cb_calloc(n_energy ? n_energy * n_edges : 1, sizeof *ps.ed);
    bool ok = edges && ps.acc && ps.en && ps.ed;
    if (ok) {
        edges[0] = n_windows ? windows[0].start_ns : m->start_ns;
        edges[1] = n_windows ? windows[0].end_ns : (m->stop_ns ? m->stop_ns : cb_clock_now_ns());
        for (size_t w = 1; w < n_windows; w++)
            edges[2 * w] = windows[w].start_ns, edges[2 * w + 1] = windows[w].end_ns;
        ps.edges = edges;
        ps.n_edges = n_edges;
        for (size_t i = 0, e = 0; i < m->n_series; i++) {
            ps.acc[i].max = -INFINITY;
            if (is_energy(&m->series[i])) ps.acc[i].energy = ++e;
        }
        pass_file(m, &ps);
        pass_memory(m, &ps);
    } else {
        snprintf(ps.error, sizeof ps.error, "out of memory");
    }

    cb_json_object_begin(j);
    cb_json_key(j, "period_ms");
    cb_json_double(j, (double)m->period_ns / 1e6);
    cb_json_key(j, "sources");
    cb_json_array_begin(j);
    for (size_t i = 0; i < CB_MON_N_SOURCES; i++)
        if (m->sources & cb_monitor_source_bits[i]) cb_json_string(j, cb_monitor_source_names[i]);
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

    cb_json_key(j, "series");
    cb_json_array_begin(j);
    for (size_t i = 0; ok && i < m->n_series; i++) {
        const cb__series *s = &m->series[i];
        const series_acc *a = &ps.acc[i];
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
        else if (a->n) cb_json_double(j, a->sum / (double)a->n);
        else cb_json_null(j);
        cb_json_key(j, "max");
        if (unattributable) cb_json_string(j, "not attributable");
        else if (a->n) cb_json_double(j, a->max);
        else cb_json_null(j);
        cb_json_key(j, "samples");
        cb_json_uint(j, a->n);
        cb_json_object_end(j);
    }
    cb_json_array_end(j);

    bool have_energy = false;
    for (size_t i = 0; ok && i < m->n_series && !have_energy; i++)
        have_energy = ps.acc[i].energy && ps.acc[i].n_all > 0;
    if (have_energy) {
        cb_json_key(j, "energy_j");
        cb_json_object_begin(j);
        cb_json_key(j, "window");
        cb_json_double(j, energy_j(m, &ps, 0, 1));
        cb_json_key(j, "devices");
        cb_json_object_begin(j);
        for (size_t i = 0; i < m->n_series; i++) {
            const series_acc *a = &ps.acc[i];
            if (!a->energy) continue;
            cb_json_key(j, m->series[i].device);
            cb_json_double(j, (energy_at(&ps, a, 1) - energy_at(&ps, a, 0)) / 1000.0);
        }
        cb_json_object_end(j);
        cb_json_key(j, "pipelines");
        cb_json_object_begin(j);
        for (size_t w = 1; w < n_windows; w++) {
            cb_json_key(j, windows[w].name ? windows[w].name : "");
            cb_json_double(j, energy_j(m, &ps, 2 * w, 2 * w + 1));
        }
        cb_json_object_end(j);
        cb_json_object_end(j);
    }
    if (ps.error[0] || ps.skipped_rows) { /* the figures above do not cover every sample */
        char msg[CB_MON_NOTICE_MAX + 64];
        if (!ps.skipped_rows)
            snprintf(msg, sizeof msg, "%s", ps.error);
        else
            snprintf(msg, sizeof msg, "%s%s%llu malformed rows of metrics.csv skipped", ps.error,
                     ps.error[0] ? "; " : "", (unsigned long long)ps.skipped_rows);
        cb_json_key(j, "summary_error");
        cb_json_string(j, msg);
    }
    cb_json_object_end(j);
    cb_free(edges);
    cb_free(ps.acc);
    cb_free(ps.en);
    cb_free(ps.ed);
}
