/* tests/fuzz/gen_corpus_safetensors.c - writes the seed corpus of fuzz_safetensors.
 *
 * What: four small valid files (each well under 4 KB) into the directory given:
 *   tiny_model.safetensors     cb_nn_model_save of the tiny model (fuzz_tiny_model.h, 4
 *                              features), seeded init: F32 and I64 with {"format", "arch"}
 *                              metadata; loads fully.
 *   tiny_converted.safetensors the tiny model's names and shapes in the dtypes load converts
 *                              (F16, BF16, F64, I32 num_batches_tracked), no metadata; loads.
 *   dtypes.safetensors         cb_safetensors_write of one tensor of every dtype: a scalar, a
 *                              zero-sized one, one of CB_SAFETENSORS_MAX_DIMS dims, names with
 *                              UTF-8, quote, backslash and a control character, metadata.
 *   handwritten.safetensors    a header typed by hand, not by our writer: whitespace everywhere,
 *                              \u escapes (BMP and a surrogate pair), "\/", metadata last,
 *                              tensors listed out of offset order, padding after the object.
 * The files are committed in tests/fuzz/corpus_safetensors/; run this again only to change them:
 *   cmake --build build-fuzz --target fuzz_safetensors_corpus &&
 *   ./build-fuzz/fuzz_safetensors_corpus tests/fuzz/corpus_safetensors
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tiny_model.h"
#include "nn/nn.h"
#include "nn/safetensors.h"

static int fail(const cb_error *err) {
    fprintf(stderr, "gen_corpus_safetensors: %s\n", err->msg);
    return 1;
}

static uint16_t to_half(float f) { /* round toward zero; fine for seeds */
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u;
    int e = (int)((b >> 23) & 0xFF) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    if (e >= 31) return (uint16_t)(sign | 0x7C00u);
    return (uint16_t)(sign | ((uint32_t)e << 10) | ((b >> 13) & 0x3FFu));
}

static uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)(b >> 16);
}

static int tiny_converted(const cb_nn_model *m, const char *path, cb_error *err) {
    cb_safetensors_entry e[16];
    unsigned char store[16][64];
    if (m->n_params > 16) return cb_error_set(err, CB_EINVAL, "tiny model too large");
    for (int i = 0; i < m->n_params; i++) {
        const cb_nn_param *p = &m->params[i];
        const float *src = p->data;
        e[i] = (cb_safetensors_entry){.name = p->name, .ndim = p->ndim, .dims = p->dims,
                                      .data = store[i]};
        if (p->dtype == CB_NN_I64) {
            int32_t v = 3;
            e[i].dtype = CB_SAFETENSORS_I32;
            memcpy(store[i], &v, 4);
        } else if (strncmp(p->name, "bn.", 3) == 0) {
            e[i].dtype = CB_SAFETENSORS_F16;
            for (int64_t k = 0; k < p->numel; k++) {
                uint16_t h = to_half(src[k]);
                memcpy(store[i] + 2 * k, &h, 2);
            }
        } else if (strcmp(p->name, "fc.weight") == 0) {
            e[i].dtype = CB_SAFETENSORS_BF16;
            for (int64_t k = 0; k < p->numel; k++) {
                uint16_t h = to_bf16(src[k]);
                memcpy(store[i] + 2 * k, &h, 2);
            }
        } else {
            e[i].dtype = CB_SAFETENSORS_F64;
            for (int64_t k = 0; k < p->numel; k++) {
                double d = src[k];
                memcpy(store[i] + 8 * k, &d, 8);
            }
        }
    }
    return cb_safetensors_write(path, e, m->n_params, NULL, 0, err);
}

