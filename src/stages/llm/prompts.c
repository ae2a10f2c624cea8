/* stages/llm/prompts.c - llm.prompts: a dataset stage of LLM requests, one request per query.
 *
 * What: `source: synthetic` makes the "random" dataset of serving benchmarks (vllm bench's):
 * prompts of random token ids in [first_id, vocab_size) after an optional shared prefix of
 * prefix_len ids, input and output lengths each fixed, uniform, normal or lognormal around a
 * mean. `source: jsonl` reads a file with one object per line: "prompt" (text) and/or
 * "prompt_ids" ([int]), optionally "max_tokens" or "output_len". `source: sharegpt` reads a JSON
 * array of {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}, ...]}: the
 * first human turn is the prompt and the gpt turn after it sets max_new_tokens to its length in
 * bytes / 4, rounded up (no tokenizer here; 4 bytes a token is the usual English estimate).
 * Setting output_len or output_dist in the config overrides the file's output lengths. Each
 * query gets an llm/request.h payload; the stage reports prompt_tokens (ids) or prompt_bytes
 * (text only) and max_new_tokens per query.
 *
 * Lengths: a synthetic prompt is prefix_len + an input length drawn from input_dist, clamped to
 * [1, max_prompt_len - prefix_len]; max_new_tokens is drawn from output_dist, clamped to
 * [1, CB_LLM_MAX_NEW_TOKENS]. uniform draws integers in [floor(len (1 - r)), floor(len (1 + r))]
 * (r = range_ratio, as vllm's random dataset); normal rounds len + std z; lognormal takes std as
 * the standard deviation of the length itself (not sigma): sigma^2 = ln(1 + std^2 / len^2),
 * mu = ln(len) - sigma^2 / 2, so the lengths' mean is len before rounding and clamping.
 *
 * Design: on the data.* machinery (stages/data/data.h) with a batch of one request: one split,
 * "prompts", of num_prompts queries per epoch, the shuffled order, prefetch threads. Request i
 * is a pure function of (seed, i): its lengths and ids come from a xoshiro stream seeded by
 * (seed, i), its sampling seed from (seed, i) too, the prefix from seed alone. So every worker,
 * run and sweep point sees the same requests. Files are read and checked in create (the load
 * generator needs the count right after create) into one record array, a text blob and an id
 * blob; a request is then a copy.
 *
 * Limits: files at most CB_PROMPTS_MAX_FILE_BYTES, JSONL lines at most CB_PROMPTS_MAX_LINE_BYTES,
 * prompts at most max_prompt_len ids or bytes (and the payload's maxima), at most
 * CB_PROMPTS_MAX_RECORDS records. Errors name the file and the line (JSONL) or the JSON path and
 * its line:col (ShareGPT).
 *
 * Thread-safety: after create the state is read-only except the prefetcher (data.h); make() runs
 * concurrently in prefetch threads. Ownership: the state owns the records and blobs (host->alloc,
 * freed in destroy after the prefetch threads are joined); each query gets a fresh payload (one
 * reference) and its previous payload is released.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "colobench/stage.h"
#include "core/rng.h"
#include "llm/jdom.h"
#include "llm/request.h"
#include "stages/data/data.h"
#include "stages/util/util.h"

enum {
    P_SOURCE,
    P_PATH,
    P_NUM_PROMPTS,
    P_INPUT_DIST,
    P_INPUT_LEN,
    P_INPUT_RANGE,
    P_INPUT_STD,
    P_OUTPUT_DIST,
    P_OUTPUT_LEN,
    P_OUTPUT_RANGE,
    P_OUTPUT_STD,
    P_PREFIX_LEN,
    P_VOCAB_SIZE,
    P_FIRST_ID,
    P_IGNORE_EOS,
    P_MAX_PROMPT_LEN,
    P_EPOCHS,
    P_SEED,
    P_SHUFFLE,
    P_PREFETCH,
    P_WORKERS,
    P_COUNT
};
enum { SRC_SYNTHETIC, SRC_JSONL, SRC_SHAREGPT };
enum { DIST_FIXED, DIST_UNIFORM, DIST_NORMAL, DIST_LOGNORMAL };

#define CB_PROMPTS_MAX_FILE_BYTES (UINT64_C(4) << 30)
#define CB_PROMPTS_MAX_LINE_BYTES ((size_t)64 << 20)
#define CB_PROMPTS_MAX_RECORDS 100000000
#define CB_PROMPTS_DEFAULT_SYNTHETIC 1000
#define CB_PROMPTS_SPLIT "prompts"

#define DIST_CHOICES "fixed|uniform|normal|lognormal"

static const cb_param_def cb_prompts_params[P_COUNT] = {
    [P_SOURCE] = {"source", CB_PARAM_ENUM, "synthetic", CB_PARAM_UNBOUNDED,
                  "synthetic|jsonl|sharegpt",
                  "synthetic: random token ids (vllm's random dataset); jsonl: one {\"prompt\" "
                  "or \"prompt_ids\"} object a line; sharegpt: a JSON array of conversations"},
    [P_PATH] = {"path", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",
                "the jsonl or sharegpt file (required for those sources)"},
    [P_NUM_PROMPTS] = {"num_prompts", CB_PARAM_INT, "0", 0, CB_DATA_MAX_BATCHES, NULL,
                       "requests (queries) per epoch; 0 = every record of the file, or 1000 "
                       "(synthetic); more than the file has wraps around"},
    [P_INPUT_DIST] = {"input_dist", CB_PARAM_ENUM, "fixed", CB_PARAM_UNBOUNDED, DIST_CHOICES,
                      "distribution of the synthetic input length around input_len"},
    [P_INPUT_LEN] = {"input_len", CB_PARAM_INT, "1024", 1, CB_LLM_MAX_PROMPT_TOKENS, NULL,
                     "mean synthetic input length in tokens, after the prefix"},
    [P_INPUT_RANGE] = {"input_range_ratio", CB_PARAM_FLOAT, "0", 0, 1, NULL,
                       "uniform: input lengths in [input_len (1 - r), input_len (1 + r)]"},
    [P_INPUT_STD] = {"input_std", CB_PARAM_FLOAT, "0", 0, 1e7, NULL,
                     "normal, lognormal: standard deviation of the input length in tokens"},
    [P_OUTPUT_DIST] = {"output_dist", CB_PARAM_ENUM, "fixed", CB_PARAM_UNBOUNDED, DIST_CHOICES,
                       "distribution of max_new_tokens around output_len (set: overrides files)"},
    [P_OUTPUT_LEN] = {"output_len", CB_PARAM_INT, "128", 1, CB_LLM_MAX_NEW_TOKENS, NULL,
                      "mean output length (max_new_tokens) in tokens (set: overrides files)"},
    [P_OUTPUT_RANGE] = {"output_range_ratio", CB_PARAM_FLOAT, "0", 0, 1, NULL,
                        "uniform: output lengths in [output_len (1 - r), output_len (1 + r)]"},
    [P_OUTPUT_STD] = {"output_std", CB_PARAM_FLOAT, "0", 0, 1e7, NULL,
                      "normal, lognormal: standard deviation of the output length in tokens"},
    [P_PREFIX_LEN] = {"prefix_len", CB_PARAM_INT, "0", 0, CB_LLM_MAX_PROMPT_TOKENS - 1, NULL,
                      "synthetic: token ids every prompt starts with (the same for all)"},
    [P_VOCAB_SIZE] = {"vocab_size", CB_PARAM_INT, "32000", 1, 2147483647.0, NULL,
                      "token ids are below this (synthetic draws, prompt_ids checked when set)"},
    [P_FIRST_ID] = {"first_id", CB_PARAM_INT, "0", 0, 2147483646.0, NULL,
                    "synthetic ids are drawn uniformly in [first_id, vocab_size)"},
    [P_IGNORE_EOS] = {"ignore_eos", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                      "ask the generating stage for exactly max_new_tokens tokens (flag)"},
    [P_MAX_PROMPT_LEN] = {"max_prompt_len", CB_PARAM_INT, "1048576", 1, CB_LLM_MAX_PROMPT_BYTES,
                          NULL,
                          "longest prompt in ids (at most 1048576) or bytes of text; a longer "
                          "one in a file is an error"},
    [P_EPOCHS] = {"epochs", CB_PARAM_INT, "1", 1, CB_DATA_MAX_EPOCHS, NULL,
                  "passes over the requests"},
    [P_SEED] = {"seed", CB_PARAM_INT, "0", 0, 9.2e18, NULL,
                "dataset seed (lengths, ids, sampling seeds, shuffle); the same for every worker"},
    [P_SHUFFLE] = {"shuffle", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                   "reorder the requests every epoch, seeded by (seed, epoch) (flag)"},
    [P_PREFETCH] = {"prefetch", CB_PARAM_INT, "2", 0, 1024, NULL,
                    "requests made ahead by background threads (0 = make in run)"},
    [P_WORKERS] = {"workers", CB_PARAM_INT, "1", 1, 64, NULL,
                   "prefetch threads per stage instance"},
};

enum { M_PROMPT_TOKENS, M_PROMPT_BYTES, M_MAX_NEW_TOKENS, M_COUNT };

static const cb_metric_def cb_prompts_metrics[M_COUNT] = {
    [M_PROMPT_TOKENS] = {"prompt_tokens", CB_METRIC_COUNT, "tokens",
                         "prompt token ids of the request (requests with ids)"},
    [M_PROMPT_BYTES] = {"prompt_bytes", CB_METRIC_COUNT, "bytes",
                        "prompt text bytes of the request (text-only requests)"},
    [M_MAX_NEW_TOKENS] = {"max_new_tokens", CB_METRIC_COUNT, "tokens",
                          "output length the request asks for"},
};

typedef struct cb_prompts_dist {
    int kind;
    double mean, range_ratio, std;
    double mu, sigma; /* lognormal */
} cb_prompts_dist;

