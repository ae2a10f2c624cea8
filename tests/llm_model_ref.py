#!/usr/bin/env python3
"""Reference tensor tables for tests/test_llm_config.c, from Hugging Face `transformers` (PyPI),
the implementation users trust: each model is built from a config.json on PyTorch's meta device
(shapes only, no memory, nothing downloaded).

Usage: llm_model_ref.py DIR NAME...
Reads DIR/NAME.json for each NAME and writes DIR/NAME.ref: one "TENSOR D0 [D1]" line per
parameter of the model transformers builds (named_parameters: a tied lm_head appears once, as
model.embed_tokens.weight), sorted, then "params N" (the number of parameters).
"""
import json
import sys

import torch
import transformers


def main():
    out = sys.argv[1]
    for name in sys.argv[2:]:
        with open(f"{out}/{name}.json") as f:
            cfg = json.load(f)
        keys = {k: v for k, v in cfg.items() if k != "model_type"}
        conf = transformers.AutoConfig.for_model(cfg["model_type"], **keys)
        with torch.device("meta"):
            model = getattr(transformers, cfg["architectures"][0])(conf)
        lines = sorted(n + "".join(f" {d}" for d in p.shape) for n, p in model.named_parameters())
        total = sum(p.numel() for p in model.parameters())
        with open(f"{out}/{name}.ref", "w") as f:
            f.write("".join(line + "\n" for line in lines) + f"params {total}\n")


if __name__ == "__main__":
    main()
