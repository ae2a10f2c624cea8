/* monitor/nvml.c - NVML through dlopen (see nvml.h) and the gpu monitor source.
 *
 * Design: no build-time dependency on the driver. The few NVML types and constants used are
 * declared below with the values of the published nvml.h (checked against the CUDA 12 header:
 * return codes, nvmlMemory_t, nvmlUtilization_t, nvmlProcessUtilizationSample_t, the GPM
 * structs and metric ids). Every function is resolved by name; only init/shutdown/count/handle
 * are required. An optional function that is missing, or that answers NOT_SUPPORTED /
 * NO_PERMISSION / FUNCTION_NOT_FOUND, disables that metric on that GPU after one notice; any
 * other error is reported once, skipped while it lasts, and its recovery reported once.
 * nvmlDeviceGetComputeRunningProcesses_v3 has changed its record size across drivers without a
 * version bump (24 bytes in R510 and current drivers, 32 in early R535): the stride is chosen by
 * checking which reading gives plausible records. GPM metrics (Hopper+) come from two samples
 * taken one period apart, used alternately. colobench only queries: it never changes a setting.
 *
 * Thread-safety: NVML is thread-safe; a cb_nvml is used by one thread at a time (the launcher
 * before the sampler starts, then the sampler). Ownership: the cb_nvml owns the library handle,
 * the GPM samples and its per-GPU state; cb_nvml_close releases them.
 */
#include "monitor/nvml.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "monitor/monitor_int.h"

/* ---- the NVML ABI subset (values from nvml.h) ---------------------------------------------- */

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
};
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp; /* CPU timestamp, microseconds */
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;
typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct {
        char *shortName, *longName, *unit;
    } metricInfo;
} nvmlGpmMetric_t;
#define CB_NVML_GPM_METRIC_MAX 98 /* NVML_GPM_METRIC_MAX of the reference header; only
                                     numMetrics entries are read by the library */
typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1, sample2;
    nvmlGpmMetric_t metrics[CB_NVML_GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;
typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;
#define NVML_GPM_METRICS_GET_VERSION 1
#define NVML_GPM_SUPPORT_VERSION 1
enum { NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2 };
enum { NVML_TEMPERATURE_GPU = 0 };
enum { NVML_PCIE_UTIL_TX_BYTES = 0, NVML_PCIE_UTIL_RX_BYTES = 1 };
enum { NVML_DEVICE_MIG_ENABLE = 1 };
enum {
    NVML_GPM_METRIC_SM_UTIL = 2,         /* % of SMs busy: "SM activity" */
    NVML_GPM_METRIC_SM_OCCUPANCY = 3,    /* % of warps active vs theoretical maximum */
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5, /* % of time any tensor pipe was active */
    NVML_GPM_METRIC_DRAM_BW_UTIL = 10,   /* % of DRAM bandwidth used */
};
#define NVML_DEVICE_UUID_V2_BUFFER_SIZE 96
#define NVML_VALUE_NOT_AVAILABLE_ULL 0xFFFFFFFFFFFFFFFFULL

#define CB_NVML_FUNCS(X)                                                                           \
    X(1, nvmlInit_v2, nvmlReturn_t, (void))                                                        \
    X(1, nvmlShutdown, nvmlReturn_t, (void))                                                       \
    X(1, nvmlErrorString, const char *, (nvmlReturn_t))                                            \
    X(1, nvmlDeviceGetCount_v2, nvmlReturn_t, (unsigned int *))                                    \
    X(1, nvmlDeviceGetHandleByIndex_v2, nvmlReturn_t, (unsigned int, nvmlDevice_t *))              \
    X(0, nvmlDeviceGetUUID, nvmlReturn_t, (nvmlDevice_t, char *, unsigned int))                    \
    X(0, nvmlDeviceGetUtilizationRates, nvmlReturn_t, (nvmlDevice_t, nvmlUtilization_t *))         \
    X(0, nvmlDeviceGetMemoryInfo, nvmlReturn_t, (nvmlDevice_t, nvmlMemory_t *))                    \
    X(0, nvmlDeviceGetPowerUsage, nvmlReturn_t, (nvmlDevice_t, unsigned int *))                    \
    X(0, nvmlDeviceGetClockInfo, nvmlReturn_t, (nvmlDevice_t, int, unsigned int *))               \
    X(0, nvmlDeviceGetTemperature, nvmlReturn_t, (nvmlDevice_t, int, unsigned int *))             \
    X(0, nvmlDeviceGetTotalEnergyConsumption, nvmlReturn_t, (nvmlDevice_t, unsigned long long *)) \
    X(0, nvmlDeviceGetPcieThroughput, nvmlReturn_t, (nvmlDevice_t, int, unsigned int *))          \
    X(0, nvmlDeviceGetCurrentClocksEventReasons, nvmlReturn_t,                                     \
      (nvmlDevice_t, unsigned long long *))                                                        \
    X(0, nvmlDeviceGetCurrentClocksThrottleReasons, nvmlReturn_t,                                  \
      (nvmlDevice_t, unsigned long long *))                                                        \
    X(0, nvmlDeviceGetComputeRunningProcesses_v3, nvmlReturn_t,                                    \
      (nvmlDevice_t, unsigned int *, void *))                                                      \
    X(0, nvmlDeviceGetProcessUtilization, nvmlReturn_t,                                            \
      (nvmlDevice_t, nvmlProcessUtilizationSample_t *, unsigned int *, unsigned long long))        \
    X(0, nvmlDeviceGetMigMode, nvmlReturn_t, (nvmlDevice_t, unsigned int *, unsigned int *))      \
    X(0, nvmlDeviceGetMaxMigDeviceCount, nvmlReturn_t, (nvmlDevice_t, unsigned int *))            \
    X(0, nvmlDeviceGetMigDeviceHandleByIndex, nvmlReturn_t,                                        \
      (nvmlDevice_t, unsigned int, nvmlDevice_t *))                                                \
    X(0, nvmlGpmQueryDeviceSupport, nvmlReturn_t, (nvmlDevice_t, nvmlGpmSupport_t *))             \
    X(0, nvmlGpmSampleAlloc, nvmlReturn_t, (nvmlGpmSample_t *))                                    \
    X(0, nvmlGpmSampleFree, nvmlReturn_t, (nvmlGpmSample_t))                                       \
    X(0, nvmlGpmSampleGet, nvmlReturn_t, (nvmlDevice_t, nvmlGpmSample_t))                          \
    X(0, nvmlGpmMetricsGet, nvmlReturn_t, (nvmlGpmMetricsGet_t *))

/* Metrics that can be disabled one by one. */
#define CB_GPU_METRICS(X)                                                                          \
    X(UTIL, "utilization (nvmlDeviceGetUtilizationRates)")                                         \
    X(MEM, "memory (nvmlDeviceGetMemoryInfo)")                                                     \
    X(POWER, "power_watts (nvmlDeviceGetPowerUsage)")                                              \
    X(SMCLK, "sm_clock_mhz (nvmlDeviceGetClockInfo)")                                              \
    X(MEMCLK, "mem_clock_mhz (nvmlDeviceGetClockInfo)")                                            \
    X(TEMP, "temperature_c (nvmlDeviceGetTemperature)")                                            \
    X(ENERGY, "energy_mj (nvmlDeviceGetTotalEnergyConsumption)")                                   \
    X(PCIE_RX, "pcie_rx_bytes_per_s (nvmlDeviceGetPcieThroughput)")                                \
    X(PCIE_TX, "pcie_tx_bytes_per_s (nvmlDeviceGetPcieThroughput)")                                \
    X(THROTTLE, "throttle_reasons (nvmlDeviceGetCurrentClocksEventReasons)")                       \
    X(PROCS, "gpu_mem_bytes per process (nvmlDeviceGetComputeRunningProcesses_v3)")                \
    X(PROCUTIL, "sm_util_percent per process (nvmlDeviceGetProcessUtilization)")                   \
    X(MIG, "MIG devices (nvmlDeviceGetMigMode)")                                                   \
    X(GPM, "GPM metrics (nvmlGpmSampleGet/nvmlGpmMetricsGet)")

enum {
#define X(id, desc) CB__GM_##id,
    CB_GPU_METRICS(X)
#undef X
        CB__GM_N
};
static const char *const cb__gm_desc[CB__GM_N] = {
#define X(id, desc) desc,
    CB_GPU_METRICS(X)
#undef X
};

#define CB_NVML_MAX_MIG 16
#define CB_NVML_MAX_PROCS 4096

typedef struct cb__gpu {
    nvmlDevice_t dev;
    bool have_handle;
    char name[CB_MON_DEVICE_MAX];
    bool disabled[CB__GM_N];
    bool failing[CB__GM_N];
    unsigned long long last_seen_us;
    char mig_names[CB_NVML_MAX_MIG][CB_MON_DEVICE_MAX];
    nvmlGpmSample_t gpm[2];
    int gpm_cur;
    bool gpm_have_prev;
} cb__gpu;

struct cb_nvml {
    void *lib;
#define X(req, name, ret, args) ret(*name) args;
    CB_NVML_FUNCS(X)
#undef X
    int n_devices;
    cb__gpu *gpus;
    bool inited;
    unsigned char *procbuf; /* raw process records (stride 24 or 32) */
    unsigned proc_cap;
    nvmlProcessUtilizationSample_t *utilbuf;
    unsigned util_cap;
};

static const char *cb__nvml_err(const cb_nvml *n, nvmlReturn_t r) {
    const char *s = n->nvmlErrorString ? n->nvmlErrorString(r) : NULL;
    return s ? s : "unknown NVML error";
}

int cb_nvml_open(const char *library, cb_nvml **out, cb_error *err) {
    *out = NULL;
    const char *path = library ? library : "libnvidia-ml.so.1";
    cb_nvml *n = cb_calloc(1, sizeof *n);
    if (!n) return cb_error_set(err, CB_ENOMEM, "nvml: out of memory");
    n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        const char *e = dlerror();
        cb_free(n);
        return cb_error_set(err, CB_ENOENT, "nvml: %s", e ? e : path);
    }
    bool missing = false;
    const char *missing_name = "";
#define X(req, name, ret, args)                                                                    \
    *(void **)(&n->name) = dlsym(n->lib, #name);                                                   \
    if (req && !n->name && !missing) missing = true, missing_name = #name;
    CB_NVML_FUNCS(X)
#undef X
    if (missing) {
        cb_error_set(err, CB_EUNSUPPORTED, "nvml: %s: no symbol %s (not an NVML library?)", path,
                     missing_name);
        cb_nvml_close(n);
        return CB_EUNSUPPORTED;
    }
    nvmlReturn_t r = n->nvmlInit_v2();
    if (r != NVML_SUCCESS) {
        cb_error_set(err, CB_EUNSUPPORTED, "nvml: nvmlInit failed: %s", cb__nvml_err(n, r));
        cb_nvml_close(n);
        return CB_EUNSUPPORTED;
    }
    n->inited = true;
    unsigned count = 0;
    r = n->nvmlDeviceGetCount_v2(&count);
    if (r != NVML_SUCCESS || count == 0) {
        if (r != NVML_SUCCESS)
            cb_error_set(err, CB_EUNSUPPORTED, "nvml: nvmlDeviceGetCount failed: %s",
                         cb__nvml_err(n, r));
        else
            cb_error_set(err, CB_EUNSUPPORTED, "nvml: no GPU found");
        cb_nvml_close(n);
        return CB_EUNSUPPORTED;
    }
    if (count > 1024) count = 1024;
    n->gpus = cb_calloc(count, sizeof *n->gpus);
    if (!n->gpus) {
        cb_nvml_close(n);
        return cb_error_set(err, CB_ENOMEM, "nvml: out of memory");
    }
    n->n_devices = (int)count;
    for (unsigned i = 0; i < count; i++) {
        cb__gpu *g = &n->gpus[i];
        snprintf(g->name, sizeof g->name, "gpu%u", i);
        g->have_handle = n->nvmlDeviceGetHandleByIndex_v2(i, &g->dev) == NVML_SUCCESS;
        for (int k = 0; k < CB_NVML_MAX_MIG; k++)
            snprintf(g->mig_names[k], sizeof g->mig_names[k], "gpu%u/mig%d", i, k);
    }
    *out = n;
    return CB_OK;
}

void cb_nvml_close(cb_nvml *n) {
    if (!n) return;
    for (int i = 0; n->gpus && i < n->n_devices; i++)
        for (int k = 0; k < 2; k++)
            if (n->gpus[i].gpm[k] && n->nvmlGpmSampleFree) n->nvmlGpmSampleFree(n->gpus[i].gpm[k]);
    if (n->inited && n->nvmlShutdown) n->nvmlShutdown();
    if (n->lib) dlclose(n->lib);
    cb_free(n->gpus);
    cb_free(n->procbuf);
    cb_free(n->utilbuf);
    cb_free(n);
}

int cb_nvml_device_count(const cb_nvml *n) { return n ? n->n_devices : 0; }

int cb_nvml_check_gpu(cb_nvml *n, int g, cb_error *err) {
    if (g < 0 || g >= n->n_devices)
        return cb_error_set(err, CB_ENOENT, "nvml: cuda:%d: no such GPU (%d GPU%s found: cuda:0%s%s)",
                            g, n->n_devices, n->n_devices == 1 ? "" : "s",
                            n->n_devices > 1 ? " .. cuda:" : "",
                            n->n_devices > 1 ? (n->n_devices == 2 ? "1" : "N-1") : "");
    if (!n->gpus[g].have_handle)
        return cb_error_set(err, CB_ENOENT, "nvml: cuda:%d: the GPU exists but cannot be opened", g);
    return CB_OK;
}

/* ---- MIG ----------------------------------------------------------------------------------- */

/* MIG mode of GPU g: 1 on, 0 off, -1 unknown (function missing or error). */
static int cb__mig_mode(cb_nvml *n, int g) {
    if (!n->nvmlDeviceGetMigMode || !n->gpus[g].have_handle) return -1;
    unsigned cur = 0, pend = 0;
    if (n->nvmlDeviceGetMigMode(n->gpus[g].dev, &cur, &pend) != NVML_SUCCESS) return -1;
    return cur == NVML_DEVICE_MIG_ENABLE ? 1 : 0;
}

static unsigned cb__mig_max(cb_nvml *n, int g) {
    unsigned max = 0;
    if (!n->nvmlDeviceGetMaxMigDeviceCount ||
        n->nvmlDeviceGetMaxMigDeviceCount(n->gpus[g].dev, &max) != NVML_SUCCESS)
        return 0;
    return max > CB_NVML_MAX_MIG ? CB_NVML_MAX_MIG : max;
}

/* UUID of MIG device i of GPU g into uuid; false if there is none. */
static bool cb__mig_uuid(cb_nvml *n, int g, unsigned i, char *uuid, size_t size) {
    nvmlDevice_t md;
    if (!n->nvmlDeviceGetMigDeviceHandleByIndex || !n->nvmlDeviceGetUUID ||
        n->nvmlDeviceGetMigDeviceHandleByIndex(n->gpus[g].dev, i, &md) != NVML_SUCCESS)
        return false;
    char buf[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    if (n->nvmlDeviceGetUUID(md, buf, sizeof buf) != NVML_SUCCESS) return false;
    buf[sizeof buf - 1] = '\0';
    snprintf(uuid, size, "%s", buf);
    return true;
}

/* Appends "gpuG/migI MIG-..." for every MIG device (or the MIG mode of each GPU) to buf. */
static void cb__list_migs(cb_nvml *n, char *buf, size_t size) {
    size_t off = 0;
    bool any = false;
    buf[0] = '\0';
    for (int g = 0; g < n->n_devices; g++) {
        int mode = cb__mig_mode(n, g);
        if (mode != 1) {
            int k = snprintf(buf + off, size - off, "%sgpu%d: MIG mode %s", off ? "; " : "", g,
                             mode == 0 ? "disabled" : "unknown");
            if (k > 0) off = off + (size_t)k < size ? off + (size_t)k : size - 1;
            continue;
        }
        unsigned max = cb__mig_max(n, g);
        for (unsigned i = 0; i < max; i++) {
            char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
            if (!cb__mig_uuid(n, g, i, uuid, sizeof uuid)) continue;
            int k = snprintf(buf + off, size - off, "%smig:%d:%u = %s", off ? "; " : "", g, i, uuid);
            if (k > 0) off = off + (size_t)k < size ? off + (size_t)k : size - 1;
            any = true;
        }
    }
    if (!any && off == 0) snprintf(buf, size, "none");
}

/* Parses a decimal index at *p (bounded by the string's NUL); -1 if none or too large. */
static long cb__parse_index(const char **p) {
    const char *s = *p;
    long v = 0;
    if (*s < '0' || *s > '9') return -1;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > 100000) return -1;
        s++;
    }
    *p = s;
    return v;
}

