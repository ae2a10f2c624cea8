/* analysis/interference.c - collocated vs isolated figures, the common window, STP, ANTT,
 * fairness, and the end-of-run table. Definitions in interference.h.
 *
 * Design: streaming passes over each pipeline's records (record/records.h). Pass 1 over each
 * pipeline's queries finds its warm-up end and finish; the common window follows (it is only
 * known once every pipeline has been read). Pass 2, per pipeline: its ok queries in the window
 * (their spans overlap it) are counted with the sum of the fractions of their spans inside it
 * (whole queries counted apart, so the sum is exact when every query is whole) and the measured
 * ones feed a cb_hist of latencies; its stage events, per group of at most
 * CB_INTERFERENCE_STAGES_PER_PASS stages, feed a cb_hist of service times of the runs in it (the
 * median and the exact mean). A baseline's rate is the same two query passes over its own
 * window. Then availability is decided once (r->unavailable and each pipeline's): the JSON and
 * the table only print it. The other isolated figures come from the ordinary summary statistics
 * of the baseline runs (cb_pipeline_stats_compute), so they mean exactly what summary.json of
 * that run says. Percentiles are exact up to CB_HIST_EXACT_MAX values, else within
 * CB_HIST_REL_ERROR (analysis/hist.h); r->exact says whether all of them were, and the JSON says
 * so ("percentiles_exact").
 * Memory (per call, whatever the number of records): one 1 MiB read buffer at a time, one
 * latency cb_hist, one service cb_hist per stage of a group (at most 32 * CB_HIST_MAX_BYTES =
 * 9 MiB in the worst case, ~64 KiB each for real latencies), what cb_pipeline_stats_compute uses
 * (summary.c) for baselines, and O(pipelines * stages) for the result.
 * Thread-safety: pure over borrowed inputs. Ownership: the result owns its arrays and borrows
 * the input until cb_interference_fini.
 */
#include "analysis/interference.h"

#include <math.h>
#include <string.h>

#include "analysis/hist.h"
#include "core/alloc.h"

#define CB_INTERFERENCE_STAGES_PER_PASS 32

