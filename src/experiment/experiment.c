/* experiment/experiment.c - a run end to end (see experiment.h): devices, the output directory,
 * config.yaml and env.json, MPS, the servers (experiment/servers.h: started and ready before the
 * baselines, stopped after the last phase and before summary.json, on every path; a run refuses
 * them without --allow-servers), baselines, the collocated phase, summaries and the trace,
 * sweeps, the child side of a collocated phase, and `colobench summarize`.
 *
 * Exit paths: every phase's outcome is collected in a cb_phase; a phase that could not start
 * (a stop before the start, a child that died while preparing) ends the run, and the top-level
 * summary.json then says which phase stopped it and why (write_stop_summary). Signals: the
 * caller's cb_sigwatch is pointed at this run's cb_phase_ctl for the whole run; a signal that
 * arrives between phases (or between sweep points) stops the run before the next one.
 * Thread-safety: one controlling thread; the signal thread only touches the cb_phase_ctl.
 * Ownership: everything allocated here is released before returning.
 */
#include "experiment/experiment.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/interference.h"
#include "analysis/json.h"
#include "analysis/summary.h"
#include "analysis/sweep.h"
#include "analysis/trace.h"
#include "collocate/barrier.h"
#include "collocate/mps.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/runtime.h"
#include "experiment/child.h"
#include "experiment/env.h"
#include "experiment/outdir.h"
#include "experiment/phase.h"
#include "experiment/servers.h"
#include "monitor/monitor.h"
#include "monitor/nvml.h"
#include "record/recorder.h"

#ifndef CB_VERSION
#define CB_VERSION "unknown"
#endif

#define MAX_SWEEP_SETS 64

