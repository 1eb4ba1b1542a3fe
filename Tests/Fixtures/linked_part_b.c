/* suture diff test input: the other object of the "module" linked_part_a.c is part of. It uses
 * share_a's original string whole, and the end of tail_a's. */
extern int report(const char *format, ...);

int share_b(int x)
{
	return report("shared format: %d\n", x * 3);
}

int tail_b(int x)
{
	return report("MESSAGE: %d\n", x * 5);
}
