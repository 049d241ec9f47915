/* SPDX-License-Identifier: MIT */
/*
 * preload-prog - the programs tests/test_preload.c runs under upcache-run:
 * "preload-prog CASE FILE [ARG]" checks one behaviour of the shim on FILE
 * (made by the test: pat() at every offset) and exits 0, or prints what
 * went wrong and exits 1.  It knows nothing of upcache: it is an ordinary
 * program using mmap(2) and file I/O, as the programs the shim is for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096L

/* The fortified forms, called directly (glibc's headers declare them only under _FORTIFY_SOURCE). */
extern ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
extern ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
extern ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);

static const char *file;

static unsigned char pat(uint64_t off)
{
	return (unsigned char)(off * 31 + (off >> 12) * 7 + 1);
}

#define CHECK(cond, ...)                                                            \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "%s:%d: %s failed (errno %s): ", __FILE__, __LINE__, #cond, \
				strerror(errno));                                   \
			fprintf(stderr, __VA_ARGS__);                               \
			fprintf(stderr, "\n");                                      \
			exit(1);                                                    \
		}                                                                   \
	} while (0)

static int open_file(int flags)
{
	int fd = open(file, flags);

	CHECK(fd >= 0, "open %s", file);
	return fd;
}

static char *map_file(int fd, size_t len, int prot)
{
	char *p = mmap(NULL, len, prot, MAP_SHARED, fd, 0);

	CHECK(p != MAP_FAILED, "mmap");
	return p;
}

/* ---- signal catching: the kernel's si_code and si_addr, then out */
static sigjmp_buf jb;
static volatile int got_sig, got_code;
static void *volatile got_addr;

static void catcher(int sig, siginfo_t *si, void *uc)
{
	got_sig = sig;
	got_code = si->si_code;
	got_addr = si->si_addr;
	siglongjmp(jb, 1);
}

static void catch(int sig)
{
	struct sigaction sa = { .sa_sigaction = catcher, .sa_flags = SA_SIGINFO };

	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(sig, &sa, NULL) == 0, "sigaction");
}

/* 1 if touching *p raised a signal (its details in got_*), 0 if not. */
static int faults(volatile char *p, int write)
{
	got_sig = 0;
	if (sigsetjmp(jb, 1))
		return 1;
	if (write)
		*p = 'w';
	else
		(void)*p;
	return 0;
}

/* ---- cases */

static int case_coherence(void)
{
	int fd = open_file(O_RDWR), fd2 = open_file(O_RDWR);
	char *p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE);
	char buf[64], a[8], b[8];
	struct iovec v[2] = { { a, sizeof(a) }, { b, sizeof(b) } };

	CHECK((unsigned char)p[5000] == pat(5000), "map reads the file");
	memcpy(p + 100, "through-the-map", 15);
	/* another descriptor of the same file, never mapped: routed by inode */
	CHECK(pread(fd2, buf, 15, 100) == 15 && !memcmp(buf, "through-the-map", 15), "pread sees the map");
	CHECK(__pread_chk(fd2, buf, 15, 100, sizeof(buf)) == 15 && !memcmp(buf, "through-the-map", 15), "__pread_chk");
	CHECK(__pread64_chk(fd2, buf, 15, 100, sizeof(buf)) == 15, "__pread64_chk");
	CHECK(pwrite(fd2, "by-pwrite", 9, PG + 7) == 9, "pwrite");
	CHECK(!memcmp(p + PG + 7, "by-pwrite", 9), "the map sees pwrite");
	/* read/write at the file position, which moves */
	CHECK(lseek(fd2, 2 * PG, SEEK_SET) == 2 * PG, "lseek");
	CHECK(write(fd2, "by-write", 8) == 8 && lseek(fd2, 0, SEEK_CUR) == 2 * PG + 8, "write moves the position");
	CHECK(!memcmp(p + 2 * PG, "by-write", 8), "the map sees write");
	memcpy(p + 2 * PG + 8, "NEXT", 4);
	CHECK(read(fd2, buf, 4) == 4 && !memcmp(buf, "NEXT", 4), "read at the position sees the map");
	CHECK(__read_chk(fd2, buf, 1, sizeof(buf)) == 1 && (unsigned char)buf[0] == pat(2 * PG + 12), "__read_chk");
	/* vectored */
	memcpy(p + 3 * PG, "AAAAAAAABBBBBBBB", 16);
	CHECK(preadv(fd2, v, 2, 3 * PG) == 16 && !memcmp(a, "AAAAAAAA", 8) && !memcmp(b, "BBBBBBBB", 8), "preadv");
	memcpy(a, "aaaaaaaa", 8);
	memcpy(b, "bbbbbbbb", 8);
	CHECK(pwritev(fd2, v, 2, 3 * PG + 100) == 16 && !memcmp(p + 3 * PG + 100, "aaaaaaaabbbbbbbb", 16), "pwritev");
	CHECK(lseek(fd2, 3 * PG + 200, SEEK_SET) >= 0 && writev(fd2, v, 2) == 16 &&
	      !memcmp(p + 3 * PG + 200, "aaaaaaaabbbbbbbb", 16), "writev");
	CHECK(lseek(fd2, 3 * PG, SEEK_SET) >= 0 && readv(fd2, v, 2) == 16 && !memcmp(a, "AAAAAAAA", 8), "readv");
	CHECK(preadv2(fd2, v, 1, 3 * PG + 100, 0) == 8 && !memcmp(a, "aaaaaaaa", 8), "preadv2");
	/* O_APPEND: at the end of file, growing it; the map sees the new bytes */
	{
		int fa = open_file(O_WRONLY | O_APPEND);
		struct stat st;

		CHECK(fstat(fa, &st) == 0 && st.st_size == 3 * PG + 512, "size %lld", (long long)st.st_size);
		CHECK(write(fa, "APPENDED", 8) == 8, "append");
		CHECK(fstat(fa, &st) == 0 && st.st_size == 3 * PG + 520, "append grew the file");
		CHECK(!memcmp(p + 3 * PG + 512, "APPENDED", 8), "the map sees the appended bytes");
		close(fa);
	}
	/* an O_RDONLY descriptor cannot write, as with the kernel */
	{
		int fr = open_file(O_RDONLY);

		CHECK(pwrite(fr, "x", 1, 0) == -1 && errno == EBADF, "pwrite on O_RDONLY: EBADF");
		CHECK(write(fr, "x", 1) == -1 && errno == EBADF, "write on O_RDONLY: EBADF");
		CHECK(ftruncate(fr, 0) == -1 && errno == EINVAL, "ftruncate on O_RDONLY: EINVAL");
		CHECK(pread(fr, buf, 1, -1) == -1 && errno == EINVAL, "pread at -1: EINVAL");
		close(fr);
	}
	CHECK(fsync(fd2) == 0 && fdatasync(fd2) == 0, "fsync");
	return 0;
}

