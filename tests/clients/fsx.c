/* SPDX-License-Identifier: MIT */
/*
 * fsx - a random file operation tester in the shape of fsx (the BSD/xfstests
 * "file system exerciser"), for upcache (issue 9, "Real clients").
 *
 * One file, a shadow copy of what it must hold, and a bounded number of
 * random operations: read, write, map-read, map-write, truncate, punch hole,
 * msync, fsync and remap.  After every operation the whole file is checked
 * against the shadow, through file I/O and through a long-lived mapping of
 * it (whose length changes at every remap, and may be longer than the file).
 * After every fsync the backing file itself is checked too, with raw system
 * calls that no LD_PRELOAD shim sees: what the cache reported durable must
 * be in the file.  At the end the mapping and the file are closed and the
 * file is checked once more the same way.
 *
 * Built twice from this source:
 *  - tests/clients/fsx: plain pread/pwrite/mmap/msync/ftruncate/fallocate/
 *    mremap, so that it runs on the kernel and, unchanged, under
 *    upcache-run (the shim takes the mappings over);
 *  - tests/clients/fsx-upc (-DFSX_UPC): the same operations through the
 *    library (upc_pread, upc_pwrite, upc_map, upc_unmap, upc_msync,
 *    upc_ftruncate, upc_fallocate, upc_fsync) in one embedded cache, so the
 *    engine is tested without the shim.  $UPC_TEST_TRACK=async (or -a)
 *    asks for asynchronous write-protect tracking.
 *
 * Usage: fsx [-N ops] [-S seed] [-l maxlen] [-m] [-a] [-q] [-R] [FILE]
 *  -N  number of operations (default 2000);
 *  -S  seed (default: from the clock; always printed);
 *  -l  largest file size (default 256 KiB);
 *  -R  no mremap (remap by unmap and map again only);
 *  -q  quiet: only the seed, the summary and failures;
 *  -a  (fsx-upc) asynchronous tracking.
 * FILE defaults to a new temporary file, removed at the end.
 * Exit status: 0 all checks passed, 1 a check failed (the first mismatch
 * and the last operations are printed), 2 usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/falloc.h>

#ifdef FSX_UPC
#include <upcache.h>
#define PROG "fsx-upc"
#else
#define PROG "fsx"
#endif

#define PAGE 4096UL
#define HISTORY 32

enum op { OP_READ, OP_WRITE, OP_MAPREAD, OP_MAPWRITE, OP_TRUNCATE, OP_PUNCH,
	  OP_MSYNC, OP_FSYNC, OP_REMAP, OP_NR };
static const char *const op_name[OP_NR] = {
	"read", "write", "mapread", "mapwrite", "truncate", "punch", "msync", "fsync", "remap",
};
/* Relative weights of the operations. */
static const unsigned int op_weight[OP_NR] = { 14, 16, 12, 14, 6, 6, 6, 3, 5 };

static struct {
	unsigned long n;
	enum op op;
	off_t off, len;
	long arg;
} history[HISTORY];

static unsigned long nops = 2000, opno;
static off_t maxlen = 256 * 1024;
static int quiet, no_mremap;
static uint64_t rng, seed;

static int fd = -1;
static char *path;
static unsigned char *shadow;	/* maxlen bytes: the file's expected content */
static off_t size;		/* the file's expected size */
static unsigned char *buf, *buf2;
static unsigned long counts[OP_NR];

/* The long-lived mapping: [0, map_len) of the file. */
static unsigned char *map;
static size_t map_len;

#ifdef FSX_UPC
static struct upc_cache *cache;
#endif

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static off_t rnd_below(off_t n)
{
	return n > 0 ? (off_t)(rnd() % (uint64_t)n) : 0;
}

static void say(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

static void dump_history(void)
{
	unsigned long first = opno >= HISTORY ? opno - HISTORY + 1 : 1;

	fprintf(stderr, PROG ": last operations (op number, name, offset, length, arg):\n");
	for (unsigned long n = first; n <= opno; n++) {
		const typeof(history[0]) *h = &history[n % HISTORY];

		if (h->n != n)
			continue;
		fprintf(stderr, "  %6lu %-8s 0x%jx 0x%jx %ld\n", h->n, op_name[h->op],
			(intmax_t)h->off, (intmax_t)h->len, h->arg);
	}
}

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, PROG ": FAIL at op %lu (seed %" PRIu64 ", file %s): ", opno, seed, path);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	dump_history();
	exit(1);
}

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* --------------------------------------------------------------- the file, two ways */

