/* experiment/env.h - env.json: where and with what a run was made.
 * Host name, CPU model (/proc/cpuinfo), online cores, kernel (uname), compiler (__VERSION__),
 * colobench version, wall-clock start (ISO 8601 UTC and ns), command line, CPU affinity, the
 * environment variables that change what a run does or measures (CUDA_*, MPS and NVIDIA
 * settings, OpenMP/oneDNN/BLAS threading, TMPDIR, PATH and the library paths, COLOBENCH_*), and
 * every shared object the run loaded or will load on its own decision (plugins, the NVML
 * library). */
#ifndef CB_EXPERIMENT_ENV_H
#define CB_EXPERIMENT_ENV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "colobench/error.h"

typedef struct cb_env_library {
    const char *path;           /* as loaded (a plugin's real path) or as it will be dlopen'ed */
    const char *why;            /* "plugin (plugin_paths)", "nvml (COLOBENCH_NVML_LIBRARY)", ... */
} cb_env_library;

int cb_env_write_json(FILE *out, int64_t wall_start_ns, int argc, char *const *argv,
                      const cb_env_library *libs, size_t n_libs, cb_error *err);

#endif
