/* rag/store.c - placeholder until the document store lands: every call says it is not built. */
#include "rag/store.h"

int cb_rag_store_open(const char *path, int create, cb_rag_store **out, cb_error *err) {
    (void)path, (void)create;
    *out = NULL;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG document store is not built yet");
}
void cb_rag_store_close(cb_rag_store *s) { (void)s; }
void *cb_rag_store_db(cb_rag_store *s) { (void)s; return NULL; }
int64_t cb_rag_store_count(cb_rag_store *s) { (void)s; return -1; }
int cb_rag_store_get(cb_rag_store *s, int64_t id, const char **text, size_t *len, cb_error *err) {
    (void)s, (void)id, (void)text, (void)len;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG document store is not built yet");
}
int cb_rag_store_each(cb_rag_store *s,
                      int (*fn)(void *arg, int64_t id, const char *text, size_t len), void *arg,
                      cb_error *err) {
    (void)s, (void)fn, (void)arg;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG document store is not built yet");
}
int cb_rag_store_search(cb_rag_store *s, const char *query, size_t len, int k, cb_rag_hit *hits,
                        int *n, cb_error *err) {
    (void)s, (void)query, (void)len, (void)k, (void)hits, (void)n;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG document store is not built yet");
}
