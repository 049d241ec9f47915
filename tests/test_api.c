/* SPDX-License-Identifier: MIT */
/* Bad input gets a clear negative errno and changes nothing. */
#include "helpers.h"

static void assert_untouched(struct upc_cache *c)
{
	struct upc_stats st = stats_of(c);

	cr_assert_eq(st.nr_mappings, 0, "a failed call left a mapping");
	cr_assert_eq(st.pages_cached, 0);
}

Test(api, create_options)
{
	struct upc_cache *c = NULL;
	struct { struct upc_cache_opts o; char extra[16]; } big;

	require_upcache();
	cr_assert_eq(upc_cache_create(NULL, NULL), -EINVAL);
	cr_assert_eq(upc_cache_create(NULL, &c), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);

	UPC_OPTS(upc_cache_opts, bad_flags, .flags = 0x80000000u);
	cr_assert_eq(upc_cache_create(&bad_flags, &c), -EINVAL);
	struct upc_cache_opts tiny = { .sz = 4 };
	cr_assert_eq(upc_cache_create(&tiny, &c), -EINVAL);

	/* A newer caller's larger struct: fine while the unknown tail is zero. */
	memset(&big, 0, sizeof(big));
	big.o.sz = sizeof(big);
	cr_assert_eq(upc_cache_create(&big.o, &c), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	big.extra[3] = 1;
	cr_assert_eq(upc_cache_create(&big.o, &c), -EINVAL);
	cr_assert_eq(upc_cache_destroy(NULL), -EINVAL);
}

Test(api, map_bad_input)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(64 * PAGE, NULL);
	char path[] = "/var/tmp/upc-test-ro.XXXXXX";
	int rfd, wfd, dfd;
	void *p = NULL;

	close(mkstemp(path));
	cr_assert_eq(truncate(path, 8 * PAGE), 0);
	rfd = open(path, O_RDONLY);
	wfd = open(path, O_WRONLY);
	dfd = open("/var/tmp", O_RDONLY | O_DIRECTORY);
	unlink(path);

	cr_assert_eq(upc_map(c, fd, 0, 0, PROT_READ, 0, &p), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 100, PAGE, PROT_READ, 0, &p), -EINVAL);
	cr_assert_eq(upc_map(c, fd, -PAGE, PAGE, PROT_READ, 0, &p), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ | PROT_EXEC, 0, &p), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, 0x100, &p), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, 0, NULL), -EINVAL);
	cr_assert_eq(upc_map(NULL, fd, 0, PAGE, PROT_READ, 0, &p), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, SIZE_MAX - 100, PROT_READ, 0, &p), -EOVERFLOW);
	cr_assert_eq(upc_map(c, -1, 0, PAGE, PROT_READ, 0, &p), -EBADF);
	cr_assert_eq(upc_map(c, 12345, 0, PAGE, PROT_READ, 0, &p), -EBADF);
	cr_assert_eq(upc_map(c, dfd, 0, PAGE, PROT_READ, 0, &p), -ENODEV);
	cr_assert_eq(upc_map(c, rfd, 0, PAGE, PROT_READ | PROT_WRITE, 0, &p), -EACCES);
	cr_assert_eq(upc_map(c, wfd, 0, PAGE, PROT_READ, 0, &p), -EACCES);
	cr_assert_null(p, "a failed upc_map wrote *addrp");
	assert_untouched(c);

	/* The read-only fd maps fine read-only. */
	cr_assert_eq(upc_map(c, rfd, 0, PAGE, PROT_READ, 0, &p), 0);
	cr_assert_eq(((char *)p)[0], 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd); close(rfd); close(wfd); close(dfd);
}

