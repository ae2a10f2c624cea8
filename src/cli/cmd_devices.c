/* cli/cmd_devices.c - `colobench devices` (see cmd_devices.h).
 *
 * What a user checks first on a new machine, and what scripts test before a GPU benchmark
 * (`colobench devices >/dev/null || exit`): which CUDA module this build loads, and the
 * versions of the CUDA stack it runs on (driver, runtime, cuDNN, cuBLAS) against those it was
 * built with, and the devices behind it (name, compute capability, SMs, memory), or the
 * one-line reason there are none. It makes no CUDA call beyond the version and device queries.
 */
#include "cli/cmd_devices.h"

#include <stdio.h>
#include <string.h>

#include "gpu/cuda.h"

int cb_cli_devices(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            puts("usage: colobench devices\n"
                 "prints the CUDA module and the CUDA devices it sees; exit 0 when at least one\n"
                 "device is usable, 1 when none (and why)");
            return 0;
        }
        fprintf(stderr, "colobench devices: unexpected argument '%s'\n", argv[i]);
        return 2;
    }
    cb_error err;
    cb_error_clear(&err);
    cb_cuda c;
    if (cb_cuda_open(&c, &err) != CB_OK) {
        printf("cuda: %s\n", err.msg);
        return 1;
    }
    printf("cuda module: %s (%s)\n", c.path, c.api->build);
    cb_cuda_versions v;
    int vrc = c.api->versions(&v, &err);
    printf("cuda stack: driver %d.%d, runtime %d.%d (built %d.%d), cuDNN %d.%d.%d for CUDA %d.%d "
           "(built %d.%d.%d), cuBLAS %d.%d.%d (built %d.%d.%d)\n",
           v.driver / 1000, v.driver % 1000 / 10, v.runtime / 1000, v.runtime % 1000 / 10,
           v.built_runtime / 1000, v.built_runtime % 1000 / 10, v.cudnn / 10000,
           v.cudnn / 100 % 100, v.cudnn % 100, v.cudnn_cudart / 1000, v.cudnn_cudart % 1000 / 10,
           v.built_cudnn / 10000, v.built_cudnn / 100 % 100, v.built_cudnn % 100,
           v.cublas / 10000, v.cublas / 100 % 100, v.cublas % 100, v.built_cublas / 10000,
           v.built_cublas / 100 % 100, v.built_cublas % 100);
    if (vrc != CB_OK) {
        printf("cuda devices: unusable: %s\n", err.msg);
        cb_cuda_close(&c);
        return 1;
    }
    cb_error_clear(&err);
    int n = 0;
    if (c.api->device_count(&n, &err) != CB_OK) {
        printf("cuda devices: none: %s\n", err.msg);
        cb_cuda_close(&c);
        return 1;
    }
    int usable = 0;
    for (int i = 0; i < n; i++) {
        cb_cuda_device_info d;
        cb_error_clear(&err);
        if (c.api->device_info(i, &d, &err) != CB_OK) {
            printf("cuda:%d  unusable: %s\n", i, err.msg);
            continue;
        }
        usable++;
        printf("cuda:%d  %s  sm_%d%d  %d SMs  %.1f GiB (%.1f GiB free)  %.0f MHz\n", i, d.name,
               d.major, d.minor, d.sms, (double)d.memory_bytes / (1024.0 * 1024.0 * 1024.0),
               (double)d.free_bytes / (1024.0 * 1024.0 * 1024.0), (double)d.clock_khz / 1000.0);
    }
    cb_cuda_close(&c);
    return usable > 0 ? 0 : 1;
}
