/* collocate/launch.c - one phase of a benchmark in its collocation mode (see launch.h).
 *
 * Design (children): fork + execve of this executable with a prepared argv and environment
 * (built before fork: only async-signal-safe calls between fork and exec). The parent blocks
 * SIGINT/SIGTERM and supervises with sigtimedwait + waitpid(WNOHANG), so a signal, a child's
 * death and progress are handled in one loop without handlers or global flags. Start barrier
 * over one socketpair per child (barrier.h). Records come back through the children's raw
 * record files, exact and crash-safe up to their last flush.
 * Thread-safety: one controlling thread; the monitor and the runtime own their threads.
 * Ownership: see launch.h.
 */
#include "collocate/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collocate/barrier.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/path.h"

extern char **environ;

#define CB_CHILD_MAX_ARGS (16 + 2 * 64)
#define CB_CHILD_MAX_ENV 16

typedef struct cb_child {
    pid_t pid;
    int fd;                 /* parent's end of the barrier socket, -1 when closed */
    bool ready, exited;
    int wstatus;
    size_t index;           /* into the whole spec */
    char dir[4096];
} cb_child;

static void add_error(cb_launch_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_error(cb_launch_result *res, const char *fmt, ...) {
    if (res->n_errors >= CB_LAUNCH_MAX_ERRORS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->errors[res->n_errors], sizeof res->errors[0], fmt, ap);
    va_end(ap);
    res->error_ptrs[res->n_errors] = res->errors[res->n_errors];
    res->n_errors++;
}

static void describe_status(int ws, char *buf, size_t n) {
    if (WIFEXITED(ws))
        snprintf(buf, n, "exited %d", WEXITSTATUS(ws));
    else if (WIFSIGNALED(ws))
        snprintf(buf, n, "killed by signal %d (%s)%s", WTERMSIG(ws), strsignal(WTERMSIG(ws)),
                 WCOREDUMP(ws) ? ", core dumped" : "");
    else
        snprintf(buf, n, "ended (status 0x%x)", ws);
}


/* Reads whole 64-byte records of path into a cb_malloc'd array. Missing file: 0 records. */
static int read_raw(const char *path, void **out, size_t *n) {
    *out = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? CB_OK : CB_EIO;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return CB_EIO;
    }
    size_t count = (size_t)sb.st_size / 64u;
    char *buf = cb_malloc(count ? count * 64u : 64u);
    if (!buf) {
        close(fd);
        return CB_ENOMEM;
    }
    size_t off = 0, want = count * 64u;
    while (off < want) {
        ssize_t k = read(fd, buf + off, want - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
    close(fd);
    *out = buf;
    *n = off / 64u;
    return CB_OK;
}

/* Reads a child's splits.bin (one cb_splits, host byte order): 1 read, 0 none (no dataset stage,
 * or the child stopped before writing it), negative on an unreadable or malformed file. */
static int read_splits(const char *path, cb_splits *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : CB_EIO;
    ssize_t k;
    do k = read(fd, out, sizeof *out);
    while (k < 0 && errno == EINTR);
    close(fd);
    if (k == 0) return 0;
    if (k != (ssize_t)sizeof *out || out->n < 0 || out->n > CB_MAX_SPLITS) {
        memset(out, 0, sizeof *out);
        return CB_EIO;
    }
    for (int i = 0; i < out->n; i++) out->split[i].name[CB_SPLIT_NAME_MAX - 1] = '\0';
    return 1;
}

/* Appends src (minus its header line) to dst; writes the header first when dst is new. */
static int append_csv(FILE *dst, const char *src, bool with_header) {
    FILE *f = fopen(src, "r");
    if (!f) return errno == ENOENT ? CB_OK : CB_EIO;
    char buf[65536];
    bool header = true;
    size_t k;
    /* Copy byte-wise after the first newline (rows may be long; no line buffer needed). */
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
        size_t start = 0;
        if (header) {
            char *nl = memchr(buf, '\n', k);
            if (!nl) {
                if (with_header) fwrite(buf, 1, k, dst);
                continue;
            }
            size_t hl = (size_t)(nl - buf) + 1;
            if (with_header) fwrite(buf, 1, hl, dst);
            start = hl;
            header = false;
        }
        fwrite(buf + start, 1, k - start, dst);
    }
    int bad = ferror(f);
    fclose(f);
    return bad ? CB_EIO : CB_OK;
}

/* Reads the child's result.txt: "interrupted N", "timed_out N", "error MSG" lines. */
static void read_child_result(cb_launch_result *res, const cb_child *c, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/result.txt", c->dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1200];
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        if (l && line[l - 1] == '\n') line[--l] = '\0';
        if (!strcmp(line, "interrupted 1")) res->interrupted = true;
        else if (!strcmp(line, "timed_out 1")) res->timed_out = true;
        else if (!strncmp(line, "error ", 6)) add_error(res, "pipeline '%s': %s", name, line + 6);
    }
    fclose(f);
}

