/* SPDX-License-Identifier: MIT */
/* Readahead: a sequential scan is served with few, large reads. */
#include "helpers.h"

#include <inttypes.h>

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

/*
 * The readahead workers read without the file's lock (control.c,
 * fill_run).  These tests hold one such read between the store and the
 * cache (UPC_INJECT_DELAY_DONE: the read has its data and hands it over
 * late) and change the file meanwhile.
 */
struct held {
	struct upc_store *store;
	struct upc_cache *c;
	int fd;
	unsigned char *p;
};

#define HELD_SIZE	(64 * PAGE)

/* A cache over a 64-page file, mapped read-only, and a held readahead read of pages [first, first + 16). */
static void held_start(struct held *h, size_t first, long delay_us)
{
	require_upcache();
	h->fd = tmpfile_pattern(HELD_SIZE, NULL);
	cr_assert_eq(upc_store_inject_create(NULL, &h->store), 0);
	UPC_OPTS(upc_cache_opts, o, .store = h->store, .flags = UPC_CACHE_NO_BGWB);
	h->c = cache_new_opts(&o);
	cr_assert_eq(upc_map(h->c, h->fd, 0, HELD_SIZE, PROT_READ, 0, (void **)&h->p), 0);
	cr_assert_eq(upc_store_inject_add(h->store, UPC_IO_READ, (off_t)(first * PAGE), 16 * PAGE,
					  UPC_INJECT_DELAY_DONE, delay_us, 1), 0);
	cr_assert_eq(upc_advise(h->c, h->p + first * PAGE, 16 * PAGE, UPC_ADV_WILLNEED), 0);
	for (int i = 0; i < 3000 && stats_of(h->c).fill_ios == 0; i++)
		usleep(1000);
	cr_assert_eq(stats_of(h->c).fill_ios, 1, "the readahead read has not started");
	usleep(50000);	/* counted before it is submitted: let it reach the store */
}

/* Give the held read the time to hand over and the worker to finish its window (or give up). */
static void held_settle(struct held *h)
{
	for (int i = 0; i < 3000 && stats_of(h->c).pages_cached < 16; i++)
		usleep(1000);
	usleep(100000);
}

/* ... and it did finish the window: all 16 pages are cached. */
static void held_done(struct held *h)
{
	held_settle(h);
	cr_assert_eq(stats_of(h->c).pages_cached, 16);
}

static void held_end(struct held *h)
{
	cr_assert_eq(upc_cache_destroy(h->c), 0);
	cr_assert_eq(upc_store_destroy(h->store), 0);
	close(h->fd);
}

/*
 * The lock kept a page from being faulted in, written, written back and
 * evicted while a read of its old data was in flight.  Here page 5 is
 * written with upc_pwrite (which does not wait for the read), written back
 * and dropped: the read's old copy must not come back as a cached page.
 * The write-back moved the file's store generation, so the worker reads
 * the window again.
 */
Test(readahead, a_window_read_while_its_page_is_written_back_is_not_inserted_stale, .timeout = 60)
{
	unsigned char newpage[PAGE], back[PAGE];
	struct held h;

	held_start(&h, 0, 600000);
	memset(newpage, 0xb5, sizeof(newpage));
	cr_assert_eq(upc_pwrite(h.c, h.fd, newpage, PAGE, 5 * PAGE), PAGE);
	cr_assert_eq(upc_fsync(h.c, h.fd), 0);
	cr_assert_eq(upc_invalidate(h.c, h.fd, 5 * PAGE, PAGE), 0);
	cr_assert_eq(pread(h.fd, back, PAGE, 5 * PAGE), PAGE);
	cr_assert_eq(memcmp(back, newpage, PAGE), 0, "the store does not have the write");
	held_done(&h);
	cr_assert_eq(h.p[5 * PAGE], 0xb5, "page 5 is the readahead's stale copy: %#x", h.p[5 * PAGE]);
	cr_assert_eq(memcmp(h.p + 5 * PAGE, newpage, PAGE), 0);
	for (size_t i = 0; i < 16 * PAGE; i += PAGE)
		if (i != 5 * PAGE)
			cr_assert_eq(h.p[i + 9], pat(i + 9), "offset %zu", i);
	held_end(&h);
}

