/* cuda/nn_layers.c - the CUDA backend's layers: node descriptors, plans (tensor descriptors and
 * convolution algorithms for one kind and n), the call's buffers from the executor's pool, and
 * the forward and backward of every op (see nn_cuda.h for the design).
 *
 * Ops and their calls:
 *   CONV     cudnnConvolutionForward (+ cudnnAddTensor for the bias); backward
 *            cudnnConvolutionBackwardFilter, cudnnConvolutionBackwardBias and
 *            cudnnConvolutionBackwardData (skipped when the input needs no gradient)
 *   BN       cudnnBatchNormalizationForwardTraining (batch statistics; updates the running
 *            statistics with factor = momentum and the unbiased variance, as PyTorch) or
 *            ...ForwardInference (running statistics); backward cudnnBatchNormalizationBackward
 *            with the mean and inverse std saved by the forward
 *   RELU     cudnnActivationForward/Backward (CUDNN_ACTIVATION_RELU)
 *   MAXPOOL  cudnnPoolingForward/Backward (CUDNN_POOLING_MAX_DETERMINISTIC; padding never wins)
 *   AVGPOOL  the same with CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING (count_include_pad)
 *   ADD      cb__k_add; backward cb__k_accum into both inputs' gradients
 *   FLATTEN  nothing: the flatten's value and gradient are its input's bytes
 *   LINEAR   cublasGemmEx (+ cb__k_bias_rows); backward two GEMMs and cb__k_colsum
 *
 * Gradients of a value with several consumers (the residual branches of a ResNet) are summed in
 * place: the plan walks the graph backward once at build time and records, for every edge,
 * whether the consumer's backward is the first to write the producer's gradient (beta 0) or
 * adds to it (beta 1, cuDNN's blending or cb__k_accum's flag).
 *
 * Algorithm choice happens once per layer shape, cached in the executor (key: n, input shape,
 * filter, stride, pad, and whether backward algorithms are needed). With cudnn_benchmark the
 * cudnnFind*AlgorithmEx calls time every algorithm on scratch buffers from the pool (they
 * overwrite nothing the executor keeps); otherwise the _v7 heuristic's first algorithm that
 * cuDNN reports as usable with a workspace of at most CB_NN_CUDA_WS_MAX_BYTES is taken (as
 * PyTorch's heuristic path skips algorithms whose workspace it cannot allocate). Either way the
 * executor trims its pool after the plan is built (nn_backend.c).
 *
 * Mixed precision (bf16, fp16): every activation and activation gradient, the filters and the
 * GEMM inputs are 16-bit (cuDNN descriptors of c->adt, cuBLAS types c->cdt) and read the 16-bit
 * weight copy; accumulation is float32 (convolution compute type CUDNN_DATA_FLOAT, cuBLAS
 * CUBLAS_COMPUTE_32F). BN keeps float32 scale, bias and statistics (cuDNN's rule for 16-bit
 * x/y). A convolution's filter gradient comes out 16-bit and is converted into float32 G (as
 * autocast's cast backward does); linear weight gradients are written float32 by the GEMM;
 * biases are added and reduced by our kernels (float32 bias, 16-bit activations).
 *
 * Batch norm, ReLU and pooling of bf16 executors (and of any executor with opts.cuda_own_kernels,
 * which tests use to check them against the CPU at fp32) run on our own kernels (nn_own.cu)
 * with the same semantics: PyTorch never sends bf16 batch norm to cuDNN, and cuDNN's legacy
 * API may refuse bf16 there.
 *
 * The legacy cuDNN API used here is deprecated in cuDNN 9 but complete and supported; the
 * deprecation warnings are silenced for this file only.
 */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "cuda/nn_cuda.h"
#include "cuda/nn_own.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static const float cb__one = 1.0f, cb__zero = 0.0f;

#define CB__BETA(flag) ((flag) ? &cb__one : &cb__zero)

const char *cb__cu_node_name(const cb_nn_model *m, int node, char *buf, size_t size) {
    if (m->nodes[node].name[0]) return m->nodes[node].name;
    snprintf(buf, size, "node %d", node);
    return buf;
}

/* ---- Nodes ------------------------------------------------------------------------------ */

