/* core/spec.h - the typed, validated benchmark: what `colobench run` executes.
 *
 * Built from a cb_doc (after --set overrides) against a registry: every key is checked (unknown
 * keys get a did-you-mean), every value typed and bounded, aliases of the reference framework and
 * of MLPerf scenarios mapped to colobench names, stage parameters resolved against each ops'
 * params[] table, and each pipeline's graph validated and resolved (graph.c). Every error reads
 * FILE:LINE:COL: key: message. The spec and everything it points to live in one arena owned by
 * the spec; the cb_doc must outlive it (nodes are referenced for positions). Read-only after
 * loading; safe to share between threads.
 */
#ifndef CB_CORE_SPEC_H
#define CB_CORE_SPEC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "colobench/stage.h"
#include "core/cfgtree.h"
#include "core/compat.h"
#include "core/registry.h"

typedef enum cb_policy {
    CB_POLICY_SINGLE = 0, /* FIFO in arrival order */
    CB_POLICY_FIRST = 1,  /* oldest query (by submit time) first across inputs */
    CB_POLICY_MERGE = 2,  /* join one arrival of the same query from each inbound edge */
} cb_policy;

typedef enum cb_loadgen_kind {
    CB_LOADGEN_CLOSED = 0,
    CB_LOADGEN_OFFLINE = 1,
    CB_LOADGEN_POISSON = 2,
    CB_LOADGEN_CONSTANT = 3,
    CB_LOADGEN_GAMMA = 4,
    CB_LOADGEN_REPLAY = 5,
} cb_loadgen_kind;

const char *cb_policy_name(cb_policy p);
const char *cb_loadgen_kind_name(cb_loadgen_kind k);
static inline bool cb_loadgen_is_open(cb_loadgen_kind k) {
    return k == CB_LOADGEN_POISSON || k == CB_LOADGEN_CONSTANT || k == CB_LOADGEN_GAMMA ||
           k == CB_LOADGEN_REPLAY;
}

typedef struct cb_loadgen_spec {
    cb_loadgen_kind kind;
    int64_t queue_depth;     /* admitted and unfinished queries, at most; default 10 (0 = no bound
                                for open loop, except max_in_flight) */
    int64_t max_queries;     /* 0 = unbounded (then timeout bounds the run); default 0 */
    int64_t timeout_ns;      /* default 60 s */
    int64_t warmup_queries;  /* default 0 */
    /* loadgen.config */
    int64_t concurrency;     /* closed: queries in flight; default 1 */
    double rate_qps;         /* poisson/constant/gamma: > 0, required */
    uint64_t seed;           /* default 1 */
    double burstiness;       /* gamma shape; > 0; default 1 */
    const char *file;        /* replay: CSV path, resolved relative to the config file */
    int64_t max_in_flight;   /* open loop: 0 = no cap */
    bool split_barrier;      /* wait for a split/epoch to finish before the next; default true */
    const cb_node *node;     /* the loadgen map, for positions */
} cb_loadgen_spec;

/* How the pipelines of a benchmark share the machine (benchmark `collocation.mode`, with
 * per-pipeline overrides among the process modes). */
typedef enum cb_colloc_mode {
    CB_COLLOC_THREADS = 0,   /* every pipeline in this process */
    CB_COLLOC_PROCESSES = 1, /* one child process per pipeline */
    CB_COLLOC_MPS = 2,       /* child processes joined to a CUDA MPS control daemon */
    CB_COLLOC_MIG = 3,       /* child processes each pinned to an existing MIG instance */
} cb_colloc_mode;
const char *cb_colloc_mode_name(cb_colloc_mode m);

typedef struct cb_colloc_spec {
    cb_colloc_mode mode;     /* default: processes with 2+ pipelines, threads with one */
    bool isolated_baseline;  /* baseline: isolated (default none) */
    bool serial_prepare;     /* prepare: serial (default) | parallel: children prepare one at
                                a time, so preparation (and calibration) never overlaps */
    const cb_node *node;
} cb_colloc_spec;

typedef struct cb_monitors_spec {
    bool enabled;            /* default true; `monitors: false` disables */
    int64_t period_ns;       /* period_ms, default 100 ms */
    unsigned sources;        /* CB_MON_* bits (core/monitor_sources.h); default cpu, memory, process
                                (+ gpu when a pipeline names a GPU device) */
    const char *nvml_library;/* NULL = libnvidia-ml.so.1 */
    const cb_node *node;
} cb_monitors_spec;

typedef struct cb_trace_spec {
    bool enabled;            /* trace.json; default true */
    int64_t max_slices;      /* default 1,000,000; above it whole queries are sampled */
} cb_trace_spec;

