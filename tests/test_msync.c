/* SPDX-License-Identifier: MIT */
/* Write-back: what msync writes, in how many I/Os, and what it leaves alone. */
#include "helpers.h"

#include <time.h>

Test(msync, write_then_msync_reaches_the_file, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, buf[PAGE];

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	memset(p + 3 * PAGE, 0xEE, PAGE);
	p[200 * PAGE + 17] = 0x42;
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_dirty, 2);
	/* Not written until msync (no background writer here). */
	cr_assert_eq(pread(fd, buf, PAGE, 3 * PAGE), (ssize_t)PAGE);
	cr_assert_eq(buf[0], pat(3 * PAGE));

	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, buf, PAGE, 3 * PAGE), (ssize_t)PAGE);
	for (size_t i = 0; i < PAGE; i++)
		cr_assert_eq(buf[i], 0xEE);
	cr_assert_eq(pread(fd, buf, 1, 200 * PAGE + 17), 1);
	cr_assert_eq(buf[0], 0x42);
	st = stats_of(c);
	cr_assert_eq(st.pages_dirty, 0);
	cr_assert_eq(st.pages_written, 2);
	cr_assert_eq(st.syncs, 1);

	/* Clean now: another msync writes nothing; the next write traps again. */
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_written, 2);
	uint64_t dirty = stats_of(c).pages_dirty;
	p[3 * PAGE] = 1;
	cr_assert_eq(stats_of(c).pages_dirty, dirty + 1, "a cleaned page must be write-protected again");
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(msync, contiguous_pages_coalesce_into_few_writes, .timeout = 60)
{
	const size_t size = 4 << 20;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t pg = 10; pg < 10 + 64; pg++)
		p[pg * PAGE] = 1;
	for (size_t pg = 500; pg < 500 + 300; pg++)	/* 1.17 MiB: two I/Os of at most 1 MiB */
		p[pg * PAGE] = 2;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_written, 364);
	cr_assert_eq(st.wb_ios, 3, "got %lu write I/Os", (unsigned long)st.wb_ios);
	cr_assert_eq(st.wp_calls, 2, "one protect call per run, got %lu", (unsigned long)st.wp_calls);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(msync, only_the_range_is_written, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 9;
	p[40 * PAGE] = 9;
	cr_assert_eq(upc_msync(c, p + 32 * PAGE, 32 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 40 * PAGE), 1);
	cr_assert_eq(x, 9);
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, pat(0), "page 0 is outside the range");
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

static void wait_written(int fd, off_t off, unsigned char want, int seconds)
{
	unsigned char x = 0;

	for (int i = 0; i < seconds * 100; i++) {
		cr_assert_eq(pread(fd, &x, 1, off), 1);
		if (x == want)
			return;
		usleep(10000);
	}
	cr_assert_fail("not written back within %d s", seconds);
}

Test(msync, async_flag_schedules_background_writeback, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = cache_new(0);	/* background writer on, 30 s expiry */
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[5 * PAGE] = 0x31;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_ASYNC), 0);
	wait_written(fd, 5 * PAGE, 0x31, 10);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(msync, async_flag_without_background_writer_writes_now, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[6 * PAGE] = 0x32;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_ASYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 6 * PAGE), 1);
	cr_assert_eq(x, 0x32);
	cr_assert_eq(stats_of(c).syncs, 0, "UPC_MS_ASYNC does not fdatasync");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(msync, dirty_pages_expire_in_the_background, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = NULL;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;

	require_upcache();
	UPC_OPTS(upc_cache_opts, o, .dirty_expire_ms = 300, .writeback_interval_ms = 100);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[7 * PAGE] = 0x33;
	/* Not at once: younger than the expiry. */
	usleep(50000);
	cr_assert_eq(pread(fd, &x, 1, 7 * PAGE), 1);
	cr_assert_eq(x, pat(7 * PAGE));
	wait_written(fd, 7 * PAGE, 0x33, 10);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(msync, unmap_keeps_dirty_and_destroy_writes_it, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	char path[256];
	/* Linked: an unlinked file is written back and released as soon as it is unused (upcache(7)). */
	int fd = tmpfile_pattern(size, path);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[9 * PAGE] = 0x34;
	cr_assert_eq(upc_unmap(c, p, size), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 1, "I5: unmapping keeps the dirty state");
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(pread(fd, &x, 1, 9 * PAGE), 1);
	cr_assert_eq(x, 0x34, "destroy writes back what no mapping holds any more");
	close(fd);
	unlink(path);
}

Test(msync, destroy_writes_everything_back, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *buf = malloc(size);

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += 1000)
		p[i] = (unsigned char)(i / 1000);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	for (size_t i = 0; i < size; i++)
		cr_assert_eq(buf[i], i % 1000 ? pat(i) : (unsigned char)(i / 1000), "offset %zu", i);
	free(buf);
	close(fd);
}

