/* tests/test_llm_tokenize.c - llm.tokenize and llm.detokenize in real pipelines.
 *
 * The tokenizer is a tiktoken rank file the test writes (no Python): the 256 single bytes at
 * ranks 0..255 (rank = byte value) and a few merges, "hello" = 259 and " world" = 264 among
 * them, with the special tokens of the two chat formats. Pipelines: llm.prompts (a JSONL file of
 * text prompts written here) -> llm.tokenize -> test.capture -> [llm.detokenize ->] util.noop,
 * where test.capture (defined here) validates each payload with cb_llm_request_check, keeps a
 * copy by query id, and with `fill_output: true` puts a copy of the prompt ids in the output ids
 * (no generating stage exists yet) for llm.detokenize to decode.
 * The checks: ids equal cb_tok_encode's on the same file for each prompt (and "hello world" is
 * [259, 264] by hand), the text kept, the fields copied, the metrics; special-token text is
 * ordinary text by default and the special id with allow_special; the chat templates wrap the
 * prompt with the special ids; a request with ids passes through unchanged; detokenize's byte
 * counts and its round-trip check (passing, and failing with a tokenizer whose 'a' and 'b' are
 * swapped); errors: missing or absent tokenizer file (named by key when the config is loaded),
 * a bad rank file (file:line), a payload that is not a request, a prompt over max_prompt_tokens
 * and a template whose special tokens the tokenizer lacks (each naming the query/request).
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/request.h"
#include "llm/tokenizer.h"
#include "run_fixture.h"

/* ---- test.capture -------------------------------------------------------------------------- */

#define MAXQ 64

#include "llm_capture.h"

static const cb_param_def k_cap_params[] = {
    {"fill_output", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
     "copy the prompt ids into the output ids (flag)"},
};

typedef struct cap_state {
    const cb_host *host;
    int fill;
} cap_state;

static int cap_create(void *state, const cb_stage_args *args, cb_error *err) {
    cap_state *s = state;
    s->host = args->host;
    s->fill = (int)args->values[0].i;
    return CB_OK;
}

static int cap_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cap_state *s = state;
    if (cap_store(q, err)) return CB_EINVAL;
    if (s->fill) { /* output ids = prompt ids, as a stand-in for a generating stage */
        cb_llm_request *r = q->payload->data;
        cb_buffer *b = s->host->buffer_new(
            cb_llm_request_bytes(r->n_prompt_tokens, r->n_prompt_tokens, r->prompt_bytes));
        cb_llm_request *o = cb_llm_request_init(b, r->n_prompt_tokens, r->n_prompt_tokens,
                                                r->prompt_bytes);
        cb_llm_request_copy_fields(o, r);
        memcpy(cb_llm_request_prompt_ids(o), cb_llm_request_prompt_ids(r),
               sizeof(int32_t) * r->n_prompt_tokens);
        memcpy(cb_llm_request_output_ids(o), cb_llm_request_prompt_ids(r),
               sizeof(int32_t) * r->n_prompt_tokens);
        memcpy(cb_llm_request_text(o), cb_llm_request_text(r), (size_t)r->prompt_bytes);
        s->host->buffer_unref(q->payload);
        q->payload = b;
    }
    return CB_OK;
}

static const cb_stage_ops k_cap_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.capture",
    .summary = "validates LLM request payloads, keeps a copy, optionally fills output ids",
    .params = k_cap_params,
    .n_params = 1,
    .state_size = sizeof(cap_state),
    .create = cap_create,
    .run = cap_run,
};

/* ---- the tokenizer files ------------------------------------------------------------------- */

static const char *g_dir;
static char g_rank[600], g_swapped[600], g_bad[600], g_prompts[600];

/* The special tokens, in the YAML of special_tokens and for cb_tok_load_tiktoken. */
#define SPECIALS_YAML                                                                             \
    "special_tokens: {\"<|endoftext|>\": 300, \"<|im_start|>\": 301, \"<|im_end|>\": 302, "       \
    "\"<|begin_of_text|>\": 303, \"<|start_header_id|>\": 304, \"<|end_header_id|>\": 305, "      \
    "\"<|eot_id|>\": 306}"
