/* tests/test_data.c - the data.* dataset stages, vision.decode, vision.preprocess and the
 * prefetch machinery, on real files in a temporary directory (CIFAR-format .bin files, JPEGs
 * written with libjpeg, PNGs written with libpng); no mocks.
 *
 * Stages are called through their ops tables with the real parameter resolver (configs are
 * YAML text) and the real host functions; end-to-end tests run build/colobench on pipelines
 * written here and count rows of queries.csv/events.csv. Pixel checks compare with what was
 * written (PNG exact, JPEG within a tolerance) and with a plain reference implementation of
 * the preprocessing written here in double precision. Timings are printed as TAP comments and
 * only bounded loosely (sanitizer builds are slow).
 */
#include <math.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jpeglib.h> /* after stdio.h */
#include <png.h>

#include "cifar_gen.h"
#include "colobench/stage.h"
#include "core/alloc.h"
#include "core/cfgtree.h"
#include "core/host.h"
#include "core/spec.h"
#include "harness.h"
#include "stages/builtin.h"
#include "stages/data/data.h"
#include "stages/data/prefetch.h"
#include "stages/vision/batch.h"
#include "stages/vision/image.h"

#define CLI CB_TEST_COLOBENCH

/* ---- stage instances -------------------------------------------------------------------- */

typedef struct inst {
    const cb_stage_ops *ops;
    cb_host host;
    cb_arena *arena;
    cb_stage_args args;
    void *state;
    cb_error err;
    int created;
} inst;

/* Resolves yaml (the stage's config map) and calls create (and prepare when it succeeded).
 * Returns the first failing status. */
static int inst_open(inst *x, const cb_stage_ops *ops, const char *yaml) {
    memset(x, 0, sizeof *x);
    x->ops = ops;
    cb_host_init_base(&x->host);
    x->arena = cb_arena_create();
    cb_doc *doc = NULL;
    const cb_node *cfg = NULL;
    if (yaml && *yaml) {
        int rc = cb_doc_load_string(yaml, strlen(yaml), "test.yaml", &doc, &x->err);
        CB_CHECK_EQ_INT(rc, CB_OK);
        if (rc) return rc;
        cfg = doc->root;
    }
    cb_param_value *vals = NULL;
    int rc = cb_params_resolve(ops, cfg, "config", x->arena, &vals, &x->err);
    cb_doc_destroy(doc);
    if (rc) return rc;
    x->state = calloc(1, ops->state_size ? ops->state_size : 1);
    x->args = (cb_stage_args){.abi_major = CB_STAGE_ABI_MAJOR,
                              .struct_size = sizeof(cb_stage_args),
                              .host = &x->host,
                              .values = vals,
                              .pipeline = "p",
                              .stage = ops->name,
                              .workers = 1,
                              .n_outputs = 1,
                              .seed = 1,
                              .device = "cpu"};
    x->created = 1;
    rc = ops->create(x->state, &x->args, &x->err);
    if (rc == CB_OK && ops->prepare) rc = ops->prepare(x->state, &x->err);
    return rc;
}

static void inst_close(inst *x) {
    if (x->created && x->ops->destroy) x->ops->destroy(x->state);
    free(x->state);
    cb_arena_destroy(x->arena);
    memset(x, 0, sizeof *x);
}

static cb_splits inst_splits(inst *x) {
    cb_splits sp;
    memset(&sp, 0, sizeof sp);
    sp.abi_major = CB_STAGE_ABI_MAJOR;
    sp.struct_size = sizeof sp;
    CB_CHECK(x->ops->splits != NULL);
    if (x->ops->splits) CB_CHECK_EQ_INT(x->ops->splits(x->state, &sp, &x->err), CB_OK);
    return sp;
}

/* Runs one query (split, epoch, batch) with payload in (may be NULL, consumed); the result
 * payload in *out (NULL on error). Returns run's status. */
static int inst_query(inst *x, int32_t split, int32_t epoch, int64_t batch, cb_buffer *in,
                      cb_buffer **out) {
    cb_query q;
    memset(&q, 0, sizeof q);
    q.abi_major = CB_STAGE_ABI_MAJOR;
    q.struct_size = sizeof q;
    q.split = split;
    q.epoch = epoch;
    q.batch = batch;
    q.nparts = 1;
    q.payload = in;
    memset(&x->err, 0, sizeof x->err);
    int rc = x->ops->run(x->state, &q, NULL, &x->err);
    if (rc != CB_OK) {
        cb_buffer_unref(q.payload);
        *out = NULL;
    } else {
        *out = q.payload;
    }
    return rc;
}

static cb_image_batch *batch_of(cb_buffer *b) {
    const char *why = NULL;
    int ok = b && cb_image_batch_check(b, &why) == 0;
    if (!ok) cb__test_fail(__FILE__, __LINE__, "not a valid batch: %s", why ? why : "(null)");
    return ok ? b->data : NULL;
}

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ULL;
    return h;
}

static uint64_t buf_hash(const cb_buffer *b) { return b ? fnv(b->data, b->size_bytes) : 0; }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int is_sanitized(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

static void mkdirs(const char *dir, const char *rel) {
    char p[2048];
    snprintf(p, sizeof p, "mkdir -p '%s/%s'", dir, rel);
    CB_CHECK_EQ_INT(system(p), 0);
}

/* ---- image files ------------------------------------------------------------------------ */

/* A smooth RGB test image (JPEG-friendly), deterministic from (w, h, salt). */
static unsigned char *test_rgb(int w, int h, int salt) {
    unsigned char *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *q = p + ((size_t)y * w + x) * 3;
            q[0] = (unsigned char)(40 + (x * 150) / (w > 1 ? w - 1 : 1) + salt % 7);
            q[1] = (unsigned char)(30 + (y * 170) / (h > 1 ? h - 1 : 1));
            q[2] = (unsigned char)(200 - ((x + y) * 100) / (w + h) + salt % 11);
        }
    return p;
}

static int write_jpeg(const char *path, const unsigned char *rgb, int w, int h, int quality) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)ci.next_scanline * w * 3);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return fclose(f);
}

/* channels: 1 gray, 3 RGB, 4 RGBA. */
static int write_png(const char *path, const unsigned char *px, int w, int h, int channels) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = channels == 1 ? PNG_FORMAT_GRAY : channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
    int ok = png_image_write_to_file(&img, path, 0, px, 0, NULL);
    return ok ? 0 : -1;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Copies the first `keep` bytes of src to dst. */
static void truncate_copy(const char *src, const char *dst, long keep) {
    size_t n = 0;
    char *d = cb_test_read(src, &n);
    CB_CHECK(d != NULL && (long)n > keep);
    FILE *f = fopen(dst, "wb");
    CB_CHECK(f != NULL);
    if (f && d) fwrite(d, 1, (size_t)keep, f);
    if (f) fclose(f);
    free(d);
}

/* ---- data.synthetic --------------------------------------------------------------------- */

static void test_synthetic_shapes_and_splits(void) {
    inst x;
    CB_CHECK_EQ_INT(
        inst_open(&x, &cb_stage_data_synthetic,
                  "shape: [3, 8, 12]\nbatch_size: 4\nclasses: 5\nsplits: {train: 3, val: 2}\n"
                  "epochs: 2\nprefetch: 0\n"),
        CB_OK);
    cb_splits sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.epochs, 2);
    CB_CHECK_EQ_INT(sp.n, 2);
    CB_CHECK_STR_EQ(sp.split[0].name, "train");
    CB_CHECK_STR_EQ(sp.split[1].name, "val");
    CB_CHECK_EQ_INT(sp.split[0].batches, 3);
    CB_CHECK_EQ_INT(sp.split[1].batches, 2);
    cb_buffer *out = NULL;
    CB_CHECK_EQ_INT(inst_query(&x, 1, 1, 1, NULL, &out), CB_OK);
    cb_image_batch *b = batch_of(out);
    if (b) {
        CB_CHECK_EQ_INT(b->layout, CB_BATCH_F32_NCHW);
        CB_CHECK_EQ_INT(b->n, 4);
        CB_CHECK_EQ_INT(b->c, 3);
        CB_CHECK_EQ_INT(b->h, 8);
        CB_CHECK_EQ_INT(b->w, 12);
        CB_CHECK_EQ_INT(b->classes, 5);
        CB_CHECK_EQ_INT(b->data_bytes, 4 * 3 * 8 * 12 * sizeof(float));
        CB_CHECK_EQ_INT(b->split, 1);
        CB_CHECK_EQ_INT(b->epoch, 1);
        CB_CHECK_EQ_INT(b->batch, 1);
        CB_CHECK_STR_EQ(b->split_name, "val");
        for (uint32_t i = 0; i < b->n; i++) {
            CB_CHECK_CMP_INT(cb_image_batch_labels(b)[i], >=, 0);
            CB_CHECK_CMP_INT(cb_image_batch_labels(b)[i], <, 5);
            CB_CHECK(cb_image_batch_name(b, i) == NULL);
        }
        /* roughly unit noise */
        const float *f = (const float *)(const void *)cb_image_batch_data(b);
        double sum = 0, sq = 0;
        size_t n = b->data_bytes / sizeof(float);
        for (size_t i = 0; i < n; i++) {
            sum += f[i];
            sq += (double)f[i] * f[i];
        }
        double mean = sum / (double)n, sd = sqrt(sq / (double)n - mean * mean);
        CB_CHECK(mean > -1.0 && mean < 1.0);
        CB_CHECK(sd > 0.7 && sd < 1.6);
    }
    cb_buffer_unref(out);
    /* a split this stage does not have is an error, not a crash */
    CB_CHECK_EQ_INT(inst_query(&x, 2, 0, 0, NULL, &out), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "split 2");
    inst_close(&x);

    CB_CHECK_EQ_INT(
        inst_open(&x, &cb_stage_data_synthetic,
                  "shape: [1, 5, 7]\nbatch_size: 3\nformat: uint8\nbatches_per_epoch: 4\n"),
        CB_OK);
    sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.n, 1);
    CB_CHECK_STR_EQ(sp.split[0].name, "train");
    CB_CHECK_EQ_INT(sp.split[0].batches, 4);
    CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 2, NULL, &out), CB_OK);
    b = batch_of(out);
    if (b) {
        CB_CHECK_EQ_INT(b->layout, CB_BATCH_U8_HWC);
        CB_CHECK_EQ_INT(b->n, 3);
        const cb_image_desc *d = cb_image_batch_descs(b);
        for (uint32_t i = 0; i < b->n; i++) {
            CB_CHECK_EQ_INT(d[i].c, 1);
            CB_CHECK_EQ_INT(d[i].h, 5);
            CB_CHECK_EQ_INT(d[i].w, 7);
            CB_CHECK_EQ_INT(d[i].bytes, 35);
            CB_CHECK_EQ_INT(d[i].offset, 35 * i);
        }
    }
    cb_buffer_unref(out);
    inst_close(&x);

    /* config errors name the key */
    CB_CHECK_EQ_INT(
        inst_open(&x, &cb_stage_data_synthetic, "batches_per_epoch: 4\nsplits: {train: 3}\n"),
        CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "batches_per_epoch");
    CB_CHECK_CONTAINS(x.err.msg, "splits.train");
    inst_close(&x);
    CB_CHECK_EQ_INT(
        inst_open(&x, &cb_stage_data_synthetic, "batches_per_epoch: 4\nsplits: {val: 3}\n"),
        CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "batches_per_epoch");
    inst_close(&x);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_synthetic,
                              "batches_per_epoch: 3\nsplits: {train: 3, val: 1}\n"),
                    CB_OK);
    inst_close(&x);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_synthetic, "shape: [3, 8]\n"), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "shape");
    inst_close(&x);
}

