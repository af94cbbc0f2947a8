/* Recursion: the Ackermann function, deep and not primitive recursive. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) unsigned long ackermann(unsigned long m, unsigned long n)
{
	if (m == 0)
		return n + 1;
	if (n == 0)
		return ackermann(m - 1, 1);
	return ackermann(m - 1, ackermann(m, n - 1));
}

int main(int argc, char **argv)
{
	unsigned long m = argc > 1 ? strtoul(argv[1], NULL, 10) : 2;
	unsigned long n = argc > 2 ? strtoul(argv[2], NULL, 10) : 3;

	for (unsigned long i = 0; i <= m; i++)
		for (unsigned long j = 0; j <= n; j++)
			printf("A(%lu, %lu) = %lu\n", i, j, ackermann(i, j));
	return 0;
}
