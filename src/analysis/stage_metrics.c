/* analysis/stage_metrics.c - aggregates of stage metric reports (see stage_metrics.h).
 *
 * Design: streaming passes over the pipeline's metric records (record/records.h), one group of
 * at most CB_STAGE_METRICS_PER_PASS declared metrics (flat index over (stage, metric)) per
 * pass; one group in practice.
 * - Pass 1 keeps per metric: n, non_finite, a compensated (Neumaier) sum, min, max, the first
 *   and last report by (query id, time), per split n, sum and last by the same order, the
 *   smallest and largest query id, and, for a GAUGE, up to CB_STAGE_METRICS_EXACT_MAX reports
 *   (query id, time, value: 24 bytes) in an array grown by doubling. When a gauge passes that
 *   many, its array is freed and it is "binned".
 * - Tenths of a gauge that kept every report: the array sorted by (query id, time) (qsort),
 *   then the first and last ceil(n / 10) values summed, so they follow query order whatever
 *   order the worker threads logged them in: exact.
 * - A DIST adds each finite value, rounded to an integer, to its cb_hist; percentiles at the end.
 * - Pass 2, only for binned gauges: CB_STAGE_METRICS_BINS bins of width w = span / BINS + 1
 *   query ids over [min id, max id] (span = max - min) count and sum the reports; the tenths
 *   take whole bins from each end and the bin straddling the boundary pro rata (stage_metrics.h).
 * The metric definitions come from each stage's ops (only when its struct_size covers them:
 * cb_registry_ops_metrics); records naming a stage or metric outside the spec are ignored (a
 * recorder bug must not crash the summary).
 * Memory (per call, whatever the number of reports): one 1 MiB read buffer for a file source;
 * per metric of a group ~200 bytes, plus for a gauge up to 24 * 65536 = 1.5 MiB of kept reports
 * or, binned, 8192 * 16 = 128 KiB of bins: at most CB_STAGE_METRICS_PER_PASS * 1.5 MiB = 24 MiB;
 * a DIST keeps a cb_hist (analysis/hist.h) of at most CB_HIST_MAX_BYTES (284 KiB) instead: at
 * most 16 * 284 KiB = 4.5 MiB per pass; plus O(declared metrics) for the results.
 * Thread-safety: pure functions over borrowed inputs. Ownership: out's arrays are cb_malloc'd and
 * freed by cb_stage_metrics_fini; definitions are borrowed from the ops tables.
 */
#include "analysis/stage_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/hist.h"
#include "core/alloc.h"

#define CB_STAGE_METRICS_PER_PASS 16
#define CB_STAGE_METRICS_FIRST_CAP 256

typedef struct report {
    uint64_t query_id;
    int64_t t_ns;
    double value;
} report;

static int cmp_report(const void *a, const void *b) {
    const report *x = a, *y = b;
    if (x->query_id != y->query_id) return x->query_id < y->query_id ? -1 : 1;
    return (x->t_ns > y->t_ns) - (x->t_ns < y->t_ns);
}

/* (q1, t1) < (q2, t2) in report order. */
static inline bool key_less(uint64_t q1, int64_t t1, uint64_t q2, int64_t t2) {
    return q1 < q2 || (q1 == q2 && t1 < t2);
}

/* Neumaier's compensated sum: the result barely depends on the order of the terms. */
typedef struct csum {
    double s, c;
} csum;

static inline void csum_add(csum *k, double v) {
    double t = k->s + v;
    if (fabs(k->s) >= fabs(v))
        k->c += (k->s - t) + v;
    else
        k->c += (v - t) + k->s;
    k->s = t;
}

static inline double csum_get(const csum *k) { return k->s + k->c; }

typedef struct split_acc {
    size_t n;
    csum sum;
    uint64_t last_q;
    int64_t last_t;
    double last;
} split_acc;

