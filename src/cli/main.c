/* cli/main.c - the colobench command.
 *
 *   colobench run CONFIG [-o DIR] [--set KEY=VALUE]... [--quiet]
 *   colobench validate CONFIG [--set KEY=VALUE]...
 *   colobench stages [NAME] [--markdown]
 *   colobench graph CONFIG [--dot] [--set KEY=VALUE]...
 *   colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND [ARGS...]
 *   colobench --version | --help
 *
 * Exit status: 0 success, 1 the run failed (a stage error, a write error, an interrupt),
 * 2 bad usage or configuration. Only this file calls exit(); everything below returns errors.
 * Single-threaded except for what cb_run starts.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/interference.h"
#include "analysis/summary.h"
#include "analysis/sweep.h"
#include "analysis/trace.h"
#include "cli/cmd_devices.h"
#include "cli/cmd_monitor.h"
#include "collocate/barrier.h"
#include "collocate/launch.h"
#include "collocate/mps.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/path.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "monitor/monitor.h"
#include "monitor/nvml.h"
#include "record/env.h"

#define CB_EXIT_OK 0
#define CB_EXIT_FAILED 1
#define CB_EXIT_USAGE 2
#define CB_MAX_SETS 64

static const char cb__usage[] =
    "usage: colobench COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  run CONFIG [-o DIR] [--set KEY=VALUE]... [--quiet]\n"
    "                        run a benchmark; results stream into DIR (default out/NAME):\n"
    "                        events.csv, queries.csv, stage_metrics.csv, summary.json,\n"
    "                        config.yaml, env.json\n"
    "                        (a config with `sweep:` runs every point into DIR/MODE-xN\n"
    "                        and writes DIR/sweep.csv and DIR/sweep.json)\n"
    "  validate CONFIG [--set KEY=VALUE]...\n"
    "                        check a benchmark without running it\n"
    "  stages [NAME] [--markdown]\n"
    "                        list stages with their parameters (plugins from\n"
    "                        COLOBENCH_PLUGIN_PATH included)\n"
    "  graph CONFIG [--dot]  print each pipeline's graph as Mermaid (or Graphviz DOT)\n"
    "  devices               the CUDA module and the CUDA devices it sees (exit 1: none,\n"
    "                        and why)\n"
    "  monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND [ARGS...]\n"
    "                        run COMMAND and sample CPU, memory, GPU and perf counters\n"
    "                        into DIR (default out/monitor): metrics.csv, summary.json\n"
    "\n"
    "options:\n"
    "  --set KEY=VALUE       override a config key, e.g. pipelines.0.loadgen.max_queries=50\n"
    "  -o, --output DIR      output directory of `run`\n"
    "  -q, --quiet           no progress line and no summary table\n"
    "  --version             print the version\n"
    "  -h, --help            this help\n"
    "\n"
    "exit status: 0 success, 1 run failed or interrupted, 2 bad usage or configuration\n";

typedef struct cb_cli {
    const char *cmd;
    const char *config;
    const char *name;        /* stages NAME */
    const char *out_dir;
    /* --set options, then (for a sweep point) the point's own overrides */
    const char *sets[CB_MAX_SETS + 1 + CB_SWEEP_MAX_PIPELINES];
    size_t n_sets;
    cb_sweep_point *point;   /* running one point of a sweep: its figures go here, */
    bool *interrupted;       /* and whether SIGINT/SIGTERM stopped it */
    int quiet, dot, markdown;
    int child_index;         /* run --child I (internal: a collocated pipeline's process), -1 */
    int child_fd;            /* --child-fd FD: its end of the start-barrier socket */
    int argc;
    char **argv;
} cb_cli;

static int cb__print_error(const cb_error *e) {
    char buf[2048];
    cb_error_format(e, buf, sizeof buf);
    fprintf(stderr, "colobench: %s\n", buf);
    return e->code == CB_ECONFIG || e->code == CB_ENOENT || e->code == CB_EABI ? CB_EXIT_USAGE
                                                                               : CB_EXIT_FAILED;
}

static int cb__parse_args(int argc, char **argv, cb_cli *cli) {
    memset(cli, 0, sizeof *cli);
    cli->child_index = cli->child_fd = -1;
    cli->argc = argc;
    cli->argv = argv;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cb__usage, stdout);
            exit(CB_EXIT_OK);
        } else if (!strcmp(a, "--version")) {
            printf("colobench %s\n", CB_VERSION);
            exit(CB_EXIT_OK);
        } else if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
            const char *v = a[5] == '=' ? a + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !strchr(v, '=')) {
                fprintf(stderr, "colobench: --set needs KEY=VALUE\n");
                return -1;
            }
            if (cli->n_sets == CB_MAX_SETS) {
                fprintf(stderr, "colobench: at most %d --set options\n", CB_MAX_SETS);
                return -1;
            }
            cli->sets[cli->n_sets++] = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "colobench: %s needs a directory\n", a);
                return -1;
            }
            cli->out_dir = argv[++i];
        } else if (!strcmp(a, "--child") || !strcmp(a, "--child-fd")) {
            /* Internal: set by the collocation launcher when it re-executes colobench. */
            char *end = NULL;
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
            if (i + 1 >= argc || !end || *end || v < 0 || v > 1000000) {
                fprintf(stderr, "colobench: %s needs a non-negative integer\n", a);
                return -1;
            }
            i++;
            if (a[7] == '\0') cli->child_index = (int)v;
            else cli->child_fd = (int)v;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli->quiet = 1;
        } else if (!strcmp(a, "--dot")) {
            cli->dot = 1;
        } else if (!strcmp(a, "--markdown")) {
            cli->markdown = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "colobench: unknown option '%s' (see colobench --help)\n", a);
            return -1;
        } else if (!cli->cmd) {
            cli->cmd = a;
        } else if (!cli->config && !cli->name) {
            if (!strcmp(cli->cmd, "stages"))
                cli->name = a;
            else
                cli->config = a;
        } else {
            fprintf(stderr, "colobench: unexpected argument '%s'\n", a);
            return -1;
        }
    }
    if (!cli->cmd) {
        fputs(cb__usage, stderr);
        return -1;
    }
    return 0;
}

