/* Input for the ELF reader tests: a little of everything gcc emits relocations and symbols for.
 * Built at test time as an object, a PIE executable, a shared library and (with -m32) an i386
 * object; no libc headers, so it also builds where 32-bit headers are missing. */

extern int external_counter;                 /* undefined data: GOTPCREL / GLOB_DAT */
extern void external_function(int);          /* undefined function: PLT32 / JUMP_SLOT */
extern int external_printf(const char *, ...);

__thread int thread_local_value = 7;         /* TLS symbol and TLS relocations */
int initialized_global = 42;                 /* .data */
int zeroed_global;                           /* .bss */
static int file_local_table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
const char *const message_pointer = "pointer to a string";   /* data relocation against .rodata */

__attribute__((weak)) int weak_hook(int value) { return value + 1; }

static __attribute__((noinline)) int helper(int value) {
    return file_local_table[value & 7] * 3 + thread_local_value;
}

int (*const dispatch[])(int) = { helper, weak_hook };   /* function pointers: R_X86_64_64 / RELATIVE */

int classify(int value) {
    switch (value) {                         /* a jump table in .rodata */
    case 0: return helper(value);
    case 1: return weak_hook(value) * 5;
    case 2: return external_counter + 11;
    case 3: return initialized_global - 13;
    case 4: external_function(value); return 17;
    case 5: return zeroed_global ^ 19;
    case 6: return dispatch[value & 1](value) + 23;
    default: return external_printf("value %d\n", value);
    }
}

int main(int argc, char **argv) {
    (void)argv;
    thread_local_value += argc;
    return classify(argc) + message_pointer[0];
}
