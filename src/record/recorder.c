/* record/recorder.c - per-thread rings drained by one writer thread (see recorder.h).
 *
 * Files (out_dir set): events.csv, queries.csv, stage_metrics.csv (always created, header only
 * when nothing is reported), and in raw mode events.bin, queries.bin, metrics.bin, splits.bin.
 *
 * Memory orders: a producer fills a record, then publishes the chunk's count with a release
 * store; the writer reads the count with acquire and formats the records in place. A new chunk
 * is initialised, then linked with a release store of `next`, read by the writer with acquire.
 * Spare chunks move writer -> producer through an atomic exchange (acq_rel).
 * Locks: rings_mu protects the ring list (taken when a thread registers and once per writer
 * pass); progress_mu protects each pipeline's recent-latency window (writer appends, progress
 * readers copy). Lock order: the writer takes every progress_mu in pipeline order for a batch; readers take one.
 * Files are written with write(2) in whole lines from 64 KiB buffers; a write error is sticky
 * and reported by cb_recorder_stop.
 */
#include "record/recorder.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fmt.h"
#include "core/alloc.h"
#include "core/clock.h"

#define CB_RECENT 65536u
#define CB_OUTBUF_BYTES (256u * 1024u)
#define CB_OUTBUF_FLUSH (CB_OUTBUF_BYTES - 4096u)

typedef struct cb_outfile {
    int fd;
    char *buf;
    size_t len;
} cb_outfile;

typedef struct cb_pipe_rec {
    char name[160];                   /* CSV-escaped */
    char (*stage_prefix)[352];        /* "pipeline,stage,stage_id," per stage, CSV-escaped */
    uint16_t *stage_prefix_len;
    char splits[CB_MAX_SPLITS][48];   /* CSV-escaped split names; "" without a dataset */
    int n_splits;
    int64_t warmup;
    const cb_metric_def **mdefs;      /* per stage: its declared metrics (names for the CSV) */
    size_t *n_mdefs;
    cb_splits splits_raw;             /* as reported, for the summary; valid when have_splits */
    int have_splits;
    cb_stage_event *sev; size_t nsev;     /* gathered at stop */
    cb_query_event *qev; size_t nqev;
    cb_metric_event *mev; size_t nmev;
    _Atomic uint64_t ended;
    pthread_mutex_t progress_mu;      /* protects recent[], nrecent */
    int64_t *recent; uint64_t nrecent;
} cb_pipe_rec;

struct cb_recorder {
    const cb_spec *spec;
    int64_t t0_ns;
    int64_t flush_period_ns;
    pthread_mutex_t rings_mu;         /* protects rings */
    cb_ring *rings;
    pthread_t thread;
    int thread_started;
    _Atomic int stop;
    int stopped;
    cb_outfile events, queries, metrics;
    cb_outfile raw_events, raw_queries, raw_metrics; /* opts.raw: 64-byte records; else fd -1 */
    int has_metrics;                  /* some stage of the spec declares metrics */
    char *raw_dir;                    /* out_dir in raw mode (splits.bin), else NULL */
    int io_errno;                     /* writer's; read after it is joined */
    int splits_errno;                 /* set_splits' (caller thread); read at stop */
    int oom;
    cb_pipe_rec *pipes;
    size_t n_pipes;
};

/* ---- formatting -------------------------------------------------------------------------- */

static void cb__csv_escape(char *dst, size_t size, const char *s) {
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

static inline char *cb__put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}


static void cb__out_flush(cb_recorder *r, cb_outfile *f) {
    size_t off = 0;
    while (off < f->len && f->fd >= 0) {
        ssize_t k = write(f->fd, f->buf + off, f->len - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (!r->io_errno) r->io_errno = errno;
            break;
        }
        off += (size_t)k;
    }
    f->len = 0;
}

/* Appends bytes (raw records): through the buffer, or straight to the file when large. */
static void cb__out_append(cb_recorder *r, cb_outfile *f, const void *data, size_t len) {
    if (f->len + len > CB_OUTBUF_BYTES) cb__out_flush(r, f);
    if (len > CB_OUTBUF_BYTES) {
        const char *p = data;
        size_t off = 0;
        while (off < len) {
            ssize_t k = write(f->fd, p + off, len - off);
            if (k < 0) {
                if (errno == EINTR) continue;
                if (!r->io_errno) r->io_errno = errno;
                return;
            }
            off += (size_t)k;
        }
        return;
    }
    memcpy(f->buf + f->len, data, len);
    f->len += len;
}

