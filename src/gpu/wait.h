/* gpu/wait.h - how a host thread waits for its GPU work (a choice of every CUDA executor and
 * GPU stage: `gpu_wait` in configs).
 *
 *   block  the thread sleeps until the device signals (events created with
 *          cudaEventBlockingSync): no CPU time while waiting, at a wake-up latency of some
 *          microseconds. The default: a waiting GPU stage leaves its core to collocated CPU
 *          work, so CPU-side measurements of collocated pipelines are not skewed.
 *   spin   the thread polls the event (cudaEventQuery in a loop) and burns a core while the
 *          device works: the lowest latency, and what PyTorch does by default on a machine
 *          with more cores than CUDA contexts (cudaDeviceScheduleAuto).
 *   yield  polls like spin but calls sched_yield() between polls: the core is given to other
 *          runnable threads, still counted busy when none are.
 */
#ifndef CB_GPU_WAIT_H
#define CB_GPU_WAIT_H

#include <string.h>

typedef enum cb_gpu_wait {
    CB_GPU_WAIT_BLOCK = 0,
    CB_GPU_WAIT_SPIN = 1,
    CB_GPU_WAIT_YIELD = 2,
} cb_gpu_wait;

#define CB_GPU_WAITS "block|spin|yield"

/* "block", "spin", "yield" -> 0 and *out; -1 for anything else. */
static inline int cb_gpu_wait_parse(const char *s, cb_gpu_wait *out) {
    static const char *const names[] = {"block", "spin", "yield"};
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *out = (cb_gpu_wait)i;
            return 0;
        }
    return -1;
}

static inline const char *cb_gpu_wait_name(cb_gpu_wait w) {
    return w == CB_GPU_WAIT_SPIN ? "spin" : w == CB_GPU_WAIT_YIELD ? "yield" : "block";
}

#endif
