/* llm/jdom.h - a small strict JSON reader into a DOM (RFC 8259: \uXXXX escapes with surrogate
 * pairs, no comments, no trailing commas), for tokenizer.json and config.json files.
 *
 * Ownership: cb__jdom_parse returns a document that owns every node and string in one arena;
 * cb__jdom_free releases it all. Nodes are read-only after parsing: a document may be read by
 * many threads. Limits: nesting depth CB_JDOM_DEPTH_MAX; the caller bounds the text size. */
#ifndef CB_LLM_JDOM_H
#define CB_LLM_JDOM_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

#define CB_JDOM_DEPTH_MAX 128

typedef enum {
    CB_JDOM_NULL,
    CB_JDOM_BOOL,
    CB_JDOM_NUM,
    CB_JDOM_STR,
    CB_JDOM_ARR,
    CB_JDOM_OBJ
} cb__jdom_type;

typedef struct cb__jdom_node cb__jdom_node;
struct cb__jdom_node {
    cb__jdom_type type;
    size_t off; /* byte offset of the value in the text */
    size_t n;   /* string length in bytes (may hold NUL), or the number of items / members */
    union {
        int b;
        double num;
        const char *str;      /* NUL-terminated after n bytes */
        cb__jdom_node *items; /* arrays: n values; objects: n values, keys in `keys` */
    } v;
    const cb__jdom_node *keys; /* objects: n string nodes, keys[i] names items[i] */
};

typedef struct cb__jdom cb__jdom;

/* Parses text[0..len). On a syntax error returns CB_EINVAL with err's position set to
 * name:line:col and the message naming the byte offset; *out is then NULL. */
int cb__jdom_parse(const char *text, size_t len, const char *name, cb__jdom **out, cb_error *err);
const cb__jdom_node *cb__jdom_root(const cb__jdom *d);
void cb__jdom_free(cb__jdom *d); /* NULL is a no-op */

/* The member `key` of an object (the last one when repeated), or NULL (also for non-objects). */
const cb__jdom_node *cb__jdom_get(const cb__jdom_node *obj, const char *key);

/* 1-based line and column of a byte offset in text. */
void cb__jdom_linecol(const char *text, size_t len, size_t off, int *line, int *col);

#endif
