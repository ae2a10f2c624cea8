/* tests/test_serve.c - `colobench serve` (src/serve/) as a real process on loopback, driven
 * with libcurl, and the official `openai` Python client against it.
 *
 * The server: `colobench serve --model tiny --port 0 --seed 1` (seeded random weights, no
 * tokenizer: the byte fallback), its port read from the listening line on its stderr.
 *   - /health (200, empty), /v1/models (the shape, the name, max_model_len);
 *   - the server computes the real thing: the ids of greedy and of seeded sampled completions
 *     (parsed from the " ID" texts) equal what cb_engine gives in this process for the same
 *     model, seed and prompt (built as the server builds it: tiny, bf16, packed, seed 1);
 *   - streaming: the chunks' texts joined equal the non-streaming text, one chunk a token
 *     (content chunks == completion_tokens), finish_reason on the last token's chunk, the usage
 *     chunk with include_usage, [DONE] last; chat: the role chunk first, then the same;
 *   - chat with a text prompt, streaming and not: the prompt is the documented simple form
 *     ("user: Hello\nassistant:", a byte a token) and the ids equal the engine's for it;
 *   - errors: bad JSON 400, n = 2 400 naming n, an unknown model 404 model_not_found, an
 *     unknown path 404, a wrong method 405, a body over --max-body-bytes 413 (read and dropped,
 *     and answered before the body with Expect: 100-continue), a prompt + max_tokens beyond the
 *     context 400 naming both numbers;
 *   - the official `openai` package (tests/serve_openai_client.py, in .venv-test/; the test
 *     FAILS without it) exits 0: models.list, completions and chat completions, streaming and
 *     not, include_usage, errors as its exception classes;
 *   - SIGTERM: exit status 0 within 5 s; a bad option: exit status 2 naming it.
 * A second server on a config.json of the same tiny shape with 32768 positions (so a stream of
 * 30000 tokens runs for many seconds) and --max-batch 1: a client that disconnects after its
 * first chunk has its request cancelled (a next request runs, which with max_batch 1 needs the
 * slot back, and the stop line counts 1 cancelled (client gone)); a stream in flight at SIGTERM
 * ends with a finish_reason "abort" chunk and [DONE], and the server exits 0.
 * In process: two servers at once (no global state), each answering, then stopped and freed.
 * Nothing here asserts a speed: only the 5 s exit bound, with a margin of seconds.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "llm/engine.h"
#include "llm/jdom.h"
#include "serve/serve.h"
#include "server_proc.h"

#define PYTHON CB_TEST_SRCDIR "/.venv-test/bin/python"
#define KV_BYTES "16777216"

#define now_ns test_server_now_ns

/* ---- a server process: tests/server_proc.h ------------------------------------------------ */

typedef test_server server;

/* colobench serve with args (NULL-terminated, after "serve"). 0 or -1. */
static int server_start(server *sv, const char *name, const char *const *args) {
    const char *argv[32] = {CB_TEST_COLOBENCH, "serve"};
    int n = 2;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    return test_server_start(sv, name, argv, "listening on http://127.0.0.1:");
}

#define server_stop test_server_stop

/* ---- HTTP ----------------------------------------------------------------------------------- */

typedef struct body {
    char *p;
    size_t len;
    size_t stop_after; /* >0: abort the transfer once this many bytes arrived (a client gone) */
    _Atomic int *first; /* set to 1 when the first bytes arrive (may be NULL) */
} body;

static size_t on_data(char *p, size_t sz, size_t n, void *arg) {
    body *b = arg;
    size_t k = sz * n;
    char *q = realloc(b->p, b->len + k + 1);
    if (!q) return 0;
    memcpy(q + b->len, p, k);
    b->p = q;
    b->len += k;
    b->p[b->len] = 0;
    if (b->first) atomic_store(b->first, 1);
    if (b->stop_after && b->len >= b->stop_after) return 0;
    return k;
}

/* method NULL: GET, or POST when data is given. Returns the status (0: transport error); the
 * body in *out (malloc'd, NUL-terminated, may be NULL). */
static long http_first(const char *url, const char *method, const char *data, size_t data_len,
                       const char *header, size_t stop_after, _Atomic int *first, char **out) {
    CURL *c = curl_easy_init();
    body b = {NULL, 0, stop_after, first};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (header) h = curl_slist_append(h, header);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (data) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)data_len);
    }
    if (method) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK || (stop_after && rc == CURLE_WRITE_ERROR))
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        printf("# %s: %s\n", url, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out) *out = b.p;
    else free(b.p);
    return status;
}

