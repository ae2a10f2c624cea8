/* cuda/nn_kernels.h - the CUDA backend's own kernels (nn_kernels.cu), as plain C launch
 * wrappers: each clears the thread's last error, enqueues its kernel on `stream` and returns
 * cudaGetLastError() (launch errors; execution errors surface when the call waits for its end
 * event). Element counts of 0
 * launch nothing. Shapes are row-major [rows, cols] unless said otherwise. Shared by C (nn_*.c)
 * and nvcc (nn_kernels.cu), so only C types here.
 */
#ifndef CB_CUDA_NN_KERNELS_H
#define CB_CUDA_NN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of activations (and of the 16-bit weight copy): float32, bfloat16, float16.
 * Arithmetic inside every kernel is float32 (double in the loss). */
enum { CB__DT_F32 = 0, CB__DT_BF16 = 1, CB__DT_F16 = 2 };

/* y = a + b (residual add), count elements of type dt. */
cudaError_t cb__k_add(void *y, const void *a, const void *b, int dt, size_t count, cudaStream_t s);
/* dst = src (beta == 0, dst not read) or dst = src + dst (beta != 0): gradient accumulation. */
cudaError_t cb__k_accum(void *dst, const void *src, int dt, size_t count, int beta,
                        cudaStream_t s);
/* dst[i] = src[i] * mul, converting between element types (16-bit weight copies, the input
 * images, logits and the input gradient of mixed-precision executors). */
cudaError_t cb__k_convert(void *dst, int ddt, const void *src, int sdt, size_t count, float mul,
                          cudaStream_t s);
/* y[r, j] += b[j] for a [rows, cols] matrix (linear bias; b float32, y of type dt). */
cudaError_t cb__k_bias_rows(void *y, int dt, const float *b, int rows, int cols, cudaStream_t s);
/* db[j] = sum over r of dy[r, j] (linear bias gradient, float32), summed in row order. */
cudaError_t cb__k_colsum(float *db, const void *dy, int dt, int rows, int cols, cudaStream_t s);
/* NCHW y[n, c, hw] += b[c] (convolution bias of a 16-bit executor; b float32). */
cudaError_t cb__k_bias_chan(void *y, int dt, const float *b, int n, int c, int hw,
                            cudaStream_t s);
/* db[c] = sum over n and hw of dy[n, c, hw] (float32; convolution bias gradient of a 16-bit
 * executor). */
cudaError_t cb__k_chan_sum(float *db, const void *dy, int dt, int n, int c, int hw,
                           cudaStream_t s);
/* Softmax cross-entropy of logits z [n, classes] (type dt) against labels: per row its loss
 * (double, log-sum-exp with the row maximum subtracted) and whether argmax (lowest index among
 * ties, as torch.argmax) equals the label; dz (type dt, or NULL) = scale * (softmax - onehot) /
 * n (scale: the loss scale of fp16 training, else 1). */
cudaError_t cb__k_xent(const void *z, int dt, const int32_t *labels, int n, int classes, void *dz,
                       float scale, double *loss_rows, int32_t *correct, cudaStream_t s);
/* GradScaler's unscale: g *= inv for every element; *found = 1 when any result is inf or NaN
 * (*found is only ever set, never cleared: clear it before). */
cudaError_t cb__k_unscale(float *g, size_t count, float inv, int32_t *found, cudaStream_t s);
/* torch.optim.SGD over flat arrays: d = g + wd * w; with m (momentum buffer, NULL when
 * momentum is 0): m = first ? d : mom * m + d, w -= lr * (nesterov ? d + mom * m : m);
 * without: w -= lr * d. Nothing happens when skip != NULL and *skip != 0 (a step GradScaler
 * skips). */
cudaError_t cb__k_sgd(float *w, const float *g, float *m, size_t count, float lr, float wd,
                      float mom, int first, int nesterov, const int32_t *skip, cudaStream_t s);
/* torch.optim.Adam over flat arrays: d = g + wd * w; m1 = b1 m1 + (1 - b1) d;
 * m2 = b2 m2 + (1 - b2) d^2; w -= step * m1 / (sqrt(m2) / bc2 + eps), where step = lr / (1 -
 * b1^t) and bc2 = sqrt(1 - b2^t) (PyTorch's formulation). skip as for SGD. */
cudaError_t cb__k_adam(float *w, const float *g, float *m1, float *m2, size_t count, float step,
                       float bc2, float b1, float b2, float eps, float wd, const int32_t *skip,
                       cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
