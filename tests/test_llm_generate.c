/* tests/test_llm_generate.c - llm.generate in real pipelines (the tiny preset, random weights).
 *
 * Pipelines: llm.prompts -> llm.generate -> test.capture, where test.capture (defined here)
 * validates each payload with cb_llm_request_check, keeps a copy by query id
 * (tests/llm_capture.h) and records the completion order. The checks: under a closed and an open
 * (Poisson) load every request completes with max_new_tokens output ids (ignore_eos) and its
 * prompt kept, and requests leave in the order they finish (later short ones overtake); greedy
 * outputs are the same with max_batch 1 and 8, with chunked prefill and with max_waiting 1
 * (run() steps the engine itself), and sampled ones are the same with max_batch 1 and 8 (each
 * request's own RNG); a KV budget that fits two or three requests at a time completes everything
 * with the same ids and reports KV waits; the metrics add up and summary.json has them
 * (distributions with percentiles, goodput with an slo); token_times has every token's time (the
 * first at the TTFT); a request too long for the context fails the run naming the request while
 * the queries completed before it keep their records; a timeout cancels the held queries (not an
 * error); configuration errors (a bad device, slo keys, budgets, a text-only request) are refused with
 * their key.
 */
#include <stdlib.h>
#include <string.h>

#include "analysis/stage_metrics.h"
#include "harness.h"
#include "llm/request.h"
#include "run_fixture.h"

#define MAXQ 256

#include "llm_capture.h"

/* Query ids in the order they reached the capture (continuous batching completes them out of
 * order). */
static uint64_t g_order[MAXQ];
static size_t g_n_order;

static int order_create(void *state, const cb_stage_args *args, cb_error *err) {
    g_n_order = 0;
    return CB_OK;
}

static int order_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    if (g_n_order < MAXQ) g_order[g_n_order++] = q->id;
    return cap_store(q, err) ? CB_EINVAL : CB_OK;
}

static const cb_stage_ops k_cap_ops = {
    .name = "test.capture",
    .summary = "validates the generated requests, keeps a copy and the completion order",
    .create = order_create,
    .run = order_run,
    .state_size = 1,
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
};

enum { NP = 24 };

#define PROMPTS "num_prompts: 24, input_len: 20, input_dist: uniform, input_range_ratio: 0.5, " \
                "output_len: 6, output_dist: uniform, output_range_ratio: 0.5, vocab_size: 512, " \
                "seed: 5"
#define GEN0 "model: tiny, precision: f32, kv_cache_bytes: 2000000"
#define GEN GEN0 ", max_tokens_per_step: 64"
#define CLOSED "{component: closed, timeout: 60, config: {concurrency: 8}}"
#define POISSON "{component: poisson, timeout: 60, config: {rate: 400, seed: 2}}"

/* Runs llm.prompts (`prompts`) -> llm.generate (`gen`) -> test.capture under `loadgen`. 0 when
 * the run had no error, else -1 with the message in *msg (static). */
static int run_gen(const char *loadgen, const char *prompts, const char *gen, run_fixture *f,
                   const char **msg) {
    static char m[2048];
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: gen\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: %s\n"
             "    stages:\n"
             "      - {id: 0, component: llm.prompts, outputs: [1], config: {%s}}\n"
             "      - {id: 1, component: llm.generate, outputs: [2], config: {%s}}\n"
             "      - {id: 2, component: test.capture}\n",
             loadgen, prompts, gen);
    cap_reset();
    m[0] = 0;
    *msg = m;
    int bad = run_fixture_yaml(f, yaml, NULL, &k_cap_ops) != 0 || f->rc != CB_OK;
    if (bad) cb_error_format(&f->err, m, sizeof m);
    else if (f->res.n_errors) snprintf(m, sizeof m, "%s", f->res.errors[0]);
    return bad || f->res.n_errors ? -1 : 0;
}

/* Output ids of the captured requests by request index (n[i] = -1: not seen). */
typedef struct outputs {
    int32_t ids[NP][16];
    int n[NP];
} outputs;