static long http(const char *url, const char *method, const char *data, size_t data_len,
                 const char *header, size_t stop_after, char **out) {
    return http_first(url, method, data, data_len, header, stop_after, NULL, out);
}

static long post(const server *sv, const char *path, const char *json, char **out) {
    char url[128];
    snprintf(url, sizeof url, "%s%s", sv->url, path);
    return http(url, NULL, json, strlen(json), NULL, 0, out);
}

/* ---- JSON of the answers -------------------------------------------------------------------- */

static const cb__jdom_node *jpath(const cb__jdom_node *n, const char *path) {
    char key[64];
    while (n && *path) {
        size_t k = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)k, path);
        path += k + (path[k] == '.');
        if (n->type == CB_JDOM_ARR) {
            long i = strtol(key, NULL, 10);
            n = i >= 0 && (size_t)i < n->n ? &n->v.items[i] : NULL;
        } else {
            n = cb__jdom_get(n, key);
        }
    }
    return n;
}

static cb__jdom *jparse(const char *text) {
    cb__jdom *d = NULL;
    cb_error e = {0};
    if (!text || cb__jdom_parse(text, strlen(text), "answer", &d, &e)) {
        printf("# not JSON (%s): %.300s\n", e.msg, text ? text : "(none)");
        return NULL;
    }
    return d;
}

static const char *jstr(const cb__jdom *d, const char *path) {
    const cb__jdom_node *n = d ? jpath(cb__jdom_root(d), path) : NULL;
    return n && n->type == CB_JDOM_STR ? n->v.str : NULL;
}

static double jnum(const cb__jdom *d, const char *path) {
    const cb__jdom_node *n = d ? jpath(cb__jdom_root(d), path) : NULL;
    return n && n->type == CB_JDOM_NUM ? n->v.num : -1;
}

static int jnull(const cb__jdom *d, const char *path) {
    const cb__jdom_node *n = d ? jpath(cb__jdom_root(d), path) : NULL;
    return n && n->type == CB_JDOM_NULL;
}

/* The ids of a byte-fallback text (" 5 17 300"); returns how many. */
static int text_ids(const char *t, int32_t *ids, int cap) {
    int n = 0;
    while (t && *t && n < cap) {
        char *end = NULL;
        long v = strtol(t, &end, 10);
        if (end == t) return -1;
        ids[n++] = (int32_t)v;
        t = end;
    }
    return n;
}

/* A stream: the data of its events in order (the [DONE] included, as "[DONE]"). */
typedef struct events {
    char *data[512];
    int n;
} events;

static void events_parse(char *s, events *ev) {
    ev->n = 0;
    for (char *p = s; p && *p && ev->n < 512;) {
        char *end = strstr(p, "\n\n");
        if (end) *end = 0;
        if (!strncmp(p, "data: ", 6)) ev->data[ev->n++] = p + 6;
        p = end ? end + 2 : NULL;
    }
}

/* ---- the in-process reference: the server's model and engine, built the same way ------------ */

typedef struct reference {
    cb_lm_weights *w;
    cb_lm_model *m;
    cb_lm_kv *kv;
    cb_engine *e;
} reference;

static reference g_ref;

static int ref_init(void) {
    if (g_ref.e) return 0;
    cb_lm_config c;
    cb_error e = {0};
    int rc = cb_lm_config_preset("tiny", &c, &e);
    cb_lm_weights_opts wo = {CB_LM_BF16, NULL, 1, 1}; /* serve's defaults: bf16, packed */
    if (!rc) rc = cb_lm_weights_create(&c, &wo, &g_ref.w, &e);
    if (!rc) rc = cb_lm_model_create(g_ref.w, 1, 512, &g_ref.m, &e);
    if (!rc) rc = cb_lm_kv_create(g_ref.m, 16777216, 16, &g_ref.kv, &e);
    cb_engine_opts eo = CB_ENGINE_OPTS_DEFAULT;
    eo.seed = 1;
    if (!rc) rc = cb_engine_create(g_ref.m, g_ref.kv, &eo, &g_ref.e, &e);
    if (rc) printf("# reference: %s\n", e.msg);
    CB_CHECK_EQ_INT(rc, 0);
    return rc;
}

