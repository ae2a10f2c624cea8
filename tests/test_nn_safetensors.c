/* tests/test_nn_safetensors.c - safetensors files (nn/safetensors.c) and model weights
 * (nn/weights.c: cb_nn_model_load/_save).
 *
 * Three independent views of the format meet here so that the reader and the writer cannot
 * share one misunderstanding: bytes written out by hand in this file (read by the reader; and
 * what the writer must produce, byte for byte), files PyTorch writes through a ~15-line
 * exporter that follows the published spec (loaded into our resnet18 and checked value by
 * value against a raw dump), and files we write that PyTorch loads with load_state_dict(strict).
 * Then corrupt files of every kind: each must fail with CB_EINVAL and a message naming the file
 * (and the tensor, or the byte offset for bad JSON), never crash (run under ASan too).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/rng.h"
#include "harness.h"
#include "nn/nn.h"
#include "nn/safetensors.h"

#define PYTHON "/usr/bin/python3"

static const char *g_dir;

static const char *path_in(const char *name) { return cb_test_path(g_dir, name); }

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n)) abort();
    fclose(f);
}

static cb_nn_model *build(const char *arch, int classes, int c, int h, int w) {
    cb_error err = {0};
    cb_nn_model *m = NULL;
    if (cb_nn_model_build(arch, classes, c, h, w, &m, &err))
        cb__test_fail(__FILE__, __LINE__, "build %s: %s", arch, err.msg);
    return m;
}

static size_t param_bytes(const cb_nn_param *p) {
    return (size_t)p->numel * (p->dtype == CB_NN_I64 ? 8 : 4);
}

/* ---- Bytes fixed by hand ---------------------------------------------------------------- */

/* The data buffer of both fixed files (26 bytes), worked out by hand:
 *   a    F32  [2]    1.0, -2.5            0x3F800000, 0xC0200000
 *   n    I64  []     5
 *   béta BF16 [1, 2] 1.0, -0.5            0x3F80, 0xBF00
 *   f16  F16  [3]    1.0, 65504, -2^-24   0x3C00, 0x7BFF, 0x8001 (the largest normal and the
 *                                          smallest subnormal) */
static const unsigned char k_data[26] = {
    0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0,  /* a    [0, 8)   */
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  /* n    [8, 16)  */
    0x80, 0x3F, 0x00, 0xBF,                          /* béta [16, 20) */
    0x00, 0x3C, 0xFF, 0x7B, 0x01, 0x80,              /* f16  [20, 26) */
};

/* A header as another writer might produce it: spaces and a newline, keys in any order,
 * escapes (\t, \", \u263a, a surrogate pair, \u00e9 in a name), tensors not in offset order,
 * 2 spaces of padding (337 bytes, so the data starts unaligned at byte 345). */
#define K_READER_JSON                                                                              \
    "{\"__metadata__\": {\"format\": \"pt\", \"note\": \"tab\\tq\\\"\\u263a\\ud83d\\ude00\"}, "    \
    "\"n\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [8, 16]}, "                      \
    "\"a\": {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [0, 8]}, "                      \
    "\"b\\u00e9ta\": {\"dtype\": \"BF16\", \"shape\": [1, 2], \"data_offsets\": [16, 20]},\n"      \
    " \"f16\": {\"data_offsets\": [20, 26], \"dtype\": \"F16\", \"shape\": [3]}}  "
static const unsigned char k_reader_size[8] = {0x51, 0x01, 0, 0, 0, 0, 0, 0}; /* 337 */

/* What our writer must produce for a, n, béta, f16 (in that order) with {"format": "pt"}:
 * compact JSON, metadata first, 257 bytes + 7 spaces = 264 (a multiple of 8). */
#define K_WRITER_JSON                                                                              \
    "{\"__metadata__\":{\"format\":\"pt\"},"                                                       \
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"                              \
    "\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"                              \
    "\"b\xc3\xa9ta\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[16,20]},"               \
    "\"f16\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[20,26]}}       "
static const unsigned char k_writer_size[8] = {0x08, 0x01, 0, 0, 0, 0, 0, 0}; /* 264 */

/* 8-byte size + header + data. */
static unsigned char *assemble(const unsigned char size[8], const char *json, size_t json_len,
                               size_t *len) {
    *len = 8 + json_len + sizeof k_data;
    unsigned char *b = malloc(*len);
    memcpy(b, size, 8);
    memcpy(b + 8, json, json_len);
    memcpy(b + 8 + json_len, k_data, sizeof k_data);
    return b;
}

static float f32_at(const cb_safetensors_tensor *t, int i) {
    float f;
    memcpy(&f, (const char *)t->data + 4 * i, 4);
    return f;
}

