/* stages/llm/openai.c - llm.openai: each query a request to an OpenAI-compatible server (vLLM,
 * SGLang, TGI, llama.cpp, Ollama, `colobench serve`), streamed or not, many in flight at once.
 *
 * What: run() turns the query's LLM request (llm/request.h, from llm.prompts or llm.tokenize)
 * into a POST to `url` + /v1/completions, /v1/chat/completions or /v1/embeddings, hands it to
 * the instance's I/O thread and holds the query (stage.h, "Held queries"); the I/O thread drives
 * every transfer of the instance on one epoll set (one thread, any number of connections,
 * reused across requests): for http:// URLs with colobench's HTTP/1.1 client (oai_http.h: about
 * 16 us of CPU a request where libcurl takes 40-60, so one stage drives ~40k requests/s on 2
 * cores next to its server), for https:// or with http_client: libcurl through libcurl's
 * multi-socket interface; step() completes the transfers that ended, reporting
 * their metrics. So one instance keeps up to max_concurrency requests in flight without a
 * thread per request, the load generator's arrival times are honoured (a request is sent when
 * its query arrives, whatever the server is doing: an open loop keeps its schedule while the
 * server is slow), and requests complete in the order they finish. When max_concurrency
 * requests are in flight, run() waits for one to end (back-pressure, as vLLM's bench
 * --max-concurrency): the wait counts in the request's latency, which starts at its arrival.
 *
 * Timing: token times are taken on the I/O thread when the bytes read from the socket are handed
 * over (one clock read per read, before parsing), not when a worker gets around to them.
 * Metrics, with llm.generate's names and meanings so an engine and a server compare directly
 * (latencies from the query's scheduled arrival, host->arrival_ns): prompt_tokens, output_tokens,
 * tokens (COUNT); ttft_ns, tpot_ns ((last - first token time) / (output tokens - 1)),
 * itl_mean_ns, itl_max_ns (DIST per request, over the gaps between content chunks), slo_met.
 * Client-side: itl_ns (DIST, one value per gap: every inter-token gap of every request, vLLM's
 * ITL distribution), chunks (content chunks received), tokens_counted (1 when the server sent no
 * usage and output_tokens is the number of content chunks: say which), errors and
 * errors_connect / errors_http / errors_timeout / errors_stream (1 per failed request). A server
 * that streams several tokens per chunk shows it as output_tokens > chunks. Without streaming
 * only the counts are reported (the query's latency is the request's).
 *
 * Errors: connection refused, HTTP 4xx/5xx (with the first CB_OAI_EXCERPT_BYTES of the body), a
 * timeout, a stream that ends before [DONE] or does not parse, an error object from the server:
 * each is counted against its query (the metrics above) and logged (the first
 * CB_OAI_LOGGED_ERRORS; finish() logs the totals). on_error: record (default) ends such a query
 * as failed (CB_RUN_FAILED: queries.csv status "error", the summary's failed count, never a
 * success, never in the latency figures) and goes on; fail fails the pipeline with the message.
 *
 * Secrets: api_key_env names an environment variable whose value is sent as a bearer token; the
 * key itself is never in the config, so never in config.yaml, logs or traces. A literal key in a
 * config file is not accepted for that reason.
 *
 * Limits: max_concurrency transfers per instance (a fixed pool); a streamed event at most
 * CB_OAI_EVENT_BYTES (the SSE parser's buffer, allocated when the slot is first used); a
 * non-streamed body at most max_response_bytes; per request at most max_tokens + 16 chunk times
 * are kept (more chunks are counted, not timed). Memory is flat in the run's length.
 *
 * Threads: the instance's I/O thread owns the CURLM handle and the transfers while they are in
 * flight; run() and step() own them when free or done. They meet in `mu` (the inbox, the done
 * list, the cancel handshake); the I/O thread wakes step() with host->wake and run() with
 * `done_cv`. Ownership: the state owns the pool, the handles and the thread (released in
 * destroy); a held query's payload stays as it came (the request is forwarded unchanged).
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "colobench/stage.h"
#include "llm/jdom.h"
#include "llm/oai_chunk.h"
#include "llm/request.h"
#include "llm/sse.h"
#include "stages/llm/oai_http.h"
#include "stages/llm/slo.h"
#include "stages/util/util.h"

#define CB_OAI_EVENT_BYTES ((size_t)64 << 10)  /* one SSE event (line + data) */
#define CB_OAI_EXCERPT_BYTES 512               /* of an error body, in messages */
#define CB_OAI_LOGGED_ERRORS 10                /* errors logged one by one per instance */
#define CB_OAI_MAX_CONCURRENCY 65536
#define CB_OAI_URL_MAX 2048

enum {
    P_URL,
    P_SERVER,
    P_ENDPOINT,
    P_MODEL,
    P_STREAM,
    P_INCLUDE_USAGE,
    P_MAX_CONCURRENCY,
    P_TIMEOUT,
    P_CONNECT_TIMEOUT,
    P_MAX_TOKENS,
    P_IGNORE_EOS,
    P_TEMPERATURE,
    P_TOP_P,
    P_PROMPT,
    P_API_KEY_ENV,
    P_ON_ERROR,
    P_SLO,
    P_MAX_RESPONSE_BYTES,
    P_HTTP_CLIENT,
    P_COUNT
};

enum { EP_COMPLETIONS, EP_CHAT, EP_EMBEDDINGS };
enum { PR_AUTO, PR_TEXT, PR_IDS };
enum { IE_REQUEST, IE_ALWAYS, IE_NEVER };
enum { OE_RECORD, OE_FAIL };

