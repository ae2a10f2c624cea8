/* serve/oai_req.c - OpenAI-compatible request bodies into plain fields (oai_req.h).
 *
 * Design: one strict parse (llm/jdom.h) of the caller-bounded body, then one function per field
 * kind (integer, number, bool, "must hold its default") that names the field in its refusal, so
 * every message reads "FIELD: expected ..., got ...". Thread-safety: none needed (one request
 * per connection thread). Ownership: see oai_req.h. */
#include "serve/oai_req.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

int cb__oai_err_set(cb__oai_err *e, int status, const char *param, const char *code,
                    const char *fmt, ...) {
    e->status = status;
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *type_name(const cb__jdom_node *v) {
    switch (v->type) {
    case CB_JDOM_NULL: return "null";
    case CB_JDOM_BOOL: return "a boolean";
    case CB_JDOM_NUM: return "a number";
    case CB_JDOM_STR: return "a string";
    case CB_JDOM_ARR: return "an array";
    default: return "an object";
    }
}

static int is_null(const cb__jdom_node *v) { return !v || v->type == CB_JDOM_NULL; }

/* An integral number in [lo, hi] into *out; absent or null leaves *out. */
static int get_int(const cb__jdom_node *o, const char *key, double lo, double hi, int64_t *out,
                   cb__oai_err *e) {
    const cb__jdom_node *v = cb__jdom_get(o, key);
    if (is_null(v)) return 0;
    if (v->type != CB_JDOM_NUM)
        return cb__oai_err_set(e, 400, key, "invalid_type", "%s: expected an integer, got %s",
                               key, type_name(v));
    double d = v->v.num;
    if (d != floor(d) || d < lo || d > hi)
        return cb__oai_err_set(e, 400, key, "invalid_value",
                               "%s: expected an integer in [%.0f, %.0f], got %.17g", key, lo, hi,
                               d);
    *out = (int64_t)d;
    return 0;
}

/* A finite number in [lo, hi] (lo excluded when open_lo) into *out; absent or null leaves it. */
static int get_num(const cb__jdom_node *o, const char *key, double lo, int open_lo, double hi,
                   double *out, cb__oai_err *e) {
    const cb__jdom_node *v = cb__jdom_get(o, key);
    if (is_null(v)) return 0;
    if (v->type != CB_JDOM_NUM)
        return cb__oai_err_set(e, 400, key, "invalid_type", "%s: expected a number, got %s", key,
                               type_name(v));
    double d = v->v.num;
    if (!isfinite(d) || d < lo || (open_lo && d == lo) || d > hi)
        return cb__oai_err_set(e, 400, key, "invalid_value", "%s: expected a number in %c%g, %g], "
                               "got %.17g", key, open_lo ? '(' : '[', lo, hi, d);
    *out = d;
    return 0;
}

static int get_bool(const cb__jdom_node *o, const char *key, int *out, cb__oai_err *e) {
    const cb__jdom_node *v = cb__jdom_get(o, key);
    if (is_null(v)) return 0;
    if (v->type != CB_JDOM_BOOL)
        return cb__oai_err_set(e, 400, key, "invalid_type", "%s: expected a boolean, got %s", key,
                               type_name(v));
    *out = v->v.b;
    return 0;
}

/* A field colobench does not support unless it holds its default: absent or null always pass;
 * `ok` says whether a present value is the default. */
static int unsupported(const cb__jdom_node *o, const char *key, const char *what,
                       int (*ok)(const cb__jdom_node *), cb__oai_err *e) {
    const cb__jdom_node *v = cb__jdom_get(o, key);
    if (is_null(v) || (ok && ok(v))) return 0;
    return cb__oai_err_set(e, 400, key, "unsupported_value",
                           "%s: not supported by colobench serve (only %s)", key, what);
}

static int is_one(const cb__jdom_node *v) { return v->type == CB_JDOM_NUM && v->v.num == 1; }
static int is_zero(const cb__jdom_node *v) { return v->type == CB_JDOM_NUM && v->v.num == 0; }
static int is_false(const cb__jdom_node *v) { return v->type == CB_JDOM_BOOL && !v->v.b; }
static int is_empty(const cb__jdom_node *v) {
    return (v->type == CB_JDOM_STR || v->type == CB_JDOM_ARR || v->type == CB_JDOM_OBJ) &&
           v->n == 0;
}
static int is_text_format(const cb__jdom_node *v) {
    const cb__jdom_node *t = cb__jdom_get(v, "type");
    return v->type == CB_JDOM_OBJ && t && t->type == CB_JDOM_STR && !strcmp(t->v.str, "text");
}

/* An array of token ids into r->ids. */
static int read_ids(const cb__jdom_node *a, int32_t vocab, int64_t max_ids, cb__oai_req *r,
                    cb__oai_err *e) {
    if (a->n == 0)
        return cb__oai_err_set(e, 400, "prompt", "invalid_value", "prompt: empty array of ids");
    if ((int64_t)a->n > max_ids)
        return cb__oai_err_set(e, 400, "prompt", "context_length_exceeded",
                               "prompt: %zu token ids, more than the model's %lld positions",
                               a->n, (long long)max_ids);
    r->ids = cb_malloc(a->n * sizeof *r->ids);
    if (!r->ids) return cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < a->n; i++) {
        const cb__jdom_node *v = &a->v.items[i];
        double d = v->type == CB_JDOM_NUM ? v->v.num : -1;
        if (v->type != CB_JDOM_NUM || d != floor(d) || d < 0 || d >= vocab)
            return cb__oai_err_set(e, 400, "prompt", "invalid_value",
                                   "prompt[%zu]: expected a token id in [0, %d), got %s%.17g", i,
                                   (int)vocab, v->type == CB_JDOM_NUM ? "" : "non-number ",
                                   v->type == CB_JDOM_NUM ? d : 0.0);
        r->ids[i] = (int32_t)d;
    }
    r->n_ids = (int32_t)a->n;
    return 0;
}

