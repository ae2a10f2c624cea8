/* nn/cpu/plan.c - compiles the model graph into a plan: the oneDNN primitives of one mode
 * (train step, eval-mode forward of a training executor, inference) for one batch size n, in
 * execution order, with the buffers they use.
 *
 * Design:
 * - One activation layout end to end. A convolution is created with format `any` for its
 *   destination (and for its source only when it reads the input images), every other op is
 *   created on its input's memory descriptor, and a convolution's source is fixed to its
 *   producer's layout, so oneDNN's blocked layout (nChw16c on AVX-512) flows from the first
 *   convolution to the classifier without a reorder. The input images are reordered once per
 *   call into the first consumer's layout (or used in place when that is plain NCHW). Linear
 *   layers take the 4-D pooled tensor directly (their weights are 4-D), so flatten is free.
 * - Weights live in the executor in the layout the first plan's primitives chose. Later plans
 *   (eval mode, a smaller n, backward data) first ask for that layout and take it unless oneDNN
 *   would then fall back to its reference code; otherwise a reorder step per call converts.
 * - Training forward: BN with its sole ReLU consumer runs as one primitive (fuse_norm_relu, a
 *   workspace keeps the mask); a standalone ReLU keeps only its output (relu_use_dst_for_bwd) and
 *   runs in place when its input has no other use, as does an ADD. Backward walks the nodes in
 *   reverse; gradient buffers are reference-counted at build time: an ADD or flatten hands its
 *   gradient to its inputs without a copy, BN and ReLU backward run in place when nothing else
 *   needs their gradient, a second contribution to a tensor is accumulated, and a buffer that
 *   two tensors share is copied before one of them is modified (copy on write). A convolution's
 *   backward weights whose kernel on the activations' layout would be oneDNN's reference code
 *   takes the layouts oneDNN picks for it instead, reordered per call (AVX2, small images).
 * - Inference with fusion: BN folds into the preceding conv (params.c folds the weights), ReLU
 *   becomes an eltwise post-op, a residual ADD becomes a sum post-op on the conv that produces one
 *   of its inputs, its destination pre-filled with the other input (that input's own buffer when
 *   nothing reads it later, else a copy).
 * - Every region's step range is recorded while steps are emitted; util.c places the arena
 *   regions by lifetime, so inference reuses buffers as soon as they die and training keeps
 *   exactly what backward reads.
 *
 * Thread-safety: build runs on the executor's calling thread. Ownership: the plan owns its
 * primitives and memory objects; primitive descriptors and attributes are owned by the builder
 * and destroyed when the build ends, on success or failure.
 */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "nn/cpu/cpu.h"

typedef struct cb__bnode {
    int ready;                 /* value computed (its md and region are known) */
    dnnl_memory_desc_t md;     /* value layout */
    int reg;                   /* value region */
    dnnl_primitive_desc_t fpd; /* train: forward pd, the hint for backward */
    int ws, mean, var;         /* train: workspace, batch mean and variance regions, -1 */
    int diff;                  /* train: gradient region (layout md), -1 */
    dnnl_alg_kind_t alg;       /* conv: the forward pd's algorithm, which backward uses too */
} cb__bnode;

typedef struct cb__builder {
    cb__cpu *c;
    cb_nn_model *m;
    cb__cpu_plan *p;
    int kind, n, out;
    cb__bnode *v;
    dnnl_primitive_desc_t *pds;
    int n_pds, cap_pds;
    dnnl_primitive_attr_t *attrs;
    int n_attrs, cap_attrs;
    dnnl_primitive_attr_t attr; /* user scratchpad, no post-ops */
    int scratch_reg, input_reg;
    cb_error *err;
    char name[CB_NN_NAME_MAX + 32];
} cb__builder;

#define CB__DNNL(b, call, what)                                                                    \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) return cb__cpu_dnnl_error((b)->err, s_, what, (b)->name);          \
    } while (0)
#define CB__RC(call)                                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ < 0) return rc_;                                                                   \
    } while (0)

/* ---- Graph analysis ---------------------------------------------------------------------- */

static int cb__is(const cb_nn_model *m, int node, cb_nn_op op) {
    return node >= 0 && m->nodes[node].op == op;
}

/* True when node x's only live consumer is node `by` and x is not the output. */
static int cb__sole(const cb__cpu *c, int x, int by) {
    return c->nodes[x].n_cons == 1 && c->nodes[x].cons0 == by && x != c->m->output;
}

int cb__cpu_analyze(cb__cpu *c, cb_error *err) {
    cb_nn_model *m = c->m;
    const cb_nn_exec_opts *o = &c->e->opts;
    char nm[CB_NN_NAME_MAX + 32];
    for (int i = 0; i < m->n_nodes; i++) {
        cb__cpu_node *cn = &c->nodes[i];
        memset(cn, 0, sizeof *cn);
        cn->w = cn->b = -1;
        cn->bn_relu = cn->fold_bn = cn->post_relu = cn->sum_add = cn->sum_other = -1;
        cn->absorbed = cn->cons0 = -1;
    }
    c->nodes[m->output].live = 1;
    for (int i = m->output; i > 0; i--) {
        if (!c->nodes[i].live) continue;
        for (int k = 0; k < 2; k++)
            if (m->nodes[i].in[k] >= 0) c->nodes[m->nodes[i].in[k]].live = 1;
    }
    for (int i = 1; i <= m->output; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        cb__cpu_node *cn = &c->nodes[i];
        if (!cn->live) continue;
        for (int k = 0; k < 2; k++) {
            int x = nd->in[k];
            if (x < 0) continue;
            if (c->nodes[x].n_cons++ == 0) c->nodes[x].cons0 = i;
        }
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        cb__cpu_node *cn = &c->nodes[i];
        const cb__cpu_node *ci = nd->in[0] >= 0 ? &c->nodes[nd->in[0]] : NULL;
        cn->vc = nd->c;
        cn->vh = nd->h;
        cn->vw = nd->w;
        switch (nd->op) {
        case CB_NN_INPUT: break;
        case CB_NN_CONV:
        case CB_NN_BN:
        case CB_NN_MAXPOOL:
        case CB_NN_AVGPOOL:
            if (ci->flat2d)
                return cb_error_set(err, CB_EUNSUPPORTED,
                                    "%s: the CPU backend runs conv, bn and pooling on images, not "
                                    "on the flat output of a linear layer",
                                    cb__cpu_node_name(m, i, nm, sizeof nm));
            break;
        case CB_NN_LINEAR: cn->flat2d = 1; break;
        case CB_NN_FLATTEN:
            cn->flat2d = ci->flat2d;
            cn->vc = ci->vc;
            cn->vh = ci->vh;
            cn->vw = ci->vw;
            break;
        case CB_NN_RELU:
        case CB_NN_ADD:
            cn->flat2d = ci->flat2d;
            cn->vc = ci->vc;
            cn->vh = ci->vh;
            cn->vw = ci->vw;
            if (nd->op == CB_NN_ADD) {
                const cb__cpu_node *c1 = &c->nodes[nd->in[1]];
                if (c1->flat2d != ci->flat2d || c1->vc != ci->vc || c1->vh != ci->vh ||
                    c1->vw != ci->vw)
                    return cb_error_set(err, CB_EUNSUPPORTED,
                                        "%s: the CPU backend adds tensors of one layout only",
                                        cb__cpu_node_name(m, i, nm, sizeof nm));
            }
            break;
        }
        if (cn->flat2d) cn->vh = cn->vw = 1;
    }
    /* Gradients: wherever a trainable parameter or (input_grad) the input lies upstream. */
    c->nodes[0].need_diff = o->train && o->input_grad;
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        int need = nd->op == CB_NN_CONV || nd->op == CB_NN_BN || nd->op == CB_NN_LINEAR;
        for (int k = 0; k < 2; k++)
            if (nd->in[k] >= 0 && c->nodes[nd->in[k]].need_diff) need = 1;
        c->nodes[i].need_diff = o->train && need && c->nodes[i].live;
    }
    int fuse = !o->train && o->fuse;
    /* BN + its sole ReLU as one primitive: training (fuse_norm_relu), eval mode, fused inference.
     * A fused inference conv takes its BN first, below. */
    if (o->train || fuse) {
        for (int i = 1; i <= m->output; i++) {
            if (!c->nodes[i].live || m->nodes[i].op != CB_NN_BN) continue;
            int r = c->nodes[i].cons0;
            if (cb__sole(c, i, r) && cb__is(m, r, CB_NN_RELU)) c->nodes[i].bn_relu = r;
        }
    }
    if (!fuse) {
        for (int i = 1; i <= m->output; i++)
            if (c->nodes[i].bn_relu >= 0) c->nodes[c->nodes[i].bn_relu].absorbed = i;
        return CB_OK;
    }
    /* Fused inference: conv [+ BN] [+ ReLU], or conv [+ BN] + ADD [+ ReLU]. */
    for (int i = 1; i <= m->output; i++) {
        cb__cpu_node *cn = &c->nodes[i];
        if (!cn->live || m->nodes[i].op != CB_NN_CONV) continue;
        int t = i, k = cn->cons0;
        if (cb__sole(c, i, k) && cb__is(m, k, CB_NN_BN)) {
            cn->fold_bn = k;
            c->nodes[k].bn_relu = -1;
            c->nodes[k].absorbed = i;
            t = k;
        }
        k = c->nodes[t].cons0;
        if (cb__sole(c, t, k) && cb__is(m, k, CB_NN_RELU)) {
            cn->post_relu = k;
            c->nodes[k].absorbed = i;
        }
    }
    for (int a = 1; a <= m->output; a++) {
        if (!c->nodes[a].live || m->nodes[a].op != CB_NN_ADD) continue;
        const cb_nn_node *nd = &m->nodes[a];
        if (nd->in[0] == nd->in[1]) continue;
        int best = -1, other = -1;
        for (int k = 0; k < 2; k++) {
            int t = nd->in[k], o2 = nd->in[1 - k];
            if (!cb__sole(c, t, a)) continue;
            int conv = cb__is(m, t, CB_NN_CONV) ? t : c->nodes[t].absorbed;
            if (conv < 0 || !cb__is(m, conv, CB_NN_CONV) || c->nodes[conv].post_relu >= 0) continue;
            if (conv != t && c->nodes[conv].fold_bn != t) continue;
            if (o2 >= conv) continue; /* the other input must be ready when the conv runs */
            if (conv > best) {
                best = conv;
                other = o2;
            }
        }
        if (best < 0) continue;
        c->nodes[best].sum_add = a;
        c->nodes[best].sum_other = other;
        c->nodes[a].absorbed = best;
        int r = c->nodes[a].cons0;
        if (cb__sole(c, a, r) && cb__is(m, r, CB_NN_RELU)) {
            c->nodes[best].post_relu = r;
            c->nodes[r].absorbed = best;
        }
    }
    for (int i = 1; i <= m->output; i++) {
        cb__cpu_node *cn = &c->nodes[i];
        if (!cn->live || cn->absorbed >= 0) continue;
        int r = cn->cons0;
        if (m->nodes[i].op == CB_NN_BN && cn->bn_relu >= 0) {
            c->nodes[cn->bn_relu].absorbed = i;
        } else if ((m->nodes[i].op == CB_NN_LINEAR || m->nodes[i].op == CB_NN_ADD) &&
                   cb__sole(c, i, r) && cb__is(m, r, CB_NN_RELU)) {
            cn->post_relu = r;
            c->nodes[r].absorbed = i;
        }
    }
    return CB_OK;
}

