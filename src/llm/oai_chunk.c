/* llm/oai_chunk.c - one OpenAI-compatible response or stream chunk (see oai_chunk.h). */
#include "llm/oai_chunk.h"

#include <string.h>

static const char *str_of(const cb__jdom_node *n, size_t *len) {
    if (!n || n->type != CB_JDOM_STR)
        return NULL;
    if (len)
        *len = n->n;
    return n->v.str;
}

static int64_t count_of(const cb__jdom_node *n) {
    return n && n->type == CB_JDOM_NUM && n->v.num >= 0 && n->v.num < 9.0e15 ? (int64_t)n->v.num
                                                                              : -1;
}

int cb_oai_chunk_parse(const char *data, size_t len, const char *name, cb_oai_chunk *out,
                       cb__jdom **doc, cb_error *err) {
    memset(out, 0, sizeof *out);
    out->prompt_tokens = out->completion_tokens = -1;
    *doc = NULL;
    size_t a = 0, b = len; /* [DONE], around white space */
    while (a < b && (data[a] == ' ' || data[a] == '\t'))
        a++;
    while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\n'))
        b--;
    if (b - a == 6 && memcmp(data + a, "[DONE]", 6) == 0) {
        out->done = 1;
        return 0;
    }
    int rc = cb__jdom_parse(data, len, name, doc, err);
    if (rc)
        return rc;
    const cb__jdom_node *root = cb__jdom_root(*doc);
    if (root->type != CB_JDOM_OBJ) {
        cb__jdom_free(*doc);
        *doc = NULL;
        return cb_error_set(err, CB_EINVAL, "%s: a JSON object expected", name);
    }
    const cb__jdom_node *e = cb__jdom_get(root, "error");
    if (e) {
        out->error = str_of(e, NULL);
        if (!out->error)
            out->error = str_of(cb__jdom_get(e, "message"), NULL);
        if (!out->error && e->type != CB_JDOM_NULL)
            out->error = "(an error without a message)";
    }
    const cb__jdom_node *ch = cb__jdom_get(root, "choices");
    if (ch && ch->type == CB_JDOM_ARR && ch->n > 0) {
        const cb__jdom_node *c0 = &ch->v.items[0];
        out->text = str_of(cb__jdom_get(c0, "text"), &out->text_len);
        if (!out->text)
            out->text = str_of(cb__jdom_get(cb__jdom_get(c0, "delta"), "content"), &out->text_len);
        if (!out->text)
            out->text =
                str_of(cb__jdom_get(cb__jdom_get(c0, "message"), "content"), &out->text_len);
        out->finish_reason = str_of(cb__jdom_get(c0, "finish_reason"), NULL);
    }
    const cb__jdom_node *u = cb__jdom_get(root, "usage");
    if (u && u->type == CB_JDOM_OBJ) {
        out->prompt_tokens = count_of(cb__jdom_get(u, "prompt_tokens"));
        out->completion_tokens = count_of(cb__jdom_get(u, "completion_tokens"));
    }
    return 0;
}
