/* SPDX-License-Identifier: MIT */
/*
 * upc-bench-work.c - workloads 1-7: upcache against the kernel's mmap of the
 * same file (and of a memfd holding the same data), and against pread/pwrite
 * into a private buffer where a database would use them.
 *
 * Every file page starts with a tag word, page_word(page index), so that a
 * pass can check that it read the file's data and not zeros or a neighbour
 * page; a mismatch is reported next to the timing, it is not hidden.
 */
#include "upc-bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat.h"	/* uapi newer than the build host's headers */

static size_t sz(size_t full, size_t quick)
{
	return B.quick ? quick : full;
}

#define MiB (1UL << 20)

/* ------------------------------------------------------------ files */

#define MAX_FILES 16
static char bench_files[MAX_FILES][256];
static volatile int nr_bench_files;

/* Async-signal-safe: also called from the signal handler and the watchdog. */
void cleanup_files(void)
{
	for (int i = 0; i < nr_bench_files; i++)
		if (bench_files[i][0])
			unlink(bench_files[i]);
}

static void forget_file(const char *path)
{
	for (int i = 0; i < nr_bench_files; i++)
		if (!strcmp(bench_files[i], path)) {
			unlink(path);
			bench_files[i][0] = 0;
		}
}

uint64_t page_word(uint64_t pg)
{
	return (pg + 1) * 0x9E3779B97F4A7C15ULL;
}

void bench_file_name(const char *tag, char *path, size_t pathlen)
{
	snprintf(path, pathlen, "%s/upc-bench.%d.%s", B.dir, (int)getpid(), tag);
	for (int i = 0; i < nr_bench_files; i++)
		if (!strcmp(bench_files[i], path))
			return;
	if (nr_bench_files < MAX_FILES) {
		snprintf(bench_files[nr_bench_files], sizeof(bench_files[0]), "%s", path);
		nr_bench_files++;
	}
}

/* Create a file of @size bytes in B.dir whose every page starts with its tag word; fsync it. */
int bench_file(const char *tag, size_t size, char *path, size_t pathlen)
{
	const size_t chunk = 4 * MiB;
	char *buf;
	int fd, ret = 0;

	bench_file_name(tag, path, pathlen);
	progress("creating %s (%zu MiB)", path, size / MiB);
	buf = malloc(chunk);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < chunk; i++)
		buf[i] = (char)(i * 131 + 7);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	for (size_t off = 0; off < size; off += chunk) {
		size_t len = size - off < chunk ? size - off : chunk;

		for (size_t p = 0; p < len; p += PG)
			*(uint64_t *)(buf + p) = page_word((off + p) / PG);
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
			ret = errno ? -errno : -EIO;
			break;
		}
	}
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	close(fd);
out:
	free(buf);
	if (ret < 0)
		fprintf(stderr, "upc-bench: cannot create %s: %s\n", path, strerror(-ret));
	return ret;
}

int drop_file_cache(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	ret = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	return -ret;
}

int warm_file_cache(const char *path)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	off_t off = 0;

	if (fd < 0)
		return -errno;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0)
		off += n;
	close(fd);
	return n < 0 ? -errno : 0;
}

/* A memfd holding a copy of the file: the kernel's shmem with the same data, all pages present. */
int memfd_copy_of(const char *path, size_t size)
{
	static char buf[1 << 20];
	int fd, mfd;
	ssize_t n;
	off_t off = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	mfd = memfd_create("upc-bench", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, (off_t)size) < 0) {
		n = -errno;
		close(fd);
		if (mfd >= 0)
			close(mfd);
		return (int)n;
	}
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		if (pwrite(mfd, buf, (size_t)n, off) != n)
			break;
		off += n;
	}
	close(fd);
	return mfd;
}

uint64_t rnd64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Pages 0, stride, 2*stride, ... below @npages, in a random order (Fisher-Yates). */
uint32_t *random_order(size_t npages, size_t stride, uint64_t seed, size_t *count)
{
	size_t n = (npages + stride - 1) / stride;
	uint32_t *o = malloc(n * sizeof(*o));
	uint64_t s = seed * 2654435761u + 88172645463325252ULL;

	if (!o) {
		fprintf(stderr, "upc-bench: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		o[i] = (uint32_t)(i * stride);
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rnd64(&s) % (i + 1);
		uint32_t t = o[i];

		o[i] = o[j];
		o[j] = t;
	}
	*count = n;
	return o;
}

uint64_t expect_sum(const uint32_t *order, size_t n)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += page_word(order ? order[i] : i);
	return sum;
}

int pin_self(int cpu, cpu_set_t *saved)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(*saved), saved) < 0)
		return -errno;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}

void unpin_self(const cpu_set_t *saved)
{
	sched_setaffinity(0, sizeof(*saved), saved);
}

/* ------------------------------------------------------------ counters */

static int read_small(const char *path, char *buf, size_t len);

/* KiB read and written on the block device holding B.dir (from /sys/dev/block/M:m/stat). */
static void dev_kib(uint64_t *rd, uint64_t *wr)
{
	static char path[64];
	unsigned long long f[7];
	char buf[256];
	struct stat st;

	*rd = *wr = 0;
	if (!path[0]) {
		if (stat(B.dir, &st) < 0)
			return;
		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/stat", major(st.st_dev), minor(st.st_dev));
	}
	if (read_small(path, buf, sizeof(buf)) < 0 ||
	    sscanf(buf, "%llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
		   &f[6]) != 7)
		return;
	*rd = f[2] / 2;
	*wr = f[6] / 2;
}

/* KiB this process read from and wrote to storage (write_bytes counts buffered writes when dirtied). */
static void proc_io_kib(uint64_t *rd, uint64_t *wr)
{
	char buf[512], *p;

	*rd = *wr = 0;
	if (read_small("/proc/self/io", buf, sizeof(buf)) < 0)
		return;
	/* read_small() stops at the first newline: read the whole file instead. */
	{
		int fd = open("/proc/self/io", O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n <= 0)
			return;
		buf[n] = 0;
	}
	p = strstr(buf, "\nread_bytes:");
	if (p)
		*rd = strtoull(p + 12, NULL, 10) / 1024;
	p = strstr(buf, "\nwrite_bytes:");
	if (p)
		*wr = strtoull(p + 13, NULL, 10) / 1024;
}

void snap_begin(struct bench_counters *c, struct upc_cache *cache)
{
	struct rusage ru;

	memset(c, 0, sizeof(*c));
	getrusage(RUSAGE_SELF, &ru);
	c->minflt = (uint64_t)ru.ru_minflt;
	c->majflt = (uint64_t)ru.ru_majflt;
	dev_kib(&c->dev_rd_kib, &c->dev_wr_kib);
	proc_io_kib(&c->io_rd_kib, &c->io_wr_kib);
	if (cache) {
		struct upc_stats st = { .sz = sizeof(st) };

		if (upc_stats(cache, &st) == 0) {
			c->upc = true;
			c->faults_missing = st.faults_missing;
			c->faults_wp = st.faults_wp;
			c->faults_minor = st.faults_minor;
			c->fill_ios = st.fill_ios;
			c->pages_filled = st.pages_filled;
			c->wp_calls = st.wp_calls;
			c->wb_ios = st.wb_ios;
			c->pages_written = st.pages_written;
			c->wb_gap_pages = st.wb_gap_pages;
			c->syncs = st.syncs;
			c->pages_evicted = st.pages_evicted;
		}
	}
}

/* Replace the values taken by snap_begin() by the deltas since then. */
void snap_end(struct bench_counters *c, struct upc_cache *cache)
{
	struct rusage ru;
	uint64_t rd, wr;

	getrusage(RUSAGE_SELF, &ru);
	dev_kib(&rd, &wr);
	c->minflt = (uint64_t)ru.ru_minflt - c->minflt;
	c->majflt = (uint64_t)ru.ru_majflt - c->majflt;
	c->dev_rd_kib = rd - c->dev_rd_kib;
	c->dev_wr_kib = wr - c->dev_wr_kib;
	proc_io_kib(&rd, &wr);
	c->io_rd_kib = rd - c->io_rd_kib;
	c->io_wr_kib = wr - c->io_wr_kib;
	if (cache && c->upc) {
		struct upc_stats st = { .sz = sizeof(st) };

		if (upc_stats(cache, &st) == 0) {
			c->track_mode = st.track_mode;
			c->faults_missing = st.faults_missing - c->faults_missing;
			c->faults_wp = st.faults_wp - c->faults_wp;
			c->faults_minor = st.faults_minor - c->faults_minor;
			c->fill_ios = st.fill_ios - c->fill_ios;
			c->pages_filled = st.pages_filled - c->pages_filled;
			c->ra_max_window = st.ra_max_window;	/* a maximum, not a count */
			c->wp_calls = st.wp_calls - c->wp_calls;
			c->wb_ios = st.wb_ios - c->wb_ios;
			c->pages_written = st.pages_written - c->pages_written;
			c->wb_gap_pages = st.wb_gap_pages - c->wb_gap_pages;
			c->syncs = st.syncs - c->syncs;
			c->pages_evicted = st.pages_evicted - c->pages_evicted;
			c->pages_cached = st.pages_cached;
		}
	}
}

/* ------------------------------------------------------------ upcache helpers */

int upc_new(bool async, unsigned int flags, size_t mem_limit, struct upc_cache **cp)
{
	UPC_OPTS(upc_cache_opts, o, .flags = flags | (async ? UPC_CACHE_ASYNC_WP : 0),
		 .mem_limit = mem_limit);

	return upc_cache_create(&o, cp);
}

/*
 * Fill the cache with the @n pages of @order only, one page per fault
 * (UPC_ADV_RANDOM: no readahead); @order NULL: every page of the file, with
 * the default readahead.
 */
int upc_warm_pages(struct upc_cache *c, const char *path, size_t size, const uint32_t *order, size_t n)
{
	volatile uint64_t sum = 0;
	char *p;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p);
	if (ret == 0) {
		ret = order ? upc_advise(c, p, size, UPC_ADV_RANDOM) : 0;
		for (size_t i = 0; i < n && !ret; i++)
			sum += *(volatile uint64_t *)(p + (order ? (size_t)order[i] : i) * PG);
		upc_unmap(c, p, size);
	}
	close(fd);
	(void)sum;
	return ret;
}

/* Fill the cache with the whole file: map it, read every page, unmap. */
int upc_warm(struct upc_cache *c, const char *path, size_t size)
{
	return upc_warm_pages(c, path, size, NULL, (size + PG - 1) / PG);
}

struct upc_cache *cache_or_die(bool async, unsigned int flags, size_t mem_limit)
{
	struct upc_cache *c;
	int ret = upc_new(async, flags, mem_limit, &c);

	if (ret < 0) {
		fprintf(stderr, "upc-bench: upc_cache_create: %s\n", upc_strerror(ret));
		exit(1);
	}
	return c;
}

static const char *upc_name(bool async, const char *suffix, char *buf, size_t len)
{
	snprintf(buf, len, "%.24s%.16s", async ? B.async_label : "upc-sync", suffix);
	return buf;
}

/* Variant indices of the writable-mapping rows of a cached-read workload (issue 11, row A). */
struct rw_rows {
	int kernel_memfd, kernel_ext4, upc_sync, upc_async;
};

/*
 * The cached-read workloads' writable-mapping rows: the shmem floor, ext4,
 * and upcache in both tracking modes, from template @t (left mapping
 * read-write, K_UPC, @async's cache).  @sync_desc says what the sync row
 * does.
 */