static void check_fixed_tensors(const cb_safetensors *f) {
    CB_CHECK_EQ_INT(cb_safetensors_count(f), 4);
    const cb_safetensors_tensor *a = cb_safetensors_find(f, "a"), *n = cb_safetensors_find(f, "n"),
                                *b = cb_safetensors_find(f, "b\xc3\xa9ta"),
                                *h = cb_safetensors_find(f, "f16");
    CB_CHECK(a && n && b && h);
    CB_CHECK(cb_safetensors_find(f, "beta") == NULL);
    if (!a || !n || !b || !h) return;
    CB_CHECK_EQ_INT(a->dtype, CB_SAFETENSORS_F32);
    CB_CHECK_EQ_INT(a->ndim, 1);
    CB_CHECK_EQ_INT(a->dims[0], 2);
    CB_CHECK_EQ_INT(a->bytes, 8);
    CB_CHECK_EQ_INT(a->offset, 0);
    CB_CHECK(f32_at(a, 0) == 1.0f && f32_at(a, 1) == -2.5f);
    CB_CHECK_EQ_INT(n->dtype, CB_SAFETENSORS_I64);
    CB_CHECK_EQ_INT(n->ndim, 0);
    CB_CHECK_EQ_INT(n->numel, 1);
    int64_t nv;
    memcpy(&nv, n->data, 8);
    CB_CHECK_EQ_INT(nv, 5);
    CB_CHECK_EQ_INT(b->dtype, CB_SAFETENSORS_BF16);
    CB_CHECK_EQ_INT(b->ndim, 2);
    CB_CHECK(b->dims[0] == 1 && b->dims[1] == 2);
    CB_CHECK_EQ_INT(b->offset, 16);
    const unsigned char *bb = b->data;
    CB_CHECK(bb[0] == 0x80 && bb[1] == 0x3F && bb[2] == 0x00 && bb[3] == 0xBF);
    CB_CHECK_EQ_INT(h->dtype, CB_SAFETENSORS_F16);
    CB_CHECK_EQ_INT(h->numel, 3);
    CB_CHECK_EQ_INT(h->bytes, 6);
    CB_CHECK_STR_EQ(cb_safetensors_metadata(f, "format"), "pt");
}

