/*
 * A workload whose state is in files of its root filesystem, for the rootfs sync: every
 * 50 ms tick it counts in memory and writes the count to /dev/shm/count, and
 *   - appends "line N" to /var/app.log (opening and closing it each time);
 *   - holds /var/run.lock, created at start, under flock(LOCK_EX), and writes N into it
 *     in place (the same size each time: "%010d");
 *   - keeps N in /var/map.dat through a shared writable mapping (no msync, no write());
 * and before each tick checks that the files still say what it wrote last: the log's
 * last line, the lock file, the mapping. A migration that lost a write shows as
 * "LOST ..." in /dev/shm/status (else "ok"). No forks: one process, one loop.
 *
 *   filewriter
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return;
	if (write(fd, text, strlen(text)) < 0) {
		/* the next tick writes again */
	}
	close(fd);
}

static void lost(const char *what, long want, long got)
{
	char s[128];
	snprintf(s, sizeof s, "LOST %s: want %ld, got %ld\n", what, want, got);
	put("/dev/shm/status", s);
	exit(1);
}

/* The number on the last line of the log ("line N"), or -1. */
static long last_line(void)
{
	char buf[64];
	int fd = open("/var/app.log", O_RDONLY);
	if (fd < 0)
		return -1;
	off_t end = lseek(fd, 0, SEEK_END);
	off_t from = end > 32 ? end - 32 : 0;
	ssize_t n = pread(fd, buf, sizeof buf - 1, from);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	char *l = strrchr(buf, '\n');
	l = l ? l + 1 : buf;
	long v;
	return sscanf(l, "line %ld", &v) == 1 ? v : -1;
}

int main(void)
{
	int lock = open("/var/run.lock", O_RDWR | O_CREAT, 0644);
	if (lock < 0 || flock(lock, LOCK_EX) != 0) {
		put("/dev/shm/status", "cannot lock /var/run.lock\n");
		return 1;
	}
	int mf = open("/var/map.dat", O_RDWR | O_CREAT, 0644);
	if (mf < 0 || ftruncate(mf, 4096) != 0) {
		put("/dev/shm/status", "cannot make /var/map.dat\n");
		return 1;
	}
	volatile long *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mf, 0);
	if (map == MAP_FAILED) {
		put("/dev/shm/status", "cannot map /var/map.dat\n");
		return 1;
	}
	close(mf);
	put("/var/app.log", "");
	put("/dev/shm/status", "ok\n");
	struct timespec tick = { 0, 50 * 1000 * 1000 };
	for (long i = 1;; i++) {
		long prev = i - 1;
		if (prev > 0) {
			long got = last_line();
			if (got != prev)
				lost("/var/app.log last line", prev, got);
			char b[16] = { 0 };
			if (pread(lock, b, 10, 0) != 10 || atol(b) != prev)
				lost("/var/run.lock", prev, atol(b));
			if (*map != prev)
				lost("/var/map.dat", prev, *map);
		}
		char line[40];
		snprintf(line, sizeof line, "line %ld\n", i);
		int fd = open("/var/app.log", O_WRONLY | O_APPEND);
		if (fd < 0 || write(fd, line, strlen(line)) < 0)
			lost("append to /var/app.log", i, -1);
		close(fd);
		char v[16];
		snprintf(v, sizeof v, "%010ld", i);
		if (pwrite(lock, v, 10, 0) != 10)
			lost("write /var/run.lock", i, -1);
		*map = i;
		snprintf(line, sizeof line, "%ld\n", i);
		put("/dev/shm/count", line);
		nanosleep(&tick, NULL);
	}
}
