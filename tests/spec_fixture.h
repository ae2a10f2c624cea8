/* tests/spec_fixture.h - building a spec from YAML text for tests of configuration errors.
 *
 *   if (spec_fixture_init() != 0) return 1;    g_reg: the built-in registry
 *   spec_fixture_build(text, &doc, &spec)      0, or the status with the message in g_msg
 *   EXPECT_ERROR(text, "bench.yaml:3:15: key: message")
 *
 * The text is loaded as "bench.yaml". Header-only, static functions and state.
 */
#ifndef CB_TESTS_SPEC_FIXTURE_H
#define CB_TESTS_SPEC_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "core/registry.h"
#include "stages/builtin.h"
#include "core/spec.h"
#include "harness.h"

static cb_registry *g_reg;
static char g_msg[2048];

/* Creates g_reg (built-in stages); -1 with the reason printed when it cannot. */
static int spec_fixture_init(void) {
    cb_error err;
    cb_error_clear(&err);
    if (cb_builtin_registry(&g_reg, &err)) {
        printf("# registry: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Builds text as "bench.yaml"; returns the status and leaves the formatted error in g_msg.
 * On success with doc_out/spec_out, the caller owns both. */
static int spec_fixture_build(const char *text, cb_doc **doc_out, cb_spec **spec_out) {
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    cb_error err;
    cb_error_clear(&err);
    g_msg[0] = '\0';
    int rc = cb_doc_load_string(text, strlen(text), "bench.yaml", &doc, &err);
    if (!rc) rc = cb_spec_build(doc, g_reg, &spec, &err);
    if (rc) cb_error_format(&err, g_msg, sizeof g_msg);
    if (spec_out && !rc) {
        *spec_out = spec;
        *doc_out = doc;
    } else {
        cb_spec_destroy(spec);
        cb_doc_destroy(doc);
    }
    return rc;
}

static void spec_fixture_expect_error(const char *text, const char *want, int line) {
    int rc = spec_fixture_build(text, NULL, NULL);
    if (rc == 0) {
        cb__test_fail(__FILE__, line, "expected error \"%s\", but the spec built", want);
        return;
    }
    if (strcmp(g_msg, want) != 0)
        cb__test_fail(__FILE__, line, "error:\n#     got  \"%s\"\n#     want \"%s\"", g_msg, want);
}
#define EXPECT_ERROR(text, want) spec_fixture_expect_error(text, want, __LINE__)

#endif
