/* llm/engine.c - the continuous-batching engine (scheduling, KV policy and timing in engine.h).
 *
 * Design: requests live in slots, a fixed array of max_waiting + max_batch allocated at create
 * (a free stack hands them out). Waiting requests are a FIFO ring of slot numbers; running ones
 * an array in admission order (decode tokens and prefill chunks go to the forward in that order);
 * the requests that finished in the last step keep their slots until the next step, cancel or
 * destroy, so their results can point at their ids. A slot owns one array for its prompt and
 * outputs (prompt + max_new_tokens ids) and its block table, both allocated by cb_engine_add,
 * and its own RNG. The invariant of a request past its prompt: the cache holds
 * n_prompt + n_out - 1 positions, and its next forward feeds its last output id at that
 * position. All KV blocks a request can use (ceil((n_prompt + max_new_tokens - 1) /
 * block_tokens)) are taken at admission and returned when it finishes.
 *
 * Thread-safety: none (one caller). Ownership: model and cache borrowed; slots, ids, block
 * tables, logits and the sampler owned and freed by destroy.
 */
#include "llm/engine.h"

#include <string.h>
#include <time.h>

#include "core/alloc.h"

enum { SLOT_FREE = 0, SLOT_WAITING, SLOT_RUNNING, SLOT_FINISHED };

typedef struct slot {
    int state;
    int32_t *ids;    /* prompt, then outputs */
    int32_t *blocks; /* block table, n_blocks ids once admitted */
    int32_t n_blocks;
    int32_t n_prompt, max_new, n_out, n_cached;
    int ignore_eos;
    cb_sample_params sampling;
    cb_rng rng;
    int64_t index, added_ns;
    void *user;
    cb_engine_result res;
} slot;

struct cb_engine {
    cb_lm_model *model;
    cb_lm_kv *kv;
    cb_engine_opts opts;
    cb_lm_config cfg;
    int32_t vocab, block_tokens, pool_blocks;
    int32_t n_slots;
    slot *slots;
    int32_t *free_stack, n_free;
    int32_t *wait_ring, wait_head, n_waiting; /* ring of max_waiting slot numbers */
    int32_t *running, n_running;
    int32_t *fin, n_fin; /* slots whose results are out */
    cb_engine_result *results;
    cb_lm_seq *seqs;
    int32_t *seq_slot;
    float *logits; /* max_batch x vocab */
    int32_t *sampled;
    cb_sampler *sampler;
    int64_t last_attempt_ns;
    int last_blocked;
    cb_engine_step_stats last;
    cb_engine_totals totals;
};

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now(const cb_engine *e) { return e->opts.now_ns ? e->opts.now_ns() : mono_ns(); }

