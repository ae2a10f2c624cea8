/* stages/llm/generate.c - llm.generate: LLM generation with continuous batching as a stage.
 *
 * What: each query carries one request (llm/request.h) with prompt ids (llm.prompts with ids, or
 * after llm.tokenize). run() validates it, adds it to the instance's engine (llm/engine.h) and
 * holds the query (stage.h, "Held queries"); step() runs one engine step (a decode token for
 * every running request plus prompt chunks up to max_tokens_per_step) and completes the queries
 * whose requests finished, each with a new payload carrying the output ids (request.h's rule: a
 * new buffer, fields copied). So one instance serves many requests at once, without a thread per
 * request, and they leave in the order they finish. When max_waiting requests already wait for
 * admission, run() steps the engine itself until one is admitted (back-pressure instead of an
 * unbounded queue).
 *
 * Model: `model` is a preset (qwen2.5-0.5b, llama-3.2-1b, tinyllama-1.1b, qwen3-0.6b, tiny...)
 * or a config.json (or a directory holding one); `weights` a safetensors file, index or
 * directory; without weights the matrices are seeded random at the real shapes (a warning says so:
 * speed runs need the shapes, not trained values). Loaded in prepare (untimed) with the model's
 * scratch and the KV cache of kv_cache_bytes in blocks of block_tokens positions. `threads`:
 * the forward pass's threads (default 1: set it to the cores the pipeline has). device: cpu, or
 * cuda:N, where the forward pass runs in the CUDA module (llm/lm_cuda.h through lm_model.h's
 * device option: same engine, same KV semantics; the device opens in prepare, with the KV pool).
 *
 * Metrics per request (reported when it completes; latencies from the query's scheduled
 * arrival, host->arrival_ns): prompt_tokens, output_tokens, tokens (COUNTs: their per_second in
 * the summary are the throughputs), ttft_ns (arrival to first token), tpot_ns ((last - first
 * token time) / (output tokens - 1), for 2 or more tokens), itl_mean_ns and itl_max_ns (the mean
 * and the largest gap between consecutive tokens of the request: the mean equals tpot_ns by
 * definition; the max shows stalls), kv_wait_ns (time the request waited while the KV pool
 * stopped admission), queue_ns (arrival to admission), all DIST; batch_size and kv_used (GAUGE:
 * running sequences and fraction of KV blocks in use in the step the request finished in);
 * slo_met (COUNT: 1 when TTFT and TPOT meet `slo`, else 0; its per_second is the goodput; only
 * with slo); engine_overhead and step_overhead_ns (GAUGE: the fraction of all engine step time
 * so far, and the mean time per step, spent outside the matmuls and attention: norms, RoPE,
 * scheduling, sampling, bookkeeping). finish() logs the engine's totals. Per-token times:
 * `token_times` writes one 24-byte record per token through a 1 MiB stdio buffer (the engine's
 * on_token callback; a million tokens are 24 MB), instead of a metric row per token.
 *
 * Thread-safety: one instance per worker; run() and step() of an instance never run
 * concurrently (the host's rule), so the engine and the held table need no lock. Ownership: the
 * instance owns weights, model, KV cache, engine and the held table (freed in destroy); a held
 * query's payload stays the query's until completion replaces it (the old one released).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/stage.h"
#include "gpu/wait.h"
#include "llm/engine.h"
#include "llm/lm_config.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"
#include "llm/request.h"
#include "stages/llm/slo.h"
#include "stages/util/util.h"

enum {
    P_MODEL,
    P_WEIGHTS,
    P_PRECISION,
    P_DEVICE,
    P_THREADS,
    P_MAX_BATCH,
    P_MAX_TOKENS_PER_STEP,
    P_MAX_WAITING,
    P_KV_CACHE_BYTES,
    P_BLOCK_TOKENS,
    P_MAX_NEW_TOKENS,
    P_TEMPERATURE,
    P_TOP_K,
    P_TOP_P,
    P_IGNORE_EOS,
    P_SEED,
    P_SLO,
    P_TOKEN_TIMES,
    P_GPU_WAIT,
    P_COUNT
};

#define GEN_KV_MAX_BYTES 1099511627776.0 /* 1 TiB: kv_cache_bytes' bound */

