/* cuda/nn_backend.c - the CUDA backend of cb_nn_exec (cb__cuda_nn_backend): create and destroy,
 * forward, eval, train step, sync and gradients; the plan cache; the optimizer launch.
 *
 * Design (see nn_cuda.h for the objects):
 * - create makes the executor's device current, creates its non-blocking stream, cuDNN and
 *   cuBLAS handles on that stream, its own memory pool (release threshold UINT64_MAX: memory
 *   freed by a call stays in the pool for the next), two timing events, the flat parameter
 *   arrays (copied from the model as they are: PyTorch's layouts are cuDNN's) and pinned host
 *   staging for `batch` images, then builds the main plan (train step or eval-mode forward at
 *   `batch`) so algorithm search happens before the first timed call.
 * - A call: make the device current; find or build the plan for (kind, n) (least recently used
 *   of CB__CU_MAX_PLANS; the one built at create stays; after a build the pool is trimmed and
 *   its high-water mark reset: cb__plan_trim); copy the caller's input (and labels) into pinned
 *   staging (host time: stats.last_stage_in_ns); allocate the call's buffers from the pool
 *   (stream-ordered, host side); record the start event; copy the input to the device; record
 *   the input event; enqueue forward, loss, backward and one fused optimizer kernel; copy
 *   results to pinned memory; free the call's buffers stream-ordered; record the end event and
 *   wait for it as opts.gpu_wait says (block: the thread sleeps; spin; yield); read the results.
 *   stats.last_device_ns is start to end event: device work only (the copies to and from the
 *   device included, host staging and launch preparation before the first copy excluded);
 *   stats.last_copy_in_ns is start to input event. stats.device_mem_peak_bytes is the largest
 *   cudaMemPoolAttrUsedMemHigh seen after a call (the steady state) plus the fixed arrays;
 *   stats.device_mem_plan_peak_bytes the largest seen after plan builds plus the fixed arrays.
 *   What device_ns still contains besides kernels: gaps where the device waited for the host
 *   to enqueue the next kernel (eager execution, as PyTorch's event timing sees too).
 * - Precision: fp32 sets CUDNN_FMA_MATH on every convolution and CUBLAS_COMPUTE_32F (no TF32
 *   anywhere); tf32 sets CUDNN_TENSOR_OP_MATH and CUBLAS_COMPUTE_32F_FAST_TF32. bf16 and fp16
 *   are torch.autocast's mixed precision: 16-bit activations and a 16-bit weight copy
 *   (refreshed by a conversion kernel after each update) for the layers, float32 master weights,
 *   gradients (G), BN parameters and statistics, loss and optimizer; the images are converted to
 *   16-bit on the device, logits and the input gradient back to float32. fp16 training scales
 *   the loss (GradScaler: 65536 at first; the optimizer kernel skips a step whose unscaled
 *   gradients hold inf/NaN and the scale halves; it doubles after 2000 good steps).
 * - Inference executors run every node as written (BN on running statistics, not folded into
 *   the convolution): opts.fuse is accepted and ignored.
 * - num_batches_tracked is counted on the host (one per BN node per train step) and written back
 *   by sync with the weights and running statistics.
 *
 * Thread-safety: one executor is used by one thread at a time; any thread may make the call (the
 * device is made current on it first). Ownership: the executor (e->impl) owns every CUDA object
 * and buffer here; the caller's x, labels and logits are borrowed for the call only.
 */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "cuda/nn_cuda.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* Float alignment of each tensor in the flat arrays (256 bytes, cuDNN's preferred alignment). */
#define CB__CU_ALIGN 64

/* ---- Create and destroy ----------------------------------------------------------------- */

