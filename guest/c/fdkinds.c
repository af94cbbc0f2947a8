/*
 * Kinds of open files other than plain reads and writes, for the syscall
 * layer's differential tests (tests/emu/test_linux_misc.py): run natively and
 * emulated in an empty writable directory, both print the same lines.
 *
 *   fdkinds std        what the standard streams are (fstat type, isatty)
 *   fdkinds eventfd    eventfd counter, semaphore, non-blocking, a blocked reader
 *   fdkinds copy       sendfile and copy_file_range, offsets and positions
 *   fdkinds ioctl      FIONREAD, FIONBIO, FIOCLEX on files that are not terminals
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define SHOW(what, expr) do { long r_ = (long)(expr); \
	printf("%s = %ld%s%s\n", what, r_, r_ < 0 ? " " : "", r_ < 0 ? strerrorname_np(errno) : ""); \
	} while (0)

static const char *kind(mode_t m)
{
	return S_ISFIFO(m) ? "fifo" : S_ISCHR(m) ? "chr" : S_ISREG(m) ? "reg" : S_ISDIR(m) ? "dir"
	     : (m & S_IFMT) == 0 ? "anon" : "other";
}

static void std_streams(void)
{
	for (int fd = 0; fd < 3; fd++) {
		struct stat st;
		struct termios t;
		fstat(fd, &st);
		errno = 0;
		int tty = isatty(fd);
		int err = errno;
		printf("fd %d: %s isatty=%d %s tcgetattr=%d\n", fd, kind(st.st_mode), tty,
		       err ? strerrorname_np(err) : "-", tcgetattr(fd, &t));
		if (S_ISCHR(st.st_mode)) {
			struct winsize ws;
			printf("  winsize %d, cflag CS8 %d, lflag ICANON %d\n",
			       ioctl(fd, TIOCGWINSZ, &ws), !!(t.c_cflag & CS8), !!(t.c_lflag & ICANON));
		}
	}
}

static int efd;

static void *writer(void *arg)
{
	uint64_t v = 5;
	(void)arg;
	usleep(1000);
	write(efd, &v, 8);
	return NULL;
}

static void eventfds(void)
{
	uint64_t v = 0;
	struct stat st;

	efd = eventfd(3, EFD_NONBLOCK | EFD_CLOEXEC);
	SHOW("eventfd", efd >= 0);
	fstat(efd, &st);
	printf("fstat: %s mode %o size %ld\n", kind(st.st_mode), st.st_mode & 0777, (long)st.st_size);
	printf("F_GETFL nonblock %d rdwr %d, FD_CLOEXEC %d\n", !!(fcntl(efd, F_GETFL) & O_NONBLOCK),
	       (fcntl(efd, F_GETFL) & O_ACCMODE) == O_RDWR, fcntl(efd, F_GETFD));
	SHOW("read 4 bytes", read(efd, &v, 4));
	SHOW("read", read(efd, &v, 8));
	printf("value %llu\n", (unsigned long long)v);
	SHOW("read empty", read(efd, &v, 8));
	v = 7;
	SHOW("write 7", write(efd, &v, 8));
	v = 2;
	SHOW("write 2 with 16 bytes", write(efd, (uint64_t[]){2, 99}, 16));
	uint64_t two[2] = {0, 0};
	SHOW("read 16", read(efd, two, 16));
	printf("value %llu %llu\n", (unsigned long long)two[0], (unsigned long long)two[1]);
	v = UINT64_MAX;
	SHOW("write ULLONG_MAX", write(efd, &v, 8));
	v = UINT64_MAX - 1;
	SHOW("write ULLONG_MAX-1", write(efd, &v, 8));
	v = 1;
	SHOW("write 1 more (full)", write(efd, &v, 8));
	SHOW("read full", read(efd, &v, 8));
	printf("value %llu\n", (unsigned long long)v);
	close(efd);

	efd = eventfd(2, EFD_SEMAPHORE);
	for (int i = 0; i < 2; i++) {
		SHOW("semaphore read", read(efd, &v, 8));
		printf("value %llu\n", (unsigned long long)v);
	}
	SHOW("FIONBIO on", ioctl(efd, FIONBIO, &(int){1}));
	SHOW("semaphore read empty", read(efd, &v, 8));
	SHOW("FIONBIO off", ioctl(efd, FIONBIO, &(int){0}));
	pthread_t t;
	pthread_create(&t, NULL, writer, NULL);
	SHOW("blocking read", read(efd, &v, 8));       /* waits for the writer's 5 */
	printf("value %llu\n", (unsigned long long)v);
	pthread_join(t, NULL);
	close(efd);

	SHOW("eventfd2 bad flags", eventfd(0, 0x40));
	SHOW("eventfd(2^32+1)", syscall(290, (1ULL << 32) + 1, 0) >= 0);
}

