/* suture diff test input: PATCHED changes an initialised array (data, not code). */
int table[4] = { 1, 2, 3,
#ifdef PATCHED
	5
#else
	4
#endif
};

int lookup(int i)
{
	return table[i & 3];
}
