/* cli/cmd_serve.c - `colobench serve`: argument parsing and printing for serve/serve.h.
 *
 * One table declares every option once (name, kind, bounds, default shown, help): it drives the
 * parser, its error messages and --help. Values are parsed with strtoll/strtod and end checks
 * (a suffix or an overflow is refused, naming the option), exit status 2.
 *
 * Signals: main() has blocked SIGINT and SIGTERM in every thread before calling here, so the
 * server's threads never see them; this thread takes them with sigwait once the server runs,
 * then stops it (serve.h: stop accepting, end in-flight requests, join) and exits 0. SIGPIPE is
 * ignored (a client gone mid-write must not end the process). */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd_serve.h"
#include "core/log.h"
#include "serve/serve.h"

enum { K_STR, K_INT, K_PREC };

typedef struct opt_def {
    const char *name; /* "--model" */
    int kind;
    long long lo, hi; /* K_INT bounds */
    size_t off;       /* in cb_serve_opts */
    int width;        /* K_INT: bytes of the field (4 or 8) */
    const char *arg, *help;
} opt_def;

#define OFF(f) offsetof(cb_serve_opts, f)
#define W(f) (int)sizeof(((cb_serve_opts *)0)->f)
static const opt_def k_opts[] = {
    {"--model", K_STR, 0, 0, OFF(model), 0, "M",
     "a preset (qwen2.5-0.5b, llama-3.2-1b, tinyllama-1.1b, qwen3-0.6b, tiny, tiny-llama, "
     "tiny-qwen3) or a config.json / model directory (default tiny)"},
    {"--weights", K_STR, 0, 0, OFF(weights), 0, "PATH",
     "safetensors file, index or directory (unset: seeded random weights, with a warning)"},
    {"--tokenizer", K_STR, 0, 0, OFF(tokenizer), 0, "FILE",
     "tokenizer.json (default: the one next to the model's config.json; none: token ids as "
     "text, see docs/serve.md)"},
    {"--precision", K_PREC, 0, 0, OFF(bf16), 0, "f32|bf16", "weights and KV cache (default bf16)"},
    {"--threads", K_INT, 1, 1024, OFF(threads), W(threads), "N",
     "threads of the forward pass (default 1)"},
    {"--max-batch", K_INT, 1, 4096, OFF(max_batch), W(max_batch), "N",
     "sequences running at once (default 32)"},
    {"--max-tokens-per-step", K_INT, 1, 65536, OFF(max_tokens_per_step),
     W(max_tokens_per_step), "N", "tokens of one engine step, >= --max-batch (default 512)"},
    {"--max-waiting", K_INT, 1, CB_SERVE_MAX_WAITING, OFF(max_waiting), W(max_waiting), "N",
     "requests waiting for admission; beyond --max-batch + this, 503 (default 256)"},
    {"--kv-cache-bytes", K_INT, 1, 1LL << 40, OFF(kv_cache_bytes), W(kv_cache_bytes), "N",
     "KV cache budget in bytes (default 1073741824)"},
    {"--block-tokens", K_INT, 1, 1024, OFF(block_tokens), W(block_tokens), "N",
     "positions per KV block (default 16)"},
    {"--seed", K_INT, 0, 9007199254740991LL, OFF(seed), W(seed), "N",
     "random weights and the sampling seed mixed into every request's (default 0)"},
    {"--served-model-name", K_STR, 0, 0, OFF(served_name), 0, "NAME",
     "the model name clients use (default: the --model argument)"},
    {"--host", K_STR, 0, 0, OFF(host), 0, "H", "address to bind (default 127.0.0.1)"},
    {"--port", K_INT, 0, 65535, OFF(port), W(port), "P",
     "port (default 8000; 0: the kernel picks a free one, printed)"},
    {"--max-connections", K_INT, 1, CB_SERVE_MAX_CONNECTIONS, OFF(max_connections),
     W(max_connections), "N", "open connections, one thread each (default 256)"},
    {"--max-body-bytes", K_INT, 1, (long long)CB_SERVE_BODY_MAX_BYTES, OFF(max_body_bytes),
     W(max_body_bytes), "N", "request body limit, 413 beyond (default 8388608)"},
};
#define N_OPTS (sizeof k_opts / sizeof k_opts[0])

static void usage(FILE *f) {
    fprintf(f, "usage: colobench serve [options]\n"
               "Serves colobench's LLM engine as an OpenAI-compatible HTTP server: GET /health,\n"
               "GET /v1/models, POST /v1/completions, POST /v1/chat/completions (docs/serve.md).\n"
               "Stops on SIGINT/SIGTERM.\n\noptions (--opt VALUE or --opt=VALUE):\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s %s", k_opts[i].name, k_opts[i].arg);
        fprintf(f, "  %-26s %s\n", left, k_opts[i].help);
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "this text");
}

