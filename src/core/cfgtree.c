/* core/cfgtree.c - YAML documents as cb_node trees with positions (see cfgtree.h).
 *
 * Design: libyaml's event parser drives a recursive builder (depth bounded by CB_DOC_MAX_DEPTH)
 * that allocates every node, string and array in the document's arena. Anchors are remembered
 * once their node is complete and aliases are resolved by deep copy, counted against
 * CB_DOC_MAX_NODES so an alias bomb fails cleanly instead of exhausting memory. Map keys must be
 * scalars and may not repeat. Positions are libyaml's 0-based marks plus one. cb_doc_set parses
 * the value of an override with the same builder into the same arena. cb_node_write_yaml prints
 * block YAML by hand: quoted scalars stay double-quoted, plain scalars are written plain when
 * that re-reads as the same text (else quoted), so a written tree loads back identical.
 *
 * Lookups while loading (docs/internals/config.md): two open-addressing hash tables (linear
 * probing, power-of-two capacity, at most half full) live for one load. The key table holds one
 * entry per map key parsed, keyed by (map, key text), so a repeated key is found in O(1)
 * whatever the map's size; entries of closed maps simply stay until the load ends. The anchor
 * table holds one entry per distinct anchor name, overwritten when the name is anchored again,
 * so an alias finds the most recent complete node of that name (YAML's rule) in O(1). Loading
 * is thus O(document bytes + nodes created); the hash is fixed (tests count probes), so keys
 * crafted to collide can still make one table slow, bounded by CB_DOC_MAX_NODES.
 *
 * Maxima: CB_DOC_MAX_BYTES (16 MiB) per file or string; CB_DOC_MAX_DEPTH (64) levels of
 * nesting; CB_DOC_MAX_NODES (1,000,000) nodes after aliases are copied (arena memory is about
 * 100 bytes per node, so at most ~100 MiB). Each table holds at most one entry per node parsed
 * from the text (never per copy), so it has at most 2^21 slots of 24 bytes; it grows by
 * doubling. Override segments are at most CB_SET_SEGMENT_MAX - 1 bytes.
 *
 * After loading: cb_node_get is a linear scan of one map (callers look up a bounded set of
 * schema keys, after rejecting unknown ones); cb_doc_set walks its path with such scans and
 * copies a map's arrays to append a key, so one override costs O(size of the maps and
 * sequences on its path) time and arena memory (the CLI allows 64 overrides).
 *
 * Thread-safety: a cb_doc is not thread-safe while loaded or overridden; read-only afterwards.
 * Ownership: the cb_doc owns its arena and every node; cb_doc_destroy frees all of it. The
 * hash tables and the anchor names (a scratch arena) are freed before the loader returns.
 */
#include "core/cfgtree.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define CB_DOC_MAX_DEPTH 64
#define CB_DOC_MAX_NODES 1000000
#define CB_DOC_MAX_BYTES_N 16777216 /* 16 MiB, inclusive */
#define CB_DOC_MAX_BYTES ((size_t)CB_DOC_MAX_BYTES_N)
#define CB_SET_SEGMENT_MAX 128
#define CB_HTAB_MIN_SLOTS 64

#define CB__STR(x) #x
#define CB__XSTR(x) CB__STR(x)

/* One slot of a loader hash table; hash 0 marks an empty slot (stored hashes are odd). */
typedef struct hslot {
    uint64_t hash;
    union {
        const cb_node *map; /* key table: the map the key belongs to */
        const char *name;   /* anchor table: the name (a scratch copy) */
    } k;
    const cb_node *node; /* key table: the map's first key of this text; anchors: the node */
} hslot;

typedef struct htab {
    hslot *slots; /* cb_calloc'd; NULL until the first insert */
    size_t cap;   /* 0 or a power of two >= CB_HTAB_MIN_SLOTS */
    size_t n;     /* used slots, n * 2 <= cap */
} htab;

