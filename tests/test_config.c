/* Tests of core/cfgtree.c (YAML trees with positions, --set overrides, the YAML writer) and
 * core/suggest.c. */
#include "harness.h"

#include <stdarg.h>
#include <stdlib.h>

#include "core/cfgtree.h"
#include "core/clock.h"
#include "core/suggest.h"

static cb_doc *load(const char *text) {
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_doc_load_string(text, strlen(text), "t.yaml", &doc, &err);
    if (rc) cb__test_fail(__FILE__, __LINE__, "load failed: %s", err.msg);
    return doc;
}

static void fmt_err(const cb_error *e, char *buf, size_t n) { cb_error_format(e, buf, n); }

static void test_positions(void) {
    cb_doc *doc = load("name: demo\npipelines:\n  - name: chain\n    stages: [1, 'two', \"3\"]\n");
    CB_CHECK(doc && doc->root && doc->root->kind == CB_NODE_MAP);
    if (!doc) return;
    const cb_node *name = cb_node_get(doc->root, "name");
    CB_CHECK_STR_EQ(name->scalar, "demo");
    CB_CHECK_EQ_INT(name->line, 1);
    CB_CHECK_EQ_INT(name->col, 7);
    CB_CHECK_STR_EQ(name->file, "t.yaml");
    const cb_node *pl = cb_node_get(doc->root, "pipelines");
    CB_CHECK_EQ_INT(pl->kind, CB_NODE_SEQ);
    CB_CHECK_EQ_INT(pl->line, 3);
    CB_CHECK_EQ_INT(pl->col, 3);
    const cb_node *st = cb_node_get(pl->items[0], "stages");
    CB_CHECK_EQ_INT(st->n, 3);
    CB_CHECK_EQ_INT(st->line, 4);
    CB_CHECK_EQ_INT(st->col, 13);
    CB_CHECK_EQ_INT(st->items[0]->quoted, 0);
    CB_CHECK_EQ_INT(st->items[1]->quoted, 1);
    CB_CHECK_EQ_INT(st->items[2]->quoted, 1);
    CB_CHECK_EQ_INT(st->items[2]->col, 24);
    CB_CHECK(cb_node_get(doc->root, "nope") == NULL);
    CB_CHECK(cb_node_get(st, "x") == NULL);
    cb_doc_destroy(doc);
}

static void test_nulls_and_empty(void) {
    cb_doc *doc = load("a:\nb: ~\nc: null\nd: 'null'\ne: NULL\n");
    if (!doc) return;
    CB_CHECK(cb_node_is_null(cb_node_get(doc->root, "a")));
    CB_CHECK(cb_node_is_null(cb_node_get(doc->root, "b")));
    CB_CHECK(cb_node_is_null(cb_node_get(doc->root, "c")));
    CB_CHECK(!cb_node_is_null(cb_node_get(doc->root, "d")));
    CB_CHECK(cb_node_is_null(cb_node_get(doc->root, "e")));
    cb_doc_destroy(doc);
    doc = load("");
    CB_CHECK(doc && doc->root == NULL);
    cb_doc_destroy(doc);
    doc = load("# only a comment\n");
    CB_CHECK(doc && doc->root == NULL);
    cb_doc_destroy(doc);
}

static void test_anchors(void) {
    cb_doc *doc = load("base: &b {x: 1, y: [1, 2]}\nuse: *b\nuse2: *b\n");
    if (!doc) return;
    const cb_node *u = cb_node_get(doc->root, "use");
    CB_CHECK(u && u->kind == CB_NODE_MAP && u->n == 2);
    CB_CHECK(u != cb_node_get(doc->root, "base")); /* resolved by copy */
    CB_CHECK_STR_EQ(cb_node_get(u, "x")->scalar, "1");
    CB_CHECK_EQ_INT(cb_node_get(u, "y")->n, 2);
    cb_doc_destroy(doc);

    cb_doc *bad = NULL;
    cb_error err;
    cb_error_clear(&err);
    const char *t = "a: *nope\n";
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "t.yaml", &bad, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "unknown anchor 'nope'");
    CB_CHECK_EQ_INT(err.line, 1);
    CB_CHECK_EQ_INT(err.col, 4);
}

static void test_alias_bomb(void) {
    const char *t = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "t.yaml", &doc, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "document too large");
    CB_CHECK(doc == NULL);
}

