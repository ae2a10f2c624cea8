/* llm/tokenizer.c - byte-level BPE: loading (tokenizer.json, tiktoken rank files), encoding,
 * decoding and chat templates (see tokenizer.h for the contract).
 *
 * Design. Every token is kept as raw bytes (the byte-level alphabet of GPT-2 is undone at load):
 * id -> bytes in one blob, bytes -> id in an open-addressing hash table, and for Hugging Face
 * files a second table (left id, right id) -> (merge rank, merged id). Encoding splits the text
 * on added tokens (bucketed by first byte, longest first), normalizes each stretch between them
 * when the file asks for NFC (nfc.c; text that passes the quick check is used as it is), splits it
 * into pre-tokenizer pieces (pretok.c), and merges each piece:
 *   - pieces of up to SMALL_PIECE bytes: an array of symbols with the rank of each adjacent pair
 *     cached, the lowest (leftmost on ties) merged and its two neighbours re-ranked: O(m^2) on
 *     tiny m, no allocation;
 *   - longer pieces: a doubly linked list with a binary min-heap of (rank, position), stale
 *     entries skipped when popped: O(m log m), so a 100 KB run of one character stays fast.
 * The ordering (lowest rank, then leftmost) is that of both references: Hugging Face's BPE
 * (merge rank) and tiktoken (rank of the concatenation, ids are ranks).
 * No cache: encode allocates nothing for pieces of up to SMALL_PIECE bytes (nor for text that
 * needs no normalization) and holds no state, so a shared cb_tok needs no lock. */
#include "llm/tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "llm/jdom.h"
#include "llm/nfc.h"
#include "llm/pretok.h"
#include "llm/unicode.h"

enum { KIND_HF = 1, KIND_TIKTOKEN = 2 };
#define SMALL_PIECE 64
#define NO_RANK UINT32_MAX
#define ABSENT UINT32_MAX

typedef struct added_tok {
    int32_t id;
    int special;
    const char *text; /* in the blob */
    uint32_t len;
} added_tok;

typedef struct pair_ent {
    uint64_t key; /* (left id << 32 | right id) + 1; 0 = empty */
    uint32_t rank;
    int32_t id;
} pair_ent;

struct cb_tok {
    int kind;
    cb__pretok_kind pretok;
    int whole_word_first; /* look the whole piece up before merging (tiktoken; HF ignore_merges) */
    int nfc;              /* normalizer NFC: text between added tokens is normalized first */
    int32_t n_ids;        /* 1 + largest id */
    uint32_t *tok_off;    /* [n_ids]: offset in blob, ABSENT when the id has no token */
    uint32_t *tok_len;    /* [n_ids] */
    char *blob;
    size_t blob_len, blob_cap;
    uint32_t *map; /* bytes -> id + 1 (0 = empty), power-of-two size */
    size_t map_mask;
    pair_ent *pairs; /* HF merges */
    size_t pair_mask;
    int32_t byte_id[256];
    added_tok *added; /* sorted by first byte, then longest first */
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) start with byte b */
};

/* ---- small helpers ------------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;
    for (; n >= 8; n -= 8, s += 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int blob_add(cb_tok *t, const char *s, size_t n, uint32_t *off) {
    if (t->blob_len + n + 1 > t->blob_cap) {
        size_t cap = t->blob_cap ? t->blob_cap * 2 : 1 << 16;
        while (cap < t->blob_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return CB_ENOMEM;
        char *b = cb_realloc(t->blob, cap);
        if (!b)
            return CB_ENOMEM;
        t->blob = b;
        t->blob_cap = cap;
    }
    memcpy(t->blob + t->blob_len, s, n);
    *off = (uint32_t)t->blob_len;
    t->blob_len += n;
    t->blob[t->blob_len++] = 0;
    return 0;
}

static int32_t map_find(const cb_tok *t, const char *s, size_t n) {
    if (!t->map)
        return -1;
    for (size_t i = hash_bytes(s, n) & t->map_mask;; i = (i + 1) & t->map_mask) {
        uint32_t v = t->map[i];
        if (!v)
            return -1;
        int32_t id = (int32_t)(v - 1);
        if (t->tok_len[id] == n && memcmp(t->blob + t->tok_off[id], s, n) == 0)
            return id;
    }
}

/* Builds the bytes -> id table over every id that has bytes (ids of added tokens excluded). */
static int map_build(cb_tok *t, const uint8_t *skip) {
    size_t cap = 16;
    while (cap < (size_t)t->n_ids * 2)
        cap *= 2;
    t->map = cb_calloc(cap, sizeof *t->map);
    if (!t->map)
        return CB_ENOMEM;
    t->map_mask = cap - 1;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->tok_off[id] == ABSENT || (skip && skip[id]))
            continue;
        const char *s = t->blob + t->tok_off[id];
        size_t n = t->tok_len[id];
        if (map_find(t, s, n) >= 0)
            continue; /* the same bytes twice: the first id wins */
        size_t i = hash_bytes(s, n) & t->map_mask;
        while (t->map[i])
            i = (i + 1) & t->map_mask;
        t->map[i] = (uint32_t)id + 1;
    }
    return 0;
}

