/* cuda/cuda_int.h - what the CUDA module's files share (never included outside src/cuda/).
 *
 *   module.c      the entry table (cb_cuda_entry), devices, error helpers
 *   nn_*.c, *.cu  the cuDNN/cuBLAS backend of src/nn (cb__cuda_nn)
 *   spin.cu, copy.c  util.gpu_spin and util.gpu_copy
 *
 * Error helpers turn a failing CUDA/cuDNN/cuBLAS status into a CB_E* code and a message that
 * names the call: CB__CUDA(call), CB__CUDNN(call), CB__CUBLAS(call) inside a function that has
 * `cb_error *err` in scope, returning from it on failure.
 */
#ifndef CB_CUDA_CUDA_INT_H
#define CB_CUDA_CUDA_INT_H

#include <cuda_runtime_api.h>

#include "gpu/cuda_api.h"

int cb__cuda_fail(cb_error *err, cudaError_t e, const char *call, const char *file, int line);

#define CB__CUDA(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cb__cuda_fail(err, e_, #call, __FILE__, __LINE__);           \
    } while (0)

/* Makes device `ordinal` current on the calling thread (each call from a stage thread does it:
 * the current device is per thread). */
int cb__cuda_set_device(int ordinal, cb_error *err);

#endif
