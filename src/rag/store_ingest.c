/* rag/store_ingest.c - corpus files into the RAG store (store.h): JSON Lines corpora, text files
 * cut into passages, or a folder of them.
 *
 * A .jsonl (or .json) file has one passage a line: {"id": 12, "title": "...", "text": "..."};
 * id is optional (the next free id then), title too; empty lines are skipped. A line that is not
 * such an object (broken JSON, no "text", a text that is not a string, an id that is not an
 * integer, an id already in the store, a line over CB_RAG_LINE_MAX_BYTES, a passage over
 * CB_RAG_PASSAGE_MAX_BYTES) is an error naming the file, the line and the key: by default
 * (on_bad_line 0) nothing of that file is kept (one transaction per file, rolled back) and
 * ingestion stops; with on_bad_line 1 the line is skipped with a warning on stderr and counted
 * (stats->bad_lines) and the rest is kept.
 * A .txt file is cut into passages of at most chunk_words words: paragraphs (separated by blank
 * lines) are kept whole while they fit, a longer one is cut between words; the title is the
 * file's name. A folder: its .jsonl, .json and .txt files in name order (not its subfolders).
 *
 * Memory: one line (or one .txt file, at most CB_RAG_TXT_MAX_BYTES) at a time; a corpus of any
 * length streams through. Each passage goes into passages and the FTS index together.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "core/alloc.h"
#include "llm/jdom.h"
#include "rag/store.h"

#define CB_RAG_TXT_MAX_BYTES (64u << 20)
#define CB_RAG_DIR_MAX_FILES 100000

typedef struct ingest {
    cb_rag_store *s;
    sqlite3 *db;
    sqlite3_stmt *ins, *fts;
    const cb_rag_ingest_opts *o;
    cb_rag_ingest_stats *st;
    const char *file;
} ingest;

static int put(ingest *g, int has_id, int64_t id, const char *title, size_t tn, const char *text,
               size_t n, int64_t line, cb_error *err) {
    sqlite3_reset(g->ins);
    if (has_id) sqlite3_bind_int64(g->ins, 1, id);
    else sqlite3_bind_null(g->ins, 1);
    sqlite3_bind_text(g->ins, 2, title, (int)tn, SQLITE_STATIC);
    sqlite3_bind_text(g->ins, 3, text, (int)n, SQLITE_STATIC);
    sqlite3_bind_text(g->ins, 4, g->file, -1, SQLITE_STATIC);
    int rc = sqlite3_step(g->ins);
    if (rc == SQLITE_CONSTRAINT)
        return cb_error_set(err, CB_ECONFIG, "%s:%lld: id: passage %lld is already in the store",
                            g->file, (long long)line, (long long)id);
    if (rc != SQLITE_DONE)
        return cb_error_set(err, CB_EIO, "%s:%lld: %s", g->file, (long long)line,
                            sqlite3_errmsg(g->db));
    int64_t rowid = sqlite3_last_insert_rowid(g->db);
    sqlite3_reset(g->fts);
    sqlite3_bind_int64(g->fts, 1, rowid);
    sqlite3_bind_text(g->fts, 2, title, (int)tn, SQLITE_STATIC);
    sqlite3_bind_text(g->fts, 3, text, (int)n, SQLITE_STATIC);
    if (sqlite3_step(g->fts) != SQLITE_DONE)
        return cb_error_set(err, CB_EIO, "%s:%lld: the keyword index: %s", g->file,
                            (long long)line, sqlite3_errmsg(g->db));
    g->st->passages++;
    g->st->bytes += (int64_t)n;
    return CB_OK;
}

/* One JSON line: CB_ECONFIG naming the line and key when it is not a passage. */
static int jsonl_line(ingest *g, const char *line, size_t len, int64_t lno, cb_error *err) {
    char name[320];
    snprintf(name, sizeof name, "%s:%lld", g->file, (long long)lno);
    cb__jdom *d = NULL;
    cb_error e;
    cb_error_clear(&e);
    if (cb__jdom_parse(line, len, name, &d, &e) != CB_OK)
        return cb_error_set(err, CB_ECONFIG, "%s:%lld: not JSON: %s", g->file, (long long)lno,
                            e.msg);
    const cb__jdom_node *r = cb__jdom_root(d);
    int rc = CB_OK;
    const cb__jdom_node *id = NULL, *title = NULL, *text = NULL;
    if (r->type != CB_JDOM_OBJ) {
        rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: not an object ({\"id\", \"title\", "
                          "\"text\"})", g->file, (long long)lno);
    } else {
        id = cb__jdom_get(r, "id");
        title = cb__jdom_get(r, "title");
        text = cb__jdom_get(r, "text");
        if (!text)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: text: missing", g->file,
                              (long long)lno);
        else if (text->type != CB_JDOM_STR)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: text: not a string", g->file,
                              (long long)lno);
        else if (text->n > CB_RAG_PASSAGE_MAX_BYTES)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: text: %zu bytes, over %u", g->file,
                              (long long)lno, text->n, CB_RAG_PASSAGE_MAX_BYTES);
        else if (title && title->type != CB_JDOM_STR && title->type != CB_JDOM_NULL)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: title: not a string", g->file,
                              (long long)lno);
        else if (id && (id->type != CB_JDOM_NUM || id->v.num != (double)(int64_t)id->v.num ||
                        id->v.num < 0 || id->v.num > 9007199254740992.0))
            rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: id: not an integer in [0, 2^53]",
                              g->file, (long long)lno);
    }
    if (!rc) {
        int has_title = title && title->type == CB_JDOM_STR;
        rc = put(g, id != NULL, id ? (int64_t)id->v.num : 0, has_title ? title->v.str : "",
                 has_title ? title->n : 0, text->v.str, text->n, lno, err);
    }
    cb__jdom_free(d);
    return rc;
}

