/* SPDX-License-Identifier: MIT */
/*
 * upcctl-stats.c - upcctl stats and upcctl top: read the counters a live
 * process's caches publish in /dev/shm/upcache.<pid>.<n> (lib/publish.c,
 * layout in lib/stats-shm.h), without stopping or asking the process.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <upcache.h>
#include "stats-shm.h"
#include "upcctl.h"

struct snap {
	struct upc_shm s;
	char comm[32];
};

static uint64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Copy one published file consistently (a seqlock read).  Returns 0 or -errno. */
static int snap_read(const char *path, struct snap *out)
{
	struct stat st;
	const struct upc_shm *m;
	int fd, ret = -EAGAIN;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct upc_shm)) {
		close(fd);
		return -EPROTO;
	}
	m = mmap(NULL, sizeof(*m), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -errno;
	if (m->magic != UPC_SHM_MAGIC || m->version != UPC_SHM_VERSION || m->size != sizeof(*m)) {
		munmap((void *)m, sizeof(*m));
		return -EPROTO;
	}
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t s1 = atomic_load_explicit(&m->seq, memory_order_acquire), s2;

		if (s1 & 1) {
			usleep(100);
			continue;
		}
		memcpy(&out->s, m, sizeof(*m));
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&m->seq, memory_order_acquire);
		if (s1 == s2) {
			ret = 0;
			break;
		}
	}
	munmap((void *)m, sizeof(*m));
	return ret;
}

static void comm_of(int pid, char *buf, size_t len)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	buf[0] = '\0';
	f = fopen(path, "re");
	if (f) {
		if (fgets(buf, (int)len, f))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
}

