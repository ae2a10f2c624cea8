/* nn/cpu/params.c - the CPU executor's own parameters: layout, conversion from and to the
 * model's PyTorch tensors, BN folding for fused inference, gradients for cb_nn_exec_grad.
 *
 * Design: one tensor table entry per conv/linear weight and bias and per BN weight and bias.
 * Every entry has the same float offset in the weights (W), gradients (G) and optimizer moment
 * arrays, so the optimizer is one element-wise pass over the arrays (gaps and oneDNN's padding
 * are zero in W and G and stay zero). A weight's layout is the one its primitive in the first
 * plan chose (cb__cpu_plan_build fills tensor.md); biases and BN vectors are plain. The model is
 * converted once, at create. BN running statistics live in one STATS array (plain) and
 * num_batches_tracked per node; fused inference folds each BN that follows a conv into that
 * conv's weights and bias (a bias is synthesized when the conv has none), so its BN tensors are
 * then unused.
 *
 * Thread-safety: executor-local. Ownership: the executor owns every array here; the model's
 * tensors are read at create and written only by cb__cpu_params_sync.
 */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "nn/cpu/cpu.h"

static int cb__tensor_add(cb__cpu *c, int param, int node, int ndims, const int64_t *dims) {
    cb__cpu_tensor *t = &c->tensors[c->n_tensors];
    memset(t, 0, sizeof *t);
    t->param = param;
    t->node = node;
    cb__cpu_md_plain(&t->user_md, ndims, dims);
    if (ndims == 1) {
        t->md = t->user_md;
        t->has_md = 1;
    }
    return c->n_tensors++;
}

int cb__cpu_params_init(cb__cpu *c, cb_error *err) {
    cb_nn_model *m = c->m;
    const cb_nn_exec_opts *o = &c->e->opts;
    c->tensors = cb_calloc((size_t)m->n_nodes * 2 + 1, sizeof *c->tensors);
    c->nbt = cb_calloc((size_t)m->n_nodes, sizeof *c->nbt);
    if (!c->tensors || !c->nbt) return cb_error_set(err, CB_ENOMEM, "out of memory");
    size_t stats = 0;
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        cb__cpu_node *cn = &c->nodes[i];
        if (nd->op == CB_NN_CONV) {
            const cb_nn_node *x = &m->nodes[nd->in[0]];
            int64_t wd[4] = {nd->c, x->c, nd->kh, nd->kw}, bd[1] = {nd->c};
            cn->w = cb__tensor_add(c, nd->param[0], i, 4, wd);
            if (nd->param[1] >= 0 || cn->fold_bn >= 0)
                cn->b = cb__tensor_add(c, nd->param[1], i, 1, bd);
        } else if (nd->op == CB_NN_LINEAR) {
            const cb__cpu_node *x = &c->nodes[nd->in[0]];
            int64_t wd[4] = {nd->c, x->vc, x->vh, x->vw}, bd[1] = {nd->c};
            cn->w = cb__tensor_add(c, nd->param[0], i, x->flat2d ? 2 : 4, wd);
            if (nd->param[1] >= 0) cn->b = cb__tensor_add(c, nd->param[1], i, 1, bd);
        } else if (nd->op == CB_NN_BN) {
            int64_t d[1] = {nd->c};
            cn->w = cb__tensor_add(c, nd->param[0], i, 1, d);
            cn->b = cb__tensor_add(c, nd->param[1], i, 1, d);
            cn->rm = stats;
            cn->rv = stats + (size_t)nd->c;
            stats += 2 * (size_t)nd->c;
            c->nbt[i] = *(const int64_t *)m->params[nd->param[4]].data;
        }
    }
    c->stats_count = stats;
    c->arr[CB__CPU_ARR_STATS] = cb__cpu_alloc(stats * sizeof(float) + 1, 1,
                                              &c->arr_raw[CB__CPU_ARR_STATS]);
    if (!c->arr[CB__CPU_ARR_STATS]) return cb_error_set(err, CB_ENOMEM, "out of memory");
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        if (nd->op != CB_NN_BN) continue;
        memcpy(c->arr[CB__CPU_ARR_STATS] + c->nodes[i].rm, m->params[nd->param[2]].data,
               (size_t)nd->c * sizeof(float));
        memcpy(c->arr[CB__CPU_ARR_STATS] + c->nodes[i].rv, m->params[nd->param[3]].data,
               (size_t)nd->c * sizeof(float));
    }
    if (o->train && o->input_grad) {
        c->arr[CB__CPU_ARR_INGRAD] = cb__cpu_alloc((size_t)o->batch * c->in_numel * sizeof(float),
                                                   1, &c->arr_raw[CB__CPU_ARR_INGRAD]);
        if (!c->arr[CB__CPU_ARR_INGRAD]) return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    return CB_OK;
}

