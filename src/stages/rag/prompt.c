/* stages/rag/prompt.c - rag.prompt and rag.answer: from a RAG item (rag/item.h) to an LLM request
 * (llm/request.h) for llm.generate or llm.openai, and back.
 *
 * rag.prompt fills a template with the item's question, query and retrieved passages and makes
 * the request: its text and, with the generator's tokenizer (stages/rag/ragtok.h: a real one, or
 * bytes when none is given), its prompt ids, so the generator needs no llm.tokenize. The prompt
 * fits a token budget, max_prompt_tokens: passages go in by rank while they fit; the first that
 * does not is cut to the tokens left (decoded back to text, so ids and text agree) and the rest
 * are left out. A template whose fixed part (question included) is over the budget fails the
 * query (CB_RUN_FAILED, with a log line), since cutting the question would change the task.
 * Placeholders: {question}, {query} (the question when there is no rewrite), {passages} (each
 * "[n] text\n"), {answer}. With two outputs the request goes to output 0 and the item itself,
 * unchanged, to output 1, so that a `polling_policy: merge` stage (rag.answer) can join the
 * generated answer with the item it came from after the generator: the fork and join of a
 * RAG pipeline's generation.
 *
 * rag.answer is that join: its query holds two parts (a merge of an item and a request with
 * output ids); it decodes the output ids with the same tokenizer and writes the text into the
 * item as the answer (into: answer) or as the new query (into: query, for a rewrite made by an
 * LLM: the rewrites count goes up). One output: the item.
 *
 * Design: per instance, scratch for ids and text that grows geometrically up to the payload's
 * maxima and is kept (nothing allocated per query but the new payloads). Thread-safety: one
 * instance per worker; the tokenizer is immutable. Ownership: the instance owns tokenizer and
 * scratch (freed in destroy); the query's payload is replaced (old one released), and rag.answer
 * drops the merge's parts once it has joined them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "colobench/stage.h"
#include "llm/request.h"
#include "rag/item.h"
#include "stages/rag/promptbuild.h"
#include "stages/rag/ragtok.h"
#include "stages/util/util.h"

static void report(const cb_host *h, cb_run_ctx *ctx, int metric, double value) {
    if (h->struct_size >= offsetof(cb_host, report) + sizeof h->report && h->report)
        h->report(ctx, metric, value);
}

static void stage_log(const cb_host *h, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stage_log(const cb_host *h, const char *stage, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h->log(CB_LOG_WARN, stage, msg);
}

/* ---- rag.prompt ------------------------------------------------------------------------------ */

enum {
    R_TEMPLATE = P_SHARED_COUNT,
    R_MAX_PROMPT_TOKENS,
    R_MAX_PASSAGES,
    R_MAX_NEW_TOKENS,
    R_IGNORE_EOS,
    R_COUNT
};

static const cb_param_def prompt_params[R_COUNT] = {
    TOKENIZER_PARAMS,
    [R_TEMPLATE] = {"template", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                    "the prompt, with {question}, {query}, {passages}, {answer} (unset: answer "
                    "the question from the passages)"},
    [R_MAX_PROMPT_TOKENS] = {"max_prompt_tokens", CB_PARAM_INT, "1024", 8,
                             CB_LLM_MAX_PROMPT_TOKENS, NULL,
                             "token budget of the whole prompt: passages are cut to fit it"},
    [R_MAX_PASSAGES] = {"max_passages", CB_PARAM_INT, "0", 0, CB_RAG_MAX_HITS, NULL,
                        "passages put in at most, by rank (0 = every hit)"},
    [R_MAX_NEW_TOKENS] = {"max_new_tokens", CB_PARAM_INT, "64", 1, CB_LLM_MAX_NEW_TOKENS, NULL,
                          "output tokens the request asks for"},
    [R_IGNORE_EOS] = {"ignore_eos", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                      "generate exactly max_new_tokens (a speed run)"},
};

