/* SPDX-License-Identifier: MIT */
/*
 * The file store: it writes the caller's file in place, through an open
 * file description of its own, whatever the status flags (O_APPEND) of the
 * descriptor the caller mapped, then or later.
 */
#include "helpers.h"

#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>

/*
 * Map a file of @size bytes through a descriptor opened O_RDWR | @oflags
 * (or given O_APPEND by fcntl after upc_map when @setfl_after), write a
 * byte into page 1 and into the last page, msync, and check the file: the
 * same length, the new bytes in place, the rest unchanged.
 */
static void write_back_in_place(unsigned int cache_flags, size_t size, int oflags, bool setfl_after)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB | cache_flags);
	char path[64];
	int fd = tmpfile_pattern(size, path), afd;
	size_t last = (size - 1) & ~(PAGE - 1);
	unsigned char *p, x;
	struct stat st;

	afd = open(path, O_RDWR | oflags);
	cr_assert_geq(afd, 0, "open: %s", strerror(errno));
	unlink(path);
	cr_assert_eq(upc_map(c, afd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	if (setfl_after)
		cr_assert_eq(fcntl(afd, F_SETFL, fcntl(afd, F_GETFL) | O_APPEND), 0);
	p[PAGE + 1] = 0xa5;
	p[last + 3] = 0x5a;
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_size, (off_t)size, "write-back changed the file's length: %lld, not %zu",
		     (long long)st.st_size, size);
	cr_assert_eq(pread(fd, &x, 1, PAGE + 1), 1);
	cr_assert_eq(x, 0xa5, "page 1 was not written in place");
	cr_assert_eq(pread(fd, &x, 1, (off_t)last + 3), 1);
	cr_assert_eq(x, 0x5a, "the last page was not written in place");
	cr_assert_eq(pread(fd, &x, 1, PAGE), 1);
	cr_assert_eq(x, pat(PAGE));
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(afd);
	close(fd);
}

Test(store, an_o_append_fd_is_written_in_place, .timeout = 60)
{
	write_back_in_place(0, 4 * PAGE, O_APPEND, false);
}

/* O_DIRECT: the partial last page (not 512-aligned) goes through the buffered descriptor. */
Test(store, an_o_append_fd_is_written_in_place_direct, .timeout = 60)
{
	write_back_in_place(UPC_CACHE_DIRECT_IO, 3 * PAGE + 1000, O_APPEND, false);
}

/* The caller's later fcntl(F_SETFL) is the caller's: write-back does not follow it. */
Test(store, o_append_set_after_map_does_not_change_write_back, .timeout = 60)
{
	write_back_in_place(0, 4 * PAGE, 0, true);
}

Test(store, o_append_set_after_map_does_not_change_write_back_direct, .timeout = 60)
{
	write_back_in_place(UPC_CACHE_DIRECT_IO, 3 * PAGE + 1000, 0, true);
}

/*
 * Where the store cannot open the file again (here: a file whose mode no
 * longer lets its owner open it for writing, so that only the descriptor
 * already open can write it), it shares the caller's open file description:
 * then it refuses an O_APPEND descriptor, at upc_map and at write-back,
 * rather than append.
 */
