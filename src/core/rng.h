/* core/rng.h - small deterministic PRNG (xoshiro256**, seeded by splitmix64).
 * State lives with its user; no globals. Not thread-safe per state. */
#ifndef CB_CORE_RNG_H
#define CB_CORE_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct cb_rng { uint64_t s[4]; } cb_rng;

static inline uint64_t cb__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void cb_rng_seed(cb_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = cb__splitmix64(&seed);
}

static inline uint64_t cb__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t cb_rng_u64(cb_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = cb__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = cb__rotl(s[3], 45);
    return result;
}

/* Uniform in (0, 1): never 0, so log() is safe. */
static inline double cb_rng_uniform(cb_rng *r) {
    return ((double)(cb_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static inline double cb_rng_exponential(cb_rng *r, double mean) {
    return -mean * log(cb_rng_uniform(r));
}

static inline double cb_rng_normal(cb_rng *r) {
    /* Box-Muller; one value per call keeps the state simple. */
    double u1 = cb_rng_uniform(r), u2 = cb_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
