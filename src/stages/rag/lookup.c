/* stages/rag/lookup.c - the document store as stages: rag.lookup (passages by id), rag.keyword
 * (BM25 retrieval) and rag.fuse (hybrid retrieval: the hits of several retrievers merged).
 *
 * Store: `store` names a colobench RAG store (an SQLite file made by `colobench rag ingest`),
 * opened read-only; or `corpus` names a corpus (a .jsonl/.txt file or a folder, rag/store.h),
 * ingested at prepare into a private in-memory store (untimed; its size and time are logged):
 * the pipeline then needs no file made beforehand. Each instance opens its own connection.
 *
 * rag.lookup writes the text of each hit (the first max_passages; 0 = all) into the item's
 * passages, each cut to max_passage_bytes at a UTF-8 boundary. A hit whose id is not in the
 * store: `on_missing: fail` (default) fails the query (CB_RUN_FAILED, logged, the pipeline goes
 * on), `skip` drops the hit, `error` stops the pipeline. Metrics: passages (COUNT), bytes
 * (COUNT).
 *
 * rag.keyword searches the item's query (its question when there is no rewrite) with FTS5's
 * BM25 and writes the top k as hits (source keyword, score -bm25). Metric: hit (GAUGE 1/0: the
 * item's known answer passage is among them; only for items with one).
 *
 * rag.fuse comes after a `polling_policy: merge` join of retriever branches: every part of the
 * query is an item with hits; they are merged by id with reciprocal rank fusion (score = sum over
 * lists of 1 / (rrf_k + rank + 1), method rrf) or with a weighted sum of each list's min-max
 * normalised scores (method weighted, one weight per part in merge order), and the top k become
 * the hits of one item (source fused; the other regions from part 0). Metric: hit.
 *
 * Thread-safety: one instance per worker; one connection each. Ownership: the instance owns its
 * store and scratch; the query's payload is replaced (the old one released); rag.fuse drops the
 * merged parts once joined.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/stage.h"
#include "core/clock.h"
#include "rag/item.h"
#include "rag/store.h"
#include "stages/rag/promptbuild.h"
#include "stages/util/util.h"

static void rlog(const cb_host *h, int level, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void rlog(const cb_host *h, int level, const char *stage, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h->log(level, stage, msg);
}

static void report(const cb_host *h, cb_run_ctx *ctx, int metric, double value) {
    if (h->struct_size >= offsetof(cb_host, report) + sizeof h->report && h->report)
        h->report(ctx, metric, value);
}

/* ---- the store parameters (first in the lookup and keyword tables) --------------------------- */

enum { S_STORE, S_CORPUS, S_COUNT };
#define STORE_PARAMS                                                                         \
    [S_STORE] = {"store", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",                   \
                 "a colobench RAG store (SQLite, made by `colobench rag ingest`), read-only"},  \
    [S_CORPUS] = {"corpus", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file|dir",             \
                  "or a corpus (.jsonl / .txt file or folder) loaded at prepare into memory"}

static int store_check(const cb_param_value *v, cb_error *err) {
    if (!v[S_STORE].has_value && !v[S_CORPUS].has_value)
        return cb_util_error(err, CB_ECONFIG, "store: is required (a colobench RAG store; or give "
                             "corpus, a corpus file or folder)");
    if (v[S_STORE].has_value && v[S_CORPUS].has_value)
        return cb_util_error(err, CB_ECONFIG, "store: give store or corpus, not both");
    return CB_OK;
}

static int store_open(const cb_param_value *v, const cb_host *h, const char *stage, int worker,
                      cb_rag_store **out, cb_error *err) {
    cb_error e;
    cb_error_clear(&e);
    int rc;
    if (v[S_STORE].has_value) {
        rc = cb_rag_store_open(v[S_STORE].s, 0, out, &e);
        if (rc) return cb_util_error(err, rc, "store: %s", e.msg);
        return CB_OK;
    }
    int64_t t0 = cb_clock_now_ns();
    rc = cb_rag_store_open(":memory:", 1, out, &e);
    cb_rag_ingest_stats st = {0, 0, 0, 0};
    if (!rc) rc = cb_rag_store_ingest(*out, v[S_CORPUS].s, NULL, &st, &e);
    if (rc) {
        cb_rag_store_close(*out);
        *out = NULL;
        return cb_util_error(err, rc, "corpus: %s", e.msg);
    }
    if (worker == 0)
        rlog(h, CB_LOG_INFO, stage, "corpus %s: %lld passages (%lld bytes) from %lld files in "
             "%.2f s", v[S_CORPUS].s, (long long)st.passages, (long long)st.bytes,
             (long long)st.files, (double)(cb_clock_now_ns() - t0) / 1e9);
    return CB_OK;
}

