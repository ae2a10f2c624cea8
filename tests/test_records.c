/* Tests of record/records.c and of the analysis over file-backed records:
 * - the iterator: arrays in one batch without a copy; files in batches of the 1 MiB buffer,
 *   records cut by the buffer's end carried over, filtered by pipeline (whole batches filtered
 *   away too), a trailing partial record ignored, a missing file empty, a directory an error
 *   naming it; cb_records_load;
 * - summary.json, stage metrics, interference and trace over .bin files (two pipelines
 *   interleaved in one set of files, and one set per pipeline with file_pipeline = -1, each
 *   with a trailing partial record) byte-identical to the same records in memory;
 * - flat memory: with every single allocation limited to 4 MiB (cb__alloc_limit_bytes), the
 *   summary, stage metrics, interference and trace of ~2 M queries and ~2 M stage events in
 *   files succeed, with the figures checked against the known distribution they were drawn from.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analysis/hist.h"
#include "analysis/interference.h"
#include "analysis/stage_metrics.h"
#include "analysis/summary.h"
#include "analysis/trace.h"
#include "core/alloc.h"
#include "record/records.h"

#define T0 1000000000LL
#define MS 1000000LL

/* Writes n records of 64 bytes (and `tail` garbage bytes: a partial record) to dir/name. */
static const char *write_bin(const char *dir, const char *name, const void *recs, size_t n,
                             size_t tail) {
    static char paths[16][700];
    static int next;
    char *path = paths[next++ % 16];
    snprintf(path, sizeof paths[0], "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CB_CHECK(fd >= 0);
    if (fd < 0) return path;
    const unsigned char *p = recs;
    size_t left = n * CB_REC_BYTES;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        CB_CHECK(w > 0);
        if (w <= 0) break;
        p += w;
        left -= (size_t)w;
    }
    unsigned char junk[CB_REC_BYTES];
    memset(junk, 0x5a, sizeof junk);
    if (tail) CB_CHECK_EQ_INT(write(fd, junk, tail), (ssize_t)tail);
    close(fd);
    return path;
}

/* Every record of one kind, concatenated (malloc'd), and the iterator's final status. */
static cb_query_event *read_all(const cb_pipeline_record *rec, size_t *n, size_t *batches,
                                int *status, cb_error *err) {
    cb_rec_iter it;
    cb_query_event *all = NULL;
    *n = 0;
    *batches = 0;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_QUERIES, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        CB_CHECK(nb >= 1 && nb <= CB_REC_BUF_BYTES / CB_REC_BYTES);
        all = realloc(all, (*n + nb) * sizeof *all);
        memcpy(all + *n, b, nb * sizeof *all);
        *n += nb;
        ++*batches;
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    cb_rec_iter_close(&it); /* harmless twice */
    *status = rc;
    return all;
}

static void test_iter_array(void) {
    cb_query_event q[3] = {{.query_id = 1}, {.query_id = 2}, {.query_id = 3}};
    cb_pipeline_record rec = {.queries = q, .n_queries = 3, .file_pipeline = 7};
    cb_rec_iter it;
    CB_CHECK_EQ_INT(cb_rec_iter_open(&it, &rec, CB_REC_QUERIES, NULL), CB_OK);
    const void *b;
    size_t n;
    CB_CHECK_EQ_INT(cb_rec_iter_next(&it, &b, &n), 1);
    CB_CHECK(b == q); /* no copy, no filter for arrays */
    CB_CHECK_EQ_INT(n, 3);
    CB_CHECK_EQ_INT(cb_rec_iter_next(&it, &b, &n), 0);
    CB_CHECK_EQ_INT(cb_rec_iter_next(&it, &b, &n), 0);
    cb_rec_iter_close(&it);
    /* empty kinds */
    CB_CHECK_EQ_INT(cb_rec_iter_open(&it, &rec, CB_REC_EVENTS, NULL), CB_OK);
    CB_CHECK_EQ_INT(cb_rec_iter_next(&it, &b, &n), 0);
    cb_rec_iter_close(&it);
    CB_CHECK(!cb_records_from_file(&rec, CB_REC_QUERIES));
}

