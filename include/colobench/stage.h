/* colobench/stage.h - the stage plugin ABI (version 1).
 *
 * A stage transforms queries. The runtime owns threads, queues, timing and error reporting;
 * a stage only sees one query at a time per instance. Built-in stages and plugins use the same
 * ABI and the same registry.
 *
 * Writing a stage (the recipe; src/stages/util/noop.c and examples/plugins/example_plugin.c are
 * compiling, tested templates):
 *   1. Declare your parameters once in a cb_param_def table. The host validates every config key
 *      against it (type, bounds, choices, unknown keys with a did-you-mean) before create, fills
 *      defaults, and prints it for `colobench stages`. Your create() reads args->values[i], where
 *      i is the index in your table, and never sees a bad value.
 *   2. Declare state_size. The host allocates that many zeroed bytes for each instance (one per
 *      worker) and frees them, so a failed create cannot leak the state itself; destroy() is
 *      called after a create that returned an error too, to release what create acquired.
 *   3. run() handles one query. Returning CB_OK without calling emit forwards the query to every
 *      output of the stage. Call host->emit(ctx, i, q) to send it to output i only (or
 *      CB_EMIT_ALL), possibly several times; return CB_RUN_DROP to end this path of the query.
 *      Return a negative CB_E* code with a message in err to fail: the pipeline stops promptly
 *      and the message is reported with the pipeline, stage and query.
 *   4. A plugin .so exports one data symbol, `const cb_plugin cb_plugin_entry`, listing its
 *      stages. The host checks abi_major and struct_size of the entry and of every ops table
 *      before it calls any plugin function, and loads the object with RTLD_LOCAL: a plugin links
 *      against nothing of colobench and reaches the host only through the cb_host table.
 *   5. Metrics: to report a figure per query (loss, accuracy, images), declare it once in a
 *      cb_metric_def table (ops->metrics/n_metrics: name [a-z0-9_]+, COUNT or GAUGE, unit, doc;
 *      checked by the registry) and call host->report(ctx, i, value) from run(), i being its
 *      index. It is cheap (one record into the worker's log); rows go to stage_metrics.csv and
 *      aggregates (sums and rates of COUNTs, loss-curve ends of GAUGEs) to summary.json. Check
 *      that host->struct_size covers report before calling it (util.source does).
 *   6. Device time: a stage that runs work on a GPU times it itself (CUDA events on its own
 *      stream) and calls host->device_time(ctx, ns) from run(); the summary then shows the
 *      stage's device time next to its host service time (util.gpu_spin and util.gpu_copy do;
 *      check host->struct_size covers device_time first).
 *   7. Many queries in flight in one instance, completed out of order (continuous batching):
 *      hold them in run() and advance them in step(); see "Held queries" below.
 *
 * Threading: one instance (state) per worker; run() of one instance is never called
 * concurrently, but instances of the same stage run in parallel on different threads.
 * Lifecycle, per instance: create -> prepare (untimed setup, duration recorded) -> run* ->
 * finish (after its last query) -> destroy.
 *
 * ABI rules: every struct starts with (abi_major, struct_size) or is reached through one that
 * does; structs grow only by appending; whoever reads a struct the other side filled reads an
 * appended field only when struct_size covers it (the host refuses an ops table smaller than
 * its first ABI 1 layout, and treats appended fields it does not cover as absent).
 * History:
 *   2026-11-23  abi 1: first version.
 *   2026-11-23  cb_stage_args.device appended (the pipeline's device: "cpu" or "cuda:N").
 *   2026-11-23  stage metrics: cb_stage_ops.metrics/n_metrics and cb_host.report appended. A
 *               stage declares the figures it reports per query (loss, accuracy, images) in a
 *               cb_metric_def table and reports them by index from run().
 *   2026-11-23  device time: cb_host.device_time appended. A stage that runs work on a GPU
 *               reports the device time of each run (measured with CUDA events) from run();
 *               it goes into the run's stage event and the stage's summary statistics.
 *   2026-12-07  cancellation: cb_host.wait_until and cb_host.cancelled appended. A stage that
 *               sleeps or computes for long waits with wait_until or polls cancelled, so a stop
 *               or a timeout ends its run promptly.
 *   2026-12-07  CB_PARAM_PATH appended: path parameters resolve against the config's directory
 *               and are checked when the config is loaded (`validate`), not first at prepare.
 *               A host older than this refuses a table that uses it ("unknown type").
 *   2026-12-07  cb_stage_ops.check appended: parameter checks that need no running (counts,
 *               combinations), run when the config is loaded.
 *   2026-12-07  held queries (continuous batching): CB_RUN_HELD, cb_held, cb_stage_ops.step and
 *               cb_host.hold/complete/report_held/arrival_ns appended; CB_METRIC_DIST appended.
 *               A stage may keep many queries in flight and complete them out of order (an LLM
 *               engine steps every running request at once); see "Held queries" below. A host
 *               older than this refuses a metric table that uses CB_METRIC_DIST ("kind 2").
 *   2026-12-08  waiting steps: cb_host.wait_step/waker/wake appended. A holding stage whose work
 *               goes on elsewhere (an HTTP client's transfers on its own I/O thread) sleeps in
 *               step() until that work progresses (wake, from any thread) or a new query is
 *               queued for the stage, instead of polling: arrivals are run at once and no core
 *               spins. CB_RUN_FAILED appended: a query that fails without failing the run.
 *
 * Held queries (7.): a stage whose work for one query spans many steps shared with other
 * queries (an LLM engine batching every running request into one forward pass) keeps queries
 * past their run():
 *   - run() calls host->hold(ctx), which returns a handle, and returns CB_RUN_HELD. The cb_query
 *     *q that run() got stays valid, and the stage may go on changing its payload, tag and value,
 *     until it completes it; the query counts as in flight in the stage meanwhile.
 *   - While an instance holds queries, the host calls ops->step(state, ctx, err) on that
 *     instance's worker (never concurrently with its run()) whenever no new query is queued for it:
 *     new arrivals get run() first, between two steps. One step is one unit of work (one engine
 *     step: milliseconds, so arrivals join promptly); a step that has nothing to do may wait for
 *     progress, briefly (host->wait_until), or, when the progress is made elsewhere (a thread of
 *     the stage's own, the network), until it is told so (host->wait_step and host->wake, which
 *     also return as soon as a new query is queued for the stage). It completes the queries that
 *     finished with host->complete(ctx, h, rc, msg): CB_OK forwards the query (as the stage left
 *     it) to every output, CB_RUN_DROP ends its path, CB_RUN_FAILED ends it as failed while the
 *     pipeline goes on, a negative code fails the pipeline with msg. The query's stage event
 *     spans from the start of its run() to its complete(). run() may complete held queries too
 *     (a stage whose own waiting list is full steps its work inside run()).
 *   - Metrics of a held query: host->report_held(ctx, h, metric, value), from run() or step().
 *     Latencies a stage measures itself start at host->arrival_ns(ctx): the query's scheduled
 *     arrival, read in run().
 *   - Cancellation: when host->cancelled(ctx), the next step must complete every held query with
 *     CB_ESTOPPED. A step that fails (negative return), or that completes nothing while the
 *     pipeline cancels, ends the instance's held queries itself (cancelled); the host then calls
 *     neither step again nor accepts complete() for them, and the stage must not touch their q.
 *   - finish() comes after the last held query is completed.
 */
