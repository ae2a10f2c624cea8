/* rag/wordpiece.c - BERT's WordPiece tokenizer, matching Hugging Face tokenizers' BertNormalizer
 * (clean_text, handle_chinese_chars, strip_accents = lowercase, lowercase), BertPreTokenizer,
 * WordPiece ("##", max_input_chars_per_word 100, [UNK]) and the [CLS] $A [SEP] template.
 *
 * Design: one pass over the text. Each code point's class (rag/wp_tab.h: kept, punctuation,
 * dropped, whitespace, mapped, Hangul, CJK) comes from a table generated from tokenizers itself,
 * with an ASCII fast path; normalized code points are appended as UTF-8 to a fixed word buffer
 * (a word over 100 characters is [UNK] whatever it holds, so the buffer never needs more than 100
 * characters), and a finished word is split greedily, longest match first, by probing an
 * open-addressing hash table of the vocabulary (FNV-1a; a continuation is hashed as "##" then
 * the piece, so no copy is made). Encoding allocates nothing and stops once max_tokens is full.
 * The special tokens [PAD] [UNK] [CLS] [SEP] [MASK] written in the text are those tokens (as
 * tokenizers' added tokens are). Invalid UTF-8 bytes are dropped one at a time (Hugging Face
 * cannot receive them at all).
 * Without do_lower_case, the table still lowercases and strips accents: only lowercasing
 * tokenizers are supported now (cb_wp_load refuses do_lower_case = 0).
 *
 * Ownership and threads: cb_wordpiece owns its token bytes, offsets and table; immutable after
 * loading, so any number of threads may encode with it at once. Limits: CB_WP_FILE_MAX_BYTES,
 * CB_WP_VOCAB_MAX tokens, CB_WP_TOKEN_MAX_BYTES per token. */
#include "rag/wordpiece.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "rag/wp_tab.h"

#define WP_WORD_MAX_CHARS 100 /* tokenizers' max_input_chars_per_word */
#define WP_WORD_MAX_BYTES (WP_WORD_MAX_CHARS * 4)

struct cb_wordpiece {
    char *bytes;       /* all tokens, back to back */
    uint32_t *off;     /* token id -> offset in bytes; off[n] = end */
    int32_t *slots;    /* hash table of ids, -1 empty; cap a power of two */
    uint32_t cap;
    int32_t n;
    int32_t unk, cls, sep, pad;
    size_t max_len_bytes; /* longest token */
    int32_t special[5];   /* ids of [PAD] [UNK] [CLS] [SEP] [MASK] (-1 when absent) */
};