typedef struct loader {
    yaml_parser_t parser;
    cb_arena *arena;
    const char *file; /* arena copy */
    cb_error *err;
    htab keys;             /* (map, key text) -> first key node */
    htab anchors;          /* anchor name -> most recent complete node */
    cb_arena *names;       /* scratch copies of anchor names, created on the first anchor */
    uint64_t n_maps;       /* maps begun: their serial numbers seed the key hash */
    size_t n_nodes;
    cb_doc_load_stats *stats;
    int fail; /* status of the last new_node failure */
} loader;

static int oom(cb_error *err) { return cb_error_set(err, CB_ENOMEM, "out of memory"); }

static int pos_error(loader *L, int line, int col, const char *fmt, const char *arg) {
    cb_error_set(L->err, CB_ECONFIG, fmt, arg);
    cb_error_at(L->err, L->file, line, col);
    return CB_ECONFIG;
}

/* Errors about a file as a whole point at its start, FILE:1:1, like every config error. */
static int file_error(cb_error *err, int code, const char *path, const char *what, int e) {
    if (e)
        cb_error_set(err, code, "%s: %s", what, strerror(e));
    else
        cb_error_set(err, code, "%s", what);
    cb_error_at(err, path, 1, 1);
    return code;
}

/* ---- hash tables ------------------------------------------------------------------------ */

/* FNV-1a over the text then a 64-bit finaliser (MurmurHash3's fmix64) mixing in seed; odd. */
static uint64_t hash_text(const char *s, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3u;
    }
    h ^= seed * 0x9e3779b97f4a7c15u;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h | 1u;
}

/* Doubles t (or creates it) and reinserts every entry; 0 or CB_ENOMEM. */
static int htab_grow(htab *t) {
    size_t ncap = t->cap ? t->cap * 2 : CB_HTAB_MIN_SLOTS;
    hslot *ns = cb_calloc(ncap, sizeof *ns);
    if (!ns) return CB_ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].hash) continue;
        size_t j = (size_t)t->slots[i].hash & (ncap - 1);
        while (ns[j].hash) j = (j + 1) & (ncap - 1);
        ns[j] = t->slots[i];
    }
    cb_free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

