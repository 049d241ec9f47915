/* SPDX-License-Identifier: MIT */
/*
 * Maps as large as mmap(2) allows, and at the address the caller asks for
 * (issue 9): a terabyte map of a small file costs page tables for the file's
 * part only; the file grows into it, through the cache, with no reservation
 * limit; a larger remap keeps what is cached; UPC_MAP_HINT,
 * UPC_MAP_FIXED_NOREPLACE and UPC_MAP_FIXED behave as mmap's addr,
 * MAP_FIXED_NOREPLACE and MAP_FIXED.
 */
#include "helpers.h"

#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>

#define TIB	(1ULL << 40)
#define GIB	(1ULL << 30)
#define MIB	(1ULL << 20)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A field of /proc/self/status, in kB. */
static long status_kb(const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = atol(line + n + 1);
	fclose(f);
	cr_assert_geq(v, 0, "no %s in /proc/self/status", key);
	return v;
}

static off_t fsize(int fd)
{
	struct stat st;

	cr_assert_eq(fstat(fd, &st), 0);
	return st.st_size;
}

static unsigned char file_byte(int fd, off_t off)
{
	unsigned char x;

	cr_assert_eq(pread(fd, &x, 1, off), 1, "pread at %lld", (long long)off);
	return x;
}

/*
 * Page tables of the mappings a case makes, at most: a write-protected
 * terabyte would take 2 GiB of them (one 4 KiB PTE page per 2 MiB), the
 * kernel's own mmap takes a few for the pages touched.
 */
#define PTE_BOUND_KB	1024

Test(maps, a_terabyte_map_of_a_small_file, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(MIB, NULL);
	unsigned char buf[PAGE], *p;
	long pte0 = status_kb("VmPTE");

	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[0], pat(0));
	cr_assert_eq(p[MIB - 1], pat(MIB - 1));
	p[100] = 0xa1;
	cr_assert_eq(upc_msync(c, p, TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(file_byte(fd, 100), 0xa1);

	/* The file grows by upc_pwrite: the new page is there in the map, at once. */
	memset(buf, 0x5b, sizeof(buf));
	cr_assert_eq(upc_pwrite(c, fd, buf, sizeof(buf), MIB + 10), (ssize_t)sizeof(buf));
	cr_assert_eq(p[MIB + 10], 0x5b);
	cr_assert_eq(p[MIB + 9], 0);
	p[MIB + 20] = 0xa2;	/* and is tracked: the write is written back */
	/* ...and by upc_ftruncate: zeros up to the new end, SIGBUS-free. */
	cr_assert_eq(upc_ftruncate(c, fd, (off_t)(64 * MIB)), 0);
	cr_assert_eq(p[60 * MIB], 0);
	p[60 * MIB + 1] = 0xa3;
	p[64 * MIB - 1] = 0xa4;
	cr_assert_eq(upc_msync(c, p, TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(file_byte(fd, MIB + 20), 0xa2);
	cr_assert_eq(file_byte(fd, 60 * MIB + 1), 0xa3);
	cr_assert_eq(file_byte(fd, 64 * MIB - 1), 0xa4);
	cr_assert_eq(fsize(fd), (off_t)(64 * MIB));

	/* Whole-map calls cost nothing for the part past end of file. */
	cr_assert_eq(upc_advise(c, p, TIB, UPC_ADV_DONTNEED), 0);
	cr_assert_eq(p[100], 0xa1);
	cr_assert_eq(upc_advise(c, p, TIB, UPC_ADV_FREE), 0);
	cr_assert_lt(status_kb("VmPTE") - pte0, PTE_BOUND_KB, "VmPTE grew by %ld kB",
		     status_kb("VmPTE") - pte0);
	cr_assert_eq(upc_unmap(c, p, TIB), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* Two big maps of one file, one read-only: both see the growth; a page past the end is SIGBUS. */
Test(maps, a_terabyte_map_sees_growth_and_sigbus_past_it, .signal = SIGBUS, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(PAGE, NULL);
	volatile unsigned char *p, *r;
	unsigned char x = 0x77;

	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_map(c, fd, 0, TIB / 2, PROT_READ, 0, (void **)&r), 0);
	cr_assert_eq(upc_pwrite(c, fd, &x, 1, (off_t)(3 * GIB)), 1);
	cr_assert_eq(p[3 * GIB], 0x77);
	cr_assert_eq(r[3 * GIB], 0x77);
	cr_assert_eq(r[2 * GIB], 0);
	(void)p[3 * GIB + PAGE];
	cr_assert_fail("no SIGBUS past end of file");
}

/* The staging mapping (4 GiB at first) is outgrown: the file goes past it, sparse, through the cache. */
Test(maps, a_file_grown_past_4_gib_through_the_cache, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(2 * PAGE, NULL);
	const off_t far = (off_t)(5 * GIB) + 123, farther = (off_t)(9 * GIB) + 5;
	unsigned char *p, x = 0;
	long pte0 = status_kb("VmPTE");
	struct upc_stats st;

	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[PAGE + 1] = 0xc1;	/* dirty, cached, before the staging mapping moves */
	x = 0xc2;
	cr_assert_eq(upc_pwrite(c, fd, &x, 1, far), 1);
	cr_assert_eq(fsize(fd), far + 1);
	cr_assert_eq(p[far], 0xc2);
	cr_assert_eq(p[PAGE + 1], 0xc1);
	cr_assert_eq(upc_ftruncate(c, fd, (off_t)(10 * GIB)), 0);
	p[farther] = 0xc3;
	cr_assert_eq(upc_pread(c, fd, &x, 1, farther), 1);
	cr_assert_eq(x, 0xc3);
	cr_assert_eq(upc_fallocate(c, fd, 0, (off_t)(11 * GIB), PAGE), 0);
	cr_assert_eq(fsize(fd), (off_t)(11 * GIB) + (off_t)PAGE);
	p[11 * GIB + 7] = 0xc4;
	cr_assert_eq(upc_fsync(c, fd), 0);
	cr_assert_eq(file_byte(fd, PAGE + 1), 0xc1);
	cr_assert_eq(file_byte(fd, far), 0xc2);
	cr_assert_eq(file_byte(fd, farther), 0xc3);
	cr_assert_eq(file_byte(fd, (off_t)(11 * GIB) + 7), 0xc4);
	st = stats_of(c);
	cr_assert_eq(st.pages_dirty, 0);
	/*
	 * A writable map is write-protected up to end of file: 22 MiB of page
	 * tables for these 11 GiB (map.c), not the 2 GiB of the whole map.
	 */
	cr_assert_lt(status_kb("VmPTE") - pte0, 24 * 1024 + PTE_BOUND_KB, "VmPTE grew by %ld kB",
		     status_kb("VmPTE") - pte0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* Past what the address space can stage: -EFBIG, and the file is left as it was. */
Test(maps, growth_past_the_address_space_is_efbig, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(PAGE, NULL);
	unsigned char x = 1;

	cr_assert_eq(upc_pwrite(c, fd, &x, 1, (off_t)1 << 58), -EFBIG);
	cr_assert_eq(upc_ftruncate(c, fd, (off_t)1 << 58), -EFBIG);
	cr_assert_eq(upc_fallocate(c, fd, 0, (off_t)1 << 58, PAGE), -EFBIG);
	cr_assert_eq(fsize(fd), (off_t)PAGE);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(maps, remapping_larger_keeps_pages_cached, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	char path[64];
	int fd = tmpfile_pattern(64 * PAGE, path);	/* linked: an unused unlinked file is released */
	struct upc_stats before, after;
	unsigned char *p, *q;

	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < 64; i++)
		cr_assert_eq(p[i * PAGE + 1], pat(i * PAGE + 1));
	p[5 * PAGE] = 0xd1;	/* dirty across the remap */
	before = stats_of(c);
	cr_assert_eq(before.pages_cached, 64);
	cr_assert_eq(upc_unmap(c, p, 64 * PAGE), 0);
	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&q), 0);
	for (size_t i = 0; i < 64; i++)
		if (i != 5)
			cr_assert_eq(q[i * PAGE + 1], pat(i * PAGE + 1));
	cr_assert_eq(q[5 * PAGE], 0xd1);
	after = stats_of(c);
	cr_assert_eq(after.pages_filled, before.pages_filled, "pages read again: %llu -> %llu",
		     (unsigned long long)before.pages_filled, (unsigned long long)after.pages_filled);
	cr_assert_eq(after.fill_ios, before.fill_ios);
	cr_assert_eq(after.pages_dirty, 1);
	/* Mapped again larger while the old one is still there (LMDB's resize maps first, on some paths). */
	cr_assert_eq(upc_map(c, fd, 0, 2 * TIB, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < 64; i++)
		cr_assert_eq(p[i * PAGE + 1], q[i * PAGE + 1]);
	cr_assert_eq(upc_unmap(c, q, TIB), 0);
	cr_assert_eq(stats_of(c).pages_filled, before.pages_filled);
	cr_assert_eq(upc_msync(c, p, 2 * TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(file_byte(fd, 5 * PAGE), 0xd1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	unlink(path);
	close(fd);
}

/* ------------------------------------------------------------ addresses */

/*
 * A free, page-aligned range of @len bytes between two guard pages that
 * stay mapped: nothing larger than @len can be placed there meanwhile
 * (the cache's own mmaps are gigabytes, or made before).
 */
static void *free_range(size_t len)
{
	char *a = mmap(NULL, len + 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	cr_assert_neq(a, MAP_FAILED);
	cr_assert_eq(munmap(a + PAGE, len), 0);
	return a + PAGE;
}

/* A range held by a PROT_NONE placeholder, for UPC_MAP_FIXED to replace (nothing else can take it). */
static void *reserved_range(size_t len)
{
	char *a = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	cr_assert_neq(a, MAP_FAILED);
	return a;
}

/*
 * upc_map() with @flags (UPC_MAP_HINT or UPC_MAP_FIXED_NOREPLACE) at a free
 * range, returned in *@wantp.  The range is free when free_range() returns,
 * but another thread of the process (the sanitizers' allocator, the
 * library's own allocations on the way) may map something into it before
 * upc_map() does: that is the environment, not the library, and is told
 * apart by looking whether the range is mapped now; then a new range is
 * tried.  Any other result is returned as it is.
 */
static int map_at_free(struct upc_cache *c, int fd, off_t off, size_t len, int prot, unsigned int flags,
		       void **ap, void **wantp)
{
	int ret = -EEXIST;

	for (int tries = 0; tries < 16; tries++) {
		*wantp = *ap = free_range(len);
		ret = upc_map(c, fd, off, len, prot, flags, ap);
		if (flags == UPC_MAP_FIXED_NOREPLACE && ret == -EEXIST && msync(*wantp, len, MS_ASYNC) == 0)
			continue;	/* taken by someone else meanwhile */
		if (flags == UPC_MAP_HINT && ret == 0 && *ap != *wantp && msync(*wantp, len, MS_ASYNC) == 0) {
			upc_unmap(c, *ap, len);
			continue;
		}
		break;
	}
	return ret;
}

Test(maps, hint_is_taken_where_free, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(8 * PAGE, NULL);
	void *want, *a, *b = NULL;

	cr_assert_eq(map_at_free(c, fd, 0, 8 * PAGE, PROT_READ, UPC_MAP_HINT, &a, &want), 0);
	cr_assert_eq(a, want);
	cr_assert_eq(((unsigned char *)a)[3 * PAGE], pat(3 * PAGE));
	/* NULL: no hint.  A hint where something is mapped: elsewhere, as mmap(2). */
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ, UPC_MAP_HINT, &b), 0);
	cr_assert_neq(b, NULL);
	b = a;
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_HINT, &b), 0);
	cr_assert_neq(b, a);
	((unsigned char *)b)[0] = 0xe1;
	cr_assert_eq(((unsigned char *)a)[0], 0xe1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, 0), 0xe1);
	close(fd);
}

Test(maps, fixed_noreplace_maps_exactly_or_eexist, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(8 * PAGE, NULL);
	unsigned char *want, *a, *anon;
	void *b;

	cr_assert_eq(map_at_free(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED_NOREPLACE, (void **)&a,
				 (void **)&want), 0);
	cr_assert_eq(a, want);
	cr_assert_eq(a[7 * PAGE + 3], pat(7 * PAGE + 3));
	a[1] = 0xe2;
	/* Over an upcache mapping, even a page of it: -EEXIST, nothing changed. */
	b = want + 7 * PAGE;
	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ, UPC_MAP_FIXED_NOREPLACE, &b), -EEXIST);
	cr_assert_eq(b, want + 7 * PAGE);
	cr_assert_eq(a[1], 0xe2);
	cr_assert_eq(stats_of(c).nr_mappings, 1);
	/* Over anything else mapped: -EEXIST, and it stays as it was. */
	anon = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(anon, MAP_FAILED);
	anon[5] = 0x42;
	b = anon + 4 * PAGE;
	cr_assert_eq(upc_map(c, fd, 0, 2 * PAGE, PROT_READ, UPC_MAP_FIXED_NOREPLACE, &b), -EEXIST);
	cr_assert_eq(anon[5], 0x42);
	cr_assert_eq(munmap(anon, 8 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, 1), 0xe2);
	close(fd);
}

Test(maps, fixed_replaces_whatever_is_mapped, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(8 * PAGE, NULL);
	unsigned char *anon, *a;

	anon = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(anon, MAP_FAILED);
	memset(anon, 0x11, 8 * PAGE);
	a = anon + 2 * PAGE;
	cr_assert_eq(upc_map(c, fd, 4 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&a), 0);
	cr_assert_eq(a, anon + 2 * PAGE);
	cr_assert_eq(anon[2 * PAGE + 9], pat(4 * PAGE + 9));
	cr_assert_eq(anon[PAGE], 0x11);		/* the rest is untouched */
	cr_assert_eq(anon[6 * PAGE], 0x11);
	a[10] = 0xe3;				/* tracked: written back */
	cr_assert_eq(upc_msync(c, a, 4 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(file_byte(fd, 4 * PAGE + 10), 0xe3);
	cr_assert_eq(upc_unmap(c, a, 4 * PAGE), 0);
	cr_assert_eq(munmap(anon, 8 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* MAP_FIXED over upcache mappings: they go as by upc_unmap(), their dirty pages kept. */
Test(maps, fixed_over_upcache_mappings_keeps_their_dirty_pages, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fa = tmpfile_pattern(16 * PAGE, NULL), fb = tmpfile_pattern(16 * PAGE, NULL);
	unsigned char *a, *a2, *b;
	struct upc_stats st;

	/* two mappings of file A side by side, both written */
	a = reserved_range(16 * PAGE);
	cr_assert_eq(upc_map(c, fa, 0, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&a), 0);
	a2 = a + 8 * PAGE;
	cr_assert_eq(upc_map(c, fa, 8 * PAGE, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&a2), 0);
	for (size_t i = 0; i < 16; i++)
		a[i * PAGE + 1] = (unsigned char)(0x80 + i);
	cr_assert_eq(stats_of(c).pages_dirty, 16);
	/* file B over the second half of the first and the first half of the second */
	b = a + 4 * PAGE;
	cr_assert_eq(upc_map(c, fb, 0, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&b), 0);
	cr_assert_eq(b, a + 4 * PAGE);
	st = stats_of(c);
	cr_assert_eq(st.nr_mappings, 3);	/* A's two ends and B */
	cr_assert_eq(st.pages_dirty, 16, "dirty pages lost: %llu", (unsigned long long)st.pages_dirty);
	for (size_t i = 0; i < 8; i++)
		cr_assert_eq(b[i * PAGE + 1], pat(i * PAGE + 1));
	b[2] = 0xf0;
	cr_assert_eq(a[3 * PAGE + 1], 0x83);	/* what is left of A still works */
	cr_assert_eq(a[12 * PAGE + 1], 0x8c);
	a[13 * PAGE + 2] = 0x9d;
	cr_assert_eq(upc_fsync(c, fa), 0);
	cr_assert_eq(upc_fsync(c, fb), 0);
	for (size_t i = 0; i < 16; i++)
		cr_assert_eq(file_byte(fa, (off_t)(i * PAGE + 1)), 0x80 + i, "page %zu of A", i);
	cr_assert_eq(file_byte(fa, 13 * PAGE + 2), 0x9d);
	cr_assert_eq(file_byte(fb, 2), 0xf0);
	cr_assert_eq(upc_unmap(c, a, 4 * PAGE), 0);
	cr_assert_eq(upc_unmap(c, b, 8 * PAGE), 0);
	cr_assert_eq(upc_unmap(c, a + 12 * PAGE, 4 * PAGE), 0);
	cr_assert_eq(stats_of(c).nr_mappings, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fa);
	close(fb);
}

/* A pinned page in the range: -EBUSY, and nothing changed. */
Test(maps, fixed_over_a_pinned_page_is_ebusy, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(8 * PAGE, NULL);
	unsigned char *a, *b;

	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_pin(c, a + 6 * PAGE, PAGE, 0), 0);
	a[1] = 0x31;
	b = a + 4 * PAGE;
	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ, UPC_MAP_FIXED, (void **)&b), -EBUSY);
	cr_assert_eq(b, a + 4 * PAGE);
	cr_assert_eq(stats_of(c).nr_mappings, 1);
	cr_assert_eq(a[4 * PAGE + 1], pat(4 * PAGE + 1));
	a[7 * PAGE] = 0x32;
	cr_assert_eq(upc_unpin(c, a + 6 * PAGE, PAGE), 0);
	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ, UPC_MAP_FIXED, (void **)&b), 0);
	cr_assert_eq(b[1], 0x31);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, 7 * PAGE), 0x32);
	close(fd);
}