static void ref_free(void) {
    cb_engine_destroy(g_ref.e);
    cb_lm_kv_destroy(g_ref.kv);
    cb_lm_model_destroy(g_ref.m);
    cb_lm_weights_destroy(g_ref.w);
    memset(&g_ref, 0, sizeof g_ref);
}

/* The engine's output ids for one request; returns how many (-1 on error), *eos whether it
 * ended at EOS. */
static int ref_generate(const int32_t *prompt, int n_prompt, int max_new, int ignore_eos,
                        cb_sample_params sp, uint64_t seed, int32_t *out, int *eos) {
    if (ref_init()) return -1;
    cb_engine_request q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = n_prompt;
    q.max_new_tokens = max_new;
    q.ignore_eos = ignore_eos;
    q.sampling = sp;
    q.seed = seed;
    cb_error e = {0};
    if (cb_engine_add(g_ref.e, &q, &e)) {
        printf("# reference add: %s\n", e.msg);
        return -1;
    }
    while (cb_engine_n_active(g_ref.e) > 0)
        if (cb_engine_step(g_ref.e, &e)) return -1;
    const cb_engine_result *r = cb_engine_finished(g_ref.e, 0);
    if (!r) return -1;
    memcpy(out, r->output, sizeof *out * (size_t)r->n_output);
    *eos = r->finish == CB_ENGINE_FINISH_EOS;
    return r->n_output;
}

/* ---- tests on the main server --------------------------------------------------------------- */

static server g_sv;
static int g_up;

static void test_start(void) {
    const char *args[] = {"--model", "tiny", "--port", "0", "--seed", "1", "--kv-cache-bytes",
                          KV_BYTES, "--max-body-bytes", "65536", NULL};
    g_up = server_start(&g_sv, "main.err", args) == 0;
    CB_CHECK(g_up);
    CB_CHECK_CMP_INT(g_sv.port, >, 0);
    char *log = cb_test_read(g_sv.log_path, NULL);
    CB_CHECK_CONTAINS(log, "colobench serve: listening on http://127.0.0.1:");
    CB_CHECK_CONTAINS(log, "(model tiny)\n");
    CB_CHECK_CONTAINS(log, "seeded random weights");
    free(log);
}

static void test_health_models(void) {
    if (!g_up) return;
    char url[128], *out = NULL;
    snprintf(url, sizeof url, "%s/health", g_sv.url);
    CB_CHECK_EQ_INT(http(url, NULL, NULL, 0, NULL, 0, &out), 200);
    CB_CHECK_EQ_INT(out ? strlen(out) : 0, 0);
    free(out);
    snprintf(url, sizeof url, "%s/v1/models", g_sv.url);
    CB_CHECK_EQ_INT(http(url, NULL, NULL, 0, NULL, 0, &out), 200);
    cb__jdom *d = jparse(out);
    CB_CHECK_STR_EQ(jstr(d, "object"), "list");
    CB_CHECK_STR_EQ(jstr(d, "data.0.id"), "tiny");
    CB_CHECK_STR_EQ(jstr(d, "data.0.object"), "model");
    CB_CHECK_STR_EQ(jstr(d, "data.0.owned_by"), "colobench");
    CB_CHECK_EQ_INT(jnum(d, "data.0.max_model_len"), 1024);
    CB_CHECK_CMP_INT(jnum(d, "data.0.created"), >, 1600000000);
    cb__jdom_free(d);
    free(out);
}

static const int32_t k_prompt[] = {5, 17, 300, 42, 99, 7, 256, 3};
#define K_PROMPT_JSON "[5,17,300,42,99,7,256,3]"

/* A non-streaming completion: its ids, finish reason and usage checked against the engine.
 * Returns the number of tokens, negated when it ended at EOS. */