/* After the program: the file holds what case_coherence wrote (checked by the test). */

static int case_size(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE);
	char buf[16];

	catch(SIGBUS);
	memset(p + PG, 'Q', 16);
	/* shrink to one page and a half: the half page reads zeros past EOF, the next page is SIGBUS */
	CHECK(ftruncate(fd, PG + PG / 2) == 0, "ftruncate shrink");
	CHECK(!memcmp(p + PG, "QQQQ", 4), "the kept part stays");
	CHECK(p[PG + PG / 2 + 10] == 0, "past EOF in the last page: zeros");
	CHECK(faults(p + 2 * PG + 123, 0) == 1 && got_sig == SIGBUS, "SIGBUS past EOF");
	CHECK(got_code == BUS_ADRERR && got_addr == p + 2 * PG + 123, "BUS_ADRERR at %p, got code %d addr %p",
	      (void *)(p + 2 * PG + 123), got_code, got_addr);
	/* grow again: zeros, not the old bytes */
	CHECK(ftruncate(fd, 4 * PG) == 0, "ftruncate grow");
	CHECK(faults(p + 3 * PG, 0) == 0 && p[3 * PG] == 0 && p[PG + PG / 2 + 10] == 0, "grown part reads zeros");
	/* punch a hole: zeros through the map and through pread */
	memset(p + 2 * PG, 'H', PG);
	CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * PG, PG) == 0, "punch");
	CHECK(p[2 * PG] == 0 && p[3 * PG - 1] == 0, "the map sees the hole");
	CHECK(pread(fd, buf, 4, 2 * PG) == 4 && !memcmp(buf, "\0\0\0\0", 4), "pread sees the hole");
	CHECK(posix_fallocate(fd, 0, 5 * PG) == 0, "posix_fallocate grows");
	CHECK(faults(p + 3 * PG + 5, 0) == 0, "inside");
	{
		struct stat st;

		CHECK(fstat(fd, &st) == 0 && st.st_size == 5 * PG, "size after posix_fallocate");
	}
	CHECK(truncate(file, 3 * PG) == 0, "truncate by path");
	CHECK(faults(p + 3 * PG, 0) == 1 && got_code == BUS_ADRERR, "truncate(2) by path reaches the map");
	return 0;
}

static int case_msync_kill(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 2 * PG, PROT_READ | PROT_WRITE);

	memcpy(p + 10, "msynced", 7);
	CHECK(msync(p, 2 * PG, MS_SYNC) == 0, "msync");
	CHECK(pwrite(fd, "fsynced", 7, PG + 10) == 7 && fsync(fd) == 0, "pwrite+fsync");
	CHECK(msync(p + 1, PG, MS_SYNC) == -1 && errno == EINVAL, "msync unaligned: EINVAL");
	CHECK(msync(p, PG, MS_SYNC | MS_ASYNC) == -1 && errno == EINVAL, "msync both: EINVAL");
	CHECK(msync(p, PG, MS_ASYNC) == 0, "msync async");
	kill(getpid(), SIGKILL);	/* no write-back at exit: only what was synced is in the file */
	return 1;
}

