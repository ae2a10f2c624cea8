/* analysis/trace.c - trace.json (Chrome trace-event JSON, opened by ui.perfetto.dev) from the
 * recorded stage runs and metrics.csv (see trace.h for the layout; docs/internals/trace.md).
 *
 * Design: two streaming passes over the stage events (record/records.h), then one writing pass.
 * - Pass 1, per pipeline: counts the valid stage events (stage index inside the spec: the
 *   slices), those of query 0, the largest query id and the worker slots each stage used (for
 *   thread names). Names are JSON-escaped once.
 * - Stride: 1 when every slice fits under the cap. Otherwise the smallest k whose expected kept
 *   slices fit, assuming each pipeline's slices spread evenly over its ids 0..max: expected(k) =
 *   sum over pipelines of (max_id / k + 1) * slices / (max_id + 1), which only decreases with
 *   k, so a binary search finds it. One k for the file.
 * - Pass 2, per pipeline: the slices of kept queries (id % k == 0; query 0 always) are copied
 *   into one buffer of at most max(cap, slices of query 0) records (grown by doubling). When it
 *   is full and another kept slice comes, k doubles (to max_id + 1, which keeps query 0 only,
 *   when doubling passes the largest id) and the buffer is compacted in place: multiples of 2k
 *   are multiples of k, so nothing dropped is ever needed again and nothing is re-read. With
 *   evenly spread ids the estimate fits and this does not happen; clustered or sparse ids
 *   trigger it.
 * - The kept slices (each pipeline's contiguous in the buffer) get 24-byte sort keys (query id,
 *   start, stage, worker, position) sorted with qsort per pipeline, so each query's runs are
 *   contiguous and in time order.
 * - metrics.csv is validated completely before the first byte is written (malformed input
 *   leaves the output untouched), then parsed again while writing the counter events.
 * - Writing: every event is one line, formatted straight into a 1 MiB buffer with hand-rolled
 *   integer formatting (times as microseconds with exactly 3 decimals: ns / 1000 "." ns % 1000),
 *   then written with fwrite in large blocks: no printf on the per-slice path.
 * - Threads: tid = 1 + (stage << 10) + worker, plus (pipeline << 20) when several pipelines
 *   share one pid (collocated in one process); then the process is named after all of them and
 *   thread names carry a "PIPELINE: " prefix. Flow ids: (pipeline << 47) | query id (under
 *   2^53 for the spec's 64 pipelines: exact in JavaScript viewers). A flow event binds to its
 *   slice at the slice's midpoint: strictly inside it, so binding does not depend on how a
 *   viewer orders events with equal timestamps.
 * Memory (whatever the number of records): one 1 MiB read buffer, the 1 MiB output buffer,
 * 64 + 24 bytes per kept slice, at most max(max_slices, slices of query 0) of them (88 MiB at
 * the default cap of one million; glibc's qsort may take up to as much again as the keys for
 * its scratch), and O(stages) per pipeline for names.
 * Thread-safety: pure function over borrowed inputs; no shared state. Ownership: everything in
 * `in` is borrowed for the call; all scratch memory is cb_malloc'd and freed before returning.
 */
#include "analysis/trace.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fmt.h"

#define CB_TRACE_BUF_BYTES (1u << 20)
#define CB_TRACE_METRICS_LINE_MAX 1024 /* bytes per metrics.csv line, newline excluded */
#define CB_TRACE_METRICS_FIELDS 6
#define CB_TRACE_MONITOR_PID 1073741823 /* above any Linux pid_max (2^22) */
#define CB_TRACE_MAX_PIPELINES 2047      /* tids stay under 2^31 */
#define CB_TRACE_STAGE_SLOTS 1024        /* stages and workers per tid field (spec maxima) */
#define CB_TRACE_FLOW_QID_BITS 47

static const char k_metrics_header[] = "t_ns,source,device,pid,metric,value";

/* ---- buffered writer --------------------------------------------------------------------- */

typedef struct trace_writer {
    FILE *out;
    char *buf;
    size_t len, cap;
    bool first;  /* no event written yet */
    bool failed; /* allocation failure (fwrite errors show in ferror(out)) */
} trace_writer;

static void tw_flush(trace_writer *w) {
    if (w->len) (void)fwrite(w->buf, 1, w->len, w->out); /* errors: ferror(out) at the end */
    w->len = 0;
}

/* Makes room for n more bytes; returns the write cursor, or NULL when the buffer could not
 * grow (then nothing is written: the caller skips the event and the failure is reported). */
static char *tw_reserve(trace_writer *w, size_t n) {
    if (w->len + n > w->cap) tw_flush(w);
    if (n > w->cap) {
        char *nb = cb_realloc(w->buf, n);
        if (!nb) {
            w->failed = true;
            return NULL;
        }
        w->buf = nb;
        w->cap = n;
    }
    return w->buf + w->len;
}