static void test_syntax_error(void) {
    const char *t = "name: demo\npipelines:\n  - name: [unclosed\n    stages: 1\n";
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "bench.yaml", &doc, &err), CB_ECONFIG);
    char buf[1024];
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_CONTAINS(buf, "bench.yaml:4:");
    CB_CHECK(err.line > 0 && err.col > 0);
    t = "a: 1\n b: 2\n";
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "bench.yaml", &doc, &err), CB_ECONFIG);
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_CONTAINS(buf, "bench.yaml:2:3: mapping values are not allowed in this context");
}

static void test_duplicate_key(void) {
    const char *t = "a: 1\nb:\n  x: 1\n  x: 2\n";
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "d.yaml", &doc, &err), CB_ECONFIG);
    char buf[1024];
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "d.yaml:4:3: duplicate key 'x' (first at line 3, column 3)");
}

static void test_multi_document(void) {
    const char *t = "a: 1\n---\nb: 2\n";
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "m.yaml", &doc, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "only one YAML document");
    CB_CHECK_EQ_INT(err.line, 2);
}

static void test_load_file(void) {
    const char *dir = cb_test_tmpdir();
    const char *p = cb_test_write(dir, "f.yaml", "x: [1, 2]\n");
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_file(p, &doc, &err), 0);
    CB_CHECK(doc && cb_node_get(doc->root, "x")->n == 2);
    CB_CHECK_STR_EQ(doc->root->file, p);
    cb_doc_destroy(doc);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/missing.yaml", dir);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_file(missing, &doc, &err), CB_ENOENT);
    char buf[1024], want[1024];
    fmt_err(&err, buf, sizeof buf);
    snprintf(want, sizeof want, "%s:1:1: cannot open: No such file or directory", missing);
    CB_CHECK_STR_EQ(buf, want); /* errors about the whole file point at 1:1 */
    /* A directory is not a config (fopen succeeds on one, reading fails). */
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_file(dir, &doc, &err), CB_EIO);
    fmt_err(&err, buf, sizeof buf);
    snprintf(want, sizeof want, "%s:1:1: is a directory, not a config file", dir);
    CB_CHECK_STR_EQ(buf, want);
    /* The reader the CLI uses gives the same text and the same errors. */
    char *text = NULL;
    size_t len = 0;
    CB_CHECK_EQ_INT(cb_doc_read_file(p, &text, &len, &err), 0);
    CB_CHECK_EQ_INT(len, 10);
    CB_CHECK_STR_EQ(text ? text : "", "x: [1, 2]\n");
    cb_free(text);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_read_file(dir, &text, &len, &err), CB_EIO);
    CB_CHECK(text == NULL && err.line == 1 && err.col == 1);
}

/* ---- scale: loading stays linear (issue 12) --------------------------------------------- */

/* A text built by appending; the capacity is fixed up front (tests know their sizes). */
typedef struct tbuf {
    char *p;
    size_t len, cap;
} tbuf;

static void tbuf_init(tbuf *b, size_t cap) {
    b->p = malloc(cap);
    b->len = 0;
    b->cap = b->p ? cap : 0;
    if (b->p) b->p[0] = '\0';
}

static void tbuf_add(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tbuf_add(tbuf *b, const char *fmt, ...) {
    if (!b->p) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= b->cap - b->len) {
        cb__test_fail(__FILE__, __LINE__, "tbuf: capacity %zu too small", b->cap);
        free(b->p);
        b->p = NULL;
        return;
    }
    b->len += (size_t)w;
}

/* The generous sanity bound on one large load: a quadratic loader took 17-26 s on a quiet
 * machine, a linear one takes well under a second even under ASan. The probe counts are the
 * real check; this only stops a pathological hang from passing. */
#define SCALE_MAX_NS (20LL * 1000 * 1000 * 1000)
#define SCALE_N 100000

static int load_counted(const tbuf *b, const char *name, cb_doc **doc, cb_error *err) {
    cb_error_clear(err);
    int64_t t0 = cb_clock_now_ns();
    int rc = cb_doc_load_string(b->p, b->len, name, doc, err);
    int64_t dt = cb_clock_now_ns() - t0;
    CB_CHECK_CMP_INT(dt, <, SCALE_MAX_NS);
    return rc;
}

