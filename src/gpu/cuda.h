/* gpu/cuda.h - finding and loading the CUDA module (gpu/cuda_api.h) at run time.
 *
 * A cb_cuda is one dlopen reference to the module plus its checked API table; whoever needs
 * CUDA (an executor on cuda:N, a GPU stage) opens its own and closes it when done. dlopen
 * counts references, so there is no process-wide state here; the module is opened with
 * RTLD_NODELETE because the CUDA runtime must never be unloaded from a live process.
 *
 * Where the module is looked for, first found wins:
 *   1. $CB_CUDA_MODULE (a path; tests and unusual installs)
 *   2. DIR/lib/colobench_cuda.so, DIR being the directory of the running executable (the build
 *      tree: build/colobench and build/lib/), then DIR/../lib/colobench/colobench_cuda.so
 *   3. the path this build wrote it to (CB_CUDA_MODULE_BUILD_PATH)
 * A build without the toolkit has no module; every open then fails with a message that says
 * so.
 */
#ifndef CB_GPU_CUDA_H
#define CB_GPU_CUDA_H

#include "gpu/cuda_api.h"

typedef struct cb_cuda {
    void *handle;                  /* dlopen handle, NULL when closed */
    const cb_cuda_api *api;
    char path[512];                /* where the module was loaded from */
} cb_cuda;

/* 1 when this build made a CUDA module (the toolkit was there at build time). */
int cb_cuda_built(void);

/* Loads the module (no CUDA call is made). Errors: CB_EUNSUPPORTED for a build without CUDA or
 * a module that cannot be loaded, with the reason. A loaded module has every entry of
 * cb_cuda_api (checked here, once, for every user). */
int cb_cuda_open(cb_cuda *c, cb_error *err);

/* Loads the module and checks that device `ordinal` exists: CB_EUNSUPPORTED with "CUDA devices
 * are unavailable: ..." (no driver, no GPU) or "device cuda:N does not exist (M visible)";
 * CB_EABI when the machine's CUDA stack cannot run this module (driver older than the CUDA it
 * was built with, cuDNN/cuBLAS of another major version). */
int cb_cuda_open_device(cb_cuda *c, int ordinal, cb_error *err);

void cb_cuda_close(cb_cuda *c);    /* a closed or zeroed cb_cuda is a no-op */

/* Parses "cuda:N" (N a non-negative decimal ordinal) into *ordinal. 0, or CB_EINVAL for any
 * other text. "cpu" is not a CUDA device (CB_EINVAL). */
int cb_cuda_parse_device(const char *device, int *ordinal, cb_error *err);

#endif