static void add_rw_rows(struct workload *w, struct acc *t, struct upc_cache *sync, struct upc_cache *async,
			const char *sync_desc, struct rw_rows *r)
{
	char nm[NAME_LEN];

	t->map_rw = true;
	t->kind = K_MEMFD;
	r->kernel_memfd = add_acc(w, "kernel-memfd-rw", false, t, "kernel read-write mmap of the memfd: the "
				  "shmem floor of issue 11's row A");
	t->kind = K_FILE;
	r->kernel_ext4 = add_acc(w, "kernel-ext4-rw", false, t, "kernel read-write mmap of the file");
	t->kind = K_UPC;
	t->cache = sync;
	r->upc_sync = add_acc(w, "upc-sync-rw", false, t, "%s", sync_desc);
	t->cache = async;
	r->upc_async = add_acc(w, upc_name(true, "-rw", nm, sizeof(nm)), false, t,
			       "as upc-sync-rw, async tracking asked");
}

/* ------------------------------------------------------------ the generic access pass */

struct worker {
	const struct acc *a;
	pthread_t th;
	pthread_barrier_t *bar;
	char *base;
	int fd;
	size_t from, to;
	uint64_t sum;
	char *buf;
	int err;
};

static void access_range(struct worker *t)
{
	const struct acc *a = t->a;
	uint64_t sum = 0;

	if (a->kind == K_PREAD && a->pread_pages > 1) {
		size_t chunk = a->pread_pages * PG;

		for (size_t off = t->from * PG; off < t->to * PG; off += chunk) {
			size_t len = t->to * PG - off < chunk ? t->to * PG - off : chunk;

			if (pread(t->fd, t->buf, len, (off_t)off) != (ssize_t)len) {
				t->err = -EIO;
				break;
			}
			for (size_t p = 0; p < len; p += PG)
				sum += *(uint64_t *)(t->buf + p);
		}
		t->sum = sum;
		return;
	}
	for (size_t i = t->from; i < t->to; i++) {
		size_t pg = a->order ? a->order[i] : i;

		if (a->kind == K_PREAD) {
			if (pread(t->fd, t->buf, PG, (off_t)(pg * PG)) != (ssize_t)PG) {
				t->err = -EIO;
				break;
			}
			sum += *(uint64_t *)t->buf;
		} else if (a->write) {
			*(volatile uint64_t *)(t->base + pg * PG + 8) = pg + (uint64_t)B.cur_rep;
		} else if (a->copy) {
			memcpy(t->buf, t->base + pg * PG, PG);
			__asm__ volatile("" : : "r"(t->buf) : "memory");
			sum += *(uint64_t *)t->buf;
		} else {
			sum += *(volatile uint64_t *)(t->base + pg * PG);
		}
	}
	t->sum = sum;
}

static void *worker_main(void *arg)
{
	struct worker *t = arg;

	pthread_barrier_wait(t->bar);
	access_range(t);
	return NULL;
}

/*
 * A cache with a single fault handler on @cpu: UPC_FAULT_HANDLERS=1 gives
 * one unpinned handler, which inherits the mask of the thread that creates
 * the cache.  What the library's fault path costs without the wake-ups of
 * the other CPUs' handlers (upcache(7), THREADS AND LOCKING).
 */
int upc_new_one_handler(bool async, unsigned int flags, int cpu, struct upc_cache **cp)
{
	const char *prev = getenv("UPC_FAULT_HANDLERS");
	char *saved = prev ? strdup(prev) : NULL;
	cpu_set_t old;
	int ret = pin_self(cpu, &old);

	if (ret < 0) {
		free(saved);
		return ret;
	}
	setenv("UPC_FAULT_HANDLERS", "1", 1);
	ret = upc_new(async, flags, 0, cp);
	if (saved)
		setenv("UPC_FAULT_HANDLERS", saved, 1);
	else
		unsetenv("UPC_FAULT_HANDLERS");
	free(saved);
	unpin_self(&old);
	return ret;
}

