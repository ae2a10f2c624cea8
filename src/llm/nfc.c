/* llm/nfc.c - NFC: decompose (full canonical decompositions from the table, Hangul syllables
 * arithmetically), put each run of non-starters in canonical order (stable insertion sort by
 * combining class), then compose (UAX #15's algorithm: a character joins the last starter when
 * nothing between them blocks it and the pair has a primary composite; Hangul L+V and LV+T
 * arithmetically). Text that passes the quick check is left alone, so only stretches with
 * decomposed or reorderable characters pay for this. No state: thread-safe. */
#include "llm/nfc.h"

#include <stdint.h>
#include <string.h>

#include "colobench/error.h"
#include "core/alloc.h"
#include "llm/unicode.h"

enum {
    S_BASE = 0xAC00,
    L_BASE = 0x1100,
    V_BASE = 0x1161,
    T_BASE = 0x11A7,
    L_COUNT = 19,
    V_COUNT = 21,
    T_COUNT = 28,
    N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

static int ccc_of(uint32_t cp) {
    return cp < 0x300 ? 0 : cb__uni_lookup(cb__uni_ccc, cb__uni_nccc, cp);
}

static int not_quick_yes(uint32_t cp) {
    return cp < 0x300 ? 0 : cb__uni_lookup(cb__uni_qc, cb__uni_nqc, cp);
}

int cb__nfc_quick(const unsigned char *s, size_t n) {
    int last = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            last = 0;
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = cb__uni_decode(s + i, n - i, &cp);
        if (!l)
            return 0;
        i += l;
        int c = ccc_of(cp);
        if ((c && last > c) || not_quick_yes(cp))
            return 0;
        last = c;
    }
    return 1;
}

static const cb__uni_decomp_ent *decomp_of(uint32_t cp) {
    size_t lo = 0, hi = cb__uni_ndecomp;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < cb__uni_decomp[mid].cp)
            hi = mid;
        else if (cp > cb__uni_decomp[mid].cp)
            lo = mid + 1;
        else
            return &cb__uni_decomp[mid];
    }
    return NULL;
}

/* The primary composite of a + b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = cb__uni_ncomp;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const cb__uni_comp_ent *e = &cb__uni_comp[mid];
        if (a < e->first || (a == e->first && b < e->second))
            hi = mid;
        else if (a > e->first || b > e->second)
            lo = mid + 1;
        else
            return e->composite;
    }
    return 0;
}

int cb__nfc_normalize(const unsigned char *s, size_t n, char **out, size_t *out_len) {
    /* Full canonical decompositions give at most 1.5 code points per UTF-8 byte (Unicode 14:
     * 4 from a 3-byte character; Hangul 3 from 3 bytes); 2 per byte is a safe bound. */
    size_t cap = n * 2 + 4, k = 0;
    uint32_t *cps = cb_malloc(cap * 2 * sizeof *cps); /* second half: sorting scratch */
    if (!cps)
        return CB_ENOMEM;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = cb__uni_decode(s + i, n - i, &cp);
        if (!l)
            cp = 0xfffd, l = 1; /* callers validate first */
        i += l;
        const cb__uni_decomp_ent *d;
        if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
            uint32_t si = cp - S_BASE;
            cps[k++] = L_BASE + si / N_COUNT;
            cps[k++] = V_BASE + (si % N_COUNT) / T_COUNT;
            if (si % T_COUNT)
                cps[k++] = T_BASE + si % T_COUNT;
        } else if (cp >= 0xc0 && (d = decomp_of(cp)) != NULL) {
            for (unsigned j = 0; j < d->len; j++)
                cps[k++] = cb__uni_decomp_pool[d->off + j];
        } else {
            cps[k++] = cp;
        }
    }
    /* canonical order: each run of non-starters stably sorted by class (counting sort: linear
     * however long the run) */
    uint32_t *tmp = cps + cap;
    for (size_t i = 0; i < k;) {
        if (!ccc_of(cps[i])) {
            i++;
            continue;
        }
        size_t j = i, sorted = 1;
        int prev = 0;
        for (; j < k && ccc_of(cps[j]); j++) {
            int c = ccc_of(cps[j]);
            sorted &= c >= prev;
            prev = c;
        }
        if (!sorted) {
            size_t count[257] = {0};
            for (size_t q = i; q < j; q++)
                count[ccc_of(cps[q]) + 1]++;
            for (int c = 1; c < 257; c++)
                count[c] += count[c - 1];
            for (size_t q = i; q < j; q++)
                tmp[count[ccc_of(cps[q])]++] = cps[q];
            memcpy(cps + i, tmp, (j - i) * sizeof *cps);
        }
        i = j;
    }
    /* compose */
    size_t w = 0, starter = 0;
    int have_starter = 0, last = 0;
    for (size_t i = 0; i < k; i++) {
        uint32_t cp = cps[i];
        int c = ccc_of(cp);
        uint32_t comp = have_starter && (last < c || (last == 0 && w == starter + 1))
                            ? compose(cps[starter], cp)
                            : 0;
        if (comp) {
            cps[starter] = comp;
            continue;
        }
        if (c == 0) {
            starter = w;
            have_starter = 1;
        }
        last = c;
        cps[w++] = cp;
    }
    char *o = cb_malloc(w * 4 + 1);
    if (!o) {
        cb_free(cps);
        return CB_ENOMEM;
    }
    size_t ol = 0;
    for (size_t i = 0; i < w; i++)
        ol += cb__uni_encode(o + ol, cps[i]);
    cb_free(cps);
    *out = o;
    *out_len = ol;
    return 0;
}