/* One request of a file. */
typedef struct cb_prompts_rec {
    uint64_t text_off; /* into text */
    uint64_t ids_off;  /* into ids */
    uint32_t n_text, n_ids;
    uint32_t max_new;  /* 0: the file gives none */
    uint32_t n_turns;
} cb_prompts_rec;

typedef struct cb_prompts_state {
    cb_data_common c;
    const cb_host *host;
    const char *path;
    int source;
    cb_prompts_dist in, out;
    int out_override;       /* the config sets the output length: it overrides the file */
    uint32_t prefix_len, vocab, first_id, max_prompt, ignore_eos;
    uint32_t vocab_checked; /* vocab_size for file ids when the config sets it, else 0 */
    uint64_t distinct;      /* requests before the order wraps */
    int32_t *prefix;        /* prefix_len ids */
    cb_prompts_rec *recs;
    size_t n_recs, recs_cap;
    char *text;
    size_t text_len, text_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
    size_t skipped;         /* ShareGPT conversations without a human turn and a gpt answer */
} cb_prompts_state;

#define TAG_REQUEST 0x4c4c4d524551ULL /* "LLMREQ" */
#define TAG_SAMPLE 0x53414d504c45ULL  /* "SAMPLE" */
#define TAG_PREFIX 0x505245464958ULL  /* "PREFIX" */