static const pair_ent *pair_find(const cb_tok *t, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    for (size_t i = hash_u64(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        if (t->pairs[i].key == key)
            return &t->pairs[i];
        if (!t->pairs[i].key)
            return NULL;
    }
}

/* Inserts or overwrites (a later duplicate merge replaces an earlier one, as HF's map does). */
static void pair_put(cb_tok *t, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & t->pair_mask;
    while (t->pairs[i].key && t->pairs[i].key != key)
        i = (i + 1) & t->pair_mask;
    t->pairs[i] = (pair_ent){key, rank, id};
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. Returns the byte of code point cp, or -1. */
static int unicode_to_byte(uint32_t cp) {
    if ((cp >= '!' && cp <= '~') || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
        return (int)cp;
    /* the others in byte order: 0x00-0x20 (33), 0x7f-0xa0 (34), 0xad */
    uint32_t k = cp - 0x100;
    if (cp < 0x100 || k >= 68)
        return -1;
    return k < 33 ? (int)k : k < 67 ? (int)(0x7f + k - 33) : 0xad;
}

/* Byte-level text -> bytes into out (capacity at least n). Returns the length, or -1 when a
 * character is not in the byte-level alphabet. */
static long bytelevel_decode(const char *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = cb__uni_decode((const unsigned char *)s + i, n - i, &cp);
        int b = l ? unicode_to_byte(cp) : -1;
        if (b < 0)
            return -1;
        out[k++] = (char)b;
        i += l;
    }
    return (long)k;
}

static cb_tok *tok_new(int32_t n_ids) {
    cb_tok *t = cb_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n_ids = n_ids;
    t->tok_off = cb_malloc((size_t)n_ids * sizeof *t->tok_off + 1);
    t->tok_len = cb_calloc((size_t)n_ids + 1, sizeof *t->tok_len);
    if (!t->tok_off || !t->tok_len) {
        cb_tok_free(t);
        return NULL;
    }
    memset(t->tok_off, 0xff, (size_t)n_ids * sizeof *t->tok_off);
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    return t;
}

void cb_tok_free(cb_tok *t) {
    if (!t)
        return;
    cb_free(t->tok_off);
    cb_free(t->tok_len);
    cb_free(t->blob);
    cb_free(t->map);
    cb_free(t->pairs);
    cb_free(t->added);
    cb_free(t);
}

static int added_cmp(const void *a, const void *b) {
    const added_tok *x = a, *y = b;
    unsigned char fx = (unsigned char)x->text[0], fy = (unsigned char)y->text[0];
    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void added_index(cb_tok *t) {
    qsort(t->added, t->n_added, sizeof *t->added, added_cmp);
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (b < 256 && k < t->n_added && (unsigned char)t->added[k].text[0] < b)
            k++;
        t->added_first[b] = (uint32_t)(b == 256 ? t->n_added : k);
    }
}

/* Fills byte_id from the bytes map; all 256 single bytes must be tokens. */
static int bytes_check(cb_tok *t, int *missing) {
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = map_find(t, &c, 1);
        if (t->byte_id[b] < 0) {
            *missing = b;
            return -1;
        }
    }
    return 0;
}

static char *read_file(const char *path, size_t *len, cb_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cb_error_set(err, CB_EIO, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= CB_TOK_FILE_MAX_BYTES) {
                cb_error_set(err, CB_EINVAL, "larger than the limit of %u bytes",
                             CB_TOK_FILE_MAX_BYTES);
                cb_free(buf);
                fclose(f);
                return NULL;
            }
            cap = cap ? cap * 2 : 1 << 16;
            if (cap > CB_TOK_FILE_MAX_BYTES)
                cap = CB_TOK_FILE_MAX_BYTES;
            char *b = cb_realloc(buf, cap + 1);
            if (!b) {
                cb_error_set(err, CB_ENOMEM, "out of memory");
                cb_free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        cb_error_set(err, CB_EIO, "read error");
        cb_free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* ---- Hugging Face tokenizer.json ----------------------------------------------------------- */

typedef struct hf_ctx {
    const char *path, *text;
    size_t len;
    cb_error *err;
} hf_ctx;

/* An error at a JSON node: file:line:col, the JSON path as the key. */
static int hf_fail(const hf_ctx *c, const cb__jdom_node *at, const char *key, int code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int hf_fail(const hf_ctx *c, const cb__jdom_node *at, const char *key, int code,
                   const char *fmt, ...) {
    char msg[CB_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cb_error_set(c->err, code, "%s", msg);
    int line = 0, col = 0;
    if (at)
        cb__jdom_linecol(c->text, c->len, at->off, &line, &col);
    cb_error_at(c->err, c->path, line, col);
    cb_error_key(c->err, key);
    return code;
}

/* A short printable quote of a string for messages. */
static const char *quote(const char *s, size_t n, char *buf, size_t cap) {
    char tmp[96];
    size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
    memcpy(tmp, s, k);
    tmp[k] = 0;
    cb_error_escape(buf, cap, tmp);
    return buf;
}

static int is_type(const cb__jdom_node *obj, const char *type) {
    const cb__jdom_node *t = cb__jdom_get(obj, "type");
    return t && t->type == CB_JDOM_STR && strcmp(t->v.str, type) == 0;
}

static int is_true(const cb__jdom_node *n) { return n && n->type == CB_JDOM_BOOL && n->v.b; }
static int is_null(const cb__jdom_node *n) { return !n || n->type == CB_JDOM_NULL; }

static int get_id(const hf_ctx *c, const cb__jdom_node *n, const char *key, int32_t *id) {
    if (!n || n->type != CB_JDOM_NUM || n->v.num < 0 || n->v.num >= CB_TOK_VOCAB_MAX ||
        n->v.num != (double)(int32_t)n->v.num)
        return hf_fail(c, n, key, CB_EINVAL, "expected an id in [0, %d)", CB_TOK_VOCAB_MAX);
    *id = (int32_t)n->v.num;
    return 0;
}

/* ByteLevel pre-tokenizer: add_prefix_space must be false. *regex: use_regex (default true). */
static int hf_bytelevel(const hf_ctx *c, const cb__jdom_node *n, const char *key, int *regex) {
    const cb__jdom_node *ur = cb__jdom_get(n, "use_regex");
    *regex = !ur || is_true(ur);
    if (is_true(cb__jdom_get(n, "add_prefix_space")))
        return hf_fail(c, n, key, CB_EUNSUPPORTED,
                       "ByteLevel add_prefix_space = true is not "
                       "supported");
    return 0;
}

static int hf_pretok(const hf_ctx *c, const cb__jdom_node *root, cb__pretok_kind *kind) {
    const cb__jdom_node *pt = cb__jdom_get(root, "pre_tokenizer");
    int regex = 0;
    if (is_null(pt))
        return hf_fail(
            c, pt, "pre_tokenizer", CB_EUNSUPPORTED,
            "no pre_tokenizer: only byte-level BPE (a ByteLevel pre-tokenizer) is supported");
    if (is_type(pt, "ByteLevel")) {
        int rc = hf_bytelevel(c, pt, "pre_tokenizer", &regex);
        *kind = regex ? CB_PRETOK_GPT2 : CB_PRETOK_NONE;
        return rc;
    }
    const cb__jdom_node *seq = cb__jdom_get(pt, "pretokenizers");
    if (!is_type(pt, "Sequence") || !seq || seq->type != CB_JDOM_ARR)
        return hf_fail(c, pt, "pre_tokenizer", CB_EUNSUPPORTED,
                       "unsupported pre_tokenizer (supported: ByteLevel, or Sequence of a Split "
                       "with a known pattern and ByteLevel)");
    int have_bl = 0, have_split = 0;
    *kind = CB_PRETOK_NONE;
    for (size_t i = 0; i < seq->n; i++) {
        const cb__jdom_node *e = &seq->v.items[i];
        char key[96];
        snprintf(key, sizeof key, "pre_tokenizer.pretokenizers[%zu]", i);
        if (is_type(e, "ByteLevel")) {
            int rc = hf_bytelevel(c, e, key, &regex);
            if (rc)
                return rc;
            if (regex) {
                if (have_split)
                    return hf_fail(c, e, key, CB_EUNSUPPORTED,
                                   "ByteLevel use_regex = true after a Split");
                *kind = CB_PRETOK_GPT2;
            }
            have_bl = 1;
            continue;
        }
        if (!is_type(e, "Split") || have_split || have_bl)
            return hf_fail(c, e, key, CB_EUNSUPPORTED,
                           "unsupported pre-tokenizer (supported: one Split, then ByteLevel)");
        const cb__jdom_node *pat = cb__jdom_get(e, "pattern");
        const cb__jdom_node *re = cb__jdom_get(pat, "Regex");
        const cb__jdom_node *beh = cb__jdom_get(e, "behavior");
        char k2[128], q[200];
        snprintf(k2, sizeof k2, "%s.pattern.Regex", key);
        if (!re || re->type != CB_JDOM_STR)
            return hf_fail(c, pat ? pat : e, k2, CB_EUNSUPPORTED,
                           "Split needs a Regex pattern (a String pattern is not supported)");
        *kind = cb__pretok_from_pattern(re->v.str, re->n);
        if (*kind == CB_PRETOK_NONE)
            return hf_fail(
                c, re, k2, CB_EUNSUPPORTED,
                "unknown split pattern \"%s\" (known: GPT-2, cl100k/Llama 3, Qwen2, o200k)",
                quote(re->v.str, re->n, q, sizeof q));
        if (!beh || beh->type != CB_JDOM_STR || strcmp(beh->v.str, "Isolated") != 0 ||
            is_true(cb__jdom_get(e, "invert")))
            return hf_fail(c, e, key, CB_EUNSUPPORTED,
                           "Split must have behavior Isolated and invert false");
        have_split = 1;
    }
    if (!have_bl)
        return hf_fail(c, pt, "pre_tokenizer", CB_EUNSUPPORTED,
                       "no ByteLevel pre-tokenizer: only byte-level BPE is supported");
    return 0;
}

static int hf_checks(const hf_ctx *c, const cb__jdom_node *root, const cb__jdom_node *model,
                     int *nfc) {
    const cb__jdom_node *norm = cb__jdom_get(root, "normalizer");
    const cb__jdom_node *seq = cb__jdom_get(norm, "normalizers");
    if (is_type(norm, "Sequence") && seq && seq->type == CB_JDOM_ARR && seq->n <= 1) {
        if (seq->n == 1)
            norm = &seq->v.items[0]; /* a Sequence of one: the one */
        else
            norm = NULL;
    }
    if (!is_null(norm) && !is_type(norm, "NFC")) {
        const cb__jdom_node *ty = cb__jdom_get(norm, "type");
        return hf_fail(c, norm, "normalizer", CB_EUNSUPPORTED,
                       "normalizer %s is not implemented (only null and NFC)",
                       ty && ty->type == CB_JDOM_STR ? ty->v.str : "?");
    }
    *nfc = !is_null(norm);
    const cb__jdom_node *dec = cb__jdom_get(root, "decoder");
    if (!is_null(dec) && !is_type(dec, "ByteLevel"))
        return hf_fail(c, dec, "decoder", CB_EUNSUPPORTED, "decoder must be ByteLevel or null");
    if (!model || model->type != CB_JDOM_OBJ)
        return hf_fail(c, model ? model : root, "model", CB_EINVAL, "no model object");
    const cb__jdom_node *ty = cb__jdom_get(model, "type");
    if (ty && !is_type(model, "BPE"))
        return hf_fail(c, ty, "model.type", CB_EUNSUPPORTED, "model type must be BPE");
    static const char *const empty_keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const cb__jdom_node *v = cb__jdom_get(model, empty_keys[i]);
        if (!is_null(v) && !(v->type == CB_JDOM_STR && v->n == 0))
            return hf_fail(c, v, empty_keys[i], CB_EUNSUPPORTED, "must be null for byte-level BPE");
    }
    const cb__jdom_node *v = cb__jdom_get(model, "dropout");
    if (!is_null(v) && !(v->type == CB_JDOM_NUM && v->v.num == 0))
        return hf_fail(c, v, "model.dropout", CB_EUNSUPPORTED, "BPE dropout is not supported");
    if (is_true(cb__jdom_get(model, "byte_fallback")))
        return hf_fail(c, model, "model.byte_fallback", CB_EUNSUPPORTED,
                       "byte_fallback is not supported");
    return 0;
}

/* The JSON path of a vocabulary entry, for messages. */
static const char *vocab_key(char *key, size_t cap, const cb__jdom_node *k) {
    char q[96];
    snprintf(key, cap, "model.vocab[\"%s\"]", quote(k->v.str, k->n, q, 64));
    return key;
}

/* Splits a merges entry ("a b" or ["a", "b"]) into two strings. */
static int hf_merge_parts(const hf_ctx *c, const cb__jdom_node *e, const char *key, const char **a,
                          size_t *na, const char **b, size_t *nb) {
    if (e->type == CB_JDOM_ARR && e->n == 2 && e->v.items[0].type == CB_JDOM_STR &&
        e->v.items[1].type == CB_JDOM_STR) {
        *a = e->v.items[0].v.str, *na = e->v.items[0].n;
        *b = e->v.items[1].v.str, *nb = e->v.items[1].n;
        return 0;
    }
    if (e->type == CB_JDOM_STR) {
        const char *sp = memchr(e->v.str, ' ', e->n);
        if (sp && !memchr(sp + 1, ' ', e->n - (size_t)(sp + 1 - e->v.str))) {
            *a = e->v.str, *na = (size_t)(sp - e->v.str);
            *b = sp + 1, *nb = e->n - *na - 1;
            return 0;
        }
    }
    return hf_fail(c, e, key, CB_EINVAL, "expected \"a b\" or [\"a\", \"b\"]");
}

static int hf_build(const hf_ctx *c, const cb__jdom_node *root, cb_tok **out) {
    const cb__jdom_node *model = cb__jdom_get(root, "model");
    int nfc = 0;
    int rc = hf_checks(c, root, model, &nfc);
    if (rc)
        return rc;
    cb__pretok_kind kind = CB_PRETOK_NONE;
    if ((rc = hf_pretok(c, root, &kind)))
        return rc;
    const cb__jdom_node *vocab = cb__jdom_get(model, "vocab");
    const cb__jdom_node *merges = cb__jdom_get(model, "merges");
    const cb__jdom_node *added = cb__jdom_get(root, "added_tokens");
    if (!vocab || vocab->type != CB_JDOM_OBJ)
        return hf_fail(c, vocab ? vocab : model, "model.vocab", CB_EINVAL, "expected an object");
    if (!merges || merges->type != CB_JDOM_ARR)
        return hf_fail(c, merges ? merges : model, "model.merges", CB_EINVAL, "expected an array");
    if (!is_null(added) && added->type != CB_JDOM_ARR)
        return hf_fail(c, added, "added_tokens", CB_EINVAL, "expected an array");
    size_t n_added = is_null(added) ? 0 : added->n;
    char key[128], q[200];
    /* ids first: the largest sizes the tables */
    int32_t max_id = -1, id = 0;
    for (size_t i = 0; i < vocab->n; i++) {
        if ((rc = get_id(c, &vocab->v.items[i], "", &id))) {
            cb_error_key(c->err, vocab_key(key, sizeof key, &vocab->keys[i]));
            return rc;
        }
        if (id > max_id)
            max_id = id;
    }
    for (size_t i = 0; i < n_added; i++) {
        snprintf(key, sizeof key, "added_tokens[%zu].id", i);
        if ((rc = get_id(c, cb__jdom_get(&added->v.items[i], "id"), key, &id)))
            return rc;
        if (id > max_id)
            max_id = id;
    }
    cb_tok *t = tok_new(max_id + 1);
    uint8_t *is_added = cb_calloc((size_t)max_id + 2, 1);
    char *buf = cb_malloc(CB_TOK_TOKEN_MAX_BYTES * 2 + 2);
    if (!t || !is_added || !buf) {
        rc = cb_error_set(c->err, CB_ENOMEM, "out of memory");
        goto done;
    }
    t->kind = KIND_HF;
    t->pretok = kind;
    t->nfc = nfc;
    t->whole_word_first = is_true(cb__jdom_get(model, "ignore_merges"));
    /* added tokens */
    t->added = cb_calloc(n_added + 1, sizeof *t->added);
    if (!t->added) {
        rc = cb_error_set(c->err, CB_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_added; i++) {
        const cb__jdom_node *e = &added->v.items[i];
        const cb__jdom_node *content = cb__jdom_get(e, "content");
        snprintf(key, sizeof key, "added_tokens[%zu]", i);
        if (!content || content->type != CB_JDOM_STR || content->n == 0 ||
            content->n > CB_TOK_TOKEN_MAX_BYTES) {
            rc = hf_fail(c, content ? content : e, key, CB_EINVAL,
                         "content must be a string of 1 to %d bytes", CB_TOK_TOKEN_MAX_BYTES);
            goto done;
        }
        static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
        for (size_t f = 0; f < 3; f++) {
            if (is_true(cb__jdom_get(e, flags[f]))) {
                rc = hf_fail(c, e, key, CB_EUNSUPPORTED, "%s = true is not supported", flags[f]);
                goto done;
            }
        }
        get_id(c, cb__jdom_get(e, "id"), key, &id);
        added_tok *a = &t->added[t->n_added++];
        a->id = id;
        a->special = is_true(cb__jdom_get(e, "special"));
        a->len = (uint32_t)content->n;
        if (blob_add(t, content->v.str, content->n, &t->tok_off[id])) {
            rc = cb_error_set(c->err, CB_ENOMEM, "out of memory");
            goto done;
        }
        t->tok_len[id] = (uint32_t)content->n;
        is_added[id] = 1;
    }
    /* vocabulary: byte-level strings -> bytes */
    for (size_t i = 0; i < vocab->n; i++) {
        const cb__jdom_node *k = &vocab->keys[i];
        id = (int32_t)vocab->v.items[i].v.num;
        if (is_added[id])
            continue; /* the added token's text is what decodes */
        if (t->tok_off[id] != ABSENT) {
            rc = hf_fail(c, &vocab->v.items[i], vocab_key(key, sizeof key, k), CB_EINVAL,
                         "id %d appears twice", (int)id);
            goto done;
        }
        long nb = k->n <= CB_TOK_TOKEN_MAX_BYTES * 2 ? bytelevel_decode(k->v.str, k->n, buf) : -1;
        if (nb <= 0) {
            rc = hf_fail(c, k, vocab_key(key, sizeof key, k), CB_EINVAL,
                         nb == 0 ? "empty token"
                                 : "not a byte-level token (a character outside GPT-2's byte "
                                   "alphabet, or longer than %d bytes)",
                         CB_TOK_TOKEN_MAX_BYTES);
            goto done;
        }
        if (blob_add(t, buf, (size_t)nb, &t->tok_off[id])) {
            rc = cb_error_set(c->err, CB_ENOMEM, "out of memory");
            goto done;
        }
        t->tok_len[id] = (uint32_t)nb;
    }
    if (map_build(t, is_added)) {
        rc = cb_error_set(c->err, CB_ENOMEM, "out of memory");
        goto done;
    }
    int missing;
    if (bytes_check(t, &missing)) {
        rc = hf_fail(c, vocab, "model.vocab", CB_EINVAL,
                     "no token for byte 0x%02x: not a byte-level vocabulary", missing);
        goto done;
    }
    /* merges: rank = index */
    size_t cap = 16;
    while (cap < merges->n * 2)
        cap *= 2;
    t->pairs = cb_calloc(cap, sizeof *t->pairs);
    if (!t->pairs) {
        rc = cb_error_set(c->err, CB_ENOMEM, "out of memory");
        goto done;
    }
    t->pair_mask = cap - 1;
    for (size_t i = 0; i < merges->n; i++) {
        const cb__jdom_node *e = &merges->v.items[i];
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        key[0] = 0; /* written when needed: formatting 150k keys costs more than the look-ups */
        if ((rc = hf_merge_parts(c, e, "", &a, &na, &b, &nb)))
            goto merge_error;
        long la = na <= CB_TOK_TOKEN_MAX_BYTES ? bytelevel_decode(a, na, buf) : -1;
        long lb = la > 0 && nb <= CB_TOK_TOKEN_MAX_BYTES ? bytelevel_decode(b, nb, buf + la) : -1;
        int32_t ia = la > 0 ? map_find(t, buf, (size_t)la) : -1;
        int32_t ib = lb > 0 ? map_find(t, buf + la, (size_t)lb) : -1;
        int32_t im = ia >= 0 && ib >= 0 ? map_find(t, buf, (size_t)(la + lb)) : -1;
        if (ia < 0 || ib < 0) {
            rc = hf_fail(c, e, "", CB_EINVAL, "unknown token \"%s\"",
                         ia < 0 ? quote(a, na, q, 64) : quote(b, nb, q, 64));
            goto merge_error;
        }
        if (im < 0) {
            char q2[200];
            rc = hf_fail(c, e, "", CB_EINVAL,
                         "the merge of \"%s\" and \"%s\" is not in the vocabulary",
                         quote(a, na, q, 64), quote(b, nb, q2, 64));
            goto merge_error;
        }
        pair_put(t, ia, ib, (uint32_t)i, im);
        continue;
    merge_error:
        snprintf(key, sizeof key, "model.merges[%zu]", i);
        cb_error_key(c->err, key);
        goto done;
    }
    for (size_t i = 0; i < t->n_added; i++)
        t->added[i].text = t->blob + t->tok_off[t->added[i].id];
    added_index(t);
    rc = 0;
done:
    cb_free(is_added);
    cb_free(buf);
    if (rc)
        cb_tok_free(t);
    else
        *out = t;
    return rc;
}

int cb_tok_load_hf(const char *path, cb_tok **out, cb_error *err) {
    *out = NULL;
    size_t len = 0;
    char *text = read_file(path, &len, err);
    if (!text) {
        cb_error_at(err, path, 0, 0);
        return err ? err->code : CB_EIO;
    }
    cb__jdom *d = NULL;
    int rc = cb__jdom_parse(text, len, path, &d, err);
    if (!rc) {
        hf_ctx c = {.path = path, .text = text, .len = len, .err = err};
        const cb__jdom_node *root = cb__jdom_root(d);
        rc = root->type == CB_JDOM_OBJ ? hf_build(&c, root, out)
                                       : hf_fail(&c, root, "", CB_EINVAL, "expected an object");
    }
    cb__jdom_free(d);
    cb_free(text);
    return rc;
}

/* ---- tiktoken rank files ------------------------------------------------------------------- */

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with padding; returns the decoded length or -1. */
static long b64_decode(const char *s, size_t n, char *out, size_t cap) {
    if (n % 4)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char ch = (unsigned char)s[i + (size_t)j];
            if (ch == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64_val(ch)) < 0) {
                return -1;
            }
        }
        uint32_t x = (uint32_t)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
        int m = 3 - pad;
        if (k + (size_t)m > cap)
            return -1;
        for (int j = 0; j < m; j++)
            out[k++] = (char)(x >> (16 - 8 * j));
    }
    return (long)k;
}

static int tt_fail(cb_error *err, const char *path, int line, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int tt_fail(cb_error *err, const char *path, int line, int code, const char *fmt, ...) {
    char msg[CB_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cb_error_set(err, code, "%s", msg);
    cb_error_at(err, path, line, line ? 1 : 0);
    return code;
}

/* Reads the line at text[*i] ("BASE64 RANK", '\r' allowed at the end) and moves *i past it.
 * Returns 1 with the token's base64 text and the rank, 0 for an empty line, -1 without a rank. */
static int tt_line(const char *text, size_t len, size_t *i, const char **b64, size_t *b64_len,
                   int32_t *rank) {
    const char *ln = text + *i, *nl = memchr(ln, '\n', len - *i);
    size_t ll = nl ? (size_t)(nl - ln) : len - *i;
    *i += ll + 1;
    if (ll && ln[ll - 1] == '\r')
        ll--;
    if (ll == 0)
        return 0;
    const char *sp1 = memchr(ln, ' ', ll);
    if (!sp1 || sp1 + 1 == ln + ll)
        return -1;
    long r = 0;
    for (const char *p = sp1 + 1; p < ln + ll; p++) {
        if (*p < '0' || *p > '9' || (r = r * 10 + (*p - '0')) >= CB_TOK_VOCAB_MAX)
            return -1;
    }
    *b64 = ln;
    *b64_len = (size_t)(sp1 - ln);
    *rank = (int32_t)r;
    return 1;
}

int cb_tok_load_tiktoken(const char *path, const char *pattern, const cb_tok_special *sp,
                         size_t n_sp, cb_tok **out, cb_error *err) {
    *out = NULL;
    cb__pretok_kind kind = cb__pretok_from_name(pattern);
    if (pattern && kind == CB_PRETOK_NONE)
        return tt_fail(err, path, 0, CB_EINVAL,
                       "unknown pattern \"%s\" (known: gpt2, cl100k, llama3, qwen2, o200k)",
                       pattern);
    size_t len = 0;
    char *text = read_file(path, &len, err);
    if (!text)
        return tt_fail(err, path, 0, err ? err->code : CB_EIO, "%s", err ? err->msg : "");
    /* pass 1: the largest rank */
    int32_t max_id = -1;
    int rc = 0, line = 0;
    size_t nlines = 0;
    const char *b64;
    size_t b64_len;
    int32_t id;
    for (size_t i = 0; i < len;) {
        line++;
        int got = tt_line(text, len, &i, &b64, &b64_len, &id);
        if (got < 0) {
            rc = tt_fail(err, path, line, CB_EINVAL,
                         "expected \"BASE64 RANK\" with a rank in "
                         "[0, %d)",
                         CB_TOK_VOCAB_MAX);
            goto fail;
        }
        if (got && id > max_id)
            max_id = id;
        nlines += (size_t)got;
    }
    for (size_t i = 0; i < n_sp; i++) {
        if (!sp[i].text || !sp[i].text[0] || strlen(sp[i].text) > CB_TOK_TOKEN_MAX_BYTES ||
            sp[i].id < 0 || sp[i].id >= CB_TOK_VOCAB_MAX) {
            rc = tt_fail(err, path, 0, CB_EINVAL,
                         "special token %zu: empty, too long or id out "
                         "of range",
                         i);
            goto fail;
        }
        if (sp[i].id > max_id)
            max_id = sp[i].id;
    }
    if (nlines == 0) {
        rc = tt_fail(err, path, 0, CB_EINVAL, "no ranks");
        goto fail;
    }
    cb_tok *t = tok_new(max_id + 1);
    char buf[CB_TOK_TOKEN_MAX_BYTES];
    if (!t || !(t->added = cb_calloc(n_sp + 1, sizeof *t->added))) {
        cb_tok_free(t);
        rc = cb_error_set(err, CB_ENOMEM, "out of memory");
        goto fail;
    }
    t->kind = KIND_TIKTOKEN;
    t->pretok = pattern ? kind : CB_PRETOK_NONE;
    t->whole_word_first = 1;
    line = 0;
    for (size_t i = 0; i < len;) {
        line++;
        if (tt_line(text, len, &i, &b64, &b64_len, &id) == 0)
            continue;
        long nb = b64_decode(b64, b64_len, buf, sizeof buf);
        if (nb <= 0) {
            rc = tt_fail(err, path, line, CB_EINVAL, "bad base64 token (or longer than %d bytes)",
                         CB_TOK_TOKEN_MAX_BYTES);
        } else if (t->tok_off[id] != ABSENT) {
            rc = tt_fail(err, path, line, CB_EINVAL, "rank %d appears twice", (int)id);
        } else if (blob_add(t, buf, (size_t)nb, &t->tok_off[id])) {
            rc = cb_error_set(err, CB_ENOMEM, "out of memory");
        }
        if (rc) {
            cb_tok_free(t);
            goto fail;
        }
        t->tok_len[id] = (uint32_t)nb;
    }
    int missing;
    if (map_build(t, NULL)) {
        rc = cb_error_set(err, CB_ENOMEM, "out of memory");
    } else if (bytes_check(t, &missing)) {
        rc = tt_fail(err, path, 0, CB_EINVAL, "no token for byte 0x%02x", missing);
    }
    for (size_t i = 0; !rc && i < n_sp; i++) {
        added_tok *a = &t->added[t->n_added++];
        a->id = sp[i].id;
        a->special = 1;
        a->len = (uint32_t)strlen(sp[i].text);
        if (t->tok_off[a->id] != ABSENT)
            rc = tt_fail(err, path, 0, CB_EINVAL, "special token %zu: id %d is a rank in the file",
                         i, (int)a->id);
        else if (blob_add(t, sp[i].text, a->len, &t->tok_off[a->id]))
            rc = cb_error_set(err, CB_ENOMEM, "out of memory");
        t->tok_len[a->id] = a->len;
    }
    if (rc) {
        cb_tok_free(t);
        goto fail;
    }
    for (size_t i = 0; i < t->n_added; i++)
        t->added[i].text = t->blob + t->tok_off[t->added[i].id];
    added_index(t);
    *out = t;
fail:
    cb_free(text);
    return rc;
}

/* ---- encoding ------------------------------------------------------------------------------ */

typedef struct emitter {
    int32_t *ids;
    size_t cap, n;
} emitter;

static inline void emit(emitter *e, int32_t id) {
    if (e->n < e->cap)
        e->ids[e->n] = id;
    e->n++;
}

/* Rank of merging the symbols s[a0..a0+la) and s[a0+la..a0+la+lb) (ids ia, ib); NO_RANK when
 * they do not merge. *id: the merged token. */
static inline uint32_t pair_rank(const cb_tok *t, const unsigned char *s, size_t a0, size_t la,
                                 size_t lb, int32_t ia, int32_t ib, int32_t *id) {
    if (t->kind == KIND_HF) {
        const pair_ent *p = pair_find(t, ia, ib);
        if (!p)
            return NO_RANK;
        *id = p->id;
        return p->rank;
    }
    int32_t r = map_find(t, (const char *)s + a0, la + lb);
    if (r < 0)
        return NO_RANK;
    *id = r;
    return (uint32_t)r;
}

typedef struct sym {
    uint32_t start, len, rank; /* rank of merging with the next symbol */
    int32_t id, merged;        /* merged: the token of that merge */
} sym;

static void bpe_small(const cb_tok *t, const unsigned char *s, size_t m, emitter *e) {
    sym y[SMALL_PIECE];
    size_t k = m;
    for (size_t i = 0; i < m; i++)
        y[i] = (sym){(uint32_t)i, 1, NO_RANK, t->byte_id[s[i]], -1};
    for (size_t i = 0; i + 1 < k; i++)
        y[i].rank = pair_rank(t, s, i, 1, 1, y[i].id, y[i + 1].id, &y[i].merged);
    while (k > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < k; i++)
            if (y[i].rank < y[best].rank)
                best = i;
        if (y[best].rank == NO_RANK)
            break;
        y[best].id = y[best].merged;
        y[best].len += y[best + 1].len;
        memmove(y + best + 1, y + best + 2, (k - best - 2) * sizeof *y);
        k--;
        y[best].rank = NO_RANK;
        if (best + 1 < k)
            y[best].rank = pair_rank(t, s, y[best].start, y[best].len, y[best + 1].len, y[best].id,
                                     y[best + 1].id, &y[best].merged);
        if (best > 0) {
            sym *p = &y[best - 1];
            p->rank = pair_rank(t, s, p->start, p->len, y[best].len, p->id, y[best].id, &p->merged);
        }
    }
    for (size_t i = 0; i < k; i++)
        emit(e, y[i].id);
}

typedef struct heap_ent {
    uint32_t rank, pos;
} heap_ent;

static inline int heap_less(heap_ent a, heap_ent b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent v) {
    size_t i = (*n)++;
    while (i > 0 && heap_less(v, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], v = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c]))
            c++;
        if (!heap_less(h[c], v))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = v;
    return top;
}

/* Symbols are indexed by their first byte; prev/next link the live ones. */
static int bpe_large(const cb_tok *t, const unsigned char *s, size_t m, emitter *e) {
    int32_t *id = cb_malloc(m * sizeof *id);
    uint32_t *len = cb_malloc(m * sizeof *len), *prev = cb_malloc(m * sizeof *prev);
    uint32_t *next = cb_malloc(m * sizeof *next);
    heap_ent *h = cb_malloc(3 * m * sizeof *h);
    int rc = 0;
    if (!id || !len || !prev || !next || !h) {
        rc = CB_ENOMEM;
        goto out;
    }
    size_t nh = 0;
    int32_t mid = -1; /* set by pair_rank whenever it returns a rank */
    for (size_t i = 0; i < m; i++) {
        id[i] = t->byte_id[s[i]];
        len[i] = 1;
        prev[i] = i ? (uint32_t)i - 1 : UINT32_MAX;
        next[i] = i + 1 < m ? (uint32_t)i + 1 : UINT32_MAX;
    }
    for (size_t i = 0; i + 1 < m; i++) {
        uint32_t r = pair_rank(t, s, i, 1, 1, id[i], id[i + 1], &mid);
        if (r != NO_RANK)
            heap_push(h, &nh, (heap_ent){r, (uint32_t)i});
    }
    while (nh) {
        heap_ent top = heap_pop(h, &nh);
        uint32_t a = top.pos, b = next[a];
        if (len[a] == 0 || b == UINT32_MAX)
            continue; /* merged away, or now last */
        uint32_t r = pair_rank(t, s, a, len[a], len[b], id[a], id[b], &mid);
        if (r != top.rank)
            continue; /* stale */
        id[a] = mid;
        len[a] += len[b];
        len[b] = 0;
        next[a] = next[b];
        if (next[b] != UINT32_MAX)
            prev[next[b]] = a;
        if (prev[a] != UINT32_MAX) {
            uint32_t p = prev[a];
            r = pair_rank(t, s, p, len[p], len[a], id[p], id[a], &mid);
            if (r != NO_RANK)
                heap_push(h, &nh, (heap_ent){r, p});
        }
        if (next[a] != UINT32_MAX) {
            uint32_t n2 = next[a];
            r = pair_rank(t, s, a, len[a], len[n2], id[a], id[n2], &mid);
            if (r != NO_RANK)
                heap_push(h, &nh, (heap_ent){r, a});
        }
    }
    for (uint32_t i = 0; i != UINT32_MAX; i = next[i])
        emit(e, id[i]);
out:
    cb_free(id);
    cb_free(len);
    cb_free(prev);
    cb_free(next);
    cb_free(h);
    return rc;
}

static int bpe_piece(const cb_tok *t, const unsigned char *s, size_t m, emitter *e) {
    if (m == 1) {
        emit(e, t->byte_id[s[0]]);
        return 0;
    }
    if (t->whole_word_first) {
        int32_t id = map_find(t, (const char *)s, m);
        if (id >= 0) {
            emit(e, id);
            return 0;
        }
    }
    if (m <= SMALL_PIECE) {
        bpe_small(t, s, m, e);
        return 0;
    }
    return bpe_large(t, s, m, e);
}

static int encode_ordinary(const cb_tok *t, const unsigned char *s, size_t n, emitter *e) {
    char *norm = NULL;
    if (t->nfc && !cb__nfc_quick(s, n)) {
        if (cb__nfc_normalize(s, n, &norm, &n))
            return CB_ENOMEM;
        s = (const unsigned char *)norm;
    }
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        size_t m = cb__pretok_next(t->pretok, s + i, n - i);
        rc = bpe_piece(t, s + i, m, e);
        i += m;
    }
    cb_free(norm);
    return rc;
}

