/* stages/rag/retrieve.c - rag.retrieve: vector search on FAISS (rag/vindex.h) for the queries
 * that are waiting, in one batched search.
 *
 * The index is built at prepare (untimed; what was built and how long it took is logged) or
 * loaded:
 *   - `vectors: random`: n synthetic unit vectors of dim floats (seeded), ids 0..n-1: an index
 *     scan to benchmark without text;
 *   - `store` (a colobench RAG store) or `corpus` (a corpus file or folder, loaded into memory):
 *     every passage embedded with the encoder of rag/encoder.h (model, model_dir, threads,
 *     max_tokens as in rag.embed; model_dir auto = the real all-MiniLM-L6-v2 when installed), in
 *     batches of 64, ids the passage ids;
 *   - `index_file`: a FAISS index written before (`save_index` writes the one built, e.g. into the
 *     output directory for the next run).
 * `index` picks flat, ivf (nlist lists, trained on the vectors; nprobe searched) or hnsw (hnsw_m
 * links, ef_construction; ef_search searched); `factory` gives any FAISS index_factory string
 * instead. metric ip (inner product: cosine for normalised embeddings) or l2.
 *
 * run() holds each query (stage.h, held queries); step() searches every held query's embedding
 * in one call (at most max_batch) and completes them with the top k as hits (id, score, source
 * vector, rank; passages left for rag.lookup). An item without an embedding, or with one of
 * another dimension than the index's, stops the run with both numbers: the encoder and the index
 * do not match, a configuration error.
 *
 * Metrics: hit (GAUGE 1/0: the item's known answer passage is in the top k; items with one),
 * batch (GAUGE: queries searched together), recall (GAUGE, with check_recall: the share of the
 * exact top k that the index returned, against a flat index over the same vectors searched in the
 * same step; for approximate indexes). At prepare, approximate indexes also estimate recall@k on
 * recall_queries noisy corpus vectors (logged).
 *
 * Thread-safety: one instance per worker, each with its own index (FAISS' OpenMP threads inside a
 * search: `threads`). Ownership: the instance owns its indexes and buffers (destroy).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/stage.h"
#include "core/clock.h"
#include "core/rng.h"
#include "rag/encoder.h"
#include "rag/item.h"
#include "rag/store.h"
#include "rag/vindex.h"
#include "stages/rag/promptbuild.h"
#include "stages/rag/held.h"
#include "stages/util/util.h"

enum {
    V_VECTORS,
    V_N,
    V_DIM,
    V_STORE,
    V_CORPUS,
    V_INDEX_FILE,
    V_SAVE_INDEX,
    V_INDEX,
    V_FACTORY,
    V_METRIC,
    V_K,
    V_NLIST,
    V_NPROBE,
    V_HNSW_M,
    V_EF_CONSTRUCTION,
    V_EF_SEARCH,
    V_MODEL,
    V_MODEL_DIR,
    V_MAX_TOKENS,
    V_THREADS,
    V_MAX_BATCH,
    V_CHECK_RECALL,
    V_RECALL_QUERIES,
    V_SEED,
    V_COUNT
};
enum { IX_FLAT, IX_IVF, IX_HNSW };

static const cb_param_def retrieve_params[V_COUNT] = {
    [V_VECTORS] = {"vectors", CB_PARAM_ENUM, "none", CB_PARAM_UNBOUNDED, "none|random",
                   "random: n synthetic unit vectors of dim floats (no text)"},
    [V_N] = {"n", CB_PARAM_INT, "100000", 1, 1e9, NULL, "vectors: random: how many"},
    [V_DIM] = {"dim", CB_PARAM_INT, "384", 1, CB_VINDEX_MAX_DIM, NULL,
               "vectors: random: floats a vector"},
    [V_STORE] = {"store", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",
                 "a colobench RAG store whose passages are embedded at prepare"},
    [V_CORPUS] = {"corpus", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file|dir",
                  "or a corpus (.jsonl / .txt file or folder) embedded at prepare"},
    [V_INDEX_FILE] = {"index_file", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",
                      "or a FAISS index file (save_index wrote it)"},
    [V_SAVE_INDEX] = {"save_index", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "out",
                      "write the index built at prepare to this file"},
    [V_INDEX] = {"index", CB_PARAM_ENUM, "flat", CB_PARAM_UNBOUNDED, "flat|ivf|hnsw",
                 "flat (exact), ivf (nlist, nprobe) or hnsw (hnsw_m, ef_search)"},
    [V_FACTORY] = {"factory", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                   "a FAISS index_factory string instead of index (\"IVF1024,PQ32\")"},
    [V_METRIC] = {"metric", CB_PARAM_ENUM, "ip", CB_PARAM_UNBOUNDED, "ip|l2",
                  "inner product (cosine on normalised embeddings) or L2"},
    [V_K] = {"k", CB_PARAM_INT, "10", 1, CB_VINDEX_MAX_K, NULL, "passages retrieved"},
    [V_NLIST] = {"nlist", CB_PARAM_INT, "0", 0, 1 << 24, NULL,
                 "ivf: lists (0 = 4 sqrt(vectors), at most vectors / 39)"},
    [V_NPROBE] = {"nprobe", CB_PARAM_INT, "8", 1, 1 << 24, NULL, "ivf: lists searched"},
    [V_HNSW_M] = {"hnsw_m", CB_PARAM_INT, "32", 2, 512, NULL, "hnsw: links a node"},
    [V_EF_CONSTRUCTION] = {"ef_construction", CB_PARAM_INT, "40", 1, 1 << 20, NULL,
                           "hnsw: candidate list when building"},
    [V_EF_SEARCH] = {"ef_search", CB_PARAM_INT, "64", 1, 1 << 20, NULL,
                     "hnsw: candidate list when searching"},
    [V_MODEL] = {"model", CB_PARAM_ENUM, "all-minilm-l6-v2", CB_PARAM_UNBOUNDED,
                 "all-minilm-l6-v2|bge-small-en-v1.5", "store/corpus: the passage encoder"},
    [V_MODEL_DIR] = {"model_dir", CB_PARAM_STRING, "auto", CB_PARAM_UNBOUNDED, NULL,
                     "store/corpus: auto (the real model when installed), random, or a model "
                     "directory"},
    [V_MAX_TOKENS] = {"max_tokens", CB_PARAM_INT, "0", 0, 8192, NULL,
                      "store/corpus: tokens a passage (0 = the model's)"},
    [V_THREADS] = {"threads", CB_PARAM_INT, "1", 1, 1024, NULL,
                   "threads of searches (FAISS, OpenMP) and of the encoder at prepare"},
    [V_MAX_BATCH] = {"max_batch", CB_PARAM_INT, "64", 1, 65536, NULL,
                     "queries searched together at most"},
    [V_CHECK_RECALL] = {"check_recall", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                        "also search a flat index and report each query's recall"},
    [V_RECALL_QUERIES] = {"recall_queries", CB_PARAM_INT, "256", 0, 1e6, NULL,
                          "approximate indexes: queries of the recall estimate at prepare"},
    [V_SEED] = {"seed", CB_PARAM_INT, "1", 0, 9.2e18, NULL, "vectors: random: the seed"},
};

enum { VM_HIT, VM_BATCH, VM_RECALL, VM_COUNT };
static const cb_metric_def retrieve_metrics[VM_COUNT] = {
    [VM_HIT] = {"hit", CB_METRIC_GAUGE, "ratio",
                "1 when the question's known answer passage is in the top k, else 0"},
    [VM_BATCH] = {"batch", CB_METRIC_GAUGE, "queries", "queries searched together"},
    [VM_RECALL] = {"recall", CB_METRIC_GAUGE, "ratio",
                   "check_recall: the share of the exact top k returned"},
};

typedef struct retrieve_state {
    const cb_host *host;
    const cb_param_value *v;
    const char *name;
    int worker, k, max_batch, threads, nprobe, ef_search, check_recall;
    cb_vindex *ix, *exact;
    int dim;
    rag_held hb;
    float *x, *scores, *exact_scores;
    int64_t *ids, *exact_ids;
    cb_rag_hit *hits;
} retrieve_state;

static void rlog(const retrieve_state *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rlog(const retrieve_state *s, int level, const char *fmt, ...) {
    if (s->worker != 0 && level > CB_LOG_WARN) return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->host->log(level, s->name, msg);
}

static int retrieve_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    int sources = (v[V_VECTORS].i != 0) + v[V_STORE].has_value + v[V_CORPUS].has_value +
                  v[V_INDEX_FILE].has_value;
    if (sources == 0)
        return cb_util_error(err, CB_ECONFIG, "vectors: is required (vectors: random; or give "
                             "store, corpus or index_file)");
    if (sources != 1)
        return cb_util_error(err, CB_ECONFIG, "vectors: give one of vectors: random, store, "
                             "corpus and index_file (got %d)", sources);
    if (v[V_INDEX_FILE].has_value && v[V_SAVE_INDEX].has_value)
        return cb_util_error(err, CB_ECONFIG, "save_index: the index is loaded from index_file");
    return CB_OK;
}

static int retrieve_create(void *state, const cb_stage_args *args, cb_error *err) {
    retrieve_state *s = state;
    int rc = retrieve_check(args, err);
    if (rc) return rc;
    const cb_host *h = args->host;
    if (h->struct_size < offsetof(cb_host, arrival_ns) + sizeof h->arrival_ns)
        return cb_util_error(err, CB_EUNSUPPORTED, "rag.retrieve needs a host with held queries");
    const cb_param_value *v = args->values;
    s->host = h;
    s->v = v;
    s->name = args->stage;
    s->worker = args->worker;
    s->k = (int)v[V_K].i;
    s->max_batch = (int)v[V_MAX_BATCH].i;
    s->threads = (int)v[V_THREADS].i;
    s->nprobe = (int)v[V_NPROBE].i;
    s->ef_search = (int)v[V_EF_SEARCH].i;
    s->check_recall = (int)v[V_CHECK_RECALL].i;
    return CB_OK;
}

/* The corpus vectors, grown as they come. */
typedef struct vecs {
    const cb_host *h;
    float *x;
    int64_t *ids;
    int64_t n, cap;
    int dim;
} vecs;

