/* SPDX-License-Identifier: MIT */
/* Pins: resident, never torn down; NOWRITEBACK holds data back (WAL ordering). */
#include "helpers.h"

Test(pin, pinned_pages_survive_drop_and_pressure, .timeout = 120)
{
	const size_t limit = 2 << 20, size = 8 << 20;
	UPC_OPTS(upc_cache_opts, o, .mem_limit = limit);
	struct upc_cache *c = cache_new_opts(&o);
	int fd = tmpfile_pattern(size, NULL);
	volatile unsigned char *p;
	unsigned long sink = 0;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, (void *)p, 64 * PAGE, 0), 0);
	cr_assert_eq(stats_of(c).pages_pinned, 64);
	uint64_t cached = stats_of(c).pages_cached;
	cr_assert_eq(upc_drop(c, 0), (int)cached - 64, "drop took a pinned page");
	cr_assert_eq(stats_of(c).pages_cached, 64);
	for (size_t i = 64 * PAGE; i < size; i += PAGE)
		sink += p[i];
	/*
	 * A pinned page stays mapped: touching it faults nothing (an evicted
	 * one would be a MISSING fault).  Not pages_filled: a readahead
	 * window of the scan may still be completing, which is no pinned
	 * page's fill (it failed so, 1 run in 100: 128 pages, all readahead).
	 */
	struct upc_stats s0 = stats_of(c), s1;
	for (size_t i = 0; i < 64 * PAGE; i += PAGE)
		sink += p[i];
	s1 = stats_of(c);
	cr_assert_eq(s1.faults_missing + s1.faults_minor, s0.faults_missing + s0.faults_minor,
		     "a pinned page was evicted: touching it faulted");
	cr_assert_eq(upc_unpin(c, (void *)p, 64 * PAGE), 0);
	cr_assert_eq(stats_of(c).pages_pinned, 0);
	(void)sink;
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(pin, nowriteback_holds_data_until_unpin, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(64 * PAGE, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p, 4 * PAGE, UPC_PIN_NOWRITEBACK), 0);
	p[0] = 0xD1;		/* a data page, held */
	p[PAGE] = 0xD2;		/* held too */
	p[10 * PAGE] = 0xD3;	/* not pinned */
	/* msync writes what is not held and says how many dirty pages it held back. */
	cr_assert_eq(upc_msync(c, p, 64 * PAGE, UPC_MS_SYNC), 2);
	cr_assert_eq(pread(fd, &x, 1, 10 * PAGE), 1);
	cr_assert_eq(x, 0xD3);
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, pat(0), "a held page reached the file");
	cr_assert_eq(stats_of(c).pages_dirty, 2);
	/* The log is durable: release the data pages. */
	cr_assert_eq(upc_unpin(c, p, 4 * PAGE), 0);
	cr_assert_eq(upc_msync(c, p, 64 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, 0xD1);
	cr_assert_eq(pread(fd, &x, 1, PAGE), 1);
	cr_assert_eq(x, 0xD2);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(pin, pins_nest_and_hold_until_the_last_unpin, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p, PAGE, UPC_PIN_NOWRITEBACK), 0);
	cr_assert_eq(upc_pin(c, p, PAGE, 0), 0);
	p[0] = 1;
	cr_assert_eq(upc_unpin(c, p, PAGE), 0);
	cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC), 1, "still held by the first pin");
	cr_assert_eq(upc_unpin(c, p, PAGE), 0);
	cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(upc_unpin(c, p, PAGE), -EINVAL, "not pinned any more");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A page's pin count is 16 bits: its 65536th pin is refused (-ENOMEM), and
 * pins nothing of its range.  It wrapped to 0 before, and the page counted
 * as pinned by none while 65536 pins held it (and its write-back, for a
 * UPC_PIN_NOWRITEBACK one).
 */
