/* rag/store.h - the RAG document store: passages in an SQLite database, by id and by keyword
 * (FTS5, BM25).
 *
 * Schema (version "colobench-rag-1", kept in meta):
 *   CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
 *   CREATE TABLE passages(id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '',
 *                         text TEXT NOT NULL, source TEXT NOT NULL DEFAULT '');
 *   CREATE VIRTUAL TABLE passages_fts USING fts5(title, text, content='passages',
 *                                                content_rowid='id');
 * A corpus file is JSON Lines, one passage per line: {"id": 12, "title": "...", "text": "..."}
 * (title optional; id optional: then the next free id). Questions files are JSON Lines too:
 * {"id": 0, "question": "...", "answer_id": 12} (answer_id optional, -1 when unknown).
 *
 * Ownership and threads: a cb_rag_store is one SQLite connection; one thread at a time (a stage
 * instance opens its own). Results borrowed from a call are valid until the next call on the
 * same store.
 */
#ifndef CB_RAG_STORE_H
#define CB_RAG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"
#include "rag/item.h"

#define CB_RAG_STORE_SCHEMA "colobench-rag-1"
#define CB_RAG_PASSAGE_MAX_BYTES (1u << 20) /* one passage's text */
#define CB_RAG_LINE_MAX_BYTES (4u << 20)    /* one JSON line of a corpus or questions file */

typedef struct cb_rag_store cb_rag_store;

/* ---- store.c ---- */

/* Opens the store at path. create = 0: it must exist and have the schema (CB_ECONFIG naming the
 * path and what is missing: "store.sqlite: no table passages (not a colobench RAG store; make
 * one with `colobench rag ingest`)"); read-only. create = 1: creates the file and the schema
 * when absent (read-write). path ":memory:" is a private in-memory store (create must be 1). */
int cb_rag_store_open(const char *path, int create, cb_rag_store **out, cb_error *err);
void cb_rag_store_close(cb_rag_store *s); /* NULL is a no-op */

/* The SQLite handle (sqlite3 *), for the ingest code. */
void *cb_rag_store_db(cb_rag_store *s);

int64_t cb_rag_store_count(cb_rag_store *s); /* passages; -1 on error */

/* Passage id's text (borrowed until the next call on s). CB_ENOENT when absent. */
int cb_rag_store_get(cb_rag_store *s, int64_t id, const char **text, size_t *len, cb_error *err);

/* Calls fn for every passage in id order until fn returns non-zero (that value is returned). */
int cb_rag_store_each(cb_rag_store *s,
                      int (*fn)(void *arg, int64_t id, const char *text, size_t len), void *arg,
                      cb_error *err);

/* Keyword retrieval: the k best passages for the words of query by FTS5's BM25 (the query's
 * words are quoted, OR-ed: no FTS syntax from the text reaches SQLite). hits[0..*n) get id,
 * score (= -bm25, higher is better), source CB_RAG_SRC_KEYWORD, rank. */
int cb_rag_store_search(cb_rag_store *s, const char *query, size_t len, int k, cb_rag_hit *hits,
                        int *n, cb_error *err);

/* ---- store_ingest.c ---- */

typedef struct cb_rag_ingest_opts {
    int on_bad_line;       /* 0: stop at the first broken line, nothing of that file kept (the
                              error names file and line); 1: skip it with a warning, count it */
    int chunk_words;       /* .txt files: passages of at most this many words (paragraphs are
                              kept together when they fit); 0: 128 */
} cb_rag_ingest_opts;

typedef struct cb_rag_ingest_stats {
    int64_t files, passages, bad_lines, bytes;
} cb_rag_ingest_stats;

/* Adds the passages of path (a .jsonl corpus file, a .txt file, or a directory of them, sorted
 * by name, not recursive beyond one level) to s, in one transaction per file, and the FTS
 * index. Errors name file and line. */
int cb_rag_store_ingest(cb_rag_store *s, const char *path, const cb_rag_ingest_opts *o,
                        cb_rag_ingest_stats *st, cb_error *err);

#endif