enum { RM_PROMPT_TOKENS, RM_PASSAGES, RM_CUT, RM_COUNT };

static const cb_metric_def prompt_metrics[RM_COUNT] = {
    [RM_PROMPT_TOKENS] = {"prompt_tokens", CB_METRIC_COUNT, "tokens", "ids of the prompt"},
    [RM_PASSAGES] = {"passages", CB_METRIC_GAUGE, "passages",
                     "passages in the prompt (whole or cut)"},
    [RM_CUT] = {"passages_cut", CB_METRIC_COUNT, "passages",
                "passages cut or left out to fit the budget"},
};

typedef struct prompt_state {
    const cb_host *host;
    const char *name;
    const cb_param_value *v;
    const char *tmpl;
    rag_tok tok;
    uint32_t max_new;
    int ignore_eos, n_outputs;
    cb_rag_pb pb;
} prompt_state;

static int prompt_check(const cb_stage_args *args, cb_error *err) {
    if (args->n_outputs < 1 || args->n_outputs > 2)
        return cb_util_error(err, CB_ECONFIG, "outputs: rag.prompt has 1 output (the request) "
                             "or 2 (the request, then the item for rag.answer), not %d",
                             args->n_outputs);
    return rag_tok_check(args->values, err);
}

static int prompt_create(void *state, const cb_stage_args *args, cb_error *err) {
    prompt_state *s = state;
    int rc = prompt_check(args, err);
    if (rc) return rc;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->name = args->stage;
    s->v = v;
    s->pb.host = args->host;
    s->pb.tok = &s->tok;
    s->pb.tmpl = v[R_TEMPLATE].has_value ? v[R_TEMPLATE].s : CB_RAG_DEFAULT_TEMPLATE;
    s->pb.budget = (size_t)v[R_MAX_PROMPT_TOKENS].i;
    s->pb.max_passages = (uint32_t)v[R_MAX_PASSAGES].i;
    s->max_new = (uint32_t)v[R_MAX_NEW_TOKENS].i;
    s->ignore_eos = (int)v[R_IGNORE_EOS].i;
    s->n_outputs = args->n_outputs;
    return CB_OK;
}

static int prompt_prepare(void *state, cb_error *err) {
    prompt_state *s = state;
    return rag_tok_load(&s->tok, s->v, s->host, err);
}

static int prompt_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    prompt_state *s = state;
    const cb_host *h = s->host;
    cb_rag_view it;
    char why[160];
    if (cb_rag_item_view(q->payload, &it, why, sizeof why))
        return cb_util_error(err, CB_EINVAL, "query %llu: %s", (unsigned long long)q->id, why);
    cb_rag_pb *pb = &s->pb;
    int rc = cb_rag_pb_build(pb, &it, err);
    if (rc < 0) return rc;
    if (rc == 1) {
        stage_log(h, s->name, "question %lld: the prompt without passages has %zu tokens, over "
                  "max_prompt_tokens %zu: the query fails", (long long)it.index, pb->fixed,
                  pb->budget);
        return CB_RUN_FAILED;
    }
    size_t n = pb->n;
    size_t bytes = cb_llm_request_bytes((uint32_t)n, 0, pb->text_len);
    cb_buffer *rb = bytes ? h->buffer_new(bytes) : NULL;
    if (!rb) return cb_util_error(err, CB_ENOMEM, "out of memory for the request");
    cb_llm_request *r = cb_llm_request_init(rb, (uint32_t)n, 0, pb->text_len);
    r->index = it.index;
    r->seed = (uint64_t)it.index * 0x9e3779b97f4a7c15ull + it.rewrites;
    r->max_new_tokens = s->max_new;
    r->flags = s->ignore_eos ? CB_LLM_REQ_IGNORE_EOS : 0;
    r->vocab_size = (uint32_t)s->tok.vocab;
    r->split = q->split;
    r->epoch = q->epoch;
    r->batch = q->batch;
    memcpy(cb_llm_request_prompt_ids(r), pb->ids, n * sizeof(int32_t));
    memcpy(cb_llm_request_text(r), pb->text, pb->text_len);
    report(h, ctx, RM_PROMPT_TOKENS, (double)n);
    report(h, ctx, RM_PASSAGES, (double)pb->used);
    report(h, ctx, RM_CUT, (double)pb->cut);
    if (s->n_outputs == 2) {
        cb_query req = *q;
        req.payload = rb;
        rc = h->emit(ctx, 0, &req);
        h->buffer_unref(rb);
        if (!rc) rc = h->emit(ctx, 1, q); /* the item, unchanged, for rag.answer */
        if (rc) return cb_util_error(err, rc, "emit failed");
        return CB_OK;
    }
    h->buffer_unref(q->payload);
    q->payload = rb;
    return CB_OK;
}

