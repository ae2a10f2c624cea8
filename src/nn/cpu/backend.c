/* nn/cpu/backend.c - the CPU backend of cb_nn_exec on oneDNN 2.6: create, forward, eval, train
 * step, sync and gradients; the plan cache; running a plan; the loss and the optimizer.
 *
 * Design:
 * - create analyses the graph (liveness, consumers, fusion), builds the main plan (the train step
 *   at `batch` for a training executor, inference at `batch` otherwise), which fixes the weights'
 *   layouts, then converts the model's parameters once and allocates the activation arena and
 *   scratchpad that plan needs. Everything a step touches exists before the first call.
 * - Other plans are built on first use and cached by (kind, n), up to CB__CPU_MAX_PLANS: the
 *   eval-mode forward of a training executor (BN on running statistics, current weights) and
 *   any n < batch (the last partial batch). They share the arena and scratchpad, which grow
 *   (reallocated, generation bumped, memories rebound) only if a new plan needs more.
 * - A call: set the caller's thread count (omp_set_num_threads: oneDNN's OpenMP runtime uses the
 *   calling thread's ICV), point the input memory at the caller's images, run the steps, then
 *   (train) the optimizer over the flat parameter arrays.
 * - profile = 1: each oneDNN primitive (plus stream wait) is timed into stats.primitive_ns,
 *   each of our kernels and the optimizer into stats.kernel_ns; total_ns - primitive_ns is the
 *   time the framework spends outside oneDNN.
 *
 * Thread-safety: one executor is used by one thread at a time; the primitives of one plan are
 * never executed concurrently. Ownership: the executor (e->impl) owns everything here; the
 * caller's input, labels and logits buffers are borrowed for the call only (the input is read
 * in place, never written).
 */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/alloc.h"
#include "core/clock.h"
#include "nn/cpu/cpu.h"

static void cb__threads(const cb_nn_exec *e) {
#ifdef _OPENMP
    if (e->opts.threads > 0) omp_set_num_threads(e->opts.threads);
#else
    (void)e;
#endif
}

/* Grows a shared buffer to bytes (contents dropped); bumps the generation so plans rebind. */
static int cb__ensure(cb__cpu *c, void **buf, void **raw, size_t *have, size_t bytes,
                      cb_error *err) {
    if (bytes <= *have && *buf) return CB_OK;
    cb_free(*raw);
    *buf = cb__cpu_alloc(bytes + 64, 0, raw);
    *have = *buf ? bytes : 0;
    c->gen++;
    if (!*buf) return cb_error_set(err, CB_ENOMEM, "out of memory for %zu MB of activations",
                                   bytes >> 20);
    return CB_OK;
}

static int cb__plan(cb__cpu *c, int kind, int n, cb__cpu_plan **out, cb_error *err) {
    for (int i = 0; i < CB__CPU_MAX_PLANS; i++) {
        cb__cpu_plan *p = c->plans[i];
        if (p && p->kind == kind && p->n == n) {
            p->last_use = ++c->calls;
            *out = p;
            return CB_OK;
        }
    }
    cb__cpu_plan *p;
    int rc = cb__cpu_plan_build(c, kind, n, &p, err);
    if (rc) return rc;
    rc = cb__ensure(c, &c->arena, &c->arena_raw, &c->arena_bytes, p->arena_bytes, err);
    if (!rc) rc = cb__ensure(c, &c->scratch, &c->scratch_raw, &c->scratch_bytes, p->scratch_bytes, err);
    if (rc) {
        cb__cpu_plan_free(p);
        return rc;
    }
    int slot = 0; /* [0] is the plan built at create and stays; the rest is least recently used */
    if (c->plans[0]) {
        slot = 1;
        for (int i = 1; i < CB__CPU_MAX_PLANS && c->plans[slot]; i++)
            if (!c->plans[i] || c->plans[i]->last_use < c->plans[slot]->last_use) slot = i;
    }
    cb__cpu_plan_free(c->plans[slot]);
    c->plans[slot] = p;
    p->last_use = ++c->calls;
    *out = p;
    return CB_OK;
}

static void *cb__ptr(const cb__cpu *c, const cb__cpu_plan *p, int reg) {
    const cb__cpu_region *r = &p->regs[reg];
    switch (r->kind) {
    case CB__CPU_REG_ARENA: return (char *)c->arena + r->off;
    case CB__CPU_REG_PARAM:
        return c->arr[r->arr] + (r->tensor >= 0 ? c->tensors[r->tensor].off : r->off);
    case CB__CPU_REG_INPUT: return (void *)c->call_x;
    default: return c->scratch;
    }
}

