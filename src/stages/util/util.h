/* stages/util/util.h - helpers shared by the util.* stages, header-only and libc-only.
 *
 * Built-in stages reach the host only through the cb_host table so that the same source would
 * work as a plugin; a plugin links against nothing of colobench, so it cannot call
 * cb_error_set(). cb_util_error() fills a cb_error with vsnprintf only. Thread-safe (no state).
 */
#ifndef CB_STAGES_UTIL_UTIL_H
#define CB_STAGES_UTIL_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "colobench/stage.h"

/* Sets err->code and err->msg (err may be NULL); returns code. */
static inline int cb_util_error(cb_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int cb_util_error(cb_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Test hooks (internal, external linkage): state is the stage's own state after create.
 * Draws the next util.sleep duration in ns exactly as run() would, without sleeping. */
int64_t cb__util_sleep_draw_ns(void *state);

/* The device a stage runs on: its own `device` parameter when set (*own = 1), else the
 * pipeline's (cb_stage_args.device, when the host's args cover it; *own = 0); NULL when neither
 * says (the CPU). */
static inline const char *cb_util_stage_device(const cb_stage_args *args,
                                               const cb_param_value *param, int *own) {
    *own = param->has_value && param->s && param->s[0];
    if (*own) return param->s;
    if (args->struct_size >= offsetof(cb_stage_args, device) + sizeof args->device &&
        args->device && args->device[0])
        return args->device;
    return NULL;
}

/* The host's wait_until and cancelled, or NULL for a host older than the fields. */
static inline int (*cb_util_host_wait_until(const cb_host *h))(cb_run_ctx *, int64_t) {
    if (h->struct_size < offsetof(cb_host, wait_until) + sizeof h->wait_until) return NULL;
    return h->wait_until;
}

static inline int (*cb_util_host_cancelled(const cb_host *h))(const cb_run_ctx *) {
    if (h->struct_size < offsetof(cb_host, cancelled) + sizeof h->cancelled) return NULL;
    return h->cancelled;
}

/* The host's device_time, or NULL for a host older than the field. */
static inline int (*cb_util_host_device_time(const cb_host *h))(cb_run_ctx *, int64_t) {
    if (h->struct_size < offsetof(cb_host, device_time) + sizeof h->device_time) return NULL;
    return h->device_time;
}
/* util.spin in work mode: calibrated work iterations per microsecond (0 before prepare). */
double cb__util_spin_iters_per_us(const void *state);

#endif
