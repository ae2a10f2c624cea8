/* tests/test_llm_oai_chunk.c - reading OpenAI-compatible responses and stream chunks
 * (llm/oai_chunk.c) in the shapes vLLM, SGLang, llama.cpp and the OpenAI API send (the bodies
 * below follow their documented formats): completion text, chat delta content (a role-only first
 * chunk has none), a whole chat message, finish reasons, usage in the last chunk with empty
 * choices, errors as an object or a string, [DONE] with its line end, non-JSON and non-object
 * data rejected with the offset named. */
#include <string.h>

#include "harness.h"
#include "llm/oai_chunk.h"

static cb_oai_chunk parse_ok(const char *s, cb__jdom **doc) {
    cb_oai_chunk c;
    cb_error err = {0};
    int rc = cb_oai_chunk_parse(s, strlen(s), "chunk", &c, doc, &err);
    if (rc)
        printf("# %s\n", err.msg);
    CB_CHECK_EQ_INT(rc, 0);
    return c;
}

static void test_completion_chunks(void) {
    cb__jdom *d = NULL;
    cb_oai_chunk c = parse_ok("{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
                              "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" Hello\","
                              "\"logprobs\":null,\"finish_reason\":null}]}",
                              &d);
    CB_CHECK(c.text && c.text_len == 6 && memcmp(c.text, " Hello", 6) == 0);
    CB_CHECK(c.finish_reason == NULL && c.error == NULL && !c.done);
    CB_CHECK(c.prompt_tokens == -1 && c.completion_tokens == -1);
    cb__jdom_free(d);
    c = parse_ok("{\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}],"
                 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":32,\"total_tokens\":44}}",
                 &d);
    CB_CHECK(c.text && c.text_len == 0);
    CB_CHECK_STR_EQ(c.finish_reason, "length");
    CB_CHECK(c.prompt_tokens == 12 && c.completion_tokens == 32);
    cb__jdom_free(d);
}

static void test_chat(void) {
    cb__jdom *d = NULL;
    /* the first chunk carries the role only */
    cb_oai_chunk c = parse_ok("{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                              "\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}",
                              &d);
    CB_CHECK(c.text == NULL && c.finish_reason == NULL);
    cb__jdom_free(d);
    c = parse_ok("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf\\u00e9 \\ud83d\\ude00\"},"
                 "\"finish_reason\":null}]}",
                 &d);
    CB_CHECK(c.text && c.text_len == strlen("caf\xc3\xa9 \xf0\x9f\x98\x80"));
    CB_CHECK(memcmp(c.text, "caf\xc3\xa9 \xf0\x9f\x98\x80", c.text_len) == 0);
    cb__jdom_free(d);
    /* usage alone (stream_options.include_usage): choices empty */
    c = parse_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}", &d);
    CB_CHECK(c.text == NULL && c.prompt_tokens == 5 && c.completion_tokens == 7);
    cb__jdom_free(d);
    /* a whole (not streamed) chat response */
    c = parse_ok("{\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{"
                 "\"role\":\"assistant\",\"content\":\"Hi!\"},\"finish_reason\":\"stop\"}],"
                 "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}",
                 &d);
    CB_CHECK(c.text && c.text_len == 3 && memcmp(c.text, "Hi!", 3) == 0);
    CB_CHECK_STR_EQ(c.finish_reason, "stop");
    CB_CHECK(c.completion_tokens == 3);
    cb__jdom_free(d);
}

static void test_errors_and_done(void) {
    cb__jdom *d = NULL;
    cb_oai_chunk c = parse_ok("{\"error\":{\"message\":\"The model `x` does not exist.\","
                              "\"type\":\"NotFoundError\",\"code\":404}}",
                              &d);
    CB_CHECK_STR_EQ(c.error, "The model `x` does not exist.");
    cb__jdom_free(d);
    c = parse_ok("{\"error\":\"overloaded\"}", &d);
    CB_CHECK_STR_EQ(c.error, "overloaded");
    cb__jdom_free(d);
    c = parse_ok("[DONE]", &d);
    CB_CHECK(c.done && d == NULL);
    c = parse_ok(" [DONE]\n", &d);
    CB_CHECK(c.done && d == NULL);
    cb_error err = {0};
    const char *bad = "{\"choices\": [ }";
    CB_CHECK_EQ_INT(cb_oai_chunk_parse(bad, strlen(bad), "response of request 3", &c, &d, &err),
                    CB_EINVAL);
    CB_CHECK(d == NULL);
    CB_CHECK_CONTAINS(err.file, "response of request 3");
    CB_CHECK_EQ_INT(cb_oai_chunk_parse("[1,2]", 5, "chunk", &c, &d, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "a JSON object expected");
    CB_CHECK(d == NULL);
}

int main(void) {
    CB_RUN(test_completion_chunks);
    CB_RUN(test_chat);
    CB_RUN(test_errors_and_done);
    return cb_test_done();
}