/* Per-image hashes of a float or uint8 batch, in order. */
static void image_hashes(cb_image_batch *b, uint64_t *h) {
    const cb_image_desc *d = cb_image_batch_descs(b);
    for (uint32_t i = 0; i < b->n; i++)
        h[i] = fnv(cb_image_batch_data(b) + d[i].offset, d[i].bytes);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Hashes of every image of one epoch of split 0 (nb batches of bs). */
static void epoch_hashes(inst *x, int32_t epoch, int nb, int bs, uint64_t *h) {
    for (int k = 0; k < nb; k++) {
        cb_buffer *out = NULL;
        CB_CHECK_EQ_INT(inst_query(x, 0, epoch, k, NULL, &out), CB_OK);
        cb_image_batch *b = batch_of(out);
        if (b) image_hashes(b, h + k * bs);
        cb_buffer_unref(out);
    }
}

static void test_synthetic_determinism(void) {
    const char *cfg = "shape: [3, 6, 6]\nbatch_size: 5\nbatches_per_epoch: 4\nclasses: 7\nseed: "
                      "11\nprefetch: 0\n";
    inst a, b;
    CB_CHECK_EQ_INT(inst_open(&a, &cb_stage_data_synthetic, cfg), CB_OK);
    CB_CHECK_EQ_INT(inst_open(&b, &cb_stage_data_synthetic, cfg), CB_OK);
    uint64_t e0a[20], e0b[20], e1[20];
    epoch_hashes(&a, 0, 4, 5, e0a);
    epoch_hashes(&b, 0, 4, 5, e0b);
    CB_CHECK(memcmp(e0a, e0b, sizeof e0a) == 0); /* same seed, other instance: same bytes */
    epoch_hashes(&a, 1, 4, 5, e1);
    CB_CHECK(memcmp(e0a, e1, sizeof e0a) != 0); /* another epoch: another order ... */
    qsort(e0a, 20, sizeof e0a[0], cmp_u64);
    qsort(e1, 20, sizeof e1[0], cmp_u64);
    CB_CHECK(memcmp(e0a, e1, sizeof e0a) == 0); /* ... of the same 20 images */
    for (int i = 1; i < 20; i++) CB_CHECK(e0a[i] != e0a[i - 1]); /* all distinct */

    /* A batch past the split's end continues into the next epochs. */
    cb_buffer *p = NULL, *q = NULL;
    CB_CHECK_EQ_INT(inst_query(&a, 0, 0, 4 + 2, NULL, &p), CB_OK);
    CB_CHECK_EQ_INT(inst_query(&b, 0, 1, 2, NULL, &q), CB_OK);
    cb_image_batch *pb = batch_of(p);
    if (pb) {
        CB_CHECK_EQ_INT(pb->epoch, 1);
        CB_CHECK_EQ_INT(pb->batch, 2);
    }
    CB_CHECK_EQ_INT(buf_hash(p), buf_hash(q));
    cb_buffer_unref(p);
    cb_buffer_unref(q);
    inst_close(&a);
    inst_close(&b);

    /* shuffle off: every epoch alike; another seed: other images */
    CB_CHECK_EQ_INT(inst_open(&a, &cb_stage_data_synthetic,
                              "shape: [3, 6, 6]\nbatch_size: 5\nbatches_per_epoch: 4\nseed: "
                              "11\nshuffle: false\nprefetch: 0\n"),
                    CB_OK);
    CB_CHECK_EQ_INT(inst_open(&b, &cb_stage_data_synthetic,
                              "shape: [3, 6, 6]\nbatch_size: 5\nbatches_per_epoch: 4\nseed: "
                              "12\nshuffle: false\nprefetch: 0\n"),
                    CB_OK);
    epoch_hashes(&a, 0, 4, 5, e0a);
    epoch_hashes(&a, 3, 4, 5, e1);
    CB_CHECK(memcmp(e0a, e1, sizeof e0a) == 0);
    epoch_hashes(&b, 0, 4, 5, e0b);
    CB_CHECK(memcmp(e0a, e0b, sizeof e0a) != 0);
    inst_close(&a);
    inst_close(&b);

    /* `images` smaller than an epoch: positions wrap around the distinct images */
    CB_CHECK_EQ_INT(
        inst_open(
            &a, &cb_stage_data_synthetic,
            "shape: [3, 6, 6]\nbatch_size: 5\nbatches_per_epoch: 4\nimages: 7\nprefetch: 0\n"),
        CB_OK);
    epoch_hashes(&a, 0, 4, 5, e0a);
    qsort(e0a, 20, sizeof e0a[0], cmp_u64);
    int distinct = 1;
    for (int i = 1; i < 20; i++) distinct += e0a[i] != e0a[i - 1];
    CB_CHECK_EQ_INT(distinct, 7);
    inst_close(&a);
}

/* Nearest-class-mean accuracy on `val` with means from `train`: learnable data scores high. */
static double synthetic_ncm_accuracy(const char *cfg, int classes) {
    inst x;
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_synthetic, cfg), CB_OK);
    size_t dim = 3 * 16 * 16;
    double *mean = calloc((size_t)classes * dim, sizeof(double));
    int *count = calloc((size_t)classes, sizeof(int));
    for (int k = 0; k < 8; k++) {
        cb_buffer *out = NULL;
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, k, NULL, &out), CB_OK);
        cb_image_batch *b = batch_of(out);
        for (uint32_t i = 0; b && i < b->n; i++) {
            int l = cb_image_batch_labels(b)[i];
            const float *f = (const float *)(const void *)cb_image_batch_data(b) + i * dim;
            for (size_t j = 0; j < dim; j++) mean[(size_t)l * dim + j] += f[j];
            count[l]++;
        }
        cb_buffer_unref(out);
    }
    for (int l = 0; l < classes; l++)
        for (size_t j = 0; j < dim && count[l]; j++) mean[(size_t)l * dim + j] /= count[l];
    int right = 0, total = 0;
    for (int k = 0; k < 2; k++) {
        cb_buffer *out = NULL;
        CB_CHECK_EQ_INT(inst_query(&x, 1, 0, k, NULL, &out), CB_OK);
        cb_image_batch *b = batch_of(out);
        for (uint32_t i = 0; b && i < b->n; i++) {
            const float *f = (const float *)(const void *)cb_image_batch_data(b) + i * dim;
            int best = -1;
            double best_d = 0;
            for (int l = 0; l < classes; l++) {
                double d = 0;
                for (size_t j = 0; j < dim; j++)
                    d += (f[j] - mean[(size_t)l * dim + j]) * (f[j] - mean[(size_t)l * dim + j]);
                if (best < 0 || d < best_d) {
                    best = l;
                    best_d = d;
                }
            }
            right += best == cb_image_batch_labels(b)[i];
            total++;
        }
        cb_buffer_unref(out);
    }
    free(mean);
    free(count);
    inst_close(&x);
    return total ? (double)right / total : 0;
}

static void test_synthetic_learnable(void) {
    double acc = synthetic_ncm_accuracy("shape: [3, 16, 16]\nbatch_size: 32\nclasses: 8\n"
                                        "splits: {train: 8, val: 2}\nprefetch: 0\n", 8);
    printf("# synthetic learnable: nearest-class-mean accuracy %.3f (8 classes)\n", acc);
    CB_CHECK(acc > 0.9);
    double chance =
        synthetic_ncm_accuracy("shape: [3, 16, 16]\nbatch_size: 32\nclasses: 8\n"
                               "splits: {train: 8, val: 2}\nprefetch: 0\nlearnable: false\n",
                               8);
    printf("# synthetic learnable: false: accuracy %.3f\n", chance);
    CB_CHECK(chance < 0.4);
}

static void test_synthetic_speed(void) {
    inst x;
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_synthetic, "prefetch: 0\n"),
                    CB_OK); /* 32x3x224x224 float */
    cb_buffer *out = NULL;
    CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, NULL, &out), CB_OK); /* warm */
    cb_buffer_unref(out);
    double t0 = now_ms();
    int n = 5;
    for (int i = 0; i < n; i++) {
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, i, NULL, &out), CB_OK);
        cb_buffer_unref(out);
    }
    double ms = (now_ms() - t0) / n;
    printf("# synthetic: %.1f ms per 32x3x224x224 float batch (one thread)\n", ms);
    CB_CHECK(ms <
             (is_sanitized() ? 3000.0 : 250.0)); /* a guard, not a benchmark: cores are shared */
    inst_close(&x);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_synthetic, "prefetch: 0\nformat: uint8\n"), CB_OK);
    t0 = now_ms();
    for (int i = 0; i < n; i++) {
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, i, NULL, &out), CB_OK);
        cb_buffer_unref(out);
    }
    printf("# synthetic: %.1f ms per 32x224x224x3 uint8 batch (one thread)\n", (now_ms() - t0) / n);
    inst_close(&x);
}

/* ---- prefetch --------------------------------------------------------------------------- */

typedef struct pf_ctx {
    const cb_host *host;
    int fail_seq;          /* make fails on this seq (-1: never) */
    int delay_us;
    _Atomic int calls;
    _Atomic int calls_per_seq[64];
} pf_ctx;

/* Batch seq = an 8-byte buffer holding seq * 3 + 1. */
static int pf_make(void *ctx, int64_t seq, cb_buffer **out, cb_error *err) {
    pf_ctx *c = ctx;
    atomic_fetch_add(&c->calls, 1);
    if (seq >= 0 && seq < 64) atomic_fetch_add(&c->calls_per_seq[seq], 1);
    if (c->delay_us) usleep((useconds_t)c->delay_us);
    if (seq == c->fail_seq) {
        snprintf(err->msg, sizeof err->msg, "cannot make batch %lld: 'some/file.jpg' is broken",
                 (long long)seq);
        err->code = CB_EIO;
        return CB_EIO;
    }
    cb_buffer *b = c->host->buffer_new(8);
    if (!b) return CB_ENOMEM;
    int64_t v = seq * 3 + 1;
    memcpy(b->data, &v, 8);
    *out = b;
    return CB_OK;
}

static int64_t pf_value(cb_buffer *b) {
    int64_t v = -1;
    if (b) memcpy(&v, b->data, 8);
    return v;
}

