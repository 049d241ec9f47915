/* SPDX-License-Identifier: MIT */
/*
 * shim.c - libupcache-preload.so, the LD_PRELOAD half of upcache-run(1):
 * unmodified programs get upcache mappings where they ask the kernel for a
 * MAP_SHARED mapping of a regular file.
 *
 * The kernel's rule this reproduces is the unified page cache: whatever
 * path a program takes to a file (a mapping, read/write, truncate), it
 * meets the same pages.  So once a file has an upcache mapping, every
 * descriptor of it (keyed by st_dev/st_ino, not by the descriptor that was
 * mapped) reads and writes through upc_pread/upc_pwrite, and its size
 * changes and syncs go through upc_ftruncate/upc_fallocate/upc_fsync.  A
 * file stays routed for the life of the process, even when its last
 * mapping goes: the cache may still hold its dirty pages, and a write that
 * went to the kernel would be overwritten by their write-back.
 *
 * What can go wrong, and what guards it:
 *  - recursion at start-up: dlsym() may allocate, and an application's
 *    malloc may map memory or write a log.  The memory functions are raw
 *    system calls (they never need dlsym), the others are resolved lazily
 *    with dlsym(RTLD_NEXT) and fall back to the raw system call while a
 *    resolution is under way on the thread (resolving);
 *  - the library's own calls (its threads, its memfds, its uffd reads) must
 *    never come back here: they are linked to __wrap_* below (ld --wrap),
 *    which go straight to the real functions;
 *  - re-entry from inside the shim (an allocation that maps): in_shim makes
 *    every interposer go straight to the kernel on that thread;
 *  - a second file view: a file whose shared mapping was left to the
 *    kernel is never routed (si_kernel), and a routed file never gets a
 *    kernel shared mapping: two page caches of one file would each
 *    overwrite the other's writes;
 *  - processes: only the process that created the cache calls upc_*
 *    (cache_pid).  A forked child keeps its inherited mappings, served by
 *    the parent's engine (synchronous tracking); it routes file I/O through
 *    them where it can (child_rw) and leaves the rest, and every new
 *    mapping, to the kernel.  A vfork child never reaches the cache: vfork
 *    is fork here, and posix_spawn's child runs no code of ours;
 *  - other processes under the shim: one cache per file at a time, held
 *    through a registry of flock()ed entries (below); a file another
 *    process caches is busy here: no mapping, no write (EAGAIN);
 *  - dirty pages live in this process: they are written back before exec,
 *    before posix_spawn/system/popen, before a fork when there are any (so
 *    a child that execs reads them), and at exit (the destructor, _exit and
 *    _Exit).  kill -9 loses them (upcache-run(1)).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <upcache.h>

#include "shim.h"

#define SHIM_API __attribute__((visibility("default")))
#define SHIM_PAGE 4096UL
#define PAGE_UP(x) (((x) + SHIM_PAGE - 1) & ~(SHIM_PAGE - 1))
#define SHIM_FD_MIN 512		/* our descriptors sit at or above this, out of the program's way */

_Static_assert(sizeof(off_t) == 8, "upcache-run needs a 64-bit off_t (an LP64 system)");

extern void __chk_fail(void) __attribute__((noreturn));

/* ------------------------------------------------------------ real functions */

static __thread int resolving;	/* a dlsym() is under way on this thread */
static __thread int in_shim;	/* shim code is running on this thread: go to the kernel */

static void *real_sym(void *_Atomic *slot, const char *name)
{
	void *p = atomic_load_explicit(slot, memory_order_acquire);

	if (p || resolving)
		return p;
	resolving = 1;
	p = dlsym(RTLD_NEXT, name);
	resolving = 0;
	atomic_store_explicit(slot, p, memory_order_release);
	return p;
}

#define DECLARE_REAL(name) static void *_Atomic real_##name
#define REAL(name) ((__typeof__(&name))real_sym(&real_##name, #name))

DECLARE_REAL(read);
DECLARE_REAL(write);
DECLARE_REAL(pread);
DECLARE_REAL(pwrite);
DECLARE_REAL(readv);
DECLARE_REAL(writev);
DECLARE_REAL(preadv);
DECLARE_REAL(pwritev);
DECLARE_REAL(preadv2);
DECLARE_REAL(pwritev2);
DECLARE_REAL(close);
DECLARE_REAL(ftruncate);
DECLARE_REAL(truncate);
DECLARE_REAL(fallocate);
DECLARE_REAL(posix_fallocate);
DECLARE_REAL(fsync);
DECLARE_REAL(fdatasync);
DECLARE_REAL(sync_file_range);
DECLARE_REAL(syncfs);
DECLARE_REAL(sync);
DECLARE_REAL(dup2);
DECLARE_REAL(dup3);
DECLARE_REAL(fcntl);
DECLARE_REAL(lseek);
DECLARE_REAL(fork);
DECLARE_REAL(execve);
DECLARE_REAL(execv);
DECLARE_REAL(execvp);
DECLARE_REAL(execvpe);
DECLARE_REAL(fexecve);
DECLARE_REAL(execveat);
DECLARE_REAL(posix_spawn);
DECLARE_REAL(posix_spawnp);
DECLARE_REAL(system);
DECLARE_REAL(popen);

/* The kernel's view: the real function, or the system call while dlsym runs. */
static ssize_t k_read(int fd, void *b, size_t n)
{
	__typeof__(&read) fn = REAL(read);

	return fn ? fn(fd, b, n) : syscall(SYS_read, fd, b, n);
}

static ssize_t k_write(int fd, const void *b, size_t n)
{
	__typeof__(&write) fn = REAL(write);

	return fn ? fn(fd, b, n) : syscall(SYS_write, fd, b, n);
}

static ssize_t k_pread(int fd, void *b, size_t n, off_t off)
{
	__typeof__(&pread) fn = REAL(pread);

	return fn ? fn(fd, b, n, off) : syscall(SYS_pread64, fd, b, n, off);
}

static ssize_t k_pwrite(int fd, const void *b, size_t n, off_t off)
{
	__typeof__(&pwrite) fn = REAL(pwrite);

	return fn ? fn(fd, b, n, off) : syscall(SYS_pwrite64, fd, b, n, off);
}

static int k_close(int fd)
{
	__typeof__(&close) fn = REAL(close);

	return fn ? fn(fd) : (int)syscall(SYS_close, fd);
}

static int k_fcntl(int fd, int cmd, long arg)
{
	__typeof__(&fcntl) fn = REAL(fcntl);

	return fn ? fn(fd, cmd, arg) : (int)syscall(SYS_fcntl, fd, cmd, arg);
}

static off_t k_lseek(int fd, off_t off, int whence)
{
	__typeof__(&lseek) fn = REAL(lseek);

	return fn ? fn(fd, off, whence) : (off_t)syscall(SYS_lseek, fd, off, whence);
}

static int k_ftruncate(int fd, off_t len)
{
	__typeof__(&ftruncate) fn = REAL(ftruncate);

	return fn ? fn(fd, len) : (int)syscall(SYS_ftruncate, fd, len);
}

static int k_fallocate(int fd, int mode, off_t off, off_t len)
{
	__typeof__(&fallocate) fn = REAL(fallocate);

	return fn ? fn(fd, mode, off, len) : (int)syscall(SYS_fallocate, fd, mode, off, len);
}

/* The memory functions never need dlsym: they are the system calls. */
static void *k_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

static int k_munmap(void *addr, size_t len)
{
	return (int)syscall(SYS_munmap, addr, len);
}

static int k_mprotect(void *addr, size_t len, int prot)
{
	return (int)syscall(SYS_mprotect, addr, len, prot);
}

static int k_madvise(void *addr, size_t len, int advice)
{
	return (int)syscall(SYS_madvise, addr, len, advice);
}

static int k_msync(void *addr, size_t len, int flags)
{
	return (int)syscall(SYS_msync, addr, len, flags);
}

static void *k_mremap(void *old, size_t oldlen, size_t newlen, int flags, void *new_addr)
{
	return (void *)syscall(SYS_mremap, old, oldlen, newlen, flags, new_addr);
}

/*
 * The library's calls of the functions this file interposes (ld --wrap in
 * preload.am): straight to the kernel's, never back into the shim.
 */
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_munmap(void *addr, size_t len);
int __wrap_mprotect(void *addr, size_t len, int prot);
int __wrap_madvise(void *addr, size_t len, int advice);
ssize_t __wrap_read(int fd, void *b, size_t n);
ssize_t __wrap_write(int fd, const void *b, size_t n);
int __wrap_close(int fd);
int __wrap_fallocate(int fd, int mode, off_t off, off_t len);
int __wrap_ftruncate(int fd, off_t len);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_fcntl(int fd, int cmd, ...);
ssize_t __wrap_pread(int fd, void *b, size_t n, off_t off);
ssize_t __wrap_pwrite(int fd, const void *b, size_t n, off_t off);
ssize_t __wrap_pread64(int fd, void *b, size_t n, off_t off);
ssize_t __wrap_pwrite64(int fd, const void *b, size_t n, off_t off);

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return k_mmap(addr, len, prot, flags, fd, off);
}

int __wrap_munmap(void *addr, size_t len)
{
	return k_munmap(addr, len);
}

int __wrap_mprotect(void *addr, size_t len, int prot)
{
	return k_mprotect(addr, len, prot);
}

int __wrap_madvise(void *addr, size_t len, int advice)
{
	return k_madvise(addr, len, advice);
}

ssize_t __wrap_read(int fd, void *b, size_t n)
{
	return k_read(fd, b, n);
}

ssize_t __wrap_write(int fd, const void *b, size_t n)
{
	return k_write(fd, b, n);
}

int __wrap_close(int fd)
{
	return k_close(fd);
}

int __wrap_fallocate(int fd, int mode, off_t off, off_t len)
{
	return k_fallocate(fd, mode, off, len);
}

int __wrap_ftruncate(int fd, off_t len)
{
	return k_ftruncate(fd, len);
}

/* The file store's syncs (store.c, fs_sync_flags()): the store's own descriptor, never routed. */
int __wrap_fsync(int fd)
{
	return (int)syscall(SYS_fsync, fd);
}

int __wrap_fdatasync(int fd)
{
	return (int)syscall(SYS_fdatasync, fd);
}

/*
 * The library's positional I/O: a client serving itself while upcd is away
 * writes its pages to the file (takeover.c), and the daemon's page table
 * and journal are read and written so.  Routed back through the shim, such
 * a write of a routed file became upc_pwrite() through the daemon that was
 * away: the hand-back waited for $UPC_RECONNECT (30 s, SQLite under
 * upcache-run --shared after a kill -9 of upcd, a helper's run).
 */
ssize_t __wrap_pread(int fd, void *b, size_t n, off_t off)
{
	return k_pread(fd, b, n, off);
}

ssize_t __wrap_pwrite(int fd, const void *b, size_t n, off_t off)
{
	return k_pwrite(fd, b, n, off);
}

ssize_t __wrap_pread64(int fd, void *b, size_t n, off_t off)
{
	return k_pread(fd, b, n, off);
}

ssize_t __wrap_pwrite64(int fd, const void *b, size_t n, off_t off)
{
	return k_pwrite(fd, b, n, off);
}

int __wrap_fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return k_fcntl(fd, cmd, arg);
}

/* ------------------------------------------------------------ state */

static pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;
static bool lock_held_for_fork;

static struct shim_inode **inodes;
static size_t nr_inodes, cap_inodes;
static atomic_ulong nr_routed;		/* routed inodes: the one load of the fast path */

static struct shim_region *regions;
static size_t nr_regions, cap_regions;
static atomic_ulong nr_regions_live;	/* == nr_regions, for the fast path */

static struct upc_cache *cache;
static pid_t cache_pid;			/* the process that created it: the only one calling upc_* */
static bool cache_failed;
static bool children_served;		/* forked children keep working inherited mappings */

static int opt_async;			/* UPCACHE_RUN_TRACKING=async */
static int opt_shared;			/* UPCACHE_RUN_SHARED: upcd's cache (upcache-run --shared) */
static int opt_stats;			/* UPCACHE_RUN_STATS */
static char stats_file[PATH_MAX];	/* UPCACHE_RUN_STATS_FILE: written at exit, "" if not asked */
static pid_t stats_file_pid;		/* the process that read it: the only one writing it */
static int log_fd = -1;			/* UPCACHE_RUN_LOG */

