/* llm/oai_chunk.h - what a client of an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp,
 * Ollama; issue 16) reads from one response body or one server-sent event's data: the text
 * piece, the finish reason, the usage counts and an error, from the shapes these servers send:
 *   /v1/completions               {"choices": [{"text": "...", "finish_reason": null|"..."}]}
 *   /v1/chat/completions, stream  {"choices": [{"delta": {"content": "..."}, "finish_reason": ...}]}
 *   /v1/chat/completions          {"choices": [{"message": {"content": "..."}, ...}]}
 *   usage (last chunk with stream_options.include_usage, or the whole response)
 *                                 {"choices": [], "usage": {"prompt_tokens": N, "completion_tokens": M}}
 *   an error                      {"error": {"message": "...", ...}} (or "error": "...")
 *   the end of a stream           [DONE]
 * Only choice 0 is read (a benchmark sends n = 1). A null or absent field is "absent", not an
 * error: a chunk may carry only a role, only usage, or nothing.
 *
 * Ownership: the strings point into *doc (a JSON document of jdom.h); the caller frees it with
 * cb__jdom_free when done with them (NULL for [DONE]). Nothing else is allocated. */
#ifndef CB_LLM_OAI_CHUNK_H
#define CB_LLM_OAI_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "llm/jdom.h"

typedef struct cb_oai_chunk {
    int done;                  /* the data was [DONE] */
    const char *text;          /* the choice's text, delta content or message content; NULL: none */
    size_t text_len;
    const char *finish_reason; /* NULL while the choice goes on */
    int64_t prompt_tokens;     /* usage; -1 where the chunk has none */
    int64_t completion_tokens;
    const char *error;         /* the server's error message; NULL: none */
} cb_oai_chunk;

/* Reads data[0..len) (name labels errors: "response of request 12"). CB_EINVAL with the byte
 * offset named when it is not JSON, or not an object; *doc NULL then. */
int cb_oai_chunk_parse(const char *data, size_t len, const char *name, cb_oai_chunk *out,
                       cb__jdom **doc, cb_error *err);

#endif
