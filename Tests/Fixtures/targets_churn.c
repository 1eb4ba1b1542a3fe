/* Thread churn for the ptrace tests: the main thread keeps creating short-lived threads, each of
 * which may create one more before exiting, so threads appear and vanish while a tracer attaches. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *leaf(void *arg) {
    (void)arg;
    usleep(200);
    return NULL;
}

static void *branch(void *arg) {
    (void)arg;
    pthread_t t;
    if (pthread_create(&t, NULL, leaf, NULL) == 0) pthread_detach(t);
    usleep(100);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready pid=%d\n", (int)getpid());
    for (unsigned long n = 0;; n++) {
        pthread_t t;
        if (pthread_create(&t, NULL, branch, NULL) == 0) pthread_detach(t);
        usleep(50);
        if (n % 2000 == 0) printf("spawned %lu\n", n);
    }
}
