/* tests/gpu_fixture.h - how a GPU test (label gpu) decides between running, skipping and failing.
 *
 *   skip (exit 77)  this build has no CUDA module, or the machine has no NVIDIA driver and no
 *                   GPU: nothing here can run CUDA, and ctest reports the test as skipped;
 *   fail            the machine has an NVIDIA GPU (/dev/nvidia0 or /proc/driver/nvidia exists)
 *                   but colobench cannot use it: the module does not load (a missing cuDNN), the
 *                   driver is older than the CUDA it was built with, a library is of another
 *                   major version (CB_EABI). A GPU machine must run the GPU tests, so that
 *                   `ctest -L gpu` is never green there without having run them.
 *
 *   cb_cuda c;
 *   if (gpu_fixture_open(&c, 0)) return cb_test_done();   (skipped or failed, with the reason)
 */
#ifndef CB_TESTS_GPU_FIXTURE_H
#define CB_TESTS_GPU_FIXTURE_H

#include <unistd.h>

#include "gpu/cuda.h"
#include "harness.h"

static inline int gpu_fixture_has_nvidia(void) {
    return access("/dev/nvidia0", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0;
}

/* 0: device `ordinal` is open in *c (close it with cb_cuda_close); 1: the test is skipped or
 * failed (already reported); return cb_test_done() then. */
static inline int gpu_fixture_open(cb_cuda *c, int ordinal) {
    cb_error err;
    cb_error_clear(&err);
    memset(c, 0, sizeof *c);
    int rc = cb_cuda_open_device(c, ordinal, &err);
    if (rc == CB_OK) {
        cb_cuda_versions v;
        cb_error verr;
        cb_error_clear(&verr);
        if (c->api->versions(&v, &verr) == CB_OK)
            printf("# CUDA driver %d, runtime %d, cuDNN %d (for CUDA %d), cuBLAS %d\n", v.driver,
                   v.runtime, v.cudnn, v.cudnn_cudart, v.cublas);
        return 0;
    }
    if (rc == CB_EUNSUPPORTED && (!cb_cuda_built() || !gpu_fixture_has_nvidia())) {
        cb_test_skip(err.msg);
        return 1;
    }
    cb__test_fail(__FILE__, __LINE__, "this machine has an NVIDIA GPU, but colobench cannot use "
                  "it: %s", err.msg);
    return 1;
}

#endif
