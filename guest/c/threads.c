/* Thread scenarios for the scheduler's tests: `threads CASE`.
 *   join N       N threads each compute fib(20 + i % 3) and are joined; prints the results
 *   deadlock     two threads take two mutexes in opposite orders: never ends
 *   timedwait    a condition wait with a 50 ms timeout that nobody signals: ETIMEDOUT
 *   exit-inside  a thread calls pthread_exit from inside probed(): that call never returns
 *   detached     main exits (pthread_exit) before its detached thread finishes; status 7
 *   sleep        a thread sleeps 2 ms then raises a flag main polls with 100 us sleeps
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static void *fib_thread(void *arg) { return (void *)fib((long)arg); }

static int join(int n) {
    pthread_t t[64];
    if (n < 1 || n > 64) return 2;
    for (long i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fib_thread, (void *)(20 + i % 3))) return 3;
    for (int i = 0; i < n; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d: fib = %ld\n", i, (long)r);
    }
    return 0;
}

static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER, b = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both;

static void *lock_ba(void *arg) {
    (void)arg;
    pthread_mutex_lock(&b);
    pthread_barrier_wait(&both);
    pthread_mutex_lock(&a);
    return NULL;
}

static int deadlock(void) {
    pthread_t t;
    pthread_barrier_init(&both, NULL, 2);
    pthread_create(&t, NULL, lock_ba, NULL);
    pthread_mutex_lock(&a);
    pthread_barrier_wait(&both);
    pthread_mutex_lock(&b);
    puts("unreachable");
    return 1;
}

static int timedwait(void) {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 50 * 1000 * 1000;
    if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
    pthread_mutex_lock(&mu);
    int rc = pthread_cond_timedwait(&cv, &mu, &until);
    pthread_mutex_unlock(&mu);
    printf("timedwait: %s\n", rc == ETIMEDOUT ? "ETIMEDOUT" : strerror(rc));
    return rc == ETIMEDOUT ? 0 : 1;
}

/* gcc 12 does not see that pthread_exit ends the recursion. */
#pragma GCC diagnostic ignored "-Winfinite-recursion"
__attribute__((noinline)) long probed(long depth) {
    if (depth > 0) return probed(depth - 1) + 1;
    pthread_exit((void *)42);
}

static void *exit_thread(void *arg) { return (void *)probed((long)arg); }

static int exit_inside(void) {
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, exit_thread, (void *)3);
    pthread_join(t, &r);
    printf("exit-inside: %ld\n", (long)r);
    return 0;
}

static void *late(void *arg) {
    (void)arg;
    printf("detached: fib(18) = %ld\n", fib(18));
    fflush(stdout);
    exit(7);
}

static int detached(void) {
    pthread_t t;
    pthread_create(&t, NULL, late, NULL);
    pthread_detach(t);
    pthread_exit(NULL);
}

static volatile int raised;

static void *sleep_then_raise(void *arg) {
    (void)arg;
    usleep(2000);
    raised = 1;
    return NULL;
}

static int sleeper(void) {
    pthread_t t;
    int polls = 0;
    pthread_create(&t, NULL, sleep_then_raise, NULL);
    while (!raised) {
        usleep(100);
        polls++;
    }
    pthread_join(t, NULL);
    printf("sleep: raised after %s polls\n", polls >= 10 ? "10 or more" : "fewer than 10");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "join")) return join(argc > 2 ? atoi(argv[2]) : 4);
    if (argc >= 2 && !strcmp(argv[1], "deadlock")) return deadlock();
    if (argc >= 2 && !strcmp(argv[1], "timedwait")) return timedwait();
    if (argc >= 2 && !strcmp(argv[1], "exit-inside")) return exit_inside();
    if (argc >= 2 && !strcmp(argv[1], "detached")) return detached();
    if (argc >= 2 && !strcmp(argv[1], "sleep")) return sleeper();
    fprintf(stderr, "usage: threads join N|deadlock|timedwait|exit-inside|detached|sleep\n");
    return 2;
}