static const cb_param_def oai_params[P_COUNT] = {
    [P_URL] = {"url", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
               "the server's base URL, http://HOST:PORT (the endpoint's path is appended); or "
               "give server"},
    [P_SERVER] = {"server", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                  "the name of one of the benchmark's servers: its URL is used"},
    [P_ENDPOINT] = {"endpoint", CB_PARAM_ENUM, "completions", CB_PARAM_UNBOUNDED,
                    "completions|chat|embeddings",
                    "/v1/completions, /v1/chat/completions or /v1/embeddings"},
    [P_MODEL] = {"model", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                 "the model name sent with each request (unset: not sent)"},
    [P_STREAM] = {"stream", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                  "stream the response (server-sent events): TTFT and inter-token gaps"},
    [P_INCLUDE_USAGE] = {"include_usage", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                         "ask for the token counts at the end of a stream "
                         "(stream_options.include_usage)"},
    [P_MAX_CONCURRENCY] = {"max_concurrency", CB_PARAM_INT, "256", 1, CB_OAI_MAX_CONCURRENCY,
                           NULL, "requests in flight per worker; at the limit run() waits"},
    [P_TIMEOUT] = {"timeout", CB_PARAM_FLOAT, "600", 0.001, 86400, NULL,
                   "seconds a request may take, from its sending to its last byte"},
    [P_CONNECT_TIMEOUT] = {"connect_timeout", CB_PARAM_FLOAT, "10", 0.001, 3600, NULL,
                           "seconds to connect"},
    [P_MAX_TOKENS] = {"max_tokens", CB_PARAM_INT, "0", 0, CB_LLM_MAX_NEW_TOKENS, NULL,
                      "max_tokens sent (0 = the request's max_new_tokens)"},
    [P_IGNORE_EOS] = {"ignore_eos", CB_PARAM_ENUM, "request", CB_PARAM_UNBOUNDED,
                      "request|always|never",
                      "send ignore_eos (vLLM's extension: exactly max_tokens): when the request "
                      "asks for it (llm.prompts' ignore_eos), always or never"},
    [P_TEMPERATURE] = {"temperature", CB_PARAM_FLOAT, "0", 0, 100, NULL,
                       "sampling temperature sent"},
    [P_TOP_P] = {"top_p", CB_PARAM_FLOAT, "1", 0, 1, NULL, "top_p sent (1: not sent)"},
    [P_PROMPT] = {"prompt", CB_PARAM_ENUM, "auto", CB_PARAM_UNBOUNDED, "auto|text|ids",
                  "send the prompt text or its token ids (auto: the text when the request has "
                  "one; chat needs text)"},
    [P_API_KEY_ENV] = {"api_key_env", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                       "environment variable holding the API key (sent as a bearer token; the "
                       "key is never written anywhere)"},
    [P_ON_ERROR] = {"on_error", CB_PARAM_ENUM, "record", CB_PARAM_UNBOUNDED, "record|fail",
                    "a failed request: record it (counted, its query failed) and go on, or "
                    "fail the run"},
    [P_SLO] = CB_LLM_SLO_PARAM(),
    [P_MAX_RESPONSE_BYTES] = {"max_response_bytes", CB_PARAM_INT, "8388608", 1024, 1073741824.0,
                              NULL, "largest non-streamed response body kept"},
    [P_HTTP_CLIENT] = {"http_client", CB_PARAM_ENUM, "native", CB_PARAM_UNBOUNDED,
                       "native|libcurl",
                       "for http:// URLs: colobench's HTTP/1.1 client (a few us a request) or "
                       "libcurl's (https always uses libcurl)"},
};

enum {
    M_PROMPT_TOKENS,
    M_OUTPUT_TOKENS,
    M_TOKENS,
    M_TTFT,
    M_TPOT,
    M_ITL_MEAN,
    M_ITL_MAX,
    M_SLO_MET,
    M_ITL,
    M_CHUNKS,
    M_TOKENS_COUNTED,
    M_ERRORS,
    M_ERRORS_CONNECT,
    M_ERRORS_HTTP,
    M_ERRORS_TIMEOUT,
    M_ERRORS_STREAM,
    M_COUNT
};

static const cb_metric_def oai_metrics[M_COUNT] = {
    [M_PROMPT_TOKENS] = {"prompt_tokens", CB_METRIC_COUNT, "tokens",
                         "prompt tokens (the server's usage, else the ids sent)"},
    [M_OUTPUT_TOKENS] = {"output_tokens", CB_METRIC_COUNT, "tokens",
                         "tokens generated (the server's usage, else content chunks; per_second: "
                         "output tokens/s)"},
    [M_TOKENS] = {"tokens", CB_METRIC_COUNT, "tokens",
                  "prompt + output tokens (per_second: total tokens/s)"},
    [M_TTFT] = {"ttft_ns", CB_METRIC_DIST, "ns", "time to first token, from the arrival"},
    [M_TPOT] = {"tpot_ns", CB_METRIC_DIST, "ns",
                "time per output token after the first: (last - first) / (n - 1), n >= 2"},
    [M_ITL_MEAN] = {"itl_mean_ns", CB_METRIC_DIST, "ns",
                    "mean gap between consecutive content chunks of a request"},
    [M_ITL_MAX] = {"itl_max_ns", CB_METRIC_DIST, "ns",
                   "largest gap between consecutive content chunks of a request"},
    [M_SLO_MET] = {"slo_met", CB_METRIC_COUNT, "requests",
                   "1 when TTFT and TPOT met the slo (per_second: goodput); only with slo"},
    [M_ITL] = {"itl_ns", CB_METRIC_DIST, "ns",
               "every gap between consecutive content chunks (one value per gap)"},
    [M_CHUNKS] = {"chunks", CB_METRIC_COUNT, "chunks", "content chunks received"},
    [M_TOKENS_COUNTED] = {"tokens_counted", CB_METRIC_COUNT, "requests",
                          "1 when the server sent no usage and output_tokens counts chunks"},
    [M_ERRORS] = {"errors", CB_METRIC_COUNT, "requests", "1 per failed request"},
    [M_ERRORS_CONNECT] = {"errors_connect", CB_METRIC_COUNT, "requests",
                          "could not connect (refused, unreachable, connect timeout)"},
    [M_ERRORS_HTTP] = {"errors_http", CB_METRIC_COUNT, "requests",
                       "HTTP status >= 400, or an error object from the server"},
    [M_ERRORS_TIMEOUT] = {"errors_timeout", CB_METRIC_COUNT, "requests",
                          "the request took longer than timeout"},
    [M_ERRORS_STREAM] = {"errors_stream", CB_METRIC_COUNT, "requests",
                         "the response broke off or did not parse (no [DONE], bad JSON, "
                         "connection closed mid-response)"},
};

typedef enum xfer_err {
    XE_NONE = 0,
    XE_CONNECT,
    XE_HTTP,
    XE_TIMEOUT,
    XE_STREAM,
    XE_CANCELLED
} xfer_err;

/* One request slot of the pool. */
typedef struct xfer {
    CURL *easy;
    struct xfer *next;          /* free list, inbox or done list */
    int in_multi;               /* the I/O thread's: added to the multi handle */
    /* set by run() */
    cb_held *h;
    int64_t index;              /* the request's */
    int64_t arrival_ns;
    int64_t ids_sent;           /* prompt ids sent (0: text) */
    int max_chunks;             /* chunk times kept */
    char *body;                 /* the request body (owned) */
    size_t body_len;
    /* the I/O thread's while in flight */
    cb_sse sse;
    char *sse_buf;              /* CB_OAI_EVENT_BYTES, allocated on first use */
    char *resp;                 /* non-streamed body, grown (doubling) up to resp_max */
    size_t resp_len, resp_cap, resp_max;
    char excerpt[CB_OAI_EXCERPT_BYTES + 1]; /* the body's first bytes */
    size_t excerpt_len;
    int64_t *chunk_ns;          /* content chunk times (max_chunks of chunk_cap) */
    size_t chunk_cap;
    int n_timed;                /* chunk times kept */
    int64_t n_chunks;           /* content chunks */
    int64_t first_ns, last_ns, itl_sum_ns, itl_max_ns;
    int64_t usage_prompt, usage_completion; /* -1: none */
    int done_marker;            /* [DONE] seen */
    int got_json;               /* a non-streamed body parsed */
    long status;
    cb_h1_req hreq;             /* the native client's request (http_client: native) */
    xfer_err err;
    char msg[CB_OAI_EXCERPT_BYTES + 256];
} xfer;