#ifdef FSX_UPC
/* The library returns negative errnos; these return them too. */
static ssize_t f_pread(void *b, size_t len, off_t off) { return upc_pread(cache, fd, b, len, off); }
static ssize_t f_pwrite(const void *b, size_t len, off_t off) { return upc_pwrite(cache, fd, b, len, off); }
static int f_truncate(off_t len) { return upc_ftruncate(cache, fd, len); }
static int f_punch(off_t off, off_t len)
{
	return upc_fallocate(cache, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
}
static int f_fsync(void) { return upc_fsync(cache, fd); }
static int f_map(off_t off, size_t len, int prot, void **addr)
{
	return upc_map(cache, fd, off, len, prot, 0, addr);
}
static int f_unmap(void *addr, size_t len) { return upc_unmap(cache, addr, len); }
static int f_msync(void *addr, size_t len, int sync)
{
	int ret = upc_msync(cache, addr, len, sync ? UPC_MS_SYNC : UPC_MS_ASYNC);

	return ret > 0 ? 0 : ret;	/* no pins here: a positive count cannot happen */
}
static int f_remap(size_t new_len, void **addr)
{
	int ret = upc_unmap(cache, map, map_len);

	return ret ? ret : f_map(0, new_len, PROT_READ | PROT_WRITE, addr);
}
#else
#define NEG(x) ((x) < 0 ? -errno : (x))
static ssize_t f_pread(void *b, size_t len, off_t off) { return NEG(pread(fd, b, len, off)); }
static ssize_t f_pwrite(const void *b, size_t len, off_t off) { return NEG(pwrite(fd, b, len, off)); }
static int f_truncate(off_t len) { return NEG(ftruncate(fd, len)); }
static int f_punch(off_t off, off_t len)
{
	return NEG(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len));
}
static int f_fsync(void) { return NEG(fsync(fd)); }
static int f_map(off_t off, size_t len, int prot, void **addr)
{
	void *p = mmap(NULL, len, prot, MAP_SHARED, fd, off);

	if (p == MAP_FAILED)
		return -errno;
	*addr = p;
	return 0;
}
static int f_unmap(void *addr, size_t len) { return NEG(munmap(addr, len)); }
static int f_msync(void *addr, size_t len, int sync)
{
	return NEG(msync(addr, len, sync ? MS_SYNC : MS_ASYNC));
}
/* Remap by mremap(2) (one time in two, unless -R), else by munmap and mmap. */
static int f_remap(size_t new_len, void **addr)
{
	if (!no_mremap && rnd() % 2) {
		void *p = mremap(map, map_len, new_len, MREMAP_MAYMOVE);

		if (p == MAP_FAILED)
			return -errno;
		*addr = p;
		return 0;
	}
	if (munmap(map, map_len))
		return -errno;
	return f_map(0, new_len, PROT_READ | PROT_WRITE, addr);
}
#endif

/* ------------------------------------------------------------------ checks */

static void compare(const unsigned char *got, off_t off, off_t len, const char *what)
{
	for (off_t i = 0; i < len; i++) {
		if (got[i] == shadow[off + i])
			continue;
		off_t end = i;

		while (end < len && got[end] != shadow[off + end])
			end++;
		fail("%s: byte 0x%jx is 0x%02x, expected 0x%02x (%jd bytes differ from there; "
		     "file size 0x%jx)", what, (intmax_t)(off + i), got[i], shadow[off + i],
		     (intmax_t)(end - i), (intmax_t)size);
	}
}

/* Read [off, off+len) of the file with file I/O (the cache's, the shim's or the kernel's). */
static void read_all(unsigned char *b, off_t off, off_t len, const char *what)
{
	for (off_t done = 0; done < len;) {
		ssize_t n = f_pread(b + done, len - done, off + done);

		if (n <= 0)
			fail("%s: pread(0x%jx, 0x%jx) = %zd (%s)", what, (intmax_t)(len - done),
			     (intmax_t)(off + done), n, n ? strerror((int)-n) : "end of file");
		done += n;
	}
}

/*
 * The whole file against the shadow: its size, every byte through file I/O,
 * every byte of it that the long-lived mapping covers, and the zeros of the
 * mapping's part of the last page past end of file.
 */