/* The longest added token at s[0..n) (special ones only when allowed), or NULL. */
static const added_tok *added_at(const cb_tok *t, const unsigned char *s, size_t n,
                                 int allow_special) {
    for (uint32_t k = t->added_first[s[0]]; k < t->added_first[s[0] + 1]; k++) {
        const added_tok *a = &t->added[k];
        if (a->len <= n && (allow_special || !a->special) && memcmp(a->text, s, a->len) == 0)
            return a;
    }
    return NULL;
}

int cb_tok_encode(const cb_tok *t, const char *text, size_t len, int allow_special, int32_t *ids,
                  size_t cap, size_t *n, cb_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    *n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = s[i] < 0x80 ? 1 : cb__uni_decode(s + i, len - i, &cp);
        if (!l)
            return cb_error_set(err, CB_EINVAL, "tokenizer: invalid UTF-8 at byte %zu", i);
        i += l;
    }
    emitter e = {ids, ids ? cap : 0, 0};
    size_t seg = 0;
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        if (t->added_first[s[i]] == t->added_first[s[i] + 1])
            continue;
        const added_tok *a = added_at(t, s + i, len - i, allow_special);
        if (!a)
            continue;
        rc = encode_ordinary(t, s + seg, i - seg, &e);
        emit(&e, a->id);
        i += a->len - 1;
        seg = i + 1;
    }
    if (!rc)
        rc = encode_ordinary(t, s + seg, len - seg, &e);
    *n = e.n;
    if (rc)
        return cb_error_set(err, rc, "tokenizer: out of memory");
    if (e.n > cap || (!ids && e.n))
        return cb_error_set(err, CB_EFULL, "tokenizer: %zu ids do not fit in %zu", e.n, cap);
    return 0;
}

