/* stages/data/images.c - data.images: an ImageFolder tree of JPEG/PNG files as image batches.
 *
 * What: a dataset stage over `path` laid out like torchvision's ImageFolder: one folder per
 * class (class index = position of the folder name in the sorted union of class names), holding
 * .jpg/.jpeg/.png files (extension case-insensitive; files further down in subfolders count
 * too; anything else is ignored). When `path` has a `train` folder and a `val` and/or `test`
 * folder, each of those is a split (train, then val, then test) with class folders inside;
 * otherwise `path` itself is the one split, train. Each batch holds `batch_size` images of the
 * split's per-epoch shuffled order (a last partial batch is dropped). With `decode: true` the
 * prefetch threads read and decode (U8_HWC RGB); with `decode: false` the batch carries the
 * file bytes (ENCODED, format sniffed from the magic bytes) for vision.decode, so decoding is
 * timed as a stage of its own. Each image's path relative to `path` travels in the batch, so a
 * decode error names the file.
 *
 * Design: create() walks the tree (the runtime needs the batch counts right after create) into
 * one name blob and a (name, label) array per split. make() stats the batch's files, allocates
 * the ENCODED batch once, reads each file into it and, with decode, hands it to the shared
 * decoder (vision/image.c).
 *
 * Thread-safety: the file lists are read-only after create; make() runs concurrently in
 * prefetch threads and only reads them. Ownership: the state owns the lists (host->alloc, freed
 * in destroy after the prefetch threads are joined); each query gets a fresh batch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "colobench/stage.h"
#include "stages/data/data.h"
#include "stages/util/util.h"
#include "stages/vision/image.h"

enum { P_PATH = CB_DATA_P_COUNT, P_DECODE, P_COUNT };

static const cb_param_def cb_images_params[P_COUNT] = {
    CB_DATA_COMMON_PARAMS,
    [P_PATH] = {"path", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "dir",
                "root of an ImageFolder tree (class folders, or train/ and val/ with class "
                "folders); required"},
    [P_DECODE] = {"decode", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                  "true: decode to U8_HWC in the prefetch threads; false: file bytes (ENCODED) "
                  "for vision.decode"},
};

#define IMAGES_MAX_FILES (1u << 24)
#define IMAGES_MAX_CLASSES 1000000u
#define IMAGES_MAX_DEPTH 16
#define IMAGES_MAX_FILE_BYTES ((uint64_t)1 << 30)

typedef struct cb_img_entry {
    uint64_t name; /* offset of the relative path in names */
    int32_t label;
} cb_img_entry;

typedef struct cb_img_split {
    cb_img_entry *e;
    size_t n, cap;
} cb_img_split;

typedef struct cb_images_state {
    cb_data_common c;
    char root[CB_DATA_MAX_PATH];
    int decode;
    char *names;                 /* blob of NUL-terminated relative paths */
    size_t names_len, names_cap;
    char **classes;              /* sorted unique class names (into class_blob) */
    size_t n_classes;
    size_t *class_off;           /* while scanning: offsets of class names in class_blob */
    size_t n_class_off, class_off_cap;
    char *class_blob;
    size_t class_blob_len, class_blob_cap;
    cb_img_split split[CB_MAX_SPLITS];
} cb_images_state;

static int cb__img_is_image(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
                   strcasecmp(dot, ".png") == 0);
}

static int cb__img_str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends rel (a relative path) to the name blob; its offset in *off. */
static int cb__img_add_name(cb_images_state *s, const char *rel, uint64_t *off, cb_error *err) {
    size_t len = strlen(rel) + 1;
    if (cb__data_grow(s->c.host, (void **)&s->names, &s->names_cap, s->names_len + len, 1,
                      (size_t)1 << 32))
        return cb_util_error(err, CB_ENOMEM, "too many image paths or out of memory");
    memcpy(s->names + s->names_len, rel, len);
    *off = s->names_len;
    s->names_len += len;
    return CB_OK;
}

