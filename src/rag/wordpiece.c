/* rag/wordpiece.c - BERT's WordPiece tokenizer (wordpiece.h), as Hugging Face tokenizers'
 * BertNormalizer + BertPreTokenizer + WordPiece + [CLS]/[SEP] template.
 *
 * Encoding walks the text once, code point by code point (invalid UTF-8 bytes are dropped like
 * control characters), into a per-call buffer of normalized code points, then splits words and
 * matches pieces greedily, longest first, against an open-addressing hash table of the
 * vocabulary (FNV-1a over the piece's UTF-8 bytes; "##" continuations are separate entries, as
 * in vocab.txt). Unicode data: rag/wp_unicode.h (punctuation, other, Mn, lowercase) and
 * llm/unicode.h (White_Space, canonical decompositions for NFD).
 *
 * Limits: a word of more than 100 code points is [UNK] (max_input_chars_per_word); a call
 * allocates (cb_malloc) its scratch of 4 code points per input byte, freed before it returns.
 */
#include "rag/wordpiece.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/rng.h"
#include "llm/unicode.h"
#include "rag/wp_unicode.h"

#define WP_MAX_WORD_CHARS 100

struct cb_wordpiece {
    char *arena;        /* tokens, NUL-terminated */
    uint32_t *offs;     /* token id -> offset in arena */
    uint32_t *lens;
    int32_t n;
    int32_t *table;     /* open addressing: token ids, -1 empty */
    uint32_t mask;
    int lower;
    int32_t unk, cls, sep;
};