static int cb__out_open(cb_recorder *r, cb_outfile *f, const char *dir, const char *name,
                        const char *header, cb_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) return cb_error_set(err, CB_EIO, "%s: cannot create: %s", path, strerror(errno));
    f->buf = cb_malloc(CB_OUTBUF_BYTES);
    if (!f->buf) return cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
    f->len = 0;
    f->len = (size_t)(cb__put_str(f->buf, header) - f->buf);
    cb__out_flush(r, f);
    return CB_OK;
}

/* ---- writer ------------------------------------------------------------------------------ */

/* The columns events.csv and stage_metrics.csv rows start with: pipeline, stage, stage_id,
 * query_id, split, epoch, batch, worker, each followed by a comma. */
static char *cb__put_run_head(char *p, const cb_pipe_rec *pr, int stage, uint64_t query_id,
                              int split, int64_t epoch, int64_t batch, int64_t worker) {
    memcpy(p, pr->stage_prefix[stage], pr->stage_prefix_len[stage]);
    p += pr->stage_prefix_len[stage];
    p = cb_fmt_u64(p, query_id);
    *p++ = ',';
    if (split >= 0 && split < pr->n_splits) p = cb__put_str(p, pr->splits[split]);
    *p++ = ',';
    p = cb_fmt_i64(p, epoch);
    *p++ = ',';
    p = cb_fmt_i64(p, batch);
    *p++ = ',';
    p = cb_fmt_i64(p, worker);
    *p++ = ',';
    return p;
}

static void cb__write_stage(cb_recorder *r, const cb_stage_event *e) {
    if (e->pipeline >= r->n_pipes) return;
    cb_pipe_rec *pr = &r->pipes[e->pipeline];
    cb_outfile *f = &r->events;
    if (f->fd < 0) return;
    if (f->len > CB_OUTBUF_FLUSH) cb__out_flush(r, f);
    char *p = cb__put_run_head(f->buf + f->len, pr, e->stage, e->query_id, e->split, e->epoch,
                               e->batch, e->worker);
    p = cb_fmt_i64(p, e->enqueue_ns - r->t0_ns);
    *p++ = ',';
    p = cb_fmt_i64(p, e->start_ns - r->t0_ns);
    *p++ = ',';
    p = cb_fmt_i64(p, e->end_ns - r->t0_ns);
    *p++ = ',';
    if (e->device_ns >= 0) p = cb_fmt_i64(p, e->device_ns); /* empty: none reported */
    *p++ = '\n';
    f->len = (size_t)(p - f->buf);
}

static void cb__write_query(cb_recorder *r, const cb_query_event *e) {
    if (e->pipeline >= r->n_pipes) return;
    cb_pipe_rec *pr = &r->pipes[e->pipeline];
    /* progress_mu is held by the caller (cb__drain_half) for the whole batch. */
    if (!cb_query_is_warmup(e, pr->warmup) && e->status == CB_QUERY_OK)
        pr->recent[pr->nrecent++ % CB_RECENT] = e->end_ns - e->scheduled_ns;
    atomic_fetch_add_explicit(&pr->ended, 1, memory_order_relaxed);
    cb_outfile *f = &r->queries;
    if (f->fd < 0) return;
    if (f->len > CB_OUTBUF_FLUSH) cb__out_flush(r, f);
    char *p = f->buf + f->len;
    p = cb__put_str(p, pr->name);
    *p++ = ',';
    p = cb_fmt_u64(p, e->query_id);
    *p++ = ',';
    if (e->split >= 0 && e->split < pr->n_splits) p = cb__put_str(p, pr->splits[e->split]);
    *p++ = ',';
    p = cb_fmt_i64(p, e->epoch);
    *p++ = ',';
    p = cb_fmt_i64(p, e->batch);
    *p++ = ',';
    p = cb_fmt_i64(p, e->scheduled_ns - r->t0_ns);
    *p++ = ',';
    p = cb_fmt_i64(p, e->submit_ns - r->t0_ns);
    *p++ = ',';
    if (e->start_ns) p = cb_fmt_i64(p, e->start_ns - r->t0_ns);
    *p++ = ',';
    p = cb_fmt_i64(p, e->end_ns - r->t0_ns);
    *p++ = ',';
    p = cb__put_str(p, cb_query_status_name(e->status));
    *p++ = '\n';
    f->len = (size_t)(p - f->buf);
}