static void check_all(void)
{
	ssize_t n;

	read_all(buf, 0, size, "check");
	compare(buf, 0, size, "check (file I/O)");
	n = f_pread(buf, 1, size);
	if (n != 0)
		fail("check: a read at end of file 0x%jx returned %zd, not 0 (size wrong?)",
		     (intmax_t)size, n);
	if (map) {
		off_t mapped = (off_t)map_len < size ? (off_t)map_len : size;
		off_t tail_end = (mapped + (off_t)PAGE - 1) & ~(off_t)(PAGE - 1);

		compare(map, 0, mapped, "check (mapping)");
		if (tail_end > (off_t)map_len)
			tail_end = map_len;
		for (off_t i = mapped; i < tail_end; i++)
			if (map[i])
				fail("check: mapping byte 0x%jx past end of file 0x%jx is 0x%02x, "
				     "not 0", (intmax_t)i, (intmax_t)size, map[i]);
	}
}

/*
 * The backing file itself, with raw system calls (a preload shim sees no
 * syscall(2)), and in fsx-upc through a descriptor of its own.  Called only
 * after an fsync or at the end, when everything must have reached it.
 */
static void check_backing(const char *when)
{
	struct stat st;
	int rfd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);

	if (rfd < 0)
		fail("%s: open %s: %s", when, path, strerror(errno));
	if (syscall(SYS_fstat, rfd, &st))
		fail("%s: fstat: %s", when, strerror(errno));
	if (st.st_size != size)
		fail("%s: the backing file's size is 0x%jx, expected 0x%jx", when,
		     (intmax_t)st.st_size, (intmax_t)size);
	for (off_t done = 0; done < size;) {
		long n = syscall(SYS_pread64, rfd, buf2 + done, size - done, done);

		if (n <= 0)
			fail("%s: raw pread at 0x%jx: %ld (%s)", when, (intmax_t)done, n,
			     n ? strerror(errno) : "end of file");
		done += n;
	}
	syscall(SYS_close, rfd);
	char what[64];

	snprintf(what, sizeof(what), "%s (backing file)", when);
	compare(buf2, 0, size, what);
}

/* ------------------------------------------------------------------ operations */

/* Fill b with bytes that name the operation, so a mismatch says which write it came from. */
static void fill(unsigned char *b, off_t off, off_t len)
{
	/* one byte in 16 carries the offset, the others the op number (never 0) */
	for (off_t i = 0; i < len; i++)
		b[i] = ((off + i) & 15) ? (unsigned char)(opno % 255 + 1) : (unsigned char)((off + i) >> 4);
}

/* Grow the shadow's size (the new bytes are zero already: see shrink). */
static void set_size(off_t new_size)
{
	if (new_size < size)
		memset(shadow + new_size, 0, size - new_size);
	size = new_size;
}

static void op_read(off_t off, off_t len)
{
	if (off >= size)
		return;
	if (off + len > size)
		len = size - off;
	read_all(buf, off, len, "read");
	compare(buf, off, len, "read");
}

static void op_write(off_t off, off_t len)
{
	ssize_t n;

	fill(buf, off, len);
	n = f_pwrite(buf, len, off);
	if (n != len)
		fail("write: pwrite(0x%jx, 0x%jx) = %zd (%s)", (intmax_t)off, (intmax_t)len, n,
		     n < 0 ? strerror((int)-n) : "short");
	memcpy(shadow + off, buf, len);
	if (off + len > size)
		size = off + len;
}

/* A mapping of its own over [off, off+len): page-aligned start, may go past the long-lived one. */
static void op_mapread(off_t off, off_t len)
{
	off_t pg, delta;
	void *p = NULL;
	int ret;

	if (off >= size)
		return;
	if (off + len > size)
		len = size - off;
	pg = off & ~(off_t)(PAGE - 1);
	delta = off - pg;
	ret = f_map(pg, len + delta, PROT_READ, &p);
	if (ret)
		fail("mapread: map(0x%jx, 0x%jx): %s", (intmax_t)pg, (intmax_t)(len + delta),
		     strerror(-ret));
	compare((unsigned char *)p + delta, off, len, "mapread");
	ret = f_unmap(p, len + delta);
	if (ret)
		fail("mapread: unmap: %s", strerror(-ret));
}

/*
 * Write through a mapping: a new one (unmapped again, after an msync one time
 * in two) or, if it covers the range, the long-lived one.  Past end of file
 * the file is extended first (a store past it would not reach the file).
 */
