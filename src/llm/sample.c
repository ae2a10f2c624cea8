/* llm/sample.c - the next token from a logits vector (semantics in sample.h).
 *
 * Design: greedy is one argmax pass. Temperature alone is two passes over the vocabulary (the
 * maximum, then exp and the cumulative draw in id order). With top-k or top-p the candidates
 * become 64-bit order keys (key_of: the logit's bits made monotone above the inverted id, so the
 * total order "larger logit, then lower id" is integer comparison) partitioned in place: a
 * large top-k by quickselect (the k first end up in key[0..k), unsorted), top-p by a quickselect
 * on probability mass (the shortest prefix of the order whose mass reaches top_p times the
 * total), so neither sorts. A top_k up to HEAP_K_MAX is one pass with a heap of k ids instead
 * (most ids cost one comparison). The draw scans the kept tokens in the order the selection left
 * them: deterministic for a given input, and correct for any order. Probabilities are expf in
 * float (relative error ~1e-7, far below any sampling effect), summed in double. Cost per token
 * on 151936 near-flat logits: docs/internals/llm-engine.md.
 *
 * Thread-safety: a sampler is scratch for one thread. Ownership: the sampler owns its arrays;
 * logits and the RNG are borrowed for the call.
 */
#include "llm/sample.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"

/* top_k up to this uses the heap (n log k, nearly n for small k), larger k quickselect. */
#define HEAP_K_MAX 4096

struct cb_sampler {
    int32_t vocab;
    int32_t *idx; /* the top-k heap */
    uint64_t *key; /* candidates as order keys (key_of) */
    double *prob;  /* unnormalised probability, by id */
};

int cb_sampler_create(int32_t vocab, cb_sampler **out, cb_error *err) {
    *out = NULL;
    if (vocab < 1 || vocab > CB_SAMPLE_VOCAB_MAX)
        return cb_error_set(err, CB_EINVAL, "sampler: vocabulary of %d ids outside [1, %d]",
                            (int)vocab, CB_SAMPLE_VOCAB_MAX);
    cb_sampler *s = cb_calloc(1, sizeof *s);
    if (s) {
        s->vocab = vocab;
        s->idx = cb_malloc(sizeof *s->idx * (size_t)vocab);
        s->prob = cb_malloc(sizeof *s->prob * (size_t)vocab);
        s->key = cb_malloc(sizeof *s->key * (size_t)vocab);
    }
    if (!s || !s->idx || !s->prob || !s->key) {
        cb_sampler_destroy(s);
        return cb_error_set(err, CB_ENOMEM, "sampler: out of memory for %d ids", (int)vocab);
    }
    *out = s;
    return CB_OK;
}

void cb_sampler_destroy(cb_sampler *s) {
    if (!s) return;
    cb_free(s->idx);
    cb_free(s->prob);
    cb_free(s->key);
    cb_free(s);
}

int cb_sample_params_check(const cb_sample_params *p, cb_error *err) {
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return cb_error_set(err, CB_EINVAL, "temperature: %g is not a finite value >= 0",
                            p->temperature);
    if (p->top_k < 0) return cb_error_set(err, CB_EINVAL, "top_k: %d < 0", (int)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return cb_error_set(err, CB_EINVAL, "top_p: %g outside (0, 1]", p->top_p);
    return CB_OK;
}

int cb_sample_is_greedy(const cb_sample_params *p) { return p->temperature == 0 || p->top_k == 1; }

void cb_sample_rng_seed(cb_rng *rng, uint64_t request_seed, uint64_t stage_seed) {
    uint64_t a = request_seed, b = stage_seed ^ 0x5bd1e9955bd1e995ULL;
    uint64_t x = cb__splitmix64(&a), y = cb__splitmix64(&b);
    cb_rng_seed(rng, x ^ cb__rotl(y, 32));
}

/* A logit with NaN read as -infinity. */
static inline float logit_at(const float *l, int32_t i) {
    float x = l[i];
    return x == x ? x : -INFINITY;
}

/* The total order: a before b when its logit is larger, or equal with the lower id. */
static inline int before(const float *l, int32_t a, int32_t b) {
    float x = logit_at(l, a), y = logit_at(l, b);
    return x > y || (x == y && a < b);
}

static int32_t argmax(const float *l, int32_t n) {
    int32_t best = 0;
    float bv = logit_at(l, 0);
    for (int32_t i = 1; i < n; i++) {
        float v = logit_at(l, i);
        if (v > bv) {
            bv = v;
            best = i;
        }
    }
    return best;
}

static inline void swap_ids(int32_t *a, int32_t *b) {
    int32_t t = *a;
    *a = *b;
    *b = t;
}

/* The order as one integer: larger key = earlier (larger logit, then lower id). The logit's bits
 * made monotone (sign flipped, negatives inverted; -0 read as +0, NaN as -infinity) above the
 * inverted id, so selection compares plain integers with no indirection. */
static inline uint64_t key_of(const float *l, int32_t i) {
    float x = logit_at(l, i);
    if (x == 0) x = 0.0f;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)~(uint32_t)i;
}

static inline int32_t key_id(uint64_t k) { return (int32_t)~(uint32_t)k; }

static inline void swap_keys(uint64_t *a, uint64_t *b) {
    uint64_t t = *a;
    *a = *b;
    *b = t;
}

/* Partitions key[lo, hi) (hi - lo >= 2) around a median-of-three pivot: returns mid with
 * key[lo, mid) before key[mid] before key(mid, hi) (descending). */
