/* experiment/phase.c - one phase in its collocation mode (see phase.h).
 *
 * Design (in process): cb_runtime create -> prepare -> the recorder -> start, then a
 * supervision loop that waits on the runtime in 50 ms slices, polls the recorder's health (a
 * write error stops the run at once: results written so far are kept, the error is reported),
 * and prints progress. Signals reach the runtime through cb_phase_ctl (cb_runtime_stop).
 * Design (children): spawn every child (experiment/child.c) with the benchmark text; prepare them
 * (serially or in parallel); release them with one t0; then supervise with waitpid(WNOHANG) in
 * 20 ms slices until all have exited, forwarding stop requests (the signal thread does it through
 * cb_phase_ctl). Then each child's state file says how its run ended, and the phase's CSVs are
 * the children's rows in pipeline order.
 * Thread-safety: one controlling thread; the ctl's mutex guards what the signal thread reads.
 * Ownership: see phase.h.
 */
#include "experiment/phase.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collocate/barrier.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "experiment/outdir.h"
#include "record/recorder.h"

/* ---- stop control ------------------------------------------------------------------------- */

void cb_phase_ctl_init(cb_phase_ctl *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
}

void cb_phase_ctl_fini(cb_phase_ctl *c) { pthread_mutex_destroy(&c->mu); }

bool cb_phase_ctl_stopped(cb_phase_ctl *c) {
    if (!c) return false;
    pthread_mutex_lock(&c->mu);
    bool s = c->stopped;
    pthread_mutex_unlock(&c->mu);
    return s;
}

void cb_phase_ctl_signal(void *arg, int signo, int count) {
    cb_phase_ctl *c = arg;
    (void)signo;
    pthread_mutex_lock(&c->mu);
    c->signals = count;
    c->stopped = true;
    if (c->rt) cb_runtime_stop(c->rt, count > 1 ? CB_STOP_CANCEL : CB_STOP_DRAIN);
    /* Children stop their load and drain on the first SIGTERM, cancel on the second, and give
     * up on stuck stage runs on the third; a fourth gets SIGKILL. */
    for (size_t i = 0; c->pids && i < c->n_pids; i++)
        if (c->pids[i] > 0) kill(c->pids[i], count > 3 ? SIGKILL : SIGTERM);
    pthread_mutex_unlock(&c->mu);
}

static void ctl_set(cb_phase_ctl *c, cb_runtime *rt, pid_t *pids, size_t n) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->rt = rt;
    c->pids = pids;
    c->n_pids = n;
    pthread_mutex_unlock(&c->mu);
}

