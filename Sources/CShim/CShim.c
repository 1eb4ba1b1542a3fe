#include "CShim.h"
#include <sys/ptrace.h>

long suture_ptrace(int request, pid_t pid, void *addr, void *data) {
    return ptrace((enum __ptrace_request)request, pid, addr, data);
}
