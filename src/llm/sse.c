/* llm/sse.c - incremental server-sent events parser (see sse.h).
 *
 * The buffer holds the event's data so far followed by the line being read; a completed "data"
 * line's value moves down to extend the data (it can only move left: the value sits after its
 * field name), so one buffer of cap bytes bounds everything. */
#include "llm/sse.h"

#include <string.h>

void cb_sse_init(cb_sse *p, char *buf, size_t cap) {
    memset(p, 0, sizeof *p);
    p->buf = buf;
    p->cap = cap;
}

static int too_big(cb_sse *p, cb_error *err, const char *what, size_t limit) {
    p->failed = 1;
    return cb_error_set(err, CB_EFULL, "event stream: %s longer than %zu bytes", what, limit);
}

static int dispatch(cb_sse *p, cb_sse_fn fn, void *arg) {
    if (!p->has_data) { /* no data line: nothing to dispatch (the spec's empty data buffer) */
        p->type[0] = '\0';
        return 0;
    }
    p->buf[p->data_len - 1] = '\0'; /* the last line's '\n' */
    cb_sse_event ev = {p->type[0] ? p->type : "message", p->buf, p->data_len - 1, p->id};
    int rc = fn ? fn(arg, &ev) : 0;
    p->data_len = 0;
    p->has_data = 0;
    p->type[0] = '\0';
    return rc;
}

/* The line at buf + data_len (line_len bytes) is complete. */
static int line_done(cb_sse *p, cb_sse_fn fn, void *arg, cb_error *err) {
    char *s = p->buf + p->data_len;
    size_t n = p->line_len;
    p->line_len = 0;
    if (!p->started) {
        p->started = 1;
        if (n >= 3 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
            (unsigned char)s[2] == 0xBF)
            s += 3, n -= 3;
    }
    if (n == 0)
        return dispatch(p, fn, arg);
    if (s[0] == ':')
        return 0; /* a comment */
    const char *colon = memchr(s, ':', n);
    const size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen && *v == ' ')
        v++, vlen--;
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        memmove(p->buf + p->data_len, v, vlen); /* left or in place: v is past "data" */
        p->data_len += vlen;
        p->buf[p->data_len++] = '\n';
        p->has_data = 1;
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        if (vlen >= sizeof p->type)
            return too_big(p, err, "an event type", sizeof p->type - 1);
        memcpy(p->type, v, vlen);
        p->type[vlen] = '\0';
    } else if (flen == 2 && memcmp(s, "id", 2) == 0) {
        if (memchr(v, '\0', vlen))
            return 0; /* the spec ignores an id holding NUL */
        if (vlen >= sizeof p->id)
            return too_big(p, err, "an event id", sizeof p->id - 1);
        memcpy(p->id, v, vlen);
        p->id[vlen] = '\0';
    } /* "retry" and unknown fields: ignored */
    return 0;
}

int cb_sse_feed(cb_sse *p, const char *bytes, size_t n, cb_sse_fn fn, void *arg, cb_error *err) {
    if (p->failed)
        return cb_error_set(err, CB_EFULL, "event stream: parser stopped by an earlier error");
    for (size_t i = 0; i < n; i++) {
        const char c = bytes[i];
        if (p->last_cr) {
            p->last_cr = 0;
            if (c == '\n')
                continue; /* CRLF: the CR ended the line */
        }
        if (c == '\r' || c == '\n') {
            p->last_cr = c == '\r';
            int rc = line_done(p, fn, arg, err);
            if (rc)
                return rc;
            continue;
        }
        if (p->data_len + p->line_len + 1 >= p->cap) /* keep a byte for the NUL */
            return too_big(p, err, "an event (data and line)", p->cap - 1);
        p->buf[p->data_len + p->line_len++] = c;
    }
    return 0;
}

int cb_sse_finish(cb_sse *p) {
    const int dropped = p->line_len > 0 || p->has_data;
    p->data_len = p->line_len = 0;
    p->has_data = 0;
    p->type[0] = '\0';
    return dropped;
}
