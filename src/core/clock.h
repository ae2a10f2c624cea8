/* core/clock.h - the one time type: int64_t nanoseconds on CLOCK_MONOTONIC.
 * Thread-safe, no state. */
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

/* Sleeps until the absolute monotonic time t_ns (returns at once if it has passed). */
void cb_clock_sleep_until_ns(int64_t t_ns);

#endif
