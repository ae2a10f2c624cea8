/* stages/vision/preprocess.c - vision.preprocess: decoded images to a normalised float tensor.
 *
 * What: takes a U8_HWC batch (data.images, vision.decode, data.cifar/data.synthetic with
 * format uint8) and makes the F32_NCHW batch a model consumes, torchvision-style:
 *   1. resize: the shorter side to `resize` pixels, the longer one int(resize * long / short)
 *      (torchvision's rule), bilinear with half-pixel centres (PyTorch's align_corners=False,
 *      no antialiasing); values stay float, not rounded back to 8 bits. 0 = keep the size.
 *   2. padding: `padding` black pixels on every side (CIFAR-style, value 0 before normalising).
 *   3. crop: a `crop` x `crop` window, at a random place in the "train" split when
 *      `random_crop` is on, else centred (top = round((H - crop) / 2), half to even, like
 *      torchvision's CenterCrop). 0 = no crop: every image must then end up the same size.
 *   4. flip: mirror left-right with probability 0.5, "train" split only, when `flip` is on.
 *   5. normalise: (v / 255 - mean[c]) / std[c] (one value for all channels, or one each).
 * Randomness is a pure function of (seed, split, epoch, batch, image index) read from the
 * batch header, so any worker makes the same batch.
 *
 * Design: the steps are fused into one gather per output pixel: per image, a row table and a
 * column table map each output coordinate to its source pair and weight (or to padding), so
 * only the pixels that survive the crop are interpolated. The tables live in one allocation
 * sized for the largest output side.
 *
 * Thread-safety: per-instance state is read-only after create; instances run in parallel.
 * Ownership: the query's payload is released and replaced by the new float batch; on error the
 * query keeps its payload.
 */
#include <string.h>

#include "colobench/stage.h"
#include "core/rng.h"
#include "stages/data/data.h"
#include "stages/util/util.h"
#include "stages/vision/batch.h"

enum { P_RESIZE, P_CROP, P_RANDOM_CROP, P_PADDING, P_FLIP, P_MEAN, P_STD, P_SEED, P_COUNT };

#define CB_PP_MAX_CHANNELS 64

static const cb_param_def cb_pp_params[P_COUNT] = {
    [P_RESIZE] = {"resize", CB_PARAM_INT, "0", 0, 65535, NULL,
                  "shorter side after resizing, in pixels (bilinear; 0 = keep)"},
    [P_CROP] =
        {"crop", CB_PARAM_INT, "0", 0, 65535, NULL,
         "side of the square output crop, in pixels (0 = no crop: images must share a size)"},
    [P_RANDOM_CROP] = {"random_crop", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,
                       "random crop position in the train split (centre crop elsewhere)"},
    [P_PADDING] = {"padding", CB_PARAM_INT, "0", 0, 4096, NULL,
                   "zero padding on each side before the crop, in pixels (CIFAR-style)"},
    [P_FLIP] = {"flip", CB_PARAM_BOOL, "false", CB_PARAM_UNBOUNDED, NULL,
                "random horizontal flip (p = 0.5) in the train split"},
    [P_MEAN] = {"mean", CB_PARAM_FLOAT_LIST, "[0.485, 0.456, 0.406]", -1e6, 1e6, NULL,
                "per-channel mean subtracted after scaling to [0, 1] (1 value or 1 per channel)"},
    [P_STD] = {"std", CB_PARAM_FLOAT_LIST, "[0.229, 0.224, 0.225]", 1e-9, 1e6, NULL,
               "per-channel standard deviation divided by (1 value or 1 per channel)"},
    [P_SEED] = {"seed", CB_PARAM_INT, "0", 0, 9.2e18, NULL,
                "seed of the random crops and flips; the same for every worker"},
};

typedef struct cb_pp_state {
    const cb_host *host;
    uint32_t resize, crop, padding;
    int random_crop, flip;
    uint64_t seed;
    size_t n_mean, n_std;
    float mean[CB_PP_MAX_CHANNELS], std[CB_PP_MAX_CHANNELS];
} cb_pp_state;

