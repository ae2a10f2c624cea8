#!/usr/bin/env python3
"""Reference logits for tests/test_llm_forward.c from Hugging Face `transformers` (PyPI), the
implementation users trust: for each family (llama, qwen2, qwen3) a tiny model with seeded random
weights is built from a config, saved with save_pretrained (config.json and an f32
model.safetensors, exactly what transformers writes), and run three times (the weights in
float64, float32 and bfloat16) on a seeded prompt: the logits after prefill, then 64 greedy
decode steps over transformers' own KV cache (DynamicCache), each step's token and the logits it
produced. The layout of ref.bin is in tests/data/llm/README.md.

Usage: .venv-bench/bin/python tests/llm_forward_ref.py [OUT_DIR]   (default tests/data/llm)
Deterministic: the same torch and transformers versions write the same bytes (seed below).
"""
import inspect
import os
import struct
import sys

import numpy as np
import torch
import transformers

SEED = 15
N_PROMPT = 37
N_STEPS = 64
MAGIC = b"CBLMREF1"
VERSION = 1
RUNS = (("f64", torch.float64), ("f32", torch.float32), ("bf16", torch.bfloat16))

# Shapes with tails for 8-wide (AVX2) and 16/32-wide kernels: hidden 48 and 40, head_dim 12, 10
# and 14, intermediate 84/92/76, vocab 130; GQA (4 query heads over 2 KV heads). Prompt plus
# decode is 101 positions: several KV blocks at any block size up to 64.
FAMILIES = {
    "llama": dict(
        cls="LlamaForCausalLM", conf="LlamaConfig",
        kw=dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=84, vocab_size=130, num_hidden_layers=2,
                max_position_embeddings=256, rope_theta=2000.0, tie_word_embeddings=False,
                attention_bias=False, bos_token_id=1, eos_token_id=2,
                # theta 2000, head_dim 12: the 6 frequencies fall in all three bands of the
                # llama3 scaling (wavelength below 32/4, between, and above 32).
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 32})),
    "qwen2": dict(
        cls="Qwen2ForCausalLM", conf="Qwen2Config",
        kw=dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=92, vocab_size=130, num_hidden_layers=2,
                max_position_embeddings=256, rope_theta=50000.0, tie_word_embeddings=True,
                bos_token_id=1, eos_token_id=2, use_sliding_window=False)),
    "qwen3": dict(
        cls="Qwen3ForCausalLM", conf="Qwen3Config",
        kw=dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2, head_dim=14,
                intermediate_size=76, vocab_size=130, num_hidden_layers=2,
                max_position_embeddings=256, rope_theta=300000.0, tie_word_embeddings=False,
                attention_bias=False, bos_token_id=1, eos_token_id=2,
                use_sliding_window=False)),
}


def init_weights(model, gen):
    """Seeded weights scaled so activations stay O(1), the logits O(1..10) and greedy decoding
    varied: projections normal(0, 1/sqrt(fan_in)), q_proj and k_proj twice that (sharper
    attention, so the context matters), o_proj and down_proj three times (the layers outweigh the
    residual embedding: with a tied head a small model otherwise repeats its input token), the
    embedding normal(0, 1), the output head normal(0, 3/sqrt(hidden)) (tied: the embedding at that
    scale), norm weights 1 + normal(0, 0.1), biases normal(0, 0.3). transformers' own init (std
    0.02, biases 0, norms 1) would leave biases and norms untested and the logits near zero."""
    hidden = model.config.hidden_size
    tied = model.config.tie_word_embeddings
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name.endswith("embed_tokens.weight"):
            v = z * (3.0 / hidden ** 0.5 if tied else 1.0)
        elif name == "lm_head.weight":
            v = z * (3.0 / hidden ** 0.5)
        elif name.endswith("norm.weight"):
            v = 1.0 + 0.1 * z
        elif name.endswith(".bias"):
            v = 0.3 * z
        else:
            gain = 1.0
            if ".q_proj." in name or ".k_proj." in name:
                gain = 2.0
            elif ".o_proj." in name or ".down_proj." in name:
                gain = 3.0
            v = z * (gain / shape[1] ** 0.5)
        with torch.no_grad():
            p.copy_(v.to(p.dtype))


