/* stages/data/synthetic.c - data.synthetic: generated image batches with learnable classes.
 *
 * What: a dataset stage that needs no files. Image i of split s is a pure function of
 * (seed, s, i); its label is i mod classes. With `learnable: true` every class has its own
 * pattern - a per-channel mean offset and a bright square at a class-dependent place in a
 * class-dependent channel - under unit noise, so a model trained on it reaches high accuracy
 * (and a broken training loop shows). Batches are `format: float` (F32_NCHW, roughly N(0,1),
 * ready for a model) or `format: uint8` (U8_HWC around 128, for vision.preprocess).
 *
 * Design: a batch takes `batch_size` positions of its split's shuffled order (data.h) and
 * generates each image from a xoshiro256** stream seeded by (seed, split, image). The noise is
 * a sum of four 16-bit uniforms (Irwin-Hall, scaled to unit variance): one 64-bit draw per
 * value and no transcendental functions, so a 32x3x224x224 batch takes a few milliseconds per
 * core. Class patterns come from (seed, class) alone, so every split shares them.
 *
 * Thread-safety: after create the state is read-only except the prefetcher (data.h); make()
 * runs concurrently in prefetch threads. Ownership: each query gets a fresh batch (one
 * reference); the previous payload of the query is released.
 */
#include <string.h>

#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/data/data.h"
#include "stages/util/util.h"

enum {
    P_SHAPE = CB_DATA_P_COUNT,
    P_CLASSES,
    P_BATCHES,
    P_SPLITS,
    P_IMAGES,
    P_FORMAT,
    P_LEARNABLE,
    P_COUNT
};
enum { FMT_FLOAT, FMT_UINT8 };

static const cb_param_def cb_synth_params[P_COUNT] = {
    CB_DATA_COMMON_PARAMS,
    [P_SHAPE] = {"shape", CB_PARAM_INT_LIST, "[3, 224, 224]", 1, 65535, NULL,
                 "image shape [channels, height, width] in pixels"},
    [P_CLASSES] = {"classes", CB_PARAM_INT, "1000", 1, 1000000, NULL, "number of classes"},
    [P_BATCHES] = {"batches_per_epoch", CB_PARAM_INT, "10", 1, CB_DATA_MAX_BATCHES, NULL,
                   "batches per epoch of the train split (when splits is not given)"},
    [P_SPLITS] = {"splits", CB_PARAM_INT_MAP, NULL, 1, CB_DATA_MAX_BATCHES, NULL,
                  "batches per epoch of each split, in order, e.g. {train: 50, val: 5}"},
    [P_IMAGES] = {"images", CB_PARAM_INT, "0", 0, 1e12, NULL,
                  "distinct images per split (0 = batch_size x the split's batches)"},
    [P_FORMAT] = {"format", CB_PARAM_ENUM, "float", CB_PARAM_UNBOUNDED, "float|uint8",
                  "float: F32_NCHW for a model; uint8: U8_HWC for vision.preprocess"},
    [P_LEARNABLE] = {"learnable", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                     "give each class its own pattern under the noise (flag)"},
};

#define CB_SYNTH_MAX_BATCH_BYTES (UINT64_C(8) << 30)
#define CB_SYNTH_MAX_CHANNELS 1024

typedef struct cb_synth_state {
    cb_data_common c;
    uint32_t ch, h, w;
    uint32_t classes;
    int format, learnable;
    uint64_t images; /* 0 = per split default */
    uint64_t image_bytes;
    uint32_t patch;  /* side of the class square */
} cb_synth_state;

/* Unit-variance noise from one 64-bit draw: four 16-bit uniforms summed (Irwin-Hall). */
static inline float cb__synth_noise(uint64_t u) {
    uint32_t s = (uint32_t)(u & 0xffff) + (uint32_t)((u >> 16) & 0xffff) +
                 (uint32_t)((u >> 32) & 0xffff) + (uint32_t)(u >> 48);
    /* mean 4 * 65535 / 2, standard deviation 65536 * sqrt(4 / 12) */
    return ((float)s - 131070.0f) * (1.0f / 37837.23f);
}