/* torch.optim's argument rules; fills Adam's defaults (0.9, 0.999, 1e-8) when all three are 0. */
static int cb__check_optim(cb_nn_optim *o, cb_error *err) {
    if (o->kind == CB_NN_ADAM && o->beta1 == 0 && o->beta2 == 0 && o->eps == 0) {
        o->beta1 = 0.9;
        o->beta2 = 0.999;
        o->eps = 1e-8;
    }
    const char *bad = NULL;
    if (o->kind != CB_NN_SGD && o->kind != CB_NN_ADAM) bad = "unknown optimizer kind";
    else if (!(o->lr >= 0) || !(o->weight_decay >= 0) || !(o->momentum >= 0))
        bad = "lr, momentum and weight decay must be >= 0";
    else if (o->kind == CB_NN_SGD && o->nesterov && !(o->momentum > 0))
        bad = "nesterov needs momentum > 0";
    else if (o->kind == CB_NN_ADAM &&
             !(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1 && o->eps >= 0))
        bad = "Adam needs betas in [0, 1) and eps >= 0";
    return bad ? cb_error_set(err, CB_EINVAL, "optimizer: %s", bad) : CB_OK;
}

static int cb__dalloc(cb__cu *c, void *ptr, size_t bytes, cb_error *err) {
    void **p = ptr;
    bytes = bytes ? bytes : 4;
    CB__CUDA(cudaMalloc(p, bytes));
    c->fixed_bytes += (int64_t)bytes;
    CB__CUDA(cudaMemsetAsync(*p, 0, bytes, c->stream));
    return CB_OK;
}

static int cb__halloc(void **ptr, size_t bytes, cb_error *err) {
    CB__CUDA(cudaHostAlloc(ptr, bytes ? bytes : 1, cudaHostAllocDefault));
    return CB_OK;
}

/* Offsets of every parameter, the device arrays, and the model's values copied in. */
static int cb__params_init(cb__cu *c, cb_error *err) {
    cb_nn_model *m = c->m;
    const cb_nn_exec_opts *o = &c->e->opts;
    c->poff = cb_malloc((size_t)(m->n_params ? m->n_params : 1) * sizeof *c->poff);
    c->nbt = cb_calloc((size_t)m->n_nodes, sizeof *c->nbt);
    if (!c->poff || !c->nbt) return cb_error_set(err, CB_ENOMEM, "out of memory");
    for (int i = 0; i < m->n_params; i++) {
        const cb_nn_param *p = &m->params[i];
        c->poff[i] = CB__CU_NONE;
        if (p->dtype != CB_NN_F32) continue;
        size_t *count = p->trainable ? &c->w_count : &c->stats_count;
        c->poff[i] = *count;
        *count += ((size_t)p->numel + CB__CU_ALIGN - 1) / CB__CU_ALIGN * CB__CU_ALIGN;
    }
    size_t wb = c->w_count * sizeof(float);
    int rc = cb__dalloc(c, &c->w, wb, err);
    if (!rc) rc = cb__dalloc(c, &c->stats, c->stats_count * sizeof(float), err);
    if (!rc && o->train) rc = cb__dalloc(c, &c->g, wb, err);
    int moments = o->optim.kind == CB_NN_ADAM ? 2 : o->optim.momentum > 0 ? 1 : 0;
    if (!rc && o->train && moments >= 1) rc = cb__dalloc(c, &c->m1, wb, err);
    if (!rc && o->train && moments >= 2) rc = cb__dalloc(c, &c->m2, wb, err);
    if (!rc && c->dt != CB__DT_F32) rc = cb__dalloc(c, &c->w16, c->w_count * c->asz, err);
    if (!rc && c->dt != CB__DT_F32 && o->train)
        rc = cb__dalloc(c, &c->g16, c->w_count * c->asz, err);
    if (!rc && o->train && o->precision == CB_NN_FP16)
        rc = cb__dalloc(c, &c->d_found, sizeof(int32_t), err);
    if (rc) return rc;
    for (int i = 0; i < m->n_params; i++) {
        const cb_nn_param *p = &m->params[i];
        if (p->dtype != CB_NN_F32) continue;
        float *dst = (p->trainable ? c->w : c->stats) + c->poff[i];
        CB__CUDA(cudaMemcpyAsync(dst, p->data, (size_t)p->numel * sizeof(float),
                                 cudaMemcpyHostToDevice, c->stream));
    }
    for (int i = 1; i < m->n_nodes; i++)
        if (m->nodes[i].op == CB_NN_BN)
            c->nbt[i] = *(const int64_t *)m->params[m->nodes[i].param[4]].data;
    if (c->w16)
        CB__CUDA(cb__k_convert(c->w16, c->dt, c->w, CB__DT_F32, c->w_count, 1.0f, c->stream));
    CB__CUDA(cudaStreamSynchronize(c->stream));
    return CB_OK;
}

