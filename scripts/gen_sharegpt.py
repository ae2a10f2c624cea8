#!/usr/bin/env python3
"""Writes examples/data/sharegpt_small.json: a small ShareGPT-format chat dataset for
examples/llm_chat_sharegpt.yaml, deterministic (seeded), standard library only.

Format (what llm.prompts' `source: sharegpt` reads, as vLLM's ShareGPT loader does): a JSON array
of {"id": ..., "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...},
...]}. Conversations have 1 to 3 exchanges; prompts and replies vary in length (a few words to a
few hundred), and some carry code, digits, whitespace runs and non-ASCII text, so tokenization
has real work. The text is synthetic (no dataset download): its lengths, not its meaning, drive
a serving benchmark.

    python3 scripts/gen_sharegpt.py [--out examples/data/sharegpt_small.json] [--n 48] [--seed 7]
"""
import argparse
import json
import random

TOPICS = ["GPU scheduling", "CUDA MPS", "a ResNet-50 training run", "tokenizers",
          "KV cache paging", "retrieval-augmented generation", "Poisson arrivals",
          "memory bandwidth", "time to first token", "mixed precision", "data loaders",
          "Kubernetes node pools", "MIG partitions", "prefix caching", "batch scheduling"]
ASKS = ["Explain {t} to a new engineer.", "What are the trade-offs of {t}?",
        "Write a short checklist for {t}.", "How do I measure {t} on a shared machine?",
        "Summarise the main risks of {t} in production.",
        "Compare {t} with the alternative most teams use.",
        "Give me a Python snippet that benchmarks {t}.",
        "¿Puedes explicar {t} en pocas palabras?", "用三句话解释 {t}。"]
WORDS = ("the a throughput latency request queue batch model kernel memory tokens step engine "
         "server client cache block prefill decode percentile tail slo goodput stream copy "
         "device host thread core warmup window replica collocation interference fairness "
         "measure report compare baseline ratio bound roofline bandwidth").split()
CODE = ("```python\nimport time\nt0 = time.perf_counter()\nfor _ in range({n}):\n"
        "    model(x)\nprint((time.perf_counter() - t0) / {n})\n```")


def sentence(rng, lo, hi):
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", "?", "!"])


def reply(rng):
    parts = []
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        parts.append(" ".join(sentence(rng, 6, 18) for _ in range(rng.randint(1, 3))))
    if rng.random() < 0.2:
        parts.append(CODE.format(n=rng.choice([10, 100, 1000])))
    if rng.random() < 0.15:
        parts.append("  - p50: %d ms\n  - p99: %d ms" % (rng.randint(5, 90), rng.randint(100, 900)))
    return "\n\n".join(parts)


def prompt(rng):
    p = rng.choice(ASKS).format(t=rng.choice(TOPICS))
    if rng.random() < 0.4:
        p += " " + " ".join(sentence(rng, 5, 20) for _ in range(rng.randint(1, 6)))
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="examples/data/sharegpt_small.json")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    data = []
    for i in range(a.n):
        conv = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            conv.append({"from": "human", "value": prompt(rng)})
            conv.append({"from": "gpt", "value": reply(rng)})
        data.append({"id": "chat-%04d" % i, "conversations": conv})
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