int cb__cu_nodes_init(cb__cu *c, cb_error *err) {
    const cb_nn_model *m = c->m;
    int train = c->e->opts.train;
    for (int i = 0; i < m->n_nodes; i++) {
        cb__cu_node *cn = &c->nodes[i];
        cn->buf = i;
        cn->w_off = cn->b_off = cn->rm_off = cn->rv_off = CB__CU_NONE;
    }
    c->nodes[m->output].live = 1;
    for (int i = m->output; i > 0; i--) {
        if (!c->nodes[i].live) continue;
        for (int k = 0; k < 2; k++)
            if (m->nodes[i].in[k] >= 0) c->nodes[m->nodes[i].in[k]].live = 1;
    }
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        cb__cu_node *cn = &c->nodes[i];
        if (nd->op == CB_NN_FLATTEN) cn->buf = c->nodes[nd->in[0]].buf;
        if (!cn->live) continue;
        /* Every live value gets a gradient in training; the input only for input_grad, or when
         * a BN reads it directly (cuDNN's BN backward always writes dx). */
        if (train && cn->buf == i) cn->has_diff = 1;
        if (train && nd->in[0] == 0 && nd->op == CB_NN_BN) c->nodes[0].has_diff = 1;
        if (nd->param[0] >= 0) cn->w_off = c->poff[nd->param[0]];
        if (nd->param[1] >= 0) cn->b_off = c->poff[nd->param[1]];
        const cb_nn_node *in = &m->nodes[nd->in[0]];
        switch (nd->op) {
        case CB_NN_CONV:
            CB__CUDNN(cudnnCreateFilterDescriptor(&cn->filt));
            CB__CUDNN(cudnnSetFilter4dDescriptor(cn->filt, c->adt, CUDNN_TENSOR_NCHW,
                                                 nd->c, in->c, nd->kh, nd->kw));
            CB__CUDNN(cudnnCreateConvolutionDescriptor(&cn->conv));
            CB__CUDNN(cudnnSetConvolution2dDescriptor(cn->conv, nd->ph, nd->pw, nd->sh, nd->sw,
                                                      1, 1, CUDNN_CROSS_CORRELATION,
                                                      CUDNN_DATA_FLOAT));
            CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, c->conv_math));
            if (nd->param[1] >= 0) {
                CB__CUDNN(cudnnCreateTensorDescriptor(&cn->chan));
                CB__CUDNN(cudnnSetTensor4dDescriptor(cn->chan, CUDNN_TENSOR_NCHW,
                                                     CUDNN_DATA_FLOAT, 1, nd->c, 1, 1));
            }
            break;
        case CB_NN_BN:
            if (!(nd->eps >= CUDNN_BN_MIN_EPSILON))
                return cb_error_set(err, CB_EUNSUPPORTED, "%s: eps %g is below cuDNN's minimum "
                                    "%g", nd->name, (double)nd->eps, CUDNN_BN_MIN_EPSILON);
            cn->rm_off = c->poff[nd->param[2]];
            cn->rv_off = c->poff[nd->param[3]];
            CB__CUDNN(cudnnCreateTensorDescriptor(&cn->chan));
            CB__CUDNN(cudnnSetTensor4dDescriptor(cn->chan, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                 1, nd->c, 1, 1));
            break;
        case CB_NN_MAXPOOL:
        case CB_NN_AVGPOOL:
            CB__CUDNN(cudnnCreatePoolingDescriptor(&cn->pool));
            CB__CUDNN(cudnnSetPooling2dDescriptor(
                cn->pool,
                nd->op == CB_NN_MAXPOOL ? CUDNN_POOLING_MAX_DETERMINISTIC
                                        : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
                CUDNN_PROPAGATE_NAN, nd->kh, nd->kw, nd->ph, nd->pw, nd->sh, nd->sw));
            break;
        case CB_NN_LINEAR:
            if (in->h != 1 || in->w != 1)
                return cb_error_set(err, CB_EINVAL, "%s: linear input is [%d, %d, %d], not "
                                    "[F, 1, 1]", nd->name, in->c, in->h, in->w);
            break;
        default: break;
        }
    }
    if (train && c->e->opts.input_grad) c->nodes[0].has_diff = 1;
    return CB_OK;
}

void cb__cu_nodes_fini(cb__cu *c) {
    if (!c->nodes) return;
    for (int i = 0; i < c->m->n_nodes; i++) {
        cb__cu_node *cn = &c->nodes[i];
        if (cn->filt) cudnnDestroyFilterDescriptor(cn->filt);
        if (cn->conv) cudnnDestroyConvolutionDescriptor(cn->conv);
        if (cn->chan) cudnnDestroyTensorDescriptor(cn->chan);
        if (cn->pool) cudnnDestroyPoolingDescriptor(cn->pool);
    }
}

/* ---- Convolution algorithms ------------------------------------------------------------- */

/* The first algorithm of a cuDNN perf array (fastest first for cudnnFind, best first for the
 * _v7 heuristic) that cuDNN reports as usable with a workspace of at most
 * CB_NN_CUDA_WS_MAX_BYTES (the heuristic ranks by expected speed whatever the memory: its first
 * may want gigabytes per call), into `out`; s becomes NOT_SUPPORTED when none. */
#define CB__FIRST_OK(perf, got, s, out, math)                                                      \
    do {                                                                                           \
        int k_ = 0;                                                                                \
        while ((s) == CUDNN_STATUS_SUCCESS && k_ < (got) &&                                        \
               ((perf)[k_].status != CUDNN_STATUS_SUCCESS ||                                       \
                (perf)[k_].memory > CB_NN_CUDA_WS_MAX_BYTES))                                      \
            k_++;                                                                                  \
        if ((s) == CUDNN_STATUS_SUCCESS && k_ == (got)) (s) = CUDNN_STATUS_NOT_SUPPORTED;          \
        if ((s) == CUDNN_STATUS_SUCCESS) {                                                         \
            (out) = (perf)[k_].algo;                                                               \
            (math) = (perf)[k_].mathType;                                                          \
        }                                                                                          \
    } while (0)

/* Largest workspace any algorithm of the three kinds may ask for on this layer (cudnnFind's
 * scratch), capped at 1 GiB; algorithms cuDNN cannot run here are skipped. */
