/* Tests of the CUDA neural-network backend (src/cuda/nn_*.c) against the CPU backend (oneDNN),
 * which test_nn_cpu checks against finite differences and torch.optim written out:
 *   - per layer kind, a tiny model (conv with and without bias, strided and padded; BN, also on
 *     the input itself; ReLU; max pooling with padding; average pooling with padding
 *     (count_include_pad); a residual add; flatten + linear straight off the input), and
 *     mlp, cnn and resnet18 at 32x32, batch 4: with the same initialization on both devices,
 *     the eval-mode logits, then one train step's loss, accuracy, every parameter gradient and
 *     the input gradient, then after two steps (SGD with momentum, weight decay and nesterov;
 *     and Adam with weight decay) the weights, running statistics and num_batches_tracked
 *     after sync; an inference executor's logits and a partial batch (n < batch);
 *   - device statistics (device time, pool peak) are filled in;
 *   - fp32 training on a fixed batch lowers the loss over 20 steps;
 *   - bf16 and fp16 (mixed precision; fp16 with dynamic loss scaling) resnet18: the first loss
 *     within 2e-2 (relative) of fp32's and the loss decreasing over 20 steps on a fixed batch;
 *     tf32: the same with 1e-2.
 * fp32 tolerances: max |cuda - cpu| / max |cpu| over a tensor at most 1e-4 for logits and loss,
 * 5e-4 for gradients and for weights after two steps (different summation orders in cuDNN's and
 * oneDNN's algorithms, compounded through the layers).
 * Needs a CUDA device: without one (or without the module) the test is skipped (exit 77).
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "gpu/cuda.h"
#include "gpu_fixture.h"
#include "nn/nn.h"

static int g_rc;
static cb_error g_err;

#define OK(call)                                                                                   \
    do {                                                                                           \
        g_rc = (call);                                                                             \
        if (g_rc < 0) cb__test_fail(__FILE__, __LINE__, "%s: %s", #call, g_err.msg);               \
    } while (0)

#define N_IMG 4
#define TOL_FWD 1e-4
#define TOL_GRAD 5e-4

/* ---- Models ------------------------------------------------------------------------------- */

/* Flatten + linear classifier (5 classes) on node x; sets the model's output. */
static void head(cb_nn_model *m, int x) {
    x = cb_nn_flatten(m, x, &g_err);
    x = cb_nn_linear(m, x, "fc", 5, 1, &g_err);
    CB_CHECK_CMP_INT(x, >, 0);
    m->output = x;
    m->classes = 5;
}

/* A named architecture (32x32, 10 classes) or one of the tiny per-layer models (3x8x8). */
static cb_nn_model *build(const char *name) {
    cb_nn_model *m = NULL;
    if (strcmp(name, "mlp") == 0 || strcmp(name, "cnn") == 0 || strcmp(name, "resnet18") == 0) {
        OK(cb_nn_model_build(name, 10, 3, 32, 32, &m, &g_err));
        return m;
    }
    OK(cb_nn_model_new("custom", 3, 8, 8, &m, &g_err));
    if (!m) return NULL;
    int x = 0;
    if (strcmp(name, "conv_bias") == 0) x = cb_nn_conv(m, 0, "conv", 6, 3, 1, 1, 1, &g_err);
    else if (strcmp(name, "conv_stride") == 0) x = cb_nn_conv(m, 0, "conv", 6, 3, 2, 1, 0, &g_err);
    else if (strcmp(name, "conv_1x1") == 0) x = cb_nn_conv(m, 0, "conv", 6, 1, 2, 0, 1, &g_err);
    else if (strcmp(name, "bn_input") == 0) x = cb_nn_bn(m, 0, "bn", &g_err);
    else if (strcmp(name, "linear") == 0) x = 0;
    else {
        x = cb_nn_conv(m, 0, "conv", 6, 3, 1, 1, 0, &g_err);
        if (strcmp(name, "bn") == 0) x = cb_nn_bn(m, x, "bn", &g_err);
        else if (strcmp(name, "relu") == 0) x = cb_nn_relu(m, x, &g_err);
        else if (strcmp(name, "maxpool") == 0) x = cb_nn_maxpool(m, x, 3, 2, 1, &g_err);
        else if (strcmp(name, "avgpool") == 0) x = cb_nn_avgpool(m, x, 3, 2, 1, &g_err);
        else if (strcmp(name, "add") == 0) {
            int b = cb_nn_conv(m, 0, "conv_b", 6, 1, 1, 0, 1, &g_err);
            x = cb_nn_add(m, x, b, &g_err);
        }
    }
    CB_CHECK_CMP_INT(x, >=, 0);
    head(m, x);
    return m;
}