static void test_iter_file(void) {
    const char *dir = cb_test_tmpdir();
    /* 40000 records of pipelines 0, 1, 2 in turn (2.4 buffers), 10 bytes of a cut record. */
    enum { N = 40000 };
    cb_query_event *q = calloc(N, sizeof *q);
    for (size_t i = 0; i < N; i++) {
        q[i].query_id = i;
        q[i].pipeline = (uint16_t)(i % 3);
        q[i].end_ns = (int64_t)i * 7;
    }
    const char *path = write_bin(dir, "queries.bin", q, N, 10);
    cb_pipeline_record rec = {.queries_bin = path, .file_pipeline = -1};
    CB_CHECK(cb_records_from_file(&rec, CB_REC_QUERIES));
    size_t n, batches;
    int st;
    cb_error err;
    cb_error_clear(&err);
    cb_query_event *all = read_all(&rec, &n, &batches, &st, &err);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK_EQ_INT(n, N);
    CB_CHECK_EQ_INT(batches, 3);
    CB_CHECK(all && memcmp(all, q, N * sizeof *q) == 0);
    free(all);
    for (int p = 0; p < 3; p++) {
        rec.file_pipeline = p;
        all = read_all(&rec, &n, &batches, &st, &err);
        CB_CHECK_EQ_INT(st, 0);
        CB_CHECK_EQ_INT(n, (N - p + 2) / 3);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += all[i].query_id != 3 * i + (size_t)p ||
                                               all[i].end_ns != (int64_t)(3 * i + (size_t)p) * 7;
        CB_CHECK_EQ_INT(bad, 0);
        free(all);
    }
    /* Pipeline 1 only after 20000 records of pipeline 0: the first buffer (16384 records) is
     * filtered away whole and not returned. */
    for (size_t i = 0; i < N; i++) q[i].pipeline = i < 20000 ? 0 : 1;
    rec.queries_bin = write_bin(dir, "queries2.bin", q, N, 63);
    rec.file_pipeline = 1;
    all = read_all(&rec, &n, &batches, &st, &err);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK_EQ_INT(n, 20000);
    CB_CHECK_EQ_INT(batches, 2);
    CB_CHECK(all && all[0].query_id == 20000 && all[n - 1].query_id == N - 1);
    free(all);
    /* A file not a multiple of the buffer size nor of records, read with a short buffer end:
     * 16385 records and 1 byte. */
    rec.queries_bin = write_bin(dir, "queries3.bin", q, 16385, 1);
    rec.file_pipeline = -1;
    all = read_all(&rec, &n, &batches, &st, &err);
    CB_CHECK_EQ_INT(n, 16385);
    CB_CHECK(all && memcmp(all, q, 16385 * sizeof *q) == 0);
    free(all);

    /* cb_records_load: the same records as arrays, splits carried. */
    cb_splits splits = {.n = 1};
    rec.queries_bin = path;
    rec.file_pipeline = 2;
    rec.splits = &splits;
    cb_loaded_records l;
    CB_CHECK_EQ_INT(cb_records_load(&rec, &l, &err), CB_OK);
    CB_CHECK_EQ_INT(l.rec.n_queries, N / 3);
    CB_CHECK_EQ_INT(l.rec.n_stage_events, 0);
    CB_CHECK(l.rec.splits == &splits && l.rec.queries_bin == NULL);
    CB_CHECK(l.rec.queries[5].query_id == 17);
    cb_loaded_records_fini(&l);
    cb_loaded_records_fini(&l);
    /* out of memory while loading: an error, nothing leaked */
    for (long k = 1; k <= 4; k++) {
        cb__alloc_fail_after(k);
        int rc = cb_records_load(&rec, &l, &err);
        cb__alloc_fail_after(0);
        CB_CHECK(rc == CB_OK || rc == CB_ENOMEM);
        cb_loaded_records_fini(&l);
    }
    free(q);
}

/* Short reads (a pipe written 100 bytes at a time, so records arrive cut anywhere) are
 * gathered into whole records. */
static void test_iter_short_reads(void) {
    const char *dir = cb_test_tmpdir();
    char fifo[700];
    snprintf(fifo, sizeof fifo, "%s/queries.fifo", dir);
    CB_CHECK_EQ_INT(mkfifo(fifo, 0600), 0);
    enum { N = 20000 };
    cb_query_event *q = calloc(N, sizeof *q);
    for (size_t i = 0; i < N; i++) q[i].query_id = i * 3;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(fifo, O_WRONLY);
        const unsigned char *p = (const unsigned char *)q;
        size_t left = N * sizeof *q + 37; /* and a cut record: 37 bytes past the array's end */
        unsigned char *all = malloc(left);
        memcpy(all, p, N * sizeof *q);
        memset(all + N * sizeof *q, 1, 37);
        for (size_t off = 0; off < left;) {
            size_t k = left - off < 100 ? left - off : 100;
            ssize_t w = write(fd, all + off, k);
            if (w > 0) off += (size_t)w;
        }
        _exit(0);
    }
    cb_pipeline_record rec = {.queries_bin = fifo, .file_pipeline = -1};
    size_t n, batches;
    int st;
    cb_error err;
    cb_error_clear(&err);
    cb_query_event *all = read_all(&rec, &n, &batches, &st, &err);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK_EQ_INT(n, N);
    CB_CHECK(all && memcmp(all, q, N * sizeof *q) == 0);
    free(all);
    free(q);
    int status = 0;
    waitpid(pid, &status, 0);
    CB_CHECK_EQ_INT(status, 0);
}