static int32_t partition(uint64_t *key, int32_t lo, int32_t hi) {
    int32_t m = lo + (hi - lo) / 2, last = hi - 1;
    if (key[m] > key[lo]) swap_keys(&key[m], &key[lo]);
    if (key[last] > key[lo]) swap_keys(&key[last], &key[lo]);
    if (key[m] > key[last]) swap_keys(&key[m], &key[last]); /* median now at last */
    uint64_t pivot = key[last];
    int32_t store = lo;
    for (int32_t i = lo; i < last; i++)
        if (key[i] > pivot) swap_keys(&key[i], &key[store++]);
    swap_keys(&key[store], &key[last]);
    return store;
}

/* Rearranges key[0, n) so that key[0, k) are the k first in the order (0 < k < n). */
static void select_k(uint64_t *key, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        int32_t mid = partition(key, lo, hi);
        if (mid == k || mid + 1 == k) return;
        if (k < mid) hi = mid;
        else lo = mid + 1;
    }
}

/* Rearranges key[0, n) and returns m >= 1 such that key[0, m) is the shortest prefix of the
 * order whose mass (prob by id) reaches need. */
static int32_t select_mass(uint64_t *key, int32_t n, const double *prob, double need) {
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        if (need <= 0) return lo > 0 ? lo : 1;
        int32_t mid = partition(key, lo, hi);
        double s = 0;
        for (int32_t i = lo; i < mid; i++) s += prob[key_id(key[i])];
        double pm = prob[key_id(key[mid])];
        if (s >= need) {
            hi = mid;
        } else if (s + pm >= need) {
            return mid + 1;
        } else {
            need -= s + pm;
            lo = mid + 1;
        }
    }
    if (lo == hi) return lo > 0 ? lo : 1; /* rounding left need > 0 after the whole range */
    return need <= 0 && lo > 0 ? lo : lo + 1;
}

/* Sifts idx[i] down the heap idx[0, k) whose root is the last of the k in the order. */
static void heap_down(int32_t *idx, int32_t k, int32_t i, const float *l) {
    for (;;) {
        int32_t c = 2 * i + 1, m = i;
        if (c < k && before(l, idx[m], idx[c])) m = c;
        if (c + 1 < k && before(l, idx[m], idx[c + 1])) m = c + 1;
        if (m == i) return;
        swap_ids(&idx[i], &idx[m]);
        i = m;
    }
}

/* The k first ids of [0, n) in the order into idx[0, k) (unsorted), in one pass with a heap of
 * k: most ids cost one comparison with the heap's root (the k-th so far). */
static void heap_top_k(int32_t *idx, int32_t n, int32_t k, const float *l) {
    for (int32_t i = 0; i < k; i++) idx[i] = i;
    for (int32_t i = k / 2 - 1; i >= 0; i--) heap_down(idx, k, i, l);
    for (int32_t i = k; i < n; i++)
        if (before(l, i, idx[0])) {
            idx[0] = i;
            heap_down(idx, k, 0, l);
        }
}

int32_t cb_sample_token(cb_sampler *s, const float *logits, int32_t n, const cb_sample_params *p,
                        cb_rng *rng) {
    if (n > s->vocab) n = s->vocab;
    if (cb_sample_is_greedy(p)) return argmax(logits, n);
    const float inv_t = (float)(1.0 / p->temperature);
    int use_keys = (p->top_k > 0 && p->top_k < n) || p->top_p < 1;
    if (!use_keys) { /* temperature alone: straight over the ids */
        float mx = logit_at(logits, argmax(logits, n));
        if (mx == -INFINITY) return 0;
        double sum = 0;
        for (int32_t i = 0; i < n; i++) {
            s->prob[i] = expf((logit_at(logits, i) - mx) * inv_t);
            sum += s->prob[i];
        }
        double u = cb_rng_uniform(rng) * sum, c = 0;
        for (int32_t i = 0; i < n; i++) {
            c += s->prob[i];
            if (u < c) return i;
        }
        for (int32_t i = n - 1; i > 0; i--) /* rounding: the last token with mass */
            if (s->prob[i] > 0) return i;
        return 0;
    }
    uint64_t *key = s->key;
    int32_t m = n;
    if (p->top_k > 0 && p->top_k < n && p->top_k <= HEAP_K_MAX) {
        heap_top_k(s->idx, n, p->top_k, logits);
        m = p->top_k;
        for (int32_t i = 0; i < m; i++) key[i] = key_of(logits, s->idx[i]);
    } else {
        for (int32_t i = 0; i < n; i++) key[i] = key_of(logits, i);
        if (p->top_k > 0 && p->top_k < n) {
            select_k(key, n, p->top_k);
            m = p->top_k;
        }
    }
    uint64_t best = key[0];
    for (int32_t i = 1; i < m; i++)
        if (key[i] > best) best = key[i];
    float mx = logit_at(logits, key_id(best));
    if (mx == -INFINITY) return key_id(best);
    double sum = 0;
    for (int32_t i = 0; i < m; i++) {
        int32_t id = key_id(key[i]);
        double q = expf((logit_at(logits, id) - mx) * inv_t);
        s->prob[id] = q;
        sum += q;
    }
    if (p->top_p < 1) {
        m = select_mass(key, m, s->prob, p->top_p * sum);
        sum = 0;
        for (int32_t i = 0; i < m; i++) sum += s->prob[key_id(key[i])];
    }
    double u = cb_rng_uniform(rng) * sum, c = 0;
    for (int32_t i = 0; i < m; i++) {
        c += s->prob[key_id(key[i])];
        if (u < c) return key_id(key[i]);
    }
    for (int32_t i = m - 1; i > 0; i--)
        if (s->prob[key_id(key[i])] > 0) return key_id(key[i]);
    return key_id(key[0]);
}
