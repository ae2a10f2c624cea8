/* stages/rag/grade.c - rag.grade: the yes/no graders of self-RAG, answered by an LLM from the
 * logits of two tokens.
 *
 * What: each RAG item (rag/item.h) is turned into a grading prompt for its `kind`:
 *   retrieve   does the question need retrieved passages?        (question)
 *   relevance  is this passage relevant to the question?         (question, one passage)
 *   support    is the answer supported by the passages?          (passages, answer)
 *   usefulness does the answer resolve the question?             (question, answer)
 * and the model runs the prompt (one prefill, no generation); the grade is yes when
 * logit(yes_token) - logit(no_token) + bias > 0, p_yes the two-way softmax. `relevance` grades
 * every passage on its own (one sequence each) and keeps only the relevant hits in the item
 * (their texts stay where they are); its grade is yes when any is kept. The grade goes into the
 * item and into q->tag (1 yes, 0 no), and p_yes into q->value, so a `util.router` with `mode:
 * field, field: tag` sends yes and no down different edges: the retry loops of self-RAG, bounded
 * by the router's max_hops. A prompt over max_prompt_tokens keeps its last tokens (the templates
 * end with the question and the yes/no instruction).
 *
 * Model: as llm.generate's (`model` preset or config.json, `weights`, `precision`, `threads`),
 * with the tokenizer of stages/rag/ragtok.h (bytes when none is given). With random weights the
 * grades are arbitrary but deterministic: the cost is real, and `bias` can steer the decisions
 * (+/-1000 forces them) to exercise each path of a topology.
 *
 * Batching: run() holds each query; step() grades every held query together: their sequences
 * are packed into forward calls of at most max_step_tokens tokens, each sequence in its own KV
 * blocks, released after the call (a pool sized for one call at create). Metrics per query:
 * yes (GAUGE 1/0), p_yes (GAUGE), prompt_tokens (COUNT: tokens graded), sequences (COUNT),
 * kept (GAUGE: relevance's passages kept), batch (GAUGE: queries graded together).
 *
 * Thread-safety: one instance per worker; run() and step() never run concurrently. Ownership:
 * the instance owns weights, model, KV pool, tokenizer, the held table and scratch (destroy).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "colobench/stage.h"
#include "llm/lm_config.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"
#include "rag/item.h"
#include "stages/rag/promptbuild.h"
#include "stages/rag/ragtok.h"
#include "stages/rag/held.h"
#include "stages/util/util.h"

enum {
    G_KIND = P_SHARED_COUNT,
    G_TEMPLATE,
    G_MODEL,
    G_WEIGHTS,
    G_PRECISION,
    G_THREADS,
    G_MAX_BATCH,
    G_MAX_STEP_TOKENS,
    G_MAX_PROMPT_TOKENS,
    G_YES,
    G_NO,
    G_BIAS,
    G_SEED,
    G_COUNT
};
enum { K_RETRIEVE, K_RELEVANCE, K_SUPPORT, K_USEFULNESS };

static const char *const k_templates[4] = {
    "Does answering the question below need facts from a document collection? Answer yes or "
    "no.\nQuestion: {question}\nAnswer:",
    "You grade whether a retrieved passage is relevant to a question.\nPassage: {passage}\n"
    "Question: {question}\nIs the passage relevant? Answer yes or no.\nAnswer:",
    "You grade whether an answer is grounded in the passages.\nPassages:\n{passages}\n"
    "Answer: {answer}\nIs the answer supported by the passages? Answer yes or no.\nAnswer:",
    "You grade whether an answer resolves a question.\nQuestion: {question}\nAnswer: {answer}\n"
    "Does the answer resolve the question? Answer yes or no.\nAnswer:",
};

static const cb_param_def grade_params[G_COUNT] = {
    TOKENIZER_PARAMS,
    [G_KIND] = {"kind", CB_PARAM_ENUM, NULL, CB_PARAM_UNBOUNDED,
                "retrieve|relevance|support|usefulness",
                "required: what is graded (retrieve: the question; relevance: each passage; "
                "support: the answer against the passages; usefulness: the answer)"},
    [G_TEMPLATE] = {"template", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                    "the grading prompt, with {question}, {query}, {passage}, {passages}, "
                    "{answer} (unset: the kind's own)"},
    [G_MODEL] = {"model", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                 "required: a preset (qwen2.5-0.5b, tiny, ...) or a config.json, as llm.generate"},
    [G_WEIGHTS] = {"weights", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file|dir",
                   "safetensors file or directory (unset: seeded random weights)"},
    [G_PRECISION] = {"precision", CB_PARAM_ENUM, "bf16", CB_PARAM_UNBOUNDED, "f32|bf16",
                     "weights precision"},
    [G_THREADS] = {"threads", CB_PARAM_INT, "1", 1, 1024, NULL, "threads of the forward pass"},
    [G_MAX_BATCH] = {"max_batch", CB_PARAM_INT, "16", 1, 4096, NULL,
                     "queries graded together at most"},
    [G_MAX_STEP_TOKENS] = {"max_step_tokens", CB_PARAM_INT, "2048", 16, CB_LM_STEP_TOKENS_MAX,
                           NULL, "tokens of one forward call (>= max_prompt_tokens)"},
    [G_MAX_PROMPT_TOKENS] = {"max_prompt_tokens", CB_PARAM_INT, "1024", 8, CB_LM_STEP_TOKENS_MAX,
                             NULL, "tokens of one grading prompt: a longer one keeps its end"},
    [G_YES] = {"yes_token", CB_PARAM_STRING, " yes", CB_PARAM_UNBOUNDED, NULL,
               "text whose first token means yes"},
    [G_NO] = {"no_token", CB_PARAM_STRING, " no", CB_PARAM_UNBOUNDED, NULL,
              "text whose first token means no"},
    [G_BIAS] = {"bias", CB_PARAM_FLOAT, "0", -1e6, 1e6, NULL,
                "added to logit(yes) - logit(no) before the decision (steers random models)"},
    [G_SEED] = {"seed", CB_PARAM_INT, "0", 0, 9.2e18, NULL,
                "random weights' seed (0: the stage's)"},
};

enum { GM_YES, GM_P_YES, GM_PROMPT_TOKENS, GM_SEQS, GM_KEPT, GM_BATCH, GM_COUNT };

static const cb_metric_def grade_metrics[GM_COUNT] = {
    [GM_YES] = {"yes", CB_METRIC_GAUGE, "ratio", "the grade: 1 yes, 0 no (its mean: the yes rate)"},
    [GM_P_YES] = {"p_yes", CB_METRIC_GAUGE, "ratio", "softmax of the yes and no logits"},
    [GM_PROMPT_TOKENS] = {"prompt_tokens", CB_METRIC_COUNT, "tokens", "tokens graded"},
    [GM_SEQS] = {"sequences", CB_METRIC_COUNT, "sequences", "grading prompts run"},
    [GM_KEPT] = {"kept", CB_METRIC_GAUGE, "passages", "relevance: passages graded relevant"},
    [GM_BATCH] = {"batch", CB_METRIC_GAUGE, "queries", "queries graded in the same step"},
};

/* One grading sequence: its ids live in the instance's id arena at off. */
typedef struct gseq {
    int32_t query;  /* index into held */
    int32_t hit;    /* relevance: the hit graded; -1 otherwise */
    int64_t off;
    int32_t n;
    float diff;     /* logit(yes) - logit(no) + bias */
} gseq;