typedef struct cb_stage_spec {
    int id;
    const char *name;
    const char *component;       /* canonical name after aliasing */
    const cb_stage_ops *ops;
    int *outputs;                /* stage ids, as written */
    size_t n_outputs;
    int workers;                 /* >= 1, default 1 */
    cb_policy policy;            /* default single */
    int64_t max_input_queue_depth; /* 0 = unbounded */
    bool disable_logs;           /* no stage events recorded for this stage */
    bool url_from_server;        /* its `url` is the URL of the server its `server` names
                                    (a stage with both parameters; not written back) */
    cb_param_value *values;      /* one per ops->params entry */
    const cb_node *node;         /* the stage map */
    const cb_node *config_node;  /* its `config` map or NULL */
    /* Filled by graph resolution: */
    int *out_idx;                /* outputs as indices into pipeline stages[] */
    bool *out_back;              /* edge closes a cycle (emits along it never block) */
    int n_in_edges;              /* inbound edges from stages (merge joins this many) */
    bool is_input, is_output;
    bool is_router;              /* ops has a max_hops parameter (allowed to close cycles) */
} cb_stage_spec;

typedef struct cb_pipeline_spec {
    const char *name;                  /* NAME, or NAME.K for replica K of a replicated one */
    /* Replicas (`replicas: N`, expanded when the spec is built: replica K of N is an ordinary
     * pipeline named NAME.K, the same in everything but its loadgen seed, seed + K - 1): */
    const char *base_name;             /* NAME as written */
    int replica;                       /* K in 1..n_replicas */
    int n_replicas;                    /* N, 1 = not replicated (the name is NAME) */
    bool replicas_set;                 /* `replicas` was written (a sweep leaves it alone) */
    size_t src_index;                  /* index in the document's `pipelines` list */
    int *inputs; size_t n_inputs;      /* stage ids */
    int *outputs; size_t n_outputs;    /* stage ids */
    int dataset_stage_id;              /* -1 when none */
    bool serialize_queries;
    cb_loadgen_spec loadgen;
    cb_stage_spec *stages; size_t n_stages;
    const cb_node *node;
    /* Collocation (per pipeline): */
    cb_colloc_mode mode;               /* benchmark mode or this pipeline's override */
    const char *device;                /* "cpu" (default), "cuda:N", "MIG-<uuid>", "mig:[G:]I" */
    int gpu_index;                     /* N of cuda:N, G of mig:G:I (0 for mig:I), -1 otherwise */
    bool device_is_mig;
    const cb_node *device_node;
    int *cpus; size_t n_cpus;          /* affinity of its threads (or process); 0 = unpinned */
    const cb_node *cpus_node;
    int64_t start_delay_ns;            /* load starts this long after the common start */
    int mps_active_thread_percentage;  /* 1..100, 0 = unset */
    int64_t mps_memory_limit_bytes;    /* 0 = unset */
    /* Filled by graph resolution: */
    int *input_idx;                    /* n_inputs entries */
    int dataset_idx;                   /* -1 when none */
} cb_pipeline_spec;

/* `sweep:` (top level): the points `colobench run` runs one after another, each an ordinary
 * run with these overrides (mode x replicas, mode outermost). Empty lists: not swept. */
#define CB_SWEEP_MAX_VALUES 16
typedef struct cb_sweep_spec {
    cb_colloc_mode modes[CB_SWEEP_MAX_VALUES]; size_t n_modes;
    int replicas[CB_SWEEP_MAX_VALUES]; size_t n_replicas; /* multiplies pipelines without
                                                              their own `replicas` */
    const cb_node *node;               /* the sweep map, NULL when absent */
} cb_sweep_spec;

/* `servers:` (top level): processes the benchmark needs running while its pipelines run (an
 * inference server, say), started and stopped by the experiment layer (experiment/servers.h),
 * and only with --allow-servers (starting one runs a command the config names). Bounds, so a
 * config (or the fuzzer) cannot make the loader or a start unbounded: */
#define CB_SPEC_MAX_SERVERS 16        /* servers in a benchmark */
#define CB_SERVER_MAX_ARGS 256        /* arguments of a command, argv[0] included */
#define CB_SERVER_MAX_ENV 64          /* entries of a server's `env` */
#define CB_SERVER_MAX_STRING 4096     /* bytes of one argument, env name or value, ready path */
#define CB_SERVER_NAME_MAX 64         /* bytes of a name: [a-z0-9_-]+ (it names files) */
#define CB_SERVER_HOST_MAX 253
#define CB_SERVER_URL_MAX (CB_SERVER_HOST_MAX + 16) /* "http://[" HOST "]:65535" */
typedef struct cb_server_spec {
    const char *name;
    const char *const *command;    /* argv as written ({host}, {port} replaced when started) */
    size_t n_command;              /* 1..CB_SERVER_MAX_ARGS */
    const char *const *env_names;  /* `env`, in config order ({host}, {port} replaced in values) */
    const char *const *env_values;
    size_t n_env;
    const char *cwd;               /* absolute; default: the config file's directory */
    const char *host;              /* default 127.0.0.1 */
    int port;                      /* required, 1..65535 */
    const char *ready;             /* the HTTP path probed until it answers 2xx; default /health */
    int64_t ready_timeout_ns;      /* default 120 s */
    int64_t stop_timeout_ns;       /* grace after SIGTERM before SIGKILL; default 10 s */
    const char *device;            /* NULL (environment inherited), "cpu" (CUDA_VISIBLE_DEVICES
                                      empty), "cuda:N" or "MIG-<uuid>" */
    int gpu_index;                 /* N of cuda:N, 0 for a MIG UUID, -1 otherwise */
    bool device_is_mig;
    int *cpus; size_t n_cpus;      /* the server's affinity; 0 = unpinned */
    bool mps;                      /* joins the experiment's CUDA MPS daemon */
    const char *url;               /* http://HOST:PORT (an IPv6 host in brackets) */
    const cb_node *node;           /* the server's map */
    const cb_node *device_node;
} cb_server_spec;