/* Folds BN node bn into conv weights w (OIHW, plain, in place) and bias b ([O], written). */
static void cb__fold(const cb_nn_model *m, int conv, int bn, float *w, float *b) {
    const cb_nn_node *nc = &m->nodes[conv], *nb = &m->nodes[bn];
    const float *gamma = m->params[nb->param[0]].data, *beta = m->params[nb->param[1]].data;
    const float *mean = m->params[nb->param[2]].data, *var = m->params[nb->param[3]].data;
    const float *bias = nc->param[1] >= 0 ? m->params[nc->param[1]].data : NULL;
    size_t per = (size_t)m->nodes[nc->in[0]].c * nc->kh * nc->kw;
    for (int o = 0; o < nc->c; o++) {
        double s = gamma[o] / sqrt((double)var[o] + nb->eps);
        for (size_t k = 0; k < per; k++) w[(size_t)o * per + k] = (float)(w[(size_t)o * per + k] * s);
        b[o] = (float)(beta[o] + ((bias ? bias[o] : 0.0) - mean[o]) * s);
    }
}

int cb__cpu_params_load(cb__cpu *c, cb_error *err) {
    cb_nn_model *m = c->m;
    const cb_nn_exec_opts *o = &c->e->opts;
    size_t off = 0;
    for (int i = 0; i < c->n_tensors; i++) {
        cb__cpu_tensor *t = &c->tensors[i];
        if (!t->has_md) { /* a node the output does not depend on */
            t->md = t->user_md;
            t->has_md = 1;
        }
        t->off = off;
        t->count = dnnl_memory_desc_get_size(&t->md) / sizeof(float);
        off += (t->count + 15) / 16 * 16;
    }
    c->w_count = off;
    size_t bytes = (off + 16) * sizeof(float);
    c->arr[CB__CPU_ARR_W] = cb__cpu_alloc(bytes, 1, &c->arr_raw[CB__CPU_ARR_W]);
    if (!c->arr[CB__CPU_ARR_W]) return cb_error_set(err, CB_ENOMEM, "out of memory for weights");
    if (o->train) {
        int moments = o->optim.kind == CB_NN_ADAM ? 2 : o->optim.momentum != 0 ? 1 : 0;
        c->arr[CB__CPU_ARR_G] = cb__cpu_alloc(bytes, 1, &c->arr_raw[CB__CPU_ARR_G]);
        if (moments >= 1) c->m1 = cb__cpu_alloc(bytes, 1, &c->m1_raw);
        if (moments >= 2) c->m2 = cb__cpu_alloc(bytes, 1, &c->m2_raw);
        if (!c->arr[CB__CPU_ARR_G] || (moments >= 1 && !c->m1) || (moments >= 2 && !c->m2))
            return cb_error_set(err, CB_ENOMEM, "out of memory for gradients");
    }
    float *w = c->arr[CB__CPU_ARR_W];
    for (int i = 0; i < c->n_tensors; i++) {
        const cb__cpu_tensor *t = &c->tensors[i];
        const cb__cpu_node *cn = &c->nodes[t->node];
        if (cn->fold_bn >= 0) continue; /* below */
        int rc = cb__cpu_reorder(c, &t->user_md, m->params[t->param].data, &t->md, w + t->off, err);
        if (rc) return rc;
    }
    for (int i = 1; i < m->n_nodes; i++) {
        const cb__cpu_node *cn = &c->nodes[i];
        if (cn->fold_bn < 0) continue;
        const cb__cpu_tensor *tw = &c->tensors[cn->w], *tb = &c->tensors[cn->b];
        const cb_nn_param *pw = &m->params[m->nodes[i].param[0]];
        float *tmp = cb_malloc((size_t)pw->numel * sizeof(float));
        if (!tmp) return cb_error_set(err, CB_ENOMEM, "out of memory");
        memcpy(tmp, pw->data, (size_t)pw->numel * sizeof(float));
        cb__fold(m, i, cn->fold_bn, tmp, w + tb->off);
        int rc = cb__cpu_reorder(c, &tw->user_md, tmp, &tw->md, w + tw->off, err);
        cb_free(tmp);
        if (rc) return rc;
    }
    return CB_OK;
}

