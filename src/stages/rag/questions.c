/* stages/rag/questions.c - rag.questions: the dataset stage of RAG pipelines, one question per
 * query as a RAG item (rag/item.h: question = query = the text, answer_id, index).
 *
 * Source: `file`, a questions file in JSON Lines ({"id": 0, "question": "...", "answer_id": 12},
 * answer_id optional: -1), read at prepare (at most CB_RAG_QUESTIONS_MAX questions, lines of at
 * most CB_RAG_LINE_MAX_BYTES; a broken line is an error naming the file, the line and the key);
 * or, without a file, the synthetic questions of rag/corpus.h for a corpus of `passages` passages
 * made with `seed` (the same numbers as `colobench rag corpus`, so the answer ids match that
 * corpus). num_questions: how many (0: the whole file; synthetic: required).
 *
 * Splits: one split, "questions", of num_questions queries a pass, `epochs` passes; query batch b
 * is question b. Thread-safety: the questions are immutable after prepare (workers each load their
 * own copy; the file is small). Ownership: the instance owns its question table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/stage.h"
#include "llm/jdom.h"
#include "rag/corpus.h"
#include "rag/item.h"
#include "rag/store.h"
#include "stages/util/util.h"

#define CB_RAG_QUESTIONS_MAX 10000000

enum { Q_FILE, Q_NUM, Q_PASSAGES, Q_SEED, Q_EPOCHS, Q_COUNT };

static const cb_param_def questions_params[Q_COUNT] = {
    [Q_FILE] = {"file", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file",
                "questions in JSON Lines ({\"id\", \"question\", \"answer_id\"}); unset: the "
                "synthetic questions of a corpus of `passages` made with `seed`"},
    [Q_NUM] = {"num_questions", CB_PARAM_INT, "0", 0, CB_RAG_QUESTIONS_MAX, NULL,
               "questions a pass (0: every question of the file; synthetic: required)"},
    [Q_PASSAGES] = {"passages", CB_PARAM_INT, "1000", 1, (double)CB_RAG_CORPUS_MAX_PASSAGES, NULL,
                    "synthetic: passages of the corpus the questions are about"},
    [Q_SEED] = {"seed", CB_PARAM_INT, "1", 0, 9.2e18, NULL,
                "synthetic: the corpus seed (as `colobench rag corpus --seed`)"},
    [Q_EPOCHS] = {"epochs", CB_PARAM_INT, "1", 1, 1000000, NULL, "passes over the questions"},
};

typedef struct question {
    int64_t id, answer_id;
    size_t off, len; /* text in the arena */
} question;

typedef struct questions_state {
    const cb_host *host;
    const cb_param_value *v;
    cb_rag_corpus_opts corpus;
    int64_t n;
    question *qs;    /* file only */
    char *arena;
    size_t arena_len, arena_cap;
} questions_state;

static int questions_check(const cb_stage_args *args, cb_error *err) {
    const cb_param_value *v = args->values;
    if (!v[Q_FILE].has_value && v[Q_NUM].i == 0)
        return cb_util_error(err, CB_ECONFIG, "num_questions: is required for synthetic "
                             "questions (or give file, a questions file)");
    return CB_OK;
}

static int questions_create(void *state, const cb_stage_args *args, cb_error *err) {
    questions_state *s = state;
    int rc = questions_check(args, err);
    if (rc) return rc;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->v = v;
    cb_rag_corpus_opts co = CB_RAG_CORPUS_OPTS_DEFAULT;
    co.passages = v[Q_PASSAGES].i;
    co.seed = (uint64_t)v[Q_SEED].i;
    s->corpus = co;
    s->n = v[Q_NUM].i;
    return CB_OK;
}

static int arena_put(questions_state *s, const char *p, size_t n) {
    if (s->arena_len + n + 1 > s->arena_cap) {
        size_t cap = s->arena_cap ? s->arena_cap * 2 : 65536;
        while (cap < s->arena_len + n + 1) cap *= 2;
        char *a = s->host->alloc(cap);
        if (!a) return CB_ENOMEM;
        if (s->arena_len) memcpy(a, s->arena, s->arena_len);
        s->host->free(s->arena);
        s->arena = a;
        s->arena_cap = cap;
    }
    memcpy(s->arena + s->arena_len, p, n);
    s->arena_len += n;
    s->arena[s->arena_len++] = 0;
    return CB_OK;
}

