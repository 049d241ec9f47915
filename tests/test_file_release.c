/* SPDX-License-Identifier: MIT */
/*
 * File release (the kernel's inode cache): a file with no mapping, no dirty
 * page, no write-back and no pin is unused.  An unused file keeps its
 * cached pages, up to a bound on how many are kept, and a new upc_map()
 * finds them; one whose backing file is unlinked, whose pages are all
 * evicted, or that is the least recently used past the bound is released:
 * its store descriptor, memfd and staging mapping go, and with them the
 * unlinked file's disk space.  Dirty pages are written back first, never
 * lost.
 */
#include "helpers.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>

/* The documented bound on unused files kept: min(64, RLIMIT_NOFILE soft limit / 8). */
static unsigned int unused_bound(void)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur / 8 >= 64)
		return 64;
	return (unsigned int)(rl.rlim_cur / 8);
}

static void set_nofile(rlim_t n)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = n;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s", strerror(errno));
}

static unsigned int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	unsigned int n = 0;

	if (!d)
		return (unsigned int)-errno;	/* in a failure message: EMFILE */
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1;	/* the directory's own descriptor */
}

/*
 * This process's descriptors of the inode @dev:@ino other than @except, and
 * of the cache's memfd for it (named after @dev:@ino, see cache.c).
 */