static int vecs_push(vecs *vs, int64_t id, const float *x) {
    if (vs->n == vs->cap) {
        int64_t nc = vs->cap ? vs->cap * 2 : 4096;
        float *nx = vs->h->alloc(sizeof(float) * (size_t)nc * (size_t)vs->dim);
        int64_t *ni = vs->h->alloc(sizeof(int64_t) * (size_t)nc);
        if (!nx || !ni) {
            vs->h->free(nx);
            vs->h->free(ni);
            return CB_ENOMEM;
        }
        if (vs->n) {
            memcpy(nx, vs->x, sizeof(float) * (size_t)vs->n * (size_t)vs->dim);
            memcpy(ni, vs->ids, sizeof(int64_t) * (size_t)vs->n);
        }
        vs->h->free(vs->x);
        vs->h->free(vs->ids);
        vs->x = nx, vs->ids = ni, vs->cap = nc;
    }
    memcpy(vs->x + vs->n * vs->dim, x, sizeof(float) * (size_t)vs->dim);
    vs->ids[vs->n++] = id;
    return CB_OK;
}

/* Embedding the passages of a store, 64 at a time. */
typedef struct embed_ctx {
    vecs *vs;
    cb_rag_encoder *enc;
    const char *texts[64];
    size_t lens[64];
    int64_t ids[64];
    char *copies[64];
    float *out;
    int n;
    cb_error *err;
    int rc;
} embed_ctx;