static void test_fixed_bytes_reader(void) {
    CB_CHECK_EQ_INT(strlen(K_READER_JSON), 337);
    size_t len;
    unsigned char *bytes = assemble(k_reader_size, K_READER_JSON, strlen(K_READER_JSON), &len);
    const char *path = path_in("fixed.safetensors");
    write_bytes(path, bytes, len);
    cb_safetensors *f = NULL;
    cb_error err = {0};
    int rc = cb_safetensors_open(path, &f, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    if (rc) printf("# %s\n", err.msg);
    if (f) {
        check_fixed_tensors(f);
        CB_CHECK_EQ_INT(cb_safetensors_metadata_count(f), 2);
        CB_CHECK_STR_EQ(cb_safetensors_metadata(f, "note"),
                        "tab\tq\"\xe2\x98\xba\xf0\x9f\x98\x80");
        /* Header order is kept for listing. */
        CB_CHECK_STR_EQ(cb_safetensors_at(f, 0)->name, "n");
        CB_CHECK_STR_EQ(cb_safetensors_at(f, 3)->name, "f16");
        CB_CHECK(cb_safetensors_at(f, 4) == NULL);
        CB_CHECK_STR_EQ(cb_safetensors_path(f), path);
        /* Data points into the file: the first tensor right after the header. */
        CB_CHECK(memcmp(cb_safetensors_find(f, "a")->data, k_data, 8) == 0);
    }
    cb_safetensors_close(f);
    free(bytes);
}

static void test_fixed_bytes_writer(void) {
    CB_CHECK_EQ_INT(strlen(K_WRITER_JSON), 264);
    static const int64_t da[1] = {2}, db[2] = {1, 2}, dh[1] = {3};
    const cb_safetensors_entry e[4] = {
        {"a", CB_SAFETENSORS_F32, 1, da, k_data},
        {"n", CB_SAFETENSORS_I64, 0, NULL, k_data + 8},
        {"b\xc3\xa9ta", CB_SAFETENSORS_BF16, 2, db, k_data + 16},
        {"f16", CB_SAFETENSORS_F16, 1, dh, k_data + 20},
    };
    const cb_safetensors_kv meta[1] = {{"format", "pt"}};
    const char *path = path_in("written.safetensors");
    cb_error err = {0};
    int rc = cb_safetensors_write(path, e, 4, meta, 1, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    if (rc) printf("# %s\n", err.msg);
    size_t want_len, got_len = 0;
    unsigned char *want = assemble(k_writer_size, K_WRITER_JSON, 264, &want_len);
    char *got = cb_test_read(path, &got_len);
    CB_CHECK_EQ_INT(got_len, want_len);
    if (got && got_len == want_len && memcmp(got, want, want_len) != 0) {
        size_t i = 0;
        while (got[i] == (char)want[i]) i++;
        cb__test_fail(__FILE__, __LINE__, "writer output differs from the fixed bytes at byte %zu",
                      i);
    }
    /* No temporary left behind. */
    CB_CHECK(access(path_in("written.safetensors.tmp"), F_OK) != 0);
    /* And the reader agrees with it. */
    cb_safetensors *f = NULL;
    CB_CHECK_EQ_INT(cb_safetensors_open(path, &f, &err), CB_OK);
    if (f) check_fixed_tensors(f);
    cb_safetensors_close(f);
    free(got);
    free(want);
}

static void test_writer_errors(void) {
    static const int64_t d1[1] = {1};
    float x = 1;
    cb_error err = {0};
    const char *path = path_in("bad-write.safetensors");
    cb_safetensors_entry dup[2] = {{"w", CB_SAFETENSORS_F32, 1, d1, &x},
                                   {"w", CB_SAFETENSORS_F32, 1, d1, &x}};
    CB_CHECK_EQ_INT(cb_safetensors_write(path, dup, 2, NULL, 0, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "tensor w given twice");
    dup[1].name = "__metadata__";
    CB_CHECK_EQ_INT(cb_safetensors_write(path, dup, 2, NULL, 0, &err), CB_EINVAL);
    dup[1].name = "bad\xff";
    CB_CHECK_EQ_INT(cb_safetensors_write(path, dup, 2, NULL, 0, &err), CB_EINVAL);
    dup[1].name = "v";
    dup[1].ndim = 9;
    CB_CHECK_EQ_INT(cb_safetensors_write(path, dup, 2, NULL, 0, &err), CB_EINVAL);
    CB_CHECK(access(path, F_OK) != 0);
    /* An unwritable place: CB_EIO naming the file. */
    dup[1].ndim = 1;
    CB_CHECK_EQ_INT(cb_safetensors_write("/nonexistent-dir/x.safetensors", dup, 2, NULL, 0, &err),
                    CB_EIO);
    CB_CHECK_CONTAINS(err.msg, "/nonexistent-dir/x.safetensors");
    /* Names with quotes, backslashes and control characters round-trip through escapes. */
    dup[0].name = "q\"b\\c\n\x01";
    CB_CHECK_EQ_INT(cb_safetensors_write(path, dup, 2, NULL, 0, &err), CB_OK);
    cb_safetensors *f = NULL;
    CB_CHECK_EQ_INT(cb_safetensors_open(path, &f, &err), CB_OK);
    if (f) CB_CHECK(cb_safetensors_find(f, "q\"b\\c\n\x01") != NULL);
    cb_safetensors_close(f);
    /* Zero tensors is a valid file: "{}" padded. */
    CB_CHECK_EQ_INT(cb_safetensors_write(path, NULL, 0, NULL, 0, &err), CB_OK);
    CB_CHECK_EQ_INT(cb_safetensors_open(path, &f, &err), CB_OK);
    if (f) CB_CHECK_EQ_INT(cb_safetensors_count(f), 0);
    cb_safetensors_close(f);
}

/* ---- Model round trip ------------------------------------------------------------------- */

/* Fills running statistics and counters with something other than their defaults. */
static void perturb_buffers(cb_nn_model *m, uint64_t seed) {
    cb_rng r;
    cb_rng_seed(&r, seed);
    for (int i = 0; i < m->n_params; i++) {
        cb_nn_param *p = &m->params[i];
        if (p->dtype == CB_NN_I64) {
            *(int64_t *)p->data = (int64_t)(cb_rng_u64(&r) % 1000);
        } else if (!p->trainable) {
            float *d = p->data;
            for (int64_t k = 0; k < p->numel; k++) d[k] = (float)cb_rng_uniform(&r) + 0.01f;
        }
    }
}

static int models_equal(const cb_nn_model *a, const cb_nn_model *b, char *which, size_t size) {
    if (a->n_params != b->n_params) return 0;
    for (int i = 0; i < a->n_params; i++)
        if (memcmp(a->params[i].data, b->params[i].data, param_bytes(&a->params[i])) != 0) {
            snprintf(which, size, "%s", a->params[i].name);
            return 0;
        }
    return 1;
}

static void test_round_trip(void) {
    cb_nn_model *a = build("resnet18", 10, 3, 32, 32), *b = build("resnet18", 10, 3, 32, 32);
    if (!a || !b) goto out;
    cb_nn_model_init(a, 2024);
    perturb_buffers(a, 5);
    const char *path = path_in("rt.safetensors");
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_nn_model_save(a, path, &err), CB_OK);
    CB_CHECK_EQ_INT(cb_nn_model_load(b, path, 0, &err), CB_OK);
    char which[CB_NN_NAME_MAX] = "";
    CB_CHECK(models_equal(a, b, which, sizeof which));
    if (which[0]) printf("# first differing tensor: %s\n", which);
    /* Saving again replaces the file atomically; the header is 8-byte padded, so the data
     * buffer starts aligned; metadata names the format and the arch. */
    CB_CHECK_EQ_INT(cb_nn_model_save(b, path, &err), CB_OK);
    cb_safetensors *f = NULL;
    CB_CHECK_EQ_INT(cb_safetensors_open(path, &f, &err), CB_OK);
    if (f) {
        CB_CHECK_EQ_INT(cb_safetensors_count(f), a->n_params);
        CB_CHECK_EQ_INT((uintptr_t)cb_safetensors_at(f, 0)->data % 8, 0);
        CB_CHECK_STR_EQ(cb_safetensors_metadata(f, "format"), "pt");
        CB_CHECK_STR_EQ(cb_safetensors_metadata(f, "arch"), "resnet18");
        const cb_safetensors_tensor *t = cb_safetensors_find(f, "bn1.num_batches_tracked");
        CB_CHECK(t && t->dtype == CB_SAFETENSORS_I64 && t->ndim == 0);
        t = cb_safetensors_at(f, 0);
        CB_CHECK(t && strcmp(t->name, "conv1.weight") == 0 && t->dtype == CB_SAFETENSORS_F32);
    }
    cb_safetensors_close(f);
    /* Other models too (cnn, mlp with their own names). */
    static const char *const archs[2] = {"cnn", "mlp"};
    for (int i = 0; i < 2; i++) {
        cb_nn_model *x = build(archs[i], 3, 3, 16, 16), *y = build(archs[i], 3, 3, 16, 16);
        if (x && y) {
            cb_nn_model_init(x, 1);
            CB_CHECK_EQ_INT(cb_nn_model_save(x, path, &err), CB_OK);
            CB_CHECK_EQ_INT(cb_nn_model_load(y, path, 0, &err), CB_OK);
            CB_CHECK(models_equal(x, y, which, sizeof which));
        }
        cb_nn_model_free(x);
        cb_nn_model_free(y);
    }
out:
    cb_nn_model_free(a);
    cb_nn_model_free(b);
}

/* ---- PyTorch in both directions --------------------------------------------------------- */

/* The exporter and importer follow the published format in plain Python (no safetensors
 * package): `export DIR` writes py.safetensors (F32/I64, a trained-looking resnet18 for 10
 * classes) and py16.safetensors (floats as F16 and BF16 alternately) with raw dumps of the
 * values each should load as (floats as float32, counters as int64, state-dict order);
 * `check DIR` loads c.safetensors into torchvision's resnet18 with strict=True and compares it
 * with c.raw. */
static const char k_py[] =
    "import json, struct, sys\n"
    "try:\n"
    "    import torch, torchvision\n"
    "except ImportError as e:\n"
    "    sys.exit('torch/torchvision missing for " PYTHON " (run scripts/setup.sh): %s' % e)\n"
    "DT = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.int64: 'I64'}\n"
    "def save(sd, path, meta=None):\n"
    "    hdr, bufs, off = ({'__metadata__': meta} if meta else {}), [], 0\n"
    "    for k, v in sd.items():\n"
    "        v = v.detach().contiguous()\n"
    "        b = (v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy().tobytes()\n"
    "        hdr[k] = {'dtype': DT[v.dtype], 'shape': list(v.shape), 'data_offsets': [off, off + len(b)]}\n"
    "        bufs.append(b); off += len(b)\n"
    "    h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)\n"
    "    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(bufs))\n"
    "def load(path):\n"
    "    raw = open(path, 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]\n"
    "    assert n % 8 == 0, 'header not padded to 8 bytes'\n"
    "    hdr, buf = json.loads(raw[8:8 + n]), raw[8 + n:]\n"
    "    inv = {v: k for k, v in DT.items()}\n"
    "    return {k: torch.frombuffer(bytearray(buf[i['data_offsets'][0]:i['data_offsets'][1]]),\n"
    "                                dtype=inv[i['dtype']]).reshape(i['shape'])\n"
    "            for k, i in hdr.items() if k != '__metadata__'}, hdr.get('__metadata__')\n"
    "def dump(sd, path):\n"
    "    open(path, 'wb').write(b''.join((v if v.dtype == torch.int64 else v.float()).numpy().tobytes()\n"
    "                                    for v in sd.values()))\n"
    "mode, d = sys.argv[1], sys.argv[2]\n"
    "if mode == 'export':\n"
    "    torch.manual_seed(0)\n"
    "    m = torchvision.models.resnet18(num_classes=10)\n"
    "    with torch.no_grad():\n"
    "        for p in m.parameters():\n"
    "            if p.dim() == 1: p.add_(0.1 * torch.randn_like(p))\n"
    "        m.train(); m(torch.randn(4, 3, 64, 64)); m(torch.randn(4, 3, 64, 64))\n"
    "    sd = m.state_dict()\n"
    "    save(sd, d + '/py.safetensors', {'format': 'pt'}); dump(sd, d + '/py.raw')\n"
    "    sd16 = {k: v if not v.is_floating_point() else v.half() if i % 2 else v.bfloat16()\n"
    "            for i, (k, v) in enumerate(sd.items())}\n"
    "    save(sd16, d + '/py16.safetensors'); dump(sd16, d + '/py16.raw')\n"
    "    print('exported', len(sd))\n"
    "else:\n"
    "    sd, meta = load(d + '/c.safetensors')\n"
    "    assert meta == {'format': 'pt', 'arch': 'resnet18'}, meta\n"
    "    m = torchvision.models.resnet18(num_classes=10)\n"
    "    m.load_state_dict(sd, strict=True)\n"
    "    raw, off = open(d + '/c.raw', 'rb').read(), 0\n"
    "    for k, v in m.state_dict().items():\n"
    "        assert sd[k].dtype == v.dtype, (k, sd[k].dtype, v.dtype)\n"
    "        n = v.numel() * v.element_size()\n"
    "        want = torch.frombuffer(bytearray(raw[off:off + n]), dtype=v.dtype).reshape(v.shape)\n"
    "        assert torch.equal(v, want), k\n"
    "        off += n\n"
    "    assert off == len(raw)\n"
    "    m.eval(); y = m(torch.ones(1, 3, 32, 32))\n"
    "    assert y.shape == (1, 10) and torch.isfinite(y).all()\n"
    "    print('checked', len(sd))\n";

static int run_py(const char *mode) {
    const char *script = path_in("st.py");
    write_bytes(script, k_py, sizeof k_py - 1);
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, PYTHON " '%s' %s '%s'", script, mode, g_dir);
    int st = cb_test_sh(cmd, &out);
    if (st != 0)
        cb__test_fail(__FILE__, __LINE__, "python %s failed (status %d): %s", mode, st,
                      out ? out : "");
    else
        printf("# python: %s", out);
    free(out);
    return st;
}

/* Loads a PyTorch-written file and compares every tensor with the raw dump. */
static void check_py_file(const char *file, const char *raw_file) {
    cb_nn_model *m = build("resnet18", 10, 3, 224, 224);
    if (!m) return;
    cb_error err = {0};
    int rc = cb_nn_model_load(m, path_in(file), 0, &err);
    CB_CHECK_EQ_INT(rc, CB_OK);
    if (rc) printf("# %s\n", err.msg);
    size_t len = 0, off = 0;
    char *raw = cb_test_read(path_in(raw_file), &len);
    CB_CHECK(raw != NULL);
    int bad = 0;
    int64_t nbt = -1;
    for (int i = 0; raw && !rc && i < m->n_params; i++) {
        const cb_nn_param *p = &m->params[i];
        size_t n = param_bytes(p);
        if (off + n > len || memcmp(raw + off, p->data, n) != 0) {
            if (bad++ < 5)
                cb__test_fail(__FILE__, __LINE__, "%s: tensor %s differs from PyTorch's", file,
                              p->name);
        }
        if (strcmp(p->name, "layer4.1.bn2.num_batches_tracked") == 0) nbt = *(int64_t *)p->data;
        off += n;
    }
    if (!rc) {
        CB_CHECK_EQ_INT(off, len);
        CB_CHECK_EQ_INT(nbt, 2); /* two training forwards in the exporter */
    }
    free(raw);
    cb_nn_model_free(m);
}

static void test_pytorch_to_c(void) {
    if (run_py("export") != 0) return;
    check_py_file("py.safetensors", "py.raw");
    check_py_file("py16.safetensors", "py16.raw");
    cb_safetensors *f = NULL;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_safetensors_open(path_in("py16.safetensors"), &f, &err), CB_OK);
    if (f) {
        const cb_safetensors_tensor *t = cb_safetensors_find(f, "conv1.weight");
        const cb_safetensors_tensor *u = cb_safetensors_find(f, "bn1.weight");
        CB_CHECK(t && u && t->dtype == CB_SAFETENSORS_BF16 && u->dtype == CB_SAFETENSORS_F16);
        CB_CHECK(cb_safetensors_metadata(f, "format") == NULL);
    }
    cb_safetensors_close(f);
}