static int check_completion(const char *json, int max_new, int ignore_eos, cb_sample_params sp,
                             uint64_t seed, char *text_out, size_t text_cap) {
    char *out = NULL;
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/completions", json, &out), 200);
    cb__jdom *d = jparse(out);
    int32_t got[64], want[64];
    int eos = 0;
    int n = text_ids(jstr(d, "choices.0.text"), got, 64);
    int m = ref_generate(k_prompt, 8, max_new, ignore_eos, sp, seed, want, &eos);
    CB_CHECK_CMP_INT(m, >=, 1);
    CB_CHECK_EQ_INT(n, m);
    for (int i = 0; i < n && i < m; i++)
        if (got[i] != want[i]) {
            printf("# token %d: server %d, engine %d\n", i, (int)got[i], (int)want[i]);
            CB_CHECK_EQ_INT(got[i], want[i]);
            break;
        }
    CB_CHECK_STR_EQ(jstr(d, "object"), "text_completion");
    CB_CHECK_STR_EQ(jstr(d, "model"), "tiny");
    CB_CHECK(!strncmp(jstr(d, "id") ? jstr(d, "id") : "", "cmpl-", 5));
    CB_CHECK_STR_EQ(jstr(d, "choices.0.finish_reason"), eos ? "stop" : "length");
    CB_CHECK(jnull(d, "choices.0.logprobs"));
    CB_CHECK_EQ_INT(jnum(d, "choices.0.index"), 0);
    CB_CHECK_EQ_INT(jnum(d, "usage.prompt_tokens"), 8);
    CB_CHECK_EQ_INT(jnum(d, "usage.completion_tokens"), m);
    CB_CHECK_EQ_INT(jnum(d, "usage.total_tokens"), 8 + m);
    if (text_out)
        snprintf(text_out, text_cap, "%s",
                 jstr(d, "choices.0.text") ? jstr(d, "choices.0.text") : "");
    cb__jdom_free(d);
    free(out);
    return eos ? -m : m;
}

static void test_completion_matches_engine(void) {
    if (!g_up) return;
    cb_sample_params greedy = CB_SAMPLE_PARAMS_GREEDY;
    check_completion("{\"model\":\"tiny\",\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":12,"
                     "\"temperature\":0}", 12, 0, greedy, 0, NULL, 0);
    check_completion("{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":20,\"temperature\":0,"
                     "\"ignore_eos\":true}", 20, 1, greedy, 0, NULL, 0);
    cb_sample_params sp = {0.8, 50, 0.9};
    check_completion("{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":16,\"temperature\":0.8,"
                     "\"top_k\":50,\"top_p\":0.9,\"seed\":42,\"ignore_eos\":true}", 16, 1, sp, 42,
                     NULL, 0);
    /* the same request without ignore_eos reaches the EOS id (1) before 16 tokens: "stop" */
    int n = check_completion("{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":16,\"temperature\":0.8,"
                             "\"top_k\":50,\"top_p\":0.9,\"seed\":42}", 16, 0, sp, 42, NULL, 0);
    CB_CHECK_CMP_INT(n, <, 0);
}

/* Checks a stream's events: one chunk a token whose texts join to `text` (when given), the
 * finish reason on the last token's chunk, usage when asked, [DONE] last. Returns the joined
 * text (malloc'd). */
static char *check_stream(char *raw, int chat, int n_tokens, const char *finish, int usage,
                          int prompt_tokens) {
    events ev;
    events_parse(raw, &ev);
    CB_CHECK_CMP_INT(ev.n, >=, 2);
    if (ev.n < 2) return NULL;
    CB_CHECK_STR_EQ(ev.data[ev.n - 1], "[DONE]");
    size_t cap = 65536, len = 0;
    char *joined = calloc(1, cap);
    int content = 0, first = 1, saw_finish = 0, saw_usage = 0;
    for (int i = 0; i < ev.n - 1; i++) {
        cb__jdom *d = jparse(ev.data[i]);
        CB_CHECK_STR_EQ(jstr(d, "object"), chat ? "chat.completion.chunk" : "text_completion");
        const cb__jdom_node *ch = d ? jpath(cb__jdom_root(d), "choices") : NULL;
        if (ch && ch->type == CB_JDOM_ARR && ch->n == 0) { /* the usage chunk */
            saw_usage = 1;
            CB_CHECK_EQ_INT(i, ev.n - 2);
            CB_CHECK_EQ_INT(jnum(d, "usage.prompt_tokens"), prompt_tokens);
            CB_CHECK_EQ_INT(jnum(d, "usage.completion_tokens"), n_tokens);
            CB_CHECK_EQ_INT(jnum(d, "usage.total_tokens"), prompt_tokens + n_tokens);
        } else if (chat && first) { /* the role chunk */
            CB_CHECK_STR_EQ(jstr(d, "choices.0.delta.role"), "assistant");
            CB_CHECK_STR_EQ(jstr(d, "choices.0.delta.content"), "");
            CB_CHECK(jnull(d, "choices.0.finish_reason"));
        } else {
            const char *t = jstr(d, chat ? "choices.0.delta.content" : "choices.0.text");
            CB_CHECK(t != NULL);
            size_t k = t ? strlen(t) : 0;
            if (len + k < cap) memcpy(joined + len, t, k), len += k;
            content++;
            const char *f = jstr(d, "choices.0.finish_reason");
            if (f) {
                saw_finish = 1;
                CB_CHECK_STR_EQ(f, finish);
                CB_CHECK_EQ_INT(content, n_tokens); /* on the last token's chunk */
            }
        }
        first = 0;
        cb__jdom_free(d);
    }
    CB_CHECK_EQ_INT(content, n_tokens);
    CB_CHECK(saw_finish);
    CB_CHECK_EQ_INT(saw_usage, usage);
    return joined;
}

