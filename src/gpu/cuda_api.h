/* gpu/cuda_api.h - the interface between colobench and its CUDA module.
 *
 * Everything that calls CUDA, cuDNN or cuBLAS lives in build/lib/colobench_cuda.so (src/cuda/),
 * built whenever the toolkit is present and loaded with dlopen only when a config asks for a
 * CUDA device (gpu/cuda.h). So the one build/colobench runs on machines without a GPU or
 * driver, and says why a CUDA device is unavailable when one is asked for.
 *
 * The module exports one data symbol, CB_CUDA_ENTRY_SYMBOL, a cb_cuda_api. The loader checks
 * version and struct_size before calling anything. Both sides are built from this header in
 * the same build, so the version only guards against a stale module found on the search path.
 *
 * Module rules: every function returns CB_OK or a negative CB_E* code with a message in err
 * (the module has its own copy of core/error.c); every call is made with the module's own
 * objects, which are used by one thread at a time (like an executor); each object works on
 * its own CUDA stream (cudaStreamNonBlocking), never the legacy default stream, so pipelines in
 * one process (collocation mode threads) only share the GPU, not an ordering.
 */
#ifndef CB_GPU_CUDA_API_H
#define CB_GPU_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "llm/lm_config.h"
#include "nn/nn.h"

/* Version history: 1 issue 6; 2 issue 14 (versions; device_info.free_bytes; spin_create and
 * copy_create take the wait policy, spin_create its flags); 3 issue 15, 2026-12-07 (the LLM
 * forward pass: lm_create, lm_forward, lm_stats, lm_destroy and their structs). */
#define CB_CUDA_API_VERSION 3
#define CB_CUDA_ENTRY_SYMBOL "cb_cuda_entry"

typedef struct cb_cuda_device_info {
    char name[128];                /* "NVIDIA H100 80GB HBM3" */
    int major, minor;              /* compute capability */
    int sms;                       /* multiprocessors */
    int64_t memory_bytes;          /* total global memory */
    int64_t clock_khz;             /* SM clock (cudaDevAttrClockRate) */
    int64_t free_bytes;            /* free global memory now (cudaMemGetInfo) */
} cb_cuda_device_info;

/* The CUDA stack this process runs on, against what the module was built with. Versions are
 * as the libraries encode them: CUDA 13000 = 13.0; cuDNN 91900 = 9.19.0; cuBLAS 130100 =
 * 13.1.0 (major * 10000 + minor * 100 + patch). 0 = could not be read. */
typedef struct cb_cuda_versions {
    int driver;                    /* cudaDriverGetVersion: the newest CUDA the driver runs */
    int runtime, built_runtime;    /* cudaRuntimeGetVersion, CUDART_VERSION */
    int cudnn, built_cudnn;        /* cudnnGetVersion, CUDNN_VERSION */
    int cudnn_cudart;              /* cudnnGetCudartVersion: the CUDA cuDNN was built for */
    int cublas, built_cublas;      /* cublasGetProperty, CUBLAS_VERSION's parts */
} cb_cuda_versions;

/* util.gpu_spin: a busy kernel on `sms` multiprocessors (one block per SM, each taking the
 * whole SM: all its shared memory and 1024 threads, so no other kernel's block can be resident
 * there while it runs) that spins on the GPU's nanosecond timer for a chosen time. */
typedef struct cb_cuda_spin cb_cuda_spin;
/* util.gpu_copy: host/device copies of a fixed size. */
typedef struct cb_cuda_copy cb_cuda_copy;

typedef enum cb_cuda_copy_dir {
    CB_CUDA_H2D = 0,               /* host -> device */
    CB_CUDA_D2H = 1,               /* device -> host */
    CB_CUDA_D2D = 2,               /* device -> device (on the same device) */
} cb_cuda_copy_dir;

/* ---- The LLM forward pass (version 3; src/cuda/llm_model.c, wrapped by src/llm/lm_cuda.h) ---
 * The contract of cb_lm_forward (llm/lm_model.h) on one device: weights uploaded once, a device
 * KV pool of fixed-size blocks, one forward call per engine step over a list of sequences. */
typedef struct cb_cuda_lm cb_cuda_lm;

/* One layer's host tensors (llm/lm_weights.h's table): matrices [out, in] row-major in the
 * descriptor's dtype, vectors float32; NULL where the config has none. */
typedef struct cb_cuda_lm_layer {
    const void *q, *k, *v, *o, *gate, *up, *down;
    const float *q_bias, *k_bias, *v_bias, *o_bias, *q_norm, *k_norm, *attn_norm, *mlp_norm;
} cb_cuda_lm_layer;

/* What lm_create uploads and sizes. Every host pointer is borrowed for the call only (the
 * weights are copied to the device before lm_create returns). */
typedef struct cb_cuda_lm_desc {
    uint32_t struct_size;          /* sizeof(cb_cuda_lm_desc) */
    int ordinal;                   /* device cuda:N */
    cb_lm_config cfg;              /* checked by cb_lm_config_check */
    int bf16;                      /* 1: matrices and embedding are bfloat16, 0: float32 */
    const void *embed;             /* [vocab, hidden] */
    const void *head;              /* [vocab, hidden]; == embed when tied (uploaded once) */
    const float *norm;             /* [hidden] */
    const cb_cuda_lm_layer *layers; /* cfg.n_layers entries */
    const float *inv_freq;         /* head_dim / 2 RoPE inverse frequencies (llama3 scaled) */
    size_t kv_budget_bytes;        /* KV pool: floor(budget / block_bytes) blocks (>= 1) */
    int block_tokens;              /* positions per block, [1, 1024] */
    int max_step_tokens;           /* tokens of one forward call, [1, 65536] */
    int max_step_seqs;             /* sequences of one call, [1, min(max_step_tokens, 4096)] */
    cb_gpu_wait wait;              /* how lm_forward waits for its step */
} cb_cuda_lm_desc;