Test(maps, bad_addresses_are_einval, .timeout = 60)
{
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	unsigned char *want = free_range(4 * PAGE);
	const unsigned int each[] = { UPC_MAP_FIXED_NOREPLACE, UPC_MAP_FIXED };
	void *a;

	/* a hint is a hint, as mmap(2)'s: rounded down to a page, ignored where it cannot be */
	a = want + 1;
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_HINT, &a), 0);
	cr_assert_eq(a, (void *)want, "an unaligned hint is rounded down: %p, not %p", a, (void *)want);
	cr_assert_eq(upc_unmap(c, a, PAGE), 0);
	a = (void *)(UINTPTR_MAX & ~(uintptr_t)(PAGE - 1));
	cr_assert_eq(upc_map(c, fd, 0, 2 * PAGE, PROT_READ, UPC_MAP_HINT, &a), 0);
	cr_assert_eq(upc_unmap(c, a, 2 * PAGE), 0);
	for (size_t i = 0; i < ARRAY_SIZE(each); i++) {
		a = want + 1;	/* unaligned */
		cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, each[i], &a), -EINVAL, "flag %#x", each[i]);
		cr_assert_eq(a, want + 1);
		a = (void *)(UINTPTR_MAX & ~(uintptr_t)(PAGE - 1));	/* wraps around */
		cr_assert_eq(upc_map(c, fd, 0, 2 * PAGE, PROT_READ, each[i], &a), -EINVAL, "flag %#x", each[i]);
	}
	a = NULL;
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED, &a), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED_NOREPLACE, &a), -EINVAL);
	a = want;
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED | UPC_MAP_HINT, &a), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED | UPC_MAP_FIXED_NOREPLACE, &a), -EINVAL);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FLAGS_ALL + 1, &a), -EINVAL);
	/* Past the user address space: the kernel's answer, and no mapping. */
	a = (void *)(1ULL << 62);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED, &a), -ENOMEM);
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED_NOREPLACE, &a), -ENOMEM);
	cr_assert_eq(stats_of(c).nr_mappings, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* A fixed map is inaccessible until it is protected: a write to it is tracked from the start. */
Test(maps, a_fixed_map_is_tracked_from_the_first_write, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(4 * PAGE, NULL);
	unsigned char *a = reserved_range(4 * PAGE);

	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&a), 0);
	(void)*(volatile unsigned char *)a;	/* read first: mapped write-protected */
	a[0] = 0x51;
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_msync(c, a, 4 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	a[0] = 0x52;				/* written again after the clean: dirty again (I1) */
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, 0), 0x52);
	close(fd);
}

