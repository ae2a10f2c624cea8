/* nn/weights.c - a model's parameters to and from safetensors files (cb_nn_model_load/_save).
 *
 * Load is two passes so that a failed load leaves the model unchanged: first every parameter
 * of the model is looked up in the file and checked (present, same shape, a dtype we convert),
 * and the file is checked for tensors the model does not have; only then is anything copied.
 * Floats are read from F32 (copied), F16, BF16 or F64 (converted); num_batches_tracked from
 * I64 (PyTorch), I32 or any float type holding a whole number >= 0. Save writes F32 and I64,
 * the dtypes PyTorch's state dict has, with metadata {"format": "pt", "arch": m->arch}.
 *
 * Errors start with the file's path and name the tensor. Thread-safety: as the model.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "nn/nn.h"
#include "nn/safetensors.h"

static void cb__shape_str(char *buf, size_t size, int ndim, const int64_t *dims) {
    size_t k = 0;
    buf[k++] = '[';
    buf[k] = '\0';
    for (int d = 0; d < ndim && k + 24 < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)dims[d]);
    snprintf(buf + k, size - k, "]");
}

/* IEEE half to float, exact (subnormals, infinities and NaN included). */
static float cb__half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0 && man == 0) {
        bits = sign;
    } else if (exp == 0) {
        int e = -1; /* subnormal: normalise the mantissa */
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FFu) << 13);
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static double cb__read_float(const unsigned char *p, cb_safetensors_dtype dt) {
    if (dt == CB_SAFETENSORS_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (dt == CB_SAFETENSORS_F64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    if (dt == CB_SAFETENSORS_F16) return cb__half_to_float(h);
    uint32_t bits = (uint32_t)h << 16; /* BF16: the top half of a float */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int cb__is_float(cb_safetensors_dtype dt) {
    return dt == CB_SAFETENSORS_F32 || dt == CB_SAFETENSORS_F16 || dt == CB_SAFETENSORS_BF16 ||
           dt == CB_SAFETENSORS_F64;
}

/* Pass 1 for one parameter: the file's tensor, or an error. */
static int cb__match(const cb_safetensors *f, const cb_nn_model *m, const cb_nn_param *p,
                     const char *path, const cb_safetensors_tensor **out, cb_error *err) {
    const cb_safetensors_tensor *t = cb_safetensors_find(f, p->name);
    if (!t)
        return cb_error_set(err, CB_EINVAL,
                            "%s: tensor %s is missing (the %s model has %d tensors, the file %d)",
                            path, p->name, m->arch, m->n_params, cb_safetensors_count(f));
    int same = t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->dims[d] == p->dims[d];
    if (!same) {
        char fs[128], ms[128];
        cb__shape_str(fs, sizeof fs, t->ndim, t->dims);
        cb__shape_str(ms, sizeof ms, p->ndim, p->dims);
        return cb_error_set(err, CB_EINVAL,
                            "%s: tensor %s has shape %s in the file, the model expects %s", path,
                            p->name, fs, ms);
    }
    const char *dt = cb_safetensors_dtype_name(t->dtype);
    if (p->dtype == CB_NN_F32 && !cb__is_float(t->dtype))
        return cb_error_set(err, CB_EINVAL,
                            "%s: tensor %s has dtype %s in the file, the model expects floats "
                            "(F32, F16, BF16 or F64)",
                            path, p->name, dt);
    if (p->dtype == CB_NN_I64) {
        if (t->dtype == CB_SAFETENSORS_I64 || t->dtype == CB_SAFETENSORS_I32) {
            /* any value: checked below for >= 0 */
        } else if (!cb__is_float(t->dtype)) {
            return cb_error_set(err, CB_EINVAL,
                                "%s: tensor %s has dtype %s in the file, the model expects an "
                                "integer (I64, I32, or a float holding one)",
                                path, p->name, dt);
        }
        const unsigned char *b = t->data;
        for (int64_t i = 0; i < t->numel; i++) {
            double v;
            if (t->dtype == CB_SAFETENSORS_I64) {
                int64_t x;
                memcpy(&x, b + 8 * i, 8);
                if (x < 0)
                    return cb_error_set(err, CB_EINVAL, "%s: tensor %s holds %lld in the file, "
                                                        "expected a count >= 0",
                                        path, p->name, (long long)x);
                continue;
            } else if (t->dtype == CB_SAFETENSORS_I32) {
                int32_t x;
                memcpy(&x, b + 4 * i, 4);
                v = x;
            } else {
                v = cb__read_float(b + i * (int64_t)cb_safetensors_dtype_size(t->dtype),
                                   t->dtype);
            }
            if (!(v >= 0 && v <= 9.2e18 && v == floor(v)))
                return cb_error_set(err, CB_EINVAL,
                                    "%s: tensor %s holds %g in the file, expected a count >= 0",
                                    path, p->name, v);
        }
    }
    *out = t;
    return CB_OK;
}

/* Pass 2 for one parameter: copy/convert t into p (shapes and values already checked). */
static void cb__copy(cb_nn_param *p, const cb_safetensors_tensor *t) {
    const unsigned char *b = t->data;
    size_t esz = cb_safetensors_dtype_size(t->dtype);
    if (p->dtype == CB_NN_F32 && t->dtype == CB_SAFETENSORS_F32) {
        memcpy(p->data, b, t->bytes);
    } else if (p->dtype == CB_NN_F32) {
        float *d = p->data;
        for (int64_t i = 0; i < t->numel; i++) d[i] = (float)cb__read_float(b + i * esz, t->dtype);
    } else if (t->dtype == CB_SAFETENSORS_I64) {
        memcpy(p->data, b, t->bytes);
    } else {
        int64_t *d = p->data;
        for (int64_t i = 0; i < t->numel; i++) {
            if (t->dtype == CB_SAFETENSORS_I32) {
                int32_t x;
                memcpy(&x, b + 4 * i, 4);
                d[i] = x;
            } else {
                d[i] = (int64_t)cb__read_float(b + i * esz, t->dtype);
            }
        }
    }
}

int cb_nn_model_load(cb_nn_model *m, const char *path, int allow_extra, cb_error *err) {
    cb_safetensors *f;
    int rc = cb_safetensors_open(path, &f, err);
    if (rc) return rc;
    const cb_safetensors_tensor **match = cb_calloc((size_t)(m->n_params ? m->n_params : 1),
                                                     sizeof *match);
    if (!match) {
        cb_safetensors_close(f);
        return cb_error_set(err, CB_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < m->n_params && !rc; i++) {
        rc = cb__match(f, m, &m->params[i], path, &match[i], err);
    }
    /* Names in the file are unique and every model name was found: any more are extra. */
    if (!rc && !allow_extra && cb_safetensors_count(f) > m->n_params) {
        const char *extra = "?";
        for (int i = 0; i < cb_safetensors_count(f); i++) {
            const char *name = cb_safetensors_at(f, i)->name;
            if (!cb_nn_model_param(m, name)) {
                extra = name;
                break;
            }
        }
        rc = cb_error_set(err, CB_EINVAL,
                          "%s: tensor %s is not a parameter of the %s model (%d tensors in the "
                          "file are not)",
                          path, extra, m->arch, cb_safetensors_count(f) - m->n_params);
    }
    if (!rc)
        for (int i = 0; i < m->n_params; i++) cb__copy(&m->params[i], match[i]);
    cb_free(match);
    cb_safetensors_close(f);
    return rc;
}

int cb_nn_model_save(const cb_nn_model *m, const char *path, cb_error *err) {
    cb_safetensors_entry *e = cb_calloc((size_t)(m->n_params ? m->n_params : 1), sizeof *e);
    if (!e) return cb_error_set(err, CB_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < m->n_params; i++) {
        const cb_nn_param *p = &m->params[i];
        e[i].name = p->name;
        e[i].dtype = p->dtype == CB_NN_I64 ? CB_SAFETENSORS_I64 : CB_SAFETENSORS_F32;
        e[i].ndim = p->ndim;
        e[i].dims = p->dims;
        e[i].data = p->data;
    }
    const cb_safetensors_kv meta[2] = {{"format", "pt"}, {"arch", m->arch}};
    int rc = cb_safetensors_write(path, e, m->n_params, meta, 2, err);
    cb_free(e);
    return rc;
}