static const cb_tok_special k_specials[] = {
    {"<|endoftext|>", 300},     {"<|im_start|>", 301},      {"<|im_end|>", 302},
    {"<|begin_of_text|>", 303}, {"<|start_header_id|>", 304}, {"<|end_header_id|>", 305},
    {"<|eot_id|>", 306}};
#define N_SPECIALS (sizeof k_specials / sizeof k_specials[0])

static void b64(const char *s, size_t n, char *out) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)u[i] << 16 | (i + 1 < n ? (uint32_t)u[i + 1] << 8 : 0) |
                     (i + 2 < n ? u[i + 2] : 0);
        out[k++] = a[x >> 18 & 63];
        out[k++] = a[x >> 12 & 63];
        out[k++] = i + 1 < n ? a[x >> 6 & 63] : '=';
        out[k++] = i + 2 < n ? a[x & 63] : '=';
    }
    out[k] = 0;
}

/* A rank file: bytes at their value (swap: 'a' and 'b' trade ranks), then the merges. */
static const char *write_rank(const char *name, int swap) {
    static const char *merges[] = {"he", "ll", "llo", "hello", " w", "or", " wor", "ld", " world"};
    static char text[16384];
    size_t k = 0;
    char e[64];
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        b64(&c, 1, e);
        int rank = swap && b == 'a' ? 'b' : swap && b == 'b' ? 'a' : b;
        k += (size_t)snprintf(text + k, sizeof text - k, "%s %d\n", e, rank);
    }
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        b64(merges[i], strlen(merges[i]), e);
        k += (size_t)snprintf(text + k, sizeof text - k, "%s %zu\n", e, 256 + i);
    }
    return cb_test_write(g_dir, name, text);
}

static cb_tok *load_tok(void) {
    cb_tok *t = NULL;
    cb_error e;
    cb_error_clear(&e);
    if (cb_tok_load_tiktoken(g_rank, "gpt2", k_specials, N_SPECIALS, &t, &e) != 0)
        printf("# load: %s\n", e.msg);
    return t;
}

/* The prompts (decoded), as the JSONL file has them. */
static const char *const k_texts[] = {
    "hello world",
    "H\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x8c\x8d",
    "a  <|endoftext|> b\n\n   digits 12345 hello",
    "int main(void) {\n\treturn 0; }",
};
#define N_TEXTS (sizeof k_texts / sizeof k_texts[0])

static void setup(void) {
    g_dir = cb_test_tmpdir();
    snprintf(g_rank, sizeof g_rank, "%s", write_rank("tiny.tiktoken", 0));
    snprintf(g_swapped, sizeof g_swapped, "%s", write_rank("swapped.tiktoken", 1));
    snprintf(g_bad, sizeof g_bad, "%s", cb_test_write(g_dir, "bad.tiktoken", "IQ== 0\nIg== x\n"));
    snprintf(g_prompts, sizeof g_prompts, "%s",
             cb_test_write(g_dir, "p.jsonl",
                           "{\"prompt\": \"hello world\", \"max_tokens\": 7}\n"
                           "{\"prompt\": \"H\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe4\xbd\xa0"
                           "\xe5\xa5\xbd \xf0\x9f\x8c\x8d\"}\n"
                           "{\"prompt\": \"a  <|endoftext|> b\\n\\n   digits 12345 hello\"}\n"
                           "{\"prompt\": \"int main(void) {\\n\\treturn 0; }\"}\n"));
}

/* ---- running ------------------------------------------------------------------------------- */

/* Runs llm.prompts (`prompts`: its config) -> llm.tokenize (`tok`) -> test.capture (`cap`) ->
 * `last` (a stage line's inside, e.g. "component: util.noop"). 0 when the run had no error;
 * else -1 with the message in *msg (static). The fixture is left to the caller. */
