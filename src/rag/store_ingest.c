/* rag/store_ingest.c - placeholder until corpus ingestion lands. */
#include "rag/store.h"

int cb_rag_store_ingest(cb_rag_store *s, const char *path, const cb_rag_ingest_opts *o,
                        cb_rag_ingest_stats *st, cb_error *err) {
    (void)s, (void)path, (void)o, (void)st;
    return cb_error_set(err, CB_EUNSUPPORTED, "corpus ingestion is not built yet");
}