static int ctl_signals(cb_phase_ctl *c) {
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    int n = c->signals;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- results ------------------------------------------------------------------------------ */

void cb_phase_add_error(cb_phase *ph, const char *fmt, ...) {
    if (ph->n_errors >= CB_PHASE_MAX_ERRORS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ph->errors[ph->n_errors], sizeof ph->errors[0], fmt, ap);
    va_end(ap);
    ph->error_ptrs[ph->n_errors] = ph->errors[ph->n_errors];
    ph->n_errors++;
}

int cb_phase_alloc(cb_phase *ph, const cb_spec *view, cb_error *err) {
    ph->view = *view;
    ph->barrier_skew_ns = ph->barrier_max_delay_ns = -1;
    size_t n = view->n_pipelines ? view->n_pipelines : 1, stages = 0;
    for (size_t i = 0; i < view->n_pipelines; i++) stages += view->pipelines[i].n_stages;
    ph->records = cb_calloc(n, sizeof *ph->records);
    ph->paths = cb_calloc(n, sizeof *ph->paths);
    ph->splits = cb_calloc(n, sizeof *ph->splits);
    ph->prepare_ns = cb_calloc(stages ? stages : 1, sizeof *ph->prepare_ns);
    ph->pids = cb_calloc(n, sizeof *ph->pids);
    ph->status = cb_calloc(n, sizeof *ph->status);
    ph->status_ptrs = cb_calloc(n, sizeof *ph->status_ptrs);
    if (!ph->records || !ph->paths || !ph->splits || !ph->prepare_ns || !ph->pids || !ph->status ||
        !ph->status_ptrs)
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    return CB_OK;
}

void cb_phase_fini(cb_phase *ph) {
    if (!ph) return;
    cb_free(ph->records);
    cb_free(ph->paths);
    cb_free(ph->splits);
    cb_free(ph->prepare_ns);
    cb_free(ph->pids);
    cb_free(ph->status);
    cb_free(ph->status_ptrs);
    cb_monitor_destroy(ph->monitor);
    memset(ph, 0, sizeof *ph);
}

void cb_phase_summary_input(const cb_phase *ph, cb_summary_input *in) {
    memset(in, 0, sizeof *in);
    in->spec = &ph->view;
    in->t0_ns = ph->t0_ns;
    in->end_ns = ph->end_ns;
    in->wall_start_ns = ph->wall_start_ns;
    in->interrupted = ph->interrupted;
    in->timed_out = ph->timed_out;
    in->errors = ph->error_ptrs;
    in->n_errors = ph->n_errors;
    in->pipelines = ph->records;
    in->prepare_ns = ph->prepare_ns;
}

/* Reads a splits.bin (cb_splits_record entries) into per-pipeline splits: entry k goes to
 * pipeline (file_pipeline < 0 ? 0 : its own index). 0 when absent. */
static int read_splits(const char *path, cb_splits *out, size_t n_out, bool single, cb_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? CB_OK : cb_error_set(err, CB_EIO, "%s: %s", path, strerror(errno));
    cb_splits_record r;
    int rc = CB_OK;
    for (;;) {
        size_t got = 0;
        while (got < sizeof r) {
            ssize_t k = read(fd, (char *)&r + got, sizeof r - got);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) break;
            got += (size_t)k;
        }
        if (got == 0) break;
        if (got != sizeof r || r.splits.n < 0 || r.splits.n > CB_MAX_SPLITS || r.pipeline < 0) {
            rc = cb_error_set(err, CB_EIO, "%s: malformed", path);
            break;
        }
        size_t p = single ? 0 : (size_t)r.pipeline;
        if (p >= n_out) continue;
        for (int i = 0; i < r.splits.n; i++) r.splits.split[i].name[CB_SPLIT_NAME_MAX - 1] = '\0';
        out[p] = r.splits;
    }
    close(fd);
    return rc;
}

int cb_phase_point_records(cb_phase *ph, const char *dir, bool in_process, cb_error *err) {
    static const char *const names[3] = {"queries.bin", "events.bin", "metrics.bin"};
    for (size_t i = 0; i < ph->view.n_pipelines; i++) {
        cb_pipeline_record *r = &ph->records[i];
        memset(r, 0, sizeof *r);
        char base[CB_PATH_MAX];
        if (in_process)
            snprintf(base, sizeof base, "%s", dir);
        else
            snprintf(base, sizeof base, "%s/pipelines/%s", dir, ph->view.pipelines[i].name);
        for (int k = 0; k < 3; k++) snprintf(ph->paths[i][k], sizeof ph->paths[i][k], "%s/%s", base, names[k]);
        r->queries_bin = ph->paths[i][0];
        r->events_bin = ph->paths[i][1];
        r->metrics_bin = ph->paths[i][2];
        r->file_pipeline = in_process ? (int)i : -1;
        if (!in_process) {
            char sp[CB_PATH_MAX];
            snprintf(sp, sizeof sp, "%s/splits.bin", base);
            int rc = read_splits(sp, &ph->splits[i], 1, true, err);
            if (rc) return rc;
        }
    }
    if (in_process) {
        char sp[CB_PATH_MAX];
        snprintf(sp, sizeof sp, "%s/splits.bin", dir);
        int rc = read_splits(sp, ph->splits, ph->view.n_pipelines, false, err);
        if (rc) return rc;
    }
    for (size_t i = 0; i < ph->view.n_pipelines; i++)
        ph->records[i].splits = ph->splits[i].n > 0 ? &ph->splits[i] : NULL;
    return CB_OK;
}

/* ---- merged CSVs -------------------------------------------------------------------------- */

typedef struct merge_ctx {
    const cb_spec *view;
    const char *dir;
    const char *name;
    const char *header;   /* written when no child file has one */
} merge_ctx;