static void tw_commit(trace_writer *w, const char *p) { w->len = (size_t)(p - w->buf); }

static inline char *put_mem(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put_mem((p), (lit), sizeof(lit) - 1)


/* Nanoseconds as microseconds with exactly three decimals: 1234567 -> "1234.567". */
static inline char *put_us(char *p, int64_t ns) {
    uint64_t a = (uint64_t)ns;
    if (ns < 0) {
        *p++ = '-';
        a = (uint64_t)0 - a;
    }
    p = cb_fmt_u64(p, a / 1000u);
    unsigned f = (unsigned)(a % 1000u);
    p[0] = '.';
    p[1] = (char)('0' + f / 100u);
    p[2] = cb_fmt_digits2[(f % 100u) * 2u];
    p[3] = cb_fmt_digits2[(f % 100u) * 2u + 1];
    return p + 4;
}

/* Starts an event line: ",\n" before every event but the first. Reserves extra bytes. */
static char *tw_event(trace_writer *w, size_t extra) {
    char *p = tw_reserve(w, extra + 2);
    if (!p) return NULL;
    if (!w->first) p = PUT_LIT(p, ",\n");
    w->first = false;
    return p;
}

/* ---- JSON strings ------------------------------------------------------------------------ */

/* JSON string body (no quotes) of s: '"', '\\' and control characters escaped, other bytes
 * (UTF-8) as they are. Writes at most 6 * strlen(s) bytes to dst; returns the end. */
static char *put_json_body(char *dst, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *dst++ = '\\';
            *dst++ = (char)c;
        } else if (c < 0x20) {
            *dst++ = '\\';
            switch (c) {
            case '\n': *dst++ = 'n'; break;
            case '\t': *dst++ = 't'; break;
            case '\r': *dst++ = 'r'; break;
            default:
                dst = PUT_LIT(dst, "u00");
                *dst++ = hex[c >> 4];
                *dst++ = hex[c & 15];
            }
        } else {
            *dst++ = (char)c;
        }
    }
    return dst;
}

typedef struct json_str {
    char *s;  /* escaped body, cb_malloc'd */
    size_t n;
} json_str;

static int json_str_make(json_str *out, const char *prefix, const char *s) {
    size_t np = strlen(prefix), ns = s ? strlen(s) : 0;
    out->s = cb_malloc(np + 6 * ns + 1);
    if (!out->s) return CB_ENOMEM;
    char *p = put_mem(out->s, prefix, np);
    if (s) p = put_json_body(p, s);
    *p = '\0';
    out->n = (size_t)(p - out->s);
    return CB_OK;
}

/* ---- preparation ------------------------------------------------------------------------- */

typedef struct trace_key {
    uint64_t qid;
    int64_t start_ns;
    uint32_t idx;    /* into the kept buffer */
    uint16_t stage;
    uint16_t slot;   /* worker, clamped to [0, CB_TRACE_STAGE_SLOTS) */
} trace_key;

typedef struct trace_pipe {
    int pid;
    bool shared_pid;     /* another pipeline has the same pid */
    bool names_process;  /* first pipeline of its pid: writes the process metadata */
    json_str name;       /* escaped pipeline name */
    json_str *stages;    /* per stage: escaped "STAGE" (or "PIPELINE: STAGE" when shared) */
    json_str *slice_names; /* per stage: escaped stage name */
    int *n_slots;        /* per stage: worker slots that get a thread name */
    size_t slices;       /* pass 1: valid stage events */
    size_t q0_slices;    /* pass 1: of query 0 */
    uint64_t max_qid;    /* pass 1: largest query id of a valid event */
    size_t begin, end;   /* its kept slices: kept[begin, end) */
} trace_pipe;

typedef struct trace_ctx {
    const cb_trace_input *in;
    trace_pipe *pipes;
    size_t n_pipes;
    size_t total, written, cap;
    uint64_t stride;
    uint64_t max_qid;    /* over every pipeline */
    bool zero_only;      /* only query 0 kept (when max_qid + 1 does not exist) */
    cb_stage_event *kept;  /* pass 2: kept slices, `pipeline` set to the pipeline's index */
    size_t n_kept, kept_cap, kept_max;
    trace_key *keys;
} trace_ctx;