static void op_mapwrite(off_t off, off_t len, long *how)
{
	unsigned char *dst;
	off_t pg = off & ~(off_t)(PAGE - 1), delta = off - pg;
	void *p = NULL;
	int ret;

	if (off + len > size) {
		ret = f_truncate(off + len);
		if (ret)
			fail("mapwrite: extend to 0x%jx: %s", (intmax_t)(off + len), strerror(-ret));
		set_size(off + len);
	}
	fill(buf, off, len);
	*how = (long)(rnd() % 3);
	if (*how == 0 && map && off + len <= (off_t)map_len) {
		dst = map + off;
	} else {
		*how = *how ? *how : 1;
		ret = f_map(pg, len + delta, PROT_READ | PROT_WRITE, &p);
		if (ret)
			fail("mapwrite: map(0x%jx, 0x%jx): %s", (intmax_t)pg,
			     (intmax_t)(len + delta), strerror(-ret));
		dst = (unsigned char *)p + delta;
	}
	memcpy(dst, buf, len);
	memcpy(shadow + off, buf, len);
	if (p) {
		if (*how == 2) {
			ret = f_msync(p, len + delta, 1);
			if (ret)
				fail("mapwrite: msync: %s", strerror(-ret));
		}
		ret = f_unmap(p, len + delta);
		if (ret)
			fail("mapwrite: unmap: %s", strerror(-ret));
	}
}

static void op_truncate(off_t new_size)
{
	int ret = f_truncate(new_size);

	if (ret)
		fail("truncate to 0x%jx: %s", (intmax_t)new_size, strerror(-ret));
	set_size(new_size);
}

static void op_punch(off_t off, off_t len)
{
	int ret;

	if (off >= size)
		return;
	ret = f_punch(off, len);
	if (ret == -EOPNOTSUPP)
		die("punch: the file system cannot punch holes");
	if (ret)
		fail("punch(0x%jx, 0x%jx): %s", (intmax_t)off, (intmax_t)len, strerror(-ret));
	if (off + len > size)
		len = size - off;
	memset(shadow + off, 0, len);
}

/* msync of a page-aligned part of the long-lived mapping, MS_SYNC or MS_ASYNC. */
static void op_msync(off_t off, off_t len, long sync)
{
	off_t pg = off & ~(off_t)(PAGE - 1);
	int ret;

	if (!map || pg >= (off_t)map_len)
		return;
	len += off - pg;
	if (pg + len > (off_t)map_len)
		len = map_len - pg;
	ret = f_msync(map + pg, len, (int)sync);
	if (ret)
		fail("msync(0x%jx, 0x%jx, %s): %s", (intmax_t)pg, (intmax_t)len,
		     sync ? "sync" : "async", strerror(-ret));
}

static void op_fsync(void)
{
	int ret = f_fsync();

	if (ret)
		fail("fsync: %s", strerror(-ret));
	check_backing("fsync");
}

/* A new length for the long-lived mapping: up to twice the largest file, often past end of file. */
static void op_remap(off_t new_len)
{
	void *p = NULL;
	int ret = f_remap(new_len, &p);

	if (ret)
		fail("remap to 0x%jx: %s", (intmax_t)new_len, strerror(-ret));
	map = p;
	map_len = new_len;
}

static enum op pick(void)
{
	unsigned int total = 0, r;

	for (int i = 0; i < OP_NR; i++)
		total += op_weight[i];
	r = (unsigned int)(rnd() % total);
	for (int i = 0; i < OP_NR; i++) {
		if (r < op_weight[i])
			return i;
		r -= op_weight[i];
	}
	return OP_READ;
}