static size_t cb__find_ws(cb__cu *c, cudnnTensorDescriptor_t xd, cudnnFilterDescriptor_t wd,
                          cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd, int bwd) {
    size_t best = 0, s;
    for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; a++)
        if (cudnnGetConvolutionForwardWorkspaceSize(c->dnn, xd, wd, cd, yd,
                                                    (cudnnConvolutionFwdAlgo_t)a, &s) ==
                CUDNN_STATUS_SUCCESS && s > best)
            best = s;
    for (int a = 0; bwd && a < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT; a++)
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, wd, yd, cd, xd,
                                                         (cudnnConvolutionBwdDataAlgo_t)a, &s) ==
                CUDNN_STATUS_SUCCESS && s > best)
            best = s;
    for (int a = 0; bwd && a < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT; a++)
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(
                c->dnn, xd, yd, cd, wd, (cudnnConvolutionBwdFilterAlgo_t)a, &s) ==
                CUDNN_STATUS_SUCCESS && s > best)
            best = s;
    return best < CB_NN_CUDA_WS_MAX_BYTES ? best : CB_NN_CUDA_WS_MAX_BYTES;
}

/* cudnnFind*AlgorithmEx for one layer: scratch x, y, w (and dx, dw: the same buffers, the
 * results are thrown away) and workspace from the pool, freed stream-ordered afterwards. */
static int cb__find(cb__cu *c, const cb_nn_node *nd, const cb__cu_node *cn,
                    cudnnTensorDescriptor_t xd, cudnnTensorDescriptor_t yd, size_t x_bytes,
                    size_t y_bytes, size_t w_bytes, int needs, cb__cu_algos *a, cb_error *err) {
    void *x = NULL, *y = NULL, *w = NULL, *ws = NULL;
    size_t ws_bytes = cb__find_ws(c, xd, cn->filt, cn->conv, yd, needs);
    int rc = CB_OK, got = 0;
    cudaError_t ce = cudaMallocFromPoolAsync(&x, x_bytes, c->pool, c->stream);
    if (ce == cudaSuccess) ce = cudaMallocFromPoolAsync(&y, y_bytes, c->pool, c->stream);
    if (ce == cudaSuccess) ce = cudaMallocFromPoolAsync(&w, w_bytes, c->pool, c->stream);
    if (ce == cudaSuccess && ws_bytes)
        ce = cudaMallocFromPoolAsync(&ws, ws_bytes, c->pool, c->stream);
    if (ce != cudaSuccess) rc = cb__cuda_fail(err, ce, "cudaMallocFromPoolAsync (cudnnFind "
                                              "scratch)", __FILE__, __LINE__);
    /* The buffers' contents are whatever the pool held: timing needs no values, and the
     * outputs are discarded. */
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    const char *call = "";
    if (!rc) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        call = "cudnnFindConvolutionForwardAlgorithmEx";
        s = cudnnFindConvolutionForwardAlgorithmEx(c->dnn, xd, x, cn->filt, w, cn->conv, yd, y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf,
                                                   ws, ws_bytes);
        CB__FIRST_OK(perf, got, s, a->fwd, a->fwd_math);
    }
    if (!rc && s == CUDNN_STATUS_SUCCESS && (needs & 2)) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        call = "cudnnFindConvolutionBackwardDataAlgorithmEx";
        s = cudnnFindConvolutionBackwardDataAlgorithmEx(c->dnn, cn->filt, w, yd, y, cn->conv, xd,
                                                        x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                        &got, perf, ws, ws_bytes);
        CB__FIRST_OK(perf, got, s, a->bwd_data, a->bwd_data_math);
    }
    if (!rc && s == CUDNN_STATUS_SUCCESS && (needs & 1)) {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        call = "cudnnFindConvolutionBackwardFilterAlgorithmEx";
        s = cudnnFindConvolutionBackwardFilterAlgorithmEx(
            c->dnn, xd, x, yd, y, cn->conv, cn->filt, w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
            &got, perf, ws, ws_bytes);
        CB__FIRST_OK(perf, got, s, a->bwd_filter, a->bwd_filter_math);
    }
    if (!rc && s != CUDNN_STATUS_SUCCESS) {
        rc = cb__cudnn_fail(err, s, call, __FILE__, __LINE__);
        cb_error_prefix(err, "%s", nd->name);
    }
    void *bufs[4] = {x, y, w, ws};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) cudaFreeAsync(bufs[i], c->stream);
    return rc;
}

/* The _v7 heuristic's first usable algorithm of each kind. */
static int cb__heuristic(cb__cu *c, const cb__cu_node *cn, cudnnTensorDescriptor_t xd,
                         cudnnTensorDescriptor_t yd, int needs, cb__cu_algos *a, cb_error *err) {
    int got = 0;
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CB__CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, xd, cn->filt, cn->conv, yd,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, pf));
    CB__FIRST_OK(pf, got, s, a->fwd, a->fwd_math);
    if (s == CUDNN_STATUS_SUCCESS && (needs & 2)) {
        cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        CB__CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            c->dnn, cn->filt, yd, cn->conv, xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, pd));
        CB__FIRST_OK(pd, got, s, a->bwd_data, a->bwd_data_math);
    }
    if (s == CUDNN_STATUS_SUCCESS && (needs & 1)) {
        cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        CB__CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            c->dnn, xd, yd, cn->conv, cn->filt, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got,
            pw));
        CB__FIRST_OK(pw, got, s, a->bwd_filter, a->bwd_filter_math);
    }
    if (s != CUDNN_STATUS_SUCCESS)
        return cb_error_set(err, CB_EUNSUPPORTED, "the cuDNN heuristic offers no usable "
                            "algorithm for this convolution");
    return CB_OK;
}

