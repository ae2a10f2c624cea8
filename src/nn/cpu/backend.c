/* nn/cpu/backend.c - the CPU backend on oneDNN (being written: issue 5). */
#include "nn/nn.h"

static int cb__cpu_todo(cb_nn_exec *e, cb_error *err) {
    (void)e;
    return cb_error_set(err, CB_EUNSUPPORTED, "the CPU neural-network backend is not built yet");
}
static void cb__cpu_destroy(cb_nn_exec *e) { (void)e; }

const cb_nn_backend cb_nn_backend_cpu = {.name = "cpu", .create = cb__cpu_todo,
                                         .destroy = cb__cpu_destroy};