static int embed_flush(embed_ctx *c) {
    if (!c->n) return CB_OK;
    int rc = cb_rag_encoder_encode(c->enc, c->texts, c->lens, c->n, c->out, NULL, c->err);
    for (int i = 0; i < c->n; i++) {
        if (!rc) rc = vecs_push(c->vs, c->ids[i], c->out + (size_t)i * (size_t)c->vs->dim);
        c->vs->h->free(c->copies[i]);
    }
    c->n = 0;
    return rc;
}

static int embed_one(void *arg, int64_t id, const char *text, size_t len) {
    embed_ctx *c = arg;
    char *copy = c->vs->h->alloc(len + 1); /* the store's text is valid until its next row */
    if (!copy) return c->rc = CB_ENOMEM;
    memcpy(copy, text, len);
    copy[len] = 0;
    c->copies[c->n] = copy;
    c->texts[c->n] = copy;
    c->lens[c->n] = len;
    c->ids[c->n] = id;
    if (++c->n == 64) c->rc = embed_flush(c);
    return c->rc;
}

static int corpus_vectors(retrieve_state *s, vecs *vs, cb_error *err) {
    const cb_param_value *v = s->v;
    const cb_host *h = s->host;
    char dir[4096];
    cb_rag_encoder_opts o = {v[V_MODEL].s, NULL, -1, -1, (int)v[V_MAX_TOKENS].i, s->threads,
                             (uint64_t)v[V_SEED].i};
    const char *md = v[V_MODEL_DIR].s;
    if (!strcmp(md, "auto")) {
        if (cb_rag_find_minilm(dir, sizeof dir) == 0 && !strcmp(v[V_MODEL].s, "all-minilm-l6-v2"))
            o.model_dir = dir;
    } else if (strcmp(md, "random") != 0) {
        o.model_dir = md;
    }
    cb_error e;
    cb_error_clear(&e);
    cb_rag_encoder *enc = NULL;
    cb_rag_store *st = NULL;
    int rc = cb_rag_encoder_open(&o, &enc, &e);
    if (rc) return cb_util_error(err, rc, "model: %s", e.msg);
    vs->dim = cb_rag_encoder_dim(enc);
    if (v[V_STORE].has_value) {
        rc = cb_rag_store_open(v[V_STORE].s, 0, &st, &e);
    } else {
        cb_rag_ingest_stats is = {0, 0, 0, 0};
        rc = cb_rag_store_open(":memory:", 1, &st, &e);
        if (!rc) rc = cb_rag_store_ingest(st, v[V_CORPUS].s, NULL, &is, &e);
    }
    if (rc) {
        cb_rag_encoder_free(enc);
        cb_rag_store_close(st);
        return cb_util_error(err, rc, "%s: %s", v[V_STORE].has_value ? "store" : "corpus", e.msg);
    }
    embed_ctx c = {.vs = vs, .enc = enc, .err = &e};
    c.out = h->alloc(sizeof(float) * 64 * (size_t)vs->dim);
    if (!c.out) rc = CB_ENOMEM;
    if (!rc) rc = cb_rag_store_each(st, embed_one, &c, &e);
    if (!rc) rc = embed_flush(&c);
    for (int i = 0; i < c.n; i++) h->free(c.copies[i]);
    h->free(c.out);
    cb_rag_encoder_free(enc);
    cb_rag_store_close(st);
    if (rc) return cb_util_error(err, rc, "embedding the passages: %s", e.msg);
    rlog(s, CB_LOG_INFO, "embedded %lld passages (%s, %d floats, %s)", (long long)vs->n,
         v[V_MODEL].s, vs->dim, o.model_dir ? o.model_dir : "random weights");
    return CB_OK;
}

