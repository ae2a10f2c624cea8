/* tests/test_nn_models.c - the model zoo (nn/models.c): parameter counts, torchvision's
 * state-dict names, shapes and order (read from torchvision itself through /usr/bin/python3, the
 * interpreter the project's setup installs PyTorch into), output shapes at 224x224 and 32x32,
 * the initialization's distributions and determinism, and forward FLOPs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "harness.h"
#include "nn/nn.h"

#define PYTHON "/usr/bin/python3"

static cb_nn_model *build(const char *arch, int classes, int c, int h, int w) {
    cb_error err = {0};
    cb_nn_model *m = NULL;
    int rc = cb_nn_model_build(arch, classes, c, h, w, &m, &err);
    if (rc) cb__test_fail(__FILE__, __LINE__, "build %s: %s", arch, err.msg);
    return m;
}

static void test_param_counts_resnet(void) {
    static const struct {
        const char *arch;
        int64_t n;
    } want[] = {{"resnet18", 11689512}, {"resnet34", 21797672}, {"resnet50", 25557032}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cb_nn_model *m = build(want[i].arch, 1000, 3, 224, 224);
        if (!m) continue;
        CB_CHECK_EQ_INT(cb_nn_model_n_trainable(m), want[i].n);
        CB_CHECK_STR_EQ(m->arch, want[i].arch);
        cb_nn_model_free(m);
    }
}

static void test_param_counts_small(void) {
    /* mlp: (in*512 + 512) + (512*256 + 256) + (256*k + k) */
    static const int shapes[][4] = {{3, 32, 32, 10}, {1, 28, 28, 10}, {3, 64, 48, 100}};
    for (size_t i = 0; i < 3; i++) {
        int c = shapes[i][0], h = shapes[i][1], w = shapes[i][2], k = shapes[i][3];
        int64_t in = (int64_t)c * h * w;
        cb_nn_model *m = build("mlp", k, c, h, w);
        if (!m) continue;
        CB_CHECK_EQ_INT(cb_nn_model_n_trainable(m),
                        in * 512 + 512 + 512 * 256 + 256 + 256 * (int64_t)k + k);
        CB_CHECK_EQ_INT(m->n_params, 6);
        CB_CHECK_STR_EQ(m->params[0].name, "fc1.weight");
        CB_CHECK_STR_EQ(m->params[5].name, "fc3.bias");
        cb_nn_model_free(m);
        /* cnn: conv1 c*32*9+32, conv2 32*64*9+64, fc1 64*(h/4)*(w/4)*128+128, fc2 128*k+k */
        m = build("cnn", k, c, h, w);
        if (!m) continue;
        int64_t flat = 64 * (int64_t)(h / 2 / 2) * (w / 2 / 2);
        CB_CHECK_EQ_INT(cb_nn_model_n_trainable(m), (int64_t)c * 32 * 9 + 32 + 32 * 64 * 9 + 64 +
                                                        flat * 128 + 128 + 128 * (int64_t)k + k);
        CB_CHECK_EQ_INT(m->n_params, 8);
        static const char *const names[8] = {"conv1.weight", "conv1.bias", "conv2.weight",
                                             "conv2.bias",   "fc1.weight", "fc1.bias",
                                             "fc2.weight",   "fc2.bias"};
        for (int j = 0; j < 8 && j < m->n_params; j++) CB_CHECK_STR_EQ(m->params[j].name, names[j]);
        cb_nn_model_free(m);
    }
    cb_nn_model *m = build("cnn", 10, 3, 32, 32);
    if (m) CB_CHECK_EQ_INT(cb_nn_model_n_trainable(m), 545098); /* the header comment's number */
    cb_nn_model_free(m);
}

/* Formats a parameter as Python's json.dumps([name, list(shape)]) does. */
static void param_json(const cb_nn_param *p, char *buf, size_t size) {
    size_t k = (size_t)snprintf(buf, size, "[\"%s\", [", p->name);
    for (int d = 0; d < p->ndim && k < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)p->dims[d]);
    if (k < size) snprintf(buf + k, size - k, "]]");
}

