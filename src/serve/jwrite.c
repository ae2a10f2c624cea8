/* serve/jwrite.c - the escaping JSON writer (jwrite.h).
 *
 * Design: one buffer doubled as needed up to `max` (growth is amortised O(1) per byte); the
 * string escaper copies runs of bytes that need no escape in one memcpy. Thread-safety: none
 * (one writer per thread). Ownership: the writer owns its buffer. */
#include "serve/jwrite.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

void cb__jwrite_init(cb__jwrite *w, size_t max_bytes) {
    memset(w, 0, sizeof *w);
    w->max = max_bytes;
}

void cb__jwrite_fini(cb__jwrite *w) {
    cb_free(w->p);
    memset(w, 0, sizeof *w);
}

void cb__jwrite_reset(cb__jwrite *w) {
    w->len = 0;
    w->failed = 0;
    if (w->p) w->p[0] = 0;
}

/* Room for n more bytes and the NUL; 0 or -1 (then failed is set). */
static int reserve(cb__jwrite *w, size_t n) {
    if (w->failed) return -1;
    if (n > w->max || w->len > w->max - n) {
        w->failed = 1;
        return -1;
    }
    size_t need = w->len + n + 1;
    if (need <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need) cap *= 2;
    if (cap > w->max + 1) cap = w->max + 1;
    char *p = cb_realloc(w->p, cap);
    if (!p) {
        w->failed = 1;
        return -1;
    }
    w->p = p;
    w->cap = cap;
    return 0;
}

void cb__jwrite_raw(cb__jwrite *w, const char *s, size_t n) {
    if (reserve(w, n)) return;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = 0;
}

void cb__jwrite_lit(cb__jwrite *w, const char *s) { cb__jwrite_raw(w, s, strlen(s)); }

void cb__jwrite_str(cb__jwrite *w, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    cb__jwrite_raw(w, "\"", 1);
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) continue;
        cb__jwrite_raw(w, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t k = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            k = 6;
        }
        cb__jwrite_raw(w, e, k);
    }
    cb__jwrite_raw(w, s + run, n - run);
    cb__jwrite_raw(w, "\"", 1);
}

void cb__jwrite_cstr(cb__jwrite *w, const char *s) {
    if (s) cb__jwrite_str(w, s, strlen(s));
    else cb__jwrite_raw(w, "null", 4);
}

void cb__jwrite_int(cb__jwrite *w, int64_t v) {
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", (long long)v);
    cb__jwrite_raw(w, b, (size_t)n);
}

void cb__jwrite_num(cb__jwrite *w, double v) {
    if (!isfinite(v)) {
        cb__jwrite_raw(w, "null", 4);
        return;
    }
    char b[40];
    int n = snprintf(b, sizeof b, "%.17g", v);
    cb__jwrite_raw(w, b, (size_t)n);
}

void cb__jwrite_key(cb__jwrite *w, int comma, const char *key) {
    if (comma) cb__jwrite_raw(w, ",", 1);
    cb__jwrite_cstr(w, key);
    cb__jwrite_raw(w, ":", 1);
}