static int run_pipe(const char *prompts, const char *tok, const char *cap, const char *last,
                    run_fixture *f, const char **msg) {
    static char m[2048];
    static char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "name: tok\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, timeout: 60, config: {concurrency: 2}}\n"
             "    stages:\n"
             "      - {id: 0, component: llm.prompts, outputs: [1], config: {%s}}\n"
             "      - {id: 1, component: llm.tokenize, outputs: [2], config: {%s}}\n"
             "      - {id: 2, component: test.capture, outputs: [3], config: {%s}}\n"
             "      - {id: 3, %s}\n",
             prompts, tok, cap, last);
    cap_reset();
    m[0] = 0;
    *msg = m;
    if (run_fixture_yaml(f, yaml, NULL, &k_cap_ops) != 0) {
        cb_error_format(&f->err, m, sizeof m);
        return -1;
    }
    if (f->rc != CB_OK) {
        cb_error_format(&f->err, m, sizeof m);
        return -1;
    }
    if (f->res.n_errors) {
        snprintf(m, sizeof m, "%s", f->res.errors[0]);
        return -1;
    }
    return 0;
}

static char *jsonl_cfg(void) {
    static char c[800];
    snprintf(c, sizeof c, "source: jsonl, path: %s", g_prompts);
    return c;
}

static char *tok_cfg(const char *extra) {
    static char c[1200];
    snprintf(c, sizeof c, "tiktoken: %s, pattern: gpt2, " SPECIALS_YAML "%s%s", g_rank,
             *extra ? ", " : "", extra);
    return c;
}

/* Sums of the metric `metric` of stage `stage` over the run, and the count of reports. */
static double metric_sum(run_fixture *f, int stage, int metric, size_t *count) {
    cb_pipeline_record rec = run_fixture_records(f, 0);
    double s = 0;
    *count = 0;
    for (size_t i = 0; i < rec.n_metrics; i++)
        if (rec.metrics[i].stage == stage && rec.metrics[i].metric == metric) {
            s += rec.metrics[i].value;
            (*count)++;
        }
    return s;
}

/* Checks that request r holds the ids cb_tok_encode gives for text (and keeps the text). */
static void check_encoded(const cb_tok *t, const cb_llm_request *r, const char *text,
                          int allow_special) {
    int32_t want[512];
    size_t n = 0;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_tok_encode(t, text, strlen(text), allow_special, want, 512, &n, &e), 0);
    CB_CHECK(r != NULL);
    if (!r) return;
    cb_llm_request *m = (cb_llm_request *)(void *)(uintptr_t)r;
    CB_CHECK_EQ_INT(r->n_prompt_tokens, n);
    if (r->n_prompt_tokens == n)
        CB_CHECK(memcmp(cb_llm_request_prompt_ids(m), want, n * sizeof *want) == 0);
    CB_CHECK_EQ_INT(r->prompt_bytes, strlen(text));
    CB_CHECK_STR_EQ(cb_llm_request_text(m), text);
    CB_CHECK_EQ_INT(r->vocab_size, 307);
}

static int has_id(const cb_llm_request *r, int32_t id) {
    cb_llm_request *m = (cb_llm_request *)(void *)(uintptr_t)r;
    for (uint32_t i = 0; r && i < r->n_prompt_tokens; i++)
        if (cb_llm_request_prompt_ids(m)[i] == id) return 1;
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_encode(void) {
    cb_tok *t = load_tok();
    if (!t) return;
    run_fixture f;
    const char *msg;
    int rc = run_pipe(jsonl_cfg(), tok_cfg(""), "", "component: util.noop", &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    CB_CHECK_EQ_INT(g_cap.n, N_TEXTS);
    size_t ids = 0, bytes = 0;
    for (size_t i = 0; i < N_TEXTS; i++) {
        cb_llm_request *r = cap_get(i);
        check_encoded(t, r, k_texts[r ? r->index : 0], 0);
        if (!r) continue;
        ids += r->n_prompt_tokens;
        bytes += r->prompt_bytes;
        CB_CHECK_EQ_INT(r->max_new_tokens, r->index == 0 ? 7 : 128); /* fields copied */
        CB_CHECK_EQ_INT(r->flags, CB_LLM_REQ_IGNORE_EOS);
        CB_CHECK_STR_EQ(r->split_name, "prompts");
        CB_CHECK_EQ_INT(r->n_output_tokens, 0);
        if (r->index == 0) { /* by hand: "hello" and " world" are whole tokens */
            CB_CHECK_EQ_INT(r->n_prompt_tokens, 2);
            CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[0], 259);
            CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[1], 264);
        }
        if (r->index == 2) CB_CHECK(!has_id(r, 300)); /* special text is ordinary by default */
    }
    size_t nt, nb;
    CB_CHECK_NEAR(metric_sum(&f, 1, 0, &nt), (double)ids, 0.5);
    CB_CHECK_NEAR(metric_sum(&f, 1, 1, &nb), (double)bytes, 0.5);
    CB_CHECK_EQ_INT(nt, N_TEXTS);
    CB_CHECK_EQ_INT(nb, N_TEXTS);
    run_fixture_fini(&f);

    /* allow_special: the text "<|endoftext|>" becomes id 300 */
    rc = run_pipe(jsonl_cfg(), tok_cfg("allow_special: true"), "", "component: util.noop", &f,
                  &msg);
    CB_CHECK_EQ_INT(rc, 0);
    for (size_t i = 0; i < N_TEXTS; i++) {
        cb_llm_request *r = cap_get(i);
        check_encoded(t, r, k_texts[r ? r->index : 0], 1);
        if (r && r->index == 2) CB_CHECK(has_id(r, 300));
    }
    run_fixture_fini(&f);
    cb_tok_free(t);
}