/* Mean softmax cross-entropy, accuracy and dLoss/dlogits of the plain logits [n, classes]. */
static void cb__loss(cb__cpu *c, const float *z, float *dz, int n) {
    int classes = c->m->classes;
    double loss = 0;
    int64_t correct = 0;
    for (int i = 0; i < n; i++) {
        const float *row = z + (size_t)i * classes;
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (row[k] > row[best]) best = k;
        double sum = 0;
        for (int k = 0; k < classes; k++) sum += exp((double)row[k] - row[best]);
        double lse = row[best] + log(sum);
        if (!c->call_labels) continue;
        int y = c->call_labels[i];
        loss += lse - row[y];
        correct += best == y;
        if (!dz) continue;
        float *d = dz + (size_t)i * classes;
        for (int k = 0; k < classes; k++)
            d[k] = (float)((exp((double)row[k] - lse) - (k == y)) / n);
    }
    c->call_loss = n ? loss / n : 0;
    c->call_correct = correct;
    if (c->call_logits) memcpy(c->call_logits, z, (size_t)n * classes * sizeof(float));
}

static void cb__bnstats(cb__cpu *c, const cb__cpu_step *s, const float *mean, const float *var) {
    const cb_nn_node *nd = &c->m->nodes[s->node];
    const cb__cpu_node *cn = &c->nodes[s->node];
    float *rm = c->arr[CB__CPU_ARR_STATS] + cn->rm, *rv = c->arr[CB__CPU_ARR_STATS] + cn->rv;
    float mom = nd->momentum;
    double unbias = (double)s->count / (double)(s->count - 1);
    for (int k = 0; k < nd->c; k++) {
        rm[k] = (1 - mom) * rm[k] + mom * mean[k];
        rv[k] = (1 - mom) * rv[k] + mom * (float)(var[k] * unbias);
    }
    c->nbt[s->node]++;
}

static int cb__run(cb__cpu *c, cb__cpu_plan *p, cb_error *err) {
    char nm[CB_NN_NAME_MAX + 32];
    if (p->bound_gen != c->gen) {
        for (int i = 0; i < p->n_mems; i++) {
            if (p->regs[p->mems[i].reg].kind == CB__CPU_REG_INPUT) continue;
            dnnl_status_t s = dnnl_memory_set_data_handle(p->mems[i].mem, cb__ptr(c, p, p->mems[i].reg));
            if (s != dnnl_success) return cb__cpu_dnnl_error(err, s, "memory_set_data_handle", NULL);
        }
        p->bound_gen = c->gen;
    }
    for (int i = 0; i < p->n_mems; i++)
        if (p->regs[p->mems[i].reg].kind == CB__CPU_REG_INPUT)
            dnnl_memory_set_data_handle(p->mems[i].mem, (void *)c->call_x);
    int profile = c->e->opts.profile;
    for (int k = 0; k < p->n_steps; k++) {
        const cb__cpu_step *s = &p->steps[k];
        int64_t t0 = profile ? cb_clock_now_ns() : 0;
        switch (s->kind) {
        case CB__CPU_STEP_PRIM: {
            dnnl_status_t st = dnnl_primitive_execute(s->prim, c->stream, s->nargs,
                                                      p->argv + (size_t)k * CB__CPU_MAX_ARGS);
            if (st == dnnl_success && profile) st = dnnl_stream_wait(c->stream);
            if (st != dnnl_success)
                return cb__cpu_dnnl_error(err, st, "execute",
                                          cb__cpu_node_name(c->m, s->node, nm, sizeof nm));
            break;
        }
        case CB__CPU_STEP_ACCUM:
            cb__cpu_accum(cb__ptr(c, p, s->reg[0]), cb__ptr(c, p, s->reg[1]), s->count);
            break;
        case CB__CPU_STEP_COPY:
            cb__cpu_copy(cb__ptr(c, p, s->reg[0]), cb__ptr(c, p, s->reg[1]), s->count);
            break;
        case CB__CPU_STEP_LOSS:
            cb__loss(c, cb__ptr(c, p, s->reg[0]), s->reg[1] >= 0 ? cb__ptr(c, p, s->reg[1]) : NULL,
                     p->n);
            break;
        case CB__CPU_STEP_BNSTATS:
            cb__bnstats(c, s, cb__ptr(c, p, s->reg[0]), cb__ptr(c, p, s->reg[1]));
            break;
        }
        if (profile) {
            int64_t dt = cb_clock_now_ns() - t0;
            if (s->kind == CB__CPU_STEP_PRIM) c->e->stats.primitive_ns += dt;
            else c->e->stats.kernel_ns += dt;
        }
    }
    dnnl_status_t st = dnnl_stream_wait(c->stream);
    return st == dnnl_success ? CB_OK : cb__cpu_dnnl_error(err, st, "stream_wait", NULL);
}