#ifndef COLOBENCH_STAGE_H
#define COLOBENCH_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/buffer.h"
#include "colobench/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CB_STAGE_ABI_MAJOR 1u

/* ---- Parameters ------------------------------------------------------------------------- */

typedef enum cb_param_type {
    CB_PARAM_INT = 0,      /* int64, bounds [min, max] */
    CB_PARAM_FLOAT = 1,    /* double, bounds [min, max]; integers accepted */
    CB_PARAM_BOOL = 2,     /* true/false */
    CB_PARAM_STRING = 3,   /* any string; default may be NULL (unset) */
    CB_PARAM_ENUM = 4,     /* one of choices, "a|b|c"; value.i is the index */
    CB_PARAM_INT_LIST = 5, /* [1, 2, 3], each in [min, max] */
    CB_PARAM_FLOAT_LIST = 6, /* [0.5, 0.25], each in [min, max] */
    CB_PARAM_INT_MAP = 7,  /* {train: 100, val: 10}, values in [min, max], keys in config order */
    CB_PARAM_PATH = 8,     /* a file-system path, value.s: relative to the config file's directory,
                              given to the stage absolute; choices says what it must name when the
                              config is loaded: "file", "dir" or "file|dir" (exists), "out" (a file
                              to write: its directory exists, it is not a directory). Appended
                              2026-12-07 */
} cb_param_type;

typedef struct cb_param_def {
    const char *key;           /* config key, [a-z0-9_]+ */
    cb_param_type type;
    const char *default_value; /* in YAML syntax ("4096", "1.5", "true", "fixed", "[1, 2]");
                                  NULL = no default (unset unless given) */
    double min, max;           /* bounds for numbers (inclusive); min > max means unbounded */
    const char *choices;       /* CB_PARAM_ENUM: "fixed|exponential|lognormal" */
    const char *doc;           /* one line, with the unit */
} cb_param_def;

