/* experiment/env.c - env.json: host, CPU, kernel, compiler, version, start time, command line.
 *
 * Design: every field is gathered with bounded reads (gethostname, uname, sysconf, one pass over
 * /proc/cpuinfo with a fixed line buffer) and written through the streaming JSON writer, so
 * strings from the system or the command line are always escaped. A field that cannot be read
 * is written as null rather than failing the run; only a write error fails (CB_EIO).
 * Thread-safety: no shared state (gmtime_r, uname into locals). Ownership: out and argv are
 * borrowed; nothing is allocated.
 */
#include "experiment/env.h"

#include <stdbool.h>
#include <sched.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "analysis/json.h"

#ifndef CB_VERSION
#define CB_VERSION "unknown"
#endif

#if defined(__clang__)
#define CB_ENV_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define CB_ENV_COMPILER "gcc " __VERSION__
#else
#define CB_ENV_COMPILER "unknown"
#endif

#define CB_ENV_LINE_MAX 512

/* The CPU model from /proc/cpuinfo ("model name", else "Hardware" or "cpu model" as some
 * non-x86 kernels name it) into buf; false when none is found. Long lines (the flags line) are
 * read in pieces; only a piece that starts a line is looked at. */
static bool read_cpu_model(char *buf, size_t size) {
    static const char *const keys[] = {"model name", "Hardware", "cpu model", "Processor"};
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return false;
    char line[CB_ENV_LINE_MAX];
    bool at_line_start = true, found = false;
    while (!found && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        bool starts = at_line_start;
        at_line_start = len > 0 && line[len - 1] == '\n';
        if (!starts) continue;
        for (size_t k = 0; k < sizeof keys / sizeof keys[0] && !found; k++) {
            size_t kl = strlen(keys[k]);
            if (strncmp(line, keys[k], kl) != 0) continue;
            const char *p = line + kl;
            while (*p == ' ' || *p == '\t') p++;
            if (*p != ':') continue;
            p++;
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strcspn(p, "\r\n");
            while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
            if (n == 0) continue;
            if (n >= size) n = size - 1;
            memcpy(buf, p, n);
            buf[n] = '\0';
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* "2026-11-23T10:00:00.123Z" from ns since the epoch (floor division, so pre-1970 works). */
static bool format_iso(int64_t wall_ns, char *buf, size_t size) {
    int64_t sec = wall_ns / 1000000000, rem = wall_ns % 1000000000;
    if (rem < 0) {
        rem += 1000000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return false;
    char date[40];
    if (strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0) return false;
    snprintf(buf, size, "%s.%03dZ", date, (int)(rem / 1000000));
    return true;
}

extern char **environ;

/* Environment variables worth recording: they decide where GPU work runs (CUDA_*, MPS, NVIDIA
 * container settings), how many threads libraries use (OpenMP, oneDNN, BLAS), where temporary
 * files go, which binaries and libraries are found, and colobench's own settings. */
static bool recorded_variable(const char *e) {
    static const char *const prefixes[] = {"CUDA_", "COLOBENCH_", "CB_", "NVIDIA_", "OMP_", "GOMP_",
                                           "KMP_", "DNNL_", "ONEDNN_", "OPENBLAS_", "MKL_", "LD_"};
    static const char *const names[] = {"TMPDIR", "PATH", "HOME"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (!strncmp(e, prefixes[i], strlen(prefixes[i]))) return true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t l = strlen(names[i]);
        if (!strncmp(e, names[i], l) && e[l] == '=') return true;
    }
    return false;
}

int cb_env_write_json(FILE *out, int64_t wall_start_ns, int argc, char *const *argv,
                      const cb_env_library *libs, size_t n_libs, cb_error *err) {
    if (!out) return cb_error_set(err, CB_EINVAL, "env.json: no output stream");
    cb_json j;
    cb_json_init(&j, out, 2);
    cb_json_object_begin(&j);

    char host[256];
    cb_json_key(&j, "host");
    if (gethostname(host, sizeof host) == 0) {
        host[sizeof host - 1] = '\0';
        cb_json_string(&j, host);
    } else {
        cb_json_null(&j);
    }

    char model[CB_ENV_LINE_MAX];
    cb_json_key(&j, "cpu_model");
    cb_json_string(&j, read_cpu_model(model, sizeof model) ? model : NULL);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cb_json_key(&j, "cores_online");
    if (cores > 0)
        cb_json_int(&j, cores);
    else
        cb_json_null(&j);

    struct utsname u;
    bool have_uname = uname(&u) == 0;
    char kernel[sizeof u.sysname + sizeof u.release + sizeof u.version + 3];
    if (have_uname) snprintf(kernel, sizeof kernel, "%s %s %s", u.sysname, u.release, u.version);
    cb_json_key(&j, "kernel");
    cb_json_string(&j, have_uname ? kernel : NULL);
    cb_json_key(&j, "machine");
    cb_json_string(&j, have_uname ? u.machine : NULL);

    cb_json_key(&j, "compiler");
    cb_json_string(&j, CB_ENV_COMPILER);
    cb_json_key(&j, "colobench_version");
    cb_json_string(&j, CB_VERSION);

    cb_json_key(&j, "wall_start_ns");
    cb_json_int(&j, wall_start_ns);
    char iso[64];
    cb_json_key(&j, "wall_start_iso");
    cb_json_string(&j, format_iso(wall_start_ns, iso, sizeof iso) ? iso : NULL);

    cb_json_key(&j, "argv");
    cb_json_array_begin(&j);
    for (int i = 0; argv && i < argc; i++) cb_json_string(&j, argv[i]);
    cb_json_array_end(&j);

    /* The process's CPU affinity and the environment that decides where GPU work runs (CUDA_*,
     * including MPS and MIG settings a collocation child received) and colobench's own. */
    cb_json_key(&j, "cpu_affinity");
    cb_json_array_begin(&j);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set)) cb_json_int(&j, c);
    cb_json_array_end(&j);
    cb_json_key(&j, "environment");
    cb_json_object_begin(&j);
    for (char **e = environ; e && *e; e++) {
        if (!recorded_variable(*e)) continue;
        const char *eq = strchr(*e, '=');
        if (!eq || eq - *e >= 128) continue;
        char key[128];
        memcpy(key, *e, (size_t)(eq - *e));
        key[eq - *e] = '\0';
        cb_json_key(&j, key);
        cb_json_string(&j, eq + 1);
    }
    cb_json_object_end(&j);
    cb_json_key(&j, "libraries");
    cb_json_array_begin(&j);
    for (size_t i = 0; i < n_libs; i++) {
        cb_json_object_begin(&j);
        cb_json_key(&j, "path");
        cb_json_string(&j, libs[i].path);
        cb_json_key(&j, "why");
        cb_json_string(&j, libs[i].why);
        cb_json_object_end(&j);
    }
    cb_json_array_end(&j);
    cb_json_object_end(&j);
    int rc = cb_json_finish(&j);
    if (rc != CB_OK) return cb_error_set(err, rc, "env.json: %s", cb_strerror(rc));
    return CB_OK;
}
