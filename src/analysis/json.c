/* analysis/json.c - the streaming JSON writer (see json.h).
 *
 * Design: values go straight to the FILE; the writer keeps one "no member yet" flag per nesting
 * level to place commas, and a pending-key flag so a value after a key is not preceded by a
 * comma. With indent > 0 every member starts on its own line; empty containers stay "{}" / "[]".
 * Strings are escaped per RFC 8259: '"' and '\\' with a backslash, every control character
 * (< 0x20, and DEL) as \u00XX. Bytes that are not valid UTF-8 become U+FFFD, so the output is
 * always valid UTF-8 JSON whatever a config or the command line contained. Doubles use the
 * shortest of %.15g / %.16g / %.17g that reads back to the same value; NaN and infinities are
 * written as null (JSON has no such numbers). Number formatting assumes the "C" numeric locale
 * (the default of a C program; colobench never calls setlocale).
 * Errors are sticky: the first misuse (CB_EINVAL: too deep, unbalanced end, key where a value is
 * due) or write failure (CB_EIO) is kept and reported by cb_json_finish; later calls are no-ops.
 * Thread-safety: one writer per thread. Ownership: the FILE is borrowed and never closed.
 */
#include "analysis/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/error.h"
#include "core/fmt.h"

static void put_str(cb_json *j, const char *s) {
    if (j->error) return;
    if (fputs(s, j->out) == EOF) j->error = CB_EIO;
}

static void put_char(cb_json *j, char c) {
    if (j->error) return;
    if (fputc((unsigned char)c, j->out) == EOF) j->error = CB_EIO;
}

static void newline_indent(cb_json *j, int depth) {
    if (j->indent <= 0) return;
    put_char(j, '\n');
    for (int i = 0; i < depth * j->indent; i++) put_char(j, ' ');
}

/* Called before every value and every key: the comma and line break for a new member. */
static void before_member(cb_json *j) {
    if (j->error) return;
    if (j->pending_key) {
        j->pending_key = false;
        return;
    }
    if (j->depth > 0) {
        if (!j->first[j->depth - 1]) put_char(j, ',');
        j->first[j->depth - 1] = false;
        newline_indent(j, j->depth);
    }
}

void cb_json_init(cb_json *j, FILE *out, int indent) {
    memset(j, 0, sizeof *j);
    j->out = out;
    j->indent = indent < 0 ? 0 : indent;
    if (!out) j->error = CB_EINVAL;
}

static void begin(cb_json *j, char open) {
    if (j->error) return;
    if (j->depth >= CB_JSON_MAX_DEPTH) {
        j->error = CB_EINVAL;
        return;
    }
    before_member(j);
    put_char(j, open);
    j->first[j->depth++] = true;
}

static void end(cb_json *j, char close) {
    if (j->error) return;
    if (j->depth <= 0 || j->pending_key) {
        j->error = CB_EINVAL;
        return;
    }
    bool empty = j->first[--j->depth];
    if (!empty) newline_indent(j, j->depth);
    put_char(j, close);
}

void cb_json_object_begin(cb_json *j) { begin(j, '{'); }
void cb_json_object_end(cb_json *j) { end(j, '}'); }
void cb_json_array_begin(cb_json *j) { begin(j, '['); }
void cb_json_array_end(cb_json *j) { end(j, ']'); }

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s starts an invalid one. */
static size_t utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        if (s[1] < lo || s[1] > hi) return 0;
        return (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        if (s[1] < lo || s[1] > hi) return 0;
        if ((s[2] & 0xc0) != 0x80) return 0;
        return (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

static void write_escaped(cb_json *j, const char *str) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    put_char(j, '"');
    while (*s && !j->error) {
        unsigned char c = *s;
        if (c == '"' || c == '\\') {
            put_char(j, '\\');
            put_char(j, (char)c);
            s++;
        } else if (c < 0x20 || c == 0x7f) {
            char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf], '\0'};
            put_str(j, esc);
            s++;
        } else if (c < 0x80) {
            put_char(j, (char)c);
            s++;
        } else {
            /* utf8_len stops at the NUL terminator: continuation checks fail on it. */
            size_t len = utf8_len(s);
            if (len == 0) {
                put_str(j, "\\ufffd");
                s++;
            } else {
                if (!j->error && fwrite(s, 1, len, j->out) != len) j->error = CB_EIO;
                s += len;
            }
        }
    }
    put_char(j, '"');
}

void cb_json_key(cb_json *j, const char *key) {
    if (j->error) return;
    if (j->depth <= 0 || j->pending_key || !key) {
        j->error = CB_EINVAL;
        return;
    }
    before_member(j);
    write_escaped(j, key);
    put_str(j, j->indent > 0 ? ": " : ":");
    j->pending_key = true;
}

void cb_json_string(cb_json *j, const char *s) {
    if (j->error) return;
    before_member(j);
    if (s)
        write_escaped(j, s);
    else
        put_str(j, "null");
}

void cb_json_int(cb_json *j, int64_t v) {
    if (j->error) return;
    before_member(j);
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    put_str(j, buf);
}

void cb_json_uint(cb_json *j, uint64_t v) {
    if (j->error) return;
    before_member(j);
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    put_str(j, buf);
}

void cb_json_double(cb_json *j, double v) {
    if (j->error) return;
    before_member(j);
    if (!isfinite(v)) {
        put_str(j, "null");
        return;
    }
    char buf[40];
    *cb_fmt_double(buf, v) = '\0';
    put_str(j, buf);
}

void cb_json_bool(cb_json *j, bool v) {
    if (j->error) return;
    before_member(j);
    put_str(j, v ? "true" : "false");
}

void cb_json_null(cb_json *j) {
    if (j->error) return;
    before_member(j);
    put_str(j, "null");
}

int cb_json_finish(cb_json *j) {
    if (!j->error && (j->depth != 0 || j->pending_key)) j->error = CB_EINVAL;
    put_char(j, '\n');
    if (!j->error && j->out && (fflush(j->out) != 0 || ferror(j->out))) j->error = CB_EIO;
    return j->error;
}
