/* experiment/servers.c - a benchmark's servers: start, readiness, watch, stop (see servers.h for
 * the process design and why no server outlives a run).
 *
 * Design: every server has a supervisor process (sup_main, after fork: async-signal-safe calls
 * only) that owns the server's process group; colobench keeps the supervisor's pid and the read
 * end of a pipe on which the supervisor reports fixed-size records (sup_msg). Everything the
 * supervisor and the server use after the fork (argv, envp, the program's path, cwd, the cpu
 * set, descriptors) is built before it in a sup_args. Readiness is probed with one libcurl easy
 * handle per server (proxies off: a readiness probe of 127.0.0.1 must not go to $http_proxy).
 * Log tails (errors) read at most 4 KiB of each log's end and keep its last 20 lines.
 * Thread-safety: one controlling thread (servers.h). Ownership: the cb_servers owns its arrays
 * (one allocation per server for argv/envp strings), descriptors and child processes.
 */
#include "experiment/servers.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/path.h"
#include "experiment/child.h"
#include "experiment/phase.h"

extern char **environ;

#define PROBE_PERIOD_NS 100000000LL     /* readiness probes every 100 ms */
#define PROBE_CONNECT_MS 250L
#define PROBE_TIMEOUT_MS 1000L          /* a probe that connected but gets no answer */
#define KILL_GRACE_NS 5000000000LL      /* after SIGKILL: how long the supervisor waits */
#define PARENT_GRACE_NS 5000000000LL    /* colobench's wait for a supervisor beyond stop_timeout */
#define TAIL_BYTES 4096
#define TAIL_LINES 20
#define MSG_TAIL_BYTES 320              /* of a log tail inside an error message */
#define WATCH_MAX_PROCS 64              /* a server's processes given to the monitors */

/* What a supervisor reports (one write each: atomic, below PIPE_BUF). */
enum { SUP_STARTED = 1, SUP_ENDED = 2, SUP_FORK_FAILED = 3 };
enum { SUP_ON_REQUEST = 1, SUP_KILLED = 2 };
typedef struct sup_msg {
    int32_t kind;
    int32_t value;   /* STARTED: the server's pid; ENDED: its wait status; FORK_FAILED: errno */
    int32_t flags;   /* ENDED: SUP_ON_REQUEST, SUP_KILLED */
} sup_msg;

/* Everything the supervisor and the server use after the fork. */
typedef struct sup_args {
    pid_t parent;
    const char *path;        /* the resolved program */
    char **argv, **envp;
    const char *cwd;
    cpu_set_t cpus;
    bool pin;
    int64_t stop_timeout_ns;
    int status_fd, out_fd, err_fd, null_fd; /* all >= 3 */
    long max_fd;             /* bound of the closing loop where close_range is missing */
} sup_args;

typedef enum srv_state { SRV_NEW, SRV_STARTED, SRV_READY, SRV_ENDED } srv_state;

typedef struct server {
    const cb_server_spec *spec;
    char path[CB_PATH_MAX];
    char **argv, **envp;     /* argv strings in one block; envp points into environ and block */
    char *block;
    char probe_url[CB_SERVER_URL_MAX + CB_SERVER_MAX_STRING];
    char out_rel[CB_SERVER_NAME_MAX + 32], err_rel[CB_SERVER_NAME_MAX + 32];
    char out_path[CB_PATH_MAX], err_path[CB_PATH_MAX];
    pid_t sup;               /* supervisor, 0 when none or reaped */
    pid_t pid;               /* the server (its process group), 0 before it started */
    int status_fd;           /* read end of the supervisor's pipe, -1 when closed */
    srv_state state;
    int64_t start_ns, ready_ns;
    bool ended, on_request, killed, reported;
    int wstatus;             /* the server's, when ended */
    CURL *curl;
    char last_probe[160];    /* the last probe's outcome, for a timeout's message */
} server;

struct cb_servers {
    cb_servers_opts o;
    char dir[CB_PATH_MAX];   /* DIR/servers */
    int dir_fd;
    size_t n;
    server *s;
    bool curl_init;
};

/* ---- messages and logs ----------------------------------------------------------------------- */

static FILE *msg_out(const cb_servers *sv) { return sv->o.msg ? sv->o.msg : stderr; }

