/* bench/bench_openai.c - the llm.openai client must never be the bottleneck (issue 16).
 *
 * One process: a minimal loopback HTTP/1.1 server on a thread of its own (epoll, keep-alive,
 * level-triggered, one thread) with two canned answers: a JSON completion with Content-Length
 * (any path), and on /stream/v1/completions a text/event-stream (chunked, as vLLM's uvicorn
 * sends it) of K token events, a usage event and `data: [DONE]`, each event one write(), the
 * token events --gap-us apart on absolute deadlines (a timerfd). The server notes the
 * CLOCK_MONOTONIC time right after the write() of each token event and of a response's last
 * bytes (so "server time" includes the write call, not the client's receipt: loopback delivery
 * is on the client's side of every difference below).
 *
 * Phases, in this order, all against that server:
 *   1. wrk (Debian's, -t1 -c64) POSTing the body the stage sends: the established tool's req/s.
 *   2. throughput: llm.prompts (synthetic, 4 ids in, 1 token out) -> llm.openai (stream: false,
 *      max_concurrency 64), closed loop concurrency 64, N = 20 000 x --seconds queries (10 %
 *      warm-up); req/s = measured ok queries / (last end - first start); the process's CPU per
 *      request (getrusage), the server thread's (its CPU clock) and the difference (the client
 *      and the runtime).
 *   3. added latency per request: concurrency 1, 2000 measured requests (+10 % warm-up): the
 *      query's end_ns minus the server's finish-writing time of the same response (at
 *      concurrency 1 the order the queries end is the order the server answered).
 *   4. the same for a plain blocking-socket client (raw_phase): the floor any client pays.
 *   5. added latency per streamed token: /stream, K = 16 events --gap-us 500 apart,
 *      concurrency 1, 300 measured requests: first token = scheduled_ns + ttft_ns (llm.openai's
 *      metric 3) - the server's write time of event 0; every client gap (itl_ns, metric 8)
 *      minus the server's gap between the same two writes. 6. The plain client on the stream.
 * The throughput phase's CPU is also split by thread (/proc/self/task/TID/schedstat, sampled
 * every 20 ms): llm.openai's I/O thread, the stage workers, the load generator, the prefetch,
 * the recorder's writer, the server.
 * Prints one table and the ratio client/wrk. Exit 0 unless something fails to run (never on
 * speed); a missing wrk is said and skipped.
 *
 * Threads: the server thread owns its sockets and connections; main owns everything else. They
 * share the recording arrays through `published` (release/acquire: a response's times are
 * written before its count is published) and `base` (set by main between phases, when the
 * server is idle). The server's K and gap are set by main between phases too (atomics).
 * Usage: bench_openai [--seconds S] [--quick] [--chunks K] [--gap-us U] [--workers W]
 * (--workers: llm.openai instances in the throughput phase, each with its own I/O thread;
 * the figure is for one, the default)
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "analysis/stats.h"
#include "core/alloc.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "record/recorder.h"
#include "record/records.h"
#include "stages/builtin.h"

#define SRV_MAX_CONNS 512
#define SRV_IN_BYTES 16384          /* a request's head must fit; bodies are skipped */
#define SRV_OUT_BYTES 65536         /* bytes queued behind a full socket */
#define SRV_MAX_K 256               /* token events per streamed response */
#define SRV_EVENTS 64

/* llm.openai's metric indices (its table's order, src/stages/llm/openai.c). */
enum { M_TTFT = 3, M_ITL = 8 };

/* The body llm.openai sends for a 4-id prompt with output_len 1 (ignore_eos from llm.prompts). */
static const char k_body[] = "{\"prompt\":[17,42,7,99],\"max_tokens\":1,\"temperature\":0,"
                             "\"ignore_eos\":true}";
static const char k_completion[] =
    "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":"
    "[{\"index\":0,\"text\":\" a\",\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":"
    "{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}";

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- the server ------------------------------------------------------------------------------ */

typedef struct srv_conn {
    int fd;
    int slot;                       /* in srv.conns */
    char in[SRV_IN_BYTES];
    size_t in_len;
    int have_head;                  /* the head of the current request was parsed */
    int64_t body_left;              /* its body bytes still to skip */
    int stream_req, close_after;
    char out[SRV_OUT_BYTES];        /* unsent bytes behind a full socket */
    size_t out_off, out_len;
    int want_out;                   /* EPOLLOUT registered */
    /* a streamed response in progress */
    int streaming, next_chunk, k;
    int64_t next_ns, gap_ns, rec;   /* rec: recording index, -1 none */
} srv_conn;

typedef struct srv {
    int lfd, ep, tfd, efd, port;
    pthread_t thread;
    int started;
    srv_conn *conns[SRV_MAX_CONNS];
    /* canned bytes */
    char plain[1024];
    size_t plain_len;
    char stream_head[256];
    size_t stream_head_len;
    char tok[512], tok_last[512], usage[512], done[128];
    size_t tok_len, tok_last_len, usage_len, done_len;
    /* set by main between phases */
    _Atomic int k;
    _Atomic int64_t gap_ns;
    _Atomic int64_t base;           /* responses numbered from here are recorded */
    /* the server thread's */
    int64_t n_started;              /* responses begun */
    int64_t n_finished;
    _Atomic int64_t published;      /* n_finished, release-stored after the times */
    _Atomic int64_t errors;         /* requests refused: malformed, too large, no slot */
    /* recording: cap responses */
    int64_t cap;
    int64_t *fin_ns;                /* [cap]: last byte written */
    int64_t *chunk_ns;              /* [cap * SRV_MAX_K]: token event written */
} srv;

static void srv_close(srv *s, srv_conn *c) {
    epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    s->conns[c->slot] = NULL;
    free(c);
}

/* Sends n bytes on c, queueing what the socket does not take. 0, or -1: c must be closed. */
static int srv_send(srv *s, srv_conn *c, const char *p, size_t n) {
    if (c->out_len == c->out_off) {
        c->out_off = c->out_len = 0;
        while (n > 0) {
            ssize_t w = write(c->fd, p, n);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (w <= 0) return -1;
            p += w;
            n -= (size_t)w;
        }
        if (n == 0) return 0;
    }
    if (c->out_len + n > sizeof c->out) {
        if (c->out_off == 0) return -1;
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n > sizeof c->out) return -1;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    if (!c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 1;
    }
    return 0;
}

static int srv_flush(srv *s, srv_conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (w <= 0) return -1;
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = 0;
    return 0;
}