static void htab_fini(htab *t) {
    cb_free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Makes room for one more entry: at most half full after it. 0 or CB_ENOMEM. */
static int htab_reserve(htab *t) { return (t->n + 1) * 2 > t->cap ? htab_grow(t) : 0; }

/* Records key in map (serial = the map's number, which seeds the hash so that the same text in
 * different maps lands apart); *first = that map's earlier key of the same text, if any (then
 * nothing is recorded). */
static int key_seen(loader *L, const cb_node *map, uint64_t serial, const cb_node *key,
                    const cb_node **first) {
    htab *t = &L->keys;
    if (htab_reserve(t)) return oom(L->err);
    uint64_t h = hash_text(key->scalar, serial);
    L->stats->map_keys++;
    for (size_t mask = t->cap - 1, j = (size_t)h & mask;; j = (j + 1) & mask) {
        hslot *s = &t->slots[j];
        L->stats->key_probes++;
        if (!s->hash) {
            s->hash = h;
            s->k.map = map;
            s->node = key;
            t->n++;
            *first = NULL;
            return 0;
        }
        if (s->hash == h && s->k.map == map && strcmp(s->node->scalar, key->scalar) == 0) {
            *first = s->node;
            return 0;
        }
    }
}

/* The slot of anchor name in t, or the empty slot where it would go. */
static hslot *anchor_slot(loader *L, uint64_t h, const char *name) {
    htab *t = &L->anchors;
    for (size_t mask = t->cap - 1, j = (size_t)h & mask;; j = (j + 1) & mask) {
        hslot *s = &t->slots[j];
        L->stats->anchor_probes++;
        if (!s->hash || (s->hash == h && strcmp(s->k.name, name) == 0)) return s;
    }
}

/* Makes name refer to node from now on (a later anchor of the same name replaces it). */
static int remember_anchor(loader *L, const yaml_char_t *yname, const cb_node *node) {
    if (!yname) return 0;
    const char *name = (const char *)yname;
    if (htab_reserve(&L->anchors)) return oom(L->err);
    uint64_t h = hash_text(name, 0);
    L->stats->anchors++;
    hslot *s = anchor_slot(L, h, name);
    if (!s->hash) {
        if (!L->names && !(L->names = cb_arena_create())) return oom(L->err);
        const char *copy = cb_arena_strdup(L->names, name);
        if (!copy) return oom(L->err);
        s->hash = h;
        s->k.name = copy;
        L->anchors.n++;
    }
    s->node = node;
    return 0;
}

/* The node the alias name refers to, or NULL. */
static const cb_node *find_anchor(loader *L, const char *name) {
    L->stats->aliases++;
    if (!L->anchors.cap) return NULL;
    const hslot *s = anchor_slot(L, hash_text(name, 0), name);
    return s->hash ? s->node : NULL;
}

/* ---- the builder ------------------------------------------------------------------------ */

static cb_node *new_node(loader *L, cb_node_kind kind, const yaml_mark_t *mark) {
    if (++L->n_nodes > CB_DOC_MAX_NODES) {
        L->fail = pos_error(L, (int)mark->line + 1, (int)mark->column + 1,
                            "document too large (more than %s nodes after resolving aliases)",
                            CB__XSTR(CB_DOC_MAX_NODES));
        return NULL;
    }
    cb_node *n = cb_arena_alloc(L->arena, sizeof *n);
    if (!n) {
        L->fail = oom(L->err);
        return NULL;
    }
    n->kind = kind;
    n->line = (int)mark->line + 1;
    n->col = (int)mark->column + 1;
    n->file = L->file;
    return n;
}

static int next_event(loader *L, yaml_event_t *ev) {
    if (yaml_parser_parse(&L->parser, ev)) return 0;
    const yaml_parser_t *p = &L->parser;
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->error == YAML_MEMORY_ERROR) return oom(L->err);
    if (p->context)
        cb_error_set(L->err, CB_ECONFIG, "%s %s", p->context, problem);
    else
        cb_error_set(L->err, CB_ECONFIG, "%s", problem);
    cb_error_at(L->err, L->file, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1);
    return CB_ECONFIG;
}

/* Appends item (and key) to a collection node, doubling the arena arrays. */
static int append(loader *L, cb_node *coll, size_t *cap, cb_node *key, cb_node *item) {
    if (coll->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        cb_node **items = cb_arena_alloc(L->arena, ncap * sizeof *items);
        cb_node **keys = key ? cb_arena_alloc(L->arena, ncap * sizeof *keys) : NULL;
        if (!items || (key && !keys)) return oom(L->err);
        if (coll->n) memcpy(items, coll->items, coll->n * sizeof *items);
        if (keys && coll->n) memcpy(keys, coll->keys, coll->n * sizeof *keys);
        coll->items = items;
        if (keys) coll->keys = keys;
        *cap = ncap;
    }
    if (key) coll->keys[coll->n] = key;
    coll->items[coll->n++] = item;
    return 0;
}

/* Copies src for an alias; depth is where the copy lands, so nesting counts through aliases
 * (the copy of a deep anchor under a deep alias is refused at the alias, at *at). */
static cb_node *copy_tree(loader *L, const cb_node *src, int depth, const yaml_mark_t *at,
                          int *rc) {
    if (depth > CB_DOC_MAX_DEPTH) {
        *rc = pos_error(L, (int)at->line + 1, (int)at->column + 1,
                        "document nested deeper than %s levels (counting what aliases copy)",
                        CB__XSTR(CB_DOC_MAX_DEPTH));
        return NULL;
    }
    yaml_mark_t mark = {0, (size_t)(src->line - 1), (size_t)(src->col - 1)};
    cb_node *n = new_node(L, src->kind, &mark);
    if (!n) {
        *rc = L->fail;
        return NULL;
    }
    n->file = src->file;
    n->scalar = src->scalar; /* strings are immutable and share the arena */
    n->quoted = src->quoted;
    n->n = src->n;
    if (src->n) {
        n->items = cb_arena_alloc(L->arena, src->n * sizeof *n->items);
        if (!n->items) goto nomem;
        if (src->keys) {
            n->keys = cb_arena_alloc(L->arena, src->n * sizeof *n->keys);
            if (!n->keys) goto nomem;
        }
        for (size_t i = 0; i < src->n; i++) {
            if (src->keys && !(n->keys[i] = copy_tree(L, src->keys[i], depth + 1, at, rc)))
                return NULL;
            if (!(n->items[i] = copy_tree(L, src->items[i], depth + 1, at, rc))) return NULL;
        }
    }
    return n;
nomem:
    *rc = oom(L->err);
    return NULL;
}