/* One output coordinate: source indices i0/i1 and weight of i1; pad = outside the image. */
typedef struct cb_pp_tap {
    uint32_t i0, i1;
    float w1;
    int pad;
} cb_pp_tap;

/* What the table cannot say: 1 to CB_PP_MAX_CHANNELS values of mean and of std. */
static int cb_pp_check(const cb_stage_args *args, cb_error *err) {
    size_t n_mean = args->values[P_MEAN].n, n_std = args->values[P_STD].n;
    if (n_mean < 1 || n_mean > CB_PP_MAX_CHANNELS || n_std < 1 || n_std > CB_PP_MAX_CHANNELS)
        return cb_util_error(err, CB_ECONFIG, "mean, std: expected 1 to %d values each, got %zu "
                             "and %zu", CB_PP_MAX_CHANNELS, n_mean, n_std);
    return CB_OK;
}

static int cb_pp_create(void *state, const cb_stage_args *args, cb_error *err) {
    cb_pp_state *s = state;
    const cb_param_value *v = args->values;
    s->host = args->host;
    s->resize = (uint32_t)v[P_RESIZE].i;
    s->crop = (uint32_t)v[P_CROP].i;
    s->random_crop = (int)v[P_RANDOM_CROP].i;
    s->padding = (uint32_t)v[P_PADDING].i;
    s->flip = (int)v[P_FLIP].i;
    s->seed = (uint64_t)v[P_SEED].i;
    s->n_mean = v[P_MEAN].n;
    s->n_std = v[P_STD].n;
    int rc = cb_pp_check(args, err);
    if (rc) return rc;
    for (size_t i = 0; i < s->n_mean; i++) s->mean[i] = (float)v[P_MEAN].floats[i];
    for (size_t i = 0; i < s->n_std; i++) s->std[i] = (float)v[P_STD].floats[i];
    return CB_OK;
}

/* Size after resizing: the shorter side to s->resize, the longer int(resize * long / short). */
static void cb__pp_resized(const cb_pp_state *s, uint32_t h, uint32_t w, uint32_t *rh,
                           uint32_t *rw) {
    *rh = h;
    *rw = w;
    if (!s->resize) return;
    double lng = (double)s->resize * (h <= w ? w : h) / (h <= w ? h : w);
    uint32_t l = lng > 16777215.0 ? 16777215u : (uint32_t)lng; /* bounded: later sums fit */
    *rh = h <= w ? s->resize : l;
    *rw = h <= w ? l : s->resize;
    if (*rh < 1) *rh = 1;
    if (*rw < 1) *rw = 1;
}

/* torchvision's CenterCrop offset: int(round(d / 2.0)) with Python's half-to-even rounding. */
static uint32_t cb__pp_center(uint32_t d) {
    uint32_t k = d / 2;
    return (d % 2 == 1 && k % 2 == 1) ? k + 1 : k;
}

/* Output coordinate -> source taps along one axis. n_out outputs; the canvas is the resized
 * length `rs` padded by `pad` on both sides; `first` is the crop's first canvas coordinate;
 * `src` the source length; mirror: output o reads canvas first + (n_out - 1 - o). */
static void cb__pp_axis(cb_pp_tap *t, uint32_t n_out, uint32_t first, uint32_t pad, uint32_t rs,
                        uint32_t src, int resized, int mirror) {
    float scale = (float)src / (float)rs;
    for (uint32_t o = 0; o < n_out; o++) {
        int64_t c = (int64_t)first + (mirror ? (int64_t)(n_out - 1 - o) : (int64_t)o) - pad;
        cb_pp_tap *p = &t[o];
        p->pad = c < 0 || c >= (int64_t)rs;
        p->i0 = p->i1 = 0;
        p->w1 = 0.0f;
        if (p->pad) continue;
        if (!resized) {
            p->i0 = p->i1 = (uint32_t)c;
            continue;
        }
        float real = scale * ((float)c + 0.5f) - 0.5f;
        if (real < 0.0f) real = 0.0f;
        uint32_t i0 = (uint32_t)real;
        if (i0 > src - 1) i0 = src - 1;
        p->i0 = i0;
        p->i1 = i0 + (i0 < src - 1 ? 1u : 0u);
        p->w1 = real - (float)i0;
    }
}

