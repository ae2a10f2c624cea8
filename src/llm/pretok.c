/* llm/pretok.c - the split patterns of GPT-2, cl100k/Llama 3, Qwen2 and o200k, matched by hand.
 *
 * Each pattern is an alternation tried in order at the current position; the first alternative
 * that matches gives the piece (leftmost-first, as Perl-style engines do). Every code point is a
 * letter (L*), a number (N*), whitespace (White_Space) or other, and each pattern has an
 * alternative for each, so every position yields a piece of at least one character. The
 * backtracking cases are resolved in closed form:
 *   \s+(?!\S)   a whitespace run of k characters: all k at the end of the text, else k-1 (k >= 2),
 *               else no match (then \s+ takes the single character);
 *   \s*[\r\n]+  a whitespace run up to and including its last \r or \n, else no match;
 *   o200k's [A]*[B]+ (A = Lu Lt Lm Lo M, B = Ll Lm Lo M, overlapping): the A run, then the B run
 *               that follows it; when none follows, the A run up to its last character that is
 *               also in B; the optional leading [^\r\n\p{L}\p{N}] is tried with, then without.
 * Every alternative scans forward only, so a piece costs time linear in its length and a text
 * linear in its length (a whitespace run is scanned at most three times).
 * Case-insensitive contractions (?i:'s|...) accept U+017F (long s), which Unicode case folding
 * maps to 's'. */
#include "llm/pretok.h"

#include <string.h>

#include "llm/unicode.h"

