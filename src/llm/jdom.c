/* llm/jdom.c - strict recursive-descent JSON reader (see jdom.h).
 *
 * Design: one pass over the text; each array or object collects its children on a growable
 * stack shared by the whole parse and copies them into the arena when it closes, so the DOM
 * costs one arena block per container and nothing is freed piecemeal. Strings are unescaped into
 * the arena. Depth is bounded (CB_JDOM_DEPTH_MAX) so hostile input cannot overflow the C stack.
 * Not thread-safe while parsing (one parser per call); the result is immutable. */
#include "llm/jdom.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "llm/unicode.h"

struct cb__jdom {
    cb_arena *arena;
    cb__jdom_node root;
};

typedef struct parser {
    const char *s;
    size_t len, pos;
    cb_arena *arena;
    cb__jdom_node *stack; /* children of the open containers (values and keys interleaved) */
    size_t top, cap;
    const char *name;
    cb_error *err;
    int depth;
} parser;

void cb__jdom_linecol(const char *text, size_t len, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            l++, c = 1;
        } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static int fail(parser *p, const char *what) {
    int line, col;
    cb__jdom_linecol(p->s, p->len, p->pos, &line, &col);
    cb_error_set(p->err, CB_EINVAL, "JSON: %s at byte %zu", what, p->pos);
    cb_error_at(p->err, p->name, line, col);
    return CB_EINVAL;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static int push(parser *p, const cb__jdom_node *n) {
    if (p->top == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        cb__jdom_node *s = cb_realloc(p->stack, cap * sizeof *s);
        if (!s)
            return cb_error_set(p->err, CB_ENOMEM, "JSON: out of memory");
        p->stack = s;
        p->cap = cap;
    }
    p->stack[p->top++] = *n;
    return 0;
}

static int hex4(parser *p, uint32_t *v) {
    if (p->len - p->pos < 4)
        return fail(p, "truncated \\u escape");
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        int d = c >= '0' && c <= '9'                     ? c - '0'
                : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                         : -1;
        if (d < 0)
            return fail(p, "bad hex digit in \\u escape");
        x = x * 16 + (uint32_t)d;
    }
    p->pos += 4;
    *v = x;
    return 0;
}

/* p->pos at the opening quote. The unescaped text is never longer than the escaped one. */
static int parse_string(parser *p, cb__jdom_node *n) {
    size_t start = ++p->pos, end = start;
    int plain = 1;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\') {
            plain = 0;
            end++;
        }
        end++;
    }
    if (end >= p->len)
        return fail(p, "unterminated string");
    char *o = cb_arena_alloc(p->arena, end - start + 1);
    if (!o)
        return cb_error_set(p->err, CB_ENOMEM, "JSON: out of memory");
    n->type = CB_JDOM_STR;
    n->v.str = o;
    size_t k = 0;
    if (plain) {
        for (size_t i = start; i < end; i++) {
            if ((unsigned char)p->s[i] < 0x20) {
                p->pos = i;
                return fail(p, "control character in string");
            }
        }
        memcpy(o, p->s + start, end - start);
        n->n = end - start;
        p->pos = end + 1;
        return 0;
    }
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20)
            return fail(p, "control character in string");
        if (c != '\\') {
            o[k++] = (char)c;
            p->pos++;
            continue;
        }
        char e = p->s[++p->pos];
        p->pos++;
        switch (e) {
        case '"':
            o[k++] = '"';
            break;
        case '\\':
            o[k++] = '\\';
            break;
        case '/':
            o[k++] = '/';
            break;
        case 'b':
            o[k++] = '\b';
            break;
        case 'f':
            o[k++] = '\f';
            break;
        case 'n':
            o[k++] = '\n';
            break;
        case 'r':
            o[k++] = '\r';
            break;
        case 't':
            o[k++] = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(p, &cp))
                return CB_EINVAL;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return fail(p, "unpaired low surrogate");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p->pos + 6 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return fail(p, "unpaired high surrogate");
                p->pos += 2;
                if (hex4(p, &lo))
                    return CB_EINVAL;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return fail(p, "bad low surrogate");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            k += cb__uni_encode(o + k, cp);
            break;
        }
        default:
            p->pos -= 2;
            return fail(p, "bad escape");
        }
    }
    if (p->pos != end)
        return fail(p, "bad escape at the end of a string");
    n->n = k;
    p->pos = end + 1;
    return 0;
}