typedef struct oai_state {
    const cb_host *host;
    const cb_param_value *v;
    const char *stage;
    int endpoint, prompt_mode, ignore_eos, on_error;
    int stream, include_usage;
    cb_llm_slo slo;
    char url[CB_OAI_URL_MAX];
    char auth[1024];            /* "Authorization: Bearer KEY" or "" (never logged) */
    int max_concurrency;
    size_t max_response_bytes;
    /* the pool */
    xfer *slots;
    xfer *free_list;
    int n_free;
    int n_held;
    struct curl_slist *headers;
    CURLM *multi;
    /* the I/O thread */
    pthread_t io;
    int io_started;
    pthread_mutex_t mu;
    pthread_cond_t done_cv;     /* done list grew, or the cancel was carried out */
    int sync_init;
    xfer *inbox, *inbox_tail;   /* under mu: handed to the I/O thread, in arrival order */
    int epfd, evfd;             /* the I/O thread's epoll set and its wake-up eventfd */
    cb_h1 *h1;                  /* the native HTTP/1.1 client; NULL: libcurl drives transfers */
    int native;
    int64_t timer_at_ns;        /* the I/O thread's: libcurl's next timeout (-1: none) */
    xfer *done, *done_tail;     /* under mu: ended, for step() or run(), in order */
    int stop;                   /* under mu */
    int cancel_req, cancel_ack; /* under mu: abort every transfer in flight */
    cb_waker *waker;            /* under mu: set by the first run() */
    /* counts, for finish() */
    int64_t n_requests, n_ok, n_err[XE_CANCELLED + 1], n_counted;
    int64_t n_logged;
    int curl_global;
} oai_state;

static void oai_log(const oai_state *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void oai_log(const oai_state *s, int level, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->host && s->host->log) s->host->log(level, s->stage, msg);
}

/* ---- the request body --------------------------------------------------------------------- */

typedef struct jbuf {
    char *p;
    size_t len, cap;
    int oom;
} jbuf;

static void jb_grow(jbuf *b, size_t more) {
    if (b->oom || b->len + more <= b->cap) return;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + more) nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = nc;
}

static void jb_put(jbuf *b, const char *s, size_t n) {
    jb_grow(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void jb_str(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }

static void jb_fmt(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_fmt(jbuf *b, const char *fmt, ...) {
    char t[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t, sizeof t, fmt, ap);
    va_end(ap);
    if (n > 0) jb_put(b, t, (size_t)n < sizeof t ? (size_t)n : sizeof t - 1);
}

/* A JSON string of valid UTF-8 s[0..n): quotes, backslashes and control characters escaped. */
static void jb_json_str(jbuf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    jb_grow(b, n + 2);
    jb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jb_put(b, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"': jb_put(b, "\\\"", 2); break;
        case '\\': jb_put(b, "\\\\", 2); break;
        case '\n': jb_put(b, "\\n", 2); break;
        case '\r': jb_put(b, "\\r", 2); break;
        case '\t': jb_put(b, "\\t", 2); break;
        default: jb_put(b, e, 6); break;
        }
    }
    jb_put(b, s + run, n - run);
    jb_put(b, "\"", 1);
}

static void jb_ids(jbuf *b, const int32_t *ids, uint32_t n) {
    jb_grow(b, (size_t)n * 8 + 2);
    jb_put(b, "[", 1);
    for (uint32_t i = 0; i < n; i++) {
        char t[16];
        int k = snprintf(t, sizeof t, i ? ",%d" : "%d", ids[i]);
        jb_put(b, t, (size_t)k);
    }
    jb_put(b, "]", 1);
}

/* The body for request r into x (x->body, owned). 0, or a CB_E* code with msg. */
static int build_body(oai_state *s, cb_llm_request *r, xfer *x, cb_error *err) {
    const cb_param_value *v = s->v;
    int text = s->prompt_mode == PR_TEXT ||
               (s->prompt_mode == PR_AUTO && (r->prompt_bytes > 0 || s->endpoint == EP_CHAT));
    if (text && r->prompt_bytes == 0)
        return cb_util_error(err, CB_EINVAL, "request %lld: no prompt text to send (prompt: "
                             "%s; the chat endpoint sends text)", (long long)r->index,
                             s->prompt_mode == PR_TEXT ? "text" : "auto");
    if (!text && r->n_prompt_tokens == 0)
        return cb_util_error(err, CB_EINVAL, "request %lld: no prompt ids to send (prompt: ids; "
                             "put llm.tokenize before llm.openai)", (long long)r->index);
    jbuf b = {0};
    jb_str(&b, "{");
    if (v[P_MODEL].has_value) {
        jb_str(&b, "\"model\":");
        jb_json_str(&b, v[P_MODEL].s, strlen(v[P_MODEL].s));
        jb_str(&b, ",");
    }
    if (s->endpoint == EP_CHAT) {
        jb_str(&b, "\"messages\":[{\"role\":\"user\",\"content\":");
        jb_json_str(&b, cb_llm_request_text(r), (size_t)r->prompt_bytes);
        jb_str(&b, "}]");
    } else {
        jb_str(&b, s->endpoint == EP_EMBEDDINGS ? "\"input\":" : "\"prompt\":");
        if (text) jb_json_str(&b, cb_llm_request_text(r), (size_t)r->prompt_bytes);
        else jb_ids(&b, cb_llm_request_prompt_ids(r), r->n_prompt_tokens);
    }
    x->ids_sent = text ? 0 : r->n_prompt_tokens;
    int64_t max_tokens = v[P_MAX_TOKENS].i ? v[P_MAX_TOKENS].i : (int64_t)r->max_new_tokens;
    x->max_chunks = (int)max_tokens + 16;
    if (s->endpoint != EP_EMBEDDINGS) {
        jb_fmt(&b, ",\"max_tokens\":%lld", (long long)max_tokens);
        jb_fmt(&b, ",\"temperature\":%.17g", v[P_TEMPERATURE].f);
        if (v[P_TOP_P].f < 1) jb_fmt(&b, ",\"top_p\":%.17g", v[P_TOP_P].f);
        int ie = s->ignore_eos == IE_ALWAYS ||
                 (s->ignore_eos == IE_REQUEST && (r->flags & CB_LLM_REQ_IGNORE_EOS));
        if (ie) jb_str(&b, ",\"ignore_eos\":true");
        if (s->stream) {
            jb_str(&b, ",\"stream\":true");
            if (s->include_usage) jb_str(&b, ",\"stream_options\":{\"include_usage\":true}");
        }
    }
    jb_str(&b, "}");
    if (b.oom) {
        free(b.p);
        return cb_util_error(err, CB_ENOMEM, "request %lld: out of memory for its body",
                             (long long)r->index);
    }
    x->body = b.p;
    x->body_len = b.len;
    return CB_OK;
}

/* ---- the I/O thread's side ---------------------------------------------------------------- */

/* The host clock (stage.h: CLOCK_MONOTONIC in ns), read on the I/O thread too. */
static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}


static void xfer_fail(xfer *x, xfer_err e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void xfer_fail(xfer *x, xfer_err e, const char *fmt, ...) {
    if (x->err != XE_NONE) return; /* the first cause is the one */
    x->err = e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->msg, sizeof x->msg, fmt, ap);
    va_end(ap);
}

