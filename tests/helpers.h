/* SPDX-License-Identifier: MIT */
/* Helpers shared by the Criterion tests. */
#ifndef UPC_TEST_HELPERS_H
#define UPC_TEST_HELPERS_H

#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <upcache.h>

#if defined(__SANITIZE_ADDRESS__)	/* gcc */
#define UPC_TEST_ASAN 1
#elif defined(__has_feature)		/* clang */
#if __has_feature(address_sanitizer)
#define UPC_TEST_ASAN 1
#endif
#endif

#ifdef UPC_TEST_ASAN
#include <sanitizer/lsan_interface.h>
/*
 * The sanitizer build (configure --enable-sanitizers): LeakSanitizer checks
 * every process at exit.  Criterion's runner, the parent of the re-executed
 * children that run the cases (they have BXFI_MAP in their environment),
 * loses a 48-byte timeout request (BoxFort's bxfi_push_timeout(), one per
 * case with a .timeout) in the programs whose cases have different
 * timeouts (test_threads, test_pin, test_eviction, test_fork: Criterion
 * 2.4.1).  libcriterion is stripped, so a suppressions file could only
 * name the library, and every leak under a test has it in its stack.  So
 * what the runner's main thread allocates is not leak-checked; the cases,
 * where upcache runs, are.
 */
__attribute__((constructor)) static void lsan_skip_criterion_runner(void)
{
	if (!getenv("BXFI_MAP"))
		__lsan_disable();
}
#endif

#ifdef UPC_TEST_ASAN
/*
 * fork(2) beside other threads, in the sanitizer build.  GCC 12's
 * AddressSanitizer (Debian 12's) takes no lock of its allocator around a
 * fork (LLVM's does from LLVM 18 on, InstallAtForkHandler): a size class's
 * lock that another thread holds at that instant stays held in the child,
 * and the child's first thread to refill that class waits for ever.  Seen
 * in CI: test_shared's forked writer, whose library threads stopped in
 * AsanThread::Init -> pthread_getattr_np -> free -> the quarantine ->
 * GetFromAllocator while its main thread joined them (a 60 s timeout;
 * once in 40 runs of that case alone).  Criterion's threads and the
 * library's run beside every case.  So the sanitizer build forks once
 * every other thread of the process has been seen asleep twice, 1 ms
 * apart (a thread holding an allocator lock runs, or is in mmap(2): not
 * S), waiting up to about 30 ms for that: a case that forks while its
 * threads fault without a pause (test_fork's races) forks anyway, a little
 * later.  That narrows the window to a thread waking in the instant before
 * the fork; it does not close it.  Tests only: the library never forks.
 */
static inline bool test_threads_asleep(void)
{
	DIR *d = opendir("/proc/self/task");
	char path[300], buf[512];
	struct dirent *e;
	bool asleep = d != NULL;

	while (asleep && (e = readdir(d))) {
		ssize_t n;
		char *st;
		int fd;

		if (e->d_name[0] == '.' || atoi(e->d_name) == gettid())
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;	/* exited */
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		st = strrchr(buf, ')');
		asleep = !st || st[1] != ' ' || st[2] == 'S' || st[2] == 'Z' || st[2] == 'X';
	}
	if (d)
		closedir(d);
	return asleep;
}

static inline pid_t test_fork_quiet(void)
{
	for (int i = 0; i < 15; i++) {
		if (test_threads_asleep()) {
			usleep(1000);
			if (test_threads_asleep())
				break;
		}
		usleep(1000);
	}
	return fork();
}
#define fork() test_fork_quiet()
#endif

#define PAGE 4096UL

/* The byte the pattern has at file offset @off (distinct per page and byte). */
static inline unsigned char pat(uint64_t off)
{
	return (unsigned char)(off * 31 + (off >> 12) * 7 + 1);
}

/*
 * The files a case makes under /var/tmp and names (tmpfile_pattern with a
 * path, test_preload's logs: tmp_remove_at_exit) go when the process that
 * made them exits through exit(3): the case's own process, when
 * Criterion's worker ends (they were left behind, 16 MiB and 64 MiB files
 * among them, at every run).  A forked child has a list of its own; a
 * process that dies of a signal leaves its files.
 */
#define TMP_FILES_MAX	32
static char tmp_files[TMP_FILES_MAX][128];
static unsigned int tmp_nfiles;
static pid_t tmp_files_pid;

static void tmp_files_remove(void)
{
	if (tmp_files_pid != getpid())
		return;
	for (unsigned int i = 0; i < tmp_nfiles; i++)
		unlink(tmp_files[i]);
	tmp_nfiles = 0;
}

static inline void tmp_remove_at_exit(const char *path)
{
	static bool registered;

	if (tmp_files_pid != getpid()) {
		tmp_files_pid = getpid();
		tmp_nfiles = 0;
	}
	if (!registered) {
		atexit(tmp_files_remove);
		registered = true;
	}
	if (tmp_nfiles < TMP_FILES_MAX && strlen(path) < sizeof(tmp_files[0]))
		strcpy(tmp_files[tmp_nfiles++], path);
}

/* Does the file at @path say @what (in its first 64 KiB)? */
static inline bool file_has(const char *path, const char *what)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return strstr(buf, what) != NULL;
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
	if (path_out) {
		strcpy(path_out, path);
		tmp_remove_at_exit(path);
	} else {
		unlink(path);
	}
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

