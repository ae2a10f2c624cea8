/* llm/sample.h - choosing the next token from a logits vector: greedy, temperature, top-k,
 * top-p (nucleus), seeded per request.
 *
 * Semantics (those of vLLM's sampler and of transformers' TemperatureLogitsWarper ->
 * TopKLogitsWarper -> TopPLogitsWarper chain, which agree on this order):
 *   - temperature 0 (or top_k 1) is greedy: the argmax, ties to the lowest id; no random draw.
 *   - otherwise the logits are divided by the temperature; top_k > 0 keeps the k largest;
 *     top_p < 1 then keeps, of what is left, the smallest set of the most probable tokens whose
 *     probability (softmax over the tokens top-k kept) sums to at least top_p (always at least
 *     one token); the token is drawn from the kept tokens in proportion to their renormalised
 *     probabilities, with one uniform draw from the request's RNG.
 *   - "largest" is a total order: by logit, larger first, ties to the lower id. So top_k keeps
 *     exactly k tokens (transformers keeps every token tied with the k-th; with float logits of a
 *     real model ties are rare) and the kept set of top_p is unique.
 * Sums are in double. The kept tokens are found by selection (expected O(vocab), no sort), so a
 * top-p over a flat distribution of 150k tokens (random weights) costs a few passes, not a sort.
 *
 * Reproducibility: every request has its own cb_rng, seeded by cb_sample_rng_seed from the
 * request's seed and the stage's seed, and draws exactly one uniform per sampled token (none when
 * greedy). So a request's tokens do not depend on which other requests share its batches.
 *
 * Memory: cb_sampler holds scratch for one vocabulary (an index and a probability per id), sized
 * at create and never grown. Not thread-safe: one sampler per thread (the engine has one). */
#ifndef CB_LLM_SAMPLE_H
#define CB_LLM_SAMPLE_H

#include <stdint.h>

#include "colobench/error.h"
#include "core/rng.h"

#define CB_SAMPLE_VOCAB_MAX (1 << 22) /* the scratch's bound (CB_LM_VOCAB_MAX) */

typedef struct cb_sample_params {
    double temperature; /* >= 0; 0 = greedy */
    int32_t top_k;      /* 0 = off; else keep the k largest */
    double top_p;       /* in (0, 1]; 1 = off */
} cb_sample_params;

#define CB_SAMPLE_PARAMS_GREEDY {0.0, 0, 1.0}

typedef struct cb_sampler cb_sampler;

/* A sampler for vocabularies of up to vocab ids (in [1, CB_SAMPLE_VOCAB_MAX]). CB_EINVAL,
 * CB_ENOMEM. */
int cb_sampler_create(int32_t vocab, cb_sampler **out, cb_error *err);
void cb_sampler_destroy(cb_sampler *s); /* NULL is a no-op */

/* 0, or CB_EINVAL naming the bad parameter (temperature < 0 or not finite, top_k < 0, top_p
 * outside (0, 1]). */
int cb_sample_params_check(const cb_sample_params *p, cb_error *err);

/* 1 when p samples greedily (no random draw). */
int cb_sample_is_greedy(const cb_sample_params *p);

/* The next token from logits[0..n) (n <= the sampler's vocab; p checked by the caller): an id in
 * [0, n). Non-finite logits: NaN counts as -infinity; if every logit is -infinity or NaN the
 * result is the lowest id. */
int32_t cb_sample_token(cb_sampler *s, const float *logits, int32_t n, const cb_sample_params *p,
                        cb_rng *rng);

/* Seeds a request's RNG from its own seed and the stage's seed (both mixed, so neither alone
 * repeats another request's stream). */
void cb_sample_rng_seed(cb_rng *rng, uint64_t request_seed, uint64_t stage_seed);

#endif
