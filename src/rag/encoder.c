/* rag/encoder.c - placeholder until the encoder lands: every call says it is not built. */
#include "rag/encoder.h"

#include "colobench/error.h"

int cb_rag_encoder_open(const cb_rag_encoder_opts *o, cb_rag_encoder **out, cb_error *err) {
    (void)o;
    *out = NULL;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG encoder is not built yet");
}
void cb_rag_encoder_free(cb_rag_encoder *e) { (void)e; }
int cb_rag_encoder_dim(const cb_rag_encoder *e) { (void)e; return 0; }
int cb_rag_encoder_encode(cb_rag_encoder *e, const char *const *texts, const size_t *lens, int n,
                          float *out, int64_t *tokens, cb_error *err) {
    (void)e, (void)texts, (void)lens, (void)n, (void)out, (void)tokens;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG encoder is not built yet");
}
int cb_rag_find_minilm(char *dir, size_t cap) { (void)dir, (void)cap; return -1; }
int cb_rag_encoder_encode_ids(cb_rag_encoder *e, const int32_t *ids, const int64_t *offs,
                              const int32_t *lens, int n, float *out, cb_error *err) {
    (void)e, (void)ids, (void)offs, (void)lens, (void)n, (void)out;
    return cb_error_set(err, CB_EUNSUPPORTED, "the RAG encoder is not built yet");
}