static int reg_dirfd = -1;		/* the registry directory (below) */
static atomic_ulong nr_reg_fds;		/* registry descriptors: fd_is_ours() looks when non-zero */

static void reg_drop(int fd);

static atomic_ulong n_maps_taken, n_maps_kernel, n_io_routed, n_io_child;

static pid_t shim_getpid(void)
{
	return (pid_t)syscall(SYS_getpid);
}

static void shim_lock_take(void)
{
	pthread_mutex_lock(&shim_lock);
	in_shim++;
}

static void shim_lock_drop(void)
{
	in_shim--;
	pthread_mutex_unlock(&shim_lock);
}

/* This process made the cache and may call the library. */
static bool owned(void)
{
	return cache && cache_pid == shim_getpid();
}

static __attribute__((format(printf, 1, 2))) void shim_log(const char *fmt, ...)
{
	char buf[768];
	va_list ap;
	int n, m;

	if (log_fd < 0)
		return;
	n = snprintf(buf, sizeof(buf), "upcache-run[%d]: ", (int)shim_getpid());
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	n += m < 0 ? 0 : (m > (int)sizeof(buf) - n - 2 ? (int)sizeof(buf) - n - 2 : m);
	buf[n++] = '\n';
	(void)!k_write(log_fd, buf, n);
}

static int set_errno(long ret)
{
	errno = (int)-ret;
	return -1;
}

static void fd_path(int fd, char *out, size_t len)
{
	char proc[64];
	ssize_t n;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, out, len - 1);
	if (n < 0)
		n = snprintf(out, len, "fd %d", fd) >= (int)len ? (ssize_t)len - 1 : (ssize_t)strlen(out);
	out[n] = '\0';
}

/* A descriptor of ours: the program does not see it (close, dup2 onto it). */
static bool fd_is_ours(int fd)
{
	bool ours = false;

	if (fd < 0 || (fd != log_fd && atomic_load_explicit(&nr_routed, memory_order_relaxed) == 0 &&
		       atomic_load_explicit(&nr_reg_fds, memory_order_relaxed) == 0))
		return fd >= 0 && fd == log_fd;
	if (fd == log_fd)
		return true;
	pthread_mutex_lock(&shim_lock);
	ours = fd == reg_dirfd;
	for (size_t i = 0; i < nr_inodes && !ours; i++)
		ours = inodes[i]->si_fd == fd || inodes[i]->si_regfd == fd;
	pthread_mutex_unlock(&shim_lock);
	return ours;
}