/* A response ended at t_ns: its time recorded (when in the window) and published. */
static void srv_finished(srv *s, int64_t rec, int64_t t_ns) {
    if (rec >= 0) s->fin_ns[rec] = t_ns;
    s->n_finished++;
    atomic_store_explicit(&s->published, s->n_finished, memory_order_release);
}

static int64_t srv_begin(srv *s) {
    int64_t i = s->n_started++ - atomic_load_explicit(&s->base, memory_order_acquire);
    return i >= 0 && i < s->cap ? i : -1;
}

/* Writes the next event of c's stream. 0, or -1: c must be closed. */
static int srv_stream_step(srv *s, srv_conn *c) {
    int i = c->next_chunk++;
    int last = i == c->k - 1;
    if (srv_send(s, c, last ? s->tok_last : s->tok, last ? s->tok_last_len : s->tok_len)) return -1;
    int64_t t = mono_ns();
    if (c->rec >= 0) s->chunk_ns[c->rec * SRV_MAX_K + i] = t;
    if (!last) {
        c->next_ns += c->gap_ns;
        return 0;
    }
    if (srv_send(s, c, s->usage, s->usage_len) || srv_send(s, c, s->done, s->done_len)) return -1;
    c->streaming = 0;
    srv_finished(s, c->rec, mono_ns());
    return 0;
}

/* The request on c is complete (head parsed, body skipped): answer it. 0 or -1 (close). */
static int srv_respond(srv *s, srv_conn *c) {
    int64_t rec = srv_begin(s);
    if (!c->stream_req) {
        if (srv_send(s, c, s->plain, s->plain_len)) return -1;
        srv_finished(s, rec, mono_ns());
        return 0;
    }
    if (srv_send(s, c, s->stream_head, s->stream_head_len)) return -1;
    c->streaming = 1;
    c->next_chunk = 0;
    c->rec = rec;
    c->k = atomic_load(&s->k);
    c->gap_ns = atomic_load(&s->gap_ns);
    c->next_ns = mono_ns() + c->gap_ns;
    if (c->gap_ns > 0) return 0; /* the timer writes the events */
    while (c->streaming)
        if (srv_stream_step(s, c)) return -1;
    return 0;
}

/* Parses c's request head in[0..end) (end: just past the blank line). 0, or -1 (malformed). */
static int srv_parse_head(srv_conn *c, size_t end) {
    const char *p = c->in, *e = c->in + end;
    const char *sp1 = memchr(p, ' ', (size_t)(e - p));
    if (!sp1) return -1;
    const char *path = sp1 + 1;
    const char *sp2 = memchr(path, ' ', (size_t)(e - path));
    if (!sp2) return -1;
    const char *eol = memchr(sp2, '\n', (size_t)(e - sp2));
    if (!eol || eol - sp2 < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) return -1;
    c->close_after = sp2[8] == '0'; /* HTTP/1.0: one request a connection */
    c->stream_req = (size_t)(sp2 - path) >= 8 && memcmp(path, "/stream/", 8) == 0;
    c->body_left = 0;
    for (const char *l = eol + 1; l < e;) {
        const char *le = memchr(l, '\n', (size_t)(e - l));
        if (!le) break;
        size_t n = (size_t)(le - l);
        if (n >= 15 && strncasecmp(l, "content-length:", 15) == 0) {
            char num[32];
            size_t k = n - 15 < sizeof num - 1 ? n - 15 : sizeof num - 1;
            memcpy(num, l + 15, k);
            num[k] = 0;
            char *end_num;
            errno = 0;
            long long v = strtoll(num, &end_num, 10);
            while (*end_num == ' ' || *end_num == '\r') end_num++;
            if (errno || v < 0 || *end_num) return -1;
            c->body_left = v;
        } else if (n >= 18 && strncasecmp(l, "transfer-encoding:", 18) == 0) {
            return -1; /* chunked request bodies: not spoken here */
        } else if (n >= 11 && strncasecmp(l, "connection:", 11) == 0) {
            const char *v = l + 11;
            while (v < le && *v == ' ') v++;
            if ((size_t)(le - v) >= 5 && strncasecmp(v, "close", 5) == 0) c->close_after = 1;
            if ((size_t)(le - v) >= 10 && strncasecmp(v, "keep-alive", 10) == 0) c->close_after = 0;
        }
        l = le + 1;
    }
    return 0;
}

/* Answers every complete request in c's buffer (one at a time: none while a stream runs).
 * 0, or -1: c must be closed. */
static int srv_process(srv *s, srv_conn *c) {
    while (!c->streaming) {
        if (!c->have_head) {
            const char *hdr_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (!hdr_end && c->in_len < sizeof c->in) return 0;
            size_t end = hdr_end ? (size_t)(hdr_end - c->in) + 4 : 0;
            if (!hdr_end || srv_parse_head(c, end)) {
                atomic_fetch_add(&s->errors, 1);
                return -1;
            }
            memmove(c->in, c->in + end, c->in_len - end);
            c->in_len -= end;
            c->have_head = 1;
        }
        size_t k = (uint64_t)c->body_left < c->in_len ? (size_t)c->body_left : c->in_len;
        memmove(c->in, c->in + k, c->in_len - k);
        c->in_len -= k;
        c->body_left -= (int64_t)k;
        if (c->body_left > 0) return 0;
        c->have_head = 0;
        if (srv_respond(s, c)) return -1;
        if (c->close_after && !c->streaming && c->out_len == c->out_off) return -1;
    }
    return 0;
}

static void srv_accept(srv *s) {
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int slot = -1;
        for (int i = 0; i < SRV_MAX_CONNS && slot < 0; i++)
            if (!s->conns[i]) slot = i;
        srv_conn *c = slot >= 0 ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd);
            atomic_fetch_add(&s->errors, 1);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->slot = slot;
        c->rec = -1;
        s->conns[slot] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* Writes the stream events that are due and arms the timer for the next one. */
