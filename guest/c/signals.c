/* Signal delivery scenarios (tests/emu/test_signals.py): each subcommand prints what it
 * saw and exits; the emulated run must print and exit exactly as the native one. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <errno.h>

static volatile sig_atomic_t hits, depth, maxdepth;
static char order[64];
static volatile int norder;
static sigjmp_buf env;
static volatile void *expect_addr;
static volatile int seen_code, seen_addr_ok, seen_signo;

static void note(char c) { if (norder < 63) order[norder++] = c; }

static void on_usr1(int sig) { (void)sig; hits++; note('1'); }

static void handle(int sig, void (*fn)(int), int flags, int masked) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (masked) sigaddset(&sa.sa_mask, masked);
    sigaction(sig, &sa, NULL);
}

static void set_info(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static int cmd_handler(void) {
    handle(SIGUSR1, on_usr1, 0, 0);
    raise(SIGUSR1);
    kill(getpid(), SIGUSR1);
    printf("hits=%d order=%s\n", (int)hits, order);
    return 3;
}

static void on_info(int sig, siginfo_t *si, void *uc) {
    ucontext_t *u = uc;
    seen_signo = si->si_signo;
    seen_code = si->si_code;
    seen_addr_ok = si->si_pid == getpid() && sig == si->si_signo
        && sigismember(&u->uc_sigmask, SIGUSR2) == 1;
}

static int cmd_siginfo(void) {
    sigset_t set;
    set_info(SIGUSR1, on_info, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    kill(getpid(), SIGUSR1);
    printf("kill: signo=%d code=%d pid_ok_and_mask=%d\n", seen_signo, seen_code, seen_addr_ok);
    raise(SIGUSR1);
    printf("raise: signo=%d code=%d pid_ok_and_mask=%d\n", seen_signo, seen_code, seen_addr_ok);
    return 0;
}

static void on_outer(int sig) { (void)sig; note('a'); raise(SIGUSR2); note('b'); }
static void on_inner(int sig) { (void)sig; note('2'); }
static volatile int calls;
static void on_nodefer(int sig) {
    depth++;
    if (depth > maxdepth) maxdepth = depth;
    note('n');
    if (++calls < 3) raise(sig);
    note('e');
    depth--;
}

static int cmd_mask(void) {
    handle(SIGUSR1, on_outer, 0, SIGUSR2);     /* sa_mask holds SIGUSR2 back */
    handle(SIGUSR2, on_inner, 0, 0);
    raise(SIGUSR1);
    note('|');
    handle(SIGUSR1, on_outer, 0, 0);           /* no mask: SIGUSR2 nests */
    raise(SIGUSR1);
    note('|');
    handle(SIGUSR1, on_nodefer, SA_NODEFER, 0);
    raise(SIGUSR1);
    note('|');
    handle(SIGUSR1, on_nodefer, 0, 0);         /* without SA_NODEFER: deferred, runs after */
    raise(SIGUSR1);
    printf("order=%s maxdepth=%d\n", order, (int)maxdepth);
    return 0;
}

static int cmd_resethand(void) {
    handle(SIGUSR1, on_usr1, SA_RESETHAND, 0);
    raise(SIGUSR1);
    printf("first: hits=%d\n", (int)hits);
    fflush(stdout);
    raise(SIGUSR1);                          /* default action now: terminate */
    printf("not reached\n");
    return 0;
}

