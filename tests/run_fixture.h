/* tests/run_fixture.h - one benchmark run in-process, for tests that inspect the records.
 *
 *   run_fixture f;
 *   if (run_fixture_yaml(&f, yaml, out_dir, NULL) == 0) { ... f.rc, f.res ... }
 *   run_fixture_fini(&f);
 *
 * run_fixture_yaml writes the YAML to a fresh temporary directory, loads it against the built-in
 * registry (plus the ops `extra` when not NULL), and runs it; it returns -1 (with the reason
 * printed) when the registry or spec cannot be set up, else 0 with the run's status in f->rc.
 * run_fixture_fini is safe after either outcome. run_fixture_ok does the same and checks that the
 * run completed without error. Header-only, static functions.
 */
#ifndef CB_TESTS_RUN_FIXTURE_H
#define CB_TESTS_RUN_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "harness.h"

typedef struct run_fixture {
    cb_registry *reg;
    cb_doc *doc;
    cb_spec *spec;
    cb_run_result res;
    int rc;
    cb_error err;
} run_fixture;

static inline int run_fixture_yaml(run_fixture *f, const char *yaml, const char *out_dir,
                                   const cb_stage_ops *extra) {
    memset(f, 0, sizeof *f);
    cb_error_clear(&f->err);
    if (cb_registry_create(&f->reg, &f->err) != CB_OK) return -1;
    if (extra && cb_registry_add(f->reg, extra, "test", &f->err) != CB_OK) {
        printf("# registry: %s\n", f->err.msg);
        return -1;
    }
    const char *dir = cb_test_tmpdir();
    const char *path = cb_test_write(dir, "bench.yaml", yaml);
    if (cb_spec_load(path, NULL, 0, f->reg, &f->doc, &f->spec, &f->err) != CB_OK) {
        char buf[2048];
        cb_error_format(&f->err, buf, sizeof buf);
        printf("# spec error: %s\n", buf);
        return -1;
    }
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = f->spec;
    o.out_dir = out_dir;
    f->rc = cb_run(&o, &f->res, &f->err);
    return 0;
}

/* run_fixture_yaml, checking that the run completed without error (failed checks print the
 * first error). 0 when it did, -1 otherwise; run_fixture_fini is needed either way. */
static inline int run_fixture_ok(run_fixture *f, const char *yaml, const char *out_dir,
                                 const cb_stage_ops *extra) {
    int ok = run_fixture_yaml(f, yaml, out_dir, extra);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return -1;
    CB_CHECK_EQ_INT(f->rc, CB_OK);
    CB_CHECK_EQ_INT(f->res.n_errors, 0);
    if (f->res.n_errors) printf("# %s\n", f->res.errors[0]);
    return f->rc == CB_OK && f->res.n_errors == 0 ? 0 : -1;
}

static inline void run_fixture_fini(run_fixture *f) {
    cb_run_result_fini(&f->res);
    cb_spec_destroy(f->spec);
    cb_doc_destroy(f->doc);
    cb_registry_destroy(f->reg);
}

#endif
