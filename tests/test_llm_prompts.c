/* tests/test_llm_prompts.c - llm.prompts and the LLM request payload (llm/request.h).
 *
 * Every test runs a real pipeline through the run fixture: llm.prompts -> test.capture ->
 * util.noop, where test.capture (defined here) validates each payload with
 * cb_llm_request_check and keeps a copy by query id. The checks: lengths follow each
 * distribution, the shared prefix, ids in range, determinism from the seed (and shuffling only
 * reorders), JSONL and ShareGPT files written here (unicode text, ids), the metrics, and the
 * errors (file:line for JSONL, the JSON path for ShareGPT, missing fields, over-long prompts).
 *
 * Statistical tolerances are 6 standard errors of the statistic at n = 2000 (a false failure
 * has probability below 1e-8 per check, and the streams are seeded, so a pass is reproducible):
 *   uniform [100, 300]: sd 58.0, mean's se 1.30 -> |mean - 200| < 8
 *   normal(300, 50): mean's se 1.12 -> 7; sd's se ~ 50 / sqrt(2n) = 0.79 -> |sd - 50| < 5
 *   lognormal, mean 400, sd 200 (sigma^2 = ln 1.25): mean's se 4.47 -> 27; sd's se
 *     sd * sqrt((kurtosis excess 5.03 + 2) / n) / 2 = 5.9 -> 36; median exp(mu) = 357.8,
 *     se 1 / (2 f(median) sqrt(n)) = 4.7 -> 28 (a normal would put the median at 400).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/request.h"
#include "run_fixture.h"

/* ---- test.capture: validates and keeps each payload ---------------------------------------- */

#define MAXQ 8192

#include "llm_capture.h"

static int cap_create(void *state, const cb_stage_args *args, cb_error *err) { return CB_OK; }

static int cap_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    if (cap_store(q, err)) return CB_EINVAL;
    return CB_OK;
}

static const cb_stage_ops k_cap_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "test.capture",
    .summary = "validates LLM request payloads and keeps a copy",
    .state_size = 1,
    .create = cap_create,
    .run = cap_run,
};

/* Runs llm.prompts with `config` (a YAML flow map's inside) into the capture. 0 when it ran
 * without error; otherwise -1, with the run's error in *msg (static). */
