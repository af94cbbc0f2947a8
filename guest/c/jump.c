/*
 * setjmp/longjmp across recursion (the regression suite). For each argument N,
 * jump(N) saves a context with setjmp, then dive(N) nests N + 1 frames and the
 * deepest calls leap(), which longjmps back: dive's frames and leap's never
 * return. walk() is an ordinary recursion before and after the jump, so probes
 * see normal returns around the skipped frames.
 * Usage: jump [N...] (default 5). Prints one line per N; exits with the number of jumps.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

static jmp_buf env;
static volatile long steps;     /* written by walk, so the compiler cannot reuse a walk() result */

__attribute__((noinline)) void leap(long acc)
{
	/* Always true; the test keeps the compiler from treating leap (hence dive)
	 * as noreturn, which would turn dive into an "infinite recursion". */
	if (acc >= 0)
		longjmp(env, (int)(acc % 1000) + 1);
}

__attribute__((noinline)) void dive(long n, long acc)
{
	if (n == 0)
		leap(acc);
	else
		dive(n - 1, acc + n);
	printf("dive(%ld) returned\n", n);      /* never reached */
}

__attribute__((noinline)) long walk(long n)
{
	steps++;
	return n <= 0 ? 0 : n + walk(n - 1);
}

__attribute__((noinline)) long jump(long n)
{
	volatile long before = walk(n);
	int v = setjmp(env);

	if (v == 0) {
		dive(n, 0);
		return -1;
	}
	return v + before + walk(n);
}

int main(int argc, char **argv)
{
	int jumps = 0;

	if (argc < 2) {
		printf("jump(5) = %ld\n", jump(5));
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		long n = strtol(argv[i], NULL, 10);
		printf("jump(%ld) = %ld\n", n, jump(n));
		jumps++;
	}
	return jumps;
}
