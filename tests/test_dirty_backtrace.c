/* SPDX-License-Identifier: MIT */
/*
 * UPC_DEBUG=dirty-backtrace: for the first write that dirties a clean page,
 * the cache records the writing thread's stack (not the fault handler's),
 * and upcctl stats --backtraces shows it, named.  Off by default.  Both
 * fault paths are covered: a write to a cached clean page (write-protect
 * fault) and a write to a hole (MISSING fault with write), from the main
 * thread and from another one.  The writes land as usual.
 *
 * Synchronous tracking only (a first write must trap): the asynchronous
 * run skips.
 */
#include "trace-helpers.h"

#include <sys/syscall.h>

static char *backtraces_json(void)
{
	char *cmd, *out;
	int st;

	cr_assert(asprintf(&cmd, "%s stats --json --backtraces %d", build_path("tools/upcctl"), (int)getpid()) > 0);
	st = run_capture(cmd, &out);
	free(cmd);
	cr_assert_eq(st, 0, "%s", out);
	return out;
}

/* Poll until @want is in the published backtraces (5 s at most). */
static char *until(const char *want)
{
	char *out = NULL;

	for (int i = 0; i < 50; i++) {
		free(out);
		out = backtraces_json();
		if (strstr(out, want))
			return out;
		usleep(100 * 1000);
	}
	cr_assert_fail("no backtrace with \"%s\":\n%s", want, out);
	return out;
}

__attribute__((noinline)) static void dirty_it_from_here(volatile unsigned char *p)
{
	p[0] = 0x5a;
}

__attribute__((noinline)) static void fill_hole_from_here(volatile unsigned char *p)
{
	p[100] = 0x6b;
}

struct wt {
	volatile unsigned char *p;
	pid_t tid;
};

__attribute__((noinline)) static void *writer_thread(void *arg)
{
	struct wt *w = arg;

	w->tid = (pid_t)syscall(SYS_gettid);
	w->p[7] = 0x7c;
	return NULL;
}

static struct upc_cache *cache_with_backtraces(void)
{
	struct upc_cache *c;
	char *out;

	if (track_flags())
		cr_skip_test("dirty backtraces need synchronous tracking (under UPC_CACHE_ASYNC_WP a first "
			     "write does not trap)");
	if (access("/dev/shm", W_OK) != 0)
		cr_skip_test("/dev/shm is not writable here: backtraces are shown through it");
	setenv("UPC_DEBUG", "dirty-backtrace", 1);
	c = cache_new(UPC_CACHE_NO_BGWB);
	unsetenv("UPC_DEBUG");
	out = backtraces_json();
	if (!strstr(out, "\"debug\":2"))
		cr_skip_test("UPC_DEBUG=dirty-backtrace is not available in this build (upcache built "
			     "without libunwind.h, or libunwind.so.8 missing)");
	free(out);
	return c;
}

Test(dirty_backtrace, writer_stacks_are_recorded_and_named, .timeout = 60)
{
	struct upc_cache *c = cache_with_backtraces();
	volatile unsigned char *p;
	struct wt w;
	pthread_t th;
	char want[64], *out;
	unsigned char b;
	int fd = tmpfile_pattern(32 * PAGE, NULL);

	cr_assert_eq(upc_map(c, fd, 0, 32 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	(void)p[3 * PAGE];			/* cached and clean: the write below is a write-protect fault */
	dirty_it_from_here(p + 3 * PAGE);
	fill_hole_from_here(p + 20 * PAGE);	/* not cached: a MISSING fault with write */

	out = until("dirty_it_from_here");
	cr_assert(strstr(out, "fill_hole_from_here"), "%s", out);
	cr_assert(strstr(out, "\"page\":3,"), "%s", out);
	cr_assert(strstr(out, "\"page\":20,"), "%s", out);
	snprintf(want, sizeof(want), "\"tid\":%d,", (int)getpid());
	cr_assert(strstr(out, want), "the main thread wrote: %s", out);
	/* The caller is in the stack too, not only the function that stored. */
	cr_assert(strstr(out, "writer_stacks_are_recorded_and_named"), "%s", out);
	free(out);

	/* Another thread's write: its own thread id and stack. */
	w.p = p + 9 * PAGE;
	pthread_create(&th, NULL, writer_thread, &w);
	pthread_join(th, NULL);
	out = until("writer_thread");
	snprintf(want, sizeof(want), "\"tid\":%d,", (int)w.tid);
	cr_assert(strstr(out, want), "%s", out);
	free(out);

	/* A second write to a dirty page records nothing new; the data is all there. */
	dirty_it_from_here(p + 3 * PAGE);
	cr_assert_eq(upc_msync(c, (void *)p, 32 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &b, 1, 3 * PAGE), 1);
	cr_assert_eq(b, 0x5a);
	cr_assert_eq(pread(fd, &b, 1, 20 * PAGE + 100), 1);
	cr_assert_eq(b, 0x6b);
	cr_assert_eq(pread(fd, &b, 1, 9 * PAGE + 7), 1);
	cr_assert_eq(b, 0x7c);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(dirty_backtrace, text_output, .timeout = 60)
{
	struct upc_cache *c = cache_with_backtraces();
	volatile unsigned char *p;
	char *cmd, *out;
	int fd = tmpfile_pattern(8 * PAGE, NULL), st;

	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	(void)p[PAGE];
	dirty_it_from_here(p + PAGE);
	free(until("dirty_it_from_here"));
	cr_assert(asprintf(&cmd, "%s stats --backtraces %d", build_path("tools/upcctl"), (int)getpid()) > 0);
	st = run_capture(cmd, &out);
	cr_assert_eq(st, 0, "%s", out);
	cr_assert(strstr(out, "dirty backtraces (the first write that dirtied a clean page)"), "%s", out);
	cr_assert(strstr(out, "dirtied ino"), "%s", out);
	cr_assert(strstr(out, "dirty_it_from_here+0x"), "%s", out);
	free(out);
	free(cmd);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

Test(dirty_backtrace, off_by_default, .timeout = 60)
{
	struct upc_cache *c;
	volatile unsigned char *p;
	char *out;
	int fd = tmpfile_pattern(8 * PAGE, NULL);

	if (access("/dev/shm", W_OK) != 0)
		cr_skip_test("/dev/shm is not writable here");
	unsetenv("UPC_DEBUG");
	c = cache_new(UPC_CACHE_NO_BGWB);
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	(void)p[PAGE];
	dirty_it_from_here(p + PAGE);
	fill_hole_from_here(p + 5 * PAGE);
	cr_assert_eq(stats_of(c).pages_dirty, 2);
	usleep(300 * 1000);
	out = backtraces_json();
	cr_assert(strstr(out, "\"debug\":0"), "%s", out);
	cr_assert(strstr(out, "\"backtraces\":[]"), "%s", out);
	free(out);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