static void random_vectors(vecs *vs, int64_t n, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        float *x = vs->x + i * vs->dim;
        double norm = 0;
        for (int d = 0; d < vs->dim; d++) {
            x[d] = (float)cb_rng_normal(&r);
            norm += (double)x[d] * x[d];
        }
        float inv = (float)(1.0 / sqrt(norm > 0 ? norm : 1));
        for (int d = 0; d < vs->dim; d++) x[d] *= inv;
        vs->ids[i] = i;
    }
    vs->n = n;
}

/* The factory string of the configured index for n vectors. */
static void factory_of(const retrieve_state *s, int64_t n, char *out, size_t cap) {
    const cb_param_value *v = s->v;
    if (v[V_FACTORY].has_value && v[V_FACTORY].s[0]) {
        snprintf(out, cap, "%s", v[V_FACTORY].s);
        return;
    }
    if (v[V_INDEX].i == IX_IVF) {
        int64_t nlist = v[V_NLIST].i ? v[V_NLIST].i : (int64_t)(4 * sqrt((double)n));
        if (!v[V_NLIST].i && nlist > n / 39) nlist = n / 39; /* FAISS wants 39 points a list */
        if (nlist < 1) nlist = 1;
        snprintf(out, cap, "IVF%lld,Flat", (long long)nlist);
    } else if (v[V_INDEX].i == IX_HNSW) {
        snprintf(out, cap, "HNSW%lld", (long long)v[V_HNSW_M].i);
    } else {
        snprintf(out, cap, "Flat");
    }
}