typedef struct grade_state {
    const cb_host *host;
    const char *name;
    const cb_param_value *v;
    int kind, worker;
    uint64_t seed;
    const char *tmpl;
    rag_tok tok;
    int32_t yes_id, no_id, vocab;
    int max_batch, max_step, max_prompt;
    double bias;
    cb_lm_weights *w;
    cb_lm_model *model;
    cb_lm_kv *kv;
    rag_held hb;
    gseq *seqs;
    size_t seqs_cap, n_seqs;
    int32_t *ids;         /* arena of every sequence's ids this step */
    size_t ids_cap, ids_len;
    char *text;
    size_t text_cap;
    float *logits;        /* vocab floats per sequence of one call */
    int max_call_seqs;
    int32_t *blocks;      /* block tables of one call */
    cb_lm_seq *calls;
} grade_state;

static void glog(const grade_state *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void glog(const grade_state *s, int level, const char *fmt, ...) {
    if (s->worker != 0 && level > CB_LOG_WARN) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->host->log(level, s->name, msg);
}

static int grade_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    if (!v[G_KIND].has_value)
        return cb_util_error(err, CB_ECONFIG, "kind: is required (retrieve, relevance, support, "
                             "usefulness)");
    if (!v[G_MODEL].has_value || !v[G_MODEL].s[0])
        return cb_util_error(err, CB_ECONFIG, "model: is required (a preset such as tiny or "
                             "qwen2.5-0.5b, or a config.json)");
    if (v[G_MAX_STEP_TOKENS].i < v[G_MAX_PROMPT_TOKENS].i)
        return cb_util_error(err, CB_ECONFIG, "max_step_tokens: %lld is below max_prompt_tokens "
                             "%lld (one prompt must fit one forward call)",
                             (long long)v[G_MAX_STEP_TOKENS].i,
                             (long long)v[G_MAX_PROMPT_TOKENS].i);
    return rag_tok_check(v, err);
}

