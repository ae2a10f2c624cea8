/* tests/data_util.h - helpers shared by the data/vision stage tests (test_data.c,
 * test_data_vision.c): stage instances over the real parameter resolver and host, batch
 * checks and hashes, and image files written with libjpeg/libpng. Header-only, static inline
 * (each test is one executable); no state beyond what the caller passes. */
#ifndef CB_TESTS_DATA_UTIL_H
#define CB_TESTS_DATA_UTIL_H

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
static inline int inst_open(inst *x, const cb_stage_ops *ops, const char *yaml) {
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

static inline void inst_close(inst *x) {
    if (x->created && x->ops->destroy) x->ops->destroy(x->state);
    free(x->state);
    cb_arena_destroy(x->arena);
    memset(x, 0, sizeof *x);
}

static inline cb_splits inst_splits(inst *x) {
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
static inline int inst_query(inst *x, int32_t split, int32_t epoch, int64_t batch, cb_buffer *in,
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

static inline cb_image_batch *batch_of(cb_buffer *b) {
    const char *why = NULL;
    int ok = b && cb_image_batch_check(b, &why) == 0;
    if (!ok) cb__test_fail(__FILE__, __LINE__, "not a valid batch: %s", why ? why : "(null)");
    return ok ? b->data : NULL;
}

static inline uint64_t fnv(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ULL;
    return h;
}

static inline uint64_t buf_hash(const cb_buffer *b) { return b ? fnv(b->data, b->size_bytes) : 0; }

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline int is_sanitized(void) {
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

static inline void mkdirs(const char *dir, const char *rel) {
    char p[2048];
    snprintf(p, sizeof p, "mkdir -p '%s/%s'", dir, rel);
    CB_CHECK_EQ_INT(system(p), 0);
}

/* ---- image files ------------------------------------------------------------------------ */

/* A smooth RGB test image (JPEG-friendly), deterministic from (w, h, salt). */
static inline unsigned char *test_rgb(int w, int h, int salt) {
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

static inline int write_jpeg(const char *path, const unsigned char *rgb, int w, int h, int quality) {
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
static inline int write_png(const char *path, const unsigned char *px, int w, int h, int channels) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = channels == 1 ? PNG_FORMAT_GRAY : channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
    int ok = png_image_write_to_file(&img, path, 0, px, 0, NULL);
    return ok ? 0 : -1;
}

static inline long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Copies the first `keep` bytes of src to dst. */
static inline void truncate_copy(const char *src, const char *dst, long keep) {
    size_t n = 0;
    char *d = cb_test_read(src, &n);
    CB_CHECK(d != NULL && (long)n > keep);
    FILE *f = fopen(dst, "wb");
    CB_CHECK(f != NULL);
    if (f && d) fwrite(d, 1, (size_t)keep, f);
    if (f) fclose(f);
    free(d);
}

/* ---- data.images, vision.decode --------------------------------------------------------- */

typedef struct written {
    const char *rel;
    int w, h, channels; /* channels written: 1, 3, 4; JPEG: 3 */
    int jpeg;
    unsigned char *px;  /* as written */
} written;

static inline void write_image(const char *root, written *im) {
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
static inline void check_decoded(const written *im, const unsigned char *rgb, const cb_image_desc *d) {
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

#endif