/* One parsed response or event (chunk). t_ns: when its bytes were read. */
static void take_chunk(xfer *x, const cb_oai_chunk *c, int64_t t_ns) {
    if (c->error) {
        xfer_fail(x, XE_HTTP, "the server sent an error: %.400s", c->error);
        return;
    }
    if (c->prompt_tokens >= 0) x->usage_prompt = c->prompt_tokens;
    if (c->completion_tokens >= 0) x->usage_completion = c->completion_tokens;
    if (!c->text || c->text_len == 0) return;
    if (x->n_chunks == 0) x->first_ns = t_ns;
    else {
        int64_t gap = t_ns - x->last_ns;
        x->itl_sum_ns += gap;
        if (gap > x->itl_max_ns) x->itl_max_ns = gap;
    }
    x->last_ns = t_ns;
    if (x->chunk_ns && x->n_timed < x->max_chunks) x->chunk_ns[x->n_timed++] = t_ns;
    x->n_chunks++;
}

typedef struct event_ctx {
    xfer *x;
    int64_t t_ns;
} event_ctx;

static int on_event(void *arg, const cb_sse_event *ev) {
    event_ctx *ec = arg;
    xfer *x = ec->x;
    if (x->done_marker) return 0; /* nothing counts after [DONE] */
    if (strcmp(ev->type, "error") == 0) {
        xfer_fail(x, XE_HTTP, "the server sent an error event: %.400s", ev->data);
        return 0;
    }
    cb_oai_chunk c;
    cb__jdom *doc = NULL;
    cb_error e;
    cb_error_clear(&e);
    if (cb_oai_chunk_parse(ev->data, ev->data_len, "event", &c, &doc, &e) != CB_OK) {
        xfer_fail(x, XE_STREAM, "malformed stream: %s", e.msg);
        return 1;
    }
    if (c.done) x->done_marker = 1;
    else take_chunk(x, &c, ec->t_ns);
    cb__jdom_free(doc);
    return 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg) {
    int64_t t_ns = mono_ns(); /* when these bytes came off the socket */
    xfer *x = arg;
    size_t n = size * nmemb;
    if (x->excerpt_len < CB_OAI_EXCERPT_BYTES) {
        size_t k = CB_OAI_EXCERPT_BYTES - x->excerpt_len < n ? CB_OAI_EXCERPT_BYTES - x->excerpt_len : n;
        memcpy(x->excerpt + x->excerpt_len, data, k);
        x->excerpt_len += k;
        x->excerpt[x->excerpt_len] = 0;
    }
    if (x->status == 0) curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status >= 300 || x->err != XE_NONE) return n; /* an error body: the excerpt only */
    if (x->sse_buf) { /* streaming */
        event_ctx ec = {x, t_ns};
        cb_error e;
        cb_error_clear(&e);
        int rc = cb_sse_feed(&x->sse, data, n, on_event, &ec, &e);
        if (rc == CB_EFULL) xfer_fail(x, XE_STREAM, "malformed stream: %s", e.msg);
        return n;
    }
    if (x->resp_len + n > x->resp_cap) {
        if (x->resp_len + n > x->resp_max)
            return 0; /* over max_response_bytes: the transfer ends with a write error */
        size_t cap = x->resp_cap ? x->resp_cap : 4096;
        while (cap < x->resp_len + n) cap *= 2;
        if (cap > x->resp_max) cap = x->resp_max;
        char *p = realloc(x->resp, cap + 1);
        if (!p) return 0;
        x->resp = p;
        x->resp_cap = cap;
    }
    memcpy(x->resp + x->resp_len, data, n);
    x->resp_len += n;
    return n;
}

/* The native client's body callback: the same as libcurl's, the status known. */
static int on_body_native(void *user, long status, const char *data, size_t n) {
    xfer *x = user;
    x->status = status;
    if (on_write((char *)(uintptr_t)data, 1, n, x) == n) return 0;
    xfer_fail(x, XE_STREAM, "response over max_response_bytes (%zu)", x->resp_max);
    return 1;
}

static void xfer_complete(oai_state *s, xfer *x);

/* The transfer x ended with curl result rc: sort out how. */
static void xfer_end(oai_state *s, xfer *x, CURLcode rc) {
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (rc == CURLE_WRITE_ERROR && !x->sse_buf && x->err == XE_NONE) {
        xfer_fail(x, XE_STREAM, "response over max_response_bytes (%zu)", s->max_response_bytes);
        return;
    }
    if (rc != CURLE_OK) {
        xfer_err e = XE_STREAM;
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
            rc == CURLE_COULDNT_RESOLVE_PROXY)
            e = XE_CONNECT;
        else if (rc == CURLE_OPERATION_TIMEDOUT) {
            curl_off_t connect_us = 0;
            curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
            e = connect_us == 0 ? XE_CONNECT : XE_TIMEOUT;
        }
        x->err = XE_NONE; /* the transport's cause beats what the partial body said */
        xfer_fail(x, e, "%s%s", curl_easy_strerror(rc),
                  e == XE_STREAM ? " (the response broke off)" : "");
        return;
    }
    xfer_complete(s, x);
}

/* The native client's request of x ended. */
static void xfer_end_native(oai_state *s, xfer *x) {
    const cb_h1_req *r = &x->hreq;
    if (r->status) x->status = r->status;
    if (r->outcome == CB_H1_ABORTED) {
        x->err = XE_CANCELLED;
        snprintf(x->msg, sizeof x->msg, "cancelled");
        return;
    }
    if (r->outcome != CB_H1_OK) {
        if (x->err == XE_STREAM && r->outcome == CB_H1_BROKEN) return; /* the reader's reason */
        xfer_err e = r->outcome == CB_H1_CONNECT   ? XE_CONNECT
                     : r->outcome == CB_H1_TIMEOUT ? XE_TIMEOUT
                                                   : XE_STREAM;
        x->err = XE_NONE; /* the transport's cause beats what the partial body said */
        xfer_fail(x, e, "%s", r->msg);
        return;
    }
    xfer_complete(s, x);
}

/* A transfer that ended with a complete response: its status, then its body. */
static void xfer_complete(oai_state *s, xfer *x) {
    int64_t t_ns = mono_ns();
    if (x->status >= 300) {
        x->err = XE_NONE;
        xfer_fail(x, XE_HTTP, "HTTP %ld: %.*s", x->status, (int)x->excerpt_len, x->excerpt);
        return;
    }
    if (x->err != XE_NONE) return;
    if (x->sse_buf) {
        if (!x->done_marker) {
            /* A server that answered without streaming (some do for errors or when a field is
             * ignored) sent one JSON body: take it as the whole response. */
            if (x->n_chunks == 0 && x->excerpt_len > 0 && x->excerpt[0] == '{') {
                cb_oai_chunk c;
                cb__jdom *doc = NULL;
                cb_error e;
                cb_error_clear(&e);
                if (x->excerpt_len < CB_OAI_EXCERPT_BYTES &&
                    cb_oai_chunk_parse(x->excerpt, x->excerpt_len, "response", &c, &doc, &e) == 0) {
                    take_chunk(x, &c, t_ns);
                    cb__jdom_free(doc);
                    if (x->err == XE_NONE)
                        xfer_fail(x, XE_STREAM, "the server did not stream (a JSON body instead "
                                                "of server-sent events)");
                    return;
                }
            }
            xfer_fail(x, XE_STREAM, "the stream ended before [DONE] (%lld content chunks)",
                      (long long)x->n_chunks);
        }
        return;
    }
    cb_oai_chunk c;
    cb__jdom *doc = NULL;
    cb_error e;
    cb_error_clear(&e);
    if (x->resp_len == 0) {
        xfer_fail(x, XE_STREAM, "empty response body");
        return;
    }
    if (cb_oai_chunk_parse(x->resp, x->resp_len, "response", &c, &doc, &e) != CB_OK) {
        xfer_fail(x, XE_STREAM, "malformed response: %s", e.msg);
        return;
    }
    x->got_json = 1;
    take_chunk(x, &c, t_ns);
    cb__jdom_free(doc);
}