/* The O_DIRECT file store: reads, writes (the unaligned tail goes through a buffered fd). */
Test(msync, direct_io_store_round_trip, .timeout = 60)
{
	const size_t size = 64 * PAGE + 1000;
	int fd = tmpfile_pattern(size, NULL), dfd;
	struct upc_cache *c;
	unsigned char *p, *buf = malloc(size);
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	dfd = open(path, O_RDWR | O_DIRECT);
	if (dfd < 0)
		cr_skip_test("the test directory's filesystem refuses O_DIRECT (%s)", strerror(errno));
	close(dfd);
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_DIRECT_IO | UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += 311)
		cr_assert_eq(p[i], pat(i), "offset %zu", i);
	memset(p + 10 * PAGE, 0x3c, 3 * PAGE);
	p[64 * PAGE + 999] = 0x3d;	/* the partial last page */
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	for (size_t i = 0; i < size; i++) {
		unsigned char want = (i >= 10 * PAGE && i < 13 * PAGE) ? 0x3c : i == 64 * PAGE + 999 ? 0x3d : pat(i);

		cr_assert_eq(buf[i], want, "offset %zu", i);
	}
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_size, (off_t)size);
	free(buf);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * Write-back clustering (writeback.c): a short gap of cached, clean pages
 * between dirty ones is written with them, in one I/O, with the data the
 * file already has; a longer gap, or one with a page that is not cached,
 * is not.  pages_written counts the dirty pages only.
 */
static void read_pages(const unsigned char *p, size_t from, size_t to)
{
	for (size_t pg = from; pg < to; pg++)
		cr_assert_eq(p[pg * PAGE + 5], pat(pg * PAGE + 5), "page %zu", pg);
}

Test(msync, short_clean_gaps_are_written_with_the_dirty_pages, .timeout = 60)
{
	const size_t size = 128 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *buf = malloc(size);

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, size, UPC_ADV_RANDOM), 0);	/* only what is touched is cached */
	read_pages(p, 10, 15);
	read_pages(p, 40, 70);
	read_pages(p, 100, 104);
	read_pages(p, 105, 108);	/* page 104 is not cached */
	p[10 * PAGE] = 0xa1;	/* 11-13: a gap of 3 cached clean pages: joined */
	p[14 * PAGE] = 0xa2;
	p[40 * PAGE] = 0xa3;	/* 41-69: 29 pages, longer than the bound: not joined */
	p[70 * PAGE] = 0xa4;
	p[100 * PAGE] = 0xa5;	/* 101-106: page 104 is not cached: not joined */
	p[107 * PAGE] = 0xa6;
	/* The clean pages' data in the memfd is the file's: nothing else may be written. */
	struct upc_stats before = stats_of(c);
	cr_assert_eq(before.pages_dirty, 6);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_written - before.pages_written, 6, "pages_written counts the dirty pages");
	cr_assert_eq(st.wb_gap_pages - before.wb_gap_pages, 3, "only 11-13 are a gap to write, got %lu",
		     (unsigned long)(st.wb_gap_pages - before.wb_gap_pages));
	cr_assert_eq(st.wb_ios - before.wb_ios, 5, "10-14 in one I/O, the others alone: got %lu",
		     (unsigned long)(st.wb_ios - before.wb_ios));
	cr_assert_eq(st.pages_dirty, 0);
	cr_assert_eq(st.pages_writeback, 0, "the gap pages' write-back ended");
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	for (size_t i = 0; i < size; i++) {
		unsigned char want = pat(i);

		if (i % PAGE == 0 && (i / PAGE == 10 || i / PAGE == 14 || i / PAGE == 40 || i / PAGE == 70 ||
				      i / PAGE == 100 || i / PAGE == 107))
			want = i / PAGE == 10 ? 0xa1 : i / PAGE == 14 ? 0xa2 : i / PAGE == 40 ? 0xa3 :
			       i / PAGE == 70 ? 0xa4 : i / PAGE == 100 ? 0xa5 : 0xa6;
		cr_assert_eq(buf[i], want, "offset %zu (page %zu)", i, i / PAGE);
	}
	/* The gap pages stayed clean and protected: a write to one is a new dirty page. */
	p[12 * PAGE + 1] = 0xb1;
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, buf, 2, 12 * PAGE), 2);
	cr_assert_eq(buf[1], 0xb1);
	cr_assert_eq(buf[0], pat(12 * PAGE));
	free(buf);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* A gap before the partial last page: the I/O ends at end of file; the file does not grow. */
