/* core/monitor_sources.h - the names and bits of the resource monitor's sources, from one table
 * (core/monitor_sources.def).
 *
 * Why in core: the config reader (core/spec.c) validates `monitors.sources` and writes it back,
 * and the monitor (monitor/monitor.c) samples them; core includes nothing from monitor/, so the
 * table lives here and both use it. Pure data and pure functions; thread-safe.
 */
#ifndef CB_CORE_MONITOR_SOURCES_H
#define CB_CORE_MONITOR_SOURCES_H

#include <stddef.h>

enum {
#define CB_MON_SOURCE(NAME, bit, name, doc) NAME = 1u << (bit),
#include "core/monitor_sources.def"
#undef CB_MON_SOURCE
};

/* Every source's bit, and how many sources there are. */
enum {
    CB_MON_ALL = 0
#define CB_MON_SOURCE(NAME, bit, name, doc) | NAME
#include "core/monitor_sources.def"
#undef CB_MON_SOURCE
};
enum {
    CB_MON_N_SOURCES = 0
#define CB_MON_SOURCE(NAME, bit, name, doc) + 1
#include "core/monitor_sources.def"
#undef CB_MON_SOURCE
};

/* The names in table order ("cpu", "memory", ...): cb_monitor_source_names[i] has the bit
 * cb_monitor_source_bits[i]. For did-you-mean lists and writers. */
extern const char *const cb_monitor_source_names[CB_MON_N_SOURCES];
extern const unsigned cb_monitor_source_bits[CB_MON_N_SOURCES];

/* Parses a source name ("cpu", ...) into its CB_MON_* bit; 0 if unknown (or NULL). */
unsigned cb_monitor_source_bit(const char *name);

/* The name of one CB_MON_* bit; NULL if bit is not exactly one source's bit. */
const char *cb_monitor_source_name(unsigned bit);

/* Writes the names of the sources in bits, in table order, joined by sep, into buf
 * (NUL-terminated, truncated to size). Returns the length it needed (snprintf-like). */
size_t cb_monitor_sources_format(unsigned bits, const char *sep, char *buf, size_t size);

#endif