static void test_stream_completion(void) {
    if (!g_up) return;
    char plain[4096] = "", *raw = NULL;
    cb_sample_params greedy = CB_SAMPLE_PARAMS_GREEDY;
    check_completion("{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":10,\"temperature\":0,"
                     "\"ignore_eos\":true}", 10, 1, greedy, 0, plain, sizeof plain);
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/completions",
                         "{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":10,\"temperature\":0,"
                         "\"ignore_eos\":true,\"stream\":true,\"stream_options\":"
                         "{\"include_usage\":true}}", &raw), 200);
    char *joined = check_stream(raw, 0, 10, "length", 1, 8);
    CB_CHECK_STR_EQ(joined, plain);
    free(joined);
    free(raw);
    raw = NULL; /* without include_usage: no usage chunk */
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/completions",
                         "{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":10,\"temperature\":0,"
                         "\"ignore_eos\":true,\"stream\":true}", &raw), 200);
    joined = check_stream(raw, 0, 10, "length", 0, 8);
    CB_CHECK_STR_EQ(joined, plain);
    free(joined);
    free(raw);
    raw = NULL; /* ended at EOS: "stop" on the EOS token's chunk */
    cb_sample_params sp = {0.8, 50, 0.9};
    const char *eos_req = "{\"prompt\":" K_PROMPT_JSON ",\"max_tokens\":16,\"temperature\":0.8,"
                          "\"top_k\":50,\"top_p\":0.9,\"seed\":42%s}";
    char json[512];
    snprintf(json, sizeof json, eos_req, "");
    int n = -check_completion(json, 16, 0, sp, 42, plain, sizeof plain);
    CB_CHECK_CMP_INT(n, >, 0);
    snprintf(json, sizeof json, eos_req, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/completions", json, &raw), 200);
    joined = check_stream(raw, 0, n, "stop", 1, 8);
    CB_CHECK_STR_EQ(joined, plain);
    free(joined);
    free(raw);
}

static void test_chat(void) {
    if (!g_up) return;
    const char *form = "user: Hello\nassistant:"; /* docs/serve.md: the simple form */
    int32_t prompt[64], want[64], got[64];
    int np = (int)strlen(form), eos = 0;
    for (int i = 0; i < np; i++) prompt[i] = (unsigned char)form[i];
    cb_sample_params greedy = CB_SAMPLE_PARAMS_GREEDY;
    int m = ref_generate(prompt, np, 6, 1, greedy, 0, want, &eos);
    CB_CHECK_EQ_INT(m, 6);
    char *out = NULL;
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/chat/completions",
                         "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"Hello\"}],\"max_completion_tokens\":6,\"temperature\":0,"
                         "\"ignore_eos\":true}", &out), 200);
    cb__jdom *d = jparse(out);
    CB_CHECK_STR_EQ(jstr(d, "object"), "chat.completion");
    CB_CHECK(!strncmp(jstr(d, "id") ? jstr(d, "id") : "", "chatcmpl-", 9));
    CB_CHECK_STR_EQ(jstr(d, "choices.0.message.role"), "assistant");
    CB_CHECK_STR_EQ(jstr(d, "choices.0.finish_reason"), "length");
    CB_CHECK_EQ_INT(jnum(d, "usage.prompt_tokens"), np);
    CB_CHECK_EQ_INT(jnum(d, "usage.completion_tokens"), 6);
    const char *content = jstr(d, "choices.0.message.content");
    CB_CHECK_EQ_INT(text_ids(content, got, 64), 6);
    for (int i = 0; i < 6 && m == 6; i++) CB_CHECK_EQ_INT(got[i], want[i]);
    char *raw = NULL;
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/chat/completions",
                         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                         "\"text\":\"Hel\"},{\"type\":\"text\",\"text\":\"lo\"}]}],"
                         "\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
                         "\"stream_options\":{\"include_usage\":true}}", &raw), 200);
    char *joined = check_stream(raw, 1, 6, "length", 1, np);
    CB_CHECK_STR_EQ(joined, content); /* text parts joined: the same prompt */
    free(joined);
    free(raw);
    cb__jdom_free(d);
    free(out);
}