static int case_protect(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 2 * PG, PROT_READ | PROT_WRITE);

	catch(SIGSEGV);
	p[0] = 'A';
	CHECK(mprotect(p, PG, PROT_READ) == 0, "mprotect read");
	CHECK(faults(p, 1) == 1 && got_sig == SIGSEGV && got_code == SEGV_ACCERR && got_addr == p,
	      "write to a read-only page: SEGV_ACCERR");
	CHECK(faults(p + PG, 1) == 0, "the other page stays writable");
	CHECK(mprotect(p, PG, PROT_NONE) == 0 && faults(p, 0) == 1 && got_sig == SIGSEGV, "PROT_NONE");
	CHECK(mprotect(p, 2 * PG, PROT_READ | PROT_WRITE) == 0, "mprotect back");
	p[1] = 'B';
	CHECK(mprotect(p + 1, PG, PROT_READ) == -1 && errno == EINVAL, "unaligned: EINVAL");
	/* a read-only descriptor cannot be made writable */
	{
		int fr = open_file(O_RDONLY);
		char *q = map_file(fr, PG, PROT_READ);

		CHECK(mprotect(q, PG, PROT_READ | PROT_WRITE) == -1 && errno == EACCES, "EACCES");
		CHECK(mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fr, 0) == MAP_FAILED && errno == EACCES,
		      "mmap writable of O_RDONLY: EACCES");
		CHECK(mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 1) == MAP_FAILED && errno == EINVAL,
		      "unaligned offset: EINVAL");
	}
	return 0;
}

static int case_advise(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE);
	char buf[4];

	memcpy(p, "kept", 4);
	CHECK(madvise(p, 4 * PG, MADV_DONTNEED) == 0, "DONTNEED");
	CHECK(!memcmp(p, "kept", 4), "a shared mapping keeps its data after DONTNEED");
	CHECK(madvise(p, 4 * PG, MADV_WILLNEED) == 0 && madvise(p, 4 * PG, MADV_SEQUENTIAL) == 0 &&
	      madvise(p, 4 * PG, MADV_RANDOM) == 0 && posix_madvise(p, PG, POSIX_MADV_NORMAL) == 0, "hints");
	CHECK(madvise(p, PG, MADV_FREE) == -1 && errno == EINVAL, "MADV_FREE on a shared mapping: EINVAL");
	memset(p + PG, 'R', PG);
	CHECK(madvise(p + PG, PG, MADV_REMOVE) == 0, "MADV_REMOVE");
	CHECK(p[PG] == 0 && pread(fd, buf, 4, PG) == 4 && !memcmp(buf, "\0\0\0\0", 4), "removed: zeros");
	CHECK(madvise(p + 1, PG, MADV_DONTNEED) == -1 && errno == EINVAL, "unaligned: EINVAL");
	return 0;
}

static int case_remap(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, PG, PROT_READ | PROT_WRITE), *q;

	catch(SIGSEGV);
	memcpy(p, "first-page", 10);
	q = mremap(p, PG, 4 * PG, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED, "mremap grow");
	CHECK(!memcmp(q, "first-page", 10), "dirty data travels with the remap");
	CHECK((unsigned char)q[3 * PG + 5] == pat(3 * PG + 5), "the grown part maps the file");
	q[3 * PG] = 'Z';
	q = mremap(q, 4 * PG, 2 * PG, 0);
	CHECK(q != MAP_FAILED, "mremap shrink");
	CHECK(faults(q + 2 * PG, 0) == 1, "the shrunk tail is unmapped");
	CHECK(mremap(q + 1, PG, 2 * PG, MREMAP_MAYMOVE) == MAP_FAILED && errno == EINVAL, "unaligned: EINVAL");
	{
		char buf[1];

		CHECK(pread(fd, buf, 1, 3 * PG) == 1 && buf[0] == 'Z', "a write through the grown part is in the file");
	}
	return 0;
}

static int case_unmap(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 3 * PG, PROT_READ | PROT_WRITE);

	catch(SIGSEGV);
	p[0] = 'a';
	p[PG] = 'b';
	p[2 * PG] = 'c';
	CHECK(munmap(p + PG, PG) == 0, "munmap the middle");
	CHECK(faults(p + PG, 0) == 1 && got_sig == SIGSEGV, "the middle is gone");
	CHECK(faults(p, 0) == 0 && p[0] == 'a' && p[2 * PG] == 'c', "the sides stay");
	CHECK(munmap(p + 1, PG) == -1 && errno == EINVAL, "unaligned: EINVAL");
	CHECK(munmap(p, 3 * PG) == 0, "munmap over a hole");
	close(fd);
	/* after the last unmap the file is still read through the cache: its dirty pages are there */
	fd = open_file(O_RDONLY);
	{
		char buf[1];

		CHECK(pread(fd, buf, 1, PG) == 1 && buf[0] == 'b', "unmapped dirty data readable");
	}
	return 0;
}

