/* experiment/child.c - the child protocol, both sides (see child.h).
 *
 * Spawning: argv and envp are built before fork; between fork and execve the child calls only
 * async-signal-safe functions (setpgid, prctl, fcntl, pthread_sigmask, execve). The 'C' message
 * is written with send(MSG_NOSIGNAL) after the fork (a dead child is an error, never SIGPIPE):
 *   'C' u32 version, u32 index, u32 flags, str name, str out_dir, blob text, u32 n_sets, str...
 * where str/blob are a u32/u64 length and the bytes; every length is checked against its maximum
 * before anything is allocated. State files are "key value" lines; error messages have their
 * newlines and backslashes escaped.
 * Thread-safety: one thread per child. Ownership: see child.h.
 */
#include "experiment/child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collocate/barrier.h"
#include "core/alloc.h"
#include "experiment/outdir.h"

extern char **environ;

#define MSG_VERSION 1u
#define MAX_NAME 4096u

static int send_u32(int fd, uint32_t v) { return cb_barrier_send_bytes(fd, &v, sizeof v); }

static int send_str(int fd, const char *s) {
    size_t l = s ? strlen(s) : 0;
    return send_u32(fd, (uint32_t)l) || cb_barrier_send_bytes(fd, s ? s : "", l) ? CB_EIO : CB_OK;
}

static int send_msg(int fd, const cb_child_msg *m) {
    uint64_t tl = m->config_len;
    if (cb_barrier_send_bytes(fd, "C", 1) || send_u32(fd, MSG_VERSION) || send_u32(fd, m->index) ||
        send_u32(fd, m->flags) || send_str(fd, m->config_name) || send_str(fd, m->out_dir) ||
        cb_barrier_send_bytes(fd, &tl, sizeof tl) || cb_barrier_send_bytes(fd, m->config_text, m->config_len) ||
        send_u32(fd, (uint32_t)m->n_sets))
        return CB_EIO;
    for (size_t i = 0; i < m->n_sets; i++)
        if (send_str(fd, m->sets[i])) return CB_EIO;
    return CB_OK;
}

void cb_child_describe_status(int ws, char *buf, size_t n) {
    if (WIFEXITED(ws))
        snprintf(buf, n, "exited %d", WEXITSTATUS(ws));
    else if (WIFSIGNALED(ws))
        snprintf(buf, n, "killed by signal %d (%s)%s", WTERMSIG(ws), strsignal(WTERMSIG(ws)),
                 WCOREDUMP(ws) ? ", core dumped" : "");
    else
        snprintf(buf, n, "ended (status 0x%x)", ws);
}

int cb_child_spawn(cb_child *c, const char *exe, const cb_child_msg *msg, const char *const *env,
                   size_t n_env, cb_error *err) {
    c->pid = -1;
    c->fd = -1;
    c->ready = c->exited = false;
    if (msg->config_len > CB_CHILD_MAX_TEXT || msg->n_sets > CB_CHILD_MAX_SETS || n_env > CB_CHILD_MAX_ENV)
        return cb_error_set(err, CB_EINVAL, "collocation: the benchmark is too large to hand to a child");
    for (size_t i = 0; i < msg->n_sets; i++)
        if (strlen(msg->sets[i]) > CB_CHILD_MAX_SET)
            return cb_error_set(err, CB_EINVAL, "--set: an override longer than %u bytes", CB_CHILD_MAX_SET);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return cb_error_set(err, CB_EIO, "collocation: socketpair: %s", strerror(errno));
    /* argv and envp, before fork. */
    char fdstr[32];
    snprintf(fdstr, sizeof fdstr, "%d", sv[1]);
    char *argv[] = {(char *)exe, "run", "--child-fd", fdstr, NULL};
    size_t n_environ = 0;
    while (environ && environ[n_environ]) n_environ++;
    char **envp = cb_calloc(n_environ + n_env + 1, sizeof *envp);
    if (!envp) {
        close(sv[0]);
        close(sv[1]);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n_environ; i++) {
        /* A variable the child gets a value for is not inherited as well. */
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool overridden = false;
        for (size_t j = 0; j < n_env && !overridden; j++)
            overridden = !strncmp(env[j], environ[i], nl) && env[j][nl] == '=';
        if (!overridden) envp[k++] = environ[i];
    }
    for (size_t j = 0; j < n_env; j++) envp[k++] = (char *)env[j];
    envp[k] = NULL;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, NULL, &old);
    sigset_t child_mask = old; /* the child starts with SIGINT/SIGTERM deliverable */
    sigdelset(&child_mask, SIGINT);
    sigdelset(&child_mask, SIGTERM);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        cb_free(envp);
        return cb_error_set(err, CB_EIO, "collocation: fork: %s", strerror(e));
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only, then exec. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        int flags = fcntl(sv[1], F_GETFD);
        if (flags >= 0) fcntl(sv[1], F_SETFD, flags & ~FD_CLOEXEC);
        pthread_sigmask(SIG_SETMASK, &child_mask, NULL);
        execve(exe, argv, envp);
        _exit(127);
    }
    close(sv[1]);
    cb_free(envp);
    c->pid = pid;
    c->fd = sv[0];
    if (send_msg(c->fd, msg) != CB_OK) {
        /* The child died before reading its benchmark: the caller reaps it and says how. */
        return cb_error_set(err, CB_EIO, "collocation: the process for pipeline %u (pid %d) did not "
                                         "take its benchmark",
                            msg->index, (int)pid);
    }
    return CB_OK;
}

