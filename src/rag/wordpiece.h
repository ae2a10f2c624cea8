/* rag/wordpiece.h - BERT's WordPiece tokenizer (BertTokenizer / tokenizers' BertWordPieceTokenizer)
 * for a vocab.txt: the ids sentence-transformers and transformers give for the same text.
 *
 * Encoding, as Hugging Face's BertNormalizer + BertPreTokenizer + WordPiece + TemplateProcessing:
 *   1. clean: drop NUL, U+FFFD and control characters; whitespace becomes a space;
 *   2. CJK ideographs get spaces around them;
 *   3. lowercase and strip accents (NFD, drop combining marks) when do_lower_case;
 *   4. split on whitespace and around every punctuation character (ASCII punctuation and the
 *      Unicode P* categories);
 *   5. each word: greedy longest-match-first over the vocabulary, continuations prefixed "##";
 *      a word with no split, or longer than 100 characters, becomes [UNK];
 *   6. [CLS] ... [SEP], truncated to max_tokens (the special tokens included).
 *
 * Ownership and threads: a cb_wordpiece is immutable after loading; any number of threads may
 * encode with one at once. Errors name the file and line ("vocab.txt:17: ...").
 */
#ifndef CB_RAG_WORDPIECE_H
#define CB_RAG_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

#define CB_WP_FILE_MAX_BYTES (16u << 20) /* vocab.txt */
#define CB_WP_VOCAB_MAX (1 << 20)
#define CB_WP_TOKEN_MAX_BYTES 256        /* bytes of one vocabulary entry */

typedef struct cb_wordpiece cb_wordpiece;

/* Loads vocab.txt (one token per line, id = line number from 0). do_lower_case as the model's
 * tokenizer_config.json says (true for all-MiniLM-L6-v2 and bge-small-en-v1.5). Needs [CLS],
 * [SEP], [UNK] and [PAD] in the vocabulary. CB_EIO, CB_ECONFIG naming file and line, CB_ENOMEM. */
int cb_wp_load(const char *vocab_path, int do_lower_case, cb_wordpiece **out, cb_error *err);

/* A vocabulary of `n` tokens made up for random-weight models: the special tokens, the ASCII
 * letters and digits, and made-up pieces, deterministic in seed. */
int cb_wp_synthetic(int32_t n, uint64_t seed, cb_wordpiece **out, cb_error *err);

void cb_wp_free(cb_wordpiece *t); /* NULL is a no-op */

/* Encodes text[0..len) (UTF-8; invalid bytes are dropped like control characters) into ids:
 * [CLS] pieces [SEP], at most max_tokens ids (>= 2; the pieces are truncated, [SEP] kept).
 * Returns the number of ids written (>= 2). ids must hold max_tokens. */
int cb_wp_encode(const cb_wordpiece *t, const char *text, size_t len, int32_t *ids,
                 int max_tokens);

int32_t cb_wp_vocab_size(const cb_wordpiece *t);
int32_t cb_wp_id(const cb_wordpiece *t, const char *token); /* -1 when absent */

#endif
