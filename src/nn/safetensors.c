/* nn/safetensors.c - safetensors reader and writer (format and contract in safetensors.h).
 *
 * Design: the reader reads the whole file into one buffer, parses the header with a strict
 * recursive-descent parser written for exactly this grammar (top-level object of tensor
 * objects plus an optional "__metadata__" object of strings), validates each tensor as it is
 * parsed (dtype, dims, offsets inside the buffer, bytes = numel * size), then checks the whole
 * set: names unique (sorted index, reused by cb_safetensors_find) and byte ranges contiguous
 * from 0 to the end of the buffer (sorted by offset). Decoded strings (names, metadata) go to
 * one pool sized by the header: a decoded JSON string plus its NUL is never longer than its
 * quoted form, so the header's length bounds the pool and no string needs its own allocation.
 * Errors report the byte offset in the file for malformed JSON and the tensor's name for
 * everything about a tensor; every message starts with the file's path.
 *
 * The writer builds the header in a bounded buffer, pads it with spaces to a multiple of 8
 * (so the data buffer starts 8-byte aligned in the file), and writes PATH.tmp, fsync, rename.
 *
 * Thread-safety: no shared state; an open file is read-only after cb_safetensors_open.
 */
#include "nn/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian; colobench assumes a little-endian host");

static const struct {
    const char *name;
    size_t size;
} cb__dtypes[CB_SAFETENSORS_N_DTYPES] = {
    [CB_SAFETENSORS_BOOL] = {"BOOL", 1},       [CB_SAFETENSORS_U8] = {"U8", 1},
    [CB_SAFETENSORS_I8] = {"I8", 1},           [CB_SAFETENSORS_F8_E5M2] = {"F8_E5M2", 1},
    [CB_SAFETENSORS_F8_E4M3] = {"F8_E4M3", 1}, [CB_SAFETENSORS_I16] = {"I16", 2},
    [CB_SAFETENSORS_U16] = {"U16", 2},         [CB_SAFETENSORS_F16] = {"F16", 2},
    [CB_SAFETENSORS_BF16] = {"BF16", 2},       [CB_SAFETENSORS_I32] = {"I32", 4},
    [CB_SAFETENSORS_U32] = {"U32", 4},         [CB_SAFETENSORS_F32] = {"F32", 4},
    [CB_SAFETENSORS_F64] = {"F64", 8},         [CB_SAFETENSORS_I64] = {"I64", 8},
    [CB_SAFETENSORS_U64] = {"U64", 8},
};

const char *cb_safetensors_dtype_name(cb_safetensors_dtype dt) {
    return (unsigned)dt < CB_SAFETENSORS_N_DTYPES ? cb__dtypes[dt].name : NULL;
}

size_t cb_safetensors_dtype_size(cb_safetensors_dtype dt) {
    return (unsigned)dt < CB_SAFETENSORS_N_DTYPES ? cb__dtypes[dt].size : 0;
}

struct cb_safetensors {
    char *label;                       /* path, for errors */
    unsigned char *bytes;              /* the whole file */
    size_t len;
    size_t header_len;                 /* N */
    char *pool;                        /* decoded strings */
    cb_safetensors_tensor *tensors;    /* header order */
    int n, cap;
    const cb_safetensors_tensor **by_name; /* sorted by name */
    cb_safetensors_kv *meta;
    int n_meta, cap_meta;
};

/* Length of the well-formed UTF-8 sequence at s (avail bytes), 0 when malformed (overlong,
 * surrogate, beyond U+10FFFF, truncated). */
