/* stages/builtin.c - registers the built-in stages of builtin.def.
 * Thread-safety: as the registry (filled from one thread). Ownership: the ops tables are static. */
#include "stages/builtin.h"

#define CB_BUILTIN(sym) &sym,
static const cb_stage_ops *const builtin_ops[] = {
#include "stages/builtin.def"
};
#undef CB_BUILTIN

int cb_builtin_register(cb_registry *reg, cb_error *err) {
    for (size_t i = 0; i < sizeof builtin_ops / sizeof builtin_ops[0]; i++) {
        int rc = cb_registry_add(reg, builtin_ops[i], "built-in", err);
        if (rc) return rc;
    }
    return CB_OK;
}

int cb_builtin_registry(cb_registry **out, cb_error *err) {
    int rc = cb_registry_create(out, err);
    if (rc) return rc;
    rc = cb_builtin_register(*out, err);
    if (rc) {
        cb_registry_destroy(*out);
        *out = NULL;
    }
    return rc;
}
