/* serve/serve.c - the OpenAI-compatible HTTP server over the engine (serve.h has the threads,
 * the lifecycle and the bounds; docs/serve.md the fields and the byte fallback).
 *
 * Design. A generation request is an `sreq`, shared by three owners with a reference count: the
 * connection (its handler and request-completed callback), a stream's content reader (while the
 * response exists) and the engine thread (from submit until it ends the request). Its life:
 *   connection thread: parse (oai_req.c), tokenize, check the lengths, submit: the request joins
 *     the server's inbox (an intrusive FIFO; requests in flight, inbox included, are at most
 *     max_batch + max_waiting, else 503);
 *   engine thread: moves the inbox into the engine (cb_engine_add), steps; the engine's on_token
 *     callback writes each id into the request's out[] (sized max_tokens, so the engine never
 *     waits for a slow client) and notes the request as touched; after the step each touched
 *     request is published (n_pub = ids written, and on the last token its finish reason) under
 *     its mutex and its condition variable signalled;
 *   connection thread: a non-streaming handler waits for the end, a stream's reader for each
 *     publication, then renders text (tokenizer or byte fallback) and JSON off the engine thread.
 * A client that goes away (the request-completed callback before the end, a failed write, or a
 * peek at the socket during a wait seeing EOF) puts its request on the cancel list (intrusive,
 * one entry at most a request, holding a reference); the engine thread cancels it in the engine
 * (cb_engine_cancel) before its next step, which frees its slot and KV blocks.
 *
 * Locks. s->mu protects the inbox, the cancel list, stopping, counters and statistics; each
 * sreq's mu protects its n_pub, state, finish, refs and queued flag. Never both at once (no lock
 * order to keep). out[] is written by the engine thread only at indices >= n_pub and read by
 * others only below n_pub, read after taking the request's mutex (the publication orders it).
 * Atomics: none; every shared word is under one of the two mutexes.
 *
 * Ownership. The server owns model, weights, KV cache, engine, tokenizer, listening socket
 * (until libmicrohttpd takes it at start and gives it back at quiesce), and the threads. */
#include "serve/serve.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/alloc.h"
#include "llm/engine.h"
#include "llm/lm_config.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"
#include "llm/request.h"
#include "llm/tokenizer.h"
#include "serve/jwrite.h"
#include "serve/oai_req.h"

#define WAIT_SLICE_NS 50000000 /* a wait's slice between looks at the client's socket */
#define STREAM_TOKENS_PER_FILL 64 /* tokens turned into events in one reader call, at most */
#define STOP_DRAIN_NS 2000000000LL /* how long stop lets streams send their last events */
#define COMPLETIONS_DEFAULT_MAX_TOKENS 16

enum { REQ_ACTIVE = 0, REQ_DONE };
enum { FIN_STOP = 0, FIN_LENGTH, FIN_ABORT, FIN_ERROR, FIN_GONE };

typedef struct sreq sreq;
struct sreq {
    cb_serve *srv;
    /* set before submit, read-only after */
    cb__oai_kind kind;
    int stream, include_usage, ignore_eos, has_seed, fd;
    int32_t *prompt, n_prompt, max_tokens;
    cb_sample_params sampling;
    uint64_t seed;
    int64_t id, created;
    /* engine thread only */
    int32_t *out; /* max_tokens ids */
    int32_t n_written;
    int touched, fin_now;
    sreq *next;        /* inbox link (under s->mu until taken by the engine thread) */
    sreq *cancel_next; /* cancel list link (under s->mu) */
    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t n_pub;
    int state, finish, refs, cancel_queued;
};

struct cb_serve {
    cb_serve_opts o;
    char name[CB_SERVE_NAME_MAX], host[256];
    const cb_logger *log;
    cb_lm_config cfg;
    cb_lm_weights *w;
    cb_lm_model *model;
    cb_lm_kv *kv;
    cb_engine *engine;
    cb_tok *tok;
    cb_tok_chat chat_fmt; /* 0: the simple form */
    int64_t max_positions, pool_positions, created;
    int listen_fd, port, ipv6;
    struct MHD_Daemon *mhd;
    pthread_t engine_thread;
    int started, stopped;
    /* engine thread only */
    sreq **touched;
    int n_touched, cap_touched;
    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the engine thread's wake-up */
    pthread_cond_t idle_cv; /* open_requests reached 0 */
    sreq *inbox_head, *inbox_tail, *cancel_head;
    int64_t inflight, capacity, open_requests, next_id;
    int stopping;
    cb_serve_stats st;
};

/* ---- small helpers -------------------------------------------------------------------------- */

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A condition variable on CLOCK_MONOTONIC (waits immune to wall-clock jumps). */
static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* Waits on cv for at most ns; 1 on timeout. */
static int cond_wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ns) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    ts.tv_sec = t / 1000000000;
    ts.tv_nsec = t % 1000000000;
    return pthread_cond_timedwait(cv, mu, &ts) == ETIMEDOUT;
}

/* 1 when the peer closed or reset the connection (a peek: pipelined bytes are left alone). */
static int client_gone(int fd) {
    if (fd < 0) return 0;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static const char *finish_name(int f) {
    return f == FIN_STOP ? "stop" : f == FIN_LENGTH ? "length" : "abort";
}

/* ---- requests: references, publication, cancel ---------------------------------------------- */

static void req_unref(sreq *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!last) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    cb_free(r->prompt);
    cb_free(r->out);
    cb_free(r);
}

