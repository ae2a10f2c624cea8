/* cuda/status.c - cuDNN and cuBLAS failures as CB_E* codes with a message naming the call (the
 * CB__CUDNN and CB__CUBLAS macros of cuda_int.h; CB__CUDA's helper is in module.c). */
#include <string.h>

#include "cuda/cuda_int.h"

static const char *cb__base(const char *file) {
    const char *b = strrchr(file, '/');
    return b ? b + 1 : file;
}

int cb__cudnn_fail(cb_error *err, cudnnStatus_t s, const char *call, const char *file, int line) {
    /* cuDNN 9 groups its codes by thousands: 3xxx not supported, 4xxx internal errors (of
     * which host and device allocation failures), 5xxx execution failed. */
    int code = (s >= 3000 && s < 4000) ? CB_EUNSUPPORTED
               : (s == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
                  s == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED) ? CB_ENOMEM
                                                                             : CB_EIO;
    return cb_error_set(err, code, "%s failed: %s (%d) at %s:%d", call, cudnnGetErrorString(s),
                        (int)s, cb__base(file), line);
}

int cb__cublas_fail(cb_error *err, cublasStatus_t s, const char *call, const char *file,
                    int line) {
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? CB_ENOMEM
               : s == CUBLAS_STATUS_NOT_SUPPORTED ? CB_EUNSUPPORTED
                                                  : CB_EIO;
    return cb_error_set(err, code, "%s failed: %s (%d) at %s:%d", call, cublasGetStatusString(s),
                        (int)s, cb__base(file), line);
}