typedef struct metric_acc {
    bool gauge;
    bool dist;               /* CB_METRIC_DIST: percentiles from hist */
    cb_hist hist;
    size_t n, non_finite;
    csum sum;
    double min, max;
    uint64_t first_q, last_q, min_id, max_id;
    int64_t first_t, last_t;
    double first, last;
    split_acc split[CB_MAX_SPLITS];
    report *kept;            /* gauge, exact path: every finite report, up to EXACT_MAX */
    size_t n_kept, cap;
    bool binned;             /* gauge with more reports than CB_STAGE_METRICS_EXACT_MAX */
    uint64_t bin_w;          /* pass 2: query ids per bin */
    size_t n_bins;
    uint64_t *bin_n;
    double *bin_sum;
} metric_acc;

/* Flat index of a measured record's (stage, metric), or total when it is warm-up or names no
 * declared metric. */
static size_t flat_index(const cb_stage_metrics *m, const cb_metric_event *e, int64_t warmup,
                         size_t total) {
    if (e->stage >= m->n_stages || e->metric < 0 || cb_metric_event_is_warmup(e, warmup))
        return total;
    size_t k = (size_t)e->metric;
    return k < m->first[e->stage + 1] - m->first[e->stage] ? m->first[e->stage] + k : total;
}

void cb_stage_metrics_fini(cb_stage_metrics *m) {
    if (!m) return;
    cb_free(m->first);
    cb_free(m->stats);
    m->first = NULL;
    m->stats = NULL;
    m->n_stages = 0;
}

static void acc_free(metric_acc *a) {
    if (a->dist) cb_hist_fini(&a->hist);
    cb_free(a->kept);
    cb_free(a->bin_n);
    cb_free(a->bin_sum);
    a->kept = NULL;
    a->bin_n = NULL;
    a->bin_sum = NULL;
}

/* Pass 1 for one finite or non-finite report. */
static int acc_add(metric_acc *a, const cb_metric_event *e, int n_splits) {
    double v = e->value;
    if (!isfinite(v)) {
        a->non_finite++;
        return CB_OK;
    }
    uint64_t q = e->query_id;
    int64_t t = e->t_ns;
    if (a->n == 0) {
        a->min = a->max = a->first = a->last = v;
        a->first_q = a->last_q = a->min_id = a->max_id = q;
        a->first_t = a->last_t = t;
    } else {
        if (v < a->min) a->min = v;
        if (v > a->max) a->max = v;
        if (key_less(q, t, a->first_q, a->first_t)) {
            a->first_q = q;
            a->first_t = t;
            a->first = v;
        }
        if (!key_less(q, t, a->last_q, a->last_t)) {
            a->last_q = q;
            a->last_t = t;
            a->last = v;
        }
        if (q < a->min_id) a->min_id = q;
        if (q > a->max_id) a->max_id = q;
    }
    a->n++;
    csum_add(&a->sum, v);
    int sp = e->split;
    if (sp >= 0 && sp < n_splits) {
        split_acc *s = &a->split[sp];
        if (s->n == 0 || !key_less(q, t, s->last_q, s->last_t)) {
            s->last_q = q;
            s->last_t = t;
            s->last = v;
        }
        s->n++;
        csum_add(&s->sum, v);
    }
    if (a->dist) {
        /* Percentiles of the values rounded to integers (ns, bytes, tokens), clamped to int64. */
        double r = nearbyint(v);
        int64_t iv = r >= 9.2e18 ? INT64_MAX : r <= -9.2e18 ? INT64_MIN : (int64_t)r;
        return cb_hist_add(&a->hist, iv);
    }
    if (!a->gauge || a->binned) return CB_OK;
    if (a->n_kept == CB_STAGE_METRICS_EXACT_MAX) { /* too many to keep: bins in pass 2 */
        cb_free(a->kept);
        a->kept = NULL;
        a->n_kept = a->cap = 0;
        a->binned = true;
        return CB_OK;
    }
    if (a->n_kept == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : CB_STAGE_METRICS_FIRST_CAP;
        if (cap > CB_STAGE_METRICS_EXACT_MAX) cap = CB_STAGE_METRICS_EXACT_MAX;
        report *g = cb_realloc(a->kept, cap * sizeof *g);
        if (!g) return CB_ENOMEM;
        a->kept = g;
        a->cap = cap;
    }
    a->kept[a->n_kept++] = (report){q, t, v};
    return CB_OK;
}