static void req_ref(sreq *r) {
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

/* Engine thread: makes the ids written so far readable. */
static void req_publish(sreq *r) {
    pthread_mutex_lock(&r->mu);
    r->n_pub = r->n_written;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Engine thread: the request's end (it leaves the engine and the count in flight); drops the
 * engine's reference. */
static void req_end(cb_serve *s, sreq *r, int finish) {
    pthread_mutex_lock(&r->mu);
    r->n_pub = r->n_written;
    r->state = REQ_DONE;
    r->finish = finish;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    if (finish == FIN_STOP || finish == FIN_LENGTH) s->st.finished++;
    else if (finish == FIN_GONE) s->st.client_gone++;
    else s->st.aborted++;
    s->st.prompt_tokens += r->n_prompt;
    s->st.completion_tokens += r->n_written;
    pthread_mutex_unlock(&s->mu);
    req_unref(r);
}

/* Any thread but the engine's: the client went away; the engine thread cancels the request. */
static void req_cancel(sreq *r) {
    cb_serve *s = r->srv;
    pthread_mutex_lock(&r->mu);
    int queue = r->state != REQ_DONE && !r->cancel_queued;
    if (queue) {
        r->cancel_queued = 1;
        r->refs++; /* the cancel list's */
    }
    pthread_mutex_unlock(&r->mu);
    if (!queue) return;
    pthread_mutex_lock(&s->mu);
    r->cancel_next = s->cancel_head;
    s->cancel_head = r;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the engine thread ---------------------------------------------------------------------- */

static void on_token(void *arg, void *user, int32_t n, int32_t token, int64_t t_ns) {
    cb_serve *s = arg;
    sreq *r = user;
    (void)t_ns;
    if (n < 0 || n >= r->max_tokens) return; /* never: the engine stops at max_new_tokens */
    r->out[n] = token;
    r->n_written = n + 1;
    if (!r->touched && s->n_touched < s->cap_touched) {
        r->touched = 1;
        s->touched[s->n_touched++] = r;
    }
}

static int engine_finish(cb_engine_finish f) {
    return f == CB_ENGINE_FINISH_EOS ? FIN_STOP : f == CB_ENGINE_FINISH_LENGTH ? FIN_LENGTH
                                                                               : FIN_ABORT;
}

/* Ends every request the engine holds (after a failed step, and at stop). */
static void end_all_in_engine(cb_serve *s, int finish) {
    cb_engine_cancel_all(s->engine);
    for (int i = 0; i < cb_engine_n_finished(s->engine); i++)
        req_end(s, cb_engine_finished(s->engine, i)->user, finish);
}

/* One step and its publication. */
static void engine_step(cb_serve *s) {
    s->n_touched = 0;
    cb_error err;
    cb_error_clear(&err);
    if (cb_engine_step(s->engine, &err)) {
        cb_logf(s->log, CB_LOG_ERROR, "serve", "engine step failed: %s (its requests end)",
                err.msg);
        for (int i = 0; i < s->n_touched; i++) s->touched[i]->touched = 0;
        end_all_in_engine(s, FIN_ERROR);
        return;
    }
    int nf = cb_engine_n_finished(s->engine);
    for (int i = 0; i < nf; i++) {
        const cb_engine_result *x = cb_engine_finished(s->engine, i);
        sreq *r = x->user;
        r->fin_now = 1 + engine_finish(x->finish);
    }
    for (int i = 0; i < s->n_touched; i++) {
        sreq *r = s->touched[i];
        r->touched = 0;
        if (!r->fin_now) req_publish(r);
    }
    for (int i = 0; i < nf; i++) {
        sreq *r = cb_engine_finished(s->engine, i)->user;
        int f = r->fin_now - 1;
        r->fin_now = 0;
        req_end(s, r, f);
    }
}

static void *engine_main(void *arg) {
    cb_serve *s = arg;
    pthread_setname_np(pthread_self(), "cb-serve-engine");
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stopping && !s->inbox_head && !s->cancel_head &&
               cb_engine_n_active(s->engine) == 0)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping) break;
        sreq *cancels = s->cancel_head, *ended = NULL;
        s->cancel_head = NULL;
        int full = 0;
        while (s->inbox_head && !full) {
            sreq *r = s->inbox_head;
            int rc = CB_OK;
            cb_error err;
            cb_error_clear(&err);
            /* A request cancelled while in the inbox is added all the same: the cancel list,
             * read below, takes it out of the engine before any step. */
            cb_engine_request q;
            memset(&q, 0, sizeof q);
            q.prompt = r->prompt;
            q.n_prompt = r->n_prompt;
            q.max_new_tokens = r->max_tokens;
            q.ignore_eos = r->ignore_eos;
            q.sampling = r->sampling;
            q.seed = r->seed;
            q.arrival_ns = mono_ns();
            q.index = r->id;
            q.user = r;
            rc = cb_engine_add(s->engine, &q, &err);
            if (rc == CB_EFULL) { /* slots of the last step's results: step, then again */
                full = 1;
                break;
            }
            s->inbox_head = r->next;
            if (!s->inbox_head) s->inbox_tail = NULL;
            r->next = NULL;
            if (rc) { /* never for a checked request; ended below, outside s->mu */
                cb_logf(s->log, CB_LOG_ERROR, "serve", "request %lld refused by the engine: %s",
                        (long long)r->id, err.msg);
                r->next = ended;
                ended = r;
            }
        }
        pthread_mutex_unlock(&s->mu);
        while (ended) {
            sreq *r = ended;
            ended = r->next;
            req_end(s, r, FIN_ERROR);
        }
        while (cancels) {
            sreq *r = cancels;
            cancels = r->cancel_next;
            if (cb_engine_cancel(s->engine, r)) req_end(s, r, FIN_GONE);
            req_unref(r); /* the cancel list's reference */
        }
        if (cb_engine_n_active(s->engine) > 0 || full) engine_step(s);
        pthread_mutex_lock(&s->mu);
    }
    /* stopping: nothing new arrives (submit refuses under s->mu) */
    sreq *inbox = s->inbox_head, *cancels = s->cancel_head;
    s->inbox_head = s->inbox_tail = NULL;
    s->cancel_head = NULL;
    pthread_mutex_unlock(&s->mu);
    while (inbox) {
        sreq *r = inbox;
        inbox = r->next;
        req_end(s, r, FIN_ABORT);
    }
    end_all_in_engine(s, FIN_ABORT);
    while (cancels) {
        sreq *r = cancels;
        cancels = r->cancel_next;
        req_unref(r);
    }
    return NULL;
}

/* Connection thread: hands r to the engine thread (r->refs already counts the engine's
 * reference; on a refusal the caller drops it). 0, or the HTTP status of the refusal (503). */