static size_t cb__utf8_len(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (avail < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* ---- Header parser ---------------------------------------------------------------------- */

typedef struct cb__jp {
    const unsigned char *s;            /* header JSON */
    size_t n, pos;
    char *pool;                        /* decoded strings go here */
    size_t pool_used;
    const char *label;
    cb_error *err;
} cb__jp;

/* "LABEL: header JSON at byte X: MSG" (X counts from the start of the file). */
__attribute__((format(printf, 2, 3))) static int cb__jerr(cb__jp *p, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cb_error_set(p->err, CB_EINVAL, "%s: header JSON at byte %zu: %s", p->label, (size_t)8 + p->pos,
                 msg);
    return CB_EINVAL; /* visibly not 0: callers use what a successful parse filled in */
}

static void cb__ws(cb__jp *p) {
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

/* Skips whitespace, then expects character c. */
static int cb__expect(cb__jp *p, char c, const char *what) {
    cb__ws(p);
    if (p->pos >= p->n) return cb__jerr(p, "unexpected end of the header, expected %s", what);
    if (p->s[p->pos] != (unsigned char)c) {
        unsigned char got = p->s[p->pos];
        if (got >= 0x20 && got < 0x7f) return cb__jerr(p, "expected %s, got '%c'", what, got);
        return cb__jerr(p, "expected %s, got byte 0x%02x", what, got);
    }
    p->pos++;
    return CB_OK;
}

static int cb__hex4(cb__jp *p, uint32_t *out) {
    uint32_t v = 0;
    *out = 0; /* defined on every path, errors included */
    if (p->n - p->pos < 4) return cb__jerr(p, "truncated \\u escape");
    for (int i = 0; i < 4; i++) {
        unsigned c = p->s[p->pos];
        int d = c >= '0' && c <= '9'   ? (int)(c - '0')
                : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10)
                                       : -1;
        if (d < 0) return cb__jerr(p, "bad hex digit in a \\u escape");
        v = v * 16 + (uint32_t)d;
        p->pos++;
    }
    *out = v;
    return CB_OK;
}

/* Parses a string (after optional whitespace) into the pool; *out is NUL-terminated. */
static int cb__string(cb__jp *p, const char **out) {
    int rc = cb__expect(p, '"', "a string");
    if (rc) return rc;
    char *o = p->pool + p->pool_used, *start = o;
    for (;;) {
        if (p->pos >= p->n) return cb__jerr(p, "unterminated string");
        unsigned c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) return cb__jerr(p, "control character 0x%02x in a string", c);
        if (c != '\\') {
            size_t k = cb__utf8_len(p->s + p->pos, p->n - p->pos);
            if (!k) return cb__jerr(p, "invalid UTF-8");
            memcpy(o, p->s + p->pos, k);
            o += k;
            p->pos += k;
            continue;
        }
        p->pos++;
        if (p->pos >= p->n) return cb__jerr(p, "unterminated string");
        c = p->s[p->pos++];
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp;
            p->pos -= 2; /* errors point at the escape */
            size_t at = p->pos;
            p->pos += 2;
            if ((rc = cb__hex4(p, &cp))) return rc;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                p->pos = at;
                return cb__jerr(p, "unpaired low surrogate \\u%04X", (unsigned)cp);
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    p->pos = at;
                    return cb__jerr(p, "high surrogate \\u%04X not followed by a low one",
                                    (unsigned)cp);
                }
                p->pos += 2;
                if ((rc = cb__hex4(p, &lo))) return rc;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    p->pos = at;
                    return cb__jerr(p, "high surrogate \\u%04X not followed by a low one",
                                    (unsigned)cp);
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                p->pos = at;
                return cb__jerr(p, "\\u0000 (NUL) in a string is not supported");
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            p->pos -= 2;
            return cb__jerr(p, "invalid escape");
        }
    }
    *o++ = '\0';
    p->pool_used += (size_t)(o - start);
    *out = start;
    return CB_OK;
}

/* A JSON integer >= 0 and <= INT64_MAX (no sign, fraction, exponent or leading zero). */
static int cb__uint(cb__jp *p, uint64_t *out) {
    cb__ws(p);
    if (p->pos >= p->n) return cb__jerr(p, "unexpected end of the header, expected an integer");
    unsigned c = p->s[p->pos];
    if (c == '-') return cb__jerr(p, "expected an integer >= 0");
    if (c < '0' || c > '9') return cb__jerr(p, "expected an integer");
    size_t start = p->pos;
    uint64_t v = 0;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        unsigned d = p->s[p->pos] - '0';
        if (v > (uint64_t)(INT64_MAX - d) / 10) {
            p->pos = start;
            return cb__jerr(p, "integer too large");
        }
        v = v * 10 + d;
        p->pos++;
    }
    if (p->s[start] == '0' && p->pos - start > 1) {
        p->pos = start;
        return cb__jerr(p, "leading zero in an integer");
    }
    if (p->pos < p->n && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
        return cb__jerr(p, "expected an integer, got a fraction or exponent");
    *out = v;
    return CB_OK;
}

