/* core/clock.h - the one time type: int64_t nanoseconds on CLOCK_MONOTONIC, and the pacer that
 * open-loop load generators use to reach each arrival on time.
 * Clock functions: thread-safe, no state. A cb_pacer belongs to one thread. */
#ifndef CB_CORE_CLOCK_H
#define CB_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t cb_clock_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t cb_clock_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID). */
static inline int64_t cb_clock_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleeps until the absolute monotonic time t_ns (returns at once if it has passed). */
void cb_clock_sleep_until_ns(int64_t t_ns);

/* Spins until t_ns, but for at most max_ns; returns the time it stopped. */
int64_t cb_clock_spin_until_ns(int64_t t_ns, int64_t max_ns);

/* Pacer: reach a deadline by sleeping to margin_ns before it, then spinning the rest.
 * margin_ns tracks the 95th percentile of the measured wake-up lateness (a stochastic quantile
 * estimate: +19 steps after a wake later than the margin, -1 step otherwise), clamped to
 * [0, cap_ns], so a spin never lasts longer than cap_ns. Every spin is counted. */
#define CB_PACER_SPIN_CAP_NS 50000
#define CB_PACER_STEP_NS 250

typedef struct cb_pacer {
    int64_t cap_ns;      /* a spin lasts at most this long */
    int64_t margin_ns;   /* wake this long before a deadline, then spin */
    int64_t spin_ns;     /* total time spun */
    int64_t max_spin_ns; /* the longest single spin */
    uint64_t spins;      /* deadlines reached by spinning (each <= cap_ns) */
    uint64_t sleeps;     /* timed sleeps to a deadline's wake point */
} cb_pacer;

void cb_pacer_init(cb_pacer *pc, int64_t cap_ns);
/* A sleep meant to end at wake_ns ended late_ns after it (negative: early): moves the margin. */
void cb_pacer_note_wake(cb_pacer *pc, int64_t late_ns);
/* Spins to t_ns (at most cap_ns) and counts it; returns the time it stopped. */
int64_t cb_pacer_spin(cb_pacer *pc, int64_t t_ns);

#endif
