/* suture diff test input: PATCHED changes one constant (same encoded length). */
extern int other(int x);

int scale(int x)
{
#ifdef PATCHED
	return other(x * 5) + 2000;
#else
	return other(x * 5) + 1000;
#endif
}

int untouched(int x)
{
	return other(x) - 7;
}
