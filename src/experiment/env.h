/* experiment/env.h - env.json: where and with what a run was made.
 * Host name, CPU model (/proc/cpuinfo), online cores, kernel (uname), compiler (__VERSION__),
 * colobench version, wall-clock start (ISO 8601 UTC and ns), command line. */
#ifndef CB_EXPERIMENT_ENV_H
#define CB_EXPERIMENT_ENV_H

#include <stdint.h>
#include <stdio.h>

#include "colobench/error.h"

int cb_env_write_json(FILE *out, int64_t wall_start_ns, int argc, char *const *argv,
                      cb_error *err);

#endif
