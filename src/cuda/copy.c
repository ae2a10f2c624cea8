/* cuda/copy.c - util.gpu_copy's device side: copies of a fixed size between host and device or
 * within a device, timed with CUDA events (see gpu/cuda_api.h).
 *
 * Design: create allocates everything once (untimed): `bytes` of device memory (twice for
 * D2D), and for H2D/D2H a host buffer, pinned (cudaHostAlloc) or pageable (malloc, touched so
 * its pages exist before the first copy), plus its own non-blocking stream and two events. run
 * records an event, issues one cudaMemcpyAsync on the stream, records the second event and
 * waits for it as the wait policy says (gpu/wait.h: the end event is made for it with
 * cb__cuda_event_create and waited on with cb__cuda_wait; the start event is only timed): the
 * device time is the event interval. A pageable copy is staged by the driver through its own
 * pinned buffers (and returns to the host only when staged), so its device time covers that
 * staged transfer; a pinned copy is one DMA.
 *
 * Thread-safety: one object per stage instance, used by one thread at a time; each call makes
 * its device current on the calling thread. Ownership: the object owns its buffers, stream and
 * events; destroy releases whatever create acquired, also after a failed create.
 */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "cuda/cuda_int.h"

struct cb_cuda_copy {
    int ordinal;
    size_t bytes;
    cb_cuda_copy_dir dir;
    int pinned;
    cb_gpu_wait wait;
    void *host;                    /* H2D/D2H: the host side (pinned or cb_malloc'd) */
    void *dev, *dev2;              /* dev2: the D2D destination */
    cudaStream_t stream;
    cudaEvent_t e0, e1;
    int have_stream, have_e0, have_e1;
};

void cb__cuda_copy_destroy(cb_cuda_copy *c) {
    if (!c) return;
    /* Best effort: the device may be gone; nothing to report from a destructor. */
    if (cudaSetDevice(c->ordinal) == cudaSuccess) {
        if (c->have_stream) (void)cudaStreamSynchronize(c->stream);
        if (c->have_e0) (void)cudaEventDestroy(c->e0);
        if (c->have_e1) (void)cudaEventDestroy(c->e1);
        if (c->have_stream) (void)cudaStreamDestroy(c->stream);
        if (c->dev) (void)cudaFree(c->dev);
        if (c->dev2) (void)cudaFree(c->dev2);
        if (c->host && c->pinned) (void)cudaFreeHost(c->host);
    }
    if (c->host && !c->pinned) cb_free(c->host);
    cb_free(c);
}

static int cb__copy_setup(cb_cuda_copy *c, cb_error *err) {
    int rc = cb__cuda_set_device(c->ordinal, err);
    if (rc) return rc;
    CB__CUDA(cudaMalloc(&c->dev, c->bytes));
    CB__CUDA(cudaMemset(c->dev, 0, c->bytes));
    if (c->dir == CB_CUDA_D2D) {
        CB__CUDA(cudaMalloc(&c->dev2, c->bytes));
        CB__CUDA(cudaMemset(c->dev2, 0, c->bytes));
    } else if (c->pinned) {
        CB__CUDA(cudaHostAlloc(&c->host, c->bytes, cudaHostAllocDefault));
        memset(c->host, 0, c->bytes);
    } else {
        c->host = cb_malloc(c->bytes);
        if (!c->host)
            return cb_error_set(err, CB_ENOMEM, "cannot allocate %zu bytes of host memory",
                                c->bytes);
        memset(c->host, 0, c->bytes); /* fault the pages in before any timed copy */
    }
    CB__CUDA(cudaDeviceSynchronize()); /* the memsets are done before the first copy */
    CB__CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    c->have_stream = 1;
    rc = cb__cuda_event_create(&c->e0, CB_GPU_WAIT_SPIN, err); /* only ever timed, not waited on */
    if (rc) return rc;
    c->have_e0 = 1;
    rc = cb__cuda_event_create(&c->e1, c->wait, err);
    if (rc) return rc;
    c->have_e1 = 1;
    return CB_OK;
}

int cb__cuda_copy_create(int ordinal, size_t bytes, cb_cuda_copy_dir dir, int pinned,
                         cb_gpu_wait wait, cb_cuda_copy **out, cb_error *err) {
    *out = NULL;
    if (bytes == 0) return cb_error_set(err, CB_EINVAL, "bytes: a copy needs at least 1 byte");
    if (dir != CB_CUDA_H2D && dir != CB_CUDA_D2H && dir != CB_CUDA_D2D)
        return cb_error_set(err, CB_EINVAL, "direction: unknown copy direction %d", (int)dir);
    if (wait != CB_GPU_WAIT_BLOCK && wait != CB_GPU_WAIT_SPIN && wait != CB_GPU_WAIT_YIELD)
        return cb_error_set(err, CB_EINVAL, "gpu_wait: unknown wait policy %d", (int)wait);
    cb_cuda_copy *c = cb_calloc(1, sizeof *c);
    if (!c) return cb_error_set(err, CB_ENOMEM, "out of memory");
    c->ordinal = ordinal;
    c->bytes = bytes;
    c->dir = dir;
    c->pinned = pinned != 0;
    c->wait = wait;
    int rc = cb__copy_setup(c, err);
    if (rc) {
        cb__cuda_copy_destroy(c);
        return rc;
    }
    *out = c;
    return CB_OK;
}

int cb__cuda_copy_run(cb_cuda_copy *c, int64_t *device_ns, cb_error *err) {
    *device_ns = 0;
    int rc = cb__cuda_set_device(c->ordinal, err);
    if (rc) return rc;
    void *dst, *src;
    enum cudaMemcpyKind kind;
    switch (c->dir) {
    case CB_CUDA_H2D: dst = c->dev; src = c->host; kind = cudaMemcpyHostToDevice; break;
    case CB_CUDA_D2H: dst = c->host; src = c->dev; kind = cudaMemcpyDeviceToHost; break;
    case CB_CUDA_D2D:
    default: dst = c->dev2; src = c->dev; kind = cudaMemcpyDeviceToDevice; break;
    }
    CB__CUDA(cudaEventRecord(c->e0, c->stream));
    CB__CUDA(cudaMemcpyAsync(dst, src, c->bytes, kind, c->stream));
    CB__CUDA(cudaEventRecord(c->e1, c->stream));
    rc = cb__cuda_wait(c->e1, c->wait, "the copy", err);
    if (rc) return rc;
    float ms = 0.0f;
    CB__CUDA(cudaEventElapsedTime(&ms, c->e0, c->e1));
    *device_ns = (int64_t)llround((double)ms * 1e6);
    return CB_OK;
}