static void test_large_map(void) {
    tbuf b;
    tbuf_init(&b, 32u * SCALE_N);
    for (int i = 0; i < SCALE_N; i++) tbuf_add(&b, "k%d: %d\n", i, i);
    if (!b.p) return;
    cb_doc *doc = NULL;
    cb_error err;
    CB_CHECK_EQ_INT(load_counted(&b, "big.yaml", &doc, &err), 0);
    if (doc) {
        CB_CHECK_EQ_INT(doc->root->n, SCALE_N);
        const cb_node *last = cb_node_get(doc->root, "k99999");
        CB_CHECK(last && strcmp(last->scalar, "99999") == 0);
        const cb_doc_load_stats *st = &doc->load_stats;
        CB_CHECK_EQ_INT(st->map_keys, SCALE_N);
        printf("# %zu keys: %zu probes\n", st->map_keys, st->key_probes);
        /* linear: under 8 slots inspected per key on average (a linear scan would be n/2) */
        CB_CHECK_CMP_INT(st->key_probes, >=, st->map_keys);
        CB_CHECK_CMP_INT(st->key_probes, <, 8 * st->map_keys);
        cb_doc_destroy(doc);
    }

    /* A duplicate near the end is still found, with both positions. */
    tbuf_add(&b, "k99990: again\n");
    doc = NULL;
    CB_CHECK_EQ_INT(load_counted(&b, "big.yaml", &doc, &err), CB_ECONFIG);
    CB_CHECK(doc == NULL);
    char buf[1024];
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "big.yaml:100001:1: duplicate key 'k99990' (first at line 99991, column 1)");
    free(b.p);
}

/* The same keys in many maps (each its own namespace), and maps nested in maps. */
static void test_many_maps(void) {
    tbuf b;
    tbuf_init(&b, 64u * SCALE_N);
    for (int i = 0; i < SCALE_N / 4; i++)
        tbuf_add(&b, "m%d: {a: 1, b: {a: 2, b: 3}, c: %d}\n", i, i);
    if (!b.p) return;
    cb_doc *doc = NULL;
    cb_error err;
    CB_CHECK_EQ_INT(load_counted(&b, "maps.yaml", &doc, &err), 0);
    if (doc) {
        CB_CHECK_EQ_INT(doc->root->n, SCALE_N / 4);
        const cb_node *m = cb_node_get(doc->root, "m24999");
        CB_CHECK(m && strcmp(cb_node_get(cb_node_get(m, "b"), "b")->scalar, "3") == 0);
        const cb_doc_load_stats *st = &doc->load_stats;
        CB_CHECK_EQ_INT(st->map_keys, SCALE_N / 4 * 6);
        CB_CHECK_CMP_INT(st->key_probes, <, 8 * st->map_keys);
        cb_doc_destroy(doc);
    }
    free(b.p);
    /* a key repeated in a nested map, then in its parent */
    const char *t = "a: {x: 1, y: {x: 2, z: 3}, z: 4, y: 5}\n";
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(t, strlen(t), "n.yaml", &doc, &err), CB_ECONFIG);
    char buf[1024];
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "n.yaml:1:34: duplicate key 'y' (first at line 1, column 11)");
}

static void test_many_aliases(void) {
    /* SCALE_N anchors, then SCALE_N aliases, the first referring to the earliest anchor (the
     * worst case for a table searched from its end) */
    tbuf b;
    tbuf_init(&b, 40u * SCALE_N);
    tbuf_add(&b, "anchors:\n");
    for (int i = 0; i < SCALE_N; i++) tbuf_add(&b, "  - &a%d v%d\n", i, i);
    tbuf_add(&b, "aliases:\n");
    for (int i = 0; i < SCALE_N; i++) tbuf_add(&b, "  - *a%d\n", i);
    if (!b.p) return;
    cb_doc *doc = NULL;
    cb_error err;
    CB_CHECK_EQ_INT(load_counted(&b, "alias.yaml", &doc, &err), 0);
    if (doc) {
        const cb_node *al = cb_node_get(doc->root, "aliases");
        CB_CHECK(al && al->n == SCALE_N);
        if (al && al->n == SCALE_N) {
            int bad = 0;
            char want[32];
            for (int i = 0; i < SCALE_N; i++) {
                snprintf(want, sizeof want, "v%d", i);
                bad += strcmp(al->items[i]->scalar, want) != 0;
            }
            CB_CHECK_EQ_INT(bad, 0);
        }
        const cb_doc_load_stats *st = &doc->load_stats;
        CB_CHECK_EQ_INT(st->anchors, SCALE_N);
        CB_CHECK_EQ_INT(st->aliases, SCALE_N);
        printf("# %zu anchors, %zu aliases: %zu probes\n", st->anchors, st->aliases,
               st->anchor_probes);
        CB_CHECK_CMP_INT(st->anchor_probes, <, 8 * (st->anchors + st->aliases));
        cb_doc_destroy(doc);
    }
    free(b.p);
}

