/* stages/rag/rewrite.c - rag.rewrite: a new query for another round of retrieval.
 *
 * What: self-RAG sends a question whose passages were graded irrelevant, or whose answer was
 * not supported or not useful, back to retrieval with a rewritten query. This stage rewrites
 * without a model: `keywords` keeps the question's content words (stop words and question words
 * dropped, each word once, in order), the query a search engine would be given; `expand` appends
 * the titles-free first words of the best remaining passage to the question (pseudo-relevance
 * feedback). An LLM rewrite is expressed with the LLM stages instead: rag.prompt with a rewrite
 * template -> llm.generate -> rag.answer with `into: query`. The rewrites count of the item goes
 * up by one; embedding, hits, passages and answer are cleared (the next round makes them anew).
 *
 * Thread-safety: one instance per worker, no state but a scratch buffer. Ownership: the query's
 * payload is replaced (the old one released).
 */
#include <ctype.h>
#include <string.h>

#include "colobench/stage.h"
#include "rag/item.h"
#include "stages/util/util.h"

enum { W_METHOD, W_EXPAND_WORDS, W_COUNT };
enum { M_KEYWORDS, M_EXPAND };

static const cb_param_def rewrite_params[W_COUNT] = {
    [W_METHOD] = {"method", CB_PARAM_ENUM, "keywords", CB_PARAM_UNBOUNDED, "keywords|expand",
                  "keywords: the question's content words; expand: the question plus the first "
                  "words of the best passage"},
    [W_EXPAND_WORDS] = {"expand_words", CB_PARAM_INT, "16", 1, 1024, NULL,
                        "expand: words taken from the best passage"},
};

typedef struct rewrite_state {
    const cb_host *host;
    int method, expand_words;
    char *buf;
    size_t cap;
} rewrite_state;

static const char *const k_stop[] = {
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "did", "do", "does", "for", "from",
    "has", "have", "how", "in", "is", "it", "its", "known", "of", "on", "or", "tell", "that",
    "the", "their", "this", "to", "was", "were", "what", "when", "where", "which", "who", "whom",
    "whose", "why", "with", "me", "about", "please"};

static int is_stop(const char *w, size_t n) {
    char low[16];
    if (n >= sizeof low) return 0;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)w[i]);
    low[n] = 0;
    for (size_t i = 0; i < sizeof k_stop / sizeof k_stop[0]; i++)
        if (!strcmp(low, k_stop[i])) return 1;
    return 0;
}

static int rewrite_create(void *state, const cb_stage_args *args, cb_error *err) {
    rewrite_state *s = state;
    (void)err;
    s->host = args->host;
    s->method = (int)args->values[W_METHOD].i;
    s->expand_words = (int)args->values[W_EXPAND_WORDS].i;
    return CB_OK;
}

/* Appends the words of text[0..n) to s->buf at *len (keywords: content words not seen yet;
 * else the first max words). */
static void put_words(rewrite_state *s, size_t *len, const char *t, size_t n, int keywords,
                      int max) {
    size_t i = 0;
    int taken = 0;
    while (i < n && taken < max) {
        while (i < n && !isalnum((unsigned char)t[i]) && !((unsigned char)t[i] & 0x80)) i++;
        size_t a = i;
        while (i < n && (isalnum((unsigned char)t[i]) || ((unsigned char)t[i] & 0x80) ||
                         t[i] == '\'' || t[i] == '-'))
            i++;
        size_t wl = i - a;
        if (!wl) continue;
        if (keywords) {
            if (is_stop(t + a, wl)) continue;
            int seen = 0; /* each word once */
            for (size_t p = 0; p + wl <= *len && !seen; p++)
                seen = (p == 0 || s->buf[p - 1] == ' ') && !strncmp(s->buf + p, t + a, wl) &&
                       (p + wl == *len || s->buf[p + wl] == ' ');
            if (seen) continue;
        }
        if (*len) s->buf[(*len)++] = ' ';
        memcpy(s->buf + *len, t + a, wl);
        *len += wl;
        taken++;
    }
}

static int rewrite_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    rewrite_state *s = state;
    const cb_host *h = s->host;
    (void)ctx;
    cb_rag_view it;
    char why[160];
    if (cb_rag_item_view(q->payload, &it, why, sizeof why))
        return cb_util_error(err, CB_EINVAL, "query %llu: %s", (unsigned long long)q->id, why);
    size_t best_n = it.n_hits ? it.hits[0].text_bytes : 0;
    size_t need = it.question_bytes + best_n + 2;
    if (need > s->cap) {
        char *p = h->alloc(need);
        if (!p) return cb_util_error(err, CB_ENOMEM, "out of memory for the rewrite");
        h->free(s->buf);
        s->buf = p;
        s->cap = need;
    }
    size_t len = 0;
    if (s->method == M_KEYWORDS) {
        put_words(s, &len, it.question, it.question_bytes, 1, 1 << 30);
        if (!len) { /* nothing but stop words: keep the question */
            memcpy(s->buf, it.question, it.question_bytes);
            len = it.question_bytes;
        }
    } else {
        memcpy(s->buf, it.question, it.question_bytes);
        len = it.question_bytes;
        if (it.n_hits)
            put_words(s, &len, it.passages + it.hits[0].text_off, it.hits[0].text_bytes, 0,
                      s->expand_words);
    }
    cb_rag_view nv = {.index = it.index, .answer_id = it.answer_id, .rewrites = it.rewrites + 1,
                      .grade = CB_RAG_GRADE_NONE, .question = it.question,
                      .question_bytes = it.question_bytes, .query = s->buf, .query_bytes = len};
    cb_buffer *nb = cb_rag_item_build(h, &nv);
    if (!nb) return cb_util_error(err, CB_ENOMEM, "out of memory for the item");
    cb_rag_item_replace(h, q, nb);
    return CB_OK;
}

static void rewrite_destroy(void *state) {
    rewrite_state *s = state;
    if (s->host) s->host->free(s->buf);
}

const cb_stage_ops cb_stage_rag_rewrite = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.rewrite",
    .summary = "a rewritten query for another round of retrieval (self-RAG's retry loop)",
    .params = rewrite_params,
    .n_params = W_COUNT,
    .state_size = sizeof(rewrite_state),
    .create = rewrite_create,
    .run = rewrite_run,
    .destroy = rewrite_destroy,
};
