/* SPDX-License-Identifier: MIT */
/* Concurrent faults from many threads, on the same and on different pages. */
#include "helpers.h"

#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>

#define NTHREADS 8

struct targ {
	unsigned char *p;
	size_t size;
	int id;
	int errors;
	pthread_barrier_t *bar;
};

static void *reader_same(void *arg)
{
	struct targ *t = arg;

	pthread_barrier_wait(t->bar);
	/* Every thread walks the same pages, each starting at another point. */
	for (size_t k = 0; k < t->size / PAGE; k++) {
		size_t pg = (k + (size_t)t->id * 13) % (t->size / PAGE), off = pg * PAGE + (size_t)t->id;

		if (t->p[off] != pat(off))
			t->errors++;
	}
	return NULL;
}

static void *reader_own(void *arg)
{
	struct targ *t = arg;
	size_t share = t->size / NTHREADS;

	pthread_barrier_wait(t->bar);
	for (size_t off = (size_t)t->id * share; off < (size_t)(t->id + 1) * share; off += 97)
		if (t->p[off] != pat(off))
			t->errors++;
	return NULL;
}

static void *writer_mixed(void *arg)
{
	struct targ *t = arg;

	pthread_barrier_wait(t->bar);
	/* All threads write every page, each its own byte: a page's first write races. */
	for (size_t pg = 0; pg < t->size / PAGE; pg++)
		t->p[pg * PAGE + (size_t)t->id] = (unsigned char)(0x80 + t->id);
	return NULL;
}

