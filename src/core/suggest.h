/* core/suggest.h - "did you mean" by edit distance. Pure functions. */
#ifndef CB_CORE_SUGGEST_H
#define CB_CORE_SUGGEST_H

#include <stddef.h>

/* Damerau-Levenshtein (optimal string alignment) distance, capped at 64-character inputs. */
int cb_edit_distance(const char *a, const char *b);

/* The candidate closest to word if it is close enough (distance <= max(2, len/3)), else NULL. */
const char *cb_suggest(const char *word, const char *const *candidates, size_t n);

#endif