/* ---- lengths ------------------------------------------------------------------------------ */

static void cb_prompts_dist_init(cb_prompts_dist *d, const cb_param_value *v, int dist, int len,
                                 int range, int std) {
    d->kind = (int)v[dist].i;
    d->mean = (double)v[len].i;
    d->range_ratio = v[range].f;
    d->std = v[std].f;
    d->sigma = sqrt(log1p(d->std * d->std / (d->mean * d->mean)));
    d->mu = log(d->mean) - d->sigma * d->sigma / 2;
}

/* One length from d, clamped to [1, max]. */
static uint32_t cb_prompts_draw(const cb_prompts_dist *d, cb_rng *r, uint32_t max) {
    double x = d->mean;
    switch (d->kind) {
    case DIST_UNIFORM: {
        double lo = floor(d->mean * (1 - d->range_ratio)), hi = floor(d->mean * (1 + d->range_ratio));
        uint64_t span = (uint64_t)(hi - lo) + 1;
        x = lo + (double)(cb_rng_u64(r) % span);
        break;
    }
    case DIST_NORMAL: x = nearbyint(d->mean + d->std * cb_rng_normal(r)); break;
    case DIST_LOGNORMAL: x = nearbyint(exp(d->mu + d->sigma * cb_rng_normal(r))); break;
    default: break;
    }
    if (!(x >= 1)) return 1; /* also NaN */
    if (x >= (double)max) return max;
    return (uint32_t)x;
}

/* An id uniform in [first_id, vocab) (multiply-shift: no division, bias below 2^-32). */
static inline int32_t cb_prompts_id(const cb_prompts_state *s, cb_rng *r) {
    uint64_t span = (uint64_t)s->vocab - s->first_id;
    return (int32_t)(s->first_id + (((cb_rng_u64(r) >> 32) * span) >> 32));
}

/* ---- requests ----------------------------------------------------------------------------- */

