/*
 * C++ exceptions and backtrace() through kretprobed frames
 * (tests/probes/test_invisible.py). The unwinder reads return addresses from
 * the stack: under a kretprobe they are the trampoline's, which it must not see.
 * Prints what each call returned or threw, a destructor run by the unwinding
 * (a cleanup: _Unwind_Resume), a rethrow, and the return addresses backtrace()
 * sees (non-PIE builds: the same on every run). Exit status 0.
 */
#include <cstdio>
#include <execinfo.h>
#include <stdexcept>

struct Noisy {
	long n;
	~Noisy() { std::printf("  ~Noisy(%ld)\n", n); }
};

__attribute__((noinline)) long thrower(long n)
{
	if (n > 2)
		throw std::runtime_error("too big");
	return n * 2;
}

__attribute__((noinline)) long middle(long n)
{
	Noisy guard{n};
	return thrower(n) + 1;
}

__attribute__((noinline)) long recurse(long depth, long n)
{
	if (depth == 0)
		return middle(n);
	return recurse(depth - 1, n) + 1;
}

__attribute__((noinline)) long rethrower(long n)
{
	try {
		return recurse(2, n);
	} catch (const std::runtime_error &) {
		std::printf("  rethrowing %ld\n", n);
		throw;
	}
}

__attribute__((noinline)) int trace(void)
{
	void *frames[8];
	int depth = backtrace(frames, 8);

	for (int i = 0; i < depth; i++)
		std::printf("  frame %d: %p\n", i, frames[i]);
	return depth;
}

__attribute__((noinline)) int traced(long n)
{
	return n ? traced(n - 1) : trace();
}

int main()
{
	for (long i = 1; i < 5; i++) {
		try {
			std::printf("rethrower(%ld) = %ld\n", i, rethrower(i));
		} catch (const std::exception &e) {
			std::printf("rethrower(%ld) threw %s\n", i, e.what());
		}
	}
	std::printf("backtrace depth %d\n", traced(2));
	return 0;
}