static void prompt_destroy(void *state) {
    prompt_state *s = state;
    rag_tok_free(&s->tok);
    cb_rag_pb_free(&s->pb);
}

const cb_stage_ops cb_stage_rag_prompt = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.prompt",
    .summary = "the generator's prompt from a RAG item: template, retrieved passages, token budget",
    .params = prompt_params,
    .n_params = R_COUNT,
    .state_size = sizeof(prompt_state),
    .create = prompt_create,
    .prepare = prompt_prepare,
    .run = prompt_run,
    .destroy = prompt_destroy,
    .metrics = prompt_metrics,
    .n_metrics = RM_COUNT,
    .check = prompt_check,
};

/* ---- rag.answer ------------------------------------------------------------------------------ */

enum { A_INTO = P_SHARED_COUNT, A_COUNT };
enum { INTO_ANSWER, INTO_QUERY };

static const cb_param_def answer_params[A_COUNT] = {
    TOKENIZER_PARAMS,
    [A_INTO] = {"into", CB_PARAM_ENUM, "answer", CB_PARAM_UNBOUNDED, "answer|query",
                "where the generated text goes: the answer, or the query (an LLM rewrite)"},
};

enum { AM_TOKENS, AM_BYTES, AM_COUNT };

static const cb_metric_def answer_metrics[AM_COUNT] = {
    [AM_TOKENS] = {"answer_tokens", CB_METRIC_COUNT, "tokens", "output ids decoded"},
    [AM_BYTES] = {"answer_bytes", CB_METRIC_COUNT, "bytes", "text they decode to"},
};

typedef struct answer_state {
    const cb_host *host;
    const cb_param_value *v;
    int into;
    rag_tok tok;
    char *text;
    size_t text_cap;
} answer_state;

static int answer_check(const cb_stage_args *args, cb_error *err) {
    return rag_tok_check(args->values, err);
}

static int answer_create(void *state, const cb_stage_args *args, cb_error *err) {
    answer_state *s = state;
    int rc = answer_check(args, err);
    if (rc) return rc;
    s->host = args->host;
    s->v = args->values;
    s->into = (int)args->values[A_INTO].i;
    return CB_OK;
}

static int answer_prepare(void *state, cb_error *err) {
    answer_state *s = state;
    return rag_tok_load(&s->tok, s->v, s->host, err);
}

/* Checks that b is a request (the header, then the regions' bounds). */
static cb_llm_request *as_request(cb_buffer *b) {
    if (!b || !b->data || b->kind != CB_BUFFER_HOST || b->size_bytes < sizeof(cb_llm_request))
        return NULL;
    cb_llm_request *r = (cb_llm_request *)b->data;
    if (r->magic != CB_LLM_REQUEST_MAGIC || r->version != CB_LLM_REQUEST_VERSION) return NULL;
    if (r->n_output_tokens > CB_LLM_MAX_NEW_TOKENS || r->n_prompt_tokens > CB_LLM_MAX_PROMPT_TOKENS)
        return NULL;
    if (r->output_offset != cb_llm_request_output_offset(r->n_prompt_tokens) ||
        r->output_offset + sizeof(int32_t) * (size_t)r->n_output_tokens > b->size_bytes)
        return NULL;
    return r;
}