static int case_fork(void)
{
	int fd = open_file(O_RDWR), st;
	char *p = map_file(fd, 2 * PG, PROT_READ | PROT_WRITE);
	pid_t pid;

	p[0] = 'P';
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char buf[1];

		if (p[0] != 'P')
			_exit(2);
		p[1] = 'C';		/* through the inherited mapping */
		if (pwrite(fd, "c", 1, PG + 1) != 1)	/* routed through the inherited mapping */
			_exit(3);
		if (pread(fd, buf, 1, 0) != 1 || buf[0] != 'P')
			_exit(4);
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st), "child");
	CHECK(WEXITSTATUS(st) == 0, "child failed with %d", WEXITSTATUS(st));
	CHECK(p[1] == 'C' && p[PG + 1] == 'c', "the parent sees the child's writes");
	return 0;
}

/* The new image reads the file from the kernel: FILE must start with ARG. */
static int case_check_prefix(const char *want)
{
	int fd = open_file(O_RDONLY);
	char buf[64] = { 0 };

	CHECK(read(fd, buf, strlen(want)) == (ssize_t)strlen(want), "read");
	CHECK(!memcmp(buf, want, strlen(want)), "file starts with '%.*s', wants '%s'", (int)strlen(want), buf, want);
	return 0;
}

static int case_exec(const char *self)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, PG, PROT_READ | PROT_WRITE);

	memcpy(p, "before-exec", 11);
	execl(self, self, "check-prefix", file, "before-exec", (char *)NULL);
	CHECK(0, "execl");
	return 1;
}

static int case_spawn(const char *self)
{
	int fd = open_file(O_RDWR), st;
	char *p = map_file(fd, PG, PROT_READ | PROT_WRITE);
	char *argv[] = { (char *)self, "check-prefix", (char *)file, "spawned", NULL };
	pid_t pid;

	memcpy(p, "spawned", 7);
	CHECK(posix_spawn(&pid, self, NULL, NULL, argv, environ) == 0, "posix_spawn");
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "spawned child");
	memcpy(p, "vforked", 7);
	pid = vfork();
	if (pid == 0) {
		argv[3] = "vforked";
		execv(self, argv);
		_exit(127);
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "vfork child");
	memcpy(p, "systemd", 7);
	{
		char cmd[4096];

		snprintf(cmd, sizeof(cmd), "'%s' check-prefix '%s' systemd", self, file);
		CHECK(system(cmd) == 0, "system()");
	}
	return 0;
}

static int case_underscore_exit(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, PG, PROT_READ | PROT_WRITE);

	memcpy(p, "by-_exit", 8);
	_exit(0);
}

static int case_kernel_access(void)
{
	int fd = open_file(O_RDWR), pfd[2];
	char *p = map_file(fd, 8 * PG, PROT_READ | PROT_WRITE);
	static char buf[PG];

	/* write(pipe, mapped page): the kernel reads a page not faulted in yet */
	CHECK(pipe(pfd) == 0, "pipe");
	CHECK(write(pfd[1], p + 2 * PG, PG) == PG, "write(pipe, map)");
	CHECK(read(pfd[0], buf, PG) == PG, "read pipe");
	for (long i = 0; i < PG; i++)
		CHECK((unsigned char)buf[i] == pat(2 * PG + i), "pipe byte %ld", i);
	/* read(pipe, mapped buffer): the kernel writes a page not faulted in yet */
	memset(buf, 'K', PG);
	CHECK(write(pfd[1], buf, PG) == PG, "fill pipe");
	CHECK(read(pfd[0], p + 3 * PG, PG) == PG, "read(pipe, map)");
	CHECK(p[3 * PG] == 'K' && p[4 * PG - 1] == 'K', "kernel wrote the map");
	/* read(same file, map of it): the cache copies into its own mapping */
	CHECK(pread(fd, p + 5 * PG, PG, 2 * PG) == PG, "pread(file, map of the file)");
	CHECK((unsigned char)p[5 * PG + 7] == pat(2 * PG + 7), "copied");
	/* read(other file, map) */
	{
		char other[] = "/var/tmp/upc-preload-other.XXXXXX";
		int fo = mkstemp(other);

		CHECK(fo >= 0 && pwrite(fo, buf, PG, 0) == PG, "other file");
		unlink(other);
		CHECK(pread(fo, p + 6 * PG, PG, 0) == PG && p[6 * PG] == 'K', "read(other, map)");
		/* O_DIRECT into the map (page-aligned, an uncached page) */
		{
			char path[64];
			int fdd;

			snprintf(path, sizeof(path), "/proc/self/fd/%d", fo);
			fdd = open(path, O_RDONLY | O_DIRECT);
			if (fdd >= 0) {
				ssize_t n = pread(fdd, p + 7 * PG, PG, 0);

				CHECK(n == PG, "O_DIRECT read into the map");
				CHECK(p[7 * PG] == 'K' && p[8 * PG - 1] == 'K', "O_DIRECT data");
			}
		}
	}
	return 0;
}

