/* nn/models.c - the model zoo: named architectures built from graph.c's node builders, and
 * torchvision's random initialization.
 *
 * Architectures (images of [c, h, w], `classes` outputs):
 *   - "mlp": flatten -> fc1 (512) -> ReLU -> fc2 (256) -> ReLU -> fc3 (classes).
 *   - "cnn": a small CNN for CIFAR-sized input (32x32; anything >= 4x4 builds):
 *       conv1 (32, 3x3, pad 1, bias) -> ReLU -> maxpool 2x2/2
 *       conv2 (64, 3x3, pad 1, bias) -> ReLU -> maxpool 2x2/2
 *       flatten -> fc1 (128) -> ReLU -> fc2 (classes)
 *     545 098 trainable parameters for 10 classes at 32x32.
 *   - "resnet18", "resnet34", "resnet50": torchvision 0.14's ResNet exactly (topology, state-dict
 *     names and order): conv1 7x7/2 pad 3 (no bias), bn1, ReLU, maxpool 3/2 pad 1, layer1..4 of
 *     BasicBlocks ([2,2,2,2], [3,4,6,3]) or Bottlenecks ([3,4,6,3], expansion 4, stride on the
 *     3x3 conv: "ResNet v1.5"), adaptive average pooling to 1x1, flatten, fc. A block has a
 *     `downsample` (1x1 conv with the block's stride + batch norm) when its stride is not 1 or
 *     its input channels differ from its output channels, as in torchvision. The adaptive pool
 *     is an average pool whose window is the whole feature map (stride 1), so any input that
 *     survives the stem works: 224x224 reaches 7x7, 32x32 reaches 1x1.
 *
 * Parameters are registered in torchvision's module order (each block's main branch, then its
 * downsample), which is its state-dict order; tests compare names, shapes and order with
 * torchvision itself.
 *
 * Initialization (cb_nn_model_init) follows torchvision's distributions, not PyTorch's random
 * stream: conv weight N(0, sqrt(2 / (out_c * k * k))) (kaiming_normal_, fan_out, ReLU gain),
 * conv bias (cnn only) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as nn.Conv2d's default, batch norm
 * weight 1, bias 0, running mean 0, running var 1, num_batches_tracked 0, linear weight and bias
 * U(-1/sqrt(in), 1/sqrt(in)) as nn.Linear's default. Each parameter draws from its own stream,
 * seeded from the seed and the parameter's name, so a parameter's values depend only on
 * (seed, name, shape): resnet18 for 10 and for 1000 classes share the backbone.
 *
 * Thread-safety and ownership: builders return a new model owned by the caller (free it with
 * cb_nn_model_free); on error nothing is returned and nothing leaks. No global state.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "nn/nn.h"

#define CB__ARCHS "mlp|cnn|resnet18|resnet34|resnet50"

const char *cb_nn_model_archs(void) { return CB__ARCHS; }

/* Each builder appends to m (which has its input node 0) and returns the output node index or a
 * negative code with err set. */

static int cb__build_mlp(cb_nn_model *m, int classes, cb_error *err) {
    int x = cb_nn_flatten(m, 0, err);
    if (x >= 0) x = cb_nn_linear(m, x, "fc1", 512, 1, err);
    if (x >= 0) x = cb_nn_relu(m, x, err);
    if (x >= 0) x = cb_nn_linear(m, x, "fc2", 256, 1, err);
    if (x >= 0) x = cb_nn_relu(m, x, err);
    if (x >= 0) x = cb_nn_linear(m, x, "fc3", classes, 1, err);
    return x;
}

static int cb__build_cnn(cb_nn_model *m, int classes, cb_error *err) {
    int x = cb_nn_conv(m, 0, "conv1", 32, 3, 1, 1, 1, err);
    if (x >= 0) x = cb_nn_relu(m, x, err);
    if (x >= 0) x = cb_nn_maxpool(m, x, 2, 2, 0, err);
    if (x >= 0) x = cb_nn_conv(m, x, "conv2", 64, 3, 1, 1, 1, err);
    if (x >= 0) x = cb_nn_relu(m, x, err);
    if (x >= 0) x = cb_nn_maxpool(m, x, 2, 2, 0, err);
    if (x >= 0) x = cb_nn_flatten(m, x, err);
    if (x >= 0) x = cb_nn_linear(m, x, "fc1", 128, 1, err);
    if (x >= 0) x = cb_nn_relu(m, x, err);
    if (x >= 0) x = cb_nn_linear(m, x, "fc2", classes, 1, err);
    return x;
}

