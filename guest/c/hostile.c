/*
 * -nostdlib: raw system calls with arguments taken from argv, for the syscall
 * layer's error tests (tests/safety/test_syscall_errors.py).
 *
 *   hostile NR [ARG...] [, NR [ARG...]]...
 *   hostile spin          (loops forever: Ctrl-C tests)
 *
 * Each group is one syscall: its number and up to six arguments, each a decimal
 * (maybe negative) or 0x-hexadecimal number, "buf" for the address of a
 * 4096-byte static buffer, or "@TEXT" for the address of the string TEXT. One line per syscall on stdout: its raw result in
 * signed decimal (-errno on failure). Results go to fd 1 unless it is closed, then fd 2.
 */
static long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile ("syscall" : "=a"(ret)
			  : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			  : "rcx", "r11", "memory");
	return ret;
}

static char buf[4096];

static long parse(const char *s)
{
	unsigned long v = 0;
	int neg = 0, base = 10;

	if (s[0] == 'b' && s[1] == 'u' && s[2] == 'f' && !s[3])
		return (long)buf;
	if (s[0] == '@')
		return (long)(s + 1);
	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s; s++) {
		int d = *s >= '0' && *s <= '9' ? *s - '0'
		      : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
		      : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10 : 99;
		if (d >= base)
			break;
		v = v * base + d;
	}
	return neg ? -(long)v : (long)v;
}

static void print(long v)
{
	char out[24];
	int i = sizeof out;
	unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;

	out[--i] = '\n';
	do {
		out[--i] = '0' + u % 10;
		u /= 10;
	} while (u);
	if (v < 0)
		out[--i] = '-';
	if (sys6(1, 1, (long)(out + i), sizeof out - i, 0, 0, 0) < 0)
		sys6(1, 2, (long)(out + i), sizeof out - i, 0, 0, 0);
}

void __attribute__((used)) start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	long i = 1;

	if (argc > 1 && argv[1][0] == 's' && argv[1][1] == 'p')
		for (;;)
			__asm__ volatile ("");
	while (i < argc) {
		long v[7] = {0};
		int n = 0;

		for (; i < argc && !(argv[i][0] == ',' && !argv[i][1]); i++)
			if (n < 7)
				v[n++] = parse(argv[i]);
		i++;
		if (n)
			print(sys6(v[0], v[1], v[2], v[3], v[4], v[5], v[6]));
	}
	sys6(60, 0, 0, 0, 0, 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start_c\n\thlt\n");