int cb__cpu_params_sync(cb__cpu *c, cb_error *err) {
    cb_nn_model *m = c->m;
    if (!c->e->opts.train) return CB_OK; /* inference never changes what it read */
    for (int i = 0; i < c->n_tensors; i++) {
        const cb__cpu_tensor *t = &c->tensors[i];
        int rc = cb__cpu_reorder(c, &t->md, c->arr[CB__CPU_ARR_W] + t->off, &t->user_md,
                                 m->params[t->param].data, err);
        if (rc) return rc;
    }
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        if (nd->op != CB_NN_BN) continue;
        memcpy(m->params[nd->param[2]].data, c->arr[CB__CPU_ARR_STATS] + c->nodes[i].rm,
               (size_t)nd->c * sizeof(float));
        memcpy(m->params[nd->param[3]].data, c->arr[CB__CPU_ARR_STATS] + c->nodes[i].rv,
               (size_t)nd->c * sizeof(float));
        *(int64_t *)m->params[nd->param[4]].data = c->nbt[i];
    }
    return CB_OK;
}

int cb__cpu_params_grad(cb__cpu *c, const char *name, float *out, size_t count, cb_error *err) {
    cb_nn_model *m = c->m;
    if (!name) {
        if (!c->e->opts.input_grad)
            return cb_error_set(err, CB_EINVAL,
                                "input gradient: the executor was created without input_grad");
        if (c->ingrad_n == 0)
            return cb_error_set(err, CB_EINVAL, "input gradient: no train step yet");
        size_t need = (size_t)c->ingrad_n * c->in_numel;
        if (count != need)
            return cb_error_set(err, CB_EINVAL, "input gradient has %zu values, not %zu", need,
                                count);
        memcpy(out, c->arr[CB__CPU_ARR_INGRAD], need * sizeof(float));
        return CB_OK;
    }
    cb_nn_param *p = cb_nn_model_param(m, name);
    if (!p) return cb_error_set(err, CB_ENOENT, "no parameter named \"%s\"", name);
    int idx = (int)(p - m->params);
    for (int i = 0; i < c->n_tensors; i++) {
        const cb__cpu_tensor *t = &c->tensors[i];
        if (t->param != idx) continue;
        if (count != (size_t)p->numel)
            return cb_error_set(err, CB_EINVAL, "%s has %lld values, not %zu", name,
                                (long long)p->numel, count);
        return cb__cpu_reorder(c, &t->md, c->arr[CB__CPU_ARR_G] + t->off, &t->user_md, out, err);
    }
    return cb_error_set(err, CB_EINVAL, "%s is not trainable: it has no gradient", name);
}
