/* SPDX-License-Identifier: MIT */
/*
 * racewrite, after Dave Hansen's reproducer in seed 003 (the thread that
 * moved the dirty bit into mmu_gather): writer threads store counters in
 * their own pages, upc_msync them and read the file behind the cache's back
 * with pread, which must hold the value just stored; meanwhile one thread
 * loops UPC_ADV_DONTNEED over the whole mapping and another loops upc_drop,
 * under a memory limit small enough that eviction runs all the time (a
 * second file is scanned to keep the pressure on).
 *
 * UPC_TEST_SECONDS sets the duration (default 3); the suite runs it in both
 * tracking modes (UPC_TEST_TRACK).
 */
#include "helpers.h"

#include <stdatomic.h>

#define NWRITERS 3
#define SIZE	(64 * PAGE)

struct rw {
	struct upc_cache *c;
	unsigned char *p, *q;
	int fd, qfd;
	atomic_bool stop;
	atomic_ulong iterations, lost, dontneeds, drops, scans;
};

struct w {
	struct rw *s;
	int id;
	long last;
};

static void *writer(void *arg)
{
	struct w *w = arg;
	struct rw *s = w->s;
	off_t off = (off_t)w->id * 8 * PAGE;
	volatile long *slot = (volatile long *)(s->p + off);
	long counter = 1, got;

	while (!atomic_load(&s->stop)) {
		*slot = counter;
		if (upc_msync(s->c, (void *)slot, PAGE, UPC_MS_SYNC) != 0)
			atomic_fetch_add(&s->lost, 1);
		if (pread(s->fd, &got, sizeof(got), off) != sizeof(got) || got != counter) {
			fprintf(stderr, "racewrite: writer %d: file has %ld, wrote %ld\n", w->id, got, counter);
			atomic_fetch_add(&s->lost, 1);
		}
		w->last = counter++;
		atomic_fetch_add(&s->iterations, 1);
	}
	return NULL;
}

static void *dontneeder(void *arg)
{
	struct rw *s = arg;

	while (!atomic_load(&s->stop)) {
		cr_assert_eq(upc_advise(s->c, s->p, SIZE, UPC_ADV_DONTNEED), 0);
		atomic_fetch_add(&s->dontneeds, 1);
	}
	return NULL;
}

static void *dropper(void *arg)
{
	struct rw *s = arg;

	while (!atomic_load(&s->stop)) {
		cr_assert_geq(upc_drop(s->c, 0), 0);
		atomic_fetch_add(&s->drops, 1);
	}
	return NULL;
}

/* Scan another file bigger than the limit, so reclaim never rests. */
static void *scanner(void *arg)
{
	struct rw *s = arg;
	volatile unsigned char sink;

	while (!atomic_load(&s->stop)) {
		for (size_t i = 0; i < (4 << 20) && !atomic_load(&s->stop); i += PAGE)
			sink = s->q[i];
		atomic_fetch_add(&s->scans, 1);
	}
	(void)sink;
	return NULL;
}

/* Has each racer done enough for the checks below? */
static bool racewrite_enough(struct rw *s)
{
	return atomic_load(&s->iterations) > 100 && atomic_load(&s->dontneeds) > 10 &&
	       atomic_load(&s->drops) > 10 && stats_of(s->c).pages_evicted > 0;
}

Test(racewrite, writers_msync_and_pread_while_dontneed_drop_and_eviction_run, .timeout = 900)
{
	struct rw s = { 0 };
	struct w w[NWRITERS];
	pthread_t th[NWRITERS], d1, d2, sc;
	unsigned long secs = env_ulong("UPC_TEST_SECONDS", 3), ms;
	UPC_OPTS(upc_cache_opts, o, .mem_limit = 1 << 20, .flags = UPC_CACHE_NO_BGWB);

	s.c = cache_new_opts(&o);
	s.fd = tmpfile_pattern(SIZE, NULL);
	s.qfd = tmpfile_pattern(4 << 20, NULL);
	cr_assert_eq(upc_map(s.c, s.fd, 0, SIZE, PROT_READ | PROT_WRITE, 0, (void **)&s.p), 0);
	cr_assert_eq(upc_map(s.c, s.qfd, 0, 4 << 20, PROT_READ, 0, (void **)&s.q), 0);
	for (int i = 0; i < NWRITERS; i++) {
		w[i] = (struct w){ .s = &s, .id = i };
		pthread_create(&th[i], NULL, writer, &w[i]);
	}
	pthread_create(&d1, NULL, dontneeder, &s);
	pthread_create(&d2, NULL, dropper, &s);
	pthread_create(&sc, NULL, scanner, &s);
	/*
	 * $UPC_TEST_SECONDS at least, and on until each racer did enough to
	 * race (the checks below): a loaded machine does less in a second
	 * (84 iterations once, in upc-trace's 1 s run beside other tests).
	 */
	for (ms = 0; ms < secs * 1000 || (!racewrite_enough(&s) && ms < 60000); ms += 10)
		usleep(10000);
	atomic_store(&s.stop, true);
	for (int i = 0; i < NWRITERS; i++)
		pthread_join(th[i], NULL);
	pthread_join(d1, NULL);
	pthread_join(d2, NULL);
	pthread_join(sc, NULL);

	struct upc_stats st = stats_of(s.c);
	fprintf(stderr,
		"racewrite (%s tracking): %lu iterations in %.2f s, %lu lost; %lu DONTNEED, %lu drop, "
		"%lu scans; %lu evicted, %lu written back\n",
		st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync", atomic_load(&s.iterations), ms / 1000.0,
		atomic_load(&s.lost), atomic_load(&s.dontneeds), atomic_load(&s.drops),
		atomic_load(&s.scans), (unsigned long)st.pages_evicted, (unsigned long)st.pages_written);
	cr_assert_eq(atomic_load(&s.lost), 0, "%lu writes lost", atomic_load(&s.lost));
	cr_assert_gt(atomic_load(&s.iterations), 100);
	cr_assert_gt(st.pages_evicted, 0, "eviction never ran");
	cr_assert_gt(atomic_load(&s.dontneeds), 10);
	cr_assert_gt(atomic_load(&s.drops), 10);
	for (int i = 0; i < NWRITERS; i++) {
		long got = 0;

		cr_assert_eq(pread(s.fd, &got, sizeof(got), (off_t)i * 8 * PAGE), sizeof(got));
		cr_assert_eq(got, w[i].last);
	}
	cr_assert_eq(upc_cache_destroy(s.c), 0);
	close(s.fd);
	close(s.qfd);
}
