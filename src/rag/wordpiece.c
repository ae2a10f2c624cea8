/* rag/wordpiece.c - placeholder until the WordPiece tokenizer lands. */
#include "rag/wordpiece.h"

int cb_wp_load(const char *vocab_path, int do_lower_case, cb_wordpiece **out, cb_error *err) {
    (void)vocab_path, (void)do_lower_case;
    *out = NULL;
    return cb_error_set(err, CB_EUNSUPPORTED, "the WordPiece tokenizer is not built yet");
}
int cb_wp_synthetic(int32_t n, uint64_t seed, cb_wordpiece **out, cb_error *err) {
    (void)n, (void)seed;
    *out = NULL;
    return cb_error_set(err, CB_EUNSUPPORTED, "the WordPiece tokenizer is not built yet");
}
void cb_wp_free(cb_wordpiece *t) { (void)t; }
int cb_wp_encode(const cb_wordpiece *t, const char *text, size_t len, int32_t *ids,
                 int max_tokens) {
    (void)t, (void)text, (void)len, (void)ids, (void)max_tokens;
    return -1;
}
int32_t cb_wp_vocab_size(const cb_wordpiece *t) { (void)t; return 0; }
int32_t cb_wp_id(const cb_wordpiece *t, const char *token) { (void)t, (void)token; return -1; }