/* Appends src's rows (after its header line) up to its last newline. */
static int append_rows(FILE *dst, const char *src, bool *have_header, cb_error *err) {
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? CB_OK : cb_error_set(err, CB_EIO, "%s: %s", src, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return cb_error_set(err, CB_EIO, "%s: %s", src, strerror(errno));
    }
    char buf[65536];
    off_t size = sb.st_size, pos = 0;
    /* The last newline bounds what is copied: a partial last row (a crash mid-write) is not. */
    off_t end = 0;
    for (off_t at = size; at > 0 && end == 0;) {
        size_t chunk = at > (off_t)sizeof buf ? sizeof buf : (size_t)at;
        at -= (off_t)chunk;
        ssize_t k = pread(fd, buf, chunk, at);
        if (k != (ssize_t)chunk) break;
        for (size_t i = chunk; i-- > 0;)
            if (buf[i] == '\n') {
                end = at + (off_t)i + 1;
                break;
            }
    }
    bool in_header = true;
    int rc = CB_OK;
    while (pos < end) {
        size_t want = end - pos > (off_t)sizeof buf ? sizeof buf : (size_t)(end - pos);
        ssize_t k = pread(fd, buf, want, pos);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            rc = cb_error_set(err, CB_EIO, "%s: cannot read: %s", src, k < 0 ? strerror(errno) : "file shrank");
            break;
        }
        size_t start = 0;
        if (in_header) {
            char *nl = memchr(buf, '\n', (size_t)k);
            size_t hl = nl ? (size_t)(nl - buf) + 1 : (size_t)k;
            if (!*have_header && fwrite(buf, 1, hl, dst) != hl) break;
            if (nl) {
                in_header = false;
                *have_header = true;
            }
            start = hl;
        }
        if (fwrite(buf + start, 1, (size_t)k - start, dst) != (size_t)k - start) break;
        pos += k;
    }
    close(fd);
    return rc;
}

static int merge_write(void *arg, FILE *f, cb_error *err) {
    merge_ctx *m = arg;
    bool have_header = false;
    for (size_t i = 0; i < m->view->n_pipelines; i++) {
        char src[CB_PATH_MAX];
        snprintf(src, sizeof src, "%s/pipelines/%s/%s", m->dir, m->view->pipelines[i].name, m->name);
        int rc = append_rows(f, src, &have_header, err);
        if (rc) return rc;
        if (ferror(f)) return CB_EIO;
    }
    if (!have_header) fputs(m->header, f);
    return CB_OK;
}

int cb_phase_merge_csv(const cb_spec *view, const char *dir, cb_error *err) {
    static const char *const names[3] = {"events.csv", "queries.csv", "stage_metrics.csv"};
    const char *headers[3] = {CB_EVENTS_CSV_HEADER, CB_QUERIES_CSV_HEADER, CB_STAGE_METRICS_CSV_HEADER};
    for (int k = 0; k < 3; k++) {
        merge_ctx m = {view, dir, names[k], headers[k]};
        int rc = cb_outdir_write_file(dir, names[k], merge_write, &m, err);
        if (rc) return rc;
    }
    return CB_OK;
}

/* ---- progress ----------------------------------------------------------------------------- */

static void progress_line(const cb_phase_opts *o, const cb_phase *ph, cb_recorder *rec,
                          const cb_child *ch, int64_t now) {
    FILE *out = o->progress_out ? o->progress_out : stderr;
    char line[1024];
    size_t off = 0;
    double el = (double)(now - ph->t0_ns) / 1e9;
    for (size_t i = 0; i < ph->view.n_pipelines && off < sizeof line - 200; i++) {
        int w;
        if (rec) {
            uint64_t ended;
            int64_t p50, p99;
            cb_recorder_progress(rec, i, &ended, &p50, &p99);
            w = snprintf(line + off, sizeof line - off, "%s[%s] %llu q, %.0f q/s, p50 %.1f us, p99 %.1f us",
                         i ? "  " : "", ph->view.pipelines[i].name, (unsigned long long)ended,
                         el > 0 ? (double)ended / el : 0.0, (double)p50 / 1e3, (double)p99 / 1e3);
        } else {
            char path[CB_PATH_MAX];
            snprintf(path, sizeof path, "%s/queries.bin", ch[i].dir);
            struct stat sb;
            long long q = stat(path, &sb) == 0 ? (long long)(sb.st_size / 64) : 0;
            w = snprintf(line + off, sizeof line - off, "%s%s: %lld q%s", i ? ", " : "",
                         ph->view.pipelines[i].name, q, ch[i].exited ? " (done)" : "");
        }
        if (w > 0) off += (size_t)w;
    }
    if (off >= sizeof line) off = sizeof line - 1;
    if (o->progress == 2)
        fprintf(out, "\r%.*s %6.1f s\033[K", (int)off, line, el);
    else
        fprintf(out, "%.*s (%.1f s)\n", (int)off, line, el);
    fflush(out);
}

