/* analysis/interference.h - collocation interference: who slowed whom, against isolated
 * baselines measured in the same invocation.
 *
 * Definitions (also in docs/outputs.md):
 * - A pipeline has passed its warm-up at the scheduled time of its first measured query; it has
 *   finished at the end of its last measured ok query. The common window runs from the moment
 *   the LAST pipeline passed its warm-up to the moment the FIRST one finished: the only span in
 *   which every pipeline was running measured load. It exists ("window_overlap") when its end is
 *   after its start; rates are never summed over windows that do not overlap (a pipeline that
 *   ran partly alone would inflate the total).
 * - A query is in the window when it ended ok and its span [scheduled, end] overlaps the window
 *   (a zero-length span: when it lies inside); queries_in_window counts them, a warm-up query
 *   still running in the window included (it did work there: a queued load's first measured
 *   query is scheduled while the last warm-up one runs). Each counts for the fraction of its
 *   span inside the window (progress_in_window, in queries' worth), so a training step longer
 *   than the window still counts for the part of it the window saw.
 * - collocated_qps: a pipeline's progress_in_window over the window's length; aggregate_qps:
 *   their sum. Collocated latency percentiles are over the measured queries in the window,
 *   per-stage service times over the measured stage runs overlapping it. Without a common
 *   window, the whole-run figures are used and every figure below is unavailable.
 * - isolated_qps: the same definition in the baseline run, over its own window (its warm-up end
 *   to its finish, as above): its throughput_qps, except that a warm-up query still running in
 *   that window counts for its part there too. Isolated latency and stage medians: the
 *   baseline's whole measured run (its summary.json).
 * - normalized progress NP = collocated_qps / isolated_qps; slowdown = 1 / NP (2.0 = half
 *   speed); STP = sum of NP (system throughput, in "isolated pipelines' worth"); ANTT = mean of
 *   slowdowns (average normalized turnaround time, for fixed work); fairness = min NP / max NP.
 * - Availability, decided once in cb_interference_compute and printed from there by both the
 *   JSON and the table: a pipeline's slowdown needs the common window, at least
 *   CB_INTERFERENCE_MIN_QUERIES of its queries in it, and as many in its baseline's window;
 *   aggregate_qps needs the window and every pipeline's minimum; STP, ANTT and fairness need
 *   every slowdown. An unavailable figure is NaN (JSON null, table "-") and
 *   `unavailable` (the pipeline's, the block's) says why; "" when nothing is missing (or only
 *   a baseline that was not asked for: "baseline": "none").
 * - percentiles (latency p50/p99, service medians) are exact up to CB_HIST_EXACT_MAX values and
 *   within CB_HIST_REL_ERROR beyond (analysis/hist.h): "percentiles_exact" says whether all were
 *   exact. Means, counts and rates are exact.
 * Records are read in streaming passes (record/records.h), so memory does not grow with them; a
 * record file that cannot be read is CB_EIO with the file named in the result's err.
 * Pure functions over borrowed inputs; thread-safe.
 */
#ifndef CB_ANALYSIS_INTERFERENCE_H
#define CB_ANALYSIS_INTERFERENCE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/json.h"
#include "analysis/summary.h"

/* A pipeline's collocation figures need at least this many of its queries in the common window
 * (and as many in its baseline's window): one query alone gives a rate that is only its own
 * duration, whatever the window, or for an open load a single arrival. */
#define CB_INTERFERENCE_MIN_QUERIES 2
/* Bytes of an `unavailable` reason, its NUL included (longer reasons are cut). */
#define CB_INTERFERENCE_REASON_MAX 512

typedef struct cb_interference_input {
    const char *mode;                        /* collocation mode name */
    const cb_summary_input *collocated;      /* every pipeline, one time base */
    /* Per pipeline of collocated->spec: its isolated run (a one-pipeline summary input), or
     * NULL entries / NULL array without a baseline. */
    const cb_summary_input *const *isolated;
    /* Per pipeline: how its process ended ("exited 0", "killed by signal 9 (Killed)") or NULL
     * (threads mode). */
    const char *const *process_status;
    const int *pids;                         /* per pipeline OS pid, or NULL */
    int64_t barrier_skew_ns;                 /* spread of the processes' start times; -1 = n/a */
    int64_t barrier_max_delay_ns;            /* latest start after the release; -1 = n/a */
    /* Per pipeline: where its baseline is, relative to the run's directory ("baseline/NAME"),
     * or NULL (array or entry) when not given. Replicas of one pipeline share one baseline
     * (run once, as replica 1): the JSON says which run and how many share it. */
    const char *const *baseline_dirs;
} cb_interference_input;

/* Median and mean service time: under time-slicing most runs are untouched and a few absorb
 * whole slices of the other pipeline, so the median can stay flat while the mean doubles;
 * both are reported. */
typedef struct cb_interference_stage {
    int64_t isolated_service_p50_ns, collocated_service_p50_ns; /* -1 = no runs */
    double isolated_service_mean_ns, collocated_service_mean_ns; /* -1 = no runs */
} cb_interference_stage;

typedef struct cb_interference_pipeline {
    size_t queries_in_window;                /* whole run when there is no common window */
    double progress_in_window;               /* queries' worth (fractions of their spans) */
    double isolated_qps, collocated_qps;     /* isolated_qps 0 without a baseline */
    double slowdown;                         /* NaN without a baseline or when unavailable */
    int64_t isolated_p50_ns, isolated_p99_ns, collocated_p50_ns, collocated_p99_ns; /* -1 n/a */
    int64_t warmup_end_ns, finish_ns;        /* absolute; 0 when it measured nothing */
    cb_interference_stage *stages;           /* n_stages entries */
    char unavailable[CB_INTERFERENCE_REASON_MAX]; /* why its slowdown is NaN; "" otherwise */
} cb_interference_pipeline;

typedef struct cb_interference {
    const cb_interference_input *in;
    bool have_baseline;
    bool window_overlap;
    int64_t window_start_ns, window_end_ns;  /* absolute; relative in the JSON */
    double aggregate_qps;                    /* NaN when unavailable */
    double stp, antt, fairness;              /* NaN without a baseline or when unavailable */
    char unavailable[CB_INTERFERENCE_REASON_MAX]; /* why a figure above is NaN; "" otherwise */
    cb_interference_pipeline *pipelines;
    size_t n_pipelines;
    bool exact;                              /* every percentile above is exact */
    cb_error err;                            /* after a failed compute: why */
} cb_interference;

/* CB_OK, CB_ENOMEM or CB_EIO (out->err names the file). cb_interference_fini in every case. */
int cb_interference_compute(const cb_interference_input *in, cb_interference *out);
void cb_interference_fini(cb_interference *r);
/* Writes the key "collocation" and its object. */
void cb_interference_json(const cb_interference *r, cb_json *j);
/* The side-by-side table printed at the end of a collocated run. */
void cb_interference_print_table(const cb_interference *r, FILE *out);

#endif