static void test_chat_templates(void) {
    cb_tok *t = load_tok();
    if (!t) return;
    const char *names[] = {"chatml", "llama3"};
    const cb_tok_chat fmts[] = {CB_TOK_CHAT_CHATML, CB_TOK_CHAT_LLAMA3};
    for (int k = 0; k < 2; k++) {
        char extra[64];
        snprintf(extra, sizeof extra, "chat_template: %s", names[k]);
        run_fixture f;
        const char *msg;
        int rc = run_pipe(jsonl_cfg(), tok_cfg(extra), "", "component: util.noop", &f, &msg);
        CB_CHECK_EQ_INT(rc, 0);
        if (rc) printf("# %s\n", msg);
        CB_CHECK_EQ_INT(g_cap.n, N_TEXTS);
        for (size_t i = 0; i < N_TEXTS; i++) {
            cb_llm_request *r = cap_get(i);
            if (!r) continue;
            char text[512];
            size_t len = 0;
            cb_tok_msg m = {"user", k_texts[r->index]};
            cb_error e;
            cb_error_clear(&e);
            CB_CHECK_EQ_INT(cb_tok_chat_render(fmts[k], &m, 1, 1, text, sizeof text - 1, &len, &e),
                            0);
            text[len] = 0;
            check_encoded(t, r, text, 1); /* the rendered text is kept, specials are ids */
            int32_t *ids = cb_llm_request_prompt_ids(r);
            if (k == 0) { /* <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n */
                CB_CHECK_EQ_INT(ids[0], 301);
                CB_CHECK(has_id(r, 302));
                CB_CHECK_EQ_INT(ids[r->n_prompt_tokens - 11], 301); /* "assistant": 9 bytes */
            } else { /* <|begin_of_text|><|start_header_id|>user<|end_header_id|> ... */
                CB_CHECK_EQ_INT(ids[0], 303);
                CB_CHECK_EQ_INT(ids[1], 304);
                CB_CHECK(has_id(r, 305) && has_id(r, 306));
            }
            /* the user's own "<|endoftext|>" is special too with a template (allow_special) */
            if (r->index == 2) CB_CHECK(has_id(r, 300));
        }
        run_fixture_fini(&f);
    }
    cb_tok_free(t);
}