static void test_state_dict_matches_torchvision(void) {
    const char *dir = cb_test_tmpdir();
    const char *script = cb_test_write(
        dir, "sd.py",
        "import json, sys\n"
        "try:\n"
        "    import torch, torchvision\n"
        "except ImportError as e:\n"
        "    sys.exit('torch/torchvision missing for " PYTHON " (run scripts/setup.sh): %s' % e)\n"
        "for arch in ('resnet18', 'resnet34', 'resnet50'):\n"
        "    print('#', arch)\n"
        "    for k, v in getattr(torchvision.models, arch)().state_dict().items():\n"
        "        print(json.dumps([k, list(v.shape)]))\n");
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, PYTHON " '%s'", script);
    int st = cb_test_sh(cmd, &out);
    if (st != 0) {
        cb__test_fail(__FILE__, __LINE__, "torchvision reference failed (status %d): %s", st,
                      out ? out : "");
        free(out);
        return;
    }
    static const char *const archs[3] = {"resnet18", "resnet34", "resnet50"};
    for (int a = 0; a < 3; a++) {
        char marker[32];
        snprintf(marker, sizeof marker, "# %s\n", archs[a]);
        char *line = strstr(out, marker);
        CB_CHECK(line != NULL);
        if (!line) continue;
        line += strlen(marker);
        cb_nn_model *m = build(archs[a], 1000, 3, 224, 224);
        if (!m) continue;
        int i = 0;
        while (*line && *line != '#') {
            char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            char want[256], got[256] = "(missing)";
            snprintf(want, sizeof want, "%.*s", (int)len, line);
            if (i < m->n_params) param_json(&m->params[i], got, sizeof got);
            if (strcmp(want, got) != 0) {
                cb__test_fail(__FILE__, __LINE__, "%s state_dict entry %d: torchvision %s, ours %s",
                              archs[a], i, want, got);
                break;
            }
            i++;
            line = nl ? nl + 1 : line + len;
        }
        CB_CHECK_EQ_INT(m->n_params, i);
        printf("# %s: %d state-dict entries match torchvision\n", archs[a], i);
        cb_nn_model_free(m);
    }
    free(out);
}

/* The node feeding the average pool (the last feature map). */
static const cb_nn_node *pool_input(const cb_nn_model *m) {
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == CB_NN_AVGPOOL) return &m->nodes[m->nodes[i].in[0]];
    return NULL;
}

static void test_output_shapes(void) {
    static const struct {
        const char *arch;
        int feat;
    } r[] = {{"resnet18", 512}, {"resnet34", 512}, {"resnet50", 2048}};
    static const int sizes[][2] = {{224, 7}, {32, 1}, {64, 2}};
    for (size_t i = 0; i < 3; i++) {
        for (size_t s = 0; s < 3; s++) {
            cb_nn_model *m = build(r[i].arch, 10, 3, sizes[s][0], sizes[s][0]);
            if (!m) continue;
            const cb_nn_node *o = &m->nodes[m->output];
            CB_CHECK_EQ_INT(m->output, m->n_nodes - 1);
            CB_CHECK_EQ_INT(m->classes, 10);
            CB_CHECK_EQ_INT(o->op, CB_NN_LINEAR);
            CB_CHECK_EQ_INT(o->c, 10);
            CB_CHECK_EQ_INT(o->h, 1);
            CB_CHECK_EQ_INT(o->w, 1);
            const cb_nn_node *f = pool_input(m);
            CB_CHECK(f != NULL);
            if (f) {
                CB_CHECK_EQ_INT(f->c, r[i].feat);
                CB_CHECK_EQ_INT(f->h, sizes[s][1]);
                CB_CHECK_EQ_INT(f->w, sizes[s][1]);
            }
            cb_nn_model_free(m);
        }
    }
    /* A non-square map: the pool covers all of it. */
    cb_nn_model *m = build("resnet18", 5, 3, 224, 160);
    if (m) {
        const cb_nn_node *f = pool_input(m);
        CB_CHECK(f && f->h == 7 && f->w == 5);
        const cb_nn_node *p = &m->nodes[m->output - 2];
        CB_CHECK_EQ_INT(p->op, CB_NN_AVGPOOL);
        CB_CHECK_EQ_INT(p->kh, 7);
        CB_CHECK_EQ_INT(p->kw, 5);
        CB_CHECK_EQ_INT(p->h, 1);
        CB_CHECK_EQ_INT(p->w, 1);
        CB_CHECK_EQ_INT(m->nodes[m->output].c, 5);
    }
    cb_nn_model_free(m);
    m = build("cnn", 10, 3, 32, 32);
    if (m) {
        CB_CHECK_EQ_INT(m->nodes[m->output].c, 10);
        CB_CHECK_EQ_INT(m->nodes[m->nodes[m->output].in[0]].c, 128);
        cb_nn_param *p = cb_nn_model_param(m, "fc1.weight");
        CB_CHECK(p && p->dims[0] == 128 && p->dims[1] == 64 * 8 * 8);
    }
    cb_nn_model_free(m);
    m = build("mlp", 7, 1, 28, 28);
    if (m) {
        CB_CHECK_EQ_INT(m->nodes[m->output].c, 7);
        cb_nn_param *p = cb_nn_model_param(m, "fc1.weight");
        CB_CHECK(p && p->dims[0] == 512 && p->dims[1] == 784);
    }
    cb_nn_model_free(m);
}

