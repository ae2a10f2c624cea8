/* bench/bench_llm.c - LLM decode and prefill speed of colobench's forward pass (llm/lm_model.h)
 * against the machine's memory-bandwidth roofline, all measured in one run (issue 15).
 *
 * Parts, in order:
 *   (a) memory read bandwidth: a STREAM-like read kernel (sum of a float buffer much larger than
 *       the last-level cache, 1 GiB by default, split over the same thread count as the model;
 *       the best of several passes, measured before and after the model runs, the better of the
 *       two kept: other work on the machine only ever lowers it) -> GB/s;
 *   then for each precision (f32, bf16; weights random at the preset's real shapes unless
 *   --weights names safetensors; held packed for the CPU kernels, as llm.generate loads them):
 *   (b) batch-1 decode tokens/s: after a prompt of --prompt tokens, --steps greedy decode steps of
 *       one token over the paged KV cache (one cb_lm_forward call each, logits of every step, the
 *       next token the argmax); tokens/s = 1 / median step time (warm-up steps excluded);
 *   (c) the roofline: a decode step reads every weight once, so its floor is
 *       cb_lm_model_step_weight_bytes / bandwidth; max tokens/s = bandwidth / step bytes, and
 *       the achieved fraction (b) / max; and, because this machine's bandwidth drifts by a
 *       third within a minute (a best-of read against a median of steps then says more about
 *       the drift than about the engine), decode_b1_vs_read_pct: after every measured
 *       step a 512 MiB read on the same threads, and the median over the steps of the step's
 *       weight bandwidth / that read's;
 *   (d) prefill tokens/s: the prompt in one forward call (a second prompt, so first touches of
 *       scratch are not in it), with logits of its last token only; the median of 3 calls;
 *   (e) batched decode tokens/s at each --batch size B: B sequences decode one token each per
 *       call; tokens/s = B / median time of --batch-steps steps. The sequences share the prompt's full KV blocks
 *       as a common prefix (the model only reads them; each sequence writes its own blocks), so
 *       no B prefills are needed; a memory-bound engine's curve rises almost linearly in B
 *       while the weights dominate the bytes of a step. A batch size of 1 in the list gives
 *       decode_b1_shared, the same over the shared prefix (a check of the method);
 *   (f) engine overhead: the time of a batch-1 step outside matmul and attention (norms, RoPE,
 *       residuals, dispatch: cb_lm_forward_last_stats' total - matmul - attention), per step.
 *
 * Output: a table, one row per figure: "precision metric value unit note"; the rows decode_b1,
 * prefill and decode_bN are those bench/llm_vs_torch.py prints for PyTorch, and
 * bench/llm_vs_torch.sh divides the two. --json prints one JSON object per precision instead.
 *
 * Usage: bench_llm [--model qwen2.5-0.5b] [--weights PATH] [--precision f32,bf16]
 *                  [--threads N] [--prompt 128] [--steps 16] [--batch-steps 6] [--warmup 2]
 *                  [--batch 8,32] [--block 16] [--bw-mib 1024] [--bw-passes 10] [--seed 1]
 *                  [--json]
 * The defaults keep bench/llm_vs_torch.sh (both sides, both precisions) near 5 minutes on a
 * 2-core machine.
 *
 * Threads: the model's kernels use --threads OpenMP threads (default: the online CPUs); the
 * bandwidth kernel runs an OpenMP parallel region of the same size. Everything is owned by main;
 * no global state. Maxima: CB_BENCH_BATCHES batch sizes, CB_LM_STEP_SEQS_MAX sequences per step,
 * CB_BENCH_STEPS_MAX decode steps, --bw-mib at most 65536.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/stats.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/rng.h"
#include "llm/lm_config.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"

#define CB_BENCH_BATCHES 16     /* entries of --batch */
#define CB_BENCH_STEPS_MAX 4096 /* --steps + --warmup */
#define CB_BENCH_ROWS 64        /* table rows of one precision */

/* OpenMP where the library has it (lm_model.c's kernels do); one thread otherwise. */
#ifdef _OPENMP
#define BENCH_OMP(x) _Pragma(x)
#else
#define BENCH_OMP(x)
#endif