static void test_c_to_pytorch(void) {
    cb_nn_model *m = build("resnet18", 10, 3, 224, 224);
    if (!m) return;
    cb_nn_model_init(m, 77);
    perturb_buffers(m, 78);
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_nn_model_save(m, path_in("c.safetensors"), &err), CB_OK);
    FILE *raw = fopen(path_in("c.raw"), "wb");
    for (int i = 0; raw && i < m->n_params; i++)
        fwrite(m->params[i].data, 1, param_bytes(&m->params[i]), raw);
    if (raw) fclose(raw);
    run_py("check");
    cb_nn_model_free(m);
}

/* ---- Corrupt files ---------------------------------------------------------------------- */

/* A file of 8-byte size (computed) + json + data. */
static const char *mkfile(const char *name, const char *json, const void *data, size_t n) {
    size_t hl = strlen(json);
    unsigned char *b = malloc(8 + hl + n + 1);
    uint64_t h = hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, json, hl);
    if (n) memcpy(b + 8 + hl, data, n);
    const char *path = path_in(name);
    write_bytes(path, b, 8 + hl + n);
    free(b);
    return path;
}

/* Opening path must fail with CB_EINVAL and a message holding the path and `want`. */
static void expect_bad_at(int line, const char *path, const char *want) {
    cb_safetensors *f = NULL;
    cb_error err = {0};
    int rc = cb_safetensors_open(path, &f, &err);
    if (rc != CB_EINVAL || f != NULL || !strstr(err.msg, path) || !strstr(err.msg, want))
        cb__test_fail(__FILE__, line, "%s: rc %d, error \"%s\", wanted one containing \"%s\"",
                      path, rc, err.msg, want);
    cb_safetensors_close(f);
}
#define expect_bad(path, want) expect_bad_at(__LINE__, path, want)

