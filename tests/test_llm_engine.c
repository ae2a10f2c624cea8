/* tests/test_llm_engine.c - the continuous-batching engine (llm/engine.c) on the tiny presets
 * with seeded random weights.
 *
 * (i) Batching does not change results: 8 requests of different prompt lengths, each generated
 * alone (max_batch 1), all 8 together, in chunked prefill (8 tokens a step, so prompts span
 * several steps and share steps with decodes), and joining while others decode: the same token
 * ids, greedy and sampled (each request's own RNG), for every family and both precisions.
 * (ii) KV pressure: a pool that fits two requests at a time: all finish with the same ids, the
 * ones that waited report kv_wait_ns > 0 (a counting clock, so the waits are exact and the test
 * independent of speed), the pool is whole again at the end, no step used more than the pool.
 * (iii) Errors: a request longer than the context and one needing more blocks than the pool
 * (both naming the request and the numbers), a KV budget below one block, max_tokens_per_step
 * below max_batch, a full waiting list, bad ids and sampling parameters.
 * (iv) EOS: with an EOS id the greedy run reaches, the request stops there (finish eos, the EOS
 * its last id); with ignore_eos it gives exactly max_new_tokens. Cancel returns everything.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/engine.h"

enum { NREQ = 8, MAXNEW = 12 };

typedef struct rig {
    cb_lm_weights *w;
    cb_lm_model *m;
    cb_lm_kv *kv;
} rig;

static int rig_make(rig *r, const char *preset, cb_lm_dtype dt, size_t kv_bytes, int block,
                    const int32_t *eos) {
    memset(r, 0, sizeof *r);
    cb_lm_config c;
    cb_error e = {0};
    if (cb_lm_config_preset(preset, &c, &e)) return -1;
    if (eos) {
        c.n_eos = 1;
        c.eos_ids[0] = *eos;
    }
    cb_lm_weights_opts wo = {dt, NULL, 1234, 1}; /* packed, as llm.generate loads them */
    int rc = cb_lm_weights_create(&c, &wo, &r->w, &e);
    if (!rc) rc = cb_lm_model_create(r->w, 1, 512, &r->m, &e);
    if (!rc)
        rc = cb_lm_kv_create(r->m, kv_bytes ? kv_bytes : 64 * cb_lm_kv_block_bytes(r->m, block),
                             block, &r->kv, &e);
    if (rc) printf("# rig: %s\n", e.msg);
    CB_CHECK_EQ_INT(rc, 0);
    return rc;
}

static void rig_free(rig *r) {
    cb_lm_kv_destroy(r->kv);
    cb_lm_model_destroy(r->m);
    cb_lm_weights_destroy(r->w);
}

/* The requests: prompt i has 3 + 7 i ids (3 .. 52), ids a function of (i, j). */
static int32_t g_prompt[NREQ][64];
static int prompt_len(int i) { return 3 + 7 * i; }

static void make_prompts(void) {
    for (int i = 0; i < NREQ; i++)
        for (int j = 0; j < 64; j++) g_prompt[i][j] = (int32_t)((i * 131 + j * 17 + 5) % 509);
}

static cb_engine_request request(int i, int sampled, int ignore_eos, int max_new) {
    cb_engine_request q;
    memset(&q, 0, sizeof q);
    q.prompt = g_prompt[i];
    q.n_prompt = prompt_len(i);
    q.max_new_tokens = max_new;
    q.ignore_eos = ignore_eos;
    q.sampling = (cb_sample_params){sampled ? 0.9 : 0.0, sampled ? 40 : 0, sampled ? 0.95 : 1.0};
    q.seed = 1000 + (uint64_t)i;
    q.index = i;
    q.user = (void *)(intptr_t)(i + 1);
    return q;
}

static int64_t g_clock;
static int64_t count_clock(void) { return g_clock += 1000; }

typedef struct outcome {
    int32_t ids[NREQ][MAXNEW];
    int32_t n[NREQ];
    cb_engine_result res[NREQ];
    int finished, max_running, max_used, steps;
} outcome;

