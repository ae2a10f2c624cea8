/* analysis/sweep.h - the figures of a collocation sweep (benchmark key `sweep`): one row per
 * point (mode x replicas), written as DIR/sweep.csv, DIR/sweep.json and a terminal table.
 *
 * Definitions (also in docs/outputs.md), per point:
 * - aggregate_qps: one pipeline: its summary throughput_qps. Several: the interference
 *   aggregate_qps over the common window (interference.h), NaN with `unavailable` saying why
 *   when there is none or a pipeline has too few queries in it; each pipeline's throughput_qps
 *   is then its collocated_qps, and its images_per_s its whole run's images per query at that
 *   rate. aggregate_images_per_s: the sum of their images_per_s (NaN unless every pipeline has
 *   one and the aggregate is known).
 * - isolated_qps / isolated_images_per_s: the sum, over the benchmark's pipelines as written
 *   (replicas counted once: they share one baseline), of their isolated baseline throughput.
 * - relative: aggregate / isolated, in images/s when both are known, else in queries/s (the
 *   "x" of a single-pipeline study: 2 copies collocated reaching 1.33x a copy alone);
 *   relative_to "baseline". Without baselines (collocation.baseline: none) and with one
 *   pipeline as written, the same ratio against the aggregate of the same mode's point with
 *   replicas 1 (one copy, alone); relative_to "MODE-x1". Else NaN, relative_to "".
 * - stp, antt, fairness and slowdowns: the point's interference figures (interference.h).
 * Pure functions over borrowed inputs; thread-safe.
 */
#ifndef CB_ANALYSIS_SWEEP_H
#define CB_ANALYSIS_SWEEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "analysis/interference.h"
#include "analysis/summary.h"

#define CB_SWEEP_MAX_PIPELINES 64

typedef struct cb_sweep_pipeline {
    char name[160];
    double qps, images_per_s;  /* images_per_s NaN when the pipeline reports no images */
    double slowdown;           /* NaN without a baseline */
} cb_sweep_pipeline;

typedef enum cb_sweep_status {
    CB_SWEEP_NOT_RUN = 0,      /* the sweep stopped (Ctrl-C) before this point */
    CB_SWEEP_OK = 1,
    CB_SWEEP_FAILED = 2,       /* the run failed or could not start; figures may be partial */
    CB_SWEEP_INTERRUPTED = 3,  /* stopped by Ctrl-C/SIGTERM while it ran; figures are partial */
} cb_sweep_status;

typedef struct cb_sweep_point {
    char mode[16];             /* collocation mode of the point */
    int replicas;              /* the sweep's multiplier (1 when replicas are not swept) */
    char dir[64];              /* relative to the sweep directory: MODE-xN */
    cb_sweep_status status;
    size_t n_pipelines;
    cb_sweep_pipeline pipelines[CB_SWEEP_MAX_PIPELINES];
    double aggregate_qps, aggregate_images_per_s;
    double isolated_qps, isolated_images_per_s;
    double relative;
    char relative_to[32];      /* "baseline", "MODE-x1" or "" */
    double stp, antt, fairness;
    char unavailable[CB_INTERFERENCE_REASON_MAX]; /* why aggregate_qps is NaN; "" otherwise */
    double slowdown_min, slowdown_mean, slowdown_max;
} cb_sweep_point;

/* Sets every figure to NaN and the status to not run. */
void cb_sweep_point_init(cb_sweep_point *pt, const char *mode, int replicas);

/* Fills pt's figures from a collocated run (colo), its baselines (isolated: per pipeline of
 * colo->spec, NULL entries or NULL without; replicas of one pipeline point at the same one)
 * and its interference figures (inter, NULL when not computed). */
int cb_sweep_point_measure(cb_sweep_point *pt, const cb_summary_input *colo,
                           const cb_summary_input *const *isolated, const cb_interference *inter);

/* Without baselines: relative figures against each mode's replicas-1 point, when the benchmark
 * has a single pipeline as written (single_source). */
void cb_sweep_relative_to_x1(cb_sweep_point *pts, size_t n, bool single_source);

int cb_sweep_write_csv(const cb_sweep_point *pts, size_t n, FILE *out);
int cb_sweep_write_json(const char *benchmark, const cb_sweep_point *pts, size_t n, FILE *out);
void cb_sweep_print_table(const cb_sweep_point *pts, size_t n, FILE *out);

const char *cb_sweep_status_name(cb_sweep_status s);

#endif