static int grade_create(void *state, const cb_stage_args *args, cb_error *err) {
    grade_state *s = state;
    int rc = grade_check(args, err);
    if (rc) return rc;
    const cb_host *h = args->host;
    if (h->struct_size < offsetof(cb_host, arrival_ns) + sizeof h->arrival_ns)
        return cb_util_error(err, CB_EUNSUPPORTED, "rag.grade needs a host with held queries");
    const cb_param_value *v = args->values;
    s->host = h;
    s->name = args->stage;
    s->v = v;
    s->worker = args->worker;
    s->kind = (int)v[G_KIND].i;
    s->tmpl = v[G_TEMPLATE].has_value ? v[G_TEMPLATE].s : k_templates[s->kind];
    s->max_batch = (int)v[G_MAX_BATCH].i;
    s->max_step = (int)v[G_MAX_STEP_TOKENS].i;
    s->max_prompt = (int)v[G_MAX_PROMPT_TOKENS].i;
    s->bias = v[G_BIAS].f;
    s->seed = v[G_SEED].i ? (uint64_t)v[G_SEED].i : args->seed;
    return CB_OK;
}

static int lib_err(cb_error *err, int rc, const char *what, const cb_error *e) {
    char m[CB_ERROR_MSG_MAX];
    cb_error_format(e, m, sizeof m);
    return cb_util_error(err, rc, "%s: %s", what, m);
}

/* The first id of text (yes_token / no_token; with bytes, of the text without leading spaces). */
static int first_id(grade_state *s, const char *key, const char *text, int32_t *id,
                    cb_error *err) {
    int32_t ids[64];
    size_t n = 0;
    if (!s->tok.tok) /* bytes: " yes" would be the space */
        while (*text == ' ') text++;
    int rc = rag_tok_encode(&s->tok, text, strlen(text), ids, 64, &n, err);
    if (rc && rc != CB_EFULL) return rc;
    if (n == 0) return cb_util_error(err, CB_ECONFIG, "%s: \"%s\" has no tokens", key, text);
    *id = ids[0];
    return CB_OK;
}

static int grade_prepare(void *state, cb_error *err) {
    grade_state *s = state;
    const cb_param_value *v = s->v;
    const cb_host *h = s->host;
    int rc = rag_tok_load(&s->tok, v, h, err);
    if (rc) return rc;
    cb_error e;
    cb_error_clear(&e);
    cb_lm_config cfg;
    rc = cb_lm_config_resolve(v[G_MODEL].s, &cfg, &e);
    if (rc) return lib_err(err, rc, "model", &e);
    cb_lm_weights_opts wo = {v[G_PRECISION].i == 1 ? CB_LM_BF16 : CB_LM_F32,
                             v[G_WEIGHTS].has_value ? v[G_WEIGHTS].s : NULL, s->seed, 1};
    rc = cb_lm_weights_create(&cfg, &wo, &s->w, &e);
    if (rc) return lib_err(err, rc, "weights", &e);
    if (cb_lm_weights_random(s->w))
        glog(s, CB_LOG_WARN, "%s with seeded random weights (seed %llu): the grades are "
             "arbitrary (deterministic), the cost is real", cfg.name, (unsigned long long)s->seed);
    s->vocab = (int32_t)cfg.vocab;
    if (s->tok.vocab > s->vocab)
        return cb_util_error(err, CB_ECONFIG, "tokenizer: ids up to %d, but model %s has a "
                             "vocabulary of %d", (int)s->tok.vocab - 1, cfg.name, (int)s->vocab);
    rc = first_id(s, "yes_token", v[G_YES].s, &s->yes_id, err);
    if (!rc) rc = first_id(s, "no_token", v[G_NO].s, &s->no_id, err);
    if (rc) return rc;
    if (s->yes_id == s->no_id)
        return cb_util_error(err, CB_ECONFIG, "no_token: its first token is yes_token's (%d)",
                             (int)s->yes_id);
    rc = cb_lm_model_create(s->w, (int)v[G_THREADS].i, s->max_step, &s->model, &e);
    if (rc) return lib_err(err, rc, "model", &e);
    /* One call's sequences: each a prompt of at least 2 tokens, at most this many. */
    s->max_call_seqs = s->max_step / 2 < 256 ? s->max_step / 2 : 256;
    const int bt = 16;
    int64_t blocks = s->max_step / bt + s->max_call_seqs + 1;
    rc = cb_lm_kv_create(s->model, (size_t)blocks * cb_lm_kv_block_bytes(s->model, bt), bt, &s->kv,
                         &e);
    if (rc) return lib_err(err, rc, "kv", &e);
    s->logits = h->alloc(sizeof(float) * (size_t)s->vocab * (size_t)s->max_call_seqs);
    s->blocks = h->alloc(sizeof(int32_t) * (size_t)blocks);
    s->calls = h->alloc(sizeof *s->calls * (size_t)s->max_call_seqs);
    if (rag_held_init(&s->hb, h, s->max_batch) || !s->logits || !s->blocks || !s->calls)
        return cb_util_error(err, CB_ENOMEM, "out of memory for the grader's buffers");
    glog(s, CB_LOG_INFO, "rag.grade %s: %s, yes %d, no %d, %d threads", v[G_KIND].s, cfg.name,
         (int)s->yes_id, (int)s->no_id, (int)v[G_THREADS].i);
    return CB_OK;
}