/* '[' int, ... ']' into v (at most max), *count set; more than max is an error "too many". */
static int cb__uint_array(cb__jp *p, uint64_t *v, int max, int *count, const char *tensor,
                          const char *field) {
    int rc = cb__expect(p, '[', "'['");
    if (rc) return rc;
    *count = 0;
    cb__ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') {
        p->pos++;
        return CB_OK;
    }
    for (;;) {
        uint64_t x = 0;
        if ((rc = cb__uint(p, &x))) return rc;
        if (*count == max)
            return cb__jerr(p, "tensor %s: %s has more than %d entries", tensor, field, max);
        v[(*count)++] = x;
        cb__ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        return cb__expect(p, ']', "',' or ']'");
    }
}

/* Validation of one tensor against the buffer; "LABEL: tensor NAME: ..." errors. */
static int cb__check_tensor(cb__jp *p, cb_safetensors_tensor *t, uint64_t begin, uint64_t end,
                            size_t buffer_len, const unsigned char *buffer) {
    char shape[160];
    size_t k = 0;
    shape[k++] = '[';
    for (int d = 0; d < t->ndim && k < sizeof shape - 24; d++)
        k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "",
                              (long long)t->dims[d]);
    snprintf(shape + k, sizeof shape - k, "]");
    if (begin > end)
        return cb_error_set(p->err, CB_EINVAL,
                            "%s: tensor %s: data_offsets [%llu, %llu] begin after they end",
                            p->label, t->name, (unsigned long long)begin,
                            (unsigned long long)end);
    if (end > buffer_len)
        return cb_error_set(p->err, CB_EINVAL,
                            "%s: tensor %s: data_offsets [%llu, %llu] run past the data buffer "
                            "(%zu bytes)",
                            p->label, t->name, (unsigned long long)begin,
                            (unsigned long long)end, buffer_len);
    uint64_t numel = 1, bytes;
    for (int d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(numel, (uint64_t)t->dims[d], &numel) || numel > INT64_MAX)
            return cb_error_set(p->err, CB_EINVAL, "%s: tensor %s: shape %s is too large",
                                p->label, t->name, shape);
    if (__builtin_mul_overflow(numel, (uint64_t)cb__dtypes[t->dtype].size, &bytes))
        return cb_error_set(p->err, CB_EINVAL, "%s: tensor %s: shape %s is too large", p->label,
                            t->name, shape);
    if (bytes != end - begin)
        return cb_error_set(p->err, CB_EINVAL,
                            "%s: tensor %s: shape %s of %s needs %llu bytes, data_offsets [%llu, "
                            "%llu] hold %llu",
                            p->label, t->name, shape, cb__dtypes[t->dtype].name,
                            (unsigned long long)bytes,
                            (unsigned long long)begin, (unsigned long long)end,
                            (unsigned long long)(end - begin));
    t->numel = (int64_t)numel;
    t->bytes = (size_t)bytes;
    t->offset = (size_t)begin;
    t->data = buffer + begin;
    return CB_OK;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]} for tensor t (name already set). */