Test(pin, a_page_pinned_65535_times_is_pinned_no_more, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	struct upc_stats st = { .sz = sizeof(st) };
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (unsigned int i = 0; i < UINT16_MAX; i++)
		cr_assert_eq(upc_pin(c, p, PAGE, UPC_PIN_NOWRITEBACK), 0, "pin %u", i);
	cr_assert_eq(upc_pin(c, p, 2 * PAGE, UPC_PIN_NOWRITEBACK), -ENOMEM);
	cr_assert_eq(upc_pin(c, p + PAGE, PAGE, 0), 0, "the refused pin left the next page pinned");
	cr_assert_eq(upc_unpin(c, p + PAGE, PAGE), 0);
	cr_assert_eq(upc_unpin(c, p + PAGE, PAGE), -EINVAL, "the refused pin pinned the next page");
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_pinned, 1);
	p[0] = 1;
	for (unsigned int i = 1; i < UINT16_MAX; i++)
		cr_assert_eq(upc_unpin(c, p, PAGE), 0, "unpin %u", i);
	cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC), 1, "held back by the last pin");
	cr_assert_eq(upc_unpin(c, p, PAGE), 0);
	cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(upc_unpin(c, p, PAGE), -EINVAL, "not pinned any more");
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_pinned, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(pin, bad_input_and_busy, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(16 * PAGE, NULL), rfd;
	char path[64];
	unsigned char *p, *r;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	rfd = open(path, O_RDONLY);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_map(c, rfd, 0, 16 * PAGE, PROT_READ, 0, (void **)&r), 0);
	cr_assert_eq(upc_pin(c, p + 1, PAGE, 0), -EINVAL);
	cr_assert_eq(upc_pin(c, p, 0, 0), -EINVAL);
	cr_assert_eq(upc_pin(c, p, PAGE, 0x80), -EINVAL);
	cr_assert_eq(upc_pin(c, p, 17 * PAGE, 0), -EINVAL, "not wholly mapped");
	cr_assert_eq(upc_pin(c, r, PAGE, UPC_PIN_WRITE), -EACCES);
	cr_assert_eq(upc_unpin(c, p, PAGE), -EINVAL, "not pinned");
	cr_assert_eq(stats_of(c).pages_pinned, 0, "a refused call pinned something");

	cr_assert_eq(upc_pin(c, p + 2 * PAGE, 2 * PAGE, 0), 0);
	cr_assert_eq(upc_unmap(c, p, 16 * PAGE), -EBUSY, "I6: a pinned page is not unmapped");
	cr_assert_eq(upc_protect(c, p, 16 * PAGE, PROT_NONE), -EBUSY);
	cr_assert_eq(upc_advise(c, p, 16 * PAGE, UPC_ADV_FREE), -EBUSY);
	cr_assert_eq(upc_unpin(c, p, 4 * PAGE), -EINVAL, "pages 0 and 1 are not pinned: nothing changes");
	cr_assert_eq(stats_of(c).pages_pinned, 2);
	cr_assert_eq(upc_unpin(c, p + 2 * PAGE, 2 * PAGE), 0);
	cr_assert_eq(upc_unmap(c, p, 16 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
	close(rfd);
}

Test(pin, a_pinned_range_takes_kernel_writes, .timeout = 60)
{
	const size_t n = 8 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(n, NULL), src = tmpfile_pattern(n, NULL);
	unsigned char *p, buf[PAGE];

	memset(buf, 0x6b, sizeof(buf));
	cr_assert_eq(pwrite(src, buf, PAGE, 2 * PAGE), (ssize_t)PAGE);
	cr_assert_eq(upc_map(c, fd, 0, n, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p, n, UPC_PIN_WRITE), 0);
	/* The kernel writes into the mapping: read(2) from another file. */
	cr_assert_eq(pread(src, p + 2 * PAGE, PAGE, 2 * PAGE), (ssize_t)PAGE);
	cr_assert_eq(upc_unpin(c, p, n), 0);
	cr_assert_eq(upc_msync(c, p, n, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, buf, PAGE, 2 * PAGE), (ssize_t)PAGE);
	for (size_t i = 0; i < PAGE; i++)
		cr_assert_eq(buf[i], 0x6b);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
	close(src);
}

Test(pin, read_error_while_pinning_pins_nothing, .timeout = 60)
{
	struct upc_store *s;
	struct upc_cache *c;
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	unsigned char *p;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &s), 0);
	o.store = s;
	c = cache_new_opts(&o);
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_READ, 9 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, 16 * PAGE, UPC_ADV_RANDOM), 0);
	cr_assert_eq(upc_pin(c, p, 16 * PAGE, 0), -EFAULT);
	cr_assert_eq(stats_of(c).pages_pinned, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(s), 0);
	close(fd);
}

/*
 * Regression: reclaim re-protects what it punched, once per run.  Merging two
 * runs across a pinned page in between (a "clean gap") erased that page's
 * written state under asynchronous tracking, where the uffd-wp bit is the
 * dirty bit; the write never reached the file.
 */
