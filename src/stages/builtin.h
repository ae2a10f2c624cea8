/* stages/builtin.h - the built-in stages (listed in builtin.def) and the registry holding them.
 * The stages layer registers them: core/ knows no stage. */
#ifndef CB_STAGES_BUILTIN_H
#define CB_STAGES_BUILTIN_H

#include "colobench/stage.h"
#include "core/registry.h"

#define CB_BUILTIN(sym) extern const cb_stage_ops sym;
#include "stages/builtin.def"
#undef CB_BUILTIN

/* Adds every built-in stage to reg. */
int cb_builtin_register(cb_registry *reg, cb_error *err);

/* A new registry holding the built-in stages (cb_registry_destroy it). */
int cb_builtin_registry(cb_registry **out, cb_error *err);

#endif
