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