static void say(const cb_servers *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const cb_servers *sv, const char *fmt, ...) {
    char line[2048], shown[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    cb_error_escape(shown, sizeof shown, line);
    fprintf(msg_out(sv), "colobench: %s\n", shown);
}

/* The last TAIL_LINES lines of the last TAIL_BYTES bytes of path into buf ("" when empty). */
static void log_tail(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return;
    char raw[TAIL_BYTES + 1];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > TAIL_BYTES ? end - TAIL_BYTES : 0;
    ssize_t got = end > 0 ? pread(fd, raw, (size_t)(end - from), from) : 0;
    close(fd);
    if (got <= 0) return;
    size_t len = (size_t)got;
    while (len > 0 && (raw[len - 1] == '\n' || raw[len - 1] == '\r')) len--;
    raw[len] = '\0';
    size_t start = 0;
    int lines = 0;
    for (size_t i = len; i-- > 0;)
        if (raw[i] == '\n' && ++lines == TAIL_LINES) {
            start = i + 1;
            break;
        }
    if (from > 0 && lines < TAIL_LINES) { /* a cut first line: start at the next full one */
        char *nl = memchr(raw, '\n', len);
        if (nl) start = (size_t)(nl - raw) + 1;
    }
    snprintf(buf, size, "%s", raw + start);
}

/* Prints both logs' tails, each line indented, for a server that failed. */
static void print_tails(const cb_servers *sv, const server *s) {
    const char *paths[2] = {s->err_path, s->out_path}, *rels[2] = {s->err_rel, s->out_rel};
    for (int k = 0; k < 2; k++) {
        char tail[TAIL_BYTES + 1];
        log_tail(paths[k], tail, sizeof tail);
        if (!tail[0]) {
            say(sv, "server '%s': %s is empty", s->spec->name, rels[k]);
            continue;
        }
        say(sv, "server '%s': the end of %s:", s->spec->name, rels[k]);
        for (char *line = tail; line;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            char shown[1024];
            cb_error_escape(shown, sizeof shown, line);
            fprintf(msg_out(sv), "  | %s\n", shown);
            line = nl ? nl + 1 : NULL;
        }
    }
    fflush(msg_out(sv));
}

/* The end of the logs on one line for an error message: "; stderr ends: ... | ..." */
static void short_tail(const server *s, char *buf, size_t size) {
    buf[0] = '\0';
    const char *paths[2] = {s->err_path, s->out_path}, *names[2] = {"stderr", "stdout"};
    size_t off = 0;
    for (int k = 0; k < 2 && off < size; k++) {
        char tail[TAIL_BYTES + 1];
        log_tail(paths[k], tail, sizeof tail);
        if (!tail[0]) continue;
        size_t l = strlen(tail);
        const char *p = l > MSG_TAIL_BYTES ? tail + l - MSG_TAIL_BYTES : tail;
        char one[MSG_TAIL_BYTES + 64];
        size_t o = 0;
        for (; *p && o + 4 < sizeof one; p++) {
            if (*p == '\n') {
                memcpy(one + o, " | ", 3);
                o += 3;
            } else {
                one[o++] = *p;
            }
        }
        one[o] = '\0';
        int w = snprintf(buf + off, size - off, "; %s ends: %s%s", names[k], l > MSG_TAIL_BYTES ? "..." : "", one);
        if (w > 0) off += (size_t)w;
    }
    if (!buf[0]) snprintf(buf, size, "; its logs are empty");
}

/* ---- preparing a start (before any fork) --------------------------------------------------- */

/* Finds name on PATH as execvp would (a name with '/' is taken as it is, relative to cwd). */
static int find_program(const char *name, const char *cwd, char *out, size_t size) {
    if (strchr(name, '/')) {
        if (name[0] == '/') snprintf(out, size, "%s", name);
        else snprintf(out, size, "%s/%s", cwd, name);
        return access(out, X_OK) == 0 ? 0 : -errno;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    int last = -ENOENT;
    for (const char *p = path;;) {
        size_t l = strcspn(p, ":");
        if ((size_t)snprintf(out, size, "%.*s%s%s", (int)l, p, l ? "/" : "", name) < size) {
            struct stat sb;
            if (stat(out, &sb) == 0 && S_ISREG(sb.st_mode)) {
                if (access(out, X_OK) == 0) return 0;
                last = -EACCES;
            }
        }
        if (!p[l]) break;
        p += l + 1;
    }
    return last;
}

/* Bytes of src once {host} and {port} are replaced, with its NUL. */
static size_t subst_len(const cb_server_spec *spec, const char *src) {
    size_t n = 1;
    for (const char *p = src; *p;) {
        if (!strncmp(p, "{host}", 6)) n += strlen(spec->host), p += 6;
        else if (!strncmp(p, "{port}", 6)) n += 5, p += 6;
        else n++, p++;
    }
    return n;
}

/* Copies src into *cur with {host} and {port} replaced; advances *cur. */
static char *subst(const cb_server_spec *spec, const char *src, char **cur, const char *end) {
    char port[16];
    snprintf(port, sizeof port, "%d", spec->port);
    char *out = *cur;
    size_t o = 0, room = (size_t)(end - *cur);
    for (const char *p = src; *p;) {
        const char *rep = NULL;
        size_t skip = 0;
        if (!strncmp(p, "{host}", 6)) rep = spec->host, skip = 6;
        else if (!strncmp(p, "{port}", 6)) rep = port, skip = 6;
        size_t l = rep ? strlen(rep) : 1;
        if (o + l + 1 > room) return NULL;
        memcpy(out + o, rep ? rep : p, l);
        o += l;
        p += rep ? skip : 1;
    }
    out[o++] = '\0';
    *cur += o;
    return out;
}

/* argv and envp of server s: the inherited environment less what the server sets, its env
 * (substituted), then CUDA_VISIBLE_DEVICES for device, the MPS variables for mps. */
static int build_exec(const cb_servers *sv, server *s, cb_error *err) {
    const cb_server_spec *sp = s->spec;
    char extra[8192];
    const char *xvars[16];
    size_t nx = 0;
    if (sp->device) {
        int w = snprintf(extra, sizeof extra, "CUDA_VISIBLE_DEVICES=%s",
                         sp->device_is_mig ? sp->device : sp->gpu_index >= 0 ? sp->device + 5 : "");
        if (w > 0) xvars[nx++] = extra;
    }
    if (sp->mps) {
        if (!sv->o.mps)
            return cb_error_set(err, CB_ECONFIG, "server '%s': mps: true, but the run has no MPS daemon", sp->name);
        size_t used = nx ? strlen(extra) + 1 : 0;
        int k = cb_mps_child_env(sv->o.mps, 0, 0, sp->gpu_index >= 0 ? sp->gpu_index : 0, extra + used,
                                 sizeof extra - used, xvars + nx, 16 - nx);
        if (k < 0) return cb_error_set(err, CB_EINVAL, "server '%s': mps: environment too large", sp->name);
        nx += (size_t)k;
    }
    size_t n_environ = 0;
    while (environ && environ[n_environ]) n_environ++;
    size_t bytes = 1;
    for (size_t i = 0; i < sp->n_command; i++) bytes += subst_len(sp, sp->command[i]);
    for (size_t i = 0; i < sp->n_env; i++) bytes += strlen(sp->env_names[i]) + 1 + subst_len(sp, sp->env_values[i]);
    for (size_t i = 0; i < nx; i++) bytes += strlen(xvars[i]) + 1;
    s->block = cb_malloc(bytes);
    s->argv = cb_calloc(sp->n_command + 1, sizeof *s->argv);
    s->envp = cb_calloc(n_environ + sp->n_env + nx + 1, sizeof *s->envp);
    if (!s->block || !s->argv || !s->envp) return cb_error_set(err, CB_ENOMEM, "out of memory");
    char *cur = s->block, *end = s->block + bytes;
    for (size_t i = 0; i < sp->n_command; i++)
        if (!(s->argv[i] = subst(sp, sp->command[i], &cur, end)))
            return cb_error_set(err, CB_ENOMEM, "server '%s': command too long", sp->name);
    size_t k = 0;
    for (size_t i = 0; i < n_environ; i++) {
        const char *e = environ[i];
        size_t nl = strcspn(e, "=");
        bool over = false;
        for (size_t j = 0; j < sp->n_env && !over; j++)
            over = strlen(sp->env_names[j]) == nl && !strncmp(sp->env_names[j], e, nl);
        for (size_t j = 0; j < nx && !over; j++) over = !strncmp(xvars[j], e, nl) && xvars[j][nl] == '=';
        if (!over) s->envp[k++] = environ[i];
    }
    for (size_t j = 0; j < sp->n_env; j++) {
        size_t nl = strlen(sp->env_names[j]);
        if ((size_t)(end - cur) < nl + 2) return cb_error_set(err, CB_ENOMEM, "server '%s': env too large", sp->name);
        char *var = cur;
        memcpy(cur, sp->env_names[j], nl);
        cur[nl] = '=';
        cur += nl + 1;
        if (!subst(sp, sp->env_values[j], &cur, end))
            return cb_error_set(err, CB_ENOMEM, "server '%s': env too large", sp->name);
        s->envp[k++] = var;
    }
    for (size_t j = 0; j < nx; j++) {
        size_t l = strlen(xvars[j]) + 1;
        if ((size_t)(end - cur) < l) return cb_error_set(err, CB_ENOMEM, "server '%s': env too large", sp->name);
        memcpy(cur, xvars[j], l);
        s->envp[k++] = cur;
        cur += l;
    }
    s->envp[k] = NULL;
    return CB_OK;
}

int cb_servers_create(const cb_servers_opts *o, cb_servers **out, cb_error *err) {
    *out = NULL;
    const cb_spec *spec = o->spec;
    cb_servers *sv = cb_calloc(1, sizeof *sv);
    if (!sv) return cb_error_set(err, CB_ENOMEM, "out of memory");
    sv->o = *o;
    sv->dir_fd = -1;
    sv->n = spec->n_servers;
    sv->s = cb_calloc(sv->n ? sv->n : 1, sizeof *sv->s);
    if (!sv->s) {
        cb_free(sv);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < sv->n; i++) {
        sv->s[i].spec = &spec->servers[i];
        sv->s[i].status_fd = -1;
        sv->s[i].ready_ns = -1;
    }
    int rc = cb_outdir_mkdir(o->od, "servers", sv->dir, sizeof sv->dir, err);
    if (!rc) {
        sv->dir_fd = open(sv->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sv->dir_fd < 0) rc = cb_error_set(err, CB_EIO, "%s: %s", sv->dir, strerror(errno));
    }
    for (size_t i = 0; !rc && i < sv->n; i++) {
        server *s = &sv->s[i];
        const cb_server_spec *sp = s->spec;
        snprintf(s->out_rel, sizeof s->out_rel, "servers/%s.stdout", sp->name);
        snprintf(s->err_rel, sizeof s->err_rel, "servers/%s.stderr", sp->name);
        snprintf(s->out_path, sizeof s->out_path, "%s/%s.stdout", sv->dir, sp->name);
        snprintf(s->err_path, sizeof s->err_path, "%s/%s.stderr", sv->dir, sp->name);
        snprintf(s->probe_url, sizeof s->probe_url, "%s%s", sp->url, sp->ready);
        int e = find_program(sp->command[0], sp->cwd, s->path, sizeof s->path);
        if (e) {
            char key[64];
            snprintf(key, sizeof key, "servers[%zu].command[0]", i);
            const cb_node *c = cb_node_get(sp->node, "command");
            rc = cb_error_set(err, CB_ECONFIG, "server '%s': cannot run '%s': %s%s", sp->name, sp->command[0],
                              strerror(-e), strchr(sp->command[0], '/') ? "" : " (searched PATH)");
            if (c && c->kind == CB_NODE_SEQ && c->n) cb_error_at(err, c->items[0]->file, c->items[0]->line, c->items[0]->col);
            cb_error_key(err, key);
            break;
        }
        rc = build_exec(sv, s, err);
    }
    if (!rc && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = cb_error_set(err, CB_EIO, "servers: libcurl cannot be initialised");
    else if (!rc)
        sv->curl_init = true;
    if (rc) {
        cb_servers_destroy(sv);
        return rc;
    }
    *out = sv;
    return CB_OK;
}

/* ---- the supervisor (after fork: async-signal-safe calls only) ------------------------------ */

static int64_t sup_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sup_write(int fd, int32_t kind, int32_t value, int32_t flags) {
    sup_msg m = {kind, value, flags};
    ssize_t w;
    do w = write(fd, &m, sizeof m);
    while (w < 0 && errno == EINTR);
}

/* Writes "colobench: cannot start PATH: errno N\n" to fd (no stdio after fork). */
static void sup_say_errno(int fd, const char *what, const char *path, int e) {
    char num[16];
    int n = 0;
    char rev[16];
    unsigned v = (unsigned)(e < 0 ? -e : e);
    do rev[n++] = (char)('0' + v % 10), v /= 10;
    while (v && n < 15);
    for (int i = 0; i < n; i++) num[i] = rev[n - 1 - i];
    num[n] = '\0';
    const char *parts[] = {"colobench: ", what, " ", path, ": errno ", num, "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        ssize_t w = write(fd, parts[i], strlen(parts[i]));
        (void)w;
    }
}

/* Closes descriptors lo..hi (close_range, or one by one up to max_fd where it is missing). */
static void sup_close_range(unsigned lo, unsigned hi, long max_fd) {
    if (close_range(lo, hi, 0) == 0) return;
    for (long fd = lo; fd <= (long)hi && fd < max_fd; fd++) close((int)fd);
}

/* Closes every descriptor from 3 up except keep[0..n) (sorted ascending). */
static void sup_close_except(const int *keep, size_t n, long max_fd) {
    unsigned lo = 3;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)keep[i] > lo) sup_close_range(lo, (unsigned)keep[i] - 1, max_fd);
        if ((unsigned)keep[i] + 1 > lo) lo = (unsigned)keep[i] + 1;
    }
    sup_close_range(lo, ~0U, max_fd);
}

