/* Tests of the RAG document side: the synthetic corpus (src/rag/corpus.c), ingestion and the
 * SQLite store (src/rag/store*.c, real SQLite files), `colobench rag corpus|ingest`, and the
 * stages rag.questions, rag.keyword, rag.lookup and rag.fuse in real pipelines.
 *
 * What is checked: what the code computes (ids, texts, counts, rankings, errors with file, line
 * and key), never speed.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "rag/corpus.h"
#include "rag/store.h"
#include "run_fixture.h"

#define COLOBENCH CB_TEST_BINDIR "/colobench"

static void test_corpus_generator(void) {
    cb_rag_corpus_opts o = CB_RAG_CORPUS_OPTS_DEFAULT;
    o.passages = 5000;
    char a[CB_RAG_CORPUS_PASSAGE_CAP(400)], b[CB_RAG_CORPUS_PASSAGE_CAP(400)];
    char ta[CB_RAG_CORPUS_TITLE_CAP], tb[CB_RAG_CORPUS_TITLE_CAP];
    /* Deterministic, names unique (checked on a sample pair-wise via a sort-free hash set). */
    size_t n1 = cb_rag_corpus_passage(&o, 42, a, sizeof a, ta);
    size_t n2 = cb_rag_corpus_passage(&o, 42, b, sizeof b, tb);
    CB_CHECK(n1 == n2 && n1 > 0 && !memcmp(a, b, n1) && !strcmp(ta, tb));
    enum { N = 4096 };
    static char names[N][CB_RAG_CORPUS_TITLE_CAP];
    int dup = 0;
    double words = 0;
    int min_w = 1 << 30, max_w = 0;
    for (int i = 0; i < N; i++) {
        size_t n = cb_rag_corpus_passage(&o, i, a, sizeof a, names[i]);
        int w = 1;
        for (size_t k = 0; k < n; k++) w += a[k] == ' ';
        words += w;
        min_w = w < min_w ? w : min_w;
        max_w = w > max_w ? w : max_w;
        CB_CHECK(strncmp(a, names[i], strlen(names[i])) == 0); /* the fact names the entity */
    }
    for (int i = 0; i < N && !dup; i++)
        for (int j = i + 1; j < N && !dup; j++) dup = !strcmp(names[i], names[j]);
    CB_CHECK(!dup);
    /* lognormal, median 80 words, sigma 0.4: mean 80 e^0.08 = 86.7; clamped to [20, 400]. */
    printf("# %d passages: mean %.1f words, min %d, max %d\n", N, words / N, min_w, max_w);
    CB_CHECK(words / N > 80 && words / N < 94);
    CB_CHECK(min_w >= 20 && max_w <= 400 && max_w > 150);
    o.length_dist = CB_RAG_LEN_FIXED;
    n1 = cb_rag_corpus_passage(&o, 7, a, sizeof a, NULL);
    int w = 1;
    for (size_t k = 0; k < n1; k++) w += a[k] == ' ';
    CB_CHECK_EQ_INT(w, 80);
    /* Every question names its answer passage's entity. */
    for (int i = 0; i < 200; i++) {
        char q[CB_RAG_CORPUS_QUESTION_CAP];
        int64_t ans = -1;
        cb_rag_corpus_question(&o, i, q, sizeof q, &ans);
        CB_CHECK(ans >= 0 && ans < o.passages);
        cb_rag_corpus_passage(&o, ans, a, sizeof a, ta);
        CB_CHECK(strstr(q, ta) != NULL);
    }
    CB_CHECK(cb_rag_corpus_check(&o)[0] == 0);
    o.min_words = 500;
    CB_CHECK(strstr(cb_rag_corpus_check(&o), "min_words") != NULL);
}