/* Algorithms for conv node i in plan p (cached by shape), and their workspace. */
static int cb__algos(cb__cu *c, cb__cu_plan *p, int i, cb_error *err) {
    const cb_nn_model *m = c->m;
    const cb_nn_node *nd = &m->nodes[i], *in = &m->nodes[nd->in[0]];
    const cb__cu_node *cn = &c->nodes[i];
    /* needs: 1 backward filter, 2 backward data. */
    int needs = p->kind == CB__CU_TRAIN ? 1 | (c->nodes[c->nodes[nd->in[0]].buf].has_diff ? 2 : 0)
                                        : 0;
    int key[12] = {p->n, in->c, in->h, in->w, nd->c, nd->kh, nd->kw, nd->sh, nd->sw, nd->ph,
                   nd->pw, needs};
    for (int k = 0; k < c->n_algo; k++)
        if (memcmp(c->algo_cache[k].key, key, sizeof key) == 0) {
            p->algos[i] = c->algo_cache[k].a;
            return CB_OK;
        }
    cudnnTensorDescriptor_t xd = p->desc[nd->in[0]], yd = p->desc[i];
    cb__cu_algos a = {0};
    size_t x_bytes = (size_t)p->n * in->c * in->h * in->w * c->asz;
    size_t y_bytes = (size_t)p->n * nd->c * nd->h * nd->w * c->asz;
    size_t w_bytes = (size_t)nd->c * in->c * nd->kh * nd->kw * c->asz;
    int rc = c->e->opts.cudnn_benchmark
                 ? cb__find(c, nd, cn, xd, yd, x_bytes, y_bytes, w_bytes, needs, &a, err)
                 : cb__heuristic(c, cn, xd, yd, needs, &a, err);
    if (rc) return rc;
    if (c->conv_math == CUDNN_FMA_MATH) /* fp32: never a tensor-op (TF32) algorithm */
        a.fwd_math = a.bwd_data_math = a.bwd_filter_math = CUDNN_FMA_MATH;
    size_t s = 0;
    CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, a.fwd_math));
    CB__CUDNN(cudnnGetConvolutionForwardWorkspaceSize(c->dnn, xd, cn->filt, cn->conv, yd, a.fwd,
                                                      &s));
    a.ws_bytes = s;
    if (needs & 2) {
        CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, a.bwd_data_math));
        CB__CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, cn->filt, yd, cn->conv, xd,
                                                               a.bwd_data, &s));
        if (s > a.ws_bytes) a.ws_bytes = s;
    }
    if (needs & 1) {
        CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, a.bwd_filter_math));
        CB__CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(c->dnn, xd, yd, cn->conv,
                                                                 cn->filt, a.bwd_filter, &s));
        if (s > a.ws_bytes) a.ws_bytes = s;
    }
    /* Back to the executor's math type: the next layer shape's search starts from it. */
    CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, c->conv_math));
    if (c->n_algo == c->cap_algo) {
        int cap = c->cap_algo ? 2 * c->cap_algo : 32;
        cb__cu_algo_entry *grown = cb_realloc(c->algo_cache, (size_t)cap * sizeof *grown);
        if (!grown) return cb_error_set(err, CB_ENOMEM, "out of memory");
        c->algo_cache = grown;
        c->cap_algo = cap;
    }
    memcpy(c->algo_cache[c->n_algo].key, key, sizeof key);
    c->algo_cache[c->n_algo++].a = a;
    p->algos[i] = a;
    return CB_OK;
}

/* ---- Plans ------------------------------------------------------------------------------ */

void cb__cu_plan_free(cb__cu_plan *p) {
    if (!p) return;
    if (p->desc) {
        for (int i = 0; p->desc && i < p->n_desc; i++)
            if (p->desc[i]) cudnnDestroyTensorDescriptor(p->desc[i]);
    }
    cb_free(p->desc);
    cb_free(p->algos);
    cb_free(p->beta);
    cb_free(p);
}

/* Checks cuDNN's idea of a conv/pool output shape against the graph's. */
static int cb__check_shape(const cb__cu_plan *p, const cb_nn_node *nd, int on, int oc, int oh,
                           int ow, cb_error *err) {
    if (on == p->n && oc == nd->c && oh == nd->h && ow == nd->w) return CB_OK;
    return cb_error_set(err, CB_EINVAL, "%s: cuDNN computes an output of [%d, %d, %d, %d], the "
                        "graph says [%d, %d, %d, %d]", nd->name[0] ? nd->name : "pooling", on, oc,
                        oh, ow, p->n, nd->c, nd->h, nd->w);
}

