/* core/clock.c - sleeping on absolute monotonic deadlines (see clock.h). */
#include "core/clock.h"

#include <errno.h>

void cb_clock_sleep_until_ns(int64_t t_ns) {
    if (t_ns <= cb_clock_now_ns()) return;
    struct timespec ts = {.tv_sec = t_ns / 1000000000LL, .tv_nsec = t_ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}
