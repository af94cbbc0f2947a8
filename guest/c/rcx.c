/*
 * rcx after a syscall (tests/probes/test_invisible.py): entry_SYSCALL_64 leaves
 * the return address in rcx, so a probe that runs the syscall out of line must
 * still leave the original's. syscall_rcx(nr) makes the system call and returns
 * rcx; main prints it relative to syscall_rcx, for getpid and for a write.
 */
#include <stdio.h>
#include <unistd.h>

__asm__(".text\n.globl syscall_rcx\n.type syscall_rcx, @function\n"
	"syscall_rcx:\n"
	"\tmov %rdi, %rax\n"
	"\tsyscall\n"                   /* syscall_rcx+0x3 */
	"\tmov %rcx, %rax\n"
	"\tret\n"
	".size syscall_rcx, .-syscall_rcx\n");

long syscall_rcx(long nr);

int main(void)
{
	long base = (long)syscall_rcx;

	printf("getpid: rcx = syscall_rcx+%#lx\n", syscall_rcx(39) - base);
	printf("sched_yield: rcx = syscall_rcx+%#lx\n", syscall_rcx(24) - base);
	return 0;
}