/* ---- in process ----------------------------------------------------------------------- */

typedef struct inproc_ctx {
    cb_monitor *mon;
} inproc_ctx;

static int inproc_ready(void *arg, int64_t *t0_ns, cb_error *err) {
    inproc_ctx *c = arg;
    if (c->mon) cb_monitor_set_t0(c->mon, *t0_ns);
    return CB_OK;
}

static int run_in_process(const cb_launch_opts *o, cb_launch_result *res, cb_error *err) {
    const cb_spec *v = &res->view;
    if (res->monitor) {
        char label[512];
        size_t off = 0;
        label[0] = '\0';
        for (size_t i = 0; i < v->n_pipelines && off < sizeof label; i++) {
            int w = snprintf(label + off, sizeof label - off, "%s%s", i ? "+" : "", v->pipelines[i].name);
            if (w > 0) off += (size_t)w;
        }
        cb_monitor_add_process(res->monitor, getpid(), label);
    }
    inproc_ctx ic = {res->monitor};
    cb_runtime_opts ro = CB_RUNTIME_OPTS_DEFAULT;
    ro.spec = v;
    ro.out_dir = o->out_dir;
    ro.log = o->log;
    ro.progress = o->progress;
    ro.progress_out = o->progress_out;
    ro.handle_signals = o->handle_signals;
    ro.on_start = o->on_start;
    ro.on_start_arg = o->on_start_arg;
    ro.on_ready = inproc_ready;
    ro.on_ready_arg = &ic;
    int rc = cb_run(&ro, &res->run, err);
    if (rc != CB_OK && !res->run.recorder) return rc;
    if (rc != CB_OK) {
        char msg[1024];
        cb_error_format(err, msg, sizeof msg);
        add_error(res, "%s", msg);
    }
    res->t0_ns = res->run.t0_ns;
    res->end_ns = res->run.end_ns;
    res->wall_start_ns = res->run.wall_start_ns;
    res->interrupted = res->run.interrupted;
    res->timed_out = res->run.timed_out;
    for (size_t i = 0; i < res->run.n_errors; i++) add_error(res, "%s", res->run.errors[i]);
    size_t flat = 0;
    for (size_t i = 0; i < v->n_pipelines; i++) {
        res->records[i] = cb_recorder_records(res->run.recorder, i);
        res->pids[i] = (int)getpid();
        for (size_t s = 0; s < v->pipelines[i].n_stages; s++, flat++)
            res->prepare_ns[flat] = res->run.prepare_ns ? res->run.prepare_ns[flat] : 0;
    }
    return CB_OK;
}

/* ---- children ------------------------------------------------------------------------- */

/* argv and envp for child i, in caller storage. */
typedef struct child_exec {
    char *argv[CB_CHILD_MAX_ARGS];
    char **envp;
    char idx[32], fdstr[32];
    char envbuf[8192];
    const char *extra[CB_CHILD_MAX_ENV];
    size_t n_extra;
} child_exec;

