/* nn/cpu/util.c - oneDNN helpers for the CPU backend: error messages, one-off reorders, aligned
 * buffers, the lifetime-based placement of a plan's arena regions, and the element-wise kernels.
 *
 * Design: region placement is the greedy offset assignment of TFLite's arena planner: regions by
 * decreasing size, each at the lowest offset where it overlaps no placed region whose step range
 * [first, last] intersects its own. In-place steps reuse a region id, so they need nothing here.
 *
 * Thread-safety: none needed (executor-local data); the kernels run OpenMP parallel regions on
 * the calling thread's team. Ownership: cb__cpu_alloc's *raw is what the caller frees.
 */
#include <dnnl_debug.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "nn/cpu/cpu.h"

int cb__cpu_dnnl_error(cb_error *err, dnnl_status_t s, const char *what, const char *node) {
    int code = s == dnnl_out_of_memory ? CB_ENOMEM : CB_EUNSUPPORTED;
    return cb_error_set(err, code, "%s%sonednn %s: %s", node ? node : "", node ? ": " : "", what,
                        dnnl_status2str(s));
}

int cb__cpu_reorder(cb__cpu *c, const dnnl_memory_desc_t *src_md, const void *src,
                    const dnnl_memory_desc_t *dst_md, void *dst, cb_error *err) {
    if (dnnl_memory_desc_equal(src_md, dst_md)) {
        memcpy(dst, src, dnnl_memory_desc_get_size(src_md));
        return CB_OK;
    }
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t ms = NULL, md = NULL;
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, src_md, c->eng, dst_md, c->eng, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&prim, pd);
    if (s == dnnl_success) s = dnnl_memory_create(&ms, src_md, c->eng, (void *)src);
    if (s == dnnl_success) s = dnnl_memory_create(&md, dst_md, c->eng, dst);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
        s = dnnl_primitive_execute(prim, c->stream, 2, args);
    }
    if (s == dnnl_success) s = dnnl_stream_wait(c->stream);
    if (md) dnnl_memory_destroy(md);
    if (ms) dnnl_memory_destroy(ms);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? CB_OK : cb__cpu_dnnl_error(err, s, "reorder", NULL);
}

void cb__cpu_md_plain(dnnl_memory_desc_t *md, int ndims, const int64_t *dims) {
    dnnl_dims_t d, strides;
    int64_t s = 1;
    for (int i = ndims - 1; i >= 0; i--) {
        d[i] = dims[i];
        strides[i] = s;
        s *= dims[i];
    }
    dnnl_memory_desc_init_by_strides(md, ndims, d, dnnl_f32, strides);
}

void *cb__cpu_alloc(size_t bytes, int zero, void **raw) {
    const size_t align = 4096;
    *raw = zero ? cb_calloc(1, bytes + align) : cb_malloc(bytes + align);
    if (!*raw) return NULL;
    uintptr_t p = ((uintptr_t)*raw + align - 1) & ~(uintptr_t)(align - 1);
    return (void *)p;
}

const char *cb__cpu_node_name(const cb_nn_model *m, int node, char *buf, size_t size) {
    static const char *const ops[] = {"input", "conv",    "bn",      "relu",  "maxpool",
                                      "avgpool", "add", "flatten", "linear"};
    const cb_nn_node *n = &m->nodes[node];
    if (n->name[0])
        snprintf(buf, size, "%s", n->name);
    else
        snprintf(buf, size, "node %d (%s)", node, ops[n->op]);
    return buf;
}

int cb__cpu_pd_is_ref(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return 0;
    return strncmp(impl, "ref", 3) == 0;
}

/* ---- Region placement ---- */

#define CB__CPU_REG_ALIGN 256

static int cb__by_size_desc(const void *a, const void *b, void *ctx) {
    const cb__cpu_region *r = ctx;
    size_t sa = r[*(const int *)a].size, sb = r[*(const int *)b].size;
    if (sa != sb) return sa < sb ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}

static int cb__by_off(const void *a, const void *b, void *ctx) {
    const cb__cpu_region *r = ctx;
    size_t oa = r[*(const int *)a].off, ob = r[*(const int *)b].off;
    return oa < ob ? -1 : oa > ob;
}

int cb__cpu_pack(cb__cpu_plan *p, cb_error *err) {
    int n = 0;
    int *order = cb_malloc((size_t)(p->n_regs + 1) * sizeof *order);
    int *placed = cb_malloc((size_t)(p->n_regs + 1) * sizeof *placed);
    int *near = cb_malloc((size_t)(p->n_regs + 1) * sizeof *near);
    if (!order || !placed || !near) {
        cb_free(order);
        cb_free(placed);
        cb_free(near);
        return cb_error_set(err, CB_ENOMEM, "out of memory planning buffers");
    }
    for (int i = 0; i < p->n_regs; i++)
        if (p->regs[i].kind == CB__CPU_REG_ARENA && p->regs[i].first >= 0) order[n++] = i;
    qsort_r(order, (size_t)n, sizeof *order, cb__by_size_desc, p->regs);
    int n_placed = 0;
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        cb__cpu_region *r = &p->regs[order[k]];
        size_t size = (r->size + CB__CPU_REG_ALIGN - 1) / CB__CPU_REG_ALIGN * CB__CPU_REG_ALIGN;
        int n_near = 0;
        for (int j = 0; j < n_placed; j++) {
            const cb__cpu_region *q = &p->regs[placed[j]];
            if (q->first <= r->last && r->first <= q->last) near[n_near++] = placed[j];
        }
        qsort_r(near, (size_t)n_near, sizeof *near, cb__by_off, p->regs);
        size_t off = 0;
        for (int j = 0; j < n_near; j++) {
            const cb__cpu_region *q = &p->regs[near[j]];
            size_t qsize = (q->size + CB__CPU_REG_ALIGN - 1) / CB__CPU_REG_ALIGN * CB__CPU_REG_ALIGN;
            if (off + size <= q->off) break;
            if (q->off + qsize > off) off = q->off + qsize;
        }
        r->off = off;
        placed[n_placed++] = order[k];
        if (off + size > total) total = off + size;
    }
    p->arena_bytes = total;
    cb_free(order);
    cb_free(placed);
    cb_free(near);
    return CB_OK;
}

/* ---- Kernels ---- */

void cb__cpu_accum(float *dst, const float *src, size_t n) {
    ptrdiff_t nn = (ptrdiff_t)n;
    CB__OMP_FOR
    for (ptrdiff_t i = 0; i < nn; i++) dst[i] += src[i];
}

void cb__cpu_copy(float *dst, const float *src, size_t n) {
    const size_t chunk = 1 << 16;
    ptrdiff_t nchunks = (ptrdiff_t)((n + chunk - 1) / chunk);
    CB__OMP_FOR
    for (ptrdiff_t k = 0; k < nchunks; k++) {
        size_t lo = (size_t)k * chunk, len = n - lo < chunk ? n - lo : chunk;
        memcpy(dst + lo, src + lo, len * sizeof *dst);
    }
}
