/* llm/sample.c - the next token from a logits vector (semantics in sample.h).
 *
 * Design: greedy is one argmax pass. Temperature alone is two passes over the vocabulary (the
 * maximum, then exp and the cumulative draw in id order). With top-k or top-p an index array of
 * the candidates is partitioned in place: top-k by quickselect (the k first in the total order
 * "larger logit, then lower id" end up in idx[0..k), unsorted), top-p by a quickselect on
 * probability mass (the shortest prefix of that order whose mass reaches top_p times the total),
 * so neither sorts. The draw then scans the kept tokens in the order the selection left them:
 * deterministic for a given input, and correct for any order.
 *
 * Thread-safety: a sampler is scratch for one thread. Ownership: the sampler owns its two arrays;
 * logits and the RNG are borrowed for the call.
 */
#include "llm/sample.h"

#include <math.h>

#include "core/alloc.h"

struct cb_sampler {
    int32_t vocab;
    int32_t *idx; /* candidate ids */
    double *prob; /* unnormalised probability, by id */
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
    }
    if (!s || !s->idx || !s->prob) {
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

/* Partitions idx[lo, hi) (hi - lo >= 2) around a median-of-three pivot: returns mid with
 * idx[lo, mid) before idx[mid] before idx(mid, hi). */
static int32_t partition(int32_t *idx, int32_t lo, int32_t hi, const float *l) {
    int32_t m = lo + (hi - lo) / 2, last = hi - 1;
    if (before(l, idx[m], idx[lo])) swap_ids(&idx[m], &idx[lo]);
    if (before(l, idx[last], idx[lo])) swap_ids(&idx[last], &idx[lo]);
    if (before(l, idx[m], idx[last])) swap_ids(&idx[m], &idx[last]); /* median now at last */
    int32_t pivot = idx[last], store = lo;
    for (int32_t i = lo; i < last; i++)
        if (before(l, idx[i], pivot)) swap_ids(&idx[i], &idx[store++]);
    swap_ids(&idx[store], &idx[last]);
    return store;
}

/* Rearranges idx[0, n) so that idx[0, k) are the k first in the order (0 < k < n). */
static void select_k(int32_t *idx, int32_t n, int32_t k, const float *l) {
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        int32_t mid = partition(idx, lo, hi, l);
        if (mid == k || mid + 1 == k) return;
        if (k < mid) hi = mid;
        else lo = mid + 1;
    }
}

/* Rearranges idx[0, n) and returns m >= 1 such that idx[0, m) is the shortest prefix of the
 * order whose mass (prob by id) reaches need. */
static int32_t select_mass(int32_t *idx, int32_t n, const double *prob, double need,
                           const float *l) {
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        if (need <= 0) return lo > 0 ? lo : 1;
        int32_t mid = partition(idx, lo, hi, l);
        double s = 0;
        for (int32_t i = lo; i < mid; i++) s += prob[idx[i]];
        if (s >= need) {
            hi = mid;
        } else if (s + prob[idx[mid]] >= need) {
            return mid + 1;
        } else {
            need -= s + prob[idx[mid]];
            lo = mid + 1;
        }
    }
    if (lo == hi) return lo > 0 ? lo : 1; /* rounding left need > 0 after the whole range */
    return need <= 0 && lo > 0 ? lo : lo + 1;
}

int32_t cb_sample_token(cb_sampler *s, const float *logits, int32_t n, const cb_sample_params *p,
                        cb_rng *rng) {
    if (n > s->vocab) n = s->vocab;
    if (cb_sample_is_greedy(p)) return argmax(logits, n);
    const double inv_t = 1.0 / p->temperature;
    int use_idx = (p->top_k > 0 && p->top_k < n) || p->top_p < 1;
    if (!use_idx) { /* temperature alone: straight over the ids */
        float mx = logit_at(logits, argmax(logits, n));
        if (mx == -INFINITY) return 0;
        double sum = 0;
        for (int32_t i = 0; i < n; i++) {
            s->prob[i] = exp(((double)logit_at(logits, i) - mx) * inv_t);
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
    int32_t *idx = s->idx;
    for (int32_t i = 0; i < n; i++) idx[i] = i;
    int32_t m = n;
    if (p->top_k > 0 && p->top_k < n) {
        select_k(idx, n, p->top_k, logits);
        m = p->top_k;
    }
    int32_t best = idx[0];
    for (int32_t i = 1; i < m; i++)
        if (before(logits, idx[i], best)) best = idx[i];
    float mx = logit_at(logits, best);
    if (mx == -INFINITY) return best;
    double sum = 0;
    for (int32_t i = 0; i < m; i++) {
        double q = exp(((double)logit_at(logits, idx[i]) - mx) * inv_t);
        s->prob[idx[i]] = q;
        sum += q;
    }
    if (p->top_p < 1) {
        m = select_mass(idx, m, s->prob, p->top_p * sum, logits);
        sum = 0;
        for (int32_t i = 0; i < m; i++) sum += s->prob[idx[i]];
    }
    double u = cb_rng_uniform(rng) * sum, c = 0;
    for (int32_t i = 0; i < m; i++) {
        c += s->prob[idx[i]];
        if (u < c) return idx[i];
    }
    for (int32_t i = m - 1; i > 0; i--)
        if (s->prob[idx[i]] > 0) return idx[i];
    return idx[0];
}