/* torch.optim.SGD / Adam over the flat arrays (weight decay on every trainable parameter). */
static void cb__optimize(cb__cpu *c) {
    const cb_nn_optim *o = &c->e->opts.optim;
    float *w = c->arr[CB__CPU_ARR_W];
    const float *g = c->arr[CB__CPU_ARR_G];
    float *m1 = c->m1, *m2 = c->m2;
    ptrdiff_t n = (ptrdiff_t)c->w_count;
    float lr = (float)o->lr, wd = (float)o->weight_decay;
    c->opt_steps++;
    if (o->kind == CB_NN_ADAM) {
        float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
        double t = (double)c->opt_steps;
        float step = (float)(o->lr / (1 - pow(o->beta1, t)));
        float bc2 = (float)sqrt(1 - pow(o->beta2, t));
        CB__OMP_FOR
        for (ptrdiff_t i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            float a = m1[i] = b1 * m1[i] + (1 - b1) * d;
            float v = m2[i] = b2 * m2[i] + (1 - b2) * d * d;
            w[i] -= step * a / (sqrtf(v) / bc2 + eps);
        }
        return;
    }
    float mom = (float)o->momentum;
    int first = c->opt_steps == 1, nesterov = o->nesterov;
    if (!m1) {
        CB__OMP_FOR
        for (ptrdiff_t i = 0; i < n; i++) w[i] -= lr * (g[i] + wd * w[i]);
        return;
    }
    CB__OMP_FOR
    for (ptrdiff_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        float buf = m1[i] = first ? d : mom * m1[i] + d;
        w[i] -= lr * (nesterov ? d + mom * buf : buf);
    }
}

static int cb__cpu_create(cb_nn_exec *e, cb_error *err) {
    cb__threads(e); /* oneDNN sizes per-thread buffers at primitive creation */
    cb_nn_model *m = e->model;
    cb_nn_exec_opts *o = &e->opts;
    if (m->classes != m->nodes[m->output].c)
        return cb_error_set(err, CB_EINVAL, "model %s: classes %d but the output node has %d",
                            m->arch, m->classes, m->nodes[m->output].c);
    if (o->train) {
        cb_nn_optim *op = &o->optim;
        if (op->kind == CB_NN_ADAM && op->beta1 == 0 && op->beta2 == 0 && op->eps == 0) {
            op->beta1 = 0.9;
            op->beta2 = 0.999;
            op->eps = 1e-8;
        }
        if ((op->kind != CB_NN_SGD && op->kind != CB_NN_ADAM) || !(op->lr >= 0) ||
            !(op->weight_decay >= 0) || !(op->momentum >= 0) ||
            (op->nesterov && op->kind == CB_NN_SGD && op->momentum <= 0) ||
            (op->kind == CB_NN_ADAM && (!(op->beta1 >= 0 && op->beta1 < 1) ||
                                        !(op->beta2 >= 0 && op->beta2 < 1) || !(op->eps >= 0))))
            return cb_error_set(err, CB_EINVAL,
                                "optimizer: lr, momentum and weight decay must be >= 0, betas in "
                                "[0, 1), eps >= 0, and nesterov needs momentum > 0");
    }
    cb__cpu *c = cb_calloc(1, sizeof *c);
    if (!c) return cb_error_set(err, CB_ENOMEM, "out of memory");
    e->impl = c;
    c->e = e;
    c->m = m;
    c->gen = 1;
    c->in_numel = (size_t)m->in_c * m->in_h * m->in_w;
    dnnl_status_t s = dnnl_engine_create(&c->eng, dnnl_cpu, 0);
    if (s == dnnl_success) s = dnnl_stream_create(&c->stream, c->eng, dnnl_stream_default_flags);
    if (s != dnnl_success) return cb__cpu_dnnl_error(err, s, "cpu engine", NULL);
    c->nodes = cb_calloc((size_t)m->n_nodes, sizeof *c->nodes);
    if (!c->nodes) return cb_error_set(err, CB_ENOMEM, "out of memory");
    int rc = cb__cpu_analyze(c, err);
    if (!rc) rc = cb__cpu_params_init(c, err);
    cb__cpu_plan *p;
    if (!rc) rc = cb__plan(c, o->train ? CB__CPU_TRAIN : CB__CPU_INFER, o->batch, &p, err);
    if (!rc) rc = cb__cpu_params_load(c, err);
    if (rc) cb_error_prefix(err, "cpu backend, model %s", m->arch);
    return rc;
}