/* ---- in process --------------------------------------------------------------------------- */

typedef struct inproc_ready {
    cb_monitor *mon;
} inproc_ready;

static int on_ready_inproc(void *arg, int64_t *t0_ns, cb_error *err) {
    inproc_ready *r = arg;
    if (r->mon) cb_monitor_set_t0(r->mon, *t0_ns);
    return CB_OK;
}

static void write_state(const cb_phase_opts *o, const cb_phase *ph, bool ended) {
    cb_run_state st;
    memset(&st, 0, sizeof st);
    st.t0_ns = ph->t0_ns;
    st.wall_start_ns = ph->wall_start_ns;
    st.end_ns = ended ? ph->end_ns : 0;
    st.started = ph->started;
    st.ended = ended;
    st.interrupted = ph->interrupted;
    st.timed_out = ph->timed_out;
    st.abandoned = ph->abandoned;
    st.record_stall_ns = ph->record_stall_ns;
    st.pid = (int)getpid();
    snprintf(st.mode, sizeof st.mode, "%s", o->in_process ? "threads" : "children");
    for (size_t i = 0; i < ph->n_errors; i++) cb_run_state_add_error(&st, ph->errors[i]);
    cb_error e;
    cb_error_clear(&e);
    if (cb_run_state_write(o->dir, "run.state", &st, &e) != CB_OK && ended)
        cb_phase_add_error((cb_phase *)ph, "%s", e.msg);
}