static int64_t count_rows(const char *db) {
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT count(*) FROM passages", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

static void test_ingest_and_store(void) {
    const char *dir = cb_test_tmpdir();
    char db[600];
    snprintf(db, sizeof db, "%s/store.sqlite", dir);
    const char *good = cb_test_write(dir, "good.jsonl",
                                     "{\"id\": 1, \"title\": \"A\", \"text\": \"the zebra crossing "
                                     "is painted white\"}\n"
                                     "\n"
                                     "{\"id\": 2, \"text\": \"apples and pears grow here\"}\n"
                                     "{\"text\": \"no id: the next free one\"}\n");
    const char *bad = cb_test_write(dir, "bad.jsonl",
                                    "{\"id\": 10, \"text\": \"kept only when skipping\"}\n"
                                    "{\"id\": 11, \"text\": \"also\"}\n"
                                    "{\"id\": 12, \"text\": broken}\n"
                                    "{\"id\": 13, \"text\": \"fine\"}\n"
                                    "{\"id\": 14, \"title\": \"no text\"}\n");
    cb_rag_store *s = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_rag_store_open(db, 1, &s, &e), 0);
    if (!s) return;
    cb_rag_ingest_stats st = {0, 0, 0, 0};
    CB_CHECK_EQ_INT(cb_rag_store_ingest(s, good, NULL, &st, &e), 0);
    CB_CHECK_EQ_INT(st.passages, 3);
    /* A broken line: the error names file, line and what; nothing of that file is kept. */
    CB_CHECK_EQ_INT(cb_rag_store_ingest(s, bad, NULL, &st, &e), CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "bad.jsonl:3: not JSON") != NULL);
    CB_CHECK_EQ_INT(cb_rag_store_count(s), 3);
    /* Skipping: the other lines are in, the two bad ones counted. */
    cb_rag_ingest_opts skip = {1, 0};
    cb_rag_ingest_stats st2 = {0, 0, 0, 0};
    CB_CHECK_EQ_INT(cb_rag_store_ingest(s, bad, &skip, &st2, &e), 0);
    CB_CHECK_EQ_INT(st2.passages, 3);
    CB_CHECK_EQ_INT(st2.bad_lines, 2);
    CB_CHECK_EQ_INT(cb_rag_store_count(s), 6);
    /* Duplicate ids are refused with the line. */
    CB_CHECK_EQ_INT(cb_rag_store_ingest(s, good, NULL, &st, &e), CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "good.jsonl:1: id: passage 1 is already in the store") != NULL);
    /* get, each, missing */
    const char *t = NULL;
    size_t n = 0;
    CB_CHECK_EQ_INT(cb_rag_store_get(s, 2, &t, &n, &e), 0);
    CB_CHECK(n == 26 && !memcmp(t, "apples and pears grow here", n));
    CB_CHECK_EQ_INT(cb_rag_store_get(s, 999, &t, &n, &e), CB_ENOENT);
    /* BM25: the passage with the rare word first; FTS syntax in the text is harmless. */
    cb_rag_hit hits[8];
    int nh = 0;
    const char *q = "Where is the ZEBRA? AND \"quotes\" NEAR( * col:umn";
    CB_CHECK_EQ_INT(cb_rag_store_search(s, q, strlen(q), 8, hits, &nh, &e), 0);
    CB_CHECK(nh >= 1);
    if (nh >= 1) CB_CHECK_EQ_INT(hits[0].id, 1);
    CB_CHECK(nh < 1 || hits[0].source == CB_RAG_SRC_KEYWORD);
    CB_CHECK_EQ_INT(cb_rag_store_search(s, "!!!", 3, 8, hits, &nh, &e), 0);
    CB_CHECK_EQ_INT(nh, 0);
    cb_rag_store_close(s);
    /* A folder of .txt files is cut into passages of at most chunk_words words. */
    char sub[700];
    snprintf(sub, sizeof sub, "%s/texts", dir);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", sub);
    cb_test_sh_ok(cmd);
    cb_test_write(sub, "a.txt", "one two three four five six seven eight nine ten\n\n"
                                "eleven twelve\nthirteen\n\nfourteen");
    cb_test_write(sub, "b.txt", "alpha beta gamma");
    CB_CHECK_EQ_INT(cb_rag_store_open(":memory:", 1, &s, &e), 0);
    cb_rag_ingest_opts chunk = {0, 4};
    cb_rag_ingest_stats st3 = {0, 0, 0, 0};
    CB_CHECK_EQ_INT(cb_rag_store_ingest(s, sub, &chunk, &st3, &e), 0);
    CB_CHECK_EQ_INT(st3.files, 2);
    /* a: "one..four", "five..eight", "nine ten eleven twelve" (a paragraph break starts a new
     * passage only past half of chunk_words), "thirteen fourteen"; b: one passage. */
    CB_CHECK_EQ_INT(st3.passages, 5);
    cb_rag_store_close(s);
    /* Not a store: clear errors naming the file. */
    const char *junk = cb_test_write(dir, "junk.sqlite", "this is not a database at all, no");
    CB_CHECK_EQ_INT(cb_rag_store_open(junk, 0, &s, &e), CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "junk.sqlite: not an SQLite database") != NULL);
    char empty[600];
    snprintf(empty, sizeof empty, "%s/empty.sqlite", dir);
    sqlite3 *h = NULL;
    sqlite3_open(empty, &h);
    sqlite3_exec(h, "CREATE TABLE other(x)", NULL, NULL, NULL);
    sqlite3_close(h);
    CB_CHECK_EQ_INT(cb_rag_store_open(empty, 0, &s, &e), CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "empty.sqlite: no table passages") != NULL);
}

static void test_cli(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' rag corpus -o '%s/c' --passages 300 --questions 40 --seed 3",
             COLOBENCH, dir);
    cb_test_sh_ok(cmd);
    snprintf(cmd, sizeof cmd, "'%s' rag corpus -o '%s/c' --passages 300 2>&1", COLOBENCH, dir);
    CB_CHECK(cb_test_sh(cmd, &out) != 0); /* no --force: refused */
    CB_CHECK(out && strstr(out, "--force") != NULL);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' rag ingest --store '%s/c/s.sqlite' '%s/c/corpus.jsonl'",
             COLOBENCH, dir, dir);
    cb_test_sh_ok(cmd);
    char db[700];
    snprintf(db, sizeof db, "%s/c/s.sqlite", dir);
    CB_CHECK_EQ_INT(count_rows(db), 300);
    snprintf(cmd, sizeof cmd, "python3 -c \"import json,sys; [json.loads(l) for l in "
             "open('%s/c/corpus.jsonl')]; q=[json.loads(l) for l in open('%s/c/questions.jsonl')];"
             " sys.exit(len(q) != 40)\"", dir, dir);
    cb_test_sh_ok(cmd);
    snprintf(cmd, sizeof cmd, "'%s' rag corpus --passages x -o '%s/d' 2>&1", COLOBENCH, dir);
    CB_CHECK_EQ_INT(cb_test_sh(cmd, &out), 2);
    free(out);
}