/* Recall@k of the index against exact search on q noisy corpus vectors. */
static double estimate_recall(retrieve_state *s, const vecs *vs, int q, cb_error *err) {
    if (q > vs->n) q = (int)vs->n;
    int k = s->k < vs->n ? s->k : (int)vs->n;
    const cb_host *h = s->host;
    float *x = h->alloc(sizeof(float) * (size_t)q * (size_t)vs->dim);
    float *sc = h->alloc(sizeof(float) * (size_t)q * (size_t)k * 2);
    int64_t *id = h->alloc(sizeof(int64_t) * (size_t)q * (size_t)k * 2);
    double recall = -1;
    if (x && sc && id) {
        cb_rng r;
        cb_rng_seed(&r, 12345);
        for (int i = 0; i < q; i++) {
            int64_t j = (int64_t)(cb_rng_u64(&r) % (uint64_t)vs->n);
            for (int d = 0; d < vs->dim; d++)
                x[(size_t)i * vs->dim + d] = vs->x[j * vs->dim + d] +
                                             (float)(0.05 * cb_rng_normal(&r) / sqrt(vs->dim));
        }
        if (!cb_vindex_search(s->ix, q, x, k, s->nprobe, s->ef_search, sc, id, err) &&
            !cb_vindex_search(s->exact, q, x, k, 0, 0, sc + (size_t)q * k, id + (size_t)q * k,
                              err)) {
            int64_t found = 0;
            for (int i = 0; i < q; i++)
                for (int a = 0; a < k; a++)
                    for (int b = 0; b < k; b++)
                        found += id[(size_t)i * k + a] >= 0 &&
                                 id[(size_t)i * k + a] == id[(size_t)q * k + (size_t)i * k + b];
            recall = (double)found / ((double)q * k);
        }
    }
    h->free(x);
    h->free(sc);
    h->free(id);
    return recall;
}

static int build_exact(retrieve_state *s, const vecs *vs, cb_error *err) {
    int rc = cb_vindex_create("Flat", vs->dim, (int)s->v[V_METRIC].i, &s->exact, err);
    if (!rc) rc = cb_vindex_add(s->exact, vs->n, vs->x, vs->ids, err);
    return rc;
}

