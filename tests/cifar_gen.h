/* tests/cifar_gen.h - writes a small, learnable dataset in the CIFAR-10 binary format.
 *
 * For tests (data.cifar here, end-to-end training elsewhere): record i has label i % classes and
 * a 32x32 RGB image of uniform noise in [0, 94] with a bright 8x8 square (value 224 + noise/8,
 * in every channel) at a class-dependent place: a 4 x 3 grid of places, so up to 12 classes are
 * told apart by where the square is. A nearest-class-mean classifier gets ~100% on it, a small
 * CNN too within an epoch or two. Everything derives from (seed, record index): the same call
 * writes the same bytes. A record is 1 label byte + the R, G and B planes (1024 bytes each,
 * rows top to bottom), as in the real files.
 *
 *   cb_cifar_gen_dataset(dir, 500, 100, 10, 1);  // dir/data_batch_1.bin, dir/test_batch.bin
 *
 * Header-only, static functions, libc only; no state. Returns 0 or -1 (errno set by stdio).
 */
#ifndef CB_TESTS_CIFAR_GEN_H
#define CB_TESTS_CIFAR_GEN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CB_CIFAR_GEN_RECORD 3073

static inline uint64_t cb_cifar_gen_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Top-left corner (x, y) of class k's square. */
static inline void cb_cifar_gen_square(int k, int *x, int *y) {
    *x = (k % 4) * 8;
    *y = ((k / 4) % 3) * 12;
}

/* Fills one record for image `index` with `label`. */
static inline void cb_cifar_gen_record(unsigned char *rec, int label, uint64_t seed, uint64_t index) {
    uint64_t state = cb_cifar_gen_mix(seed ^ cb_cifar_gen_mix(index));
    rec[0] = (unsigned char)label;
    int sx, sy;
    cb_cifar_gen_square(label, &sx, &sy);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                state = cb_cifar_gen_mix(state);
                unsigned noise = (unsigned)(state >> 58) * 3 / 2; /* 0..94 */
                int in = x >= sx && x < sx + 8 && y >= sy && y < sy + 8;
                rec[1 + c * 1024 + y * 32 + x] = (unsigned char)(in ? 224 + noise / 8 : noise);
            }
}

/* Writes n records (indices first .. first+n-1, labels index % classes) to path. */
static inline int cb_cifar_gen_file(const char *path, int n, int classes, uint64_t seed, uint64_t first) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned char rec[CB_CIFAR_GEN_RECORD];
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        uint64_t idx = first + (uint64_t)i;
        cb_cifar_gen_record(rec, (int)(idx % (uint64_t)classes), seed, idx);
        if (fwrite(rec, 1, sizeof rec, f) != sizeof rec) rc = -1;
    }
    if (fclose(f) != 0) rc = -1;
    return rc;
}

/* dir/data_batch_1.bin (n_train records) and, when n_val > 0, dir/test_batch.bin. */
static inline int cb_cifar_gen_dataset(const char *dir, int n_train, int n_val, int classes,
                                       uint64_t seed) {
    char p[4096];
    snprintf(p, sizeof p, "%s/data_batch_1.bin", dir);
    if (cb_cifar_gen_file(p, n_train, classes, seed, 0) != 0) return -1;
    if (n_val <= 0) return 0;
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    return cb_cifar_gen_file(p, n_val, classes, seed, 1000000);
}

#endif
