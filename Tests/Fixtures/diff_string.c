/* suture diff test input: PATCHED edits string literals. The .modinfo entry makes the object look
 * like a linked kernel module (whose strings are merged already), so string hunks are possible;
 * PLAIN_OBJECT leaves it out; GREET_ONLY limits PATCHED to the first, same-length edit. */
extern void sink(const char *text);

#ifndef PLAIN_OBJECT
__attribute__((section(".modinfo"), used)) static const char modinfo_name[] = "name=demo";
#endif

void greet(void)
{
#ifdef PATCHED
	sink("hello_world");
#else
	sink("hello world");
#endif
}

void lengthen(void)
{
#if defined(PATCHED) && !defined(GREET_ONLY)
	sink("short, now longer");
#else
	sink("short");
#endif
}

void share_one(void)
{
#if defined(PATCHED) && !defined(GREET_ONLY)
	sink("shared text!");
#else
	sink("shared text.");
#endif
}

void share_two(void)
{
	sink("shared text.");
}

void unrelated(void)
{
	sink("unrelated");
}
