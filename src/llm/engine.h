/* llm/engine.h - a continuous-batching generation engine over cb_lm_model and cb_lm_kv.
 *
 * The engine has no threads of its own: its caller adds requests and calls cb_engine_step, one
 * step at a time (llm.generate does it from its stage's run() and step()). Requests join and
 * leave between steps.
 *
 * One step (vLLM's scheduler with chunked prefill, first come first served):
 *   1. admission: waiting requests, in arrival order, become running while fewer than max_batch
 *      run and the KV pool has every block the request can ever need (its prompt plus
 *      max_new_tokens, reserved at admission, so a running request never waits for memory and
 *      nothing deadlocks or is preempted). The first request that does not fit stops admission
 *      (no overtaking: a long request is not starved by short ones).
 *   2. decode: every running request past its prompt feeds its last token (one token each);
 *   3. chunked prefill: prompt chunks of the running requests still in their prompt, in admission
 *      order, fill the rest of the step's token budget max_tokens_per_step;
 *   4. one cb_lm_forward over all of it; each request whose prompt completed or which decoded
 *      samples one token (llm/sample.h, its own RNG); a request finishes at an EOS id (unless
 *      ignore_eos) or at max_new_tokens, and its blocks return to the pool.
 *
 * KV waiting: while admission is stopped by the KV pool (not by max_batch), the time between
 * admission attempts is added to the kv_wait_ns of every request still waiting. A request that
 * could never run is refused by cb_engine_add: prompt + max_new_tokens > the model's
 * max_positions, or more blocks than the whole pool.
 *
 * Results and events: after a step, cb_engine_n_finished / cb_engine_finished give the requests
 * that finished in it (valid until the next step, cancel or destroy), each a cb_engine_result with
 * its tokens and timings; cb_engine_last_step gives the step's figures. The optional on_token
 * callback (opts) sees every token as it is produced with its time: per-token timestamps at no
 * cost to a caller that does not want them (the engine keeps only sums, maxima and the first
 * and last times per request).
 *
 * Timing: per request: arrival (the caller's, e.g. the query's scheduled arrival), admission,
 * the time of each token (first and last kept; inter-token gaps as sum and max), kv wait. Token
 * times are the end of the step that produced them (cb_engine_opts.now_ns, default
 * CLOCK_MONOTONIC).
 *
 * Ownership and threads: the engine borrows the model and the KV cache (they must outlive it and
 * not be used by anyone else meanwhile); it copies each request's prompt. Not thread-safe: one
 * caller at a time. Memory is bounded: max_waiting + max_batch request slots (each holding its
 * prompt and output ids), max_batch logits vectors, one sampler.
 */
#ifndef CB_LLM_ENGINE_H
#define CB_LLM_ENGINE_H

#include <stdint.h>

#include "colobench/error.h"
#include "llm/lm_model.h"
#include "llm/sample.h"

#define CB_ENGINE_MAX_BATCH 4096      /* running sequences (CB_LM_STEP_SEQS_MAX) */
#define CB_ENGINE_MAX_WAITING 1000000 /* waiting requests */

typedef struct cb_engine cb_engine;

typedef enum cb_engine_finish {
    CB_ENGINE_FINISH_EOS = 0,    /* produced an EOS id (it is the last output id) */
    CB_ENGINE_FINISH_LENGTH = 1, /* produced max_new_tokens */
    CB_ENGINE_FINISH_CANCELLED = 2 /* cb_engine_cancel_all, cb_engine_cancel */
} cb_engine_finish;

/* The callback on_token: request `user` produced `token` (its n-th output, from 0) at t_ns. */
typedef void (*cb_engine_token_fn)(void *arg, void *user, int32_t n, int32_t token, int64_t t_ns);

typedef struct cb_engine_opts {
    int max_batch;           /* running sequences, in [1, CB_ENGINE_MAX_BATCH] */
    int max_tokens_per_step; /* tokens of one forward, in [max_batch, the model's
                                max_step_tokens] */
    int max_waiting;         /* requests waiting for admission, in [1, CB_ENGINE_MAX_WAITING] */
    uint64_t seed;           /* the stage's seed, mixed into every request's RNG */
    int64_t (*now_ns)(void); /* the clock; NULL = CLOCK_MONOTONIC */
    cb_engine_token_fn on_token; /* optional */
    void *on_token_arg;
} cb_engine_opts;

#define CB_ENGINE_OPTS_DEFAULT {32, 512, 1024, 0, NULL, NULL, NULL}

