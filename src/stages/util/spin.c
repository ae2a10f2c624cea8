/* stages/util/spin.c - util.spin: burns CPU per query, to a deadline or as fixed work.
 *
 * What: models CPU-bound preprocessing. Two modes, which answer different questions:
 *   deadline  Busy-loops reading the host clock until start + duration_us. Calibrated by
 *             construction: the stage takes duration_us of wall time whatever the CPU does. If
 *             the core is shared (collocation, oversubscribed workers), the thread is simply
 *             descheduled for part of the interval and does LESS work, but the query still
 *             leaves on time: a deadline spin does NOT slow down under interference. Use it to
 *             occupy a core for a known time, or to model a stage with a fixed latency budget.
 *   work      Does a fixed amount of arithmetic: duration_us worth of iterations as measured
 *             at prepare() on an idle core. Under CPU contention, frequency throttling or SMT
 *             sharing it takes LONGER than duration_us: this is what collocation interference
 *             experiments need, since the slowdown is the signal being measured.
 *
 * Design (work mode): prepare() runs the work loop in 10 windows of ~2 ms (~20 ms in all) and
 * keeps the fastest rate (iterations per us): the fastest window is the one least disturbed by
 * preemption, so a busy machine at prepare time biases the calibration much less than a mean
 * would. Calibration still sees what the machine is at that moment (frequency, SMT sibling
 * load): when several pipelines prepare at once on shared cores, calibrate on a quiet machine
 * or compare work-mode stage times as ratios between runs, not as absolute microseconds. If
 * prepare() was not called, the first query calibrates. The loop is a dependent chain of
 * multiply/xor-shift steps whose result is stored in the state, so the compiler cannot remove
 * it and the CPU cannot overlap iterations: its rate tracks the core's speed, not its width.
 *
 * Thread-safety: one instance per worker, all state private. Ownership: the query is borrowed
 * and not changed.
 */
#include "colobench/stage.h"
#include "stages/util/util.h"

enum { P_DURATION_US, P_MODE, P_COUNT };
enum { MODE_DEADLINE, MODE_WORK };

static const cb_param_def cb_spin_params[P_COUNT] = {
    [P_DURATION_US] = {"duration_us", CB_PARAM_FLOAT, "100", 0, 3.6e9, NULL,
                       "CPU time to burn per query, in microseconds"},
    [P_MODE] = {"mode", CB_PARAM_ENUM, "deadline", CB_PARAM_UNBOUNDED, "deadline|work",
                "deadline: spin until a wall-clock deadline (constant latency); work: a fixed "
                "amount of arithmetic calibrated at prepare (slows down under contention)"},
};

#define CB_SPIN_CAL_WINDOWS 10
#define CB_SPIN_CAL_WINDOW_NS 2000000LL
#define CB_SPIN_CAL_CHUNK 4096u

typedef struct cb_spin_state {
    const cb_host *host;
    int mode;
    double duration_us;
    double iters_per_us; /* work mode, from calibration; 0 = not calibrated yet */
    uint64_t sink;       /* result of the work loop, kept so it cannot be optimised away */
} cb_spin_state;

/* The unit of work: a dependent chain (xorshift-multiply), one step per iteration. */
static uint64_t cb_spin_work(uint64_t x, uint64_t iters) {
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ULL;
        x += i;
    }
    return x;
}

static void cb_spin_calibrate(cb_spin_state *s) {
    double best = 0;
    uint64_t x = s->sink | 1;
    for (int w = 0; w < CB_SPIN_CAL_WINDOWS; w++) {
        uint64_t iters = 0;
        int64_t t0 = s->host->now_ns(), t1;
        do {
            x = cb_spin_work(x, CB_SPIN_CAL_CHUNK);
            iters += CB_SPIN_CAL_CHUNK;
            t1 = s->host->now_ns();
        } while (t1 - t0 < CB_SPIN_CAL_WINDOW_NS);
        double rate = (double)iters * 1e3 / (double)(t1 - t0);
        if (rate > best) best = rate;
    }
    s->sink = x;
    s->iters_per_us = best > 0 ? best : 1;
}

double cb__util_spin_iters_per_us(const void *state) {
    return ((const cb_spin_state *)state)->iters_per_us;
}

static int cb_spin_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_spin_state *s = state;
    s->host = args->host;
    s->duration_us = args->values[P_DURATION_US].f;
    s->mode = (int)args->values[P_MODE].i;
    s->sink = args->seed;
    return CB_OK;
}

static int cb_spin_prepare(void *state, cb_error *err) {
    cb_spin_state *s = state;
    if (s->mode == MODE_WORK) cb_spin_calibrate(s);
    return CB_OK;
}

static int cb_spin_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_spin_state *s = state;
    if (s->duration_us <= 0) return CB_OK;
    if (s->mode == MODE_WORK) {
        if (s->iters_per_us <= 0) cb_spin_calibrate(s);
        /* In slices of about a millisecond, polling for cancellation between them. */
        uint64_t left = (uint64_t)(s->duration_us * s->iters_per_us + 0.5);
        uint64_t slice = (uint64_t)(s->iters_per_us * 1000.0) + 1;
        int (*cancelled)(const cb_run_ctx *) = cb_util_host_cancelled(s->host);
        while (left > 0) {
            uint64_t k = left < slice ? left : slice;
            s->sink = cb_spin_work(s->sink, k);
            left -= k;
            if (left && cancelled && cancelled(ctx)) return CB_ESTOPPED;
        }
        return CB_OK;
    }
    int64_t deadline = s->host->now_ns() + (int64_t)(s->duration_us * 1e3 + 0.5);
    int (*cancelled)(const cb_run_ctx *) = cb_util_host_cancelled(s->host);
    for (unsigned k = 0; s->host->now_ns() < deadline; k++)
        if ((k & 1023u) == 0 && cancelled && cancelled(ctx)) return CB_ESTOPPED;
    return CB_OK;
}

const cb_stage_ops cb_stage_util_spin = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.spin",
    .summary = "burns CPU per query: to a deadline, or a calibrated amount of work",
    .params = cb_spin_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_spin_state),
    .create = cb_spin_create,
    .prepare = cb_spin_prepare,
    .run = cb_spin_run,
};
