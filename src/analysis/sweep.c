/* analysis/sweep.c - per-point figures of a collocation sweep and their CSV, JSON and table
 * (definitions in sweep.h and docs/outputs.md). */
#include <math.h>
#include <string.h>

#include "analysis/stage_metrics.h"
#include "analysis/sweep.h"

const char *cb_sweep_status_name(cb_sweep_status s) {
    switch (s) {
    case CB_SWEEP_NOT_RUN: return "not_run";
    case CB_SWEEP_OK: return "ok";
    case CB_SWEEP_FAILED: return "failed";
    case CB_SWEEP_INTERRUPTED: return "interrupted";
    }
    return "?";
}

void cb_sweep_point_init(cb_sweep_point *pt, const char *mode, int replicas) {
    memset(pt, 0, sizeof *pt);
    snprintf(pt->mode, sizeof pt->mode, "%s", mode);
    pt->replicas = replicas;
    snprintf(pt->dir, sizeof pt->dir, "%s-x%d", mode, replicas);
    pt->status = CB_SWEEP_NOT_RUN;
    pt->aggregate_qps = pt->aggregate_images_per_s = NAN;
    pt->isolated_qps = pt->isolated_images_per_s = NAN;
    pt->relative = pt->stp = pt->antt = pt->fairness = NAN;
    pt->slowdown_min = pt->slowdown_mean = pt->slowdown_max = NAN;
}

/* Throughput (queries/s) and images/s of pipeline p of in. */
static int rates(const cb_summary_input *in, size_t p, double *qps, double *images) {
    cb_pipeline_stats st;
    *qps = *images = NAN;
    if (cb_pipeline_stats_compute(in, p, &st) != CB_OK) return -1;
    *qps = st.throughput_qps;
    cb_stage_metrics sm;
    if (cb_stage_metrics_compute(in, p, st.window_end_ns - st.window_start_ns, &sm) == CB_OK &&
        sm.images_stage >= 0 && isfinite(sm.images_per_s))
        *images = sm.images_per_s;
    cb_stage_metrics_fini(&sm);
    cb_pipeline_stats_fini(&st);
    return 0;
}

int cb_sweep_point_measure(cb_sweep_point *pt, const cb_summary_input *colo,
                           const cb_summary_input *const *isolated, const cb_interference *inter) {
    const cb_spec *spec = colo->spec;
    size_t n = spec->n_pipelines < CB_SWEEP_MAX_PIPELINES ? spec->n_pipelines : CB_SWEEP_MAX_PIPELINES;
    pt->n_pipelines = n;
    /* Several pipelines: their rates over the common window only (interference.h), never
     * whole-run rates added over spans that differ. */
    bool windowed = n > 1;
    double q = 0, img = 0;
    bool all_img = n > 0;
    for (size_t p = 0; p < n; p++) {
        cb_sweep_pipeline *sp = &pt->pipelines[p];
        snprintf(sp->name, sizeof sp->name, "%s", spec->pipelines[p].name);
        rates(colo, p, &sp->qps, &sp->images_per_s);
        sp->slowdown = inter && inter->have_baseline && p < inter->n_pipelines
                           ? inter->pipelines[p].slowdown : NAN;
        if (windowed) {
            double wq = inter && inter->window_overlap && p < inter->n_pipelines
                            ? inter->pipelines[p].collocated_qps : NAN;
            /* images per query (whole run) at the window's rate */
            sp->images_per_s = sp->qps > 0 && isfinite(wq) ? sp->images_per_s * wq / sp->qps : NAN;
            sp->qps = wq;
        }
        if (isfinite(sp->qps)) q += sp->qps;
        if (isfinite(sp->images_per_s)) img += sp->images_per_s;
        else all_img = false;
    }
    pt->aggregate_qps = q;
    if (windowed) {
        pt->aggregate_qps = inter ? inter->aggregate_qps : NAN;
        snprintf(pt->unavailable, sizeof pt->unavailable, "%s",
                 !inter ? "no collocation figures were computed"
                 : isfinite(inter->aggregate_qps) ? "" : inter->unavailable);
    }
    pt->aggregate_images_per_s = all_img && isfinite(pt->aggregate_qps) ? img : NAN;
    if (isolated) {
        /* One baseline per pipeline as written: replicas share theirs. */
        double iq = 0, ii = 0;
        bool ok = true, iso_img = true;
        for (size_t p = 0; p < n && ok; p++) {
            if (p > 0 && spec->pipelines[p].src_index == spec->pipelines[p - 1].src_index) continue;
            double a, b;
            if (!isolated[p] || rates(isolated[p], 0, &a, &b) != 0 || !(a > 0)) {
                ok = false;
                break;
            }
            iq += a;
            if (isfinite(b)) ii += b;
            else iso_img = false;
        }
        if (ok) {
            pt->isolated_qps = iq;
            pt->isolated_images_per_s = iso_img ? ii : NAN;
            if (isfinite(pt->aggregate_images_per_s) && iso_img && ii > 0)
                pt->relative = pt->aggregate_images_per_s / ii;
            else if (iq > 0) pt->relative = pt->aggregate_qps / iq; /* NaN stays NaN */
            if (isfinite(pt->relative)) snprintf(pt->relative_to, sizeof pt->relative_to, "baseline");
        }
    }
    if (inter && inter->have_baseline) {
        pt->stp = inter->stp;
        pt->antt = inter->antt;
        pt->fairness = inter->fairness;
        double lo = INFINITY, hi = -INFINITY, sum = 0;
        size_t k = 0;
        for (size_t p = 0; p < n; p++) {
            double s = pt->pipelines[p].slowdown;
            if (!isfinite(s)) continue;
            lo = s < lo ? s : lo;
            hi = s > hi ? s : hi;
            sum += s;
            k++;
        }
        if (k) {
            pt->slowdown_min = lo;
            pt->slowdown_max = hi;
            pt->slowdown_mean = sum / (double)k;
        }
    }
    return CB_OK;
}