/* Collects image files under root/rel (recursively, sorted) into split sp with label. */
static int cb__img_walk(cb_images_state *s, int sp, const char *rel, int32_t label, int depth,
                        cb_error *err) {
    if (depth > IMAGES_MAX_DEPTH)
        return cb_util_error(err, CB_EINVAL, "'%s/%s': folders nested deeper than %d", s->root,
                             rel, IMAGES_MAX_DEPTH);
    char dir[CB_DATA_MAX_PATH];
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", s->root, rel) >= sizeof dir)
        return cb_util_error(err, CB_EINVAL, "path too long: '%s/%s'", s->root, rel);
    cb_data_dir d;
    int rc = cb__data_list_dir(s->c.host, dir, &d, err);
    if (rc) return rc;
    char sub[CB_DATA_MAX_PATH];
    for (size_t i = 0; i < d.n && rc == CB_OK; i++) {
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", rel, d.names[i]) >= sizeof sub) {
            rc = cb_util_error(err, CB_EINVAL, "path too long: '%s/%s'", rel, d.names[i]);
            break;
        }
        if (d.is_dir[i]) {
            rc = cb__img_walk(s, sp, sub, label, depth + 1, err);
            continue;
        }
        if (!cb__img_is_image(d.names[i])) continue;
        cb_img_split *p = &s->split[sp];
        if (cb__data_grow(s->c.host, (void **)&p->e, &p->cap, p->n + 1, sizeof *p->e,
                          IMAGES_MAX_FILES)) {
            rc = cb_util_error(err, CB_ENOMEM, "more than %u images or out of memory",
                               IMAGES_MAX_FILES);
            break;
        }
        rc = cb__img_add_name(s, sub, &p->e[p->n].name, err);
        if (rc == CB_OK) p->e[p->n++].label = label;
    }
    cb__data_dir_free(s->c.host, &d);
    return rc;
}

/* Adds the class folder names of split folder `rel` ("" = root) to the class list. */
static int cb__img_collect_classes(cb_images_state *s, const char *rel, cb_error *err) {
    char dir[CB_DATA_MAX_PATH];
    snprintf(dir, sizeof dir, "%s%s%s", s->root, rel[0] ? "/" : "", rel);
    cb_data_dir d;
    int rc = cb__data_list_dir(s->c.host, dir, &d, err);
    if (rc) return rc;
    /* Offsets first (the blob moves while it grows), pointers after. */
    for (size_t i = 0; i < d.n && rc == CB_OK; i++) {
        if (!d.is_dir[i]) continue;
        size_t len = strlen(d.names[i]) + 1;
        if (cb__data_grow(s->c.host, (void **)&s->class_blob, &s->class_blob_cap,
                          s->class_blob_len + len, 1, (size_t)1 << 30) ||
            cb__data_grow(s->c.host, (void **)&s->class_off, &s->class_off_cap,
                          s->n_class_off + 1, sizeof *s->class_off, IMAGES_MAX_CLASSES)) {
            rc = cb_util_error(err, CB_ENOMEM, "too many class folders or out of memory");
            break;
        }
        memcpy(s->class_blob + s->class_blob_len, d.names[i], len);
        s->class_off[s->n_class_off++] = s->class_blob_len;
        s->class_blob_len += len;
    }
    cb__data_dir_free(s->c.host, &d);
    return rc;
}

static int32_t cb__img_class_index(const cb_images_state *s, const char *name) {
    size_t lo = 0, hi = s->n_classes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->classes[mid], name);
        if (c == 0) return (int32_t)mid;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return -1;
}

