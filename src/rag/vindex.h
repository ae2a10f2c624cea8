/* rag/vindex.h - a vector index for rag.retrieve: FAISS (flat, IVF, HNSW, or any index_factory
 * string) behind a C interface.
 *
 * Debian 12's libfaiss-dev ships FAISS's C API headers but not its implementation (the library
 * holds the C++ classes only), so this interface is colobench's own, implemented in C++ in
 * src/rag/faiss_shim.cpp: every call catches FAISS's exceptions and turns them into a cb_error.
 * Ids are the passages' ids (an IDMap wraps indexes that have no ids of their own). Scores:
 * inner product for CB_VINDEX_IP, minus the squared L2 distance for CB_VINDEX_L2, so higher is
 * better for both; missing results (fewer than k vectors) have id -1.
 *
 * Threads: searches use OpenMP threads (cb_vindex_threads sets the calling thread's count). An
 * index is not safe for concurrent use (ef_search is set on it per call): one per stage instance.
 */
#ifndef CB_RAG_VINDEX_H
#define CB_RAG_VINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cb_vindex cb_vindex;

enum { CB_VINDEX_IP = 0, CB_VINDEX_L2 = 1 };

#define CB_VINDEX_MAX_DIM 65536
#define CB_VINDEX_MAX_K 4096

/* factory: a FAISS index_factory string ("Flat", "IVF256,Flat", "HNSW32", "IVF1024,PQ16", ...).
 * CB_ECONFIG naming the string when FAISS refuses it. */
int cb_vindex_create(const char *factory, int dim, int metric, cb_vindex **out, cb_error *err);
/* Trains on n vectors when the index needs training (IVF's centroids); a no-op otherwise. */
int cb_vindex_train(cb_vindex *v, int64_t n, const float *x, cb_error *err);
int cb_vindex_add(cb_vindex *v, int64_t n, const float *x, const int64_t *ids, cb_error *err);
/* n queries of dim floats; k results each into scores[n * k] and ids[n * k]. nprobe (IVF) and
 * ef_search (HNSW) apply to this call when > 0. */
int cb_vindex_search(cb_vindex *v, int64_t n, const float *x, int k, int nprobe, int ef_search,
                     float *scores, int64_t *ids, cb_error *err);
int cb_vindex_write(const cb_vindex *v, const char *path, cb_error *err);
int cb_vindex_read(const char *path, cb_vindex **out, cb_error *err);
void cb_vindex_free(cb_vindex *v); /* NULL is a no-op */

int cb_vindex_dim(const cb_vindex *v);
int cb_vindex_metric(const cb_vindex *v);
int64_t cb_vindex_ntotal(const cb_vindex *v);
int cb_vindex_needs_training(const cb_vindex *v);
/* The description FAISS gives (its type), for logs. */
const char *cb_vindex_describe(const cb_vindex *v);
/* OpenMP threads of the calling thread's FAISS calls. */
void cb_vindex_threads(int n);

#ifdef __cplusplus
}
#endif
#endif
