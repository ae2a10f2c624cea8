/* analysis/stage_metrics.c - aggregates of stage metric reports (see stage_metrics.h).
 *
 * Design: one counting pass over the pipeline's metric records groups the measured ones by
 * (stage, metric) (a counting sort of record indices, O(records) memory); then each metric's
 * reports are copied into one scratch array, sorted by (query id, time), and summarised in one
 * walk, so "first", "last" and the tenths follow query order whatever order the worker threads
 * logged them in. The metric definitions come from each stage's ops (only when its struct_size
 * covers them: cb_registry_ops_metrics); records naming a stage or metric outside the spec are
 * ignored (a recorder bug must not crash the summary).
 * Thread-safety: pure functions over borrowed inputs. Ownership: out's arrays are cb_malloc'd and
 * freed by cb_stage_metrics_fini; definitions are borrowed from the ops tables.
 */
#include "analysis/stage_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

typedef struct report {
    uint64_t query_id;
    int64_t t_ns;
    double value;
    int split;
} report;

static int cmp_report(const void *a, const void *b) {
    const report *x = a, *y = b;
    if (x->query_id != y->query_id) return x->query_id < y->query_id ? -1 : 1;
    return (x->t_ns > y->t_ns) - (x->t_ns < y->t_ns);
}

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

/* Summarises n sorted reports into st (def and per_second are the caller's). */
static void summarise(const report *r, size_t n, int n_splits, cb_metric_stats *st) {
    size_t finite = 0;
    for (size_t i = 0; i < n; i++) finite += isfinite(r[i].value) != 0;
    st->non_finite = n - finite;
    st->n = finite;
    st->sum = 0.0;
    st->mean = st->first = st->last = st->min = st->max = NAN;
    st->first_tenth_mean = st->last_tenth_mean = NAN;
    st->n_splits = n_splits;
    double split_sum[CB_MAX_SPLITS] = {0};
    for (int k = 0; k < n_splits; k++) {
        st->by_split[k].n = 0;
        st->by_split[k].mean = st->by_split[k].last = NAN;
    }
    if (finite == 0) return;
    size_t tenth = (finite + 9) / 10; /* ceil(n / 10) >= 1 */
    double head = 0.0, tail = 0.0;
    size_t k = 0; /* index among finite reports */
    for (size_t i = 0; i < n; i++) {
        double v = r[i].value;
        if (!isfinite(v)) continue;
        if (k == 0) st->first = st->min = st->max = v;
        if (v < st->min) st->min = v;
        if (v > st->max) st->max = v;
        st->last = v;
        st->sum += v;
        if (k < tenth) head += v;
        if (k >= finite - tenth) tail += v;
        int sp = r[i].split;
        if (sp >= 0 && sp < n_splits) {
            st->by_split[sp].n++;
            split_sum[sp] += v;
            st->by_split[sp].last = v;
        }
        k++;
    }
    st->mean = st->sum / (double)finite;
    st->first_tenth_mean = head / (double)tenth;
    st->last_tenth_mean = tail / (double)tenth;
    for (int s = 0; s < n_splits; s++)
        if (st->by_split[s].n) st->by_split[s].mean = split_sum[s] / (double)st->by_split[s].n;
}

int cb_stage_metrics_compute(const cb_summary_input *in, size_t pipeline, int64_t window_ns,
                             cb_stage_metrics *out) {
    if (!out) return CB_EINVAL;
    memset(out, 0, sizeof *out);
    out->images_stage = -1;
    out->images_per_s = NAN;
    if (!in || !in->spec || !in->pipelines || pipeline >= in->spec->n_pipelines) return CB_EINVAL;
    const cb_pipeline_spec *ps = &in->spec->pipelines[pipeline];
    const cb_pipeline_record *rec = &in->pipelines[pipeline];
    const int64_t warmup = ps->loadgen.warmup_queries;
    const size_t ns = ps->n_stages;
    out->n_stages = ns;
    out->first = cb_calloc(ns + 1, sizeof *out->first);
    if (!out->first) return CB_ENOMEM;
    for (size_t s = 0; s < ns; s++) {
        size_t nm;
        cb_registry_ops_metrics(ps->stages[s].ops, &nm);
        out->first[s + 1] = out->first[s] + nm;
    }
    size_t total = out->first[ns];
    if (total == 0) return CB_OK;
    out->stats = cb_calloc(total, sizeof *out->stats);
    if (!out->stats) return CB_ENOMEM;
    for (size_t s = 0; s < ns; s++) {
        size_t nm;
        const cb_metric_def *defs = cb_registry_ops_metrics(ps->stages[s].ops, &nm);
        for (size_t i = 0; i < nm; i++) {
            cb_metric_stats *st = &out->stats[out->first[s] + i];
            st->def = &defs[i];
            st->per_second = NAN;
            st->mean = st->first = st->last = st->min = st->max = NAN;
            st->first_tenth_mean = st->last_tenth_mean = NAN;
        }
    }

    /* Group the measured reports by flat metric index (counting sort of record indices). */
    size_t *start = cb_calloc(total + 1, sizeof *start);
    if (!start) return CB_ENOMEM;
    size_t measured = 0;
    for (size_t i = 0; i < rec->n_metrics; i++) {
        size_t f = flat_index(out, &rec->metrics[i], warmup, total);
        if (f == total) continue;
        start[f + 1]++;
        measured++;
    }
    size_t max_n = 0;
    for (size_t f = 0; f < total; f++) {
        if (start[f + 1] > max_n) max_n = start[f + 1];
        start[f + 1] += start[f];
    }
    size_t *idx = measured ? cb_malloc(measured * sizeof *idx) : NULL;
    size_t *fill = cb_malloc(total * sizeof *fill);
    report *scratch = max_n ? cb_malloc(max_n * sizeof *scratch) : NULL;
    if ((measured && !idx) || !fill || (max_n && !scratch)) {
        cb_free(idx);
        cb_free(fill);
        cb_free(scratch);
        cb_free(start);
        return CB_ENOMEM;
    }
    memcpy(fill, start, total * sizeof *fill);
    for (size_t i = 0; i < rec->n_metrics; i++) {
        size_t f = flat_index(out, &rec->metrics[i], warmup, total);
        if (f != total) idx[fill[f]++] = i;
    }
    int n_splits = rec->splits && rec->splits->n > 0
                       ? (rec->splits->n > CB_MAX_SPLITS ? CB_MAX_SPLITS : rec->splits->n)
                       : 0;
    for (size_t f = 0; f < total; f++) {
        cb_metric_stats *st = &out->stats[f];
        size_t n = start[f + 1] - start[f];
        for (size_t k = 0; k < n; k++) {
            const cb_metric_event *e = &rec->metrics[idx[start[f] + k]];
            scratch[k] = (report){e->query_id, e->t_ns, e->value, e->split};
        }
        if (n > 1) qsort(scratch, n, sizeof *scratch, cmp_report);
        summarise(scratch, n, st->def->kind == CB_METRIC_GAUGE ? n_splits : 0, st);
        if (st->def->kind == CB_METRIC_COUNT && window_ns > 0)
            st->per_second = st->sum / ((double)window_ns / 1e9);
    }
    cb_free(scratch);
    cb_free(fill);
    cb_free(idx);
    cb_free(start);

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
