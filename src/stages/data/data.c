/* stages/data/data.c - the machinery the data.* stages share (see data.h): common parameters,
 * splits, the query -> batch mapping, shuffling, batch allocation, and run() over the prefetcher.
 *
 * Design: batches are numbered in the order the load generator asks for them, epoch-major, then
 * split in order, then batch: seq = epoch * per_epoch + split_first[split] + batch. The
 * prefetcher (prefetch.c) produces that sequence ahead of the queries; run() asks for the
 * query's seq and gets make(seq) whether it was ready, in the making, or has to be made now.
 * Shuffling is a keyed permutation (Feistel network + cycle walking) computed per index, so no
 * permutation table is built or shared between threads.
 *
 * Thread-safety: after cb__data_init/add_split the common fields are read-only except pf,
 * which only the instance's own thread touches. cb__data_permute/index/mix are pure.
 */
#include "stages/data/data.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stages/util/util.h"

void cb__data_init(cb_data_common *c, const cb_stage_args *args, cb_data_make_fn make,
                   void *make_state) {
    const cb_param_value *v = args->values;
    c->host = args->host;
    c->stage = args->stage;
    c->batch_size = v[CB_DATA_P_BATCH_SIZE].i;
    c->epochs = (int32_t)v[CB_DATA_P_EPOCHS].i;
    c->seed = (uint64_t)v[CB_DATA_P_SEED].i;
    c->shuffle = (int)v[CB_DATA_P_SHUFFLE].i;
    c->prefetch = (int)v[CB_DATA_P_PREFETCH].i;
    c->threads = (int)v[CB_DATA_P_WORKERS].i;
    c->make = make;
    c->make_state = make_state;
    if (args->workers > 1 && args->worker == 0 && c->prefetch > 0 && c->host->log)
        c->host->log(CB_LOG_WARN, args->stage,
                     "every stage worker prefetches the whole stream and skips the batches "
                     "other workers take: prefer workers: 1 on the stage and the `workers` "
                     "parameter for prefetch threads");
}

int cb__data_add_split(cb_data_common *c, const char *name, int64_t batches, cb_error *err) {
    if (c->n_splits >= CB_MAX_SPLITS)
        return cb_util_error(err, CB_ECONFIG, "at most %d splits", CB_MAX_SPLITS);
    size_t len = name ? strlen(name) : 0;
    if (len < 1 || len >= CB_SPLIT_NAME_MAX)
        return cb_util_error(err, CB_ECONFIG, "split name must have 1 to %d characters",
                             CB_SPLIT_NAME_MAX - 1);
    for (int32_t i = 0; i < c->n_splits; i++)
        if (strcmp(c->split[i].name, name) == 0)
            return cb_util_error(err, CB_ECONFIG, "split \"%s\" given twice", name);
    if (batches < 1 || batches > CB_DATA_MAX_BATCHES)
        return cb_util_error(err, CB_ECONFIG, "split \"%s\": %lld batches, expected 1 to %d", name,
                             (long long)batches, CB_DATA_MAX_BATCHES);
    cb_split_info *s = &c->split[c->n_splits];
    memcpy(s->name, name, len + 1);
    s->batches = batches;
    c->split_first[c->n_splits] = c->per_epoch;
    c->per_epoch += batches;
    c->n_splits++;
    return CB_OK;
}

int cb__data_splits(const cb_data_common *c, cb_splits *out) {
    out->epochs = c->epochs;
    out->n = c->n_splits;
    for (int32_t i = 0; i < c->n_splits; i++) out->split[i] = c->split[i];
    return CB_OK;
}

cb_data_key cb__data_key_of(const cb_data_common *c, int64_t seq) {
    cb_data_key k = {0, 0, 0};
    if (c->per_epoch < 1 || seq < 0) return k;
    k.epoch = seq / c->per_epoch;
    int64_t r = seq % c->per_epoch;
    int32_t s = c->n_splits - 1;
    while (s > 0 && c->split_first[s] > r) s--;
    k.split = s;
    k.batch = r - c->split_first[s];
    return k;
}

int64_t cb__data_seq_of(const cb_data_common *c, const cb_data_key *k) {
    return k->epoch * c->per_epoch + c->split_first[k->split] + k->batch;
}

static int cb__data_make_seq(void *ctx, int64_t seq, cb_buffer **out, cb_error *err) {
    cb_data_common *c = ctx;
    cb_data_key k = cb__data_key_of(c, seq);
    return c->make(c->make_state, &k, out, err);
}