/* ---- Builder plumbing -------------------------------------------------------------------- */

static int cb__grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int cap2 = *cap ? *cap * 2 : 64;
    while (cap2 < need) cap2 *= 2;
    void *a = cb_realloc(*arr, (size_t)cap2 * elem);
    if (!a) return -1;
    memset((char *)a + (size_t)*cap * elem, 0, (size_t)(cap2 - *cap) * elem);
    *arr = a;
    *cap = cap2;
    return 0;
}

static int cb__oom(cb__builder *b) {
    return cb_error_set(b->err, CB_ENOMEM, "out of memory compiling the model");
}

static int cb__reg(cb__builder *b, int kind, size_t size) {
    cb__cpu_plan *p = b->p;
    if (cb__grow((void **)&p->regs, &p->cap_regs, p->n_regs + 1, sizeof *p->regs))
        return cb__oom(b);
    cb__cpu_region *r = &p->regs[p->n_regs];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->size = size;
    r->tensor = -1;
    r->first = r->last = -1;
    return p->n_regs++;
}

static int cb__reg_md(cb__builder *b, const dnnl_memory_desc_t *md) {
    return cb__reg(b, CB__CPU_REG_ARENA, dnnl_memory_desc_get_size(md));
}

/* A region over executor array `arr`: tensor t's slot (W, G), or float offset off. */
static int cb__reg_param(cb__builder *b, int arr, int t, size_t off) {
    int r = cb__reg(b, CB__CPU_REG_PARAM, 0);
    if (r < 0) return r;
    b->p->regs[r].arr = arr;
    b->p->regs[r].tensor = t;
    b->p->regs[r].off = off;
    return r;
}

static int cb__mem(cb__builder *b, int reg, const dnnl_memory_desc_t *md) {
    cb__cpu_plan *p = b->p;
    for (int i = 0; i < p->n_mems; i++)
        if (p->mems[i].reg == reg && dnnl_memory_desc_equal(&p->mems[i].md, md)) return i;
    if (cb__grow((void **)&p->mems, &p->cap_mems, p->n_mems + 1, sizeof *p->mems))
        return cb__oom(b);
    cb__cpu_mem *mm = &p->mems[p->n_mems];
    mm->reg = reg;
    mm->md = *md;
    CB__DNNL(b, dnnl_memory_create(&mm->mem, md, b->c->eng, DNNL_MEMORY_NONE), "memory_create");
    return p->n_mems++;
}

static int cb__step(cb__builder *b, int kind, int node) {
    cb__cpu_plan *p = b->p;
    if (cb__grow((void **)&p->steps, &p->cap_steps, p->n_steps + 1, sizeof *p->steps))
        return cb__oom(b);
    cb__cpu_step *s = &p->steps[p->n_steps];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->node = node;
    s->reg[0] = s->reg[1] = -1;
    return p->n_steps++;
}

static void cb__use(cb__builder *b, int reg, int step) {
    cb__cpu_region *r = &b->p->regs[reg];
    if (r->first < 0 || step < r->first) r->first = step;
    if (step > r->last) r->last = step;
}

static int cb__arg(cb__builder *b, int st, int arg, int reg, const dnnl_memory_desc_t *md) {
    if (dnnl_memory_desc_get_size(md) == 0) return CB_OK;
    int mi = cb__mem(b, reg, md);
    if (mi < 0) return mi;
    cb__cpu_step *s = &b->p->steps[st];
    if (s->nargs == CB__CPU_MAX_ARGS)
        return cb_error_set(b->err, CB_EINVAL, "%s: too many primitive arguments", b->name);
    s->arg_ids[s->nargs] = arg;
    s->arg_mems[s->nargs++] = mi;
    cb__use(b, reg, st);
    return CB_OK;
}

/* Kernel step over regions r0 (written) and r1 (read or -1). */
static int cb__kstep(cb__builder *b, int kind, int node, int r0, int r1, size_t count) {
    int st = cb__step(b, kind, node);
    if (st < 0) return st;
    cb__cpu_step *s = &b->p->steps[st];
    s->reg[0] = r0;
    s->reg[1] = r1;
    s->count = count;
    if (r0 >= 0) cb__use(b, r0, st);
    if (r1 >= 0) cb__use(b, r1, st);
    return st;
}

static const dnnl_memory_desc_t *cb__q(const_dnnl_primitive_desc_t pd, int arg) {
    return dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
}

