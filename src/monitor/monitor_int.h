/* monitor/monitor_int.h - what the monitor's sources (procfs.c, perf.c, nvml.c) share with the
 * sampler core (monitor.c). Internal: not installed, cb__ names only.
 *
 * A source is a small state object plus a sample function called by the sampler thread once per
 * period with the monitor's current sample time; it reports values with cb__mon_emit and
 * complaints with cb__mon_notice (stored for the summary and logged once). Sources never
 * allocate per sample on the steady path and keep their /proc files open (pread at offset 0).
 *
 * Thread-safety: every function here runs on the sampler thread, or on the controlling thread
 * before the sampler starts / after it has been joined. Ownership: sources own their state;
 * strings passed to cb__mon_emit are copied if kept (source and metric names must be literals).
 */
#ifndef CB_MONITOR_MONITOR_INT_H
#define CB_MONITOR_MONITOR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/log.h"
#include "monitor/monitor.h"
#include "monitor/nvml.h"

#define CB_MON_LABEL_MAX 128
#define CB_MON_DEVICE_MAX 32

/* ---- reporting (monitor.c) -------------------------------------------------------------- */

/* One value of one series at the current sample time. source and metric must be string
 * literals (kept by pointer); device ("" host-wide) and label (NULL none) are copied. pid 0 =
 * device-wide row. */
void cb__mon_emit(cb_monitor *m, const char *source, const char *device, pid_t pid,
                  const char *label, const char *metric, double value);

/* A notice: kept for the summary's "notices" and logged (subsystem "monitor") at level. */
void cb__mon_notice(cb_monitor *m, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One value as a source reports it (for cb__monitor_inject). */
typedef struct cb__mon_value {
    const char *source;         /* literal */
    const char *device;         /* "" or NULL host-wide */
    pid_t pid;                  /* 0 = device-wide */
    const char *label;          /* NULL none */
    const char *metric;         /* literal */
    double value;
} cb__mon_value;

/* Test hook: records values[0..n) as one sample taken at t_ns (absolute CLOCK_MONOTONIC ns),
 * exactly as if sources had emitted them (series, metrics.csv rows, memory), and flushes like a
 * sample. Times must not go backwards within a series. Takes the monitor's lock; not counted in
 * the overhead's samples. Tests use it to feed long synthetic series with known answers. */
void cb__monitor_inject(cb_monitor *m, int64_t t_ns, const cb__mon_value *values, size_t n);

/* ---- a bounded cursor parser for /proc text ---------------------------------------------- */

typedef struct cb__cur {
    const char *p, *end;
} cb__cur;

static inline void cb__cur_skip_spaces(cb__cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

/* Parses an unsigned decimal after optional blanks; false (cursor unchanged) if none. */
static inline bool cb__cur_u64(cb__cur *c, uint64_t *out) {
    const char *save = c->p;
    cb__cur_skip_spaces(c);
    uint64_t v = 0;
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        uint64_t d = (uint64_t)(*c->p - '0');
        if (v > (UINT64_MAX - d) / 10u) v = UINT64_MAX; /* saturate */
        else v = v * 10u + d;
        c->p++;
    }
    if (c->p == start) {
        c->p = save;
        return false;
    }
    *out = v;
    return true;
}

/* Skips one blank-separated field. */
static inline void cb__cur_skip_field(cb__cur *c) {
    cb__cur_skip_spaces(c);
    while (c->p < c->end && *c->p != ' ' && *c->p != '\t' && *c->p != '\n') c->p++;
}

/* Moves to the start of the next line; false at the end of the text. */
static inline bool cb__cur_next_line(cb__cur *c) {
    while (c->p < c->end && *c->p != '\n') c->p++;
    if (c->p < c->end) c->p++;
    return c->p < c->end;
}

/* True (cursor after the prefix) if the text at the cursor starts with prefix. */
static inline bool cb__cur_prefix(cb__cur *c, const char *prefix) {
    const char *p = c->p;
    for (; *prefix; prefix++, p++)
        if (p >= c->end || *p != *prefix) return false;
    c->p = p;
    return true;
}

/* Reads a whole /proc file through an open fd from offset 0 into buf (NUL-terminated); the
 * number of bytes, or -errno. */
ssize_t cb__proc_pread(int fd, char *buf, size_t size);

/* ---- procfs sources (procfs.c) ------------------------------------------------------------ */

typedef struct cb__procfs cb__procfs;
int cb__procfs_create(cb__procfs **out, unsigned sources, cb_error *err);
void cb__procfs_sample_host(cb__procfs *s, cb_monitor *m, int64_t t_ns);
void cb__procfs_destroy(cb__procfs *s);

/* One watched process (owned by monitor.c; procfs.c and perf.c keep state in it). */
typedef struct cb__perf_proc cb__perf_proc;
typedef struct cb__mon_proc {
    pid_t pid;
    char label[CB_MON_LABEL_MAX];
    int stat_fd, status_fd, io_fd;
    bool exited;
    bool io_noticed;
    bool have_prev;
    uint64_t prev_ticks;
    int64_t prev_t_ns;
    cb__perf_proc *perf;
} cb__mon_proc;

/* Opens /proc/PID files; CB_ENOENT if the process does not exist. */
int cb__proc_open(cb__mon_proc *p, pid_t pid, const char *label, cb_error *err);
/* Samples one process (emit rows when emit is true; the liveness check always). Returns false
 * when the process has exited (zombie or gone): the caller stops sampling it. */
bool cb__proc_sample(cb__mon_proc *p, cb_monitor *m, int64_t t_ns, bool emit);
void cb__proc_close(cb__mon_proc *p);

/* ---- perf (perf.c) ----------------------------------------------------------------------- */

/* Probes perf_event_open once for this process; on refusal fills reason (for the notice and
 * "unavailable: <reason>") and returns an error. */
int cb__perf_attach(cb__mon_proc *p, char *reason, size_t reason_size);
void cb__perf_sample(cb__mon_proc *p, cb_monitor *m);
void cb__perf_detach(cb__mon_proc *p);

/* ---- gpu (nvml.c) ------------------------------------------------------------------------- */

/* Prepares per-device sampling state (GPM samples, ...); notices for what is missing. */
int cb__nvml_gpu_start(cb_nvml *n, cb_monitor *m);
/* Samples every GPU; procs (n_procs) are the watched processes for per-process rows. */
void cb__nvml_gpu_sample(cb_nvml *n, cb_monitor *m, const cb__mon_proc *procs, size_t n_procs);

#endif