static int run_in_process(const cb_phase_opts *o, cb_phase *ph, cb_error *err) {
    const cb_spec *v = &ph->view;
    if (ph->monitor) {
        char label[512];
        size_t off = 0;
        label[0] = '\0';
        for (size_t i = 0; i < v->n_pipelines && off < sizeof label; i++) {
            int w = snprintf(label + off, sizeof label - off, "%s%s", i ? "+" : "", v->pipelines[i].name);
            if (w > 0) off += (size_t)w;
        }
        cb_monitor_add_process(ph->monitor, getpid(), label);
    }
    inproc_ready ir = {ph->monitor};
    cb_runtime_opts ro = CB_RUNTIME_OPTS_DEFAULT;
    ro.spec = v;
    ro.log = o->log;
    ro.drain_timeout_ns = o->drain_timeout_ns;
    ro.abandon_timeout_ns = o->abandon_timeout_ns;
    ro.on_ready = on_ready_inproc;
    ro.on_ready_arg = &ir;
    cb_runtime *rt = NULL;
    cb_recorder *rec = NULL;
    int rc = cb_runtime_create(&ro, &rt, err);
    if (!rc) {
        ctl_set(o->ctl, rt, NULL, 0);
        if (cb_phase_ctl_stopped(o->ctl)) cb_runtime_stop(rt, CB_STOP_CANCEL);
        rc = cb_runtime_prepare(rt, err);
    }
    if (!rc) {
        cb_recorder_opts reco = CB_RECORDER_OPTS_DEFAULT;
        reco.spec = v;
        reco.out_dir = o->dir;
        rc = cb_recorder_create(&reco, &rec, err);
    }
    if (!rc) {
        rc = cb_runtime_start(rt, cb_recorder_sink(rec), err);
        if (rc) cb_runtime_stop(rt, CB_STOP_CANCEL);
    }
    if (rc) { /* nothing ran */
        ctl_set(o->ctl, NULL, NULL, 0);
        if (rc == CB_ESTOPPED) ph->interrupted = true;
        cb_run_result res;
        if (rt) {
            cb_runtime_join(rt, &res);
            cb_run_result_fini(&res);
        }
        cb_runtime_destroy(rt);
        cb_recorder_destroy(rec);
        return rc;
    }
    ph->started = true;
    cb_runtime_start_times(rt, &ph->t0_ns, &ph->wall_start_ns);
    write_state(o, ph, false); /* when the run started, for `colobench summarize` */
    int64_t next_progress = ph->t0_ns + (o->progress == 2 ? 200000000LL : 5000000000LL);
    bool io_stopped = false, server_stopped = false;
    for (;;) {
        bool done = cb_runtime_wait(rt, 50000000);
        cb_error re;
        cb_error_clear(&re);
        if (!io_stopped && cb_recorder_check(rec, &re) != CB_OK) {
            /* Results can no longer be written: stop now, keep what was written. */
            cb_phase_add_error(ph, "%s", re.msg);
            cb_runtime_stop(rt, CB_STOP_CANCEL);
            io_stopped = true;
        }
        if (!done && !server_stopped && cb_servers_check(o->servers, &re) != CB_OK) {
            /* A server the pipelines need has ended: a failure, not an interrupt. */
            cb_phase_add_error(ph, "%s", re.msg);
            cb_runtime_stop(rt, CB_STOP_CANCEL);
            server_stopped = true;
        }
        if (done) break;
        int64_t now = cb_clock_now_ns();
        if (o->progress && now >= next_progress) {
            progress_line(o, ph, rec, NULL, now);
            next_progress = now + (o->progress == 2 ? 200000000LL : 5000000000LL);
        }
    }
    cb_run_result res;
    int jrc = cb_runtime_join(rt, &res);
    ctl_set(o->ctl, NULL, NULL, 0);
    ph->t0_ns = res.t0_ns;
    ph->wall_start_ns = res.wall_start_ns;
    ph->end_ns = res.end_ns;
    ph->interrupted = res.stopped && !io_stopped && !server_stopped;
    ph->timed_out = res.timed_out;
    ph->abandoned = res.abandoned;
    for (size_t i = 0; i < res.n_errors; i++) cb_phase_add_error(ph, "%s", res.errors[i]);
    size_t flat = 0;
    for (size_t i = 0; i < v->n_pipelines; i++) {
        ph->pids[i] = (int)getpid();
        for (size_t s = 0; s < v->pipelines[i].n_stages; s++, flat++)
            ph->prepare_ns[flat] = res.prepare_ns ? res.prepare_ns[flat] : 0;
    }
    cb_run_result_fini(&res);
    if (o->progress == 2) {
        progress_line(o, ph, rec, NULL, ph->end_ns);
        fputc('\n', o->progress_out ? o->progress_out : stderr);
    }
    cb_error re;
    cb_error_clear(&re);
    int src = cb_recorder_stop(rec, &re);
    ph->record_stall_ns = cb_recorder_stall_ns(rec);
    if (src != CB_OK && !io_stopped) cb_phase_add_error(ph, "%s", re.msg);
    else if (src != CB_OK) {
        char msg[1024];
        cb_error_format(&re, msg, sizeof msg);
        /* The same error, now with what was written: replace the first message. */
        snprintf(ph->errors[0], sizeof ph->errors[0], "%s", msg);
    }
    if (jrc == CB_ESTOPPED) {
        /* Abandoned threads may still push into their rings: keep them allocated, and keep
         * the benchmark they read alive until the process exits. */
        if (o->ctl) {
            pthread_mutex_lock(&o->ctl->mu);
            o->ctl->abandoned = true;
            pthread_mutex_unlock(&o->ctl->mu);
        }
        cb_recorder_destroy_keep_rings(rec);
    } else {
        cb_recorder_destroy(rec);
    }
    cb_runtime_destroy(rt);
    cb_error pe;
    cb_error_clear(&pe);
    if (cb_phase_point_records(ph, o->dir, true, &pe) != CB_OK) cb_phase_add_error(ph, "%s", pe.msg);
    return CB_OK;
}

/* ---- children ----------------------------------------------------------------------------- */

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

/* Waits for child c's ready message while watching for a stop and its death. */
static int wait_ready(const cb_phase_opts *o, cb_child *c, const char *name, int64_t *prepare_ns,
                      size_t n_stages, cb_error *err) {
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
            cb_child_describe_status(ws, st, sizeof st);
            if (cb_phase_ctl_stopped(o->ctl))
                return cb_error_set(err, CB_ESTOPPED, "interrupted before the start");
            return cb_error_set(err, CB_ESTAGE,
                                "pipeline '%s': its process (pid %d) %s before the start "
                                "(its messages are above)",
                                name, (int)c->pid, st);
        }
        if (cb_phase_ctl_stopped(o->ctl)) return cb_error_set(err, CB_ESTOPPED, "interrupted before the start");
    }
}

