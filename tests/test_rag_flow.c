/* Tests of the generation side of RAG pipelines: rag.prompt (template, token budget, the fork to
 * the generator), rag.answer (the join after it), rag.grade (yes/no from a model's logits,
 * relevance filtering, the grade in q->tag) and rag.rewrite, in real pipelines with llm.generate
 * (a tiny random model, bytes tokenizer). Items come from a test stage (test.rag: `mode:
 * source` makes an item per query with three passages of known lengths; `mode: capture` keeps
 * a copy of every payload it sees, for the checks).
 *
 * What is checked: what the stages compute (prompt contents and sizes, which passages are cut,
 * answers joined to their own question, the number of rounds a loop goes, the path of every
 * query in the records), never speed.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/lm_config.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"
#include "llm/request.h"
#include "rag/item.h"
#include "run_fixture.h"
#include "stages/util/util.h"

/* ---- test.rag -------------------------------------------------------------------------------- */

#define CAP_MAX 64
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *g_cap[CAP_MAX];
static size_t g_cap_len[CAP_MAX];
static int64_t g_cap_tag[CAP_MAX];
static double g_cap_value[CAP_MAX];
static int g_ncap;

static void cap_reset(void) {
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_ncap; i++) free(g_cap[i]);
    g_ncap = 0;
    pthread_mutex_unlock(&g_mu);
}

enum { T_MODE, T_COUNT };
static const cb_param_def t_params[T_COUNT] = {
    [T_MODE] = {"mode", CB_PARAM_ENUM, "source", CB_PARAM_UNBOUNDED, "source|capture", "what"},
};
typedef struct t_state {
    const cb_host *host;
    int mode;
} t_state;

static int t_create(void *state, const cb_stage_args *args, cb_error *err) {
    (void)err;
    t_state *s = state;
    s->host = args->host;
    s->mode = (int)args->values[T_MODE].i;
    return CB_OK;
}

static const char *const k_pass[3] = {
    "Velmora is a river town known for its glassworks, founded in 1742.",          /* 66 */
    "Quastrin lies near the eastern hills and is led by a council of nine elders.", /* 76 */
    "Dorvik is famous for its winter market and the copper bells of its harbour.", /* 75 */
};

static int t_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    t_state *s = state;
    (void)ctx;
    if (s->mode == 0) {
        char question[96], passages[512];
        int ql = snprintf(question, sizeof question, "What is Velmora known for? (%llu)",
                          (unsigned long long)q->id);
        cb_rag_hit hits[3];
        size_t off = 0;
        for (int i = 0; i < 3; i++) {
            size_t n = strlen(k_pass[i]);
            memcpy(passages + off, k_pass[i], n);
            hits[i] = (cb_rag_hit){.id = 10 + i, .score = 1.0f - 0.1f * (float)i,
                                   .text_off = (uint32_t)off, .text_bytes = (uint32_t)n,
                                   .rank = (uint32_t)i};
            off += n;
        }
        cb_rag_view v = {.index = (int64_t)q->id, .answer_id = 10, .grade = CB_RAG_GRADE_NONE,
                         .hits = hits, .n_hits = 3, .question = question,
                         .question_bytes = (size_t)ql, .passages = passages,
                         .passages_bytes = off};
        cb_buffer *b = cb_rag_item_build(s->host, &v);
        if (!b) return cb_util_error(err, CB_ENOMEM, "oom");
        s->host->buffer_unref(q->payload);
        q->payload = b;
        return CB_OK;
    }
    pthread_mutex_lock(&g_mu);
    if (g_ncap < CAP_MAX && q->payload) {
        g_cap[g_ncap] = malloc(q->payload->size_bytes);
        memcpy(g_cap[g_ncap], q->payload->data, q->payload->size_bytes);
        g_cap_len[g_ncap] = q->payload->size_bytes;
        g_cap_tag[g_ncap] = q->tag;
        g_cap_value[g_ncap] = q->value;
        g_ncap++;
    }
    pthread_mutex_unlock(&g_mu);
    return CB_OK;
}

static const cb_stage_ops t_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_stage_ops), .name = "test.rag",
    .summary = "RAG items for tests", .params = t_params, .n_params = T_COUNT,
    .state_size = sizeof(t_state), .create = t_create, .run = t_run};