static float *rand_floats(size_t count, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    float *x = malloc(count * sizeof *x);
    for (size_t i = 0; i < count; i++) x[i] = (float)cb_rng_normal(&r);
    return x;
}

static int32_t *rand_labels(int classes, int n, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int i = 0; i < n; i++) y[i] = (int32_t)(cb_rng_u64(&r) % (uint64_t)classes);
    return y;
}

static size_t in_count(const cb_nn_model *m, int n) {
    return (size_t)n * m->in_c * m->in_h * m->in_w;
}

static void check_close(const char *model, const char *what, const float *got, const float *ref,
                        size_t n, double tol) {
    double e = cb_test_rel_err(got, ref, n);
    if (!(e <= tol)) cb__test_fail(__FILE__, __LINE__, "%s: %s: relative error %.3g > %.3g", model,
                                   what, e, tol);
}

static cb_nn_exec_opts opts_for(const char *device, int train, cb_nn_optim optim) {
    cb_nn_exec_opts o;
    memset(&o, 0, sizeof o);
    o.batch = N_IMG;
    o.train = train;
    o.threads = 2;
    o.device = device;
    o.optim = optim;
    o.input_grad = train;
    o.precision = CB_NN_FP32;
    o.cudnn_benchmark = 1;
    return o;
}

/* ---- CPU against CUDA --------------------------------------------------------------------- */

/* Both devices' executors on their own copy of the same model (same init). */
typedef struct pair {
    cb_nn_model *m[2];             /* [0] cpu, [1] cuda */
    cb_nn_exec *e[2];
} pair;

static int pair_new(pair *p, const char *name, int train, cb_nn_optim optim) {
    static const char *const dev[2] = {"cpu", "cuda:0"};
    memset(p, 0, sizeof *p);
    for (int d = 0; d < 2; d++) {
        p->m[d] = build(name);
        if (!p->m[d]) return -1;
        cb_nn_model_init(p->m[d], 42);
        cb_nn_exec_opts o = opts_for(dev[d], train, optim);
        OK(cb_nn_exec_new(p->m[d], &o, &p->e[d], &g_err));
        if (g_rc) return -1;
    }
    return 0;
}

static void pair_free(pair *p) {
    for (int d = 0; d < 2; d++) {
        cb_nn_exec_free(p->e[d]);
        cb_nn_model_free(p->m[d]);
    }
}

/* Eval-mode logits of n images on both executors. */
static void compare_logits(const char *name, pair *p, const float *x, int n, const char *what) {
    int classes = p->m[0]->classes;
    float *z[2];
    for (int d = 0; d < 2; d++) {
        z[d] = calloc((size_t)n * classes, sizeof(float));
        OK(cb_nn_exec_forward(p->e[d], x, n, z[d], &g_err));
    }
    check_close(name, what, z[1], z[0], (size_t)n * classes, TOL_FWD);
    free(z[0]);
    free(z[1]);
}

/* Loss, accuracy, every gradient and the input gradient of one step (already taken). */
static void compare_step(const char *name, pair *p, const cb_nn_result *r, int n) {
    CB_CHECK_NEAR(r[1].loss, r[0].loss, TOL_FWD * fabs(r[0].loss) + 1e-6);
    CB_CHECK_EQ_INT(r[1].correct, r[0].correct);
    const cb_nn_model *m = p->m[0];
    for (int i = 0; i < m->n_params; i++) {
        const cb_nn_param *pp = &m->params[i];
        if (!pp->trainable) continue;
        float *g[2];
        for (int d = 0; d < 2; d++) {
            g[d] = calloc((size_t)pp->numel, sizeof(float));
            OK(cb_nn_exec_grad(p->e[d], pp->name, g[d], (size_t)pp->numel, &g_err));
        }
        char what[CB_NN_NAME_MAX + 16];
        snprintf(what, sizeof what, "grad %s", pp->name);
        check_close(name, what, g[1], g[0], (size_t)pp->numel, TOL_GRAD);
        free(g[0]);
        free(g[1]);
    }
    size_t cnt = in_count(m, n);
    float *gx[2];
    for (int d = 0; d < 2; d++) {
        gx[d] = calloc(cnt, sizeof(float));
        OK(cb_nn_exec_grad(p->e[d], NULL, gx[d], cnt, &g_err));
    }
    check_close(name, "input gradient", gx[1], gx[0], cnt, TOL_GRAD);
    free(gx[0]);
    free(gx[1]);
}

