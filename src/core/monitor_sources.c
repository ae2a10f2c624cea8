/* core/monitor_sources.c - the monitor source table (see monitor_sources.h), generated from
 * core/monitor_sources.def. Pure; thread-safe. */
#include "core/monitor_sources.h"

#include <stdio.h>
#include <string.h>

const char *const cb_monitor_source_names[CB_MON_N_SOURCES] = {
#define CB_MON_SOURCE(NAME, bit, name, doc) name,
#include "core/monitor_sources.def"
#undef CB_MON_SOURCE
};

const unsigned cb_monitor_source_bits[CB_MON_N_SOURCES] = {
#define CB_MON_SOURCE(NAME, bit, name, doc) NAME,
#include "core/monitor_sources.def"
#undef CB_MON_SOURCE
};

_Static_assert(CB_MON_ALL == (1u << CB_MON_N_SOURCES) - 1u,
               "monitor_sources.def: bits must be 0, 1, 2, ... without gaps or repeats");

unsigned cb_monitor_source_bit(const char *name) {
    for (size_t i = 0; name && i < CB_MON_N_SOURCES; i++)
        if (!strcmp(name, cb_monitor_source_names[i])) return cb_monitor_source_bits[i];
    return 0;
}

const char *cb_monitor_source_name(unsigned bit) {
    for (size_t i = 0; i < CB_MON_N_SOURCES; i++)
        if (cb_monitor_source_bits[i] == bit) return cb_monitor_source_names[i];
    return NULL;
}

size_t cb_monitor_sources_format(unsigned bits, const char *sep, char *buf, size_t size) {
    size_t len = 0;
    if (size) buf[0] = '\0';
    for (size_t i = 0; i < CB_MON_N_SOURCES; i++) {
        if (!(bits & cb_monitor_source_bits[i])) continue;
        int k = snprintf(len < size ? buf + len : NULL, len < size ? size - len : 0, "%s%s",
                         len ? sep : "", cb_monitor_source_names[i]);
        if (k > 0) len += (size_t)k;
    }
    return len;
}