/* YAML: an alias refers to the most recent complete node anchored with its name. */
static void test_anchor_redefined(void) {
    cb_doc *doc = load("a: &x 1\nb: *x\nc: &x [2]\nd: *x\ne: &x [&x 3, *x]\nf: *x\n");
    if (!doc) return;
    CB_CHECK_STR_EQ(cb_node_get(doc->root, "b")->scalar, "1");
    CB_CHECK_EQ_INT(cb_node_get(doc->root, "d")->kind, CB_NODE_SEQ);
    CB_CHECK_STR_EQ(cb_node_get(doc->root, "d")->items[0]->scalar, "2");
    const cb_node *e = cb_node_get(doc->root, "e");
    CB_CHECK_STR_EQ(e->items[1]->scalar, "3"); /* the inner &x, complete before the outer */
    const cb_node *f = cb_node_get(doc->root, "f");
    CB_CHECK(f->kind == CB_NODE_SEQ && f->n == 2);
    cb_doc_destroy(doc);

    /* at scale: 97 names anchored over and over; each alias gets the name's last node */
    tbuf b;
    tbuf_init(&b, 40u * SCALE_N);
    tbuf_add(&b, "anchors:\n");
    for (int i = 0; i < SCALE_N; i++) tbuf_add(&b, "  - &n%d v%d\n", i % 97, i);
    tbuf_add(&b, "aliases:\n");
    for (int j = 0; j < 97; j++) tbuf_add(&b, "  - *n%d\n", j);
    if (!b.p) return;
    cb_error err;
    CB_CHECK_EQ_INT(load_counted(&b, "redef.yaml", &doc, &err), 0);
    if (doc) {
        const cb_node *al = cb_node_get(doc->root, "aliases");
        int bad = 0;
        char want[32];
        for (int j = 0; j < 97 && al && al->n == 97; j++) {
            int last = (SCALE_N - 1) - ((SCALE_N - 1 - j) % 97); /* last i with i % 97 == j */
            snprintf(want, sizeof want, "v%d", last);
            bad += strcmp(al->items[j]->scalar, want) != 0;
        }
        CB_CHECK(al && al->n == 97);
        CB_CHECK_EQ_INT(bad, 0);
        CB_CHECK_CMP_INT(doc->load_stats.anchor_probes, <,
                         8 * (doc->load_stats.anchors + doc->load_stats.aliases));
        cb_doc_destroy(doc);
    }
    free(b.p);
}

/* Text at the 16 MiB maximum loads; one byte more is refused naming the file. */
static void test_size_limit(void) {
    const size_t max = 16u * 1024u * 1024u;
    char *text = malloc(max + 1);
    if (!text) return;
    memset(text, '#', max + 1); /* one long comment */
    text[max - 1] = '\n';
    text[max] = '\n';
    const char *dir = cb_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/huge.yaml", dir);
    cb_doc *doc = NULL;
    cb_error err;
    for (int extra = 0; extra < 2; extra++) {
        FILE *f = fopen(path, "wb");
        CB_CHECK(f != NULL);
        if (!f) break;
        CB_CHECK_EQ_INT(fwrite(text, 1, max + (size_t)extra, f), max + (size_t)extra);
        fclose(f);
        cb_error_clear(&err);
        int rc = cb_doc_load_file(path, &doc, &err);
        if (!extra) {
            CB_CHECK_EQ_INT(rc, 0);
            CB_CHECK(doc && doc->root == NULL);
            cb_doc_destroy(doc);
        } else {
            CB_CHECK_EQ_INT(rc, CB_ECONFIG);
            char buf[1024];
            fmt_err(&err, buf, sizeof buf);
            char want[600];
            snprintf(want, sizeof want,
                     "%s:1:1: file larger than 16777216 bytes (16 MiB, the maximum)", path);
            CB_CHECK_STR_EQ(buf, want);
        }
        /* The reader the CLI uses: the same inclusive limit. */
        char *t = NULL;
        size_t len = 0;
        cb_error_clear(&err);
        CB_CHECK_EQ_INT(cb_doc_read_file(path, &t, &len, &err), extra ? CB_ECONFIG : 0);
        CB_CHECK_EQ_INT(len, extra ? 0 : max);
        cb_free(t);
    }
    remove(path);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(text, max + 1, "s.yaml", &doc, &err), CB_ECONFIG);
    char buf[256];
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "s.yaml:1:1: document larger than 16777216 bytes (16 MiB, the maximum)");
    free(text);
}

