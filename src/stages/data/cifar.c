/* stages/data/cifar.c - data.cifar: the CIFAR-10 binary format as image batches.
 *
 * What: a dataset stage over CIFAR-10 .bin files. A record is 3073 bytes: a label byte, then a
 * 32x32 image as three planes (R, G, B), rows top to bottom. `path` is a directory - the train
 * split is every data_batch_*.bin in it (sorted), the val split test_batch.bin when present -
 * or one .bin file (train only). `limit_train`/`limit_val` keep the first records of a split.
 * Batches hold `batch_size` records of the split's per-epoch shuffled order; a last partial
 * batch is dropped. `format: uint8` gives U8_HWC 32x32x3 (vision.preprocess next, e.g. with
 * padding 4, crop 32, flip); `format: float` gives F32_NCHW scaled to [0, 1].
 *
 * Design: create() lists the files and checks their sizes (the load generator needs the batch
 * counts right after create); prepare() reads every record into one array per split and checks
 * the labels, untimed; a batch is then a gather from memory (with the CHW -> HWC transposition
 * for uint8), done by the prefetch threads.
 *
 * Thread-safety: the records are read-only after prepare; make() runs concurrently in prefetch
 * threads. Ownership: the state owns the file list and the record arrays (host->alloc, freed in
 * destroy after the prefetch threads are joined); each query gets a fresh batch.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "colobench/stage.h"
#include "stages/data/data.h"
#include "stages/util/util.h"

enum { P_PATH = CB_DATA_P_COUNT, P_CLASSES, P_LIMIT_TRAIN, P_LIMIT_VAL, P_FORMAT, P_COUNT };
enum { FMT_UINT8, FMT_FLOAT };

static const cb_param_def cb_cifar_params[P_COUNT] = {
    CB_DATA_COMMON_PARAMS,
    [P_PATH] = {"path", CB_PARAM_PATH, NULL, CB_PARAM_UNBOUNDED, "file|dir",
                "directory with data_batch_*.bin (train) and test_batch.bin (val), or one .bin "
                "file (train); required"},
    [P_CLASSES] = {"classes", CB_PARAM_INT, "10", 1, 256, NULL,
                   "number of classes: a label byte >= classes is an error"},
    [P_LIMIT_TRAIN] = {"limit_train", CB_PARAM_INT, "0", 0, 1e12, NULL,
                       "use the first this many train records (0 = all)"},
    [P_LIMIT_VAL] = {"limit_val", CB_PARAM_INT, "0", 0, 1e12, NULL,
                     "use the first this many val records (0 = all)"},
    [P_FORMAT] = {"format", CB_PARAM_ENUM, "uint8", CB_PARAM_UNBOUNDED, "uint8|float",
                  "uint8: U8_HWC 32x32x3 for vision.preprocess; float: F32_NCHW in [0, 1]"},
};

#define CIFAR_SIDE 32
#define CIFAR_PIXELS (CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + 3 * CIFAR_PIXELS)
#define CIFAR_MAX_FILES 64

typedef struct cb_cifar_file {
    char path[CB_DATA_MAX_PATH];
    int split;           /* 0 train, 1 val */
    uint64_t records;    /* in the file */
} cb_cifar_file;

typedef struct cb_cifar_state {
    cb_data_common c;
    uint32_t classes;
    int format;
    int n_files;
    cb_cifar_file *files;       /* host->alloc'd, CIFAR_MAX_FILES */
    uint64_t records[2];        /* per split, after the limits */
    unsigned char *data[2];     /* per split: records[s] * CIFAR_RECORD bytes, after prepare */
    int loaded;
} cb_cifar_state;

