/* rag/corpus.h - a synthetic RAG corpus with questions whose answer passage is known.
 *
 * Passage j is about one made-up entity whose name is a bijective function of j (four syllables
 * from 64, over a permutation of 2^24 ids: up to 16,777,216 passages with distinct names): one
 * fact sentence about it from a few templates (what it is known for, where it lies, who founded it
 * and when, who leads it), then filler sentences from a fixed list until the passage has its
 * drawn length in words. The length is drawn from the chosen distribution (fixed, uniform,
 * normal, lognormal) with the given mean and spread, clamped to [min_words, max_words]. Question
 * i asks the fact of passage answer_id(i) = a seeded hash of i over the corpus, in other words
 * ("What is Velmora known for?" for "Velmora is a river town known for its glassworks..."), so a
 * good sentence encoder and BM25 both find the answer passage by its entity.
 *
 * Everything is a pure function of (options, index): no state, any passage or question can be
 * made alone, in any order, by any thread (what rag.questions and the writers do), and memory
 * stays flat for any corpus size.
 */
#ifndef CB_RAG_CORPUS_H
#define CB_RAG_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#define CB_RAG_CORPUS_MAX_PASSAGES (1ll << 24)
#define CB_RAG_CORPUS_MAX_WORDS 4096
/* Bytes a passage of max_words needs at most (words are at most 15 bytes plus a space). */
#define CB_RAG_CORPUS_PASSAGE_CAP(max_words) ((size_t)(max_words) * 16 + 256)
#define CB_RAG_CORPUS_TITLE_CAP 32
#define CB_RAG_CORPUS_QUESTION_CAP 128

enum { CB_RAG_LEN_FIXED, CB_RAG_LEN_UNIFORM, CB_RAG_LEN_NORMAL, CB_RAG_LEN_LOGNORMAL };

typedef struct cb_rag_corpus_opts {
    int64_t passages;    /* [1, CB_RAG_CORPUS_MAX_PASSAGES] */
    int length_dist;     /* CB_RAG_LEN_* */
    double mean_words;   /* > 0 */
    double spread;       /* uniform: +- spread * mean; normal: sd = spread * mean; lognormal:
                            sigma of the log (the median is mean_words) */
    int min_words, max_words; /* 1 <= min <= max <= CB_RAG_CORPUS_MAX_WORDS */
    uint64_t seed;
} cb_rag_corpus_opts;

#define CB_RAG_CORPUS_OPTS_DEFAULT {1000, CB_RAG_LEN_LOGNORMAL, 80, 0.4, 20, 400, 1}

/* "": valid; else what is wrong, naming the field. */
const char *cb_rag_corpus_check(const cb_rag_corpus_opts *o);

/* Passage id's text into buf (cap >= CB_RAG_CORPUS_PASSAGE_CAP(max_words)); its length. Its title
 * (the entity's name) into title (CB_RAG_CORPUS_TITLE_CAP) when not NULL. */
size_t cb_rag_corpus_passage(const cb_rag_corpus_opts *o, int64_t id, char *buf, size_t cap,
                             char *title);

/* Question i into buf (CB_RAG_CORPUS_QUESTION_CAP); its length; *answer_id its passage. */
size_t cb_rag_corpus_question(const cb_rag_corpus_opts *o, int64_t i, char *buf, size_t cap,
                              int64_t *answer_id);

/* Writes s[0..n) as a JSON string (quotes included) into out (cap >= 6 * n + 3); its length. */
size_t cb_rag_json_string(const char *s, size_t n, char *out, size_t cap);

#endif