static int cb__registry(cb_registry **reg) {
    cb_error e;
    cb_error_clear(&e);
    if (cb_registry_create(reg, &e) != CB_OK) return cb__print_error(&e);
    const char *env = getenv("COLOBENCH_PLUGIN_PATH");
    if (env && *env && cb_registry_load_path(*reg, env, &e) != CB_OK) {
        cb_error_prefix(&e, "COLOBENCH_PLUGIN_PATH");
        return cb__print_error(&e);
    }
    return CB_EXIT_OK;
}

static int cb__load(const cb_cli *cli, cb_registry *reg, cb_doc **doc, cb_spec **spec) {
    if (!cli->config) {
        fprintf(stderr, "colobench: %s needs a CONFIG file\n", cli->cmd);
        return CB_EXIT_USAGE;
    }
    cb_error e;
    cb_error_clear(&e);
    if (cb_spec_load(cli->config, cli->sets, cli->n_sets, reg, doc, spec, &e) != CB_OK) {
        cb__print_error(&e);
        return CB_EXIT_USAGE;
    }
    return CB_EXIT_OK;
}

/* mkdir -p; then proves the directory is writable by creating and removing a file. */
static int cb__prepare_out_dir(const char *dir) {
    char path[4096];
    int e = cb_path_mkdir_p(dir, path, sizeof path);
    if (e != 0) {
        fprintf(stderr, "colobench: %s: cannot create output directory: %s\n", path, strerror(-e));
        return CB_EXIT_USAGE;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "colobench: %s: output path is not a directory\n", dir);
        return CB_EXIT_USAGE;
    }
    snprintf(path, sizeof path, "%s/.colobench-write-test", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "colobench: %s: output directory is not writable: %s\n", dir,
                strerror(errno));
        return CB_EXIT_USAGE;
    }
    fclose(f);
    remove(path);
    return CB_EXIT_OK;
}

typedef struct cb_start_ctx {
    const cb_cli *cli;
    const cb_spec *spec;
    const char *out_dir;
} cb_start_ctx;

/* Writes path atomically: into path.tmp, then rename. */
static FILE *cb__open_tmp(const char *dir, const char *name, char *tmp, size_t n) {
    snprintf(tmp, n, "%s/%s.tmp", dir, name);
    return fopen(tmp, "w");
}

static int cb__close_tmp(FILE *f, const char *dir, const char *name, const char *tmp, cb_error *err) {
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (bad || rename(tmp, path) != 0)
        return cb_error_set(err, CB_EIO, "%s: cannot write: %s", path, strerror(errno));
    return CB_OK;
}

static int cb__on_start(void *arg, int64_t wall_start_ns, cb_error *err) {
    cb_start_ctx *c = arg;
    char tmp[4096];
    FILE *f = cb__open_tmp(c->out_dir, "config.yaml", tmp, sizeof tmp);
    if (!f) return cb_error_set(err, CB_EIO, "%s: cannot write: %s", tmp, strerror(errno));
    cb_spec_write_yaml(c->spec, f);
    int rc = cb__close_tmp(f, c->out_dir, "config.yaml", tmp, err);
    if (rc) return rc;
    f = cb__open_tmp(c->out_dir, "env.json", tmp, sizeof tmp);
    if (!f) return cb_error_set(err, CB_EIO, "%s: cannot write: %s", tmp, strerror(errno));
    rc = cb_env_write_json(f, wall_start_ns, c->cli->argc, c->cli->argv, err);
    int rc2 = cb__close_tmp(f, c->out_dir, "env.json", tmp, err);
    return rc ? rc : rc2;
}

typedef int (*cb_spec_action_fn)(const cb_cli *cli, const cb_spec *spec);

/* Loads the registry and the benchmark, runs action on it, releases everything. */
static int cb__with_spec(const cb_cli *cli, cb_spec_action_fn action) {
    cb_registry *reg = NULL;
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    int code = cb__registry(&reg);
    if (code) return code;
    code = cb__load(cli, reg, &doc, &spec);
    if (!code) code = action(cli, spec);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    cb_registry_destroy(reg);
    return code;
}