static void srv_timers(srv *s) {
    int64_t now = mono_ns(), next = 0;
    for (int i = 0; i < SRV_MAX_CONNS; i++) {
        srv_conn *c = s->conns[i];
        if (!c || !c->streaming) continue;
        if (c->next_ns <= now) {
            if (srv_stream_step(s, c) || (!c->streaming && srv_process(s, c))) {
                srv_close(s, c);
                continue;
            }
        }
        if (c->streaming && (next == 0 || c->next_ns < next)) next = c->next_ns;
    }
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (next > 0) {
        its.it_value.tv_sec = next / 1000000000LL;
        its.it_value.tv_nsec = next % 1000000000LL;
    }
    timerfd_settime(s->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *srv_main(void *arg) {
    srv *s = arg;
    struct epoll_event evs[SRV_EVENTS];
    for (;;) {
        int n = epoll_wait(s->ep, evs, SRV_EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        int timers = 0;
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &s->lfd) {
                srv_accept(s);
                continue;
            }
            if (tag == &s->efd) return NULL;
            if (tag == &s->tfd) {
                uint64_t x;
                if (read(s->tfd, &x, sizeof x) < 0) { /* nothing: a spurious wake */ }
                timers = 1;
                continue;
            }
            srv_conn *c = tag;
            int bad = (evs[i].events & EPOLLERR) != 0;
            if (!bad && (evs[i].events & EPOLLOUT)) bad = srv_flush(s, c) != 0;
            if (!bad && (evs[i].events & (EPOLLIN | EPOLLHUP)) && c->in_len == sizeof c->in) {
                atomic_fetch_add(&s->errors, 1); /* pipelined past the buffer */
                bad = 1;
            }
            if (!bad && (evs[i].events & (EPOLLIN | EPOLLHUP))) {
                ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
                if (r == 0 || (r < 0 && errno == ECONNRESET)) bad = 2; /* closed: no error */
                else if (r < 0 && errno != EAGAIN && errno != EINTR) bad = 1;
                else if (r > 0) {
                    c->in_len += (size_t)r;
                    bad = srv_process(s, c) != 0;
                    if (c->streaming) timers = 1;
                }
            }
            if (bad) {
                srv_close(s, c);
            }
        }
        if (timers) srv_timers(s);
    }
    return NULL;
}

/* One canned stream event as an HTTP chunk: SIZE\r\n data: JSON\n\n \r\n. */
static size_t sse_chunk(char *dst, size_t cap, const char *json, const char *tail) {
    char ev[480];
    int n = snprintf(ev, sizeof ev, "data: %s\n\n", json);
    if (n < 0 || (size_t)n >= sizeof ev) return 0;
    int m = snprintf(dst, cap, "%x\r\n%s\r\n%s", n, ev, tail);
    return m > 0 && (size_t)m < cap ? (size_t)m : 0;
}

static int srv_start(srv *s, int64_t cap) {
    memset(s, 0, sizeof *s);
    s->lfd = s->ep = s->tfd = s->efd = -1;
    s->cap = cap;
    s->fin_ns = calloc((size_t)cap, sizeof *s->fin_ns);
    s->chunk_ns = calloc((size_t)cap * SRV_MAX_K, sizeof *s->chunk_ns);
    atomic_store(&s->k, 16);
    int n = snprintf(s->plain, sizeof s->plain,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     "%zu\r\n\r\n%s", sizeof k_completion - 1, k_completion);
    s->plain_len = (size_t)n;
    n = snprintf(s->stream_head, sizeof s->stream_head,
                 "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: "
                 "no-cache\r\nTransfer-Encoding: chunked\r\n\r\n");
    s->stream_head_len = (size_t)n;
#define EV_HEAD "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\","
    s->tok_len = sse_chunk(s->tok, sizeof s->tok,
                           EV_HEAD "\"choices\":[{\"index\":0,\"text\":\" a\",\"logprobs\":null,"
                                   "\"finish_reason\":null}],\"usage\":null}", "");
    s->tok_last_len = sse_chunk(s->tok_last, sizeof s->tok_last,
                                EV_HEAD "\"choices\":[{\"index\":0,\"text\":\" a\",\"logprobs\":"
                                        "null,\"finish_reason\":\"length\"}],\"usage\":null}", "");
    s->done_len = sse_chunk(s->done, sizeof s->done, "[DONE]", "0\r\n\r\n");
    if (!s->fin_ns || !s->chunk_ns || !s->tok_len || !s->tok_last_len || !s->done_len) return -1;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof a) || listen(s->lfd, 1024) ||
        getsockname(s->lfd, (struct sockaddr *)&a, &al))
        return -1;
    s->port = ntohs(a.sin_port);
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->ep < 0 || s->tfd < 0 || s->efd < 0) return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->lfd};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev);
    ev.data.ptr = &s->tfd;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->tfd, &ev);
    ev.data.ptr = &s->efd;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->efd, &ev);
    if (pthread_create(&s->thread, NULL, srv_main, s) != 0) return -1;
    pthread_setname_np(s->thread, "bench-oai-srv");
    s->started = 1;
    return 0;
}

/* The usage event for k tokens (set between phases, with k). */
static void srv_set_stream(srv *s, int k, int64_t gap_ns) {
    char json[400];
    snprintf(json, sizeof json,
             EV_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":%d,"
                     "\"total_tokens\":%d}}", k, k + 4);
    s->usage_len = sse_chunk(s->usage, sizeof s->usage, json, "");
    atomic_store(&s->k, k);
    atomic_store(&s->gap_ns, gap_ns);
}

static void srv_stop(srv *s) {
    if (s->started) {
        uint64_t one = 1;
        if (write(s->efd, &one, sizeof one) != sizeof one) { /* the thread then blocks: none */ }
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; i < SRV_MAX_CONNS; i++)
        if (s->conns[i]) srv_close(s, s->conns[i]);
    if (s->lfd >= 0) close(s->lfd);
    if (s->ep >= 0) close(s->ep);
    if (s->tfd >= 0) close(s->tfd);
    if (s->efd >= 0) close(s->efd);
    free(s->fin_ns);
    free(s->chunk_ns);
}

/* Starts recording responses from the next one (the server is idle). */
static int64_t srv_mark(srv *s) {
    int64_t p = atomic_load_explicit(&s->published, memory_order_acquire);
    atomic_store_explicit(&s->base, p, memory_order_release);
    return p;
}

static int64_t srv_cpu_ns(const srv *s) {
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(s->thread, &cid) || clock_gettime(cid, &ts)) return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- the client runs ------------------------------------------------------------------------- */

/* CPU time by thread, from /proc/self/task/TID/schedstat (its first field: ns on CPU), sampled
 * while a run goes on: threads that end take their last sample with them (every 20 ms). */
enum { TC_IO, TC_WORKERS, TC_LOADGEN, TC_PREFETCH, TC_WRITER, TC_SERVER, TC_OTHER, TC_COUNT };
static const char *const k_tc_names[TC_COUNT] = {
    "llm.openai I/O thread", "stage workers (run, step)", "load generator",
    "llm.prompts prefetch", "recorder writer", "loopback server (bench)", "other (bench main)"};