/* status, and the error object's code and param (message must contain `needle`). */
static void check_error(const char *method, const char *path, const char *json, size_t len,
                        const char *header, long status, const char *code, const char *needle) {
    char url[160], *out = NULL;
    snprintf(url, sizeof url, "%s%s", g_sv.url, path);
    long got = http(url, method, json, len, header, 0, &out);
    CB_CHECK_EQ_INT(got, status);
    cb__jdom *d = jparse(out);
    CB_CHECK_STR_EQ(jstr(d, "error.type"),
                    status >= 500 ? "server_error" : "invalid_request_error");
    if (code) CB_CHECK_STR_EQ(jstr(d, "error.code"), code);
    if (needle) CB_CHECK_CONTAINS(jstr(d, "error.message"), needle);
    cb__jdom_free(d);
    free(out);
}

static void test_errors(void) {
    if (!g_up) return;
    const char *bad = "{\"prompt\": [1, 2,";
    check_error(NULL, "/v1/completions", bad, strlen(bad), NULL, 400, "invalid_json", "JSON");
    const char *n2 = "{\"prompt\":\"hi\",\"n\":2}";
    check_error(NULL, "/v1/completions", n2, strlen(n2), NULL, 400, "invalid_value", "n:");
    const char *echo = "{\"prompt\":\"hi\",\"echo\":true}";
    check_error(NULL, "/v1/completions", echo, strlen(echo), NULL, 400, "unsupported_value",
                "echo");
    const char *big_id = "{\"prompt\":[1,512]}";
    check_error(NULL, "/v1/completions", big_id, strlen(big_id), NULL, 400, NULL, "prompt[1]");
    const char *nomsg = "{\"messages\":[]}";
    check_error(NULL, "/v1/chat/completions", nomsg, strlen(nomsg), NULL, 400, NULL, "messages");
    const char *model = "{\"model\":\"gpt-4\",\"prompt\":\"hi\"}";
    check_error(NULL, "/v1/completions", model, strlen(model), NULL, 404, "model_not_found",
                "gpt-4");
    check_error(NULL, "/v1/nothing", NULL, 0, NULL, 404, "not_found", "/v1/nothing");
    check_error("DELETE", "/v1/completions", NULL, 0, NULL, 405, "method_not_allowed", "POST");
    check_error("POST", "/v1/models", "{}", 2, NULL, 405, "method_not_allowed", "GET");
    /* context: 1000 prompt ids + max_tokens 100 > 1024 */
    char *json = malloc(16384);
    size_t at = (size_t)snprintf(json, 16384, "{\"prompt\":[");
    for (int i = 0; i < 1000; i++) at += (size_t)snprintf(json + at, 16384 - at, "%s%d", i ? "," : "", i % 500);
    snprintf(json + at, 16384 - at, "],\"max_tokens\":100}");
    check_error(NULL, "/v1/completions", json, strlen(json), NULL, 400, "context_length_exceeded",
                "1024");
    check_error(NULL, "/v1/completions", json, strlen(json), NULL, 400, NULL, "1100");
    free(json);
    /* a body over --max-body-bytes (65536): read and dropped, then 413; and with
     * Expect: 100-continue answered before the body is sent */
    size_t big = 200000;
    char *blob = malloc(big);
    memset(blob, ' ', big);
    blob[0] = '{';
    blob[big - 1] = '}';
    check_error(NULL, "/v1/completions", blob, big, "Expect:", 413, "request_too_large",
                "65536");
    check_error(NULL, "/v1/completions", blob, big, "Expect: 100-continue", 413,
                "request_too_large", "65536");
    free(blob);
    /* still serving */
    char *out = NULL;
    CB_CHECK_EQ_INT(post(&g_sv, "/v1/completions", "{\"prompt\":\"ok\",\"max_tokens\":2}", &out),
                    200);
    free(out);
}

