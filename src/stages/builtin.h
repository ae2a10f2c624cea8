/* stages/builtin.h - declarations of the built-in stage ops tables (from builtin.def). */
#ifndef CB_STAGES_BUILTIN_H
#define CB_STAGES_BUILTIN_H

#include "colobench/stage.h"

#define CB_BUILTIN(sym) extern const cb_stage_ops sym;
#include "stages/builtin.def"
#undef CB_BUILTIN

#endif
