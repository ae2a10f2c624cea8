/* nn/nn.h - colobench's neural-network layer: models as graphs, parameters by torchvision name,
 * and executors that run a model on one backend (CPU through oneDNN now, CUDA next).
 *
 * Three pieces, each backend-independent except the last:
 *   - cb_nn_model: a graph of nodes (conv, batch norm, ReLU, pooling, linear, add, flatten) in
 *     topological order, and its parameters as host float32 tensors in PyTorch's own layout
 *     (OIHW for conv weights, [out, in] for linear) under torchvision's state-dict names
 *     ("layer1.0.conv1.weight", "bn1.running_var", "fc.bias"). The model is the single source
 *     of truth for weights when nothing runs; safetensors files load into and save from it.
 *   - builders: mlp, cnn, resnet18/34/50 (torchvision's exact topology) and torchvision's
 *     random initialization.
 *   - cb_nn_exec: a model compiled for one backend, batch size and mode (train or infer). It
 *     owns its own copy of the weights in whatever layout the backend prefers (converted once
 *     at create), its primitives and every buffer, all allocated once and reused by every step.
 *     cb_nn_exec_sync writes weights and running statistics back into the model.
 *
 * Semantics follow PyTorch exactly, so results compare against it: batch norm in training uses
 * batch statistics (biased variance to normalise, unbiased to update running_var, momentum 0.1,
 * eps 1e-5) and increments num_batches_tracked; the loss is the mean softmax cross-entropy over
 * the batch; SGD is torch.optim.SGD (momentum buffer starts as the first gradient, weight decay
 * added to the gradient, optional nesterov) and Adam is torch.optim.Adam (L2 weight decay added
 * to the gradient, bias-corrected moments). Weight decay applies to every trainable parameter,
 * as in PyTorch's default param group.
 *
 * Errors: int CB_OK / negative CB_E* with a message in cb_error. Thread-safety: a model is not
 * synchronised (build it, then hand it to one executor at a time); one executor is used by one
 * thread at a time; separate executors are independent.
 */
#ifndef CB_NN_NN_H
#define CB_NN_NN_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "gpu/wait.h"

#define CB_NN_MAX_DIMS 4
#define CB_NN_NAME_MAX 96

/* ---- Parameters ------------------------------------------------------------------------- */

typedef enum cb_nn_dtype { CB_NN_F32 = 0, CB_NN_I64 = 1 } cb_nn_dtype;

typedef struct cb_nn_param {
    char name[CB_NN_NAME_MAX];     /* torchvision state-dict key */
    cb_nn_dtype dtype;             /* F32, or I64 for num_batches_tracked (a 0-d tensor) */
    int ndim;                      /* 0 (scalar) to 4 */
    int64_t dims[CB_NN_MAX_DIMS];
    int64_t numel;                 /* product of dims (1 for a scalar) */
    void *data;                    /* host, contiguous, PyTorch layout; owned by the model */
    int trainable;                 /* 1: the optimizer updates it; 0: running stats, counters */
} cb_nn_param;

/* ---- Graph ------------------------------------------------------------------------------ */

typedef enum cb_nn_op {
    CB_NN_INPUT = 0,   /* node 0, the [N, C, H, W] image batch */
    CB_NN_CONV,        /* 2-D convolution, groups 1, dilation 1; param[0] weight, [1] bias|-1 */
    CB_NN_BN,          /* batch norm 2-D; param[0..4] weight, bias, running_mean, running_var,
                          num_batches_tracked */
    CB_NN_RELU,
    CB_NN_MAXPOOL,     /* kernel/stride/pad; PyTorch's padding with -inf */
    CB_NN_AVGPOOL,     /* kernel/stride/pad, count_include_pad = true (ResNet's adaptive 1x1
                          pooling is the kernel = whole input case) */
    CB_NN_ADD,         /* in[0] + in[1], same shape (residual) */
    CB_NN_FLATTEN,     /* [N, C, H, W] -> [N, C*H*W, 1, 1] */
    CB_NN_LINEAR,      /* param[0] weight [out, in], [1] bias|-1; input must be [N, F, 1, 1] */
} cb_nn_op;

typedef struct cb_nn_node {
    cb_nn_op op;
    int in[2];                     /* producer nodes (earlier indices), -1 when unused */
    int c, h, w;                   /* output shape of one image ([F, 1, 1] after flatten/linear) */
    int kh, kw, sh, sw, ph, pw;    /* CONV, MAXPOOL, AVGPOOL */
    float eps, momentum;           /* BN: 1e-5, 0.1 */
    int param[5];                  /* indices into model->params, -1 when unused */
    char name[CB_NN_NAME_MAX];     /* module path ("layer1.0.conv1"), "" for unnamed nodes */
} cb_nn_node;