/*
 * A fault on a page a readahead worker is reading (without the file's
 * lock) waits for that read, as the kernel's fault waits on a locked
 * folio, and does not read the page a second time.
 */
Test(readahead, a_fault_on_a_page_being_read_ahead_waits_for_that_read, .timeout = 60)
{
	struct held h;

	held_start(&h, 0, 300000);
	cr_assert_eq(h.p[3 * PAGE + 1], pat(3 * PAGE + 1));
	struct upc_stats st = stats_of(h.c);
	cr_assert_eq(st.fill_ios, 1, "the fault read its page again: %lu reads", (unsigned long)st.fill_ios);
	cr_assert_eq(st.pages_filled, 16);
	held_end(&h);
}

/*
 * The same race with a truncation: the file is cut to 8 pages and grown
 * back while the held read has the old data of pages 0-15; pages 8-15 are
 * zeros in the file now, and must not come back as they were.
 */
Test(readahead, a_window_read_across_a_truncation_is_not_inserted_stale, .timeout = 60)
{
	struct held h;

	held_start(&h, 0, 600000);
	cr_assert_eq(upc_ftruncate(h.c, h.fd, 8 * PAGE), 0);
	cr_assert_eq(upc_ftruncate(h.c, h.fd, HELD_SIZE), 0);
	held_done(&h);
	for (size_t i = 0; i < 8 * PAGE; i += PAGE)
		cr_assert_eq(h.p[i + 9], pat(i + 9), "offset %zu", i);
	for (size_t i = 8 * PAGE; i < 16 * PAGE; i += PAGE)
		cr_assert_eq(h.p[i + 9], 0, "offset %zu: the readahead's copy from before the truncation", i);
	held_end(&h);
}

/*
 * upc_invalidate(3) and upc_drop(3) while the held read has the old data
 * of a page written behind the cache's back: the next touch reads the file
 * again, as the calls promise; the held read is not inserted.
 */
static void drop_during_held_read(bool invalidate)
{
	unsigned char newpage[PAGE];
	struct held h;

	held_start(&h, 0, 600000);
	memset(newpage, 0xb5, sizeof(newpage));
	cr_assert_eq(pwrite(h.fd, newpage, PAGE, 5 * PAGE), PAGE);	/* behind the cache's back */
	if (invalidate)
		cr_assert_eq(upc_invalidate(h.c, h.fd, 0, 0), 0);
	else
		cr_assert_geq(upc_drop(h.c, 0), 0);
	held_done(&h);
	cr_assert_eq(h.p[5 * PAGE], 0xb5, "page 5 is the readahead's copy from before the %s: %#x",
		     invalidate ? "upc_invalidate" : "upc_drop", h.p[5 * PAGE]);
	cr_assert_eq(h.p[4 * PAGE + 9], pat(4 * PAGE + 9));
	held_end(&h);
}

Test(readahead, an_invalidate_during_a_held_readahead_read_reads_the_file_again, .timeout = 60)
{
	drop_during_held_read(true);
}

Test(readahead, a_drop_during_a_held_readahead_read_reads_the_file_again, .timeout = 60)
{
	drop_during_held_read(false);
}

/*
 * A shrink behind the cache's back, seen by a short read (fill_valid ->
 * file_shrunk) while the held read has pages past the new end, then growth
 * through the cache: the pages between read as zeros, not as the held
 * read's copy of what they were.
 */