static const cb_param_def gen_params[P_COUNT] = {
    [P_MODEL] = {"model", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                 "required: a preset (qwen2.5-0.5b, llama-3.2-1b, tinyllama-1.1b, qwen3-0.6b, "
                 "tiny, tiny-llama, tiny-qwen3) or a config.json / model directory"},
    [P_WEIGHTS] = {"weights", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file|dir",
                   "safetensors file, model.safetensors.index.json or directory (unset: seeded "
                   "random weights, for speed runs)"},
    [P_PRECISION] = {"precision", CB_PARAM_ENUM, "bf16", CB_PARAM_UNBOUNDED, "f32|bf16",
                     "weights and KV cache precision (activations are float32)"},
    [P_DEVICE] = {"device", CB_PARAM_STRING, NULL, CB_PARAM_UNBOUNDED, NULL,
                  "cpu or cuda:N (unset: the pipeline's device); on cuda the forward pass runs "
                  "in the CUDA module (cuBLAS and colobench's kernels)"},
    [P_THREADS] = {"threads", CB_PARAM_INT, "1", 1, 1024, NULL,
                   "threads of the forward pass (default 1: give it the pipeline's cores)"},
    [P_MAX_BATCH] = {"max_batch", CB_PARAM_INT, "32", 1, CB_ENGINE_MAX_BATCH, NULL,
                     "sequences running at once (decoding or prefilling)"},
    [P_MAX_TOKENS_PER_STEP] = {"max_tokens_per_step", CB_PARAM_INT, "512", 1,
                               CB_LM_STEP_TOKENS_MAX, NULL,
                               "tokens of one engine step (decodes + prompt chunks), >= "
                               "max_batch"},
    [P_MAX_WAITING] = {"max_waiting", CB_PARAM_INT, "1024", 1, 100000, NULL,
                       "requests waiting for admission; at the limit run() steps the engine "
                       "until one is admitted"},
    [P_KV_CACHE_BYTES] = {"kv_cache_bytes", CB_PARAM_INT, "1073741824", 1, GEN_KV_MAX_BYTES, NULL,
                          "KV cache budget in bytes (blocks of block_tokens positions)"},
    [P_BLOCK_TOKENS] = {"block_tokens", CB_PARAM_INT, "16", 1, CB_LM_BLOCK_TOKENS_MAX, NULL,
                        "positions per KV block"},
    [P_MAX_NEW_TOKENS] = {"max_new_tokens", CB_PARAM_INT, "0", 0, CB_LLM_MAX_NEW_TOKENS, NULL,
                          "output tokens per request (0 = the request's own max_new_tokens)"},
    [P_TEMPERATURE] = {"temperature", CB_PARAM_FLOAT, "0", 0, 100, NULL,
                       "sampling temperature (0 = greedy)"},
    [P_TOP_K] = {"top_k", CB_PARAM_INT, "0", 0, CB_LM_VOCAB_MAX, NULL,
                 "keep the k most likely tokens (0 = off)"},
    [P_TOP_P] = {"top_p", CB_PARAM_FLOAT, "1", 0, 1, NULL,
                 "nucleus: keep the most likely tokens up to this probability, in (0, 1] (1 = "
                 "off)"},
    [P_IGNORE_EOS] = {"ignore_eos", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                      "generate max_new_tokens whatever the model says (the request's flag "
                      "applies too)"},
    [P_SEED] = {"seed", CB_PARAM_INT, "0", 0, 9007199254740991.0, NULL,
                "stage seed mixed with each request's seed (sampling) and seeding random weights"},
    [P_SLO] = CB_LLM_SLO_PARAM(),
    [P_TOKEN_TIMES] = {"token_times", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "out",
                       "write every token's time: 24-byte little-endian records (int64 request "
                       "index, int64 ns since the request's arrival, int32 token number, int32 "
                       "token id); worker N > 0 writes PATH.N"},
    [P_GPU_WAIT] = {"gpu_wait", CB_PARAM_ENUM, "block", CB_PARAM_UNBOUNDED, CB_GPU_WAITS,
                    "cuda: how the engine's thread waits for each step's device work (block "
                    "sleeps, spin and yield poll)"},
};

enum {
    M_PROMPT_TOKENS,
    M_OUTPUT_TOKENS,
    M_TOKENS,
    M_TTFT,
    M_TPOT,
    M_ITL_MEAN,
    M_ITL_MAX,
    M_KV_WAIT,
    M_QUEUE,
    M_BATCH,
    M_KV_USED,
    M_SLO_MET,
    M_OVERHEAD,
    M_STEP_OVERHEAD,
    M_COUNT
};