/* Every cache published by @pid (0: by every live process).  Returns the count; *@out is malloc'ed. */
static int snap_all(int pid, struct snap **out)
{
	struct snap *v = NULL;
	struct dirent *de;
	int n = 0, cap = 0;
	DIR *d = opendir(UPC_SHM_DIR);

	*out = NULL;
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char path[sizeof(UPC_SHM_DIR) + 256 + 1];
		unsigned int no;
		int p;

		if (sscanf(de->d_name, UPC_SHM_PREFIX "%d.%u", &p, &no) != 2 || (pid && p != pid))
			continue;
		if (kill(p, 0) < 0 && errno == ESRCH)
			continue;	/* left by a process that died */
		if (n == cap) {
			struct snap *nv;

			cap = cap ? cap * 2 : 8;
			nv = realloc(v, (size_t)cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		snprintf(path, sizeof(path), "%s/%s", UPC_SHM_DIR, de->d_name);
		if (snap_read(path, &v[n]) == 0) {
			comm_of(p, v[n].comm, sizeof(v[n].comm));
			n++;
		}
	}
	closedir(d);
	*out = v;
	return n;
}

static int snap_cmp(const void *a, const void *b)
{
	const struct snap *x = a, *y = b;

	if (x->s.pid != y->s.pid)
		return x->s.pid < y->s.pid ? -1 : 1;
	return x->s.cache_no < y->s.cache_no ? -1 : x->s.cache_no > y->s.cache_no;
}

const char *upcctl_mib(uint64_t bytes, char *buf, size_t len)
{
	if (bytes >= (1ULL << 30))
		snprintf(buf, len, "%.1fG", (double)bytes / (1 << 30));
	else if (bytes >= (1ULL << 20))
		snprintf(buf, len, "%.1fM", (double)bytes / (1 << 20));
	else
		snprintf(buf, len, "%.0fK", (double)bytes / 1024);
	return buf;
}

void upcctl_json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

#define STAT_FIELDS(X) \
	X(pages_cached) X(pages_dirty) X(pages_writeback) X(pages_pinned) X(pages_active) \
	X(faults_missing) X(faults_wp) X(faults_minor) X(fill_ios) X(pages_filled) X(ra_pages) \
	X(ra_max_window) X(wp_calls) X(wb_ios) X(pages_written) X(bytes_written) X(syncs) \
	X(wb_errors) X(read_errors) X(pages_evicted) X(meta_bytes) X(reclaim_passes) \
	X(wb_gap_pages) X(evictions_undone) X(zap_wait_ms) X(dirty_wait_ms)

/* ,"name":value for every counter of @st, under its upc_stats(3) name */
void upcctl_stats_json_fields(const struct upc_stats *st)
{
#define X(f) printf(",\"%s\":%" PRIu64, #f, (uint64_t)st->f);
	STAT_FIELDS(X)
#undef X
}

/*
 * The counters of @st as "upcctl stats" prints them, after its header line:
 * @ra_hits < 0 when the source has none (upcd's struct upc_stats), @note
 * after the first line's mappings.
 */
void upcctl_stats_text(const struct upc_stats *st, int64_t ra_hits, const char *note)
{
	char b1[32], b2[32], hits[48] = "";

	if (ra_hits >= 0)
		snprintf(hits, sizeof(hits), ", %" PRIu64 " hits", (uint64_t)ra_hits);
	printf("  tracking %s, memory limit %s, %u files, %u mappings%s\n",
	       st->track_mode == UPC_TRACK_ASYNC ? "asynchronous" : "synchronous",
	       upcctl_mib(st->mem_limit, b1, sizeof(b1)), st->nr_files, st->nr_mappings, note);
	printf("  pages      cached %" PRIu64 " (%s)  dirty %" PRIu64 "  writeback %" PRIu64
	       "  pinned %" PRIu64 "  active %" PRIu64 "\n",
	       (uint64_t)st->pages_cached, upcctl_mib(st->pages_cached * 4096, b2, sizeof(b2)),
	       (uint64_t)st->pages_dirty, (uint64_t)st->pages_writeback, (uint64_t)st->pages_pinned,
	       (uint64_t)st->pages_active);
	printf("  faults     missing %" PRIu64 "  write-protect %" PRIu64 "  minor %" PRIu64 "\n",
	       (uint64_t)st->faults_missing, (uint64_t)st->faults_wp, (uint64_t)st->faults_minor);
	printf("  reads      %" PRIu64 " I/Os, %" PRIu64 " pages; readahead %" PRIu64 " pages%s, largest window %" PRIu64
	       "\n",
	       (uint64_t)st->fill_ios, (uint64_t)st->pages_filled, (uint64_t)st->ra_pages, hits,
	       (uint64_t)st->ra_max_window);
	printf("  write-back %" PRIu64 " pages in %" PRIu64 " I/Os (%" PRIu64 " bytes, %" PRIu64
	       " clean gap pages among them), %" PRIu64 " write-protect calls, %" PRIu64 " fdatasync\n",
	       (uint64_t)st->pages_written, (uint64_t)st->wb_ios, (uint64_t)st->bytes_written,
	       (uint64_t)st->wb_gap_pages, (uint64_t)st->wp_calls, (uint64_t)st->syncs);
	printf("  reclaim    %" PRIu64 " pages evicted (%" PRIu64 " undone), %" PRIu64 " passes, %" PRIu64
	       " ms waiting for zaps; metadata %" PRIu64 " bytes\n",
	       (uint64_t)st->pages_evicted, (uint64_t)st->evictions_undone, (uint64_t)st->reclaim_passes,
	       (uint64_t)st->zap_wait_ms, (uint64_t)st->meta_bytes);
	printf("  errors     write-back %" PRIu64 ", read %" PRIu64 "; writers waited %" PRIu64
	       " ms at their dirty limit\n",
	       (uint64_t)st->wb_errors, (uint64_t)st->read_errors, (uint64_t)st->dirty_wait_ms);
}

static void print_json(const struct snap *v, int n, uint64_t now)
{
	printf("{\"pid\":%d,\"caches\":[", n ? v[0].s.pid : 0);
	for (int i = 0; i < n; i++) {
		const struct upc_shm *s = &v[i].s;

		printf("%s{\"cache\":%u,\"command\":", i ? "," : "", s->cache_no);
		upcctl_json_str(v[i].comm);
		printf(",\"age_ms\":%" PRIu64 ",\"track_mode\":\"%s\",\"mem_limit\":%" PRIu64
		       ",\"nr_files\":%u,\"nr_mappings\":%u,\"ra_hits\":%" PRIu64 ",\"debug\":%u",
		       now > s->updated_ms ? now - s->updated_ms : 0,
		       s->st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync", (uint64_t)s->st.mem_limit,
		       s->st.nr_files, s->st.nr_mappings, s->ra_hits, s->debug);
		upcctl_stats_json_fields(&s->st);
		printf(",\"files\":[");
		for (uint32_t j = 0; j < s->nr_files_listed && j < UPC_SHM_FILES; j++) {
			const struct upc_shm_file *f = &s->files[j];

			printf("%s{\"path\":", j ? "," : "");
			upcctl_json_str(f->path);
			printf(",\"dev\":%" PRIu64 ",\"ino\":%" PRIu64 ",\"size\":%" PRIu64 ",\"cached\":%" PRIu64
			       ",\"dirty\":%" PRIu64 ",\"writeback\":%" PRIu64 ",\"pinned\":%" PRIu64
			       ",\"active\":%" PRIu64 ",\"mappings\":%u}",
			       f->dev, f->ino, f->size, f->cached, f->dirty, f->writeback, f->pinned, f->active,
			       f->mappings);
		}
		printf("],\"backtraces\":[");
		for (uint32_t j = 0; j < s->nr_bts && j < UPC_SHM_BTS; j++) {
			const struct upc_shm_bt *b = &s->bts[j];

			printf("%s{\"id\":%" PRIu64 ",\"ino\":%" PRIu64 ",\"page\":%" PRIu64 ",\"tid\":%u"
			       ",\"when_ms\":%" PRIu64 ",\"frames\":[",
			       j ? "," : "", b->id, b->ino, b->pgoff, b->tid, b->when_ms);
			for (uint32_t k = 0; k < b->nframes && k < UPC_BT_FRAMES; k++) {
				printf("%s", k ? "," : "");
				upcctl_json_str(b->sym[k]);
			}
			printf("]}");
		}
		printf("]}");
	}
	printf("]}\n");
}

static void print_text(const struct snap *v, int n, uint64_t now, bool bts)
{
	for (int i = 0; i < n; i++) {
		const struct upc_shm *s = &v[i].s;
		const struct upc_stats *st = &s->st;

		printf("%supcache cache %u of pid %d (%s), updated %.1f s ago\n", i ? "\n" : "", s->cache_no,
		       s->pid, v[i].comm, now > s->updated_ms ? (double)(now - s->updated_ms) / 1000 : 0.0);
		upcctl_stats_text(st, (int64_t)s->ra_hits,
				  (s->debug & 1) ? ", UPC_DEBUG=break-i1 (test only!)" :
				  (s->debug & 2) ? ", UPC_DEBUG=dirty-backtrace" : "");
		if (s->nr_files_listed) {
			printf("  %10s %8s %8s %8s %8s  %s\n", "cached", "dirty", "wb", "pinned", "maps", "file");
			for (uint32_t j = 0; j < s->nr_files_listed && j < UPC_SHM_FILES; j++) {
				const struct upc_shm_file *f = &s->files[j];
				char id[64];

				snprintf(id, sizeof(id), "dev %" PRIu64 " ino %" PRIu64, f->dev, f->ino);
				printf("  %10" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8u  %s\n", f->cached,
				       f->dirty, f->writeback, f->pinned, f->mappings, f->path[0] ? f->path : id);
			}
			if (s->nr_files > s->nr_files_listed)
				printf("  (%u more files)\n", s->nr_files - s->nr_files_listed);
		}
		if (!bts)
			continue;
		if (!(s->debug & 2)) {
			printf("  no dirty backtraces: run the program with UPC_DEBUG=dirty-backtrace\n");
			continue;
		}
		printf("  dirty backtraces (the first write that dirtied a clean page), newest first:\n");
		for (uint32_t j = 0; j < s->nr_bts && j < UPC_SHM_BTS; j++) {
			const struct upc_shm_bt *b = &s->bts[j];
			time_t t = (time_t)(b->when_ms / 1000);
			struct tm tm;
			char when[32];

			localtime_r(&t, &tm);
			strftime(when, sizeof(when), "%H:%M:%S", &tm);
			printf("    #%" PRIu64 " %s.%03u thread %u dirtied ino %" PRIu64 " page %" PRIu64 ":\n", b->id,
			       when, (unsigned int)(b->when_ms % 1000), b->tid, b->ino, b->pgoff);
			for (uint32_t k = 0; k < b->nframes && k < UPC_BT_FRAMES; k++)
				printf("        %-2u %s\n", k, b->sym[k]);
		}
	}
}

int upcctl_stats(int argc, char **argv)
{
	bool json = false, bts = false;
	struct snap *v;
	int pid = 0, n;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--backtraces") || !strcmp(argv[i], "-b"))
			bts = true;
		else if (!pid && atoi(argv[i]) > 0)
			pid = atoi(argv[i]);
		else {
			fprintf(stderr, "usage: upcctl stats [--json] [--backtraces] PID\n");
			return 2;
		}
	}
	if (!pid) {
		fprintf(stderr, "usage: upcctl stats [--json] [--backtraces] PID\n");
		return 2;
	}
	n = snap_all(pid, &v);
	if (!n) {
		fprintf(stderr, "upcctl: process %d has no upcache cache published in %s (%s)\n", pid, UPC_SHM_DIR,
			kill(pid, 0) < 0 && errno == ESRCH ? "no such process" : "not using upcache, or no access");
		free(v);
		return 1;
	}
	qsort(v, (size_t)n, sizeof(*v), snap_cmp);
	if (json)
		print_json(v, n, realtime_ms());
	else
		print_text(v, n, realtime_ms(), bts);
	free(v);
	return 0;
}