static unsigned int fds_of(dev_t dev, ino_t ino, int except)
{
	char memfd[96], link[300], target[512];
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	unsigned int n = 0;

	cr_assert(d);
	snprintf(memfd, sizeof(memfd), "/memfd:upcache:%lx:%lu", (unsigned long)dev, (unsigned long)ino);
	while ((de = readdir(d))) {
		struct stat st;
		ssize_t len;

		if (de->d_name[0] == '.' || atoi(de->d_name) == except || atoi(de->d_name) == dirfd(d))
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		if (stat(link, &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
			n++;
			continue;
		}
		len = readlink(link, target, sizeof(target) - 1);
		target[len > 0 ? len : 0] = '\0';
		n += !strncmp(target, memfd, strlen(memfd)) && target[strlen(memfd)] == ' ';
	}
	closedir(d);
	return n;
}

/* Does this process still map the cache's memfd of @dev:@ino (the staging reservation)? */
static bool staging_mapped(dev_t dev, ino_t ino)
{
	char name[96], line[512];
	FILE *m = fopen("/proc/self/maps", "r");
	bool found = false;

	cr_assert(m);
	snprintf(name, sizeof(name), "upcache:%lx:%lu ", (unsigned long)dev, (unsigned long)ino);
	while (!found && fgets(line, sizeof(line), m))
		found = strstr(line, name) != NULL;
	fclose(m);
	return found;
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait up to @ms for the cache to hold no more than @n files. */
static uint32_t wait_files(struct upc_cache *c, uint32_t n, unsigned int ms)
{
	uint64_t end = ms_now() + ms;
	uint32_t now;

	while ((now = stats_of(c).nr_files) > n && ms_now() < end)
		usleep(10000);
	return now;
}

static unsigned int wait_fds_of(dev_t dev, ino_t ino, int except, unsigned int ms)
{
	uint64_t end = ms_now() + ms;
	unsigned int n;

	while ((n = fds_of(dev, ino, except)) && ms_now() < end)
		usleep(10000);
	return n;
}

/* A file @pages pages long with pat() in @dir (created if NULL: a fresh directory). */
static int file_in(const char *dir, unsigned int i, size_t pages, char *path)
{
	unsigned char buf[PAGE];
	int fd;

	snprintf(path, 256, "%s/f%u", dir, i);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	for (size_t p = 0; p < pages; p++) {
		for (size_t b = 0; b < PAGE; b++)
			buf[b] = pat(p * PAGE + b);
		cr_assert_eq(pwrite(fd, buf, PAGE, (off_t)(p * PAGE)), (ssize_t)PAGE);
	}
	return fd;
}

static void remove_dir(const char *dir, unsigned int n)
{
	char path[256];

	for (unsigned int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%u", dir, i);
		unlink(path);
	}
	rmdir(dir);
}

/*
 * (a) The defect: mapping, touching, unmapping and closing distinct files one
 * at a time stopped with -EMFILE after about 120 files (two descriptors
 * each kept), with no mapping left.
 */
Test(file_release, a_thousand_files_one_at_a_time_with_256_descriptors, .timeout = 180)
{
	char dir[] = "/var/tmp/upc-release.XXXXXX", path[256];
	const unsigned int nfiles = 1000;
	unsigned int fds0, bound;
	struct upc_cache *c;
	uint32_t peak = 0;

	set_nofile(256);
	bound = unused_bound();
	fds0 = count_fds();
	c = cache_new(0);
	cr_assert(mkdtemp(dir));
	for (unsigned int i = 0; i < nfiles; i++) {
		int fd = file_in(dir, i, 4, path);
		unsigned char *p;
		uint32_t nf;
		int ret = upc_map(c, fd, 0, 4 * PAGE, PROT_READ, 0, (void **)&p);

		cr_assert_eq(ret, 0, "upc_map of file %u: %s (%d descriptors open, %u files in the cache)", i,
			     upc_strerror(ret), (int)count_fds(), stats_of(c).nr_files);
		for (size_t b = 0; b < 4 * PAGE; b += PAGE)
			cr_assert_eq(p[b + 5], pat(b + 5));
		cr_assert_eq(upc_unmap(c, p, 4 * PAGE), 0);
		close(fd);
		nf = stats_of(c).nr_files;
		peak = nf > peak ? nf : peak;
	}
	cr_assert_eq(stats_of(c).nr_mappings, 0);
	cr_log_info("1000 files: at most %u in the cache (bound %u), %u descriptors now, %u before", peak,
		    bound, count_fds(), fds0);
	cr_assert_leq(peak, bound + 1, "%u files kept, the bound is %u", peak, bound);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(count_fds(), fds0, "descriptors leaked");
	remove_dir(dir, nfiles);
}

/* The same with a write to every file and no background writer: dirty unused files are bounded too. */
Test(file_release, dirty_unused_files_past_the_bound_are_written_back, .timeout = 180)
{
	char dir[] = "/var/tmp/upc-release.XXXXXX", path[256];
	const unsigned int nfiles = 400;
	unsigned int bound, fds0;
	struct upc_cache *c;
	uint32_t peak = 0, nf;

	set_nofile(256);
	bound = unused_bound();
	fds0 = count_fds();
	c = cache_new(UPC_CACHE_NO_BGWB);
	cr_assert(mkdtemp(dir));
	for (unsigned int i = 0; i < nfiles; i++) {
		int fd = file_in(dir, i, 2, path);
		unsigned char *p;
		int ret = upc_map(c, fd, 0, 2 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p);

		cr_assert_eq(ret, 0, "upc_map of file %u: %s (%d descriptors open, %u files in the cache)", i,
			     upc_strerror(ret), (int)count_fds(), stats_of(c).nr_files);
		p[PAGE + 9] = (unsigned char)(i * 3 + 1);
		cr_assert_eq(upc_unmap(c, p, 2 * PAGE), 0);
		close(fd);
		nf = stats_of(c).nr_files;
		peak = nf > peak ? nf : peak;
	}
	cr_assert_leq(peak, bound + 2, "%u files kept, the bound is %u", peak, bound);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(count_fds(), fds0, "descriptors leaked");
	for (unsigned int i = 0; i < nfiles; i++) {
		unsigned char x = 0;
		int fd;

		snprintf(path, sizeof(path), "%s/f%u", dir, i);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		cr_assert(fd >= 0);
		cr_assert_eq(pread(fd, &x, 1, PAGE + 9), 1);
		cr_assert_eq(x, (unsigned char)(i * 3 + 1), "file %u lost its write", i);
		close(fd);
	}
	remove_dir(dir, nfiles);
}

/*
 * (b) A 256 MiB file mapped, read, written a little, unmapped, closed and
 * unlinked: the cache lets go of it (descriptor, memfd, staging
 * reservation), after writing the data back, so the disk space is freed
 * while the cache lives.  The test keeps one descriptor of its own until it
 * has checked the data; closing it must then free the blocks.
 */
Test(file_release, an_unlinked_file_is_written_back_released_and_its_space_freed, .timeout = 120)
{
	const size_t size = 256UL << 20;
	char path[] = "/var/tmp/upc-release.XXXXXX";
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	struct statvfs before, after;
	unsigned char *p, x;
	struct upc_stats st;
	struct stat sb;
	int fd, keep;
	uint64_t freed = 0;

	fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(fallocate(fd, 0, 0, (off_t)size), 0, "fallocate: %s", strerror(errno));
	cr_assert_eq(pwrite(fd, "upcache", 7, 100 * PAGE), 7);
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_geq((uint64_t)sb.st_blocks * 512, size, "the file's blocks are allocated");

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < (8UL << 20); i += PAGE)
		cr_assert_eq(p[i + 1], i == 100 * PAGE ? 'p' : 0);
	p[100 * PAGE + 7] = '!';
	p[(200UL << 20) + 3] = 0x5a;
	cr_assert_geq(stats_of(c).pages_dirty, 2);
	cr_assert_eq(upc_unmap(c, p, size), 0);
	keep = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(keep >= 0);
	close(fd);
	cr_assert_eq(unlink(path), 0);

	/* The cache lets go of the file: no descriptor of it, no memfd, no staging mapping. */
	cr_assert_eq(wait_fds_of(sb.st_dev, sb.st_ino, keep, 5000), 0,
		     "5 s after the unlink the cache still holds %u descriptors of the file (or its memfd)",
		     fds_of(sb.st_dev, sb.st_ino, keep));
	cr_assert_not(staging_mapped(sb.st_dev, sb.st_ino), "the staging mapping is still there");
	st = stats_of(c);
	cr_assert_eq(st.nr_files, 0);
	cr_assert_eq(st.pages_cached, 0, "released pages still counted");
	cr_assert_eq(st.pages_dirty, 0);
	cr_assert_eq(st.meta_bytes, 0, "page-table bytes still counted");
	/* Written back before the release. */
	cr_assert_eq(pread(keep, &x, 1, 100 * PAGE + 7), 1);
	cr_assert_eq(x, '!');
	cr_assert_eq(pread(keep, &x, 1, (200UL << 20) + 3), 1);
	cr_assert_eq(x, 0x5a);

	/* Our descriptor was the last reference: closing it frees the blocks, with the cache alive. */
	cr_assert_eq(statvfs("/var/tmp", &before), 0);
	close(keep);
	for (int i = 0; i < 200; i++) {
		cr_assert_eq(statvfs("/var/tmp", &after), 0);
		freed = after.f_bfree > before.f_bfree ? (after.f_bfree - before.f_bfree) * after.f_frsize : 0;
		if (freed >= size / 2)
			break;
		usleep(10000);
	}
	/* Half: other processes write on this file system meanwhile. */
	cr_assert_geq(freed, size / 2, "only %lu bytes freed after the last close", (unsigned long)freed);
	cr_assert_eq(upc_cache_destroy(c), 0);
}

/* (c) An unused file under the bound is revived by upc_map: its pages are still cached. */
Test(file_release, an_unused_file_is_revived_with_its_pages, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(0);
	int fd = tmpfile_pattern(size, NULL);
	char path[] = "/var/tmp/upc-release.XXXXXX";
	unsigned char *p;
	uint64_t filled;
	int fd2;

	/* Linked, so that only the bound could release it. */
	fd2 = mkstemp(path);
	cr_assert(fd2 >= 0);
	close(fd);
	fd = fd2;
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(pwrite(fd, "r", 1, (off_t)i), 1);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(p[i], 'r');
	cr_assert_eq(upc_unmap(c, p, size), 0);
	close(fd);
	filled = stats_of(c).pages_filled;
	cr_assert_eq(filled, size / PAGE);
	usleep(1500 * 1000);	/* a pass of the unused-file reaper: it keeps the file */
	cr_assert_eq(stats_of(c).nr_files, 1, "an unused file under the bound is kept");
	cr_assert_eq(stats_of(c).pages_cached, size / PAGE);

	fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(p[i], 'r');
	cr_assert_eq(stats_of(c).pages_filled, filled, "the revived file's pages were read again");
	cr_assert_eq(stats_of(c).nr_files, 1);
	cr_assert_eq(upc_unmap(c, p, size), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
	unlink(path);
}

/* (c') An unused file whose cached pages are all evicted (here by upc_drop) is released. */
Test(file_release, an_unused_file_whose_pages_are_all_dropped_is_released, .timeout = 60)
{
	const size_t size = 1 << 20;
	struct upc_cache *c = cache_new(0);
	char path[] = "/var/tmp/upc-release.XXXXXX";
	unsigned char *p;
	struct stat sb;
	int fd;

	fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += PAGE)
		cr_assert_eq(p[i], 0);
	cr_assert_eq(upc_unmap(c, p, size), 0);
	close(fd);
	cr_assert_eq(stats_of(c).nr_files, 1);
	cr_assert_eq(upc_drop(c, 0), (int)(size / PAGE));
	cr_assert_eq(stats_of(c).nr_files, 0, "a file with nothing cached and no user is released");
	cr_assert_eq(fds_of(sb.st_dev, sb.st_ino, -1), 0);
	cr_assert_eq(stats_of(c).meta_bytes, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	unlink(path);
}

/* (d) A dirty unused file is kept until it is written back: nothing is lost. */
Test(file_release, a_dirty_unused_file_is_kept_until_written_back, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	char path[256];
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, path);
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < size; i += 4 * PAGE)
		p[i + 17] = (unsigned char)(i / PAGE + 1);
	cr_assert_eq(upc_unmap(c, p, size), 0);
	close(fd);
	usleep(1500 * 1000);	/* a pass of the unused-file reaper */
	cr_assert_eq(stats_of(c).nr_files, 1, "a dirty file must be kept");
	cr_assert_eq(stats_of(c).pages_dirty, size / PAGE / 4);
	cr_assert_eq(upc_cache_destroy(c), 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	for (size_t i = 0; i < size; i += PAGE) {
		cr_assert_eq(pread(fd, &x, 1, (off_t)i + 17), 1);
		cr_assert_eq(x, i % (4 * PAGE) ? pat(i + 17) : (unsigned char)(i / PAGE + 1), "page %zu", i / PAGE);
	}
	close(fd);
	unlink(path);
}

/* (d) ... and released once the background writer has cleaned it (unlinked, so that it goes). */
Test(file_release, the_background_writer_makes_a_dirty_unused_file_releasable, .timeout = 60)
{
	const size_t size = 64 * PAGE;
	char path[256];
	UPC_OPTS(upc_cache_opts, o, .dirty_expire_ms = 1000, .writeback_interval_ms = 50);
	struct upc_cache *c = cache_new_opts(&o);
	int fd = tmpfile_pattern(size, path), keep;
	unsigned char *p, x;
	struct stat sb;

	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[5 * PAGE + 3] = 0xa5;
	p[60 * PAGE] = 0x5a;
	cr_assert_eq(upc_unmap(c, p, size), 0);
	keep = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(keep >= 0);
	close(fd);
	unlink(path);
	/* Dirty for a second: not released before the writer has been. */
	cr_assert_eq(stats_of(c).nr_files, 1);
	cr_assert_eq(wait_files(c, 0, 5000), 0, "the written-back, unlinked file is not released");
	/* nr_files drops under cache->lock, the descriptors close just after it (files_free) */
	cr_assert_eq(wait_fds_of(sb.st_dev, sb.st_ino, keep, 5000), 0, "%u descriptors of the released file",
		     fds_of(sb.st_dev, sb.st_ino, keep));
	cr_assert_gt(stats_of(c).pages_written, 0);
	cr_assert_eq(pread(keep, &x, 1, 5 * PAGE + 3), 1);
	cr_assert_eq(x, 0xa5);
	cr_assert_eq(pread(keep, &x, 1, 60 * PAGE), 1);
	cr_assert_eq(x, 0x5a);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(keep);
}

/* (d) Unlinked and dirty, no background writer: written back first, then released. */
Test(file_release, an_unlinked_dirty_file_is_written_back_then_released, .timeout = 60)
{
	const size_t size = 16 * PAGE;
	char path[256];
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, path), keep;
	unsigned char *p, x;

	keep = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(keep >= 0);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[7 * PAGE + 1] = 0x77;
	cr_assert_eq(upc_unmap(c, p, size), 0);
	close(fd);
	cr_assert_eq(wait_files(c, 0, 5000), 0, "the unlinked file is not released");
	cr_assert_eq(pread(keep, &x, 1, 7 * PAGE + 1), 1);
	cr_assert_eq(x, 0x77, "its dirty page was not written back first");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(keep);
}