/* Creates a primitive descriptor, owned by the builder. Failure is returned, not reported. */
static dnnl_status_t cb__pd(cb__builder *b, const void *desc, const_dnnl_primitive_attr_t attr,
                            const_dnnl_primitive_desc_t hint, dnnl_primitive_desc_t *out) {
    *out = NULL;
    if (cb__grow((void **)&b->pds, &b->cap_pds, b->n_pds + 1, sizeof *b->pds))
        return dnnl_out_of_memory;
    dnnl_status_t s = dnnl_primitive_desc_create(out, desc, attr ? attr : b->attr, b->c->eng, hint);
    if (s == dnnl_success) b->pds[b->n_pds++] = *out;
    return s;
}

/* Attributes with the user scratchpad and post-ops: sum (when sum) then ReLU (when relu). */
static int cb__attr(cb__builder *b, int sum, int relu, dnnl_primitive_attr_t *out) {
    *out = b->attr;
    if (!sum && !relu) return CB_OK;
    if (cb__grow((void **)&b->attrs, &b->cap_attrs, b->n_attrs + 1, sizeof *b->attrs))
        return cb__oom(b);
    dnnl_primitive_attr_t a;
    CB__DNNL(b, dnnl_primitive_attr_create(&a), "primitive_attr_create");
    b->attrs[b->n_attrs++] = a;
    CB__DNNL(b, dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user), "attr");
    dnnl_post_ops_t po;
    CB__DNNL(b, dnnl_post_ops_create(&po), "post_ops_create");
    dnnl_status_t s = dnnl_success;
    if (sum) s = dnnl_post_ops_append_sum(po, 1.0f);
    if (s == dnnl_success && relu) s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0, 0);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(a, po);
    dnnl_post_ops_destroy(po);
    CB__DNNL(b, s, "post_ops");
    *out = a;
    return CB_OK;
}

/* Adds the primitive of pd as step st, with its scratchpad argument. */
static int cb__prim(cb__builder *b, int st, const_dnnl_primitive_desc_t pd) {
    CB__DNNL(b, dnnl_primitive_create(&b->p->steps[st].prim, pd), "primitive_create");
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t size = sp ? dnnl_memory_desc_get_size(sp) : 0;
    if (size == 0) return CB_OK;
    if (size > b->p->scratch_bytes) b->p->scratch_bytes = size;
    return cb__arg(b, st, DNNL_ARG_SCRATCHPAD, b->scratch_reg, sp);
}

static int cb__reorder(cb__builder *b, int node, int sreg, const dnnl_memory_desc_t *smd,
                       int dreg, const dnnl_memory_desc_t *dmd) {
    if (dnnl_memory_desc_equal(smd, dmd))
        return cb__kstep(b, CB__CPU_STEP_COPY, node, dreg, sreg,
                         dnnl_memory_desc_get_size(smd) / sizeof(float));
    dnnl_primitive_desc_t pd = NULL;
    CB__DNNL(b, dnnl_reorder_primitive_desc_create(&pd, smd, b->c->eng, dmd, b->c->eng, b->attr),
             "reorder");
    if (cb__grow((void **)&b->pds, &b->cap_pds, b->n_pds + 1, sizeof *b->pds)) {
        dnnl_primitive_desc_destroy(pd);
        return cb__oom(b);
    }
    b->pds[b->n_pds++] = pd;
    int st = cb__step(b, CB__CPU_STEP_PRIM, node);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_FROM, sreg, smd));
    CB__RC(cb__arg(b, st, DNNL_ARG_TO, dreg, dmd));
    return cb__prim(b, st, pd);
}

static void cb__md_tag(dnnl_memory_desc_t *md, int nd, const int64_t *dims, dnnl_format_tag_t t) {
    dnnl_dims_t d;
    for (int i = 0; i < nd; i++) d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(md, nd, d, dnnl_f32, t);
}

/* Dims of node's value for this plan: [n, c, h, w], or [n, f] when flat. */
static int cb__vdims(const cb__builder *b, int node, int64_t *d) {
    const cb__cpu_node *cn = &b->c->nodes[node];
    d[0] = b->n;
    d[1] = cn->vc;
    if (cn->flat2d) return 2;
    d[2] = cn->vh;
    d[3] = cn->vw;
    return 4;
}

static void cb__set_value(cb__builder *b, int node, const dnnl_memory_desc_t *md, int reg) {
    if (node < 0) return;
    b->v[node].ready = 1;
    b->v[node].md = *md;
    b->v[node].reg = reg;
}

/* The input images in layout want (plain NCHW when NULL): the caller's buffer itself when that is
 * plain, else a reorder into an arena region, once per call. */
static int cb__input(cb__builder *b, const dnnl_memory_desc_t *want) {
    cb__bnode *v = &b->v[0];
    if (v->ready) return CB_OK;
    int64_t d[4];
    cb__vdims(b, 0, d);
    dnnl_memory_desc_t plain;
    cb__md_tag(&plain, 4, d, dnnl_nchw);
    if (!want || dnnl_memory_desc_equal(want, &plain)) {
        cb__set_value(b, 0, &plain, b->input_reg);
        return CB_OK;
    }
    int r = cb__reg_md(b, want);
    if (r < 0) return r;
    snprintf(b->name, sizeof b->name, "input");
    CB__RC(cb__reorder(b, 0, b->input_reg, &plain, r, want));
    cb__set_value(b, 0, want, r);
    return CB_OK;
}

static cb__bnode *cb__val(cb__builder *b, int node) {
    if (node == 0 && !b->v[0].ready && cb__input(b, NULL) < 0) return NULL;
    return &b->v[node];
}

/* True when node `by` may overwrite x's value (forward in place): x's buffer is ours, nothing
 * else reads it, and (training) backward needs neither x's value nor, for `by`, its input. */
static int cb__can_inplace(const cb__builder *b, int x, int by) {
    const cb_nn_model *m = b->m;
    const cb__cpu_node *cx = &b->c->nodes[x];
    if (x == 0 || b->p->regs[b->v[x].reg].kind != CB__CPU_REG_ARENA) return 0;
    if (!cb__sole(b->c, x, by) || m->nodes[x].op == CB_NN_FLATTEN) return 0;
    if (b->kind == CB__CPU_TRAIN) {
        if (m->nodes[x].op == CB_NN_RELU && cx->absorbed < 0) return 0; /* keeps its output */
        if (m->nodes[by].op != CB_NN_RELU && m->nodes[by].op != CB_NN_ADD) return 0;
    }
    return 1;
}

static void cb__pads(const cb_nn_model *m, int i, dnnl_dims_t strides, dnnl_dims_t kernel,
                     dnnl_dims_t pl, dnnl_dims_t pr) {
    const cb_nn_node *nd = &m->nodes[i], *x = &m->nodes[nd->in[0]];
    strides[0] = nd->sh;
    strides[1] = nd->sw;
    kernel[0] = nd->kh;
    kernel[1] = nd->kw;
    pl[0] = nd->ph;
    pl[1] = nd->pw;
    pr[0] = (int64_t)(nd->h - 1) * nd->sh + nd->kh - x->h - nd->ph;
    pr[1] = (int64_t)(nd->w - 1) * nd->sw + nd->kw - x->w - nd->pw;
}

/* ---- Forward ------------------------------------------------------------------------------ */

/* True when conv node i may use Winograd (opts.winograd, 3x3, stride 1). */
static int cb__winograd(const cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    return b->c->e->opts.winograd && nd->kh == 3 && nd->kw == 3 && nd->sh == 1 && nd->sw == 1;
}

