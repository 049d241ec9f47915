/* SPDX-License-Identifier: MIT */
/*
 * The invariants of DESIGN.md, one test each, named after them.  Each one
 * builds the race the seed thread describes and checks that no write is lost.
 */
#include "helpers.h"

#include <stdatomic.h>

struct race {
	struct upc_cache *c;
	unsigned char *p;
	size_t size;
	int fd;
	atomic_bool stop;		/* stops the racing thread */
	atomic_bool stop_writers;
	atomic_ulong loops;
};

static unsigned long seconds(void)
{
	return env_ulong("UPC_TEST_SECONDS", 2);
}

struct msync_arg {
	struct upc_cache *c;
	void *p;
};

static void *msync_thread(void *arg)
{
	struct msync_arg *a = arg;

	return (void *)(intptr_t)upc_msync(a->c, a->p, 16 * PAGE, UPC_MS_SYNC);
}

/*
 * I1 (seed 003): a write that lands while the page's write-back is in flight
 * re-dirties the page and is written later.  A delay in the store holds the
 * I/O open while the page is written again.
 */
Test(invariants, i1_clean_after_flush, .timeout = 60)
{
	struct upc_store *s;
	struct upc_cache *c;
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	volatile long *p;
	long got;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &s), 0);
	o.store = s;
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 1;
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_WRITE, 0, PAGE, UPC_INJECT_DELAY, 300000, 1), 0);
	struct msync_arg ma = { c, (void *)p };
	pthread_t th;

	cr_assert_eq(pthread_create(&th, NULL, msync_thread, &ma), 0);
	/* Wait until the page is under write-back, then write it again. */
	for (int i = 0; i < 1000 && stats_of(c).pages_writeback == 0; i++)
		usleep(1000);
	cr_assert_eq(stats_of(c).pages_writeback, 1, "write-back never started");
	cr_assert_eq(stats_of(c).pages_dirty, 0, "cleaned before the I/O, after the protect");
	p[0] = 2;	/* traps: the page was protected before it was cleaned */
	cr_assert_eq(stats_of(c).pages_dirty, 1, "the write during I/O must re-dirty the page");
	void *ret;
	pthread_join(th, &ret);
	cr_assert_eq((intptr_t)ret, 0);
	cr_assert_eq(stats_of(c).pages_dirty, 1, "still dirty after the first write-back");
	cr_assert_eq(upc_msync(c, (void *)p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &got, sizeof(got), 0), sizeof(got));
	cr_assert_eq(got, 2, "the write made during I/O was lost");
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(s), 0);
	close(fd);
}

/* Writers bump counters in their own pages of @r, forever; returns their last values. */
struct wr {
	struct race *r;
	int id;
	long last;
};

static void *writer(void *arg)
{
	struct wr *w = arg;
	volatile long *slot = (volatile long *)(w->r->p + (size_t)w->id * PAGE + 8 * w->id);
	long v = 0;

	while (!atomic_load(&w->r->stop_writers)) {
		*slot = ++v;
		w->last = v;
	}
	/*
	 * One more store after the stop: when the racing thread was stopped
	 * first (writers_last), this store is certainly later than its last
	 * UPC_ADV_FREE, however the threads were scheduled.
	 */
	*slot = ++v;
	w->last = v;
	return NULL;
}

/*
 * @writers_last: the writers stop after the racing thread, so their last
 * values are stored when it can no longer discard them (UPC_ADV_FREE may).
 */
static void run_race(struct race *r, void *(*chaos)(void *), int nwriters, bool writers_last)
{
	pthread_t th[8], ch;
	struct wr w[8];

	for (int i = 0; i < nwriters; i++) {
		w[i] = (struct wr){ .r = r, .id = i };
		pthread_create(&th[i], NULL, writer, &w[i]);
	}
	pthread_create(&ch, NULL, chaos, r);
	sleep((unsigned int)seconds());
	if (writers_last) {
		atomic_store(&r->stop, true);
		pthread_join(ch, NULL);
	}
	atomic_store(&r->stop_writers, true);
	for (int i = 0; i < nwriters; i++)
		pthread_join(th[i], NULL);
	if (!writers_last) {
		atomic_store(&r->stop, true);
		pthread_join(ch, NULL);
	}
	cr_assert_gt(atomic_load(&r->loops), 5, "the racing thread hardly ran");
	cr_assert_eq(upc_msync(r->c, r->p, r->size, UPC_MS_SYNC), 0);
	for (int i = 0; i < nwriters; i++) {
		long got = 0;

		cr_assert_eq(pread(r->fd, &got, sizeof(got), (off_t)((size_t)i * PAGE + 8 * (size_t)i)),
			     sizeof(got));
		cr_assert_eq(got, w[i].last, "writer %d: file has %ld, last written %ld", i, got, w[i].last);
	}
	fprintf(stderr, "%lu racing loops, %d writers, nothing lost\n", atomic_load(&r->loops), nwriters);
}