static int cb__handles(cb__cu *c, cb_error *err) {
    CB__CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    /* ev0 and ev_in are only timed, never waited on; ev1 ends every call. */
    int rc = cb__cuda_event_create(&c->ev0, CB_GPU_WAIT_SPIN, err);
    if (!rc) rc = cb__cuda_event_create(&c->ev_in, CB_GPU_WAIT_SPIN, err);
    if (!rc) rc = cb__cuda_event_create(&c->ev1, c->e->opts.gpu_wait, err);
    if (rc) return rc;
    struct cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = c->dev;
    CB__CUDA(cudaMemPoolCreate(&c->pool, &props));
    uint64_t keep = UINT64_MAX;
    CB__CUDA(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep));
    CB__CUDNN(cudnnCreate(&c->dnn));
    CB__CUDNN(cudnnSetStream(c->dnn, c->stream));
    CB__CUBLAS(cublasCreate(&c->blas));
    CB__CUBLAS(cublasSetStream(c->blas, c->stream));
    cb_nn_precision prec = c->e->opts.precision;
    int tf32 = prec == CB_NN_TF32;
    CB__CUBLAS(cublasSetMathMode(c->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    /* 16-bit GEMMs use tensor cores with CUBLAS_COMPUTE_32F whatever the math mode. */
    c->gemm_compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    c->conv_math = prec == CB_NN_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    c->dt = prec == CB_NN_BF16 ? CB__DT_BF16 : prec == CB_NN_FP16 ? CB__DT_F16 : CB__DT_F32;
    c->asz = c->dt == CB__DT_F32 ? 4 : 2;
    c->adt = c->dt == CB__DT_BF16 ? CUDNN_DATA_BFLOAT16
             : c->dt == CB__DT_F16 ? CUDNN_DATA_HALF
                                   : CUDNN_DATA_FLOAT;
    c->cdt = c->dt == CB__DT_BF16 ? CUDA_R_16BF : c->dt == CB__DT_F16 ? CUDA_R_16F : CUDA_R_32F;
    c->scale = prec == CB_NN_FP16 && c->e->opts.train ? 65536.0f : 1.0f;
    /* bf16: PyTorch runs bf16 batch norm, ReLU and pooling on its own kernels, and cuDNN's
     * legacy API may refuse them; so do we (nn_own.cu). */
    c->own = c->dt == CB__DT_BF16 || c->e->opts.cuda_own_kernels;
    CB__CUDNN(cudnnCreateActivationDescriptor(&c->relu));
    CB__CUDNN(cudnnSetActivationDescriptor(c->relu, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN,
                                           0.0));
    return CB_OK;
}

static int cb__staging(cb__cu *c, cb_error *err) {
    size_t b = (size_t)c->e->opts.batch, classes = (size_t)c->m->classes;
    int rc = cb__halloc((void **)&c->h_x, b * c->in_numel * sizeof(float), err);
    if (!rc) rc = cb__halloc((void **)&c->h_logits, b * classes * sizeof(float), err);
    if (!rc) rc = cb__halloc((void **)&c->h_labels, b * sizeof(int32_t), err);
    if (!rc) rc = cb__halloc((void **)&c->h_correct, b * sizeof(int32_t), err);
    if (!rc) rc = cb__halloc((void **)&c->h_loss, b * sizeof(double), err);
    if (!rc && c->e->opts.train && c->e->opts.input_grad)
        rc = cb__halloc((void **)&c->h_ingrad, b * c->in_numel * sizeof(float), err);
    if (!rc && c->d_found) rc = cb__halloc((void **)&c->h_found, sizeof(int32_t), err);
    if (rc) return rc;
    int nn = c->m->n_nodes;
    c->val = cb_calloc((size_t)nn, sizeof *c->val);
    c->dif = cb_calloc((size_t)nn, sizeof *c->dif);
    c->save = cb_calloc((size_t)nn, sizeof *c->save);
    if (!c->val || !c->dif || !c->save) return cb_error_set(err, CB_ENOMEM, "out of memory");
    return CB_OK;
}

static int cb__plan(cb__cu *c, int kind, int n, cb__cu_plan **out, cb_error *err);

static int cb__cu_create_impl(cb_nn_exec *e, cb__cu *c, cb_error *err) {
    cb_nn_model *m = e->model;
    cb_nn_exec_opts *o = &e->opts;
    if (m->classes != m->nodes[m->output].c)
        return cb_error_set(err, CB_EINVAL, "classes %d but the output node has %d", m->classes,
                            m->nodes[m->output].c);
    if (o->train) {
        int rc = cb__check_optim(&o->optim, err);
        if (rc) return rc;
    }
    int rc = cb__cuda_set_device(c->dev, err);
    if (!rc) rc = cb__handles(c, err);
    if (!rc) rc = cb__params_init(c, err);
    if (!rc && c->d_found) e->stats.loss_scale = c->scale;
    if (!rc) {
        c->nodes = cb_calloc((size_t)m->n_nodes, sizeof *c->nodes);
        if (!c->nodes) rc = cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    if (!rc) rc = cb__cu_nodes_init(c, err);
    if (!rc) rc = cb__staging(c, err);
    cb__cu_plan *p;
    if (!rc) rc = cb__plan(c, o->train ? CB__CU_TRAIN : CB__CU_EVAL, o->batch, &p, err);
    return rc;
}

static void cb__cu_destroy(cb_nn_exec *e) {
    cb__cu *c = e->impl;
    if (!c) return;
    cudaSetDevice(c->dev);
    if (c->stream) {
        if (c->val && c->dif && c->save) cb__cu_buffers_free(c);
        cudaStreamSynchronize(c->stream);
    }
    for (int i = 0; i < CB__CU_MAX_PLANS; i++) cb__cu_plan_free(c->plans[i]);
    cb__cu_nodes_fini(c);
    void *dev[] = {c->w, c->g, c->m1, c->m2, c->stats, c->w16, c->g16, c->d_found};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i]) cudaFree(dev[i]);
    void *host[] = {c->h_x,       c->h_logits, c->h_ingrad, c->h_labels,
                    c->h_correct, c->h_loss,   c->h_found};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        if (host[i]) cudaFreeHost(host[i]);
    if (c->relu) cudnnDestroyActivationDescriptor(c->relu);
    if (c->dnn) cudnnDestroy(c->dnn);
    if (c->blas) cublasDestroy(c->blas);
    if (c->pool) cudaMemPoolDestroy(c->pool);
    if (c->ev0) cudaEventDestroy(c->ev0);
    if (c->ev_in) cudaEventDestroy(c->ev_in);
    if (c->ev1) cudaEventDestroy(c->ev1);
    if (c->stream) cudaStreamDestroy(c->stream);
    cb_free(c->nodes);
    cb_free(c->poff);
    cb_free(c->nbt);
    cb_free(c->algo_cache);
    cb_free(c->val);
    cb_free(c->dif);
    cb_free(c->save);
    cb_free(c);
    e->impl = NULL;
}

