/* suture diff test input: one object of a two-object "module" (linked with linked_part_b.c by
 * ld -r). PATCHED edits two same-length format strings: greet's, which no other object uses, and
 * share_a's, which linked_part_b.c uses too (the linker merges the two into one), and tail's,
 * whose end linked_part_b.c uses too (the linker may share the suffix). */
extern int report(const char *format, ...);

int greet(int x)
{
#ifdef PATCHED
	return report("Hello from part a: %d\n", x);
#else
	return report("hello from part a: %d\n", x);
#endif
}

int share_a(int x)
{
#ifdef PATCHED
	return report("SHARED format: %d\n", x);
#else
	return report("shared format: %d\n", x);
#endif
}

int tail_a(int x)
{
#ifdef PATCHED
	return report("long tail message: %d\n", x + 1);
#else
	return report("long tail MESSAGE: %d\n", x + 1);
#endif
}