/* Sets one option from its text; 0 or -1 (message printed). */
static int set_opt(const opt_def *d, const char *v, cb_serve_opts *o) {
    char *field = (char *)o + d->off;
    if (d->kind == K_STR) {
        if (!*v) {
            fprintf(stderr, "colobench serve: %s: empty value\n", d->name);
            return -1;
        }
        memcpy(field, &v, sizeof v);
        return 0;
    }
    if (d->kind == K_PREC) {
        int bf16 = !strcmp(v, "bf16") ? 1 : !strcmp(v, "f32") ? 0 : -1;
        if (bf16 < 0) {
            fprintf(stderr, "colobench serve: %s: expected f32 or bf16, got '%s'\n", d->name, v);
            return -1;
        }
        memcpy(field, &bf16, sizeof bf16);
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < d->lo || x > d->hi) {
        fprintf(stderr, "colobench serve: %s: expected an integer in [%lld, %lld], got '%s'\n",
                d->name, d->lo, d->hi, v);
        return -1;
    }
    if (d->width == 4) {
        int32_t y = (int32_t)x;
        memcpy(field, &y, sizeof y);
    } else {
        int64_t y = x;
        memcpy(field, &y, sizeof y);
    }
    return 0;
}

/* 0 and *o, 1 when help was printed, -1 on a bad argument (message printed). */
static int parse(int argc, char **argv, cb_serve_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const opt_def *d = NULL;
        for (size_t j = 0; j < N_OPTS && !d; j++)
            if (strlen(k_opts[j].name) == n && !strncmp(k_opts[j].name, a, n)) d = &k_opts[j];
        if (!d) {
            fprintf(stderr, "colobench serve: unknown option '%s' (see colobench serve --help)\n",
                    a);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "colobench serve: %s needs a value (%s)\n", d->name, d->arg);
                return -1;
            }
            v = argv[++i];
        }
        if (set_opt(d, v, o)) return -1;
    }
    if (o->max_tokens_per_step < o->max_batch) {
        fprintf(stderr, "colobench serve: --max-tokens-per-step %d below --max-batch %d (every "
                "running sequence decodes one token a step)\n", o->max_tokens_per_step,
                o->max_batch);
        return -1;
    }
    return 0;
}

int cb_cli_serve(int argc, char **argv) {
    _Static_assert(sizeof(int) == 4 && sizeof(size_t) == 8, "option widths");
    cb_serve_opts o = CB_SERVE_OPTS_DEFAULT;
    int pr = parse(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);
    cb_logger lg = {CB_LOG_WARN, stderr};
    o.log = &lg;
    cb_serve *s = NULL;
    cb_error e;
    cb_error_clear(&e);
    int rc = cb_serve_create(&o, &s, &e);
    if (rc) {
        fprintf(stderr, "colobench serve: %s\n", e.msg);
        return rc == CB_EIO || rc == CB_ENOMEM ? 1 : 2;
    }
    if (cb_serve_random_weights(s))
        fprintf(stderr, "colobench serve: warning: %s with seeded random weights (seed %llu, no "
                "--weights): speed figures are real, the text is not\n", o.model,
                (unsigned long long)o.seed);
    if (!cb_serve_has_tokenizer(s))
        fprintf(stderr, "colobench serve: no tokenizer: text prompts are read one byte a token "
                "and each output token is the text \" ID\" (docs/serve.md)\n");
    if ((rc = cb_serve_start(s, &e))) {
        fprintf(stderr, "colobench serve: %s\n", e.msg);
        cb_serve_destroy(s);
        return 1;
    }
    const char *h = cb_serve_host(s);
    int v6 = strchr(h, ':') != NULL;
    fprintf(stderr, "colobench serve: listening on http://%s%s%s:%d (model %s)\n", v6 ? "[" : "",
            h, v6 ? "]" : "", cb_serve_port(s), cb_serve_name(s));
    fflush(stderr);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    cb_serve_stop(s);
    cb_serve_stats st;
    cb_serve_get_stats(s, &st);
    fprintf(stderr, "colobench serve: stopped (%s): %lld requests: %lld finished, %lld cancelled "
            "(client gone), %lld aborted; %lld refused (%lld busy); %lld prompt and %lld "
            "completion tokens\n", sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)st.requests,
            (long long)st.finished, (long long)st.client_gone, (long long)st.aborted,
            (long long)st.refused, (long long)st.busy, (long long)st.prompt_tokens,
            (long long)st.completion_tokens);
    cb_serve_destroy(s);
    return 0;
}
