/*
 * The path system calls, one line per call: "what: value" or "what: errno N".
 *   fileops DIR     create, link, rename, stat, time, truncate, list and remove
 *                   files under DIR (which must exist); nothing printed depends
 *                   on where DIR is (no inode numbers, no directory sizes)
 *   fileops memfd   memfd_create: write, fstat, /proc/self/fd, read back
 *   fileops proc    /proc/self: exe, fd/, status lines, maps' first line
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void result(const char *what, long ret)
{
	if (ret < 0)
		printf("%s: errno %d\n", what, errno);
	else
		printf("%s: %ld\n", what, ret);
}

static void show_stat(const char *path, int follow)
{
	struct stat st;
	char what[256];

	snprintf(what, sizeof what, "%s %s", follow ? "stat" : "lstat", path);
	if ((follow ? stat(path, &st) : lstat(path, &st)) < 0) {
		result(what, -1);
		return;
	}
	printf("%s: mode %o nlink %lu", what, st.st_mode, (unsigned long)st.st_nlink);
	if (!S_ISDIR(st.st_mode))
		printf(" size %ld", (long)st.st_size);
	printf("\n");
}

static void show_file(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		result(path, -1);
		return;
	}
	n = read(fd, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	printf("%s holds %zd: %s\n", path, n, buf);
	close(fd);
}

static void create(const char *path, int flags, int mode, const char *text)
{
	char what[256];
	int fd = open(path, flags, mode);

	snprintf(what, sizeof what, "create %s", path);
	result(what, fd);
	if (fd >= 0) {
		if (text)
			result("write", write(fd, text, strlen(text)));
		close(fd);
	}
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char *names[64];
	int n = 0;

	if (!d) {
		result(path, -1);
		return;
	}
	while ((e = readdir(d)) && n < 64) {
		char *s = malloc(strlen(e->d_name) + 4);
		sprintf(s, "%s/%c", e->d_name, e->d_type == DT_DIR ? 'd' : e->d_type == DT_LNK ? 'l' :
			e->d_type == DT_REG ? 'f' : '?');
		names[n++] = s;
	}
	closedir(d);
	qsort(names, n, sizeof *names, by_name);
	printf("list %s:", path);
	for (int i = 0; i < n; i++) {
		printf(" %s", names[i]);
		free(names[i]);
	}
	printf("\n");
}

static void times(void)
{
	struct timespec ts[2] = {{1000000000, 5}, {1234567890, 0}};
	struct stat st;

	result("utimensat", utimensat(AT_FDCWD, "d/f2", ts, 0));
	stat("d/f2", &st);
	printf("times: atime %ld mtime %ld\n", (long)st.st_atim.tv_sec, (long)st.st_mtim.tv_sec);
	ts[0].tv_nsec = UTIME_OMIT;
	ts[1].tv_sec = 1500000000;
	result("utimensat omit", utimensat(AT_FDCWD, "d/f2", ts, 0));
	stat("d/f2", &st);
	printf("times: atime %ld mtime %ld\n", (long)st.st_atim.tv_sec, (long)st.st_mtim.tv_sec);
	ts[1].tv_nsec = 1000000000;
	result("utimensat bad nsec", utimensat(AT_FDCWD, "d/f2", ts, 0));
}

static void sizes(void)
{
	int fd;

	result("truncate 3", truncate("d/f2", 3));
	show_stat("d/f2", 1);
	fd = open("d/f2", O_RDWR);
	result("ftruncate 10", ftruncate(fd, 10));
	close(fd);
	show_stat("d/f2", 1);
	fd = open("d/f2", O_RDONLY);
	result("ftruncate read-only", ftruncate(fd, 1));
	close(fd);
	result("truncate dir", truncate("d", 0));
	result("truncate 5", truncate("d/f2", 5));
}

static void modes(void)
{
	result("chmod 0400", chmod("d/f2", 0400));
	show_stat("d/f2", 1);
	result("open write 0400", open("d/f2", O_WRONLY));
	result("access W_OK", access("d/f2", W_OK));
	result("access R_OK", access("d/f2", R_OK));
	result("faccessat2 X_OK", syscall(SYS_faccessat2, AT_FDCWD, "d/f2", X_OK, AT_EACCESS));
	result("faccessat2 bad flags", syscall(SYS_faccessat2, AT_FDCWD, "d/f2", R_OK, 0x10000));
	result("chmod 0644", chmod("d/f2", 0644));
}

static void renames(void)
{
	result("rename f f2", rename("d/f", "d/f2"));
	result("renameat2 noreplace", renameat2(AT_FDCWD, "d/f2", AT_FDCWD, "d/g", RENAME_NOREPLACE));
	result("renameat2 exchange", renameat2(AT_FDCWD, "d/f2", AT_FDCWD, "d/g", RENAME_EXCHANGE));
	show_file("d/g");
	result("renameat2 exchange back", renameat2(AT_FDCWD, "d/f2", AT_FDCWD, "d/g", RENAME_EXCHANGE));
	result("renameat2 both flags", renameat2(AT_FDCWD, "d/f2", AT_FDCWD, "d/g",
						 RENAME_EXCHANGE | RENAME_NOREPLACE));
	result("rename into itself", rename("d", "d/sub/d"));
	result("rename file over dir", rename("d/g", "d/sub"));
	result("rename dir over file", rename("d/sub", "d/g"));
	result("rename missing", rename("d/nothing", "d/x"));
	result("rename to missing dir", rename("d/g", "d/no/x"));
	result("mkdir d/e", mkdir("d/e", 0755));
	result("create d/sub/x", close(open("d/sub/x", O_CREAT | O_WRONLY, 0644)));
	result("rename dir over non-empty", rename("d/e", "d/sub"));
	result("rename dir over empty", rename("d/sub", "d/e"));
	result("rename e sub", rename("d/e", "d/sub"));
}

static void removes(void)
{
	int dfd;

	result("unlink dir", unlink("d"));
	result("rmdir non-empty", rmdir("d"));
	result("rmdir file", rmdir("d/f2"));
	result("unlink missing", unlink("d/missing"));
	result("unlink trailing slash", unlink("d/f2/"));
	result("rmdir dot", rmdir("d/."));
	dfd = open("d", O_RDONLY | O_DIRECTORY);
	result("unlinkat dirfd", unlinkat(dfd, "sub/x", 0));
	result("unlinkat removedir", unlinkat(dfd, "sub", AT_REMOVEDIR));
	result("unlinkat bad flag", unlinkat(dfd, "g", 0x1));
	const char *names[] = {"f2", "g", "h", "l", "loop", "u"};
	for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
		result(names[i], unlinkat(dfd, names[i], 0));
	close(dfd);
	list("d");
	result("rmdir d", rmdir("d"));
	result("rmdir d again", rmdir("d"));
}

static int tree(const char *dir)
{
	char cwd[4096], *base;
	int fd;

	if (chdir(dir) < 0)
		return result("chdir", -1), 1;
	umask(022);
	result("mkdir d", mkdir("d", 0755));
	result("mkdir d again", mkdir("d", 0755));
	result("mkdir missing parent", mkdir("d/no/x", 0755));
	result("mkdir dot", mkdir(".", 0755));
	result("mkdir d/sub", mkdir("d/sub", 0750));
	show_stat("d", 1);
	create("d/f", O_CREAT | O_WRONLY | O_EXCL, 0640, "hello");
	create("d/f", O_CREAT | O_WRONLY | O_EXCL, 0640, NULL);
	create("d/", O_CREAT | O_WRONLY, 0640, NULL);
	umask(077);
	create("d/g", O_CREAT | O_WRONLY, 0666, "other");
	umask(022);
	show_stat("d/f", 1);
	show_stat("d/g", 1);
	result("symlink", symlink("f", "d/l"));
	result("symlink exists", symlink("f", "d/l"));
	result("symlink empty", symlink("", "d/empty"));
	char buf[64] = {0};
	result("readlink", readlink("d/l", buf, sizeof buf));
	printf("readlink: %s\n", buf);
	result("readlink not a link", readlink("d/f", buf, sizeof buf));
	show_stat("d/l", 0);
	show_stat("d/l", 1);
	result("open through file", open("d/l/x", O_RDONLY));
	result("symlink loop", symlink("loop", "d/loop"));
	result("open loop", open("d/loop", O_RDONLY));
	result("open nofollow", open("d/l", O_RDONLY | O_NOFOLLOW));
	result("open dir for writing", open("d", O_WRONLY));
	result("open file as dir", open("d/f", O_RDONLY | O_DIRECTORY));
	result("link", link("d/f", "d/h"));
	show_stat("d/f", 1);
	result("link dir", link("d/sub", "d/sub2"));
	result("link exists", link("d/f", "d/g"));
	result("create through dangling link", symlink("u", "d/dangling"));
	create("d/dangling", O_CREAT | O_WRONLY, 0644, "via link");
	show_file("d/u");
	result("unlink dangling", unlink("d/dangling"));
	char longname[300];
	memset(longname, 'n', 299);
	longname[299] = 0;
	result("mkdir long name", mkdir(longname, 0755));
	renames();
	times();
	sizes();
	modes();
	list("d");
	fd = open("d", O_RDONLY | O_DIRECTORY);
	result("fchdir", fchdir(fd));
	close(fd);
	base = getcwd(cwd, sizeof cwd) ? strrchr(cwd, '/') : NULL;
	printf("getcwd ends with: %s\n", base ? base : "(none)");
	show_file("f2");
	result("chdir ..", chdir(".."));
	result("chdir file", chdir("d/f2"));
	result("chdir missing", chdir("d/none"));
	removes();
	return 0;
}

static int memfd(void)
{
	char buf[64] = {0}, link[64], target[128] = {0};
	struct stat st;
	int fd = memfd_create("mf", MFD_CLOEXEC);

	if (fd < 0)
		return result("memfd_create", -1), 1;
	result("write", write(fd, "memory", 6));
	fstat(fd, &st);
	printf("fstat: regular %d size %ld\n", S_ISREG(st.st_mode), (long)st.st_size);
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	result("readlink", readlink(link, target, sizeof target - 1));
	printf("target: %s\n", target);
	result("lseek", lseek(fd, 0, SEEK_SET));
	result("read", read(fd, buf, sizeof buf));
	printf("read: %s\n", buf);
	result("ftruncate", ftruncate(fd, 2));
	fstat(fd, &st);
	printf("fstat: size %ld\n", (long)st.st_size);
	int again = open(link, O_RDONLY);
	memset(buf, 0, sizeof buf);
	result("reopen read", read(again, buf, sizeof buf));
	printf("reopened: %s\n", buf);
	result("memfd bad flags", memfd_create("x", 0x1000));
	return 0;
}

static int proc(void)
{
	char buf[4096] = {0};
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(buf, sizeof buf, f))
		if (!strncmp(buf, "Uid:", 4) || !strncmp(buf, "Threads:", 8) || !strncmp(buf, "State:", 6))
			fputs(buf, stdout);
	if (f)
		fclose(f);
	f = fopen("/proc/self/maps", "r");
	if (f && fgets(buf, sizeof buf, f))
		printf("maps: %s", strchr(buf, ' ') ? "has perms\n" : "bad\n");
	if (f)
		fclose(f);
	int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
	result("open fd dir", fd);
	close(fd);
	result("open /proc/self/nothing", open("/proc/self/nothing", O_RDONLY));
	result("write /proc/self/status", open("/proc/self/status", O_WRONLY));
	result("open /dev/tty", open("/dev/tty", O_RDWR));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "memfd"))
		return memfd();
	if (argc == 2 && !strcmp(argv[1], "proc"))
		return proc();
	if (argc == 2)
		return tree(argv[1]);
	fprintf(stderr, "usage: fileops DIR | memfd | proc\n");
	return 2;
}