typedef struct bench_opts {
    const char *model, *weights;
    cb_lm_dtype precisions[2];
    int n_precisions;
    int threads, prompt, steps, batch_steps, warmup, block_tokens;
    int batches[CB_BENCH_BATCHES];
    int n_batches;
    long bw_mib;
    int bw_passes;
    uint64_t seed;
    int json;
} bench_opts;

typedef struct bench_row {
    char metric[32];
    const char *unit;
    double value;
    char note[160];
} bench_row;

typedef struct bench_table {
    bench_row rows[CB_BENCH_ROWS];
    bench_row dropped; /* where rows past CB_BENCH_ROWS go (never printed) */
    int n;
} bench_table;

static bench_row *table_add(bench_table *t, const char *metric, double value, const char *unit) {
    bench_row *r = t->n < CB_BENCH_ROWS ? &t->rows[t->n++] : &t->dropped;
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    r->value = value;
    r->unit = unit;
    r->note[0] = '\0';
    return r;
}

static const char *dtype_name(cb_lm_dtype d) { return d == CB_LM_BF16 ? "bf16" : "f32"; }

/* ---- (a) memory read bandwidth ----------------------------------------------------------- */

typedef float bench_v8f __attribute__((vector_size(32)));

/* Sum of n floats (n a multiple of 32, p 64-byte aligned) with four independent vector
 * accumulators, so the loop is bound by loads, not by the add latency. One body, compiled twice:
 * for AVX2 (32-byte loads, what the model's kernels use on this machine) and for the baseline
 * (where 32-byte vectors are split in two and measured 30-50% slower here). */
#define BENCH_READ_SUM_BODY                                                                        \
    bench_v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                              \
    for (size_t i = 0; i < n; i += 32) {                                                           \
        const bench_v8f *v = (const bench_v8f *)(const void *)(p + i);                             \
        a0 += v[0];                                                                                \
        a1 += v[1];                                                                                \
        a2 += v[2];                                                                                \
        a3 += v[3];                                                                                \
    }                                                                                              \
    bench_v8f s = a0 + a1 + a2 + a3;                                                               \
    float t = 0;                                                                                   \
    for (int j = 0; j < 8; j++)                                                                    \
        t += s[j];                                                                                 \
    return t;

#if defined(__x86_64__)
__attribute__((target("avx2"))) static float read_sum_avx2(const float *p, size_t n) {
    BENCH_READ_SUM_BODY
}
#endif

static float read_sum_base(const float *p, size_t n) { BENCH_READ_SUM_BODY }

static float read_sum(const float *p, size_t n, int avx2) {
#if defined(__x86_64__)
    if (avx2)
        return read_sum_avx2(p, n);
#endif
    return read_sum_base(p, n);
}

/* GB/s of one read of buf (bytes, written before) over `threads` threads, each its own
 * contiguous slice: the bandwidth at this moment, for the adjacent-read figure. */
static double read_pass_gb_s(const float *buf, size_t bytes, int threads, double *checksum) {
#if defined(__x86_64__)
    int avx2 = __builtin_cpu_supports("avx2");
#else
    int avx2 = 0;
#endif
    size_t per = bytes / sizeof(float) / (size_t)threads / 32 * 32;
    double sum = 0;
    int64_t t0 = cb_clock_now_ns();
    BENCH_OMP("omp parallel for num_threads(threads) schedule(static, 1) reduction(+ : sum)")
    for (int t = 0; t < threads; t++)
        sum += read_sum(buf + (size_t)t * per, per, avx2);
    double ns = (double)(cb_clock_now_ns() - t0);
    *checksum += sum;
    return (double)(per * (size_t)threads * sizeof(float)) / ns;
}

/* Writes the read buffer (bytes) over `threads` threads, each its own slice (first touch). */
static void read_buf_fill(float *buf, size_t bytes, int threads) {
    size_t per = bytes / sizeof(float) / (size_t)threads / 32 * 32;
    BENCH_OMP("omp parallel for num_threads(threads) schedule(static, 1)")
    for (int t = 0; t < threads; t++)
        for (size_t i = 0; i < per; i++)
            buf[(size_t)t * per + i] = (float)(i & 1023) * 0x1p-10f;
}

