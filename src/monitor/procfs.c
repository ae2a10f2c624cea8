/* monitor/procfs.c - the cpu, memory and process sources: /proc/stat, /proc/meminfo and
 * /proc/PID/{stat,status,io}.
 *
 * Design: every file is opened once and re-read with pread(fd, buf, size, 0), which makes the
 * kernel regenerate it without an open/close per sample. Text is parsed with the bounded cursor
 * of monitor_int.h (no atoi/sscanf; a malformed line is skipped, never trusted). CPU figures are
 * deltas of the jiffy counters between consecutive samples, so the first sample only sets the
 * baseline. A process is "exited" as soon as it is a zombie or its /proc entry is gone.
 *
 * Thread-safety: a cb__procfs and each cb__mon_proc are used by one thread at a time (the
 * sampler). Ownership: the cb__procfs owns its fds and buffers; a cb__mon_proc's fds belong to
 * the process entry and are closed by cb__proc_close.
 */
#include "monitor/monitor_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"

#define CB_PROC_STAT_MAX_BYTES (8u * 1024u * 1024u) /* /proc/stat buffer bound (many cores) */
#define CB_PROC_MAX_CPUS 8192

typedef struct cb__cpu_times {
    uint64_t user, nice, system, idle, iowait, irq, softirq, steal;
    bool valid;
} cb__cpu_times;

struct cb__procfs {
    unsigned sources;
    int stat_fd, meminfo_fd;
    char *buf;
    size_t buf_size;
    cb__cpu_times total;
    cb__cpu_times *cores; /* indexed by N of "cpuN" */
    size_t n_cores;
    char (*core_names)[CB_MON_DEVICE_MAX];
    bool stat_noticed, meminfo_noticed;
    long page_bytes;
    long ticks_hz;
};