typedef struct tbuf {
    const cb_host *h;
    char **p;
    size_t *cap, len;
} tbuf;

static int tput(tbuf *b, const char *p, size_t n) {
    if (cb_rag_grow(b->h, (void **)b->p, b->cap, b->len + n + 1, 1,
                    (size_t)CB_RAG_MAX_TEXT_BYTES * 4))
        return CB_ENOMEM;
    memcpy(*b->p + b->len, p, n);
    b->len += n;
    (*b->p)[b->len] = 0;
    return CB_OK;
}

/* The grading prompt of item it (hit: relevance's passage, else -1) into s->text. */
static int render(grade_state *s, const cb_rag_view *it, int hit, size_t *len) {
    tbuf b = {s->host, &s->text, &s->text_cap, 0};
    int rc = tput(&b, "", 0);
    for (const char *p = s->tmpl; !rc && *p;) {
        const char *o = strchr(p, '{');
        if (!o) {
            rc = tput(&b, p, strlen(p));
            break;
        }
        rc = tput(&b, p, (size_t)(o - p));
        if (rc) break;
        static const char *const keys[5] = {"{question}", "{query}", "{passage}", "{passages}",
                                            "{answer}"};
        int k = 0;
        while (k < 5 && strncmp(o, keys[k], strlen(keys[k]))) k++;
        if (k == 5) {
            rc = tput(&b, "{", 1);
            p = o + 1;
            continue;
        }
        p = o + strlen(keys[k]);
        if (k == 0) {
            rc = tput(&b, it->question, it->question_bytes);
        } else if (k == 1) {
            rc = it->query_bytes ? tput(&b, it->query, it->query_bytes)
                                 : tput(&b, it->question, it->question_bytes);
        } else if (k == 2) {
            if (hit >= 0)
                rc = tput(&b, it->passages + it->hits[hit].text_off, it->hits[hit].text_bytes);
        } else if (k == 3) {
            for (uint32_t i = 0; !rc && i < it->n_hits; i++) {
                char head[32];
                int n = snprintf(head, sizeof head, "[%u] ", i + 1);
                rc = tput(&b, head, (size_t)n);
                if (!rc) rc = tput(&b, it->passages + it->hits[i].text_off, it->hits[i].text_bytes);
                if (!rc) rc = tput(&b, "\n", 1);
            }
        } else {
            rc = tput(&b, it->answer, it->answer_bytes);
        }
    }
    *len = b.len;
    return rc;
}

/* Adds one sequence (query qi, hit) to the step's list: its prompt, tokenized and cut to its
 * last max_prompt tokens. */
