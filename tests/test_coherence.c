/* SPDX-License-Identifier: MIT */
/* MAP_SHARED coherence: one cache object per file, shared by every mapping. */
#include "helpers.h"

Test(coherence, two_mappings_same_fd_overlapping_offsets, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *a, *b;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_map(c, fd, 16 * PAGE, 32 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&b), 0);
	cr_assert_neq(a, b);
	/* Written through one, read through the other at once, both ways. */
	a[20 * PAGE + 7] = 0x11;
	cr_assert_eq(b[4 * PAGE + 7], 0x11);
	b[PAGE] = 0x22;
	cr_assert_eq(a[17 * PAGE], 0x22);
	/* A page first faulted through b, then written through a. */
	cr_assert_eq(b[30 * PAGE + 1], pat(46 * PAGE + 1));
	a[46 * PAGE + 1] = 0x33;
	cr_assert_eq(b[30 * PAGE + 1], 0x33);
	cr_assert_eq(stats_of(c).nr_files, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(coherence, different_fds_and_links_share_one_cache_object, .timeout = 60)
{
	const size_t size = 256 * 1024;
	char path[64], lpath[80];
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, path), fd2, fd3;
	unsigned char *a, *b, *r;
	unsigned char x;

	snprintf(lpath, sizeof(lpath), "%s.link", path);
	cr_assert_eq(link(path, lpath) == 0 || errno == EPERM, 1);
	fd2 = open(path, O_RDWR);
	fd3 = open(access(lpath, F_OK) == 0 ? lpath : path, O_RDONLY);
	cr_assert(fd2 >= 0 && fd3 >= 0);

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_map(c, fd2, 8 * PAGE, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&b), 0);
	cr_assert_eq(upc_map(c, fd3, 0, size, PROT_READ, 0, (void **)&r), 0);
	cr_assert_eq(stats_of(c).nr_files, 1, "one file, one cache object");

	b[3] = 0x5c;
	cr_assert_eq(a[8 * PAGE + 3], 0x5c);
	cr_assert_eq(r[8 * PAGE + 3], 0x5c);
	/* msync through the other fd's mapping writes the shared page. */
	cr_assert_eq(upc_msync(c, b, PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd3, &x, 1, 8 * PAGE + 3), 1);
	cr_assert_eq(x, 0x5c);
	cr_assert_eq(upc_cache_destroy(c), 0);
	unlink(lpath);
	unlink(path);
	close(fd); close(fd2); close(fd3);
}

Test(coherence, unmapping_one_keeps_the_other, .timeout = 60)
{
	const size_t size = 128 * 1024;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *a, *b;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&b), 0);
	a[100] = 1;
	cr_assert_eq(upc_unmap(c, a, size), 0);
	cr_assert_eq(b[100], 1);
	b[PAGE + 1] = 2;
	cr_assert_eq(upc_msync(c, b, size, UPC_MS_SYNC), 0);
	unsigned char x[2];
	cr_assert_eq(pread(fd, &x[0], 1, 100), 1);
	cr_assert_eq(pread(fd, &x[1], 1, PAGE + 1), 1);
	cr_assert_eq(x[0], 1, "dirtied through the unmapped mapping, written through the other");
	cr_assert_eq(x[1], 2);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(coherence, partial_unmap_splits, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *a;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_unmap(c, a + 8 * PAGE, 8 * PAGE), 0);	/* middle */
	cr_assert_eq(stats_of(c).nr_mappings, 2);
	cr_assert_eq(upc_unmap(c, a, 2 * PAGE), 0);		/* head */
	cr_assert_eq(upc_unmap(c, a + 62 * PAGE, 2 * PAGE), 0);	/* tail */
	/* What remains still maps the right file pages. */
	cr_assert_eq(a[2 * PAGE], pat(2 * PAGE));
	cr_assert_eq(a[16 * PAGE + 5], pat(16 * PAGE + 5));
	a[20 * PAGE] = 0x77;
	cr_assert_eq(upc_msync(c, a + 16 * PAGE, 46 * PAGE, UPC_MS_SYNC), 0);
	unsigned char x;
	cr_assert_eq(pread(fd, &x, 1, 20 * PAGE), 1);
	cr_assert_eq(x, 0x77);
	cr_assert_eq(upc_msync(c, a + 8 * PAGE, PAGE, UPC_MS_SYNC), -ENOMEM, "the hole is unmapped");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * Unmapping collects written state from the mapping torn down, not from
 * every mapping of the file: with many mappings of one file, unmapping them
 * all costs a number of PAGEMAP_SCAN calls linear in the mappings (it was
 * quadratic: 8000 one-page mappings took 35 s under asynchronous tracking).
 * Counted, not timed: wp_calls counts the get-and-protect scans.
 */
Test(coherence, unmapping_many_mappings_of_one_file_is_linear, .timeout = 120)
{
	const size_t n = 1000;
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	unsigned char **p = calloc(n, sizeof(*p));
	uint64_t before, after;

	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(upc_map(c, fd, (off_t)((i % 4) * PAGE), PAGE, PROT_READ | PROT_WRITE, 0,
				     (void **)&p[i]), 0);
		p[i][i] = (unsigned char)i;	/* written: some state to collect */
	}
	before = stats_of(c).wp_calls;
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(upc_unmap(c, p[i], PAGE), 0);
	after = stats_of(c).wp_calls;
	cr_assert_leq(after - before, 2 * n, "%llu scans to unmap %zu mappings",
		      (unsigned long long)(after - before), n);
	/* Nothing written was lost with the mappings. */
	cr_assert_eq(upc_cache_destroy(c), 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char x;

		cr_assert_eq(pread(fd, &x, 1, (off_t)((i % 4) * PAGE + i)), 1);
		cr_assert_eq(x, (unsigned char)i);
	}
	free(p);
	close(fd);
}