/* Forward op descriptor + pd of conv/linear node i with the given weights layout. */
static dnnl_status_t cb__wfwd_pd(cb__builder *b, int i, dnnl_prop_kind_t prop,
                                 const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *w,
                                 const dnnl_memory_desc_t *dst, const_dnnl_primitive_attr_t attr,
                                 dnnl_primitive_desc_t *pd) {
    const cb__cpu_node *cn = &b->c->nodes[i];
    dnnl_memory_desc_t bias;
    if (cn->b >= 0) bias = b->c->tensors[cn->b].user_md;
    if (b->m->nodes[i].op == CB_NN_CONV) {
        dnnl_dims_t st, k, pl, pr;
        cb__pads(b->m, i, st, k, pl, pr);
        dnnl_convolution_desc_t d;
        dnnl_status_t s;
        if (cb__winograd(b, i)) { /* where it exists, and on weights our optimizer can update */
            s = dnnl_convolution_forward_desc_init(&d, prop, dnnl_convolution_winograd, src, w,
                                                   cn->b >= 0 ? &bias : NULL, dst, st, pl, pr);
            if (s == dnnl_success) s = cb__pd(b, &d, attr, NULL, pd);
            if (s == dnnl_success && cb__q(*pd, DNNL_ARG_WEIGHTS)->format_kind != dnnl_blocked)
                s = dnnl_unimplemented;
            if (s == dnnl_success) return s;
        }
        s = dnnl_convolution_forward_desc_init(&d, prop, dnnl_convolution_direct, src, w,
                                               cn->b >= 0 ? &bias : NULL, dst, st, pl, pr);
        return s == dnnl_success ? cb__pd(b, &d, attr, NULL, pd) : s;
    }
    dnnl_inner_product_desc_t d;
    dnnl_status_t s =
        dnnl_inner_product_forward_desc_init(&d, prop, src, w, cn->b >= 0 ? &bias : NULL, dst);
    return s == dnnl_success ? cb__pd(b, &d, attr, NULL, pd) : s;
}

/* The forward pd of conv/linear node i: weights in the executor's layout when known and that
 * gives a non-reference implementation, else `any` (the caller compares and, for the first plan,
 * adopts the layout). */
static int cb__wfwd(cb__builder *b, int i, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *src,
                    const dnnl_memory_desc_t *dst, const_dnnl_primitive_attr_t attr,
                    dnnl_primitive_desc_t *out) {
    cb__cpu_tensor *t = &b->c->tensors[b->c->nodes[i].w];
    dnnl_memory_desc_t wany;
    dnnl_memory_desc_init_by_tag(&wany, t->user_md.ndims, t->user_md.dims, dnnl_f32,
                                 dnnl_format_tag_any);
    dnnl_primitive_desc_t fixed = NULL, any = NULL;
    if (t->has_md && cb__wfwd_pd(b, i, prop, src, &t->md, dst, attr, &fixed) == dnnl_success &&
        !cb__cpu_pd_is_ref(fixed)) {
        *out = fixed;
        return CB_OK;
    }
    dnnl_status_t s = cb__wfwd_pd(b, i, prop, src, &wany, dst, attr, &any);
    if (s != dnnl_success && !fixed)
        return cb__cpu_dnnl_error(b->err, s, b->m->nodes[i].op == CB_NN_CONV ? "convolution"
                                                                             : "inner product",
                                  b->name);
    *out = s != dnnl_success || (fixed && cb__cpu_pd_is_ref(any)) ? fixed : any;
    return CB_OK;
}

/* The weights region for a primitive wanting layout want: the tensor itself, or a per-call
 * reorder of it into an arena region. */
static int cb__weights_for(cb__builder *b, int i, const dnnl_memory_desc_t *want, int *reg) {
    int t = b->c->nodes[i].w;
    int pr = cb__reg_param(b, CB__CPU_ARR_W, t, 0);
    if (pr < 0) return pr;
    if (dnnl_memory_desc_equal(want, &b->c->tensors[t].md)) {
        *reg = pr;
        return CB_OK;
    }
    int r = cb__reg_md(b, want);
    if (r < 0) return r;
    CB__RC(cb__reorder(b, i, pr, &b->c->tensors[t].md, r, want));
    *reg = r;
    return CB_OK;
}

/* True when a node from `from` on (other than the sum-fused ADD `except`) reads node o, or o is
 * the output: then o's buffer cannot become conv `from`'s destination (the conv itself reading
 * o included: a convolution cannot run in place). */
static int cb__read_after(const cb__builder *b, int o, int from, int except) {
    for (int j = from; j <= b->out; j++) {
        if (j == except || !b->c->nodes[j].live) continue;
        if (b->m->nodes[j].in[0] == o || b->m->nodes[j].in[1] == o) return 1;
    }
    return o == b->out;
}

static int cb__fwd_wop(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    const cb__cpu_node *cn = &b->c->nodes[i];
    int x = nd->in[0], conv = nd->op == CB_NN_CONV;
    cb__bnode *vx = &b->v[x];
    if (!conv && x == 0 && !vx->ready) CB__RC(cb__input(b, NULL));
    dnnl_memory_desc_t src, dst;
    int64_t sd[4], dd[4] = {b->n, nd->c, nd->h, nd->w};
    int snd = cb__vdims(b, x, sd);
    if (x == 0 && !vx->ready)
        cb__md_tag(&src, snd, sd, dnnl_format_tag_any);
    else
        src = vx->md;
    cb__md_tag(&dst, conv ? 4 : 2, dd, dnnl_format_tag_any);
    int train = b->kind == CB__CPU_TRAIN;
    dnnl_prop_kind_t prop = train ? dnnl_forward_training : dnnl_forward_inference;
    dnnl_primitive_attr_t attr;
    CB__RC(cb__attr(b, cn->sum_add >= 0, cn->post_relu >= 0, &attr));
    dnnl_primitive_desc_t pd = NULL;
    cb__bnode *vo = cn->sum_add >= 0 ? &b->v[cn->sum_other] : NULL;
    if (vo) { /* sum post-op: the destination is the other ADD input's layout if possible */
        if (cb__wfwd(b, i, prop, &src, &vo->md, attr, &pd) < 0 || cb__cpu_pd_is_ref(pd)) pd = NULL;
        cb_error_clear(b->err);
    }
    if (!pd) CB__RC(cb__wfwd(b, i, prop, &src, &dst, attr, &pd));
    const dnnl_convolution_desc_t *cd = NULL;
    b->v[i].alg = dnnl_convolution_direct; /* the algorithm backward uses */
    if (conv && dnnl_primitive_desc_query(pd, dnnl_query_convolution_d, 0, &cd) == dnnl_success)
        b->v[i].alg = cd->alg_kind;
    cb__cpu_tensor *t = &b->c->tensors[cn->w];
    if (!t->has_md) { /* the first plan fixes the executor's weights layout */
        t->md = *cb__q(pd, DNNL_ARG_WEIGHTS);
        t->has_md = 1;
    }
    if (x == 0 && !vx->ready) CB__RC(cb__input(b, cb__q(pd, DNNL_ARG_SRC)));
    const dnnl_memory_desc_t *dmd = cb__q(pd, DNNL_ARG_DST);
    int wreg, dreg;
    CB__RC(cb__weights_for(b, i, cb__q(pd, DNNL_ARG_WEIGHTS), &wreg));
    if (vo) {
        int o = cn->sum_other;
        if (b->p->regs[vo->reg].kind == CB__CPU_REG_ARENA && dnnl_memory_desc_equal(&vo->md, dmd) &&
            !cb__read_after(b, o, i, cn->sum_add)) {
            dreg = vo->reg;
        } else {
            dreg = cb__reg_md(b, dmd);
            if (dreg < 0) return dreg;
            CB__RC(cb__reorder(b, i, vo->reg, &vo->md, dreg, dmd));
        }
    } else {
        dreg = cb__reg_md(b, dmd);
        if (dreg < 0) return dreg;
    }
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC, vx->reg, &vx->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_WEIGHTS, wreg, cb__q(pd, DNNL_ARG_WEIGHTS)));
    if (cn->b >= 0) {
        int br = cb__reg_param(b, CB__CPU_ARR_W, cn->b, 0);
        if (br < 0) return br;
        CB__RC(cb__arg(b, st, DNNL_ARG_BIAS, br, cb__q(pd, DNNL_ARG_BIAS)));
    }
    CB__RC(cb__arg(b, st, DNNL_ARG_DST, dreg, dmd));
    CB__RC(cb__prim(b, st, pd));
    cb__set_value(b, i, dmd, dreg);
    cb__set_value(b, cn->fold_bn, dmd, dreg);
    cb__set_value(b, cn->sum_add, dmd, dreg);
    cb__set_value(b, cn->post_relu, dmd, dreg);
    b->v[i].fpd = pd;
    return CB_OK;
}