static int cmd_procmask(void) {
    sigset_t set, pend;
    handle(SIGUSR1, on_usr1, 0, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    raise(SIGUSR1);                          /* a standard signal is pending once */
    note('r');
    sigpending(&pend);
    printf("pending=%d hits=%d\n", sigismember(&pend, SIGUSR1), (int)hits);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    note('u');
    sigpending(&pend);
    printf("pending=%d hits=%d order=%s\n", sigismember(&pend, SIGUSR1), (int)hits, order);
    return 0;
}

static void on_alarm(int sig) { (void)sig; hits++; note('A'); }

static int cmd_suspend(void) {
    sigset_t set, empty;
    struct itimerval it = {{0, 0}, {0, 2000}};
    handle(SIGUSR1, on_usr1, 0, 0);
    handle(SIGALRM, on_alarm, 0, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    sigemptyset(&empty);
    int r = sigsuspend(&empty);              /* the pending SIGUSR1 at once */
    printf("sigsuspend=%d errno=%d order=%s\n", r, errno, order);
    setitimer(ITIMER_REAL, &it, NULL);
    r = sigsuspend(&empty);                  /* waits for SIGALRM */
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("sigsuspend=%d errno=%d order=%s mask_back=%d\n", r, errno, order,
           sigismember(&now, SIGALRM));
    return 0;
}

static int cmd_pause(void) {
    struct itimerval it = {{0, 0}, {0, 3000}};
    handle(SIGALRM, on_alarm, 0, 0);
    setitimer(ITIMER_REAL, &it, NULL);
    int r = pause();
    printf("pause=%d errno=%d hits=%d\n", r, errno, (int)hits);
    alarm(5);
    printf("alarm left=%u\n", alarm(0));
    return 0;
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    seen_signo = sig;
    seen_code = si->si_code;
    seen_addr_ok = si->si_addr == expect_addr;
    siglongjmp(env, 1);
}

static int cmd_segv(void) {
    set_info(SIGSEGV, on_fault, 0);
    char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int round = 0; round < 2; round++) {
        expect_addr = (void *)0x18;
        if (sigsetjmp(env, 1) == 0) {
            *(volatile int *)0x18 = 1;
            printf("no fault\n");
        }
        printf("unmapped: signo=%d code=%d addr_ok=%d\n", seen_signo, seen_code, seen_addr_ok);
        expect_addr = ro + 8;
        if (sigsetjmp(env, 1) == 0) {
            *(volatile char *)(ro + 8) = 1;
            printf("no fault\n");
        }
        printf("readonly: signo=%d code=%d addr_ok=%d\n", seen_signo, seen_code, seen_addr_ok);
    }
    return 0;
}

static int cmd_fpe(void) {
    volatile int zero = 0, x = 7;
    set_info(SIGFPE, on_fault, 0);
    expect_addr = NULL;
    if (sigsetjmp(env, 1) == 0) {
        x = x / zero;
        printf("no fault %d\n", x);
    }
    printf("fpe: signo=%d code=%d\n", seen_signo, seen_code);
    return 0;
}

static volatile int spin_flag;
static void on_alarm_flag(int sig) { (void)sig; spin_flag = 1; }

static int cmd_alarm(void) {
    struct itimerval it = {{0, 0}, {0, 1000}};
    handle(SIGALRM, on_alarm_flag, 0, 0);
    setitimer(ITIMER_REAL, &it, NULL);
    unsigned long spins = 0;
    while (!spin_flag) spins++;
    printf("alarm fired after spinning: %d\n", spins > 0);
    return 0;
}

static int cmd_term(void) { raise(SIGTERM); return 0; }
static int cmd_abort(void) { abort(); }
static int cmd_chld(void) {
    raise(SIGCHLD);
    signal(SIGUSR1, SIG_IGN);
    raise(SIGUSR1);
    printf("still here\n");
    return 0;
}

static char altbuf[1 << 16];
static volatile int on_alt;

static void on_alt_handler(int sig) {
    char local;
    stack_t cur;
    (void)sig;
    sigaltstack(NULL, &cur);
    on_alt = (&local >= altbuf && &local < altbuf + sizeof altbuf) + 2 * (cur.ss_flags == SS_ONSTACK);
}

static void on_overflow(int sig) { (void)sig; siglongjmp(env, 1); }

#pragma GCC diagnostic ignored "-Winfinite-recursion"
static int recurse(volatile char *p) {
    volatile char buf[4096];
    buf[0] = p ? p[0] : 0;
    return recurse(buf) + buf[1];
}

static int cmd_altstack(void) {
    stack_t ss = {.ss_sp = altbuf, .ss_size = sizeof altbuf, .ss_flags = 0};
    stack_t old;
    sigaltstack(&ss, &old);
    printf("old disabled=%d\n", old.ss_flags == SS_DISABLE);
    handle(SIGUSR1, on_alt_handler, SA_ONSTACK, 0);
    raise(SIGUSR1);
    printf("on alt stack=%d\n", on_alt);
    handle(SIGUSR1, on_alt_handler, 0, 0);
    raise(SIGUSR1);
    printf("without SA_ONSTACK=%d\n", on_alt);
    handle(SIGSEGV, on_overflow, SA_ONSTACK, 0);
    if (sigsetjmp(env, 1) == 0)
        recurse(NULL);
    printf("recovered from stack overflow\n");
    return 0;
}

static volatile pid_t handler_tid;
static volatile int ready, go;
static pid_t worker_tid;

static void on_thread_sig(int sig) { (void)sig; handler_tid = (pid_t)syscall(SYS_gettid); }

static void *worker(void *arg) {
    (void)arg;
    worker_tid = (pid_t)syscall(SYS_gettid);
    ready = 1;
    while (!handler_tid) sched_yield();
    return NULL;
}

static int cmd_threads(void) {
    pthread_t t;
    sigset_t set;
    handle(SIGUSR1, on_thread_sig, 0, 0);
    pthread_create(&t, NULL, worker, NULL);
    while (!ready) sched_yield();
    pthread_kill(t, SIGUSR1);                /* tgkill to the worker */
    while (!handler_tid) sched_yield();
    printf("tgkill: in worker=%d\n", handler_tid == worker_tid);
    pthread_join(t, NULL);
    handler_tid = 0;
    ready = 0;
    pthread_create(&t, NULL, worker, NULL);
    while (!ready) sched_yield();
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);  /* the main thread blocks it: the worker gets it */
    kill(getpid(), SIGUSR1);
    while (!handler_tid) sched_yield();
    printf("kill: in worker=%d\n", handler_tid == worker_tid);
    pthread_join(t, NULL);
    return 0;
}

int main(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(void); } cmds[] = {
        {"handler", cmd_handler}, {"siginfo", cmd_siginfo}, {"mask", cmd_mask},
        {"resethand", cmd_resethand}, {"procmask", cmd_procmask}, {"suspend", cmd_suspend},
        {"pause", cmd_pause}, {"segv", cmd_segv}, {"fpe", cmd_fpe}, {"alarm", cmd_alarm},
        {"term", cmd_term}, {"abort", cmd_abort}, {"chld", cmd_chld},
        {"altstack", cmd_altstack}, {"threads", cmd_threads},
    };
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return 2;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn();
    return 2;
}