static int cb__plan_fill(cb__cu *c, cb__cu_plan *p, cb_error *err) {
    const cb_nn_model *m = c->m;
    char nm[CB_NN_NAME_MAX + 16];
    for (int i = 0; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        int ch = i == 0 ? m->in_c : nd->c, h = i == 0 ? m->in_h : nd->h,
            w = i == 0 ? m->in_w : nd->w;
        CB__CUDNN(cudnnCreateTensorDescriptor(&p->desc[i]));
        CB__CUDNN(cudnnSetTensor4dDescriptor(p->desc[i], CUDNN_TENSOR_NCHW, c->adt,
                                             p->n, ch, h, w));
    }
    for (int i = 1; i < m->n_nodes; i++) {
        const cb_nn_node *nd = &m->nodes[i];
        const cb__cu_node *cn = &c->nodes[i];
        if (!cn->live) continue;
        int on, oc, oh, ow;
        if (nd->op == CB_NN_CONV) {
            CB__CUDNN(cudnnGetConvolution2dForwardOutputDim(cn->conv, p->desc[nd->in[0]],
                                                            cn->filt, &on, &oc, &oh, &ow));
            int rc = cb__check_shape(p, nd, on, oc, oh, ow, err);
            if (!rc) rc = cb__algos(c, p, i, err);
            if (rc) {
                cb_error_prefix(err, "%s", cb__cu_node_name(m, i, nm, sizeof nm));
                return rc;
            }
            if (p->algos[i].ws_bytes > p->ws_bytes) p->ws_bytes = p->algos[i].ws_bytes;
        } else if (nd->op == CB_NN_MAXPOOL || nd->op == CB_NN_AVGPOOL) {
            CB__CUDNN(cudnnGetPooling2dForwardOutputDim(cn->pool, p->desc[nd->in[0]], &on, &oc,
                                                        &oh, &ow));
            int rc = cb__check_shape(p, nd, on, oc, oh, ow, err);
            if (rc) return rc;
        }
    }
    if (p->kind != CB__CU_TRAIN) return CB_OK;
    /* Backward order: which consumer writes a gradient first (beta 0), which add (beta 1). The
     * loss writes the output's gradient. */
    unsigned char *written = cb_calloc((size_t)m->n_nodes, 1);
    if (!written) return cb_error_set(err, CB_ENOMEM, "out of memory");
    written[c->nodes[m->output].buf] = 1;
    for (int i = m->output; i > 0; i--) {
        const cb_nn_node *nd = &m->nodes[i];
        if (!c->nodes[i].live || nd->op == CB_NN_FLATTEN) continue;
        for (int k = 0; k < 2; k++) {
            if (nd->in[k] < 0) continue;
            int b = c->nodes[nd->in[k]].buf;
            if (!c->nodes[b].has_diff) continue;
            p->beta[2 * i + k] = written[b];
            written[b] = 1;
        }
    }
    cb_free(written);
    return CB_OK;
}

int cb__cu_plan_build(cb__cu *c, int kind, int n, cb__cu_plan **out, cb_error *err) {
    *out = NULL;
    int nn = c->m->n_nodes;
    cb__cu_plan *p = cb_calloc(1, sizeof *p);
    if (!p) return cb_error_set(err, CB_ENOMEM, "out of memory");
    p->kind = kind;
    p->n = n;
    p->n_desc = nn;
    p->desc = cb_calloc((size_t)nn, sizeof *p->desc);
    p->algos = cb_calloc((size_t)nn, sizeof *p->algos);
    p->beta = cb_calloc((size_t)nn * 2, 1);
    if (!p->desc || !p->algos || !p->beta) {
        cb__cu_plan_free(p);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    int rc = cb__plan_fill(c, p, err);
    if (rc) {
        cb__cu_plan_free(p);
        return rc;
    }
    *out = p;
    return CB_OK;
}

/* ---- Call buffers ----------------------------------------------------------------------- */

static int cb__palloc(cb__cu *c, void **ptr, size_t bytes, cb_error *err) {
    CB__CUDA(cudaMallocFromPoolAsync(ptr, bytes, c->pool, c->stream));
    return CB_OK;
}

static size_t cb__value_bytes(const cb__cu *c, int i, int n) {
    const cb_nn_model *m = c->m;
    const cb_nn_node *nd = &m->nodes[i];
    size_t per = i == 0 ? c->in_numel : (size_t)nd->c * nd->h * nd->w;
    return (size_t)n * per * c->asz;
}

int cb__cu_buffers_alloc(cb__cu *c, const cb__cu_plan *p, cb_error *err) {
    const cb_nn_model *m = c->m;
    int train = p->kind == CB__CU_TRAIN, rc = CB_OK;
    for (int i = 0; !rc && i < m->n_nodes; i++) {
        const cb__cu_node *cn = &c->nodes[i];
        if ((!cn->live && i != 0) || cn->buf != i) continue;
        size_t bytes = cb__value_bytes(c, i, p->n);
        rc = cb__palloc(c, &c->val[i], bytes, err);
        if (!rc && train && cn->has_diff) rc = cb__palloc(c, &c->dif[i], bytes, err);
        if (!rc && train && m->nodes[i].op == CB_NN_BN)
            rc = cb__palloc(c, (void **)&c->save[i],
                            2 * cb__cu_bn_stride(m->nodes[i].c) * sizeof(float), err);
    }
    if (!rc && p->ws_bytes) rc = cb__palloc(c, &c->ws, p->ws_bytes, err);
    if (!rc && c->dt != CB__DT_F32) {
        size_t in = (size_t)p->n * c->in_numel, f = (size_t)p->n * m->classes;
        if (train && c->e->opts.input_grad && in > f) f = in;
        rc = cb__palloc(c, (void **)&c->x32, in * sizeof(float), err);
        if (!rc) rc = cb__palloc(c, (void **)&c->f32, f * sizeof(float), err);
    }
    if (!rc) rc = cb__palloc(c, (void **)&c->d_labels, (size_t)p->n * sizeof(int32_t), err);
    if (!rc) rc = cb__palloc(c, (void **)&c->d_correct, (size_t)p->n * sizeof(int32_t), err);
    if (!rc) rc = cb__palloc(c, (void **)&c->d_loss, (size_t)p->n * sizeof(double), err);
    return rc;
}

static void cb__pfree(cb__cu *c, void **ptr) {
    if (*ptr) cudaFreeAsync(*ptr, c->stream);
    *ptr = NULL;
}

void cb__cu_buffers_free(cb__cu *c) {
    for (int i = 0; i < c->m->n_nodes; i++) {
        cb__pfree(c, &c->val[i]);
        cb__pfree(c, &c->dif[i]);
        cb__pfree(c, (void **)&c->save[i]);
    }
    cb__pfree(c, &c->ws);
    cb__pfree(c, (void **)&c->x32);
    cb__pfree(c, (void **)&c->f32);
    cb__pfree(c, (void **)&c->d_labels);
    cb__pfree(c, (void **)&c->d_correct);
    cb__pfree(c, (void **)&c->d_loss);
}

/* ---- Forward ---------------------------------------------------------------------------- */

const void *cb__cu_wconv(const cb__cu *c, size_t off) {
    if (c->dt == CB__DT_F32) return c->w + off;
    return (const char *)c->w16 + off * c->asz;
}

/* y[n, out] = x[n, in] W[out, in]^T, row-major, as cuBLAS's column-major
 * Y^T[out, n] = op_T(W_cm[in, out]) X_cm[in, n]. */
static int cb__linear_fwd(cb__cu *c, int i, int n, const void *x, void *y, cb_error *err) {
    const cb_nn_node *nd = &c->m->nodes[i];
    const cb__cu_node *cn = &c->nodes[i];
    int in = c->m->nodes[nd->in[0]].c, out = nd->c;
    CB__CUBLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &cb__one,
                            cb__cu_wconv(c, cn->w_off), c->cdt, in, x, c->cdt, in, &cb__zero, y,
                            c->cdt, out, c->gemm_compute, CUBLAS_GEMM_DEFAULT));
    if (cn->b_off != CB__CU_NONE)
        CB__CUDA(cb__k_bias_rows(y, c->dt, c->w + cn->b_off, n, out, c->stream));
    return CB_OK;
}