static const cb_metric_def gen_metrics[M_COUNT] = {
    [M_PROMPT_TOKENS] = {"prompt_tokens", CB_METRIC_COUNT, "tokens", "prompt tokens prefilled"},
    [M_OUTPUT_TOKENS] = {"output_tokens", CB_METRIC_COUNT, "tokens",
                         "tokens generated (per_second: output tokens/s)"},
    [M_TOKENS] = {"tokens", CB_METRIC_COUNT, "tokens",
                  "prompt + output tokens (per_second: total tokens/s)"},
    [M_TTFT] = {"ttft_ns", CB_METRIC_DIST, "ns", "time to first token, from the arrival"},
    [M_TPOT] = {"tpot_ns", CB_METRIC_DIST, "ns",
                "time per output token after the first: (last - first) / (n - 1), n >= 2"},
    [M_ITL_MEAN] = {"itl_mean_ns", CB_METRIC_DIST, "ns",
                    "mean gap between consecutive tokens of a request"},
    [M_ITL_MAX] = {"itl_max_ns", CB_METRIC_DIST, "ns",
                   "largest gap between consecutive tokens of a request"},
    [M_KV_WAIT] = {"kv_wait_ns", CB_METRIC_DIST, "ns",
                   "time waiting while the KV cache was full (admission stopped by it)"},
    [M_QUEUE] = {"queue_ns", CB_METRIC_DIST, "ns", "arrival to admission into the batch"},
    [M_BATCH] = {"batch_size", CB_METRIC_GAUGE, "sequences",
                 "sequences in the engine step the request finished in"},
    [M_KV_USED] = {"kv_used", CB_METRIC_GAUGE, "ratio",
                   "fraction of KV blocks in use in the step the request finished in"},
    [M_SLO_MET] = {"slo_met", CB_METRIC_COUNT, "requests",
                   "1 when TTFT and TPOT met the slo (per_second: goodput); only with slo"},
    [M_OVERHEAD] = {"engine_overhead", CB_METRIC_GAUGE, "ratio",
                    "fraction of engine step time so far outside the matmuls and attention"},
    [M_STEP_OVERHEAD] = {"step_overhead_ns", CB_METRIC_GAUGE, "ns",
                         "mean time per engine step so far outside the matmuls and attention"},
};

/* A query the instance holds: the engine request's user pointer. */
typedef struct held_entry {
    cb_held *h;
    cb_query *q;
    int64_t arrival_ns;
    int64_t index; /* the request's */
} held_entry;

/* One record of token_times (little-endian on the hosts colobench runs on). */
typedef struct token_time {
    int64_t index;
    int64_t t_ns; /* since the request's arrival */
    int32_t n;    /* 0 = the first output token */
    int32_t token;
} token_time;
_Static_assert(sizeof(token_time) == 24, "token_times record layout");

#define TOKEN_TIMES_BUFFER_BYTES ((size_t)1 << 20) /* stdio buffer of the token_times file */

typedef struct gen_state {
    const cb_host *host;
    int device; /* -1: cpu; N: cuda:N */
    const char *stage;
    const cb_param_value *v;
    uint64_t seed;
    cb_llm_slo slo;
    cb_sample_params sampling;
    cb_lm_weights *w;
    cb_lm_model *model;
    cb_lm_kv *kv;
    cb_engine *engine;
    int32_t vocab;
    held_entry *entries; /* max_waiting + max_batch */
    int32_t *free_entries, n_free;
    int64_t n_held;
    int worker;
    FILE *token_times; /* NULL unless token_times is set */
    int64_t token_times_written;
} gen_state;

static void gen_log(const gen_state *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void gen_log(const gen_state *s, int level, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->host && s->host->log) s->host->log(level, s->stage, msg);
}

static int gen_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    if (!v[P_MODEL].has_value || !v[P_MODEL].s[0])
        return cb_util_error(err, CB_ECONFIG, "model: is required (a preset: qwen2.5-0.5b, "
                             "llama-3.2-1b, tinyllama-1.1b, qwen3-0.6b, tiny; or a config.json)");
    if (v[P_MAX_TOKENS_PER_STEP].i < v[P_MAX_BATCH].i)
        return cb_util_error(err, CB_ECONFIG, "max_tokens_per_step: %lld is below max_batch %lld "
                             "(every running sequence decodes one token a step)",
                             (long long)v[P_MAX_TOKENS_PER_STEP].i, (long long)v[P_MAX_BATCH].i);
    if (!(v[P_TOP_P].f > 0))
        return cb_util_error(err, CB_ECONFIG, "top_p: must be in (0, 1], got 0");
    if (cb_llm_slo_check(&v[P_SLO], err) != CB_OK) return CB_ECONFIG;
    return CB_OK;
}

