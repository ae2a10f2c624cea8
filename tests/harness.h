/* tests/harness.h - a tiny TAP-style harness. One executable per tests/test_*.c, one process per
 * test file (CTest adds the timeout). Checks print both sides and continue; the exit status is
 * the number of failed checks (capped), so CTest marks the file failed.
 *
 *   static void test_queue_order(void) { CB_CHECK_EQ_INT(pop(), 1); }
 *   int main(void) { CB_RUN(test_queue_order); return cb_test_done(); }
 */
#ifndef CB_TESTS_HARNESS_H
#define CB_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void cb__test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cb__test_run(const char *name, void (*fn)(void));
int cb_test_done(void);

/* GPU tests on a machine without a usable device: prints "# SKIP why"; when no test ran (passed
 * or failed), cb_test_done then returns CB_TEST_SKIPPED, which CTest reports as skipped
 * (SKIP_RETURN_CODE), never as passed. */
#define CB_TEST_SKIPPED 77
void cb_test_skip(const char *why);

#define CB_RUN(fn) cb__test_run(#fn, fn)

#define CB_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) cb__test_fail(__FILE__, __LINE__, "check failed: %s", #cond);                 \
    } while (0)

#define CB_CHECK_EQ_INT(a, b)                                                                      \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) cb__test_fail(__FILE__, __LINE__, "%s == %s: got %lld, expected %lld", #a,  \
                                    #b, a_, b_);                                                   \
    } while (0)

#define CB_CHECK_CMP_INT(a, op, b)                                                                 \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (!(a_ op b_)) cb__test_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a, #op, #b,  \
                                       a_, b_);                                                    \
    } while (0)

#define CB_CHECK_NEAR(a, b, tol)                                                                   \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (!(a_ - b_ <= t_ && b_ - a_ <= t_))                                                     \
            cb__test_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %.3g)", #a, #b, a_, b_,  \
                          t_);                                                                     \
    } while (0)

#define CB_CHECK_STR_EQ(a, b)                                                                      \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            cb__test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b,                \
                          a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                 \
    } while (0)

#define CB_CHECK_CONTAINS(hay, needle)                                                             \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            cb__test_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"", #hay, n_,          \
                          h_ ? h_ : "(null)");                                                     \
    } while (0)

/* Source and build directories (from CMake). */
#ifndef CB_TEST_SRCDIR
#define CB_TEST_SRCDIR "."
#endif
#ifndef CB_TEST_BINDIR
#define CB_TEST_BINDIR "build"
#endif
#define CB_TEST_COLOBENCH CB_TEST_BINDIR "/colobench"

/* A fresh empty directory under $TMPDIR (or /tmp), removed by cb_test_done unless the test
 * failed. Returns a static-lifetime string owned by the harness. */
const char *cb_test_tmpdir(void);

/* Writes text to dir/name; returns the full path (owned by the harness: cb_test_path's ring). */
/* "dir/name" in a ring of 64 buffers shared with cb_test_write (valid until 64 more). */
const char *cb_test_path(const char *dir, const char *name);
const char *cb_test_write(const char *dir, const char *name, const char *text);

/* Reads a whole file (malloc'd, NUL-terminated; NULL when unreadable). */
char *cb_test_read(const char *path, size_t *len);

/* Runs a shell command, capturing stdout+stderr (malloc'd) and the exit status (-signal when
 * killed by a signal). */
int cb_test_sh(const char *cmd, char **output);

/* cb_test_sh that must exit 0: a failed check (at the caller's line) with the command and its
 * output otherwise. */
#define cb_test_sh_ok(cmd) cb__test_sh_ok((cmd), __FILE__, __LINE__)
void cb__test_sh_ok(const char *cmd, const char *file, int line);

/* Number of lines in a file (0 when unreadable). */
size_t cb_test_count_lines(const char *path);

/* Evaluates a Python expression over the JSON file at path (bound to `d`) and returns what it
 * prints, without the trailing newline (malloc'd; NULL, with the error printed, on failure). */
char *cb_test_py_json(const char *path, const char *expr);

/* cb_test_py_json read as a number; -1e300 (never a plausible figure) when it fails or is not a
 * number (a null figure: it then prints the expression, its value and what the file says about
 * why: every "errors", "reason", "why", "unavailable" and "*_reason" key). */
double cb_test_py_num(const char *path, const char *expr);

/* max |a[i] - b[i]| / max |b[i]| over n floats: one relative error for a whole tensor (b is the
 * reference). A NaN on one side only, or an infinity against a finite value, is an infinite
 * error (NaN never compares greater, so it would otherwise pass any tolerance). */
double cb_test_rel_err(const float *a, const float *b, size_t n);

#endif