static int parse_node(loader *L, yaml_event_t *ev, int depth, cb_node **out);

/* Builds a sequence or map whose start event is ev (not yet deleted by the caller). */
static int parse_collection(loader *L, cb_node *coll, int depth) {
    size_t cap = 0;
    uint64_t serial = coll->kind == CB_NODE_MAP ? ++L->n_maps : 0;
    for (;;) {
        yaml_event_t ev;
        int rc = next_event(L, &ev);
        if (rc) return rc;
        if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        cb_node *key = NULL, *item = NULL;
        rc = parse_node(L, &ev, depth + 1, coll->kind == CB_NODE_MAP ? &key : &item);
        yaml_event_delete(&ev);
        if (rc) return rc;
        if (coll->kind == CB_NODE_MAP) {
            if (key->kind != CB_NODE_SCALAR)
                return pos_error(L, key->line, key->col, "map keys must be scalars%s", "");
            const cb_node *first = NULL;
            if ((rc = key_seen(L, coll, serial, key, &first))) return rc;
            if (first) {
                char msg[96];
                snprintf(msg, sizeof msg, " (first at line %d, column %d)", first->line,
                         first->col);
                cb_error_set(L->err, CB_ECONFIG, "duplicate key '%s'%s", key->scalar, msg);
                cb_error_at(L->err, L->file, key->line, key->col);
                return CB_ECONFIG;
            }
            rc = next_event(L, &ev);
            if (rc) return rc;
            rc = parse_node(L, &ev, depth + 1, &item);
            yaml_event_delete(&ev);
            if (rc) return rc;
        }
        rc = append(L, coll, &cap, key, item);
        if (rc) return rc;
    }
}

static int parse_node(loader *L, yaml_event_t *ev, int depth, cb_node **out) {
    if (depth > CB_DOC_MAX_DEPTH)
        return pos_error(L, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                         "document nested deeper than %s levels", CB__XSTR(CB_DOC_MAX_DEPTH));
    cb_node *n = NULL;
    int rc = 0;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        if (!(n = new_node(L, CB_NODE_SCALAR, &ev->start_mark))) return L->fail;
        n->scalar = cb_arena_strndup(L->arena, (const char *)ev->data.scalar.value,
                                     ev->data.scalar.length);
        if (!n->scalar) return oom(L->err);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        rc = remember_anchor(L, ev->data.scalar.anchor, n);
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int is_map = ev->type == YAML_MAPPING_START_EVENT;
        if (!(n = new_node(L, is_map ? CB_NODE_MAP : CB_NODE_SEQ, &ev->start_mark)))
            return L->fail;
        rc = parse_collection(L, n, depth);
        if (!rc)
            rc = remember_anchor(L, is_map ? ev->data.mapping_start.anchor
                                           : ev->data.sequence_start.anchor, n);
        break;
    }
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        const cb_node *target = find_anchor(L, name);
        if (!target)
            return pos_error(L, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                             "unknown anchor '%s'", name);
        n = copy_tree(L, target, depth, &ev->start_mark, &rc);
        break;
    }
    default:
        return pos_error(L, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                         "unexpected YAML event%s", "");
    }
    if (rc) return rc;
    *out = n;
    return 0;
}

/* Parses text into arena; *root is NULL for an empty stream. stats (zeroed by the caller)
 * receives the hash tables' counts. */
