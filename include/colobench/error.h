/* colobench/error.h - status codes and the caller-owned error record.
 *
 * Every fallible function returns an int: 0 (CB_OK) on success, a negative CB_E* code on
 * failure, and, when given a non-NULL cb_error, fills it with a message and, where known, the
 * source position (file:line:col) and the dotted config key. Each layer may add context with
 * cb_error_prefix(). Ownership: the cb_error is owned by the caller; nothing in it is heap
 * allocated, so it never needs freeing and may live on the stack.
 */
#ifndef COLOBENCH_ERROR_H
#define COLOBENCH_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CB_OK = 0,
#define CB_STATUS(name, value, msg) name = value,
#include "colobench/status.def"
#undef CB_STATUS
};

#define CB_ERROR_MSG_MAX 768
#define CB_ERROR_FILE_MAX 256
#define CB_ERROR_KEY_MAX 192

typedef struct cb_error {
    int code;                    /* CB_OK or a CB_E* code */
    int line;                    /* 1-based; 0 when unknown */
    int col;                     /* 1-based; 0 when unknown */
    char file[CB_ERROR_FILE_MAX];/* "" when unknown */
    char key[CB_ERROR_KEY_MAX];  /* dotted config key, "" when unknown */
    char msg[CB_ERROR_MSG_MAX];
} cb_error;

/* Message for a status code ("unknown status" for codes not in status.def). */
const char *cb_strerror(int code);

/* Clears err (NULL is allowed everywhere below). */
void cb_error_clear(cb_error *err);

/* Sets code and a printf-style message; keeps position fields. Returns code, so that
 * `return cb_error_set(err, CB_EINVAL, "...")` reads naturally. */
int cb_error_set(cb_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the source position (file may be NULL to keep the current one). */
void cb_error_at(cb_error *err, const char *file, int line, int col);

/* Sets the dotted key, e.g. "pipelines[0].stages[2].workers". */
void cb_error_key(cb_error *err, const char *key);

/* Prepends "prefix: " to the message (used by each layer to add context). */
void cb_error_prefix(cb_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies s into dst (at most size - 1 bytes, always terminated) with every control character
 * (bytes below 0x20, and 0x7f) written as \xNN. Returns the length written. */
size_t cb_error_escape(char *dst, size_t size, const char *s);

/* Formats "FILE:LINE:COL: KEY: MESSAGE" (parts that are unknown are left out) into buf, control
 * characters escaped (cb_error_escape). */
size_t cb_error_format(const cb_error *err, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
