/* experiment/outdir.c - locking, containment, clearing and atomic writes of the output directory
 * (see outdir.h).
 *
 * Clearing walks at most CLEAR_DEPTH levels of real directories (never a symbolic link: each is
 * opened with O_NOFOLLOW), removes entries whose names colobench writes, recurses into the
 * directories colobench makes (pipelines/, baseline/ and their children, sweep points) and
 * removes those that end up empty. Anything else is left where it is.
 * Thread-safety: one controlling thread. Ownership: see outdir.h.
 */
#include "experiment/outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"

#define LOCK_NAME ".colobench.lock"
#define CLEAR_DEPTH 4

/* Files colobench writes into a run or phase directory. */
static const char *const k_outputs[] = {
    "events.csv", "queries.csv", "stage_metrics.csv", "events.bin", "queries.bin", "metrics.bin",
    "splits.bin", "metrics.csv", "summary.json",      "config.yaml", "env.json",   "trace.json",
    "sweep.csv",  "sweep.json",  "run.state",         "child.state",
};

static bool is_output(const char *name) {
    for (size_t i = 0; i < sizeof k_outputs / sizeof k_outputs[0]; i++)
        if (!strcmp(name, k_outputs[i])) return true;
    /* Temporaries of an interrupted atomic write: NAME.tmp.PID. */
    const char *t = strstr(name, ".tmp.");
    if (t) {
        for (size_t i = 0; i < sizeof k_outputs / sizeof k_outputs[0]; i++) {
            size_t l = strlen(k_outputs[i]);
            if ((size_t)(t - name) == l && !strncmp(name, k_outputs[i], l)) return true;
        }
    }
    return false;
}

int cb_outdir_open(cb_outdir *od, const char *path, cb_error *err) {
    memset(od, 0, sizeof *od);
    od->fd = od->lock_fd = -1;
    if ((size_t)snprintf(od->path, sizeof od->path, "%s", path) >= sizeof od->path)
        return cb_error_set(err, CB_ECONFIG, "%s: output path too long", path);
    char failed[CB_PATH_MAX];
    int e = cb_path_mkdir_p(path, failed, sizeof failed);
    if (e) return cb_error_set(err, CB_ECONFIG, "%s: cannot create the output directory: %s", failed, strerror(-e));
    od->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (od->fd < 0) {
        e = errno;
        return cb_error_set(err, CB_ECONFIG, "%s: cannot open the output directory: %s", path,
                            e == ENOTDIR ? "not a directory" : strerror(e));
    }
    struct stat lsb;
    od->ours = fstatat(od->fd, LOCK_NAME, &lsb, AT_SYMLINK_NOFOLLOW) == 0;
    od->lock_fd = openat(od->fd, LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (od->lock_fd < 0) {
        e = errno;
        cb_outdir_close(od);
        return cb_error_set(err, CB_ECONFIG, "%s/%s: cannot create the lock file: %s", path, LOCK_NAME,
                            e == ELOOP ? "it is a symbolic link" : strerror(e));
    }
    if (flock(od->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        e = errno;
        char pid[32] = "";
        ssize_t k = pread(od->lock_fd, pid, sizeof pid - 1, 0);
        if (k > 0) pid[k] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        cb_outdir_close(od);
        if (e == EWOULDBLOCK)
            return cb_error_set(err, CB_ECONFIG,
                                "%s: the output directory is in use by another colobench run%s%s%s: "
                                "choose another with -o",
                                path, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        return cb_error_set(err, CB_ECONFIG, "%s/%s: cannot lock: %s", path, LOCK_NAME, strerror(e));
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(od->lock_fd, 0) != 0 || pwrite(od->lock_fd, buf, (size_t)n, 0) != n) {
        /* Only a courtesy for the message another run prints: not worth failing for. */
    }
    return CB_OK;
}

void cb_outdir_close(cb_outdir *od) {
    if (od->lock_fd >= 0) close(od->lock_fd); /* releases the flock */
    if (od->fd >= 0) close(od->fd);
    od->lock_fd = od->fd = -1;
}

/* Directories colobench makes below a run directory, by depth: pipelines/NAME, baseline/NAME
 * (which has its own pipelines/NAME), and sweep points (MODE-xN, run directories themselves). */
static bool is_own_dir(const char *name, int depth, const char *parent) {
    if (!strcmp(name, "pipelines") || !strcmp(name, "baseline")) return true;
    if (parent && (!strcmp(parent, "pipelines") || !strcmp(parent, "baseline"))) return true;
    if (depth == 0) { /* a sweep point: MODE-xN */
        const char *x = strstr(name, "-x");
        if (x && x[2] >= '0' && x[2] <= '9') {
            static const char *const modes[] = {"threads", "processes", "mps", "mig"};
            for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
                if ((size_t)(x - name) == strlen(modes[i]) && !strncmp(name, modes[i], (size_t)(x - name)))
                    return true;
        }
    }
    return false;
}

static int clear_dir(int dfd, const char *path, int depth, const char *parent, cb_error *err) {
    int rfd = dup(dfd);
    if (rfd < 0) return cb_error_set(err, CB_EIO, "%s: %s", path, strerror(errno));
    DIR *d = fdopendir(rfd);
    if (!d) {
        close(rfd);
        return cb_error_set(err, CB_EIO, "%s: cannot read: %s", path, strerror(errno));
    }
    int rc = CB_OK;
    struct dirent *de;
    /* Names are collected first: removing entries while reading a directory is allowed, but
     * recursing keeps more descriptors open than needed. */
    char (*names)[256] = NULL;
    size_t n = 0, cap = 0;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            if (nc > 65536) break; /* a directory this large is not ours to walk */
            void *nn = cb_realloc(names, nc * sizeof *names);
            if (!nn) {
                rc = cb_error_set(err, CB_ENOMEM, "out of memory");
                break;
            }
            names = nn;
            cap = nc;
        }
        snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n && !rc; i++) {
        const char *name = names[i];
        struct stat sb;
        if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth >= CLEAR_DEPTH || !is_own_dir(name, depth, parent)) continue;
            int cfd = cb_path_open_dir_at(dfd, name);
            if (cfd < 0) continue;
            char sub[CB_PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, name);
            rc = clear_dir(cfd, sub, depth + 1, name, err);
            close(cfd);
            if (!rc) (void)unlinkat(dfd, name, AT_REMOVEDIR); /* only when now empty */
        } else if (is_output(name)) {
            if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT)
                rc = cb_error_set(err, CB_EIO, "%s/%s: cannot remove the earlier run's file: %s", path,
                                  name, strerror(errno));
        }
    }
    cb_free(names);
    return rc;
}

