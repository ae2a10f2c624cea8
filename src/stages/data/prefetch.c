/* stages/data/prefetch.c - background producers of numbered batches (see prefetch.h).
 *
 * Design: `depth` slots, each FREE, BUSY (a producer is making slot.seq) or READY (slot.buf and
 * slot.rc/err hold make(slot.seq)'s result). Producers claim `next` (the lowest seq nobody has
 * claimed) into a FREE slot while next < limit, make it without the lock, and publish it unless
 * the consumer has meanwhile moved past it (seq < floor), in which case it is dropped. The
 * consumer's get(seq) raises floor to seq (dropping READY slots below), takes the slot holding
 * seq (waiting while it is BUSY), or else makes seq itself and moves `next` past it. `limit`
 * starts at the planned number of batches and follows the consumer when it asks beyond it
 * (a pipeline without a dataset stage counts batches past the end of the epochs), so producers
 * never run far ahead of what will be asked and never idle when the stream goes on.
 *
 * Thread-safety: mu protects every field below it in struct cb_prefetch; it is the only lock
 * and make() runs without it. space_cv wakes producers (a slot freed, limit raised, stop);
 * ready_cv wakes the consumer (a slot became READY). Producer threads block every signal (the
 * runtime handles SIGINT/SIGTERM elsewhere) and are named cb-pf-NAME. Ownership: a READY slot
 * owns one reference to its batch until get() hands it over or it is dropped; destroy() joins
 * the producers before it releases the slots, so no batch outlives the prefetcher.
 */
#include "stages/data/prefetch.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "stages/util/util.h"

enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_READY = 2 };

typedef struct cb_pf_slot {
    int state;
    int rc;         /* make()'s status (READY) */
    int64_t seq;    /* BUSY, READY */
    cb_buffer *buf; /* READY with rc == 0: one reference */
    cb_error err;   /* READY with rc != 0 */
} cb_pf_slot;

struct cb_prefetch {
    cb_prefetch_opts o;
    pthread_t *tids;
    int n_threads; /* started */
    uint64_t hits, misses; /* consumer thread only */
    pthread_mutex_t mu;
    pthread_cond_t space_cv, ready_cv;
    /* protected by mu: */
    int stop;
    int64_t next, limit, floor;
    cb_pf_slot *slots;
};

static cb_pf_slot *cb__pf_free_slot(cb_prefetch *pf) {
    for (int i = 0; i < pf->o.depth; i++)
        if (pf->slots[i].state == SLOT_FREE) return &pf->slots[i];
    return NULL;
}

/* Releases a slot's contents; mu held. */
static void cb__pf_clear(cb_prefetch *pf, cb_pf_slot *s) {
    pf->o.host->buffer_unref(s->buf);
    s->buf = NULL;
    s->state = SLOT_FREE;
}

static void *cb__pf_main(void *arg) {
    cb_prefetch *pf = arg;
    char name[16];
    snprintf(name, sizeof name, "cb-pf-%.9s", pf->o.name ? pf->o.name : "data");
    pthread_setname_np(pthread_self(), name);
    pthread_mutex_lock(&pf->mu);
    for (;;) {
        cb_pf_slot *s = NULL;
        while (!pf->stop && (pf->next >= pf->limit || !(s = cb__pf_free_slot(pf))))
            pthread_cond_wait(&pf->space_cv, &pf->mu);
        if (pf->stop) break;
        s->state = SLOT_BUSY;
        s->seq = pf->next++;
        int64_t seq = s->seq;
        pthread_mutex_unlock(&pf->mu);

        cb_buffer *buf = NULL;
        cb_error e;
        memset(&e, 0, sizeof e);
        int rc = pf->o.make(pf->o.ctx, seq, &buf, &e);

        pthread_mutex_lock(&pf->mu);
        if (pf->stop || seq < pf->floor) { /* nobody will ask for it in order */
            s->buf = buf;
            cb__pf_clear(pf, s);
            pthread_cond_signal(&pf->space_cv);
            pthread_cond_broadcast(&pf->ready_cv); /* cheap insurance: a waiter re-checks */
            continue;
        }
        s->state = SLOT_READY;
        s->rc = rc;
        s->buf = rc == CB_OK ? buf : NULL;
        if (rc != CB_OK) {
            pf->o.host->buffer_unref(buf);
            s->err = e;
        }
        pthread_cond_broadcast(&pf->ready_cv);
    }
    pthread_mutex_unlock(&pf->mu);
    return NULL;
}

static void cb__pf_stop_join(cb_prefetch *pf) {
    pthread_mutex_lock(&pf->mu);
    pf->stop = 1;
    pthread_cond_broadcast(&pf->space_cv);
    pthread_cond_broadcast(&pf->ready_cv);
    pthread_mutex_unlock(&pf->mu);
    for (int i = 0; i < pf->n_threads; i++) pthread_join(pf->tids[i], NULL);
    pf->n_threads = 0;
}