def varied(tokens):
    """Greedy output worth testing: at least 12 distinct ids, no id repeated more than 16 times
    in a row."""
    run = best = 1
    for a, b in zip(tokens, tokens[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return len(set(tokens)) >= 12 and best <= 16


def step(model, ids, cache):
    """One forward call over transformers' cache; the last position's logits in float64."""
    # transformers 5.2x names the argument `cache`; earlier releases `past_key_values`.
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=True, **{key: cache})
    return out.logits[0, -1].double().numpy()


def run(model, prompt):
    """Prefill and N_STEPS greedy steps; returns (prefill logits, [(token, logits)])."""
    with torch.inference_mode():
        cache = transformers.DynamicCache(config=model.config)
        last = prefill = step(model, prompt, cache)
        steps = []
        for _ in range(N_STEPS):
            tok = int(np.argmax(last))  # ties: the lowest id
            last = step(model, [tok], cache)
            steps.append((tok, last))
        return prefill, steps


def build(fam, spec):
    """The family's model in float32 and its prompt: the first seed from SEED * 1000 + the
    family's index on whose float32 greedy output varied() holds (the search is deterministic)."""
    conf = getattr(transformers, spec["conf"])(**spec["kw"])
    for attempt in range(50):
        seed = SEED * 1000 + 100 * sorted(FAMILIES).index(fam) + attempt
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = getattr(transformers, spec["cls"])(conf).to(torch.float32)
        init_weights(model, gen)
        model.eval()
        prompt = torch.randint(0, conf.vocab_size, (N_PROMPT,), generator=gen).tolist()
        if varied([t for t, _ in run(model, prompt)[1]]):
            return model, prompt, seed
    raise SystemExit(f"{fam}: no seed of 50 gives a varied greedy decode")


def write_family(out_dir, fam, spec):
    model, prompt, seed = build(fam, spec)
    conf = model.config
    fdir = os.path.join(out_dir, fam)
    os.makedirs(fdir, exist_ok=True)
    model.save_pretrained(fdir, safe_serialization=True)
    vocab = conf.vocab_size
    blob = bytearray()
    blob += MAGIC + struct.pack("<6I", VERSION, N_PROMPT, N_STEPS, vocab, len(RUNS), 0)
    blob += struct.pack(f"<{N_PROMPT}i", *prompt)
    results = {}
    for rname, dtype in RUNS:
        # The saved f32 weights, converted: the f64 and bf16 runs see what a user loading
        # model.safetensors with dtype=... gets.
        m = getattr(transformers, spec["cls"]).from_pretrained(fdir, dtype=dtype)
        m.eval()
        prefill, steps = run(m, prompt)
        results[rname] = (prefill, steps)
        blob += prefill.astype("<f4").tobytes()
        for tok, lg in steps:
            blob += struct.pack("<i", tok) + lg.astype("<f4").tobytes()
    expect = 32 + 4 * N_PROMPT + len(RUNS) * 4 * (vocab + N_STEPS * (1 + vocab))
    assert len(blob) == expect, (len(blob), expect)
    with open(os.path.join(fdir, "ref.bin"), "wb") as f:
        f.write(blob)
    return seed, results


def summary(fam, seed, results):
    ref_p, ref_s = results["f64"]
    toks64 = [t for t, _ in ref_s]
    distinct = len(set(toks64))
    assert varied(toks64), f"{fam}: the float64 greedy decode is not varied: {toks64}"
    lines = [f"{fam} (seed {seed}): f64 logits in [{ref_p.min():.2f}, {ref_p.max():.2f}], "
             f"{distinct} distinct tokens of 64"]
    for r in ("f32", "bf16"):
        p, s = results[r]
        toks = [t for t, _ in s]
        agree = next((i for i, (a, b) in enumerate(zip(toks, toks64)) if a != b), len(toks))
        diff = max(np.abs(p - ref_p).max(),
                   max(np.abs(a[1] - b[1]).max() for a, b in zip(s[:agree], ref_s[:agree]))
                   if agree else 0.0)
        lines.append(f"  {r}: tokens equal to f64's for {agree} of 64 steps; max |logit - f64| "
                     f"over those steps {diff:.3g}")
    return "\n".join(lines)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "data", "llm")
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for fam, spec in FAMILIES.items():
        seed, results = write_family(out_dir, fam, spec)
        print(summary(fam, seed, results))


if __name__ == "__main__":
    main()