/* The environment of child i: MPS or MIG. */
static int child_env(const cb_phase_opts *o, const cb_pipeline_spec *p, size_t index, char *buf,
                     size_t size, const char **vars, size_t max, size_t *n, cb_error *err) {
    *n = 0;
    if (p->mode == CB_COLLOC_MPS && o->mps) {
        int k = cb_mps_child_env(o->mps, p->mps_active_thread_percentage, p->mps_memory_limit_bytes,
                                 p->gpu_index >= 0 ? p->gpu_index : 0, buf, size, vars, max);
        if (k < 0) return cb_error_set(err, CB_EINVAL, "mps: child environment too large");
        *n = (size_t)k;
    } else if (p->mode == CB_COLLOC_MIG && o->mig_uuids && o->mig_uuids[index]) {
        snprintf(buf, size, "CUDA_VISIBLE_DEVICES=%s", o->mig_uuids[index]);
        vars[0] = buf;
        *n = 1;
    }
    return CB_OK;
}

/* Whether child status ws (state: its child.state, NULL when unreadable) is the outcome of the
 * stop the parent forwarded after `sigs` signals, not a failure: its run ended interrupted with
 * no error and nothing abandoned (it then exits 1), or it was killed by the SIGKILL that a fourth
 * signal sends. */
static bool child_interrupted(int ws, const cb_run_state *state, int sigs) {
    if (sigs < 1) return false;
    if (WIFSIGNALED(ws)) return sigs > 3 && WTERMSIG(ws) == SIGKILL;
    return WIFEXITED(ws) && WEXITSTATUS(ws) == 1 && state && state->ended && state->interrupted &&
           state->n_errors == 0 && !state->abandoned;
}

