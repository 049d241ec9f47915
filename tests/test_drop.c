/* SPDX-License-Identifier: MIT */
/* upc_drop: only clean, unpinned pages not under write-back (I3). */
#include "helpers.h"

Test(drop, drops_clean_keeps_dirty, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	cr_assert_eq(stats_of(c).pages_cached, 64);
	p[5 * PAGE] = 0x44;
	cr_assert_eq(upc_drop(c, 0), 63);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_cached, 1);
	cr_assert_eq(st.pages_dirty, 1);
	cr_assert_eq(st.pages_evicted, 63);
	/* The mappings stay valid: dropped pages come back from the file. */
	cr_assert_eq(p[6 * PAGE + 1], pat(6 * PAGE + 1));
	cr_assert_eq(p[5 * PAGE], 0x44);
	cr_assert_eq(upc_drop(c, 0x8), -EINVAL);
	cr_assert_eq(upc_drop(NULL, 0), -EINVAL);
	/* With UPC_DROP_WRITEBACK dirty pages are written first, then dropped. */
	uint64_t cached = stats_of(c).pages_cached;
	cr_assert_gt(cached, 1);
	cr_assert_eq(upc_drop(c, UPC_DROP_WRITEBACK), (int)cached);
	cr_assert_eq(stats_of(c).pages_cached, 0);
	cr_assert_eq(pread(fd, &x, 1, 5 * PAGE), 1);
	cr_assert_eq(x, 0x44);
	cr_assert_eq(p[5 * PAGE], 0x44);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(drop, a_write_after_drop_is_tracked, .timeout = 60)
{
	const size_t size = 16 * PAGE;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *q, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&q), 0);
	cr_assert_eq(upc_drop(c, 0), 16);
	/* Read back through one mapping (refilled), then written through the other. */
	cr_assert_eq(p[3 * PAGE], pat(3 * PAGE));
	q[3 * PAGE] = 0x45;
	cr_assert_eq(stats_of(c).pages_dirty, 1, "a write after a drop was not tracked");
	cr_assert_eq(upc_msync(c, q, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 3 * PAGE), 1);
	cr_assert_eq(x, 0x45);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