static int parse_into(cb_arena *arena, const char *file, const char *text, size_t len,
                      cb_node **root, cb_doc_load_stats *stats, cb_error *err) {
    *root = NULL;
    if (len > CB_DOC_MAX_BYTES)
        return file_error(err, CB_ECONFIG, file,
                          "document larger than " CB__XSTR(CB_DOC_MAX_BYTES_N) " bytes (16 MiB, "
                          "the maximum)", 0);
    loader L;
    memset(&L, 0, sizeof L);
    L.arena = arena;
    L.file = file;
    L.err = err;
    L.stats = stats;
    if (!yaml_parser_initialize(&L.parser)) return oom(err);
    yaml_parser_set_input_string(&L.parser, (const unsigned char *)text, len);
    int rc = 0, docs = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = next_event(&L, &ev))) break;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            rc = pos_error(&L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                           "only one YAML document per file is supported%s", "");
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT ||
            t == YAML_MAPPING_START_EVENT || t == YAML_ALIAS_EVENT)
            rc = parse_node(&L, &ev, 0, root);
        yaml_event_delete(&ev);
        if (rc) break;
    }
    yaml_parser_delete(&L.parser);
    htab_fini(&L.keys);
    htab_fini(&L.anchors);
    cb_arena_destroy(L.names);
    if (rc) *root = NULL;
    return rc;
}

int cb_doc_load_string(const char *text, size_t len, const char *name, cb_doc **out,
                       cb_error *err) {
    if (!out || (!text && len)) return cb_error_set(err, CB_EINVAL, "cb_doc_load_string: bad arguments");
    *out = NULL;
    cb_arena *arena = cb_arena_create();
    if (!arena) return oom(err);
    cb_doc *doc = cb_arena_alloc(arena, sizeof *doc);
    const char *file = cb_arena_strdup(arena, name ? name : "<string>");
    if (!doc || !file) {
        cb_arena_destroy(arena);
        return oom(err);
    }
    doc->arena = arena;
    doc->file = file;
    int rc = parse_into(arena, file, text ? text : "", len, &doc->root, &doc->load_stats, err);
    if (rc) {
        cb_arena_destroy(arena);
        return rc;
    }
    *out = doc;
    return 0;
}

int cb_doc_read_file(const char *path, char **text, size_t *len_out, cb_error *err) {
    if (!path || !text || !len_out) return cb_error_set(err, CB_EINVAL, "cb_doc_read_file: bad arguments");
    *text = NULL;
    *len_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return file_error(err, errno == ENOENT ? CB_ENOENT : CB_EIO, path, "cannot open", errno);
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return file_error(err, CB_EIO, path, "is a directory, not a config file", 0);
    }
    /* Reads at most CB_DOC_MAX_BYTES + 1 bytes: one more than the maximum means too large. */
    size_t cap = 4096, len = 0;
    char *buf = cb_malloc(cap + 1);
    int rc = buf ? 0 : oom(err);
    while (!rc) {
        if (len > CB_DOC_MAX_BYTES) {
            rc = file_error(err, CB_ECONFIG, path,
                            "file larger than " CB__XSTR(CB_DOC_MAX_BYTES_N) " bytes (16 MiB, "
                            "the maximum)", 0);
            break;
        }
        if (len == cap) {
            size_t ncap = cap * 2 > CB_DOC_MAX_BYTES ? (size_t)CB_DOC_MAX_BYTES + 1 : cap * 2;
            char *nb = cb_realloc(buf, ncap + 1);
            if (!nb) {
                rc = oom(err);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (k == 0) {
            if (ferror(f)) rc = file_error(err, CB_EIO, path, "cannot read", errno ? errno : EIO);
            break;
        }
    }
    fclose(f);
    if (rc) {
        cb_free(buf);
        return rc;
    }
    buf[len] = '\0';
    *text = buf;
    *len_out = len;
    return 0;
}

int cb_doc_load_file(const char *path, cb_doc **out, cb_error *err) {
    if (!path || !out) return cb_error_set(err, CB_EINVAL, "cb_doc_load_file: bad arguments");
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = cb_doc_read_file(path, &buf, &len, err);
    if (!rc) rc = cb_doc_load_string(buf, len, path, out, err);
    cb_free(buf);
    return rc;
}

void cb_doc_destroy(cb_doc *doc) {
    if (doc) cb_arena_destroy(doc->arena); /* the doc itself lives in its arena */
}

cb_node *cb_node_get(const cb_node *map, const char *key) {
    if (!map || map->kind != CB_NODE_MAP || !key) return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i]->scalar, key) == 0) return map->items[i];
    return NULL;
}

