/* core/alloc.h - the one allocation funnel.
 *
 * Every allocation in colobench goes through these functions so tests can fail the Nth one
 * (SQLite's test_malloc idea) or any one larger than a size. The fault-injection countdown and
 * the size limit are the only process-wide mutable state outside a runtime context; they are
 * test hooks, atomic, and inert unless a test arms them.
 */
#ifndef CB_CORE_ALLOC_H
#define CB_CORE_ALLOC_H

#include <stddef.h>

void *cb_malloc(size_t size);
void *cb_calloc(size_t n, size_t size);
void *cb_realloc(void *ptr, size_t size);
void cb_free(void *ptr);
char *cb_strdup(const char *s);
char *cb_strndup(const char *s, size_t n);

/* Test hook: the n-th allocation from now (1 = the next) fails, and every one after it until
 * disarmed with n <= 0. */
void cb__alloc_fail_after(long n);

/* Test hook: every allocation (cb_malloc, cb_calloc, cb_realloc and what uses them) of more than
 * `bytes` bytes fails until disarmed with 0. Tests use it to show that a computation's memory
 * does not grow with its input: with a limit of a few MiB, anything that holds one array per
 * record fails. */
void cb__alloc_limit_bytes(size_t bytes);

/* Arena: many allocations freed together (config trees, specs). Not thread-safe. */
typedef struct cb_arena cb_arena;
cb_arena *cb_arena_create(void);
void cb_arena_destroy(cb_arena *a);                      /* NULL is a no-op */
void *cb_arena_alloc(cb_arena *a, size_t size);          /* zeroed, 16-byte aligned; NULL on OOM */
char *cb_arena_strdup(cb_arena *a, const char *s);
char *cb_arena_strndup(cb_arena *a, const char *s, size_t n);

#endif
