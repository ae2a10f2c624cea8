/* nn/graph.c - the model graph: nodes, parameters and the node builders.
 *
 * Design: nodes are appended in topological order (a node's inputs are earlier nodes), so a
 * backend compiles the graph with one forward walk and backward is the reverse walk. Parameters
 * live in one array in the order torchvision registers them, which is the state-dict order a
 * safetensors file written by PyTorch lists (sorted there by name, but we never rely on it).
 * Output shapes are computed here once; a builder refuses a layer that would give an empty or
 * negative shape, so a backend never sees one.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "nn/nn.h"

int cb_nn_model_new(const char *arch, int c, int h, int w, cb_nn_model **out, cb_error *err) {
    *out = NULL;
    if (c < 1 || h < 1 || w < 1)
        return cb_error_set(err, CB_EINVAL, "input shape [%d, %d, %d] must be positive", c, h, w);
    cb_nn_model *m = cb_calloc(1, sizeof *m);
    if (!m) return cb_error_set(err, CB_ENOMEM, "out of memory");
    snprintf(m->arch, sizeof m->arch, "%s", arch ? arch : "custom");
    m->in_c = c;
    m->in_h = h;
    m->in_w = w;
    m->output = 0;
    cb_nn_node *n = NULL;
    m->cap_nodes = 64;
    m->nodes = cb_calloc((size_t)m->cap_nodes, sizeof *m->nodes);
    if (!m->nodes) {
        cb_free(m);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    n = &m->nodes[m->n_nodes++];
    n->op = CB_NN_INPUT;
    n->in[0] = n->in[1] = -1;
    for (int i = 0; i < 5; i++) n->param[i] = -1;
    n->c = c;
    n->h = h;
    n->w = w;
    *out = m;
    return CB_OK;
}

void cb_nn_model_free(cb_nn_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_params; i++) cb_free(m->params[i].data);
    cb_free(m->params);
    cb_free(m->nodes);
    cb_free(m);
}

/* The status of a failed call: the code it set in err, never 0 (fallback without err). */
static int failed(const cb_error *err, int fallback) { return err && err->code ? err->code : fallback; }

/* Appends a node fed by `in` (validated) and returns it, or NULL with err set. */
static cb_nn_node *cb__node(cb_nn_model *m, cb_nn_op op, int in, const char *name, cb_error *err) {
    if (in < 0 || in >= m->n_nodes) {
        cb_error_set(err, CB_EINVAL, "node input %d does not exist", in);
        return NULL;
    }
    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes * 2;
        cb_nn_node *nodes = cb_realloc(m->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) {
            cb_error_set(err, CB_ENOMEM, "out of memory");
            return NULL;
        }
        m->nodes = nodes;
        m->cap_nodes = cap;
    }
    cb_nn_node *n = &m->nodes[m->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->in[0] = in;
    n->in[1] = -1;
    for (int i = 0; i < 5; i++) n->param[i] = -1;
    const cb_nn_node *src = &m->nodes[in];
    n->c = src->c;
    n->h = src->h;
    n->w = src->w;
    snprintf(n->name, sizeof n->name, "%s", name ? name : "");
    return n;
}

/* Adds a zeroed parameter "<prefix>.<suffix>" and returns its index, or -1 with err set. */
static int cb__param(cb_nn_model *m, const char *prefix, const char *suffix, cb_nn_dtype dtype,
                     int ndim, const int64_t *dims, int trainable, cb_error *err) {
    if (m->n_params == m->cap_params) {
        int cap = m->cap_params ? m->cap_params * 2 : 32;
        cb_nn_param *p = cb_realloc(m->params, (size_t)cap * sizeof *p);
        if (!p) {
            cb_error_set(err, CB_ENOMEM, "out of memory");
            return -1;
        }
        m->params = p;
        m->cap_params = cap;
    }
    cb_nn_param *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    int k = snprintf(p->name, sizeof p->name, "%s%s%s", prefix, prefix[0] ? "." : "", suffix);
    if (k < 0 || (size_t)k >= sizeof p->name) {
        cb_error_set(err, CB_EINVAL, "parameter name \"%s.%s\" is too long", prefix, suffix);
        return -1;
    }
    p->dtype = dtype;
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->dims[i] = dims[i];
        p->numel *= dims[i];
    }
    p->trainable = trainable;
    p->data = cb_calloc((size_t)p->numel, dtype == CB_NN_I64 ? sizeof(int64_t) : sizeof(float));
    if (!p->data) {
        cb_error_set(err, CB_ENOMEM, "out of memory for parameter %s", p->name);
        return -1;
    }
    return m->n_params++;
}