static void sup_server(const sup_args *a, pid_t sup) __attribute__((noreturn));
static void sup_server(const sup_args *a, pid_t sup) {
    setpgid(0, 0);
    static const int reset[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaction(reset[i], &dfl, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != sup) _exit(125);
    if (dup2(a->null_fd, 0) < 0 || dup2(a->out_fd, 1) < 0 || dup2(a->err_fd, 2) < 0) _exit(126);
    sup_close_range(3, ~0U, a->max_fd);
    if (chdir(a->cwd) != 0) {
        sup_say_errno(2, "cannot change to the directory", a->cwd, errno);
        _exit(126);
    }
    if (a->pin && sched_setaffinity(0, sizeof a->cpus, &a->cpus) != 0) {
        sup_say_errno(2, "cannot pin to its cpus:", a->path, errno);
        _exit(126);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(a->path, a->argv, a->envp);
    sup_say_errno(2, "cannot execute", a->path, errno);
    _exit(127);
}

static void sup_main(const sup_args *a) __attribute__((noreturn));
static void sup_main(const sup_args *a) {
    setpgid(0, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, NULL); /* an ignored SIGCHLD would reap for us: waitpid must see them */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int keep[4] = {a->status_fd, a->out_fd, a->err_fd, a->null_fd};
    for (int i = 1; i < 4; i++) /* sort the four */
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    sup_close_except(keep, 4, a->max_fd);
    dup2(a->null_fd, 0);
    dup2(a->null_fd, 1);
    dup2(a->null_fd, 2);
    if (getppid() != a->parent) _exit(0); /* colobench is gone already: start nothing */
    pid_t self = getpid();
    pid_t c = fork();
    if (c < 0) {
        sup_write(a->status_fd, SUP_FORK_FAILED, errno, 0);
        _exit(125);
    }
    if (c == 0) sup_server(a, self);
    setpgid(c, c); /* also done by the child: whichever runs first */
    close(a->out_fd);
    close(a->err_fd);
    sup_write(a->status_fd, SUP_STARTED, (int32_t)c, 0);
    bool stopping = false, on_request = false, killed = false, c_done = false;
    int c_status = 0;
    int64_t deadline = 0;
    for (;;) {
        /* Reap whatever ended: the server, or any orphaned descendant (we are their subreaper). */
        for (;;) {
            int st;
            pid_t r = waitpid(-1, &st, WNOHANG);
            if (r == c) {
                c_done = true;
                c_status = st;
                if (!stopping) { /* it ended by itself: say so now, then clear its group */
                    sup_write(a->status_fd, SUP_ENDED, st, 0);
                    stopping = true;
                    kill(-c, SIGTERM);
                    deadline = sup_now_ns() + a->stop_timeout_ns;
                }
                continue;
            }
            if (r > 0) continue;
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && errno == ECHILD) { /* no descendant left */
                if (on_request) sup_write(a->status_fd, SUP_ENDED, c_status, SUP_ON_REQUEST | (killed ? SUP_KILLED : 0));
                if (on_request) _exit(0);
                if (WIFEXITED(c_status)) _exit(WEXITSTATUS(c_status));
                _exit(WIFSIGNALED(c_status) ? 128 + WTERMSIG(c_status) : 125);
            }
            break;
        }
        int64_t now = sup_now_ns();
        if (stopping && now >= deadline) {
            if (killed) { /* something survives SIGKILL (uninterruptible, or left the group) */
                if (on_request || !c_done)
                    sup_write(a->status_fd, SUP_ENDED, c_status, (on_request ? SUP_ON_REQUEST : 0) | SUP_KILLED);
                _exit(124);
            }
            kill(-c, SIGKILL);
            killed = true;
            deadline = now + KILL_GRACE_NS;
        }
        int64_t wait_ns = stopping ? deadline - now : 1000000000LL;
        if (wait_ns > 1000000000LL) wait_ns = 1000000000LL;
        if (wait_ns < 1000000) wait_ns = 1000000;
        struct timespec ts = {(time_t)(wait_ns / 1000000000LL), (long)(wait_ns % 1000000000LL)};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &ts);
        bool stop = sig == SIGTERM || sig == SIGINT || sig == SIGHUP;
        if (!stop && getppid() != a->parent) stop = true; /* belt and braces with the death signal */
        if (stop && !on_request) {
            on_request = true;
            if (!stopping) {
                stopping = true;
                kill(-c, SIGTERM);
                deadline = sup_now_ns() + a->stop_timeout_ns;
            }
        }
    }
}

