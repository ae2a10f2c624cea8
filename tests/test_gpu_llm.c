/* tests/test_gpu_llm.c - the LLM forward pass on a CUDA device (llm/lm_cuda.h, src/cuda/llm_*)
 * against the CPU path (cb_lm_forward), label gpu: skipped (exit 77) without a device.
 *
 * Oracle: the CPU forward pass, itself checked against a float64 reference and transformers
 * (test_llm_forward). Each case runs the same prompts on both: the CPU one sequence at a time in
 * 16-position blocks taken in order; the GPU as the case says (a batch of several sequences of
 * different lengths, blocks of 4 or 16 positions, block ids shuffled over the pool, a prompt in
 * chunks of 5 + 7 + rest). After the prefill and after each of 32 greedy decode steps (the CPU's
 * argmax fed to both, so one early disagreement cannot hide later steps) it compares every
 * sequence's logits: max |gpu - cpu| / max |cpu| must stay within the case's bound, and the
 * GPU's argmax must be the CPU's unless the CPU's own margin between the two is within twice
 * that bound (a near tie, counted and printed).
 *
 * Bounds (what differs between the two paths):
 *   float32 weights: the GPU runs float32 GEMMs (CUBLAS_COMPUTE_32F, no TF32) and float32
 *     kernels, so only summation orders differ: relative errors of a few 1e-7 per dot product,
 *     grown through 2 layers to ~1e-5 of the logits' scale at most (0.3e-6 to 2.2e-6 in the host
 *     emulation); bound 2e-4.
 *   bfloat16 weights: the GPU rounds the activations fed to each GEMM (normed x, attention
 *     output, SiLU * up) to bfloat16 (relative 2^-9 = 2e-3 each), the CPU keeps them float32;
 *     both keep a bfloat16 KV cache, which rounds the same keys and values unless an
 *     activation's rounding moved one across a bfloat16 boundary. Through 2 layers of 7 GEMMs
 *     with these spread weights that is a few 1e-2 of the logits' scale (0.7e-2 to 3.1e-2 in a
 *     host emulation of the device code over 16-25 token prompts and 4 steps; the CPU's own
 *     bfloat16 path is within 5e-2 of a float64 reference, test_llm_forward); bound 1e-1. A
 *     dtype bug (a misread bfloat16, a wrong stride) gives errors of order 1; the float32
 *     cases, run on the same kernels, are the tight check of the indexing.
 * The measured values are printed for every case; nothing here has run on a device yet, so the
 * first GPU run should record them in docs/internals/llm-cuda.md (and tighten the bounds).
 *
 * Weights: the three tiny presets (qwen2 "tiny", "tiny-llama" with llama3 RoPE scaling,
 * "tiny-qwen3" with q/k norm) with seeded random weights made less uniform (matrices x 10,
 * norms and biases random: attention far from uniform, so a wrong position, head or block
 * shows), in bfloat16 and float32; and the transformers fixtures of tests/data/llm (llama,
 * qwen2, qwen3: float32 files, loaded as float32 and as bfloat16).
 *
 * Also: the KV free list (counts, exhaustion, double release), a budget below one block, bad
 * input refused with cb_lm_forward's messages, and (without a device) create failing with
 * CB_EUNSUPPORTED and a reason. Each case prints device memory and a step's device time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/cuda.h"
#include "gpu_fixture.h"
#include "harness.h"
#include "llm/engine.h"
#include "llm/lm_config.h"
#include "llm/lm_cuda.h"
#include "llm/lm_model.h"
#include "llm/lm_weights.h"

#define N_SEQS_MAX 4
#define PROMPT 40                                /* sequence s's prompt: PROMPT + 3 s tokens */
#define STEPS 32                                 /* greedy decode steps */
#define LEN_MAX (PROMPT + 3 * N_SEQS_MAX + STEPS) /* positions of the longest sequence */
#define CPU_BT 16
#define TOL_F32 2e-4
#define TOL_BF16 1e-1