static int retrieve_prepare(void *state, cb_error *err) {
    retrieve_state *s = state;
    const cb_param_value *v = s->v;
    const cb_host *h = s->host;
    cb_vindex_threads(s->threads);
    cb_error e;
    cb_error_clear(&e);
    int64_t t0 = cb_clock_now_ns();
    int rc;
    vecs vs = {.h = h};
    if (v[V_INDEX_FILE].has_value) {
        rc = cb_vindex_read(v[V_INDEX_FILE].s, &s->ix, &e);
        if (rc) return cb_util_error(err, rc, "index_file: %s", e.msg);
        if (s->check_recall)
            rlog(s, CB_LOG_WARN, "check_recall: needs the vectors, which an index file does not "
                 "keep: no recall is reported");
        s->check_recall = 0;
    } else {
        if (v[V_VECTORS].i == 1) {
            vs.dim = (int)v[V_DIM].i;
            int64_t n = v[V_N].i;
            vs.x = h->alloc(sizeof(float) * (size_t)n * (size_t)vs.dim);
            vs.ids = h->alloc(sizeof(int64_t) * (size_t)n);
            if (!vs.x || !vs.ids) {
                h->free(vs.x);
                h->free(vs.ids);
                return cb_util_error(err, CB_ENOMEM, "n: out of memory for %lld vectors of %d "
                                     "floats", (long long)n, vs.dim);
            }
            vs.cap = n;
            random_vectors(&vs, n, (uint64_t)v[V_SEED].i);
            rc = CB_OK;
        } else {
            rc = corpus_vectors(s, &vs, err);
        }
        char fac[256];
        if (!rc) {
            factory_of(s, vs.n, fac, sizeof fac);
            rc = cb_vindex_create(fac, vs.dim, (int)v[V_METRIC].i, &s->ix, &e);
            if (!rc) rc = cb_vindex_train(s->ix, vs.n, vs.x, &e);
            if (!rc) rc = cb_vindex_add(s->ix, vs.n, vs.x, vs.ids, &e);
            if (rc) rc = cb_util_error(err, rc, "index: %s", e.msg);
        }
        int approx = !rc && strcmp(fac, "Flat") != 0;
        if (!rc && (s->check_recall || (approx && v[V_RECALL_QUERIES].i > 0)))
            if (build_exact(s, &vs, &e)) rc = cb_util_error(err, CB_ENOMEM, "%s", e.msg);
        if (!rc && approx && v[V_RECALL_QUERIES].i > 0) {
            double r = estimate_recall(s, &vs, (int)v[V_RECALL_QUERIES].i, &e);
            rlog(s, CB_LOG_INFO, "recall@%d of %s against exact search, on %lld noisy corpus "
                 "vectors: %.4f", s->k, fac, (long long)v[V_RECALL_QUERIES].i, r);
        }
        if (!s->check_recall) {
            cb_vindex_free(s->exact);
            s->exact = NULL;
        }
        if (!rc && v[V_SAVE_INDEX].has_value && s->worker == 0) {
            rc = cb_vindex_write(s->ix, v[V_SAVE_INDEX].s, &e);
            if (rc) rc = cb_util_error(err, rc, "save_index: %s", e.msg);
        }
        h->free(vs.x);
        h->free(vs.ids);
        if (rc) return rc;
    }
    s->dim = cb_vindex_dim(s->ix);
    rlog(s, CB_LOG_INFO, "index %s, built or loaded in %.2f s", cb_vindex_describe(s->ix),
         (double)(cb_clock_now_ns() - t0) / 1e9);
    size_t b = (size_t)s->max_batch, k = (size_t)s->k;
    s->x = h->alloc(sizeof(float) * b * (size_t)s->dim);
    s->scores = h->alloc(sizeof(float) * b * k);
    s->ids = h->alloc(sizeof(int64_t) * b * k);
    s->hits = h->alloc(sizeof(cb_rag_hit) * k);
    if (s->check_recall) {
        s->exact_scores = h->alloc(sizeof(float) * b * k);
        s->exact_ids = h->alloc(sizeof(int64_t) * b * k);
    }
    if (rag_held_init(&s->hb, h, s->max_batch) || !s->x || !s->scores || !s->ids || !s->hits ||
        (s->check_recall && (!s->exact_scores || !s->exact_ids)))
        return cb_util_error(err, CB_ENOMEM, "out of memory for batches of %d", s->max_batch);
    return CB_OK;
}