static int key_cmp(const void *a, const void *b) {
    const trace_key *x = a, *y = b;
    if (x->qid != y->qid) return x->qid < y->qid ? -1 : 1;
    if (x->start_ns != y->start_ns) return x->start_ns < y->start_ns ? -1 : 1;
    if (x->stage != y->stage) return x->stage < y->stage ? -1 : 1;
    if (x->slot != y->slot) return x->slot < y->slot ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static uint32_t tid_of(const trace_ctx *c, size_t p, unsigned stage, unsigned slot) {
    uint32_t tid = 1u + ((uint32_t)stage << 10) + slot;
    if (c->pipes[p].shared_pid) tid += (uint32_t)p << 20;
    return tid;
}

static inline int slot_of(const cb_stage_event *e) {
    return e->worker >= 0 && e->worker < CB_TRACE_STAGE_SLOTS ? e->worker
                                                               : CB_TRACE_STAGE_SLOTS - 1;
}

/* Names, then pass 1 over the pipeline's stage events. */
static int prepare_pipe(trace_ctx *c, size_t p, cb_error *err) {
    const cb_pipeline_spec *ps = &c->in->spec->pipelines[p];
    const cb_pipeline_record *r = &c->in->pipelines[p];
    trace_pipe *tp = &c->pipes[p];
    if (ps->n_stages > CB_TRACE_STAGE_SLOTS)
        return cb_error_set(err, CB_EINVAL, "trace: pipeline %s has %zu stages (at most %d)",
                            ps->name, ps->n_stages, CB_TRACE_STAGE_SLOTS);
    size_t ns = ps->n_stages ? ps->n_stages : 1;
    tp->stages = cb_calloc(ns, sizeof *tp->stages);
    tp->slice_names = cb_calloc(ns, sizeof *tp->slice_names);
    tp->n_slots = cb_calloc(ns, sizeof *tp->n_slots);
    if (!tp->stages || !tp->slice_names || !tp->n_slots) goto oom;
    if (json_str_make(&tp->name, "", ps->name)) goto oom;
    for (size_t s = 0; s < ps->n_stages; s++) {
        const char *sname = ps->stages[s].name ? ps->stages[s].name : "";
        if (json_str_make(&tp->slice_names[s], "", sname)) goto oom;
        if (tp->shared_pid) {
            /* "PIPELINE: STAGE": escape each part (the prefix is already escaped). */
            json_str tmp;
            if (json_str_make(&tmp, "", sname)) goto oom;
            tp->stages[s].s = cb_malloc(tp->name.n + 2 + tmp.n + 1);
            if (!tp->stages[s].s) {
                cb_free(tmp.s);
                goto oom;
            }
            char *q = put_mem(tp->stages[s].s, tp->name.s, tp->name.n);
            q = PUT_LIT(q, ": ");
            q = put_mem(q, tmp.s, tmp.n);
            *q = '\0';
            tp->stages[s].n = (size_t)(q - tp->stages[s].s);
            cb_free(tmp.s);
        } else if (json_str_make(&tp->stages[s], "", sname)) {
            goto oom;
        }
        int w = ps->stages[s].workers;
        tp->n_slots[s] = w < 1 ? 1 : w > CB_TRACE_STAGE_SLOTS ? CB_TRACE_STAGE_SLOTS : w;
    }
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, r, CB_REC_EVENTS, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        for (const cb_stage_event *e = b, *end = e + nb; e < end; e++) {
            if (e->stage >= ps->n_stages) continue; /* a recorder bug must not crash the export */
            int slot = slot_of(e);
            if (slot + 1 > tp->n_slots[e->stage]) tp->n_slots[e->stage] = slot + 1;
            tp->slices++;
            tp->q0_slices += e->query_id == 0;
            if (e->query_id > tp->max_qid) tp->max_qid = e->query_id;
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    if (rc != CB_OK) return rc;
    c->total += tp->slices;
    if (tp->slices && tp->max_qid > c->max_qid) c->max_qid = tp->max_qid;
    return CB_OK;
oom:
    return cb_error_set(err, CB_ENOMEM, "trace: out of memory");
}

/* Expected kept slices with stride k if each pipeline's slices spread evenly over its ids. */
static double expected_kept(const trace_ctx *c, uint64_t k) {
    double sum = 0.0;
    for (size_t p = 0; p < c->n_pipes; p++) {
        const trace_pipe *tp = &c->pipes[p];
        if (!tp->slices) continue;
        sum += ((double)(tp->max_qid / k) + 1.0) * (double)tp->slices /
               ((double)tp->max_qid + 1.0);
    }
    return sum;
}

/* The stride that keeps only query 0: max_qid + 1 (or zero_only when that does not exist). */
static uint64_t stride_zero_only(trace_ctx *c) {
    if (c->max_qid == UINT64_MAX) {
        c->zero_only = true;
        return UINT64_MAX;
    }
    return c->max_qid + 1;
}

/* Chooses the first query sampling stride (1 = everything fits). */
static void choose_stride(trace_ctx *c) {
    c->stride = 1;
    if (c->total <= c->cap) return;
    uint64_t hi = stride_zero_only(c);                  /* keeps query 0 only */
    if (c->zero_only) hi = UINT64_MAX;
    uint64_t lo = (uint64_t)((c->total + c->cap - 1) / c->cap); /* >= 2 */
    if (lo < 2) lo = 2;
    if (lo > hi) lo = hi;
    if (expected_kept(c, hi) > (double)c->cap) {
        c->stride = hi;
        return;
    }
    while (lo < hi) { /* smallest k in [lo, hi] with expected_kept(k) <= cap */
        uint64_t mid = lo + (hi - lo) / 2;
        if (expected_kept(c, mid) <= (double)c->cap)
            hi = mid;
        else
            lo = mid + 1;
    }
    c->stride = lo;
    c->zero_only = false;
}

static inline bool kept_query(const trace_ctx *c, uint64_t qid) {
    return c->zero_only ? qid == 0 : qid % c->stride == 0;
}

/* The buffer is full: a larger stride (2k, or query 0 only) and the buffer compacted to it.
 * false when the stride cannot grow (only query 0 is left). */
static bool raise_stride(trace_ctx *c) {
    if (c->zero_only || c->stride > c->max_qid) return false;
    if (c->stride <= c->max_qid / 2)
        c->stride *= 2;
    else
        c->stride = stride_zero_only(c);
    size_t n = 0;
    for (size_t i = 0; i < c->n_kept; i++)
        if (kept_query(c, c->kept[i].query_id)) c->kept[n++] = c->kept[i];
    c->n_kept = n;
    return true;
}

/* Pass 2 over one pipeline: its kept slices into the buffer. */
static int collect_pipe(trace_ctx *c, size_t p, cb_error *err) {
    const cb_pipeline_spec *ps = &c->in->spec->pipelines[p];
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, &c->in->pipelines[p], CB_REC_EVENTS, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        rc = CB_OK;
        for (const cb_stage_event *e = b, *end = e + nb; e < end && rc == CB_OK; e++) {
            if (e->stage >= ps->n_stages || !kept_query(c, e->query_id)) continue;
            if (c->n_kept == c->kept_max) {
                while (c->n_kept == c->kept_max && raise_stride(c)) {}
                if (!kept_query(c, e->query_id) || c->n_kept == c->kept_max) continue;
            }
            if (c->n_kept == c->kept_cap) {
                size_t cap = c->kept_cap ? 2 * c->kept_cap : 4096;
                if (cap > c->kept_max) cap = c->kept_max;
                cb_stage_event *g = cb_realloc(c->kept, cap * sizeof *g);
                if (!g) {
                    rc = cb_error_set(err, CB_ENOMEM, "trace: out of memory");
                    break;
                }
                c->kept = g;
                c->kept_cap = cap;
            }
            cb_stage_event *k = &c->kept[c->n_kept++];
            *k = *e;
            k->pipeline = (uint16_t)p;
        }
    }
    cb_rec_iter_close(&it);
    return rc;
}

/* Pass 2 over every pipeline, then the sort keys of each pipeline's kept slices. */
static int collect(trace_ctx *c, cb_error *err) {
    size_t q0 = 0;
    for (size_t p = 0; p < c->n_pipes; p++) q0 += c->pipes[p].q0_slices;
    c->kept_max = c->cap > q0 ? c->cap : q0;
    if (c->kept_max > c->total) c->kept_max = c->total;
    if (c->kept_max > UINT32_MAX)
        return cb_error_set(err, CB_EINVAL, "trace: max_slices %zu above %u", c->kept_max,
                            (unsigned)UINT32_MAX);
    for (size_t p = 0; p < c->n_pipes; p++) {
        int rc = collect_pipe(c, p, err);
        if (rc != CB_OK) return rc;
    }
    c->written = c->n_kept;
    c->keys = cb_malloc((c->n_kept ? c->n_kept : 1) * sizeof *c->keys);
    if (!c->keys) return cb_error_set(err, CB_ENOMEM, "trace: out of memory");
    /* Compaction keeps the order: each pipeline's slices are one contiguous range. */
    size_t i = 0;
    for (size_t p = 0; p < c->n_pipes; p++) {
        trace_pipe *tp = &c->pipes[p];
        tp->begin = i;
        for (; i < c->n_kept && c->kept[i].pipeline == p; i++) {
            const cb_stage_event *e = &c->kept[i];
            c->keys[i] = (trace_key){e->query_id, e->start_ns, (uint32_t)i, e->stage,
                                     (uint16_t)slot_of(e)};
        }
        tp->end = i;
        qsort(c->keys + tp->begin, tp->end - tp->begin, sizeof *c->keys, key_cmp);
    }
    return CB_OK;
}

/* ---- metrics.csv ------------------------------------------------------------------------- */

/* Splits a CSV line in place into at most max fields ("..." quoting with "" escapes). Returns
 * the field count, or -1 for a malformed quote, -2 for too many fields. */
static int csv_split(char *line, char **fields, int max) {
    char *r = line, *w = line;
    int n = 0;
    for (;;) {
        if (n == max) return -2;
        fields[n++] = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (*r == '\0') return -1;
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            if (*r != ',' && *r != '\0') return -1;
        } else {
            while (*r != ',' && *r != '\0') {
                if (*r == '"') return -1;
                *w++ = *r++;
            }
        }
        char end = *r;
        *w++ = '\0';
        if (end == '\0') return n;
        r++;
    }
}