static void cb__cpu_destroy(cb_nn_exec *e) {
    cb__cpu *c = e->impl;
    if (!c) return;
    for (int i = 0; i < CB__CPU_MAX_PLANS; i++) cb__cpu_plan_free(c->plans[i]);
    for (int i = 0; i < CB__CPU_N_ARR; i++) cb_free(c->arr_raw[i]);
    cb_free(c->m1_raw);
    cb_free(c->m2_raw);
    cb_free(c->arena_raw);
    cb_free(c->scratch_raw);
    cb_free(c->nodes);
    cb_free(c->tensors);
    cb_free(c->nbt);
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->eng) dnnl_engine_destroy(c->eng);
    cb_free(c);
    e->impl = NULL;
}

/* Forward in eval mode (inference plan, or a training executor's eval plan). */
static int cb__infer(cb_nn_exec *e, const float *x, const int32_t *labels, int n, float *logits,
                     cb_error *err) {
    cb__cpu *c = e->impl;
    cb__threads(e);
    cb__cpu_plan *p;
    int rc = cb__plan(c, e->opts.train ? CB__CPU_EVAL : CB__CPU_INFER, n, &p, err);
    if (rc) return rc;
    c->call_x = x;
    c->call_labels = labels;
    c->call_logits = logits;
    return cb__run(c, p, err);
}

static int cb__cpu_forward(cb_nn_exec *e, const float *x, int n, float *logits, cb_error *err) {
    return cb__infer(e, x, NULL, n, logits, err);
}

static int cb__cpu_eval(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                        cb_nn_result *r, cb_error *err) {
    int rc = cb__infer(e, x, labels, n, NULL, err);
    if (rc) return rc;
    cb__cpu *c = e->impl;
    r->loss = c->call_loss;
    r->correct = c->call_correct;
    r->n = n;
    return CB_OK;
}

static int cb__cpu_train_step(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                              cb_nn_result *r, cb_error *err) {
    cb__cpu *c = e->impl;
    cb__threads(e);
    cb__cpu_plan *p;
    int rc = cb__plan(c, CB__CPU_TRAIN, n, &p, err);
    if (rc) return rc;
    c->call_x = x;
    c->call_labels = labels;
    c->call_logits = NULL;
    rc = cb__run(c, p, err);
    if (rc) return rc;
    int64_t t0 = e->opts.profile ? cb_clock_now_ns() : 0;
    cb__optimize(c);
    if (e->opts.profile) e->stats.kernel_ns += cb_clock_now_ns() - t0;
    if (e->opts.input_grad) c->ingrad_n = n;
    r->loss = c->call_loss;
    r->correct = c->call_correct;
    r->n = n;
    return CB_OK;
}

static int cb__cpu_sync(cb_nn_exec *e, cb_error *err) {
    cb__threads(e);
    return cb__cpu_params_sync(e->impl, err);
}

static int cb__cpu_grad(cb_nn_exec *e, const char *param, float *out, size_t count,
                        cb_error *err) {
    cb__threads(e);
    return cb__cpu_params_grad(e->impl, param, out, count, err);
}

const cb_nn_backend cb_nn_backend_cpu = {
    .name = "cpu",
    .create = cb__cpu_create,
    .destroy = cb__cpu_destroy,
    .forward = cb__cpu_forward,
    .eval = cb__cpu_eval,
    .train_step = cb__cpu_train_step,
    .sync = cb__cpu_sync,
    .grad = cb__cpu_grad,
};