static int view_item(const cb_query *q, cb_rag_view *it, cb_error *err) {
    char why[160];
    if (cb_rag_item_view(q->payload, it, why, sizeof why))
        return cb_util_error(err, CB_EINVAL, "query %llu: %s", (unsigned long long)q->id, why);
    return CB_OK;
}

/* Replaces q's payload with a new item built from v. */
static int replace(const cb_host *h, cb_query *q, const cb_rag_view *v, cb_error *err) {
    cb_buffer *nb = cb_rag_item_build(h, v);
    if (!nb) return cb_util_error(err, CB_ENOMEM, "out of memory for the item");
    cb_rag_item_replace(h, q, nb);
    return CB_OK;
}

/* 1 when the item's known answer is among hits, 0 when not, -1 when it has none. */
static int answer_hit(const cb_rag_view *it, const cb_rag_hit *hits, uint32_t n) {
    if (it->answer_id < 0) return -1;
    for (uint32_t i = 0; i < n; i++)
        if (hits[i].id == it->answer_id) return 1;
    return 0;
}

/* ---- rag.lookup ------------------------------------------------------------------------------ */

enum { L_MAX_PASSAGES = S_COUNT, L_MAX_BYTES, L_ON_MISSING, L_COUNT };
enum { MISS_FAIL, MISS_SKIP, MISS_ERROR };

static const cb_param_def lookup_params[L_COUNT] = {
    STORE_PARAMS,
    [L_MAX_PASSAGES] = {"max_passages", CB_PARAM_INT, "0", 0, CB_RAG_MAX_HITS, NULL,
                        "hits looked up, by rank (0 = every hit; the others are dropped)"},
    [L_MAX_BYTES] = {"max_passage_bytes", CB_PARAM_INT, "65536", 16, CB_RAG_PASSAGE_MAX_BYTES,
                     NULL, "each passage cut to at most this many bytes (at a UTF-8 boundary)"},
    [L_ON_MISSING] = {"on_missing", CB_PARAM_ENUM, "fail", CB_PARAM_UNBOUNDED, "fail|skip|error",
                      "a hit not in the store: fail the query, skip the hit, or stop the run"},
};

enum { LM_PASSAGES, LM_BYTES, LM_COUNT };
static const cb_metric_def lookup_metrics[LM_COUNT] = {
    [LM_PASSAGES] = {"passages", CB_METRIC_COUNT, "passages", "passages looked up"},
    [LM_BYTES] = {"bytes", CB_METRIC_COUNT, "bytes", "passage text written into the item"},
};

typedef struct lookup_state {
    const cb_host *host;
    const cb_param_value *v;
    const char *name;
    int worker, on_missing;
    uint32_t max_passages;
    size_t max_bytes;
    cb_rag_store *store;
    char *text;
    size_t text_cap;
    cb_rag_hit *hits;
    size_t hits_cap;
} lookup_state;

static int lookup_check(const cb_stage_args *args, cb_error *err) {
    return store_check(args->values, err);
}

static int lookup_create(void *state, const cb_stage_args *args, cb_error *err) {
    lookup_state *s = state;
    int rc = lookup_check(args, err);
    if (rc) return rc;
    s->host = args->host;
    s->v = args->values;
    s->name = args->stage;
    s->worker = args->worker;
    s->max_passages = (uint32_t)args->values[L_MAX_PASSAGES].i;
    s->max_bytes = (size_t)args->values[L_MAX_BYTES].i;
    s->on_missing = (int)args->values[L_ON_MISSING].i;
    return CB_OK;
}