/* Reads the questions file (at most want questions when want > 0). */
static int load_file(questions_state *s, const char *path, int64_t want, cb_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cb_util_error(err, CB_ENOENT, "file: cannot open %s", path);
    char *line = NULL;
    size_t lcap = 0, qcap = 0;
    ssize_t got;
    int64_t lno = 0;
    int rc = CB_OK;
    while (!rc && (want == 0 || s->n < want) && (got = getline(&line, &lcap, f)) >= 0) {
        lno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t a = 0;
        while (a < len && (line[a] == ' ' || line[a] == '\t')) a++;
        if (a == len) continue;
        if (len > CB_RAG_LINE_MAX_BYTES || s->n >= CB_RAG_QUESTIONS_MAX) {
            rc = cb_util_error(err, CB_ECONFIG, "file: %s:%lld: line over %u bytes, or more "
                               "than %d questions", path, (long long)lno, CB_RAG_LINE_MAX_BYTES,
                               CB_RAG_QUESTIONS_MAX);
            break;
        }
        cb__jdom *d = NULL;
        cb_error e;
        cb_error_clear(&e);
        if (cb__jdom_parse(line + a, len - a, path, &d, &e)) {
            rc = cb_util_error(err, CB_ECONFIG, "file: %s:%lld: not JSON: %s", path,
                               (long long)lno, e.msg);
            break;
        }
        const cb__jdom_node *r = cb__jdom_root(d), *qn = NULL, *an = NULL, *in = NULL;
        if (r->type == CB_JDOM_OBJ) {
            qn = cb__jdom_get(r, "question");
            an = cb__jdom_get(r, "answer_id");
            in = cb__jdom_get(r, "id");
        }
        if (r->type != CB_JDOM_OBJ || !qn || qn->type != CB_JDOM_STR)
            rc = cb_util_error(err, CB_ECONFIG, "file: %s:%lld: question: missing or not a "
                               "string", path, (long long)lno);
        else if (qn->n > CB_RAG_MAX_TEXT_BYTES)
            rc = cb_util_error(err, CB_ECONFIG, "file: %s:%lld: question: too long", path,
                               (long long)lno);
        else if ((an && an->type != CB_JDOM_NUM && an->type != CB_JDOM_NULL) ||
                 (in && in->type != CB_JDOM_NUM))
            rc = cb_util_error(err, CB_ECONFIG, "file: %s:%lld: %s: not a number", path,
                               (long long)lno, in && in->type != CB_JDOM_NUM ? "id" : "answer_id");
        if (!rc && (size_t)s->n == qcap) {
            size_t nc = qcap ? qcap * 2 : 1024;
            question *p = s->host->alloc(nc * sizeof *p);
            if (!p) rc = cb_util_error(err, CB_ENOMEM, "out of memory for questions");
            else {
                if (qcap) memcpy(p, s->qs, qcap * sizeof *p);
                s->host->free(s->qs);
                s->qs = p;
                qcap = nc;
            }
        }
        if (!rc) {
            question *q = &s->qs[s->n];
            q->id = in ? (int64_t)in->v.num : s->n;
            q->answer_id = an && an->type == CB_JDOM_NUM ? (int64_t)an->v.num : -1;
            q->off = s->arena_len;
            q->len = qn->n;
            if (arena_put(s, qn->v.str, qn->n)) rc = cb_util_error(err, CB_ENOMEM, "out of memory");
            else s->n++;
        }
        cb__jdom_free(d);
    }
    free(line);
    fclose(f);
    if (!rc && s->n == 0) rc = cb_util_error(err, CB_ECONFIG, "file: %s has no questions", path);
    return rc;
}

static int questions_prepare(void *state, cb_error *err) {
    questions_state *s = state;
    if (!s->v[Q_FILE].has_value) {
        const char *why = cb_rag_corpus_check(&s->corpus);
        if (why[0]) return cb_util_error(err, CB_ECONFIG, "%s", why);
        return CB_OK;
    }
    if (s->qs) return CB_OK; /* splits() read it already */
    int64_t want = s->n;
    s->n = 0;
    return load_file(s, s->v[Q_FILE].s, want, err);
}

/* The host asks for the splits before prepare: a file is read then (once). */
static int questions_splits(void *state, cb_splits *out, cb_error *err) {
    questions_state *s = state;
    if (s->v[Q_FILE].has_value && !s->qs) {
        int rc = questions_prepare(state, err);
        if (rc) return rc;
    }
    int64_t n = s->n;
    out->epochs = (int32_t)s->v[Q_EPOCHS].i;
    out->n = 1;
    snprintf(out->split[0].name, sizeof out->split[0].name, "questions");
    out->split[0].batches = n > 0 ? n : 1;
    return CB_OK;
}

static int questions_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    questions_state *s = state;
    (void)ctx;
    int64_t i = s->n ? (q->batch % s->n + s->n) % s->n : 0;
    char buf[CB_RAG_CORPUS_QUESTION_CAP];
    cb_rag_view v = {.index = i, .answer_id = -1, .grade = CB_RAG_GRADE_NONE};
    if (s->qs) {
        v.index = s->qs[i].id;
        v.answer_id = s->qs[i].answer_id;
        v.question = s->arena + s->qs[i].off;
        v.question_bytes = s->qs[i].len;
    } else {
        v.question_bytes = cb_rag_corpus_question(&s->corpus, i, buf, sizeof buf, &v.answer_id);
        v.question = buf;
    }
    v.query = v.question;
    v.query_bytes = v.question_bytes;
    cb_buffer *b = cb_rag_item_build(s->host, &v);
    if (!b) return cb_util_error(err, CB_ENOMEM, "out of memory for the item");
    cb_rag_item_replace(s->host, q, b);
    return CB_OK;
}

static void questions_destroy(void *state) {
    questions_state *s = state;
    if (!s->host) return;
    s->host->free(s->qs);
    s->host->free(s->arena);
}

const cb_stage_ops cb_stage_rag_questions = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "rag.questions",
    .summary = "RAG questions (a JSON Lines file, or synthetic with known answer passages), one "
               "per query",
    .params = questions_params,
    .n_params = Q_COUNT,
    .state_size = sizeof(questions_state),
    .create = questions_create,
    .prepare = questions_prepare,
    .run = questions_run,
    .destroy = questions_destroy,
    .splits = questions_splits,
    .check = questions_check,
};