/* Channels, height and width of node i's value (node 0: the model's input). */
static void cb__dims(const cb_nn_model *m, int i, int *ch, int *h, int *w) {
    *ch = i == 0 ? m->in_c : m->nodes[i].c;
    *h = i == 0 ? m->in_h : m->nodes[i].h;
    *w = i == 0 ? m->in_w : m->nodes[i].w;
}

/* BN, ReLU and pooling on our own kernels (c->own: bf16 executors, or tests): the forward
 * (bwd 0: x -> y), or the backward (bwd 1: dy -> dx, added into dx when accum). */
static int cb__own_op(cb__cu *c, const cb__cu_plan *p, int i, int bwd, const void *x, void *y,
                      const void *dy, void *dx, int accum, cb_error *err) {
    const cb_nn_node *nd = &c->m->nodes[i];
    const cb__cu_node *cn = &c->nodes[i];
    int ic, ih, iw;
    cb__dims(c->m, nd->in[0], &ic, &ih, &iw);
    int hw = nd->h * nd->w, max = nd->op == CB_NN_MAXPOOL;
    size_t count = (size_t)p->n * nd->c * hw;
    float *save = c->save[i], *invstd = save ? save + cb__cu_bn_stride(nd->c) : NULL;
    const float *gamma = c->w + cn->w_off, *beta = c->w + cn->b_off;
    if (nd->op == CB_NN_BN && bwd)
        CB__CUDA(cb__k_bn_bwd(x, dy, dx, c->dt, p->n, nd->c, hw, gamma, save, invstd,
                              c->g + cn->w_off, c->g + cn->b_off, accum, c->stream));
    else if (nd->op == CB_NN_BN && p->kind == CB__CU_TRAIN)
        CB__CUDA(cb__k_bn_train_fwd(x, y, c->dt, p->n, nd->c, hw, gamma, beta, nd->momentum,
                                    nd->eps, c->stats + cn->rm_off, c->stats + cn->rv_off, save,
                                    invstd, c->stream));
    else if (nd->op == CB_NN_BN)
        CB__CUDA(cb__k_bn_infer_fwd(x, y, c->dt, p->n, nd->c, hw, gamma, beta,
                                    c->stats + cn->rm_off, c->stats + cn->rv_off, nd->eps,
                                    c->stream));
    else if (nd->op == CB_NN_RELU && bwd)
        CB__CUDA(dx ? cb__k_relu_bwd(y, dy, dx, c->dt, count, accum, c->stream) : cudaSuccess);
    else if (nd->op == CB_NN_RELU)
        CB__CUDA(cb__k_relu_fwd(x, y, c->dt, count, c->stream));
    else if (bwd) /* pooling */
        CB__CUDA(dx ? cb__k_pool_bwd(x, dy, dx, c->dt, max, p->n, ic, ih, iw, nd->h, nd->w,
                                     nd->kh, nd->kw, nd->sh, nd->sw, nd->ph, nd->pw, accum,
                                     c->stream)
                    : cudaSuccess);
    else
        CB__CUDA(cb__k_pool_fwd(x, y, c->dt, max, p->n, ic, ih, iw, nd->h, nd->w, nd->kh, nd->kw,
                                nd->sh, nd->sw, nd->ph, nd->pw, c->stream));
    return CB_OK;
}