/* One sequence of a step: the layout of cb_lm_seq (llm/lm_model.h). */
typedef struct cb_cuda_lm_seq {
    const int32_t *tokens;         /* n_tokens new ids */
    int32_t n_tokens;              /* >= 1 */
    int32_t pos0;                  /* position of tokens[0]; 0..pos0-1 are in the cache */
    const int32_t *blocks;         /* block table: >= ceil((pos0 + n_tokens) / block_tokens) ids */
    int32_t n_blocks;
    float *logits;                 /* NULL, or vocab floats (host): the last token's logits */
} cb_cuda_lm_seq;

typedef struct cb_cuda_lm_stats {
    int32_t n_blocks;              /* blocks of the KV pool */
    int32_t block_tokens;
    size_t block_bytes;            /* bytes of one block (all layers, keys and values) */
    size_t weight_bytes;           /* device: the uploaded weights */
    size_t kv_bytes;               /* device: the KV pool */
    size_t activation_bytes;       /* device: activations for max_step_tokens, logits, staging */
    size_t pinned_bytes;           /* host: pinned staging (step inputs, logits) */
    int bf16;                      /* the device dtype of matrices, activations fed to them, KV */
    /* the last lm_forward */
    int64_t total_ns;              /* host time of the call (CLOCK_MONOTONIC) */
    int64_t device_ns;             /* device time from the inputs' upload to the logits' copy */
    int32_t tokens, seqs;
} cb_cuda_lm_stats;

typedef struct cb_cuda_api {
    uint32_t version;              /* CB_CUDA_API_VERSION */
    uint32_t struct_size;          /* sizeof(cb_cuda_api) */
    const char *build;             /* "CUDA 13.0, cuDNN 9.x.y, cuBLAS 13.x" as compiled */

    /* Devices visible to this process (>= 1), or a negative code whose message says why there
     * are none: CB_EUNSUPPORTED for no driver or no device; CB_EABI for a CUDA stack this
     * module cannot run on (a driver older than the CUDA it was built with, a cuDNN or cuBLAS
     * of another major version): a machine with a GPU that must be fixed, not skipped. */
    int (*device_count)(int *count, cb_error *err);
    int (*device_info)(int ordinal, cb_cuda_device_info *out, cb_error *err);

    /* The cuDNN/cuBLAS backend of src/nn (device "cuda:N"; e->device_index is N). */
    const cb_nn_backend *nn;

    /* util.gpu_spin. create allocates on device `ordinal` and measures the launch overhead
     * (untimed setup). run launches one spin of duration_ns on its stream, waits for it (as
     * `wait` says) and returns its device time (CUDA events) in *device_ns. flags:
     * CB_CUDA_SPIN_LIGHT makes a light kernel instead (one warp per block, no shared memory:
     * it occupies nothing, so other kernels fit beside it; tests use it as a probe). */
    int (*spin_create)(int ordinal, int sms, unsigned flags, cb_gpu_wait wait,
                       cb_cuda_spin **out, cb_error *err);
    int (*spin_run)(cb_cuda_spin *s, int64_t duration_ns, int64_t *device_ns, cb_error *err);
    void (*spin_destroy)(cb_cuda_spin *s);               /* NULL is a no-op */

    /* util.gpu_copy. create allocates `bytes` on the device and, for H2D/D2H, a host buffer
     * (pinned = 1: cudaHostAlloc; 0: pageable malloc). run does one copy on its stream, waits,
     * and returns the device time of the copy in *device_ns. */
    int (*copy_create)(int ordinal, size_t bytes, cb_cuda_copy_dir dir, int pinned,
                       cb_gpu_wait wait, cb_cuda_copy **out, cb_error *err);
    int (*copy_run)(cb_cuda_copy *c, int64_t *device_ns, cb_error *err);
    void (*copy_destroy)(cb_cuda_copy *c);               /* NULL is a no-op */

    /* Versions of the CUDA stack (driver, runtime, cuDNN, cuBLAS) beside the built ones; CB_OK
     * when compatible, CB_EABI with the reason when not (out filled either way, as far as it
     * could be read). Needs no device. */
    int (*versions)(cb_cuda_versions *out, cb_error *err);

    /* ---- version 3: the LLM forward pass (cb_cuda_lm above) ----
     * lm_create uploads the weights to device d->ordinal and allocates the KV pool, the
     * activations and the staging; CB_ECONFIG when not even one KV block fits the budget,
     * CB_ENOMEM (device or pinned memory) naming what, CB_EINVAL for a bad descriptor.
     * lm_forward runs one step (cb_lm_forward's contract and checks: CB_EINVAL naming the
     * sequence, nothing written to the cache for a refused call), waits for it and copies each
     * asked-for last token's logits (float32) to the host. lm_stats fills *out (sizes, and the
     * figures of the last forward). Objects are used by one thread at a time. */
    int (*lm_create)(const cb_cuda_lm_desc *d, cb_cuda_lm **out, cb_error *err);
    int (*lm_forward)(cb_cuda_lm *m, const cb_cuda_lm_seq *seqs, int n_seqs, cb_error *err);
    void (*lm_stats)(const cb_cuda_lm *m, cb_cuda_lm_stats *out);
    void (*lm_destroy)(cb_cuda_lm *m);                   /* NULL is a no-op */
} cb_cuda_api;

#define CB_CUDA_SPIN_LIGHT 1u

#endif
