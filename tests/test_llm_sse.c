/* tests/test_llm_sse.c - the server-sent events parser (llm/sse.c) against the WHATWG event
 * stream rules, the way OpenAI-compatible servers (vLLM, SGLang, llama.cpp) frame a streaming
 * completion: every stream is fed whole, byte by byte and in every split into two pieces, and
 * must give the same events; CRLF / CR / LF line ends (a CRLF split across feeds is one end),
 * comments, multi-line data, the one optional space, fields without a colon, event types and
 * ids, a leading BOM, no dispatch without data, an incomplete last event dropped, a callback
 * stopping the parse, and a line or event over the buffer failing with the limit named and
 * memory untouched past it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/sse.h"

/* Events as text: "type|id|data" lines joined by '\n', so a whole parse compares as a string. */
typedef struct got {
    char text[4096];
    size_t len;
    int stop_at; /* stop (return 1) at this event number (1-based), 0: never */
    int n;
} got;

static int on_event(void *arg, const cb_sse_event *ev) {
    got *g = arg;
    g->n++;
    CB_CHECK_EQ_INT((int)strlen(ev->data), (int)ev->data_len); /* NUL-terminated, no NUL inside */
    int w = snprintf(g->text + g->len, sizeof g->text - g->len, "%s|%s|%s\n", ev->type, ev->id,
                     ev->data);
    if (w > 0)
        g->len += (size_t)w;
    return g->stop_at && g->n == g->stop_at ? 1 : 0;
}

/* The parse of s fed in pieces cut at `cut` (0: whole), then byte by byte, must all equal want;
 * finish must report `dropped`. */
static void same_every_split(const char *s, const char *want, int dropped) {
    const size_t n = strlen(s);
    for (size_t cut = 0; cut <= n + 1; cut++) { /* cut n + 1: byte by byte */
        char buf[512];
        cb_sse p;
        cb_sse_init(&p, buf, sizeof buf);
        got g = {0};
        cb_error err = {0};
        if (cut == n + 1) {
            for (size_t i = 0; i < n; i++)
                CB_CHECK_EQ_INT(cb_sse_feed(&p, s + i, 1, on_event, &g, &err), 0);
        } else {
            CB_CHECK_EQ_INT(cb_sse_feed(&p, s, cut, on_event, &g, &err), 0);
            CB_CHECK_EQ_INT(cb_sse_feed(&p, s + cut, n - cut, on_event, &g, &err), 0);
        }
        CB_CHECK_EQ_INT(cb_sse_finish(&p), dropped);
        if (strcmp(g.text, want) != 0) {
            printf("# cut %zu: got\n%s# want\n%s", cut, g.text, want);
            CB_CHECK(0);
            return;
        }
    }
}

static void test_openai_stream(void) {
    same_every_split("data: {\"choices\":[{\"text\":\"Hi\"}]}\n\n"
                     "data: {\"choices\":[{\"text\":\" there\"}]}\n\n"
                     "data: [DONE]\n\n",
                     "message||{\"choices\":[{\"text\":\"Hi\"}]}\n"
                     "message||{\"choices\":[{\"text\":\" there\"}]}\n"
                     "message||[DONE]\n",
                     0);
}

static void test_line_ends_and_fields(void) {
    /* CRLF, CR alone, LF; comments; two data lines; no space / two spaces; a bare "data" */
    same_every_split(": keep-alive\r\n"
                     "data:a\r\ndata:  b\r\n\r\n"
                     "event: delta\rdata\r\r"
                     "id: 7\nretry: 100\nfoo: bar\ndata: c\n\n",
                     "message||a\n b\n"
                     "delta||\n"
                     "message|7|c\n",
                     0);
}

static void test_no_data_bom_and_tail(void) {
    /* a BOM before the first field; an event with only a type is not dispatched and does not
     * leak its type into the next; the id persists; a trailing event without its empty line
     * is dropped */
    same_every_split("\xEF\xBB\xBFid: x\nevent: ping\n\n"
                     "data: 1\n\n"
                     "data: 2",
                     "message|x|1\n", 1);
    same_every_split("data: 1\n\n", "message||1\n", 0);
    same_every_split("", "", 0);
}

static void test_stop(void) {
    char buf[256];
    cb_sse p;
    cb_sse_init(&p, buf, sizeof buf);
    got g = {.stop_at = 2};
    cb_error err = {0};
    const char *s = "data: a\n\ndata: b\n\ndata: c\n\n";
    CB_CHECK_EQ_INT(cb_sse_feed(&p, s, strlen(s), on_event, &g, &err), 1);
    CB_CHECK_EQ_INT(g.n, 2);
    CB_CHECK_STR_EQ(g.text, "message||a\nmessage||b\n");
}

static void test_limits(void) {
    /* an event whose data outgrows the buffer: CB_EFULL, the limit named, nothing written past
     * the buffer, later feeds refused */
    char mem[64 + 8];
    memset(mem, 0x5A, sizeof mem);
    cb_sse p;
    cb_sse_init(&p, mem, 64);
    got g = {0};
    cb_error err = {0};
    int rc = 0;
    for (int i = 0; i < 40 && !rc; i++)
        rc = cb_sse_feed(&p, "data: 12345\n", 12, on_event, &g, &err);
    CB_CHECK_EQ_INT(rc, CB_EFULL);
    CB_CHECK_CONTAINS(err.msg, "longer than 63 bytes");
    for (int i = 64; i < 72; i++)
        CB_CHECK_EQ_INT((unsigned char)mem[i], 0x5A);
    CB_CHECK_EQ_INT(cb_sse_feed(&p, "\n", 1, on_event, &g, &err), CB_EFULL);
    CB_CHECK_EQ_INT(g.n, 0);
    /* a type or an id over its bound */
    char buf[512], big[CB_SSE_ID_MAX + 16];
    cb_sse_init(&p, buf, sizeof buf);
    memset(big, 'i', sizeof big);
    memcpy(big, "id: ", 4);
    big[sizeof big - 1] = '\n';
    CB_CHECK_EQ_INT(cb_sse_feed(&p, big, sizeof big, on_event, &g, &err), CB_EFULL);
    CB_CHECK_CONTAINS(err.msg, "event id");
    cb_sse_init(&p, buf, sizeof buf);
    char ty[CB_SSE_TYPE_MAX + 16];
    memset(ty, 't', sizeof ty);
    memcpy(ty, "event: ", 7);
    ty[sizeof ty - 1] = '\n';
    CB_CHECK_EQ_INT(cb_sse_feed(&p, ty, sizeof ty, on_event, &g, &err), CB_EFULL);
    CB_CHECK_CONTAINS(err.msg, "event type");
    /* exactly at the bound: the line "data:" + 62 bytes (67) and its NUL fill a 68-byte buffer */
    char fit[5 + 62 + 2];
    memcpy(fit, "data:", 5);
    memset(fit + 5, 'v', 62);
    fit[67] = '\n', fit[68] = '\n';
    cb_sse_init(&p, mem, 68);
    got g2 = {0};
    CB_CHECK_EQ_INT(cb_sse_feed(&p, fit, sizeof fit, on_event, &g2, &err), 0);
    CB_CHECK_EQ_INT(g2.n, 1);
}

int main(void) {
    CB_RUN(test_openai_stream);
    CB_RUN(test_line_ends_and_fields);
    CB_RUN(test_no_data_bom_and_tail);
    CB_RUN(test_stop);
    CB_RUN(test_limits);
    return cb_test_done();
}