static void test_prefetch_machinery(void) {
    cb_host host;
    cb_host_init_base(&host);
    pf_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.host = &host;
    ctx.fail_seq = 13;
    cb_prefetch_opts o = {.host = &host, .name = "test", .depth = 3, .threads = 3, .planned = 40,
                          .make = pf_make, .ctx = &ctx};
    cb_prefetch *pf = NULL;
    cb_error err;
    memset(&err, 0, sizeof err);
    CB_CHECK_EQ_INT(cb__prefetch_create(&o, &pf, &err), CB_OK);
    if (!pf) return;
    usleep(50000); /* the producers fill the slots */
    /* in order: every batch right, and made once */
    for (int64_t s = 0; s < 10; s++) {
        cb_buffer *b = NULL;
        CB_CHECK_EQ_INT(cb__prefetch_get(pf, s, &b, &err), CB_OK);
        CB_CHECK_EQ_INT(pf_value(b), s * 3 + 1);
        cb_buffer_unref(b);
    }
    /* Whether a batch was ready depends on timing (hits + misses), but each was made once. */
    uint64_t hits = 0, misses = 0;
    cb__prefetch_stats(pf, &hits, &misses);
    CB_CHECK_EQ_INT(hits + misses, 10);
    for (int s = 0; s < 10; s++) CB_CHECK_EQ_INT(atomic_load(&ctx.calls_per_seq[s]), 1);
    /* out of order and repeats: still right */
    const int64_t order[] = {11, 10, 12, 12, 20, 14, 5, 21, 22};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        cb_buffer *b = NULL;
        CB_CHECK_EQ_INT(cb__prefetch_get(pf, order[i], &b, &err), CB_OK);
        CB_CHECK_EQ_INT(pf_value(b), order[i] * 3 + 1);
        cb_buffer_unref(b);
    }
    /* an error surfaces on its own query, with the message */
    cb_buffer *b = NULL;
    memset(&err, 0, sizeof err);
    CB_CHECK_EQ_INT(cb__prefetch_get(pf, 13, &b, &err), CB_EIO);
    CB_CHECK(b == NULL);
    CB_CHECK_CONTAINS(err.msg, "some/file.jpg");
    /* past the plan the producers follow the consumer */
    for (int64_t s = 40; s < 50; s++) {
        CB_CHECK_EQ_INT(cb__prefetch_get(pf, s, &b, &err), CB_OK);
        CB_CHECK_EQ_INT(pf_value(b), s * 3 + 1);
        cb_buffer_unref(b);
    }
    cb__prefetch_stats(pf, &hits, &misses);
    printf("# prefetch: %llu hits, %llu misses\n", (unsigned long long)hits,
           (unsigned long long)misses);
    CB_CHECK_CMP_INT(hits, >=, 1);
    cb__prefetch_destroy(pf);

    /* in order, a failing batch made ahead by a producer fails its own get, once */
    memset(&ctx, 0, sizeof ctx);
    ctx.host = &host;
    ctx.fail_seq = 2;
    CB_CHECK_EQ_INT(cb__prefetch_create(&o, &pf, &err), CB_OK);
    usleep(50000);
    for (int64_t s = 0; s < 5; s++) {
        memset(&err, 0, sizeof err);
        int rc = cb__prefetch_get(pf, s, &b, &err);
        CB_CHECK_EQ_INT(rc, s == 2 ? CB_EIO : CB_OK);
        if (s == 2) CB_CHECK_CONTAINS(err.msg, "batch 2: 'some/file.jpg'");
        cb_buffer_unref(b);
    }
    cb__prefetch_destroy(pf);
    CB_CHECK_EQ_INT(atomic_load(&ctx.calls_per_seq[2]), 1);

    /* destroy while producers are busy and the stream is far from done: no hang, no leak */
    memset(&ctx, 0, sizeof ctx);
    ctx.host = &host;
    ctx.fail_seq = -1;
    ctx.delay_us = 20000;
    o.planned = 1000000;
    o.depth = 4;
    o.threads = 2;
    CB_CHECK_EQ_INT(cb__prefetch_create(&o, &pf, &err), CB_OK);
    CB_CHECK_EQ_INT(cb__prefetch_get(pf, 0, &b, &err), CB_OK);
    cb_buffer_unref(b);
    double t0 = now_ms();
    cb__prefetch_destroy(pf);
    CB_CHECK(now_ms() - t0 < 1000);
    cb__prefetch_destroy(NULL);
    /* with nothing ever taken, producers stop at depth batches */
    memset(&ctx, 0, sizeof ctx);
    ctx.host = &host;
    ctx.fail_seq = -1;
    CB_CHECK_EQ_INT(cb__prefetch_create(&o, &pf, &err), CB_OK);
    usleep(300000);
    CB_CHECK_EQ_INT(atomic_load(&ctx.calls), 4);
    cb__prefetch_destroy(pf);
}

/* Random access patterns (in order, skips ahead, old and repeated batches) against producers
 * of random speed: every get returns exactly its own batch, and nothing hangs. */
static void test_prefetch_stress(void) {
    cb_host host;
    cb_host_init_base(&host);
    uint64_t r = 12345;
    int wrong = 0, gets = 0;
    for (int round = 0; round < 6; round++) {
        pf_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        ctx.host = &host;
        ctx.fail_seq = 30 + round;
        ctx.delay_us = round % 2 ? 50 : 0;
        cb_prefetch_opts o = {.host = &host, .name = "stress", .depth = 1 + round % 4,
                              .threads = 1 + (round * 7) % 4, .planned = 200, .make = pf_make,
                              .ctx = &ctx};
        cb_prefetch *pf = NULL;
        cb_error err;
        memset(&err, 0, sizeof err);
        CB_CHECK_EQ_INT(cb__prefetch_create(&o, &pf, &err), CB_OK);
        if (!pf) continue;
        int64_t s = 0;
        for (int i = 0; i < 300; i++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            unsigned k = (unsigned)(r >> 58); /* 0..63 */
            int64_t ask = s;
            if (k < 44) ask = s++;                               /* in order */
            else if (k < 52) ask = (s += 1 + (int64_t)(k % 5));  /* skip ahead */
            else if (k < 60) ask = s > 10 ? s - 1 - (int64_t)(k % 9) : s; /* an old one */
            else ask = s > 0 ? s - 1 : 0;                        /* a repeat */
            cb_buffer *b = NULL;
            memset(&err, 0, sizeof err);
            int rc = cb__prefetch_get(pf, ask, &b, &err);
            if (ask == ctx.fail_seq)
                wrong += rc != CB_EIO || b != NULL;
            else
                wrong += rc != CB_OK || pf_value(b) != ask * 3 + 1;
            cb_buffer_unref(b);
            gets++;
            if (k == 63) usleep(200); /* let the producers run ahead now and then */
        }
        cb__prefetch_destroy(pf);
    }
    CB_CHECK_EQ_INT(wrong, 0);
    CB_CHECK_EQ_INT(gets, 6 * 300);
}

/* Batches taken in the load generator's order, with prefetch on, equal those made in run()
 * without it, byte for byte; and with several workers reading the same stream. */
static void prefetch_equivalence(const cb_stage_ops *ops, const char *base_cfg) {
    char cfg0[2048], cfg1[2048];
    snprintf(cfg0, sizeof cfg0, "%sprefetch: 0\n", base_cfg);
    snprintf(cfg1, sizeof cfg1, "%sprefetch: 3\nworkers: 3\n", base_cfg);
    inst a, b, c;
    CB_CHECK_EQ_INT(inst_open(&a, ops, cfg0), CB_OK);
    CB_CHECK_EQ_INT(inst_open(&b, ops, cfg1), CB_OK);
    CB_CHECK_EQ_INT(inst_open(&c, ops, cfg1), CB_OK);
    cb_splits sp = inst_splits(&a);
    int n = 0, diff = 0;
    for (int32_t e = 0; e < sp.epochs; e++)
        for (int32_t s = 0; s < sp.n; s++)
            for (int64_t k = 0; k < sp.split[s].batches; k++) {
                cb_buffer *pa = NULL, *pb = NULL, *pc = NULL;
                CB_CHECK_EQ_INT(inst_query(&a, s, e, k, NULL, &pa), CB_OK);
                CB_CHECK_EQ_INT(inst_query(&b, s, e, k, NULL, &pb), CB_OK);
                if (n % 3 == 0) { /* c sees every third query, like one of three stage workers */
                    CB_CHECK_EQ_INT(inst_query(&c, s, e, k, NULL, &pc), CB_OK);
                    diff += buf_hash(pa) != buf_hash(pc);
                }
                diff += buf_hash(pa) != buf_hash(pb);
                n++;
                cb_buffer_unref(pa);
                cb_buffer_unref(pb);
                cb_buffer_unref(pc);
            }
    CB_CHECK_EQ_INT(diff, 0);
    CB_CHECK_CMP_INT(n, >, 4);
    /* out of order and past the end */
    const int64_t ks[] = {3, 0, 2, 2, 7, 1};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        cb_buffer *pa = NULL, *pb = NULL;
        CB_CHECK_EQ_INT(inst_query(&a, 0, 0, ks[i], NULL, &pa), CB_OK);
        CB_CHECK_EQ_INT(inst_query(&b, 0, 0, ks[i], NULL, &pb), CB_OK);
        CB_CHECK_EQ_INT(buf_hash(pa), buf_hash(pb));
        cb_buffer_unref(pa);
        cb_buffer_unref(pb);
    }
    inst_close(&a);
    inst_close(&b);
    inst_close(&c); /* destroyed mid-stream, without finish */
}

static void test_prefetch_equivalence_synthetic(void) {
    prefetch_equivalence(&cb_stage_data_synthetic,
                         "shape: [3, 10, 9]\nbatch_size: 6\nsplits: {train: 5, val: 2}\n"
                         "epochs: 3\nformat: uint8\nseed: 5\n");
}

/* ---- data.cifar ------------------------------------------------------------------------- */

static void test_cifar_reads_back(void) {
    const char *dir = cb_test_tmpdir();
    CB_CHECK_EQ_INT(cb_cifar_gen_dataset(dir, 300, 100, 10, 7), 0);
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 32\nshuffle: false\nprefetch: 0\n", dir);
    inst x;
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_OK);
    cb_splits sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.n, 2);
    CB_CHECK_STR_EQ(sp.split[0].name, "train");
    CB_CHECK_EQ_INT(sp.split[0].batches, 300 / 32);
    CB_CHECK_STR_EQ(sp.split[1].name, "val");
    CB_CHECK_EQ_INT(sp.split[1].batches, 100 / 32);
    /* train batch 2, image 5 = record 69; val batch 1, image 0 = test record 32 */
    unsigned char rec[CB_CIFAR_GEN_RECORD];
    cb_buffer *out = NULL;
    CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 2, NULL, &out), CB_OK);
    cb_image_batch *b = batch_of(out);
    if (b) {
        CB_CHECK_EQ_INT(b->layout, CB_BATCH_U8_HWC);
        CB_CHECK_EQ_INT(b->classes, 10);
        cb_cifar_gen_record(rec, 69 % 10, 7, 69);
        CB_CHECK_EQ_INT(cb_image_batch_labels(b)[5], rec[0]);
        const cb_image_desc *d = cb_image_batch_descs(b);
        CB_CHECK_EQ_INT(d[5].h, 32);
        CB_CHECK_EQ_INT(d[5].w, 32);
        CB_CHECK_EQ_INT(d[5].c, 3);
        const unsigned char *px = cb_image_batch_data(b) + d[5].offset;
        int bad = 0;
        for (int y = 0; y < 32; y++)
            for (int xx = 0; xx < 32; xx++)
                for (int c = 0; c < 3; c++)
                    bad += px[(y * 32 + xx) * 3 + c] != rec[1 + c * 1024 + y * 32 + xx];
        CB_CHECK_EQ_INT(bad, 0);
        /* record 69 is class 9: its square is bright */
        int sx, sy;
        cb_cifar_gen_square(9, &sx, &sy);
        CB_CHECK_CMP_INT(px[((sy + 1) * 32 + sx + 1) * 3], >=, 224);
    }
    cb_buffer_unref(out);
    CB_CHECK_EQ_INT(inst_query(&x, 1, 0, 1, NULL, &out), CB_OK);
    b = batch_of(out);
    if (b) {
        cb_cifar_gen_record(rec, (1000000 + 32) % 10, 7, 1000000 + 32);
        CB_CHECK_STR_EQ(b->split_name, "val");
        CB_CHECK_EQ_INT(cb_image_batch_labels(b)[0], rec[0]);
        const unsigned char *px = cb_image_batch_data(b);
        CB_CHECK_EQ_INT(px[(3 * 32 + 4) * 3 + 2], rec[1 + 2 * 1024 + 3 * 32 + 4]);
    }
    cb_buffer_unref(out);
    inst_close(&x);

    /* float: the same pixels in NCHW scaled to [0, 1] */
    snprintf(cfg, sizeof cfg,
             "path: %s\nbatch_size: 32\nshuffle: false\nprefetch: 0\nformat: float\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_OK);
    CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, NULL, &out), CB_OK);
    b = batch_of(out);
    if (b) {
        CB_CHECK_EQ_INT(b->layout, CB_BATCH_F32_NCHW);
        CB_CHECK_EQ_INT(b->c * b->h * b->w, 3072);
        cb_cifar_gen_record(rec, 3, 7, 3);
        const float *f = (const float *)(const void *)cb_image_batch_data(b) + 3 * 3072;
        double maxd = 0;
        for (int i = 0; i < 3072; i++) maxd = fmax(maxd, fabs(f[i] - rec[1 + i] / 255.0));
        CB_CHECK(maxd < 1e-6);
    }
    cb_buffer_unref(out);
    inst_close(&x);

    /* shuffled: an epoch is distinct records with their right labels */
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 32\nseed: 3\nprefetch: 2\nlimit_train: 256\n",
             dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_OK);
    sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.split[0].batches, 8);
    uint64_t h[256], ref[256];
    for (int i = 0; i < 256; i++) {
        cb_cifar_gen_record(rec, i % 10, 7, (uint64_t)i);
        unsigned char hwc[3072];
        for (int p = 0; p < 1024; p++)
            for (int c = 0; c < 3; c++) hwc[p * 3 + c] = rec[1 + c * 1024 + p];
        ref[i] = fnv(hwc, sizeof hwc) ^ (uint64_t)rec[0];
    }
    int in_order = 1;
    for (int k = 0; k < 8; k++) {
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, k, NULL, &out), CB_OK);
        b = batch_of(out);
        for (uint32_t i = 0; b && i < b->n; i++) {
            const cb_image_desc *d = cb_image_batch_descs(b);
            h[k * 32 + i] = fnv(cb_image_batch_data(b) + d[i].offset, d[i].bytes) ^
                            (uint64_t)cb_image_batch_labels(b)[i];
            in_order &= h[k * 32 + i] == ref[k * 32 + i];
        }
        cb_buffer_unref(out);
    }
    CB_CHECK(!in_order);
    qsort(h, 256, sizeof h[0], cmp_u64);
    qsort(ref, 256, sizeof ref[0], cmp_u64);
    CB_CHECK(memcmp(h, ref, sizeof h) == 0);
    inst_close(&x);

    /* one file: train only */
    snprintf(cfg, sizeof cfg, "path: %s/test_batch.bin\nbatch_size: 10\nprefetch: 0\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_OK);
    sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.n, 1);
    CB_CHECK_EQ_INT(sp.split[0].batches, 10);
    inst_close(&x);
}