/*
 * Running as an unprivileged user: run_as_nobody() forks a child that drops
 * to uid and gid 65534, as a service does, and runs @fn there.  Only the
 * test's own process talks to Criterion, so the child cannot assert: it
 * returns 0 (pass), 77 (skip) or 1 (fail), and says why with nobody_msg()
 * (or nobody_check() and nobody_skip(), which exit).  nobody_report()
 * turns that into the test's verdict; keep it apart from run_as_nobody() so
 * that what the test changed for the child can be put back in between.
 */
#define NOBODY 65534

static inline int *nobody_fd(void)
{
	static int fd = -1;

	return &fd;
}

static inline __attribute__((format(printf, 1, 2))) void nobody_msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdprintf(*nobody_fd(), fmt, ap);
	va_end(ap);
}

#define nobody_check(cond, ...) do {						\
	if (!(cond)) {								\
		nobody_msg("%s:%d: ", __FILE__, __LINE__);			\
		nobody_msg(__VA_ARGS__);					\
		_exit(1);							\
	}									\
} while (0)
#define nobody_skip(...) do { nobody_msg(__VA_ARGS__); _exit(77); } while (0)

/* A forked child of root becomes @uid, its group too, with no other group: 0, or -1 and errno. */
static inline int become_uid(uid_t uid)
{
	return setgroups(0, NULL) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid) ? -1 : 0;
}

/* Returns the child's wait status; its message is in @msg. */
static inline int run_as_nobody(int (*fn)(void *), void *arg, char *msg, size_t msglen)
{
	int pfd[2], status;
	size_t len = 0;
	ssize_t n;
	pid_t pid;

	if (geteuid() != 0)
		cr_skip_test("needs root, to drop to uid %d", NOBODY);
	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(pfd[0]);
		*nobody_fd() = pfd[1];
		if (become_uid(NOBODY) < 0) {
			nobody_msg("cannot drop to uid %d: %s", NOBODY, strerror(errno));
			_exit(1);
		}
		/*
		 * Changing credentials made the process non-dumpable, which
		 * gives its /proc/self files (pagemap) to root: a service that
		 * starts unprivileged is dumpable.
		 */
		prctl(PR_SET_DUMPABLE, 1);
		_exit(fn(arg));
	}
	close(pfd[1]);
	while (len + 1 < msglen && (n = read(pfd[0], msg + len, msglen - 1 - len)) > 0)
		len += (size_t)n;
	msg[len] = '\0';
	close(pfd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

static inline void nobody_report(int status, const char *msg)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		cr_skip_test("as uid %d: %s", NOBODY, msg);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "as uid %d: %s%s%s", NOBODY, msg,
		  WIFSIGNALED(status) ? "killed by " : "", WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "");
}

/* The child's require_upcache() and cache_new(): skip, never fail, for what the kernel lacks. */
static inline struct upc_cache *nobody_cache(struct upc_cache_opts *o)
{
	uint64_t f = upc_probe();
	struct upc_cache *c = NULL;
	int ret;

	if (!(f & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV | UPC_FEAT_USER_MODE_ONLY)))
		nobody_skip("userfaultfd is not available to this user");
	if (!(f & UPC_FEAT_WP_SHMEM) || !(f & UPC_FEAT_WP_UNPOPULATED))
		nobody_skip("kernel cannot write-protect shmem with PTE markers (needs 6.4+)");
	if (!(f & UPC_FEAT_IO_URING))
		nobody_skip("io_uring is not available to this user");
	o->flags |= track_flags();
	ret = upc_cache_create(o, &c);
	nobody_check(ret == 0, "upc_cache_create: %s", upc_strerror(ret));
	if (track_flags()) {
		struct upc_stats st = { .sz = sizeof(st) };

		upc_stats(c, &st);
		if (st.track_mode != UPC_TRACK_ASYNC)
			nobody_skip("asynchronous tracking is not available to this user");
	}
	return c;
}

/* Does reading @p raise SIGBUS?  (sigsetjmp: the test goes on after it.) */
static sigjmp_buf bus_jmp __attribute__((unused));

static inline void on_bus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

static inline bool raises_sigbus(volatile unsigned char *p)
{
	struct sigaction sa = { .sa_handler = on_bus }, old;
	volatile bool bus = false;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGBUS, &sa, &old), 0);
	if (sigsetjmp(bus_jmp, 1) == 0)
		(void)*p;
	else
		bus = true;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

/* upc_msync(MS_SYNC) of a range in a thread of its own: pthread_create(&t, NULL, bg_msync_main, &b). */
struct bg_msync {
	struct upc_cache *c;
	void *p;
	size_t len;
	int ret;
};

static inline void *bg_msync_main(void *arg)
{
	struct bg_msync *b = arg;

	b->ret = upc_msync(b->c, b->p, b->len, UPC_MS_SYNC);
	return NULL;
}

/*
 * After a case that started upcd on @sock_path (in a directory of its own,
 * from mkdtemp): the directory and what is in it, the sockets of the
 * daemon and of its keeper (daemon/keeper.c) included.  A keeper left by a
 * daemon the case killed exits when its socket's path is gone.
 */
static inline void sock_dir_remove(const char *sock_path)
{
	char dir[108];
	char *slash;
	struct dirent *de;
	DIR *d;

	if (!sock_path[0] || strlen(sock_path) >= sizeof(dir))
		return;
	strcpy(dir, sock_path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	rmdir(dir);
}

#endif