static int cb__cu_create(cb_nn_exec *e, cb_error *err) {
    cb__cu *c = cb_calloc(1, sizeof *c);
    if (!c) return cb_error_set(err, CB_ENOMEM, "out of memory");
    e->impl = c;
    c->e = e;
    c->m = e->model;
    c->dev = e->device_index;
    c->in_numel = (size_t)c->m->in_c * c->m->in_h * c->m->in_w;
    int rc = cb__cu_create_impl(e, c, err);
    if (rc) cb_error_prefix(err, "cuda backend, model %s", c->m->arch);
    return rc; /* on failure exec.c calls destroy, which releases what was made */
}

/* ---- Plans ------------------------------------------------------------------------------ */

/* After a plan build: wait for cudnnFind's work, note the pool's high-water mark (reset after
 * every call, so it is this search's alone) as the planning peak, give the pool's memory beyond
 * the steady state's needs (the Find scratch and workspace) back to the device and reset the
 * high-water marks, so that later calls measure their own steady-state peak. Keeping the
 * steady state's bytes spares the next call a re-allocation when plans change mid-run (a
 * partial last batch). */
static int cb__plan_trim(cb__cu *c, cb_error *err) {
    CB__CUDA(cudaStreamSynchronize(c->stream));
    uint64_t high = 0;
    CB__CUDA(cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &high));
    if ((int64_t)high > c->plan_peak) c->plan_peak = (int64_t)high;
    CB__CUDA(cudaMemPoolTrimTo(c->pool, (size_t)c->steady_peak));
    uint64_t zero = 0; /* the high-water marks can only be reset to 0 */
    CB__CUDA(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &zero));
    CB__CUDA(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReservedMemHigh, &zero));
    c->e->stats.device_mem_plan_peak_bytes = c->plan_peak + c->fixed_bytes;
    return CB_OK;
}

