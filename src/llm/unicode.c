/* llm/unicode.c - Unicode range look-up (binary search over unicode_tab.c; ASCII first),
 * White_Space, a strict UTF-8 decoder and an encoder. Constant data only: thread-safe. */
#include "llm/unicode.h"

int cb__uni_lookup(const cb__uni_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return r[mid].cls;
    }
    return 0;
}

int cb__uni_gc(uint32_t cp) {
    if (cp < 128) {
        if (cp >= 'a' && cp <= 'z')
            return CB_UNI_GC_LL;
        if (cp >= 'A' && cp <= 'Z')
            return CB_UNI_GC_LU;
        return cp >= '0' && cp <= '9' ? CB_UNI_GC_N : 0;
    }
    return cb__uni_lookup(cb__uni_ranges, cb__uni_nranges, cp);
}

int cb__uni_class(uint32_t cp) {
    static const unsigned char coarse[8] = {CB_UNI_OTHER,  CB_UNI_LETTER, CB_UNI_LETTER,
                                            CB_UNI_LETTER, CB_UNI_LETTER, CB_UNI_LETTER,
                                            CB_UNI_NUMBER, CB_UNI_MARK};
    return coarse[cb__uni_gc(cp)];
}

/* White_Space (PropList.txt, unchanged since Unicode 6.3): what \s matches in Rust's regex and,
 * as Zs, Zl, Zp plus 9-D and 85, in Oniguruma. */
int cb__uni_space(uint32_t cp) {
    if (cp < 128)
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0d);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

size_t cb__uni_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

size_t cb__uni_encode(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}