static int shared_description_refuses_o_append(void *arg)
{
	char path[] = "/var/tmp/upc-test.XXXXXX";
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_cache *c = nobody_cache(&o);
	unsigned char buf[4 * PAGE], *p, x;
	int fd = mkstemp(path), ret;
	struct stat st;

	(void)arg;
	nobody_check(fd >= 0, "mkstemp: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = pat(i);
	nobody_check(pwrite(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf), "pwrite");
	nobody_check(fchmod(fd, 0400) == 0 && unlink(path) == 0, "fchmod: %s", strerror(errno));

	nobody_check(fcntl(fd, F_SETFL, O_APPEND) == 0, "F_SETFL");
	ret = upc_map(c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p);
	nobody_check(ret == -EINVAL, "upc_map of an O_APPEND fd it cannot reopen: %s, not -EINVAL",
		     upc_strerror(ret));

	nobody_check(fcntl(fd, F_SETFL, 0) == 0, "F_SETFL");
	ret = upc_map(c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p);
	nobody_check(ret == 0, "upc_map: %s", upc_strerror(ret));
	p[PAGE + 1] = 0xa5;
	ret = upc_msync(c, p, 4 * PAGE, UPC_MS_SYNC);
	nobody_check(ret == 0, "upc_msync: %s", upc_strerror(ret));
	nobody_check(pread(fd, &x, 1, PAGE + 1) == 1 && x == 0xa5, "page 1 not written");

	/* O_APPEND set behind the store's back: write-back fails, the page stays dirty. */
	nobody_check(fcntl(fd, F_SETFL, O_APPEND) == 0, "F_SETFL");
	p[PAGE + 2] = 0xa6;
	ret = upc_msync(c, p, 4 * PAGE, UPC_MS_SYNC);
	nobody_check(ret == -EINVAL, "upc_msync through an O_APPEND description: %s, not -EINVAL",
		     upc_strerror(ret));
	nobody_check(fstat(fd, &st) == 0 && st.st_size == 4 * PAGE, "the file grew to %lld bytes",
		     (long long)st.st_size);
	nobody_check(fcntl(fd, F_SETFL, 0) == 0, "F_SETFL");
	ret = upc_msync(c, p, 4 * PAGE, UPC_MS_SYNC);
	nobody_check(ret == 0, "upc_msync: %s", upc_strerror(ret));
	nobody_check(pread(fd, &x, 1, PAGE + 2) == 1 && x == 0xa6, "the refused write was lost");
	nobody_check(fstat(fd, &st) == 0 && st.st_size == 4 * PAGE, "the file grew to %lld bytes",
		     (long long)st.st_size);
	ret = upc_cache_destroy(c);
	nobody_check(ret == 0, "upc_cache_destroy: %s", upc_strerror(ret));
	close(fd);
	return 0;
}

Test(store, a_shared_description_refuses_o_append, .timeout = 60)
{
	char msg[512];
	int status = run_as_nobody(shared_description_refuses_o_append, NULL, msg, sizeof(msg));

	nobody_report(status, msg);
}

/*
 * A ring that an error left with a request in flight must not go back to
 * the pool as it is: the next caller would take that request's completion
 * for one of its own (user_data is an index into the caller's array).  The
 * error here is a real one: a seccomp filter on one thread makes its
 * io_uring_enter(GETEVENTS) fail (a sandbox that forbids waiting), so that
 * the write-back write of its upc_msync, a buffered write that io_uring
 * hands to a worker, is still in flight when its wait fails.  (The
 * fdatasync that follows is a plain syscall: store.c, fs_sync_flags().)  Other threads are not filtered:
 * their faults and write-backs must then read and write the right data.
 */
#define WAIT_ERRNO ENOLINK	/* what the filtered waits fail with: rare enough to recognize */

static int read_errors_seen;

static int count_read_error(void *arg, const struct upc_read_error *e)
{
	(void)arg; (void)e;
	read_errors_seen++;
	return UPC_READ_ERROR_ZERO;
}

struct failing_msync {
	struct upc_cache *c;
	unsigned char *p;
	size_t len;
	int ret;
	int setup_err;
};

static void *msync_with_failing_waits(void *arg)
{
	struct failing_msync *fm = arg;
	struct sock_filter insns[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 0, 3),
		/* the flags argument: its low 32 bits */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[3]) +
			 (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? 4 : 0)),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, IORING_ENTER_GETEVENTS, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | WAIT_ERRNO),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(insns) / sizeof(insns[0]), .filter = insns };

	/* This thread only (no SECCOMP_FILTER_FLAG_TSYNC): the cache's threads keep waiting normally. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
		fm->setup_err = errno;
		return NULL;
	}
	fm->ret = upc_msync(fm->c, fm->p, fm->len, UPC_MS_SYNC);
	return NULL;
}

Test(store, a_failed_wait_leaves_no_completion_for_the_next_caller, .timeout = 60)
{
	const size_t n = 16;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB, .read_error = count_read_error);
	struct upc_cache *c = cache_new_opts(&o);
	int fd = tmpfile_pattern(n * PAGE, NULL), tries;
	struct failing_msync fm = { .c = c, .len = n * PAGE };
	unsigned char *p, x;
	pthread_t t;

	cr_assert_eq(upc_map(c, fd, 0, n * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(c, p, n * PAGE, UPC_ADV_RANDOM), 0);	/* one read I/O per fault */
	fm.p = p;
	/* The write may, rarely, be done before the wait: then nothing failed; again. */
	for (tries = 0; tries < 20; tries++) {
		p[0] = (unsigned char)(0x80 + tries);
		cr_assert_eq(pthread_create(&t, NULL, msync_with_failing_waits, &fm), 0);
		cr_assert_eq(pthread_join(t, NULL), 0);
		if (fm.setup_err)
			cr_skip_test("cannot install a seccomp filter: %s", strerror(fm.setup_err));
		if (fm.ret == -WAIT_ERRNO)
			break;
		cr_assert_eq(fm.ret, 0, "upc_msync: %s", upc_strerror(fm.ret));
	}
	if (tries == 20)
		cr_skip_test("no wait failed: every write was done before its wait");
	usleep(100 * 1000);	/* what was in flight has completed by now */

	/*
	 * Every ring is used in turn: faults (one read each) and msyncs (a
	 * write each) reach the ring of the failed wait.
	 */
	for (size_t i = 1; i < n; i++) {
		cr_assert_eq(p[i * PAGE + 1], pat(i * PAGE + 1), "page %zu read wrong (read errors: %d)", i,
			     read_errors_seen);
		p[i * PAGE] = (unsigned char)(0x40 + i);
		int ret = upc_msync(c, p, n * PAGE, UPC_MS_SYNC);
		cr_assert_eq(ret, 0, "upc_msync after page %zu: %s", i, upc_strerror(ret));
	}
	cr_assert_eq(read_errors_seen, 0);
	for (size_t i = 1; i < n; i++) {
		cr_assert_eq(pread(fd, &x, 1, (off_t)(i * PAGE)), 1);
		cr_assert_eq(x, 0x40 + i, "page %zu not written", i);
	}
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, 0x80 + tries, "page 0 not written");
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
