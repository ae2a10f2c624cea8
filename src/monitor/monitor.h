/* monitor/monitor.h - resource monitors: a sampler thread that reads /proc, NVML and perf
 * counters on absolute deadlines and streams them to metrics.csv.
 *
 * One cb_monitor is the context object of a monitoring session (a benchmark phase, or
 * `colobench monitor`). It owns one thread (`cb-sampler`) and the metrics.csv file; there is no
 * other state, so two monitors can live in one process (tests do this).
 *
 * metrics.csv: header `t_ns,source,device,pid,metric,value`, one row per metric per sample.
 *   t_ns    sample time on CLOCK_MONOTONIC, relative to the run's t0 (cb_monitor_set_t0); rows
 *           sampled before t0 is known are held in memory (at most 2^22 of them) and written once
 *           it is set (negative t_ns: preparation), or relative to the monitor's start if t0 is
 *           never set.
 *   source  cpu | memory | process | gpu | perf
 *   device  "" for host-wide rows, "cpuN" for per-core rows, "gpuN" / "gpuN/migM" for GPUs
 *   pid     "" for device-wide rows, the process id for process/perf/per-process GPU rows
 *   metric  snake_case with its unit in the name (util_percent, rss_bytes, power_watts, ...)
 *   value   integers exactly, other values as the shortest text that reads back to the same
 *           double (so the summary computed from the file equals one computed from the samples)
 * The file is created without following a symbolic link (an existing entry is removed first)
 * and is valid CSV up to the last flush at every moment (flushed every sample). A write error
 * (a full disk) stops the file at its last complete row; sampling goes on in memory and
 * cb_monitor_stop reports the error.
 *
 * Memory is flat in the run's length: no per-sample history is kept. The summary
 * (cb_monitor_summary_json) streams metrics.csv back at the end. Without a file (out_dir NULL),
 * or after the file failed, the most recent opts.memory_samples_max samples are kept in memory
 * instead, and the summary covers those (plus the file's rows).
 *
 * Sources (CB_MON_*, named in core/monitor_sources.def): cpu (/proc/stat: total and per-core
 * utilization), memory (/proc/meminfo), process (/proc/PID/{stat,status,io} of every process
 * added with cb_monitor_add_process), gpu (NVML through dlopen: see monitor/nvml.h), perf
 * (perf_event_open per added process: cycles, instructions, LLC misses; "unavailable" where the
 * kernel refuses). A source that cannot work here (no NVML, no GPU, perf refused) logs one clear
 * notice and the others go on.
 *
 * Thread-safety: create/set_t0/add_process/stop/summary from one controlling thread (add_process
 * may race with the sampler: it takes the monitor's lock). Ownership: opts strings are copied.
 */
#ifndef CB_MONITOR_MONITOR_H
#define CB_MONITOR_MONITOR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <stddef.h>

#include "analysis/json.h"
#include "colobench/error.h"
#include "core/log.h"
#include "core/monitor_sources.h" /* CB_MON_* bits, cb_monitor_source_bit/_name */

typedef struct cb_monitor cb_monitor;

typedef struct cb_monitor_opts {
    int64_t period_ns;          /* sampling period; 0 = 100 ms */
    unsigned sources;           /* CB_MON_* bits */
    const char *out_dir;        /* metrics.csv is created here; NULL = memory only */
    const char *nvml_library;   /* NULL = "libnvidia-ml.so.1" */
    /* false when per-process GPU figures cannot be attributed to pipelines (MPS, MIG): the
     * summary then says "not attributable" for them instead of copying device values. */
    bool gpu_per_process_attributable;
    const cb_logger *log;       /* NULL = stderr at WARN */
    /* Samples kept in memory for the summary when there is no metrics.csv (out_dir NULL) or it
     * failed: the most recent ones, at most this many (24 bytes each); 0 = 262144 (6 MiB).
     * Clamped to [16, 2^24]. */
    size_t memory_samples_max;
} cb_monitor_opts;
#define CB_MONITOR_OPTS_DEFAULT                                                                    \
    {0, CB_MON_CPU | CB_MON_MEMORY | CB_MON_PROCESS, NULL, NULL, true, NULL, 0}

/* Creates metrics.csv (removing an existing entry of that name, never following a symbolic
 * link; header written), loads NVML if asked for, takes a first sample and starts the sampler
 * thread. */
int cb_monitor_create(const cb_monitor_opts *opts, cb_monitor **out, cb_error *err);

/* The origin of the t_ns column (absolute CLOCK_MONOTONIC ns). Call once. */
void cb_monitor_set_t0(cb_monitor *m, int64_t t0_ns);

/* Watches process pid (process and perf sources, per-process GPU rows), labelled with the
 * pipeline(s) it runs: "a", or "a+b" for threads that share one process. Safe to call while the
 * sampler runs. Returns CB_OK, or an error if the process cannot be watched (it is then skipped). */
int cb_monitor_add_process(cb_monitor *m, pid_t pid, const char *label);

/* Takes a last sample, stops the thread, flushes metrics.csv and closes its writing descriptor
 * (a read-only use of the file stays open until destroy, for the summary). Returns the first
 * write error of metrics.csv, if any ("monitor: metrics.csv: No space left on device ..."): the
 * file then ends at its last complete row. Idempotent. */
int cb_monitor_stop(cb_monitor *m, cb_error *err);

/* A named time window (absolute CLOCK_MONOTONIC ns) for the summary. */
typedef struct cb_monitor_window {
    const char *name;           /* pipeline name, or NULL for the measurement window */
    int64_t start_ns, end_ns;
} cb_monitor_window;

/* Writes the value of the summary.json key "monitors" (after cb_monitor_stop): the period,
 * sources and their availability notices, the monitor's own CPU cost
 * ({cpu_ns, wall_ns, percent_of_core}), and for every metric series (source, device, pid,
 * label, metric) its mean and max over windows[0] (the measurement window); GPU energy as
 * joules over windows[0] and over each further (pipeline) window; per-process GPU series as
 * "not attributable" when the options say so.
 * The figures come from one pass over metrics.csv (then the samples kept in memory, if any),
 * so this reads the file and allocates O(series + energy series x windows), freed on return.
 * If the pass cannot complete (read error, out of memory), "summary_error" says why. */
void cb_monitor_summary_json(const cb_monitor *m, const cb_monitor_window *windows,
                             size_t n_windows, cb_json *j);

/* The sampler thread's CPU time and the monitor's wall time so far (or at stop). */
void cb_monitor_overhead(const cb_monitor *m, int64_t *cpu_ns, int64_t *wall_ns);

/* Bytes of memory the monitor holds now (its own allocations: series table, buffers, samples
 * kept in memory; not the sources' fixed state nor the summary's transient pass). Flat in the
 * run's length: it grows with the number of series, never with the number of samples (without
 * a file, up to memory_samples_max samples). Takes the monitor's lock; any time. */
size_t cb_monitor_bytes(cb_monitor *m);

void cb_monitor_destroy(cb_monitor *m); /* NULL is a no-op; stops first */

#endif
