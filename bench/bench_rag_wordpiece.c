/* bench/bench_rag_wordpiece.c - WordPiece encoding throughput (rag/wordpiece): encodes every line
 * of a corpus file (one text per line, at most 64 MiB) with a vocab.txt, single thread, best of R
 * passes; prints texts, ids (with [CLS]/[SEP], no truncation up to 8192 ids a text), seconds,
 * ids/s and MB/s (10^6 bytes of UTF-8). bench/rag_wp_vs_hf.py runs it next to Hugging Face
 * tokenizers on the same corpus.
 * Usage: bench_rag_wordpiece VOCAB_TXT CORPUS [REPEAT] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "rag/wordpiece.h"

#define CORPUS_MAX_BYTES (64u << 20)
#define IDS_MAX 8192

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s VOCAB_TXT CORPUS [REPEAT]\n", argv[0]);
        return 2;
    }
    long repeat = argc > 3 ? strtol(argv[3], NULL, 10) : 5;
    if (repeat < 1 || repeat > 1000)
        repeat = 5;
    cb_error err;
    cb_error_clear(&err);
    cb_wordpiece *t = NULL;
    int64_t t0 = cb_clock_now_ns();
    if (cb_wp_load(argv[1], 1, &t, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double load_ms = (double)(cb_clock_now_ns() - t0) / 1e6;
    FILE *f = fopen(argv[2], "rb");
    char *text = malloc(CORPUS_MAX_BYTES + 1);
    size_t len = f && text ? fread(text, 1, CORPUS_MAX_BYTES, f) : 0;
    if (f)
        fclose(f);
    if (!len) {
        fprintf(stderr, "%s: cannot read\n", argv[2]);
        return 1;
    }
    int32_t *ids = malloc(IDS_MAX * sizeof *ids);
    double best_s = 1e30;
    long long total = 0;
    size_t texts = 0;
    for (long r = 0; r < repeat; r++) {
        total = 0, texts = 0;
        int64_t s0 = cb_clock_now_ns();
        for (size_t p = 0; p < len;) {
            const char *nl = memchr(text + p, '\n', len - p);
            size_t e = nl ? (size_t)(nl - text) : len;
            total += cb_wp_encode(t, text + p, e - p, ids, IDS_MAX);
            texts++;
            p = e + 1;
        }
        double s = (double)(cb_clock_now_ns() - s0) / 1e9;
        if (s < best_s)
            best_s = s;
    }
    printf("colobench wordpiece: load %.1f ms, %zu texts, %lld ids, %.4f s, %.0f ids/s, "
           "%.2f MB/s\n",
           load_ms, texts, total, best_s, (double)total / best_s, (double)len / 1e6 / best_s);
    free(ids), free(text);
    cb_wp_free(t);
    return 0;
}
