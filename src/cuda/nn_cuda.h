/* cuda/nn_cuda.h - internal interface of the CUDA backend of src/nn (cuDNN 9 legacy API, cuBLAS),
 * shared by its files:
 *
 *   nn_backend.c   the cb_nn_backend table (cb__cuda_nn_backend): create and destroy, the calls
 *                  (forward, eval, train step), the plan cache, the optimizer launch, sync, grad
 *   nn_layers.c    plans (descriptors and convolution algorithms for one kind and n), the
 *                  per-call buffers from the executor's pool, forward and backward of every op
 *   nn_kernels.cu  our kernels (nn_kernels.h): add, accumulate, linear bias, loss, optimizers
 *   status.c       CB__CUDNN / CB__CUBLAS failures as messages
 *
 * Design in one paragraph: an executor (cb__cu) owns a non-blocking stream, a cuDNN and a cuBLAS
 * handle bound to it, a stream-ordered memory pool of its own, the parameters as flat device
 * arrays with one float offset per tensor (W weights, G gradients, M1/M2 optimizer moments: same
 * offsets, so each optimizer is one kernel launch over all of them; STATS: BN running mean and
 * variance), and pinned host staging buffers sized for `batch`. A plan (cb__cu_plan) is the graph
 * for one kind (train step, or eval-mode forward) and one n: a tensor descriptor per node, the
 * convolution algorithms (found once per layer shape and cached in the executor) and the
 * workspace size. A call allocates every activation, activation gradient and the workspace from
 * the pool on the stream (cudaMallocFromPoolAsync), enqueues the whole step, frees them again
 * stream-ordered (the pool keeps the memory: release threshold UINT64_MAX) and waits once for
 * its end event. Plan building (cudnnFind's scratch and up to CB_NN_CUDA_WS_MAX_BYTES of
 * workspace per layer) is followed by a trim of the pool to what is in use and a reset of its
 * high-water mark, so that memory is returned and the steady-state peak is what calls use.
 *
 * Layouts: PyTorch's NCHW activations and OIHW conv weights are cuDNN's NCHW / KCRS, and linear
 * weights [out, in] are row-major, so the model's float32 tensors are copied as they are.
 *
 * Thread-safety: one executor is used by one thread at a time (nn.h); every call first makes the
 * executor's device current on the calling thread. Ownership: the executor owns everything
 * here; the caller's buffers are borrowed for the call only (copied through pinned staging).
 */
#ifndef CB_CUDA_NN_CUDA_H
#define CB_CUDA_NN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "cuda/cuda_int.h"
#include "cuda/nn_kernels.h"

/* Plan kinds: a training step (batch statistics, backward, optimizer) and an eval-mode forward
 * (running statistics; inference executors and eval/forward calls of training executors). */
enum { CB__CU_TRAIN = 0, CB__CU_EVAL = 1 };

#define CB__CU_NONE ((size_t)-1)
#define CB__CU_MAX_PLANS 6

/* Convolution algorithms of one layer shape. */
typedef struct cb__cu_algos {
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    /* The math type each was found (or ranked) with, set on the convolution descriptor before
     * each call, as PyTorch does (cuDNN reports it per algorithm: a tensor-op descriptor may
     * still be given a non-tensor-op algorithm, and the other way round; fp32 executors stay
     * CUDNN_FMA_MATH whatever is reported). */
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
    size_t ws_bytes;               /* largest workspace of the algorithms chosen */
} cb__cu_algos;

/* The executor's cache of algorithms by layer shape (one cudnnFind per shape). */
typedef struct cb__cu_algo_entry {
    int key[12];                   /* n, c, h, w, k, r, s, sh, sw, ph, pw, needs */
    cb__cu_algos a;
} cb__cu_algo_entry;

/* Per model node, fixed at create. */
typedef struct cb__cu_node {
    int live;                      /* reaches the output */
    int buf;                       /* node whose buffers hold this value: itself, or for a
                                      flatten its input's (same bytes, [N, C*H*W]) */
    int has_diff;                  /* train: a dLoss/d(value) buffer exists for it */
    size_t w_off, b_off;           /* floats into W/G: conv/linear weight, bias; BN gamma, beta
                                      (CB__CU_NONE: none) */
    size_t rm_off, rv_off;         /* BN: floats into STATS */
    cudnnFilterDescriptor_t filt;  /* CONV: [K, C, R, S] */
    cudnnConvolutionDescriptor_t conv;
    cudnnTensorDescriptor_t chan;  /* [1, C, 1, 1]: conv bias; BN scale/bias/mean/var */
    cudnnPoolingDescriptor_t pool; /* MAXPOOL, AVGPOOL */
} cb__cu_node;

typedef struct cb__cu_plan {
    int kind, n;
    cudnnTensorDescriptor_t *desc; /* per node: [n, c, h, w] float, NCHW packed */
    int n_desc;
    cb__cu_algos *algos;           /* per node (CONV) */
    unsigned char *beta;           /* train, 2 per node: backward of node i adds (1) into the
                                      gradient of in[k] rather than writing it (0) */
    size_t ws_bytes;
    int64_t last_use;
} cb__cu_plan;