/* ---- colobench's side ----------------------------------------------------------------------- */

/* A descriptor for the supervisor's use, moved to >= 3 (0-2 are the ones it replaces). */
static int high_fd(int fd) {
    if (fd < 0 || fd >= 3) return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return h;
}

static int write_pid(void *arg, FILE *f, cb_error *err) {
    fprintf(f, "%d\n", (int)*(const pid_t *)arg);
    return ferror(f) ? cb_error_set(err, CB_EIO, "cannot write") : CB_OK;
}

/* Reads the supervisor's records that have arrived (non-blocking). */
static void read_records(server *s) {
    while (s->status_fd >= 0) {
        sup_msg m;
        ssize_t r = read(s->status_fd, &m, sizeof m);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0 || (r < 0 && errno != EAGAIN)) { /* the supervisor has exited */
            close(s->status_fd);
            s->status_fd = -1;
            break;
        }
        if (r != (ssize_t)sizeof m) break;
        if (m.kind == SUP_STARTED && !s->pid) {
            s->pid = (pid_t)m.value;
        } else if (m.kind == SUP_ENDED && !s->ended) {
            s->ended = true;
            s->wstatus = m.value;
            s->on_request = (m.flags & SUP_ON_REQUEST) != 0;
            s->killed = (m.flags & SUP_KILLED) != 0;
            s->state = SRV_ENDED;
        } else if (m.kind == SUP_ENDED) {
            s->killed |= (m.flags & SUP_KILLED) != 0;
        } else if (m.kind == SUP_FORK_FAILED) {
            s->ended = true;
            s->wstatus = 125 << 8;
            s->state = SRV_ENDED;
        }
    }
}