#define CB_PARAM_UNBOUNDED 1.0, 0.0

/* Resolved value of one parameter, owned by the host, valid from create to destroy. */
typedef struct cb_param_value {
    int is_set;               /* 1 when the config gave it, 0 when the default (or nothing) applies */
    int has_value;            /* 0 only for a parameter with no default that the config left out */
    int64_t i;                /* INT, BOOL (0/1), ENUM (index into choices) */
    double f;                 /* FLOAT; also INT as double */
    const char *s;            /* STRING; ENUM choice name */
    size_t n;                 /* number of entries of a list or map */
    const int64_t *ints;      /* INT_LIST, INT_MAP values */
    const double *floats;     /* FLOAT_LIST values */
    const char *const *keys;  /* INT_MAP keys */
} cb_param_value;

/* ---- Stage metrics ---------------------------------------------------------------------- */

/* How the summary aggregates a metric over a run. */
typedef enum cb_metric_kind {
    CB_METRIC_COUNT = 0,   /* an amount per query (images, tokens, bytes): the summary gives its
                              sum and its rate per second over the pipeline's window */
    CB_METRIC_GAUGE = 1,   /* a level per query (loss, accuracy, learning rate): the summary gives
                              first, last, mean, min, max, and the means of the first and last
                              tenth of the reports (the ends of a loss curve) */
    CB_METRIC_DIST = 2,    /* appended 2026-12-07: a value per query whose distribution matters (a
                              latency such as time to first token, in ns): the summary gives n,
                              mean, min, max and the percentiles p50, p90, p95, p99 */
} cb_metric_kind;

#define CB_STAGE_MAX_METRICS 16

typedef struct cb_metric_def {
    const char *name;      /* [a-z0-9_]+, unique within the stage: "loss", "images" */
    cb_metric_kind kind;
    const char *unit;      /* "images", "ratio", "" */
    const char *doc;       /* one line */
} cb_metric_def;

/* ---- Queries ---------------------------------------------------------------------------- */

#define CB_QUERY_MAX_PARTS 8
#define CB_SPLIT_NAME_MAX 32
#define CB_MAX_SPLITS 8

/* A query as a stage sees it. The runtime owns the struct; a stage may change payload (keeping
 * the ownership rule: the query owns one reference to each non-NULL payload/part), tag and
 * value, and reads the rest. */
typedef struct cb_query {
    uint32_t abi_major, struct_size;
    uint64_t id;              /* unique within the pipeline, from 0 in issue order */
    int32_t split;            /* index into the dataset's splits, 0 without a dataset stage */
    int32_t epoch;            /* 0-based */
    int64_t batch;            /* 0-based within split and epoch; query index without dataset */
    uint32_t hops;            /* passes through routers so far on this path (each router adds
                                 one; max_hops bounds loops with it) */
    int32_t nparts;           /* >1 after a merge: parts[0..nparts) hold each input's payload */
    int64_t tag;              /* free for stages (e.g. a class or route key) */
    double value;             /* free for stages (e.g. a loss or score) */
    cb_buffer *payload;       /* may be NULL; the query owns one reference */
    cb_buffer *parts[CB_QUERY_MAX_PARTS]; /* merge inputs; parts[0] == payload after a merge */
} cb_query;

typedef struct cb_split_info {
    char name[CB_SPLIT_NAME_MAX]; /* "train", "val", ... */
    int64_t batches;              /* batches per epoch in this split (>= 1) */
} cb_split_info;

/* What a dataset stage reports: the load generator iterates, for each epoch, every split in
 * order and every batch of it. */
typedef struct cb_splits {
    uint32_t abi_major, struct_size;
    int32_t epochs;              /* >= 1 */
    int32_t n;                   /* 1..CB_MAX_SPLITS */
    cb_split_info split[CB_MAX_SPLITS];
} cb_splits;

/* ---- Host table ------------------------------------------------------------------------- */

typedef struct cb_run_ctx cb_run_ctx;   /* opaque: one stage run in progress */

typedef struct cb_held cb_held;         /* opaque: a query a stage keeps past its run() */

typedef struct cb_waker cb_waker;       /* opaque: wakes a stage instance's wait_step */

#define CB_EMIT_ALL (-1)
#define CB_RUN_DROP 1                   /* run() return value: the query ends on this path */
#define CB_RUN_HELD 2                   /* run() return value: the stage keeps the query (it
                                           called host->hold); appended 2026-12-07 */
