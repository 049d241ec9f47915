/* SPDX-License-Identifier: MIT */
/* Concurrent faults from many threads, on the same and on different pages. */
#include "helpers.h"

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
