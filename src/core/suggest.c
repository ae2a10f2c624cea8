/* core/suggest.c - "did you mean" by edit distance (see suggest.h).
 *
 * Design: optimal string alignment distance (Levenshtein plus adjacent transpositions) over at
 * most CB_SUGGEST_MAX characters of each input, computed with three rolling rows on the stack;
 * longer inputs are truncated, which only makes suggestions for very long words less precise.
 * Thread-safety: pure functions, no state. Ownership: cb_suggest returns one of the caller's
 * candidate pointers (or NULL); nothing is allocated.
 */
#include "core/suggest.h"

#include <string.h>

#define CB_SUGGEST_MAX 64

static int min3(int a, int b, int c) {
    int m = a < b ? a : b;
    return m < c ? m : c;
}

int cb_edit_distance(const char *a, const char *b) {
    if (!a) a = "";
    if (!b) b = "";
    size_t la = strnlen(a, CB_SUGGEST_MAX), lb = strnlen(b, CB_SUGGEST_MAX);
    int rows[3][CB_SUGGEST_MAX + 1];
    int *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int d = min3(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < d)
                d = prev2[j - 2] + 1;
            cur[j] = d;
        }
        int *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

const char *cb_suggest(const char *word, const char *const *candidates, size_t n) {
    if (!word || !candidates) return NULL;
    int len = (int)strnlen(word, CB_SUGGEST_MAX);
    int limit = len / 3 > 2 ? len / 3 : 2;
    const char *best = NULL;
    int best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        if (!candidates[i]) continue;
        int d = cb_edit_distance(word, candidates[i]);
        if (d < best_d && d < len) { /* never "suggest" a word that shares nothing */
            best_d = d;
            best = candidates[i];
        }
    }
    return best;
}
