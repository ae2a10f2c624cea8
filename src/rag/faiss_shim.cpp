// rag/faiss_shim.cpp - the C interface of rag/vindex.h over FAISS's C++ classes (Debian's
// libfaiss has no C API library). Every entry point catches exceptions: FAISS reports bad
// arguments with faiss::FaissException, allocation failures with std::bad_alloc.
#include "rag/vindex.h"

#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>

struct cb_vindex {
    std::unique_ptr<faiss::Index> index;
    int metric = CB_VINDEX_IP;
    std::string desc;
};

namespace {

int fail(cb_error *err, int code, const char *what, const char *msg) {
    return cb_error_set(err, code, "%s: %s", what, msg);
}

// The HNSW index inside v (under an IDMap), or null.
faiss::IndexHNSW *hnsw_of(faiss::Index *ix) {
    if (auto *m = dynamic_cast<faiss::IndexIDMap *>(ix)) ix = m->index;
    return dynamic_cast<faiss::IndexHNSW *>(ix);
}

faiss::IndexIVF *ivf_of(faiss::Index *ix) {
    if (auto *m = dynamic_cast<faiss::IndexIDMap *>(ix)) ix = m->index;
    return dynamic_cast<faiss::IndexIVF *>(ix);
}

void describe(cb_vindex *v) {
    faiss::Index *ix = v->index.get();
    std::string s = dynamic_cast<faiss::IndexIDMap *>(ix) ? "IDMap," : "";
    if (faiss::IndexIVF *ivf = ivf_of(ix))
        s += "IVF" + std::to_string(ivf->nlist);
    else if (faiss::IndexHNSW *h = hnsw_of(ix))
        s += "HNSW" + std::to_string(h->hnsw.nb_neighbors(1));
    else
        s += "Flat";
    s += v->metric == CB_VINDEX_IP ? " (inner product" : " (L2";
    s += ", dim " + std::to_string(ix->d) + ", " + std::to_string(ix->ntotal) + " vectors)";
    v->desc = s;
}

} // namespace

extern "C" int cb_vindex_create(const char *factory, int dim, int metric, cb_vindex **out,
                                cb_error *err) {
    *out = nullptr;
    if (dim < 1 || dim > CB_VINDEX_MAX_DIM)
        return cb_error_set(err, CB_EINVAL, "dim %d: must be in [1, %d]", dim, CB_VINDEX_MAX_DIM);
    try {
        auto v = std::make_unique<cb_vindex>();
        v->metric = metric;
        faiss::MetricType mt =
            metric == CB_VINDEX_IP ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2;
        std::unique_ptr<faiss::Index> ix(faiss::index_factory(dim, factory, mt));
        // Indexes without ids of their own (flat, HNSW) get an IDMap: the ids are passage ids.
        if (!ivf_of(ix.get()) && !dynamic_cast<faiss::IndexIDMap *>(ix.get())) {
            auto *m = new faiss::IndexIDMap(ix.get());
            m->own_fields = true;
            ix.release();
            ix.reset(m);
        }
        v->index = std::move(ix);
        describe(v.get());
        *out = v.release();
        return CB_OK;
    } catch (const faiss::FaissException &e) {
        return cb_error_set(err, CB_ECONFIG, "index \"%s\": FAISS refuses it: %s", factory,
                            e.msg.c_str());
    } catch (const std::bad_alloc &) {
        return cb_error_set(err, CB_ENOMEM, "index \"%s\": out of memory", factory);
    } catch (const std::exception &e) {
        return fail(err, CB_ECONFIG, factory, e.what());
    }
}

extern "C" int cb_vindex_train(cb_vindex *v, int64_t n, const float *x, cb_error *err) {
    try {
        if (!v->index->is_trained) v->index->train(n, x);
        return CB_OK;
    } catch (const faiss::FaissException &e) {
        return fail(err, CB_EINVAL, "training the index", e.msg.c_str());
    } catch (const std::bad_alloc &) {
        return cb_error_set(err, CB_ENOMEM, "training the index: out of memory");
    } catch (const std::exception &e) {
        return fail(err, CB_EINVAL, "training the index", e.what());
    }
}