static void collect(outputs *o) {
    for (int i = 0; i < NP; i++) o->n[i] = -1;
    for (size_t id = 0; id < MAXQ; id++) {
        cb_llm_request *r = cap_get(id);
        if (!r || r->index < 0 || r->index >= NP) continue;
        int i = (int)r->index;
        o->n[i] = (int)r->n_output_tokens;
        CB_CHECK_EQ_INT(r->n_output_tokens, r->max_new_tokens); /* ignore_eos */
        CB_CHECK(r->n_prompt_tokens >= 10 && r->n_prompt_tokens <= 30);
        CB_CHECK_EQ_INT(r->vocab_size, 512);
        if (r->n_output_tokens <= 16)
            memcpy(o->ids[i], cb_llm_request_output_ids(r), sizeof(int32_t) * r->n_output_tokens);
    }
}

static int same_q(const outputs *a, const outputs *b, int quiet) {
    int ok = 1;
    for (int i = 0; i < NP; i++)
        if (a->n[i] != b->n[i] || a->n[i] < 0 ||
            memcmp(a->ids[i], b->ids[i], sizeof(int32_t) * (size_t)a->n[i]) != 0) {
            if (!quiet)
                printf("# request %d: %d ids [%d %d %d ...] vs %d ids [%d %d %d ...]\n", i, a->n[i],
                   a->ids[i][0], a->ids[i][1], a->ids[i][2], b->n[i], b->ids[i][0],
                   b->ids[i][1], b->ids[i][2]);
            ok = 0;
        }
    return ok;
}

static int same(const outputs *a, const outputs *b) { return same_q(a, b, 0); }

/* The summary's statistics of llm.generate's metric `metric` (stage 1), as summary.json has
 * them. */
static cb_metric_stats gen_stats(run_fixture *f, int metric) {
    cb_pipeline_record pr[1];
    cb_summary_input in;
    run_fixture_summary_input(f, pr, &in);
    cb_stage_metrics m;
    cb_metric_stats st;
    memset(&st, 0, sizeof st);
    if (cb_stage_metrics_compute(&in, 0, 1000000000, &m) == CB_OK) {
        st = m.stats[m.first[1] + (size_t)metric];
        cb_stage_metrics_fini(&m);
    }
    st.def = NULL;
    return st;
}

static double metric_sum(run_fixture *f, int metric, size_t *count) {
    cb_metric_stats st = gen_stats(f, metric);
    *count = st.n;
    return st.sum;
}

/* Metric indices of llm.generate (its table's order). */
enum { M_PROMPT, M_OUTPUT, M_TOKENS, M_TTFT, M_TPOT, M_ITL_MEAN, M_ITL_MAX, M_KV_WAIT };

static outputs g_ref;

static void test_loads(void) {
    const char *loads[] = {CLOSED, POISSON};
    for (int k = 0; k < 2; k++) {
        run_fixture f;
        const char *msg;
        int rc = run_gen(loads[k], PROMPTS, GEN, &f, &msg);
        CB_CHECK_EQ_INT(rc, 0);
        if (rc) printf("# %s\n", msg);
        CB_CHECK_EQ_INT(g_cap.n, NP);
        outputs o;
        collect(&o);
        int outs = 0, prompts = 0;
        for (int i = 0; i < NP; i++) {
            CB_CHECK(o.n[i] >= 3 && o.n[i] <= 9);
            outs += o.n[i];
        }
        for (size_t id = 0; id < MAXQ; id++)
            if (cap_get(id)) prompts += (int)cap_get(id)->n_prompt_tokens;
        size_t n;
        CB_CHECK_NEAR(metric_sum(&f, M_OUTPUT, &n), outs, 0.5);
        CB_CHECK_EQ_INT(n, NP);
        CB_CHECK_NEAR(metric_sum(&f, M_PROMPT, &n), prompts, 0.5);
        CB_CHECK_NEAR(metric_sum(&f, M_TOKENS, &n), prompts + outs, 0.5);
        metric_sum(&f, M_TTFT, &n);
        CB_CHECK_EQ_INT(n, NP);
        metric_sum(&f, M_TPOT, &n);
        CB_CHECK_EQ_INT(n, NP); /* every request has >= 2 tokens */
        /* TTFT is measured from the arrival: at least the query's own latency to its first
         * token, at most its whole latency */
        cb_pipeline_record rec = run_fixture_records(&f, 0);
        for (size_t i = 0; i < rec.n_metrics; i++) {
            const cb_metric_event *me = &rec.metrics[i];
            if (me->stage != 1 || me->metric != M_TTFT) continue;
            for (size_t j = 0; j < rec.n_queries; j++)
                if (rec.queries[j].query_id == me->query_id) {
                    CB_CHECK(me->value > 0);
                    CB_CHECK(me->value <= rec.queries[j].end_ns - rec.queries[j].scheduled_ns);
                }
        }
        /* requests leave as they finish, not in arrival order (output lengths 3..9): under the
         * closed load all 8 are in flight together, so some must overtake; under Poisson
         * arrivals whether they overlap depends on the machine's speed (a fast engine finishes
         * each before the next arrives), so only the count is checked there */
        size_t inversions = 0;
        for (size_t i = 0; i + 1 < g_n_order; i++) inversions += g_order[i] > g_order[i + 1];
        CB_CHECK_EQ_INT(g_n_order, NP);
        if (k == 0) CB_CHECK_CMP_INT(inversions, >, 0);
        cb_metric_stats ttft = gen_stats(&f, M_TTFT);
        CB_CHECK(ttft.p50 > 0 && ttft.p50 <= ttft.p99 && ttft.p99 <= ttft.max);
        if (k == 0) g_ref = o;
        else CB_CHECK(same(&o, &g_ref)); /* greedy: the load does not change the tokens */
        run_fixture_fini(&f);
    }
}

static void test_batch_invariance(void) {
    /* the last: one waiting request at most, so run() steps the engine itself (back-pressure) */
    const char *gens[] = {GEN ", max_batch: 1", GEN0 ", max_batch: 8, max_tokens_per_step: 16",
                          GEN ", max_batch: 1, temperature: 0.9, top_k: 50, top_p: 0.95",
                          GEN ", max_batch: 8, temperature: 0.9, top_k: 50, top_p: 0.95",
                          GEN ", max_batch: 2, max_waiting: 1"};
    outputs o[5];
    for (int k = 0; k < 5; k++) {
        run_fixture f;
        const char *msg;
        int rc = run_gen(CLOSED, PROMPTS, gens[k], &f, &msg);
        CB_CHECK_EQ_INT(rc, 0);
        if (rc) printf("# %s\n", msg);
        collect(&o[k]);
        run_fixture_fini(&f);
    }
    CB_CHECK(same(&o[0], &g_ref));
    CB_CHECK(same(&o[1], &g_ref));
    CB_CHECK(same(&o[2], &o[3]));
    CB_CHECK(same(&o[4], &g_ref));
    CB_CHECK(!same_q(&o[2], &g_ref, 1)); /* sampling did sample */
}

static void test_kv_pressure(void) {
    /* tiny f32: 8192 bytes a block of 16 positions; prompts 10..30 + up to 9 outputs need 2 or 3
     * blocks: 6 blocks fit two or three requests at a time */
    run_fixture f;
    const char *msg;
    int rc = run_gen(CLOSED, PROMPTS, "model: tiny, precision: f32, kv_cache_bytes: 49152", &f,
                     &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    outputs o;
    collect(&o);
    CB_CHECK(same(&o, &g_ref));
    size_t n;
    double wait = metric_sum(&f, M_KV_WAIT, &n);
    CB_CHECK_EQ_INT(n, NP);
    int waited = 0;
    cb_pipeline_record rec = run_fixture_records(&f, 0);
    for (size_t i = 0; i < rec.n_metrics; i++)
        waited += rec.metrics[i].stage == 1 && rec.metrics[i].metric == M_KV_WAIT &&
                  rec.metrics[i].value > 0;
    printf("# %d of %d requests waited for KV blocks, %.3f ms in all\n", waited, NP, wait / 1e6);
    CB_CHECK(waited > 0);
    run_fixture_fini(&f);
}

static void test_summary(void) {
    run_fixture f;
    const char *msg;
    int rc = run_gen(CLOSED, PROMPTS, GEN ", slo: {ttft_ms: 60000, tpot_ms: 60000}", &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", msg);
        run_fixture_fini(&f);
        return;
    }
    cb_pipeline_record pr[1];
    cb_summary_input in;
    run_fixture_summary_input(&f, pr, &in);
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", f.dir);
    FILE *out = fopen(path, "w");
    CB_CHECK_EQ_INT(cb_summary_write_json(&in, out, NULL), CB_OK);
    fclose(out);
#define GM "d[\"pipelines\"][0][\"stages\"][1][\"metrics\"]"
    char *v = cb_test_py_json(path, "sorted(" GM ")");
    CB_CHECK_STR_EQ(v, "['batch_size', 'engine_overhead', 'itl_max_ns', 'itl_mean_ns', "
                       "'kv_used', 'kv_wait_ns', 'output_tokens', 'prompt_tokens', 'queue_ns', "
                       "'slo_met', 'step_overhead_ns', 'tokens', 'tpot_ns', 'ttft_ns']");
    free(v);
    v = cb_test_py_json(path, GM "[\"ttft_ns\"][\"kind\"], " GM "[\"ttft_ns\"][\"n\"], "
                        GM "[\"ttft_ns\"][\"p50\"] <= " GM "[\"ttft_ns\"][\"p99\"], "
                        GM "[\"slo_met\"][\"sum\"], " GM "[\"output_tokens\"][\"per_second\"] > 0, "
                        GM "[\"kv_used\"][\"kind\"], 0 < " GM "[\"batch_size\"][\"max\"] <= 32");
    CB_CHECK_STR_EQ(v, "dist 24 True 24 True gauge True"); /* a generous slo: all met */
    free(v);
    run_fixture_fini(&f);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* token_times: one record per output token, numbered from 0 per request, times non-decreasing,
 * and each request's first at its TTFT (the same values as the ttft_ns reports). */
static void test_token_times(void) {
    char path[600], gen[1200];
    snprintf(path, sizeof path, "%s/tt.bin", cb_test_tmpdir());
    snprintf(gen, sizeof gen, GEN ", token_times: %s", path);
    run_fixture f;
    const char *msg;
    int rc = run_gen(POISSON, PROMPTS, gen, &f, &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    struct {
        int64_t index, t_ns;
        int32_t n, token;
    } rec[512];
    FILE *fp = fopen(path, "rb");
    size_t n = fp ? fread(rec, sizeof rec[0], 512, fp) : 0;
    if (fp) fclose(fp);
    size_t outs = 0;
    for (size_t id = 0; id < MAXQ; id++)
        if (cap_get(id)) outs += cap_get(id)->n_output_tokens;
    CB_CHECK_EQ_INT(sizeof rec[0], 24);
    CB_CHECK_EQ_INT(n, outs);
    int64_t first[NP], ttft[NP];
    int next[NP] = {0}, bad = 0, nf = 0, nt = 0;
    int64_t last[NP] = {0};
    for (size_t i = 0; i < n; i++) {
        int k = (int)rec[i].index;
        if (k < 0 || k >= NP || rec[i].n != next[k] || rec[i].t_ns < last[k]) {
            bad++;
            continue;
        }
        if (rec[i].n == 0 && nf < NP) first[nf++] = rec[i].t_ns;
        next[k]++;
        last[k] = rec[i].t_ns;
    }
    CB_CHECK_EQ_INT(bad, 0);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    for (size_t i = 0; i < r.n_metrics; i++)
        if (r.metrics[i].stage == 1 && r.metrics[i].metric == M_TTFT && nt < NP)
            ttft[nt++] = (int64_t)r.metrics[i].value;
    CB_CHECK_EQ_INT(nf, NP);
    CB_CHECK_EQ_INT(nt, NP);
    qsort(first, (size_t)nf, sizeof first[0], cmp_i64);
    qsort(ttft, (size_t)nt, sizeof ttft[0], cmp_i64);
    CB_CHECK(nf == nt && memcmp(first, ttft, sizeof first[0] * (size_t)nf) == 0);
    run_fixture_fini(&f);
}

static void test_bad_request(void) {
    /* three requests, then one of 1020 ids + 10 new tokens: over the 1024 positions of tiny */
    const char *dir = cb_test_tmpdir();
    static char text[16384];
    size_t k = (size_t)snprintf(text, sizeof text,
                                "{\"prompt_ids\": [1, 2, 3], \"max_tokens\": 4}\n"
                                "{\"prompt_ids\": [4, 5], \"max_tokens\": 3}\n"
                                "{\"prompt_ids\": [6], \"max_tokens\": 5}\n"
                                "{\"max_tokens\": 10, \"prompt_ids\": [7");
    for (int i = 1; i < 1020; i++)
        k += (size_t)snprintf(text + k, sizeof text - k, ", %d", i % 500);
    snprintf(text + k, sizeof text - k, "]}\n");
    char prompts[800];
    snprintf(prompts, sizeof prompts, "source: jsonl, path: %s, vocab_size: 512, shuffle: false",
             cb_test_write(dir, "bad.jsonl", text));
    run_fixture f;
    const char *msg;
    int rc = run_gen("{component: closed, timeout: 60, config: {concurrency: 1}}", prompts,
                     GEN, &f, &msg);
    CB_CHECK_EQ_INT(rc, -1);
    printf("# %s\n", msg);
    CB_CHECK_CONTAINS(msg, "request 3: prompt of 1020 tokens + max_new_tokens 10");
    CB_CHECK_CONTAINS(msg, "max_positions 1024");
    CB_CHECK_EQ_INT(g_cap.n, 3);
    cb_pipeline_record rec = run_fixture_records(&f, 0);
    int ok = 0, err = 0;
    for (size_t i = 0; i < rec.n_queries; i++) {
        ok += rec.queries[i].status == CB_QUERY_OK;
        err += rec.queries[i].status == CB_QUERY_ERROR;
    }
    CB_CHECK_EQ_INT(ok, 3);
    CB_CHECK_EQ_INT(err, 1);
    size_t n;
    CB_CHECK_NEAR(metric_sum(&f, M_OUTPUT, &n), 12, 0.5); /* 4 + 3 + 5, kept */
    CB_CHECK_EQ_INT(n, 3);
    run_fixture_fini(&f);
}

/* A timeout while requests are held: the queries in flight get the host's grace period, then
 * step() completes every held one as cancelled (not failed). 400 requests of 1000 tokens at one
 * sequence a step are minutes of work for any machine; the run ends a grace period after 0.2 s. */
static void test_timeout_cancels(void) {
    run_fixture f;
    const char *msg;
    int rc = run_gen("{component: closed, timeout: 0.2, config: {concurrency: 400}}",
                     "num_prompts: 400, input_len: 8, output_len: 1000, vocab_size: 512",
                     "model: tiny, precision: f32, max_batch: 1, kv_cache_bytes: 8000000", &f,
                     &msg);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n", msg);
    CB_CHECK(f.res.timed_out);
    cb_pipeline_record r = run_fixture_records(&f, 0);
    size_t cancelled = 0, other = 0;
    for (size_t i = 0; i < r.n_queries; i++) {
        cancelled += r.queries[i].status == CB_QUERY_CANCELLED;
        other += r.queries[i].status != CB_QUERY_CANCELLED && r.queries[i].status != CB_QUERY_OK;
    }
    printf("# %zu queries, %zu cancelled\n", r.n_queries, cancelled);
    CB_CHECK_CMP_INT(cancelled, >, 100); /* 2.2 s of grace: 15 finished here */
    CB_CHECK_EQ_INT(other, 0);
    CB_CHECK_CMP_INT(f.res.end_ns - f.res.t0_ns, <, 20000000000LL);
    run_fixture_fini(&f);
}

static void expect_fail(const char *prompts, const char *gen, const char *needle) {
    run_fixture f;
    const char *msg;
    CB_CHECK_EQ_INT(run_gen(CLOSED, prompts, gen, &f, &msg), -1);
    printf("# %s\n", msg);
    CB_CHECK_CONTAINS(msg, needle);
    run_fixture_fini(&f);
}

static void test_config_errors(void) {
    /* cuda:N itself runs where there is a device (test_gpu_llm checks the CUDA path). */
    expect_fail(PROMPTS, GEN ", device: \"cuda:x\"", "device: expected cpu or cuda:N, got \"cuda:x\"");
    expect_fail(PROMPTS, GEN ", slo: {ttft_ms: 5, e2e_ms: 9}", "slo: unknown key 'e2e_ms'");
    expect_fail(PROMPTS, "model: tiny, max_batch: 64, max_tokens_per_step: 32",
                "max_tokens_per_step: 32 is below max_batch 64");
    expect_fail(PROMPTS, "model: tiny, kv_cache_bytes: 1000", "kv_cache_bytes");
    expect_fail(PROMPTS, "model: nosuch", "model:");
    const char *p = cb_test_write(cb_test_tmpdir(), "text.jsonl", "{\"prompt\": \"hello\"}\n");
    char prompts[800];
    snprintf(prompts, sizeof prompts, "source: jsonl, path: %s", p);
    expect_fail(prompts, GEN, "put llm.tokenize before llm.generate");
}

int main(void) {
    CB_RUN(test_loads);
    CB_RUN(test_batch_invariance);
    CB_RUN(test_kv_pressure);
    CB_RUN(test_summary);
    CB_RUN(test_token_times);
    CB_RUN(test_bad_request);
    CB_RUN(test_timeout_cancels);
    CB_RUN(test_config_errors);
    cap_reset();
    return cb_test_done();
}