static int add_seq(grade_state *s, int qi, const cb_rag_view *it, int hit, cb_error *err) {
    const cb_host *h = s->host;
    size_t len = 0;
    if (render(s, it, hit, &len)) return cb_util_error(err, CB_ENOMEM, "grading prompt too long");
    if (cb_rag_grow(h, (void **)&s->seqs, &s->seqs_cap, s->n_seqs + 1, sizeof *s->seqs,
                    (size_t)1 << 24))
        return cb_util_error(err, CB_ENOMEM, "out of memory for grading sequences");
    size_t need = s->ids_len + len + 16, n = 0;
    for (;;) {
        if (cb_rag_grow(h, (void **)&s->ids, &s->ids_cap, need, sizeof(int32_t), (size_t)1 << 28))
            return cb_util_error(err, CB_ENOMEM, "out of memory for grading ids");
        int rc = rag_tok_encode(&s->tok, s->text, len, s->ids + s->ids_len,
                                s->ids_cap - s->ids_len, &n, err);
        if (rc == CB_EFULL) {
            need = s->ids_len + n;
            continue;
        }
        if (rc) return rc;
        break;
    }
    if (n == 0) {
        s->ids[s->ids_len] = s->no_id; /* an empty prompt: one token to run */
        n = 1;
    }
    int64_t off = (int64_t)s->ids_len;
    if (n > (size_t)s->max_prompt) {
        off += (int64_t)(n - (size_t)s->max_prompt);
        n = (size_t)s->max_prompt;
    }
    s->ids_len = (size_t)off + n;
    gseq *g = &s->seqs[s->n_seqs++];
    g->query = qi;
    g->hit = hit;
    g->off = off;
    g->n = (int32_t)n;
    g->diff = 0;
    return CB_OK;
}

/* Runs sequences [a, b) in one forward call (their tokens fit max_step, their count
 * max_call_seqs) and sets each one's diff. */
static int run_call(grade_state *s, size_t a, size_t b, cb_error *err) {
    const int bt = cb_lm_kv_block_tokens(s->kv);
    int32_t nb = 0;
    int rc = CB_OK;
    for (size_t i = a; i < b; i++) {
        gseq *g = &s->seqs[i];
        cb_lm_seq *c = &s->calls[i - a];
        c->tokens = s->ids + g->off;
        c->n_tokens = g->n;
        c->pos0 = 0;
        c->blocks = s->blocks + nb;
        c->n_blocks = (g->n + bt - 1) / bt;
        c->logits = s->logits + (size_t)(i - a) * (size_t)s->vocab;
        for (int32_t k = 0; k < c->n_blocks; k++) {
            int32_t id = cb_lm_kv_alloc(s->kv);
            if (id < 0) {
                rc = cb_util_error(err, CB_ENOMEM, "grader KV pool exhausted (a bug: it is sized "
                                   "for one call)");
                break;
            }
            s->blocks[nb++] = id;
        }
        if (rc) break;
    }
    cb_error e;
    cb_error_clear(&e);
    if (!rc) {
        rc = cb_lm_forward(s->model, s->kv, s->calls, (int)(b - a), &e);
        if (rc) rc = lib_err(err, rc, "forward", &e);
    }
    for (int32_t k = 0; k < nb; k++) cb_lm_kv_release(s->kv, s->blocks[k]);
    if (rc) return rc;
    for (size_t i = a; i < b; i++) {
        const float *l = s->calls[i - a].logits;
        s->seqs[i].diff = (float)((double)l[s->yes_id] - (double)l[s->no_id] + s->bias);
    }
    return CB_OK;
}