static int parse_number(parser *p, cb__jdom_node *n) {
    size_t i = p->pos;
    if (i < p->len && p->s[i] == '-')
        i++;
    if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
        return fail(p, "bad number");
    if (p->s[i] == '0') {
        i++;
    } else {
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
    }
    if (i < p->len && p->s[i] == '.') {
        size_t d = ++i;
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
        if (i == d)
            return fail(p, "bad number");
    }
    if (i < p->len && (p->s[i] | 0x20) == 'e') {
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-'))
            i++;
        size_t d = i;
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
        if (i == d)
            return fail(p, "bad number");
    }
    char buf[64];
    if (i - p->pos >= sizeof buf)
        return fail(p, "number too long");
    memcpy(buf, p->s + p->pos, i - p->pos);
    buf[i - p->pos] = 0;
    n->type = CB_JDOM_NUM;
    n->v.num = strtod(buf, NULL);
    p->pos = i;
    return 0;
}

static int parse_value(parser *p, cb__jdom_node *n);

/* p->pos at '[' or '{'. */
static int parse_container(parser *p, cb__jdom_node *n, int obj) {
    if (++p->depth > CB_JDOM_DEPTH_MAX)
        return fail(p, "nesting too deep");
    char close = obj ? '}' : ']';
    size_t base = p->top, count = 0;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            cb__jdom_node k = {0}, v = {0};
            skip_ws(p);
            if (obj) {
                if (p->pos >= p->len || p->s[p->pos] != '"')
                    return fail(p, "expected a key");
                k.off = p->pos;
                int krc = parse_string(p, &k);
                if (krc)
                    return krc; /* CB_EINVAL, or CB_ENOMEM */
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':')
                    return fail(p, "expected ':'");
                p->pos++;
                skip_ws(p);
            }
            int rc = parse_value(p, &v);
            if (rc)
                return rc;
            if ((obj && push(p, &k)) || push(p, &v))
                return CB_ENOMEM;
            count++;
            skip_ws(p);
            if (p->pos >= p->len)
                return fail(p, obj ? "unterminated object" : "unterminated array");
            char c = p->s[p->pos++];
            if (c == close)
                break;
            if (c != ',') {
                p->pos--;
                return fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            }
        }
    }
    n->type = obj ? CB_JDOM_OBJ : CB_JDOM_ARR;
    n->n = count;
    if (count) {
        cb__jdom_node *items = cb_arena_alloc(p->arena, count * sizeof *items * (obj ? 2 : 1));
        if (!items)
            return cb_error_set(p->err, CB_ENOMEM, "JSON: out of memory");
        cb__jdom_node *keys = items + count;
        size_t stride = obj ? 2 : 1;
        for (size_t i = 0; i < count; i++) {
            if (obj)
                keys[i] = p->stack[base + i * 2];
            items[i] = p->stack[base + i * stride + stride - 1];
        }
        n->v.items = items;
        n->keys = obj ? keys : NULL;
    }
    p->top = base;
    p->depth--;
    return 0;
}

static int literal(parser *p, const char *word) {
    size_t l = strlen(word);
    if (p->len - p->pos < l || memcmp(p->s + p->pos, word, l) != 0)
        return fail(p, "unexpected character");
    p->pos += l;
    return 0;
}

static int parse_value(parser *p, cb__jdom_node *n) {
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, "unexpected end of input");
    n->off = p->pos;
    switch (p->s[p->pos]) {
    case '{':
        return parse_container(p, n, 1);
    case '[':
        return parse_container(p, n, 0);
    case '"':
        return parse_string(p, n);
    case 't':
        n->type = CB_JDOM_BOOL;
        n->v.b = 1;
        return literal(p, "true");
    case 'f':
        n->type = CB_JDOM_BOOL;
        n->v.b = 0;
        return literal(p, "false");
    case 'n':
        n->type = CB_JDOM_NULL;
        return literal(p, "null");
    default:
        return parse_number(p, n);
    }
}

int cb__jdom_parse(const char *text, size_t len, const char *name, cb__jdom **out, cb_error *err) {
    *out = NULL;
    cb__jdom *d = cb_calloc(1, sizeof *d);
    if (!d || !(d->arena = cb_arena_create())) {
        cb_free(d);
        return cb_error_set(err, CB_ENOMEM, "JSON: out of memory");
    }
    parser p = {.s = text, .len = len, .arena = d->arena, .name = name, .err = err};
    int rc = parse_value(&p, &d->root);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.len)
            rc = fail(&p, "trailing characters after the value");
    }
    cb_free(p.stack);
    if (rc) {
        cb__jdom_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

const cb__jdom_node *cb__jdom_root(const cb__jdom *d) { return &d->root; }

void cb__jdom_free(cb__jdom *d) {
    if (!d)
        return;
    cb_arena_destroy(d->arena);
    cb_free(d);
}

const cb__jdom_node *cb__jdom_get(const cb__jdom_node *obj, const char *key) {
    if (!obj || obj->type != CB_JDOM_OBJ)
        return NULL;
    size_t kl = strlen(key);
    for (size_t i = obj->n; i-- > 0;) {
        if (obj->keys[i].n == kl && memcmp(obj->keys[i].v.str, key, kl) == 0)
            return &obj->v.items[i];
    }
    return NULL;
}
