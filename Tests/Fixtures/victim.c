/* The live victim for the engine tests: prints "result A B" in a loop where A = check(input) and
 * B = check2(input), so a flipped branch in either shows in its output. Built with -O0 so both keep
 * a conditional jump. argv[1] = extra sleeping threads; argv[2] = "spin" starts a thread that never
 * leaves spin(), to test the busy check. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile int input = 7;

__attribute__((noipa, noinline)) int check(int x) {
    if (x > 5)
        return 1;
    return 0;
}

__attribute__((noipa, noinline)) int check2(int x) {
    if (x < 100)
        return 1;
    return 0;
}

__attribute__((noipa, noinline)) void spin(void) {
    for (;;)
        __asm__ volatile("");
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) usleep(1000);
    return NULL;
}

static void *spinner(void *arg) {
    (void)arg;
    spin();
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, sleeper, NULL);
    }
    if (argc > 2 && strcmp(argv[2], "spin") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, spinner, NULL);
    }
    printf("ready pid=%d check=%p check2=%p spin=%p\n", (int)getpid(), (void *)check, (void *)check2, (void *)spin);
    for (;;) {
        printf("result %d %d\n", check(input), check2(input));
        usleep(2000);
    }
}