static void race_setup(struct race *r, size_t limit)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB, .mem_limit = limit);

	memset(r, 0, sizeof(*r));
	r->size = 64 * PAGE;
	r->c = cache_new_opts(&o);
	r->fd = tmpfile_pattern(r->size, NULL);
	cr_assert_eq(upc_map(r->c, r->fd, 0, r->size, PROT_READ | PROT_WRITE, 0, (void **)&r->p), 0);
}

static void race_done(struct race *r)
{
	cr_assert_eq(upc_cache_destroy(r->c), 0);
	close(r->fd);
}

/* I2 (seed 003, mmu_gather): batched teardown carries the written state to the page. */
static void *dontneed_and_msync(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		cr_assert_eq(upc_advise(r->c, r->p, r->size, UPC_ADV_DONTNEED), 0);
		cr_assert_geq(upc_msync(r->c, r->p, r->size, UPC_MS_SYNC), 0);
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

Test(invariants, i2_dirty_travels_with_the_batch, .timeout = 120)
{
	struct race r;

	race_setup(&r, 0);
	run_race(&r, dontneed_and_msync, 4, false);
	race_done(&r);
}

/* I3 (seed 000): drop tears down first and never drops a dirty page. */
static void *drop_and_msync(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		cr_assert_geq(upc_drop(r->c, 0), 0);
		cr_assert_geq(upc_msync(r->c, r->p, r->size, UPC_MS_SYNC), 0);
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

Test(invariants, i3_drop_only_clean, .timeout = 120)
{
	struct race r;

	race_setup(&r, 0);
	run_race(&r, drop_and_msync, 4, false);
	race_done(&r);
}

/*
 * I4 (seed 001): a lazily freed page written again before reclaim is kept and
 * written back; reclaim racing with the re-dirtying fault does not proceed.
 */
static void *free_and_drop(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		/* The writers' pages are freed lazily, again and again, under their feet. */
		cr_assert_eq(upc_advise(r->c, r->p, r->size, UPC_ADV_FREE), 0);
		cr_assert_geq(upc_drop(r->c, 0), 0);
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

Test(invariants, i4_redirtied_lazyfree_pages_are_kept, .timeout = 120)
{
	struct race r;
	long got;

	/* Deterministic part: FREE, write again, reclaim: the new data is written. */
	race_setup(&r, 0);
	((volatile long *)r.p)[0] = 7;
	cr_assert_eq(upc_advise(r.c, r.p, r.size, UPC_ADV_FREE), 0);
	((volatile long *)r.p)[0] = 8;
	cr_assert_eq(upc_drop(r.c, 0) >= 0, 1);
	cr_assert_eq(stats_of(r.c).pages_dirty, 1, "a re-dirtied lazy-free page was dropped");
	cr_assert_eq(upc_msync(r.c, r.p, r.size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(r.fd, &got, sizeof(got), 0), sizeof(got));
	cr_assert_eq(got, 8);
	race_done(&r);

	/*
	 * The race: FREE and reclaim loop under the writers' feet; then the
	 * FREE loop stops and the writers store once more.  Those last values
	 * re-dirty lazily freed pages, which must reach the file, even though
	 * reclaim may have been racing the faults that re-dirtied them.
	 */
	race_setup(&r, 0);
	run_race(&r, free_and_drop, 4, true);
	race_done(&r);
}

/* I5 (seed 002): unmap and mprotect(PROT_READ) racing write-back and reclaim keep dirty state. */
struct unmapper {
	struct race *r;
	long last;
};

static void *remap_writer(void *arg)
{
	struct unmapper *u = arg;
	struct race *r = u->r;
	long v = 0;

	while (!atomic_load(&r->stop)) {
		volatile long *q;

		cr_assert_eq(upc_map(r->c, r->fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&q), 0);
		q[PAGE / sizeof(long) * 9] = ++v;
		u->last = v;
		if (v & 1)
			cr_assert_eq(upc_protect(r->c, (void *)q, 16 * PAGE, PROT_READ), 0);
		/* The last unmapper of a dirty page: its dirty state must stay. */
		cr_assert_eq(upc_unmap(r->c, (void *)q, 16 * PAGE), 0);
	}
	return NULL;
}

static void *msync_drop_loop(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		cr_assert_geq(upc_msync(r->c, r->p + 32 * PAGE, 32 * PAGE, UPC_MS_SYNC), 0);
		cr_assert_geq(upc_drop(r->c, 0), 0);
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

Test(invariants, i5_the_last_unmapper_transfers_dirty, .timeout = 120)
{
	struct race r;
	struct unmapper u;
	pthread_t a, b;
	long got;

	race_setup(&r, 0);
	u = (struct unmapper){ .r = &r };
	pthread_create(&a, NULL, remap_writer, &u);
	pthread_create(&b, NULL, msync_drop_loop, &r);
	sleep((unsigned int)seconds());
	atomic_store(&r.stop, true);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	/* No mapping of page 9 is left: destroy must write the last value. */
	cr_assert_eq(upc_cache_destroy(r.c), 0);
	cr_assert_eq(pread(r.fd, &got, sizeof(got), 9 * PAGE), sizeof(got));
	cr_assert_eq(got, u.last, "file has %ld, last written %ld", got, u.last);
	fprintf(stderr, "i5: %ld map/write/protect/unmap cycles, %lu msync+drop loops\n", u.last,
		atomic_load(&r.loops));
	close(r.fd);
}

/*
 * I6 (seed 004): a pinned page is never unmapped, evicted or replaced while
 * I/O into it is in flight: the kernel reads a file into a pinned range
 * (pread) while reclaim, drop and DONTNEED run; every byte must land.
 */
static void *pressure(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		cr_assert_geq(upc_drop(r->c, 0), 0);
		cr_assert_eq(upc_advise(r->c, r->p, r->size, UPC_ADV_DONTNEED), 0);
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

Test(invariants, i6_pinned_pages_stay_put, .timeout = 120)
{
	struct race r;
	pthread_t th;
	int src = tmpfile_pattern(16 * PAGE, NULL);
	unsigned char *buf = malloc(16 * PAGE);
	unsigned long rounds = 0;

	race_setup(&r, 0);
	cr_assert_eq(upc_pin(r.c, r.p, 16 * PAGE, UPC_PIN_WRITE), 0);
	pthread_create(&th, NULL, pressure, &r);
	for (time_t end = time(NULL) + (time_t)seconds(); time(NULL) < end; rounds++) {
		memset(buf, (int)rounds, 16 * PAGE);
		cr_assert_eq(pwrite(src, buf, 16 * PAGE, 0), (ssize_t)(16 * PAGE));
		/* Kernel-mode I/O into the pinned range. */
		cr_assert_eq(pread(src, r.p, 16 * PAGE, 0), (ssize_t)(16 * PAGE));
		for (size_t i = 0; i < 16 * PAGE; i += 509)
			cr_assert_eq(r.p[i], (unsigned char)rounds, "round %lu offset %zu", rounds, i);
		cr_assert_eq(stats_of(r.c).pages_pinned, 16);
	}
	atomic_store(&r.stop, true);
	pthread_join(th, NULL);
	cr_assert_eq(upc_unpin(r.c, r.p, 16 * PAGE), 0);
	cr_assert_eq(upc_msync(r.c, r.p, r.size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(r.fd, buf, 16 * PAGE, 0), (ssize_t)(16 * PAGE));
	for (size_t i = 0; i < 16 * PAGE; i++)
		cr_assert_eq(buf[i], (unsigned char)(rounds - 1), "offset %zu", i);
	fprintf(stderr, "i6: %lu kernel reads into a pinned range under %lu drop+DONTNEED loops\n", rounds,
		atomic_load(&r.loops));
	free(buf);
	race_done(&r);
	close(src);
}