static int run_prompts(const char *config, run_fixture *f, const char **msg) {
    static char m[2048];
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: prompts\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, timeout: 60, config: {concurrency: 4}}\n"
             "    stages:\n"
             "      - {id: 0, component: llm.prompts, outputs: [1], config: {%s}}\n"
             "      - {id: 1, component: test.capture, outputs: [2]}\n"
             "      - {id: 2, component: util.noop}\n",
             config);
    cap_reset();
    m[0] = 0;
    if (msg) *msg = m;
    if (run_fixture_yaml(f, yaml, NULL, &k_cap_ops) != 0) {
        snprintf(m, sizeof m, "%s", f->err.msg);
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

/* The same, for runs that must succeed (the fixture is finished here). */
static int run_ok(const char *config) {
    run_fixture f;
    const char *msg;
    int rc = run_prompts(config, &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    run_fixture_fini(&f);
    return rc;
}

/* A run that must fail; returns its message (static). */
static const char *run_fail(const char *config) {
    run_fixture f;
    const char *msg = "";
    int rc = run_prompts(config, &f, &msg);
    CB_CHECK_EQ_INT(rc, -1);
    run_fixture_fini(&f);
    return msg;
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* Hash of everything request id says (header fields and contents), or 0 when absent. */
static uint64_t req_hash(const cb_llm_request *r) {
    if (!r) return 0;
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(&r->index, sizeof r->index, h);
    h = fnv(&r->seed, sizeof r->seed, h);
    h = fnv(&r->max_new_tokens, sizeof r->max_new_tokens, h);
    h = fnv(&r->n_prompt_tokens, sizeof r->n_prompt_tokens, h);
    h = fnv(&r->flags, sizeof r->flags, h);
    cb_llm_request *m = (cb_llm_request *)(void *)(uintptr_t)r;
    h = fnv(cb_llm_request_prompt_ids(m), sizeof(int32_t) * r->n_prompt_tokens, h);
    h = fnv(cb_llm_request_text(m), (size_t)r->prompt_bytes, h);
    return h;
}

typedef struct moments {
    double mean, sd, median;
    uint32_t min, max;
} moments;

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static moments stats(const uint32_t *v, size_t n) {
    moments m = {0, 0, 0, UINT32_MAX, 0};
    double s = 0, q = 0;
    uint32_t *c = malloc(n * sizeof *c);
    for (size_t i = 0; i < n; i++) {
        s += v[i];
        q += (double)v[i] * v[i];
        if (v[i] < m.min) m.min = v[i];
        if (v[i] > m.max) m.max = v[i];
        c[i] = v[i];
    }
    m.mean = s / (double)n;
    m.sd = sqrt((q - s * s / (double)n) / (double)(n - 1));
    qsort(c, n, sizeof *c, cmp_u32);
    m.median = n % 2 ? c[n / 2] : 0.5 * ((double)c[n / 2 - 1] + c[n / 2]);
    free(c);
    printf("# n %zu mean %.2f sd %.2f median %.1f min %u max %u\n", n, m.mean, m.sd, m.median,
           m.min, m.max);
    return m;
}

#define N 2000

/* ---- synthetic ----------------------------------------------------------------------------- */

static void test_fixed_prefix_uniform(void) {
    run_fixture f;
    const char *msg;
    int rc = run_prompts("num_prompts: 2000, input_len: 50, prefix_len: 16, vocab_size: 1000, "
                         "first_id: 10, output_dist: uniform, output_len: 200, "
                         "output_range_ratio: 0.5, seed: 7",
                         &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", msg);
        run_fixture_fini(&f);
        return;
    }
    CB_CHECK_EQ_INT(g_cap.n, N);
    static uint32_t out[N];
    int32_t prefix[16];
    uint32_t id_min = UINT32_MAX, id_max = 0, bad = 0;
    uint64_t sum_prompt = 0, sum_out = 0;
    unsigned char seen[N] = {0};
    for (size_t i = 0; i < N; i++) {
        cb_llm_request *r = cap_get(i);
        if (!r) {
            bad++;
            continue;
        }
        const int32_t *ids = cb_llm_request_prompt_ids(r);
        if (i == 0) memcpy(prefix, ids, sizeof prefix);
        if (r->n_prompt_tokens != 66 || r->prefix_tokens != 16 || r->vocab_size != 1000 ||
            r->prompt_bytes != 0 || r->n_output_tokens != 0 || r->n_turns != 1 ||
            r->flags != CB_LLM_REQ_IGNORE_EOS || memcmp(ids, prefix, sizeof prefix) != 0 ||
            strcmp(r->split_name, "prompts") != 0 || r->index < 0 || r->index >= N ||
            seen[r->index]++)
            bad++;
        for (uint32_t k = 0; k < r->n_prompt_tokens; k++) {
            if ((uint32_t)ids[k] < id_min) id_min = (uint32_t)ids[k];
            if ((uint32_t)ids[k] > id_max) id_max = (uint32_t)ids[k];
        }
        out[i] = r->max_new_tokens;
        sum_prompt += r->n_prompt_tokens;
        sum_out += r->max_new_tokens;
    }
    CB_CHECK_EQ_INT(bad, 0);
    /* 100k ids uniform in [10, 1000): both ends are hit (miss probability ~ e^-100) */
    CB_CHECK_EQ_INT(id_min, 10);
    CB_CHECK_EQ_INT(id_max, 999);
    moments m = stats(out, N);
    CB_CHECK_CMP_INT(m.min, >=, 100);
    CB_CHECK_CMP_INT(m.max, <=, 300);
    CB_CHECK_CMP_INT(m.min, <, 110);
    CB_CHECK_CMP_INT(m.max, >, 290);
    CB_CHECK_NEAR(m.mean, 200.0, 8.0);

    /* the metrics: prompt_tokens and max_new_tokens per query, summing to the payloads' */
    cb_pipeline_record rec = run_fixture_records(&f, 0);
    double mt[3] = {0, 0, 0};
    size_t mn[3] = {0, 0, 0};
    for (size_t i = 0; i < rec.n_metrics; i++)
        if (rec.metrics[i].metric >= 0 && rec.metrics[i].metric < 3) {
            mt[rec.metrics[i].metric] += rec.metrics[i].value;
            mn[rec.metrics[i].metric]++;
        }
    CB_CHECK_EQ_INT(mn[0], N);
    CB_CHECK_EQ_INT(mn[1], 0);
    CB_CHECK_EQ_INT(mn[2], N);
    CB_CHECK_NEAR(mt[0], (double)sum_prompt, 0.5);
    CB_CHECK_NEAR(mt[2], (double)sum_out, 0.5);
    run_fixture_fini(&f);
}

static void test_normal_lognormal(void) {
    if (run_ok("num_prompts: 2000, input_dist: normal, input_len: 300, input_std: 50, "
               "output_dist: lognormal, output_len: 400, output_std: 200, vocab_size: 50, "
               "ignore_eos: false, seed: 3") != 0)
        return;
    static uint32_t in[N], out[N];
    size_t got = 0;
    for (size_t i = 0; i < N; i++) {
        cb_llm_request *r = cap_get(i);
        if (!r) continue;
        in[got] = r->n_prompt_tokens;
        out[got++] = r->max_new_tokens;
        if (r->flags != 0 || r->prefix_tokens != 0) CB_CHECK(!"flags or prefix");
    }
    CB_CHECK_EQ_INT(got, N);
    moments a = stats(in, got), b = stats(out, got);
    CB_CHECK_NEAR(a.mean, 300.0, 7.0);
    CB_CHECK_NEAR(a.sd, 50.0, 5.0);
    CB_CHECK_NEAR(a.median, 300.0, 8.0); /* se 1.4 */
    CB_CHECK_NEAR(b.mean, 400.0, 27.0);
    CB_CHECK_NEAR(b.sd, 200.0, 36.0);
    CB_CHECK_NEAR(b.median, 400.0 / sqrt(1.25), 28.0);
    CB_CHECK_CMP_INT(b.min, >=, 1);

    /* uniform input, lognormal input (the same code for either side), fixed output */
    if (run_ok("num_prompts: 2000, input_dist: uniform, input_len: 100, input_range_ratio: 0.25, "
               "output_len: 7, seed: 3") != 0)
        return;
    got = 0;
    for (size_t i = 0; i < N; i++) {
        cb_llm_request *r = cap_get(i);
        if (!r) continue;
        in[got] = r->n_prompt_tokens;
        out[got++] = r->max_new_tokens;
    }
    a = stats(in, got);
    b = stats(out, got);
    CB_CHECK_EQ_INT(a.min, 75);  /* [75, 125]: 51 values, each missed with p ~ e^-39 */
    CB_CHECK_EQ_INT(a.max, 125);
    CB_CHECK_NEAR(a.mean, 100.0, 3.0); /* se 0.33 */
    CB_CHECK_EQ_INT(b.min, 7);
    CB_CHECK_EQ_INT(b.max, 7);

    /* clamping: a normal around 5 with sd 50 stays in [1, max_prompt_len - prefix] */
    if (run_ok("num_prompts: 500, input_dist: normal, input_len: 5, input_std: 50, "
               "prefix_len: 2, max_prompt_len: 40, output_dist: normal, output_len: 1, "
               "output_std: 10") != 0)
        return;
    int bad = 0;
    for (size_t i = 0; i < 500; i++) {
        cb_llm_request *r = cap_get(i);
        if (!r || r->n_prompt_tokens < 3 || r->n_prompt_tokens > 40 || r->max_new_tokens < 1)
            bad++;
    }
    CB_CHECK_EQ_INT(bad, 0);
}

static void test_determinism(void) {
    static uint64_t h1[N], h2[N], byidx[N];
    const char *cfg = "num_prompts: 300, input_dist: lognormal, input_len: 64, input_std: 30, "
                      "output_dist: uniform, output_len: 50, output_range_ratio: 0.9, "
                      "prefix_len: 5, seed: 11";
    if (run_ok(cfg) != 0) return;
    for (size_t i = 0; i < 300; i++) h1[i] = req_hash(cap_get(i));
    if (run_ok(cfg) != 0) return;
    int diff = 0;
    for (size_t i = 0; i < 300; i++) {
        h2[i] = req_hash(cap_get(i));
        diff += h1[i] != h2[i] || h1[i] == 0;
    }
    CB_CHECK_EQ_INT(diff, 0); /* same seed: identical requests */
    /* made by 3 prefetch threads 8 ahead, or in run: the same requests */
    static const char *const makers[] = {"workers: 3, prefetch: 8", "prefetch: 0"};
    for (int m = 0; m < 2; m++) {
        char c2[512];
        snprintf(c2, sizeof c2, "%s, %s", cfg, makers[m]);
        if (run_ok(c2) != 0) return;
        diff = 0;
        for (size_t i = 0; i < 300; i++) diff += h1[i] != req_hash(cap_get(i));
        CB_CHECK_EQ_INT(diff, 0);
    }
    if (run_ok("num_prompts: 300, input_dist: lognormal, input_len: 64, input_std: 30, "
               "output_dist: uniform, output_len: 50, output_range_ratio: 0.9, "
               "prefix_len: 5, seed: 12") != 0)
        return;
    int same = 0;
    for (size_t i = 0; i < 300; i++) same += h1[i] == req_hash(cap_get(i));
    CB_CHECK_EQ_INT(same, 0); /* another seed: other requests */

    /* shuffled over 2 epochs: each epoch is a permutation, request i is the same function of
     * (seed, i), and the two epochs differ in order */
    for (size_t i = 0; i < 300; i++) byidx[i] = h1[i]; /* unshuffled: query id i = index i */
    if (run_ok("num_prompts: 300, input_dist: lognormal, input_len: 64, input_std: 30, "
               "output_dist: uniform, output_len: 50, output_range_ratio: 0.9, "
               "prefix_len: 5, seed: 11, shuffle: true, epochs: 2, prefetch: 0") != 0)
        return;
    CB_CHECK_EQ_INT(g_cap.n, 600);
    int bad = 0, moved = 0, epoch_diff = 0;
    unsigned char seen[2][300];
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < 600; i++) {
        cb_llm_request *r = cap_get(i);
        if (!r || r->index < 0 || r->index >= 300 || r->epoch < 0 || r->epoch > 1 ||
            seen[r->epoch][r->index]++ || req_hash(r) != byidx[r->index]) {
            bad++;
            continue;
        }
        moved += r->index != r->batch;
    }
    for (size_t i = 0; i < 300; i++) {
        cb_llm_request *a = cap_get(i), *b = NULL;
        for (size_t j = 300; j < 600 && !b; j++) /* the query of epoch 1 with batch i */
            if (cap_get(j) && cap_get(j)->epoch == 1 && cap_get(j)->batch == (int64_t)i)
                b = cap_get(j);
        epoch_diff += a && b && a->batch == (int64_t)i && a->index != b->index;
    }
    CB_CHECK_EQ_INT(bad, 0);
    CB_CHECK_CMP_INT(moved, >, 250);
    CB_CHECK_CMP_INT(epoch_diff, >, 250);
}

/* ---- files --------------------------------------------------------------------------------- */

static const char k_uni[] = "H\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe4\xbd\xa0\xe5\xa5\xbd "
                            "\xf0\x9f\x8c\x8d";

static void test_jsonl(void) {
    const char *dir = cb_test_tmpdir();
    char text[1024], cfg[1024];
    snprintf(text, sizeof text,
             "{\"prompt\": \"%s\", \"max_tokens\": 17}\n"
             "\n"
             "{\"prompt_ids\": [1, 2, 3, 40000], \"output_len\": 5}\r\n"
             "{\"prompt\": \"two\\nlines \\\"quoted\\\" \\u00e9\\ud83d\\ude00\", "
             "\"prompt_ids\": [7, 8], \"extra\": {\"ignored\": [1]}}",
             k_uni);
    const char *path = cb_test_write(dir, "p.jsonl", text);
    snprintf(cfg, sizeof cfg, "source: jsonl, path: %s, ignore_eos: false", path);
    if (run_ok(cfg) != 0) return;
    CB_CHECK_EQ_INT(g_cap.n, 3);
    cb_llm_request *r = cap_get(0);
    if (r) {
        CB_CHECK_EQ_INT(r->index, 0);
        CB_CHECK_EQ_INT(r->n_prompt_tokens, 0);
        CB_CHECK_EQ_INT(r->prompt_bytes, strlen(k_uni));
        CB_CHECK_STR_EQ(cb_llm_request_text(r), k_uni);
        CB_CHECK_EQ_INT(r->max_new_tokens, 17);
        CB_CHECK_EQ_INT(r->flags, 0);
        CB_CHECK_EQ_INT(r->vocab_size, 0);
    }
    r = cap_get(1);
    if (r) {
        CB_CHECK_EQ_INT(r->n_prompt_tokens, 4);
        CB_CHECK_EQ_INT(r->prompt_bytes, 0);
        CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[3], 40000);
        CB_CHECK_EQ_INT(r->max_new_tokens, 5);
    }
    r = cap_get(2);
    if (r) {
        CB_CHECK_EQ_INT(r->n_prompt_tokens, 2);
        CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[0], 7);
        CB_CHECK_EQ_INT(cb_llm_request_prompt_ids(r)[1], 8);
        CB_CHECK_STR_EQ(cb_llm_request_text(r),
                        "two\nlines \"quoted\" \xc3\xa9\xf0\x9f\x98\x80");
        CB_CHECK_EQ_INT(r->max_new_tokens, 128); /* none in the file: output_len's default */
    }
    /* output_len in the config overrides the file; num_prompts past the file wraps */
    snprintf(cfg, sizeof cfg, "source: jsonl, path: %s, output_len: 9, num_prompts: 7", path);
    if (run_ok(cfg) != 0) return;
    CB_CHECK_EQ_INT(g_cap.n, 7);
    for (size_t i = 0; i < 7; i++) {
        r = cap_get(i);
        CB_CHECK(r != NULL);
        if (!r) continue;
        CB_CHECK_EQ_INT(r->index, i % 3);
        CB_CHECK_EQ_INT(r->max_new_tokens, 9);
        CB_CHECK_EQ_INT(r->flags, CB_LLM_REQ_IGNORE_EOS);
    }
}