static bool parse_i64(const char *s, int64_t *out) {
    const char *p = s;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+') p++;
    if (!isdigit((unsigned char)*p)) return false;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10u) return false;
        v = v * 10u + d;
        if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u)) return false;
    }
    if (*p != '\0') return false;
    *out = neg ? (int64_t)((uint64_t)0 - v) : (int64_t)v;
    return true;
}

static bool all_digits(const char *s) {
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

/* One pass over metrics.csv: validates every row; with w, writes one counter event per row.
 * Rows counted in *rows. Errors read "PATH:LINE: ...". */
static int metrics_pass(const char *path, trace_writer *w, size_t *rows, cb_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        return cb_error_set(err, e == ENOENT ? CB_ENOENT : CB_EIO, "%s: cannot open metrics: %s",
                            path, strerror(e));
    }
    char line[CB_TRACE_METRICS_LINE_MAX + 2];
    char name[6 * CB_TRACE_METRICS_LINE_MAX + 8];
    long lineno = 0;
    int rc = CB_OK;
    bool header = false;
    *rows = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        bool nl = n > 0 && line[n - 1] == '\n';
        if (nl) line[--n] = '\0';
        if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
        if ((!nl && !feof(f)) || n > CB_TRACE_METRICS_LINE_MAX) {
            rc = cb_error_set(err, CB_EINVAL, "%s:%ld: line longer than %d bytes", path, lineno,
                              CB_TRACE_METRICS_LINE_MAX);
            break;
        }
        if (!header) {
            if (strcmp(line, k_metrics_header) != 0) {
                rc = cb_error_set(err, CB_EINVAL, "%s:%ld: expected the header \"%s\"", path,
                                  lineno, k_metrics_header);
                break;
            }
            header = true;
            continue;
        }
        if (n == 0) continue;
        char *fl[CB_TRACE_METRICS_FIELDS];
        int nf = csv_split(line, fl, CB_TRACE_METRICS_FIELDS);
        if (nf != CB_TRACE_METRICS_FIELDS) {
            rc = nf == -1 ? cb_error_set(err, CB_EINVAL, "%s:%ld: malformed quoted field", path,
                                         lineno)
                          : cb_error_set(err, CB_EINVAL, "%s:%ld: expected %d fields (%s)", path,
                                         lineno, CB_TRACE_METRICS_FIELDS, k_metrics_header);
            break;
        }
        int64_t t_ns;
        if (!parse_i64(fl[0], &t_ns)) {
            rc = cb_error_set(err, CB_EINVAL, "%s:%ld: t_ns: expected an integer, got \"%s\"",
                              path, lineno, fl[0]);
            break;
        }
        if (fl[1][0] == '\0' || fl[4][0] == '\0') {
            rc = cb_error_set(err, CB_EINVAL, "%s:%ld: empty %s", path, lineno,
                              fl[1][0] == '\0' ? "source" : "metric");
            break;
        }
        if (!all_digits(fl[3])) {
            rc = cb_error_set(err, CB_EINVAL, "%s:%ld: pid: expected a process id, got \"%s\"",
                              path, lineno, fl[3]);
            break;
        }
        char *end = NULL;
        errno = 0;
        double v = fl[5][0] ? strtod(fl[5], &end) : NAN;
        if (!end || *end != '\0' || isspace((unsigned char)fl[5][0]) || !isfinite(v)) {
            rc = cb_error_set(err, CB_EINVAL, "%s:%ld: value: expected a finite number, got \"%s\"",
                              path, lineno, fl[5]);
            break;
        }
        ++*rows;
        if (!w) continue;
        /* name = non-empty parts of source/device/pid/metric joined with '/' */
        char *q = name;
        for (int i = 1; i <= 4; i++) {
            if (fl[i][0] == '\0') continue;
            if (q != name) *q++ = '/';
            q = put_json_body(q, fl[i]);
        }
        char num[40];
        int nn = snprintf(num, sizeof num, "%.15g", v);
        if (strtod(num, NULL) != v) nn = snprintf(num, sizeof num, "%.17g", v);
        char *p = tw_event(w, (size_t)(q - name) + (size_t)nn + 128);
        if (!p) continue;
        p = PUT_LIT(p, "{\"ph\":\"C\",\"name\":\"");
        p = put_mem(p, name, (size_t)(q - name));
        p = PUT_LIT(p, "\",\"pid\":");
        p = cb_fmt_i64(p, CB_TRACE_MONITOR_PID);
        p = PUT_LIT(p, ",\"tid\":0,\"ts\":");
        p = put_us(p, t_ns);
        p = PUT_LIT(p, ",\"args\":{\"value\":");
        p = put_mem(p, num, (size_t)nn);
        p = PUT_LIT(p, "}}");
        tw_commit(w, p);
    }
    if (rc == CB_OK && ferror(f))
        rc = cb_error_set(err, CB_EIO, "%s: read error: %s", path, strerror(errno));
    if (rc == CB_OK && !header)
        rc = cb_error_set(err, CB_EINVAL, "%s:1: empty file: expected the header \"%s\"", path,
                          k_metrics_header);
    fclose(f);
    return rc;
}