/* Every allocation of a load may fail: the loader returns CB_ENOMEM, no doc and no leak (ASan),
 * including the hash tables' growth and the anchor names' scratch arena. */
static void test_alloc_failures(void) {
    tbuf b;
    tbuf_init(&b, 16384);
    for (int i = 0; i < 100; i++) tbuf_add(&b, "k%d: &a%d {x: %d}\n", i, i, i);
    for (int i = 0; i < 100; i++) tbuf_add(&b, "u%d: *a%d\n", i, i);
    if (!b.p) return;
    int failures = 0, rc = CB_ENOMEM;
    for (long k = 1; k < 10000 && rc == CB_ENOMEM; k++) {
        cb_doc *doc = NULL;
        cb_error err;
        cb_error_clear(&err);
        cb__alloc_fail_after(k);
        rc = cb_doc_load_string(b.p, b.len, "oom.yaml", &doc, &err);
        cb__alloc_fail_after(0);
        if (rc == CB_ENOMEM) {
            failures++;
            CB_CHECK(doc == NULL);
        } else {
            CB_CHECK_EQ_INT(rc, 0);
            CB_CHECK(doc && doc->root && doc->root->n == 200);
            cb_doc_destroy(doc);
        }
    }
    CB_CHECK_EQ_INT(rc, 0);
    CB_CHECK_CMP_INT(failures, >, 10);
    free(b.p);
}

static const char *k_bench = "name: demo\n"
                             "pipelines:\n"
                             "  - name: chain\n"
                             "    loadgen: {component: closed}\n"
                             "    stages:\n"
                             "      - id: 0\n"
                             "        name: src\n"
                             "        config: {bytes: 10}\n"
                             "      - id: 7\n"
                             "        name: sleeper\n"
                             "        config: {duration_us: 5}\n";