extern "C" int cb_vindex_add(cb_vindex *v, int64_t n, const float *x, const int64_t *ids,
                             cb_error *err) {
    try {
        static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "ids are 64-bit");
        v->index->add_with_ids(n, x, reinterpret_cast<const faiss::Index::idx_t *>(ids));
        describe(v);
        return CB_OK;
    } catch (const faiss::FaissException &e) {
        return fail(err, CB_EINVAL, "adding to the index", e.msg.c_str());
    } catch (const std::bad_alloc &) {
        return cb_error_set(err, CB_ENOMEM, "adding to the index: out of memory");
    } catch (const std::exception &e) {
        return fail(err, CB_EINVAL, "adding to the index", e.what());
    }
}

extern "C" int cb_vindex_search(cb_vindex *v, int64_t n, const float *x, int k, int nprobe,
                                int ef_search, float *scores, int64_t *ids, cb_error *err) {
    if (k < 1 || k > CB_VINDEX_MAX_K)
        return cb_error_set(err, CB_EINVAL, "k %d: must be in [1, %d]", k, CB_VINDEX_MAX_K);
    try {
        faiss::Index *ix = v->index.get();
        // The per-call settings go on the index itself (one index per stage instance): FAISS
        // 1.7.3's IndexIDMap refuses SearchParameters.
        if (faiss::IndexIVF *ivf = ivf_of(ix))
            if (nprobe > 0) ivf->nprobe = (size_t)nprobe;
        if (faiss::IndexHNSW *h = hnsw_of(ix))
            if (ef_search > 0) h->hnsw.efSearch = ef_search;
        ix->search(n, x, k, scores, reinterpret_cast<faiss::Index::idx_t *>(ids));
        if (v->metric == CB_VINDEX_L2)
            for (int64_t i = 0; i < n * k; i++) scores[i] = -scores[i];
        return CB_OK;
    } catch (const faiss::FaissException &e) {
        return fail(err, CB_EINVAL, "searching the index", e.msg.c_str());
    } catch (const std::bad_alloc &) {
        return cb_error_set(err, CB_ENOMEM, "searching the index: out of memory");
    } catch (const std::exception &e) {
        return fail(err, CB_EINVAL, "searching the index", e.what());
    }
}

extern "C" int cb_vindex_write(const cb_vindex *v, const char *path, cb_error *err) {
    try {
        faiss::write_index(v->index.get(), path);
        return CB_OK;
    } catch (const std::exception &e) {
        return cb_error_set(err, CB_EIO, "%s: cannot write the index: %s", path, e.what());
    }
}

extern "C" int cb_vindex_read(const char *path, cb_vindex **out, cb_error *err) {
    *out = nullptr;
    try {
        auto v = std::make_unique<cb_vindex>();
        v->index.reset(faiss::read_index(path));
        v->metric = v->index->metric_type == faiss::METRIC_INNER_PRODUCT ? CB_VINDEX_IP
                                                                          : CB_VINDEX_L2;
        describe(v.get());
        *out = v.release();
        return CB_OK;
    } catch (const faiss::FaissException &e) {
        return cb_error_set(err, CB_ECONFIG, "%s: not a FAISS index (%s)", path, e.msg.c_str());
    } catch (const std::bad_alloc &) {
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory reading the index", path);
    } catch (const std::exception &e) {
        return cb_error_set(err, CB_ECONFIG, "%s: not a FAISS index (%s)", path, e.what());
    }
}

extern "C" void cb_vindex_free(cb_vindex *v) { delete v; }
extern "C" int cb_vindex_dim(const cb_vindex *v) { return (int)v->index->d; }
extern "C" int cb_vindex_metric(const cb_vindex *v) { return v->metric; }
extern "C" int64_t cb_vindex_ntotal(const cb_vindex *v) { return (int64_t)v->index->ntotal; }
extern "C" int cb_vindex_needs_training(const cb_vindex *v) { return !v->index->is_trained; }
extern "C" const char *cb_vindex_describe(const cb_vindex *v) { return v->desc.c_str(); }
extern "C" void cb_vindex_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }
