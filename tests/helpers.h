/* SPDX-License-Identifier: MIT */
/* Helpers shared by the Criterion tests. */
#ifndef UPC_TEST_HELPERS_H
#define UPC_TEST_HELPERS_H

#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <upcache.h>

#define PAGE 4096UL

/* The byte the pattern has at file offset @off (distinct per page and byte). */
static inline unsigned char pat(uint64_t off)
{
	return (unsigned char)(off * 31 + (off >> 12) * 7 + 1);
}

/* A temporary file of @size bytes filled with pat(); returns an O_RDWR fd. */
static inline int tmpfile_pattern(size_t size, char *path_out)
{
	char path[] = "/var/tmp/upc-test.XXXXXX";
	size_t chunk = 1 << 20;
	unsigned char *buf = malloc(chunk);
	int fd = mkstemp(path);

	cr_assert(fd >= 0 && buf, "mkstemp: %s", strerror(errno));
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;

		for (size_t i = 0; i < n; i++)
			buf[i] = pat(off + i);
		cr_assert_eq(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	}
	free(buf);
	if (path_out)
		strcpy(path_out, path);
	else
		unlink(path);
	return fd;
}

/* Skip (never pass) where the kernel lacks what upcache needs. */
static inline void require_upcache(void)
{
	uint64_t f = upc_probe();

	if (!(f & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV | UPC_FEAT_USER_MODE_ONLY)))
		cr_skip_test("userfaultfd is not available here");
	if (!(f & UPC_FEAT_WP_SHMEM) || !(f & UPC_FEAT_WP_UNPOPULATED))
		cr_skip_test("kernel cannot write-protect shmem with PTE markers (needs 6.4+)");
	if (!(f & UPC_FEAT_IO_URING))
		cr_skip_test("io_uring is not available here");
}

/*
 * The tracking mode the whole suite runs in: $UPC_TEST_TRACK=async adds
 * UPC_CACHE_ASYNC_WP to every cache the tests make (make check runs both).
 */
static inline unsigned int track_flags(void)
{
	const char *e = getenv("UPC_TEST_TRACK");

	return e && !strcmp(e, "async") ? UPC_CACHE_ASYNC_WP : 0;
}

/* In the async run, a cache that fell back to sync would only repeat the sync run: skip. */
static inline void require_track_mode(struct upc_cache *c)
{
	struct upc_stats st = { .sz = sizeof(st) };

	if (!track_flags())
		return;
	upc_stats(c, &st);
	if (st.track_mode != UPC_TRACK_ASYNC) {
		upc_cache_destroy(c);
		cr_skip_test("asynchronous tracking is not available here (needs WP_ASYNC, "
			     "PAGEMAP_SCAN and MINOR faults on shmem: see upcctl probe)");
	}
}

static inline struct upc_cache *cache_new_opts(struct upc_cache_opts *o)
{
	struct upc_cache *c = NULL;
	int ret;

	require_upcache();
	o->flags |= track_flags();
	ret = upc_cache_create(o, &c);
	cr_assert_eq(ret, 0, "upc_cache_create: %s", upc_strerror(ret));
	require_track_mode(c);
	return c;
}

static inline struct upc_cache *cache_new(unsigned int flags)
{
	struct upc_cache *c = NULL;
	UPC_OPTS(upc_cache_opts, o, .flags = flags | track_flags());
	int ret;

	require_upcache();
	ret = upc_cache_create(&o, &c);
	cr_assert_eq(ret, 0, "upc_cache_create: %s", upc_strerror(ret));
	require_track_mode(c);
	return c;
}

static inline struct upc_stats stats_of(struct upc_cache *c)
{
	struct upc_stats st = { .sz = sizeof(st) };

	cr_assert_eq(upc_stats(c, &st), 0);
	return st;
}

static inline unsigned long env_ulong(const char *name, unsigned long dflt)
{
	const char *e = getenv(name);

	return e && *e ? strtoul(e, NULL, 0) : dflt;
}

#endif
