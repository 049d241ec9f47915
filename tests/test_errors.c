/* SPDX-License-Identifier: MIT */
/*
 * I/O errors through the fault-injection store: a failed read is SIGBUS for
 * the access, a failed write keeps the page dirty and is reported by errseq
 * rules; nothing is lost silently.
 */
#include "helpers.h"

#include <setjmp.h>
#include <signal.h>

struct env {
	struct upc_store *store;
	struct upc_cache *c;
	int fd;
};

static struct env env_new(size_t size)
{
	struct env e;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &e.store), 0);
	o.store = e.store;
	e.c = cache_new_opts(&o);
	e.fd = tmpfile_pattern(size, NULL);
	return e;
}

static void env_free(struct env *e, int want_destroy)
{
	cr_assert_eq(upc_cache_destroy(e->c), want_destroy);
	cr_assert_eq(upc_store_destroy(e->store), 0);
	close(e->fd);
}

Test(errors, read_error_is_sigbus, .signal = SIGBUS, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	volatile unsigned char *p;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 5 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(p[4 * PAGE], pat(4 * PAGE));
	(void)p[5 * PAGE];
	cr_assert_fail("no SIGBUS");
}

static sigjmp_buf jb;
static void *volatile bus_addr;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)uc;
	bus_addr = si->si_addr;
	siglongjmp(jb, 1);
}

/*
 * The access that failed gets SIGBUS with its address; other mappings retry
 * the read.  The rule fails every read of page 5 until it is cleared: a
 * fault that reads a window first falls back to the page alone (fault.c),
 * and with a rule of one use that second read succeeded, rightly, with no
 * SIGBUS (a failure of this case, twice in CI under ASan: "no SIGBUS").
 * That the failed page is not cached is asked of the memfd (mincore(2) of
 * the mapping: the kernel's page cache of the memfd is the cache's pages).
 * Other pages may be, read ahead; the other failure, "a failed page is not
 * cached", asked that no page at all was.
 */
Test(errors, read_error_sigbus_has_the_address_and_other_mappings_retry, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	volatile unsigned char *p, *q;
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	unsigned char vec = 1;
	int hits = 0;

	sigaction(SIGBUS, &sa, NULL);
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 5 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	if (sigsetjmp(jb, 1) == 0)
		(void)p[5 * PAGE + 8];
	else
		hits++;
	cr_assert_eq(hits, 1, "no SIGBUS");
	cr_assert_eq((uintptr_t)bus_addr & ~(PAGE - 1), (uintptr_t)(p + 5 * PAGE), "si_addr %p, page %p",
		     bus_addr, (void *)(p + 5 * PAGE));
	cr_assert_eq(stats_of(e.c).read_errors, 1);
	cr_assert_eq(mincore((void *)(p + 5 * PAGE), PAGE, &vec), 0);
	cr_assert_eq(vec & 1, 0, "a failed page is not cached");
	/* The rule gone: a new mapping reads the page from the store. */
	cr_assert_eq(upc_store_inject_clear(e.store), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(q[5 * PAGE + 8], pat(5 * PAGE + 8));
	cr_assert_eq(mincore((void *)(q + 5 * PAGE), PAGE, &vec), 0);
	cr_assert_eq(vec & 1, 1, "the page read is cached (mincore sees the memfd's pages)");
	signal(SIGBUS, SIG_DFL);
	env_free(&e, 0);
}

Test(errors, short_read_at_fault_is_sigbus, .signal = SIGBUS, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	volatile unsigned char *p;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 0, 16 * PAGE, UPC_INJECT_SHORT, 0, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	(void)p[0];
	cr_assert_fail("no SIGBUS");
}

Test(errors, delayed_read_returns_the_right_data, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *p;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 0, 16 * PAGE, UPC_INJECT_DELAY, 20000, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < 16 * PAGE; i += 511)
		cr_assert_eq(p[i], pat(i));
	env_free(&e, 0);
}