Test(pin, a_written_pinned_page_between_dropped_runs_keeps_its_write, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(64 * PAGE, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p + 10 * PAGE, PAGE, UPC_PIN_NOWRITEBACK), 0);
	p[10 * PAGE + 5] = 0x7e;
	cr_assert_eq(upc_drop(c, 0), 63, "pages 0-9 and 11-63 are clean and unpinned");
	cr_assert_eq(upc_unpin(c, p + 10 * PAGE, PAGE), 0);
	cr_assert_eq(upc_msync(c, p, 64 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 10 * PAGE + 5), 1);
	cr_assert_eq(x, 0x7e, "the write to the pinned page was lost");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* A page pinned for kernel writes stays writable and dirty across write-back, until unpinned. */
Test(pin, a_write_pin_stays_writable_and_dirty_across_writeback, .timeout = 60)
{
	const size_t n = 4 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(n, NULL), src = tmpfile_pattern(n, NULL);
	unsigned char *p, buf[PAGE];

	cr_assert_eq(upc_map(c, fd, 0, n, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p, n, UPC_PIN_WRITE), 0);
	cr_assert_eq(upc_msync(c, p, n, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 4, "pages pinned for writing must stay dirty");
	uint64_t wp = stats_of(c).faults_wp;
	/* The kernel writes through the pin after a write-back: no trap needed. */
	memset(buf, 0x6c, sizeof(buf));
	cr_assert_eq(pwrite(src, buf, PAGE, PAGE), (ssize_t)PAGE);
	cr_assert_eq(pread(src, p + PAGE, PAGE, PAGE), (ssize_t)PAGE);
	cr_assert_eq(stats_of(c).faults_wp, wp, "write-back re-protected a write-pinned page");
	cr_assert_eq(upc_unpin(c, p, n), 0);
	cr_assert_eq(upc_msync(c, p, n, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	cr_assert_eq(pread(fd, buf, PAGE, PAGE), (ssize_t)PAGE);
	cr_assert_eq(buf[100], 0x6c);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
	close(src);
}

/*
 * Write-back protects close dirty runs in one ioctl across the clean gap
 * between them; a page pinned for write in that gap must not be protected
 * with them ("writable until unpinned"; as uid 65534 the kernel's write
 * into it would fail with EFAULT: tests/test_pin_unpriv.c).  Here: pages 3
 * and 9 dirty around a write pin of pages 4-7; after upc_msync a write to
 * the pin must not trap.
 */
Test(pin, write_back_across_a_gap_leaves_a_write_pin_writable, .timeout = 60)
{
	const size_t n = 16 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(n, NULL);
	unsigned char *p;
	uint64_t wp;

	cr_assert_eq(upc_map(c, fd, 0, n, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p + 4 * PAGE, 4 * PAGE, UPC_PIN_WRITE), 0);
	p[3 * PAGE] = 0x33;
	p[9 * PAGE] = 0x99;
	cr_assert_eq(upc_msync(c, p, n, UPC_MS_SYNC), 0);
	wp = stats_of(c).faults_wp;
	for (size_t i = 4; i < 8; i++)
		p[i * PAGE + 5] = (unsigned char)i;
	cr_assert_eq(stats_of(c).faults_wp, wp, "write-back protected %llu write-pinned pages in a gap",
		     (unsigned long long)(stats_of(c).faults_wp - wp));
	cr_assert_eq(upc_unpin(c, p + 4 * PAGE, 4 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A UPC_PIN_NOWRITEBACK pin taken while a write-back is reading the page
 * (here a clean page written in a gap between dirty ones, its write
 * delayed by the fault-injection store) returns only once that I/O is
 * done: a write made after the pin must not reach the file through it,
 * before the log the pin waits for.
 */
Test(pin, a_nowriteback_pin_waits_for_write_back_in_flight, .timeout = 60)
{
	const size_t size = 32 * PAGE;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_store *s;
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;
	pthread_t t;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &s), 0);
	o.store = s;
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t pg = 0; pg < 32; pg++)
		cr_assert_eq(p[pg * PAGE], pat(pg * PAGE));
	p[10 * PAGE] = 0x91;
	p[14 * PAGE] = 0x92;
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_WRITE, 10 * PAGE, 5 * PAGE, UPC_INJECT_DELAY, 300000, 1), 0);
	struct bg_msync b = { .c = c, .p = p, .len = size };
	cr_assert_eq(pthread_create(&t, NULL, bg_msync_main, &b), 0);
	for (int i = 0; i < 2000 && stats_of(c).pages_writeback == 0; i++)
		usleep(1000);
	cr_assert_gt(stats_of(c).pages_writeback, 0);
	cr_assert_eq(upc_pin(c, p + 12 * PAGE, PAGE, UPC_PIN_NOWRITEBACK), 0);
	cr_assert_eq(stats_of(c).pages_writeback, 0, "the pin returned with its page under write-back");
	p[12 * PAGE] = 0x93;	/* the next transaction's data: held */
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(b.ret, 0);
	cr_assert_eq(pread(fd, &x, 1, 12 * PAGE), 1);
	cr_assert_eq(x, pat(12 * PAGE), "a write after the pin reached the file");
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 1, "held back");
	cr_assert_eq(pread(fd, &x, 1, 12 * PAGE), 1);
	cr_assert_eq(x, pat(12 * PAGE));
	cr_assert_eq(upc_unpin(c, p + 12 * PAGE, PAGE), 0);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 12 * PAGE), 1);
	cr_assert_eq(x, 0x93);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(s), 0);
	close(fd);
}