static int gen_create(void *state, const cb_stage_args *args, cb_error *err) {
    gen_state *s = state;
    int rc = gen_check(args, err);
    if (rc) return rc;
    const cb_host *h = args->host;
    if (h->struct_size < offsetof(cb_host, arrival_ns) + sizeof h->arrival_ns)
        return cb_util_error(err, CB_EUNSUPPORTED, "llm.generate needs a host with held queries "
                             "(stage ABI of 2026-12-07)");
    int own = 0;
    const char *dev = cb_util_stage_device(args, &args->values[P_DEVICE], &own);
    s->device = -1;
    if (dev && strcmp(dev, "cpu") != 0) {
        char *end = NULL;
        long n = strncmp(dev, "cuda:", 5) == 0 ? strtol(dev + 5, &end, 10) : -1;
        if (n < 0 || n > 1023 || !end || end == dev + 5 || *end)
            return cb_util_error(err, CB_ECONFIG, "device: %sexpected cpu or cuda:N, got \"%s\"",
                                 own ? "" : "the pipeline's device: ", dev);
        s->device = (int)n;
    }
    s->host = h;
    s->stage = args->stage;
    s->worker = args->worker;
    s->v = args->values;
    const cb_param_value *v = args->values;
    s->seed = (uint64_t)v[P_SEED].i;
    s->sampling.temperature = v[P_TEMPERATURE].f;
    s->sampling.top_k = (int32_t)v[P_TOP_K].i;
    s->sampling.top_p = v[P_TOP_P].f;
    s->slo = cb_llm_slo_from(&v[P_SLO]);
    return CB_OK;
}

/* A library error as the stage's: "what: message". */
static int lib_error(cb_error *err, int rc, const char *what, const cb_error *e) {
    return cb_util_error(err, rc, "%s: %s", what, e->msg);
}

/* The engine's on_token: one record per token into the token_times file. */
static void on_token(void *arg, void *user, int32_t n, int32_t token, int64_t t_ns) {
    gen_state *s = arg;
    const held_entry *he = user;
    token_time r = {he->index, t_ns - he->arrival_ns, n, token};
    s->token_times_written += fwrite(&r, sizeof r, 1, s->token_times) == 1;
}

static int open_token_times(gen_state *s, cb_error *err) {
    char path[4096];
    const char *base = s->v[P_TOKEN_TIMES].s;
    int len = s->worker > 0 ? snprintf(path, sizeof path, "%s.%d", base, s->worker)
                            : snprintf(path, sizeof path, "%s", base);
    if (len < 0 || (size_t)len >= sizeof path)
        return cb_util_error(err, CB_EINVAL, "token_times: path longer than %zu bytes",
                             sizeof path - 1);
    s->token_times = fopen(path, "wb");
    if (!s->token_times)
        return cb_util_error(err, CB_EIO, "token_times: cannot create %s: %s", path,
                             strerror(errno));
    setvbuf(s->token_times, NULL, _IOFBF, TOKEN_TIMES_BUFFER_BYTES);
    return CB_OK;
}