static void test_cifar_errors(void) {
    const char *dir = cb_test_tmpdir();
    char cfg[4096], p[2048];
    inst x;
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, ""), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "path: is required");
    inst_close(&x);
    snprintf(cfg, sizeof cfg, "path: %s/nonexistent\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_EIO);
    CB_CHECK_CONTAINS(x.err.msg, "nonexistent");
    inst_close(&x);
    /* an empty directory */
    snprintf(cfg, sizeof cfg, "path: %s\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "no data_batch_");
    inst_close(&x);
    /* a file of the wrong size */
    CB_CHECK_EQ_INT(cb_cifar_gen_dataset(dir, 40, 0, 10, 1), 0);
    snprintf(p, sizeof p, "%s/data_batch_2.bin", dir);
    FILE *f = fopen(p, "wb");
    CB_CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 2 * 3073 + 5; i++) fputc(i & 0xff, f);
        fclose(f);
    }
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "data_batch_2.bin");
    CB_CHECK_CONTAINS(x.err.msg, "6151");
    CB_CHECK_CONTAINS(x.err.msg, "3073");
    inst_close(&x);
    /* an empty file */
    f = fopen(p, "wb");
    if (f) fclose(f);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "data_batch_2.bin");
    inst_close(&x);
    /* a label >= classes: record 7 of data_batch_2.bin */
    CB_CHECK_EQ_INT(cb_cifar_gen_file(p, 20, 10, 2, 0), 0);
    f = fopen(p, "r+b");
    CB_CHECK(f != NULL);
    if (f) {
        fseek(f, 7L * 3073, SEEK_SET);
        fputc(12, f);
        fclose(f);
    }
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 8\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "data_batch_2.bin");
    CB_CHECK_CONTAINS(x.err.msg, "record 7");
    CB_CHECK_CONTAINS(x.err.msg, "label 12");
    inst_close(&x);
    /* ... which is fine with 16 classes */
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 8\nclasses: 16\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_OK);
    CB_CHECK_EQ_INT(inst_splits(&x).split[0].batches, 60 / 8);
    inst_close(&x);
    /* fewer records than a batch */
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 8\nclasses: 16\nlimit_train: 5\n", dir);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_cifar, cfg), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "batch_size");
    inst_close(&x);
}

static void test_prefetch_equivalence_cifar(void) {
    const char *dir = cb_test_tmpdir();
    CB_CHECK_EQ_INT(cb_cifar_gen_dataset(dir, 200, 50, 10, 9), 0);
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 16\nepochs: 2\nformat: float\n", dir);
    prefetch_equivalence(&cb_stage_data_cifar, cfg);
}

/* ---- data.images, vision.decode --------------------------------------------------------- */

typedef struct written {
    const char *rel;
    int w, h, channels; /* channels written: 1, 3, 4; JPEG: 3 */
    int jpeg;
    unsigned char *px;  /* as written */
} written;

static void write_image(const char *root, written *im) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", root, im->rel);
    if (im->jpeg) {
        im->px = test_rgb(im->w, im->h, im->w * 31 + im->h);
        CB_CHECK_EQ_INT(write_jpeg(p, im->px, im->w, im->h, 95), 0);
        return;
    }
    size_t n = (size_t)im->w * im->h * im->channels;
    im->px = malloc(n);
    uint64_t st = (uint64_t)im->w * 977 + (uint64_t)im->h;
    for (size_t i = 0; i < n; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        im->px[i] = (unsigned char)(st >> 56);
    }
    CB_CHECK_EQ_INT(write_png(p, im->px, im->w, im->h, im->channels), 0);
}

/* Compares a decoded RGB image with what was written: PNG exactly (gray replicated, alpha
 * dropped), JPEG within tolerance. */
static void check_decoded(const written *im, const unsigned char *rgb, const cb_image_desc *d) {
    CB_CHECK_EQ_INT(d->w, im->w);
    CB_CHECK_EQ_INT(d->h, im->h);
    CB_CHECK_EQ_INT(d->c, 3);
    if (d->w != (uint32_t)im->w || d->h != (uint32_t)im->h) return;
    size_t np = (size_t)im->w * im->h;
    double sum = 0;
    int maxd = 0, mism = 0;
    for (size_t p = 0; p < np; p++)
        for (int c = 0; c < 3; c++) {
            int want = im->channels == 1 ? im->px[p] : im->px[p * im->channels + c];
            int got = rgb[p * 3 + c], dd = abs(got - want);
            sum += dd;
            if (dd > maxd) maxd = dd;
            mism += dd != 0;
        }
    if (im->jpeg) {
        double mean = sum / (double)(np * 3);
        if (mean > 2.0 || maxd > 24)
            printf("# %s: mean |diff| %.2f, max %d\n", im->rel, mean, maxd);
        CB_CHECK(mean <= 2.0);
        CB_CHECK(maxd <= 24);
    } else {
        if (mism) printf("# %s: %d values differ\n", im->rel, mism);
        CB_CHECK_EQ_INT(mism, 0);
    }
}

static void test_images_decode_and_layouts(void) {
    const char *root = cb_test_tmpdir();
    mkdirs(root, "cls_a/sub");
    mkdirs(root, "cls_b");
    mkdirs(root, "empty_class");
    written ims[] = {
        {"cls_a/a0.jpg", 20, 14, 3, 1, NULL},
        {"cls_a/a1.png", 9, 6, 3, 0, NULL},
        {"cls_a/sub/a2.JPEG", 17, 23, 3, 1, NULL},
        {"cls_b/b0.png", 7, 5, 1, 0, NULL},  /* grayscale */
        {"cls_b/b1.PNG", 6, 8, 4, 0, NULL},  /* RGBA */
        {"cls_b/b2.jpeg", 16, 16, 3, 1, NULL},
    };
    size_t n_ims = sizeof ims / sizeof ims[0];
    for (size_t i = 0; i < n_ims; i++) write_image(root, &ims[i]);
    cb_test_write(root, "notes.txt", "not an image\n");
    cb_test_write(root, "cls_b/readme.md", "ignored\n");
    cb_test_write(root, "cls_b/.hidden.png", "ignored\n");

    char cfg[4096];
    snprintf(cfg, sizeof cfg, "path: %s/\nbatch_size: 3\nshuffle: false\nprefetch: 0\n", root);
    inst x;
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_OK);
    cb_splits sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.n, 1);
    CB_CHECK_STR_EQ(sp.split[0].name, "train");
    CB_CHECK_EQ_INT(sp.split[0].batches, 2);
    cb_buffer *dec[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, k, NULL, &dec[k]), CB_OK);
        if (!dec[k]) printf("# %s\n", x.err.msg);
        cb_image_batch *b = batch_of(dec[k]);
        if (!b) continue;
        CB_CHECK_EQ_INT(b->layout, CB_BATCH_U8_HWC);
        CB_CHECK_EQ_INT(b->n, 3);
        CB_CHECK_EQ_INT(b->classes, 3); /* cls_a, cls_b, empty_class */
        for (uint32_t i = 0; i < 3; i++) {
            const written *im = &ims[k * 3 + (int)i];
            CB_CHECK_STR_EQ(cb_image_batch_name(b, i), im->rel);
            CB_CHECK_EQ_INT(cb_image_batch_labels(b)[i], k); /* cls_a = 0, cls_b = 1 */
            const cb_image_desc *d = &cb_image_batch_descs(b)[i];
            check_decoded(im, cb_image_batch_data(b) + d->offset, d);
        }
    }
    inst_close(&x);

    /* decode: false gives the file bytes; vision.decode makes the same decoded batch */
    snprintf(cfg, sizeof cfg,
             "path: %s\nbatch_size: 3\nshuffle: false\nprefetch: 1\ndecode: false\n", root);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_OK);
    inst v;
    CB_CHECK_EQ_INT(inst_open(&v, &cb_stage_vision_decode, ""), CB_OK);
    for (int k = 0; k < 2; k++) {
        cb_buffer *enc = NULL, *out = NULL;
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, k, NULL, &enc), CB_OK);
        cb_image_batch *b = batch_of(enc);
        if (!b) continue;
        CB_CHECK_EQ_INT(b->layout, CB_BATCH_ENCODED);
        for (uint32_t i = 0; i < 3; i++) {
            const written *im = &ims[k * 3 + (int)i];
            const cb_image_desc *d = &cb_image_batch_descs(b)[i];
            char p[2048];
            snprintf(p, sizeof p, "%s/%s", root, im->rel);
            size_t len = 0;
            char *file = cb_test_read(p, &len);
            CB_CHECK_EQ_INT(d->bytes, len);
            CB_CHECK(file && d->bytes == len &&
                     memcmp(file, cb_image_batch_data(b) + d->offset, len) == 0);
            free(file);
            CB_CHECK_EQ_INT(d->format, im->jpeg ? CB_IMAGE_FORMAT_JPEG : CB_IMAGE_FORMAT_PNG);
            CB_CHECK_STR_EQ(cb_image_batch_name(b, i), im->rel);
        }
        CB_CHECK_EQ_INT(inst_query(&v, 0, 0, 0, enc, &out), CB_OK);
        CB_CHECK(out && dec[k] && out->size_bytes == dec[k]->size_bytes &&
                 memcmp(out->data, dec[k]->data, out->size_bytes) == 0);
        cb_buffer_unref(out);
    }
    /* vision.decode refuses what is not ENCODED, saying what it got */
    cb_buffer_ref(dec[0]);
    cb_buffer *out = NULL;
    CB_CHECK_EQ_INT(inst_query(&v, 0, 0, 0, dec[0], &out), CB_EINVAL);
    CB_CHECK_CONTAINS(v.err.msg, "U8_HWC");
    cb_buffer *junk = cb_buffer_new(100);
    memset(junk->data, 7, 100);
    CB_CHECK_EQ_INT(inst_query(&v, 0, 0, 0, junk, &out), CB_EINVAL);
    CB_CHECK_CONTAINS(v.err.msg, "not a valid image batch");
    CB_CHECK_EQ_INT(inst_query(&v, 0, 0, 0, NULL, &out), CB_EINVAL);
    inst_close(&v);
    inst_close(&x);
    cb_buffer_unref(dec[0]);
    cb_buffer_unref(dec[1]);
    for (size_t i = 0; i < n_ims; i++) free(ims[i].px);
}

