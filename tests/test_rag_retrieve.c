/* Tests of vector search: the FAISS shim (src/rag/faiss_shim.cpp through rag/vindex.h) against
 * a brute-force search, approximate indexes' recall, saving and loading, errors; rag.retrieve in
 * pipelines: k hits in score order, the dimension check, and with the real all-MiniLM-L6-v2
 * (when installed) the known answer passage of the synthetic questions in the top k.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "harness.h"
#include "rag/encoder.h"
#include "rag/vindex.h"
#include "run_fixture.h"

#define COLOBENCH CB_TEST_BINDIR "/colobench"

static float *random_unit(int64_t n, int dim, uint64_t seed) {
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    cb_rng r;
    cb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int d = 0; d < dim; d++) {
            x[i * dim + d] = (float)cb_rng_normal(&r);
            s += (double)x[i * dim + d] * x[i * dim + d];
        }
        for (int d = 0; d < dim; d++) x[i * dim + d] /= (float)sqrt(s);
    }
    return x;
}

/* Exact top k by brute force (ids in score order; ties by id). */
static void brute(const float *x, const int64_t *ids, int64_t n, int dim, const float *q, int k,
                  int l2, int64_t *out) {
    double *best = malloc(sizeof(double) * (size_t)k);
    for (int j = 0; j < k; j++) best[j] = -INFINITY, out[j] = -1;
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int d = 0; d < dim; d++)
            s += l2 ? -((double)x[i * dim + d] - q[d]) * ((double)x[i * dim + d] - q[d])
                    : (double)x[i * dim + d] * q[d];
        int j = k;
        while (j > 0 && s > best[j - 1]) j--;
        if (j == k) continue;
        memmove(best + j + 1, best + j, sizeof(double) * (size_t)(k - j - 1));
        memmove(out + j + 1, out + j, sizeof(int64_t) * (size_t)(k - j - 1));
        best[j] = s, out[j] = ids[i];
    }
    free(best);
}

static void test_shim(void) {
    const int64_t n = 20000;
    const int dim = 64, k = 10, nq = 50;
    float *x = random_unit(n, dim, 1), *q = random_unit(nq, dim, 2);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) ids[i] = 1000 + i * 3; /* passage ids, not positions */
    float *sc = malloc(sizeof(float) * nq * k);
    int64_t *got = malloc(sizeof(int64_t) * nq * k), want[10];
    cb_error e;
    cb_error_clear(&e);
    for (int l2 = 0; l2 < 2; l2++) {
        cb_vindex *v = NULL;
        CB_CHECK_EQ_INT(cb_vindex_create("Flat", dim, l2 ? CB_VINDEX_L2 : CB_VINDEX_IP, &v, &e), 0);
        if (!v) continue;
        CB_CHECK_EQ_INT(cb_vindex_add(v, n, x, ids, &e), 0);
        CB_CHECK_EQ_INT(cb_vindex_search(v, nq, q, k, 0, 0, sc, got, &e), 0);
        int same = 1;
        for (int i = 0; i < nq; i++) {
            brute(x, ids, n, dim, q + i * dim, k, l2, want);
            same &= !memcmp(want, got + i * k, sizeof want);
            for (int j = 1; j < k; j++) same &= sc[i * k + j - 1] >= sc[i * k + j];
        }
        CB_CHECK(same);
        cb_vindex_free(v);
    }
    /* Approximate indexes: recall@10 against exact search on the same vectors. */
    const char *facs[2] = {"IVF128,Flat", "HNSW32"};
    for (int f = 0; f < 2; f++) {
        cb_vindex *v = NULL;
        CB_CHECK_EQ_INT(cb_vindex_create(facs[f], dim, CB_VINDEX_IP, &v, &e), 0);
        if (!v) continue;
        CB_CHECK_EQ_INT(cb_vindex_needs_training(v), f == 0);
        CB_CHECK_EQ_INT(cb_vindex_train(v, n, x, &e), 0);
        CB_CHECK_EQ_INT(cb_vindex_add(v, n, x, ids, &e), 0);
        CB_CHECK_EQ_INT(cb_vindex_search(v, nq, q, k, 64, 128, sc, got, &e), 0);
        int found = 0;
        for (int i = 0; i < nq; i++) {
            brute(x, ids, n, dim, q + i * dim, k, 0, want);
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) found += want[a] == got[i * k + b];
        }
        double recall = (double)found / (nq * k);
        printf("# %s recall@10 (nprobe 64 / efSearch 128) on 20000 random vectors: %.3f\n",
               facs[f], recall);
        /* Random 64-d vectors are IVF's worst case (no clusters): half the lists probed. */
        CB_CHECK(recall >= 0.8);
        /* Written and read back: the same answers. */
        char path[600];
        snprintf(path, sizeof path, "%s/ix%d.faiss", cb_test_tmpdir(), f);
        CB_CHECK_EQ_INT(cb_vindex_write(v, path, &e), 0);
        cb_vindex *r = NULL;
        CB_CHECK_EQ_INT(cb_vindex_read(path, &r, &e), 0);
        if (r) {
            int64_t got2[10];
            float sc2[10];
            CB_CHECK_EQ_INT(cb_vindex_search(r, 1, q, k, 64, 128, sc2, got2, &e), 0);
            CB_CHECK(!memcmp(got2, got, sizeof got2));
            CB_CHECK_EQ_INT(cb_vindex_ntotal(r), n);
            CB_CHECK_EQ_INT(cb_vindex_dim(r), dim);
            cb_vindex_free(r);
        }
        cb_vindex_free(v);
    }
    /* Errors are cb_errors, not crashes. */
    cb_vindex *v = NULL;
    CB_CHECK_EQ_INT(cb_vindex_create("NoSuchIndex42", dim, CB_VINDEX_IP, &v, &e), CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "NoSuchIndex42") != NULL);
    CB_CHECK_EQ_INT(cb_vindex_create("Flat", 0, CB_VINDEX_IP, &v, &e), CB_EINVAL);
    const char *junk = cb_test_write(cb_test_tmpdir(), "junk.faiss", "garbage, not an index");
    CB_CHECK_EQ_INT(cb_vindex_read(junk, &v, &e), CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "junk.faiss: not a FAISS index") != NULL);
    CB_CHECK_EQ_INT(cb_vindex_read("/nonexistent.faiss", &v, &e), CB_ECONFIG);
    free(x), free(q), free(ids), free(sc), free(got);
}