/* Class pattern: per-channel offset in [-0.5, 0.5) and the square's place and channel. */
static float cb__synth_offset(const cb_synth_state *s, uint32_t label, uint32_t c) {
    uint64_t h =
        cb__data_mix(cb__data_mix(s->c.seed, 0x4f4646534554ULL), (uint64_t)label * 4096 + c);
    return (float)(h >> 40) * (1.0f / 16777216.0f) - 0.5f;
}

static void cb__synth_square(const cb_synth_state *s, uint32_t label, uint32_t *y, uint32_t *x,
                             uint32_t *c) {
    uint64_t h = cb__data_mix(cb__data_mix(s->c.seed, 0x535155415245ULL), label);
    *y = (uint32_t)(h % (s->h - s->patch + 1));
    *x = (uint32_t)((h >> 21) % (s->w - s->patch + 1));
    *c = (uint32_t)((h >> 42) % s->ch);
}

static void cb__synth_image(const cb_synth_state *s, int32_t split, uint64_t idx, uint32_t label,
                            unsigned char *out) {
    cb_rng r;
    cb_rng_seed(&r, cb__data_mix(cb__data_mix(s->c.seed, 0x494d414745ULL),
                                 cb__data_mix((uint64_t)split, idx)));
    size_t hw = (size_t)s->h * s->w;
    uint32_t sy = 0, sx = 0, sc = 0;
    if (s->learnable) cb__synth_square(s, label, &sy, &sx, &sc);
    if (s->format == FMT_FLOAT) {
        float *f = (float *)(void *)out;
        for (uint32_t c = 0; c < s->ch; c++) {
            float base = s->learnable ? cb__synth_offset(s, label, c) : 0.0f;
            float *p = f + c * hw;
            for (size_t i = 0; i < hw; i++) p[i] = cb__synth_noise(cb_rng_u64(&r)) + base;
        }
        if (s->learnable) {
            float *p = f + sc * hw;
            for (uint32_t y = sy; y < sy + s->patch; y++)
                for (uint32_t x = sx; x < sx + s->patch; x++) p[(size_t)y * s->w + x] += 2.0f;
        }
        return;
    }
    float base[CB_SYNTH_MAX_CHANNELS];
    for (uint32_t c = 0; c < s->ch; c++)
        base[c] = 128.0f + (s->learnable ? 64.0f * cb__synth_offset(s, label, c) : 0.0f);
    size_t i = 0;
    for (size_t p = 0; p < hw; p++)
        for (uint32_t c = 0; c < s->ch; c++, i++) {
            float v = base[c] + 32.0f * cb__synth_noise(cb_rng_u64(&r));
            out[i] = (unsigned char)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v + 0.5f);
        }
    if (s->learnable)
        for (uint32_t y = sy; y < sy + s->patch; y++)
            for (uint32_t x = sx; x < sx + s->patch; x++) {
                unsigned char *q = out + ((size_t)y * s->w + x) * s->ch + sc;
                *q = (unsigned char)(*q > 175 ? 255 : *q + 80);
            }
}

static int cb__synth_make(void *state, const cb_data_key *k, cb_buffer **out, cb_error *err) {
    cb_synth_state *s = state;
    uint32_t n = (uint32_t)s->c.batch_size;
    cb_buffer *buf =
        cb__data_batch_new(&s->c, k, s->format == FMT_FLOAT ? CB_BATCH_F32_NCHW : CB_BATCH_U8_HWC,
                           n, (uint64_t)n * s->image_bytes, s->classes, err);
    if (!buf) return CB_ENOMEM;
    cb_image_batch *b = buf->data;
    if (s->format == FMT_FLOAT) {
        b->c = s->ch;
        b->h = s->h;
        b->w = s->w;
    }
    int32_t *labels = cb_image_batch_labels(b);
    cb_image_desc *d = cb_image_batch_descs(b);
    unsigned char *data = cb_image_batch_data(b);
    uint64_t images =
        s->images ? s->images : (uint64_t)s->c.batch_size * (uint64_t)s->c.split[k->split].batches;
    for (uint32_t j = 0; j < n; j++) {
        uint64_t idx = cb__data_index(&s->c, k, (uint64_t)k->batch * n + j, images);
        uint32_t label = (uint32_t)(idx % s->classes);
        labels[j] = (int32_t)label;
        d[j].c = s->ch;
        d[j].h = s->h;
        d[j].w = s->w;
        d[j].offset = j * s->image_bytes;
        d[j].bytes = s->image_bytes;
        cb__synth_image(s, k->split, idx, label, data + j * s->image_bytes);
    }
    *out = buf;
    return CB_OK;
}