static int fd_dup_high(int fd)
{
	int nfd = k_fcntl(fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);

	return nfd >= 0 ? nfd : k_fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

/* ------------------------------------------------------------ set-up and atfork */

static void atfork_prepare(void)
{
	/*
	 * Hold shim_lock across the fork so that the child's copy of the
	 * tables is whole - but for a second at most: the library's prepare
	 * handler may hold a lock that our holder waits for (upc_map inside
	 * shim_lock).  The child starts with a fresh lock in any case.
	 */
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 1;
	lock_held_for_fork = pthread_mutex_timedlock(&shim_lock, &ts) == 0;
}

static void atfork_parent(void)
{
	if (lock_held_for_fork)
		pthread_mutex_unlock(&shim_lock);
}

static void atfork_child(void)
{
	pthread_mutex_init(&shim_lock, NULL);
	in_shim = 0;
	/*
	 * The parent's cache entries stay the parent's: the child does not
	 * cache (its inherited mappings are the parent's engine's), and its
	 * copy of the lock must not outlive the parent (close, never
	 * LOCK_UN, which would free the parent's lock too).  Its inherited
	 * kernel mappings keep their LOCK_SH entries.
	 */
	for (size_t i = 0; i < nr_inodes; i++) {
		struct shim_inode *si = inodes[i];

		if (si->si_regfd >= 0 && !si->si_kernel) {
			reg_drop(si->si_regfd);
			si->si_regfd = -1;
		}
	}
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *e;

	e = getenv("UPCACHE_RUN_TRACKING");
	opt_async = e && !strcmp(e, "async");
	e = getenv("UPCACHE_RUN_SHARED");
	opt_shared = e && *e && strcmp(e, "0");
	e = getenv("UPCACHE_RUN_STATS");
	opt_stats = e && *e && strcmp(e, "0");
	/*
	 * The counters of this process only: not of a forked child (the pid),
	 * nor of a program it runs (unset, so that no other process takes the
	 * name first: the file is created O_EXCL).
	 */
	e = getenv("UPCACHE_RUN_STATS_FILE");
	if (e && *e && strlen(e) < sizeof(stats_file)) {
		snprintf(stats_file, sizeof(stats_file), "%s", e);
		stats_file_pid = shim_getpid();
	}
	unsetenv("UPCACHE_RUN_STATS_FILE");
	e = getenv("UPCACHE_RUN_LOG");
	if (e && *e) {
		int fd = open(e, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

		if (fd >= 0) {
			log_fd = fd_dup_high(fd);
			k_close(fd);
		}
	}
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/*
 * The cache, made at the first mapping that needs it.  shim_lock held.
 * With --shared it is upcd's (UPC_CACHE_SHARED; the socket in
 * $UPC_SOCKET, set by upcache-run from --socket, else the default): every
 * process under upcache-run --shared maps the daemon's pages of a file,
 * and what one wrote survives its kill -9.  No daemon then is no cache,
 * and no kernel mapping in its place either (take_mmap): the other
 * processes sharing the file have its pages in the daemon, and the
 * kernel's page cache would be a second cache of it.
 */
static struct upc_cache *cache_get(void)
{
	UPC_OPTS(upc_cache_opts, o, .flags = opt_shared ? UPC_CACHE_SHARED : opt_async ? UPC_CACHE_ASYNC_WP : 0);
	struct upc_stats st = { .sz = sizeof(st) };
	int ret;

	if (cache || cache_failed)
		return cache;
	if (shim_getpid() != cache_pid && cache_pid) {
		/* unreachable: a child with a parent's cache does not get here */
		return NULL;
	}
	ret = upc_cache_create(&o, &cache);
	if (ret) {
		cache_failed = true;
		cache = NULL;
		if (opt_shared) {
			const char *sock = getenv("UPC_SOCKET");
			char msg[512];
			int n = snprintf(msg, sizeof(msg),
					 "upcache-run[%d]: --shared: no cache from upcd at %s (%s): shared mappings of "
					 "regular files fail with ENODEV; upcache-run(1)\n",
					 (int)shim_getpid(), sock && *sock ? sock : "its default socket",
					 upc_strerror(ret));

			(void)!k_write(2, msg, n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1);
		}
		shim_log("no cache (upc_cache_create%s: %s): every mapping is %s", opt_shared ? " of upcd's" : "",
			 upc_strerror(ret), opt_shared ? "refused (ENODEV)" : "left to the kernel");
		return NULL;
	}
	cache_pid = shim_getpid();
	upc_stats(cache, &st);
	/*
	 * A forked child's I/O through its inherited mappings (child_rw):
	 * only where this process's own engine serves them.  In shared mode
	 * the daemon serves them, or not (a client without fork events:
	 * upcd(8)), which this process cannot tell: the child's I/O goes to
	 * the kernel, as under asynchronous tracking (upcache-run(1)).
	 */
	children_served = !opt_shared && st.track_mode == UPC_TRACK_SYNC && (upc_probe() & UPC_FEAT_EVENT_FORK);
	if (opt_shared)
		shim_log("cache created: upcd's (shared mode, %s tracking), memory limit %llu bytes",
			 st.track_mode == UPC_TRACK_ASYNC ? "asynchronous" : "synchronous",
			 (unsigned long long)st.mem_limit);
	else
		shim_log("cache created: %s tracking%s, memory limit %llu bytes",
			 st.track_mode == UPC_TRACK_ASYNC ? "asynchronous" : "synchronous",
			 opt_async && st.track_mode != UPC_TRACK_ASYNC ? " (async asked for, not available)" : "",
			 (unsigned long long)st.mem_limit);
	return cache;
}

/* ------------------------------------------------------------ tables (shim_lock held) */

static struct shim_inode *inode_find(dev_t dev, ino_t ino)
{
	for (size_t i = 0; i < nr_inodes; i++)
		if (inodes[i]->si_dev == dev && inodes[i]->si_ino == ino)
			return inodes[i];
	return NULL;
}

static struct shim_inode *inode_add(const struct stat *st, int fd, bool kernel)
{
	struct shim_inode *si = calloc(1, sizeof(*si));

	if (!si)
		return NULL;
	if (nr_inodes == cap_inodes) {
		size_t cap = cap_inodes ? 2 * cap_inodes : 16;
		struct shim_inode **n = realloc(inodes, cap * sizeof(*n));

		if (!n) {
			free(si);
			return NULL;
		}
		inodes = n;
		cap_inodes = cap;
	}
	si->si_dev = st->st_dev;
	si->si_ino = st->st_ino;
	si->si_kernel = kernel;
	si->si_fd = -1;
	si->si_regfd = -1;
	fd_path(fd, si->si_path, sizeof(si->si_path));
	if (!kernel) {
		si->si_fd = fd_dup_high(fd);
		if (si->si_fd < 0) {
			free(si);
			return NULL;
		}
		si->si_accmode = k_fcntl(si->si_fd, F_GETFL, 0) & O_ACCMODE;
	}
	inodes[nr_inodes++] = si;
	if (!kernel)
		atomic_fetch_add_explicit(&nr_routed, 1, memory_order_relaxed);
	return si;
}

/* A busy record (or a new one) becomes routed: the descriptor the cache uses. */
static struct shim_inode *inode_route(struct shim_inode *si, int fd)
{
	int nfd = fd_dup_high(fd);

	if (nfd < 0)
		return NULL;
	si->si_fd = nfd;
	si->si_accmode = k_fcntl(nfd, F_GETFL, 0) & O_ACCMODE;
	si->si_busy = false;	/* still counted in nr_routed */
	return si;
}

/* A busy record whose file this process now maps through the kernel. */
static void busy_to_kernel(struct shim_inode *si)
{
	si->si_busy = false;
	si->si_kernel = true;
	atomic_fetch_sub_explicit(&nr_routed, 1, memory_order_relaxed);
}

/* Index of the first region that ends after @addr. */
static size_t region_first(uintptr_t addr)
{
	size_t lo = 0, hi = nr_regions;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (regions[mid].sr_end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int region_insert(const struct shim_region *r)
{
	size_t i = region_first(r->sr_start);

	if (nr_regions == cap_regions) {
		size_t cap = cap_regions ? 2 * cap_regions : 32;
		struct shim_region *n = realloc(regions, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		regions = n;
		cap_regions = cap;
	}
	memmove(regions + i + 1, regions + i, (nr_regions - i) * sizeof(*regions));
	regions[i] = *r;
	nr_regions++;
	atomic_store_explicit(&nr_regions_live, nr_regions, memory_order_relaxed);
	return 0;
}

/* Make @addr a boundary between records (a record that spans it is split). */
static int region_split_at(uintptr_t addr)
{
	size_t i = region_first(addr);
	struct shim_region tail;

	if (i == nr_regions || regions[i].sr_start >= addr)
		return 0;
	tail = regions[i];
	tail.sr_off += (off_t)(addr - tail.sr_start);
	tail.sr_start = addr;
	regions[i].sr_end = addr;
	return region_insert(&tail);
}

/* Forget the records within [s, e) (after region_split_at(s) and (e)). */
static void region_remove(uintptr_t s, uintptr_t e)
{
	size_t i = region_first(s), j = i;

	while (j < nr_regions && regions[j].sr_end <= e && regions[j].sr_start >= s)
		j++;
	memmove(regions + i, regions + j, (nr_regions - j) * sizeof(*regions));
	nr_regions -= j - i;
	atomic_store_explicit(&nr_regions_live, nr_regions, memory_order_relaxed);
}

/* The record that contains @addr, or NULL. */
static struct shim_region *region_at(uintptr_t addr)
{
	size_t i = region_first(addr);

	return i < nr_regions && regions[i].sr_start <= addr ? &regions[i] : NULL;
}

/*
 * Apply an operation to [s, e): each upcache piece (a part of one record)
 * through @upc, each gap through @kern.  Tables may change in between:
 * the next piece is looked up again.  Returns the first error (negative
 * errno) and goes on with the rest, as the kernel's munmap does.
 */
typedef long (*piece_fn)(struct shim_region *r, uintptr_t s, uintptr_t e, long arg);

static long for_each_piece(uintptr_t s, uintptr_t e, piece_fn upc, piece_fn kern, long arg)
{
	long ret = 0, r;

	for (uintptr_t a = s; a < e;) {
		size_t i = region_first(a);
		uintptr_t b;

		if (i < nr_regions && regions[i].sr_start <= a) {
			b = regions[i].sr_end < e ? regions[i].sr_end : e;
			r = upc(&regions[i], a, b, arg);
		} else {
			b = i < nr_regions && regions[i].sr_start < e ? regions[i].sr_start : e;
			r = kern(NULL, a, b, arg);
		}
		if (r < 0 && !ret)
			ret = r;
		a = b;
	}
	return ret;
}

/* ------------------------------------------------------------ registry */

/*
 * One cache per file across processes.  In embedded mode every process
 * has a cache of its own, and two caches of one file lose each other's
 * writes: each serves its own copy of the pages, and each one's write-back
 * overwrites what the other wrote (measured: SQLite in WAL mode, a writer
 * and a reader both under upcache-run, 400 committed rows of which 51 were
 * left after the reader's checkpoint from its stale wal-index).  So a
 * process caches a file only while it holds the file's registry entry:
 * REG_DIR/<st_dev>-<st_ino>, flock()ed LOCK_EX.  A process that maps the
 * file through the kernel (a shared mapping the shim leaves to it) holds
 * it LOCK_SH, so that the two kinds of process refuse each other too.
 *
 * Why flock: the kernel drops the lock when the last descriptor of the
 * open file description goes, at exit, kill -9 and exec (O_CLOEXEC)
 * included, so an entry is never stale while no process holds it; and a
 * conflict costs nothing until it happens.  The directory is
 * /dev/shm/upcache-run (mode 1777, entries 0644: one user's process must
 * see another user's cache of a shared file) unless UPCACHE_RUN_REGISTRY
 * names another; every process that may share a file must use the same
 * one.  What can go wrong:
 *  - a forked child inherits the descriptor, and the lock with it; but the
 *    child does not cache (its inherited mappings are served by the
 *    parent's engine), so it closes its copies of the LOCK_EX ones
 *    (atfork_child) and the entry goes when the parent goes;
 *  - the entry is held until the process is gone, not dropped at exit:
 *    after the destructor's write-back, threads still running may dirty
 *    pages that the library's write-back writes, and another cache must not
 *    start on the file before that stops.  Entries are empty files, free
 *    when no process holds them, and stay (tmpfs: until reboot).  Removing
 *    one is safe only while holding its lock (flock -xn F rm F): a process
 *    that opened the old file before the unlink would lock an unlinked
 *    inode, so a lock counts only if the name still leads to the locked
 *    inode (else open again);
 *  - the shim cannot see processes not under it: they are upcache-run(1)'s
 *    BUGS.
 *
 * Shared mode (upcache-run --shared): processes caching a file in upcd
 * share one cache, so they do not exclude each other; they exclude the
 * others.  Each holds REG_DIR/<st_dev>-<st_ino>.shared LOCK_SH and checks
 * that nobody holds the plain entry (a process with a cache of its own,
 * or a kernel mapping); those check, after taking the plain entry, that
 * nobody holds the .shared one.  A check is a moment's LOCK_EX | LOCK_NB
 * of the other entry.  Every take-and-check runs under REG_DIR/.lock
 * (LOCK_EX), so a check never meets another check's moment of LOCK_EX, and
 * of two processes of different kinds the second to run sees the first.
 * Every process under --shared must use the same daemon: the registry does
 * not tell two daemons apart (upcache-run(1)).
 */
#define REG_DIR_DEFAULT "/dev/shm/upcache-run"
#define REG_SHARED_SUFFIX ".shared"


static void reg_name(const struct stat *st, const char *suffix, char *name, size_t len)
{
	snprintf(name, len, "%llx-%llu%s", (unsigned long long)st->st_dev, (unsigned long long)st->st_ino, suffix);
}

/* The registry directory, made if missing.  shim_lock held. */
static int reg_dir(void)
{
	const char *dir = getenv("UPCACHE_RUN_REGISTRY");
	int fd;

	if (reg_dirfd >= 0)
		return reg_dirfd;
	if (!dir || !*dir)
		dir = REG_DIR_DEFAULT;
	if (mkdir(dir, 01777) == 0)
		chmod(dir, 01777);	/* the umask took bits off: every user must be able to add entries */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	reg_dirfd = fd_dup_high(fd);
	k_close(fd);
	if (reg_dirfd < 0)
		return -EMFILE;
	atomic_fetch_add(&nr_reg_fds, 1);
	return reg_dirfd;
}

/* The process holding the lock of @fd, from /proc/locks (0 if not found). */
static pid_t reg_holder(int fd)
{
	char buf[16384], want[64];
	struct stat st;
	ssize_t n, len = 0;
	pid_t pid = 0;
	int pfd;

	if (fstat(fd, &st) < 0)
		return 0;
	snprintf(want, sizeof(want), "%02x:%02x:%llu ", major(st.st_dev), minor(st.st_dev),
		 (unsigned long long)st.st_ino);
	pfd = open("/proc/locks", O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return 0;
	while (len < (ssize_t)sizeof(buf) - 1 && (n = k_read(pfd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += n;
	k_close(pfd);
	buf[len] = '\0';
	for (char *line = buf, *nl; line && *line && !pid; line = nl ? nl + 1 : NULL) {
		char *at;
		int p;

		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		/* "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have "->" */
		at = strstr(line, want);
		if (at && strstr(line, "FLOCK") && !strstr(line, "->") &&
		    sscanf(line, "%*d: FLOCK %*s %*s %d", &p) == 1)
			pid = p;
	}
	return pid;
}

/*
 * Take the registry entry of the file @st: @op LOCK_EX to cache it,
 * LOCK_SH to map it through the kernel.  Returns our descriptor of the
 * entry, -EWOULDBLOCK when another process holds it the other way (its
 * pid in *@holder), or another negative errno when the registry cannot be
 * used.  shim_lock held.
 */
static int reg_take_entry(const struct stat *st, const char *suffix, int op, pid_t *holder)
{
	char name[80];
	int dfd = reg_dir(), fd, hfd;

	*holder = 0;
	if (dfd < 0)
		return dfd;
	reg_name(st, suffix, name, sizeof(name));
	for (int tries = 0; tries < 16; tries++) {
		struct stat a, b;

		fd = openat(dfd, name, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			return -errno;
		(void)!fchmod(fd, 0644);	/* the creator's umask must not hide it from other users */
		if (flock(fd, op | LOCK_NB) < 0) {
			int err = errno;

			if (err == EWOULDBLOCK)
				*holder = reg_holder(fd);
			k_close(fd);
			return -err;
		}
		/* the name must still lead to what we locked (an exiting holder unlinks it) */
		if (fstat(fd, &a) == 0 && fstatat(dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			hfd = fd_dup_high(fd);
			k_close(fd);
			if (hfd < 0)
				return -EMFILE;
			atomic_fetch_add(&nr_reg_fds, 1);
			return hfd;
		}
		k_close(fd);
	}
	return -EAGAIN;
}

/* Let go of a registry descriptor.  shim_lock held. */
static void reg_drop(int fd)
{
	if (fd < 0)
		return;
	k_close(fd);
	atomic_fetch_sub(&nr_reg_fds, 1);
}

/*
 * REG_DIR/.lock, LOCK_EX: one take-and-check at a time across processes
 * (shared mode, above).  Held for a few system calls; a holder stopped
 * for 10 s makes the registry unusable for this call (-ETIMEDOUT), never
 * a hang.  Returns its descriptor, or a negative errno.  shim_lock held.
 */
static int reg_lock_all(void)
{
	struct timespec start, now;
	int dfd = reg_dir(), fd;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, ".lock", O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	(void)!fchmod(fd, 0644);
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;

		/* 10 s of the clock, not a count of sleeps: a loaded machine stretches each one */
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (err == EWOULDBLOCK && now.tv_sec - start.tv_sec >= 10)
			err = ETIMEDOUT;
		if (err != EWOULDBLOCK) {
			k_close(fd);
			return -err;
		}
		usleep(1000);
	}
	return fd;
}

/* Is @st's entry @suffix free?  0, or -EWOULDBLOCK (its holder in *@holder).  Under reg_lock_all(). */
static int reg_check(const struct stat *st, const char *suffix, pid_t *holder)
{
	int fd = reg_take_entry(st, suffix, LOCK_EX, holder);

	if (fd < 0)
		return fd;
	reg_drop(fd);		/* the lock goes with our only descriptor of it */
	return 0;
}

enum { REG_CACHE, REG_KERNEL, REG_SHARED };

/*
 * Take the registry entry that lets this process use the file @st as
 * @how: REG_CACHE, a cache of its own (the entry, LOCK_EX); REG_KERNEL, a
 * kernel mapping (the entry, LOCK_SH); REG_SHARED, upcd's cache (the
 * .shared entry, LOCK_SH).  Each is refused while another process uses the
 * file another way.  Returns our descriptor of the entry taken,
 * -EWOULDBLOCK when refused (the other process's pid in *@holder), or
 * another negative errno when the registry cannot be used.  shim_lock
 * held.
 */
static int reg_claim(const struct stat *st, int how, pid_t *holder)
{
	int lk = reg_lock_all(), fd, r;

	*holder = 0;
	if (lk < 0)
		return lk;
	if (how == REG_SHARED) {
		fd = reg_take_entry(st, REG_SHARED_SUFFIX, LOCK_SH, holder);
		r = fd >= 0 ? reg_check(st, "", holder) : 0;
		/* when it was last cached under --shared: reg_shared_known() (its owner's to set) */
		if (fd >= 0 && r == 0)
			(void)!futimens(fd, NULL);
	} else {
		fd = reg_take_entry(st, "", how == REG_CACHE ? LOCK_EX : LOCK_SH, holder);
		r = fd >= 0 ? reg_check(st, REG_SHARED_SUFFIX, holder) : 0;
	}
	if (r < 0) {
		reg_drop(fd);
		fd = r;
	}
	k_close(lk);
	return fd;
}

/* "process 1234 (sqlite3)" for the messages. */
static void holder_desc(pid_t pid, char *out, size_t len)
{
	char proc[64], comm[32] = "";
	int fd;
	ssize_t n;

	if (!pid) {
		snprintf(out, len, "another process (not found in /proc/locks)");
		return;
	}
	snprintf(proc, sizeof(proc), "/proc/%d/comm", (int)pid);
	fd = open(proc, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = k_read(fd, comm, sizeof(comm) - 1);
		k_close(fd);
		comm[n > 0 ? n : 0] = '\0';
		comm[strcspn(comm, "\n")] = '\0';
	}
	snprintf(out, len, "process %d%s%s%s", (int)pid, *comm ? " (" : "", comm, *comm ? ")" : "");
}

/*
 * @si is cached by another process: say so in the log, and once per file
 * on standard error, with the way out.  @what: "mmap" or "write".
 */
static void busy_tell(struct shim_inode *si, const char *what)
{
	char who[96], msg[1024];
	int n;

	holder_desc(si->si_holder, who, sizeof(who));
	shim_log("%s of %s refused (EAGAIN): %s caches it (registry entry held)", what, si->si_path, who);
	if (si->si_busy_told)
		return;
	si->si_busy_told = true;
	n = snprintf(msg, sizeof(msg),
		     "upcache-run[%d]: %s is cached by %s, under upcache-run too (%s): two caches of one file "
		     "lose each other's writes, so this process's %s of it fails with EAGAIN (and so do its "
		     "later mmaps and writes of it). Run every process that uses this file without "
		     "upcache-run, or all of them with upcache-run --shared (one cache, upcd's), or make them "
		     "one process (threads, or children forked without exec); upcache-run(1).\n",
		     (int)shim_getpid(), si->si_path, who,
		     opt_shared ? "a cache of its own, not --shared, or a kernel mapping"
				: "a cache of its own, or upcd's with --shared, or a kernel mapping",
		     what);
	(void)!k_write(2, msg, n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1);
}

/*
 * The registry refused @st's file (@err from reg_take, the holder's pid
 * @holder): record it busy (a record made if *@sip is NULL), say so, and
 * return the mmap's error, -EAGAIN as for a locked file (mmap(2)).  A
 * registry that cannot be used refuses too: the shim could not tell
 * whether another process caches the file.  shim_lock held.
 */
static int refuse_busy(struct shim_inode **sip, const struct stat *st, int fd, int err, pid_t holder)
{
	struct shim_inode *si = *sip;

	if (err != -EWOULDBLOCK) {
		static bool told;
		const char *dir = getenv("UPCACHE_RUN_REGISTRY");
		char path[160], msg[768];
		int n;

		fd_path(fd, path, sizeof(path));
		dir = dir && *dir ? dir : REG_DIR_DEFAULT;
		shim_log("mmap of %s refused (EAGAIN): the registry %s cannot be used: %s", path, dir,
			 strerror(-err));
		if (!told) {
			told = true;
			n = snprintf(msg, sizeof(msg),
				     "upcache-run[%d]: the registry %s cannot be used (%s): without it the shim cannot "
				     "tell whether another process caches %s, so its mmap fails with EAGAIN. Set "
				     "UPCACHE_RUN_REGISTRY to a directory every process sharing the files can write; "
				     "upcache-run(1).\n",
				     (int)shim_getpid(), dir, strerror(-err), path);
			(void)!k_write(2, msg, n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1);
		}
		return -EAGAIN;
	}
	if (!si) {
		si = inode_add(st, fd, true);
		if (!si)
			return -EAGAIN;
		si->si_kernel = false;
		atomic_fetch_add_explicit(&nr_routed, 1, memory_order_relaxed);	/* route() must look */
		*sip = si;
	}
	si->si_busy = true;
	si->si_holder = holder;
	busy_tell(si, "mmap");
	return -EAGAIN;
}

/*
 * May this process write @si, a busy file, through the kernel?  Only when
 * the process that cached it is gone (its entry is free): its write-back
 * would overwrite our write, and its cached pages would never see it.
 */
static bool busy_write_ok(struct shim_inode *si)
{
	struct stat st = { .st_dev = si->si_dev, .st_ino = si->si_ino };
	pid_t holder;
	int fd;

	shim_lock_take();
	fd = reg_claim(&st, REG_KERNEL, &holder);
	if (fd >= 0)
		reg_drop(fd);
	else {
		if (holder)
			si->si_holder = holder;
		busy_tell(si, "write");
	}
	shim_lock_drop();
	return fd >= 0;
}

/* ------------------------------------------------------------ write-back */

/*
 * Write every routed file back and make it durable (upc_fdatasync: the
 * library has no "write and wait" without the sync).  For exec, exit, and
 * forks with dirty pages.  @why goes to the log.
 */
static void flush_all(const char *why)
{
	if (!owned())
		return;
	shim_lock_take();
	for (size_t i = 0; i < nr_inodes; i++) {
		struct shim_inode *si = inodes[i];
		int ret;

		if (si->si_kernel || si->si_fd < 0)
			continue;
		ret = upc_fdatasync(cache, si->si_fd);
		if (ret < 0) {
			char msg[320];
			int n = snprintf(msg, sizeof(msg), "upcache-run: write-back of %s before %s failed: %s\n",
					 si->si_path, why, upc_strerror(ret));

			(void)!k_write(2, msg, n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1);
			shim_log("write-back of %s before %s failed: %s", si->si_path, why, upc_strerror(ret));
		}
	}
	shim_lock_drop();
	shim_log("written back before %s", why);
}

static uint64_t dirty_pages(void)
{
	struct upc_stats st = { .sz = sizeof(st) };

	return owned() && upc_stats(cache, &st) == 0 ? st.pages_dirty : 0;
}

static void print_stats(void)
{
	struct upc_stats st = { .sz = sizeof(st) };
	char buf[2048];
	int n;

	if (!opt_stats)
		return;
	n = snprintf(buf, sizeof(buf),
		     "upcache-run[%d]: maps taken %lu, left to the kernel %lu; file I/O calls through the cache %lu, "
		     "through inherited mappings %lu\n",
		     (int)shim_getpid(), atomic_load(&n_maps_taken), atomic_load(&n_maps_kernel),
		     atomic_load(&n_io_routed), atomic_load(&n_io_child));
	if (owned() && upc_stats(cache, &st) == 0)
		n += snprintf(buf + n, sizeof(buf) - n,
			      "upcache-run[%d]: track_mode %s files %u mappings %u children %u mem_limit %llu "
			      "pages_cached %llu pages_dirty %llu faults_missing %llu faults_wp %llu faults_minor %llu "
			      "fill_ios %llu pages_filled %llu ra_pages %llu wp_calls %llu wb_ios %llu "
			      "pages_written %llu wb_gap_pages %llu bytes_written %llu syncs %llu wb_errors %llu read_errors %llu "
			      "pages_evicted %llu\n",
			      (int)shim_getpid(), st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync",
			      st.nr_files, st.nr_mappings, st.nr_children, (unsigned long long)st.mem_limit,
			      (unsigned long long)st.pages_cached, (unsigned long long)st.pages_dirty,
			      (unsigned long long)st.faults_missing, (unsigned long long)st.faults_wp,
			      (unsigned long long)st.faults_minor, (unsigned long long)st.fill_ios,
			      (unsigned long long)st.pages_filled, (unsigned long long)st.ra_pages,
			      (unsigned long long)st.wp_calls, (unsigned long long)st.wb_ios,
			      (unsigned long long)st.pages_written, (unsigned long long)st.wb_gap_pages,
			      (unsigned long long)st.bytes_written, (unsigned long long)st.syncs, (unsigned long long)st.wb_errors,
			      (unsigned long long)st.read_errors, (unsigned long long)st.pages_evicted);
	if (n > (int)sizeof(buf))
		n = sizeof(buf);
	(void)!k_write(2, buf, n);
}

/*
 * UPCACHE_RUN_STATS_FILE: the same counters as print_stats(), one "name
 * value" line each, for a program to read (upc-bench's workload 9).  The
 * file is made new (O_EXCL) and never through a symbolic link
 * (O_NOFOLLOW): a name someone else made is refused, not written through.
 * Failing says so on standard error and changes nothing else.
 */
static void write_stats_file(void)
{
	struct upc_stats st = { .sz = sizeof(st) };
	bool have = owned() && upc_stats(cache, &st) == 0;
	char buf[2048];
	int fd, n;

	if (!stats_file[0] || shim_getpid() != stats_file_pid)
		return;
	n = snprintf(buf, sizeof(buf),
		     "pid %d\nmaps_taken %lu\nmaps_kernel %lu\nio_routed %lu\nio_child %lu\ncache %d\n",
		     (int)shim_getpid(), atomic_load(&n_maps_taken), atomic_load(&n_maps_kernel),
		     atomic_load(&n_io_routed), atomic_load(&n_io_child), have);
	if (have)
		n += snprintf(buf + n, sizeof(buf) - n,
			      "track_mode %s\nnr_files %u\nnr_mappings %u\nnr_children %u\nmem_limit %llu\n"
			      "pages_cached %llu\npages_dirty %llu\npages_writeback %llu\npages_pinned %llu\n"
			      "faults_missing %llu\nfaults_wp %llu\nfaults_minor %llu\n"
			      "fill_ios %llu\npages_filled %llu\nra_pages %llu\nra_max_window %llu\n"
			      "wp_calls %llu\nwb_ios %llu\npages_written %llu\nbytes_written %llu\nsyncs %llu\n"
			      "wb_errors %llu\nread_errors %llu\npages_evicted %llu\nmeta_bytes %llu\n"
			      "pages_active %llu\nreclaim_passes %llu\nwb_gap_pages %llu\n",
			      st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync", st.nr_files, st.nr_mappings,
			      st.nr_children, (unsigned long long)st.mem_limit, (unsigned long long)st.pages_cached,
			      (unsigned long long)st.pages_dirty, (unsigned long long)st.pages_writeback,
			      (unsigned long long)st.pages_pinned, (unsigned long long)st.faults_missing,
			      (unsigned long long)st.faults_wp, (unsigned long long)st.faults_minor,
			      (unsigned long long)st.fill_ios, (unsigned long long)st.pages_filled,
			      (unsigned long long)st.ra_pages, (unsigned long long)st.ra_max_window,
			      (unsigned long long)st.wp_calls, (unsigned long long)st.wb_ios,
			      (unsigned long long)st.pages_written, (unsigned long long)st.bytes_written,
			      (unsigned long long)st.syncs, (unsigned long long)st.wb_errors,
			      (unsigned long long)st.read_errors, (unsigned long long)st.pages_evicted,
			      (unsigned long long)st.meta_bytes, (unsigned long long)st.pages_active,
			      (unsigned long long)st.reclaim_passes, (unsigned long long)st.wb_gap_pages);
	if (n > (int)sizeof(buf))
		n = sizeof(buf);
	fd = open(stats_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || k_write(fd, buf, n) != n) {
		char msg[PATH_MAX + 128];
		int m = snprintf(msg, sizeof(msg), "upcache-run[%d]: UPCACHE_RUN_STATS_FILE=%s: %s\n",
				 (int)shim_getpid(), stats_file, strerror(errno));

		(void)!k_write(2, msg, m < (int)sizeof(msg) ? m : (int)sizeof(msg) - 1);
	}
	if (fd >= 0)
		k_close(fd);
}

static atomic_int exiting;

static void shim_exit(const char *why)
{
	if (atomic_exchange(&exiting, 1))
		return;
	if (owned()) {
		/* the registry entries stay held until the process is gone (registry, above) */
		flush_all(why);
		print_stats();
	} else if (!cache) {
		print_stats();
	}
	write_stats_file();
}

__attribute__((destructor)) static void shim_fini(void)
{
	shim_exit("exit");
}

SHIM_API void _exit(int status)
{
	shim_exit("_exit");
	syscall(SYS_exit_group, status);
	__builtin_unreachable();
}

SHIM_API void _Exit(int status)
{
	shim_exit("_Exit");
	syscall(SYS_exit_group, status);
	__builtin_unreachable();
}

/* ------------------------------------------------------------ mmap */

static int upc_prot(int prot)
{
	if (prot & ~(PROT_READ | PROT_WRITE))
		return -1;
	if (prot & PROT_WRITE)
		return PROT_READ | PROT_WRITE;
	return prot;
}

/* A file system of memory: nothing to cache, its pages are shared between processes already. */
static bool memory_fs(int fd)
{
	struct statfs sfs;

	return fstatfs(fd, &sfs) == 0 &&
	       (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC || sfs.f_type == HUGETLBFS_MAGIC ||
		sfs.f_type == PROC_SUPER_MAGIC || sfs.f_type == SYSFS_MAGIC);
}

/* Why a MAP_SHARED mapping of @fd is left to the kernel, or NULL to take it. */
static const char *leave_reason(int fd, int prot, int flags, const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "not a regular file";
	if (memory_fs(fd))
		return "memory file system (shared memory between processes, nothing to cache)";
	if (prot & PROT_EXEC)
		return "PROT_EXEC";
	if (upc_prot(prot & ~PROT_EXEC) < 0)
		return "unsupported protection bits";
#ifndef UPC_MAP_FIXED
	if (flags & MAP_FIXED)
		return "MAP_FIXED (the library cannot map at a given address yet)";
#endif
#ifndef UPC_MAP_FIXED_NOREPLACE
	if (flags & MAP_FIXED_NOREPLACE)
		return "MAP_FIXED_NOREPLACE (the library cannot map at a given address yet)";
#endif
	if (flags & (MAP_HUGETLB | MAP_SYNC | MAP_GROWSDOWN | MAP_32BIT | MAP_LOCKED))
		return "MAP_HUGETLB, MAP_SYNC, MAP_GROWSDOWN, MAP_32BIT or MAP_LOCKED";
	if (cache && shim_getpid() != cache_pid)
		return "a forked child (only the process that made the cache may map)";
	return NULL;
}

static long unmap_piece(struct shim_region *r, uintptr_t s, uintptr_t e, long arg)
{
	long ret = 0;

	if (owned())
		ret = upc_unmap(cache, (void *)s, e - s);
	else if (k_munmap((void *)s, e - s) < 0)
		ret = -errno;
	if (ret == 0) {
		region_split_at(s);
		region_split_at(e);
		region_remove(s, e);
	}
	return ret;
}

static long unmap_gap(struct shim_region *r, uintptr_t s, uintptr_t e, long arg)
{
	return arg ? 0 : (k_munmap((void *)s, e - s) < 0 ? -errno : 0);
}

/* Unmap the upcache pieces of [s, e) (for a MAP_FIXED of the kernel over them). shim_lock held. */
static long unmap_upcache(uintptr_t s, uintptr_t e)
{
	return for_each_piece(s, e, unmap_piece, unmap_gap, 1);
}

static void *kernel_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if ((flags & MAP_FIXED) && len && atomic_load_explicit(&nr_regions_live, memory_order_relaxed) && !in_shim) {
		shim_lock_take();
		unmap_upcache((uintptr_t)addr, (uintptr_t)addr + PAGE_UP(len));
		shim_lock_drop();
	}
	return k_mmap(addr, len, prot, flags, fd, off);
}

static void *take_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	unsigned int uflags = (flags & MAP_POPULATE) ? UPC_MAP_POPULATE : 0;
	struct shim_region reg;
	struct shim_inode *si;
	const char *why;
	char path[160];
	struct stat st;
	void *a = NULL;
	int ret, regfd = -1, maxprot, mapfd;
	pid_t holder;

	if (fstat(fd, &st) < 0)
		return kernel_mmap(addr, len, prot, flags, fd, off);
	shim_lock_take();
	si = inode_find(st.st_dev, st.st_ino);
	why = leave_reason(fd, prot, flags, &st);
	if (!why && si && si->si_kernel)
		why = "the file already has a shared mapping of the kernel";
	if (!why && !cache_get()) {
		if (opt_shared) {
			/* no daemon: no kernel mapping either, a second cache of what others share (cache_get) */
			shim_lock_drop();
			fd_path(fd, path, sizeof(path));
			shim_log("mmap of %s refused (ENODEV): --shared, and no cache from upcd", path);
			errno = ENODEV;
			return MAP_FAILED;
		}
		why = "no cache";
	}
	if (why) {
		if (si && !si->si_kernel && !si->si_busy && S_ISREG(st.st_mode)) {
			/* A second page cache of a routed file would lose writes. */
			shim_lock_drop();
			shim_log("mmap of %s refused (EACCES): %s, and the file is already the cache's",
				 si->si_path, why);
			errno = EACCES;
			return MAP_FAILED;
		}
		goto kernel;
	}
	if (len == 0 || (off & (SHIM_PAGE - 1))) {
		shim_lock_drop();
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (!si || si->si_busy) {
		/* the file's first upcache mapping here: no other process may cache it (registry) */
		regfd = reg_claim(&st, opt_shared ? REG_SHARED : REG_CACHE, &holder);
		if (regfd < 0) {
			ret = refuse_busy(&si, &st, fd, regfd, holder);
			shim_lock_drop();
			errno = -ret;
			return MAP_FAILED;
		}
	}
#ifdef UPC_MAP_HINT
	if (addr && !(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))) {
		uflags |= UPC_MAP_HINT;
		a = addr;
	}
#endif
#ifdef UPC_MAP_FIXED_NOREPLACE
	if (flags & MAP_FIXED_NOREPLACE) {
		uflags |= UPC_MAP_FIXED_NOREPLACE;
		a = addr;
	}
#endif
#ifdef UPC_MAP_FIXED
	if ((flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE)) {
		if ((uintptr_t)addr & (SHIM_PAGE - 1)) {
			shim_lock_drop();
			errno = EINVAL;
			return MAP_FAILED;
		}
		/* what was there goes, upcache records included */
		unmap_upcache((uintptr_t)addr, (uintptr_t)addr + PAGE_UP(len));
		uflags |= UPC_MAP_FIXED;
		a = addr;
	}
#endif
	maxprot = (k_fcntl(fd, F_GETFL, 0) & O_ACCMODE) == O_RDWR ? PROT_READ | PROT_WRITE : PROT_READ;
	mapfd = fd;
	if (opt_shared && maxprot == PROT_READ && !(prot & PROT_WRITE) && si && !si->si_busy &&
	    si->si_accmode == O_RDWR) {
		/*
		 * upcd serves a mapping of a read-only descriptor through a
		 * private mapping of its memfd (the kernel registers with
		 * userfaultfd only mappings that may be made writable,
		 * VM_MAYWRITE), filled through the daemon's staging mapping and
		 * a second fault per page (upcd(8), SECURITY).  This process
		 * holds a read-write descriptor of the file already (LMDB
		 * reopening an environment read-only): the same read-only
		 * mapping through it, shared, sr_maxprot keeping mprotect to
		 * what the program's descriptor allows.
		 */
		mapfd = si->si_fd;
	}
	ret = upc_map(cache, mapfd, off, PAGE_UP(len), upc_prot(prot), uflags, &a);
	if (ret < 0) {
		if (si && !si->si_busy) {	/* routed already: no kernel mapping of it */
			shim_lock_drop();
			shim_log("mmap of %s failed: upc_map: %s", si->si_path, upc_strerror(ret));
			return errno = -ret, MAP_FAILED;
		}
		fd_path(fd, path, sizeof(path));
		shim_log("upc_map of %s failed (%s): trying the kernel", path, upc_strerror(ret));
		why = "upc_map failed";
		goto kernel;
	}
	if (!si || si->si_busy) {
		si = si ? inode_route(si, fd) : inode_add(&st, fd, false);
		if (si) {
			si->si_regfd = regfd;
			regfd = -1;
		}
	} else if (si->si_accmode == O_RDONLY && (k_fcntl(fd, F_GETFL, 0) & O_ACCMODE) == O_RDWR) {
		int nfd = fd_dup_high(fd);	/* a descriptor that can remap writable */

		/* the old one stays open: another thread may be using its number */
		if (nfd >= 0) {
			si->si_fd = nfd;
			si->si_accmode = O_RDWR;
		}
	}
	reg = (struct shim_region){ .sr_start = (uintptr_t)a, .sr_end = (uintptr_t)a + PAGE_UP(len),
				    .sr_off = off, .sr_prot = upc_prot(prot), .sr_maxprot = maxprot, .sr_ino = si };
	if (!si || region_insert(&reg) < 0) {
		upc_unmap(cache, a, PAGE_UP(len));
		reg_drop(regfd);
		shim_lock_drop();
		errno = ENOMEM;
		return MAP_FAILED;
	}
	shim_lock_drop();
	atomic_fetch_add(&n_maps_taken, 1);
	shim_log("mmap of %s (offset %lld, length %zu, %s): upcache mapping at %p", si->si_path, (long long)off,
		 len, prot & PROT_WRITE ? "read-write" : prot ? "read-only" : "no access", a);
	return a;

kernel:
	{
		void *k;
		int err;

		if (regfd >= 0 && opt_shared) {
			/* the .shared entry we took to cache the file: the kernel maps it instead, if it may */
			reg_drop(regfd);
			regfd = -1;
		}
		if (regfd >= 0) {
			/* we took the entry to cache the file; the kernel maps it instead */
			(void)!flock(regfd, LOCK_SH);
		} else if (S_ISREG(st.st_mode) && (!si || si->si_busy) && !memory_fs(fd)) {
			/* a second page cache of a file another process caches would lose writes */
			regfd = reg_claim(&st, REG_KERNEL, &holder);
			if (regfd == -EWOULDBLOCK) {
				ret = refuse_busy(&si, &st, fd, regfd, holder);
				shim_lock_drop();
				errno = -ret;
				return MAP_FAILED;
			}
			if (regfd < 0)
				shim_log("registry not usable (%s): the kernel mapping is not registered",
					 strerror(-regfd));
		}
		k = k_mmap(addr, len, prot, flags, fd, off);
		err = errno;
		if (k != MAP_FAILED) {
			if (S_ISREG(st.st_mode) && !si)
				si = inode_add(&st, fd, true);
			else if (si && si->si_busy)
				busy_to_kernel(si);
			if (si && si->si_regfd < 0 && regfd >= 0) {
				si->si_regfd = regfd;
				regfd = -1;
			}
			atomic_fetch_add(&n_maps_kernel, 1);
		}
		if (regfd >= 0)
			reg_drop(regfd);
		shim_lock_drop();
		if (S_ISREG(st.st_mode)) {
			fd_path(fd, path, sizeof(path));
			shim_log("mmap of %s (offset %lld, length %zu) left to the kernel: %s%s", path,
				 (long long)off, len, why, k == MAP_FAILED ? " (and the kernel failed it)" : "");
		}
		errno = err;
		return k;
	}
}

SHIM_API void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	int type = flags & MAP_TYPE;

	if (fd < 0 || (flags & MAP_ANONYMOUS) || (type != MAP_SHARED && type != MAP_SHARED_VALIDATE) ||
	    in_shim || resolving) {
		if (type == MAP_PRIVATE && fd >= 0 && !(flags & MAP_ANONYMOUS) && !in_shim && log_fd >= 0) {
			char path[160];

			fd_path(fd, path, sizeof(path));
			shim_log("mmap of %s left to the kernel: private mapping", path);
		}
		return kernel_mmap(addr, len, prot, flags, fd, off);
	}
	return take_mmap(addr, len, prot, flags, fd, off);
}

SHIM_API void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

SHIM_API int munmap(void *addr, size_t len)
{
	uintptr_t s = (uintptr_t)addr;
	long ret;

	if (!atomic_load_explicit(&nr_regions_live, memory_order_relaxed) || in_shim)
		return k_munmap(addr, len);
	if ((s & (SHIM_PAGE - 1)) || len == 0)
		return set_errno(-EINVAL);
	shim_lock_take();
	ret = for_each_piece(s, s + PAGE_UP(len), unmap_piece, unmap_gap, 0);
	shim_lock_drop();
	return ret < 0 ? set_errno(ret) : 0;
}

static long protect_piece(struct shim_region *r, uintptr_t s, uintptr_t e, long prot)
{
	long ret;
	int p = upc_prot((int)prot & ~(PROT_GROWSDOWN | PROT_GROWSUP));

	if (p < 0)
		return -EINVAL;	/* PROT_EXEC on an upcache mapping: not supported (upcache-run(1)) */
	if (p & ~r->sr_maxprot)
		return -EACCES;	/* PROT_WRITE on a mapping of a read-only descriptor, as mprotect(2) */
	if (!owned())
		return k_mprotect((void *)s, e - s, p) < 0 ? -errno : 0;
	ret = upc_protect(cache, (void *)s, e - s, p);
	if (ret == 0 && region_split_at(s) == 0 && region_split_at(e) == 0)
		for (size_t i = region_first(s); i < nr_regions && regions[i].sr_start < e; i++)
			regions[i].sr_prot = p;
	return ret;
}

static long protect_gap(struct shim_region *r, uintptr_t s, uintptr_t e, long prot)
{
	return k_mprotect((void *)s, e - s, (int)prot) < 0 ? -errno : 0;
}

SHIM_API int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t s = (uintptr_t)addr;
	long ret;

	if (!atomic_load_explicit(&nr_regions_live, memory_order_relaxed) || in_shim)
		return k_mprotect(addr, len, prot);
	if (s & (SHIM_PAGE - 1))
		return set_errno(-EINVAL);
	if (len == 0)
		return 0;
	shim_lock_take();
	ret = for_each_piece(s, s + PAGE_UP(len), protect_piece, protect_gap, prot);
	shim_lock_drop();
	return ret < 0 ? set_errno(ret) : 0;
}

static long sync_piece(struct shim_region *r, uintptr_t s, uintptr_t e, long flags)
{
	long ret;

	if (!owned())	/* a child's inherited mapping: its pages are the parent's to write */
		return k_msync((void *)s, e - s, (int)flags) < 0 ? -errno : 0;
	ret = upc_msync(cache, (void *)s, e - s, (flags & MS_SYNC) ? UPC_MS_SYNC : UPC_MS_ASYNC);
	return ret > 0 ? 0 : ret;
}

static long sync_gap(struct shim_region *r, uintptr_t s, uintptr_t e, long flags)
{
	return k_msync((void *)s, e - s, (int)flags) < 0 ? -errno : 0;
}

SHIM_API int msync(void *addr, size_t len, int flags)
{
	uintptr_t s = (uintptr_t)addr;
	long ret;

	if (!atomic_load_explicit(&nr_regions_live, memory_order_relaxed) || in_shim)
		return k_msync(addr, len, flags);
	if ((s & (SHIM_PAGE - 1)) || (flags & ~(MS_SYNC | MS_ASYNC | MS_INVALIDATE)) ||
	    ((flags & MS_SYNC) && (flags & MS_ASYNC)))
		return set_errno(-EINVAL);
	if (len == 0)
		return 0;
	shim_lock_take();
	ret = for_each_piece(s, s + PAGE_UP(len), sync_piece, sync_gap, flags);
	shim_lock_drop();
	return ret < 0 ? set_errno(ret) : 0;
}

static long advise_piece(struct shim_region *r, uintptr_t s, uintptr_t e, long advice)
{
	int adv;

	switch (advice) {
	case MADV_NORMAL: adv = UPC_ADV_NORMAL; break;
	case MADV_RANDOM: adv = UPC_ADV_RANDOM; break;
	case MADV_SEQUENTIAL: adv = UPC_ADV_SEQUENTIAL; break;
	case MADV_WILLNEED: adv = UPC_ADV_WILLNEED; break;
	case MADV_DONTNEED: adv = UPC_ADV_DONTNEED; break;
	case MADV_FREE:
		return -EINVAL;		/* as the kernel: MADV_FREE is for private anonymous memory */
	case MADV_REMOVE:
		/* free the file's blocks and pages: a hole punched through the cache */
		if (!owned())
			return -EINVAL;
		if (!(r->sr_prot & PROT_WRITE))
			return -EACCES;
		return upc_fallocate(cache, r->sr_ino->si_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				     r->sr_off + (off_t)(s - r->sr_start), (off_t)(e - s));
	case MADV_DOFORK:
	case MADV_COLD:
	case MADV_PAGEOUT:
		return 0;	/* the cache's to decide (async tracking relies on MADV_DONTFORK) */
	default:
		return k_madvise((void *)s, e - s, (int)advice) < 0 ? -errno : 0;
	}
	if (!owned())
		return adv == UPC_ADV_DONTNEED && k_madvise((void *)s, e - s, MADV_DONTNEED) < 0 ? -errno : 0;
	return upc_advise(cache, (void *)s, e - s, adv);
}

static long advise_gap(struct shim_region *r, uintptr_t s, uintptr_t e, long advice)
{
	return k_madvise((void *)s, e - s, (int)advice) < 0 ? -errno : 0;
}

SHIM_API int madvise(void *addr, size_t len, int advice)
{
	uintptr_t s = (uintptr_t)addr;
	long ret;

	if (!atomic_load_explicit(&nr_regions_live, memory_order_relaxed) || in_shim)
		return k_madvise(addr, len, advice);
	if (s & (SHIM_PAGE - 1))
		return set_errno(-EINVAL);
	if (len == 0)
		return 0;
	shim_lock_take();
	ret = for_each_piece(s, s + PAGE_UP(len), advise_piece, advise_gap, advice);
	shim_lock_drop();
	return ret < 0 ? set_errno(ret) : 0;
}

SHIM_API int posix_madvise(void *addr, size_t len, int advice)
{
	/* POSIX_MADV_DONTNEED is a no-op in glibc, as here */
	if (advice == POSIX_MADV_DONTNEED)
		return 0;
	return madvise(addr, len, advice) < 0 ? errno : 0;
}

/*
 * mremap of an upcache mapping: shrink by unmapping the tail; grow in
 * place by mapping the next part of the file right after it (when the
 * library can map at an address and nothing is there); otherwise, with
 * MREMAP_MAYMOVE, a new mapping of the whole range and the old one
 * unmapped.  The file stays in the cache throughout, so its pages stay
 * cached and dirty ones stay dirty.  shim_lock held.
 */
static void *remap_upcache(struct shim_region *r, uintptr_t old, size_t oldlen, size_t newlen, int flags,
			   void *new_addr)
{
	struct shim_inode *si = r->sr_ino;
	off_t off = r->sr_off + (off_t)(old - r->sr_start);
	int prot = r->sr_prot, maxprot = r->sr_maxprot;
	struct shim_region reg;
	unsigned int uflags = 0;
	void *a = NULL;
	int ret;

	if (old + oldlen > r->sr_end)
		return errno = EFAULT, MAP_FAILED;	/* not within one mapping */
	if (!(flags & MREMAP_FIXED) && newlen <= oldlen && oldlen) {
		if (newlen < oldlen) {
			ret = upc_unmap(cache, (void *)(old + newlen), oldlen - newlen);
			if (ret < 0)
				return errno = -ret, MAP_FAILED;
			region_split_at(old + newlen);
			region_split_at(old + oldlen);
			region_remove(old + newlen, old + oldlen);
		}
		return (void *)old;
	}
/*
 * Growing in place leaves two regions (and two library mappings) where
 * mremap(2) leaves one, and a later mremap or munmap of the whole range is
 * refused (EFAULT: "not within one mapping"; tests/clients/test_fsx.sh,
 * shrink after growth).  Off until regions of one file that touch are
 * merged, here and in the library; until then a growth moves.
 */
#if defined(UPC_MAP_FIXED_NOREPLACE) && defined(SHIM_REMAP_GROW_IN_PLACE)
	if (!(flags & MREMAP_FIXED) && oldlen && old + oldlen == r->sr_end) {
		a = (void *)(old + oldlen);
		ret = upc_map(cache, si->si_fd, off + (off_t)oldlen, newlen - oldlen, prot, UPC_MAP_FIXED_NOREPLACE, &a);
		if (ret == 0) {
			reg = (struct shim_region){ .sr_start = old + oldlen, .sr_end = old + newlen,
						    .sr_off = off + (off_t)oldlen, .sr_prot = prot,
						    .sr_maxprot = maxprot, .sr_ino = si };
			if (region_insert(&reg) == 0) {
				shim_log("mremap of %s: grown in place at %p to %zu bytes", si->si_path, (void *)old,
					 newlen);
				return (void *)old;
			}
			upc_unmap(cache, a, newlen - oldlen);
		}
	}
#endif
	if (!(flags & MREMAP_MAYMOVE))
		return errno = ENOMEM, MAP_FAILED;
	if (flags & MREMAP_FIXED) {
#ifdef UPC_MAP_FIXED
		if ((uintptr_t)new_addr & (SHIM_PAGE - 1))
			return errno = EINVAL, MAP_FAILED;
		unmap_upcache((uintptr_t)new_addr, (uintptr_t)new_addr + newlen);
		r = region_at(old);	/* the tables moved */
		if (!r)
			return errno = EINVAL, MAP_FAILED;
		uflags = UPC_MAP_FIXED;
		a = new_addr;
#else
		shim_log("mremap of %s with MREMAP_FIXED: not supported yet (EINVAL)", si->si_path);
		return errno = EINVAL, MAP_FAILED;
#endif
	}
	ret = upc_map(cache, si->si_fd, off, newlen, prot, uflags, &a);
	if (ret < 0)
		return errno = -ret, MAP_FAILED;
	if (oldlen) {
		ret = upc_unmap(cache, (void *)old, oldlen);
		if (ret < 0) {
			upc_unmap(cache, a, newlen);
			return errno = -ret, MAP_FAILED;
		}
		region_split_at(old);
		region_split_at(old + oldlen);
		region_remove(old, old + oldlen);
	}
	reg = (struct shim_region){ .sr_start = (uintptr_t)a, .sr_end = (uintptr_t)a + newlen, .sr_off = off,
				    .sr_prot = prot, .sr_maxprot = maxprot, .sr_ino = si };
	if (region_insert(&reg) < 0) {
		upc_unmap(cache, a, newlen);
		return errno = ENOMEM, MAP_FAILED;
	}
	shim_log("mremap of %s: moved from %p to %p, %zu bytes", si->si_path, (void *)old, a, newlen);
	return a;
}

SHIM_API void *mremap(void *old, size_t oldlen, size_t newlen, int flags, ...)
{
	void *new_addr = NULL, *ret;
	struct shim_region *r;

	if (flags & MREMAP_FIXED) {
		va_list ap;

		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	if (!atomic_load_explicit(&nr_regions_live, memory_order_relaxed) || in_shim)
		return k_mremap(old, oldlen, newlen, flags, new_addr);
	shim_lock_take();
	r = region_at((uintptr_t)old);
	if (!r || !owned()) {
		if (r) {	/* a child's inherited mapping moves out of the cache's view (upcache(7), FORK) */
			uintptr_t s = (uintptr_t)old, e = s + PAGE_UP(oldlen);

			region_split_at(s);
			region_split_at(e);
			region_remove(s, e);
		} else if (flags & MREMAP_FIXED)
			unmap_upcache((uintptr_t)new_addr, (uintptr_t)new_addr + PAGE_UP(newlen));
		shim_lock_drop();
		return k_mremap(old, oldlen, newlen, flags, new_addr);
	}
	if (((uintptr_t)old & (SHIM_PAGE - 1)) || newlen == 0 || (flags & MREMAP_DONTUNMAP) ||
	    (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)) ||
	    ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE))) {
		shim_lock_drop();
		errno = EINVAL;
		return MAP_FAILED;
	}
	ret = remap_upcache(r, (uintptr_t)old, PAGE_UP(oldlen), PAGE_UP(newlen), flags, new_addr);
	shim_lock_drop();
	return ret;
}

/* ------------------------------------------------------------ file I/O */

/*
 * fstat(2) for the I/O paths: the file's identity, type and size, without
 * its timestamps.  A stat that returns the ctime makes the file's next
 * change take a fine-grained time (multigrain timestamps, Linux 6.13), so
 * with one on every call every write changed the inode and every
 * fdatasync(2) wrote it: SQLite's WAL commits paid a synchronous inode
 * write each (lib/syscall.c, sys_fstat_id(), has the numbers).
 */
static int io_fstat(int fd, struct stat *st)
{
	int ret = sys_fstat_id(fd, st);

	return ret < 0 ? set_errno(ret) : 0;
}

enum { R_KERNEL, R_CACHE, R_CHILD, R_REFUSED };

/*
 * Has a process under --shared cached the file @fd (@st) since it was
 * made?  Its .shared entry exists, and was claimed (reg_claim touches it)
 * after the file's birth: an inode number is used again, and the entry of
 * a deleted file would route its successor (SQLite's temporary files were,
 * and every sort went through the daemon).  A file system without birth
 * times: the entry alone.
 */
static bool reg_shared_known(int fd, const struct stat *st)
{
	struct statx bx;
	struct stat sb;
	char name[80];
	int dfd = reg_dir();

	reg_name(st, REG_SHARED_SUFFIX, name, sizeof(name));
	if (dfd < 0 || fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &bx) < 0 || !(bx.stx_mask & STATX_BTIME))
		return true;
	return sb.st_mtim.tv_sec > bx.stx_btime.tv_sec ||
	       (sb.st_mtim.tv_sec == bx.stx_btime.tv_sec && sb.st_mtim.tv_nsec >= (long)bx.stx_btime.tv_nsec);
}

/*
 * Shared mode: a file's I/O is routed from its first read or write, not
 * only from its first mapping, once any process under --shared has cached
 * it (its .shared entry in the registry, which stays).  upcd's cache
 * outlives the processes that use it: the pages an earlier process wrote
 * (upc_pwrite, a mapping) stay there, dirty until upcd writes them back,
 * and a process that read or wrote the file through the kernel before it
 * mapped it read what the file had before them, and wrote under them: its
 * write was undone by their write-back, or its mapping then served upcd's
 * older pages.  SQLite, which writes with pwrite(2) in a transaction and
 * maps the database only to read, corrupted its database so in 16 runs of
 * 17 (a helper's run of SQLite under upcache-run --shared, upcd
 * --mem-limit=8M).  Only such files: every file a program wrote would
 * otherwise cost a descriptor and a registry entry for the life of the
 * process (SQLite's rollback journal is a new file a transaction: review
 * of 25aedd7), and a program that forks would have made its cache before
 * its children (theirs would be the kernel's mappings).  Not a write-only
 * descriptor (the store reads what it caches), nor O_APPEND (upcache-run(1),
 * BUGS), nor a file on a memory filesystem; a file another process caches
 * or maps through the kernel (the registry) stays the kernel's.  Returns
 * the record, routed, or NULL.  shim_lock held.
 */
static struct shim_inode *shared_route_io(int fd, const struct stat *st)
{
	struct shim_inode *si;
	pid_t holder;
	int fl = k_fcntl(fd, F_GETFL, 0), regfd;

	if (cache_failed || fl < 0 || (fl & O_ACCMODE) == O_WRONLY || (fl & O_APPEND) ||
	    !reg_shared_known(fd, st) || memory_fs(fd) || !cache_get())
		return NULL;
	regfd = reg_claim(st, REG_SHARED, &holder);
	if (regfd < 0)
		return NULL;
	si = inode_add(st, fd, false);
	if (!si) {
		reg_drop(regfd);
		return NULL;
	}
	si->si_regfd = regfd;
	shim_log("%s: read and written through upcd from its first I/O (--shared)", si->si_path);
	return si;
}

/*
 * Where I/O on @fd goes: the kernel (nothing is mapped, not a regular file,
 * a file that was never mapped), the cache (a routed file, in the process
 * that made the cache), or a forked child's inherited mappings; nowhere
 * (R_REFUSED, EAGAIN) for a write (@wr) of a file another process caches
 * (busy_write_ok).  The cost when a file is mapped: one statx per call on
 * any descriptor (io_fstat()).
 */
static int route_how(int fd, struct shim_inode **sip, bool wr)
{
	struct shim_inode *si;
	struct stat st;

	if ((!opt_shared && !atomic_load_explicit(&nr_routed, memory_order_relaxed)) || in_shim || resolving)
		return R_KERNEL;
	if (io_fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return R_KERNEL;
	shim_lock_take();
	si = inode_find(st.st_dev, st.st_ino);
	if (!si && opt_shared && (!cache_pid || owned()))	/* not a forked child of the cache's process */
		si = shared_route_io(fd, &st);
	shim_lock_drop();
	if (!si || si->si_kernel)
		return R_KERNEL;
	if (si->si_busy)
		return !wr || busy_write_ok(si) ? R_KERNEL : R_REFUSED;
	*sip = si;
	if (owned()) {
		atomic_fetch_add_explicit(&n_io_routed, 1, memory_order_relaxed);
		return R_CACHE;
	}
	return R_CHILD;
}

static int route(int fd, struct shim_inode **sip)
{
	return route_how(fd, sip, false);
}

static int route_write(int fd, struct shim_inode **sip)
{
	return route_how(fd, sip, true);
}

static void child_log_once(struct shim_inode *si, const char *what)
{
	if (si->si_child_logged)
		return;
	si->si_child_logged = true;
	shim_log("forked child: %s on %s goes to the kernel (not coherent with the cache of process %d)", what,
		 si->si_path, (int)cache_pid);
}

/*
 * A forked child's read or write of a routed file: through its inherited
 * mappings, which the parent's engine serves (synchronous tracking), when
 * one covers the whole range within the file's size; a write never
 * extends the file this way.  *handled false: the caller goes to the
 * kernel.
 */
static ssize_t child_rw(struct shim_inode *si, int fd, void *buf, size_t n, off_t off, bool wr, bool *handled)
{
	const struct shim_region *found = NULL;
	struct stat st;

	*handled = false;
	if (!children_served || off < 0 || io_fstat(fd, &st) < 0)
		goto kernel;
	if (!wr && off >= st.st_size) {
		*handled = true;
		return 0;
	}
	if (!wr && n > (size_t)(st.st_size - off))
		n = st.st_size - off;
	if (wr && (off_t)(off + n) > st.st_size)
		goto kernel;
	if (n == 0) {
		*handled = true;
		return 0;
	}
	pthread_mutex_lock(&shim_lock);
	for (size_t i = 0; i < nr_regions && !found; i++) {
		const struct shim_region *r = &regions[i];

		if (r->sr_ino == si && r->sr_off <= off &&
		    (uint64_t)(off + n) <= (uint64_t)r->sr_off + (r->sr_end - r->sr_start) &&
		    (r->sr_prot & (wr ? PROT_WRITE : PROT_READ)))
			found = r;
	}
	if (found) {
		char *p = (char *)found->sr_start + (off - found->sr_off);

		if (wr)
			memcpy(p, buf, n);
		else
			memcpy(buf, p, n);
	}
	pthread_mutex_unlock(&shim_lock);
	if (found) {
		*handled = true;
		atomic_fetch_add_explicit(&n_io_child, 1, memory_order_relaxed);
		return (ssize_t)n;
	}
kernel:
	child_log_once(si, wr ? "a write" : "a read");
	return 0;
}

/*
 * The descriptor a write-type call hands the cache.  The cache reads what
 * it caches, so it wants O_RDWR where the kernel takes O_WRONLY: once the
 * program's own descriptor has passed the kernel's check (it is open for
 * writing), ours is used - reopened read-write if it was not already
 * (that needs read permission on the file: upcache-run(1)).
 */
static int write_fd(int fd, struct shim_inode *si)
{
	int fl = k_fcntl(fd, F_GETFL, 0), ret = fd;

	if (fl < 0 || (fl & O_ACCMODE) != O_WRONLY)
		return fd;
	pthread_mutex_lock(&shim_lock);
	if (si->si_accmode != O_RDWR) {
		char proc[64];
		int nfd, hfd;

		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		nfd = open(proc, O_RDWR | O_CLOEXEC);
		if (nfd >= 0) {
			hfd = fd_dup_high(nfd);
			k_close(nfd);
			if (hfd >= 0) {
				si->si_fd = hfd;	/* the old one stays open, as in take_mmap() */
				si->si_accmode = O_RDWR;
			}
		}
	}
	if (si->si_accmode == O_RDWR)
		ret = si->si_fd;
	pthread_mutex_unlock(&shim_lock);
	return ret;
}

/* One positional transfer on a routed file; bytes or a negative errno. */
static ssize_t route_rw(int rt, struct shim_inode *si, int fd, void *buf, size_t n, off_t off, bool wr)
{
	bool handled;
	ssize_t r;

	if (rt == R_CACHE)
		return wr ? upc_pwrite(cache, fd, buf, n, off) : upc_pread(cache, fd, buf, n, off);
	r = child_rw(si, fd, buf, n, off, wr, &handled);
	if (handled)
		return r;
	r = wr ? k_pwrite(fd, buf, n, off) : k_pread(fd, buf, n, off);
	return r < 0 ? -errno : r;
}

/*
 * Where a write goes: @off, or the file position (@off -1), or the end of
 * file for an O_APPEND descriptor (even for pwrite, as Linux does).
 * Returns the offset or a negative errno.
 */
static off_t write_pos(int fd, off_t off, bool *positioned)
{
	int fl = k_fcntl(fd, F_GETFL, 0);
	struct stat st;

	if (fl < 0)
		return -errno;
	if ((fl & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	*positioned = off == -1;
	if (fl & O_APPEND)
		return io_fstat(fd, &st) < 0 ? -errno : st.st_size;
	if (off == -1)
		off = k_lseek(fd, 0, SEEK_CUR);
	return off < 0 ? -errno : off;
}

/* Vectored (or, with one element, plain) transfer; @off -1: at the file position. */
static ssize_t vec_rw(int rt, struct shim_inode *si, int fd, const struct iovec *iov, int cnt, off_t off,
		      bool wr, int rwf)
{
	bool positioned = off == -1;
	size_t total = 0;
	ssize_t done = 0;
	off_t pos;
	int cfd;

	if (cnt < 0 || cnt > IOV_MAX)
		return -EINVAL;
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - total)
			return -EINVAL;
		total += iov[i].iov_len;
	}
	if (!positioned && off < 0)
		return -EINVAL;
	if (wr)
		pos = write_pos(fd, off, &positioned);
	else
		pos = positioned ? k_lseek(fd, 0, SEEK_CUR) : off;
	if (pos < 0)
		return wr ? pos : -errno;
	cfd = wr && rt == R_CACHE ? write_fd(fd, si) : fd;
	for (int i = 0; i < cnt; i++) {
		ssize_t r;

		if (!iov[i].iov_len)
			continue;
		r = route_rw(rt, si, cfd, iov[i].iov_base, iov[i].iov_len, pos + done, wr);
		if (r < 0) {
			if (!done)
				return r;
			break;
		}
		done += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	if (!total && !wr && rt == R_CACHE) {
		/* a read of nothing still checks the descriptor, as read(2) */
		ssize_t r = upc_pread(cache, fd, NULL, 0, pos);

		if (r < 0)
			return r;
	}
	/*
	 * Durability as write(2) gives it: the library honours O_DSYNC and
	 * O_SYNC of the descriptor it is handed, so what is left is a write
	 * through our read-write stand-in for an O_WRONLY one (write_fd) and
	 * pwritev2's RWF_DSYNC and RWF_SYNC: the file is synced before the
	 * call returns (all of it, where the kernel syncs the range).
	 */
	if (wr && rt == R_CACHE && done > 0) {
		int fl = cfd != fd ? k_fcntl(fd, F_GETFL, 0) : 0;
		bool full = (rwf & RWF_SYNC) || (fl > 0 && (fl & O_SYNC) == O_SYNC);
		int r = 0;

		if (full)
			r = upc_fsync(cache, cfd);
		else if ((rwf & RWF_DSYNC) || (fl > 0 && (fl & O_DSYNC)))
			r = upc_fdatasync(cache, cfd);
		if (r < 0)
			return r;
	}
	if (positioned && done > 0)
		k_lseek(fd, pos + done, SEEK_SET);
	return done;
}

static ssize_t ret_ssize(ssize_t r)
{
	return r < 0 ? set_errno(r) : r;
}

static ssize_t do_read(int fd, void *buf, size_t n)
{
	struct shim_inode *si = NULL;
	int rt = route(fd, &si);
	struct iovec v = { buf, n };

	return rt == R_KERNEL ? k_read(fd, buf, n) : ret_ssize(vec_rw(rt, si, fd, &v, 1, -1, false, 0));
}

static ssize_t do_pread(int fd, void *buf, size_t n, off_t off)
{
	struct shim_inode *si = NULL;
	int rt = route(fd, &si);
	struct iovec v = { buf, n };

	if (rt == R_KERNEL)
		return k_pread(fd, buf, n, off);
	if (off < 0)
		return set_errno(-EINVAL);
	return ret_ssize(vec_rw(rt, si, fd, &v, 1, off, false, 0));
}

SHIM_API ssize_t read(int fd, void *buf, size_t n)
{
	return do_read(fd, buf, n);
}

SHIM_API ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return do_read(fd, buf, n);
}

SHIM_API ssize_t write(int fd, const void *buf, size_t n)
{
	struct shim_inode *si = NULL;
	int rt = route_write(fd, &si);
	struct iovec v = { (void *)buf, n };

	if (rt == R_REFUSED)
		return set_errno(-EAGAIN);
	return rt == R_KERNEL ? k_write(fd, buf, n) : ret_ssize(vec_rw(rt, si, fd, &v, 1, -1, true, 0));
}

SHIM_API ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	return do_pread(fd, buf, n, off);
}

SHIM_API ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	return do_pread(fd, buf, n, off);
}

SHIM_API ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return do_pread(fd, buf, n, off);
}

SHIM_API ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return do_pread(fd, buf, n, off);
}

static ssize_t do_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	struct shim_inode *si = NULL;
	int rt = route_write(fd, &si);
	struct iovec v = { (void *)buf, n };

	if (rt == R_REFUSED)
		return set_errno(-EAGAIN);
	if (rt == R_KERNEL)
		return k_pwrite(fd, buf, n, off);
	if (off < 0)
		return set_errno(-EINVAL);
	return ret_ssize(vec_rw(rt, si, fd, &v, 1, off, true, 0));
}

