/* Tests of the CPU neural-network backend (nn/cpu/, oneDNN), against readable references:
 *   - per layer: gradients of every op (conv with and without bias, strided and padded; BN in
 *     training mode; ReLU; max and average pooling; a residual ADD; flatten + linear; the loss)
 *     against central finite differences of the loss, on tiny models;
 *   - SGD (momentum, weight decay, nesterov) and Adam: three steps against the update written
 *     out here from the reported gradients;
 *   - BN running statistics and num_batches_tracked after steps, and eval mode on them;
 *   - fused inference (BN folded, ReLU and residual add as post-ops) against unfused inference
 *     and the training executor's eval-mode forward, on a small ResNet-like graph;
 *   - n < batch, and the errors a caller can make.
 * Real oneDNN, no mocks. Everything is deterministic (fixed seeds).
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/rng.h"
#include "nn/nn.h"

/* ---- Model helpers ------------------------------------------------------------------------ */

static int g_rc;
static cb_error g_err;

#define OK(call)                                                                                   \
    do {                                                                                           \
        g_rc = (call);                                                                             \
        if (g_rc < 0) cb__test_fail(__FILE__, __LINE__, "%s: %s", #call, g_err.msg);               \
    } while (0)

/* torchvision's BasicBlock on node x: conv3x3-bn-relu-conv3x3-bn (+ downsample) + x, relu. */
static int basic_block(cb_nn_model *m, int x, const char *name, int out_c, int stride) {
    char b[CB_NN_NAME_MAX];
    int in_c = m->nodes[x].c;
    snprintf(b, sizeof b, "%s.conv1", name);
    int y = cb_nn_conv(m, x, b, out_c, 3, stride, 1, 0, &g_err);
    snprintf(b, sizeof b, "%s.bn1", name);
    y = cb_nn_bn(m, y, b, &g_err);
    y = cb_nn_relu(m, y, &g_err);
    snprintf(b, sizeof b, "%s.conv2", name);
    y = cb_nn_conv(m, y, b, out_c, 3, 1, 1, 0, &g_err);
    snprintf(b, sizeof b, "%s.bn2", name);
    y = cb_nn_bn(m, y, b, &g_err);
    int sc = x;
    if (stride != 1 || in_c != out_c) {
        snprintf(b, sizeof b, "%s.downsample.0", name);
        sc = cb_nn_conv(m, x, b, out_c, 1, stride, 0, 0, &g_err);
        snprintf(b, sizeof b, "%s.downsample.1", name);
        sc = cb_nn_bn(m, sc, b, &g_err);
    }
    y = cb_nn_add(m, y, sc, &g_err);
    return cb_nn_relu(m, y, &g_err);
}

/* Flatten + linear classifier on node x; sets the model's output. */
static void head(cb_nn_model *m, int x, int classes) {
    x = cb_nn_flatten(m, x, &g_err);
    x = cb_nn_linear(m, x, "fc", classes, 1, &g_err);
    CB_CHECK_CMP_INT(x, >, 0);
    m->output = x;
    m->classes = classes;
}

/* Random parameters: conv kaiming-normal, BN affine and running statistics away from identity,
 * linear uniform(+-1/sqrt(fan_in)). */
static void randomize(cb_nn_model *m, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        if (nd->op == CB_NN_CONV || nd->op == CB_NN_LINEAR) {
            cb_nn_param *w = &m->params[nd->param[0]];
            double fan_in = (double)w->numel / w->dims[0];
            float *d = w->data;
            for (int64_t k = 0; k < w->numel; k++)
                d[k] = nd->op == CB_NN_CONV ? (float)(cb_rng_normal(&r) * sqrt(2.0 / fan_in))
                                            : (float)((2 * cb_rng_uniform(&r) - 1) / sqrt(fan_in));
            if (nd->param[1] >= 0) {
                cb_nn_param *b = &m->params[nd->param[1]];
                float *bd = b->data;
                for (int64_t k = 0; k < b->numel; k++)
                    bd[k] = (float)((2 * cb_rng_uniform(&r) - 1) * 0.2);
            }
        } else if (nd->op == CB_NN_BN) {
            float *g = m->params[nd->param[0]].data, *b = m->params[nd->param[1]].data;
            float *rm = m->params[nd->param[2]].data, *rv = m->params[nd->param[3]].data;
            for (int c = 0; c < nd->c; c++) {
                g[c] = (float)(0.5 + cb_rng_uniform(&r));
                b[c] = (float)(0.6 * cb_rng_uniform(&r) - 0.3);
                rm[c] = (float)(0.6 * cb_rng_uniform(&r) - 0.3);
                rv[c] = (float)(0.5 + 1.5 * cb_rng_uniform(&r));
            }
            *(int64_t *)m->params[nd->param[4]].data = 3;
        }
    }
}

static float *rand_input(const cb_nn_model *m, int n, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    size_t count = (size_t)n * m->in_c * m->in_h * m->in_w;
    float *x = malloc(count * sizeof *x);
    for (size_t i = 0; i < count; i++) x[i] = (float)cb_rng_normal(&r);
    return x;
}