static void test_iter_missing_and_unreadable(void) {
    const char *dir = cb_test_tmpdir();
    char missing[700];
    snprintf(missing, sizeof missing, "%s/no_such_dir/queries.bin", dir);
    cb_pipeline_record rec = {.queries_bin = missing};
    size_t n, batches;
    int st;
    cb_error err;
    cb_error_clear(&err);
    cb_query_event *all = read_all(&rec, &n, &batches, &st, &err);
    CB_CHECK_EQ_INT(st, 0);
    CB_CHECK_EQ_INT(n, 0);
    free(all);
    /* a directory: opened, but every read fails */
    rec.queries_bin = dir;
    all = read_all(&rec, &n, &batches, &st, &err);
    CB_CHECK_EQ_INT(st, CB_EIO);
    CB_CHECK_CONTAINS(err.msg, dir);
    free(all);
    cb_loaded_records l;
    CB_CHECK_EQ_INT(cb_records_load(&rec, &l, &err), CB_EIO);
    CB_CHECK_CONTAINS(err.msg, dir);
    cb_loaded_records_fini(&l);
    /* a path that cannot be opened (a component is a file) */
    char notdir[800];
    snprintf(notdir, sizeof notdir, "%s/x", write_bin(dir, "plain.bin", NULL, 0, 0));
    rec.queries_bin = notdir;
    cb_rec_iter it;
    CB_CHECK_EQ_INT(cb_rec_iter_open(&it, &rec, CB_REC_QUERIES, &err), CB_EIO);
    CB_CHECK_CONTAINS(err.msg, notdir);
    cb_rec_iter_close(&it);
}


/* ---- the analysis over files == over arrays ------------------------------------------------ */

static const cb_metric_def k_mdefs[] = {{"loss", CB_METRIC_GAUGE, "", "loss"},
                                        {"images", CB_METRIC_COUNT, "images", "images"}};

/* Pipeline 0: closed loop, 2 warm-up queries, stages decode -> model (model reports loss and
 * images, on three splits); queries 0-11 (10 dropped, 11 cancelled). Pipeline 1: poisson,
 * 5 queries, one stage with 5 runs. */
typedef struct fixture {
    cb_spec spec;
    cb_pipeline_spec pipes[2];
    cb_stage_spec stages0[2], stages1[1];
    cb_stage_ops model;
    cb_splits splits;
    cb_query_event q0[12], q1[5];
    cb_stage_event e0[32], e1[5];
    cb_metric_event m0[64];
    size_t n_e0, n_m0;
    cb_pipeline_record recs[2];
    cb_summary_input in;
} fixture;