static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PAT_CL100K[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_O200K[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char *cb__pretok_pattern(cb__pretok_kind k) {
    switch (k) {
    case CB_PRETOK_GPT2:
        return PAT_GPT2;
    case CB_PRETOK_CL100K:
        return PAT_CL100K;
    case CB_PRETOK_QWEN2:
        return PAT_QWEN2;
    case CB_PRETOK_O200K:
        return PAT_O200K;
    default:
        return "";
    }
}

cb__pretok_kind cb__pretok_from_pattern(const char *pat, size_t len) {
    for (int k = CB_PRETOK_GPT2; k <= CB_PRETOK_O200K; k++) {
        const char *p = cb__pretok_pattern((cb__pretok_kind)k);
        if (strlen(p) == len && memcmp(p, pat, len) == 0)
            return (cb__pretok_kind)k;
    }
    return CB_PRETOK_NONE;
}

cb__pretok_kind cb__pretok_from_name(const char *name) {
    if (!name)
        return CB_PRETOK_NONE;
    if (strcmp(name, "gpt2") == 0)
        return CB_PRETOK_GPT2;
    if (strcmp(name, "cl100k") == 0 || strcmp(name, "llama3") == 0)
        return CB_PRETOK_CL100K;
    if (strcmp(name, "qwen2") == 0)
        return CB_PRETOK_QWEN2;
    if (strcmp(name, "o200k") == 0)
        return CB_PRETOK_O200K;
    return CB_PRETOK_NONE;
}

enum { C_OTHER = CB_UNI_OTHER, C_L = CB_UNI_LETTER, C_N = CB_UNI_NUMBER, C_SPACE = 8, C_END = 9 };

/* Class and length of the character at s[i] (C_END at the end). Marks count as other. */
static int cls_at(const unsigned char *s, size_t n, size_t i, uint32_t *cp, size_t *len) {
    if (i >= n) {
        *cp = 0;
        *len = 0;
        return C_END;
    }
    if (s[i] < 0x80) {
        unsigned c = s[i];
        *cp = c;
        *len = 1;
        if (c == ' ' || (c >= 0x09 && c <= 0x0d))
            return C_SPACE;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
            return C_L;
        return c >= '0' && c <= '9' ? C_N : C_OTHER;
    }
    *len = cb__uni_decode(s + i, n - i, cp);
    if (*len == 0) { /* callers validate UTF-8 first; treat a stray byte as other */
        *len = 1;
        *cp = 0xfffd;
        return C_OTHER;
    }
    if (cb__uni_space(*cp))
        return C_SPACE;
    int c = cb__uni_class(*cp);
    return c == CB_UNI_MARK ? C_OTHER : c;
}

/* End of the run of characters of class c starting at i, at most max characters. */
static size_t run(const unsigned char *s, size_t n, size_t i, int c, size_t max) {
    uint32_t cp;
    size_t len;
    for (size_t k = 0; k < max && cls_at(s, n, i, &cp, &len) == c; k++)
        i += len;
    return i;
}

static int lower_eq(uint32_t cp, char want, int icase) {
    if (cp == (uint32_t)want)
        return 1;
    if (!icase)
        return 0;
    if (cp < 128)
        return (cp | 0x20) == (uint32_t)want && cp >= 'A';
    return want == 's' && cp == 0x17f;
}

/* 's 't 're 've 'm 'll 'd at s[0] == '\''; returns the length or 0. */
static size_t contraction(const unsigned char *s, size_t n, int icase) {
    static const char *const suffix[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (size_t k = 0; k < sizeof suffix / sizeof *suffix; k++) {
        size_t i = 1;
        const char *w = suffix[k];
        for (; *w; w++) {
            uint32_t cp;
            size_t len;
            cls_at(s, n, i, &cp, &len);
            if (!len || !lower_eq(cp, *w, icase))
                break;
            i += len;
        }
        if (!*w)
            return i;
    }
    return 0;
}

/* The two whitespace alternatives shared by all patterns: \s+(?!\S)|\s+ at a space. */
static size_t space_tail(const unsigned char *s, size_t n, size_t i0) {
    uint32_t cp;
    size_t len, i = i0, last = i0, k = 0;
    while (cls_at(s, n, i, &cp, &len) == C_SPACE) {
        last = i;
        i += len;
        k++;
    }
    if (i >= n || k < 2)
        return i - i0; /* to the end, or \s+ of one character */
    return last - i0;  /* k-1 characters: the last one goes with what follows */
}

/* The first character's class, code point and length; the length of a contraction there, or 0. */
static size_t first(const unsigned char *s, size_t n, int icase, int *c, uint32_t *cp,
                    size_t *len) {
    *c = cls_at(s, n, 0, cp, len);
    return *cp == '\'' ? contraction(s, n, icase) : 0;
}

static size_t next_gpt2(const unsigned char *s, size_t n) {
    uint32_t cp, cp1;
    size_t len, len1;
    int c;
    size_t k = first(s, n, 0, &c, &cp, &len);
    if (k)
        return k;
    size_t start = 0;
    if (cp == ' ') {
        int c1 = cls_at(s, n, 1, &cp1, &len1);
        if (c1 == C_L || c1 == C_N || c1 == C_OTHER)
            c = c1, start = 1;
    }
    if (c == C_L || c == C_N || c == C_OTHER)
        return run(s, n, start, c, (size_t)-1);
    return space_tail(s, n, 0);
}

/* \s*[\r\n]+ (up to the last \r or \n of the whitespace run), then \s+(?!\S) and \s+. */
static size_t newline_tail(const unsigned char *s, size_t n) {
    uint32_t cp;
    size_t len, i = 0, end = 0;
    while (cls_at(s, n, i, &cp, &len) == C_SPACE) {
        i += len;
        if (cp == '\r' || cp == '\n')
            end = i;
    }
    return end ? end : space_tail(s, n, 0);
}

static size_t next_llama(const unsigned char *s, size_t n, size_t max_digits) {
    uint32_t cp, cp1;
    size_t len, len1;
    int c;
    size_t k = first(s, n, 1, &c, &cp, &len);
    if (k)
        return k;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c == C_L)
        return run(s, n, 0, C_L, (size_t)-1);
    int c1 = cls_at(s, n, len, &cp1, &len1);
    if (c != C_N && cp != '\r' && cp != '\n' && c1 == C_L)
        return run(s, n, len, C_L, (size_t)-1);
    /* \p{N}{1,3} */
    if (c == C_N)
        return run(s, n, 0, C_N, max_digits);
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    size_t start = cp == ' ' && c1 == C_OTHER ? len : c == C_OTHER ? 0 : (size_t)-1;
    if (start != (size_t)-1) {
        size_t i = run(s, n, start, C_OTHER, (size_t)-1);
        while (i < n && (s[i] == '\r' || s[i] == '\n'))
            i++;
        return i;
    }
    return newline_tail(s, n);
}

/* o200k: General Categories at s[i] (CB_UNI_GC_*, 0 other), G_SPACE, G_END. */
enum { G_SPACE = 8, G_END = 9 };

static int gc_at(const unsigned char *s, size_t n, size_t i, uint32_t *cp, size_t *len) {
    int c = cls_at(s, n, i, cp, len);
    if (c == C_SPACE || c == C_END)
        return c == C_SPACE ? G_SPACE : G_END;
    return c == C_OTHER && *cp < 0x80 ? 0 : cb__uni_gc(*cp);
}

#define IN_A(g) ((g) == CB_UNI_GC_LU || (g) == CB_UNI_GC_LT || in_ab(g)) /* Lu Lt Lm Lo M */
#define IN_B(g) ((g) == CB_UNI_GC_LL || in_ab(g))                        /* Ll Lm Lo M */
static int in_ab(int g) { return g == CB_UNI_GC_LM || g == CB_UNI_GC_LO || g == CB_UNI_GC_M; }
static int is_l(int g) { return g >= CB_UNI_GC_LU && g <= CB_UNI_GC_LO; }

/* End of the run of characters at i whose class satisfies pred. */
static size_t gc_run(const unsigned char *s, size_t n, size_t i, int (*pred)(int)) {
    uint32_t cp;
    size_t len;
    while (pred(gc_at(s, n, i, &cp, &len)))
        i += len;
    return i;
}

static int pred_a(int g) { return IN_A(g); }
static int pred_b(int g) { return IN_B(g); }
static int pred_other(int g) { return g != G_SPACE && g != G_END && !is_l(g) && g != CB_UNI_GC_N; }

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)? after a word ending at end. */
static size_t word_tail(const unsigned char *s, size_t n, size_t end) {
    return end < n && s[end] == '\'' ? end + contraction(s + end, n - end, 1) : end;
}

/* [A]*[B]+ at i: the longest A-run whose continuation starts a B-run, backtracking into the
 * A-run to its last character that is also in B (Lm, Lo, M). 0 when nothing matches. */
static size_t word_lower(const unsigned char *s, size_t n, size_t i) {
    uint32_t cp;
    size_t len, j = i, last_b = 0;
    int g;
    while (g = gc_at(s, n, j, &cp, &len), IN_A(g)) {
        j += len;
        if (IN_B(g))
            last_b = j;
    }
    if (IN_B(g))
        return word_tail(s, n, gc_run(s, n, j, pred_b));
    return last_b ? word_tail(s, n, last_b) : 0;
}

/* [A]+[B]* at i; 0 when nothing matches. */
static size_t word_upper(const unsigned char *s, size_t n, size_t i) {
    size_t j = gc_run(s, n, i, pred_a);
    return j == i ? 0 : word_tail(s, n, gc_run(s, n, j, pred_b));
}

static size_t next_o200k(const unsigned char *s, size_t n) {
    uint32_t cp, cp1;
    size_t len, len1, r;
    int g = gc_at(s, n, 0, &cp, &len);
    int g1 = gc_at(s, n, len, &cp1, &len1);
    /* [^\r\n\p{L}\p{N}]? before each word alternative: with it first, then without */
    int pre = g != G_END && cp != '\r' && cp != '\n' && !is_l(g) && g != CB_UNI_GC_N;
    if ((pre && (r = word_lower(s, n, len))) || (r = word_lower(s, n, 0)))
        return r;
    if ((pre && (r = word_upper(s, n, len))) || (r = word_upper(s, n, 0)))
        return r;
    if (g == CB_UNI_GC_N) { /* \p{N}{1,3} */
        size_t i = len;
        for (int k = 1; k < 3 && gc_at(s, n, i, &cp1, &len1) == CB_UNI_GC_N; k++)
            i += len1;
        return i;
    }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n/]*' */
    size_t start = cp == ' ' && pred_other(g1) ? len : pred_other(g) ? 0 : (size_t)-1;
    if (start != (size_t)-1) {
        size_t i = gc_run(s, n, start, pred_other);
        while (i < n && (s[i] == '\r' || s[i] == '\n' || s[i] == '/'))
            i++;
        return i;
    }
    return newline_tail(s, n);
}

size_t cb__pretok_next(cb__pretok_kind k, const unsigned char *s, size_t n) {
    switch (k) {
    case CB_PRETOK_GPT2:
        return next_gpt2(s, n);
    case CB_PRETOK_CL100K:
        return next_llama(s, n, 3);
    case CB_PRETOK_QWEN2:
        return next_llama(s, n, 1);
    case CB_PRETOK_O200K:
        return next_o200k(s, n);
    default:
        return n;
    }
}