static int run_children(const cb_phase_opts *o, cb_phase *ph, cb_error *err) {
    const cb_spec *v = &ph->view;
    size_t n = v->n_pipelines;
    cb_child *ch = cb_calloc(n, sizeof *ch);
    int64_t *starts = cb_calloc(n, sizeof *starts);
    pid_t *pids = cb_calloc(n, sizeof *pids);
    size_t *flat = cb_calloc(n + 1, sizeof *flat);
    if (!ch || !starts || !pids || !flat) {
        cb_free(ch);
        cb_free(starts);
        cb_free(pids);
        cb_free(flat);
        return cb_error_set(err, CB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) ch[i].fd = -1, ch[i].pid = -1;
    int rc = CB_OK;
    ctl_set(o->ctl, NULL, pids, n);
    if (cb_phase_ctl_stopped(o->ctl)) rc = cb_error_set(err, CB_ESTOPPED, "interrupted before the start");
    /* Spawn. */
    for (size_t i = 0; i < n && !rc; i++) {
        const cb_pipeline_spec *p = &v->pipelines[i];
        cb_child *c = &ch[i];
        size_t index = o->only >= 0 ? (size_t)o->only : i;
        snprintf(c->dir, sizeof c->dir, "%s/pipelines/%s", o->dir, p->name);
        char rel[CB_PATH_MAX];
        snprintf(rel, sizeof rel, "pipelines/%s", p->name);
        cb_outdir sub = {{0}, -1, -1, false};
        snprintf(sub.path, sizeof sub.path, "%s", o->dir);
        sub.fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char made[CB_PATH_MAX];
        rc = sub.fd < 0 ? cb_error_set(err, CB_EIO, "%s: %s", o->dir, strerror(errno))
                        : cb_outdir_mkdir(&sub, rel, made, sizeof made, err);
        if (sub.fd >= 0) close(sub.fd);
        if (rc) break;
        char envbuf[8192];
        const char *env[CB_CHILD_MAX_ENV];
        size_t n_env = 0;
        if ((rc = child_env(o, p, index, envbuf, sizeof envbuf, env, CB_CHILD_MAX_ENV, &n_env, err))) break;
        cb_child_msg msg = {0};
        msg.config_name = o->bench->name;
        msg.config_text = o->bench->text;
        msg.config_len = o->bench->text_len;
        msg.sets = o->bench->sets;
        msg.n_sets = o->bench->n_sets;
        msg.index = (uint32_t)index;
        msg.flags = o->bench->allow_plugins ? CB_CHILD_ALLOW_PLUGINS : 0;
        msg.out_dir = c->dir;
        rc = cb_child_spawn(c, o->exe, &msg, env, n_env, err);
        if (c->pid > 0) {
            pthread_mutex_lock(&o->ctl->mu);
            pids[i] = c->pid;
            pthread_mutex_unlock(&o->ctl->mu);
            ph->pids[i] = (int)c->pid;
            if (ph->monitor) cb_monitor_add_process(ph->monitor, c->pid, p->name);
            /* A stop that came while this child was being made reaches it now. */
            if (cb_phase_ctl_stopped(o->ctl)) kill(c->pid, SIGTERM);
        }
    }
    /* Prepare: one at a time (serial) or all at once, then everyone waits at the barrier. */
    size_t flat0 = 0;
    for (size_t i = 0; i < n; i++) {
        flat[i] = flat0;
        flat0 += v->pipelines[i].n_stages;
    }
    bool serial = v->collocation.serial_prepare;
    if (!rc && !serial)
        for (size_t i = 0; i < n; i++) cb_barrier_send_prepare(ch[i].fd);
    for (size_t i = 0; !rc && i < n; i++) {
        if (serial) cb_barrier_send_prepare(ch[i].fd);
        rc = wait_ready(o, &ch[i], v->pipelines[i].name, ph->prepare_ns + flat[i], v->pipelines[i].n_stages, err);
    }
    if (rc) {
        if (rc == CB_ESTOPPED) ph->interrupted = true;
        stop_children(ch, n);
        goto out;
    }
    /* Release. */
    ph->t0_ns = cb_clock_now_ns();
    ph->wall_start_ns = cb_clock_wall_ns();
    for (size_t i = 0; i < n; i++) cb_barrier_send_go(ch[i].fd, ph->t0_ns);
    ph->started = true;
    if (ph->monitor) cb_monitor_set_t0(ph->monitor, ph->t0_ns);
    int64_t smin = INT64_MAX, smax = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        if (cb_barrier_recv_start(ch[i].fd, &starts[i]) != CB_OK) continue;
        if (starts[i] < smin) smin = starts[i];
        if (starts[i] > smax) smax = starts[i];
    }
    if (smax != INT64_MIN) {
        ph->barrier_skew_ns = smax - smin;
        ph->barrier_max_delay_ns = smax - ph->t0_ns;
    }
    write_state(o, ph, false);
    /* Supervise until every child has exited. */
    int64_t next_progress = ph->t0_ns + (o->progress == 2 ? 200000000LL : 5000000000LL);
    int told = 0;
    bool server_stopped = false;
    for (;;) {
        size_t live = 0;
        for (size_t i = 0; i < n; i++) {
            if (ch[i].exited) continue;
            int ws;
            pid_t r = waitpid(ch[i].pid, &ws, WNOHANG);
            if (r == ch[i].pid) {
                reap(&ch[i], ws);
                pthread_mutex_lock(&o->ctl->mu);
                pids[i] = -1; /* reaped: its pid may be reused, never signal it again */
                pthread_mutex_unlock(&o->ctl->mu);
                char st[96];
                cb_child_describe_status(ws, st, sizeof st);
                if (o->progress)
                    fprintf(o->progress_out ? o->progress_out : stderr, "%scolobench: pipeline '%s' (pid %d) %s\n",
                            o->progress == 2 ? "\r\033[K" : "", v->pipelines[i].name, (int)ch[i].pid, st);
            } else {
                live++;
            }
        }
        if (!live) break;
        cb_error se;
        cb_error_clear(&se);
        if (!server_stopped && cb_servers_check(o->servers, &se) != CB_OK) {
            /* A server the pipelines need has ended: stop them (they drain, as on a first
             * signal); a failure, not an interrupt. */
            cb_phase_add_error(ph, "%s", se.msg);
            kill_children(ch, n, SIGTERM);
            server_stopped = true;
        }
        int sigs = ctl_signals(o->ctl);
        if (sigs > told) {
            ph->interrupted = true;
            if (o->progress)
                fprintf(o->progress_out ? o->progress_out : stderr, "%scolobench: stopping every pipeline%s\n",
                        o->progress == 2 ? "\n" : "", sigs > 1 ? " (cancelling)" : "");
            told = sigs;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
        int64_t now = cb_clock_now_ns();
        if (o->progress && now >= next_progress) {
            progress_line(o, ph, NULL, ch, now);
            next_progress = now + (o->progress == 2 ? 200000000LL : 5000000000LL);
        }
    }
    ph->end_ns = cb_clock_now_ns();
    if (o->progress == 2) {
        progress_line(o, ph, NULL, ch, ph->end_ns);
        fputc('\n', o->progress_out ? o->progress_out : stderr);
    }
    /* Gather: each child's state, its status, the merged CSVs, the raw files. A child that
     * stopped for a server's end stopped as on a signal. */
    int sigs = ctl_signals(o->ctl);
    bool signalled = sigs > 0;
    if (server_stopped && sigs < 1) sigs = 1;
    for (size_t i = 0; i < n; i++) {
        const char *name = v->pipelines[i].name;
        cb_run_state st;
        cb_error se;
        cb_error_clear(&se);
        int s = cb_run_state_read(ch[i].dir, "child.state", &st, &se);
        char os[64];
        cb_child_describe_status(ch[i].wstatus, os, sizeof os);
        if (child_interrupted(ch[i].wstatus, s == CB_OK ? &st : NULL, sigs)) {
            /* Stopped by the interrupt the parent forwarded: an interrupt, not a failure. */
            snprintf(ph->status[i], sizeof ph->status[0], "%s (%s)", signalled ? "interrupted" : "stopped", os);
            ph->interrupted |= signalled;
        } else {
            snprintf(ph->status[i], sizeof ph->status[0], "%s", os);
            if (!WIFEXITED(ch[i].wstatus) || WEXITSTATUS(ch[i].wstatus) != 0)
                cb_phase_add_error(ph, "pipeline '%s': its process (pid %d) %s", name, (int)ch[i].pid, os);
        }
        ph->status_ptrs[i] = ph->status[i];
        if (s == CB_OK) {
            ph->record_stall_ns += st.record_stall_ns;
            ph->interrupted |= st.interrupted && (signalled || !server_stopped);
            ph->timed_out |= st.timed_out;
            ph->abandoned |= st.abandoned;
            for (size_t k = 0; k < st.n_errors; k++) /* runtime errors name their pipeline already */
                cb_phase_add_error(ph, "%s%s%s%s", strncmp(st.errors[k], "pipeline '", 10) ? "pipeline '" : "",
                                   strncmp(st.errors[k], "pipeline '", 10) ? name : "",
                                   strncmp(st.errors[k], "pipeline '", 10) ? "': " : "", st.errors[k]);
        } else if (s != CB_ENOENT) {
            cb_phase_add_error(ph, "pipeline '%s': %s", name, se.msg);
        }
    }
    {
        cb_error me;
        cb_error_clear(&me);
        if (cb_phase_merge_csv(v, o->dir, &me) != CB_OK) cb_phase_add_error(ph, "%s", me.msg);
        if (cb_phase_point_records(ph, o->dir, false, &me) != CB_OK) cb_phase_add_error(ph, "%s", me.msg);
    }
out:
    ctl_set(o->ctl, NULL, NULL, 0);
    for (size_t i = 0; i < n; i++)
        if (ch[i].fd >= 0) close(ch[i].fd);
    cb_free(flat);
    cb_free(starts);
    cb_free(pids);
    cb_free(ch);
    return rc;
}

/* ---- public ------------------------------------------------------------------------------- */

int cb_phase_run(const cb_phase_opts *o, cb_phase *ph, cb_error *err) {
    memset(ph, 0, sizeof *ph);
    const cb_spec *spec = o->bench->spec;
    cb_spec view = o->only >= 0 ? cb_spec_single(spec, (size_t)o->only) : *spec;
    int rc = cb_phase_alloc(ph, &view, err);
    if (rc) return rc;
    if (o->monitor && spec->monitors.enabled) {
        cb_monitor_opts mo = CB_MONITOR_OPTS_DEFAULT;
        mo.period_ns = spec->monitors.period_ns;
        mo.sources = spec->monitors.sources;
        mo.out_dir = o->dir;
        mo.nvml_library = o->nvml_library ? o->nvml_library : spec->monitors.nvml_library;
        mo.log = o->log;
        for (size_t i = 0; i < view.n_pipelines; i++) {
            cb_colloc_mode m = view.pipelines[i].mode;
            if (m == CB_COLLOC_MPS || m == CB_COLLOC_MIG) mo.gpu_per_process_attributable = false;
        }
        rc = cb_monitor_create(&mo, &ph->monitor, err);
        if (rc) return rc;
        cb_servers_watch(o->servers, ph->monitor);
    }
    rc = o->in_process ? run_in_process(o, ph, err) : run_children(o, ph, err);
    if (ph->monitor) {
        cb_error merr;
        cb_error_clear(&merr);
        if (cb_monitor_stop(ph->monitor, &merr) != CB_OK) {
            char msg[1024];
            cb_error_format(&merr, msg, sizeof msg);
            cb_phase_add_error(ph, "%s", msg);
        }
    }
    if (ph->started) write_state(o, ph, true);
    return rc;
}