static void test_set(void) {
    cb_doc *doc = load(k_bench);
    if (!doc) return;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.0.stages.1.config.duration_us=50", &err), 0);
    const cb_node *st = cb_node_get(cb_node_get(doc->root, "pipelines")->items[0], "stages");
    CB_CHECK_STR_EQ(cb_node_get(cb_node_get(st->items[1], "config"), "duration_us")->scalar, "50");
    CB_CHECK_STR_EQ(cb_node_get(st->items[1], "config")->items[0]->file, "<--set>");
    /* by name and by id, new keys, flow values */
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.chain.stages.src.config.bytes=[1, 2]", &err), 0);
    CB_CHECK_EQ_INT(cb_node_get(cb_node_get(st->items[0], "config"), "bytes")->kind, CB_NODE_SEQ);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.chain.stages.sleeper.workers=4", &err), 0);
    CB_CHECK_STR_EQ(cb_node_get(st->items[1], "workers")->scalar, "4");
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.chain.loadgen.config={rate: 100, seed: 2}", &err), 0);
    const cb_node *lg = cb_node_get(cb_node_get(doc->root, "pipelines")->items[0], "loadgen");
    CB_CHECK_STR_EQ(cb_node_get(cb_node_get(lg, "config"), "rate")->scalar, "100");
    CB_CHECK_EQ_INT(cb_doc_set(doc, "name=\"50\"", &err), 0);
    CB_CHECK_EQ_INT(cb_node_get(doc->root, "name")->quoted, 1);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "new.deep.key=x", &err), 0);
    CB_CHECK_STR_EQ(cb_node_get(cb_node_get(cb_node_get(doc->root, "new"), "deep"), "key")->scalar, "x");
    CB_CHECK_EQ_INT(cb_doc_set(doc, "empty=", &err), 0);
    CB_CHECK(cb_node_is_null(cb_node_get(doc->root, "empty")));

    /* errors name the assignment and the segment */
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.3.name=x", &err), CB_ECONFIG);
    CB_CHECK_STR_EQ(err.msg, "--set 'pipelines.3.name=x': segment '3': index out of range "
                             "(the sequence has 1 items)");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.nope.name=x", &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "segment 'nope': no element with name or id 'nope'");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "name.x=1", &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "segment 'x': cannot index into scalar");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "novalue", &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "expected KEY=VALUE");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "a..b=1", &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "empty path segment");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "name=[1, 2", &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "--set 'name=[1, 2': value is not valid YAML");

    /* Positions are columns of the whole --set argument: the segment, the value, a value's
     * item, a syntax error in the value. */
    char buf[512];
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.3.name=x", &err), CB_ECONFIG);
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "<--set>:1:11: --set 'pipelines.3.name=x': segment '3': index out of "
                         "range (the sequence has 1 items)");
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "name.x=1", &err), CB_ECONFIG);
    CB_CHECK_EQ_INT(err.col, 6);
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "name=[1, 2", &err), CB_ECONFIG);
    CB_CHECK_EQ_INT(err.line, 1);
    CB_CHECK_EQ_INT(err.col, 11); /* cut short: the end of the argument */
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "name=[1, 2]]", &err), CB_ECONFIG);
    CB_CHECK_EQ_INT(err.col, 12); /* libyaml's position, in the argument */
    CB_CHECK_EQ_INT(cb_doc_set(doc, "pipelines.0.stages.sleeper.config={duration_us: 64k}", &err), 0);
    const cb_node *cfg = cb_node_get(st->items[1], "config");
    CB_CHECK_EQ_INT(cfg->col, 35);
    CB_CHECK_EQ_INT(cfg->line, 1);
    CB_CHECK_EQ_INT(cb_node_get(cfg, "duration_us")->col, 49);
    CB_CHECK_EQ_INT(cb_doc_set(doc, "fresh.key=", &err), 0);
    const cb_node *fresh = cb_node_get(doc->root, "fresh");
    CB_CHECK_EQ_INT(fresh->col, 1);
    CB_CHECK_EQ_INT(fresh->keys[0]->col, 7);
    CB_CHECK_EQ_INT(fresh->items[0]->col, 11);
    cb_doc_destroy(doc);

    /* on an empty document */
    doc = load("");
    if (!doc) return;
    CB_CHECK_EQ_INT(cb_doc_set(doc, "a.b=1", &err), 0);
    CB_CHECK_STR_EQ(cb_node_get(cb_node_get(doc->root, "a"), "b")->scalar, "1");
    cb_doc_destroy(doc);
}

/* Structural equality: kinds, scalar text, quoting, order. */
static int same_tree(const cb_node *a, const cb_node *b) {
    if (!a || !b) return a == b;
    if (a->kind != b->kind || a->n != b->n) return 0;
    if (a->kind == CB_NODE_SCALAR) return strcmp(a->scalar, b->scalar) == 0 && a->quoted == b->quoted;
    for (size_t i = 0; i < a->n; i++) {
        if (a->kind == CB_NODE_MAP && !same_tree(a->keys[i], b->keys[i])) return 0;
        if (!same_tree(a->items[i], b->items[i])) return 0;
    }
    return 1;
}

static void roundtrip(const char *text) {
    cb_doc *doc = load(text);
    if (!doc) return;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CB_CHECK_EQ_INT(cb_node_write_yaml(doc->root, f), 0);
    fclose(f);
    cb_doc *again = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_doc_load_string(buf, len, "again.yaml", &again, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) printf("# %s\n# --- written:\n%s\n", err.msg, buf);
    if (!rc && !same_tree(doc->root, again->root)) {
        cb__test_fail(__FILE__, __LINE__, "round trip differs; written:\n%s", buf);
    }
    cb_doc_destroy(again);
    cb_doc_destroy(doc);
    free(buf);
}

static void test_write_roundtrip(void) {
    roundtrip(k_bench);
    roundtrip("a: 'true'\nb: true\nc: \"1.5\"\nd: 1.5\ne: ''\nf:\ng: 'null'\nh: \"x: y\"\n"
              "i: \"# not a comment\"\nj: \"line\\nbreak\\ttab \\\"q\\\" \\\\\"\nk: '-'\nl: -5\n"
              "m: [[1, 2], [], {}, {a: [x]}]\nn: {'': 1, 'key with: colon': 2}\n"
              "o: \"  padded  \"\np: |\n  literal\n  block\nq: '@at'\nr: ' '\ns: '---'\n");
    roundtrip("- 1\n- [a, b]\n- {x: 1, y: {z: 2}}\n- - nested\n  - seq\n");
    roundtrip("?\n: empty plain key\nb: 1\n"); /* found by fuzz_config */
    roundtrip("just a scalar\n");
    roundtrip("[]\n");
    roundtrip("\"quoted root\"\n");
}

