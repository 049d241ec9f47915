/* SPDX-License-Identifier: MIT */
/*
 * fork: a child that inherits a mapping never silently sees wrong data.
 * Under synchronous tracking the parent's engine serves the child
 * (UFFD_EVENT_FORK): reads, writes and write-back are coherent.  When the
 * parent destroys the cache, the child's next access is SIGBUS.  Under
 * asynchronous tracking mappings are not inherited: the child gets SIGSEGV.
 */
#include "helpers.h"

#include <signal.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static bool child_served(struct upc_cache *c)
{
	return stats_of(c).track_mode == UPC_TRACK_SYNC && (upc_probe() & UPC_FEAT_EVENT_FORK);
}

/* Skip a case that needs served children where they are not (async tracking; SIGSEGV is tested above). */
static void skip_unless_served(struct upc_cache *c)
{
	if (child_served(c))
		return;
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_skip_test("forked children are not served in asynchronous tracking (SIGSEGV: tested above)");
}

/* Run @fn in a child; return its wait status. */
static int in_child(void (*fn)(unsigned char *, int), unsigned char *p, int arg)
{
	int status;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fn(p, arg);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

/* The child checks what it reads (cached and uncached pages) and writes. */
static void child_reads_and_writes(unsigned char *p, int arg)
{
	for (size_t i = 0; i < 256 * PAGE; i += 997)
		if (i != 3 * PAGE && p[i] != pat(i))
			_exit(10);
	if (p[3 * PAGE] != 0x31)
		_exit(11);
	p[200 * PAGE + 7] = (unsigned char)arg;	/* an uncached page, written by the child */
	p[3 * PAGE + 1] = 0x32;			/* a page the parent dirtied */
	_exit(0);
}

Test(fork, the_child_reads_and_writes_coherently, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(256 * PAGE, NULL), status;
	unsigned char *p, x;

	cr_assert_eq(upc_map(c, fd, 0, 256 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	/* Some pages cached, one dirty, most not cached at the fork. */
	for (size_t i = 0; i < 16 * PAGE; i += PAGE)
		cr_assert_eq(p[i], pat(i));
	p[3 * PAGE] = 0x31;
	status = in_child(child_reads_and_writes, p, 0x5a);
	if (child_served(c))
		cr_assert_eq(stats_of(c).nr_children, 1, "the child is served");
	if (!child_served(c)) {
		cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
			  "an unserved child must get SIGSEGV, status %#x", status);
		goto out;
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	/* The parent sees the child's writes at once, and writes them back. */
	cr_assert_eq(p[200 * PAGE + 7], 0x5a);
	cr_assert_eq(p[3 * PAGE + 1], 0x32);
	cr_assert_geq(stats_of(c).pages_dirty, 2, "the child's writes must be tracked");
	cr_assert_eq(upc_msync(c, p, 256 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &x, 1, 200 * PAGE + 7), 1);
	cr_assert_eq(x, 0x5a);
	/* Once the child is gone, the cache stops serving it (its handler looks every second). */
	for (int i = 0; i < 300 && stats_of(c).nr_children != 0; i++)
		usleep(10000);
	cr_assert_eq(stats_of(c).nr_children, 0, "the exited child is still served");
out:
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* A child keeps writing a page while the parent msyncs: no write is lost. */
static void child_writer(unsigned char *p, int rounds)
{
	volatile long *slot = (volatile long *)(p + 5 * PAGE);

	for (long v = 1; v <= rounds; v++)
		*slot = v;
	_exit(0);
}

Test(fork, a_child_racing_write_back_loses_nothing, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(16 * PAGE, NULL), status;
	unsigned char *p;
	long got;
	pid_t pid;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	skip_unless_served(c);
	pid = fork();
	if (pid == 0)
		child_writer(p, 2000000);
	/* Clean the page under the child's feet again and again. */
	while (waitpid(pid, &status, WNOHANG) == 0)
		cr_assert_geq(upc_msync(c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(upc_msync(c, p, 16 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &got, sizeof(got), 5 * PAGE), sizeof(got));
	cr_assert_eq(got, 2000000, "the child's last write is lost: file has %ld", got);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/* The parent destroys the cache; the child, still running, must not see stale data. */
Test(fork, after_the_parent_destroys_the_cache_the_child_gets_sigbus, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(64 * PAGE, NULL), status, go[2], done[2];
	volatile unsigned char *p;
	unsigned char x;
	pid_t pid;

	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	skip_unless_served(c);
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(done), 0);
	pid = fork();
	if (pid == 0) {
		close(go[1]);		/* a test that fails leaves no child waiting */
		p[PAGE] = 0x41;		/* before: served */
		if (write(done[1], "w", 1) != 1 || read(go[0], &x, 1) != 1)
			_exit(20);
		(void)p[40 * PAGE];	/* after: an uncached page */
		_exit(21);		/* read something: wrong */
	}
	/* The child's write is done (it waited 100 ms: under ASan and CI's load, not always enough). */
	cr_assert_eq(read(done[0], &x, 1), 1);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(pread(fd, &x, 1, PAGE), 1);
	cr_assert_eq(x, 0x41, "the child's write was written back at destroy");
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "child status %#x", status);
	close(fd);
}

/* The owner of the cache exits (exit(3)) without destroying it: its child gets SIGBUS. */
Test(fork, when_the_parent_exits_the_child_gets_sigbus, .timeout = 60)
{
	int fd = tmpfile_pattern(64 * PAGE, NULL), status, go[2], res[2], done[2];
	struct upc_cache *c;
	pid_t parent;
	unsigned char x;
	int code = -1;

	require_upcache();
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(res), 0);
	cr_assert_eq(pipe(done), 0);
	/* An intermediate process owns the cache, forks a child, then exits. */
	parent = fork();
	if (parent == 0) {
		volatile unsigned char *p;
		pid_t child;

		c = cache_new(UPC_CACHE_NO_BGWB);
		if (upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(1);
		if (!child_served(c))
			_exit(77);
		child = fork();
		if (child == 0) {
			int r;

			close(go[1]);	/* a test that fails leaves no child waiting */
			p[2 * PAGE] = 0x42;	/* served by the parent */
			if (write(done[1], "w", 1) != 1 || read(go[0], &x, 1) != 1)
				_exit(30);
			/* The parent is gone: touch an uncached page. */
			pid_t g = fork();
			if (g == 0) {
				(void)p[50 * PAGE];
				_exit(31);	/* read something: wrong */
			}
			waitpid(g, &r, 0);
			r = WIFSIGNALED(r) ? WTERMSIG(r) : 100 + WEXITSTATUS(r);
			if (write(res[1], &r, sizeof(r)) != sizeof(r))
				_exit(32);
			_exit(0);
		}
		if (read(done[0], &x, 1) != 1)	/* the child's write is done */
			_exit(2);
		exit(0);	/* without upc_cache_destroy: the exit hook runs */
	}
	cr_assert_eq(waitpid(parent, &status, 0), parent);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		cr_skip_test("forked children are not served in asynchronous tracking");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "owner status %#x", status);
	cr_assert_eq(pread(fd, &x, 1, 2 * PAGE), 1);
	cr_assert_eq(x, 0x42, "the child's write was written back at the owner's exit");
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(read(res[0], &code, sizeof(code)), sizeof(code));
	cr_assert_eq(code, SIGBUS, "after the owner exited, the child's access ended with %d", code);
	close(fd);
}

/*
 * I1 across fork: a child's PTEs are copied from the parent's, writable ones
 * (dirty pages) included, before the child's mappings join the rmap.  A
 * write-back cleaning the page in that window would miss the child's PTE.
 * Fork many children, each writing a dirty page once, while a thread msyncs
 * in a loop: every child's write must reach the file.
 */
struct flusher {
	struct upc_cache *c;
	unsigned char *p;
	volatile bool stop;
};

static void *flush_loop(void *arg)
{
	struct flusher *fl = arg;

	while (!fl->stop)
		upc_msync(fl->c, fl->p, 16 * PAGE, UPC_MS_SYNC);
	return NULL;
}

Test(fork, forks_racing_write_back_lose_no_child_write, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(16 * PAGE, NULL), status;
	struct flusher fl = { .c = c };
	pthread_t th;
	long got;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&fl.p), 0);
	skip_unless_served(c);
	pthread_create(&th, NULL, flush_loop, &fl);
	for (long i = 1; i <= 200; i++) {
		((volatile long *)fl.p)[0] = -i;	/* the parent dirties the page: its PTE is writable */
		pid_t pid = fork();

		if (pid == 0) {
			((volatile long *)fl.p)[0] = i;	/* through the copied PTE */
			_exit(0);
		}
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		cr_assert_eq(upc_msync(c, fl.p, 16 * PAGE, UPC_MS_SYNC), 0);
		cr_assert_eq(pread(fd, &got, sizeof(got), 0), sizeof(got));
		cr_assert_eq(got, i, "child %ld's write is lost: the file has %ld", i, got);
	}
	fl.stop = true;
	pthread_join(th, NULL);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * fork() while the fault handler serves faults must not hang.  glibc's
 * fork() holds the malloc locks across the clone, and the kernel holds the
 * clone until the handler has read UFFD_EVENT_FORK: a handler that needs
 * malloc (or a lock whose holder needs it) for a fault queued before the
 * event never gets there.  Two threads fault all over a file much larger
 * than the cache (page-table chunks come and go, so the fault path would
 * allocate) while the main thread forks and reaps.  The forks run in a
 * process of their own, watched with a deadline: a hang is a failure, not
 * a test that never ends.
 */
struct toucher {
	volatile unsigned char *p;
	size_t pages;
	unsigned int seed;
	volatile bool stop;
};

static void *touch_loop(void *arg)
{
	struct toucher *t = arg;

	while (!t->stop) {
		size_t pg = rand_r(&t->seed) % t->pages;

		if (rand_r(&t->seed) & 1)
			t->p[pg * PAGE + 8] = (unsigned char)pg;
		else
			(void)t->p[pg * PAGE];
	}
	return NULL;
}

static int fork_while_faulting(void)
{
	UPC_OPTS(upc_cache_opts, o, .mem_limit = 1 << 20, .flags = UPC_CACHE_NO_BGWB | track_flags());
	const size_t pages = 16384;	/* 64 MiB: 32 page-table chunks */
	struct toucher t[2];
	pthread_t th[2];
	struct upc_cache *c;
	unsigned char *p;
	int fd, status;

	if (upc_cache_create(&o, &c))
		return 2;
	if (!child_served(c))
		return 77;
	fd = tmpfile_pattern(pages * PAGE, NULL);
	if (upc_map(c, fd, 0, pages * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p) ||
	    upc_advise(c, p, pages * PAGE, UPC_ADV_RANDOM))
		return 3;
	for (int i = 0; i < 2; i++) {
		t[i] = (struct toucher){ .p = p, .pages = pages, .seed = 7u + (unsigned int)i };
		pthread_create(&th[i], NULL, touch_loop, &t[i]);
	}
	for (int i = 0; i < 100; i++) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, &status, 0) != pid)
			return 4;
	}
	for (int i = 0; i < 2; i++) {
		t[i].stop = true;
		pthread_join(th[i], NULL);
	}
	return upc_cache_destroy(c) ? 5 : 0;
}

