/* stages/llm/oai_http.h - a minimal HTTP/1.1 client for llm.openai's plain-http servers: POST
 * requests over kept-alive connections, driven by the caller's epoll loop.
 *
 * Why: libcurl's general machinery (its timers, connection checks, header handling, allocation
 * per transfer) costs 45-60 us of CPU per request on a 2-core VM, more than the loopback server
 * it measures and twice wrk's whole cost; a benchmark client must not be the bottleneck
 * (docs/benchmarks.md, "OpenAI client"). This client does only what the stage needs: POST one
 * body to one origin, read a response framed by Content-Length, chunked transfer coding, or the
 * connection's close, and hand the body bytes over as they are read. https and anything else
 * stay on libcurl (llm.openai's http_client).
 *
 * Connections: at most max_conns open to the origin (resolved once, at create); a connection
 * whose response ended cleanly with keep-alive goes back to an idle list (LIFO) and is reused; an
 * idle connection the server closed is dropped when its close is seen. A request that fails on a
 * reused connection before any byte of the response (the server closed it while idle) is retried
 * once on a new connection, as browsers and libcurl do.
 *
 * Outcomes (cb_h1_req.outcome): CB_H1_OK (a complete response, any status), CB_H1_CONNECT (no
 * connection: refused, unreachable, connect timeout), CB_H1_TIMEOUT (timeout_ns after the start),
 * CB_H1_BROKEN (the connection closed or failed mid-response, a malformed response head or chunk,
 * a head over CB_H1_HEAD_MAX_BYTES, or on_body asked to stop), CB_H1_ABORTED (cb_h1_abort_all).
 *
 * Threads: everything on the caller's one I/O thread; no lock, no global state. Ownership: the
 * caller owns each cb_h1_req (and its body) from start until it is taken back with
 * cb_h1_take_done; the client owns connections and their buffers. */
#ifndef CB_STAGES_LLM_OAI_HTTP_H
#define CB_STAGES_LLM_OAI_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

#define CB_H1_HEAD_MAX_BYTES 16384 /* a response's status line and headers */

enum { CB_H1_OK = 0, CB_H1_CONNECT, CB_H1_TIMEOUT, CB_H1_BROKEN, CB_H1_ABORTED };

typedef struct cb_h1 cb_h1;
typedef struct cb_h1_conn cb_h1_conn;

/* Body bytes of the response to req->user, as read (status known). Non-zero: stop (BROKEN). */
typedef int (*cb_h1_body_fn)(void *user, long status, const char *data, size_t n);

typedef struct cb_h1_req {
    /* in */
    const char *body;
    size_t body_len;
    int64_t timeout_ns, connect_timeout_ns;
    void *user;
    /* out, when it ended */
    int outcome;
    long status;           /* 0 until the response head was read */
    char msg[160];         /* what went wrong, for outcomes other than OK */
    /* the client's */
    int64_t start_ns, connect_deadline_ns, deadline_ns;
    int retried, connected;
    cb_h1_conn *conn;
    struct cb_h1_req *prev, *next; /* the active list, then the done list */
} cb_h1_req;

/* url: http://HOST[:PORT]/PATH (HOST a name, an IPv4 address or [IPv6]); extra_headers: lines
 * each ending in CRLF ("Content-Type: ...\r\n..."); epfd: the caller's epoll set, where the
 * connections are registered with data.ptr = the connection (never NULL). CB_ECONFIG for a bad
 * URL or a host that does not resolve (the message says which), CB_ENOMEM. */
int cb_h1_create(const char *url, const char *extra_headers, int epfd, int max_conns,
                 cb_h1_body_fn on_body, cb_h1 **out, cb_error *err);
void cb_h1_destroy(cb_h1 *h); /* closes every connection; NULL is a no-op */

/* Starts req (fields "in" set): on an idle connection, or a new one (at most max_conns: the
 * caller keeps no more requests in flight than that). Never blocks. */
void cb_h1_start(cb_h1 *h, cb_h1_req *req);
/* An epoll event whose data.ptr is one of the client's connections. */
void cb_h1_event(cb_h1 *h, void *ptr, uint32_t events);
/* Ends requests past their deadlines (call when the epoll wait times out or often enough);
 * returns the epoll timeout to use next, in ms (-1: nothing in flight). */
int cb_h1_timeouts(cb_h1 *h, int64_t now_ns);
/* Every request in flight ends ABORTED (its connection closed). */
void cb_h1_abort_all(cb_h1 *h);
/* The ended requests, in the order they ended, taken from the client (NULL: none). */
cb_h1_req *cb_h1_take_done(cb_h1 *h);

#endif
