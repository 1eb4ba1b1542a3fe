/* init for a throwaway QEMU guest (GDBRemoteTarget tests): prints the kallsyms lines the test
 * needs, then keeps both vCPUs busy in user mode (two spinning processes), so that with pti=on a
 * vCPU stopped by the gdbstub cannot see kernel memory. The parent prints a TICK line per second
 * so the host can tell the guest runs. Built static: the initramfs holds nothing else. */
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

static const char *wanted[] = {"_text", "linux_banner", "__start_notes", "__stop_notes", "phys_base",
                               "page_offset_base", NULL};

int main(void) {
    mount("proc", "/proc", "proc", 0, NULL);
    FILE *f = fopen("/proc/kallsyms", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char address[64], kind[8], name[256];
        if (sscanf(line, "%63s %7s %255s", address, kind, name) != 3) continue;
        for (int i = 0; wanted[i]; i++) {
            if (strcmp(name, wanted[i]) == 0 && !strchr(line, '[')) printf("SYM %s", line);
        }
    }
    if (f) fclose(f);
    printf("SPINNING\n");
    fflush(stdout);
    if (fork() == 0) {
        for (;;) {}
    }
    time_t last = time(NULL);
    for (unsigned long n = 0;; n++) {
        if ((n & 0xfffff) == 0 && time(NULL) != last) {
            last = time(NULL);
            printf("TICK %ld\n", (long)last);
            fflush(stdout);
        }
    }
}
