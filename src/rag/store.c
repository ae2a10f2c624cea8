/* rag/store.c - the RAG document store on SQLite (store.h): open or create, passages by id, in
 * id order, and keyword retrieval with FTS5's BM25.
 *
 * Design: one connection per store (SQLITE_OPEN_NOMUTEX: one thread at a time, the stage
 * instance's), the statements prepared once at open. A read-only store is opened read-only, so
 * a benchmark can never change the user's database. The schema is checked at open, so a file
 * that is not a store fails there with its name, not at the first query.
 *
 * Keyword queries: the text's words (runs of letters, digits and non-ASCII bytes, at most
 * CB_RAG_FTS_MAX_WORDS, each at most 64 bytes) are each double-quoted and joined with OR, so no
 * character of the text is read as FTS5 syntax (AND, NEAR, *, quotes, column filters), and the
 * ranking is FTS5's bm25() over both columns; scores are -bm25 (higher is better).
 */
#include "rag/store.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define CB_RAG_FTS_MAX_WORDS 64
#define CB_RAG_FTS_WORD_MAX_BYTES 64

struct cb_rag_store {
    sqlite3 *db;
    sqlite3_stmt *get, *count, *each, *search;
    char path[512];
    char *q;        /* the FTS expression scratch */
    size_t q_cap;
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS passages(id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '',"
    " text TEXT NOT NULL, source TEXT NOT NULL DEFAULT '');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(title, text, content='passages',"
    " content_rowid='id');"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', '" CB_RAG_STORE_SCHEMA "');";

static int db_error(cb_rag_store *s, cb_error *err, int code, const char *what) {
    return cb_error_set(err, code, "%s: %s: %s", s->path, what,
                        s->db ? sqlite3_errmsg(s->db) : "cannot open");
}

static int prepare(cb_rag_store *s, const char *sql, sqlite3_stmt **st, cb_error *err) {
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        int notadb = sqlite3_errcode(s->db) == SQLITE_NOTADB;
        return cb_error_set(err, CB_ECONFIG, "%s: %s", s->path,
                            notadb ? "not an SQLite database"
                                   : sqlite3_errmsg(s->db));
    }
    return CB_OK;
}

/* The schema is there: meta says so and the tables exist. */
static int check_schema(cb_rag_store *s, cb_error *err) {
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, "SELECT name FROM sqlite_master WHERE type IN ('table') AND name IN "
                        "('passages', 'passages_fts', 'meta')", &st, err);
    if (rc) return rc;
    int have = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(st, 0);
        have |= !strcmp(n, "passages") ? 1 : !strcmp(n, "passages_fts") ? 2 : 4;
    }
    int notadb = step == SQLITE_NOTADB || sqlite3_errcode(s->db) == SQLITE_NOTADB;
    sqlite3_finalize(st);
    if (notadb) return cb_error_set(err, CB_ECONFIG, "%s: not an SQLite database", s->path);
    if (step != SQLITE_DONE) return db_error(s, err, CB_EIO, "reading the schema");
    if (have != 7)
        return cb_error_set(err, CB_ECONFIG, "%s: no table %s (not a colobench RAG store; make "
                            "one with `colobench rag ingest`)", s->path,
                            !(have & 1) ? "passages" : !(have & 2) ? "passages_fts" : "meta");
    return CB_OK;
}

