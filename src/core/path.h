/* core/path.h - file-system path helpers. */
#ifndef CB_CORE_PATH_H
#define CB_CORE_PATH_H

#include <stddef.h>

/* mkdir -p with mode 0755. Returns 0 or a negated errno; on failure the prefix that could not
 * be created is copied into failed (when given). */
int cb_path_mkdir_p(const char *dir, char *failed, size_t failed_size);

#endif
