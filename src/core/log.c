/* core/log.c - the one log sink (see log.h). */
#include "core/log.h"

#include <stdarg.h>

void cb_logf(const cb_logger *lg, int level, const char *subsys, const char *fmt, ...) {
    int max = lg ? lg->level : CB_LOG_WARN;
    if (level > max) return;
    FILE *out = lg && lg->out ? lg->out : stderr;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(out, "colobench: %s: %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level],
            subsys ? subsys : "core", line);
}
