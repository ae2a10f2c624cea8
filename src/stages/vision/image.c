/* stages/vision/image.c - JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB, and the
 * ENCODED -> U8_HWC batch conversion (see image.h).
 *
 * Design: each decoder runs in one function over a job struct that holds every value used
 * after a longjmp (no local variable is live across setjmp, so nothing can be clobbered);
 * the caller releases the library objects whether the job succeeded or jumped out. libjpeg:
 * error_exit formats the message and longjmps; emit_message does the same for warnings
 * (level < 0) and drops trace messages. libpng: the classic API with a memory reader, the
 * error handler longjmps through png_jmpbuf, warnings are ignored, allocations go through the
 * host's allocator, and transformations give RGB8 row by row straight into the output (with
 * interlace handling). libjpeg's own allocations cannot be routed through the host without a
 * custom jmemsys; they stay libjpeg's (malloc).
 *
 * Thread-safety: reentrant; no global state. Ownership: inputs borrowed; decode_batch returns
 * a new buffer reference and leaves the input alone.
 */
#include "stages/vision/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

#include "stages/util/util.h"

int cb__image_sniff(const unsigned char *d, size_t n) {
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) return CB_IMAGE_FORMAT_JPEG;
    if (n >= 8 && memcmp(d, png_sig, 8) == 0) return CB_IMAGE_FORMAT_PNG;
    return CB_IMAGE_FORMAT_UNKNOWN;
}

static int cb__image_dims_ok(uint32_t w, uint32_t h) {
    return w >= 1 && h >= 1 && w <= CB_IMAGE_MAX_SIDE && h <= CB_IMAGE_MAX_SIDE &&
           (uint64_t)w * h <= CB_IMAGE_MAX_PIXELS;
}

/* ---- JPEG ----------------------------------------------------------------------------- */

typedef struct cb_jpeg_job {
    struct jpeg_error_mgr mgr; /* first: ci.err points here */
    jmp_buf jb;
    struct jpeg_decompress_struct ci;
    const unsigned char *data;
    size_t size;
    uint32_t w, h;      /* out: probed size; in: expected size when out != NULL */
    unsigned char *out; /* NULL: probe only */
    char msg[JMSG_LENGTH_MAX + 64];
} cb_jpeg_job;

static void cb__jpeg_error_exit(j_common_ptr ci) {
    cb_jpeg_job *j = (cb_jpeg_job *)(void *)ci->err;
    char buf[JMSG_LENGTH_MAX];
    ci->err->format_message(ci, buf);
    snprintf(j->msg, sizeof j->msg, "%s", buf);
    longjmp(j->jb, 1);
}

static void cb__jpeg_emit(j_common_ptr ci, int level) {
    if (level >= 0) return; /* trace messages */
    cb__jpeg_error_exit(ci); /* a warning means corrupt data: refuse the image */
}

static int cb__jpeg_run(cb_jpeg_job *j) {
    if (setjmp(j->jb)) return CB_EINVAL;
    jpeg_create_decompress(&j->ci);
    jpeg_mem_src(&j->ci, j->data, (unsigned long)j->size);
    jpeg_read_header(&j->ci, TRUE);
    if (!cb__image_dims_ok(j->ci.image_width, j->ci.image_height)) {
        snprintf(j->msg, sizeof j->msg, "image size %ux%u outside the limits", j->ci.image_width,
                 j->ci.image_height);
        return CB_EINVAL;
    }
    if (!j->out) {
        j->w = j->ci.image_width;
        j->h = j->ci.image_height;
        return CB_OK;
    }
    j->ci.out_color_space = JCS_RGB; /* also from grayscale */
    jpeg_start_decompress(&j->ci);
    if (j->ci.output_width != j->w || j->ci.output_height != j->h || j->ci.output_components != 3) {
        snprintf(j->msg, sizeof j->msg, "decoder output %ux%ux%d, expected %ux%ux3",
                 j->ci.output_width, j->ci.output_height, j->ci.output_components, j->w, j->h);
        return CB_EINVAL;
    }
    while (j->ci.output_scanline < j->ci.output_height) {
        JSAMPROW rows[16];
        JDIMENSION y = j->ci.output_scanline, k = 0;
        for (; k < 16 && y + k < j->ci.output_height; k++)
            rows[k] = j->out + ((size_t)(y + k) * j->w * 3);
        if (jpeg_read_scanlines(&j->ci, rows, k) == 0) {
            snprintf(j->msg, sizeof j->msg, "decoder stalled at row %u", y);
            return CB_EINVAL;
        }
    }
    jpeg_finish_decompress(&j->ci);
    return CB_OK;
}

static int cb__jpeg(cb_jpeg_job *j) {
    j->ci.err = jpeg_std_error(&j->mgr);
    j->mgr.error_exit = cb__jpeg_error_exit;
    j->mgr.emit_message = cb__jpeg_emit;
    int rc = cb__jpeg_run(j);
    jpeg_destroy_decompress(&j->ci);
    return rc;
}

/* ---- PNG ------------------------------------------------------------------------------ */