static void test_images_splits_layout(void) {
    const char *root = cb_test_tmpdir();
    written ims[] = {
        {"train/dog/1.png", 4, 4, 3, 0, NULL}, {"train/dog/2.png", 4, 5, 3, 0, NULL},
        {"train/cat/1.png", 5, 4, 3, 0, NULL}, {"train/cat/2.png", 3, 3, 3, 0, NULL},
        {"val/dog/1.png", 6, 4, 3, 0, NULL},   {"val/cat/1.png", 4, 6, 3, 0, NULL},
        {"val/zebra/1.png", 2, 2, 3, 0, NULL},
    };
    mkdirs(root, "train/dog");
    mkdirs(root, "train/cat");
    mkdirs(root, "val/dog");
    mkdirs(root, "val/cat");
    mkdirs(root, "val/zebra");
    for (size_t i = 0; i < sizeof ims / sizeof ims[0]; i++) write_image(root, &ims[i]);
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 1\nshuffle: false\n", root);
    inst x;
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_OK);
    cb_splits sp = inst_splits(&x);
    CB_CHECK_EQ_INT(sp.n, 2);
    CB_CHECK_STR_EQ(sp.split[0].name, "train");
    CB_CHECK_STR_EQ(sp.split[1].name, "val");
    CB_CHECK_EQ_INT(sp.split[0].batches, 4);
    CB_CHECK_EQ_INT(sp.split[1].batches, 3);
    /* classes: cat 0, dog 1, zebra 2 (sorted union); val order: cat, dog, zebra */
    const char *names[] = {"val/cat/1.png", "val/dog/1.png", "val/zebra/1.png"};
    for (int k = 0; k < 3; k++) {
        cb_buffer *out = NULL;
        CB_CHECK_EQ_INT(inst_query(&x, 1, 0, k, NULL, &out), CB_OK);
        cb_image_batch *b = batch_of(out);
        if (b) {
            CB_CHECK_EQ_INT(b->classes, 3);
            CB_CHECK_EQ_INT(cb_image_batch_labels(b)[0], k);
            CB_CHECK_STR_EQ(cb_image_batch_name(b, 0), names[k]);
            CB_CHECK_STR_EQ(b->split_name, "val");
        }
        cb_buffer_unref(out);
    }
    cb_buffer *out = NULL;
    CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, NULL, &out), CB_OK);
    cb_image_batch *b = batch_of(out);
    if (b) CB_CHECK_STR_EQ(cb_image_batch_name(b, 0), "train/cat/1.png");
    cb_buffer_unref(out);
    inst_close(&x);
    for (size_t i = 0; i < sizeof ims / sizeof ims[0]; i++) free(ims[i].px);

    /* errors: no such path, no class folders, no images, a split smaller than a batch */
    snprintf(cfg, sizeof cfg, "path: %s/missing\n", root);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_EIO);
    CB_CHECK_CONTAINS(x.err.msg, "missing");
    inst_close(&x);
    snprintf(cfg, sizeof cfg, "path: %s/train/dog\n", root);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "no class folders");
    inst_close(&x);
    mkdirs(root, "noimg/c1");
    cb_test_write(root, "noimg/c1/x.txt", "x");
    snprintf(cfg, sizeof cfg, "path: %s/noimg\n", root);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_EINVAL);
    CB_CHECK_CONTAINS(x.err.msg, "no images");
    inst_close(&x);
    snprintf(cfg, sizeof cfg, "path: %s\nbatch_size: 4\n", root);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "split val: 3 images");
    inst_close(&x);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, ""), CB_ECONFIG);
    CB_CHECK_CONTAINS(x.err.msg, "path: is required");
    inst_close(&x);
    /* an unreadable class folder (skipped when running as root, which reads anything) */
    if (geteuid() != 0) {
        mkdirs(root, "locked/c1");
        char p[2048];
        snprintf(p, sizeof p, "%s/locked/c1", root);
        chmod(p, 0);
        snprintf(cfg, sizeof cfg, "path: %s/locked\n", root);
        CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_EIO);
        CB_CHECK_CONTAINS(x.err.msg, "locked/c1");
        inst_close(&x);
        chmod(p, 0755);
    }
}

/* Corrupt files fail the query that holds them, naming the file, on every path: decode in
 * data.images (with and without prefetch) and decode: false + vision.decode. */
static void test_images_corrupt(void) {
    const char *root = cb_test_tmpdir();
    mkdirs(root, "c");
    written good = {"c/good.png", 5, 4, 3, 0, NULL}, full = {"c/full.jpg", 64, 48, 3, 1, NULL},
            fullpng = {"c/fullpng.png", 40, 30, 3, 0, NULL};
    write_image(root, &good);
    write_image(root, &full);
    write_image(root, &fullpng);
    char src[2048], dst[2048];
    snprintf(src, sizeof src, "%s/c/full.jpg", root);
    snprintf(dst, sizeof dst, "%s/c/trunc.jpg", root);
    truncate_copy(src, dst, file_size(src) / 2);
    snprintf(src, sizeof src, "%s/c/fullpng.png", root);
    snprintf(dst, sizeof dst, "%s/c/truncpng.png", root);
    truncate_copy(src, dst, file_size(src) * 2 / 3);
    snprintf(dst, sizeof dst, "%s/c/garbage.png", root);
    FILE *f = fopen(dst, "wb");
    for (int i = 0; f && i < 500; i++) fputc((i * 37 + 11) & 0xff, f);
    if (f) fclose(f);
    remove(src);
    snprintf(src, sizeof src, "%s/c/full.jpg", root);
    remove(src);
    /* sorted: garbage.png, good.png, trunc.jpg, truncpng.png */
    struct {
        int batch;
        const char *file, *msg;
    } cases[] = {{0, "c/garbage.png", "not a JPEG or PNG"},
                 {2, "c/trunc.jpg", "JPEG"},
                 {3, "c/truncpng.png", "PNG"}};
    for (int mode = 0; mode < 3; mode++) {
        char cfg[4096];
        snprintf(cfg, sizeof cfg,
                 "path: %s\nbatch_size: 1\nshuffle: false\nprefetch: %d\ndecode: %s\n", root,
                 mode == 1 ? 2 : 0, mode == 2 ? "false" : "true");
        inst x, v;
        CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_OK);
        CB_CHECK_EQ_INT(inst_open(&v, &cb_stage_vision_decode, ""), CB_OK);
        for (int k = 0; k < 4; k++) {
            cb_buffer *out = NULL;
            int rc = inst_query(&x, 0, 0, k, NULL, &out);
            const char *msg = x.err.msg;
            if (mode == 2 && rc == CB_OK) {
                rc = inst_query(&v, 0, 0, k, out, &out);
                msg = v.err.msg;
            }
            const char *want_file = NULL, *want_msg = NULL;
            for (size_t i = 0; i < 3; i++)
                if (cases[i].batch == k) {
                    want_file = cases[i].file;
                    want_msg = cases[i].msg;
                }
            if (!want_file) {
                CB_CHECK_EQ_INT(rc, CB_OK);
                cb_image_batch *b = batch_of(out);
                if (b) check_decoded(&good, cb_image_batch_data(b), cb_image_batch_descs(b));
            } else {
                if (rc == CB_OK) printf("# mode %d batch %d: no error\n", mode, k);
                CB_CHECK_EQ_INT(rc, CB_EINVAL);
                CB_CHECK_CONTAINS(msg, want_file);
                CB_CHECK_CONTAINS(msg, want_msg);
            }
            cb_buffer_unref(out);
        }
        inst_close(&v);
        inst_close(&x);
    }
    free(good.px);
    free(full.px);
    free(fullpng.px);
}

/* A PNG written with libpng's classic API: rows of rowbytes bytes each (16-bit samples big
 * endian), optional interlacing and a gray tRNS value (-1: none). */
static int write_png_raw(const char *path, int w, int h, int type, int depth, int interlace,
                         const unsigned char *data, size_t rowbytes, int trns_gray) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (trns_gray >= 0) {
        png_color_16 t;
        memset(&t, 0, sizeof t);
        t.gray = (png_uint_16)trns_gray;
        png_set_tRNS(png, info, NULL, 0, &t);
    }
    png_write_info(png, info);
    png_bytep rows[64];
    for (int y = 0; y < h && y < 64; y++) rows[y] = (png_bytep)(uintptr_t)(data + (size_t)y * rowbytes);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return fclose(f);
}

/* Decodes path's file into out (w x h x 3); returns the status. */
static int decode_file(const char *path, uint32_t w, uint32_t h, unsigned char *out) {
    cb_host host;
    cb_host_init_base(&host);
    size_t len = 0;
    unsigned char *file = (unsigned char *)cb_test_read(path, &len);
    char msg[256] = "";
    uint32_t pw = 0, ph = 0;
    int rc = file ? cb__image_probe(&host, file, len, 0, &pw, &ph, msg, sizeof msg) : CB_EIO;
    if (rc == CB_OK && (pw != w || ph != h)) rc = CB_EINVAL;
    if (rc == CB_OK) rc = cb__image_decode(&host, file, len, 0, w, h, out, msg, sizeof msg);
    if (rc) printf("# %s: %s\n", path, msg);
    free(file);
    return rc;
}

/* 16-bit RGB, 2-bit gray with tRNS, interlaced RGB: all become 8-bit RGB. */
static void test_decode_png_depths(void) {
    const char *dir = cb_test_tmpdir();
    char p[2048];
    enum { W = 9, H = 7 };
    unsigned char raw[H * W * 6], out[H * W * 3];
    /* 16-bit RGB: scaled to 8 bits (v / 257, rounded) */
    for (int i = 0; i < H * W * 3; i++) {
        unsigned v = (unsigned)(i * 2713 + 17) & 0xffff;
        raw[2 * i] = (unsigned char)(v >> 8);
        raw[2 * i + 1] = (unsigned char)(v & 0xff);
    }
    snprintf(p, sizeof p, "%s/rgb16.png", dir);
    CB_CHECK_EQ_INT(write_png_raw(p, W, H, PNG_COLOR_TYPE_RGB, 16, 0, raw, W * 6, -1), 0);
    CB_CHECK_EQ_INT(decode_file(p, W, H, out), CB_OK);
    int bad = 0;
    for (int i = 0; i < H * W * 3; i++) {
        unsigned v = ((unsigned)raw[2 * i] << 8) | raw[2 * i + 1];
        bad += abs((int)out[i] - (int)((v + 128) / 257)) > 1;
    }
    CB_CHECK_EQ_INT(bad, 0);
    /* 2-bit gray (4 pixels a byte) with a transparent value: 0, 85, 170, 255 on all channels */
    size_t rb = (W * 2 + 7) / 8;
    memset(raw, 0, sizeof raw);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) raw[y * rb + (size_t)x / 4] |= (unsigned char)(((x + y) % 4) << (6 - 2 * (x % 4)));
    snprintf(p, sizeof p, "%s/gray2.png", dir);
    CB_CHECK_EQ_INT(write_png_raw(p, W, H, PNG_COLOR_TYPE_GRAY, 2, 0, raw, rb, 1), 0);
    CB_CHECK_EQ_INT(decode_file(p, W, H, out), CB_OK);
    bad = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) bad += out[(y * W + x) * 3 + c] != ((x + y) % 4) * 85;
    CB_CHECK_EQ_INT(bad, 0);
    /* interlaced 8-bit RGB: exact */
    for (int i = 0; i < H * W * 3; i++) raw[i] = (unsigned char)(i * 31 + 7);
    snprintf(p, sizeof p, "%s/adam7.png", dir);
    CB_CHECK_EQ_INT(write_png_raw(p, W, H, PNG_COLOR_TYPE_RGB, 8, 1, raw, W * 3, -1), 0);
    CB_CHECK_EQ_INT(decode_file(p, W, H, out), CB_OK);
    CB_CHECK(memcmp(out, raw, sizeof out) == 0);
}