/* Lists the splits, the classes and every split's images. */
static int cb__img_scan(cb_images_state *s, cb_error *err) {
    struct stat st;
    if (stat(s->root, &st) != 0)
        return cb_util_error(err, CB_EIO, "path '%s': %s", s->root, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return cb_util_error(err, CB_EINVAL, "path '%s' is not a directory", s->root);
    static const char *const split_dirs[] = {"train", "val", "test"};
    const char *splits[3];
    int n_splits = 0;
    char p[CB_DATA_MAX_PATH];
    snprintf(p, sizeof p, "%s/train", s->root);
    int has_train = stat(p, &st) == 0 && S_ISDIR(st.st_mode), has_other = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", s->root, split_dirs[i]);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            splits[n_splits++] = split_dirs[i];
            if (i > 0) has_other = 1;
        }
    }
    if (!(has_train && has_other)) { /* a plain ImageFolder: the root is the train split */
        n_splits = 1;
        splits[0] = "";
    }
    int rc = CB_OK;
    for (int i = 0; i < n_splits && rc == CB_OK; i++)
        rc = cb__img_collect_classes(s, splits[i], err);
    if (rc) return rc;
    if (s->n_class_off == 0)
        return cb_util_error(err, CB_EINVAL, "path '%s': no class folders", s->root);
    s->classes = s->c.host->alloc(sizeof *s->classes * s->n_class_off);
    if (!s->classes) return cb_util_error(err, CB_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n_class_off; i++) s->classes[i] = s->class_blob + s->class_off[i];
    s->n_classes = s->n_class_off;
    qsort(s->classes, s->n_classes, sizeof *s->classes, cb__img_str_cmp);
    size_t u = 0; /* unique */
    for (size_t i = 0; i < s->n_classes; i++)
        if (u == 0 || strcmp(s->classes[u - 1], s->classes[i]) != 0)
            s->classes[u++] = s->classes[i];
    s->n_classes = u;

    for (int sp = 0; sp < n_splits; sp++) {
        char dir[CB_DATA_MAX_PATH];
        snprintf(dir, sizeof dir, "%s%s%s", s->root, splits[sp][0] ? "/" : "", splits[sp]);
        cb_data_dir d;
        rc = cb__data_list_dir(s->c.host, dir, &d, err);
        if (rc) return rc;
        for (size_t i = 0; i < d.n && rc == CB_OK; i++) {
            if (!d.is_dir[i]) continue;
            char rel[CB_DATA_MAX_PATH];
            snprintf(rel, sizeof rel, "%s%s%s", splits[sp], splits[sp][0] ? "/" : "", d.names[i]);
            rc = cb__img_walk(s, sp, rel, cb__img_class_index(s, d.names[i]), 0, err);
        }
        cb__data_dir_free(s->c.host, &d);
        if (rc) return rc;
        const char *name = splits[sp][0] ? splits[sp] : "train";
        size_t n = s->split[sp].n;
        if (n == 0)
            return cb_util_error(err, CB_EINVAL,
                                 "no images (.jpg, .jpeg, .png) in the class folders "
                                 "of '%s'",
                                 dir);
        if (n < (size_t)s->c.batch_size)
            return cb_util_error(err, CB_ECONFIG,
                                 "split %s: %zu images, fewer than batch_size %lld", name, n,
                                 (long long)s->c.batch_size);
        rc = cb__data_add_split(&s->c, name, (int64_t)(n / (size_t)s->c.batch_size), err);
        if (rc) return rc;
    }
    return CB_OK;
}