/* ---- writing ----------------------------------------------------------------------------- */

/* {"ph":"M","name":WHAT,"pid":P,"tid":T,"args":{"name":"..."}} or {..."sort_index":N} */
static void write_meta(trace_writer *w, const char *what, int pid, uint32_t tid, const char *str,
                       size_t str_n, const char *suffix, size_t suffix_n, int64_t sort_index) {
    char *p = tw_event(w, str_n + suffix_n + 160);
    if (!p) return;
    p = PUT_LIT(p, "{\"ph\":\"M\",\"name\":\"");
    p = put_mem(p, what, strlen(what));
    p = PUT_LIT(p, "\",\"pid\":");
    p = cb_fmt_i64(p, pid);
    p = PUT_LIT(p, ",\"tid\":");
    p = cb_fmt_u64(p, tid);
    if (str) {
        p = PUT_LIT(p, ",\"args\":{\"name\":\"");
        p = put_mem(p, str, str_n);
        p = put_mem(p, suffix, suffix_n);
        p = PUT_LIT(p, "\"}}");
    } else {
        p = PUT_LIT(p, ",\"args\":{\"sort_index\":");
        p = cb_fmt_i64(p, sort_index);
        p = PUT_LIT(p, "}}");
    }
    tw_commit(w, p);
}