Test(msync, a_gap_up_to_the_last_page_does_not_extend_the_file, .timeout = 60)
{
	const size_t size = 20 * PAGE + 100;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;
	struct stat sb;

	cr_assert_eq(upc_map(c, fd, 0, 21 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	read_pages(p, 0, 20);
	cr_assert_eq(p[20 * PAGE + 99], pat(20 * PAGE + 99));
	p[16 * PAGE] = 0xc1;
	p[20 * PAGE + 99] = 0xc2;	/* the last byte of the file */
	p[20 * PAGE + 100] = 0xc3;	/* past end of file, in the last page: never written */
	uint64_t gaps0 = stats_of(c).wb_gap_pages;
	cr_assert_eq(upc_msync(c, p, 21 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).wb_gap_pages - gaps0, 3, "pages 17-19 are the gap");
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(sb.st_size, (off_t)size, "the file grew to %lld", (long long)sb.st_size);
	cr_assert_eq(pread(fd, &x, 1, 20 * PAGE + 99), 1);
	cr_assert_eq(x, 0xc2);
	cr_assert_eq(pread(fd, &x, 1, 18 * PAGE + 3), 1);
	cr_assert_eq(x, pat(18 * PAGE + 3));
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A page advised UPC_ADV_FREE keeps data the file does not have (the
 * application gave it up: I4): it is never written as a gap.
 */
Test(msync, a_lazily_freed_page_is_not_written_as_a_gap, .timeout = 60)
{
	const size_t size = 32 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	read_pages(p, 0, 32);
	p[12 * PAGE] = 0xd1;
	cr_assert_eq(upc_advise(c, p + 12 * PAGE, PAGE, UPC_ADV_FREE), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	p[10 * PAGE] = 0xd2;
	p[14 * PAGE] = 0xd3;
	uint64_t gaps0 = stats_of(c).wb_gap_pages;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).wb_gap_pages, gaps0, "a gap with a lazily freed page is not written");
	cr_assert_eq(pread(fd, &x, 1, 12 * PAGE), 1);
	cr_assert_eq(x, pat(12 * PAGE), "the freed data reached the file");
	cr_assert_eq(pread(fd, &x, 1, 14 * PAGE), 1);
	cr_assert_eq(x, 0xd3);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A gap page written while its I/O is in flight (the write is delayed by
 * the fault-injection store): it becomes dirty as any clean page does, is
 * dirty after the msync, whatever that I/O caught, and the next msync
 * writes it.
 */
Test(msync, a_gap_page_written_during_write_back_stays_dirty, .timeout = 60)
{
	const size_t size = 32 * PAGE;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_store *store;
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;
	pthread_t t;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	o.store = store;
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	read_pages(p, 0, 32);
	p[10 * PAGE] = 0xe1;
	p[14 * PAGE] = 0xe2;
	/* The write of 10-14 waits 300 ms before it reads the memfd. */
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_WRITE, 10 * PAGE, 5 * PAGE, UPC_INJECT_DELAY,
					  300000, 1), 0);
	struct bg_msync b = { .c = c, .p = p, .len = size };
	cr_assert_eq(pthread_create(&t, NULL, bg_msync_main, &b), 0);
	for (int i = 0; i < 2000 && stats_of(c).pages_writeback < 5; i++)
		usleep(1000);
	cr_assert_eq(stats_of(c).pages_writeback, 5, "10-14 under write-back, the gap too");
	p[12 * PAGE + 7] = 0xe3;	/* a gap page, while its I/O is in flight */
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(b.ret, 0);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_dirty, 1, "the gap page written meanwhile is dirty");
	cr_assert_eq(st.pages_writeback, 0);
	uint64_t written = st.pages_written;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_written, written + 1);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	cr_assert_eq(pread(fd, &x, 1, 12 * PAGE + 7), 1);
	cr_assert_eq(x, 0xe3, "the write to the gap page was lost");
	cr_assert_eq(pread(fd, &x, 1, 14 * PAGE), 1);
	cr_assert_eq(x, 0xe2);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(fd);
}