/* The plan of (kind, n): cached, or built into a free slot, or into the least recently used
 * slot after slot 0 (the plan built at create, which stays); the pool is trimmed after a
 * build. */
static int cb__plan(cb__cu *c, int kind, int n, cb__cu_plan **out, cb_error *err) {
    int victim = -1;
    for (int i = 0; i < CB__CU_MAX_PLANS; i++) {
        cb__cu_plan *q = c->plans[i];
        if (q && q->kind == kind && q->n == n) {
            victim = i;
            break;
        }
        const cb__cu_plan *v = victim >= 0 ? c->plans[victim] : NULL;
        int older = victim < 0 || (v && (!q || q->last_use < v->last_use));
        if ((i > 0 || !q) && older) victim = i;
    }
    cb__cu_plan *p = c->plans[victim];
    if (!p || p->kind != kind || p->n != n) {
        int rc = cb__cu_plan_build(c, kind, n, &p, err);
        if (!rc) rc = cb__plan_trim(c, err);
        if (rc) {
            cb__cu_plan_free(p);
            return rc;
        }
        cb__cu_plan_free(c->plans[victim]);
        c->plans[victim] = p;
    }
    p->last_use = ++c->calls;
    *out = p;
    return CB_OK;
}

/* ---- Calls ------------------------------------------------------------------------------ */

/* One fused optimizer launch over W, G, M1, M2 (padding between tensors is 0 in W and G and
 * stays 0). fp16 first unscales G and flags inf/NaN, which makes the optimizer kernel skip the
 * step (the host then undoes opt_steps and halves the scale, after the call's sync); 16-bit
 * executors then refresh the 16-bit weight copy. */
static int cb__optimize(cb__cu *c, cb_error *err) {
    const cb_nn_optim *o = &c->e->opts.optim;
    float lr = (float)o->lr, wd = (float)o->weight_decay;
    const int32_t *skip = c->d_found;
    if (c->d_found) {
        CB__CUDA(cudaMemsetAsync(c->d_found, 0, sizeof(int32_t), c->stream));
        CB__CUDA(cb__k_unscale(c->g, c->w_count, 1.0f / c->scale, c->d_found, c->stream));
        CB__CUDA(cudaMemcpyAsync(c->h_found, c->d_found, sizeof(int32_t), cudaMemcpyDeviceToHost,
                                 c->stream));
    }
    c->opt_steps++;
    if (o->kind == CB_NN_ADAM) {
        double t = (double)c->opt_steps;
        float step = (float)(o->lr / (1 - pow(o->beta1, t)));
        float bc2 = (float)sqrt(1 - pow(o->beta2, t));
        CB__CUDA(cb__k_adam(c->w, c->g, c->m1, c->m2, c->w_count, step, bc2, (float)o->beta1,
                            (float)o->beta2, (float)o->eps, wd, skip, c->stream));
    } else {
        CB__CUDA(cb__k_sgd(c->w, c->g, c->m1, c->w_count, lr, wd, (float)o->momentum,
                           c->opt_steps == 1, o->nesterov, skip, c->stream));
    }
    if (c->w16)
        CB__CUDA(cb__k_convert(c->w16, c->dt, c->w, CB__DT_F32, c->w_count, 1.0f, c->stream));
    return CB_OK;
}

