/* rag/corpus.c - the synthetic RAG corpus and its questions (corpus.h). */
#include "rag/corpus.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"

static const char *const k_syl[64] = {
    "ba", "be", "bi", "bo", "da", "de", "di", "do", "fa", "fe", "fi", "fo", "ga", "ge", "gi",
    "go", "ka", "ke", "ki", "ko", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne",
    "ni", "no", "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta",
    "te", "ti", "to", "va", "ve", "vi", "vo", "za", "ze", "zi", "zo", "qua", "tor", "vel", "mar",
    "dun", "kel", "rin", "thas"};

static const char *const k_known[16] = {
    "glassworks", "copper bells", "salt marshes", "silk weavers", "clock towers",
    "olive groves", "stone bridges", "paper mills", "horse fairs", "lantern festival",
    "iron foundries", "honey cakes", "river ferries", "wool markets", "observatory",
    "rope makers"};
static const char *const k_near[8] = {"northern", "eastern", "southern", "western",
                                      "misty", "red", "granite", "pine"};
static const char *const k_people[8] = {"fishermen", "monks", "miners", "traders",
                                        "shepherds", "potters", "sailors", "weavers"};
static const char *const k_filler[16] = {
    "The weather there is mild for most of the year.",
    "Visitors often arrive by the old coastal road.",
    "Its streets are narrow and paved with grey stone.",
    "Local records were kept in a small library by the square.",
    "Several families have lived there for generations.",
    "The surrounding fields are used for barley and oats.",
    "A weekly market brings people from nearby villages.",
    "The main church was rebuilt after a fire.",
    "Children attend a school near the central fountain.",
    "Winters can be long, with heavy snow in the hills.",
    "Travellers describe the inns as quiet and clean.",
    "A narrow railway line reached the area much later.",
    "Many houses have red tiled roofs and wooden shutters.",
    "The local dialect differs slightly from the region's.",
    "Festivals are held in spring and at the harvest.",
    "Most people work in small workshops or on farms."};

/* The entity's name: id's 24 bits through a bijection of [0, 2^24) (odd multipliers and an
 * xor-shift, so names of neighbouring ids look unrelated and never repeat), as 4 syllables. */
static size_t entity(int64_t id, char *out) {
    uint32_t x = (uint32_t)id & 0xFFFFFFu;
    x = (x * 0x9E3779u + 0x5BD1E9u) & 0xFFFFFFu; /* 0x9E3779 is odd */
    x ^= x >> 11;
    x = (x * 0x2C1B3Du) & 0xFFFFFFu;             /* odd */
    size_t n = 0;
    for (int k = 0; k < 4; k++) {
        const char *s = k_syl[(x >> (6 * k)) & 63];
        size_t l = strlen(s);
        memcpy(out + n, s, l);
        n += l;
    }
    out[0] = (char)(out[0] - 'a' + 'A');
    out[n] = 0;
    return n;
}

const char *cb_rag_corpus_check(const cb_rag_corpus_opts *o) {
    if (o->passages < 1 || o->passages > CB_RAG_CORPUS_MAX_PASSAGES)
        return "passages: must be in [1, 16777216]";
    if (!(o->mean_words > 0) || o->mean_words > CB_RAG_CORPUS_MAX_WORDS)
        return "mean_words: must be in (0, 4096]";
    if (!(o->spread >= 0) || o->spread > 10) return "spread: must be in [0, 10]";
    if (o->min_words < 1 || o->max_words > CB_RAG_CORPUS_MAX_WORDS || o->min_words > o->max_words)
        return "min_words: need 1 <= min_words <= max_words <= 4096";
    if (o->length_dist < CB_RAG_LEN_FIXED || o->length_dist > CB_RAG_LEN_LOGNORMAL)
        return "length_dist: unknown";
    return "";
}

