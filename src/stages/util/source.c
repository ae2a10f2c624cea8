/* stages/util/source.c - util.source: synthetic payloads and dataset splits.
 *
 * What: the first stage of a synthetic pipeline. It attaches a payload of `bytes` bytes to each
 * query and, as a dataset stage, reports the splits and epochs the load generator iterates
 * (ops->splits): for each epoch, every split in config order, `splits[name]` batches each.
 *
 * Design: the payload contents are made once, at create, into a template buffer (zeros, or
 * random bytes from the instance's seed, so a run is reproducible). Per query, the default is a
 * fresh private buffer memcpy'd from the template: every query costs one allocation and one
 * copy of `bytes`, as a real loader does. With `share: true` every query instead gets one more
 * reference to the template itself (zero copy): use that to measure the pipeline without the
 * loader's memory traffic. A stage downstream that writes into a shared payload must call
 * host->buffer_make_writable first (the buffer rule), which copies then.
 *
 * Metric: `bytes` (COUNT), the payload bytes attached to each query, reported once per query
 * when bytes > 0 (so the summary gives the loader's bytes per second); nothing is reported
 * without a payload, so the default pipeline records no metric at all.
 *
 * Thread-safety: one instance per worker; the template is private to the instance until shared
 * by reference, and buffer refcounts are atomic. Ownership: the instance owns one reference to
 * the template (released in destroy); each query owns one reference to its payload; run()
 * releases any payload the query already had before attaching the new one.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/util/util.h"

enum { P_BYTES, P_FILL, P_SHARE, P_SPLITS, P_EPOCHS, P_COUNT };
enum { FILL_ZERO, FILL_RANDOM };

static const cb_param_def cb_source_params[P_COUNT] = {
    [P_BYTES] = {"bytes", CB_PARAM_INT, "0", 0, 1073741824.0, NULL,
                 "payload size per query in bytes (0 = no payload)"},
    [P_FILL] = {"fill", CB_PARAM_ENUM, "zero", CB_PARAM_UNBOUNDED, "zero|random",
                "payload contents: zeros, or random bytes drawn once from the seed"},
    [P_SHARE] = {"share", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                 "true: every query references one shared buffer (zero copy)"},
    [P_SPLITS] = {"splits", CB_PARAM_INT_MAP, "{train: 1}", 1, 9.2e18, NULL,
                  "batches per epoch of each split, in order"},
    [P_EPOCHS] = {"epochs", CB_PARAM_INT, "1", 1, 2147483647.0, NULL, "number of epochs"},
};

enum { M_BYTES, M_COUNT };

static const cb_metric_def cb_source_metrics[M_COUNT] = {
    [M_BYTES] = {"bytes", CB_METRIC_COUNT, "bytes", "payload bytes attached to the query"},
};

typedef struct cb_source_state {
    const cb_host *host;
    int can_report;   /* the host table has report() (struct_size covers it) */
    const cb_param_value *splits;
    int32_t epochs;
    int share;
    cb_buffer *templ; /* owned reference; NULL when bytes == 0 */
} cb_source_state;

/* What the table cannot say: 1 to CB_MAX_SPLITS splits, names that fit, none twice. */
static int cb_source_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *sp = &args->values[P_SPLITS];
    if (sp->n < 1 || sp->n > CB_MAX_SPLITS)
        return cb_util_error(err, CB_ECONFIG, "splits: expected 1 to %d splits, got %zu",
                             CB_MAX_SPLITS, sp->n);
    for (size_t i = 0; i < sp->n; i++) {
        const char *name = sp->keys ? sp->keys[i] : NULL;
        if (!name || !name[0] || strlen(name) >= CB_SPLIT_NAME_MAX)
            return cb_util_error(err, CB_ECONFIG,
                                 "splits: split %zu: name must have 1 to %d characters", i,
                                 CB_SPLIT_NAME_MAX - 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(name, sp->keys[j]) == 0)
                return cb_util_error(err, CB_ECONFIG, "splits: split \"%s\" given twice", name);
    }
    return CB_OK;
}

static int cb_source_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_source_state *s = state;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->can_report = s->host->struct_size >= offsetof(cb_host, report) + sizeof s->host->report &&
                    s->host->report != NULL;
    s->splits = &v[P_SPLITS];
    s->epochs = (int32_t)v[P_EPOCHS].i;
    s->share = (int)v[P_SHARE].i;
    int rc = cb_source_check(args, err);
    if (rc) return rc;
    size_t bytes = (size_t)v[P_BYTES].i;
    if (bytes == 0) return CB_OK;
    s->templ = s->host->buffer_new(bytes);
    if (!s->templ) return cb_util_error(err, CB_ENOMEM, "cannot allocate %zu bytes", bytes);
    unsigned char *d = s->templ->data;
    if (v[P_FILL].i == FILL_RANDOM) {
        cb_rng rng;
        cb_rng_seed(&rng, args->seed);
        /* 8 bytes per draw; memcpy keeps it alignment- and aliasing-safe. */
        size_t i = 0;
        for (; i + 8 <= bytes; i += 8) {
            uint64_t x = cb_rng_u64(&rng);
            memcpy(d + i, &x, 8);
        }
        if (i < bytes) {
            uint64_t x = cb_rng_u64(&rng);
            memcpy(d + i, &x, bytes - i);
        }
    } else {
        memset(d, 0, bytes);
    }
    return CB_OK;
}

static int cb_source_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_source_state *s = state;
    if (!s->templ) return CB_OK;
    cb_buffer *b;
    if (s->share) {
        s->host->buffer_ref(s->templ);
        b = s->templ;
    } else {
        b = s->host->buffer_new(s->templ->size_bytes);
        if (!b) return cb_util_error(err, CB_ENOMEM, "cannot allocate payload");
        memcpy(b->data, s->templ->data, s->templ->size_bytes);
    }
    s->host->buffer_unref(q->payload);
    q->payload = b;
    if (s->can_report) s->host->report(ctx, M_BYTES, (double)b->size_bytes);
    return CB_OK;
}

static int cb_source_splits(void *state, cb_splits *out, cb_error *err) {
    cb_source_state *s = state;
    out->epochs = s->epochs;
    out->n = (int32_t)s->splits->n;
    for (size_t i = 0; i < s->splits->n; i++) {
        snprintf(out->split[i].name, sizeof out->split[i].name, "%s", s->splits->keys[i]);
        out->split[i].batches = s->splits->ints[i];
    }
    return CB_OK;
}

static void cb_source_destroy(void *state) {
    cb_source_state *s = state;
    if (s->host) s->host->buffer_unref(s->templ);
    s->templ = NULL;
}

const cb_stage_ops cb_stage_util_source = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "util.source",
    .summary = "synthetic payloads of a given size and dataset splits/epochs",
    .params = cb_source_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_source_state),
    .create = cb_source_create,
    .run = cb_source_run,
    .destroy = cb_source_destroy,
    .splits = cb_source_splits,
    .metrics = cb_source_metrics,
    .n_metrics = M_COUNT,
    .check = cb_source_check,
};
