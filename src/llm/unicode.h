/* llm/unicode.h - the few Unicode properties the tokenizers' pre-tokenizers need: General
 * Category classes (letter, number, mark) from a generated table (unicode_tab.c, see
 * unicode_gen.py for the Unicode version) and White_Space, plus a strict UTF-8 decoder.
 * Pure functions over constant tables: thread-safe. */
#ifndef CB_LLM_UNICODE_H
#define CB_LLM_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum { CB_UNI_OTHER = 0, CB_UNI_LETTER = 1, CB_UNI_NUMBER = 2, CB_UNI_MARK = 3 };

/* General Categories as the table stores them (cb__uni_gc). */
enum {
    CB_UNI_GC_LU = 1,
    CB_UNI_GC_LL = 2,
    CB_UNI_GC_LT = 3,
    CB_UNI_GC_LM = 4,
    CB_UNI_GC_LO = 5,
    CB_UNI_GC_N = 6, /* Nd, Nl, No */
    CB_UNI_GC_M = 7, /* Mn, Mc, Me */
};

typedef struct cb__uni_range {
    uint32_t lo, hi;
    uint8_t cls;
} cb__uni_range;

typedef struct cb__uni_decomp_ent {
    uint32_t cp;
    uint16_t off, len;
} cb__uni_decomp_ent;

typedef struct cb__uni_comp_ent {
    uint32_t first, second, composite;
} cb__uni_comp_ent;

extern const char cb__uni_version[];
extern const size_t cb__uni_nccc, cb__uni_ndecomp, cb__uni_ncomp, cb__uni_nqc;
extern const cb__uni_range cb__uni_ccc[];
extern const cb__uni_decomp_ent cb__uni_decomp[];
extern const uint32_t cb__uni_decomp_pool[];
extern const cb__uni_comp_ent cb__uni_comp[];
extern const cb__uni_range cb__uni_qc[];
extern const size_t cb__uni_nranges;
extern const cb__uni_range cb__uni_ranges[];

/* The value of the range of r[0..n) (sorted, disjoint) that holds cp, or 0. */
int cb__uni_lookup(const cb__uni_range *r, size_t n, uint32_t cp);

/* CB_UNI_LETTER, CB_UNI_NUMBER, CB_UNI_MARK or CB_UNI_OTHER for a code point. */
int cb__uni_class(uint32_t cp);

/* CB_UNI_GC_* for a code point, 0 for every other category. */
int cb__uni_gc(uint32_t cp);

/* 1 when cp has the White_Space property (what \s matches in the reference regex engines). */
int cb__uni_space(uint32_t cp);

/* Decodes one UTF-8 sequence at s[0..n): returns its length (1-4) and the code point in *cp, or 0
 * for an invalid sequence (overlong, surrogate, above U+10FFFF, truncated). */
size_t cb__uni_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Writes cp (at most U+10FFFF) as UTF-8 into o (room for 4 bytes); returns the length. */
size_t cb__uni_encode(char *o, uint32_t cp);

#endif