static int cb__is_own_op(const cb__cu *c, int op) {
    return c->own &&
           (op == CB_NN_BN || op == CB_NN_RELU || op == CB_NN_MAXPOOL || op == CB_NN_AVGPOOL);
}

static int cb__node_fwd(cb__cu *c, const cb__cu_plan *p, int i, cb_error *err) {
    const cb_nn_node *nd = &c->m->nodes[i];
    const cb__cu_node *cn = &c->nodes[i];
    int a = nd->in[0];
    void *x = c->val[c->nodes[a].buf], *y = c->val[cn->buf];
    cudnnTensorDescriptor_t xd = p->desc[a], yd = p->desc[i];
    if (cb__is_own_op(c, nd->op)) return cb__own_op(c, p, i, 0, x, y, NULL, NULL, 0, err);
    switch (nd->op) {
    case CB_NN_CONV:
        CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, p->algos[i].fwd_math));
        CB__CUDNN(cudnnConvolutionForward(c->dnn, &cb__one, xd, x, cn->filt,
                                          cb__cu_wconv(c, cn->w_off), cn->conv, p->algos[i].fwd,
                                          c->ws, p->ws_bytes, &cb__zero, yd, y));
        if (cn->b_off == CB__CU_NONE) return CB_OK;
        if (c->dt == CB__DT_F32)
            CB__CUDNN(cudnnAddTensor(c->dnn, &cb__one, cn->chan, c->w + cn->b_off, &cb__one, yd,
                                     y));
        else /* float32 bias onto 16-bit output */
            CB__CUDA(cb__k_bias_chan(y, c->dt, c->w + cn->b_off, p->n, nd->c, nd->h * nd->w,
                                     c->stream));
        return CB_OK;
    case CB_NN_BN:
        if (p->kind == CB__CU_TRAIN) {
            float *save = c->save[i];
            CB__CUDNN(cudnnBatchNormalizationForwardTraining(
                c->dnn, CUDNN_BATCHNORM_SPATIAL, &cb__one, &cb__zero, xd, x, yd, y, cn->chan,
                c->w + cn->w_off, c->w + cn->b_off, (double)nd->momentum, c->stats + cn->rm_off,
                c->stats + cn->rv_off, (double)nd->eps, save, save + cb__cu_bn_stride(nd->c)));
        } else {
            CB__CUDNN(cudnnBatchNormalizationForwardInference(
                c->dnn, CUDNN_BATCHNORM_SPATIAL, &cb__one, &cb__zero, xd, x, yd, y, cn->chan,
                c->w + cn->w_off, c->w + cn->b_off, c->stats + cn->rm_off, c->stats + cn->rv_off,
                (double)nd->eps));
        }
        return CB_OK;
    case CB_NN_RELU:
        CB__CUDNN(cudnnActivationForward(c->dnn, c->relu, &cb__one, xd, x, &cb__zero, yd, y));
        return CB_OK;
    case CB_NN_MAXPOOL:
    case CB_NN_AVGPOOL:
        CB__CUDNN(cudnnPoolingForward(c->dnn, cn->pool, &cb__one, xd, x, &cb__zero, yd, y));
        return CB_OK;
    case CB_NN_ADD:
        CB__CUDA(cb__k_add(y, x, c->val[c->nodes[nd->in[1]].buf], c->dt,
                           cb__value_bytes(c, i, p->n) / c->asz, c->stream));
        return CB_OK;
    case CB_NN_FLATTEN: return CB_OK;
    case CB_NN_LINEAR: return cb__linear_fwd(c, i, p->n, x, y, err);
    default: return cb_error_set(err, CB_EINVAL, "unknown op %d", (int)nd->op);
    }
}

int cb__cu_forward(cb__cu *c, const cb__cu_plan *p, cb_error *err) {
    char nm[CB_NN_NAME_MAX + 16];
    for (int i = 1; i < c->m->n_nodes; i++) {
        if (!c->nodes[i].live) continue;
        int rc = cb__node_fwd(c, p, i, err);
        if (rc) {
            cb_error_prefix(err, "%s forward", cb__cu_node_name(c->m, i, nm, sizeof nm));
            return rc;
        }
        if (i == c->m->output) break;
    }
    return CB_OK;
}

/* ---- Backward --------------------------------------------------------------------------- */

/* Row-major dW[out, in] = dy^T x is column-major dW_cm[in, out] = X_cm[in, n] DY_cm[out, n]^T;
 * dx[n, in] = dy W is column-major DX_cm[in, n] = W_cm[in, out] DY_cm[out, n]. */
static int cb__linear_bwd(cb__cu *c, const cb__cu_plan *p, int i, cb_error *err) {
    const cb_nn_node *nd = &c->m->nodes[i];
    const cb__cu_node *cn = &c->nodes[i];
    int a = c->nodes[nd->in[0]].buf, in = c->m->nodes[nd->in[0]].c, out = nd->c, n = p->n;
    const void *x = c->val[a], *dy = c->dif[cn->buf];
    /* dW straight into float32 G (16-bit inputs, float32 output and accumulation). */
    CB__CUBLAS(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &cb__one, x, c->cdt,
                            in, dy, c->cdt, out, &cb__zero, c->g + cn->w_off, CUDA_R_32F, in,
                            c->gemm_compute, CUBLAS_GEMM_DEFAULT));
    if (cn->b_off != CB__CU_NONE)
        CB__CUDA(cb__k_colsum(c->g + cn->b_off, dy, c->dt, n, out, c->stream));
    if (!c->nodes[a].has_diff) return CB_OK;
    CB__CUBLAS(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &cb__one,
                            cb__cu_wconv(c, cn->w_off), c->cdt, in, dy, c->cdt, out,
                            CB__BETA(p->beta[2 * i]), c->dif[a], c->cdt, in, c->gemm_compute,
                            CUBLAS_GEMM_DEFAULT));
    return CB_OK;
}