static int draw_words(const cb_rag_corpus_opts *o, cb_rng *r) {
    double m = o->mean_words, w = m;
    switch (o->length_dist) {
    case CB_RAG_LEN_UNIFORM: w = m * (1 - o->spread + 2 * o->spread * cb_rng_uniform(r)); break;
    case CB_RAG_LEN_NORMAL: w = m + o->spread * m * cb_rng_normal(r); break;
    case CB_RAG_LEN_LOGNORMAL: w = m * exp(o->spread * cb_rng_normal(r)); break;
    default: break;
    }
    long n = lround(w);
    if (n < o->min_words) n = o->min_words;
    if (n > o->max_words) n = o->max_words;
    return (int)n;
}

/* Appends a sentence's words to buf while words < max; the words put in. */
static int put_words(char *buf, size_t *len, const char *s, int words, int max) {
    const char *p = s;
    while (*p && words < max) {
        while (*p == ' ') p++;
        const char *a = p;
        while (*p && *p != ' ') p++;
        if (p == a) break;
        if (*len) buf[(*len)++] = ' ';
        memcpy(buf + *len, a, (size_t)(p - a));
        *len += (size_t)(p - a);
        words++;
    }
    return words;
}

size_t cb_rag_corpus_passage(const cb_rag_corpus_opts *o, int64_t id, char *buf, size_t cap,
                             char *title) {
    char name[32], fact[256];
    entity(id, name);
    if (title) snprintf(title, CB_RAG_CORPUS_TITLE_CAP, "%s", name);
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull ^ o->seed;
    cb_rng r;
    cb_rng_seed(&r, h);
    const char *known = k_known[cb_rng_u64(&r) % 16];
    const char *near = k_near[cb_rng_u64(&r) % 8];
    const char *people = k_people[cb_rng_u64(&r) % 8];
    int year = 1200 + (int)(cb_rng_u64(&r) % 700), council = 3 + (int)(cb_rng_u64(&r) % 20);
    switch (id % 4) {
    case 0:
        snprintf(fact, sizeof fact, "%s is a river town known for its %s.", name, known);
        break;
    case 1:
        snprintf(fact, sizeof fact, "%s lies near the %s hills and is known for its %s.", name,
                 near, known);
        break;
    case 2:
        snprintf(fact, sizeof fact, "%s was founded in %d by %s and is known for its %s.", name,
                 year, people, known);
        break;
    default:
        snprintf(fact, sizeof fact, "%s is led by a council of %d elders and is known for its "
                 "%s.", name, council, known);
        break;
    }
    int max = draw_words(o, &r);
    size_t len = 0;
    if (cap < CB_RAG_CORPUS_PASSAGE_CAP(o->max_words)) return 0;
    int words = put_words(buf, &len, fact, 0, max < 8 ? 8 : max);
    for (int f = (int)(cb_rng_u64(&r) % 16); words < max; f = (f + 7) % 16)
        words = put_words(buf, &len, k_filler[f], words, max);
    buf[len] = 0;
    return len;
}

size_t cb_rag_corpus_question(const cb_rag_corpus_opts *o, int64_t i, char *buf, size_t cap,
                              int64_t *answer_id) {
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + o->seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    int64_t a = (int64_t)(x % (uint64_t)o->passages);
    *answer_id = a;
    char name[32];
    entity(a, name);
    static const char *const k_q[4] = {"What is %s known for?", "What is the town of %s known for?",
                                       "Which craft or trade is %s known for?",
                                       "Tell me what %s is famous for."};
    int n = snprintf(buf, cap, k_q[(x >> 40) % 4], name);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t cb_rag_json_string(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    if (cap < 6 * n + 3) return 0;
    out[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c == '\n') {
            out[k++] = '\\', out[k++] = 'n';
        } else if (c == '\t') {
            out[k++] = '\\', out[k++] = 't';
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, cap - k, "\\u%04x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k++] = '"';
    out[k] = 0;
    return k;
}