Test(readahead, a_shrink_seen_during_a_held_readahead_read_leaves_no_old_page, .timeout = 60)
{
	unsigned char b[PAGE], zero[PAGE] = { 0 };
	struct held h;

	held_start(&h, 16, 600000);
	cr_assert_eq(ftruncate(h.fd, 8 * PAGE), 0);			/* behind the cache's back */
	cr_assert_eq(upc_pread(h.c, h.fd, b, PAGE, 10 * PAGE), 0, "the shrink is seen: end of file");
	held_settle(&h);	/* pages 16-31 are past the end now: none may be inserted */
	cr_assert_eq(upc_pwrite(h.c, h.fd, "x", 1, 40 * PAGE), 1);	/* grows the file through the cache */
	cr_assert_eq(upc_pread(h.c, h.fd, b, PAGE, 20 * PAGE), PAGE);
	cr_assert_eq(memcmp(b, zero, PAGE), 0, "page 20 holds its bytes from before the shrink (%#x)", b[9]);
	held_end(&h);
}

/*
 * A file cached through a read-only descriptor is written through a
 * writable one while two workers stream 32 windows of readahead: the write
 * swaps the store handle without waiting for the readahead to run dry (it
 * did, when the swap waited for no read to be in flight: two workers
 * streaming always have one).  Counted, not timed: the write returns with
 * most of the 32 reads still to come.
 */
Test(readahead, a_write_through_a_writable_descriptor_does_not_wait_for_readahead, .timeout = 120)
{
	const size_t size = 64 << 20, reads = size / PAGE / 512;
	char path[64];
	struct upc_store *store;
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, path), rfd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *p;
	uint64_t after;

	require_upcache();
	cr_assert(rfd >= 0);
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	UPC_OPTS(upc_cache_opts, o, .store = store, .flags = UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_READ, 0, size, UPC_INJECT_DELAY_DONE, 50000, -1), 0);
	cr_assert_eq(upc_map(c, rfd, 0, size, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, size / 2, UPC_ADV_WILLNEED), 0);
	cr_assert_eq(upc_advise(c, p + size / 2, size / 2, UPC_ADV_WILLNEED), 0);
	for (int i = 0; i < 3000 && stats_of(c).fill_ios < 2; i++)
		usleep(1000);
	cr_assert_eq(upc_pwrite(c, fd, "x", 1, 0), 1);
	after = stats_of(c).fill_ios;
	cr_assert_lt(after, reads / 2, "the write waited for %lu of the %zu readahead reads",
		     (unsigned long)after, reads);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(rfd);
	close(fd);
}

/* Is the page at @addr mapped in this process's page table (pagemap's PM_PRESENT)? */
static bool pte_present(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t ent = 0;

	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, &ent, sizeof(ent), (off_t)((uintptr_t)addr / PAGE * sizeof(ent))),
		     (ssize_t)sizeof(ent));
	close(fd);
	return ent >> 63;
}

/*
 * A window read ahead for a scan goes into the scan's mapping as it is
 * inserted (fault.c, ra_map_insert), not only into the cache: the scan
 * takes one fault a window, on its first page, which the worker leaves
 * out so that its fault queues the next window (the kernel's fault-around
 * leaves a PG_readahead folio to filemap_fault()).  Through the cache only,
 * the scan mapped each window with MINOR faults and UFFDIO_CONTINUE under
 * the file's lock, which the next window's insert waited for.  Here a slow
 * reader stops at the start of window 8, whose next windows are read by
 * then: their pages are in its page table before it touches them, but
 * for each window's first page.
 */