static void copies(void)
{
	char buf[64] = {0};
	off_t off;
	int src = open("src", O_RDWR | O_CREAT | O_TRUNC, 0600);
	int dst = open("dst", O_RDWR | O_CREAT | O_TRUNC, 0600);

	write(src, "0123456789abcdefghij", 20);
	lseek(src, 5, SEEK_SET);
	SHOW("sendfile from the position", sendfile(dst, src, NULL, 4));
	printf("src pos %ld dst pos %ld\n", (long)lseek(src, 0, SEEK_CUR), (long)lseek(dst, 0, SEEK_CUR));
	off = 2;
	SHOW("sendfile at offset 2", sendfile(dst, src, &off, 3));
	printf("off %ld src pos %ld\n", (long)off, (long)lseek(src, 0, SEEK_CUR));
	off = 18;
	SHOW("sendfile past the end", sendfile(dst, src, &off, 100));
	printf("off %ld\n", (long)off);
	off = -1;
	SHOW("sendfile at -1", sendfile(dst, src, &off, 1));
	/* Natively the pipe holds the page, not a copy (splice): a file written
	 * later would show through, so this one never changes. */
	int fixed = open("fixed", O_RDWR | O_CREAT | O_TRUNC, 0600);
	write(fixed, "0123456789abcdefghij", 20);
	SHOW("sendfile to stdout", sendfile(1, fixed, &(off_t){10}, 6));
	printf("\n");
	SHOW("sendfile from stdout", sendfile(dst, 1, NULL, 1));
	SHOW("sendfile from a write-only fd", sendfile(dst, open("dst", O_WRONLY), NULL, 1));
	SHOW("sendfile to a read-only fd", sendfile(open("src", O_RDONLY), src, NULL, 1));
	SHOW("sendfile count 0", sendfile(dst, src, NULL, 0));
	SHOW("sendfile bad fd", sendfile(dst, 99, NULL, 1));

	loff_t in = 0, out = 100;
	SHOW("copy_file_range", copy_file_range(src, &in, dst, &out, 8, 0));
	printf("in %ld out %ld src pos %ld dst pos %ld\n", (long)in, (long)out,
	       (long)lseek(src, 0, SEEK_CUR), (long)lseek(dst, 0, SEEK_CUR));
	lseek(src, 15, SEEK_SET);
	SHOW("copy_file_range from positions", copy_file_range(src, NULL, dst, NULL, 100, 0));
	printf("src pos %ld dst pos %ld\n", (long)lseek(src, 0, SEEK_CUR), (long)lseek(dst, 0, SEEK_CUR));
	SHOW("copy_file_range at the end", copy_file_range(src, NULL, dst, NULL, 5, 0));
	SHOW("copy_file_range flags", copy_file_range(src, NULL, dst, NULL, 5, 1));
	SHOW("copy_file_range from stdin", copy_file_range(0, NULL, dst, NULL, 5, 0));
	SHOW("copy_file_range to stdout", copy_file_range(src, &(loff_t){0}, 1, NULL, 5, 0));
	SHOW("copy_file_range of a directory", copy_file_range(open(".", O_RDONLY), NULL, dst, NULL, 5, 0));
	in = 0, out = 4;
	SHOW("copy_file_range overlapping", copy_file_range(src, &in, src, &out, 8, 0));
	in = 0, out = 10;
	SHOW("copy_file_range same file apart", copy_file_range(src, &in, src, &out, 8, 0));
	SHOW("copy_file_range read-only out", copy_file_range(src, &(loff_t){0}, open("dst", O_RDONLY),
	     &(loff_t){0}, 1, 0));
	SHOW("pread dst", pread(dst, buf, sizeof buf - 1, 0));
	for (int i = 0; i < (int)sizeof buf - 1; i++)
		if (!buf[i])
			buf[i] = '.';
	printf("dst: %s\n", buf);
	SHOW("pread src", pread(src, buf, 20, 0));
	buf[20] = 0;
	printf("src: %s\n", buf);
}

static void ioctls(void)
{
	int n = -1;
	int f = open("data", O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct termios t;

	write(f, "0123456789", 10);
	lseek(f, 3, SEEK_SET);
	SHOW("FIONREAD file", ioctl(f, FIONREAD, &n));
	printf("n %d\n", n);
	SHOW("TCGETS file", ioctl(f, TCGETS, &t));
	SHOW("TIOCGWINSZ file", ioctl(f, TIOCGWINSZ, &(struct winsize){0}));
	SHOW("FIOCLEX", ioctl(f, FIOCLEX));
	SHOW("FD_CLOEXEC", fcntl(f, F_GETFD));
	SHOW("FIONCLEX", ioctl(f, FIONCLEX));
	SHOW("FD_CLOEXEC", fcntl(f, F_GETFD));
	SHOW("FIONBIO", ioctl(f, FIONBIO, &(int){1}));
	SHOW("O_NONBLOCK", !!(fcntl(f, F_GETFL) & O_NONBLOCK));
	SHOW("ioctl bad fd", ioctl(99, FIONREAD, &n));
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2)
		return 2;
	if (!strcmp(argv[1], "std"))
		std_streams();
	else if (!strcmp(argv[1], "eventfd"))
		eventfds();
	else if (!strcmp(argv[1], "copy"))
		copies();
	else if (!strcmp(argv[1], "ioctl"))
		ioctls();
	else
		return 2;
	return 0;
}
