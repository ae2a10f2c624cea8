/* core/host.c - payload buffers and the base of the cb_host table (see host.h).
 *
 * Buffers are one allocation (header + bytes). Refcounts are atomic: increments relaxed (a new
 * reference is made from an existing one), decrements acq_rel so the freeing thread sees every
 * write made through other references. */
#include "core/host.h"

#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

static void cb__buffer_free(cb_buffer *buf) { cb_free(buf); }

cb_buffer *cb_buffer_new(size_t size_bytes) {
    cb_buffer *b = cb_malloc(sizeof(cb_buffer) + size_bytes);
    if (!b) return NULL;
    memset(b, 0, sizeof *b);
    b->abi_major = CB_STAGE_ABI_MAJOR;
    b->struct_size = sizeof(cb_buffer);
    b->refcount = 1;
    b->data = (unsigned char *)(b + 1);
    b->size_bytes = size_bytes;
    b->kind = CB_BUFFER_HOST;
    b->device = -1;
    b->free_fn = cb__buffer_free;
    return b;
}

void cb_buffer_ref(cb_buffer *buf) {
    if (buf) atomic_fetch_add_explicit((_Atomic uint64_t *)&buf->refcount, 1, memory_order_relaxed);
}

void cb_buffer_unref(cb_buffer *buf) {
    if (!buf) return;
    if (atomic_fetch_sub_explicit((_Atomic uint64_t *)&buf->refcount, 1, memory_order_acq_rel) == 1)
        buf->free_fn(buf);
}

int cb_buffer_make_writable(cb_buffer **buf) {
    cb_buffer *b = *buf;
    if (!b) return CB_OK;
    if (atomic_load_explicit((_Atomic uint64_t *)&b->refcount, memory_order_acquire) == 1) return CB_OK;
    if (b->kind != CB_BUFFER_HOST && b->kind != CB_BUFFER_PINNED_HOST) return CB_EUNSUPPORTED;
    cb_buffer *c = cb_buffer_new(b->size_bytes);
    if (!c) return CB_ENOMEM;
    memcpy(c->data, b->data, b->size_bytes);
    cb_buffer_unref(b);
    *buf = c;
    return CB_OK;
}

static void cb__host_log(int level, const char *stage_name, const char *msg) {
    cb_logf(NULL, level, stage_name, "%s", msg);
}

void cb_host_init_base(cb_host *host) {
    memset(host, 0, sizeof *host);
    host->abi_major = CB_STAGE_ABI_MAJOR;
    host->struct_size = sizeof(cb_host);
    host->log = cb__host_log;
    host->alloc = cb_malloc;
    host->free = cb_free;
    host->buffer_new = cb_buffer_new;
    host->buffer_ref = cb_buffer_ref;
    host->buffer_unref = cb_buffer_unref;
    host->buffer_make_writable = cb_buffer_make_writable;
    host->now_ns = cb_clock_now_ns;
}