/* conv (no bias) + batch norm named "<prefix>.convN" / "<prefix>.bnN". */
static int cb__conv_bn(cb_nn_model *m, int x, const char *prefix, int idx, int out_c, int k,
                       int stride, int pad, cb_error *err) {
    char name[CB_NN_NAME_MAX];
    snprintf(name, sizeof name, "%s%sconv%d", prefix, prefix[0] ? "." : "", idx);
    x = cb_nn_conv(m, x, name, out_c, k, stride, pad, 0, err);
    if (x < 0) return x;
    snprintf(name, sizeof name, "%s%sbn%d", prefix, prefix[0] ? "." : "", idx);
    return cb_nn_bn(m, x, name, err);
}

/* One torchvision BasicBlock (expansion 1) or Bottleneck (expansion 4) named `prefix`. */
static int cb__block(cb_nn_model *m, int x, const char *prefix, int bottleneck, int planes,
                     int stride, cb_error *err) {
    int in_c = m->nodes[x].c, out_c = bottleneck ? planes * 4 : planes;
    int y;
    if (bottleneck) {
        y = cb__conv_bn(m, x, prefix, 1, planes, 1, 1, 0, err);
        if (y >= 0) y = cb_nn_relu(m, y, err);
        if (y >= 0) y = cb__conv_bn(m, y, prefix, 2, planes, 3, stride, 1, err);
        if (y >= 0) y = cb_nn_relu(m, y, err);
        if (y >= 0) y = cb__conv_bn(m, y, prefix, 3, out_c, 1, 1, 0, err);
    } else {
        y = cb__conv_bn(m, x, prefix, 1, planes, 3, stride, 1, err);
        if (y >= 0) y = cb_nn_relu(m, y, err);
        if (y >= 0) y = cb__conv_bn(m, y, prefix, 2, planes, 3, 1, 1, err);
    }
    if (y < 0) return y;
    int identity = x;
    if (stride != 1 || in_c != out_c) {
        char name[CB_NN_NAME_MAX];
        snprintf(name, sizeof name, "%s.downsample.0", prefix);
        identity = cb_nn_conv(m, x, name, out_c, 1, stride, 0, 0, err);
        if (identity < 0) return identity;
        snprintf(name, sizeof name, "%s.downsample.1", prefix);
        identity = cb_nn_bn(m, identity, name, err);
        if (identity < 0) return identity;
    }
    y = cb_nn_add(m, y, identity, err);
    return y < 0 ? y : cb_nn_relu(m, y, err);
}

static int cb__build_resnet(cb_nn_model *m, int classes, int bottleneck, const int blocks[4],
                            cb_error *err) {
    int x = cb__conv_bn(m, 0, "", 1, 64, 7, 2, 3, err);
    if (x >= 0) x = cb_nn_relu(m, x, err);
    if (x >= 0) x = cb_nn_maxpool(m, x, 3, 2, 1, err);
    for (int layer = 0; layer < 4 && x >= 0; layer++) {
        for (int b = 0; b < blocks[layer] && x >= 0; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", layer + 1, b);
            int stride = layer > 0 && b == 0 ? 2 : 1;
            x = cb__block(m, x, prefix, bottleneck, 64 << layer, stride, err);
        }
    }
    if (x < 0) return x;
    /* AdaptiveAvgPool2d((1, 1)): one window over the whole map. cb_nn_avgpool takes a square
     * window; a non-square map gets the square one over its smaller side, then the window is
     * widened to the whole map here (the node's fields are the graph's contract). */
    const cb_nn_node *in = &m->nodes[x];
    int ih = in->h, iw = in->w;
    x = cb_nn_avgpool(m, x, ih < iw ? ih : iw, 1, 0, err);
    if (x < 0) return x;
    cb_nn_node *pool = &m->nodes[x];
    pool->kh = ih;
    pool->kw = iw;
    pool->h = pool->w = 1;
    x = cb_nn_flatten(m, x, err);
    return x < 0 ? x : cb_nn_linear(m, x, "fc", classes, 1, err);
}

