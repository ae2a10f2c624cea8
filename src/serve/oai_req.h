/* serve/oai_req.h - reading an OpenAI-compatible request body (POST /v1/completions and
 * /v1/chat/completions) into plain fields, with the HTTP status and message of every refusal.
 *
 * Fields read (everything else is ignored, as vLLM ignores unknown fields):
 *   both:  model (string or null), max_tokens (integer >= 1 or null; chat: max_completion_tokens
 *          wins when both are set), temperature (number >= 0, default 1 as OpenAI's), top_p
 *          ((0, 1], default 1), top_k (vLLM: integer >= -1; -1 and 0 are off), seed (integer),
 *          ignore_eos (vLLM: bool), stream (bool), stream_options.include_usage (bool), n (1),
 *          and, refused unless they hold their default: best_of (1), echo (false), logprobs
 *          (completions: null; chat: false), top_logprobs (null), stop (null, "" or []),
 *          suffix (null or ""), frequency_penalty and presence_penalty (0), logit_bias (null or
 *          {}), tools (null or []), response_format (null or {"type": "text"}).
 *   completions: prompt: a string, an array of one string, an array of token ids (integers in
 *          [0, vocab)), or an array of one such array.
 *   chat:  messages: a non-empty array of {role: string, content: string, null, or an array of
 *          {type: "text", text: string} parts (joined)}.
 * A refusal is status 400 (bad JSON, a wrong type or value): the message names the field and
 * `param` is it. Whether `model` is the served one is the server's check (404).
 *
 * Limits: the body is bounded by the caller; ids at most max_ids (the model's context);
 * messages at most CB_OAI_MESSAGES_MAX.
 * Ownership: cb__oai_req owns the parsed document, the ids and the message table; the strings
 * point into them and live until cb__oai_req_fini (safe on a zeroed struct). Thread-safety: none
 * needed (one request per connection thread). */
#ifndef CB_SERVE_OAI_REQ_H
#define CB_SERVE_OAI_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "llm/jdom.h"
#include "llm/sample.h"
#include "llm/tokenizer.h"

#define CB_OAI_MESSAGES_MAX 4096
#define CB_OAI_ERR_MSG_MAX 512

typedef enum cb__oai_kind { CB_OAI_COMPLETIONS = 0, CB_OAI_CHAT = 1 } cb__oai_kind;

typedef struct cb__oai_req {
    cb__oai_kind kind;
    const char *model; /* NULL when absent or null */
    int stream, include_usage, ignore_eos;
    int64_t max_tokens; /* -1: unset (completions: the caller's default 16) */
    cb_sample_params sampling;
    int has_seed;
    uint64_t seed;
    /* completions: ids (n_ids > 0) or text (text != NULL, may be empty) */
    int32_t *ids;
    int32_t n_ids;
    const char *text;
    size_t text_len;
    /* chat */
    cb_tok_msg *msgs;
    size_t n_msgs;
    /* owned */
    cb__jdom *doc;
    char *joined; /* content made of parts */
} cb__oai_req;

typedef struct cb__oai_err {
    int status;              /* HTTP status */
    const char *param;       /* the field, or NULL */
    const char *code;        /* OpenAI-style code, or NULL */
    char msg[CB_OAI_ERR_MSG_MAX];
} cb__oai_err;

/* Parses body[0..len) as a request of `kind`, ids in [0, vocab), at most max_ids of them.
 * 0, or -1 with *e filled (nothing owned is left in r). */
int cb__oai_req_parse(cb__oai_kind kind, const char *body, size_t len, int32_t vocab,
                      int64_t max_ids, cb__oai_req *r, cb__oai_err *e);
void cb__oai_req_fini(cb__oai_req *r);

/* Fills *e (status, param, code and a printf message); returns -1. */
int cb__oai_err_set(cb__oai_err *e, int status, const char *param, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