/* Under s->mu: x joins the done list (in the order transfers end). */
static void push_done(oai_state *s, xfer *x) {
    x->next = NULL;
    if (s->done_tail) s->done_tail->next = x;
    else s->done = x;
    s->done_tail = x;
}

/* libcurl's socket callback: keeps the epoll set in step with the sockets it wants watched. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *arg, void *sockp) {
    (void)e;
    oai_state *s = arg;
    struct epoll_event ev = {0};
    ev.data.fd = fd;
    if (what == CURL_POLL_REMOVE) {
        if (sockp) epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
        curl_multi_assign(s->multi, fd, NULL);
        return 0;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (sockp) {
        epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
    } else if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) {
        curl_multi_assign(s->multi, fd, (void *)s); /* any non-NULL marks "in the set" */
    }
    return 0;
}

/* libcurl's timer callback: when it next wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT). */
static int on_timer(CURLM *m, long timeout_ms, void *arg) {
    (void)m;
    oai_state *s = arg;
    s->timer_at_ns = timeout_ms < 0 ? -1 : mono_ns() + (int64_t)timeout_ms * 1000000LL;
    return 0;
}

/* Collects the transfers libcurl finished into *list (in order). */
static int collect_ended(oai_state *s, xfer **head, xfer **tail) {
    CURLMsg *m;
    int left = 0, n = 0;
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) continue;
        char *p = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
        xfer *x = (xfer *)(void *)p;
        CURLcode rc = m->data.result;
        curl_multi_remove_handle(s->multi, m->easy_handle);
        if (!x) continue;
        x->in_multi = 0;
        xfer_end(s, x, rc);
        x->next = NULL;
        if (*tail) (*tail)->next = x;
        else *head = x;
        *tail = x;
        n++;
    }
    return n;
}

#define IO_EVENTS 64

static void *io_main(void *arg) {
    oai_state *s = arg;
    struct epoll_event evs[IO_EVENTS];
    for (;;) {
        /* Sleep until a socket is ready, libcurl's timer is due, or run()/stop/cancel signals. */
        int timeout_ms = 1000;
        if (s->timer_at_ns >= 0) {
            int64_t left = s->timer_at_ns - mono_ns();
            timeout_ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
            if (timeout_ms > 1000) timeout_ms = 1000;
        }
        int n = epoll_wait(s->epfd, evs, IO_EVENTS, timeout_ms);
        int running = 0, signalled = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == s->evfd) {
                signalled = 1;
                continue;
            }
            int mask = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                       (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                       (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(s->multi, evs[i].data.fd, mask, &running);
        }
        if (s->timer_at_ns >= 0 && mono_ns() >= s->timer_at_ns) {
            s->timer_at_ns = -1;
            curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        xfer *ended = NULL, *ended_tail = NULL;
        int n_ended = 0;
        if (signalled) {
            uint64_t v;
            if (read(s->evfd, &v, sizeof v) < 0) { /* EAGAIN: another read took it */ }
            pthread_mutex_lock(&s->mu);
            xfer *in = s->inbox;
            s->inbox = s->inbox_tail = NULL;
            int stop = s->stop, cancel = s->cancel_req && !s->cancel_ack;
            pthread_mutex_unlock(&s->mu);
            while (in) {
                xfer *x = in;
                in = in->next;
                x->next = NULL;
                CURLMcode mc = curl_multi_add_handle(s->multi, x->easy);
                if (mc == CURLM_OK) {
                    x->in_multi = 1;
                    continue;
                }
                xfer_fail(x, XE_CONNECT, "libcurl: %s", curl_multi_strerror(mc));
                if (ended_tail) ended_tail->next = x;
                else ended = x;
                ended_tail = x;
                n_ended++;
            }
            if (cancel || stop) {
                /* Every transfer in flight ends now, cancelled; the worker completes their
                 * queries once it sees the acknowledgement. */
                n_ended += collect_ended(s, &ended, &ended_tail);
                pthread_mutex_lock(&s->mu);
                for (xfer *x = ended; x; x = x->next) push_done(s, x);
                ended = ended_tail = NULL;
                for (int i = 0; i < s->max_concurrency; i++) {
                    xfer *x = &s->slots[i];
                    if (!x->in_multi) continue;
                    curl_multi_remove_handle(s->multi, x->easy);
                    x->in_multi = 0;
                    x->err = XE_CANCELLED;
                    snprintf(x->msg, sizeof x->msg, "cancelled");
                    push_done(s, x);
                }
                s->cancel_ack = 1;
                pthread_cond_broadcast(&s->done_cv);
                pthread_mutex_unlock(&s->mu);
                if (stop) break;
                continue;
            }
            /* New transfers start at once (libcurl asked for a timeout of 0 when they were
             * added): connect or send now, not after another epoll_wait. */
            if (s->timer_at_ns >= 0 && mono_ns() >= s->timer_at_ns) {
                s->timer_at_ns = -1;
                curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            }
        }
        n_ended += collect_ended(s, &ended, &ended_tail);
        if (n_ended) {
            pthread_mutex_lock(&s->mu);
            for (xfer *x = ended, *next; x; x = next) {
                next = x->next;
                push_done(s, x);
            }
            pthread_cond_broadcast(&s->done_cv);
            cb_waker *w = s->waker;
            pthread_mutex_unlock(&s->mu);
            if (w) s->host->wake(w);
        }
    }
    return NULL;
}

/* Hands the native client's ended requests d to the worker (sorted out here, outside the
 * lock); ack: a cancel or stop was carried out. */
static void native_deliver(oai_state *s, cb_h1_req *d, int ack) {
    for (cb_h1_req *r = d; r; r = r->next) xfer_end_native(s, r->user);
    if (!d && !ack) return;
    pthread_mutex_lock(&s->mu);
    for (cb_h1_req *r = d, *next; r; r = next) {
        next = r->next;
        push_done(s, r->user);
    }
    if (ack) s->cancel_ack = 1;
    pthread_cond_broadcast(&s->done_cv);
    cb_waker *w = s->waker;
    pthread_mutex_unlock(&s->mu);
    if (w && d) s->host->wake(w);
}

/* The I/O thread with the native HTTP/1.1 client (http_client: native). */
static void *io_main_native(void *arg) {
    oai_state *s = arg;
    struct epoll_event evs[IO_EVENTS];
    int timeout_ms = -1;
    for (;;) {
        int n = epoll_wait(s->epfd, evs, IO_EVENTS, timeout_ms < 0 ? 1000 : timeout_ms);
        int signalled = 0, stop = 0, cancel = 0;
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr) signalled = 1;
            else cb_h1_event(s->h1, evs[i].data.ptr, evs[i].events);
        }
        if (signalled) {
            uint64_t v;
            if (read(s->evfd, &v, sizeof v) < 0) { /* EAGAIN: taken already */ }
            pthread_mutex_lock(&s->mu);
            xfer *in = s->inbox;
            s->inbox = s->inbox_tail = NULL;
            stop = s->stop;
            cancel = s->cancel_req && !s->cancel_ack;
            pthread_mutex_unlock(&s->mu);
            for (xfer *x = in, *next; x; x = next) {
                next = x->next;
                x->next = NULL;
                cb_h1_start(s->h1, &x->hreq);
            }
            if (cancel || stop) cb_h1_abort_all(s->h1);
        }
        timeout_ms = cb_h1_timeouts(s->h1, mono_ns());
        native_deliver(s, cb_h1_take_done(s->h1), cancel || stop);
        if (stop) break;
    }
    return NULL;
}