/* tokenizers' added tokens of BERT models: matched in the raw text before normalization */
static const char *const wp_special[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

static uint32_t fnv(uint32_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}
#define FNV0 2166136261u

/* The id of pre + s (pre is "" or "##"), or -1. */
static int32_t find2(const cb_wordpiece *t, const char *pre, size_t np, const char *s, size_t n) {
    uint32_t h = fnv(fnv(FNV0, pre, np), s, n);
    for (uint32_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        int32_t id = t->slots[i];
        if (id < 0)
            return -1;
        const char *tok = t->bytes + t->off[id];
        size_t tl = t->off[id + 1] - t->off[id];
        if (tl == np + n && memcmp(tok, pre, np) == 0 && memcmp(tok + np, s, n) == 0)
            return id;
    }
}

int32_t cb_wp_id(const cb_wordpiece *t, const char *token) {
    return t ? find2(t, "", 0, token, strlen(token)) : -1;
}
int32_t cb_wp_vocab_size(const cb_wordpiece *t) { return t ? t->n : 0; }

void cb_wp_free(cb_wordpiece *t) {
    if (!t)
        return;
    cb_free(t->bytes);
    cb_free(t->off);
    cb_free(t->slots);
    cb_free(t);
}

/* Builds the table over t->bytes/off[0..n]; a repeated token keeps its last id, as tokenizers'
 * WordPiece::read_file does (its vocabulary is a map filled line by line). */
static int build(cb_wordpiece *t, const char *where, cb_error *err) {
    uint32_t cap = 16;
    while (cap < (uint32_t)t->n * 2u)
        cap <<= 1;
    t->cap = cap;
    t->slots = cb_malloc(cap * sizeof *t->slots);
    if (!t->slots)
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory", where);
    memset(t->slots, 0xff, cap * sizeof *t->slots);
    for (int32_t id = 0; id < t->n; id++) {
        const char *tok = t->bytes + t->off[id];
        size_t tl = t->off[id + 1] - t->off[id];
        if (tl > t->max_len_bytes)
            t->max_len_bytes = tl;
        uint32_t i = fnv(FNV0, tok, tl) & (cap - 1);
        for (;; i = (i + 1) & (cap - 1)) {
            int32_t o = t->slots[i];
            if (o < 0 || (t->off[o + 1] - t->off[o] == tl &&
                          memcmp(t->bytes + t->off[o], tok, tl) == 0))
                break;
        }
        t->slots[i] = id;
    }
    for (int k = 0; k < 5; k++)
        t->special[k] = cb_wp_id(t, wp_special[k]);
    static const char *const names[4] = {"[UNK]", "[CLS]", "[SEP]", "[PAD]"};
    int32_t *dst[4] = {&t->unk, &t->cls, &t->sep, &t->pad};
    for (int k = 0; k < 4; k++) {
        *dst[k] = cb_wp_id(t, names[k]);
        if (*dst[k] < 0)
            return cb_error_set(err, CB_ECONFIG, "%s: the vocabulary has no %s token", where,
                                names[k]);
    }
    return 0;
}

int cb_wp_load(const char *vocab_path, int do_lower_case, cb_wordpiece **out, cb_error *err) {
    *out = NULL;
    if (!do_lower_case)
        return cb_error_set(err, CB_EUNSUPPORTED,
                            "%s: only lowercasing WordPiece tokenizers (do_lower_case) are "
                            "supported", vocab_path);
    FILE *f = fopen(vocab_path, "rb");
    if (!f)
        return cb_error_set(err, CB_EIO, "%s: cannot open: %s", vocab_path, strerror(errno));
    cb_wordpiece *t = cb_calloc(1, sizeof *t);
    char *text = cb_malloc(CB_WP_FILE_MAX_BYTES + 1);
    int rc = 0;
    if (!t || !text) {
        rc = cb_error_set(err, CB_ENOMEM, "%s: out of memory", vocab_path);
        goto done;
    }
    size_t len = fread(text, 1, CB_WP_FILE_MAX_BYTES + 1, f);
    if (ferror(f)) {
        rc = cb_error_set(err, CB_EIO, "%s: read error", vocab_path);
        goto done;
    }
    if (len > CB_WP_FILE_MAX_BYTES) {
        rc = cb_error_set(err, CB_ECONFIG, "%s: larger than %u bytes", vocab_path,
                          (unsigned)CB_WP_FILE_MAX_BYTES);
        goto done;
    }
    if (len == 0) {
        rc = cb_error_set(err, CB_ECONFIG, "%s: empty vocabulary", vocab_path);
        goto done;
    }
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    lines += text[len - 1] != '\n';
    if (lines > CB_WP_VOCAB_MAX) {
        rc = cb_error_set(err, CB_ECONFIG, "%s: more than %d tokens", vocab_path,
                          CB_WP_VOCAB_MAX);
        goto done;
    }
    t->off = cb_malloc((lines + 1) * sizeof *t->off);
    t->bytes = cb_malloc(len + 1);
    if (!t->off || !t->bytes) {
        rc = cb_error_set(err, CB_ENOMEM, "%s: out of memory", vocab_path);
        goto done;
    }
    size_t w = 0, pos = 0;
    for (size_t line = 0; line < lines; line++) {
        size_t e = pos;
        while (e < len && text[e] != '\n')
            e++;
        size_t b = e; /* tokenizers trims trailing whitespace (trim_end; ASCII here) */
        while (b > pos && (text[b - 1] == ' ' || (text[b - 1] >= '\t' && text[b - 1] <= '\r')))
            b--;
        if (memchr(text + pos, '\0', e - pos)) {
            rc = cb_error_set(err, CB_ECONFIG, "%s:%zu: NUL byte in a token", vocab_path,
                              line + 1);
            goto done;
        }
        if (b - pos > CB_WP_TOKEN_MAX_BYTES) {
            rc = cb_error_set(err, CB_ECONFIG, "%s:%zu: token longer than %d bytes", vocab_path,
                              line + 1, CB_WP_TOKEN_MAX_BYTES);
            goto done;
        }
        t->off[line] = (uint32_t)w;
        memcpy(t->bytes + w, text + pos, b - pos);
        w += b - pos;
        pos = e + 1;
    }
    t->n = (int32_t)lines;
    t->off[lines] = (uint32_t)w;
    rc = build(t, vocab_path, err);
done:
    fclose(f);
    cb_free(text);
    if (rc) {
        cb_wp_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Made-up vocabulary: [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
 * (from 0 to 4 when n < 104), the printable ASCII characters that survive lowercasing, "##" and
 * each lowercase letter or digit, then pieces of 2 or more letters: piece i is i's bijective
 * base-26 numeral (so no two are equal) with letters rotated by the seed, and "##" before it when
 * the seeded generator says so. Every token is at most 15 bytes. */
int cb_wp_synthetic(int32_t n, uint64_t seed, cb_wordpiece **out, cb_error *err) {
    *out = NULL;
    if (n < 4 || n > CB_WP_VOCAB_MAX)
        return cb_error_set(err, CB_EINVAL, "synthetic vocabulary: %d tokens (4 to %d)", n,
                            CB_WP_VOCAB_MAX);
    cb_wordpiece *t = cb_calloc(1, sizeof *t);
    if (!t || !(t->bytes = cb_malloc((size_t)n * 16)) ||
        !(t->off = cb_malloc(((size_t)n + 1) * sizeof *t->off))) {
        cb_wp_free(t);
        return cb_error_set(err, CB_ENOMEM, "synthetic vocabulary: out of memory");
    }
    size_t w = 0;
    int32_t id = 0;
    char buf[16];
    int k;
#define ADD(str, len_)                                                                         \
    do {                                                                                       \
        if (id < n) {                                                                          \
            t->off[id++] = (uint32_t)w;                                                        \
            memcpy(t->bytes + w, (str), (len_));                                               \
            w += (len_);                                                                       \
        }                                                                                      \
    } while (0)
    ADD("[PAD]", 5);
    if (n >= 104) {
        for (int i = 0; i < 99; i++) {
            k = snprintf(buf, sizeof buf, "[unused%d]", i);
            ADD(buf, (size_t)k);
        }
    }
    ADD("[UNK]", 5);
    ADD("[CLS]", 5);
    ADD("[SEP]", 5);
    ADD("[MASK]", 6);
    for (int c = 33; c < 127; c++) {
        buf[0] = (char)c;
        if (c < 'A' || c > 'Z')
            ADD(buf, 1);
    }
    for (int c = 33; c < 127; c++) {
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            buf[0] = '#', buf[1] = '#', buf[2] = (char)c;
            ADD(buf, 3);
        }
    }
    uint64_t s = seed;
    int rot = (int)(seed % 26);
    for (uint64_t i = 27; id < n; i++) {
        char body[12];
        int l = 0;
        for (uint64_t v = i; v > 0; v = (v - 1) / 26)
            body[l++] = (char)('a' + ((int)((v - 1) % 26) + rot) % 26);
        k = 0;
        if (splitmix(&s) & 1)
            buf[k++] = '#', buf[k++] = '#';
        memcpy(buf + k, body, (size_t)l);
        ADD(buf, (size_t)(k + l));
    }
#undef ADD
    t->n = n;
    t->off[n] = (uint32_t)w;
    int rc = build(t, "synthetic vocabulary", err);
    if (rc) {
        cb_wp_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Encoding state: the word being gathered and the ids written so far. */
typedef struct wp_enc {
    const cb_wordpiece *t;
    int32_t *ids;
    int n, room; /* ids written; the most pieces (max_tokens - 1, [SEP] after) */
    char word[WP_WORD_MAX_BYTES];
    size_t wlen;
    int wchars;
} wp_enc;

static void emit(wp_enc *e, int32_t id) {
    if (e->n < e->room)
        e->ids[e->n++] = id;
}

/* Splits the gathered word greedily, longest piece first; no split at all gives [UNK]. */
static void flush(wp_enc *e) {
    if (e->wchars == 0)
        return;
    const cb_wordpiece *t = e->t;
    if (e->wchars > WP_WORD_MAX_CHARS) {
        emit(e, t->unk);
        e->wlen = 0, e->wchars = 0;
        return;
    }
    const char *w = e->word;
    size_t n = e->wlen, start = 0;
    int first = e->n;
    while (start < n) {
        size_t end = n, np = start ? 2 : 0;
        if (end - start + np > t->max_len_bytes)
            end = start + (t->max_len_bytes > np ? t->max_len_bytes - np : 0);
        while (end > start && end < n && ((unsigned char)w[end] & 0xc0) == 0x80)
            end--; /* a character boundary */
        int32_t id = -1;
        while (end > start) {
            id = find2(t, "##", np, w + start, end - start);
            if (id >= 0)
                break;
            do
                end--;
            while (end > start && ((unsigned char)w[end] & 0xc0) == 0x80);
        }
        if (id < 0) {
            e->n = first < e->n ? first : e->n;
            emit(e, t->unk);
            break;
        }
        emit(e, id);
        start = end;
    }
    e->wlen = 0, e->wchars = 0;
}

/* Appends a normalized code point: a split, a word of its own, or part of the word. */
static void put(wp_enc *e, uint32_t cp, int punct) {
    if (cp == ' ') {
        flush(e);
        return;
    }
    if (punct) {
        flush(e);
        e->wlen = cb__uni_encode(e->word, cp);
        e->wchars = 1;
        flush(e);
        return;
    }
    if (e->wchars++ < WP_WORD_MAX_CHARS)
        e->wlen += cb__uni_encode(e->word + e->wlen, cp);
}

static const cb__uni_decomp_ent *map_of(uint32_t cp) {
    size_t lo = 0, hi = cb__wp_nmap;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < cb__wp_map[mid].cp)
            hi = mid;
        else if (cp > cb__wp_map[mid].cp)
            lo = mid + 1;
        else
            return &cb__wp_map[mid];
    }
    return NULL;
}

/* ASCII classes: whitespace, dropped controls, punctuation, letters folded to lower case. */
static int ascii_class(unsigned c) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        return CB_WP_C_SPACE;
    if (c < 32 || c == 127)
        return CB_WP_C_DROP; /* VT and FF too: controls are removed before whitespace is */
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return CB_WP_C_PUNCT;
    return CB_WP_C_KEEP;
}

int cb_wp_encode(const cb_wordpiece *t, const char *text, size_t len, int32_t *ids,
                 int max_tokens) {
    if (!t || max_tokens < 2)
        return -1;
    wp_enc e;
    e.t = t, e.ids = ids, e.n = 0, e.room = max_tokens - 1, e.wlen = 0, e.wchars = 0;
    emit(&e, t->cls);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len && e.n < e.room;) {
        uint32_t cp = s[i];
        int cls;
        if (cp == '[') {
            int k = 0;
            for (; k < 5; k++) {
                size_t l = strlen(wp_special[k]);
                if (t->special[k] >= 0 && len - i >= l && memcmp(s + i, wp_special[k], l) == 0)
                    break;
            }
            if (k < 5) {
                flush(&e);
                emit(&e, t->special[k]);
                i += strlen(wp_special[k]);
                continue;
            }
        }
        if (cp < 0x80) {
            i++;
            cls = ascii_class(cp);
            if (cls == CB_WP_C_KEEP && cp >= 'A' && cp <= 'Z')
                cp += 32;
        } else {
            size_t l = cb__uni_decode(s + i, len - i, &cp);
            if (!l) {
                i++; /* an invalid byte: dropped */
                continue;
            }
            i += l;
            cls = cb__uni_lookup(cb__wp_ranges, cb__wp_nranges, cp);
        }
        switch (cls) {
        case CB_WP_C_KEEP:
            put(&e, cp, 0);
            break;
        case CB_WP_C_PUNCT:
            put(&e, cp, 1);
            break;
        case CB_WP_C_SPACE:
            put(&e, ' ', 0);
            break;
        case CB_WP_C_CJK:
            put(&e, cp, 1);
            break;
        case CB_WP_C_HANGUL: {
            uint32_t si = cp - 0xAC00;
            put(&e, 0x1100 + si / 588, 0);
            put(&e, 0x1161 + (si % 588) / 28, 0);
            if (si % 28)
                put(&e, 0x11A7 + si % 28, 0);
            break;
        }
        case CB_WP_C_MAP: {
            const cb__uni_decomp_ent *m = map_of(cp);
            for (unsigned j = 0; m && j < m->len; j++) {
                uint32_t o = cb__wp_pool[m->off + j];
                put(&e, o & ~CB_WP_POOL_PUNCT, (o & CB_WP_POOL_PUNCT) != 0);
            }
            break;
        }
        default: /* CB_WP_C_DROP */
            break;
        }
    }
    flush(&e);
    ids[e.n++] = t->sep;
    return e.n;
}