/* Captured payload i viewed as an item (a private buffer struct around the copy). */
static int cap_item(int i, cb_buffer *b, cb_rag_view *v) {
    memset(b, 0, sizeof *b);
    b->data = g_cap[i];
    b->size_bytes = g_cap_len[i];
    b->kind = CB_BUFFER_HOST;
    char why[160];
    int rc = cb_rag_item_view(b, v, why, sizeof why);
    if (rc) printf("# captured %d: %s\n", i, why);
    return rc;
}

static size_t count_stage(run_fixture *f, int stage) {
    cb_pipeline_record r = run_fixture_records(f, 0);
    size_t n = 0;
    for (size_t i = 0; i < r.n_stage_events; i++) n += r.stage_events[i].stage == stage;
    return n;
}

/* ---- rag.prompt ------------------------------------------------------------------------------ */

/* Bytes tokenizer: a token is a byte. The fixed part of the template below is 10 + the question,
 * each passage entry "[n] " + text + "\n". A budget that fits the fixed part, passage 1 and 20
 * tokens more cuts passage 2 to 20 bytes and leaves passage 3 out. */
static void test_prompt_budget(void) {
    cap_reset();
    const char *yaml =
        "name: t\n"
        "pipelines:\n"
        "  - name: p\n"
        "    inputs: [0]\n"
        "    loadgen: {component: closed, max_queries: 3}\n"
        "    stages:\n"
        "      - {id: 0, name: src, component: test.rag, outputs: [1]}\n"
        "      - {id: 1, name: prompt, component: rag.prompt, outputs: [2],\n"
        "         config: {template: \"Q: {question}\\n{passages}A:\", max_prompt_tokens: 150,\n"
        "                  max_new_tokens: 7}}\n"
        "      - {id: 2, name: cap, component: test.rag, config: {mode: capture}}\n";
    run_fixture f;
    if (run_fixture_ok(&f, yaml, NULL, &t_ops) == 0) {
        CB_CHECK_EQ_INT(g_ncap, 3);
        for (int i = 0; i < g_ncap; i++) {
            cb_llm_request *r = (cb_llm_request *)(void *)g_cap[i];
            CB_CHECK_EQ_INT(r->magic, CB_LLM_REQUEST_MAGIC);
            const char *text = cb_llm_request_text(r);
            /* Fixed part: "Q: " + question (33 or so) + "\n" + "A:" */
            size_t fixed = 3 + strlen("What is Velmora known for? (0)") + 1 + 2;
            CB_CHECK(r->n_prompt_tokens <= 150);
            CB_CHECK_EQ_INT(r->n_prompt_tokens, r->prompt_bytes); /* bytes: one token a byte */
            CB_CHECK_EQ_INT(r->max_new_tokens, 7);
            CB_CHECK(strstr(text, "[1] Velmora is a river town") != NULL);
            CB_CHECK(strstr(text, "[2] Quastrin") != NULL);
            CB_CHECK(strstr(text, "council of nine") == NULL); /* cut */
            CB_CHECK(strstr(text, "[3]") == NULL);             /* left out */
            CB_CHECK(strncmp(text, "Q: What is Velmora known for?", 29) == 0);
            CB_CHECK(r->n_prompt_tokens >= 150 - 2 && fixed < 150);
            const int32_t *ids = cb_llm_request_prompt_ids(r);
            CB_CHECK_EQ_INT(ids[0], 'Q');
            /* Every id is the byte of the text. */
            int same = 1;
            for (uint32_t k = 0; k < r->n_prompt_tokens; k++)
                same &= ids[k] == (unsigned char)text[k];
            CB_CHECK(same);
        }
    }
    run_fixture_fini(&f);
}

/* A budget below the question fails each query (CB_RUN_FAILED), the pipeline goes on. */
static void test_prompt_over_budget(void) {
    cap_reset();
    const char *yaml =
        "name: t\n"
        "pipelines:\n"
        "  - name: p\n"
        "    inputs: [0]\n"
        "    loadgen: {component: closed, max_queries: 2}\n"
        "    stages:\n"
        "      - {id: 0, name: src, component: test.rag, outputs: [1]}\n"
        "      - {id: 1, name: prompt, component: rag.prompt, outputs: [2],\n"
        "         config: {max_prompt_tokens: 8}}\n"
        "      - {id: 2, name: cap, component: test.rag, config: {mode: capture}}\n";
    run_fixture f;
    if (run_fixture_yaml(&f, yaml, NULL, &t_ops) == 0) {
        CB_CHECK_EQ_INT(f.rc, CB_OK);
        CB_CHECK_EQ_INT(g_ncap, 0);
        cb_pipeline_record r = run_fixture_records(&f, 0);
        CB_CHECK_EQ_INT(r.n_queries, 2);
    }
    run_fixture_fini(&f);
}