/* ---- Weights ------------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float sym_unit(uint64_t *s) { /* uniform in [-1, 1) */
    return (float)((double)(mix64(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static float value_of(const void *p, int bf16, int64_t i) {
    return bf16 ? cb_lm_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static void value_set(void *p, int bf16, int64_t i, float v) {
    if (bf16)
        ((uint16_t *)p)[i] = cb_lm_f32_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* Seeded random weights of preset `name` in dt, made less uniform: every matrix x 10, norm
 * weights in [0.6, 1.4], biases in [-0.25, 0.25]. The test owns them: it writes through the
 * table's pointers. */
static cb_lm_weights *random_weights(const char *name, cb_lm_dtype dt) {
    cb_lm_config c;
    cb_error err = {0};
    if (cb_lm_config_preset(name, &c, &err)) {
        cb__test_fail(__FILE__, __LINE__, "preset %s: %s", name, err.msg);
        return NULL;
    }
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.dtype = dt;
    o.seed = 23;
    cb_lm_weights *w = NULL;
    if (cb_lm_weights_create(&c, &o, &w, &err)) {
        cb__test_fail(__FILE__, __LINE__, "weights %s: %s", name, err.msg);
        return NULL;
    }
    const int n = cb_lm_weights_table(&c, NULL, 0);
    cb_lm_tensor_spec *tab = calloc((size_t)n, sizeof *tab);
    cb_lm_weights_table(&c, tab, n);
    uint64_t seed = 99;
    for (int t = 0; t < n; t++) {
        void *p = (void *)(uintptr_t)cb_lm_weights_get(w, tab[t].kind, tab[t].layer);
        const int bf16 = cb_lm_weights_dtype_of(w, tab[t].kind) == CB_LM_BF16;
        const int64_t count = tab[t].ndim == 2 ? tab[t].dims[0] * tab[t].dims[1] : tab[t].dims[0];
        const int norm = strstr(tab[t].name, "norm") != NULL;
        const int bias = strstr(tab[t].name, "bias") != NULL;
        for (int64_t i = 0; i < count; i++) {
            const float v = norm   ? 1.0f + 0.4f * sym_unit(&seed)
                            : bias ? 0.25f * sym_unit(&seed)
                                   : 10.0f * value_of(p, bf16, i);
            value_set(p, bf16, i, v);
        }
    }
    free(tab);
    return w;
}

/* A fixture of tests/data/llm (float32 files) loaded as dt. */
static cb_lm_weights *fixture_weights(const char *family, cb_lm_dtype dt) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/llm/%s", CB_TEST_SRCDIR, family);
    cb_lm_config c;
    cb_error err = {0};
    cb_lm_weights *w = NULL;
    cb_lm_weights_opts o = CB_LM_WEIGHTS_OPTS_DEFAULT;
    o.dtype = dt;
    o.path = dir;
    if (cb_lm_config_resolve(dir, &c, &err) || cb_lm_weights_create(&c, &o, &w, &err)) {
        cb__test_fail(__FILE__, __LINE__, "fixture %s: %s", family, err.msg);
        return NULL;
    }
    return w;
}

/* ---- The two paths side by side ------------------------------------------------------------ */

typedef struct gl_pair {
    const cb_lm_config *c;
    cb_lm_model *cpu;
    cb_lm_kv *kv;
    cb_lm_cuda *gpu;
} gl_pair;

static void pair_close(gl_pair *p) {
    cb_lm_cuda_destroy(p->gpu);
    cb_lm_kv_destroy(p->kv);
    cb_lm_model_destroy(p->cpu);
    memset(p, 0, sizeof *p);
}

/* CPU model and pool (64 blocks of 16), GPU model with blocks of gpu_bt (256 of them). */
static int pair_open(gl_pair *p, const cb_lm_weights *w, int gpu_bt) {
    memset(p, 0, sizeof *p);
    p->c = cb_lm_weights_config(w);
    cb_error err = {0};
    if (cb_lm_model_create(w, 2, 512, &p->cpu, &err) ||
        cb_lm_kv_create(p->cpu, cb_lm_kv_block_bytes(p->cpu, CPU_BT) * 64, CPU_BT, &p->kv, &err)) {
        cb__test_fail(__FILE__, __LINE__, "cpu model: %s", err.msg);
        pair_close(p);
        return -1;
    }
    cb_lm_cuda_opts o = CB_LM_CUDA_OPTS_DEFAULT;
    o.max_step_tokens = 512;
    o.max_step_seqs = 8;
    o.block_tokens = gpu_bt;
    o.kv_budget_bytes = cb_lm_kv_block_bytes(p->cpu, gpu_bt) * 256;
    if (cb_lm_cuda_create(w, &o, &p->gpu, &err)) {
        cb__test_fail(__FILE__, __LINE__, "cuda model: %s", err.msg);
        pair_close(p);
        return -1;
    }
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_n_blocks(p->gpu), 256);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_block_bytes(p->gpu), cb_lm_kv_block_bytes(p->cpu, gpu_bt));
    return 0;
}

/* max |a - b| / max |b| (NaN counts as infinite). */
static double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - (double)b[i]);
        d = e > d || e != e ? (e != e ? INFINITY : e) : d;
        scale = fabs((double)b[i]) > scale ? fabs((double)b[i]) : scale;
    }
    return scale > 0 ? d / scale : d;
}

