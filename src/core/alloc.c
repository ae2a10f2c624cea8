/* core/alloc.c - allocation funnel with test fault injection, and arenas.
 *
 * The fault countdown and the single-allocation size limit are process-wide atomics (test
 * hooks, see alloc.h), inert unless armed. Arenas are chunk
 * lists; allocations are zeroed and 16-byte aligned; nothing is freed before the arena. */
#include "core/alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long cb__fail_countdown; /* 0 = disarmed; relaxed: tests arm it single-threaded */

void cb__alloc_fail_after(long n) { atomic_store_explicit(&cb__fail_countdown, n > 0 ? n : 0, memory_order_relaxed); }

static int cb__should_fail(void) {
    long c = atomic_load_explicit(&cb__fail_countdown, memory_order_relaxed);
    if (c == 0) return 0;
    if (c == 1) return 1; /* stays armed: every later allocation fails too */
    atomic_fetch_sub_explicit(&cb__fail_countdown, 1, memory_order_relaxed);
    return 0;
}

static _Atomic size_t cb__limit_bytes; /* 0 = disarmed; relaxed, like the countdown */

void cb__alloc_limit_bytes(size_t bytes) {
    atomic_store_explicit(&cb__limit_bytes, bytes, memory_order_relaxed);
}

/* n * size above the armed limit (an overflowing product is above any limit). */
static int cb__over_limit(size_t n, size_t size) {
    size_t limit = atomic_load_explicit(&cb__limit_bytes, memory_order_relaxed);
    if (limit == 0) return 0;
    if (size != 0 && n > SIZE_MAX / size) return 1;
    return n * size > limit;
}

void *cb_malloc(size_t size) {
    if (cb__over_limit(1, size) || cb__should_fail()) return NULL;
    return malloc(size ? size : 1);
}

void *cb_calloc(size_t n, size_t size) {
    if (cb__over_limit(n, size) || cb__should_fail()) return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *cb_realloc(void *ptr, size_t size) {
    if (cb__over_limit(1, size) || cb__should_fail()) return NULL;
    return realloc(ptr, size ? size : 1);
}
void cb_free(void *ptr) { free(ptr); }

char *cb_strndup(const char *s, size_t n) {
    if (!s) return NULL;
    size_t len = strnlen(s, n);
    char *d = cb_malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *cb_strdup(const char *s) { return s ? cb_strndup(s, SIZE_MAX) : NULL; }

typedef struct cb_arena_chunk {
    struct cb_arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} cb_arena_chunk;

struct cb_arena {
    cb_arena_chunk *head;
};

#define CB_ARENA_CHUNK_BYTES (64u * 1024u)

cb_arena *cb_arena_create(void) { return cb_calloc(1, sizeof(cb_arena)); }

void cb_arena_destroy(cb_arena *a) {
    if (!a) return;
    for (cb_arena_chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        cb_free(c);
    }
    cb_free(a);
}

void *cb_arena_alloc(cb_arena *a, size_t size) {
    if (!a) return NULL;
    size = (size + 15u) & ~(size_t)15u;
    if (size == 0) size = 16;
    cb_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > CB_ARENA_CHUNK_BYTES ? size : CB_ARENA_CHUNK_BYTES;
        c = cb_malloc(sizeof(cb_arena_chunk) + cap);
        if (!c) return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *cb_arena_strndup(cb_arena *a, const char *s, size_t n) {
    if (!s) return NULL;
    size_t len = strnlen(s, n);
    char *d = cb_arena_alloc(a, len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *cb_arena_strdup(cb_arena *a, const char *s) { return cb_arena_strndup(a, s, SIZE_MAX); }