static int read_prompt(const cb__jdom_node *o, int32_t vocab, int64_t max_ids, cb__oai_req *r,
                       cb__oai_err *e) {
    const cb__jdom_node *p = cb__jdom_get(o, "prompt");
    if (is_null(p))
        return cb__oai_err_set(e, 400, "prompt", "missing_required_parameter",
                               "prompt: required (a string, an array of one string, or an array "
                               "of token ids)");
    if (p->type == CB_JDOM_ARR && p->n == 1 &&
        (p->v.items[0].type == CB_JDOM_STR || p->v.items[0].type == CB_JDOM_ARR))
        p = &p->v.items[0]; /* a batch of one */
    if (p->type == CB_JDOM_STR) {
        r->text = p->v.str;
        r->text_len = p->n;
        return 0;
    }
    if (p->type == CB_JDOM_ARR) {
        if (p->n > 0 && p->v.items[0].type != CB_JDOM_NUM)
            return cb__oai_err_set(e, 400, "prompt", "unsupported_value",
                                   "prompt: a batch of %zu prompts: colobench serve takes one "
                                   "prompt a request", p->n);
        return read_ids(p, vocab, max_ids, r, e);
    }
    return cb__oai_err_set(e, 400, "prompt", "invalid_type",
                           "prompt: expected a string or an array, got %s", type_name(p));
}

static int read_messages(const cb__jdom_node *o, size_t body_len, cb__oai_req *r,
                         cb__oai_err *e) {
    const cb__jdom_node *m = cb__jdom_get(o, "messages");
    if (is_null(m))
        return cb__oai_err_set(e, 400, "messages", "missing_required_parameter",
                               "messages: required (an array of {role, content})");
    if (m->type != CB_JDOM_ARR || m->n == 0)
        return cb__oai_err_set(e, 400, "messages", "invalid_value",
                               "messages: expected a non-empty array, got %s%s", type_name(m),
                               m->type == CB_JDOM_ARR ? " with no items" : "");
    if (m->n > CB_OAI_MESSAGES_MAX)
        return cb__oai_err_set(e, 400, "messages", "invalid_value",
                               "messages: %zu messages, more than %d", m->n, CB_OAI_MESSAGES_MAX);
    r->msgs = cb_calloc(m->n, sizeof *r->msgs);
    r->joined = cb_malloc(body_len + m->n + 1); /* all parts' text fits in the body */
    if (!r->msgs || !r->joined) return cb__oai_err_set(e, 500, NULL, NULL, "out of memory");
    size_t used = 0;
    for (size_t i = 0; i < m->n; i++) {
        const cb__jdom_node *x = &m->v.items[i];
        const cb__jdom_node *role = cb__jdom_get(x, "role");
        const cb__jdom_node *c = cb__jdom_get(x, "content");
        if (x->type != CB_JDOM_OBJ || !role || role->type != CB_JDOM_STR)
            return cb__oai_err_set(e, 400, "messages", "invalid_value",
                                   "messages[%zu]: expected an object with a string role", i);
        r->msgs[i].role = role->v.str;
        if (is_null(c)) {
            r->msgs[i].content = "";
        } else if (c->type == CB_JDOM_STR) {
            if (strlen(c->v.str) != c->n)
                return cb__oai_err_set(e, 400, "messages", "invalid_value",
                                       "messages[%zu].content: contains a NUL character", i);
            r->msgs[i].content = c->v.str;
        } else if (c->type == CB_JDOM_ARR) {
            char *start = r->joined + used;
            for (size_t j = 0; j < c->n; j++) {
                const cb__jdom_node *part = &c->v.items[j];
                const cb__jdom_node *t = cb__jdom_get(part, "text");
                if (!is_text_format(part) || !t || t->type != CB_JDOM_STR ||
                    strlen(t->v.str) != t->n)
                    return cb__oai_err_set(e, 400, "messages", "unsupported_value",
                                           "messages[%zu].content[%zu]: only {\"type\": \"text\", "
                                           "\"text\": string} parts are supported", i, j);
                memcpy(r->joined + used, t->v.str, t->n);
                used += t->n;
            }
            r->joined[used++] = 0;
            r->msgs[i].content = start;
        } else {
            return cb__oai_err_set(e, 400, "messages", "invalid_type",
                                   "messages[%zu].content: expected a string or an array of text "
                                   "parts, got %s", i, type_name(c));
        }
    }
    r->n_msgs = m->n;
    return 0;
}