static int32_t argmax(const float *x, int64_t n) { /* ties to the lowest id */
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = (int32_t)i;
    return best;
}

typedef struct gl_case {
    const char *label;
    int n_seqs; /* sequences of one GPU batch (each alone on the CPU) */
    int gpu_bt; /* GPU block size */
    int scatter; /* GPU block ids shuffled over the pool */
    int chunked; /* GPU prompts in chunks of 5 + 7 + rest, one sequence per call */
} gl_case;

typedef struct gl_score {
    double worst;
    int agree, ties, disagree;
} gl_score;

static void score(gl_score *sc, const float *gpu, const float *cpu, int64_t V, double tol) {
    const double e = rel_diff(gpu, cpu, V);
    sc->worst = e > sc->worst || e != e ? e : sc->worst;
    const int32_t a = argmax(cpu, V), b = argmax(gpu, V);
    double scale = 0;
    for (int64_t i = 0; i < V; i++)
        scale = fabs((double)cpu[i]) > scale ? fabs((double)cpu[i]) : scale;
    if (a == b)
        sc->agree++;
    else if ((double)cpu[a] - (double)cpu[b] <= 2 * tol * scale)
        sc->ties++;
    else
        sc->disagree++;
}

/* The sequences' state: ids, block tables on both sides, logits. */
typedef struct gl_seqs {
    int n, len[N_SEQS_MAX];
    int32_t ids[N_SEQS_MAX][LEN_MAX];
    int32_t cpu_tab[N_SEQS_MAX][LEN_MAX / CPU_BT + 1];
    int32_t gpu_tab[N_SEQS_MAX][LEN_MAX];
    int n_cpu_tab[N_SEQS_MAX], n_gpu_tab[N_SEQS_MAX];
    float *cpu_lg[N_SEQS_MAX], *gpu_lg[N_SEQS_MAX];
} gl_seqs;

static void seqs_setup(gl_seqs *q, gl_pair *p, const gl_case *k) {
    const int64_t V = p->c->vocab;
    memset(q, 0, sizeof *q);
    q->n = k->n_seqs;
    uint64_t seed = 5;
    int32_t pool[LEN_MAX * N_SEQS_MAX];
    int n_pool = 0;
    for (int s = 0; s < q->n; s++) {
        q->len[s] = PROMPT + 3 * s;
        for (int i = 0; i < LEN_MAX; i++) q->ids[s][i] = (int32_t)(mix64(&seed) % (uint64_t)V);
        q->n_cpu_tab[s] = (q->len[s] + STEPS + CPU_BT - 1) / CPU_BT;
        for (int b = 0; b < q->n_cpu_tab[s]; b++) q->cpu_tab[s][b] = cb_lm_kv_alloc(p->kv);
        q->n_gpu_tab[s] = (q->len[s] + STEPS + k->gpu_bt - 1) / k->gpu_bt;
        for (int b = 0; b < q->n_gpu_tab[s]; b++) pool[n_pool++] = cb_lm_cuda_kv_alloc(p->gpu);
        q->cpu_lg[s] = malloc((size_t)V * sizeof(float));
        q->gpu_lg[s] = malloc((size_t)V * sizeof(float));
    }
    for (int i = n_pool - 1; k->scatter && i > 0; i--) { /* Fisher-Yates */
        const int j = (int)(mix64(&seed) % (uint64_t)(i + 1));
        const int32_t t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
    }
    for (int s = 0, at = 0; s < q->n; s++)
        for (int b = 0; b < q->n_gpu_tab[s]; b++) q->gpu_tab[s][b] = pool[at++];
}