/* ---- rag.prompt -> llm.generate + carry -> rag.answer ---------------------------------------- */

static void test_fork_join(void) {
    cap_reset();
    const char *yaml =
        "name: t\n"
        "pipelines:\n"
        "  - name: p\n"
        "    inputs: [0]\n"
        "    loadgen: {component: closed, max_queries: 6, config: {concurrency: 3}}\n"
        "    stages:\n"
        "      - {id: 0, name: src, component: test.rag, outputs: [1]}\n"
        "      - {id: 1, name: prompt, component: rag.prompt, outputs: [2, 3],\n"
        "         config: {max_prompt_tokens: 200, max_new_tokens: 5, ignore_eos: true}}\n"
        "      - {id: 2, name: generate, component: llm.generate, outputs: [4],\n"
        "         config: {model: tiny, precision: f32, max_batch: 4, max_tokens_per_step: 256,\n"
        "                  kv_cache_bytes: 4194304}}\n"
        "      - {id: 3, name: carry, component: util.noop, outputs: [4]}\n"
        "      - {id: 4, name: answer, component: rag.answer, outputs: [5],\n"
        "         polling_policy: merge}\n"
        "      - {id: 5, name: cap, component: test.rag, config: {mode: capture}}\n";
    run_fixture f;
    if (run_fixture_ok(&f, yaml, NULL, &t_ops) == 0) {
        CB_CHECK_EQ_INT(g_ncap, 6);
        int seen = 0;
        for (int i = 0; i < g_ncap; i++) {
            cb_buffer b;
            cb_rag_view v;
            if (cap_item(i, &b, &v)) {
                CB_CHECK(0);
                continue;
            }
            /* The answer of 5 tokens joined to its own question (index in the question text). */
            char want[64];
            snprintf(want, sizeof want, "(%lld)", (long long)v.index);
            CB_CHECK(strstr(v.question, want) != NULL);
            CB_CHECK(v.answer_bytes >= 5);
            CB_CHECK_EQ_INT(v.n_hits, 3);
            seen |= 1 << v.index;
        }
        CB_CHECK_EQ_INT(seen, 63);
    }
    run_fixture_fini(&f);
}

/* ---- rag.grade + util.router + rag.rewrite: a bounded retry loop ----------------------------- */

static void run_loop(double bias, int kind_relevance, int want_rewrites, int want_hits) {
    cap_reset();
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "name: t\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    loadgen: {component: closed, max_queries: 4, config: {concurrency: 2}}\n"
             "    stages:\n"
             "      - {id: 0, name: src, component: test.rag, outputs: [1]}\n"
             "      - {id: 1, name: grade, component: rag.grade, outputs: [2],\n"
             "         config: {kind: %s, model: tiny, precision: f32, bias: %g, max_batch: 4,\n"
             "                  max_prompt_tokens: 256, max_step_tokens: 1024}}\n"
             "      - {id: 2, name: route, component: util.router, outputs: [3, 4],\n"
             "         config: {mode: field, field: tag, max_hops: 3, on_max_hops: last}}\n"
             "      - {id: 3, name: rewrite, component: rag.rewrite, outputs: [1]}\n"
             "      - {id: 4, name: cap, component: test.rag, config: {mode: capture}}\n",
             kind_relevance ? "relevance" : "usefulness", bias);
    run_fixture f;
    if (run_fixture_ok(&f, yaml, NULL, &t_ops) == 0) {
        CB_CHECK_EQ_INT(g_ncap, 4);
        for (int i = 0; i < g_ncap; i++) {
            cb_buffer b;
            cb_rag_view v;
            if (cap_item(i, &b, &v)) {
                CB_CHECK(0);
                continue;
            }
            CB_CHECK_EQ_INT(v.rewrites, want_rewrites);
            CB_CHECK_EQ_INT(v.n_hits, want_hits);
            CB_CHECK_EQ_INT(g_cap_tag[i], bias > 0);
            if (want_rewrites) /* keywords: stop and question words dropped */
                CB_CHECK(strncmp(v.query, "Velmora", 7) == 0);
        }
        /* Every round is in the records: grade runs 1 + rewrites times per query. */
        CB_CHECK_EQ_INT(count_stage(&f, 1), 4 * (1 + (size_t)want_rewrites));
        CB_CHECK_EQ_INT(count_stage(&f, 3), 4 * (size_t)want_rewrites);
    }
    run_fixture_fini(&f);
}

