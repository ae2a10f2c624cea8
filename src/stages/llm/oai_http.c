/* stages/llm/oai_http.c - a minimal HTTP/1.1 client for llm.openai (see oai_http.h). */
#include "stages/llm/oai_http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define H1_READ_BYTES 65536
#define H1_HOST_MAX 256
#define H1_PATH_MAX 2048

enum { ST_CONNECTING, ST_SENDING, ST_HEAD, ST_BODY, ST_IDLE };
enum { FR_LENGTH, FR_CHUNKED, FR_CLOSE };
enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };

struct cb_h1_conn {
    int fd;
    int state;
    int reused;              /* served a request before this one */
    int keep_alive;          /* the current response allows reuse */
    int got_bytes;           /* bytes of the current response seen */
    cb_h1_req *req;
    cb_h1_conn *next_idle;
    size_t sent;             /* of head + body */
    char reqhead[512];       /* this request's head (the template + Content-Length) */
    size_t reqhead_len;
    char head[CB_H1_HEAD_MAX_BYTES];
    size_t head_len;
    int framing;
    uint64_t left;           /* FR_LENGTH: body bytes left; FR_CHUNKED: of the chunk */
    int chunk_state;
    char line[80];           /* a chunk-size or trailer line */
    size_t line_len;
};

struct cb_h1 {
    int epfd;
    int max_conns;
    int n_conns;             /* open */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char tmpl[1536];         /* "POST /path HTTP/1.1\r\nHost: h\r\n" + extra headers */
    size_t tmpl_len;
    cb_h1_body_fn on_body;
    cb_h1_conn *idle;        /* LIFO */
    cb_h1_conn **all;        /* max_conns slots (NULL: free) */
    cb_h1_req *active;       /* doubly linked */
    int64_t next_check_ns;   /* no deadline of an active request is before this */
    cb_h1_req *done, *done_tail;
    char rbuf[H1_READ_BYTES];
};

static int64_t h1_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int cb_h1_create(const char *url, const char *extra_headers, int epfd, int max_conns,
                 cb_h1_body_fn on_body, cb_h1 **out, cb_error *err) {
    *out = NULL;
    if (strncmp(url, "http://", 7) != 0)
        return cb_error_set(err, CB_ECONFIG, "url: not an http:// URL");
    const char *p = url + 7, *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) return cb_error_set(err, CB_ECONFIG, "url: unclosed [ in the host");
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= H1_HOST_MAX) return cb_error_set(err, CB_ECONFIG, "url: bad host");
    char hostbuf[H1_HOST_MAX], port[8] = "80";
    memcpy(hostbuf, host, hl);
    hostbuf[hl] = 0;
    if (*p == ':') {
        p++;
        size_t pl = strspn(p, "0123456789");
        if (pl == 0 || pl > 5 || (p[pl] && p[pl] != '/'))
            return cb_error_set(err, CB_ECONFIG, "url: bad port");
        memcpy(port, p, pl);
        port[pl] = 0;
        p += pl;
    }
    const char *path = *p ? p : "/";
    if (strlen(path) >= H1_PATH_MAX) return cb_error_set(err, CB_ECONFIG, "url: path too long");
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(hostbuf, port, &hints, &res);
    if (gai != 0 || !res)
        return cb_error_set(err, CB_ECONFIG, "url: cannot resolve %s: %s", hostbuf,
                            gai_strerror(gai));
    cb_h1 *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(res);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    memcpy(&h->addr, res->ai_addr, res->ai_addrlen);
    h->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    /* Host: the URL's authority as written (host and port). */
    int auth_len = (int)strcspn(url + 7, "/");
    int n = snprintf(h->tmpl, sizeof h->tmpl, "POST %s HTTP/1.1\r\nHost: %.*s\r\n%s", path,
                     auth_len, url + 7, extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof h->tmpl) {
        free(h);
        return cb_error_set(err, CB_ECONFIG, "url: request head over %zu bytes", sizeof h->tmpl);
    }
    h->tmpl_len = (size_t)n;
    h->epfd = epfd;
    h->max_conns = max_conns;
    h->on_body = on_body;
    h->next_check_ns = INT64_MAX;
    h->all = calloc((size_t)max_conns, sizeof *h->all);
    if (!h->all) {
        free(h);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    *out = h;
    return CB_OK;
}

