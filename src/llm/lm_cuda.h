/* llm/lm_cuda.h - the forward pass of lm_model.h on a CUDA device (device "cuda:N"): the same
 * sequences (cb_lm_seq), the same KV semantics (a pool of fixed-size blocks, a free list of
 * block ids, block tables per sequence), the same checks and error messages; a drop-in for
 * cb_lm_model + cb_lm_kv where a config asks for a GPU.
 *
 * The work is done by the CUDA module (gpu/cuda_api.h, version 3: lm_create, lm_forward), loaded
 * with dlopen when cb_lm_cuda_create is called; this file never links CUDA, so it builds and
 * runs everywhere and fails at run time with CB_EUNSUPPORTED ("CUDA unavailable: ...", "CUDA
 * devices are unavailable: ...", "device cuda:N does not exist ...") where there is no module,
 * no driver or no device, and CB_EABI where the machine's CUDA stack cannot run the module.
 *
 * Device memory: the weights (bfloat16 matrices stay bfloat16, float32 stay float32; norms and
 * biases float32), the KV pool (kv_budget_bytes rounded down to whole blocks, the layout and
 * block size of the CPU pool), activations for max_step_tokens tokens and max_step_seqs rows of
 * logits; pinned host memory for a step's inputs and logits. cb_lm_cuda_info reports each.
 *
 * Precision: as lm_model.h, except that for bfloat16 weights the activations fed to each
 * matrix product are rounded to bfloat16 (cuBLAS takes both operands in one type), where the
 * CPU keeps them float32: logits differ from the CPU path's by that rounding (see
 * docs/internals/llm-cuda.md for the bound the GPU test uses).
 *
 * Threads: one thread at a time per object (forward and the KV free list alike); objects are
 * independent. The weights are copied to the device by create and may be destroyed after it.
 */
#ifndef CB_LLM_LM_CUDA_H
#define CB_LLM_LM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "gpu/cuda_api.h"
#include "gpu/wait.h"
#include "llm/lm_model.h"

typedef struct cb_lm_cuda cb_lm_cuda;

#define CB_LM_CUDA_SEQS_DEFAULT 256 /* max_step_seqs 0: min(max_step_tokens, this) */

typedef struct cb_lm_cuda_opts {
    int ordinal;            /* the N of cuda:N */
    int max_step_tokens;    /* [1, CB_LM_STEP_TOKENS_MAX]: tokens of one forward call */
    int max_step_seqs;      /* sequences of one call, <= min(max_step_tokens, 4096); 0: default */
    size_t kv_budget_bytes; /* device bytes of the KV pool (whole blocks) */
    int block_tokens;       /* [1, CB_LM_BLOCK_TOKENS_MAX] */
    cb_gpu_wait wait;       /* how a forward call waits for the device */
} cb_lm_cuda_opts;
#define CB_LM_CUDA_OPTS_DEFAULT                                                                    \
    { 0, 512, 0, (size_t)1 << 30, 16, CB_GPU_WAIT_BLOCK }

/* Loads the module, opens device cuda:o->ordinal, uploads w and allocates everything.
 * Errors: CB_EUNSUPPORTED / CB_EABI as above; CB_EINVAL for bad options; CB_ECONFIG when the
 * budget holds no block ("kv_cache_bytes: ..."); CB_ENOMEM naming device or host memory. */
int cb_lm_cuda_create(const cb_lm_weights *w, const cb_lm_cuda_opts *o, cb_lm_cuda **out,
                      cb_error *err);
void cb_lm_cuda_destroy(cb_lm_cuda *m); /* NULL is a no-op */
const cb_lm_config *cb_lm_cuda_config(const cb_lm_cuda *m);
cb_lm_dtype cb_lm_cuda_kv_dtype(const cb_lm_cuda *m);

/* The KV pool's free list (host side; ids address device blocks): as cb_lm_kv_*. */
size_t cb_lm_cuda_kv_block_bytes(const cb_lm_cuda *m);
int cb_lm_cuda_kv_block_tokens(const cb_lm_cuda *m);
int32_t cb_lm_cuda_kv_n_blocks(const cb_lm_cuda *m);
int32_t cb_lm_cuda_kv_alloc(cb_lm_cuda *m);                /* -1 when none is free */
void cb_lm_cuda_kv_release(cb_lm_cuda *m, int32_t block); /* unknown or free ids ignored */
int32_t cb_lm_cuda_kv_free_blocks(const cb_lm_cuda *m);

/* cb_lm_forward on the device: checks, then the step, then each asked-for logits row copied
 * to its host buffer; returns when the step is done. */
int cb_lm_cuda_forward(cb_lm_cuda *m, const cb_lm_seq *seqs, int n_seqs, cb_error *err);
/* The last forward as cb_lm_forward_last_stats reports it (total_ns; matmul_ns and
 * attention_ns are 0: not measured apart on the device). */
void cb_lm_cuda_last_stats(const cb_lm_cuda *m, cb_lm_forward_stats *out);
/* Sizes (device weights, KV pool, activations, pinned host) and the last forward's host and
 * device times. */
void cb_lm_cuda_info(const cb_lm_cuda *m, cb_cuda_lm_stats *out);

#endif
