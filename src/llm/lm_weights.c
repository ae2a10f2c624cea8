/* llm/lm_weights.c - decoder model parameters: the tensor table, safetensors loading (one file
 * or index.json shards), seeded random initialisation (see lm_weights.h for the contract).
 *
 * Design: the table (cb_lm_weights_table) is the single list of what a config needs; loading
 * and random initialisation both walk it, so they cannot disagree about names or shapes. One
 * cb_malloc'd arena holds every tensor at a 64-byte aligned offset; ptr[] maps (layer, kind) to
 * its tensor. Shards are read one at a time and closed before the next (the safetensors reader
 * holds a whole file). Thread-safety: a built cb_lm_weights is read-only. */
#include "llm/lm_weights.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/cfgtree.h"
#include "core/rng.h"
#include "llm/jdom.h"
#include "llm/lm_kernels.h"
#include "nn/safetensors.h"

struct cb_lm_weights {
    cb_lm_config cfg;
    cb_lm_dtype dtype;
    int random;
    int packed;
    int n_ignored;
    char first_ignored[CB_LM_TENSOR_NAME_MAX];
    size_t bytes;
    unsigned char *arena;
    int n;                  /* table entries */
    cb_lm_tensor_spec *tab; /* n entries */
    size_t *off;            /* n arena offsets */
    void **ptr;             /* [n_layers * CB_LM_W_LAYER_KINDS + 3], NULL where absent */
};

uint16_t cb_lm_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ---- The table ---------------------------------------------------------------------------- */

static const char *const k_suffix[CB_LM_W_LAYER_KINDS] = {
#define CB_LM_X(kind, suffix) suffix,
    CB_LM_LAYER_TENSORS(CB_LM_X)
#undef CB_LM_X
};

/* The shape of a per-layer kind for c; 0 dims when c has no such tensor. */
static int layer_shape(const cb_lm_config *c, cb_lm_wkind k, int64_t dims[2]) {
    int64_t h = c->hidden, q = cb_lm_config_q_dim(c), kv = cb_lm_config_kv_dim(c);
    int64_t f = c->intermediate;
    switch (k) {
    case CB_LM_W_ATTN_NORM:
    case CB_LM_W_MLP_NORM:
        dims[0] = h;
        return 1;
    case CB_LM_W_Q:
        dims[0] = q;
        dims[1] = h;
        return 2;
    case CB_LM_W_K:
    case CB_LM_W_V:
        dims[0] = kv;
        dims[1] = h;
        return 2;
    case CB_LM_W_O:
        dims[0] = h;
        dims[1] = q;
        return 2;
    case CB_LM_W_Q_BIAS:
        dims[0] = q;
        return c->qkv_bias;
    case CB_LM_W_K_BIAS:
    case CB_LM_W_V_BIAS:
        dims[0] = kv;
        return c->qkv_bias;
    case CB_LM_W_O_BIAS:
        dims[0] = h;
        return c->o_bias;
    case CB_LM_W_Q_NORM:
    case CB_LM_W_K_NORM:
        dims[0] = c->head_dim;
        return c->qk_norm;
    case CB_LM_W_GATE:
    case CB_LM_W_UP:
        dims[0] = f;
        dims[1] = h;
        return 2;
    case CB_LM_W_DOWN:
        dims[0] = h;
        dims[1] = f;
        return 2;
    default:
        return 0;
    }
}

static void put(cb_lm_tensor_spec *out, int cap, int i, cb_lm_wkind kind, int layer, int ndim,
                int64_t d0, int64_t d1, const char *name) {
    if (i >= cap)
        return;
    cb_lm_tensor_spec *s = &out[i];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->kind = kind;
    s->layer = layer;
    s->ndim = ndim;
    s->dims[0] = d0;
    s->dims[1] = ndim == 2 ? d1 : 0;
}

int cb_lm_weights_table(const cb_lm_config *c, cb_lm_tensor_spec *out, int cap) {
    int n = 0;
    put(out, cap, n++, CB_LM_W_EMBED, -1, 2, c->vocab, c->hidden, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        for (int k = 0; k < CB_LM_W_LAYER_KINDS; k++) {
            int64_t d[2] = {0, 0};
            int nd = layer_shape(c, (cb_lm_wkind)k, d);
            if (!nd)
                continue;
            char name[CB_LM_TENSOR_NAME_MAX];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, k_suffix[k]);
            put(out, cap, n++, (cb_lm_wkind)k, l, nd, d[0], d[1], name);
        }
    }
    put(out, cap, n++, CB_LM_W_NORM, -1, 1, c->hidden, 0, "model.norm.weight");
    if (!c->tied)
        put(out, cap, n++, CB_LM_W_LM_HEAD, -1, 2, c->vocab, c->hidden, "lm_head.weight");
    return n;
}

