#ifndef SUTURE_CSHIM_H
#define SUTURE_CSHIM_H
#include <stdint.h>
#include <sys/types.h>
/* The /dev/suture ioctl ABI, shared with kmod/suture.c (CShim.h is the module's umbrella header). */
#include "suture_kmod.h"

/// ptrace(2) is variadic in glibc, which Swift cannot call: this forwards the four-argument form.
long suture_ptrace(int request, pid_t pid, void *addr, void *data);

/// Signal guard (Targets.SignalGuard). A signal handler may only do async-signal-safe work, so the
/// handler installed here does one thing: write the signal's number (one byte) into a pipe. A
/// thread on the Swift side reads it and resumes the targets in an orderly way.
///
/// The state (the pipe's write end, the saved previous actions) is process-wide by nature: there is
/// one signal disposition per process. Only one guard can be installed at a time.

/// Installs the handler for `count` signals, saving their previous actions. Returns 0, or -1 with
/// errno set (EBUSY when a guard is already installed, EINVAL for a bad signal number).
int suture_guard_install(const int *signals, int count, int pipe_write_fd);
/// Restores every saved action. Safe to call when not installed.
void suture_guard_uninstall(void);
/// pipe2(O_CLOEXEC) (hidden behind _GNU_SOURCE in glibc's headers).
int suture_pipe_cloexec(int fds[2]);
/// Lets the next signal be handled again (when the guard does not re-raise).
void suture_guard_rearm(void);

#endif
