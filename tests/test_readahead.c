/* SPDX-License-Identifier: MIT */
/* Readahead: a sequential scan is served with few, large reads. */
#include "helpers.h"

#include <stdatomic.h>

Test(readahead, sequential_scan_grows_the_window, .timeout = 60)
{
	const size_t size = 16 << 20, npages = size / PAGE;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;
	uint64_t sum = 0;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		sum += p[i];
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_cached, npages);
	cr_assert_eq(st.pages_filled, npages);
	cr_assert_eq(st.ra_max_window, 512, "window should reach 2 MiB, got %lu",
		     (unsigned long)st.ra_max_window);
	/* 1 + 16 + 32 + ... + 512 then 2 MiB per fault: 13 reads for 16 MiB. */
	cr_assert_leq(st.fill_ios, npages / 256, "%lu reads for %zu pages",
		      (unsigned long)st.fill_ios, npages);
	/* Each fault reads at most its own page; every other page came by readahead. */
	cr_assert_leq(st.pages_filled - st.ra_pages, st.faults_missing);
	cr_assert_geq(st.ra_pages, npages - st.faults_missing);
	cr_assert_neq(sum, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(readahead, window_ceiling_follows_option, .timeout = 60)
{
	const size_t size = 4 << 20;
	struct upc_cache *c = NULL;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;
	volatile unsigned char sink;

	require_upcache();
	UPC_OPTS(upc_cache_opts, o, .ra_max_pages = 32);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		sink = p[i];
	(void)sink;
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.ra_max_window, 32);
	cr_assert_geq(st.fill_ios, size / PAGE / 32);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(readahead, reads_ahead_past_the_mapping_into_the_cache, .timeout = 60)
{
	const size_t size = 4 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *q;

	/* Scan a 64-page mapping: the last windows reach past its end. */
	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < 64 * PAGE; i += PAGE)
		cr_assert_eq(p[i], pat(i));
	struct upc_stats st = stats_of(c);
	cr_assert_gt(st.pages_cached, 64, "no readahead beyond the mapping");
	uint64_t extra = st.pages_cached - 64, faults = st.faults_missing;

	/* The pages read ahead serve the next mapping with no fault. */
	cr_assert_eq(upc_map(c, fd, 64 * PAGE, extra * PAGE, PROT_READ, 0, (void **)&q), 0);
	for (size_t i = 0; i < extra * PAGE; i++)
		cr_assert_eq(q[i], pat(64 * PAGE + i));
	cr_assert_eq(stats_of(c).faults_missing, faults);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A sequential scan has the windows after the one it is in read in the
 * background, two at once (RA_WORKERS): counted by the cache, not timed.
 * Every read takes 20 ms here (the fault-injection store), so reads that
 * are pipelined overlap.  Through a writable mapping, as a database maps,
 * a window read in the background is mapped whole by the fault that
 * reaches it: a few faults per 2 MiB window, not one per 64 pages.
 */
Test(readahead, sequential_scan_keeps_two_windows_in_flight, .timeout = 120)
{
	const size_t size = 32 << 20, npages = size / PAGE, windows = npages / 512;
	struct upc_store *store;
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_READ, 0, size, UPC_INJECT_DELAY, 20000, -1), 0);
	UPC_OPTS(upc_cache_opts, o, .store = store, .flags = UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(p[i + 5], pat(i + 5), "offset %zu", i);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_filled, npages);
	cr_assert_geq(st.fill_inflight_max, 2, "at most %lu reads in flight",
		      (unsigned long)st.fill_inflight_max);
	/* The growing windows (1, 16, ..., 256 pages: 6 faults), then about one fault per window. */
	cr_assert_leq(st.faults_missing + st.faults_minor, 6 + 2 * windows,
		      "%lu MISSING + %lu MINOR for %zu windows", (unsigned long)st.faults_missing,
		      (unsigned long)st.faults_minor, windows);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(fd);
}

/*
 * A read error in a window read ahead is the access's only when it is the
 * accessed page's: the scan reads every page before the bad one, the bad
 * one raises SIGBUS, the pages after it read right.
 */