static void test_sharegpt(void) {
    const char *dir = cb_test_tmpdir();
    char text[2048], cfg[1024];
    snprintf(text, sizeof text,
             "[\n"
             " {\"id\": \"a\", \"conversations\": [\n"
             "   {\"from\": \"human\", \"value\": \"Bonjour, \\u00e7a va? %s\"},\n"
             "   {\"from\": \"gpt\", \"value\": \"%s\"},\n"
             "   {\"from\": \"human\", \"value\": \"more\"}, {\"from\": \"gpt\", \"value\": \"x\"}]},\n"
             " {\"id\": \"b\", \"conversations\": [{\"from\": \"gpt\", \"value\": \"only\"}]},\n"
             " {\"id\": \"c\", \"conversations\": [{\"from\": \"system\", \"value\": \"sys\"},\n"
             "   {\"from\": \"human\", \"value\": \"Q2\"}, {\"from\": \"gpt\", \"value\": \"1234\"}]}\n"
             "]\n",
             k_uni, k_uni);
    const char *path = cb_test_write(dir, "sg.json", text);
    snprintf(cfg, sizeof cfg, "source: sharegpt, path: %s", path);
    if (run_ok(cfg) != 0) return;
    CB_CHECK_EQ_INT(g_cap.n, 2); /* "b" has no human turn: skipped */
    cb_llm_request *r = cap_get(0);
    char want[256];
    snprintf(want, sizeof want, "Bonjour, \xc3\xa7" "a va? %s", k_uni);
    if (r) {
        CB_CHECK_STR_EQ(cb_llm_request_text(r), want);
        CB_CHECK_EQ_INT(r->max_new_tokens, (strlen(k_uni) + 3) / 4); /* gpt bytes / 4 */
        CB_CHECK_EQ_INT(r->n_turns, 4);
        CB_CHECK_EQ_INT(r->n_prompt_tokens, 0);
    }
    r = cap_get(1);
    if (r) {
        CB_CHECK_STR_EQ(cb_llm_request_text(r), "Q2");
        CB_CHECK_EQ_INT(r->max_new_tokens, 1);
        CB_CHECK_EQ_INT(r->n_turns, 3);
        CB_CHECK_EQ_INT(r->index, 1);
    }
    /* output_len given: it decides */
    snprintf(cfg, sizeof cfg, "source: sharegpt, path: %s, output_len: 33", path);
    if (run_ok(cfg) != 0) return;
    CB_CHECK(cap_get(0) && cap_get(0)->max_new_tokens == 33);
    CB_CHECK(cap_get(1) && cap_get(1)->max_new_tokens == 33);
}