static int cb_prompts_make(void *state, const cb_data_key *k, cb_buffer **out, cb_error *err) {
    cb_prompts_state *s = state;
    uint64_t idx = cb__data_index(&s->c, k, (uint64_t)k->batch, s->distinct);
    cb_rng r;
    cb_rng_seed(&r, cb__data_mix(cb__data_mix(s->c.seed, TAG_REQUEST), idx));
    const cb_prompts_rec *rec = s->source == SRC_SYNTHETIC ? NULL : &s->recs[idx];
    uint32_t n_ids, n_text = 0, max_new;
    if (!rec) {
        n_ids = s->prefix_len + cb_prompts_draw(&s->in, &r, s->max_prompt - s->prefix_len);
        max_new = cb_prompts_draw(&s->out, &r, CB_LLM_MAX_NEW_TOKENS);
    } else {
        n_ids = rec->n_ids;
        n_text = rec->n_text;
        max_new = rec->max_new && !s->out_override ? rec->max_new
                                                   : cb_prompts_draw(&s->out, &r, CB_LLM_MAX_NEW_TOKENS);
    }
    size_t bytes = cb_llm_request_bytes(n_ids, 0, n_text);
    cb_buffer *buf = bytes ? s->host->buffer_new(bytes) : NULL;
    if (!buf)
        return cb_util_error(err, CB_ENOMEM, "cannot allocate request %llu (%zu bytes)",
                             (unsigned long long)idx, bytes);
    cb_llm_request *q = cb_llm_request_init(buf, n_ids, 0, n_text);
    q->flags = s->ignore_eos ? CB_LLM_REQ_IGNORE_EOS : 0;
    q->index = (int64_t)idx;
    q->seed = cb__data_mix(cb__data_mix(s->c.seed, TAG_SAMPLE), idx);
    q->max_new_tokens = max_new;
    q->split = k->split;
    q->epoch = k->epoch;
    q->batch = k->batch;
    snprintf(q->split_name, sizeof q->split_name, "%s", s->c.split[k->split].name);
    int32_t *ids = cb_llm_request_prompt_ids(q);
    if (!rec) {
        q->prefix_tokens = s->prefix_len;
        q->vocab_size = s->vocab;
        if (s->prefix_len) memcpy(ids, s->prefix, sizeof *ids * s->prefix_len);
        for (uint32_t i = s->prefix_len; i < n_ids; i++) ids[i] = cb_prompts_id(s, &r);
    } else {
        q->n_turns = rec->n_turns;
        q->vocab_size = s->vocab_checked;
        if (n_ids) memcpy(ids, s->ids + rec->ids_off, sizeof *ids * n_ids);
        if (n_text) memcpy(cb_llm_request_text(q), s->text + rec->text_off, n_text);
    }
    *out = buf;
    return CB_OK;
}

/* ---- files -------------------------------------------------------------------------------- */

/* Reads path whole into a host allocation, NUL-terminated. */
static int cb_prompts_slurp(const cb_prompts_state *s, char **out, size_t *len, cb_error *err) {
    struct stat st;
    if (stat(s->path, &st) != 0)
        return cb_util_error(err, CB_EIO, "cannot open '%s': %s", s->path, strerror(errno));
    if ((uint64_t)st.st_size > CB_PROMPTS_MAX_FILE_BYTES)
        return cb_util_error(err, CB_EINVAL, "'%s': %llu bytes, more than the %llu a prompt file "
                             "may have", s->path, (unsigned long long)st.st_size,
                             (unsigned long long)CB_PROMPTS_MAX_FILE_BYTES);
    size_t n = (size_t)st.st_size;
    char *p = s->host->alloc(n + 1);
    if (!p) return cb_util_error(err, CB_ENOMEM, "'%s': out of memory (%zu bytes)", s->path, n);
    int rc = cb__data_read_file(s->path, p, n, err);
    if (rc) {
        s->host->free(p);
        return rc;
    }
    p[n] = 0;
    *out = p;
    *len = n;
    return CB_OK;
}

/* Formats "path:line:col: where: what" into err (the position is in the message: the host sets
 * err's own position to the stage's place in the config). */
static int cb_prompts_file_error(const cb_prompts_state *s, cb_error *err, int code, int line,
                                 int col, const char *where, const char *what) {
    char pos[64] = "";
    if (line > 0 && col > 0) snprintf(pos, sizeof pos, ":%d:%d", line, col);
    else if (line > 0) snprintf(pos, sizeof pos, ":%d", line);
    return cb_util_error(err, code, "%s%s: %s%s%s", s->path, pos, where ? where : "",
                         where && *where ? ": " : "", what);
}

static int cb_prompts_add_text(cb_prompts_state *s, cb_prompts_rec *r, const char *t, size_t n) {
    if (cb__data_grow(s->host, (void **)&s->text, &s->text_cap, s->text_len + n, 1,
                      (size_t)CB_PROMPTS_MAX_FILE_BYTES))
        return CB_ENOMEM;
    memcpy(s->text + s->text_len, t, n);
    r->text_off = s->text_len;
    r->n_text = (uint32_t)n;
    s->text_len += n;
    return CB_OK;
}