Test(errors, write_error_keeps_page_dirty_and_is_reported_once, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *p, x;

	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[3 * PAGE] = 0x51;
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_WRITE, 3 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, 1), 0);
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), -EIO);
	struct upc_stats st = stats_of(e.c);
	cr_assert_eq(st.pages_dirty, 1, "a page that failed to write stays dirty");
	cr_assert_eq(st.wb_errors, 1);
	cr_assert_eq(pread(e.fd, &x, 1, 3 * PAGE), 1);
	cr_assert_eq(x, pat(3 * PAGE));
	/* The rule is used up: the next msync writes the page and reports nothing new. */
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(e.fd, &x, 1, 3 * PAGE), 1);
	cr_assert_eq(x, 0x51, "the retried write must land");
	cr_assert_eq(stats_of(e.c).pages_dirty, 0);
	env_free(&e, 0);
}

Test(errors, errseq_every_mapping_sees_the_error_once, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *a, *b, *late;

	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&b), 0);
	a[PAGE] = 1;
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_WRITE, 0, 16 * PAGE, UPC_INJECT_ERROR, ENOSPC, 1), 0);
	cr_assert_eq(upc_msync(e.c, a, 16 * PAGE, UPC_MS_SYNC), -ENOSPC);
	cr_assert_eq(upc_msync(e.c, a, 16 * PAGE, UPC_MS_SYNC), 0, "reported once through a");
	/* b was mapped before the error and never saw it: it gets it once. */
	cr_assert_eq(upc_msync(e.c, b, 16 * PAGE, UPC_MS_SYNC), -ENOSPC);
	cr_assert_eq(upc_msync(e.c, b, 16 * PAGE, UPC_MS_SYNC), 0);
	/* A mapping made after the error samples it and does not see it. */
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&late), 0);
	cr_assert_eq(upc_msync(e.c, late, 16 * PAGE, UPC_MS_SYNC), 0);
	env_free(&e, 0);
}

Test(errors, fdatasync_error_is_reported, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *p;

	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 1;
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_WRITE, 0, 0, UPC_INJECT_SYNC_ERROR, EIO, 1), 0);
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), -EIO);
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	env_free(&e, 0);
}

Test(errors, short_write_is_an_error_and_the_page_stays_dirty, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *p;

	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[2 * PAGE] = 1;
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_WRITE, 2 * PAGE, PAGE, UPC_INJECT_SHORT, 100, 1), 0);
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), -EIO);
	cr_assert_eq(stats_of(e.c).pages_dirty, 1);
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(e.c).pages_dirty, 0);
	env_free(&e, 0);
}

Test(errors, async_msync_reports_a_background_error, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *p;

	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 1;
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_WRITE, 0, PAGE, UPC_INJECT_ERROR, EIO, 1), 0);
	/* No background writer: UPC_MS_ASYNC writes in the caller, and reports like SYNC. */
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_ASYNC), -EIO);
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_ASYNC), 0);
	env_free(&e, 0);
}

Test(errors, destroy_reports_data_it_could_not_write, .timeout = 60)
{
	struct env e = env_new(16 * PAGE);
	unsigned char *p;

	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 1;
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_WRITE, 0, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	env_free(&e, -EIO);
}

Test(errors, destroy_reports_an_error_no_msync_saw, .timeout = 60)
{
	struct upc_store *store;
	struct upc_cache *c;
	unsigned char *p;
	int fd;
	UPC_OPTS(upc_cache_opts, o, .dirty_expire_ms = 50, .writeback_interval_ms = 20);

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	o.store = store;
	c = cache_new_opts(&o);
	fd = tmpfile_pattern(16 * PAGE, NULL);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_WRITE, 0, PAGE, UPC_INJECT_ERROR, EIO, 1), 0);
	p[0] = 1;
	/* The background writer meets the error; the page is written on its next pass. */
	for (int i = 0; i < 500 && stats_of(c).wb_errors == 0; i++)
		usleep(10000);
	cr_assert_eq(stats_of(c).wb_errors, 1);
	cr_assert_eq(upc_cache_destroy(c), -EIO, "an error nobody was told of is reported at destroy");
	cr_assert_eq(upc_store_destroy(store), 0);
	unsigned char x;
	cr_assert_eq(pread(fd, &x, 1, 0), 1);
	cr_assert_eq(x, 1, "the data was still written");
	close(fd);
}