static int acc_pass(struct variant *v, struct sample *s)
{
	const struct acc *a = v->ctx;
	struct upc_cache *cache = a->cache;
	struct worker wk[2];
	pthread_barrier_t bar;
	int nt = a->threads > 1 ? 2 : 1, fd = -1, uffd = -1, ret = 0;
	int prot = PROT_READ | (a->write || a->map_rw ? PROT_WRITE : 0);
	size_t n = a->order ? a->n : a->npages;
	cpu_set_t oldmask;
	char *base = NULL;
	uint64_t sum = 0;
	double t0, t1, t2;

	if (a->cold) {
		ret = drop_file_cache(a->path);
		if (ret < 0)
			return ret;
	}
	if (a->one_cpu) {
		ret = pin_self(a->one_cpu - 1, &oldmask);
		if (ret < 0)
			return ret;
	}
	if (a->kind == K_UPC && a->fresh_cache) {
		ret = a->one_cpu ? upc_new_one_handler(a->async, a->cflags, a->one_cpu - 1, &cache)
				 : upc_new(a->async, a->cflags, 0, &cache);
		if (ret < 0)
			goto out_pin;
	}
	if (a->kind != K_MEMFD) {
		fd = open(a->path, (a->write || a->map_rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			goto out_cache;
		}
	}
	memset(wk, 0, sizeof(wk));
	pthread_barrier_init(&bar, NULL, (unsigned int)nt + 1);
	for (int i = 0; i < nt; i++) {
		wk[i].a = a;
		wk[i].bar = &bar;
		wk[i].fd = fd;
		wk[i].from = n * (size_t)i / (size_t)nt;
		wk[i].to = n * (size_t)(i + 1) / (size_t)nt;
		wk[i].buf = aligned_alloc(PG, a->pread_pages > 1 ? a->pread_pages * PG : PG);
		if (nt > 1 && pthread_create(&wk[i].th, NULL, worker_main, &wk[i]) != 0) {
			fprintf(stderr, "upc-bench: pthread_create failed\n");
			exit(1);
		}
	}
	if (a->kind == K_MEMFD && a->uffd_mode != UREG_NONE) {
		/* SIGBUS mode: a page that is unexpectedly missing crashes instead of waiting forever. */
		uffd = uffd_open(UFFD_FEATURE_SIGBUS | (a->uffd_mode == UREG_WP ?
				 UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED : 0));
		if (uffd < 0) {
			ret = uffd;
			goto out_threads;
		}
	}

	snap_begin(&s->c, a->kind == K_UPC ? cache : NULL);
	t0 = now_ns();
	switch (a->kind) {
	case K_FILE:
		base = mmap(NULL, a->size, prot, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED)
			ret = -errno;
		else if (a->madv && madvise(base, a->size, a->madv) < 0)
			ret = -errno;
		break;
	case K_MEMFD:
		base = mmap(NULL, a->size, prot, MAP_SHARED, a->memfd, 0);
		if (base == MAP_FAILED)
			ret = -errno;
		else if (uffd >= 0)
			ret = uffd_register(uffd, base, a->size, UFFDIO_REGISTER_MODE_MISSING |
					    (a->uffd_mode == UREG_WP ? UFFDIO_REGISTER_MODE_WP : 0));
		if (!ret && a->uffd_mode == UREG_WP)
			ret = uffd_wp(uffd, base, a->size, true);
		break;
	case K_UPC:
		ret = upc_map(cache, fd, 0, a->size, prot, a->mflags, (void **)&base);
		if (ret < 0)
			base = MAP_FAILED;
		else if (a->uadv)
			ret = upc_advise(cache, base, a->size, a->uadv);
		break;
	case K_PREAD:
		break;
	}
	t1 = now_ns();
	if (ret < 0) {
		/* Let the workers run on nothing: they must pass the barrier to be joined. */
		for (int i = 0; i < nt; i++)
			wk[i].from = wk[i].to = 0;
	}
	for (int i = 0; i < nt; i++)
		wk[i].base = base;
	if (nt > 1) {
		pthread_barrier_wait(&bar);
		for (int i = 0; i < nt; i++)
			pthread_join(wk[i].th, NULL);
	} else {
		access_range(&wk[0]);
	}
	t2 = now_ns();
	snap_end(&s->c, a->kind == K_UPC ? cache : NULL);
	nt = 1;			/* the threads, if any, are joined */
	if (ret < 0)
		goto out_unmap;
	for (int i = 0; i < (a->threads > 1 ? 2 : 1); i++) {
		sum += wk[i].sum;
		if (wk[i].err && !ret)
			ret = wk[i].err;
	}
	if (ret < 0)
		goto out_unmap;
	s->ns = t2 - t0;
	s->map_ns = a->kind == K_PREAD ? 0 : t1 - t0;
	s->units = n;
	if (a->expect && !a->write && sum != a->expect)
		warn_variant(v, "data mismatch: read checksum %" PRIx64 ", file has %" PRIx64
			     " (rep %d)", sum, a->expect, B.cur_rep + 1);

	if (a->clean_after) {
		if (a->kind == K_UPC)
			ret = upc_msync(cache, base, a->size, UPC_MS_SYNC);
		else if (a->kind == K_FILE && msync(base, a->size, MS_SYNC) < 0)
			ret = -errno;
	}
out_unmap:
	if (base && base != MAP_FAILED) {
		if (a->kind == K_UPC)
			upc_unmap(cache, base, a->size);
		else
			munmap(base, a->size);
	}
	if (uffd >= 0)
		close(uffd);
out_threads:
	if (nt > 1) {
		/* Only on the early error path: release and join the waiting workers. */
		for (int i = 0; i < nt; i++)
			wk[i].from = wk[i].to = 0;
		pthread_barrier_wait(&bar);
		for (int i = 0; i < nt; i++)
			pthread_join(wk[i].th, NULL);
	}
	for (int i = 0; i < (a->threads > 1 ? 2 : 1); i++)
		free(wk[i].buf);
	pthread_barrier_destroy(&bar);
	if (fd >= 0)
		close(fd);
out_cache:
	if (a->kind == K_UPC && a->fresh_cache) {
		int r = upc_cache_destroy(cache);

		if (r < 0 && !ret)
			ret = r;
	}
out_pin:
	if (a->one_cpu)
		unpin_self(&oldmask);
	return ret;
}

int add_acc(struct workload *w, const char *name, bool info, const struct acc *tmpl,
	    const char *desc_fmt, ...)
{
	struct acc *a = malloc(sizeof(*a));
	char desc[160];
	va_list ap;

	if (!a) {
		fprintf(stderr, "upc-bench: out of memory\n");
		exit(1);
	}
	*a = *tmpl;
	if (!a->threads)
		a->threads = 1;
	va_start(ap, desc_fmt);
	vsnprintf(desc, sizeof(desc), desc_fmt, ap);
	va_end(ap);
	return add_variant(w, name, acc_pass, a, info, "%s", desc);
}

/* The bracketed choice of a sysfs setting ("always [never] ..." -> "never"), or "" */
static void sysfs_choice(const char *path, char *out, size_t len)
{
	char buf[160], *a, *b;

	out[0] = 0;
	if (read_small(path, buf, sizeof(buf)) < 0)
		return;
	a = strchr(buf, '[');
	b = a ? strchr(a, ']') : NULL;
	if (a && b)
		snprintf(out, len, "%.*s", (int)(b - a - 1), a + 1);
}

/*
 * Whether the kernel lets shmem (a memfd: upcache's cache, the floor of rows
 * A and B) have large folios, which ext4 has: transparent_hugepage/
 * shmem_enabled and every hugepages-<size>kB/shmem_enabled (mTHP), a size
 * allowed where its setting is not "never" or "deny" ("inherit" follows the
 * top one, which is 2 MiB's before mTHP).
 */
static void shmem_folios(char *out, size_t len)
{
	const char *dir = "/sys/kernel/mm/transparent_hugepage";
	char top[32], c[32], first[32] = "", path[200], nevers[300];
	unsigned long sizes[32];
	size_t n = 0, nn = 0;
	int nsizes = 0, inherits = 0;
	bool same = true;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/shmem_enabled", dir);
	sysfs_choice(path, top, sizeof(top));
	if (!top[0]) {
		snprintf(out, len, "shmem large folios: unknown (no %.200s)", path);
		return;
	}
	d = opendir(dir);
	while (d && (de = readdir(d)) && nsizes < 32) {
		unsigned long kb;
		char tail[8];

		if (sscanf(de->d_name, "hugepages-%lu%7s", &kb, tail) == 2 && !strcmp(tail, "kB"))
			sizes[nsizes++] = kb;
	}
	if (d)
		closedir(d);
	for (int i = 1; i < nsizes; i++)	/* ascending */
		for (int k = i; k > 0 && sizes[k] < sizes[k - 1]; k--) {
			unsigned long t = sizes[k];

			sizes[k] = sizes[k - 1];
			sizes[k - 1] = t;
		}
	nevers[0] = 0;
	for (int i = 0; i < nsizes; i++) {
		snprintf(path, sizeof(path), "%s/hugepages-%lukB/shmem_enabled", dir, sizes[i]);
		sysfs_choice(path, c, sizeof(c));
		if (!c[0])
			continue;
		if (strcmp(c, "never") && strcmp(c, "deny") && strcmp(c, "inherit") && n < len) {
			n += (size_t)snprintf(out + n, len - n, "%s%lu KiB (%s)", n ? ", " : "shmem large "
					      "folios allowed: ", sizes[i], c);
		} else if (!strcmp(c, "inherit") && strcmp(top, "never") && strcmp(top, "deny") && n < len) {
			n += (size_t)snprintf(out + n, len - n, "%s%lu KiB (inherit: %s)", n ? ", " :
					      "shmem large folios allowed: ", sizes[i], top);
		} else if (nn < sizeof(nevers)) {
			nn += (size_t)snprintf(nevers + nn, sizeof(nevers) - nn, "%s%lu %s", nn ? ", " : "",
					       sizes[i], c);
			/* "inherit" is the top setting's ("never" or "deny" here) */
			if (!strcmp(c, "inherit"))
				inherits++;
			if (!first[0])
				snprintf(first, sizeof(first), "%s", strcmp(c, "inherit") ? c : top);
			same = same && !strcmp(first, strcmp(c, "inherit") ? c : top);
		}
	}
	if (!nsizes && strcmp(top, "never") && strcmp(top, "deny"))
		n = (size_t)snprintf(out, len, "shmem large folios allowed: 2048 KiB (shmem_enabled %s, "
				     "no mTHP sizes)", top);
	if (!n && nsizes && same)
		snprintf(out, len, "shmem large folios: none allowed on this machine (transparent_hugepage/"
			 "shmem_enabled %s, and %s at every mTHP size, %lu to %lu KiB%s): a memfd maps and "
			 "dirties 4 KiB pages, one fault each, where ext4 maps large folios", top, first,
			 sizes[0], sizes[nsizes - 1], inherits ? ", where \"inherit\" is the top setting's" : "");
	else if (!n)
		snprintf(out, len, "shmem large folios: none allowed on this machine (transparent_hugepage/"
			 "shmem_enabled %s; mTHP shmem_enabled by size in KiB: %s): a memfd maps and "
			 "dirties 4 KiB pages, one fault each, where ext4 maps large folios", top,
			 nevers[0] ? nevers : "none");
}

/*
 * Issue 11's row A: upcache's fresh writable mapping of cached pages against
 * the kernel's own writable mapping of a memfd holding the same pages (the
 * shmem floor), the ratio to ext4's writable mapping in the note, with the
 * faults per page of all three.
 */
static void target_a(int wl, const char *what, struct workload *w, int vu, int vm, int ve, int vf,
		     int vc16, int vc64)
{
	char note[1200], thp[300];
	size_t n;

	shmem_folios(thp, sizeof(thp));
	snprintf(note, sizeof(note), "to kernel-ext4-rw: %.2f; to %s (the same MINOR faults without "
		 "the library): %.2f, and it to kernel-memfd-rw: %.2f; the pass's time per MINOR fault: "
		 "%.3g us; %s", ratio_med(w, vu, ve), w->var[vf].name, ratio_med(w, vu, vf),
		 ratio_med(w, vf, vm), med_us_per(&w->var[vu], CNT(faults_minor)), thp);
	/*
	 * What mapping the pages costs a user-space fault-around, before any
	 * round trip: the kernel's shmem fault-around maps 16 pages a fault.
	 */
	n = strlen(note);
	if (vc16 >= 0 && vc64 >= 0)
		snprintf(note + n, sizeof(note) - n, "; UFFDIO_CONTINUE alone, no fault (%s, %s): %.3g "
			 "and %.3g us a page, against %.3g us a page for all of kernel-memfd-rw (%.2f and "
			 "%.2f of it)", w->var[vc16].name, w->var[vc64].name, med_us(&w->var[vc16]),
			 med_us(&w->var[vc64]), med_us(&w->var[vm]), ratio_med(w, vc16, vm),
			 ratio_med(w, vc64, vm));
	bound_str(note, sizeof(note), w, vu);
	bound_str(note, sizeof(note), w, vm);
	bound_str(note, sizeof(note), w, ve);
	add_target_row("A", wl, what, vu, vm, 1.2, note);
}

/* ------------------------------------------------------------ 1. cached sequential scan */

static char seq_path[256];

static const char *seq_file(size_t size)
{
	static size_t made;

	if (made != size || access(seq_path, R_OK) < 0) {
		if (bench_file("seq", size, seq_path, sizeof(seq_path)) < 0)
			return NULL;
		made = size;
	}
	return seq_path;
}


void wl1_cached_seq(struct workload *w)
{
	const char *path;
	size_t size = sz(256 * MiB, 16 * MiB), np = size / PG;
	struct upc_cache *cs, *ca;
	struct acc t;
	int memfd, vk, ve, vs, va, vp, vr, vfw, vfm, vkw, vew, vsw, vaw, vfc;
	struct rw_rows rw;
	char nm[NAME_LEN];

	snprintf(w->title, sizeof(w->title), "cached sequential scan");
	snprintf(w->unit, sizeof(w->unit), "page");
	path = seq_file(size);
	if (!path) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "%zu MiB file in %s, already cached; timed: fresh open, "
		 "map, read one word of every page in order; %d reps", size / MiB, B.dir, B.reps);
	warm_file_cache(path);
	memfd = memfd_copy_of(path, size);
	cs = cache_or_die(false, UPC_CACHE_NO_BGWB, 0);
	ca = cache_or_die(true, UPC_CACHE_NO_BGWB, 0);
	upc_warm(cs, path, size);
	upc_warm(ca, path, size);

	t = (struct acc){ .path = path, .size = size, .npages = np, .expect = expect_sum(NULL, np) };
	t.kind = K_MEMFD;
	t.memfd = memfd;
	vk = add_acc(w, "kernel-memfd", false, &t, "kernel mmap of a memfd (shmem) holding the same data");
	t.kind = K_FILE;
	ve = add_acc(w, "kernel-ext4", false, &t, "kernel mmap of the file (page cache)");
	t.kind = K_UPC;
	t.cache = cs;
	vs = add_acc(w, "upc-sync", false, &t, "upc_map of the file, cache already filled");
	t.cache = ca;
	va = add_acc(w, upc_name(true, "", nm, sizeof(nm)), false, &t,
		     "as upc-sync, the cache asked for async tracking");
	/* Issue 11: the same scan through fresh PROT_READ|PROT_WRITE mappings, as databases map. */
	add_rw_rows(w, &t, cs, ca, "as upc-sync through a read-write mapping: registered MISSING|WP|MINOR, "
		    "cached pages mapped by MINOR faults with map-ahead (up to 512 a fault)", &rw);
	vkw = rw.kernel_memfd, vew = rw.kernel_ext4, vsw = rw.upc_sync, vaw = rw.upc_async;
	vfc = floor_minor_variant(w, "floor-minor-rw-512", true, memfd, np, NULL, np, 512);
	t.cache = cs;
	t.map_rw = false;
	t.mflags = UPC_MAP_POPULATE;
	vp = add_acc(w, "upc-sync+populate", true, &t,
		     "upc_map(UPC_MAP_POPULATE) then the scan: map-ahead, as a lever");
	t.mflags = 0;
	t.kind = K_PREAD;
	t.pread_pages = 32;
	vr = add_acc(w, "pread-128k", true, &t, "pread 128 KiB at a time into a private buffer");
	t.pread_pages = 0;
	t.kind = K_MEMFD;
	t.uffd_mode = UREG_WP;
	vfw = add_acc(w, "floor-memfd-uffd-wp", true, &t, "the kernel's mmap of the memfd registered "
		      "MISSING|WP and write-protected (markers), as upcache registered every mapping "
		      "before read-only mappings became MISSING-only: one kernel fault per page");
	t.uffd_mode = UREG_MISSING;
	vfm = add_acc(w, "floor-memfd-uffd-missing", true, &t, "the same registered MISSING only, as "
		      "upcache registers a read-only mapping: fault-around stays on (the floor of upc-sync)");
	if (memfd < 0) {
		skip_variant(w, vk, "memfd: %s", strerror(-memfd));
		skip_variant(w, vkw, "memfd: %s", strerror(-memfd));
		skip_variant(w, vfw, "memfd: %s", strerror(-memfd));
		skip_variant(w, vfm, "memfd: %s", strerror(-memfd));
	}

	run_variants(w);
	add_ratio(w, vsw, vkw);
	add_ratio(w, vaw, vkw);
	add_ratio(w, vsw, vew);
	add_ratio(w, vaw, vew);
	add_ratio(w, vkw, vew);
	add_ratio(w, vs, vk);
	add_ratio(w, va, vk);
	add_ratio(w, vs, vfw);
	add_ratio(w, vfw, vk);
	add_ratio(w, vfm, vk);
	add_ratio(w, vs, ve);
	add_ratio(w, va, ve);
	add_ratio(w, vp, vk);
	add_ratio(w, ve, vk);
	add_ratio(w, vr, vk);
	{
		struct ratio *r = find_ratio(w, vs, ve), *ra = find_ratio(w, va, ve);
		char note[200];

		snprintf(note, sizeof(note), "ratio to ext4 mmap: %.2f [%.2f, %.2f]", r ? r->med : -1,
			 r ? r->min : -1, r ? r->max : -1);
		add_target(1, "cached sequential scan (sync) vs memfd mmap", vs, vk, 1.0, note);
		snprintf(note, sizeof(note), "ratio to ext4 mmap: %.2f [%.2f, %.2f]", ra ? ra->med : -1,
			 ra ? ra->min : -1, ra ? ra->max : -1);
		add_target(1, "cached sequential scan (async) vs memfd mmap", va, vk, 1.0, note);
	}
	target_a(1, "cached sequential read, writable mapping (sync)", w, vsw, vkw, vew, vfc, -1, -1);
	target_a(1, "cached sequential read, writable mapping (async)", w, vaw, vkw, vew, vfc, -1, -1);
	snprintf(w->note, sizeof(w->note), "the kernel turns fault-around off in ranges registered for "
		 "write-protection (or MINOR faults): in sync mode every cached page of an upcache mapping "
		 "is one kernel-served fault (minflt), as floor-memfd-uffd-wp shows without the library; "
		 "registered MISSING only, the kernel keeps fault-around (floor-memfd-uffd-missing); ext4 "
		 "maps a whole large folio per fault; async mode maps a window per MINOR fault");
	upc_cache_destroy(cs);
	upc_cache_destroy(ca);
	if (memfd >= 0)
		close(memfd);
	/* The file is kept for workloads 2 and 3. */
}

/* ------------------------------------------------------------ 2. cold sequential scan */