static int cb_prompts_push(cb_prompts_state *s, const cb_prompts_rec *r) {
    if (cb__data_grow(s->host, (void **)&s->recs, &s->recs_cap, s->n_recs + 1, sizeof *r,
                      CB_PROMPTS_MAX_RECORDS))
        return CB_ENOMEM;
    s->recs[s->n_recs++] = *r;
    return CB_OK;
}

/* A text prompt: valid UTF-8, non-empty, at most max_prompt bytes. NULL or the problem. */
static const char *cb_prompts_text_problem(const cb_prompts_state *s, const cb__jdom_node *v,
                                           char *buf, size_t size) {
    if (!v || v->type != CB_JDOM_STR) return "expected a string";
    if (v->n == 0) return "empty prompt";
    if (v->n > s->max_prompt) {
        snprintf(buf, size, "prompt has %zu bytes, more than max_prompt_len (%u)", v->n,
                 s->max_prompt);
        return buf;
    }
    if (cb_llm_utf8_valid_prefix((const unsigned char *)v->v.str, v->n) != v->n)
        return "prompt is not valid UTF-8";
    return NULL;
}

/* One JSONL object into a record. where/what describe a problem (what NULL: out of memory). */
static int cb_prompts_jsonl_obj(cb_prompts_state *s, const cb__jdom_node *o, const char **where,
                                const char **what, char *buf, size_t size) {
    cb_prompts_rec r = {.n_turns = 1};
    *where = "";
    if (o->type != CB_JDOM_OBJ) return *what = "expected a JSON object", CB_EINVAL;
    const cb__jdom_node *t = cb__jdom_get(o, "prompt"), *ids = cb__jdom_get(o, "prompt_ids");
    const cb__jdom_node *mx = cb__jdom_get(o, "max_tokens");
    if (!mx) mx = cb__jdom_get(o, "output_len");
    if (!t && !ids) return *what = "neither \"prompt\" nor \"prompt_ids\" is given", CB_EINVAL;
    if (t && (*what = cb_prompts_text_problem(s, t, buf, size)) != NULL)
        return *where = "prompt", CB_EINVAL;
    if (ids) {
        *where = "prompt_ids";
        if (ids->type != CB_JDOM_ARR) return *what = "expected an array of token ids", CB_EINVAL;
        if (ids->n == 0) return *what = "empty prompt", CB_EINVAL;
        uint32_t lim = s->max_prompt < CB_LLM_MAX_PROMPT_TOKENS ? s->max_prompt
                                                                : CB_LLM_MAX_PROMPT_TOKENS;
        if (ids->n > lim) {
            snprintf(buf, size, "prompt has %zu ids, more than max_prompt_len (%u)", ids->n, lim);
            return *what = buf, CB_EINVAL;
        }
        double top = s->vocab_checked ? (double)s->vocab_checked : 2147483648.0;
        for (size_t i = 0; i < ids->n; i++) {
            const cb__jdom_node *e = &ids->v.items[i];
            if (e->type != CB_JDOM_NUM || e->v.num != floor(e->v.num) || e->v.num < 0 ||
                e->v.num >= top) {
                snprintf(buf, size, "item %zu: expected an integer id in [0, %.0f)", i, top);
                return *what = buf, CB_EINVAL;
            }
        }
        if (cb__data_grow(s->host, (void **)&s->ids, &s->ids_cap, s->ids_len + ids->n,
                          sizeof *s->ids, CB_PROMPTS_MAX_FILE_BYTES))
            return *what = NULL, CB_ENOMEM;
        r.ids_off = s->ids_len;
        r.n_ids = (uint32_t)ids->n;
        for (size_t i = 0; i < ids->n; i++)
            s->ids[s->ids_len++] = (int32_t)ids->v.items[i].v.num;
    }
    if (mx) {
        *where = cb__jdom_get(o, "max_tokens") ? "max_tokens" : "output_len";
        if (mx->type != CB_JDOM_NUM || mx->v.num != floor(mx->v.num) || mx->v.num < 1 ||
            mx->v.num > CB_LLM_MAX_NEW_TOKENS) {
            snprintf(buf, size, "expected an integer in [1, %u]", CB_LLM_MAX_NEW_TOKENS);
            return *what = buf, CB_EINVAL;
        }
        r.max_new = (uint32_t)mx->v.num;
    }
    if (t && cb_prompts_add_text(s, &r, t->v.str, t->n)) return *what = NULL, CB_ENOMEM;
    if (cb_prompts_push(s, &r)) return *what = NULL, CB_ENOMEM;
    return CB_OK;
}

