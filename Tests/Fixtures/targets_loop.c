/* A live program for the target tests: prints check(input) in a loop, so a flipped branch in
 * check() shows in its output. argv[1] = number of extra threads (they sleep in a loop).
 * Built with -O0 so check() keeps a conditional jump (at -O2 gcc turns it into setg). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile int input = 7;
/* A recognisable pattern in writable data, for reading through a core file. */
unsigned char pattern[4096];

__attribute__((noipa, noinline)) int check(int x) {
    if (x > 5)
        return 1;
    return 0;
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) usleep(1000);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "once") == 0) {
        printf("result %d\n", check(input));
        return 0;
    }
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < (int)sizeof pattern; i++) pattern[i] = (unsigned char)(i * 7 + 3);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, sleeper, NULL);
    }
    printf("ready pid=%d check=%p pattern=%p\n", (int)getpid(), (void *)check, (void *)pattern);
    for (;;) {
        printf("result %d\n", check(input));
        usleep(2000);
    }
}