static int write_process_meta(trace_ctx *c, trace_writer *w) {
    for (size_t p = 0; p < c->n_pipes; p++) {
        trace_pipe *tp = &c->pipes[p];
        if (!tp->names_process) continue;
        /* "pipeline A" or, for a shared pid, "pipeline A + B" */
        size_t len = 9 + tp->name.n;
        for (size_t q = p + 1; q < c->n_pipes; q++)
            if (c->pipes[q].pid == tp->pid) len += 3 + c->pipes[q].name.n;
        char *s = cb_malloc(len + 1);
        if (!s) return CB_ENOMEM;
        char *e = PUT_LIT(s, "pipeline ");
        e = put_mem(e, tp->name.s, tp->name.n);
        for (size_t q = p + 1; q < c->n_pipes; q++)
            if (c->pipes[q].pid == tp->pid) {
                e = PUT_LIT(e, " + ");
                e = put_mem(e, c->pipes[q].name.s, c->pipes[q].name.n);
            }
        write_meta(w, "process_name", tp->pid, 0, s, (size_t)(e - s), "", 0, 0);
        cb_free(s);
        write_meta(w, "process_sort_index", tp->pid, 0, NULL, 0, NULL, 0, (int64_t)p);
    }
    for (size_t p = 0; p < c->n_pipes; p++) {
        trace_pipe *tp = &c->pipes[p];
        const cb_pipeline_spec *ps = &c->in->spec->pipelines[p];
        for (size_t s = 0; s < ps->n_stages; s++)
            for (int k = 0; k < tp->n_slots[s]; k++) {
                uint32_t tid = tid_of(c, p, (unsigned)s, (unsigned)k);
                char suffix[16] = " #";
                char *e = cb_fmt_u64(suffix + 2, (uint64_t)k);
                write_meta(w, "thread_name", tp->pid, tid, tp->stages[s].s, tp->stages[s].n,
                           suffix, (size_t)(e - suffix), 0);
                write_meta(w, "thread_sort_index", tp->pid, tid, NULL, 0, NULL, 0, tid);
            }
    }
    return CB_OK;
}