static void test_corrupt_truncated(void) {
    cb_nn_model *m = build("cnn", 2, 3, 8, 8);
    if (!m) return;
    cb_nn_model_init(m, 3);
    const char *path = path_in("whole.safetensors");
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_nn_model_save(m, path, &err), CB_OK);
    size_t len = 0;
    char *whole = cb_test_read(path, &len);
    uint64_t hl;
    memcpy(&hl, whole, 8);
    const size_t cuts[] = {0, 1, 7, 8, 9, 8 + hl / 2, 8 + hl - 1, 8 + hl, 8 + hl + 1, len - 4,
                           len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *p = path_in("cut.safetensors");
        write_bytes(p, whole, cuts[i]);
        const char *want = cuts[i] < 8 ? "too short" : cuts[i] < 8 + hl ? "runs past the end"
                           : cuts[i] == 8 + hl                          ? "run past the data buffer"
                                                                        : "data buffer";
        expect_bad(p, want);
        CB_CHECK_EQ_INT(cb_nn_model_load(m, p, 0, &err), CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, p);
    }
    /* Every other length, quickly: never a crash, always an error naming the file. */
    for (size_t cut = 0; cut < len; cut += cut < 8 + hl + 64 ? 1 : 997) {
        const char *p = path_in("cut.safetensors");
        write_bytes(p, whole, cut);
        cb_safetensors *f = NULL;
        if (cb_safetensors_open(p, &f, &err) != CB_EINVAL || !strstr(err.msg, p)) {
            cb__test_fail(__FILE__, __LINE__, "cut at %zu: %s", cut, err.msg);
            break;
        }
    }
    free(whole);
    cb_nn_model_free(m);
}