/* ------------------------------------------------------------ top */

static struct termios saved_tio;
static bool raw_tty;

static void tty_restore(void)
{
	if (raw_tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
	raw_tty = false;
}

static void on_sig(int sig)
{
	tty_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * top's keyboard: on a terminal, standard input without echo and line
 * buffering, put back at exit or on SIGINT/SIGTERM.  Returns whether it
 * is (and so whether "q quits").
 */
bool upcctl_tty_raw(void)
{
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
		struct termios t = saved_tio;

		t.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
		t.c_cc[VMIN] = 0;
		t.c_cc[VTIME] = 0;
		if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
			raw_tty = true;
			atexit(tty_restore);
			signal(SIGINT, on_sig);
			signal(SIGTERM, on_sig);
		}
	}
	return raw_tty;
}

/* Wait @delay seconds between two screens; true: q was pressed (raw terminal only). */
bool upcctl_tty_wait(double delay)
{
	struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };

	if (!raw_tty) {
		usleep((useconds_t)(delay * 1e6));
		return false;
	}
	if (poll(&pfd, 1, (int)(delay * 1000)) > 0) {
		char c = 0;

		if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q'))
			return true;
	}
	return false;
}

void upcctl_tty_restore(void)
{
	tty_restore();
}

static double rate(const struct snap *prev, int np, const struct upc_shm *s, size_t field_off, double dt)
{
	for (int i = 0; i < np; i++)
		if (prev[i].s.pid == s->pid && prev[i].s.cache_no == s->cache_no && dt > 0) {
			uint64_t now = *(const uint64_t *)((const char *)&s->st + field_off);
			uint64_t was = *(const uint64_t *)((const char *)&prev[i].s.st + field_off);

			return now >= was ? (double)(now - was) / dt : 0;
		}
	return 0;
}

