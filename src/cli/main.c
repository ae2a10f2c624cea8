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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/summary.h"
#include "cli/cmd_monitor.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/registry.h"
#include "core/runtime.h"
#include "core/spec.h"
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
    "                        events.csv, queries.csv, summary.json, config.yaml, env.json\n"
    "  validate CONFIG [--set KEY=VALUE]...\n"
    "                        check a benchmark without running it\n"
    "  stages [NAME] [--markdown]\n"
    "                        list stages with their parameters (plugins from\n"
    "                        COLOBENCH_PLUGIN_PATH included)\n"
    "  graph CONFIG [--dot]  print each pipeline's graph as Mermaid (or Graphviz DOT)\n"
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
    const char *sets[CB_MAX_SETS];
    size_t n_sets;
    int quiet, dot, markdown;
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
    snprintf(path, sizeof path, "%s", dir);
    size_t len = strlen(path);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] == '/' || path[i] == '\0') {
            char c = path[i];
            path[i] = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST) {
                fprintf(stderr, "colobench: %s: cannot create output directory: %s\n", path,
                        strerror(errno));
                return CB_EXIT_USAGE;
            }
            path[i] = c;
        }
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
    printf("%s: ok: benchmark '%s', %zu pipeline%s, %zu stage%s\n", cli->config, spec->name,
           spec->n_pipelines, spec->n_pipelines == 1 ? "" : "s", stages, stages == 1 ? "" : "s");
    return CB_EXIT_OK;
}

static int cb__graph(const cb_cli *cli, const cb_spec *spec) {
    int rc = cli->dot ? cb_graph_write_dot(spec, stdout) : cb_graph_write_mermaid(spec, stdout);
    return rc == CB_OK ? CB_EXIT_OK : CB_EXIT_FAILED;
}

static int cb__run(const cb_cli *cli, const cb_spec *spec) {
    char default_dir[512];
    const char *out_dir = cli->out_dir;
    if (!out_dir) {
        snprintf(default_dir, sizeof default_dir, "out/%s", spec->name ? spec->name : "run");
        out_dir = default_dir;
    }
    int code = cb__prepare_out_dir(out_dir);
    if (code) return code;

    cb_start_ctx sc = {cli, spec, out_dir};
    cb_logger log = {CB_LOG_WARN, NULL};
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = spec;
    o.out_dir = out_dir;
    o.log = &log;
    o.progress = cli->quiet ? 0 : isatty(STDERR_FILENO) ? 2 : 1;
    o.handle_signals = true;
    o.on_start = cb__on_start;
    o.on_start_arg = &sc;
    cb_run_result res;
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_run(&o, &res, &e);
    if (rc != CB_OK && !res.recorder) {
        code = cb__print_error(&e);
        cb_run_result_fini(&res);
        return code;
    }
    if (rc != CB_OK) cb__print_error(&e);
    cb_pipeline_record *recs = cb_calloc(spec->n_pipelines ? spec->n_pipelines : 1, sizeof *recs);
    cb_summary_input in;
    if (recs) {
        cb_run_summary_input(&res, spec, recs, &in);
        char tmp[4096];
        FILE *f = cb__open_tmp(out_dir, "summary.json", tmp, sizeof tmp);
        cb_error se;
        cb_error_clear(&se);
        if (!f || cb_summary_write_json(&in, f, &se) != CB_OK ||
            cb__close_tmp(f, out_dir, "summary.json", tmp, &se) != CB_OK) {
            if (!f) cb_error_set(&se, CB_EIO, "%s: cannot write: %s", tmp, strerror(errno));
            cb__print_error(&se);
            rc = CB_EIO;
        }
        if (!cli->quiet) cb_summary_print_table(&in, stdout);
    } else {
        rc = CB_ENOMEM;
    }
    for (size_t i = 0; i < res.n_errors; i++) fprintf(stderr, "colobench: error: %s\n", res.errors[i]);
    if (res.interrupted) fprintf(stderr, "colobench: interrupted: results up to the stop are in %s\n", out_dir);
    if (!cli->quiet) fprintf(stderr, "colobench: results in %s\n", out_dir);
    code = (rc != CB_OK || res.n_errors > 0 || res.interrupted) ? CB_EXIT_FAILED : CB_EXIT_OK;
    cb_free(recs);
    cb_run_result_fini(&res);
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
    if (cb__parse_args(argc, argv, &cli) != 0) return CB_EXIT_USAGE;
    if (!strcmp(cli.cmd, "run")) return cb__with_spec(&cli, cb__run);
    if (!strcmp(cli.cmd, "validate")) return cb__with_spec(&cli, cb__validate);
    if (!strcmp(cli.cmd, "graph")) return cb__with_spec(&cli, cb__graph);
    if (!strcmp(cli.cmd, "stages")) return cb__cmd_stages(&cli);
    fprintf(stderr, "colobench: unknown command '%s' (run, validate, stages, graph; see --help)\n",
            cli.cmd);
    return CB_EXIT_USAGE;
}
