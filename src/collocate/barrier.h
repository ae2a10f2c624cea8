/* collocate/barrier.h - the start barrier shared by the processes of a collocated run.
 *
 * Parent and each child hold the two ends of one UNIX stream socket. The protocol is four
 * fixed-format messages, host byte order (same machine):
 *
 *   parent -> child  'P'                         prepare now (children prepare one at a time
 *                                                when collocation.prepare is serial)
 *   child -> parent  'R' u32 n, n x i64          ready: prepared, threads created; the
 *                                                prepare_ns of its n stages
 *   parent -> child  'G' i64 t0_ns               go: the common release time (CLOCK_MONOTONIC,
 *                                                shared by every process on the host), which
 *                                                becomes every child's time origin
 *   child -> parent  'S' i64 start_ns            when this child actually left the barrier
 *
 * A child that dies closes its end: the parent reads EOF and reports the child's exit status.
 * The start skew (spread of the 'S' times) and the latest start after t0 are reported in
 * summary.json (collocation.barrier).
 * Thread-safety: each function is called by one thread per socket. No ownership transfers.
 */
#ifndef CB_COLLOCATE_BARRIER_H
#define CB_COLLOCATE_BARRIER_H

#include <stddef.h>
#include <stdint.h>

#include "colobench/error.h"

#define CB_BARRIER_MAX_STAGES 1024

/* The socket's byte I/O, for the other messages on the same socket (experiment/child.c):
 * whole buffers, EINTR retried, MSG_NOSIGNAL (a dead peer is CB_EIO, never SIGPIPE). */
int cb_barrier_send_bytes(int fd, const void *buf, size_t n);
int cb_barrier_recv_bytes(int fd, void *buf, size_t n);

/* Child side. */
int cb_barrier_child_wait_prepare(int fd, cb_error *err);
/* Sends ready, blocks until go; returns the common t0 in *t0_ns and sends the start time. */
int cb_barrier_child_ready(int fd, const int64_t *prepare_ns, size_t n, int64_t *t0_ns,
                           cb_error *err);

/* Parent side. Each returns CB_OK, or CB_EIO when the child closed its end (died). */
int cb_barrier_send_prepare(int fd);
/* Reads the ready message; prepare_ns gets up to max entries. May block: call when readable. */
int cb_barrier_recv_ready(int fd, int64_t *prepare_ns, size_t max, size_t *n);
int cb_barrier_send_go(int fd, int64_t t0_ns);
int cb_barrier_recv_start(int fd, int64_t *start_ns);

#endif