/* Input whose values within one image and channel are a permutation of a grid 4/(h*w) apart:
 * max pooling on it has no near-ties a small perturbation could flip. */
static float *spread_input(const cb_nn_model *m, int n, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    size_t plane = (size_t)m->in_h * m->in_w, planes = (size_t)n * m->in_c;
    float *x = malloc(planes * plane * sizeof *x);
    for (size_t p = 0; p < planes; p++) {
        float *v = x + p * plane;
        for (size_t i = 0; i < plane; i++) v[i] = (float)(4.0 * i / plane - 2.0);
        for (size_t i = plane - 1; i > 0; i--) {
            size_t j = (size_t)(cb_rng_u64(&r) % (i + 1));
            float t = v[i];
            v[i] = v[j];
            v[j] = t;
        }
    }
    return x;
}

static int32_t *rand_labels(const cb_nn_model *m, int n, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int i = 0; i < n; i++) y[i] = (int32_t)(cb_rng_u64(&r) % (uint64_t)m->classes);
    return y;
}

static cb_nn_exec_opts train_opts(int batch) {
    cb_nn_exec_opts o;
    memset(&o, 0, sizeof o);
    o.batch = batch;
    o.train = 1;
    o.threads = 2;
    o.optim.kind = CB_NN_SGD;
    return o;
}

static cb_nn_exec_opts infer_opts(int batch, int fuse) {
    cb_nn_exec_opts o;
    memset(&o, 0, sizeof o);
    o.batch = batch;
    o.threads = 2;
    o.fuse = fuse;
    return o;
}

/* ---- Smoke ---------------------------------------------------------------------------------- */

static cb_nn_model *small_resnet(int c, int hw, int classes) {
    cb_nn_model *m;
    OK(cb_nn_model_new("custom", c, hw, hw, &m, &g_err));
    int x = cb_nn_conv(m, 0, "conv1", 16, 3, 1, 1, 0, &g_err);
    x = cb_nn_bn(m, x, "bn1", &g_err);
    x = cb_nn_relu(m, x, &g_err);
    x = cb_nn_maxpool(m, x, 3, 2, 1, &g_err);
    x = basic_block(m, x, "layer1.0", 16, 1);
    x = basic_block(m, x, "layer2.0", 32, 2);
    x = cb_nn_avgpool(m, x, m->nodes[x].h, 1, 0, &g_err);
    head(m, x, classes);
    return m;
}

static void test_smoke(void) {
    cb_nn_model *m = small_resnet(3, 16, 10);
    randomize(m, 1);
    float *x = rand_input(m, 4, 2);
    int32_t *y = rand_labels(m, 4, 3);
    cb_nn_exec_opts o = train_opts(4);
    o.optim.lr = 0.1;
    o.optim.momentum = 0.9;
    cb_nn_exec *e;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    if (g_rc) return;
    cb_nn_result r;
    for (int s = 0; s < 3; s++) {
        OK(cb_nn_exec_train_step(e, x, y, 4, &r, &g_err));
        printf("# step %d loss %.6f correct %lld\n", s, r.loss, (long long)r.correct);
    }
    float logits[40];
    OK(cb_nn_exec_forward(e, x, 4, logits, &g_err));
    printf("# logits %.4f %.4f\n", logits[0], logits[1]);
    cb_nn_exec_free(e);
    cb_nn_model_free(m);
    free(x);
    free(y);
}

/* ---- Gradients against finite differences ------------------------------------------------ */

/* The loss of one training-mode forward (batch statistics) of m on (x, y): a fresh executor and
 * one step with lr 0, which leaves the weights as they are. With e, that executor's step instead
 * (for perturbing the input, which needs no new executor). */
static double train_loss(cb_nn_exec *e, cb_nn_model *m, const float *x, const int32_t *y, int n) {
    cb_nn_exec_opts o = train_opts(n);
    cb_nn_exec *own = NULL;
    cb_nn_result r = {0};
    if (!e) {
        OK(cb_nn_exec_new(m, &o, &own, &g_err));
        if (g_rc) return NAN;
    }
    OK(cb_nn_exec_train_step(e ? e : own, x, y, n, &r, &g_err));
    cb_nn_exec_free(own);
    return r.loss;
}

/* Losses at data[k] +- h; *step receives the step actually representable in float. */
static void perturbed(cb_nn_exec *e, cb_nn_model *m, float *data, size_t k, double h,
                      const float *x, const int32_t *y, int n, double *lp, double *lm,
                      double *step) {
    float save = data[k];
    data[k] = (float)(save + h);
    double hi = data[k];
    *lp = train_loss(e, m, x, y, n);
    data[k] = (float)(save - h);
    double lo = data[k];
    *lm = train_loss(e, m, x, y, n);
    data[k] = save;
    *step = (hi - lo) / 2;
}

