/*
 * A program whose outcome depends on the emulator's seed, for seed sweeps:
 *   seedy [N [crash]]   roll = one getrandom byte % N (default 3); print "roll R"
 *                       and exit with R; with "crash", roll 0 writes to address 0
 *                       instead (dies of SIGSEGV).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int main(int argc, char **argv)
{
	unsigned char byte;
	int n = argc > 1 ? atoi(argv[1]) : 3;
	int crash = argc > 2 && !strcmp(argv[2], "crash");

	if (n < 1 || getrandom(&byte, 1, 0) != 1)
		return 100;
	int roll = byte % n;
	if (crash && roll == 0) {
		volatile int *volatile null = NULL;   /* volatile: the compiler keeps the store */
		*null = 1;
	}
	printf("roll %d\n", roll);
	return roll;
}
