#!/usr/bin/env python3
"""bench/llm_vs_torch.py - the PyTorch side of bench/llm_vs_torch.sh: Hugging Face
`transformers`' implementation of the same architecture and shapes as bench/bench_llm.c
(a colobench preset, random weights), decode and prefill tokens/s on the CPU, at its best.

At its best means: torch.set_num_threads(--threads) (the thread count colobench gets),
torch.inference_mode, the weights in the measured precision (float32, or bfloat16: the model
cast with .to(torch.bfloat16), as users run it), logits of the last position only in prefill
(logits_to_keep=1, as generate() does), and every cache variant tried, the best kept per figure:
  eager    DynamicCache (transformers' default);
  static   StaticCache sized to the run (max_cache_len = prompt + steps), cache_position given;
  compile  (--compile) StaticCache with the model's forward under torch.compile (Inductor,
           dynamic=False), for the decode steps (prefill stays eager, as transformers advises);
           compilation happens in the warm-up steps and is not timed.
The `how` note of each row names the variant that won and lists the others.

Figures, as bench_llm prints them ("precision metric value unit note"):
  prefill      tokens/s of one forward call over a --prompt-token prompt on a fresh cache, the
               median of 3 (the first variant of a model prefills another prompt first,
               untimed);
  decode_b1    1 / median time of a greedy decode step (one token, argmax fed back), --steps
               steps after --warmup, after the prompt;
  decode_bN    N sequences decoding together: N / median time of --batch-steps steps (after
               --warmup). Like bench_llm, the N sequences share the prompt's context (its cache
               copied and repeated N times along the batch: DynamicCache.batch_repeat_interleave,
               or the StaticCache tensors repeated likewise), context floor(prompt / 16) * 16
               (bench_llm's shared full KV blocks of 16 tokens).

Usage: .venv-bench/bin/python bench/llm_vs_torch.py [--model qwen2.5-0.5b|CONFIG_DIR]
           [--precision f32,bf16] [--threads N] [--prompt 128] [--steps 16] [--batch-steps 6]
           [--warmup 2] [--batch 8,32] [--block 16] [--modes eager,static] [--compile] [--json]
Presets: the shapes of src/llm/lm_config.c's presets (each cites its published config.json).
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import transformers

# Published shapes, as in src/llm/lm_config.c (same numbers, transformers' field names).
PRESETS = {
    "qwen2.5-0.5b": ("Qwen2ForCausalLM", "Qwen2Config", dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True)),
    "llama-3.2-1b": ("LlamaForCausalLM", "LlamaConfig", dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, intermediate_size=8192, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=5e5, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
    "tinyllama-1.1b": ("LlamaForCausalLM", "LlamaConfig", dict(
        hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
        intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048,
        rms_norm_eps=1e-5, rope_theta=1e4, tie_word_embeddings=False)),
    "qwen3-0.6b": ("Qwen3ForCausalLM", "Qwen3Config", dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, vocab_size=151936, max_position_embeddings=40960,
        rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True)),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def build(model, dtype):
    if model in PRESETS:
        cls, conf_cls, kw = PRESETS[model]
        conf = getattr(transformers, conf_cls)(**kw)
    else:
        conf = transformers.AutoConfig.from_pretrained(model)
        cls = conf.architectures[0]
    torch.manual_seed(1)
    m = getattr(transformers, cls)(conf)  # transformers' own init: normal(0, 0.02)
    if conf.tie_word_embeddings:
        m.tie_weights()  # one matrix for embedding and head, as from_pretrained leaves it
    return m.to(dtype).eval()


def call(fwd, ids, cache, pos0, last_only=True):
    """One forward call of ids [batch, n] at positions pos0..; the last position's logits."""
    n = ids.shape[1]
    out = fwd(input_ids=ids, cache=cache, use_cache=True,
              cache_position=torch.arange(pos0, pos0 + n), logits_to_keep=1 if last_only else 0)
    return out.logits[:, -1]


def new_cache(model, mode, max_len):
    if mode == "eager":
        return transformers.DynamicCache(config=model.config)
    return transformers.StaticCache(config=model.config, max_cache_len=max_len)


def repeat_cache(cache, b):
    """The cache of one sequence made that of b identical sequences."""
    if isinstance(cache, transformers.StaticCache):
        for layer in cache.layers:
            layer.keys = layer.keys.repeat_interleave(b, 0)
            layer.values = layer.values.repeat_interleave(b, 0)
            layer.batch_size = b
            if hasattr(torch, "_dynamo"):
                torch._dynamo.mark_static_address(layer.keys)
                torch._dynamo.mark_static_address(layer.values)
    else:
        cache.batch_repeat_interleave(b)