int cb__data_start(cb_data_common *c, cb_error *err) {
    if (c->pf || c->prefetch < 1 || c->per_epoch < 1) return CB_OK;
    cb_prefetch_opts o = {
        .host = c->host,
        .name = c->stage,
        .depth = c->prefetch,
        .threads = c->threads,
        .planned = (int64_t)c->epochs * c->per_epoch,
        .make = cb__data_make_seq,
        .ctx = c,
    };
    return cb__prefetch_create(&o, &c->pf, err);
}

void cb__data_stop(cb_data_common *c) {
    cb__prefetch_destroy(c->pf);
    c->pf = NULL;
}

int cb__data_run(cb_data_common *c, cb_query *q, cb_error *err) {
    if (q->split < 0 || q->split >= c->n_splits)
        return cb_util_error(err, CB_EINVAL,
                             "query split %d, but this stage has %d split(s): is the pipeline's "
                             "dataset_stage_id another stage?",
                             (int)q->split, (int)c->n_splits);
    if (q->epoch < 0 || q->batch < 0)
        return cb_util_error(err, CB_EINVAL, "query epoch %d / batch %lld out of range",
                             (int)q->epoch, (long long)q->batch);
    int64_t nb = c->split[q->split].batches;
    if (q->batch / nb > (int64_t)INT32_MAX - q->epoch)
        return cb_util_error(err, CB_EINVAL, "query batch %lld is too far past the split's end",
                             (long long)q->batch);
    cb_data_key k = {q->split, (int64_t)q->epoch + q->batch / nb, q->batch % nb};
    cb_buffer *b = NULL;
    int rc;
    if (!c->pf && c->prefetch > 0 && (rc = cb__data_start(c, err)) != CB_OK) return rc;
    if (c->pf)
        rc = cb__prefetch_get(c->pf, cb__data_seq_of(c, &k), &b, err);
    else
        rc = c->make(c->make_state, &k, &b, err);
    if (rc != CB_OK) {
        c->host->buffer_unref(b);
        return rc;
    }
    c->host->buffer_unref(q->payload);
    q->payload = b;
    return CB_OK;
}

/* splitmix64's finaliser: a bijection of 64-bit values with full avalanche. */
static uint64_t cb__data_fmix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t cb__data_mix(uint64_t a, uint64_t b) {
    /* Both inputs go through the finaliser before they meet, so small related pairs such as
     * (0, i + 65) and (1, i) cannot cancel; for a fixed a the map is a bijection of b. */
    return cb__data_fmix(cb__data_fmix(a + 0x9e3779b97f4a7c15ULL) ^
                         cb__data_fmix(b + 0x632be59bd9b4e019ULL) * 0xd6e8feb86659fd93ULL);
}

uint64_t cb__data_permute(uint64_t key, uint64_t n, uint64_t i) {
    if (n <= 1) return 0;
    i %= n;
    unsigned bits = 2;
    while (bits < 64 && (UINT64_C(1) << bits) < n) bits += 2;
    unsigned half = bits / 2;
    uint64_t mask = (UINT64_C(1) << half) - 1;
    uint64_t k[4];
    for (int r = 0; r < 4; r++) k[r] = cb__data_mix(key, (uint64_t)r + 1);
    uint64_t x = i;
    do { /* expected < 4 rounds of walking: 2^bits < 4n */
        uint64_t l = x >> half, rr = x & mask;
        for (int r = 0; r < 4; r++) {
            uint64_t f = cb__data_mix(k[r], rr) & mask;
            uint64_t t = rr;
            rr = l ^ f;
            l = t;
        }
        x = (l << half) | rr;
    } while (x >= n);
    return x;
}

uint64_t cb__data_index(const cb_data_common *c, const cb_data_key *k, uint64_t pos, uint64_t n) {
    if (n == 0) return 0;
    pos %= n;
    if (!c->shuffle) return pos;
    uint64_t key = cb__data_mix(cb__data_mix(c->seed, 0x5348554646ULL /* "SHUFF" */),
                                cb__data_mix((uint64_t)k->epoch, (uint64_t)k->split));
    return cb__data_permute(key, n, pos);
}

