/* tests/test_data_vision.c - data.images, vision.decode and vision.preprocess on real files: JPEGs
 * and PNGs written with libjpeg/libpng (8-bit, gray, RGBA, palette, 16-bit, 2-bit, interlaced)
 * read back through the stages (PNG exact, JPEG within a tolerance), corrupt files on every
 * decode path, and preprocessing against a plain double-precision reference written here.
 * Shares its helpers with test_data.c (data_util.h); `ctest -R test_data` runs both.
 */
#include "data_util.h"

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
    CB_CHECK_EQ_INT(inst_open(&x, &cb_stage_data_images, cfg), CB_ECONFIG); /* refused when loaded */
    CB_CHECK_CONTAINS(x.err.msg, "missing: No such file or directory");
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

int main(void) {
    CB_RUN(test_images_decode_and_layouts);
    CB_RUN(test_images_splits_layout);
    CB_RUN(test_images_corrupt);
    CB_RUN(test_decode_gray_jpeg);
    CB_RUN(test_decode_palette);
    CB_RUN(test_decode_png_depths);
    CB_RUN(test_decode_speed);
    CB_RUN(test_preprocess_reference);
    CB_RUN(test_preprocess_speed);
    return cb_test_done();
}