/* Tells the I/O thread to look at the inbox and the flags (eventfd; several signals are one). */
static void io_signal(oai_state *s) {
    uint64_t one = 1;
    if (write(s->evfd, &one, sizeof one) < 0) { /* EAGAIN: a signal is pending already */ }
}

/* ---- the stage ---------------------------------------------------------------------------- */

static int oai_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    if (v[P_SERVER].has_value && v[P_URL].has_value && v[P_URL].is_set)
        return cb_util_error(err, CB_ECONFIG, "url: give url or server, not both");
    if (!v[P_URL].has_value || !v[P_URL].s[0])
        return cb_util_error(err, CB_ECONFIG, "url: is required (http://HOST:PORT of an "
                             "OpenAI-compatible server), or server: NAME of a benchmark server");
    const char *u = v[P_URL].s;
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return cb_util_error(err, CB_ECONFIG, "url: expected http://HOST:PORT or https://..., "
                             "got \"%.200s\"", u);
    if (strlen(u) + 32 > CB_OAI_URL_MAX)
        return cb_util_error(err, CB_ECONFIG, "url: longer than %d bytes", CB_OAI_URL_MAX - 32);
    for (const char *c = u; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return cb_util_error(err, CB_ECONFIG, "url: holds a space or control character");
    if (v[P_ENDPOINT].i == EP_CHAT && v[P_PROMPT].i == PR_IDS)
        return cb_util_error(err, CB_ECONFIG, "prompt: ids cannot be sent to the chat endpoint "
                             "(messages are text)");
    if (v[P_API_KEY_ENV].has_value) {
        const char *n = v[P_API_KEY_ENV].s;
        if (!n[0]) return cb_util_error(err, CB_ECONFIG, "api_key_env: empty variable name");
        for (const char *c = n; *c; c++)
            if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                  *c == '_'))
                return cb_util_error(err, CB_ECONFIG, "api_key_env: \"%.100s\" is not an "
                                     "environment variable name (the key itself belongs in the "
                                     "environment, not in the config)", n);
    }
    if (cb_llm_slo_check(&v[P_SLO], err) != CB_OK) return CB_ECONFIG;
    return CB_OK;
}

static int oai_create(void *state, const cb_stage_args *args, cb_error *err) {
    oai_state *s = state;
    int rc = oai_check(args, err);
    if (rc) return rc;
    const cb_host *h = args->host;
    if (h->struct_size < offsetof(cb_host, wake) + sizeof h->wake)
        return cb_util_error(err, CB_EUNSUPPORTED, "llm.openai needs a host with waiting steps "
                             "(stage ABI of 2026-12-08)");
    s->host = h;
    s->v = args->values;
    s->stage = args->stage;
    const cb_param_value *v = args->values;
    s->endpoint = (int)v[P_ENDPOINT].i;
    s->prompt_mode = (int)v[P_PROMPT].i;
    s->ignore_eos = (int)v[P_IGNORE_EOS].i;
    s->on_error = (int)v[P_ON_ERROR].i;
    s->stream = s->endpoint != EP_EMBEDDINGS && v[P_STREAM].i;
    s->include_usage = (int)v[P_INCLUDE_USAGE].i;
    s->max_concurrency = (int)v[P_MAX_CONCURRENCY].i;
    s->max_response_bytes = (size_t)v[P_MAX_RESPONSE_BYTES].i;
    const char *path = s->endpoint == EP_CHAT        ? "/v1/chat/completions"
                       : s->endpoint == EP_EMBEDDINGS ? "/v1/embeddings"
                                                      : "/v1/completions";
    const char *base = v[P_URL].s;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') bl--;
    /* A base that already ends in /v1 gets the path without it (both spellings are common). */
    if (bl >= 3 && memcmp(base + bl - 3, "/v1", 3) == 0) path += 3;
    snprintf(s->url, sizeof s->url, "%.*s%s", (int)bl, base, path);
    s->slo = cb_llm_slo_from(&v[P_SLO]);
    if (v[P_API_KEY_ENV].has_value) {
        const char *key = getenv(v[P_API_KEY_ENV].s);
        if (!key || !key[0])
            return cb_util_error(err, CB_ECONFIG, "api_key_env: the environment variable %s is "
                                 "not set", v[P_API_KEY_ENV].s);
        for (const char *c = key; *c; c++)
            if ((unsigned char)*c < 0x21 || *c == 0x7f)
                return cb_util_error(err, CB_ECONFIG, "api_key_env: the value of %s holds a space "
                                     "or control character", v[P_API_KEY_ENV].s);
        int n = snprintf(s->auth, sizeof s->auth, "Authorization: Bearer %s", key);
        if (n < 0 || (size_t)n >= sizeof s->auth)
            return cb_util_error(err, CB_ECONFIG, "api_key_env: the key in %s is longer than %zu "
                                 "bytes", v[P_API_KEY_ENV].s, sizeof s->auth - 32);
    }
    return CB_OK;
}