/* Forks the supervisor of s. CB_OK once the server's pid is known. */
static int start_one(cb_servers *sv, server *s, cb_error *err) {
    const cb_server_spec *sp = s->spec;
    char name[CB_SERVER_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s.stdout", sp->name);
    int out_fd = high_fd(cb_path_create_at(sv->dir_fd, name));
    snprintf(name, sizeof name, "%s.stderr", sp->name);
    int err_fd = high_fd(cb_path_create_at(sv->dir_fd, name));
    int null_fd = high_fd(open("/dev/null", O_RDWR | O_CLOEXEC));
    int pfd[2] = {-1, -1};
    int rc = CB_OK;
    if (out_fd < 0 || err_fd < 0)
        rc = cb_error_set(err, CB_EIO, "%s: cannot create its log: %s", sv->dir, strerror(-(out_fd < 0 ? out_fd : err_fd)));
    else if (null_fd < 0 || pipe2(pfd, O_CLOEXEC) != 0)
        rc = cb_error_set(err, CB_EIO, "server '%s': %s", sp->name, strerror(errno));
    if (!rc) {
        pfd[0] = high_fd(pfd[0]);
        pfd[1] = high_fd(pfd[1]);
        if (pfd[0] < 0 || pfd[1] < 0 || fcntl(pfd[0], F_SETFL, O_NONBLOCK) != 0)
            rc = cb_error_set(err, CB_EIO, "server '%s': %s", sp->name, strerror(errno));
    }
    sup_args a;
    memset(&a, 0, sizeof a);
    if (!rc) {
        a.parent = getpid();
        a.path = s->path;
        a.argv = s->argv;
        a.envp = s->envp;
        a.cwd = sp->cwd;
        CPU_ZERO(&a.cpus);
        for (size_t i = 0; i < sp->n_cpus; i++) CPU_SET(sp->cpus[i], &a.cpus);
        a.pin = sp->n_cpus > 0;
        a.stop_timeout_ns = sp->stop_timeout_ns;
        a.status_fd = pfd[1];
        a.out_fd = out_fd;
        a.err_fd = err_fd;
        a.null_fd = null_fd;
        a.max_fd = sysconf(_SC_OPEN_MAX);
        if (a.max_fd < 0 || a.max_fd > 65536) a.max_fd = 65536;
        s->start_ns = cb_clock_now_ns();
        pid_t p = fork();
        if (p == 0) sup_main(&a);
        if (p < 0) rc = cb_error_set(err, CB_EIO, "server '%s': fork: %s", sp->name, strerror(errno));
        else s->sup = p;
    }
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    if (null_fd >= 0) close(null_fd);
    if (pfd[1] >= 0) close(pfd[1]);
    if (rc) {
        if (pfd[0] >= 0) close(pfd[0]);
        return rc;
    }
    s->status_fd = pfd[0];
    s->state = SRV_STARTED;
    /* The first record is the server's pid (or why there is none): the supervisor writes it
     * right after its fork. */
    int64_t until = cb_clock_now_ns() + 10000000000LL;
    for (;;) {
        read_records(s);
        if (s->pid || s->ended || s->status_fd < 0 || cb_clock_now_ns() >= until) break;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (!s->pid)
        return cb_error_set(err, CB_EIO, "server '%s': its supervisor (pid %d) did not start it", sp->name, (int)s->sup);
    snprintf(name, sizeof name, "%s.pid", sp->name);
    if (cb_outdir_write_file(sv->dir, name, write_pid, &s->pid, err) != CB_OK) return CB_EIO;
    if (!sv->o.quiet) say(sv, "server '%s': started (pid %d): %s", sp->name, (int)s->pid, s->argv[0]);
    return CB_OK;
}

static size_t discard(char *p, size_t size, size_t n, void *arg) {
    (void)p;
    (void)arg;
    return size * n;
}

/* One readiness probe: true when the server answered 2xx. */
static bool probe(server *s) {
    if (!s->curl) {
        s->curl = curl_easy_init();
        if (!s->curl) {
            snprintf(s->last_probe, sizeof s->last_probe, "libcurl: cannot create a handle");
            return false;
        }
        curl_easy_setopt(s->curl, CURLOPT_URL, s->probe_url);
        curl_easy_setopt(s->curl, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, PROBE_CONNECT_MS);
        curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, PROBE_TIMEOUT_MS);
        curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 0L);
    }
    CURLcode c = curl_easy_perform(s->curl);
    if (c != CURLE_OK) {
        snprintf(s->last_probe, sizeof s->last_probe, "%s", curl_easy_strerror(c));
        return false;
    }
    long code = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
    snprintf(s->last_probe, sizeof s->last_probe, "HTTP %ld", code);
    return code >= 200 && code < 300;
}

