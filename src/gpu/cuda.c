/* gpu/cuda.c - the CUDA module loader (see gpu/cuda.h). */
#include "gpu/cuda.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cb_cuda_built(void) {
#ifdef CB_CUDA_MODULE_BUILD_PATH
    return 1;
#else
    return 0;
#endif
}

int cb_cuda_parse_device(const char *device, int *ordinal, cb_error *err) {
    if (!device || strncmp(device, "cuda:", 5) != 0 || device[5] == '\0')
        return cb_error_set(err, CB_EINVAL, "device \"%s\" is not cuda:N", device ? device : "");
    long v = 0;
    for (const char *p = device + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > 4096)
            return cb_error_set(err, CB_EINVAL, "device \"%s\": N in cuda:N must be a number",
                                device);
        v = v * 10 + (*p - '0');
    }
    if (v > 4096) return cb_error_set(err, CB_EINVAL, "device \"%s\": ordinal too large", device);
    *ordinal = (int)v;
    return CB_OK;
}

static int cb__try(cb_cuda *c, const char *path, char *why, size_t why_size) {
    if (access(path, F_OK) != 0) return 0;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, why_size, "cannot load %s: %s", path, e ? e : "unknown error");
        return -1;
    }
    const cb_cuda_api *api = (const cb_cuda_api *)dlsym(h, CB_CUDA_ENTRY_SYMBOL);
    if (!api) {
        snprintf(why, why_size, "%s has no symbol %s", path, CB_CUDA_ENTRY_SYMBOL);
        dlclose(h);
        return -1;
    }
    if (api->version != CB_CUDA_API_VERSION || api->struct_size < sizeof(cb_cuda_api)) {
        snprintf(why, why_size, "%s is a module of another colobench build (version %u, size %u;"
                 " expected %d, %zu)", path, api->version, api->struct_size, CB_CUDA_API_VERSION,
                 sizeof(cb_cuda_api));
        dlclose(h);
        return -1;
    }
    if (!api->device_count || !api->device_info || !api->nn || !api->spin_create ||
        !api->spin_run || !api->spin_destroy || !api->copy_create || !api->copy_run ||
        !api->copy_destroy || !api->versions || !api->lm_create || !api->lm_forward ||
        !api->lm_stats || !api->lm_destroy) {
        snprintf(why, why_size, "%s lacks entries of its table (a module of another build)", path);
        dlclose(h);
        return -1;
    }
    c->handle = h;
    c->api = api;
    snprintf(c->path, sizeof c->path, "%s", path);
    return 1;
}

int cb_cuda_open(cb_cuda *c, cb_error *err) {
    memset(c, 0, sizeof *c);
    char why[1024] = "";
    const char *env = getenv("CB_CUDA_MODULE");
    if (env && env[0]) {
        int r = cb__try(c, env, why, sizeof why);
        if (r > 0) return CB_OK;
        if (r == 0) snprintf(why, sizeof why, "CB_CUDA_MODULE=%s does not exist", env);
        return cb_error_set(err, CB_EUNSUPPORTED, "CUDA unavailable: %s", why);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char path[PATH_MAX + 64];
            snprintf(path, sizeof path, "%s/lib/colobench_cuda.so", exe);
            int r = cb__try(c, path, why, sizeof why);
            if (r > 0) return CB_OK;
            if (r < 0) return cb_error_set(err, CB_EUNSUPPORTED, "CUDA unavailable: %s", why);
            snprintf(path, sizeof path, "%s/../lib/colobench/colobench_cuda.so", exe);
            r = cb__try(c, path, why, sizeof why);
            if (r > 0) return CB_OK;
            if (r < 0) return cb_error_set(err, CB_EUNSUPPORTED, "CUDA unavailable: %s", why);
        }
    }
#ifdef CB_CUDA_MODULE_BUILD_PATH
    int r = cb__try(c, CB_CUDA_MODULE_BUILD_PATH, why, sizeof why);
    if (r > 0) return CB_OK;
    if (r < 0) return cb_error_set(err, CB_EUNSUPPORTED, "CUDA unavailable: %s", why);
    return cb_error_set(err, CB_EUNSUPPORTED,
                        "CUDA unavailable: the CUDA module colobench_cuda.so was not found (next to"
                        " the executable in lib/, or at %s): build the colobench_cuda target",
                        CB_CUDA_MODULE_BUILD_PATH);
#else
    return cb_error_set(err, CB_EUNSUPPORTED,
                        "CUDA unavailable: this colobench was built without CUDA (no CUDA toolkit"
                        " with cuDNN at build time); rebuild where /usr/local/cuda is installed");
#endif
}

int cb_cuda_open_device(cb_cuda *c, int ordinal, cb_error *err) {
    int rc = cb_cuda_open(c, err);
    if (rc) return rc;
    int count = 0;
    rc = c->api->device_count(&count, err);
    if (rc) {
        /* CB_EABI (a CUDA stack the module cannot run on) stays itself: a machine with a GPU
         * to fix, not one without. */
        int code = rc == CB_EABI ? CB_EABI : CB_EUNSUPPORTED;
        cb_error_prefix(err, "CUDA devices are unavailable");
        if (err) err->code = code;
        cb_cuda_close(c);
        return code;
    }
    if (ordinal < 0 || ordinal >= count) {
        cb_cuda_close(c);
        return cb_error_set(err, CB_EUNSUPPORTED, "device cuda:%d does not exist (%d CUDA device%s"
                            " visible)", ordinal, count, count == 1 ? "" : "s");
    }
    return CB_OK;
}

void cb_cuda_close(cb_cuda *c) {
    if (!c || !c->handle) return;
    dlclose(c->handle);
    c->handle = NULL;
    c->api = NULL;
}