static int oai_prepare(void *state, cb_error *err) {
    oai_state *s = state;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return cb_util_error(err, CB_EIO, "libcurl could not initialise");
    s->curl_global = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->sync_init = 1;
    s->slots = calloc((size_t)s->max_concurrency, sizeof *s->slots);
    s->multi = curl_multi_init();
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    if (hl) hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */
    if (hl && s->stream) hl = curl_slist_append(hl, "Accept: text/event-stream");
    if (hl && s->auth[0]) hl = curl_slist_append(hl, s->auth);
    s->headers = hl;
    if (!s->slots || !s->multi || !hl) return cb_util_error(err, CB_ENOMEM, "out of memory");
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->epfd < 0 || s->evfd < 0)
        return cb_util_error(err, CB_EIO, "epoll/eventfd: %s", strerror(errno));
    const cb_param_value *v = s->v;
    s->native = v[P_HTTP_CLIENT].i == 0 && strncmp(s->url, "http://", 7) == 0;
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    if (s->native) ev.data.ptr = NULL; /* the native loop: NULL is the eventfd, else a connection */
    else ev.data.fd = s->evfd;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) != 0)
        return cb_util_error(err, CB_EIO, "epoll_ctl: %s", strerror(errno));
    if (s->native) {
        char extra[1200];
        snprintf(extra, sizeof extra, "Content-Type: application/json\r\n%s%s%s",
                 s->stream ? "Accept: text/event-stream\r\n" : "", s->auth,
                 s->auth[0] ? "\r\n" : "");
        cb_error e;
        cb_error_clear(&e);
        int rc = cb_h1_create(s->url, extra, s->epfd, s->max_concurrency, on_body_native, &s->h1, &e);
        memset(extra, 0, sizeof extra);
        if (rc) return cb_util_error(err, rc, "%s", e.msg);
        for (int i = 0; i < s->max_concurrency; i++) {
            xfer *x = &s->slots[i];
            x->next = s->free_list;
            s->free_list = x;
            s->n_free++;
        }
    } else {
        s->timer_at_ns = -1;
        curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
        curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
        curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)s->max_concurrency);
        curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->max_concurrency);
        for (int i = 0; i < s->max_concurrency; i++) {
            xfer *x = &s->slots[i];
            CURL *e = curl_easy_init();
            if (!e) return cb_util_error(err, CB_ENOMEM, "out of memory (libcurl handles)");
            x->easy = e;
            curl_easy_setopt(e, CURLOPT_URL, s->url);
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
            curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
            curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
            curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
            curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
            curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
            curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(v[P_TIMEOUT].f * 1000.0 + 0.5));
            curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(v[P_CONNECT_TIMEOUT].f * 1000.0 + 0.5));
            curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
            /* No proxy, whatever the environment says: the benchmark measures the server (and
             * libcurl skips its per-transfer proxy lookups). */
            curl_easy_setopt(e, CURLOPT_PROXY, "");
            x->next = s->free_list;
            s->free_list = x;
            s->n_free++;
        }
    }
    if (pthread_create(&s->io, NULL, s->native ? io_main_native : io_main, s) != 0)
        return cb_util_error(err, CB_EIO, "cannot start the I/O thread: %s", strerror(errno));
    s->io_started = 1;
    pthread_setname_np(s->io, "cb-openai-io");
    return CB_OK;
}

/* Resets slot x for a new request (buffers kept). 0 or CB_ENOMEM. */
static int xfer_reset(oai_state *s, xfer *x) {
    x->status = 0;
    x->err = XE_NONE;
    x->msg[0] = 0;
    x->excerpt_len = 0;
    x->excerpt[0] = 0;
    x->n_timed = 0;
    x->n_chunks = 0;
    x->first_ns = x->last_ns = x->itl_sum_ns = x->itl_max_ns = 0;
    x->usage_prompt = x->usage_completion = -1;
    x->done_marker = 0;
    x->got_json = 0;
    x->resp_len = 0;
    x->resp_max = s->max_response_bytes;
    if (s->stream) {
        if (!x->sse_buf && !(x->sse_buf = malloc(CB_OAI_EVENT_BYTES))) return CB_ENOMEM;
        cb_sse_init(&x->sse, x->sse_buf, CB_OAI_EVENT_BYTES);
        /* Chunk times: at most max_tokens + 16, and never more than 1 M (8 MB); the slot keeps
         * the largest array it needed. */
        size_t n = (size_t)x->max_chunks < ((size_t)1 << 20) ? (size_t)x->max_chunks : (size_t)1 << 20;
        x->max_chunks = (int)n;
        if (n > x->chunk_cap) {
            int64_t *c = realloc(x->chunk_ns, n * sizeof *c);
            if (!c) return CB_ENOMEM;
            x->chunk_ns = c;
            x->chunk_cap = n;
        }
    }
    return CB_OK;
}

static void count_error(oai_state *s, cb_run_ctx *ctx, xfer *x) {
    const cb_host *h = s->host;
    h->report_held(ctx, x->h, M_ERRORS, 1);
    int m = x->err == XE_CONNECT   ? M_ERRORS_CONNECT
            : x->err == XE_HTTP    ? M_ERRORS_HTTP
            : x->err == XE_TIMEOUT ? M_ERRORS_TIMEOUT
                                   : M_ERRORS_STREAM;
    h->report_held(ctx, x->h, m, 1);
    s->n_err[x->err]++;
    if (s->n_logged < CB_OAI_LOGGED_ERRORS) {
        s->n_logged++;
        oai_log(s, CB_LOG_WARN, "llm.openai: request %lld: %s%s", (long long)x->index, x->msg,
                s->n_logged == CB_OAI_LOGGED_ERRORS ? " (later errors are counted, not logged)"
                                                    : "");
    }
}

static void report_ok(oai_state *s, cb_run_ctx *ctx, xfer *x) {
    const cb_host *h = s->host;
    int64_t prompt = x->usage_prompt >= 0 ? x->usage_prompt : x->ids_sent;
    int counted = s->endpoint != EP_EMBEDDINGS && x->usage_completion < 0;
    int64_t out = counted ? x->n_chunks : x->usage_completion;
    if (s->endpoint == EP_EMBEDDINGS) out = 0;
    if (prompt > 0) h->report_held(ctx, x->h, M_PROMPT_TOKENS, (double)prompt);
    h->report_held(ctx, x->h, M_OUTPUT_TOKENS, (double)out);
    h->report_held(ctx, x->h, M_TOKENS, (double)(prompt + out));
    if (counted) {
        h->report_held(ctx, x->h, M_TOKENS_COUNTED, 1);
        s->n_counted++;
    }
    if (!s->stream) return;
    h->report_held(ctx, x->h, M_CHUNKS, (double)x->n_chunks);
    if (x->n_chunks == 0) return;
    double ttft = (double)(x->first_ns - x->arrival_ns);
    double tpot = out >= 2 ? (double)(x->last_ns - x->first_ns) / (double)(out - 1) : 0;
    h->report_held(ctx, x->h, M_TTFT, ttft);
    if (out >= 2) h->report_held(ctx, x->h, M_TPOT, tpot);
    if (x->n_chunks >= 2) {
        h->report_held(ctx, x->h, M_ITL_MEAN, (double)x->itl_sum_ns / (double)(x->n_chunks - 1));
        h->report_held(ctx, x->h, M_ITL_MAX, (double)x->itl_max_ns);
        for (int i = 1; i < x->n_timed; i++)
            h->report_held(ctx, x->h, M_ITL, (double)(x->chunk_ns[i] - x->chunk_ns[i - 1]));
    }
    if (s->slo.on)
        h->report_held(ctx, x->h, M_SLO_MET, cb_llm_slo_met(&s->slo, ttft, tpot, out));
}

/* Completes every ended transfer. Returns how many, or a negative code when on_error: fail
 * failed the pipeline through complete (the count is then irrelevant). */
static int deliver(oai_state *s, cb_run_ctx *ctx) {
    pthread_mutex_lock(&s->mu);
    xfer *d = s->done;
    s->done = s->done_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    int n = 0;
    char fail_msg[sizeof d->msg + 64];
    while (d) {
        xfer *x = d;
        d = d->next;
        free(x->body);
        x->body = NULL;
        int rc = CB_OK;
        const char *msg = NULL;
        if (x->err == XE_CANCELLED) {
            rc = CB_ESTOPPED;
            msg = "cancelled";
        } else if (x->err != XE_NONE) {
            count_error(s, ctx, x);
            rc = s->on_error == OE_FAIL ? CB_EIO : CB_RUN_FAILED;
            snprintf(fail_msg, sizeof fail_msg, "request %lld: %s", (long long)x->index, x->msg);
            msg = fail_msg;
        } else {
            report_ok(s, ctx, x);
            s->n_ok++;
        }
        s->host->complete(ctx, x->h, rc, msg);
        x->h = NULL;
        s->n_held--;
        x->next = s->free_list;
        s->free_list = x;
        s->n_free++;
        n++;
    }
    return n;
}

