/* tests/fuzz/fuzz_safetensors.c - libFuzzer target for the safetensors reader and model load.
 *
 * What: parses arbitrary bytes with cb_safetensors_parse. A rejected input must carry
 * CB_EINVAL with a message that starts with the label (the header's contract). An accepted one
 * is walked completely and checked against the input itself: every tensor's name, dtype, shape,
 * numel and byte count agree, its data bytes are the input's bytes at 8 + N + offset (reading
 * them all, so ASan sees any pointer outside the buffer), cb_safetensors_find returns the same
 * tensor, the byte counts add up to the data buffer, and every metadata pair is found by key.
 * It is then loaded, with allow_extra 0 and 1, into three models: "mlp" for 10 classes of
 * [1, 4, 4] as the rest of colobench builds it (no input under -max_len holds its ~570 KB of
 * weights, so this exercises the checks that reject a file), and the tiny model of
 * fuzz_tiny_model.h with 4 features, which small files load completely (two seeds do), and with
 * 2 (the same names, other shapes). A successful load must copy exactly the file's F32 and I64
 * values, a failed one must leave the model unchanged (weights.c's two-pass contract).
 *
 * cb_nn_model_load takes a path only: an accepted input is written to one memfd (created once)
 * and loaded through /proc/self/fd/N, so nothing touches the disk; inputs the parser rejects,
 * most of them, never get there. Any crash, sanitizer report or trap is a bug.
 *
 * Design: models and memfd are static, created on the first call (a fuzz target is a process of
 * its own); libFuzzer calls the target from one thread. Ownership: every parsed file is closed
 * before returning; the models live until exit.
 *
 * Build and run: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCB_FUZZ=ON &&
 *   cmake --build build-fuzz --target fuzz_safetensors && ./build-fuzz/fuzz_safetensors
 *   -dict=tests/fuzz/safetensors.dict tests/fuzz/corpus_safetensors
 * The seeds come from gen_corpus_safetensors.c (target fuzz_safetensors_corpus).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_tiny_model.h"
#include "nn/nn.h"
#include "nn/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__ubsan_default_options(void);

/* The library is built with recoverable UBSan checks (CB_FUZZ in CMakeLists.txt), which only
 * print: make undefined behaviour end the run so that libFuzzer reports and saves the input. */
const char *__ubsan_default_options(void) { return "halt_on_error=1:print_stacktrace=1"; }

#define FUZZ_LABEL "fuzz.safetensors"

#define FUZZ_CHECK(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz_safetensors: check failed at line %d: %s\n", __LINE__,     \
                    #cond);                                                                    \
            __builtin_trap();                                                                  \
        }                                                                                      \
    } while (0)

typedef struct fuzz_state {
    int ready;
    cb_nn_model *mlp, *tiny, *tiny2;
    int memfd;                         /* -1: loads are skipped */
    char path[64];                     /* /proc/self/fd/N */
    void *snapshot[16];                /* the tiny model's parameters before a load */
} fuzz_state;

static fuzz_state *fuzz_setup(void) {
    static fuzz_state st;
    if (st.ready) return &st;
    cb_error err;
    cb_error_clear(&err);
    if (cb_nn_model_build("mlp", 10, 1, 4, 4, &st.mlp, &err) ||
        fuzz_tiny_model(4, &st.tiny, &err) || fuzz_tiny_model(2, &st.tiny2, &err)) {
        fprintf(stderr, "fuzz_safetensors: model: %s\n", err.msg);
        abort();
    }
    /* Snapshots sized for the larger tiny model (same parameters, bigger or equal shapes). */
    FUZZ_CHECK(st.tiny->n_params <= (int)(sizeof st.snapshot / sizeof st.snapshot[0]));
    FUZZ_CHECK(st.tiny2->n_params == st.tiny->n_params);
    for (int i = 0; i < st.tiny->n_params; i++) {
        const cb_nn_param *p = &st.tiny->params[i];
        FUZZ_CHECK(st.tiny2->params[i].numel <= p->numel);
        st.snapshot[i] = malloc((size_t)p->numel * 8);
        FUZZ_CHECK(st.snapshot[i] != NULL);
    }
    st.memfd = memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    if (st.memfd >= 0) {
        snprintf(st.path, sizeof st.path, "/proc/self/fd/%d", st.memfd);
        if (access(st.path, R_OK) != 0) { /* no /proc: parse only */
            close(st.memfd);
            st.memfd = -1;
        }
    }
    if (st.memfd < 0) fprintf(stderr, "fuzz_safetensors: no memfd, model loads skipped\n");
    st.ready = 1;
    return &st;
}

static size_t param_bytes(const cb_nn_param *p) {
    return (size_t)p->numel * (p->dtype == CB_NN_I64 ? 8 : 4);
}

