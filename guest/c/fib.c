/* Recursion: naive Fibonacci. Usage: fib [N...] (default 20). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long fib(long n)
{
	if (n < 2)
		return n;
	return fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv)
{
	long total = 0;

	if (argc < 2) {
		printf("fib(20) = %ld\n", fib(20));
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		long n = strtol(argv[i], NULL, 10);
		long f = fib(n);
		printf("fib(%ld) = %ld\n", n, f);
		total += f;
	}
	return (int)(total % 256);
}