static void seqs_free(gl_seqs *q, gl_pair *p) {
    for (int s = 0; s < q->n; s++) {
        for (int b = 0; b < q->n_gpu_tab[s]; b++) cb_lm_cuda_kv_release(p->gpu, q->gpu_tab[s][b]);
        free(q->cpu_lg[s]);
        free(q->gpu_lg[s]);
    }
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_free_blocks(p->gpu), cb_lm_cuda_kv_n_blocks(p->gpu));
}

/* Tokens [pos0, pos0 + n) of sequence s on both sides (the CPU alone; the GPU in the batch
 * gpu[] the caller runs), logits asked on both. */
static int cpu_step(gl_pair *p, gl_seqs *q, int s, int pos0, int n) {
    cb_lm_seq one = {q->ids[s] + pos0, n, pos0, q->cpu_tab[s], q->n_cpu_tab[s], q->cpu_lg[s]};
    cb_error err = {0};
    if (cb_lm_forward(p->cpu, p->kv, &one, 1, &err)) {
        cb__test_fail(__FILE__, __LINE__, "cpu forward: %s", err.msg);
        return -1;
    }
    return 0;
}

static cb_lm_seq gpu_seq(gl_seqs *q, int s, int pos0, int n) {
    return (cb_lm_seq){q->ids[s] + pos0, n, pos0, q->gpu_tab[s], q->n_gpu_tab[s], q->gpu_lg[s]};
}

static int gpu_run(gl_pair *p, const cb_lm_seq *seqs, int n, cb_error *err) {
    if (cb_lm_cuda_forward(p->gpu, seqs, n, err)) {
        cb__test_fail(__FILE__, __LINE__, "cuda forward: %s", err->msg);
        return -1;
    }
    return 0;
}

/* The GPU's prefill of every sequence: one batch, or each alone in chunks 5 + 7 + rest. */
static int gpu_prefill(gl_pair *p, gl_seqs *q, const gl_case *k) {
    cb_error err = {0};
    cb_lm_seq b[N_SEQS_MAX];
    if (!k->chunked) {
        for (int s = 0; s < q->n; s++) b[s] = gpu_seq(q, s, 0, q->len[s]);
        return gpu_run(p, b, q->n, &err);
    }
    for (int s = 0; s < q->n; s++) {
        const int cuts[4] = {0, 5, 12, q->len[s]};
        for (int c = 0; c < 3; c++) {
            b[0] = gpu_seq(q, s, cuts[c], cuts[c + 1] - cuts[c]);
            if (gpu_run(p, b, 1, &err)) return -1;
        }
    }
    return 0;
}