int cb_nn_model_build(const char *arch, int classes, int c, int h, int w, cb_nn_model **out,
                      cb_error *err) {
    *out = NULL;
    if (!arch) arch = "";
    static const int basic18[4] = {2, 2, 2, 2}, deep[4] = {3, 4, 6, 3};
    int kind;
    if (strcmp(arch, "mlp") == 0) kind = 0;
    else if (strcmp(arch, "cnn") == 0) kind = 1;
    else if (strcmp(arch, "resnet18") == 0) kind = 2;
    else if (strcmp(arch, "resnet34") == 0) kind = 3;
    else if (strcmp(arch, "resnet50") == 0) kind = 4;
    else
        return cb_error_set(err, CB_EINVAL, "unknown model \"%s\" (known: %s)", arch, CB__ARCHS);
    if (classes < 1)
        return cb_error_set(err, CB_EINVAL, "%s: classes must be >= 1, got %d", arch, classes);
    cb_nn_model *m;
    int rc = cb_nn_model_new(arch, c, h, w, &m, err);
    if (rc) return rc;
    int x;
    switch (kind) {
    case 0: x = cb__build_mlp(m, classes, err); break;
    case 1: x = cb__build_cnn(m, classes, err); break;
    case 2: x = cb__build_resnet(m, classes, 0, basic18, err); break;
    case 3: x = cb__build_resnet(m, classes, 0, deep, err); break;
    default: x = cb__build_resnet(m, classes, 1, deep, err); break;
    }
    if (x < 0) {
        cb_error_prefix(err, "%s for input [%d, %d, %d]", arch, c, h, w);
        cb_nn_model_free(m);
        return x;
    }
    m->output = x;
    m->classes = classes;
    *out = m;
    return CB_OK;
}

/* ---- Initialization --------------------------------------------------------------------- */

/* A stream of its own for each parameter: seed mixed with the FNV-1a hash of the name. */
static void cb__param_rng(cb_rng *r, uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    cb_rng_seed(r, seed ^ h);
}

static void cb__fill_normal(cb_nn_param *p, uint64_t seed, double std) {
    cb_rng r;
    cb__param_rng(&r, seed, p->name);
    float *d = p->data;
    for (int64_t i = 0; i < p->numel; i++) d[i] = (float)(std * cb_rng_normal(&r));
}

static void cb__fill_uniform(cb_nn_param *p, uint64_t seed, double bound) {
    cb_rng r;
    cb__param_rng(&r, seed, p->name);
    float *d = p->data;
    for (int64_t i = 0; i < p->numel; i++)
        d[i] = (float)(bound * (2.0 * cb_rng_uniform(&r) - 1.0));
}

static void cb__fill_const(cb_nn_param *p, float v) {
    float *d = p->data;
    for (int64_t i = 0; i < p->numel; i++) d[i] = v;
}

void cb_nn_model_init(cb_nn_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_nodes; i++) {
        const cb_nn_node *n = &m->nodes[i];
        cb_nn_param *wt = n->param[0] >= 0 ? &m->params[n->param[0]] : NULL;
        cb_nn_param *bias = n->param[1] >= 0 ? &m->params[n->param[1]] : NULL;
        if (n->op == CB_NN_CONV) {
            /* weight [out, in, k, k]: fan_out = out*k*k, fan_in = in*k*k */
            double fan_out = (double)wt->dims[0] * wt->dims[2] * wt->dims[3];
            double fan_in = (double)wt->dims[1] * wt->dims[2] * wt->dims[3];
            cb__fill_normal(wt, seed, sqrt(2.0 / fan_out));
            if (bias) cb__fill_uniform(bias, seed, 1.0 / sqrt(fan_in));
        } else if (n->op == CB_NN_LINEAR) {
            double fan_in = (double)wt->dims[1];
            cb__fill_uniform(wt, seed, 1.0 / sqrt(fan_in));
            if (bias) cb__fill_uniform(bias, seed, 1.0 / sqrt(fan_in));
        } else if (n->op == CB_NN_BN) {
            cb__fill_const(wt, 1.0f);
            cb__fill_const(bias, 0.0f);
            cb__fill_const(&m->params[n->param[2]], 0.0f);
            cb__fill_const(&m->params[n->param[3]], 1.0f);
            *(int64_t *)m->params[n->param[4]].data = 0;
        }
    }
}
