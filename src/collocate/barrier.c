/* collocate/barrier.c - both sides of the start-barrier protocol (see barrier.h).
 *
 * Design: blocking full reads and writes on a stream socket, retried on EINTR; MSG_NOSIGNAL so
 * a dead peer is an error, never SIGPIPE. Messages are a tag byte and fixed-size integers.
 * Thread-safety: one thread per socket. Ownership: none.
 */
#include "collocate/barrier.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"

int cb_barrier_send_bytes(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return CB_EIO;
        p += k;
        n -= (size_t)k;
    }
    return CB_OK;
}

int cb_barrier_recv_bytes(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return CB_EIO;
        p += k;
        n -= (size_t)k;
    }
    return CB_OK;
}

static int expect_tag(int fd, char tag) {
    char t;
    if (cb_barrier_recv_bytes(fd, &t, 1)) return CB_EIO;
    return t == tag ? CB_OK : CB_EIO;
}

int cb_barrier_child_wait_prepare(int fd, cb_error *err) {
    if (expect_tag(fd, 'P'))
        return cb_error_set(err, CB_EIO, "collocation: the parent process went away before the start");
    return CB_OK;
}

int cb_barrier_child_ready(int fd, const int64_t *prepare_ns, size_t n, int64_t *t0_ns, cb_error *err) {
    if (n > CB_BARRIER_MAX_STAGES) n = CB_BARRIER_MAX_STAGES;
    uint32_t n32 = (uint32_t)n;
    int64_t t0;
    if (cb_barrier_send_bytes(fd, "R", 1) || cb_barrier_send_bytes(fd, &n32, sizeof n32) ||
        (n && cb_barrier_send_bytes(fd, prepare_ns, n * sizeof *prepare_ns)) || expect_tag(fd, 'G') ||
        cb_barrier_recv_bytes(fd, &t0, sizeof t0))
        return cb_error_set(err, CB_EIO, "collocation: the parent process went away before the start");
    int64_t start = cb_clock_now_ns();
    *t0_ns = t0;
    if (cb_barrier_send_bytes(fd, "S", 1) || cb_barrier_send_bytes(fd, &start, sizeof start))
        return cb_error_set(err, CB_EIO, "collocation: the parent process went away at the start");
    return CB_OK;
}

int cb_barrier_send_prepare(int fd) { return cb_barrier_send_bytes(fd, "P", 1); }

int cb_barrier_recv_ready(int fd, int64_t *prepare_ns, size_t max, size_t *n) {
    uint32_t n32;
    *n = 0;
    if (expect_tag(fd, 'R') || cb_barrier_recv_bytes(fd, &n32, sizeof n32)) return CB_EIO;
    if (n32 > CB_BARRIER_MAX_STAGES) return CB_EIO;
    for (uint32_t i = 0; i < n32; i++) {
        int64_t v;
        if (cb_barrier_recv_bytes(fd, &v, sizeof v)) return CB_EIO;
        if (i < max) prepare_ns[i] = v;
    }
    *n = n32 < max ? n32 : max;
    return CB_OK;
}

int cb_barrier_send_go(int fd, int64_t t0_ns) {
    char msg[1 + sizeof t0_ns];
    msg[0] = 'G';
    memcpy(msg + 1, &t0_ns, sizeof t0_ns);
    return cb_barrier_send_bytes(fd, msg, sizeof msg);
}

int cb_barrier_recv_start(int fd, int64_t *start_ns) {
    if (expect_tag(fd, 'S') || cb_barrier_recv_bytes(fd, start_ns, sizeof *start_ns)) return CB_EIO;
    return CB_OK;
}
