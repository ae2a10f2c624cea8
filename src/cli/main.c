/* cli/main.c - the colobench command: parses arguments, calls the layer that does the work,
 * prints, and maps the outcome to an exit status. Every decision lives below (experiment/ for
 * runs, core/ for configs, the registry for stages).
 *
 *   colobench run CONFIG [-o DIR] [--set KEY=VALUE]... [--quiet] [--allow-plugins]
 *   colobench validate CONFIG [--set KEY=VALUE]... [--allow-plugins]
 *   colobench graph CONFIG [--dot] [--set KEY=VALUE]...
 *   colobench summarize DIR
 *   colobench stages [NAME] [--markdown]
 *   colobench monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND [ARGS...]
 *   colobench devices
 *   colobench serve [--model M] [--port P] ...   (cli/cmd_serve.h)
 *   colobench --version | --help
 *
 * Exit status: 0 success, 1 the run failed (a stage error, a write error, an interrupt),
 * 2 bad usage or configuration. Only this file calls exit().
 * Signals: `run` and `monitor` block SIGINT/SIGTERM before any thread exists; one signal thread
 * (experiment/signals.h) reads them.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmd_devices.h"
#include "cli/cmd_monitor.h"
#include "cli/cmd_rag.h"
#include "cli/cmd_serve.h"
#include "core/alloc.h"
#include "core/registry.h"
#include "core/spec.h"
#include "experiment/bench.h"
#include "experiment/experiment.h"
#include "experiment/signals.h"
#include "stages/builtin.h"

#define CB_EXIT_OK 0
#define CB_EXIT_FAILED 1
#define CB_EXIT_USAGE 2

static const char k_usage[] =
    "usage: colobench COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  run CONFIG [-o DIR] [--set KEY=VALUE]... [--quiet] [--allow-plugins] [--allow-servers]\n"
    "                        run a benchmark; results stream into DIR (default out/NAME):\n"
    "                        events.csv, queries.csv, stage_metrics.csv, summary.json,\n"
    "                        config.yaml, env.json (and the raw *.bin records)\n"
    "                        (a config with `sweep:` runs every point into DIR/MODE-xN\n"
    "                        and writes DIR/sweep.csv and DIR/sweep.json)\n"
    "  validate CONFIG [--set KEY=VALUE]... [--allow-plugins]\n"
    "                        check a benchmark without running it\n"
    "  graph CONFIG [--dot]  print each pipeline's graph as Mermaid (or Graphviz DOT)\n"
    "  summarize DIR         rebuild DIR's summary.json (and merged CSVs) from the records a\n"
    "                        run left, e.g. after it was killed\n"
    "  stages [NAME] [--markdown]\n"
    "                        list stages with their parameters (with --allow-plugins, the\n"
    "                        plugins of COLOBENCH_PLUGIN_PATH too)\n"
    "  devices               the CUDA module and the CUDA devices it sees (exit 1: none,\n"
    "                        and why)\n"
    "  monitor [--period MS] [-o DIR] [--sources LIST] -- COMMAND [ARGS...]\n"
    "                        run COMMAND and sample CPU, memory, GPU and perf counters\n"
    "                        into DIR (default out/monitor): metrics.csv, summary.json\n"
    "  serve [--model M] [--host H] [--port P] ...\n"
    "                        serve colobench's LLM engine as an OpenAI-compatible HTTP\n"
    "                        server (colobench serve --help)\n"
    "\n"
    "options:\n"
    "  --set KEY=VALUE       override a config key, e.g. pipelines.0.loadgen.max_queries=50\n"
    "  -o, --output DIR      output directory of `run`\n"
    "  -q, --quiet           no progress line and no summary table\n"
    "  --allow-plugins       let the config load code: its plugin_paths, its\n"
    "                        monitors.nvml_library, and COLOBENCH_PLUGIN_PATH (off by default)\n"
    "  --allow-servers       let the config start the commands of its `servers:` (off by\n"
    "                        default)\n"
    "  --version             print the version\n"
    "  -h, --help            this help\n"
    "\n"
    "signals: the first Ctrl-C stops the load and lets in-flight queries finish, the second\n"
    "cancels them, the third gives up on stage runs that do not return; results so far are\n"
    "always written\n"
    "\n"
    "exit status: 0 success, 1 run failed or interrupted, 2 bad usage or configuration\n";

typedef struct cb_cli {
    const char *cmd;
    const char *arg;           /* CONFIG, DIR or NAME */
    const char *out_dir;
    const char **sets;         /* argc entries */
    size_t n_sets;
    int quiet, dot, markdown, allow_plugins, allow_servers;
    int child_fd;              /* run --child-fd FD (internal: a collocated pipeline's process) */
    int argc;
    char **argv;
} cb_cli;