static int cb__fwd_bn(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    const cb__cpu_node *cn = &b->c->nodes[i];
    int x = nd->in[0], train = b->kind == CB__CPU_TRAIN;
    cb__bnode *vx = cb__val(b, x), *vi = &b->v[i];
    if (!vx) return b->err ? b->err->code : CB_EINVAL;
    unsigned flags = dnnl_use_scale | dnnl_use_shift;
    if (cn->bn_relu >= 0) flags |= dnnl_fuse_norm_relu;
    if (!train) flags |= dnnl_use_global_stats;
    int64_t per_channel = (int64_t)b->n * cn->vh * cn->vw;
    if (train && per_channel < 2)
        return cb_error_set(b->err, CB_EINVAL,
                            "%s: batch norm in training needs more than one value per channel "
                            "(batch %d of %dx%d)",
                            b->name, b->n, cn->vh, cn->vw);
    dnnl_batch_normalization_desc_t d;
    CB__DNNL(b,
             dnnl_batch_normalization_forward_desc_init(
                 &d, train ? dnnl_forward_training : dnnl_forward_inference, &vx->md, nd->eps, flags),
             "batch_normalization_forward_desc_init");
    dnnl_primitive_desc_t pd;
    CB__DNNL(b, cb__pd(b, &d, NULL, NULL, &pd), "batch normalization");
    const dnnl_memory_desc_t *dmd = cb__q(pd, DNNL_ARG_DST);
    int dreg = !train && cb__can_inplace(b, x, i) && dnnl_memory_desc_equal(dmd, &vx->md)
                   ? vx->reg
                   : cb__reg_md(b, dmd);
    if (dreg < 0) return dreg;
    int gr = cb__reg_param(b, CB__CPU_ARR_W, cn->w, 0), br = cb__reg_param(b, CB__CPU_ARR_W, cn->b, 0);
    if (gr < 0 || br < 0) return gr < 0 ? gr : br;
    int mr, vr;
    if (train) {
        mr = vi->mean = cb__reg_md(b, cb__q(pd, DNNL_ARG_MEAN));
        vr = vi->var = cb__reg_md(b, cb__q(pd, DNNL_ARG_VARIANCE));
    } else {
        mr = cb__reg_param(b, CB__CPU_ARR_STATS, -1, cn->rm);
        vr = cb__reg_param(b, CB__CPU_ARR_STATS, -1, cn->rv);
    }
    if (mr < 0 || vr < 0) return mr < 0 ? mr : vr;
    const dnnl_memory_desc_t *wsmd = cb__q(pd, DNNL_ARG_WORKSPACE);
    if (wsmd && dnnl_memory_desc_get_size(wsmd) > 0) {
        vi->ws = cb__reg_md(b, wsmd);
        if (vi->ws < 0) return vi->ws;
    }
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC, vx->reg, &vx->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DST, dreg, dmd));
    CB__RC(cb__arg(b, st, DNNL_ARG_MEAN, mr, cb__q(pd, DNNL_ARG_MEAN)));
    CB__RC(cb__arg(b, st, DNNL_ARG_VARIANCE, vr, cb__q(pd, DNNL_ARG_VARIANCE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_SCALE, gr, cb__q(pd, DNNL_ARG_SCALE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_SHIFT, br, cb__q(pd, DNNL_ARG_SHIFT)));
    if (vi->ws >= 0) CB__RC(cb__arg(b, st, DNNL_ARG_WORKSPACE, vi->ws, wsmd));
    CB__RC(cb__prim(b, st, pd));
    if (train) CB__RC(cb__kstep(b, CB__CPU_STEP_BNSTATS, i, mr, vr, (size_t)per_channel));
    cb__set_value(b, i, dmd, dreg);
    cb__set_value(b, cn->bn_relu, dmd, dreg);
    vi->fpd = pd;
    return CB_OK;
}

static int cb__fwd_relu(cb__builder *b, int i) {
    int x = b->m->nodes[i].in[0], train = b->kind == CB__CPU_TRAIN;
    cb__bnode *vx = cb__val(b, x);
    if (!vx) return b->err ? b->err->code : CB_EINVAL;
    dnnl_eltwise_desc_t d;
    CB__DNNL(b,
             dnnl_eltwise_forward_desc_init(
                 &d, train ? dnnl_forward_training : dnnl_forward_inference,
                 train ? dnnl_eltwise_relu_use_dst_for_bwd : dnnl_eltwise_relu, &vx->md, 0, 0),
             "eltwise_forward_desc_init");
    dnnl_primitive_desc_t pd;
    CB__DNNL(b, cb__pd(b, &d, NULL, NULL, &pd), "relu");
    int dreg = cb__can_inplace(b, x, i) ? vx->reg : cb__reg_md(b, &vx->md);
    if (dreg < 0) return dreg;
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC, vx->reg, &vx->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DST, dreg, &vx->md));
    CB__RC(cb__prim(b, st, pd));
    cb__set_value(b, i, &vx->md, dreg);
    b->v[i].fpd = pd;
    return CB_OK;
}

static int cb__fwd_pool(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    int x = nd->in[0], train = b->kind == CB__CPU_TRAIN;
    cb__bnode *vx = cb__val(b, x), *vi = &b->v[i];
    if (!vx) return b->err ? b->err->code : CB_EINVAL;
    dnnl_dims_t st2, k, pl, pr;
    int64_t dd[4] = {b->n, nd->c, nd->h, nd->w};
    cb__pads(b->m, i, st2, k, pl, pr);
    dnnl_memory_desc_t dst;
    cb__md_tag(&dst, 4, dd, dnnl_format_tag_any);
    dnnl_pooling_desc_t d;
    CB__DNNL(b,
             dnnl_pooling_forward_desc_init(
                 &d, train ? dnnl_forward_training : dnnl_forward_inference,
                 nd->op == CB_NN_MAXPOOL ? dnnl_pooling_max : dnnl_pooling_avg_include_padding,
                 &vx->md, &dst, st2, k, pl, pr),
             "pooling_forward_desc_init");
    dnnl_primitive_desc_t pd;
    CB__DNNL(b, cb__pd(b, &d, NULL, NULL, &pd), "pooling");
    const dnnl_memory_desc_t *dmd = cb__q(pd, DNNL_ARG_DST);
    int dreg = cb__reg_md(b, dmd);
    if (dreg < 0) return dreg;
    const dnnl_memory_desc_t *wsmd = cb__q(pd, DNNL_ARG_WORKSPACE);
    if (wsmd && dnnl_memory_desc_get_size(wsmd) > 0) {
        vi->ws = cb__reg_md(b, wsmd);
        if (vi->ws < 0) return vi->ws;
    }
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC, vx->reg, &vx->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DST, dreg, dmd));
    if (vi->ws >= 0) CB__RC(cb__arg(b, st, DNNL_ARG_WORKSPACE, vi->ws, wsmd));
    CB__RC(cb__prim(b, st, pd));
    cb__set_value(b, i, dmd, dreg);
    vi->fpd = pd;
    return CB_OK;
}

