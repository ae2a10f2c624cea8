/* monitor/perf.c - the perf source: hardware counters (cycles, instructions, LLC misses) of each
 * watched process through perf_event_open(2).
 *
 * Design: one counter per event and process (pid, cpu = -1, inherit = 1 so threads and children
 * created later are counted, enabled at once). Counters are not grouped: the kernel rejects
 * reading an inherited group on older kernels. Each read is scaled by time_enabled/time_running
 * when the PMU multiplexes. Rows are per-sample deltas plus ipc = d(instructions)/d(cycles).
 * The kernel decides what is allowed: kernel-mode counting is tried first, then user-only
 * (exclude_kernel, what perf_event_paranoid=2 permits). If cycles cannot be opened the source is
 * unavailable, with the errno and the paranoid level as the reason. LLC misses fall back from
 * the generic cache-miss event to the LL read-miss cache event, and are left out if neither
 * exists.
 *
 * Thread-safety: a process's counters are used by one thread at a time (the sampler).
 * Ownership: the cb__perf_proc belongs to its cb__mon_proc and is freed by cb__perf_detach.
 */
#include "monitor/monitor_int.h"

#include <errno.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/alloc.h"

enum { CB__PERF_CYCLES, CB__PERF_INSTR, CB__PERF_LLC, CB__PERF_N };

struct cb__perf_proc {
    int fd[CB__PERF_N];
    double prev[CB__PERF_N];
    bool have_prev;
};

static int cb__perf_open(uint32_t type, uint64_t config, pid_t pid, int exclude_kernel) {
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.type = type;
    a.config = config;
    a.disabled = 0;
    a.inherit = 1;
    a.exclude_kernel = (unsigned)exclude_kernel;
    a.exclude_hv = 1;
    a.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
    long fd = syscall(SYS_perf_event_open, &a, pid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    return fd < 0 ? -errno : (int)fd;
}

static int cb__paranoid(void) {
    char buf[32];
    FILE *f = fopen("/proc/sys/kernel/perf_event_paranoid", "r");
    if (!f) return -100;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = buf;
    int neg = 0;
    if (*p == '-') neg = 1, p++;
    cb__cur c = {p, buf + n};
    uint64_t v;
    if (!cb__cur_u64(&c, &v) || v > 100) return -100;
    return neg ? -(int)v : (int)v;
}

int cb__perf_attach(cb__mon_proc *p, char *reason, size_t reason_size) {
    cb__perf_proc *pp = cb_calloc(1, sizeof *pp);
    if (!pp) {
        snprintf(reason, reason_size, "out of memory");
        return CB_ENOMEM;
    }
    for (int i = 0; i < CB__PERF_N; i++) pp->fd[i] = -1;
    int exclude_kernel = 0;
    int fd = cb__perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES, p->pid, 0);
    if (fd == -EACCES || fd == -EPERM) {
        exclude_kernel = 1;
        fd = cb__perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES, p->pid, 1);
    }
    if (fd < 0) {
        int par = cb__paranoid();
        const char *why = fd == -ENOENT || fd == -EOPNOTSUPP || fd == -ENODEV
                              ? "no hardware PMU for this event (common in VMs)"
                          : fd == -EACCES || fd == -EPERM ? "not permitted"
                                                         : "refused by the kernel";
        if (par == -100)
            snprintf(reason, reason_size, "perf_event_open: %s (%s); perf_event_paranoid unknown",
                     strerror(-fd), why);
        else
            snprintf(reason, reason_size, "perf_event_open: %s (%s); perf_event_paranoid=%d",
                     strerror(-fd), why, par);
        cb_free(pp);
        return -fd == ESRCH ? CB_ENOENT : CB_EUNSUPPORTED;
    }
    pp->fd[CB__PERF_CYCLES] = fd;
    pp->fd[CB__PERF_INSTR] =
        cb__perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS, p->pid, exclude_kernel);
    fd = cb__perf_open(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES, p->pid, exclude_kernel);
    if (fd < 0)
        fd = cb__perf_open(PERF_TYPE_HW_CACHE,
                           PERF_COUNT_HW_CACHE_LL | (PERF_COUNT_HW_CACHE_OP_READ << 8) |
                               (PERF_COUNT_HW_CACHE_RESULT_MISS << 16),
                           p->pid, exclude_kernel);
    pp->fd[CB__PERF_LLC] = fd;
    for (int i = 0; i < CB__PERF_N; i++)
        if (pp->fd[i] < 0) pp->fd[i] = -1;
    p->perf = pp;
    return CB_OK;
}

/* Scaled counter value; negative when unreadable. */
static double cb__perf_read(int fd) {
    uint64_t v[3];
    ssize_t n = read(fd, v, sizeof v);
    if (n != (ssize_t)sizeof v) return -1.0;
    if (v[2] == 0) return v[1] == 0 ? (double)v[0] : -1.0; /* never scheduled: no estimate */
    if (v[2] >= v[1]) return (double)v[0];
    return (double)v[0] * ((double)v[1] / (double)v[2]);
}

void cb__perf_sample(cb__mon_proc *p, cb_monitor *m) {
    cb__perf_proc *pp = p->perf;
    if (!pp) return;
    static const char *const names[CB__PERF_N] = {"cycles", "instructions", "llc_misses"};
    double now[CB__PERF_N], d[CB__PERF_N];
    bool ok[CB__PERF_N];
    for (int i = 0; i < CB__PERF_N; i++) {
        now[i] = pp->fd[i] >= 0 ? cb__perf_read(pp->fd[i]) : -1.0;
        ok[i] = now[i] >= 0;
        d[i] = ok[i] && now[i] >= pp->prev[i] ? now[i] - pp->prev[i] : 0.0;
    }
    if (pp->have_prev) {
        for (int i = 0; i < CB__PERF_N; i++)
            if (ok[i]) cb__mon_emit(m, "perf", "", p->pid, p->label, names[i], d[i]);
        if (ok[CB__PERF_CYCLES] && ok[CB__PERF_INSTR] && d[CB__PERF_CYCLES] > 0)
            cb__mon_emit(m, "perf", "", p->pid, p->label, "ipc",
                         d[CB__PERF_INSTR] / d[CB__PERF_CYCLES]);
    }
    for (int i = 0; i < CB__PERF_N; i++)
        if (ok[i]) pp->prev[i] = now[i];
    pp->have_prev = true;
}

void cb__perf_detach(cb__mon_proc *p) {
    if (!p->perf) return;
    for (int i = 0; i < CB__PERF_N; i++)
        if (p->perf->fd[i] >= 0) close(p->perf->fd[i]);
    cb_free(p->perf);
    p->perf = NULL;
}