/* The error for a server that ended by itself; its log tail printed once. */
static int ended_error(cb_servers *sv, server *s, const char *when, cb_error *err) {
    char st[96], tail[MSG_TAIL_BYTES * 2 + 128];
    cb_child_describe_status(s->wstatus, st, sizeof st);
    if (!s->reported) print_tails(sv, s);
    s->reported = true;
    short_tail(s, tail, sizeof tail);
    return cb_error_set(err, CB_ESTAGE, "server '%s' (pid %d) %s %s%s", s->spec->name, (int)s->pid, st, when, tail);
}

int cb_servers_start(cb_servers *sv, cb_error *err) {
    int rc = CB_OK;
    for (size_t i = 0; i < sv->n && !rc; i++) rc = start_one(sv, &sv->s[i], err);
    while (!rc) {
        bool all = true;
        int64_t now = cb_clock_now_ns();
        for (size_t i = 0; i < sv->n && !rc; i++) {
            server *s = &sv->s[i];
            if (s->state == SRV_READY) continue;
            read_records(s);
            if (s->ended) {
                rc = ended_error(sv, s, "before it was ready", err);
                break;
            }
            if (probe(s)) {
                s->state = SRV_READY;
                s->ready_ns = cb_clock_now_ns() - s->start_ns;
                if (!sv->o.quiet)
                    say(sv, "server '%s': ready at %s after %.2f s", s->spec->name, s->spec->url, (double)s->ready_ns / 1e9);
                continue;
            }
            all = false;
            read_records(s); /* it may have died while we probed */
            if (s->ended) {
                rc = ended_error(sv, s, "before it was ready", err);
            } else if (cb_clock_now_ns() - s->start_ns >= s->spec->ready_timeout_ns) {
                char tail[MSG_TAIL_BYTES * 2 + 128];
                print_tails(sv, s);
                short_tail(s, tail, sizeof tail);
                rc = cb_error_set(err, CB_ETIMEDOUT, "server '%s' (pid %d): not ready at %s after %g s "
                                                     "(ready_timeout; last probe: %s): stopped%s",
                                  s->spec->name, (int)s->pid, s->probe_url, (double)s->spec->ready_timeout_ns / 1e9,
                                  s->last_probe, tail);
            }
        }
        if (rc || all) break;
        if (cb_phase_ctl_stopped(sv->o.ctl)) {
            rc = cb_error_set(err, CB_ESTOPPED, "interrupted while waiting for the servers to be ready");
            break;
        }
        int64_t left = now + PROBE_PERIOD_NS - cb_clock_now_ns();
        if (left > 0) {
            struct timespec ts = {0, (long)left};
            nanosleep(&ts, NULL);
        }
    }
    if (rc) {
        cb_error se;
        cb_error_clear(&se);
        cb_servers_stop(sv, &se);
    }
    return rc;
}