static void write_slice(trace_ctx *c, trace_writer *w, size_t p, const trace_key *k) {
    const trace_pipe *tp = &c->pipes[p];
    const cb_stage_event *e = &c->kept[k->idx];
    const json_str *nm = &tp->slice_names[k->stage];
    int64_t warmup = c->in->spec->pipelines[p].loadgen.warmup_queries;
    char *o = tw_event(w, nm->n + 384);
    if (!o) return;
    o = PUT_LIT(o, "{\"ph\":\"X\",\"name\":\"");
    o = put_mem(o, nm->s, nm->n);
    o = PUT_LIT(o, "\",\"cat\":\"stage\",\"pid\":");
    o = cb_fmt_i64(o, tp->pid);
    o = PUT_LIT(o, ",\"tid\":");
    o = cb_fmt_u64(o, tid_of(c, p, k->stage, k->slot));
    o = PUT_LIT(o, ",\"ts\":");
    o = put_us(o, e->start_ns - c->in->t0_ns);
    o = PUT_LIT(o, ",\"dur\":");
    o = put_us(o, e->end_ns - e->start_ns);
    o = PUT_LIT(o, ",\"args\":{\"query\":");
    o = cb_fmt_u64(o, e->query_id);
    o = PUT_LIT(o, ",\"split\":");
    o = cb_fmt_i64(o, e->split);
    o = PUT_LIT(o, ",\"epoch\":");
    o = cb_fmt_i64(o, e->epoch);
    o = PUT_LIT(o, ",\"batch\":");
    o = cb_fmt_i64(o, e->batch);
    o = PUT_LIT(o, ",\"queue_us\":");
    o = put_us(o, e->start_ns - e->enqueue_ns);
    if (e->device_ns >= 0) { /* only runs that reported device time */
        o = PUT_LIT(o, ",\"device_us\":");
        o = put_us(o, e->device_ns);
    }
    if (cb_stage_event_is_warmup(e, warmup))
        o = PUT_LIT(o, ",\"warmup\":true}}");
    else
        o = PUT_LIT(o, ",\"warmup\":false}}");
    tw_commit(w, o);
}

static void write_flow(trace_ctx *c, trace_writer *w, size_t p, const trace_key *k, char ph) {
    const trace_pipe *tp = &c->pipes[p];
    const cb_stage_event *e = &c->kept[k->idx];
    uint64_t id = ((uint64_t)p << CB_TRACE_FLOW_QID_BITS) |
                  (e->query_id & (((uint64_t)1 << CB_TRACE_FLOW_QID_BITS) - 1));
    int64_t mid_ns = e->start_ns + (e->end_ns - e->start_ns) / 2;
    char *o = tw_event(w, 160);
    if (!o) return;
    o = PUT_LIT(o, "{\"ph\":\"");
    *o++ = ph;
    o = PUT_LIT(o, "\",\"cat\":\"query\",\"name\":\"query\",\"id\":");
    o = cb_fmt_u64(o, id);
    o = PUT_LIT(o, ",\"pid\":");
    o = cb_fmt_i64(o, tp->pid);
    o = PUT_LIT(o, ",\"tid\":");
    o = cb_fmt_u64(o, tid_of(c, p, k->stage, k->slot));
    o = PUT_LIT(o, ",\"ts\":");
    o = put_us(o, mid_ns - c->in->t0_ns);
    if (ph == 'f') o = PUT_LIT(o, ",\"bp\":\"e\"");
    *o++ = '}';
    tw_commit(w, o);
}

static void write_slices(trace_ctx *c, trace_writer *w) {
    for (size_t p = 0; p < c->n_pipes; p++) {
        const trace_pipe *tp = &c->pipes[p];
        const trace_key *keys = c->keys;
        size_t i = tp->begin;
        while (i < tp->end) {
            size_t j = i + 1;
            while (j < tp->end && keys[j].qid == keys[i].qid) j++;
            for (size_t k = i; k < j; k++) write_slice(c, w, p, &keys[k]);
            if (j - i >= 2)
                for (size_t k = i; k < j; k++)
                    write_flow(c, w, p, &keys[k], k == i ? 's' : k + 1 == j ? 'f' : 't');
            i = j;
        }
    }
}

static void write_tail(trace_ctx *c, trace_writer *w, const json_str *bench) {
    char *o = tw_reserve(w, bench->n + 512);
    if (!o) return;
    o = PUT_LIT(o, "\n],\n\"displayTimeUnit\":\"ns\",\n\"metadata\":{\"benchmark\":\"");
    o = put_mem(o, bench->s, bench->n);
    o = PUT_LIT(o, "\",\"sampled\":");
    o = c->stride > 1 ? PUT_LIT(o, "true") : PUT_LIT(o, "false");
    o = PUT_LIT(o, ",\"slices_total\":");
    o = cb_fmt_u64(o, c->total);
    o = PUT_LIT(o, ",\"slices_written\":");
    o = cb_fmt_u64(o, c->written);
    o = PUT_LIT(o, ",\"query_sampling_stride\":");
    o = cb_fmt_u64(o, c->stride);
    o = PUT_LIT(o, ",\"max_slices\":");
    o = cb_fmt_u64(o, c->cap);
    o = PUT_LIT(o, ",\"time_unit\":\"us\",\"t0_ns\":");
    o = cb_fmt_i64(o, c->in->t0_ns);
    o = PUT_LIT(o, "}}\n");
    tw_commit(w, o);
}