SHIM_API ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return do_pwrite(fd, buf, n, off);
}

SHIM_API ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return do_pwrite(fd, buf, n, off);
}

/* The vectored family.  @off -1 (and, for the v2 forms, -1 given): the file position. */
static ssize_t do_vec(int fd, const struct iovec *iov, int cnt, off_t off, int flags, bool wr, bool v2)
{
	struct shim_inode *si = NULL;
	int rt = route_how(fd, &si, wr);

	if (rt == R_REFUSED)
		return set_errno(-EAGAIN);
	if (rt == R_KERNEL) {
		if (v2) {
			__typeof__(&preadv2) fr = REAL(preadv2);
			__typeof__(&pwritev2) fw = REAL(pwritev2);

			if (wr)
				return fw ? fw(fd, iov, cnt, off, flags)
					  : syscall(SYS_pwritev2, fd, iov, cnt, (long)off, (long)0, flags);
			return fr ? fr(fd, iov, cnt, off, flags)
				  : syscall(SYS_preadv2, fd, iov, cnt, (long)off, (long)0, flags);
		}
		if (off == -1) {
			__typeof__(&readv) fr = REAL(readv);
			__typeof__(&writev) fw = REAL(writev);

			if (wr)
				return fw ? fw(fd, iov, cnt) : syscall(SYS_writev, fd, iov, cnt);
			return fr ? fr(fd, iov, cnt) : syscall(SYS_readv, fd, iov, cnt);
		} else {
			__typeof__(&preadv) fr = REAL(preadv);
			__typeof__(&pwritev) fw = REAL(pwritev);

			if (wr)
				return fw ? fw(fd, iov, cnt, off) : syscall(SYS_pwritev, fd, iov, cnt, (long)off, 0L);
			return fr ? fr(fd, iov, cnt, off) : syscall(SYS_preadv, fd, iov, cnt, (long)off, 0L);
		}
	}
	if (off < -1 || (!v2 && off < 0 && off != -1))
		return set_errno(-EINVAL);
	if (flags & ~(RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND))
		return set_errno(-EOPNOTSUPP);
	return ret_ssize(vec_rw(rt, si, fd, iov, cnt, (flags & RWF_APPEND) ? -1 : off, wr, flags));
}