/* Checks cb_nn_exec_grad for every trainable parameter and the input of m against central
 * differences of the loss, on all elements of tensors of <= 50 and 50 random ones of larger
 * tensors (input: random normal, or spread_input when spread).
 *
 * Tolerance: the loss is a float32 forward (about 1e-7 relative noise per evaluation), so with
 * the step h = 1e-3 an element's tolerance is rtol |analytic| + atol, with rtol = 2e-2 and
 * atol = 1e-3 x the tensor's largest gradient + 1e-6 |loss| / h (the noise floor). ReLU and max
 * pooling make the loss piecewise smooth, and a difference across a kink is no derivative:
 * second differences D(h) = L(+h) - 2 L(0) + L(-h) satisfy D(h) = 4 D(h/2) where L is smooth,
 * while across a kink |D(h) - 4 D(h/2)| / h is about the jump in slope; elements with a jump
 * above their tolerance are skipped, at most a tenth of them. A kink the test misses (one ReLU
 * unit among thousands flipping) moves a difference by a fraction of the tolerance, so each
 * element must be within 3 x its tolerance and each tensor within ||fd - analytic|| <= 2e-2
 * ||analytic|| over its checked elements. Prints the worst element error (in tolerances) and
 * the worst tensor's relative error; returns the latter. */
static double check_fd(const char *what, cb_nn_model *m, int n, uint64_t seed, int spread) {
    const double h = 1e-3, rtol = 2e-2;
    float *x = spread ? spread_input(m, n, seed) : rand_input(m, n, seed);
    int32_t *y = rand_labels(m, n, seed + 1);
    cb_nn_exec_opts o = train_opts(n);
    o.input_grad = 1;
    cb_nn_exec *e;
    cb_nn_result r;
    double worst = 0, worst_tensor = 0;
    int checked = 0, kinks = 0;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    if (g_rc) return INFINITY;
    OK(cb_nn_exec_train_step(e, x, y, n, &r, &g_err));
    double l0 = r.loss;
    /* Every gradient of this step first: the input's differences take further steps on e. */
    float **grads = calloc((size_t)m->n_params + 1, sizeof *grads);
    for (int pi = -1; pi < m->n_params; pi++) {
        cb_nn_param *p = pi >= 0 ? &m->params[pi] : NULL;
        if (p && !p->trainable) continue;
        size_t numel = p ? (size_t)p->numel : (size_t)n * m->in_c * m->in_h * m->in_w;
        grads[pi + 1] = malloc(numel * sizeof(float));
        OK(cb_nn_exec_grad(e, p ? p->name : NULL, grads[pi + 1], numel, &g_err));
    }
    cb_rng rng;
    cb_rng_seed(&rng, seed + 2);
    for (int pi = -1; pi < m->n_params; pi++) {
        cb_nn_param *p = pi >= 0 ? &m->params[pi] : NULL;
        if (p && !p->trainable) continue;
        size_t numel = p ? (size_t)p->numel : (size_t)n * m->in_c * m->in_h * m->in_w;
        float *g = grads[pi + 1], *data = p ? p->data : x;
        double scale = 0, diff2 = 0, norm2 = 0;
        for (size_t k = 0; k < numel; k++)
            if (fabs(g[k]) > scale) scale = fabs(g[k]);
        size_t samples = numel <= 50 ? numel : 50;
        for (size_t s = 0; s < samples && !g_rc; s++) {
            size_t k = numel <= 50 ? s : (size_t)(cb_rng_u64(&rng) % numel);
            double lp, lm, step, lp2, lm2, step2;
            perturbed(p ? NULL : e, m, data, k, h, x, y, n, &lp, &lm, &step);
            perturbed(p ? NULL : e, m, data, k, h / 2, x, y, n, &lp2, &lm2, &step2);
            double fd = (lp - lm) / (2 * step);
            double jump = fabs((lp - 2 * l0 + lm) - 4 * (lp2 - 2 * l0 + lm2)) / h;
            double allowed = rtol * fabs(g[k]) + 1e-3 * scale + 1e-6 * fmax(1, fabs(l0)) / h;
            if (jump > allowed) {
                kinks++;
                continue;
            }
            double err = fabs(fd - g[k]) / allowed;
            if (err > worst) worst = err;
            diff2 += (fd - g[k]) * (fd - g[k]);
            norm2 += (double)g[k] * g[k];
            if (err > 3)
                cb__test_fail(__FILE__, __LINE__, "%s: d loss / d %s[%zu]: analytic %.6g, finite "
                              "difference %.6g (%.2f x the tolerance %.2g)", what,
                              p ? p->name : "input", k, g[k], fd, err, allowed);
            checked++;
        }
        double rel = sqrt(diff2 / (norm2 + 1e-30));
        if (rel > worst_tensor) worst_tensor = rel;
        if (rel > 2e-2)
            cb__test_fail(__FILE__, __LINE__, "%s: d loss / d %s: ||fd - analytic|| / ||analytic|| "
                          "= %.3g > 2e-2", what, p ? p->name : "input", rel);
        free(g);
    }
    free(grads);
    printf("# %s: %d gradient elements, worst %.2f x tolerance, worst tensor relative error "
           "%.1e, %d skipped at kinks\n", what, checked, worst, worst_tensor, kinks);
    CB_CHECK_CMP_INT(kinks * 10, <=, checked + kinks);
    cb_nn_exec_free(e);
    free(x);
    free(y);
    return worst_tensor;
}

