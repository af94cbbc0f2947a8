/*
 * A worker pool (the regression suite). NWORKERS threads take NJOBS jobs from one
 * queue (capacity 2) guarded by a mutex and a condition variable; main fills it,
 * then adds one stop job per worker and joins them all. Job i belongs to worker
 * i % NWORKERS, which waits until the job at the head is its own: which thread
 * runs which job, hence every thread's call counts, does not depend on the
 * schedule, while the queue still hands work between threads. Job i computes
 * fib(FIB + i % 5) + tree(2 + i % 3, 2 + i % 2), both recursive. An even worker
 * returns from its start routine, an odd one ends by pthread_exit() from inside
 * retire() (frames that never return); either way main's pthread_join gets the
 * worker's job count.
 * Prints every result in job order, then each worker's job count, sum and exit value.
 * With "abandon", main sends no stop jobs: it waits until every worker is inside
 * its last queue_take() (every job done), prints, and returns from main
 * (exit_group) while the workers still wait there; no exit values then.
 * Usage: pool [NWORKERS [NJOBS [FIB [abandon]]]] (default 4 12 12).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QCAP 2
#define MAX_WORKERS 16
#define MAX_JOBS 256

struct job {
	long index;             /* -1: stop */
	long owner;
};

static struct job queue[QCAP];
static int qhead, qlen;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;   /* every push and take */

static long nworkers, njobs, fib_base;
static long arrivals;           /* calls of queue_take so far */
static long results[MAX_JOBS];
static long jobs_done[MAX_WORKERS], job_sum[MAX_WORKERS];

/* Defined by c/instrument_mt.c in the instrumented build, NULL otherwise. */
extern void instr_label_thread(long label) __attribute__((weak));

__attribute__((noinline)) long fib(long n)
{
	if (n < 2)
		return n;
	return fib(n - 1) + fib(n - 2);
}

/* Nodes of a complete tree of the given depth and fan-out, one call per node. */
__attribute__((noinline)) long tree(long depth, long fanout)
{
	long nodes = 1;

	if (depth == 0)
		return 1;
	for (long i = 0; i < fanout; i++)
		nodes += tree(depth - 1, fanout);
	return nodes;
}

__attribute__((noinline)) void queue_push(struct job j)
{
	pthread_mutex_lock(&lock);
	while (qlen == QCAP)
		pthread_cond_wait(&changed, &lock);
	queue[(qhead + qlen) % QCAP] = j;
	qlen++;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

__attribute__((noinline)) struct job queue_take(long worker)
{
	struct job j;

	pthread_mutex_lock(&lock);
	arrivals++;
	pthread_cond_broadcast(&changed);
	while (qlen == 0 || queue[qhead].owner != worker)
		pthread_cond_wait(&changed, &lock);
	j = queue[qhead];
	qhead = (qhead + 1) % QCAP;
	qlen--;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
	return j;
}

__attribute__((noinline)) long run_job(long i)
{
	return fib(fib_base + i % 5) + tree(2 + i % 3, 2 + i % 2);
}

__attribute__((noinline)) void retire(long self)
{
	pthread_exit((void *)jobs_done[self]);
}

__attribute__((noinline)) void *worker(void *arg)
{
	long self = (long)arg;

	if (instr_label_thread)
		instr_label_thread(self);
	for (;;) {
		struct job j = queue_take(self);

		if (j.index < 0)
			break;
		results[j.index] = run_job(j.index);
		jobs_done[self]++;
		job_sum[self] += results[j.index];
	}
	if (self % 2)
		retire(self);
	return (void *)jobs_done[self];
}

int main(int argc, char **argv)
{
	pthread_t threads[MAX_WORKERS];
	void *exits[MAX_WORKERS];
	int abandon;

	nworkers = argc > 1 ? strtol(argv[1], NULL, 10) : 4;
	njobs = argc > 2 ? strtol(argv[2], NULL, 10) : 12;
	fib_base = argc > 3 ? strtol(argv[3], NULL, 10) : 12;
	abandon = argc > 4 && !strcmp(argv[4], "abandon");
	if (nworkers < 1 || nworkers > MAX_WORKERS || njobs < 0 || njobs > MAX_JOBS) {
		fprintf(stderr, "usage: pool [NWORKERS (1-%d) [NJOBS (0-%d) [FIB]]]\n",
			MAX_WORKERS, MAX_JOBS);
		return 2;
	}
	for (long w = 0; w < nworkers; w++) {
		if (pthread_create(&threads[w], NULL, worker, (void *)w)) {
			perror("pthread_create");
			return 1;
		}
	}
	for (long i = 0; i < njobs; i++)
		queue_push((struct job){ i, i % nworkers });
	if (abandon) {
		pthread_mutex_lock(&lock);
		/* Each worker calls queue_take once per job and once more: wait until
		 * all of them are inside their last call. */
		while (arrivals < njobs + nworkers)
			pthread_cond_wait(&changed, &lock);
		pthread_mutex_unlock(&lock);
	} else {
		for (long w = 0; w < nworkers; w++)
			queue_push((struct job){ -1, w });
		for (long w = 0; w < nworkers; w++)
			pthread_join(threads[w], &exits[w]);
	}
	for (long i = 0; i < njobs; i++)
		printf("job %ld: %ld\n", i, results[i]);
	for (long w = 0; w < nworkers; w++) {
		printf("worker %ld: %ld jobs, sum %ld", w, jobs_done[w], job_sum[w]);
		if (!abandon)
			printf(", exit %ld", (long)exits[w]);
		printf("\n");
	}
	return 0;
}