static int answer_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    answer_state *s = state;
    const cb_host *h = s->host;
    cb_buffer *item = NULL;
    cb_llm_request *req = NULL;
    for (int i = 0; i < q->nparts; i++) {
        cb_rag_view tmp;
        if (!item && cb_rag_item_view(q->parts[i], &tmp, NULL, 0) == 0)
            item = q->parts[i];
        else if (!req)
            req = as_request(q->parts[i]);
    }
    if (!item || !req)
        return cb_util_error(err, CB_EINVAL, "query %llu: rag.answer joins a RAG item and a "
                             "generated LLM request (give it `polling_policy: merge` with the "
                             "generator and rag.prompt's second output as inputs); got %d "
                             "part(s), %s item, %s request", (unsigned long long)q->id, q->nparts,
                             item ? "an" : "no", req ? "a" : "no");
    cb_rag_view it;
    char why[160];
    if (cb_rag_item_view(item, &it, why, sizeof why))
        return cb_util_error(err, CB_EINVAL, "query %llu: %s", (unsigned long long)q->id, why);
    size_t len = 0;
    const int32_t *out = cb_llm_request_output_ids(req);
    if (cb_rag_grow(h, (void **)&s->text, &s->text_cap, 4096, 1, CB_RAG_MAX_TEXT_BYTES))
        return cb_util_error(err, CB_ENOMEM, "out of memory for the answer");
    int rc = rag_tok_decode(&s->tok, out, req->n_output_tokens, s->text, s->text_cap, &len, err);
    if (rc == CB_EFULL) {
        if (cb_rag_grow(h, (void **)&s->text, &s->text_cap, len, 1, CB_RAG_MAX_TEXT_BYTES))
            return cb_util_error(err, CB_ENOMEM, "answer of %zu bytes: over %u", len,
                                 CB_RAG_MAX_TEXT_BYTES);
        rc = rag_tok_decode(&s->tok, out, req->n_output_tokens, s->text, s->text_cap, &len, err);
    }
    if (rc) return rc;
    cb_rag_view nv = it;
    if (s->into == INTO_ANSWER) {
        nv.answer = s->text, nv.answer_bytes = len;
    } else {
        size_t a = 0;
        while (a < len && (s->text[a] == ' ' || s->text[a] == '\n')) a++;
        nv.query = s->text + a, nv.query_bytes = len - a;
        nv.rewrites = it.rewrites + 1;
    }
    cb_buffer *nb = cb_rag_item_build(h, &nv);
    if (!nb) return cb_util_error(err, CB_ENOMEM, "out of memory for the item");
    report(h, ctx, AM_TOKENS, (double)req->n_output_tokens);
    report(h, ctx, AM_BYTES, (double)len);
    for (int i = 0; i < q->nparts; i++) {
        h->buffer_unref(q->parts[i]);
        q->parts[i] = NULL;
    }
    q->nparts = 0;
    cb_rag_item_replace(h, q, nb);
    return CB_OK;
}

static void answer_destroy(void *state) {
    answer_state *s = state;
    rag_tok_free(&s->tok);
    if (s->host) s->host->free(s->text);
}

const cb_stage_ops cb_stage_rag_answer = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.answer",
    .summary = "joins a generated LLM request with its RAG item: the decoded answer (or rewrite)",
    .params = answer_params,
    .n_params = A_COUNT,
    .state_size = sizeof(answer_state),
    .create = answer_create,
    .prepare = answer_prepare,
    .run = answer_run,
    .destroy = answer_destroy,
    .metrics = answer_metrics,
    .n_metrics = AM_COUNT,
    .check = answer_check,
};