int cb_rag_store_open(const char *path, int create, cb_rag_store **out, cb_error *err) {
    *out = NULL;
    int mem = !strcmp(path, ":memory:");
    if (mem && !create)
        return cb_error_set(err, CB_EINVAL, "an in-memory store must be created");
    cb_rag_store *s = cb_calloc(1, sizeof *s);
    if (!s) return cb_error_set(err, CB_ENOMEM, "out of memory");
    snprintf(s->path, sizeof s->path, "%s", path);
    int flags = SQLITE_OPEN_NOMUTEX |
                (create ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY);
    int rc = CB_OK;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        rc = db_error(s, err, create ? CB_EIO : CB_ENOENT, "cannot open");
    } else if (create) {
        char *msg = NULL;
        if (sqlite3_exec(s->db, k_schema, NULL, NULL, &msg) != SQLITE_OK) {
            int notadb = sqlite3_errcode(s->db) == SQLITE_NOTADB;
            rc = cb_error_set(err, CB_ECONFIG, "%s: %s", path,
                              notadb ? "not an SQLite database" : msg ? msg : "schema");
        }
        sqlite3_free(msg);
    }
    if (!rc) rc = check_schema(s, err);
    if (!rc) rc = prepare(s, "SELECT text FROM passages WHERE id = ?", &s->get, err);
    if (!rc) rc = prepare(s, "SELECT count(*) FROM passages", &s->count, err);
    if (!rc) rc = prepare(s, "SELECT id, text FROM passages ORDER BY id", &s->each, err);
    if (!rc)
        rc = prepare(s, "SELECT rowid, bm25(passages_fts) FROM passages_fts WHERE passages_fts "
                        "MATCH ? ORDER BY bm25(passages_fts) LIMIT ?", &s->search, err);
    if (rc) {
        cb_rag_store_close(s);
        return rc;
    }
    *out = s;
    return CB_OK;
}

void cb_rag_store_close(cb_rag_store *s) {
    if (!s) return;
    sqlite3_finalize(s->get);
    sqlite3_finalize(s->count);
    sqlite3_finalize(s->each);
    sqlite3_finalize(s->search);
    sqlite3_close(s->db);
    cb_free(s->q);
    cb_free(s);
}

void *cb_rag_store_db(cb_rag_store *s) { return s->db; }

int64_t cb_rag_store_count(cb_rag_store *s) {
    sqlite3_reset(s->count);
    int64_t n = sqlite3_step(s->count) == SQLITE_ROW ? sqlite3_column_int64(s->count, 0) : -1;
    sqlite3_reset(s->count);
    return n;
}

int cb_rag_store_get(cb_rag_store *s, int64_t id, const char **text, size_t *len, cb_error *err) {
    sqlite3_reset(s->get);
    sqlite3_bind_int64(s->get, 1, id);
    int rc = sqlite3_step(s->get);
    if (rc == SQLITE_DONE) return cb_error_set(err, CB_ENOENT, "%s: no passage %lld", s->path,
                                               (long long)id);
    if (rc != SQLITE_ROW) return db_error(s, err, CB_EIO, "reading a passage");
    int n = sqlite3_column_bytes(s->get, 0);
    const unsigned char *t = sqlite3_column_text(s->get, 0);
    if (n < 0 || (size_t)n > CB_RAG_PASSAGE_MAX_BYTES)
        return cb_error_set(err, CB_EINVAL, "%s: passage %lld has %d bytes, over %u", s->path,
                            (long long)id, n, CB_RAG_PASSAGE_MAX_BYTES);
    *text = t ? (const char *)t : "";
    *len = (size_t)n;
    return CB_OK;
}

int cb_rag_store_each(cb_rag_store *s,
                      int (*fn)(void *arg, int64_t id, const char *text, size_t len), void *arg,
                      cb_error *err) {
    sqlite3_reset(s->each);
    int rc, r = 0;
    while ((rc = sqlite3_step(s->each)) == SQLITE_ROW) {
        int n = sqlite3_column_bytes(s->each, 1);
        const unsigned char *t = sqlite3_column_text(s->each, 1);
        r = fn(arg, sqlite3_column_int64(s->each, 0), t ? (const char *)t : "", (size_t)n);
        if (r) break;
    }
    sqlite3_reset(s->each);
    if (r) return r;
    if (rc != SQLITE_DONE) return db_error(s, err, CB_EIO, "reading the passages");
    return CB_OK;
}

static int fts_words(cb_rag_store *s, const char *query, size_t len, int keep_stop,
                     cb_error *err);

/* Words so common that OR-ing them in makes FTS5 score almost every passage (a query "what is X
 * known for" would touch the whole corpus): left out unless the query has nothing else. */
