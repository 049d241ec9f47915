/* SPDX-License-Identifier: MIT */
/* The kernel's mmap semantics at the edges: EOF, SIGBUS, SIGSEGV. */
#include "helpers.h"

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
