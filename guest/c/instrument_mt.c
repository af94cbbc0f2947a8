/*
 * The call-count oracle of threaded programs: like instrument.c, linked into a
 * -finstrument-functions build, but it counts entries and exits per thread. A
 * thread's table is labelled by instr_label_thread(LABEL), which the program
 * calls (through a weak reference) when the thread starts; a thread that never
 * calls it (main) is -1. At exit it prints "LABEL ADDRESS ENTRIES EXITS" lines
 * to stderr, one per thread and function.
 */
#include <stdio.h>

#define NO_INSTR __attribute__((no_instrument_function))
#define MAX_THREADS 64
#define MAX_FNS 64

struct table {
	long label;
	struct { void *fn; unsigned long enter, exit; } counts[MAX_FNS];
};

static struct table tables[MAX_THREADS];
static int ntables;
static __thread struct table *mine;

static NO_INSTR struct table *my_table(void)
{
	if (!mine) {
		int i = __atomic_fetch_add(&ntables, 1, __ATOMIC_RELAXED);

		mine = &tables[i < MAX_THREADS ? i : MAX_THREADS - 1];
		mine->label = -1;
	}
	return mine;
}

static NO_INSTR unsigned long *slot(void *fn, int exit)
{
	struct table *t = my_table();

	for (int i = 0; i < MAX_FNS; i++) {
		if (t->counts[i].fn == fn || !t->counts[i].fn) {
			t->counts[i].fn = fn;
			return exit ? &t->counts[i].exit : &t->counts[i].enter;
		}
	}
	return &t->counts[MAX_FNS - 1].enter;
}

NO_INSTR void instr_label_thread(long label)
{
	my_table()->label = label;
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
	int n = __atomic_load_n(&ntables, __ATOMIC_RELAXED);

	for (int t = 0; t < n && t < MAX_THREADS; t++)
		for (int i = 0; i < MAX_FNS && tables[t].counts[i].fn; i++)
			fprintf(stderr, "%ld %p %lu %lu\n", tables[t].label, tables[t].counts[i].fn,
				tables[t].counts[i].enter, tables[t].counts[i].exit);
}
