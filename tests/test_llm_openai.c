/* tests/test_llm_openai.c - llm.openai against real servers on loopback: `colobench serve` (the
 * engine behind an OpenAI-compatible API) and tests/oai_fault_server.py (a Python stdlib server
 * that misbehaves on purpose).
 *
 * Checked: streamed completions with ids (every query ok, output tokens from the server's usage
 * equal to what each request asked for, one content chunk per token as serve sends them, TTFT
 * inside the query's latency, one itl_ns value per gap); non-streamed chat with text prompts
 * (tokens from usage); a stream without usage (tokens counted from chunks, tokens_counted set);
 * a refused port (every query failed as errors_connect, the run goes on; with on_error: fail the
 * run fails naming the request); HTTP 500 (errors_http, the body's message in the error), a
 * client timeout (errors_timeout), a stream cut before [DONE] and an event that is not JSON
 * (errors_stream); the server process killed mid-stream (the requests in flight fail as broken
 * streams, later ones as refused connections, and the run ends); an open loop keeps sending on
 * schedule while every response takes a second; the API key from api_key_env reaches the server
 * and a literal key in the config is refused; /v1/embeddings; a chunked stream read in pieces of 1-7 bytes and a
 * kept-alive connection the server closes anyway. Each with colobench's own HTTP/1.1 client and
 * with libcurl's (http_client). No speed bounds: only what the runs compute, and
 * physical outcomes with wide margins.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "run_fixture.h"
#include "server_proc.h"

/* llm.openai's metric indices (its table's order). */
enum {
    M_PROMPT_TOKENS,
    M_OUTPUT_TOKENS,
    M_TOKENS,
    M_TTFT,
    M_TPOT,
    M_ITL_MEAN,
    M_ITL_MAX,
    M_SLO_MET,
    M_ITL,
    M_CHUNKS,
    M_TOKENS_COUNTED,
    M_ERRORS,
    M_ERRORS_CONNECT,
    M_ERRORS_HTTP,
    M_ERRORS_TIMEOUT,
    M_ERRORS_STREAM,
    M_COUNT
};

#define now_ns test_server_now_ns

/* ---- server processes (tests/server_proc.h) ------------------------------------------------ */

typedef test_server server;

static void server_kill(server *sv) {
    if (!sv->pid) return;
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
    sv->pid = 0;
}

static const char *g_client = "native"; /* http_client of every run: native, then libcurl */
static server g_serve; /* colobench serve --model tiny */
static server g_fault; /* oai_fault_server.py */
static char g_fault_log[512];

static int start_serve(void) {
    const char *argv[] = {CB_TEST_COLOBENCH, "serve", "--model", "tiny", "--port", "0",
                          "--seed", "1", "--kv-cache-bytes", "16777216", NULL};
    return test_server_start(&g_serve, "serve.log", argv, "listening on http://127.0.0.1:");
}

static int start_fault(void) {
    snprintf(g_fault_log, sizeof g_fault_log, "%s",
             cb_test_path(cb_test_tmpdir(), "fault_requests.log"));
    const char *argv[] = {"python3", CB_TEST_SRCDIR "/tests/oai_fault_server.py", g_fault_log,
                          NULL};
    return test_server_start(&g_fault, "fault.log", argv, "READY ");
}

/* ---- runs ------------------------------------------------------------------------------------ */

/* Per-query sums of llm.openai's metrics (stage 1) in a run's records. */
typedef struct per_query {
    double m[M_COUNT];
    int seen[M_COUNT];
} per_query;

#define MAX_Q 64

typedef struct outcome {
    run_fixture f;
    int ok_run;                 /* run_fixture_yaml returned 0 */
    size_t n_queries, n_ok, n_error;
    per_query q[MAX_Q];
    double total[M_COUNT];
    size_t count[M_COUNT];
    int64_t first_send_ns, last_send_ns; /* llm.openai's run starts */
    int64_t min_latency_ns;
} outcome;