static int cb__fwd_add(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    const cb__cpu_node *cn = &b->c->nodes[i];
    int x0 = nd->in[0], x1 = nd->in[1];
    if (!cb__val(b, x0) || !cb__val(b, x1)) return b->err ? b->err->code : CB_EINVAL;
    if (!cb__can_inplace(b, x0, i) && cb__can_inplace(b, x1, i)) { /* write into in[1] */
        int t = x0;
        x0 = x1;
        x1 = t;
    }
    cb__bnode *v0 = &b->v[x0], *v1 = &b->v[x1];
    int dreg = cb__can_inplace(b, x0, i) ? v0->reg : cb__reg_md(b, &v0->md);
    if (dreg < 0) return dreg;
    dnnl_primitive_attr_t attr;
    CB__RC(cb__attr(b, 0, cn->post_relu >= 0, &attr));
    dnnl_binary_desc_t d;
    CB__DNNL(b, dnnl_binary_desc_init(&d, dnnl_binary_add, &v0->md, &v1->md, &v0->md),
             "binary_desc_init");
    dnnl_primitive_desc_t pd;
    CB__DNNL(b, cb__pd(b, &d, attr, NULL, &pd), "binary add");
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC_0, v0->reg, &v0->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC_1, v1->reg, &v1->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DST, dreg, &v0->md));
    CB__RC(cb__prim(b, st, pd));
    cb__set_value(b, i, &v0->md, dreg);
    cb__set_value(b, cn->post_relu, &v0->md, dreg);
    return CB_OK;
}

/* Logits to the caller, loss and accuracy, and (train) dLoss/dlogits into the output's
 * gradient region. */
static int cb__fwd_output(cb__builder *b) {
    int o = b->out;
    cb__bnode *vo = cb__val(b, o);
    if (!vo) return b->err ? b->err->code : CB_EINVAL;
    int64_t d[4];
    int nd = cb__vdims(b, o, d);
    dnnl_memory_desc_t plain;
    cb__md_tag(&plain, nd, d, nd == 2 ? dnnl_nc : dnnl_nchw);
    snprintf(b->name, sizeof b->name, "output");
    int same = dnnl_memory_desc_equal(&plain, &vo->md);
    int lreg = vo->reg;
    if (!same) {
        lreg = cb__reg_md(b, &plain);
        if (lreg < 0) return lreg;
        CB__RC(cb__reorder(b, o, vo->reg, &vo->md, lreg, &plain));
    }
    if (b->kind != CB__CPU_TRAIN)
        return cb__kstep(b, CB__CPU_STEP_LOSS, o, lreg, -1, (size_t)b->n) < 0 ? b->err->code : 0;
    int dreg = cb__reg_md(b, &vo->md), preg = dreg;
    if (dreg < 0) return dreg;
    if (!same && (preg = cb__reg_md(b, &plain)) < 0) return preg;
    CB__RC(cb__kstep(b, CB__CPU_STEP_LOSS, o, lreg, preg, (size_t)b->n));
    if (!same) CB__RC(cb__reorder(b, o, preg, &plain, dreg, &vo->md));
    b->v[o].diff = dreg;
    b->p->regs[dreg].owners = 1;
    return CB_OK;
}

/* ---- Backward ----------------------------------------------------------------------------- */

/* Gives x its own gradient region when it shares one with another pending gradient (copy on
 * write), before a contribution is added to it. */
static int cb__cow(cb__builder *b, int i, int x) {
    cb__bnode *vx = &b->v[x];
    if (vx->diff < 0 || b->p->regs[vx->diff].owners <= 1) return CB_OK;
    int r2 = cb__reg_md(b, &vx->md);
    if (r2 < 0) return r2;
    CB__RC(cb__kstep(b, CB__CPU_STEP_COPY, i, r2, vx->diff,
                     dnnl_memory_desc_get_size(&vx->md) / sizeof(float)));
    b->p->regs[vx->diff].owners--;
    vx->diff = r2;
    b->p->regs[r2].owners = 1;
    return CB_OK;
}

/* Where node i's backward writes its contribution to dLoss/dx: *acc = 0, a fresh region (or i's
 * own gradient region, in place) that becomes x's gradient; *acc = 1, a region added to x's
 * gradient afterwards (x already has one: several consumers). */
static int cb__diff_target(cb__builder *b, int i, int x, int inplace, int *acc) {
    cb__bnode *vx = &b->v[x], *vi = &b->v[i];
    *acc = 0;
    if (b->c->nodes[x].need_diff && vx->diff >= 0) {
        *acc = 1;
        CB__RC(cb__cow(b, i, x));
    }
    if (inplace && b->p->regs[vi->diff].owners == 1 && dnnl_memory_desc_equal(&vx->md, &vi->md))
        return vi->diff;
    return cb__reg_md(b, &vx->md);
}

static int cb__diff_commit(cb__builder *b, int i, int x, int reg, int acc) {
    cb__bnode *vx = &b->v[x];
    if (!b->c->nodes[x].need_diff) return CB_OK;
    if (acc)
        return cb__kstep(b, CB__CPU_STEP_ACCUM, i, vx->diff, reg,
                         dnnl_memory_desc_get_size(&vx->md) / sizeof(float)) < 0
                   ? b->err->code
                   : CB_OK;
    vx->diff = reg;
    b->p->regs[reg].owners++;
    return CB_OK;
}

/* ADD and flatten: x's gradient is i's (shared, no copy) or accumulates it. */
static int cb__diff_pass(cb__builder *b, int i, int x) {
    cb__bnode *vx = &b->v[x], *vi = &b->v[i];
    if (!b->c->nodes[x].need_diff) return CB_OK;
    if (!dnnl_memory_desc_equal(&vx->md, &vi->md)) {
        int acc, r = cb__diff_target(b, i, x, 0, &acc);
        if (r < 0) return r;
        CB__RC(cb__reorder(b, i, vi->diff, &vi->md, r, &vx->md));
        return cb__diff_commit(b, i, x, r, acc);
    }
    if (vx->diff < 0) {
        vx->diff = vi->diff;
        b->p->regs[vi->diff].owners++;
        return CB_OK;
    }
    CB__RC(cb__cow(b, i, x));
    return cb__kstep(b, CB__CPU_STEP_ACCUM, i, vx->diff, vi->diff,
                     dnnl_memory_desc_get_size(&vx->md) / sizeof(float)) < 0
               ? b->err->code
               : CB_OK;
}

/* Region reg (layout md) as a primitive wants it (layout want): reg itself, or a per-call
 * reorder into an arena region. */
static int cb__in_layout(cb__builder *b, int node, int reg, const dnnl_memory_desc_t *md,
                         const dnnl_memory_desc_t *want, int *out) {
    *out = reg;
    if (dnnl_memory_desc_equal(md, want)) return CB_OK;
    int r = cb__reg_md(b, want);
    if (r < 0) return r;
    CB__RC(cb__reorder(b, node, reg, md, r, want));
    *out = r;
    return CB_OK;
}

