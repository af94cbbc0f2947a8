/*
 * What a guest may ask of the host, one command per run (tests/safety):
 *   safety limits          malloc(1 TiB), mmap(1 TiB), brk far up: refused in the guest
 *   safety fixed           MAP_FIXED at addresses Linux refuses (errno of each)
 *   safety io PATH         pread/pwrite/mmap at 2^63, dup2/F_DUPFD with negative descriptors,
 *                          mmap of a device, 1 GiB reads into a 16-byte buffer (PATH: a
 *                          regular file)
 *   safety dontneed MB     madvise(MADV_DONTNEED) over MB MiB of untouched memory
 *   safety mremap MB       grow an MB MiB mapping to twice that, moving it
 *   safety drain MB        read MB MiB of stdin in 1 MiB reads (prints the total)
 *   safety readv           one readv of stdin into two vectors (prints the count)
 *   safety write           write(1, "hello\n") and report the result on stderr
 *   safety fault N         open /dev/null N times, then write to address 0
 *   safety hold N          open /proc/self/exe N times, then spin forever
 * Every result is one line, "what: value" or "what: errno N".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define MiB (1UL << 20)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)
#define SCRATCH ((void *)0x10000000UL)     /* low: a 1 GiB count passes access_ok */

static void result(const char *what, long ret)
{
	if (ret == -1)                  /* syscall() and the wrappers: -1 and errno */
		printf("%s: errno %d\n", what, errno);
	else
		printf("%s: %ld\n", what, ret);
}

static long raw_mmap(unsigned long addr, unsigned long len, int flags)
{
	return syscall(SYS_mmap, addr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
}

static int limits(void)
{
	void *p = malloc(1UL << 40);
	unsigned long cur = syscall(SYS_brk, 0);

	printf("malloc 1T: %s\n", p ? "not NULL" : "NULL");
	result("mmap 1T", raw_mmap(0, 1UL << 40, ANON));
	printf("brk far: %s\n", syscall(SYS_brk, cur + (1UL << 46)) == (long)cur ? "unchanged" : "moved");
	printf("brk top: %s\n", syscall(SYS_brk, ~0xfffUL) == (long)cur ? "unchanged" : "moved");
	return 0;
}

static int fixed(void)
{
	result("fixed top", raw_mmap(~0xfffUL, 4096, ANON | MAP_FIXED));
	result("fixed task_size", raw_mmap(0x7ffffffff000UL, 4096, ANON | MAP_FIXED));
	result("fixed 48 bit", raw_mmap(0x800000000000UL, 4096, ANON | MAP_FIXED));
	result("fixed unaligned", raw_mmap(0x10000001UL, 4096, ANON | MAP_FIXED));
	result("fixed low", raw_mmap(0x2000, 4096, ANON | MAP_FIXED));
	result("noreplace low", raw_mmap(0x3000, 4096, ANON | MAP_FIXED_NOREPLACE));
	result("length 0", raw_mmap(0, 0, ANON));
	return 0;
}

static int io(const char *path)
{
	char buf[16];
	int fd = open(path, O_RDONLY), null = open("/dev/null", O_RDWR), zero = open("/dev/zero", O_RDONLY);
	char *page = mmap(SCRATCH, 4096, PROT_READ | PROT_WRITE, ANON | MAP_FIXED_NOREPLACE, -1, 0);
	char *tail = page + 4096 - 16;           /* 16 mapped bytes, then a hole */

	result("pread 2^63", syscall(SYS_pread64, fd, buf, 16, 1UL << 63));
	result("pread llong_max", syscall(SYS_pread64, fd, buf, 16, (1UL << 63) - 8));
	result("pwrite 2^63", syscall(SYS_pwrite64, null, buf, 16, 1UL << 63));
	result("mmap file 2^63", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, fd, 1UL << 63));
	result("mmap /dev/urandom", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE,
					   open("/dev/urandom", O_RDONLY), 0));
	result("dup2 -5", syscall(SYS_dup2, 1, -5));
	result("dup3 -5", syscall(SYS_dup3, 1, -5, 0));
	result("F_DUPFD -7", syscall(SYS_fcntl, 1, F_DUPFD, -7));
	result("F_DUPFD 2^20", syscall(SYS_fcntl, 1, F_DUPFD, 1L << 20));
	result("read zero 1G", syscall(SYS_read, zero, tail, 1UL << 30));
	result("read file 1G", syscall(SYS_read, fd, tail, 1UL << 30));
	result("pread file 1G", syscall(SYS_pread64, fd, tail, 1UL << 30, 0));
	result("read hole", syscall(SYS_read, zero, page + 4096, 16));
	result("read past top", syscall(SYS_read, zero, buf, ~0UL >> 1));
	mprotect(page, 4096, PROT_READ);
	result("read read-only", syscall(SYS_read, zero, page, 16));
	return 0;
}

