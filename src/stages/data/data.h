/* stages/data/data.h - what the data.* dataset stages share: the common parameters, splits and
 * their reporting, the query -> batch mapping, deterministic shuffling, and run() with optional
 * prefetching (prefetch.h).
 *
 * A data stage embeds a cb_data_common in its state, lists its splits with cb__data_add_split
 * at create (the runtime asks for them right after create), and supplies make(): a thread-safe
 * function that builds the image batch for one (split, epoch, batch) from immutable state.
 * Everything random in a batch derives from (seed, split, epoch, batch) through cb__data_mix
 * and cb__data_index, so a batch is the same whichever thread, worker or run makes it.
 *
 * Thread-safety: the cb_data_common is the instance's; make() runs in producer threads and in
 * run() concurrently, so it may only read state that is fixed after prepare. Ownership: see
 * prefetch.h; cb__data_stop joins the producers and must run before the state goes away.
 */
#ifndef CB_STAGES_DATA_DATA_H
#define CB_STAGES_DATA_DATA_H

#include <stdint.h>

#include "colobench/stage.h"
#include "stages/data/prefetch.h"
#include "stages/vision/batch.h"

/* Indices of the common parameters: every data.* table starts with these, in this order. */
enum {
    CB_DATA_P_BATCH_SIZE,
    CB_DATA_P_EPOCHS,
    CB_DATA_P_SEED,
    CB_DATA_P_SHUFFLE,
    CB_DATA_P_PREFETCH,
    CB_DATA_P_WORKERS,
    CB_DATA_P_COUNT
};

#define CB_DATA_MAX_BATCH 65536
#define CB_DATA_MAX_BATCHES 100000000 /* per split and epoch: keeps sequence numbers in int64 */
#define CB_DATA_MAX_EPOCHS 1000000

#define CB_DATA_COMMON_PARAMS                                                                      \
    [CB_DATA_P_BATCH_SIZE] = {"batch_size", CB_PARAM_INT, "32", 1, CB_DATA_MAX_BATCH, NULL,        \
                              "images per batch"},                                                 \
    [CB_DATA_P_EPOCHS] = {"epochs", CB_PARAM_INT, "1", 1, CB_DATA_MAX_EPOCHS, NULL,                \
                          "passes over every split"},                                              \
    [CB_DATA_P_SEED] = {"seed", CB_PARAM_INT, "0", 0, 9.2e18, NULL,                                \
                        "dataset seed (shuffle, generated images); the same for every worker"},    \
    [CB_DATA_P_SHUFFLE] = {"shuffle", CB_PARAM_BOOL, "true", CB_PARAM_UNBOUNDED, NULL,             \
                           "reshuffle each split every epoch, seeded by (seed, epoch, split)"},    \
    [CB_DATA_P_PREFETCH] = {"prefetch", CB_PARAM_INT, "2", 0, 1024, NULL,                          \
                            "batches made ahead by background threads (0 = make in run)"},         \
    [CB_DATA_P_WORKERS] = {"workers", CB_PARAM_INT, "1", 1, 64, NULL,                              \
                           "prefetch threads per stage instance"}

/* Where a batch comes from. */
typedef struct cb_data_key {
    int32_t split;
    int64_t epoch;
    int64_t batch; /* in [0, batches of the split) */
} cb_data_key;

/* Builds the batch for key (one new reference in *out). Thread-safe. */
typedef int (*cb_data_make_fn)(void *stage_state, const cb_data_key *key, cb_buffer **out,
                               cb_error *err);

typedef struct cb_data_common {
    const cb_host *host;
    const char *stage;             /* stage name (threads, logs) */
    int64_t batch_size;
    int32_t epochs;
    uint64_t seed;
    int shuffle, prefetch, threads;
    int32_t n_splits;
    cb_split_info split[CB_MAX_SPLITS];
    int64_t split_first[CB_MAX_SPLITS]; /* sequence number of the split's batch 0 in epoch 0 */
    int64_t per_epoch;                  /* batches per epoch, all splits */
    cb_data_make_fn make;
    void *make_state;
    cb_prefetch *pf;               /* NULL until started, or with prefetch 0 */
} cb_data_common;

/* Reads the common parameters (values[0..CB_DATA_P_COUNT)). */
void cb__data_init(cb_data_common *c, const cb_stage_args *args, cb_data_make_fn make,
                   void *make_state);

/* Appends a split. CB_ECONFIG when the name is bad or repeated, or there are too many. */
int cb__data_add_split(cb_data_common *c, const char *name, int64_t batches, cb_error *err);

/* ops->splits. */
int cb__data_splits(const cb_data_common *c, cb_splits *out);

/* Starts the prefetch threads (prefetch > 0); idempotent. */
int cb__data_start(cb_data_common *c, cb_error *err);

/* ops->run: maps the query to a batch (a batch index past the split's end continues into the
 * following epochs), takes it from the prefetcher or makes it, and replaces q->payload. */
int cb__data_run(cb_data_common *c, cb_query *q, cb_error *err);

/* Stops and joins the prefetch threads (finish, destroy); idempotent. */
void cb__data_stop(cb_data_common *c);

/* The key of sequence number seq (epoch-major, then split, then batch) and back. */
cb_data_key cb__data_key_of(const cb_data_common *c, int64_t seq);
int64_t cb__data_seq_of(const cb_data_common *c, const cb_data_key *k);

/* A 64-bit mix of a and b (splitmix64 finaliser): seeds derived from several values. */
uint64_t cb__data_mix(uint64_t a, uint64_t b);

/* A pseudo-random permutation of [0, n) indexed by i (4-round Feistel network on the next even
 * power of two, cycle-walking into range): O(1) per index, no table, thread-safe. */
uint64_t cb__data_permute(uint64_t key, uint64_t n, uint64_t i);

/* Index of the image at position pos (batch * batch_size + j) of key's split and epoch, among
 * n images: shuffled per (seed, epoch, split) when shuffle is on; pos wraps modulo n. */
uint64_t cb__data_index(const cb_data_common *c, const cb_data_key *k, uint64_t pos, uint64_t n);

/* Allocates an image batch (cb_image_batch_init) and fills split/epoch/batch, split_name and
 * classes from the key. NULL with a message when out of memory or too large. */
cb_buffer *cb__data_batch_new(const cb_data_common *c, const cb_data_key *k, cb_batch_layout layout,
                              uint32_t n, uint64_t data_bytes, uint32_t classes, cb_error *err);

/* ---- files ---------------------------------------------------------------------------- */

/* The entries of one directory, sorted bytewise (Python's sorted()), without "." entries and
 * other names starting with a dot. names[i] points into one blob. */
typedef struct cb_data_dir {
    char **names;
    unsigned char *is_dir;  /* 1: a directory (symlinks followed), 0: anything else */
    size_t n;
    char *blob;
} cb_data_dir;

#define CB_DATA_MAX_DIR_ENTRIES 10000000
#define CB_DATA_MAX_PATH 4096

/* Lists dir. CB_EIO (naming dir and the reason) when it cannot be read. */
int cb__data_list_dir(const cb_host *host, const char *dir, cb_data_dir *out, cb_error *err);
void cb__data_dir_free(const cb_host *host, cb_data_dir *d);

/* Reads exactly size bytes of path from its start into buf: CB_EIO naming the file when it
 * cannot be opened or read or is shorter. */
int cb__data_read_file(const char *path, void *buf, size_t size, cb_error *err);

/* Grows an array to hold need elements (doubling, at most max): 0 or CB_ENOMEM. */
int cb__data_grow(const cb_host *host, void **p, size_t *cap, size_t need, size_t elem, size_t max);

#endif