static cb_nn_model *new_model(int c, int h, int w) {
    cb_nn_model *m = NULL;
    OK(cb_nn_model_new("custom", c, h, w, &m, &g_err));
    return m;
}

static void test_grad_conv(void) {
    cb_nn_model *m = new_model(3, 9, 9); /* bias, stride 2, pad 1 */
    int x = cb_nn_conv(m, 0, "conv", 4, 3, 2, 1, 1, &g_err);
    head(m, x, 5);
    randomize(m, 10);
    check_fd("conv 3x3 stride 2 pad 1 + bias", m, 3, 11, 0);
    cb_nn_model_free(m);
    m = new_model(3, 6, 6); /* no bias, 16 channels (blocked layout), 1x1 after it */
    x = cb_nn_conv(m, 0, "conv1", 16, 3, 1, 1, 0, &g_err);
    x = cb_nn_conv(m, x, "conv2", 16, 1, 1, 0, 0, &g_err);
    head(m, x, 4);
    randomize(m, 12);
    check_fd("conv 3x3 + conv 1x1, no bias, 16 channels", m, 2, 13, 0);
    cb_nn_model_free(m);
}

static void test_grad_bn(void) {
    cb_nn_model *m = new_model(3, 5, 5);
    int x = cb_nn_conv(m, 0, "conv", 16, 3, 1, 1, 0, &g_err);
    x = cb_nn_bn(m, x, "bn", &g_err);
    head(m, x, 4);
    randomize(m, 20);
    check_fd("conv + batch norm (training)", m, 4, 21, 0);
    cb_nn_model_free(m);
    m = new_model(3, 4, 4); /* BN straight on the input (plain layout), then ReLU (fused) */
    x = cb_nn_bn(m, 0, "bn", &g_err);
    x = cb_nn_relu(m, x, &g_err);
    head(m, x, 3);
    randomize(m, 22);
    check_fd("batch norm + relu on the input", m, 3, 23, 0);
    cb_nn_model_free(m);
}

static void test_grad_relu(void) {
    cb_nn_model *m = new_model(3, 6, 6);
    int x = cb_nn_conv(m, 0, "conv", 4, 3, 1, 1, 1, &g_err);
    x = cb_nn_relu(m, x, &g_err);
    head(m, x, 5);
    randomize(m, 30);
    check_fd("conv + relu", m, 3, 31, 0);
    cb_nn_model_free(m);
}

static void test_grad_pool(void) {
    /* Max pooling first, on an input without near-ties: no perturbation flips a window. (The
     * ResNet order, conv then max pooling, is checked against PyTorch in test_nn_torch.) */
    cb_nn_model *m = new_model(3, 8, 8);
    int x = cb_nn_maxpool(m, 0, 3, 2, 1, &g_err);
    x = cb_nn_conv(m, x, "conv", 4, 3, 1, 1, 1, &g_err);
    head(m, x, 5);
    randomize(m, 40);
    check_fd("maxpool 3x3 stride 2 pad 1 + conv", m, 3, 41, 1);
    cb_nn_model_free(m);
    m = new_model(3, 8, 8);
    x = cb_nn_conv(m, 0, "conv", 16, 3, 1, 1, 1, &g_err);
    x = cb_nn_avgpool(m, x, 3, 2, 1, &g_err);
    x = cb_nn_avgpool(m, x, 4, 1, 0, &g_err); /* global, as ResNet's */
    head(m, x, 5);
    randomize(m, 42);
    check_fd("conv + avgpool 3x3 stride 2 pad 1 + global avgpool", m, 3, 43, 0);
    cb_nn_model_free(m);
}

static void test_grad_add(void) {
    cb_nn_model *m = new_model(3, 4, 4);
    int x = cb_nn_conv(m, 0, "conv1", 16, 3, 1, 1, 0, &g_err);
    x = cb_nn_bn(m, x, "bn1", &g_err);
    x = cb_nn_relu(m, x, &g_err);
    x = basic_block(m, x, "layer1.0", 16, 1);
    x = basic_block(m, x, "layer2.0", 32, 2);
    head(m, x, 4);
    randomize(m, 50);
    check_fd("residual blocks (identity and downsample)", m, 2, 51, 0);
    cb_nn_model_free(m);
}

static void test_grad_linear(void) {
    cb_nn_model *m = new_model(2, 3, 3); /* flatten, linear-relu-linear on flat features */
    int x = cb_nn_flatten(m, 0, &g_err);
    x = cb_nn_linear(m, x, "fc1", 8, 1, &g_err);
    x = cb_nn_relu(m, x, &g_err);
    x = cb_nn_linear(m, x, "fc2", 5, 0, &g_err);
    m->output = x;
    m->classes = 5;
    randomize(m, 60);
    check_fd("flatten + linear + relu + linear", m, 3, 61, 0);
    cb_nn_model_free(m);
}