/* A forked child's inherited mapping keeps the file: its writes are written back before the release. */
Test(file_release, a_forked_childs_mapping_keeps_the_file, .timeout = 60)
{
	const size_t size = 16 * PAGE;
	char path[256];
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(size, path), keep, pipefd[2], status;
	unsigned char *p, x;
	pid_t pid;
	char go;

	if (stats_of(c).track_mode != UPC_TRACK_SYNC || !(upc_probe() & UPC_FEAT_EVENT_FORK)) {
		upc_cache_destroy(c);
		unlink(path);
		cr_skip_test("forked children are served only under synchronous tracking with UFFD_EVENT_FORK");
	}
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[PAGE], pat(PAGE));
	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(pipefd[1]);
		if (read(pipefd[0], &go, 1) != 1)
			_exit(2);
		if (p[PAGE] != pat(PAGE) || p[9 * PAGE] != pat(9 * PAGE))
			_exit(3);
		p[9 * PAGE + 2] = 0x99;
		_exit(0);
	}
	close(pipefd[0]);
	/* The parent lets go of the file completely; the child still maps it. */
	cr_assert_eq(upc_unmap(c, p, size), 0);
	keep = open(path, O_RDONLY | O_CLOEXEC);
	close(fd);
	unlink(path);
	usleep(1500 * 1000);
	cr_assert_eq(stats_of(c).nr_files, 1, "a file a child maps was released");
	cr_assert_eq(write(pipefd[1], "g", 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	/* The child is gone: its handler notices within a second, then the file goes, written back. */
	cr_assert_eq(wait_files(c, 0, 5000), 0, "the file is not released after the child exited");
	cr_assert_eq(pread(keep, &x, 1, 9 * PAGE + 2), 1);
	cr_assert_eq(x, 0x99, "the child's write was lost");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(keep);
	close(pipefd[1]);
}

/*
 * (e) Threads map, write, advise WILLNEED and unmap distinct files in a loop
 * while the background writer (short interval) and reclaim (small limit)
 * run and another thread drops and reads statistics: no crash, no data
 * lost, no descriptor leaked.
 */
struct churn {
	struct upc_cache *c;
	const char *dir;
	unsigned int id;
	uint64_t end_ms;
	unsigned int rounds;
	int err;
};

static void *churn_main(void *arg)
{
	struct churn *w = arg;
	const size_t size = 32 * PAGE;
	char path[256];

	while (ms_now() < w->end_ms && !w->err) {
		unsigned int n = w->rounds++;
		unsigned char *p;
		int fd, ret;

		snprintf(path, sizeof(path), "%s/t%u-%u", w->dir, w->id, n);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
			w->err = -errno;
			break;
		}
		/* Some unlinked before they are mapped, some after, some kept linked a while. */
		if (n % 3 == 0)
			unlink(path);
		ret = upc_map(w->c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p);
		if (ret < 0) {
			w->err = ret;
			close(fd);
			break;
		}
		for (size_t i = 0; i < size; i += 3 * PAGE)
			p[i + n % 64] = (unsigned char)(n + 1);
		if (n % 2)
			upc_advise(w->c, p + 16 * PAGE, 16 * PAGE, UPC_ADV_WILLNEED);
		if (n % 5 == 0)
			upc_msync(w->c, p, size, UPC_MS_ASYNC);
		ret = upc_unmap(w->c, p, size);
		if (ret < 0)
			w->err = ret;
		close(fd);
		if (n % 3 == 1)
			unlink(path);
		else if (n % 3 == 2 && n >= 30) {
			snprintf(path, sizeof(path), "%s/t%u-%u", w->dir, w->id, n - 30);
			unlink(path);
		}
	}
	return NULL;
}

