/* SPDX-License-Identifier: MIT */
/*
 * Shared mode: upcd holds the cache, processes join with UPC_CACHE_SHARED.
 * Each test starts its own daemon on a socket of its own.
 */
#include "helpers.h"
#include "proto.h"

#include <linux/userfaultfd.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

static char sock_path[108];
static pid_t upcd_pid;

/* upcd's status text (static), or "" */
static const char *upcd_status(void)
{
	static struct upc_msg m;
	static char text[UPC_PROTO_MAX_DATA + 1];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	text[0] = '\0';
	strcpy(sa.sun_path, sock_path);
	if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    upc_msg_send(s, UPC_MSG_STATUS, 1, NULL, 0, NULL, 0, NULL, 0) == 0 &&
	    upc_msg_recv(s, &m, UPC_FROM_DAEMON) == 0 && (int64_t)m.args[0] == 0) {
		memcpy(text, m.data, m.dlen);
		text[m.dlen] = '\0';
	}
	if (s >= 0)
		close(s);
	return text;
}

/* upcd on sock_path (again, after a kill: the new one adopts the old one's clients). */
static void upcd_spawn(const char *extra)
{
	const char *bd = getenv("UPC_TEST_BUILDDIR");
	char bin[512];

	snprintf(bin, sizeof(bin), "%s/daemon/upcd", bd ? bd : ".");
	upcd_pid = fork();
	cr_assert_geq(upcd_pid, 0);
	if (upcd_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);	/* a test that fails does not leave it behind */
		/* the suite's async run: the daemon tracks for its clients (tests/run-async) */
		if (track_flags())
			execl(bin, "upcd", "--foreground", "--socket", sock_path, "--mode", "0666", "--verbose",
			      "--async", extra ? extra : NULL, (char *)NULL);
		else
			execl(bin, "upcd", "--foreground", "--socket", sock_path, "--mode", "0666", "--verbose",
			      extra ? extra : NULL, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int ok;

		strcpy(sa.sun_path, sock_path);
		ok = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(s);
		if (ok)
			return;
		cr_assert_eq(waitpid(upcd_pid, NULL, WNOHANG), 0, "upcd exited at start");
		usleep(10000);
	}
	cr_assert_fail("upcd did not start listening on %s", sock_path);
}

static void upcd_start(const char *extra)
{
	char dir[] = "/tmp/upcd-test.XXXXXX";

	require_upcache();
	cr_assert(mkdtemp(dir));
	cr_assert_eq(chmod(dir, 0711), 0);	/* the socket's own mode (0666) decides who connects */
	snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
	upcd_spawn(extra);
	/* The async run repeats the sync one where the kernel lacks what async tracking needs. */
	if (track_flags() && !strstr(upcd_status(), "\ntracking async\n")) {
		kill(upcd_pid, SIGTERM);
		waitpid(upcd_pid, NULL, 0);
		cr_skip_test("the daemon tracks synchronously here (upcctl probe says why)");
	}
}

/* SIGTERM: it writes everything back and exits 0. */
static void upcd_stop(void)
{
	int status;

	cr_assert_eq(kill(upcd_pid, SIGTERM), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "upcd status %#x", status);
}

static struct upc_cache *shared_cache(void)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	struct upc_cache *c = NULL;
	int ret = upc_cache_create(&o, &c);

	cr_assert_eq(ret, 0, "upc_cache_create(SHARED): %s", upc_strerror(ret));
	return c;
}

static int open_rw(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	return fd;
}

Test(shared, no_daemon_is_a_clear_error)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = "/nonexistent/upcd.sock");
	struct upc_cache *c = (void *)1;
	int ret;

	require_upcache();
	ret = upc_cache_create(&o, &c);
	cr_assert(ret == -ENOENT || ret == -ECONNREFUSED, "%s", upc_strerror(ret));
	cr_assert_eq(c, (void *)1, "nothing returned on failure");
}

/*
 * N processes, each its own client, write their stripe of one file
 * (disjoint pages) and one shared page (overlapping: a byte each), then
 * each checks every other's data through its own mapping; the file has
 * it all after one of them msyncs.
 */
