/* SPDX-License-Identifier: MIT */
/* Readahead: a sequential scan is served with few, large reads. */
#include "helpers.h"

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

/*
 * The asynchronous window keeps a scan ahead (the kernel's PG_readahead
 * marker): a reader slower than the store, through a writable mapping
 * (whose cached pages come to the engine as MINOR faults), reaches each
 * window after the background has read it, and that fault queues the
 * next one.  Without the marker every second 2 MiB window was read by the
 * fault itself while the reader waited.  A fault's own read fills its
 * page and counts the rest as readahead, so pages_filled - ra_pages is the
 * number of synchronous fills: 7 to grow the window (1, 16, ..., 512
 * pages), then none; 14 without the marker for this 32 MiB file.
 */
Test(readahead, slow_scan_never_waits_for_a_window_read_in_the_fault, .timeout = 60)
{
	const size_t size = 32 << 20, win = 2 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE) {
		cr_assert_eq(p[i + 5], pat(i + 5), "offset %zu", i);
		if (i % win == win - PAGE)
			usleep(20000);	/* the reader's work on the window */
	}
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_filled, size / PAGE);
	cr_assert_leq(st.pages_filled - st.ra_pages, 9, "%lu synchronous fills",
		      (unsigned long)(st.pages_filled - st.ra_pages));
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
