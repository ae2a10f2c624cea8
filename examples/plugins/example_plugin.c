/* examples/plugins/example_plugin.c - a colobench plugin with one stage, `example.scale`.
 *
 * What: example.scale multiplies every byte of the query's payload by `factor` (modulo 256) and
 * sets the query's tag to the sum of the resulting bytes. It reports one metric per query, the
 * mean byte after scaling (a GAUGE; stage_metrics.csv and summary.json show it). It is a
 * template for plugin authors: copy it, rename the stage, and change run().
 *
 * Build: a plugin is a shared object that includes only <colobench/stage.h> and libc and links
 * against nothing of colobench:
 *     cc -std=c17 -O2 -shared -fPIC -I/path/to/colobench/include my_plugin.c -o my_plugin.so
 * (in this tree, CMake target cb_example_plugin builds build/plugins/example_plugin.so).
 * Load it with `plugin_paths: [build/plugins]` in the benchmark file; `colobench stages` then
 * lists example.scale with its parameters.
 *
 * Rules a plugin follows (colobench/stage.h has the full recipe):
 *   - Export exactly one symbol, `const cb_plugin cb_plugin_entry`: plain data, so the host can
 *     check abi_major and struct_size of it and of every ops table before calling any code.
 *   - Reach the host only through the cb_host table (args->host): buffers, clock, emit, log.
 *     Do not call cb_error_set() or any other colobench function: the plugin is loaded with
 *     RTLD_LOCAL and such symbols are not visible to it. Fill cb_error directly (see below).
 *   - Keep no mutable globals: all state lives in the zeroed state_size bytes the host
 *     allocates per instance (one instance per worker, run() never concurrent per instance).
 *   - Ownership: the query owns one reference to its payload. A payload may be shared with other
 *     queries (fan-out, util.source share: true), so make it private with
 *     host->buffer_make_writable(&q->payload) before writing into it; it copies only if needed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <colobench/stage.h>

/* A cb_error is plain data: a plugin fills it itself. */
static int scale_error(cb_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int scale_error(cb_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* 1. Parameters: indices and the table the host validates configs against. */
enum { P_FACTOR, P_COUNT };

static const cb_param_def scale_params[P_COUNT] = {
    [P_FACTOR] = {"factor", CB_PARAM_INT, "2", 0, 255, NULL,
                  "multiplier applied to every payload byte, modulo 256 (dimensionless)"},
};

/* 2. Metrics: what run() reports per query with host->report(ctx, index, value). */
enum { M_MEAN_BYTE, M_COUNT };

static const cb_metric_def scale_metrics[M_COUNT] = {
    [M_MEAN_BYTE] = {"mean_byte", CB_METRIC_GAUGE, "", "mean payload byte after scaling (0-255)"},
};

/* Per-instance state (zeroed by the host). */
typedef struct scale_state {
    const cb_host *host;
    int can_report;  /* the host's table is new enough to have report() */
    uint8_t factor;
} scale_state;

/* 3. create: copy what run() needs; values are already validated. */
static int scale_create(void *state, const cb_stage_args *args, cb_error *err) {
    scale_state *s = state;
    s->host = args->host;
    /* A field appended to the ABI exists only if the host's struct_size covers it. */
    s->can_report = s->host->struct_size >= offsetof(cb_host, report) + sizeof s->host->report &&
                    s->host->report != NULL;
    s->factor = (uint8_t)args->values[P_FACTOR].i;
    return 0;
}

/* 4. run: one query. Returning 0 forwards it to every output. */
static int scale_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    scale_state *s = state;
    if (!q->payload) {
        q->tag = 0;
        return 0;
    }
    if (q->payload->kind == CB_BUFFER_DEVICE)
        return scale_error(err, CB_EUNSUPPORTED, "example.scale needs a host payload");
    int rc = s->host->buffer_make_writable(&q->payload);
    if (rc < 0) return scale_error(err, rc, "cannot make the payload writable");
    uint8_t *p = q->payload->data;
    int64_t sum = 0;
    for (size_t i = 0; i < q->payload->size_bytes; i++) {
        p[i] = (uint8_t)(p[i] * s->factor);
        sum += p[i];
    }
    q->tag = sum;
    if (s->can_report && q->payload->size_bytes > 0)
        s->host->report(ctx, M_MEAN_BYTE, (double)sum / (double)q->payload->size_bytes);
    return 0;
}

/* 5. The ops table: abi fields first; optional hooks (prepare, finish, destroy) left NULL. */
static const cb_stage_ops scale_ops = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "example.scale",
    .summary = "multiplies each payload byte by factor; tags the query with the byte sum",
    .params = scale_params,
    .n_params = P_COUNT,
    .state_size = sizeof(scale_state),
    .create = scale_create,
    .run = scale_run,
    .metrics = scale_metrics,
    .n_metrics = M_COUNT,
};

/* 6. The one exported symbol. */
static const cb_stage_ops *const stages[] = {&scale_ops};

const cb_plugin cb_plugin_entry = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_plugin),
    .name = "example",
    .n_stages = sizeof stages / sizeof stages[0],
    .stages = stages,
};
