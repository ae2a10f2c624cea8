/* record/records.c - batched reading of a pipeline's records from arrays or raw .bin files (see
 * records.h for the contract).
 *
 * Design: an array source is yielded as one batch, without a copy. A file source owns one
 * CB_REC_BUF_BYTES buffer: each batch read(2)s until the buffer is full or the file ends
 * (retrying EINTR and short reads), filters the whole records in place by their `pipeline`
 * field (a 64-byte memcpy per kept record; none when file_pipeline is -1), and keeps the bytes
 * of a record cut by the buffer's end at the buffer's start for the next batch; at the end of
 * the file such bytes are a partial record and are ignored (counted in bytes_ignored). A batch
 * that the filter empties is not returned: the next one is read. Records start at offset 0 of a
 * cb_malloc'd buffer, so batches are aligned for the structs.
 * cb_records_load grows one array per kind by doubling, through the iterator.
 * Thread-safety: an iterator is one thread's; sources are read-only. Ownership: the iterator
 * owns its descriptor and buffer; sources and the cb_error are borrowed.
 * Maxima: CB_REC_BUF_BYTES (1 MiB) per open file iterator; arrays are never copied.
 */
#include "record/records.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"

_Static_assert(sizeof(cb_query_event) == CB_REC_BYTES, "queries.bin records are 64 bytes");
_Static_assert(sizeof(cb_stage_event) == CB_REC_BYTES, "events.bin records are 64 bytes");
_Static_assert(sizeof(cb_metric_event) == CB_REC_BYTES, "metrics.bin records are 64 bytes");
_Static_assert(CB_REC_BUF_BYTES % CB_REC_BYTES == 0, "the buffer holds whole records");

static const char *kind_path(const cb_pipeline_record *rec, cb_rec_kind kind) {
    switch (kind) {
    case CB_REC_QUERIES: return rec->queries_bin;
    case CB_REC_EVENTS: return rec->events_bin;
    default: return rec->metrics_bin;
    }
}

static const void *kind_array(const cb_pipeline_record *rec, cb_rec_kind kind, size_t *n) {
    switch (kind) {
    case CB_REC_QUERIES: *n = rec->queries ? rec->n_queries : 0; return rec->queries;
    case CB_REC_EVENTS: *n = rec->stage_events ? rec->n_stage_events : 0; return rec->stage_events;
    default: *n = rec->metrics ? rec->n_metrics : 0; return rec->metrics;
    }
}

static size_t kind_pipeline_offset(cb_rec_kind kind) {
    switch (kind) {
    case CB_REC_QUERIES: return offsetof(cb_query_event, pipeline);
    case CB_REC_EVENTS: return offsetof(cb_stage_event, pipeline);
    default: return offsetof(cb_metric_event, pipeline);
    }
}

bool cb_records_from_file(const cb_pipeline_record *rec, cb_rec_kind kind) {
    return rec && kind_path(rec, kind) != NULL;
}

int cb_rec_iter_open(cb_rec_iter *it, const cb_pipeline_record *rec, cb_rec_kind kind,
                     cb_error *err) {
    if (!it) return cb_error_set(err, CB_EINVAL, "records: NULL iterator");
    memset(it, 0, sizeof *it);
    it->fd = -1;
    it->kind = kind;
    it->err = err;
    if (!rec || (kind != CB_REC_QUERIES && kind != CB_REC_EVENTS && kind != CB_REC_METRICS))
        return cb_error_set(err, CB_EINVAL, "records: bad source or kind");
    const char *path = kind_path(rec, kind);
    if (!path) {
        it->array = kind_array(rec, kind, &it->n_array);
        if (it->n_array == 0) it->array = NULL;
        return CB_OK;
    }
    it->path = path;
    it->file_pipeline = rec->file_pipeline;
    it->pipeline_offset = kind_pipeline_offset(kind);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            it->eof = true; /* never created: no records */
            return CB_OK;
        }
        return cb_error_set(err, CB_EIO, "%s: cannot open records: %s", path, strerror(e));
    }
    it->buf = cb_malloc(CB_REC_BUF_BYTES);
    if (!it->buf) {
        close(fd);
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory for the read buffer", path);
    }
    it->fd = fd;
    return CB_OK;
}

/* Keeps the records of the selected pipeline among buf[0, n): returns how many, moved to the
 * front in order. */
static size_t filter(cb_rec_iter *it, size_t n) {
    if (it->file_pipeline < 0) return n;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char *r = it->buf + i * CB_REC_BYTES;
        uint16_t p;
        memcpy(&p, r + it->pipeline_offset, sizeof p);
        if ((int)p != it->file_pipeline) continue;
        if (kept != i) memcpy(it->buf + kept * CB_REC_BYTES, r, CB_REC_BYTES);
        kept++;
    }
    return kept;
}