#define CB_RUN_FAILED 3                 /* run() return value or complete() rc: the query failed
                                           in this stage (a request a server refused): it ends
                                           here with status "error" and the pipeline goes on (a
                                           negative code would stop it); the stage reports why
                                           (a log line, a metric). Appended 2026-12-08 */

enum { CB_LOG_ERROR = 0, CB_LOG_WARN = 1, CB_LOG_INFO = 2, CB_LOG_DEBUG = 3 };

typedef struct cb_host {
    uint32_t abi_major, struct_size;
    /* Logging through the host's one sink; msg is a complete line without newline. */
    void (*log)(int level, const char *stage_name, const char *msg);
    /* Allocation funnel (fault injection in tests). */
    void *(*alloc)(size_t size);
    void (*free)(void *ptr);
    /* Payload buffers. buffer_new returns a buffer with refcount 1 or NULL. */
    cb_buffer *(*buffer_new)(size_t size_bytes);
    void (*buffer_ref)(cb_buffer *buf);
    void (*buffer_unref)(cb_buffer *buf);        /* NULL is a no-op */
    /* Makes *buf private to the caller (copies if shared). 0 or CB_ENOMEM. */
    int (*buffer_make_writable)(cb_buffer **buf);
    /* The run's clock: CLOCK_MONOTONIC in ns. */
    int64_t (*now_ns)(void);
    /* Sends q (or a copy sharing its payload) to output `output` (index into the stage's
     * outputs, or CB_EMIT_ALL). May be called several times per run. 0 or a CB_E* code. */
    int (*emit)(cb_run_ctx *ctx, int output, const cb_query *q);
    /* Number of outputs of the stage owning ctx. */
    int (*n_outputs)(const cb_run_ctx *ctx);
    /* Appended 2026-11-23 (check struct_size): records value for metric `metric` (an index into
     * the stage's ops->metrics) against the query being run, time-stamped now. Lock-free and
     * allocation-free (one 64-byte record into the worker's log); written to
     * stage_metrics.csv and aggregated in summary.json. 0, or CB_EINVAL for a bad index (then
     * nothing is recorded). Only from run(), with its ctx; any number of times per run. */
    int (*report)(cb_run_ctx *ctx, int metric, double value);
    /* Appended 2026-11-23 (check struct_size): records device_ns nanoseconds of device (GPU)
     * time for the run in progress, as the stage measured it (CUDA events around its work).
     * Several calls in one run add up. The stage event of the run carries the sum (events.csv
     * column device_ns, empty for a run that reported none) and summary.json gives the stage's
     * device-time statistics next to its host service time. 0, or CB_EINVAL for a negative
     * value (then nothing is added). Only from run(), with its ctx. */
    int (*device_time)(cb_run_ctx *ctx, int64_t device_ns);
    /* Appended 2026-12-07 (check struct_size): cancellation. A run that waits or works for long
     * must stay cancellable, so that a stop, a timeout or a failure elsewhere in the pipeline
     * ends the run promptly (a run that never returns gets its thread abandoned and the whole
     * run ends with an error).
     * wait_until sleeps until deadline_ns (the host clock, CLOCK_MONOTONIC ns) or until the
     * run's pipeline cancels its queries, whichever comes first: 0 at the deadline,
     * CB_ESTOPPED when cancelled. cancelled returns nonzero once the pipeline cancels; a long
     * computation polls it between steps. A run that returns CB_ESTOPPED while its pipeline is
     * cancelling ends its query as cancelled, not as an error. Only from run(), with its ctx. */
    int (*wait_until)(cb_run_ctx *ctx, int64_t deadline_ns);
    int (*cancelled)(const cb_run_ctx *ctx);
    /* Appended 2026-12-07 (check struct_size): held queries (see "Held queries" above).
     * hold: from run() only, once per run: the run's query stays with the stage; run() must then
     * return CB_RUN_HELD. NULL when the stage's ops have no step, or when this run already
     * holds its query.
     * complete: from run() or step(), with that call's ctx: ends held query h in this stage as
     * if its run had returned rc now (CB_OK, CB_RUN_DROP, or a negative code with msg, which may
     * be NULL). h is invalid afterwards. 0, or CB_EINVAL for a handle this instance does not hold
     * (nothing done), CB_ESTOPPED when the host has already ended it (cancelled).
     * report_held: host->report against held query h, from run() or step().
     * arrival_ns: the scheduled arrival time (the host clock) of the query being run, from
     * run(): where latencies measured by the stage start, like the host's own. */
    cb_held *(*hold)(cb_run_ctx *ctx);
    int (*complete)(cb_run_ctx *ctx, cb_held *h, int rc, const char *msg);
    int (*report_held)(cb_run_ctx *ctx, cb_held *h, int metric, double value);
    int64_t (*arrival_ns)(const cb_run_ctx *ctx);
    /* Appended 2026-12-08 (check struct_size): waiting steps (see "Held queries").
     * wait_step: from step() only: sleeps until deadline_ns (the host clock), until a query is
     * queued for the stage (it is run before the next step), until host->wake(waker) for this
     * instance, or until the pipeline cancels, whichever is first: 0, or CB_ESTOPPED when
     * cancelled, CB_EINVAL outside step(). A wake that came before the call makes it return at
     * once (wakes are not lost; several count as one).
     * waker: from run() or step(): the instance's wake handle, the same every time, valid until
     * the instance's finish() returns.
     * wake: from any thread, any time until then: ends the instance's current or next wait_step.
     * Lock-based, allocation-free, a few hundred ns. */
    int (*wait_step)(cb_run_ctx *ctx, int64_t deadline_ns);
    cb_waker *(*waker)(cb_run_ctx *ctx);
    void (*wake)(cb_waker *w);
} cb_host;