static int dontneed(unsigned long mib)
{
	char *p = mmap(NULL, mib * MiB, PROT_READ | PROT_WRITE, ANON, -1, 0);

	if (p == MAP_FAILED)
		return result("mmap", -1), 1;
	p[0] = p[mib * MiB - 1] = 7;
	result("madvise", madvise(p, mib * MiB, MADV_DONTNEED));
	printf("zeroed: %s\n", p[0] == 0 && p[mib * MiB - 1] == 0 ? "yes" : "no");
	return 0;
}

static int grow(unsigned long mib)
{
	unsigned long size = mib * MiB;
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, ANON, -1, 0), *q;

	if (p == MAP_FAILED)
		return result("mmap", -1), 1;
	p[0] = 1;
	p[size - 1] = 2;
	/* a page right after it (unless something is there already): no growing in place */
	if (mmap(p + size, 4096, PROT_READ, ANON | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED && errno != EEXIST)
		return result("blocker", -1), 1;
	q = mremap(p, size, 2 * size, MREMAP_MAYMOVE);
	if (q == MAP_FAILED)
		return result("mremap", -1), 1;
	q[2 * size - 1] = 3;
	printf("moved: %s, kept: %s\n", q != p ? "yes" : "no",
	       q[0] == 1 && q[size - 1] == 2 && q[size] == 0 ? "yes" : "no");
	return 0;
}

static int drain(unsigned long mib)
{
	char *buf = mmap(NULL, MiB, PROT_READ | PROT_WRITE, ANON, -1, 0);
	unsigned long total = 0;
	long n;

	while (total < mib * MiB && (n = read(0, buf, MiB)) > 0)
		total += n;
	printf("drained: %lu MiB\n", total / MiB);
	return 0;
}

static int readv_stdin(void)
{
	char a[4], b[64];
	struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};

	result("readv", readv(0, iov, 2));
	return 0;
}

static int write_hello(void)
{
	long ret = write(1, "hello\n", 6);

	fprintf(stderr, "write: %ld errno %d\n", ret, ret < 0 ? errno : 0);
	return ret < 0;
}

static int hold(int n, int crash)
{
	for (int i = 0; i < n; i++)
		if (open("/proc/self/exe", O_RDONLY) < 0)     /* a host file: /dev/null is emulated */
			return result("open", -1), 1;
	printf("opened %d\n", n);
	fflush(stdout);
	if (crash)
		*(volatile int *)0 = 1;
	for (volatile int spin = 0;; spin++)
		;
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	unsigned long n = argc > 2 ? strtoul(argv[2], NULL, 0) : 0;

	if (!strcmp(cmd, "limits"))
		return limits();
	if (!strcmp(cmd, "fixed"))
		return fixed();
	if (!strcmp(cmd, "io") && argc > 2)
		return io(argv[2]);
	if (!strcmp(cmd, "dontneed"))
		return dontneed(n);
	if (!strcmp(cmd, "mremap"))
		return grow(n);
	if (!strcmp(cmd, "drain"))
		return drain(n);
	if (!strcmp(cmd, "readv"))
		return readv_stdin();
	if (!strcmp(cmd, "write"))
		return write_hello();
	if (!strcmp(cmd, "fault") || !strcmp(cmd, "hold"))
		return hold((int)n, !strcmp(cmd, "fault"));
	fprintf(stderr, "usage: safety limits|fixed|io PATH|dontneed MB|mremap MB|drain MB|readv|write|"
		"fault N|hold N\n");
	return 2;
}