static void conn_close(cb_h1 *h, cb_h1_conn *c) {
    epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (int i = 0; i < h->max_conns; i++)
        if (h->all[i] == c) {
            h->all[i] = NULL;
            break;
        }
    /* off the idle list if it is there */
    for (cb_h1_conn **pp = &h->idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == c) {
            *pp = c->next_idle;
            break;
        }
    h->n_conns--;
    free(c);
}

void cb_h1_destroy(cb_h1 *h) {
    if (!h) return;
    for (int i = 0; i < h->max_conns; i++)
        if (h->all[i]) conn_close(h, h->all[i]);
    free(h->all);
    free(h);
}

static void req_unlink(cb_h1 *h, cb_h1_req *r) {
    if (r->prev) r->prev->next = r->next;
    else h->active = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* r ends with outcome (its connection already detached or closed). */
static void req_end(cb_h1 *h, cb_h1_req *r, int outcome, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void req_end(cb_h1 *h, cb_h1_req *r, int outcome, const char *fmt, ...) {
    req_unlink(h, r);
    r->outcome = outcome;
    r->conn = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->msg, sizeof r->msg, fmt, ap);
        va_end(ap);
    }
    if (h->done_tail) h->done_tail->next = r;
    else h->done = r;
    h->done_tail = r;
}

static void conn_arm(cb_h1 *h, cb_h1_conn *c, uint32_t events, int add) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    epoll_ctl(h->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_begin(cb_h1 *h, cb_h1_conn *c, cb_h1_req *r) {
    c->req = r;
    r->conn = c;
    c->sent = 0;
    c->head_len = 0;
    c->got_bytes = 0;
    c->keep_alive = 1;
    int n = snprintf(c->reqhead, sizeof c->reqhead, "Content-Length: %zu\r\n\r\n", r->body_len);
    c->reqhead_len = n > 0 ? (size_t)n : 0;
}

static int try_send(cb_h1 *h, cb_h1_conn *c);

/* A new connection for r (or r fails). */
static void conn_open(cb_h1 *h, cb_h1_req *r) {
    int slot = -1;
    for (int i = 0; i < h->max_conns; i++)
        if (!h->all[i]) {
            slot = i;
            break;
        }
    if (slot < 0) { /* all busy or idle: drop an idle one to make room */
        if (h->idle) conn_close(h, h->idle);
        for (int i = 0; i < h->max_conns && slot < 0; i++)
            if (!h->all[i]) slot = i;
        if (slot < 0) {
            req_end(h, r, CB_H1_CONNECT, "more requests than connections (%d)", h->max_conns);
            return;
        }
    }
    int fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        req_end(h, r, CB_H1_CONNECT, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cb_h1_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        req_end(h, r, CB_H1_CONNECT, "out of memory");
        return;
    }
    c->fd = fd;
    h->all[slot] = c;
    h->n_conns++;
    conn_begin(h, c, r);
    r->connected = 0;
    if (connect(fd, (struct sockaddr *)&h->addr, h->addr_len) == 0) {
        r->connected = 1;
        c->state = ST_SENDING;
        conn_arm(h, c, EPOLLIN, 1);
        try_send(h, c);
        return;
    }
    if (errno != EINPROGRESS) {
        int e = errno;
        conn_close(h, c);
        req_end(h, r, CB_H1_CONNECT, "connect: %s", strerror(e));
        return;
    }
    c->state = ST_CONNECTING;
    conn_arm(h, c, EPOLLOUT, 1);
}

void cb_h1_start(cb_h1 *h, cb_h1_req *r) {
    r->outcome = CB_H1_OK;
    r->status = 0;
    r->msg[0] = 0;
    r->retried = 0;
    r->start_ns = h1_now();
    r->deadline_ns = r->start_ns + r->timeout_ns;
    r->connect_deadline_ns = r->start_ns + r->connect_timeout_ns;
    int64_t first = r->connect_deadline_ns < r->deadline_ns ? r->connect_deadline_ns
                                                            : r->deadline_ns;
    if (first < h->next_check_ns) h->next_check_ns = first;
    r->prev = NULL;
    r->next = h->active;
    if (h->active) h->active->prev = r;
    h->active = r;
    cb_h1_conn *c = h->idle;
    if (c) {
        h->idle = c->next_idle;
        c->next_idle = NULL;
        c->reused = 1;
        r->connected = 1;
        conn_begin(h, c, r);
        c->state = ST_SENDING;
        try_send(h, c);
        return;
    }
    conn_open(h, r);
}

/* The request on c failed before any response byte on a reused connection: once more, anew. */
static int retry_fresh(cb_h1 *h, cb_h1_conn *c) {
    cb_h1_req *r = c->req;
    if (!c->reused || c->got_bytes || !r || r->retried) return 0;
    r->retried = 1;
    c->req = NULL;
    conn_close(h, c);
    r->connected = 0;
    r->connect_deadline_ns = h1_now() + r->connect_timeout_ns;
    if (r->connect_deadline_ns < h->next_check_ns) h->next_check_ns = r->connect_deadline_ns;
    conn_open(h, r);
    return 1;
}

static void conn_fail(cb_h1 *h, cb_h1_conn *c, const char *what) {
    if (retry_fresh(h, c)) return;
    cb_h1_req *r = c->req;
    c->req = NULL;
    conn_close(h, c);
    if (r) req_end(h, r, CB_H1_BROKEN, "%s", what);
}

/* Sends what is left of the request. 0 (sent, or waiting for EPOLLOUT), or -1 when the
 * connection failed and is gone (its request retried or ended). */
static int try_send(cb_h1 *h, cb_h1_conn *c) {
    cb_h1_req *r = c->req;
    size_t tl = h->tmpl_len, hl = c->reqhead_len, total = tl + hl + r->body_len;
    while (c->sent < total) {
        struct iovec iov[3];
        int n = 0;
        size_t off = c->sent;
        if (off < tl) {
            iov[n].iov_base = h->tmpl + off;
            iov[n++].iov_len = tl - off;
            off = tl;
        }
        if (off < tl + hl) {
            iov[n].iov_base = c->reqhead + (off - tl);
            iov[n++].iov_len = tl + hl - off;
            off = tl + hl;
        }
        iov[n].iov_base = (char *)r->body + (off - tl - hl);
        iov[n++].iov_len = total - off;
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_arm(h, c, EPOLLIN | EPOLLOUT, 0);
                return 0;
            }
            if (errno == EINTR) continue;
            char m[96];
            snprintf(m, sizeof m, "send: %s", strerror(errno));
            conn_fail(h, c, m);
            return -1;
        }
        c->sent += (size_t)w;
    }
    if (c->state == ST_SENDING) c->state = ST_HEAD;
    return 0;
}