static int dtypes(const char *path, cb_error *err) {
    static const char *const names[CB_SAFETENSORS_N_DTYPES] = {
        "flags",          "pixels",     "deltas", "f8.e5m2", "f8.e4m3",
        "caf\xc3\xa9",    "\xe2\x82\xac", "half", "brain",   "quote\"d",
        "back\\slash",    "scalar",     "tab\tname", "emoji.\xf0\x9f\x98\x80", "zero",
    };
    static const int64_t d1[1] = {3}, d2[2] = {2, 2}, d0[2] = {0, 3},
                         d8[CB_SAFETENSORS_MAX_DIMS] = {1, 1, 1, 1, 1, 1, 1, 2};
    unsigned char data[64];
    for (size_t k = 0; k < sizeof data; k++) data[k] = (unsigned char)(k * 37 + 11);
    cb_safetensors_entry e[CB_SAFETENSORS_N_DTYPES];
    for (int i = 0; i < CB_SAFETENSORS_N_DTYPES; i++) {
        e[i] = (cb_safetensors_entry){.name = names[i], .dtype = (cb_safetensors_dtype)i,
                                      .ndim = 1, .dims = d1, .data = data};
        if (i % 3 == 1) e[i].ndim = 2, e[i].dims = d2;
    }
    e[CB_SAFETENSORS_F32].ndim = 0;  /* "scalar" */
    e[CB_SAFETENSORS_F32].dims = NULL;
    e[CB_SAFETENSORS_U64].ndim = 2;  /* "zero" */
    e[CB_SAFETENSORS_U64].dims = d0;
    e[CB_SAFETENSORS_I64].ndim = CB_SAFETENSORS_MAX_DIMS;
    e[CB_SAFETENSORS_I64].dims = d8;
    const cb_safetensors_kv meta[3] = {
        {"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\" \\ back"}, {"empty", ""}};
    return cb_safetensors_write(path, e, CB_SAFETENSORS_N_DTYPES, meta, 3, err);
}

static int handwritten(const char *path, cb_error *err) {
    /* "w" F32 [2] at [8, 16), "b\u00e9" U8 [3] at [16, 19), "s\ud83d\ude00" I16 [] at [19, 21),
     * "a\/b" F64 [1] at [0, 8): 21 data bytes. */
    static const char header[] =
        "{\n"
        "  \"w\" : { \"shape\" : [ 2 ], \"dtype\" : \"F32\", \"data_offsets\" : [ 8 , 16 ] } ,\n"
        "\t\"b\\u00e9\": {\"data_offsets\": [16, 19], \"dtype\": \"U8\", \"shape\": [3]},\r\n"
        "  \"s\\ud83d\\ude00\": {\"dtype\": \"I16\", \"shape\": [], \"data_offsets\": [19, 21]},\n"
        "  \"a\\/b\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]},\n"
        "  \"__metadata__\": {\"by\": \"hand\", \"esc\": \"\\n\\t\\\\\\\"\\u263A\"}\n"
        "}    ";
    unsigned char data[21];
    double a = -2.5;
    float w[2] = {1.0f, -0.5f};
    int16_t s = -7;
    memcpy(data, &a, 8);
    memcpy(data + 8, w, 8);
    data[16] = 0;
    data[17] = 128;
    data[18] = 255;
    memcpy(data + 19, &s, 2);
    uint64_t n = sizeof header - 1;
    FILE *f = fopen(path, "wb");
    if (!f) return cb_error_set(err, CB_EIO, "%s: cannot create", path);
    int bad = fwrite(&n, 8, 1, f) != 1 || fwrite(header, n, 1, f) != 1 ||
              fwrite(data, sizeof data, 1, f) != 1;
    if (fclose(f) != 0) bad = 1;
    return bad ? cb_error_set(err, CB_EIO, "%s: cannot write", path) : CB_OK;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    cb_error err;
    cb_error_clear(&err);
    cb_nn_model *m = NULL;
    if (fuzz_tiny_model(4, &m, &err)) return fail(&err);
    cb_nn_model_init(m, 7);
    int rc = 0;
    snprintf(path, sizeof path, "%s/tiny_model.safetensors", argv[1]);
    if (!rc) rc = cb_nn_model_save(m, path, &err);
    snprintf(path, sizeof path, "%s/tiny_converted.safetensors", argv[1]);
    if (!rc) rc = tiny_converted(m, path, &err);
    snprintf(path, sizeof path, "%s/dtypes.safetensors", argv[1]);
    if (!rc) rc = dtypes(path, &err);
    snprintf(path, sizeof path, "%s/handwritten.safetensors", argv[1]);
    if (!rc) rc = handwritten(path, &err);
    cb_nn_model_free(m);
    if (rc) return fail(&err);
    /* Every seed must parse, and the tiny ones must load into the tiny model. */
    static const char *const seeds[4] = {"tiny_model", "tiny_converted", "dtypes",
                                         "handwritten"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s.safetensors", argv[1], seeds[i]);
        cb_safetensors *f;
        if (cb_safetensors_open(path, &f, &err)) return fail(&err);
        printf("%s: %d tensors, %d metadata\n", path, cb_safetensors_count(f),
               cb_safetensors_metadata_count(f));
        cb_safetensors_close(f);
        if (i < 2) {
            if (fuzz_tiny_model(4, &m, &err)) return fail(&err);
            rc = cb_nn_model_load(m, path, 0, &err);
            cb_nn_model_free(m);
            if (rc) return fail(&err);
        }
    }
    return 0;
}
