/* A shared library of our own for the process tests, loaded by process_host.c (linked, or
 * dlopen()ed). parse_header() keeps a conditional jump at -O0 so a flip shows in the host's output;
 * lib_banner is data in the library's .rodata. -DHEADER_LIMIT=N makes another build. */
#ifndef HEADER_LIMIT
#define HEADER_LIMIT 16
#endif

const char lib_banner[] = "libparse-1";

__attribute__((noipa, noinline)) int parse_header(int length) {
    if (length > HEADER_LIMIT)
        return 1;
    return 0;
}