static int slot(const cb_lm_config *c, cb_lm_wkind kind, int layer) {
    if (kind >= CB_LM_W_LAYER_KINDS)
        return (int)c->n_layers * CB_LM_W_LAYER_KINDS + (kind - CB_LM_W_LAYER_KINDS);
    return layer * CB_LM_W_LAYER_KINDS + kind;
}

static size_t spec_numel(const cb_lm_tensor_spec *s) {
    return (size_t)s->dims[0] * (size_t)(s->ndim == 2 ? s->dims[1] : 1);
}

static cb_lm_dtype dtype_of(const cb_lm_weights *w, const cb_lm_tensor_spec *s) {
    return s->ndim == 2 ? w->dtype : CB_LM_F32;
}

/* ---- Accessors ---------------------------------------------------------------------------- */

const void *cb_lm_weights_get(const cb_lm_weights *w, cb_lm_wkind kind, int layer) {
    if (kind < 0 || kind >= CB_LM_W_KINDS)
        return NULL;
    if (kind == CB_LM_W_LM_HEAD && w->cfg.tied)
        kind = CB_LM_W_EMBED;
    if (kind < CB_LM_W_LAYER_KINDS && (layer < 0 || layer >= w->cfg.n_layers))
        return NULL;
    return w->ptr[slot(&w->cfg, kind, layer)];
}

cb_lm_dtype cb_lm_weights_dtype_of(const cb_lm_weights *w, cb_lm_wkind kind) {
    int64_t d[2];
    int matrix = kind == CB_LM_W_EMBED || kind == CB_LM_W_LM_HEAD ||
                 (kind < CB_LM_W_LAYER_KINDS && layer_shape(&w->cfg, kind, d) == 2);
    return matrix ? w->dtype : CB_LM_F32;
}

const cb_lm_config *cb_lm_weights_config(const cb_lm_weights *w) { return &w->cfg; }
size_t cb_lm_weights_bytes(const cb_lm_weights *w) { return w->bytes; }
int cb_lm_weights_random(const cb_lm_weights *w) { return w->random; }
int cb_lm_weights_packed(const cb_lm_weights *w) { return w->packed; }
int cb_lm_weights_ignored(const cb_lm_weights *w, const char **first) {
    if (first)
        *first = w->first_ignored;
    return w->n_ignored;
}

void cb_lm_weights_destroy(cb_lm_weights *w) {
    if (!w)
        return;
    cb_free(w->arena);
    cb_free(w->tab);
    cb_free(w->off);
    cb_free(w->ptr);
    cb_free(w);
}

/* The table, offsets and arena for c (contents zero). */
static int layout(const cb_lm_config *c, cb_lm_dtype dt, int packed, cb_lm_weights **out,
                  cb_error *err) {
    int rc = cb_lm_config_check(c, err);
    if (rc)
        return rc;
    cb_lm_weights *w = cb_calloc(1, sizeof *w);
    if (!w)
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    w->cfg = *c;
    w->dtype = dt;
    w->packed = packed;
    w->n = cb_lm_weights_table(c, NULL, 0);
    w->tab = cb_calloc((size_t)w->n, sizeof *w->tab);
    w->off = cb_calloc((size_t)w->n, sizeof *w->off);
    w->ptr = cb_calloc((size_t)CB_LM_TABLE_MAX(c->n_layers), sizeof *w->ptr);
    if (!w->tab || !w->off || !w->ptr)
        goto oom;
    cb_lm_weights_table(c, w->tab, w->n);
    size_t total = 0;
    for (int i = 0; i < w->n; i++) {
        const cb_lm_tensor_spec *t = &w->tab[i];
        size_t b = spec_numel(t) * (dtype_of(w, t) == CB_LM_F32 ? 4 : 2);
        if (packed && t->ndim == 2)
            b = cb__lm_packed_bytes(t->dims[0], t->dims[1], dt);
        w->off[i] = total;
        total += (b + 63) & ~(size_t)63;
        if (total > CB_LM_WEIGHTS_MAX_BYTES) {
            cb_lm_weights_destroy(w);
            return cb_error_set(err, CB_ECONFIG, "model %s: weights need more than %zu bytes",
                                c->name, CB_LM_WEIGHTS_MAX_BYTES);
        }
    }
    w->bytes = total;
    w->arena = cb_malloc(total + 64);
    if (!w->arena)
        goto oom;
    /* cb_malloc aligns to 16; round the base up to 64. */
    unsigned char *base = w->arena + ((64 - ((uintptr_t)w->arena & 63)) & 63);
    for (int i = 0; i < w->n; i++)
        w->ptr[slot(c, w->tab[i].kind, w->tab[i].layer)] = base + w->off[i];
    *out = w;
    return 0;
oom:
    cb_lm_weights_destroy(w);
    return cb_error_set(err, CB_ENOMEM, "out of memory");
}