/*
 * A served child (synchronous tracking, UFFD_EVENT_FORK) inherits a
 * terabyte map: the pages the file gains after the fork are
 * write-protected in the child's mapping too (I1), so its writes there are
 * seen and written back, again after every clean.
 */
static void child_grown(unsigned char *p, int go, int done)
{
	const size_t g = 3 * GIB;
	unsigned char x;

	if (read(go, &x, 1) != 1)
		_exit(10);
	if (p[g] != 0x61)
		_exit(11);	/* the parent's growth is not seen */
	p[g + 1] = 0x62;
	if (write(done, &x, 1) != 1 || read(go, &x, 1) != 1)
		_exit(12);
	p[g + 2] = 0x63;	/* the same page, after the parent cleaned it */
	if (write(done, &x, 1) != 1)
		_exit(13);
	_exit(0);
}

Test(maps, a_forked_child_writes_what_the_file_gained_after_the_fork, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(PAGE, NULL), go[2], done[2], status;
	const off_t g = (off_t)(3 * GIB);
	unsigned char *p, x = 0, page[PAGE];
	pid_t pid;

	if (stats_of(c).track_mode != UPC_TRACK_SYNC || !(upc_probe() & UPC_FEAT_EVENT_FORK)) {
		cr_assert_eq(upc_cache_destroy(c), 0);
		cr_skip_test("forked children are served only under synchronous tracking with UFFD_EVENT_FORK");
	}
	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[0], pat(0));
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(done), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		child_grown(p, go[0], done[1]);
	memset(page, 0x61, sizeof(page));
	cr_assert_eq(upc_pwrite(c, fd, page, sizeof(page), g), (ssize_t)sizeof(page));
	cr_assert_eq(write(go[1], &x, 1), 1);
	cr_assert_eq(read(done[0], &x, 1), 1);
	cr_assert_eq(upc_msync(c, p, TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(file_byte(fd, g + 1), 0x62);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	cr_assert_eq(write(go[1], &x, 1), 1);
	cr_assert_eq(read(done[0], &x, 1), 1);
	cr_assert_eq(stats_of(c).pages_dirty, 1, "the child's write after the clean is not seen");
	cr_assert_eq(upc_msync(c, p, TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(file_byte(fd, g + 2), 0x63);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * The pages a file gains are write-protected in a big map before they
 * exist (I1).  Observable under asynchronous tracking, where an entry
 * without protection reads as written: a cached page the map has not
 * touched, next to one it has, would count as dirty though nothing wrote
 * it.
 */
Test(maps, pages_the_file_gains_are_write_protected_in_the_map, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(PAGE, NULL);
	const off_t g = (off_t)(8 * MIB);
	unsigned char *p, buf[4 * PAGE];

	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	memset(buf, 0x71, sizeof(buf));
	cr_assert_eq(pwrite(fd, buf, sizeof(buf), g), (ssize_t)sizeof(buf));	/* behind the cache */
	cr_assert_eq(upc_ftruncate(c, fd, 2 * g), 0);		/* the cache grows the file */
	/* cached clean through the cache's own mapping, not this one */
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), g), (ssize_t)sizeof(buf));
	cr_assert_eq(buf[0], 0x71);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	cr_assert_eq(p[g + 3 * PAGE], 0x71);	/* one page mapped, those before it not */
	cr_assert_eq(p[PAGE - 1], pat(PAGE - 1));
	cr_assert_eq(stats_of(c).pages_dirty, 0, "%llu pages dirty that nothing wrote",
		     (unsigned long long)stats_of(c).pages_dirty);
	p[g + 2 * PAGE] = 0x72;
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(p[g], 0x71);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, g + 2 * PAGE), 0x72);
	close(fd);
}

