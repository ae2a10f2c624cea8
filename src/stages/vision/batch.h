/* stages/vision/batch.h - the image-batch payload that data.* and vision.* stages exchange.
 *
 * One cb_buffer (host memory) holds one batch:
 *
 *   [cb_image_batch header][int32 labels[n]][cb_image_desc desc[n]][pad to 64][pixel data]
 *
 * Three layouts:
 *   CB_BATCH_ENCODED  each image is the bytes of a file (JPEG or PNG) as read from disk;
 *                     desc[i].bytes is its size, h/w/c are 0 until decoded.
 *   CB_BATCH_U8_HWC   decoded 8-bit images, interleaved channels (HWC), each its own size
 *                     (desc[i].h/w/c); what a decoder produces.
 *   CB_BATCH_F32_NCHW float32 NCHW, every image header.c x header.h x header.w, contiguous
 *                     from data_offset (64-byte aligned): what a model consumes. desc[] still
 *                     exists (each h/w/c equal to the header's, offset = i * image bytes).
 * desc[i].offset is relative to data_offset. Source paths (data.images) are stored inside the
 * pixel data too, after the images, NUL-terminated, so a decoder downstream can name the file it
 * fails on (ENCODED and U8_HWC only: a F32_NCHW batch's data is exactly its pixels, so its
 * name_offset is UINT64_MAX). Labels are class indices in [0, classes) or -1 when unknown.
 * split/epoch/batch name the batch's contents: the data.* stages copy them from the query, except
 * that a batch index past the split's end continues into the following epochs (docs/data.md).
 * The header is plain data written by the producer; consumers validate it with
 * cb_image_batch_check before reading (a payload is input like any other).
 *
 * Producing a batch: size the buffer with cb_image_batch_bytes(n, data_bytes) (0 on overflow),
 * then cb_image_batch_init() writes a valid header, labels -1 and empty descriptors; fill in the
 * rest. Everything here is bounds-checked arithmetic on untrusted headers.
 *
 * Thread-safety: a batch is immutable once emitted unless the holder makes the buffer writable
 * (the buffer rule in colobench/buffer.h). Header-only, libc-only (usable from plugins).
 */
#ifndef CB_STAGES_VISION_BATCH_H
#define CB_STAGES_VISION_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "colobench/buffer.h"

#define CB_IMAGE_BATCH_MAGIC 0x42494243u /* "CBIB" little-endian */
#define CB_IMAGE_BATCH_VERSION 1u

typedef enum cb_batch_layout {
    CB_BATCH_ENCODED = 0,
    CB_BATCH_U8_HWC = 1,
    CB_BATCH_F32_NCHW = 2,
} cb_batch_layout;

typedef struct cb_image_batch {
    uint32_t magic;          /* CB_IMAGE_BATCH_MAGIC */
    uint32_t version;        /* CB_IMAGE_BATCH_VERSION */
    uint32_t layout;         /* cb_batch_layout */
    uint32_t n;              /* images in the batch */
    uint32_t c, h, w;        /* F32_NCHW: every image's shape; 0 for the other layouts */
    uint32_t classes;        /* number of classes of the dataset (0 when unknown) */
    uint64_t data_offset;    /* byte offset of the pixel data from the start of the buffer */
    uint64_t data_bytes;     /* bytes of pixel data */
    int64_t split, epoch, batch; /* where the batch comes from (copied from the query) */
    char split_name[32];     /* "train", "val", ... NUL-terminated: stages that behave
                                differently in training (augmentation, weight updates) read it */
} cb_image_batch;

typedef struct cb_image_desc {
    uint32_t h, w, c;        /* decoded size (0 for ENCODED) */
    uint32_t format;         /* ENCODED: 1 = JPEG, 2 = PNG, 0 = unknown; otherwise 0 */
    uint64_t offset;         /* from data_offset */
    uint64_t bytes;          /* size of this image's data */
    uint64_t name_offset;    /* from data_offset: NUL-terminated source path (for error
                                messages), or UINT64_MAX when the image has none */
} cb_image_desc;

enum { CB_IMAGE_FORMAT_UNKNOWN = 0, CB_IMAGE_FORMAT_JPEG = 1, CB_IMAGE_FORMAT_PNG = 2 };

static inline int32_t *cb_image_batch_labels(cb_image_batch *b) {
    return (int32_t *)(void *)((unsigned char *)b + sizeof *b);
}
static inline cb_image_desc *cb_image_batch_descs(cb_image_batch *b) {
    return (cb_image_desc *)(void *)((unsigned char *)b + sizeof *b +
                                     ((sizeof(int32_t) * (size_t)b->n + 7u) & ~(size_t)7u));
}
static inline unsigned char *cb_image_batch_data(cb_image_batch *b) {
    return (unsigned char *)b + b->data_offset;
}
/* Bytes before the pixel data for n images (header, labels, descriptors, padding to 64). */
static inline size_t cb_image_batch_data_offset(uint32_t n) {
    size_t off = sizeof(cb_image_batch) + ((sizeof(int32_t) * (size_t)n + 7u) & ~(size_t)7u) +
                 sizeof(cb_image_desc) * (size_t)n;
    return (off + 63u) & ~(size_t)63u;
}

/* Bytes of a buffer holding n images and data_bytes of data; 0 when that overflows. */
static inline size_t cb_image_batch_bytes(uint32_t n, uint64_t data_bytes) {
    size_t off = cb_image_batch_data_offset(n);
    if (data_bytes > (uint64_t)(SIZE_MAX - off)) return 0;
    return off + (size_t)data_bytes;
}