static int cb__validate(const cb_cli *cli, const cb_spec *spec) {
    size_t stages = 0;
    for (size_t i = 0; i < spec->n_pipelines; i++) stages += spec->pipelines[i].n_stages;
    printf("%s: ok: benchmark '%s', %zu pipeline%s, %zu stage%s", cli->config, spec->name,
           spec->n_pipelines, spec->n_pipelines == 1 ? "" : "s", stages, stages == 1 ? "" : "s");
    const cb_sweep_spec *sw = &spec->sweep;
    if (sw->n_modes || sw->n_replicas)
        printf(", sweep of %zu points", (sw->n_modes ? sw->n_modes : 1) * (sw->n_replicas ? sw->n_replicas : 1));
    putchar('\n');
    return CB_EXIT_OK;
}

static int cb__graph(const cb_cli *cli, const cb_spec *spec) {
    int rc = cli->dot ? cb_graph_write_dot(spec, stdout) : cb_graph_write_mermaid(spec, stdout);
    return rc == CB_OK ? CB_EXIT_OK : CB_EXIT_FAILED;
}

/* Writes summary.json (with extra top-level members) into dir. */
static int cb__write_summary(const char *dir, cb_summary_input *in) {
    char tmp[4096];
    FILE *f = cb__open_tmp(dir, "summary.json", tmp, sizeof tmp);
    cb_error se;
    cb_error_clear(&se);
    if (!f || cb_summary_write_json(in, f, &se) != CB_OK ||
        cb__close_tmp(f, dir, "summary.json", tmp, &se) != CB_OK) {
        if (!f) cb_error_set(&se, CB_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        cb__print_error(&se);
        return CB_EIO;
    }
    return CB_OK;
}

/* `run --child I --child-fd FD`: one pipeline of a collocated benchmark, in the process the
 * parent started for it (collocate/launch.h). Waits for permission to prepare, prepares, meets
 * the others at the start barrier, runs with the common t0, and leaves its records (CSV and raw),
 * summary.json and result.txt in its directory. */
static int cb__run_child(const cb_cli *cli, const cb_spec *spec) {
    if ((size_t)cli->child_index >= spec->n_pipelines || cli->child_fd < 0 || !cli->out_dir) {
        fprintf(stderr, "colobench: --child needs a pipeline index, --child-fd and -o\n");
        return CB_EXIT_USAGE;
    }
    cb_spec view = cb_spec_single(spec, (size_t)cli->child_index);
    cb_error e;
    cb_error_clear(&e);
    if (view.pipelines[0].n_cpus) { /* the whole process: its writer thread shares the cpus too */
        cpu_set_t set;
        CPU_ZERO(&set);
        for (size_t i = 0; i < view.pipelines[0].n_cpus; i++) CPU_SET(view.pipelines[0].cpus[i], &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            fprintf(stderr, "colobench: pipeline '%s': cannot pin to its cpus: %s\n",
                    view.pipelines[0].name, strerror(errno));
            return CB_EXIT_FAILED;
        }
    }
    if (cb_barrier_child_wait_prepare(cli->child_fd, &e) != CB_OK) return cb__print_error(&e);
    cb_run_result res;
    cb_launch_child lc = {cli->child_fd, &view, &res};
    cb_start_ctx sc = {cli, &view, cli->out_dir};
    cb_logger log = {CB_LOG_WARN, NULL};
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = &view;
    o.out_dir = cli->out_dir;
    o.log = &log;
    o.handle_signals = true;
    o.on_start = cb__on_start;
    o.on_start_arg = &sc;
    o.on_ready = cb_launch_child_on_ready;
    o.on_ready_arg = &lc;
    o.raw_records = true;
    int rc = cb_run(&o, &res, &e);
    if (rc != CB_OK && !res.recorder) {
        int code = cb__print_error(&e);
        cb_run_result_fini(&res);
        return code;
    }
    if (rc != CB_OK) cb__print_error(&e);
    cb_pipeline_record rec;
    cb_summary_input in;
    cb_run_summary_input(&res, &view, &rec, &in);
    if (cb__write_summary(cli->out_dir, &in) != CB_OK) rc = CB_EIO;
    char path[4096];
    snprintf(path, sizeof path, "%s/result.txt", cli->out_dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "interrupted %d\ntimed_out %d\n", res.interrupted, res.timed_out);
        for (size_t i = 0; i < res.n_errors; i++) fprintf(f, "error %s\n", res.errors[i]);
        fclose(f);
    }
    for (size_t i = 0; i < res.n_errors; i++)
        fprintf(stderr, "colobench: pipeline '%s': error: %s\n", view.pipelines[0].name, res.errors[i]);
    int code = (rc != CB_OK || res.n_errors > 0 || res.interrupted) ? CB_EXIT_FAILED : CB_EXIT_OK;
    cb_run_result_fini(&res);
    return code;
}

/* The summary's extra members of a phase: collocation (when computed) and monitors. */
typedef struct cb_extra {
    const cb_interference *interference;
    const cb_launch_result *phase;
    const cb_spec *view;
    const cb_spec *spec;            /* baselines: the whole benchmark, and */
    size_t baseline_of;             /* the pipeline (replica 1) this baseline ran */
} cb_extra;