static uint32_t fnv(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int32_t lookup(const cb_wordpiece *t, const char *s, size_t n) {
    for (uint32_t i = fnv(s, n) & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->table[i];
        if (id < 0) return -1;
        if (t->lens[id] == n && !memcmp(t->arena + t->offs[id], s, n)) return id;
    }
}

int32_t cb_wp_id(const cb_wordpiece *t, const char *token) {
    return lookup(t, token, strlen(token));
}
int32_t cb_wp_vocab_size(const cb_wordpiece *t) { return t->n; }

void cb_wp_free(cb_wordpiece *t) {
    if (!t) return;
    cb_free(t->arena);
    cb_free(t->offs);
    cb_free(t->lens);
    cb_free(t->table);
    cb_free(t);
}

/* Builds the table over tokens in arena (n of them, NUL-separated, in id order). A duplicate
 * keeps its first id (vocab.txt has none; Hugging Face would keep the last). */
static int build(cb_wordpiece *t, const char *file, cb_error *err) {
    uint32_t cap = 1;
    while (cap < (uint32_t)t->n * 2u) cap <<= 1;
    t->mask = cap - 1;
    t->table = cb_malloc(sizeof(int32_t) * cap);
    if (!t->table) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", file);
    memset(t->table, 0xff, sizeof(int32_t) * cap);
    for (int32_t id = 0; id < t->n; id++) {
        const char *s = t->arena + t->offs[id];
        uint32_t i = fnv(s, t->lens[id]) & t->mask;
        while (t->table[i] >= 0) {
            int32_t o = t->table[i];
            if (t->lens[o] == t->lens[id] && !memcmp(t->arena + t->offs[o], s, t->lens[id]))
                break;
            i = (i + 1) & t->mask;
        }
        if (t->table[i] < 0) t->table[i] = id;
    }
    t->unk = cb_wp_id(t, "[UNK]");
    t->cls = cb_wp_id(t, "[CLS]");
    t->sep = cb_wp_id(t, "[SEP]");
    const char *miss = t->unk < 0 ? "[UNK]" : t->cls < 0 ? "[CLS]" : t->sep < 0 ? "[SEP]"
                       : cb_wp_id(t, "[PAD]") < 0 ? "[PAD]" : NULL;
    if (miss)
        return cb_error_set(err, CB_ECONFIG, "%s: no %s token (not a BERT vocabulary)", file,
                            miss);
    return CB_OK;
}

int cb_wp_load(const char *vocab_path, int do_lower_case, cb_wordpiece **out, cb_error *err) {
    *out = NULL;
    FILE *f = fopen(vocab_path, "rb");
    if (!f) return cb_error_set(err, CB_ENOENT, "%s: %s", vocab_path, strerror(errno));
    cb_wordpiece *t = cb_calloc(1, sizeof *t);
    char *buf = cb_malloc(CB_WP_FILE_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CB_WP_FILE_MAX_BYTES + 1, f) : 0;
    fclose(f);
    int rc = CB_OK;
    if (!t || !buf) rc = cb_error_set(err, CB_ENOMEM, "%s: out of memory", vocab_path);
    else if (n > CB_WP_FILE_MAX_BYTES)
        rc = cb_error_set(err, CB_ECONFIG, "%s: over %u bytes", vocab_path, CB_WP_FILE_MAX_BYTES);
    else if (n == 0)
        rc = cb_error_set(err, CB_ECONFIG, "%s: empty", vocab_path);
    int32_t lines = 0;
    for (size_t i = 0; !rc && i < n; i++) lines += buf[i] == '\n';
    if (!rc && buf[n - 1] != '\n') lines++;
    if (!rc && lines > CB_WP_VOCAB_MAX)
        rc = cb_error_set(err, CB_ECONFIG, "%s: %d tokens, over %d", vocab_path, (int)lines,
                          CB_WP_VOCAB_MAX);
    if (!rc) {
        t->offs = cb_malloc(sizeof(uint32_t) * (size_t)lines);
        t->lens = cb_malloc(sizeof(uint32_t) * (size_t)lines);
        if (!t->offs || !t->lens) rc = cb_error_set(err, CB_ENOMEM, "%s: out of memory", vocab_path);
    }
    size_t a = 0;
    for (int32_t id = 0; !rc && a < n; id++) {
        size_t b = a;
        while (b < n && buf[b] != '\n') b++;
        size_t e = b;
        if (e > a && buf[e - 1] == '\r') e--;
        if (memchr(buf + a, 0, e - a))
            rc = cb_error_set(err, CB_ECONFIG, "%s:%d: a NUL byte", vocab_path, (int)id + 1);
        else if (e - a > CB_WP_TOKEN_MAX_BYTES)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%d: token of %zu bytes, over %d", vocab_path,
                              (int)id + 1, e - a, CB_WP_TOKEN_MAX_BYTES);
        else if (e == a)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%d: an empty token", vocab_path, (int)id + 1);
        if (rc) break;
        buf[e] = 0;
        t->offs[id] = (uint32_t)a;
        t->lens[id] = (uint32_t)(e - a);
        t->n = id + 1;
        a = b + 1;
    }
    if (!rc) {
        t->arena = buf;
        buf = NULL;
        t->lower = do_lower_case;
        rc = build(t, vocab_path, err);
    }
    cb_free(buf);
    if (rc) {
        cb_wp_free(t);
        return rc;
    }
    *out = t;
    return CB_OK;
}

