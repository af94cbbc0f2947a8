/*
 * Exercises the syscall layer, one command per run:
 *   sysprobe cat PATH          print a file (or "open PATH: errno N")
 *   sysprobe write PATH TEXT   create PATH holding TEXT
 *   sysprobe nosys             call an unknown system call twice
 *   sysprobe memory            mmap, mprotect, mremap, madvise, munmap, brk
 *   sysprobe random            8 bytes of getrandom and 8 of AT_RANDOM, in hex
 *   sysprobe info              uname, ids, /proc/self/exe, cwd, a clock that moves
 *   sysprobe abort             abort(): dies of SIGABRT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static int cat(const char *path)
{
	char buf[4096];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		printf("open %s: errno %d\n", path, errno);
		return 1;
	}
	while ((n = read(fd, buf, sizeof buf)) > 0)
		fwrite(buf, 1, n, stdout);
	close(fd);
	return 0;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0) {
		printf("open %s: errno %d\n", path, errno);
		return 1;
	}
	printf("wrote %zd bytes\n", write(fd, text, strlen(text)));
	return close(fd);
}

static int nosys(void)
{
	for (int i = 0; i < 2; i++) {
		long ret = syscall(1000, 1, 2, 3);
		printf("syscall 1000: %ld errno %d\n", ret, errno);
	}
	return 0;
}

static int memory(void)
{
	size_t page = 4096;
	char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return 1;
	memset(p, 'a', 4 * page);
	if (mprotect(p + page, page, PROT_READ))            /* splits the mapping */
		return 2;
	if (munmap(p + 2 * page, page))                      /* a hole in the middle */
		return 3;
	char *q = mremap(p + 3 * page, page, 64 * page, MREMAP_MAYMOVE);
	if (q == MAP_FAILED || q[0] != 'a')
		return 4;
	q[64 * page - 1] = 'z';
	if (madvise(q, page, MADV_DONTNEED) || q[0] != 0)    /* anonymous: reads back zero */
		return 5;
	char *brk0 = sbrk(0);
	if (sbrk(100000) != brk0 || ((char *)sbrk(0))[-1] != 0)
		return 6;
	brk0[99999] = 'b';
	printf("memory ok: %c%c %c\n", p[0], p[page], q[64 * page - 1]);
	return 0;
}

static int random_bytes(void)
{
	unsigned char buf[8];
	const unsigned char *at_random = (const unsigned char *)getauxval(AT_RANDOM);

	if (getrandom(buf, sizeof buf, 0) != sizeof buf)
		return 1;
	for (int i = 0; i < 8; i++)
		printf("%02x", buf[i]);
	printf(" ");
	for (int i = 0; i < 8; i++)
		printf("%02x", at_random[i]);
	printf("\n");
	return 0;
}

static int info(void)
{
	struct utsname u;
	struct timespec a, b;
	char exe[256] = "", cwd[256] = "";

	uname(&u);
	readlink("/proc/self/exe", exe, sizeof exe - 1);
	getcwd(cwd, sizeof cwd);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (volatile int i = 0; i < 100000; i++)
		;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%s %s\n", u.sysname, u.machine);
	printf("pid==tid %d uid %d\n", getpid() == gettid(), getuid());
	printf("exe %s\ncwd %s\n", exe, cwd);
	printf("clock moves %d\n", b.tv_sec > a.tv_sec || b.tv_nsec > a.tv_nsec);
	printf("pagesize %ld\n", sysconf(_SC_PAGESIZE));
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	if (!strcmp(cmd, "cat") && argc > 2)
		return cat(argv[2]);
	if (!strcmp(cmd, "write") && argc > 3)
		return write_file(argv[2], argv[3]);
	if (!strcmp(cmd, "nosys"))
		return nosys();
	if (!strcmp(cmd, "memory"))
		return memory();
	if (!strcmp(cmd, "random"))
		return random_bytes();
	if (!strcmp(cmd, "info"))
		return info();
	if (!strcmp(cmd, "abort"))
		abort();
	fprintf(stderr, "usage: sysprobe cat|write|nosys|memory|random|info|abort ...\n");
	return 2;
}
