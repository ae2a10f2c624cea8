/* llm/request.h - the LLM request payload that llm.* stages exchange: one request per query.
 *
 * One cb_buffer (host memory) holds one request:
 *
 *   [cb_llm_request header, 144 bytes][int32 prompt ids[n_prompt_tokens]]
 *   [int32 output ids[n_output_tokens]][pad to 8][prompt text: prompt_bytes of UTF-8][NUL]
 *
 * The offsets are a function of the counts (cb_llm_request_*_offset) and stored in the header
 * too, so a consumer reads them without recomputing and the check compares both. A prompt is
 * token ids (a stage with no tokenizer works on them), UTF-8 text (for a later llm.tokenize), or
 * both (tokenize keeps the text it encoded); at least one of the two is non-empty. When
 * prefix_tokens > 0 the first prefix_tokens prompt ids are a prefix every request of the dataset
 * shares (prefix caching). max_new_tokens is the output length the dataset asks for; with
 * CB_LLM_REQ_IGNORE_EOS the generating stage produces exactly that many tokens (a speed run),
 * otherwise at most that many. seed is the request's own sampling seed, a pure function of the
 * dataset seed and index, so sampled outputs are the same in every run that sees the request.
 *
 * Outputs: llm.prompts emits n_output_tokens = 0. A stage that adds to a request (llm.tokenize
 * adding prompt ids, llm.generate adding output ids) never grows a payload in place: it sizes a
 * new buffer with cb_llm_request_bytes, writes a header with cb_llm_request_init, copies the
 * fields (cb_llm_request_copy_fields) and the regions it keeps, fills in its own, and replaces
 * the query's payload (unref the old one). Version 1 has room for one output sequence; per-token
 * timestamps and the like belong in the stage's metrics, not here.
 *
 * Ownership: the query owns one reference to the payload; a request is immutable once emitted
 * (the buffer rule in colobench/buffer.h), so any number of threads may read it. The header is
 * plain data written by the producer; consumers validate it with cb_llm_request_check before
 * reading (a payload is input like any other). Everything here is bounds-checked arithmetic on
 * untrusted headers. Header-only, libc-only (usable from plugins).
 */
#ifndef CB_LLM_REQUEST_H
#define CB_LLM_REQUEST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "colobench/buffer.h"

#define CB_LLM_REQUEST_MAGIC 0x51524c43u /* "CLRQ" little-endian */
#define CB_LLM_REQUEST_VERSION 1u

/* Maxima of one request (a payload beyond them fails the check). */
#define CB_LLM_MAX_PROMPT_TOKENS (1u << 20) /* prompt ids */
#define CB_LLM_MAX_PROMPT_BYTES (1u << 24)  /* prompt text, without the NUL */
#define CB_LLM_MAX_NEW_TOKENS (1u << 20)    /* max_new_tokens and output ids */

/* flags */
#define CB_LLM_REQ_IGNORE_EOS 1u /* generate exactly max_new_tokens (do not stop at EOS) */
#define CB_LLM_REQ_FLAGS_KNOWN 1u

typedef struct cb_llm_request {
    uint32_t magic;           /* CB_LLM_REQUEST_MAGIC */
    uint32_t version;         /* CB_LLM_REQUEST_VERSION */
    uint32_t flags;           /* CB_LLM_REQ_* */
    uint32_t n_turns;         /* turns of the source conversation (ShareGPT); 1 otherwise */
    int64_t index;            /* request number in its dataset (file record, synthetic index) */
    uint64_t seed;            /* the request's sampling seed */
    uint32_t n_prompt_tokens; /* prompt ids at tokens_offset (0: text only) */
    uint32_t n_output_tokens; /* generated ids at output_offset (0 until generated) */
    uint32_t max_new_tokens;  /* output length asked for, in [1, CB_LLM_MAX_NEW_TOKENS] */
    uint32_t prefix_tokens;   /* leading prompt ids shared by every request (0: none) */
    uint32_t vocab_size;      /* every id is in [0, vocab_size); 0 when unknown */
    uint32_t reserved;        /* 0 */
    uint64_t prompt_bytes;    /* UTF-8 text at text_offset, NUL after it (0: ids only) */
    uint64_t tokens_offset;   /* byte offsets from the start of the buffer */
    uint64_t output_offset;
    uint64_t text_offset;
    int64_t split, epoch, batch; /* where the query came from (copied from it) */
    char split_name[32];      /* NUL-terminated */
} cb_llm_request;