/* The application's read_error callback decides instead of SIGBUS. */
struct rerr {
	int action;
	int calls;
	unsigned int last_attempt;
	off_t offset;
	int err;
};

static int on_read_error(void *arg, const struct upc_read_error *e)
{
	struct rerr *r = arg;

	r->calls++;
	r->last_attempt = e->attempt;
	r->offset = e->offset;
	r->err = e->err;
	return r->action;
}

static struct env env_cb(struct rerr *r)
{
	struct env e;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB, .read_error = on_read_error,
		 .read_error_arg = r);

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &e.store), 0);
	o.store = e.store;
	e.c = cache_new_opts(&o);
	e.fd = tmpfile_pattern(16 * PAGE, NULL);
	return e;
}

Test(errors, read_error_callback_retry_reads_again, .timeout = 60)
{
	struct rerr r = { .action = UPC_READ_ERROR_RETRY };
	struct env e = env_cb(&r);
	unsigned char *p;

	/* Two failures, then the store recovers. */
	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 6 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, 2), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(e.c, p, 16 * PAGE, UPC_ADV_RANDOM), 0);
	cr_assert_eq(p[6 * PAGE + 3], pat(6 * PAGE + 3));
	cr_assert_eq(r.calls, 2);
	cr_assert_eq(r.last_attempt, 1);
	cr_assert_eq(r.offset, 6 * PAGE);
	cr_assert_eq(r.err, -EIO);
	cr_assert_eq(stats_of(e.c).read_errors, 2);
	env_free(&e, 0);
}

Test(errors, read_error_callback_retry_is_bounded, .signal = SIGBUS, .timeout = 60)
{
	static struct rerr r = { .action = UPC_READ_ERROR_RETRY };
	struct env e = env_cb(&r);
	volatile unsigned char *p;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 6 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(e.c, (void *)p, 16 * PAGE, UPC_ADV_RANDOM), 0);
	(void)p[6 * PAGE];
	cr_assert_fail("a store that never recovers must end in SIGBUS (after %d calls)", r.calls);
}

Test(errors, read_error_callback_zero_maps_a_clean_zero_page, .timeout = 60)
{
	struct rerr r = { .action = UPC_READ_ERROR_ZERO };
	struct env e = env_cb(&r);
	unsigned char *p, x;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 6 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(e.c, p, 16 * PAGE, UPC_ADV_RANDOM), 0);
	for (size_t i = 0; i < PAGE; i++)
		cr_assert_eq(p[6 * PAGE + i], 0);
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(stats_of(e.c).pages_dirty, 0, "a zero page stands in for the data, it is not new data");
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(e.fd, &x, 1, 6 * PAGE + 9), 1);
	cr_assert_eq(x, pat(6 * PAGE + 9), "the file keeps its data");
	env_free(&e, 0);
}

/*
 * The zero page that stands in for an unreadable page is clean, but its
 * data is not the file's: write-back never writes it, also not in a gap
 * between dirty pages (writeback.c, clustering), where it would overwrite
 * data the store may be able to read again.
 */