static void test_passthrough(void) {
    const char *p = cb_test_write(g_dir, "ids.jsonl",
                                  "{\"prompt_ids\": [5, 6, 7], \"max_tokens\": 3}\n"
                                  "{\"prompt_ids\": [1000], \"prompt\": \"hello\"}\n");
    char cfg[800];
    snprintf(cfg, sizeof cfg, "source: jsonl, path: %s", p);
    run_fixture f;
    const char *msg;
    int rc = run_pipe(cfg, tok_cfg("chat_template: chatml"), "", "component: util.noop", &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    cb_llm_request *r = cap_get(0);
    CB_CHECK(r != NULL);
    if (r) {
        CB_CHECK_EQ_INT(r->n_prompt_tokens, 3);
        CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[2], 7);
        CB_CHECK_EQ_INT(r->prompt_bytes, 0);
        CB_CHECK_EQ_INT(r->vocab_size, 0); /* unchanged: the file's ids are not the tokenizer's */
        CB_CHECK_EQ_INT(r->max_new_tokens, 3);
    }
    r = cap_get(1);
    CB_CHECK(r != NULL);
    if (r) { /* ids and text: the ids win, nothing is wrapped */
        CB_CHECK_EQ_INT(r->n_prompt_tokens, 1);
        CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[0], 1000);
        CB_CHECK_STR_EQ(cb_llm_request_text(r), "hello");
    }
    size_t n;
    CB_CHECK_NEAR(metric_sum(&f, 1, 0, &n), 4.0, 0.5);
    run_fixture_fini(&f);
}

