/* rag/wp_tab.h - the generated per-code-point table of BERT's normalizer and pre-tokenizer
 * (rag/wp_tab.c, made by rag/wp_tab_gen.py from Hugging Face tokenizers). Internal to rag/:
 * wordpiece.c reads it. Constant data: thread-safe. */
#ifndef CB_RAG_WP_TAB_H
#define CB_RAG_WP_TAB_H

#include <stddef.h>
#include <stdint.h>

#include "llm/unicode.h"

enum {
    CB_WP_C_KEEP = 0,    /* kept as is, part of a word */
    CB_WP_C_PUNCT = 1,   /* kept, a word of its own */
    CB_WP_C_DROP = 2,    /* removed (controls, format characters, combining marks, U+FFFD) */
    CB_WP_C_SPACE = 3,   /* whitespace: ends a word */
    CB_WP_C_MAP = 4,     /* replaced by cb__wp_map's code points */
    CB_WP_C_HANGUL = 5,  /* Hangul syllable: its NFD jamo L V [T] */
    CB_WP_C_CJK = 6,     /* CJK ideograph: a word of its own */
};
#define CB_WP_POOL_PUNCT 0x80000000u /* flag in cb__wp_pool: this output is punctuation */

/* Ranges of code points whose class is not CB_WP_C_KEEP (sorted, disjoint). */
extern const size_t cb__wp_nranges;
extern const cb__uni_range cb__wp_ranges[];
/* For CB_WP_C_MAP code points (sorted by cp): cb__wp_pool[off..off+len). */
extern const size_t cb__wp_nmap;
extern const cb__uni_decomp_ent cb__wp_map[];
extern const uint32_t cb__wp_pool[];

#endif