typedef struct cb_spec {
    cb_arena *arena;
    const char *name;
    const char *file;                  /* config path as given */
    const char *const *plugin_paths; size_t n_plugin_paths;
    size_t n_plugins_not_loaded;       /* plugin_paths listed but not loaded (plugins are off
                                          unless the registry allows them) */
    cb_pipeline_spec *pipelines; size_t n_pipelines;
    cb_colloc_spec collocation;
    cb_monitors_spec monitors;
    cb_trace_spec trace;
    cb_sweep_spec sweep;
    cb_server_spec *servers; size_t n_servers;
    const cb_node *servers_node;       /* the `servers` list, NULL when absent */
    const cb_doc *doc;                 /* borrowed */
    cb_compat_out compat;              /* a reference framework config's translation and notes */
} cb_spec;

/* Names that become directory names (the benchmark's, each pipeline's): at most this many
 * bytes; see cb_spec_path_name_problem. */
#define CB_SPEC_NAME_MAX 128
#define CB_SPEC_NAME_MAX_STR "128"
/* A stage's name: at most this many bytes (every CSV row holds it whole). */
#define CB_SPEC_STAGE_NAME_MAX 1024

/* NULL when name may name a directory of the results, else why not ("starts with '.'"). */
const char *cb_spec_path_name_problem(const char *name);

/* A spec holding only pipeline i of spec (shallow: shares the arena; never destroy it). Used to
 * run one pipeline alone (isolated baselines, child processes). */
cb_spec cb_spec_single(const cb_spec *spec, size_t i);

/* Loads plugin_paths of the document into reg, then builds and validates the spec. */
int cb_spec_build(const cb_doc *doc, cb_registry *reg, cb_spec **out, cb_error *err);
void cb_spec_destroy(cb_spec *spec);

/* Convenience for the CLI and tests: load file, apply each "--set" assignment, build. On
 * success *doc_out and *spec_out are owned by the caller. */
int cb_spec_load(const char *path, const char *const *sets, size_t n_sets, cb_registry *reg,
                 cb_doc **doc_out, cb_spec **spec_out, cb_error *err);

/* Writes the resolved benchmark (canonical names, every default filled in) as YAML that
 * cb_spec_load accepts again. */
int cb_spec_write_yaml(const cb_spec *spec, FILE *out);

/* Resolves a stage's `config` map against ops->params (types, bounds, choices, unknown keys
 * with did-you-mean, defaults). keypath is the dotted prefix for messages
 * ("pipelines[0].stages[1].config"). Values are allocated in arena. params.c. */
int cb_params_resolve(const cb_stage_ops *ops, const cb_node *config, const char *keypath,
                      cb_arena *arena, cb_param_value **out, cb_error *err);
/* The same for a config whose file lies in dir: path parameters (CB_PARAM_PATH) resolve against
 * dir ("" = the current directory, what cb_params_resolve uses) and are checked against what they
 * must name (a missing file, a directory where a file is needed: CB_ECONFIG at the value). */
int cb_params_resolve_at(const cb_stage_ops *ops, const cb_node *config, const char *keypath,
                         const char *dir, cb_arena *arena, cb_param_value **out, cb_error *err);

/* Graph checks and resolution for one pipeline (graph.c): duplicate and dangling ids, inputs
 * and outputs that name no stage, stages unreachable from the inputs, cycles that pass through
 * no router, merge stages with fewer than 2 or more than CB_QUERY_MAX_PARTS inbound edges.
 * Fills the "graph resolution" fields above. */
int cb_graph_resolve(cb_pipeline_spec *p, const char *keypath, cb_arena *arena, cb_error *err);

/* `colobench graph`: Mermaid flowchart (default) or Graphviz DOT of every pipeline. */
int cb_graph_write_mermaid(const cb_spec *spec, FILE *out);
int cb_graph_write_dot(const cb_spec *spec, FILE *out);

#endif