static void fixture_init(fixture *f) {
    memset(f, 0, sizeof *f);
    f->model = (cb_stage_ops){.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_stage_ops),
                              .name = "t.model", .metrics = k_mdefs, .n_metrics = 2};
    f->splits = (cb_splits){.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_splits),
                            .epochs = 1, .n = 3, .split = {{"train", 1}, {"val", 1}, {"test", 1}}};
    f->stages0[0] = (cb_stage_spec){.id = 1, .name = "decode", .component = "noop", .workers = 1};
    f->stages0[1] = (cb_stage_spec){.id = 2, .name = "model", .component = "spin", .workers = 2,
                                    .ops = &f->model};
    f->stages1[0] = (cb_stage_spec){.id = 5, .name = "only", .component = "noop", .workers = 1};
    f->pipes[0] = (cb_pipeline_spec){.name = "closed", .stages = f->stages0, .n_stages = 2};
    f->pipes[0].loadgen.kind = CB_LOADGEN_CLOSED;
    f->pipes[0].loadgen.warmup_queries = 2;
    f->pipes[1] = (cb_pipeline_spec){.name = "open", .stages = f->stages1, .n_stages = 1};
    f->pipes[1].loadgen.kind = CB_LOADGEN_POISSON;
    f->pipes[1].loadgen.rate_qps = 100.0;
    f->spec = (cb_spec){.name = "records", .pipelines = f->pipes, .n_pipelines = 2};
    for (int id = 0; id < 12; id++) {
        cb_query_event *q = &f->q0[11 - id]; /* any order */
        q->query_id = (uint64_t)id;
        q->scheduled_ns = q->submit_ns = T0 + id * MS;
        q->start_ns = q->submit_ns + 100;
        q->end_ns = q->scheduled_ns + (id < 2 ? 500 * MS : (id - 1) * 1000LL);
        q->status = id == 10 ? CB_QUERY_DROPPED : id == 11 ? CB_QUERY_CANCELLED : CB_QUERY_OK;
        q->warmup = id < 2;
        if (id == 11) continue;
        cb_stage_event *e = &f->e0[f->n_e0++];
        *e = (cb_stage_event){.query_id = (uint64_t)id, .stage = 0, .prev_end_ns = q->submit_ns,
                              .enqueue_ns = q->submit_ns, .start_ns = q->submit_ns + 100,
                              .end_ns = q->submit_ns + 400, .device_ns = CB_DEVICE_NS_NONE};
        if (id == 10) continue;
        cb_stage_event *m = &f->e0[f->n_e0++];
        *m = (cb_stage_event){.query_id = (uint64_t)id, .stage = 1, .prev_end_ns = e->end_ns,
                              .enqueue_ns = e->end_ns + 10, .start_ns = e->end_ns + 60,
                              .end_ns = e->end_ns + 1060 + id, .worker = (int16_t)(id % 2),
                              .device_ns = id == 9 ? CB_DEVICE_NS_NONE : 500 + id};
    }
    for (int id = 0; id < 26; id++) {
        int split = id % 3;
        f->m0[f->n_m0++] = (cb_metric_event){.t_ns = T0 + id * MS, .query_id = (uint64_t)id,
                                             .stage = 1, .metric = 0, .value = 100.0 / (id + 1),
                                             .split = (int16_t)split};
        f->m0[f->n_m0++] = (cb_metric_event){.t_ns = T0 + id * MS, .query_id = (uint64_t)id,
                                             .stage = 1, .metric = 1, .value = id,
                                             .split = (int16_t)split};
    }
    for (int id = 0; id < 5; id++) {
        cb_query_event *q = &f->q1[id];
        q->query_id = (uint64_t)id;
        q->pipeline = 1;
        q->scheduled_ns = T0 + id * 10 * MS;
        q->submit_ns = q->scheduled_ns + id * 100;
        q->start_ns = q->submit_ns;
        q->end_ns = q->submit_ns + 5000;
        q->status = CB_QUERY_OK;
        f->e1[id] = (cb_stage_event){.query_id = (uint64_t)id, .pipeline = 1, .stage = 0,
                                     .enqueue_ns = q->submit_ns, .prev_end_ns = q->submit_ns,
                                     .start_ns = q->submit_ns + 10, .end_ns = q->end_ns,
                                     .device_ns = CB_DEVICE_NS_NONE};
    }
    f->recs[0] = (cb_pipeline_record){.queries = f->q0, .n_queries = 12, .stage_events = f->e0,
                                      .n_stage_events = f->n_e0, .metrics = f->m0,
                                      .n_metrics = f->n_m0, .splits = &f->splits};
    f->recs[1] = (cb_pipeline_record){.queries = f->q1, .n_queries = 5, .stage_events = f->e1,
                                      .n_stage_events = 5};
    f->in = (cb_summary_input){.spec = &f->spec, .t0_ns = T0, .end_ns = T0 + 2000 * MS,
                               .wall_start_ns = 1795428000123000000LL, .pipelines = f->recs};
}

/* Everything the analysis writes from in, as one string (malloc'd): summary.json, the table,
 * the collocation figures (JSON and table) and trace.json with and without sampling. rc: the
 * first error, its message in err. */
static char *analysis_text(const cb_summary_input *in, int *rc, cb_error *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cb_error_clear(err);
    *rc = cb_summary_write_json(in, out, err);
    cb_summary_print_table(in, out);
    cb_interference_input ii = {.mode = "threads", .collocated = in, .barrier_skew_ns = -1,
                                .barrier_max_delay_ns = -1};
    cb_interference r;
    int irc = cb_interference_compute(&ii, &r);
    if (irc == CB_OK) {
        cb_json j;
        cb_json_init(&j, out, 2);
        cb_json_object_begin(&j);
        cb_interference_json(&r, &j);
        cb_json_object_end(&j);
        cb_json_finish(&j);
        cb_interference_print_table(&r, out);
    } else if (*rc == CB_OK) {
        *rc = irc;
        cb_error_set(err, irc, "%s", r.err.msg);
    }
    cb_interference_fini(&r);
    for (size_t cap = 0; cap <= 8; cap += 8) {
        cb_trace_input ti = {.spec = in->spec, .t0_ns = in->t0_ns, .pipelines = in->pipelines,
                             .max_slices = cap};
        cb_error terr;
        cb_error_clear(&terr);
        int trc = cb_trace_write(&ti, out, &terr);
        if (trc != CB_OK && *rc == CB_OK) {
            *rc = trc;
            *err = terr;
        }
    }
    fclose(out);
    return buf;
}

