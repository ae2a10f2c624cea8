/* llm/tokenizer.h - byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2) in C.
 *
 * Two loaders build the same object:
 *   - cb_tok_load_hf: a Hugging Face tokenizer.json with model BPE (merges in the "a b" string
 *     form or the [a, b] pair form), normalizer null or NFC, pre_tokenizer ByteLevel (use_regex =
 * true: GPT-2's split) or Sequence[Split(Regex = a known pattern, Isolated), ByteLevel(use_regex =
 *     false)], decoder ByteLevel or null, added_tokens (special or not). The post_processor is
 *     not applied: cb_tok_encode never adds a BOS token (the chat template writes it).
 *   - cb_tok_load_tiktoken: a tiktoken rank file ("base64-bytes rank" per line) with a named
 *     split pattern and a list of special tokens. Merging is tiktoken's: the adjacent pair whose
 *     concatenation has the lowest rank, repeatedly; ids are ranks.
 * Known split patterns (hand-written matchers, src/llm/pretok.c): GPT-2, cl100k = Llama 3, Qwen2,
 * o200k.
 * Anything else (an unknown pattern, a normalizer such as NFKC, add_prefix_space, lstrip/rstrip
 * on added tokens, byte_fallback) is refused at load with CB_EUNSUPPORTED naming the file and
 * the JSON path.
 *
 * Ownership and threads: a cb_tok is immutable after loading; any number of threads may encode
 * and decode with one at once. Buffers passed in are borrowed for the call. On error nothing is
 * allocated for the caller; outputs are caller buffers: when one is too small, the call returns
 * CB_EFULL and sets *n / *len to the size needed (the buffer then holds a prefix).
 *
 * Errors name the file and where: "tok.json:3:17: model.merges[12]: unknown token \"xyz\""
 * (cb_error_format), with err->file, line, col and key set.
 */
#ifndef CB_LLM_TOKENIZER_H
#define CB_LLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

/* Limits (input beyond them is an error, never a crash). */
#define CB_TOK_FILE_MAX_BYTES (64u << 20) /* tokenizer.json or rank file */
#define CB_TOK_VOCAB_MAX (1 << 20)        /* ids are in [0, CB_TOK_VOCAB_MAX) */
#define CB_TOK_TOKEN_MAX_BYTES 4096       /* bytes of one token (vocabulary or added) */

typedef struct cb_tok cb_tok;

/* A special token of a tiktoken tokenizer (HF files list theirs in added_tokens). */
typedef struct cb_tok_special {
    const char *text; /* UTF-8, NUL-terminated */
    int32_t id;
} cb_tok_special;

int cb_tok_load_hf(const char *tokenizer_json_path, cb_tok **out, cb_error *err);

/* pattern: "gpt2", "cl100k", "llama3" (= cl100k), "qwen2", "o200k", or NULL for no split (the whole
 * text, between special tokens, is one piece). sp: n_sp special tokens, copied. */
int cb_tok_load_tiktoken(const char *rank_file, const char *pattern, const cb_tok_special *sp,
                         size_t n_sp, cb_tok **out, cb_error *err);

void cb_tok_free(cb_tok *t); /* NULL is a no-op */

/* Encodes text[0..len) (valid UTF-8, else CB_EINVAL naming the byte offset) into ids[0..cap).
 * Added tokens are matched first, leftmost and longest first: non-special ones always, special
 * ones only when allow_special is non-zero (else their text is encoded as ordinary text, as
 * tiktoken's encode_ordinary does). With an NFC normalizer the text between added tokens is
 * normalized first. *n is the number of ids (also when CB_EFULL). */
int cb_tok_encode(const cb_tok *t, const char *text, size_t len, int allow_special, int32_t *ids,
                  size_t cap, size_t *n, cb_error *err);

/* Writes the bytes of ids[0..n) into out[0..cap) (not NUL-terminated; added tokens as their
 * text, special ones included), *len the byte count (also when CB_EFULL). An id outside the
 * vocabulary is CB_EINVAL. */
int cb_tok_decode(const cb_tok *t, const int32_t *ids, size_t n, char *out, size_t cap, size_t *len,
                  cb_error *err);

/* 1 + the largest id (vocabulary and added tokens). */
int32_t cb_tok_vocab_size(const cb_tok *t);

/* The id of the added token whose text is `text`, or -1. */
int32_t cb_tok_special_id(const cb_tok *t, const char *text);

/* Chat templates of the presets' formats (docs/internals/llm-tokenizer.md gives the strings):
 *   CB_TOK_CHAT_LLAMA3: "<|begin_of_text|>" then per message
 *       "<|start_header_id|>" ROLE "<|end_header_id|>\n\n" CONTENT "<|eot_id|>"
 *       (CONTENT with leading and trailing ASCII whitespace trimmed, as Llama 3's template does);
 *       the generation prompt is "<|start_header_id|>assistant<|end_header_id|>\n\n".
 *   CB_TOK_CHAT_CHATML (Qwen2/2.5/3): per message "<|im_start|>" ROLE "\n" CONTENT "<|im_end|>\n";
 *       the generation prompt is "<|im_start|>assistant\n". No default system message is added.
 * Writes the text into out[0..cap) (not NUL-terminated), *len its length (also when CB_EFULL). */
typedef enum { CB_TOK_CHAT_LLAMA3 = 1, CB_TOK_CHAT_CHATML = 2 } cb_tok_chat;
typedef struct cb_tok_msg {
    const char *role; /* "system", "user", "assistant", ... */
    const char *content;
} cb_tok_msg;
int cb_tok_chat_render(cb_tok_chat fmt, const cb_tok_msg *msgs, size_t n, int add_generation_prompt,
                       char *out, size_t cap, size_t *len, cb_error *err);

#endif
