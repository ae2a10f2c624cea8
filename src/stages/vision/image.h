/* stages/vision/image.h - JPEG/PNG decoding shared by vision.decode and data.images.
 *
 * Decoding is two-phase so a batch is allocated once: probe every image for its size, allocate
 * the U8_HWC batch, decode each image straight into its place. Output is always 8-bit RGB
 * (3 channels): grayscale is replicated, palettes expanded, alpha dropped (like PIL's
 * convert("RGB")), 16-bit PNG scaled to 8 bits; no gamma or colour-profile conversion.
 * Corrupt input is an error with the decoder's message, never a crash and never a partly gray
 * image: libjpeg's error_exit longjmps out and its warnings (e.g. "Premature end of JPEG file"
 * for a truncated file) count as errors; libpng errors longjmp out, its warnings are ignored.
 *
 * Thread-safety: every function is reentrant (no shared state; libjpeg/libpng objects live on
 * the caller's stack). Ownership: inputs are borrowed; outputs are written into caller memory or
 * returned as new buffer references.
 */
#ifndef CB_STAGES_VISION_IMAGE_H
#define CB_STAGES_VISION_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/stage.h"
#include "stages/vision/batch.h"

#define CB_IMAGE_MAX_SIDE 65535u
#define CB_IMAGE_MAX_PIXELS (UINT64_C(1) << 28)

/* CB_IMAGE_FORMAT_JPEG / _PNG from the first bytes, or CB_IMAGE_FORMAT_UNKNOWN. */
int cb__image_sniff(const unsigned char *data, size_t size);

/* Width and height of an encoded image (format 0: sniffed). 0, or CB_EINVAL with the reason
 * in msg ("JPEG: Not a JPEG file: starts with 0x47 0x41", ...). */
int cb__image_probe(const cb_host *host, const unsigned char *data, size_t size, int format,
                    uint32_t *w, uint32_t *h, char *msg, size_t msg_size);

/* Decodes into out (w * h * 3 bytes, RGB, rows top to bottom), w and h as probed. */
int cb__image_decode(const cb_host *host, const unsigned char *data, size_t size, int format,
                     uint32_t w, uint32_t h, unsigned char *out, char *msg, size_t msg_size);

/* An ENCODED batch (checked by the caller) to a new U8_HWC batch with the same header fields,
 * labels and image names. Errors name the image (its path when the batch has one). */
int cb__image_decode_batch(const cb_host *host, const cb_buffer *in, cb_buffer **out,
                           cb_error *err);

#endif