/* After sync: every float parameter (weights, running statistics) and num_batches_tracked. */
static void compare_params(const char *name, pair *p, const char *optim) {
    for (int d = 0; d < 2; d++) OK(cb_nn_exec_sync(p->e[d], &g_err));
    const cb_nn_model *a = p->m[0], *b = p->m[1];
    for (int i = 0; i < a->n_params; i++) {
        const cb_nn_param *pa = &a->params[i], *pb = &b->params[i];
        if (pa->dtype == CB_NN_I64) {
            CB_CHECK_EQ_INT(*(int64_t *)pb->data, *(int64_t *)pa->data);
            continue;
        }
        char what[CB_NN_NAME_MAX + 32];
        snprintf(what, sizeof what, "%s after 2 %s steps", pa->name, optim);
        check_close(name, what, pb->data, pa->data, (size_t)pa->numel, TOL_GRAD);
    }
}

static void check_model(const char *name) {
    cb_nn_optim opts[2];
    memset(opts, 0, sizeof opts);
    opts[0].kind = CB_NN_SGD;
    opts[0].lr = 0.05;
    opts[0].momentum = 0.9;
    opts[0].weight_decay = 1e-2;
    opts[0].nesterov = 1;
    opts[1].kind = CB_NN_ADAM;
    opts[1].lr = 1e-3;
    opts[1].weight_decay = 1e-2;
    const char *names[2] = {"SGD", "Adam"};
    for (int k = 0; k < 2; k++) {
        pair p;
        if (pair_new(&p, name, 1, opts[k]) == 0) {
            const cb_nn_model *m = p.m[0];
            float *x = rand_floats(in_count(m, N_IMG), 7);
            int32_t *y = rand_labels(m->classes, N_IMG, 8);
            compare_logits(name, &p, x, N_IMG, "eval logits before training");
            cb_nn_result r[2];
            for (int d = 0; d < 2; d++)
                OK(cb_nn_exec_train_step(p.e[d], x, y, N_IMG, &r[d], &g_err));
            compare_step(name, &p, r, N_IMG);
            for (int d = 0; d < 2; d++)
                OK(cb_nn_exec_train_step(p.e[d], x, y, N_IMG, &r[d], &g_err));
            CB_CHECK_NEAR(r[1].loss, r[0].loss, TOL_GRAD * fabs(r[0].loss) + 1e-6);
            compare_params(name, &p, names[k]);
            compare_logits(name, &p, x, N_IMG - 1, "eval logits, partial batch, after 2 steps");
            /* A partial training batch gets its own plan on both devices. */
            for (int d = 0; d < 2; d++)
                OK(cb_nn_exec_train_step(p.e[d], x, y, N_IMG - 1, &r[d], &g_err));
            compare_step(name, &p, r, N_IMG - 1);
            free(x);
            free(y);
        }
        pair_free(&p);
    }
    /* Inference executors (the CUDA one runs BN unfused whatever opts.fuse says). */
    pair p;
    cb_nn_optim none;
    memset(&none, 0, sizeof none);
    if (pair_new(&p, name, 0, none) == 0) {
        float *x = rand_floats(in_count(p.m[0], N_IMG), 9);
        compare_logits(name, &p, x, N_IMG, "inference logits");
        free(x);
    }
    pair_free(&p);
}

static void test_layers(void) {
    static const char *const layers[] = {"conv_bias", "conv_stride", "conv_1x1", "bn", "bn_input",
                                         "relu", "maxpool", "avgpool", "add", "linear"};
    for (size_t i = 0; i < sizeof layers / sizeof *layers; i++) check_model(layers[i]);
}

static void test_mlp(void) { check_model("mlp"); }
static void test_cnn(void) { check_model("cnn"); }
static void test_resnet18(void) { check_model("resnet18"); }

/* ---- Device statistics, training progress, bf16 ------------------------------------------- */