ssize_t cb__proc_pread(int fd, char *buf, size_t size) {
    if (size == 0) return -EINVAL;
    size_t off = 0;
    for (;;) {
        ssize_t k = pread(fd, buf + off, size - 1 - off, (off_t)off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (k == 0) break;
        off += (size_t)k;
        if (off >= size - 1) break;
    }
    buf[off] = '\0';
    return (ssize_t)off;
}

int cb__procfs_create(cb__procfs **out, unsigned sources, cb_error *err) {
    *out = NULL;
    cb__procfs *s = cb_calloc(1, sizeof *s);
    if (!s) return cb_error_set(err, CB_ENOMEM, "monitor: out of memory");
    s->sources = sources;
    s->stat_fd = s->meminfo_fd = -1;
    s->buf_size = 64u * 1024u;
    s->buf = cb_malloc(s->buf_size);
    s->page_bytes = sysconf(_SC_PAGESIZE);
    s->ticks_hz = sysconf(_SC_CLK_TCK);
    if (s->page_bytes <= 0) s->page_bytes = 4096;
    if (s->ticks_hz <= 0) s->ticks_hz = 100;
    if (!s->buf) {
        cb__procfs_destroy(s);
        return cb_error_set(err, CB_ENOMEM, "monitor: out of memory");
    }
    if (sources & CB_MON_CPU) {
        s->stat_fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
        if (s->stat_fd < 0) {
            int e = errno;
            cb__procfs_destroy(s);
            return cb_error_set(err, CB_EIO, "monitor: cpu: /proc/stat: %s", strerror(e));
        }
    }
    if (sources & CB_MON_MEMORY) {
        s->meminfo_fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
        if (s->meminfo_fd < 0) {
            int e = errno;
            cb__procfs_destroy(s);
            return cb_error_set(err, CB_EIO, "monitor: memory: /proc/meminfo: %s", strerror(e));
        }
    }
    *out = s;
    return CB_OK;
}

void cb__procfs_destroy(cb__procfs *s) {
    if (!s) return;
    if (s->stat_fd >= 0) close(s->stat_fd);
    if (s->meminfo_fd >= 0) close(s->meminfo_fd);
    cb_free(s->buf);
    cb_free(s->cores);
    cb_free(s->core_names);
    cb_free(s);
}

/* ---- cpu --------------------------------------------------------------------------------- */

static bool cb__parse_cpu_times(cb__cur *c, cb__cpu_times *t) {
    uint64_t v[8] = {0};
    int n = 0;
    while (n < 8 && cb__cur_u64(c, &v[n])) n++;
    if (n < 4) return false; /* user nice system idle at least */
    t->user = v[0];
    t->nice = v[1];
    t->system = v[2];
    t->idle = v[3];
    t->iowait = v[4];
    t->irq = v[5];
    t->softirq = v[6];
    t->steal = v[7];
    t->valid = true;
    return true;
}

static uint64_t cb__cpu_sum(const cb__cpu_times *t) {
    return t->user + t->nice + t->system + t->idle + t->iowait + t->irq + t->softirq + t->steal;
}

static double cb__pct(uint64_t part, uint64_t whole) {
    double p = whole ? 100.0 * (double)part / (double)whole : 0.0;
    return p < 0 ? 0 : p > 100 ? 100 : p;
}

/* Counters can step back (a core going offline and back): treat as a new baseline. */
static uint64_t cb__delta(uint64_t now, uint64_t prev) { return now >= prev ? now - prev : 0; }

static bool cb__ensure_cores(cb__procfs *s, size_t idx) {
    if (idx < s->n_cores) return true;
    if (idx >= CB_PROC_MAX_CPUS) return false;
    size_t n = s->n_cores ? s->n_cores : 8;
    while (n <= idx) n *= 2;
    if (n > CB_PROC_MAX_CPUS) n = CB_PROC_MAX_CPUS;
    cb__cpu_times *c = cb_realloc(s->cores, n * sizeof *c);
    if (!c) return false;
    s->cores = c;
    char(*names)[CB_MON_DEVICE_MAX] = cb_realloc(s->core_names, n * sizeof *names);
    if (!names) return false;
    s->core_names = names;
    for (size_t i = s->n_cores; i < n; i++) {
        memset(&s->cores[i], 0, sizeof s->cores[i]);
        snprintf(s->core_names[i], sizeof s->core_names[i], "cpu%zu", i);
    }
    s->n_cores = n;
    return true;
}

static void cb__sample_cpu(cb__procfs *s, cb_monitor *m) {
    ssize_t n;
    for (;;) {
        n = cb__proc_pread(s->stat_fd, s->buf, s->buf_size);
        if (n < 0) {
            if (!s->stat_noticed)
                cb__mon_notice(m, CB_LOG_WARN, "cpu: /proc/stat: %s", strerror((int)-n));
            s->stat_noticed = true;
            return;
        }
        /* The cpu lines come first; grow the buffer until the first non-cpu line fits. */
        if ((size_t)n + 1 < s->buf_size || s->buf_size >= CB_PROC_STAT_MAX_BYTES) break;
        const char *tail = strstr(s->buf, "\nintr");
        if (!tail) tail = strstr(s->buf, "\nctxt");
        if (tail) break;
        char *nb = cb_realloc(s->buf, s->buf_size * 2);
        if (!nb) break;
        s->buf = nb;
        s->buf_size *= 2;
    }
    cb__cur c = {s->buf, s->buf + n};
    do {
        if (!cb__cur_prefix(&c, "cpu")) break; /* cpu lines are first and contiguous */
        if (*c.p == ' ') {
            cb__cpu_times now = {0};
            if (!cb__parse_cpu_times(&c, &now)) continue;
            cb__cpu_times *prev = &s->total;
            if (prev->valid) {
                uint64_t dt = cb__delta(cb__cpu_sum(&now), cb__cpu_sum(prev));
                uint64_t didle = cb__delta(now.idle + now.iowait, prev->idle + prev->iowait);
                if (dt > 0) {
                    cb__mon_emit(m, "cpu", "", 0, NULL, "util_percent",
                                 100.0 - cb__pct(didle < dt ? didle : dt, dt));
                    cb__mon_emit(m, "cpu", "", 0, NULL, "user_percent",
                                 cb__pct(cb__delta(now.user + now.nice, prev->user + prev->nice), dt));
                    cb__mon_emit(m, "cpu", "", 0, NULL, "system_percent",
                                 cb__pct(cb__delta(now.system + now.irq + now.softirq,
                                                   prev->system + prev->irq + prev->softirq),
                                         dt));
                    cb__mon_emit(m, "cpu", "", 0, NULL, "iowait_percent",
                                 cb__pct(cb__delta(now.iowait, prev->iowait), dt));
                }
            }
            *prev = now;
        } else {
            uint64_t idx;
            if (!cb__cur_u64(&c, &idx) || !cb__ensure_cores(s, (size_t)idx)) continue;
            cb__cpu_times now = {0};
            if (!cb__parse_cpu_times(&c, &now)) continue;
            cb__cpu_times *prev = &s->cores[idx];
            if (prev->valid) {
                uint64_t dt = cb__delta(cb__cpu_sum(&now), cb__cpu_sum(prev));
                uint64_t didle = cb__delta(now.idle + now.iowait, prev->idle + prev->iowait);
                if (dt > 0)
                    cb__mon_emit(m, "cpu", s->core_names[idx], 0, NULL, "util_percent",
                                 100.0 - cb__pct(didle < dt ? didle : dt, dt));
            }
            *prev = now;
        }
    } while (cb__cur_next_line(&c));
}

/* ---- memory ------------------------------------------------------------------------------ */

static void cb__sample_memory(cb__procfs *s, cb_monitor *m) {
    char buf[8192];
    ssize_t n = cb__proc_pread(s->meminfo_fd, buf, sizeof buf);
    if (n < 0) {
        if (!s->meminfo_noticed)
            cb__mon_notice(m, CB_LOG_WARN, "memory: /proc/meminfo: %s", strerror((int)-n));
        s->meminfo_noticed = true;
        return;
    }
    uint64_t total = 0, avail = 0, cached = 0, swap_total = 0, swap_free = 0;
    unsigned seen = 0;
    cb__cur c = {buf, buf + n};
    do {
        uint64_t *dst = NULL;
        unsigned bit = 0;
        if (cb__cur_prefix(&c, "MemTotal:")) dst = &total, bit = 1;
        else if (cb__cur_prefix(&c, "MemAvailable:")) dst = &avail, bit = 2;
        else if (cb__cur_prefix(&c, "Cached:")) dst = &cached, bit = 4;
        else if (cb__cur_prefix(&c, "SwapTotal:")) dst = &swap_total, bit = 8;
        else if (cb__cur_prefix(&c, "SwapFree:")) dst = &swap_free, bit = 16;
        if (dst && cb__cur_u64(&c, dst)) {
            *dst *= 1024u; /* kB */
            seen |= bit;
        }
    } while (seen != 31 && cb__cur_next_line(&c));
    if (!(seen & 1)) return;
    cb__mon_emit(m, "memory", "", 0, NULL, "total_bytes", (double)total);
    if (seen & 2) {
        cb__mon_emit(m, "memory", "", 0, NULL, "available_bytes", (double)avail);
        cb__mon_emit(m, "memory", "", 0, NULL, "used_bytes",
                     (double)(total > avail ? total - avail : 0));
    }
    if (seen & 4) cb__mon_emit(m, "memory", "", 0, NULL, "cached_bytes", (double)cached);
    if ((seen & 24) == 24)
        cb__mon_emit(m, "memory", "", 0, NULL, "swap_used_bytes",
                     (double)(swap_total > swap_free ? swap_total - swap_free : 0));
}

void cb__procfs_sample_host(cb__procfs *s, cb_monitor *m, int64_t t_ns) {
    (void)t_ns;
    if (s->stat_fd >= 0) cb__sample_cpu(s, m);
    if (s->meminfo_fd >= 0) cb__sample_memory(s, m);
}

/* ---- processes --------------------------------------------------------------------------- */

static int cb__open_pid_file(pid_t pid, const char *name) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    return open(path, O_RDONLY | O_CLOEXEC);
}