static int cb_prompts_load_jsonl(cb_prompts_state *s, const char *f, size_t len, cb_error *err) {
    int line = 0;
    char buf[160];
    for (size_t pos = 0; pos < len;) {
        line++;
        const char *nl = memchr(f + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - f) : len, n = end - pos;
        const char *l = f + pos;
        pos = end + 1;
        if (n > CB_PROMPTS_MAX_LINE_BYTES) {
            snprintf(buf, sizeof buf, "line of %zu bytes, more than the %zu a line may have", n,
                     CB_PROMPTS_MAX_LINE_BYTES);
            return cb_prompts_file_error(s, err, CB_EINVAL, line, 0, NULL, buf);
        }
        size_t k = 0;
        while (k < n && (l[k] == ' ' || l[k] == '\t' || l[k] == '\r')) k++;
        if (k == n) continue; /* blank line */
        cb__jdom *doc = NULL;
        cb_error je;
        cb_error_clear(&je);
        int rc = cb__jdom_parse(l, n, s->path, &doc, &je);
        if (rc) {
            cb__jdom_free(doc);
            return cb_prompts_file_error(s, err, rc, line, je.col, NULL, je.msg);
        }
        const char *where = "", *what = NULL;
        rc = cb_prompts_jsonl_obj(s, cb__jdom_root(doc), &where, &what, buf, sizeof buf);
        cb__jdom_free(doc);
        if (rc == CB_ENOMEM) return cb_prompts_file_error(s, err, rc, line, 0, NULL, "out of memory");
        if (rc) return cb_prompts_file_error(s, err, rc, line, 0, where, what);
    }
    return CB_OK;
}

static int cb_prompts_is(const cb__jdom_node *v, const char *a, const char *b) {
    return v && v->type == CB_JDOM_STR && (strcmp(v->v.str, a) == 0 || strcmp(v->v.str, b) == 0);
}

static int cb_prompts_load_sharegpt(cb_prompts_state *s, const char *f, size_t len,
                                    cb_error *err) {
    cb__jdom *doc = NULL;
    cb_error je;
    cb_error_clear(&je);
    int rc = cb__jdom_parse(f, len, s->path, &doc, &je);
    if (rc) {
        cb__jdom_free(doc);
        return cb_prompts_file_error(s, err, rc, je.line, je.col, NULL, je.msg);
    }
    const cb__jdom_node *root = cb__jdom_root(doc);
    char where[96], buf[160];
    const char *what = NULL;
    const cb__jdom_node *bad = root;
    rc = CB_EINVAL;
    where[0] = 0;
    if (root->type != CB_JDOM_ARR) {
        what = "expected a JSON array of conversations (ShareGPT)";
        goto fail;
    }
    for (size_t i = 0; i < root->n; i++) {
        const cb__jdom_node *e = &root->v.items[i];
        bad = e;
        snprintf(where, sizeof where, "[%zu]", i);
        if (e->type != CB_JDOM_OBJ) {
            what = "expected an object with \"conversations\"";
            goto fail;
        }
        const cb__jdom_node *conv = cb__jdom_get(e, "conversations");
        snprintf(where, sizeof where, "[%zu].conversations", i);
        if (!conv || conv->type != CB_JDOM_ARR) {
            what = conv ? "expected an array of turns" : "missing";
            goto fail;
        }
        size_t human = conv->n;
        for (size_t j = 0; j < conv->n; j++) {
            const cb__jdom_node *t = &conv->v.items[j];
            bad = t;
            snprintf(where, sizeof where, "[%zu].conversations[%zu]", i, j);
            const cb__jdom_node *from = t->type == CB_JDOM_OBJ ? cb__jdom_get(t, "from") : NULL;
            const cb__jdom_node *val = t->type == CB_JDOM_OBJ ? cb__jdom_get(t, "value") : NULL;
            if (!from || from->type != CB_JDOM_STR || !val || val->type != CB_JDOM_STR) {
                what = "expected an object with string \"from\" and \"value\"";
                if (val && val->type != CB_JDOM_STR) bad = val;
                goto fail;
            }
            if (human == conv->n && cb_prompts_is(from, "human", "user")) human = j;
        }
        bad = e;
        if (human + 1 >= conv->n || !cb_prompts_is(cb__jdom_get(&conv->v.items[human + 1], "from"),
                                                   "gpt", "assistant") ||
            cb__jdom_get(&conv->v.items[human], "value")->n == 0) {
            s->skipped++;
            continue;
        }
        const cb__jdom_node *pv = cb__jdom_get(&conv->v.items[human], "value");
        const cb__jdom_node *gv = cb__jdom_get(&conv->v.items[human + 1], "value");
        snprintf(where, sizeof where, "[%zu].conversations[%zu].value", i, human);
        bad = pv;
        if ((what = cb_prompts_text_problem(s, pv, buf, sizeof buf)) != NULL) goto fail;
        uint64_t out = (gv->n + 3) / 4;
        cb_prompts_rec r = {.n_turns = (uint32_t)(conv->n < UINT32_MAX ? conv->n : UINT32_MAX),
                            .max_new = (uint32_t)(out < 1 ? 1
                                                  : out > CB_LLM_MAX_NEW_TOKENS
                                                      ? CB_LLM_MAX_NEW_TOKENS
                                                      : out)};
        if (cb_prompts_add_text(s, &r, pv->v.str, pv->n) || cb_prompts_push(s, &r)) {
            rc = CB_ENOMEM;
            what = "out of memory";
            goto fail;
        }
    }
    cb__jdom_free(doc);
    return CB_OK;
fail:;
    int line = 0, col = 0;
    cb__jdom_linecol(f, len, bad->off, &line, &col);
    rc = cb_prompts_file_error(s, err, rc, line, col, where, what);
    cb__jdom_free(doc);
    return rc;
}