static int cb__tensor(cb__jp *p, cb_safetensors_tensor *t, size_t buffer_len,
                      const unsigned char *buffer) {
    int rc = cb__expect(p, '{', "'{' (a tensor's description)");
    if (rc) return rc;
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    uint64_t offsets[2] = {0, 0}, dims[CB_SAFETENSORS_MAX_DIMS];
    cb__ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}')
        return cb__jerr(p, "tensor %s: empty description (needs dtype, shape, data_offsets)",
                        t->name);
    for (;;) {
        const char *key;
        size_t key_pos;
        cb__ws(p);
        key_pos = p->pos;
        if ((rc = cb__string(p, &key)) || (rc = cb__expect(p, ':', "':'"))) return rc;
        if (strcmp(key, "dtype") == 0 || strcmp(key, "shape") == 0 ||
            strcmp(key, "data_offsets") == 0) {
            int *have = key[0] == 'd' && key[1] == 't' ? &have_dtype
                        : key[0] == 's'                ? &have_shape
                                                       : &have_offsets;
            if (*have) {
                p->pos = key_pos;
                return cb__jerr(p, "tensor %s: \"%s\" given twice", t->name, key);
            }
            *have = 1;
        } else {
            p->pos = key_pos;
            return cb__jerr(p, "tensor %s: unknown field \"%s\" (expected dtype, shape, "
                               "data_offsets)",
                            t->name, key);
        }
        if (have_dtype == 1) {
            const char *dt;
            cb__ws(p);
            size_t at = p->pos;
            if ((rc = cb__string(p, &dt))) return rc;
            int found = -1;
            for (int i = 0; i < CB_SAFETENSORS_N_DTYPES; i++)
                if (strcmp(dt, cb__dtypes[i].name) == 0) found = i;
            if (found < 0) {
                p->pos = at;
                return cb__jerr(p, "tensor %s: unknown dtype \"%s\"", t->name, dt);
            }
            t->dtype = (cb_safetensors_dtype)found;
            have_dtype = 2;
        } else if (have_shape == 1) {
            if ((rc = cb__uint_array(p, dims, CB_SAFETENSORS_MAX_DIMS, &t->ndim, t->name,
                                     "shape")))
                return rc;
            for (int d = 0; d < t->ndim; d++) t->dims[d] = (int64_t)dims[d];
            have_shape = 2;
        } else if (have_offsets == 1) {
            int count;
            cb__ws(p);
            size_t at = p->pos;
            if ((rc = cb__uint_array(p, offsets, 2, &count, t->name, "data_offsets"))) return rc;
            if (count != 2) {
                p->pos = at;
                return cb__jerr(p, "tensor %s: data_offsets needs 2 entries, got %d", t->name,
                                count);
            }
            have_offsets = 2;
        }
        cb__ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if ((rc = cb__expect(p, '}', "',' or '}'"))) return rc;
        break;
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return cb__jerr(p, "tensor %s: no \"%s\"", t->name,
                        !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    return cb__check_tensor(p, t, offsets[0], offsets[1], buffer_len, buffer);
}

static int cb__metadata(cb__jp *p, cb_safetensors *f) {
    int rc = cb__expect(p, '{', "'{' (the metadata object)");
    if (rc) return rc;
    cb__ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') {
        p->pos++;
        return CB_OK;
    }
    for (;;) {
        const char *key, *value;
        if ((rc = cb__string(p, &key)) || (rc = cb__expect(p, ':', "':'"))) return rc;
        cb__ws(p);
        if (p->pos < p->n && p->s[p->pos] != '"')
            return cb__jerr(p, "__metadata__ value of \"%s\" must be a string", key);
        if ((rc = cb__string(p, &value))) return rc;
        if (f->n_meta == f->cap_meta) {
            int cap = f->cap_meta ? f->cap_meta * 2 : 8;
            cb_safetensors_kv *m = cb_realloc(f->meta, (size_t)cap * sizeof *m);
            if (!m) return cb_error_set(p->err, CB_ENOMEM, "%s: out of memory", p->label);
            f->meta = m;
            f->cap_meta = cap;
        }
        f->meta[f->n_meta].key = key;
        f->meta[f->n_meta].value = value;
        f->n_meta++;
        cb__ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            cb__ws(p);
            continue;
        }
        return cb__expect(p, '}', "',' or '}'");
    }
}

static int cb__by_name(const void *a, const void *b) {
    return strcmp((*(const cb_safetensors_tensor *const *)a)->name,
                  (*(const cb_safetensors_tensor *const *)b)->name);
}

