/* tests/server_proc.h - a server process for tests: started with fork/exec, its stdout and
 * stderr in a log file, its port read from the log after a key line ("listening on
 * http://127.0.0.1:" for colobench serve, "READY " for tests/oai_fault_server.py).
 *
 *   test_server sv;
 *   if (test_server_start(&sv, "serve.log", argv, "listening on http://127.0.0.1:") == 0) {
 *       ... sv.url, sv.port, sv.pid, sv.log_path ...
 *       test_server_stop(&sv, SIGTERM, &ms);     (exit status, or -1)
 *   }
 * Header-only, static functions; each test file includes it once. */
#ifndef CB_TESTS_SERVER_PROC_H
#define CB_TESTS_SERVER_PROC_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

typedef struct test_server {
    pid_t pid;
    int port;
    char url[64];
    char log_path[512];
} test_server;

static inline int64_t test_server_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Starts argv (NULL-terminated; argv[0] found on PATH) with stdin from /dev/null and stdout and
 * stderr into the temporary directory's `name`, and reads its port after `key` in that log
 * (60 s: ASan builds start slowly on a busy machine). 0, or -1 (the log printed). */
static inline int test_server_start(test_server *sv, const char *name, const char *const *argv,
                                    const char *key) {
    memset(sv, 0, sizeof *sv);
    snprintf(sv->log_path, sizeof sv->log_path, "%s", cb_test_path(cb_test_tmpdir(), name));
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(sv->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd < 0 || nul < 0) _exit(127);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    sv->pid = pid;
    for (int64_t t0 = test_server_now_ns(); test_server_now_ns() - t0 < 60000000000LL;) {
        char *log = cb_test_read(sv->log_path, NULL);
        const char *at = log ? strstr(log, key) : NULL;
        if (at && strchr(at, '\n')) {
            sv->port = (int)strtol(at + strlen(key), NULL, 10);
            snprintf(sv->url, sizeof sv->url, "http://127.0.0.1:%d", sv->port);
            free(log);
            return 0;
        }
        free(log);
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            sv->pid = 0;
            break;
        }
        usleep(20000);
    }
    char *log = cb_test_read(sv->log_path, NULL);
    printf("# server %s did not start: %s\n", name, log ? log : "(no log)");
    free(log);
    if (sv->pid) kill(sv->pid, SIGKILL), waitpid(sv->pid, NULL, 0);
    sv->pid = 0;
    return -1;
}

/* Sends sig and waits for the exit (at most 5 s, then SIGKILL): the exit status (-1 when it was
 * killed by a signal or timed out), and the time it took in *ms (may be NULL). */
static inline int test_server_stop(test_server *sv, int sig, double *ms) {
    if (!sv->pid) return -1;
    int64_t t0 = test_server_now_ns();
    kill(sv->pid, sig);
    int st = 0;
    while (waitpid(sv->pid, &st, WNOHANG) == 0) {
        if (test_server_now_ns() - t0 > 5000000000LL) {
            kill(sv->pid, SIGKILL);
            waitpid(sv->pid, &st, 0);
            sv->pid = 0;
            printf("# server did not exit within 5 s of signal %d\n", sig);
            return -1;
        }
        usleep(5000);
    }
    if (ms) *ms = (double)(test_server_now_ns() - t0) / 1e6;
    sv->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