static void step(void)
{
	enum op op = pick();
	/* Lengths: mostly small, some page-sized and page-aligned, some large. */
	off_t len = rnd() % 4 == 0 ? (off_t)(PAGE * (1 + rnd_below(8))) : 1 + rnd_below(maxlen / 8);
	off_t off = rnd() % 4 == 0 ? (rnd_below(maxlen) & ~(off_t)(PAGE - 1)) : rnd_below(maxlen);
	long arg = 0;

	if (off + len > maxlen)
		len = maxlen - off;
	if (len <= 0)
		len = 1, off = maxlen - 1;
	if (op == OP_READ || op == OP_MAPREAD || op == OP_PUNCH) {
		/* aim inside the file, where there is something to see */
		if (size > 0)
			off = rnd_below(size);
	}
	if (op == OP_TRUNCATE)
		off = rnd() % 8 == 0 ? 0 : rnd_below(maxlen + 1), len = 0;
	if (op == OP_REMAP)
		off = 0, len = (off_t)(PAGE * (1 + rnd_below(2 * maxlen / PAGE)));
	if (op == OP_MSYNC)
		arg = (long)(rnd() % 2);

	history[opno % HISTORY].n = opno;
	history[opno % HISTORY].op = op;
	history[opno % HISTORY].off = off;
	history[opno % HISTORY].len = len;
	history[opno % HISTORY].arg = arg;
	say("%lu %s 0x%jx 0x%jx %ld\n", opno, op_name[op], (intmax_t)off, (intmax_t)len, arg);

	switch (op) {
	case OP_READ: op_read(off, len); break;
	case OP_WRITE: op_write(off, len); break;
	case OP_MAPREAD: op_mapread(off, len); break;
	case OP_MAPWRITE: op_mapwrite(off, len, &arg); history[opno % HISTORY].arg = arg; break;
	case OP_TRUNCATE: op_truncate(off); break;
	case OP_PUNCH: op_punch(off, len); break;
	case OP_MSYNC: op_msync(off, len, arg); break;
	case OP_FSYNC: op_fsync(); break;
	case OP_REMAP: op_remap(len); break;
	default: break;
	}
	counts[op]++;
	check_all();
}

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [-N ops] [-S seed] [-l maxlen] [-R] [-q]"
#ifdef FSX_UPC
		" [-a]"
#endif
		" [FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int opt, async = 0, tmp = 0, ret;
	struct timeval tv;
	char tmpl[] = "/var/tmp/upc-fsx.XXXXXX";

	gettimeofday(&tv, NULL);
	seed = (uint64_t)tv.tv_sec * 1000000 + tv.tv_usec;
	while ((opt = getopt(argc, argv, "N:S:l:Rqa")) != -1) {
		switch (opt) {
		case 'N': nops = strtoul(optarg, NULL, 0); break;
		case 'S': seed = strtoull(optarg, NULL, 0); break;
		case 'l': maxlen = (off_t)strtoull(optarg, NULL, 0); break;
		case 'R': no_mremap = 1; break;
		case 'q': quiet = 1; break;
		case 'a': async = 1; break;
		default: usage();
		}
	}
	if (optind + 1 < argc || maxlen < (off_t)PAGE)
		usage();
	{
		const char *t = getenv("UPC_TEST_TRACK");

		if (t && !strcmp(t, "async"))
			async = 1;
	}
	rng = seed;
	printf(PROG ": seed %" PRIu64 ", %lu operations, files up to 0x%jx bytes%s\n", seed, nops,
	       (intmax_t)maxlen, async ? ", asynchronous tracking" : "");
	fflush(stdout);

	if (optind < argc) {
		path = argv[optind];
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	} else {
		path = tmpl;
		fd = mkstemp(tmpl);
		tmp = 1;
	}
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	shadow = calloc(1, maxlen);
	buf = malloc(2 * maxlen);
	buf2 = malloc(2 * maxlen);
	if (!shadow || !buf || !buf2)
		die("out of memory");

#ifdef FSX_UPC
	{
		UPC_OPTS(upc_cache_opts, o, .flags = async ? UPC_CACHE_ASYNC_WP : 0);

		ret = upc_cache_create(&o, &cache);
		if (ret)
			die("upc_cache_create: %s", upc_strerror(ret));
	}
#endif
	/* The long-lived mapping starts a page long, over an empty file. */
	{
		void *p = NULL;

		ret = f_map(0, PAGE, PROT_READ | PROT_WRITE, &p);
		if (ret)
			die("map: %s", strerror(-ret));
		map = p;
		map_len = PAGE;
	}

	for (opno = 1; opno <= nops; opno++)
		step();
	opno = nops;

	ret = f_unmap(map, map_len);
	if (ret)
		fail("final unmap: %s", strerror(-ret));
	map = NULL;
	ret = f_fsync();
	if (ret)
		fail("final fsync: %s", strerror(-ret));
	check_all();
#ifdef FSX_UPC
	ret = upc_cache_destroy(cache);
	if (ret)
		fail("upc_cache_destroy: %s", upc_strerror(ret));
	cache = NULL;
#endif
	if (close(fd))
		fail("close: %s", strerror(errno));
	check_backing("end");

	printf(PROG ": %lu operations passed (seed %" PRIu64 "):", nops, seed);
	for (int i = 0; i < OP_NR; i++)
		printf(" %s %lu", op_name[i], counts[i]);
	printf("\n");
	if (tmp)
		unlink(path);
	return 0;
}