static int gen_prepare(void *state, cb_error *err) {
    gen_state *s = state;
    const cb_param_value *v = s->v;
    cb_error e;
    cb_error_clear(&e);
    cb_lm_config cfg;
    int rc = cb_lm_config_resolve(v[P_MODEL].s, &cfg, &e);
    if (rc) {
        char m[CB_ERROR_MSG_MAX];
        cb_error_format(&e, m, sizeof m);
        return cb_util_error(err, rc, "model: %s", m);
    }
    /* On the CPU the matrices are held packed for its kernels (no second copy in the model) */
    cb_lm_weights_opts wo = {v[P_PRECISION].i == 1 ? CB_LM_BF16 : CB_LM_F32,
                             v[P_WEIGHTS].has_value ? v[P_WEIGHTS].s : NULL, s->seed,
                             s->device < 0};
    rc = cb_lm_weights_create(&cfg, &wo, &s->w, &e);
    if (rc) return lib_error(err, rc, "weights", &e);
    /* A warning, not info: the host's sink prints warnings only, and a user must see that the
     * outputs are not a trained model's (issue 15: "say so in the output"). */
    if (cb_lm_weights_random(s->w) && s->worker == 0)
        gen_log(s, CB_LOG_WARN, "%s with seeded random weights (seed %llu, no "
                "`weights` given): speed figures are real, the text is not", cfg.name,
                (unsigned long long)s->seed);
    cb_lm_model_opts mo = CB_LM_MODEL_OPTS_DEFAULT;
    mo.threads = (int)v[P_THREADS].i;
    mo.max_step_tokens = (int)v[P_MAX_TOKENS_PER_STEP].i;
    mo.device = s->device;
    mo.max_step_seqs = (int)v[P_MAX_BATCH].i < mo.max_step_tokens ? (int)v[P_MAX_BATCH].i
                                                                  : mo.max_step_tokens;
    mo.gpu_wait = (int)v[P_GPU_WAIT].i;
    rc = cb_lm_model_create_opts(s->w, &mo, &s->model, &e);
    if (rc) return lib_error(err, rc, "model", &e);
    rc = cb_lm_kv_create(s->model, (size_t)v[P_KV_CACHE_BYTES].i, (int)v[P_BLOCK_TOKENS].i, &s->kv,
                         &e);
    if (rc) return cb_util_error(err, rc, "%s", e.msg); /* names kv_cache_bytes itself */
    cb_engine_opts eo = CB_ENGINE_OPTS_DEFAULT;
    eo.max_batch = (int)v[P_MAX_BATCH].i;
    eo.max_tokens_per_step = (int)v[P_MAX_TOKENS_PER_STEP].i;
    eo.max_waiting = (int)v[P_MAX_WAITING].i;
    eo.seed = s->seed;
    eo.now_ns = s->host->now_ns;
    if (v[P_TOKEN_TIMES].has_value) {
        rc = open_token_times(s, err);
        if (rc) return rc;
        eo.on_token = on_token;
        eo.on_token_arg = s;
    }
    rc = cb_engine_create(s->model, s->kv, &eo, &s->engine, &e);
    if (rc) return lib_error(err, rc, "engine", &e);
    s->vocab = (int32_t)cfg.vocab;
    size_t n = (size_t)(eo.max_waiting + eo.max_batch);
    s->entries = s->host->alloc(n * sizeof *s->entries);
    s->free_entries = s->host->alloc(n * sizeof *s->free_entries);
    if (!s->entries || !s->free_entries)
        return cb_util_error(err, CB_ENOMEM, "out of memory for %zu held queries", n);
    for (size_t i = 0; i < n; i++) s->free_entries[i] = (int32_t)(n - 1 - i);
    s->n_free = (int32_t)n;
    gen_log(s, CB_LOG_INFO, "llm.generate: %s, %s, %d threads, KV cache %d blocks of %d positions "
            "(%zu bytes each), max_batch %d, max_tokens_per_step %d", cfg.name,
            wo.dtype == CB_LM_BF16 ? "bf16" : "f32", (int)v[P_THREADS].i,
            (int)cb_lm_kv_n_blocks(s->kv), (int)v[P_BLOCK_TOKENS].i,
            cb_lm_kv_block_bytes(s->model, (int)v[P_BLOCK_TOKENS].i), eo.max_batch,
            eo.max_tokens_per_step);
    return CB_OK;
}

static void release_entry(gen_state *s, held_entry *he) {
    he->h = NULL;
    he->q = NULL;
    s->free_entries[s->n_free++] = (int32_t)(he - s->entries);
    s->n_held--;
}

/* The finished request's payload: the request with its output ids. */
static cb_buffer *result_payload(gen_state *s, const cb_llm_request *r,
                                 const cb_engine_result *x) {
    size_t bytes = cb_llm_request_bytes(r->n_prompt_tokens, (uint32_t)x->n_output,
                                        r->prompt_bytes);
    cb_buffer *buf = bytes ? s->host->buffer_new(bytes) : NULL;
    if (!buf) return NULL;
    cb_llm_request *o = cb_llm_request_init(buf, r->n_prompt_tokens, (uint32_t)x->n_output,
                                            r->prompt_bytes);
    cb_llm_request_copy_fields(o, r);
    o->vocab_size = (uint32_t)s->vocab; /* engine-checked prompt ids and outputs are below it */
    memcpy(cb_llm_request_prompt_ids(o), x->prompt, sizeof(int32_t) * (size_t)x->n_prompt);
    memcpy(cb_llm_request_output_ids(o), x->output, sizeof(int32_t) * (size_t)x->n_output);
    cb_llm_request *rm = (cb_llm_request *)(void *)(uintptr_t)r;
    memcpy(cb_llm_request_text(o), cb_llm_request_text(rm), (size_t)r->prompt_bytes);
    return buf;
}

