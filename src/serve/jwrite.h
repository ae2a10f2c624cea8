/* serve/jwrite.h - a small JSON writer into one growable byte buffer with a stated maximum, for
 * the server's responses and stream events.
 *
 * Strings are escaped as RFC 8259 requires: '"' and '\\' escaped, control characters below 0x20
 * as \n, \r, \t, \b, \f or \u00XX, DEL as \u007f; every other byte (UTF-8 included) passes through
 * unchanged (the caller hands in valid UTF-8). Numbers are written with snprintf (integers exact;
 * doubles with 17 significant digits, non-finite ones as null).
 *
 * Errors are sticky: once an append would pass `max` bytes or an allocation fails, `failed` is
 * set, the buffer stops growing and every later call does nothing; the caller checks once at the
 * end. Ownership: the writer owns `p` (cb_malloc funnel); cb__jwrite_fini frees it and is safe on
 * a zeroed writer. Not thread-safe (one writer per thread). */
#ifndef CB_SERVE_JWRITE_H
#define CB_SERVE_JWRITE_H

#include <stddef.h>
#include <stdint.h>

typedef struct cb__jwrite {
    char *p;      /* NUL-terminated while len < cap */
    size_t len, cap, max;
    int failed;   /* an append passed max, or out of memory */
} cb__jwrite;

void cb__jwrite_init(cb__jwrite *w, size_t max_bytes);
void cb__jwrite_fini(cb__jwrite *w);
/* Empties the buffer (keeps its memory and clears failed). */
void cb__jwrite_reset(cb__jwrite *w);

void cb__jwrite_raw(cb__jwrite *w, const char *s, size_t n);
void cb__jwrite_lit(cb__jwrite *w, const char *s); /* raw, NUL-terminated */
/* A JSON string: the quotes and the escaped bytes s[0..n). */
void cb__jwrite_str(cb__jwrite *w, const char *s, size_t n);
void cb__jwrite_cstr(cb__jwrite *w, const char *s); /* NULL writes null */
void cb__jwrite_int(cb__jwrite *w, int64_t v);
void cb__jwrite_num(cb__jwrite *w, double v);
/* "key": (a comma first when `comma`). */
void cb__jwrite_key(cb__jwrite *w, int comma, const char *key);

#endif