static int lookup_prepare(void *state, cb_error *err) {
    lookup_state *s = state;
    return store_open(s->v, s->host, s->name, s->worker, &s->store, err);
}

/* n bytes of t cut to at most max at a UTF-8 boundary. */
static size_t utf8_cut(const char *t, size_t n, size_t max) {
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)t[max] & 0xC0) == 0x80) max--;
    return max;
}

static int lookup_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    lookup_state *s = state;
    const cb_host *h = s->host;
    cb_rag_view it;
    int rc = view_item(q, &it, err);
    if (rc) return rc;
    uint32_t n = it.n_hits;
    if (s->max_passages && n > s->max_passages) n = s->max_passages;
    if (cb_rag_grow(h, (void **)&s->hits, &s->hits_cap, n ? n : 1, sizeof *s->hits,
                    CB_RAG_MAX_HITS))
        return cb_util_error(err, CB_ENOMEM, "out of memory");
    size_t len = 0;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *t = NULL;
        size_t tn = 0;
        cb_error e;
        cb_error_clear(&e);
        rc = cb_rag_store_get(s->store, it.hits[i].id, &t, &tn, &e);
        if (rc == CB_ENOENT && s->on_missing != MISS_ERROR) {
            if (s->on_missing == MISS_SKIP) continue;
            rlog(h, CB_LOG_WARN, s->name, "question %lld: %s: the query fails",
                 (long long)it.index, e.msg);
            return CB_RUN_FAILED;
        }
        if (rc) return cb_util_error(err, rc, "%s", e.msg);
        tn = utf8_cut(t, tn, s->max_bytes);
        if (len + tn > CB_RAG_MAX_TEXT_BYTES) break;
        if (cb_rag_grow(h, (void **)&s->text, &s->text_cap, len + tn + 1, 1,
                        CB_RAG_MAX_TEXT_BYTES + 1))
            return cb_util_error(err, CB_ENOMEM, "out of memory for passages");
        memcpy(s->text + len, t, tn);
        s->hits[kept] = it.hits[i];
        s->hits[kept].text_off = (uint32_t)len;
        s->hits[kept].text_bytes = (uint32_t)tn;
        kept++;
        len += tn;
    }
    cb_rag_view nv = it;
    nv.hits = s->hits;
    nv.n_hits = kept;
    nv.passages = s->text ? s->text : "";
    nv.passages_bytes = len;
    rc = replace(h, q, &nv, err);
    if (rc) return rc;
    report(h, ctx, LM_PASSAGES, kept);
    report(h, ctx, LM_BYTES, (double)len);
    return CB_OK;
}

static void lookup_destroy(void *state) {
    lookup_state *s = state;
    cb_rag_store_close(s->store);
    if (s->host) {
        s->host->free(s->text);
        s->host->free(s->hits);
    }
}

const cb_stage_ops cb_stage_rag_lookup = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.lookup",
    .summary = "the texts of the retrieved passages, by id, from the SQLite document store",
    .params = lookup_params,
    .n_params = L_COUNT,
    .state_size = sizeof(lookup_state),
    .create = lookup_create,
    .prepare = lookup_prepare,
    .run = lookup_run,
    .destroy = lookup_destroy,
    .metrics = lookup_metrics,
    .n_metrics = LM_COUNT,
    .check = lookup_check,
};

/* ---- rag.keyword ----------------------------------------------------------------------------- */

enum { K_K = S_COUNT, K_COUNT };

static const cb_param_def keyword_params[K_COUNT] = {
    STORE_PARAMS,
    [K_K] = {"k", CB_PARAM_INT, "10", 1, CB_RAG_MAX_HITS, NULL, "passages retrieved"},
};

enum { KM_HIT, KM_HITS, KM_COUNT };
static const cb_metric_def keyword_metrics[KM_COUNT] = {
    [KM_HIT] = {"hit", CB_METRIC_GAUGE, "ratio",
                "1 when the question's known answer passage is in the top k, else 0"},
    [KM_HITS] = {"hits", CB_METRIC_GAUGE, "passages", "passages retrieved"},
};

