/* cuda/nn_own.h - the CUDA backend's own kernels for batch norm, ReLU and 2-D pooling
 * (nn_own.cu), exact re-implementations of PyTorch's semantics for every activation type
 * (CB__DT_F32, CB__DT_BF16, CB__DT_F16 of nn_kernels.h), float32 arithmetic inside. They stand
 * in for legacy cuDNN where it does not support the type (bfloat16 batch norm) and, in a test
 * mode, for float32 executors too (checked against the CPU backend).
 *
 * Every tensor is NCHW packed; parameters and statistics (gamma, beta, running and saved
 * statistics, dgamma, dbeta) are float32 arrays of c elements. Each wrapper first clears a
 * pending non-sticky error (cudaGetLastError), enqueues its kernel on `s` and returns
 * cudaGetLastError() (launch errors; execution errors surface at the stream's synchronisation).
 * Element counts of 0 (or negative dimensions) launch nothing. All
 * kernels are deterministic (fixed summation orders, no atomics). Shared by C (nn_layers.c) and
 * nvcc (nn_own.cu), so only C types here.
 */
#ifndef CB_CUDA_NN_OWN_H
#define CB_CUDA_NN_OWN_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "cuda/nn_kernels.h" /* CB__DT_* */

#ifdef __cplusplus
extern "C" {
#endif

/* Batch norm, training forward (spatial: per channel over the M = n * hw values of x[:, ch]):
 *   mean = sum(x) / M, var = sum((x - mean)^2) / M (biased; two passes),
 *   invstd = 1 / sqrt(var + eps), y = (x - mean) * invstd * gamma + beta;
 *   run_mean = (1 - momentum) * run_mean + momentum * mean,
 *   run_var = (1 - momentum) * run_var + momentum * var * M / (M - 1)   (var itself when M == 1);
 *   save_mean[ch] = mean, save_invstd[ch] = invstd (for cb__k_bn_bwd).
 * gamma == NULL means 1, beta == NULL means 0; run_mean/run_var == NULL: no running update;
 * save_mean/save_invstd == NULL: not saved. y may be x (in place). */
cudaError_t cb__k_bn_train_fwd(const void *x, void *y, int dt, int n, int c, int hw,
                               const float *gamma, const float *beta, float momentum, float eps,
                               float *run_mean, float *run_var, float *save_mean,
                               float *save_invstd, cudaStream_t s);
/* Batch norm, inference: y = (x - run_mean) / sqrt(run_var + eps) * gamma + beta (per channel;
 * gamma/beta NULL as above). y may be x. */
cudaError_t cb__k_bn_infer_fwd(const void *x, void *y, int dt, int n, int c, int hw,
                               const float *gamma, const float *beta, const float *run_mean,
                               const float *run_var, float eps, cudaStream_t s);
/* Batch norm backward (training mode), xhat = (x - save_mean) * save_invstd:
 *   dgamma[ch] = sum(dy * xhat), dbeta[ch] = sum(dy)   (written, not accumulated; either may be
 *   NULL: not written),
 *   dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma), computed as PyTorch's CUDA
 *   kernel does: (dy - dbeta / M - xhat * dgamma / M) * (gamma * invstd);
 *   dx written when accum == 0, added to dx when accum != 0; dx == NULL: only dgamma/dbeta.
 * gamma == NULL means 1. dx may be x or dy (each element is read and written by one thread). */
cudaError_t cb__k_bn_bwd(const void *x, const void *dy, void *dx, int dt, int n, int c, int hw,
                         const float *gamma, const float *save_mean, const float *save_invstd,
                         float *dgamma, float *dbeta, int accum, cudaStream_t s);
/* ReLU: y = x > 0 ? x : 0, NaN propagates (y = NaN where x is NaN), as cuDNN with
 * CUDNN_PROPAGATE_NAN and torch.relu. y may be x. */
cudaError_t cb__k_relu_fwd(const void *x, void *y, int dt, size_t count, cudaStream_t s);
/* ReLU backward from the output: g = y > 0 ? dy : 0, so 0 where y is NaN (PyTorch's
 * threshold_backward, y <= 0 ? 0 : dy, would pass dy there); dx = g (accum == 0) or dx += g.
 * dx may be y or dy. */
cudaError_t cb__k_relu_bwd(const void *y, const void *dy, void *dx, int dt, size_t count,
                           int accum, cudaStream_t s);
/* 2-D pooling of x [n, c, h, w] into y [n, c, oh, ow]: window kh x kw, stride sh x sw, implicit
 * padding ph x pw. Output window (oy, ox) spans rows hs = oy * sh - ph .. hs + kh - 1 and columns
 * ws = ox * sw - pw .. ws + kw - 1.
 * max != 0: y = max over the window's in-bounds elements (padding never a candidate); the
 *   argmax is found by scanning rows then columns and replacing when (v > best || isnan(v)), as
 *   PyTorch, so NaN propagates; a window with no in-bounds element gives -inf.
 * max == 0: average with count_include_pad = True, PyTorch's divisor taken literally:
 *   (min(hs + kh, h + ph) - hs) * (min(ws + kw, w + pw) - ws) (kh * kw unless a ceil_mode window
 *   runs past the padded border), y = sum of the in-bounds elements / divisor (0 when none).
 * oh, ow are trusted (oh = (h + 2 ph - kh) / sh + 1 without ceil_mode). Needs kh, kw, sh, sw >= 1
 * and ph, pw >= 0, else returns cudaErrorInvalidValue without launching. y must not overlap x. */
cudaError_t cb__k_pool_fwd(const void *x, void *y, int dt, int max, int n, int c, int h, int w,
                           int oh, int ow, int kh, int kw, int sh, int sw, int ph, int pw,
                           cudaStream_t s);
/* Pooling backward, deterministic gather (one thread per input element, no atomics): for input
 * (ih, iw) the windows covering it are oy in [ih + ph < kh ? 0 : (ih + ph - kh) / sh + 1,
 * min(oh - 1, (ih + ph) / sh)] and likewise ox, visited in row-major order;
 * max: g = sum of dy[oy, ox] over those windows whose argmax (recomputed from x exactly as in
 *   cb__k_pool_fwd) is (ih, iw);
 * average: g = sum of dy[oy, ox] / divisor(oy, ox) over those windows;
 * dx = g (accum == 0) or dx += g. dx must not overlap x or dy. Parameters as cb__k_pool_fwd. */
cudaError_t cb__k_pool_bwd(const void *x, const void *dy, void *dx, int dt, int max, int n,
                           int c, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw,
                           int ph, int pw, int accum, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
