/* tests/llm_capture.h - the store behind the test.capture stages of the llm.* tests: validates a
 * query's LLM request payload and keeps a copy of it by query id.
 *
 * Define MAXQ (the largest query id + 1 kept) before including. One pipeline at a time and one
 * capture worker, so no locking; cap_reset frees every copy between runs.
 */
#ifndef CB_TESTS_LLM_CAPTURE_H
#define CB_TESTS_LLM_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colobench/stage.h"
#include "llm/request.h"

static struct {
    size_t n;                 /* queries seen */
    unsigned char *req[MAXQ]; /* copy of each query's payload, by query id */
} g_cap;

static void cap_reset(void) {
    for (size_t i = 0; i < MAXQ; i++) free(g_cap.req[i]);
    memset(&g_cap, 0, sizeof g_cap);
}

static cb_llm_request *cap_get(size_t id) {
    return id < MAXQ ? (cb_llm_request *)(void *)g_cap.req[id] : NULL;
}

/* Checks q's payload as a request and keeps a copy: CB_OK, or CB_EINVAL with err set. */
static int cap_store(const cb_query *q, cb_error *err) {
    const char *why = NULL;
    if (cb_llm_request_check(q->payload, &why) != 0 || q->id >= MAXQ) {
        err->code = CB_EINVAL;
        snprintf(err->msg, sizeof err->msg, "capture: %s", why ? why : "query id too large");
        return CB_EINVAL;
    }
    unsigned char *c = malloc(q->payload->size_bytes);
    if (!c) abort();
    memcpy(c, q->payload->data, q->payload->size_bytes);
    free(g_cap.req[q->id]);
    g_cap.req[q->id] = c;
    g_cap.n++;
    return CB_OK;
}

#endif
