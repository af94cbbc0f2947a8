/* String and heap work: split, duplicate, sort, join, format, realloc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

static const char text[] =
	"the quick brown fox jumps over the lazy dog while the cat sleeps "
	"and a kprobe counts every call that the emulator makes on the way";

static int by_string(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

__attribute__((noinline)) char *shout(const char *word)
{
	size_t n = strlen(word);
	char *out = malloc(n + 2);

	for (size_t i = 0; i < n; i++)
		out[i] = (char)toupper((unsigned char)word[i]);
	out[n] = '!';
	out[n + 1] = '\0';
	return out;
}

int main(void)
{
	char *copy = strdup(text);
	char **words = NULL;
	size_t count = 0, cap = 0;

	for (char *w = strtok(copy, " "); w; w = strtok(NULL, " ")) {
		if (count == cap) {
			cap = cap ? cap * 2 : 2;
			words = realloc(words, cap * sizeof *words);
		}
		words[count++] = strdup(w);
	}
	qsort(words, count, sizeof *words, by_string);

	size_t total = 1;
	for (size_t i = 0; i < count; i++)
		total += strlen(words[i]) + 1;
	char *joined = calloc(total, 1);
	for (size_t i = 0; i < count; i++) {
		strcat(joined, words[i]);
		strcat(joined, i + 1 < count ? "," : "");
	}
	printf("%zu words, sorted: %s\n", count, joined);

	for (size_t i = 0; i < count; i++) {
		char *loud = shout(words[i]);
		char line[64];
		snprintf(line, sizeof line, "%-8s|%5zu|%08x|%.3f", loud, strlen(loud),
			 (unsigned)(strlen(words[i]) * 2654435761u), (double)i / 3.0);
		puts(line);
		free(loud);
		free(words[i]);
	}
	char *big = malloc(1 << 20);         /* large enough for mmap-backed malloc */
	memset(big, 'x', 1 << 20);
	big = realloc(big, 3 << 20);
	printf("big[%d] = %c, len %zu\n", (1 << 20) - 1, big[(1 << 20) - 1], strnlen(big, 1 << 20));
	free(big);
	free(joined);
	free(words);
	free(copy);
	return (int)(count % 7);
}
