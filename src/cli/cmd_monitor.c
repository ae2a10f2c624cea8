/* cli/cmd_monitor.c - `colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND...`
 *
 * What: parses the arguments (the period, the sources, -o, the command after `--`) and prints
 * the usage; the work (the output directory, the monitor, the command's process, forwarding
 * SIGINT/SIGTERM, summary.json) is experiment/watch.h's cb_watch_run. The NVML library comes
 * from COLOBENCH_NVML_LIBRARY when set.
 * Exit status: the command's own; 128+N if it was killed by signal N; 2 bad usage or an output
 * directory that cannot be used (in use by another colobench run); 127 the command cannot be
 * found (126 found but not executable); 1 the monitor itself failed.
 * Thread-safety: runs on the main thread; it installs no signal handler (main.c blocked
 * SIGINT/SIGTERM and started the signal thread it passes in). Ownership: argv is borrowed.
 */
#include "cli/cmd_monitor.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/error.h"
#include "core/monitor_sources.h"
#include "experiment/watch.h"

#define CB_EXIT_FAILED 1
#define CB_EXIT_USAGE 2
#define CB_MONITOR_MAX_PERIOD_MS 3600000L

static const char k_usage[] =
    "usage: colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND [ARGS...]\n"
    "  --period MS      sampling period in milliseconds (default 100)\n"
    "  -o, --output DIR where metrics.csv and summary.json go (default out/monitor)\n"
    "  --sources LIST   comma-separated: cpu,memory,process,gpu,perf (default all)\n"
    "  COLOBENCH_NVML_LIBRARY  NVML library to load (default libnvidia-ml.so.1)\n"
    "exit status: the command's own (128+N if killed by signal N), 2 bad usage or DIR in use\n"
    "by another colobench run, 127 command not found, 126 not executable, 1 monitor failed\n";

/* fmt has one %s: arg, its control characters escaped. */
static int usage_error(const char *fmt, const char *arg) {
    char shown[256];
    cb_error_escape(shown, sizeof shown, arg);
    fputs("colobench: monitor: ", stderr);
    fprintf(stderr, fmt, shown);
    fputs("\n", stderr);
    fputs(k_usage, stderr);
    return CB_EXIT_USAGE;
}

/* Parses a period in ms: decimal digits only, 1 .. CB_MONITOR_MAX_PERIOD_MS. */
static int parse_period(const char *s, long *ms) {
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || s[0] == '-' || s[0] == '+' || v < 1 || v > CB_MONITOR_MAX_PERIOD_MS)
        return -1;
    *ms = v;
    return 0;
}

/* Parses "cpu,memory,..." into CB_MON_* bits; on an unknown name returns -1 and copies it. */
static int parse_sources(const char *s, unsigned *bits, char *bad, size_t bad_size) {
    *bits = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[32];
        if (len == 0 || len >= sizeof name) {
            snprintf(bad, bad_size, "%.*s", (int)(len < 64 ? len : 64), p);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        unsigned b = cb_monitor_source_bit(name);
        if (!b) {
            snprintf(bad, bad_size, "%s", name);
            return -1;
        }
        *bits |= b;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

int cb_cli_monitor(int argc, char **argv, cb_sigwatch *signals) {
    long period_ms = 100;
    const char *out_dir = CB_WATCH_DEFAULT_DIR;
    unsigned sources = CB_MON_ALL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) break;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--period")) {
            if (i + 1 >= argc || parse_period(argv[i + 1], &period_ms) != 0)
                return usage_error("--period needs a whole number of milliseconds in "
                                       "[1, 3600000], got '%s'",
                                       i + 1 < argc ? argv[i + 1] : "");
            i++;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) return usage_error("%s needs a directory", a);
            out_dir = argv[++i];
        } else if (!strcmp(a, "--sources")) {
            char bad[80];
            if (i + 1 >= argc) return usage_error("%s needs a list", a);
            if (parse_sources(argv[i + 1], &sources, bad, sizeof bad) != 0)
                return usage_error("unknown source '%s' (cpu, memory, process, gpu, perf)", bad);
            i++;
        } else {
            return usage_error("expected options, then '--' and the command; got '%s'", a);
        }
    }
    if (i >= argc) return usage_error("%s", "missing '--' before the command");
    char **cmd = argv + i + 1;
    if (!cmd[0]) return usage_error("%s", "no command after '--'");
    const char *lib = getenv("COLOBENCH_NVML_LIBRARY");
    cb_watch_opts o = CB_WATCH_OPTS_DEFAULT;
    o.period_ns = (int64_t)period_ms * 1000000LL;
    o.sources = sources;
    o.out_dir = out_dir;
    o.argv = cmd;
    o.nvml_library = lib && *lib ? lib : NULL;
    o.msg = stderr;
    o.signals = signals;
    int code = CB_EXIT_FAILED;
    (void)cb_watch_run(&o, &code); /* its messages are printed; the code says the rest */
    return code;
}