cb_buffer *cb__data_batch_new(const cb_data_common *c, const cb_data_key *k, cb_batch_layout layout,
                              uint32_t n, uint64_t data_bytes, uint32_t classes, cb_error *err) {
    size_t bytes = cb_image_batch_bytes(n, data_bytes);
    cb_buffer *buf = bytes ? c->host->buffer_new(bytes) : NULL;
    if (!buf) {
        cb_util_error(err, CB_ENOMEM, "cannot allocate a batch of %u images (%llu bytes)", n,
                      (unsigned long long)data_bytes);
        return NULL;
    }
    cb_image_batch *b = cb_image_batch_init(buf, layout, n, data_bytes);
    b->classes = classes;
    b->split = k->split;
    b->epoch = k->epoch;
    b->batch = k->batch;
    snprintf(b->split_name, sizeof b->split_name, "%s", c->split[k->split].name);
    return buf;
}

/* ---- files ---------------------------------------------------------------------------- */

int cb__data_grow(const cb_host *host, void **p, size_t *cap, size_t need, size_t elem,
                  size_t max) {
    if (need <= *cap) return CB_OK;
    if (need > max) return CB_ENOMEM;
    size_t n = *cap ? *cap : 16;
    while (n < need) n = n > max / 2 ? max : n * 2;
    void *q = host->alloc(n * elem);
    if (!q) return CB_ENOMEM;
    if (*p) memcpy(q, *p, *cap * elem);
    host->free(*p);
    *p = q;
    *cap = n;
    return CB_OK;
}

static int cb__data_name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void cb__data_dir_free(const cb_host *host, cb_data_dir *d) {
    host->free(d->names);
    host->free(d->is_dir);
    host->free(d->blob);
    memset(d, 0, sizeof *d);
}

int cb__data_list_dir(const cb_host *host, const char *dir, cb_data_dir *out, cb_error *err) {
    memset(out, 0, sizeof *out);
    DIR *dp = opendir(dir);
    if (!dp)
        return cb_util_error(err, CB_EIO, "cannot read directory '%s': %s", dir, strerror(errno));
    /* The blob holds, per entry, one type byte ('d' or 'f') and the NUL-terminated name; offs
     * is where each entry starts (the blob moves while it grows). */
    size_t *offs = NULL, offs_cap = 0, blob_len = 0, blob_cap = 0, n = 0;
    int rc = CB_OK;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dp);
        if (!e) {
            if (errno)
                rc = cb_util_error(err, CB_EIO, "cannot read directory '%s': %s", dir,
                                   strerror(errno));
            break;
        }
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(e->d_name) + 1;
        struct stat st;
        int is_dir = fstatat(dirfd(dp), e->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode);
        if (cb__data_grow(host, (void **)&offs, &offs_cap, n + 1, sizeof *offs,
                          CB_DATA_MAX_DIR_ENTRIES) ||
            cb__data_grow(host, (void **)&out->blob, &blob_cap, blob_len + 1 + len, 1,
                          (size_t)1 << 30)) {
            rc = cb_util_error(err, CB_ENOMEM, "directory '%s': too many entries or out of memory",
                               dir);
            break;
        }
        out->blob[blob_len] = is_dir ? 'd' : 'f';
        memcpy(out->blob + blob_len + 1, e->d_name, len);
        offs[n++] = blob_len;
        blob_len += 1 + len;
    }
    closedir(dp);
    if (rc == CB_OK && n > 0) {
        out->names = host->alloc(n * sizeof *out->names);
        out->is_dir = host->alloc(n);
        if (!out->names || !out->is_dir) rc = cb_util_error(err, CB_ENOMEM, "out of memory");
    }
    if (rc == CB_OK && n > 0) {
        for (size_t i = 0; i < n; i++) out->names[i] = out->blob + offs[i] + 1;
        qsort(out->names, n, sizeof *out->names, cb__data_name_cmp);
        for (size_t i = 0; i < n; i++) out->is_dir[i] = out->names[i][-1] == 'd';
        out->n = n;
    }
    host->free(offs);
    if (rc != CB_OK) cb__data_dir_free(host, out);
    return rc;
}

int cb__data_read_file(const char *path, void *buf, size_t size, cb_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cb_util_error(err, CB_EIO, "cannot open '%s': %s", path, strerror(errno));
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, (char *)buf + got,
                         size - got > ((size_t)1 << 30) ? (size_t)1 << 30 : size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            close(fd);
            if (r == 0)
                return cb_util_error(err, CB_EIO,
                                     "'%s': file ended after %zu of %zu bytes (changed "
                                     "while reading?)",
                                     path, got, size);
            return cb_util_error(err, CB_EIO, "cannot read '%s': %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    return CB_OK;
}
