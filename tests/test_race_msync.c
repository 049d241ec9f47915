/* SPDX-License-Identifier: MIT */
/*
 * Writers racing write-back lose nothing (I1).  The shape of Dave Hansen's
 * racewrite.c from seed 003: each writer stores a counter in its own page,
 * msyncs it and reads the file behind the cache's back with pread, which
 * must hold the value just written; meanwhile another thread msyncs the
 * whole mapping in a loop, so every page is cleaned under the writers' feet.
 * UPC_TEST_SECONDS sets the duration (default 3).
 */
#include "helpers.h"

#include <stdatomic.h>
#include <time.h>

#define NWRITERS 4

struct shared {
	struct upc_cache *c;
	unsigned char *p;
	int fd;
	atomic_bool stop;
	atomic_ulong iterations, lost, msync_errors, loops;
};

struct writer {
	struct shared *s;
	int id;
	long last;
};

static void *writer(void *arg)
{
	struct writer *w = arg;
	struct shared *s = w->s;
	volatile long *slot = (volatile long *)(s->p + (size_t)w->id * PAGE);
	long counter = 1, got;

	while (!atomic_load(&s->stop)) {
		*slot = counter;
		if (upc_msync(s->c, (void *)slot, PAGE, UPC_MS_SYNC) < 0)
			atomic_fetch_add(&s->msync_errors, 1);
		if (pread(s->fd, &got, sizeof(got), (off_t)w->id * PAGE) != sizeof(got) || got != counter)
			atomic_fetch_add(&s->lost, 1);
		w->last = counter++;
		atomic_fetch_add(&s->iterations, 1);
	}
	return NULL;
}

static void *flusher(void *arg)
{
	struct shared *s = arg;

	while (!atomic_load(&s->stop)) {
		if (upc_msync(s->c, s->p, (NWRITERS + 4) * PAGE, UPC_MS_SYNC) < 0)
			atomic_fetch_add(&s->msync_errors, 1);
		atomic_fetch_add(&s->loops, 1);
	}
	return NULL;
}

/* Writers that do not msync themselves: only the flusher cleans; the end state must be exact. */
static void *blind_writer(void *arg)
{
	struct writer *w = arg;
	struct shared *s = w->s;
	volatile long *slot = (volatile long *)(s->p + (size_t)w->id * PAGE + 64);
	long counter = 1;

	while (!atomic_load(&s->stop)) {
		*slot = counter;
		w->last = counter++;
		atomic_fetch_add(&s->iterations, 1);
	}
	return NULL;
}

static void race(void *(*fn)(void *), size_t slot_off)
{
	struct shared s = { 0 };
	struct writer w[NWRITERS];
	pthread_t th[NWRITERS], fl;
	unsigned long secs = env_ulong("UPC_TEST_SECONDS", 3);

	s.c = cache_new(UPC_CACHE_NO_BGWB);
	s.fd = tmpfile_pattern((NWRITERS + 4) * PAGE, NULL);
	cr_assert_eq(upc_map(s.c, s.fd, 0, (NWRITERS + 4) * PAGE, PROT_READ | PROT_WRITE, 0,
			     (void **)&s.p), 0);
	for (int i = 0; i < NWRITERS; i++) {
		w[i] = (struct writer){ .s = &s, .id = i };
		pthread_create(&th[i], NULL, fn, &w[i]);
	}
	pthread_create(&fl, NULL, flusher, &s);
	sleep((unsigned int)secs);
	atomic_store(&s.stop, true);
	for (int i = 0; i < NWRITERS; i++)
		pthread_join(th[i], NULL);
	pthread_join(fl, NULL);

	/* The final state: after one more msync the file holds every last value. */
	cr_assert_eq(upc_msync(s.c, s.p, (NWRITERS + 4) * PAGE, UPC_MS_SYNC), 0);
	for (int i = 0; i < NWRITERS; i++) {
		long got = 0;

		cr_assert_eq(pread(s.fd, &got, sizeof(got), (off_t)(i * PAGE + slot_off)), sizeof(got));
		cr_assert_eq(got, w[i].last, "writer %d: file has %ld, last written %ld", i, got, w[i].last);
	}
	cr_log_info("%lu writer iterations, %lu flusher loops in %lu s, %lu lost\n",
		    atomic_load(&s.iterations), atomic_load(&s.loops), secs, atomic_load(&s.lost));
	fprintf(stderr, "race_msync: %lu writer iterations, %lu flusher loops in %lu s, %lu lost\n",
		atomic_load(&s.iterations), atomic_load(&s.loops), secs, atomic_load(&s.lost));
	cr_assert_eq(atomic_load(&s.lost), 0, "%lu writes lost", atomic_load(&s.lost));
	cr_assert_eq(atomic_load(&s.msync_errors), 0);
	cr_assert_gt(atomic_load(&s.loops), 10, "the flusher hardly ran");
	cr_assert_eq(upc_cache_destroy(s.c), 0);
	close(s.fd);
}

Test(race_msync, racewrite_writers_msync_their_page_while_a_flusher_loops, .timeout = 600)
{
	race(writer, 0);
}

Test(race_msync, blind_writers_against_a_flusher_lose_no_final_value, .timeout = 600)
{
	race(blind_writer, 64);
}
