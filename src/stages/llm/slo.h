/* stages/llm/slo.h - the `slo` parameter of the LLM serving stages (llm.generate, llm.openai):
 * a service-level objective {ttft_ms: N, tpot_ms: M} (either or both) and whether a request met
 * it (slo_met, whose rate is the goodput). One definition, so an engine in process and a server
 * behind llm.openai are judged by the same rule: TTFT <= ttft_ms, and TPOT <= tpot_ms for
 * requests of 2 or more output tokens. Header-only, no state. */
#ifndef CB_STAGES_LLM_SLO_H
#define CB_STAGES_LLM_SLO_H

#include <string.h>

#include "colobench/stage.h"
#include "stages/util/util.h"

/* The parameter's table entry. */
#define CB_LLM_SLO_PARAM()                                                                     \
    {"slo", CB_PARAM_INT_MAP, NULL, 1, 3600000, NULL,                                          \
     "service-level objective for slo_met (goodput): {ttft_ms: 500, tpot_ms: 50}"}

typedef struct cb_llm_slo {
    int on, has_ttft, has_tpot;
    double ttft_ns, tpot_ns;
} cb_llm_slo;

/* The check of the parameter's value (the stage's check()): known keys, at least one. */
static inline int cb_llm_slo_check(const cb_param_value *v, cb_error *err) {
    for (size_t i = 0; v->has_value && i < v->n; i++)
        if (strcmp(v->keys[i], "ttft_ms") != 0 && strcmp(v->keys[i], "tpot_ms") != 0)
            return cb_util_error(err, CB_ECONFIG, "slo: unknown key '%s' (ttft_ms, tpot_ms)",
                                 v->keys[i]);
    if (v->has_value && v->n == 0)
        return cb_util_error(err, CB_ECONFIG, "slo: give ttft_ms and/or tpot_ms");
    return CB_OK;
}

/* The objective from a checked value (off when the config has none). */
static inline cb_llm_slo cb_llm_slo_from(const cb_param_value *v) {
    cb_llm_slo s;
    memset(&s, 0, sizeof s);
    s.on = v->has_value;
    for (size_t i = 0; s.on && i < v->n; i++) {
        double ns = (double)v->ints[i] * 1e6;
        if (strcmp(v->keys[i], "ttft_ms") == 0) {
            s.has_ttft = 1;
            s.ttft_ns = ns;
        } else {
            s.has_tpot = 1;
            s.tpot_ns = ns;
        }
    }
    return s;
}

/* 1 when a request with this TTFT, TPOT and output length met the objective. */
static inline int cb_llm_slo_met(const cb_llm_slo *s, double ttft_ns, double tpot_ns,
                                 int64_t n_output) {
    return (!s->has_ttft || ttft_ns <= s->ttft_ns) &&
           (!s->has_tpot || n_output < 2 || tpot_ns <= s->tpot_ns);
}

#endif
