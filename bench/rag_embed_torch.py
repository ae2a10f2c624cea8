#!/usr/bin/env python3
"""The baseline of bench/bench_rag_embed.c: sentence-transformers encoding the same passages
(JSON Lines from `bench_rag_embed --texts-out FILE`) with the same model and batch size, on
current PyTorch (.venv-bench), the best of several rounds after a warm-up.

  .venv-bench/bin/python bench/rag_embed_torch.py MODEL_DIR TEXTS [--batch 32] [--threads 2]
                                                  [--rounds 3]
"""
import argparse
import json
import time

import torch
from sentence_transformers import SentenceTransformer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("texts")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    texts = [json.loads(line) for line in open(a.texts, encoding="utf-8")]
    m = SentenceTransformer(a.model_dir, device="cpu")
    m.encode(texts[: a.batch], batch_size=a.batch)  # warm-up
    best = 1e30
    with torch.inference_mode():
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            m.encode(texts, batch_size=a.batch)
            best = min(best, time.perf_counter() - t0)
    tokens = sum(len(m.tokenizer(t, truncation=True, max_length=m.max_seq_length)["input_ids"])
                 for t in texts)
    print("sentence-transformers %s (torch %s, %d threads, batch %d): %d passages, %d tokens: "
          "best %.3f s = %.1f passages/s, %.0f tokens/s" % (
              __import__("sentence_transformers").__version__, torch.__version__, a.threads,
              a.batch, len(texts), tokens, best, len(texts) / best, tokens / best))


if __name__ == "__main__":
    main()