int cb_tok_decode(const cb_tok *t, const int32_t *ids, size_t n, char *out, size_t cap, size_t *len,
                  cb_error *err) {
    size_t k = 0;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || t->tok_off[id] == ABSENT)
            return cb_error_set(err, CB_EINVAL,
                                "tokenizer: id %d (at %zu) is not in the "
                                "vocabulary",
                                (int)id, i);
        size_t l = t->tok_len[id];
        if (out && k + l <= cap)
            memcpy(out + k, t->blob + t->tok_off[id], l);
        k += l;
    }
    *len = k;
    if (k > cap || (!out && k))
        return cb_error_set(err, CB_EFULL, "tokenizer: %zu bytes do not fit in %zu", k, cap);
    return 0;
}

int32_t cb_tok_vocab_size(const cb_tok *t) { return t->n_ids; }

int32_t cb_tok_special_id(const cb_tok *t, const char *text) {
    size_t l = strlen(text);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == l && memcmp(t->added[i].text, text, l) == 0)
            return t->added[i].id;
    return -1;
}

/* ---- chat templates ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *out;
    size_t cap, n;
} sbuf;

static void put(sbuf *b, const char *s, size_t l) {
    if (b->out && b->n + l <= b->cap)
        memcpy(b->out + b->n, s, l);
    b->n += l;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

int cb_tok_chat_render(cb_tok_chat fmt, const cb_tok_msg *msgs, size_t n, int add_generation_prompt,
                       char *out, size_t cap, size_t *len, cb_error *err) {
    sbuf b = {out, cap, 0};
    *len = 0;
    if (fmt != CB_TOK_CHAT_LLAMA3 && fmt != CB_TOK_CHAT_CHATML)
        return cb_error_set(err, CB_EINVAL, "chat template: unknown format %d", (int)fmt);
    if (fmt == CB_TOK_CHAT_LLAMA3)
        puts_(&b, "<|begin_of_text|>");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return cb_error_set(err, CB_EINVAL, "chat template: message %zu has no role or content",
                                i);
        const char *c = msgs[i].content;
        size_t cl = strlen(c);
        if (fmt == CB_TOK_CHAT_LLAMA3) {
            while (cl && (*c == ' ' || (*c >= '\t' && *c <= '\r')))
                c++, cl--;
            while (cl && (c[cl - 1] == ' ' || (c[cl - 1] >= '\t' && c[cl - 1] <= '\r')))
                cl--;
            puts_(&b, "<|start_header_id|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "<|end_header_id|>\n\n");
            put(&b, c, cl);
            puts_(&b, "<|eot_id|>");
        } else {
            puts_(&b, "<|im_start|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "\n");
            put(&b, c, cl);
            puts_(&b, "<|im_end|>\n");
        }
    }
    if (add_generation_prompt)
        puts_(&b, fmt == CB_TOK_CHAT_LLAMA3 ? "<|start_header_id|>assistant<|end_header_id|>\n\n"
                                            : "<|im_start|>assistant\n");
    *len = b.n;
    if (b.n > cap || (!out && b.n))
        return cb_error_set(err, CB_EFULL, "chat template: %zu bytes do not fit in %zu", b.n, cap);
    return 0;
}