typedef struct cb_nn_model {
    char arch[32];                 /* "resnet18", "mlp", ... or "custom" */
    int in_c, in_h, in_w;          /* input image shape */
    int classes;                   /* features of the output node */
    cb_nn_node *nodes;
    int n_nodes, cap_nodes;
    cb_nn_param *params;           /* in state-dict order (torchvision's module order) */
    int n_params, cap_params;
    int output;                    /* node producing the logits [N, classes, 1, 1] */
} cb_nn_model;

/* An empty model with its input node (index 0) of shape [c, h, w]. */
int cb_nn_model_new(const char *arch, int c, int h, int w, cb_nn_model **out, cb_error *err);
void cb_nn_model_free(cb_nn_model *m);                 /* NULL is a no-op */

/* Node builders: each appends one node fed by `in` and returns its index (>= 0), or a negative
 * CB_E* code (bad shape, out of memory) with a message in err. Parameters are allocated and
 * zeroed, named "<name>.weight" etc. in the order torchvision registers them. */
int cb_nn_conv(cb_nn_model *m, int in, const char *name, int out_c, int k, int stride, int pad,
               int bias, cb_error *err);
int cb_nn_bn(cb_nn_model *m, int in, const char *name, cb_error *err);
int cb_nn_relu(cb_nn_model *m, int in, cb_error *err);
int cb_nn_maxpool(cb_nn_model *m, int in, int k, int stride, int pad, cb_error *err);
int cb_nn_avgpool(cb_nn_model *m, int in, int k, int stride, int pad, cb_error *err);
int cb_nn_add(cb_nn_model *m, int a, int b, cb_error *err);
int cb_nn_flatten(cb_nn_model *m, int in, cb_error *err);
int cb_nn_linear(cb_nn_model *m, int in, const char *name, int out_features, int bias,
                 cb_error *err);

/* Builds a named architecture: "mlp", "cnn", "resnet18", "resnet34", "resnet50", for images of
 * [c, h, w] and `classes` outputs. Parameters are zero until cb_nn_model_init or a load. */
int cb_nn_model_build(const char *arch, int classes, int c, int h, int w, cb_nn_model **out,
                      cb_error *err);
/* The architectures cb_nn_model_build knows, "mlp|cnn|resnet18|resnet34|resnet50". */
const char *cb_nn_model_archs(void);

/* torchvision's initialization, deterministic from seed: conv weights kaiming_normal_
 * (fan_out, ReLU gain), batch norm weight 1 and bias 0, running stats 0/1, linear weight and
 * bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's nn.Linear default). */
void cb_nn_model_init(cb_nn_model *m, uint64_t seed);

cb_nn_param *cb_nn_model_param(cb_nn_model *m, const char *name);   /* NULL when absent */
int64_t cb_nn_model_n_trainable(const cb_nn_model *m);  /* sum of trainable numel (torchvision's
                                                           parameter count) */
double cb_nn_model_forward_flops(const cb_nn_model *m); /* per image: 2 x multiply-adds of conv
                                                           and linear layers */

/* ---- Weights files (safetensors) -------------------------------------------------------- */

/* Loads every parameter of m from a safetensors file by name. Every name of the model must be
 * present with the same shape; F32 (and I64 for num_batches_tracked; F32/F16/BF16 accepted for
 * floats and converted) are read. Errors name the file and the tensor. Extra tensors in the file
 * are an error unless allow_extra. */
int cb_nn_model_load(cb_nn_model *m, const char *path, int allow_extra, cb_error *err);
/* Writes every parameter of m (F32, num_batches_tracked as I64) to a safetensors file
 * atomically (write to PATH.tmp, rename). */
int cb_nn_model_save(const cb_nn_model *m, const char *path, cb_error *err);

/* ---- Executors -------------------------------------------------------------------------- */

typedef enum cb_nn_optim_kind { CB_NN_SGD = 0, CB_NN_ADAM = 1 } cb_nn_optim_kind;

typedef struct cb_nn_optim {
    cb_nn_optim_kind kind;
    double lr;
    double momentum;               /* SGD */
    double weight_decay;
    int nesterov;                  /* SGD */
    double beta1, beta2, eps;      /* Adam: 0.9, 0.999, 1e-8 (all three 0: these defaults) */
} cb_nn_optim;

/* Arithmetic of an executor. fp32: float32 everywhere (on CUDA with TF32 tensor-core math
 * disabled, as PyTorch computes with allow_tf32 off). tf32: float32 storage, convolutions and
 * matrix products on TF32 tensor cores (10-bit mantissa inputs, float32 accumulation; Ampere and
 * newer). bf16, fp16: mixed precision as torch.autocast does it: convolutions and linear layers
 * read and write 16-bit activations and a 16-bit copy of the weights, accumulate in float32;
 * batch-norm statistics, the loss, the gradients of the master weights and the optimizer stay
 * float32. fp16 training scales the loss dynamically (torch.cuda.amp.GradScaler's rule: start at
 * 65536, halve and skip the step on inf/nan gradients, double after 2000 good steps); bf16 needs
 * no scaling. The CPU backend computes fp32 only; other precisions there are CB_EUNSUPPORTED. */
