/* core/fmt.h - decimal integer formatting for the writers that format millions of numbers
 * (recorder CSV, trace.json): two digits per division, no locale, no printf. The caller
 * guarantees room for 20 characters (21 with a sign). Pure functions; thread-safe. */
#ifndef CB_CORE_FMT_H
#define CB_CORE_FMT_H

#include <stdint.h>
#include <string.h>

static const char cb_fmt_digits2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Writes v in decimal at p; returns the position after it. */
static inline char *cb_fmt_u64(char *p, uint64_t v) {
    char tmp[24];
    char *t = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100u) * 2u;
        v /= 100u;
        *--t = cb_fmt_digits2[d + 1];
        *--t = cb_fmt_digits2[d];
    }
    if (v >= 10) {
        unsigned d = (unsigned)v * 2u;
        *--t = cb_fmt_digits2[d + 1];
        *--t = cb_fmt_digits2[d];
    } else {
        *--t = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(p, t, n);
    return p + n;
}

static inline char *cb_fmt_i64(char *p, int64_t v) {
    if (v < 0) {
        *p++ = '-';
        return cb_fmt_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return cb_fmt_u64(p, (uint64_t)v);
}

#endif