int cb_wp_synthetic(int32_t n, uint64_t seed, cb_wordpiece **out, cb_error *err) {
    *out = NULL;
    if (n < 1000 || n > CB_WP_VOCAB_MAX)
        return cb_error_set(err, CB_EINVAL, "synthetic vocabulary of %d tokens: need [1000, %d]",
                            (int)n, CB_WP_VOCAB_MAX);
    cb_wordpiece *t = cb_calloc(1, sizeof *t);
    size_t cap = (size_t)n * 12 + 64;
    if (t) {
        t->arena = cb_malloc(cap);
        t->offs = cb_malloc(sizeof(uint32_t) * (size_t)n);
        t->lens = cb_malloc(sizeof(uint32_t) * (size_t)n);
    }
    if (!t || !t->arena || !t->offs || !t->lens) {
        cb_wp_free(t);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    cb_rng r;
    cb_rng_seed(&r, seed);
    size_t k = 0;
    int32_t next_ascii = 0;
    for (int32_t id = 0; id < n; id++) {
        char tok[16];
        int len;
        if (id == 0) len = snprintf(tok, sizeof tok, "[PAD]");
        else if (id == 100) len = snprintf(tok, sizeof tok, "[UNK]");
        else if (id == 101) len = snprintf(tok, sizeof tok, "[CLS]");
        else if (id == 102) len = snprintf(tok, sizeof tok, "[SEP]");
        else if (id == 103) len = snprintf(tok, sizeof tok, "[MASK]");
        else if (id < 100) len = snprintf(tok, sizeof tok, "[unused%d]", (int)id);
        else if (next_ascii < 2 * 94) { /* every printable ASCII character, whole and "##" */
            int c = 33 + next_ascii % 94;
            len = next_ascii < 94 ? snprintf(tok, sizeof tok, "%c", c)
                                  : snprintf(tok, sizeof tok, "##%c", c);
            next_ascii++;
        } else { /* made-up pieces: 2-6 lowercase letters, half of them continuations */
            int m = 2 + (int)(cb_rng_u64(&r) % 5), cont = (int)(cb_rng_u64(&r) & 1);
            len = 0;
            if (cont) tok[len++] = '#', tok[len++] = '#';
            for (int j = 0; j < m; j++) tok[len++] = (char)('a' + cb_rng_u64(&r) % 26);
            tok[len] = 0;
        }
        memcpy(t->arena + k, tok, (size_t)len + 1);
        t->offs[id] = (uint32_t)k;
        t->lens[id] = (uint32_t)len;
        k += (size_t)len + 1;
    }
    t->n = n;
    t->lower = 1;
    int rc = build(t, "synthetic vocabulary", err);
    if (rc) {
        cb_wp_free(t);
        return rc;
    }
    *out = t;
    return CB_OK;
}

/* ---- encoding ---------------------------------------------------------------------------------- */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static const uint32_t *lower_of(uint32_t cp) {
    size_t lo = 0, hi = cb__wp_lower_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < cb__wp_lower[mid][0]) hi = mid;
        else if (cp > cb__wp_lower[mid][0]) lo = mid + 1;
        else return &cb__wp_lower[mid][1];
    }
    return NULL;
}

static const cb__uni_decomp_ent *decomp_of(uint32_t cp) {
    size_t lo = 0, hi = cb__uni_ndecomp;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < cb__uni_decomp[mid].cp) hi = mid;
        else if (cp > cb__uni_decomp[mid].cp) lo = mid + 1;
        else return &cb__uni_decomp[mid];
    }
    return NULL;
}

static int is_chinese(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static int is_ws(uint32_t cp) { return cp == '\t' || cp == '\n' || cp == '\r' || cb__uni_space(cp); }

static int is_punct(uint32_t cp) {
    if (cp < 128)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    return in_ranges(cb__wp_punct, cb__wp_punct_n, cp);
}

/* Appends cp to the normalized text: accents stripped (NFD, Mn dropped) then lowercased. */
static size_t push_norm(const cb_wordpiece *t, uint32_t *o, size_t k, uint32_t cp) {
    uint32_t d[32];
    int nd = 0;
    if (t->lower) { /* strip_accents follows lowercase in BertNormalizer */
        if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllables: algorithmic NFD */
            uint32_t s = cp - 0xAC00;
            d[nd++] = 0x1100 + s / 588;
            d[nd++] = 0x1161 + (s % 588) / 28;
            if (s % 28) d[nd++] = 0x11A7 + s % 28;
        } else {
            const cb__uni_decomp_ent *e = cp >= 0xC0 ? decomp_of(cp) : NULL;
            if (e && e->len <= 32)
                for (int j = 0; j < e->len; j++) d[nd++] = cb__uni_decomp_pool[e->off + j];
            else
                d[nd++] = cp;
        }
    } else {
        d[nd++] = cp;
    }
    for (int j = 0; j < nd; j++) {
        uint32_t c = d[j];
        if (t->lower && c >= 0x300 && in_ranges(cb__wp_mn, cb__wp_mn_n, c)) continue;
        if (t->lower) {
            if (c < 128) {
                if (c >= 'A' && c <= 'Z') c += 32;
            } else {
                const uint32_t *l = lower_of(c);
                if (l) {
                    o[k++] = l[0];
                    if (l[1]) o[k++] = l[1];
                    if (l[2]) o[k++] = l[2];
                    continue;
                }
            }
        }
        o[k++] = c;
    }
    return k;
}