static void test_corrupt_header(void) {
    unsigned char data[16] = {0};
    const char *p;
    /* Header size larger than the file, and absurdly large. */
    p = mkfile("big.safetensors", "{}", NULL, 0);
    {
        size_t len;
        char *b = cb_test_read(p, &len);
        uint64_t h = len; /* one more than fits */
        memcpy(b, &h, 8);
        write_bytes(p, b, len);
        expect_bad(p, "header size 10 runs past the end of the file (10 bytes)");
        h = UINT64_MAX;
        memcpy(b, &h, 8);
        write_bytes(p, b, len);
        expect_bad(p, "runs past the end");
        free(b);
    }
    /* Offsets that lie. */
    p = mkfile("beyond.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
               data, 8);
    expect_bad(p, "tensor a: data_offsets [0, 16] run past the data buffer (8 bytes)");
    p = mkfile("shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
               data, 8);
    expect_bad(p, "tensor a: shape [3] of F32 needs 12 bytes, data_offsets [0, 8] hold 8");
    p = mkfile("order.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}",
               data, 8);
    expect_bad(p, "tensor a: data_offsets [8, 0] begin after they end");
    p = mkfile("overlap.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               data, 12);
    expect_bad(p, "tensor b (bytes [4, 12)) overlaps tensor a (bytes [0, 8))");
    p = mkfile("gap.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               data, 12);
    expect_bad(p, "bytes [4, 8) of the data buffer belong to no tensor (before tensor b)");
    p = mkfile("start.safetensors",
               "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data, 8);
    expect_bad(p, "bytes [0, 4) of the data buffer belong to no tensor");
    p = mkfile("tail.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               data, 8);
    expect_bad(p, "the last 4 bytes of the data buffer");
    p = mkfile("empty-tail.safetensors", "{}", data, 1);
    expect_bad(p, "the last 1 bytes");
    p = mkfile("dup.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               data, 8);
    expect_bad(p, "tensor a appears twice");
    p = mkfile("dims.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               data, 4);
    expect_bad(p, "tensor a: shape has more than 8 entries");
    p = mkfile("dtype.safetensors",
               "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad(p, "tensor a: unknown dtype \"F33\"");
    p = mkfile("overflow.safetensors",
               "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
               data, 8);
    expect_bad(p, "tensor a: shape [4294967296, 4294967296] is too large");
    p = mkfile("overflow2.safetensors",
               "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}",
               data, 8);
    expect_bad(p, "tensor a: shape [2305843009213693952] is too large");
    /* Zero-sized tensors may share an offset. */
    p = mkfile("zero.safetensors",
               "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"y\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[4,4]}}",
               data, 4);
    cb_safetensors *f = NULL;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_safetensors_open(p, &f, &err), CB_OK);
    if (f) CB_CHECK_EQ_INT(cb_safetensors_find(f, "z")->numel, 0);
    cb_safetensors_close(f);
    /* A missing file. */
    CB_CHECK_EQ_INT(cb_safetensors_open(path_in("nope.safetensors"), &f, &err), CB_ENOENT);
    CB_CHECK_CONTAINS(err.msg, "nope.safetensors");
}

static void test_corrupt_json(void) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"", "at byte 8: unexpected end of the header, expected '{'"},
        {"not json", "at byte 8: expected '{' (the header is a JSON object), got 'n'"},
        {"{\"a\" {}}", "at byte 13: expected ':', got '{'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},}",
         "at byte 62: expected a string, got '}'"},
        {"{\"a", "unterminated string"},
        {"{\"\\q\":1}", "at byte 10: invalid escape"},
        {"{\"\xff\":1}", "at byte 10: invalid UTF-8"},
        {"{\"\xc0\xaf\":1}", "invalid UTF-8"}, /* overlong '/' */
        {"{\"\xed\xa0\x80\":1}", "invalid UTF-8"}, /* encoded surrogate */
        {"{\"a\tb\":1}", "control character 0x09"},
        {"{\"\\ud800\":1}", "at byte 10: high surrogate \\uD800 not followed by a low one"},
        {"{\"\\udc00\":1}", "unpaired low surrogate"},
        {"{\"\\u00g0\":1}", "bad hex digit"},
        {"{\"\\u0000\":1}", "NUL"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", "leading zero"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "integer >= 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", "fraction"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e2],\"data_offsets\":[0,4]}}", "exponent"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
         "integer too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}", "expected an integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
         "tensor a: data_offsets needs 2 entries, got 1"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
         "tensor a: data_offsets has more than 2 entries"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "tensor a: no \"data_offsets\""},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", "tensor a: \"dtype\" given twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
         "tensor a: unknown field \"x\""},
        {"{\"a\":{}}", "tensor a: empty description"},
        {"{\"a\":[]}", "expected '{' (a tensor's description), got '['"},
        {"{\"a\":{\"dtype\":1}}", "expected a string"},
        {"{\"__metadata__\":{\"k\":1}}", "__metadata__ value of \"k\" must be a string"},
        {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", "__metadata__ key \"k\" appears twice"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", "__metadata__ appears twice"},
        {"{\"__metadata__\":[]}", "expected '{' (the metadata object)"},
        {"{} x", "at byte 11: unexpected data after the header object"},
        {"{}\x00\x00", "at byte 10: unexpected data after the header object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", "expected ',' or '}'"},
        {"[]", "expected '{'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *json = cases[i].json;
        size_t hl = strlen(json);
        if (strcmp(json, "{}") == 0) hl = 4; /* the case "{}\0\0": keep its NULs */
        unsigned char b[256];
        uint64_t h = hl;
        memcpy(b, &h, 8);
        memcpy(b + 8, json, hl);
        memset(b + 8 + hl, 0, 4);
        char label[32];
        snprintf(label, sizeof label, "json-%zu.safetensors", i);
        const char *p = path_in(label);
        write_bytes(p, b, 8 + hl + 4);
        expect_bad_at(__LINE__, p, cases[i].want);
    }
}

/* Deterministic mutations of a valid file: every header byte set to characters that matter to
 * the grammar, plus random multi-byte damage. Each parse succeeds or fails cleanly. */
static void test_corrupt_mutations(void) {
    size_t len;
    unsigned char *good = assemble(k_reader_size, K_READER_JSON, strlen(K_READER_JSON), &len);
    static const unsigned char vals[] = {0x00, '"', '{', '}', '[', ']', ',', ':', '9', '0',
                                         '\\', 0xff, 0xc3, ' ', 'u', '-'};
    unsigned char *b = malloc(len);
    long ok = 0, bad = 0, wrong = 0;
    cb_error err = {0};
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(b, good, len);
            b[pos] = vals[v];
            cb_safetensors *f = NULL;
            int rc = cb_safetensors_parse("mut", b, len, &f, &err);
            if (rc == CB_OK) ok++;
            else if (rc == CB_EINVAL && strncmp(err.msg, "mut: ", 5) == 0) bad++;
            else if (wrong++ < 3)
                cb__test_fail(__FILE__, __LINE__, "byte %zu = 0x%02x: rc %d %s", pos, vals[v], rc,
                              err.msg);
            cb_safetensors_close(f);
        }
    }
    cb_rng r;
    cb_rng_seed(&r, 99);
    for (int it = 0; it < 20000; it++) {
        memcpy(b, good, len);
        int k = 1 + (int)(cb_rng_u64(&r) % 4);
        for (int j = 0; j < k; j++) b[8 + cb_rng_u64(&r) % 337] = (unsigned char)cb_rng_u64(&r);
        size_t n = cb_rng_u64(&r) % 8 ? len : (size_t)(cb_rng_u64(&r) % len);
        cb_safetensors *f = NULL;
        int rc = cb_safetensors_parse("mut", b, n, &f, &err);
        if (rc == CB_OK) ok++;
        else if (rc == CB_EINVAL && strncmp(err.msg, "mut: ", 5) == 0) bad++;
        else if (wrong++ < 3)
            cb__test_fail(__FILE__, __LINE__, "random %d: rc %d %s", it, rc, err.msg);
        cb_safetensors_close(f);
    }
    printf("# mutations: %ld parsed, %ld refused\n", ok, bad);
    CB_CHECK_EQ_INT(wrong, 0);
    CB_CHECK_CMP_INT(bad, >, 1000);
    /* Out of memory anywhere in a parse: CB_ENOMEM, nothing leaked (ASan). */
    int nomem = 0;
    for (long n = 1; n < 100; n++) {
        cb_safetensors *f = NULL;
        cb__alloc_fail_after(n);
        int rc = cb_safetensors_parse("oom", good, len, &f, &err);
        cb__alloc_fail_after(0);
        cb_safetensors_close(f);
        if (rc == CB_OK) break;
        CB_CHECK_EQ_INT(rc, CB_ENOMEM);
        nomem++;
    }
    CB_CHECK_CMP_INT(nomem, >=, 3);
    free(b);
    free(good);
}

