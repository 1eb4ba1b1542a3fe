/* suture diff test input: PATCHED flips one condition, the article's je -> jne in miniature. */
extern int other(int type);

int lock_check(int flags, int type)
{
#ifdef PATCHED
	if (flags & 2)
#else
	if (!(flags & 2))
#endif
		return -37;
	if (type == 2)
		return other(type);
	return type + 5;
}

int untouched(int x)
{
	return other(x) * 3 + 1;
}