static void report_result(gen_state *s, cb_run_ctx *ctx, held_entry *he,
                          const cb_engine_result *x) {
    const cb_host *h = s->host;
    const cb_engine_totals *t = cb_engine_get_totals(s->engine);
    double ttft = (double)(x->first_token_ns - he->arrival_ns);
    double tpot = x->n_output >= 2 ? (double)x->itl_sum_ns / (x->n_output - 1) : 0;
    h->report_held(ctx, he->h, M_PROMPT_TOKENS, x->n_prompt);
    h->report_held(ctx, he->h, M_OUTPUT_TOKENS, x->n_output);
    h->report_held(ctx, he->h, M_TOKENS, x->n_prompt + x->n_output);
    h->report_held(ctx, he->h, M_TTFT, ttft);
    if (x->n_output >= 2) {
        h->report_held(ctx, he->h, M_TPOT, tpot);
        h->report_held(ctx, he->h, M_ITL_MEAN, tpot);
        h->report_held(ctx, he->h, M_ITL_MAX, (double)x->itl_max_ns);
    }
    h->report_held(ctx, he->h, M_KV_WAIT, (double)x->kv_wait_ns);
    h->report_held(ctx, he->h, M_QUEUE, (double)(x->admit_ns - he->arrival_ns));
    h->report_held(ctx, he->h, M_BATCH, x->running_at_finish);
    int32_t pool = cb_lm_kv_n_blocks(s->kv);
    h->report_held(ctx, he->h, M_KV_USED, pool ? (double)x->kv_blocks_used_at_finish / pool : 0);
    if (s->slo.on)
        h->report_held(ctx, he->h, M_SLO_MET, cb_llm_slo_met(&s->slo, ttft, tpot, x->n_output));
    double outside = (double)(t->step_ns - t->matmul_ns - t->attention_ns);
    if (t->step_ns > 0) h->report_held(ctx, he->h, M_OVERHEAD, outside / (double)t->step_ns);
    if (t->steps > 0) h->report_held(ctx, he->h, M_STEP_OVERHEAD, outside / (double)t->steps);
}

/* Completes every request the last step (or a cancel) finished. */
static void deliver(gen_state *s, cb_run_ctx *ctx) {
    const cb_host *h = s->host;
    for (int i = 0; i < cb_engine_n_finished(s->engine); i++) {
        const cb_engine_result *x = cb_engine_finished(s->engine, i);
        held_entry *he = x->user;
        if (!he->h) continue;
        if (x->finish == CB_ENGINE_FINISH_CANCELLED) {
            h->complete(ctx, he->h, CB_ESTOPPED, "cancelled");
            release_entry(s, he);
            continue;
        }
        cb_buffer *buf = result_payload(s, he->q->payload->data, x);
        if (!buf) {
            char m[128];
            snprintf(m, sizeof m, "request %lld: out of memory for its output payload",
                     (long long)x->index);
            h->complete(ctx, he->h, CB_ENOMEM, m);
            release_entry(s, he);
            continue;
        }
        h->buffer_unref(he->q->payload);
        he->q->payload = buf;
        report_result(s, ctx, he, x);
        h->complete(ctx, he->h, CB_OK, NULL);
        release_entry(s, he);
    }
}

static int engine_step(gen_state *s, cb_run_ctx *ctx, cb_error *err) {
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_engine_step(s->engine, &e);
    if (rc) return lib_error(err, rc, "forward", &e);
    deliver(s, ctx);
    return CB_OK;
}