/* ---- Model-level errors ----------------------------------------------------------------- */

typedef enum { EDIT_NONE, EDIT_SHAPE, EDIT_DROP, EDIT_EXTRA, EDIT_DTYPE, EDIT_NBT } edit_kind;

/* Saves m's parameters through the generic writer with one edit to tensor `name`. */
static const char *save_edited(const cb_nn_model *m, const char *file, edit_kind kind,
                               const char *name, const void *alt) {
    cb_safetensors_entry *e = calloc((size_t)m->n_params + 1, sizeof *e);
    static int64_t dims[4];
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const cb_nn_param *p = &m->params[i];
        cb_safetensors_entry x = {p->name, p->dtype == CB_NN_I64 ? CB_SAFETENSORS_I64
                                                                 : CB_SAFETENSORS_F32,
                                  p->ndim, p->dims, p->data};
        if (strcmp(p->name, name) == 0) {
            if (kind == EDIT_DROP) continue;
            if (kind == EDIT_SHAPE) { /* same bytes: [o, i, k, k] as [o, i, 1, k*k], [o, i] as [i, o] */
                memcpy(dims, p->dims, sizeof dims);
                if (p->ndim == 4) {
                    dims[2] = 1;
                    dims[3] = p->dims[2] * p->dims[3];
                } else {
                    dims[0] = p->dims[1];
                    dims[1] = p->dims[0];
                }
                x.dims = dims;
            }
            if (kind == EDIT_DTYPE) x.dtype = CB_SAFETENSORS_I32;
            if (kind == EDIT_NBT) {
                x.dtype = CB_SAFETENSORS_F32;
                x.data = alt;
            }
        }
        e[n++] = x;
    }
    static const int64_t d1[1] = {1};
    if (kind == EDIT_EXTRA) e[n++] = (cb_safetensors_entry){"extra.weight", CB_SAFETENSORS_F32, 1, d1, alt};
    cb_error err = {0};
    const char *path = path_in(file);
    if (cb_safetensors_write(path, e, n, NULL, 0, &err))
        cb__test_fail(__FILE__, __LINE__, "write %s: %s", path, err.msg);
    free(e);
    return path;
}