static int cb__by_offset(const void *a, const void *b) {
    const cb_safetensors_tensor *x = *(const cb_safetensors_tensor *const *)a,
                                *y = *(const cb_safetensors_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? -1 : 1;
    return 0;
}

static int cb__kv_by_key(const void *a, const void *b) {
    return strcmp(((const cb_safetensors_kv *)a)->key, ((const cb_safetensors_kv *)b)->key);
}

/* Names unique, metadata keys unique, byte ranges contiguous and covering the buffer. */
static int cb__check_set(cb_safetensors *f, size_t buffer_len, cb_error *err) {
    if (f->n > 0) {
        f->by_name = cb_malloc((size_t)f->n * sizeof *f->by_name);
        if (!f->by_name) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", f->label);
        for (int i = 0; i < f->n; i++) f->by_name[i] = &f->tensors[i];
        qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cb__by_name);
        for (int i = 1; i < f->n; i++)
            if (strcmp(f->by_name[i]->name, f->by_name[i - 1]->name) == 0)
                return cb_error_set(err, CB_EINVAL, "%s: tensor %s appears twice in the header",
                                    f->label, f->by_name[i]->name);
    }
    if (f->n_meta > 1) {
        cb_safetensors_kv *kv = cb_malloc((size_t)f->n_meta * sizeof *kv);
        if (!kv) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", f->label);
        memcpy(kv, f->meta, (size_t)f->n_meta * sizeof *kv);
        qsort(kv, (size_t)f->n_meta, sizeof *kv, cb__kv_by_key);
        for (int i = 1; i < f->n_meta; i++)
            if (strcmp(kv[i].key, kv[i - 1].key) == 0) {
                cb_error_set(err, CB_EINVAL, "%s: __metadata__ key \"%s\" appears twice",
                             f->label, kv[i].key);
                cb_free(kv);
                return CB_EINVAL;
            }
        cb_free(kv);
    }
    const cb_safetensors_tensor **order = NULL;
    if (f->n > 0) {
        order = cb_malloc((size_t)f->n * sizeof *order);
        if (!order) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", f->label);
        memcpy(order, f->by_name, (size_t)f->n * sizeof *order);
        qsort(order, (size_t)f->n, sizeof *order, cb__by_offset);
    }
    size_t expect = 0;
    int rc = CB_OK;
    for (int i = 0; i < f->n && !rc; i++) {
        const cb_safetensors_tensor *t = order[i];
        if (t->offset < expect)
            rc = cb_error_set(err, CB_EINVAL,
                              "%s: tensor %s (bytes [%zu, %zu)) overlaps tensor %s (bytes [%zu, "
                              "%zu))",
                              f->label, t->name, t->offset, t->offset + t->bytes,
                              order[i - 1]->name, order[i - 1]->offset,
                              order[i - 1]->offset + order[i - 1]->bytes);
        else if (t->offset > expect)
            rc = cb_error_set(err, CB_EINVAL,
                              "%s: bytes [%zu, %zu) of the data buffer belong to no tensor "
                              "(before tensor %s): offsets must be contiguous",
                              f->label, expect, t->offset, t->name);
        else
            expect = t->offset + t->bytes;
    }
    cb_free(order);
    if (!rc && expect != buffer_len)
        rc = cb_error_set(err, CB_EINVAL,
                          "%s: the last %zu bytes of the data buffer (from offset %zu of %zu) "
                          "belong to no tensor",
                          f->label, buffer_len - expect, expect, buffer_len);
    return rc;
}