#define MAX_TIDS 64

typedef struct tid_cpu {
    long tid;
    int cls;
    int64_t first_ns, last_ns;
} tid_cpu;

typedef struct thread_cpu {
    tid_cpu t[MAX_TIDS];
    int n;
} thread_cpu;

static int64_t task_cpu_ns(long tid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", tid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

static int task_class(long tid) {
    char path[64], comm[32] = "";
    snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
    FILE *f = fopen(path, "r");
    if (!f) return TC_OTHER;
    if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
    fclose(f);
    if (!strncmp(comm, "cb-writer", 9)) return TC_WRITER; /* before cb-w (workers) */
    if (!strncmp(comm, "cb-w", 4)) return TC_WORKERS;
    if (!strncmp(comm, "cb-lg-", 6)) return TC_LOADGEN;
    if (!strncmp(comm, "cb-pf-", 6)) return TC_PREFETCH;
    if (!strncmp(comm, "bench-oai-srv", 13)) return TC_SERVER;
    if (!strncmp(comm, "cb-openai-io", 12)) return TC_IO;
    return TC_OTHER;
}

/* One pass over the process's threads; baseline: the values now are the starting points. */
static void thread_cpu_sample(thread_cpu *tc, int baseline) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *end;
        long tid = strtol(e->d_name, &end, 10);
        if (*end) continue;
        int64_t v = task_cpu_ns(tid);
        if (v < 0) continue;
        int i = 0;
        while (i < tc->n && tc->t[i].tid != tid) i++;
        if (i == tc->n) {
            if (tc->n == MAX_TIDS) continue;
            tc->n++;
            tc->t[i].tid = tid;
            tc->t[i].first_ns = baseline ? v : 0; /* a thread born during the run: all of it */
        }
        tc->t[i].cls = task_class(tid); /* again each time: a new thread is named a bit later */
        tc->t[i].last_ns = v;
    }
    closedir(d);
}

static void thread_cpu_sum(const thread_cpu *tc, int64_t *by_class) {
    for (int c = 0; c < TC_COUNT; c++) by_class[c] = 0;
    for (int i = 0; i < tc->n; i++) by_class[tc->t[i].cls] += tc->t[i].last_ns - tc->t[i].first_ns;
}

typedef struct bench {
    char tmp[256];
    cb_registry *reg;
    srv server;
    int run_no;
    int workers;                    /* llm.openai instances in the throughput phase */
    const char *client;             /* llm.openai's http_client: native or libcurl */
} bench;

typedef struct run_out {
    cb_loaded_records loaded;
    int64_t cpu_ns, srv_cpu_ns, wall_ns;
    int64_t responses;              /* the server's, during the run */
    int64_t class_ns[TC_COUNT];     /* CPU by thread class */
} run_out;

static int64_t rusage_cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

static void fail(const char *what, const cb_error *err) {
    char b[1200];
    cb_error_format(err, b, sizeof b);
    fprintf(stderr, "bench_openai: %s: %s\n", what, b);
}

/* Runs llm.prompts -> llm.openai: n queries (+ warmup), closed loop at `conc`, against the
 * server (path "" or "/stream"); the records into out. 0 or -1 (said). */
static int run_client(bench *b, long n, long warmup, int conc, int stream, run_out *out) {
    memset(out, 0, sizeof *out);
    char path[400], outdir[400];
    b->run_no++;
    snprintf(path, sizeof path, "%s/run%d.yaml", b->tmp, b->run_no);
    snprintf(outdir, sizeof outdir, "%s/run%d", b->tmp, b->run_no);
    if (mkdir(outdir, 0755) != 0) return -1;
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "name: bench_openai\n"
            "pipelines:\n"
            "  - name: p\n"
            "    inputs: [0]\n"
            "    outputs: [1]\n"
            "    loadgen: {component: closed, max_queries: %ld, warmup_queries: %ld,\n"
            "              timeout: 600, config: {concurrency: %d}}\n"
            "    stages:\n"
            "      - {id: 0, name: prompts, component: llm.prompts, outputs: [1],\n"
            "         config: {num_prompts: %ld, input_len: 4, output_len: %d, vocab_size: 256}}\n"
            "      - {id: 1, name: client, component: llm.openai, outputs: [], workers: %d,\n"
            "         config: {url: \"http://127.0.0.1:%d%s\", stream: %s, max_concurrency: %d,\n"
            "                  http_client: %s}}\n",
            n + warmup, warmup, conc, n + warmup, stream ? atomic_load(&b->server.k) : 1,
            conc > 1 ? b->workers : 1, b->server.port, stream ? "/stream" : "",
            stream ? "true" : "false", conc < 64 ? 64 : conc, b->client);
    if (fclose(f)) return -1;
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    if (cb_spec_load(path, NULL, 0, b->reg, &doc, &spec, &err) != CB_OK) {
        fail("config", &err);
        return -1;
    }
    cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
    ro.spec = spec;
    ro.out_dir = outdir;
    cb_recorder *rec = NULL;
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = spec;
    cb_run_result res;
    memset(&res, 0, sizeof res);
    int64_t p0 = srv_mark(&b->server);
    int64_t cpu0 = rusage_cpu_ns(), scpu0 = srv_cpu_ns(&b->server), t0 = mono_ns();
    thread_cpu *tc = calloc(1, sizeof *tc);
    if (tc) thread_cpu_sample(tc, 1);
    cb_runtime *rt = NULL;
    int rc = cb_recorder_create(&ro, &rec, &err);
    if (!rc) rc = cb_runtime_create(&o, &rt, &err);
    if (!rc) rc = cb_runtime_prepare(rt, &err);
    if (!rc) rc = cb_runtime_start(rt, cb_recorder_sink(rec), &err);
    if (!rc) {
        bool done = false;
        while (!done) {
            done = cb_runtime_wait(rt, 20000000);
            if (tc) thread_cpu_sample(tc, 0);
        }
    }
    if (rt) cb_runtime_join(rt, &res);
    cb_runtime_destroy(rt);
    if (tc) thread_cpu_sum(tc, out->class_ns);
    free(tc);
    cb_error re;
    cb_error_clear(&re);
    int src = rec ? cb_recorder_stop(rec, &re) : CB_OK;
    cb_recorder_destroy(rec);
    out->wall_ns = mono_ns() - t0;
    out->cpu_ns = rusage_cpu_ns() - cpu0;
    out->srv_cpu_ns = srv_cpu_ns(&b->server) - scpu0;
    out->responses = atomic_load_explicit(&b->server.published, memory_order_acquire) - p0;
    if (!rc && src) {
        rc = src;
        err = re;
    }
    if (rc || res.n_errors) {
        if (rc) fail("run", &err);
        for (size_t i = 0; i < res.n_errors; i++)
            fprintf(stderr, "bench_openai: %s\n", res.errors[i]);
        rc = -1;
    }
    cb_run_result_fini(&res);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    if (rc) return -1;
    char qb[500], eb[500], mb[500];
    snprintf(qb, sizeof qb, "%s/queries.bin", outdir);
    snprintf(eb, sizeof eb, "%s/events.bin", outdir);
    snprintf(mb, sizeof mb, "%s/metrics.bin", outdir);
    cb_pipeline_record r;
    memset(&r, 0, sizeof r);
    r.queries_bin = qb;
    r.events_bin = eb;
    r.metrics_bin = mb;
    if (cb_records_load(&r, &out->loaded, &err) != CB_OK) {
        fail("records", &err);
        return -1;
    }
    return 0;
}