static void ctx_fini(trace_ctx *c) {
    if (!c->pipes) return;
    for (size_t p = 0; p < c->n_pipes; p++) {
        trace_pipe *tp = &c->pipes[p];
        size_t ns = c->in->spec->pipelines[p].n_stages;
        for (size_t s = 0; s < ns; s++) {
            if (tp->stages) cb_free(tp->stages[s].s);
            if (tp->slice_names) cb_free(tp->slice_names[s].s);
        }
        cb_free(tp->stages);
        cb_free(tp->slice_names);
        cb_free(tp->n_slots);
        cb_free(tp->name.s);
    }
    cb_free(c->pipes);
    cb_free(c->kept);
    cb_free(c->keys);
}

int cb_trace_write(const cb_trace_input *in, FILE *out, cb_error *err) {
    if (!in || !in->spec || !out || (in->spec->n_pipelines && !in->pipelines))
        return cb_error_set(err, CB_EINVAL, "cb_trace_write: NULL argument");
    if (in->spec->n_pipelines > CB_TRACE_MAX_PIPELINES)
        return cb_error_set(err, CB_EINVAL, "trace: %zu pipelines (at most %d)",
                            in->spec->n_pipelines, CB_TRACE_MAX_PIPELINES);
    trace_ctx c = {.in = in, .n_pipes = in->spec->n_pipelines};
    c.cap = in->max_slices ? in->max_slices : CB_TRACE_DEFAULT_MAX_SLICES;
    trace_writer w = {.out = out, .first = true};
    json_str bench = {0};
    int rc = CB_OK;
    c.pipes = cb_calloc(c.n_pipes ? c.n_pipes : 1, sizeof *c.pipes);
    if (!c.pipes || json_str_make(&bench, "", in->spec->name)) {
        rc = cb_error_set(err, CB_ENOMEM, "trace: out of memory");
        goto done;
    }
    for (size_t p = 0; p < c.n_pipes; p++) {
        c.pipes[p].pid = in->pids ? in->pids[p] : (int)p + 1;
        c.pipes[p].names_process = true;
        for (size_t q = 0; q < p; q++)
            if (c.pipes[q].pid == c.pipes[p].pid) {
                c.pipes[q].shared_pid = c.pipes[p].shared_pid = true;
                c.pipes[p].names_process = false;
            }
    }
    for (size_t p = 0; p < c.n_pipes && rc == CB_OK; p++) rc = prepare_pipe(&c, p, err);
    if (rc == CB_OK) {
        choose_stride(&c);
        rc = collect(&c, err);
    }
    size_t rows = 0;
    if (rc == CB_OK && in->metrics_csv) rc = metrics_pass(in->metrics_csv, NULL, &rows, err);
    if (rc != CB_OK) goto done;

    w.cap = CB_TRACE_BUF_BYTES;
    w.buf = cb_malloc(w.cap);
    if (!w.buf) {
        rc = cb_error_set(err, CB_ENOMEM, "trace: out of memory");
        goto done;
    }
    char *o = tw_reserve(&w, 32);
    tw_commit(&w, PUT_LIT(o, "{\"traceEvents\":[\n"));
    if (write_process_meta(&c, &w) != CB_OK) w.failed = true;
    if (in->metrics_csv) {
        write_meta(&w, "process_name", CB_TRACE_MONITOR_PID, 0, "monitors", 8, "", 0, 0);
        write_meta(&w, "process_sort_index", CB_TRACE_MONITOR_PID, 0, NULL, 0, NULL, 0,
                   (int64_t)c.n_pipes);
    }
    write_slices(&c, &w);
    if (in->metrics_csv) rc = metrics_pass(in->metrics_csv, &w, &rows, err);
    if (rc != CB_OK) goto done;
    write_tail(&c, &w, &bench);
    tw_flush(&w);
    if (w.failed)
        rc = cb_error_set(err, CB_ENOMEM, "trace: out of memory while writing");
    else if (fflush(out) != 0 || ferror(out))
        rc = cb_error_set(err, CB_EIO, "trace: write error: %s", strerror(errno));
done:
    cb_free(w.buf);
    cb_free(bench.s);
    ctx_fini(&c);
    return rc;
}