static void cb__write_metric(cb_recorder *r, const cb_metric_event *e) {
    if (e->pipeline >= r->n_pipes) return;
    cb_pipe_rec *pr = &r->pipes[e->pipeline];
    const cb_pipeline_spec *ps = &r->spec->pipelines[e->pipeline];
    if (e->stage >= ps->n_stages || e->metric < 0 || (size_t)e->metric >= pr->n_mdefs[e->stage])
        return;
    cb_outfile *f = &r->metrics;
    if (f->fd < 0) return;
    if (f->len > CB_OUTBUF_FLUSH) cb__out_flush(r, f);
    char *p = cb__put_run_head(f->buf + f->len, pr, e->stage, e->query_id, e->split, e->epoch,
                               e->batch, e->worker);
    p = cb_fmt_i64(p, e->t_ns - r->t0_ns);
    *p++ = ',';
    p = cb__put_str(p, pr->mdefs[e->stage][e->metric].name); /* [a-z0-9_]{1,64}: no quoting */
    *p++ = ',';
    p = cb_fmt_double(p, e->value);
    *p++ = '\n';
    f->len = (size_t)(p - f->buf);
}

static cb_log_chunk *cb__chunk_new(uint32_t cap) {
    size_t size = sizeof(cb_log_chunk) + (size_t)cap * 64u;
    cb_log_chunk *c = cb_malloc(size);
    if (!c) return NULL;
    memset(c, 0, size); /* also faults every page in, off the hot path */
    return c;
}

/* Producer slow path: the current chunk is full. Takes the writer's spare, else allocates; if
 * even that fails, waits for the writer to provide one (never drops a record). */
void cb__log_grow(cb_log *l) {
    cb_log_chunk *c = atomic_exchange_explicit(&l->spare, NULL, memory_order_acq_rel);
    while (!c) {
        c = cb__chunk_new(l->cap);
        if (c) {
            atomic_fetch_add_explicit(&l->self_alloc, 1, memory_order_relaxed);
            break;
        }
        sched_yield();
        c = atomic_exchange_explicit(&l->spare, NULL, memory_order_acq_rel);
    }
    atomic_store_explicit(&c->n, 0, memory_order_relaxed);
    atomic_store_explicit(&c->next, NULL, memory_order_relaxed);
    atomic_store_explicit(&l->cur->next, c, memory_order_release);
    l->cur = c;
    l->cur_n = 0;
}

enum { CB_LOG_STAGE, CB_LOG_QUERY, CB_LOG_METRIC };

static size_t cb__drain_log(cb_recorder *r, cb_log *l, int kind) {
    size_t n = 0;
    int locked = 0;
    if (!l->first) return 0; /* a metric log of a run without metrics */
    for (;;) {
        uint32_t avail = atomic_load_explicit(&l->wchunk->n, memory_order_acquire);
        if (avail > l->wpos) {
            if (kind == CB_LOG_QUERY && !locked) {
                /* Query records update the progress windows: every pipeline's lock, once. */
                for (size_t i = 0; i < r->n_pipes; i++) pthread_mutex_lock(&r->pipes[i].progress_mu);
                locked = 1;
            }
            for (uint32_t k = l->wpos; k < avail; k++) {
                const void *rec = l->wchunk->recs + (size_t)k * 64u;
                if (kind == CB_LOG_STAGE)
                    cb__write_stage(r, (const cb_stage_event *)rec);
                else if (kind == CB_LOG_QUERY)
                    cb__write_query(r, (const cb_query_event *)rec);
                else
                    cb__write_metric(r, (const cb_metric_event *)rec);
            }
            cb_outfile *raw = kind == CB_LOG_STAGE   ? &r->raw_events
                              : kind == CB_LOG_QUERY ? &r->raw_queries
                                                     : &r->raw_metrics;
            if (raw->fd >= 0)
                cb__out_append(r, raw, l->wchunk->recs + (size_t)l->wpos * 64u,
                               (size_t)(avail - l->wpos) * 64u);
            n += avail - l->wpos;
            l->wpos = avail;
        }
        if (l->wpos < l->cap) break;
        cb_log_chunk *next = atomic_load_explicit(&l->wchunk->next, memory_order_acquire);
        if (!next) break;
        l->wchunk = next;
        l->wpos = 0;
    }
    if (locked)
        for (size_t i = r->n_pipes; i-- > 0;) pthread_mutex_unlock(&r->pipes[i].progress_mu);
    /* Keep a pre-faulted spare ready for the producer. */
    if (!atomic_load_explicit(&l->spare, memory_order_relaxed)) {
        cb_log_chunk *c = cb__chunk_new(l->cap);
        if (c) {
            cb_log_chunk *expected = NULL;
            if (!atomic_compare_exchange_strong_explicit(&l->spare, &expected, c, memory_order_acq_rel,
                                                         memory_order_relaxed))
                cb_free(c);
        }
    }
    return n;
}