/* ---- errors -------------------------------------------------------------------------------- */

/* Writes a file (name *.jsonl: source jsonl, else sharegpt) and runs llm.prompts over it with
 * `extra` config, which must fail; returns the message (static). */
static const char *file_fail(const char *name, const char *content, const char *extra) {
    static const char *dir;
    if (!dir) dir = cb_test_tmpdir();
    const char *p = cb_test_write(dir, name, content);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "source: %s, path: %s%s%s",
             strstr(name, ".jsonl") ? "jsonl" : "sharegpt", p, *extra ? ", " : "", extra);
    const char *msg = run_fail(cfg);
    printf("# %s\n", msg);
    return msg;
}

static void test_errors(void) {
    const char *msg = file_fail("bad.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n"
                                             "{\"prompt\": \"c\",}\n", "");
    CB_CHECK_CONTAINS(msg, "bad.jsonl:3:");
    CB_CHECK_CONTAINS(msg, "JSON");
    msg = file_fail("missing.jsonl", "{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n", "");
    CB_CHECK_CONTAINS(msg, "missing.jsonl:2:");
    CB_CHECK_CONTAINS(msg, "neither \"prompt\" nor \"prompt_ids\"");
    msg = file_fail("long.jsonl", "{\"prompt\": \"0123456789\"}\n{\"prompt\": \"0123456789A\"}\n",
                    "max_prompt_len: 10");
    CB_CHECK_CONTAINS(msg, "long.jsonl:2: prompt: prompt has 11 bytes, more than max_prompt_len");
    const char *ids = "{\"prompt_ids\": [1, 2]}\n{\"prompt_ids\": [5, 100]}\n";
    msg = file_fail("ids.jsonl", ids, "vocab_size: 100");
    CB_CHECK_CONTAINS(msg, "ids.jsonl:2: prompt_ids: item 1");
    msg = file_fail("ids.jsonl", ids, "max_prompt_len: 1");
    CB_CHECK_CONTAINS(msg, "ids.jsonl:1: prompt_ids: prompt has 2 ids");
    msg = file_fail("max.jsonl", "{\"prompt\": \"a\", \"max_tokens\": 0}\n", "");
    CB_CHECK_CONTAINS(msg, "max.jsonl:1: max_tokens: expected an integer");
    msg = file_fail("bad_utf8.jsonl", "{\"prompt\": \"a\xff\"}\n", "");
    CB_CHECK_CONTAINS(msg, "bad_utf8.jsonl:1");
    msg = file_fail("empty.jsonl", "\n  \n", "");
    CB_CHECK_CONTAINS(msg, "no prompts");
    msg = file_fail("sg_bad.json",
                    "[{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"},\n"
                    "  {\"from\": \"gpt\", \"value\": \"b\"}]},\n"
                    " {\"conversations\": [{\"from\": \"human\", \"value\": 5}]}]\n",
                    "");
    CB_CHECK_CONTAINS(msg, "sg_bad.json:3:");
    CB_CHECK_CONTAINS(msg, "[1].conversations[0]");
    msg = file_fail("sg_obj.json", "{\"conversations\": []}", "");
    CB_CHECK_CONTAINS(msg, "expected a JSON array");
    msg = file_fail("sg_none.json", "[{\"id\": 1}]", "");
    CB_CHECK_CONTAINS(msg, "sg_none.json:1:2: [0].conversations: missing");
    msg = file_fail("sg_syntax.json", "[\n{\"conversations\": [}\n]", "");
    CB_CHECK_CONTAINS(msg, "sg_syntax.json:2:");

    /* configuration errors, refused when the config is loaded */
    msg = run_fail("source: jsonl");
    CB_CHECK_CONTAINS(msg, "path");
    msg = run_fail("vocab_size: 10, first_id: 10");
    CB_CHECK_CONTAINS(msg, "first_id");
    msg = run_fail("prefix_len: 40, max_prompt_len: 40");
    CB_CHECK_CONTAINS(msg, "prefix_len");
}