/* Output size of a window op along one axis, or -1 when the window does not fit. */
static int cb__out_dim(int in, int k, int s, int p) {
    if (k < 1 || s < 1 || p < 0 || in + 2 * p < k) return -1;
    return (in + 2 * p - k) / s + 1;
}

/* Appends a window node (convolution or pool) and returns it, or NULL with err set: a pointer,
 * not a status, so that no caller can use a node that was not made. */
static cb_nn_node *cb__window(cb_nn_model *m, cb_nn_op op, int in, const char *name, int k,
                              int stride, int pad, cb_error *err) {
    cb_nn_node *n = cb__node(m, op, in, name, err);
    if (!n) return NULL;
    int oh = cb__out_dim(n->h, k, stride, pad), ow = cb__out_dim(n->w, k, stride, pad);
    if (oh < 1 || ow < 1 || (op != CB_NN_CONV && pad * 2 > k)) {
        cb_error_set(err, CB_EINVAL, "%s: kernel %d stride %d pad %d does not fit an input of %dx%d",
                     name && name[0] ? name : "window", k, stride, pad, n->h, n->w);
        return NULL;
    }
    n->kh = n->kw = k;
    n->sh = n->sw = stride;
    n->ph = n->pw = pad;
    n->h = oh;
    n->w = ow;
    return n;
}

int cb_nn_conv(cb_nn_model *m, int in, const char *name, int out_c, int k, int stride, int pad,
               int bias, cb_error *err) {
    if (out_c < 1) return cb_error_set(err, CB_EINVAL, "%s: out channels must be >= 1", name);
    cb_nn_node *n = cb__window(m, CB_NN_CONV, in, name, k, stride, pad, err);
    if (!n) return failed(err, CB_EINVAL);
    int64_t wd[4] = {out_c, m->nodes[in].c, k, k};
    int64_t bd[1] = {out_c};
    n->c = out_c;
    int pw = cb__param(m, name, "weight", CB_NN_F32, 4, wd, 1, err);
    if (pw < 0) return failed(err, CB_ENOMEM);
    n->param[0] = pw;
    if (bias) {
        int pb = cb__param(m, name, "bias", CB_NN_F32, 1, bd, 1, err);
        if (pb < 0) return failed(err, CB_ENOMEM);
        n->param[1] = pb;
    }
    return m->n_nodes++;
}

int cb_nn_bn(cb_nn_model *m, int in, const char *name, cb_error *err) {
    cb_nn_node *n = cb__node(m, CB_NN_BN, in, name, err);
    if (!n) return failed(err, CB_EINVAL);
    n->eps = 1e-5f;
    n->momentum = 0.1f;
    int64_t d[1] = {n->c};
    static const char *const names[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        int p = cb__param(m, name, names[i], CB_NN_F32, 1, d, i < 2, err);
        if (p < 0) return failed(err, CB_ENOMEM);
        n->param[i] = p;
    }
    int p = cb__param(m, name, "num_batches_tracked", CB_NN_I64, 0, NULL, 0, err);
    if (p < 0) return failed(err, CB_ENOMEM);
    n->param[4] = p;
    /* A fresh BatchNorm2d: weight 1, running_var 1 (the rest zero). */
    float *wt = m->params[n->param[0]].data, *rv = m->params[n->param[3]].data;
    for (int c = 0; c < n->c; c++) wt[c] = rv[c] = 1.0f;
    return m->n_nodes++;
}