static void bench_yaml(char *y, size_t n, const char *loadgen, const char *prompts,
                       const char *client) {
    char cl[1024];
    snprintf(cl, sizeof cl, "%s, http_client: %s", client, g_client);
    client = cl;
    snprintf(y, n,
             "name: oai\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    outputs: [1]\n"
             "    loadgen: %s\n"
             "    stages:\n"
             "      - {id: 0, name: prompts, component: llm.prompts, outputs: [1], config: {%s}}\n"
             "      - {id: 1, name: client, component: llm.openai, outputs: [], config: {%s}}\n",
             loadgen, prompts, client);
}

static void run_bench(outcome *o, const char *yaml) {
    memset(o, 0, sizeof *o);
    o->first_send_ns = INT64_MAX;
    o->min_latency_ns = INT64_MAX;
    if (run_fixture_yaml(&o->f, yaml, NULL, NULL) != 0) return;
    o->ok_run = 1;
    cb_pipeline_record r = run_fixture_records(&o->f, 0);
    o->n_queries = r.n_queries;
    for (size_t i = 0; i < r.n_queries; i++) {
        const cb_query_event *qe = &r.queries[i];
        if (qe->status == CB_QUERY_OK) {
            o->n_ok++;
            int64_t lat = qe->end_ns - qe->scheduled_ns;
            if (lat < o->min_latency_ns) o->min_latency_ns = lat;
        } else if (qe->status == CB_QUERY_ERROR) {
            o->n_error++;
        }
    }
    for (size_t i = 0; i < r.n_stage_events; i++) {
        const cb_stage_event *e = &r.stage_events[i];
        if (e->stage != 1) continue;
        if (e->start_ns < o->first_send_ns) o->first_send_ns = e->start_ns;
        if (e->start_ns > o->last_send_ns) o->last_send_ns = e->start_ns;
    }
    for (size_t i = 0; i < r.n_metrics; i++) {
        const cb_metric_event *me = &r.metrics[i];
        if (me->stage != 1 || me->metric < 0 || me->metric >= M_COUNT) continue;
        o->total[me->metric] += me->value;
        o->count[me->metric]++;
        if (me->query_id < MAX_Q) {
            o->q[me->query_id].m[me->metric] += me->value;
            o->q[me->query_id].seen[me->metric]++;
        }
    }
}

/* ---- well-behaved: colobench serve ----------------------------------------------------------- */

static void test_serve_stream(void) {
    if (!g_serve.pid) CB_CHECK(0);
    if (!g_serve.pid) return;
    char client[256], y[2048];
    snprintf(client, sizeof client, "url: \"%s\", max_concurrency: 8", g_serve.url);
    bench_yaml(y, sizeof y, "{component: closed, max_queries: 24, config: {concurrency: 4}}",
               "num_prompts: 24, input_len: 16, output_len: 6, output_dist: uniform, "
               "output_range_ratio: 0.5, vocab_size: 256, seed: 3",
               client);
    outcome *o = calloc(1, sizeof *o);
    run_bench(o, y);
    CB_CHECK(o->ok_run);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 24);
    CB_CHECK_EQ_INT(o->count[M_ERRORS], 0);
    CB_CHECK_EQ_INT(o->count[M_TOKENS_COUNTED], 0); /* serve sends usage */
    double itl_values = 0;
    for (int i = 0; i < 24; i++) {
        const per_query *p = &o->q[i];
        /* ignore_eos: serve produced exactly what the request asked; one chunk per token */
        CB_CHECK_CMP_INT((int64_t)p->m[M_OUTPUT_TOKENS], >=, 3);
        CB_CHECK_CMP_INT((int64_t)p->m[M_OUTPUT_TOKENS], <=, 9);
        CB_CHECK_NEAR(p->m[M_CHUNKS], p->m[M_OUTPUT_TOKENS], 0.5);
        CB_CHECK_NEAR(p->m[M_PROMPT_TOKENS], 16, 0.5);
        CB_CHECK_NEAR(p->m[M_TOKENS], 16 + p->m[M_OUTPUT_TOKENS], 0.5);
        CB_CHECK_EQ_INT(p->seen[M_TTFT], 1);
        CB_CHECK_CMP_INT((int64_t)p->m[M_TTFT], >, 0);
        CB_CHECK_EQ_INT(p->seen[M_ITL], (int)p->m[M_CHUNKS] - 1);
        itl_values += p->seen[M_ITL];
    }
    CB_CHECK_NEAR((double)o->count[M_ITL], itl_values, 0.5);
    /* The requests' lengths as llm.prompts drew them: the sum of its max_new_tokens (metric 2). */
    cb_pipeline_record r = run_fixture_records(&o->f, 0);
    double asked = 0;
    for (size_t i = 0; i < r.n_metrics; i++)
        if (r.metrics[i].stage == 0 && r.metrics[i].metric == 2) asked += r.metrics[i].value;
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], asked, 0.5);
    run_fixture_fini(&o->f);
    free(o);
}