int cb_rec_iter_next(cb_rec_iter *it, const void **batch, size_t *n) {
    *batch = NULL;
    *n = 0;
    if (it->array) {
        *batch = it->array;
        *n = it->n_array;
        it->array = NULL;
        it->records += *n;
        return 1;
    }
    if (it->fd < 0) return 0;
    while (!it->eof) {
        /* The record the previous batch cut goes to the front (the batch is no longer used). */
        if (it->carry && it->carry_off) memmove(it->buf, it->buf + it->carry_off, it->carry);
        it->carry_off = 0;
        size_t len = it->carry;
        while (len < CB_REC_BUF_BYTES) {
            ssize_t r = read(it->fd, it->buf + len, CB_REC_BUF_BYTES - len);
            if (r < 0) {
                if (errno == EINTR) continue;
                int e = errno;
                it->carry = 0;
                it->eof = true;
                return cb_error_set(it->err, CB_EIO, "%s: read error: %s", it->path, strerror(e));
            }
            if (r == 0) {
                it->eof = true;
                break;
            }
            len += (size_t)r;
        }
        size_t whole = len / CB_REC_BYTES, rest = len - whole * CB_REC_BYTES;
        if (it->eof) {
            it->bytes_ignored = rest; /* a partial last record (a crash mid-write) */
            rest = 0;
        }
        it->carry = rest;
        it->carry_off = whole * CB_REC_BYTES; /* past every kept record: untouched by filter */
        size_t kept = filter(it, whole);
        if (kept) {
            *batch = it->buf;
            *n = kept;
            it->records += kept;
            return 1;
        }
    }
    return 0;
}

void cb_rec_iter_close(cb_rec_iter *it) {
    if (!it) return;
    if (it->fd >= 0) close(it->fd);
    it->fd = -1;
    cb_free(it->buf);
    it->buf = NULL;
    it->array = NULL;
    it->eof = true;
}

void cb_loaded_records_fini(cb_loaded_records *l) {
    if (!l) return;
    cb_free(l->queries);
    cb_free(l->stage_events);
    cb_free(l->metrics);
    memset(l, 0, sizeof *l);
}

/* Reads every record of one kind into *out (cb_malloc'd, NULL when none). */
static int load_kind(const cb_pipeline_record *src, cb_rec_kind kind, void **out, size_t *n_out,
                     cb_error *err) {
    *out = NULL;
    *n_out = 0;
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, src, kind, err);
    unsigned char *a = NULL;
    size_t n = 0, cap = 0;
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        if (n + nb > cap) {
            size_t want = cap ? cap : 1024;
            while (want < n + nb) want *= 2;
            unsigned char *g = cb_realloc(a, want * CB_REC_BYTES);
            if (!g) {
                rc = cb_error_set(err, CB_ENOMEM, "records: out of memory loading %zu records",
                                  n + nb);
                break;
            }
            a = g;
            cap = want;
        }
        memcpy(a + n * CB_REC_BYTES, b, nb * CB_REC_BYTES);
        n += nb;
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    if (rc < 0) {
        cb_free(a);
        return rc;
    }
    *out = a;
    *n_out = n;
    return CB_OK;
}

int cb_records_load(const cb_pipeline_record *src, cb_loaded_records *out, cb_error *err) {
    if (!out) return cb_error_set(err, CB_EINVAL, "records: NULL output");
    memset(out, 0, sizeof *out);
    if (!src) return cb_error_set(err, CB_EINVAL, "records: NULL source");
    void *q = NULL, *e = NULL, *m = NULL;
    size_t nq = 0, ne = 0, nm = 0;
    int rc = load_kind(src, CB_REC_QUERIES, &q, &nq, err);
    if (rc == CB_OK) rc = load_kind(src, CB_REC_EVENTS, &e, &ne, err);
    if (rc == CB_OK) rc = load_kind(src, CB_REC_METRICS, &m, &nm, err);
    if (rc != CB_OK) {
        cb_free(q);
        cb_free(e);
        cb_free(m);
        return rc;
    }
    out->queries = q;
    out->stage_events = e;
    out->metrics = m;
    out->rec = (cb_pipeline_record){.queries = q, .n_queries = nq, .stage_events = e,
                                    .n_stage_events = ne, .metrics = m, .n_metrics = nm,
                                    .splits = src->splits};
    return CB_OK;
}