/* The loss itself: its value against cross-entropy written out here, and its gradient. */
static void test_loss(void) {
    cb_nn_model *m = new_model(4, 1, 1);
    head(m, 0, 3);
    randomize(m, 70);
    const int n = 5;
    float *x = rand_input(m, n, 71);
    int32_t *y = rand_labels(m, n, 72);
    const float *w = m->params[0].data, *b = m->params[1].data;
    double loss = 0;
    int correct = 0;
    for (int i = 0; i < n; i++) {
        double z[3], mx = -INFINITY, sum = 0;
        int best = 0;
        for (int k = 0; k < 3; k++) {
            z[k] = b[k];
            for (int c = 0; c < 4; c++) z[k] += (double)w[k * 4 + c] * x[i * 4 + c];
            if (z[k] > mx) {
                mx = z[k];
                best = k;
            }
        }
        for (int k = 0; k < 3; k++) sum += exp(z[k] - mx);
        loss += mx + log(sum) - z[y[i]];
        correct += best == y[i];
    }
    loss /= n;
    cb_nn_exec_opts o = train_opts(n);
    cb_nn_exec *e;
    cb_nn_result r;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    OK(cb_nn_exec_eval(e, x, y, n, &r, &g_err));
    CB_CHECK_NEAR(r.loss, loss, 1e-5 * loss);
    CB_CHECK_EQ_INT(r.correct, correct);
    CB_CHECK_EQ_INT(r.n, n);
    OK(cb_nn_exec_train_step(e, x, y, n, &r, &g_err));
    CB_CHECK_NEAR(r.loss, loss, 1e-5 * loss);
    printf("# loss %.8f, reference %.8f\n", r.loss, loss);
    cb_nn_exec_free(e);
    check_fd("linear + loss", m, n, 71, 0);
    cb_nn_model_free(m);
    free(x);
    free(y);
}

/* ---- Optimizers ------------------------------------------------------------------------- */

/* Three steps of opt on a small conv-BN-ReLU-linear model; after each, the executor's weights
 * (synced) must equal torch.optim's update written out here from the gradients the executor
 * reports for that step. Both sides do the same float arithmetic, so the tolerance is tight
 * (1e-5 of the weight scale; the worst seen is printed). */
static void check_optim(const char *what, cb_nn_optim opt) {
    cb_nn_model *m = new_model(3, 6, 6);
    int x = cb_nn_conv(m, 0, "conv", 16, 3, 1, 1, 1, &g_err);
    x = cb_nn_bn(m, x, "bn", &g_err);
    x = cb_nn_relu(m, x, &g_err);
    x = cb_nn_avgpool(m, x, 2, 2, 0, &g_err);
    head(m, x, 5);
    randomize(m, 80);
    const int n = 4, np = m->n_params;
    float *xin = rand_input(m, n, 81);
    int32_t *y = rand_labels(m, n, 82);
    float **ref = calloc((size_t)np, sizeof *ref), **m1 = calloc((size_t)np, sizeof *m1);
    float **m2 = calloc((size_t)np, sizeof *m2);
    for (int i = 0; i < np; i++) {
        cb_nn_param *p = &m->params[i];
        if (!p->trainable) continue;
        ref[i] = malloc((size_t)p->numel * sizeof(float));
        memcpy(ref[i], p->data, (size_t)p->numel * sizeof(float));
        m1[i] = calloc((size_t)p->numel, sizeof(float));
        m2[i] = calloc((size_t)p->numel, sizeof(float));
    }
    cb_nn_exec_opts o = train_opts(n);
    o.optim = opt;
    cb_nn_exec *e;
    cb_nn_result r;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    if (g_rc) return;
    double worst = 0;
    for (int t = 1; t <= 3; t++) {
        OK(cb_nn_exec_train_step(e, xin, y, n, &r, &g_err));
        for (int i = 0; i < np; i++) {
            cb_nn_param *p = &m->params[i];
            if (!p->trainable) continue;
            float *g = malloc((size_t)p->numel * sizeof(float)), *w = ref[i];
            OK(cb_nn_exec_grad(e, p->name, g, (size_t)p->numel, &g_err));
            for (int64_t k = 0; k < p->numel; k++) {
                float d = g[k] + (float)opt.weight_decay * w[k];
                if (opt.kind == CB_NN_ADAM) { /* torch.optim.Adam, L2 weight decay */
                    m1[i][k] = (float)opt.beta1 * m1[i][k] + (float)(1 - opt.beta1) * d;
                    m2[i][k] = (float)opt.beta2 * m2[i][k] + (float)(1 - opt.beta2) * d * d;
                    double bc1 = 1 - pow(opt.beta1, t), bc2 = 1 - pow(opt.beta2, t);
                    w[k] -= (float)(opt.lr / bc1 * m1[i][k] / (sqrt(m2[i][k]) / sqrt(bc2) + opt.eps));
                } else if (opt.momentum != 0) { /* torch.optim.SGD: buffer starts as d */
                    m1[i][k] = t == 1 ? d : (float)opt.momentum * m1[i][k] + d;
                    float step = opt.nesterov ? d + (float)opt.momentum * m1[i][k] : m1[i][k];
                    w[k] -= (float)opt.lr * step;
                } else {
                    w[k] -= (float)opt.lr * d;
                }
            }
            free(g);
        }
        OK(cb_nn_exec_sync(e, &g_err));
        for (int i = 0; i < np; i++) {
            cb_nn_param *p = &m->params[i];
            if (!p->trainable) continue;
            double err = cb_test_rel_err(p->data, ref[i], (size_t)p->numel);
            if (err > worst) worst = err;
            if (err > 1e-5)
                cb__test_fail(__FILE__, __LINE__, "%s step %d: %s differs from the reference "
                              "update by %.3g (relative to its largest value)", what, t, p->name,
                              err);
        }
    }
    printf("# %s: 3 steps, weights within %.1e of the reference update\n", what, worst);
    CB_CHECK(r.loss > 0 && isfinite(r.loss));
    cb_nn_exec_free(e);
    for (int i = 0; i < np; i++) {
        free(ref[i]);
        free(m1[i]);
        free(m2[i]);
    }
    free(ref);
    free(m1);
    free(m2);
    free(xin);
    free(y);
    cb_nn_model_free(m);
}