/* Means of the first and last `tenth` values from the bins (pro rata in the straddling bin). */
static void binned_tenths(const metric_acc *a, size_t tenth, double *head, double *tail) {
    double h = 0.0, t = 0.0;
    size_t cum = 0;
    for (size_t b = 0; b < a->n_bins && cum < tenth; b++) {
        if (!a->bin_n[b]) continue;
        if (cum + a->bin_n[b] <= tenth) {
            h += a->bin_sum[b];
            cum += a->bin_n[b];
        } else {
            h += a->bin_sum[b] * (double)(tenth - cum) / (double)a->bin_n[b];
            cum = tenth;
        }
    }
    cum = 0;
    for (size_t b = a->n_bins; b-- > 0 && cum < tenth;) {
        if (!a->bin_n[b]) continue;
        if (cum + a->bin_n[b] <= tenth) {
            t += a->bin_sum[b];
            cum += a->bin_n[b];
        } else {
            t += a->bin_sum[b] * (double)(tenth - cum) / (double)a->bin_n[b];
            cum = tenth;
        }
    }
    *head = h / (double)tenth;
    *tail = t / (double)tenth;
}

/* Final figures of one metric (def and per_second are the caller's). */
static void acc_finish(metric_acc *a, int n_splits, cb_metric_stats *st) {
    st->non_finite = a->non_finite;
    st->n = a->n;
    st->sum = csum_get(&a->sum);
    st->mean = st->first = st->last = st->min = st->max = NAN;
    st->first_tenth_mean = st->last_tenth_mean = NAN;
    st->p50 = st->p90 = st->p95 = st->p99 = NAN;
    st->pcts_exact = true;
    st->tenths_exact = !a->binned;
    st->n_splits = a->gauge ? n_splits : 0;
    for (int k = 0; k < st->n_splits; k++) {
        st->by_split[k].n = a->split[k].n;
        st->by_split[k].mean = a->split[k].n ? csum_get(&a->split[k].sum) / (double)a->split[k].n
                                             : NAN;
        st->by_split[k].last = a->split[k].n ? a->split[k].last : NAN;
    }
    if (a->n == 0) return;
    st->mean = st->sum / (double)a->n;
    st->first = a->first;
    st->last = a->last;
    st->min = a->min;
    st->max = a->max;
    size_t tenth = (a->n + 9) / 10; /* ceil(n / 10) >= 1 */
    if (a->binned) {
        binned_tenths(a, tenth, &st->first_tenth_mean, &st->last_tenth_mean);
        return;
    }
    if (a->dist) {
        cb_pcts pc;
        if (cb_hist_pcts(&a->hist, &pc) == CB_OK) {
            st->p50 = (double)pc.p50;
            st->p90 = (double)pc.p90;
            st->p95 = (double)pc.p95;
            st->p99 = (double)pc.p99;
            st->pcts_exact = pc.exact;
        }
        st->tenths_exact = true; /* not reported for a DIST */
        return;
    }
    if (!a->gauge) {
        /* A COUNT keeps no reports: its tenths are not reported (json and table skip them). */
        st->tenths_exact = true;
        return;
    }
    if (a->n_kept > 1) qsort(a->kept, a->n_kept, sizeof *a->kept, cmp_report);
    csum head = {0}, tail = {0};
    for (size_t i = 0; i < tenth; i++) csum_add(&head, a->kept[i].value);
    for (size_t i = a->n_kept - tenth; i < a->n_kept; i++) csum_add(&tail, a->kept[i].value);
    st->first_tenth_mean = csum_get(&head) / (double)tenth;
    st->last_tenth_mean = csum_get(&tail) / (double)tenth;
}

