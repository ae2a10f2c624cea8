/* core/path.h - file-system path helpers: creating output directories and creating files in them
 * without following symbolic links.
 *
 * Why: colobench often runs as root on GPU machines, and its output directory may hold entries
 * someone else planted. A file colobench writes is always a new inode it created itself:
 * cb_path_create removes whatever entry has the name (a symbolic link is removed, never
 * followed), then creates the file with O_EXCL | O_NOFOLLOW. cb_path_open_dir refuses a
 * symbolic link as the last component (directories colobench creates inside the output
 * directory are real directories).
 * Thread-safety: reentrant. Ownership: borrows its arguments; returned descriptors belong to the
 * caller. Maximum: paths of CB_PATH_MAX bytes.
 */
#ifndef CB_CORE_PATH_H
#define CB_CORE_PATH_H

#include <stddef.h>

#define CB_PATH_MAX 4096

/* mkdir -p with mode 0755. Returns 0 or a negated errno; on failure the prefix that could not
 * be created is copied into failed (when given). */
int cb_path_mkdir_p(const char *dir, char *failed, size_t failed_size);

/* Creates (or replaces) the regular file dir/name for writing: removes an existing entry of that
 * name (not following a symbolic link; a directory there is an error), then creates it with
 * O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode 0644. dir_fd is an open directory, or
 * AT_FDCWD with a name holding the path. Returns the descriptor, or a negated errno. */
int cb_path_create_at(int dir_fd, const char *name);
/* The same, with the directory given as a path (opened with O_DIRECTORY for the call). */
int cb_path_create(const char *dir, const char *name);

/* Opens directory dir/name (O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC): a symbolic link or a file
 * there is an error. dir_fd as above. Returns the descriptor, or a negated errno. */
int cb_path_open_dir_at(int dir_fd, const char *name);

/* Creates directory dir_fd/name (0755) unless it exists as a real directory; refuses a symbolic
 * link or a file of that name. Returns 0 or a negated errno. */
int cb_path_mkdir_at(int dir_fd, const char *name);

/* Writes all of buf to fd (retrying short writes and EINTR). 0 or a negated errno. */
int cb_path_write_all(int fd, const void *buf, size_t len);

/* The one rule for relative paths in a config (plugins, replay files, stage paths, --set values
 * alike): they resolve against the directory of the config file. cb_path_config_dir writes that
 * directory of the config named `config` into out: its name's directory part, or "" (the
 * current directory) for a bare name and for a config read from a stream (a name under /dev/ or
 * /proc/: /dev/stdin, <(...)). It depends on the name only, so a child process (same working
 * directory, same name) resolves every path the same way. */
void cb_path_config_dir(const char *config, char *out, size_t size);

/* Resolves p against dir ("" = the current directory): absolute paths stay, relative ones are
 * joined to dir; the result is made canonical (realpath) when it exists. 0, or -ENAMETOOLONG
 * (out then holds nothing usable). */
int cb_path_resolve(const char *dir, const char *p, char *out, size_t size);

#endif