/* Threads, each on its own pages, through the map and pwrite/pread. */
static int tfd;
static char *tmap;

static void *thread_fn(void *arg)
{
	long t = (long)arg;

	for (int i = 0; i < 200; i++) {
		char v = (char)('a' + (i % 26)), buf[1];

		tmap[t * PG + (i % 64)] = v;
		if (pread(tfd, buf, 1, t * PG + (i % 64)) != 1 || buf[0] != v)
			return (void *)1;
		if (pwrite(tfd, &v, 1, t * PG + 2048 + (i % 64)) != 1 || tmap[t * PG + 2048 + (i % 64)] != v)
			return (void *)2;
	}
	return NULL;
}

static int case_threads(void)
{
	pthread_t th[4];

	tfd = open_file(O_RDWR);
	tmap = map_file(tfd, 4 * PG, PROT_READ | PROT_WRITE);
	for (long t = 0; t < 4; t++)
		CHECK(pthread_create(&th[t], NULL, thread_fn, (void *)t) == 0, "pthread_create");
	for (int t = 0; t < 4; t++) {
		void *r;

		CHECK(pthread_join(th[t], &r) == 0 && r == NULL, "thread %d: %ld", t, (long)r);
	}
	return 0;
}

static int case_private(void)
{
	int fd = open_file(O_RDWR);
	char *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	char buf[1];

	CHECK(p != MAP_FAILED, "private map");
	p[0] = 'X';
	CHECK(pread(fd, buf, 1, 0) == 1 && (unsigned char)buf[0] == pat(0), "a private write stays private");
	return 0;
}

/*
 * Durable writes without a sync call: an O_WRONLY|O_DSYNC descriptor (how
 * LMDB writes its meta page), an O_SYNC one and pwritev2(RWF_DSYNC), then
 * kill -9: the test finds all three in the file.  A plain write is not.
 */
static int case_dsync(void)
{
	int fd = open_file(O_RDWR), wd = open_file(O_WRONLY | O_DSYNC), ws = open_file(O_RDWR | O_SYNC);
	char *p = map_file(fd, 2 * PG, PROT_READ);
	struct iovec v = { (void *)"rwfdsync", 8 };

	CHECK(pwrite(wd, "o-dsync", 7, 10) == 7, "pwrite O_WRONLY|O_DSYNC");
	CHECK(!memcmp(p + 10, "o-dsync", 7), "the mapping sees it");
	CHECK(pwrite(ws, "o-sync", 6, 100) == 6, "pwrite O_SYNC");
	CHECK(pwritev2(fd, &v, 1, PG + 10, RWF_DSYNC) == 8, "pwritev2 RWF_DSYNC");
	CHECK(pwrite(fd, "lost", 4, PG + 100) == 4, "a plain pwrite");
	kill(getpid(), SIGKILL);
	return 1;
}

/* ---- two processes, one file (the registry: upcache-run(1), ONE CACHE PER FILE) */

/* Wait (60 s at most) until FILE.SUFFIX exists. */
static void wait_for(const char *suffix)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s.%s", file, suffix);
	for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
		usleep(10000);
	CHECK(access(path, F_OK) == 0, "%s never appeared", path);
}

/* Make FILE.SUFFIX, holding @text. */
static void signal_file(const char *suffix, const char *text)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof(path), "%s.%s", file, suffix);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0, "create %s", path);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
	close(fd);
}

/*
 * The first process: caches FILE (a mapping and a pwrite, neither synced),
 * says FILE.ready, waits for FILE.done, writes again and exits (written
 * back at exit).
 */
static int case_hold(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 2 * PG, PROT_READ | PROT_WRITE);

	memcpy(p, "first-map", 9);
	CHECK(pwrite(fd, "first-pwrite", 12, PG + 5) == 12, "pwrite");
	signal_file("ready", "");
	wait_for("done");
	memcpy(p + 100, "after-second", 12);
	CHECK(pwrite(fd, "after-pwrite", 12, PG + 100) == 12, "pwrite");
	return 0;
}

/*
 * The second process, while the first caches FILE: no mapping (EAGAIN),
 * no write (EAGAIN), whatever the call; reads go to the kernel.
 */