/* Ends every transfer in flight (cancelled) and completes their queries with CB_ESTOPPED. */
static void cancel_all(oai_state *s, cb_run_ctx *ctx) {
    pthread_mutex_lock(&s->mu);
    s->cancel_req = 1;
    s->cancel_ack = 0;
    pthread_mutex_unlock(&s->mu);
    io_signal(s);
    pthread_mutex_lock(&s->mu);
    while (!s->cancel_ack) pthread_cond_wait(&s->done_cv, &s->mu);
    s->cancel_req = 0;
    pthread_mutex_unlock(&s->mu);
    /* The I/O thread took the inbox with the request, so every held transfer is on the done
     * list now: ended before the cancel (kept as it ended) or cancelled. */
    deliver(s, ctx);
}

static int oai_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    oai_state *s = state;
    const char *why = NULL;
    if (cb_llm_request_check(q->payload, &why) != 0)
        return cb_util_error(err, CB_EINVAL, "%s (llm.openai takes the LLM requests of "
                             "llm.prompts or llm.tokenize)", why);
    cb_llm_request *r = q->payload->data;
    const cb_host *h = s->host;
    if (!s->waker) {
        cb_waker *w = h->waker(ctx);
        pthread_mutex_lock(&s->mu);
        s->waker = w;
        pthread_mutex_unlock(&s->mu);
    }
    /* At max_concurrency: wait for a request to end (its query completes here). */
    while (s->n_free == 0) {
        if (deliver(s, ctx) > 0) break;
        if (h->cancelled(ctx)) return cb_util_error(err, CB_ESTOPPED, "cancelled");
        pthread_mutex_lock(&s->mu);
        if (!s->done) {
            int64_t until = mono_ns() + 20000000LL;
            struct timespec ts = {(time_t)(until / 1000000000LL), (long)(until % 1000000000LL)};
            pthread_cond_timedwait(&s->done_cv, &s->mu, &ts);
        }
        pthread_mutex_unlock(&s->mu);
    }
    xfer *x = s->free_list;
    x->index = r->index;
    int rc = build_body(s, r, x, err);
    if (rc) return rc;
    if (xfer_reset(s, x) != CB_OK) {
        free(x->body);
        x->body = NULL;
        return cb_util_error(err, CB_ENOMEM, "request %lld: out of memory", (long long)r->index);
    }
    s->free_list = x->next;
    s->n_free--;
    x->arrival_ns = h->arrival_ns(ctx);
    if (s->native) {
        memset(&x->hreq, 0, sizeof x->hreq);
        x->hreq.body = x->body;
        x->hreq.body_len = x->body_len;
        x->hreq.timeout_ns = (int64_t)(s->v[P_TIMEOUT].f * 1e9);
        x->hreq.connect_timeout_ns = (int64_t)(s->v[P_CONNECT_TIMEOUT].f * 1e9);
        x->hreq.user = x;
    } else {
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    }
    x->h = h->hold(ctx);
    if (!x->h) {
        free(x->body);
        x->body = NULL;
        x->next = s->free_list;
        s->free_list = x;
        s->n_free++;
        return cb_util_error(err, CB_EINVAL, "request %lld: the host refused to hold the query",
                             (long long)r->index);
    }
    s->n_held++;
    s->n_requests++;
    x->next = NULL;
    pthread_mutex_lock(&s->mu);
    int was_empty = s->inbox == NULL;
    if (s->inbox_tail) s->inbox_tail->next = x;
    else s->inbox = x;
    s->inbox_tail = x;
    pthread_mutex_unlock(&s->mu);
    if (was_empty) io_signal(s); /* otherwise the I/O thread has a signal to take them with */
    return CB_RUN_HELD;
}

static int oai_step(void *state, cb_run_ctx *ctx, cb_error *err) {
    (void)err;
    oai_state *s = state;
    if (s->host->cancelled(ctx)) {
        cancel_all(s, ctx);
        return CB_OK;
    }
    if (deliver(s, ctx) > 0) return CB_OK;
    /* Nothing ended: sleep until the I/O thread ends a transfer (wake), a query arrives, or a
     * second passes (a cancel is seen within the host's slice). */
    s->host->wait_step(ctx, s->host->now_ns() + 1000000000LL);
    deliver(s, ctx);
    return CB_OK;
}

static void oai_finish(void *state) {
    oai_state *s = state;
    if (!s->host) return;
    int64_t errs = 0;
    for (int i = XE_CONNECT; i <= XE_STREAM; i++) errs += s->n_err[i];
    oai_log(s, errs ? CB_LOG_WARN : CB_LOG_INFO,
            "llm.openai: %s: %lld requests, %lld ok, %lld failed (connect %lld, http %lld, "
            "timeout %lld, stream %lld); output tokens %s",
            s->url, (long long)s->n_requests, (long long)s->n_ok, (long long)errs,
            (long long)s->n_err[XE_CONNECT], (long long)s->n_err[XE_HTTP],
            (long long)s->n_err[XE_TIMEOUT], (long long)s->n_err[XE_STREAM],
            s->n_ok == 0           ? "none (no request succeeded)"
            : s->n_counted == 0    ? "from the server's usage"
            : s->n_counted == s->n_ok ? "counted as content chunks (the server sent no usage)"
                                      : "from usage where sent, else counted chunks");
}

static void oai_destroy(void *state) {
    oai_state *s = state;
    if (s->io_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_mutex_unlock(&s->mu);
        io_signal(s);
        pthread_join(s->io, NULL);
    }
    for (int i = 0; s->slots && i < s->max_concurrency; i++) {
        xfer *x = &s->slots[i];
        if (x->easy) {
            if (s->multi) curl_multi_remove_handle(s->multi, x->easy);
            curl_easy_cleanup(x->easy);
        }
        free(x->body);
        free(x->sse_buf);
        free(x->resp);
        free(x->chunk_ns);
    }
    free(s->slots);
    cb_h1_destroy(s->h1);
    if (s->multi) curl_multi_cleanup(s->multi);
    if (s->epfd > 0) close(s->epfd);
    if (s->evfd > 0) close(s->evfd);
    curl_slist_free_all(s->headers);
    if (s->sync_init) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->done_cv);
    }
    if (s->curl_global) curl_global_cleanup();
    memset(s->auth, 0, sizeof s->auth);
}

const cb_stage_ops cb_stage_llm_openai = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "llm.openai",
    .summary = "sends each LLM request to an OpenAI-compatible server (completions, chat, "
               "embeddings; streamed): TTFT, inter-token gaps, errors",
    .params = oai_params,
    .n_params = P_COUNT,
    .state_size = sizeof(oai_state),
    .create = oai_create,
    .prepare = oai_prepare,
    .run = oai_run,
    .finish = oai_finish,
    .destroy = oai_destroy,
    .metrics = oai_metrics,
    .n_metrics = M_COUNT,
    .check = oai_check,
    .step = oai_step,
};