int cb_servers_check(cb_servers *sv, cb_error *err) {
    for (size_t i = 0; sv && i < sv->n; i++) {
        server *s = &sv->s[i];
        if (s->state == SRV_NEW) continue;
        read_records(s);
        if (s->ended && !s->on_request) return ended_error(sv, s, "while the benchmark ran", err);
    }
    return CB_OK;
}

/* The pids of process group pgid (up to max), from /proc. */
static size_t group_pids(pid_t pgid, pid_t *out, size_t max) {
    size_t n = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while (n < max && (e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = '\0';
        char *p = strrchr(buf, ')');
        int ppid, pg;
        char state;
        if (!p || sscanf(p + 1, " %c %d %d", &state, &ppid, &pg) != 3) continue;
        if (pg == (int)pgid) out[n++] = (pid_t)pid;
    }
    closedir(d);
    return n;
}

void cb_servers_watch(cb_servers *sv, cb_monitor *mon) {
    for (size_t i = 0; sv && mon && i < sv->n; i++) {
        server *s = &sv->s[i];
        if (!s->pid || s->ended) continue;
        char label[CB_SERVER_NAME_MAX + 16];
        snprintf(label, sizeof label, "server:%s", s->spec->name);
        pid_t pids[WATCH_MAX_PROCS];
        size_t n = group_pids(s->pid, pids, WATCH_MAX_PROCS);
        cb_monitor_add_process(mon, s->pid, label);
        for (size_t k = 0; k < n; k++)
            if (pids[k] != s->pid) cb_monitor_add_process(mon, pids[k], label);
    }
}

int cb_servers_stop(cb_servers *sv, cb_error *err) {
    if (!sv) return CB_OK;
    int64_t longest = 0;
    size_t live = 0;
    for (size_t i = 0; i < sv->n; i++) {
        server *s = &sv->s[i];
        if (s->sup <= 0) continue;
        kill(s->sup, SIGTERM);
        if (s->spec->stop_timeout_ns > longest) longest = s->spec->stop_timeout_ns;
        live++;
    }
    if (!live) return CB_OK;
    int64_t t0 = cb_clock_now_ns(), deadline = t0 + longest + KILL_GRACE_NS + PARENT_GRACE_NS;
    int rc = CB_OK;
    bool told = false;
    for (;;) {
        live = 0;
        for (size_t i = 0; i < sv->n; i++) {
            server *s = &sv->s[i];
            if (s->sup <= 0) continue;
            int st = 0;
            pid_t r = waitpid(s->sup, &st, WNOHANG);
            if (r == s->sup || (r < 0 && errno == ECHILD)) {
                s->sup = 0;
                read_records(s);
                if (!s->ended) { /* it said nothing: its exit status stands for the server's */
                    s->ended = true;
                    s->on_request = true;
                    s->wstatus = st;
                    s->state = SRV_ENDED;
                }
                continue;
            }
            read_records(s);
            live++;
        }
        if (!live) break;
        int64_t now = cb_clock_now_ns();
        if (!told && now - t0 > 2000000000LL && !sv->o.quiet) {
            say(sv, "waiting for the servers to stop (stop_timeout %.0f s, then SIGKILL)", (double)longest / 1e9);
            told = true;
        }
        if (now >= deadline) {
            for (size_t i = 0; i < sv->n; i++) {
                server *s = &sv->s[i];
                if (s->sup <= 0) continue;
                kill(s->sup, SIGKILL);
                if (s->pid > 0) kill(-s->pid, SIGKILL);
                while (waitpid(s->sup, NULL, 0) < 0 && errno == EINTR) {
                }
                s->sup = 0;
                s->killed = true;
                if (!s->ended) s->ended = s->on_request = true, s->state = SRV_ENDED, s->wstatus = SIGKILL;
                rc = cb_error_set(err, CB_EIO, "server '%s': its supervisor did not end in time: killed", s->spec->name);
            }
            break;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < sv->n; i++) {
        server *s = &sv->s[i];
        if (s->status_fd >= 0) close(s->status_fd);
        s->status_fd = -1;
    }
    return rc;
}

void cb_servers_json(const cb_servers *sv, cb_json *j) {
    cb_json_array_begin(j);
    for (size_t i = 0; sv && i < sv->n; i++) {
        const server *s = &sv->s[i];
        cb_json_object_begin(j);
        cb_json_key(j, "name");
        cb_json_string(j, s->spec->name);
        cb_json_key(j, "url");
        cb_json_string(j, s->spec->url);
        cb_json_key(j, "pid");
        if (s->pid) cb_json_int(j, s->pid);
        else cb_json_null(j);
        cb_json_key(j, "ready");
        cb_json_bool(j, s->ready_ns >= 0);
        cb_json_key(j, "ready_ns");
        if (s->ready_ns >= 0) cb_json_int(j, s->ready_ns);
        else cb_json_null(j);
        cb_json_key(j, "ended");
        cb_json_string(j, s->state == SRV_NEW ? "not started" : !s->ended ? "running" : s->on_request ? "stopped" : "died");
        char st[96];
        cb_child_describe_status(s->wstatus, st, sizeof st);
        cb_json_key(j, "status");
        cb_json_string(j, s->ended ? st : NULL);
        cb_json_key(j, "exit_status");
        if (s->ended && WIFEXITED(s->wstatus)) cb_json_int(j, WEXITSTATUS(s->wstatus));
        else cb_json_null(j);
        cb_json_key(j, "signal");
        if (s->ended && WIFSIGNALED(s->wstatus)) {
            const char *abbrev = sigabbrev_np(WTERMSIG(s->wstatus));
            char name[32];
            snprintf(name, sizeof name, "SIG%s", abbrev ? abbrev : "?");
            cb_json_string(j, name);
        } else {
            cb_json_null(j);
        }
        cb_json_key(j, "killed_after_stop_timeout");
        cb_json_bool(j, s->killed);
        cb_json_key(j, "stdout");
        cb_json_string(j, s->out_rel);
        cb_json_key(j, "stderr");
        cb_json_string(j, s->err_rel);
        cb_json_object_end(j);
    }
    cb_json_array_end(j);
}

void cb_servers_destroy(cb_servers *sv) {
    if (!sv) return;
    cb_error e;
    cb_error_clear(&e);
    cb_servers_stop(sv, &e);
    for (size_t i = 0; i < sv->n; i++) {
        server *s = &sv->s[i];
        if (s->curl) curl_easy_cleanup(s->curl);
        cb_free(s->argv);
        cb_free(s->envp);
        cb_free(s->block);
    }
    if (sv->curl_init) curl_global_cleanup();
    if (sv->dir_fd >= 0) close(sv->dir_fd);
    cb_free(sv->s);
    cb_free(sv);
}