static int build_exec(const cb_launch_opts *o, const cb_pipeline_spec *p, size_t index, int fd,
                      const char *dir, child_exec *x, cb_error *err) {
    size_t a = 0;
    x->argv[a++] = (char *)o->exe;
    x->argv[a++] = "run";
    x->argv[a++] = (char *)o->config;
    for (size_t i = 0; i < o->n_sets && a + 12 < CB_CHILD_MAX_ARGS; i++) {
        x->argv[a++] = "--set";
        x->argv[a++] = (char *)o->sets[i];
    }
    snprintf(x->idx, sizeof x->idx, "%zu", index);
    snprintf(x->fdstr, sizeof x->fdstr, "%d", fd);
    x->argv[a++] = "--child";
    x->argv[a++] = x->idx;
    x->argv[a++] = "--child-fd";
    x->argv[a++] = x->fdstr;
    x->argv[a++] = "-o";
    x->argv[a++] = (char *)dir;
    x->argv[a++] = "--quiet";
    x->argv[a] = NULL;
    /* Extra environment: MPS or MIG. */
    x->n_extra = 0;
    size_t used = 0;
    if (p->mode == CB_COLLOC_MPS && o->mps) {
        int n = cb_mps_child_env(o->mps, p->mps_active_thread_percentage, p->mps_memory_limit_bytes,
                                 p->gpu_index >= 0 ? p->gpu_index : 0, x->envbuf, sizeof x->envbuf,
                                 x->extra, CB_CHILD_MAX_ENV - 1);
        if (n < 0) return cb_error_set(err, CB_ENOMEM, "collocation: MPS environment too large");
        x->n_extra = (size_t)n;
        for (size_t i = 0; i < x->n_extra; i++) used += strlen(x->extra[i]) + 1;
    }
    if (p->mode == CB_COLLOC_MIG && o->mig_uuids && o->mig_uuids[index]) {
        int w = snprintf(x->envbuf + used, sizeof x->envbuf - used, "CUDA_VISIBLE_DEVICES=%s",
                         o->mig_uuids[index]);
        if (w < 0 || (size_t)w >= sizeof x->envbuf - used)
            return cb_error_set(err, CB_ENOMEM, "collocation: environment too large");
        x->extra[x->n_extra++] = x->envbuf + used;
    }
    size_t n_env = 0;
    while (environ && environ[n_env]) n_env++;
    x->envp = cb_calloc(n_env + x->n_extra + 1, sizeof *x->envp);
    if (!x->envp) return cb_error_set(err, CB_ENOMEM, "out of memory");
    size_t e = 0;
    for (size_t i = 0; i < n_env; i++) {
        bool overridden = false;
        for (size_t k = 0; k < x->n_extra; k++) {
            const char *eq = strchr(x->extra[k], '=');
            size_t nl = eq ? (size_t)(eq - x->extra[k]) + 1 : 0;
            if (nl && !strncmp(environ[i], x->extra[k], nl)) overridden = true;
        }
        if (!overridden) x->envp[e++] = environ[i];
    }
    for (size_t k = 0; k < x->n_extra; k++) x->envp[e++] = (char *)x->extra[k];
    x->envp[e] = NULL;
    return CB_OK;
}

static void kill_children(cb_child *ch, size_t n, int sig) {
    for (size_t i = 0; i < n; i++)
        if (ch[i].pid > 0 && !ch[i].exited) kill(ch[i].pid, sig);
}