SHIM_API ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	return do_vec(fd, iov, cnt, -1, 0, false, false);
}

SHIM_API ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	return do_vec(fd, iov, cnt, -1, 0, true, false);
}

static ssize_t check_off(off_t off)
{
	return off < 0 ? set_errno(-EINVAL) : 0;
}

SHIM_API ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return off == -1 ? check_off(off) : do_vec(fd, iov, cnt, off, 0, false, false);
}

SHIM_API ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return preadv(fd, iov, cnt, off);
}

SHIM_API ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return off == -1 ? check_off(off) : do_vec(fd, iov, cnt, off, 0, true, false);
}

SHIM_API ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return pwritev(fd, iov, cnt, off);
}

SHIM_API ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return do_vec(fd, iov, cnt, off, flags, false, true);
}

SHIM_API ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return do_vec(fd, iov, cnt, off, flags, false, true);
}

SHIM_API ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return do_vec(fd, iov, cnt, off, flags, true, true);
}

SHIM_API ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return do_vec(fd, iov, cnt, off, flags, true, true);
}

/* ------------------------------------------------------------ size, sync, descriptors */

static int int_ret(long r)
{
	return r < 0 ? set_errno(r) : 0;
}

static int do_ftruncate(int fd, off_t len)
{
	struct shim_inode *si = NULL;
	int rt = route_write(fd, &si);

	if (rt == R_REFUSED)
		return set_errno(-EAGAIN);
	if (rt == R_CACHE)
		return int_ret(upc_ftruncate(cache, write_fd(fd, si), len));
	if (rt == R_CHILD)
		child_log_once(si, "ftruncate");
	return k_ftruncate(fd, len);
}

