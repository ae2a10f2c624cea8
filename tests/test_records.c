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

#include "core/alloc.h"
#include "record/records.h"

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

int main(void) {
    CB_RUN(test_iter_array);
    CB_RUN(test_iter_file);
    CB_RUN(test_iter_short_reads);
    CB_RUN(test_iter_missing_and_unreadable);
    return cb_test_done();
}
