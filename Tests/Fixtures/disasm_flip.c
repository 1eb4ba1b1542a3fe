/* A program whose output depends on one conditional jump: BranchEdit tests invert that jump in the
   executable file and check that the program then takes the other way. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void report(int x) {
    if (x > 5)
        puts("big");
    else
        puts("small");
}

int main(int argc, char **argv) {
    report(argc > 1 ? atoi(argv[1]) : 0);
    return 0;
}
