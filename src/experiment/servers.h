/* experiment/servers.h - the servers a benchmark declares (`servers:`, core/spec.h): started
 * before the baselines, ready before any load, watched while the pipelines run, stopped after
 * the last phase on every exit path.
 *
 * Order in a run (experiment.c): the output directory is opened and config.yaml/env.json
 * written; the MPS daemon is acquired (a server with `mps: true` joins it); cb_servers_create
 * resolves every command on PATH and builds its argv and environment ({host} and {port}
 * replaced), so a missing program fails before anything starts; cb_servers_start starts them
 * all and waits until each answers 2xx at http://HOST:PORT/READY (libcurl, every 100 ms,
 * 250 ms connect timeout); the phases run with cb_servers_check in their supervision loops
 * (a server that ends by itself fails the phase: its results so far are kept); cb_servers_stop
 * stops them after the last phase (and on the way out of every failure), before summary.json
 * is written, so its "servers" section says how each ended.
 *
 * Files: DIR/servers/NAME.stdout and NAME.stderr (the server's output, created without
 * following symbolic links: experiment/outdir.h's rules), DIR/servers/NAME.pid (the server's
 * pid, written atomically once it is started).
 *
 * Process design (no server outlives colobench, multi-process servers included):
 *
 *   colobench ──fork──> supervisor S ──fork──> server C ──exec──> COMMAND (+ its children)
 *
 * - S (after fork, async-signal-safe calls only, argv/envp/paths built before the fork): leaves
 *   colobench's process group (setpgid(0, 0): a Ctrl-C at the terminal reaches colobench, which
 *   decides), sets PR_SET_PDEATHSIG = SIGTERM and then re-checks getppid() (colobench gone
 *   already: nothing is started), makes itself a child subreaper (PR_SET_CHILD_SUBREAPER: every
 *   orphaned descendant of the server becomes S's child, so S can reap them and knows when none
 *   is left), closes every descriptor it inherited except its own four (no lock file or socket
 *   of colobench's is held by S), blocks SIGTERM, SIGINT, SIGHUP and SIGCHLD and forks C.
 * - C makes its own process group (pgid = its pid, also set by S to close the race), restores
 *   default dispositions and an empty signal mask, sets PR_SET_PDEATHSIG = SIGKILL (S killed by
 *   someone: the server dies too), takes /dev/null, NAME.stdout and NAME.stderr as fds 0-2,
 *   closes the rest, chdir(cwd), applies `cpus`, and execve()s the resolved program.
 * - S tells colobench C's pid, then waits in sigtimedwait. A stop request (SIGTERM from
 *   cb_servers_stop, or the parent-death SIGTERM when colobench dies, SIGKILL included) or C's
 *   own exit starts the same sequence: SIGTERM to C's group, stop_timeout of grace, SIGKILL to
 *   the group, and S reaps until waitpid reports no child at all (every descendant gone), then
 *   exits. When C exits by itself S reports C's wait status to colobench at once (before the
 *   clean-up), and exits with C's exit code (128 + N for signal N); a stopped server's S exits 0.
 *   S talks to colobench over a pipe of fixed-size records (started: pid; ended: wait status,
 *   whether it was asked to stop, whether SIGKILL was needed).
 *
 * Why every exit path ends with no process of the server's group (and of its descendants):
 * success, a stage error, SIGINT and SIGTERM all return through the experiment, which calls
 * cb_servers_stop (and cb_servers_destroy stops what is still running); colobench SIGKILLed
 * delivers S's parent-death SIGTERM, the same sequence. In each, S exits only after SIGKILL to
 * the group and waitpid's ECHILD: no member that is a descendant of C remains. What this cannot
 * reach: a descendant that moves itself to another session or process group and is not orphaned
 * into S (it is still S's descendant and S waits for it, but the group signals miss it: after
 * the SIGKILL grace S gives up on it after 5 s); and SIGKILL sent to S itself (C then dies by its
 * own parent-death signal; its children would not). The parent-death signal follows the thread
 * that forked S: start servers from the thread that lives as long as the run (colobench's main
 * thread does).
 *
 * Thread-safety: one controlling thread for everything here. Ownership: opts are borrowed until
 * cb_servers_destroy (the spec must outlive the handle); the handle owns every descriptor and
 * process it made.
 */
#ifndef CB_EXPERIMENT_SERVERS_H
#define CB_EXPERIMENT_SERVERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "analysis/json.h"
#include "collocate/mps.h"
#include "colobench/error.h"
#include "core/spec.h"
#include "experiment/outdir.h"
#include "monitor/monitor.h"

struct cb_phase_ctl;
typedef struct cb_servers cb_servers;

typedef struct cb_servers_opts {
    const cb_spec *spec;          /* its servers (at least one) */
    const cb_outdir *od;          /* the run's directory: DIR/servers/ is made in it */
    cb_mps *mps;                  /* the experiment's MPS daemon (servers with mps: true) or NULL */
    struct cb_phase_ctl *ctl;     /* a stop request ends the readiness wait; NULL: none */
    FILE *msg;                    /* messages ("colobench: server 'x': ..."); NULL: stderr */
    bool quiet;                   /* no informational messages (errors and log tails still) */
} cb_servers_opts;

/* Everything a start needs, before anything starts: the servers/ directory, each program found
 * on PATH (CB_ECONFIG at command[0] when it is not), argv and environment. On error *out is
 * NULL and nothing was started. */
int cb_servers_create(const cb_servers_opts *opts, cb_servers **out, cb_error *err);

/* Starts every server and waits until each is ready. CB_OK; CB_ESTOPPED when a stop request
 * came during the wait; CB_ETIMEDOUT when one was not ready within its ready_timeout; CB_ESTAGE
 * when one exited first (the message names the server, its status or the URL and timeout, and
 * the end of its logs; the whole tail, up to 20 lines / 4 KiB of each log, is printed to msg).
 * On any error every server has been stopped already. */
int cb_servers_start(cb_servers *s, cb_error *err);

/* CB_OK while every started server runs; CB_ESTAGE (message: the server, its pid and exit
 * status, the end of its logs) once one has ended by itself. The first time a server is found
 * ended, its log tail is printed to msg. Cheap: one non-blocking read per server. */
int cb_servers_check(cb_servers *s, cb_error *err);

/* The monitors watch each running server's processes (its process group as found now) as
 * "server:NAME". */
void cb_servers_watch(cb_servers *s, cb_monitor *mon);

/* Stops every server still running (SIGTERM to each supervisor, which ends its group within
 * stop_timeout and a grace) and reaps the supervisors. Idempotent. CB_OK, or CB_EIO when a
 * supervisor had to be killed (it is reaped in every case). */
int cb_servers_stop(cb_servers *s, cb_error *err);

/* Writes the value of summary.json's "servers": one object per server: name, url, pid,
 * ready, ready_ns (start to first 2xx), ended ("running", "stopped", "died", "not started"),
 * status ("exited 0", "killed by signal 15 (Terminated)"), exit_status or signal, whether
 * SIGKILL was needed after stop_timeout, the log files. */
void cb_servers_json(const cb_servers *s, cb_json *j);

/* Stops what still runs, closes and frees. NULL is a no-op. */
void cb_servers_destroy(cb_servers *s);

#endif
