#!/usr/bin/env python3
"""rag_vs_chroma.py - vector search time: ChromaDB against faiss-cpu (flat and HNSW) on the same
random unit vectors and k, per query, for batches of 1 and of `batch` queries.

Needs .venv-bench (chromadb, faiss-cpu, numpy). Usage:
  .venv-bench/bin/python bench/rag_vs_chroma.py [--n 20000] [--dim 384] [--k 10]
      [--queries 256] [--batch 64] [--threads 2]
Prints one line per engine and batch: microseconds per query and recall@k against exact flat.
Compare with build/bench_rag_retrieve (the shim directly and the rag.retrieve stage, same n/dim/k).
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import faiss
    import chromadb

    faiss.omp_set_num_threads(a.threads)
    rng = np.random.default_rng(42)
    x = rng.standard_normal((a.n, a.dim)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, a.n, a.queries)] + 0.1 * rng.standard_normal((a.queries, a.dim)).astype("float32")
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    flat = faiss.IndexFlatIP(a.dim)
    flat.add(x)
    _, exact = flat.search(q, a.k)

    def timed(name, fn):
        for bs in (1, a.batch):
            got = []
            t0 = time.perf_counter()
            for i in range(0, a.queries - bs + 1, bs):
                got.append(fn(q[i:i + bs], bs))
            dt = time.perf_counter() - t0
            got = np.concatenate(got)
            rec = np.mean([len(set(got[i]) & set(exact[i])) / a.k for i in range(len(got))])
            print(f"{name:14s} n={a.n} dim={a.dim} k={a.k} batch={bs:3d}: "
                  f"{dt / len(got) * 1e6:9.1f} us/query  recall@{a.k} {rec:.3f}")

    timed("faiss flat", lambda b, bs: flat.search(b, a.k)[1])
    hnsw = faiss.IndexHNSWFlat(a.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(x)
    hnsw.hnsw.efSearch = 64
    timed("faiss hnsw32", lambda b, bs: hnsw.search(b, a.k)[1])

    client = chromadb.EphemeralClient()
    col = client.create_collection("bench", metadata={"hnsw:space": "ip"})
    for i in range(0, a.n, 5000):
        col.add(ids=[str(j) for j in range(i, min(a.n, i + 5000))],
                embeddings=x[i:i + 5000].tolist())

    def chroma(b, bs):
        r = col.query(query_embeddings=b.tolist(), n_results=a.k)
        return np.array([[int(s) for s in row] for row in r["ids"]])

    timed("chromadb", chroma)


if __name__ == "__main__":
    main()
