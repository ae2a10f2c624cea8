/* analysis/summary.c - per-pipeline statistics, summary.json and the end-of-run table.
 *
 * Design: cb_pipeline_stats_compute makes two passes over a pipeline's records. Queries: one pass
 * counts statuses and fills one scratch array with the measured latencies (end - scheduled);
 * for open loads the same array is refilled with dispatch delays (submit - scheduled). Stage
 * events: a counting sort groups event indices by stage, then each stage's service, queue and
 * transition times are written into one scratch array of its run count and summarised in turn;
 * memory is O(events) indices plus one scratch array, whatever the number of stages.
 * Definitions are those in summary.h, made precise here:
 * - a query or stage event is warm-up when its query id < loadgen.warmup_queries (a query's own
 *   warmup flag counts too); warm-up records enter no statistic and no status count:
 *   queries_total = warmup + ok + dropped + errors + cancelled; measured == ok.
 * - window: first measured scheduled_ns to last measured end_ns, relative to t0.
 * - achieved_qps = (k - 1) / (last submit - first submit) over the k measured queries that were
 *   submitted (submit_ns != 0), whatever their status: the rate of arrivals, so a constant load
 *   of rate r achieves exactly r. target_qps is rate_qps for poisson/constant/gamma and, for
 *   replay, the same (k - 1) / span over the scheduled times.
 * - statistics of an empty set are written as null in JSON and "-" in the table.
 * Stage events whose stage index is outside the spec are ignored (a recorder bug must not crash
 * the summary).
 * Thread-safety: pure functions over borrowed inputs. Ownership: in and everything it points to
 * are borrowed; out->stages is cb_malloc'd and freed by cb_pipeline_stats_fini.
 */
#include "analysis/summary.h"

#include <math.h>
#include <string.h>

#include "analysis/json.h"
#include "analysis/stage_metrics.h"
#include "core/alloc.h"

#ifndef CB_VERSION
#define CB_VERSION "unknown"
#endif

void cb_pipeline_stats_fini(cb_pipeline_stats *s) {
    if (!s) return;
    cb_free(s->stages);
    s->stages = NULL;
}

static int compute_stages(const cb_pipeline_record *rec, size_t n_stages, int64_t warmup,
                          cb_stage_stats *stages) {
    size_t *start = cb_calloc(n_stages + 1, sizeof *start);
    if (!start) return CB_ENOMEM;
    size_t total = 0, max_runs = 0;
    for (size_t i = 0; i < rec->n_stage_events; i++) {
        const cb_stage_event *e = &rec->stage_events[i];
        if (e->stage >= n_stages || cb_stage_event_is_warmup(e, warmup)) continue;
        stages[e->stage].runs++;
        total++;
    }
    for (size_t s = 0; s < n_stages; s++) {
        start[s + 1] = start[s] + stages[s].runs;
        if (stages[s].runs > max_runs) max_runs = stages[s].runs;
    }
    if (total == 0) {
        cb_free(start);
        return CB_OK;
    }
    size_t *idx = cb_malloc(total * sizeof *idx);
    int64_t *scratch = cb_malloc(max_runs * sizeof *scratch);
    size_t *fill = cb_malloc(n_stages * sizeof *fill);
    if (!idx || !scratch || !fill) {
        cb_free(idx);
        cb_free(scratch);
        cb_free(fill);
        cb_free(start);
        return CB_ENOMEM;
    }
    memcpy(fill, start, n_stages * sizeof *fill);
    for (size_t i = 0; i < rec->n_stage_events; i++) {
        const cb_stage_event *e = &rec->stage_events[i];
        if (e->stage >= n_stages || cb_stage_event_is_warmup(e, warmup)) continue;
        idx[fill[e->stage]++] = i;
    }
    for (size_t s = 0; s < n_stages; s++) {
        const size_t *ix = idx + start[s];
        size_t n = stages[s].runs;
        if (n == 0) continue;
        for (size_t k = 0; k < n; k++) {
            const cb_stage_event *e = &rec->stage_events[ix[k]];
            scratch[k] = e->end_ns - e->start_ns;
        }
        cb_stats_pcts(scratch, n, &stages[s].service_ns);
        for (size_t k = 0; k < n; k++) {
            const cb_stage_event *e = &rec->stage_events[ix[k]];
            scratch[k] = e->start_ns - e->enqueue_ns;
        }
        cb_stats_pcts(scratch, n, &stages[s].queue_ns);
        for (size_t k = 0; k < n; k++) {
            const cb_stage_event *e = &rec->stage_events[ix[k]];
            scratch[k] = e->start_ns - e->prev_end_ns;
        }
        cb_stats_sort(scratch, n);
        stages[s].transition_ns_p50 = cb_stats_nearest_rank(scratch, n, 0.5);
        /* Device time: the runs that reported some (device_ns >= 0), and the stage's span. */
        size_t nd = 0;
        int64_t sum = 0, first = 0, last = 0;
        for (size_t k = 0; k < n; k++) {
            const cb_stage_event *e = &rec->stage_events[ix[k]];
            if (k == 0 || e->start_ns < first) first = e->start_ns;
            if (k == 0 || e->end_ns > last) last = e->end_ns;
            if (e->device_ns < 0) continue;
            scratch[nd++] = e->device_ns;
            sum = e->device_ns > INT64_MAX - sum ? INT64_MAX : sum + e->device_ns;
        }
        stages[s].span_ns = last - first;
        cb_stats_pcts(scratch, nd, &stages[s].device_ns);
        stages[s].device_sum_ns = sum;
        if (nd > 0 && last > first)
            stages[s].device_busy_fraction = (double)sum / (double)(last - first);
    }
    cb_free(fill);
    cb_free(scratch);
    cb_free(idx);
    cb_free(start);
    return CB_OK;
}

/* (k - 1) / (max - min) in per-second units; 0 when undefined. */
static double rate_over_span(size_t k, int64_t min_ns, int64_t max_ns) {
    if (k < 2 || max_ns <= min_ns) return 0.0;
    return (double)(k - 1) / ((double)(max_ns - min_ns) / 1e9);
}

int cb_pipeline_stats_compute(const cb_summary_input *in, size_t pipeline, cb_pipeline_stats *out) {
    if (!out) return CB_EINVAL;
    memset(out, 0, sizeof *out);
    if (!in || !in->spec || !in->pipelines || pipeline >= in->spec->n_pipelines) return CB_EINVAL;
    const cb_pipeline_spec *ps = &in->spec->pipelines[pipeline];
    const cb_pipeline_record *rec = &in->pipelines[pipeline];
    const int64_t warmup = ps->loadgen.warmup_queries;
    const bool open = cb_loadgen_is_open(ps->loadgen.kind);

    size_t submitted = 0, measured_all = 0;
    int64_t sched_min = 0, sched_max = 0, submit_min = 0, submit_max = 0;
    for (size_t i = 0; i < rec->n_queries; i++) {
        const cb_query_event *q = &rec->queries[i];
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
        }
    }
    out->measured = out->ok;

    size_t scratch_n = out->measured > submitted ? out->measured : submitted;
    int64_t *scratch = scratch_n ? cb_malloc(scratch_n * sizeof *scratch) : NULL;
    if (scratch_n && !scratch) return CB_ENOMEM;

    /* Latency and the throughput window over measured ok queries. */
    size_t k = 0;
    int64_t win_start = 0, win_end = 0;
    for (size_t i = 0; i < rec->n_queries; i++) {
        const cb_query_event *q = &rec->queries[i];
        if (cb_query_is_warmup(q, warmup) || q->status != CB_QUERY_OK) continue;
        if (k == 0 || q->scheduled_ns < win_start) win_start = q->scheduled_ns;
        if (k == 0 || q->end_ns > win_end) win_end = q->end_ns;
        scratch[k++] = q->end_ns - q->scheduled_ns;
    }
    cb_stats_pcts(scratch, k, &out->latency_ns);
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
        k = 0;
        for (size_t i = 0; i < rec->n_queries; i++) {
            const cb_query_event *q = &rec->queries[i];
            if (cb_query_is_warmup(q, warmup) || q->submit_ns == 0) continue;
            scratch[k++] = q->submit_ns - q->scheduled_ns;
        }
        cb_stats_pcts(scratch, k, &out->dispatch_delay_ns);
    }
    cb_free(scratch);

    if (ps->n_stages > 0) {
        out->stages = cb_calloc(ps->n_stages, sizeof *out->stages);
        if (!out->stages) return CB_ENOMEM;
        int rc = compute_stages(rec, ps->n_stages, warmup, out->stages);
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

    cb_json_key(&j, "pipelines");
    cb_json_array_begin(&j);
    size_t flat = 0; /* index of the pipeline's first stage in in->prepare_ns */
    for (size_t p = 0; p < spec->n_pipelines; p++) {
        cb_pipeline_stats st;
        int rc = cb_pipeline_stats_compute(in, p, &st);
        if (rc != CB_OK)
            return cb_error_set(err, rc, "summary.json: pipeline %s: %s",
                                spec->pipelines[p].name ? spec->pipelines[p].name : "?",
                                cb_strerror(rc));
        cb_stage_metrics sm;
        rc = cb_stage_metrics_compute(in, p, window_len(&st), &sm);
        if (rc != CB_OK) {
            cb_stage_metrics_fini(&sm);
            cb_pipeline_stats_fini(&st);
            return cb_error_set(err, rc, "summary.json: pipeline %s: stage metrics: %s",
                                spec->pipelines[p].name ? spec->pipelines[p].name : "?",
                                cb_strerror(rc));
        }
        json_pipeline(&j, &spec->pipelines[p], &st, &sm, in->pipelines[p].splits,
                      in->prepare_ns ? in->prepare_ns + flat : NULL);
        flat += spec->pipelines[p].n_stages;
        cb_stage_metrics_fini(&sm);
        cb_pipeline_stats_fini(&st);
    }
    cb_json_array_end(&j);
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
        if (cb_pipeline_stats_compute(in, p, &st) != CB_OK) {
            fprintf(out, "\npipeline %s (%s): statistics unavailable (out of memory)\n",
                    ps->name ? ps->name : "?", kind ? kind : "?");
            continue;
        }
        cb_stage_metrics sm;
        int smrc = cb_stage_metrics_compute(in, p, window_len(&st), &sm);
        fprintf(out, "\npipeline %s (%s): %zu queries, %.1f q/s", ps->name ? ps->name : "?",
                kind ? kind : "?", st.measured, st.throughput_qps);
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
            fprintf(out, "  open loop: target %.1f q/s, achieved %.1f q/s\n", st.target_qps,
                    st.achieved_qps);
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
            fprintf(out, "  stage metrics unavailable (out of memory)\n");
        }
        cb_stage_metrics_fini(&sm);
        cb_pipeline_stats_fini(&st);
    }
    for (size_t i = 0; in->errors && i < in->n_errors; i++)
        fprintf(out, "error: %s\n", in->errors[i]);
}
