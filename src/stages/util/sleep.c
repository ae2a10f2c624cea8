/* stages/util/sleep.c - util.sleep: sleeps a fixed or random time per query (minimal). */
#include <errno.h>
#include <math.h>
#include <time.h>

#include "colobench/stage.h"
#include "core/rng.h"

enum { P_DISTRIBUTION, P_DURATION_US, P_SIGMA, P_COUNT };
enum { DIST_FIXED, DIST_EXPONENTIAL, DIST_LOGNORMAL };

static const cb_param_def cb_sleep_params[P_COUNT] = {
    [P_DISTRIBUTION] = {"distribution", CB_PARAM_ENUM, "fixed", CB_PARAM_UNBOUNDED,
                        "fixed|exponential|lognormal", "distribution of the sleep time"},
    [P_DURATION_US] = {"duration_us", CB_PARAM_FLOAT, "1000", 0, 3.6e9, NULL,
                       "sleep time (fixed) or its mean (random), in microseconds"},
    [P_SIGMA] = {"sigma", CB_PARAM_FLOAT, "0.5", 0, 10, NULL,
                 "lognormal shape (std. dev. of the log), dimensionless"},
};

typedef struct cb_sleep_state {
    const cb_host *host;
    int dist;
    double mean_ns, sigma, mu;
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

static int cb_sleep_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_sleep_state *s = state;
    double d = s->mean_ns;
    if (s->dist == DIST_EXPONENTIAL) d = cb_rng_exponential(&s->rng, s->mean_ns);
    else if (s->dist == DIST_LOGNORMAL && s->mean_ns > 0)
        d = exp(s->mu + s->sigma * cb_rng_normal(&s->rng));
    int64_t t = s->host->now_ns() + (int64_t)d;
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
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