static void run(void *(*fn)(void *), unsigned char *p, size_t size)
{
	pthread_t th[NTHREADS];
	struct targ t[NTHREADS];
	pthread_barrier_t bar;

	pthread_barrier_init(&bar, NULL, NTHREADS);
	for (int i = 0; i < NTHREADS; i++) {
		t[i] = (struct targ){ .p = p, .size = size, .id = i, .bar = &bar };
		cr_assert_eq(pthread_create(&th[i], NULL, fn, &t[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(t[i].errors, 0, "thread %d saw %d wrong bytes", i, t[i].errors);
	}
	pthread_barrier_destroy(&bar);
}

Test(threads, eight_threads_fault_the_same_pages, .timeout = 120)
{
	const size_t size = 8 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	run(reader_same, p, size);
	cr_assert_eq(stats_of(c).pages_cached, size / PAGE);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(threads, eight_threads_fault_different_pages, .timeout = 120)
{
	const size_t size = 8 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	run(reader_own, p, size);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(threads, eight_threads_write_every_page, .timeout = 120)
{
	const size_t size = 2 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *buf = malloc(size);

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	run(writer_mixed, p, size);
	cr_assert_eq(stats_of(c).pages_dirty, size / PAGE);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	for (size_t off = 0; off < size; off++) {
		unsigned int in_page = off % PAGE;
		unsigned char want = in_page < NTHREADS ? (unsigned char)(0x80 + in_page) : pat(off);

		cr_assert_eq(buf[off], want, "offset %zu", off);
	}
	free(buf);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * Regression: splitting a mapping took cache->lock under file->lock while
 * upc_stats() takes them the other way round: a thread reading statistics
 * and one unmapping the middle of mappings deadlocked at once.
 */
struct statloop {
	struct upc_cache *c;
	volatile bool stop;
	unsigned long loops;
};

static void *stats_loop(void *arg)
{
	struct statloop *s = arg;

	while (!s->stop) {
		stats_of(s->c);
		s->loops++;
	}
	return NULL;
}

Test(threads, statistics_while_mappings_split_do_not_deadlock, .timeout = 60)
{
	struct statloop s = { .c = cache_new(0) };
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	pthread_t th;

	pthread_create(&th, NULL, stats_loop, &s);
	for (int i = 0; i < 2000; i++) {
		unsigned char *p;

		cr_assert_eq(upc_map(s.c, fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
		cr_assert_eq(upc_unmap(s.c, p + 4 * PAGE, PAGE), 0);	/* a split */
		cr_assert_eq(upc_unmap(s.c, p, 4 * PAGE), 0);
		cr_assert_eq(upc_unmap(s.c, p + 5 * PAGE, 11 * PAGE), 0);
	}
	s.stop = true;
	pthread_join(th, NULL);
	cr_assert_gt(s.loops, 0);
	cr_assert_eq(stats_of(s.c).nr_mappings, 0);
	cr_assert_eq(upc_cache_destroy(s.c), 0);
	close(fd);
}

/* ------------------------------------------------------------ handler threads */

/* The fault-handler threads of this process: their CPUs (-1: unpinned), at most @max. */
static int fault_handlers(int *cpus, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		char path[64], comm[32] = "";
		cpu_set_t set;
		pid_t tid = (pid_t)atoi(de->d_name);
		FILE *fp;

		if (tid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
		fp = fopen(path, "r");
		if (!fp)
			continue;	/* gone meanwhile */
		if (!fgets(comm, sizeof(comm), fp))
			comm[0] = 0;
		fclose(fp);
		if (strncmp(comm, "upc-fault", 9))
			continue;
		cr_assert_eq(sched_getaffinity(tid, sizeof(set), &set), 0);
		if (n < max)
			cpus[n] = CPU_COUNT(&set) == 1 ? atoi(comm + 10) : -1;
		if (n < max && cpus[n] >= 0)
			cr_assert(CPU_ISSET(cpus[n], &set), "%s is not on its CPU", comm);
		n++;
	}
	closedir(d);
	return n;
}

/*
 * One handler pinned to each CPU of the mask (at most 8), so that a fault
 * finds one on its own CPU; UPC_FAULT_HANDLERS=1, one unpinned; and every
 * one of them stops with the cache (the stop is handed from one to the next).
 */
/*
 * No fault handler left, within a second: pthread_join() returns at the
 * thread's exit_mm() (its tid cleared), and /proc/self/task lists it until
 * release_task() a moment later, comm and all (seen once in CI: "a
 * handler outlived its cache" 0.01 s into the case).
 */
static bool handlers_gone(int *cpus)
{
	for (int i = 0; i < 100; i++) {
		if (fault_handlers(cpus, 64) == 0)
			return true;
		usleep(10000);
	}
	return false;
}

Test(threads, a_fault_handler_is_pinned_to_each_cpu_and_all_stop, .timeout = 60)
{
	cpu_set_t mask;
	int cpus[64], want, n;
	struct upc_cache *c;

	cr_assert_eq(sched_getaffinity(0, sizeof(mask), &mask), 0);
	want = CPU_COUNT(&mask) < 2 ? 1 : CPU_COUNT(&mask) > 8 ? 8 : CPU_COUNT(&mask);
	unsetenv("UPC_FAULT_HANDLERS");
	c = cache_new(0);
	n = fault_handlers(cpus, 64);
	cr_assert_eq(n, want, "%d fault handlers for %d CPUs", n, CPU_COUNT(&mask));
	for (int i = 0; i < n && want > 1; i++) {
		cr_assert_geq(cpus[i], 0, "handler %d is not pinned", i);
		cr_assert(CPU_ISSET(cpus[i], &mask));
		for (int j = 0; j < i; j++)
			cr_assert_neq(cpus[i], cpus[j], "two handlers on CPU %d", cpus[i]);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert(handlers_gone(cpus), "a handler outlived its cache");

	setenv("UPC_FAULT_HANDLERS", "1", 1);
	c = cache_new(0);
	cr_assert_eq(fault_handlers(cpus, 64), 1);
	cr_assert_eq(cpus[0], -1, "a single handler is not pinned");
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert(handlers_gone(cpus), "the handler outlived its cache");
	unsetenv("UPC_FAULT_HANDLERS");
}

struct slow_read {
	volatile unsigned char *p;
	_Atomic bool done;
	unsigned char v;
};

static void *slow_reader(void *arg)
{
	struct slow_read *s = arg;

	s->v = s->p[0];
	atomic_store(&s->done, true);
	return NULL;
}

/*
 * A fault that waits for the store holds its file's lock and its handler,
 * not the other handlers: a fault on another file is served meanwhile.
 * (With a single handler it waited for the slow read, 2 s.)
 */
Test(threads, a_fault_waiting_for_the_store_does_not_hold_another_files_faults, .timeout = 60)
{
	const size_t big = 2 << 20, small = 16 * PAGE;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct slow_read s = { 0 };
	struct upc_store *store;
	struct upc_cache *c;
	unsigned char *a, *b;
	cpu_set_t mask;
	int fa, fb;
	pthread_t th;

	cr_assert_eq(sched_getaffinity(0, sizeof(mask), &mask), 0);
	if (CPU_COUNT(&mask) < 2)
		cr_skip_test("one CPU: the cache runs one fault handler");
	setenv("UPC_FAULT_HANDLERS", "2", 1);
	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	o.store = store;
	c = cache_new_opts(&o);
	unsetenv("UPC_FAULT_HANDLERS");
	fa = tmpfile_pattern(big, NULL);
	fb = tmpfile_pattern(small, NULL);
	/* Only file A reaches that offset: its read there takes 2 s. */
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_READ, 1 << 20, PAGE, UPC_INJECT_DELAY, 2000000, -1), 0);
	cr_assert_eq(upc_map(c, fa, 0, big, PROT_READ, 0, (void **)&a), 0);
	cr_assert_eq(upc_map(c, fb, 0, small, PROT_READ, 0, (void **)&b), 0);
	s.p = a + (1 << 20);
	cr_assert_eq(pthread_create(&th, NULL, slow_reader, &s), 0);
	/*
	 * Give its fault time to reach the store.  (Not upc_stats(): it takes
	 * each file's lock, which the slow fill holds.)
	 */
	usleep(300000);
	for (size_t off = 0; off < small; off += PAGE)
		cr_assert_eq(b[off], pat(off));
	cr_assert_not(atomic_load(&s.done), "file B's faults waited for file A's slow read");
	pthread_join(th, NULL);
	cr_assert_eq(s.v, pat(1 << 20));
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(fa);
	close(fb);
}