static void test_loop_yes(void) { run_loop(1000, 1, 0, 3); }
/* Relevance "no" drops every passage; the loop goes round max_hops (3) times, then exits. After
 * a rewrite the item has no hits (the next round would retrieve them). */
static void test_loop_no(void) { run_loop(-1000, 1, 3, 0); }
static void test_loop_usefulness_no(void) { run_loop(-1000, 0, 3, 0); }

/* The grade is the model's own: p_yes equals the two-way softmax of the logits of 'y' and 'n'
 * (bytes tokenizer) after the rendered prompt, run here through the model directly with the
 * same seed. */
static void test_grade_logits(void) {
    cap_reset();
    const char *yaml =
        "name: t\n"
        "pipelines:\n"
        "  - name: p\n"
        "    inputs: [0]\n"
        "    loadgen: {component: closed, max_queries: 1}\n"
        "    stages:\n"
        "      - {id: 0, name: src, component: test.rag, outputs: [1]}\n"
        "      - {id: 1, name: grade, component: rag.grade, outputs: [2],\n"
        "         config: {kind: usefulness, model: tiny, precision: f32, seed: 7,\n"
        "                  template: \"Q: {question} A: {answer}?\"}}\n"
        "      - {id: 2, name: cap, component: test.rag, config: {mode: capture}}\n";
    run_fixture f;
    if (run_fixture_ok(&f, yaml, NULL, &t_ops) == 0 && g_ncap == 1) {
        const char *prompt = "Q: What is Velmora known for? (0) A: ?";
        cb_error e;
        cb_error_clear(&e);
        cb_lm_config cfg;
        cb_lm_weights *w = NULL;
        cb_lm_model *m = NULL;
        cb_lm_kv *kv = NULL;
        CB_CHECK_EQ_INT(cb_lm_config_resolve("tiny", &cfg, &e), 0);
        cb_lm_weights_opts wo = {CB_LM_F32, NULL, 7, 1};
        CB_CHECK_EQ_INT(cb_lm_weights_create(&cfg, &wo, &w, &e), 0);
        CB_CHECK_EQ_INT(cb_lm_model_create(w, 1, 256, &m, &e), 0);
        CB_CHECK_EQ_INT(cb_lm_kv_create(m, 1 << 20, 16, &kv, &e), 0);
        int32_t ids[64], blocks[8];
        int n = (int)strlen(prompt);
        for (int i = 0; i < n; i++) ids[i] = (unsigned char)prompt[i];
        for (int i = 0; i < 8; i++) blocks[i] = cb_lm_kv_alloc(kv);
        float *logits = calloc((size_t)cfg.vocab, sizeof(float));
        cb_lm_seq seq = {ids, n, 0, blocks, 8, logits};
        CB_CHECK_EQ_INT(cb_lm_forward(m, kv, &seq, 1, &e), 0);
        double d = (double)logits['y'] - (double)logits['n'];
        double p = 1.0 / (1.0 + exp(-d));
        printf("# p_yes %.9f, the stage's %.9f\n", p, g_cap_value[0]);
        CB_CHECK(fabs(p - g_cap_value[0]) < 1e-6);
        CB_CHECK_EQ_INT(g_cap_tag[0], d > 0);
        free(logits);
        cb_lm_kv_destroy(kv);
        cb_lm_model_destroy(m);
        cb_lm_weights_destroy(w);
    }
    run_fixture_fini(&f);
}

int main(void) {
    CB_RUN(test_grade_logits);
    CB_RUN(test_prompt_budget);
    CB_RUN(test_prompt_over_budget);
    CB_RUN(test_fork_join);
    CB_RUN(test_loop_yes);
    CB_RUN(test_loop_no);
    CB_RUN(test_loop_usefulness_no);
    cap_reset();
    return cb_test_done();
}
