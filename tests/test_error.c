/* Tests of core/error.c and core/alloc.c basics. */
#include "harness.h"

#include "colobench/error.h"
#include "core/alloc.h"

static void test_error_format(void) {
    cb_error e;
    cb_error_clear(&e);
    cb_error_set(&e, CB_ECONFIG, "expected integer, got \"%s\"", "64k");
    cb_error_at(&e, "bench.yaml", 12, 7);
    cb_error_key(&e, "pipelines[0].stages[2].workers");
    char buf[1024];
    cb_error_format(&e, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "bench.yaml:12:7: pipelines[0].stages[2].workers: expected integer, got \"64k\"");
    cb_error_prefix(&e, "stage %s", "x");
    cb_error_format(&e, buf, sizeof buf);
    CB_CHECK_CONTAINS(buf, "stage x: expected integer");
    CB_CHECK_STR_EQ(cb_strerror(CB_ENOMEM), "out of memory");
    CB_CHECK_STR_EQ(cb_strerror(0), "ok");
}

static void test_alloc_fault_injection(void) {
    cb__alloc_fail_after(2);
    void *a = cb_malloc(8);
    void *b = cb_malloc(8);
    CB_CHECK(a != NULL);
    CB_CHECK(b == NULL);
    cb__alloc_fail_after(0);
    void *c = cb_malloc(8);
    CB_CHECK(c != NULL);
    cb_free(a);
    cb_free(c);
}

static void test_arena(void) {
    cb_arena *ar = cb_arena_create();
    char *s = cb_arena_strdup(ar, "hello");
    CB_CHECK_STR_EQ(s, "hello");
    unsigned char *big = cb_arena_alloc(ar, 200000);
    CB_CHECK(big != NULL);
    CB_CHECK_EQ_INT(big[199999], 0);
    CB_CHECK_EQ_INT(((uintptr_t)big) % 16, 0);
    cb_arena_destroy(ar);
}

int main(void) {
    CB_RUN(test_error_format);
    CB_RUN(test_alloc_fault_injection);
    CB_RUN(test_arena);
    return cb_test_done();
}