/*
 * A clustered write that fails: the dirty pages it carried are dirty again
 * and the error is reported once (errseq), as for any failed write; the gap
 * pages stay clean; the next msync writes everything.
 */
Test(msync, a_failed_clustered_write_keeps_its_dirty_pages_dirty, .timeout = 60)
{
	const size_t size = 32 * PAGE;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_store *store;
	struct upc_cache *c;
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	o.store = store;
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	read_pages(p, 0, 32);
	p[10 * PAGE] = 0xf1;
	p[14 * PAGE] = 0xf2;
	/* The error is at a gap page: it fails the one I/O that carries 10 and 14. */
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_WRITE, 12 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, 1), 0);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), -EIO);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_dirty, 2, "both dirty pages of the failed I/O stay dirty");
	cr_assert_eq(st.pages_writeback, 0);
	cr_assert_eq(st.wb_errors, 1);
	cr_assert_eq(st.wb_ios, 1, "10-14 went in one I/O");
	cr_assert_eq(st.wb_gap_pages, 0, "a failed I/O wrote no gap page");
	cr_assert_eq(pread(fd, &x, 1, 10 * PAGE), 1);
	cr_assert_eq(x, pat(10 * PAGE));
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0, "reported once");
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	cr_assert_eq(pread(fd, &x, 1, 10 * PAGE), 1);
	cr_assert_eq(x, 0xf1);
	cr_assert_eq(pread(fd, &x, 1, 14 * PAGE), 1);
	cr_assert_eq(x, 0xf2);
	cr_assert_eq(pread(fd, &x, 1, 12 * PAGE), 1);
	cr_assert_eq(x, pat(12 * PAGE));
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(upc_store_destroy(store), 0);
	close(fd);
}

/* The O_DIRECT store clusters too: whole pages, aligned, so the I/O stays O_DIRECT. */
Test(msync, direct_io_store_writes_gaps_in_place, .timeout = 60)
{
	const size_t size = 32 * PAGE;
	int fd = tmpfile_pattern(size, NULL), dfd;
	struct upc_cache *c;
	unsigned char *p, *buf = malloc(size);
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	dfd = open(path, O_RDWR | O_DIRECT);
	if (dfd < 0)
		cr_skip_test("the test directory's filesystem refuses O_DIRECT (%s)", strerror(errno));
	close(dfd);
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_DIRECT_IO | UPC_CACHE_NO_BGWB);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	read_pages(p, 0, 32);
	p[3 * PAGE] = 0x71;
	p[9 * PAGE] = 0x72;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.wb_ios, 1);
	cr_assert_eq(st.wb_gap_pages, 5);
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	for (size_t i = 0; i < size; i++)
		cr_assert_eq(buf[i], i == 3 * PAGE ? 0x71 : i == 9 * PAGE ? 0x72 : pat(i), "offset %zu", i);
	free(buf);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * Synchronous tracking protects a mapping's dirty runs before cleaning
 * them (I1), and merges runs up to 256 clean pages apart into one ioctl: a
 * clean page is protected already, and each ioctl costs a TLB flush.  Here
 * 21 pages dirty 50 pages apart take one.  Asynchronous tracking protects
 * exactly the dirty runs (its uffd-wp bit is the written state).
 */
Test(msync, scattered_dirty_runs_are_protected_in_one_ioctl, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(1024 * PAGE, NULL);
	unsigned char *p, b;
	uint64_t calls;

	if (stats_of(c).track_mode == UPC_TRACK_ASYNC)
		cr_skip_test("asynchronous tracking protects exactly the dirty runs: no merging to count");
	cr_assert_eq(upc_map(c, fd, 0, 1024 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	for (size_t pg = 0; pg < 1024; pg += 50)
		p[pg * PAGE + 3] = (unsigned char)~pat(pg * PAGE + 3);
	calls = stats_of(c).wp_calls;
	cr_assert_eq(upc_msync(c, p, 1024 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).wp_calls - calls, 1, "%llu write-protect ioctls for 21 dirty pages",
		     (unsigned long long)(stats_of(c).wp_calls - calls));
	for (size_t pg = 0; pg < 1024; pg += 50) {
		cr_assert_eq(pread(fd, &b, 1, (off_t)(pg * PAGE + 3)), 1);
		cr_assert_eq(b, (unsigned char)~pat(pg * PAGE + 3), "page %zu", pg);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
