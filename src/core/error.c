/* core/error.c - status strings and the cb_error record (see colobench/error.h).
 * No allocation; every function accepts err == NULL. Thread-safe (no shared state). */
#include "colobench/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *cb_strerror(int code) {
    switch (code) {
    case CB_OK: return "ok";
#define CB_STATUS(name, value, msg) case name: return msg;
#include "colobench/status.def"
#undef CB_STATUS
    default: return code < 0 && code > -4096 ? strerror(-code) : "unknown status";
    }
}

void cb_error_clear(cb_error *err) {
    if (err) memset(err, 0, sizeof *err);
}

int cb_error_set(cb_error *err, int code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void cb_error_at(cb_error *err, const char *file, int line, int col) {
    if (!err) return;
    if (file) snprintf(err->file, sizeof err->file, "%s", file);
    err->line = line;
    err->col = col;
}

void cb_error_key(cb_error *err, const char *key) {
    if (err) snprintf(err->key, sizeof err->key, "%s", key ? key : "");
}

void cb_error_prefix(cb_error *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[CB_ERROR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

size_t cb_error_escape(char *dst, size_t size, const char *s) {
    static const char hex[] = "0123456789abcdef";
    if (!dst || size == 0) return 0;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            if (o + 4 >= size) break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[*p >> 4];
            dst[o++] = hex[*p & 15];
        } else {
            if (o + 1 >= size) break;
            dst[o++] = (char)*p;
        }
    }
    dst[o] = '\0';
    return o;
}

size_t cb_error_format(const cb_error *err, char *buf, size_t size) {
    if (!buf || size == 0) return 0;
    buf[0] = '\0';
    if (!err) return 0;
    size_t off = 0;
#define CB__APPEND(...)                                                                            \
    do {                                                                                           \
        int k_ = snprintf(buf + off, size - off, __VA_ARGS__);                                     \
        if (k_ > 0) off = off + (size_t)k_ < size ? off + (size_t)k_ : size - 1;                   \
    } while (0)
    if (err->file[0]) {
        CB__APPEND("%s:", err->file);
        if (err->line > 0) CB__APPEND("%d:", err->line);
        if (err->line > 0 && err->col > 0) CB__APPEND("%d:", err->col);
        CB__APPEND(" ");
    }
    if (err->key[0]) CB__APPEND("%s: ", err->key);
    CB__APPEND("%s", err->msg[0] ? err->msg : cb_strerror(err->code));
#undef CB__APPEND
    /* Whatever a config or a data file put in the message (a name, a value), control characters
     * are shown escaped: a message never moves a terminal's cursor or changes its colours. */
    for (size_t i = 0; i < off; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c != 0x7f) continue;
        char tail[CB_ERROR_MSG_MAX + CB_ERROR_FILE_MAX + CB_ERROR_KEY_MAX + 64];
        snprintf(tail, sizeof tail, "%s", buf + i);
        off = i + cb_error_escape(buf + i, size - i, tail);
        break;
    }
    return off;
}