SHIM_API int ftruncate(int fd, off_t len)
{
	return do_ftruncate(fd, len);
}

SHIM_API int ftruncate64(int fd, off_t len)
{
	return do_ftruncate(fd, len);
}

static int do_truncate(const char *path, off_t len)
{
	__typeof__(&truncate) fn = REAL(truncate);
	struct shim_inode *si = NULL;
	struct stat st;

	if (atomic_load_explicit(&nr_routed, memory_order_relaxed) && !in_shim &&
	    stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
		pthread_mutex_lock(&shim_lock);
		si = inode_find(st.st_dev, st.st_ino);
		pthread_mutex_unlock(&shim_lock);
		if (si && si->si_busy && !busy_write_ok(si))
			return set_errno(-EAGAIN);
		if (si && !si->si_kernel && !si->si_busy && owned()) {
			int fd = open(path, O_WRONLY | O_CLOEXEC);
			int ret;

			if (fd < 0)
				return -1;
			ret = upc_ftruncate(cache, write_fd(fd, si), len);
			k_close(fd);
			return int_ret(ret);
		}
	}
	return fn ? fn(path, len) : (int)syscall(SYS_truncate, path, len);
}

SHIM_API int truncate(const char *path, off_t len)
{
	return do_truncate(path, len);
}

