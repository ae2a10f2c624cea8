/* cli/cmd_rag.c - `colobench rag corpus` (a synthetic corpus and its questions as JSON Lines) and
 * `colobench rag ingest` (corpus files into an SQLite store for rag.lookup, rag.keyword and
 * rag.retrieve).
 *
 * corpus writes DIR/corpus.jsonl and DIR/questions.jsonl (rag/corpus.h: passage j and question i
 * are pure functions of the options, so the files stream out with flat memory for any size) and
 * refuses to replace them without --force. ingest adds files or folders to a store (created
 * when absent), with the errors of rag/store.h (file:line: key: what). Both print what they did.
 */
#include "cli/cmd_rag.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/alloc.h"
#include "rag/corpus.h"
#include "rag/store.h"

static int usage(FILE *f) {
    fprintf(f,
            "usage: colobench rag corpus -o DIR --passages N --questions M [--length-dist "
            "fixed|uniform|normal|lognormal]\n"
            "                            [--mean-words W] [--spread S] [--min-words A] "
            "[--max-words B] [--seed S] [--force]\n"
            "       colobench rag ingest --store FILE.sqlite PATH... [--skip-bad-lines] "
            "[--chunk-words N]\n"
            "  corpus: a synthetic corpus (DIR/corpus.jsonl) and questions whose answer passage "
            "is known (DIR/questions.jsonl)\n"
            "  ingest: corpus files (.jsonl, .txt, or folders of them) into a colobench RAG "
            "store (SQLite, FTS5)\n");
    return f == stderr ? 2 : 0;
}

static int num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "colobench rag: %s: expected a number in [%g, %g], got '%s'\n", flag, lo,
                hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_corpus(const char *dir, const cb_rag_corpus_opts *o, int64_t questions,
                        int force) {
    char pc[4096], pq[4096];
    snprintf(pc, sizeof pc, "%s/corpus.jsonl", dir);
    snprintf(pq, sizeof pq, "%s/questions.jsonl", dir);
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "colobench rag corpus: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (!force && (stat(pc, &sb) == 0 || stat(pq, &sb) == 0)) {
        fprintf(stderr, "colobench rag corpus: %s or %s exists (give --force to replace)\n", pc,
                pq);
        return 1;
    }
    size_t cap = CB_RAG_CORPUS_PASSAGE_CAP(o->max_words);
    char *text = cb_malloc(cap), *json = cb_malloc(6 * cap + 3), title[CB_RAG_CORPUS_TITLE_CAP];
    FILE *fc = fopen(pc, "w"), *fq = fopen(pq, "w");
    int rc = 0;
    if (!text || !json || !fc || !fq) {
        fprintf(stderr, "colobench rag corpus: cannot write %s: %s\n", fc ? pq : pc,
                strerror(errno));
        rc = 1;
    }
    double t0 = now_s();
    int64_t words = 0;
    size_t bytes = 0;
    for (int64_t j = 0; !rc && j < o->passages; j++) {
        size_t n = cb_rag_corpus_passage(o, j, text, cap, title);
        for (size_t k = 0; k < n; k++) words += text[k] == ' ';
        words++;
        cb_rag_json_string(text, n, json, 6 * cap + 3);
        int w = fprintf(fc, "{\"id\": %lld, \"title\": \"%s\", \"text\": %s}\n", (long long)j,
                        title, json);
        if (w < 0) rc = 1;
        else bytes += (size_t)w;
    }
    char q[CB_RAG_CORPUS_QUESTION_CAP];
    for (int64_t i = 0; !rc && i < questions; i++) {
        int64_t a = 0;
        size_t n = cb_rag_corpus_question(o, i, q, sizeof q, &a);
        cb_rag_json_string(q, n, json, 6 * cap + 3);
        if (fprintf(fq, "{\"id\": %lld, \"question\": %s, \"answer_id\": %lld}\n", (long long)i,
                    json, (long long)a) < 0)
            rc = 1;
    }
    if (fc && fclose(fc) != 0) rc = 1;
    if (fq && fclose(fq) != 0) rc = 1;
    cb_free(text);
    cb_free(json);
    if (rc) {
        fprintf(stderr, "colobench rag corpus: writing %s failed: %s\n", dir, strerror(errno));
        return 1;
    }
    printf("%s: %lld passages (%lld words, mean %.1f), %zu bytes; %s: %lld questions; %.2f s\n",
           pc, (long long)o->passages, (long long)words, (double)words / (double)o->passages,
           bytes, pq, (long long)questions, now_s() - t0);
    return 0;
}