static int cb__bwd_wop(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    const cb__cpu_node *cn = &b->c->nodes[i];
    cb__cpu_tensor *t = &b->c->tensors[cn->w];
    int x = nd->in[0], conv = nd->op == CB_NN_CONV;
    cb__bnode *vx = &b->v[x], *vi = &b->v[i];
    dnnl_memory_desc_t wany, bias;
    dnnl_memory_desc_init_by_tag(&wany, t->user_md.ndims, t->user_md.dims, dnnl_f32,
                                 dnnl_format_tag_any);
    if (cn->b >= 0) bias = b->c->tensors[cn->b].user_md;
    dnnl_dims_t st2, k, pl, pr;
    if (conv) cb__pads(b->m, i, st2, k, pl, pr);
    dnnl_primitive_desc_t pd;
    if (b->c->nodes[x].need_diff) {
        if (conv) {
            dnnl_convolution_desc_t d;
            dnnl_status_t s = dnnl_unimplemented;
            for (int k2 = vi->alg == dnnl_convolution_direct; k2 < 2 && s != dnnl_success; k2++) {
                s = dnnl_convolution_backward_data_desc_init(
                    &d, k2 ? dnnl_convolution_direct : vi->alg, &vx->md, &wany, &vi->md, st2, pl,
                    pr);
                if (s == dnnl_success) s = cb__pd(b, &d, NULL, vi->fpd, &pd);
            }
            CB__DNNL(b, s, "convolution backward data");
        } else {
            dnnl_inner_product_desc_t d;
            CB__DNNL(b, dnnl_inner_product_backward_data_desc_init(&d, &vx->md, &wany, &vi->md),
                     "inner_product_backward_data_desc_init");
            CB__DNNL(b, cb__pd(b, &d, NULL, vi->fpd, &pd), "inner product backward data");
        }
        int wreg, acc;
        CB__RC(cb__weights_for(b, i, cb__q(pd, DNNL_ARG_WEIGHTS), &wreg));
        int r = cb__diff_target(b, i, x, 0, &acc);
        if (r < 0) return r;
        int st = cb__step(b, CB__CPU_STEP_PRIM, i);
        if (st < 0) return st;
        CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_DST, vi->diff, &vi->md));
        CB__RC(cb__arg(b, st, DNNL_ARG_WEIGHTS, wreg, cb__q(pd, DNNL_ARG_WEIGHTS)));
        CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_SRC, r, &vx->md));
        CB__RC(cb__prim(b, st, pd));
        CB__RC(cb__diff_commit(b, i, x, r, acc));
    }
    if (conv) {
        dnnl_convolution_desc_t d;
        dnnl_status_t s = dnnl_unimplemented;
        for (int k2 = vi->alg == dnnl_convolution_direct; k2 < 2 && s != dnnl_success; k2++) {
            s = dnnl_convolution_backward_weights_desc_init(
                &d, k2 ? dnnl_convolution_direct : vi->alg, &vx->md, &wany,
                cn->b >= 0 ? &bias : NULL, &vi->md, st2, pl, pr);
            if (s == dnnl_success) s = cb__pd(b, &d, NULL, vi->fpd, &pd);
        }
        CB__DNNL(b, s, "convolution backward weights");
        /* On the activations' blocked layout oneDNN may have no fast kernel for this shape: its
         * AVX2 kernel needs kh <= ih, so ResNet's 3x3 convolutions at 2x2 or 1x1 (layer4 at
         * 64x64 or 32x32 images) get its reference code (600 ms per call at batch 4, seconds at
         * batch 64: more than the rest of the step). Then let oneDNN pick the source and
         * gradient layouts too (its GEMM kernel takes plain ones: 8 ms), reordered per call. */
        if (cb__cpu_pd_is_ref(pd)) {
            dnnl_memory_desc_t sany, dany;
            dnnl_primitive_desc_t pd2 = NULL;
            dnnl_memory_desc_init_by_tag(&sany, vx->md.ndims, vx->md.dims, dnnl_f32,
                                         dnnl_format_tag_any);
            dnnl_memory_desc_init_by_tag(&dany, vi->md.ndims, vi->md.dims, dnnl_f32,
                                         dnnl_format_tag_any);
            s = dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &sany,
                                                            &wany, cn->b >= 0 ? &bias : NULL,
                                                            &dany, st2, pl, pr);
            if (s == dnnl_success) s = cb__pd(b, &d, NULL, vi->fpd, &pd2);
            if (s == dnnl_success && !cb__cpu_pd_is_ref(pd2)) pd = pd2;
        }
    } else {
        dnnl_inner_product_desc_t d;
        CB__DNNL(b,
                 dnnl_inner_product_backward_weights_desc_init(
                     &d, &vx->md, &wany, cn->b >= 0 ? &bias : NULL, &vi->md),
                 "inner_product_backward_weights_desc_init");
        CB__DNNL(b, cb__pd(b, &d, NULL, vi->fpd, &pd), "inner product backward weights");
    }
    const dnnl_memory_desc_t *dw = cb__q(pd, DNNL_ARG_DIFF_WEIGHTS);
    int gw = cb__reg_param(b, CB__CPU_ARR_G, cn->w, 0), dwreg = gw;
    if (gw < 0) return gw;
    int same = dnnl_memory_desc_equal(dw, &t->md);
    if (!same && (dwreg = cb__reg_md(b, dw)) < 0) return dwreg;
    const dnnl_memory_desc_t *smd = cb__q(pd, DNNL_ARG_SRC), *ddmd = cb__q(pd, DNNL_ARG_DIFF_DST);
    int sreg, ddreg;
    CB__RC(cb__in_layout(b, i, vx->reg, &vx->md, smd, &sreg));
    CB__RC(cb__in_layout(b, i, vi->diff, &vi->md, ddmd, &ddreg));
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC, sreg, smd));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_DST, ddreg, ddmd));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_WEIGHTS, dwreg, dw));
    if (cn->b >= 0) {
        int gb = cb__reg_param(b, CB__CPU_ARR_G, cn->b, 0);
        if (gb < 0) return gb;
        CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_BIAS, gb, cb__q(pd, DNNL_ARG_DIFF_BIAS)));
    }
    CB__RC(cb__prim(b, st, pd));
    if (!same) CB__RC(cb__reorder(b, i, dwreg, dw, gw, &t->md));
    return CB_OK;
}