static int case_second(void)
{
	int fd = open_file(O_RDWR);
	struct iovec v = { "x", 1 };
	char buf[4];
	void *p;

	p = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p == MAP_FAILED && errno == EAGAIN, "a second cache of the file");
	p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p == MAP_FAILED && errno == EAGAIN, "a second cache of the file, read-write");
	CHECK(pwrite(fd, "SECOND", 6, 0) < 0 && errno == EAGAIN, "pwrite of a file another process caches");
	CHECK(write(fd, "SECOND", 6) < 0 && errno == EAGAIN, "write");
	CHECK(pwritev(fd, &v, 1, 3) < 0 && errno == EAGAIN, "pwritev");
	CHECK(ftruncate(fd, 0) < 0 && errno == EAGAIN, "ftruncate");
	CHECK(truncate(file, 0) < 0 && errno == EAGAIN, "truncate");
	CHECK(fallocate(fd, 0, 0, 4 * PG) < 0 && errno == EAGAIN, "fallocate");
	CHECK(pread(fd, buf, 4, 2 * PG - 4) == 4, "pread goes to the kernel");
	/* a private mapping is no second cache: the kernel's */
	p = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, 0);
	CHECK(p != MAP_FAILED, "private mapping");
	return 0;
}

/* The first process maps FILE through the kernel (PROT_EXEC: never the cache's) until FILE.done. */
static int case_hold_kernel(void)
{
	int fd = open_file(O_RDONLY);
	void *p = mmap(NULL, PG, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);

	CHECK(p != MAP_FAILED, "mmap PROT_EXEC");
	signal_file("ready", "");
	wait_for("done");
	return 0;
}

/* The second, while the first maps FILE through the kernel: no cache, but kernel writes are fine. */
static int case_second_kernel(void)
{
	int fd = open_file(O_RDWR);
	void *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	CHECK(p == MAP_FAILED && errno == EAGAIN, "a cache of a file another process maps through the kernel");
	CHECK(pwrite(fd, "kernel", 6, 300) == 6, "pwrite through the kernel");
	return 0;
}

/* A process after the first: caches FILE and writes "third". */
static int case_take(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, PG, PROT_READ | PROT_WRITE);

	memcpy(p + 200, "third", 5);
	return 0;
}

/*
 * A forked child shares its parent's cache: it writes through the
 * inherited mapping and pwrite, the parent sees it.  Then the parent exits
 * and the child stays (its pid in FILE.ready) until FILE.done: the entry
 * must go with the parent, not with the child.
 */
static int case_fork_stay(void)
{
	int fd = open_file(O_RDWR), pfd[2];
	char *p = map_file(fd, 2 * PG, PROT_READ | PROT_WRITE), pid_s[32], c;
	pid_t pid;

	CHECK(pipe(pfd) == 0, "pipe");
	p[0] = 'P';
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char buf[1];

		close(pfd[0]);
		if (p[0] != 'P')
			_exit(2);
		p[1] = 'C';
		if (pwrite(fd, "c", 1, PG + 1) != 1 || pread(fd, buf, 1, 0) != 1 || buf[0] != 'P')
			_exit(3);
		(void)!write(pfd[1], "k", 1);
		close(pfd[1]);
		wait_for("done");
		_exit(0);
	}
	close(pfd[1]);
	CHECK(read(pfd[0], &c, 1) == 1, "the child did its writes");
	CHECK(p[1] == 'C' && p[PG + 1] == 'c', "the parent sees the child's writes");
	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	signal_file("ready", pid_s);
	return 0;
}

/* ---- two processes, one cache: upcache-run --shared (tests/test_run_shared.sh) */

/*
 * The first: writes through its mapping and with pwrite, says FILE.ready,
 * waits for FILE.done, and then sees the second's write through its own
 * mapping - at once, nothing written back (each process's mapping maps
 * the daemon's pages).
 */
static int case_share_a(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE);

	memcpy(p + 10, "from-a-map", 10);
	CHECK(pwrite(fd, "from-a-pwrite", 13, PG + 20) == 13, "pwrite");
	signal_file("ready", "");
	wait_for("done");
	CHECK(!memcmp(p + 2 * PG + 30, "from-b-map", 10), "b's store, through a's mapping");
	CHECK(!memcmp(p + 3 * PG + 40, "from-b-pwrite", 13), "b's pwrite, through a's mapping");
	return 0;
}

/* The second: sees the first's writes through its mapping and pread, writes its own, says FILE.done. */
static int case_share_b(void)
{
	int fd, i;
	char *p, buf[16];

	wait_for("ready");
	fd = open_file(O_RDWR);
	p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE);
	CHECK(!memcmp(p + 10, "from-a-map", 10), "a's store, through b's mapping");
	CHECK(!memcmp(p + PG + 20, "from-a-pwrite", 13), "a's pwrite, through b's mapping");
	CHECK(pread(fd, buf, 10, 10) == 10 && !memcmp(buf, "from-a-map", 10), "a's store, by pread");
	for (i = 2 * (int)PG; i < 4 * (int)PG; i += 997)	/* the rest is the file's */
		CHECK(p[i] == (char)pat(i), "offset %d", i);
	memcpy(p + 2 * PG + 30, "from-b-map", 10);
	CHECK(pwrite(fd, "from-b-pwrite", 13, 3 * PG + 40) == 13, "pwrite");
	signal_file("done", "");
	return 0;
}

