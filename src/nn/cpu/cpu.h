/* nn/cpu/cpu.h - internal interface of the CPU backend (oneDNN 2.6, C API), shared by its files:
 *
 *   backend.c  the cb_nn_backend table: create, calls, plan cache, running a plan, the loss and
 *              the optimizer
 *   plan.c     compiling the graph into a plan (a list of steps) for one mode and batch size
 *   params.c   the executor's own copy of the parameters in oneDNN's layouts, conversion from
 *              and to the model (PyTorch layout), BN folding, gradients
 *   util.c     oneDNN helpers: errors, reorders, region packing, aligned buffers
 *
 * Design in one paragraph: an executor (cb__cpu) owns the parameters in one flat float arena per
 * role (weights W, gradients G, optimizer moments M and V, all with the same offsets, so the
 * optimizer is one element-wise loop), the BN running statistics, one activation arena and one
 * oneDNN scratchpad shared by all its plans. A plan (cb__cpu_plan) is the graph compiled for one
 * kind (train step, eval-mode forward of a training executor, or inference) and one n: a list of
 * steps (oneDNN primitives with their arguments, or small kernels of ours), and the regions its
 * steps use. Activation and gradient regions are placed in the shared arena by lifetime (two
 * regions share bytes when no step uses both), so one arena sized once serves every plan, and
 * only one plan runs at a time.
 *
 * Thread-safety: an executor and its plans are used by one thread at a time (nn.h). Ownership:
 * the executor owns every plan, primitive, memory object and buffer; a plan borrows the
 * executor's engine, arenas and parameters.
 */
#ifndef CB_NN_CPU_CPU_H
#define CB_NN_CPU_CPU_H

#include <dnnl.h>
#include <stddef.h>
#include <stdint.h>

#include "nn/nn.h"

/* Plan kinds. */
enum { CB__CPU_TRAIN = 0, CB__CPU_EVAL = 1, CB__CPU_INFER = 2 };

/* Where a region's bytes live. */
enum {
    CB__CPU_REG_ARENA = 0, /* the shared activation arena, placed by lifetime */
    CB__CPU_REG_PARAM,     /* an executor array (W, G, STATS, INGRAD) at a float offset */
    CB__CPU_REG_INPUT,     /* the caller's input images of this call (read only) */
    CB__CPU_REG_SCRATCH,   /* the shared oneDNN scratchpad */
};

/* Executor arrays a PARAM region points into. */
enum { CB__CPU_ARR_W = 0, CB__CPU_ARR_G, CB__CPU_ARR_STATS, CB__CPU_ARR_INGRAD, CB__CPU_N_ARR };

typedef struct cb__cpu_region {
    int kind;
    int arr;                   /* PARAM: which array */
    int tensor;                /* PARAM: tensor whose offset `off` is (W, G), or -1 */
    size_t off;                /* PARAM: float offset (tensor == -1); ARENA: byte offset */
    size_t size;               /* bytes */
    int first, last;           /* ARENA: first and last step using it (-1 before any use) */
    int owners;                /* plan builder only: nodes whose pending gradient this is */
} cb__cpu_region;

/* A oneDNN memory object over (part of) a region. */
typedef struct cb__cpu_mem {
    dnnl_memory_t mem;
    int reg;
    dnnl_memory_desc_t md;
} cb__cpu_mem;

/* Step kinds: a oneDNN primitive, or one of our kernels over whole regions. */
enum {
    CB__CPU_STEP_PRIM = 0,
    CB__CPU_STEP_ACCUM,        /* reg[0] += reg[1], `count` floats */
    CB__CPU_STEP_COPY,         /* reg[0] = reg[1], `count` floats */
    CB__CPU_STEP_LOSS,         /* reg[0] plain logits [n, classes] -> loss, correct, logits out;
                                  reg[1] (or -1) receives dLoss/dlogits, plain */
    CB__CPU_STEP_BNSTATS,      /* running statistics of BN node `node` from its batch mean reg[0]
                                  and variance reg[1]; `count` values per channel */
};

#define CB__CPU_MAX_ARGS 12

typedef struct cb__cpu_step {
    int kind;
    int node;                  /* graph node the step belongs to (error messages, BNSTATS) */
    dnnl_primitive_t prim;     /* PRIM, owned by the plan */
    int nargs;
    int arg_ids[CB__CPU_MAX_ARGS];
    int arg_mems[CB__CPU_MAX_ARGS];   /* indices into plan->mems */
    int reg[2];                /* kernels */
    size_t count;
} cb__cpu_step;

typedef struct cb__cpu_plan {
    int kind, n;
    cb__cpu_step *steps;
    int n_steps, cap_steps;
    cb__cpu_region *regs;
    int n_regs, cap_regs;
    cb__cpu_mem *mems;
    int n_mems, cap_mems;
    dnnl_exec_arg_t *argv;     /* n_steps x CB__CPU_MAX_ARGS, filled at bind time */
    size_t arena_bytes;        /* arena this plan needs */
    size_t scratch_bytes;      /* largest scratchpad of its primitives */
    unsigned bound_gen;        /* the executor buffer generation its memories point into */
    int64_t last_use;          /* cache eviction (call counter) */
} cb__cpu_plan;

/* One parameter tensor in the executor's arenas. */
typedef struct cb__cpu_tensor {
    int param;                 /* model param index; -1 for a synthesized one (folded bias) */
    int node;
    size_t off;                /* float offset in W (same in G, M, V) */
    size_t count;              /* floats, with oneDNN's padding */
    int has_md;                /* md chosen (by the first plan) */
    dnnl_memory_desc_t md;     /* backend layout */
    dnnl_memory_desc_t user_md;/* PyTorch layout */
} cb__cpu_tensor;