SHIM_API int truncate64(const char *path, off_t len)
{
	return do_truncate(path, len);
}

SHIM_API int fallocate(int fd, int mode, off_t off, off_t len)
{
	struct shim_inode *si = NULL;
	int rt = route_write(fd, &si);

	if (rt == R_REFUSED)
		return set_errno(-EAGAIN);
	if (rt == R_CACHE)
		return int_ret(upc_fallocate(cache, write_fd(fd, si), mode, off, len));
	if (rt == R_CHILD)
		child_log_once(si, "fallocate");
	return k_fallocate(fd, mode, off, len);
}

SHIM_API int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

static int do_posix_fallocate(int fd, off_t off, off_t len)
{
	__typeof__(&posix_fallocate) fn = REAL(posix_fallocate);
	struct shim_inode *si = NULL;
	int rt = route_write(fd, &si);

	if (rt == R_REFUSED)
		return EAGAIN;
	if (rt == R_CACHE) {
		int ret = upc_fallocate(cache, write_fd(fd, si), 0, off, len);

		return ret < 0 ? -ret : 0;
	}
	if (fn)
		return fn(fd, off, len);
	return k_fallocate(fd, 0, off, len) < 0 ? errno : 0;
}

SHIM_API int posix_fallocate(int fd, off_t off, off_t len)
{
	return do_posix_fallocate(fd, off, len);
}

