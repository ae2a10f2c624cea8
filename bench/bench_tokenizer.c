/* bench/bench_tokenizer.c - tokenizer throughput: load time, encode and decode MB/s of one
 * tokenizer (src/llm/tokenizer.h) on one text file, single-threaded, best of R runs.
 *
 * Prints one JSON object: {"loader", "file", "text_bytes", "ids", "load_ms", "encode_mb_per_s",
 * "decode_mb_per_s"}; with --ids OUT it also writes the ids (space-separated) so a caller can
 * check them against a reference. bench/tok_vs_ref.py runs it beside Hugging Face `tokenizers`
 * and `tiktoken` on the same text and vocabularies.
 * Usage: bench_tokenizer (--hf TOKENIZER_JSON | --tiktoken RANK_FILE --pattern NAME)
 *                        --text FILE [--repeat R] [--ids OUT]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b)
                free(buf);
            buf = b;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_tokenizer (--hf FILE | --tiktoken FILE --pattern NAME) --text "
                    "FILE [--repeat R] [--ids OUT]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *hf = NULL, *tt = NULL, *pattern = NULL, *text_path = NULL, *ids_path = NULL;
    long repeat = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--hf") == 0)
            hf = argv[i + 1];
        else if (strcmp(argv[i], "--tiktoken") == 0)
            tt = argv[i + 1];
        else if (strcmp(argv[i], "--pattern") == 0)
            pattern = argv[i + 1];
        else if (strcmp(argv[i], "--text") == 0)
            text_path = argv[i + 1];
        else if (strcmp(argv[i], "--ids") == 0)
            ids_path = argv[i + 1];
        else if (strcmp(argv[i], "--repeat") == 0)
            repeat = strtol(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (argc % 2 == 0 || !text_path || !hf == !tt || repeat < 1)
        return usage();
    size_t len = 0;
    char *text = read_all(text_path, &len);
    if (!text) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", text_path);
        return 1;
    }
    cb_error err;
    cb_error_clear(&err);
    cb_tok *t = NULL;
    double t0 = now_s();
    int rc =
        hf ? cb_tok_load_hf(hf, &t, &err) : cb_tok_load_tiktoken(tt, pattern, NULL, 0, &t, &err);
    double load_s = now_s() - t0;
    if (rc) {
        char msg[1200];
        cb_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "bench_tokenizer: %s\n", msg);
        free(text);
        return 1;
    }
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    char *back = malloc(len + 1);
    size_t n = 0, blen = 0;
    double enc = 1e30, dec = 1e30;
    for (long r = 0; r < repeat && ids && back; r++) {
        t0 = now_s();
        rc = cb_tok_encode(t, text, len, 0, ids, len + 1, &n, &err);
        double e = now_s() - t0;
        t0 = now_s();
        rc = rc ? rc : cb_tok_decode(t, ids, n, back, len + 1, &blen, &err);
        double d = now_s() - t0;
        if (rc)
            break;
        enc = e < enc ? e : enc;
        dec = d < dec ? d : dec;
    }
    if (rc || !ids || !back || blen != len || memcmp(back, text, len) != 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", rc ? err.msg : "decode(encode(text)) != text");
        return 1;
    }
    if (ids_path) {
        FILE *f = fopen(ids_path, "w");
        for (size_t i = 0; f && i < n; i++)
            fprintf(f, i ? " %d" : "%d", ids[i]);
        if (!f || fclose(f) != 0) {
            fprintf(stderr, "bench_tokenizer: cannot write %s\n", ids_path);
            return 1;
        }
    }
    printf("{\"loader\": \"%s\", \"file\": \"%s\", \"text_bytes\": %zu, \"ids\": %zu, "
           "\"load_ms\": %.1f, \"encode_mb_per_s\": %.2f, \"decode_mb_per_s\": %.1f}\n",
           hf ? "hf" : "tiktoken", hf ? hf : tt, len, n, load_s * 1e3, len / enc / 1e6,
           len / dec / 1e6);
    cb_tok_free(t);
    free(ids);
    free(back);
    free(text);
    return 0;
}
