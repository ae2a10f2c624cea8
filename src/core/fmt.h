/* core/fmt.h - decimal formatting for the writers that format millions of numbers (recorder
 * CSV, trace.json, summary.json): integers two digits per division, no locale, no printf; the
 * caller guarantees room for 20 characters (21 with a sign). Doubles as the shortest text that
 * reads back to the same double (room for 32). Pure functions; thread-safe. */
#ifndef CB_CORE_FMT_H
#define CB_CORE_FMT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Writes v at p: integral values of magnitude <= 2^53 as integers (fast: counts such as images
 * or bytes), others as the shortest of %.15g, %.16g, %.17g that strtod reads back exactly;
 * "nan", "inf", "-inf" for non-finite values (Python's float() reads all of them). Returns the
 * position after it. The caller guarantees room for 32 characters. */
static inline char *cb_fmt_double(char *p, double v) {
    if (v != v) {
        memcpy(p, "nan", 3);
        return p + 3;
    }
    if (v > 1.7976931348623157e308 || v < -1.7976931348623157e308) {
        if (v < 0) *p++ = '-';
        memcpy(p, "inf", 3);
        return p + 3;
    }
    if (v >= -9007199254740992.0 && v <= 9007199254740992.0 && v == (double)(int64_t)v) {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        if (bits == 0x8000000000000000ULL) *p++ = '-'; /* -0 reads back as -0 */
        return cb_fmt_i64(p, (int64_t)v);
    }
    char buf[40];
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (n < 0) n = 0;
    memcpy(p, buf, (size_t)n);
    return p + n;
}

#endif