typedef struct wp_out {
    int32_t *ids;
    int n, max; /* max pieces (max_tokens - 2) */
} wp_out;

/* One word: cps[0..n) -> pieces. */
static void word(const cb_wordpiece *t, const uint32_t *cps, size_t n, char *u8, wp_out *o) {
    if (o->n >= o->max) return;
    if (n > WP_MAX_WORD_CHARS) {
        o->ids[o->n++] = t->unk;
        return;
    }
    /* UTF-8 of the word with each code point's byte offset. */
    size_t off[WP_MAX_WORD_CHARS + 1];
    size_t b = 2; /* room for "##" in front */
    for (size_t i = 0; i < n; i++) {
        off[i] = b;
        b += cb__uni_encode(u8 + b, cps[i] > 0x10FFFF ? 0xFFFD : cps[i]);
    }
    off[n] = b;
    int32_t pieces[WP_MAX_WORD_CHARS];
    int np = 0;
    size_t start = 0;
    while (start < n) {
        size_t end = n;
        int32_t id = -1;
        while (end > start) {
            const char *s = u8 + off[start];
            size_t len = off[end] - off[start];
            if (start > 0) {
                char *p = u8 + off[start] - 2;
                char save0 = p[0], save1 = p[1];
                p[0] = '#', p[1] = '#';
                id = lookup(t, p, len + 2);
                p[0] = save0, p[1] = save1;
            } else {
                id = lookup(t, s, len);
            }
            if (id >= 0) break;
            end--;
        }
        if (id < 0) {
            o->ids[o->n++] = t->unk;
            return;
        }
        pieces[np++] = id;
        start = end;
    }
    for (int i = 0; i < np && o->n < o->max; i++) o->ids[o->n++] = pieces[i];
}

int cb_wp_encode(const cb_wordpiece *t, const char *text, size_t len, int32_t *ids,
                 int max_tokens) {
    if (max_tokens < 2) return -1;
    uint32_t *cps = cb_malloc(sizeof(uint32_t) * (len * 4 + 4));
    char *u8 = cb_malloc(WP_MAX_WORD_CHARS * 4 + 8);
    if (!cps || !u8) {
        cb_free(cps);
        cb_free(u8);
        return -1;
    }
    /* Normalize: clean (drop NUL, U+FFFD, other; whitespace -> ' '), Chinese characters spaced,
     * accents stripped and lowercase. */
    size_t k = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t m = cb__uni_decode(s + i, len - i, &cp);
        if (!m) { /* invalid UTF-8: the byte is dropped */
            i++;
            continue;
        }
        i += m;
        if (cp == 0 || cp == 0xFFFD) continue;
        if (is_ws(cp)) {
            cps[k++] = ' ';
            continue;
        }
        if (in_ranges(cb__wp_other, cb__wp_other_n, cp)) continue;
        if (is_chinese(cp)) {
            cps[k++] = ' ';
            cps[k++] = cp;
            cps[k++] = ' ';
            continue;
        }
        k = push_norm(t, cps, k, cp);
    }
    /* Pre-tokenize (whitespace splits, punctuation isolated) and match words. */
    wp_out o = {ids + 1, 0, max_tokens - 2};
    size_t i = 0;
    while (i < k && o.n < o.max) {
        if (cps[i] == ' ' || is_ws(cps[i])) {
            i++;
            continue;
        }
        if (is_punct(cps[i])) {
            word(t, cps + i, 1, u8, &o);
            i++;
            continue;
        }
        size_t a = i;
        while (i < k && !(cps[i] == ' ' || is_ws(cps[i])) && !is_punct(cps[i])) i++;
        word(t, cps + a, i - a, u8, &o);
    }
    cb_free(cps);
    cb_free(u8);
    ids[0] = t->cls;
    ids[o.n + 1] = t->sep;
    return o.n + 2;
}
