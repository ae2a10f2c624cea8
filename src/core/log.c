/* core/log.c - the one log sink (see log.h). */
#include "core/log.h"

#include "colobench/error.h"

#include <stdarg.h>

void cb_logf(const cb_logger *lg, int level, const char *subsys, const char *fmt, ...) {
    int max = lg ? lg->level : CB_LOG_WARN;
    if (level > max) return;
    FILE *out = lg && lg->out ? lg->out : stderr;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[1024], shown[4096], sub[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* A stage name or message may carry bytes from a config or a data file: control characters
     * are shown escaped, never sent to the terminal. */
    cb_error_escape(shown, sizeof shown, line);
    cb_error_escape(sub, sizeof sub, subsys ? subsys : "core");
    fprintf(out, "colobench: %s: %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], sub, shown);
}
