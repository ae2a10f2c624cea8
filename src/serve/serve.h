/* serve/serve.h - colobench's LLM engine (llm/engine.h, what llm.generate runs) as an
 * OpenAI-compatible HTTP server: GET /health, GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions, streaming (server-sent events) or not. docs/serve.md is the user's
 * page (fields, byte fallback, limits).
 *
 * Lifecycle: cb_serve_create loads the model (config, weights packed for the CPU kernels as
 * llm.generate loads them, KV cache, engine) and the tokenizer, binds and listens; it starts no
 * thread. cb_serve_start starts the engine thread and the HTTP daemon; from then on requests are
 * served. cb_serve_stop stops accepting, ends every in-flight request (a stream gets a last
 * chunk with finish_reason "abort" and [DONE]; a waiting non-streaming request gets a 503) and
 * joins every thread. cb_serve_destroy frees everything (it stops first when needed). The
 * server is an object with no global state: two may run in one process.
 *
 * Threads (all created by cb_serve_start, named cb-serve-engine and libmicrohttpd's own):
 *   - one engine thread owns the cb_engine: it moves requests from a bounded inbox into the
 *     engine, runs steps while any request is active and otherwise sleeps on a condition
 *     variable (no spinning), publishes each step's tokens to their requests and cancels the
 *     requests whose clients went away;
 *   - HTTP: libmicrohttpd with MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD
 *     (one listening thread, one thread per connection, at most max_connections). Chosen over a
 *     thread pool with suspend/resume because a connection's thread may then simply block: the
 *     handler of a non-streaming request waits for its result, and a stream's content-reader
 *     callback waits for its next token, each on its request's condition variable; a token is
 *     written the moment the engine publishes it, with no polling of the engine. Each wait
 *     wakes every 50 ms to look at its socket, so a client that went away is noticed even
 *     before the next token (and is cancelled in the engine). The cost, a thread per open
 *     connection, is bounded by max_connections.
 *
 * Bounds (memory is flat over the server's life): request body max_body_bytes; connections
 * max_connections (idle keep-alive ones closed after CB_SERVE_IDLE_TIMEOUT_S); requests in flight
 * max_batch + max_waiting (beyond: 503); prompt + max_tokens at most the model's positions and
 * the KV pool (else 400); each request holds its output ids (max_tokens) and its text; a response
 * or stream event at most CB_SERVE_RESPONSE_MAX_BYTES.
 *
 * Errors: create returns CB_ECONFIG/CB_ENOENT/CB_EINVAL for a bad model, weights, tokenizer or
 * option (the message names it), CB_EIO when the address cannot be bound, CB_ENOMEM. On error
 * nothing is returned and nothing leaks. Library code prints nothing itself: it logs through
 * opts.log (core/log.h; NULL = stderr at WARN). */
#ifndef CB_SERVE_SERVE_H
#define CB_SERVE_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "core/log.h"

#define CB_SERVE_RESPONSE_MAX_BYTES ((size_t)64 << 20)
#define CB_SERVE_IDLE_TIMEOUT_S 300
#define CB_SERVE_MAX_CONNECTIONS 4096
#define CB_SERVE_MAX_WAITING 100000
#define CB_SERVE_BODY_MAX_BYTES ((size_t)1 << 30)
#define CB_SERVE_NAME_MAX 256 /* bytes of the served model name, with the NUL */

typedef struct cb_serve cb_serve;

typedef struct cb_serve_opts {
    const char *model;       /* a preset or a config.json / model directory */
    const char *weights;     /* safetensors file, index or directory; NULL: seeded random */
    const char *tokenizer;   /* tokenizer.json; NULL: the one next to config.json if any */
    int bf16;                /* 1: bfloat16 weights and KV cache; 0: float32 */
    int threads;             /* of the forward pass */
    int max_batch;           /* engine: running sequences */
    int max_tokens_per_step; /* engine: tokens of one step */
    int max_waiting;         /* engine: requests waiting for admission */
    int64_t kv_cache_bytes;
    int block_tokens;
    uint64_t seed;           /* random weights and the engine's sampling seed */
    const char *served_name; /* NULL: model */
    const char *host;        /* numeric address or name to bind */
    int port;                /* 0: the kernel picks */
    int max_connections;
    size_t max_body_bytes;
    const cb_logger *log;    /* NULL: stderr at WARN */
} cb_serve_opts;

#define CB_SERVE_OPTS_DEFAULT                                                                      \
    {"tiny", NULL, NULL, 1, 1, 32, 512, 256, (int64_t)1 << 30, 16, 0, NULL, "127.0.0.1", 8000,   \
     256, (size_t)8 << 20, NULL}

int cb_serve_create(const cb_serve_opts *opts, cb_serve **out, cb_error *err);
int cb_serve_start(cb_serve *s, cb_error *err);
/* Idempotent; safe to call from any thread but not from the server's own callbacks. */
void cb_serve_stop(cb_serve *s);
void cb_serve_destroy(cb_serve *s); /* NULL is a no-op */

/* The bound port (the real one when opts.port was 0), the host as given, the served name. */
int cb_serve_port(const cb_serve *s);
const char *cb_serve_host(const cb_serve *s);
const char *cb_serve_name(const cb_serve *s);
/* 1 when the weights are seeded random (the CLI warns), 1 when a tokenizer is loaded. */
int cb_serve_random_weights(const cb_serve *s);
int cb_serve_has_tokenizer(const cb_serve *s);

/* Counters since create (read them after stop for exact figures). */
typedef struct cb_serve_stats {
    int64_t requests;        /* generation requests accepted into the engine's inbox */
    int64_t finished;        /* ended by EOS or max_tokens */
    int64_t client_gone;     /* cancelled because the client disconnected */
    int64_t aborted;         /* ended by cb_serve_stop */
    int64_t refused;         /* 4xx/5xx answers */
    int64_t busy;            /* of them 503: at capacity */
    int64_t prompt_tokens, completion_tokens;
} cb_serve_stats;
void cb_serve_get_stats(cb_serve *s, cb_serve_stats *out);

#endif