Test(errors, a_zero_page_for_a_read_error_is_not_written_as_a_gap, .timeout = 60)
{
	struct rerr r = { .action = UPC_READ_ERROR_ZERO };
	struct env e = env_cb(&r);
	unsigned char *p, x;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 6 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_advise(e.c, p, 16 * PAGE, UPC_ADV_RANDOM), 0);
	for (size_t pg = 3; pg < 10; pg++)
		(void)*(volatile unsigned char *)(p + pg * PAGE);
	cr_assert_eq(r.calls, 1);
	p[4 * PAGE] = 0x61;	/* 5-7 between them: cached and clean, 6 is the zero page */
	p[8 * PAGE] = 0x62;
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(e.c).wb_gap_pages, 0, "a gap with the zero page was written");
	cr_assert_eq(pread(e.fd, &x, 1, 6 * PAGE + 9), 1);
	cr_assert_eq(x, pat(6 * PAGE + 9), "the file keeps its data");
	cr_assert_eq(pread(e.fd, &x, 1, 8 * PAGE), 1);
	cr_assert_eq(x, 0x62);
	/* Once written itself (dirtied, then written back), it is the file's data and may be a gap. */
	p[6 * PAGE + 1] = 0x63;
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	p[4 * PAGE] = 0x64;
	p[8 * PAGE] = 0x65;
	cr_assert_eq(upc_msync(e.c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(stats_of(e.c).wb_gap_pages, 3);
	cr_assert_eq(pread(e.fd, &x, 1, 6 * PAGE + 1), 1);
	cr_assert_eq(x, 0x63);
	cr_assert_eq(pread(e.fd, &x, 1, 6 * PAGE + 9), 1);
	cr_assert_eq(x, 0, "the zero page's data, written by its own write-back");
	env_free(&e, 0);
}

Test(errors, read_error_callback_may_choose_sigbus, .signal = SIGBUS, .timeout = 60)
{
	static struct rerr r = { .action = UPC_READ_ERROR_SIGBUS };
	struct env e = env_cb(&r);
	volatile unsigned char *p;

	cr_assert_eq(upc_store_inject_add(e.store, UPC_IO_READ, 0, 16 * PAGE, UPC_INJECT_ERROR, ENOSPC, -1), 0);
	cr_assert_eq(upc_map(e.c, e.fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	(void)p[0];
	cr_assert_fail("no SIGBUS");
}

/*
 * errseq_sample(): a mapping made after a write-back error that nobody has
 * seen yet (the flusher met it) reports it at its first msync, as the
 * kernel hands an unseen error to the next sampler; then never again.  The
 * older mapping sees it too, once.
 */
Test(errors, a_new_mapping_sees_an_error_nobody_saw, .timeout = 60)
{
	struct upc_store *store;
	struct upc_cache *c;
	unsigned char *a, *b;
	int fd;
	UPC_OPTS(upc_cache_opts, o, .dirty_expire_ms = 20, .writeback_interval_ms = 20);

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &store), 0);
	o.store = store;
	c = cache_new_opts(&o);
	fd = tmpfile_pattern(16 * PAGE, NULL);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&a), 0);
	cr_assert_eq(upc_store_inject_add(store, UPC_IO_WRITE, 0, PAGE, UPC_INJECT_ERROR, EIO, 1), 0);
	a[0] = 1;
	for (int i = 0; i < 500 && stats_of(c).wb_errors == 0; i++)
		usleep(10000);
	cr_assert_eq(stats_of(c).wb_errors, 1, "the flusher did not meet the error");
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&b), 0);
	cr_assert_eq(upc_msync(c, b, 16 * PAGE, UPC_MS_SYNC), -EIO, "the new mapping missed the unseen error");
	cr_assert_eq(upc_msync(c, b, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(upc_msync(c, a, 16 * PAGE, UPC_MS_SYNC), -EIO);
	cr_assert_eq(upc_msync(c, a, 16 * PAGE, UPC_MS_SYNC), 0);
	/* Seen now: a third mapping starts after it. */
	cr_assert_eq(upc_unmap(c, b, 16 * PAGE), 0);
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&b), 0);
	cr_assert_eq(upc_msync(c, b, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upc_store_destroy(store);
	close(fd);
}