int cb__prefetch_create(const cb_prefetch_opts *opts, cb_prefetch **out, cb_error *err) {
    *out = NULL;
    const cb_host *h = opts->host;
    if (opts->depth < 1 || opts->threads < 1 || !opts->make)
        return cb_util_error(err, CB_EINVAL, "prefetch: depth and threads must be >= 1");
    cb_prefetch *pf = h->alloc(sizeof *pf);
    if (!pf) return cb_util_error(err, CB_ENOMEM, "prefetch: out of memory");
    memset(pf, 0, sizeof *pf);
    pf->o = *opts;
    pf->limit = opts->planned;
    pf->slots = h->alloc(sizeof *pf->slots * (size_t)opts->depth);
    pf->tids = h->alloc(sizeof *pf->tids * (size_t)opts->threads);
    if (!pf->slots || !pf->tids) {
        h->free(pf->slots);
        h->free(pf->tids);
        h->free(pf);
        return cb_util_error(err, CB_ENOMEM, "prefetch: out of memory");
    }
    memset(pf->slots, 0, sizeof *pf->slots * (size_t)opts->depth);
    pthread_mutex_init(&pf->mu, NULL);
    pthread_cond_init(&pf->space_cv, NULL);
    pthread_cond_init(&pf->ready_cv, NULL);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* producers inherit a mask blocking everything */
    int rc = 0;
    for (int i = 0; i < opts->threads && rc == 0; i++) {
        rc = pthread_create(&pf->tids[i], NULL, cb__pf_main, pf);
        if (rc == 0) pf->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        int started = pf->n_threads;
        cb__prefetch_destroy(pf);
        return cb_util_error(err, CB_EIO, "prefetch: cannot start thread %d of %d: %s",
                             started + 1, opts->threads, strerror(rc));
    }
    *out = pf;
    return CB_OK;
}

int cb__prefetch_get(cb_prefetch *pf, int64_t seq, cb_buffer **out, cb_error *err) {
    *out = NULL;
    pthread_mutex_lock(&pf->mu);
    int wake = 0;
    if (seq > pf->floor) { /* everything below seq has been passed over */
        pf->floor = seq;
        for (int i = 0; i < pf->o.depth; i++) {
            cb_pf_slot *s = &pf->slots[i];
            if (s->state == SLOT_READY && s->seq < seq) {
                cb__pf_clear(pf, s);
                wake = 1;
            }
        }
    }
    if (seq >= pf->o.planned && seq + 1 + pf->o.depth > pf->limit) { /* past the plan: follow */
        pf->limit = seq + 1 + pf->o.depth;
        wake = 1;
    }
    /* The slot holding seq, if any. A BUSY one below floor (an old seq asked again) will be
     * dropped by its producer: make it here instead. Otherwise seq >= floor and floor cannot
     * rise while we wait (only this thread raises it), so the producer publishes it; the slot
     * is looked up again after every wake-up, as slots are reused. */
    cb_pf_slot *found = NULL;
    for (;;) {
        found = NULL;
        for (int i = 0; i < pf->o.depth && !found; i++)
            if (pf->slots[i].state != SLOT_FREE && pf->slots[i].seq == seq) found = &pf->slots[i];
        if (!found || found->state == SLOT_READY || seq < pf->floor || pf->stop) break;
        pthread_cond_wait(&pf->ready_cv, &pf->mu);
    }
    if (found && found->state == SLOT_READY) {
        int rc = found->rc;
        *out = found->buf;
        found->buf = NULL;
        if (rc != CB_OK && err) *err = found->err;
        found->state = SLOT_FREE;
        if (pf->floor < seq + 1) pf->floor = seq + 1;
        pthread_cond_signal(&pf->space_cv);
        if (wake) pthread_cond_broadcast(&pf->space_cv);
        pthread_mutex_unlock(&pf->mu);
        pf->hits++;
        return rc;
    }
    /* Not made and not in the making: make it here, and let the producers go on after it. */
    if (pf->next <= seq) pf->next = seq + 1;
    if (pf->floor < seq + 1) pf->floor = seq + 1;
    if (wake) pthread_cond_broadcast(&pf->space_cv);
    pthread_mutex_unlock(&pf->mu);
    pf->misses++;
    return pf->o.make(pf->o.ctx, seq, out, err);
}

void cb__prefetch_stats(const cb_prefetch *pf, uint64_t *hits, uint64_t *misses) {
    *hits = pf ? pf->hits : 0;
    *misses = pf ? pf->misses : 0;
}

void cb__prefetch_destroy(cb_prefetch *pf) {
    if (!pf) return;
    cb__pf_stop_join(pf);
    for (int i = 0; i < pf->o.depth; i++) cb__pf_clear(pf, &pf->slots[i]);
    pthread_mutex_destroy(&pf->mu);
    pthread_cond_destroy(&pf->space_cv);
    pthread_cond_destroy(&pf->ready_cv);
    const cb_host *h = pf->o.host;
    h->free(pf->slots);
    h->free(pf->tids);
    h->free(pf);
}