static int cmd_corpus(int argc, char **argv) {
    cb_rag_corpus_opts o = CB_RAG_CORPUS_OPTS_DEFAULT;
    const char *dir = NULL;
    double questions = 100, v = 0;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout);
        if (!strcmp(a, "--force")) {
            force = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "colobench rag corpus: unknown or incomplete option '%s'\n", a);
            return usage(stderr);
        }
        i++;
        if (!strcmp(a, "-o")) dir = val;
        else if (!strcmp(a, "--passages")) {
            if (num(a, val, 1, (double)CB_RAG_CORPUS_MAX_PASSAGES, &v)) return 2;
            o.passages = (int64_t)v;
        } else if (!strcmp(a, "--questions")) {
            if (num(a, val, 0, 1e8, &questions)) return 2;
        } else if (!strcmp(a, "--mean-words")) {
            if (num(a, val, 1, CB_RAG_CORPUS_MAX_WORDS, &o.mean_words)) return 2;
        } else if (!strcmp(a, "--spread")) {
            if (num(a, val, 0, 10, &o.spread)) return 2;
        } else if (!strcmp(a, "--min-words")) {
            if (num(a, val, 1, CB_RAG_CORPUS_MAX_WORDS, &v)) return 2;
            o.min_words = (int)v;
        } else if (!strcmp(a, "--max-words")) {
            if (num(a, val, 1, CB_RAG_CORPUS_MAX_WORDS, &v)) return 2;
            o.max_words = (int)v;
        } else if (!strcmp(a, "--seed")) {
            if (num(a, val, 0, 9e15, &v)) return 2;
            o.seed = (uint64_t)v;
        } else if (!strcmp(a, "--length-dist")) {
            static const char *const d[4] = {"fixed", "uniform", "normal", "lognormal"};
            int k = 0;
            while (k < 4 && strcmp(val, d[k])) k++;
            if (k == 4) {
                fprintf(stderr, "colobench rag corpus: --length-dist: fixed, uniform, normal or "
                        "lognormal, not '%s'\n", val);
                return 2;
            }
            o.length_dist = k;
        } else {
            fprintf(stderr, "colobench rag corpus: unknown option '%s'\n", a);
            return usage(stderr);
        }
    }
    if (!dir) {
        fprintf(stderr, "colobench rag corpus: -o DIR is required\n");
        return usage(stderr);
    }
    const char *why = cb_rag_corpus_check(&o);
    if (why[0]) {
        fprintf(stderr, "colobench rag corpus: %s\n", why);
        return 2;
    }
    return write_corpus(dir, &o, (int64_t)questions, force);
}

static int cmd_ingest(int argc, char **argv) {
    const char *store = NULL;
    cb_rag_ingest_opts o = {0, 0};
    int first = 0, npaths = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout);
        if (!strcmp(a, "--skip-bad-lines")) o.on_bad_line = 1;
        else if (!strcmp(a, "--store") && i + 1 < argc) store = argv[++i];
        else if (!strcmp(a, "--chunk-words") && i + 1 < argc) {
            double v = 0;
            if (num(a, argv[++i], 1, 100000, &v)) return 2;
            o.chunk_words = (int)v;
        } else if (a[0] == '-') {
            fprintf(stderr, "colobench rag ingest: unknown or incomplete option '%s'\n", a);
            return usage(stderr);
        } else {
            if (!npaths) first = i;
            npaths++;
            argv[first + npaths - 1] = argv[i];
        }
    }
    if (!store || !npaths) {
        fprintf(stderr, "colobench rag ingest: --store FILE and at least one PATH are required\n");
        return usage(stderr);
    }
    cb_error e;
    cb_error_clear(&e);
    cb_rag_store *s = NULL;
    if (cb_rag_store_open(store, 1, &s, &e) != CB_OK) {
        fprintf(stderr, "colobench rag ingest: %s\n", e.msg);
        return 1;
    }
    double t0 = now_s();
    cb_rag_ingest_stats st = {0, 0, 0, 0};
    int rc = 0;
    for (int i = 0; i < npaths && !rc; i++)
        if (cb_rag_store_ingest(s, argv[first + i], &o, &st, &e) != CB_OK) {
            fprintf(stderr, "colobench rag ingest: %s\n", e.msg);
            rc = 1;
        }
    printf("%s: %lld passages (%lld bytes) from %lld files in %.2f s; %lld bad lines skipped; "
           "%lld passages in the store\n", store, (long long)st.passages, (long long)st.bytes,
           (long long)st.files, now_s() - t0, (long long)st.bad_lines,
           (long long)cb_rag_store_count(s));
    cb_rag_store_close(s);
    return rc;
}

int cb_cli_rag(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "corpus")) return cmd_corpus(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ingest")) return cmd_ingest(argc - 1, argv + 1);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout);
    fprintf(stderr, "colobench rag: unknown command '%s' (corpus, ingest)\n", argv[1]);
    return 2;
}
