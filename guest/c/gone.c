/*
 * Code unmapped under a probe (tests/probes/test_invisible.py). victim() sits
 * alone in its page: main calls it, unmaps the page with munmap and goes on;
 * with an argument it calls victim() once more, which faults (SIGSEGV).
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

__asm__(".pushsection .text.victim, \"ax\", @progbits\n"
	".balign 4096\n.globl victim\n.type victim, @function\n"
	"victim:\n"
	"\tpush %rbx\n"
	"\tlea 42(%rdi), %rax\n"
	"\tpop %rbx\n"
	"\tret\n"
	".size victim, .-victim\n"
	".balign 4096\n.popsection\n");

long victim(long x);

int main(int argc, char **argv)
{
	void *page = (void *)((uintptr_t)victim & ~(uintptr_t)4095);

	printf("victim(1) = %ld\n", victim(1));
	printf("munmap = %d\n", munmap(page, 4096));
	if (argc > 1)
		printf("victim(2) = %ld\n", victim(2));
	printf("done\n");
	return 0;
}