static void test_detokenize(void) {
    size_t bytes = 0, ids = 0;
    for (size_t i = 0; i < N_TEXTS; i++) bytes += strlen(k_texts[i]);
    char last[1200];
    snprintf(last, sizeof last, "component: llm.detokenize, outputs: [4], config: {tiktoken: %s, "
             "pattern: gpt2, " SPECIALS_YAML ", check_roundtrip: true}}\n"
             "      - {id: 4, component: util.noop", g_rank);
    run_fixture f;
    const char *msg;
    int rc = run_pipe(jsonl_cfg(), tok_cfg(""), "fill_output: true", last, &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    for (size_t i = 0; i < N_TEXTS; i++)
        if (cap_get(i)) ids += cap_get(i)->n_prompt_tokens;
    size_t n0, n1, n2;
    CB_CHECK_NEAR(metric_sum(&f, 3, 0, &n0), (double)ids, 0.5);   /* output_tokens */
    CB_CHECK_NEAR(metric_sum(&f, 3, 1, &n1), (double)bytes, 0.5); /* output_bytes */
    CB_CHECK_NEAR(metric_sum(&f, 3, 2, &n2), (double)bytes, 0.5); /* prompt_bytes */
    CB_CHECK_EQ_INT(n0, N_TEXTS);
    CB_CHECK_EQ_INT(n2, N_TEXTS);
    run_fixture_fini(&f);

    /* a detokenizer whose 'a' and 'b' trade ids: the round trip of "a  <|endoftext|> ..." (and
     * of "int main(void)") fails, naming the request */
    snprintf(last, sizeof last, "component: llm.detokenize, config: {tiktoken: %s, "
             "pattern: gpt2, check_roundtrip: true}", g_swapped);
    rc = run_pipe(jsonl_cfg(), tok_cfg(""), "", last, &f, &msg);
    CB_CHECK_EQ_INT(rc, -1);
    printf("# %s\n", msg);
    CB_CHECK_CONTAINS(msg, "check_roundtrip");
    CB_CHECK_CONTAINS(msg, "request ");
    CB_CHECK_CONTAINS(msg, "query ");
    run_fixture_fini(&f);
}

/* A prompt of 40000 bytes (40000 ids): the scratch buffers of both stages grow past their first
 * sizes (4096 ids, 16 KiB of decoded text). */
static void test_long_prompt(void) {
    enum { LEN = 40000 };
    char *text = malloc(LEN + 1), *line = malloc(LEN + 64);
    for (size_t i = 0; i < LEN; i++) text[i] = i % 2 ? 'x' : ' ';
    text[LEN] = 0;
    snprintf(line, LEN + 64, "{\"prompt\": \"%s\"}\n", text);
    char cfg[800], last[1200];
    snprintf(cfg, sizeof cfg, "source: jsonl, path: %s", cb_test_write(g_dir, "long.jsonl", line));
    snprintf(last, sizeof last, "component: llm.detokenize, config: {tiktoken: %s, "
             "pattern: gpt2, check_roundtrip: true}", g_rank);
    run_fixture f;
    const char *msg;
    int rc = run_pipe(cfg, tok_cfg(""), "fill_output: true", last, &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    cb_tok *t = load_tok();
    int32_t *want = malloc(sizeof *want * LEN);
    size_t n = 0;
    cb_error e;
    cb_error_clear(&e);
    cb_llm_request *r = cap_get(0);
    CB_CHECK(t && r);
    if (t && r) {
        CB_CHECK_EQ_INT(cb_tok_encode(t, text, LEN, 0, want, LEN, &n, &e), 0);
        CB_CHECK_EQ_INT(n, LEN); /* " x" is no token: a space and an x */
        CB_CHECK_EQ_INT(r->n_prompt_tokens, n);
        CB_CHECK(r->n_prompt_tokens == n &&
                 memcmp(cb_llm_request_prompt_ids(r), want, n * sizeof *want) == 0);
        size_t k;
        CB_CHECK_NEAR(metric_sum(&f, 3, 1, &k), (double)LEN, 0.5); /* output_bytes */
    }
    cb_tok_free(t);
    run_fixture_fini(&f);
    free(want);
    free(text);
    free(line);
}

/* Runs a pipeline that must fail; checks its message has each of the needles. */
static void expect_fail(const char *prompts, const char *tok, const char *n1, const char *n2) {
    run_fixture f;
    const char *msg = "";
    int rc = run_pipe(prompts, tok, "", "component: util.noop", &f, &msg);
    CB_CHECK_EQ_INT(rc, -1);
    printf("# %s\n", msg);
    CB_CHECK_CONTAINS(msg, n1);
    if (n2) CB_CHECK_CONTAINS(msg, n2);
    run_fixture_fini(&f);
}

static void test_errors(void) {
    char tok[1200];
    /* refused when the config is loaded, naming the key */
    snprintf(tok, sizeof tok, "tokenizer: %s/missing.json", g_dir);
    expect_fail(jsonl_cfg(), tok, "tokenizer", "missing.json");
    expect_fail(jsonl_cfg(), "chat_template: chatml", "tokenizer: is required", NULL);
    snprintf(tok, sizeof tok, "tiktoken: %s", g_rank);
    expect_fail(jsonl_cfg(), tok, "pattern: a tiktoken rank file needs", NULL);
    expect_fail(jsonl_cfg(), tok_cfg("chat_template: llama3, allow_special: false"),
                "allow_special", NULL);
    /* at prepare: a bad rank file (file:line), a template the tokenizer cannot write */
    snprintf(tok, sizeof tok, "tiktoken: %s, pattern: cl100k", g_bad);
    expect_fail(jsonl_cfg(), tok, "bad.tiktoken:2:", NULL);
    snprintf(tok, sizeof tok, "tiktoken: %s, pattern: gpt2, chat_template: chatml", g_rank);
    expect_fail(jsonl_cfg(), tok, "chat_template: chatml needs the special token <|im_start|>",
                NULL);
    /* in run: a prompt over max_prompt_tokens names the query and the request */
    expect_fail(jsonl_cfg(), tok_cfg("max_prompt_tokens: 8"), "request 1: the prompt has",
                "max_prompt_tokens (8)");
    expect_fail(jsonl_cfg(), tok_cfg("max_prompt_tokens: 8"), "query 1", NULL);

    /* a payload that is not a request */
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "name: notreq\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, timeout: 60, config: {concurrency: 1}}\n"
             "    stages:\n"
             "      - {id: 0, component: util.source, outputs: [1], config: {bytes: 200}}\n"
             "      - {id: 1, component: llm.tokenize, config: {%s}}\n",
             tok_cfg(""));
    run_fixture f;
    CB_CHECK_EQ_INT(run_fixture_yaml(&f, yaml, NULL, NULL), 0);
    CB_CHECK_EQ_INT(f.res.n_errors, 1);
    if (f.res.n_errors) {
        printf("# %s\n", f.res.errors[0]);
        CB_CHECK_CONTAINS(f.res.errors[0], "not an LLM request");
        CB_CHECK_CONTAINS(f.res.errors[0], "query 0");
    }
    run_fixture_fini(&f);
}

int main(void) {
    setup();
    CB_RUN(test_encode);
    CB_RUN(test_chat_templates);
    CB_RUN(test_passthrough);
    CB_RUN(test_detokenize);
    CB_RUN(test_long_prompt);
    CB_RUN(test_errors);
    cap_reset();
    return cb_test_done();
}