/* Everything a call enqueues: its buffers (stream-ordered allocations: host work, before the
 * start event), the start event right before the first copy to the device, the input copies,
 * the input event, forward, loss, backward, optimizer and the result copies. */
static int cb__enqueue(cb__cu *c, const cb__cu_plan *p, int has_labels, int want_logits,
                       cb_error *err) {
    const cb_nn_model *m = c->m;
    int n = p->n, train = p->kind == CB__CU_TRAIN;
    int rc = cb__cu_buffers_alloc(c, p, err);
    if (rc) return rc;
    size_t in = (size_t)n * c->in_numel;
    CB__CUDA(cudaEventRecord(c->ev0, c->stream));
    CB__CUDA(cudaMemcpyAsync(c->dt == CB__DT_F32 ? c->val[0] : (void *)c->x32, c->h_x,
                             in * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    if (has_labels)
        CB__CUDA(cudaMemcpyAsync(c->d_labels, c->h_labels, (size_t)n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, c->stream));
    CB__CUDA(cudaEventRecord(c->ev_in, c->stream));
    if (c->dt != CB__DT_F32) /* autocast: the images enter the first layer as 16-bit */
        CB__CUDA(cb__k_convert(c->val[0], c->dt, c->x32, CB__DT_F32, in, 1.0f, c->stream));
    rc = cb__cu_forward(c, p, err);
    if (rc) return rc;
    int out = c->nodes[m->output].buf;
    if (has_labels) {
        CB__CUDA(cb__k_xent(c->val[out], c->dt, c->d_labels, n, m->classes,
                            train ? c->dif[out] : NULL, c->scale, c->d_loss, c->d_correct,
                            c->stream));
        CB__CUDA(cudaMemcpyAsync(c->h_loss, c->d_loss, (size_t)n * sizeof(double),
                                 cudaMemcpyDeviceToHost, c->stream));
        CB__CUDA(cudaMemcpyAsync(c->h_correct, c->d_correct, (size_t)n * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, c->stream));
    }
    if (want_logits) {
        size_t count = (size_t)n * m->classes;
        const void *z = c->val[out];
        if (c->dt != CB__DT_F32) {
            CB__CUDA(cb__k_convert(c->f32, CB__DT_F32, z, c->dt, count, 1.0f, c->stream));
            z = c->f32;
        }
        CB__CUDA(cudaMemcpyAsync(c->h_logits, z, count * sizeof(float), cudaMemcpyDeviceToHost,
                                 c->stream));
    }
    if (!train) return CB_OK;
    rc = cb__cu_backward(c, p, err);
    if (!rc) rc = cb__optimize(c, err);
    if (rc) return rc;
    if (!c->e->opts.input_grad) return CB_OK;
    const void *dx = c->dif[0];
    if (c->dt != CB__DT_F32) { /* float32 and unscaled, as autograd returns it for x */
        CB__CUDA(cb__k_convert(c->f32, CB__DT_F32, dx, c->dt, in, 1.0f / c->scale, c->stream));
        dx = c->f32;
    }
    CB__CUDA(cudaMemcpyAsync(c->h_ingrad, dx, in * sizeof(float), cudaMemcpyDeviceToHost,
                             c->stream));
    return CB_OK;
}

static int64_t cb__mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Device time between two recorded events, in ns. */
static int cb__elapsed_ns(cudaEvent_t a, cudaEvent_t b, int64_t *ns, cb_error *err) {
    float ms = 0;
    CB__CUDA(cudaEventElapsedTime(&ms, a, b));
    *ns = (int64_t)((double)ms * 1e6 + 0.5);
    return CB_OK;
}

/* The host side of a finished train step: GradScaler.update, num_batches_tracked. */
static void cb__after_step(cb__cu *c, int n) {
    if (c->h_found) { /* GradScaler.update (growth_interval 2000, factors 2 and 0.5) */
        if (*c->h_found) {
            c->scale *= 0.5f;
            c->good_steps = 0;
            c->skipped++;
            c->opt_steps--; /* the step was skipped: no optimizer state advanced */
        } else if (++c->good_steps == 2000) {
            c->scale *= 2.0f;
            c->good_steps = 0;
        }
        c->e->stats.loss_scale = c->scale;
        c->e->stats.skipped_steps = c->skipped;
    }
    for (int i = 1; i < c->m->n_nodes; i++)
        if (c->m->nodes[i].op == CB_NN_BN && c->nodes[i].live) c->nbt[i]++;
    if (c->e->opts.input_grad) c->ingrad_n = n;
}

/* A whole call of kind on n images: labels and logits may be NULL. */
static int cb__call(cb_nn_exec *e, int kind, const float *x, const int32_t *labels, int n,
                    float *logits, cb_nn_result *r, cb_error *err) {
    cb__cu *c = e->impl;
    int rc = cb__cuda_set_device(c->dev, err);
    cb__cu_plan *p = NULL;
    if (!rc) rc = cb__plan(c, kind, n, &p, err);
    if (rc) return rc;
    int64_t t0 = cb__mono_ns();
    memcpy(c->h_x, x, (size_t)n * c->in_numel * sizeof(float));
    if (labels) memcpy(c->h_labels, labels, (size_t)n * sizeof(int32_t));
    e->stats.last_stage_in_ns = cb__mono_ns() - t0;
    rc = cb__enqueue(c, p, labels != NULL, logits != NULL, err);
    cb__cu_buffers_free(c); /* stream-ordered: after everything enqueued above */
    cudaError_t ce = cudaEventRecord(c->ev1, c->stream);
    if (ce != cudaSuccess) { /* nothing to wait on: wait for the stream itself */
        cudaStreamSynchronize(c->stream);
        return rc ? rc : cb__cuda_fail(err, ce, "cudaEventRecord", __FILE__, __LINE__);
    }
    int wrc = cb__cuda_wait(c->ev1, e->opts.gpu_wait, "the call's device work", err);
    if (rc) return rc;
    if (wrc) return wrc;
    int64_t dev_ns = 0, in_ns = 0;
    rc = cb__elapsed_ns(c->ev0, c->ev1, &dev_ns, err);
    if (!rc) rc = cb__elapsed_ns(c->ev0, c->ev_in, &in_ns, err);
    if (rc) return rc;
    e->stats.last_device_ns = dev_ns;
    e->stats.device_ns += dev_ns;
    e->stats.last_copy_in_ns = in_ns;
    e->stats.copy_in_ns += in_ns;
    /* The call's own peak, then a reset (its buffers are free again: in use is 0), so that a
     * plan built later measures only its own search. */
    uint64_t high = 0, zero = 0;
    CB__CUDA(cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &high));
    CB__CUDA(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &zero));
    if ((int64_t)high > c->steady_peak) c->steady_peak = (int64_t)high;
    e->stats.device_mem_peak_bytes = c->steady_peak + c->fixed_bytes;
    if (logits) memcpy(logits, c->h_logits, (size_t)n * c->m->classes * sizeof(float));
    if (kind == CB__CU_TRAIN) cb__after_step(c, n);
    if (r) {
        double loss = 0;
        int64_t correct = 0;
        for (int i = 0; i < n; i++) {
            loss += c->h_loss[i];
            correct += c->h_correct[i];
        }
        r->loss = loss / n;
        r->correct = correct;
        r->n = n;
    }
    return CB_OK;
}