static int search_all(retrieve_state *s, cb_run_ctx *ctx, cb_error *err) {
    const cb_host *h = s->host;
    if (rag_held_cancelled(&s->hb, h, ctx)) return CB_OK;
    int n = s->hb.n, rc = CB_OK;
    for (int i = 0; i < n && !rc; i++) {
        cb_rag_view it;
        char why[160];
        if (cb_rag_item_view(s->hb.at[i].q->payload, &it, why, sizeof why))
            rc = cb_util_error(err, CB_EINVAL, "query %llu: %s",
                               (unsigned long long)s->hb.at[i].q->id, why);
        else if ((int)it.dim != s->dim)
            rc = cb_util_error(err, CB_ECONFIG, "question %lld: the query embedding has %u "
                               "floats, the index %d (the encoder and the index must match%s)",
                               (long long)it.index, it.dim, s->dim,
                               it.dim ? "" : "; put rag.embed before rag.retrieve");
        else
            memcpy(s->x + (size_t)i * s->dim, it.emb, sizeof(float) * (size_t)s->dim);
    }
    cb_error e;
    cb_error_clear(&e);
    cb_vindex_threads(s->threads);
    if (!rc && cb_vindex_search(s->ix, n, s->x, s->k, s->nprobe, s->ef_search, s->scores, s->ids,
                                &e))
        rc = cb_util_error(err, CB_EINVAL, "%s", e.msg);
    if (!rc && s->exact &&
        cb_vindex_search(s->exact, n, s->x, s->k, 0, 0, s->exact_scores, s->exact_ids, &e))
        rc = cb_util_error(err, CB_EINVAL, "%s", e.msg);
    for (int i = 0; i < n && !rc; i++) {
        cb_query *q = s->hb.at[i].q;
        cb_rag_view it;
        cb_rag_item_view(q->payload, &it, NULL, 0);
        uint32_t m = 0;
        for (int j = 0; j < s->k; j++) {
            int64_t id = s->ids[(size_t)i * s->k + j];
            if (id < 0) continue;
            s->hits[m] = (cb_rag_hit){.id = id, .score = s->scores[(size_t)i * s->k + j],
                                      .source = CB_RAG_SRC_VECTOR, .rank = m};
            m++;
        }
        cb_rag_view nv = it;
        nv.hits = s->hits;
        nv.n_hits = m;
        nv.passages = "", nv.passages_bytes = 0;
        cb_buffer *nb = cb_rag_item_build(h, &nv);
        if (!nb) {
            rc = cb_util_error(err, CB_ENOMEM, "out of memory for the item");
            break;
        }
        cb_rag_item_replace(h, q, nb);
        cb_held *hh = s->hb.at[i].h;
        if (it.answer_id >= 0) {
            int hit = 0;
            for (uint32_t j = 0; j < m; j++) hit |= s->hits[j].id == it.answer_id;
            h->report_held(ctx, hh, VM_HIT, hit);
        }
        h->report_held(ctx, hh, VM_BATCH, n);
        if (s->exact) {
            int found = 0, total = 0;
            for (int a = 0; a < s->k; a++) {
                int64_t ea = s->exact_ids[(size_t)i * s->k + a];
                if (ea < 0) continue;
                total++;
                for (int b = 0; b < s->k; b++) found += s->ids[(size_t)i * s->k + b] == ea;
            }
            if (total) h->report_held(ctx, hh, VM_RECALL, (double)found / total);
        }
    }
    rag_held_complete(&s->hb, s->host, ctx, rc ? rc : CB_OK, rc && err ? err->msg : NULL);
    return rc;
}

static int retrieve_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    retrieve_state *s = state;
    int rc = rag_held_add(&s->hb, s->host, q, ctx, err);
    if (rc < 0) return rc;
    /* A full batch is processed at once (a failure completes every held query, this one too,
     * with the error, which fails the pipeline). */
    if (rc) (void)search_all(s, ctx, err);
    return CB_RUN_HELD;
}

static int retrieve_step(void *state, cb_run_ctx *ctx, cb_error *err) {
    retrieve_state *s = state;
    if (s->hb.n == 0) return CB_OK;
    return search_all(s, ctx, err);
}

static void retrieve_destroy(void *state) {
    retrieve_state *s = state;
    cb_vindex_free(s->ix);
    cb_vindex_free(s->exact);
    if (!s->host) return;
    rag_held_free(&s->hb, s->host);
    s->host->free(s->x);
    s->host->free(s->scores);
    s->host->free(s->ids);
    s->host->free(s->hits);
    s->host->free(s->exact_scores);
    s->host->free(s->exact_ids);
}

const cb_stage_ops cb_stage_rag_retrieve = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.retrieve",
    .summary = "vector search on FAISS (flat, IVF, HNSW): the top k passages of the waiting "
               "queries' embeddings, batched",
    .params = retrieve_params,
    .n_params = V_COUNT,
    .state_size = sizeof(retrieve_state),
    .create = retrieve_create,
    .prepare = retrieve_prepare,
    .run = retrieve_run,
    .destroy = retrieve_destroy,
    .metrics = retrieve_metrics,
    .n_metrics = VM_COUNT,
    .check = retrieve_check,
    .step = retrieve_step,
};
