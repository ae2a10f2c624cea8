/* analysis/summary.c - per-pipeline statistics, summary.json and the end-of-run table.
 *
 * Design: cb_pipeline_stats_compute streams a pipeline's records (record/records.h: in-memory
 * arrays or raw .bin files, in batches) and keeps only accumulators:
 * - one pass over the queries counts statuses, finds the throughput window and the open-loop
 *   spans, and feeds two cb_hist (latency end - scheduled; dispatch delay submit - scheduled);
 * - one pass over the stage events per group of at most CB_SUMMARY_STAGES_PER_PASS stages feeds
 *   four cb_hist per stage (service, queue, transition, device) and the device sum and span.
 *   Pipelines with up to 32 stages (all in practice) need one pass.
 * cb_hist (analysis/hist.h) is exact up to CB_HIST_EXACT_MAX values per statistic and within a
 * relative CB_HIST_REL_ERROR beyond; cb_pcts.exact says which, and summary.json lists every
 * approximate figure in "precision".
 * Definitions are those in summary.h, made precise here:
 * - a query or stage event is warm-up when its query id < loadgen.warmup_queries (a query's own
 *   warmup flag counts too); warm-up records enter no statistic and no status count:
 *   queries_total = warmup + ok + dropped + errors + cancelled; measured == ok.
 * - window: first measured scheduled_ns to last measured end_ns, relative to t0.
 * - achieved_qps = (k - 1) / (last submit - first submit) over the k measured queries that were
 *   submitted (submit_ns != 0), whatever their status: the rate of arrivals, so a constant load
 *   of rate r achieves exactly r. target_qps is rate_qps for poisson/constant/gamma and, for
 *   replay, the same (k - 1) / span over the scheduled times.
 * - statistics of an empty set, and rates without a span (throughput_qps without a measured
 *   query or of a zero-length window, achieved_qps and replay target_qps of fewer than 2
 *   queries), are NaN: null in JSON and "-" in the table.
 * Stage events whose stage index is outside the spec are ignored (a recorder bug must not crash
 * the summary).
 * Memory (per call, whatever the number of records): one 1 MiB read buffer for a file source,
 * 2 cb_hist for the queries, then 4 cb_hist per stage of one group (at most
 * CB_SUMMARY_STAGES_PER_PASS * 4 * CB_HIST_MAX_BYTES = 36 MiB in the worst case of values spread
 * over every power of two; about 64 KiB per hist for latencies from 1 us to 10 ms), plus
 * O(stages) for the results. cb_summary_write_json adds the stage metrics' (stage_metrics.c)
 * and a list of the approximate figures' names (O(stages + metrics)).
 * Thread-safety: pure functions over borrowed inputs. Ownership: in and everything it points to
 * are borrowed; out->stages is cb_malloc'd and freed by cb_pipeline_stats_fini.
 */
#include "analysis/summary.h"

#include <math.h>
#include <string.h>

#include "analysis/hist.h"
#include "analysis/json.h"
#include "analysis/stage_metrics.h"
#include "core/alloc.h"

#ifndef CB_VERSION
#define CB_VERSION "unknown"
#endif

#define CB_SUMMARY_STAGES_PER_PASS 32

void cb_pipeline_stats_fini(cb_pipeline_stats *s) {
    if (!s) return;
    cb_free(s->stages);
    s->stages = NULL;
}

typedef struct stage_acc {
    cb_hist service, queue, transition, device;
    int64_t device_sum, first, last;
    size_t runs;
} stage_acc;