int cb_nvml_resolve_mig(cb_nvml *n, const char *device, char *uuid, size_t uuid_size,
                        cb_error *err) {
    char list[640];
    if (!strncmp(device, "MIG-", 4)) {
        bool any_on = false;
        for (int g = 0; g < n->n_devices; g++) {
            if (cb__mig_mode(n, g) != 1) continue;
            any_on = true;
            unsigned max = cb__mig_max(n, g);
            for (unsigned i = 0; i < max; i++) {
                char u[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
                if (cb__mig_uuid(n, g, i, u, sizeof u) && !strcmp(u, device)) {
                    snprintf(uuid, uuid_size, "%s", u);
                    return CB_OK;
                }
            }
        }
        cb__list_migs(n, list, sizeof list);
        if (!any_on)
            return cb_error_set(err, CB_ENOENT,
                                "nvml: %s: no such MIG device: MIG mode is disabled on every GPU "
                                "(%s)",
                                device, list);
        return cb_error_set(err, CB_ENOENT, "nvml: %s: no such MIG device; MIG devices: %s",
                            device, list);
    }
    if (strncmp(device, "mig:", 4) != 0)
        return cb_error_set(err, CB_ECONFIG,
                            "nvml: '%s': expected MIG-<uuid>, mig:I or mig:G:I", device);
    const char *p = device + 4;
    long a = cb__parse_index(&p), g = 0, i = a;
    if (a >= 0 && *p == ':') {
        p++;
        g = a;
        i = cb__parse_index(&p);
    }
    if (a < 0 || i < 0 || *p != '\0')
        return cb_error_set(err, CB_ECONFIG,
                            "nvml: '%s': expected mig:I or mig:G:I with decimal indices", device);
    if (g >= n->n_devices)
        return cb_error_set(err, CB_ENOENT, "nvml: %s: no GPU %ld (%d GPU%s found)", device, g,
                            n->n_devices, n->n_devices == 1 ? "" : "s");
    int mode = cb__mig_mode(n, (int)g);
    if (mode != 1)
        return cb_error_set(err, CB_ENOENT, "nvml: %s: MIG mode is %s on GPU %ld", device,
                            mode == 0 ? "disabled" : "unknown (not supported?)", g);
    if (!cb__mig_uuid(n, (int)g, (unsigned)i, uuid, uuid_size)) {
        cb__list_migs(n, list, sizeof list);
        return cb_error_set(err, CB_ENOENT, "nvml: %s: GPU %ld has no MIG device %ld; MIG devices: %s",
                            device, g, i, list);
    }
    return CB_OK;
}

/* ---- the gpu source ------------------------------------------------------------------------ */

/* True on success; otherwise disables the metric (not supported) or notes the failure once. */
static bool cb__ok(cb_nvml *n, cb_monitor *m, cb__gpu *g, int metric, nvmlReturn_t r) {
    if (r == NVML_SUCCESS) {
        if (g->failing[metric]) {
            cb__mon_notice(m, CB_LOG_INFO, "gpu: %s: %s works again", g->name,
                           cb__gm_desc[metric]);
            g->failing[metric] = false;
        }
        return true;
    }
    if (r == NVML_ERROR_NOT_SUPPORTED || r == NVML_ERROR_NO_PERMISSION ||
        r == NVML_ERROR_FUNCTION_NOT_FOUND) {
        g->disabled[metric] = true;
        cb__mon_notice(m, CB_LOG_INFO, "gpu: %s: %s: %s; not sampled", g->name,
                       cb__gm_desc[metric], cb__nvml_err(n, r));
    } else if (!g->failing[metric]) {
        g->failing[metric] = true;
        cb__mon_notice(m, CB_LOG_WARN, "gpu: %s: %s: %s", g->name, cb__gm_desc[metric],
                       cb__nvml_err(n, r));
    }
    return false;
}

/* Whether metric may be sampled; a missing function disables it with one notice. */
static bool cb__want(cb_monitor *m, cb__gpu *g, int metric, const void *fn) {
    if (g->disabled[metric]) return false;
    if (!fn) {
        g->disabled[metric] = true;
        cb__mon_notice(m, CB_LOG_INFO, "gpu: %s: %s: function missing from the NVML library; "
                       "not sampled", g->name, cb__gm_desc[metric]);
        return false;
    }
    return true;
}

int cb__nvml_gpu_start(cb_nvml *n, cb_monitor *m) {
    for (int i = 0; i < n->n_devices; i++) {
        cb__gpu *g = &n->gpus[i];
        if (!g->have_handle) {
            cb__mon_notice(m, CB_LOG_WARN, "gpu: %s: cannot get a handle; not sampled", g->name);
            continue;
        }
        if (!n->nvmlGpmQueryDeviceSupport || !n->nvmlGpmSampleAlloc || !n->nvmlGpmSampleGet ||
            !n->nvmlGpmMetricsGet || !n->nvmlGpmSampleFree) {
            cb__want(m, g, CB__GM_GPM, NULL);
            continue;
        }
        nvmlGpmSupport_t sup = {NVML_GPM_SUPPORT_VERSION, 0};
        nvmlReturn_t r = n->nvmlGpmQueryDeviceSupport(g->dev, &sup);
        if (r == NVML_SUCCESS && !sup.isSupportedDevice) r = NVML_ERROR_NOT_SUPPORTED;
        if (!cb__ok(n, m, g, CB__GM_GPM, r)) {
            g->disabled[CB__GM_GPM] = true;
            continue;
        }
        if (n->nvmlGpmSampleAlloc(&g->gpm[0]) != NVML_SUCCESS ||
            n->nvmlGpmSampleAlloc(&g->gpm[1]) != NVML_SUCCESS) {
            cb__mon_notice(m, CB_LOG_WARN, "gpu: %s: nvmlGpmSampleAlloc failed; GPM not sampled",
                           g->name);
            g->disabled[CB__GM_GPM] = true;
        }
    }
    return CB_OK;
}

static void cb__sample_gpm(cb_nvml *n, cb_monitor *m, cb__gpu *g) {
    if (g->disabled[CB__GM_GPM] || !g->gpm[0] || !g->gpm[1]) return;
    nvmlGpmSample_t cur = g->gpm[g->gpm_cur], prev = g->gpm[1 - g->gpm_cur];
    if (!cb__ok(n, m, g, CB__GM_GPM, n->nvmlGpmSampleGet(g->dev, cur))) {
        g->gpm_have_prev = false;
        return;
    }
    if (g->gpm_have_prev) {
        static const struct {
            unsigned id;
            const char *metric;
        } ms[] = {{NVML_GPM_METRIC_SM_UTIL, "sm_activity_percent"},
                  {NVML_GPM_METRIC_SM_OCCUPANCY, "sm_occupancy_percent"},
                  {NVML_GPM_METRIC_ANY_TENSOR_UTIL, "tensor_active_percent"},
                  {NVML_GPM_METRIC_DRAM_BW_UTIL, "dram_active_percent"}};
        nvmlGpmMetricsGet_t mg;
        memset(&mg, 0, sizeof mg);
        mg.version = NVML_GPM_METRICS_GET_VERSION;
        mg.numMetrics = 4;
        mg.sample1 = prev;
        mg.sample2 = cur;
        for (unsigned k = 0; k < 4; k++) mg.metrics[k].metricId = ms[k].id;
        if (cb__ok(n, m, g, CB__GM_GPM, n->nvmlGpmMetricsGet(&mg)))
            for (unsigned k = 0; k < 4; k++)
                if (mg.metrics[k].nvmlReturn == NVML_SUCCESS)
                    cb__mon_emit(m, "gpu", g->name, 0, NULL, ms[k].metric, mg.metrics[k].value);
    }
    g->gpm_cur = 1 - g->gpm_cur;
    g->gpm_have_prev = true;
}

static const cb__mon_proc *cb__watched(const cb__mon_proc *procs, size_t n_procs, unsigned pid) {
    for (size_t i = 0; i < n_procs; i++)
        if ((unsigned)procs[i].pid == pid) return &procs[i];
    return NULL;
}

/* Record stride of nvmlDeviceGetComputeRunningProcesses_v3: 24 (v2 layout) or 32 (early R535
 * layout with usedGpuCcProtectedMemory). A reading is plausible when every pid is non-zero and
 * every instance id is a small number or 0xFFFFFFFF (no MIG). */
static size_t cb__proc_stride(const unsigned char *buf, unsigned count) {
    if (count <= 1) return 24;
    static const size_t strides[2] = {24, 32};
    for (int s = 0; s < 2; s++) {
        bool ok = true;
        for (unsigned i = 0; i < count && ok; i++) {
            const unsigned char *r = buf + (size_t)i * strides[s];
            unsigned pid, gi, ci;
            memcpy(&pid, r, 4);
            memcpy(&gi, r + 16, 4);
            memcpy(&ci, r + 20, 4);
            ok = pid != 0 && (gi == 0xFFFFFFFFu || gi < 64) && (ci == 0xFFFFFFFFu || ci < 64);
        }
        if (ok) return strides[s];
    }
    return 24;
}

static void cb__sample_procs(cb_nvml *n, cb_monitor *m, cb__gpu *g, const cb__mon_proc *procs,
                             size_t n_procs) {
    if (n_procs == 0) return;
    if (cb__want(m, g, CB__GM_PROCS, (const void *)n->nvmlDeviceGetComputeRunningProcesses_v3)) {
        if (!n->procbuf) {
            n->proc_cap = 64;
            n->procbuf = cb_malloc((size_t)n->proc_cap * 32u);
        }
        unsigned count = n->proc_cap;
        nvmlReturn_t r = n->procbuf ? n->nvmlDeviceGetComputeRunningProcesses_v3(g->dev, &count,
                                                                                  n->procbuf)
                                    : NVML_ERROR_INSUFFICIENT_SIZE;
        if (r == NVML_ERROR_INSUFFICIENT_SIZE && count > n->proc_cap && count <= CB_NVML_MAX_PROCS) {
            unsigned char *nb = cb_realloc(n->procbuf, (size_t)count * 2u * 32u);
            if (nb) {
                n->procbuf = nb;
                n->proc_cap = count * 2u;
                count = n->proc_cap;
                r = n->nvmlDeviceGetComputeRunningProcesses_v3(g->dev, &count, n->procbuf);
            }
        }
        if (r == NVML_ERROR_INSUFFICIENT_SIZE) r = NVML_SUCCESS, count = 0; /* next time */
        if (cb__ok(n, m, g, CB__GM_PROCS, r)) {
            if (count > n->proc_cap) count = n->proc_cap;
            size_t stride = cb__proc_stride(n->procbuf, count);
            for (unsigned i = 0; i < count; i++) {
                const unsigned char *rec = n->procbuf + (size_t)i * stride;
                unsigned pid;
                unsigned long long used;
                memcpy(&pid, rec, 4);
                memcpy(&used, rec + 8, 8);
                const cb__mon_proc *p = cb__watched(procs, n_procs, pid);
                if (p && used != NVML_VALUE_NOT_AVAILABLE_ULL)
                    cb__mon_emit(m, "gpu", g->name, p->pid, p->label, "gpu_mem_bytes",
                                 (double)used);
            }
        }
    }
    if (cb__want(m, g, CB__GM_PROCUTIL, (const void *)n->nvmlDeviceGetProcessUtilization)) {
        if (!n->utilbuf) {
            n->util_cap = 256;
            n->utilbuf = cb_malloc(n->util_cap * sizeof *n->utilbuf);
            if (!n->utilbuf) return;
        }
        unsigned count = n->util_cap;
        nvmlReturn_t r = n->nvmlDeviceGetProcessUtilization(g->dev, n->utilbuf, &count,
                                                            g->last_seen_us);
        if (r == NVML_ERROR_NOT_FOUND) return; /* no new samples since last_seen */
        if (r == NVML_ERROR_INSUFFICIENT_SIZE && count > n->util_cap && count <= CB_NVML_MAX_PROCS) {
            nvmlProcessUtilizationSample_t *nb = cb_realloc(n->utilbuf, count * sizeof *nb);
            if (!nb) return;
            n->utilbuf = nb;
            n->util_cap = count;
            r = n->nvmlDeviceGetProcessUtilization(g->dev, n->utilbuf, &count, g->last_seen_us);
            if (r == NVML_ERROR_NOT_FOUND) return;
        }
        if (!cb__ok(n, m, g, CB__GM_PROCUTIL, r)) return;
        if (count > n->util_cap) count = n->util_cap;
        unsigned long long newest = g->last_seen_us;
        for (size_t k = 0; k < n_procs; k++) {
            const nvmlProcessUtilizationSample_t *best = NULL;
            for (unsigned i = 0; i < count; i++)
                if (n->utilbuf[i].pid == (unsigned)procs[k].pid &&
                    (!best || n->utilbuf[i].timeStamp > best->timeStamp))
                    best = &n->utilbuf[i];
            if (best)
                cb__mon_emit(m, "gpu", g->name, procs[k].pid, procs[k].label, "sm_util_percent",
                             (double)best->smUtil);
        }
        for (unsigned i = 0; i < count; i++)
            if (n->utilbuf[i].timeStamp > newest) newest = n->utilbuf[i].timeStamp;
        g->last_seen_us = newest;
    }
}

static void cb__sample_mig(cb_nvml *n, cb_monitor *m, cb__gpu *g, int gi) {
    if (!cb__want(m, g, CB__GM_MIG, (const void *)n->nvmlDeviceGetMigMode)) return;
    unsigned cur = 0, pend = 0;
    if (!cb__ok(n, m, g, CB__GM_MIG, n->nvmlDeviceGetMigMode(g->dev, &cur, &pend))) return;
    if (cur != NVML_DEVICE_MIG_ENABLE || !n->nvmlDeviceGetMigDeviceHandleByIndex ||
        !n->nvmlDeviceGetMemoryInfo)
        return;
    unsigned max = cb__mig_max(n, gi);
    for (unsigned i = 0; i < max; i++) {
        nvmlDevice_t md;
        if (n->nvmlDeviceGetMigDeviceHandleByIndex(g->dev, i, &md) != NVML_SUCCESS) continue;
        nvmlMemory_t mem;
        if (n->nvmlDeviceGetMemoryInfo(md, &mem) != NVML_SUCCESS) continue;
        cb__mon_emit(m, "gpu", g->mig_names[i], 0, NULL, "mem_used_bytes", (double)mem.used);
        cb__mon_emit(m, "gpu", g->mig_names[i], 0, NULL, "mem_total_bytes", (double)mem.total);
    }
}

void cb__nvml_gpu_sample(cb_nvml *n, cb_monitor *m, const cb__mon_proc *procs, size_t n_procs) {
    for (int gi = 0; gi < n->n_devices; gi++) {
        cb__gpu *g = &n->gpus[gi];
        if (!g->have_handle) continue;
        unsigned v;
        unsigned long long u64;
        if (cb__want(m, g, CB__GM_UTIL, (const void *)n->nvmlDeviceGetUtilizationRates)) {
            nvmlUtilization_t u;
            if (cb__ok(n, m, g, CB__GM_UTIL, n->nvmlDeviceGetUtilizationRates(g->dev, &u))) {
                cb__mon_emit(m, "gpu", g->name, 0, NULL, "gpu_util_percent", u.gpu);
                cb__mon_emit(m, "gpu", g->name, 0, NULL, "mem_util_percent", u.memory);
            }
        }
        if (cb__want(m, g, CB__GM_MEM, (const void *)n->nvmlDeviceGetMemoryInfo)) {
            nvmlMemory_t mem;
            if (cb__ok(n, m, g, CB__GM_MEM, n->nvmlDeviceGetMemoryInfo(g->dev, &mem))) {
                cb__mon_emit(m, "gpu", g->name, 0, NULL, "mem_used_bytes", (double)mem.used);
                cb__mon_emit(m, "gpu", g->name, 0, NULL, "mem_total_bytes", (double)mem.total);
            }
        }
        if (cb__want(m, g, CB__GM_POWER, (const void *)n->nvmlDeviceGetPowerUsage) &&
            cb__ok(n, m, g, CB__GM_POWER, n->nvmlDeviceGetPowerUsage(g->dev, &v)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "power_watts", v / 1000.0);
        if (cb__want(m, g, CB__GM_SMCLK, (const void *)n->nvmlDeviceGetClockInfo) &&
            cb__ok(n, m, g, CB__GM_SMCLK, n->nvmlDeviceGetClockInfo(g->dev, NVML_CLOCK_SM, &v)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "sm_clock_mhz", v);
        if (cb__want(m, g, CB__GM_MEMCLK, (const void *)n->nvmlDeviceGetClockInfo) &&
            cb__ok(n, m, g, CB__GM_MEMCLK, n->nvmlDeviceGetClockInfo(g->dev, NVML_CLOCK_MEM, &v)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "mem_clock_mhz", v);
        if (cb__want(m, g, CB__GM_TEMP, (const void *)n->nvmlDeviceGetTemperature) &&
            cb__ok(n, m, g, CB__GM_TEMP,
                   n->nvmlDeviceGetTemperature(g->dev, NVML_TEMPERATURE_GPU, &v)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "temperature_c", v);
        if (cb__want(m, g, CB__GM_ENERGY, (const void *)n->nvmlDeviceGetTotalEnergyConsumption) &&
            cb__ok(n, m, g, CB__GM_ENERGY, n->nvmlDeviceGetTotalEnergyConsumption(g->dev, &u64)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "energy_mj", (double)u64);
        if (cb__want(m, g, CB__GM_PCIE_RX, (const void *)n->nvmlDeviceGetPcieThroughput) &&
            cb__ok(n, m, g, CB__GM_PCIE_RX,
                   n->nvmlDeviceGetPcieThroughput(g->dev, NVML_PCIE_UTIL_RX_BYTES, &v)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "pcie_rx_bytes_per_s", v * 1024.0);
        if (cb__want(m, g, CB__GM_PCIE_TX, (const void *)n->nvmlDeviceGetPcieThroughput) &&
            cb__ok(n, m, g, CB__GM_PCIE_TX,
                   n->nvmlDeviceGetPcieThroughput(g->dev, NVML_PCIE_UTIL_TX_BYTES, &v)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "pcie_tx_bytes_per_s", v * 1024.0);
        nvmlReturn_t (*reasons)(nvmlDevice_t, unsigned long long *) =
            n->nvmlDeviceGetCurrentClocksEventReasons ? n->nvmlDeviceGetCurrentClocksEventReasons
                                                      : n->nvmlDeviceGetCurrentClocksThrottleReasons;
        if (cb__want(m, g, CB__GM_THROTTLE, (const void *)reasons) &&
            cb__ok(n, m, g, CB__GM_THROTTLE, reasons(g->dev, &u64)))
            cb__mon_emit(m, "gpu", g->name, 0, NULL, "throttle_reasons", (double)u64);
        cb__sample_procs(n, m, g, procs, n_procs);
        cb__sample_mig(n, m, g, gi);
        cb__sample_gpm(n, m, g);
    }
}
