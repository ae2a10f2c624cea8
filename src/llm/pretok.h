/* llm/pretok.h - hand-written matchers for the pre-tokenizer split patterns of byte-level BPE
 * tokenizers (no regex library). Each matcher returns the length in bytes of the leftmost match
 * at a position, exactly as the reference regex engines (Oniguruma in Hugging Face `tokenizers`,
 * fancy-regex in `tiktoken`) would for the pattern strings below. Pure functions: thread-safe. */
#ifndef CB_LLM_PRETOK_H
#define CB_LLM_PRETOK_H

#include <stddef.h>

typedef enum {
    CB_PRETOK_NONE = 0, /* the whole text is one piece */
    CB_PRETOK_GPT2,     /* GPT-2 (HF ByteLevel use_regex=true) */
    CB_PRETOK_CL100K,   /* cl100k_base and Llama 3: 1-3 digit groups */
    CB_PRETOK_QWEN2,    /* Qwen2/2.5/3: Llama 3's with single digits */
    CB_PRETOK_O200K,    /* o200k_base (GPT-4o, gpt-oss): case-aware words */
} cb__pretok_kind;

/* The pattern string of each kind, as tokenizer.json files and tiktoken spell it. */
const char *cb__pretok_pattern(cb__pretok_kind k);

/* The kind whose pattern string is exactly pat, or CB_PRETOK_NONE when unknown. */
cb__pretok_kind cb__pretok_from_pattern(const char *pat, size_t len);

/* The kind named "gpt2", "cl100k", "llama3", "qwen2" or "o200k"; CB_PRETOK_NONE when unknown. */
cb__pretok_kind cb__pretok_from_name(const char *name);

/* Length in bytes (> 0) of the piece starting at s[0], s[0..n) being valid UTF-8, n > 0. */
size_t cb__pretok_next(cb__pretok_kind k, const unsigned char *s, size_t n);

#endif