typedef struct cb__cu {
    cb_nn_exec *e;
    cb_nn_model *m;
    int dev;
    cudaStream_t stream;
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    cudaMemPool_t pool;
    cudaEvent_t ev0, ev_in, ev1;   /* a call's device work: start (before the first copy to the
                                      device), input copied, end (waited on: e->opts.gpu_wait) */
    int own;                       /* BN, ReLU, pooling on our kernels (nn_own.h), not cuDNN */
    int64_t plan_peak;             /* pool high-water mark while building plans (bytes) */
    int64_t steady_peak;           /* pool high-water mark during calls (bytes) */
    cudnnActivationDescriptor_t relu;
    cudnnMathType_t conv_math;     /* FP32: CUDNN_FMA_MATH; else CUDNN_TENSOR_OP_MATH */
    cublasComputeType_t gemm_compute; /* FP32, BF16, FP16: 32F; TF32: 32F_FAST_TF32 */
    /* Activation element type: float32 (fp32, tf32) or 16-bit (bf16, fp16: mixed precision). */
    int dt;                        /* CB__DT_* */
    size_t asz;                    /* bytes per activation element */
    cudnnDataType_t adt;           /* CUDNN_DATA_FLOAT, _BFLOAT16, _HALF */
    cudaDataType_t cdt;            /* CUDA_R_32F, _16BF, _16F */
    /* Mixed precision: 16-bit copy of W (refreshed after every update) for convolutions and
     * linear layers, 16-bit convolution weight gradients before their conversion into G. */
    void *w16, *g16;
    /* fp16 training: GradScaler's loss scale, good steps since it last changed, and the
     * inf/NaN flag of the step (device, and its pinned copy). */
    float scale;
    int good_steps;
    int64_t skipped;               /* steps skipped for inf/NaN gradients */
    int32_t *d_found, *h_found;
    cb__cu_node *nodes;
    /* Parameters: per model param its float offset in W (trainable) or STATS (running
     * statistics), CB__CU_NONE for num_batches_tracked (counted on the host, nbt). */
    size_t *poff;
    float *w, *g, *m1, *m2, *stats;
    size_t w_count, stats_count;
    int64_t fixed_bytes;           /* cudaMalloc'd: W, G, M1, M2, STATS */
    int64_t *nbt;                  /* per node (BN) */
    size_t in_numel;               /* C*H*W of one image */
    /* Pinned staging, sized for batch. */
    float *h_x, *h_logits, *h_ingrad;
    int32_t *h_labels, *h_correct;
    double *h_loss;
    int ingrad_n;                  /* images in h_ingrad from the last step */
    cb__cu_plan *plans[CB__CU_MAX_PLANS];
    int64_t calls;
    cb__cu_algo_entry *algo_cache;
    int n_algo, cap_algo;
    int64_t opt_steps;
    /* The call in progress: pool allocations (NULL when not allocated). */
    void **val, **dif;             /* per node (only at buf == itself) */
    float **save;                  /* BN, train: saved mean at save, inverse std at save +
                                      cb__cu_bn_stride(C) (256-byte aligned, as cuDNN wants) */
    void *ws;
    float *x32;                    /* 16-bit executors: the float32 images before conversion */
    float *f32;                    /* 16-bit executors: float32 logits / input gradient */
    int32_t *d_labels, *d_correct;
    double *d_loss;
} cb__cu;

/* ---- nn_layers.c ---- */
/* Liveness, buffers and descriptors of every node (fills c->nodes; create only). */
int cb__cu_nodes_init(cb__cu *c, cb_error *err);
void cb__cu_nodes_fini(cb__cu *c);
/* Builds the plan of (kind, n): descriptors, algorithms (cudnnFind*Ex when cudnn_benchmark, on
 * the executor's stream with scratch from its pool; else the _v7 heuristic's first). */
int cb__cu_plan_build(cb__cu *c, int kind, int n, cb__cu_plan **out, cb_error *err);
void cb__cu_plan_free(cb__cu_plan *p);                /* NULL is a no-op */
/* Allocates the call's buffers from the pool (stream-ordered), or frees them (every non-NULL
 * pointer, set back to NULL; safe after a partial allocation). */
int cb__cu_buffers_alloc(cb__cu *c, const cb__cu_plan *p, cb_error *err);
void cb__cu_buffers_free(cb__cu *c);
/* Enqueues the forward of every live node (plan kind decides BN's statistics). */
int cb__cu_forward(cb__cu *c, const cb__cu_plan *p, cb_error *err);
/* Enqueues the backward of every live node, from dLoss/dlogits already in the output's
 * gradient buffer; parameter gradients into G (written, never accumulated across steps). */
int cb__cu_backward(cb__cu *c, const cb__cu_plan *p, cb_error *err);
/* Weights of conv/linear tensor at float offset off as their compute reads them: W, or the
 * 16-bit copy. */
const void *cb__cu_wconv(const cb__cu *c, size_t off);
/* Floats from a BN's saved mean to its saved inverse std: C rounded up to 64 (256 bytes). */
static inline size_t cb__cu_bn_stride(int c) { return ((size_t)c + 63) / 64 * 64; }
/* Name of a node for messages ("layer1.0.conv1", or "node 12"). */
const char *cb__cu_node_name(const cb_nn_model *m, int node, char *buf, size_t size);

#endif