static void test_openai_client(void) {
    if (!g_up) return;
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' -c 'import openai' 2>&1", PYTHON);
    if (cb_test_sh(cmd, &out) != 0) {
        cb__test_fail(__FILE__, __LINE__, "the openai client test needs %s with the openai "
                      "package: run scripts/setup.sh (%s)", PYTHON, out ? out : "");
        free(out);
        return;
    }
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/serve_openai_client.py' '%s' 2>&1", PYTHON,
             CB_TEST_SRCDIR, g_sv.url);
    int rc = cb_test_sh(cmd, &out);
    if (rc != 0) printf("# %s\n%s\n", cmd, out ? out : "");
    CB_CHECK_EQ_INT(rc, 0);
    CB_CHECK_CONTAINS(out, "serve_openai_client: ok");
    free(out);
}

static void test_sigterm(void) {
    if (!g_up) return;
    double ms = 0;
    CB_CHECK_EQ_INT(server_stop(&g_sv, SIGTERM, &ms), 0);
    printf("# exit %.0f ms after SIGTERM\n", ms);
    char *log = cb_test_read(g_sv.log_path, NULL);
    CB_CHECK_CONTAINS(log, "colobench serve: stopped (SIGTERM)");
    CB_CHECK_CONTAINS(log, "0 cancelled (client gone)");
    free(log);
    g_up = 0;
}

