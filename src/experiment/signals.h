/* experiment/signals.h - the one place colobench reads SIGINT and SIGTERM.
 *
 * `colobench run` (and `monitor`) blocks SIGINT and SIGTERM in every thread before it starts
 * any (so no handler ever runs and no thread is interrupted). cb_sigwatch_start then starts one thread
 * (`cb-signals`) that takes them with sigwait and calls the watcher's function with the signal
 * and how many have arrived so far; the experiment decides what each one means (stop the load,
 * cancel, give up). Nothing else in colobench reads these signals.
 *
 * Thread-safety: start/stop from the controlling thread; fn runs on the signal thread and must
 * only do thread-safe things (set flags, call cb_runtime_stop, forward the signal to children).
 * Ownership: the watcher is caller storage; arg is borrowed until stop.
 */
#ifndef CB_EXPERIMENT_SIGNALS_H
#define CB_EXPERIMENT_SIGNALS_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "colobench/error.h"

typedef void (*cb_signal_fn)(void *arg, int signo, int count);

typedef struct cb_sigwatch {
    pthread_t thread;
    bool started;
    _Atomic int quit;
    _Atomic int count;           /* SIGINT/SIGTERM received */
    _Atomic int last_signo;
    pthread_mutex_t mu;          /* protects fn, arg */
    cb_signal_fn fn;
    void *arg;
} cb_sigwatch;

/* Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it creates later).
 * Call first thing in main. */
void cb_signals_block(void);

int cb_sigwatch_start(cb_sigwatch *w, cb_error *err);
/* Who is told about the next signals (NULL: they are only counted). */
void cb_sigwatch_set(cb_sigwatch *w, cb_signal_fn fn, void *arg);
int cb_sigwatch_count(cb_sigwatch *w);
void cb_sigwatch_stop(cb_sigwatch *w);

#endif