Test(fork, forking_while_the_handler_serves_faults_does_not_hang, .timeout = 120)
{
	int status = 0;
	pid_t pid;

	require_upcache();
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		alarm(60);	/* SIGALRM: the forks hung */
		_exit(fork_while_faulting());
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		cr_skip_test("forked children are not served in asynchronous tracking");
	cr_assert(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM),
		  "fork() hung while the handler was serving faults");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
}

/*
 * A served child forks again: the grandchild's PTEs are copied from the
 * child's (a writable one for the page the child dirtied) before the
 * grandchild is known to the engine.  The parent msyncs in a loop from a
 * thread; every value the grandchild stored must be in the file after the
 * next msync.
 */
Test(fork, a_grandchild_write_racing_write_back_is_not_lost, .timeout = 120)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(16 * PAGE, NULL), status, cmd[2], ack[2];
	struct flusher fl = { .c = c };
	pthread_t th;
	pid_t child;
	long got;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&fl.p), 0);
	skip_unless_served(c);
	cr_assert_eq(pipe(cmd), 0);
	cr_assert_eq(pipe(ack), 0);
	child = fork();
	if (child == 0) {
		volatile long *slot = (volatile long *)(fl.p + 2 * PAGE);
		long i;

		close(cmd[1]);
		close(ack[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);	/* never outlive a failed test */
		while (read(cmd[0], &i, sizeof(i)) == sizeof(i)) {
			pid_t g;

			*slot = -i;	/* the child dirties the page: its PTE is writable */
			g = fork();
			if (g == 0) {
				*slot = i;	/* through the PTE copied from the child's */
				_exit(0);
			}
			if (g < 0 || waitpid(g, &status, 0) != g || !WIFEXITED(status))
				_exit(40);
			if (write(ack[1], &i, sizeof(i)) != sizeof(i))
				_exit(41);
		}
		_exit(0);
	}
	pthread_create(&th, NULL, flush_loop, &fl);
	for (long i = 1; i <= 200; i++) {
		long a;

		cr_assert_eq(write(cmd[1], &i, sizeof(i)), sizeof(i));
		cr_assert_eq(read(ack[0], &a, sizeof(a)), sizeof(a));
		cr_assert_eq(upc_msync(c, fl.p, 16 * PAGE, UPC_MS_SYNC), 0);
		cr_assert_eq(pread(fd, &got, sizeof(got), 2 * PAGE), sizeof(got));
		cr_assert_eq(got, i, "grandchild %ld's write is lost: the file has %ld", i, got);
	}
	close(cmd[1]);
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	fl.stop = true;
	pthread_join(th, NULL);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}

