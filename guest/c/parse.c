/*
 * A probed function that fails on some inputs: parse_port() returns a TCP
 * port or a negative errno (-EINVAL for junk, -ERANGE for out of range).
 * Exit status: the number of inputs that failed.
 */
#include <errno.h>
#include <stdio.h>

__attribute__((noinline)) long parse_port(const char *s)
{
	long value = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		value = value * 10 + (*s - '0');
		if (value > 65535)
			return -ERANGE;
	}
	return value ? value : -ERANGE;
}

int main(int argc, char **argv)
{
	static const char *defaults[] = { "80", "8080", "http", "", "65535", "65536", "0", "443" };
	const char **inputs = (const char **)argv + 1;
	int n = argc - 1, failed = 0;

	if (n == 0) {
		inputs = defaults;
		n = sizeof defaults / sizeof defaults[0];
	}
	for (int i = 0; i < n; i++) {
		long port = parse_port(inputs[i]);
		if (port < 0) {
			printf("%-8s error %ld\n", inputs[i], port);
			failed++;
		} else {
			printf("%-8s port %ld\n", inputs[i], port);
		}
	}
	return failed;
}