void cb_sweep_relative_to_x1(cb_sweep_point *pts, size_t n, bool single_source) {
    if (!single_source) return;
    for (size_t i = 0; i < n; i++) {
        cb_sweep_point *p = &pts[i];
        if (p->status != CB_SWEEP_OK || isfinite(p->relative)) continue;
        for (size_t k = 0; k < n; k++) {
            const cb_sweep_point *r = &pts[k];
            if (r->status != CB_SWEEP_OK || r->replicas != 1 || r->n_pipelines != 1 ||
                strcmp(r->mode, p->mode) != 0)
                continue;
            if (isfinite(p->aggregate_images_per_s) && r->aggregate_images_per_s > 0)
                p->relative = p->aggregate_images_per_s / r->aggregate_images_per_s;
            else if (r->aggregate_qps > 0)
                p->relative = p->aggregate_qps / r->aggregate_qps;
            if (isfinite(p->relative)) snprintf(p->relative_to, sizeof p->relative_to, "%s", r->dir);
            break;
        }
    }
}

static void csv_num(FILE *out, double v) {
    if (isfinite(v)) fprintf(out, ",%.6g", v);
    else fputc(',', out);
}

int cb_sweep_write_csv(const cb_sweep_point *pts, size_t n, FILE *out) {
    fputs("mode,replicas,dir,status,pipelines,aggregate_qps,aggregate_images_per_s,isolated_qps,"
          "isolated_images_per_s,relative,relative_to,stp,antt,fairness,slowdown_min,slowdown_mean,"
          "slowdown_max\n", out);
    for (size_t i = 0; i < n; i++) {
        const cb_sweep_point *p = &pts[i];
        fprintf(out, "%s,%d,%s,%s,%zu", p->mode, p->replicas, p->dir, cb_sweep_status_name(p->status),
                p->n_pipelines);
        const double v[] = {p->aggregate_qps, p->aggregate_images_per_s, p->isolated_qps,
                            p->isolated_images_per_s, p->relative};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) csv_num(out, v[k]);
        fprintf(out, ",%s", p->relative_to); /* baseline | MODE-x1: no comma, no quote */
        const double w[] = {p->stp, p->antt, p->fairness, p->slowdown_min, p->slowdown_mean,
                            p->slowdown_max};
        for (size_t k = 0; k < sizeof w / sizeof w[0]; k++) csv_num(out, w[k]);
        fputc('\n', out);
    }
    return ferror(out) ? CB_EIO : CB_OK;
}

static void json_num(cb_json *j, const char *key, double v) {
    cb_json_key(j, key);
    cb_json_double(j, v); /* NaN: null */
}