/* ---- Random initialisation ---------------------------------------------------------------- */

static void fill_random(cb_lm_weights *w, uint64_t seed) {
    /* Four 16-bit uniforms u_j in [0, 65535]: their sum less 2 * 65535 is an integer with mean 0
     * and variance 4 * (65536^2 - 1) / 12, scaled to standard deviation 0.02. */
    const float scale = (float)(0.02 / sqrt(4.0 * (65536.0 * 65536.0 - 1) / 12.0));
    for (int i = 0; i < w->n; i++) {
        const cb_lm_tensor_spec *s = &w->tab[i];
        void *p = w->ptr[slot(&w->cfg, s->kind, s->layer)];
        size_t n = spec_numel(s);
        int is_norm = s->kind == CB_LM_W_ATTN_NORM || s->kind == CB_LM_W_MLP_NORM ||
                      s->kind == CB_LM_W_Q_NORM || s->kind == CB_LM_W_K_NORM ||
                      s->kind == CB_LM_W_NORM;
        if (s->ndim == 1) { /* norms 1, biases 0 (the arena is cb_malloc'd: not zeroed) */
            for (size_t j = 0; j < n; j++)
                ((float *)p)[j] = is_norm ? 1.0f : 0.0f;
            continue;
        }
        cb_rng r;
        cb_rng_seed(&r, seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1)));
        for (size_t j = 0; j < n; j++) {
            uint64_t u = cb_rng_u64(&r);
            int32_t sum =
                (int32_t)((u & 0xFFFF) + ((u >> 16) & 0xFFFF) + ((u >> 32) & 0xFFFF) + (u >> 48)) -
                2 * 65535;
            float v = (float)sum * scale;
            if (w->dtype == CB_LM_F32)
                ((float *)p)[j] = v;
            else
                ((uint16_t *)p)[j] = cb_lm_f32_to_bf16(v);
        }
    }
    w->random = 1;
}

/* ---- Loading ------------------------------------------------------------------------------ */

static float half_to_f32(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0    ? ldexpf((float)m, -24)
              : e == 31 ? (m ? NAN : INFINITY)
                        : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static float read_elem(const unsigned char *p, cb_safetensors_dtype dt, size_t j) {
    uint16_t h;
    switch (dt) {
    case CB_SAFETENSORS_F32: {
        float f;
        memcpy(&f, p + 4 * j, 4);
        return f;
    }
    case CB_SAFETENSORS_F64: {
        double d;
        memcpy(&d, p + 8 * j, 8);
        return (float)d;
    }
    case CB_SAFETENSORS_BF16:
        memcpy(&h, p + 2 * j, 2);
        return cb_lm_bf16_to_f32(h);
    default:
        memcpy(&h, p + 2 * j, 2);
        return half_to_f32(h);
    }
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *dims) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", d ? ", " : "", (long long)dims[d]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

/* Copies file tensor t into table entry i, converting; checks shape and dtype. */
static int copy_tensor(cb_lm_weights *w, int i, const cb_safetensors_tensor *t, const char *path,
                       cb_error *err) {
    const cb_lm_tensor_spec *s = &w->tab[i];
    int same = t->ndim == s->ndim;
    for (int d = 0; same && d < s->ndim; d++)
        same = t->dims[d] == s->dims[d];
    if (!same) {
        char have[160], need[64];
        shape_str(have, sizeof have, t->ndim, t->dims);
        shape_str(need, sizeof need, s->ndim, s->dims);
        cb_error_set(err, CB_EINVAL, "%s: file has %s, the config needs %s", s->name, have, need);
        cb_error_at(err, path, 0, 0);
        return CB_EINVAL;
    }
    cb_safetensors_dtype dt = t->dtype;
    if (dt != CB_SAFETENSORS_F32 && dt != CB_SAFETENSORS_BF16 && dt != CB_SAFETENSORS_F16 &&
        dt != CB_SAFETENSORS_F64) {
        cb_error_set(err, CB_EINVAL, "%s: dtype %s is not a float type (F32, BF16, F16, F64)",
                     s->name, cb_safetensors_dtype_name(dt));
        cb_error_at(err, path, 0, 0);
        return CB_EINVAL;
    }
    void *p = w->ptr[slot(&w->cfg, s->kind, s->layer)];
    size_t n = spec_numel(s);
    const unsigned char *src = t->data;
    cb_lm_dtype to = dtype_of(w, s);
    if ((to == CB_LM_F32 && dt == CB_SAFETENSORS_F32) ||
        (to == CB_LM_BF16 && dt == CB_SAFETENSORS_BF16)) {
        memcpy(p, src, t->bytes);
    } else if (to == CB_LM_F32) {
        for (size_t j = 0; j < n; j++)
            ((float *)p)[j] = read_elem(src, dt, j);
    } else {
        for (size_t j = 0; j < n; j++)
            ((uint16_t *)p)[j] = cb_lm_f32_to_bf16(read_elem(src, dt, j));
    }
    return 0;
}

static int table_find(const cb_lm_weights *w, const char *name) {
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->tab[i].name, name) == 0)
            return i;
    return -1;
}

