/* tests/fake/fake_nvml.c - a test double of libnvidia-ml.so.1 for machines without a GPU.
 *
 * What: exports the NVML functions colobench uses, with the signatures, struct layouts and
 * return codes of the published nvml.h (NVML_SUCCESS 0, NOT_SUPPORTED 3, NOT_FOUND 6,
 * INSUFFICIENT_SIZE 7, ...). Built by CMake as build/tests/fake_nvml.so.
 * Design: deterministic behaviour, configured from the environment when nvmlInit_v2 takes the
 * reference count from 0 to 1:
 *   FAKE_NVML_GPUS=N   number of GPUs (default 1; 0 = "no GPU")
 *   FAKE_NVML_MIG=1    MIG mode on for every GPU, with two MIG devices (indices 0 and 1) whose
 *                      UUIDs are MIG-fa4e0000-0000-4000-8000-0000000000G0 / ...G1 (G = GPU);
 *                      whole-GPU utilization then answers NOT_SUPPORTED, like the real library
 *   FAKE_NVML_GPM=1    GPM supported: SM activity 60, occupancy 30, tensor 20, DRAM 40 (%)
 *   FAKE_NVML_PID=P    one compute process P using 1 GiB, SM utilization 42 %
 *   FAKE_NVML_INIT_FAIL=1  nvmlInit_v2 answers DRIVER_NOT_LOADED
 * Values: utilization gpu 75 % / memory 30 %, memory 10 of 80 GiB, power 1000 mW, SM clock
 * 1410 MHz, memory clock 1593 MHz, 55 C, PCIe rx 2000 / tx 1000 KB/s, clocks-event reasons 0x1,
 * energy 5e6 mJ at init growing 1000 mJ per second of CLOCK_MONOTONIC (so 1 J/s exactly).
 * Thread-safety: configuration is written under the init count's mutex and only read after;
 * like the real library, state is process-wide. Ownership: GPM samples are heap objects freed
 * by nvmlGpmSampleFree.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAKE_EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define FAKE_MAX_GPUS 8
#define FAKE_MIGS 2
#define FAKE_MAX_MIGS 7

struct nvmlDevice_st {
    int gpu; /* index */
    int mig; /* -1 for the whole GPU */
};
typedef struct nvmlDevice_st *nvmlDevice_t;

struct nvmlGpmSample_st {
    long long t_ns; /* 0 until nvmlGpmSampleGet */
    int gpu;
};
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct { /* nvmlProcessInfo_t (v2 layout, what _v3 fills on current drivers) */
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
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
typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1, sample2;
    nvmlGpmMetric_t metrics[98];
} nvmlGpmMetricsGet_t;
typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;

static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static int fake_refs;
static int fake_gpus = 1, fake_mig, fake_gpm;
static unsigned fake_pid;
static long long fake_t0_ns;
static struct nvmlDevice_st fake_dev[FAKE_MAX_GPUS];
static struct nvmlDevice_st fake_mig_dev[FAKE_MAX_GPUS][FAKE_MIGS];

static long long fake_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fake_env_int(const char *name, int def) {
    const char *s = getenv(name);
    if (!s || !*s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    return *end ? def : (int)v;
}

static int fake_ready(void) {
    pthread_mutex_lock(&fake_mu);
    int r = fake_refs > 0;
    pthread_mutex_unlock(&fake_mu);
    return r;
}

static int fake_gpu_of(nvmlDevice_t d) {
    if (!d || d->gpu < 0 || d->gpu >= fake_gpus) return -1;
    return d->gpu;
}

FAKE_EXPORT nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlInit_v2(void) {
    if (fake_env_int("FAKE_NVML_INIT_FAIL", 0)) return NVML_ERROR_DRIVER_NOT_LOADED;
    pthread_mutex_lock(&fake_mu);
    if (fake_refs++ == 0) {
        fake_gpus = fake_env_int("FAKE_NVML_GPUS", 1);
        if (fake_gpus < 0) fake_gpus = 0;
        if (fake_gpus > FAKE_MAX_GPUS) fake_gpus = FAKE_MAX_GPUS;
        fake_mig = fake_env_int("FAKE_NVML_MIG", 0) != 0;
        fake_gpm = fake_env_int("FAKE_NVML_GPM", 0) != 0;
        fake_pid = (unsigned)fake_env_int("FAKE_NVML_PID", 0);
        fake_t0_ns = fake_now_ns();
        for (int g = 0; g < FAKE_MAX_GPUS; g++) {
            fake_dev[g] = (struct nvmlDevice_st){g, -1};
            for (int i = 0; i < FAKE_MIGS; i++) fake_mig_dev[g][i] = (struct nvmlDevice_st){g, i};
        }
    }
    pthread_mutex_unlock(&fake_mu);
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlShutdown(void);
nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&fake_mu);
    nvmlReturn_t r = fake_refs > 0 ? (fake_refs--, NVML_SUCCESS) : NVML_ERROR_UNINITIALIZED;
    pthread_mutex_unlock(&fake_mu);
    return r;
}

