/* core/cfgtree.h - a YAML document as a tree of nodes that remember where they came from.
 *
 * Loaded with libyaml (anchors and aliases resolved by copy, tags ignored). Every node keeps
 * its file, line and column (1-based) so any later error can point at the text. The whole tree
 * lives in one arena owned by the cb_doc. Not thread-safe; read-only after loading and
 * overrides.
 */
#ifndef CB_CORE_CFGTREE_H
#define CB_CORE_CFGTREE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "colobench/error.h"
#include "core/alloc.h"

typedef enum cb_node_kind {
    CB_NODE_SCALAR = 0,
    CB_NODE_SEQ = 1,
    CB_NODE_MAP = 2,
} cb_node_kind;

typedef struct cb_node cb_node;
struct cb_node {
    cb_node_kind kind;
    int line, col;           /* 1-based position of the node's first character */
    const char *file;        /* file name as given (or "<--set>" for overrides) */
    /* SCALAR */
    const char *scalar;      /* text, NUL-terminated */
    int quoted;              /* 1 when written with quotes (then "null", "true" stay strings) */
    /* SEQ: items[0..n); MAP: keys[0..n) with values items[0..n), in document order */
    size_t n;
    cb_node **items;
    cb_node **keys;          /* MAP only: the key nodes (scalars) */
};

/* Test hook: what the loader's hash tables did while loading one document, so tests can check
 * that loading stays linear by counting work instead of timing it. A probe is one table slot
 * inspected; rehashing when a table doubles is not counted. */
typedef struct cb_doc_load_stats {
    size_t map_keys;      /* map keys checked for a duplicate */
    size_t key_probes;    /* slots inspected for them */
    size_t anchors;       /* anchors remembered, repeated names included */
    size_t aliases;       /* aliases looked up */
    size_t anchor_probes; /* slots inspected for anchors and aliases */
} cb_doc_load_stats;

typedef struct cb_doc {
    cb_arena *arena;
    cb_node *root;           /* NULL for an empty document */
    const char *file;
    cb_doc_load_stats load_stats; /* test hook: the load of the file or string (not --set) */
} cb_doc;

/* Parses a file / a string. On error: CB_ECONFIG (syntax) or CB_EIO with file:line:col set.
 * Maxima: 16 MiB of text, inclusive (a larger file: "FILE:1:1: file larger than 16777216 bytes
 * (16 MiB, the maximum)"), 64 levels of nesting counted through aliases, 1,000,000 nodes after
 * aliases are copied. Time and memory are linear in the text plus the nodes created (duplicate
 * keys and aliases are found through hash tables). */
int cb_doc_load_file(const char *path, cb_doc **out, cb_error *err);
/* Reads a config file's text (at most 16 MiB) into a cb_malloc'd, NUL-terminated buffer, as
 * cb_doc_load_file does. Errors about the file as a whole (cannot open: CB_ENOENT or CB_EIO; a
 * directory, unreadable: CB_EIO; too large: CB_ECONFIG) are positioned at FILE:1:1. */
int cb_doc_read_file(const char *path, char **text, size_t *len, cb_error *err);
int cb_doc_load_string(const char *text, size_t len, const char *name, cb_doc **out,
                       cb_error *err);
void cb_doc_destroy(cb_doc *doc);

/* Map lookup by key; NULL when absent or when map is not a MAP. A linear scan of the map: look up
 * a bounded set of known keys per map, never every key of a map in turn. */
cb_node *cb_node_get(const cb_node *map, const char *key);

/* Scalar is YAML null (plain "null", "~", "" or "Null"/"NULL"). */
int cb_node_is_null(const cb_node *n);

/* Typed scalars (plain, unquoted): 1 and *out set when n is one, else 0. Ints are decimal
 * int64 ("64k", "1.5", "0x10" are not); floats are decimal, finite, no hex; bools are
 * true/false (True/TRUE, False/FALSE), not yes/no. */
int cb_node_scalar_int(const cb_node *n, int64_t *out);
int cb_node_scalar_float(const cb_node *n, double *out);
int cb_node_scalar_bool(const cb_node *n, int64_t *out);

/* Applies "a.b.0.c=value": walks maps by key and sequences by index (sequences of maps may also
 * be indexed by an element's `name` or `id`), creating missing map keys; the value is parsed as
 * YAML (so "[1, 2]" or "{a: 1}" work). Errors name the assignment. Costs time and arena memory
 * linear in the size of the maps and sequences on the path (a new key copies its map's arrays). */
int cb_doc_set(cb_doc *doc, const char *assignment, cb_error *err);

/* Writes the subtree as block YAML (round-trips through cb_doc_load_string while the output
 * stays within its 16 MiB maximum: deep alias copies can write far more than they read). */
int cb_node_write_yaml(const cb_node *n, FILE *out);

#endif
