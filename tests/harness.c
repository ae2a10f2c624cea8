/* tests/harness.c - see harness.h. Single-threaded use only (test main thread). */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_failed_checks;
static int g_failed_tests, g_passed_tests;
static int g_current_failed;
static int g_skipped;
static char g_tmpdirs[256][256];
static int g_ntmp;
static char g_paths[64][512];
static int g_npaths;

void cb__test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "#   %s:%d: ", file, line);
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    fflush(stdout);
    g_failed_checks++;
    g_current_failed = 1;
}

void cb__test_run(const char *name, void (*fn)(void)) {
    g_current_failed = 0;
    fn();
    if (g_current_failed) {
        g_failed_tests++;
        printf("not ok %d - %s\n", g_failed_tests + g_passed_tests, name);
    } else {
        g_passed_tests++;
        printf("ok %d - %s\n", g_failed_tests + g_passed_tests, name);
    }
    fflush(stdout);
}

void cb_test_skip(const char *why) {
    printf("# SKIP %s\n", why);
    fflush(stdout);
    g_skipped = 1;
}

int cb_test_done(void) {
    printf("1..%d\n%d passed, %d failed\n", g_passed_tests + g_failed_tests, g_passed_tests,
           g_failed_tests);
    /* A check that failed outside any test (a fixture's) fails the file too. */
    int failed = g_failed_tests ? g_failed_tests : g_failed_checks ? 1 : 0;
    if (g_skipped && failed == 0 && g_passed_tests == 0) {
        for (int i = 0; i < g_ntmp; i++) {
            char cmd[300];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdirs[i]);
            if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmpdirs[i]);
        }
        return CB_TEST_SKIPPED;
    }
    if (failed == 0) {
        for (int i = 0; i < g_ntmp; i++) {
            char cmd[300];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdirs[i]);
            if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmpdirs[i]);
        }
    }
    return failed > 100 ? 100 : failed;
}

const char *cb_test_tmpdir(void) {
    if (g_ntmp >= (int)(sizeof g_tmpdirs / sizeof g_tmpdirs[0])) abort();
    const char *base = getenv("TMPDIR");
    snprintf(g_tmpdirs[g_ntmp], sizeof g_tmpdirs[0], "%s/cbtest-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(g_tmpdirs[g_ntmp])) abort();
    return g_tmpdirs[g_ntmp++];
}

const char *cb_test_path(const char *dir, const char *name) {
    if (g_npaths >= 64) g_npaths = 0; /* recycled: tests use few paths at once */
    char *p = g_paths[g_npaths++];
    snprintf(p, sizeof g_paths[0], "%s/%s", dir, name);
    return p;
}

const char *cb_test_write(const char *dir, const char *name, const char *text) {
    const char *p = cb_test_path(dir, name);
    FILE *f = fopen(p, "w");
    if (!f) abort();
    fputs(text, f);
    fclose(f);
    return p;
}

char *cb_test_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t k = fread(buf + n, 1, 4096, f);
        n += k;
        if (k < 4096) break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

int cb_test_sh(const char *cmd, char **output) {
    char full[8192];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (cap - n < 2048) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[n] = '\0';
    int st = pclose(p);
    if (output) *output = buf;
    else free(buf);
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return -WTERMSIG(st);
    return -1;
}

void cb__test_sh_ok(const char *cmd, const char *file, int line) {
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    if (st != 0) cb__test_fail(file, line, "%s\n# exit %d: %s", cmd, st, out ? out : "");
    free(out);
}

size_t cb_test_count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        if (c == '\n') n++;
    fclose(f);
    return n;
}

char *cb_test_py_json(const char *path, const char *expr) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(%s)' '%s'", expr,
             path);
    char *out = NULL;
    int st = cb_test_sh(cmd, &out);
    if (st != 0) {
        printf("# python failed (%d): %s\n", st, out ? out : "");
        free(out);
        return NULL;
    }
    size_t n = strlen(out);
    while (n && out[n - 1] == '\n') out[--n] = '\0';
    return out;
}

double cb_test_py_num(const char *path, const char *expr) {
    char *v = cb_test_py_json(path, expr);
    char *end = NULL;
    double d = v ? strtod(v, &end) : -1e300;
    if (v && (end == v || *end)) {
        /* Not a number (a null figure): say so, with what the file says about why, instead of
         * letting a check print a meaningless value. */
        printf("# %s: %s is %s, not a number%s\n", path, expr, v, strcmp(v, "None") ? "" : " (null)");
        char *why = cb_test_py_json(
            path, "\"; \".join(\"%s: %s\" % (k, v) for k, v in (lambda f: f(f, d, \"\"))(lambda f, x, p: "
                  "[i for k, y in (x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) "
                  "else []) for i in ([(p + str(k), y)] if str(k) in (\"errors\", \"reason\", \"why\", "
                  "\"unavailable\") or str(k).endswith(\"_reason\") else f(f, y, p + str(k) + \".\"))]) if v)");
        if (why && *why) printf("#   the file says: %s\n", why);
        free(why);
        d = -1e300;
    }
    free(v);
    return d;
}

double cb_test_rel_err(const float *a, const float *b, size_t n) {
    double e = 0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (!isnan(a[i]) != !isnan(b[i])) return INFINITY; /* NaN on one side only */
        if (fabs(b[i]) > s && isfinite(b[i])) s = fabs(b[i]);
        if (a[i] == b[i] || (isnan(a[i]) && isnan(b[i]))) continue;
        double d = fabs((double)a[i] - b[i]); /* inf when one side is infinite */
        if (d > e) e = d;
    }
    return e / s;
}
