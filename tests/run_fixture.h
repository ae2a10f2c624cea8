/* tests/run_fixture.h - one benchmark run in-process, for tests that inspect the records.
 *
 *   run_fixture f;
 *   if (run_fixture_yaml(&f, yaml, out_dir, NULL) == 0) { ... f.rc, f.res ... }
 *   cb_pipeline_record r = run_fixture_records(&f, 0);   (arrays, loaded from the raw files)
 *   run_fixture_fini(&f);
 *
 * run_fixture_yaml writes the YAML to a fresh temporary directory, loads it against the built-in
 * registry (plus the ops `extra` when not NULL), and runs it as a run does: a recorder streams
 * the records into out_dir (a fresh temporary directory when NULL), the runtime runs with it as
 * its sink, the recorder is stopped. It returns -1 (with the reason printed) when the registry or
 * spec cannot be set up, else 0 with the run's status in f->rc (a recorder error lands there
 * too, its message in f->err). run_fixture_records reads pipeline p's records back from the raw
 * files into arrays (kept until fini). run_fixture_fini is safe after either outcome.
 * run_fixture_ok does the same and checks that the run completed without error. Header-only,
 * static functions.
 */
#ifndef CB_TESTS_RUN_FIXTURE_H
#define CB_TESTS_RUN_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "analysis/summary.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "harness.h"
#include "record/recorder.h"
#include "record/records.h"
#include "stages/builtin.h"

#define RUN_FIXTURE_MAX_PIPELINES 16

typedef struct run_fixture {
    cb_registry *reg;
    cb_doc *doc;
    cb_spec *spec;
    cb_run_result res;
    int rc;
    cb_error err;
    char dir[512];                      /* the records' directory */
    char paths[RUN_FIXTURE_MAX_PIPELINES][3][600];
    cb_loaded_records loaded[RUN_FIXTURE_MAX_PIPELINES];
    bool have[RUN_FIXTURE_MAX_PIPELINES];
    cb_pipeline_record files[RUN_FIXTURE_MAX_PIPELINES];
    cb_splits splits[RUN_FIXTURE_MAX_PIPELINES];
    int64_t backlog_peak, backlog_max, stall_ns; /* the recorder's (record/recorder.h) */
    size_t n_rings;
} run_fixture;

static inline int run_fixture_yaml(run_fixture *f, const char *yaml, const char *out_dir,
                                   const cb_stage_ops *extra) {
    memset(f, 0, sizeof *f);
    cb_error_clear(&f->err);
    if (cb_builtin_registry(&f->reg, &f->err) != CB_OK) return -1;
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
    snprintf(f->dir, sizeof f->dir, "%s", out_dir ? out_dir : cb_test_tmpdir());
    cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
    ro.spec = f->spec;
    ro.out_dir = f->dir;
    cb_recorder *rec = NULL;
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = f->spec;
    f->rc = cb_recorder_create(&ro, &rec, &f->err);
    if (f->rc == CB_OK) f->rc = cb_run(&o, cb_recorder_sink(rec), &f->res, &f->err);
    cb_error re;
    cb_error_clear(&re);
    int src = rec ? cb_recorder_stop(rec, &re) : CB_OK;
    if (rec) {
        cb_recorder_backlog(rec, &f->backlog_peak, &f->backlog_max, &f->n_rings);
        f->stall_ns = cb_recorder_stall_ns(rec);
    }
    if (src != CB_OK && f->rc == CB_OK) {
        f->rc = src;
        f->err = re;
    }
    cb_recorder_destroy(rec);
    return 0;
}