/* Per node facts computed once at create: liveness, consumers, fusion. */
typedef struct cb__cpu_node {
    int live;                  /* reaches the output */
    int n_cons;                /* live consumer edges */
    int cons0;                 /* first live consumer (n_cons == 1) */
    int flat2d;                /* value is 2-D [N, F] (comes from a linear layer) */
    int need_diff;             /* train: dLoss/d(value) is needed */
    int vc, vh, vw;            /* shape of the value in memory (a flatten keeps its input's) */
    int w, b;                  /* tensor indices: conv/linear weight, bias; BN gamma, beta */
    size_t rm, rv;             /* BN: float offsets of running mean/var in STATS */
    /* Fusion (per plan kind, see cb__cpu_fusion): */
    int bn_relu;               /* BN: ReLU node folded in with dnnl_fuse_norm_relu, -1 */
    int fold_bn;               /* INFER fuse: BN folded into this conv, -1 */
    int post_relu;             /* INFER fuse: ReLU node run as this conv/linear's post-op */
    int sum_add;               /* INFER fuse: ADD run as this conv's sum post-op */
    int sum_other;             /* the ADD's other input, whose buffer is pre-filled as dst */
    int absorbed;              /* INFER fuse: run as part of another node's primitive */
} cb__cpu_node;

#define CB__CPU_MAX_PLANS 6

typedef struct cb__cpu {
    cb_nn_exec *e;
    cb_nn_model *m;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    cb__cpu_node *nodes;       /* per model node */
    cb__cpu_tensor *tensors;
    int n_tensors;
    /* Arrays: W, G (train), M, V (optimizer), STATS (running mean/var), INGRAD (input grad). */
    float *arr[CB__CPU_N_ARR];
    void *arr_raw[CB__CPU_N_ARR];
    float *m1, *m2;
    void *m1_raw, *m2_raw;
    size_t w_count;            /* floats in W (= G, M, V) */
    size_t stats_count;
    int64_t *nbt;              /* num_batches_tracked per node (BN only) */
    size_t in_numel;           /* C*H*W of one image */
    int ingrad_n;              /* images in INGRAD from the last step */
    /* Shared buffers for every plan (grown when a new plan needs more; gen bumps). */
    void *arena, *arena_raw;
    size_t arena_bytes;
    void *scratch, *scratch_raw;
    size_t scratch_bytes;
    unsigned gen;
    /* Plans: [0] the one built at create; the rest a small cache by (kind, n). */
    cb__cpu_plan *plans[CB__CPU_MAX_PLANS];
    int64_t calls;
    int64_t opt_steps;         /* optimizer steps taken (SGD momentum start, Adam t) */
    /* The call in progress (read by the LOSS step and the input region). */
    const float *call_x;
    const int32_t *call_labels;
    float *call_logits;
    double call_loss;
    int64_t call_correct;
} cb__cpu;

/* ---- plan.c ---- */
int cb__cpu_plan_build(cb__cpu *c, int kind, int n, cb__cpu_plan **out, cb_error *err);
void cb__cpu_plan_free(cb__cpu_plan *p);
/* Fusion and liveness facts for the executor's kind (fills c->nodes). */
int cb__cpu_analyze(cb__cpu *c, cb_error *err);

/* ---- params.c ---- */
/* Creates the tensor table (formats still open) and the STATS array. */
int cb__cpu_params_init(cb__cpu *c, cb_error *err);
/* After the first plan fixed every format: allocates W (G, M, V for training) and converts the
 * model's parameters into them (folding BN for fused inference). */
int cb__cpu_params_load(cb__cpu *c, cb_error *err);
int cb__cpu_params_sync(cb__cpu *c, cb_error *err);
int cb__cpu_params_grad(cb__cpu *c, const char *name, float *out, size_t count, cb_error *err);

/* ---- util.c ---- */
/* Sets err from a failed oneDNN call (CB_ENOMEM or CB_EUNSUPPORTED) naming what failed. */
int cb__cpu_dnnl_error(cb_error *err, dnnl_status_t s, const char *what, const char *node);
/* One-off reorder between two host buffers (create, sync, grad; not the hot path). */
int cb__cpu_reorder(cb__cpu *c, const dnnl_memory_desc_t *src_md, const void *src,
                    const dnnl_memory_desc_t *dst_md, void *dst, cb_error *err);
/* A plain (dense, row-major) f32 memory descriptor of ndims dims. */
void cb__cpu_md_plain(dnnl_memory_desc_t *md, int ndims, const int64_t *dims);
/* Aligned (4096) allocation through cb_malloc; *raw receives what to cb_free. */
void *cb__cpu_alloc(size_t bytes, int zero, void **raw);
/* Places the plan's arena regions by lifetime; sets p->arena_bytes. */
int cb__cpu_pack(cb__cpu_plan *p, cb_error *err);
/* Name of a node for messages ("layer1.0.conv1", or "node 12 (relu)"). */
const char *cb__cpu_node_name(const cb_nn_model *m, int node, char *buf, size_t size);
/* True when the primitive descriptor's implementation is oneDNN's slow reference code. */
int cb__cpu_pd_is_ref(const_dnnl_primitive_desc_t pd);

/* Parallel element-wise kernels (OpenMP). */
void cb__cpu_accum(float *dst, const float *src, size_t n);
void cb__cpu_copy(float *dst, const float *src, size_t n);

#ifdef _OPENMP
#define CB__OMP_FOR _Pragma("omp parallel for schedule(static)")
#else
#define CB__OMP_FOR
#endif

#endif