static const char *const k_stop[] = {
    "a", "about", "after", "all", "also", "an", "and", "are", "as", "at", "be", "been", "but",
    "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "more", "most", "my", "no",
    "not", "of", "on", "or", "our", "she", "so", "some", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "whom", "whose", "why", "will", "with", "would", "you", "your"};

static int is_stop(const char *w, size_t n) {
    if (n > 5) return 0;
    char low[8];
    for (size_t i = 0; i < n; i++) low[i] = (char)(w[i] >= 'A' && w[i] <= 'Z' ? w[i] + 32 : w[i]);
    low[n] = 0;
    for (size_t i = 0; i < sizeof k_stop / sizeof k_stop[0]; i++)
        if (!strcmp(low, k_stop[i])) return 1;
    return 0;
}

/* The FTS5 expression of query's words into s->q: "w1" OR "w2" ... (stop words left out when
 * other words remain); 0 words leaves it empty. */
static int fts_expr(cb_rag_store *s, const char *query, size_t len, cb_error *err) {
    for (int keep_stop = 0; keep_stop < 2; keep_stop++) {
        int rc = fts_words(s, query, len, keep_stop, err);
        if (rc || s->q[0]) return rc;
    }
    return CB_OK;
}

static int fts_words(cb_rag_store *s, const char *query, size_t len, int keep_stop,
                     cb_error *err) {
    size_t need = CB_RAG_FTS_MAX_WORDS * (CB_RAG_FTS_WORD_MAX_BYTES + 6) + 1;
    if (s->q_cap < need) {
        s->q = cb_malloc(need);
        if (!s->q) return cb_error_set(err, CB_ENOMEM, "out of memory");
        s->q_cap = need;
    }
    size_t k = 0, i = 0;
    int words = 0;
    while (i < len && words < CB_RAG_FTS_MAX_WORDS) {
        unsigned char c = (unsigned char)query[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c >= 0x80)) {
            i++;
            continue;
        }
        size_t a = i;
        while (i < len) {
            c = (unsigned char)query[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c >= 0x80))
                break;
            i++;
        }
        size_t n = i - a;
        if (!keep_stop && is_stop(query + a, n)) continue;
        if (n > CB_RAG_FTS_WORD_MAX_BYTES) n = CB_RAG_FTS_WORD_MAX_BYTES;
        while (n > 0 && a + n < i && ((unsigned char)query[a + n] & 0xC0) == 0x80) n--;
        if (words) {
            memcpy(s->q + k, " OR ", 4);
            k += 4;
        }
        s->q[k++] = '"';
        memcpy(s->q + k, query + a, n);
        k += n;
        s->q[k++] = '"';
        words++;
    }
    s->q[k] = 0;
    return CB_OK;
}

int cb_rag_store_search(cb_rag_store *s, const char *query, size_t len, int k, cb_rag_hit *hits,
                        int *n, cb_error *err) {
    *n = 0;
    int rc = fts_expr(s, query, len, err);
    if (rc) return rc;
    if (!s->q[0] || k <= 0) return CB_OK;
    sqlite3_reset(s->search);
    sqlite3_bind_text(s->search, 1, s->q, -1, SQLITE_STATIC);
    sqlite3_bind_int(s->search, 2, k);
    while ((rc = sqlite3_step(s->search)) == SQLITE_ROW && *n < k) {
        cb_rag_hit *h = &hits[(*n)];
        memset(h, 0, sizeof *h);
        h->id = sqlite3_column_int64(s->search, 0);
        h->score = (float)-sqlite3_column_double(s->search, 1);
        h->source = CB_RAG_SRC_KEYWORD;
        h->rank = (uint32_t)*n;
        (*n)++;
    }
    int done = rc == SQLITE_DONE || rc == SQLITE_ROW;
    sqlite3_reset(s->search);
    if (!done) return db_error(s, err, CB_EIO, "keyword search");
    return CB_OK;
}
