/* experiment/child.h - both sides of the protocol between a collocated run and the child process
 * that runs one of its pipelines.
 *
 * The parent runs each pipeline of a processes/MPS/MIG phase as this executable re-executed:
 * `colobench run --child-fd FD` with the pipeline's environment (MPS variables, a MIG device),
 * in its own process group (a terminal's Ctrl-C reaches only the parent, which forwards SIGTERM)
 * and with PR_SET_PDEATHSIG = SIGTERM, so a child whose parent dies stops its load, drains and
 * writes what it measured. Parent and child hold the two ends of one UNIX stream socket.
 *
 *   parent -> child  'C' the benchmark: the exact config text the parent read (so a config read
 *                    from a pipe, or edited during the launch, runs as the parent saw it), its
 *                    name (positions in messages, base of relative paths), every --set override
 *                    (no count limit but CB_CHILD_MAX_SETS), the pipeline's index, the child's
 *                    output directory and the plugin policy
 *   then the start barrier (collocate/barrier.h): 'P' prepare, 'R' ready, 'G' go with the
 *                    common t0, 'S' started
 *
 * Each run or phase directory also gets a state file written by whoever runs it (child.state in
 * a child's directory, run.state in a phase directory): t0, wall-clock start, end, flags and
 * errors, rewritten at the start and at the end. It is how the parent learns how a child's run
 * ended, and how `colobench summarize` rebuilds the results of a run whose parent was killed.
 *
 * Maxima: config text CB_CHILD_MAX_TEXT bytes, CB_CHILD_MAX_SETS overrides of CB_CHILD_MAX_SET
 * bytes each, state files of CB_STATE_MAX_ERRORS errors of 1 KiB.
 * Thread-safety: one controlling thread per child. Ownership: messages received are cb_malloc'd
 * and freed with cb_child_msg_fini.
 */
#ifndef CB_EXPERIMENT_CHILD_H
#define CB_EXPERIMENT_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "colobench/error.h"
#include "core/path.h"

#define CB_CHILD_MAX_TEXT (16u << 20)
#define CB_CHILD_MAX_SETS 4096u
#define CB_CHILD_MAX_SET 4096u
#define CB_CHILD_MAX_ENV 16

enum { CB_CHILD_ALLOW_PLUGINS = 1u };

/* What a child runs (parent side: borrowed; child side: owned by the message). */
typedef struct cb_child_msg {
    const char *config_name;
    const char *config_text;
    size_t config_len;
    const char *const *sets;
    size_t n_sets;
    uint32_t index;          /* the pipeline, in the benchmark as loaded */
    uint32_t flags;          /* CB_CHILD_* */
    const char *out_dir;
    void *owned;             /* child side: the one allocation holding everything */
} cb_child_msg;

typedef struct cb_child {
    pid_t pid;
    int fd;                  /* parent's end of the socket, -1 when closed */
    bool ready, exited;
    int wstatus;
    char dir[CB_PATH_MAX];
} cb_child;

/* Starts exe as `exe run --child-fd FD` with environ plus env (NAME=VALUE strings) and sends it
 * msg. On error nothing is left running. */
int cb_child_spawn(cb_child *c, const char *exe, const cb_child_msg *msg, const char *const *env,
                   size_t n_env, cb_error *err);
/* Child side: reads the 'C' message from fd. */
int cb_child_receive(int fd, cb_child_msg *msg, cb_error *err);
void cb_child_msg_fini(cb_child_msg *msg);

/* "exited 0", "killed by signal 9 (Killed)". */
void cb_child_describe_status(int wstatus, char *buf, size_t n);

#define CB_STATE_MAX_ERRORS 64

typedef struct cb_run_state {
    int64_t t0_ns, wall_start_ns, end_ns; /* 0 when unknown */
    bool started, ended, interrupted, timed_out, abandoned;
    int pid;
    int64_t record_stall_ns;  /* time the run's threads waited for the record writer */
    char mode[16];           /* threads | processes | mps | mig ("" in a child) */
    size_t n_errors;
    char errors[CB_STATE_MAX_ERRORS][1024];
} cb_run_state;

/* Writes dir/name atomically. */
int cb_run_state_write(const char *dir, const char *name, const cb_run_state *st, cb_error *err);
/* Reads dir/name; CB_ENOENT when it does not exist. Malformed lines are errors naming the line. */
int cb_run_state_read(const char *dir, const char *name, cb_run_state *st, cb_error *err);
void cb_run_state_add_error(cb_run_state *st, const char *msg);

#endif
