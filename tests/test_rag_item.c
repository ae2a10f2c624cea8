/* Tests of the RAG payload (src/rag/item.h): a built item reads back region by region, and a
 * damaged header is refused with a reason, never read out of bounds. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "rag/item.h"

static cb_buffer *buf_new(size_t n) {
    cb_buffer *b = calloc(1, sizeof *b);
    b->data = calloc(1, n ? n : 1);
    b->size_bytes = n;
    b->refcount = 1;
    b->kind = CB_BUFFER_HOST;
    b->device = -1;
    return b;
}
static void buf_unref(cb_buffer *b) {
    if (b && --b->refcount == 0) {
        free(b->data);
        free(b);
    }
}
static const cb_host k_host = {.abi_major = 1, .struct_size = sizeof(cb_host),
                               .buffer_new = buf_new, .buffer_unref = buf_unref};

static void test_roundtrip(void) {
    float emb[3] = {0.5f, -1.0f, 2.0f};
    cb_rag_hit hits[2] = {{.id = 7, .score = 0.9f, .text_off = 0, .text_bytes = 5},
                          {.id = 9, .score = 0.1f, .source = CB_RAG_SRC_KEYWORD, .text_off = 5,
                           .text_bytes = 3, .rank = 1}};
    cb_rag_view v = {.index = 4, .answer_id = 9, .rewrites = 1, .grade = CB_RAG_GRADE_YES,
                     .emb = emb, .dim = 3, .hits = hits, .n_hits = 2,
                     .question = "why?", .question_bytes = 4, .query = "why", .query_bytes = 3,
                     .passages = "helloabc", .passages_bytes = 8};
    cb_buffer *b = cb_rag_item_build(&k_host, &v);
    CB_CHECK(b != NULL);
    cb_rag_view r;
    char why[128];
    CB_CHECK_EQ_INT(cb_rag_item_view(b, &r, why, sizeof why), 0);
    CB_CHECK_EQ_INT(r.index, 4);
    CB_CHECK_EQ_INT(r.answer_id, 9);
    CB_CHECK_EQ_INT(r.rewrites, 1);
    CB_CHECK_EQ_INT(r.grade, CB_RAG_GRADE_YES);
    CB_CHECK_EQ_INT(r.dim, 3);
    CB_CHECK(r.emb[2] == 2.0f);
    CB_CHECK_EQ_INT(r.n_hits, 2);
    CB_CHECK_EQ_INT(r.hits[1].id, 9);
    CB_CHECK(strcmp(r.question, "why?") == 0);
    CB_CHECK(strcmp(r.query, "why") == 0);
    CB_CHECK(memcmp(r.passages + r.hits[1].text_off, "abc", 3) == 0);
    CB_CHECK_EQ_INT(r.answer_bytes, 0);
    CB_CHECK(r.answer[0] == 0);
    /* Damage: a hit's text past the passages, a text offset past the end, a short buffer. */
    cb_rag_item *h = (cb_rag_item *)b->data;
    cb_rag_hit *hh = (cb_rag_hit *)(void *)((char *)b->data + h->hits_off);
    hh[1].text_bytes = 4;
    CB_CHECK_EQ_INT(cb_rag_item_view(b, &r, why, sizeof why), -1);
    CB_CHECK(strstr(why, "hit 1") != NULL);
    hh[1].text_bytes = 3;
    h->query_off = h->total_bytes + 5;
    CB_CHECK_EQ_INT(cb_rag_item_view(b, &r, why, sizeof why), -1);
    CB_CHECK(strstr(why, "query") != NULL);
    b->size_bytes = 64;
    CB_CHECK_EQ_INT(cb_rag_item_view(b, &r, why, sizeof why), -1);
    buf_unref(b);
    CB_CHECK_EQ_INT(cb_rag_item_view(NULL, &r, why, sizeof why), -1);
}

int main(void) {
    CB_RUN(test_roundtrip);
    return cb_test_done();
}