#define OFF(f) offsetof(struct upc_stats, f)

int upcctl_top(int argc, char **argv)
{
	struct snap *prev = NULL;
	double delay = 1.0, dt = 0;
	long iterations = -1;
	int np = 0, only = 0;
	bool tty = isatty(STDOUT_FILENO);
	struct timespec last = { 0 };

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			iterations = atol(argv[++i]);
		else if (!strcmp(argv[i], "-d") && i + 1 < argc)
			delay = atof(argv[++i]);
		else if (!strcmp(argv[i], "-p") && i + 1 < argc)
			only = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: upcctl top [-n ITERATIONS] [-d SECONDS] [-p PID]\n");
			return 2;
		}
	}
	if (delay < 0.1)
		delay = 0.1;
	upcctl_tty_raw();
	for (long it = 0; iterations < 0 || it < iterations; it++) {
		struct snap *v;
		struct timespec now;
		char clock[16], b1[32];
		time_t t = time(NULL);
		struct tm tm;
		int n = snap_all(only, &v), nproc = 0;

		clock_gettime(CLOCK_MONOTONIC, &now);
		if (last.tv_sec)
			dt = (double)(now.tv_sec - last.tv_sec) + (double)(now.tv_nsec - last.tv_nsec) / 1e9;
		last = now;
		qsort(v, (size_t)n, sizeof(*v), snap_cmp);
		for (int i = 0; i < n; i++)
			nproc += !i || v[i].s.pid != v[i - 1].s.pid;
		localtime_r(&t, &tm);
		strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
		if (tty)
			printf("\033[H\033[2J");
		else if (it)
			printf("\n");
		printf("upcctl top - %s, %d caches in %d processes (every %.1f s%s)\n\n", clock, n, nproc, delay,
		       raw_tty ? "; q quits" : "");
		printf("%7s %5s %5s %6s %9s %8s %7s %7s %9s %9s %9s %9s %5s  %s\n", "PID", "CACHE", "MODE", "LIMIT",
		       "CACHED", "DIRTY", "WB", "PINNED", "FAULTS/s", "READ/s", "WRITTEN/s", "EVICTED/s", "FILES",
		       "COMMAND");
		for (int i = 0; i < n; i++) {
			const struct upc_shm *s = &v[i].s;
			double faults = rate(prev, np, s, OFF(faults_missing), dt) + rate(prev, np, s, OFF(faults_wp), dt) +
					rate(prev, np, s, OFF(faults_minor), dt);

			printf("%7d %5u %5s %6s %9" PRIu64 " %8" PRIu64 " %7" PRIu64 " %7" PRIu64
			       " %9.0f %9.0f %9.0f %9.0f %5u  %s\n",
			       s->pid, s->cache_no, s->st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync",
			       upcctl_mib(s->st.mem_limit, b1, sizeof(b1)), (uint64_t)s->st.pages_cached,
			       (uint64_t)s->st.pages_dirty, (uint64_t)s->st.pages_writeback,
			       (uint64_t)s->st.pages_pinned, faults, rate(prev, np, s, OFF(pages_filled), dt),
			       rate(prev, np, s, OFF(pages_written), dt), rate(prev, np, s, OFF(pages_evicted), dt),
			       s->st.nr_files, v[i].comm);
		}
		if (n) {
			printf("\n%7s %5s %9s %8s %7s %7s  %s\n", "PID", "CACHE", "CACHED", "DIRTY", "WB", "PINNED",
			       "FILE (most cached first)");
			for (int i = 0, shown = 0; i < n && shown < 20; i++)
				for (uint32_t j = 0; j < v[i].s.nr_files_listed && j < UPC_SHM_FILES && shown < 20;
				     j++, shown++) {
					const struct upc_shm_file *f = &v[i].s.files[j];

					printf("%7d %5u %9" PRIu64 " %8" PRIu64 " %7" PRIu64 " %7" PRIu64 "  %s\n",
					       v[i].s.pid, v[i].s.cache_no, f->cached, f->dirty, f->writeback, f->pinned,
					       f->path[0] ? f->path : "?");
				}
		}
		fflush(stdout);
		free(prev);
		prev = v;
		np = n;
		if (iterations >= 0 && it + 1 >= iterations)
			break;
		/* Sleep, or read a key. */
		if (upcctl_tty_wait(delay))
			break;
	}
	free(prev);
	tty_restore();
	return 0;
}