/* questions -> embed (random encoder, 384 floats) -> retrieve (random vectors, dim as given). */
static void run_random(int dim, const char *index, int expect_ok) {
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "name: t\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    loadgen: {component: closed, max_queries: 12, config: {concurrency: 4}}\n"
             "    stages:\n"
             "      - {id: 0, name: q, component: rag.questions, outputs: [1],\n"
             "         config: {num_questions: 12}}\n"
             "      - {id: 1, name: embed, component: rag.embed, outputs: [2],\n"
             "         config: {model_dir: random, max_batch: 4}}\n"
             "      - {id: 2, name: retrieve, component: rag.retrieve,\n"
             "         config: {vectors: random, n: 3000, dim: %d, index: %s, k: 7,\n"
             "                  check_recall: true, recall_queries: 64}}\n",
             dim, index);
    run_fixture f;
    if (expect_ok) {
        if (run_fixture_ok(&f, yaml, NULL, NULL) == 0) {
            cb_pipeline_record r = run_fixture_records(&f, 0);
            CB_CHECK_EQ_INT(r.n_queries, 12);
            int recalls = 0, batches = 0;
            for (size_t i = 0; i < r.n_metrics; i++) {
                if (r.metrics[i].stage != 2) continue;
                recalls += r.metrics[i].metric == 2;
                batches += r.metrics[i].metric == 1 && r.metrics[i].value >= 1;
                if (r.metrics[i].metric == 2 && !strcmp(index, "flat"))
                    CB_CHECK(r.metrics[i].value == 1.0);
            }
            CB_CHECK_EQ_INT(recalls, 12);
            CB_CHECK_EQ_INT(batches, 12);
        }
    } else if (run_fixture_yaml(&f, yaml, NULL, NULL) == 0) {
        const char *msg = f.rc != CB_OK ? f.err.msg : f.res.n_errors ? f.res.errors[0] : "";
        CB_CHECK(f.rc != CB_OK || f.res.n_errors > 0);
        CB_CHECK(strstr(msg, "has 384 floats, the index 128") != NULL);
        if (!strstr(msg, "384 floats")) printf("# %s\n", msg);
    }
    run_fixture_fini(&f);
}

static void test_stage_random(void) {
    run_random(384, "flat", 1);
    run_random(384, "hnsw", 1);
    run_random(128, "flat", 0);
}

/* The real encoder: the known answer passage in the top 5 for a clear majority (here all but a
 * few) of the synthetic questions, with a flat index over the corpus embedded at prepare. */
static void test_real_encoder_finds_answers(void) {
    char dir[4096];
    if (cb_rag_find_minilm(dir, sizeof dir) != 0) {
        printf("# all-MiniLM-L6-v2 not installed (scripts/setup.sh): skipped\n");
        return;
    }
    const char *tmp = cb_test_tmpdir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' rag corpus -o '%s' --passages 80 --questions 24 "
             "--mean-words 20 --max-words 40", COLOBENCH, tmp);
    cb_test_sh_ok(cmd);
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: t\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, config: {concurrency: 8}}\n"
             "    stages:\n"
             "      - {id: 0, name: q, component: rag.questions, outputs: [1],\n"
             "         config: {file: %s/questions.jsonl}}\n"
             "      - {id: 1, name: embed, component: rag.embed, outputs: [2],\n"
             "         config: {threads: 2}}\n"
             "      - {id: 2, name: retrieve, component: rag.retrieve,\n"
             "         config: {corpus: %s/corpus.jsonl, k: 5, threads: 2}}\n",
             tmp, tmp);
    run_fixture f;
    if (run_fixture_ok(&f, yaml, NULL, NULL) == 0) {
        cb_pipeline_record r = run_fixture_records(&f, 0);
        int hits = 0, n = 0;
        for (size_t i = 0; i < r.n_metrics; i++)
            if (r.metrics[i].stage == 2 && r.metrics[i].metric == 0)
                n++, hits += r.metrics[i].value == 1.0;
        printf("# known answer passage in the top 5: %d of %d questions\n", hits, n);
        CB_CHECK_EQ_INT(n, 24);
        CB_CHECK(hits >= 21);
    }
    run_fixture_fini(&f);
}

int main(void) {
    CB_RUN(test_shim);
    CB_RUN(test_stage_random);
    CB_RUN(test_real_encoder_finds_answers);
    return cb_test_done();
}