typedef enum cb_nn_precision {
    CB_NN_FP32 = 0,
    CB_NN_TF32 = 1,
    CB_NN_BF16 = 2,
    CB_NN_FP16 = 3,
} cb_nn_precision;

/* "fp32", "tf32", "bf16", "fp16" -> 0 and *out, or CB_EINVAL. */
int cb_nn_precision_parse(const char *s, cb_nn_precision *out);
const char *cb_nn_precision_name(cb_nn_precision p);
#define CB_NN_PRECISIONS "fp32|tf32|bf16|fp16"

typedef struct cb_nn_exec_opts {
    int batch;                     /* largest n per call (calls with n < batch work too) */
    int train;                     /* 1: training executor, 0: inference only */
    int threads;                   /* compute threads for this executor's calls (0: library
                                      default); set on the calling thread at each call */
    const char *device;            /* "cpu" (default when NULL) or "cuda:N" */
    cb_nn_optim optim;             /* train only */
    int fuse;                      /* inference: 1 folds BN into conv and fuses ReLU/add
                                      (default), 0 runs every node as written (tests) */
    int profile;                   /* 1: time every primitive (cb_nn_exec_stats) */
    int input_grad;                /* train: 1 also computes dLoss/dx each step, so that
                                      cb_nn_exec_grad(e, NULL, ...) works; 0 skips that work */
    int winograd;                  /* 1: 3x3 stride-1 convolutions use Winograd F(4x4, 3x3) where
                                      the backend has it (CPU: training steps, about twice as
                                      fast on those layers; float32 error about 5x direct's,
                                      ~2e-6 of the output scale; inference keeps its direct
                                      NHWC kernels). 0 (default): direct convolution, as
                                      PyTorch computes it */
    cb_nn_precision precision;     /* CB_NN_FP32 (default) */
    int cudnn_benchmark;           /* CUDA: 1 (default when opts come from a stage) times every
                                      cuDNN algorithm once per layer shape at the first call of
                                      that shape and keeps the fastest (cudnnFind*, cached in the
                                      executor); 0 takes cuDNN's heuristic choice (the first
                                      algorithm whose workspace fits CB_NN_CUDA_WS_MAX_BYTES) */
    cb_gpu_wait gpu_wait;          /* CUDA: how the calling thread waits for the device at the
                                      end of a call (gpu/wait.h; default CB_GPU_WAIT_BLOCK: it
                                      sleeps, leaving its core to collocated work) */
    int cuda_own_kernels;          /* CUDA: 1 runs batch norm, ReLU and pooling on the
                                      backend's own kernels instead of cuDNN's (bf16 executors
                                      always do: cuDNN's legacy API may refuse bf16 there);
                                      for tests, which check them against the CPU at fp32 */
} cb_nn_exec_opts;
/* History of cb_nn_exec_opts (fields are only appended):
 *   issue 5: input_grad, winograd.
 *   issue 6: precision, cudnn_benchmark.
 *   issue 14: gpu_wait, cuda_own_kernels. */

/* Largest convolution workspace the CUDA backend uses for one layer (cudnnFind's scratch, and
 * the heuristic path's choice): 1 GiB. */
#define CB_NN_CUDA_WS_MAX_BYTES ((size_t)1 << 30)

typedef struct cb_nn_result {
    double loss;                   /* mean cross-entropy over the batch */
    int64_t correct;               /* argmax(logits) == label */
    int64_t n;                     /* images */
} cb_nn_result;