/* Header value of name (case-insensitive) in the head's lines, or NULL; *len set. */
static const char *hdr(const char *head, size_t n, const char *name, size_t *len) {
    size_t nl = strlen(name);
    const char *p = head, *end = head + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

static int has_token(const char *v, size_t n, const char *tok) {
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, tok, tl) == 0) return 1;
    return 0;
}

/* The response on c is complete: the connection goes idle or closes. */
static void resp_done(cb_h1 *h, cb_h1_conn *c) {
    cb_h1_req *r = c->req;
    c->req = NULL;
    if (c->keep_alive && c->framing != FR_CLOSE) {
        c->state = ST_IDLE;
        c->next_idle = h->idle;
        h->idle = c;
    } else {
        conn_close(h, c);
    }
    req_end(h, r, CB_H1_OK, NULL);
}

/* Body bytes (after framing) to the caller; 0, or -1 when it asked to stop. */
static int deliver(cb_h1 *h, cb_h1_conn *c, const char *d, size_t n) {
    if (n == 0) return 0;
    return h->on_body(c->req->user, c->req->status, d, n) ? -1 : 0;
}

/* Body bytes as read (framed). Returns 0 to go on, 1 when the response ended, -1 failed. */
static int body_bytes(cb_h1 *h, cb_h1_conn *c, const char *d, size_t n) {
    if (c->framing == FR_CLOSE) return deliver(h, c, d, n);
    if (c->framing == FR_LENGTH) {
        size_t k = n < c->left ? n : (size_t)c->left;
        if (deliver(h, c, d, k)) return -1;
        c->left -= k;
        if (k < n) c->keep_alive = 0; /* bytes past the body: do not reuse */
        return c->left == 0 ? 1 : 0;
    }
    size_t i = 0;
    while (i < n) {
        if (c->chunk_state == CH_DATA) {
            size_t k = n - i < c->left ? n - i : (size_t)c->left;
            if (deliver(h, c, d + i, k)) return -1;
            i += k;
            c->left -= k;
            if (c->left == 0) c->chunk_state = CH_DATA_END, c->line_len = 0;
            continue;
        }
        char ch = d[i++];
        if (c->line_len + 1 >= sizeof c->line) return -1;
        c->line[c->line_len++] = ch;
        if (ch != '\n') continue;
        c->line[c->line_len] = 0;
        size_t ll = c->line_len;
        c->line_len = 0;
        if (c->chunk_state == CH_DATA_END) {
            if (!(ll == 2 && c->line[0] == '\r') && ll != 1) return -1;
            c->chunk_state = CH_SIZE;
        } else if (c->chunk_state == CH_SIZE) {
            char *e = NULL;
            errno = 0;
            unsigned long long sz = strtoull(c->line, &e, 16);
            if (e == c->line || errno || (*e != '\r' && *e != '\n' && *e != ';' && *e != ' '))
                return -1;
            if (sz == 0) c->chunk_state = CH_TRAILER;
            else c->chunk_state = CH_DATA, c->left = sz;
        } else { /* trailer lines until an empty one */
            if (ll <= 2 && (c->line[0] == '\r' || c->line[0] == '\n')) {
                if (i < n) c->keep_alive = 0;
                return 1;
            }
        }
    }
    return 0;
}