static void test_files_match_arrays(void) {
    fixture f;
    fixture_init(&f);
    int rc;
    cb_error err;
    char *want = analysis_text(&f.in, &rc, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    CB_CHECK_CONTAINS(want, "\"first_tenth_mean\"");
    CB_CHECK_CONTAINS(want, "\"query_sampling_stride\":4"); /* 26 slices, cap 8 */
    const char *dir = cb_test_tmpdir();

    /* Threads mode: one set of files, the two pipelines interleaved, a cut record at the end. */
    cb_query_event q[17];
    cb_stage_event e[64];
    size_t nq = 0, ne = 0;
    for (size_t i = 0; i < 12; i++) {
        q[nq++] = f.q0[i];
        if (i < 5) q[nq++] = f.q1[i];
    }
    for (size_t i = 0; i < f.n_e0; i++) {
        e[ne++] = f.e0[i];
        if (i % 3 == 0 && i / 3 < 5) e[ne++] = f.e1[i / 3];
    }
    CB_CHECK_EQ_INT(ne, f.n_e0 + 5);
    cb_metric_event junk = {.stage = 1, .metric = 0, .pipeline = 1, .value = 1e9};
    cb_metric_event m[70];
    memcpy(m, f.m0, f.n_m0 * sizeof *m);
    m[f.n_m0] = junk; /* pipeline 1's: filtered out of pipeline 0 (pipeline 1 declares none) */
    const char *qb = write_bin(dir, "queries.bin", q, nq, 17);
    const char *eb = write_bin(dir, "events.bin", e, ne, 1);
    const char *mb = write_bin(dir, "metrics.bin", m, f.n_m0 + 1, 63);
    fixture g;
    fixture_init(&g);
    for (int p = 0; p < 2; p++)
        g.recs[p] = (cb_pipeline_record){.queries_bin = qb, .events_bin = eb, .metrics_bin = mb,
                                         .file_pipeline = p, .splits = f.recs[p].splits};
    char *got = analysis_text(&g.in, &rc, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    CB_CHECK(want && got && strcmp(want, got) == 0);
    if (want && got && strcmp(want, got) != 0) printf("# arrays:\n%s\n# files:\n%s\n", want, got);
    free(got);

    /* Processes mode: one set of files per pipeline, every record saying pipeline 0. */
    for (size_t i = 0; i < 5; i++) {
        f.q1[i].pipeline = 0;
        f.e1[i].pipeline = 0;
    }
    const char *paths[2][3] = {
        {write_bin(dir, "p0_queries.bin", f.q0, 12, 5),
         write_bin(dir, "p0_events.bin", f.e0, f.n_e0, 0),
         write_bin(dir, "p0_metrics.bin", f.m0, f.n_m0, 40)},
        {write_bin(dir, "p1_queries.bin", f.q1, 5, 0), write_bin(dir, "p1_events.bin", f.e1, 5, 2),
         NULL}};
    char nothing[700];
    snprintf(nothing, sizeof nothing, "%s/p1_metrics.bin", dir); /* never created */
    paths[1][2] = nothing;
    for (int p = 0; p < 2; p++)
        g.recs[p] = (cb_pipeline_record){.queries_bin = paths[p][0], .events_bin = paths[p][1],
                                         .metrics_bin = paths[p][2], .file_pipeline = -1,
                                         .splits = f.recs[p].splits};
    got = analysis_text(&g.in, &rc, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    CB_CHECK(want && got && strcmp(want, got) == 0);
    free(got);

    /* cb_records_load of the files gives the arrays back. */
    cb_loaded_records l;
    CB_CHECK_EQ_INT(cb_records_load(&g.recs[0], &l, &err), CB_OK);
    CB_CHECK_EQ_INT(l.rec.n_stage_events, f.n_e0);
    CB_CHECK(memcmp(l.rec.stage_events, f.e0, f.n_e0 * sizeof *f.e0) == 0);
    CB_CHECK(memcmp(l.rec.metrics, f.m0, f.n_m0 * sizeof *f.m0) == 0);
    cb_loaded_records_fini(&l);
    free(want);
}

/* A missing file is no records: the same text as empty arrays. A file that cannot be read (a
 * directory) is an error naming it, from every function that reads it. */
static void test_files_missing_and_unreadable(void) {
    fixture f;
    fixture_init(&f);
    const char *dir = cb_test_tmpdir();
    char missing[700];
    snprintf(missing, sizeof missing, "%s/never_written.bin", dir);
    int rc;
    cb_error err;
    f.recs[1] = (cb_pipeline_record){0};
    char *want = analysis_text(&f.in, &rc, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    f.recs[1] = (cb_pipeline_record){.queries_bin = missing, .events_bin = missing,
                                     .metrics_bin = missing, .file_pipeline = 1};
    char *got = analysis_text(&f.in, &rc, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    CB_CHECK(want && got && strcmp(want, got) == 0);
    free(want);
    free(got);

    const char *kinds[3] = {"queries", "events", "metrics"};
    for (int k = 0; k < 3; k++) {
        fixture_init(&f);
        if (k == 0) f.recs[0].queries_bin = dir;
        if (k == 1) f.recs[0].events_bin = dir;
        if (k == 2) f.recs[0].metrics_bin = dir;
        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_summary_write_json(&f.in, out, &err), CB_EIO);
        CB_CHECK_CONTAINS(err.msg, dir);
        cb_summary_print_table(&f.in, out); /* says why, no crash */
        fclose(out);
        CB_CHECK_CONTAINS(buf, dir);
        free(buf);
        printf("# %s: %s\n", kinds[k], err.msg);
        if (k == 2) continue; /* interference and trace read no metrics */
        cb_interference_input ii = {.mode = "threads", .collocated = &f.in};
        cb_interference r;
        CB_CHECK_EQ_INT(cb_interference_compute(&ii, &r), CB_EIO);
        CB_CHECK_CONTAINS(r.err.msg, dir);
        cb_interference_fini(&r);
        if (k == 0) continue; /* the trace reads no queries */
        cb_trace_input ti = {.spec = &f.spec, .pipelines = f.recs};
        out = tmpfile();
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_trace_write(&ti, out, &err), CB_EIO);
        CB_CHECK_CONTAINS(err.msg, dir);
        CB_CHECK_EQ_INT(ftell(out), 0);
        fclose(out);
    }
}


/* ---- flat memory ----------------------------------------------------------------------------- */

enum { FLAT_N = 1000000, FLAT_METRICS = 300000, FLAT_BUF = 16384 };

/* perm(i) is a permutation of 0..FLAT_N-1 (7919 is prime to 10^6). */
static uint64_t flat_perm(uint64_t i, int p) { return (i * 7919u + (uint64_t)p * 12345u) % FLAT_N; }
static int64_t flat_sched(uint64_t i, int p) { return T0 + (int64_t)i * 1000 + p * 500 * MS; }
static int64_t flat_latency(uint64_t i, int p) { return 10000 + 10 * (int64_t)flat_perm(i, p); }

/* Streams n records made by make(i) to path, FLAT_BUF at a time. */
typedef void (*make_fn)(uint64_t i, void *rec);

static int write_stream(const char *path, size_t n, make_fn make) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    unsigned char *buf = malloc((size_t)FLAT_BUF * CB_REC_BYTES);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t k = 0;
        for (; k < FLAT_BUF && i < n; k++, i++) make(i, buf + k * CB_REC_BYTES);
        size_t left = k * CB_REC_BYTES;
        for (unsigned char *p = buf; left > 0;) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                rc = -1;
                break;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    free(buf);
    close(fd);
    return rc;
}

/* The two pipelines' queries interleaved: record 2i + p is pipeline p's query i. */
static void make_query(uint64_t r, void *out) {
    uint64_t i = r / 2;
    int p = (int)(r % 2);
    int64_t s = flat_sched(i, p);
    *(cb_query_event *)out = (cb_query_event){.scheduled_ns = s, .submit_ns = s,
                                              .start_ns = s + 100,
                                              .end_ns = s + flat_latency(i, p), .query_id = i,
                                              .pipeline = (uint16_t)p, .status = CB_QUERY_OK};
}

/* One stage run per query: service 1000 + perm(i), queued 100. */
static void make_event(uint64_t r, void *out) {
    uint64_t i = r / 2;
    int p = (int)(r % 2);
    int64_t s = flat_sched(i, p);
    *(cb_stage_event *)out = (cb_stage_event){.enqueue_ns = s, .prev_end_ns = s,
                                              .start_ns = s + 100,
                                              .end_ns = s + 1100 + (int64_t)flat_perm(i, p),
                                              .query_id = i, .pipeline = (uint16_t)p,
                                              .device_ns = CB_DEVICE_NS_NONE};
}

/* Pipeline 0's loss = query id, for query ids 0..FLAT_METRICS-1 in a scrambled order. */
static void make_metric(uint64_t r, void *out) {
    uint64_t id = (r * 7u) % FLAT_METRICS;
    *(cb_metric_event *)out = (cb_metric_event){.t_ns = T0 + (int64_t)id, .query_id = id,
                                                .value = (double)id, .stage = 0, .metric = 0};
}

static void check_rel(int64_t got, int64_t exact, const char *what) {
    double e = fabs((double)got - (double)exact);
    if (e > CB_HIST_REL_ERROR * (double)exact)
        cb__test_fail(__FILE__, __LINE__, "%s: %lld vs exact %lld", what, (long long)got,
                      (long long)exact);
}

/* The tenths as documented: whole bins, the straddling one pro rata (value = query id, one
 * report per id 0..n-1). */
static void binned_tenths(uint64_t n, double *head, double *tail) {
    uint64_t w = (n - 1) / CB_STAGE_METRICS_BINS + 1, nb = (n - 1) / w + 1, tenth = (n + 9) / 10;
    double h = 0, t = 0;
    uint64_t cum = 0;
    for (uint64_t b = 0; b < nb && cum < tenth; b++) {
        uint64_t lo = b * w, hi = lo + w < n ? lo + w : n, c = hi - lo;
        double sum = 0;
        for (uint64_t id = lo; id < hi; id++) sum += (double)id;
        if (cum + c <= tenth) {
            h += sum;
            cum += c;
        } else {
            h += sum * (double)(tenth - cum) / (double)c;
            cum = tenth;
        }
    }
    cum = 0;
    for (uint64_t b = nb; b-- > 0 && cum < tenth;) {
        uint64_t lo = b * w, hi = lo + w < n ? lo + w : n, c = hi - lo;
        double sum = 0;
        for (uint64_t id = lo; id < hi; id++) sum += (double)id;
        if (cum + c <= tenth) {
            t += sum;
            cum += c;
        } else {
            t += sum * (double)(tenth - cum) / (double)c;
            cum = tenth;
        }
    }
    *head = h / (double)tenth;
    *tail = t / (double)tenth;
}

/* 2 M queries, 2 M stage events and 300 k metric reports in files; every single allocation
 * limited to 4 MiB (anything holding one entry per record fails), the figures checked against
 * the distributions they were drawn from. */
static void test_flat_memory(void) {
    const char *dir = cb_test_tmpdir();
    char qb[700], eb[700], mb[700];
    snprintf(qb, sizeof qb, "%s/queries.bin", dir);
    snprintf(eb, sizeof eb, "%s/events.bin", dir);
    snprintf(mb, sizeof mb, "%s/metrics.bin", dir);
    CB_CHECK_EQ_INT(write_stream(qb, 2 * (size_t)FLAT_N, make_query), 0);
    CB_CHECK_EQ_INT(write_stream(eb, 2 * (size_t)FLAT_N, make_event), 0);
    CB_CHECK_EQ_INT(write_stream(mb, FLAT_METRICS, make_metric), 0);

    static const cb_metric_def defs[] = {{"loss", CB_METRIC_GAUGE, "", "loss"}};
    cb_stage_ops ops = {.abi_major = CB_STAGE_ABI_MAJOR, .struct_size = sizeof(cb_stage_ops),
                        .name = "t.flat", .metrics = defs, .n_metrics = 1};
    cb_stage_spec st[2] = {{.id = 0, .name = "s", .component = "x", .workers = 1, .ops = &ops},
                           {.id = 0, .name = "s", .component = "x", .workers = 1}};
    cb_pipeline_spec ps[2] = {{.name = "a", .stages = &st[0], .n_stages = 1},
                              {.name = "b", .stages = &st[1], .n_stages = 1}};
    cb_spec spec = {.name = "flat", .pipelines = ps, .n_pipelines = 2};
    cb_pipeline_record recs[2];
    for (int p = 0; p < 2; p++)
        recs[p] = (cb_pipeline_record){.queries_bin = qb, .events_bin = eb, .metrics_bin = mb,
                                       .file_pipeline = p};
    cb_summary_input in = {.spec = &spec, .t0_ns = T0, .end_ns = T0 + 3000 * MS,
                           .pipelines = recs};
    cb_error err;
    cb_error_clear(&err);

    cb__alloc_limit_bytes((size_t)4 << 20);
    cb_pipeline_stats s0;
    int rc0 = cb_pipeline_stats_compute(&in, 0, &s0);
    cb_stage_metrics sm;
    int rcm = cb_stage_metrics_compute(&in, 0, 1000 * MS, &sm);
    FILE *out = tmpfile();
    int rcj = cb_summary_write_json(&in, out, &err);
    cb_interference_input ii = {.mode = "threads", .collocated = &in, .barrier_skew_ns = -1,
                                .barrier_max_delay_ns = -1};
    cb_interference r;
    int rci = cb_interference_compute(&ii, &r);
    cb_trace_input ti = {.spec = &spec, .t0_ns = T0, .pipelines = recs, .max_slices = 50000};
    FILE *tout = tmpfile();
    cb_error terr;
    cb_error_clear(&terr);
    int rct = cb_trace_write(&ti, tout, &terr);
    cb__alloc_limit_bytes(0);

    CB_CHECK_EQ_INT(rc0, CB_OK);
    CB_CHECK_EQ_INT(rcm, CB_OK);
    CB_CHECK_EQ_INT(rcj, CB_OK);
    CB_CHECK_EQ_INT(rci, CB_OK);
    CB_CHECK_EQ_INT(rct, CB_OK);
    if (rcj != CB_OK) printf("# %s\n", err.msg);
    if (rct != CB_OK) printf("# %s\n", terr.msg);
    if (rc0 == CB_OK) {
        const int64_t n = FLAT_N;
        CB_CHECK_EQ_INT(s0.queries_total, n);
        CB_CHECK_EQ_INT(s0.measured, n);
        CB_CHECK_EQ_INT(s0.latency_ns.n, n);
        CB_CHECK(!s0.latency_ns.exact);
        CB_CHECK_EQ_INT(s0.latency_ns.min, 10000);
        CB_CHECK_EQ_INT(s0.latency_ns.max, 10000 + 10 * (n - 1));
        CB_CHECK(s0.latency_ns.mean == 10000.0 + 5.0 * (double)(n - 1));
        check_rel(s0.latency_ns.p50, 10000 + 10 * (n / 2 - 1), "latency p50");
        check_rel(s0.latency_ns.p99, 10000 + 10 * (n * 99 / 100 - 1), "latency p99");
        check_rel(s0.latency_ns.p999, 10000 + 10 * (n * 999 / 1000 - 1), "latency p999");
        CB_CHECK_EQ_INT(s0.stages[0].runs, n);
        check_rel(s0.stages[0].service_ns.p50, 1000 + (n / 2 - 1), "service p50");
        CB_CHECK_EQ_INT(s0.stages[0].queue_ns.p50, 100); /* all in one unit bucket: exact */
        CB_CHECK(s0.stages[0].queue_ns.exact);
        CB_CHECK_EQ_INT(s0.window_start_ns, 0);
        cb_pipeline_stats_fini(&s0);
    }
    if (rcm == CB_OK && sm.stats) {
        const cb_metric_stats *l = &sm.stats[0];
        double head, tail;
        binned_tenths(FLAT_METRICS, &head, &tail);
        CB_CHECK_EQ_INT(l->n, FLAT_METRICS);
        CB_CHECK(!l->tenths_exact);
        CB_CHECK(l->first == 0.0 && l->last == FLAT_METRICS - 1 && l->max == FLAT_METRICS - 1);
        CB_CHECK(l->mean == (FLAT_METRICS - 1) / 2.0);
        CB_CHECK_NEAR(l->first_tenth_mean, head, 1e-9 * head);
        CB_CHECK_NEAR(l->last_tenth_mean, tail, 1e-9 * tail);
        /* and the documented approximation is close: exact means 14999.5 and 284999.5 */
        CB_CHECK_NEAR(l->first_tenth_mean, 14999.5, 0.01);
        CB_CHECK_NEAR(l->last_tenth_mean, 284999.5, 0.01);
    }
    cb_stage_metrics_fini(&sm);
    if (rci == CB_OK) {
        /* window: from pipeline 1's first scheduled (500 ms) to pipeline 0's last end */
        int64_t we0 = 0;
        for (uint64_t i = 0; i < FLAT_N; i++) {
            int64_t e = flat_sched(i, 0) + flat_latency(i, 0);
            if (e > we0) we0 = e;
        }
        int64_t ws = flat_sched(0, 1), we = we0;
        CB_CHECK_EQ_INT(r.window_start_ns, ws);
        CB_CHECK_EQ_INT(r.window_end_ns, we);
        for (int p = 0; p < 2; p++) {
            size_t in_window = 0; /* queries whose span overlaps the window */
            for (uint64_t i = 0; i < FLAT_N; i++) {
                int64_t s = flat_sched(i, p), e = s + flat_latency(i, p);
                in_window += e > s ? e > ws && s < we : e >= ws && e <= we;
            }
            CB_CHECK_EQ_INT(r.pipelines[p].queries_in_window, in_window);
        }
        CB_CHECK(!r.exact);
    }
    cb_interference_fini(&r);
    if (rct == CB_OK) {
        char tail[512];
        long size = ftell(tout);
        fseek(tout, size > 300 ? size - 300 : 0, SEEK_SET);
        size_t got = fread(tail, 1, sizeof tail - 1, tout);
        tail[got] = '\0';
        CB_CHECK_CONTAINS(tail, "\"slices_total\":2000000,\"slices_written\":50000,"
                                "\"query_sampling_stride\":40,");
    }
    fclose(out);
    fclose(tout);
    unlink(qb);
    unlink(eb);
    unlink(mb);
}

int main(void) {
    CB_RUN(test_iter_array);
    CB_RUN(test_iter_file);
    CB_RUN(test_iter_short_reads);
    CB_RUN(test_iter_missing_and_unreadable);
    CB_RUN(test_files_match_arrays);
    CB_RUN(test_files_missing_and_unreadable);
    CB_RUN(test_flat_memory);
    return cb_test_done();
}