static void cb__extra_json(void *arg, cb_json *j) {
    cb_extra *x = arg;
    if (x->interference) cb_interference_json(x->interference, j);
    if (x->spec) {
        /* A baseline: which pipeline as written, run as which, used by which (replicas of one
         * pipeline are the same workload: one baseline serves them all). */
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
    if (x->phase->monitor) {
        /* Windows: the measurement window (first to last measured query of any pipeline),
         * then each pipeline's own. */
        cb_monitor_window w[1 + 64];
        size_t nw = 1;
        w[0].name = NULL;
        w[0].start_ns = INT64_MAX;
        w[0].end_ns = INT64_MIN;
        for (size_t i = 0; i < x->view->n_pipelines && nw < 65; i++) {
            const cb_pipeline_record *r = &x->phase->records[i];
            int64_t warm = x->view->pipelines[i].loadgen.warmup_queries;
            int64_t a = INT64_MAX, b = INT64_MIN;
            for (size_t k = 0; k < r->n_queries; k++) {
                const cb_query_event *q = &r->queries[k];
                if (cb_query_is_warmup(q, warm)) continue;
                if (q->scheduled_ns < a) a = q->scheduled_ns;
                if (q->end_ns > b) b = q->end_ns;
            }
            if (a == INT64_MAX) continue;
            w[nw].name = x->view->pipelines[i].name;
            w[nw].start_ns = a;
            w[nw].end_ns = b;
            nw++;
            if (a < w[0].start_ns) w[0].start_ns = a;
            if (b > w[0].end_ns) w[0].end_ns = b;
        }
        if (w[0].start_ns == INT64_MAX) {
            w[0].start_ns = x->phase->t0_ns;
            w[0].end_ns = x->phase->end_ns;
        }
        cb_json_key(j, "monitors");
        cb_monitor_summary_json(x->phase->monitor, w, nw, j);
    }
}

static int cb__write_trace(const char *dir, const cb_launch_result *ph, bool in_process) {
    char tmp[4096], metrics[4096];
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", dir);
    FILE *f = cb__open_tmp(dir, "trace.json", tmp, sizeof tmp);
    cb_error e;
    cb_error_clear(&e);
    cb_trace_input ti = {0};
    ti.spec = &ph->view;
    ti.t0_ns = ph->t0_ns;
    ti.pipelines = ph->records;
    ti.pids = in_process ? NULL : ph->pids;
    ti.metrics_csv = ph->monitor ? metrics : NULL;
    ti.max_slices = (size_t)ph->view.trace.max_slices;
    if (!f || cb_trace_write(&ti, f, &e) != CB_OK || cb__close_tmp(f, dir, "trace.json", tmp, &e) != CB_OK) {
        if (!f) cb_error_set(&e, CB_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        else remove(tmp);
        cb__print_error(&e);
        return CB_EIO;
    }
    return CB_OK;
}

/* Resolves GPU devices (cuda:N exists, MIG instances exist) before anything starts. */
static int cb__check_devices(const cb_spec *spec, char (*mig)[96], const char **mig_ptrs) {
    bool need = false;
    for (size_t i = 0; i < spec->n_pipelines; i++) need |= spec->pipelines[i].gpu_index >= 0;
    if (!need) return CB_EXIT_OK;
    const char *lib = getenv("COLOBENCH_NVML_LIBRARY");
    if (!lib || !*lib) lib = spec->monitors.nvml_library;
    cb_nvml *nv = NULL;
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_nvml_open(lib, &nv, &e);
    int code = CB_EXIT_OK;
    for (size_t i = 0; i < spec->n_pipelines && code == CB_EXIT_OK; i++) {
        const cb_pipeline_spec *p = &spec->pipelines[i];
        if (p->gpu_index < 0) continue;
        cb_error pe;
        cb_error_clear(&pe);
        if (rc != CB_OK) {
            cb_error_set(&pe, CB_ECONFIG, "%s requested, but CUDA devices are unavailable here (%s)",
                         p->device, e.msg);
        } else if (p->device_is_mig) {
            if (cb_nvml_resolve_mig(nv, p->device, mig[i], sizeof mig[i], &pe) == CB_OK) {
                mig_ptrs[i] = mig[i];
                continue;
            }
            pe.code = CB_ECONFIG;
        } else if (cb_nvml_check_gpu(nv, p->gpu_index, &pe) == CB_OK) {
            continue;
        } else {
            pe.code = CB_ECONFIG;
        }
        const cb_node *n = p->device_node;
        if (n) cb_error_at(&pe, n->file, n->line, n->col);
        char key[64];
        snprintf(key, sizeof key, "pipelines[%zu].device", p->src_index);
        cb_error_key(&pe, key);
        code = cb__print_error(&pe);
    }
    cb_nvml_close(nv);
    return code;
}

/* Runs one phase into dir, writes its summary.json (with extra members) and trace.json. */
static int cb__phase(const cb_launch_opts *common, int only, const char *dir,
                     cb_launch_result *ph, cb_start_ctx *sc) {
    cb_launch_opts lo = *common;
    lo.only = only;
    lo.out_dir = dir;
    lo.on_start = cb__on_start;
    lo.on_start_arg = sc;
    cb_error e;
    cb_error_clear(&e);
    int r = cb_launch(&lo, ph, &e);
    if (r != CB_OK) {
        int code = cb__print_error(&e);
        return code == CB_EXIT_OK ? CB_EXIT_FAILED : code;
    }
    return CB_EXIT_OK;
}

static int cb__sweep(const cb_cli *cli, const cb_spec *spec);

/* -o DIR, or out/NAME (in buf). */
static const char *cb__out_dir(const cb_cli *cli, const cb_spec *spec, char *buf, size_t size) {
    if (cli->out_dir) return cli->out_dir;
    snprintf(buf, size, "out/%s", spec->name ? spec->name : "run");
    return buf;
}

/* Blocks SIGINT and SIGTERM (sigs), keeping the previous mask in old. */
static void cb__block_stop_signals(sigset_t *sigs, sigset_t *old) {
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, sigs, old);
}

static int cb__run(const cb_cli *cli, const cb_spec *spec) {
    if (cli->child_index >= 0) return cb__run_child(cli, spec);
    if (!cli->point && (spec->sweep.n_modes || spec->sweep.n_replicas)) return cb__sweep(cli, spec);
    char default_dir[512];
    const char *out_dir = cb__out_dir(cli, spec, default_dir, sizeof default_dir);
    size_t n = spec->n_pipelines;
    char(*mig)[96] = cb_calloc(n, sizeof *mig);
    const char **mig_ptrs = cb_calloc(n, sizeof *mig_ptrs);
    cb_launch_result *iso = cb_calloc(n, sizeof *iso);
    if (!mig || !mig_ptrs || !iso) {
        cb_free(mig);
        cb_free(mig_ptrs);
        cb_free(iso);
        fprintf(stderr, "colobench: out of memory\n");
        return CB_EXIT_FAILED;
    }
    /* SIGINT/SIGTERM stay blocked for the whole command: each phase takes them with
     * sigtimedwait (stop the load, drain, keep the results), and one that arrives between
     * phases is seen by the next phase or below, never kills colobench before it has stopped
     * what it started (a private MPS daemon). */
    sigset_t sigs, oldsigs;
    cb__block_stop_signals(&sigs, &oldsigs);
    int code = cb__check_devices(spec, mig, mig_ptrs);
    if (!code) code = cb__prepare_out_dir(out_dir);
    cb_mps *mps = NULL;
    bool any_mps = false;
    for (size_t i = 0; i < n; i++) any_mps |= spec->pipelines[i].mode == CB_COLLOC_MPS;
    cb_logger log = {CB_LOG_WARN, NULL};
    if (!code && any_mps) {
        cb_mps_opts mo = CB_MPS_OPTS_DEFAULT;
        mo.log = &log;
        cb_error e;
        cb_error_clear(&e);
        if (cb_mps_acquire(&mo, &mps, &e) != CB_OK) {
            cb_error_key(&e, "collocation.mode");
            const cb_node *cn = spec->collocation.node;
            if (cn) cb_error_at(&e, cn->file, cn->line, cn->col);
            e.code = CB_ECONFIG;
            code = cb__print_error(&e);
        } else if (!cli->quiet) {
            fprintf(stderr, "colobench: mps: %s control daemon (pipe directory %s)\n",
                    cb_mps_started_here(mps) ? "started a private" : "using the running",
                    cb_mps_pipe_dir(mps));
        }
    }
    bool in_process = spec->collocation.mode == CB_COLLOC_THREADS;
    cb_launch_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.spec = spec;
    lo.in_process = in_process;
    lo.exe = "/proc/self/exe";
    lo.config = cli->config;
    lo.sets = cli->sets;
    lo.n_sets = cli->n_sets;
    lo.mps = mps;
    lo.mig_uuids = mig_ptrs;
    lo.log = &log;
    lo.progress = cli->quiet ? 0 : isatty(STDERR_FILENO) ? 2 : 1;
    lo.handle_signals = true;
    lo.monitor = true;
    const char *nvml_env = getenv("COLOBENCH_NVML_LIBRARY");
    lo.nvml_library = nvml_env && *nvml_env ? nvml_env : NULL;
    /* Isolated baselines: each pipeline alone, same load, same mode. */
    /* Replicas of one pipeline are one workload: its baseline runs once (as replica 1) into
     * baseline/NAME and serves every replica. */
    const char **bdirs = cb_calloc(n, sizeof *bdirs);
    char(*bdir_buf)[256] = cb_calloc(n, sizeof *bdir_buf);
    if (!bdirs || !bdir_buf) {
        fprintf(stderr, "colobench: out of memory\n");
        code = CB_EXIT_FAILED;
    }
    bool stop = code != CB_EXIT_OK;
    if (!stop && spec->collocation.isolated_baseline) {
        for (size_t i = 0; i < n && !stop; i++) {
            const cb_pipeline_spec *bp = &spec->pipelines[i];
            const char *base = bp->base_name ? bp->base_name : bp->name;
            snprintf(bdir_buf[i], sizeof bdir_buf[i], "baseline/%s", base);
            bdirs[i] = bdir_buf[i];
            if (bp->replica > 1) continue; /* replica 1's baseline serves it */
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/baseline/%s", out_dir, base);
            if ((code = cb__prepare_out_dir(dir))) break;
            if (!cli->quiet) {
                if (bp->n_replicas > 1)
                    fprintf(stderr, "colobench: baseline: pipeline '%s' alone (as '%s', once for its %d replicas)\n",
                            base, bp->name, bp->n_replicas);
                else
                    fprintf(stderr, "colobench: baseline: pipeline '%s' alone\n", bp->name);
            }
            cb_start_ctx sc = {cli, spec, dir};
            if ((code = cb__phase(&lo, (int)i, dir, &iso[i], &sc))) break;
            cb_summary_input in;
            cb_launch_summary_input(&iso[i], &in);
            cb_extra x = {NULL, &iso[i], &iso[i].view, spec, i};
            in.extra_json = cb__extra_json;
            in.extra_arg = &x;
            if (cb__write_summary(dir, &in) != CB_OK) code = CB_EXIT_FAILED;
            for (size_t k = 0; k < iso[i].n_errors; k++)
                fprintf(stderr, "colobench: baseline '%s': error: %s\n", spec->pipelines[i].name, iso[i].errors[k]);
            if (iso[i].interrupted) {
                fprintf(stderr, "colobench: interrupted during the baselines: results so far are in %s\n", out_dir);
                code = CB_EXIT_FAILED;
            }
            stop = code != CB_EXIT_OK;
        }
    }
    /* The collocated run. */
    cb_launch_result colo;
    memset(&colo, 0, sizeof colo);
    if (!stop) {
        if (!cli->quiet && (n > 1 || spec->collocation.isolated_baseline))
            fprintf(stderr, "colobench: %zu pipeline%s collocated (%s)\n", n, n == 1 ? "" : "s",
                    cb_colloc_mode_name(spec->collocation.mode));
        cb_start_ctx sc = {cli, spec, out_dir};
        code = cb__phase(&lo, -1, out_dir, &colo, &sc);
        stop = code != CB_EXIT_OK;
    }
    if (!stop) {
        cb_summary_input in;
        cb_launch_summary_input(&colo, &in);
        const cb_summary_input **isoin = NULL;
        cb_summary_input *isobuf = NULL;
        if (spec->collocation.isolated_baseline) {
            isoin = cb_calloc(n, sizeof *isoin);
            isobuf = cb_calloc(n, sizeof *isobuf);
            for (size_t i = 0; isoin && isobuf && i < n; i++) {
                size_t lead = i - (size_t)(spec->pipelines[i].replica - 1);
                if (lead == i) cb_launch_summary_input(&iso[i], &isobuf[i]);
                isoin[i] = &isobuf[lead];
            }
        }
        bool colloc_block = n > 1 || spec->collocation.isolated_baseline;
        cb_interference_input ii = {cb_colloc_mode_name(spec->collocation.mode), &in,
                                    isoin, in_process ? NULL : colo.status_ptrs,
                                    in_process ? NULL : colo.pids, colo.barrier_skew_ns,
                                    colo.barrier_max_delay_ns, isoin ? bdirs : NULL};
        cb_interference inter;
        memset(&inter, 0, sizeof inter);
        bool have_inter = colloc_block && cb_interference_compute(&ii, &inter) == CB_OK;
        cb_extra x = {have_inter ? &inter : NULL, &colo, &colo.view, NULL, 0};
        in.extra_json = cb__extra_json;
        in.extra_arg = &x;
        if (cb__write_summary(out_dir, &in) != CB_OK) code = CB_EXIT_FAILED;
        if (spec->trace.enabled && cb__write_trace(out_dir, &colo, in_process) != CB_OK) code = CB_EXIT_FAILED;
        if (!cli->quiet) {
            cb_summary_print_table(&in, stdout);
            if (have_inter) cb_interference_print_table(&inter, stdout);
            if (colo.monitor) {
                int64_t cpu_ns = 0, wall_ns = 0;
                cb_monitor_overhead(colo.monitor, &cpu_ns, &wall_ns);
                printf("monitors: %.3f%% of one core (%.1f ms CPU over %.1f s)\n",
                       wall_ns > 0 ? 100.0 * (double)cpu_ns / (double)wall_ns : 0.0,
                       (double)cpu_ns / 1e6, (double)wall_ns / 1e9);
            }
        }
        for (size_t i = 0; i < colo.n_errors; i++) fprintf(stderr, "colobench: error: %s\n", colo.errors[i]);
        if (colo.interrupted) fprintf(stderr, "colobench: interrupted: results up to the stop are in %s\n", out_dir);
        if (!cli->quiet) fprintf(stderr, "colobench: results in %s\n", out_dir);
        if (colo.n_errors > 0 || colo.interrupted) code = CB_EXIT_FAILED;
        if (cli->point) {
            cb_sweep_point_measure(cli->point, &in, isoin, have_inter ? &inter : NULL);
            snprintf(cli->point->mode, sizeof cli->point->mode, "%s",
                     cb_colloc_mode_name(spec->collocation.mode));
        }
        cb_interference_fini(&inter);
        cb_free(isoin);
        cb_free(isobuf);
    }
    bool was_interrupted = colo.interrupted;
    for (size_t i = 0; i < n; i++) was_interrupted |= iso[i].interrupted;
    cb_launch_result_fini(&colo);
    for (size_t i = 0; i < n; i++) cb_launch_result_fini(&iso[i]);
    if (mps) {
        cb_error e;
        cb_error_clear(&e);
        if (cb_mps_release(mps, &e) != CB_OK) {
            cb__print_error(&e);
            if (!code) code = CB_EXIT_FAILED;
        }
    }
    struct timespec zero = {0, 0};
    while (sigtimedwait(&sigs, NULL, &zero) > 0) {
        fprintf(stderr, "colobench: interrupted\n");
        code = CB_EXIT_FAILED;
        was_interrupted = true;
    }
    if (cli->interrupted) *cli->interrupted = was_interrupted;
    pthread_sigmask(SIG_SETMASK, &oldsigs, NULL);
    if (cli->point) cli->point->status = code == CB_EXIT_OK ? CB_SWEEP_OK : CB_SWEEP_FAILED;
    cb_free(bdirs);
    cb_free(bdir_buf);
    cb_free(iso);
    cb_free(mig);
    cb_free(mig_ptrs);
    return code;
}

/* Writes sweep.csv and sweep.json of the points so far (the rest marked not run). */
static int cb__write_sweep(const char *dir, const cb_spec *spec, const cb_sweep_point *pts, size_t n) {
    char tmp[4096];
    cb_error e;
    cb_error_clear(&e);
    FILE *f = cb__open_tmp(dir, "sweep.csv", tmp, sizeof tmp);
    int rc = f ? cb_sweep_write_csv(pts, n, f) : CB_EIO;
    if (f && cb__close_tmp(f, dir, "sweep.csv", tmp, &e) != CB_OK) rc = CB_EIO;
    FILE *g = cb__open_tmp(dir, "sweep.json", tmp, sizeof tmp);
    int rc2 = g ? cb_sweep_write_json(spec->name, pts, n, g) : CB_EIO;
    if (g && cb__close_tmp(g, dir, "sweep.json", tmp, &e) != CB_OK) rc2 = CB_EIO;
    if (rc || rc2) {
        if (e.code == CB_OK) cb_error_set(&e, CB_EIO, "%s: cannot write the sweep results: %s", dir, strerror(errno));
        cb__print_error(&e);
        return CB_EIO;
    }
    return CB_OK;
}

/* `sweep:`: every point (mode outermost, then replicas) as an ordinary run into DIR/MODE-xN,
 * with the point's values as overrides (so collocated children load the same point), then
 * sweep.csv, sweep.json and the table. A point that fails is marked failed and the sweep goes
 * on; SIGINT/SIGTERM stop it after the current point. */
static int cb__sweep(const cb_cli *cli, const cb_spec *spec) {
    const cb_sweep_spec *sw = &spec->sweep;
    char default_dir[512];
    const char *out_dir = cb__out_dir(cli, spec, default_dir, sizeof default_dir);
    /* Devices are the same at every point: check them once, before anything runs. */
    size_t np = spec->n_pipelines;
    char(*mig)[96] = cb_calloc(np, sizeof *mig);
    const char **mig_ptrs = cb_calloc(np, sizeof *mig_ptrs);
    int code = mig && mig_ptrs ? cb__check_devices(spec, mig, mig_ptrs) : CB_EXIT_FAILED;
    cb_free(mig);
    cb_free(mig_ptrs);
    if (!code) code = cb__prepare_out_dir(out_dir);
    if (code) return code;
    /* Sources: the pipelines as written, and whether the sweep's replicas apply to them. */
    size_t n_src = 0;
    size_t src_index[CB_SWEEP_MAX_PIPELINES];
    bool src_swept[CB_SWEEP_MAX_PIPELINES];
    int src_own[CB_SWEEP_MAX_PIPELINES];
    for (size_t i = 0; i < spec->n_pipelines && n_src < CB_SWEEP_MAX_PIPELINES; i++) {
        if (i > 0 && spec->pipelines[i].src_index == spec->pipelines[i - 1].src_index) continue;
        src_index[n_src] = spec->pipelines[i].src_index;
        src_swept[n_src] = !spec->pipelines[i].replicas_set;
        src_own[n_src] = spec->pipelines[i].n_replicas;
        n_src++;
    }
    const cb_node *cn = spec->collocation.node;
    bool mode_written = cn && cn->kind == CB_NODE_MAP && cb_node_get(cn, "mode");
    size_t n_modes = sw->n_modes ? sw->n_modes : 1, n_reps = sw->n_replicas ? sw->n_replicas : 1;
    size_t n = n_modes * n_reps;
    cb_sweep_point *pts = cb_calloc(n, sizeof *pts);
    if (!pts) {
        fprintf(stderr, "colobench: out of memory\n");
        return CB_EXIT_FAILED;
    }
    for (size_t m = 0; m < n_modes; m++) {
        for (size_t r = 0; r < n_reps; r++) {
            int reps = sw->n_replicas ? sw->replicas[r] : 1;
            cb_colloc_mode mode = spec->collocation.mode;
            if (sw->n_modes) {
                mode = sw->modes[m];
            } else if (!mode_written) { /* the default follows the point's pipeline count */
                size_t total = 0;
                for (size_t k = 0; k < n_src; k++) total += src_swept[k] && sw->n_replicas ? (size_t)reps : (size_t)src_own[k];
                mode = total > 1 ? CB_COLLOC_PROCESSES : CB_COLLOC_THREADS;
            }
            cb_sweep_point_init(&pts[m * n_reps + r], cb_colloc_mode_name(mode), reps);
        }
    }
    /* Signals stay blocked for the whole sweep: a run takes them (stops, keeps its results);
     * one that arrives between points stops the sweep before the next. */
    sigset_t sigs, oldsigs;
    cb__block_stop_signals(&sigs, &oldsigs);
    if (!cli->quiet)
        fprintf(stderr, "colobench: sweep of %zu point%s into %s\n", n, n == 1 ? "" : "s", out_dir);
    bool interrupted = false;
    char sets[1 + CB_SWEEP_MAX_PIPELINES][64];
    for (size_t k = 0; k < n && !interrupted; k++) {
        struct timespec zero = {0, 0};
        if (sigtimedwait(&sigs, NULL, &zero) > 0) {
            interrupted = true;
            break;
        }
        cb_sweep_point *pt = &pts[k];
        cb_cli pc = *cli;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", out_dir, pt->dir);
        pc.out_dir = dir;
        pc.point = pt;
        bool intr = false;
        pc.interrupted = &intr;
        size_t ns = 0;
        if (sw->n_modes) snprintf(sets[ns++], sizeof sets[0], "collocation.mode=%s", pt->mode);
        for (size_t i = 0; sw->n_replicas && i < n_src; i++)
            if (src_swept[i])
                snprintf(sets[ns++], sizeof sets[0], "pipelines.%zu.replicas=%d", src_index[i], pt->replicas);
        for (size_t i = 0; i < ns; i++) pc.sets[pc.n_sets++] = sets[i];
        if (!cli->quiet)
            fprintf(stderr, "colobench: sweep point %zu/%zu: mode %s, replicas x%d -> %s\n", k + 1, n,
                    pt->mode, pt->replicas, dir);
        int pcode = cb__with_spec(&pc, cb__run);
        if (pt->status == CB_SWEEP_NOT_RUN || pcode != CB_EXIT_OK) pt->status = CB_SWEEP_FAILED;
        if (pcode != CB_EXIT_OK) {
            fprintf(stderr, "colobench: sweep point %s failed (exit %d)%s\n", pt->dir, pcode,
                    intr ? ": interrupted" : "");
            code = CB_EXIT_FAILED;
        }
        if (intr) interrupted = true;
        cb_sweep_relative_to_x1(pts, n, n_src == 1);
        if (cb__write_sweep(out_dir, spec, pts, n) != CB_OK) code = CB_EXIT_FAILED;
    }
    if (interrupted) {
        fprintf(stderr, "colobench: sweep interrupted: the points measured so far are in %s\n", out_dir);
        code = CB_EXIT_FAILED;
    }
    if (cb__write_sweep(out_dir, spec, pts, n) != CB_OK) code = CB_EXIT_FAILED;
    if (!cli->quiet) cb_sweep_print_table(pts, n, stdout);
    if (!cli->quiet) fprintf(stderr, "colobench: sweep results in %s/sweep.csv and sweep.json\n", out_dir);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&sigs, NULL, &zero) > 0) code = CB_EXIT_FAILED;
    pthread_sigmask(SIG_SETMASK, &oldsigs, NULL);
    cb_free(pts);
    return code;
}