int cb_outdir_clear(cb_outdir *od, cb_error *err) {
    return od->ours ? clear_dir(od->fd, od->path, 0, NULL, err) : CB_OK;
}

bool cb_outdir_would_replace(const cb_outdir *od, const char *path, char *which, size_t size) {
    struct stat want;
    if (!path || stat(path, &want) != 0) return false;
    for (size_t i = 0; i < sizeof k_outputs / sizeof k_outputs[0]; i++) {
        struct stat sb;
        if (fstatat(od->fd, k_outputs[i], &sb, 0) == 0 && sb.st_dev == want.st_dev && sb.st_ino == want.st_ino) {
            snprintf(which, size, "%s", k_outputs[i]);
            return true;
        }
    }
    return false;
}

int cb_outdir_mkdir(const cb_outdir *od, const char *rel, char *out, size_t out_size, cb_error *err) {
    if ((size_t)snprintf(out, out_size, "%s/%s", od->path, rel) >= out_size)
        return cb_error_set(err, CB_EIO, "%s/%s: path too long", od->path, rel);
    int dfd = dup(od->fd);
    if (dfd < 0) return cb_error_set(err, CB_EIO, "%s: %s", od->path, strerror(errno));
    char comp[CB_PATH_MAX];
    const char *p = rel;
    while (*p) {
        size_t l = strcspn(p, "/");
        if (l == 0 || l >= sizeof comp) {
            close(dfd);
            return cb_error_set(err, CB_EIO, "%s: bad directory name", out);
        }
        memcpy(comp, p, l);
        comp[l] = '\0';
        int e = cb_path_mkdir_at(dfd, comp);
        int nfd = e ? e : cb_path_open_dir_at(dfd, comp);
        close(dfd);
        if (nfd < 0)
            return cb_error_set(err, CB_EIO, "%s: cannot create directory %s: %s", out, comp,
                                nfd == -ELOOP || nfd == -ENOTDIR ? "something other than a directory is in the way"
                                                                 : strerror(-nfd));
        dfd = nfd;
        p += l;
        if (*p == '/') p++;
    }
    close(dfd);
    return CB_OK;
}

int cb_outdir_write_file(const char *dir, const char *name, cb_write_fn fn, void *arg,
                         cb_error *err) {
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", name, (long)getpid());
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return cb_error_set(err, CB_EIO, "%s: cannot open: %s", dir, strerror(errno));
    int fd = cb_path_create_at(dfd, tmp);
    if (fd < 0) {
        close(dfd);
        return cb_error_set(err, CB_EIO, "%s/%s: cannot create: %s", dir, name, strerror(-fd));
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        unlinkat(dfd, tmp, 0);
        close(dfd);
        return cb_error_set(err, CB_EIO, "%s/%s: cannot write: %s", dir, name, strerror(e));
    }
    static const int k_buf = 1 << 16;
    setvbuf(f, NULL, _IOFBF, (size_t)k_buf);
    cb_error fe;
    cb_error_clear(&fe);
    errno = 0;
    int rc = fn(arg, f, &fe);
    int e = 0;
    if (fflush(f) != 0 && !e) e = errno ? errno : EIO;
    if (ferror(f) && !e) e = errno ? errno : EIO;
    if (fclose(f) != 0 && !e) e = errno ? errno : EIO;
    if (rc == CB_OK && !e && renameat(dfd, tmp, dfd, name) != 0) e = errno;
    if (rc != CB_OK || e) {
        unlinkat(dfd, tmp, 0);
        close(dfd);
        if (rc != CB_OK && !e && fe.code != CB_OK) {
            if (err) *err = fe;
            cb_error_prefix(err, "%s/%s", dir, name);
            return rc;
        }
        return cb_error_set(err, CB_EIO, "%s/%s: cannot write: %s", dir, name,
                            strerror(e ? e : EIO));
    }
    close(dfd);
    return CB_OK;
}

int cb_read_file(const char *path, size_t max_bytes, char **out, size_t *len, cb_error *err) {
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cb_error_set(err, errno == ENOENT ? CB_ENOENT : CB_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    char *buf = cb_malloc(cap + 1);
    int rc = buf ? CB_OK : cb_error_set(err, CB_ENOMEM, "out of memory");
    while (!rc) {
        if (n == cap) {
            if (cap >= max_bytes) {
                rc = cb_error_set(err, CB_ECONFIG, "%s: larger than %zu bytes", path, max_bytes);
                break;
            }
            size_t nc = cap * 2 > max_bytes ? max_bytes : cap * 2;
            char *nb = cb_realloc(buf, nc + 1);
            if (!nb) {
                rc = cb_error_set(err, CB_ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            cap = nc;
        }
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = cb_error_set(err, CB_EIO, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    close(fd);
    if (rc) {
        cb_free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return CB_OK;
}