static int exit_code(int status) {
    if (status == CB_OK) return CB_EXIT_OK;
    if (status == CB_ECONFIG || status == CB_ENOENT || status == CB_EABI) return CB_EXIT_USAGE;
    return CB_EXIT_FAILED;
}

static int print_error(const cb_error *e) {
    char buf[2048];
    cb_error_format(e, buf, sizeof buf);
    fprintf(stderr, "colobench: %s\n", buf);
    return exit_code(e->code ? e->code : CB_EIO);
}

static int parse_args(int argc, char **argv, cb_cli *cli) {
    memset(cli, 0, sizeof *cli);
    cli->child_fd = -1;
    cli->argc = argc;
    cli->argv = argv;
    cli->sets = calloc((size_t)argc + 1, sizeof *cli->sets);
    if (!cli->sets) {
        fprintf(stderr, "colobench: out of memory\n");
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(k_usage, stdout);
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
            cli->sets[cli->n_sets++] = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "colobench: %s needs a directory\n", a);
                return -1;
            }
            cli->out_dir = argv[++i];
        } else if (!strcmp(a, "--child-fd")) {
            /* Internal: set by the collocation parent when it re-executes colobench. */
            char *end = NULL;
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
            if (i + 1 >= argc || !end || *end || v < 0 || v > 1000000) {
                fprintf(stderr, "colobench: %s needs a non-negative integer\n", a);
                return -1;
            }
            i++;
            cli->child_fd = (int)v;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli->quiet = 1;
        } else if (!strcmp(a, "--dot")) {
            cli->dot = 1;
        } else if (!strcmp(a, "--markdown")) {
            cli->markdown = 1;
        } else if (!strcmp(a, "--allow-plugins")) {
            cli->allow_plugins = 1;
        } else if (!strcmp(a, "--allow-servers")) {
            cli->allow_servers = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "colobench: unknown option '%s' (see colobench --help)\n", a);
            return -1;
        } else if (!cli->cmd) {
            cli->cmd = a;
        } else if (!cli->arg) {
            cli->arg = a;
        } else {
            fprintf(stderr, "colobench: unexpected argument '%s'\n", a);
            return -1;
        }
    }
    if (!cli->cmd) {
        fputs(k_usage, stderr);
        return -1;
    }
    return 0;
}

static int load(const cb_cli *cli, cb_bench *b) {
    if (!cli->arg) {
        fprintf(stderr, "colobench: %s needs a CONFIG file\n", cli->cmd);
        return CB_EXIT_USAGE;
    }
    cb_bench_opts o = {0};
    o.config_path = cli->arg;
    o.sets = cli->sets;
    o.n_sets = cli->n_sets;
    o.allow_plugins = cli->allow_plugins;
    o.allow_servers = cli->allow_servers;
    cb_error e;
    cb_error_clear(&e);
    if (cb_bench_load(&o, b, &e) != CB_OK) {
        print_error(&e);
        return CB_EXIT_USAGE;
    }
    for (size_t i = 0; i < b->n_notices; i++) {
        char shown[1024];
        cb_error_escape(shown, sizeof shown, b->notices[i]);
        fprintf(stderr, "colobench: %s\n", shown);
    }
    return CB_EXIT_OK;
}

static int cmd_validate(const cb_cli *cli) {
    cb_bench b;
    int code = load(cli, &b);
    if (code) return code;
    const cb_spec *spec = b.spec;
    cb_experiment_check_devices(spec, stderr); /* a warning only: run refuses */
    size_t stages = 0;
    for (size_t i = 0; i < spec->n_pipelines; i++) stages += spec->pipelines[i].n_stages;
    printf("%s: ok: benchmark '%s', %zu pipeline%s, %zu stage%s", cli->arg, spec->name, spec->n_pipelines,
           spec->n_pipelines == 1 ? "" : "s", stages, stages == 1 ? "" : "s");
    const cb_sweep_spec *sw = &spec->sweep;
    if (sw->n_modes || sw->n_replicas)
        printf(", sweep of %zu points", (sw->n_modes ? sw->n_modes : 1) * (sw->n_replicas ? sw->n_replicas : 1));
    putchar('\n');
    cb_bench_fini(&b);
    return CB_EXIT_OK;
}

static int cmd_graph(const cb_cli *cli) {
    cb_bench b;
    int code = load(cli, &b);
    if (code) return code;
    int rc = cli->dot ? cb_graph_write_dot(b.spec, stdout) : cb_graph_write_mermaid(b.spec, stdout);
    cb_bench_fini(&b);
    return rc == CB_OK ? CB_EXIT_OK : CB_EXIT_FAILED;
}