static int cb__node_bwd(cb__cu *c, const cb__cu_plan *p, int i, cb_error *err) {
    const cb_nn_node *nd = &c->m->nodes[i];
    const cb__cu_node *cn = &c->nodes[i];
    int a = c->nodes[nd->in[0]].buf;
    const void *x = c->val[a], *y = c->val[cn->buf], *dy = c->dif[cn->buf];
    void *dx = c->dif[a];
    cudnnTensorDescriptor_t xd = p->desc[nd->in[0]], yd = p->desc[i];
    const float *beta = CB__BETA(p->beta[2 * i]);
    if (cb__is_own_op(c, nd->op))
        return cb__own_op(c, p, i, 1, x, (void *)y, dy, dx, p->beta[2 * i], err);
    switch (nd->op) {
    case CB_NN_CONV: {
        /* A 16-bit executor's filter gradient is 16-bit (as autocast's), converted into G. */
        int f32 = c->dt == CB__DT_F32;
        void *dw = f32 ? (void *)(c->g + cn->w_off) : (char *)c->g16 + cn->w_off * c->asz;
        CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, p->algos[i].bwd_filter_math));
        CB__CUDNN(cudnnConvolutionBackwardFilter(c->dnn, &cb__one, xd, x, yd, dy, cn->conv,
                                                 p->algos[i].bwd_filter, c->ws, p->ws_bytes,
                                                 &cb__zero, cn->filt, dw));
        if (!f32) {
            size_t count = (size_t)nd->c * c->m->nodes[nd->in[0]].c * nd->kh * nd->kw;
            CB__CUDA(cb__k_convert(c->g + cn->w_off, CB__DT_F32, dw, c->dt, count, 1.0f,
                                   c->stream));
        }
        if (cn->b_off != CB__CU_NONE && f32)
            CB__CUDNN(cudnnConvolutionBackwardBias(c->dnn, &cb__one, yd, dy, &cb__zero, cn->chan,
                                                   c->g + cn->b_off));
        else if (cn->b_off != CB__CU_NONE)
            CB__CUDA(cb__k_chan_sum(c->g + cn->b_off, dy, c->dt, p->n, nd->c, nd->h * nd->w,
                                    c->stream));
        if (dx) CB__CUDNN(cudnnSetConvolutionMathType(cn->conv, p->algos[i].bwd_data_math));
        if (dx)
            CB__CUDNN(cudnnConvolutionBackwardData(c->dnn, &cb__one, cn->filt,
                                                   cb__cu_wconv(c, cn->w_off), yd, dy, cn->conv,
                                                   p->algos[i].bwd_data, c->ws, p->ws_bytes, beta,
                                                   xd, dx));
        return CB_OK;
    }
    case CB_NN_BN: {
        const float *save = c->save[i];
        CB__CUDNN(cudnnBatchNormalizationBackward(
            c->dnn, CUDNN_BATCHNORM_SPATIAL, &cb__one, beta, &cb__one, &cb__zero, xd, x, yd, dy,
            xd, dx, cn->chan, c->w + cn->w_off, c->g + cn->w_off, c->g + cn->b_off,
            (double)nd->eps, save, save + cb__cu_bn_stride(nd->c)));
        return CB_OK;
    }
    case CB_NN_RELU:
        if (dx)
            CB__CUDNN(cudnnActivationBackward(c->dnn, c->relu, &cb__one, yd, y, yd, dy, xd, x,
                                              beta, xd, dx));
        return CB_OK;
    case CB_NN_MAXPOOL:
    case CB_NN_AVGPOOL:
        if (dx)
            CB__CUDNN(cudnnPoolingBackward(c->dnn, cn->pool, &cb__one, yd, y, yd, dy, xd, x, beta,
                                           xd, dx));
        return CB_OK;
    case CB_NN_ADD: {
        size_t count = cb__value_bytes(c, i, p->n) / c->asz;
        if (dx) CB__CUDA(cb__k_accum(dx, dy, c->dt, count, p->beta[2 * i], c->stream));
        int b = c->nodes[nd->in[1]].buf;
        if (c->dif[b])
            CB__CUDA(cb__k_accum(c->dif[b], dy, c->dt, count, p->beta[2 * i + 1], c->stream));
        return CB_OK;
    }
    case CB_NN_FLATTEN: return CB_OK;
    case CB_NN_LINEAR: return cb__linear_bwd(c, p, i, err);
    default: return cb_error_set(err, CB_EINVAL, "unknown op %d", (int)nd->op);
    }
}

int cb__cu_backward(cb__cu *c, const cb__cu_plan *p, cb_error *err) {
    char nm[CB_NN_NAME_MAX + 16];
    for (int i = c->m->output; i > 0; i--) {
        if (!c->nodes[i].live) continue;
        int rc = cb__node_bwd(c, p, i, err);
        if (rc) {
            cb_error_prefix(err, "%s backward", cb__cu_node_name(c->m, i, nm, sizeof nm));
            return rc;
        }
    }
    return CB_OK;
}
