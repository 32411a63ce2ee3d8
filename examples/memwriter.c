/*
 * A workload for pre-copy: it keeps SIZE_MIB of memory and rewrites a steady RATE_KIB
 * of it per second, page by page, round the buffer. Every page carries its index and
 * how often it was rewritten, and every 100 ms tick the program checks all pages: it
 * writes the tick count to /dev/shm/count and "ok" or "CORRUPT page N" to
 * /dev/shm/status (a tmpfs that moves with the container), so a
 * migration that lost or mixed memory shows. No forks, no sleeps in a child: only its
 * own pages get dirty.
 *
 *   memwriter SIZE_MIB RATE_KIB_PER_S [whole]
 *
 * By default a rewrite touches one word of the page: dirtying costs almost no CPU. With
 * "whole" it rewrites the whole page, as an application computing its data does: the
 * dirty rate then follows the CPU the program gets (what auto-converge's throttle acts on).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define SEED 0x9e3779b97f4a7c15ULL

/*
 * Replaces PATH's content whole: written beside it, then renamed over it, so that a
 * reader never sees it empty (truncated and not yet written), as it did once in ~30 reads
 * under TCG.
 */
static void put(const char *path, const char *text)
{
	char tmp[256];
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	/* A short write keeps the old content: the next tick writes again. */
	if (n == (ssize_t)strlen(text))
		rename(tmp, path);
}

int main(int argc, char **argv)
{
	if (argc != 3 && !(argc == 4 && strcmp(argv[3], "whole") == 0)) {
		fprintf(stderr, "usage: memwriter SIZE_MIB RATE_KIB_PER_S [whole]\n");
		return 2;
	}
	int whole = argc == 4;
	size_t pages = (size_t)atol(argv[1]) * 1024 * 1024 / PAGE;
	size_t per_tick = (size_t)atol(argv[2]) / 4 / 10; /* pages per 100 ms */
	uint8_t *buf = malloc(pages * PAGE);
	uint32_t *version = calloc(pages, sizeof(uint32_t));
	if (!buf || !version || pages == 0) {
		fprintf(stderr, "memwriter: cannot allocate\n");
		return 1;
	}
	for (size_t i = 0; i < pages; i++) {
		uint64_t word = (i ^ SEED);
		memset(buf + i * PAGE, (int)(i & 0xff), PAGE);
		memcpy(buf + i * PAGE, &word, sizeof(word));
	}
	size_t cursor = 0;
	char text[64];
	struct timespec tick = { 0, 100 * 1000 * 1000 };
	for (unsigned long t = 1;; t++) {
		for (size_t k = 0; k < per_tick; k++) {
			size_t i = cursor;
			cursor = (cursor + 1) % pages;
			version[i]++;
			uint64_t word = (i ^ SEED) + ((uint64_t)version[i] << 40);
			if (whole)
				memset(buf + i * PAGE, (int)(i & 0xff), PAGE);
			memcpy(buf + i * PAGE, &word, sizeof(word));
		}
		for (size_t i = 0; i < pages; i++) {
			uint64_t word;
			memcpy(&word, buf + i * PAGE, sizeof(word));
			if (word != (i ^ SEED) + ((uint64_t)version[i] << 40) || buf[i * PAGE + PAGE - 1] != (uint8_t)(i & 0xff)) {
				snprintf(text, sizeof(text), "CORRUPT page %zu\n", i);
				put("/dev/shm/status", text);
				break;
			}
			if (i == pages - 1)
				put("/dev/shm/status", "ok\n");
		}
		snprintf(text, sizeof(text), "%lu\n", t);
		put("/dev/shm/count", text);
		nanosleep(&tick, NULL);
	}
}