static void test_serve_chat_nonstream(void) {
    if (!g_serve.pid) return;
    const char *dir = cb_test_tmpdir();
    const char *jl = cb_test_write(dir, "chat.jsonl",
                                   "{\"prompt\": \"Hello there\", \"max_tokens\": 5}\n"
                                   "{\"prompt\": \"Caf\\u00e9 \\\"quoted\\\"\\n line\", "
                                   "\"max_tokens\": 3}\n"
                                   "{\"prompt\": \"tab\\there\", \"max_tokens\": 4}\n");
    char prompts[700], client[256], y[2048];
    snprintf(prompts, sizeof prompts, "source: jsonl, path: \"%s\"", jl);
    snprintf(client, sizeof client,
             "url: \"%s/v1\", endpoint: chat, stream: false, ignore_eos: always", g_serve.url);
    bench_yaml(y, sizeof y, "{component: closed, max_queries: 3, config: {concurrency: 3}}",
               prompts, client);
    outcome *o = calloc(1, sizeof *o);
    run_bench(o, y);
    CB_CHECK(o->ok_run);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 3);
    CB_CHECK_EQ_INT(o->count[M_ERRORS], 0);
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], 5 + 3 + 4, 0.5);
    CB_CHECK_EQ_INT(o->count[M_TTFT], 0); /* not streamed: no token times */
    CB_CHECK_EQ_INT(o->count[M_CHUNKS], 0);
    run_fixture_fini(&o->f);
    free(o);
}

static void test_serve_no_usage(void) {
    if (!g_serve.pid) return;
    char client[256], y[2048];
    snprintf(client, sizeof client, "url: \"%s\", include_usage: false", g_serve.url);
    bench_yaml(y, sizeof y, "{component: closed, max_queries: 6, config: {concurrency: 2}}",
               "num_prompts: 6, input_len: 8, output_len: 5, vocab_size: 256", client);
    outcome *o = calloc(1, sizeof *o);
    run_bench(o, y);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 6);
    CB_CHECK_NEAR(o->total[M_TOKENS_COUNTED], 6, 0.5);
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], 30, 0.5);
    CB_CHECK_NEAR(o->total[M_CHUNKS], 30, 0.5);
    CB_CHECK_EQ_INT(o->count[M_PROMPT_TOKENS], 6); /* the ids sent */
    CB_CHECK_NEAR(o->total[M_PROMPT_TOKENS], 48, 0.5);
    run_fixture_fini(&o->f);
    free(o);
}

/* ---- failures --------------------------------------------------------------------------------- */