int cb__proc_open(cb__mon_proc *p, pid_t pid, const char *label, cb_error *err) {
    memset(p, 0, sizeof *p);
    p->pid = pid;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->status_fd = p->io_fd = -1;
    p->stat_fd = cb__open_pid_file(pid, "stat");
    if (p->stat_fd < 0)
        return cb_error_set(err, CB_ENOENT, "monitor: process %d: cannot watch: %s", (int)pid,
                            strerror(errno));
    p->status_fd = cb__open_pid_file(pid, "status");
    p->io_fd = cb__open_pid_file(pid, "io"); /* may be refused (other user): rows skipped */
    return CB_OK;
}

void cb__proc_close(cb__mon_proc *p) {
    if (p->stat_fd >= 0) close(p->stat_fd);
    if (p->status_fd >= 0) close(p->status_fd);
    if (p->io_fd >= 0) close(p->io_fd);
    p->stat_fd = p->status_fd = p->io_fd = -1;
}

bool cb__proc_sample(cb__mon_proc *p, cb_monitor *m, int64_t t_ns, bool emit) {
    char buf[2048];
    if (p->stat_fd < 0) return false;
    ssize_t n = cb__proc_pread(p->stat_fd, buf, sizeof buf);
    if (n <= 0) return false; /* ESRCH: gone */
    /* "pid (comm) S ppid ..." - comm may contain anything, so parse after the last ')'. */
    const char *rp = strrchr(buf, ')');
    if (!rp) return false;
    cb__cur c = {rp + 1, buf + n};
    cb__cur_skip_spaces(&c);
    char state = c.p < c.end ? *c.p : '?';
    if (state == 'Z' || state == 'X' || state == 'x') return false;
    if (!emit) return true;
    /* Fields after the state (field 3): 4 ppid ... 14 utime 15 stime ... 20 num_threads ...
     * 24 rss (pages). */
    cb__cur_skip_field(&c); /* state */
    uint64_t f[22] = {0};   /* f[k] = field k+3 */
    size_t got = 1;
    for (; got < 22; got++) {
        cb__cur_skip_spaces(&c);
        if (c.p < c.end && *c.p == '-') c.p++; /* priority and nice may be negative */
        if (!cb__cur_u64(&c, &f[got])) break;
    }
    if (got < 22) return true; /* malformed: skip this sample */
    uint64_t utime = f[14 - 3], stime = f[15 - 3], threads = f[20 - 3], rss_pages = f[24 - 3];
    uint64_t ticks = utime + stime;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0) hz = 100;
    if (p->have_prev && t_ns > p->prev_t_ns) {
        double cpu_s = (double)cb__delta(ticks, p->prev_ticks) / (double)hz;
        double wall_s = (double)(t_ns - p->prev_t_ns) / 1e9;
        cb__mon_emit(m, "process", "", p->pid, p->label, "cpu_percent", 100.0 * cpu_s / wall_s);
    }
    p->prev_ticks = ticks;
    p->prev_t_ns = t_ns;
    p->have_prev = true;
    long page = sysconf(_SC_PAGESIZE);
    cb__mon_emit(m, "process", "", p->pid, p->label, "rss_bytes",
                 (double)rss_pages * (double)(page > 0 ? page : 4096));
    cb__mon_emit(m, "process", "", p->pid, p->label, "threads", (double)threads);

    if (p->status_fd >= 0) {
        n = cb__proc_pread(p->status_fd, buf, sizeof buf);
        if (n > 0) {
            uint64_t vol = 0, invol = 0;
            unsigned seen = 0;
            c = (cb__cur){buf, buf + n};
            do {
                if (cb__cur_prefix(&c, "voluntary_ctxt_switches:") && cb__cur_u64(&c, &vol))
                    seen |= 1;
                else if (cb__cur_prefix(&c, "nonvoluntary_ctxt_switches:") &&
                         cb__cur_u64(&c, &invol))
                    seen |= 2;
            } while (seen != 3 && cb__cur_next_line(&c));
            if (seen & 1)
                cb__mon_emit(m, "process", "", p->pid, p->label, "voluntary_ctx_switches",
                             (double)vol);
            if (seen & 2)
                cb__mon_emit(m, "process", "", p->pid, p->label, "involuntary_ctx_switches",
                             (double)invol);
        }
    }
    if (p->io_fd >= 0) {
        n = cb__proc_pread(p->io_fd, buf, sizeof buf);
        if (n < 0) {
            if (!p->io_noticed)
                cb__mon_notice(m, CB_LOG_INFO,
                               "process %d: /proc/%d/io: %s; read_bytes/write_bytes not sampled",
                               (int)p->pid, (int)p->pid, strerror((int)-n));
            p->io_noticed = true;
            close(p->io_fd);
            p->io_fd = -1;
        } else {
            uint64_t rd = 0, wr = 0;
            unsigned seen = 0;
            c = (cb__cur){buf, buf + n};
            do {
                if (cb__cur_prefix(&c, "read_bytes:") && cb__cur_u64(&c, &rd)) seen |= 1;
                else if (cb__cur_prefix(&c, "write_bytes:") && cb__cur_u64(&c, &wr)) seen |= 2;
            } while (seen != 3 && cb__cur_next_line(&c));
            if (seen & 1)
                cb__mon_emit(m, "process", "", p->pid, p->label, "read_bytes", (double)rd);
            if (seen & 2)
                cb__mon_emit(m, "process", "", p->pid, p->label, "write_bytes", (double)wr);
        }
    } else if (!p->io_noticed) {
        cb__mon_notice(m, CB_LOG_INFO,
                       "process %d: /proc/%d/io unreadable; read_bytes/write_bytes not sampled",
                       (int)p->pid, (int)p->pid);
        p->io_noticed = true;
    }
    return true;
}