typedef struct cb_png_job {
    const cb_host *host;
    png_structp png;
    png_infop info;
    png_bytep *rows;
    const unsigned char *data;
    size_t size, pos;
    uint32_t w, h;
    unsigned char *out;
    char msg[256];
} cb_png_job;

static void cb__png_error(png_structp png, png_const_charp m) {
    cb_png_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", m ? m : "error");
    png_longjmp(png, 1);
}

static void cb__png_warning(png_structp png, png_const_charp m) {}

static png_voidp cb__png_malloc(png_structp png, png_alloc_size_t n) {
    cb_png_job *j = png_get_mem_ptr(png);
    return j->host->alloc(n);
}

static void cb__png_free(png_structp png, png_voidp p) {
    cb_png_job *j = png_get_mem_ptr(png);
    j->host->free(p);
}

static void cb__png_read(png_structp png, png_bytep out, size_t n) {
    cb_png_job *j = png_get_io_ptr(png);
    if (n > j->size - j->pos) png_error(png, "file is truncated");
    memcpy(out, j->data + j->pos, n);
    j->pos += n;
}

static int cb__png_run(cb_png_job *j) {
    j->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, j, cb__png_error, cb__png_warning, j,
                                      cb__png_malloc, cb__png_free);
    if (j->png) j->info = png_create_info_struct(j->png);
    if (!j->png || !j->info) {
        snprintf(j->msg, sizeof j->msg, "out of memory");
        return CB_ENOMEM;
    }
    if (setjmp(png_jmpbuf(j->png))) return CB_EINVAL;
    png_set_read_fn(j->png, j, cb__png_read);
    png_set_user_limits(j->png, CB_IMAGE_MAX_SIDE, CB_IMAGE_MAX_SIDE);
    png_read_info(j->png, j->info);
    png_uint_32 w = png_get_image_width(j->png, j->info), h = png_get_image_height(j->png, j->info);
    if (!cb__image_dims_ok(w, h)) {
        snprintf(j->msg, sizeof j->msg, "image size %ux%u outside the limits", (unsigned)w,
                 (unsigned)h);
        return CB_EINVAL;
    }
    if (!j->out) {
        j->w = w;
        j->h = h;
        return CB_OK;
    }
    if (w != j->w || h != j->h) {
        snprintf(j->msg, sizeof j->msg, "size changed between probe and decode");
        return CB_EINVAL;
    }
    int type = png_get_color_type(j->png, j->info), depth = png_get_bit_depth(j->png, j->info);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(j->png);
    if ((type & PNG_COLOR_MASK_COLOR) == 0 && depth < 8) png_set_expand_gray_1_2_4_to_8(j->png);
    if (depth == 16) png_set_scale_16(j->png);
    /* palette_to_rgb also turns a tRNS chunk into an alpha channel: drop that too */
    if ((type & PNG_COLOR_MASK_ALPHA) || png_get_valid(j->png, j->info, PNG_INFO_tRNS))
        png_set_strip_alpha(j->png);
    if ((type & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(j->png);
    png_set_interlace_handling(j->png);
    png_read_update_info(j->png, j->info);
    if (png_get_rowbytes(j->png, j->info) != (size_t)w * 3 ||
        png_get_channels(j->png, j->info) != 3) {
        snprintf(j->msg, sizeof j->msg, "unsupported PNG layout (colour type %d, depth %d)", type,
                 depth);
        return CB_EINVAL;
    }
    j->rows = j->host->alloc(sizeof *j->rows * h);
    if (!j->rows) {
        snprintf(j->msg, sizeof j->msg, "out of memory");
        return CB_ENOMEM;
    }
    for (png_uint_32 y = 0; y < h; y++) j->rows[y] = j->out + (size_t)y * w * 3;
    png_read_image(j->png, j->rows);
    png_read_end(j->png, NULL);
    return CB_OK;
}

static int cb__png(cb_png_job *j) {
    int rc = cb__png_run(j);
    if (j->png) png_destroy_read_struct(&j->png, j->info ? &j->info : NULL, NULL);
    j->host->free(j->rows);
    j->rows = NULL;
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------- */

static int cb__image_do(const cb_host *host, const unsigned char *data, size_t size, int format,
                        uint32_t *w, uint32_t *h, unsigned char *out, char *msg, size_t msg_size) {
    if (format == CB_IMAGE_FORMAT_UNKNOWN) format = cb__image_sniff(data, size);
    int rc;
    if (format == CB_IMAGE_FORMAT_JPEG) {
        cb_jpeg_job j;
        memset(&j, 0, sizeof j);
        j.data = data;
        j.size = size;
        j.w = *w;
        j.h = *h;
        j.out = out;
        rc = cb__jpeg(&j);
        if (rc) snprintf(msg, msg_size, "JPEG: %s", j.msg);
        *w = j.w;
        *h = j.h;
        return rc;
    }
    if (format == CB_IMAGE_FORMAT_PNG) {
        cb_png_job j;
        memset(&j, 0, sizeof j);
        j.host = host;
        j.data = data;
        j.size = size;
        j.w = *w;
        j.h = *h;
        j.out = out;
        rc = cb__png(&j);
        if (rc) snprintf(msg, msg_size, "PNG: %s", j.msg);
        *w = j.w;
        *h = j.h;
        return rc;
    }
    snprintf(msg, msg_size, "not a JPEG or PNG file (%zu bytes, starting %02x %02x %02x %02x)",
             size, size > 0 ? data[0] : 0, size > 1 ? data[1] : 0, size > 2 ? data[2] : 0,
             size > 3 ? data[3] : 0);
    return CB_EINVAL;
}

int cb__image_probe(const cb_host *host, const unsigned char *data, size_t size, int format,
                    uint32_t *w, uint32_t *h, char *msg, size_t msg_size) {
    *w = *h = 0;
    return cb__image_do(host, data, size, format, w, h, NULL, msg, msg_size);
}

int cb__image_decode(const cb_host *host, const unsigned char *data, size_t size, int format,
                     uint32_t w, uint32_t h, unsigned char *out, char *msg, size_t msg_size) {
    return cb__image_do(host, data, size, format, &w, &h, out, msg, msg_size);
}

/* "'train/cat/1.jpg'" or "image 3 of the batch" */
static void cb__image_label(cb_image_batch *b, uint32_t i, char *buf, size_t size) {
    const char *name = cb_image_batch_name(b, i);
    if (name)
        snprintf(buf, size, "'%s'", name);
    else
        snprintf(buf, size, "image %u of batch %lld (%s)", i, (long long)b->batch, b->split_name);
}

int cb__image_decode_batch(const cb_host *host, const cb_buffer *in, cb_buffer **out,
                           cb_error *err) {
    *out = NULL;
    cb_image_batch *ib = in->data;
    const cb_image_desc *id = cb_image_batch_descs(ib);
    const unsigned char *idata = cb_image_batch_data(ib);
    uint32_t n = ib->n;
    uint32_t *dims = host->alloc(sizeof *dims * 2 * (n ? n : 1));
    if (!dims) return cb_util_error(err, CB_ENOMEM, "out of memory");
    char msg[512], label[320];
    uint64_t pixels = 0, names = 0;
    int rc = CB_OK;
    for (uint32_t i = 0; i < n && rc == CB_OK; i++) {
        rc = cb__image_probe(host, idata + id[i].offset, (size_t)id[i].bytes, (int)id[i].format,
                             &dims[2 * i], &dims[2 * i + 1], msg, sizeof msg);
        if (rc) {
            cb__image_label(ib, i, label, sizeof label);
            cb_util_error(err, rc, "%s: %s", label, msg);
            break;
        }
        pixels += (uint64_t)dims[2 * i] * dims[2 * i + 1] * 3;
        const char *name = cb_image_batch_name(ib, i);
        if (name) names += strlen(name) + 1;
    }
    cb_buffer *ob = NULL;
    if (rc == CB_OK) {
        size_t bytes = cb_image_batch_bytes(n, pixels + names);
        ob = bytes ? host->buffer_new(bytes) : NULL;
        if (!ob)
            rc = cb_util_error(err, CB_ENOMEM, "cannot allocate %llu bytes for %u decoded images",
                               (unsigned long long)(pixels + names), n);
    }
    if (rc == CB_OK) {
        cb_image_batch *ob_b = cb_image_batch_init(ob, CB_BATCH_U8_HWC, n, pixels + names);
        ob_b->classes = ib->classes;
        ob_b->split = ib->split;
        ob_b->epoch = ib->epoch;
        ob_b->batch = ib->batch;
        memcpy(ob_b->split_name, ib->split_name, sizeof ob_b->split_name);
        memcpy(cb_image_batch_labels(ob_b), cb_image_batch_labels(ib), sizeof(int32_t) * n);
        cb_image_desc *od = cb_image_batch_descs(ob_b);
        unsigned char *odata = cb_image_batch_data(ob_b);
        uint64_t off = 0, name_off = pixels;
        for (uint32_t i = 0; i < n; i++) {
            od[i].w = dims[2 * i];
            od[i].h = dims[2 * i + 1];
            od[i].c = 3;
            od[i].offset = off;
            od[i].bytes = (uint64_t)od[i].w * od[i].h * 3;
            off += od[i].bytes;
            const char *name = cb_image_batch_name(ib, i);
            if (name) {
                size_t len = strlen(name) + 1;
                memcpy(odata + name_off, name, len);
                od[i].name_offset = name_off;
                name_off += len;
            }
        }
        for (uint32_t i = 0; i < n && rc == CB_OK; i++) {
            rc =
                cb__image_decode(host, idata + id[i].offset, (size_t)id[i].bytes, (int)id[i].format,
                                 od[i].w, od[i].h, odata + od[i].offset, msg, sizeof msg);
            if (rc) {
                cb__image_label(ib, i, label, sizeof label);
                cb_util_error(err, rc, "%s: %s", label, msg);
            }
        }
    }
    host->free(dims);
    if (rc != CB_OK) {
        host->buffer_unref(ob);
        return rc;
    }
    *out = ob;
    return CB_OK;
}