int cb_engine_create(cb_lm_model *model, cb_lm_kv *kv, const cb_engine_opts *opts,
                     cb_engine **out, cb_error *err) {
    *out = NULL;
    const cb_engine_opts o = *opts;
    if (o.max_batch < 1 || o.max_batch > CB_ENGINE_MAX_BATCH)
        return cb_error_set(err, CB_EINVAL, "max_batch: %d outside [1, %d]", o.max_batch,
                            CB_ENGINE_MAX_BATCH);
    if (o.max_tokens_per_step < o.max_batch || o.max_tokens_per_step > CB_LM_STEP_TOKENS_MAX)
        return cb_error_set(err, CB_EINVAL, "max_tokens_per_step: %d outside [max_batch = %d, %d] "
                            "(every running sequence decodes one token a step)",
                            o.max_tokens_per_step, o.max_batch, CB_LM_STEP_TOKENS_MAX);
    if (o.max_waiting < 1 || o.max_waiting > CB_ENGINE_MAX_WAITING)
        return cb_error_set(err, CB_EINVAL, "max_waiting: %d outside [1, %d]", o.max_waiting,
                            CB_ENGINE_MAX_WAITING);
    cb_engine *e = cb_calloc(1, sizeof *e);
    if (!e) return cb_error_set(err, CB_ENOMEM, "engine: out of memory");
    e->model = model;
    e->kv = kv;
    e->opts = o;
    e->cfg = *cb_lm_model_config(model);
    e->vocab = (int32_t)e->cfg.vocab;
    e->block_tokens = cb_lm_kv_block_tokens(kv);
    e->pool_blocks = cb_lm_kv_n_blocks(kv);
    e->n_slots = o.max_waiting + o.max_batch;
    size_t ns = (size_t)e->n_slots, nb = (size_t)o.max_batch;
    e->slots = cb_calloc(ns, sizeof *e->slots);
    e->free_stack = cb_malloc(ns * sizeof *e->free_stack);
    e->wait_ring = cb_malloc((size_t)o.max_waiting * sizeof *e->wait_ring);
    e->running = cb_malloc(nb * sizeof *e->running);
    e->fin = cb_malloc(ns * sizeof *e->fin);
    e->results = cb_malloc(ns * sizeof *e->results);
    e->seqs = cb_malloc(nb * sizeof *e->seqs);
    e->seq_slot = cb_malloc(nb * sizeof *e->seq_slot);
    e->sampled = cb_malloc(nb * sizeof *e->sampled);
    e->logits = cb_malloc(nb * (size_t)e->vocab * sizeof *e->logits);
    if (!e->slots || !e->free_stack || !e->wait_ring || !e->running || !e->fin || !e->results ||
        !e->seqs || !e->seq_slot || !e->sampled || !e->logits) {
        cb_engine_destroy(e);
        return cb_error_set(err, CB_ENOMEM, "engine: out of memory for %d request slots and %d "
                            "logits vectors", (int)ns, o.max_batch);
    }
    int rc = cb_sampler_create(e->vocab, &e->sampler, err);
    if (rc) {
        cb_engine_destroy(e);
        return rc;
    }
    for (int32_t i = 0; i < e->n_slots; i++) e->free_stack[i] = e->n_slots - 1 - i;
    e->n_free = e->n_slots;
    e->last.kv_blocks = e->pool_blocks;
    *out = e;
    return CB_OK;
}

/* Returns a slot to the free stack, and its blocks (if it holds any) to the pool. */
static void slot_release(cb_engine *e, int32_t k) {
    slot *s = &e->slots[k];
    for (int32_t i = 0; i < s->n_blocks; i++) cb_lm_kv_release(e->kv, s->blocks[i]);
    cb_free(s->ids);
    cb_free(s->blocks);
    memset(s, 0, sizeof *s);
    e->free_stack[e->n_free++] = k;
}

/* Releases the slots of the finished list. */
static void release_finished(cb_engine *e) {
    for (int32_t i = 0; i < e->n_fin; i++) slot_release(e, e->fin[i]);
    e->n_fin = 0;
}

void cb_engine_destroy(cb_engine *e) {
    if (!e) return;
    if (e->slots)
        for (int32_t k = 0; k < e->n_slots; k++)
            if (e->slots[k].state != SLOT_FREE) {
                slot *s = &e->slots[k];
                for (int32_t i = 0; i < s->n_blocks; i++) cb_lm_kv_release(e->kv, s->blocks[i]);
                cb_free(s->ids);
                cb_free(s->blocks);
            }
    cb_free(e->slots);
    cb_free(e->free_stack);
    cb_free(e->wait_ring);
    cb_free(e->running);
    cb_free(e->fin);
    cb_free(e->results);
    cb_free(e->seqs);
    cb_free(e->seq_slot);
    cb_free(e->sampled);
    cb_free(e->logits);
    cb_sampler_destroy(e->sampler);
    cb_free(e);
}

/* Blocks a request of n_prompt + max_new tokens needs (the last output is never cached). */
static int64_t blocks_needed(const cb_engine *e, int64_t n_prompt, int64_t max_new) {
    int64_t pos = n_prompt + max_new - 1;
    return (pos + e->block_tokens - 1) / e->block_tokens;
}

