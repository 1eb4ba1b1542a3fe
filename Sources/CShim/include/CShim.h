#ifndef SUTURE_CSHIM_H
#define SUTURE_CSHIM_H
#include <stdint.h>
#include <sys/types.h>

/// ptrace(2) is variadic in glibc, which Swift cannot call: this forwards the four-argument form.
long suture_ptrace(int request, pid_t pid, void *addr, void *data);

#endif