/* Pass 1: the warm-up end (first measured scheduled time) and finish (last measured ok end). */
static int warmup_and_finish(const cb_pipeline_record *rec, int64_t warmup, int64_t *first,
                             int64_t *last, cb_error *err) {
    *first = INT64_MAX;
    *last = INT64_MIN;
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_QUERIES, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        for (const cb_query_event *q = b, *end = q + nb; q < end; q++) {
            if (cb_query_is_warmup(q, warmup)) continue;
            if (q->scheduled_ns < *first) *first = q->scheduled_ns;
            if (q->status == CB_QUERY_OK && q->end_ns > *last) *last = q->end_ns;
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    return rc;
}

/* The fraction of the span [s, e] inside [ws, we]: 0 when they do not overlap, 1 when it is
 * whole inside; a zero-length span is 1 when it lies inside. */
static double overlap_fraction(int64_t s, int64_t e, int64_t ws, int64_t we) {
    if (e <= s) return e >= ws && e <= we ? 1.0 : 0.0;
    int64_t ov = (e < we ? e : we) - (s > ws ? s : ws);
    return ov <= 0 ? 0.0 : ov >= e - s ? 1.0 : (double)ov / (double)(e - s);
}

/* The ok queries of rec in [ws, we]: how many, their progress (the sum of their fractions
 * inside it) and, when lat is not NULL, the percentiles of the measured ones' latencies. A
 * warm-up query still running in the window did work there: it counts, but has no latency.
 * Without a window (!window): the measured ok queries of the whole run, each whole. */
static int window_queries(const cb_pipeline_record *rec, int64_t warmup, bool window,
                          int64_t ws, int64_t we, cb_pcts *lat, size_t *queries,
                          double *progress, cb_error *err) {
    if (lat) memset(lat, 0, sizeof *lat);
    size_t whole = 0, n = 0;
    double part = 0;
    cb_hist h;
    cb_hist_init(&h);
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_QUERIES, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        for (const cb_query_event *q = b, *end = q + nb; q < end; q++) {
            bool measured = !cb_query_is_warmup(q, warmup);
            if (q->status != CB_QUERY_OK || (!window && !measured)) continue;
            double f = window ? overlap_fraction(q->scheduled_ns, q->end_ns, ws, we) : 1.0;
            if (f <= 0) continue;
            if (f < 1) part += f;
            else whole++;
            n++;
            if (lat && measured) cb_hist_add(&h, q->end_ns - q->scheduled_ns);
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    if (rc == CB_OK && lat && cb_hist_pcts(&h, lat) != CB_OK)
        rc = cb_error_set(err, CB_ENOMEM, "out of memory");
    cb_hist_fini(&h);
    *queries = n;
    *progress = (double)whole + part;
    return rc;
}

/* Collocated service median and mean of stages [g0, g0 + ng) over the runs in the window (all
 * if !window). */
static int window_service(const cb_pipeline_record *rec, size_t g0, size_t ng, int64_t warmup,
                          bool window, int64_t ws, int64_t we, cb_interference_stage *stages,
                          bool *exact, cb_error *err) {
    cb_hist *h = cb_calloc(ng, sizeof *h);
    if (!h) return cb_error_set(err, CB_ENOMEM, "out of memory");
    cb_rec_iter it;
    int rc = cb_rec_iter_open(&it, rec, CB_REC_EVENTS, err);
    const void *b;
    size_t nb;
    while (rc == CB_OK && (rc = cb_rec_iter_next(&it, &b, &nb)) > 0) {
        for (const cb_stage_event *e = b, *end = e + nb; e < end; e++) {
            size_t s = (size_t)e->stage - g0;
            if (e->stage < g0 || s >= ng || cb_stage_event_is_warmup(e, warmup)) continue;
            if (window && overlap_fraction(e->start_ns, e->end_ns, ws, we) <= 0) continue;
            cb_hist_add(&h[s], e->end_ns - e->start_ns);
        }
        rc = CB_OK;
    }
    cb_rec_iter_close(&it);
    for (size_t s = 0; s < ng; s++) {
        cb_interference_stage *st = &stages[g0 + s];
        st->collocated_service_p50_ns = -1;
        st->collocated_service_mean_ns = -1;
        cb_pcts p;
        if (rc == CB_OK && cb_hist_pcts(&h[s], &p) != CB_OK)
            rc = cb_error_set(err, CB_ENOMEM, "out of memory");
        if (rc == CB_OK && p.n) {
            st->collocated_service_p50_ns = p.p50;
            st->collocated_service_mean_ns = p.mean;
            *exact = *exact && p.exact;
        }
        cb_hist_fini(&h[s]);
    }
    cb_free(h);
    return rc;
}

static const char *pname(const cb_pipeline_spec *ps) { return ps->name ? ps->name : "?"; }

/* Seconds since t0, for reasons. */
static double rel_s(int64_t ns, int64_t t0) { return (double)(ns - t0) / 1e9; }

/* Why there is no common window: names the pipeline that finished first and the one that passed
 * its warm-up last. */
static void no_window_reason(cb_interference *out, size_t active, size_t first_done,
                             size_t last_ready) {
    const cb_spec *spec = out->in->collocated->spec;
    int64_t t0 = out->in->collocated->t0_ns;
    char *b = out->unavailable;
    const cb_interference_pipeline *f = &out->pipelines[first_done], *l = &out->pipelines[last_ready];
    if (active == 0)
        snprintf(b, CB_INTERFERENCE_REASON_MAX, "no pipeline measured a query");
    else if (first_done == last_ready)
        snprintf(b, CB_INTERFERENCE_REASON_MAX,
                 "pipeline %s's measured queries span no time (%.3f-%.3f s)",
                 pname(&spec->pipelines[first_done]), rel_s(f->warmup_end_ns, t0),
                 rel_s(f->finish_ns, t0));
    else
        snprintf(b, CB_INTERFERENCE_REASON_MAX,
                 "pipelines %s and %s never ran measured load at the same time (windows "
                 "%.3f-%.3f s and %.3f-%.3f s)",
                 pname(&spec->pipelines[first_done]), pname(&spec->pipelines[last_ready]),
                 rel_s(f->warmup_end_ns, t0), rel_s(f->finish_ns, t0),
                 rel_s(l->warmup_end_ns, t0), rel_s(l->finish_ns, t0));
}

/* Pipeline p's own reason (window and minimum), before its baseline is looked at. */
static void pipeline_reason(cb_interference *out, size_t p) {
    const cb_spec *spec = out->in->collocated->spec;
    int64_t t0 = out->in->collocated->t0_ns;
    cb_interference_pipeline *r = &out->pipelines[p];
    if (!out->window_overlap)
        snprintf(r->unavailable, sizeof r->unavailable, "%s", out->unavailable);
    else if (r->finish_ns == 0)
        snprintf(r->unavailable, sizeof r->unavailable, "pipeline %s measured no query",
                 pname(&spec->pipelines[p]));
    else if (r->queries_in_window < CB_INTERFERENCE_MIN_QUERIES)
        snprintf(r->unavailable, sizeof r->unavailable,
                 "pipeline %s has %zu %s in the common window (%.3f-%.3f s), fewer "
                 "than the minimum of %d",
                 pname(&spec->pipelines[p]), r->queries_in_window,
                 r->queries_in_window == 1 ? "query" : "queries", rel_s(out->window_start_ns, t0),
                 rel_s(out->window_end_ns, t0), CB_INTERFERENCE_MIN_QUERIES);
}

/* The baseline's rate by the collocated definition: its progress in its own window (warm-up end
 * to finish, as in the collocated run) over the window's length; *queries of them in it. */
static int isolated_rate(const cb_summary_input *iso, double *qps, size_t *queries, cb_error *err) {
    int64_t warmup = iso->spec->pipelines[0].loadgen.warmup_queries, ws, we;
    double progress = 0;
    *qps = 0;
    *queries = 0;
    int rc = warmup_and_finish(&iso->pipelines[0], warmup, &ws, &we, err);
    if (rc != CB_OK || we <= ws) return rc;
    rc = window_queries(&iso->pipelines[0], warmup, true, ws, we, NULL, queries, &progress, err);
    *qps = progress / ((double)(we - ws) / 1e9);
    return rc;
}

/* Pipeline p's isolated figures from its baseline; false when it has none (or it failed to
 * compute other than by a read error, which is returned in *rc). */
static bool isolated_figures(cb_interference *out, size_t p, const cb_summary_input *iso, int *rc) {
    cb_interference_pipeline *r = &out->pipelines[p];
    const cb_pipeline_spec *ps = &out->in->collocated->spec->pipelines[p];
    size_t queries = 0;
    cb_pipeline_stats st;
    memset(&st, 0, sizeof st);
    *rc = isolated_rate(iso, &r->isolated_qps, &queries, &st.err);
    if (*rc == CB_OK) *rc = cb_pipeline_stats_compute(iso, 0, &st);
    if (*rc == CB_EIO)
        cb_error_set(&out->err, *rc, "baseline of %s: %s", pname(ps), st.err.msg);
    if (*rc != CB_OK) {
        cb_pipeline_stats_fini(&st);
        if (*rc != CB_EIO) *rc = CB_OK;
        return false;
    }
    if (st.measured) {
        r->isolated_p50_ns = st.latency_ns.p50;
        r->isolated_p99_ns = st.latency_ns.p99;
        out->exact = out->exact && st.latency_ns.exact;
    }
    for (size_t s = 0; s < ps->n_stages && s < iso->spec->pipelines[0].n_stages; s++)
        if (st.stages && st.stages[s].runs) {
            r->stages[s].isolated_service_p50_ns = st.stages[s].service_ns.p50;
            r->stages[s].isolated_service_mean_ns = st.stages[s].service_ns.mean;
            out->exact = out->exact && st.stages[s].service_ns.exact;
        }
    if (!r->unavailable[0] && (queries < CB_INTERFERENCE_MIN_QUERIES || !(r->isolated_qps > 0)))
        snprintf(r->unavailable, sizeof r->unavailable,
                 "the baseline of %s has %zu %s in its measured window, fewer than the minimum "
                 "of %d",
                 pname(ps), queries, queries == 1 ? "query" : "queries",
                 CB_INTERFERENCE_MIN_QUERIES);
    cb_pipeline_stats_fini(&st);
    return true;
}

int cb_interference_compute(const cb_interference_input *in, cb_interference *out) {
    memset(out, 0, sizeof *out);
    out->in = in;
    out->exact = true;
    out->aggregate_qps = out->stp = out->antt = out->fairness = NAN;
    const cb_summary_input *c = in->collocated;
    const cb_spec *spec = c->spec;
    out->n_pipelines = spec->n_pipelines;
    out->pipelines = cb_calloc(spec->n_pipelines ? spec->n_pipelines : 1, sizeof *out->pipelines);
    if (!out->pipelines) return cb_error_set(&out->err, CB_ENOMEM, "out of memory");
    /* Warm-up ends and finishes, then the common window. */
    int64_t ws = INT64_MIN, we = INT64_MAX;
    size_t active = 0, last_ready = 0, first_done = 0;
    for (size_t p = 0; p < spec->n_pipelines; p++) {
        cb_interference_pipeline *r = &out->pipelines[p];
        int64_t warmup = spec->pipelines[p].loadgen.warmup_queries;
        int64_t first, last;
        int rc = warmup_and_finish(&c->pipelines[p], warmup, &first, &last, &out->err);
        if (rc != CB_OK) return rc;
        if (last == INT64_MIN) continue; /* measured nothing: not part of the window */
        r->warmup_end_ns = first;
        r->finish_ns = last;
        if (first > ws) {
            ws = first;
            last_ready = p;
        }
        if (last < we) {
            we = last;
            first_done = p;
        }
        active++;
    }
    out->window_overlap = active > 0 && we > ws;
    out->window_start_ns = active ? ws : 0;
    out->window_end_ns = active ? we : 0;
    if (!out->window_overlap) no_window_reason(out, active, first_done, last_ready);
    double len_s = out->window_overlap ? (double)(we - ws) / 1e9 : 0;
    double total = 0;
    bool all_min = out->window_overlap, all_slowdowns = out->window_overlap;
    out->have_baseline = in->isolated != NULL;
    for (size_t p = 0; p < spec->n_pipelines; p++) {
        cb_interference_pipeline *r = &out->pipelines[p];
        const cb_pipeline_spec *ps = &spec->pipelines[p];
        const cb_pipeline_record *rec = &c->pipelines[p];
        int64_t warmup = ps->loadgen.warmup_queries;
        cb_pcts lat;
        int rc = window_queries(rec, warmup, out->window_overlap, ws, we, &lat,
                                &r->queries_in_window, &r->progress_in_window, &out->err);
        if (rc != CB_OK) return rc;
        out->exact = out->exact && lat.exact;
        r->collocated_p50_ns = lat.n ? lat.p50 : -1;
        r->collocated_p99_ns = lat.n ? lat.p99 : -1;
        if (out->window_overlap) {
            r->collocated_qps = r->progress_in_window / len_s;
            total += r->progress_in_window;
        } else {
            cb_pipeline_stats st;
            rc = cb_pipeline_stats_compute(c, p, &st);
            if (rc == CB_EIO) {
                cb_error_set(&out->err, rc, "%s", st.err.msg);
                cb_pipeline_stats_fini(&st);
                return rc;
            }
            if (rc == CB_OK && isfinite(st.throughput_qps)) r->collocated_qps = st.throughput_qps;
            cb_pipeline_stats_fini(&st);
        }
        pipeline_reason(out, p);
        if (r->unavailable[0]) all_min = false;
        r->stages = cb_calloc(ps->n_stages ? ps->n_stages : 1, sizeof *r->stages);
        if (!r->stages) return cb_error_set(&out->err, CB_ENOMEM, "out of memory");
        for (size_t g0 = 0; g0 < ps->n_stages; g0 += CB_INTERFERENCE_STAGES_PER_PASS) {
            size_t ng = ps->n_stages - g0 < CB_INTERFERENCE_STAGES_PER_PASS
                            ? ps->n_stages - g0 : CB_INTERFERENCE_STAGES_PER_PASS;
            rc = window_service(rec, g0, ng, warmup, out->window_overlap, ws, we, r->stages,
                                &out->exact, &out->err);
            if (rc != CB_OK) return rc;
        }
        for (size_t s = 0; s < ps->n_stages; s++) {
            r->stages[s].isolated_service_p50_ns = -1;
            r->stages[s].isolated_service_mean_ns = -1;
        }
        r->isolated_p50_ns = r->isolated_p99_ns = -1;
        r->slowdown = NAN;
        const cb_summary_input *iso = in->isolated ? in->isolated[p] : NULL;
        if (!iso || !isolated_figures(out, p, iso, &rc)) {
            if (rc != CB_OK) return rc;
            out->have_baseline = false;
            all_slowdowns = false;
            continue;
        }
        if (r->unavailable[0]) all_slowdowns = false;
        else r->slowdown = r->isolated_qps / r->collocated_qps;
    }
    /* The block's reason: the window's (set above), else the first pipeline's. */
    for (size_t p = 0; !out->unavailable[0] && p < spec->n_pipelines; p++)
        snprintf(out->unavailable, sizeof out->unavailable, "%s", out->pipelines[p].unavailable);
    if (all_min) out->aggregate_qps = total / len_s;
    if (all_slowdowns && out->have_baseline && spec->n_pipelines > 0) {
        double stp = 0, antt = 0, npmin = INFINITY, npmax = 0;
        for (size_t p = 0; p < spec->n_pipelines; p++) {
            const cb_interference_pipeline *r = &out->pipelines[p];
            double np = r->collocated_qps / r->isolated_qps;
            stp += np;
            antt += 1.0 / np;
            if (np < npmin) npmin = np;
            if (np > npmax) npmax = np;
        }
        out->stp = stp;
        out->antt = antt / (double)spec->n_pipelines;
        out->fairness = npmin / npmax;
    }
    return CB_OK;
}

void cb_interference_fini(cb_interference *r) {
    if (!r) return;
    for (size_t p = 0; r->pipelines && p < r->n_pipelines; p++) cb_free(r->pipelines[p].stages);
    cb_free(r->pipelines);
    r->pipelines = NULL;
}

static void json_ns_or_null(cb_json *j, const char *key, int64_t v) {
    cb_json_key(j, key);
    if (v < 0) cb_json_null(j);
    else cb_json_int(j, v);
}

static void json_reason(cb_json *j, const char *reason) {
    cb_json_key(j, "unavailable");
    if (reason[0]) cb_json_string(j, reason);
    else cb_json_null(j);
}

static void json_lat(cb_json *j, const char *key, int64_t p50, int64_t p99) {
    cb_json_key(j, key);
    cb_json_object_begin(j);
    json_ns_or_null(j, "p50", p50);
    json_ns_or_null(j, "p99", p99);
    cb_json_object_end(j);
}

void cb_interference_json(const cb_interference *r, cb_json *j) {
    const cb_interference_input *in = r->in;
    const cb_spec *spec = in->collocated->spec;
    int64_t t0 = in->collocated->t0_ns;
    cb_json_key(j, "collocation");
    cb_json_object_begin(j);
    cb_json_key(j, "mode");
    cb_json_string(j, in->mode);
    cb_json_key(j, "baseline");
    cb_json_string(j, in->isolated ? "isolated" : "none");
    cb_json_key(j, "window_ns");
    if (r->window_overlap) {
        cb_json_array_begin(j);
        cb_json_int(j, r->window_start_ns - t0);
        cb_json_int(j, r->window_end_ns - t0);
        cb_json_array_end(j);
    } else {
        cb_json_null(j);
    }
    cb_json_key(j, "window_overlap");
    cb_json_bool(j, r->window_overlap);
    cb_json_key(j, "min_queries_in_window");
    cb_json_int(j, CB_INTERFERENCE_MIN_QUERIES);
    cb_json_key(j, "percentiles_exact");
    cb_json_bool(j, r->exact);
    cb_json_key(j, "stp");
    cb_json_double(j, r->stp);
    cb_json_key(j, "antt");
    cb_json_double(j, r->antt);
    cb_json_key(j, "fairness");
    cb_json_double(j, r->fairness);
    cb_json_key(j, "aggregate_qps");
    cb_json_double(j, r->aggregate_qps);
    json_reason(j, r->unavailable);
    cb_json_key(j, "barrier");
    cb_json_object_begin(j);
    json_ns_or_null(j, "skew_ns", in->barrier_skew_ns);
    json_ns_or_null(j, "max_delay_ns", in->barrier_max_delay_ns);
    cb_json_object_end(j);
    cb_json_key(j, "pipelines");
    cb_json_array_begin(j);
    for (size_t p = 0; p < r->n_pipelines; p++) {
        const cb_interference_pipeline *x = &r->pipelines[p];
        const cb_pipeline_spec *ps = &spec->pipelines[p];
        cb_json_object_begin(j);
        cb_json_key(j, "name");
        cb_json_string(j, ps->name);
        cb_json_key(j, "mode");
        cb_json_string(j, cb_colloc_mode_name(ps->mode));
        cb_json_key(j, "device");
        cb_json_string(j, ps->device);
        if (in->pids) {
            cb_json_key(j, "pid");
            cb_json_int(j, in->pids[p]);
        }
        if (in->process_status) {
            cb_json_key(j, "process");
            cb_json_string(j, in->process_status[p]);
        }
        if (in->isolated && in->baseline_dirs && in->baseline_dirs[p]) {
            size_t lead = p - (size_t)(ps->replica > 0 ? ps->replica - 1 : 0);
            cb_json_key(j, "baseline");
            cb_json_object_begin(j);
            cb_json_key(j, "dir");
            cb_json_string(j, in->baseline_dirs[p]);
            cb_json_key(j, "ran_as");
            cb_json_string(j, spec->pipelines[lead].name);
            cb_json_key(j, "shared_by");
            cb_json_int(j, ps->n_replicas > 0 ? ps->n_replicas : 1);
            cb_json_object_end(j);
        }
        cb_json_key(j, "queries_in_window");
        cb_json_uint(j, x->queries_in_window);
        cb_json_key(j, "progress_in_window");
        cb_json_double(j, x->progress_in_window);
        cb_json_key(j, "isolated_qps");
        if (r->in->isolated && x->isolated_qps > 0) cb_json_double(j, x->isolated_qps);
        else cb_json_null(j);
        cb_json_key(j, "collocated_qps");
        cb_json_double(j, x->collocated_qps);
        cb_json_key(j, "slowdown");
        cb_json_double(j, x->slowdown);
        json_reason(j, x->unavailable);
        json_lat(j, "isolated_latency_ns", x->isolated_p50_ns, x->isolated_p99_ns);
        json_lat(j, "collocated_latency_ns", x->collocated_p50_ns, x->collocated_p99_ns);
        cb_json_key(j, "stages");
        cb_json_array_begin(j);
        for (size_t s = 0; s < ps->n_stages; s++) {
            const cb_interference_stage *st = &x->stages[s];
            cb_json_object_begin(j);
            cb_json_key(j, "name");
            cb_json_string(j, ps->stages[s].name);
            json_ns_or_null(j, "isolated_service_p50_ns", st->isolated_service_p50_ns);
            json_ns_or_null(j, "collocated_service_p50_ns", st->collocated_service_p50_ns);
            cb_json_key(j, "isolated_service_mean_ns");
            cb_json_double(j, st->isolated_service_mean_ns >= 0 ? st->isolated_service_mean_ns : NAN);
            cb_json_key(j, "collocated_service_mean_ns");
            cb_json_double(j, st->collocated_service_mean_ns >= 0 ? st->collocated_service_mean_ns : NAN);
            cb_json_key(j, "service_slowdown"); /* of the median */
            if (st->isolated_service_p50_ns > 0 && st->collocated_service_p50_ns >= 0)
                cb_json_double(j, (double)st->collocated_service_p50_ns / (double)st->isolated_service_p50_ns);
            else
                cb_json_null(j);
            cb_json_key(j, "service_mean_slowdown");
            if (st->isolated_service_mean_ns > 0 && st->collocated_service_mean_ns >= 0)
                cb_json_double(j, st->collocated_service_mean_ns / st->isolated_service_mean_ns);
            else
                cb_json_null(j);
            cb_json_object_end(j);
        }
        cb_json_array_end(j);
        cb_json_object_end(j);
    }
    cb_json_array_end(j);
    cb_json_object_end(j);
}

static const char *us(char *b, size_t n, int64_t ns) {
    if (ns < 0) snprintf(b, n, "-");
    else snprintf(b, n, "%.1f", (double)ns / 1e3);
    return b;
}

static const char *num(char *b, size_t n, double v, const char *fmt) {
    if (!isfinite(v) || v <= 0) snprintf(b, n, "-");
    else snprintf(b, n, fmt, v);
    return b;
}

void cb_interference_print_table(const cb_interference *r, FILE *out) {
    const cb_interference_input *in = r->in;
    const cb_spec *spec = in->collocated->spec;
    int64_t t0 = in->collocated->t0_ns;
    char a[32], b[32], c[32], d[32], e[32], f[32], g[32];
    fprintf(out, "\ncollocation: %s, %zu pipelines", in->mode, r->n_pipelines);
    if (r->window_overlap)
        fprintf(out, ", common window %.3f-%.3f s (%.3f s)", (double)(r->window_start_ns - t0) / 1e9,
                (double)(r->window_end_ns - t0) / 1e9,
                (double)(r->window_end_ns - r->window_start_ns) / 1e9);
    else
        fprintf(out, ", no common window (the pipelines never ran measured load together)");
    if (in->barrier_skew_ns >= 0) fprintf(out, ", start skew %s us", us(a, sizeof a, in->barrier_skew_ns));
    fputc('\n', out);
    fprintf(out, "  %-16s %12s %12s %9s %21s %21s\n", "pipeline", "isolated q/s", "collocated", "slowdown",
            "p50 iso/col (us)", "p99 iso/col (us)");
    for (size_t p = 0; p < r->n_pipelines; p++) {
        const cb_interference_pipeline *x = &r->pipelines[p];
        char p50[48], p99[48];
        snprintf(p50, sizeof p50, "%s / %s", us(a, sizeof a, x->isolated_p50_ns), us(b, sizeof b, x->collocated_p50_ns));
        snprintf(p99, sizeof p99, "%s / %s", us(c, sizeof c, x->isolated_p99_ns), us(d, sizeof d, x->collocated_p99_ns));
        fprintf(out, "  %-16.16s %12s %12s %9s %21s %21s%s%s\n", spec->pipelines[p].name,
                num(e, sizeof e, x->isolated_qps, "%.1f"), num(f, sizeof f, x->collocated_qps, "%.1f"),
                num(g, sizeof g, x->slowdown, "%.2fx"), p50, p99,
                in->process_status && in->process_status[p] ? "  " : "",
                in->process_status && in->process_status[p] && strcmp(in->process_status[p], "exited 0")
                    ? in->process_status[p] : "");
        /* Without a common window the block's reason below says it for every pipeline. */
        if (r->window_overlap && x->unavailable[0])
            fprintf(out, "    slowdown unavailable: %s\n", x->unavailable);
        for (size_t s = 0; s < spec->pipelines[p].n_stages; s++) {
            const cb_interference_stage *st = &x->stages[s];
            double ratio = st->isolated_service_p50_ns > 0 && st->collocated_service_p50_ns >= 0
                               ? (double)st->collocated_service_p50_ns / (double)st->isolated_service_p50_ns
                               : NAN;
            double mratio = st->isolated_service_mean_ns > 0 && st->collocated_service_mean_ns >= 0
                                ? st->collocated_service_mean_ns / st->isolated_service_mean_ns
                                : NAN;
            fprintf(out, "    stage %-16.16s service p50 %s -> %s us (%s), mean %s -> %s us (%s)\n",
                    spec->pipelines[p].stages[s].name, us(a, sizeof a, st->isolated_service_p50_ns),
                    us(b, sizeof b, st->collocated_service_p50_ns), num(c, sizeof c, ratio, "%.2fx"),
                    us(d, sizeof d, (int64_t)st->isolated_service_mean_ns),
                    us(e, sizeof e, (int64_t)st->collocated_service_mean_ns), num(f, sizeof f, mratio, "%.2fx"));
        }
    }
    if (!isfinite(r->aggregate_qps))
        fprintf(out, "  aggregate, STP, ANTT, fairness unavailable: %s", r->unavailable);
    else if (!r->have_baseline)
        fprintf(out, "  aggregate %.1f q/s   (STP, ANTT, slowdown: set collocation.baseline: isolated)",
                r->aggregate_qps);
    else if (!isfinite(r->stp))
        fprintf(out, "  aggregate %.1f q/s   STP, ANTT, fairness unavailable: %s", r->aggregate_qps,
                r->unavailable);
    else
        fprintf(out, "  aggregate %.1f q/s   STP %.2f   ANTT %.2f   fairness %.2f", r->aggregate_qps,
                r->stp, r->antt, r->fairness);
    fputc('\n', out);
}