/* "a: &a [[..x..]]" (k brackets) then "b: [[..*a..]]" (j brackets): the alias's copy is nested
 * 1 + j + k deep. */
static void nest_text(char *buf, size_t size, int k, int j) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, size - off, "a: &a ");
    for (int i = 0; i < k; i++) buf[off++] = '[';
    buf[off++] = 'x';
    for (int i = 0; i < k; i++) buf[off++] = ']';
    off += (size_t)snprintf(buf + off, size - off, "\nb: ");
    for (int i = 0; i < j; i++) buf[off++] = '[';
    off += (size_t)snprintf(buf + off, size - off, "*a");
    for (int i = 0; i < j; i++) buf[off++] = ']';
    snprintf(buf + off, size - off, "\n");
}

/* Nesting counts through aliases: an alias may not copy a deep anchor below the 64-level
 * limit, and what loads writes back to YAML that loads again. */
static void test_alias_nesting(void) {
    char text[512];
    nest_text(text, sizeof text, 40, 23); /* 64 levels: the maximum */
    roundtrip(text);
    nest_text(text, sizeof text, 40, 24); /* 65 */
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(text, strlen(text), "t.yaml", &doc, &err), CB_ECONFIG);
    CB_CHECK(doc == NULL);
    char buf[512];
    fmt_err(&err, buf, sizeof buf);
    CB_CHECK_STR_EQ(buf, "t.yaml:2:28: document nested deeper than 64 levels (counting what "
                         "aliases copy)");
    /* The same depth written out, without aliases, is refused alike. */
    char plain[512];
    size_t off = 0;
    for (int i = 0; i < 65; i++) plain[off++] = '[';
    plain[off++] = 'x';
    for (int i = 0; i < 65; i++) plain[off++] = ']';
    plain[off] = '\0';
    cb_error_clear(&err);
    CB_CHECK_EQ_INT(cb_doc_load_string(plain, off, "t.yaml", &doc, &err), CB_ECONFIG);
    CB_CHECK_CONTAINS(err.msg, "document nested deeper than 64 levels");
}

static void test_suggest(void) {
    CB_CHECK_EQ_INT(cb_edit_distance("workrs", "workers"), 1);
    CB_CHECK_EQ_INT(cb_edit_distance("abc", "acb"), 1);
    CB_CHECK_EQ_INT(cb_edit_distance("", "abc"), 3);
    CB_CHECK_EQ_INT(cb_edit_distance("kitten", "sitting"), 3);
    const char *keys[] = {"id", "name", "component", "outputs", "workers"};
    CB_CHECK_STR_EQ(cb_suggest("workrs", keys, 5), "workers");
    CB_CHECK_STR_EQ(cb_suggest("compnent", keys, 5), "component");
    CB_CHECK(cb_suggest("zzzzzzzz", keys, 5) == NULL);
    CB_CHECK(cb_suggest("x", keys, 5) == NULL);
    const char *names[] = {"util.noop", "util.sleep"};
    CB_CHECK_STR_EQ(cb_suggest("util.nop", names, 2), "util.noop");
}

int main(void) {
    CB_RUN(test_positions);
    CB_RUN(test_nulls_and_empty);
    CB_RUN(test_anchors);
    CB_RUN(test_alias_bomb);
    CB_RUN(test_syntax_error);
    CB_RUN(test_duplicate_key);
    CB_RUN(test_multi_document);
    CB_RUN(test_load_file);
    CB_RUN(test_set);
    CB_RUN(test_write_roundtrip);
    CB_RUN(test_alias_nesting);
    CB_RUN(test_suggest);
    CB_RUN(test_large_map);
    CB_RUN(test_many_maps);
    CB_RUN(test_many_aliases);
    CB_RUN(test_anchor_redefined);
    CB_RUN(test_size_limit);
    CB_RUN(test_alloc_failures);
    return cb_test_done();
}