typedef struct cb_nn_exec_stats {
    int64_t calls;                 /* forward/train_step/eval calls */
    int64_t total_ns;              /* wall time inside those calls */
    int64_t primitive_ns;          /* of which inside the library's primitives (profile = 1:
                                      oneDNN on the CPU), each timed to completion */
    int64_t kernel_ns;             /* of which inside the backend's own kernels (profile = 1):
                                      loss, gradient accumulation, BN running statistics, the
                                      optimizer. total_ns - primitive_ns is the time outside
                                      the library: these kernels plus dispatch */
    int64_t device_ns;             /* CUDA: device time of those calls, from CUDA events
                                      recorded on the executor's stream right before the
                                      first copy of the input to the device and after the
                                      last result copy: device work only, not the host's copy
                                      into pinned staging, plan lookup or allocation (0 on the
                                      CPU) */
    int64_t device_mem_peak_bytes; /* CUDA: steady-state peak: the most bytes in use in the
                                      executor's own stream-ordered memory pool during calls
                                      (cudaMemPoolAttrUsedMemHigh, reset after every plan
                                      build) plus its fixed allocations (weights, gradients,
                                      optimizer state); what PyTorch's max_memory_allocated
                                      shows after warm-up. 0 on the CPU */
    int64_t last_device_ns;        /* device time of the last call alone */
    /* Appended in issue 14. */
    int64_t device_mem_plan_peak_bytes; /* CUDA: peak while building plans (cudnnFind's
                                      scratch and workspace), plus the fixed allocations; the
                                      pool is trimmed back after each plan build */
    int64_t copy_in_ns;            /* CUDA: of device_ns, the input's (and labels') host-to-
                                      device copies (CUDA events around them) */
    int64_t last_copy_in_ns;       /* that of the last call alone */
    int64_t last_stage_in_ns;      /* CUDA: host time of the last call's copy of the caller's
                                      buffers into pinned staging (not in device_ns) */
    double loss_scale;             /* CUDA fp16 training: GradScaler's current scale (65536
                                      at first); 0 otherwise */
    int64_t skipped_steps;         /* CUDA fp16 training: steps skipped for inf/NaN gradients */
} cb_nn_exec_stats;

typedef struct cb_nn_exec cb_nn_exec;

/* Compiles m for opts->device. The executor reads m's parameters at create and keeps a pointer
 * to m (which must outlive it) for cb_nn_exec_sync. Unknown devices are CB_EUNSUPPORTED. */
int cb_nn_exec_new(cb_nn_model *m, const cb_nn_exec_opts *opts, cb_nn_exec **out, cb_error *err);
void cb_nn_exec_free(cb_nn_exec *e);                   /* NULL is a no-op */

/* Inference forward of n <= batch images x (NCHW float32, host); writes n x classes logits
 * when logits != NULL. On a training executor this runs in eval mode (running statistics). */
int cb_nn_exec_forward(cb_nn_exec *e, const float *x, int n, float *logits, cb_error *err);
/* Forward in eval mode plus loss and correct count against labels (int32 in [0, classes)). */
int cb_nn_exec_eval(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                    cb_nn_result *r, cb_error *err);
/* One training step: forward (batch statistics), loss, backward, optimizer update. r->loss and
 * r->correct are from this step's forward. Training executors only. */
int cb_nn_exec_train_step(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                          cb_nn_result *r, cb_error *err);
/* Writes the executor's weights and running statistics back into the model (PyTorch layout).
 * An inference executor never changes what it read (a fused one holds BN folded into conv
 * weights), so for it this writes nothing and returns CB_OK. */
int cb_nn_exec_sync(cb_nn_exec *e, cb_error *err);
/* The gradient of the loss with respect to a parameter (by name) or the input (name NULL, needs
 * opts.input_grad), from the last train step, before the update, in PyTorch layout. count must
 * be the parameter's numel (n x C x H x W of the last step for the input). For tests and
 * debugging. */
int cb_nn_exec_grad(cb_nn_exec *e, const char *param, float *out, size_t count, cb_error *err);
void cb_nn_exec_get_stats(const cb_nn_exec *e, cb_nn_exec_stats *out);

/* ---- Backends --------------------------------------------------------------------------- */

/* What a backend implements; cb_nn_exec_* dispatch to it. The CPU backend (nn/cpu/) is oneDNN;
 * the CUDA backend (issue 6) plugs in here. */
typedef struct cb_nn_backend {
    const char *name;              /* "cpu", "cuda" */
    int (*create)(cb_nn_exec *e, cb_error *err);
    void (*destroy)(cb_nn_exec *e);
    int (*forward)(cb_nn_exec *e, const float *x, int n, float *logits, cb_error *err);
    int (*eval)(cb_nn_exec *e, const float *x, const int32_t *labels, int n, cb_nn_result *r,
                cb_error *err);
    int (*train_step)(cb_nn_exec *e, const float *x, const int32_t *labels, int n,
                      cb_nn_result *r, cb_error *err);
    int (*sync)(cb_nn_exec *e, cb_error *err);
    int (*grad)(cb_nn_exec *e, const char *param, float *out, size_t count, cb_error *err);
} cb_nn_backend;

/* The executor's common part; a backend keeps its own state behind `impl`. */
struct cb_nn_exec {
    cb_nn_model *model;
    cb_nn_exec_opts opts;
    const cb_nn_backend *backend;
    int device_index;              /* cuda ordinal, -1 for cpu */
    cb_nn_exec_stats stats;
    void *impl;
    void *module;                  /* CUDA: the executor's reference to the CUDA module (a
                                      cb_cuda, gpu/cuda.h), closed after destroy */
};

extern const cb_nn_backend cb_nn_backend_cpu;

#endif