static int cb__cu_forward_call(cb_nn_exec *e, const float *x, int n, float *logits,
                               cb_error *err) {
    return cb__call(e, CB__CU_EVAL, x, NULL, n, logits, NULL, err);
}

static int cb__cu_eval(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                       cb_nn_result *r, cb_error *err) {
    return cb__call(e, CB__CU_EVAL, x, labels, n, NULL, r, err);
}

static int cb__cu_train_step(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                             cb_nn_result *r, cb_error *err) {
    return cb__call(e, CB__CU_TRAIN, x, labels, n, NULL, r, err);
}

/* ---- Sync and gradients ----------------------------------------------------------------- */

/* Waits, as opts.gpu_wait says, for everything enqueued on the executor's stream. */
static int cb__finish(cb__cu *c, const char *what, cb_error *err) {
    CB__CUDA(cudaEventRecord(c->ev1, c->stream));
    return cb__cuda_wait(c->ev1, c->e->opts.gpu_wait, what, err);
}

static int cb__cu_sync(cb_nn_exec *e, cb_error *err) {
    cb__cu *c = e->impl;
    cb_nn_model *m = c->m;
    if (!e->opts.train) return CB_OK; /* inference never changes what it read */
    int rc = cb__cuda_set_device(c->dev, err);
    if (rc) return rc;
    for (int i = 0; i < m->n_params; i++) {
        cb_nn_param *p = &m->params[i];
        if (p->dtype != CB_NN_F32) continue;
        const float *src = (p->trainable ? c->w : c->stats) + c->poff[i];
        CB__CUDA(cudaMemcpyAsync(p->data, src, (size_t)p->numel * sizeof(float),
                                 cudaMemcpyDeviceToHost, c->stream));
    }
    rc = cb__finish(c, "the weights' copy to the host", err);
    if (rc) return rc;
    for (int i = 1; i < m->n_nodes; i++)
        if (m->nodes[i].op == CB_NN_BN)
            *(int64_t *)m->params[m->nodes[i].param[4]].data = c->nbt[i];
    return CB_OK;
}

