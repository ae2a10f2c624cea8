/* core/host.h - the cb_host table given to stages, and payload buffer functions.
 * emit/n_outputs/report are provided by the runtime (runtime.c); the rest lives in host.c. */
#ifndef CB_CORE_HOST_H
#define CB_CORE_HOST_H

#include "colobench/stage.h"

cb_buffer *cb_buffer_new(size_t size_bytes);
void cb_buffer_ref(cb_buffer *buf);
void cb_buffer_unref(cb_buffer *buf);
int cb_buffer_make_writable(cb_buffer **buf);

/* Fills a host table with everything but emit/n_outputs/report (which stay NULL). */
void cb_host_init_base(cb_host *host);

#endif