/* Runs requests [0, NREQ) through an engine; join_late adds the odd ones after 3 steps. */
static int run_all(rig *r, int max_batch, int tokens_per_step, int sampled, int join_late,
                   outcome *o) {
    memset(o, 0, sizeof *o);
    cb_engine_opts opts = CB_ENGINE_OPTS_DEFAULT;
    opts.max_batch = max_batch;
    opts.max_tokens_per_step = tokens_per_step;
    opts.seed = 77;
    opts.now_ns = count_clock;
    cb_engine *e = NULL;
    cb_error err = {0};
    int rc = cb_engine_create(r->m, r->kv, &opts, &e, &err);
    CB_CHECK_EQ_INT(rc, 0);
    if (rc) return -1;
    for (int i = 0; i < NREQ; i++) {
        if (join_late && i % 2) continue;
        cb_engine_request q = request(i, sampled, 1, MAXNEW);
        CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), 0);
    }
    for (int guard = 0; guard < 10000 && (cb_engine_n_active(e) > 0 || join_late); guard++) {
        if (join_late && o->steps == 3) {
            for (int i = 1; i < NREQ; i += 2) {
                cb_engine_request q = request(i, sampled, 1, MAXNEW);
                CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), 0);
            }
            join_late = 0;
        }
        rc = cb_engine_step(e, &err);
        if (rc) {
            printf("# step: %s\n", err.msg);
            break;
        }
        o->steps++;
        const cb_engine_step_stats *st = cb_engine_last_step(e);
        if (st->running > o->max_running) o->max_running = st->running;
        if (st->kv_blocks_used > o->max_used) o->max_used = st->kv_blocks_used;
        CB_CHECK(st->prefill_tokens + st->decode_tokens <= tokens_per_step);
        for (int k = 0; k < cb_engine_n_finished(e); k++) {
            const cb_engine_result *res = cb_engine_finished(e, k);
            int i = (int)(intptr_t)res->user - 1;
            CB_CHECK_EQ_INT(res->index, i);
            CB_CHECK_EQ_INT(res->n_prompt, prompt_len(i));
            o->n[i] = res->n_output;
            memcpy(o->ids[i], res->output, sizeof(int32_t) * (size_t)res->n_output);
            o->res[i] = *res;
            o->finished++;
        }
    }
    CB_CHECK_EQ_INT(cb_lm_kv_free_blocks(r->kv), cb_lm_kv_n_blocks(r->kv));
    cb_engine_destroy(e);
    return rc;
}

static int same_ids(const outcome *a, const outcome *b) {
    int ok = 1;
    for (int i = 0; i < NREQ; i++)
        ok &= a->n[i] == b->n[i] && memcmp(a->ids[i], b->ids[i], sizeof a->ids[i]) == 0;
    return ok;
}

static void check_batching(const char *preset, cb_lm_dtype dt) {
    rig r;
    if (rig_make(&r, preset, dt, 0, 16, NULL)) return;
    for (int sampled = 0; sampled < 2; sampled++) {
        outcome alone, batch, chunked, late;
        run_all(&r, 1, 512, sampled, 0, &alone);
        run_all(&r, 8, 512, sampled, 0, &batch);
        run_all(&r, 8, 8, sampled, 0, &chunked);
        run_all(&r, 8, 16, sampled, 1, &late);
        CB_CHECK_EQ_INT(alone.finished, NREQ);
        CB_CHECK_EQ_INT(alone.max_running, 1);
        CB_CHECK_EQ_INT(batch.max_running, 8);
        for (int i = 0; i < NREQ; i++) CB_CHECK_EQ_INT(alone.n[i], MAXNEW);
        CB_CHECK(same_ids(&alone, &batch));
        CB_CHECK(same_ids(&alone, &chunked));
        CB_CHECK(same_ids(&alone, &late));
        CB_CHECK(chunked.steps > batch.steps); /* the prompts did span steps */
        /* greedy and sampled differ (the sampler did sample) */
        if (sampled) printf("# %s %s: sampled run of request 7 starts %d %d %d\n", preset,
                            dt == CB_LM_BF16 ? "bf16" : "f32", alone.ids[7][0], alone.ids[7][1],
                            alone.ids[7][2]);
        /* timings: arrival 0 here; first token after admission; gaps add up */
        for (int i = 0; i < NREQ; i++) {
            const cb_engine_result *x = &batch.res[i];
            CB_CHECK(x->first_token_ns > x->admit_ns);
            CB_CHECK(x->last_token_ns >= x->first_token_ns);
            CB_CHECK_EQ_INT(x->itl_sum_ns, x->last_token_ns - x->first_token_ns);
            CB_CHECK(x->itl_max_ns > 0 && x->itl_max_ns <= x->itl_sum_ns);
            CB_CHECK_EQ_INT(x->finish, CB_ENGINE_FINISH_LENGTH);
            CB_CHECK_EQ_INT(x->kv_wait_ns, 0);
        }
    }
    rig_free(&r);
}