static void run_case(const cb_lm_weights *w, const char *wname, const gl_case *k) {
    if (!w) return;
    const cb_lm_dtype dt = cb_lm_weights_dtype_of(w, CB_LM_W_EMBED);
    const double tol = dt == CB_LM_BF16 ? TOL_BF16 : TOL_F32;
    gl_pair p;
    if (pair_open(&p, w, k->gpu_bt)) return;
    const int64_t V = p.c->vocab;
    gl_seqs *q = malloc(sizeof *q);
    seqs_setup(q, &p, k);
    gl_score sc = {0, 0, 0, 0};
    int64_t prefill_ns = 0, decode_ns = 0;
    cb_cuda_lm_stats info;
    memset(&info, 0, sizeof info);
    int failed = 0;
    for (int s = 0; s < q->n && !failed; s++) failed = cpu_step(&p, q, s, 0, q->len[s]);
    if (!failed && !(failed = gpu_prefill(&p, q, k))) {
        cb_lm_cuda_info(p.gpu, &info);
        prefill_ns = info.device_ns;
        for (int s = 0; s < q->n; s++) score(&sc, q->gpu_lg[s], q->cpu_lg[s], V, tol);
    }
    for (int step = 0; step < STEPS && !failed; step++) {
        cb_lm_seq b[N_SEQS_MAX];
        for (int s = 0; s < q->n && !failed; s++) {
            const int pos = q->len[s] + step;
            q->ids[s][pos] = argmax(q->cpu_lg[s], V); /* the CPU's greedy token, fed to both */
            failed = cpu_step(&p, q, s, pos, 1);
            b[s] = gpu_seq(q, s, pos, 1);
        }
        cb_error err = {0};
        if (failed || (failed = gpu_run(&p, b, q->n, &err))) break;
        cb_lm_cuda_info(p.gpu, &info);
        decode_ns = info.device_ns;
        for (int s = 0; s < q->n; s++) score(&sc, q->gpu_lg[s], q->cpu_lg[s], V, tol);
    }
    if (!failed) {
        printf("# %-12s %-4s %-28s max |gpu - cpu| / max |cpu| = %.3g (bound %.0e); argmax "
               "%d agree, %d near ties, %d differ\n",
               wname, dt == CB_LM_BF16 ? "bf16" : "f32", k->label, sc.worst, tol, sc.agree,
               sc.ties, sc.disagree);
        printf("#   device: weights %zu B, KV %zu B (%d blocks of %zu B), activations %zu B, "
               "pinned %zu B; prefill %.1f us, decode step %.1f us\n",
               info.weight_bytes, info.kv_bytes, info.n_blocks, info.block_bytes,
               info.activation_bytes, info.pinned_bytes, (double)prefill_ns / 1e3,
               (double)decode_ns / 1e3);
        CB_CHECK(sc.worst <= tol);
        CB_CHECK_EQ_INT(sc.disagree, 0);
        CB_CHECK_EQ_INT(sc.agree + sc.ties + sc.disagree, q->n * (STEPS + 1));
    }
    seqs_free(q, &p);
    free(q);
    pair_close(&p);
}

static const gl_case k_cases[] = {
    {"1 seq, blocks of 16", 1, 16, 0, 0},
    {"4 seqs batched, blocks of 4", 4, 4, 1, 0},
    {"3 seqs chunked, blocks of 16", 3, 16, 1, 1},
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

/* Every case on the three models `load` makes, in both dtypes. */
static void run_models(cb_lm_weights *(*load)(const char *, cb_lm_dtype),
                       const char *const names[3]) {
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 3; i++) {
            cb_lm_weights *w = load(names[i], d ? CB_LM_F32 : CB_LM_BF16);
            for (int c = 0; c < N_CASES; c++) run_case(w, names[i], &k_cases[c]);
            cb_lm_weights_destroy(w);
        }
}

static void test_presets(void) {
    static const char *const presets[3] = {"tiny", "tiny-llama", "tiny-qwen3"};
    run_models(random_weights, presets);
}

static void test_fixtures(void) {
    static const char *const families[3] = {"llama", "qwen2", "qwen3"};
    run_models(fixture_weights, families);
}

/* ---- The pool and bad input ---------------------------------------------------------------- */

/* The "tiny" preset's weights in dt in *w and a pair over them (GPU blocks of 16): 0, or -1
 * with nothing left open (the failure recorded). */
static int open_tiny(cb_lm_dtype dt, cb_lm_weights **w, gl_pair *p) {
    *w = random_weights("tiny", dt);
    if (*w && pair_open(p, *w, 16) == 0) return 0;
    cb_lm_weights_destroy(*w);
    *w = NULL;
    return -1;
}