/*
 * A truncation empties the entries of the pages it drops, and a page that
 * was writable leaves no protection behind: when the file grows again,
 * those pages are write-protected again like any new page (I1; under
 * asynchronous tracking an unprotected entry reads as written).
 */
Test(maps, pages_a_truncation_dropped_are_protected_again_as_the_file_regrows, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(64 * PAGE, NULL);
	unsigned char *p, buf[32 * PAGE];

	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[40 * PAGE] = 0x81;			/* writable in this map */
	p[2 * PAGE] = 0x82;
	cr_assert_eq(upc_ftruncate(c, fd, 32 * PAGE), 0);
	cr_assert_eq(upc_ftruncate(c, fd, 64 * PAGE), 0);
	cr_assert_eq(upc_msync(c, p, TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	/* cached again, clean, not through this map */
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), 32 * PAGE), (ssize_t)sizeof(buf));
	cr_assert_eq(buf[8 * PAGE], 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0, "%llu pages dirty that nothing wrote",
		     (unsigned long long)stats_of(c).pages_dirty);
	cr_assert_eq(p[40 * PAGE], 0);
	p[41 * PAGE] = 0x83;
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, 41 * PAGE), 0x83);
	cr_assert_eq(file_byte(fd, 40 * PAGE), 0);
	close(fd);
}