int cb_node_is_null(const cb_node *n) {
    if (!n || n->kind != CB_NODE_SCALAR || n->quoted) return 0;
    const char *s = n->scalar;
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* ---- --set overrides ------------------------------------------------------------------- */

static cb_node *set_new_node(cb_arena *a, cb_node_kind kind, const char *file) {
    cb_node *n = cb_arena_alloc(a, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = 1;
    n->col = 1;
    n->file = file;
    return n;
}

static int map_put(cb_arena *a, cb_node *map, cb_node *key, cb_node *value) {
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->keys[i]->scalar, key->scalar) == 0) {
            map->items[i] = value;
            return 0;
        }
    }
    cb_node **keys = cb_arena_alloc(a, (map->n + 1) * sizeof *keys);
    cb_node **items = cb_arena_alloc(a, (map->n + 1) * sizeof *items);
    if (!keys || !items) return CB_ENOMEM;
    if (map->n) {
        memcpy(keys, map->keys, map->n * sizeof *keys);
        memcpy(items, map->items, map->n * sizeof *items);
    }
    keys[map->n] = key;
    items[map->n] = value;
    map->keys = keys;
    map->items = items;
    map->n++;
    return 0;
}

static int is_index(const char *s, size_t *out) {
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0) return 0;
    *out = (size_t)v;
    return 1;
}

/* col: 1-based column in the --set argument (KEY=VALUE) where the problem is. */
static int set_error(cb_error *err, const char *assignment, size_t col, const char *seg,
                     const char *fmt, const char *a1) {
    char what[256];
    snprintf(what, sizeof what, fmt, a1);
    if (seg)
        cb_error_set(err, CB_ECONFIG, "--set '%s': segment '%s': %s", assignment, seg, what);
    else
        cb_error_set(err, CB_ECONFIG, "--set '%s': %s", assignment, what);
    cb_error_at(err, "<--set>", 1, col > INT32_MAX ? INT32_MAX : (int)col);
    return CB_ECONFIG;
}

/* The value was parsed on its own: its first line's columns move right by offset, so positions
 * are columns of the whole --set argument. */
static void shift_cols(cb_node *n, int offset) {
    if (n->line == 1) n->col += offset;
    for (size_t i = 0; i < n->n; i++) {
        if (n->keys) shift_cols(n->keys[i], offset);
        shift_cols(n->items[i], offset);
    }
}