static int read_fields(cb__oai_kind kind, const cb__jdom_node *o, size_t len, int32_t vocab,
                       int64_t max_ids, cb__oai_req *r, cb__oai_err *e) {
    const cb__jdom_node *v = cb__jdom_get(o, "model");
    if (!is_null(v) && v->type != CB_JDOM_STR)
        return cb__oai_err_set(e, 400, "model", "invalid_type", "model: expected a string, got %s",
                               type_name(v));
    r->model = is_null(v) ? NULL : v->v.str;
    int64_t n = 1, mt = -1, top_k = 0;
    double t = 1.0, top_p = 1.0;
    if (get_int(o, "n", 1, 1, &n, e) || get_int(o, "max_tokens", 1, 2147483647.0, &mt, e) ||
        (kind == CB_OAI_CHAT &&
         get_int(o, "max_completion_tokens", 1, 2147483647.0, &mt, e)) ||
        get_num(o, "temperature", 0, 0, 1e6, &t, e) || get_num(o, "top_p", 0, 1, 1, &top_p, e) ||
        get_int(o, "top_k", -1, 2147483647.0, &top_k, e) ||
        get_bool(o, "ignore_eos", &r->ignore_eos, e) || get_bool(o, "stream", &r->stream, e))
        return -1;
    v = cb__jdom_get(o, "seed");
    if (!is_null(v)) { /* any 64-bit integer, signed or not (2^53 and above as JSON rounds it) */
        double d = v->type == CB_JDOM_NUM ? v->v.num : 0.5;
        if (d != floor(d) || d < -9223372036854775808.0 || d >= 18446744073709551616.0)
            return cb__oai_err_set(e, 400, "seed", "invalid_value",
                                   "seed: expected a 64-bit integer, got %s", type_name(v));
        r->has_seed = 1;
        r->seed = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
    }
    r->max_tokens = mt;
    r->sampling.temperature = t;
    r->sampling.top_p = top_p;
    r->sampling.top_k = top_k < 0 ? 0 : (int32_t)top_k;
    v = cb__jdom_get(o, "stream_options");
    if (!is_null(v)) {
        if (v->type != CB_JDOM_OBJ)
            return cb__oai_err_set(e, 400, "stream_options", "invalid_type",
                                   "stream_options: expected an object, got %s", type_name(v));
        if (get_bool(v, "include_usage", &r->include_usage, e)) return -1;
    }
    if (unsupported(o, "best_of", "1", is_one, e) || unsupported(o, "echo", "false", is_false, e) ||
        unsupported(o, "stop", "null, \"\" or []", is_empty, e) ||
        unsupported(o, "suffix", "null or \"\"", is_empty, e) ||
        unsupported(o, "frequency_penalty", "0", is_zero, e) ||
        unsupported(o, "presence_penalty", "0", is_zero, e) ||
        unsupported(o, "logit_bias", "null or {}", is_empty, e) ||
        unsupported(o, "tools", "null or []", is_empty, e) ||
        unsupported(o, "top_logprobs", "null", NULL, e) ||
        unsupported(o, "response_format", "{\"type\": \"text\"}", is_text_format, e) ||
        unsupported(o, "logprobs", kind == CB_OAI_CHAT ? "false" : "null",
                    kind == CB_OAI_CHAT ? is_false : NULL, e))
        return -1;
    return kind == CB_OAI_CHAT ? read_messages(o, len, r, e) : read_prompt(o, vocab, max_ids, r, e);
}

int cb__oai_req_parse(cb__oai_kind kind, const char *body, size_t len, int32_t vocab,
                      int64_t max_ids, cb__oai_req *r, cb__oai_err *e) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->kind = kind;
    cb_error je;
    cb_error_clear(&je);
    if (cb__jdom_parse(body, len, "body", &r->doc, &je))
        return cb__oai_err_set(e, je.code == CB_ENOMEM ? 500 : 400, NULL, "invalid_json",
                               "request body is not valid JSON: %s", je.msg);
    const cb__jdom_node *o = cb__jdom_root(r->doc);
    int rc = o->type == CB_JDOM_OBJ
                 ? read_fields(kind, o, len, vocab, max_ids, r, e)
                 : cb__oai_err_set(e, 400, NULL, "invalid_json",
                                   "request body: expected a JSON object, got %s", type_name(o));
    if (rc) cb__oai_req_fini(r);
    return rc;
}

void cb__oai_req_fini(cb__oai_req *r) {
    cb_free(r->ids);
    cb_free(r->msgs);
    cb_free(r->joined);
    cb__jdom_free(r->doc);
    cb__oai_kind kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
}