/* A port nothing listens on (bound, then closed). */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return 1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void test_refused(void) {
    char client[256], y[2048];
    snprintf(client, sizeof client, "url: \"http://127.0.0.1:%d\"", closed_port());
    bench_yaml(y, sizeof y, "{component: closed, max_queries: 10, config: {concurrency: 3}}",
               "num_prompts: 10, input_len: 4, output_len: 2, vocab_size: 256", client);
    outcome *o = calloc(1, sizeof *o);
    run_bench(o, y);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK); /* recorded, the run goes on */
    CB_CHECK_EQ_INT(o->n_ok, 0);
    CB_CHECK_EQ_INT(o->n_error, 10);
    CB_CHECK_NEAR(o->total[M_ERRORS], 10, 0.5);
    CB_CHECK_NEAR(o->total[M_ERRORS_CONNECT], 10, 0.5);
    CB_CHECK_EQ_INT(o->count[M_OUTPUT_TOKENS], 0);
    run_fixture_fini(&o->f);
    /* on_error: fail */
    snprintf(client, sizeof client, "url: \"http://127.0.0.1:%d\", on_error: fail", closed_port());
    bench_yaml(y, sizeof y, "{component: closed, max_queries: 10, config: {concurrency: 1}}",
               "num_prompts: 10, input_len: 4, output_len: 2, vocab_size: 256", client);
    run_bench(o, y);
    CB_CHECK(o->f.res.n_errors >= 1);
    if (o->f.res.n_errors >= 1) {
        printf("# %s\n", o->f.res.errors[0]);
        CB_CHECK(strstr(o->f.res.errors[0], "request 0: ") != NULL);
        CB_CHECK(strstr(o->f.res.errors[0], "connect") != NULL);
    }
    run_fixture_fini(&o->f);
    free(o);
}

/* Runs n queries against the fault server's `mode` with extra client settings; the outcome. */
static outcome *fault_run(const char *mode, int n, const char *extra, const char *loadgen) {
    char client[512], prompts[256], y[2048];
    snprintf(client, sizeof client, "url: \"%s/%s\"%s%s", g_fault.url, mode, extra ? ", " : "",
             extra ? extra : "");
    snprintf(prompts, sizeof prompts, "num_prompts: %d, input_len: 4, output_len: 4, "
             "vocab_size: 256", n);
    char lg[256];
    if (!loadgen) snprintf(lg, sizeof lg, "{component: closed, max_queries: %d, config: "
                           "{concurrency: %d}}", n, n < 8 ? n : 8);
    bench_yaml(y, sizeof y, loadgen ? loadgen : lg, prompts, client);
    outcome *o = calloc(1, sizeof *o);
    run_bench(o, y);
    return o;
}

static void test_faults(void) {
    if (!g_fault.pid) CB_CHECK(0);
    if (!g_fault.pid) return;
    outcome *o = fault_run("e500", 4, NULL, NULL);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_error, 4);
    CB_CHECK_NEAR(o->total[M_ERRORS_HTTP], 4, 0.5);
    run_fixture_fini(&o->f);
    free(o);
    o = fault_run("e500", 2, "on_error: fail", NULL);
    CB_CHECK(o->f.res.n_errors >= 1);
    if (o->f.res.n_errors >= 1) {
        printf("# %s\n", o->f.res.errors[0]);
        CB_CHECK(strstr(o->f.res.errors[0], "HTTP 500") != NULL);
        CB_CHECK(strstr(o->f.res.errors[0], "boom: the model crashed") != NULL);
    }
    run_fixture_fini(&o->f);
    free(o);
    o = fault_run("slow", 3, "timeout: 0.4", NULL);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_error, 3);
    CB_CHECK_NEAR(o->total[M_ERRORS_TIMEOUT], 3, 0.5);
    run_fixture_fini(&o->f);
    free(o);
    o = fault_run("cut", 3, NULL, NULL);
    CB_CHECK_EQ_INT(o->n_error, 3);
    CB_CHECK_NEAR(o->total[M_ERRORS_STREAM], 3, 0.5);
    run_fixture_fini(&o->f);
    free(o);
    o = fault_run("bad", 3, NULL, NULL);
    CB_CHECK_EQ_INT(o->n_error, 3);
    CB_CHECK_NEAR(o->total[M_ERRORS_STREAM], 3, 0.5);
    run_fixture_fini(&o->f);
    free(o);
}