static void note_ignored(cb_lm_weights *w, const char *name) {
    if (!w->n_ignored++)
        snprintf(w->first_ignored, sizeof w->first_ignored, "%s", name);
}

static int missing(const cb_lm_tensor_spec *s, const char *path, const char *where, cb_error *err) {
    char need[64];
    shape_str(need, sizeof need, s->ndim, s->dims);
    cb_error_set(err, CB_EINVAL, "%s: missing from %s (the config needs %s)", s->name, where, need);
    cb_error_at(err, path, 0, 0);
    return CB_EINVAL;
}

/* Loads the entries i with shard[i] == want (all when shard is NULL) from one file. */
static int load_file(cb_lm_weights *w, const char *path, const int *shard, int want,
                     cb_error *err) {
    cb_safetensors *f = NULL;
    int rc = cb_safetensors_open(path, &f, err);
    if (rc)
        return rc;
    for (int i = 0; i < w->n && !rc; i++) {
        if (shard && shard[i] != want)
            continue;
        const cb_safetensors_tensor *t = cb_safetensors_find(f, w->tab[i].name);
        rc = t ? copy_tensor(w, i, t, path, err) : missing(&w->tab[i], path, path, err);
    }
    for (int j = 0; j < cb_safetensors_count(f) && !rc && !shard; j++) {
        const char *name = cb_safetensors_at(f, j)->name; /* shards: counted from weight_map */
        if (table_find(w, name) < 0)
            note_ignored(w, name);
    }
    cb_safetensors_close(f);
    return rc;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* model.safetensors.index.json: {"weight_map": {name: file}} (other keys ignored). */
static int load_index(cb_lm_weights *w, const char *path, cb_error *err) {
    char *text = NULL, dir[4096], shard_path[4096];
    size_t len = 0;
    int rc = cb_doc_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    cb__jdom *d = NULL;
    int *shard = NULL;
    const cb__jdom_node **files = NULL;
    int n_files = 0;
    if ((rc = cb__jdom_parse(text, len, path, &d, err)))
        goto done;
    const cb__jdom_node *map = cb__jdom_get(cb__jdom_root(d), "weight_map");
    if (!map || map->type != CB_JDOM_OBJ) {
        int line = 1, col = 1;
        if (map)
            cb__jdom_linecol(text, len, map->off, &line, &col);
        rc = cb_error_set(err, CB_EINVAL, "expected an object of tensor name -> file");
        cb_error_at(err, path, line, col);
        cb_error_key(err, "weight_map");
        goto done;
    }
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    shard = cb_calloc((size_t)w->n, sizeof *shard);
    files = cb_calloc(CB_LM_SHARDS_MAX, sizeof *files);
    if (!shard || !files) {
        rc = cb_error_set(err, CB_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < w->n; i++) {
        const cb__jdom_node *fn = cb__jdom_get(map, w->tab[i].name);
        if (!fn) {
            rc = missing(&w->tab[i], path, "the index's weight_map", err);
            goto done;
        }
        if (fn->type != CB_JDOM_STR || !fn->n || fn->v.str[0] == '/' || strstr(fn->v.str, "..")) {
            int line = 1, col = 1;
            cb__jdom_linecol(text, len, fn->off, &line, &col);
            rc = cb_error_set(err, CB_EINVAL, "expected a file name in the index's directory");
            cb_error_at(err, path, line, col);
            cb_error_key(err, w->tab[i].name);
            goto done;
        }
        int k = 0;
        while (k < n_files && strcmp(files[k]->v.str, fn->v.str) != 0)
            k++;
        if (k == n_files) {
            if (n_files == CB_LM_SHARDS_MAX) {
                rc = cb_error_set(err, CB_EINVAL, "more than %d shard files", CB_LM_SHARDS_MAX);
                cb_error_at(err, path, 0, 0);
                goto done;
            }
            files[n_files++] = fn;
        }
        shard[i] = k;
    }
    for (size_t j = 0; j < map->n; j++)
        if (table_find(w, map->keys[j].v.str) < 0)
            note_ignored(w, map->keys[j].v.str);
    for (int k = 0; k < n_files && !rc; k++) {
        if ((size_t)snprintf(shard_path, sizeof shard_path, "%s/%s", dir, files[k]->v.str) >=
            sizeof shard_path) {
            rc =
                cb_error_set(err, CB_EINVAL, "shard path longer than %zu bytes", sizeof shard_path);
            cb_error_at(err, path, 0, 0);
            break;
        }
        rc = load_file(w, shard_path, shard, k, err);
    }
done:
    cb_free(files);
    cb_free(shard);
    cb__jdom_free(d);
    cb_free(text);
    return rc;
}

/* Every matrix from rows (as loaded or generated, at the start of its slot) to the packed
 * layout, through one temporary of the largest. */
static int pack_matrices(cb_lm_weights *w, cb_error *err) {
    size_t most = 0;
    for (int i = 0; i < w->n; i++)
        if (w->tab[i].ndim == 2 && spec_numel(&w->tab[i]) > most)
            most = spec_numel(&w->tab[i]);
    const size_t es = w->dtype == CB_LM_F32 ? 4 : 2;
    void *tmp = cb_malloc(most * es);
    if (!tmp)
        return cb_error_set(err, CB_ENOMEM, "weights: out of memory (packing, %zu bytes)",
                            most * es);
    for (int i = 0; i < w->n; i++) {
        const cb_lm_tensor_spec *t = &w->tab[i];
        if (t->ndim != 2)
            continue;
        void *p = w->ptr[slot(&w->cfg, t->kind, t->layer)];
        memcpy(tmp, p, spec_numel(t) * es);
        cb__lm_pack(p, tmp, t->dims[0], t->dims[1], w->dtype);
    }
    cb_free(tmp);
    return 0;
}

int cb_lm_weights_create(const cb_lm_config *c, const cb_lm_weights_opts *o, cb_lm_weights **out,
                         cb_error *err) {
    cb_lm_weights_opts def = CB_LM_WEIGHTS_OPTS_DEFAULT;
    if (!o)
        o = &def;
    if (o->dtype != CB_LM_F32 && o->dtype != CB_LM_BF16)
        return cb_error_set(err, CB_EINVAL, "weights: precision must be float32 or bfloat16");
    cb_lm_weights *w = NULL;
    int rc = layout(c, o->dtype, o->packed != 0, &w, err);
    if (rc)
        return rc;
    if (!o->path) {
        fill_random(w, o->seed);
        if (w->packed && pack_matrices(w, err)) {
            cb_lm_weights_destroy(w);
            return CB_ENOMEM;
        }
        *out = w;
        return 0;
    }
    char path[4096];
    int len = snprintf(path, sizeof path, "%s", o->path);
    if (is_dir(o->path)) {
        len = snprintf(path, sizeof path, "%s/model.safetensors", o->path);
        if (!is_file(path))
            len = snprintf(path, sizeof path, "%s/model.safetensors.index.json", o->path);
    }
    if (len < 0 || (size_t)len >= sizeof path)
        rc = cb_error_set(err, CB_EINVAL, "weights: path longer than %zu bytes", sizeof path);
    else
        rc = ends_with(path, ".json") ? load_index(w, path, err) : load_file(w, path, NULL, 0, err);
    if (!rc && w->packed)
        rc = pack_matrices(w, err);
    if (rc) {
        cb_lm_weights_destroy(w);
        return rc;
    }
    *out = w;
    return 0;
}