/* A request to add (copied). */
typedef struct cb_engine_request {
    const int32_t *prompt;  /* n_prompt ids in [0, vocab) */
    int32_t n_prompt;       /* >= 1 */
    int32_t max_new_tokens; /* >= 1 */
    int ignore_eos;         /* produce exactly max_new_tokens */
    cb_sample_params sampling;
    uint64_t seed;          /* the request's sampling seed */
    int64_t arrival_ns;     /* the request's arrival (TTFT is measured from it) */
    int64_t index;          /* names the request in errors */
    void *user;             /* returned with the result */
} cb_engine_request;

/* A finished request. */
typedef struct cb_engine_result {
    void *user;
    int64_t index;
    const int32_t *prompt;
    int32_t n_prompt;
    const int32_t *output; /* n_output generated ids */
    int32_t n_output;
    cb_engine_finish finish;
    int64_t arrival_ns, admit_ns, first_token_ns, last_token_ns; /* token times 0 when none */
    int64_t kv_wait_ns;                 /* time waiting while the KV pool stopped admission */
    int64_t itl_sum_ns, itl_max_ns;     /* inter-token gaps: sum (mean = sum / (n_output - 1))
                                           and largest; 0 with fewer than 2 tokens */
    int32_t running_at_finish;          /* running sequences in the step it finished in */
    int32_t kv_blocks_used_at_finish;   /* blocks in use in that step (before it released) */
} cb_engine_result;

/* Figures of one step. */
typedef struct cb_engine_step_stats {
    int32_t running;         /* sequences in the forward */
    int32_t waiting;         /* requests waiting after admission */
    int32_t prefill_tokens;  /* prompt tokens in the forward */
    int32_t decode_tokens;   /* decode tokens in the forward */
    int32_t kv_blocks_used;  /* after admission */
    int32_t kv_blocks;       /* the pool */
    int32_t finished;
    int kv_blocked;          /* admission was stopped by the KV pool */
    int64_t step_ns;         /* the whole step */
    cb_lm_forward_stats forward; /* cb_lm_forward_last_stats of its forward (zero if none) */
} cb_engine_step_stats;

/* Sums over every step since create. */
typedef struct cb_engine_totals {
    int64_t steps, forward_steps;
    int64_t prefill_tokens, decode_tokens;
    int64_t step_ns, forward_ns, matmul_ns, attention_ns;
} cb_engine_totals;

/* Checks opts against the model and the cache, allocates the slots. CB_EINVAL naming the bad
 * field, CB_ENOMEM. */
int cb_engine_create(cb_lm_model *model, cb_lm_kv *kv, const cb_engine_opts *opts,
                     cb_engine **out, cb_error *err);
void cb_engine_destroy(cb_engine *e); /* NULL is a no-op */

/* Adds a request to the waiting list. CB_EINVAL ("request 7: ..." naming the numbers) when it
 * could never run or its parameters are bad; CB_EFULL when max_waiting requests wait already
 * (step first); CB_ENOMEM. On error nothing is kept. */
int cb_engine_add(cb_engine *e, const cb_engine_request *r, cb_error *err);

/* Runs one step (above). Finished requests of the previous step are released first. Returns 0
 * (also when there was nothing to do) or the forward's error (then the engine should be
 * cancelled and destroyed). */
int cb_engine_step(cb_engine *e, cb_error *err);

/* Ends every waiting and running request: they become the finished list (reason CANCELLED),
 * valid until the next step, cancel or destroy. */
void cb_engine_cancel_all(cb_engine *e);

/* Ends the one waiting or running request whose `user` is user (the first found; a request in
 * the finished list is not touched): it joins the finished list (reason CANCELLED) next to what
 * is already there, valid until the next step, cancel or destroy, and its KV blocks return to
 * the pool now. Returns 1 when a request was cancelled, 0 when none has that user. For a server
 * whose client went away (serve/serve.c). */
int cb_engine_cancel(cb_engine *e, void *user);

int cb_engine_n_finished(const cb_engine *e);
const cb_engine_result *cb_engine_finished(const cb_engine *e, int i);

int cb_engine_n_waiting(const cb_engine *e);
int cb_engine_n_running(const cb_engine *e);
/* waiting + running: requests that a step may still work on. */
int cb_engine_n_active(const cb_engine *e);
const cb_engine_step_stats *cb_engine_last_step(const cb_engine *e);
const cb_engine_totals *cb_engine_get_totals(const cb_engine *e);

#endif