void wl2_cold_seq(struct workload *w)
{
	size_t size = sz(256 * MiB, 16 * MiB), np = size / PG;
	const char *path;
	struct acc t;
	int vk, vs, va, vq, vds, vda, vr, vkw, vsw[2], vaw[2], vf[2][3];
	char nm[NAME_LEN];

	snprintf(w->title, sizeof(w->title), "cold sequential scan");
	snprintf(w->unit, sizeof(w->unit), "page");
	/* Workload 1 made the file already when it ran: the same name, so reuse it. */
	path = seq_file(size);
	if (!path) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "%zu MiB file in %s; before every pass "
		 "posix_fadvise(DONTNEED) and, for upcache, a new cache; timed: fresh open, map, read one "
		 "word of every page in order; %d reps", size / MiB, B.dir, B.reps);

	t = (struct acc){ .path = path, .size = size, .npages = np, .cold = true,
			  .expect = expect_sum(NULL, np) };
	t.kind = K_FILE;
	vk = add_acc(w, "kernel-ext4", false, &t, "kernel mmap of the file, page cache dropped");
	t.kind = K_UPC;
	t.fresh_cache = true;
	t.cflags = UPC_CACHE_NO_BGWB;
	vs = add_acc(w, "upc-sync", false, &t, "new cache, buffered io_uring file store");
	t.async = true;
	va = add_acc(w, upc_name(true, "", nm, sizeof(nm)), false, &t, "as upc-sync, async tracking asked");
	t.async = false;
	t.uadv = UPC_ADV_SEQUENTIAL;
	vq = add_acc(w, "upc-sync+advseq", true, &t, "upc-sync with upc_advise(UPC_ADV_SEQUENTIAL)");
	t.uadv = 0;
	t.cflags = UPC_CACHE_NO_BGWB | UPC_CACHE_DIRECT_IO;
	vds = add_acc(w, "upc-sync-direct", false, &t, "new cache, O_DIRECT file store");
	t.async = true;
	vda = add_acc(w, upc_name(true, "-direct", nm, sizeof(nm)), false, &t,
		      "as upc-sync-direct, async tracking asked");
	t = (struct acc){ .path = path, .size = size, .npages = np, .cold = true, .kind = K_PREAD,
			  .pread_pages = 32, .expect = expect_sum(NULL, np) };
	vr = add_acc(w, "pread-128k", true, &t, "pread 128 KiB at a time, page cache dropped");
	/* Issue 11's row C: fresh PROT_READ|PROT_WRITE mappings, as databases map. */
	t = (struct acc){ .path = path, .size = size, .npages = np, .cold = true, .map_rw = true,
			  .expect = expect_sum(NULL, np) };
	t.kind = K_FILE;
	vkw = add_acc(w, "kernel-ext4-rw", false, &t, "kernel read-write mmap of the file, page cache "
		      "dropped");
	t.kind = K_UPC;
	t.fresh_cache = true;
	for (int d = 0; d < 2; d++) {
		t.cflags = UPC_CACHE_NO_BGWB | (d ? UPC_CACHE_DIRECT_IO : 0);
		t.async = false;
		vsw[d] = add_acc(w, d ? "upc-sync-direct-rw" : "upc-sync-rw", false, &t, "as upc-sync%s "
				 "through a read-write mapping", d ? "-direct" : "");
		t.async = true;
		vaw[d] = add_acc(w, upc_name(true, d ? "-direct-rw" : "-rw", nm, sizeof(nm)), false, &t,
				 "as upc-sync%s-rw, async tracking asked", d ? "-direct" : "");
	}
	/* Row C's floors: the copy into cache memory a user-space cache on each store makes. */
	for (int cp = 0; cp < 2; cp++) {
		static const char *const nms[2][3] = {
			{ "floor-read2m-memfd", "floor-direct2m-memfd", "floor-direct2m-qd2-memfd" },
			{ "floor-read2m-copy", "floor-direct2m-copy", "floor-direct2m-qd2-copy" },
		};

		vf[cp][0] = floor_seqread_variant(w, nms[cp][0], path, size, SEQ_BUFFERED, cp, false);
		vf[cp][1] = floor_seqread_variant(w, nms[cp][1], path, size, SEQ_DIRECT, cp, false);
		vf[cp][2] = floor_seqread_variant(w, nms[cp][2], path, size, SEQ_DIRECT_QD2, cp, false);
	}

	run_variants(w);
	for (int d = 0; d < 2; d++) {
		static const char *const what[2][2] = {
			{ "cold sequential read, buffered store (sync)",
			  "cold sequential read, buffered store (async)" },
			{ "cold sequential read, O_DIRECT store (sync)",
			  "cold sequential read, O_DIRECT store (async)" },
		};

		for (int k = 0; k < 2; k++) {
			int vu = k ? vaw[d] : vsw[d], fl[2];
			char note[2000];
			size_t n;

			add_ratio(w, vu, vkw);
			snprintf(note, sizeof(note), "writable mappings; read-only: %.2f; synchronous 128 KiB "
				 "pread of the same file: %.2f of the kernel",
				 ratio_med(w, d ? (k ? vda : vds) : (k ? va : vs), vk), ratio_med(w, vr, vkw));
			/*
			 * The floors of this run: the cold file read in order,
			 * 2 MiB a read, into a fresh memfd mapping, as a cache
			 * on the store must copy it into its memory, straight
			 * (a shmem fault a page) or through a bounce buffer and
			 * UFFDIO_COPY; the row is set against the cheaper way,
			 * one read in flight and (O_DIRECT) two.
			 */
			n = strlen(note);
			snprintf(note + n, sizeof(note) - n, "; FLOORS (the cold file read in order into a "
				 "fresh memfd map, 2 MiB a read; us/page and the ratio to kernel-ext4-rw):");
			for (int cp = 0; cp < 2; cp++)
				for (int j = 0; j < 3; j++) {
					n = strlen(note);
					snprintf(note + n, sizeof(note) - n, " %s %.3g (%.2f)%s",
						 w->var[vf[cp][j]].name, med_us(&w->var[vf[cp][j]]),
						 ratio_med(w, vf[cp][j], vkw), cp && j == 2 ? "" : ",");
				}
			for (int q = 0; q < 1 + d; q++) {
				int j = d ? 1 + q : 0;

				fl[q] = med_us(&w->var[vf[1][j]]) < med_us(&w->var[vf[0][j]]) ? vf[1][j]
												 : vf[0][j];
				n = strlen(note);
				snprintf(note + n, sizeof(note) - n, "%s %s / %s (the cheaper, %s): %.2f",
					 q ? "," : ";", w->var[vu].name, w->var[fl[q]].name,
					 q ? "two reads in flight" : "one read at a time", ratio_med(w, vu, fl[q]));
			}
			bound_str(note, sizeof(note), w, vu);
			bound_str(note, sizeof(note), w, vkw);
			bound_str(note, sizeof(note), w, fl[0]);
			add_target_row("C", 2, what[d][k], vu, vkw, 1.0, note);
		}
	}
	add_ratio(w, vs, vk);
	add_ratio(w, va, vk);
	add_ratio(w, vds, vk);
	add_ratio(w, vda, vk);
	add_ratio(w, vr, vk);
	add_ratio(w, vq, vk);
	add_target(2, "cold sequential scan, buffered store (sync)", vs, vk, 1.0, NULL);
	add_target(2, "cold sequential scan, buffered store (async)", va, vk, 1.0, NULL);
	add_target(2, "cold sequential scan, O_DIRECT store (sync)", vds, vk, 1.0, NULL);
	add_target(2, "cold sequential scan, O_DIRECT store (async)", vda, vk, 1.0, NULL);
	{
		char b[64];
		int fd = open("/sys/block/vda/queue/read_ahead_kb", O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, b, sizeof(b) - 1) : -1;

		if (n > 0) {
			b[n] = 0;
			b[strcspn(b, "\n")] = 0;
		} else {
			snprintf(b, sizeof(b), "?");
		}
		if (fd >= 0)
			close(fd);
		snprintf(w->note, sizeof(w->note), "upcache's readahead window grows to ra_max_pages "
			 "(2 MiB) per fault (pages/missing); the kernel's mmap readahead uses the device's "
			 "read_ahead_kb (vda: %s KiB) and runs asynchronously ahead of the scan", b);
	}
}

/* ------------------------------------------------------------ 3. cached random touch */

void wl3_cached_rand(struct workload *w)
{
	size_t size = sz(256 * MiB, 16 * MiB), np = size / PG, n;
	struct upc_cache *cs, *ca;
	const char *path;
	uint32_t *order;
	struct acc t;
	int memfd, vk, vm, vs, va, vp, vr, vfw, vkw, vew, vsw, vaw, vfc, vc16, vc64;
	struct rw_rows rw;
	char nm[NAME_LEN];

	snprintf(w->title, sizeof(w->title), "cached random touch");
	snprintf(w->unit, sizeof(w->unit), "page");
	path = seq_file(size);
	if (!path) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "%zu MiB file in %s, already cached; timed: fresh open, "
		 "map, read one word of every page once, in a random order; %d reps", size / MiB, B.dir,
		 B.reps);
	warm_file_cache(path);
	memfd = memfd_copy_of(path, size);
	order = random_order(np, 1, 3, &n);
	cs = cache_or_die(false, UPC_CACHE_NO_BGWB, 0);
	ca = cache_or_die(true, UPC_CACHE_NO_BGWB, 0);
	upc_warm(cs, path, size);
	upc_warm(ca, path, size);

	t = (struct acc){ .path = path, .size = size, .npages = np, .order = order, .n = n,
			  .expect = expect_sum(order, n) };
	t.kind = K_FILE;
	vk = add_acc(w, "kernel-ext4", false, &t, "kernel mmap of the file (page cache)");
	t.kind = K_MEMFD;
	t.memfd = memfd;
	vm = add_acc(w, "kernel-memfd", true, &t, "kernel mmap of a memfd holding the same data");
	t.kind = K_UPC;
	t.cache = cs;
	vs = add_acc(w, "upc-sync", false, &t, "upc_map of the file, cache already filled");
	t.cache = ca;
	va = add_acc(w, upc_name(true, "", nm, sizeof(nm)), false, &t, "as upc-sync, async tracking asked");
	/* Issue 11: fresh PROT_READ|PROT_WRITE mappings. */
	add_rw_rows(w, &t, cs, ca, "as upc-sync through a read-write mapping: MINOR faults with fault-around "
		    "(64 pages a fault on random access)", &rw);
	vkw = rw.kernel_memfd, vew = rw.kernel_ext4, vsw = rw.upc_sync, vaw = rw.upc_async;
	vfc = floor_minor_variant(w, "floor-minor-rw-64", true, memfd, np, order, n, 64);
	vc16 = floor_continue_variant(w, "floor-continue-wp-16", true, memfd, np, 16);
	vc64 = floor_continue_variant(w, "floor-continue-wp-64", true, memfd, np, 64);
	t.cache = cs;
	t.map_rw = false;
	t.mflags = UPC_MAP_POPULATE;
	vp = add_acc(w, "upc-sync+populate", true, &t, "upc_map(UPC_MAP_POPULATE) then the touches");
	t.mflags = 0;
	t.kind = K_PREAD;
	vr = add_acc(w, "pread-4k", true, &t, "pread 4 KiB of each page into a private buffer");
	t.kind = K_MEMFD;
	t.uffd_mode = UREG_WP;
	vfw = add_acc(w, "floor-memfd-uffd-wp", true, &t, "the memfd registered MISSING|WP and "
		      "write-protected (no fault-around), as upcache registers a writable mapping");
	if (memfd < 0) {
		skip_variant(w, vm, "memfd: %s", strerror(-memfd));
		skip_variant(w, vkw, "memfd: %s", strerror(-memfd));
		skip_variant(w, vfw, "memfd: %s", strerror(-memfd));
	}

	run_variants(w);
	add_ratio(w, vsw, vkw);
	add_ratio(w, vaw, vkw);
	add_ratio(w, vsw, vew);
	add_ratio(w, vaw, vew);
	add_ratio(w, vkw, vew);
	add_ratio(w, vc16, vkw);
	add_ratio(w, vc64, vkw);
	add_ratio(w, vs, vk);
	add_ratio(w, va, vk);
	add_ratio(w, vs, vm);
	add_ratio(w, vs, vfw);
	add_ratio(w, vfw, vk);
	add_ratio(w, vp, vk);
	add_ratio(w, vr, vk);
	add_target(3, "cached random touch (sync)", vs, vk, 3.0, NULL);
	add_target(3, "cached random touch (async)", va, vk, 3.0, NULL);
	target_a(3, "cached random read, writable mapping (sync)", w, vsw, vkw, vew, vfc, vc16, vc64);
	target_a(3, "cached random read, writable mapping (async)", w, vaw, vkw, vew, vfc, vc16, vc64);
	snprintf(w->note, sizeof(w->note), "the kernel's mmap maps neighbours per fault (fault-around "
		 "for shmem, the whole large folio for ext4), so a random touch often finds its page "
		 "mapped already; in a sync-mode upcache mapping every page is a separate kernel-served "
		 "fault (see workload 1)");
	upc_cache_destroy(cs);
	upc_cache_destroy(ca);
	if (memfd >= 0)
		close(memfd);
	free(order);
	forget_file(path);
}

