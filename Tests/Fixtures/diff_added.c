/* suture diff test input: PATCHED adds a function. */
extern int other(int x);

int kept(int x)
{
	return other(x) + 1;
}

#ifdef PATCHED
int added_function(int x)
{
	return other(x) - 1;
}
#endif