static void reap(cb_child *c, int ws) {
    c->exited = true;
    c->wstatus = ws;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* Waits (bounded) for every child after a failed start: SIGTERM, then SIGKILL. */
static void stop_children(cb_child *ch, size_t n) {
    kill_children(ch, n, SIGTERM);
    int64_t deadline = cb_clock_now_ns() + 3000000000LL;
    for (;;) {
        bool live = false;
        for (size_t i = 0; i < n; i++) {
            if (ch[i].pid <= 0 || ch[i].exited) continue;
            int ws;
            if (waitpid(ch[i].pid, &ws, WNOHANG) == ch[i].pid) reap(&ch[i], ws);
            else live = true;
        }
        if (!live) return;
        if (cb_clock_now_ns() > deadline) {
            kill_children(ch, n, SIGKILL);
            deadline = INT64_MAX;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
}

/* Waits for child c's ready message while watching signals and its death. */
static int wait_ready(cb_child *c, const char *name, int64_t *prepare_ns, size_t n_stages,
                      const sigset_t *sigs, bool handle_signals, cb_launch_result *res, cb_error *err) {
    for (;;) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int r = poll(&pfd, 1, 50);
        if (r > 0) {
            size_t got = 0;
            if (cb_barrier_recv_ready(c->fd, prepare_ns, n_stages, &got) == CB_OK) {
                c->ready = true;
                return CB_OK;
            }
            int ws = 0;
            waitpid(c->pid, &ws, 0);
            reap(c, ws);
            char st[96];
            describe_status(ws, st, sizeof st);
            return cb_error_set(err, CB_ESTAGE,
                                "pipeline '%s': its process (pid %d) %s before the start "
                                "(its messages are above)", name, (int)c->pid, st);
        }
        if (handle_signals) {
            struct timespec zero = {0, 0};
            int sig = sigtimedwait(sigs, NULL, &zero);
            if (sig == SIGINT || sig == SIGTERM) {
                res->interrupted = true;
                return cb_error_set(err, CB_ESTOPPED, "interrupted by %s before the start",
                                    sig == SIGINT ? "SIGINT" : "SIGTERM");
            }
        }
    }
}

static void print_progress(const cb_launch_opts *o, const cb_launch_result *res, const cb_child *ch,
                           size_t n, int64_t now) {
    FILE *out = o->progress_out ? o->progress_out : stderr;
    char line[1024];
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof line; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/queries.bin", ch[i].dir);
        struct stat sb;
        long long q = stat(path, &sb) == 0 ? (long long)(sb.st_size / 64) : 0;
        int w = snprintf(line + off, sizeof line - off, "%s%s: %lld q%s", i ? ", " : "",
                         res->view.pipelines[i].name, q, ch[i].exited ? " (done)" : "");
        if (w > 0) off += (size_t)w;
    }
    double el = (double)(now - res->t0_ns) / 1e9;
    if (o->progress == 2)
        fprintf(out, "\r%.*s %6.1f s\033[K", (int)(off < sizeof line ? off : sizeof line - 1), line, el);
    else
        fprintf(out, "%.*s (%.1f s)\n", (int)(off < sizeof line ? off : sizeof line - 1), line, el);
    fflush(out);
}

static int run_children(const cb_launch_opts *o, cb_launch_result *res, cb_error *err) {
    const cb_spec *v = &res->view;
    size_t n = v->n_pipelines;
    cb_child *ch = cb_calloc(n, sizeof *ch);
    child_exec *x = cb_calloc(n, sizeof *x);
    int64_t *starts = cb_calloc(n, sizeof *starts);
    if (!ch || !x || !starts) {
        cb_free(ch);
        cb_free(x);
        cb_free(starts);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) ch[i].fd = -1;
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (o->handle_signals) pthread_sigmask(SIG_BLOCK, &sigs, &old);
    else pthread_sigmask(SIG_SETMASK, NULL, &old);
    int rc = CB_OK;
    pid_t parent = getpid();
    /* Spawn. */
    for (size_t i = 0; i < n && !rc; i++) {
        const cb_pipeline_spec *p = &v->pipelines[i];
        cb_child *c = &ch[i];
        c->index = o->only >= 0 ? (size_t)o->only : i;
        snprintf(c->dir, sizeof c->dir, "%s/pipelines/%s", o->out_dir, p->name);
        if (cb_path_mkdir_p(c->dir, NULL, 0) != 0) {
            rc = cb_error_set(err, CB_EIO, "%s: cannot create: %s", c->dir, strerror(errno));
            break;
        }
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            rc = cb_error_set(err, CB_EIO, "collocation: socketpair: %s", strerror(errno));
            break;
        }
        if ((rc = build_exec(o, p, c->index, sv[1], c->dir, &x[i], err))) {
            close(sv[0]);
            close(sv[1]);
            break;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            rc = cb_error_set(err, CB_EIO, "collocation: fork: %s", strerror(errno));
            close(sv[0]);
            close(sv[1]);
            break;
        }
        if (pid == 0) {
            /* Child: async-signal-safe calls only, then exec. */
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);
            int flags = fcntl(sv[1], F_GETFD);
            if (flags >= 0) fcntl(sv[1], F_SETFD, flags & ~FD_CLOEXEC);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            execve(o->exe, x[i].argv, x[i].envp);
            _exit(127);
        }
        close(sv[1]);
        c->pid = pid;
        c->fd = sv[0];
        res->pids[i] = (int)pid;
        if (res->monitor) cb_monitor_add_process(res->monitor, pid, p->name);
    }
    /* Prepare: one at a time (serial) or all at once, then everyone waits at the barrier. */
    size_t flat0 = 0;
    size_t *flat = cb_calloc(n + 1, sizeof *flat);
    if (!flat && !rc) rc = cb_error_set(err, CB_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        flat[i] = flat0;
        flat0 += v->pipelines[i].n_stages;
    }
    bool serial = v->collocation.serial_prepare;
    if (!rc && !serial)
        for (size_t i = 0; i < n; i++) cb_barrier_send_prepare(ch[i].fd);
    for (size_t i = 0; !rc && i < n; i++) {
        if (serial) cb_barrier_send_prepare(ch[i].fd);
        rc = wait_ready(&ch[i], v->pipelines[i].name, res->prepare_ns + flat[i],
                        v->pipelines[i].n_stages, &sigs, o->handle_signals, res, err);
    }
    if (!rc && o->on_start) rc = o->on_start(o->on_start_arg, cb_clock_wall_ns(), err);
    if (rc) {
        stop_children(ch, n);
        goto out;
    }
    /* Release. */
    res->t0_ns = cb_clock_now_ns();
    res->wall_start_ns = cb_clock_wall_ns();
    for (size_t i = 0; i < n; i++) cb_barrier_send_go(ch[i].fd, res->t0_ns);
    if (res->monitor) cb_monitor_set_t0(res->monitor, res->t0_ns);
    int64_t smin = INT64_MAX, smax = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        if (cb_barrier_recv_start(ch[i].fd, &starts[i]) != CB_OK) continue;
        if (starts[i] < smin) smin = starts[i];
        if (starts[i] > smax) smax = starts[i];
    }
    if (smax != INT64_MIN) {
        res->barrier_skew_ns = smax - smin;
        res->barrier_max_delay_ns = smax - res->t0_ns;
    }
    /* Supervise until every child has exited. */
    int signals = 0;
    int64_t next_progress = res->t0_ns + (o->progress == 2 ? 200000000LL : 5000000000LL);
    for (;;) {
        size_t live = 0;
        for (size_t i = 0; i < n; i++) {
            if (ch[i].exited) continue;
            int ws;
            pid_t r = waitpid(ch[i].pid, &ws, WNOHANG);
            if (r == ch[i].pid) {
                reap(&ch[i], ws);
                char st[96];
                describe_status(ws, st, sizeof st);
                if (o->progress)
                    fprintf(o->progress_out ? o->progress_out : stderr, "%scolobench: pipeline '%s' (pid %d) %s\n",
                            o->progress == 2 ? "\r\033[K" : "", v->pipelines[i].name, (int)ch[i].pid, st);
            } else {
                live++;
            }
        }
        if (!live) break;
        if (o->handle_signals) {
            struct timespec ts = {0, 20000000};
            int sig = sigtimedwait(&sigs, NULL, &ts);
            if (sig == SIGINT || sig == SIGTERM) {
                signals++;
                res->interrupted = true;
                /* Children stop their load and drain on the first SIGTERM, cancel on the
                 * second; a third gets SIGKILL. */
                kill_children(ch, n, signals > 2 ? SIGKILL : SIGTERM);
                if (o->progress)
                    fprintf(o->progress_out ? o->progress_out : stderr,
                            "%scolobench: %s: stopping every pipeline%s\n", o->progress == 2 ? "\n" : "",
                            sig == SIGINT ? "SIGINT" : "SIGTERM", signals > 1 ? " (cancelling)" : "");
            }
        } else {
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        int64_t now = cb_clock_now_ns();
        if (o->progress && now >= next_progress) {
            print_progress(o, res, ch, n, now);
            next_progress = now + (o->progress == 2 ? 200000000LL : 5000000000LL);
        }
    }
    res->end_ns = cb_clock_now_ns();
    if (o->progress == 2) {
        print_progress(o, res, ch, n, res->end_ns);
        fputc('\n', o->progress_out ? o->progress_out : stderr);
    }
    /* Gather: raw records, child results, merged CSV. */
    char path[4200];
    FILE *ev = NULL, *qu = NULL, *me = NULL;
    snprintf(path, sizeof path, "%s/events.csv", o->out_dir);
    ev = fopen(path, "w");
    snprintf(path, sizeof path, "%s/queries.csv", o->out_dir);
    qu = fopen(path, "w");
    snprintf(path, sizeof path, "%s/stage_metrics.csv", o->out_dir);
    me = fopen(path, "w");
    if (!ev || !qu || !me)
        add_error(res, "%s: cannot write merged events.csv/queries.csv/stage_metrics.csv: %s",
                  o->out_dir, strerror(errno));
    if (me) fputs(CB_STAGE_METRICS_CSV_HEADER, me);
    for (size_t i = 0; i < n; i++) {
        const char *name = v->pipelines[i].name;
        describe_status(ch[i].wstatus, res->status[i], sizeof res->status[0]);
        res->status_ptrs[i] = res->status[i];
        if (!WIFEXITED(ch[i].wstatus) || WEXITSTATUS(ch[i].wstatus) != 0)
            add_error(res, "pipeline '%s': its process (pid %d) %s", name, (int)ch[i].pid, res->status[i]);
        read_child_result(res, &ch[i], name);
        void *q = NULL, *e = NULL, *m = NULL;
        size_t nq = 0, ne = 0, nm = 0;
        snprintf(path, sizeof path, "%s/queries.bin", ch[i].dir);
        int r1 = read_raw(path, &q, &nq);
        snprintf(path, sizeof path, "%s/events.bin", ch[i].dir);
        int r2 = read_raw(path, &e, &ne);
        snprintf(path, sizeof path, "%s/metrics.bin", ch[i].dir);
        int r3 = read_raw(path, &m, &nm);
        snprintf(path, sizeof path, "%s/splits.bin", ch[i].dir);
        int r4 = read_splits(path, &res->child_splits[i]);
        if (r1 || r2 || r3 || r4 < 0)
            add_error(res, "pipeline '%s': cannot read its records in %s", name, ch[i].dir);
        res->child_queries[i] = q;
        res->child_events[i] = e;
        res->child_metrics[i] = m;
        for (size_t k = 0; k < nq; k++) res->child_queries[i][k].pipeline = (uint16_t)i;
        for (size_t k = 0; k < ne; k++) res->child_events[i][k].pipeline = (uint16_t)i;
        for (size_t k = 0; k < nm; k++) res->child_metrics[i][k].pipeline = (uint16_t)i;
        res->records[i].queries = res->child_queries[i];
        res->records[i].n_queries = nq;
        res->records[i].stage_events = res->child_events[i];
        res->records[i].n_stage_events = ne;
        res->records[i].metrics = res->child_metrics[i];
        res->records[i].n_metrics = nm;
        res->records[i].splits = r4 == 1 ? &res->child_splits[i] : NULL;
        if (ev && qu) {
            char src[4200];
            snprintf(src, sizeof src, "%s/events.csv", ch[i].dir);
            append_csv(ev, src, i == 0);
            snprintf(src, sizeof src, "%s/queries.csv", ch[i].dir);
            append_csv(qu, src, i == 0);
        }
        if (me) {
            char src[4200];
            snprintf(src, sizeof src, "%s/stage_metrics.csv", ch[i].dir);
            append_csv(me, src, false);
        }
    }
    if (ev && fclose(ev) != 0) add_error(res, "%s/events.csv: write failed", o->out_dir);
    if (qu && fclose(qu) != 0) add_error(res, "%s/queries.csv: write failed", o->out_dir);
    if (me && fclose(me) != 0) add_error(res, "%s/stage_metrics.csv: write failed", o->out_dir);
out:
    for (size_t i = 0; i < n; i++) {
        if (ch[i].fd >= 0) close(ch[i].fd);
        cb_free(x[i].envp);
    }
    if (o->handle_signals) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&sigs, NULL, &zero) > 0) res->interrupted = true;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    cb_free(flat);
    cb_free(starts);
    cb_free(x);
    cb_free(ch);
    return rc;
}

