/* record/recorder.c - consumes the per-thread rings with one writer thread (see recorder.h).
 *
 * Files (out_dir set): events.csv, queries.csv, stage_metrics.csv (always created, header only
 * when nothing is reported), events.bin, queries.bin, metrics.bin, and splits.bin when a
 * pipeline has a dataset.
 *
 * Design: the writer takes each ring's published records in contiguous runs (cb_log_peek),
 * formats CSV rows into a 256 KiB buffer per file and appends the raw records to another, and
 * writes a buffer with write(2) when it is nearly full or the flush period has passed. Every
 * buffer holds whole rows, so a successful write ends on a row boundary: `good_bytes` counts
 * them. On the first failed write the failing file is truncated back to good_bytes, `io_errno`
 * is set (atomically, for cb_recorder_check) and no file is written again: the files end at one
 * cut, none torn.
 * Locks: rings_mu protects the ring list (taken when a thread registers and once per writer
 * pass); progress_mu protects each pipeline's recent-latency window (the writer appends, progress
 * readers copy); the writer takes every progress_mu in pipeline order for a batch of query
 * records, readers take one. Atomics: t0 (relaxed: it is set before the start gate, which orders
 * it before any record), io_errno and lost (relaxed: status flags polled by the experiment).
 * Memory: rings recycle their chunks (core/ring.h), six 256 KiB file buffers, 512 KiB of recent
 * latencies per pipeline: flat in the run's length.
 */
#include "record/recorder.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/fmt.h"
#include "core/path.h"

#define CB_RECENT 65536u
/* The backlog bound (core/ring.h): chunks written by producers and not yet read, over every ring:
 * 128 x 64 KiB = 8 MiB: tens of milliseconds of records at millions a second. */
#define CB_BACKLOG_MAX_CHUNKS 128
#define CB_OUTBUF_BYTES (256u * 1024u)
#define CB_OUTBUF_FLUSH (CB_OUTBUF_BYTES - 8192u)
/* The longest pipeline or stage name the CSVs hold (bytes; validate refuses longer ones:
 * CB_SPEC_NAME_MAX, CB_SPEC_STAGE_NAME_MAX): names are written whole, CSV-escaped (at most 2n+2
 * bytes), so a row of the longest names, a split name and every number fits the headroom. */
#define CB_RECORD_NAME_MAX 1024u
_Static_assert(CB_SPEC_NAME_MAX <= CB_RECORD_NAME_MAX && CB_SPEC_STAGE_NAME_MAX <= CB_RECORD_NAME_MAX,
               "the records hold every name a benchmark may have");
_Static_assert(2 * (2 * CB_RECORD_NAME_MAX + 2) + (2 * CB_SPLIT_NAME_MAX + 2) + 1024 <=
                   CB_OUTBUF_BYTES - CB_OUTBUF_FLUSH,
               "a row of the longest names fits the buffer's headroom");

typedef struct cb_outfile {
    const char *name;                 /* file name, for messages */
    int fd;                           /* -1 when not open */
    char *buf;
    size_t len;
    uint64_t good_bytes;              /* bytes of whole rows/records written */
    uint64_t records;                 /* raw files: records written */
} cb_outfile;

typedef struct cb_pipe_rec {
    char *name;                       /* CSV-escaped, whole */
    char **stage_prefix;              /* "pipeline,stage,stage_id," per stage, CSV-escaped */
    size_t *stage_prefix_len;
    char splits[CB_MAX_SPLITS][2 * CB_SPLIT_NAME_MAX + 2]; /* CSV-escaped; "" without a dataset */
    int n_splits;
    int64_t warmup;
    const cb_metric_def **mdefs;      /* per stage: its declared metrics (names for the CSV) */
    size_t *n_mdefs;
    _Atomic uint64_t ended;
    pthread_mutex_t progress_mu;      /* protects recent[], nrecent */
    int64_t *recent;
    uint64_t nrecent;
} cb_pipe_rec;

enum { F_EVENTS, F_QUERIES, F_METRICS, F_RAW_EVENTS, F_RAW_QUERIES, F_RAW_METRICS, F_COUNT };