int cb_engine_add(cb_engine *e, const cb_engine_request *r, cb_error *err) {
    long long ix = (long long)r->index;
    if (r->n_prompt < 1 || !r->prompt)
        return cb_error_set(err, CB_EINVAL, "request %lld: empty prompt (no token ids)", ix);
    if (r->max_new_tokens < 1)
        return cb_error_set(err, CB_EINVAL, "request %lld: max_new_tokens %d < 1", ix,
                            (int)r->max_new_tokens);
    int64_t total = (int64_t)r->n_prompt + r->max_new_tokens;
    if (total > e->cfg.max_positions)
        return cb_error_set(err, CB_EINVAL, "request %lld: prompt of %d tokens + max_new_tokens "
                            "%d = %lld positions, more than the model's context (max_positions "
                            "%lld)", ix, (int)r->n_prompt, (int)r->max_new_tokens,
                            (long long)total, (long long)e->cfg.max_positions);
    int64_t need = blocks_needed(e, r->n_prompt, r->max_new_tokens);
    if (need > e->pool_blocks)
        return cb_error_set(err, CB_EINVAL, "request %lld: prompt of %d tokens + max_new_tokens "
                            "%d needs %lld KV blocks of %d positions, more than the whole cache "
                            "(%d blocks): raise kv_cache_bytes", ix, (int)r->n_prompt,
                            (int)r->max_new_tokens, (long long)need, (int)e->block_tokens,
                            (int)e->pool_blocks);
    for (int32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->vocab)
            return cb_error_set(err, CB_EINVAL, "request %lld: prompt id %d at %d outside the "
                                "model's vocabulary [0, %d)", ix, (int)r->prompt[i], (int)i,
                                (int)e->vocab);
    cb_error pe;
    cb_error_clear(&pe);
    if (cb_sample_params_check(&r->sampling, &pe))
        return cb_error_set(err, CB_EINVAL, "request %lld: %s", ix, pe.msg);
    if (e->n_waiting >= e->opts.max_waiting || e->n_free == 0)
        return cb_error_set(err, CB_EFULL, "request %lld: %d requests wait already (max_waiting)",
                            ix, (int)e->n_waiting);
    int32_t k = e->free_stack[e->n_free - 1];
    slot *s = &e->slots[k];
    s->ids = cb_malloc(sizeof *s->ids * (size_t)total);
    s->blocks = cb_malloc(sizeof *s->blocks * (size_t)need);
    if (!s->ids || !s->blocks) {
        cb_free(s->ids);
        cb_free(s->blocks);
        memset(s, 0, sizeof *s);
        return cb_error_set(err, CB_ENOMEM, "request %lld: out of memory for %lld ids", ix,
                            (long long)total);
    }
    e->n_free--;
    memcpy(s->ids, r->prompt, sizeof *s->ids * (size_t)r->n_prompt);
    s->state = SLOT_WAITING;
    s->n_prompt = r->n_prompt;
    s->max_new = r->max_new_tokens;
    s->ignore_eos = r->ignore_eos;
    s->sampling = r->sampling;
    cb_sample_rng_seed(&s->rng, r->seed, e->opts.seed);
    s->index = r->index;
    s->user = r->user;
    s->added_ns = now(e);
    s->res.arrival_ns = r->arrival_ns;
    e->wait_ring[(e->wait_head + e->n_waiting) % e->opts.max_waiting] = k;
    e->n_waiting++;
    return CB_OK;
}

/* Admission (engine.h, step 1), crediting KV waits since the previous attempt. */
static void admit(cb_engine *e, int64_t t) {
    if (e->last_blocked)
        for (int32_t i = 0; i < e->n_waiting; i++) {
            slot *s = &e->slots[e->wait_ring[(e->wait_head + i) % e->opts.max_waiting]];
            int64_t from = s->added_ns > e->last_attempt_ns ? s->added_ns : e->last_attempt_ns;
            if (t > from) s->res.kv_wait_ns += t - from;
        }
    e->last_blocked = 0;
    while (e->n_waiting > 0 && e->n_running < e->opts.max_batch) {
        int32_t k = e->wait_ring[e->wait_head];
        slot *s = &e->slots[k];
        int32_t need = (int32_t)blocks_needed(e, s->n_prompt, s->max_new);
        if (cb_lm_kv_free_blocks(e->kv) < need) {
            e->last_blocked = 1;
            break;
        }
        for (int32_t i = 0; i < need; i++) s->blocks[s->n_blocks++] = cb_lm_kv_alloc(e->kv);
        e->wait_head = (e->wait_head + 1) % e->opts.max_waiting;
        e->n_waiting--;
        s->state = SLOT_RUNNING;
        s->res.admit_ns = t;
        e->running[e->n_running++] = k;
    }
    e->last_attempt_ns = t;
}

/* Fills s->res for the finished list and queues the slot there. */
static void finish(cb_engine *e, int32_t k, cb_engine_finish why, int32_t running,
                   int32_t used) {
    slot *s = &e->slots[k];
    cb_engine_result *r = &s->res;
    r->user = s->user;
    r->index = s->index;
    r->prompt = s->ids;
    r->n_prompt = s->n_prompt;
    r->output = s->ids + s->n_prompt;
    r->n_output = s->n_out;
    r->finish = why;
    r->running_at_finish = running;
    r->kv_blocks_used_at_finish = used;
    s->state = SLOT_FINISHED;
    e->results[e->n_fin] = *r;
    e->fin[e->n_fin++] = k;
}

