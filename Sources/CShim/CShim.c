#define _GNU_SOURCE
#include "CShim.h"
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

long suture_ptrace(int request, pid_t pid, void *addr, void *data) {
    return ptrace((enum __ptrace_request)request, pid, addr, data);
}

#define GUARD_MAX_SIGNAL 65

static volatile sig_atomic_t guard_pipe = -1;
static volatile sig_atomic_t guard_pending = 0;
static struct sigaction guard_saved[GUARD_MAX_SIGNAL];
static volatile sig_atomic_t guard_installed[GUARD_MAX_SIGNAL];

static void guard_handler(int signal) {
    int saved_errno = errno;
    if (guard_pending++ > 0) {
        // A second signal while cleanup is still running: give up on cleanup and let the signal
        // act as if the guard were not there (sigaction and raise are async-signal-safe).
        if (signal > 0 && signal < GUARD_MAX_SIGNAL && guard_installed[signal]) {
            sigaction(signal, &guard_saved[signal], NULL);
        }
        raise(signal);
    } else if (guard_pipe >= 0) {
        unsigned char byte = (unsigned char)signal;
        ssize_t ignored = write(guard_pipe, &byte, 1);
        (void)ignored;
    }
    errno = saved_errno;
}

int suture_guard_install(const int *signals, int count, int pipe_write_fd) {
    if (guard_pipe >= 0) {
        errno = EBUSY;
        return -1;
    }
    for (int i = 0; i < count; i++) {
        if (signals[i] <= 0 || signals[i] >= GUARD_MAX_SIGNAL) {
            errno = EINVAL;
            return -1;
        }
    }
    guard_pending = 0;
    guard_pipe = pipe_write_fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = guard_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (int i = 0; i < count; i++) {
        int s = signals[i];
        if (guard_installed[s]) continue;
        if (sigaction(s, &action, &guard_saved[s]) != 0) {
            int e = errno;
            suture_guard_uninstall();
            errno = e;
            return -1;
        }
        guard_installed[s] = 1;
    }
    return 0;
}

void suture_guard_uninstall(void) {
    for (int s = 1; s < GUARD_MAX_SIGNAL; s++) {
        if (guard_installed[s]) {
            sigaction(s, &guard_saved[s], NULL);
            guard_installed[s] = 0;
        }
    }
    guard_pipe = -1;
}

int suture_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

void suture_guard_rearm(void) { guard_pending = 0; }