static int submit(cb_serve *s, sreq *r) {
    pthread_mutex_lock(&s->mu);
    int status = 0;
    if (s->stopping || s->inflight >= s->capacity) {
        status = 503;
    } else {
        r->id = ++s->next_id;
        if (!r->has_seed) r->seed = 0x9e3779b97f4a7c15ull * (uint64_t)r->id; /* distinct */
        s->inflight++;
        s->st.requests++;
        if (s->inbox_tail) s->inbox_tail->next = r;
        else s->inbox_head = r;
        s->inbox_tail = r;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return status;
}

/* ---- text: the tokenizer's bytes or the byte fallback, held at UTF-8 boundaries ------------ */

typedef struct textdec {
    unsigned char held[4]; /* the start of a UTF-8 character whose end is in a later token */
    size_t n_held;
} textdec;

/* 1 when s[0..n) (n >= 1) is the proper start of a valid UTF-8 character. */
static int utf8_incomplete(const unsigned char *s, size_t n) {
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t k;
    if (c >= 0xc2 && c <= 0xdf) k = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 2;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 3;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (n > k) return 0;
    if (n >= 2 && (s[1] < lo || s[1] > hi)) return 0;
    for (size_t j = 2; j < n; j++)
        if ((s[j] & 0xc0) != 0x80) return 0;
    return 1;
}

/* Appends the valid UTF-8 of held + b[0..n) to out, holding an incomplete last character and
 * writing U+FFFD for each invalid byte; with flush, a held start becomes one U+FFFD. */
static void dec_feed(textdec *d, const unsigned char *b, size_t n, int flush, cb__jwrite *out) {
    unsigned char buf[CB_TOK_TOKEN_MAX_BYTES + 16];
    size_t len = d->n_held;
    memcpy(buf, d->held, d->n_held);
    d->n_held = 0;
    while (n > 0) { /* a token's bytes fit; longer input (never) goes through in pieces */
        size_t take = n < sizeof buf - len ? n : sizeof buf - len;
        memcpy(buf + len, b, take);
        len += take;
        b += take;
        n -= take;
        if (n == 0) break;
        cb__jwrite_raw(out, (const char *)buf, len); /* unreachable for real tokens */
        len = 0;
    }
    size_t i = 0;
    while (i < len) {
        size_t v = cb_llm_utf8_valid_prefix(buf + i, len - i);
        cb__jwrite_raw(out, (const char *)buf + i, v);
        i += v;
        if (i == len) break;
        if (!flush && len - i <= 3 && utf8_incomplete(buf + i, len - i)) {
            memcpy(d->held, buf + i, len - i);
            d->n_held = len - i;
            break;
        }
        cb__jwrite_lit(out, "\xef\xbf\xbd");
        i += flush && utf8_incomplete(buf + i, len - i) ? len - i : 1;
    }
}

/* Appends the text of output token tok to out (raw UTF-8, not yet JSON-escaped). With a
 * tokenizer: its bytes, except an EOS id's (as vLLM's skip_special_tokens); without: " ID". */
static void render_token(const cb_serve *s, textdec *d, int32_t tok, cb__jwrite *out) {
    if (!s->tok) {
        char b[16];
        int n = snprintf(b, sizeof b, " %d", (int)tok);
        cb__jwrite_raw(out, b, (size_t)n);
        return;
    }
    for (int i = 0; i < s->cfg.n_eos; i++)
        if (s->cfg.eos_ids[i] == tok) return;
    char b[CB_TOK_TOKEN_MAX_BYTES];
    size_t n = 0;
    cb_error e;
    cb_error_clear(&e);
    if (tok >= cb_tok_vocab_size(s->tok) || cb_tok_decode(s->tok, &tok, 1, b, sizeof b, &n, &e))
        n = 0; /* an id the model has and the tokenizer lacks renders as nothing */
    dec_feed(d, (const unsigned char *)b, n, 0, out);
}

/* ---- JSON bodies ---------------------------------------------------------------------------- */

static void write_usage(cb__jwrite *w, const sreq *r, int32_t n_out) {
    cb__jwrite_lit(w, "\"usage\":{\"prompt_tokens\":");
    cb__jwrite_int(w, r->n_prompt);
    cb__jwrite_lit(w, ",\"completion_tokens\":");
    cb__jwrite_int(w, n_out);
    cb__jwrite_lit(w, ",\"total_tokens\":");
    cb__jwrite_int(w, (int64_t)r->n_prompt + n_out);
    cb__jwrite_lit(w, "}");
}

/* {"id":...,"object":OBJ,"created":T,"model":NAME, */
static void write_head(cb__jwrite *w, const cb_serve *s, const sreq *r, const char *object) {
    char id[48];
    snprintf(id, sizeof id, "%s-%lld", r->kind == CB_OAI_CHAT ? "chatcmpl" : "cmpl",
             (long long)r->id);
    cb__jwrite_lit(w, "{\"id\":");
    cb__jwrite_cstr(w, id);
    cb__jwrite_lit(w, ",\"object\":");
    cb__jwrite_cstr(w, object);
    cb__jwrite_lit(w, ",\"created\":");
    cb__jwrite_int(w, r->created);
    cb__jwrite_lit(w, ",\"model\":");
    cb__jwrite_cstr(w, s->name);
    cb__jwrite_lit(w, ",");
}

/* One stream event: a choice with text (chat: a delta; role: the first delta's role too) and a
 * finish reason (NULL: null). */
static void write_chunk(cb__jwrite *w, const cb_serve *s, const sreq *r, const char *text,
                        size_t n, int role, const char *finish) {
    int chat = r->kind == CB_OAI_CHAT;
    cb__jwrite_lit(w, "data: ");
    write_head(w, s, r, chat ? "chat.completion.chunk" : "text_completion");
    cb__jwrite_lit(w, "\"choices\":[{\"index\":0,");
    if (chat) {
        cb__jwrite_lit(w, role ? "\"delta\":{\"role\":\"assistant\",\"content\":"
                               : "\"delta\":{\"content\":");
        cb__jwrite_str(w, text, n);
        cb__jwrite_lit(w, "}");
    } else {
        cb__jwrite_lit(w, "\"text\":");
        cb__jwrite_str(w, text, n);
    }
    cb__jwrite_lit(w, ",\"logprobs\":null,\"finish_reason\":");
    cb__jwrite_cstr(w, finish);
    cb__jwrite_lit(w, "}]}\n\n");
}

static void write_usage_chunk(cb__jwrite *w, const cb_serve *s, const sreq *r, int32_t n_out) {
    cb__jwrite_lit(w, "data: ");
    write_head(w, s, r, r->kind == CB_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    cb__jwrite_lit(w, "\"choices\":[],");
    write_usage(w, r, n_out);
    cb__jwrite_lit(w, "}\n\n");
}

static void write_result(cb__jwrite *w, const cb_serve *s, const sreq *r, const char *text,
                         size_t n, int32_t n_out, int finish) {
    int chat = r->kind == CB_OAI_CHAT;
    write_head(w, s, r, chat ? "chat.completion" : "text_completion");
    cb__jwrite_lit(w, "\"choices\":[{\"index\":0,");
    if (chat) {
        cb__jwrite_lit(w, "\"message\":{\"role\":\"assistant\",\"content\":");
        cb__jwrite_str(w, text, n);
        cb__jwrite_lit(w, "}");
    } else {
        cb__jwrite_lit(w, "\"text\":");
        cb__jwrite_str(w, text, n);
    }
    cb__jwrite_lit(w, ",\"logprobs\":null,\"finish_reason\":");
    cb__jwrite_cstr(w, finish_name(finish));
    cb__jwrite_lit(w, "}],");
    write_usage(w, r, n_out);
    cb__jwrite_lit(w, "}");
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

enum { R_NONE = 0, R_HEALTH, R_MODELS, R_COMPLETIONS, R_CHAT };

typedef struct conn {
    cb_serve *srv;
    int route;
    char *body;
    size_t len, cap;
    int too_large, discard; /* body over the limit; a body nobody reads (dropped) */
    sreq *req; /* the connection's reference, once made */
} conn;

static enum MHD_Result queue_json(struct MHD_Connection *c, unsigned status, const char *body,
                                  size_t len, const char *allow) {
    struct MHD_Response *rs =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!rs) return MHD_NO;
    if (len > 0) MHD_add_response_header(rs, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow) MHD_add_response_header(rs, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ok = MHD_queue_response(c, status, rs);
    MHD_destroy_response(rs);
    return ok;
}

/* {"error":{"message","type","param","code"}} with status. */
static enum MHD_Result send_error(cb_serve *s, struct MHD_Connection *c, unsigned status,
                                  const char *param, const char *code, const char *allow,
                                  const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static enum MHD_Result send_error(cb_serve *s, struct MHD_Connection *c, unsigned status,
                                  const char *param, const char *code, const char *allow,
                                  const char *fmt, ...) {
    char msg[CB_OAI_ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&s->mu);
    s->st.refused++;
    if (status == 503) s->st.busy++;
    pthread_mutex_unlock(&s->mu);
    cb__jwrite w;
    cb__jwrite_init(&w, sizeof msg * 8);
    cb__jwrite_lit(&w, "{\"error\":{\"message\":");
    cb__jwrite_cstr(&w, msg);
    cb__jwrite_lit(&w, ",\"type\":");
    cb__jwrite_cstr(&w, status >= 500 ? "server_error" : "invalid_request_error");
    cb__jwrite_lit(&w, ",\"param\":");
    cb__jwrite_cstr(&w, param);
    cb__jwrite_lit(&w, ",\"code\":");
    cb__jwrite_cstr(&w, code);
    cb__jwrite_lit(&w, "}}");
    enum MHD_Result ok = w.failed ? MHD_NO : queue_json(c, status, w.p, w.len, allow);
    cb__jwrite_fini(&w);
    return ok;
}

static enum MHD_Result send_models(cb_serve *s, struct MHD_Connection *c) {
    cb__jwrite w;
    cb__jwrite_init(&w, 4096);
    cb__jwrite_lit(&w, "{\"object\":\"list\",\"data\":[{\"id\":");
    cb__jwrite_cstr(&w, s->name);
    cb__jwrite_lit(&w, ",\"object\":\"model\",\"created\":");
    cb__jwrite_int(&w, s->created);
    cb__jwrite_lit(&w, ",\"owned_by\":\"colobench\",\"max_model_len\":");
    cb__jwrite_int(&w, s->max_positions);
    cb__jwrite_lit(&w, "}]}");
    enum MHD_Result ok = w.failed ? MHD_NO : queue_json(c, 200, w.p, w.len, NULL);
    cb__jwrite_fini(&w);
    return ok;
}

/* Prompt ids of a text: the tokenizer's (with the model's BOS first for the llama family, whose
 * tokenizers add it) or one id per byte. *ids owned by the caller. */
static int text_ids(const cb_serve *s, const char *text, size_t len, int chat, int32_t **ids,
                    int32_t *n, cb__oai_err *e) {
    size_t cap = len + 1, got = 0, off = 0;
    *ids = cb_malloc(cap * sizeof **ids);
    if (!*ids) return cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
    if (!s->tok) {
        for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
        got = len;
    } else {
        if (!chat && s->cfg.arch == CB_LM_LLAMA && s->cfg.bos_id >= 0) (*ids)[off++] = s->cfg.bos_id;
        cb_error te;
        cb_error_clear(&te);
        if (cb_tok_encode(s->tok, text, len, 1, *ids + off, cap - off, &got, &te))
            return cb__oai_err_set(e, 400, chat ? "messages" : "prompt", "invalid_value",
                                   "%s: cannot be tokenized: %s", chat ? "messages" : "prompt",
                                   te.msg);
        got += off;
    }
    if (got == 0)
        return cb__oai_err_set(e, 400, chat ? "messages" : "prompt", "invalid_value",
                               "%s: empty prompt (no tokens)", chat ? "messages" : "prompt");
    if ((int64_t)got >= s->max_positions)
        return cb__oai_err_set(e, 400, chat ? "messages" : "prompt", "context_length_exceeded",
                               "prompt of %zu tokens: the model's context is %lld positions",
                               got, (long long)s->max_positions);
    *n = (int32_t)got;
    return 0;
}

/* The chat prompt's text: the tokenizer's chat template, or the simple form
 * "ROLE: CONTENT\n" a message then "assistant:". Owned by the caller. */
static int chat_text(const cb_serve *s, const cb__oai_req *q, char **text, size_t *len,
                     cb__oai_err *e) {
    size_t need = 0;
    if (s->chat_fmt) {
        cb_error te;
        cb_error_clear(&te);
        int rc = cb_tok_chat_render(s->chat_fmt, q->msgs, q->n_msgs, 1, NULL, 0, &need, &te);
        if (rc && rc != CB_EFULL)
            return cb__oai_err_set(e, 400, "messages", "invalid_value", "messages: %s", te.msg);
        *text = cb_malloc(need + 1);
        if (!*text) return cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
        if (cb_tok_chat_render(s->chat_fmt, q->msgs, q->n_msgs, 1, *text, need + 1, len, &te))
            return cb__oai_err_set(e, 400, "messages", "invalid_value", "messages: %s", te.msg);
        return 0;
    }
    for (size_t i = 0; i < q->n_msgs; i++)
        need += strlen(q->msgs[i].role) + 2 + strlen(q->msgs[i].content) + 1;
    need += sizeof "assistant:";
    *text = cb_malloc(need);
    if (!*text) return cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < q->n_msgs; i++)
        at += (size_t)snprintf(*text + at, need - at, "%s: %s\n", q->msgs[i].role,
                               q->msgs[i].content);
    at += (size_t)snprintf(*text + at, need - at, "assistant:");
    *len = at;
    return 0;
}

/* Builds the request of a parsed body: prompt ids, lengths checked against the context and the
 * KV pool, sampling. *out has one reference (the caller's) plus the engine's. */
static int make_req(cb_serve *s, const cb__oai_req *q, int fd, sreq **out, cb__oai_err *e) {
    *out = NULL;
    if (q->model && strcmp(q->model, s->name) != 0)
        return cb__oai_err_set(e, 404, "model", "model_not_found",
                               "The model `%.200s` does not exist (this server serves `%.200s`)",
                               q->model, s->name);
    cb_error se;
    cb_error_clear(&se);
    if (cb_sample_params_check(&q->sampling, &se))
        return cb__oai_err_set(e, 400, NULL, "invalid_value", "%s", se.msg);
    sreq *r = cb_calloc(1, sizeof *r);
    if (!r) return cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
    int rc = 0;
    if (q->kind == CB_OAI_CHAT) {
        char *text = NULL;
        size_t len = 0;
        rc = chat_text(s, q, &text, &len, e);
        if (!rc) rc = text_ids(s, text, len, 1, &r->prompt, &r->n_prompt, e);
        cb_free(text);
    } else if (q->n_ids > 0) {
        r->prompt = cb_malloc((size_t)q->n_ids * sizeof *r->prompt);
        if (!r->prompt) rc = cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
        else memcpy(r->prompt, q->ids, (size_t)q->n_ids * sizeof *r->prompt);
        r->n_prompt = q->n_ids;
    } else {
        rc = text_ids(s, q->text, q->text_len, 0, &r->prompt, &r->n_prompt, e);
    }
    int64_t room = s->max_positions < s->pool_positions ? s->max_positions : s->pool_positions;
    int64_t mt = q->max_tokens;
    if (!rc && mt < 0) /* completions: 16 as OpenAI; chat: the rest of the context, as vLLM */
        mt = q->kind == CB_OAI_CHAT ? room - r->n_prompt : COMPLETIONS_DEFAULT_MAX_TOKENS;
    const char *mt_name = q->kind == CB_OAI_CHAT ? "max_completion_tokens" : "max_tokens";
    if (!rc && (int64_t)r->n_prompt + mt > s->max_positions)
        rc = cb__oai_err_set(e, 400, mt_name, "context_length_exceeded",
                             "This model's maximum context length is %lld tokens: the prompt "
                             "has %d tokens and %s is %lld (%lld in all)",
                             (long long)s->max_positions, (int)r->n_prompt, mt_name,
                             (long long)mt, (long long)(r->n_prompt + mt));
    if (!rc && (int64_t)r->n_prompt + mt > s->pool_positions)
        rc = cb__oai_err_set(e, 400, mt_name, "context_length_exceeded",
                             "the prompt has %d tokens and %s is %lld (%lld in all): more than "
                             "the server's KV cache holds for one request (%lld positions; "
                             "--kv-cache-bytes)", (int)r->n_prompt, mt_name, (long long)mt,
                             (long long)(r->n_prompt + mt), (long long)s->pool_positions);
    if (!rc && mt < 1)
        rc = cb__oai_err_set(e, 400, mt_name, "context_length_exceeded",
                             "the prompt has %d tokens: no room left to generate in the model's "
                             "context of %lld", (int)r->n_prompt, (long long)room);
    if (!rc) {
        r->max_tokens = (int32_t)mt;
        r->out = cb_malloc((size_t)mt * sizeof *r->out);
        if (!r->out) rc = cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
    }
    if (rc) {
        cb_free(r->prompt);
        cb_free(r->out);
        cb_free(r);
        return rc;
    }
    r->srv = s;
    r->kind = q->kind;
    r->stream = q->stream;
    r->include_usage = q->include_usage;
    r->ignore_eos = q->ignore_eos;
    r->sampling = q->sampling;
    r->has_seed = q->has_seed;
    r->seed = q->seed;
    r->fd = fd;
    r->created = (int64_t)time(NULL);
    r->refs = 2; /* the caller's and the engine thread's (submit) */
    pthread_mutex_init(&r->mu, NULL);
    cond_init_mono(&r->cv);
    *out = r;
    return 0;
}

/* Waits until the request has more than `have` published ids or is done. 0, or -1 when the
 * client went away (the request is then cancelled). Takes and releases r->mu. */
static int wait_news(sreq *r, int32_t have, int32_t *n_pub, int *done, int *finish) {
    pthread_mutex_lock(&r->mu);
    while (r->n_pub == have && r->state != REQ_DONE) {
        if (!cond_wait_ns(&r->cv, &r->mu, WAIT_SLICE_NS)) continue;
        if (client_gone(r->fd)) {
            pthread_mutex_unlock(&r->mu);
            req_cancel(r);
            return -1;
        }
    }
    *n_pub = r->n_pub;
    *done = r->state == REQ_DONE;
    *finish = r->finish;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* A stream's content reader state (owned by the MHD response; holds a reference to r). */
typedef struct sstream {
    sreq *r;
    cb__jwrite ev, txt; /* events not yet handed over (from ev_off); one token's text */
    size_t ev_off;
    int32_t n_done;     /* tokens turned into events */
    int eof;
    textdec dec;
} sstream;

static void stream_free(void *cls) {
    sstream *st = cls;
    cb__jwrite_fini(&st->ev);
    cb__jwrite_fini(&st->txt);
    req_unref(st->r);
    cb_free(st);
}

/* Turns the news into events in st->ev. */
static void stream_fill(sstream *st, int32_t n_pub, int done, int finish) {
    sreq *r = st->r;
    const cb_serve *s = r->srv;
    int normal = finish == FIN_STOP || finish == FIN_LENGTH;
    int32_t end = n_pub - st->n_done > STREAM_TOKENS_PER_FILL ? st->n_done + STREAM_TOKENS_PER_FILL
                                                              : n_pub;
    if (r->kind == CB_OAI_CHAT && st->n_done == 0 && (end > 0 || done)) /* the role first */
        write_chunk(&st->ev, s, r, "", 0, 1, NULL);
    for (int32_t i = st->n_done; i < end; i++) {
        int last = done && i == n_pub - 1;
        cb__jwrite_reset(&st->txt);
        render_token(s, &st->dec, r->out[i], &st->txt);
        if (last) dec_feed(&st->dec, NULL, 0, 1, &st->txt);
        write_chunk(&st->ev, s, r, st->txt.p ? st->txt.p : "", st->txt.len, 0,
                    last && normal ? finish_name(finish) : NULL);
    }
    st->n_done = end;
    if (!done || end < n_pub) return;
    if (!normal || n_pub == 0) /* ended early (stop, error): say so in a chunk of its own */
        write_chunk(&st->ev, s, r, "", 0, 0, finish_name(finish));
    if (r->include_usage) write_usage_chunk(&st->ev, s, r, n_pub);
    cb__jwrite_lit(&st->ev, "data: [DONE]\n\n");
    st->eof = 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    sstream *st = cls;
    (void)pos;
    for (;;) {
        if (st->ev_off < st->ev.len) {
            size_t n = st->ev.len - st->ev_off < max ? st->ev.len - st->ev_off : max;
            memcpy(buf, st->ev.p + st->ev_off, n);
            st->ev_off += n;
            return (ssize_t)n;
        }
        if (st->eof) return MHD_CONTENT_READER_END_OF_STREAM;
        cb__jwrite_reset(&st->ev);
        st->ev_off = 0;
        int32_t n_pub;
        int done, finish;
        if (wait_news(st->r, st->n_done, &n_pub, &done, &finish))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        stream_fill(st, n_pub, done, finish);
        if (st->ev.failed) {
            req_cancel(st->r);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static enum MHD_Result start_stream(cb_serve *s, struct MHD_Connection *c, sreq *r) {
    sstream *st = cb_calloc(1, sizeof *st);
    if (!st) return MHD_NO;
    cb__jwrite_init(&st->ev, CB_SERVE_RESPONSE_MAX_BYTES);
    cb__jwrite_init(&st->txt, CB_SERVE_RESPONSE_MAX_BYTES);
    req_ref(r);
    st->r = r;
    struct MHD_Response *rs =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free);
    if (!rs) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(rs, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(rs, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ok = MHD_queue_response(c, 200, rs);
    MHD_destroy_response(rs);
    (void)s;
    return ok;
}

/* A non-streaming request: waits for the end in the connection's thread, then answers. */
static enum MHD_Result finish_plain(cb_serve *s, struct MHD_Connection *c, sreq *r) {
    int32_t n_pub = 0;
    int done = 0, finish = FIN_ABORT;
    while (!done)
        if (wait_news(r, n_pub, &n_pub, &done, &finish)) return MHD_NO; /* client gone */
    if (finish != FIN_STOP && finish != FIN_LENGTH)
        return send_error(s, c, 503, NULL, finish == FIN_ERROR ? "engine_error" : "shutting_down",
                          NULL, finish == FIN_ERROR ? "the engine failed while generating"
                                                    : "the server is shutting down");
    cb__jwrite txt, w;
    cb__jwrite_init(&txt, CB_SERVE_RESPONSE_MAX_BYTES);
    cb__jwrite_init(&w, CB_SERVE_RESPONSE_MAX_BYTES);
    textdec d = {{0}, 0};
    for (int32_t i = 0; i < n_pub; i++) render_token(s, &d, r->out[i], &txt);
    dec_feed(&d, NULL, 0, 1, &txt);
    write_result(&w, s, r, txt.p ? txt.p : "", txt.len, n_pub, finish);
    enum MHD_Result ok =
        w.failed || txt.failed
            ? send_error(s, c, 500, NULL, NULL, NULL, "response larger than %zu bytes",
                         (size_t)CB_SERVE_RESPONSE_MAX_BYTES)
            : queue_json(c, 200, w.p, w.len, NULL);
    cb__jwrite_fini(&txt);
    cb__jwrite_fini(&w);
    return ok;
}

static enum MHD_Result generate(cb_serve *s, struct MHD_Connection *c, conn *k) {
    if (k->too_large)
        return send_error(s, c, 413, NULL, "request_too_large", NULL,
                          "request body larger than %zu bytes (--max-body-bytes)",
                          s->o.max_body_bytes);
    cb__oai_req q;
    cb__oai_err e;
    cb__oai_kind kind = k->route == R_CHAT ? CB_OAI_CHAT : CB_OAI_COMPLETIONS;
    if (cb__oai_req_parse(kind, k->body ? k->body : "", k->len, (int32_t)s->cfg.vocab,
                          s->max_positions - 1, &q, &e))
        return send_error(s, c, (unsigned)e.status, e.param, e.code, NULL, "%s", e.msg);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    sreq *r = NULL;
    int rc = make_req(s, &q, ci ? ci->connect_fd : -1, &r, &e);
    cb__oai_req_fini(&q);
    if (rc) return send_error(s, c, (unsigned)e.status, e.param, e.code, NULL, "%s", e.msg);
    k->req = r;
    if (submit(s, r)) {
        req_unref(r); /* the engine's, never taken */
        return send_error(s, c, 503, NULL, "server_busy", NULL,
                          "the server is at capacity (%lld requests in flight: --max-batch + "
                          "--max-waiting) or shutting down", (long long)s->capacity);
    }
    return r->stream ? start_stream(s, c, r) : finish_plain(s, c, r);
}

static int route_of(const char *url) {
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/v1/models")) return R_MODELS;
    if (!strcmp(url, "/v1/completions")) return R_COMPLETIONS;
    if (!strcmp(url, "/v1/chat/completions")) return R_CHAT;
    return R_NONE;
}

/* The answer once the whole request is in (its body, if any, in k). */
static enum MHD_Result dispatch(cb_serve *s, struct MHD_Connection *c, conn *k, const char *url,
                                const char *method) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    switch (k->route) {
    case R_NONE:
        return send_error(s, c, 404, NULL, "not_found", NULL,
                          "Not found: %.200s (colobench serve has /health, /v1/models, "
                          "/v1/completions and /v1/chat/completions)", url);
    case R_HEALTH:
    case R_MODELS:
        if (!get)
            return send_error(s, c, 405, NULL, "method_not_allowed", "GET, HEAD",
                              "%.200s: method %.32s not allowed (GET)", url, method);
        return k->route == R_HEALTH ? queue_json(c, 200, "", 0, NULL) : send_models(s, c);
    default:
        if (strcmp(method, "POST") != 0)
            return send_error(s, c, 405, NULL, "method_not_allowed", "POST",
                              "%.200s: method %.32s not allowed (POST)", url, method);
        return generate(s, c, k);
    }
}

/* libmicrohttpd calls this for a request's headers (con_cls NULL), for each piece of its body,
 * and once more when the body is complete. Answers are queued in that last call: one queued
 * earlier makes libmicrohttpd close the connection instead of keeping it alive. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
    cb_serve *s = cls;
    (void)version;
    conn *k = *con_cls;
    if (!k) { /* the headers */
        k = cb_calloc(1, sizeof *k);
        if (!k) return MHD_NO;
        k->srv = s;
        k->route = route_of(url);
        *con_cls = k;
        pthread_mutex_lock(&s->mu);
        s->open_requests++;
        pthread_mutex_unlock(&s->mu);
        int gen = (k->route == R_COMPLETIONS || k->route == R_CHAT) && !strcmp(method, "POST");
        k->discard = !gen; /* only generation requests keep their body */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        if (gen && cl) {
            char *end = NULL;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || n > s->o.max_body_bytes) k->too_large = 1;
        }
        /* A client waiting for 100-continue is answered now, before it sends the body; any
         * other body over the limit is read and dropped, then answered (closing a socket with
         * unread bytes would reset it before the client read the answer). */
        if (k->too_large && ex && !strcasecmp(ex, "100-continue")) return generate(s, c, k);
        return MHD_YES;
    }
    if (*upload_size > 0) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (k->discard) return MHD_YES;
        if (k->too_large || n > s->o.max_body_bytes - k->len) {
            k->too_large = 1;
            return MHD_YES;
        }
        if (k->len + n + 1 > k->cap) {
            size_t cap = k->cap ? k->cap : 4096;
            while (cap < k->len + n + 1) cap *= 2;
            if (cap > s->o.max_body_bytes + 1) cap = s->o.max_body_bytes + 1;
            char *b = cb_realloc(k->body, cap);
            if (!b) return MHD_NO;
            k->body = b;
            k->cap = cap;
        }
        memcpy(k->body + k->len, upload, n);
        k->len += n;
        k->body[k->len] = 0;
        return MHD_YES;
    }
    return dispatch(s, c, k, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    cb_serve *s = cls;
    conn *k = *con_cls;
    (void)c;
    if (!k) return;
    *con_cls = NULL;
    if (k->req) {
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) req_cancel(k->req); /* no-op if done */
        req_unref(k->req);
    }
    cb_free(k->body);
    cb_free(k);
    pthread_mutex_lock(&s->mu);
    if (--s->open_requests == 0) pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    cb_serve *s = cls;
    char m[512];
    vsnprintf(m, sizeof m, fmt, ap);
    size_t n = strlen(m);
    while (n > 0 && m[n - 1] == '\n') m[--n] = 0;
    cb_logf(s->log, CB_LOG_INFO, "serve", "libmicrohttpd: %s", m);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static int check_opts(const cb_serve_opts *o, cb_error *err) {
#define RANGE(v, lo, hi, name)                                                                     \
    if ((v) < (lo) || (v) > (hi))                                                                  \
        return cb_error_set(err, CB_EINVAL, "%s: %lld outside [%lld, %lld]", name, (long long)(v), \
                            (long long)(lo), (long long)(hi));
    RANGE(o->threads, 1, 1024, "threads");
    RANGE(o->max_batch, 1, CB_ENGINE_MAX_BATCH, "max_batch");
    RANGE(o->max_tokens_per_step, o->max_batch, CB_LM_STEP_TOKENS_MAX, "max_tokens_per_step");
    RANGE(o->max_waiting, 1, CB_SERVE_MAX_WAITING, "max_waiting");
    RANGE(o->kv_cache_bytes, 1, (int64_t)1 << 40, "kv_cache_bytes");
    RANGE(o->block_tokens, 1, CB_LM_BLOCK_TOKENS_MAX, "block_tokens");
    RANGE(o->port, 0, 65535, "port");
    RANGE(o->max_connections, 1, CB_SERVE_MAX_CONNECTIONS, "max_connections");
    RANGE((int64_t)o->max_body_bytes, 1, (int64_t)CB_SERVE_BODY_MAX_BYTES, "max_body_bytes");
#undef RANGE
    if (!o->model || !*o->model) return cb_error_set(err, CB_EINVAL, "model: empty");
    if (!o->host || !*o->host) return cb_error_set(err, CB_EINVAL, "host: empty");
    const char *name = o->served_name ? o->served_name : o->model;
    if (strlen(name) >= CB_SERVE_NAME_MAX || !*name)
        return cb_error_set(err, CB_EINVAL, "served model name: empty or longer than %d bytes",
                            CB_SERVE_NAME_MAX - 1);
    return CB_OK;
}

/* The tokenizer.json next to the model's config.json, if the model is a path and it exists. */
static int default_tokenizer(const char *model, char *path, size_t cap) {
    struct stat st;
    if (stat(model, &st) != 0) return 0;
    int n;
    if (S_ISDIR(st.st_mode)) {
        n = snprintf(path, cap, "%s/tokenizer.json", model);
    } else {
        const char *slash = strrchr(model, '/');
        n = slash ? snprintf(path, cap, "%.*s/tokenizer.json", (int)(slash - model), model)
                  : snprintf(path, cap, "tokenizer.json");
    }
    return n > 0 && (size_t)n < cap && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int load_tokenizer(cb_serve *s, cb_error *err) {
    char path[4096];
    const char *p = s->o.tokenizer;
    if (!p && default_tokenizer(s->o.model, path, sizeof path)) p = path;
    if (!p) return CB_OK;
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_tok_load_hf(p, &s->tok, &e);
    if (rc) {
        char m[CB_ERROR_MSG_MAX];
        cb_error_format(&e, m, sizeof m);
        return cb_error_set(err, rc, "tokenizer: %s", m);
    }
    if (cb_tok_vocab_size(s->tok) > s->cfg.vocab)
        return cb_error_set(err, CB_ECONFIG, "tokenizer: %s has ids up to %d, more than the "
                            "model's vocabulary of %lld", p, (int)cb_tok_vocab_size(s->tok) - 1,
                            (long long)s->cfg.vocab);
    if (cb_tok_special_id(s->tok, "<|im_start|>") >= 0) s->chat_fmt = CB_TOK_CHAT_CHATML;
    else if (cb_tok_special_id(s->tok, "<|start_header_id|>") >= 0)
        s->chat_fmt = CB_TOK_CHAT_LLAMA3;
    return CB_OK;
}

static int load_model(cb_serve *s, cb_error *err) {
    const cb_serve_opts *o = &s->o;
    cb_error e;
    cb_error_clear(&e);
    char m[CB_ERROR_MSG_MAX];
    int rc = cb_lm_config_resolve(o->model, &s->cfg, &e);
    if (rc) {
        cb_error_format(&e, m, sizeof m);
        return cb_error_set(err, rc, "model: %s", m);
    }
    /* as llm.generate on the CPU: matrices packed for the kernels, no second copy */
    cb_lm_weights_opts wo = {o->bf16 ? CB_LM_BF16 : CB_LM_F32, o->weights, o->seed, 1};
    rc = cb_lm_weights_create(&s->cfg, &wo, &s->w, &e);
    if (rc) {
        cb_error_format(&e, m, sizeof m);
        return cb_error_set(err, rc, "weights: %s", m);
    }
    cb_lm_model_opts mo = CB_LM_MODEL_OPTS_DEFAULT;
    mo.threads = o->threads;
    mo.max_step_tokens = o->max_tokens_per_step;
    mo.max_step_seqs = o->max_batch;
    if ((rc = cb_lm_model_create_opts(s->w, &mo, &s->model, &e)) ||
        (rc = cb_lm_kv_create(s->model, (size_t)o->kv_cache_bytes, o->block_tokens, &s->kv, &e)))
        return cb_error_set(err, rc, "%s", e.msg);
    cb_engine_opts eo = CB_ENGINE_OPTS_DEFAULT;
    eo.max_batch = o->max_batch;
    eo.max_tokens_per_step = o->max_tokens_per_step;
    eo.max_waiting = o->max_waiting;
    eo.seed = o->seed;
    eo.on_token = on_token;
    eo.on_token_arg = s;
    if ((rc = cb_engine_create(s->model, s->kv, &eo, &s->engine, &e)))
        return cb_error_set(err, rc, "engine: %s", e.msg);
    s->max_positions = s->cfg.max_positions;
    /* one request holds ceil((prompt + max_tokens - 1) / block) blocks: positions the pool
     * gives a single request */
    s->pool_positions = (int64_t)cb_lm_kv_n_blocks(s->kv) * o->block_tokens + 1;
    s->cap_touched = o->max_batch;
    s->touched = cb_calloc((size_t)o->max_batch, sizeof *s->touched);
    if (!s->touched) return cb_error_set(err, CB_ENOMEM, "serve: out of memory");
    return CB_OK;
}

static int bind_listen(cb_serve *s, cb_error *err) {
    char port[16];
    snprintf(port, sizeof port, "%d", s->o.port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(s->o.host, port, &hints, &ai);
    if (g)
        return cb_error_set(err, CB_EINVAL, "host: cannot resolve '%s': %s", s->o.host,
                            gai_strerror(g));
    int fd = -1, why = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            why = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            why = errno;
            close(fd);
            fd = -1;
            continue;
        }
        s->ipv6 = a->ai_family == AF_INET6;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return cb_error_set(err, CB_EIO, "cannot listen on %s port %d: %s", s->o.host, s->o.port,
                            strerror(why));
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        s->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
    s->listen_fd = fd;
    return CB_OK;
}

int cb_serve_create(const cb_serve_opts *opts, cb_serve **out, cb_error *err) {
    *out = NULL;
    int rc = check_opts(opts, err);
    if (rc) return rc;
    cb_serve *s = cb_calloc(1, sizeof *s);
    if (!s) return cb_error_set(err, CB_ENOMEM, "serve: out of memory");
    s->o = *opts; /* its strings are borrowed for this call only (cleared below) */
    s->listen_fd = -1;
    snprintf(s->name, sizeof s->name, "%s", opts->served_name ? opts->served_name : opts->model);
    snprintf(s->host, sizeof s->host, "%s", opts->host);
    s->log = opts->log;
    s->created = (int64_t)time(NULL);
    s->capacity = (int64_t)opts->max_batch + opts->max_waiting;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    cond_init_mono(&s->idle_cv);
    rc = load_model(s, err);
    if (!rc) rc = load_tokenizer(s, err);
    if (!rc && !s->tok && s->cfg.vocab < 256)
        rc = cb_error_set(err, CB_ECONFIG, "model: vocabulary of %lld ids: without a tokenizer "
                          "the byte fallback needs 256", (long long)s->cfg.vocab);
    if (!rc) rc = bind_listen(s, err);
    s->o.model = s->o.weights = s->o.tokenizer = s->o.served_name = s->o.host = NULL;
    if (rc) {
        cb_serve_destroy(s);
        return rc;
    }
    *out = s;
    return CB_OK;
}

int cb_serve_start(cb_serve *s, cb_error *err) {
    if (s->started) return cb_error_set(err, CB_EINVAL, "serve: already started");
    int e = pthread_create(&s->engine_thread, NULL, engine_main, s);
    if (e) return cb_error_set(err, CB_EIO, "serve: cannot start the engine thread: %s",
                               strerror(e));
    s->started = 1;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ITC | MHD_USE_POLL | MHD_USE_ERROR_LOG |
                     (s->ipv6 ? MHD_USE_IPv6 : 0);
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_access, s, MHD_OPTION_LISTEN_SOCKET,
                              s->listen_fd, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)CB_SERVE_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED,
                              on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                              MHD_OPTION_END);
    if (!s->mhd) {
        cb_serve_stop(s);
        return cb_error_set(err, CB_EIO, "serve: libmicrohttpd did not start on port %d",
                            s->port);
    }
    s->listen_fd = -1; /* libmicrohttpd's now, until quiesce gives it back */
    return CB_OK;
}

void cb_serve_stop(cb_serve *s) {
    if (!s || !s->started || s->stopped) return;
    s->stopped = 1;
    if (s->mhd) { /* no new connections; the socket comes back to us */
        MHD_socket fd = MHD_quiesce_daemon(s->mhd);
        if (fd != MHD_INVALID_SOCKET) s->listen_fd = fd;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->engine_thread, NULL); /* every request has ended */
    /* let the streams send their last events before the connections are closed */
    int64_t deadline = mono_ns() + STOP_DRAIN_NS;
    pthread_mutex_lock(&s->mu);
    while (s->open_requests > 0 && mono_ns() < deadline)
        cond_wait_ns(&s->idle_cv, &s->mu, WAIT_SLICE_NS);
    pthread_mutex_unlock(&s->mu);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
}

void cb_serve_destroy(cb_serve *s) {
    if (!s) return;
    cb_serve_stop(s);
    if (s->listen_fd >= 0) close(s->listen_fd);
    cb_engine_destroy(s->engine);
    cb_lm_kv_destroy(s->kv);
    cb_lm_model_destroy(s->model);
    cb_lm_weights_destroy(s->w);
    cb_tok_free(s->tok);
    cb_free(s->touched);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->idle_cv);
    cb_free(s);
}

int cb_serve_port(const cb_serve *s) { return s->port; }
const char *cb_serve_host(const cb_serve *s) { return s->host; }
const char *cb_serve_name(const cb_serve *s) { return s->name; }
int cb_serve_random_weights(const cb_serve *s) { return cb_lm_weights_random(s->w); }
int cb_serve_has_tokenizer(const cb_serve *s) { return s->tok != NULL; }

void cb_serve_get_stats(cb_serve *s, cb_serve_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}