static int cb__cifar_add_file(cb_cifar_state *s, const char *path, int split, cb_error *err) {
    if (s->n_files >= CIFAR_MAX_FILES)
        return cb_util_error(err, CB_EINVAL, "more than %d CIFAR files", CIFAR_MAX_FILES);
    struct stat st;
    if (stat(path, &st) != 0)
        return cb_util_error(err, CB_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return cb_util_error(err, CB_EINVAL, "'%s' is not a file", path);
    if (st.st_size <= 0 || st.st_size % CIFAR_RECORD != 0)
        return cb_util_error(err, CB_EINVAL,
                             "'%s': size %lld bytes is not a non-zero multiple of %d (a CIFAR-10 "
                             "record is 1 label byte + 3072 pixel bytes)",
                             path, (long long)st.st_size, CIFAR_RECORD);
    cb_cifar_file *f = &s->files[s->n_files++];
    snprintf(f->path, sizeof f->path, "%s", path);
    f->split = split;
    f->records = (uint64_t)st.st_size / CIFAR_RECORD;
    return CB_OK;
}

static int cb__cifar_list(cb_cifar_state *s, const char *path, cb_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return cb_util_error(err, CB_EIO, "path '%s': %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return cb__cifar_add_file(s, path, 0, err);
    cb_data_dir d;
    int rc = cb__data_list_dir(s->c.host, path, &d, err);
    if (rc) return rc;
    char full[CB_DATA_MAX_PATH];
    int has_test = 0;
    for (size_t i = 0; i < d.n && rc == CB_OK; i++) {
        const char *name = d.names[i];
        size_t len = strlen(name);
        if (d.is_dir[i]) continue;
        if (strcmp(name, "test_batch.bin") == 0) has_test = 1;
        if (strncmp(name, "data_batch_", 11) != 0 || len < 15 ||
            strcmp(name + len - 4, ".bin") != 0)
            continue;
        if ((size_t)snprintf(full, sizeof full, "%s/%s", path, name) >= sizeof full)
            rc = cb_util_error(err, CB_EINVAL, "path too long: '%s/%s'", path, name);
        else
            rc = cb__cifar_add_file(s, full, 0, err);
    }
    cb__data_dir_free(s->c.host, &d);
    if (rc) return rc;
    if (s->n_files == 0)
        return cb_util_error(err, CB_EINVAL, "path '%s': no data_batch_*.bin files", path);
    if (has_test) {
        snprintf(full, sizeof full, "%s/test_batch.bin", path);
        rc = cb__cifar_add_file(s, full, 1, err);
    }
    return rc;
}

static int cb__cifar_make(void *state, const cb_data_key *k, cb_buffer **out, cb_error *err) {
    cb_cifar_state *s = state;
    int split = k->split;
    uint32_t n = (uint32_t)s->c.batch_size;
    uint64_t img = s->format == FMT_FLOAT ? 3 * CIFAR_PIXELS * sizeof(float) : 3 * CIFAR_PIXELS;
    cb_buffer *buf =
        cb__data_batch_new(&s->c, k, s->format == FMT_FLOAT ? CB_BATCH_F32_NCHW : CB_BATCH_U8_HWC,
                           n, n * img, s->classes, err);
    if (!buf) return CB_ENOMEM;
    cb_image_batch *b = buf->data;
    if (s->format == FMT_FLOAT) {
        b->c = 3;
        b->h = b->w = CIFAR_SIDE;
    }
    int32_t *labels = cb_image_batch_labels(b);
    cb_image_desc *d = cb_image_batch_descs(b);
    unsigned char *data = cb_image_batch_data(b);
    for (uint32_t j = 0; j < n; j++) {
        uint64_t idx = cb__data_index(&s->c, k, (uint64_t)k->batch * n + j, s->records[split]);
        const unsigned char *rec = s->data[split] + idx * CIFAR_RECORD;
        labels[j] = rec[0];
        d[j].c = 3;
        d[j].h = d[j].w = CIFAR_SIDE;
        d[j].offset = j * img;
        d[j].bytes = img;
        const unsigned char *px = rec + 1;
        if (s->format == FMT_FLOAT) {
            float *f = (float *)(void *)(data + j * img);
            for (int i = 0; i < 3 * CIFAR_PIXELS; i++) f[i] = (float)px[i] * (1.0f / 255.0f);
        } else {
            unsigned char *o = data + j * img;
            for (int p = 0; p < CIFAR_PIXELS; p++) {
                o[3 * p] = px[p];
                o[3 * p + 1] = px[CIFAR_PIXELS + p];
                o[3 * p + 2] = px[2 * CIFAR_PIXELS + p];
            }
        }
    }
    *out = buf;
    return CB_OK;
}

static int cb_cifar_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_cifar_state *s = state;
    const cb_param_value *v = args->values;
    cb__data_init(&s->c, args, cb__cifar_make, s);
    s->classes = (uint32_t)v[P_CLASSES].i;
    s->format = (int)v[P_FORMAT].i;
    if (!v[P_PATH].has_value || !v[P_PATH].s || !v[P_PATH].s[0])
        return cb_util_error(err, CB_ECONFIG,
                             "path: is required (a CIFAR-10 directory or .bin file)");
    s->files = s->c.host->alloc(sizeof *s->files * CIFAR_MAX_FILES);
    if (!s->files) return cb_util_error(err, CB_ENOMEM, "out of memory");
    int rc = cb__cifar_list(s, v[P_PATH].s, err);
    if (rc) return rc;
    uint64_t limit[2] = {(uint64_t)v[P_LIMIT_TRAIN].i, (uint64_t)v[P_LIMIT_VAL].i};
    for (int i = 0; i < s->n_files; i++) s->records[s->files[i].split] += s->files[i].records;
    static const char *const names[2] = {"train", "val"};
    for (int sp = 0; sp < 2; sp++) {
        if (limit[sp] && s->records[sp] > limit[sp]) s->records[sp] = limit[sp];
        if (sp == 1 && s->records[sp] == 0) break; /* no test_batch.bin */
        uint64_t batches = s->records[sp] / (uint64_t)s->c.batch_size;
        if (batches < 1)
            return cb_util_error(err, CB_ECONFIG,
                                 "split %s: %llu records, fewer than batch_size %lld", names[sp],
                                 (unsigned long long)s->records[sp], (long long)s->c.batch_size);
        rc = cb__data_add_split(&s->c, names[sp], (int64_t)batches, err);
        if (rc) return rc;
    }
    return CB_OK;
}

static int cb__cifar_load(cb_cifar_state *s, cb_error *err) {
    const cb_host *h = s->c.host;
    for (int sp = 0; sp < 2; sp++) {
        if (!s->records[sp]) continue;
        s->data[sp] = h->alloc(s->records[sp] * CIFAR_RECORD);
        if (!s->data[sp])
            return cb_util_error(err, CB_ENOMEM, "cannot allocate %llu CIFAR records",
                                 (unsigned long long)s->records[sp]);
        uint64_t have = 0;
        for (int i = 0; i < s->n_files && have < s->records[sp]; i++) {
            const cb_cifar_file *f = &s->files[i];
            if (f->split != sp) continue;
            uint64_t take = f->records < s->records[sp] - have ? f->records : s->records[sp] - have;
            unsigned char *dst = s->data[sp] + have * CIFAR_RECORD;
            int rc = cb__data_read_file(f->path, dst, take * CIFAR_RECORD, err);
            if (rc) return rc;
            for (uint64_t r = 0; r < take; r++)
                if (dst[r * CIFAR_RECORD] >= s->classes)
                    return cb_util_error(err, CB_EINVAL,
                                         "'%s': record %llu: label %u >= classes %u", f->path,
                                         (unsigned long long)r, dst[r * CIFAR_RECORD], s->classes);
            have += take;
        }
    }
    s->loaded = 1;
    return CB_OK;
}

static int cb_cifar_prepare(void *state, cb_error *err) {
    cb_cifar_state *s = state;
    int rc = s->loaded ? CB_OK : cb__cifar_load(s, err);
    return rc ? rc : cb__data_start(&s->c, err);
}

static int cb_cifar_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_cifar_state *s = state;
    if (!s->loaded) { /* a host that skipped prepare */
        int rc = cb__cifar_load(s, err);
        if (rc) return rc;
    }
    return cb__data_run(&s->c, q, err);
}

static int cb_cifar_splits(void *state, cb_splits *out, cb_error *err) {
    cb_cifar_state *s = state;
    return cb__data_splits(&s->c, out);
}

static void cb_cifar_finish(void *state) {
    cb_cifar_state *s = state;
    cb__data_stop(&s->c);
}

static void cb_cifar_destroy(void *state) {
    cb_cifar_state *s = state;
    cb__data_stop(&s->c);
    if (!s->c.host) return;
    s->c.host->free(s->files);
    s->c.host->free(s->data[0]);
    s->c.host->free(s->data[1]);
    s->files = NULL;
    s->data[0] = s->data[1] = NULL;
}

const cb_stage_ops cb_stage_data_cifar = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "data.cifar",
    .summary = "CIFAR-10 binary files as image batches (train/val splits), prefetched",
    .params = cb_cifar_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_cifar_state),
    .create = cb_cifar_create,
    .prepare = cb_cifar_prepare,
    .run = cb_cifar_run,
    .finish = cb_cifar_finish,
    .destroy = cb_cifar_destroy,
    .splits = cb_cifar_splits,
};