static int cb_synth_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_synth_state *s = state;
    const cb_param_value *v = args->values;
    cb__data_init(&s->c, args, cb__synth_make, s);
    if (v[P_SHAPE].n != 3)
        return cb_util_error(err, CB_ECONFIG, "shape: expected [channels, height, width], got %zu "
                             "values", v[P_SHAPE].n);
    if (v[P_SHAPE].ints[0] > CB_SYNTH_MAX_CHANNELS)
        return cb_util_error(err, CB_ECONFIG, "shape: at most %d channels, got %lld",
                             CB_SYNTH_MAX_CHANNELS, (long long)v[P_SHAPE].ints[0]);
    s->ch = (uint32_t)v[P_SHAPE].ints[0];
    s->h = (uint32_t)v[P_SHAPE].ints[1];
    s->w = (uint32_t)v[P_SHAPE].ints[2];
    s->classes = (uint32_t)v[P_CLASSES].i;
    s->format = (int)v[P_FORMAT].i;
    s->learnable = (int)v[P_LEARNABLE].i;
    s->images = (uint64_t)v[P_IMAGES].i;
    s->image_bytes = (uint64_t)s->ch * s->h * s->w * (s->format == FMT_FLOAT ? sizeof(float) : 1);
    if (s->image_bytes * (uint64_t)s->c.batch_size > CB_SYNTH_MAX_BATCH_BYTES)
        return cb_util_error(err, CB_ECONFIG,
                             "shape x batch_size: %llu bytes per batch, at most %llu",
                             (unsigned long long)(s->image_bytes * (uint64_t)s->c.batch_size),
                             (unsigned long long)CB_SYNTH_MAX_BATCH_BYTES);
    uint32_t side = s->h < s->w ? s->h : s->w;
    s->patch = side / 4 ? side / 4 : 1;

    const cb_param_value *sp = &v[P_SPLITS], *bpe = &v[P_BATCHES];
    if (!sp->is_set || sp->n == 0)
        return cb__data_add_split(&s->c, "train", bpe->i, err);
    int has_train = 0;
    for (size_t i = 0; i < sp->n; i++) {
        if (strcmp(sp->keys[i], "train") == 0) {
            has_train = 1;
            if (bpe->is_set && sp->ints[i] != bpe->i)
                return cb_util_error(err, CB_ECONFIG,
                                     "batches_per_epoch: %lld disagrees with splits.train: %lld "
                                     "(give one of them)",
                                     (long long)bpe->i, (long long)sp->ints[i]);
        }
        int rc = cb__data_add_split(&s->c, sp->keys[i], sp->ints[i], err);
        if (rc) return rc;
    }
    if (bpe->is_set && !has_train)
        return cb_util_error(err, CB_ECONFIG,
                             "batches_per_epoch: sets the train split, but splits has no 'train'");
    return CB_OK;
}

static int cb_synth_prepare(void *state, cb_error *err) {
    cb_synth_state *s = state;
    return cb__data_start(&s->c, err);
}

static int cb_synth_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_synth_state *s = state;
    return cb__data_run(&s->c, q, err);
}

static int cb_synth_splits(void *state, cb_splits *out, cb_error *err) {
    cb_synth_state *s = state;
    return cb__data_splits(&s->c, out);
}

static void cb_synth_stop(void *state) {
    cb_synth_state *s = state;
    cb__data_stop(&s->c);
}

const cb_stage_ops cb_stage_data_synthetic = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "data.synthetic",
    .summary = "generated image batches with learnable classes (no files), prefetched",
    .params = cb_synth_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_synth_state),
    .create = cb_synth_create,
    .prepare = cb_synth_prepare,
    .run = cb_synth_run,
    .finish = cb_synth_stop,
    .destroy = cb_synth_stop,
    .splits = cb_synth_splits,
};