static void test_batching(void) {
    check_batching("tiny", CB_LM_F32);
    check_batching("tiny-llama", CB_LM_BF16);
    check_batching("tiny-qwen3", CB_LM_F32);
}

static void test_kv_pressure(void) {
    rig big, small;
    if (rig_make(&big, "tiny", CB_LM_F32, 0, 16, NULL)) return;
    /* the two longest requests need (52 + 11) / 16 -> 4 blocks each: 8 blocks fit two */
    size_t bb = cb_lm_kv_block_bytes(big.m, 16);
    if (rig_make(&small, "tiny", CB_LM_F32, 8 * bb + bb / 2, 16, NULL)) return;
    CB_CHECK_EQ_INT(cb_lm_kv_n_blocks(small.kv), 8);
    outcome ref, tight;
    run_all(&big, 8, 64, 0, 0, &ref);
    run_all(&small, 8, 64, 0, 0, &tight);
    CB_CHECK_EQ_INT(tight.finished, NREQ);
    CB_CHECK(same_ids(&ref, &tight));
    CB_CHECK(tight.max_used <= 8);
    CB_CHECK(tight.max_running < 8);
    int waited = 0;
    for (int i = 0; i < NREQ; i++) waited += tight.res[i].kv_wait_ns > 0;
    printf("# %d of %d requests waited for KV blocks; %d steps (unconstrained %d)\n", waited, NREQ,
           tight.steps, ref.steps);
    CB_CHECK(waited >= 4);
    CB_CHECK_EQ_INT(tight.res[0].kv_wait_ns, 0); /* the first is admitted at once */
    rig_free(&small);
    rig_free(&big);
}

static void test_errors(void) {
    rig r;
    cb_error err = {0};
    cb_lm_config c;
    CB_CHECK_EQ_INT(cb_lm_config_preset("tiny", &c, &err), 0);
    if (rig_make(&r, "tiny", CB_LM_F32, 0, 16, NULL)) return; /* 64 blocks of 16 */
    /* a KV budget below one block */
    cb_lm_kv *kv = NULL;
    size_t bb = cb_lm_kv_block_bytes(r.m, 16);
    CB_CHECK_EQ_INT(cb_lm_kv_create(r.m, bb - 1, 16, &kv, &err), CB_ECONFIG);
    printf("# %s\n", err.msg);
    CB_CHECK_CONTAINS(err.msg, "kv_cache_bytes");
    CB_CHECK(kv == NULL);
    /* engine options */
    cb_engine *e = NULL;
    cb_engine_opts o = CB_ENGINE_OPTS_DEFAULT;
    o.max_batch = 16;
    o.max_tokens_per_step = 8;
    CB_CHECK_EQ_INT(cb_engine_create(r.m, r.kv, &o, &e, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "max_tokens_per_step");
    o = (cb_engine_opts)CB_ENGINE_OPTS_DEFAULT;
    o.max_waiting = 2;
    CB_CHECK_EQ_INT(cb_engine_create(r.m, r.kv, &o, &e, &err), 0);
    if (!e) return;
    static int32_t long_prompt[1000];
    cb_engine_request q = request(0, 0, 1, 30);
    q.prompt = long_prompt;
    q.n_prompt = 1000;
    q.index = 5;
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), CB_EINVAL); /* 1030 > 1024 positions */
    printf("# %s\n", err.msg);
    CB_CHECK_CONTAINS(err.msg, "request 5:");
    CB_CHECK_CONTAINS(err.msg, "1030 positions");
    CB_CHECK_CONTAINS(err.msg, "max_positions 1024");
    q.n_prompt = 990;
    q.max_new_tokens = 30; /* 1019 positions cached: 64 blocks: fits exactly */
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), 0);
    cb_engine_cancel_all(e);
    CB_CHECK_EQ_INT(cb_engine_n_finished(e), 1);
    rig small;
    if (rig_make(&small, "tiny", CB_LM_F32, 10 * bb, 16, NULL) == 0) {
        cb_engine *e2 = NULL;
        CB_CHECK_EQ_INT(cb_engine_create(small.m, small.kv, &o, &e2, &err), 0);
        q.n_prompt = 150;
        q.max_new_tokens = 20; /* 169 positions: 11 blocks of a 10-block pool */
        q.index = 9;
        if (e2) CB_CHECK_EQ_INT(cb_engine_add(e2, &q, &err), CB_EINVAL);
        printf("# %s\n", err.msg);
        CB_CHECK_CONTAINS(err.msg, "request 9:");
        CB_CHECK_CONTAINS(err.msg, "11 KV blocks");
        CB_CHECK_CONTAINS(err.msg, "(10 blocks)");
        cb_engine_destroy(e2);
        rig_free(&small);
    }
    /* bad ids, bad sampling, full waiting list */
    q = request(1, 0, 1, 4);
    int32_t bad[2] = {3, 512};
    q.prompt = bad;
    q.n_prompt = 2;
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "vocabulary");
    q = request(1, 0, 1, 4);
    q.sampling.top_p = 0;
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), CB_EINVAL);
    CB_CHECK_CONTAINS(err.msg, "top_p");
    q = request(1, 0, 1, 4);
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), 0);
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), 0);
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), CB_EFULL);
    CB_CHECK_EQ_INT(cb_engine_step(e, &err), 0); /* admits both: room again */
    CB_CHECK_EQ_INT(cb_engine_n_running(e), 2);
    CB_CHECK_EQ_INT(cb_engine_add(e, &q, &err), 0);
    cb_engine_cancel_all(e);
    CB_CHECK_EQ_INT(cb_engine_n_finished(e), 3);
    for (int i = 0; i < 3; i++)
        CB_CHECK_EQ_INT(cb_engine_finished(e, i)->finish, CB_ENGINE_FINISH_CANCELLED);
    CB_CHECK_EQ_INT(cb_engine_n_active(e), 0);
    CB_CHECK_EQ_INT(cb_lm_kv_free_blocks(r.kv), cb_lm_kv_n_blocks(r.kv));
    cb_engine_destroy(e);
    rig_free(&r);
}