/* A grayscale JPEG becomes RGB with three equal channels close to the gray written. */
static void test_decode_gray_jpeg(void) {
    const char *dir = cb_test_tmpdir();
    enum { W = 24, H = 16 };
    unsigned char g[W * H], out[W * H * 3];
    for (int i = 0; i < W * H; i++) g[i] = (unsigned char)(60 + (i % W) * 4 + (i / W) * 3);
    char p[2048];
    snprintf(p, sizeof p, "%s/gray.jpg", dir);
    FILE *f = fopen(p, "wb");
    CB_CHECK(f != NULL);
    if (!f) return;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = W;
    ci.image_height = H;
    ci.input_components = 1;
    ci.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 95, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = g + (size_t)ci.next_scanline * W;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(f);
    CB_CHECK_EQ_INT(decode_file(p, W, H, out), CB_OK);
    int bad = 0;
    for (int i = 0; i < W * H; i++)
        bad += out[3 * i] != out[3 * i + 1] || out[3 * i] != out[3 * i + 2] || abs(out[3 * i] - g[i]) > 6;
    CB_CHECK_EQ_INT(bad, 0);
}

/* A palette PNG (with a transparent entry) decodes to its colours; alpha is dropped. */
static void test_decode_palette(void) {
    const char *dir = cb_test_tmpdir();
    static const unsigned char cmap[4 * 4] = {255, 0, 0, 255, 0, 200, 0, 128,
                                              10, 20, 30, 0, 250, 251, 252, 255};
    unsigned char idx[6 * 5];
    for (int i = 0; i < 30; i++) idx[i] = (unsigned char)((i * 7) % 4);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = 6;
    img.height = 5;
    img.format = PNG_FORMAT_RGBA_COLORMAP;
    img.colormap_entries = 4;
    char p[2048];
    snprintf(p, sizeof p, "%s/pal.png", dir);
    CB_CHECK(png_image_write_to_file(&img, p, 0, idx, 0, cmap) != 0);
    size_t len = 0;
    unsigned char *file = (unsigned char *)cb_test_read(p, &len);
    CB_CHECK(file && len > 8 && file[25] == 3); /* IHDR colour type 3: a palette image */
    cb_host host;
    cb_host_init_base(&host);
    uint32_t w = 0, h = 0;
    char msg[256] = "";
    unsigned char out[6 * 5 * 3];
    CB_CHECK_EQ_INT(cb__image_probe(&host, file, len, 0, &w, &h, msg, sizeof msg), CB_OK);
    CB_CHECK_EQ_INT(w, 6);
    CB_CHECK_EQ_INT(h, 5);
    CB_CHECK_EQ_INT(cb__image_decode(&host, file, len, 0, 6, 5, out, msg, sizeof msg), CB_OK);
    if (msg[0]) printf("# %s\n", msg);
    int bad = 0;
    for (int i = 0; i < 30; i++)
        for (int c = 0; c < 3; c++) bad += out[i * 3 + c] != cmap[idx[i] * 4 + c];
    CB_CHECK_EQ_INT(bad, 0);
    /* every truncation of the file is an error, never a crash */
    int ok = 0;
    for (size_t n = 0; file && n < len; n += 7)
        ok += cb__image_decode(&host, file, n, 0, 6, 5, out, msg, sizeof msg) == CB_OK;
    CB_CHECK_EQ_INT(ok, 0);
    free(file);
}

static void test_decode_speed(void) {
    const char *dir = cb_test_tmpdir();
    int w = 500, h = 375;
    unsigned char *px = test_rgb(w, h, 3);
    for (int i = 0; i < w * h * 3; i++) px[i] = (unsigned char)(px[i] ^ ((i * 2654435761u) >> 29));
    char p[2048];
    snprintf(p, sizeof p, "%s/x.jpg", dir);
    CB_CHECK_EQ_INT(write_jpeg(p, px, w, h, 90), 0);
    size_t len = 0;
    char *file = cb_test_read(p, &len);
    cb_host host;
    cb_host_init_base(&host);
    unsigned char *out = malloc((size_t)w * h * 3);
    char msg[256];
    uint32_t pw = 0, ph = 0;
    CB_CHECK_EQ_INT(
        cb__image_probe(&host, (unsigned char *)file, len, 0, &pw, &ph, msg, sizeof msg), CB_OK);
    CB_CHECK_EQ_INT(pw, w);
    CB_CHECK_EQ_INT(ph, h);
    int n = 20;
    double t0 = now_ms();
    for (int i = 0; i < n; i++)
        CB_CHECK_EQ_INT(cb__image_decode(&host, (unsigned char *)file, len, CB_IMAGE_FORMAT_JPEG,
                                         (uint32_t)w, (uint32_t)h, out, msg, sizeof msg), CB_OK);
    printf("# decode: %.2f ms per %dx%d JPEG (%zu bytes)\n", (now_ms() - t0) / n, w, h, len);
    /* a wrong expected size is an error, not an overflow */
    CB_CHECK_EQ_INT(cb__image_decode(&host, (unsigned char *)file, len, 0, (uint32_t)w - 1,
                                     (uint32_t)h, out, msg, sizeof msg), CB_EINVAL);
    free(out);
    free(file);
    free(px);
}

/* ---- vision.preprocess ------------------------------------------------------------------ */

/* A U8_HWC batch of n images, image i h[i] x w[i] x ch with pixel value f(i, y, x, c). */
static cb_buffer *u8_batch(uint32_t n, const uint32_t *h, const uint32_t *w, uint32_t ch,
                           const char *split, int64_t epoch, int64_t batch) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) total += (uint64_t)h[i] * w[i] * ch;
    cb_buffer *buf = cb_buffer_new(cb_image_batch_bytes(n, total));
    cb_image_batch *b = cb_image_batch_init(buf, CB_BATCH_U8_HWC, n, total);
    snprintf(b->split_name, sizeof b->split_name, "%s", split);
    b->epoch = epoch;
    b->batch = batch;
    b->split = strcmp(split, "train") == 0 ? 0 : 1;
    b->classes = 10;
    cb_image_desc *d = cb_image_batch_descs(b);
    uint64_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        cb_image_batch_labels(b)[i] = (int32_t)(i % 10);
        d[i].h = h[i];
        d[i].w = w[i];
        d[i].c = ch;
        d[i].offset = off;
        d[i].bytes = (uint64_t)h[i] * w[i] * ch;
        unsigned char *p = cb_image_batch_data(b) + off;
        for (uint64_t k = 0; k < d[i].bytes; k++)
            p[k] = (unsigned char)((k * 37 + i * 101 + (k / ch) * (k % 7)) & 0xff);
        off += d[i].bytes;
    }
    return buf;
}

typedef struct pp_cfg {
    uint32_t resize, crop, padding;
    const double *mean, *std;
    int n_norm;
} pp_cfg;

/* The reference: one output value, straight from the definitions, in double precision. */
static double pp_ref(const pp_cfg *c, const unsigned char *img, uint32_t h, uint32_t w, uint32_t ch,
                     uint32_t top, uint32_t left, int flip, uint32_t ow, uint32_t oy, uint32_t ox,
                     uint32_t k) {
    uint32_t rh = h, rw = w;
    if (c->resize) {
        if (h <= w) {
            rh = c->resize;
            rw = (uint32_t)((double)c->resize * w / h);
        } else {
            rw = c->resize;
            rh = (uint32_t)((double)c->resize * h / w);
        }
    }
    long y = (long)top + (long)oy - (long)c->padding;
    long x = (long)left + (long)(flip ? ow - 1 - ox : ox) - (long)c->padding;
    double v = 0;
    if (y >= 0 && y < (long)rh && x >= 0 && x < (long)rw) {
        if (rh == h && rw == w) {
            v = img[((size_t)y * w + (size_t)x) * ch + k];
        } else {
            double sy = ((double)y + 0.5) * h / rh - 0.5, sx = ((double)x + 0.5) * w / rw - 0.5;
            if (sy < 0) sy = 0;
            if (sx < 0) sx = 0;
            long y0 = (long)sy, x0 = (long)sx;
            if (y0 > (long)h - 1) y0 = (long)h - 1;
            if (x0 > (long)w - 1) x0 = (long)w - 1;
            long y1 = y0 < (long)h - 1 ? y0 + 1 : y0, x1 = x0 < (long)w - 1 ? x0 + 1 : x0;
            double ly = sy - y0, lx = sx - x0;
#define PX(yy, xx) ((double)img[((size_t)(yy) * w + (size_t)(xx)) * ch + k])
            v = (1 - ly) * ((1 - lx) * PX(y0, x0) + lx * PX(y0, x1)) +
                ly * ((1 - lx) * PX(y1, x0) + lx * PX(y1, x1));
#undef PX
        }
    }
    double m = c->mean[c->n_norm == 1 ? 0 : k], s = c->std[c->n_norm == 1 ? 0 : k];
    return (v / 255.0 - m) / s;
}

/* Max |out - ref| for image i of the output, for a given crop place and flip. */
static double pp_err(const pp_cfg *c, cb_image_batch *in, cb_image_batch *out, uint32_t i,
                     uint32_t top, uint32_t left, int flip) {
    const cb_image_desc *d = &cb_image_batch_descs(in)[i];
    const unsigned char *img = cb_image_batch_data(in) + d->offset;
    const float *o = (const float *)(const void *)cb_image_batch_data(out) +
                     (size_t)i * out->c * out->h * out->w;
    double e = 0;
    for (uint32_t k = 0; k < out->c; k++)
        for (uint32_t y = 0; y < out->h; y++)
            for (uint32_t x = 0; x < out->w; x++) {
                double r = pp_ref(c, img, d->h, d->w, d->c, top, left, flip, out->w, y, x, k);
                e = fmax(e, fabs(r - o[((size_t)k * out->h + y) * out->w + x]));
            }
    return e;
}

/* Finds the crop place/flip that explains image i; returns its error (and the place). */
static double pp_best(const pp_cfg *c, cb_image_batch *in, cb_image_batch *out, uint32_t i,
                      uint32_t *top, uint32_t *left, int *flip) {
    const cb_image_desc *d = &cb_image_batch_descs(in)[i];
    uint32_t rh = d->h, rw = d->w;
    if (c->resize) {
        rh = d->h <= d->w ? c->resize : (uint32_t)((double)c->resize * d->h / d->w);
        rw = d->h <= d->w ? (uint32_t)((double)c->resize * d->w / d->h) : c->resize;
    }
    double best = 1e9;
    for (uint32_t t = 0; t + out->h <= rh + 2 * c->padding; t++)
        for (uint32_t l = 0; l + out->w <= rw + 2 * c->padding; l++)
            for (int f = 0; f < 2; f++) {
                double e = pp_err(c, in, out, i, t, l, f);
                if (e < best) {
                    best = e;
                    *top = t;
                    *left = l;
                    *flip = f;
                }
            }
    return best;
}