int cb_doc_set(cb_doc *doc, const char *assignment, cb_error *err) {
    if (!doc || !assignment) return cb_error_set(err, CB_EINVAL, "cb_doc_set: bad arguments");
    const char *eq = strchr(assignment, '=');
    if (!eq) return set_error(err, assignment, 1, NULL, "expected KEY=VALUE%s", "");
    if (eq == assignment) return set_error(err, assignment, 1, NULL, "empty key%s", "");
    int value_col = (int)(eq + 1 - assignment) + 1; /* the value's column in the argument */
    cb_arena *a = doc->arena;
    const char *file = cb_arena_strdup(a, "<--set>");
    if (!file) return oom(err);

    cb_node *value = NULL;
    cb_error perr;
    cb_error_clear(&perr);
    cb_doc_load_stats stats;
    memset(&stats, 0, sizeof stats);
    int rc = parse_into(a, file, eq + 1, strlen(eq + 1), &value, &stats, &perr);
    if (rc == CB_ENOMEM) return oom(err);
    if (rc) {
        char buf[CB_ERROR_MSG_MAX];
        snprintf(buf, sizeof buf, "value is not valid YAML (%s)", perr.msg);
        /* libyaml reports a value cut short on the line after it: then the end of the argument */
        size_t col = perr.line > 1 && !strchr(eq + 1, '\n') ? strlen(assignment) + 1
                     : perr.line > 1                      ? (size_t)perr.col
                                                          : (size_t)(perr.col + value_col - 1);
        return set_error(err, assignment, col, NULL, "%s", buf);
    }
    if (!value) {
        if (!(value = set_new_node(a, CB_NODE_SCALAR, file))) return oom(err);
        value->scalar = "";
    }
    shift_cols(value, value_col - 1);
    if (!doc->root) {
        if (!(doc->root = set_new_node(a, CB_NODE_MAP, file))) return oom(err);
    }

    cb_node *cur = doc->root;
    const char *p = assignment;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(eq - p));
        const char *segend = dot ? dot : eq;
        size_t seglen = (size_t)(segend - p);
        char seg[CB_SET_SEGMENT_MAX];
        snprintf(seg, sizeof seg, "%.*s", (int)(seglen < sizeof seg ? seglen : sizeof seg - 1), p);
        size_t segcol = (size_t)(p - assignment) + 1;
        if (seglen == 0) return set_error(err, assignment, segcol, "", "empty path segment%s", "");
        if (seglen >= sizeof seg)
            return set_error(err, assignment, segcol, seg, "segment too long%s", "");
        int last = dot == NULL;
        size_t idx = 0;
        if (cur->kind == CB_NODE_MAP) {
            cb_node *child = cb_node_get(cur, seg);
            if (last || !child) {
                cb_node *key = set_new_node(a, CB_NODE_SCALAR, file);
                if (!key || !(key->scalar = cb_arena_strdup(a, seg))) return oom(err);
                key->col = (int)segcol;
                if (!last && !(child = set_new_node(a, CB_NODE_MAP, file))) return oom(err);
                if (!last) child->col = (int)segcol;
                if (map_put(a, cur, key, last ? value : child)) return oom(err);
            }
            if (last) return 0;
            cur = child;
        } else if (cur->kind == CB_NODE_SEQ) {
            cb_node **slot = NULL;
            if (is_index(seg, &idx)) {
                if (idx >= cur->n) {
                    char msg[96];
                    snprintf(msg, sizeof msg, "index out of range (the sequence has %zu items)",
                             cur->n);
                    return set_error(err, assignment, segcol, seg, "%s", msg);
                }
                slot = &cur->items[idx];
            } else {
                for (size_t i = 0; i < cur->n && !slot; i++) {
                    const cb_node *name = cb_node_get(cur->items[i], "name");
                    const cb_node *id = cb_node_get(cur->items[i], "id");
                    if ((name && name->kind == CB_NODE_SCALAR && strcmp(name->scalar, seg) == 0) ||
                        (id && id->kind == CB_NODE_SCALAR && strcmp(id->scalar, seg) == 0))
                        slot = &cur->items[i];
                }
                if (!slot)
                    return set_error(err, assignment, segcol, seg,
                                     "no element with name or id '%s' in the sequence", seg);
            }
            if (last) {
                *slot = value;
                return 0;
            }
            cur = *slot;
        } else {
            return set_error(err, assignment, segcol, seg, "cannot index into scalar '%s'",
                             cur->scalar);
        }
        p = dot + 1;
    }
}

/* ---- YAML writer ----------------------------------------------------------------------- */

static int plain_is_safe(const char *s) {
    size_t len = strlen(s);
    if (len == 0) return 1; /* written as nothing: re-reads as the empty plain scalar */
    if (strchr(",[]{}#&*!|>'\"%@`", s[0])) return 0;
    if (strchr("-?:", s[0]) && (len == 1 || s[1] == ' ')) return 0;
    if (strncmp(s, "---", 3) == 0 || strncmp(s, "...", 3) == 0) return 0;
    if (s[0] == ' ' || s[len - 1] == ' ' || s[len - 1] == ':') return 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) return 0;
        if (c == ':' && p[1] == ' ') return 0;
        if (c == ' ' && p[1] == '#') return 0;
    }
    return 1;
}