/* Reads a u32 length then that many bytes (at most max) into the arena at *cur. */
static int recv_str(int fd, uint32_t max, char **cur, const char *end, const char **out) {
    uint32_t l;
    if (cb_barrier_recv_bytes(fd, &l, sizeof l) || l > max || (size_t)(end - *cur) < (size_t)l + 1) return CB_EIO;
    if (cb_barrier_recv_bytes(fd, *cur, l)) return CB_EIO;
    (*cur)[l] = '\0';
    *out = *cur;
    *cur += l + 1;
    return CB_OK;
}

int cb_child_receive(int fd, cb_child_msg *m, cb_error *err) {
    memset(m, 0, sizeof *m);
    char tag;
    uint32_t version, n_sets;
    uint64_t tl;
    if (cb_barrier_recv_bytes(fd, &tag, 1) || tag != 'C' || cb_barrier_recv_bytes(fd, &version, 4) || version != MSG_VERSION ||
        cb_barrier_recv_bytes(fd, &m->index, 4) || cb_barrier_recv_bytes(fd, &m->flags, 4))
        return cb_error_set(err, CB_EIO, "child: no benchmark from the parent (run --child-fd is internal)");
    /* Everything goes into one allocation, sized as the lengths arrive (each checked first). */
    size_t cap = 2 * (MAX_NAME + 1) + CB_CHILD_MAX_TEXT + 1;
    char *buf = cb_malloc(cap);
    if (!buf) return cb_error_set(err, CB_ENOMEM, "out of memory");
    m->owned = buf;
    char *cur = buf, *end = buf + cap;
    int rc = recv_str(fd, MAX_NAME, &cur, end, &m->config_name);
    if (!rc) rc = recv_str(fd, MAX_NAME, &cur, end, &m->out_dir);
    if (!rc && (cb_barrier_recv_bytes(fd, &tl, sizeof tl) || tl > CB_CHILD_MAX_TEXT)) rc = CB_EIO;
    if (!rc && cb_barrier_recv_bytes(fd, cur, (size_t)tl)) rc = CB_EIO;
    if (!rc) {
        cur[tl] = '\0';
        m->config_text = cur;
        m->config_len = (size_t)tl;
        cur += tl + 1;
    }
    if (!rc && (cb_barrier_recv_bytes(fd, &n_sets, 4) || n_sets > CB_CHILD_MAX_SETS)) rc = CB_EIO;
    char **sets = NULL;
    if (!rc && n_sets) {
        sets = cb_calloc(n_sets, sizeof *sets);
        if (!sets) rc = CB_ENOMEM;
        for (uint32_t i = 0; !rc && i < n_sets; i++) {
            uint32_t l;
            if (cb_barrier_recv_bytes(fd, &l, 4) || l > CB_CHILD_MAX_SET || !(sets[i] = cb_malloc(l + 1)) ||
                cb_barrier_recv_bytes(fd, sets[i], l)) {
                rc = CB_EIO;
                break;
            }
            sets[i][l] = '\0';
        }
    }
    m->sets = (const char *const *)sets;
    m->n_sets = n_sets;
    if (rc) {
        cb_child_msg_fini(m);
        return rc == CB_ENOMEM ? cb_error_set(err, CB_ENOMEM, "out of memory")
                               : cb_error_set(err, CB_EIO, "child: the benchmark from the parent is malformed or cut");
    }
    return CB_OK;
}