_Static_assert(sizeof(cb_llm_request) == 144, "cb_llm_request layout is part of the payload");
_Static_assert(offsetof(cb_llm_request, prompt_bytes) == 56, "cb_llm_request layout");
_Static_assert(offsetof(cb_llm_request, split_name) == 112, "cb_llm_request layout");

static inline size_t cb_llm_request_tokens_offset(void) { return sizeof(cb_llm_request); }
static inline size_t cb_llm_request_output_offset(uint32_t n_prompt) {
    return sizeof(cb_llm_request) + sizeof(int32_t) * (size_t)n_prompt;
}
static inline size_t cb_llm_request_text_offset(uint32_t n_prompt, uint32_t n_output) {
    size_t off = cb_llm_request_output_offset(n_prompt) + sizeof(int32_t) * (size_t)n_output;
    return (off + 7u) & ~(size_t)7u;
}

/* Bytes of a buffer holding n_prompt ids, n_output ids and prompt_bytes of text (plus its NUL);
 * 0 when a count is over its maximum. */
static inline size_t cb_llm_request_bytes(uint32_t n_prompt, uint32_t n_output,
                                          uint64_t prompt_bytes) {
    if (n_prompt > CB_LLM_MAX_PROMPT_TOKENS || n_output > CB_LLM_MAX_NEW_TOKENS ||
        prompt_bytes > CB_LLM_MAX_PROMPT_BYTES)
        return 0;
    return cb_llm_request_text_offset(n_prompt, n_output) + (size_t)prompt_bytes + 1;
}

static inline int32_t *cb_llm_request_prompt_ids(cb_llm_request *r) {
    return (int32_t *)(void *)((unsigned char *)r + r->tokens_offset);
}
static inline int32_t *cb_llm_request_output_ids(cb_llm_request *r) {
    return (int32_t *)(void *)((unsigned char *)r + r->output_offset);
}
static inline char *cb_llm_request_text(cb_llm_request *r) {
    return (char *)r + r->text_offset;
}

/* Writes a valid header into buf (at least cb_llm_request_bytes(...) bytes): counts and offsets,
 * n_turns 1, max_new_tokens 1, everything else 0, ids 0, text all NUL. Returns the header. */
static inline cb_llm_request *cb_llm_request_init(cb_buffer *buf, uint32_t n_prompt,
                                                  uint32_t n_output, uint64_t prompt_bytes) {
    cb_llm_request *r = (cb_llm_request *)buf->data;
    memset(r, 0, cb_llm_request_bytes(n_prompt, n_output, prompt_bytes));
    r->magic = CB_LLM_REQUEST_MAGIC;
    r->version = CB_LLM_REQUEST_VERSION;
    r->n_turns = 1;
    r->max_new_tokens = 1;
    r->n_prompt_tokens = n_prompt;
    r->n_output_tokens = n_output;
    r->prompt_bytes = prompt_bytes;
    r->tokens_offset = cb_llm_request_tokens_offset();
    r->output_offset = cb_llm_request_output_offset(n_prompt);
    r->text_offset = cb_llm_request_text_offset(n_prompt, n_output);
    return r;
}

/* Copies what describes the request (flags, turns, index, seed, max_new_tokens, prefix_tokens,
 * vocab_size, split/epoch/batch, split name) from src to dst; not the counts or offsets. For
 * stages that make a new payload from a request. */