typedef struct keyword_state {
    const cb_host *host;
    const cb_param_value *v;
    const char *name;
    int worker, k;
    cb_rag_store *store;
    cb_rag_hit *hits;
} keyword_state;

static int keyword_check(const cb_stage_args *args, cb_error *err) {
    return store_check(args->values, err);
}

static int keyword_create(void *state, const cb_stage_args *args, cb_error *err) {
    keyword_state *s = state;
    int rc = keyword_check(args, err);
    if (rc) return rc;
    s->host = args->host;
    s->v = args->values;
    s->name = args->stage;
    s->worker = args->worker;
    s->k = (int)args->values[K_K].i;
    return CB_OK;
}

static int keyword_prepare(void *state, cb_error *err) {
    keyword_state *s = state;
    s->hits = s->host->alloc(sizeof *s->hits * (size_t)s->k);
    if (!s->hits) return cb_util_error(err, CB_ENOMEM, "out of memory");
    return store_open(s->v, s->host, s->name, s->worker, &s->store, err);
}

static int keyword_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    keyword_state *s = state;
    const cb_host *h = s->host;
    cb_rag_view it;
    int rc = view_item(q, &it, err);
    if (rc) return rc;
    const char *query = it.query_bytes ? it.query : it.question;
    size_t qn = it.query_bytes ? it.query_bytes : it.question_bytes;
    int n = 0;
    cb_error e;
    cb_error_clear(&e);
    rc = cb_rag_store_search(s->store, query, qn, s->k, s->hits, &n, &e);
    if (rc) return cb_util_error(err, rc, "%s", e.msg);
    cb_rag_view nv = it;
    nv.hits = s->hits;
    nv.n_hits = (uint32_t)n;
    nv.passages = "", nv.passages_bytes = 0;
    rc = replace(h, q, &nv, err);
    if (rc) return rc;
    int hit = answer_hit(&it, s->hits, (uint32_t)n);
    if (hit >= 0) report(h, ctx, KM_HIT, hit);
    report(h, ctx, KM_HITS, n);
    return CB_OK;
}

static void keyword_destroy(void *state) {
    keyword_state *s = state;
    cb_rag_store_close(s->store);
    if (s->host) s->host->free(s->hits);
}

const cb_stage_ops cb_stage_rag_keyword = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.keyword",
    .summary = "keyword retrieval: BM25 over the SQLite document store (FTS5)",
    .params = keyword_params,
    .n_params = K_COUNT,
    .state_size = sizeof(keyword_state),
    .create = keyword_create,
    .prepare = keyword_prepare,
    .run = keyword_run,
    .destroy = keyword_destroy,
    .metrics = keyword_metrics,
    .n_metrics = KM_COUNT,
    .check = keyword_check,
};

/* ---- rag.fuse -------------------------------------------------------------------------------- */

enum { F_METHOD, F_K, F_RRF_K, F_WEIGHTS, F_COUNT };
enum { FUSE_RRF, FUSE_WEIGHTED };

static const cb_param_def fuse_params[F_COUNT] = {
    [F_METHOD] = {"method", CB_PARAM_ENUM, "rrf", CB_PARAM_UNBOUNDED, "rrf|weighted",
                  "rrf: reciprocal rank fusion; weighted: weighted sum of min-max normalised "
                  "scores"},
    [F_K] = {"k", CB_PARAM_INT, "10", 1, CB_RAG_MAX_HITS, NULL, "hits kept"},
    [F_RRF_K] = {"rrf_k", CB_PARAM_FLOAT, "60", 0, 1e9, NULL,
                 "rrf: the constant k of 1 / (k + rank)"},
    [F_WEIGHTS] = {"weights", CB_PARAM_FLOAT_LIST, "[]", 0, 1e300, NULL,
                   "weight of each merged part, in merge order (empty = 1 each)"},
};

typedef struct fuse_state {
    const cb_host *host;
    int method, k;
    double rrf_k;
    const cb_param_value *weights;
} fuse_state;

static int fuse_create(void *state, const cb_stage_args *args, cb_error *err) {
    fuse_state *s = state;
    (void)err;
    s->host = args->host;
    s->method = (int)args->values[F_METHOD].i;
    s->k = (int)args->values[F_K].i;
    s->rrf_k = args->values[F_RRF_K].f;
    s->weights = &args->values[F_WEIGHTS];
    return CB_OK;
}