/* Writes a valid empty batch into buf (at least cb_image_batch_bytes(n, data_bytes) bytes):
 * header (c/h/w 0, classes 0, split "", epoch/batch 0), labels -1, descriptors zeroed with
 * name_offset UINT64_MAX. The data itself is left as is. Returns the header. */
static inline cb_image_batch *cb_image_batch_init(cb_buffer *buf, cb_batch_layout layout,
                                                  uint32_t n, uint64_t data_bytes) {
    cb_image_batch *b = (cb_image_batch *)buf->data;
    memset(b, 0, cb_image_batch_data_offset(n));
    b->magic = CB_IMAGE_BATCH_MAGIC;
    b->version = CB_IMAGE_BATCH_VERSION;
    b->layout = (uint32_t)layout;
    b->n = n;
    b->data_offset = cb_image_batch_data_offset(n);
    b->data_bytes = data_bytes;
    int32_t *labels = cb_image_batch_labels(b);
    cb_image_desc *d = cb_image_batch_descs(b);
    for (uint32_t i = 0; i < n; i++) {
        labels[i] = -1;
        d[i].name_offset = UINT64_MAX;
    }
    return b;
}

/* Source path of image i, or NULL when it has none. Only on a batch that passed the check. */
static inline const char *cb_image_batch_name(cb_image_batch *b, uint32_t i) {
    const cb_image_desc *d = cb_image_batch_descs(b);
    if (i >= b->n || d[i].name_offset == UINT64_MAX) return NULL;
    return (const char *)cb_image_batch_data(b) + d[i].name_offset;
}

/* Name of a layout for messages ("ENCODED", ...; "unknown" outside the enum). */
static inline const char *cb_image_batch_layout_name(uint32_t layout) {
    switch (layout) {
    case CB_BATCH_ENCODED: return "ENCODED (file bytes)";
    case CB_BATCH_U8_HWC: return "U8_HWC (decoded 8-bit images)";
    case CB_BATCH_F32_NCHW: return "F32_NCHW (float tensor)";
    default: return "unknown";
    }
}

/* a * b * c in 64 bits; UINT64_MAX when it overflows (no buffer has that many bytes). */
static inline uint64_t cb__image_batch_mul3(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t ab, abc;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) return UINT64_MAX;
    return abc;
}

/* Validates a payload as an image batch: 0 when it is one, else -1 with a reason in why.
 * Checks magic, version, layout, that labels/descs/data fit in the buffer, that every
 * descriptor's [offset, offset+bytes) and name lie inside the data, sizes (without overflow),
 * and labels in [-1, classes) when classes is known. */
static inline int cb_image_batch_check(const cb_buffer *buf, const char **why) {
    const char *w = NULL;
    const cb_image_batch *b = buf && buf->data ? (const cb_image_batch *)buf->data : NULL;
    if (!b || buf->kind != CB_BUFFER_HOST) w = "no host payload";
    else if (buf->size_bytes < sizeof *b) w = "payload smaller than a batch header";
    else if (b->magic != CB_IMAGE_BATCH_MAGIC) w = "payload is not an image batch";
    else if (b->version != CB_IMAGE_BATCH_VERSION) w = "unsupported image batch version";
    else if (b->layout > CB_BATCH_F32_NCHW) w = "unknown image batch layout";
    else if (!memchr(b->split_name, 0, sizeof b->split_name)) w = "split name not terminated";
    else if (b->data_offset != cb_image_batch_data_offset(b->n) ||
             b->data_offset > buf->size_bytes || b->data_bytes > buf->size_bytes - b->data_offset)
        w = "image batch sizes do not fit its buffer";
    else if (b->layout == CB_BATCH_F32_NCHW &&
             (b->c == 0 || b->h == 0 || b->w == 0 ||
              cb__image_batch_mul3((uint64_t)b->n * b->c, (uint64_t)b->h * b->w, sizeof(float)) !=
                  b->data_bytes))
        w = "float batch size does not match n x c x h x w";
    else {
        const int32_t *lab = cb_image_batch_labels((cb_image_batch *)(void *)(uintptr_t)b);
        for (uint32_t i = 0; i < b->n && !w; i++)
            if (lab[i] < -1 || (b->classes > 0 && lab[i] >= 0 && (uint32_t)lab[i] >= b->classes))
                w = "label outside [-1, classes)";
    }
    if (!w) {
        const cb_image_desc *d = cb_image_batch_descs((cb_image_batch *)(void *)(uintptr_t)b);
        for (uint32_t i = 0; i < b->n && !w; i++)
            if (d[i].offset > b->data_bytes || d[i].bytes > b->data_bytes - d[i].offset)
                w = "image descriptor outside the batch data";
            else if (d[i].name_offset != UINT64_MAX &&
                     (d[i].name_offset >= b->data_bytes ||
                      !memchr(cb_image_batch_data((cb_image_batch *)(void *)(uintptr_t)b) +
                                  d[i].name_offset,
                              0, (size_t)(b->data_bytes - d[i].name_offset))))
                w = "image name outside the batch data";
            else if (b->layout == CB_BATCH_U8_HWC &&
                     (d[i].bytes == 0 ||
                      cb__image_batch_mul3(d[i].h, d[i].w, d[i].c) != d[i].bytes))
                w = "decoded image size does not match h x w x c";
            else if (b->layout == CB_BATCH_ENCODED && d[i].format > CB_IMAGE_FORMAT_PNG)
                w = "unknown encoded image format";
    }
    if (why) *why = w;
    return w ? -1 : 0;
}

#endif