SHIM_API int posix_fallocate64(int fd, off_t off, off_t len)
{
	return do_posix_fallocate(fd, off, len);
}

static int do_sync(int fd, bool data)
{
	struct shim_inode *si = NULL;
	int rt = route(fd, &si);
	__typeof__(&fsync) fs = REAL(fsync);
	__typeof__(&fdatasync) fds = REAL(fdatasync);

	if (rt == R_CACHE) {
		int ret = data ? upc_fdatasync(cache, fd) : upc_fsync(cache, fd);

		return ret < 0 ? set_errno(ret) : 0;
	}
	if (data)
		return fds ? fds(fd) : (int)syscall(SYS_fdatasync, fd);
	return fs ? fs(fd) : (int)syscall(SYS_fsync, fd);
}

SHIM_API int fsync(int fd)
{
	return do_sync(fd, false);
}

SHIM_API int fdatasync(int fd)
{
	return do_sync(fd, true);
}

SHIM_API int sync_file_range(int fd, off_t off, off_t len, unsigned int flags)
{
	__typeof__(&sync_file_range) fn = REAL(sync_file_range);
	struct shim_inode *si = NULL;

	/* the whole file, written and made durable: more than asked, never less */
	if (route(fd, &si) == R_CACHE && (flags & SYNC_FILE_RANGE_WRITE))
		return int_ret(upc_fdatasync(cache, fd));
	return fn ? fn(fd, off, len, flags) : (int)syscall(SYS_sync_file_range, fd, off, len, flags);
}

SHIM_API int syncfs(int fd)
{
	__typeof__(&syncfs) fn = REAL(syncfs);

	flush_all("syncfs");
	return fn ? fn(fd) : (int)syscall(SYS_syncfs, fd);
}

SHIM_API void sync(void)
{
	__typeof__(&sync) fn = REAL(sync);

	flush_all("sync");
	if (fn)
		fn();
	else
		syscall(SYS_sync);
}

SHIM_API int close(int fd)
{
	/* our descriptors are not the program's: as if they were not open */
	if (!in_shim && fd_is_ours(fd))
		return set_errno(-EBADF);
	return k_close(fd);
}

/* dup2/dup3 onto one of our descriptors: ours moves away first. */
static void fd_move_away(int fd)
{
	int nfd;

	if (in_shim || !fd_is_ours(fd))
		return;
	nfd = fd_dup_high(fd);
	if (nfd < 0)
		return;
	pthread_mutex_lock(&shim_lock);
	if (fd == log_fd)
		log_fd = nfd;
	if (fd == reg_dirfd)
		reg_dirfd = nfd;
	for (size_t i = 0; i < nr_inodes; i++) {
		if (inodes[i]->si_fd == fd)
			inodes[i]->si_fd = nfd;
		if (inodes[i]->si_regfd == fd)
			inodes[i]->si_regfd = nfd;
	}
	pthread_mutex_unlock(&shim_lock);
}

SHIM_API int dup2(int oldfd, int newfd)
{
	__typeof__(&dup2) fn = REAL(dup2);

	if (oldfd != newfd)
		fd_move_away(newfd);
	return fn ? fn(oldfd, newfd) : (int)syscall(SYS_dup2, oldfd, newfd);
}

SHIM_API int dup3(int oldfd, int newfd, int flags)
{
	__typeof__(&dup3) fn = REAL(dup3);

	if (oldfd != newfd)
		fd_move_away(newfd);
	return fn ? fn(oldfd, newfd, flags) : (int)syscall(SYS_dup3, oldfd, newfd, flags);
}

/* ------------------------------------------------------------ processes */

/* The new image reads the file from the kernel: write our dirty pages back first. */
static void before_exec(const char *what)
{
	if (owned())
		flush_all(what);
}

static pid_t do_fork(void)
{
	__typeof__(&fork) fn = REAL(fork);

	/* a child that execs reads the file from the kernel: give it our writes */
	if (dirty_pages())
		flush_all("fork");
	return fn ? fn() : (pid_t)syscall(SYS_fork);
}

SHIM_API pid_t fork(void)
{
	return do_fork();
}

/*
 * vfork is fork here (POSIX allows it): a vfork child shares our memory
 * and would run the cache's code on the parent's state.
 */
SHIM_API pid_t vfork(void)
{
	return do_fork();
}

SHIM_API int execve(const char *path, char *const argv[], char *const envp[])
{
	__typeof__(&execve) fn = REAL(execve);

	before_exec("exec");
	return fn ? fn(path, argv, envp) : (int)syscall(SYS_execve, path, argv, envp);
}

SHIM_API int execv(const char *path, char *const argv[])
{
	before_exec("exec");
	return REAL(execv)(path, argv);
}

SHIM_API int execvp(const char *file, char *const argv[])
{
	before_exec("exec");
	return REAL(execvp)(file, argv);
}

SHIM_API int execvpe(const char *file, char *const argv[], char *const envp[])
{
	before_exec("exec");
	return REAL(execvpe)(file, argv, envp);
}

SHIM_API int fexecve(int fd, char *const argv[], char *const envp[])
{
	before_exec("exec");
	return REAL(fexecve)(fd, argv, envp);
}

SHIM_API int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
	__typeof__(&execveat) fn = REAL(execveat);

	before_exec("exec");
	return fn ? fn(dirfd, path, argv, envp, flags) : (int)syscall(SYS_execveat, dirfd, path, argv, envp, flags);
}

/* execl, execlp, execle: the argument list as an array, then the v form. */
#define ARGV_FROM_VA(first, argv)                                             \
	size_t argc_ = 1;                                                     \
	va_list ap_;                                                          \
	va_start(ap_, first);                                                 \
	while (va_arg(ap_, const char *))                                     \
		argc_++;                                                      \
	va_end(ap_);                                                          \
	const char *argv[argc_ + 1];                                          \
	argv[0] = first;                                                      \
	va_start(ap_, first);                                                 \
	for (size_t i_ = 1; i_ <= argc_; i_++)                                \
		argv[i_] = va_arg(ap_, const char *)	/* the last is the NULL */

SHIM_API int execl(const char *path, const char *arg, ...)
{
	ARGV_FROM_VA(arg, argv);
	va_end(ap_);
	before_exec("exec");
	return REAL(execv)(path, (char *const *)argv);
}

SHIM_API int execlp(const char *file, const char *arg, ...)
{
	ARGV_FROM_VA(arg, argv);
	va_end(ap_);
	before_exec("exec");
	return REAL(execvp)(file, (char *const *)argv);
}

SHIM_API int execle(const char *path, const char *arg, ...)
{
	char *const *envp;
	ARGV_FROM_VA(arg, argv);
	envp = va_arg(ap_, char *const *);
	va_end(ap_);
	return execve(path, (char *const *)argv, envp);
}

SHIM_API int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	before_exec("posix_spawn");
	return REAL(posix_spawn)(pid, path, fa, attr, argv, envp);
}

SHIM_API int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			  const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	before_exec("posix_spawn");
	return REAL(posix_spawnp)(pid, file, fa, attr, argv, envp);
}

SHIM_API int system(const char *cmd)
{
	before_exec("system");
	return REAL(system)(cmd);
}

SHIM_API FILE *popen(const char *cmd, const char *mode)
{
	before_exec("popen");
	return REAL(popen)(cmd, mode);
}
