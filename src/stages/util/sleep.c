/* stages/util/sleep.c - util.sleep: sleeps a fixed or random time per query.
 *
 * What: models latency that does not use the CPU (I/O, a remote call, a device wait). The time
 * is `duration_us` (fixed), or drawn per query from an exponential or lognormal distribution
 * whose MEAN is `duration_us`. For the lognormal, ln(T) ~ N(mu, sigma^2) with
 * mu = ln(mean) - sigma^2 / 2, since E[T] = exp(mu + sigma^2 / 2); sigma sets the tail
 * (0.5: p99 ~ 2.6x the median; 1.0: ~ 10x).
 *
 * Design: the deadline is absolute (start + drawn time, on the host clock, which is
 * CLOCK_MONOTONIC) and the stage sleeps with host->wait_until, so a stop, a timeout or a failure
 * in the pipeline cancels the sleep at once (the query ends cancelled); with an older host it
 * falls back to clock_nanosleep(TIMER_ABSTIME), resuming after a signal without drifting. The
 * kernel's timer slack (50 us by default for normal threads) means
 * a sleep ends up to that much late: the stage never returns early, and the recorded stage time
 * is the truth to analyse. Draws come from a cb_rng seeded by the instance's seed, so a run is
 * reproducible and workers draw independent sequences.
 *
 * Thread-safety: one instance per worker; the rng is private to the instance. Ownership: the
 * query is borrowed and not changed. cb__util_sleep_draw_ns (a test hook, see util.h) draws the
 * next duration exactly as run() does, without sleeping.
 */
#include <errno.h>
#include <math.h>
#include <time.h>

#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/util/util.h"

enum { P_DISTRIBUTION, P_DURATION_US, P_SIGMA, P_COUNT };
enum { DIST_FIXED, DIST_EXPONENTIAL, DIST_LOGNORMAL };

static const cb_param_def cb_sleep_params[P_COUNT] = {
    [P_DISTRIBUTION] = {"distribution", CB_PARAM_ENUM, "fixed", CB_PARAM_UNBOUNDED,
                        "fixed|exponential|lognormal", "distribution of the sleep time"},
    [P_DURATION_US] = {"duration_us", CB_PARAM_FLOAT, "1000", 0, 3.6e9, NULL,
                       "sleep time (fixed) or its mean (exponential, lognormal), in microseconds"},
    [P_SIGMA] = {"sigma", CB_PARAM_FLOAT, "0.5", 0, 10, NULL,
                 "lognormal shape: standard deviation of ln(time), dimensionless"},
};

typedef struct cb_sleep_state {
    const cb_host *host;
    int dist;
    double mean_ns;
    double sigma, mu; /* lognormal: ln(T) ~ N(mu, sigma^2), mu chosen so E[T] = mean_ns */
    cb_rng rng;
} cb_sleep_state;

static int cb_sleep_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_sleep_state *s = state;
    s->host = args->host;
    s->dist = (int)args->values[P_DISTRIBUTION].i;
    s->mean_ns = args->values[P_DURATION_US].f * 1e3;
    s->sigma = args->values[P_SIGMA].f;
    s->mu = s->mean_ns > 0 ? log(s->mean_ns) - s->sigma * s->sigma / 2 : 0;
    cb_rng_seed(&s->rng, args->seed);
    return CB_OK;
}

/* Next sleep time in ns, capped at 2^62 so the deadline cannot overflow. */
int64_t cb__util_sleep_draw_ns(void *state) {
    cb_sleep_state *s = state;
    double d = s->mean_ns;
    if (s->mean_ns <= 0) return 0;
    if (s->dist == DIST_EXPONENTIAL) d = cb_rng_exponential(&s->rng, s->mean_ns);
    else if (s->dist == DIST_LOGNORMAL) d = exp(s->mu + s->sigma * cb_rng_normal(&s->rng));
    if (!(d < 4.6e18)) return (int64_t)1 << 62;
    return (int64_t)(d + 0.5);
}

static int cb_sleep_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_sleep_state *s = state;
    int64_t d = cb__util_sleep_draw_ns(s);
    if (d <= 0) return CB_OK;
    int64_t t = s->host->now_ns() + d;
    int (*wait_until)(cb_run_ctx *, int64_t) = cb_util_host_wait_until(s->host);
    if (wait_until) return wait_until(ctx, t); /* CB_ESTOPPED when cancelled */
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000LL), .tv_nsec = (long)(t % 1000000000LL)};
    int rc;
    while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR) {
    }
    if (rc != 0) return cb_util_error(err, CB_EIO, "clock_nanosleep failed (error %d)", rc);
    return CB_OK;
}

const cb_stage_ops cb_stage_util_sleep = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.sleep",
    .summary = "sleeps a fixed, exponential or lognormal time per query (I/O-like latency)",
    .params = cb_sleep_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_sleep_state),
    .create = cb_sleep_create,
    .run = cb_sleep_run,
};