/* Pipeline p's records as raw files (for the analysis as a run reads them). */
static inline cb_pipeline_record run_fixture_files(run_fixture *f, size_t p) {
    cb_pipeline_record r;
    memset(&r, 0, sizeof r);
    if (p >= RUN_FIXTURE_MAX_PIPELINES) return r;
    snprintf(f->paths[p][0], sizeof f->paths[p][0], "%s/queries.bin", f->dir);
    snprintf(f->paths[p][1], sizeof f->paths[p][1], "%s/events.bin", f->dir);
    snprintf(f->paths[p][2], sizeof f->paths[p][2], "%s/metrics.bin", f->dir);
    r.queries_bin = f->paths[p][0];
    r.events_bin = f->paths[p][1];
    r.metrics_bin = f->paths[p][2];
    r.file_pipeline = (int)p;
    return r;
}

/* Pipeline p's records as arrays (read from the raw files once, kept until fini). */
static inline cb_pipeline_record run_fixture_records(run_fixture *f, size_t p) {
    cb_pipeline_record none;
    memset(&none, 0, sizeof none);
    if (p >= RUN_FIXTURE_MAX_PIPELINES) return none;
    if (!f->have[p]) {
        f->files[p] = run_fixture_files(f, p);
        cb_error e;
        cb_error_clear(&e);
        if (cb_records_load(&f->files[p], &f->loaded[p], &e) != CB_OK) {
            printf("# records: %s\n", e.msg);
            return none;
        }
        f->have[p] = true;
        /* The pipeline's dataset splits, as the recorder wrote them (splits.bin). */
        char sp[600];
        snprintf(sp, sizeof sp, "%s/splits.bin", f->dir);
        FILE *sf = fopen(sp, "rb");
        cb_splits_record sr;
        while (sf && fread(&sr, sizeof sr, 1, sf) == 1)
            if (sr.pipeline == (int32_t)p) {
                f->splits[p] = sr.splits;
                f->loaded[p].rec.splits = &f->splits[p];
            }
        if (sf) fclose(sf);
    }
    return f->loaded[p].rec;
}

/* The summary input over the run (pipelines: caller storage, spec->n_pipelines entries, filled
 * with the arrays). */
static inline void run_fixture_summary_input(run_fixture *f, cb_pipeline_record *pipelines,
                                             cb_summary_input *in) {
    memset(in, 0, sizeof *in);
    in->spec = f->spec;
    in->t0_ns = f->res.t0_ns;
    in->end_ns = f->res.end_ns;
    in->wall_start_ns = f->res.wall_start_ns;
    in->interrupted = f->res.stopped;
    in->timed_out = f->res.timed_out;
    in->errors = f->res.error_ptrs;
    in->n_errors = f->res.n_errors;
    for (size_t i = 0; i < f->spec->n_pipelines; i++) pipelines[i] = run_fixture_records(f, i);
    in->pipelines = pipelines;
    in->prepare_ns = f->res.prepare_ns;
}

/* run_fixture_yaml, checking that the run completed without error (failed checks print the
 * first error). 0 when it did, -1 otherwise; run_fixture_fini is needed either way. */
static inline int run_fixture_ok(run_fixture *f, const char *yaml, const char *out_dir,
                                 const cb_stage_ops *extra) {
    int ok = run_fixture_yaml(f, yaml, out_dir, extra);
    CB_CHECK_EQ_INT(ok, 0);
    if (ok) return -1;
    CB_CHECK_EQ_INT(f->rc, CB_OK);
    if (f->rc) printf("# %s\n", f->err.msg);
    CB_CHECK_EQ_INT(f->res.n_errors, 0);
    if (f->res.n_errors) printf("# %s\n", f->res.errors[0]);
    return f->rc == CB_OK && f->res.n_errors == 0 ? 0 : -1;
}

static inline void run_fixture_fini(run_fixture *f) {
    for (size_t i = 0; i < RUN_FIXTURE_MAX_PIPELINES; i++)
        if (f->have[i]) cb_loaded_records_fini(&f->loaded[i]);
    cb_run_result_fini(&f->res);
    cb_spec_destroy(f->spec);
    cb_doc_destroy(f->doc);
    cb_registry_destroy(f->reg);
}

#endif
