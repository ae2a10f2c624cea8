/* llm/sse.h - an incremental parser of server-sent events (the WHATWG HTML "event stream"
 * format), the framing of a streaming OpenAI-compatible response (issue 16): bytes go in as the
 * transport delivers them, split anywhere, and each complete event comes out once.
 *
 * The format, as the parser implements it: lines end in CRLF, LF or CR (a CRLF split between two
 * feeds is one line end); a line starting with ':' is a comment; otherwise "field: value" (one
 * space after the colon is dropped; a line with no colon is a field with an empty value);
 * "data" lines append their value and a '\n' to the event's data, "event" sets its type, "id"
 * its id (a value holding NUL is ignored), "retry" and unknown fields are ignored; an empty line
 * dispatches the event (data without its last '\n'; an event with no data line is not
 * dispatched) and resets data and type (the id persists, as the spec's last event id). A UTF-8
 * BOM at the very start is skipped. Bytes after the last empty line at the end of the stream are
 * an incomplete event: cb_sse_finish drops it, as a browser does.
 *
 * Memory: the caller's buffer (cap bytes) holds the line being read and the event's data and
 * fields; nothing is allocated. An event or line that does not fit is an error (CB_EFULL,
 * naming cap) and the parser stops: a malformed or hostile stream never grows memory.
 *
 * Threads: one parser per stream; no global state. */
#ifndef CB_LLM_SSE_H
#define CB_LLM_SSE_H

#include <stddef.h>

#include "colobench/error.h"

#define CB_SSE_ID_MAX 256    /* bytes of an event id kept (longer ids are an error) */
#define CB_SSE_TYPE_MAX 64   /* bytes of an event type kept (longer types are an error) */

typedef struct cb_sse_event {
    const char *type; /* "message" when the stream named none */
    const char *data; /* data_len bytes, then a NUL (the lines joined by '\n') */
    size_t data_len;
    const char *id; /* the last event id seen ("" when none) */
} cb_sse_event;

/* Called once per dispatched event; the event's pointers are valid during the call. A non-zero
 * return stops the parse: cb_sse_feed returns it. */
typedef int (*cb_sse_fn)(void *arg, const cb_sse_event *ev);

typedef struct cb_sse {
    char *buf;      /* cap bytes: [data | line] */
    size_t cap;
    size_t data_len; /* event data so far, at buf */
    size_t line_len; /* the line being read, at buf + data_len */
    int has_data;    /* a data line was seen in this event */
    int last_cr;     /* the previous byte ended a line with CR (a following LF is the same end) */
    int started;     /* past a possible BOM */
    int failed;
    char type[CB_SSE_TYPE_MAX];
    char id[CB_SSE_ID_MAX];
} cb_sse;

/* A parser over buf (cap >= 16 bytes: the most an event's data plus one line may take). */
void cb_sse_init(cb_sse *p, char *buf, size_t cap);

/* Parses n more bytes, calling fn for each event they complete. 0, fn's non-zero return, or
 * CB_EFULL (a line or event over the buffer: err says so; later feeds fail the same way). */
int cb_sse_feed(cb_sse *p, const char *bytes, size_t n, cb_sse_fn fn, void *arg, cb_error *err);

/* The end of the stream: 1 when an incomplete event (bytes after the last empty line) was
 * dropped, else 0. */
int cb_sse_finish(cb_sse *p);

#endif