/* 20 train steps of resnet18 on one fixed batch; *first and *last losses. */
static int train_20(cb_nn_precision prec, double *first, double *last, cb_nn_exec_stats *st) {
    cb_nn_model *m = build("resnet18");
    if (!m) return -1;
    cb_nn_model_init(m, 3);
    cb_nn_optim sgd;
    memset(&sgd, 0, sizeof sgd);
    sgd.kind = CB_NN_SGD;
    sgd.lr = 0.02;
    sgd.momentum = 0.9;
    cb_nn_exec_opts o = opts_for("cuda:0", 1, sgd);
    o.input_grad = 0;
    o.precision = prec;
    cb_nn_exec *e = NULL;
    int rc = cb_nn_exec_new(m, &o, &e, &g_err);
    if (rc == 0) {
        float *x = rand_floats(in_count(m, N_IMG), 11);
        int32_t *y = rand_labels(m->classes, N_IMG, 12);
        cb_nn_result r;
        for (int s = 0; s < 20 && rc == 0; s++) {
            rc = cb_nn_exec_train_step(e, x, y, N_IMG, &r, &g_err);
            if (s == 0) *first = r.loss;
            *last = r.loss;
        }
        cb_nn_exec_get_stats(e, st);
        printf("# %s: loss %.5f -> %.5f, device %.3f ms/step, pool+fixed peak %lld bytes\n",
               cb_nn_precision_name(prec), *first, *last, st->device_ns / 20 / 1e6,
               (long long)st->device_mem_peak_bytes);
        free(x);
        free(y);
    }
    cb_nn_exec_free(e);
    cb_nn_model_free(m);
    return rc;
}

static void test_fp32_progress(void) {
    double first = 0, last = 0;
    cb_nn_exec_stats st;
    OK(train_20(CB_NN_FP32, &first, &last, &st));
    if (g_rc) return;
    CB_CHECK(last < first);
    CB_CHECK_EQ_INT(st.calls, 20);
    CB_CHECK_CMP_INT(st.device_ns, >, 0);
    CB_CHECK_CMP_INT(st.last_device_ns, >, 0);
    CB_CHECK_CMP_INT(st.device_ns, >=, st.last_device_ns);
    CB_CHECK_CMP_INT(st.device_mem_peak_bytes, >, 11000000 * 4); /* resnet18's weights alone */
}

/* Lower precisions against fp32 on resnet18: first loss within tol (relative), then progress. */
static void check_precision(cb_nn_precision prec, double tol) {
    double f32_first = 0, f32_last = 0, first = 0, last = 0;
    cb_nn_exec_stats st;
    OK(train_20(prec, &first, &last, &st));
    OK(train_20(CB_NN_FP32, &f32_first, &f32_last, &st));
    if (g_rc) return;
    CB_CHECK_NEAR(first, f32_first, tol * fabs(f32_first));
    CB_CHECK(last < first);
}

static void test_tf32(void) { check_precision(CB_NN_TF32, 1e-2); }
static void test_bf16(void) { check_precision(CB_NN_BF16, 2e-2); }
static void test_fp16(void) { check_precision(CB_NN_FP16, 2e-2); }

/* Errors a caller can make that only the CUDA backend sees. */
static void test_errors(void) {
    cb_nn_model *m = build("bn");
    if (!m) return;
    cb_nn_model_init(m, 1);
    cb_nn_optim sgd;
    memset(&sgd, 0, sizeof sgd);
    sgd.kind = CB_NN_SGD;
    sgd.lr = 0.1;
    cb_nn_exec_opts o = opts_for("cuda:0", 1, sgd);
    o.input_grad = 0;
    cb_nn_exec *e = NULL;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    if (e) {
        float g[4];
        CB_CHECK_EQ_INT(cb_nn_exec_grad(e, NULL, g, 4, &g_err), CB_EINVAL);
        CB_CHECK_CONTAINS(g_err.msg, "input_grad");
        CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "nope", g, 4, &g_err), CB_ENOENT);
        CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "bn.running_mean", g, 4, &g_err), CB_EINVAL);
        CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "fc.bias", g, 4, &g_err), CB_EINVAL); /* 5 values */
    }
    cb_nn_exec_free(e);
    o.optim.nesterov = 1; /* nesterov without momentum, as torch refuses */
    CB_CHECK_EQ_INT(cb_nn_exec_new(m, &o, &e, &g_err), CB_EINVAL);
    cb_nn_model_free(m);
}

int main(void) {
    cb_cuda c;
    if (gpu_fixture_open(&c, 0)) return cb_test_done();
    CB_RUN(test_layers);
    CB_RUN(test_mlp);
    CB_RUN(test_cnn);
    CB_RUN(test_resnet18);
    CB_RUN(test_fp32_progress);
    CB_RUN(test_tf32);
    CB_RUN(test_bf16);
    CB_RUN(test_fp16);
    CB_RUN(test_errors);
    cb_cuda_close(&c);
    return cb_test_done();
}