/* Parses the response head in c->head (complete: ends at hend). 0, or -1 (malformed). */
static int parse_head(cb_h1_conn *c, size_t hend) {
    const char *hd = c->head;
    if (hend < 12 || strncmp(hd, "HTTP/1.", 7) != 0 || hd[8] != ' ') return -1;
    int http10 = hd[7] == '0';
    long st = 0;
    for (int i = 9; i < 12; i++) {
        if (hd[i] < '0' || hd[i] > '9') return -1;
        st = st * 10 + (hd[i] - '0');
    }
    c->req->status = st;
    size_t vl = 0;
    const char *v = hdr(hd, hend, "Connection", &vl);
    c->keep_alive = v ? !has_token(v, vl, "close") : !http10;
    if (v && http10 && has_token(v, vl, "keep-alive")) c->keep_alive = 1;
    v = hdr(hd, hend, "Transfer-Encoding", &vl);
    if (v && has_token(v, vl, "chunked")) {
        c->framing = FR_CHUNKED;
        c->chunk_state = CH_SIZE;
        c->line_len = 0;
        return 0;
    }
    v = hdr(hd, hend, "Content-Length", &vl);
    if (v) {
        uint64_t len = 0;
        if (vl == 0 || vl > 19) return -1;
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9') return -1;
            len = len * 10 + (uint64_t)(v[i] - '0');
        }
        c->framing = FR_LENGTH;
        c->left = len;
        return 0;
    }
    if (st == 204 || st == 304) {
        c->framing = FR_LENGTH;
        c->left = 0;
        return 0;
    }
    c->framing = FR_CLOSE;
    c->keep_alive = 0;
    return 0;
}

/* Bytes read on c. 0 to read on, 1 when its request ended (c may be gone). */
static int got_bytes(cb_h1 *h, cb_h1_conn *c, const char *d, size_t n) {
    c->got_bytes = 1;
    while (n > 0 && c->req) {
        if (c->state == ST_HEAD || c->state == ST_SENDING) {
            size_t room = sizeof c->head - c->head_len;
            size_t k = n < room ? n : room;
            memcpy(c->head + c->head_len, d, k);
            size_t old = c->head_len;
            c->head_len += k;
            /* the end of the head: the first CRLFCRLF (or LFLF) */
            size_t from = old >= 3 ? old - 3 : 0, hend = 0;
            for (size_t i = from; i + 1 < c->head_len && !hend; i++) {
                if (c->head[i] == '\n' && c->head[i + 1] == '\n') hend = i + 2;
                else if (i + 3 < c->head_len && memcmp(c->head + i, "\r\n\r\n", 4) == 0) hend = i + 4;
            }
            if (!hend) {
                if (c->head_len == sizeof c->head) {
                    conn_fail(h, c, "response head over 16 KiB");
                    return 1;
                }
                return 0; /* all of d is in the head buffer */
            }
            if (parse_head(c, hend) != 0) {
                conn_fail(h, c, "malformed response head");
                return 1;
            }
            size_t used = hend - old; /* bytes of d that were head */
            d += used;
            n -= used;
            if (c->req->status >= 100 && c->req->status < 200) { /* interim: another head */
                c->head_len = 0;
                c->req->status = 0;
                continue;
            }
            c->state = ST_BODY;
            if (c->framing == FR_LENGTH && c->left == 0) {
                if (n > 0) c->keep_alive = 0;
                resp_done(h, c);
                return 1;
            }
            continue;
        }
        int rc = body_bytes(h, c, d, n);
        if (rc < 0) {
            conn_fail(h, c, "malformed chunked body, or the reader refused the response");
            return 1;
        }
        if (rc == 1) {
            resp_done(h, c);
            return 1;
        }
        return 0;
    }
    return c->req ? 0 : 1;
}