static void test_eos(void) {
    rig r;
    if (rig_make(&r, "tiny", CB_LM_F32, 0, 16, NULL)) return;
    outcome a;
    run_all(&r, 8, 512, 0, 0, &a);
    rig_free(&r);
    /* an EOS id that request 2's greedy run produces first at an output >= 4 (when possible) */
    int first = 4;
    for (int j = 4; j < MAXNEW; j++) { /* the first output not seen before it, from 4 on */
        int seen = 0;
        for (int k = 0; k < j; k++) seen |= a.ids[2][k] == a.ids[2][j];
        if (!seen) {
            first = j;
            break;
        }
    }
    int32_t eos = a.ids[2][first];
    for (int k = 0; k < first; k++)
        if (a.ids[2][k] == eos) first = k;
    if (rig_make(&r, "tiny", CB_LM_F32, 0, 16, &eos)) return;
    cb_engine *e = NULL;
    cb_engine_opts o = CB_ENGINE_OPTS_DEFAULT;
    cb_error err = {0};
    CB_CHECK_EQ_INT(cb_engine_create(r.m, r.kv, &o, &e, &err), 0);
    if (!e) return;
    cb_engine_request q0 = request(2, 0, 0, MAXNEW), q1 = request(2, 0, 1, MAXNEW);
    q1.user = (void *)(intptr_t)100;
    CB_CHECK_EQ_INT(cb_engine_add(e, &q0, &err), 0);
    CB_CHECK_EQ_INT(cb_engine_add(e, &q1, &err), 0);
    int done = 0;
    for (int s = 0; s < 100 && cb_engine_n_active(e); s++) {
        CB_CHECK_EQ_INT(cb_engine_step(e, &err), 0);
        for (int k = 0; k < cb_engine_n_finished(e); k++) {
            const cb_engine_result *x = cb_engine_finished(e, k);
            if (x->user == (void *)(intptr_t)100) {
                CB_CHECK_EQ_INT(x->n_output, MAXNEW);
                CB_CHECK_EQ_INT(x->finish, CB_ENGINE_FINISH_LENGTH);
                CB_CHECK(memcmp(x->output, a.ids[2], sizeof a.ids[2]) == 0);
            } else {
                CB_CHECK_EQ_INT(x->n_output, first + 1);
                CB_CHECK_EQ_INT(x->finish, CB_ENGINE_FINISH_EOS);
                CB_CHECK_EQ_INT(x->output[x->n_output - 1], eos);
            }
            done++;
        }
    }
    CB_CHECK_EQ_INT(done, 2);
    cb_engine_destroy(e);
    rig_free(&r);
}

int main(void) {
    make_prompts();
    CB_RUN(test_batching);
    CB_RUN(test_kv_pressure);
    CB_RUN(test_errors);
    CB_RUN(test_eos);
    return cb_test_done();
}