static int cmd_run(const cb_cli *cli) {
    if (cli->child_fd >= 0) return cb_experiment_child(cli->child_fd, stderr);
    cb_bench b;
    int code = load(cli, &b);
    if (code) return code;
    cb_sigwatch sw;
    cb_error e;
    cb_error_clear(&e);
    if (cb_sigwatch_start(&sw, &e) != CB_OK) {
        cb_bench_fini(&b);
        return print_error(&e);
    }
    cb_experiment_opts o;
    memset(&o, 0, sizeof o);
    o.bench = &b;
    o.out_dir = cli->out_dir;
    o.exe = "/proc/self/exe";
    o.argc = cli->argc;
    o.argv = cli->argv;
    o.out = cli->quiet ? NULL : stdout;
    o.msg = stderr;
    o.quiet = cli->quiet;
    o.progress = cli->quiet ? 0 : isatty(STDERR_FILENO) ? 2 : 1;
    o.signals = &sw;
    bool abandoned = false;
    o.threads_abandoned = &abandoned;
    int status = cb_experiment_run(&o);
    cb_sigwatch_stop(&sw);
    if (abandoned) {
        /* Threads still run inside a stage and read the benchmark: results are written, so
         * leave now, freeing nothing and running no destructor under them. */
        fflush(NULL);
        _exit(exit_code(status));
    }
    cb_bench_fini(&b);
    return exit_code(status);
}

static int cmd_summarize(const cb_cli *cli) {
    if (!cli->arg) {
        fprintf(stderr, "colobench: summarize needs a run directory\n");
        return CB_EXIT_USAGE;
    }
    return exit_code(cb_experiment_summarize(cli->arg, cli->allow_plugins, cli->quiet ? NULL : stdout, stderr));
}

static int cmd_stages(const cb_cli *cli) {
    cb_registry *reg = NULL;
    cb_error e;
    cb_error_clear(&e);
    if (cb_builtin_registry(&reg, &e) != CB_OK) return print_error(&e);
    const char *env = getenv("COLOBENCH_PLUGIN_PATH");
    int code = CB_EXIT_OK;
    if (env && *env && cli->allow_plugins && cb_registry_load_path(reg, env, &e) != CB_OK) {
        cb_error_prefix(&e, "COLOBENCH_PLUGIN_PATH");
        code = print_error(&e);
    } else if (env && *env && !cli->allow_plugins) {
        fprintf(stderr, "colobench: COLOBENCH_PLUGIN_PATH is set: its plugins are listed only with "
                        "--allow-plugins (loading them runs their code)\n");
    }
    if (!code) {
        if (cli->markdown)
            cb_registry_write_markdown(reg, stdout);
        else if (cb_registry_print(reg, cli->arg, stdout, &e) != CB_OK)
            code = print_error(&e) == CB_EXIT_FAILED ? CB_EXIT_FAILED : CB_EXIT_USAGE;
    }
    cb_registry_destroy(reg);
    return code;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "monitor")) {
        /* Before any thread exists: SIGINT/SIGTERM are read by one signal thread only, which
         * forwards them to the monitored command (experiment/watch.h). */
        cb_signals_block();
        cb_sigwatch sw;
        cb_error e;
        cb_error_clear(&e);
        if (cb_sigwatch_start(&sw, &e) != CB_OK) return print_error(&e);
        int mc = cb_cli_monitor(argc - 1, argv + 1, &sw);
        cb_sigwatch_stop(&sw);
        return mc;
    }
    if (argc > 1 && !strcmp(argv[1], "devices")) return cb_cli_devices(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "rag")) return cb_cli_rag(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "serve")) {
        /* Before any thread exists: SIGINT/SIGTERM are read by one signal thread only. */
        cb_signals_block();
        return cb_cli_serve(argc - 1, argv + 1);
    }
    cb_cli cli;
    int code;
    if (parse_args(argc, argv, &cli) != 0) code = CB_EXIT_USAGE;
    else if (!strcmp(cli.cmd, "run")) {
        /* Before any thread exists (plugins may start some when loaded): SIGINT/SIGTERM are
         * read by the run's signal thread only. */
        cb_signals_block();
        code = cmd_run(&cli);
    }
    else if (!strcmp(cli.cmd, "validate")) code = cmd_validate(&cli);
    else if (!strcmp(cli.cmd, "graph")) code = cmd_graph(&cli);
    else if (!strcmp(cli.cmd, "summarize")) code = cmd_summarize(&cli);
    else if (!strcmp(cli.cmd, "stages")) code = cmd_stages(&cli);
    else {
        fprintf(stderr, "colobench: unknown command '%s' (run, validate, graph, summarize, stages, monitor, "
                        "devices, serve; see --help)\n",
                cli.cmd);
        code = CB_EXIT_USAGE;
    }
    free(cli.sets);
    return code;
}