static int cmp_hit(const void *a, const void *b) {
    const cb_rag_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int fuse_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    fuse_state *s = state;
    const cb_host *h = s->host;
    (void)ctx;
    if (q->nparts < 2)
        return cb_util_error(err, CB_EINVAL, "query %llu: rag.fuse merges the hits of several "
                             "retrievers: give it `polling_policy: merge` and their branches as "
                             "inputs (it got %d part)", (unsigned long long)q->id, q->nparts);
    if (s->weights->n && s->weights->n != (size_t)q->nparts)
        return cb_util_error(err, CB_ECONFIG, "weights: %zu weights for %d merged parts",
                             s->weights->n, q->nparts);
    cb_rag_view parts[CB_QUERY_MAX_PARTS];
    size_t total = 0;
    for (int p = 0; p < q->nparts; p++) {
        char why[160];
        if (cb_rag_item_view(q->parts[p], &parts[p], why, sizeof why))
            return cb_util_error(err, CB_EINVAL, "query %llu: part %d: %s",
                                 (unsigned long long)q->id, p, why);
        total += parts[p].n_hits;
    }
    cb_rag_hit *all = h->alloc(sizeof *all * (total ? total : 1));
    if (!all) return cb_util_error(err, CB_ENOMEM, "out of memory");
    size_t n = 0;
    for (int p = 0; p < q->nparts; p++) {
        const cb_rag_view *v = &parts[p];
        double w = s->weights->n ? s->weights->floats[p] : 1.0;
        float lo = 0, hi = 0;
        for (uint32_t i = 0; i < v->n_hits; i++) {
            if (!i || v->hits[i].score < lo) lo = v->hits[i].score;
            if (!i || v->hits[i].score > hi) hi = v->hits[i].score;
        }
        for (uint32_t i = 0; i < v->n_hits; i++) {
            double add = s->method == FUSE_RRF
                             ? w / (s->rrf_k + (double)v->hits[i].rank + 1.0)
                             : w * (hi > lo ? (double)(v->hits[i].score - lo) / (hi - lo) : 1.0);
            size_t j = 0;
            while (j < n && all[j].id != v->hits[i].id) j++;
            if (j == n) {
                all[n] = (cb_rag_hit){.id = v->hits[i].id, .source = CB_RAG_SRC_FUSED};
                n++;
            }
            all[j].score = (float)((double)all[j].score + add);
        }
    }
    qsort(all, n, sizeof *all, cmp_hit);
    if (n > (size_t)s->k) n = (size_t)s->k;
    for (size_t i = 0; i < n; i++) all[i].rank = (uint32_t)i;
    cb_rag_view nv = parts[0];
    nv.hits = all;
    nv.n_hits = (uint32_t)n;
    nv.passages = "", nv.passages_bytes = 0;
    cb_buffer *nb = cb_rag_item_build(h, &nv);
    int hit = answer_hit(&parts[0], all, (uint32_t)n);
    h->free(all);
    if (!nb) return cb_util_error(err, CB_ENOMEM, "out of memory for the item");
    for (int p = 0; p < q->nparts; p++) {
        h->buffer_unref(q->parts[p]);
        q->parts[p] = NULL;
    }
    q->nparts = 0;
    cb_rag_item_replace(h, q, nb);
    if (hit >= 0) report(h, ctx, 0, hit);
    return CB_OK;
}

static const cb_metric_def fuse_metrics[1] = {
    {"hit", CB_METRIC_GAUGE, "ratio",
     "1 when the question's known answer passage is in the fused top k, else 0"},
};

const cb_stage_ops cb_stage_rag_fuse = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.fuse",
    .summary = "hybrid retrieval: merges several retrievers' hits (reciprocal rank fusion or "
               "weighted scores)",
    .params = fuse_params,
    .n_params = F_COUNT,
    .state_size = sizeof(fuse_state),
    .create = fuse_create,
    .run = fuse_run,
    .metrics = fuse_metrics,
    .n_metrics = 1,
};
