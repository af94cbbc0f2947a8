/*
 * -nostdlib: raw syscalls, no C library, no TLS. Exit status: 40 + argc, plus
 * 100 if the syscall instruction did not leave the return address in rcx.
 */
static long sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile ("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c)
			  : "rcx", "r11", "memory");
	return ret;
}

static const char msg[] = "hello from a program without libc\n";

__attribute__((noinline)) long count_args(long argc, char **argv)
{
	long n = 0;

	while (n < argc && argv[n])
		n++;
	return n;
}

/* entry_SYSCALL_64: the CPU puts the return address in rcx. */
static long rcx_is_return_address(void)
{
	long rcx, ret;

	__asm__ volatile ("lea 1f(%%rip), %1\n\tmov $39, %%eax\n\tsyscall\n1:\n\tmov %%rcx, %0"
			  : "=r"(rcx), "=&r"(ret) : : "rax", "rcx", "r11", "memory");
	return rcx == ret;
}

void __attribute__((used)) start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);

	sys3(1, 1, (long)msg, sizeof msg - 1);
	sys3(60, 40 + count_args(argc, argv) + (rcx_is_return_address() ? 0 : 100), 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start_c\n\thlt\n");
