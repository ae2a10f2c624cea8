// cuda/nn_kernels.cu - the CUDA backend's own kernels: residual add, gradient accumulation,
// linear bias forward and backward, softmax cross-entropy with accuracy and its gradient, and
// the fused optimizers (SGD, Adam) over the flat parameter arrays. Everything else (convolution,
// batch norm, pooling, ReLU, matrix products) is cuDNN or cuBLAS (nn_layers.c).
//
// Each wrapper launches on the caller's stream and returns cudaGetLastError(). Grid-stride loops
// with 256-thread blocks and at most 4096 blocks; elementwise kernels index with size_t.
#include "cuda/nn_kernels.h"

#include <math.h>

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t count) {
    size_t b = (count + kThreads - 1) / kThreads;
    return (unsigned)(b < 4096 ? b : 4096);
}

__global__ void add_kernel(float *y, const float *a, const float *b, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

__global__ void accum_kernel(float *dst, const float *src, size_t count, int beta) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = beta ? dst[i] + src[i] : src[i];
}

__global__ void bias_rows_kernel(float *y, const float *b, int rows, int cols) {
    size_t count = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[i % cols];
}

__global__ void colsum_kernel(float *db, const float *dy, int rows, int cols) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
        float s = 0;
        for (int r = 0; r < rows; r++) s += dy[(size_t)r * cols + j];
        db[j] = s;
    }
}

// One thread per row: class counts are small (10 to 1000) and so is n; double arithmetic so the
// loss matches the CPU backend's to double rounding.
__global__ void xent_kernel(const float *z, const int32_t *labels, int n, int classes, float *dz,
                            double *loss_rows, int32_t *correct) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float *row = z + (size_t)i * classes;
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (row[k] > row[best]) best = k;
        double sum = 0;
        for (int k = 0; k < classes; k++) sum += exp((double)row[k] - (double)row[best]);
        double lse = (double)row[best] + log(sum);
        int y = labels[i];
        loss_rows[i] = lse - (double)row[y];
        correct[i] = best == y;
        if (!dz) continue;
        float *d = dz + (size_t)i * classes;
        for (int k = 0; k < classes; k++)
            d[k] = (float)((exp((double)row[k] - lse) - (k == y ? 1.0 : 0.0)) / n);
    }
}

__global__ void sgd_kernel(float *w, const float *g, float *m, size_t count, float lr, float wd,
                           float mom, int first, int nesterov) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float d = g[i] + wd * w[i];
        if (!m) {
            w[i] -= lr * d;
            continue;
        }
        float buf = first ? d : mom * m[i] + d;
        m[i] = buf;
        w[i] -= lr * (nesterov ? d + mom * buf : buf);
    }
}

__global__ void adam_kernel(float *w, const float *g, float *m1, float *m2, size_t count,
                            float step, float bc2, float b1, float b2, float eps, float wd) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float d = g[i] + wd * w[i];
        float a = b1 * m1[i] + (1 - b1) * d;
        float v = b2 * m2[i] + (1 - b2) * d * d;
        m1[i] = a;
        m2[i] = v;
        w[i] -= step * a / (sqrtf(v) / bc2 + eps);
    }
}

}  // namespace

extern "C" cudaError_t cb__k_add(float *y, const float *a, const float *b, size_t count,
                                 cudaStream_t s) {
    if (count) add_kernel<<<blocks_for(count), kThreads, 0, s>>>(y, a, b, count);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_accum(float *dst, const float *src, size_t count, int beta,
                                   cudaStream_t s) {
    if (count) accum_kernel<<<blocks_for(count), kThreads, 0, s>>>(dst, src, count, beta);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_bias_rows(float *y, const float *b, int rows, int cols,
                                       cudaStream_t s) {
    size_t count = (size_t)rows * cols;
    if (count) bias_rows_kernel<<<blocks_for(count), kThreads, 0, s>>>(y, b, rows, cols);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_colsum(float *db, const float *dy, int rows, int cols,
                                    cudaStream_t s) {
    if (cols > 0) colsum_kernel<<<blocks_for((size_t)cols), kThreads, 0, s>>>(db, dy, rows, cols);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_xent(const float *z, const int32_t *labels, int n, int classes,
                                  float *dz, double *loss_rows, int32_t *correct, cudaStream_t s) {
    if (n > 0)
        xent_kernel<<<blocks_for((size_t)n), kThreads, 0, s>>>(z, labels, n, classes, dz,
                                                               loss_rows, correct);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_sgd(float *w, const float *g, float *m, size_t count, float lr,
                                 float wd, float mom, int first, int nesterov, cudaStream_t s) {
    if (count)
        sgd_kernel<<<blocks_for(count), kThreads, 0, s>>>(w, g, m, count, lr, wd, mom, first,
                                                          nesterov);
    return cudaGetLastError();
}

extern "C" cudaError_t cb__k_adam(float *w, const float *g, float *m1, float *m2, size_t count,
                                  float step, float bc2, float b1, float b2, float eps, float wd,
                                  cudaStream_t s) {
    if (count)
        adam_kernel<<<blocks_for(count), kThreads, 0, s>>>(w, g, m1, m2, count, step, bc2, b1, b2,
                                                           eps, wd);
    return cudaGetLastError();
}