static int ingest_jsonl(ingest *g, FILE *f, cb_error *err) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t lno = 0;
    int rc = CB_OK;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        lno++;
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t a = 0;
        while (a < len && (line[a] == ' ' || line[a] == '\t')) a++;
        if (a == len) continue;
        if (len > CB_RAG_LINE_MAX_BYTES)
            rc = cb_error_set(err, CB_ECONFIG, "%s:%lld: line of %zu bytes, over %u", g->file,
                              (long long)lno, len, CB_RAG_LINE_MAX_BYTES);
        else
            rc = jsonl_line(g, line + a, len - a, lno, err);
        if (rc == CB_ECONFIG && g->o->on_bad_line) {
            fprintf(stderr, "colobench: warning: %s (line skipped)\n", err ? err->msg : "bad line");
            g->st->bad_lines++;
            rc = CB_OK;
        }
    }
    if (!rc && ferror(f)) rc = cb_error_set(err, CB_EIO, "%s: read error", g->file);
    free(line);
    return rc;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A .txt file: paragraphs into passages of at most chunk_words words. */
static int ingest_txt(ingest *g, FILE *f, cb_error *err) {
    struct stat sb;
    if (fstat(fileno(f), &sb) || sb.st_size > (off_t)CB_RAG_TXT_MAX_BYTES)
        return cb_error_set(err, CB_ECONFIG, "%s: over %u bytes (cut it, or make it JSON "
                            "Lines)", g->file, CB_RAG_TXT_MAX_BYTES);
    size_t n = (size_t)sb.st_size;
    char *t = cb_malloc(n + 1), *chunk = cb_malloc(n + 1);
    if (!t || !chunk) {
        cb_free(t);
        cb_free(chunk);
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory", g->file);
    }
    n = fread(t, 1, n, f);
    t[n] = 0;
    const char *base = strrchr(g->file, '/');
    base = base ? base + 1 : g->file;
    int max_words = g->o->chunk_words > 0 ? g->o->chunk_words : 128;
    size_t cl = 0, i = 0;
    int words = 0, rc = CB_OK;
    int64_t lno = 1, chunk_line = 1;
    while (!rc && i <= n) {
        /* The next word, or a paragraph break (a blank line), or the end. */
        int para = 0;
        while (i < n && is_space(t[i])) {
            if (t[i] == '\n') {
                lno++;
                size_t j = i + 1;
                while (j < n && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r')) j++;
                if (j < n && t[j] == '\n') para = 1;
            }
            i++;
        }
        size_t a = i;
        while (i < n && !is_space(t[i])) i++;
        int end = a == i;
        /* Flush: at the end, at a paragraph break that would not fit, or at max_words. */
        if (cl && (end || words >= max_words || (para && words > max_words / 2))) {
            rc = put(g, 0, 0, base, strlen(base), chunk, cl, chunk_line, err);
            cl = 0;
            words = 0;
        }
        if (end) break;
        if (!cl) chunk_line = lno;
        if (cl) chunk[cl++] = ' ';
        memcpy(chunk + cl, t + a, i - a);
        cl += i - a;
        words++;
    }
    cb_free(t);
    cb_free(chunk);
    return rc;
}

static int has_ext(const char *p, const char *ext) {
    size_t n = strlen(p), e = strlen(ext);
    return n > e && !strcmp(p + n - e, ext);
}

static int ingest_file(ingest *g, const char *path, cb_error *err) {
    int txt = has_ext(path, ".txt");
    if (!txt && !has_ext(path, ".jsonl") && !has_ext(path, ".json"))
        return cb_error_set(err, CB_ECONFIG, "%s: not a corpus file (.jsonl, .json or .txt)",
                            path);
    FILE *f = fopen(path, "rb");
    if (!f) return cb_error_set(err, CB_ENOENT, "%s: %s", path, strerror(errno));
    g->file = path;
    int64_t before = g->st->passages, bad = g->st->bad_lines, bytes = g->st->bytes;
    sqlite3_exec(g->db, "BEGIN", NULL, NULL, NULL);
    int rc = txt ? ingest_txt(g, f, err) : ingest_jsonl(g, f, err);
    fclose(f);
    if (rc) {
        sqlite3_exec(g->db, "ROLLBACK", NULL, NULL, NULL);
        g->st->passages = before, g->st->bad_lines = bad, g->st->bytes = bytes;
        return rc;
    }
    if (sqlite3_exec(g->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return cb_error_set(err, CB_EIO, "%s: commit: %s", path, sqlite3_errmsg(g->db));
    g->st->files++;
    return CB_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cb_rag_store_ingest(cb_rag_store *s, const char *path, const cb_rag_ingest_opts *o,
                        cb_rag_ingest_stats *st, cb_error *err) {
    static const cb_rag_ingest_opts k_default = {0, 0};
    ingest g = {.s = s, .db = cb_rag_store_db(s), .o = o ? o : &k_default, .st = st};
    if (sqlite3_prepare_v2(g.db, "INSERT INTO passages(id, title, text, source) "
                           "VALUES(?, ?, ?, ?)", -1, &g.ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(g.db, "INSERT INTO passages_fts(rowid, title, text) VALUES(?, ?, ?)",
                           -1, &g.fts, NULL) != SQLITE_OK) {
        int rc = cb_error_set(err, CB_EIO, "the store is read-only or broken: %s",
                              sqlite3_errmsg(g.db));
        sqlite3_finalize(g.ins);
        return rc;
    }
    struct stat sb;
    int rc = CB_OK;
    if (stat(path, &sb) != 0) {
        rc = cb_error_set(err, CB_ENOENT, "%s: %s", path, strerror(errno));
    } else if (!S_ISDIR(sb.st_mode)) {
        rc = ingest_file(&g, path, err);
    } else {
        DIR *d = opendir(path);
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while (!rc && d && (e = readdir(d))) {
            if (!has_ext(e->d_name, ".jsonl") && !has_ext(e->d_name, ".json") &&
                !has_ext(e->d_name, ".txt"))
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                char **p = nc <= CB_RAG_DIR_MAX_FILES ? realloc(names, nc * sizeof *p) : NULL;
                if (!p) {
                    rc = cb_error_set(err, CB_ENOMEM, "%s: too many files", path);
                    break;
                }
                names = p, cap = nc;
            }
            size_t len = strlen(path) + strlen(e->d_name) + 2;
            names[n] = malloc(len);
            if (!names[n]) {
                rc = cb_error_set(err, CB_ENOMEM, "out of memory");
                break;
            }
            snprintf(names[n++], len, "%s/%s", path, e->d_name);
        }
        if (!d) rc = cb_error_set(err, CB_EIO, "%s: %s", path, strerror(errno));
        else closedir(d);
        if (!rc) qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
            if (!rc) rc = ingest_file(&g, names[i], err);
            free(names[i]);
        }
        free(names);
    }
    sqlite3_finalize(g.ins);
    sqlite3_finalize(g.fts);
    return rc;
}