static void test_preprocess_reference(void) {
    static const double mean3[] = {0.485, 0.456, 0.406}, std3[] = {0.229, 0.224, 0.225};
    static const double mean1[] = {0.5}, std1[] = {0.25};
    uint32_t hs[] = {5, 9, 6}, ws[] = {7, 4, 6};
    inst x;
    cb_buffer *out = NULL;

    /* 1. normalise only (no resize, no crop): every image must share a size */
    {
        uint32_t h1[] = {5, 5}, w1[] = {7, 7};
        cb_buffer *in = u8_batch(2, h1, w1, 3, "train", 0, 0);
        cb_buffer_ref(in);
        CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_vision_preprocess, ""), CB_OK);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_OK);
        cb_image_batch *o = batch_of(out), *ib = in->data;
        pp_cfg c = {0, 0, 0, mean3, std3, 3};
        if (o) {
            CB_CHECK_EQ_INT(o->layout, CB_BATCH_F32_NCHW);
            CB_CHECK_EQ_INT(o->c, 3);
            CB_CHECK_EQ_INT(o->h, 5);
            CB_CHECK_EQ_INT(o->w, 7);
            CB_CHECK_EQ_INT(cb_image_batch_labels(o)[1], 1);
            CB_CHECK_EQ_INT(o->classes, 10);
            CB_CHECK_STR_EQ(o->split_name, "train");
            for (uint32_t i = 0; i < 2; i++) CB_CHECK(pp_err(&c, ib, o, i, 0, 0, 0) < 1e-5);
        }
        cb_buffer_unref(out);
        cb_buffer_unref(in);
        /* images of different sizes and no crop: an error naming the sizes */
        in = u8_batch(3, hs, ws, 3, "train", 0, 0);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_EINVAL);
        CB_CHECK_CONTAINS(x.err.msg, "9x4");
        inst_close(&x);
    }
    /* 2. resize down + centre crop in val; resize up + padding + random crop + flip in train */
    {
        cb_buffer *in = u8_batch(3, hs, ws, 3, "val", 2, 5);
        cb_buffer_ref(in);
        CB_CHECK_EQ_INT(
            inst_open(&x, &cb_stage_vision_preprocess, "resize: 4\ncrop: 3\nflip: true\n"), CB_OK);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_OK);
        cb_image_batch *o = batch_of(out), *ib = in->data;
        pp_cfg c = {4, 3, 0, mean3, std3, 3};
        if (o) {
            CB_CHECK_EQ_INT(o->h, 3);
            CB_CHECK_EQ_INT(o->w, 3);
            CB_CHECK_EQ_INT(o->epoch, 2);
            CB_CHECK_EQ_INT(o->batch, 5);
            /* image 0: 5x7 -> 4x5 -> centre crop at (top 0 = round(0.5) half-even, left 1) */
            CB_CHECK(pp_err(&c, ib, o, 0, 0, 1, 0) < 1e-4);
            /* image 1: 9x4 -> 9x4 (int(4 * 9 / 4)) -> (top 3, left 0); image 2: 6x6 -> 4x4 -> (0,
             * 0) */
            CB_CHECK(pp_err(&c, ib, o, 1, 3, 0, 0) < 1e-4);
            CB_CHECK(pp_err(&c, ib, o, 2, 0, 0, 0) < 1e-4);
        }
        cb_buffer_unref(out);
        cb_buffer_unref(in);
        inst_close(&x);

        static const char *cfg =
            "resize: 8\ncrop: 7\npadding: 2\nflip: true\nseed: 4\nmean: [0.5]\nstd: [0.25]\n";
        pp_cfg c2 = {8, 7, 2, mean1, std1, 1};
        uint32_t n = 24, h24[24], w24[24];
        for (uint32_t i = 0; i < n; i++) {
            h24[i] = 5 + i % 4;
            w24[i] = 6 + i % 3;
        }
        in = u8_batch(n, h24, w24, 3, "train", 1, 3);
        cb_buffer_ref(in); /* one reference per query below, and ours */
        cb_buffer_ref(in);
        cb_buffer_ref(in);
        CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_vision_preprocess, cfg), CB_OK);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_OK);
        o = batch_of(out);
        ib = in->data;
        int flips = 0, places = 0;
        uint32_t t0 = 0, l0 = 0;
        for (uint32_t i = 0; o && i < n; i++) {
            uint32_t t = 0, l = 0;
            int f = 0;
            double e = pp_best(&c2, ib, o, i, &t, &l, &f);
            if (e >= 1e-4) printf("# image %u: best error %g\n", i, e);
            CB_CHECK(e < 1e-4);
            flips += f;
            if (i == 0) {
                t0 = t;
                l0 = l;
            }
            places += t != t0 || l != l0;
        }
        CB_CHECK(flips > 0 && flips < (int)n); /* both ways */
        CB_CHECK(places > 0);                  /* random places */
        /* determinism: another instance, same batch -> same bytes; another epoch -> other crops */
        inst y;
        cb_buffer *out2 = NULL;
        CB_CHECK_EQ_INT(inst_open(&y, &cb_stage_vision_preprocess, cfg), CB_OK);
        CB_CHECK_EQ_INT(inst_query(&y, 0, 0, 0, in, &out2), CB_OK);
        CB_CHECK(out && out2 && buf_hash(out) == buf_hash(out2));
        cb_buffer_unref(out2);
        ((cb_image_batch *)in->data)->epoch = 2;
        CB_CHECK_EQ_INT(inst_query(&y, 0, 0, 0, in, &out2), CB_OK);
        CB_CHECK(out2 && buf_hash(out) != buf_hash(out2));
        cb_buffer_unref(out2);
        inst_close(&y);
        cb_buffer_unref(out);
        cb_buffer_unref(in);
        inst_close(&x);
    }
    /* 3. a non-train split: centre crop and no flip, even with flip on (and random_crop off
     *    in train behaves the same way, without flips) */
    {
        uint32_t h1[] = {8, 8, 8, 8}, w1[] = {9, 9, 9, 9};
        cb_buffer *in = u8_batch(4, h1, w1, 3, "test", 0, 0);
        cb_buffer_ref(in);
        CB_CHECK_EQ_INT(
            inst_open(&x, &cb_stage_vision_preprocess, "crop: 5\npadding: 1\nflip: true\n"), CB_OK);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_OK);
        cb_image_batch *o = batch_of(out), *ib = in->data;
        pp_cfg c = {0, 5, 1, mean3, std3, 3};
        for (uint32_t i = 0; o && i < 4; i++)
            CB_CHECK(pp_err(&c, ib, o, i, 2, 3, 0) < 1e-5); /* 10x11 canvas */
        cb_buffer_unref(out);
        cb_buffer_unref(in);
        inst_close(&x);
    }
    /* 4. wrong inputs: clear errors saying what came and what to put before */
    {
        CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_vision_preprocess, "crop: 4\n"), CB_OK);
        cb_buffer *enc = cb_buffer_new(cb_image_batch_bytes(1, 10));
        cb_image_batch *eb = cb_image_batch_init(enc, CB_BATCH_ENCODED, 1, 10);
        cb_image_batch_descs(eb)[0].bytes = 10;
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, enc, &out), CB_EINVAL);
        CB_CHECK_CONTAINS(x.err.msg, "ENCODED");
        CB_CHECK_CONTAINS(x.err.msg, "vision.decode");
        cb_buffer *fl = cb_buffer_new(cb_image_batch_bytes(1, 4 * 3 * 2 * 2));
        cb_image_batch *fb = cb_image_batch_init(fl, CB_BATCH_F32_NCHW, 1, 4 * 3 * 2 * 2);
        fb->c = 3;
        fb->h = fb->w = 2;
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, fl, &out), CB_EINVAL);
        CB_CHECK_CONTAINS(x.err.msg, "F32_NCHW");
        CB_CHECK_CONTAINS(x.err.msg, "format: uint8");
        /* a damaged header: descriptor outside the data */
        uint32_t h1[] = {3}, w1[] = {3};
        cb_buffer *bad = u8_batch(1, h1, w1, 3, "train", 0, 0);
        cb_image_batch_descs(bad->data)[0].offset = 1000;
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, bad, &out), CB_EINVAL);
        CB_CHECK_CONTAINS(x.err.msg, "not a valid image batch");
        /* too small for the crop */
        bad = u8_batch(1, h1, w1, 3, "train", 0, 0);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, bad, &out), CB_EINVAL);
        CB_CHECK_CONTAINS(x.err.msg, "smaller than crop 4");
        inst_close(&x);
        /* mean/std count must match the channels */
        CB_CHECK_EQ_INT(
            inst_open(&x, &cb_stage_vision_preprocess, "mean: [0.1, 0.2]\nstd: [1, 1]\n"), CB_OK);
        bad = u8_batch(1, h1, w1, 3, "train", 0, 0);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, bad, &out), CB_EINVAL);
        CB_CHECK_CONTAINS(x.err.msg, "3 channels");
        inst_close(&x);
    }
}

static void test_preprocess_speed(void) {
    uint32_t n = 32, h[32], w[32];
    for (uint32_t i = 0; i < n; i++) {
        h[i] = 256;
        w[i] = 341;
    }
    cb_buffer *in = u8_batch(n, h, w, 3, "train", 0, 0);
    inst x;
    CB_CHECK_EQ_INT(
        inst_open(&x, &cb_stage_vision_preprocess, "resize: 256\ncrop: 224\nflip: true\n"), CB_OK);
    int reps = 5;
    double t0 = now_ms();
    for (int r = 0; r < reps; r++) {
        cb_buffer *out = NULL;
        cb_buffer_ref(in);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_OK);
        cb_buffer_unref(out);
    }
    printf("# preprocess: %.1f ms per batch of 32 256x341 -> 3x224x224 (resize 256, crop 224)\n",
           (now_ms() - t0) / reps);
    t0 = now_ms();
    inst_close(&x);
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_vision_preprocess, "resize: 224\ncrop: 224\n"), CB_OK);
    for (int r = 0; r < reps; r++) {
        cb_buffer *out = NULL;
        cb_buffer_ref(in);
        CB_CHECK_EQ_INT(inst_query(&x, 0, 0, 0, in, &out), CB_OK);
        cb_buffer_unref(out);
    }
    printf("# preprocess: %.1f ms per batch of 32 256x341 -> 3x224x224 (resize 224, crop 224)\n",
           (now_ms() - t0) / reps);
    inst_close(&x);
    cb_buffer_unref(in);
}

/* ---- end to end: colobench run ---------------------------------------------------------- */

static char *run_cli(const char *dir, const char *name, const char *yaml, int *status) {
    const char *path = cb_test_write(dir, name, yaml);
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "timeout 60 " CLI " run %s -o %s/out-%s --quiet 2>&1", path, dir,
             name);
    *status = cb_test_sh(cmd, &out);
    return out;
}

static size_t out_lines(const char *dir, const char *name, const char *file) {
    char p[2048];
    snprintf(p, sizeof p, "%s/out-%s/%s", dir, name, file);
    return cb_test_count_lines(p);
}

