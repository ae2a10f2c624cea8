/* core/log.h - the one log sink.
 *
 * A cb_logger is owned by whoever runs things (the CLI, a test) and passed down; NULL means
 * "stderr at WARN". Lines read "colobench: LEVEL: subsystem: message". Thread-safe: one
 * fprintf per line (stdio locks the stream).
 */
#ifndef CB_CORE_LOG_H
#define CB_CORE_LOG_H

#include <stdio.h>

#include "colobench/stage.h" /* CB_LOG_* levels */

typedef struct cb_logger {
    int level;  /* lines with level <= this are printed */
    FILE *out;  /* NULL = stderr */
} cb_logger;

void cb_logf(const cb_logger *lg, int level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