static void processes_share_one_cache(unsigned int nproc)
{
	const size_t size = 64 * PAGE;
	char path[64];
	int fd = tmpfile_pattern(size, path), ready[2], go[2];
	pid_t pids[8];
	unsigned char *buf = malloc(size);

	upcd_start(NULL);
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	for (unsigned int k = 0; k < nproc; k++) {
		pids[k] = fork();
		cr_assert_geq(pids[k], 0);
		if (pids[k] == 0) {
			struct upc_cache *c = shared_cache();
			int cfd = open_rw(path);
			unsigned char *p;
			char b;
			int bad = 0;

			if (upc_map(c, cfd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p))
				_exit(2);
			for (size_t i = k; i < size / PAGE - 1; i += nproc)
				memset(p + i * PAGE + 16, 0x40 + (int)k, 64);
			p[size - PAGE + k] = (unsigned char)(0xa0 + k);
			if (write(ready[1], "r", 1) != 1 || read(go[0], &b, 1) != 1)
				_exit(3);
			/* Everyone has written: each sees all of it through its own mapping. */
			for (size_t i = 0; i < size / PAGE - 1; i++)
				bad += p[i * PAGE + 16] != 0x40 + (int)(i % nproc) || p[i * PAGE] != pat(i * PAGE);
			for (unsigned int j = 0; j < nproc; j++)
				bad += p[size - PAGE + j] != (unsigned char)(0xa0 + j);
			if (k == 0 && upc_msync(c, p, size, UPC_MS_SYNC))
				_exit(4);
			if (upc_cache_destroy(c))
				_exit(5);
			_exit(bad ? 6 : 0);
		}
	}
	for (unsigned int k = 0; k < nproc; k++) {
		char b;

		cr_assert_eq(read(ready[0], &b, 1), 1);
	}
	for (unsigned int k = 0; k < nproc; k++)
		cr_assert_eq(write(go[1], "g", 1), 1);
	for (unsigned int k = 0; k < nproc; k++) {
		int status;

		cr_assert_eq(waitpid(pids[k], &status, 0), pids[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "process %u: status %#x", k, status);
	}
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	for (size_t i = 0; i < size / PAGE - 1; i++)
		cr_assert_eq(buf[i * PAGE + 16], 0x40 + (int)(i % nproc), "page %zu", i);
	for (unsigned int j = 0; j < nproc; j++)
		cr_assert_eq(buf[size - PAGE + j], 0xa0 + j);
	upcd_stop();
	free(buf);
	unlink(path);
	close(fd);
}

Test(shared, two_processes_see_each_others_writes, .timeout = 60)
{
	processes_share_one_cache(2);
}

Test(shared, four_processes_see_each_others_writes, .timeout = 60)
{
	processes_share_one_cache(4);
}

Test(shared, a_pwrite_by_one_process_is_seen_through_anothers_mapping, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(64 * PAGE, path);
	struct upc_cache *c;
	unsigned char *p;
	pid_t pid;
	int status;

	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(p[5 * PAGE + 7], pat(5 * PAGE + 7));	/* cached, and mapped here */
	pid = fork();
	if (pid == 0) {
		struct upc_cache *c2 = shared_cache();
		int fd2 = open_rw(path);
		char big[2 * 65536 + 100];

		memset(big, 'Q', sizeof(big));
		if (upc_pwrite(c2, fd2, "through pwrite", 14, 5 * PAGE + 7) != 14 ||
		    upc_pwrite(c2, fd2, big, sizeof(big), 8 * PAGE) != (ssize_t)sizeof(big))
			_exit(1);
		_exit(upc_cache_destroy(c2) ? 2 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
	cr_assert_eq(memcmp(p + 5 * PAGE + 7, "through pwrite", 14), 0);
	cr_assert_eq(p[8 * PAGE], 'Q');
	cr_assert_eq(p[8 * PAGE + 2 * 65536 + 99], 'Q');
	cr_assert_eq(p[8 * PAGE + 2 * 65536 + 100], pat(8 * PAGE + 2 * 65536 + 100));
	{
		char b[14];

		cr_assert_eq(upc_pread(c, fd, b, 14, 5 * PAGE + 7), 14);
		cr_assert_eq(memcmp(b, "through pwrite", 14), 0);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	unlink(path);
	close(fd);
}

/*
 * kill -9 of a client in the middle of writing: every page it wrote
 * before the kill reaches the file (the daemon keeps a dead client's
 * dirty pages and writes them back).
 */
Test(shared, a_killed_client_loses_nothing_it_wrote, .timeout = 60)
{
	const size_t npages = 4096;
	char path[64];
	int fd = tmpfile_pattern(npages * PAGE, path);
	_Atomic uint64_t *done = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned char *buf = malloc(npages * PAGE);
	uint64_t n;
	pid_t pid;

	upcd_start(NULL);
	pid = fork();
	if (pid == 0) {
		struct upc_cache *c = shared_cache();
		int cfd = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, cfd, 0, npages * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(1);
		for (uint64_t round = 1;; round++)
			for (uint64_t i = 0; i < npages; i++) {
				p[i * PAGE + 100] = (unsigned char)round;
				p[i * PAGE + 101] = (unsigned char)(i & 0xff);
				atomic_store(done, (round - 1) * npages + i + 1);
			}
	}
	while (atomic_load(done) < npages + npages / 2)
		usleep(1000);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	n = atomic_load(done);
	upcd_stop();		/* writes back what the dead client left dirty */
	cr_assert_eq(pread(fd, buf, npages * PAGE, 0), (ssize_t)(npages * PAGE));
	for (uint64_t i = 0; i < npages; i++) {
		/* the last round it finished for this page, at least */
		uint64_t want = i < n % npages ? n / npages + 1 : n / npages;

		cr_assert_geq(buf[i * PAGE + 100], (unsigned char)want, "page %lu: %u < %lu (done %lu)",
			      (unsigned long)i, buf[i * PAGE + 100], (unsigned long)want, (unsigned long)n);
		cr_assert_eq(buf[i * PAGE + 101], (unsigned char)(i & 0xff));
	}
	free(buf);
	unlink(path);
	close(fd);
}

/* ------------------------------------------------------------ the daemon's death */

/* A line "KEY N" of upcd's status text, or -1. */
static long upcd_status_value(const char *key)
{
	const char *text = upcd_status(), *at = strstr(text, key);

	return at && (at == text || at[-1] == '\n') ? strtol(at + strlen(key), NULL, 10) : -1;
}

/* Clients of upcd that map something (its status has a line for each client). */
static unsigned int upcd_mapping_clients(void)
{
	const char *at = upcd_status();
	unsigned int n = 0;

	while ((at = strstr(at, "\nclient pid "))) {
		const char *mp = strstr(at, " mappings ");

		at++;
		if (mp && strtoul(mp + 10, NULL, 10) > 0)
			n++;
	}
	return n;
}

#define DD_WRITERS	2
#define DD_PAGES	512		/* per writer */

struct dd_shared {
	_Atomic uint64_t synced[DD_WRITERS];	/* the last round msync'd whole */
	_Atomic uint64_t quiet_written;		/* the quiet writer wrote its pages (no msync) */
	_Atomic bool stop;
};

/*
 * A racewrite-shaped writer: round after round, it stamps every page of its
 * stripe with the round and its page number, through its mapping, msyncs,
 * and says which round is in the file now.  Its msync may be the one the
 * daemon dies in: it returns when the next daemon has written it.
 */
static void dd_writer(struct dd_shared *sh, const char *path, unsigned int w)
{
	struct upc_cache *c = shared_cache();
	int fd = open_rw(path);
	volatile uint64_t *p;
	size_t len = (size_t)DD_WRITERS * DD_PAGES * PAGE;
	int ret;

	if (upc_map(c, fd, 0, len, PROT_READ | PROT_WRITE, 0, (void **)&p))
		_exit(10);
	for (uint64_t round = 1; !atomic_load(&sh->stop); round++) {
		for (uint64_t i = w; i < DD_WRITERS * DD_PAGES; i += DD_WRITERS) {
			p[i * PAGE / 8] = round;
			p[i * PAGE / 8 + 1] = i;
		}
		ret = upc_msync(c, (void *)p, len, UPC_MS_SYNC);
		if (ret) {
			fprintf(stderr, "writer %u: msync of round %lu: %s\n", w, (unsigned long)round,
				upc_strerror(ret));
			_exit(11);
		}
		atomic_store(&sh->synced[w], round);
	}
	ret = upc_cache_destroy(c);
	_exit(ret ? 12 : 0);
}

/*
 * The quiet writer stamps its pages once, before the kill, and writes
 * nothing after it; it msyncs only at the end, through the new daemon.
 * Its data reaches the file only if the handover kept it dirty: in the
 * dead daemon's page table (synchronous tracking), or in the PTEs the new
 * daemon reads before it protects them again (asynchronous tracking, where
 * the writes never trapped).
 */
static void dd_quiet(struct dd_shared *sh, const char *qpath)
{
	struct upc_cache *c = shared_cache();
	int fd = open_rw(qpath);
	volatile unsigned char *p;

	if (upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
		_exit(10);
	for (unsigned int i = 0; i < 64; i++)
		memset((void *)(p + i * PAGE), 0xa0 + (i & 15), 100);
	atomic_store(&sh->quiet_written, 1);
	while (!atomic_load(&sh->stop))
		usleep(10000);
	_exit(upc_cache_destroy(c) ? 12 : 0);	/* msync and unmap: the data must be dirty by now */
}

static void dd_wait(_Atomic uint64_t *v, uint64_t want, const char *what)
{
	for (int i = 0; i < 3000 && atomic_load(v) < want; i++)
		usleep(10000);
	cr_assert_geq(atomic_load(v), want, "%s: %lu, waited for %lu", what, (unsigned long)atomic_load(v),
		      (unsigned long)want);
}

Test(shared, a_daemon_killed_under_load_loses_nothing_and_a_new_one_adopts_its_clients, .timeout = 120)
{
	struct dd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	size_t len = (size_t)DD_WRITERS * DD_PAGES * PAGE;
	char path[64], qpath[64];
	int fd = tmpfile_pattern(len, path), qfd = tmpfile_pattern(64 * PAGE, qpath);
	uint64_t *buf = malloc(len), before[DD_WRITERS];
	pid_t w[DD_WRITERS], q;
	int status;

	cr_assert(sh != MAP_FAILED && buf);
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	q = fork();
	if (q == 0)
		dd_quiet(sh, qpath);
	for (unsigned int i = 0; i < DD_WRITERS; i++) {
		w[i] = fork();
		if (w[i] == 0)
			dd_writer(sh, path, i);
	}
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		dd_wait(&sh->synced[i], 3, "rounds before the kill");
	dd_wait(&sh->quiet_written, 1, "the quiet writer");

	/* kill -9 in the middle of it: faults, msyncs and write-back in flight */
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	usleep(200 * 1000);		/* the writers wait meanwhile, in faults and in msync */
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		before[i] = atomic_load(&sh->synced[i]);

	upcd_spawn(NULL);
	/* They carry on: three more rounds each, written back by the new daemon. */
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		dd_wait(&sh->synced[i], before[i] + 3, "rounds after the restart");
	/* Every mapping of the three clients was handed over (at least: one may have been split). */
	cr_assert_geq(upcd_status_value("adopted-mappings "), 3, "the new daemon adopted no mapping");
	cr_assert_eq(upcd_mapping_clients(), 3, "clients with mappings:\n%s", upcd_status());

	atomic_store(&sh->stop, true);
	cr_assert_eq(waitpid(q, &status, 0), q);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "quiet writer: status %#x", status);
	for (unsigned int i = 0; i < DD_WRITERS; i++) {
		cr_assert_eq(waitpid(w[i], &status, 0), w[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %u: status %#x", i, status);
	}
	upcd_stop();

	cr_assert_eq(pread(fd, buf, len, 0), (ssize_t)len);
	for (uint64_t i = 0; i < DD_WRITERS * DD_PAGES; i++) {
		uint64_t synced = atomic_load(&sh->synced[i % DD_WRITERS]);

		cr_assert_geq(buf[i * PAGE / 8], synced, "page %lu: round %lu in the file, %lu was msync'd",
			      (unsigned long)i, (unsigned long)buf[i * PAGE / 8], (unsigned long)synced);
		cr_assert_eq(buf[i * PAGE / 8 + 1], i, "page %lu: not its own stamp", (unsigned long)i);
	}
	{
		unsigned char qb[64 * PAGE];

		cr_assert_eq(pread(qfd, qb, sizeof(qb), 0), (ssize_t)sizeof(qb));
		for (unsigned int i = 0; i < 64; i++)
			for (unsigned int k = 0; k < 100; k++)
				cr_assert_eq(qb[i * PAGE + k], 0xa0 + (i & 15),
					     "quiet page %u byte %u: %#x: the dirty page was lost in the handover", i,
					     k, qb[i * PAGE + k]);
	}
	free(buf);
	unlink(path);
	unlink(qpath);
	close(fd);
	close(qfd);
}

/* ------------------------------------------------------------ the protocol, raw */

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, sock_path);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	return s;
}

/* One request, its reply's result (the daemon's calls are not expected here). */
static long raw_req(int s, uint16_t type, const uint64_t *args, unsigned int argc, const int *fds,
		    unsigned int nfds, struct upc_msg *m)
{
	int ret = upc_msg_send(s, type, 77, args, argc, NULL, 0, fds, nfds);

	if (ret < 0)
		return ret;
	ret = upc_msg_recv(s, m, UPC_FROM_DAEMON);
	if (ret < 0)
		return ret;
	return m->h.type == UPC_MSG_REPLY ? (long)(int64_t)m->args[0] : -EBADMSG;
}

/* hello and attach, by hand: a client that may do what the library would not. */
static int raw_attach(int s, struct upc_msg *m)
{
	uint64_t hello[3] = { UPC_PROTO_VERSION, UPC_CACHE_SHARED, 0 };
	int fds[3];
	long ret = raw_req(s, UPC_MSG_HELLO, hello, 3, NULL, 0, m);

	if (ret < 0)
		return (int)ret;
	fds[0] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
	if (fds[0] < 0)
		return -ENOSYS;		/* no userfaultfd for this user: the caller skips */
	fds[1] = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	fds[2] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fds[1] < 0 || fds[2] < 0)
		return -errno;
	{
		/* without fork events, which need CAP_SYS_PTRACE (as the library does: client.c) */
		struct uffdio_api api = { .api = UFFD_API, .features = m->args[2] & ~(uint64_t)UFFD_FEATURE_EVENT_FORK };

		if (ioctl(fds[0], UFFDIO_API, &api) < 0)
			return -ENOSYS;
	}
	ret = raw_req(s, UPC_MSG_ATTACH, NULL, 0, fds, 3, m);
	close(fds[0]);
	close(fds[1]);
	close(fds[2]);
	return (int)ret;
}

struct ro_arg {
	int rofd;
	int ptfd;		/* the page table's memfd, as the daemon sent it */
	_Atomic int *sync;	/* shared: 1 the private mapping faulted, 2 root has read; [1]: root's result */
	char path[64];
	char secret[64];	/* root's, mode 0600 */
};

/*
 * As uid nobody, with a read-only descriptor of a file (the file is not
 * nobody's: no other way in): no path leads to writing the cache's pages.
 */
static int read_only_client(void *argp)
{
	struct ro_arg *a = argp;
	struct upc_msg *m = malloc(sizeof(*m));
	uint64_t args[5] = { 0, 4 * PAGE, PROT_READ | PROT_WRITE };
	char proc[64];
	long ret;
	int s = raw_connect(), memfd, rw;
	void *p;

	nobody_check(s >= 0, "connect: %s", strerror(errno));
	ret = raw_attach(s, m);
	if (ret == -ENOSYS)
		nobody_skip("userfaultfd is not available to this user");
	nobody_check(ret == 0, "attach: %s", strerror((int)-ret));
	/* O_PATH lends no access: not to read a file nobody may read, through the root daemon. */
	{
		int op = open(a->secret, O_PATH | O_CLOEXEC);
		uint64_t r[3] = { 16, 0, PROT_READ };

		nobody_check(op >= 0 && open(a->secret, O_RDONLY) < 0 && errno == EACCES,
			     "the secret file is not secret here");
		ret = raw_req(s, UPC_MSG_PREAD, r, 2, &op, 1, m);
		nobody_check(ret == -EBADF && m->dlen == 0, "pread through O_PATH: %ld", ret);
		r[0] = 0;
		r[1] = 4 * PAGE;
		ret = raw_req(s, UPC_MSG_MAP, r, 3, &op, 1, m);
		nobody_check(ret == -EBADF && m->nfds == 0, "map through O_PATH: %ld", ret);
		close(op);
	}
	/* Writable: refused by the daemon. */
	ret = raw_req(s, UPC_MSG_MAP, args, 3, &a->rofd, 1, m);
	nobody_check(ret == -EACCES, "map PROT_WRITE of a read-only fd: %ld", ret);
	/* Readable: a memfd descriptor, read-only, and it stays so. */
	args[2] = PROT_READ;
	ret = raw_req(s, UPC_MSG_MAP, args, 3, &a->rofd, 1, m);
	nobody_check(ret == 0 && m->nfds == 2, "map PROT_READ: %ld, %u descriptors", ret, m->nfds);
	memfd = m->fds[0];
	nobody_check((fcntl(memfd, F_GETFL) & O_ACCMODE) == O_RDONLY, "the memfd came read-write");
	/* The page table's memfd (for a restarted daemon): read-only too, and it stays so. */
	{
		int pt = m->fds[1];

		nobody_check((fcntl(pt, F_GETFL) & O_ACCMODE) == O_RDONLY, "the page table came read-write");
		p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, pt, 0);
		nobody_check(p == MAP_FAILED && errno == EACCES, "mmap(PROT_WRITE) of the page table: %s",
			     p == MAP_FAILED ? strerror(errno) : "succeeded");
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pt);
		rw = open(proc, O_RDWR);
		nobody_check(rw < 0 && (errno == EACCES || errno == EPERM),
			     "reopen the page table read-write: %s", rw < 0 ? strerror(errno) : "succeeded");
		nobody_check(ftruncate(pt, 0) < 0, "ftruncate of the page table succeeded");
		a->ptfd = pt;
	}
	p = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	nobody_check(p == MAP_FAILED && errno == EACCES, "mmap(PROT_WRITE, MAP_SHARED) of it: %s",
		     p == MAP_FAILED ? strerror(errno) : "succeeded");
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", memfd);
	rw = open(proc, O_RDWR);
	nobody_check(rw < 0 && (errno == EACCES || errno == EPERM), "reopen read-write through /proc: %s",
		     rw < 0 ? strerror(errno) : "succeeded");
	p = mmap(NULL, 4 * PAGE, PROT_READ, MAP_SHARED, memfd, 0);
	nobody_check(p != MAP_FAILED, "mmap(PROT_READ): %s", strerror(errno));
	nobody_check(mprotect(p, 4 * PAGE, PROT_READ | PROT_WRITE) < 0 && errno == EACCES,
		     "mprotect to writable: %s", strerror(errno));
	/* Claiming it writable at attach: refused (more than the descriptor allows). */
	args[0] = m->args[1];		/* the token */
	args[1] = (uintptr_t)p;
	args[2] = 4 * PAGE;
	args[3] = PROT_READ | PROT_WRITE;
	args[4] = 0;
	ret = raw_req(s, UPC_MSG_MAP_DONE, args, 5, NULL, 0, m);
	nobody_check(ret == -EINVAL, "map-done PROT_WRITE: %ld", ret);
	/*
	 * Adoption (a restarted daemon's, UPC_MSG_ADOPT) grants nothing more:
	 * the real memfds with the read-only file, writable: refused; memfds
	 * of its own, named as the daemon names them: not the daemon's.
	 */
	{
		struct stat st;
		char name[64];
		int fds[3] = { a->rofd, memfd, a->ptfd }, fm, fp;
		uint64_t ad[4] = { (uintptr_t)p, 4 * PAGE, 0, PROT_READ | PROT_WRITE };

		ret = raw_req(s, UPC_MSG_ADOPT, ad, 4, fds, 3, m);
		nobody_check(ret == -EACCES, "adopt PROT_WRITE with a read-only fd: %ld", ret);
		nobody_check(fstat(a->rofd, &st) == 0, "fstat");
		snprintf(name, sizeof(name), "upcache:%lx:%lu", (unsigned long)st.st_dev, (unsigned long)st.st_ino);
		fm = memfd_create(name, MFD_CLOEXEC);
		snprintf(name, sizeof(name), "upcache-pt:%lx:%lu", (unsigned long)st.st_dev,
			 (unsigned long)st.st_ino);
		fp = memfd_create(name, MFD_CLOEXEC);
		nobody_check(fm >= 0 && fp >= 0 && ftruncate(fm, 4 * PAGE) == 0 && ftruncate(fp, 2 * PAGE) == 0,
			     "memfd_create: %s", strerror(errno));
		fds[1] = fm;
		fds[2] = fp;
		ad[3] = PROT_READ;
		ret = raw_req(s, UPC_MSG_ADOPT, ad, 4, fds, 3, m);
		nobody_check(ret == -EBADF || ret == -ESTALE, "adopt of forged memfds: %ld", ret);
		close(fm);
		close(fp);
	}
	/* pwrite with the read-only descriptor: refused. */
	ret = upc_msg_send(s, UPC_MSG_PWRITE, 78, (uint64_t[]){ 0 }, 1, "x", 1, &a->rofd, 1);
	nobody_check(ret == 0, "send");
	ret = upc_msg_recv(s, m, UPC_FROM_DAEMON);
	nobody_check(ret == 0 && (int64_t)m->args[0] < 0, "pwrite through a read-only fd: %ld",
		     (long)(int64_t)m->args[0]);
	/*
	 * A private mapping of the memfd, claimed as the mapping: the daemon's
	 * fill lands in a private page of ours, not in the memfd, and must not
	 * be called cached (the daemon's own next read of the hole would be its
	 * SIGBUS: the test reads the file through the daemon after this).
	 */
	{
		uint64_t mp[3] = { 0, 4 * PAGE, PROT_READ };
		volatile unsigned char *q;

		ret = raw_req(s, UPC_MSG_MAP, mp, 3, &a->rofd, 1, m);
		nobody_check(ret == 0 && m->nfds == 2, "map PROT_READ again: %ld", ret);
		q = mmap(NULL, 4 * PAGE, PROT_READ, MAP_PRIVATE, m->fds[0], 0);
		nobody_check(q != MAP_FAILED, "mmap(MAP_PRIVATE): %s", strerror(errno));
		args[0] = m->args[1];
		args[1] = (uintptr_t)q;
		args[2] = 4 * PAGE;
		args[3] = PROT_READ;
		args[4] = 0;
		close(m->fds[0]);
		close(m->fds[1]);
		ret = raw_req(s, UPC_MSG_MAP_DONE, args, 5, NULL, 0, m);
		nobody_check(ret == 0, "map-done of the private mapping: %ld", ret);
		/*
		 * Its own copy of what it may read: the daemon's copy went into
		 * it, and is refused after (a SIGBUS sent to this thread, which
		 * may come after the read completed: ignored).
		 */
		signal(SIGBUS, SIG_IGN);
		nobody_check(q[PAGE] == pat(PAGE), "page 1 of the private mapping: %#x", q[PAGE]);
		/* While it is mapped, root reads the file through the daemon (the test, below). */
		atomic_store(&a->sync[0], 1);
		for (int i = 0; i < 5000 && atomic_load(&a->sync[0]) < 2; i++)
			usleep(1000);
	}
	close(s);
	free(m);
	return 0;
}

Test(shared, a_read_only_client_cannot_write_by_any_path, .timeout = 60)
{
	struct ro_arg a;
	char msg[512];
	int fd = tmpfile_pattern(4 * PAGE, a.path), status;
	unsigned char b;
	pid_t reader;

	cr_assert_eq(fchmod(fd, 0644), 0);
	{
		int sfd = tmpfile_pattern(4 * PAGE, a.secret);

		cr_assert_eq(fchmod(sfd, 0600), 0);
		close(sfd);
	}
	a.rofd = open(a.path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(a.rofd, 0);
	upcd_start(NULL);
	a.sync = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(a.sync != MAP_FAILED);
	/*
	 * Root reads the pages the private mapping faulted through the daemon
	 * while that mapping stands: the daemon reads them from its own mapping
	 * of the memfd, which has no page for them.
	 */
	reader = fork();
	if (reader == 0) {
		struct upc_cache *c;
		unsigned char buf[4 * PAGE];

		for (int i = 0; i < 5000 && atomic_load(&a.sync[0]) < 1; i++)
			usleep(1000);
		c = shared_cache();
		atomic_store(&a.sync[1], upc_pread(c, fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) &&
						 buf[PAGE] == pat(PAGE) ? 1 : -1);
		atomic_store(&a.sync[0], 2);
		_exit(upc_cache_destroy(c) ? 1 : 0);
	}
	status = run_as_nobody(read_only_client, &a, msg, sizeof(msg));
	nobody_report(status, msg);
	cr_assert_eq(waitpid(reader, &status, 0), reader);
	cr_assert_eq(atomic_load(&a.sync[1]), 1, "root's read through the daemon");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader: %#x", status);
	cr_assert_eq(pread(fd, &b, 1, 0), 1);
	cr_assert_eq(b, pat(0), "the file changed");
	upcd_stop();
	unlink(a.path);
	unlink(a.secret);
	close(a.rofd);
	close(fd);
}

/*
 * Malformed, truncated, oversized and out-of-order messages: each gets an
 * error and a disconnect of that client only; a well-behaved client keeps
 * being served all along.
 */
Test(shared, malformed_messages_disconnect_only_their_sender, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int fd = tmpfile_pattern(8 * PAGE, NULL);
	struct upc_cache *c;
	unsigned char *p, junk[UPC_PROTO_MAX_MSG + 64];
	struct upc_msg_hdr h = { .magic = UPC_PROTO_MAGIC, .version = UPC_PROTO_VERSION, .type = UPC_MSG_HELLO };
	struct {
		const char *what;
		const void *buf;
		size_t len;
	} bad[8];
	struct upc_msg_hdr wrongmagic = h, wrongversion = h, wronglen = h, badtype = h, badargc = h, attach_first = h;
	unsigned int nbad = 0;

	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 'A';

	wrongmagic.magic = 0xdeadbeef;
	wrongversion.version = 99;
	wronglen.len = 1000;		/* says 1000 bytes follow; none do */
	badtype.type = 200;
	badargc.argc = 2;		/* hello has three */
	badargc.len = 16;
	attach_first.type = UPC_MSG_ATTACH;	/* before hello, and without its descriptors */
	memset(junk, 0x5a, sizeof(junk));
	bad[nbad++] = (typeof(bad[0])){ "bad magic", &wrongmagic, sizeof(h) };
	bad[nbad++] = (typeof(bad[0])){ "unknown version", &wrongversion, sizeof(h) };
	bad[nbad++] = (typeof(bad[0])){ "length past the end", &wronglen, sizeof(h) };
	bad[nbad++] = (typeof(bad[0])){ "unknown type", &badtype, sizeof(h) };
	bad[nbad++] = (typeof(bad[0])){ "wrong argument count", &badargc, sizeof(h) };
	bad[nbad++] = (typeof(bad[0])){ "attach before hello", &attach_first, sizeof(h) };
	bad[nbad++] = (typeof(bad[0])){ "truncated header", &h, sizeof(h) / 2 };
	bad[nbad++] = (typeof(bad[0])){ "oversized", junk, sizeof(junk) };
	for (unsigned int i = 0; i < nbad; i++) {
		int s = raw_connect();
		int so = (int)sizeof(junk) * 2;
		ssize_t n;
		char b[64];

		cr_assert_geq(s, 0);
		setsockopt(s, SOL_SOCKET, SO_SNDBUF, &so, sizeof(so));
		n = send(s, bad[i].buf, bad[i].len, MSG_NOSIGNAL);
		if (n == (ssize_t)bad[i].len) {
			/* An error reply at most, then end of stream: the daemon hung up. */
			ssize_t r;
			int replies = 0;

			while ((r = recv(s, b, sizeof(b), 0)) > 0)
				replies++;
			/* ECONNRESET: it closed with this message unread, which is a hang-up too */
			cr_assert(r == 0 || errno == ECONNRESET, "%s: no hang-up (%s)", bad[i].what, strerror(errno));
			cr_assert_leq(replies, 1, "%s", bad[i].what);
		} else {
			cr_assert(n < 0 && errno == EMSGSIZE, "%s: send %zd: %s", bad[i].what, n, strerror(errno));
		}
		close(s);
		/* The other client is served all along. */
		p[i + 1] = 'B';
		cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC), 0, "after %s", bad[i].what);
	}
	{
		char b[16];

		cr_assert_eq(pread(fd, b, 1 + nbad, 0), 1 + nbad);
		cr_assert_eq(b[0], 'A');
		cr_assert_eq(b[nbad], 'B');
	}
	/* A descriptor where none belongs: refused too (and closed by the daemon). */
	{
		int s = raw_connect();
		uint64_t hello[3] = { UPC_PROTO_VERSION, UPC_CACHE_SHARED, 0 };
		long ret;

		ret = raw_req(s, UPC_MSG_HELLO, hello, 3, &fd, 1, m);
		cr_assert_eq(ret, -EPROTO);
		close(s);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	free(m);
	close(fd);
}