/* ------------------------------------------------------------ 4. cold random 4 KiB reads */

/*
 * Which CPUs take the completion interrupts of the virtio disk holding
 * B.dir (its "virtioN-req" lines of /proc/interrupts, counts since boot),
 * as "; the disk's (virtioN) completion interrupts: CPU0 n%, ...", or ""
 * for another kind of disk.  A cold read's wake-up crosses CPUs when the
 * faulting thread or the handler is not where the interrupt lands.
 */
static void disk_irq_cpus(char *out, size_t len)
{
	char link[64], dev[PATH_MAX], *v, name[32], line[1024];
	unsigned long long sum[64] = { 0 }, total = 0;
	size_t n = 0;
	struct stat st;
	int ncol = 0;
	FILE *f;

	out[0] = 0;
	if (stat(B.dir, &st) < 0)
		return;
	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	if (!realpath(link, dev) || !(v = strstr(dev, "/virtio")))
		return;
	snprintf(name, sizeof(name), "%.*s-req", (int)strcspn(v + 1, "/"), v + 1);
	f = fopen("/proc/interrupts", "r");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f))
		for (char *p = strtok(line, " \t\n"); p && ncol < 64; p = strtok(NULL, " \t\n"))
			ncol++;	/* "CPU0 CPU1 ...": one column a CPU */
	while (fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':');

		if (!p || !strstr(line, name))
			continue;
		for (int c = 0; c < ncol; c++) {
			char *end;
			unsigned long long x = strtoull(p + 1, &end, 10);

			if (end == p + 1)
				break;
			sum[c] += x;
			total += x;
			p = end - 1;
		}
	}
	fclose(f);
	if (!total)
		return;
	n = (size_t)snprintf(out, len, "; the disk's (%.*s) completion interrupts since boot:",
			     (int)(strlen(name) - 4), name);
	for (int c = 0; c < ncol && n < len; c++)
		n += (size_t)snprintf(out + n, len - n, "%s CPU%d %.0f%%", c ? "," : "", c,
				      100.0 * (double)sum[c] / (double)total);
}

void wl4_cold_rand(struct workload *w)
{
	static char path[256];
	size_t size = sz(1024 * MiB, 64 * MiB), np = size / PG, n, nreads = sz(2048, 512);
	uint32_t *order;
	struct acc t;
	int vk[3], vr[3], vp[3], vs[3], va[3], vu[3], vkw, vrw, vsw, vaw, vfc;
	char nm[NAME_LEN], sfx[16];

	snprintf(w->title, sizeof(w->title), "cold random 4 KiB reads");
	snprintf(w->unit, sizeof(w->unit), "read");
	if (bench_file("rand", size, path, sizeof(path)) < 0) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	order = random_order(np, 1, 4, &n);
	if (nreads > n)
		nreads = n;
	snprintf(w->setup, sizeof(w->setup), "%zu MiB file in %s; %zu distinct random pages per pass, "
		 "split over the threads; page cache dropped (and a new upcache cache) before every pass; "
		 "timed: fresh open, map, copy each page out; us/read = wall time / reads; %d reps",
		 size / MiB, B.dir, nreads, B.reps);
	for (int th = 1; th <= 2; th++) {
		snprintf(sfx, sizeof(sfx), "-%dt", th);
		t = (struct acc){ .path = path, .size = size, .npages = np, .order = order, .n = nreads,
				  .cold = true, .threads = th, .copy = true,
				  .expect = expect_sum(order, nreads) };
		t.kind = K_FILE;
		snprintf(nm, sizeof(nm), "kernel-ext4%s", sfx);
		vk[th] = add_acc(w, nm, false, &t, "kernel mmap, %d thread(s)", th);
		t.madv = MADV_RANDOM;
		snprintf(nm, sizeof(nm), "kernel-ext4-madvrand%s", sfx);
		vr[th] = add_acc(w, nm, true, &t, "kernel mmap + MADV_RANDOM (no read-around)");
		t.madv = 0;
		t.kind = K_PREAD;
		snprintf(nm, sizeof(nm), "pread-4k%s", sfx);
		vp[th] = th == 2 ? add_acc(w, nm, true, &t, "pread 4 KiB into a private buffer") : -1;
		t.kind = K_UPC;
		t.fresh_cache = true;
		t.cflags = UPC_CACHE_NO_BGWB;
		snprintf(nm, sizeof(nm), "upc-sync%s", sfx);
		vs[th] = add_acc(w, nm, false, &t, "new cache, buffered store, %d thread(s)", th);
		t.async = true;
		va[th] = add_acc(w, upc_name(true, sfx, nm, sizeof(nm)), false, &t, "as upc-sync, async asked");
		t.async = false;
		t.uadv = UPC_ADV_RANDOM;
		snprintf(nm, sizeof(nm), "upc-sync-advrand%s", sfx);
		vu[th] = th == 2 ? add_acc(w, nm, true, &t, "upc-sync with upc_advise(UPC_ADV_RANDOM)") : -1;
	}
	/* Issue 11's row D: one thread through fresh PROT_READ|PROT_WRITE mappings. */
	t = (struct acc){ .path = path, .size = size, .npages = np, .order = order, .n = nreads,
			  .cold = true, .threads = 1, .copy = true, .map_rw = true,
			  .expect = expect_sum(order, nreads) };
	t.kind = K_FILE;
	vkw = add_acc(w, "kernel-ext4-rw-1t", false, &t, "kernel read-write mmap, 1 thread");
	t.madv = MADV_RANDOM;
	vrw = add_acc(w, "kernel-ext4-madvrand-rw-1t", false, &t, "kernel read-write mmap + MADV_RANDOM");
	t.madv = 0;
	t.kind = K_UPC;
	t.fresh_cache = true;
	t.cflags = UPC_CACHE_NO_BGWB;
	vsw = add_acc(w, "upc-sync-rw-1t", false, &t, "new cache, buffered store, read-write mapping");
	t.async = true;
	vaw = add_acc(w, upc_name(true, "-rw-1t", nm, sizeof(nm)), false, &t, "as upc-sync-rw-1t, "
		      "async asked");
	/* Row D's floor: the same reads served by bare per-CPU handlers that pread the cold file. */
	vfc = floor_coldread_variant(w, "floor-coldread-percpu-rw-1t", path, np, order, nreads, false);
	run_variants(w);
	for (int k = 0; k < 2; k++) {
		int v = k ? vaw : vsw;
		char note[1600], what[80];
		size_t nn;

		snprintf(note, sizeof(note), "read-only mapping: %.2f", ratio_med(w, k ? va[1] : vs[1],
			 vr[1]));
		/*
		 * The least a user-space cache serving faults from handler
		 * threads pays on this machine: the same reads, each fault a
		 * buffered 4 KiB pread of the cold file and a UFFDIO_COPY by
		 * one of the per-CPU handlers, all woken by it.
		 */
		nn = strlen(note);
		snprintf(note + nn, sizeof(note) - nn, "; FLOOR floor-coldread-percpu-rw-1t (a handler "
			 "pinned to each of %d CPUs, all polling the uffd, the faulting thread unpinned; "
			 "each fault a buffered 4 KiB pread of the cold file + UFFDIO_COPY): %.3g us/read, "
			 "%.2f of kernel-ext4-madvrand-rw-1t; upc-sync-rw-1t / it: %.2f, %s / it: %.2f",
			 floor_percpu_handlers(), med_us(&w->var[vfc]), ratio_med(w, vfc, vrw),
			 ratio_med(w, vsw, vfc), w->var[vaw].name, ratio_med(w, vaw, vfc));
		bound_str(note, sizeof(note), w, v);
		bound_str(note, sizeof(note), w, vrw);
		bound_str(note, sizeof(note), w, vfc);
		floor_percpu_str(note, sizeof(note), w, vfc);
		nn = strlen(note);
		disk_irq_cpus(note + nn, sizeof(note) - nn);
		snprintf(what, sizeof(what), "cold random 4 KiB reads, 1 thread, vs MADV_RANDOM (%s)",
			 k ? "async" : "sync");
		add_target_row("D", 4, what, v, vrw, 1.0, note);
		snprintf(note, sizeof(note), "read-only mapping: %.2f; the kernel reads around every "
			 "fault until its miss counter gives up", ratio_med(w, k ? va[1] : vs[1], vk[1]));
		bound_str(note, sizeof(note), w, vkw);
		snprintf(what, sizeof(what), "cold random 4 KiB reads, 1 thread, vs default (%s)",
			 k ? "async" : "sync");
		add_target_row("D", 4, what, v, vkw, 1.5, note);
	}
	for (int th = 1; th <= 2; th++) {
		add_ratio(w, vs[th], vk[th]);
		add_ratio(w, va[th], vk[th]);
		add_ratio(w, vs[th], vr[th]);
		add_ratio(w, vs[th], vp[th]);
		add_ratio(w, vu[th], vr[th]);
	}
	for (int k = 0; k < 2; k++) {
		int v = k ? va[2] : vs[2];
		char note[240];
		struct ratio *r1 = find_ratio(w, k ? va[1] : vs[1], vk[1]), *r3 = find_ratio(w, v, vr[2]);
		struct ratio *r4 = r3 ? r3 : NULL;

		if (!r4)
			r4 = &w->ratio[add_ratio(w, v, vr[2])];
		snprintf(note, sizeof(note), "1 thread: %.2f; against the kernel's mmap with MADV_RANDOM "
			 "(no read-around): %.2f [%.2f, %.2f]", r1 ? r1->med : -1, r4->med, r4->min, r4->max);
		add_target(4, k ? "cold random 4 KiB reads, 2 threads (async)" :
			   "cold random 4 KiB reads, 2 threads (sync)", v, vk[2], 1.0, note);
	}
	snprintf(w->note, sizeof(w->note), "upcache has a fault-handler thread per CPU, but holds "
		 "the file's lock across a fault's fill I/O, so 2 threads faulting on one file are served one at a time; "
		 "the kernel's mmap reads around each fault (read_ahead_kb) until its miss counter "
		 "gives up, which caches much of the file for later reads");
	free(order);
	forget_file(path);
}

/* ------------------------------------------------------------ 5. first write to clean cached pages */

