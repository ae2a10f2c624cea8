/* cuda/nn_kernels.h - the CUDA backend's own kernels (nn_kernels.cu), as plain C launch
 * wrappers: each enqueues its kernel on `stream` and returns cudaGetLastError() (launch
 * errors; execution errors surface at the call's stream synchronisation). Element counts of 0
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

/* y = a + b (residual add), count floats. */
cudaError_t cb__k_add(float *y, const float *a, const float *b, size_t count, cudaStream_t s);
/* dst = src (beta == 0, dst not read) or dst = src + dst (beta != 0): gradient accumulation. */
cudaError_t cb__k_accum(float *dst, const float *src, size_t count, int beta, cudaStream_t s);
/* y[r, j] += b[j] for a [rows, cols] matrix (linear bias). */
cudaError_t cb__k_bias_rows(float *y, const float *b, int rows, int cols, cudaStream_t s);
/* db[j] = sum over r of dy[r, j] (linear bias gradient), summed in row order. */
cudaError_t cb__k_colsum(float *db, const float *dy, int rows, int cols, cudaStream_t s);
/* Softmax cross-entropy of logits z [n, classes] against labels: per row its loss (double,
 * log-sum-exp with the row maximum subtracted) and whether argmax (lowest index among ties, as
 * torch.argmax) equals the label; dz (or NULL) = (softmax - onehot) / n. */
cudaError_t cb__k_xent(const float *z, const int32_t *labels, int n, int classes, float *dz,
                       double *loss_rows, int32_t *correct, cudaStream_t s);
/* torch.optim.SGD over flat arrays: d = g + wd * w; with m (momentum buffer, NULL when
 * momentum is 0): m = first ? d : mom * m + d, w -= lr * (nesterov ? d + mom * m : m);
 * without: w -= lr * d. */
cudaError_t cb__k_sgd(float *w, const float *g, float *m, size_t count, float lr, float wd,
                      float mom, int first, int nesterov, cudaStream_t s);
/* torch.optim.Adam over flat arrays: d = g + wd * w; m1 = b1 m1 + (1 - b1) d;
 * m2 = b2 m2 + (1 - b2) d^2; w -= step * m1 / (sqrt(m2) / bc2 + eps), where step = lr / (1 -
 * b1^t) and bc2 = sqrt(1 - b2^t) (PyTorch's formulation). */
cudaError_t cb__k_adam(float *w, const float *g, float *m1, float *m2, size_t count, float step,
                       float bc2, float b1, float b2, float eps, float wd, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