struct cb_recorder {
    const cb_spec *spec;
    cb_record_sink sink;
    _Atomic int64_t t0_ns;
    int64_t flush_period_ns;
    pthread_mutex_t rings_mu;         /* protects rings */
    cb_ring *rings;
    cb_ring_backlog *backlog;         /* shared by the rings; outlives them */
    pthread_t thread;
    int thread_started;
    _Atomic int stop;
    int stopped;
    int dir_fd;                       /* out_dir, or -1 */
    char *out_dir;
    cb_outfile files[F_COUNT];
    _Atomic int io_errno;             /* first write error (0 = none) */
    _Atomic int io_file;              /* which file (F_*) */
    int splits_errno;                 /* set_splits' (caller thread, before the run) */
    cb_pipe_rec *pipes;
    size_t n_pipes;
    cb_splits_record *splits;         /* per pipeline; pipeline < 0 when it has none */
};

static const char *const k_file_names[F_COUNT] = {"events.csv", "queries.csv", "stage_metrics.csv",
                                                  "events.bin", "queries.bin", "metrics.bin"};

/* ---- formatting -------------------------------------------------------------------------- */

static void csv_escape(char *dst, size_t size, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        snprintf(dst, size, "%s", s);
        return;
    }
    size_t o = 0;
    if (o + 1 < size) dst[o++] = '"';
    for (; *s && o + 3 < size; s++) {
        if (*s == '"') dst[o++] = '"';
        dst[o++] = *s;
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

/* s CSV-escaped in a new allocation (NULL when out of memory). */
static char *csv_dup(const char *s) {
    size_t size = 2 * strlen(s) + 3;
    char *d = cb_malloc(size);
    if (d) csv_escape(d, size, s);
    return d;
}

static inline char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

/* ---- files ------------------------------------------------------------------------------- */

/* Writes the buffer. On failure: truncates the file to its last whole row, records the error,
 * and every file stops (the buffer is dropped: nothing half-written is kept). */
static void out_flush(cb_recorder *r, int which) {
    cb_outfile *f = &r->files[which];
    if (f->fd < 0 || f->len == 0) {
        f->len = 0;
        return;
    }
    if (atomic_load_explicit(&r->io_errno, memory_order_relaxed)) {
        f->len = 0;
        return;
    }
    int e = cb_path_write_all(f->fd, f->buf, f->len);
    if (e == 0) {
        f->good_bytes += f->len;
        f->len = 0;
        return;
    }
    (void)!ftruncate(f->fd, (off_t)f->good_bytes);
    int expected = 0;
    if (atomic_compare_exchange_strong(&r->io_errno, &expected, -e))
        atomic_store_explicit(&r->io_file, which, memory_order_relaxed);
    f->len = 0;
}

static void flush_all(cb_recorder *r) {
    for (int i = 0; i < F_COUNT; i++) out_flush(r, i);
}

static int out_open(cb_recorder *r, int which, const char *header, cb_error *err) {
    cb_outfile *f = &r->files[which];
    f->name = k_file_names[which];
    int fd = cb_path_create_at(r->dir_fd, f->name);
    if (fd < 0)
        return cb_error_set(err, CB_EIO, "%s/%s: cannot create: %s", r->out_dir, f->name, strerror(-fd));
    f->fd = fd;
    f->buf = cb_malloc(CB_OUTBUF_BYTES);
    if (!f->buf) return cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
    f->len = (size_t)(put_str(f->buf, header) - f->buf);
    out_flush(r, which);
    int e = atomic_load(&r->io_errno);
    if (e) return cb_error_set(err, CB_EIO, "%s/%s: cannot write: %s", r->out_dir, f->name, strerror(e));
    return CB_OK;
}

/* Writes a run of raw records straight from the ring's chunk (after what the buffer holds, to
 * keep the order): no copy through the buffer. Errors as out_flush. */
static void raw_direct(cb_recorder *r, int which, const void *recs, size_t n) {
    cb_outfile *f = &r->files[which];
    if (f->fd < 0) return;
    out_flush(r, which);
    if (atomic_load_explicit(&r->io_errno, memory_order_relaxed)) return;
    int e = cb_path_write_all(f->fd, recs, n * 64u);
    if (e == 0) {
        f->good_bytes += n * 64u;
        f->records += n;
        return;
    }
    (void)!ftruncate(f->fd, (off_t)f->good_bytes);
    int expected = 0;
    if (atomic_compare_exchange_strong(&r->io_errno, &expected, -e))
        atomic_store_explicit(&r->io_file, which, memory_order_relaxed);
}

/* Appends one raw 64-byte record. */
static inline void raw_put(cb_recorder *r, int which, const void *rec) {
    cb_outfile *f = &r->files[which];
    if (f->fd < 0) return;
    if (f->len + 64 > CB_OUTBUF_BYTES) out_flush(r, which);
    memcpy(f->buf + f->len, rec, 64);
    f->len += 64;
    f->records++;
}

/* ---- writer ------------------------------------------------------------------------------ */

/* The columns events.csv and stage_metrics.csv rows start with: pipeline, stage, stage_id,
 * query_id, split, epoch, batch, worker, each followed by a comma. */
static char *put_run_head(char *p, const cb_pipe_rec *pr, int stage, uint64_t query_id, int split,
                          int64_t epoch, int64_t batch, int64_t worker) {
    memcpy(p, pr->stage_prefix[stage], pr->stage_prefix_len[stage]);
    p += pr->stage_prefix_len[stage];
    p = cb_fmt_u64(p, query_id);
    *p++ = ',';
    if (split >= 0 && split < pr->n_splits) p = put_str(p, pr->splits[split]);
    *p++ = ',';
    p = cb_fmt_i64(p, epoch);
    *p++ = ',';
    p = cb_fmt_i64(p, batch);
    *p++ = ',';
    p = cb_fmt_i64(p, worker);
    *p++ = ',';
    return p;
}

static bool stage_valid(const cb_recorder *r, const cb_stage_event *e) {
    return e->pipeline < r->n_pipes && e->stage < r->spec->pipelines[e->pipeline].n_stages;
}

static void write_stage(cb_recorder *r, const cb_stage_event *e, int64_t t0, bool raw) {
    if (!stage_valid(r, e)) return;
    if (raw) raw_put(r, F_RAW_EVENTS, e);
    cb_pipe_rec *pr = &r->pipes[e->pipeline];
    cb_outfile *f = &r->files[F_EVENTS];
    if (f->fd < 0) return;
    if (f->len > CB_OUTBUF_FLUSH) out_flush(r, F_EVENTS);
    char *p = put_run_head(f->buf + f->len, pr, e->stage, e->query_id, e->split, e->epoch, e->batch,
                           e->worker);
    p = cb_fmt_i64(p, e->enqueue_ns - t0);
    *p++ = ',';
    p = cb_fmt_i64(p, e->start_ns - t0);
    *p++ = ',';
    p = cb_fmt_i64(p, e->end_ns - t0);
    *p++ = ',';
    if (e->device_ns >= 0) p = cb_fmt_i64(p, e->device_ns); /* empty: none reported */
    *p++ = '\n';
    f->len = (size_t)(p - f->buf);
}

/* progress_mu of every pipeline is held by the caller for the whole batch. */
static bool query_valid(const cb_recorder *r, const cb_query_event *e) { return e->pipeline < r->n_pipes; }

static void write_query(cb_recorder *r, const cb_query_event *e, int64_t t0, bool raw) {
    if (!query_valid(r, e)) return;
    if (raw) raw_put(r, F_RAW_QUERIES, e);
    cb_pipe_rec *pr = &r->pipes[e->pipeline];
    if (!cb_query_is_warmup(e, pr->warmup) && e->status == CB_QUERY_OK)
        pr->recent[pr->nrecent++ % CB_RECENT] = e->end_ns - e->scheduled_ns;
    atomic_fetch_add_explicit(&pr->ended, 1, memory_order_relaxed);
    cb_outfile *f = &r->files[F_QUERIES];
    if (f->fd < 0) return;
    if (f->len > CB_OUTBUF_FLUSH) out_flush(r, F_QUERIES);
    char *p = f->buf + f->len;
    p = put_str(p, pr->name);
    *p++ = ',';
    p = cb_fmt_u64(p, e->query_id);
    *p++ = ',';
    if (e->split >= 0 && e->split < pr->n_splits) p = put_str(p, pr->splits[e->split]);
    *p++ = ',';
    p = cb_fmt_i64(p, e->epoch);
    *p++ = ',';
    p = cb_fmt_i64(p, e->batch);
    *p++ = ',';
    p = cb_fmt_i64(p, e->scheduled_ns - t0);
    *p++ = ',';
    p = cb_fmt_i64(p, e->submit_ns - t0);
    *p++ = ',';
    if (e->start_ns) p = cb_fmt_i64(p, e->start_ns - t0);
    *p++ = ',';
    p = cb_fmt_i64(p, e->end_ns - t0);
    *p++ = ',';
    p = put_str(p, cb_query_status_name(e->status));
    *p++ = '\n';
    f->len = (size_t)(p - f->buf);
}

static bool metric_valid(const cb_recorder *r, const cb_metric_event *e) {
    if (e->pipeline >= r->n_pipes) return false;
    const cb_pipe_rec *pr = &r->pipes[e->pipeline];
    const cb_pipeline_spec *ps = &r->spec->pipelines[e->pipeline];
    return e->stage < ps->n_stages && e->metric >= 0 && (size_t)e->metric < pr->n_mdefs[e->stage];
}

static void write_metric(cb_recorder *r, const cb_metric_event *e, int64_t t0, bool raw) {
    if (!metric_valid(r, e)) return;
    cb_pipe_rec *pr = &r->pipes[e->pipeline];
    if (raw) raw_put(r, F_RAW_METRICS, e);
    cb_outfile *f = &r->files[F_METRICS];
    if (f->fd < 0) return;
    if (f->len > CB_OUTBUF_FLUSH) out_flush(r, F_METRICS);
    char *p = put_run_head(f->buf + f->len, pr, e->stage, e->query_id, e->split, e->epoch, e->batch,
                           e->worker);
    p = cb_fmt_i64(p, e->t_ns - t0);
    *p++ = ',';
    p = put_str(p, pr->mdefs[e->stage][e->metric].name); /* [a-z0-9_]{1,64}: no quoting */
    *p++ = ',';
    p = cb_fmt_double(p, e->value);
    *p++ = '\n';
    f->len = (size_t)(p - f->buf);
}

enum { LOG_STAGE, LOG_QUERY, LOG_METRIC };

static size_t drain_log(cb_recorder *r, cb_log *l, int kind) {
    size_t total = 0;
    int locked = 0;
    int64_t t0 = atomic_load_explicit(&r->t0_ns, memory_order_relaxed);
    const unsigned char *recs;
    uint32_t n;
    while ((recs = cb_log_peek(l, &n)) != NULL) {
        if (kind == LOG_QUERY && !locked) {
            /* Query records update the progress windows: every pipeline's lock, once. */
            for (size_t i = 0; i < r->n_pipes; i++) pthread_mutex_lock(&r->pipes[i].progress_mu);
            locked = 1;
        }
        /* Raw records: a run of valid ones (the usual case) is written straight from the chunk;
         * otherwise each valid record goes through the buffer. */
        bool all_valid = n >= 32;
        for (uint32_t k = 0; all_valid && k < n; k++) {
            const void *rec = recs + (size_t)k * 64u;
            all_valid = kind == LOG_STAGE   ? stage_valid(r, rec)
                        : kind == LOG_QUERY ? query_valid(r, rec)
                                            : metric_valid(r, rec);
        }
        if (all_valid) raw_direct(r, kind == LOG_STAGE ? F_RAW_EVENTS : kind == LOG_QUERY ? F_RAW_QUERIES : F_RAW_METRICS,
                                  recs, n);
        for (uint32_t k = 0; k < n; k++) {
            const void *rec = recs + (size_t)k * 64u;
            if (kind == LOG_STAGE)
                write_stage(r, rec, t0, !all_valid);
            else if (kind == LOG_QUERY)
                write_query(r, rec, t0, !all_valid);
            else
                write_metric(r, rec, t0, !all_valid);
        }
        cb_log_advance(l, n);
        total += n;
    }
    if (locked)
        for (size_t i = r->n_pipes; i-- > 0;) pthread_mutex_unlock(&r->pipes[i].progress_mu);
    cb_log_refill_spare(l);
    return total;
}

static size_t drain_all(cb_recorder *r) {
    pthread_mutex_lock(&r->rings_mu);
    cb_ring *list = r->rings;
    pthread_mutex_unlock(&r->rings_mu);
    /* Rings are only ever prepended, so the snapshot's nodes stay valid. */
    size_t n = 0;
    for (cb_ring *g = list; g; g = g->next) {
        n += drain_log(r, &g->stage, LOG_STAGE);
        n += drain_log(r, &g->query, LOG_QUERY);
        n += drain_log(r, &g->metric, LOG_METRIC);
    }
    return n;
}

static void *writer_main(void *arg) {
    cb_recorder *r = arg;
    pthread_setname_np(pthread_self(), "cb-writer");
    int64_t last_flush = cb_clock_now_ns();
    for (;;) {
        int stopping = atomic_load_explicit(&r->stop, memory_order_acquire);
        size_t n = drain_all(r);
        int64_t now = cb_clock_now_ns();
        if (now - last_flush >= r->flush_period_ns) {
            flush_all(r);
            last_flush = now;
        }
        if (stopping) break; /* one full drain after stop was seen */
        if (n == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    flush_all(r);
    return NULL;
}

/* ---- the sink ------------------------------------------------------------------------------ */

static cb_ring *sink_new_ring(void *ctx) {
    cb_recorder *r = ctx;
    cb_ring *g = cb_malloc(sizeof *g);
    if (!g) return NULL;
    cb_ring_init(g, r->backlog);
    pthread_mutex_lock(&r->rings_mu);
    g->next = r->rings;
    r->rings = g;
    pthread_mutex_unlock(&r->rings_mu);
    return g;
}

static void sink_set_t0(void *ctx, int64_t t0_ns) {
    cb_recorder *r = ctx;
    atomic_store_explicit(&r->t0_ns, t0_ns, memory_order_relaxed);
}

/* Rewrites splits.bin with every pipeline's splits known so far. */
static void write_splits(cb_recorder *r) {
    if (r->dir_fd < 0) return;
    int fd = cb_path_create_at(r->dir_fd, "splits.bin");
    int e = fd < 0 ? -fd : 0;
    for (size_t i = 0; !e && i < r->n_pipes; i++)
        if (r->splits[i].pipeline >= 0) e = -cb_path_write_all(fd, &r->splits[i], sizeof r->splits[i]);
    if (fd >= 0 && close(fd) != 0 && !e) e = errno;
    if (e && !r->splits_errno) r->splits_errno = e;
}

static void sink_set_splits(void *ctx, size_t pipeline, const cb_splits *splits) {
    cb_recorder *r = ctx;
    if (pipeline >= r->n_pipes || !splits) return;
    cb_pipe_rec *pr = &r->pipes[pipeline];
    pr->n_splits = splits->n < 0 ? 0 : splits->n > CB_MAX_SPLITS ? CB_MAX_SPLITS : splits->n;
    cb_splits_record *sr = &r->splits[pipeline];
    memset(sr, 0, sizeof *sr);
    sr->pipeline = (int32_t)pipeline;
    sr->splits = *splits;
    sr->splits.n = pr->n_splits;
    for (int i = 0; i < pr->n_splits; i++) { /* terminated, whatever the stage wrote */
        sr->splits.split[i].name[CB_SPLIT_NAME_MAX - 1] = '\0';
        csv_escape(pr->splits[i], sizeof pr->splits[i], sr->splits.split[i].name);
    }
    write_splits(r);
}

/* Keeps the writer off the load generators' cores when there is a choice: every pipeline is
 * pinned (cpus) and the process may run on cpus outside all of them. Otherwise (a pipeline not
 * pinned, or a child process pinned to its pipeline's cpus) the scheduler places it. */
static void writer_place(cb_recorder *r) {
    const cb_spec *s = r->spec;
    cpu_set_t set;
    if (!s->n_pipelines || sched_getaffinity(0, sizeof set, &set) != 0) return;
    for (size_t i = 0; i < s->n_pipelines; i++) {
        const cb_pipeline_spec *ps = &s->pipelines[i];
        if (!ps->n_cpus) return;
        for (size_t k = 0; k < ps->n_cpus; k++)
            if (ps->cpus[k] >= 0 && ps->cpus[k] < CPU_SETSIZE) CPU_CLR(ps->cpus[k], &set);
    }
    if (CPU_COUNT(&set) > 0) (void)pthread_setaffinity_np(r->thread, sizeof set, &set);
}

/* ---- public ------------------------------------------------------------------------------ */

const cb_record_sink *cb_recorder_sink(cb_recorder *r) { return &r->sink; }

int cb_recorder_create(const cb_recorder_opts *opts, cb_recorder **out, cb_error *err) {
    *out = NULL;
    cb_recorder *r = cb_calloc(1, sizeof *r);
    if (!r) return cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
    r->spec = opts->spec;
    r->sink = (cb_record_sink){r, sink_new_ring, sink_set_t0, sink_set_splits};
    atomic_init(&r->t0_ns, opts->t0_ns);
    atomic_init(&r->io_errno, 0);
    atomic_init(&r->io_file, 0);
    r->flush_period_ns = opts->flush_period_ns > 0 ? opts->flush_period_ns : 50000000LL;
    r->dir_fd = -1;
    for (int i = 0; i < F_COUNT; i++) r->files[i].fd = -1;
    pthread_mutex_init(&r->rings_mu, NULL);
    r->n_pipes = opts->spec->n_pipelines;
    r->pipes = cb_calloc(r->n_pipes ? r->n_pipes : 1, sizeof *r->pipes);
    r->splits = cb_calloc(r->n_pipes ? r->n_pipes : 1, sizeof *r->splits);
    r->backlog = cb_calloc(1, sizeof *r->backlog);
    if (!r->pipes || !r->splits || !r->backlog) goto oom;
    atomic_init(&r->backlog->chunks, 0);
    atomic_init(&r->backlog->peak_chunks, 0);
    r->backlog->max_chunks = CB_BACKLOG_MAX_CHUNKS;
    for (size_t i = 0; i < r->n_pipes; i++) {
        const cb_pipeline_spec *ps = &opts->spec->pipelines[i];
        cb_pipe_rec *pr = &r->pipes[i];
        r->splits[i].pipeline = -1;
        pthread_mutex_init(&pr->progress_mu, NULL);
        pr->warmup = ps->loadgen.warmup_queries;
        size_t ns = ps->n_stages ? ps->n_stages : 1;
        pr->name = csv_dup(ps->name);
        pr->stage_prefix = cb_calloc(ns, sizeof *pr->stage_prefix);
        pr->stage_prefix_len = cb_calloc(ns, sizeof *pr->stage_prefix_len);
        pr->mdefs = cb_calloc(ns, sizeof *pr->mdefs);
        pr->n_mdefs = cb_calloc(ns, sizeof *pr->n_mdefs);
        pr->recent = cb_malloc(CB_RECENT * sizeof(int64_t));
        if (!pr->name || !pr->stage_prefix || !pr->stage_prefix_len || !pr->mdefs || !pr->n_mdefs ||
            !pr->recent)
            goto oom;
        const char *too_long = strlen(ps->name) > CB_RECORD_NAME_MAX ? ps->name : NULL;
        for (size_t s = 0; s < ps->n_stages && !too_long; s++)
            if (strlen(ps->stages[s].name) > CB_RECORD_NAME_MAX) too_long = ps->stages[s].name;
        if (too_long) {
            cb_recorder_destroy(r);
            return cb_error_set(err, CB_EINVAL, "recorder: pipeline '%.64s': the name \"%.32s...\" is longer "
                                "than the %u bytes the records hold", ps->name, too_long, CB_RECORD_NAME_MAX);
        }
        for (size_t s = 0; s < ps->n_stages; s++) {
            char *name = csv_dup(ps->stages[s].name);
            size_t size = name ? strlen(pr->name) + strlen(name) + 16 : 0;
            if (name) pr->stage_prefix[s] = cb_malloc(size);
            if (pr->stage_prefix[s]) {
                int k = snprintf(pr->stage_prefix[s], size, "%s,%s,%d,", pr->name, name, ps->stages[s].id);
                pr->stage_prefix_len[s] = k > 0 ? (size_t)k : 0;
            }
            cb_free(name);
            if (!pr->stage_prefix[s]) goto oom;
            pr->mdefs[s] = cb_registry_ops_metrics(ps->stages[s].ops, &pr->n_mdefs[s]);
        }
    }
    if (opts->out_dir) {
        if (!(r->out_dir = cb_strdup(opts->out_dir))) goto oom;
        r->dir_fd = open(opts->out_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int rc = r->dir_fd < 0 ? cb_error_set(err, CB_EIO, "%s: cannot open the output directory: %s",
                                              opts->out_dir, strerror(errno))
                               : CB_OK;
        if (!rc) rc = out_open(r, F_EVENTS, CB_EVENTS_CSV_HEADER, err);
        if (!rc) rc = out_open(r, F_QUERIES, CB_QUERIES_CSV_HEADER, err);
        if (!rc) rc = out_open(r, F_METRICS, CB_STAGE_METRICS_CSV_HEADER, err);
        if (!rc) rc = out_open(r, F_RAW_EVENTS, "", err);
        if (!rc) rc = out_open(r, F_RAW_QUERIES, "", err);
        if (!rc) rc = out_open(r, F_RAW_METRICS, "", err);
        if (!rc) {
            /* No dataset yet: no stale splits.bin of an earlier run in this directory. */
            if (unlinkat(r->dir_fd, "splits.bin", 0) != 0 && errno != ENOENT)
                rc = cb_error_set(err, CB_EIO, "%s/splits.bin: cannot remove: %s", opts->out_dir,
                                  strerror(errno));
        }
        if (rc) {
            cb_recorder_destroy(r);
            return rc;
        }
    }
    if (pthread_create(&r->thread, NULL, writer_main, r) != 0) {
        cb_recorder_destroy(r);
        return cb_error_set(err, CB_EIO, "recorder: cannot start the writer thread");
    }
    r->thread_started = 1;
    writer_place(r);
    *out = r;
    return CB_OK;
oom:
    cb_recorder_destroy(r);
    return cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
}

static uint64_t lost_records(cb_recorder *r) {
    uint64_t lost = 0;
    pthread_mutex_lock(&r->rings_mu);
    for (cb_ring *g = r->rings; g; g = g->next) lost += atomic_load_explicit(&g->lost, memory_order_relaxed);
    pthread_mutex_unlock(&r->rings_mu);
    return lost;
}

int cb_recorder_check(cb_recorder *r, cb_error *err) {
    if (!r) return CB_OK;
    int e = atomic_load_explicit(&r->io_errno, memory_order_relaxed);
    if (e) {
        int which = atomic_load_explicit(&r->io_file, memory_order_relaxed);
        return cb_error_set(err, CB_EIO, "%s/%s: cannot write: %s", r->out_dir ? r->out_dir : ".",
                            k_file_names[which], strerror(e));
    }
    if (r->splits_errno)
        return cb_error_set(err, CB_EIO, "%s/splits.bin: cannot write: %s", r->out_dir ? r->out_dir : ".",
                            strerror(r->splits_errno));
    uint64_t lost = lost_records(r);
    if (lost)
        return cb_error_set(err, CB_ENOMEM,
                            "out of memory: %llu records could not be kept (the run was stopped)",
                            (unsigned long long)lost);
    return CB_OK;
}

void cb_recorder_backlog(const cb_recorder *r, int64_t *peak_chunks, int64_t *max_chunks, size_t *n_rings) {
    *peak_chunks = atomic_load_explicit(&r->backlog->peak_chunks, memory_order_relaxed);
    *max_chunks = r->backlog->max_chunks;
    size_t n = 0;
    pthread_mutex_lock((pthread_mutex_t *)&r->rings_mu);
    for (const cb_ring *g = r->rings; g; g = g->next) n++;
    pthread_mutex_unlock((pthread_mutex_t *)&r->rings_mu);
    *n_rings = n;
}

int64_t cb_recorder_stall_ns(cb_recorder *r) {
    int64_t ns = 0;
    pthread_mutex_lock(&r->rings_mu);
    for (cb_ring *g = r->rings; g; g = g->next) ns += atomic_load_explicit(&g->stall_ns, memory_order_relaxed);
    pthread_mutex_unlock(&r->rings_mu);
    return ns;
}

void cb_recorder_counts(const cb_recorder *r, uint64_t *stage, uint64_t *query, uint64_t *metric) {
    *stage = r->files[F_RAW_EVENTS].records;
    *query = r->files[F_RAW_QUERIES].records;
    *metric = r->files[F_RAW_METRICS].records;
}

int cb_recorder_stop(cb_recorder *r, cb_error *err) {
    if (!r || r->stopped) return r ? cb_recorder_check(r, err) : CB_OK;
    r->stopped = 1;
    atomic_store_explicit(&r->stop, 1, memory_order_release);
    if (r->thread_started) pthread_join(r->thread, NULL);
    r->thread_started = 0;
    drain_all(r); /* nothing should be left; harmless if so */
    flush_all(r);
    for (int i = 0; i < F_COUNT; i++) {
        cb_outfile *f = &r->files[i];
        if (f->fd < 0) continue;
        if (close(f->fd) != 0) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&r->io_errno, &expected, errno))
                atomic_store_explicit(&r->io_file, i, memory_order_relaxed);
        }
        f->fd = -1;
    }
    if (r->dir_fd >= 0) close(r->dir_fd);
    r->dir_fd = -1;
    int rc = cb_recorder_check(r, err);
    if (rc == CB_EIO && r->out_dir)
        cb_error_prefix(err, "results are incomplete (%llu queries and %llu stage runs written before the error)",
                        (unsigned long long)r->files[F_RAW_QUERIES].records,
                        (unsigned long long)r->files[F_RAW_EVENTS].records);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void cb_recorder_progress(cb_recorder *r, size_t pipeline, uint64_t *ended, int64_t *p50_ns,
                          int64_t *p99_ns) {
    *ended = 0;
    *p50_ns = *p99_ns = 0;
    if (pipeline >= r->n_pipes) return;
    cb_pipe_rec *pr = &r->pipes[pipeline];
    *ended = atomic_load_explicit(&pr->ended, memory_order_relaxed);
    pthread_mutex_lock(&pr->progress_mu);
    size_t n = pr->nrecent < CB_RECENT ? (size_t)pr->nrecent : CB_RECENT;
    int64_t *copy = n ? cb_malloc(n * sizeof *copy) : NULL;
    if (copy) memcpy(copy, pr->recent, n * sizeof *copy);
    pthread_mutex_unlock(&pr->progress_mu);
    if (!copy) return;
    qsort(copy, n, sizeof *copy, cmp_i64);
    size_t r50 = (n * 50 + 99) / 100, r99 = (n * 99 + 99) / 100;
    *p50_ns = copy[r50 ? r50 - 1 : 0];
    *p99_ns = copy[r99 ? r99 - 1 : 0];
    cb_free(copy);
}

static void destroy(cb_recorder *r, int free_rings) {
    if (!r) return;
    cb_recorder_stop(r, NULL);
    for (cb_ring *g = r->rings, *n; free_rings && g; g = n) {
        n = g->next;
        cb_ring_fini(g);
        cb_free(g);
    }
    for (size_t i = 0; r->pipes && i < r->n_pipes; i++) {
        cb_pipe_rec *pr = &r->pipes[i];
        for (size_t s = 0; pr->stage_prefix && s < r->spec->pipelines[i].n_stages; s++) cb_free(pr->stage_prefix[s]);
        cb_free(pr->name);
        cb_free(pr->stage_prefix);
        cb_free(pr->stage_prefix_len);
        cb_free(pr->mdefs);
        cb_free(pr->n_mdefs);
        cb_free(pr->recent);
        pthread_mutex_destroy(&pr->progress_mu);
    }
    cb_free(r->pipes);
    cb_free(r->splits);
    if (free_rings) cb_free(r->backlog); /* else abandoned producers may still read it */
    for (int i = 0; i < F_COUNT; i++) cb_free(r->files[i].buf);
    cb_free(r->out_dir);
    pthread_mutex_destroy(&r->rings_mu);
    cb_free(r);
}

void cb_recorder_destroy(cb_recorder *r) { destroy(r, 1); }
void cb_recorder_destroy_keep_rings(cb_recorder *r) { destroy(r, 0); }