static void test_optim(void) {
    cb_nn_optim o;
    memset(&o, 0, sizeof o);
    o.kind = CB_NN_SGD;
    o.lr = 0.1;
    check_optim("SGD", o);
    o.momentum = 0.9;
    o.weight_decay = 1e-2;
    check_optim("SGD momentum 0.9, weight decay 1e-2", o);
    o.nesterov = 1;
    check_optim("SGD nesterov", o);
    memset(&o, 0, sizeof o);
    o.kind = CB_NN_ADAM;
    o.lr = 1e-2;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.weight_decay = 1e-2;
    check_optim("Adam, weight decay 1e-2", o);
}

/* ---- Batch norm statistics ---------------------------------------------------------------- */

/* A 1x1 conv (a matrix product, written out here) then BN, on 16 channels (the blocked layout):
 * after two steps the running statistics and num_batches_tracked follow PyTorch (momentum 0.1,
 * unbiased variance), and eval mode then normalizes with them. */
static void test_bn_stats(void) {
    cb_nn_model *m = new_model(3, 5, 5);
    int x = cb_nn_conv(m, 0, "conv", 16, 1, 1, 0, 0, &g_err);
    x = cb_nn_bn(m, x, "bn", &g_err);
    head(m, x, 4);
    randomize(m, 90);
    const int n = 3, hw = 25, C = 16;
    float *xin = rand_input(m, n, 91);
    int32_t *y = rand_labels(m, n, 92);
    cb_nn_param *w = cb_nn_model_param(m, "conv.weight"), *rm = cb_nn_model_param(m, "bn.running_mean");
    cb_nn_param *rv = cb_nn_model_param(m, "bn.running_var");
    cb_nn_param *nbt = cb_nn_model_param(m, "bn.num_batches_tracked");
    float conv[3 * 16 * 25];
    const float *wd = w->data;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < C; o++)
            for (int p = 0; p < hw; p++) {
                double acc = 0;
                for (int c = 0; c < 3; c++) acc += (double)wd[o * 3 + c] * xin[(i * 3 + c) * hw + p];
                conv[(i * C + o) * hw + p] = (float)acc;
            }
    double erm[16], erv[16];
    for (int o = 0; o < C; o++) {
        double sum = 0, sq = 0;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) sum += conv[(i * C + o) * hw + p];
        double mean = sum / (n * hw);
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                double d = conv[(i * C + o) * hw + p] - mean;
                sq += d * d;
            }
        double var = sq / (n * hw - 1);
        erm[o] = ((const float *)rm->data)[o];
        erv[o] = ((const float *)rv->data)[o];
        for (int s = 0; s < 2; s++) { /* the same batch twice; lr 0 keeps the conv as it is */
            erm[o] = 0.9 * erm[o] + 0.1 * mean;
            erv[o] = 0.9 * erv[o] + 0.1 * var;
        }
    }
    int64_t nbt0 = *(int64_t *)nbt->data;
    cb_nn_exec_opts o = train_opts(n);
    cb_nn_exec *e;
    cb_nn_result r;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    if (g_rc) return;
    OK(cb_nn_exec_train_step(e, xin, y, n, &r, &g_err));
    OK(cb_nn_exec_train_step(e, xin, y, n, &r, &g_err));
    OK(cb_nn_exec_sync(e, &g_err));
    double worst = 0;
    for (int c = 0; c < C; c++) {
        double a = fabs(((float *)rm->data)[c] - erm[c]), b = fabs(((float *)rv->data)[c] - erv[c]);
        if (a > worst) worst = a;
        if (b / erv[c] > worst) worst = b / erv[c];
        CB_CHECK_NEAR(((float *)rm->data)[c], erm[c], 1e-5);
        CB_CHECK_NEAR(((float *)rv->data)[c], erv[c], 1e-5 * erv[c]);
    }
    CB_CHECK_EQ_INT(*(int64_t *)nbt->data, nbt0 + 2);
    printf("# running statistics within %.1e of PyTorch's update\n", worst);
    /* Eval mode: logits from running statistics, written out here from the synced model. */
    float logits[3 * 4], want[3 * 4];
    OK(cb_nn_exec_forward(e, xin, n, logits, &g_err));
    const float *gm = cb_nn_model_param(m, "bn.weight")->data, *bt = cb_nn_model_param(m, "bn.bias")->data;
    const float *fw = cb_nn_model_param(m, "fc.weight")->data, *fb = cb_nn_model_param(m, "fc.bias")->data;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            double acc = fb[k];
            for (int c = 0; c < C; c++)
                for (int p = 0; p < hw; p++) {
                    double z = (conv[(i * C + c) * hw + p] - ((float *)rm->data)[c]) /
                                   sqrt(((float *)rv->data)[c] + 1e-5) * gm[c] + bt[c];
                    acc += fw[k * C * hw + c * hw + p] * z;
                }
            want[i * 4 + k] = (float)acc;
        }
    double err = cb_test_rel_err(logits, want, 12);
    printf("# eval after training: logits within %.1e (relative) of the running-statistics "
           "reference\n", err);
    CB_CHECK(err < 1e-5);
    cb_nn_exec_free(e);
    cb_nn_model_free(m);
    free(xin);
    free(y);
}

