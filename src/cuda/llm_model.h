/* cuda/llm_model.h - the LLM forward pass of the CUDA module (llm_model.c): the cb_cuda_api
 * entries lm_create, lm_forward, lm_stats, lm_destroy (gpu/cuda_api.h, version 3). Never
 * included outside src/cuda/. */
#ifndef CB_CUDA_LLM_MODEL_H
#define CB_CUDA_LLM_MODEL_H

#include "gpu/cuda_api.h"

int cb__cuda_lm_create(const cb_cuda_lm_desc *d, cb_cuda_lm **out, cb_error *err);
int cb__cuda_lm_forward(cb_cuda_lm *m, const cb_cuda_lm_seq *seqs, int n_seqs, cb_error *err);
void cb__cuda_lm_stats(const cb_cuda_lm *m, cb_cuda_lm_stats *out);
void cb__cuda_lm_destroy(cb_cuda_lm *m);

#endif