/* ---- the phases ------------------------------------------------------------------------------ */

typedef struct results {
    double wrk_rps, wrk_srv_cpu_us;          /* wrk_rps < 0: wrk not run */
    double rps, cpu_us, srv_cpu_us, ok_share;
    double class_us[TC_COUNT];               /* CPU per request by thread class */
    long n_tput;
    int64_t lat_n, lat_p50, lat_p99;         /* per request, ns */
    int64_t tok_n, first_p50, first_p99;     /* first token, ns */
    int64_t gap_n, gap_p50, gap_p99, gap_abs_p99; /* client gap - server gap, ns */
    int64_t srv_gap_p50, cli_gap_p50;
    long coalesced;                          /* streamed requests whose chunk count differs */
    /* the same figures for a plain blocking-socket client: the floor any client pays */
    int64_t raw_lat_p50, raw_lat_p99, raw_first_p50, raw_first_p99, raw_gap_p50, raw_gap_p99;
    /* the throughput phase again with http_client: libcurl (A/B in the same run) */
    double curl_rps, curl_cpu_us, curl_io_us;
    /* the latency phases again with libcurl */
    int64_t curl_lat_p50, curl_lat_p99, curl_first_p50, curl_first_p99;
} results;

static int cmp_end(const void *a, const void *b) {
    const cb_query_event *x = *(const cb_query_event *const *)a;
    const cb_query_event *y = *(const cb_query_event *const *)b;
    return x->end_ns < y->end_ns ? -1 : x->end_ns > y->end_ns;
}

static int phase_wrk(bench *b, double seconds, results *r) {
    r->wrk_rps = -1;
    if (system("command -v wrk >/dev/null 2>&1") != 0) {
        printf("wrk: not installed: the comparison is skipped (apt-get install wrk)\n");
        return 0;
    }
    char lua[400];
    snprintf(lua, sizeof lua, "%s/post.lua", b->tmp);
    FILE *f = fopen(lua, "w");
    if (!f) return -1;
    fprintf(f, "wrk.method = \"POST\"\nwrk.body = '%s'\n"
               "wrk.headers[\"Content-Type\"] = \"application/json\"\n", k_body);
    if (fclose(f)) return -1;
    char cmd[800];
    snprintf(cmd, sizeof cmd,
             "wrk -t1 -c64 -d%.0fs -s '%s' http://127.0.0.1:%d/v1/completions 2>&1",
             seconds < 1 ? 1 : seconds, lua, b->server.port);
    int64_t p0 = srv_mark(&b->server), c0 = srv_cpu_ns(&b->server);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    while (fgets(line, sizeof line, p)) {
        const char *k = strstr(line, "Requests/sec:");
        if (k) r->wrk_rps = strtod(k + 13, NULL);
        if (strstr(line, "Non-2xx") || strstr(line, "Socket errors")) printf("wrk: %s", line);
    }
    int st = pclose(p);
    int64_t resp = atomic_load_explicit(&b->server.published, memory_order_acquire) - p0;
    if (resp > 0) r->wrk_srv_cpu_us = (double)(srv_cpu_ns(&b->server) - c0) / (double)resp / 1e3;
    if (st != 0 || r->wrk_rps <= 0) {
        fprintf(stderr, "bench_openai: wrk failed (status %d, no Requests/sec line)\n", st);
        return -1;
    }
    return 0;
}

static int phase_throughput(bench *b, long n, results *r) {
    run_out o;
    long warmup = n / 10;
    if (run_client(b, n, warmup, 64, 0, &o)) return -1;
    const cb_pipeline_record *rec = &o.loaded.rec;
    int64_t first = INT64_MAX, last = 0;
    long ok = 0, all_ok = 0;
    for (size_t i = 0; i < rec->n_queries; i++) {
        const cb_query_event *q = &rec->queries[i];
        if (q->status != CB_QUERY_OK) continue;
        all_ok++;
        if (q->warmup) continue;
        ok++;
        if (q->start_ns < first) first = q->start_ns;
        if (q->end_ns > last) last = q->end_ns;
    }
    long total = n + warmup;
    r->n_tput = ok;
    r->ok_share = (double)all_ok / (double)total;
    r->rps = ok > 0 && last > first ? (double)ok / ((double)(last - first) / 1e9) : 0;
    r->cpu_us = (double)o.cpu_ns / (double)total / 1e3;
    r->srv_cpu_us = (double)o.srv_cpu_ns / (double)total / 1e3;
    for (int c = 0; c < TC_COUNT; c++) r->class_us[c] = (double)o.class_ns[c] / (double)total / 1e3;
    cb_loaded_records_fini(&o.loaded);
    if (all_ok != total) {
        fprintf(stderr, "bench_openai: throughput: %ld of %ld queries ok\n", all_ok, total);
        return -1;
    }
    return 0;
}

/* The ended queries of a run in the order they ended (all must be ok and as many as the
 * server's responses). NULL (said) otherwise; *n their number. */