/* ---- Fused inference ------------------------------------------------------------------------ */

/* Logits of m on n images of xin: fused inference, unfused inference, a training executor's
 * eval mode; returns the worst difference to unfused. */
static double fuse_three_ways(cb_nn_model *m, const float *xin, int n) {
    int classes = m->classes;
    float *l_fused = calloc((size_t)n * classes, sizeof(float));
    float *l_plain = calloc((size_t)n * classes, sizeof(float));
    float *l_train = calloc((size_t)n * classes, sizeof(float));
    cb_nn_exec *e;
    cb_nn_exec_opts o = infer_opts(n, 1);
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    OK(cb_nn_exec_forward(e, xin, n, l_fused, &g_err));
    OK(cb_nn_exec_sync(e, &g_err)); /* inference: writes nothing */
    cb_nn_exec_free(e);
    o = infer_opts(n, 0);
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    OK(cb_nn_exec_forward(e, xin, n, l_plain, &g_err));
    cb_nn_exec_free(e);
    o = train_opts(n);
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    OK(cb_nn_exec_forward(e, xin, n, l_train, &g_err));
    cb_nn_exec_free(e);
    size_t count = (size_t)n * classes;
    double a = cb_test_rel_err(l_fused, l_plain, count);
    double b = cb_test_rel_err(l_train, l_plain, count);
    printf("# fused vs unfused inference %.1e, training executor's eval vs unfused %.1e\n", a, b);
    double spread = 0;
    for (size_t i = 0; i < count; i++) spread += fabs(l_plain[i] - l_plain[i % classes]);
    CB_CHECK(spread > 1e-2); /* the images give different logits: the comparison means something */
    free(l_fused);
    free(l_plain);
    free(l_train);
    return a > b ? a : b;
}

/* BN with statistics far from identity, so a wrong fold shows. */
static void test_fuse(void) {
    cb_nn_model *m = small_resnet(3, 16, 10);
    randomize(m, 100);
    const int n = 4;
    float *xin = rand_input(m, n, 101);
    CB_CHECK(fuse_three_ways(m, xin, n) < 1e-4);
    cb_nn_model_free(m);
    /* add(conv(x), x): the conv reads the buffer the residual sum would reuse (copied), and a
     * conv + ReLU without BN. */
    m = new_model(3, 8, 8);
    int x = cb_nn_conv(m, 0, "conv1", 16, 3, 1, 1, 1, &g_err);
    x = cb_nn_relu(m, x, &g_err);
    int y = cb_nn_conv(m, x, "conv2", 16, 3, 1, 1, 1, &g_err);
    y = cb_nn_add(m, y, x, &g_err);
    y = cb_nn_relu(m, y, &g_err);
    head(m, y, 6);
    randomize(m, 102);
    CB_CHECK(fuse_three_ways(m, xin, n) < 1e-4);
    free(xin);
    cb_nn_model_free(m);
}

/* ---- n < batch -------------------------------------------------------------------------------- */

