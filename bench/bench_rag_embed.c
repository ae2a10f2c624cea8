/* bench/bench_rag_embed.c - embedding throughput of the RAG encoder (src/rag/encoder.c):
 * passages of the synthetic corpus (rag/corpus.h) in batches, passages/s and tokens/s, the
 * best of several rounds. The baseline is bench/rag_embed_torch.py (sentence-transformers on
 * the same passages, same model and batch).
 *
 *   build/bench_rag_embed [--passages N] [--batch B] [--threads T] [--rounds R] [--mean-words W]
 *                         [--model-dir DIR | --random] [--texts-out FILE]
 * --texts-out writes the passages as JSON Lines for the Python baseline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rag/corpus.h"
#include "rag/encoder.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int passages = 512, batch = 32, threads = 2, rounds = 3, random = 0;
    double mean_words = 80;
    const char *dir_arg = NULL, *texts_out = NULL;
    for (int i = 1; i + 1 < argc || (i < argc && !strcmp(argv[i], "--random")); i++) {
        if (!strcmp(argv[i], "--random")) { random = 1; continue; }
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--passages")) passages = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--batch")) batch = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--threads")) threads = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--rounds")) rounds = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--mean-words")) mean_words = strtod(v, NULL);
        else if (!strcmp(a, "--model-dir")) dir_arg = v;
        else if (!strcmp(a, "--texts-out")) texts_out = v;
        else { fprintf(stderr, "unknown option %s\n", a); return 2; }
    }
    char dir[4096];
    cb_rag_encoder_opts o = {"all-minilm-l6-v2", NULL, -1, -1, 0, threads, 1};
    if (dir_arg) o.model_dir = dir_arg;
    else if (!random && cb_rag_find_minilm(dir, sizeof dir) == 0) o.model_dir = dir;
    cb_error err;
    cb_error_clear(&err);
    cb_rag_encoder *e = NULL;
    if (cb_rag_encoder_open(&o, &e, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    cb_rag_corpus_opts co = CB_RAG_CORPUS_OPTS_DEFAULT;
    co.passages = passages;
    co.mean_words = mean_words;
    char **texts = calloc((size_t)passages, sizeof *texts);
    size_t *lens = calloc((size_t)passages, sizeof *lens);
    FILE *tf = texts_out ? fopen(texts_out, "w") : NULL;
    for (int i = 0; i < passages; i++) {
        texts[i] = malloc(CB_RAG_CORPUS_PASSAGE_CAP(co.max_words));
        lens[i] = cb_rag_corpus_passage(&co, i, texts[i], CB_RAG_CORPUS_PASSAGE_CAP(co.max_words),
                                        NULL);
        if (tf) {
            char *j = malloc(6 * lens[i] + 3);
            cb_rag_json_string(texts[i], lens[i], j, 6 * lens[i] + 3);
            fprintf(tf, "%s\n", j);
            free(j);
        }
    }
    if (tf) fclose(tf);
    float *out = malloc(sizeof(float) * (size_t)batch * (size_t)cb_rag_encoder_dim(e));
    double best = 1e30;
    int64_t tokens = 0;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        int64_t tk = 0;
        for (int i = 0; i < passages; i += batch) {
            int n = passages - i < batch ? passages - i : batch;
            int64_t t = 0;
            if (cb_rag_encoder_encode(e, (const char *const *)texts + i, lens + i, n, out, &t,
                                      &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            tk += t;
        }
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        tokens = tk;
    }
    printf("colobench encoder (%s, %d threads, batch %d): %d passages, %lld tokens: best %.3f s "
           "= %.1f passages/s, %.0f tokens/s\n", o.model_dir ? "real all-MiniLM-L6-v2" : "random",
           threads, batch, passages, (long long)tokens, best, passages / best, tokens / best);
    cb_rag_encoder_free(e);
    return 0;
}