static const cb_query_event **in_end_order(const run_out *o, const char *phase, size_t *n) {
    const cb_pipeline_record *rec = &o->loaded.rec;
    *n = rec->n_queries;
    const cb_query_event **q = cb_malloc((rec->n_queries + 1) * sizeof *q);
    if (!q) return NULL;
    for (size_t i = 0; i < rec->n_queries; i++) {
        q[i] = &rec->queries[i];
        if (q[i]->status != CB_QUERY_OK) {
            fprintf(stderr, "bench_openai: %s: query %" PRIu64 " did not succeed\n", phase,
                    q[i]->query_id);
            cb_free(q);
            return NULL;
        }
    }
    if ((int64_t)rec->n_queries != o->responses) {
        fprintf(stderr, "bench_openai: %s: %zu queries but %" PRId64 " responses\n", phase,
                rec->n_queries, o->responses);
        cb_free(q);
        return NULL;
    }
    qsort(q, rec->n_queries, sizeof *q, cmp_end);
    return q;
}

static int phase_latency(bench *b, long n, results *r) {
    run_out o;
    if (run_client(b, n, n / 10, 1, 0, &o)) return -1;
    size_t m;
    const cb_query_event **q = in_end_order(&o, "latency", &m);
    int64_t *d = cb_malloc((m + 1) * sizeof *d);
    size_t k = 0;
    for (size_t i = 0; q && d && i < m && (int64_t)i < b->server.cap; i++)
        if (!q[i]->warmup) d[k++] = q[i]->end_ns - b->server.fin_ns[i];
    cb_pcts p;
    cb_stats_pcts(d, k, &p);
    r->lat_n = (int64_t)k;
    r->lat_p50 = p.p50;
    r->lat_p99 = p.p99;
    int ok = q && d && k > 0;
    cb_free(d);
    cb_free(q);
    cb_loaded_records_fini(&o.loaded);
    return ok ? 0 : -1;
}

static int phase_stream(bench *b, long n, int k_chunks, int64_t gap_ns, results *r) {
    srv_set_stream(&b->server, k_chunks, gap_ns);
    run_out o;
    if (run_client(b, n, n / 10, 1, 1, &o)) return -1;
    size_t m;
    const cb_query_event **q = in_end_order(&o, "stream", &m);
    const cb_pipeline_record *rec = &o.loaded.rec;
    /* Per query id: its ttft and its gaps in the order reported (ids are below m). */
    double *ttft = cb_malloc((m + 1) * sizeof *ttft);
    int64_t *gaps = cb_malloc((m * SRV_MAX_K + 1) * sizeof *gaps);
    int *n_gaps = cb_malloc((m + 1) * sizeof *n_gaps);
    int64_t *first = cb_malloc((m + 1) * sizeof *first);
    int64_t *diff = cb_malloc((m * SRV_MAX_K + 1) * sizeof *diff);
    int64_t *sg = cb_malloc((m * SRV_MAX_K + 1) * sizeof *sg);
    int64_t *cg = cb_malloc((m * SRV_MAX_K + 1) * sizeof *cg);
    int ok = q && ttft && gaps && n_gaps && first && diff && sg && cg;
    for (size_t i = 0; ok && i < m; i++) {
        ttft[i] = -1;
        n_gaps[i] = 0;
    }
    for (size_t i = 0; ok && i < rec->n_metrics; i++) {
        const cb_metric_event *e = &rec->metrics[i];
        if (e->stage != 1 || e->query_id >= m) continue;
        if (e->metric == M_TTFT) ttft[e->query_id] = e->value;
        if (e->metric == M_ITL && n_gaps[e->query_id] < SRV_MAX_K)
            gaps[e->query_id * SRV_MAX_K + (size_t)n_gaps[e->query_id]++] = (int64_t)e->value;
    }
    size_t nf = 0, nd = 0;
    r->coalesced = 0;
    for (size_t j = 0; ok && j < m && (int64_t)j < b->server.cap; j++) {
        const cb_query_event *qe = q[j];
        if (qe->warmup) continue;
        uint64_t id = qe->query_id;
        if (id >= m || ttft[id] < 0) {
            fprintf(stderr, "bench_openai: stream: query %" PRIu64 " has no ttft_ns\n", id);
            ok = 0;
            break;
        }
        const int64_t *w = &b->server.chunk_ns[j * SRV_MAX_K];
        first[nf++] = qe->scheduled_ns + (int64_t)ttft[id] - w[0];
        if (n_gaps[id] != k_chunks - 1) { /* two events in one read: gaps do not pair up */
            r->coalesced++;
            continue;
        }
        for (int i = 1; i < k_chunks; i++) {
            sg[nd] = w[i] - w[i - 1];
            cg[nd] = gaps[id * SRV_MAX_K + (size_t)i - 1];
            diff[nd] = cg[nd] - sg[nd];
            nd++;
        }
    }
    if (ok && (nf == 0 || nd == 0)) ok = 0;
    if (ok) {
        cb_pcts p;
        cb_stats_pcts(first, nf, &p);
        r->tok_n = (int64_t)nf;
        r->first_p50 = p.p50;
        r->first_p99 = p.p99;
        cb_stats_pcts(sg, nd, &p);
        r->srv_gap_p50 = p.p50;
        cb_stats_pcts(cg, nd, &p);
        r->cli_gap_p50 = p.p50;
        for (size_t i = 0; i < nd; i++) sg[i] = diff[i] < 0 ? -diff[i] : diff[i];
        cb_stats_pcts(sg, nd, &p);
        r->gap_abs_p99 = p.p99;
        cb_stats_pcts(diff, nd, &p);
        r->gap_n = (int64_t)nd;
        r->gap_p50 = p.p50;
        r->gap_p99 = p.p99;
    }
    cb_free(ttft);
    cb_free(gaps);
    cb_free(n_gaps);
    cb_free(first);
    cb_free(diff);
    cb_free(sg);
    cb_free(cg);
    cb_free(q);
    cb_loaded_records_fini(&o.loaded);
    return ok ? 0 : -1;
}

/* ---- the floor: a plain blocking-socket client ---------------------------------------------- */

/* The same three latency figures for the simplest client there is: one blocking socket, a read()
 * stamped as it returns, no parsing beyond counting token events. What it measures is loopback
 * delivery and a sleeping reader's wake-up on this machine: the part of the stage's figures any
 * client pays. Requests one at a time; the first 10 % not counted. */