/*
 * The fork waits for a handler that is busy for seconds (a read_error
 * callback retrying a failing read).  However long that takes, the child
 * must be known before a page it may write through a copied writable PTE
 * is counted clean: its write after the parent's msync reaches the file.
 */
static int slow_retry(void *arg, const struct upc_read_error *e)
{
	(void)arg;
	usleep(400000);
	return e->attempt < 6 ? UPC_READ_ERROR_RETRY : UPC_READ_ERROR_ZERO;
}

static void *touch_bad_page(void *arg)
{
	(void)*(volatile unsigned char *)arg;
	return NULL;
}

Test(fork, a_slow_handler_at_fork_loses_no_child_write, .timeout = 120)
{
	struct upc_store *st;
	struct upc_cache *c;
	int fd = tmpfile_pattern(64 * PAGE, NULL), status, go[2], done[2];
	volatile unsigned char *p;
	unsigned char x;
	pthread_t th;
	pid_t pid;

	require_upcache();
	cr_assert_eq(upc_store_inject_create(NULL, &st), 0);
	cr_assert_eq(upc_store_inject_add(st, UPC_IO_READ, 40 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1), 0);
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB, .store = st, .read_error = slow_retry);
	c = cache_new_opts(&o);
	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	if (!child_served(c)) {
		cr_assert_eq(upc_cache_destroy(c), 0);
		upc_store_destroy(st);
		cr_skip_test("forked children are not served in asynchronous tracking (SIGSEGV: tested above)");
	}
	p[5 * PAGE] = 0x11;	/* dirty: the PTE the child inherits is writable */
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(done), 0);
	/* Keep the handler busy for ~2.8 s in the callback. */
	pthread_create(&th, NULL, touch_bad_page, (void *)(p + 40 * PAGE));
	usleep(50000);
	pid = fork();
	if (pid == 0) {
		if (read(go[0], &x, 1) != 1)
			_exit(50);
		p[5 * PAGE] = 0x22;	/* after the parent's msync */
		_exit(write(done[1], "d", 1) == 1 ? 0 : 51);
	}
	cr_assert_eq(upc_msync(c, (void *)p, 64 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(read(done[0], &x, 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	pthread_join(th, NULL);
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(pread(fd, &x, 1, 5 * PAGE), 1);
	cr_assert_eq(x, 0x22, "the child's write after the parent's msync is lost");
	upc_store_destroy(st);
	close(fd);
}

/* Children that are gone are freed: their descriptors and threads do not pile up. */
static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");

	for (struct dirent *e; d && (e = readdir(d));)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

Test(fork, children_that_are_gone_are_freed, .timeout = 60)
{
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);
	int fd = tmpfile_pattern(16 * PAGE, NULL), status, before;
	unsigned char *p;
	pid_t pid;

	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_POPULATE, (void **)&p), 0);
	skip_unless_served(c);
	before = count_fds();
	for (int i = 0; i < 50; i++) {
		pid = fork();
		if (pid == 0)
			_exit(p[0] == pat(0) ? 0 : 1);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	usleep(1500000);	/* each child's handler notices within a second */
	pid = fork();		/* the next fork event frees the children that are gone */
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	usleep(100000);
	cr_assert_leq(count_fds(), before + 4, "%d descriptors after 51 forks, %d before", count_fds(), before);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
}
