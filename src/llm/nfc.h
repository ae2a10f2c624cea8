/* llm/nfc.h - Unicode Normalization Form C (UAX #15) over the generated tables of unicode_tab.c
 * (Unicode 14.0.0), for tokenizers whose normalizer is NFC (Qwen2's). Pure functions: thread-safe.
 * Input is valid UTF-8 (the caller checks). */
#ifndef CB_LLM_NFC_H
#define CB_LLM_NFC_H

#include <stddef.h>

/* 1 when s[0..n) is certainly in NFC already (the quick check: no code point with
 * NFC_Quick_Check No or Maybe, combining classes in canonical order), else 0. */
int cb__nfc_quick(const unsigned char *s, size_t n);

/* NFC of s[0..n) in a new buffer (cb_malloc; the caller frees it), *out_len its length.
 * 0, or CB_ENOMEM. */
int cb__nfc_normalize(const unsigned char *s, size_t n, char **out, size_t *out_len);

#endif