/* ---- public --------------------------------------------------------------------------- */

int cb_launch(const cb_launch_opts *o, cb_launch_result *res, cb_error *err) {
    memset(res, 0, sizeof *res);
    res->barrier_skew_ns = res->barrier_max_delay_ns = -1;
    const cb_spec *spec = o->spec;
    res->view = o->only >= 0 ? cb_spec_single(spec, (size_t)o->only) : *spec;
    size_t n = res->view.n_pipelines, stages = 0;
    for (size_t i = 0; i < n; i++) stages += res->view.pipelines[i].n_stages;
    res->records = cb_calloc(n, sizeof *res->records);
    res->child_queries = cb_calloc(n, sizeof *res->child_queries);
    res->child_events = cb_calloc(n, sizeof *res->child_events);
    res->child_metrics = cb_calloc(n, sizeof *res->child_metrics);
    res->child_splits = cb_calloc(n, sizeof *res->child_splits);
    res->prepare_ns = cb_calloc(stages ? stages : 1, sizeof *res->prepare_ns);
    res->pids = cb_calloc(n, sizeof *res->pids);
    res->status = cb_calloc(n, sizeof *res->status);
    res->status_ptrs = cb_calloc(n, sizeof *res->status_ptrs);
    if (!res->records || !res->child_queries || !res->child_events || !res->child_metrics ||
        !res->child_splits || !res->prepare_ns ||
        !res->pids || !res->status || !res->status_ptrs)
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    if (o->monitor && spec->monitors.enabled) {
        cb_monitor_opts mo = CB_MONITOR_OPTS_DEFAULT;
        mo.period_ns = spec->monitors.period_ns;
        mo.sources = spec->monitors.sources;
        mo.out_dir = o->out_dir;
        mo.nvml_library = o->nvml_library ? o->nvml_library : spec->monitors.nvml_library;
        mo.log = o->log;
        for (size_t i = 0; i < n; i++) {
            cb_colloc_mode m = res->view.pipelines[i].mode;
            if (m == CB_COLLOC_MPS || m == CB_COLLOC_MIG) mo.gpu_per_process_attributable = false;
        }
        int rc = cb_monitor_create(&mo, &res->monitor, err);
        if (rc) return rc;
    }
    int rc = o->in_process ? run_in_process(o, res, err) : run_children(o, res, err);
    if (res->monitor) {
        cb_error merr;
        cb_error_clear(&merr);
        if (cb_monitor_stop(res->monitor, &merr) != CB_OK) {
            char msg[1024];
            cb_error_format(&merr, msg, sizeof msg);
            add_error(res, "%s", msg);
        }
    }
    return rc;
}