Test(api, unmap_and_msync_bad_input)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(64 * PAGE, NULL);
	unsigned char *p;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_unmap(c, p + 1, PAGE), -EINVAL);
	cr_assert_eq(upc_unmap(c, p, 0), -EINVAL);
	cr_assert_eq(upc_unmap(c, p, 17 * PAGE), -EINVAL, "beyond the mapping");
	cr_assert_eq(upc_unmap(c, p - PAGE, PAGE), -EINVAL, "not a mapping");
	cr_assert_eq(upc_unmap(NULL, p, PAGE), -EINVAL);

	cr_assert_eq(upc_msync(c, p, PAGE, 0), -EINVAL);
	cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC | UPC_MS_ASYNC), -EINVAL);
	cr_assert_eq(upc_msync(c, p, PAGE, 0x40 | UPC_MS_SYNC), -EINVAL);
	cr_assert_eq(upc_msync(c, p + 1, PAGE, UPC_MS_SYNC), -EINVAL);
	cr_assert_eq(upc_msync(c, p, 0, UPC_MS_SYNC), -EINVAL);
	cr_assert_eq(upc_msync(c, p, 17 * PAGE, UPC_MS_SYNC), -ENOMEM, "range not wholly mapped");

	/* Nothing changed: the mapping still works and holds the file. */
	p[5] = 0xAB;
	cr_assert_eq(upc_msync(c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	unsigned char b;
	cr_assert_eq(pread(fd, &b, 1, 5), 1);
	cr_assert_eq(b, 0xAB);
	cr_assert_eq(stats_of(c).nr_mappings, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(api, stats_and_strerror)
{
	struct upc_cache *c = cache_new(0);
	struct upc_stats st = { .sz = 4 };

	cr_assert_eq(upc_stats(c, &st), -EINVAL);
	cr_assert_eq(upc_stats(c, NULL), -EINVAL);
	/* An older caller's smaller struct gets only what it asked for. */
	struct upc_stats small;
	memset(&small, 0x5a, sizeof(small));
	small.sz = offsetof(struct upc_stats, pages_cached);
	cr_assert_eq(upc_stats(c, &small), 0);
	cr_assert_eq(small.pages_cached, 0x5a5a5a5a5a5a5a5aull, "wrote beyond sz");
	cr_assert_str_eq(upc_strerror(-EIO), "Input/output error");
	cr_assert_str_eq(upc_strerror(-ENOSPC), "No space left on device");
	cr_assert_str_eq(upc_strerror(0), "Success");
	cr_assert_not_null(upc_strerror(-99999));
	cr_assert_eq(upc_cache_destroy(c), 0);
}

Test(api, store_bad_input)
{
	struct upc_store *s, *f;

	cr_assert_eq(upc_store_file_create(0x80, &s), -EINVAL);
	cr_assert_eq(upc_store_file_create(0, NULL), -EINVAL);
	cr_assert_eq(upc_store_file_create(0, &f), 0);
	cr_assert_eq(upc_store_inject_add(f, UPC_IO_READ, 0, PAGE, UPC_INJECT_ERROR, EIO, 1), -EINVAL,
		     "a file store is not an inject store");
	cr_assert_eq(upc_store_inject_create(NULL, &s), 0);
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_READ, 0, PAGE, 99, EIO, 1), -EINVAL);
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_READ, 0, PAGE, UPC_INJECT_ERROR, 0, 1), -EINVAL);
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_READ, -1, PAGE, UPC_INJECT_ERROR, EIO, 1), -EINVAL);
	cr_assert_eq(upc_store_inject_add(s, 7, 0, PAGE, UPC_INJECT_ERROR, EIO, 1), -EINVAL);
	cr_assert_eq(upc_store_inject_add(s, UPC_IO_READ, 0, PAGE, UPC_INJECT_ERROR, EIO, 1), 0);
	cr_assert_eq(upc_store_inject_clear(s), 0);
	cr_assert_eq(upc_store_inject_clear(f), -EINVAL);
	cr_assert_eq(upc_store_destroy(s), 0);
	cr_assert_eq(upc_store_destroy(f), 0);
}

Test(api, probe_names)
{
	uint64_t f = upc_probe();

	cr_assert_eq(upc_probe(), f, "probe results are cached");
	cr_assert_str_eq(upc_feature_name(UPC_FEAT_WP_ASYNC), "wp-async");
	cr_assert_null(upc_feature_name(0));
	cr_assert_null(upc_feature_name(3));
	cr_assert_null(upc_feature_name(1ull << 63));
}