Test(readahead, read_error_in_a_readahead_window_is_only_the_bad_pages, .timeout = 120)
{
	const size_t size = 16 << 20, bad = 3000 * PAGE;
	struct upc_store *store;
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_READ, bad, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	UPC_OPTS(upc_cache_opts, o, .store = store, .flags = UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < bad; i += PAGE)
		cr_assert_eq(p[i + 7], pat(i + 7), "offset %zu", i);
	cr_assert(raises_sigbus(p + bad + 7));
	for (size_t i = bad + PAGE; i < size; i += PAGE)
		cr_assert_eq(p[i + 7], pat(i + 7), "offset %zu", i);
	cr_assert_geq(stats_of(c).read_errors, 1);
	cr_assert_eq(stats_of(c).pages_cached, size / PAGE - 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(fd);
}

struct scan_arg {
	unsigned char *p;
	size_t size;
	const _Atomic unsigned short *written;	/* per page: 0, or 0x100 | the byte written at offset 0 */
	unsigned long bad;
};

/* Read every page in order: offset 0 holds the pattern or what the writer wrote, the rest the pattern. */
static void *scan_thread(void *arg)
{
	struct scan_arg *a = arg;

	for (int pass = 0; pass < 3; pass++)
		for (size_t i = 0; i < a->size; i += PAGE) {
			unsigned short w = atomic_load(&a->written[i / PAGE]);
			unsigned char v = a->p[i];

			/* Written after the first look: look again. */
			if (v != pat(i) && w != (0x100 | v))
				w = atomic_load(&a->written[i / PAGE]);
			if (v != pat(i) && w != (0x100 | v))
				a->bad++;
			if (a->p[i + 100] != pat(i + 100))
				a->bad++;
		}
	return NULL;
}

/*
 * Two scans through two writable mappings while a third thread writes
 * pages ahead of them (upc_pwrite), msync writes them back and reclaim
 * (a limit half the file) and upc_drop evict them: readahead reads in
 * flight race with writes, write-back and eviction of their pages, and
 * none may put older data in the cache.
 */
Test(readahead, concurrent_scans_and_writes_see_the_right_data, .timeout = 180)
{
	const size_t size = 32 << 20, npages = size / PAGE;
	UPC_OPTS(upc_cache_opts, o, .mem_limit = 16 << 20);
	struct upc_cache *c = cache_new_opts(&o);
	int fd = tmpfile_pattern(size, NULL);
	_Atomic unsigned short *written = calloc(npages, sizeof(*written));
	struct scan_arg a[2];
	pthread_t t[2];
	unsigned char *m[2];

	cr_assert_not_null(written);
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&m[k]), 0);
		a[k] = (struct scan_arg){ .p = m[k], .size = size, .written = written };
	}
	for (int k = 0; k < 2; k++)
		cr_assert_eq(pthread_create(&t[k], NULL, scan_thread, &a[k]), 0);
	for (uint64_t n = 0, pg = 7; n < 4000; n++, pg = (pg * 2654435761u + 11) % npages) {
		unsigned char v = (unsigned char)(pat(pg * PAGE) ^ 0x5a);

		atomic_store(&written[pg], 0x100 | v);
		cr_assert_eq(upc_pwrite(c, fd, &v, 1, (off_t)(pg * PAGE)), 1);
		if (n % 500 == 499)
			cr_assert_eq(upc_msync(c, m[0], size, UPC_MS_SYNC), 0);
		if (n % 1000 == 999)
			cr_assert_geq(upc_drop(c, 0), 0);	/* every clean page: readahead in flight races it */
	}
	for (int k = 0; k < 2; k++) {
		pthread_join(t[k], NULL);
		cr_assert_eq(a[k].bad, 0, "scan %d read %lu wrong bytes", k, a[k].bad);
	}
	for (size_t i = 0; i < size; i += PAGE) {
		unsigned short w = atomic_load(&written[i / PAGE]);

		cr_assert_eq(m[1][i], w ? (w & 0xff) : pat(i), "offset %zu: %u, written %#x, pattern %u", i,
			     m[1][i], w, pat(i));
		cr_assert_eq(m[0][i + 100], pat(i + 100), "offset %zu", i + 100);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	free((void *)written);
	close(fd);
}

/*
 * A store whose reads take 300 ms after the data is read (the
 * fault-injection store's delay comes before it): what a read returns is
 * the file as it was when the read began.
 */
struct upc_store {
	const struct upc_store_ops *ops;	/* first, as every store's */
	struct upc_store *inner;
};

static int late_open(struct upc_store *s, int fd, unsigned int flags, void **h)
{
	return s->inner->ops->open(s->inner, fd, flags, h);
}

static void late_close(struct upc_store *s, void *h)
{
	s->inner->ops->close(s->inner, h);
}

static int late_submit(struct upc_store *s, void *h, enum upc_io_dir dir, struct upc_io *ios, unsigned int n)
{
	int ret = s->inner->ops->submit(s->inner, h, dir, ios, n);

	if (dir == UPC_IO_READ)
		usleep(300000);
	return ret;
}

static int late_sync(struct upc_store *s, void *h)
{
	return s->inner->ops->sync(s->inner, h);
}

static void late_destroy(struct upc_store *s)
{
	upc_store_destroy(s->inner);
	free(s);
}

static int late_stat(struct upc_store *s, void *h, struct stat *st)
{
	return s->inner->ops->stat(s->inner, h, st);
}

static int late_truncate(struct upc_store *s, void *h, off_t length)
{
	return s->inner->ops->truncate(s->inner, h, length);
}

static const struct upc_store_ops late_ops = {
	.sz = sizeof(struct upc_store_ops),
	.name = "late",
	.open = late_open,
	.close = late_close,
	.submit = late_submit,
	.sync = late_sync,
	.destroy = late_destroy,
	.stat = late_stat,
	.truncate = late_truncate,
};

/*
 * upc_invalidate(3) after a write behind the cache's back, while a
 * readahead read of the range is in flight (WILLNEED): the read began
 * before the write, so what it read is older than the file; once
 * upc_invalidate has returned, every page of the range reads what was
 * written (upc_map(3), "Writes behind the cache's back"), never the
 * read's older data inserted when it completes.
 */
Test(readahead, invalidate_drops_a_readahead_read_in_flight, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_store *store = calloc(1, sizeof(*store));
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *buf = malloc(size), *got = malloc(size);

	require_upcache();
	store->ops = &late_ops;
	cr_assert_eq(upc_store_file_create(0, &store->inner), 0);
	UPC_OPTS(upc_cache_opts, o, .store = store, .flags = UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, size, UPC_ADV_WILLNEED), 0);
	usleep(100000);	/* the worker has read the range, and not inserted it yet */
	memset(buf, 0xa5, size);
	cr_assert_eq(pwrite(fd, buf, size, 0), (ssize_t)size);	/* behind the cache's back */
	cr_assert_eq(upc_invalidate(c, fd, 0, 0), 0);
	usleep(500000);	/* the read has completed */
	cr_assert_eq(upc_pread(c, fd, got, size, 0), (ssize_t)size);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(got[i + 9], 0xa5, "offset %zu: %#x, older than the file", i + 9, got[i + 9]);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(p[i + 11], 0xa5, "offset %zu", i + 11);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	free(buf);
	free(got);
	close(fd);
}