/* questions (file) -> keyword + lookup, and a hybrid of two keyword retrievers fused. */
static void test_pipeline(void) {
    const char *dir = cb_test_tmpdir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' rag corpus -o '%s' --passages 400 --questions 30",
             COLOBENCH, dir);
    cb_test_sh_ok(cmd);
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: t\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, config: {concurrency: 4}}\n"
             "    stages:\n"
             "      - {id: 0, name: q, component: rag.questions, outputs: [1, 2],\n"
             "         config: {file: %s/questions.jsonl}}\n"
             "      - {id: 1, name: kw1, component: rag.keyword, outputs: [3],\n"
             "         config: {corpus: %s/corpus.jsonl, k: 5}}\n"
             "      - {id: 2, name: kw2, component: rag.keyword, outputs: [3],\n"
             "         config: {corpus: %s/corpus.jsonl, k: 3}}\n"
             "      - {id: 3, name: fuse, component: rag.fuse, outputs: [4],\n"
             "         polling_policy: merge,\n"
             "         config: {k: 4}}\n"
             "      - {id: 4, name: lookup, component: rag.lookup,\n"
             "         config: {corpus: %s/corpus.jsonl}}\n",
             dir, dir, dir, dir);
    run_fixture f;
    if (run_fixture_ok(&f, yaml, NULL, NULL) == 0) {
        cb_pipeline_record r = run_fixture_records(&f, 0);
        CB_CHECK_EQ_INT(r.n_queries, 30); /* the file's 30 questions, one pass */
        double hit_sum[5] = {0}, n_hit[5] = {0}, passages = 0;
        for (size_t i = 0; i < r.n_metrics; i++) {
            const cb_metric_event *m = &r.metrics[i];
            if (m->metric == 0 && m->stage <= 3) hit_sum[m->stage] += m->value, n_hit[m->stage]++;
            if (m->stage == 4 && m->metric == 0) passages += m->value;
        }
        /* BM25 finds the entity's passage for every question; the fused top 4 keeps it. */
        CB_CHECK(n_hit[1] == 30 && hit_sum[1] == 30);
        CB_CHECK(n_hit[3] == 30 && hit_sum[3] == 30);
        CB_CHECK(passages >= 30 && passages <= 30 * 4); /* 1..4 fused hits looked up each */
    }
    run_fixture_fini(&f);
    /* A broken questions file: the error names the file, line and key. */
    const char *qf = cb_test_write(dir, "q.jsonl", "{\"question\": \"ok\"}\n{\"q\": 1}\n");
    snprintf(yaml, sizeof yaml,
             "name: t\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: {component: closed}\n"
             "    stages:\n"
             "      - {id: 0, name: q, component: rag.questions, config: {file: %s}}\n", qf);
    if (run_fixture_yaml(&f, yaml, NULL, NULL) == 0) {
        CB_CHECK(f.rc != CB_OK);
        CB_CHECK(strstr(f.err.msg, "q.jsonl:2: question: missing") != NULL);
        if (!strstr(f.err.msg, "q.jsonl:2")) printf("# %s\n", f.err.msg);
    }
    run_fixture_fini(&f);
    /* A store that is not one: the stage fails at prepare naming the file. */
    const char *junk = cb_test_write(dir, "junk.sqlite", "not a database, really not one at all");
    snprintf(yaml, sizeof yaml,
             "name: t\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    loadgen: {component: closed, max_queries: 2}\n"
             "    stages:\n"
             "      - {id: 0, name: q, component: rag.questions, outputs: [1],\n"
             "         config: {num_questions: 2}}\n"
             "      - {id: 1, name: kw, component: rag.keyword, config: {store: %s}}\n", junk);
    if (run_fixture_yaml(&f, yaml, NULL, NULL) == 0) {
        int failed = f.rc != CB_OK || f.res.n_errors > 0;
        CB_CHECK(failed);
        const char *msg = f.rc != CB_OK ? f.err.msg : f.res.n_errors ? f.res.errors[0] : "";
        CB_CHECK(strstr(msg, "junk.sqlite: not an SQLite database") != NULL);
        if (!strstr(msg, "junk.sqlite")) printf("# %s\n", msg);
    }
    run_fixture_fini(&f);
}

int main(void) {
    CB_RUN(test_corpus_generator);
    CB_RUN(test_ingest_and_store);
    CB_RUN(test_cli);
    CB_RUN(test_pipeline);
    return cb_test_done();
}