/* One pass over the metric records for the flat metrics [g0, g0 + ng). pass2: bins only. */
static int metric_pass(const cb_pipeline_record *rec, const cb_stage_metrics *m, size_t g0,
                       size_t ng, int64_t warmup, int n_splits, metric_acc *acc, bool pass2,
                       cb_error *err) {
    const size_t total = m->first[m->n_stages];
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_METRICS, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        rc = CB_OK;
        const cb_metric_event *e = b, *end = e + nb;
        for (; e < end && rc == CB_OK; e++) {
            size_t f = flat_index(m, e, warmup, total);
            if (f == total || f < g0 || f - g0 >= ng) continue;
            metric_acc *a = &acc[f - g0];
            if (!pass2) {
                if (acc_add(a, e, n_splits) != CB_OK)
                    rc = cb_error_set(err, CB_ENOMEM, "out of memory");
                continue;
            }
            if (!a->binned || !isfinite(e->value)) continue;
            /* A file that changed between the passes must not index outside the bins. */
            if (e->query_id < a->min_id || e->query_id > a->max_id) continue;
            size_t bin = (size_t)((e->query_id - a->min_id) / a->bin_w);
            a->bin_n[bin]++;
            a->bin_sum[bin] += e->value;
        }
    }
    cb_rec_iter_close(&it);
    return rc;
}

static int metric_group(const cb_pipeline_record *rec, cb_stage_metrics *m, size_t g0,
                        size_t ng, int64_t warmup, int n_splits) {
    metric_acc *acc = cb_calloc(ng, sizeof *acc);
    if (!acc) return cb_error_set(&m->err, CB_ENOMEM, "out of memory");
    for (size_t i = 0; i < ng; i++) {
        acc[i].gauge = m->stats[g0 + i].def->kind == CB_METRIC_GAUGE;
        acc[i].dist = m->stats[g0 + i].def->kind == CB_METRIC_DIST;
        if (acc[i].dist) cb_hist_init(&acc[i].hist);
    }
    int rc = metric_pass(rec, m, g0, ng, warmup, n_splits, acc, false, &m->err);
    bool binned = false;
    for (size_t i = 0; rc == CB_OK && i < ng; i++) {
        metric_acc *a = &acc[i];
        if (!a->binned) continue;
        binned = true;
        uint64_t span = a->max_id - a->min_id;
        a->bin_w = span / CB_STAGE_METRICS_BINS + 1;
        a->n_bins = (size_t)(span / a->bin_w) + 1;
        a->bin_n = cb_calloc(a->n_bins, sizeof *a->bin_n);
        a->bin_sum = cb_calloc(a->n_bins, sizeof *a->bin_sum);
        if (!a->bin_n || !a->bin_sum) rc = cb_error_set(&m->err, CB_ENOMEM, "out of memory");
    }
    if (rc == CB_OK && binned)
        rc = metric_pass(rec, m, g0, ng, warmup, n_splits, acc, true, &m->err);
    for (size_t i = 0; i < ng; i++) {
        if (rc == CB_OK) acc_finish(&acc[i], n_splits, &m->stats[g0 + i]);
        acc_free(&acc[i]);
    }
    cb_free(acc);
    return rc;
}