/* Response framings both clients must read: a chunked stream in pieces of 1-7 bytes with chunk
 * extensions and a trailer; /v1/embeddings. The native client: a kept-alive answer whose
 * connection then closes anyway (the next request on it must start over on a new connection,
 * never fail). */
static void test_framings(void) {
    if (!g_fault.pid) return;
    outcome *o = fault_run("chunky", 6, NULL, NULL);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 6);
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], 24, 0.5);
    CB_CHECK_NEAR(o->total[M_CHUNKS], 24, 0.5);
    run_fixture_fini(&o->f);
    free(o);
    /* /v1/embeddings: never streamed; the prompt's tokens from usage, no output tokens */
    o = fault_run("emb", 5, "endpoint: embeddings", NULL);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 5);
    CB_CHECK_NEAR(o->total[M_PROMPT_TOKENS], 20, 0.5); /* 4 ids each, counted by the server */
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], 0, 0.5);
    CB_CHECK_EQ_INT(o->count[M_TTFT], 0);
    run_fixture_fini(&o->f);
    free(o);
    /* The retry on a connection the server closed is the native client's own (libcurl retries
     * some such requests and fails others, "Failed sending data to the peer", depending on when
     * the close lands): checked for the native client only. */
    if (strcmp(g_client, "native") != 0) return;
    o = fault_run("kaclose", 12, "stream: false",
                  "{component: closed, max_queries: 12, config: {concurrency: 1}}");
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 12);
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], 36, 0.5);
    run_fixture_fini(&o->f);
    free(o);
}

/* An open loop against a server that takes a second per response: the requests go out on
 * schedule (20 over 0.5 s), not one per second. */
static void test_open_loop_slow_server(void) {
    if (!g_fault.pid) return;
    outcome *o = fault_run("slowok", 20, NULL,
                           "{component: constant, max_queries: 20, config: {rate: 40}}");
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 20);
    CB_CHECK_NEAR(o->total[M_OUTPUT_TOKENS], 80, 0.5);
    printf("# sends spread over %.3f s; shortest latency %.3f s\n",
           (double)(o->last_send_ns - o->first_send_ns) / 1e9, (double)o->min_latency_ns / 1e9);
    CB_CHECK_CMP_INT(o->min_latency_ns, >=, 1000000000LL);
    CB_CHECK_CMP_INT(o->last_send_ns - o->first_send_ns, <, 5000000000LL);
    run_fixture_fini(&o->f);
    free(o);
}

static void test_api_key(void) {
    if (!g_fault.pid) return;
    /* The fault server inherited CB_TEST_OAI_KEY from main(). */
    outcome *o = fault_run("auth", 3, "api_key_env: CB_TEST_OAI_KEY", NULL);
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_ok, 3);
    run_fixture_fini(&o->f);
    free(o);
    o = fault_run("auth", 3, NULL, NULL);
    CB_CHECK_EQ_INT(o->n_error, 3);
    CB_CHECK_NEAR(o->total[M_ERRORS_HTTP], 3, 0.5);
    run_fixture_fini(&o->f);
    free(o);
    /* A literal key is refused when the config is loaded. */
    char y[2048];
    bench_yaml(y, sizeof y, "{component: closed, max_queries: 1}", "num_prompts: 1",
               "url: \"http://127.0.0.1:1\", api_key_env: \"sk-abc123\"");
    run_fixture f;
    CB_CHECK(run_fixture_yaml(&f, y, NULL, NULL) != 0);
    run_fixture_fini(&f);
}

/* The server process killed while its responses stream: requests in flight fail as broken
 * streams, later ones as refused connections, and the run ends. */
