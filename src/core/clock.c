/* core/clock.c - sleeping on absolute monotonic deadlines, bounded spins, the pacer (see
 * clock.h). */
#include "core/clock.h"

#include <errno.h>

void cb_clock_sleep_until_ns(int64_t t_ns) {
    if (t_ns <= cb_clock_now_ns()) return;
    struct timespec ts = {.tv_sec = t_ns / 1000000000LL, .tv_nsec = t_ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static inline void cb__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int64_t cb_clock_spin_until_ns(int64_t t_ns, int64_t max_ns) {
    int64_t now = cb_clock_now_ns();
    int64_t until = max_ns < t_ns - now ? now + max_ns : t_ns;
    while (now < until) {
        cb__cpu_relax();
        now = cb_clock_now_ns();
    }
    return now;
}

void cb_pacer_init(cb_pacer *pc, int64_t cap_ns) {
    pc->cap_ns = cap_ns > 0 ? cap_ns : 0;
    pc->margin_ns = pc->cap_ns / 2;
    pc->spin_ns = pc->max_spin_ns = 0;
    pc->spins = pc->sleeps = 0;
}

void cb_pacer_note_wake(cb_pacer *pc, int64_t late_ns) {
    pc->sleeps++;
    /* The wake point was deadline - margin: a wake later than margin_ns past it missed the
     * deadline itself. */
    int64_t m = late_ns > pc->margin_ns ? pc->margin_ns + 19 * CB_PACER_STEP_NS
                                        : pc->margin_ns - CB_PACER_STEP_NS;
    pc->margin_ns = m < 0 ? 0 : m > pc->cap_ns ? pc->cap_ns : m;
}

int64_t cb_pacer_spin(cb_pacer *pc, int64_t t_ns) {
    int64_t t0 = cb_clock_now_ns();
    if (t0 >= t_ns) return t0;
    int64_t end = cb_clock_spin_until_ns(t_ns, pc->cap_ns);
    int64_t spun = end - t0;
    pc->spin_ns += spun;
    if (spun > pc->max_spin_ns) pc->max_spin_ns = spun;
    pc->spins++;
    return end;
}