/* Best GB/s (1e9 bytes) of `passes` reads of a buffer of mib MiB over `threads` threads; 0 when
 * the buffer cannot be allocated. Each thread first writes, then reads, its own contiguous
 * slice. *checksum keeps the sums alive. */
static double measure_bandwidth(long mib, int passes, int threads, double *checksum) {
    size_t bytes = (size_t)mib << 20;
    float *buf = aligned_alloc(64, bytes);
    if (!buf)
        return 0;
    read_buf_fill(buf, bytes, threads);
    double best = 0, sum = 0;
    for (int pass = 0; pass < passes; pass++) {
        const double gb_s = read_pass_gb_s(buf, bytes, threads, &sum);
        best = gb_s > best ? gb_s : best;
    }
    free(buf);
    *checksum = sum;
    return best;
}

#define PREFILL_REPS 3 /* timed prefills of prompt B; the median is the figure */

/* ---- (b)-(f) the model ------------------------------------------------------------------- */

static int32_t argmax(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int32_t)best;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t median_ns(int64_t *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Allocates n blocks into ids; 0, or -1 when the pool ran dry (a sizing bug of this bench). */
static int alloc_blocks(cb_lm_kv *kv, int32_t *ids, int n) {
    for (int i = 0; i < n; i++)
        if ((ids[i] = cb_lm_kv_alloc(kv)) < 0)
            return -1;
    return 0;
}

static void release_blocks(cb_lm_kv *kv, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++)
        cb_lm_kv_release(kv, ids[i]);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Everything one precision's run owns; bench_fini frees it all (safe on a zeroed struct). */
typedef struct bench_run {
    cb_lm_weights *w;
    cb_lm_model *m;
    cb_lm_kv *kv;
    int32_t *prompt, *blocks, *tokens;
    float *logits;
    cb_lm_seq *seqs;
    int64_t *times;
    float *rbuf; /* the adjacent read passes' buffer (rbuf_bytes, written), or NULL */
    size_t rbuf_bytes;
    int64_t *ratios; /* per measured step: 1e6 x step bandwidth / adjacent read */
    double sink;
} bench_run;

static void bench_fini(bench_run *r) {
    cb_lm_kv_destroy(r->kv);
    cb_lm_model_destroy(r->m);
    cb_lm_weights_destroy(r->w);
    free(r->prompt);
    free(r->blocks);
    free(r->tokens);
    free(r->logits);
    free(r->seqs);
    free(r->times);
    free(r->rbuf);
    free(r->ratios);
    memset(r, 0, sizeof *r);
}

static int fail(const char *what, const cb_error *err) {
    char msg[1200];
    cb_error_format(err, msg, sizeof msg);
    fprintf(stderr, "bench_llm: %s: %s\n", what, msg);
    return 1;
}

/* One forward call of the batch, timed; *ns the wall time, *st the model's own breakdown. */
static int timed_forward(bench_run *r, int n_seqs, int64_t *ns, cb_lm_forward_stats *st,
                         cb_error *err) {
    int64_t t0 = cb_clock_now_ns();
    int rc = cb_lm_forward(r->m, r->kv, r->seqs, n_seqs, err);
    *ns = cb_clock_now_ns() - t0;
    cb_lm_forward_last_stats(r->m, st);
    return rc;
}

/* What one precision's run measured; bench_rows turns it into table rows once the bandwidth
 * (measured before and after the runs) is known. */
typedef struct bench_result {
    cb_lm_dtype dtype;
    double load_s, weight_bytes;
    double prefill_tok_s, prefill_cold_tok_s;
    int64_t b1_ns;                                /* median batch-1 step */
    double b1_adjacent_pct; /* median of step bandwidth / the read pass right after it */
    int64_t overhead_ns, matmul_ns, attention_ns; /* sums over the measured batch-1 steps */
    double batch_tok_s[CB_BENCH_BATCHES];
    int prefix; /* context of the batched sequences */
} bench_result;

/* (b) batch-1 decode on seqs[0] (its prompt already in the cache, logits of the last prompt
 * token in r->logits), accumulating (f) into res. */
static int decode_b1(const bench_opts *o, bench_run *r, int64_t vocab, bench_result *res,
                     cb_error *err) {
    cb_lm_forward_stats st;
    int n_dec = o->warmup + o->steps;
    r->tokens[0] = argmax(r->logits, vocab);
    for (int s = 0; s < n_dec; s++) {
        r->seqs[0].tokens = r->tokens;
        r->seqs[0].n_tokens = 1;
        r->seqs[0].pos0 = o->prompt + s;
        if (timed_forward(r, 1, &r->times[s], &st, err))
            return -1;
        r->tokens[0] = argmax(r->logits, vocab);
        if (s >= o->warmup) {
            res->overhead_ns += st.total_ns - st.matmul_ns - st.attention_ns;
            res->matmul_ns += st.matmul_ns;
            res->attention_ns += st.attention_ns;
            if (r->rbuf) { /* the bandwidth of this moment, right after the step */
                const double step_gb_s = res->weight_bytes / (double)r->times[s];
                const double read = read_pass_gb_s(r->rbuf, r->rbuf_bytes, o->threads, &r->sink);
                r->ratios[s - o->warmup] = (int64_t)(1e6 * step_gb_s / read);
            }
        }
    }
    res->b1_ns = median_ns(r->times + o->warmup, o->steps);
    if (r->rbuf)
        res->b1_adjacent_pct = 1e-4 * (double)median_ns(r->ratios, o->steps);
    return 0;
}

/* (e) b sequences decoding together over a shared prefix (prefix_blocks full blocks of
 * `shared`), each with own_blocks blocks of its own in tables (stride prefix_blocks +
 * own_blocks); tokens/s into *tok_s. The own blocks are released before returning. */
static int decode_batch(const bench_opts *o, bench_run *r, int64_t vocab, int b,
                        const int32_t *shared, int prefix_blocks, int own_blocks,
                        int32_t *tables, cb_rng *rng, double *tok_s, cb_error *err) {
    int stride = prefix_blocks + own_blocks, n_dec = o->warmup + o->batch_steps, got = 0;
    int rc = 0;
    cb_lm_forward_stats st;
    for (; got < b; got++) {
        int32_t *tb = tables + (size_t)got * stride;
        memcpy(tb, shared, (size_t)prefix_blocks * sizeof *tb);
        if (alloc_blocks(r->kv, tb + prefix_blocks, own_blocks)) {
            cb_error_set(err, CB_ENOMEM, "KV pool too small for batch %d (bench sizing bug)", b);
            rc = -1;
            break;
        }
        r->tokens[got] = (int32_t)(cb_rng_u64(rng) % (uint64_t)vocab);
        r->seqs[got] = (cb_lm_seq){.tokens = &r->tokens[got],
                                   .n_tokens = 1,
                                   .blocks = tb,
                                   .n_blocks = stride,
                                   .logits = r->logits + (size_t)got * (size_t)vocab};
    }
    for (int s = 0; s < n_dec && !rc; s++) {
        for (int i = 0; i < b; i++)
            r->seqs[i].pos0 = prefix_blocks * o->block_tokens + s;
        rc = timed_forward(r, b, &r->times[s], &st, err);
        for (int i = 0; i < b && !rc; i++)
            r->tokens[i] = argmax(r->logits + (size_t)i * (size_t)vocab, vocab);
    }
    for (int i = 0; i < got; i++)
        release_blocks(r->kv, tables + (size_t)i * stride + prefix_blocks, own_blocks);
    if (!rc)
        *tok_s = b / (median_ns(r->times + o->warmup, o->batch_steps) * 1e-9);
    return rc;
}

static int run_precision(const bench_opts *o, const cb_lm_config *cfg, cb_lm_dtype dt,
                         bench_result *res) {
    bench_run r = {0};
    cb_error err;
    cb_error_clear(&err);
    *res = (bench_result){.dtype = dt};
    cb_lm_weights_opts wo = CB_LM_WEIGHTS_OPTS_DEFAULT;
    wo.dtype = dt;
    wo.path = o->weights;
    wo.seed = o->seed;
    wo.packed = 1; /* as llm.generate loads them for the CPU */
    int64_t t0 = cb_clock_now_ns();
    if (cb_lm_weights_create(cfg, &wo, &r.w, &err))
        return fail("weights", &err);
    res->load_s = (double)(cb_clock_now_ns() - t0) * 1e-9;
    int max_b = 1;
    for (int i = 0; i < o->n_batches; i++)
        max_b = o->batches[i] > max_b ? o->batches[i] : max_b;
    int max_step_tokens = o->prompt > max_b ? o->prompt : max_b;
    if (cb_lm_model_create(r.w, o->threads, max_step_tokens, &r.m, &err)) {
        bench_fini(&r);
        return fail("model", &err);
    }
    res->weight_bytes = (double)cb_lm_model_step_weight_bytes(r.m);
    /* Blocks: two prompts with their decode steps, then per batched sequence its steps after
     * the shared prefix (at most one block more than the steps need). */
    int bt = o->block_tokens, n_dec = o->warmup + o->steps, n_bdec = o->warmup + o->batch_steps;
    int seq_blocks = ceil_div(o->prompt + n_dec, bt);
    int prefix_blocks = o->prompt / bt, own_blocks = ceil_div(n_bdec, bt) + 1;
    int pool = 2 * seq_blocks + max_b * own_blocks;
    if (cb_lm_kv_create(r.m, (size_t)pool * cb_lm_kv_block_bytes(r.m, bt), bt, &r.kv, &err)) {
        bench_fini(&r);
        return fail("kv cache", &err);
    }
    int64_t vocab = cfg->vocab;
    r.prompt = malloc((size_t)o->prompt * 2 * sizeof *r.prompt);
    r.blocks = malloc((size_t)(2 * seq_blocks + max_b * (prefix_blocks + own_blocks)) *
                      sizeof *r.blocks);
    r.tokens = malloc((size_t)max_b * sizeof *r.tokens);
    r.logits = malloc((size_t)max_b * (size_t)vocab * sizeof *r.logits);
    r.seqs = calloc((size_t)max_b, sizeof *r.seqs);
    /* the adjacent read passes: 512 MiB (past any cache, about one f32 step of a 0.5B model's
     * read time), written once; without it the figure is left out */
    r.rbuf_bytes = (size_t)512 << 20;
    r.rbuf = aligned_alloc(64, r.rbuf_bytes);
    r.ratios = malloc((size_t)o->steps * sizeof *r.ratios);
    if (!r.rbuf || !r.ratios) {
        free(r.rbuf), free(r.ratios);
        r.rbuf = NULL, r.ratios = NULL;
    } else {
        read_buf_fill(r.rbuf, r.rbuf_bytes, o->threads);
    }
    r.times = malloc((size_t)(n_dec > n_bdec ? n_dec : n_bdec) * sizeof *r.times);
    int32_t *blk_a = r.blocks, *blk_b = r.blocks + seq_blocks;
    if (!r.prompt || !r.blocks || !r.tokens || !r.logits || !r.seqs || !r.times ||
        alloc_blocks(r.kv, blk_a, seq_blocks) || alloc_blocks(r.kv, blk_b, seq_blocks)) {
        bench_fini(&r);
        fprintf(stderr, "bench_llm: out of memory\n");
        return 1;
    }
    cb_rng rng;
    cb_rng_seed(&rng, o->seed ^ 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < 2 * o->prompt; i++)
        r.prompt[i] = (int32_t)(cb_rng_u64(&rng) % (uint64_t)vocab);

    /* (d) prefill: prompt A (cold), then prompt B three times (the same positions rewritten),
     * the median timed. */
    cb_lm_forward_stats st;
    int64_t pf_ns[PREFILL_REPS];
    for (int k = 0; k < 1 + PREFILL_REPS; k++) {
        int64_t ns = 0;
        r.seqs[0] = (cb_lm_seq){.tokens = r.prompt + (k ? 1 : 0) * o->prompt,
                                .n_tokens = o->prompt,
                                .pos0 = 0,
                                .blocks = k ? blk_b : blk_a,
                                .n_blocks = seq_blocks,
                                .logits = r.logits};
        if (timed_forward(&r, 1, &ns, &st, &err)) {
            bench_fini(&r);
            return fail("prefill", &err);
        }
        if (k)
            pf_ns[k - 1] = ns;
        else
            res->prefill_cold_tok_s = o->prompt / (ns * 1e-9);
    }
    res->prefill_tok_s = o->prompt / (median_ns(pf_ns, PREFILL_REPS) * 1e-9);
    if (decode_b1(o, &r, vocab, res, &err)) {
        bench_fini(&r);
        return fail("decode", &err);
    }
    res->prefix = prefix_blocks * bt;
    for (int bi = 0; bi < o->n_batches; bi++)
        if (decode_batch(o, &r, vocab, o->batches[bi], blk_b, prefix_blocks, own_blocks,
                         r.blocks + 2 * seq_blocks, &rng, &res->batch_tok_s[bi], &err)) {
            bench_fini(&r);
            return fail("batched decode", &err);
        }
    bench_fini(&r);
    return 0;
}

static void bench_rows(const bench_opts *o, const bench_result *res, double bw_gb_s,
                       bench_table *tab) {
    double b1_tok_s = 1e9 / (double)res->b1_ns, roof = bw_gb_s * 1e9 / res->weight_bytes;
    double elems = res->weight_bytes / (res->dtype == CB_LM_BF16 ? 2 : 4);
    bench_row *row = table_add(tab, "step_weight_bytes", res->weight_bytes / 1e6, "MB");
    snprintf(row->note, sizeof row->note, "%s matrices, %.1f s to %s", dtype_name(res->dtype),
             res->load_s, o->weights ? "load" : "generate (random)");
    row = table_add(tab, "decode_roofline", roof, "tok/s");
    snprintf(row->note, sizeof row->note, "mem_read_bw / step_weight_bytes");
    row = table_add(tab, "decode_b1", b1_tok_s, "tok/s");
    snprintf(row->note, sizeof row->note, "median of %d steps after a %d-token prompt", o->steps,
             o->prompt);
    row = table_add(tab, "decode_b1_roofline_pct", 100.0 * b1_tok_s / roof, "%");
    snprintf(row->note, sizeof row->note, "weights read at %.2f GB/s",
             res->weight_bytes * b1_tok_s / 1e9);
    if (res->b1_adjacent_pct > 0) {
        row = table_add(tab, "decode_b1_vs_read_pct", res->b1_adjacent_pct, "%");
        snprintf(row->note, sizeof row->note,
                 "median over the steps of the step's weight bandwidth / a 512 MiB read right "
                 "after it (the machine's bandwidth drifts)");
    }
    row = table_add(tab, "prefill", res->prefill_tok_s, "tok/s");
    snprintf(row->note, sizeof row->note,
             "%d tokens in one call: %.1f GFLOP/s of weight matmuls; cold first call %.1f tok/s",
             o->prompt, 2.0 * elems * res->prefill_tok_s / 1e9, res->prefill_cold_tok_s);
    double per_step = (double)o->steps;
    row = table_add(tab, "overhead_per_step", (double)res->overhead_ns / per_step / 1e3, "us");
    snprintf(row->note, sizeof row->note,
             "batch 1, outside matmul (%.2f ms) and attention (%.3f ms): %.2f%% of a step",
             (double)res->matmul_ns / per_step / 1e6, (double)res->attention_ns / per_step / 1e6,
             100.0 * (double)res->overhead_ns / per_step / (double)res->b1_ns);
    for (int bi = 0; bi < o->n_batches; bi++) {
        int b = o->batches[bi];
        char name[32];
        /* batch 1 here is the shared-prefix variant; decode_b1 above is the plain one */
        snprintf(name, sizeof name, "decode_b%d%s", b, b == 1 ? "_shared" : "");
        row = table_add(tab, name, res->batch_tok_s[bi], "tok/s");
        snprintf(row->note, sizeof row->note,
                 "%.2fx batch 1, %.0f%% of %d x roofline; median of %d steps, context %d "
                 "(shared prefix)",
                 res->batch_tok_s[bi] / b1_tok_s, 100.0 * res->batch_tok_s[bi] / (b * roof), b,
                 o->batch_steps, res->prefix);
    }
}

/* ---- options ----------------------------------------------------------------------------- */

/* A whole decimal in [lo, hi], or -1. */
static long parse_long(const char *s, long lo, long hi) {
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : -1;
    return s && end != s && !*end && v >= lo && v <= hi ? v : -1;
}

/* A comma list of batch sizes into o; 0 or -1. */
static int parse_batches(const char *s, bench_opts *o) {
    o->n_batches = 0;
    while (s && *s) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char buf[16];
        if (len == 0 || len >= sizeof buf || o->n_batches == CB_BENCH_BATCHES)
            return -1;
        memcpy(buf, s, len);
        buf[len] = '\0';
        long v = parse_long(buf, 1, CB_LM_STEP_SEQS_MAX);
        if (v < 0)
            return -1;
        o->batches[o->n_batches++] = (int)v;
        s = comma ? comma + 1 : NULL;
    }
    return o->n_batches ? 0 : -1;
}