int cb_stage_metrics_compute(const cb_summary_input *in, size_t pipeline, int64_t window_ns,
                             cb_stage_metrics *out) {
    if (!out) return CB_EINVAL;
    memset(out, 0, sizeof *out);
    out->images_stage = -1;
    out->images_per_s = NAN;
    if (!in || !in->spec || !in->pipelines || pipeline >= in->spec->n_pipelines)
        return cb_error_set(&out->err, CB_EINVAL, "no such pipeline");
    const cb_pipeline_spec *ps = &in->spec->pipelines[pipeline];
    const cb_pipeline_record *rec = &in->pipelines[pipeline];
    const int64_t warmup = ps->loadgen.warmup_queries;
    const size_t ns = ps->n_stages;
    out->n_stages = ns;
    out->first = cb_calloc(ns + 1, sizeof *out->first);
    if (!out->first) return cb_error_set(&out->err, CB_ENOMEM, "out of memory");
    for (size_t s = 0; s < ns; s++) {
        size_t nm;
        cb_registry_ops_metrics(ps->stages[s].ops, &nm);
        out->first[s + 1] = out->first[s] + nm;
    }
    size_t total = out->first[ns];
    if (total == 0) return CB_OK;
    out->stats = cb_calloc(total, sizeof *out->stats);
    if (!out->stats) return cb_error_set(&out->err, CB_ENOMEM, "out of memory");
    for (size_t s = 0; s < ns; s++) {
        size_t nm;
        const cb_metric_def *defs = cb_registry_ops_metrics(ps->stages[s].ops, &nm);
        for (size_t i = 0; i < nm; i++) {
            cb_metric_stats *st = &out->stats[out->first[s] + i];
            st->def = &defs[i];
            st->per_second = NAN;
            st->mean = st->first = st->last = st->min = st->max = NAN;
            st->first_tenth_mean = st->last_tenth_mean = NAN;
            st->p50 = st->p90 = st->p95 = st->p99 = NAN;
            st->pcts_exact = true;
            st->tenths_exact = true;
        }
    }
    int n_splits = rec->splits && rec->splits->n > 0
                       ? (rec->splits->n > CB_MAX_SPLITS ? CB_MAX_SPLITS : rec->splits->n)
                       : 0;
    for (size_t g0 = 0; g0 < total; g0 += CB_STAGE_METRICS_PER_PASS) {
        size_t ng = total - g0 < CB_STAGE_METRICS_PER_PASS ? total - g0 : CB_STAGE_METRICS_PER_PASS;
        int rc = metric_group(rec, out, g0, ng, warmup, n_splits);
        if (rc != CB_OK) return rc;
    }
    for (size_t f = 0; f < total; f++) {
        cb_metric_stats *st = &out->stats[f];
        if (st->def->kind == CB_METRIC_COUNT && window_ns > 0)
            st->per_second = st->sum / ((double)window_ns / 1e9);
    }

    for (size_t s = 0; s < ns && out->images_stage < 0; s++) {
        for (size_t f = out->first[s]; f < out->first[s + 1]; f++) {
            const cb_metric_def *d = out->stats[f].def;
            if (d->kind == CB_METRIC_COUNT && !strcmp(d->name, "images")) {
                out->images_stage = (int)s;
                out->images_per_s = out->stats[f].per_second;
                break;
            }
        }
    }
    return CB_OK;
}