typedef struct killer {
    const char *log;
    pid_t pid;
    atomic_int killed;
} killer;

static void *killer_main(void *arg) {
    killer *k = arg;
    for (int64_t t0 = now_ns(); now_ns() - t0 < 60000000000LL;) {
        char *log = cb_test_read(k->log, NULL);
        int lines = 0;
        for (const char *c = log; c && *c; c++) lines += *c == '\n';
        free(log);
        if (lines >= 2) break;
        usleep(5000);
    }
    kill(k->pid, SIGKILL);
    atomic_store(&k->killed, 1);
    return NULL;
}

static void test_server_killed_mid_stream(void) {
    if (!g_fault.pid) return;
    FILE *f = fopen(g_fault_log, "w"); /* count this test's requests only */
    if (f) fclose(f);
    killer k = {g_fault_log, g_fault.pid, 0};
    pthread_t t;
    CB_CHECK_EQ_INT(pthread_create(&t, NULL, killer_main, &k), 0);
    /* 30 arrivals over 1.5 s: the kill (after the server saw 2) comes well before the last */
    outcome *o = fault_run("hang", 30, NULL,
                           "{component: constant, max_queries: 30, config: {rate: 20}}");
    pthread_join(t, NULL);
    waitpid(g_fault.pid, NULL, 0);
    g_fault.pid = 0;
    CB_CHECK_EQ_INT(o->f.rc, CB_OK);
    CB_CHECK_EQ_INT(o->n_error, 30);
    printf("# broken streams %g, refused %g\n", o->total[M_ERRORS_STREAM],
           o->total[M_ERRORS_CONNECT]);
    CB_CHECK_CMP_INT((int64_t)o->total[M_ERRORS_STREAM], >=, 2);
    CB_CHECK_CMP_INT((int64_t)o->total[M_ERRORS_CONNECT], >=, 1);
    CB_CHECK_NEAR(o->total[M_ERRORS_STREAM] + o->total[M_ERRORS_CONNECT], 30, 0.5);
    run_fixture_fini(&o->f);
    free(o);
}

/* The enum above mirrors llm.openai's metric table: checked by name, so a reordered table fails
 * here instead of reading the wrong metric. */
static void test_metric_indices(void) {
    static const char *const names[M_COUNT] = {
        "prompt_tokens", "output_tokens", "tokens", "ttft_ns", "tpot_ns", "itl_mean_ns",
        "itl_max_ns", "slo_met", "itl_ns", "chunks", "tokens_counted", "errors",
        "errors_connect", "errors_http", "errors_timeout", "errors_stream"};
    CB_CHECK_EQ_INT(cb_stage_llm_openai.n_metrics, M_COUNT);
    for (int i = 0; i < M_COUNT && (size_t)i < cb_stage_llm_openai.n_metrics; i++)
        CB_CHECK_STR_EQ(cb_stage_llm_openai.metrics[i].name, names[i]);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    CB_RUN(test_metric_indices);
    setenv("CB_TEST_OAI_KEY", "test-key-4f1c", 1);
    CB_CHECK_EQ_INT(start_serve(), 0);
    CB_CHECK_EQ_INT(start_fault(), 0);
    for (int c = 0; c < 2; c++) { /* colobench's HTTP/1.1 client, then libcurl's */
        g_client = c ? "libcurl" : "native";
        printf("# http_client: %s\n", g_client);
        CB_RUN(test_serve_stream);
        CB_RUN(test_serve_chat_nonstream);
        CB_RUN(test_serve_no_usage);
        CB_RUN(test_refused);
        CB_RUN(test_faults);
        CB_RUN(test_framings);
        CB_RUN(test_api_key);
    }
    g_client = "native";
    CB_RUN(test_open_loop_slow_server);
    CB_RUN(test_server_killed_mid_stream);
    server_kill(&g_serve);
    server_kill(&g_fault);
    return cb_test_done();
}
