/* core/path.c - file-system paths: creating output directories.
 * Thread-safety: reentrant. Ownership: borrows its arguments. */
#include "core/path.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int cb_path_mkdir_p(const char *dir, char *failed, size_t failed_size) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        if (failed && failed_size) snprintf(failed, failed_size, "%s", dir);
        return -ENAMETOOLONG;
    }
    size_t len = strlen(path);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            if (failed && failed_size) snprintf(failed, failed_size, "%s", path);
            return -e;
        }
        path[i] = c;
    }
    return 0;
}