static void check_clean(const char *out) {
    CB_CHECK(out && !strstr(out, "Sanitizer") && !strstr(out, "runtime error"));
    if (out && (strstr(out, "Sanitizer") || strstr(out, "runtime error"))) printf("# %s\n", out);
}

static void test_e2e_pipelines(void) {
    const char *dir = cb_test_tmpdir();
    int st = 0;
    /* synthetic -> preprocess -> sink: epochs x splits x batches queries, 3 stage rows each */
    char *out = run_cli(
        dir, "synth.yaml",
        "name: synth\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: closed, timeout: 60, config: {concurrency: 2}}\n    stages:\n"
        "      - {id: 0, component: data.synthetic, outputs: [1], config: {format: uint8, shape: "
        "[3, 40, 48],\n"
        "         batch_size: 8, splits: {train: 6, val: 2}, epochs: 3, prefetch: 2, workers: 2}}\n"
        "      - {id: 1, component: vision.preprocess, outputs: [2], workers: 2,\n"
        "         config: {resize: 36, crop: 32, padding: 2, flip: true}}\n"
        "      - {id: 2, component: util.noop}\n",
        &st);
    CB_CHECK_EQ_INT(st, 0);
    if (st) printf("# %s\n", out);
    check_clean(out);
    free(out);
    CB_CHECK_EQ_INT(out_lines(dir, "synth.yaml", "queries.csv"), 1 + 3 * (6 + 2));
    CB_CHECK_EQ_INT(out_lines(dir, "synth.yaml", "events.csv"), 1 + 3 * (6 + 2) * 3);
    char p[2048], cmd[2048];
    snprintf(p, sizeof p, "%s/out-synth.yaml/queries.csv", dir);
    snprintf(cmd, sizeof cmd,
             "awk -F, 'NR>1{print $3\":\"$4}' %s | sort | uniq -c | awk '{print $1\"x\"$2}' | tr "
             "'\\n' ' '",
             p);
    char *counts = NULL;
    cb_test_sh(cmd, &counts);
    CB_CHECK_STR_EQ(counts, "6xtrain:0 6xtrain:1 6xtrain:2 2xval:0 2xval:1 2xval:2 ");
    free(counts);

    /* cifar -> preprocess -> sink, and images (decode: false) -> decode -> preprocess -> sink */
    const char *cdir = cb_test_tmpdir();
    CB_CHECK_EQ_INT(cb_cifar_gen_dataset(cdir, 100, 40, 10, 1), 0);
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: cifar\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, timeout: 60}\n    stages:\n"
             "      - {id: 0, component: data.cifar, outputs: [1], config: {path: %s, batch_size: "
             "16, epochs: 2}}\n"
             "      - {id: 1, component: vision.preprocess, outputs: [2], config: {crop: 32, "
             "padding: 4, flip: true,\n"
             "         mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26]}}\n"
             "      - {id: 2, component: util.noop}\n",
             cdir);
    out = run_cli(dir, "cifar.yaml", yaml, &st);
    CB_CHECK_EQ_INT(st, 0);
    if (st) printf("# %s\n", out);
    check_clean(out);
    free(out);
    CB_CHECK_EQ_INT(out_lines(dir, "cifar.yaml", "queries.csv"), 1 + 2 * (100 / 16 + 40 / 16));

    const char *idir = cb_test_tmpdir();
    mkdirs(idir, "a");
    mkdirs(idir, "b");
    for (int i = 0; i < 8; i++) {
        char rel[64];
        written im = {rel, 30 + i, 20 + 2 * i, 3, i % 2, NULL};
        snprintf(rel, sizeof rel, "%s/%d.%s", i < 4 ? "a" : "b", i, i % 2 ? "jpg" : "png");
        write_image(idir, &im);
        free(im.px);
    }
    snprintf(
        yaml, sizeof yaml,
        "name: images\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: closed, timeout: 60, config: {concurrency: 2}}\n    stages:\n"
        "      - {id: 0, component: data.images, outputs: [1], config: {path: %s, batch_size: 2, "
        "epochs: 2, decode: false}}\n"
        "      - {id: 1, component: vision.decode, outputs: [2], workers: 2}\n"
        "      - {id: 2, component: vision.preprocess, outputs: [3], config: {resize: 24, crop: "
        "20}}\n"
        "      - {id: 3, component: util.noop}\n",
        idir);
    out = run_cli(dir, "images.yaml", yaml, &st);
    CB_CHECK_EQ_INT(st, 0);
    if (st) printf("# %s\n", out);
    check_clean(out);
    free(out);
    CB_CHECK_EQ_INT(out_lines(dir, "images.yaml", "queries.csv"), 1 + 2 * 4);
    CB_CHECK_EQ_INT(out_lines(dir, "images.yaml", "events.csv"), 1 + 2 * 4 * 4);

    /* a corrupt image fails its query with the file's name, through the runtime */
    snprintf(p, sizeof p, "%s/b/5.jpg", idir);
    truncate_copy(p, p, 0 + file_size(p) / 3 > 0 ? file_size(p) / 3 : 1);
    snprintf(yaml, sizeof yaml,
             "name: broken\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
             "    loadgen: {component: closed, timeout: 60}\n    stages:\n"
             "      - {id: 0, component: data.images, outputs: [1], config: {path: %s, batch_size: "
             "1, shuffle: false, prefetch: 3}}\n"
             "      - {id: 1, component: util.noop}\n",
             idir);
    out = run_cli(dir, "broken.yaml", yaml, &st);
    CB_CHECK_EQ_INT(st, 1);
    CB_CHECK_CONTAINS(out, "b/5.jpg");
    CB_CHECK_CONTAINS(out, "JPEG");
    check_clean(out);
    free(out);
}

/* Early stops end promptly and cleanly (a sanitizer build reports leaks in the output): fewer
 * queries than the dataset, a later stage failing, SIGINT in the middle. */
static void test_e2e_early_stop(void) {
    const char *dir = cb_test_tmpdir();
    int st = 0;
    double t0 = now_ms();
    char *out = run_cli(
        dir, "stop.yaml",
        "name: stop\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: closed, max_queries: 5, timeout: 60}\n    stages:\n"
        "      - {id: 0, component: data.synthetic, outputs: [1], config: {shape: [3, 32, 32],\n"
        "         batches_per_epoch: 1000, epochs: 50, prefetch: 8, workers: 3}}\n"
        "      - {id: 1, component: util.noop}\n",
        &st);
    CB_CHECK_EQ_INT(st, 0);
    check_clean(out);
    free(out);
    CB_CHECK_EQ_INT(out_lines(dir, "stop.yaml", "queries.csv"), 1 + 5);

    out = run_cli(
        dir, "fail.yaml",
        "name: fail\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: closed, timeout: 60, config: {concurrency: 3}}\n    stages:\n"
        "      - {id: 0, component: data.synthetic, outputs: [1], config: {format: uint8, shape: "
        "[3, 32, 32],\n"
        "         batches_per_epoch: 1000, prefetch: 4, workers: 2}}\n"
        "      - {id: 1, component: vision.preprocess, outputs: [2], config: {crop: 28}}\n"
        "      - {id: 2, name: boom, component: util.fail, config: {on_query: 7}}\n",
        &st);
    CB_CHECK_EQ_INT(st, 1);
    CB_CHECK_CONTAINS(out, "stage 'boom'");
    check_clean(out);
    free(out);

    const char *path = cb_test_write(
        dir, "int.yaml",
        "name: int\npipelines:\n  - name: p\n    inputs: [0]\n    dataset_stage_id: 0\n"
        "    loadgen: {component: closed, timeout: 60}\n    stages:\n"
        "      - {id: 0, component: data.synthetic, outputs: [1], config: {shape: [3, 64, 64],\n"
        "         batches_per_epoch: 100000, prefetch: 4, workers: 2}}\n"
        "      - {id: 1, component: util.sleep, config: {duration_us: 2000}}\n");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 60 " CLI
             " run %s -o %s/out-int --quiet > %s/int.log 2>&1 & pid=$!; sleep 1.5; "
             "kill -INT $pid; wait $pid; echo \"exit=$?\"; cat %s/int.log",
             path, dir, dir, dir);
    cb_test_sh(cmd, &out);
    CB_CHECK_CONTAINS(out, "exit=1");
    CB_CHECK(!strstr(out, "exit=124"));
    check_clean(out);
    free(out);
    double s = (now_ms() - t0) / 1000.0;
    printf("# early stops: %.1f s\n", s);
}

/* ---- tables ----------------------------------------------------------------------------- */

static void test_tables(void) {
    const cb_stage_ops *all[] = {&cb_stage_data_synthetic, &cb_stage_data_cifar,
                                 &cb_stage_data_images, &cb_stage_vision_decode,
                                 &cb_stage_vision_preprocess};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const cb_stage_ops *o = all[i];
        CB_CHECK_EQ_INT(o->abi_major, CB_STAGE_ABI_MAJOR);
        CB_CHECK_EQ_INT(o->struct_size, sizeof(cb_stage_ops));
        CB_CHECK(o->summary && *o->summary);
        CB_CHECK_EQ_INT(o->splits != NULL, strncmp(o->name, "data.", 5) == 0);
        if (o->splits) { /* the common parameters come first, in one order */
            CB_CHECK_STR_EQ(o->params[CB_DATA_P_BATCH_SIZE].key, "batch_size");
            CB_CHECK_STR_EQ(o->params[CB_DATA_P_WORKERS].key, "workers");
        }
    }
    /* the batch check survives hostile headers */
    cb_buffer *b = cb_buffer_new(cb_image_batch_bytes(2, 64));
    cb_image_batch *h = cb_image_batch_init(b, CB_BATCH_F32_NCHW, 2, 64);
    const char *why = NULL;
    h->c = 2;
    h->h = 2;
    h->w = 2;
    CB_CHECK_EQ_INT(cb_image_batch_check(b, &why), 0);
    h->c = 0x40000000u; /* n*c*h*w*4 wraps to 0 mod 2^64 with data_bytes... */
    h->h = 0x40000000u;
    h->w = 16;
    CB_CHECK_EQ_INT(cb_image_batch_check(b, &why), -1);
    h->c = 2;
    h->h = 2;
    h->w = 2;
    h->classes = 3;
    cb_image_batch_labels(h)[1] = 3;
    CB_CHECK_EQ_INT(cb_image_batch_check(b, &why), -1);
    CB_CHECK_CONTAINS(why, "label");
    cb_image_batch_labels(h)[1] = 2;
    h->n = 0xffffffffu;
    CB_CHECK_EQ_INT(cb_image_batch_check(b, &why), -1);
    cb_buffer_unref(b);
}

int main(void) {
    CB_RUN(test_tables);
    CB_RUN(test_synthetic_shapes_and_splits);
    CB_RUN(test_synthetic_determinism);
    CB_RUN(test_synthetic_learnable);
    CB_RUN(test_synthetic_speed);
    CB_RUN(test_prefetch_machinery);
    CB_RUN(test_prefetch_stress);
    CB_RUN(test_prefetch_equivalence_synthetic);
    CB_RUN(test_cifar_reads_back);
    CB_RUN(test_cifar_errors);
    CB_RUN(test_prefetch_equivalence_cifar);
    CB_RUN(test_images_decode_and_layouts);
    CB_RUN(test_images_splits_layout);
    CB_RUN(test_images_corrupt);
    CB_RUN(test_decode_gray_jpeg);
    CB_RUN(test_decode_palette);
    CB_RUN(test_decode_png_depths);
    CB_RUN(test_decode_speed);
    CB_RUN(test_preprocess_reference);
    CB_RUN(test_preprocess_speed);
    CB_RUN(test_e2e_pipelines);
    CB_RUN(test_e2e_early_stop);
    return cb_test_done();
}