/*
 * A writer to be killed: writes "killed-N" into each of 64 pages through
 * its mapping and "kpwrite" with pwrite, nothing synced, says FILE.ready
 * with its pid, and waits to be killed.
 */
static int case_kill_writer(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 64 * PG, PROT_READ | PROT_WRITE), pid_s[32];

	for (int i = 0; i < 64; i++)
		snprintf(p + i * PG + 50, 16, "killed-%d", i);
	CHECK(pwrite(fd, "kpwrite", 7, 64 * PG - 100) == 7, "pwrite");
	snprintf(pid_s, sizeof(pid_s), "%d", (int)getpid());
	signal_file("ready", pid_s);
	for (;;)
		pause();
}

/* After the writer's kill -9 and the daemon's SIGTERM, on the kernel: its writes are in the file. */
static int case_kill_check(void)
{
	int fd = open_file(O_RDONLY);
	char buf[16], want[16];

	for (int i = 0; i < 64; i++) {
		snprintf(want, sizeof(want), "killed-%d", i);
		CHECK(pread(fd, buf, strlen(want) + 1, i * PG + 50) == (ssize_t)strlen(want) + 1 &&
			      !memcmp(buf, want, strlen(want) + 1), "page %d: the killed writer's store is lost", i);
	}
	CHECK(pread(fd, buf, 7, 64 * PG - 100) == 7 && !memcmp(buf, "kpwrite", 7), "its pwrite is lost");
	return 0;
}

/*
 * Under --shared: a read-only mapping through a read-only descriptor of a
 * file this process also has open read-write (LMDB reopening its
 * environment read-only) works, sees the data, and cannot be made
 * writable (EACCES, as mprotect(2) of a mapping of an O_RDONLY file).
 */
static int case_ro_reopen(void)
{
	int fd = open_file(O_RDWR), ro;
	char *p = map_file(fd, PG, PROT_READ | PROT_WRITE), *q;

	memcpy(p + 10, "rw-store", 8);
	ro = open_file(O_RDONLY);
	q = map_file(ro, PG, PROT_READ);
	CHECK(!memcmp(q + 10, "rw-store", 8), "the read-only mapping sees the store");
	CHECK(mprotect(q, PG, PROT_READ | PROT_WRITE) < 0 && errno == EACCES, "mprotect(PROT_WRITE) of it");
	CHECK(mprotect(q, PG, PROT_NONE) == 0 && mprotect(q, PG, PROT_READ) == 0, "mprotect within what it allows");
	memcpy(p + 20, "second", 6);
	CHECK(!memcmp(q + 20, "second", 6), "and a later store");
	return 0;
}

/*
 * Under --shared, one program after another (SQLite's pattern: pwrite in a
 * transaction, a mapping only to read, later).  The first stores through
 * its mapping and exits, nothing synced: its page is upcd's, dirty.
 */
static int case_later_a(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE);

	memcpy(p + 10, "from-later-a", 12);
	return 0;
}

/*
 * The next reads and writes the file before it maps it: its pread sees the
 * first's store, its pwrite over it is what its mapping then sees, and
 * what the file has once upcd wrote back (later-check).
 */
static int case_later_b(void)
{
	int fd = open_file(O_RDWR);
	char buf[16], *p;

	CHECK(pread(fd, buf, 12, 10) == 12 && !memcmp(buf, "from-later-a", 12),
	      "the first program's store, by pread before any mapping");
	CHECK(pwrite(fd, "from-later-b", 12, 10) == 12, "pwrite");
	p = map_file(fd, 4 * PG, PROT_READ);
	CHECK(!memcmp(p + 10, "from-later-b", 12), "the pwrite made before the mapping, through it");
	return 0;
}

/* After the daemon's SIGTERM, on the kernel: the second program's pwrite, not the first's store. */
static int case_later_check(void)
{
	int fd = open_file(O_RDONLY);
	char buf[16];

	CHECK(pread(fd, buf, 12, 10) == 12 && !memcmp(buf, "from-later-b", 12),
	      "the second program's pwrite was undone by the first's store");
	return 0;
}

/*
 * Under --shared, a writer through upcd's death (sync tracking): stores,
 * says FILE.ready with its pid, and once FILE.killed is there (kill -9 of
 * upcd) stores again, serving itself.  Once FILE.back is there (a new upcd)
 * its pwrite and msync must not wait for $UPC_RECONNECT: the hand-back of
 * what it wrote meanwhile wrote the file with pwrite(2), which the shim
 * routed to upc_pwrite() through the daemon the hand-back was for.
 */