static void test_errors(void) {
    cb_error err = {0};
    cb_nn_model *m = (cb_nn_model *)&err; /* must be reset to NULL on failure */
    CB_CHECK_EQ_INT(cb_nn_model_build("resnet101", 10, 3, 224, 224, &m, &err), CB_EINVAL);
    CB_CHECK(m == NULL);
    CB_CHECK_CONTAINS(err.msg, "resnet101");
    CB_CHECK_CONTAINS(err.msg, cb_nn_model_archs());
    CB_CHECK_STR_EQ(cb_nn_model_archs(), "mlp|cnn|resnet18|resnet34|resnet50");
    CB_CHECK_EQ_INT(cb_nn_model_build("cnn", 0, 3, 32, 32, &m, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "classes");
    CB_CHECK_EQ_INT(cb_nn_model_build("mlp", 10, 0, 32, 32, &m, &err), CB_EINVAL);
    /* Too small for the cnn's second pool: a clean error naming the model, nothing leaked. */
    CB_CHECK_EQ_INT(cb_nn_model_build("cnn", 10, 3, 2, 2, &m, &err), CB_EINVAL);
    CB_CHECK(m == NULL);
    CB_CHECK_CONTAINS(err.msg, "cnn");
    /* Out of memory part-way through a resnet: the error comes back, nothing leaks (ASan). */
    int failures = 0;
    for (long n = 1; n < 10000; n += 3) {
        cb__alloc_fail_after(n);
        int rc = cb_nn_model_build("resnet18", 10, 3, 32, 32, &m, &err);
        cb__alloc_fail_after(0);
        if (rc == CB_OK) {
            cb_nn_model_free(m);
            break;
        }
        failures++;
        CB_CHECK_EQ_INT(rc, CB_ENOMEM);
        CB_CHECK(m == NULL);
    }
    CB_CHECK_CMP_INT(failures, >, 20);
}

static void moments(const cb_nn_param *p, double *mean, double *std, double *maxabs) {
    const float *d = p->data;
    double s = 0, s2 = 0, mx = 0;
    for (int64_t i = 0; i < p->numel; i++) {
        s += d[i];
        s2 += (double)d[i] * d[i];
        if (fabs(d[i]) > mx) mx = fabs(d[i]);
    }
    *mean = s / (double)p->numel;
    *std = sqrt(s2 / (double)p->numel - *mean * *mean);
    *maxabs = mx;
}

static void test_init_distributions(void) {
    cb_nn_model *m = build("resnet50", 1000, 3, 224, 224);
    if (!m) return;
    cb_nn_model_init(m, 42);
    double mean, std, mx;
    /* Conv: kaiming normal, fan_out = out * k * k. */
    static const char *const convs[] = {"layer4.0.conv2.weight", "layer3.1.conv1.weight",
                                        "conv1.weight"};
    for (int i = 0; i < 3; i++) {
        cb_nn_param *p = cb_nn_model_param(m, convs[i]);
        CB_CHECK(p != NULL);
        if (!p) continue;
        double want = sqrt(2.0 / (double)(p->dims[0] * p->dims[2] * p->dims[3]));
        moments(p, &mean, &std, &mx);
        CB_CHECK_NEAR(std / want, 1.0, p->numel > 100000 ? 0.02 : 0.05);
        CB_CHECK_NEAR(mean / want, 0.0, 0.05);
    }
    /* Linear: uniform(-1/sqrt(in), 1/sqrt(in)), std bound/sqrt(3). */
    cb_nn_param *fw = cb_nn_model_param(m, "fc.weight"), *fb = cb_nn_model_param(m, "fc.bias");
    double bound = 1.0 / sqrt(2048.0);
    moments(fw, &mean, &std, &mx);
    CB_CHECK(mx <= bound);
    CB_CHECK_NEAR(mx / bound, 1.0, 0.001);
    CB_CHECK_NEAR(std / (bound / sqrt(3.0)), 1.0, 0.02);
    CB_CHECK_NEAR(mean / bound, 0.0, 0.01);
    moments(fb, &mean, &std, &mx);
    CB_CHECK(mx <= bound && mx > 0.9 * bound);
    /* Batch norm: 1, 0, 0, 1, 0 everywhere. */
    int bad = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const cb_nn_node *n = &m->nodes[i];
        if (n->op != CB_NN_BN) continue;
        const float want[4] = {1, 0, 0, 1};
        for (int j = 0; j < 4; j++) {
            const cb_nn_param *p = &m->params[n->param[j]];
            for (int64_t k = 0; k < p->numel; k++) bad += ((float *)p->data)[k] != want[j];
        }
        bad += *(int64_t *)m->params[n->param[4]].data != 0;
    }
    CB_CHECK_EQ_INT(bad, 0);
    cb_nn_model_free(m);

    /* cnn: conv bias uniform(+-1/sqrt(fan_in)) as nn.Conv2d's default. */
    m = build("cnn", 10, 3, 32, 32);
    if (!m) return;
    cb_nn_model_init(m, 7);
    cb_nn_param *b2 = cb_nn_model_param(m, "conv2.bias");
    moments(b2, &mean, &std, &mx);
    bound = 1.0 / sqrt(32.0 * 9);
    CB_CHECK(mx <= bound && mx > 0.8 * bound);
    cb_nn_param *w2 = cb_nn_model_param(m, "conv2.weight");
    moments(w2, &mean, &std, &mx);
    CB_CHECK_NEAR(std / sqrt(2.0 / (64 * 9)), 1.0, 0.05);
    cb_nn_model_free(m);
}

