/* SPDX-License-Identifier: MIT */
/* upc_protect: mprotect semantics, never losing dirty state (I5). */
#include "helpers.h"

#include <signal.h>

Test(protect, read_only_then_back, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 0x21;
	cr_assert_eq(upc_protect(c, p, 16 * PAGE, PROT_READ), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 1, "I5: protecting keeps the dirty state");
	cr_assert_eq(p[0], 0x21);
	cr_assert_eq(upc_protect(c, p + 4 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE), 0);
	cr_assert_eq(stats_of(c).nr_mappings, 3, "the range was split off");
	p[5 * PAGE] = 0x22;
	cr_assert_eq(stats_of(c).pages_dirty, 2);
	cr_assert_eq(upc_msync(c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, 0x21);
	cr_assert_eq(pread(fd, &x, 1, 5 * PAGE), 1);
	cr_assert_eq(x, 0x22);
	/* Back to writable: a clean page must still trap on its first write. */
	cr_assert_eq(upc_protect(c, p, 16 * PAGE, PROT_READ | PROT_WRITE), 0);
	uint64_t dirty = stats_of(c).pages_dirty;
	p[0] = 0x23;
	cr_assert_eq(stats_of(c).pages_dirty, dirty + 1, "a clean page made writable again must still catch its first write");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(protect, write_after_read_only_is_sigsegv, .signal = SIGSEGV, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	volatile unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 1;
	cr_assert_eq(upc_protect(c, (void *)p, 16 * PAGE, PROT_READ), 0);
	p[0] = 2;
	cr_assert_fail("no SIGSEGV");
}

Test(protect, prot_none_is_sigsegv, .signal = SIGSEGV, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(16 * PAGE, NULL);
	volatile unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_protect(c, (void *)(p + PAGE), PAGE, PROT_NONE), 0);
	cr_assert_eq(p[0], pat(0));
	(void)p[PAGE];
	cr_assert_fail("no SIGSEGV");
}

Test(protect, bad_input, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(16 * PAGE, NULL), rfd;
	char path[64];
	unsigned char *p, *r;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	rfd = open(path, O_RDONLY);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_map(c, rfd, 0, 16 * PAGE, PROT_READ, 0, (void **)&r), 0);
	cr_assert_eq(upc_protect(c, p, 16 * PAGE, PROT_EXEC), -EINVAL);
	cr_assert_eq(upc_protect(c, p + 1, PAGE, PROT_READ), -EINVAL);
	cr_assert_eq(upc_protect(c, p, 17 * PAGE, PROT_READ), -EINVAL);
	cr_assert_eq(upc_protect(c, r, PAGE, PROT_READ | PROT_WRITE), -EACCES);
	/* Writable from an O_RDWR fd even though it was mapped read-only. */
	cr_assert_eq(upc_protect(c, p, PAGE, PROT_READ | PROT_WRITE), 0);
	p[0] = 3;
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
	close(rfd);
}