static int cb__bwd_bn(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    const cb__cpu_node *cn = &b->c->nodes[i];
    int x = nd->in[0];
    cb__bnode *vx = &b->v[x], *vi = &b->v[i];
    unsigned flags = dnnl_use_scale | dnnl_use_shift;
    if (cn->bn_relu >= 0) flags |= dnnl_fuse_norm_relu;
    dnnl_batch_normalization_desc_t d;
    CB__DNNL(b,
             dnnl_batch_normalization_backward_desc_init(&d, dnnl_backward, &vx->md, &vx->md,
                                                         nd->eps, flags),
             "batch_normalization_backward_desc_init");
    dnnl_primitive_desc_t pd;
    CB__DNNL(b, cb__pd(b, &d, NULL, vi->fpd, &pd), "batch normalization backward");
    int acc, r = cb__diff_target(b, i, x, 1, &acc);
    if (r < 0) return r;
    int gr = cb__reg_param(b, CB__CPU_ARR_W, cn->w, 0), br = cb__reg_param(b, CB__CPU_ARR_W, cn->b, 0);
    int dg = cb__reg_param(b, CB__CPU_ARR_G, cn->w, 0), db = cb__reg_param(b, CB__CPU_ARR_G, cn->b, 0);
    if (gr < 0 || br < 0 || dg < 0 || db < 0) return b->err->code;
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    CB__RC(cb__arg(b, st, DNNL_ARG_SRC, vx->reg, &vx->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_MEAN, vi->mean, cb__q(pd, DNNL_ARG_MEAN)));
    CB__RC(cb__arg(b, st, DNNL_ARG_VARIANCE, vi->var, cb__q(pd, DNNL_ARG_VARIANCE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_SCALE, gr, cb__q(pd, DNNL_ARG_SCALE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_SHIFT, br, cb__q(pd, DNNL_ARG_SHIFT))); /* counted as an input */
    if (vi->ws >= 0) CB__RC(cb__arg(b, st, DNNL_ARG_WORKSPACE, vi->ws, cb__q(pd, DNNL_ARG_WORKSPACE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_DST, vi->diff, &vi->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_SRC, r, &vx->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_SCALE, dg, cb__q(pd, DNNL_ARG_DIFF_SCALE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_SHIFT, db, cb__q(pd, DNNL_ARG_DIFF_SHIFT)));
    CB__RC(cb__prim(b, st, pd));
    return cb__diff_commit(b, i, x, r, acc);
}

static int cb__bwd_relu_pool(cb__builder *b, int i) {
    const cb_nn_node *nd = &b->m->nodes[i];
    int x = nd->in[0], relu = nd->op == CB_NN_RELU;
    cb__bnode *vx = &b->v[x], *vi = &b->v[i];
    dnnl_primitive_desc_t pd;
    if (relu) {
        dnnl_eltwise_desc_t d;
        CB__DNNL(b,
                 dnnl_eltwise_backward_desc_init(&d, dnnl_eltwise_relu_use_dst_for_bwd, &vi->md,
                                                 &vi->md, 0, 0),
                 "eltwise_backward_desc_init");
        CB__DNNL(b, cb__pd(b, &d, NULL, vi->fpd, &pd), "relu backward");
    } else {
        dnnl_dims_t st2, k, pl, pr;
        cb__pads(b->m, i, st2, k, pl, pr);
        dnnl_pooling_desc_t d;
        CB__DNNL(b,
                 dnnl_pooling_backward_desc_init(
                     &d, nd->op == CB_NN_MAXPOOL ? dnnl_pooling_max : dnnl_pooling_avg_include_padding,
                     &vx->md, &vi->md, st2, k, pl, pr),
                 "pooling_backward_desc_init");
        CB__DNNL(b, cb__pd(b, &d, NULL, vi->fpd, &pd), "pooling backward");
    }
    int acc, r = cb__diff_target(b, i, x, relu, &acc);
    if (r < 0) return r;
    int st = cb__step(b, CB__CPU_STEP_PRIM, i);
    if (st < 0) return st;
    if (relu) CB__RC(cb__arg(b, st, DNNL_ARG_DST, vi->reg, &vi->md));
    if (vi->ws >= 0) CB__RC(cb__arg(b, st, DNNL_ARG_WORKSPACE, vi->ws, cb__q(pd, DNNL_ARG_WORKSPACE)));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_DST, vi->diff, &vi->md));
    CB__RC(cb__arg(b, st, DNNL_ARG_DIFF_SRC, r, &vx->md));
    CB__RC(cb__prim(b, st, pd));
    return cb__diff_commit(b, i, x, r, acc);
}

static int cb__backward(cb__builder *b) {
    cb_nn_model *m = b->m;
    for (int i = b->out; i > 0; i--) {
        const cb__cpu_node *cn = &b->c->nodes[i];
        cb__bnode *vi = &b->v[i];
        if (!cn->live || !cn->need_diff || vi->diff < 0) continue;
        cb__cpu_node_name(m, i, b->name, sizeof b->name);
        const cb_nn_node *nd = &m->nodes[i];
        if (cn->absorbed >= 0) { /* a ReLU inside its BN: the BN takes its gradient */
            cb__bnode *vb = &b->v[cn->absorbed];
            vb->diff = vi->diff;
            b->p->regs[vi->diff].owners++;
        } else {
            switch (nd->op) {
            case CB_NN_CONV:
            case CB_NN_LINEAR: CB__RC(cb__bwd_wop(b, i)); break;
            case CB_NN_BN: CB__RC(cb__bwd_bn(b, i)); break;
            case CB_NN_RELU:
            case CB_NN_MAXPOOL:
            case CB_NN_AVGPOOL: CB__RC(cb__bwd_relu_pool(b, i)); break;
            case CB_NN_ADD:
                CB__RC(cb__diff_pass(b, i, nd->in[0]));
                CB__RC(cb__diff_pass(b, i, nd->in[1]));
                break;
            case CB_NN_FLATTEN: CB__RC(cb__diff_pass(b, i, nd->in[0])); break;
            case CB_NN_INPUT: break;
            }
        }
        b->p->regs[vi->diff].owners--;
    }
    if (b->c->nodes[0].need_diff && b->v[0].diff >= 0) {
        int64_t d[4];
        cb__vdims(b, 0, d);
        dnnl_memory_desc_t plain;
        cb__md_tag(&plain, 4, d, dnnl_nchw);
        int r = cb__reg_param(b, CB__CPU_ARR_INGRAD, -1, 0);
        if (r < 0) return r;
        snprintf(b->name, sizeof b->name, "input gradient");
        CB__RC(cb__reorder(b, 0, b->v[0].diff, &b->v[0].md, r, &plain));
    }
    return CB_OK;
}

/* ---- Build -------------------------------------------------------------------------------- */

void cb__cpu_plan_free(cb__cpu_plan *p) {
    if (!p) return;
    for (int i = 0; i < p->n_steps; i++)
        if (p->steps[i].prim) dnnl_primitive_destroy(p->steps[i].prim);
    for (int i = 0; i < p->n_mems; i++)
        if (p->mems[i].mem) dnnl_memory_destroy(p->mems[i].mem);
    cb_free(p->steps);
    cb_free(p->regs);
    cb_free(p->mems);
    cb_free(p->argv);
    cb_free(p);
}

static int cb__build(cb__builder *b) {
    cb_nn_model *m = b->m;
    CB__DNNL(b, dnnl_primitive_attr_create(&b->attr), "primitive_attr_create");
    CB__DNNL(b, dnnl_primitive_attr_set_scratchpad_mode(b->attr, dnnl_scratchpad_mode_user),
             "attr");
    b->scratch_reg = cb__reg(b, CB__CPU_REG_SCRATCH, 0);
    b->input_reg = cb__reg(b, CB__CPU_REG_INPUT, (size_t)b->n * b->c->in_numel * sizeof(float));
    if (b->scratch_reg < 0 || b->input_reg < 0) return b->err->code;
    for (int i = 0; i < m->n_nodes; i++) {
        b->v[i].reg = b->v[i].ws = b->v[i].mean = b->v[i].var = b->v[i].diff = -1;
    }
    for (int i = 1; i <= b->out; i++) {
        const cb__cpu_node *cn = &b->c->nodes[i];
        if (!cn->live || cn->absorbed >= 0) continue;
        cb__cpu_node_name(m, i, b->name, sizeof b->name);
        switch (m->nodes[i].op) {
        case CB_NN_CONV:
        case CB_NN_LINEAR: CB__RC(cb__fwd_wop(b, i)); break;
        case CB_NN_BN: CB__RC(cb__fwd_bn(b, i)); break;
        case CB_NN_RELU: CB__RC(cb__fwd_relu(b, i)); break;
        case CB_NN_MAXPOOL:
        case CB_NN_AVGPOOL: CB__RC(cb__fwd_pool(b, i)); break;
        case CB_NN_ADD: CB__RC(cb__fwd_add(b, i)); break;
        case CB_NN_FLATTEN: {
            cb__bnode *vx = cb__val(b, m->nodes[i].in[0]);
            if (!vx) return b->err->code;
            cb__set_value(b, i, &vx->md, vx->reg);
            break;
        }
        case CB_NN_INPUT: break;
        }
    }
    CB__RC(cb__fwd_output(b));
    if (b->kind == CB__CPU_TRAIN) CB__RC(cb__backward(b));
    b->p->regs[b->scratch_reg].size = b->p->scratch_bytes;
    CB__RC(cb__cpu_pack(b->p, b->err));
    cb__cpu_plan *p = b->p;
    p->argv = cb_calloc((size_t)p->n_steps * CB__CPU_MAX_ARGS + 1, sizeof *p->argv);
    if (!p->argv) return cb__oom(b);
    for (int s = 0; s < p->n_steps; s++)
        for (int k = 0; k < p->steps[s].nargs; k++) {
            dnnl_exec_arg_t *a = &p->argv[(size_t)s * CB__CPU_MAX_ARGS + k];
            a->arg = p->steps[s].arg_ids[k];
            a->memory = p->mems[p->steps[s].arg_mems[k]].mem;
        }
    return CB_OK;
}

int cb__cpu_plan_build(cb__cpu *c, int kind, int n, cb__cpu_plan **out, cb_error *err) {
    *out = NULL;
    cb__builder b;
    memset(&b, 0, sizeof b);
    b.c = c;
    b.m = c->m;
    b.kind = kind;
    b.n = n;
    b.out = c->m->output;
    b.err = err;
    b.p = cb_calloc(1, sizeof *b.p);
    b.v = cb_calloc((size_t)c->m->n_nodes, sizeof *b.v);
    int rc;
    if (!b.p || !b.v) {
        rc = cb_error_set(err, CB_ENOMEM, "out of memory compiling the model");
    } else {
        b.p->kind = kind;
        b.p->n = n;
        rc = cb__build(&b);
    }
    for (int i = 0; i < b.n_pds; i++) dnnl_primitive_desc_destroy(b.pds[i]);
    for (int i = 0; i < b.n_attrs; i++) dnnl_primitive_attr_destroy(b.attrs[i]);
    if (b.attr) dnnl_primitive_attr_destroy(b.attr);
    cb_free(b.pds);
    cb_free(b.attrs);
    cb_free(b.v);
    if (rc) {
        cb__cpu_plan_free(b.p);
        return rc;
    }
    *out = b.p;
    return CB_OK;
}