static size_t cb__drain_all(cb_recorder *r) {
    pthread_mutex_lock(&r->rings_mu);
    cb_ring *list = r->rings;
    pthread_mutex_unlock(&r->rings_mu);
    /* Rings are only ever prepended, so the snapshot's nodes stay valid. */
    size_t n = 0;
    for (cb_ring *g = list; g; g = g->next) {
        n += cb__drain_log(r, &g->stage, CB_LOG_STAGE);
        n += cb__drain_log(r, &g->query, CB_LOG_QUERY);
        n += cb__drain_log(r, &g->metric, CB_LOG_METRIC);
    }
    return n;
}

static void cb__flush_all(cb_recorder *r) {
    cb__out_flush(r, &r->events);
    cb__out_flush(r, &r->queries);
    cb__out_flush(r, &r->metrics);
    cb__out_flush(r, &r->raw_events);
    cb__out_flush(r, &r->raw_queries);
    cb__out_flush(r, &r->raw_metrics);
}

static void *cb__writer_main(void *arg) {
    cb_recorder *r = arg;
    pthread_setname_np(pthread_self(), "cb-writer");
    int64_t last_flush = cb_clock_now_ns();
    for (;;) {
        int stopping = atomic_load_explicit(&r->stop, memory_order_acquire);
        size_t n = cb__drain_all(r);
        int64_t now = cb_clock_now_ns();
        if (now - last_flush >= r->flush_period_ns) {
            cb__flush_all(r);
            last_flush = now;
        }
        if (stopping) break; /* one full drain after stop was seen */
        if (n == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    cb__flush_all(r);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------ */

int cb_recorder_create(const cb_recorder_opts *opts, cb_recorder **out, cb_error *err) {
    *out = NULL;
    cb_recorder *r = cb_calloc(1, sizeof *r);
    if (!r) return cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
    r->spec = opts->spec;
    r->t0_ns = opts->t0_ns;
    r->flush_period_ns = opts->flush_period_ns > 0 ? opts->flush_period_ns : 50000000LL;
    r->events.fd = r->queries.fd = r->metrics.fd = -1;
    r->raw_events.fd = r->raw_queries.fd = r->raw_metrics.fd = -1;
    pthread_mutex_init(&r->rings_mu, NULL);
    r->n_pipes = opts->spec->n_pipelines;
    r->pipes = cb_calloc(r->n_pipes ? r->n_pipes : 1, sizeof *r->pipes);
    if (!r->pipes) goto oom;
    for (size_t i = 0; i < r->n_pipes; i++) {
        const cb_pipeline_spec *ps = &opts->spec->pipelines[i];
        cb_pipe_rec *pr = &r->pipes[i];
        pthread_mutex_init(&pr->progress_mu, NULL);
        cb__csv_escape(pr->name, sizeof pr->name, ps->name);
        pr->warmup = ps->loadgen.warmup_queries;
        pr->stage_prefix = cb_calloc(ps->n_stages ? ps->n_stages : 1, sizeof *pr->stage_prefix);
        pr->stage_prefix_len = cb_calloc(ps->n_stages ? ps->n_stages : 1, sizeof(uint16_t));
        pr->mdefs = cb_calloc(ps->n_stages ? ps->n_stages : 1, sizeof *pr->mdefs);
        pr->n_mdefs = cb_calloc(ps->n_stages ? ps->n_stages : 1, sizeof *pr->n_mdefs);
        pr->recent = cb_malloc(CB_RECENT * sizeof(int64_t));
        if (!pr->stage_prefix || !pr->stage_prefix_len || !pr->mdefs || !pr->n_mdefs || !pr->recent)
            goto oom;
        for (size_t s = 0; s < ps->n_stages; s++) {
            char name[160];
            cb__csv_escape(name, sizeof name, ps->stages[s].name);
            int k = snprintf(pr->stage_prefix[s], sizeof pr->stage_prefix[s], "%s,%s,%d,", pr->name,
                             name, ps->stages[s].id);
            pr->stage_prefix_len[s] = (uint16_t)(k > 0 ? k : 0);
            pr->mdefs[s] = cb_registry_ops_metrics(ps->stages[s].ops, &pr->n_mdefs[s]);
            if (pr->n_mdefs[s]) r->has_metrics = 1;
        }
    }
    if (opts->out_dir) {
        int rc = cb__out_open(r, &r->events, opts->out_dir, "events.csv",
                              CB_EVENTS_CSV_HEADER, err);
        if (!rc)
            rc = cb__out_open(r, &r->queries, opts->out_dir, "queries.csv",
                              "pipeline,query_id,split,epoch,batch,scheduled_ns,submit_ns,"
                              "start_ns,end_ns,status\n", err);
        if (!rc && opts->raw)
            rc = cb__out_open(r, &r->raw_events, opts->out_dir, "events.bin", "", err);
        if (!rc)
            rc = cb__out_open(r, &r->metrics, opts->out_dir, "stage_metrics.csv",
                              CB_STAGE_METRICS_CSV_HEADER, err);
        if (!rc && opts->raw)
            rc = cb__out_open(r, &r->raw_queries, opts->out_dir, "queries.bin", "", err);
        if (!rc && opts->raw)
            rc = cb__out_open(r, &r->raw_metrics, opts->out_dir, "metrics.bin", "", err);
        if (!rc && opts->raw && !(r->raw_dir = cb_strdup(opts->out_dir)))
            rc = cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
        if (rc) {
            cb_recorder_destroy(r);
            return rc;
        }
    }
    if (pthread_create(&r->thread, NULL, cb__writer_main, r) != 0) {
        cb_recorder_destroy(r);
        return cb_error_set(err, CB_EIO, "recorder: cannot start the writer thread");
    }
    r->thread_started = 1;
    *out = r;
    return CB_OK;
oom:
    cb_recorder_destroy(r);
    return cb_error_set(err, CB_ENOMEM, "recorder: out of memory");
}

void cb_recorder_set_t0(cb_recorder *r, int64_t t0_ns) { r->t0_ns = t0_ns; }

void cb_recorder_set_splits(cb_recorder *r, size_t pipeline, const cb_splits *splits) {
    if (pipeline >= r->n_pipes || !splits) return;
    cb_pipe_rec *pr = &r->pipes[pipeline];
    pr->n_splits = splits->n < 0 ? 0 : splits->n > CB_MAX_SPLITS ? CB_MAX_SPLITS : splits->n;
    for (int i = 0; i < pr->n_splits; i++)
        cb__csv_escape(pr->splits[i], sizeof pr->splits[i], splits->split[i].name);
    pr->splits_raw = *splits;
    pr->splits_raw.n = pr->n_splits;
    for (int i = 0; i < pr->n_splits; i++) /* terminated, whatever the stage wrote */
        pr->splits_raw.split[i].name[CB_SPLIT_NAME_MAX - 1] = '\0';
    pr->have_splits = 1;
    if (r->raw_dir) {
        /* One cb_splits struct, host byte order (a child has one pipeline). */
        char path[4096];
        snprintf(path, sizeof path, "%s/splits.bin", r->raw_dir);
        errno = 0;
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ssize_t k = fd >= 0 ? write(fd, &pr->splits_raw, sizeof pr->splits_raw) : -1;
        if (k != (ssize_t)sizeof pr->splits_raw && !r->splits_errno)
            r->splits_errno = errno ? errno : EIO;
        if (fd >= 0 && close(fd) != 0 && !r->splits_errno) r->splits_errno = errno;
    }
}

static int cb__log_init(cb_log *l, uint32_t cap) {
    l->cap = cap;
    l->first = l->cur = l->wchunk = cb__chunk_new(cap);
    atomic_store(&l->spare, cb__chunk_new(cap));
    return l->first && atomic_load(&l->spare) ? 0 : -1;
}

static void cb__log_fini(cb_log *l) {
    for (cb_log_chunk *c = l->first, *n; c; c = n) {
        n = atomic_load_explicit(&c->next, memory_order_relaxed);
        cb_free(c);
    }
    cb_free(atomic_load(&l->spare));
    l->first = l->cur = l->wchunk = NULL;
}

cb_ring *cb_recorder_ring(cb_recorder *r) {
    cb_ring *g = cb_calloc(1, sizeof *g);
    if (!g) return NULL;
    if (cb__log_init(&g->stage, CB_LOG_CHUNK_RECORDS) ||
        cb__log_init(&g->query, CB_LOG_CHUNK_RECORDS) ||
        (r->has_metrics && cb__log_init(&g->metric, CB_LOG_METRIC_CHUNK_RECORDS))) {
        cb__log_fini(&g->stage);
        cb__log_fini(&g->query);
        cb__log_fini(&g->metric);
        cb_free(g);
        return NULL;
    }
    pthread_mutex_lock(&r->rings_mu);
    g->next = r->rings;
    r->rings = g;
    pthread_mutex_unlock(&r->rings_mu);
    return g;
}

/* Pipeline index of a record of the given log kind. */
static uint16_t cb__rec_pipeline(int kind, const unsigned char *rec) {
    if (kind == CB_LOG_STAGE) return ((const cb_stage_event *)rec)->pipeline;
    if (kind == CB_LOG_QUERY) return ((const cb_query_event *)rec)->pipeline;
    return ((const cb_metric_event *)rec)->pipeline;
}

/* Copies every log's records into contiguous per-pipeline arrays for the summary: one counting
 * pass, one copying pass. */
static int cb__gather(cb_recorder *r) {
    size_t np = r->n_pipes ? r->n_pipes : 1;
    size_t *cnt[3] = {cb_calloc(np, sizeof(size_t)), cb_calloc(np, sizeof(size_t)),
                      cb_calloc(np, sizeof(size_t))};
    int rc = 0;
    if (!cnt[0] || !cnt[1] || !cnt[2]) rc = -1;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (cb_ring *g = r->rings; g; g = g->next) {
            cb_log *logs[3] = {&g->stage, &g->query, &g->metric};
            for (int kind = 0; kind < 3; kind++) {
                for (cb_log_chunk *c = logs[kind]->first; c; c = atomic_load(&c->next)) {
                    uint32_t n = atomic_load(&c->n);
                    for (uint32_t k = 0; k < n; k++) {
                        const unsigned char *rec = c->recs + (size_t)k * 64u;
                        uint16_t p = cb__rec_pipeline(kind, rec);
                        if (p >= r->n_pipes) continue;
                        size_t at = cnt[kind][p]++;
                        if (!pass) continue;
                        cb_pipe_rec *pr = &r->pipes[p];
                        if (kind == CB_LOG_STAGE) memcpy(&pr->sev[at], rec, 64);
                        else if (kind == CB_LOG_QUERY) memcpy(&pr->qev[at], rec, 64);
                        else memcpy(&pr->mev[at], rec, 64);
                    }
                }
            }
        }
        if (pass == 0) {
            for (size_t i = 0; i < r->n_pipes; i++) {
                cb_pipe_rec *pr = &r->pipes[i];
                pr->sev = cb_malloc((cnt[0][i] ? cnt[0][i] : 1) * sizeof *pr->sev);
                pr->qev = cb_malloc((cnt[1][i] ? cnt[1][i] : 1) * sizeof *pr->qev);
                pr->mev = cb_malloc((cnt[2][i] ? cnt[2][i] : 1) * sizeof *pr->mev);
                if (!pr->sev || !pr->qev || !pr->mev) rc = -1;
                pr->nsev = cnt[0][i];
                pr->nqev = cnt[1][i];
                pr->nmev = cnt[2][i];
                cnt[0][i] = cnt[1][i] = cnt[2][i] = 0;
            }
        }
    }
    for (size_t i = 0; rc && i < r->n_pipes; i++) /* keep no half-filled arrays */
        r->pipes[i].nsev = r->pipes[i].nqev = r->pipes[i].nmev = 0;
    for (int k = 0; k < 3; k++) cb_free(cnt[k]);
    return rc;
}

int cb_recorder_stop(cb_recorder *r, cb_error *err) {
    if (!r || r->stopped) return CB_OK;
    r->stopped = 1;
    atomic_store_explicit(&r->stop, 1, memory_order_release);
    if (r->thread_started) pthread_join(r->thread, NULL);
    r->thread_started = 0;
    cb__drain_all(r); /* nothing should be left; harmless if so */
    if (cb__gather(r) != 0) r->oom = 1;
    cb__flush_all(r);
    int rc = CB_OK;
    cb_outfile *files[] = {&r->events,     &r->queries,     &r->metrics,
                           &r->raw_events, &r->raw_queries, &r->raw_metrics};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (files[i]->fd >= 0 && close(files[i]->fd) != 0 && !r->io_errno) r->io_errno = errno;
        files[i]->fd = -1;
    }
    if (!r->io_errno) r->io_errno = r->splits_errno;
    if (r->io_errno)
        rc = cb_error_set(err, CB_EIO, "recorder: writing results failed: %s", strerror(r->io_errno));
    else if (r->oom)
        rc = cb_error_set(err, CB_ENOMEM, "recorder: out of memory keeping records for the summary");
    return rc;
}

cb_pipeline_record cb_recorder_records(const cb_recorder *r, size_t pipeline) {
    cb_pipeline_record pr = {0};
    if (pipeline < r->n_pipes) {
        pr.queries = r->pipes[pipeline].qev;
        pr.n_queries = r->pipes[pipeline].nqev;
        pr.stage_events = r->pipes[pipeline].sev;
        pr.n_stage_events = r->pipes[pipeline].nsev;
        pr.metrics = r->pipes[pipeline].mev;
        pr.n_metrics = r->pipes[pipeline].nmev;
        pr.splits = r->pipes[pipeline].have_splits ? &r->pipes[pipeline].splits_raw : NULL;
    }
    return pr;
}

static int cb__cmp_i64(const void *a, const void *b) {
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
    qsort(copy, n, sizeof *copy, cb__cmp_i64);
    size_t r50 = (n * 50 + 99) / 100, r99 = (n * 99 + 99) / 100;
    *p50_ns = copy[r50 ? r50 - 1 : 0];
    *p99_ns = copy[r99 ? r99 - 1 : 0];
    cb_free(copy);
}

void cb_recorder_destroy(cb_recorder *r) {
    if (!r) return;
    cb_recorder_stop(r, NULL);
    for (cb_ring *g = r->rings, *n; g; g = n) {
        n = g->next;
        cb__log_fini(&g->stage);
        cb__log_fini(&g->query);
        cb__log_fini(&g->metric);
        cb_free(g);
    }
    for (size_t i = 0; r->pipes && i < r->n_pipes; i++) {
        cb_pipe_rec *pr = &r->pipes[i];
        cb_free(pr->stage_prefix);
        cb_free(pr->stage_prefix_len);
        cb_free(pr->mdefs);
        cb_free(pr->n_mdefs);
        cb_free(pr->recent);
        cb_free(pr->sev);
        cb_free(pr->qev);
        cb_free(pr->mev);
        pthread_mutex_destroy(&pr->progress_mu);
    }
    cb_free(r->pipes);
    cb_free(r->events.buf);
    cb_free(r->queries.buf);
    cb_free(r->metrics.buf);
    cb_free(r->raw_events.buf);
    cb_free(r->raw_queries.buf);
    cb_free(r->raw_metrics.buf);
    cb_free(r->raw_dir);
    pthread_mutex_destroy(&r->rings_mu);
    cb_free(r);
}