/* Parses and validates f->bytes[0, f->len). */
static int cb__parse(cb_safetensors *f, cb_error *err) {
    if (f->len < 8)
        return cb_error_set(err, CB_EINVAL,
                            "%s: %zu bytes is too short for a safetensors file (8-byte header "
                            "size, then the header): truncated?",
                            f->label, f->len);
    uint64_t n;
    memcpy(&n, f->bytes, 8);
    if (n > f->len - 8)
        return cb_error_set(err, CB_EINVAL,
                            "%s: header size %llu runs past the end of the file (%zu bytes): "
                            "truncated or not a safetensors file",
                            f->label, (unsigned long long)n, f->len);
    if (n > CB_SAFETENSORS_HEADER_MAX)
        return cb_error_set(err, CB_EINVAL, "%s: header size %llu is over the limit of %u bytes",
                            f->label, (unsigned long long)n, CB_SAFETENSORS_HEADER_MAX);
    f->header_len = (size_t)n;
    f->pool = cb_malloc(f->header_len + 1);
    if (!f->pool) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", f->label);
    const unsigned char *buffer = f->bytes + 8 + f->header_len;
    size_t buffer_len = f->len - 8 - f->header_len;
    cb__jp p = {.s = f->bytes + 8, .n = f->header_len, .pool = f->pool, .label = f->label,
                .err = err};
    int rc = cb__expect(&p, '{', "'{' (the header is a JSON object)");
    if (rc) return rc;
    cb__ws(&p);
    int have_meta = 0;
    if (p.pos < p.n && p.s[p.pos] == '}') {
        p.pos++;
    } else {
        for (;;) {
            const char *name;
            cb__ws(&p);
            size_t at = p.pos;
            if ((rc = cb__string(&p, &name)) || (rc = cb__expect(&p, ':', "':'"))) return rc;
            if (strcmp(name, "__metadata__") == 0) {
                if (have_meta++) {
                    p.pos = at;
                    return cb__jerr(&p, "__metadata__ appears twice");
                }
                if ((rc = cb__metadata(&p, f))) return rc;
            } else {
                if (f->n == f->cap) {
                    int cap = f->cap ? f->cap * 2 : 64;
                    cb_safetensors_tensor *t = cb_realloc(f->tensors, (size_t)cap * sizeof *t);
                    if (!t) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", f->label);
                    f->tensors = t;
                    f->cap = cap;
                }
                cb_safetensors_tensor *t = &f->tensors[f->n];
                memset(t, 0, sizeof *t);
                t->name = name;
                if ((rc = cb__tensor(&p, t, buffer_len, buffer))) return rc;
                f->n++;
            }
            cb__ws(&p);
            if (p.pos < p.n && p.s[p.pos] == ',') {
                p.pos++;
                continue;
            }
            if ((rc = cb__expect(&p, '}', "',' or '}'"))) return rc;
            break;
        }
    }
    cb__ws(&p);
    if (p.pos != p.n)
        return cb__jerr(&p, "unexpected data after the header object (only spaces may pad it)");
    /* Tensors point into f->tensors, which no longer moves: the data pointers are final. */
    return cb__check_set(f, buffer_len, err);
}

void cb_safetensors_close(cb_safetensors *f) {
    if (!f) return;
    cb_free(f->label);
    cb_free(f->bytes);
    cb_free(f->pool);
    cb_free(f->tensors);
    cb_free(f->by_name);
    cb_free(f->meta);
    cb_free(f);
}

static cb_safetensors *cb__new(const char *label, cb_error *err) {
    cb_safetensors *f = cb_calloc(1, sizeof *f);
    if (f) f->label = cb_strdup(label ? label : "(memory)");
    if (!f || !f->label) {
        cb_safetensors_close(f);
        cb_error_set(err, CB_ENOMEM, "%s: out of memory", label ? label : "(memory)");
        return NULL;
    }
    return f;
}

static int cb__finish(cb_safetensors *f, cb_safetensors **out, cb_error *err) {
    int rc = cb__parse(f, err);
    if (rc) {
        cb_safetensors_close(f);
        return rc;
    }
    *out = f;
    return CB_OK;
}

int cb_safetensors_parse(const char *label, const void *bytes, size_t len, cb_safetensors **out,
                         cb_error *err) {
    *out = NULL;
    cb_safetensors *f = cb__new(label, err);
    if (!f) return CB_ENOMEM;
    f->bytes = cb_malloc(len ? len : 1);
    if (!f->bytes) {
        cb_safetensors_close(f);
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory", label ? label : "(memory)");
    }
    if (len) memcpy(f->bytes, bytes, len);
    f->len = len;
    return cb__finish(f, out, err);
}

int cb_safetensors_open(const char *path, cb_safetensors **out, cb_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return cb_error_set(err, e == ENOENT ? CB_ENOENT : CB_EIO, "%s: cannot open: %s", path,
                            strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cb_error_set(err, CB_EIO, "%s: not a regular file", path);
    }
    cb_safetensors *f = cb__new(path, err);
    if (f) f->bytes = cb_malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!f || !f->bytes) {
        close(fd);
        cb_safetensors_close(f);
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory for %lld bytes", path,
                            (long long)st.st_size);
    }
    size_t want = (size_t)st.st_size, got = 0;
    while (got < want) {
        ssize_t k = read(fd, f->bytes + got, want - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            cb_safetensors_close(f);
            return cb_error_set(err, CB_EIO, "%s: read: %s", path, strerror(e));
        }
        if (k == 0) break; /* shrank while reading: parse what is there */
        got += (size_t)k;
    }
    close(fd);
    f->len = got;
    return cb__finish(f, out, err);
}

