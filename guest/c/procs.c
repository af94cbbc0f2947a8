/* Processes for the emulator's tests (tests/emu/test_processes.py):
 *   procs fork       child exits 3; the parent reaps it: "child 3"
 *   procs pipe       a child writes through a pipe, the parent reads it to EOF
 *   procs exec       a child execs this program ("procs hello ARG"), the parent waits
 *   procs hello ARG  prints "hello ARG pid=same" (after exec: pid kept)
 *   procs vfork      vfork + _exit(7) in the child
 *   procs spawn      posix_spawn of "procs hello spawned"
 *   procs spawnfail  posix_spawn of a missing file: the child's error reaches the parent through
 *                    the memory they share (CLONE_VM|CLONE_VFORK)
 *   procs sigpipe    write to a pipe with no reader: the child dies of SIGPIPE
 *   procs tree N     N children each print their index; the parent reaps all in order of exit
 *   procs cloexec    an O_CLOEXEC pipe end is closed in the exec'd child
 *   procs segv       a child dereferences NULL: the parent sees signal 11
 *   procs run P A..  execv(P, [P, A...]) in a child: its status, or the errno of a failed exec
 *   procs spin       a child spins forever while the parent waits for it (Ctrl-C tests)
 *   procs pollwake   poll(POLLOUT, 5 ms) on a full pipe while a child reads and refills a byte
 *                    every 1 ms (a wake, never room): the poll still ends after 5 ms
 *   procs threadexec a second thread execs "procs samepid PID": the new program keeps the pid
 *   procs bomb       fork children that pause until fork fails; kill and reap them (emulated only)
 *   procs kill       SIGTERM to a child that waits in pause(); SIGUSR1 to the group, handled
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void report(pid_t pid, int status) {
    if (WIFEXITED(status))
        printf("child exited %d\n", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("child killed by %d\n", WTERMSIG(status));
    else
        printf("child ?? %#x\n", status);
    (void)pid;
}

static void *exec_from_thread(void *self) {
    char pidtext[16];
    snprintf(pidtext, sizeof pidtext, "%d", getpid());
    char *args[] = {self, "samepid", pidtext, NULL};
    execv(self, args);
    perror("execv");
    return NULL;
}

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig) {
    got_usr1 = sig;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fork";
    int status;
    if (!strcmp(mode, "hello")) {
        printf("hello %s ppid-known=%d\n", argc > 2 ? argv[2] : "", getppid() > 0);
        return 0;
    }
    if (!strcmp(mode, "fork")) {
        pid_t pid = fork();
        if (pid == 0) {
            printf("in child: pid differs %d\n", getpid() != 0);
            fflush(stdout);
            _exit(3);
        }
        pid_t got = waitpid(pid, &status, 0);
        printf("reaped the child %d\n", got == pid);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "pipe")) {
        int fds[2];
        if (pipe(fds)) { perror("pipe"); return 1; }
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            for (int i = 0; i < 3000; i++)
                dprintf(fds[1], "line %d\n", i);
            _exit(0);
        }
        close(fds[1]);
        char buf[512];
        long total = 0, n, lines = 0;
        while ((n = read(fds[0], buf, sizeof buf)) > 0) {
            total += n;
            for (long i = 0; i < n; i++) lines += buf[i] == '\n';
        }
        waitpid(pid, &status, 0);
        printf("read %ld bytes, %ld lines, last read %ld\n", total, lines, n);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "exec")) {
        pid_t pid = fork();
        if (pid == 0) {
            char *args[] = {argv[0], "hello", "from-exec", NULL};
            execve(argv[0], args, environ);
            perror("execve");
            _exit(127);
        }
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "vfork")) {
        pid_t pid = vfork();
        if (pid == 0)
            _exit(7);
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "spawn")) {
        pid_t pid;
        char *args[] = {argv[0], "hello", "spawned", NULL};
        int err = posix_spawn(&pid, argv[0], NULL, NULL, args, environ);
        if (err) { printf("posix_spawn: %s\n", strerror(err)); return 1; }
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "spawnfail")) {
        pid_t pid;
        char *args[] = {"./no-such-program", NULL};
        int err = posix_spawn(&pid, args[0], NULL, NULL, args, environ);
        printf("posix_spawn: %s\n", strerror(err));
        return 0;
    }
    if (!strcmp(mode, "sigpipe")) {
        int fds[2];
        pipe(fds);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            for (;;) write(fds[1], "x", 1);
        }
        close(fds[0]);
        close(fds[1]);
        waitpid(pid, &status, 0);
        report(pid, status);
        signal(SIGPIPE, SIG_IGN);
        pipe(fds);
        close(fds[0]);
        long r = write(fds[1], "x", 1);
        printf("ignored: write %ld errno %s\n", r, r < 0 && errno == EPIPE ? "EPIPE" : "?");
        return 0;
    }
    if (!strcmp(mode, "tree")) {
        int n = argc > 2 ? atoi(argv[2]) : 4;
        for (int i = 0; i < n; i++) {
            if (fork() == 0) {
                printf("child %d\n", i);
                fflush(stdout);
                _exit(i);
            }
        }
        int sum = 0;
        pid_t got;
        while ((got = wait(&status)) > 0)
            sum += WEXITSTATUS(status);
        printf("all reaped, sum %d, then %s\n", sum, errno == ECHILD ? "ECHILD" : "?");
        return 0;
    }
    if (!strcmp(mode, "cloexec")) {
        int fds[2];
        pipe2(fds, O_CLOEXEC);
        pid_t pid = fork();
        if (pid == 0) {
            char fdname[16];
            snprintf(fdname, sizeof fdname, "%d", fds[1]);
            char *args[] = {argv[0], "isopen", fdname, NULL};
            execve(argv[0], args, environ);
            _exit(127);
        }
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "isopen")) {
        int fd = atoi(argv[2]);
        printf("fd %d open after exec: %d\n", fd, fcntl(fd, F_GETFD) != -1);
        return 0;
    }
    if (!strcmp(mode, "segv")) {
        pid_t pid = fork();
        if (pid == 0) {
            volatile int *p = 0;
            *p = 1;
            _exit(0);
        }
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "spin")) {
        pid_t pid = fork();
        if (pid == 0)
            for (volatile long i = 0;; i++)
                ;
        waitpid(pid, &status, 0);
        return 0;
    }
    if (!strcmp(mode, "pollwake")) {
        int data[2], stop[2];
        pipe(data);
        pipe(stop);
        fcntl(stop[0], F_SETFL, O_NONBLOCK);
        fcntl(data[1], F_SETFL, O_NONBLOCK);
        char block[4096] = {0};
        while (write(data[1], block, sizeof block) > 0)
            ;                                   /* full: no room for PIPE_BUF bytes */
        pid_t pid = fork();
        if (pid == 0) {
            close(stop[1]);
            int rounds = 0;
            char c;
            while (rounds < 100 && read(stop[0], &c, 1) < 0) {
                read(data[0], &c, 1);           /* a wake for writers, not room enough */
                write(data[1], &c, 1);
                struct timespec ms = {0, 1000000};
                nanosleep(&ms, NULL);
                rounds++;
            }
            printf("child woke the poller %s\n", rounds < 20 ? "a few times" : "until the end");
            fflush(stdout);
            _exit(0);
        }
        close(stop[0]);
        struct pollfd p = {data[1], POLLOUT, 0};
        int n = poll(&p, 1, 5);
        printf("poll: %d\n", n);
        fflush(stdout);
        write(stop[1], "s", 1);
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    if (!strcmp(mode, "samepid")) {
        printf("same pid after exec from a thread: %d\n", getpid() == atoi(argv[2]));
        return 0;
    }
    if (!strcmp(mode, "threadexec")) {
        pthread_t t;
        pthread_create(&t, NULL, exec_from_thread, argv[0]);
        pthread_join(t, NULL);
        printf("not reached\n");
        return 1;
    }
    if (!strcmp(mode, "bomb")) {
        pid_t kids[4096];
        int n = 0;
        for (; n < 4096; n++) {
            pid_t pid = fork();
            if (pid < 0) {
                printf("fork failed after %d: %s\n", n, strerror(errno));
                break;
            }
            if (pid == 0)
                for (;;) pause();
            kids[n] = pid;
        }
        for (int i = 0; i < n; i++)
            kill(kids[i], SIGKILL);
        int reaped = 0;
        while (wait(&status) > 0)
            reaped += WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        printf("reaped %d\n", reaped);
        return 0;
    }
    if (!strcmp(mode, "kill")) {
        int fds[2];
        pipe(fds);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            write(fds[1], "r", 1);          /* ready */
            for (;;) pause();
        }
        char c;
        read(fds[0], &c, 1);
        printf("kill: %d\n", kill(pid, SIGTERM));
        waitpid(pid, &status, 0);
        report(pid, status);
        int r = kill(pid, 0);
        printf("kill of the reaped child: %d %s\n", r, errno == ESRCH ? "ESRCH" : "?");
        signal(SIGUSR1, on_usr1);
        setpgid(0, 0);                      /* a group of its own: kill(0) reaches no one else */
        kill(0, SIGUSR1);
        printf("group signal handled: %d\n", got_usr1);
        return 0;
    }
    if (!strcmp(mode, "run") && argc > 2) {
        pid_t pid = fork();
        if (pid == 0) {
            execv(argv[2], &argv[2]);
            printf("execv %s: %s\n", argv[2], strerror(errno));
            fflush(stdout);
            _exit(127);
        }
        waitpid(pid, &status, 0);
        report(pid, status);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
