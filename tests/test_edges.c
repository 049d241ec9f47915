/* SPDX-License-Identifier: MIT */
/* The kernel's mmap semantics at the edges: EOF, SIGBUS, SIGSEGV. */
#include "helpers.h"

#include <setjmp.h>
#include <signal.h>

Test(edges, tail_of_last_page_reads_zero_and_is_never_written, .timeout = 60)
{
	const size_t size = 3 * PAGE + 100;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;
	struct stat st;

	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[3 * PAGE + 99], pat(3 * PAGE + 99));
	for (size_t i = 3 * PAGE + 100; i < 4 * PAGE; i++)
		cr_assert_eq(p[i], 0, "byte %zu past EOF", i);
	p[3 * PAGE + 50] = 0x61;
	p[3 * PAGE + 2000] = 0x62;	/* past EOF: in memory, never in the file */
	cr_assert_eq(upc_msync(c, p, 4 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_size, (off_t)size, "write-back must not extend the file");
	unsigned char x;
	cr_assert_eq(pread(fd, &x, 1, 3 * PAGE + 50), 1);
	cr_assert_eq(x, 0x61);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(edges, page_wholly_beyond_eof_raises_sigbus, .signal = SIGBUS, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(2 * PAGE + 10, NULL);
	volatile unsigned char *p;

	/* Mapping past EOF succeeds, as with mmap(2)... */
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(p[2 * PAGE + 9], pat(2 * PAGE + 9));
	/* ...and touching a page wholly beyond it is SIGBUS. */
	(void)p[4 * PAGE];
	cr_assert_fail("no SIGBUS");
}

Test(edges, write_to_read_only_mapping_raises_sigsegv, .signal = SIGSEGV, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	volatile unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(p[0], pat(0));
	p[0] = 1;
	cr_assert_fail("no SIGSEGV");
}

Test(edges, write_to_uncached_page_of_read_only_mapping_raises_sigsegv, .signal = SIGSEGV, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	volatile unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ, 0, (void **)&p), 0);
	p[PAGE] = 1;
	cr_assert_fail("no SIGSEGV");
}

Test(edges, prot_none_mapping_raises_sigsegv, .signal = SIGSEGV, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	volatile unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_NONE, 0, (void **)&p), 0);
	(void)p[0];
	cr_assert_fail("no SIGSEGV");
}

