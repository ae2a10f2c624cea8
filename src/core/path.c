/* core/path.c - file-system paths: output directories, files created without following
 * symbolic links, and the one rule for a config's relative paths (see path.h).
 * Thread-safety: reentrant. Ownership: borrows its arguments. */
#include "core/path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int cb_path_create_at(int dir_fd, const char *name) {
    if (unlinkat(dir_fd, name, 0) != 0 && errno != ENOENT) return -errno;
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    return fd >= 0 ? fd : -errno;
}

int cb_path_create(const char *dir, const char *name) {
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return -errno;
    int fd = cb_path_create_at(d, name);
    close(d);
    return fd;
}

int cb_path_open_dir_at(int dir_fd, const char *name) {
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int cb_path_mkdir_at(int dir_fd, const char *name) {
    if (mkdirat(dir_fd, name, 0755) == 0) return 0;
    if (errno != EEXIST) return -errno;
    struct stat sb;
    if (fstatat(dir_fd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) return -errno;
    return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

int cb_path_write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (k == 0) return -EIO;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

void cb_path_config_dir(const char *config, char *out, size_t size) {
    if (!size) return;
    out[0] = '\0';
    if (!config || !strncmp(config, "/dev/", 5) || !strncmp(config, "/proc/", 6)) return;
    const char *slash = strrchr(config, '/');
    if (!slash) return;
    size_t len = slash == config ? 1 : (size_t)(slash - config); /* "/x.yaml" -> "/" */
    if (len >= size) return;
    memcpy(out, config, len);
    out[len] = '\0';
}

int cb_path_resolve(const char *dir, const char *p, char *out, size_t size) {
    char joined[PATH_MAX], real[PATH_MAX];
    int n = p[0] != '/' && dir && dir[0]
                ? snprintf(joined, sizeof joined, "%s%s%s", dir,
                           dir[strlen(dir) - 1] == '/' ? "" : "/", p)
                : snprintf(joined, sizeof joined, "%s", p);
    if (n < 0 || (size_t)n >= sizeof joined) return -ENAMETOOLONG;
    if (realpath(joined, real)) {
        n = snprintf(out, size, "%s", real);
    } else if (joined[0] != '/' && getcwd(real, sizeof real)) { /* absolute even if missing */
        n = snprintf(out, size, "%s%s%s", real, strcmp(real, "/") ? "/" : "", joined);
    } else {
        n = snprintf(out, size, "%s", joined);
    }
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
