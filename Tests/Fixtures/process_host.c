/* The live program for the process tests. Prints, every 2 ms, a line showing each thing a patch
 * may change:
 *   "gate G lib L greeting TEXT"  G = gate(input, 0), L = parse_header(input) from the library
 *                                 (-1 when none is loaded), TEXT a string literal from .rodata.
 * argv: [library.so] [spin] [nops]
 *   library.so  dlopen()ed; SIGUSR1 makes the main loop dlclose() it and print "closed".
 *   spin        a thread stays inside gate() (in its loop, after the condition).
 *   nops        a thread stays inside hold() until SIGUSR1 has closed the library.
 * Build variants: -DLIMIT=N changes gate's comparison, -DLESS turns `>` into `<` (the compare's
 * immediate and the jump change together: one hunk over two instructions), -DGREETING="..." the
 * string. The first line is "ready pid=... gate=0x... hold=0x... parse=0x..." for the tests. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LIMIT
#define LIMIT 5
#endif
#ifndef GREETING
#define GREETING "hello-world"
#endif

volatile int input = 7;
static volatile sig_atomic_t close_requested = 0;
static volatile int released = 0;

__attribute__((noipa, noinline)) int gate(int x, int spin) {
    int r;
#ifdef LESS
    if (x < LIMIT)
#else
    if (x > LIMIT)
#endif
        r = 1;
    else
        r = 0;
    while (spin)
        __asm__ volatile("");
    return r;
}

/* Two one-byte NOPs at the start: a two-instruction hunk there makes the engine guard all of
 * hold(), where a thread waits until the library is closed. */
__attribute__((noipa, noinline)) void hold(void) {
    __asm__ volatile("nop\n\tnop");
    while (!released)
        __asm__ volatile("");
}

__attribute__((noipa, noinline)) void main_loop(int (*parse)(int)) {
    printf("gate %d lib %d greeting %s\n", gate(input, 0), parse ? parse(input * 3) : -1, GREETING);
}

static void on_usr1(int sig) {
    (void)sig;
    close_requested = 1;
}

static void *spinner(void *arg) {
    (void)arg;
    gate(input, 1);
    return NULL;
}

static void *holder(void *arg) {
    (void)arg;
    hold();
    for (;;) usleep(1000);
    return NULL;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR1, on_usr1);
    void *library = NULL;
    int (*parse)(int) = NULL;
    for (int i = 1; i < argc; i++) {
        pthread_t t;
        if (strcmp(argv[i], "spin") == 0) {
            pthread_create(&t, NULL, spinner, NULL);
        } else if (strcmp(argv[i], "nops") == 0) {
            pthread_create(&t, NULL, holder, NULL);
        } else {
            library = dlopen(argv[i], RTLD_NOW);
            if (!library) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
            parse = (int (*)(int))dlsym(library, "parse_header");
        }
    }
    printf("ready pid=%d gate=%p hold=%p parse=%p\n", (int)getpid(), (void *)gate, (void *)hold, (void *)parse);
    for (;;) {
        if (close_requested && library) {
            dlclose(library);
            library = NULL;
            parse = NULL;
            printf("closed\n");
            released = 1;
        }
        main_loop(parse);
        usleep(2000);
    }
}