static void test_partial(void) {
    cb_nn_model *m = small_resnet(3, 16, 10);
    randomize(m, 110);
    const int batch = 8, n = 3;
    float *xin = rand_input(m, batch, 111);
    int32_t *y = rand_labels(m, batch, 112);
    float full[80], part[30];
    for (int fuse = 0; fuse < 2; fuse++) {
        cb_nn_exec *e;
        cb_nn_exec_opts o = infer_opts(batch, fuse);
        OK(cb_nn_exec_new(m, &o, &e, &g_err));
        OK(cb_nn_exec_forward(e, xin, batch, full, &g_err));
        OK(cb_nn_exec_forward(e, xin, n, part, &g_err));
        double err = cb_test_rel_err(part, full, 30);
        printf("# inference (fuse %d): %d of a batch of %d within %.1e of the full batch\n", fuse,
               n, batch, err);
        CB_CHECK(err < 1e-5);
        OK(cb_nn_exec_forward(e, xin, batch, NULL, &g_err)); /* back to the full batch */
        cb_nn_exec_free(e);
    }
    /* Training: a partial step equals a step of an executor of that batch size. */
    cb_nn_exec *e, *f;
    cb_nn_exec_opts o = train_opts(batch);
    cb_nn_result r1, r2;
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    o.batch = n;
    OK(cb_nn_exec_new(m, &o, &f, &g_err));
    OK(cb_nn_exec_train_step(e, xin, y, n, &r1, &g_err));
    OK(cb_nn_exec_train_step(f, xin, y, n, &r2, &g_err));
    CB_CHECK_EQ_INT(r1.n, n);
    CB_CHECK_NEAR(r1.loss, r2.loss, 1e-6 * r2.loss);
    cb_nn_param *p = cb_nn_model_param(m, "layer1.0.conv1.weight");
    float *g1 = malloc((size_t)p->numel * sizeof(float)), *g2 = malloc((size_t)p->numel * sizeof(float));
    OK(cb_nn_exec_grad(e, p->name, g1, (size_t)p->numel, &g_err));
    OK(cb_nn_exec_grad(f, p->name, g2, (size_t)p->numel, &g_err));
    CB_CHECK(cb_test_rel_err(g1, g2, (size_t)p->numel) < 1e-5);
    OK(cb_nn_exec_train_step(e, xin, y, batch, &r1, &g_err)); /* and back to the full batch */
    CB_CHECK_EQ_INT(r1.n, batch);
    free(g1);
    free(g2);
    cb_nn_exec_free(e);
    cb_nn_exec_free(f);
    free(xin);
    free(y);
    cb_nn_model_free(m);
}

/* ---- Errors ------------------------------------------------------------------------------------ */

static void test_errors(void) {
    cb_nn_model *m = small_resnet(3, 8, 10);
    randomize(m, 120);
    float *xin = rand_input(m, 4, 121);
    int32_t *y = rand_labels(m, 4, 122);
    cb_nn_exec *e;
    cb_nn_result r;
    cb_nn_exec_opts o = infer_opts(4, 1);
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    CB_CHECK_EQ_INT(cb_nn_exec_train_step(e, xin, y, 4, &r, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "inference executor");
    float g[16];
    CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "fc.bias", g, 10, &g_err), CB_EINVAL);
    CB_CHECK_EQ_INT(cb_nn_exec_forward(e, xin, 5, NULL, &g_err), CB_EINVAL);
    cb_nn_exec_free(e);
    o = train_opts(4);
    OK(cb_nn_exec_new(m, &o, &e, &g_err));
    y[2] = 10;
    CB_CHECK_EQ_INT(cb_nn_exec_train_step(e, xin, y, 4, &r, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "label 10 of image 2");
    y[2] = -1;
    CB_CHECK_EQ_INT(cb_nn_exec_eval(e, xin, y, 4, &r, &g_err), CB_EINVAL);
    y[2] = 1;
    OK(cb_nn_exec_train_step(e, xin, y, 4, &r, &g_err));
    CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "nope.weight", g, 10, &g_err), CB_ENOENT);
    CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "fc.bias", g, 9, &g_err), CB_EINVAL);
    OK(cb_nn_exec_grad(e, "fc.bias", g, 10, &g_err));
    CB_CHECK_EQ_INT(cb_nn_exec_grad(e, "bn1.running_mean", g, 16, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "not trainable");
    CB_CHECK_EQ_INT(cb_nn_exec_grad(e, NULL, g, 16, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "input_grad");
    cb_nn_exec_free(e);
    o.optim.nesterov = 1; /* nesterov without momentum, as torch refuses */
    CB_CHECK_EQ_INT(cb_nn_exec_new(m, &o, &e, &g_err), CB_EINVAL);
    o = train_opts(1); /* BN in training needs more than one value per channel */
    cb_nn_model *tiny = new_model(3, 1, 1);
    int x = cb_nn_bn(tiny, 0, "bn", &g_err);
    head(tiny, x, 2);
    CB_CHECK_EQ_INT(cb_nn_exec_new(tiny, &o, &e, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "more than one value per channel");
    cb_nn_model_free(tiny);
    free(xin);
    free(y);
    cb_nn_model_free(m);
}

int main(void) {
    CB_RUN(test_smoke);
    CB_RUN(test_loss);
    CB_RUN(test_grad_conv);
    CB_RUN(test_grad_bn);
    CB_RUN(test_grad_relu);
    CB_RUN(test_grad_pool);
    CB_RUN(test_grad_add);
    CB_RUN(test_grad_linear);
    CB_RUN(test_optim);
    CB_RUN(test_bn_stats);
    CB_RUN(test_fuse);
    CB_RUN(test_partial);
    CB_RUN(test_errors);
    return cb_test_done();
}
