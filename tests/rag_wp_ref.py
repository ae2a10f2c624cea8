#!/usr/bin/env python3
"""Reference token ids for tests/test_rag_wordpiece.c from Hugging Face `tokenizers` (PyPI), the
implementation sentence-transformers uses: reads TEXTS (one JSON string a line), encodes each with
TOKENIZER_JSON truncated to MAX tokens (special tokens included, no padding) and writes one line
of space-separated ids per text to OUT.

Usage: rag_wp_ref.py TOKENIZER_JSON TEXTS MAX OUT
"""
import json
import sys

from tokenizers import Tokenizer


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    tok.no_padding()
    tok.enable_truncation(max_length=int(sys.argv[3]))
    with open(sys.argv[2], encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    encs = tok.encode_batch(texts)
    with open(sys.argv[4], "w") as f:
        for e in encs:
            f.write(" ".join(str(i) for i in e.ids) + "\n")


if __name__ == "__main__":
    main()
