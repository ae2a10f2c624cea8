/* bench/bench_rag_retrieve.c - what rag.retrieve costs on top of FAISS: the same index, the same
 * query vectors, the same batches, searched (a) directly through rag/vindex.h in a loop and
 * (b) through a pipeline (rag.embed with random weights is too slow to be the source here, so a
 * bench stage makes items that already carry the query vector) -> rag.retrieve, offline, the
 * batches formed by the waiting queries. Reports queries/s of both and the overhead ratio; the
 * issue asks at most 5%.
 *
 *   build/bench_rag_retrieve [--n 100000] [--dim 384] [--k 10] [--batch 64] [--queries 20000]
 *                            [--index flat|hnsw|ivf] [--threads 1]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cfgtree.h"
#include "core/registry.h"
#include "core/rng.h"
#include "core/runtime.h"
#include "core/spec.h"
#include "rag/item.h"
#include "rag/vindex.h"
#include "record/recorder.h"
#include "stages/builtin.h"
#include "stages/util/util.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int g_dim;

/* bench.vec: an item with query vector number (query id mod 1024) of the same generator. */
static int vec_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    const cb_host *h = *(const cb_host **)state;
    (void)ctx;
    float v[4096];
    cb_rng r;
    cb_rng_seed(&r, 1000 + q->id % 1024);
    double s = 0;
    for (int d = 0; d < g_dim; d++) {
        v[d] = (float)cb_rng_normal(&r);
        s += (double)v[d] * v[d];
    }
    for (int d = 0; d < g_dim; d++) v[d] /= (float)sqrt(s);
    cb_rag_view it = {.index = (int64_t)q->id, .answer_id = -1, .emb = v, .dim = (uint32_t)g_dim,
                      .question = "q", .question_bytes = 1};
    cb_buffer *b = cb_rag_item_build(h, &it);
    if (!b) return cb_util_error(err, CB_ENOMEM, "oom");
    h->buffer_unref(q->payload);
    q->payload = b;
    return CB_OK;
}
static int vec_create(void *state, const cb_stage_args *args, cb_error *err) {
    (void)err;
    *(const cb_host **)state = args->host;
    return CB_OK;
}
static const cb_stage_ops k_vec = {.abi_major = CB_STAGE_ABI_MAJOR,
                                   .struct_size = sizeof(cb_stage_ops),
                                   .name = "bench.vec",
                                   .summary = "query vectors",
                                   .state_size = sizeof(void *),
                                   .create = vec_create,
                                   .run = vec_run};

int main(int argc, char **argv) {
    long n = 100000, queries = 20000;
    int dim = 384, k = 10, batch = 64, threads = 1;
    const char *index = "flat";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--dim")) dim = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--k")) k = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--batch")) batch = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--queries")) queries = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--index")) index = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = (int)strtol(argv[i + 1], NULL, 10);
    }
    g_dim = dim;
    /* (a) direct: the stage's own index-building code path is not shared, so build the same
     * index here with the same vectors (rag.retrieve's `vectors: random`, seed 1). */
    cb_error e;
    cb_error_clear(&e);
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)n);
    cb_rng r;
    cb_rng_seed(&r, 1);
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int d = 0; d < dim; d++) {
            x[i * dim + d] = (float)cb_rng_normal(&r);
            s += (double)x[i * dim + d] * x[i * dim + d];
        }
        for (int d = 0; d < dim; d++) x[i * dim + d] *= (float)(1.0 / sqrt(s));
        ids[i] = i;
    }
    char fac[64];
    snprintf(fac, sizeof fac, "%s", !strcmp(index, "hnsw") ? "HNSW32"
                                    : !strcmp(index, "ivf") ? "IVF1024,Flat" : "Flat");
    cb_vindex *v = NULL;
    cb_vindex_threads(threads);
    if (cb_vindex_create(fac, dim, CB_VINDEX_IP, &v, &e) || cb_vindex_train(v, n, x, &e) ||
        cb_vindex_add(v, n, x, ids, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    float *qs = malloc(sizeof(float) * 1024 * (size_t)dim);
    for (int i = 0; i < 1024; i++) {
        cb_rng_seed(&r, 1000 + (uint64_t)i);
        double s = 0;
        for (int d = 0; d < dim; d++) {
            qs[i * dim + d] = (float)cb_rng_normal(&r);
            s += (double)qs[i * dim + d] * qs[i * dim + d];
        }
        for (int d = 0; d < dim; d++) qs[i * dim + d] /= (float)sqrt(s);
    }
    float *sc = malloc(sizeof(float) * (size_t)batch * (size_t)k);
    int64_t *got = malloc(sizeof(int64_t) * (size_t)batch * (size_t)k);
    double t0 = now_s();
    for (long q = 0; q < queries; q += batch) {
        int nb = (int)(queries - q < batch ? queries - q : batch);
        int at = (int)(q % 1024);
        if (at + nb > 1024) at = 0;
        cb_vindex_search(v, nb, qs + (size_t)at * dim, k, 8, 64, sc, got, &e);
    }
    double direct = now_s() - t0;
    /* (b) the pipeline: offline load (everything queued), rag.retrieve batching what waits. */
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "name: b\n"
             "pipelines:\n"
             "  - name: p\n"
             "    inputs: [0]\n"
             "    loadgen: {component: offline, max_queries: %ld, queue_depth: %d}\n"
             "    stages:\n"
             "      - {id: 0, name: vec, component: bench.vec, outputs: [1]}\n"
             "      - {id: 1, name: retrieve, component: rag.retrieve,\n"
             "         config: {vectors: random, n: %ld, dim: %d, index: %s, k: %d,\n"
             "                  max_batch: %d, threads: %d, recall_queries: 0, nlist: 1024}}\n",
             queries, batch * 2, n, dim, index, k, batch, threads);
    cb_registry *reg = NULL;
    cb_doc *doc = NULL;
    cb_spec *spec = NULL;
    char dir[] = "/tmp/cb-bench-retrieve-XXXXXX", path[64];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/bench.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs(yaml, f);
    fclose(f);
    if (cb_builtin_registry(&reg, &e) || cb_registry_add(reg, &k_vec, "bench", &e) ||
        cb_spec_load(path, NULL, 0, reg, &doc, &spec, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    cb_recorder_opts ro = CB_RECORDER_OPTS_DEFAULT;
    ro.spec = spec;
    ro.out_dir = dir;
    cb_recorder *rec = NULL;
    cb_runtime_opts o = CB_RUNTIME_OPTS_DEFAULT;
    o.spec = spec;
    cb_run_result res;
    memset(&res, 0, sizeof res);
    if (cb_recorder_create(&ro, &rec, &e) || cb_run(&o, cb_recorder_sink(rec), &res, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    cb_recorder_stop(rec, &e);
    cb_recorder_destroy(rec);
    double pipe = (double)(res.end_ns - res.t0_ns) / 1e9;
    printf("rag.retrieve vs FAISS directly (%s, %ld vectors of %d, k %d, batches of %d, %d "
           "threads), %ld queries:\n  direct %.3f s (%.0f queries/s); pipeline %.3f s (%.0f "
           "queries/s); overhead %.1f%%\n", fac, n, dim, k, batch, threads, queries, direct,
           queries / direct, pipe, queries / pipe, 100.0 * (pipe / direct - 1));
    cb_run_result_fini(&res);
    cb_spec_destroy(spec);
    cb_doc_destroy(doc);
    cb_registry_destroy(reg);
    cb_vindex_free(v);
    free(x), free(ids), free(qs), free(sc), free(got);
    return 0;
}
