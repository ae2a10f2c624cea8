/* core/schedule.h - open-loop arrival schedules, generated whole before timing starts.
 *
 * Offsets are nanoseconds from the pipeline's start, non-decreasing. Deterministic for a seed.
 * poisson: exponential gaps of mean 1/rate. constant: gaps of exactly 1/rate (offset i = i/rate,
 * computed without accumulated rounding). gamma: gamma-distributed gaps with shape = burstiness
 * and scale = 1/(rate*burstiness) (mean 1/rate; burstiness 1 is Poisson, < 1 burstier), as
 * vLLM's benchmark defines it. replay: times from a CSV file. Pure functions, thread-safe.
 */
#ifndef CB_CORE_SCHEDULE_H
#define CB_CORE_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "core/rng.h"
#include "core/spec.h"

/* Gamma(shape, 1) variate (Marsaglia-Tsang; shape < 1 by the boost u^(1/shape)). */
double cb_rng_gamma(cb_rng *r, double shape);

/* Generates the schedule for an open-loop loadgen: max_queries arrivals when > 0, else every
 * arrival before timeout_ns. Fails (CB_ECONFIG) past 100 million arrivals. *offsets_ns is
 * cb_malloc'd and owned by the caller. For replay, reads lg->file. */
int cb_schedule_generate(const cb_loadgen_spec *lg, int64_t **offsets_ns, size_t *n,
                         cb_error *err);

/* Reads a replay CSV: an optional header line; the first column is the arrival time, in
 * seconds (float) unless the header names it `*_ns` / `*_us` / `*_ms` (then that unit).
 * Times are made relative to the first one and must not decrease. Blank lines and lines
 * starting with '#' are skipped. Errors name file:line (FILE:1:1 for the file as a whole: it
 * cannot be opened, is a directory, holds no time). max_n (> 0) bounds the count read. With
 * offsets_ns NULL the file is only checked (nothing is allocated) and *n counts its times:
 * `validate` reads every replay file so. */
int cb_schedule_read_replay(const char *path, size_t max_n, int64_t **offsets_ns, size_t *n,
                            cb_error *err);

#endif