FAKE_EXPORT const char *nvmlErrorString(nvmlReturn_t r);
const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!fake_ready()) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned)fake_gpus;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    if (!fake_ready()) return NVML_ERROR_UNINITIALIZED;
    if (!d || i >= (unsigned)fake_gpus) return NVML_ERROR_INVALID_ARGUMENT;
    *d = &fake_dev[i];
    return NVML_SUCCESS;
}

static void fake_copy(char *dst, unsigned len, const char *src) {
    size_t n = strlen(src);
    if (n >= len) n = len - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    int g = fake_gpu_of(d);
    if (g < 0 || !uuid) return NVML_ERROR_INVALID_ARGUMENT;
    char buf[96] = "GPU-fa4e0000-0000-4000-8000-0000000000g0";
    if (d->mig >= 0) {
        memcpy(buf, "MIG-fa4e0000-0000-4000-8000-0000000000", 38);
        buf[38] = (char)('0' + g);
        buf[39] = (char)('0' + d->mig);
        buf[40] = '\0';
    } else {
        buf[39] = (char)('0' + g);
    }
    if (len < strlen(buf) + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
    fake_copy(uuid, len, buf);
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    if (fake_gpu_of(d) < 0 || !u) return NVML_ERROR_INVALID_ARGUMENT;
    if (fake_mig) return NVML_ERROR_NOT_SUPPORTED; /* as on a MIG-enabled A100/H100 */
    u->gpu = 75;
    u->memory = 30;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    if (fake_gpu_of(d) < 0 || !m) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->mig >= 0) {
        m->total = 10ULL << 30;
        m->used = (unsigned long long)(d->mig + 1) << 30;
    } else {
        m->total = 80ULL << 30;
        m->used = 10ULL << 30;
    }
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw);
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    if (fake_gpu_of(d) < 0 || !mw) return NVML_ERROR_INVALID_ARGUMENT;
    *mw = 1000;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz);
nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    if (fake_gpu_of(d) < 0 || !mhz) return NVML_ERROR_INVALID_ARGUMENT;
    switch (type) {
    case 0: /* NVML_CLOCK_GRAPHICS */
    case 1: *mhz = 1410; return NVML_SUCCESS; /* NVML_CLOCK_SM */
    case 2: *mhz = 1593; return NVML_SUCCESS; /* NVML_CLOCK_MEM */
    default: return NVML_ERROR_NOT_SUPPORTED;
    }
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *c);
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *c) {
    if (fake_gpu_of(d) < 0 || !c || sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *c = 55;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d,
                                                             unsigned long long *mj);
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    if (fake_gpu_of(d) < 0 || !mj) return NVML_ERROR_INVALID_ARGUMENT;
    *mj = 5000000ULL + (unsigned long long)((fake_now_ns() - fake_t0_ns) / 1000000LL);
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter,
                                                     unsigned int *kbps);
nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned int *kbps) {
    if (fake_gpu_of(d) < 0 || !kbps || counter < 0 || counter > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    *kbps = counter == 0 ? 1000 : 2000; /* TX_BYTES = 0, RX_BYTES = 1 */
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d,
                                                                unsigned long long *r);
nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
    if (fake_gpu_of(d) < 0 || !r) return NVML_ERROR_INVALID_ARGUMENT;
    *r = 0x1ULL; /* nvmlClocksEventReasonGpuIdle */
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d,
                                                                   unsigned long long *r);
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    return nvmlDeviceGetCurrentClocksEventReasons(d, r);
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d,
                                                                 unsigned int *count,
                                                                 nvmlProcessInfo_t *infos);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    if (fake_gpu_of(d) < 0 || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = fake_pid ? 1 : 0;
    if (*count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    if (n) {
        if (!infos) return NVML_ERROR_INVALID_ARGUMENT;
        infos[0].pid = fake_pid;
        infos[0].usedGpuMemory = 1ULL << 30;
        infos[0].gpuInstanceId = fake_mig ? 1 : 0xFFFFFFFFu;
        infos[0].computeInstanceId = fake_mig ? 0 : 0xFFFFFFFFu;
    }
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d,
                                                         nvmlProcessUtilizationSample_t *u,
                                                         unsigned int *count,
                                                         unsigned long long last_seen_us);
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *u,
                                             unsigned int *count, unsigned long long last_seen_us) {
    if (fake_gpu_of(d) < 0 || !count) return NVML_ERROR_INVALID_ARGUMENT;
    if (fake_mig) return NVML_ERROR_NOT_SUPPORTED;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long now_us = (unsigned long long)ts.tv_sec * 1000000ULL +
                                (unsigned long long)ts.tv_nsec / 1000ULL;
    if (!fake_pid || now_us <= last_seen_us) return NVML_ERROR_NOT_FOUND;
    if (!u || *count < 1) {
        *count = 1;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = 1;
    u[0] = (nvmlProcessUtilizationSample_t){fake_pid, now_us, 42, 10, 0, 0};
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *cur, unsigned int *pend);
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *cur, unsigned int *pend) {
    if (fake_gpu_of(d) < 0 || !cur || !pend || d->mig >= 0) return NVML_ERROR_INVALID_ARGUMENT;
    *cur = *pend = fake_mig ? 1u : 0u;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count);
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    if (fake_gpu_of(d) < 0 || !count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = FAKE_MAX_MIGS;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int i,
                                                             nvmlDevice_t *out);
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int i,
                                                 nvmlDevice_t *out) {
    int g = fake_gpu_of(d);
    if (g < 0 || !out || d->mig >= 0 || i >= FAKE_MAX_MIGS) return NVML_ERROR_INVALID_ARGUMENT;
    if (!fake_mig) return NVML_ERROR_INVALID_ARGUMENT; /* MIG disabled */
    if (i >= FAKE_MIGS) return NVML_ERROR_NOT_FOUND;
    *out = &fake_mig_dev[g][i];
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t d, nvmlGpmSupport_t *s);
nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t d, nvmlGpmSupport_t *s) {
    if (fake_gpu_of(d) < 0 || !s) return NVML_ERROR_INVALID_ARGUMENT;
    if (s->version != 1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    s->isSupportedDevice = fake_gpm ? 1u : 0u;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *s);
nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *s) {
    if (!s) return NVML_ERROR_INVALID_ARGUMENT;
    *s = calloc(1, sizeof **s);
    return *s ? NVML_SUCCESS : NVML_ERROR_MEMORY;
}

FAKE_EXPORT nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t s);
nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t s) {
    if (!s) return NVML_ERROR_INVALID_ARGUMENT;
    free(s);
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t d, nvmlGpmSample_t s);
nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t d, nvmlGpmSample_t s) {
    int g = fake_gpu_of(d);
    if (g < 0 || !s) return NVML_ERROR_INVALID_ARGUMENT;
    if (!fake_gpm) return NVML_ERROR_NOT_SUPPORTED;
    s->t_ns = fake_now_ns();
    s->gpu = g;
    return NVML_SUCCESS;
}

FAKE_EXPORT nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *mg);
nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *mg) {
    if (!mg) return NVML_ERROR_INVALID_ARGUMENT;
    if (mg->version != 1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (!mg->sample1 || !mg->sample2 || !mg->sample1->t_ns || !mg->sample2->t_ns ||
        mg->sample2->t_ns <= mg->sample1->t_ns || mg->numMetrics > 98)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < mg->numMetrics; i++) {
        nvmlGpmMetric_t *m = &mg->metrics[i];
        m->nvmlReturn = NVML_SUCCESS;
        switch (m->metricId) {
        case 2: m->value = 60.0; break;  /* NVML_GPM_METRIC_SM_UTIL */
        case 3: m->value = 30.0; break;  /* NVML_GPM_METRIC_SM_OCCUPANCY */
        case 5: m->value = 20.0; break;  /* NVML_GPM_METRIC_ANY_TENSOR_UTIL */
        case 10: m->value = 40.0; break; /* NVML_GPM_METRIC_DRAM_BW_UTIL */
        default: m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED; m->value = 0; break;
        }
    }
    return NVML_SUCCESS;
}
