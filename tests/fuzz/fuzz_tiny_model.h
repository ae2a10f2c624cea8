/* tests/fuzz/fuzz_tiny_model.h - the tiny model shared by fuzz_safetensors and the generator of
 * its seed corpus (gen_corpus_safetensors.c), so that the seeds load into it completely.
 *
 * What: input [1, 1, F] -> flatten -> batch norm "bn" (F features) -> linear "fc" (F -> 2, bias).
 * For F = 4 (the seeds' model) its parameters, in state-dict order, are bn.weight [4], bn.bias
 * [4], bn.running_mean [4], bn.running_var [4], bn.num_batches_tracked [] (I64), fc.weight [2, 4]
 * and fc.bias [2]: 7 tensors, 112 data bytes, so a complete weights file stays well under the
 * fuzzer's -max_len (the "mlp" architecture's smallest file is about 570 KB). Another F gives the
 * same names with other shapes. Ownership: the caller frees the model.
 */
#ifndef CB_FUZZ_TINY_MODEL_H
#define CB_FUZZ_TINY_MODEL_H

#include "nn/nn.h"

static inline int fuzz_tiny_model(int features, cb_nn_model **out, cb_error *err) {
    cb_nn_model *m = NULL;
    int rc = cb_nn_model_new("tiny", 1, 1, features, &m, err);
    if (rc) return rc;
    int x = cb_nn_flatten(m, 0, err);
    if (x >= 0) x = cb_nn_bn(m, x, "bn", err);
    if (x >= 0) x = cb_nn_linear(m, x, "fc", 2, 1, err);
    if (x < 0) {
        cb_nn_model_free(m);
        return x;
    }
    m->output = x;
    m->classes = 2;
    *out = m;
    return CB_OK;
}

#endif