static void say(const cb_experiment_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One message line; control characters (from a config, a data file, a stage's message) are
 * shown escaped. */
static void say(const cb_experiment_opts *o, const char *fmt, ...) {
    FILE *f = o->msg ? o->msg : stderr;
    char line[4096], shown[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    cb_error_escape(shown, sizeof shown, line);
    fprintf(f, "colobench: %s\n", shown);
}

static void say_error(const cb_experiment_opts *o, const cb_error *e) {
    char buf[2048];
    cb_error_format(e, buf, sizeof buf);
    say(o, "%s", buf);
}

/* ---- files of the run directory ------------------------------------------------------------ */

static int write_config(void *arg, FILE *f, cb_error *err) {
    return cb_spec_write_yaml(arg, f) == CB_OK ? CB_OK : cb_error_set(err, CB_EIO, "cannot format");
}

typedef struct env_ctx {
    const cb_experiment_opts *o;
    int64_t wall_ns;
} env_ctx;

static int write_env(void *arg, FILE *f, cb_error *err) {
    env_ctx *c = arg;
    /* The shared objects this run loads on its own decision: plugins, and the NVML library the
     * monitors and the device check open. */
    cb_env_library libs[64];
    size_t n = 0;
    const cb_bench *b = c->o->bench;
    for (size_t i = 0; b && i < cb_registry_n_plugins(b->reg) && n < 63; i++)
        libs[n++] = (cb_env_library){cb_registry_plugin_path(b->reg, i), "plugin"};
    const char *nv = getenv("COLOBENCH_NVML_LIBRARY");
    if (nv && *nv)
        libs[n++] = (cb_env_library){nv, "nvml (COLOBENCH_NVML_LIBRARY)"};
    else if (b && b->spec->monitors.nvml_library)
        libs[n++] = (cb_env_library){b->spec->monitors.nvml_library, "nvml (monitors.nvml_library)"};
    return cb_env_write_json(f, c->wall_ns, c->o->argc, c->o->argv, libs, n, err);
}

/* What summary.json gets after "pipelines": the collocation block, the baseline's identity, the
 * monitors over the measurement windows. */
typedef struct extra_ctx {
    const cb_interference *inter;
    const cb_phase *ph;
    const cb_spec *spec;          /* baselines: the whole benchmark, and */
    size_t baseline_of;           /* the pipeline (replica 1) this baseline ran */
    const cb_summary_input *in;
    const cb_servers *servers;    /* the run's servers (stopped by now), or NULL */
} extra_ctx;

static void extra_json(void *arg, cb_json *j) {
    extra_ctx *x = arg;
    if (x->inter) cb_interference_json(x->inter, j);
    if (x->servers) {
        cb_json_key(j, "servers");
        cb_servers_json(x->servers, j);
    }
    if (x->spec) {
        const cb_pipeline_spec *p = &x->spec->pipelines[x->baseline_of];
        cb_json_key(j, "baseline");
        cb_json_object_begin(j);
        cb_json_key(j, "pipeline");
        cb_json_string(j, p->base_name ? p->base_name : p->name);
        cb_json_key(j, "ran_as");
        cb_json_string(j, p->name);
        cb_json_key(j, "used_by");
        cb_json_array_begin(j);
        for (int r = 0; r < (p->n_replicas > 0 ? p->n_replicas : 1); r++)
            cb_json_string(j, x->spec->pipelines[x->baseline_of + (size_t)r].name);
        cb_json_array_end(j);
        cb_json_object_end(j);
    }
    if (x->ph && x->ph->started) {
        /* What recording cost the run beyond the hot path: when records were made faster than
         * they could be written, producer threads waited (core/ring.h). */
        cb_json_key(j, "recording");
        cb_json_object_begin(j);
        cb_json_key(j, "stall_ns");
        cb_json_int(j, x->ph->record_stall_ns);
        cb_json_object_end(j);
    }
    if (x->ph && x->ph->monitor) {
        /* Windows: the measurement window (first to last measured query of any pipeline), then
         * each pipeline's own: the summary's windows (relative to t0) made absolute. */
        const cb_spec *v = &x->ph->view;
        size_t n = v->n_pipelines < 64 ? v->n_pipelines : 64;
        cb_monitor_window w[1 + 64];
        size_t nw = 1;
        w[0].name = NULL;
        w[0].start_ns = INT64_MAX;
        w[0].end_ns = INT64_MIN;
        for (size_t i = 0; i < n; i++) {
            /* One pass over the queries (the summary's window definition), not the stages. */
            bool has = false;
            if (cb_pipeline_window(x->in, i, &w[nw].start_ns, &w[nw].end_ns, &has, NULL) != CB_OK || !has)
                continue;
            w[nw].name = v->pipelines[i].name;
            if (w[nw].start_ns < w[0].start_ns) w[0].start_ns = w[nw].start_ns;
            if (w[nw].end_ns > w[0].end_ns) w[0].end_ns = w[nw].end_ns;
            nw++;
        }
        if (w[0].start_ns == INT64_MAX) {
            w[0].start_ns = x->ph->t0_ns;
            w[0].end_ns = x->ph->end_ns;
        }
        cb_json_key(j, "monitors");
        cb_monitor_summary_json(x->ph->monitor, w, nw, j);
    }
}

static int write_summary_fn(void *arg, FILE *f, cb_error *err) {
    return cb_summary_write_json(arg, f, err);
}

static int write_summary(const char *dir, cb_summary_input *in, cb_error *err) {
    return cb_outdir_write_file(dir, "summary.json", write_summary_fn, in, err);
}

static int write_trace_fn(void *arg, FILE *f, cb_error *err) { return cb_trace_write(arg, f, err); }

static int write_trace(const char *dir, const cb_phase *ph, bool in_process, cb_error *err) {
    char metrics[CB_PATH_MAX];
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", dir);
    cb_trace_input ti;
    memset(&ti, 0, sizeof ti);
    ti.spec = &ph->view;
    ti.t0_ns = ph->t0_ns;
    ti.pipelines = ph->records;
    ti.pids = in_process ? NULL : ph->pids;
    ti.metrics_csv = ph->monitor ? metrics : NULL;
    ti.max_slices = (size_t)ph->view.trace.max_slices;
    return cb_outdir_write_file(dir, "trace.json", write_trace_fn, &ti, err);
}

/* The top-level summary.json of a run that stopped before its collocated phase produced one:
 * what ran, what stopped it. */
typedef struct stop_ctx {
    const cb_spec *spec;
    const char *stage;            /* "devices", "baselines", "collocated", ... */
    bool interrupted;
    const char *const *errors;
    size_t n_errors;
    const char *const *baselines; /* completed baseline directories */
    size_t n_baselines;
    char msg[1024];               /* the one error, when set through stop_for */
    const char *msg_ptr;
    const cb_servers *servers;    /* the run's servers (stopped by now), or NULL */
} stop_ctx;

/* The run stops in `stage`: because of err (a phase that could not run; NULL for a stop
 * request), interrupted or not. Returns the run's status. */
static int stop_for(stop_ctx *s, const char *stage, const cb_error *err, int rc, bool interrupted) {
    s->stage = stage;
    s->interrupted = interrupted;
    if (err && err->code != CB_OK) {
        cb_error_format(err, s->msg, sizeof s->msg);
        s->msg_ptr = s->msg;
        s->errors = &s->msg_ptr;
        s->n_errors = 1;
    }
    return rc == CB_ECONFIG ? CB_ECONFIG : interrupted ? CB_ESTOPPED : rc ? rc : CB_ESTAGE;
}

static int write_stop_fn(void *arg, FILE *f, cb_error *err) {
    stop_ctx *s = arg;
    cb_json j;
    cb_json_init(&j, f, 2);
    cb_json_object_begin(&j);
    cb_json_key(&j, "name");
    cb_json_string(&j, s->spec->name);
    cb_json_key(&j, "colobench_version");
    cb_json_string(&j, CB_VERSION);
    cb_json_key(&j, "completed");
    cb_json_bool(&j, false);
    cb_json_key(&j, "stopped_in");
    cb_json_string(&j, s->stage);
    cb_json_key(&j, "interrupted");
    cb_json_bool(&j, s->interrupted);
    cb_json_key(&j, "timed_out");
    cb_json_bool(&j, false);
    cb_json_key(&j, "errors");
    cb_json_array_begin(&j);
    for (size_t i = 0; i < s->n_errors; i++) cb_json_string(&j, s->errors[i]);
    cb_json_array_end(&j);
    cb_json_key(&j, "baselines_completed");
    cb_json_array_begin(&j);
    for (size_t i = 0; i < s->n_baselines; i++) cb_json_string(&j, s->baselines[i]);
    cb_json_array_end(&j);
    if (s->servers) {
        cb_json_key(&j, "servers");
        cb_servers_json(s->servers, &j);
    }
    cb_json_key(&j, "pipelines");
    cb_json_array_begin(&j);
    cb_json_array_end(&j);
    cb_json_object_end(&j);
    int rc = cb_json_finish(&j);
    return rc ? cb_error_set(err, rc, "summary.json: %s", cb_strerror(rc)) : CB_OK;
}

/* Stops the run's servers (NULL: none); a problem is said. */
static int stop_servers(const cb_experiment_opts *o, cb_servers *servers) {
    cb_error e;
    cb_error_clear(&e);
    if (cb_servers_stop(servers, &e) == CB_OK) return CB_OK;
    say_error(o, &e);
    return CB_EIO;
}

/* A run never replaces its own benchmark file (`colobench run dir/config.yaml -o dir`). */
static int refuse_own_config(const cb_experiment_opts *o, const cb_outdir *od, cb_error *err) {
    char which[64];
    if (!o->bench || !cb_outdir_would_replace(od, o->bench->name, which, sizeof which)) return CB_OK;
    return cb_error_set(err, CB_ECONFIG,
                        "%s: the benchmark file is the output directory's %s, which the run writes: "
                        "choose another output directory (-o)",
                        o->bench->name, which);
}

/* Opens, locks and clears a run's (or a sweep's) directory; on failure the message is said and
 * nothing is left open. CB_OK, CB_ECONFIG (in use, not creatable, the config inside) or CB_EIO. */
static int open_run_dir(const cb_experiment_opts *o, const char *path, cb_outdir *od) {
    cb_error e;
    cb_error_clear(&e);
    int code;
    if ((code = cb_outdir_open(od, path, &e)) != CB_OK || (code = refuse_own_config(o, od, &e)) != CB_OK ||
        (code = cb_outdir_clear(od, &e)) != CB_OK) {
        say_error(o, &e);
        cb_outdir_close(od);
        return code == CB_ECONFIG ? CB_ECONFIG : CB_EIO;
    }
    return CB_OK;
}

/* ---- devices -------------------------------------------------------------------------------- */

/* One device of the benchmark (a pipeline's or a server's, named by key at node n): cuda:N must
 * exist, a MIG instance must resolve (its UUID into mig when given). nv is NULL (nvml_rc and
 * nvml_err say why) when NVML could not be opened. A problem is said with prefix before it. */
static int check_device(const cb_experiment_opts *o, cb_nvml *nv, int nvml_rc, const cb_error *nvml_err,
                        const char *device, bool is_mig, int gpu_index, const cb_node *n, const char *key,
                        char *mig, size_t mig_size, const char *prefix) {
    cb_error pe;
    cb_error_clear(&pe);
    char scratch[96];
    if (nvml_rc != CB_OK) {
        cb_error_set(&pe, CB_ECONFIG, "%s requested, but CUDA devices are unavailable here (%s)", device,
                     nvml_err->msg);
    } else if (is_mig) {
        if (cb_nvml_resolve_mig(nv, device, mig ? mig : scratch, mig ? mig_size : sizeof scratch, &pe) == CB_OK)
            return CB_OK;
    } else if (cb_nvml_check_gpu(nv, gpu_index, &pe) == CB_OK) {
        return CB_OK;
    }
    pe.code = CB_ECONFIG;
    if (n) cb_error_at(&pe, n->file, n->line, n->col);
    cb_error_key(&pe, key);
    char shown[2048];
    cb_error_format(&pe, shown, sizeof shown);
    say(o, "%s%s", prefix, shown);
    return CB_ECONFIG;
}

/* Resolves GPU devices (cuda:N exists, MIG instances exist) of the pipelines and the servers
 * before anything starts; a problem is said with prefix before it ("" for run, "warning: " for
 * validate). */
static int check_devices(const cb_experiment_opts *o, const cb_spec *spec, char (*mig)[96],
                         const char **mig_ptrs, const char *prefix) {
    bool need = false;
    for (size_t i = 0; i < spec->n_pipelines; i++) need |= spec->pipelines[i].gpu_index >= 0;
    for (size_t i = 0; i < spec->n_servers; i++) need |= spec->servers[i].gpu_index >= 0;
    if (!need) return CB_OK;
    const char *lib = getenv("COLOBENCH_NVML_LIBRARY");
    if (!lib || !*lib) lib = spec->monitors.nvml_library;
    cb_nvml *nv = NULL;
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_nvml_open(lib, &nv, &e);
    int code = CB_OK;
    char key[64];
    for (size_t i = 0; i < spec->n_pipelines && code == CB_OK; i++) {
        const cb_pipeline_spec *p = &spec->pipelines[i];
        if (p->gpu_index < 0) continue;
        snprintf(key, sizeof key, "pipelines[%zu].device", p->src_index);
        code = check_device(o, nv, rc, &e, p->device, p->device_is_mig, p->gpu_index, p->device_node, key, mig[i],
                            sizeof mig[i], prefix);
        if (code == CB_OK && p->device_is_mig) mig_ptrs[i] = mig[i];
    }
    for (size_t i = 0; i < spec->n_servers && code == CB_OK; i++) {
        const cb_server_spec *sv = &spec->servers[i];
        if (sv->gpu_index < 0) continue;
        snprintf(key, sizeof key, "servers[%zu].device", i);
        code = check_device(o, nv, rc, &e, sv->device, sv->device_is_mig, sv->gpu_index, sv->device_node, key, NULL,
                            0, prefix);
    }
    cb_nvml_close(nv);
    return code;
}

int cb_experiment_check_devices(const cb_spec *spec, FILE *msg) {
    cb_experiment_opts o;
    memset(&o, 0, sizeof o);
    o.msg = msg;
    size_t np = spec->n_pipelines;
    char(*mig)[96] = cb_calloc(np ? np : 1, sizeof *mig);
    const char **mig_ptrs = cb_calloc(np ? np : 1, sizeof *mig_ptrs);
    int code = mig && mig_ptrs ? check_devices(&o, spec, mig, mig_ptrs, "warning: ") : CB_ENOMEM;
    cb_free(mig);
    cb_free(mig_ptrs);
    return code;
}

/* ---- one run ------------------------------------------------------------------------------- */

/* The outcome of a run, for its sweep point. */
typedef struct run_out {
    cb_sweep_point *point;        /* NULL outside a sweep */
    bool interrupted;
} run_out;

static const char *default_out_dir(const cb_spec *spec, char *buf, size_t size) {
    snprintf(buf, size, "out/%s", spec->name ? spec->name : "run");
    return buf;
}

/* Exit-status class of a phase: CB_OK, CB_ESTOPPED (interrupted), CB_ESTAGE (errors). */
static int phase_status(const cb_phase *ph) {
    if (ph->interrupted) return CB_ESTOPPED;
    if (ph->n_errors > 0 || ph->abandoned) return CB_ESTAGE;
    return CB_OK;
}

static void print_phase_errors(const cb_experiment_opts *o, const char *what, const cb_phase *ph) {
    for (size_t k = 0; k < ph->n_errors; k++) say(o, "%serror: %s", what, ph->errors[k]);
}

/* The collocated phase's results: summary.json (collocation figures against the baselines when
 * iso is given, monitors), trace.json, the tables, the sweep point's figures. Returns the
 * phase's status (CB_OK, CB_ESTOPPED, CB_ESTAGE) or CB_EIO when a file could not be written. */
static int finish_collocated(const cb_experiment_opts *o, const cb_spec *spec, bool in_process, const char *dir,
                             cb_phase *colo, cb_phase *iso, const char *const *bdirs, cb_sweep_point *point,
                             const cb_servers *servers) {
    size_t n = spec->n_pipelines;
    int code = CB_OK;
    cb_error e;
    cb_error_clear(&e);
    cb_summary_input in;
    cb_phase_summary_input(colo, &in);
    const cb_summary_input **isoin = NULL;
    cb_summary_input *isobuf = NULL;
    if (iso) {
        isoin = cb_calloc(n ? n : 1, sizeof *isoin);
        isobuf = cb_calloc(n ? n : 1, sizeof *isobuf);
        for (size_t i = 0; isoin && isobuf && i < n; i++) {
            size_t lead = i - (size_t)(spec->pipelines[i].replica - 1);
            if (lead == i) cb_phase_summary_input(&iso[i], &isobuf[i]);
            isoin[i] = iso[lead].records ? &isobuf[lead] : NULL;
        }
        for (size_t i = 0; isoin && i < n; i++)
            if (!isoin[i]) { /* a baseline is missing: no collocation figures against baselines */
                cb_free(isoin);
                isoin = NULL;
                break;
            }
    }
    bool colloc_block = n > 1 || iso;
    cb_interference_input ii = {cb_colloc_mode_name(spec->collocation.mode),
                                &in,
                                isoin,
                                in_process ? NULL : colo->status_ptrs,
                                in_process ? NULL : colo->pids,
                                colo->barrier_skew_ns,
                                colo->barrier_max_delay_ns,
                                isoin ? bdirs : NULL};
    cb_interference inter;
    memset(&inter, 0, sizeof inter);
    bool have_inter = colloc_block && cb_interference_compute(&ii, &inter) == CB_OK;
    extra_ctx x = {have_inter ? &inter : NULL, colo, NULL, 0, &in, servers};
    in.extra_json = extra_json;
    in.extra_arg = &x;
    if (write_summary(dir, &in, &e) != CB_OK) {
        say_error(o, &e);
        code = CB_EIO;
    }
    if (spec->trace.enabled && write_trace(dir, colo, in_process, &e) != CB_OK) {
        say_error(o, &e);
        code = CB_EIO;
    }
    if (o->out) {
        cb_summary_print_table(&in, o->out);
        if (have_inter) cb_interference_print_table(&inter, o->out);
        if (colo->monitor) {
            int64_t cpu_ns = 0, wall_ns = 0;
            cb_monitor_overhead(colo->monitor, &cpu_ns, &wall_ns);
            fprintf(o->out, "monitors: %.3f%% of one core (%.1f ms CPU over %.1f s)\n",
                    wall_ns > 0 ? 100.0 * (double)cpu_ns / (double)wall_ns : 0.0, (double)cpu_ns / 1e6,
                    (double)wall_ns / 1e9);
        }
        fflush(o->out);
    }
    print_phase_errors(o, "", colo);
    int st = phase_status(colo);
    if (st && (!code || st == CB_ESTOPPED)) code = st;
    if (point) {
        cb_sweep_point_measure(point, &in, isoin, have_inter ? &inter : NULL);
        snprintf(point->mode, sizeof point->mode, "%s", cb_colloc_mode_name(spec->collocation.mode));
    }
    cb_interference_fini(&inter);
    cb_free(isoin);
    cb_free(isobuf);
    return code;
}

static int run_once(const cb_experiment_opts *o, const cb_bench *bench, const char *out_dir,
                    cb_phase_ctl *ctl, run_out *ro) {
    const cb_spec *spec = bench->spec;
    size_t n = spec->n_pipelines;
    int code = CB_OK;
    char(*mig)[96] = cb_calloc(n ? n : 1, sizeof *mig);
    const char **mig_ptrs = cb_calloc(n ? n : 1, sizeof *mig_ptrs);
    cb_phase *iso = cb_calloc(n ? n : 1, sizeof *iso);
    char(*bdir_rel)[256] = cb_calloc(n ? n : 1, sizeof *bdir_rel);
    const char **bdirs = cb_calloc(n ? n : 1, sizeof *bdirs);
    const char **done_baselines = cb_calloc(n ? n : 1, sizeof *done_baselines);
    size_t n_done = 0;
    cb_servers *servers = NULL;
    if (!mig || !mig_ptrs || !iso || !bdir_rel || !bdirs || !done_baselines) {
        say(o, "out of memory");
        code = CB_ENOMEM;
        goto free_out;
    }
    code = check_devices(o, spec, mig, mig_ptrs, "");
    if (code) goto free_out;
    cb_outdir od;
    cb_error e;
    cb_error_clear(&e);
    if ((code = open_run_dir(o, out_dir, &od)) != CB_OK) goto free_out;
    /* config.yaml and env.json first: every run directory has them, whatever happens next. */
    env_ctx ec = {o, cb_clock_wall_ns()};
    if ((code = cb_outdir_write_file(od.path, "config.yaml", write_config, (void *)spec, &e)) ||
        (code = cb_outdir_write_file(od.path, "env.json", write_env, &ec, &e))) {
        say_error(o, &e);
        code = CB_EIO;
        cb_outdir_close(&od);
        goto free_out;
    }
    bool in_process = spec->collocation.mode == CB_COLLOC_THREADS;
    cb_logger log = {CB_LOG_WARN, o->msg};
    stop_ctx stop = {spec, "start", false, NULL, 0, done_baselines, 0, "", NULL, NULL};
    cb_mps *mps = NULL;
    bool any_mps = false;
    for (size_t i = 0; i < n; i++) any_mps |= spec->pipelines[i].mode == CB_COLLOC_MPS;
    for (size_t i = 0; i < spec->n_servers; i++) any_mps |= spec->servers[i].mps;
    if (any_mps) {
        cb_mps_opts mo = CB_MPS_OPTS_DEFAULT;
        mo.log = &log;
        if (cb_mps_acquire(&mo, &mps, &e) != CB_OK) {
            cb_error_key(&e, "collocation.mode");
            const cb_node *cn = spec->collocation.node;
            if (cn) cb_error_at(&e, cn->file, cn->line, cn->col);
            say_error(o, &e);
            code = stop_for(&stop, "mps", &e, CB_ECONFIG, false);
            goto stop_out;
        }
        if (!o->quiet)
            say(o, "mps: %s control daemon (pipe directory %s)",
                cb_mps_started_here(mps) ? "started a private" : "using the running", cb_mps_pipe_dir(mps));
    }
    /* Servers: up and ready before any load, until after the last phase. */
    if (spec->n_servers) {
        stop.servers = NULL;
        cb_servers_opts so = {spec, &od, mps, ctl, o->msg, o->quiet};
        int src = cb_servers_create(&so, &servers, &e);
        if (!src) {
            stop.servers = servers;
            src = cb_servers_start(servers, &e);
        }
        if (src) {
            if (src != CB_ESTOPPED) say_error(o, &e);
            code = stop_for(&stop, "servers", &e, src, src == CB_ESTOPPED);
            goto stop_out;
        }
    }
    cb_phase_opts po;
    memset(&po, 0, sizeof po);
    po.servers = servers;
    po.bench = bench;
    po.in_process = in_process;
    po.exe = o->exe;
    po.mps = mps;
    po.mig_uuids = mig_ptrs;
    po.log = &log;
    po.progress = o->quiet ? 0 : o->progress;
    po.progress_out = o->msg;
    po.ctl = ctl;
    po.monitor = true;
    const char *nvml_env = getenv("COLOBENCH_NVML_LIBRARY");
    po.nvml_library = nvml_env && *nvml_env ? nvml_env : NULL;
    po.drain_timeout_ns = o->drain_timeout_ns;
    po.abandon_timeout_ns = o->abandon_timeout_ns;
    /* Isolated baselines: each pipeline alone, same load, same mode. Replicas of one pipeline
     * are one workload: its baseline runs once (as replica 1) into baseline/NAME and serves
     * every replica. */
    if (spec->collocation.isolated_baseline) {
        for (size_t i = 0; i < n; i++) {
            const cb_pipeline_spec *bp = &spec->pipelines[i];
            const char *base = bp->base_name ? bp->base_name : bp->name;
            snprintf(bdir_rel[i], sizeof bdir_rel[i], "baseline/%s", base);
            bdirs[i] = bdir_rel[i];
        }
        for (size_t i = 0; i < n; i++) {
            const cb_pipeline_spec *bp = &spec->pipelines[i];
            if (bp->replica > 1) continue; /* replica 1's baseline serves it */
            if (cb_phase_ctl_stopped(ctl)) {
                code = stop_for(&stop, "baselines", NULL, CB_ESTOPPED, true);
                goto stop_out;
            }
            if (cb_servers_check(servers, &e) != CB_OK) {
                say_error(o, &e);
                code = stop_for(&stop, "baselines", &e, CB_ESTAGE, false);
                goto stop_out;
            }
            char dir[CB_PATH_MAX];
            if ((code = cb_outdir_mkdir(&od, bdir_rel[i], dir, sizeof dir, &e))) {
                say_error(o, &e);
                code = stop_for(&stop, "baselines", &e, code, false);
                goto stop_out;
            }
            if (!o->quiet) {
                if (bp->n_replicas > 1)
                    say(o, "baseline: pipeline '%s' alone (as '%s', once for its %d replicas)",
                        bp->base_name ? bp->base_name : bp->name, bp->name, bp->n_replicas);
                else
                    say(o, "baseline: pipeline '%s' alone", bp->name);
            }
            po.only = (int)i;
            po.dir = dir;
            int prc = cb_phase_run(&po, &iso[i], &e);
            if (prc != CB_OK) {
                if (prc != CB_ESTOPPED) say_error(o, &e);
                code = stop_for(&stop, "baselines", &e, prc, prc == CB_ESTOPPED || iso[i].interrupted);
                goto stop_out;
            }
            cb_summary_input in;
            cb_phase_summary_input(&iso[i], &in);
            extra_ctx x = {NULL, &iso[i], spec, i, &in, NULL};
            in.extra_json = extra_json;
            in.extra_arg = &x;
            if (write_summary(dir, &in, &e) != CB_OK) {
                say_error(o, &e);
                code = CB_EIO;
            }
            print_phase_errors(o, "baseline: ", &iso[i]);
            done_baselines[n_done++] = bdir_rel[i];
            stop.n_baselines = n_done;
            int st = phase_status(&iso[i]);
            if (st == CB_ESTOPPED) {
                code = stop_for(&stop, "baselines", NULL, CB_ESTOPPED, true);
                goto stop_out;
            }
            if (st && !code) code = st;
        }
    }
    /* The collocated phase. */
    if (cb_phase_ctl_stopped(ctl)) {
        code = stop_for(&stop, "baselines", NULL, CB_ESTOPPED, true);
        goto stop_out;
    }
    if (cb_servers_check(servers, &e) != CB_OK) {
        say_error(o, &e);
        code = stop_for(&stop, "collocated", &e, CB_ESTAGE, false);
        goto stop_out;
    }
    if (!o->quiet && (n > 1 || spec->collocation.isolated_baseline))
        say(o, "%zu pipeline%s collocated (%s)", n, n == 1 ? "" : "s", cb_colloc_mode_name(spec->collocation.mode));
    cb_phase colo;
    po.only = -1;
    po.dir = od.path;
    int prc = cb_phase_run(&po, &colo, &e);
    if (colo.started) {
        /* env.json's wall_start_ns is summary.json's: the collocated phase's t0, taken once. */
        ec.wall_ns = colo.wall_start_ns;
        cb_error ee;
        cb_error_clear(&ee);
        if (cb_outdir_write_file(od.path, "env.json", write_env, &ec, &ee) != CB_OK) {
            say_error(o, &ee);
            if (!code) code = CB_EIO;
        }
    }
    if (prc != CB_OK) {
        if (prc != CB_ESTOPPED) say_error(o, &e);
        code = stop_for(&stop, "collocated", &e, prc, prc == CB_ESTOPPED || colo.interrupted);
        cb_phase_fini(&colo);
        goto stop_out;
    }
    /* The last phase is over: the servers stop before summary.json says how they ended. */
    if (stop_servers(o, servers) != CB_OK && !code) code = CB_EIO;
    {
        int st = finish_collocated(o, spec, in_process, od.path, &colo, spec->collocation.isolated_baseline ? iso : NULL,
                                   bdirs, ro->point, servers);
        if (st && (!code || st == CB_ESTOPPED)) code = st;
        ro->interrupted = colo.interrupted;
        if (colo.interrupted) say(o, "interrupted: results up to the stop are in %s", od.path);
        else if (!o->quiet) say(o, "results in %s", od.path);
    }
    cb_phase_fini(&colo);
    goto release;
stop_out:
    /* Nothing collocated was summarised: the top-level summary says what happened. */
    {
        cb_error se;
        cb_error_clear(&se);
        if (stop.interrupted) ro->interrupted = true;
        if (stop_servers(o, servers) != CB_OK && !code) code = CB_EIO;
        if (cb_outdir_write_file(od.path, "summary.json", write_stop_fn, &stop, &se) != CB_OK)
            say_error(o, &se);
        if (stop.interrupted) say(o, "interrupted (%s): results so far are in %s", stop.stage, od.path);
    }
release:
    cb_servers_destroy(servers); /* stopped by now, on every path above */
    servers = NULL;
    if (mps) {
        if (cb_mps_release(mps, &e) != CB_OK) {
            say_error(o, &e);
            if (!code) code = CB_EIO;
        }
    }
    for (size_t i = 0; i < n; i++) cb_phase_fini(&iso[i]);
    cb_outdir_close(&od);
free_out:
    if (ro->point) ro->point->status = code == CB_OK ? CB_SWEEP_OK : CB_SWEEP_FAILED;
    cb_free(mig);
    cb_free(mig_ptrs);
    cb_free(iso);
    cb_free(bdir_rel);
    cb_free(bdirs);
    cb_free(done_baselines);
    return code;
}

/* ---- sweeps -------------------------------------------------------------------------------- */

typedef struct sweep_files {
    const cb_spec *spec;
    const cb_sweep_point *pts;
    size_t n;
} sweep_files;

static int write_sweep_csv(void *arg, FILE *f, cb_error *err) {
    sweep_files *s = arg;
    return cb_sweep_write_csv(s->pts, s->n, f) == CB_OK ? CB_OK : cb_error_set(err, CB_EIO, "cannot format");
}

static int write_sweep_json(void *arg, FILE *f, cb_error *err) {
    sweep_files *s = arg;
    return cb_sweep_write_json(s->spec->name, s->pts, s->n, f) == CB_OK ? CB_OK
                                                                        : cb_error_set(err, CB_EIO, "cannot format");
}

static int write_sweep(const cb_experiment_opts *o, const char *dir, const cb_spec *spec,
                       const cb_sweep_point *pts, size_t n) {
    sweep_files s = {spec, pts, n};
    cb_error e;
    cb_error_clear(&e);
    if (cb_outdir_write_file(dir, "sweep.csv", write_sweep_csv, &s, &e) != CB_OK ||
        cb_outdir_write_file(dir, "sweep.json", write_sweep_json, &s, &e) != CB_OK) {
        say_error(o, &e);
        return CB_EIO;
    }
    return CB_OK;
}

/* The bench of one sweep point: the benchmark's text with its overrides and the point's. */
static int load_point(const cb_bench *base, const char *const *point_sets, size_t n_point,
                      const char **sets, cb_bench *out, cb_error *err) {
    size_t k = 0;
    for (size_t i = 0; i < base->n_sets; i++) sets[k++] = base->sets[i];
    for (size_t i = 0; i < n_point; i++) sets[k++] = point_sets[i];
    cb_bench_opts bo = {0};
    bo.config_text = base->text;
    bo.config_len = base->text_len;
    bo.config_name = base->name;
    bo.sets = sets;
    bo.n_sets = k;
    bo.allow_plugins = base->allow_plugins;
    bo.allow_servers = base->allow_servers;
    return cb_bench_load(&bo, out, err);
}

/* `sweep:`: every point (mode outermost, then replicas) as an ordinary run into DIR/MODE-xN,
 * with the point's values as overrides (so its children load the same point), then sweep.csv,
 * sweep.json and the table. A point that fails is marked failed and the sweep goes on; a signal
 * stops it after the current point. The mode of a point whose mode is not swept is whatever the
 * point's spec says (one place decides the default: core/spec.c). */
static int run_sweep(const cb_experiment_opts *o, cb_phase_ctl *ctl) {
    const cb_bench *bench = o->bench;
    const cb_spec *spec = bench->spec;
    const cb_sweep_spec *sw = &spec->sweep;
    char dbuf[512];
    const char *out_dir = o->out_dir ? o->out_dir : default_out_dir(spec, dbuf, sizeof dbuf);
    /* Devices are the same at every point: check them once, before anything runs. */
    size_t np = spec->n_pipelines;
    char(*mig)[96] = cb_calloc(np ? np : 1, sizeof *mig);
    const char **mig_ptrs = cb_calloc(np ? np : 1, sizeof *mig_ptrs);
    int code = mig && mig_ptrs ? check_devices(o, spec, mig, mig_ptrs, "") : CB_ENOMEM;
    cb_free(mig);
    cb_free(mig_ptrs);
    if (code) return code;
    cb_outdir od;
    cb_error e;
    cb_error_clear(&e);
    if ((code = open_run_dir(o, out_dir, &od)) != CB_OK) return code;
    /* Sources: the pipelines as written, and whether the sweep's replicas apply to them. */
    size_t n_src = 0;
    size_t src_index[CB_SWEEP_MAX_PIPELINES];
    bool src_swept[CB_SWEEP_MAX_PIPELINES];
    for (size_t i = 0; i < spec->n_pipelines && n_src < CB_SWEEP_MAX_PIPELINES; i++) {
        if (i > 0 && spec->pipelines[i].src_index == spec->pipelines[i - 1].src_index) continue;
        src_index[n_src] = spec->pipelines[i].src_index;
        src_swept[n_src] = !spec->pipelines[i].replicas_set;
        n_src++;
    }
    size_t n_modes = sw->n_modes ? sw->n_modes : 1, n_reps = sw->n_replicas ? sw->n_replicas : 1;
    size_t n = n_modes * n_reps;
    cb_sweep_point *pts = cb_calloc(n, sizeof *pts);
    char(*psets)[1 + CB_SWEEP_MAX_PIPELINES][64] = cb_calloc(n, sizeof *psets);
    size_t *n_psets = cb_calloc(n, sizeof *n_psets);
    const char **sets = cb_calloc(bench->n_sets + 1 + CB_SWEEP_MAX_PIPELINES, sizeof *sets);
    if (!pts || !psets || !n_psets || !sets) {
        say(o, "out of memory");
        code = CB_ENOMEM;
        goto out;
    }
    /* Every point's overrides, and its spec loaded once to name it (mode, replicas). */
    for (size_t m = 0; m < n_modes && !code; m++) {
        for (size_t r = 0; r < n_reps && !code; r++) {
            size_t k = m * n_reps + r;
            int reps = sw->n_replicas ? sw->replicas[r] : 1;
            if (sw->n_modes) snprintf(psets[k][n_psets[k]++], 64, "collocation.mode=%s", cb_colloc_mode_name(sw->modes[m]));
            for (size_t i = 0; sw->n_replicas && i < n_src; i++)
                if (src_swept[i]) snprintf(psets[k][n_psets[k]++], 64, "pipelines.%zu.replicas=%d", src_index[i], reps);
            const char *pp[1 + CB_SWEEP_MAX_PIPELINES];
            for (size_t i = 0; i < n_psets[k]; i++) pp[i] = psets[k][i];
            cb_bench pb;
            if (load_point(bench, pp, n_psets[k], sets, &pb, &e) != CB_OK) {
                say_error(o, &e);
                code = CB_ECONFIG;
                break;
            }
            cb_sweep_point_init(&pts[k], cb_colloc_mode_name(pb.spec->collocation.mode), reps);
            cb_bench_fini(&pb);
        }
    }
    if (code) goto out;
    if (!o->quiet) say(o, "sweep of %zu point%s into %s", n, n == 1 ? "" : "s", od.path);
    bool interrupted = false;
    for (size_t k = 0; k < n; k++) {
        if (cb_phase_ctl_stopped(ctl)) {
            interrupted = true;
            break;
        }
        cb_sweep_point *pt = &pts[k];
        char dir[CB_PATH_MAX];
        if (cb_outdir_mkdir(&od, pt->dir, dir, sizeof dir, &e) != CB_OK) {
            say_error(o, &e);
            pt->status = CB_SWEEP_FAILED;
            code = CB_EIO;
            continue;
        }
        if (!o->quiet)
            say(o, "sweep point %zu/%zu: mode %s, replicas x%d -> %s", k + 1, n, pt->mode, pt->replicas, dir);
        const char *pp[1 + CB_SWEEP_MAX_PIPELINES];
        for (size_t i = 0; i < n_psets[k]; i++) pp[i] = psets[k][i];
        cb_bench pb;
        int pcode;
        run_out ro = {pt, false};
        if (load_point(bench, pp, n_psets[k], sets, &pb, &e) != CB_OK) {
            say_error(o, &e);
            pcode = CB_ECONFIG;
            pt->status = CB_SWEEP_FAILED;
        } else {
            cb_experiment_opts po = *o;
            po.bench = &pb;
            pcode = run_once(&po, &pb, dir, ctl, &ro);
            cb_bench_fini(&pb);
        }
        if (pt->status == CB_SWEEP_NOT_RUN || pcode != CB_OK)
            pt->status = ro.interrupted ? CB_SWEEP_INTERRUPTED : CB_SWEEP_FAILED;
        if (pcode != CB_OK) {
            say(o, "sweep point %s %s", pt->dir, ro.interrupted ? "interrupted" : "failed");
            if (!code || pcode == CB_ESTOPPED) code = pcode == CB_ECONFIG ? CB_ESTAGE : pcode;
        }
        if (ro.interrupted) interrupted = true;
        cb_sweep_relative_to_x1(pts, n, n_src == 1);
        if (write_sweep(o, od.path, spec, pts, n) != CB_OK && !code) code = CB_EIO;
        if (interrupted) break;
    }
    if (interrupted) {
        say(o, "sweep interrupted: the points measured so far are in %s", od.path);
        code = CB_ESTOPPED;
    }
    if (write_sweep(o, od.path, spec, pts, n) != CB_OK && !code) code = CB_EIO;
    if (o->out) cb_sweep_print_table(pts, n, o->out);
    if (!o->quiet) say(o, "sweep results in %s/sweep.csv and sweep.json", od.path);
out:
    cb_outdir_close(&od);
    cb_free(pts);
    cb_free(psets);
    cb_free(n_psets);
    cb_free(sets);
    return code;
}

int cb_experiment_run(const cb_experiment_opts *o) {
    const cb_spec *spec = o->bench->spec;
    if (spec->n_servers && !o->bench->allow_servers) {
        /* Starting a server runs a command the config names: only when the user says so. */
        cb_error e;
        cb_error_clear(&e);
        cb_error_set(&e, CB_ECONFIG,
                     "the benchmark declares %zu server%s to start (%s%s): starting a server runs the "
                     "command the config names; pass --allow-servers if you trust it",
                     spec->n_servers, spec->n_servers == 1 ? "" : "s", spec->servers[0].name,
                     spec->n_servers > 1 ? ", ..." : "");
        const cb_node *sn = spec->servers_node;
        if (sn) cb_error_at(&e, sn->file, sn->line, sn->col);
        cb_error_key(&e, "servers");
        say_error(o, &e);
        return CB_ECONFIG;
    }
    cb_phase_ctl ctl;
    cb_phase_ctl_init(&ctl);
    if (o->signals) cb_sigwatch_set(o->signals, cb_phase_ctl_signal, &ctl);
    int code;
    if (spec->sweep.n_modes || spec->sweep.n_replicas) {
        code = run_sweep(o, &ctl);
    } else {
        char dbuf[512];
        run_out ro = {NULL, false};
        code = run_once(o, o->bench, o->out_dir ? o->out_dir : default_out_dir(spec, dbuf, sizeof dbuf), &ctl, &ro);
        if (ro.interrupted && code == CB_OK) code = CB_ESTOPPED;
    }
    if (o->signals) cb_sigwatch_set(o->signals, NULL, NULL);
    if (cb_phase_ctl_stopped(&ctl) && code == CB_OK) code = CB_ESTOPPED;
    if (ctl.abandoned) {
        if (code == CB_OK) code = CB_ESTAGE;
        if (o->threads_abandoned) *o->threads_abandoned = true;
    }
    cb_phase_ctl_fini(&ctl);
    return code;
}

/* ---- the child side ------------------------------------------------------------------------ */

typedef struct child_ready {
    int fd;
    const cb_spec *view;
    cb_runtime *rt;
} child_ready;

/* The start barrier, from inside cb_runtime_start: ready (with the prepare times), then go. */
static int child_on_ready(void *arg, int64_t *t0_ns, cb_error *err) {
    child_ready *c = arg;
    size_t n = c->view->n_pipelines ? c->view->pipelines[0].n_stages : 0;
    return cb_barrier_child_ready(c->fd, cb_runtime_prepare_ns(c->rt), n, t0_ns, err);
}

/* The child's signal handling: a runtime to stop. */
typedef struct child_sig {
    pthread_mutex_t mu;
    cb_runtime *rt;
    bool stopped;
} child_sig;

static void child_signal(void *arg, int signo, int count) {
    child_sig *c = arg;
    (void)signo;
    pthread_mutex_lock(&c->mu);
    c->stopped = true;
    if (c->rt) cb_runtime_stop(c->rt, count > 1 ? CB_STOP_CANCEL : CB_STOP_DRAIN);
    pthread_mutex_unlock(&c->mu);
}

int cb_experiment_child(int fd, FILE *msg) {
    cb_experiment_opts so;
    memset(&so, 0, sizeof so);
    so.msg = msg;
    cb_error e;
    cb_error_clear(&e);
    cb_sigwatch sw;
    child_sig cs;
    memset(&cs, 0, sizeof cs);
    pthread_mutex_init(&cs.mu, NULL);
    if (cb_sigwatch_start(&sw, &e) != CB_OK) {
        say_error(&so, &e);
        return 1;
    }
    cb_sigwatch_set(&sw, child_signal, &cs);
    cb_child_msg m;
    cb_bench bench;
    memset(&bench, 0, sizeof bench);
    cb_runtime *rt = NULL;
    cb_recorder *rec = NULL;
    int code = 1;
    cb_run_state st;
    memset(&st, 0, sizeof st);
    st.pid = (int)getpid();
    if (cb_child_receive(fd, &m, &e) != CB_OK) {
        say_error(&so, &e);
        goto done_nomsg;
    }
    cb_bench_opts bo = {0};
    bo.config_text = m.config_text;
    bo.config_len = m.config_len;
    bo.config_name = m.config_name;
    bo.sets = m.sets;
    bo.n_sets = m.n_sets;
    bo.allow_plugins = (m.flags & CB_CHILD_ALLOW_PLUGINS) != 0;
    if (cb_bench_load(&bo, &bench, &e) != CB_OK) {
        say_error(&so, &e);
        code = 2;
        goto done;
    }
    if (m.index >= bench.spec->n_pipelines) {
        say(&so, "child: pipeline %u is not in the benchmark", m.index);
        goto done;
    }
    cb_spec view = cb_spec_single(bench.spec, m.index);
    const cb_pipeline_spec *p = &view.pipelines[0];
    if (p->n_cpus) { /* the whole process: its writer thread shares the cpus too */
        cpu_set_t set;
        CPU_ZERO(&set);
        for (size_t i = 0; i < p->n_cpus; i++) CPU_SET(p->cpus[i], &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            say(&so, "pipeline '%s': cannot pin to its cpus: %s", p->name, strerror(errno));
            goto done;
        }
    }
    /* The child's own config.yaml (its pipeline) and env.json (its affinity and CUDA/MPS
     * environment), as a run directory has them. */
    so.argc = 0;
    env_ctx ec = {&so, cb_clock_wall_ns()};
    {
        if (cb_outdir_write_file(m.out_dir, "config.yaml", write_config, &view, &e) != CB_OK ||
            cb_outdir_write_file(m.out_dir, "env.json", write_env, &ec, &e) != CB_OK) {
            say_error(&so, &e);
            goto done;
        }
    }
    if (cb_barrier_child_wait_prepare(fd, &e) != CB_OK) {
        say_error(&so, &e);
        goto done;
    }
    cb_logger log = {CB_LOG_WARN, msg};
    child_ready cr = {fd, &view, NULL};
    cb_runtime_opts ro = CB_RUNTIME_OPTS_DEFAULT;
    ro.spec = &view;
    ro.log = &log;
    ro.on_ready = child_on_ready;
    ro.on_ready_arg = &cr;
    int rc = cb_runtime_create(&ro, &rt, &e);
    cr.rt = rt;
    if (!rc) {
        pthread_mutex_lock(&cs.mu);
        cs.rt = rt;
        if (cs.stopped) cb_runtime_stop(rt, CB_STOP_CANCEL);
        pthread_mutex_unlock(&cs.mu);
        rc = cb_runtime_prepare(rt, &e);
    }
    if (!rc) {
        cb_recorder_opts reco = CB_RECORDER_OPTS_DEFAULT;
        reco.spec = &view;
        reco.out_dir = m.out_dir;
        rc = cb_recorder_create(&reco, &rec, &e);
    }
    if (!rc) rc = cb_runtime_start(rt, cb_recorder_sink(rec), &e);
    if (rc) {
        if (rc != CB_ESTOPPED) say_error(&so, &e);
        code = rc == CB_ECONFIG ? 2 : 1;
        if (rt) {
            cb_runtime_stop(rt, CB_STOP_CANCEL);
            cb_run_result r;
            cb_runtime_join(rt, &r);
            cb_run_result_fini(&r);
        }
        goto done;
    }
    cb_runtime_start_times(rt, &st.t0_ns, &st.wall_start_ns);
    st.started = true;
    if (cb_run_state_write(m.out_dir, "child.state", &st, &e) != CB_OK) say_error(&so, &e);
    bool io_stopped = false;
    while (!cb_runtime_wait(rt, 50000000)) {
        cb_error re;
        cb_error_clear(&re);
        if (!io_stopped && cb_recorder_check(rec, &re) != CB_OK) {
            cb_run_state_add_error(&st, re.msg);
            cb_runtime_stop(rt, CB_STOP_CANCEL);
            io_stopped = true;
        }
    }
    cb_run_result res;
    int jrc = cb_runtime_join(rt, &res);
    pthread_mutex_lock(&cs.mu);
    cs.rt = NULL;
    pthread_mutex_unlock(&cs.mu);
    st.end_ns = res.end_ns;
    st.ended = true;
    st.interrupted = res.stopped && !io_stopped;
    st.timed_out = res.timed_out;
    st.abandoned = res.abandoned;
    for (size_t i = 0; i < res.n_errors; i++) cb_run_state_add_error(&st, res.errors[i]);
    cb_error re;
    cb_error_clear(&re);
    if (cb_recorder_stop(rec, &re) != CB_OK && !io_stopped) cb_run_state_add_error(&st, re.msg);
    st.record_stall_ns = cb_recorder_stall_ns(rec);
    /* env.json again, with the run's wall-clock start (its summary's). */
    ec.wall_ns = st.wall_start_ns;
    if (cb_outdir_write_file(m.out_dir, "env.json", write_env, &ec, &e) != CB_OK) cb_run_state_add_error(&st, e.msg);
    /* The child's own summary of its pipeline (the parent writes the phase's). */
    cb_phase ph;
    memset(&ph, 0, sizeof ph);
    if (cb_phase_alloc(&ph, &view, &e) == CB_OK) {
        ph.t0_ns = st.t0_ns;
        ph.end_ns = st.end_ns;
        ph.wall_start_ns = st.wall_start_ns;
        ph.interrupted = st.interrupted;
        ph.timed_out = st.timed_out;
        for (size_t i = 0; i < st.n_errors; i++) cb_phase_add_error(&ph, "%s", st.errors[i]);
        for (size_t s = 0; s < view.pipelines[0].n_stages && res.prepare_ns; s++) ph.prepare_ns[s] = res.prepare_ns[s];
        cb_summary_input in;
        if (cb_phase_point_records(&ph, m.out_dir, true, &e) == CB_OK) {
            cb_phase_summary_input(&ph, &in);
            if (write_summary(m.out_dir, &in, &e) != CB_OK) cb_run_state_add_error(&st, e.msg);
        } else {
            cb_run_state_add_error(&st, e.msg);
        }
    }
    cb_phase_fini(&ph);
    cb_run_result_fini(&res);
    /* The errors are in child.state: the parent reports them (and summarize, if it died). */
    if (cb_run_state_write(m.out_dir, "child.state", &st, &e) != CB_OK) say_error(&so, &e);
    code = st.n_errors > 0 || st.interrupted || st.abandoned ? 1 : 0;
    if (jrc == CB_ESTOPPED) {
        /* Threads are still inside a stage: exit without tearing anything down. */
        cb_sigwatch_set(&sw, NULL, NULL);
        fflush(NULL);
        _exit(code);
    }
done:
    cb_recorder_destroy(rec);
    cb_runtime_destroy(rt);
    cb_bench_fini(&bench);
    cb_child_msg_fini(&m);
done_nomsg:
    cb_sigwatch_set(&sw, NULL, NULL);
    cb_sigwatch_stop(&sw);
    pthread_mutex_destroy(&cs.mu);
    return code;
}

/* ---- summarize ----------------------------------------------------------------------------- */

/* Rebuilds a phase of `view` from what it left in dir: its state file (run.state) or, for
 * children whose parent died, theirs (child.state); the merged CSVs; the raw records. CB_ENOENT
 * when nothing ran there. */
static int rebuild_phase(const char *dir, const cb_spec *view, bool in_process, cb_phase *ph, cb_error *err) {
    int rc = cb_phase_alloc(ph, view, err);
    if (rc) return rc;
    cb_run_state st;
    bool have = cb_run_state_read(dir, "run.state", &st, err) == CB_OK;
    if (!have) memset(&st, 0, sizeof st);
    bool parent_ended = have && st.ended;
    for (size_t i = 0; !in_process && i < view->n_pipelines; i++) {
        const char *name = view->pipelines[i].name;
        char cdir[CB_PATH_MAX];
        snprintf(cdir, sizeof cdir, "%s/pipelines/%s", dir, name);
        cb_run_state cst;
        cb_error ce;
        cb_error_clear(&ce);
        if (cb_run_state_read(cdir, "child.state", &cst, &ce) != CB_OK || !cst.started) {
            cb_phase_add_error(ph, "pipeline '%s': it did not start", name);
            continue;
        }
        if (!have || st.t0_ns == 0) {
            st.t0_ns = cst.t0_ns;
            st.wall_start_ns = cst.wall_start_ns;
            have = true;
        }
        if (cst.end_ns > st.end_ns) st.end_ns = cst.end_ns;
        st.interrupted |= cst.interrupted || !cst.ended;
        st.timed_out |= cst.timed_out;
        st.abandoned |= cst.abandoned;
        ph->pids[i] = cst.pid;
        ph->record_stall_ns += cst.record_stall_ns;
        for (size_t k = 0; !parent_ended && k < cst.n_errors; k++) {
            bool named = !strncmp(cst.errors[k], "pipeline '", 10);
            cb_phase_add_error(ph, "%s%s%s%s", named ? "" : "pipeline '", named ? "" : name, named ? "" : "': ",
                               cst.errors[k]);
        }
        if (!cst.ended) cb_phase_add_error(ph, "pipeline '%s': its run did not end (killed?)", name);
    }
    if (!have || !st.started) {
        if (!have) return cb_error_set(err, CB_ENOENT, "%s: no run.state or child.state: nothing ran here", dir);
    }
    ph->started = true;
    ph->t0_ns = st.t0_ns;
    ph->wall_start_ns = st.wall_start_ns;
    ph->end_ns = st.end_ns > st.t0_ns ? st.end_ns : st.t0_ns;
    ph->interrupted = st.interrupted || !st.ended;
    ph->timed_out = st.timed_out;
    ph->abandoned = st.abandoned;
    if (in_process || parent_ended) ph->record_stall_ns = st.record_stall_ns;
    if (parent_ended || in_process)
        for (size_t k = 0; k < st.n_errors; k++) cb_phase_add_error(ph, "%s", st.errors[k]);
    if (!st.ended)
        cb_phase_add_error(ph, in_process ? "the run did not end (killed?): rebuilt by colobench summarize"
                                          : "the parent process did not finish (killed?): rebuilt by colobench "
                                            "summarize");
    if (!in_process && (rc = cb_phase_merge_csv(view, dir, err)) != CB_OK) return rc;
    return cb_phase_point_records(ph, dir, in_process, err);
}

int cb_experiment_summarize(const char *dir, bool allow_plugins, FILE *out, FILE *msg) {
    cb_experiment_opts so;
    memset(&so, 0, sizeof so);
    so.msg = msg;
    so.out = out;
    so.quiet = true;
    cb_error e;
    cb_error_clear(&e);
    char cfg[CB_PATH_MAX];
    snprintf(cfg, sizeof cfg, "%s/config.yaml", dir);
    cb_bench bench;
    cb_bench_opts bo = {0};
    bo.config_path = cfg;
    bo.allow_plugins = allow_plugins;
    if (cb_bench_load(&bo, &bench, &e) != CB_OK) {
        say_error(&so, &e);
        say(&so, "%s: not a colobench run directory (it needs the config.yaml the run wrote)", dir);
        return CB_ECONFIG;
    }
    /* The lock: a run still writing here is not to be summarised under its feet. */
    cb_outdir od;
    if (cb_outdir_open(&od, dir, &e) != CB_OK) {
        say_error(&so, &e);
        cb_bench_fini(&bench);
        return CB_ECONFIG;
    }
    const cb_spec *spec = bench.spec;
    size_t n = spec->n_pipelines;
    bool in_process = spec->collocation.mode == CB_COLLOC_THREADS;
    cb_phase colo;
    memset(&colo, 0, sizeof colo);
    cb_phase *iso = cb_calloc(n ? n : 1, sizeof *iso);
    char(*bdir_rel)[256] = cb_calloc(n ? n : 1, sizeof *bdir_rel);
    const char **bdirs = cb_calloc(n ? n : 1, sizeof *bdirs);
    int code = iso && bdir_rel && bdirs ? CB_OK : CB_ENOMEM;
    bool have_baselines = spec->collocation.isolated_baseline;
    for (size_t i = 0; !code && have_baselines && i < n; i++) {
        const cb_pipeline_spec *bp = &spec->pipelines[i];
        snprintf(bdir_rel[i], sizeof bdir_rel[i], "baseline/%s", bp->base_name ? bp->base_name : bp->name);
        bdirs[i] = bdir_rel[i];
        if (bp->replica > 1) continue;
        char bdir[CB_PATH_MAX];
        snprintf(bdir, sizeof bdir, "%s/%s", dir, bdir_rel[i]);
        cb_spec view = cb_spec_single(spec, i);
        cb_error be;
        cb_error_clear(&be);
        if (rebuild_phase(bdir, &view, in_process, &iso[i], &be) != CB_OK) {
            say(&so, "baseline of '%s' not rebuilt: %s", bp->name, be.msg);
            cb_phase_fini(&iso[i]);
            have_baselines = false;
            continue;
        }
        cb_summary_input in;
        cb_phase_summary_input(&iso[i], &in);
        extra_ctx x = {NULL, &iso[i], spec, i, &in, NULL};
        in.extra_json = extra_json;
        in.extra_arg = &x;
        if (write_summary(bdir, &in, &e) != CB_OK) {
            say_error(&so, &e);
            code = CB_EIO;
        }
    }
    if (!code) {
        code = rebuild_phase(dir, spec, in_process, &colo, &e);
        if (code) say_error(&so, &e);
    }
    if (!code) {
        int st = finish_collocated(&so, spec, in_process, dir, &colo, have_baselines ? iso : NULL, bdirs, NULL, NULL);
        if (st == CB_EIO) code = CB_EIO;
        else say(&so, "rebuilt %s/summary.json%s", dir, in_process ? "" : " and the merged CSVs");
    }
    cb_phase_fini(&colo);
    for (size_t i = 0; iso && i < n; i++) cb_phase_fini(&iso[i]);
    cb_free(iso);
    cb_free(bdir_rel);
    cb_free(bdirs);
    cb_outdir_close(&od);
    cb_bench_fini(&bench);
    return code == CB_ENOENT ? CB_ECONFIG : code;
}