static int cb__cu_grad(cb_nn_exec *e, const char *name, float *out, size_t count,
                       cb_error *err) {
    cb__cu *c = e->impl;
    cb_nn_model *m = c->m;
    if (!name) {
        if (!e->opts.input_grad)
            return cb_error_set(err, CB_EINVAL,
                                "input gradient: the executor was created without input_grad");
        if (c->ingrad_n == 0)
            return cb_error_set(err, CB_EINVAL, "input gradient: no train step yet");
        size_t need = (size_t)c->ingrad_n * c->in_numel;
        if (count != need)
            return cb_error_set(err, CB_EINVAL, "input gradient has %zu values, not %zu", need,
                                count);
        memcpy(out, c->h_ingrad, need * sizeof(float));
        return CB_OK;
    }
    cb_nn_param *p = NULL; /* by name (the module cannot call colobench_lib's lookup) */
    for (int i = 0; i < m->n_params && !p; i++)
        if (strcmp(m->params[i].name, name) == 0) p = &m->params[i];
    if (!p) return cb_error_set(err, CB_ENOENT, "no parameter named \"%s\"", name);
    if (!p->trainable || p->dtype != CB_NN_F32)
        return cb_error_set(err, CB_EINVAL, "%s is not trainable: it has no gradient", name);
    if (count != (size_t)p->numel)
        return cb_error_set(err, CB_EINVAL, "%s has %lld values, not %zu", name,
                            (long long)p->numel, count);
    int rc = cb__cuda_set_device(c->dev, err);
    if (rc) return rc;
    CB__CUDA(cudaMemcpyAsync(out, c->g + c->poff[p - m->params], count * sizeof(float),
                             cudaMemcpyDeviceToHost, c->stream));
    return cb__finish(c, "the gradient's copy to the host", err);
}

const cb_nn_backend cb__cuda_nn_backend = {
    .name = "cuda",
    .create = cb__cu_create,
    .destroy = cb__cu_destroy,
    .forward = cb__cu_forward_call,
    .eval = cb__cu_eval,
    .train_step = cb__cu_train_step,
    .sync = cb__cu_sync,
    .grad = cb__cu_grad,
};
