/* monitor/nvml.h - NVML loaded at run time with dlopen: no build-time dependency on the NVIDIA
 * driver or headers. nvml.c declares the few NVML types and constants it uses (values from the
 * published nvml.h ABI) and resolves every function by name; a missing optional function (GPM on
 * an old driver) disables what needs it, never the whole layer.
 *
 * Used by the gpu monitor source (monitor.c) and by the collocation launcher to check MIG
 * instances before anything starts. colobench never changes a GPU setting: only queries.
 *
 * Thread-safety: NVML itself is thread-safe; a cb_nvml handle is used by one thread at a time
 * (the sampler, or the launcher before the sampler starts). Ownership: strings returned in
 * caller buffers.
 */
#ifndef CB_MONITOR_NVML_H
#define CB_MONITOR_NVML_H

#include <stddef.h>

#include "colobench/error.h"

typedef struct cb_nvml cb_nvml;

/* dlopen(library or "libnvidia-ml.so.1") and nvmlInit_v2. Errors: CB_ENOENT when the library
 * cannot be loaded ("nvml: libnvidia-ml.so.1: cannot open shared object file ..."),
 * CB_EUNSUPPORTED when init fails or there is no GPU (message has NVML's error string). */
int cb_nvml_open(const char *library, cb_nvml **out, cb_error *err);
void cb_nvml_close(cb_nvml *n); /* nvmlShutdown + dlclose; NULL is a no-op */

int cb_nvml_device_count(const cb_nvml *n);

/* Resolves a MIG device named by the user into the UUID that CUDA_VISIBLE_DEVICES accepts:
 *   "MIG-<uuid>"   must be an existing MIG device on some GPU;
 *   "mig:I"        MIG device index I on GPU 0;  "mig:G:I"  MIG device index I on GPU G.
 * Errors (CB_ENOENT / CB_ECONFIG) say which GPU, whether MIG mode is off, and list the MIG
 * devices that do exist. Never creates or changes anything. */
int cb_nvml_resolve_mig(cb_nvml *n, const char *device, char *uuid, size_t uuid_size,
                        cb_error *err);

/* Checks that GPU index g exists ("cuda:g"); error lists the device count. */
int cb_nvml_check_gpu(cb_nvml *n, int g, cb_error *err);

#endif