/* Fills stages[g0, g0 + ng) from one pass over the stage events. */
static int stage_group(const cb_pipeline_record *rec, size_t g0, size_t ng, int64_t warmup,
                       cb_stage_stats *stages, cb_error *err) {
    stage_acc *acc = cb_calloc(ng, sizeof *acc);
    if (!acc) return cb_error_set(err, CB_ENOMEM, "out of memory");
    for (size_t s = 0; s < ng; s++) {
        cb_hist_init(&acc[s].service);
        cb_hist_init(&acc[s].queue);
        cb_hist_init(&acc[s].transition);
        cb_hist_init(&acc[s].device);
    }
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_EVENTS, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        const cb_stage_event *e = b, *end = e + nb;
        for (; e < end; e++) {
            size_t s = (size_t)e->stage - g0;
            if (e->stage < g0 || s >= ng || cb_stage_event_is_warmup(e, warmup)) continue;
            stage_acc *a = &acc[s];
            if (a->runs == 0 || e->start_ns < a->first) a->first = e->start_ns;
            if (a->runs == 0 || e->end_ns > a->last) a->last = e->end_ns;
            a->runs++;
            cb_hist_add(&a->service, e->end_ns - e->start_ns);
            cb_hist_add(&a->queue, e->start_ns - e->enqueue_ns);
            cb_hist_add(&a->transition, e->start_ns - e->prev_end_ns);
            if (e->device_ns >= 0) {
                cb_hist_add(&a->device, e->device_ns);
                a->device_sum = e->device_ns > INT64_MAX - a->device_sum
                                    ? INT64_MAX
                                    : a->device_sum + e->device_ns;
            }
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    for (size_t s = 0; s < ng; s++) {
        stage_acc *a = &acc[s];
        cb_stage_stats *t = &stages[g0 + s];
        if (rc == CB_OK && a->runs > 0) {
            t->runs = a->runs;
            if (cb_hist_pcts(&a->service, &t->service_ns) != CB_OK ||
                cb_hist_pcts(&a->queue, &t->queue_ns) != CB_OK ||
                cb_hist_pcts(&a->device, &t->device_ns) != CB_OK || a->transition.failed) {
                rc = cb_error_set(err, CB_ENOMEM, "out of memory");
            } else {
                cb_pcts tp;
                cb_hist_pcts(&a->transition, &tp);
                t->transition_ns_p50 = tp.p50;
                t->transition_exact = tp.exact;
                t->device_sum_ns = a->device_sum;
                t->span_ns = a->last - a->first;
                if (t->device_ns.n > 0 && a->last > a->first)
                    t->device_busy_fraction = (double)a->device_sum / (double)(a->last - a->first);
            }
        } else if (rc == CB_OK) {
            t->service_ns.exact = t->queue_ns.exact = t->device_ns.exact = true;
            t->transition_exact = true;
        }
        cb_hist_fini(&a->service);
        cb_hist_fini(&a->queue);
        cb_hist_fini(&a->transition);
        cb_hist_fini(&a->device);
    }
    cb_free(acc);
    return rc;
}

static int compute_stages(const cb_pipeline_record *rec, size_t n_stages, int64_t warmup,
                          cb_stage_stats *stages, cb_error *err) {
    for (size_t g0 = 0; g0 < n_stages; g0 += CB_SUMMARY_STAGES_PER_PASS) {
        size_t ng = n_stages - g0 < CB_SUMMARY_STAGES_PER_PASS ? n_stages - g0
                                                                : CB_SUMMARY_STAGES_PER_PASS;
        int rc = stage_group(rec, g0, ng, warmup, stages, err);
        if (rc != CB_OK) return rc;
    }
    return CB_OK;
}

/* (k - 1) / (max - min) in per-second units; NaN (null, "-") when undefined: fewer than 2
 * values or an empty span. */
static double rate_over_span(size_t k, int64_t min_ns, int64_t max_ns) {
    if (k < 2 || max_ns <= min_ns) return NAN;
    return (double)(k - 1) / ((double)(max_ns - min_ns) / 1e9);
}

/* The query pass: counts, window, spans, latency and dispatch-delay histograms. */
static int query_pass(const cb_summary_input *in, const cb_pipeline_spec *ps,
                      const cb_pipeline_record *rec, cb_pipeline_stats *out) {
    const int64_t warmup = ps->loadgen.warmup_queries;
    const bool open = cb_loadgen_is_open(ps->loadgen.kind);
    cb_hist lat, disp;
    cb_hist_init(&lat);
    cb_hist_init(&disp);
    size_t submitted = 0, measured_all = 0, k = 0;
    int64_t sched_min = 0, sched_max = 0, submit_min = 0, submit_max = 0;
    int64_t win_start = 0, win_end = 0;
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_QUERIES, &out->err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        const cb_query_event *q = b, *end = q + nb;
        for (; q < end; q++) {
            out->queries_total++;
            if (cb_query_is_warmup(q, warmup)) {
                out->warmup++;
                continue;
            }
            switch (q->status) {
            case CB_QUERY_OK: out->ok++; break;
            case CB_QUERY_DROPPED: out->dropped++; break;
            case CB_QUERY_CANCELLED: out->cancelled++; break;
            case CB_QUERY_ERROR:
            default: out->errors++; break;
            }
            if (measured_all == 0 || q->scheduled_ns < sched_min) sched_min = q->scheduled_ns;
            if (measured_all == 0 || q->scheduled_ns > sched_max) sched_max = q->scheduled_ns;
            measured_all++;
            if (q->submit_ns != 0) {
                if (submitted == 0 || q->submit_ns < submit_min) submit_min = q->submit_ns;
                if (submitted == 0 || q->submit_ns > submit_max) submit_max = q->submit_ns;
                submitted++;
                if (open) cb_hist_add(&disp, q->submit_ns - q->scheduled_ns);
            }
            if (q->status != CB_QUERY_OK) continue;
            if (k == 0 || q->scheduled_ns < win_start) win_start = q->scheduled_ns;
            if (k == 0 || q->end_ns > win_end) win_end = q->end_ns;
            k++;
            cb_hist_add(&lat, q->end_ns - q->scheduled_ns);
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    out->measured = out->ok;
    if (rc == CB_OK && (cb_hist_pcts(&lat, &out->latency_ns) != CB_OK ||
                        cb_hist_pcts(&disp, &out->dispatch_delay_ns) != CB_OK))
        rc = cb_error_set(&out->err, CB_ENOMEM, "out of memory");
    cb_hist_fini(&lat);
    cb_hist_fini(&disp);
    if (rc != CB_OK) return rc;
    out->throughput_qps = NAN;
    if (k > 0) {
        out->window_start_ns = win_start - in->t0_ns;
        out->window_end_ns = win_end - in->t0_ns;
        if (win_end > win_start)
            out->throughput_qps = (double)k / ((double)(win_end - win_start) / 1e9);
    }
    if (open) {
        out->target_qps = ps->loadgen.kind == CB_LOADGEN_REPLAY
                              ? rate_over_span(measured_all, sched_min, sched_max)
                              : ps->loadgen.rate_qps;
        out->achieved_qps = rate_over_span(submitted, submit_min, submit_max);
    }
    return CB_OK;
}

int cb_pipeline_window(const cb_summary_input *in, size_t pipeline, int64_t *start_ns,
                       int64_t *end_ns, bool *has, cb_error *err) {
    *has = false;
    *start_ns = *end_ns = 0;
    if (!in || !in->spec || !in->pipelines || pipeline >= in->spec->n_pipelines)
        return cb_error_set(err, CB_EINVAL, "cb_pipeline_window: bad arguments");
    const int64_t warmup = in->spec->pipelines[pipeline].loadgen.warmup_queries;
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, &in->pipelines[pipeline], CB_REC_QUERIES, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        for (const cb_query_event *q = b, *end = q + nb; q < end; q++) {
            if (cb_query_is_warmup(q, warmup) || q->status != CB_QUERY_OK) continue;
            if (!*has || q->scheduled_ns < *start_ns) *start_ns = q->scheduled_ns;
            if (!*has || q->end_ns > *end_ns) *end_ns = q->end_ns;
            *has = true;
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    return rc;
}

int cb_pipeline_stats_compute(const cb_summary_input *in, size_t pipeline, cb_pipeline_stats *out) {
    if (!out) return CB_EINVAL;
    memset(out, 0, sizeof *out);
    out->latency_ns.exact = out->dispatch_delay_ns.exact = true;
    if (!in || !in->spec || !in->pipelines || pipeline >= in->spec->n_pipelines)
        return cb_error_set(&out->err, CB_EINVAL, "no such pipeline");
    const cb_pipeline_spec *ps = &in->spec->pipelines[pipeline];
    const cb_pipeline_record *rec = &in->pipelines[pipeline];
    int rc = query_pass(in, ps, rec, out);
    if (rc != CB_OK) return rc;
    if (ps->n_stages > 0) {
        out->stages = cb_calloc(ps->n_stages, sizeof *out->stages);
        if (!out->stages) return cb_error_set(&out->err, CB_ENOMEM, "out of memory");
        rc = compute_stages(rec, ps->n_stages, ps->loadgen.warmup_queries, out->stages, &out->err);
        if (rc != CB_OK) {
            cb_pipeline_stats_fini(out);
            return rc;
        }
    }
    return CB_OK;
}

/* ---- summary.json ---- */

static void json_pct_value(cb_json *j, const char *key, const cb_pcts *p, int64_t v) {
    cb_json_key(j, key);
    if (p->n == 0)
        cb_json_null(j);
    else
        cb_json_int(j, v);
}

static void json_pcts(cb_json *j, const char *key, const cb_pcts *p) {
    cb_json_key(j, key);
    cb_json_object_begin(j);
    json_pct_value(j, "p50", p, p->p50);
    json_pct_value(j, "p90", p, p->p90);
    json_pct_value(j, "p95", p, p->p95);
    json_pct_value(j, "p99", p, p->p99);
    json_pct_value(j, "p999", p, p->p999);
    json_pct_value(j, "max", p, p->max);
    cb_json_key(j, "mean");
    if (p->n == 0)
        cb_json_null(j);
    else
        cb_json_double(j, p->mean);
    json_pct_value(j, "min", p, p->min);
    cb_json_object_end(j);
}

/* A stage's device time: "device" {count, sum_ns, mean, p50, p90, p99, max, min} and
 * "device_busy_fraction" (null when the stage's span is empty). */
static void json_device(cb_json *j, const cb_stage_stats *t) {
    const cb_pcts *d = &t->device_ns;
    cb_json_key(j, "device");
    cb_json_object_begin(j);
    cb_json_key(j, "count");
    cb_json_uint(j, d->n);
    cb_json_key(j, "sum_ns");
    cb_json_int(j, t->device_sum_ns);
    cb_json_key(j, "mean");
    cb_json_double(j, d->mean);
    json_pct_value(j, "p50", d, d->p50);
    json_pct_value(j, "p90", d, d->p90);
    json_pct_value(j, "p99", d, d->p99);
    json_pct_value(j, "max", d, d->max);
    json_pct_value(j, "min", d, d->min);
    cb_json_object_end(j);
    cb_json_key(j, "device_busy_fraction");
    if (t->span_ns > 0)
        cb_json_double(j, t->device_busy_fraction);
    else
        cb_json_null(j);
}

/* The pipeline's throughput window in ns (0 when it has none): what rates are taken over. */
static int64_t window_len(const cb_pipeline_stats *st) {
    return st->measured > 0 ? st->window_end_ns - st->window_start_ns : 0;
}

static void json_pipeline(cb_json *j, const cb_pipeline_spec *ps, const cb_pipeline_stats *st,
                          const cb_stage_metrics *sm, const cb_splits *splits,
                          const int64_t *prepare_ns) {
    cb_json_object_begin(j);
    cb_json_key(j, "name");
    cb_json_string(j, ps->name);
    cb_json_key(j, "loadgen");
    cb_json_string(j, cb_loadgen_kind_name(ps->loadgen.kind));
    cb_json_key(j, "queries");
    cb_json_uint(j, st->measured);
    cb_json_key(j, "queries_total");
    cb_json_uint(j, st->queries_total);
    cb_json_key(j, "warmup");
    cb_json_uint(j, st->warmup);
    cb_json_key(j, "dropped");
    cb_json_uint(j, st->dropped);
    cb_json_key(j, "failed");
    cb_json_uint(j, st->errors);
    cb_json_key(j, "cancelled");
    cb_json_uint(j, st->cancelled);
    cb_json_key(j, "window_ns");
    if (st->measured == 0) {
        cb_json_null(j);
    } else {
        cb_json_array_begin(j);
        cb_json_int(j, st->window_start_ns);
        cb_json_int(j, st->window_end_ns);
        cb_json_array_end(j);
    }
    cb_json_key(j, "throughput_qps");
    cb_json_double(j, st->throughput_qps);
    if (sm->images_stage >= 0) {
        cb_json_key(j, "images_per_s");
        cb_json_double(j, sm->images_per_s);
    }
    json_pcts(j, "latency_ns", &st->latency_ns);

    cb_json_key(j, "loadgen_stats");
    if (cb_loadgen_is_open(ps->loadgen.kind)) {
        cb_json_object_begin(j);
        cb_json_key(j, "target_qps");
        cb_json_double(j, st->target_qps);
        cb_json_key(j, "achieved_qps");
        cb_json_double(j, st->achieved_qps);
        const cb_pcts *d = &st->dispatch_delay_ns;
        cb_json_key(j, "dispatch_delay_ns");
        cb_json_object_begin(j);
        json_pct_value(j, "p50", d, d->p50);
        json_pct_value(j, "p99", d, d->p99);
        json_pct_value(j, "max", d, d->max);
        cb_json_object_end(j);
        cb_json_object_end(j);
    } else {
        cb_json_null(j);
    }

    cb_json_key(j, "stages");
    cb_json_array_begin(j);
    for (size_t s = 0; s < ps->n_stages; s++) {
        const cb_stage_spec *ss = &ps->stages[s];
        const cb_stage_stats *t = &st->stages[s];
        cb_json_object_begin(j);
        cb_json_key(j, "id");
        cb_json_int(j, ss->id);
        cb_json_key(j, "name");
        cb_json_string(j, ss->name);
        cb_json_key(j, "component");
        cb_json_string(j, ss->component);
        cb_json_key(j, "runs");
        cb_json_uint(j, t->runs);
        cb_json_key(j, "prepare_ns");
        if (prepare_ns)
            cb_json_int(j, prepare_ns[s]);
        else
            cb_json_null(j);
        json_pcts(j, "service_ns", &t->service_ns);
        json_pcts(j, "queue_ns", &t->queue_ns);
        cb_json_key(j, "transition_ns_p50");
        if (t->runs == 0)
            cb_json_null(j);
        else
            cb_json_int(j, t->transition_ns_p50);
        if (t->device_ns.n > 0) json_device(j, t);
        cb_stage_metrics_json(j, sm, s, splits);
        cb_json_object_end(j);
    }
    cb_json_array_end(j);
    cb_json_object_end(j);
}

/* ---- precision: the names of the approximate figures ---- */

/* A list of JSON Pointers (RFC 6901) to the approximate figures, NUL-separated in one growing
 * buffer: O(pipelines * (stages + metrics)) entries at most. */
typedef struct approx_list {
    char *buf;
    size_t len, cap;
    size_t n;
    bool failed;
} approx_list;

/* Appends s escaped as a JSON Pointer token ('~' -> "~0", '/' -> "~1"). */
static void approx_put(approx_list *a, const char *s, bool escape) {
    for (; *s && !a->failed; s++) {
        const char *piece = escape && *s == '~' ? "~0" : escape && *s == '/' ? "~1" : NULL;
        size_t k = piece ? 2 : 1;
        if (a->len + k + 1 > a->cap) {
            size_t cap = a->cap ? 2 * a->cap : 1024;
            char *g = cb_realloc(a->buf, cap);
            if (!g) {
                a->failed = true;
                return;
            }
            a->buf = g;
            a->cap = cap;
        }
        if (piece)
            memcpy(a->buf + a->len, piece, 2);
        else
            a->buf[a->len] = *s;
        a->len += k;
    }
}

/* Adds "/pipelines/P[/stages/S[/metrics/M]]/FIELD". */
static void approx_add(approx_list *a, size_t p, long s, const char *metric, const char *field) {
    char num[64];
    snprintf(num, sizeof num, "/pipelines/%zu", p);
    approx_put(a, num, false);
    if (s >= 0) {
        snprintf(num, sizeof num, "/stages/%ld", s);
        approx_put(a, num, false);
    }
    if (metric) {
        approx_put(a, "/metrics/", false);
        approx_put(a, metric, true);
    }
    approx_put(a, "/", false);
    approx_put(a, field, true);
    if (a->failed) return;
    a->buf[a->len++] = '\0'; /* room was kept by approx_put */
    a->n++;
}

static void approx_collect(approx_list *a, size_t p, const cb_pipeline_spec *ps,
                           const cb_pipeline_stats *st, const cb_stage_metrics *sm) {
    if (!st->latency_ns.exact) approx_add(a, p, -1, NULL, "latency_ns");
    if (cb_loadgen_is_open(ps->loadgen.kind) && !st->dispatch_delay_ns.exact)
        approx_add(a, p, -1, NULL, "loadgen_stats/dispatch_delay_ns");
    for (size_t s = 0; s < ps->n_stages; s++) {
        const cb_stage_stats *t = &st->stages[s];
        if (!t->service_ns.exact) approx_add(a, p, (long)s, NULL, "service_ns");
        if (!t->queue_ns.exact) approx_add(a, p, (long)s, NULL, "queue_ns");
        if (!t->transition_exact) approx_add(a, p, (long)s, NULL, "transition_ns_p50");
        if (t->device_ns.n > 0 && !t->device_ns.exact) approx_add(a, p, (long)s, NULL, "device");
        for (size_t f = sm->first[s]; sm->stats && f < sm->first[s + 1]; f++) {
            const cb_metric_stats *ms = &sm->stats[f];
            if (ms->n + ms->non_finite == 0 || ms->def->kind != CB_METRIC_GAUGE || ms->tenths_exact)
                continue;
            approx_add(a, p, (long)s, ms->def->name, "first_tenth_mean");
            approx_add(a, p, (long)s, ms->def->name, "last_tenth_mean");
        }
    }
}

/* "precision": {"exact", "percentiles": {...}, "stage_metric_tenths": {...}, "approximate"} */
static void json_precision(cb_json *j, const approx_list *a) {
    cb_json_key(j, "precision");
    cb_json_object_begin(j);
    cb_json_key(j, "exact");
    cb_json_bool(j, a->n == 0);
    cb_json_key(j, "percentiles");
    cb_json_object_begin(j);
    cb_json_key(j, "exact_max_values");
    cb_json_uint(j, CB_HIST_EXACT_MAX);
    cb_json_key(j, "relative_error_max");
    cb_json_double(j, CB_HIST_REL_ERROR);
    cb_json_object_end(j);
    cb_json_key(j, "stage_metric_tenths");
    cb_json_object_begin(j);
    cb_json_key(j, "exact_max_reports");
    cb_json_uint(j, CB_STAGE_METRICS_EXACT_MAX);
    cb_json_key(j, "query_id_bins");
    cb_json_uint(j, CB_STAGE_METRICS_BINS);
    cb_json_object_end(j);
    cb_json_key(j, "approximate");
    cb_json_array_begin(j);
    for (size_t off = 0, i = 0; i < a->n; i++) {
        cb_json_string(j, a->buf + off);
        off += strlen(a->buf + off) + 1;
    }
    cb_json_array_end(j);
    cb_json_object_end(j);
}

int cb_summary_write_json(const cb_summary_input *in, FILE *out, cb_error *err) {
    if (!in || !in->spec || !out || (in->spec->n_pipelines > 0 && !in->pipelines))
        return cb_error_set(err, CB_EINVAL, "summary.json: missing input");
    const cb_spec *spec = in->spec;
    cb_json j;
    cb_json_init(&j, out, 2);
    cb_json_object_begin(&j);
    cb_json_key(&j, "name");
    cb_json_string(&j, spec->name);
    cb_json_key(&j, "colobench_version");
    cb_json_string(&j, CB_VERSION);
    cb_json_key(&j, "wall_start_ns");
    cb_json_int(&j, in->wall_start_ns);
    cb_json_key(&j, "duration_ns");
    cb_json_int(&j, in->end_ns - in->t0_ns);
    cb_json_key(&j, "interrupted");
    cb_json_bool(&j, in->interrupted);
    cb_json_key(&j, "timed_out");
    cb_json_bool(&j, in->timed_out);
    cb_json_key(&j, "errors");
    cb_json_array_begin(&j);
    for (size_t i = 0; in->errors && i < in->n_errors; i++) cb_json_string(&j, in->errors[i]);
    cb_json_array_end(&j);

    approx_list approx = {0};
    cb_json_key(&j, "pipelines");
    cb_json_array_begin(&j);
    size_t flat = 0; /* index of the pipeline's first stage in in->prepare_ns */
    for (size_t p = 0; p < spec->n_pipelines; p++) {
        const char *pname = spec->pipelines[p].name ? spec->pipelines[p].name : "?";
        cb_pipeline_stats st;
        int rc = cb_pipeline_stats_compute(in, p, &st);
        if (rc != CB_OK) {
            cb_error_set(err, rc, "summary.json: pipeline %s: %s", pname,
                         st.err.msg[0] ? st.err.msg : cb_strerror(rc));
            cb_pipeline_stats_fini(&st);
            cb_free(approx.buf);
            return rc;
        }
        cb_stage_metrics sm;
        rc = cb_stage_metrics_compute(in, p, window_len(&st), &sm);
        if (rc != CB_OK) {
            cb_error_set(err, rc, "summary.json: pipeline %s: stage metrics: %s", pname,
                         sm.err.msg[0] ? sm.err.msg : cb_strerror(rc));
            cb_stage_metrics_fini(&sm);
            cb_pipeline_stats_fini(&st);
            cb_free(approx.buf);
            return rc;
        }
        json_pipeline(&j, &spec->pipelines[p], &st, &sm, in->pipelines[p].splits,
                      in->prepare_ns ? in->prepare_ns + flat : NULL);
        approx_collect(&approx, p, &spec->pipelines[p], &st, &sm);
        flat += spec->pipelines[p].n_stages;
        cb_stage_metrics_fini(&sm);
        cb_pipeline_stats_fini(&st);
    }
    cb_json_array_end(&j);
    if (approx.failed) {
        cb_free(approx.buf);
        return cb_error_set(err, CB_ENOMEM, "summary.json: out of memory");
    }
    json_precision(&j, &approx);
    cb_free(approx.buf);
    if (in->extra_json) in->extra_json(in->extra_arg, &j);
    cb_json_object_end(&j);
    int rc = cb_json_finish(&j);
    if (rc != CB_OK) return cb_error_set(err, rc, "summary.json: %s", cb_strerror(rc));
    return CB_OK;
}

/* ---- the end-of-run table ---- */

/* ns as µs with one decimal into buf, or "-" when the statistic is empty. */
static const char *fmt_us(char *buf, size_t size, bool have, int64_t ns) {
    if (!have)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.1f", (double)ns / 1000.0);
    return buf;
}

/* A rate with one decimal into buf, or "-" when it is undefined (NaN). */
static const char *fmt_rate(char *buf, size_t size, double v) {
    if (!isfinite(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.1f", v);
    return buf;
}

void cb_summary_print_table(const cb_summary_input *in, FILE *out) {
    if (!in || !in->spec || !out) return;
    const cb_spec *spec = in->spec;
    fprintf(out, "colobench %s: %.3f s%s%s\n", spec->name ? spec->name : "",
            (double)(in->end_ns - in->t0_ns) / 1e9, in->interrupted ? ", interrupted" : "",
            in->timed_out ? ", timed out" : "");
    char a[32], b[32], c[32], d[32];
    for (size_t p = 0; in->pipelines && p < spec->n_pipelines; p++) {
        const cb_pipeline_spec *ps = &spec->pipelines[p];
        cb_pipeline_stats st;
        const char *kind = cb_loadgen_kind_name(ps->loadgen.kind);
        int strc = cb_pipeline_stats_compute(in, p, &st);
        if (strc != CB_OK) {
            fprintf(out, "\npipeline %s (%s): statistics unavailable: %s\n",
                    ps->name ? ps->name : "?", kind ? kind : "?",
                    st.err.msg[0] ? st.err.msg : cb_strerror(strc));
            cb_pipeline_stats_fini(&st);
            continue;
        }
        cb_stage_metrics sm;
        int smrc = cb_stage_metrics_compute(in, p, window_len(&st), &sm);
        fprintf(out, "\npipeline %s (%s): %zu queries, %s q/s", ps->name ? ps->name : "?",
                kind ? kind : "?", st.measured, fmt_rate(a, sizeof a, st.throughput_qps));
        if (smrc == CB_OK && sm.images_stage >= 0 && isfinite(sm.images_per_s))
            fprintf(out, ", %.1f images/s", sm.images_per_s);
        fputc('\n', out);
        fprintf(out, "  warm-up %zu, dropped %zu, failed %zu, cancelled %zu\n", st.warmup,
                st.dropped, st.errors, st.cancelled);
        bool hl = st.latency_ns.n > 0;
        fprintf(out, "  latency us: p50 %s  p99 %s  max %s\n",
                fmt_us(a, sizeof a, hl, st.latency_ns.p50),
                fmt_us(b, sizeof b, hl, st.latency_ns.p99),
                fmt_us(c, sizeof c, hl, st.latency_ns.max));
        if (cb_loadgen_is_open(ps->loadgen.kind)) {
            bool hd = st.dispatch_delay_ns.n > 0;
            fprintf(out, "  open loop: target %s q/s, achieved %s q/s\n",
                    fmt_rate(a, sizeof a, st.target_qps), fmt_rate(b, sizeof b, st.achieved_qps));
            fprintf(out, "  dispatch delay us: p50 %s  p99 %s  max %s\n",
                    fmt_us(a, sizeof a, hd, st.dispatch_delay_ns.p50),
                    fmt_us(b, sizeof b, hd, st.dispatch_delay_ns.p99),
                    fmt_us(c, sizeof c, hd, st.dispatch_delay_ns.max));
        }
        if (ps->n_stages > 0) {
            fprintf(out, "  %-18s %-14s %9s %12s %12s %12s %12s\n", "stage (times: us)",
                    "component", "runs", "service p50", "service p99", "queue p50",
                    "transit p50");
        }
        for (size_t s = 0; s < ps->n_stages; s++) {
            const cb_stage_spec *ss = &ps->stages[s];
            const cb_stage_stats *t = &st.stages[s];
            bool h = t->runs > 0;
            fprintf(out, "  %-18.18s %-14.14s %9zu %12s %12s %12s %12s\n",
                    ss->name ? ss->name : "?", ss->component ? ss->component : "?", t->runs,
                    fmt_us(a, sizeof a, h, t->service_ns.p50),
                    fmt_us(b, sizeof b, h, t->service_ns.p99),
                    fmt_us(c, sizeof c, h, t->queue_ns.p50),
                    fmt_us(d, sizeof d, h, t->transition_ns_p50));
        }
        /* Stages with device time: device and host times side by side. */
        for (size_t s = 0; s < ps->n_stages; s++) {
            const cb_stage_stats *t = &st.stages[s];
            if (t->device_ns.n == 0) continue;
            fprintf(out, "  %s: device us p50 %s p99 %s, host us p50 %s p99 %s",
                    ps->stages[s].name ? ps->stages[s].name : "?",
                    fmt_us(a, sizeof a, true, t->device_ns.p50),
                    fmt_us(b, sizeof b, true, t->device_ns.p99),
                    fmt_us(c, sizeof c, true, t->service_ns.p50),
                    fmt_us(d, sizeof d, true, t->service_ns.p99));
            if (t->span_ns > 0)
                fprintf(out, ", busy %.0f%%", 100.0 * t->device_busy_fraction);
            fputc('\n', out);
        }
        if (smrc == CB_OK) {
            for (size_t s = 0; s < ps->n_stages; s++)
                cb_stage_metrics_print(out, &sm, s, ps->stages[s].name);
        } else {
            fprintf(out, "  stage metrics unavailable: %s\n",
                    sm.err.msg[0] ? sm.err.msg : cb_strerror(smrc));
        }
        /* Percentiles over more than CB_HIST_EXACT_MAX values come from the histogram. */
        bool approx = !st.latency_ns.exact || !st.dispatch_delay_ns.exact;
        for (size_t s = 0; s < ps->n_stages; s++)
            approx = approx || !st.stages[s].service_ns.exact || !st.stages[s].queue_ns.exact ||
                     !st.stages[s].transition_exact || !st.stages[s].device_ns.exact;
        if (approx)
            fprintf(out, "  (percentiles of more than %d values: within %.2g%%)\n",
                    CB_HIST_EXACT_MAX, 100.0 * CB_HIST_REL_ERROR);
        cb_stage_metrics_fini(&sm);
        cb_pipeline_stats_fini(&st);
    }
    for (size_t i = 0; in->errors && i < in->n_errors; i++)
        fprintf(out, "error: %s\n", in->errors[i]);
}