static int raw_phase(bench *b, long n, int stream, int k, results *r) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->server.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        fprintf(stderr, "bench_openai: plain client: cannot connect: %s\n", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int req_len = snprintf(req, sizeof req,
                           "POST %s/v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                           "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                           stream ? "/stream" : "", sizeof k_body - 1, k_body);
    long total = n + n / 10;
    if (total > b->server.cap) total = b->server.cap;
    int64_t *done_t = calloc((size_t)total, sizeof *done_t);
    int64_t *tok_t = calloc((size_t)total * SRV_MAX_K, sizeof *tok_t);
    int *n_tok = calloc((size_t)total, sizeof *n_tok);
    char *buf = malloc(1 << 17);
    int ok = done_t && tok_t && n_tok && buf;
    int64_t base = srv_mark(&b->server);
    for (long i = 0; ok && i < total; i++) {
        if (write(fd, req, (size_t)req_len) != req_len) ok = 0;
        size_t have = 0;
        while (ok) {
            ssize_t got = read(fd, buf + have, (1 << 17) - 1 - have);
            int64_t t = mono_ns();
            if (got <= 0) {
                ok = 0;
                break;
            }
            buf[have + (size_t)got] = 0;
            for (const char *p = buf + have; stream && (p = strstr(p, "\"text\"")); p += 6)
                if (n_tok[i] < SRV_MAX_K) tok_t[i * SRV_MAX_K + n_tok[i]++] = t;
            have += (size_t)got;
            if (stream ? have >= 5 && !memcmp(buf + have - 5, "0\r\n\r\n", 5)
                       : have >= b->server.plain_len) {
                done_t[i] = t;
                break;
            }
            if (have >= (1 << 17) - 1) ok = 0;
        }
    }
    close(fd);
    /* the server notes its times just after its writes: wait for the last one */
    for (int w = 0; ok && w < 1000; w++) {
        if (atomic_load_explicit(&b->server.published, memory_order_acquire) >= base + total) break;
        usleep(1000);
    }
    int64_t *d = ok ? calloc((size_t)total * SRV_MAX_K + 1, sizeof *d) : NULL;
    size_t nd = 0, nf = 0;
    if (ok && d) {
        const srv *sv = &b->server;
        cb_pcts p;
        if (!stream) {
            for (long i = total / 11; i < total; i++) d[nd++] = done_t[i] - sv->fin_ns[i];
            cb_stats_pcts(d, nd, &p);
            r->raw_lat_p50 = p.p50;
            r->raw_lat_p99 = p.p99;
        } else {
            for (long i = total / 11; i < total; i++)
                if (n_tok[i] >= 1) d[nf++] = tok_t[i * SRV_MAX_K] - sv->chunk_ns[i * SRV_MAX_K];
            cb_stats_pcts(d, nf, &p);
            r->raw_first_p50 = p.p50;
            r->raw_first_p99 = p.p99;
            for (long i = total / 11; i < total; i++) {
                if (n_tok[i] != k) continue;
                const int64_t *w = &sv->chunk_ns[i * SRV_MAX_K], *c = &tok_t[i * SRV_MAX_K];
                for (int j = 1; j < k; j++) d[nd++] = (c[j] - c[j - 1]) - (w[j] - w[j - 1]);
            }
            cb_stats_pcts(d, nd, &p);
            r->raw_gap_p50 = p.p50;
            r->raw_gap_p99 = p.p99;
        }
    }
    if (!ok) fprintf(stderr, "bench_openai: plain client: a response did not come back whole\n");
    free(d);
    free(done_t);
    free(tok_t);
    free(n_tok);
    free(buf);
    return ok ? 0 : -1;
}

/* The 1-minute load average (other processes on the machine), or -1. */
static double loadavg1(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double v = -1;
    if (f && fscanf(f, "%lf", &v) != 1) v = -1;
    if (f) fclose(f);
    return v;
}

static void print_results(const results *r, double seconds, int k, int64_t gap_ns) {
    printf("\nllm.openai client benchmark (loopback server in this process, sharing the cores)\n");
    printf("%-52s %12s %s\n", "measure", "value", "unit");
    if (r->wrk_rps >= 0) {
        printf("%-52s %12.0f %s\n", "wrk -t1 -c64, same body: requests/s", r->wrk_rps, "req/s");
        printf("%-52s %12.2f %s\n", "  server thread CPU per request under wrk", r->wrk_srv_cpu_us,
               "us");
    } else {
        printf("%-52s %12s %s\n", "wrk -t1 -c64, same body: requests/s", "-", "(no wrk)");
    }
    printf("%-52s %12.0f %s\n", "llm.openai non-streamed, closed 64: requests/s", r->rps, "req/s");
    printf("%-52s %12ld %s\n", "  measured requests", r->n_tput, "req");
    printf("%-52s %12.2f %s\n", "  process CPU per request (client + server)", r->cpu_us, "us");
    printf("%-52s %12.2f %s\n", "  server thread CPU per request", r->srv_cpu_us, "us");
    printf("%-52s %12.2f %s\n", "  client CPU per request (process - server)",
           r->cpu_us - r->srv_cpu_us, "us");
    for (int c = 0; c < TC_COUNT; c++) {
        char label[80];
        snprintf(label, sizeof label, "    %s", k_tc_names[c]);
        printf("%-52s %12.2f %s\n", label, r->class_us[c], "us");
    }
    printf("%-52s %12.0f %s\n", "  the same with http_client: libcurl", r->curl_rps, "req/s");
    printf("%-52s %12.2f %s\n", "    client CPU per request (process - server)", r->curl_cpu_us,
           "us");
    printf("%-52s %12.2f %s\n", "    llm.openai I/O thread", r->curl_io_us, "us");
    printf("%-52s %12.1f %s\n", "added latency per request p50 (closed 1)", r->lat_p50 / 1e3, "us");
    printf("%-52s %12.1f %s\n", "added latency per request p99", r->lat_p99 / 1e3, "us");
    printf("%-52s %12" PRId64 " %s\n", "  requests", r->lat_n, "req");
    printf("%-52s %12.1f / %.1f %s\n", "  with http_client: libcurl p50 / p99",
           r->curl_lat_p50 / 1e3, r->curl_lat_p99 / 1e3, "us");
    printf("%-52s %12.1f / %.1f %s\n", "  plain socket client p50 / p99 (the floor)",
           r->raw_lat_p50 / 1e3, r->raw_lat_p99 / 1e3, "us");
    printf("%-52s %12.1f %s\n", "added latency first streamed token p50", r->first_p50 / 1e3, "us");
    printf("%-52s %12.1f %s\n", "added latency first streamed token p99", r->first_p99 / 1e3, "us");
    printf("%-52s %12.1f / %.1f %s\n", "  with http_client: libcurl p50 / p99",
           r->curl_first_p50 / 1e3, r->curl_first_p99 / 1e3, "us");
    printf("%-52s %12.1f / %.1f %s\n", "  plain socket client p50 / p99 (the floor)",
           r->raw_first_p50 / 1e3, r->raw_first_p99 / 1e3, "us");
    printf("%-52s %12.1f %s\n", "client gap - server gap per token p50", r->gap_p50 / 1e3, "us");
    printf("%-52s %12.1f %s\n", "client gap - server gap per token p99", r->gap_p99 / 1e3, "us");
    printf("%-52s %12.1f / %.1f %s\n", "  plain socket client p50 / p99 (the floor)",
           r->raw_gap_p50 / 1e3, r->raw_gap_p99 / 1e3, "us");
    printf("%-52s %12.1f %s\n", "  |client gap - server gap| p99", r->gap_abs_p99 / 1e3, "us");
    printf("%-52s %12.1f / %.1f %s\n", "  server gap p50 / client gap p50", r->srv_gap_p50 / 1e3,
           r->cli_gap_p50 / 1e3, "us");
    printf("%-52s %12" PRId64 " / %" PRId64 " (%ld coalesced)\n", "  streamed requests / gaps",
           r->tok_n, r->gap_n, r->coalesced);
    printf("\nratios (this run; %.0f s phases, K = %d events %.0f us apart):\n", seconds, k,
           (double)gap_ns / 1e3);
    if (r->wrk_rps > 0)
        printf("  client / wrk requests/s = %.2fx (libcurl: %.2fx)\n", r->rps / r->wrk_rps,
               r->curl_rps / r->wrk_rps);
    if (r->curl_rps > 0) printf("  native / libcurl requests/s = %.2fx\n", r->rps / r->curl_rps);
    printf("  client requests/s = %.0f (floor: >= 20000 non-streaming): %s\n", r->rps,
           r->rps >= 20000 ? "met" : "NOT met");
}