/* ---- ops ---------------------------------------------------------------------------------- */

static int cb_prompts_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    int src = (int)v[P_SOURCE].i;
    if (src != SRC_SYNTHETIC && !v[P_PATH].has_value)
        return cb_util_error(err, CB_ECONFIG, "path: source %s needs a file", v[P_SOURCE].s);
    if (src == SRC_SYNTHETIC && v[P_PATH].is_set)
        return cb_util_error(err, CB_ECONFIG, "path: source synthetic reads no file (set source: "
                             "jsonl or sharegpt)");
    if (v[P_FIRST_ID].i >= v[P_VOCAB_SIZE].i)
        return cb_util_error(err, CB_ECONFIG, "first_id: %lld, but ids must be below vocab_size "
                             "(%lld)", (long long)v[P_FIRST_ID].i, (long long)v[P_VOCAB_SIZE].i);
    int64_t max_ids = v[P_MAX_PROMPT_LEN].i < CB_LLM_MAX_PROMPT_TOKENS ? v[P_MAX_PROMPT_LEN].i
                                                                        : CB_LLM_MAX_PROMPT_TOKENS;
    if (src == SRC_SYNTHETIC && v[P_PREFIX_LEN].i >= max_ids)
        return cb_util_error(err, CB_ECONFIG, "prefix_len: %lld leaves no room for input below "
                             "max_prompt_len (%lld)", (long long)v[P_PREFIX_LEN].i,
                             (long long)max_ids);
    return CB_OK;
}