const char *cb_safetensors_path(const cb_safetensors *f) { return f->label; }
int cb_safetensors_count(const cb_safetensors *f) { return f->n; }

const cb_safetensors_tensor *cb_safetensors_at(const cb_safetensors *f, int i) {
    return i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const cb_safetensors_tensor *cb_safetensors_find(const cb_safetensors *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int cb_safetensors_metadata_count(const cb_safetensors *f) { return f->n_meta; }

const cb_safetensors_kv *cb_safetensors_metadata_at(const cb_safetensors *f, int i) {
    return i >= 0 && i < f->n_meta ? &f->meta[i] : NULL;
}

const char *cb_safetensors_metadata(const cb_safetensors *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

/* ---- Writer ----------------------------------------------------------------------------- */

typedef struct cb__buf {
    char *p;
    size_t len, cap;
    int full;                          /* 1: over CB_SAFETENSORS_HEADER_MAX, 2: out of memory */
} cb__buf;

static void cb__put(cb__buf *b, const char *s, size_t n) {
    if (b->full) return;
    if (b->len + n > CB_SAFETENSORS_HEADER_MAX) {
        b->full = 1;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n) cap *= 2;
        char *p = cb_realloc(b->p, cap);
        if (!p) {
            b->full = 2;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void cb__puts(cb__buf *b, const char *s) { cb__put(b, s, strlen(s)); }

static void cb__put_u64(cb__buf *b, uint64_t v) {
    char tmp[24];
    int k = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    cb__put(b, tmp, (size_t)k);
}

/* A JSON string; s is valid UTF-8 (checked by the caller). */
static void cb__put_str(cb__buf *b, const char *s) {
    cb__put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            cb__put(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            cb__put(b, esc, 6);
        } else {
            cb__put(b, (const char *)c, 1);
        }
    }
    cb__put(b, "\"", 1);
}

static int cb__valid_utf8(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = cb__utf8_len((const unsigned char *)s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static int cb__write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int cb__entry_cmp(const void *a, const void *b) {
    return strcmp((*(const cb_safetensors_entry *const *)a)->name,
                  (*(const cb_safetensors_entry *const *)b)->name);
}

/* Checks the entries and computes each one's size into bytes[]. */
static int cb__check_entries(const char *path, const cb_safetensors_entry *t, int n,
                             const cb_safetensors_kv *meta, int n_meta, size_t *bytes,
                             cb_error *err) {
    for (int i = 0; i < n; i++) {
        const cb_safetensors_entry *e = &t[i];
        if (!e->name || !cb__valid_utf8(e->name) || strcmp(e->name, "__metadata__") == 0)
            return cb_error_set(err, CB_EINVAL, "%s: tensor %d: name %s%s%s is not allowed", path,
                                i, e->name ? "\"" : "", e->name ? e->name : "NULL",
                                e->name ? "\"" : "");
        if ((unsigned)e->dtype >= CB_SAFETENSORS_N_DTYPES)
            return cb_error_set(err, CB_EINVAL, "%s: tensor %s: bad dtype %d", path, e->name,
                                (int)e->dtype);
        if (e->ndim < 0 || e->ndim > CB_SAFETENSORS_MAX_DIMS || (e->ndim > 0 && !e->dims))
            return cb_error_set(err, CB_EINVAL, "%s: tensor %s: %d dims (at most %d)", path,
                                e->name, e->ndim, CB_SAFETENSORS_MAX_DIMS);
        uint64_t numel = 1, nb;
        for (int d = 0; d < e->ndim; d++)
            if (e->dims[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)e->dims[d], &numel))
                return cb_error_set(err, CB_EINVAL, "%s: tensor %s: bad dim %lld", path,
                                    e->name, (long long)e->dims[d]);
        if (__builtin_mul_overflow(numel, (uint64_t)cb__dtypes[e->dtype].size, &nb) ||
            nb > SIZE_MAX / 2)
            return cb_error_set(err, CB_EINVAL, "%s: tensor %s is too large", path, e->name);
        if (nb > 0 && !e->data)
            return cb_error_set(err, CB_EINVAL, "%s: tensor %s has no data", path, e->name);
        bytes[i] = (size_t)nb;
    }
    for (int i = 0; i < n_meta; i++)
        if (!meta[i].key || !meta[i].value || !cb__valid_utf8(meta[i].key) ||
            !cb__valid_utf8(meta[i].value))
            return cb_error_set(err, CB_EINVAL, "%s: metadata entry %d is not UTF-8 text", path,
                                i);
    if (n > 1) {
        const cb_safetensors_entry **s = cb_malloc((size_t)n * sizeof *s);
        if (!s) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", path);
        for (int i = 0; i < n; i++) s[i] = &t[i];
        qsort(s, (size_t)n, sizeof *s, cb__entry_cmp);
        int rc = CB_OK;
        for (int i = 1; i < n && !rc; i++)
            if (strcmp(s[i]->name, s[i - 1]->name) == 0)
                rc = cb_error_set(err, CB_EINVAL, "%s: tensor %s given twice", path, s[i]->name);
        cb_free(s);
        if (rc) return rc;
    }
    return CB_OK;
}

int cb_safetensors_write(const char *path, const cb_safetensors_entry *t, int n,
                         const cb_safetensors_kv *meta, int n_meta, cb_error *err) {
    if (n < 0 || n_meta < 0 || (n > 0 && !t) || (n_meta > 0 && !meta))
        return cb_error_set(err, CB_EINVAL, "%s: bad tensor or metadata list", path);
    size_t *bytes = cb_malloc((size_t)(n > 0 ? n : 1) * sizeof *bytes);
    if (!bytes) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", path);
    int rc = cb__check_entries(path, t, n, meta, n_meta, bytes, err);
    if (rc) {
        cb_free(bytes);
        return rc;
    }
    cb__buf b = {0};
    cb__put(&b, "12345678", 8); /* the header size, filled in below */
    cb__puts(&b, "{");
    if (n_meta > 0) {
        cb__puts(&b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) cb__puts(&b, ",");
            cb__put_str(&b, meta[i].key);
            cb__puts(&b, ":");
            cb__put_str(&b, meta[i].value);
        }
        cb__puts(&b, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || n_meta > 0) cb__puts(&b, ",");
        cb__put_str(&b, t[i].name);
        cb__puts(&b, ":{\"dtype\":\"");
        cb__puts(&b, cb__dtypes[t[i].dtype].name);
        cb__puts(&b, "\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d) cb__puts(&b, ",");
            cb__put_u64(&b, (uint64_t)t[i].dims[d]);
        }
        cb__puts(&b, "],\"data_offsets\":[");
        cb__put_u64(&b, off);
        cb__puts(&b, ",");
        off += bytes[i];
        cb__put_u64(&b, off);
        cb__puts(&b, "]}");
    }
    cb__puts(&b, "}");
    while (b.len % 8) cb__puts(&b, " ");
    if (b.full) {
        cb_free(b.p);
        cb_free(bytes);
        if (b.full == 2) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", path);
        return cb_error_set(err, CB_EINVAL, "%s: the header would be over %u bytes", path,
                            CB_SAFETENSORS_HEADER_MAX);
    }
    uint64_t hlen = b.len - 8;
    memcpy(b.p, &hlen, 8);

    size_t plen = strlen(path);
    char *tmp = cb_malloc(plen + 5);
    if (!tmp) {
        cb_free(b.p);
        cb_free(bytes);
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = cb_error_set(err, CB_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        int bad = cb__write_all(fd, b.p, b.len);
        for (int i = 0; i < n && !bad; i++) bad = cb__write_all(fd, t[i].data, bytes[i]);
        if (!bad) bad = fsync(fd);
        int e = errno;
        if (close(fd) != 0 && !bad) {
            bad = 1;
            e = errno;
        }
        if (!bad && rename(tmp, path) != 0) {
            bad = 1;
            e = errno;
        }
        if (bad) {
            unlink(tmp);
            rc = cb_error_set(err, CB_EIO, "%s: cannot write: %s", path,
                              e ? strerror(e) : "short write");
        }
    }
    cb_free(tmp);
    cb_free(b.p);
    cb_free(bytes);
    return rc;
}
