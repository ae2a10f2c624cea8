/* nn/safetensors.h - reading and writing safetensors files (huggingface/safetensors, the
 * published format), with no dependency on the rest of colobench but the allocator and cb_error.
 *
 * The format: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
 *     {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...,
 *      "__metadata__": {"key": "value", ...}}        (metadata optional, string values)
 * possibly padded with trailing spaces, then the data buffer. Offsets are relative to the
 * buffer; tensors are little-endian, row-major, END - BEGIN = prod(shape) * dtype size, and the
 * tensors' byte ranges are contiguous and cover the whole buffer (no gap, no overlap, nothing
 * after the last one).
 *
 * Reader: cb_safetensors_open reads the whole file and validates all of the above before it
 * returns; a tensor's data then points into the file's buffer (little-endian bytes, NOT
 * necessarily aligned for its type: copy with memcpy). Every error is CB_EINVAL (CB_EIO for
 * I/O, CB_ENOMEM) with a message that starts with the file's path and names the tensor, or the
 * byte offset in the file for malformed JSON. The header JSON is parsed strictly: exactly the
 * grammar above (tensor objects hold exactly dtype, shape and data_offsets; metadata values are
 * strings), UTF-8 validated, escapes including \uXXXX surrogate pairs decoded, no duplicate
 * names, at most CB_SAFETENSORS_MAX_DIMS dims, header at most CB_SAFETENSORS_HEADER_MAX bytes.
 *
 * Writer: cb_safetensors_write writes tensors in the order given, offsets contiguous from 0,
 * the header compact JSON (metadata first) padded with spaces to a multiple of 8 bytes, to
 * PATH.tmp which is fsync'd and renamed over PATH, so readers see the old file or the new one.
 *
 * Thread-safety: an open file is immutable; any number of threads may read it. Ownership: the
 * cb_safetensors owns every name, value and data pointer it hands out; they live until
 * cb_safetensors_close. On error nothing is returned and nothing leaks.
 */
#ifndef CB_NN_SAFETENSORS_H
#define CB_NN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

#define CB_SAFETENSORS_MAX_DIMS 8
#define CB_SAFETENSORS_HEADER_MAX 100000000u /* bytes, as huggingface/safetensors */

typedef enum cb_safetensors_dtype {
    CB_SAFETENSORS_BOOL = 0,
    CB_SAFETENSORS_U8,
    CB_SAFETENSORS_I8,
    CB_SAFETENSORS_F8_E5M2,
    CB_SAFETENSORS_F8_E4M3,
    CB_SAFETENSORS_I16,
    CB_SAFETENSORS_U16,
    CB_SAFETENSORS_F16,
    CB_SAFETENSORS_BF16,
    CB_SAFETENSORS_I32,
    CB_SAFETENSORS_U32,
    CB_SAFETENSORS_F32,
    CB_SAFETENSORS_F64,
    CB_SAFETENSORS_I64,
    CB_SAFETENSORS_U64,
    CB_SAFETENSORS_N_DTYPES
} cb_safetensors_dtype;

/* The format's name ("F32") and the size of one element in bytes; NULL / 0 out of range. */
const char *cb_safetensors_dtype_name(cb_safetensors_dtype dt);
size_t cb_safetensors_dtype_size(cb_safetensors_dtype dt);

/* ---- Reader ------------------------------------------------------------------------------ */

typedef struct cb_safetensors_tensor {
    const char *name;              /* UTF-8, NUL-terminated (names with NUL are refused) */
    cb_safetensors_dtype dtype;
    int ndim;                      /* 0 (scalar) .. CB_SAFETENSORS_MAX_DIMS */
    int64_t dims[CB_SAFETENSORS_MAX_DIMS];
    int64_t numel;                 /* product of dims (1 for a scalar) */
    const void *data;              /* little-endian, row-major, maybe unaligned */
    size_t bytes;                  /* numel * dtype size */
    size_t offset;                 /* BEGIN, relative to the data buffer */
} cb_safetensors_tensor;

typedef struct cb_safetensors_kv {
    const char *key, *value;
} cb_safetensors_kv;

typedef struct cb_safetensors cb_safetensors;

/* Reads and validates the file at path. */
int cb_safetensors_open(const char *path, cb_safetensors **out, cb_error *err);
/* The same for a file's bytes already in memory (copied); label names it in errors. */
int cb_safetensors_parse(const char *label, const void *bytes, size_t len, cb_safetensors **out,
                         cb_error *err);
void cb_safetensors_close(cb_safetensors *f);             /* NULL is a no-op */

const char *cb_safetensors_path(const cb_safetensors *f); /* the path or label */
int cb_safetensors_count(const cb_safetensors *f);        /* tensors, in header order */
const cb_safetensors_tensor *cb_safetensors_at(const cb_safetensors *f, int i);
/* By name (binary search); NULL when absent. */
const cb_safetensors_tensor *cb_safetensors_find(const cb_safetensors *f, const char *name);
int cb_safetensors_metadata_count(const cb_safetensors *f);
const cb_safetensors_kv *cb_safetensors_metadata_at(const cb_safetensors *f, int i);
const char *cb_safetensors_metadata(const cb_safetensors *f, const char *key); /* NULL: absent */

/* ---- Writer ------------------------------------------------------------------------------ */

typedef struct cb_safetensors_entry {
    const char *name;              /* UTF-8; unique; not "__metadata__" */
    cb_safetensors_dtype dtype;
    int ndim;
    const int64_t *dims;           /* ndim sizes >= 0 (may be NULL when ndim is 0) */
    const void *data;              /* prod(dims) * dtype size bytes, little-endian (the host's
                                      layout: colobench builds for little-endian hosts only) */
} cb_safetensors_entry;

/* Writes n tensors (in this order) and n_meta metadata pairs (none when 0) to path
 * atomically. Borrowed pointers are read during the call only. */
int cb_safetensors_write(const char *path, const cb_safetensors_entry *tensors, int n,
                         const cb_safetensors_kv *meta, int n_meta, cb_error *err);

#endif