static inline void cb_llm_request_copy_fields(cb_llm_request *dst, const cb_llm_request *src) {
    dst->flags = src->flags;
    dst->n_turns = src->n_turns;
    dst->index = src->index;
    dst->seed = src->seed;
    dst->max_new_tokens = src->max_new_tokens;
    dst->prefix_tokens = src->prefix_tokens <= dst->n_prompt_tokens ? src->prefix_tokens : 0;
    dst->vocab_size = src->vocab_size;
    dst->split = src->split;
    dst->epoch = src->epoch;
    dst->batch = src->batch;
    memcpy(dst->split_name, src->split_name, sizeof dst->split_name);
}

/* Length of the valid UTF-8 prefix of s[0..n) (n when all of it is valid): no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
static inline size_t cb_llm_utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else return i;
        if (n - i <= k) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return i;
        i += k + 1;
    }
    return n;
}

/* Validates a payload as a request: 0 when it is one, else -1 with a reason in why. Checks
 * magic, version, flags, counts against the maxima, offsets against the counts and the buffer,
 * ids in [0, vocab_size) (or non-negative when vocab_size is 0), prefix_tokens, max_new_tokens,
 * a non-empty prompt, and the text: valid UTF-8 and NUL-terminated. O(prompt size). */
static inline int cb_llm_request_check(const cb_buffer *buf, const char **why) {
    const char *w = NULL;
    const cb_llm_request *r = buf && buf->data ? (const cb_llm_request *)buf->data : NULL;
    size_t need = 0;
    if (!r || buf->kind != CB_BUFFER_HOST) w = "no host payload";
    else if (buf->size_bytes < sizeof *r) w = "payload smaller than a request header";
    else if (r->magic != CB_LLM_REQUEST_MAGIC) w = "payload is not an LLM request";
    else if (r->version != CB_LLM_REQUEST_VERSION) w = "unsupported LLM request version";
    else if (r->flags & ~CB_LLM_REQ_FLAGS_KNOWN) w = "unknown LLM request flags";
    else if (!memchr(r->split_name, 0, sizeof r->split_name)) w = "split name not terminated";
    else if ((need = cb_llm_request_bytes(r->n_prompt_tokens, r->n_output_tokens,
                                          r->prompt_bytes)) == 0)
        w = "request counts over their maxima";
    else if (r->tokens_offset != cb_llm_request_tokens_offset() ||
             r->output_offset != cb_llm_request_output_offset(r->n_prompt_tokens) ||
             r->text_offset != cb_llm_request_text_offset(r->n_prompt_tokens, r->n_output_tokens))
        w = "request offsets do not match its counts";
    else if (need > buf->size_bytes) w = "request sizes do not fit its buffer";
    else if (r->n_prompt_tokens == 0 && r->prompt_bytes == 0) w = "empty prompt";
    else if (r->prefix_tokens > r->n_prompt_tokens) w = "prefix longer than the prompt ids";
    else if (r->max_new_tokens < 1 || r->max_new_tokens > CB_LLM_MAX_NEW_TOKENS)
        w = "max_new_tokens outside [1, CB_LLM_MAX_NEW_TOKENS]";
    else {
        cb_llm_request *m = (cb_llm_request *)(void *)(uintptr_t)r;
        const int32_t *ids = cb_llm_request_prompt_ids(m);
        uint32_t n = r->n_prompt_tokens + r->n_output_tokens; /* output ids follow the prompt's */
        for (uint32_t i = 0; i < n && !w; i++)
            if (ids[i] < 0 || (r->vocab_size > 0 && (uint32_t)ids[i] >= r->vocab_size))
                w = "token id outside [0, vocab_size)";
        const unsigned char *t = (const unsigned char *)cb_llm_request_text(m);
        if (!w && t[r->prompt_bytes] != 0) w = "prompt text not NUL-terminated";
        else if (!w && cb_llm_utf8_valid_prefix(t, (size_t)r->prompt_bytes) != r->prompt_bytes)
            w = "prompt text is not valid UTF-8";
    }
    if (why) *why = w;
    return w ? -1 : 0;
}

#endif