static int cb_prompts_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_prompts_state *s = state;
    const cb_param_value *v = args->values;
    int rc = cb_prompts_check(args, err);
    if (rc) return rc;
    s->host = args->host;
    s->source = (int)v[P_SOURCE].i;
    s->path = v[P_PATH].has_value ? v[P_PATH].s : NULL;
    cb_prompts_dist_init(&s->in, v, P_INPUT_DIST, P_INPUT_LEN, P_INPUT_RANGE, P_INPUT_STD);
    cb_prompts_dist_init(&s->out, v, P_OUTPUT_DIST, P_OUTPUT_LEN, P_OUTPUT_RANGE, P_OUTPUT_STD);
    s->out_override = v[P_OUTPUT_DIST].is_set || v[P_OUTPUT_LEN].is_set;
    s->vocab = (uint32_t)v[P_VOCAB_SIZE].i;
    s->vocab_checked = v[P_VOCAB_SIZE].is_set ? s->vocab : 0;
    s->first_id = (uint32_t)v[P_FIRST_ID].i;
    s->max_prompt = (uint32_t)v[P_MAX_PROMPT_LEN].i;
    s->ignore_eos = (uint32_t)v[P_IGNORE_EOS].i;

    cb_data_common *c = &s->c;
    c->host = args->host;
    c->stage = args->stage;
    c->batch_size = 1;
    c->epochs = (int32_t)v[P_EPOCHS].i;
    c->seed = (uint64_t)v[P_SEED].i;
    c->shuffle = (int)v[P_SHUFFLE].i;
    c->prefetch = (int)v[P_PREFETCH].i;
    c->threads = (int)v[P_WORKERS].i;
    c->make = cb_prompts_make;
    c->make_state = s;
    if (args->workers > 1 && args->worker == 0 && c->prefetch > 0 && s->host->log)
        s->host->log(CB_LOG_WARN, args->stage,
                     "every stage worker prefetches the whole stream and skips the requests "
                     "other workers take: prefer workers: 1 on the stage and the `workers` "
                     "parameter for prefetch threads");

    if (s->source == SRC_SYNTHETIC) {
        if (s->max_prompt > CB_LLM_MAX_PROMPT_TOKENS) s->max_prompt = CB_LLM_MAX_PROMPT_TOKENS;
        s->prefix_len = (uint32_t)v[P_PREFIX_LEN].i;
        if (s->prefix_len) {
            s->prefix = s->host->alloc(sizeof *s->prefix * s->prefix_len);
            if (!s->prefix) return cb_util_error(err, CB_ENOMEM, "prefix_len: out of memory");
            cb_rng r;
            cb_rng_seed(&r, cb__data_mix(c->seed, TAG_PREFIX));
            for (uint32_t i = 0; i < s->prefix_len; i++) s->prefix[i] = cb_prompts_id(s, &r);
        }
        s->distinct = v[P_NUM_PROMPTS].i ? (uint64_t)v[P_NUM_PROMPTS].i
                                         : CB_PROMPTS_DEFAULT_SYNTHETIC;
    } else {
        char *f = NULL;
        size_t len = 0;
        if ((rc = cb_prompts_slurp(s, &f, &len, err)) != CB_OK) return rc;
        rc = s->source == SRC_JSONL ? cb_prompts_load_jsonl(s, f, len, err)
                                    : cb_prompts_load_sharegpt(s, f, len, err);
        s->host->free(f);
        if (rc) return rc;
        if (s->n_recs == 0)
            return cb_util_error(err, CB_EINVAL, "'%s': no prompts in the file%s", s->path,
                                 s->skipped ? " (every conversation lacks a human turn followed "
                                              "by a gpt turn)"
                                            : "");
        if (s->skipped && s->host->log) {
            char line[256];
            snprintf(line, sizeof line,
                     "'%s': skipped %zu of %zu conversations without a non-empty human turn "
                     "followed by a gpt turn", s->path, s->skipped, s->skipped + s->n_recs);
            s->host->log(CB_LOG_INFO, args->stage, line);
        }
        s->distinct = s->n_recs;
    }
    int64_t per_epoch = v[P_NUM_PROMPTS].i ? v[P_NUM_PROMPTS].i : (int64_t)s->distinct;
    if (per_epoch > CB_DATA_MAX_BATCHES) per_epoch = CB_DATA_MAX_BATCHES;
    return cb__data_add_split(c, CB_PROMPTS_SPLIT, per_epoch, err);
}

static int cb_prompts_prepare(void *state, cb_error *err) {
    cb_prompts_state *s = state;
    return cb__data_start(&s->c, err);
}

static int cb_prompts_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_prompts_state *s = state;
    int rc = cb__data_run(&s->c, q, err);
    if (rc || !ctx || s->host->struct_size < offsetof(cb_host, report) + sizeof s->host->report ||
        !s->host->report)
        return rc;
    const cb_llm_request *r = q->payload->data;
    if (r->n_prompt_tokens) s->host->report(ctx, M_PROMPT_TOKENS, (double)r->n_prompt_tokens);
    else s->host->report(ctx, M_PROMPT_BYTES, (double)r->prompt_bytes);
    s->host->report(ctx, M_MAX_NEW_TOKENS, (double)r->max_new_tokens);
    return CB_OK;
}

static int cb_prompts_splits(void *state, cb_splits *out, cb_error *err) {
    cb_prompts_state *s = state;
    return cb__data_splits(&s->c, out);
}

static void cb_prompts_finish(void *state) {
    cb_prompts_state *s = state;
    cb__data_stop(&s->c);
}

static void cb_prompts_destroy(void *state) {
    cb_prompts_state *s = state;
    cb__data_stop(&s->c);
    if (!s->host) return;
    s->host->free(s->prefix);
    s->host->free(s->recs);
    s->host->free(s->text);
    s->host->free(s->ids);
    s->prefix = NULL;
    s->recs = NULL;
    s->text = NULL;
    s->ids = NULL;
}

const cb_stage_ops cb_stage_llm_prompts = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "llm.prompts",
    .summary = "LLM requests, one per query: synthetic lengths/ids, JSONL or ShareGPT files",
    .params = cb_prompts_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_prompts_state),
    .create = cb_prompts_create,
    .prepare = cb_prompts_prepare,
    .run = cb_prompts_run,
    .finish = cb_prompts_finish,
    .destroy = cb_prompts_destroy,
    .splits = cb_prompts_splits,
    .metrics = cb_prompts_metrics,
    .n_metrics = M_COUNT,
    .check = cb_prompts_check,
};