/*
 * A process's pins are recorded per address space as ranges with counts
 * (control.c, "Whose pins"): overlapping pins, pins through two mappings of
 * one file, and unpins of pieces of them must leave every page pinned
 * exactly as often as it was pinned and not unpinned, and an unpin of a
 * page not pinned (or not pinned as often) changes nothing.
 */
Test(pin, overlapping_pins_and_partial_unpins_count_every_page, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(32 * PAGE, NULL);
	unsigned char *p, *q;

	cr_assert_eq(upc_map(c, fd, 0, 32 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_map(c, fd, 8 * PAGE, 8 * PAGE, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(upc_pin(c, p, 8 * PAGE, 0), 0);			/* 0-7 */
	cr_assert_eq(upc_pin(c, p + 8 * PAGE, 4 * PAGE, 0), 0);	/* 8-11: one range with 0-7 */
	cr_assert_eq(upc_pin(c, p + 4 * PAGE, 8 * PAGE, 0), 0);	/* 4-11 twice */
	cr_assert_eq(upc_pin(c, q + 2 * PAGE, 4 * PAGE, 0), 0);	/* 10-13 through the other mapping */
	cr_assert_eq(stats_of(c).pages_pinned, 14);
	/* counts now: 0-3 x1, 4-9 x2, 10-11 x3, 12-13 x1 */
	cr_assert_eq(upc_unpin(c, p + 14 * PAGE, PAGE), -EINVAL, "page 14 was never pinned");
	cr_assert_eq(upc_unpin(c, p + 12 * PAGE, 3 * PAGE), -EINVAL, "12-14: 14 is not pinned");
	cr_assert_eq(stats_of(c).pages_pinned, 14, "a refused unpin changed something");
	cr_assert_eq(upc_unpin(c, p, 12 * PAGE), 0);			/* 0-3 x0, 4-9 x1, 10-11 x2 */
	cr_assert_eq(stats_of(c).pages_pinned, 10);
	cr_assert_eq(upc_unpin(c, p, PAGE), -EINVAL, "page 0 is not pinned any more");
	cr_assert_eq(upc_unpin(c, q, 6 * PAGE), 0);			/* 8-13 through q: 8-9 x0, 10-11 x1, 12-13 x0 */
	cr_assert_eq(stats_of(c).pages_pinned, 6);			/* 4-7, 10-11 */
	cr_assert_eq(upc_unpin(c, p + 4 * PAGE, 8 * PAGE), -EINVAL, "8-9 are not pinned");
	cr_assert_eq(upc_unpin(c, p + 4 * PAGE, 4 * PAGE), 0);
	cr_assert_eq(upc_unpin(c, p + 10 * PAGE, 2 * PAGE), 0);
	cr_assert_eq(stats_of(c).pages_pinned, 0);
	cr_assert_eq(upc_unpin(c, p + 10 * PAGE, PAGE), -EINVAL);
	/* pinned whole again: unmap is refused while it is, and works after */
	cr_assert_eq(upc_pin(c, p, 32 * PAGE, 0), 0);
	cr_assert_eq(upc_unmap(c, p, 32 * PAGE), -EBUSY);
	cr_assert_eq(upc_unpin(c, p, 32 * PAGE), 0);
	cr_assert_eq(upc_unmap(c, p, 32 * PAGE), 0);
	cr_assert_eq(upc_unmap(c, q, 8 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
