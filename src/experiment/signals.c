/* experiment/signals.c - the signal thread (see signals.h).
 *
 * Design: sigwait on {SIGINT, SIGTERM}, which every thread has blocked. Stopping: set `quit`,
 * then direct a SIGTERM at the thread itself (pthread_kill), which its sigwait takes; a real
 * signal arriving in that instant is counted as one. The callback is called with `mu` held, so
 * cb_sigwatch_set(w, NULL, NULL) returns only once no call is in progress.
 * Thread-safety: see signals.h. Atomics: counters and quit, seq_cst (rare, simple).
 */
#include "experiment/signals.h"

#include <errno.h>
#include <string.h>

static void stop_set(sigset_t *s) {
    sigemptyset(s);
    sigaddset(s, SIGINT);
    sigaddset(s, SIGTERM);
}

void cb_signals_block(void) {
    sigset_t s;
    stop_set(&s);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void *watch_main(void *arg) {
    cb_sigwatch *w = arg;
    pthread_setname_np(pthread_self(), "cb-signals");
    sigset_t s;
    stop_set(&s);
    for (;;) {
        int sig = 0;
        if (sigwait(&s, &sig) != 0) continue;
        if (atomic_load(&w->quit)) break;
        int n = atomic_fetch_add(&w->count, 1) + 1;
        atomic_store(&w->last_signo, sig);
        pthread_mutex_lock(&w->mu);
        if (w->fn) w->fn(w->arg, sig, n);
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

int cb_sigwatch_start(cb_sigwatch *w, cb_error *err) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    cb_signals_block();
    int e = pthread_create(&w->thread, NULL, watch_main, w);
    if (e) {
        pthread_mutex_destroy(&w->mu);
        return cb_error_set(err, CB_EIO, "cannot start the signal thread: %s", strerror(e));
    }
    w->started = true;
    return CB_OK;
}

void cb_sigwatch_set(cb_sigwatch *w, cb_signal_fn fn, void *arg) {
    pthread_mutex_lock(&w->mu);
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_unlock(&w->mu);
}

int cb_sigwatch_count(cb_sigwatch *w) { return atomic_load(&w->count); }

void cb_sigwatch_stop(cb_sigwatch *w) {
    if (!w->started) return;
    atomic_store(&w->quit, 1);
    pthread_kill(w->thread, SIGTERM);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    w->started = false;
}