/* ---- the payload check --------------------------------------------------------------------- */

static void test_request_check(void) {
    size_t bytes = cb_llm_request_bytes(3, 0, 5);
    CB_CHECK_EQ_INT(bytes, 144 + 12 + 4 + 6); /* ids, pad to 8, text and NUL */
    CB_CHECK_EQ_INT(cb_llm_request_bytes(CB_LLM_MAX_PROMPT_TOKENS + 1, 0, 0), 0);
    unsigned char *mem = calloc(1, bytes);
    cb_buffer b = {.data = mem, .size_bytes = bytes, .kind = CB_BUFFER_HOST};
    cb_llm_request *r = cb_llm_request_init(&b, 3, 0, 5);
    memcpy(cb_llm_request_text(r), "h\xc3\xa9ll", 5);
    const char *why = NULL;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), 0);
    r->vocab_size = 1;
    cb_llm_request_prompt_ids(r)[2] = 1;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    CB_CHECK_CONTAINS(why, "vocab_size");
    r->vocab_size = 0;
    cb_llm_request_text(r)[1] = 'x'; /* leaves a continuation byte without its lead */
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    CB_CHECK_CONTAINS(why, "UTF-8");
    cb_llm_request_text(r)[1] = '\xc3';
    r->text_offset += 8;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    CB_CHECK_CONTAINS(why, "offsets");
    r->text_offset -= 8;
    r->n_prompt_tokens = 4; /* more ids than the buffer holds: offsets no longer match */
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    r->n_prompt_tokens = 3;
    b.size_bytes--;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    CB_CHECK_CONTAINS(why, "fit");
    b.size_bytes++;
    r->prefix_tokens = 4;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    r->prefix_tokens = 0;
    r->magic ^= 1;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), -1);
    CB_CHECK_CONTAINS(why, "not an LLM request");
    r->magic ^= 1;
    CB_CHECK_EQ_INT(cb_llm_request_check(&b, &why), 0);
    /* UTF-8 validation: overlong, surrogate, above U+10FFFF, truncated */
    CB_CHECK_EQ_INT(cb_llm_utf8_valid_prefix((const unsigned char *)"a\xc0\xaf", 3), 1);
    CB_CHECK_EQ_INT(cb_llm_utf8_valid_prefix((const unsigned char *)"\xed\xa0\x80", 3), 0);
    CB_CHECK_EQ_INT(cb_llm_utf8_valid_prefix((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
    CB_CHECK_EQ_INT(cb_llm_utf8_valid_prefix((const unsigned char *)"ab\xe4\xbd", 4), 2);
    CB_CHECK_EQ_INT(cb_llm_utf8_valid_prefix((const unsigned char *)"\xf0\x9f\x8c\x8d", 4), 4);
    free(mem);
}

int main(void) {
    CB_RUN(test_request_check);
    CB_RUN(test_fixed_prefix_uniform);
    CB_RUN(test_normal_lognormal);
    CB_RUN(test_determinism);
    CB_RUN(test_jsonl);
    CB_RUN(test_sharegpt);
    CB_RUN(test_errors);
    cap_reset();
    return cb_test_done();
}