static void test_kv_free_list(void) {
    cb_lm_weights *w;
    gl_pair p;
    if (open_tiny(CB_LM_BF16, &w, &p)) return;
    const int32_t n = cb_lm_cuda_kv_n_blocks(p.gpu);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_block_tokens(p.gpu), 16);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_dtype(p.gpu), CB_LM_BF16);
    int32_t first = cb_lm_cuda_kv_alloc(p.gpu);
    CB_CHECK_EQ_INT(first, 0); /* popped in order 0, 1, 2, ... */
    for (int32_t i = 1; i < n; i++) CB_CHECK_EQ_INT(cb_lm_cuda_kv_alloc(p.gpu), i);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_alloc(p.gpu), -1);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_free_blocks(p.gpu), 0);
    cb_lm_cuda_kv_release(p.gpu, 7);
    cb_lm_cuda_kv_release(p.gpu, 7); /* ignored */
    cb_lm_cuda_kv_release(p.gpu, -1);
    cb_lm_cuda_kv_release(p.gpu, n);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_free_blocks(p.gpu), 1);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_alloc(p.gpu), 7);
    for (int32_t i = 0; i < n; i++) cb_lm_cuda_kv_release(p.gpu, i);
    CB_CHECK_EQ_INT(cb_lm_cuda_kv_free_blocks(p.gpu), n);
    pair_close(&p);

    cb_lm_cuda_opts o = CB_LM_CUDA_OPTS_DEFAULT;
    o.kv_budget_bytes = 100;
    cb_lm_cuda *m = NULL;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_lm_cuda_create(w, &o, &m, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "kv_cache_bytes");
    CB_CHECK(m == NULL);
    cb_lm_weights_destroy(w);
}