/*
 * Growth racing maps and unmaps of the same file: every map sees the file
 * as far as it has grown, and every write through any map is kept (the
 * growth protects the maps in the rmap; a new map protects itself up to
 * the size it finds).
 */
struct racer {
	struct upc_cache *c;
	int fd;
	_Atomic long grown;	/* pages written so far */
	_Atomic bool stop;
};

static void *appender(void *arg)
{
	struct racer *r = arg;
	unsigned char page[PAGE];

	for (long i = 1; i < 1500; i++) {
		memset(page, (int)(i & 0x7f) + 1, sizeof(page));
		page[1] = 0;	/* the mapper's byte */
		if (upc_pwrite(r->c, r->fd, page, sizeof(page), (off_t)(i * 64 * PAGE)) != (ssize_t)sizeof(page))
			return (void *)1;
		atomic_store(&r->grown, i);
	}
	atomic_store(&r->stop, true);
	return NULL;
}

Test(maps, growth_racing_maps_and_unmaps, .timeout = 120)
{
	struct racer r = { .c = cache_new(0), .fd = tmpfile_pattern(PAGE, NULL) };
	pthread_t t;
	void *res;
	long maps = 0;

	cr_assert_eq(pthread_create(&t, NULL, appender, &r), 0);
	while (!atomic_load(&r.stop)) {
		unsigned char *p;
		long i = atomic_load(&r.grown);

		cr_assert_eq(upc_map(r.c, r.fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
		if (i) {
			cr_assert_eq(p[i * 64 * PAGE + 5], (unsigned char)((i & 0x7f) + 1), "page %ld", i);
			p[i * 64 * PAGE + 1] = 0xee;
		}
		cr_assert_eq(upc_unmap(r.c, p, TIB), 0);
		maps++;
	}
	cr_assert_eq(pthread_join(t, &res), 0);
	cr_assert_null(res);
	cr_assert_gt(maps, 0);
	cr_assert_eq(upc_cache_destroy(r.c), 0);
	for (long i = 1; i < 1500; i++) {
		unsigned char b[2];

		cr_assert_eq(pread(r.fd, b, 2, (off_t)(i * 64 * PAGE)), 2);
		cr_assert_eq(b[0], (unsigned char)((i & 0x7f) + 1), "page %ld", i);
		cr_assert(b[1] == 0 || b[1] == 0xee);
	}
	close(r.fd);
}

/*
 * A sparse terabyte file, as LMDB's MDB_WRITEMAP makes of its data file:
 * under synchronous tracking, a writable map of all of it costs page
 * tables for what is touched only (no uffd-wp markers in empty PTEs: every
 * fault on one reaches the handler, map.c), and writes are still tracked.
 * Asynchronous tracking keeps the markers (PAGEMAP_SCAN would report an
 * empty PTE as written): skipped there, with that reason.
 */
Test(maps, a_sparse_terabyte_file_costs_page_tables_for_what_is_touched, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(PAGE, NULL);
	long pte0 = status_kb("VmPTE");
	unsigned char *p;

	if (track_flags())
		cr_skip_test("asynchronous tracking write-protects empty PTEs up to end of file "
			     "(PAGEMAP_SCAN reports one without a marker as written): upc_map(3)");
	cr_assert_eq(ftruncate(fd, (off_t)TIB), 0);
	cr_assert_eq(upc_map(c, fd, 0, TIB, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (uint64_t off = 0; off < TIB; off += TIB / 16) {
		cr_assert_eq(p[off + 1], off ? 0 : pat(1));
		p[off + 1] = 0x5a;
	}
	cr_assert_eq(stats_of(c).pages_dirty, 16);
	cr_assert_lt(status_kb("VmPTE") - pte0, PTE_BOUND_KB, "VmPTE grew by %ld kB", status_kb("VmPTE") - pte0);
	cr_assert_eq(upc_msync(c, p, TIB, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(c).pages_dirty, 0);
	p[TIB / 2 + 1] = 0x5b;		/* protected again by the write-back: tracked */
	cr_assert_eq(stats_of(c).pages_dirty, 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(file_byte(fd, TIB / 2 + 1), 0x5b);
	close(fd);
}
