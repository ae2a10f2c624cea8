/* rag/wordpiece.h - BERT's WordPiece tokenizer (BertTokenizer / tokenizers' BertWordPieceTokenizer)
 * for a vocab.txt: the ids sentence-transformers and transformers give for the same text.
 *
 * Encoding, as Hugging Face's BertNormalizer + BertPreTokenizer + WordPiece + TemplateProcessing
 * (checked id for id against tokenizers on all-MiniLM-L6-v2 by tests/test_rag_wordpiece.c):
 *   0. the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] written in the text are those tokens
 *      (tokenizers' added tokens, matched in the raw text);
 *   1. clean: drop NUL, U+FFFD and control/format characters (Cc, Cf, Co; VT and FF too), the
 *      other whitespace becomes a space; invalid UTF-8 bytes are dropped one by one;
 *   2. CJK ideographs get spaces around them;
 *   3. strip accents (NFD, drop Mn) and lowercase when do_lower_case;
 *   4. split on whitespace and around every punctuation character (ASCII punctuation and the
 *      Unicode P* categories);
 *   5. each word: greedy longest-match-first over the vocabulary, continuations prefixed "##";
 *      a word with no split, or longer than 100 characters, becomes [UNK];
 *   6. [CLS] ... [SEP], truncated to max_tokens (the special tokens included).
 * Steps 1-4 come from a per-code-point table generated from tokenizers itself
 * (rag/wp_tab_gen.py), so they follow its Unicode versions exactly.
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
 * tokenizer_config.json says (true for all-MiniLM-L6-v2 and bge-small-en-v1.5; false is refused
 * with CB_EUNSUPPORTED for now). Needs [CLS], [SEP], [UNK] and [PAD] in the vocabulary. Lines
 * lose trailing blanks and "\r"; a repeated token keeps its last id (as tokenizers does).
 * CB_EIO, CB_ECONFIG naming file and line (too long token, NUL byte, empty file, missing
 * special token, over the limits), CB_ENOMEM. */
int cb_wp_load(const char *vocab_path, int do_lower_case, cb_wordpiece **out, cb_error *err);

/* A vocabulary of `n` tokens (4 to CB_WP_VOCAB_MAX) made up for random-weight models: [PAD] 0,
 * [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103 (0 to 4 when n < 104), printable ASCII characters
 * whole and letters/digits as "##" continuations, then made-up letter pieces; deterministic in
 * seed. CB_EINVAL, CB_ENOMEM. */
int cb_wp_synthetic(int32_t n, uint64_t seed, cb_wordpiece **out, cb_error *err);

void cb_wp_free(cb_wordpiece *t); /* NULL is a no-op */

/* Encodes text[0..len) (UTF-8; invalid bytes are dropped like control characters) into ids:
 * [CLS] pieces [SEP], at most max_tokens ids (>= 2; the pieces are truncated, [SEP] kept).
 * Returns the number of ids written (>= 2), or -1 when t is NULL or max_tokens < 2. ids must
 * hold max_tokens. Allocates nothing; stops reading once max_tokens is reached. */
int cb_wp_encode(const cb_wordpiece *t, const char *text, size_t len, int32_t *ids,
                 int max_tokens);

int32_t cb_wp_vocab_size(const cb_wordpiece *t);
int32_t cb_wp_id(const cb_wordpiece *t, const char *token); /* -1 when absent */

#endif
