/* SPDX-License-Identifier: MIT */
/* Faults: what a mapping reads equals the file, page by page, in any order. */
#include "helpers.h"

Test(fault, content_equals_file_sequential, .timeout = 60)
{
	const size_t size = 4 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i++)
		if (p[i] != pat(i))
			cr_assert_fail("byte %zu: got %u want %u", i, p[i], pat(i));
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_cached, size / PAGE);
	cr_assert_gt(st.faults_missing, 0);
	cr_assert_eq(upc_unmap(c, p, size), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(fault, content_equals_file_random_order, .timeout = 60)
{
	const size_t size = 2 << 20, npages = size / PAGE;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;
	unsigned int seed = 42;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t k = 0; k < 4 * npages; k++) {
		size_t pg = (size_t)rand_r(&seed) % npages, off = pg * PAGE + (size_t)rand_r(&seed) % PAGE;

		cr_assert_eq(p[off], pat(off), "offset %zu", off);
	}
	struct upc_stats st = stats_of(c);
	/* Random access does not read ahead: every fill is a fault. */
	cr_assert_eq(st.fill_ios, st.faults_missing, "fills %lu faults %lu minor %lu", (unsigned long)st.fill_ios, (unsigned long)st.faults_missing, (unsigned long)st.faults_minor);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(fault, mapping_at_offset, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;
	const off_t off = 37 * PAGE;

	cr_assert_eq(upc_map(c, fd, off, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < 16 * PAGE; i++)
		cr_assert_eq(p[i], pat((uint64_t)off + i));
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(fault, cached_pages_are_mapped_by_the_kernel, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p, *q;
	volatile unsigned char sink;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		sink = p[i];
	uint64_t before = stats_of(c).faults_missing;
	/* A second mapping of cached pages: the kernel serves every fault itself. */
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&q), 0);
	for (size_t i = 0; i < size; i += PAGE) {
		sink = q[i];
		cr_assert_eq(q[i], pat(i));
	}
	(void)sink;
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.faults_missing, before, "cached pages went through the handler");
	cr_assert_eq(st.faults_wp, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(fault, populate_flag, .timeout = 60)
{
	const size_t size = 512 * 1024;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	struct upc_stats st = stats_of(c);
	cr_assert_eq(st.pages_cached, size / PAGE);
	cr_assert_eq(st.pages_dirty, 0, "populating must not dirty");
	cr_assert_eq(p[size - 1], pat(size - 1));
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