static int cb__img_make(void *state, const cb_data_key *k, cb_buffer **out, cb_error *err) {
    cb_images_state *s = state;
    const cb_host *h = s->c.host;
    const cb_img_split *sp = &s->split[k->split];
    uint32_t n = (uint32_t)s->c.batch_size;
    uint64_t *idx = h->alloc(sizeof *idx * n * 2);
    if (!idx) return cb_util_error(err, CB_ENOMEM, "out of memory");
    uint64_t *size = idx + n, total = 0;
    char path[CB_DATA_MAX_PATH * 2];
    int rc = CB_OK;
    for (uint32_t j = 0; j < n && rc == CB_OK; j++) {
        idx[j] = cb__data_index(&s->c, k, (uint64_t)k->batch * n + j, sp->n);
        const char *rel = s->names + sp->e[idx[j]].name;
        snprintf(path, sizeof path, "%s/%s", s->root, rel);
        struct stat st;
        if (stat(path, &st) != 0)
            rc = cb_util_error(err, CB_EIO, "cannot read '%s': %s", path, strerror(errno));
        else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > IMAGES_MAX_FILE_BYTES)
            rc = cb_util_error(err, CB_EINVAL, "'%s': not a regular file of at most %llu bytes",
                               path, (unsigned long long)IMAGES_MAX_FILE_BYTES);
        size[j] = rc == CB_OK ? (uint64_t)st.st_size : 0;
        total += size[j] + strlen(rel) + 1;
    }
    cb_buffer *buf = NULL;
    if (rc == CB_OK) {
        buf = cb__data_batch_new(&s->c, k, CB_BATCH_ENCODED, n, total, (uint32_t)s->n_classes, err);
        if (!buf) rc = CB_ENOMEM;
    }
    if (rc == CB_OK) {
        cb_image_batch *b = buf->data;
        int32_t *labels = cb_image_batch_labels(b);
        cb_image_desc *d = cb_image_batch_descs(b);
        unsigned char *data = cb_image_batch_data(b);
        uint64_t off = 0;
        for (uint32_t j = 0; j < n && rc == CB_OK; j++) {
            const char *rel = s->names + sp->e[idx[j]].name;
            snprintf(path, sizeof path, "%s/%s", s->root, rel);
            rc = cb__data_read_file(path, data + off, (size_t)size[j], err);
            labels[j] = sp->e[idx[j]].label;
            d[j].offset = off;
            d[j].bytes = size[j];
            d[j].format = (uint32_t)cb__image_sniff(data + off, (size_t)size[j]);
            off += size[j];
            size_t len = strlen(rel) + 1;
            memcpy(data + off, rel, len);
            d[j].name_offset = off;
            off += len;
        }
    }
    h->free(idx);
    if (rc == CB_OK && s->decode) {
        cb_buffer *dec = NULL;
        rc = cb__image_decode_batch(h, buf, &dec, err);
        h->buffer_unref(buf);
        buf = dec;
    }
    if (rc != CB_OK) {
        h->buffer_unref(buf);
        return rc;
    }
    *out = buf;
    return CB_OK;
}

static int cb_images_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_images_state *s = state;
    const cb_param_value *v = args->values;
    cb__data_init(&s->c, args, cb__img_make, s);
    s->decode = (int)v[P_DECODE].i;
    if (!v[P_PATH].has_value || !v[P_PATH].s || !v[P_PATH].s[0])
        return cb_util_error(err, CB_ECONFIG,
                             "path: is required (the root of an ImageFolder tree)");
    size_t len = strlen(v[P_PATH].s);
    while (len > 1 && v[P_PATH].s[len - 1] == '/') len--;
    if (len >= sizeof s->root) return cb_util_error(err, CB_ECONFIG, "path: too long");
    memcpy(s->root, v[P_PATH].s, len);
    s->root[len] = '\0';
    return cb__img_scan(s, err);
}

static int cb_images_prepare(void *state, cb_error *err) {
    cb_images_state *s = state;
    return cb__data_start(&s->c, err);
}

static int cb_images_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_images_state *s = state;
    return cb__data_run(&s->c, q, err);
}

static int cb_images_splits(void *state, cb_splits *out, cb_error *err) {
    cb_images_state *s = state;
    return cb__data_splits(&s->c, out);
}

static void cb_images_finish(void *state) {
    cb_images_state *s = state;
    cb__data_stop(&s->c);
}

static void cb_images_destroy(void *state) {
    cb_images_state *s = state;
    cb__data_stop(&s->c);
    const cb_host *h = s->c.host;
    if (!h) return;
    for (int i = 0; i < CB_MAX_SPLITS; i++) h->free(s->split[i].e);
    h->free(s->names);
    h->free(s->classes);
    h->free(s->class_off);
    h->free(s->class_blob);
    memset(s->split, 0, sizeof s->split);
    s->names = s->class_blob = NULL;
    s->classes = NULL;
    s->class_off = NULL;
}

const cb_stage_ops cb_stage_data_images = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "data.images",
    .summary = "JPEG/PNG files in class folders (ImageFolder) as image batches, read and "
               "decoded ahead",
    .params = cb_images_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_images_state),
    .create = cb_images_create,
    .prepare = cb_images_prepare,
    .run = cb_images_run,
    .finish = cb_images_finish,
    .destroy = cb_images_destroy,
    .splits = cb_images_splits,
};