/* ---- Stage ops -------------------------------------------------------------------------- */

/* Passed to create; borrowed for the duration of create except where stated. */
typedef struct cb_stage_args {
    uint32_t abi_major, struct_size;
    const cb_host *host;           /* valid for the instance's lifetime */
    const cb_param_value *values;  /* one per ops->params entry; valid for the lifetime */
    const char *pipeline;          /* names, valid for the lifetime */
    const char *stage;
    int stage_id;
    int worker;                    /* 0..workers-1 */
    int workers;
    int n_outputs;
    uint64_t seed;                 /* per-instance seed derived from the pipeline's seed */
    /* Appended 2026-11-23 (check struct_size before reading): the device the pipeline runs on,
     * "cpu" or "cuda:N" (a MIG instance is visible to its process as cuda:0). */
    const char *device;
} cb_stage_args;

typedef struct cb_stage_ops {
    uint32_t abi_major;            /* CB_STAGE_ABI_MAJOR */
    uint32_t struct_size;          /* sizeof(cb_stage_ops) */
    const char *name;              /* "family.name", e.g. "util.sleep" */
    const char *summary;           /* one line */
    const cb_param_def *params;
    size_t n_params;
    size_t state_size;             /* bytes of zeroed per-instance state the host allocates */
    /* Required. Reads args, sets up state. */
    int (*create)(void *state, const cb_stage_args *args, cb_error *err);
    /* Optional. Untimed heavy setup before the start barrier. */
    int (*prepare)(void *state, cb_error *err);
    /* Required. One query. ctx is valid during the call only. */
    int (*run)(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err);
    /* Optional. After the instance's last query. */
    void (*finish)(void *state);
    /* Optional. Releases what create/prepare acquired (not the state itself). */
    void (*destroy)(void *state);
    /* Optional, dataset stages: fills out (abi fields preset by the host). */
    int (*splits)(void *state, cb_splits *out, cb_error *err);
    /* Appended 2026-11-23: the metrics run() may report (host->report), at most
     * CB_STAGE_MAX_METRICS; NULL/0 for none. Checked by the registry like params. */
    const cb_metric_def *metrics;
    size_t n_metrics;
    /* Appended 2026-12-07: optional. Checks what the parameter table cannot express (counts that
     * must match the outputs, combinations of values) from args alone, without side effects:
     * args->host is NULL, args->worker is 0, and nothing may be allocated, opened or started.
     * The host calls it when the config is loaded (`colobench validate`), once per stage, so such
     * a mistake is refused before anything runs (create may call it again). CB_ECONFIG with a
     * message starting with the parameter's key ("weights: 2 weights for 3 outputs"). */
    int (*check)(const cb_stage_args *args, cb_error *err);
    /* Appended 2026-12-07: optional; required by a stage that holds queries (host->hold). One
     * unit of work for the queries the instance holds; see "Held queries" above. ctx is valid
     * during the call; host->report is not available in it (no query is being run): use
     * report_held. A negative return fails the pipeline with err. */
    int (*step)(void *state, cb_run_ctx *ctx, cb_error *err);
} cb_stage_ops;

/* The one symbol a plugin exports (a data symbol: no plugin code runs before the checks). */
typedef struct cb_plugin {
    uint32_t abi_major;            /* CB_STAGE_ABI_MAJOR */
    uint32_t struct_size;          /* sizeof(cb_plugin) */
    const char *name;
    size_t n_stages;
    const cb_stage_ops *const *stages;
} cb_plugin;

#define CB_PLUGIN_SYMBOL "cb_plugin_entry"

#ifdef __cplusplus
}
#endif
#endif