static void test_model_errors(void) {
    cb_nn_model *m = build("resnet18", 10, 3, 32, 32), *dst = build("resnet18", 10, 3, 32, 32);
    cb_nn_model *before = build("resnet18", 10, 3, 32, 32);
    if (!m || !dst || !before) goto out;
    cb_nn_model_init(m, 1);
    cb_nn_model_init(dst, 2);
    cb_nn_model_init(before, 2);
    cb_error err = {0};
    char which[CB_NN_NAME_MAX];
    float one = 1.0f, nbt = 3.0f, half = 2.5f;

    const char *p = save_edited(m, "shape.safetensors", EDIT_SHAPE, "layer1.0.conv1.weight", NULL);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    char want[600];
    snprintf(want, sizeof want,
             "%s: tensor layer1.0.conv1.weight has shape [64, 64, 1, 9] in the file, the model "
             "expects [64, 64, 3, 3]",
             p);
    CB_CHECK_STR_EQ(err.msg, want);
    p = save_edited(m, "shape2.safetensors", EDIT_SHAPE, "fc.weight", NULL);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    snprintf(want, sizeof want,
             "%s: tensor fc.weight has shape [512, 10] in the file, the model expects [10, 512]",
             p);
    CB_CHECK_STR_EQ(err.msg, want);
    CB_CHECK(models_equal(dst, before, which, sizeof which)); /* unchanged by a failed load */

    p = save_edited(m, "drop.safetensors", EDIT_DROP, "layer3.1.bn2.running_var", NULL);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, p);
    CB_CHECK_CONTAINS(err.msg, "tensor layer3.1.bn2.running_var is missing");
    CB_CHECK(models_equal(dst, before, which, sizeof which));

    p = save_edited(m, "extra.safetensors", EDIT_EXTRA, "", &one);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, p);
    CB_CHECK_CONTAINS(err.msg, "tensor extra.weight is not a parameter of the resnet18 model");
    CB_CHECK(models_equal(dst, before, which, sizeof which));
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 1, &err), CB_OK); /* allow_extra */
    CB_CHECK(models_equal(dst, m, which, sizeof which));

    cb_nn_model_init(dst, 2);
    p = save_edited(m, "dtype.safetensors", EDIT_DTYPE, "layer2.0.downsample.0.weight", NULL);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, p);
    CB_CHECK_CONTAINS(err.msg, "tensor layer2.0.downsample.0.weight has dtype I32 in the file");

    /* num_batches_tracked as a float holding a count is accepted; 2.5 is not. */
    p = save_edited(m, "nbt.safetensors", EDIT_NBT, "bn1.num_batches_tracked", &nbt);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_OK);
    CB_CHECK_EQ_INT(*(int64_t *)cb_nn_model_param(dst, "bn1.num_batches_tracked")->data, 3);
    p = save_edited(m, "nbt2.safetensors", EDIT_NBT, "bn1.num_batches_tracked", &half);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "tensor bn1.num_batches_tracked holds 2.5 in the file");

    /* A file for another architecture. */
    cb_nn_model *cnn = build("cnn", 10, 3, 32, 32);
    if (cnn) {
        p = path_in("cnn.safetensors");
        CB_CHECK_EQ_INT(cb_nn_model_save(cnn, p, &err), CB_OK);
        CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
        CB_CHECK_CONTAINS(err.msg, "conv1.weight has shape [32, 3, 3, 3] in the file");
    }
    cb_nn_model_free(cnn);
    /* Garbage and missing files through the model API. */
    p = mkfile("garbage.safetensors", "{\"a\" 1}", NULL, 0);
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, p, 0, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, p);
    CB_CHECK_CONTAINS(err.msg, "header JSON at byte 13");
    CB_CHECK_EQ_INT(cb_nn_model_load(dst, path_in("missing.safetensors"), 0, &err), CB_ENOENT);
    CB_CHECK_EQ_INT(cb_nn_model_save(dst, "/nonexistent-dir/m.safetensors", &err), CB_EIO);
out:
    cb_nn_model_free(m);
    cb_nn_model_free(dst);
    cb_nn_model_free(before);
}

static void test_half_conversion(void) {
    /* Every F16 value through the loader against a direct definition of the format. */
    cb_nn_model *m = NULL;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_nn_model_new("custom", 65536, 1, 1, &m, &err), CB_OK);
    if (!m) return;
    int x = cb_nn_flatten(m, 0, &err);
    CB_CHECK(x >= 0 && cb_nn_linear(m, x, "fc", 1, 0, &err) >= 0);
    uint16_t *h = malloc(65536 * 2);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    static const int64_t dims[2] = {1, 65536};
    cb_safetensors_entry e = {"fc.weight", CB_SAFETENSORS_F16, 2, dims, h};
    const char *p = path_in("f16.safetensors");
    CB_CHECK_EQ_INT(cb_safetensors_write(p, &e, 1, NULL, 0, &err), CB_OK);
    CB_CHECK_EQ_INT(cb_nn_model_load(m, p, 0, &err), CB_OK);
    const float *w = m->params[0].data;
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        int s = i >> 15, ex = (i >> 10) & 31, man = i & 1023;
        double v = ex == 0    ? ldexp(man, -24)
                   : ex == 31 ? (man ? NAN : INFINITY)
                              : ldexp(1024 + man, ex - 25);
        if (s) v = -v;
        if (isnan(v) ? !isnan(w[i]) : (double)w[i] != v || (signbit(w[i]) != 0) != (s != 0)) {
            if (bad++ < 3)
                cb__test_fail(__FILE__, __LINE__, "F16 0x%04x: %g, expected %g", i, w[i], v);
        }
    }
    CB_CHECK_EQ_INT(bad, 0);
    free(h);
    cb_nn_model_free(m);
}

int main(void) {
    g_dir = cb_test_tmpdir();
    CB_RUN(test_fixed_bytes_reader);
    CB_RUN(test_fixed_bytes_writer);
    CB_RUN(test_writer_errors);
    CB_RUN(test_round_trip);
    CB_RUN(test_pytorch_to_c);
    CB_RUN(test_c_to_pytorch);
    CB_RUN(test_corrupt_truncated);
    CB_RUN(test_corrupt_header);
    CB_RUN(test_corrupt_json);
    CB_RUN(test_corrupt_mutations);
    CB_RUN(test_model_errors);
    CB_RUN(test_half_conversion);
    return cb_test_done();
}