static int case_away_writer(void)
{
	int fd = open_file(O_RDWR);
	char *p = map_file(fd, 4 * PG, PROT_READ | PROT_WRITE), pid_s[32];
	struct timespec t0, t1;

	memcpy(p + 10, "before-kill", 11);
	snprintf(pid_s, sizeof(pid_s), "%d", (int)getpid());
	signal_file("ready", pid_s);
	wait_for("killed");
	memcpy(p + PG + 10, "while-away", 10);
	signal_file("wrote", "");
	wait_for("back");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(pwrite(fd, "after-back", 10, 2 * PG + 10) == 10, "pwrite after the restart");
	CHECK(msync(p, 4 * PG, MS_SYNC) == 0, "msync after the restart");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(t1.tv_sec - t0.tv_sec < 20, "the calls after the restart waited %ld s (the hand-back for itself)",
	      (long)(t1.tv_sec - t0.tv_sec));
	return 0;
}

/* After it, on the kernel: its three writes. */
static int case_away_check(void)
{
	int fd = open_file(O_RDONLY);
	char buf[16];

	CHECK(pread(fd, buf, 11, 10) == 11 && !memcmp(buf, "before-kill", 11), "the store before the kill");
	CHECK(pread(fd, buf, 10, PG + 10) == 10 && !memcmp(buf, "while-away", 10), "the store while upcd was away");
	CHECK(pread(fd, buf, 10, 2 * PG + 10) == 10 && !memcmp(buf, "after-back", 10), "the pwrite after");
	return 0;
}

/* Make FILE: @pages pages of pat() (not under the shim: a test's set-up). */
static int case_mkfile(const char *pages)
{
	size_t len = (size_t)atol(pages) * PG;
	char *b = malloc(len);
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);

	CHECK(fd >= 0 && b, "create %s", file);
	for (size_t i = 0; i < len; i++)
		b[i] = (char)pat(i);
	CHECK(pwrite(fd, b, len, 0) == (ssize_t)len, "write %s", file);
	free(b);
	return close(fd) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *c;

	if (argc < 3) {
		fprintf(stderr, "usage: preload-prog CASE FILE [ARG]\n");
		return 2;
	}
	c = argv[1];
	file = argv[2];
	alarm(60);	/* a hang is a failure */
	if (!strcmp(c, "coherence"))
		return case_coherence();
	if (!strcmp(c, "size"))
		return case_size();
	if (!strcmp(c, "msync-kill"))
		return case_msync_kill();
	if (!strcmp(c, "protect"))
		return case_protect();
	if (!strcmp(c, "dsync"))
		return case_dsync();
	if (!strcmp(c, "advise"))
		return case_advise();
	if (!strcmp(c, "remap"))
		return case_remap();
	if (!strcmp(c, "unmap"))
		return case_unmap();
	if (!strcmp(c, "fork"))
		return case_fork();
	if (!strcmp(c, "exec"))
		return case_exec(argv[0]);
	if (!strcmp(c, "spawn"))
		return case_spawn(argv[0]);
	if (!strcmp(c, "check-prefix") && argc > 3)
		return case_check_prefix(argv[3]);
	if (!strcmp(c, "_exit"))
		return case_underscore_exit();
	if (!strcmp(c, "kernel-access"))
		return case_kernel_access();
	if (!strcmp(c, "threads"))
		return case_threads();
	if (!strcmp(c, "private"))
		return case_private();
	if (!strcmp(c, "hold"))
		return case_hold();
	if (!strcmp(c, "second"))
		return case_second();
	if (!strcmp(c, "hold-kernel"))
		return case_hold_kernel();
	if (!strcmp(c, "second-kernel"))
		return case_second_kernel();
	if (!strcmp(c, "take"))
		return case_take();
	if (!strcmp(c, "fork-stay"))
		return case_fork_stay();
	if (!strcmp(c, "ro-reopen"))
		return case_ro_reopen();
	if (!strcmp(c, "mkfile") && argc > 3)
		return case_mkfile(argv[3]);
	if (!strcmp(c, "share-a"))
		return case_share_a();
	if (!strcmp(c, "share-b"))
		return case_share_b();
	if (!strcmp(c, "kill-writer"))
		return case_kill_writer();
	if (!strcmp(c, "kill-check"))
		return case_kill_check();
	if (!strcmp(c, "away-writer"))
		return case_away_writer();
	if (!strcmp(c, "away-check"))
		return case_away_check();
	if (!strcmp(c, "later-a"))
		return case_later_a();
	if (!strcmp(c, "later-b"))
		return case_later_b();
	if (!strcmp(c, "later-check"))
		return case_later_check();
	fprintf(stderr, "preload-prog: unknown case %s\n", c);
	return 2;
}
