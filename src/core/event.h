/* core/event.h - the fixed-size records the hot path writes.
 *
 * Times are absolute CLOCK_MONOTONIC nanoseconds; writers subtract the run's t0 when
 * formatting. Pipeline and stage are indices into the spec. Plain data, no ownership.
 */
#ifndef CB_CORE_EVENT_H
#define CB_CORE_EVENT_H

#include <stdint.h>

typedef enum cb_query_status {
    CB_QUERY_OK = 0,        /* reached at least one output stage */
    CB_QUERY_DROPPED = 1,   /* every path ended without reaching an output stage */
    CB_QUERY_ERROR = 2,     /* a stage failed on it */
    CB_QUERY_CANCELLED = 3, /* still in flight when the run stopped (interrupt, timeout, error) */
} cb_query_status;

/* "ok", "dropped", "error", "cancelled" (the queries.csv status column). */
static inline const char *cb_query_status_name(int status) {
    switch (status) {
    case CB_QUERY_OK: return "ok";
    case CB_QUERY_DROPPED: return "dropped";
    case CB_QUERY_ERROR: return "error";
    case CB_QUERY_CANCELLED: return "cancelled";
    default: return "unknown";
    }
}

/* One stage run. 64 bytes (also the raw record of events.bin, read back by the collocation
 * parent: the same struct on both sides). */
typedef struct cb_stage_event {
    int64_t enqueue_ns;   /* handed to the stage (submit time for input stages) */
    int64_t start_ns;
    int64_t end_ns;
    int64_t prev_end_ns;  /* end of the upstream run that fed this one (submit for inputs) */
    uint64_t query_id;
    int64_t device_ns;    /* device (GPU) time the run reported through host->device_time,
                             summed over its calls; CB_DEVICE_NS_NONE when it reported none */
    int32_t batch;        /* the query's batch, saturated to INT32_MAX (only a run of more than
                             2^31 queries without a dataset reaches it; query_id is exact) */
    int32_t epoch;
    uint16_t pipeline;
    uint16_t stage;
    int16_t worker;
    int16_t split;
} cb_stage_event;

#define CB_DEVICE_NS_NONE (-1)

/* One query, written when it ends. 64 bytes. */
typedef struct cb_query_event {
    int64_t scheduled_ns; /* intended arrival (open loop); == submit_ns for closed/offline */
    int64_t submit_ns;    /* handed to the input stages */
    int64_t start_ns;     /* first stage run started (0 if none started) */
    int64_t end_ns;       /* last stage run ended (or cancellation time) */
    uint64_t query_id;
    int64_t batch;
    uint16_t pipeline;
    int16_t split;
    int32_t epoch;
    int32_t status;       /* cb_query_status */
    uint32_t warmup;      /* 1 for warm-up queries: recorded, left out of statistics */
} cb_query_event;

/* One report of a stage metric (host->report from run()). 64 bytes. metric indexes the stage's
 * ops->metrics; the reserved fields are zero (the record is streamed raw to metrics.bin). */
typedef struct cb_metric_event {
    int64_t t_ns;         /* when it was reported */
    uint64_t query_id;    /* the query being run */
    int64_t batch;
    double value;
    uint16_t pipeline;
    uint16_t stage;       /* index into the pipeline's stages */
    int16_t split;
    int16_t metric;       /* index into the stage's ops->metrics */
    int32_t epoch;
    int16_t worker;       /* the stage's worker (instance) that reported it */
    uint16_t reserved0;
    uint32_t reserved[4];
} cb_metric_event;

/* Warm-up records (the first loadgen.warmup_queries query ids of a pipeline, or a query whose
 * own flag says so) are recorded but enter no statistic. The one definition, for every reader. */
static inline int cb_query_is_warmup(const cb_query_event *q, int64_t warmup_queries) {
    return q->warmup != 0 || (warmup_queries > 0 && q->query_id < (uint64_t)warmup_queries);
}

static inline int cb_stage_event_is_warmup(const cb_stage_event *e, int64_t warmup_queries) {
    return warmup_queries > 0 && e->query_id < (uint64_t)warmup_queries;
}

static inline int cb_metric_event_is_warmup(const cb_metric_event *e, int64_t warmup_queries) {
    return warmup_queries > 0 && e->query_id < (uint64_t)warmup_queries;
}

_Static_assert(sizeof(cb_stage_event) == 64, "cb_stage_event is one cache line");
_Static_assert(sizeof(cb_query_event) == 64, "cb_query_event is one cache line");
_Static_assert(sizeof(cb_metric_event) == 64, "cb_metric_event is one cache line");

#endif