static void write_quoted(const char *s, FILE *out) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "\\x%02x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void write_scalar(const cb_node *n, FILE *out) {
    if (!n->quoted && plain_is_safe(n->scalar))
        fputs(n->scalar, out);
    else
        write_quoted(n->scalar, out);
}

static void pad(int indent, FILE *out) {
    for (int i = 0; i < indent; i++) fputc(' ', out);
}

static int is_inline(const cb_node *n) { return n->kind == CB_NODE_SCALAR || n->n == 0; }

static void write_inline(const cb_node *n, FILE *out) {
    if (n->kind == CB_NODE_SCALAR)
        write_scalar(n, out);
    else
        fputs(n->kind == CB_NODE_MAP ? "{}" : "[]", out);
}

static void write_block(const cb_node *n, int indent, int first_inline, FILE *out);

/* After "key:" or "-": the value on the same line or as a nested block. */
static void write_value(const cb_node *v, int indent, int seq_item, FILE *out) {
    if (is_inline(v)) {
        if (!(v->kind == CB_NODE_SCALAR && !v->quoted && v->scalar[0] == '\0')) {
            fputc(' ', out);
            write_inline(v, out);
        }
        fputc('\n', out);
    } else if (seq_item && v->kind == CB_NODE_MAP) {
        fputc(' ', out);
        write_block(v, indent + 2, 1, out);
    } else {
        fputc('\n', out);
        write_block(v, indent + 2, 0, out);
    }
}

static void write_block(const cb_node *n, int indent, int first_inline, FILE *out) {
    for (size_t i = 0; i < n->n; i++) {
        if (i > 0 || !first_inline) pad(indent, out);
        if (n->kind == CB_NODE_MAP) {
            const cb_node *k = n->keys[i];
            size_t klen = strlen(k->scalar);
            if ((klen == 0 && !k->quoted) || klen > 512) {
                /* explicit key: an empty plain key, or one longer than a simple key may be */
                fputs("? ", out);
                write_scalar(k, out);
                fputc('\n', out);
                pad(indent, out);
            } else {
                write_scalar(k, out);
            }
            fputc(':', out);
            write_value(n->items[i], indent, 0, out);
        } else {
            fputc('-', out);
            write_value(n->items[i], indent, 1, out);
        }
    }
}

int cb_node_write_yaml(const cb_node *n, FILE *out) {
    if (!out) return CB_EINVAL;
    if (!n) {
        fputs("null\n", out);
    } else if (is_inline(n)) {
        write_inline(n, out);
        fputc('\n', out);
    } else {
        write_block(n, 0, 0, out);
    }
    return ferror(out) ? CB_EIO : 0;
}

/* ---- typed scalars: the one definition of YAML int/float/bool for colobench ---------- */

int cb_node_scalar_int(const cb_node *n, int64_t *out) {
    if (!n || n->kind != CB_NODE_SCALAR || n->quoted) return 0;
    const char *s = n->scalar;
    const char *p = s + (*s == '-' || *s == '+');
    if (*p < '0' || *p > '9') return 0;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

int cb_node_scalar_float(const cb_node *n, double *out) {
    if (!n || n->kind != CB_NODE_SCALAR || n->quoted) return 0;
    const char *s = n->scalar;
    const char *p = s + (*s == '-' || *s == '+');
    if (!((*p >= '0' && *p <= '9') || (*p == '.' && p[1] >= '0' && p[1] <= '9'))) return 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) return 0;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno == ERANGE && fabs(v) > 1.0) return 0;
    if (end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

int cb_node_scalar_bool(const cb_node *n, int64_t *out) {
    if (!n || n->kind != CB_NODE_SCALAR || n->quoted) return 0;
    const char *s = n->scalar;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return *out = 1, 1;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return *out = 0, 1;
    return 0;
}