static int models_equal(const cb_nn_model *a, const cb_nn_model *b, int from, int to) {
    for (int i = from; i < to; i++) {
        const cb_nn_param *p = &a->params[i], *q = &b->params[i];
        size_t bytes = (size_t)p->numel * (p->dtype == CB_NN_I64 ? 8 : 4);
        if (p->numel != q->numel || memcmp(p->data, q->data, bytes) != 0) return 0;
    }
    return 1;
}

static void test_init_deterministic(void) {
    cb_nn_model *a = build("resnet18", 10, 3, 32, 32), *b = build("resnet18", 10, 3, 32, 32),
                *c = build("resnet18", 1000, 3, 224, 224);
    if (!a || !b || !c) goto out;
    cb_nn_model_init(a, 1234);
    cb_nn_model_init(b, 1234);
    cb_nn_model_init(c, 1234);
    CB_CHECK(models_equal(a, b, 0, a->n_params));
    /* Same backbone whatever the head and input size. */
    CB_CHECK(models_equal(a, c, 0, a->n_params - 2));
    cb_nn_model_init(b, 1235);
    CB_CHECK(!models_equal(a, b, 0, 1));
    CB_CHECK(!models_equal(a, b, a->n_params - 2, a->n_params - 1));
    /* Different parameters of the same shape differ. */
    const cb_nn_param *p = cb_nn_model_param(a, "layer1.0.conv1.weight"),
                      *q = cb_nn_model_param(a, "layer1.0.conv2.weight");
    CB_CHECK(p && q && memcmp(p->data, q->data, (size_t)p->numel * 4) != 0);
    /* Re-initialising resets everything. */
    cb_nn_model_init(b, 1234);
    CB_CHECK(models_equal(a, b, 0, a->n_params));
out:
    cb_nn_model_free(a);
    cb_nn_model_free(b);
    cb_nn_model_free(c);
}

static void test_flops(void) {
    /* torchvision's documented GFLOPS (multiply-adds): resnet50 4.09, resnet18 1.81, resnet34
     * 3.66. cb_nn_model_forward_flops counts 2 per multiply-add. */
    static const struct {
        const char *arch;
        double gmac;
    } r[] = {{"resnet50", 4.09}, {"resnet18", 1.81}, {"resnet34", 3.66}};
    for (int i = 0; i < 3; i++) {
        cb_nn_model *m = build(r[i].arch, 1000, 3, 224, 224);
        if (!m) continue;
        double f = cb_nn_model_forward_flops(m);
        printf("# %s: %.4f GFLOP per image\n", r[i].arch, f / 1e9);
        CB_CHECK_NEAR(f / (2e9 * r[i].gmac), 1.0, 0.02);
        cb_nn_model_free(m);
    }
    cb_nn_model *m = build("mlp", 10, 3, 32, 32);
    if (m) CB_CHECK_NEAR(cb_nn_model_forward_flops(m), 2.0 * (3072 * 512 + 512 * 256 + 2560), 0);
    cb_nn_model_free(m);
}

int main(void) {
    CB_RUN(test_param_counts_resnet);
    CB_RUN(test_param_counts_small);
    CB_RUN(test_state_dict_matches_torchvision);
    CB_RUN(test_output_shapes);
    CB_RUN(test_errors);
    CB_RUN(test_init_distributions);
    CB_RUN(test_init_deterministic);
    CB_RUN(test_flops);
    return cb_test_done();
}