Test(edges, a_file_that_grew_is_followed_by_the_next_map, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(2 * PAGE, NULL);
	unsigned char *p, *q, buf[PAGE];

	cr_assert_eq(upc_map(c, fd, 0, 2 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(p[PAGE], pat(PAGE));
	memset(buf, 0x71, sizeof(buf));
	cr_assert_eq(pwrite(fd, buf, PAGE, 2 * PAGE), (ssize_t)PAGE);
	cr_assert_eq(upc_map(c, fd, 0, 3 * PAGE, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(q[2 * PAGE + 5], 0x71);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(edges, empty_file_maps_and_sigbus_on_touch, .signal = SIGBUS, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(0, NULL);
	volatile unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, 0, (void **)&p), 0);
	(void)p[0];
	cr_assert_fail("no SIGBUS");
}

/*
 * Bytes stored past end of file inside the last page never reach the file,
 * not even once the file grows over them: the kernel zeroes that tail when
 * the file is extended (pagecache_isize_extended), and so does the cache when
 * it learns of the new size (here at the next upc_map).
 */
Test(edges, bytes_past_eof_are_zeroed_when_the_file_grows, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(100, NULL);
	unsigned char *p, *q, x;

	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[200] = 'X';		/* past EOF, inside the last page */
	cr_assert_eq(ftruncate(fd, 2 * PAGE), 0);
	cr_assert_eq(upc_map(c, fd, 0, 2 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&q), 0);
	cr_assert_eq(q[200], 0, "the old tail must read as zeros once the file grew over it");
	cr_assert_eq(p[99], pat(99));
	p[0] = 'A';
	cr_assert_eq(upc_msync(c, q, 2 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 200), 1);
	cr_assert_eq(x, 0, "a byte stored past EOF reached the file: %#x", x);
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, 'A');
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * The file shrank within its last page behind the cache's back (3000 bytes,
 * then 1000): a fault on that page shows the 1000 bytes that are left and
 * zeros after them, as the kernel's page cache does, instead of SIGBUS.
 */
Test(edges, a_file_shrunk_within_its_last_page_reads_what_is_left, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(3000, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(ftruncate(fd, 1000), 0);
	for (size_t i = 0; i < 1000; i += 37)
		cr_assert_eq(p[i], pat(i), "byte %zu", i);
	for (size_t i = 1000; i < PAGE; i++)
		cr_assert_eq(p[i], 0, "byte %zu past the new end", i);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * The file grew behind the cache's back, then a mapping writes past the old
 * end of file in the cached (clean) last page: that is file data now.  The
 * write traps, the cache sees the new size first, and the byte survives the
 * next upc_map (which must not zero it as a store past end of file).
 * Synchronous tracking only: there a write to a clean page traps.
 */
Test(edges, a_write_after_the_file_grew_behind_the_cache_is_kept, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(PAGE + 100, NULL);
	unsigned char *p, *q, x;

	if (stats_of(c).track_mode != UPC_TRACK_SYNC) {
		upc_cache_destroy(c);
		cr_skip_test("asynchronous tracking: a first write does not trap, so the cache learns "
			     "of the growth only at the next upc_map (upc_map(3), File size changes)");
	}
	cr_assert_eq(upc_map(c, fd, 0, 3 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[PAGE + 99], pat(PAGE + 99));	/* the last page is cached, clean */
	cr_assert_eq(ftruncate(fd, 3 * PAGE), 0);	/* grown by someone else */
	p[PAGE + 200] = 0xab;
	cr_assert_eq(upc_map(c, fd, 0, 3 * PAGE, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(q[PAGE + 200], 0xab, "a write after the growth was zeroed as past end of file");
	cr_assert_eq(upc_msync(c, p, 3 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, PAGE + 200), 1);
	cr_assert_eq(x, 0xab);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * A shrink noticed by a short read, then growth again below the old size:
 * pages past the smaller size stay accounted for (they are not truncated
 * out of the memfd under their descriptors), and a dirty one past the
 * end of file is dropped from write-back as the kernel discards it, so the
 * cache ends clean and destroy reports nothing.
 */
Test(edges, a_shrink_then_growth_keeps_the_page_accounting, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(100 * PAGE, NULL);
	unsigned char *p, *q;

	cr_assert_eq(upc_map(c, fd, 0, 100 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[80 * PAGE] = 1;
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(ftruncate(fd, 10 * PAGE + 100), 0);
	cr_assert_eq(p[10 * PAGE + 99], pat(10 * PAGE + 99));	/* a short read: the cache sees the shrink */
	cr_assert_eq(ftruncate(fd, 50 * PAGE), 0);
	cr_assert_eq(upc_map(c, fd, 0, 50 * PAGE, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(upc_msync(c, p, 100 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0, "a page past the end of file stays dirty for ever");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * Pages the cache held past an end of file that moved down behind its back
 * must not come back as file data when the file grows again (the kernel's
 * truncate_pagecache drops them).  A 3-page file with pages 0 and 2 cached
 * is cut to 100 bytes; a fault on page 1 shows the cache the shrink; the
 * file grows back to 3 pages (zeros): page 2 reads as zeros.
 */
Test(edges, pages_past_a_shrink_do_not_come_back_when_the_file_grows, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(3 * PAGE, NULL);
	unsigned char *p, *q;

	cr_assert_eq(upc_map(c, fd, 0, 3 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, 3 * PAGE, UPC_ADV_RANDOM), 0);
	cr_assert_eq(p[0], pat(0));
	cr_assert_eq(p[2 * PAGE], pat(2 * PAGE));
	cr_assert_eq(ftruncate(fd, 100), 0);
	cr_assert(raises_sigbus(p + PAGE), "page 1 is past the new end");
	cr_assert_eq(ftruncate(fd, 3 * PAGE), 0);
	cr_assert_eq(upc_map(c, fd, 0, 3 * PAGE, PROT_READ, 0, (void **)&q), 0);
	for (size_t i = 0; i < PAGE; i += 511)
		cr_assert_eq(q[2 * PAGE + i], 0, "byte %zu of page 2 is %#x: old data came back", i, q[2 * PAGE + i]);
	cr_assert_eq(q[50], pat(50));
	for (size_t i = 100; i < PAGE; i += 97)
		cr_assert_eq(q[i], 0, "byte %zu of page 0, past the old end, is %#x", i, q[i]);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