int cb_nn_relu(cb_nn_model *m, int in, cb_error *err) {
    cb_nn_node *n = cb__node(m, CB_NN_RELU, in, NULL, err);
    if (!n) return failed(err, CB_EINVAL);
    return m->n_nodes++;
}

int cb_nn_maxpool(cb_nn_model *m, int in, int k, int stride, int pad, cb_error *err) {
    if (!cb__window(m, CB_NN_MAXPOOL, in, "maxpool", k, stride, pad, err)) return failed(err, CB_EINVAL);
    return m->n_nodes++;
}

int cb_nn_avgpool(cb_nn_model *m, int in, int k, int stride, int pad, cb_error *err) {
    if (!cb__window(m, CB_NN_AVGPOOL, in, "avgpool", k, stride, pad, err)) return failed(err, CB_EINVAL);
    return m->n_nodes++;
}

int cb_nn_add(cb_nn_model *m, int a, int b, cb_error *err) {
    if (b < 0 || b >= m->n_nodes)
        return cb_error_set(err, CB_EINVAL, "node input %d does not exist", b);
    cb_nn_node *n = cb__node(m, CB_NN_ADD, a, NULL, err);
    if (!n) return failed(err, CB_EINVAL);
    const cb_nn_node *nb = &m->nodes[b];
    if (nb->c != n->c || nb->h != n->h || nb->w != n->w)
        return cb_error_set(err, CB_EINVAL, "add: shapes [%d, %d, %d] and [%d, %d, %d] differ",
                            n->c, n->h, n->w, nb->c, nb->h, nb->w);
    n->in[1] = b;
    return m->n_nodes++;
}

int cb_nn_flatten(cb_nn_model *m, int in, cb_error *err) {
    cb_nn_node *n = cb__node(m, CB_NN_FLATTEN, in, NULL, err);
    if (!n) return failed(err, CB_EINVAL);
    n->c = n->c * n->h * n->w;
    n->h = n->w = 1;
    return m->n_nodes++;
}

int cb_nn_linear(cb_nn_model *m, int in, const char *name, int out_features, int bias,
                 cb_error *err) {
    if (out_features < 1)
        return cb_error_set(err, CB_EINVAL, "%s: out features must be >= 1", name);
    if (in >= 0 && in < m->n_nodes && (m->nodes[in].h != 1 || m->nodes[in].w != 1))
        return cb_error_set(err, CB_EINVAL, "%s: input must be flat ([N, F, 1, 1]), got %dx%d",
                            name, m->nodes[in].h, m->nodes[in].w);
    cb_nn_node *n = cb__node(m, CB_NN_LINEAR, in, name, err);
    if (!n) return failed(err, CB_EINVAL);
    int64_t wd[2] = {out_features, n->c};
    int64_t bd[1] = {out_features};
    n->c = out_features;
    int pw = cb__param(m, name, "weight", CB_NN_F32, 2, wd, 1, err);
    if (pw < 0) return failed(err, CB_ENOMEM);
    n->param[0] = pw;
    if (bias) {
        int pb = cb__param(m, name, "bias", CB_NN_F32, 1, bd, 1, err);
        if (pb < 0) return failed(err, CB_ENOMEM);
        n->param[1] = pb;
    }
    return m->n_nodes++;
}

cb_nn_param *cb_nn_model_param(cb_nn_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

int64_t cb_nn_model_n_trainable(const cb_nn_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) n += m->params[i].numel;
    return n;
}

double cb_nn_model_forward_flops(const cb_nn_model *m) {
    double f = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const cb_nn_node *n = &m->nodes[i];
        if (n->op == CB_NN_CONV)
            f += 2.0 * n->c * n->h * n->w * (double)m->nodes[n->in[0]].c * n->kh * n->kw;
        else if (n->op == CB_NN_LINEAR)
            f += 2.0 * n->c * (double)m->nodes[n->in[0]].c;
    }
    return f;
}
