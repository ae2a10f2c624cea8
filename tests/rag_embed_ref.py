#!/usr/bin/env python3
"""Reference sentence embeddings for tests/test_rag_embed.c.

  rag_embed_ref.py st MODEL_DIR TEXTS OUT
      sentence-transformers (the implementation users trust; .venv-bench) on MODEL_DIR:
      SentenceTransformer(MODEL_DIR).encode(texts) with its own modules (mean pooling,
      Normalize). TEXTS: one JSON string a line. OUT: one line of floats per text.
  rag_embed_ref.py torch MODEL_DIR IDS OUT POOL NORMALIZE
      The BertModel forward written out in PyTorch (torch.nn.functional; Debian's torch 1.13,
      which CI has) over the same model.safetensors (read with numpy), from token ids (IDS: one
      line of ids per text), POOL mean or cls, NORMALIZE 1 or 0.
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name.removeprefix("bert.")] = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"])
    return out


def torch_ref(model_dir, ids_path, out_path, pool, normalize):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    cfg = json.load(open(model_dir + "/config.json"))
    w = {k: torch.from_numpy(v.copy()).double() for k, v in
         read_safetensors(model_dir + "/model.safetensors").items()}
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-12)
    d = H // nh
    rows = []
    for line in open(ids_path):
        ids = torch.tensor([int(x) for x in line.split()])
        L = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] +
             w["embeddings.position_embeddings.weight"][:L] +
             w["embeddings.token_type_embeddings.weight"][0])
        x = F.layer_norm(x, (H,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for l in range(cfg["num_hidden_layers"]):
            p = "encoder.layer.%d." % l
            lin = lambda t, n: F.linear(t, w[p + n + ".weight"], w[p + n + ".bias"])
            q = lin(x, "attention.self.query").view(L, nh, d).transpose(0, 1)
            k = lin(x, "attention.self.key").view(L, nh, d).transpose(0, 1)
            v = lin(x, "attention.self.value").view(L, nh, d).transpose(0, 1)
            a = torch.softmax(q @ k.transpose(1, 2) / d ** 0.5, dim=-1) @ v
            a = lin(a.transpose(0, 1).reshape(L, H), "attention.output.dense")
            x = F.layer_norm(x + a, (H,), w[p + "attention.output.LayerNorm.weight"],
                             w[p + "attention.output.LayerNorm.bias"], eps)
            m = F.gelu(lin(x, "intermediate.dense"))
            x = F.layer_norm(x + lin(m, "output.dense"), (H,), w[p + "output.LayerNorm.weight"],
                             w[p + "output.LayerNorm.bias"], eps)
        e = x[0] if pool == "cls" else x.mean(dim=0)
        if normalize:
            e = e / e.norm().clamp_min(1e-12)
        rows.append(e.tolist())
    with open(out_path, "w") as f:
        for r in rows:
            f.write(" ".join("%.9g" % v for v in r) + "\n")


def st_ref(model_dir, texts_path, out_path):
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(2)
    texts = [json.loads(line) for line in open(texts_path, encoding="utf-8")]
    m = SentenceTransformer(model_dir, device="cpu")
    e = m.encode(texts, batch_size=32, convert_to_numpy=True)
    with open(out_path, "w") as f:
        for r in e:
            f.write(" ".join("%.9g" % v for v in r) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "st":
        st_ref(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        torch_ref(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1")