static int parse_precisions(const char *s, bench_opts *o) {
    o->n_precisions = 0;
    if (strcmp(s, "f32") == 0 || strcmp(s, "f32,bf16") == 0)
        o->precisions[o->n_precisions++] = CB_LM_F32;
    if (strcmp(s, "bf16") == 0 || strcmp(s, "f32,bf16") == 0)
        o->precisions[o->n_precisions++] = CB_LM_BF16;
    return o->n_precisions ? 0 : -1;
}

static int usage(void) {
    fprintf(stderr,
            "usage: bench_llm [--model NAME|config.json|DIR] [--weights PATH] "
            "[--precision f32|bf16|f32,bf16] [--threads N] [--prompt N] [--steps N] "
            "[--batch-steps N] "
            "[--warmup N] [--batch 1,8,32] [--block N] [--bw-mib N] [--bw-passes N] [--seed N] "
            "[--json]\n");
    return 2;
}

static int parse_opts(int argc, char **argv, bench_opts *o) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (bench_opts){.model = "qwen2.5-0.5b",
                      .precisions = {CB_LM_F32, CB_LM_BF16},
                      .n_precisions = 2,
                      .threads = ncpu > 0 ? (int)ncpu : 1,
                      .prompt = 128,
                      .steps = 16,
                      .batch_steps = 6,
                      .warmup = 2,
                      .block_tokens = 16,
                      .batches = {8, 32},
                      .n_batches = 2,
                      .bw_mib = 1024,
                      .bw_passes = 10,
                      .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--weights") == 0)
            o->weights = v;
        else if (strcmp(a, "--precision") == 0)
            n = parse_precisions(v, o);
        else if (strcmp(a, "--batch") == 0)
            n = parse_batches(v, o);
        else if (strcmp(a, "--threads") == 0)
            n = o->threads = (int)parse_long(v, 1, 1024);
        else if (strcmp(a, "--prompt") == 0)
            n = o->prompt = (int)parse_long(v, 1, CB_LM_STEP_TOKENS_MAX);
        else if (strcmp(a, "--steps") == 0)
            n = o->steps = (int)parse_long(v, 1, CB_BENCH_STEPS_MAX / 2);
        else if (strcmp(a, "--batch-steps") == 0)
            n = o->batch_steps = (int)parse_long(v, 1, CB_BENCH_STEPS_MAX / 2);
        else if (strcmp(a, "--warmup") == 0)
            n = o->warmup = (int)parse_long(v, 0, CB_BENCH_STEPS_MAX / 2);
        else if (strcmp(a, "--block") == 0)
            n = o->block_tokens = (int)parse_long(v, 1, CB_LM_BLOCK_TOKENS_MAX);
        else if (strcmp(a, "--bw-mib") == 0)
            n = o->bw_mib = parse_long(v, 1, 65536);
        else if (strcmp(a, "--bw-passes") == 0)
            n = o->bw_passes = (int)parse_long(v, 1, 1000);
        else if (strcmp(a, "--seed") == 0) {
            n = parse_long(v, 0, 1L << 62);
            o->seed = (uint64_t)n;
        }
        else
            return -1;
        if (n < 0)
            return -1;
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static void print_table(const char *precision, const bench_table *t) {
    for (int i = 0; i < t->n; i++)
        printf("%-9s %-24s %12.3f  %-6s %s\n", precision, t->rows[i].metric, t->rows[i].value,
               t->rows[i].unit, t->rows[i].note);
}

static void print_json(const bench_opts *o, const char *precision, double bw_gb_s,
                       const bench_table *t) {
    printf("{\"bench\": \"bench_llm\", \"model\": \"%s\", \"random_weights\": %s, "
           "\"precision\": \"%s\", \"threads\": %d, \"prompt\": %d, \"steps\": %d, "
           "\"mem_read_bw_gb_s\": %.3f",
           o->model, o->weights ? "false" : "true", precision, o->threads, o->prompt, o->steps,
           bw_gb_s);
    for (int i = 0; i < t->n; i++)
        printf(", \"%s\": %.4f", t->rows[i].metric, t->rows[i].value);
    printf("}\n");
}

int main(int argc, char **argv) {
    bench_opts o;
    if (parse_opts(argc, argv, &o))
        return usage();
    cb_error err;
    cb_error_clear(&err);
    cb_lm_config cfg;
    if (cb_lm_config_resolve(o.model, &cfg, &err))
        return fail(o.model, &err);
    int most_steps = o.steps > o.batch_steps ? o.steps : o.batch_steps;
    if (o.prompt + o.warmup + most_steps > cfg.max_positions) {
        fprintf(stderr, "bench_llm: prompt + warmup + steps = %d exceeds %lld positions\n",
                o.prompt + o.warmup + most_steps, (long long)cfg.max_positions);
        return 2;
    }
    /* The bandwidth before and after the model runs; the better of the two is the roofline's
     * (a machine shared with other work only ever lowers it). */
    double checksum = 0, bw[2];
    bench_result res[2];
    bw[0] = measure_bandwidth(o.bw_mib, o.bw_passes, o.threads, &checksum);
    for (int p = 0; p < o.n_precisions && bw[0] > 0; p++) {
        fprintf(stderr, "bench_llm: %s %s...\n", o.model, dtype_name(o.precisions[p]));
        if (run_precision(&o, &cfg, o.precisions[p], &res[p]))
            return 1;
    }
    bw[1] = bw[0] > 0 ? measure_bandwidth(o.bw_mib, o.bw_passes, o.threads, &checksum) : 0;
    if (bw[0] <= 0 || bw[1] <= 0) {
        fprintf(stderr, "bench_llm: cannot allocate %ld MiB for the bandwidth kernel\n", o.bw_mib);
        return 1;
    }
    double best_bw = bw[0] > bw[1] ? bw[0] : bw[1];
    if (!o.json) {
        printf("bench_llm: %s (%s), %d threads, prompt %d, decode %d steps (batched %d) after %d "
               "warm-up, KV blocks of %d tokens\n",
               o.model, o.weights ? o.weights : "random weights, seeded", o.threads, o.prompt,
               o.steps, o.batch_steps, o.warmup, o.block_tokens);
        printf("%-9s %-24s %12s  %-6s %s\n", "precision", "metric", "value", "unit", "note");
        printf("%-9s %-24s %12.3f  %-6s read kernel over %ld MiB, %d threads, best of %d passes "
               "before (%.2f) and after (%.2f) the model runs (checksum %.0f)\n",
               "-", "mem_read_bw", best_bw, "GB/s", o.bw_mib, o.threads, o.bw_passes, bw[0],
               bw[1], checksum);
    }
    for (int p = 0; p < o.n_precisions; p++) {
        bench_table tab = {.n = 0};
        bench_rows(&o, &res[p], best_bw, &tab);
        if (o.json)
            print_json(&o, dtype_name(o.precisions[p]), best_bw, &tab);
        else
            print_table(dtype_name(o.precisions[p]), &tab);
    }
    return 0;
}