static int gen_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    gen_state *s = state;
    const char *why = NULL;
    if (cb_llm_request_check(q->payload, &why) != 0)
        return cb_util_error(err, CB_EINVAL, "%s (llm.generate takes the LLM requests of "
                             "llm.prompts or llm.tokenize)", why);
    cb_llm_request *r = q->payload->data;
    if (!s->host->hold || !s->host->complete || !s->host->report_held || !s->host->arrival_ns)
        return cb_util_error(err, CB_EUNSUPPORTED, "llm.generate needs a host that holds "
                             "queries (hold, complete, report_held, arrival_ns)");
    if (r->n_prompt_tokens == 0)
        return cb_util_error(err, CB_EINVAL, "request %lld: no prompt ids (text only: put "
                             "llm.tokenize before llm.generate)", (long long)r->index);
    while (cb_engine_n_waiting(s->engine) >= (int)s->v[P_MAX_WAITING].i || s->n_free == 0) {
        int rc = engine_step(s, ctx, err);
        if (rc) return rc;
    }
    const cb_param_value *v = s->v;
    cb_engine_request er;
    memset(&er, 0, sizeof er);
    er.prompt = cb_llm_request_prompt_ids(r);
    er.n_prompt = (int32_t)r->n_prompt_tokens;
    er.max_new_tokens = v[P_MAX_NEW_TOKENS].i ? (int32_t)v[P_MAX_NEW_TOKENS].i
                                              : (int32_t)r->max_new_tokens;
    er.ignore_eos = v[P_IGNORE_EOS].i || (r->flags & CB_LLM_REQ_IGNORE_EOS);
    er.sampling = s->sampling;
    er.seed = r->seed;
    er.arrival_ns = s->host->arrival_ns(ctx);
    er.index = r->index;
    held_entry *he = &s->entries[s->free_entries[s->n_free - 1]];
    er.user = he;
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_engine_add(s->engine, &er, &e);
    if (rc) return cb_util_error(err, rc, "%s", e.msg);
    s->n_free--;
    s->n_held++;
    he->q = q;
    he->arrival_ns = er.arrival_ns;
    he->index = r->index;
    he->h = s->host->hold(ctx);
    if (!he->h) /* cannot happen with step in the ops; the engine's result is then skipped */
        return cb_util_error(err, CB_EINVAL, "request %lld: the host refused to hold the query",
                             (long long)r->index);
    return CB_RUN_HELD;
}

static int gen_step(void *state, cb_run_ctx *ctx, cb_error *err) {
    gen_state *s = state;
    if (s->host->cancelled(ctx)) {
        cb_engine_cancel_all(s->engine);
        deliver(s, ctx);
        return CB_OK;
    }
    if (cb_engine_n_active(s->engine) == 0) return CB_OK;
    return engine_step(s, ctx, err);
}

static void gen_finish(void *state) {
    gen_state *s = state;
    if (s->token_times && (fflush(s->token_times) != 0 || ferror(s->token_times)))
        gen_log(s, CB_LOG_WARN, "llm.generate: token_times: write error after %lld records: %s",
                (long long)s->token_times_written, strerror(errno));
    if (!s->engine) return;
    const cb_engine_totals *t = cb_engine_get_totals(s->engine);
    double step_s = (double)t->step_ns / 1e9;
    gen_log(s, CB_LOG_INFO, "llm.generate: %lld steps, %lld prompt and %lld decode tokens; step "
            "time %.3f s: forward %.3f s (matmul %.3f, attention %.3f), outside matmul and "
            "attention %.1f%%", (long long)t->steps, (long long)t->prefill_tokens,
            (long long)t->decode_tokens, step_s, (double)t->forward_ns / 1e9,
            (double)t->matmul_ns / 1e9, (double)t->attention_ns / 1e9,
            t->step_ns > 0 ? 100.0 * (double)(t->step_ns - t->matmul_ns - t->attention_ns) /
                                 (double)t->step_ns
                           : 0.0);
}

static void gen_destroy(void *state) {
    gen_state *s = state;
    cb_engine_destroy(s->engine);
    if (s->token_times) fclose(s->token_times);
    cb_lm_kv_destroy(s->kv);
    cb_lm_model_destroy(s->model);
    cb_lm_weights_destroy(s->w);
    if (s->host) {
        s->host->free(s->entries);
        s->host->free(s->free_entries);
    }
}

const cb_stage_ops cb_stage_llm_generate = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "llm.generate",
    .summary = "LLM generation with continuous batching and a paged KV cache (CPU)",
    .params = gen_params,
    .n_params = P_COUNT,
    .state_size = sizeof(gen_state),
    .create = gen_create,
    .prepare = gen_prepare,
    .run = gen_run,
    .step = gen_step,
    .finish = gen_finish,
    .destroy = gen_destroy,
    .metrics = gen_metrics,
    .n_metrics = M_COUNT,
    .check = gen_check,
};
