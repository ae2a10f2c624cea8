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

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "gpu/cuda_api.h"

int cb__cuda_fail(cb_error *err, cudaError_t e, const char *call, const char *file, int line);
int cb__cudnn_fail(cb_error *err, cudnnStatus_t s, const char *call, const char *file, int line);
int cb__cublas_fail(cb_error *err, cublasStatus_t s, const char *call, const char *file, int line);

#define CB__CUDA(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cb__cuda_fail(err, e_, #call, __FILE__, __LINE__);           \
    } while (0)

#define CB__CUDNN(call)                                                                            \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS) return cb__cudnn_fail(err, s_, #call, __FILE__, __LINE__); \
    } while (0)

#define CB__CUBLAS(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return cb__cublas_fail(err, s_, #call, __FILE__, __LINE__);                            \
    } while (0)

/* The cuDNN/cuBLAS backend of src/nn (nn_backend.c). */
extern const cb_nn_backend cb__cuda_nn_backend;

/* Makes device `ordinal` current on the calling thread (each call from a stage thread does it:
 * the current device is per thread). */
int cb__cuda_set_device(int ordinal, cb_error *err);

/* Waiting for the device (gpu/wait.h): an event made for the policy (timing enabled;
 * cudaEventBlockingSync for CB_GPU_WAIT_BLOCK), and the wait on it: cudaEventSynchronize
 * (block), or cudaEventQuery polled in a loop (spin), with sched_yield() between polls (yield).
 * `what` names the work waited for in the error message. An event that is only timed, never
 * waited on, is made with CB_GPU_WAIT_SPIN (default flags: blocking sync costs nothing there but
 * is not needed). The wait has no time limit: a kernel that never ends holds its thread. */
int cb__cuda_event_create(cudaEvent_t *ev, cb_gpu_wait wait, cb_error *err);
int cb__cuda_wait(cudaEvent_t ev, cb_gpu_wait wait, const char *what, cb_error *err);

/* util.gpu_spin (spin.cu, C linkage) and util.gpu_copy (copy.c): the cb_cuda_api entries. */
int cb__cuda_spin_create(int ordinal, int sms, unsigned flags, cb_gpu_wait wait,
                         cb_cuda_spin **out, cb_error *err);
int cb__cuda_spin_run(cb_cuda_spin *s, int64_t duration_ns, int64_t *device_ns, cb_error *err);
void cb__cuda_spin_destroy(cb_cuda_spin *s);
int cb__cuda_copy_create(int ordinal, size_t bytes, cb_cuda_copy_dir dir, int pinned,
                         cb_gpu_wait wait, cb_cuda_copy **out, cb_error *err);
int cb__cuda_copy_run(cb_cuda_copy *c, int64_t *device_ns, cb_error *err);
void cb__cuda_copy_destroy(cb_cuda_copy *c);

#endif