int main(int argc, char **argv) {
    double seconds = 5;
    int quick = 0, k_chunks = 16, workers = 1;
    double gap_us = 500;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--seconds") && v) seconds = strtod(argv[++i], &end);
        else if (!strcmp(a, "--gap-us") && v) gap_us = strtod(argv[++i], &end);
        else if (!strcmp(a, "--chunks") && v) k_chunks = (int)strtol(argv[++i], &end, 10);
        else if (!strcmp(a, "--workers") && v) workers = (int)strtol(argv[++i], &end, 10);
        else if (!strcmp(a, "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: bench_openai [--seconds S] [--quick] [--chunks K] [--gap-us U] "
                            "[--workers W]\n");
            return 2;
        }
        if (end && *end) {
            fprintf(stderr, "bench_openai: %s: not a number: %s\n", a, argv[i]);
            return 2;
        }
    }
    if (quick) seconds = 1;
    if (!(seconds >= 1 && seconds <= 600) || !(gap_us >= 0 && gap_us <= 1e6) || k_chunks < 2 ||
        k_chunks > SRV_MAX_K || workers < 1 || workers > 64) {
        fprintf(stderr, "bench_openai: --seconds in [1, 600], --gap-us in [0, 1e6], --chunks in "
                        "[2, %d], --workers in [1, 64]\n", SRV_MAX_K);
        return 2;
    }
    long n_tput = (long)(20000 * seconds), n_lat = quick ? 500 : 2000, n_stream = quick ? 60 : 300;
    bench *b = calloc(1, sizeof *b);
    if (!b) return 1;
    snprintf(b->tmp, sizeof b->tmp, "/tmp/cbopenai-XXXXXX");
    if (!mkdtemp(b->tmp)) return 1;
    b->workers = workers;
    b->client = "native";
    cb_error err;
    int rc = 1;
    results r;
    memset(&r, 0, sizeof r);
    int64_t cap = (n_lat + n_lat / 10 > n_stream + n_stream / 10 ? n_lat + n_lat / 10
                                                                   : n_stream + n_stream / 10);
    if (srv_start(&b->server, cap)) {
        fprintf(stderr, "bench_openai: cannot start the loopback server: %s\n", strerror(errno));
        goto out;
    }
    if (cb_builtin_registry(&b->reg, &err) != CB_OK) {
        fail("registry", &err);
        goto out;
    }
    printf("loopback server on 127.0.0.1:%d; %ld requests closed 64 (%d llm.openai worker%s), %ld "
           "closed 1, %ld streamed; load average before: %.2f\n", b->server.port,
           n_tput + n_tput / 10, workers, workers > 1 ? "s" : "", n_lat + n_lat / 10,
           n_stream + n_stream / 10, loadavg1());
    fflush(stdout);
    if (phase_wrk(b, seconds, &r)) goto out;
    if (phase_throughput(b, n_tput, &r)) goto out;
    if (phase_latency(b, n_lat, &r)) goto out;
    if (raw_phase(b, n_lat, 0, k_chunks, &r)) goto out;
    if (phase_stream(b, n_stream, k_chunks, (int64_t)(gap_us * 1e3), &r)) goto out;
    if (raw_phase(b, n_stream, 1, k_chunks, &r)) goto out;
    {
        /* The same phases with libcurl's client, in the same run. */
        results c;
        memset(&c, 0, sizeof c);
        b->client = "libcurl";
        if (phase_throughput(b, n_tput, &c)) goto out;
        if (phase_latency(b, n_lat, &c)) goto out;
        if (phase_stream(b, n_stream, k_chunks, (int64_t)(gap_us * 1e3), &c)) goto out;
        b->client = "native";
        r.curl_rps = c.rps;
        r.curl_cpu_us = c.cpu_us - c.srv_cpu_us;
        r.curl_io_us = c.class_us[TC_IO];
        r.curl_lat_p50 = c.lat_p50;
        r.curl_lat_p99 = c.lat_p99;
        r.curl_first_p50 = c.first_p50;
        r.curl_first_p99 = c.first_p99;
    }
    print_results(&r, seconds, k_chunks, (int64_t)(gap_us * 1e3));
    printf("  load average after: %.2f (other processes share these cores too)\n", loadavg1());
    if (atomic_load(&b->server.errors))
        printf("server: %" PRId64 " requests refused (malformed or too large)\n",
               atomic_load(&b->server.errors));
    rc = 0;
out:
    srv_stop(&b->server);
    cb_registry_destroy(b->reg);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", b->tmp);
    if (system(cmd) != 0) fprintf(stderr, "bench_openai: could not remove %s\n", b->tmp);
    free(b);
    return rc;
}