static void *dropper_main(void *arg)
{
	struct churn *w = arg;

	while (ms_now() < w->end_ms) {
		struct upc_stats st = { .sz = sizeof(st) };

		upc_stats(w->c, &st);
		if (w->rounds++ % 4 == 0)
			upc_drop(w->c, 0);
		usleep(2000);
	}
	return NULL;
}

Test(file_release, mapping_races_writeback_reclaim_and_drop, .timeout = 120)
{
	char dir[] = "/var/tmp/upc-release.XXXXXX", path[256];
	UPC_OPTS(upc_cache_opts, o, .mem_limit = 512 * 1024, .dirty_expire_ms = 5, .writeback_interval_ms = 10);
	unsigned int fds0 = count_fds(), secs = (unsigned int)env_ulong("UPC_TEST_SECONDS", 2);
	struct churn w[3];
	pthread_t t[3];
	struct upc_cache *c = cache_new_opts(&o);
	unsigned int total = 0, checked = 0;

	cr_assert(mkdtemp(dir));
	for (unsigned int i = 0; i < 3; i++) {
		w[i] = (struct churn){ .c = c, .dir = dir, .id = i, .end_ms = ms_now() + secs * 1000 };
		cr_assert_eq(pthread_create(&t[i], NULL, i < 2 ? churn_main : dropper_main, &w[i]), 0);
	}
	for (unsigned int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	for (unsigned int i = 0; i < 2; i++) {
		cr_assert_eq(w[i].err, 0, "thread %u: %s", i, upc_strerror(w[i].err));
		total += w[i].rounds;
	}
	cr_log_info("%u files mapped and unmapped in %u s", total, secs);
	cr_assert_gt(total, 20);
	cr_assert_eq(stats_of(c).nr_mappings, 0);
	cr_assert_leq(wait_files(c, unused_bound(), 3000), unused_bound());
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(count_fds(), fds0, "descriptors leaked");
	/* The files still linked hold what was written. */
	for (unsigned int i = 0; i < 2; i++)
		for (unsigned int n = 0; n < w[i].rounds; n++) {
			unsigned char x;
			int fd;

			snprintf(path, sizeof(path), "%s/t%u-%u", dir, i, n);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			for (size_t b = 0; b < 32 * PAGE; b += 3 * PAGE) {
				cr_assert_eq(pread(fd, &x, 1, (off_t)(b + n % 64)), 1);
				cr_assert_eq(x, (unsigned char)(n + 1), "file t%u-%u offset %zu", i, n, b + n % 64);
			}
			checked++;
			close(fd);
			unlink(path);
		}
	cr_assert_gt(checked, 0);
	rmdir(dir);
}