static int cb__cmd_stages(const cb_cli *cli) {
    cb_registry *reg = NULL;
    int code = cb__registry(&reg);
    if (code) return code;
    cb_error e;
    cb_error_clear(&e);
    if (cli->markdown)
        cb_registry_write_markdown(reg, stdout);
    else if (cb_registry_print(reg, cli->name, stdout, &e) != CB_OK)
        code = cb__print_error(&e) == CB_EXIT_FAILED ? CB_EXIT_FAILED : CB_EXIT_USAGE;
    cb_registry_destroy(reg);
    return code;
}

int main(int argc, char **argv) {
    cb_cli cli;
    if (argc > 1 && !strcmp(argv[1], "monitor")) return cb_cli_monitor(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "devices")) return cb_cli_devices(argc - 1, argv + 1);
    if (cb__parse_args(argc, argv, &cli) != 0) return CB_EXIT_USAGE;
    if (!strcmp(cli.cmd, "run")) return cb__with_spec(&cli, cb__run);
    if (!strcmp(cli.cmd, "validate")) return cb__with_spec(&cli, cb__validate);
    if (!strcmp(cli.cmd, "graph")) return cb__with_spec(&cli, cb__graph);
    if (!strcmp(cli.cmd, "stages")) return cb__cmd_stages(&cli);
    fprintf(stderr, "colobench: unknown command '%s' (run, validate, stages, graph, monitor, devices; see --help)\n",
            cli.cmd);
    return CB_EXIT_USAGE;
}
