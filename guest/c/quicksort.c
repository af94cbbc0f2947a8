/* Recursion on the heap: quicksort of a pseudo-random array, checked. */
#include <stdio.h>
#include <stdlib.h>

static unsigned long seed = 12345;

static long next_random(void)
{
	seed = seed * 6364136223846793005UL + 1442695040888963407UL;
	return (long)(seed >> 33) % 100000;
}

__attribute__((noinline)) static long partition(long *a, long lo, long hi)
{
	long pivot = a[(lo + hi) / 2];
	long i = lo - 1, j = hi + 1;

	for (;;) {
		do i++; while (a[i] < pivot);
		do j--; while (a[j] > pivot);
		if (i >= j)
			return j;
		long t = a[i]; a[i] = a[j]; a[j] = t;
	}
}

__attribute__((noinline)) void quicksort(long *a, long lo, long hi)
{
	if (lo >= hi)
		return;
	long p = partition(a, lo, hi);
	quicksort(a, lo, p);
	quicksort(a, p + 1, hi);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
	long *a = malloc(n * sizeof *a);
	unsigned long sum = 0;

	if (!a) {
		perror("malloc");
		return 1;
	}
	for (long i = 0; i < n; i++)
		a[i] = next_random();
	quicksort(a, 0, n - 1);
	for (long i = 0; i < n; i++) {
		if (i && a[i - 1] > a[i]) {
			fprintf(stderr, "not sorted at %ld\n", i);
			return 2;
		}
		sum = sum * 31 + a[i];
	}
	printf("sorted %ld numbers: min %ld max %ld checksum %lu\n", n, a[0], a[n - 1], sum);
	for (long i = 0; i < n && i < 8; i++)
		printf("%ld%c", a[i], i + 1 < n && i < 7 ? ' ' : '\n');
	free(a);
	return 0;
}
