/* colobench/buffer.h - reference-counted payload buffers.
 *
 * A payload travels between stages without copying: a hand-off moves the reference, a fan-out
 * adds one reference per extra copy. A stage that changes a payload it did not create must first
 * make it private (host->buffer_make_writable), which copies only when it is shared.
 * The layout is part of the stage ABI (plugins read data/size directly); grow only at the end.
 * Thread-safety: the refcount is atomic; the bytes are not protected, hence the rule above.
 */
#ifndef COLOBENCH_BUFFER_H
#define COLOBENCH_BUFFER_H

#include <stddef.h>
#include <stdint.h>

typedef enum cb_buffer_kind {
    CB_BUFFER_HOST = 0,        /* malloc'd host memory */
    CB_BUFFER_PINNED_HOST = 1, /* page-locked host memory (GPU backends) */
    CB_BUFFER_DEVICE = 2,      /* device memory: data is a device pointer */
} cb_buffer_kind;

typedef struct cb_buffer cb_buffer;
typedef void (*cb_buffer_free_fn)(cb_buffer *buf);

struct cb_buffer {
    uint32_t abi_major;        /* CB_STAGE_ABI_MAJOR of the creator */
    uint32_t struct_size;      /* sizeof(cb_buffer) of the creator */
    uint64_t refcount;         /* atomic; use the host functions, never touch directly */
    void *data;                /* size_bytes of payload */
    size_t size_bytes;
    cb_buffer_kind kind;
    int device;                /* device ordinal for DEVICE buffers, -1 otherwise */
    cb_buffer_free_fn free_fn; /* releases data and the struct; set by the creator */
    void *owner;               /* creator's context for free_fn */
};

#endif