static void test_bad_input(void) {
    cb_lm_weights *w;
    gl_pair p;
    if (open_tiny(CB_LM_F32, &w, &p)) return;
    int32_t ids[20] = {0}, blocks[2] = {cb_lm_cuda_kv_alloc(p.gpu), cb_lm_cuda_kv_alloc(p.gpu)};
    cb_error err = {0};
    ids[3] = (int32_t)p.c->vocab;
    cb_lm_seq s = {ids, 20, 0, blocks, 2, NULL};
    CB_CHECK_EQ_INT(cb_lm_cuda_forward(p.gpu, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "token id");
    ids[3] = 1;
    s.n_blocks = 1;
    CB_CHECK_EQ_INT(cb_lm_cuda_forward(p.gpu, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "block table of 1 blocks");
    s.n_blocks = 2;
    blocks[1] = 4096;
    CB_CHECK_EQ_INT(cb_lm_cuda_forward(p.gpu, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "outside the cache");
    blocks[1] = 1;
    s.pos0 = (int32_t)p.c->max_positions - 5;
    CB_CHECK_EQ_INT(cb_lm_cuda_forward(p.gpu, &s, 1, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "max_positions");
    s.pos0 = 0;
    cb_lm_seq many[9];
    for (int i = 0; i < 9; i++) many[i] = s;
    CB_CHECK_EQ_INT(cb_lm_cuda_forward(p.gpu, many, 9, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "sequences outside");
    CB_CHECK_EQ_INT(cb_lm_cuda_forward(p.gpu, &s, 1, &err), 0); /* and a good one runs */
    pair_close(&p);
    cb_lm_weights_destroy(w);
}

/* ---- Without a device ---------------------------------------------------------------------- */

/* The engine on a CUDA model (cb_lm_model_create_opts with device 0, as llm.generate builds it)
 * against the same engine on the CPU: 4 requests of different lengths decoded together,
 * greedy, f32 weights (the products f32 on both sides): the same tokens. */
static int engine_tokens(const cb_lm_weights *w, int device, int32_t out[4][16]) {
    cb_lm_model_opts mo = CB_LM_MODEL_OPTS_DEFAULT;
    mo.max_step_tokens = 64;
    mo.device = device;
    mo.max_step_seqs = 4;
    cb_lm_model *m = NULL;
    cb_lm_kv *kv = NULL;
    cb_engine *e = NULL;
    cb_error err = {0};
    int rc = cb_lm_model_create_opts(w, &mo, &m, &err);
    if (!rc) rc = cb_lm_kv_create(m, (size_t)1 << 22, 8, &kv, &err);
    cb_engine_opts eo = CB_ENGINE_OPTS_DEFAULT;
    eo.max_batch = 4;
    eo.max_tokens_per_step = 64;
    if (!rc) rc = cb_engine_create(m, kv, &eo, &e, &err);
    static const int32_t lens[4] = {5, 9, 17, 30};
    int32_t prompt[30];
    for (int i = 0; i < 30; i++) prompt[i] = (int32_t)((i * 37 + 11) % 512);
    for (int r = 0; !rc && r < 4; r++) {
        cb_engine_request q = {prompt + 30 - lens[r], lens[r], 16, 1, CB_SAMPLE_PARAMS_GREEDY,
                               (uint64_t)r, 0, r, NULL};
        rc = cb_engine_add(e, &q, &err);
    }
    int done = 0;
    for (int steps = 0; !rc && done < 4 && steps < 1000; steps++) {
        rc = cb_engine_step(e, &err);
        for (int i = 0; !rc && i < cb_engine_n_finished(e); i++, done++) {
            const cb_engine_result *res = cb_engine_finished(e, i);
            for (int t = 0; t < 16 && t < res->n_output; t++) out[res->index][t] = res->output[t];
        }
    }
    if (rc) printf("# engine on %s: %s\n", device < 0 ? "cpu" : "cuda:0", err.msg);
    cb_engine_destroy(e);
    cb_lm_kv_destroy(kv);
    cb_lm_model_destroy(m);
    return rc ? rc : done == 4 ? 0 : -1;
}

static void test_engine_on_cuda(void) {
    cb_lm_weights *w = random_weights("tiny", CB_LM_F32);
    if (!w) return;
    int32_t cpu[4][16] = {{0}}, gpu[4][16] = {{0}};
    CB_CHECK_EQ_INT(engine_tokens(w, -1, cpu), 0);
    CB_CHECK_EQ_INT(engine_tokens(w, 0, gpu), 0);
    int same = 0;
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 16; t++) same += cpu[r][t] == gpu[r][t];
    printf("# engine, tiny f32, 4 requests x 16 greedy tokens: %d of 64 equal on cuda:0\n", same);
    CB_CHECK_EQ_INT(same, 64);
    cb_lm_weights_destroy(w);
}

/* cb_lm_cuda_create must fail with CB_EUNSUPPORTED and a reason where nothing can run CUDA;
 * a failure is recorded (the skip stands otherwise). */
static void check_unavailable(void) {
    cb_lm_weights *w = random_weights("tiny", CB_LM_BF16);
    if (!w) return;
    cb_lm_cuda_opts o = CB_LM_CUDA_OPTS_DEFAULT;
    cb_lm_cuda *m = NULL;
    cb_error err = {0};
    const int rc = cb_lm_cuda_create(w, &o, &m, &err);
    printf("# without a device: cb_lm_cuda_create: %d, %s\n", rc, err.msg);
    if (rc != CB_EUNSUPPORTED || m != NULL || strstr(err.msg, "CUDA") == NULL)
        cb__test_fail(__FILE__, __LINE__, "cb_lm_cuda_create without a device: rc %d, \"%s\"",
                      rc, err.msg);
    cb_lm_cuda_destroy(m);
    cb_lm_weights_destroy(w);
}

int main(void) {
    cb_cuda c;
    if (gpu_fixture_open(&c, 0)) {
        if (!gpu_fixture_has_nvidia()) check_unavailable();
        return cb_test_done(); /* skipped, or failed when a check failed */
    }
    cb_cuda_device_info info;
    cb_error err = {0};
    if (c.api->device_info(0, &info, &err) == CB_OK)
        printf("# %s, %d SMs, module %s\n", info.name, info.sms, c.api->build);
    cb_cuda_close(&c);
    CB_RUN(test_kv_free_list);
    CB_RUN(test_bad_input);
    CB_RUN(test_presets);
    CB_RUN(test_fixtures);
    CB_RUN(test_engine_on_cuda);
    return cb_test_done();
}