void wl5_first_write(struct workload *w)
{
	static char path[256];
	size_t size = sz(64 * MiB, 8 * MiB), np = size / PG;
	struct upc_cache *cs, *ca;
	struct acc t;
	int memfd, vk, ve, vf, vfs, vfo, vfp, vfa, vs, va, vsq;
	char nm[NAME_LEN], thp[300];

	w->reps = B.reps * 2 <= MAX_REPS ? B.reps * 2 : B.reps;	/* cheap passes */
	snprintf(w->title, sizeof(w->title), "first write to clean cached pages");
	snprintf(w->unit, sizeof(w->unit), "page");
	if (bench_file("write", size, path, sizeof(path)) < 0) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "%zu MiB file in %s, cached and clean; timed: fresh open, "
		 "map read-write, write one word into every page in order (the pages are written back "
		 "untimed after each pass, so every pass starts clean); %d reps", size / MiB, B.dir, w->reps);
	warm_file_cache(path);
	memfd = memfd_copy_of(path, size);
	cs = cache_or_die(false, UPC_CACHE_NO_BGWB, 0);
	ca = cache_or_die(true, UPC_CACHE_NO_BGWB, 0);
	upc_warm(cs, path, size);
	upc_warm(ca, path, size);

	t = (struct acc){ .path = path, .size = size, .npages = np, .write = true, .clean_after = true };
	t.kind = K_MEMFD;
	t.memfd = memfd;
	vk = add_acc(w, "kernel-shmem-write", false, &t, "kernel shmem write fault (mmap of a memfd)");
	t.kind = K_FILE;
	ve = add_acc(w, "kernel-ext4-write", true, &t, "kernel ext4 write fault (page_mkwrite)");
	vf = floor_wp_variant(w, "floor-wp", PIN_NONE, false, np);
	/* Row F's placements: 2048 traps are enough for a time per trap (the other CPU's cost 100+ us). */
	vfs = floor_wp_variant(w, "floor-wp-same-cpu", PIN_SAME, true, np < 2048 ? np : 2048);
	vfo = floor_wp_variant(w, "floor-wp-other-cpu", PIN_OTHER, true, np < 2048 ? np : 2048);
	/* The library's placement: a handler a CPU, all woken by every trap, the writer unpinned. */
	vfp = floor_wp_variant(w, "floor-wp-percpu", PIN_PERCPU, true, np < 2048 ? np : 2048);
	/* Row B's floor under async tracking: the kernel's write fault on a write-protected PTE. */
	vfa = floor_wp_async_variant(w, "floor-wp-async-write", true, memfd, np);
	if (B.async_mode != UPC_TRACK_ASYNC)
		skip_variant(w, vfa, "the kernel has no asynchronous write-protect tracking");
	t.kind = K_UPC;
	t.cache = cs;
	vs = add_acc(w, "upc-sync", false, &t, "sync write-protect tracking: one trap per page");
	t.cache = ca;
	va = add_acc(w, upc_name(true, "", nm, sizeof(nm)), false, &t, "async tracking asked");
	t.cache = cs;
	t.uadv = UPC_ADV_SEQUENTIAL;
	vsq = add_acc(w, "upc-sync-seqadv", true, &t, "as upc-sync, the mapping advised "
		      "UPC_ADV_SEQUENTIAL: dirty-ahead, a trap a doubling window");
	t.uadv = 0;
	if (memfd < 0)
		skip_variant(w, vk, "memfd: %s", strerror(-memfd));

	run_variants(w);
	add_ratio(w, vs, vf);
	add_ratio(w, va, vf);
	add_ratio(w, va, vk);
	add_ratio(w, vs, vk);
	add_ratio(w, vs, ve);
	add_ratio(w, vf, vk);
	add_ratio(w, vs, vfs);
	add_ratio(w, vs, vfo);
	add_ratio(w, vsq, ve);
	add_ratio(w, vsq, vk);
	add_ratio(w, va, vfa);
	add_ratio(w, vfa, vk);
	shmem_folios(thp, sizeof(thp));
	{
		char note[2000];

		if (B.async_mode == UPC_TRACK_ASYNC)
			snprintf(note, sizeof(note), "async tracking in use");
		else
			snprintf(note, sizeof(note), "async tracking is not available: a cache asking for "
				 "it runs in sync mode (upc_stats().track_mode), so this row measures sync "
				 "tracking against the async target");
		add_target(5, "first write, async tracking, vs shmem write", va, vk, 2.0, note);
		add_target(5, "first write, sync tracking, vs bare WP trap", vs, vf, 1.3, NULL);

		/* Issue 11, row B: against ext4; the default mode (sync) is the target, async reported. */
		snprintf(note, sizeof(note), "the default mode; to the bare WP round trip: %.2f (handler "
			 "on the faulting CPU: %.2f), to the kernel's shmem write: %.2f; the bare WP round "
			 "trip alone is %.2f of kernel-ext4-write; the kernel's own shmem write fault: %.3g us "
			 "a page, %.2f of kernel-ext4-write; with UPC_ADV_SEQUENTIAL (upc-sync-seqadv, "
			 "dirty-ahead): %.2f of kernel-ext4-write, %.2f of the kernel's shmem write; %s",
			 ratio_med(w, vs, vf), ratio_med(w, vs, vfs),
			 ratio_med(w, vs, vk), ratio_med(w, vf, ve), med_us(&w->var[vk]),
			 ratio_med(w, vk, ve), ratio_med(w, vsq, ve), ratio_med(w, vsq, vk), thp);
		bound_str(note, sizeof(note), w, vs);
		bound_str(note, sizeof(note), w, vf);
		bound_str(note, sizeof(note), w, ve);
		add_target_row("B", 5, "first write to cached pages (sync, the default)", vs, ve, 1.2, note);
		/*
		 * Async tracking takes no trap: the kernel resolves the write as
		 * a shmem write fault, so that fault (one a 4 KiB page unless
		 * shmem may have large folios) is this row's floor.
		 */
		snprintf(note, sizeof(note), "%sthe kernel's own shmem write fault (kernel-shmem-write, "
			 "first write to cached pages of a memfd's writable mapping): %.3g us a page, %.3g "
			 "kernel faults a page, %.2f of kernel-ext4-write; this row to it: %.2f; FLOOR "
			 "floor-wp-async-write (the memfd mapped as upcache maps it under async tracking, "
			 "every page mapped write-protected by UFFDIO_CONTINUE, then written: a kernel write "
			 "fault on a write-protected PTE a page, no library): %.3g us a page, %.2f of "
			 "kernel-shmem-write; this row to it: %.2f; %s",
			 B.async_mode == UPC_TRACK_ASYNC ? "" : "ASYNC NOT AVAILABLE, ran sync; ",
			 med_us(&w->var[vk]), med_per_unit(&w->var[vk], CNT(minflt)), ratio_med(w, vk, ve),
			 ratio_med(w, va, vk), med_us(&w->var[vfa]), ratio_med(w, vfa, vk), ratio_med(w, va, vfa),
			 thp);
		bound_str(note, sizeof(note), w, va);
		bound_str(note, sizeof(note), w, vfa);
		bound_str(note, sizeof(note), w, vk);
		bound_str(note, sizeof(note), w, ve);
		add_target_row("B", 5, "first write to cached pages (async)", va, ve, 1.2, note);

		/*
		 * Row F, the write-protect fault: one WP trap per page against
		 * the bare round trip with the handler on the faulting CPU.
		 */
		note[0] = 0;
		f_note(note, sizeof(note), w, vs, vfs, vfo, vf);
		snprintf(note + strlen(note), sizeof(note) - strlen(note), "; PER-CPU FLOOR (upcache's "
			 "design: a handler pinned to each of %d CPUs, all polling the uffd, the writer "
			 "unpinned): floor-wp-percpu %.3g us (%.2f of floor-wp-same-cpu); upc-sync / "
			 "floor-wp-percpu: %.2f", floor_percpu_handlers(), med_us(&w->var[vfp]),
			 ratio_med(w, vfp, vfs), ratio_med(w, vs, vfp));
		floor_percpu_str(note, sizeof(note), w, vfp);
		bound_str(note, sizeof(note), w, vs);
		bound_str(note, sizeof(note), w, vfs);
		bound_str(note, sizeof(note), w, vfo);
		add_target_row("F", 5, "served WP fault (sync) vs bare WP round trip", vs, vfs, 1.1, note);
		add_target_na_row("F", 5, "served WP fault (async)", "-", 1.1, "async tracking takes no "
				  "write-protect trap: the kernel resolves the first write (row B)");
	}
	snprintf(w->note, sizeof(w->note), "floor-wp is a bare write-protect round trip in the same "
		 "situation: a fresh mapping of a populated memfd, write-protected with PTE markers "
		 "(WP_UNPOPULATED), a handler thread that only un-protects; floor-wp-same-cpu and "
		 "floor-wp-other-cpu pin the writer to one CPU and the handler to it or to the other, "
		 "floor-wp-percpu pins a handler to each CPU and leaves the writer unpinned, as the "
		 "library does (2048 traps a pass)");
	upc_cache_destroy(cs);
	upc_cache_destroy(ca);
	if (memfd >= 0)
		close(memfd);
	forget_file(path);
}

/* ------------------------------------------------------------ 6. msync of random dirty pages */