static void test_bad_options(void) {
    const char *cases[][2] = {{"--port abc", "--port"},
                              {"--max-batch 0", "--max-batch"},
                              {"--port 70000", "--port"},
                              {"--precision f16", "--precision"},
                              {"--threads 2x", "--threads"},
                              {"--bogus 1", "--bogus"},
                              {"--model", "--model"},
                              {"--model no-such-preset --port 0", "no-such-preset"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[512], *out = NULL;
        snprintf(cmd, sizeof cmd, "'%s' serve %s 2>&1", CB_TEST_COLOBENCH, cases[i][0]);
        CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
        CB_CHECK_CONTAINS(out, cases[i][1]);
        free(out);
    }
    char cmd[512], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' serve --help 2>&1", CB_TEST_COLOBENCH);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 0);
    CB_CHECK_CONTAINS(out, "--max-body-bytes");
    free(out);
}

/* ---- the long server: disconnects and a stop with a stream in flight ------------------------ */

typedef struct stream_job {
    const server *sv;
    char *raw;
    long status;
    _Atomic int first;
} stream_job;

static void *stream_main(void *arg) {
    stream_job *j = arg;
    char url[128];
    snprintf(url, sizeof url, "%s/v1/completions", j->sv->url);
    const char *json = "{\"prompt\":[5,6,7],\"max_tokens\":30000,\"ignore_eos\":true,"
                       "\"temperature\":0,\"stream\":true}";
    j->status = http_first(url, NULL, json, strlen(json), NULL, 0, &j->first, &j->raw);
    return NULL;
}

static void test_disconnect_and_stop(void) {
    const char *dir = cb_test_tmpdir();
    const char *cfg = cb_test_write(
        dir, "config.json",
        "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 160,\n"
        " \"vocab_size\": 512, \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-6,\n"
        " \"rope_theta\": 1000000.0, \"tie_word_embeddings\": true, \"eos_token_id\": 1,\n"
        " \"hidden_act\": \"silu\", \"torch_dtype\": \"float32\"}\n");
    const char *args[] = {"--model", cfg, "--served-model-name", "long", "--port", "0",
                          "--max-batch", "1", "--kv-cache-bytes", KV_BYTES, NULL};
    server sv;
    if (server_start(&sv, "long.err", args) != 0) {
        CB_CHECK(0);
        return;
    }
    /* a client that goes away after its first chunk */
    char url[128], *out = NULL;
    snprintf(url, sizeof url, "%s/v1/completions", sv.url);
    const char *json = "{\"model\":\"long\",\"prompt\":[5,6,7],\"max_tokens\":30000,"
                       "\"ignore_eos\":true,\"stream\":true}";
    CB_CHECK_EQ_INT(http(url, NULL, json, strlen(json), NULL, 1, &out), 200);
    CB_CHECK(out && !strncmp(out, "data: ", 6));
    free(out);
    out = NULL;
    /* max_batch 1: this one runs once the first has left the engine */
    CB_CHECK_EQ_INT(post(&sv, "/v1/completions", "{\"prompt\":\"abc\",\"max_tokens\":3}", &out),
                    200);
    cb__jdom *d = jparse(out);
    CB_CHECK_EQ_INT(jnum(d, "usage.completion_tokens"), 3);
    cb__jdom_free(d);
    free(out);
    /* a stream in flight at SIGTERM */
    stream_job job = {&sv, NULL, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, stream_main, &job);
    for (int64_t t0 = now_ns(); !atomic_load(&job.first) && now_ns() - t0 < 30000000000LL;)
        usleep(2000); /* until it streams */
    CB_CHECK(atomic_load(&job.first));
    double ms = 0;
    CB_CHECK_EQ_INT(server_stop(&sv, SIGTERM, &ms), 0);
    printf("# long server: exit %.0f ms after SIGTERM with a stream in flight\n", ms);
    pthread_join(th, NULL);
    CB_CHECK_EQ_INT(job.status, 200);
    events ev;
    events_parse(job.raw, &ev);
    CB_CHECK_CMP_INT(ev.n, >=, 2);
    if (ev.n >= 2) {
        CB_CHECK_STR_EQ(ev.data[ev.n - 1], "[DONE]");
        cb__jdom *last = jparse(ev.data[ev.n - 2]);
        CB_CHECK_STR_EQ(jstr(last, "choices.0.finish_reason"), "abort");
        cb__jdom_free(last);
        printf("# the stream got %d events before the stop\n", ev.n);
    }
    free(job.raw);
    char *log = cb_test_read(sv.log_path, NULL);
    CB_CHECK_CONTAINS(log, "3 requests: 1 finished, 1 cancelled (client gone), 1 aborted");
    free(log);
}

/* ---- in process: two servers at once -------------------------------------------------------- */

static void test_two_in_process(void) {
    cb_serve *s[2] = {NULL, NULL};
    cb_logger quiet = {CB_LOG_ERROR, stderr};
    for (int i = 0; i < 2; i++) {
        cb_serve_opts o = CB_SERVE_OPTS_DEFAULT;
        o.model = i ? "tiny-llama" : "tiny";
        o.port = 0;
        o.seed = 1;
        o.kv_cache_bytes = 1 << 22;
        o.log = &quiet;
        cb_error e = {0};
        int rc = cb_serve_create(&o, &s[i], &e);
        if (!rc) rc = cb_serve_start(s[i], &e);
        if (rc) printf("# serve %d: %s\n", i, e.msg);
        CB_CHECK_EQ_INT(rc, 0);
    }
    for (int i = 0; i < 2 && s[0] && s[1]; i++) {
        CB_CHECK_CMP_INT(cb_serve_port(s[i]), >, 0);
        char url[128], *out = NULL;
        snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", cb_serve_port(s[i]));
        const char *json = "{\"prompt\":\"two\",\"max_tokens\":4,\"ignore_eos\":true}";
        CB_CHECK_EQ_INT(http(url, NULL, json, strlen(json), NULL, 0, &out), 200);
        cb__jdom *d = jparse(out);
        CB_CHECK_STR_EQ(jstr(d, "model"), i ? "tiny-llama" : "tiny");
        CB_CHECK_EQ_INT(jnum(d, "usage.completion_tokens"), 4);
        cb__jdom_free(d);
        free(out);
    }
    for (int i = 0; i < 2; i++) {
        if (!s[i]) continue;
        cb_serve_stop(s[i]);
        cb_serve_stats st;
        cb_serve_get_stats(s[i], &st);
        CB_CHECK_EQ_INT(st.requests, 1);
        CB_CHECK_EQ_INT(st.finished, 1);
        CB_CHECK_EQ_INT(st.completion_tokens, 4);
        cb_serve_destroy(s[i]);
    }
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CB_RUN(test_start);
    CB_RUN(test_health_models);
    CB_RUN(test_completion_matches_engine);
    CB_RUN(test_stream_completion);
    CB_RUN(test_chat);
    CB_RUN(test_errors);
    CB_RUN(test_openai_client);
    CB_RUN(test_sigterm);
    CB_RUN(test_bad_options);
    CB_RUN(test_disconnect_and_stop);
    CB_RUN(test_two_in_process);
    if (g_sv.pid) server_stop(&g_sv, SIGKILL, NULL);
    ref_free();
    curl_global_cleanup();
    return cb_test_done();
}
