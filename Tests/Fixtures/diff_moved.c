/* suture diff test input: PATCHED defines the same functions in another order, so every function,
 * string and direct call moves while nothing changes. */
extern void sink(const char *text);
static int counter;
static int helper(int x);

#define FIRST  int first(int x) { sink("first"); counter += x; return helper(x) + 1; }
#define SECOND int second(int x) { sink("second"); return helper(x + 1) + 2; }
#define HELPER __attribute__((noinline)) static int helper(int x) { sink("helper"); return x * 7 + counter; }

#ifdef PATCHED
SECOND
FIRST
HELPER
#else
HELPER
FIRST
SECOND
#endif
