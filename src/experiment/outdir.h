/* experiment/outdir.h - the output directory a run owns.
 *
 * - Locked for the run: an exclusive flock on DIR/.colobench.lock (created without following a
 *   symbolic link; it holds the owner's pid for the message another run gets). A second run into
 *   the same directory is refused ("in use by another colobench run (pid N)") instead of
 *   interleaving rows with the first.
 * - Contained: every directory colobench creates in it is a real directory made with mkdirat and
 *   opened with O_NOFOLLOW; names that become path components are validated when the benchmark
 *   is loaded (core/spec.c), never taken as paths.
 * - Cleared of what an earlier run left: when the directory held colobench results before (its
 *   .colobench.lock existed), colobench's own files (known names) in it and in its pipelines/ and
 *   baseline/ trees are removed before a run; other files are left alone, and a directory that
 *   was not colobench's (`-o .`) is never cleared. A file there that colobench would replace
 *   (cb_outdir_would_replace: the benchmark's own config.yaml, say) is refused by the caller.
 * - Written without following symbolic links and atomically where a file is written whole:
 *   cb_outdir_write_file writes DIR/NAME.tmp.PID (created O_EXCL|O_NOFOLLOW), checks every write
 *   and the close, and renames it over NAME; on any failure it removes the temporary file and
 *   reports the cause (e.g. "No space left on device").
 * Thread-safety: one controlling thread. Ownership: the cb_outdir is caller storage; paths are
 * copied. Maximum: paths of CB_PATH_MAX bytes.
 */
#ifndef CB_EXPERIMENT_OUTDIR_H
#define CB_EXPERIMENT_OUTDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "colobench/error.h"
#include "core/path.h"

typedef struct cb_outdir {
    char path[CB_PATH_MAX];
    int fd;        /* the directory, -1 when closed */
    int lock_fd;   /* .colobench.lock, flock'd; -1 when closed */
    bool ours;     /* the directory held colobench results before (its lock file existed) */
} cb_outdir;

/* mkdir -p path, opens and locks it. CB_ECONFIG (a usage error: choose another -o) with the
 * cause: it cannot be created or opened, or another run holds it. */
int cb_outdir_open(cb_outdir *od, const char *path, cb_error *err);
void cb_outdir_close(cb_outdir *od);

/* Removes colobench's own outputs of an earlier run (see above); nothing when !od->ours. */
int cb_outdir_clear(cb_outdir *od, cb_error *err);

/* Whether path is the same file as one colobench writes in od (by device and inode): then it
 * would be replaced by the run. The name is copied into which. */
bool cb_outdir_would_replace(const cb_outdir *od, const char *path, char *which, size_t size);

/* Creates od/rel (a relative path of components already validated, e.g. "baseline/a") as real
 * directories, component by component, refusing symbolic links; its path goes into out. */
int cb_outdir_mkdir(const cb_outdir *od, const char *rel, char *out, size_t out_size, cb_error *err);

/* Writes dir/name atomically through fn (a FILE opened for writing; fn returns CB_OK or an error
 * with err set). CB_OK, or CB_EIO with the cause (the temporary file removed). */
typedef int (*cb_write_fn)(void *arg, FILE *f, cb_error *err);
int cb_outdir_write_file(const char *dir, const char *name, cb_write_fn fn, void *arg,
                         cb_error *err);

/* Reads a whole file (at most max_bytes) into a cb_malloc'd, NUL-terminated buffer. */
int cb_read_file(const char *path, size_t max_bytes, char **out, size_t *len, cb_error *err);

#endif