static int is_eos(const cb_engine *e, int32_t tok) {
    for (int i = 0; i < e->cfg.n_eos; i++)
        if (e->cfg.eos_ids[i] == tok) return 1;
    return 0;
}

/* Takes one sampled token for running slot k at time t; 1 when the request is done. */
static int take_token(cb_engine *e, int32_t k, int32_t tok, int64_t t) {
    slot *s = &e->slots[k];
    cb_engine_result *r = &s->res;
    s->ids[s->n_prompt + s->n_out] = tok;
    if (s->n_out == 0) {
        r->first_token_ns = t;
    } else {
        int64_t gap = t - r->last_token_ns;
        r->itl_sum_ns += gap;
        if (gap > r->itl_max_ns) r->itl_max_ns = gap;
    }
    r->last_token_ns = t;
    if (e->opts.on_token) e->opts.on_token(e->opts.on_token_arg, s->user, s->n_out, tok, t);
    s->n_out++;
    if (!s->ignore_eos && is_eos(e, tok)) {
        r->finish = CB_ENGINE_FINISH_EOS;
        return 1;
    }
    if (s->n_out >= s->max_new) {
        r->finish = CB_ENGINE_FINISH_LENGTH;
        return 1;
    }
    return 0;
}

int cb_engine_step(cb_engine *e, cb_error *err) {
    release_finished(e);
    int64_t t0 = now(e);
    admit(e, t0);
    cb_engine_step_stats st;
    memset(&st, 0, sizeof st);
    st.kv_blocks = e->pool_blocks;
    st.kv_blocks_used = e->pool_blocks - cb_lm_kv_free_blocks(e->kv);
    st.kv_blocked = e->last_blocked;
    st.waiting = e->n_waiting;
    int32_t budget = e->opts.max_tokens_per_step, n = 0, n_logits = 0;
    for (int32_t i = 0; i < e->n_running; i++) { /* decode: one token each */
        slot *s = &e->slots[e->running[i]];
        if (s->n_out == 0) continue;
        cb_lm_seq *q = &e->seqs[n];
        q->tokens = s->ids + s->n_prompt + s->n_out - 1;
        q->n_tokens = 1;
        q->pos0 = s->n_cached;
        q->blocks = s->blocks;
        q->n_blocks = s->n_blocks;
        q->logits = e->logits + (size_t)n_logits++ * (size_t)e->vocab;
        e->seq_slot[n++] = e->running[i];
        budget--;
        st.decode_tokens++;
    }
    for (int32_t i = 0; i < e->n_running && budget > 0; i++) { /* prefill chunks */
        slot *s = &e->slots[e->running[i]];
        if (s->n_out > 0) continue;
        int32_t chunk = s->n_prompt - s->n_cached;
        if (chunk > budget) chunk = budget;
        cb_lm_seq *q = &e->seqs[n];
        q->tokens = s->ids + s->n_cached;
        q->n_tokens = chunk;
        q->pos0 = s->n_cached;
        q->blocks = s->blocks;
        q->n_blocks = s->n_blocks;
        q->logits = s->n_cached + chunk == s->n_prompt
                        ? e->logits + (size_t)n_logits++ * (size_t)e->vocab
                        : NULL;
        e->seq_slot[n++] = e->running[i];
        budget -= chunk;
        st.prefill_tokens += chunk;
    }
    st.running = n;
    if (n > 0) {
        int rc = cb_lm_forward(e->model, e->kv, e->seqs, n, err);
        if (rc) return rc;
        cb_lm_forward_last_stats(e->model, &st.forward);
        for (int32_t i = 0; i < n; i++) {
            slot *s = &e->slots[e->seq_slot[i]];
            s->n_cached += e->seqs[i].n_tokens;
            if (e->seqs[i].logits)
                e->sampled[i] = cb_sample_token(e->sampler, e->seqs[i].logits, e->vocab,
                                                &s->sampling, &s->rng);
        }
        int64_t t1 = now(e);
        for (int32_t i = 0; i < n; i++) {
            if (!e->seqs[i].logits) continue;
            int32_t k = e->seq_slot[i];
            if (take_token(e, k, e->sampled[i], t1))
                finish(e, k, e->slots[k].res.finish, n, st.kv_blocks_used);
        }
        int32_t w = 0; /* running without the finished, order kept */
        for (int32_t i = 0; i < e->n_running; i++)
            if (e->slots[e->running[i]].state == SLOT_RUNNING) e->running[w++] = e->running[i];
        e->n_running = w;
        for (int32_t i = 0; i < e->n_fin; i++) { /* blocks back to the pool now */
            slot *s = &e->slots[e->fin[i]];
            for (int32_t b = 0; b < s->n_blocks; b++) cb_lm_kv_release(e->kv, s->blocks[b]);
            s->n_blocks = 0;
        }
        e->totals.forward_steps++;
    }
    st.finished = e->n_fin;
    st.step_ns = now(e) - t0;
    e->last = st;
    e->totals.steps++;
    e->totals.prefill_tokens += st.prefill_tokens;
    e->totals.decode_tokens += st.decode_tokens;
    e->totals.step_ns += st.step_ns;
    e->totals.forward_ns += st.forward.total_ns;
    e->totals.matmul_ns += st.forward.matmul_ns;
    e->totals.attention_ns += st.forward.attention_ns;
    return CB_OK;
}