void cb_h1_event(cb_h1 *h, void *ptr, uint32_t events) {
    cb_h1_conn *c = ptr;
    if (c->state == ST_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int e = 0;
        socklen_t el = sizeof e;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
        cb_h1_req *r = c->req;
        if (e != 0) {
            c->req = NULL;
            conn_close(h, c);
            if (r) req_end(h, r, CB_H1_CONNECT, "connect: %s", strerror(e));
            return;
        }
        if (r) r->connected = 1;
        c->state = ST_SENDING;
        conn_arm(h, c, EPOLLIN, 0);
        try_send(h, c);
        return; /* the response comes with a later EPOLLIN */
    }
    if (c->state == ST_IDLE) { /* the server closed it, or sent what we did not ask for */
        conn_close(h, c);
        return;
    }
    if ((events & EPOLLOUT) && c->state == ST_SENDING) {
        if (try_send(h, c) != 0) return; /* c is gone */
        if (c->state != ST_SENDING) conn_arm(h, c, EPOLLIN, 0);
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    if (!c->req) { /* no request: nothing to read */
        conn_close(h, c);
        return;
    }
    for (;;) {
        ssize_t n = recv(c->fd, h->rbuf, sizeof h->rbuf, 0);
        if (n > 0) {
            if (got_bytes(h, c, h->rbuf, (size_t)n)) return; /* ended (c may be gone) */
            if ((size_t)n < sizeof h->rbuf) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        /* end of stream or an error */
        if (n == 0 && c->state == ST_BODY && c->framing == FR_CLOSE) {
            resp_done(h, c);
            return;
        }
        char m[96];
        if (n == 0) snprintf(m, sizeof m, "the server closed the connection mid-response");
        else snprintf(m, sizeof m, "recv: %s (the response broke off)", strerror(errno));
        conn_fail(h, c, m);
        return;
    }
}

int cb_h1_timeouts(cb_h1 *h, int64_t now) {
    if (!h->active) return -1;
    if (now < h->next_check_ns) { /* nothing due: no scan (O(1) per wake-up) */
        int64_t ms = (h->next_check_ns - now + 999999) / 1000000;
        return ms > 1000 ? 1000 : (int)ms;
    }
    int64_t next = INT64_MAX;
    for (cb_h1_req *r = h->active, *nx; r; r = nx) {
        nx = r->next;
        int64_t dl = r->connected ? r->deadline_ns
                     : r->connect_deadline_ns < r->deadline_ns ? r->connect_deadline_ns
                                                               : r->deadline_ns;
        if (now < dl) {
            if (dl < next) next = dl;
            continue;
        }
        cb_h1_conn *c = r->conn;
        if (c) {
            c->req = NULL;
            conn_close(h, c);
        }
        if (!r->connected) req_end(h, r, CB_H1_CONNECT, "connect timed out");
        else req_end(h, r, CB_H1_TIMEOUT, "timed out after %.3f s",
                     (double)(now - r->start_ns) / 1e9);
    }
    h->next_check_ns = next;
    if (next == INT64_MAX) return -1;
    int64_t ms = (next - now + 999999) / 1000000;
    return ms > 1000 ? 1000 : (int)ms;
}

void cb_h1_abort_all(cb_h1 *h) {
    while (h->active) {
        cb_h1_req *r = h->active;
        cb_h1_conn *c = r->conn;
        if (c) {
            c->req = NULL;
            conn_close(h, c);
        }
        req_end(h, r, CB_H1_ABORTED, "cancelled");
    }
}

cb_h1_req *cb_h1_take_done(cb_h1 *h) {
    cb_h1_req *d = h->done;
    h->done = h->done_tail = NULL;
    return d;
}