Test(readahead, a_window_read_ahead_for_a_scan_is_mapped_into_it, .timeout = 60)
{
	const size_t size = 32 << 20, win = 512 * PAGE;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	const size_t first = 1 + 16 + 32 + 64 + 128 + 256;	/* the growing windows; then 512 pages each */
	size_t stop;
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	stop = first * PAGE + 8 * win;
	for (size_t i = 0; i < stop; i += PAGE) {
		cr_assert_eq(p[i + 5], pat(i + 5), "offset %zu", i);
		if ((i / PAGE) % 512 == first % 512)
			usleep(20000);	/* the reader's work on the window */
	}
	/* Windows 1 and 2 ahead are queued by now; wait for their reads (a loaded machine is slow). */
	for (int t = 0; t < 5000 && !pte_present(p + stop + 2 * win - PAGE); t++)
		usleep(1000);
	for (size_t w = 0; w < 2; w++) {
		const unsigned char *ws = p + stop + w * win;

		cr_assert_not(pte_present(ws), "window %zu: its first page is mapped: no fault queues the "
			      "next", w + 1);
		for (size_t i = 1; i < 512; i += 37)
			cr_assert(pte_present(ws + i * PAGE), "window %zu, page %zu not mapped", w + 1, i);
	}
	uint64_t minor = stats_of(c).faults_minor;

	for (size_t i = stop; i < stop + 2 * win; i += PAGE)
		cr_assert_eq(p[i + 5], pat(i + 5), "offset %zu", i);
	cr_assert_eq(stats_of(c).faults_minor - minor, 2, "%lu MINOR faults for two windows",
		     (unsigned long)(stats_of(c).faults_minor - minor));
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A page that went into a writable mapping with its window is mapped
 * write-protected, as a fault's page is (I1): a write to it is seen, and
 * msync writes it back.  Mapped writable, the writes would reach the
 * memfd unseen and the file would keep its old bytes.
 */
Test(readahead, a_write_to_a_page_read_ahead_into_the_mapping_is_written_back, .timeout = 60)
{
	const size_t size = 16 << 20;
	char path[64];
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, path), rfd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *p, b;
	size_t n = 0;

	cr_assert(rfd >= 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size / 2; i += PAGE)
		cr_assert_eq(p[i], pat(i), "offset %zu", i);
	/* The windows queued ahead are read and mapped (they are not all, under a small $UPC_MEM_LIMIT). */
	for (int t = 0; t < 5000 && !pte_present(p + size / 2 + 1024 * PAGE); t++)
		usleep(1000);
	for (size_t i = 3 * PAGE; i < size; i += 101 * PAGE, n++)
		p[i + 9] = (unsigned char)~pat(i + 9);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	for (size_t i = 3 * PAGE; i < size; i += 101 * PAGE) {
		cr_assert_eq(pread(rfd, &b, 1, (off_t)(i + 9)), 1);
		cr_assert_eq(b, (unsigned char)~pat(i + 9), "offset %zu: the write did not reach the file", i + 9);
	}
	cr_assert_geq(stats_of(c).pages_written, n);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(rfd);
	close(fd);
}

/*
 * The readahead queue holds RA_QUEUE_MAX (256) windows at most: past them a
 * UPC_ADV_WILLNEED is a hint not taken (0, nothing queued).  Both workers
 * here wait a second in a read; 400 more windows are asked for meanwhile,
 * and no more than 256 of them are read ahead after.  Unbounded, the queue
 * took them all, and in upcd, where a client's file can keep the workers
 * as long as it likes (a FUSE file it serves), it grew for good.
 */
Test(readahead, a_full_queue_takes_no_more_windows, .timeout = 60)
{
	const size_t size = 512 * PAGE;
	struct upc_store *store;
	struct upc_cache *c;
	uint64_t ra = 0, was;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_READ, 0, 2 * PAGE, UPC_INJECT_DELAY, 1000000, 2), 0);
	UPC_OPTS(upc_cache_opts, o, .store = store, .flags = UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, PAGE, UPC_ADV_WILLNEED), 0);
	cr_assert_eq(upc_advise(c, p + PAGE, PAGE, UPC_ADV_WILLNEED), 0);
	usleep(200 * 1000);	/* each worker in its read of a second */
	for (size_t i = 10; i < 410; i++)
		cr_assert_eq(upc_advise(c, p + i * PAGE, PAGE, UPC_ADV_WILLNEED), 0, "window %zu", i);
	do {
		was = ra;
		usleep(1500 * 1000);
		ra = stats_of(c).ra_pages;
	} while (ra != was);
	cr_assert_leq(ra, 2 + 256, "%" PRIu64 " pages read ahead: the queue took more than 256 windows", ra);
	cr_assert_geq(ra, 2 + 200, "%" PRIu64 " pages read ahead", ra);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(p[i + 5], pat(i + 5), "offset %zu", i);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(fd);
}