/* Grades every held query and completes them. */
static int grade_all(grade_state *s, cb_run_ctx *ctx, cb_error *err) {
    const cb_host *h = s->host;
    if (rag_held_cancelled(&s->hb, h, ctx)) return CB_OK;
    s->n_seqs = 0;
    s->ids_len = 0;
    int rc = CB_OK;
    for (int qi = 0; qi < s->hb.n && !rc; qi++) {
        cb_rag_view it;
        char why[160];
        if (cb_rag_item_view(s->hb.at[qi].q->payload, &it, why, sizeof why)) {
            rc = cb_util_error(err, CB_EINVAL, "query %llu: %s",
                               (unsigned long long)s->hb.at[qi].q->id, why);
            break;
        }
        if (s->kind == K_RELEVANCE)
            for (uint32_t k = 0; k < it.n_hits && !rc; k++) rc = add_seq(s, qi, &it, (int)k, err);
        else
            rc = add_seq(s, qi, &it, -1, err);
    }
    /* Forward calls of at most max_step tokens and max_call_seqs sequences. */
    for (size_t a = 0; !rc && a < s->n_seqs;) {
        size_t b = a, tokens = 0;
        while (b < s->n_seqs && b - a < (size_t)s->max_call_seqs &&
               tokens + (size_t)s->seqs[b].n <= (size_t)s->max_step)
            tokens += (size_t)s->seqs[b++].n;
        rc = run_call(s, a, b, err);
        a = b;
    }
    if (rc) {
        rag_held_complete(&s->hb, s->host, ctx, rc, err ? err->msg : NULL);
        return rc;
    }
    size_t si = 0;
    for (int qi = 0; qi < s->hb.n; qi++) {
        cb_query *q = s->hb.at[qi].q;
        cb_held *hh = s->hb.at[qi].h;
        cb_rag_view it;
        cb_rag_item_view(q->payload, &it, NULL, 0);
        int yes = 0, kept = 0, nseq = 0;
        double best = -1e30, tokens = 0;
        cb_buffer *nb = NULL;
        if (s->kind == K_RELEVANCE) {
            cb_rag_hit *kh = it.n_hits ? h->alloc(sizeof *kh * it.n_hits) : NULL;
            if (it.n_hits && !kh) {
                rc = cb_util_error(err, CB_ENOMEM, "out of memory");
                break;
            }
            for (uint32_t k = 0; k < it.n_hits; k++, si++, nseq++) {
                tokens += s->seqs[si].n;
                if (s->seqs[si].diff > best) best = s->seqs[si].diff;
                if (s->seqs[si].diff > 0) kh[kept++] = it.hits[k];
            }
            yes = kept > 0;
            cb_rag_view nv = it;
            nv.hits = kh;
            nv.n_hits = (uint32_t)kept;
            nv.grade = yes;
            nb = cb_rag_item_build(h, &nv);
            h->free(kh);
        } else {
            best = s->seqs[si].diff;
            tokens = s->seqs[si].n;
            si++, nseq = 1;
            yes = best > 0;
            cb_rag_view nv = it;
            nv.grade = yes;
            nb = cb_rag_item_build(h, &nv);
        }
        if (!nb) {
            rc = cb_util_error(err, CB_ENOMEM, "out of memory for the graded item");
            break;
        }
        cb_rag_item_replace(h, q, nb);
        q->tag = yes;
        double p = nseq ? 1.0 / (1.0 + exp(-best)) : 0.0;
        q->value = p;
        h->report_held(ctx, hh, GM_YES, yes);
        h->report_held(ctx, hh, GM_P_YES, p);
        h->report_held(ctx, hh, GM_PROMPT_TOKENS, tokens);
        h->report_held(ctx, hh, GM_SEQS, nseq);
        if (s->kind == K_RELEVANCE) h->report_held(ctx, hh, GM_KEPT, kept);
        h->report_held(ctx, hh, GM_BATCH, s->hb.n);
    }
    if (rc) {
        rag_held_complete(&s->hb, s->host, ctx, rc, err ? err->msg : NULL);
        return rc;
    }
    rag_held_complete(&s->hb, s->host, ctx, CB_OK, NULL);
    return CB_OK;
}

static int grade_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    grade_state *s = state;
    int rc = rag_held_add(&s->hb, s->host, q, ctx, err);
    if (rc < 0) return rc;
    /* A full batch is processed at once (a failure completes every held query, this one too,
     * with the error, which fails the pipeline). */
    if (rc) (void)grade_all(s, ctx, err);
    return CB_RUN_HELD;
}

static int grade_step(void *state, cb_run_ctx *ctx, cb_error *err) {
    grade_state *s = state;
    if (s->hb.n == 0) return CB_OK;
    return grade_all(s, ctx, err);
}

static void grade_destroy(void *state) {
    grade_state *s = state;
    rag_tok_free(&s->tok);
    cb_lm_kv_destroy(s->kv);
    cb_lm_model_destroy(s->model);
    cb_lm_weights_destroy(s->w);
    if (s->host) {
        rag_held_free(&s->hb, s->host);
        s->host->free(s->seqs);
        s->host->free(s->ids);
        s->host->free(s->text);
        s->host->free(s->logits);
        s->host->free(s->blocks);
        s->host->free(s->calls);
    }
}

const cb_stage_ops cb_stage_rag_grade = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.grade",
    .summary = "self-RAG's yes/no graders (retrieve, relevance, support, usefulness) from an "
               "LLM's logits; the grade in q->tag for util.router",
    .params = grade_params,
    .n_params = G_COUNT,
    .state_size = sizeof(grade_state),
    .create = grade_create,
    .prepare = grade_prepare,
    .run = grade_run,
    .destroy = grade_destroy,
    .metrics = grade_metrics,
    .n_metrics = GM_COUNT,
    .check = grade_check,
    .step = grade_step,
};