void cb_child_msg_fini(cb_child_msg *m) {
    if (!m) return;
    for (size_t i = 0; m->sets && i < m->n_sets; i++) cb_free((void *)m->sets[i]);
    cb_free((void *)m->sets);
    cb_free(m->owned);
    memset(m, 0, sizeof *m);
}

/* ---- state files --------------------------------------------------------------------------- */

void cb_run_state_add_error(cb_run_state *st, const char *msg) {
    if (st->n_errors >= CB_STATE_MAX_ERRORS) return;
    snprintf(st->errors[st->n_errors++], sizeof st->errors[0], "%s", msg);
}

static int state_write(void *arg, FILE *f, cb_error *err) {
    const cb_run_state *st = arg;
    fprintf(f, "colobench_state 1\nt0_ns %lld\nwall_start_ns %lld\nend_ns %lld\n", (long long)st->t0_ns,
            (long long)st->wall_start_ns, (long long)st->end_ns);
    fprintf(f, "started %d\nended %d\ninterrupted %d\ntimed_out %d\nabandoned %d\npid %d\n",
            st->started, st->ended, st->interrupted, st->timed_out, st->abandoned, st->pid);
    fprintf(f, "record_stall_ns %lld\n", (long long)st->record_stall_ns);
    if (st->mode[0]) fprintf(f, "mode %s\n", st->mode);
    for (size_t i = 0; i < st->n_errors; i++) {
        fputs("error ", f);
        for (const char *p = st->errors[i]; *p; p++) {
            if (*p == '\n') fputs("\\n", f);
            else if (*p == '\\') fputs("\\\\", f);
            else fputc(*p, f);
        }
        fputc('\n', f);
    }
    return CB_OK;
}

int cb_run_state_write(const char *dir, const char *name, const cb_run_state *st, cb_error *err) {
    return cb_outdir_write_file(dir, name, state_write, (void *)st, err);
}

static int parse_i64(const char *s, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || end == s || *end) return -1;
    *out = v;
    return 0;
}

int cb_run_state_read(const char *dir, const char *name, cb_run_state *st, cb_error *err) {
    memset(st, 0, sizeof *st);
    char path[CB_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = NULL;
    size_t len = 0;
    int rc = cb_read_file(path, 256u * 1024u, &text, &len, err);
    if (rc) return rc;
    int line_no = 0;
    char *save = text;
    while (!rc && save && *save) {
        char *line = save;
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        save = nl ? nl + 1 : NULL;
        line_no++;
        if (!*line) continue;
        char *sp = strchr(line, ' ');
        if (!sp) {
            rc = cb_error_set(err, CB_EIO, "%s:%d: malformed line", path, line_no);
            break;
        }
        *sp = '\0';
        const char *key = line, *val = sp + 1;
        int64_t v = 0;
        if (!strcmp(key, "error")) {
            if (st->n_errors < CB_STATE_MAX_ERRORS) {
                char *o = st->errors[st->n_errors++];
                size_t k = 0;
                for (const char *p = val; *p && k + 1 < sizeof st->errors[0]; p++) {
                    if (*p == '\\' && p[1] == 'n') o[k++] = '\n', p++;
                    else if (*p == '\\' && p[1] == '\\') o[k++] = '\\', p++;
                    else o[k++] = *p;
                }
                o[k] = '\0';
            }
            continue;
        }
        if (!strcmp(key, "mode")) {
            snprintf(st->mode, sizeof st->mode, "%s", val);
            continue;
        }
        if (parse_i64(val, &v)) {
            rc = cb_error_set(err, CB_EIO, "%s:%d: %s: expected an integer", path, line_no, key);
            break;
        }
        if (!strcmp(key, "t0_ns")) st->t0_ns = v;
        else if (!strcmp(key, "wall_start_ns")) st->wall_start_ns = v;
        else if (!strcmp(key, "end_ns")) st->end_ns = v;
        else if (!strcmp(key, "started")) st->started = v != 0;
        else if (!strcmp(key, "ended")) st->ended = v != 0;
        else if (!strcmp(key, "interrupted")) st->interrupted = v != 0;
        else if (!strcmp(key, "timed_out")) st->timed_out = v != 0;
        else if (!strcmp(key, "abandoned")) st->abandoned = v != 0;
        else if (!strcmp(key, "pid")) st->pid = (int)v;
        else if (!strcmp(key, "record_stall_ns")) st->record_stall_ns = v;
        /* colobench_state and unknown keys (a newer writer): ignored */
    }
    cb_free(text);
    return rc;
}