void cb_engine_cancel_all(cb_engine *e) {
    release_finished(e);
    int32_t used = e->pool_blocks - cb_lm_kv_free_blocks(e->kv);
    for (int32_t i = 0; i < e->n_running; i++)
        finish(e, e->running[i], CB_ENGINE_FINISH_CANCELLED, e->n_running, used);
    for (int32_t i = 0; i < e->n_waiting; i++)
        finish(e, e->wait_ring[(e->wait_head + i) % e->opts.max_waiting],
               CB_ENGINE_FINISH_CANCELLED, e->n_running, used);
    e->n_running = 0;
    e->n_waiting = 0;
    e->wait_head = 0;
    for (int32_t i = 0; i < e->n_fin; i++) {
        slot *s = &e->slots[e->fin[i]];
        for (int32_t b = 0; b < s->n_blocks; b++) cb_lm_kv_release(e->kv, s->blocks[b]);
        s->n_blocks = 0;
    }
}

int cb_engine_cancel(cb_engine *e, void *user) {
    int32_t used = e->pool_blocks - cb_lm_kv_free_blocks(e->kv);
    int32_t k = -1;
    for (int32_t i = 0; i < e->n_running && k < 0; i++)
        if (e->slots[e->running[i]].user == user) {
            k = e->running[i];
            memmove(e->running + i, e->running + i + 1,
                    sizeof *e->running * (size_t)(e->n_running - i - 1));
            e->n_running--;
        }
    for (int32_t i = 0; i < e->n_waiting && k < 0; i++) {
        int32_t mw = e->opts.max_waiting;
        if (e->slots[e->wait_ring[(e->wait_head + i) % mw]].user != user) continue;
        k = e->wait_ring[(e->wait_head + i) % mw];
        for (int32_t j = i; j + 1 < e->n_waiting; j++) /* close the gap, order kept */
            e->wait_ring[(e->wait_head + j) % mw] = e->wait_ring[(e->wait_head + j + 1) % mw];
        e->n_waiting--;
    }
    if (k < 0) return 0;
    finish(e, k, CB_ENGINE_FINISH_CANCELLED, e->n_running, used);
    slot *s = &e->slots[k];
    for (int32_t b = 0; b < s->n_blocks; b++) cb_lm_kv_release(e->kv, s->blocks[b]);
    s->n_blocks = 0;
    return 1;
}

int cb_engine_n_finished(const cb_engine *e) { return e->n_fin; }

const cb_engine_result *cb_engine_finished(const cb_engine *e, int i) {
    return i >= 0 && i < e->n_fin ? &e->results[i] : NULL;
}

int cb_engine_n_waiting(const cb_engine *e) { return e->n_waiting; }
int cb_engine_n_running(const cb_engine *e) { return e->n_running; }
int cb_engine_n_active(const cb_engine *e) { return e->n_waiting + e->n_running; }
const cb_engine_step_stats *cb_engine_last_step(const cb_engine *e) { return &e->last; }
const cb_engine_totals *cb_engine_get_totals(const cb_engine *e) { return &e->totals; }