void cb_stage_metrics_json(cb_json *j, const cb_stage_metrics *m, size_t s,
                           const cb_splits *splits) {
    cb_json_key(j, "metrics");
    cb_json_object_begin(j);
    size_t begin = m && s < m->n_stages ? m->first[s] : 0;
    size_t end = m && s < m->n_stages ? m->first[s + 1] : 0;
    for (size_t f = begin; f < end; f++) {
        const cb_metric_stats *st = &m->stats[f];
        if (st->n + st->non_finite == 0) continue;
        cb_json_key(j, st->def->name);
        cb_json_object_begin(j);
        cb_json_key(j, "kind");
        cb_json_string(j, cb_metric_kind_name(st->def->kind));
        cb_json_key(j, "unit");
        cb_json_string(j, st->def->unit ? st->def->unit : "");
        cb_json_key(j, "n");
        cb_json_uint(j, st->n);
        cb_json_key(j, "non_finite");
        cb_json_uint(j, st->non_finite);
        if (st->def->kind == CB_METRIC_COUNT) {
            cb_json_key(j, "sum");
            cb_json_double(j, st->sum);
            cb_json_key(j, "per_second");
            cb_json_double(j, st->per_second);
            cb_json_key(j, "mean");
            cb_json_double(j, st->mean);
        } else if (st->def->kind == CB_METRIC_DIST) {
            const struct { const char *k; double v; } g[] = {
                {"mean", st->mean}, {"min", st->min}, {"p50", st->p50}, {"p90", st->p90},
                {"p95", st->p95},   {"p99", st->p99}, {"max", st->max}};
            for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
                cb_json_key(j, g[i].k);
                cb_json_double(j, g[i].v);
            }
            cb_json_key(j, "percentiles_exact");
            cb_json_bool(j, st->pcts_exact);
        } else {
            const struct { const char *k; double v; } g[] = {
                {"first", st->first}, {"last", st->last}, {"mean", st->mean}, {"min", st->min},
                {"max", st->max}, {"first_tenth_mean", st->first_tenth_mean},
                {"last_tenth_mean", st->last_tenth_mean}};
            for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
                cb_json_key(j, g[i].k);
                cb_json_double(j, g[i].v);
            }
            if (st->n_splits > 0 && splits) {
                cb_json_key(j, "by_split");
                cb_json_object_begin(j);
                for (int k = 0; k < st->n_splits && k < splits->n; k++) {
                    cb_json_key(j, splits->split[k].name);
                    cb_json_object_begin(j);
                    cb_json_key(j, "n");
                    cb_json_uint(j, st->by_split[k].n);
                    cb_json_key(j, "mean");
                    cb_json_double(j, st->by_split[k].mean);
                    cb_json_key(j, "last");
                    cb_json_double(j, st->by_split[k].last);
                    cb_json_object_end(j);
                }
                cb_json_object_end(j);
            }
        }
        cb_json_object_end(j);
    }
    cb_json_object_end(j);
}

/* A number for the table: integers as such (counts), else 4 significant digits; "-" if NAN. */
static const char *fmt_num(char *buf, size_t size, double v) {
    if (!isfinite(v))
        snprintf(buf, size, "-");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.4g", v);
    return buf;
}

void cb_stage_metrics_print(FILE *out, const cb_stage_metrics *m, size_t s, const char *name) {
    if (!m || s >= m->n_stages) return;
    char line[1024], a[32], b[32];
    size_t off = 0;
    for (size_t f = m->first[s]; f < m->first[s + 1] && off < sizeof line; f++) {
        const cb_metric_stats *st = &m->stats[f];
        if (st->n + st->non_finite == 0) continue;
        int w;
        if (st->def->kind == CB_METRIC_COUNT) {
            if (isfinite(st->per_second))
                w = snprintf(line + off, sizeof line - off, "  %s %s (%.1f/s)", st->def->name,
                             fmt_num(a, sizeof a, st->sum), st->per_second);
            else
                w = snprintf(line + off, sizeof line - off, "  %s %s", st->def->name,
                             fmt_num(a, sizeof a, st->sum));
        } else if (st->def->kind == CB_METRIC_DIST) {
            char c[32];
            w = snprintf(line + off, sizeof line - off, "  %s p50 %s p99 %s max %s", st->def->name,
                         fmt_num(a, sizeof a, st->p50), fmt_num(b, sizeof b, st->p99),
                         fmt_num(c, sizeof c, st->max));
        } else {
            w = snprintf(line + off, sizeof line - off, "  %s %s -> %s", st->def->name,
                         fmt_num(a, sizeof a, st->first_tenth_mean),
                         fmt_num(b, sizeof b, st->last_tenth_mean));
        }
        if (w > 0) off += (size_t)w;
    }
    if (off == 0) return;
    if (off >= sizeof line) off = sizeof line - 1;
    fprintf(out, "  %s:%.*s\n", name ? name : "?", (int)off - 1, line + 1); /* one space */
}