int cb_sweep_write_json(const char *benchmark, const cb_sweep_point *pts, size_t n, FILE *out) {
    cb_json j;
    cb_json_init(&j, out, 2);
    cb_json_object_begin(&j);
    cb_json_key(&j, "benchmark");
    cb_json_string(&j, benchmark);
    cb_json_key(&j, "points");
    cb_json_array_begin(&j);
    for (size_t i = 0; i < n; i++) {
        const cb_sweep_point *p = &pts[i];
        cb_json_object_begin(&j);
        cb_json_key(&j, "mode");
        cb_json_string(&j, p->mode);
        cb_json_key(&j, "replicas");
        cb_json_int(&j, p->replicas);
        cb_json_key(&j, "dir");
        cb_json_string(&j, p->dir);
        cb_json_key(&j, "status");
        cb_json_string(&j, cb_sweep_status_name(p->status));
        cb_json_key(&j, "n_pipelines");
        cb_json_uint(&j, p->n_pipelines);
        json_num(&j, "aggregate_qps", p->aggregate_qps);
        json_num(&j, "aggregate_images_per_s", p->aggregate_images_per_s);
        json_num(&j, "isolated_qps", p->isolated_qps);
        json_num(&j, "isolated_images_per_s", p->isolated_images_per_s);
        json_num(&j, "relative", p->relative);
        cb_json_key(&j, "relative_to");
        cb_json_string(&j, p->relative_to[0] ? p->relative_to : NULL);
        json_num(&j, "stp", p->stp);
        json_num(&j, "antt", p->antt);
        json_num(&j, "fairness", p->fairness);
        cb_json_key(&j, "unavailable");
        cb_json_string(&j, p->unavailable[0] ? p->unavailable : NULL);
        cb_json_key(&j, "slowdown");
        cb_json_object_begin(&j);
        json_num(&j, "min", p->slowdown_min);
        json_num(&j, "mean", p->slowdown_mean);
        json_num(&j, "max", p->slowdown_max);
        cb_json_object_end(&j);
        cb_json_key(&j, "pipelines");
        cb_json_array_begin(&j);
        for (size_t k = 0; k < p->n_pipelines; k++) {
            const cb_sweep_pipeline *sp = &p->pipelines[k];
            cb_json_object_begin(&j);
            cb_json_key(&j, "name");
            cb_json_string(&j, sp->name);
            json_num(&j, "throughput_qps", sp->qps);
            json_num(&j, "images_per_s", sp->images_per_s);
            json_num(&j, "slowdown", sp->slowdown);
            cb_json_object_end(&j);
        }
        cb_json_array_end(&j);
        cb_json_object_end(&j);
    }
    cb_json_array_end(&j);
    cb_json_object_end(&j);
    return cb_json_finish(&j);
}

static const char *fmt(char *buf, size_t n, const char *f, double v) {
    if (!isfinite(v)) return "-";
    snprintf(buf, n, f, v);
    return buf;
}

void cb_sweep_print_table(const cb_sweep_point *pts, size_t n, FILE *out) {
    bool images = false, any_x1 = false;
    for (size_t i = 0; i < n; i++) images |= isfinite(pts[i].aggregate_images_per_s);
    fprintf(out, "sweep: %zu point%s (x: replicas; vs iso: aggregate throughput over the isolated "
                 "pipelines')\n", n, n == 1 ? "" : "s");
    fprintf(out, "  %-10s %4s %9s %12s", "mode", "x", "pipelines", "aggr q/s");
    if (images) fprintf(out, " %12s", "aggr img/s");
    fprintf(out, " %7s %6s %6s %8s %21s\n", "vs iso", "STP", "ANTT", "fairness", "slowdown min/mean/max");
    for (size_t i = 0; i < n; i++) {
        const cb_sweep_point *p = &pts[i];
        char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32], k[32], sl[80], rel[40];
        if (p->status == CB_SWEEP_NOT_RUN) {
            fprintf(out, "  %-10s %4d %9s  not run (the sweep was interrupted)\n", p->mode, p->replicas, "-");
            continue;
        }
        snprintf(sl, sizeof sl, "%s/%s/%s", fmt(h, sizeof h, "%.2f", p->slowdown_min),
                 fmt(k, sizeof k, "%.2f", p->slowdown_mean), fmt(a, sizeof a, "%.2f", p->slowdown_max));
        bool vs_x1 = isfinite(p->relative) && strcmp(p->relative_to, "baseline") != 0;
        any_x1 |= vs_x1;
        snprintf(rel, sizeof rel, "%s%s", fmt(b, sizeof b, "%.2f", p->relative),
                 !isfinite(p->relative) ? "" : vs_x1 ? "x*" : "x");
        fprintf(out, "  %-10s %4d %9zu %12s", p->mode, p->replicas, p->n_pipelines,
                fmt(c, sizeof c, "%.1f", p->aggregate_qps));
        if (images) fprintf(out, " %12s", fmt(d, sizeof d, "%.1f", p->aggregate_images_per_s));
        fprintf(out, " %7s %6s %6s %8s %21s%s\n", rel, fmt(e, sizeof e, "%.2f", p->stp),
                fmt(f, sizeof f, "%.2f", p->antt), fmt(g, sizeof g, "%.2f", p->fairness), sl,
                p->status == CB_SWEEP_FAILED        ? "  FAILED"
                : p->status == CB_SWEEP_INTERRUPTED ? "  INTERRUPTED"
                                                    : "");
        if (p->unavailable[0]) fprintf(out, "  %-10s %4s   unavailable: %s\n", "", "", p->unavailable);
    }
    if (any_x1)
        fprintf(out, "  * no baselines: against the same mode's point with 1 replica (one copy alone)\n");
}