void cb_launch_summary_input(const cb_launch_result *res, cb_summary_input *in) {
    memset(in, 0, sizeof *in);
    in->spec = &res->view;
    in->t0_ns = res->t0_ns;
    in->end_ns = res->end_ns;
    in->wall_start_ns = res->wall_start_ns;
    in->interrupted = res->interrupted;
    in->timed_out = res->timed_out;
    in->errors = res->error_ptrs;
    in->n_errors = res->n_errors;
    in->pipelines = res->records;
    in->prepare_ns = res->prepare_ns;
}

void cb_launch_result_fini(cb_launch_result *res) {
    if (!res) return;
    cb_run_result_fini(&res->run);
    for (size_t i = 0; res->child_queries && i < res->view.n_pipelines; i++) {
        cb_free(res->child_queries[i]);
        cb_free(res->child_events[i]);
        cb_free(res->child_metrics[i]);
    }
    cb_free(res->child_queries);
    cb_free(res->child_events);
    cb_free(res->child_metrics);
    cb_free(res->child_splits);
    cb_free(res->records);
    cb_free(res->prepare_ns);
    cb_free(res->pids);
    cb_free(res->status);
    cb_free(res->status_ptrs);
    cb_monitor_destroy(res->monitor);
    memset(res, 0, sizeof *res);
}

int cb_launch_child_on_ready(void *arg, int64_t *t0_ns, cb_error *err) {
    cb_launch_child *c = arg;
    size_t n = c->spec->n_pipelines ? c->spec->pipelines[0].n_stages : 0;
    return cb_barrier_child_ready(c->fd, c->res ? c->res->prepare_ns : NULL, c->res ? n : 0, t0_ns, err);
}