struct msync_ctx {
	enum acc_kind kind;	/* K_FILE, K_UPC or K_PREAD (pwrite + fdatasync) */
	const char *path;
	size_t size, npages;
	struct upc_cache *cache;
	double pct;
	bool timed_writes;	/* K_PREAD: the pwrites timed too (row E's floor) */
	bool wp;		/* and each dirty run write-protected first (synchronous tracking's) */
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Row E's floor: what any cache on a buffered file store must do to make
 * its dirty pages durable, and no more: one pwrite(2) of each dirty page,
 * in file order, from a shared memfd mapping where they were written (as
 * a cache's memory holds them), and one fdatasync(2); all of it timed.
 * With @m->wp, the mapping is registered for write protection and each run
 * of consecutive dirty pages is write-protected (UFFDIO_WRITEPROTECT) before
 * the writes, as synchronous tracking must before it cleans a page (I1):
 * the floor of the synchronous rows.
 */
static int pwrite_floor(int fd, const struct msync_ctx *m, uint32_t *order, size_t ndirty, uint64_t val,
			struct sample *s, double *t0, double *t1)
{
	int mfd = memfd_create("upc-bench-wb", MFD_CLOEXEC), uffd = -1, ret = 0;
	char *src = MAP_FAILED;

	if (mfd < 0 || ftruncate(mfd, (off_t)m->size) < 0) {
		ret = -errno;
		goto out;
	}
	src = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (src == MAP_FAILED) {
		ret = -errno;
		goto out;
	}
	if (m->wp) {
		uffd = uffd_open(0);
		ret = uffd < 0 ? uffd : uffd_register(uffd, src, m->size, UFFDIO_REGISTER_MODE_WP);
		if (ret < 0)
			goto out;
	}
	qsort(order, ndirty, sizeof(*order), cmp_u32);
	for (size_t i = 0; i < ndirty; i++) {
		char *pg = src + (size_t)order[i] * PG;

		memset(pg, 0x5a, PG);
		*(uint64_t *)pg = page_word(order[i]);
		*(uint64_t *)(pg + 8) = val;
	}
	snap_begin(&s->c, NULL);
	*t0 = now_ns();
	for (size_t i = 0, j; uffd >= 0 && i < ndirty && !ret; i = j) {
		for (j = i + 1; j < ndirty && order[j] == order[j - 1] + 1; j++)
			;
		ret = uffd_wp(uffd, src + (size_t)order[i] * PG, (size_t)(j - i) * PG, true);
	}
	for (size_t i = 0; i < ndirty && !ret; i++)
		if (pwrite(fd, src + (size_t)order[i] * PG, PG, (off_t)order[i] * PG) != (ssize_t)PG)
			ret = -EIO;
	if (!ret && fdatasync(fd) < 0)
		ret = -errno;
	*t1 = now_ns();
	snap_end(&s->c, NULL);
out:
	if (src != MAP_FAILED)
		munmap(src, m->size);
	if (uffd >= 0)
		close(uffd);
	if (mfd >= 0)
		close(mfd);
	return ret;
}

static int msync_pass(struct variant *v, struct sample *s)
{
	struct msync_ctx *m = v->ctx;
	size_t n, ndirty = (size_t)((double)m->npages * m->pct / 100.0);
	uint32_t *order = random_order(m->npages, 1, 1000 + (uint64_t)B.cur_rep, &n);
	uint64_t val = ((uint64_t)B.cur_rep << 32) | (uint64_t)m->kind;
	char *p = NULL, *buf = NULL;
	double t0 = 0, t1 = 0;
	int fd, ret = 0;

	fd = open(m->path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	switch (m->kind) {
	case K_FILE:
		p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			p = NULL;
			ret = -errno;
			break;
		}
		for (size_t i = 0; i < ndirty; i++)
			*(volatile uint64_t *)(p + order[i] * PG + 8) = val;
		snap_begin(&s->c, NULL);
		t0 = now_ns();
		if (msync(p, m->size, MS_SYNC) < 0)
			ret = -errno;
		t1 = now_ns();
		snap_end(&s->c, NULL);
		munmap(p, m->size);
		break;
	case K_UPC:
		ret = upc_map(m->cache, fd, 0, m->size, PROT_READ | PROT_WRITE, 0, (void **)&p);
		if (ret < 0)
			break;
		for (size_t i = 0; i < ndirty; i++)
			*(volatile uint64_t *)(p + order[i] * PG + 8) = val;
		snap_begin(&s->c, m->cache);
		t0 = now_ns();
		ret = upc_msync(m->cache, p, m->size, UPC_MS_SYNC);
		t1 = now_ns();
		snap_end(&s->c, m->cache);
		upc_unmap(m->cache, p, m->size);
		break;
	default:
		if (m->timed_writes) {
			ret = pwrite_floor(fd, m, order, ndirty, val, s, &t0, &t1);
			break;
		}
		buf = aligned_alloc(PG, PG);
		if (!buf) {
			ret = -ENOMEM;
			break;
		}
		memset(buf, 0x5a, PG);
		for (size_t i = 0; i < ndirty && !ret; i++) {
			*(uint64_t *)buf = page_word(order[i]);
			*(uint64_t *)(buf + 8) = val;
			if (pwrite(fd, buf, PG, (off_t)(order[i] * PG)) != (ssize_t)PG)
				ret = -EIO;
		}
		snap_begin(&s->c, NULL);
		t0 = now_ns();
		if (!ret && fdatasync(fd) < 0)
			ret = -errno;
		t1 = now_ns();
		snap_end(&s->c, NULL);
		break;
	}
	close(fd);
	if (ret == 0) {
		s->ns = t1 - t0;
		s->units = ndirty;
	}
out:
	free(buf);
	free(order);
	return ret;
}

void wl6_msync(struct workload *w)
{
	static char path[256], dpath[256];
	size_t size = sz(256 * MiB, 32 * MiB), np = size / PG;
	static const double pcts[2] = { 1, 10 };
	struct upc_cache *cs, *ca, *cd;
	int vk[2], vp[2], vf[2], vfw[2], vs[2], va[2], vd[2];
	char nm[NAME_LEN], sfx[16];

	snprintf(w->title, sizeof(w->title), "msync of random dirty pages");
	snprintf(w->unit, sizeof(w->unit), "dirty page");
	if (bench_file("msync", size, path, sizeof(path)) < 0) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "%zu MiB file in %s, cached; a fresh read-write mapping, "
		 "1 %% or 10 %% of its pages (random, the same set for every variant of a repetition) "
		 "written untimed; timed: msync(MS_SYNC) of the whole range; %d reps", size / MiB, B.dir,
		 B.reps);
	warm_file_cache(path);
	cs = cache_or_die(false, UPC_CACHE_NO_BGWB, 0);
	ca = cache_or_die(true, UPC_CACHE_NO_BGWB, 0);
	/*
	 * The O_DIRECT store's writes would invalidate the kernel's page cache
	 * of the file (and change its folios under the kernel's variant): it
	 * gets a copy of its own.
	 */
	if (bench_file("msync-direct", size, dpath, sizeof(dpath)) < 0)
		dpath[0] = 0;
	cd = cache_or_die(false, UPC_CACHE_NO_BGWB | UPC_CACHE_DIRECT_IO, 0);
	upc_warm(cs, path, size);
	upc_warm(ca, path, size);
	if (dpath[0])
		upc_warm(cd, dpath, size);
	for (int i = 0; i < 2; i++) {
		struct msync_ctx *m = calloc(7, sizeof(*m));

		if (!m)
			exit(1);
		snprintf(sfx, sizeof(sfx), "-%.0f%%", pcts[i]);
		for (int k = 0; k < 7; k++)
			m[k] = (struct msync_ctx){ .path = path, .size = size, .npages = np, .pct = pcts[i] };
		m[0].kind = K_FILE;
		snprintf(nm, sizeof(nm), "kernel-ext4%s", sfx);
		vk[i] = add_variant(w, nm, msync_pass, &m[0], false, "msync(MS_SYNC) of a kernel mmap");
		m[1].kind = K_PREAD;
		snprintf(nm, sizeof(nm), "pwrite%s", sfx);
		vp[i] = add_variant(w, nm, msync_pass, &m[1], true,
				    "pwrite of the same pages untimed, fdatasync timed");
		m[2].kind = K_UPC;
		m[2].cache = cs;
		snprintf(nm, sizeof(nm), "upc-sync%s", sfx);
		vs[i] = add_variant(w, nm, msync_pass, &m[2], false, "upc_msync(UPC_MS_SYNC)");
		m[3].kind = K_UPC;
		m[3].cache = ca;
		va[i] = add_variant(w, upc_name(true, sfx, nm, sizeof(nm)), msync_pass, &m[3], false,
				    "upc_msync(UPC_MS_SYNC), async tracking asked");
		m[4].kind = K_UPC;
		m[4].cache = cd;
		m[4].path = dpath;
		snprintf(nm, sizeof(nm), "upc-sync-direct%s", sfx);
		vd[i] = add_variant(w, nm, msync_pass, &m[4], true, "upc_msync(UPC_MS_SYNC), O_DIRECT "
				    "store (on a copy of the file)");
		if (!dpath[0])
			skip_variant(w, vd[i], "cannot create the copy");
		m[5].kind = K_PREAD;
		m[5].timed_writes = true;
		snprintf(nm, sizeof(nm), "floor-pwrite%s", sfx);
		vf[i] = add_variant(w, nm, msync_pass, &m[5], false, "row E's floor: pwrite of each dirty "
				    "page, in file order, from a memfd mapping, and fdatasync, all timed");
		m[6].kind = K_PREAD;
		m[6].timed_writes = true;
		m[6].wp = true;
		snprintf(nm, sizeof(nm), "floor-wp-pwrite%s", sfx);
		vfw[i] = add_variant(w, nm, msync_pass, &m[6], false, "row E's floor for synchronous "
				     "tracking: as floor-pwrite, each run of dirty pages write-protected "
				     "first (UFFDIO_WRITEPROTECT), all timed");
	}
	run_variants(w);
	for (int i = 0; i < 2; i++) {
		char what[80], note[300], bnote[1000];
		struct ratio *r;

		add_ratio(w, vs[i], vk[i]);
		add_ratio(w, va[i], vk[i]);
		add_ratio(w, vs[i], vp[i]);
		add_ratio(w, vd[i], vk[i]);
		add_ratio(w, vs[i], vfw[i]);
		add_ratio(w, va[i], vf[i]);
		add_ratio(w, vf[i], vk[i]);
		add_ratio(w, vfw[i], vk[i]);
		r = find_ratio(w, vs[i], vp[i]);
		snprintf(note, sizeof(note), "against the fdatasync alone of the same pages written by "
			 "pwrite untimed: %.2f; FLOOR %s (each run of dirty pages write-protected, then "
			 "pwrite of each dirty page and fdatasync, all timed: %.3g us a dirty page, %.2f "
			 "of the kernel; without the write protection %.3g): %.2f",
			 r ? r->med : -1, w->var[vfw[i]].name, med_us(&w->var[vfw[i]]),
			 ratio_med(w, vfw[i], vk[i]), med_us(&w->var[vf[i]]), ratio_med(w, vs[i], vfw[i]));
		/* Issue 4's targets and issue 11's row E are the same: one row, E. */
		snprintf(bnote, sizeof(bnote), "%s; O_DIRECT store: %.2f", note, ratio_med(w, vd[i], vk[i]));
		bound_str(bnote, sizeof(bnote), w, vs[i]);
		bound_str(bnote, sizeof(bnote), w, vk[i]);
		bound_str(bnote, sizeof(bnote), w, vp[i]);
		bound_str(bnote, sizeof(bnote), w, vfw[i]);
		snprintf(what, sizeof(what), "msync of %.0f %% random dirty pages (sync)", pcts[i]);
		add_target_row("E", 6, what, vs[i], vk[i], 1.0, bnote);
		snprintf(bnote, sizeof(bnote), "against the fdatasync alone: %.2f; FLOOR %s (pwrite of "
			 "each dirty page and fdatasync, all timed: %.3g us a dirty page, %.2f of the "
			 "kernel): %.2f", ratio_med(w, va[i], vp[i]), w->var[vf[i]].name,
			 med_us(&w->var[vf[i]]), ratio_med(w, vf[i], vk[i]), ratio_med(w, va[i], vf[i]));
		bound_str(bnote, sizeof(bnote), w, va[i]);
		bound_str(bnote, sizeof(bnote), w, vf[i]);
		snprintf(what, sizeof(what), "msync of %.0f %% random dirty pages (async)", pcts[i]);
		add_target_row("E", 6, what, va[i], vk[i], 1.0, bnote);
	}
	upc_cache_destroy(cs);
	upc_cache_destroy(ca);
	upc_cache_destroy(cd);
	forget_file(path);
	if (dpath[0])
		forget_file(dpath);
}

/* ------------------------------------------------------------ 7. eviction churn */

/*
 * Eviction is detected at run time: a cache whose mem_limit is a quarter of
 * a file that is read whole must have evicted something (pages_evicted).
 */
static int eviction_probe(const char *path, size_t size, char *why, size_t len)
{
	struct upc_stats st = { .sz = sizeof(st) };
	struct upc_cache *c;
	int ret = upc_new(false, UPC_CACHE_NO_BGWB, size / 4, &c);

	if (ret < 0) {
		snprintf(why, len, "upc_cache_create: %s", upc_strerror(ret));
		return 0;
	}
	ret = upc_warm(c, path, size);
	upc_stats(c, &st);
	upc_cache_destroy(c);
	if (ret < 0) {
		snprintf(why, len, "probe mapping failed: %s", upc_strerror(ret));
		return 0;
	}
	if (st.pages_evicted)
		return 1;
	snprintf(why, len, "eviction not implemented (issue 3): a cache with mem_limit %zu KiB "
		 "that read a %zu KiB file evicted 0 pages and holds %" PRIu64 " KiB "
		 "(upc_stats().pages_evicted, detected at run time)", size / 4 / 1024, size / 1024,
		 st.pages_cached * 4);
	return 0;
}

static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

static int write_small(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * A child cgroup v2 group with a memory controller, for the kernel side of
 * the churn.  Returns 0 with the group's path, or -1 with why not.
 */
static int cgroup_v2_group(char *grp, size_t glen, char *why, size_t wlen)
{
	char line[1024], mnt[512] = "", cg[512] = "", ctl[512], path[1100];
	FILE *f;
	int ret;

	f = fopen("/proc/self/mountinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - cgroup2 ");
		char m[512];

		if (sep && sscanf(line, "%*s %*s %*s %*s %511s", m) == 1) {
			snprintf(mnt, sizeof(mnt), "%s", m);
			break;
		}
	}
	if (f)
		fclose(f);
	if (!mnt[0]) {
		snprintf(why, wlen, "no cgroup v2 hierarchy is mounted");
		return -1;
	}
	f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(cg, sizeof(cg), "%.500s", line + 3);
		}
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s%s/cgroup.controllers", mnt, strcmp(cg, "/") ? cg : "");
	if (read_small(path, ctl, sizeof(ctl)) < 0) {
		snprintf(why, wlen, "cannot read %.200s", path);
		return -1;
	}
	if (!strstr(ctl, "memory")) {
		snprintf(why, wlen, "the cgroup v2 hierarchy at %.80s offers no memory controller "
			 "(cgroup.controllers: \"%.60s\"): on this machine memory is bound to a cgroup v1 "
			 "hierarchy, so there is no memory.max to limit the kernel's page cache", mnt, ctl);
		return -1;
	}
	snprintf(grp, glen, "%s%s/upc-bench.%d", mnt, strcmp(cg, "/") ? cg : "", (int)getpid());
	if (mkdir(grp, 0755) < 0) {
		snprintf(why, wlen, "cannot create the child group %.200s: %s", grp, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/memory.max", grp);
	if (access(path, W_OK) < 0) {
		snprintf(path, sizeof(path), "%s%s/cgroup.subtree_control", mnt, strcmp(cg, "/") ? cg : "");
		ret = write_small(path, "+memory");
		if (ret < 0) {
			snprintf(why, wlen, "cannot enable the memory controller for child groups "
				 "(%.120s: %s; a non-root group that holds processes cannot, the "
				 "no-internal-processes rule)", path, strerror(-ret));
			rmdir(grp);
			return -1;
		}
	}
	return 0;
}

enum churn_mode { CH_KERNEL, CH_UPC, CH_POOL };

struct churn_ctx {
	enum churn_mode mode;
	const char *path;
	size_t size, npages, warm, ops, limit;
	bool async;
	int uadv;			/* upc_advise() advice; 0: none */
	char grp[600];
};

/* One read-modify-write of one word in a random page per op. */
static void churn_ops(char *p, size_t npages, size_t ops, uint64_t *state)
{
	for (size_t i = 0; i < ops; i++) {
		volatile uint64_t *q = (volatile uint64_t *)(p + (rnd64(state) % npages) * PG + 8);

		*q = *q + 1;
	}
}

/*
 * What a database does without mmap: a buffer pool of mem_limit bytes over
 * O_DIRECT pread/pwrite, a dirty victim written back before its frame is
 * reused (FIFO: with uniform random access the policy hardly matters).
 */
struct pool {
	int fd;
	char *mem;
	int32_t *frame_of;
	uint32_t *page_of;
	uint8_t *dirty;
	size_t frames, used, hand;
	uint64_t reads, writes;
};

static int pool_ops(struct pool *pl, size_t npages, size_t ops, uint64_t *state)
{
	for (size_t i = 0; i < ops; i++) {
		size_t pg = rnd64(state) % npages;
		int32_t f = pl->frame_of[pg];

		if (f < 0) {
			if (pl->used < pl->frames) {
				f = (int32_t)pl->used++;
			} else {
				uint32_t victim;

				f = (int32_t)pl->hand;
				pl->hand = (pl->hand + 1) % pl->frames;
				victim = pl->page_of[f];
				if (pl->dirty[f]) {
					if (pwrite(pl->fd, pl->mem + (size_t)f * PG, PG, (off_t)victim * (off_t)PG) !=
					    (ssize_t)PG)
						return -EIO;
					pl->writes++;
				}
				pl->frame_of[victim] = -1;
			}
			if (pread(pl->fd, pl->mem + (size_t)f * PG, PG, (off_t)(pg * PG)) != (ssize_t)PG)
				return -EIO;
			pl->reads++;
			pl->frame_of[pg] = f;
			pl->page_of[f] = (uint32_t)pg;
			pl->dirty[f] = 0;
		}
		(*(volatile uint64_t *)(pl->mem + (size_t)f * PG + 8))++;
		pl->dirty[f] = 1;
	}
	return 0;
}

static int churn_pool(struct churn_ctx *c, struct sample *s)
{
	struct pool pl = { .frames = c->limit / PG };
	uint64_t state = 7 + (uint64_t)B.cur_rep;
	double t0, t1;
	int ret;

	drop_file_cache(c->path);
	pl.fd = open(c->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	pl.mem = aligned_alloc(PG, pl.frames * PG);
	pl.frame_of = malloc(c->npages * sizeof(*pl.frame_of));
	pl.page_of = calloc(pl.frames, sizeof(*pl.page_of));
	pl.dirty = calloc(pl.frames, 1);
	if (pl.fd < 0 || !pl.mem || !pl.frame_of || !pl.page_of || !pl.dirty) {
		ret = pl.fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	memset(pl.frame_of, 0xff, c->npages * sizeof(*pl.frame_of));
	ret = pool_ops(&pl, c->npages, c->warm, &state);
	if (ret < 0)
		goto out;
	snap_begin(&s->c, NULL);
	t0 = now_ns();
	ret = pool_ops(&pl, c->npages, c->ops, &state);
	t1 = now_ns();
	snap_end(&s->c, NULL);
	s->ns = t1 - t0;
	s->units = c->ops;
out:
	if (pl.fd >= 0)
		close(pl.fd);
	free(pl.mem);
	free(pl.frame_of);
	free(pl.page_of);
	free(pl.dirty);
	return ret;
}

static int churn_kernel(struct churn_ctx *c, struct sample *s)
{
	char lim[32], procs[700];
	struct rusage ru;
	int pfd[2], st, ret;
	pid_t pid;
	double ns = 0;

	snprintf(procs, sizeof(procs), "%s/memory.max", c->grp);
	snprintf(lim, sizeof(lim), "%zu", c->limit);
	ret = write_small(procs, lim);
	if (ret < 0)
		return ret;
	if (pipe(pfd) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		uint64_t state = 7 + (uint64_t)B.cur_rep;
		double t0;
		char *p;
		int fd;

		snprintf(procs, sizeof(procs), "%s/cgroup.procs", c->grp);
		if (write_small(procs, "0") < 0)
			_exit(1);
		drop_file_cache(c->path);	/* refaulted pages are charged to this group */
		fd = open(c->path, O_RDWR | O_CLOEXEC);
		p = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (fd < 0 || p == MAP_FAILED)
			_exit(1);
		churn_ops(p, c->npages, c->warm, &state);
		t0 = now_ns();
		churn_ops(p, c->npages, c->ops, &state);
		ns = now_ns() - t0;
		if (write(pfd[1], &ns, sizeof(ns)) != sizeof(ns))
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	if (pid < 0) {
		close(pfd[0]);
		return -errno;
	}
	ret = read(pfd[0], &ns, sizeof(ns)) == sizeof(ns) ? 0 : -EIO;
	close(pfd[0]);
	memset(&ru, 0, sizeof(ru));
	wait4(pid, &st, 0, &ru);
	if (ret < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
		return -EIO;
	s->ns = ns;
	s->units = c->ops;
	s->c.minflt = (uint64_t)ru.ru_minflt;	/* of the whole child, warm-up included */
	s->c.majflt = (uint64_t)ru.ru_majflt;
	return 0;
}

static int churn_upc(struct churn_ctx *c, struct sample *s)
{
	uint64_t state = 7 + (uint64_t)B.cur_rep;
	struct upc_cache *cache;
	double t0, t1;
	char *p;
	int fd, ret, r;

	drop_file_cache(c->path);
	ret = upc_new(c->async, UPC_CACHE_DIRECT_IO, c->limit, &cache);
	if (ret < 0)
		return ret;
	fd = open(c->path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = upc_map(cache, fd, 0, c->size, PROT_READ | PROT_WRITE, 0, (void **)&p);
	if (ret == 0 && c->uadv)
		ret = upc_advise(cache, p, c->size, c->uadv);
	if (ret == 0) {
		churn_ops(p, c->npages, c->warm, &state);
		snap_begin(&s->c, cache);
		t0 = now_ns();
		churn_ops(p, c->npages, c->ops, &state);
		t1 = now_ns();
		snap_end(&s->c, cache);
		s->ns = t1 - t0;
		s->units = c->ops;
		upc_unmap(cache, p, c->size);
	}
	close(fd);
out:
	r = upc_cache_destroy(cache);	/* writes the dirty pages back: not timed */
	return ret < 0 ? ret : r;
}

static int churn_pass(struct variant *v, struct sample *s)
{
	struct churn_ctx *c = v->ctx;

	switch (c->mode) {
	case CH_KERNEL:
		return churn_kernel(c, s);
	case CH_POOL:
		return churn_pool(c, s);
	default:
		return churn_upc(c, s);
	}
}

void wl7_evict(struct workload *w)
{
	static char path[256], probe[256];
	size_t ws = sz(16 * MiB, 8 * MiB), limit = ws / 4;
	char why[400], cgwhy[400] = "", grp[600];
	struct churn_ctx *c;
	int vk = -1, vp, vs, va, vr;
	bool have_cg;
	char nm[NAME_LEN];

	snprintf(w->title, sizeof(w->title), "eviction churn");
	snprintf(w->unit, sizeof(w->unit), "op");
	snprintf(w->setup, sizeof(w->setup), "random read-modify-write of one word per op over a %zu MiB "
		 "working set, 4x the memory limit (%zu MiB), cold start; %zu ops untimed (the cache fills "
		 "and starts evicting), then %zu ops timed; %d reps", ws / MiB, limit / MiB,
		 2 * (limit / PG), sz(2048, 512), B.reps);
	have_cg = cgroup_v2_group(grp, sizeof(grp), cgwhy, sizeof(cgwhy)) == 0;
	snprintf(w->note, sizeof(w->note), "kernel side: %s",
		 have_cg ? "a child cgroup v2 group with memory.max" : cgwhy);
	if (bench_file("evict-probe", 4 * MiB, probe, sizeof(probe)) < 0 ||
	    !eviction_probe(probe, 4 * MiB, why, sizeof(why))) {
		if (!why[0])
			snprintf(why, sizeof(why), "cannot create the probe file in %s", B.dir);
		snprintf(w->skip, sizeof(w->skip), "%.290s", why);
		forget_file(probe);
		if (have_cg)
			rmdir(grp);
		progress("workload 7 not available: %s", why);
		return;
	}
	forget_file(probe);
	if (bench_file("evict", ws, path, sizeof(path)) < 0) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	c = calloc(5, sizeof(*c));
	if (!c)
		exit(1);
	for (int i = 0; i < 5; i++)
		c[i] = (struct churn_ctx){ .path = path, .size = ws, .npages = ws / PG,
					   .warm = 2 * (limit / PG), .ops = sz(2048, 512), .limit = limit };
	if (have_cg) {
		c[0].mode = CH_KERNEL;
		snprintf(c[0].grp, sizeof(c[0].grp), "%s", grp);
		vk = add_variant(w, "kernel-ext4-cgroup", churn_pass, &c[0], false,
				 "kernel mmap in a cgroup with memory.max = %zu MiB", limit / MiB);
	}
	c[1].mode = CH_POOL;
	vp = add_variant(w, "pool-odirect", churn_pass, &c[1], false, "a %zu MiB buffer pool over "
			 "O_DIRECT pread/pwrite (FIFO, dirty victims written first)", limit / MiB);
	c[2].mode = CH_UPC;
	vs = add_variant(w, "upc-sync", churn_pass, &c[2], false, "mem_limit %zu MiB, O_DIRECT store",
			 limit / MiB);
	c[3].mode = CH_UPC;
	c[3].async = true;
	va = add_variant(w, upc_name(true, "", nm, sizeof(nm)), churn_pass, &c[3], false,
			 "mem_limit %zu MiB, O_DIRECT store, async asked", limit / MiB);
	c[4].mode = CH_UPC;
	c[4].uadv = UPC_ADV_RANDOM;
	vr = add_variant(w, "upc-sync-advrand", churn_pass, &c[4], true, "upc-sync with "
			 "upc_advise(UPC_ADV_RANDOM): no readahead");
	run_variants(w);
	add_ratio(w, vr, vp);
	if (vk >= 0) {
		add_ratio(w, vs, vk);
		add_ratio(w, va, vk);
	}
	add_ratio(w, vs, vp);
	add_ratio(w, va, vp);
	if (have_cg)
		rmdir(grp);
	forget_file(path);
}
