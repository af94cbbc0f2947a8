/*
 * Call chains in code without frame pointers, for the .eh_frame unwinder's
 * tests (tests/emu/test_cfi.py). Built -O2 -fomit-frame-pointer: each function
 * keeps values in callee-saved registers across its calls (rbp among them, as
 * an ordinary register), so its frame has pushes but no frame pointer.
 *
 *   main -> outer -> middle -> inner                       (directly)
 *   main -> outer -> qsort (libc) -> by_weight -> middle   (through libc)
 *
 * Usage: o2stack [N] (default 5). Built with -DCHAIN_ORACLE and
 * -finstrument-functions it also prints, at the first entry of each function,
 * "CHAIN fn caller caller ..." (addresses, innermost first) to stderr: the
 * call chain oracle where gdb is not installed.
 */
#include <stdio.h>
#include <stdlib.h>

#define N 12

__attribute__((noinline)) long inner(long x, long y)
{
	long acc = x;

	for (long i = 0; i < (y & 15) + 3; i++)
		acc = acc * 31 + (i ^ y);
	return acc;
}

__attribute__((noinline)) long middle(long a, long b)
{
	long p = a * 7, q = b * 13, r = a ^ b, s = a + b, t = a - b, u = a | b;
	long v = inner(p, q);

	v += inner(q + r, s);
	return v ^ (p + q + r + s + t + u);
}

__attribute__((noinline)) int by_weight(const void *pa, const void *pb)
{
	long a = *(const long *)pa, b = *(const long *)pb;
	long wa = middle(a, 3) & 0xff, wb = middle(b, 3) & 0xff;

	return (wa > wb) - (wa < wb);
}

__attribute__((noinline)) long outer(int n)
{
	long v[N];
	long total = 0;

	for (int i = 0; i < N; i++) {
		v[i] = (i * 2654435761u) % 1000;
		total += middle(v[i], i);
	}
	qsort(v, N, sizeof v[0], by_weight);
	for (int i = 0; i < N; i++)
		total = total * 3 + v[i] * n;
	return total;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 5;

	printf("%ld\n", outer(n));
	return 0;
}

#ifdef CHAIN_ORACLE
#define NO_INSTR __attribute__((no_instrument_function))

static void *chain[256];
static int depth;
static void *seen[64];
static int nseen;

NO_INSTR void __cyg_profile_func_enter(void *fn, void *site)
{
	int first = 1;

	(void)site;
	if (depth < 256)
		chain[depth] = fn;
	depth++;
	for (int i = 0; i < nseen; i++)
		first &= seen[i] != fn;
	if (!first || nseen == 64 || depth > 256)
		return;
	seen[nseen++] = fn;
	fprintf(stderr, "CHAIN");
	for (int i = depth - 1; i >= 0; i--)
		fprintf(stderr, " %p", chain[i]);
	fprintf(stderr, "\n");
}

NO_INSTR void __cyg_profile_func_exit(void *fn, void *site)
{
	(void)fn;
	(void)site;
	depth--;
}
#endif