def decode(fwd, cache, first, pos0, n_warm, n_steps):
    """Greedy steps of first [batch, 1]; the median step time in seconds."""
    tok, times = first, []
    for s in range(n_warm + n_steps):
        t0 = time.perf_counter()
        logits = call(fwd, tok, cache, pos0 + s)
        tok = logits.argmax(-1, keepdim=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[n_warm:])


PREFILL_REPS = 3


def measure(model, mode, a, prompts, gen, cold):
    """{metric: tokens/s} of one cache variant. cold: prefill once untimed first (the first
    variant of a model: first touches and kernel selection are not the figure)."""
    vocab = model.config.vocab_size
    n_dec, n_bdec = a.warmup + a.steps, a.warmup + a.batch_steps
    prefix = a.prompt // a.block * a.block
    fwd = model.forward
    if mode == "compile":
        fwd = torch.compile(model.forward, dynamic=False, fullgraph=False)
    res = {}
    with torch.inference_mode():
        if cold:
            call(model.forward, prompts[0:1], new_cache(model, mode, a.prompt + n_dec), 0)
        ptimes = []
        for _ in range(PREFILL_REPS):  # the median of a few fresh prefills (bench_llm's rule)
            cache = new_cache(model, mode, a.prompt + max(n_dec, n_bdec))
            t0 = time.perf_counter()
            logits = call(model.forward, prompts[1:2], cache, 0)
            ptimes.append(time.perf_counter() - t0)
        res["prefill"] = a.prompt / statistics.median(ptimes)
        for b in a.batch:
            if b == 1:
                continue
            if prefix == a.prompt:  # the prompt's cache, copied (no second prefill)
                bcache = copy.deepcopy(cache)
            else:
                bcache = new_cache(model, mode, prefix + n_bdec)
                if prefix:
                    call(model.forward, prompts[1:2, :prefix], bcache, 0)
            if prefix:
                repeat_cache(bcache, b)
            first = torch.randint(0, vocab, (b, 1), generator=gen)
            res[f"decode_b{b}"] = b / decode(fwd, bcache, first, prefix, a.warmup, a.batch_steps)
            del bcache
        med = decode(fwd, cache, logits.argmax(-1, keepdim=True), a.prompt, a.warmup, a.steps)
        res["decode_b1"] = 1.0 / med
    if mode == "compile":
        torch._dynamo.reset()
    return {m: res[m] for m in ["prefill", "decode_b1"] + [f"decode_b{b}" for b in a.batch
                                                           if b != 1]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-0.5b")
    p.add_argument("--precision", default="f32,bf16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", default="8,32")
    p.add_argument("--block", type=int, default=16, help="bench_llm's KV block (shared prefix)")
    p.add_argument("--modes", default="eager,static")
    p.add_argument("--compile", action="store_true", help="also try torch.compile")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    a.batch = [int(x) for x in a.batch.split(",")]
    modes = a.modes.split(",") + (["compile"] if a.compile else [])
    torch.set_num_threads(a.threads)
    if not a.json:
        print(f"llm_vs_torch: {a.model} (random weights), torch {torch.__version__}, "
              f"transformers {transformers.__version__}, {a.threads} threads, prompt {a.prompt}, "
              f"decode {a.steps} steps after {a.warmup} warm-up; variants {','.join(modes)}")
        print(f"{'precision':<9} {'metric':<24} {'value':>12}  {'unit':<6} note")
    for prec in a.precision.split(","):
        t0 = time.perf_counter()
        model = build(a.model, DTYPES[prec])
        build_s = time.perf_counter() - t0
        per_mode = {}
        for i, mode in enumerate(modes):
            gen = torch.Generator().manual_seed(1)
            prompts = torch.randint(0, model.config.vocab_size, (2, a.prompt), generator=gen)
            print(f"llm_vs_torch: {prec} {mode}...", file=sys.stderr, flush=True)
            per_mode[mode] = measure(model, mode, a, prompts, gen, cold=i == 0)
        del model
        metrics = list(per_mode[modes[0]])
        best = {m: max(modes, key=lambda md: per_mode[md][m]) for m in metrics}
        if a.json:
            obj = {"bench": "llm_vs_torch", "model": a.model, "precision": prec,
                   "threads": a.threads, "prompt": a.prompt, "steps": a.steps,
                   "torch": torch.__version__, "transformers": transformers.__version__}
            for m in metrics:
                obj[m] = round(per_mode[best[m]][m], 4)
                obj[m + "_how"] = best[m]
                obj[m + "_all"] = {md: round(per_mode[md][m], 4) for md in modes}
            print(json.dumps(obj), flush=True)
            continue
        for m in metrics:
            others = ", ".join(f"{md} {per_mode[md][m]:.3f}" for md in modes)
            print(f"{prec:<9} {m:<24} {per_mode[best[m]][m]:>12.3f}  {'tok/s':<6} "
                  f"{best[m]} won ({others}); model built in {build_s:.1f} s", flush=True)


if __name__ == "__main__":
    main()
