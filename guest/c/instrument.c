/*
 * The call-count oracle: linked into the -finstrument-functions builds, it
 * counts entries and exits of every instrumented function and prints
 * "ADDRESS ENTRIES EXITS" lines to stderr at exit.
 */
#include <stdio.h>

#define NO_INSTR __attribute__((no_instrument_function))

static struct { void *fn; unsigned long enter, exit; } counts[256];

static NO_INSTR unsigned long *slot(void *fn, int exit)
{
	for (int i = 0; i < 256; i++) {
		if (counts[i].fn == fn || !counts[i].fn) {
			counts[i].fn = fn;
			return exit ? &counts[i].exit : &counts[i].enter;
		}
	}
	return &counts[255].enter;
}

NO_INSTR void __cyg_profile_func_enter(void *fn, void *site)
{
	(void)site;
	++*slot(fn, 0);
}

NO_INSTR void __cyg_profile_func_exit(void *fn, void *site)
{
	(void)site;
	++*slot(fn, 1);
}

static NO_INSTR __attribute__((destructor)) void dump_counts(void)
{
	for (int i = 0; i < 256 && counts[i].fn; i++)
		fprintf(stderr, "%p %lu %lu\n", counts[i].fn, counts[i].enter, counts[i].exit);
}