static int cb_pp_run(void *state, cb_query *q, cb_run_ctx *ctx, cb_error *err) {
    cb_pp_state *s = state;
    const char *why = NULL;
    if (cb_image_batch_check(q->payload, &why) != 0)
        return cb_util_error(err, CB_EINVAL, "input is not a valid image batch: %s", why);
    cb_image_batch *ib = q->payload->data;
    if (ib->layout != CB_BATCH_U8_HWC)
        return cb_util_error(err, CB_EINVAL, "input is a %s batch, but vision.preprocess takes "
                             "U8_HWC decoded images: %s", cb_image_batch_layout_name(ib->layout),
                             ib->layout == CB_BATCH_ENCODED
                                 ? "put vision.decode before it (or data.images with decode: true)"
                                 : "give the data stage format: uint8 (or drop this stage)");
    uint32_t n = ib->n;
    if (n == 0) return cb_util_error(err, CB_EINVAL, "input batch has no images");
    const cb_image_desc *id = cb_image_batch_descs(ib);
    const unsigned char *idata = cb_image_batch_data(ib);
    int train = strcmp(ib->split_name, "train") == 0;

    /* Pass 1: channels and output size, checked for every image. */
    uint32_t ch = id[0].c, oh = 0, ow = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = cb_image_batch_name(ib, i);
        uint32_t rh, rw;
        cb__pp_resized(s, id[i].h, id[i].w, &rh, &rw);
        if (id[i].c != ch)
            return cb_util_error(err, CB_EINVAL, "image %u%s%s has %u channels, image 0 has %u", i,
                                 name ? " " : "", name ? name : "", id[i].c, ch);
        uint32_t ch_ = rh + 2 * s->padding, cw_ = rw + 2 * s->padding;
        uint32_t th = s->crop ? s->crop : ch_, tw = s->crop ? s->crop : cw_;
        if (s->crop && (ch_ < s->crop || cw_ < s->crop))
            return cb_util_error(err, CB_EINVAL,
                                 "image %u%s%s is %ux%u (HxW) after resize and padding, smaller "
                                 "than crop %u", i, name ? " " : "", name ? name : "", ch_, cw_,
                                 s->crop);
        if (i == 0) {
            oh = th;
            ow = tw;
        } else if (th != oh || tw != ow) {
            return cb_util_error(err, CB_EINVAL,
                                 "image %u%s%s is %ux%u (HxW) after resize, image 0 %ux%u: set "
                                 "crop (or resize) so that every image ends up the same size",
                                 i, name ? " " : "", name ? name : "", th, tw, oh, ow);
        }
    }
    if (ch > CB_PP_MAX_CHANNELS || (s->n_mean != 1 && s->n_mean != ch) ||
        (s->n_std != 1 && s->n_std != ch))
        return cb_util_error(err, CB_EINVAL,
                             "images have %u channels, but mean has %zu and std %zu "
                             "values (give 1 or %u)",
                             ch, s->n_mean, s->n_std, ch);
    float a[CB_PP_MAX_CHANNELS], b[CB_PP_MAX_CHANNELS];
    for (uint32_t c = 0; c < ch; c++) {
        float m = s->mean[s->n_mean == 1 ? 0 : c], sd = s->std[s->n_std == 1 ? 0 : c];
        a[c] = 1.0f / (255.0f * sd);
        b[c] = -m / sd;
    }

    uint64_t plane = (uint64_t)oh * ow, img = plane * ch * sizeof(float);
    size_t bytes = cb_image_batch_bytes(n, img * n);
    cb_buffer *ob = bytes && img ? s->host->buffer_new(bytes) : NULL;
    cb_pp_tap *taps = s->host->alloc(sizeof *taps * ((size_t)oh + ow));
    if (!ob || !taps) {
        s->host->buffer_unref(ob);
        s->host->free(taps);
        return cb_util_error(err, CB_ENOMEM, "cannot allocate a %ux%ux%ux%u float batch", n, ch, oh,
                             ow);
    }
    cb_image_batch *obh = cb_image_batch_init(ob, CB_BATCH_F32_NCHW, n, img * n);
    obh->c = ch;
    obh->h = oh;
    obh->w = ow;
    obh->classes = ib->classes;
    obh->split = ib->split;
    obh->epoch = ib->epoch;
    obh->batch = ib->batch;
    memcpy(obh->split_name, ib->split_name, sizeof obh->split_name);
    memcpy(cb_image_batch_labels(obh), cb_image_batch_labels(ib), sizeof(int32_t) * n);
    cb_image_desc *od = cb_image_batch_descs(obh);
    float *out = (float *)(void *)cb_image_batch_data(obh);
    cb_pp_tap *ty = taps, *tx = taps + oh;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t h = id[i].h, w = id[i].w, rh, rw;
        cb__pp_resized(s, h, w, &rh, &rw);
        uint32_t chh = rh + 2 * s->padding, cww = rw + 2 * s->padding;
        cb_rng r;
        cb_rng_seed(
            &r, cb__data_mix(cb__data_mix(cb__data_mix(s->seed, 0x50524550ULL /* "PREP" */),
                                          cb__data_mix((uint64_t)ib->split, (uint64_t)ib->epoch)),
                             cb__data_mix((uint64_t)ib->batch, i)));
        uint32_t top, left;
        if (train && s->random_crop) {
            top = (uint32_t)(cb_rng_u64(&r) % (chh - oh + 1));
            left = (uint32_t)(cb_rng_u64(&r) % (cww - ow + 1));
        } else {
            top = cb__pp_center(chh - oh);
            left = cb__pp_center(cww - ow);
        }
        int mirror = train && s->flip && (cb_rng_u64(&r) >> 63);
        int resized = rh != h || rw != w;
        cb__pp_axis(ty, oh, top, s->padding, rh, h, resized, 0);
        cb__pp_axis(tx, ow, left, s->padding, rw, w, resized, mirror);

        const unsigned char *src = idata + id[i].offset;
        float *dst = out + (size_t)i * plane * ch;
        size_t row = (size_t)w * ch;
        for (uint32_t y = 0; y < oh; y++) {
            const cb_pp_tap *yt = &ty[y];
            const unsigned char *r0 = src + yt->i0 * row, *r1 = src + yt->i1 * row;
            float wy1 = yt->w1, wy0 = 1.0f - wy1;
            for (uint32_t x = 0; x < ow; x++) {
                const cb_pp_tap *xt = &tx[x];
                size_t o = (size_t)y * ow + x;
                if (yt->pad || xt->pad) {
                    for (uint32_t c = 0; c < ch; c++) dst[c * plane + o] = b[c];
                    continue;
                }
                const unsigned char *p00 = r0 + (size_t)xt->i0 * ch,
                                    *p01 = r0 + (size_t)xt->i1 * ch;
                const unsigned char *p10 = r1 + (size_t)xt->i0 * ch,
                                    *p11 = r1 + (size_t)xt->i1 * ch;
                float wx1 = xt->w1, wx0 = 1.0f - wx1;
                for (uint32_t c = 0; c < ch; c++) {
                    float v = wy0 * (wx0 * (float)p00[c] + wx1 * (float)p01[c]) +
                              wy1 * (wx0 * (float)p10[c] + wx1 * (float)p11[c]);
                    dst[c * plane + o] = v * a[c] + b[c];
                }
            }
        }
        od[i].c = ch;
        od[i].h = oh;
        od[i].w = ow;
        od[i].offset = (uint64_t)i * img;
        od[i].bytes = img;
    }
    s->host->free(taps);
    s->host->buffer_unref(q->payload);
    q->payload = ob;
    return CB_OK;
}

const cb_stage_ops cb_stage_vision_preprocess = {
    .abi_major = CB_STAGE_ABI_MAJOR,
    .struct_size = sizeof(cb_stage_ops),
    .name = "vision.preprocess",
    .summary = "resize, pad, crop, flip and normalise 8-bit images into a float NCHW batch",
    .params = cb_pp_params,
    .n_params = P_COUNT,
    .state_size = sizeof(cb_pp_state),
    .create = cb_pp_create,
    .run = cb_pp_run,
    .check = cb_pp_check,
};