/* Walks an accepted file and checks it against the input bytes. */
static void walk(const cb_safetensors *f, const uint8_t *data, size_t size) {
    uint64_t hlen;
    FUZZ_CHECK(size >= 8);
    memcpy(&hlen, data, 8);
    FUZZ_CHECK(hlen <= size - 8);
    const uint8_t *buffer = data + 8 + hlen;
    size_t buffer_len = size - 8 - (size_t)hlen;
    FUZZ_CHECK(strcmp(cb_safetensors_path(f), FUZZ_LABEL) == 0);

    int n = cb_safetensors_count(f);
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK(cb_safetensors_at(f, -1) == NULL && cb_safetensors_at(f, n) == NULL);
    size_t total = 0;
    unsigned sum = 0;
    for (int i = 0; i < n; i++) {
        const cb_safetensors_tensor *t = cb_safetensors_at(f, i);
        FUZZ_CHECK(t && t->name);
        size_t name_len = strlen(t->name);
        FUZZ_CHECK(name_len < hlen && strcmp(t->name, "__metadata__") != 0);
        const char *dt = cb_safetensors_dtype_name(t->dtype);
        size_t esz = cb_safetensors_dtype_size(t->dtype);
        FUZZ_CHECK(dt != NULL && esz > 0);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= CB_SAFETENSORS_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_CHECK(t->dims[d] >= 0);
            FUZZ_CHECK(!__builtin_mul_overflow(numel, (uint64_t)t->dims[d], &numel));
        }
        FUZZ_CHECK(numel == (uint64_t)t->numel);
        FUZZ_CHECK(numel * esz == t->bytes);
        FUZZ_CHECK(t->offset <= buffer_len && t->bytes <= buffer_len - t->offset);
        /* Touch every byte (ASan checks the pointer), then compare with the input. */
        const unsigned char *b = t->data;
        for (size_t k = 0; k < t->bytes; k++) sum += b[k];
        FUZZ_CHECK(t->bytes == 0 || memcmp(b, buffer + t->offset, t->bytes) == 0);
        FUZZ_CHECK(cb_safetensors_find(f, t->name) == t);
        total += t->bytes;
    }
    FUZZ_CHECK(total == buffer_len); /* contiguous, no gap, no overlap, nothing after */
    FUZZ_CHECK(cb_safetensors_find(f, "__metadata__") == NULL);

    int n_meta = cb_safetensors_metadata_count(f);
    FUZZ_CHECK(n_meta >= 0);
    FUZZ_CHECK(cb_safetensors_metadata_at(f, n_meta) == NULL);
    for (int i = 0; i < n_meta; i++) {
        const cb_safetensors_kv *kv = cb_safetensors_metadata_at(f, i);
        FUZZ_CHECK(kv && kv->key && kv->value);
        sum += (unsigned)strlen(kv->key) + (unsigned)strlen(kv->value);
        FUZZ_CHECK(cb_safetensors_metadata(f, kv->key) == kv->value); /* keys are unique */
    }
    volatile unsigned sink = sum;
    (void)sink;
}

/* Loads the input (already in the memfd) into m; checks what a load must and must not change. */
static void load(fuzz_state *st, cb_nn_model *m, const cb_safetensors *f, int snapshot) {
    int ok[2];
    for (int allow_extra = 0; allow_extra < 2; allow_extra++) {
        if (snapshot)
            for (int i = 0; i < m->n_params; i++)
                memcpy(st->snapshot[i], m->params[i].data, param_bytes(&m->params[i]));
        cb_error err;
        cb_error_clear(&err);
        int rc = cb_nn_model_load(m, st->path, allow_extra, &err);
        ok[allow_extra] = rc == 0;
        if (rc) {
            /* The file parsed from the same bytes: only its tensors can be refused. */
            FUZZ_CHECK(rc == CB_EINVAL || rc == CB_ENOMEM);
            FUZZ_CHECK(strncmp(err.msg, st->path, strlen(st->path)) == 0);
            if (snapshot)
                for (int i = 0; i < m->n_params; i++)
                    FUZZ_CHECK(memcmp(st->snapshot[i], m->params[i].data,
                                      param_bytes(&m->params[i])) == 0);
            continue;
        }
        for (int i = 0; i < m->n_params; i++) {
            const cb_nn_param *p = &m->params[i];
            const cb_safetensors_tensor *t = cb_safetensors_find(f, p->name);
            FUZZ_CHECK(t != NULL && t->numel == p->numel);
            if ((p->dtype == CB_NN_F32 && t->dtype == CB_SAFETENSORS_F32) ||
                (p->dtype == CB_NN_I64 && t->dtype == CB_SAFETENSORS_I64))
                FUZZ_CHECK(memcmp(p->data, t->data, t->bytes) == 0);
            if (p->dtype == CB_NN_I64)
                for (int64_t k = 0; k < p->numel; k++) FUZZ_CHECK(((int64_t *)p->data)[k] >= 0);
        }
        if (!allow_extra) FUZZ_CHECK(cb_safetensors_count(f) == m->n_params);
    }
    FUZZ_CHECK(!ok[0] || ok[1]); /* what loads strictly loads with extras allowed */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_state *st = fuzz_setup();
    cb_safetensors *f = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_safetensors_parse(FUZZ_LABEL, data, size, &f, &err);
    if (rc) {
        FUZZ_CHECK(f == NULL);
        FUZZ_CHECK(rc == CB_EINVAL || rc == CB_ENOMEM);
        FUZZ_CHECK(strncmp(err.msg, FUZZ_LABEL ": ", strlen(FUZZ_LABEL) + 2) == 0);
        return 0;
    }
    FUZZ_CHECK(f != NULL);
    walk(f, data, size);
    if (st->memfd >= 0 && ftruncate(st->memfd, 0) == 0) {
        size_t done = 0;
        while (done < size) {
            ssize_t k = pwrite(st->memfd, data + done, size - done, (off_t)done);
            if (k <= 0) break;
            done += (size_t)k;
        }
        if (done == size) {
            load(st, st->mlp, f, 0);
            load(st, st->tiny, f, 1);
            load(st, st->tiny2, f, 1);
        }
    }
    cb_safetensors_close(f);
    return 0;
}
