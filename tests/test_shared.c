/* SPDX-License-Identifier: MIT */
/*
 * Shared mode: upcd holds the cache, processes join with UPC_CACHE_SHARED.
 * Each test starts its own daemon on a socket of its own.
 */
#include "helpers.h"
#include "proto.h"
#include "internal.h"	/* the page table's layout: pt_entry_off(), struct upc_page */

#include <dirent.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/io_uring.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

static char sock_path[108];
static pid_t upcd_pid;

/* A connection to the socket at @path (upcd's, its keeper's), or -1. */
static int path_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(s);
		s = -1;
	}
	return s;
}

/* A listening socket on sock_path, of mode 0666, as upcd.socket's (a stale one there removed). */
static int listen_here(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int ls = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert_geq(ls, 0);
	strcpy(sa.sun_path, sock_path);
	unlink(sock_path);
	cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(chmod(sock_path, 0666), 0);
	cr_assert_eq(listen(ls, 16), 0);
	return ls;
}

/* upcd's status text (static), or "" */
static const char *upcd_status(void)
{
	static struct upc_msg m;
	static char text[UPC_PROTO_MAX_DATA + 1];
	int s = path_connect(sock_path);

	text[0] = '\0';
	if (s >= 0 &&
	    upc_msg_send(s, UPC_MSG_STATUS, 1, NULL, 0, NULL, 0, NULL, 0) == 0 &&
	    upc_msg_recv(s, &m, UPC_FROM_DAEMON) == 0 && (int64_t)m.args[0] == 0) {
		memcpy(text, m.data, m.dlen);
		text[m.dlen] = '\0';
	}
	if (s >= 0)
		close(s);
	return text;
}

/* upcctl daemon sync: every dirty page the daemon holds, written back (the test is its administrator). */
static void upcd_sync(void)
{
	static struct upc_msg m;
	uint64_t arg = 0;
	int s = path_connect(sock_path);

	cr_assert(s >= 0, "connect: %s", strerror(errno));
	cr_assert_eq(upc_msg_send(s, UPC_MSG_SYNC, 1, &arg, 1, NULL, 0, NULL, 0), 0);
	cr_assert_eq(upc_msg_recv(s, &m, UPC_FROM_DAEMON), 0);
	cr_assert_geq((int64_t)m.args[0], 0, "sync: %s", strerror((int)-(int64_t)m.args[0]));
	close(s);
}

/*
 * A child of the test that dies with it: a case that times out must not
 * leave its clients behind, writing and serving themselves for ever (they
 * did, and loaded every later run of the machine).
 */
static pid_t fork_child(void)
{
	pid_t pid = fork();

	if (pid == 0)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	return pid;
}

/*
 * Where the suite's daemons serve their clients' faults: not upcd's
 * default (auto), which measures at start and so chooses by the load of
 * the cases running beside, but each placement in one of the suite's two
 * runs, the same every time: one unpinned handler a client in the
 * synchronous run, one a CPU in the asynchronous one.  Cases that need
 * one say so in their extra argument.
 */
static const char *fault_handlers_arg(void)
{
	return track_flags() ? "--fault-handlers=per-cpu" : "--fault-handlers=one";
}

/* The next upcd_spawn()'s descriptor limit, soft and hard (0: the test's). */
static rlim_t spawn_nofile;

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
		if (spawn_nofile) {
			struct rlimit rl = { spawn_nofile, spawn_nofile };

			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				_exit(126);
		}
		{
			char *argv[16] = { "upcd", "--foreground", "--socket", sock_path, "--mode", "0666", "--verbose" };
			int argc = 7;

			/* the suite's async run: the daemon tracks for its clients (tests/run-async) */
			if (track_flags())
				argv[argc++] = "--async";
			if (!extra || !strstr(extra, "--fault-handlers"))
				argv[argc++] = (char *)fault_handlers_arg();
			if (extra)
				argv[argc++] = (char *)extra;
			argv[argc] = NULL;
			unsetenv("UPC_FAULT_HANDLERS");	/* the library's knob would be the daemon's too */
			execv(bin, argv);
		}
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		int s = path_connect(sock_path);

		if (s >= 0) {
			close(s);
			return;
		}
		cr_assert_eq(waitpid(upcd_pid, NULL, WNOHANG), 0, "upcd exited at start");
		usleep(10000);
	}
	cr_assert_fail("upcd did not start listening on %s", sock_path);
}

/* sock_path in a directory of the case's own (sock_dir_fini() removes it). */
static void sock_dir_make(void)
{
	char dir[] = "/tmp/upcd-test.XXXXXX";

	require_upcache();
	cr_assert(mkdtemp(dir));
	cr_assert_eq(chmod(dir, 0711), 0);	/* the socket's own mode (0666) decides who connects */
	snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
}

static void upcd_start(const char *extra)
{
	sock_dir_make();
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

/* Each case's socket directory goes with it (helpers.h, sock_dir_remove). */
static void sock_dir_fini(void)
{
	sock_dir_remove(sock_path);
	sock_path[0] = '\0';
}

TestSuite(shared, .fini = sock_dir_fini);

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
static void processes_share_one_cache(unsigned int nproc, const char *upcd_extra)
{
	const size_t size = 64 * PAGE;
	char path[64];
	int fd = tmpfile_pattern(size, path), ready[2], go[2];
	pid_t pids[8];
	unsigned char *buf = malloc(size);

	upcd_start(upcd_extra);
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	for (unsigned int k = 0; k < nproc; k++) {
		pids[k] = fork_child();
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
	processes_share_one_cache(2, NULL);
}

Test(shared, four_processes_see_each_others_writes, .timeout = 60)
{
	processes_share_one_cache(4, NULL);
}

/*
 * The same with each placement of a client's fault handlers that upcd
 * chooses between at start (daemon/placement.c): whichever it chose
 * above, both serve.
 */
Test(shared, two_processes_see_each_others_writes_with_one_fault_handler_each, .timeout = 60)
{
	processes_share_one_cache(2, "--fault-handlers=one");
}

Test(shared, two_processes_see_each_others_writes_with_a_fault_handler_on_each_cpu, .timeout = 60)
{
	processes_share_one_cache(2, "--fault-handlers=per-cpu");
}

/* upcd's threads named @prefix (exactly, or followed by '/' and a CPU) */
static unsigned int upcd_threads(const char *prefix, bool pinned)
{
	char path[320], comm[32];
	unsigned int n = 0;
	struct dirent *e;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)upcd_pid);
	dir = opendir(path);
	cr_assert(dir, "%s: %s", path, strerror(errno));
	while ((e = readdir(dir))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)upcd_pid, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;	/* a thread that ended meanwhile */
		if (fgets(comm, sizeof(comm), f)) {
			size_t len = strlen(prefix);

			comm[strcspn(comm, "\n")] = '\0';
			if (!strncmp(comm, prefix, len) && (pinned ? comm[len] == '/' : comm[len] == '\0'))
				n++;
		}
		fclose(f);
	}
	closedir(dir);
	return n;
}

/*
 * --fault-handlers=one gives a client one unpinned handler thread in upcd
 * ("upc-fault"), per-cpu one pinned to each CPU of the daemon's mask, at
 * most 8 ("upc-fault/N", as the embedded cache's own); the status says
 * which, and with auto (measured at start) what it chose, which the
 * client gets.  Counted beside the daemon's own engine's handlers, before
 * and after the client's first fault.
 */
Test(shared, a_clients_fault_handlers_are_placed_as_upcd_was_told, .timeout = 60)
{
	static const char *const how[] = { "one", "per-cpu", "auto" };
	cpu_set_t set;
	unsigned int ncpu;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	ncpu = (unsigned int)CPU_COUNT(&set);
	for (unsigned int k = 0; k < 3; k++) {
		char extra[64], want[96], path[64];
		bool one;
		unsigned int pinned0, unpinned0, pinned1, unpinned1;
		struct upc_cache *c;
		int fd = tmpfile_pattern(16 * PAGE, path);
		volatile unsigned char *p;

		snprintf(extra, sizeof(extra), "--fault-handlers=%s", how[k]);
		if (k)
			sock_dir_fini();
		upcd_start(extra);
		if (k < 2) {
			snprintf(want, sizeof(want), "\nfault-handlers %s (%s)\n", how[k], extra);
			cr_assert(strstr(upcd_status(), want), "no \"%s\" in upcd's status:\n%s", want + 1,
				  upcd_status());
			one = k == 0;
		} else {
			/* what it measured chose: the clients get that */
			one = strstr(upcd_status(), "\nfault-handlers one (auto: ");
			cr_assert(one || strstr(upcd_status(), "\nfault-handlers per-cpu (auto: "), "%s",
				  upcd_status());
		}
		pinned0 = upcd_threads("upc-fault", true);
		unpinned0 = upcd_threads("upc-fault", false);
		c = shared_cache();
		cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
		p[3 * PAGE] = 0x77;	/* a fault upcd serves */
		cr_assert_eq(p[3 * PAGE], 0x77);
		pinned1 = upcd_threads("upc-fault", true);
		unpinned1 = upcd_threads("upc-fault", false);
		if (one || ncpu < 2) {
			cr_expect_eq(unpinned1 - unpinned0, 1, "%s: %u unpinned handlers for the client", extra,
				     unpinned1 - unpinned0);
			cr_expect_eq(pinned1, pinned0, "%s: %u pinned handlers for the client", extra,
				     pinned1 - pinned0);
		} else {
			cr_expect_eq(pinned1 - pinned0, ncpu < 8 ? ncpu : 8, "%s: %u pinned handlers for the "
				     "client on %u CPUs", extra, pinned1 - pinned0, ncpu);
			cr_expect_eq(unpinned1, unpinned0, "%s: %u unpinned handlers for the client", extra,
				     unpinned1 - unpinned0);
		}
		cr_assert_eq(upc_unmap(c, (void *)p, 16 * PAGE), 0);
		upc_cache_destroy(c);
		upcd_stop();
		unlink(path);
		close(fd);
	}
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
	pid = fork_child();
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
	pid = fork_child();
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

/* The three clients hand back within 100 ms of a daemon's start (takeover.c): 10 s is plenty. */
static void to_wait_adopted(void)
{
	for (int i = 0; i < 1000 && upcd_mapping_clients() != 3; i++)
		usleep(10000);
	cr_assert_eq(upcd_mapping_clients(), 3, "clients with mappings:\n%s", upcd_status());
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
	q = fork_child();
	if (q == 0)
		dd_quiet(sh, qpath);
	for (unsigned int i = 0; i < DD_WRITERS; i++) {
		w[i] = fork_child();
		if (w[i] == 0)
			dd_writer(sh, path, i);
	}
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		dd_wait(&sh->synced[i], 3, "rounds before the kill");
	dd_wait(&sh->quiet_written, 1, "the quiet writer");

	/* kill -9 in the middle of it: faults, msyncs and write-back in flight */
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	usleep(200 * 1000);		/* the writers serve themselves meanwhile (takeover.c) */

	upcd_spawn(NULL);
	to_wait_adopted();
	/* They carry on: three more rounds each, written back by the new daemon. */
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		before[i] = atomic_load(&sh->synced[i]);
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		dd_wait(&sh->synced[i], before[i] + 3, "rounds after the restart");
	/* Every mapping of the three clients was handed over (at least: one may have been split). */
	cr_assert_geq(upcd_status_value("adopted-mappings "), 3, "the new daemon adopted no mapping");

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

/*
 * While no daemon runs, clients serve their own faults (takeover.c).  The
 * late client maps a file it has touched only half of when the daemon is
 * killed; with no daemon it reads the other half (MISSING faults filled
 * from the file), writes part of it and msyncs that (served in the client),
 * and writes another part it never msyncs (kept by the hand-back alone),
 * while the racewrite writers go on round after round.  What each msync'd
 * is in the file before any daemon is back.  Then a new daemon adopts them
 * all; a SIGTERM hands over again, the clients serve themselves again, and
 * a third daemon adopts them.  Nothing is lost: the dirty pages of the
 * page table (the late client's first half, never msync'd by it) reach the
 * file through the daemons, the rest through the clients' own msyncs.  A
 * victim writes with no daemon and is killed before one is back: what it
 * wrote reaches the file all the same (takeover.c, rule 5).
 */
struct to_shared {
	struct dd_shared dd;
	_Atomic int killed, late_synced, late_errors;
	_Atomic int victim_mapped, victim_go, victim_written;
};

#define TO_PAGES	128		/* the late client's mapping of the file */
#define TO_FILE_PAGES	160		/* the victim's */

static void to_late(struct to_shared *sh, const char *qpath)
{
	struct upc_cache *c = shared_cache();
	int fd = open_rw(qpath);
	volatile unsigned char *p;
	int bad = 0;

	if (upc_map(c, fd, 0, TO_PAGES * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
		_exit(10);
	for (unsigned int i = 0; i < TO_PAGES / 2; i++)
		memset((void *)(p + i * PAGE), 0xa0 + (i & 15), 100);
	atomic_store(&sh->dd.quiet_written, 1);
	while (!atomic_load(&sh->killed))
		usleep(1000);
	/* no daemon: the second half is read from the file by this process itself */
	for (unsigned int i = TO_PAGES / 2; i < TO_PAGES; i++)
		for (unsigned int k = 0; k < PAGE; k += 509)
			bad += p[i * PAGE + k] != pat(i * PAGE + k);
	for (unsigned int i = TO_PAGES / 2; i < TO_PAGES * 3 / 4; i++)
		memset((void *)(p + i * PAGE), 0xb0 + (i & 15), 100);
	if (upc_msync(c, (void *)(p + TO_PAGES / 2 * PAGE), TO_PAGES / 4 * PAGE, UPC_MS_SYNC))
		_exit(13);
	/* and a quarter written with no daemon and never msync'd: only the hand-back keeps it */
	for (unsigned int i = TO_PAGES * 3 / 4; i < TO_PAGES * 7 / 8; i++)
		memset((void *)(p + i * PAGE), 0xc0 + (i & 15), 100);
	atomic_store(&sh->late_errors, bad);
	atomic_store(&sh->late_synced, 1);
	while (!atomic_load(&sh->dd.stop))
		usleep(10000);
	_exit(upc_cache_destroy(c) ? 12 : 0);
}

/*
 * The victim writes with no daemon and is killed before any daemon is back:
 * pages another process filled, first read then written (a write-protect
 * fault) and written at once (a MINOR fault), and pages no one had (a
 * MISSING fault).  It never msyncs nor hands back: only the journal it
 * wrote first tells the next daemon (takeover.c, rule 5).  It runs under
 * an RLIMIT_FSIZE of 1 MiB, far below the journal's offset (2^62): the
 * journal is marked through a mapping, which the limit does not refuse
 * (with write(2), as it was, each mark failed with EFBIG and the pages
 * were lost: upcd(8) listed it under BUGS).
 */
static void to_victim(struct to_shared *sh, const char *qpath)
{
	struct upc_cache *c = shared_cache();
	struct rlimit fsize = { 1 << 20, 1 << 20 };
	int fd = open_rw(qpath);
	volatile unsigned char *p;
	unsigned int sum = 0;

	if (upc_map(c, fd, 0, TO_FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
		_exit(10);
	if (setrlimit(RLIMIT_FSIZE, &fsize) < 0)
		_exit(15);
	atomic_store(&sh->victim_mapped, 1);
	while (!atomic_load(&sh->victim_go))
		usleep(1000);
	for (unsigned int i = 112; i < 120; i++)
		sum += p[i * PAGE];
	for (unsigned int i = 112; i < 144; i++)
		memset((void *)(p + i * PAGE), 0xd0 + (i & 15), 100);
	atomic_store(&sh->victim_written, 1);
	if (sum == ~0u)
		_exit(14);	/* never: the reads are what counts */
	for (;;)
		pause();
}

static void to_wait_flag(_Atomic int *f, const char *what)
{
	for (int i = 0; i < 3000 && !atomic_load(f); i++)
		usleep(10000);
	cr_assert(atomic_load(f), "%s: not after 30 s", what);
}

/* Every writer's page holds at least the round it had msync'd before @fd was read. */
static void to_check_rounds(struct to_shared *sh, int fd, uint64_t *buf, size_t len, const char *when)
{
	uint64_t synced[DD_WRITERS];

	for (unsigned int i = 0; i < DD_WRITERS; i++)
		synced[i] = atomic_load(&sh->dd.synced[i]);
	cr_assert_eq(pread(fd, buf, len, 0), (ssize_t)len);
	for (uint64_t i = 0; i < DD_WRITERS * DD_PAGES; i++) {
		cr_assert_geq(buf[i * PAGE / 8], synced[i % DD_WRITERS],
			      "%s: page %lu: round %lu in the file, %lu was msync'd", when, (unsigned long)i,
			      (unsigned long)buf[i * PAGE / 8], (unsigned long)synced[i % DD_WRITERS]);
		cr_assert_eq(buf[i * PAGE / 8 + 1], i, "%s: page %lu: not its own stamp", when, (unsigned long)i);
	}
}

static void to_wait_rounds(struct to_shared *sh, uint64_t more, const char *what)
{
	uint64_t before[DD_WRITERS];

	for (unsigned int i = 0; i < DD_WRITERS; i++)
		before[i] = atomic_load(&sh->dd.synced[i]);
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		dd_wait(&sh->dd.synced[i], before[i] + more, what);
}

Test(shared, with_no_daemon_clients_serve_themselves_and_a_new_one_takes_them_back, .timeout = 180)
{
	struct to_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	size_t len = (size_t)DD_WRITERS * DD_PAGES * PAGE;
	char path[64], qpath[64];
	int fd = tmpfile_pattern(len, path), qfd = tmpfile_pattern(TO_FILE_PAGES * PAGE, qpath);
	uint64_t *buf = malloc(len);
	unsigned char *qb = malloc(TO_FILE_PAGES * PAGE);
	pid_t w[DD_WRITERS], q, v;
	int status;

	cr_assert(sh != MAP_FAILED && buf && qb);
	if (track_flags())
		cr_skip_test("under asynchronous tracking no client serves itself: a write lifts its own "
			     "protection in the kernel, unseen between the hand-back and the adoption "
			     "(takeover.c)");
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	q = fork_child();
	if (q == 0)
		to_late(sh, qpath);
	v = fork_child();
	if (v == 0)
		to_victim(sh, qpath);
	for (unsigned int i = 0; i < DD_WRITERS; i++) {
		w[i] = fork_child();
		if (w[i] == 0)
			dd_writer(&sh->dd, path, i);
	}
	for (unsigned int i = 0; i < DD_WRITERS; i++)
		dd_wait(&sh->dd.synced[i], 3, "rounds before the kill");
	dd_wait(&sh->dd.quiet_written, 1, "the late client's first half");
	to_wait_flag(&sh->victim_mapped, "the victim's mapping");

	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	atomic_store(&sh->killed, 1);

	/* No daemon runs: the writers go on, and the late client reads, writes and msyncs. */
	to_wait_rounds(sh, 5, "rounds with no daemon (killed)");
	to_wait_flag(&sh->late_synced, "the late client's msync with no daemon");
	cr_assert_eq(atomic_load(&sh->late_errors), 0, "pages read with no daemon that are not the file's");
	/* the victim writes, with no daemon, and dies before one is back */
	atomic_store(&sh->victim_go, 1);
	to_wait_flag(&sh->victim_written, "the victim's writes");
	cr_assert_eq(kill(v, SIGKILL), 0);
	cr_assert_eq(waitpid(v, &status, 0), v);
	to_check_rounds(sh, fd, buf, len, "no daemon");
	cr_assert_eq(pread(qfd, qb, TO_PAGES * PAGE, 0), (ssize_t)(TO_PAGES * PAGE));
	for (unsigned int i = TO_PAGES / 2; i < TO_PAGES * 3 / 4; i++)
		for (unsigned int k = 0; k < 100; k++)
			cr_assert_eq(qb[i * PAGE + k], 0xb0 + (i & 15),
				     "late page %u byte %u: %#x: msync'd with no daemon, not in the file", i, k,
				     qb[i * PAGE + k]);

	/*
	 * The late client stops (SIGSTOP) while it serves itself, with pages
	 * it wrote and did not msync under its own writable PTEs.  The new
	 * daemon must not adopt that file before it hands it back: nor drop
	 * those pages (the page table calls them clean or does not have them),
	 * nor serve the writers' faults on it meanwhile (takeover.c, rule 2).
	 */
	cr_assert_eq(kill(q, SIGSTOP), 0);
	upcd_spawn(NULL);
	usleep(1500 * 1000);
	cr_assert_eq(kill(q, SIGCONT), 0);
	to_wait_adopted();
	to_wait_rounds(sh, 3, "rounds after the restart");
	cr_assert_geq(upcd_status_value("adopted-mappings "), 3, "the new daemon adopted no mapping");

	/* SIGTERM: it writes everything back and exits; they serve themselves again; a third adopts them. */
	upcd_stop();
	to_wait_rounds(sh, 3, "rounds with no daemon (stopped)");
	to_check_rounds(sh, fd, buf, len, "stopped");
	upcd_spawn(NULL);
	to_wait_adopted();
	to_wait_rounds(sh, 3, "rounds after the second restart");

	atomic_store(&sh->dd.stop, true);
	cr_assert_eq(waitpid(q, &status, 0), q);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "late client: status %#x", status);
	for (unsigned int i = 0; i < DD_WRITERS; i++) {
		cr_assert_eq(waitpid(w[i], &status, 0), w[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %u: status %#x", i, status);
	}
	upcd_stop();
	to_check_rounds(sh, fd, buf, len, "at the end");
	cr_assert_eq(pread(qfd, qb, TO_FILE_PAGES * PAGE, 0), (ssize_t)(TO_FILE_PAGES * PAGE));
	for (unsigned int i = 0; i < TO_FILE_PAGES; i++)
		for (unsigned int k = 0; k < 100; k++) {
			unsigned char want = i < TO_PAGES / 2 ? 0xa0 + (i & 15) :
					     i < TO_PAGES * 3 / 4 ? 0xb0 + (i & 15) :
					     i < TO_PAGES * 7 / 8 ? 0xc0 + (i & 15) :
					     i < 144 ? 0xd0 + (i & 15) : pat(i * PAGE + k);

			cr_assert_eq(qb[i * PAGE + k], want, "late page %u byte %u: %#x, not %#x", i, k,
				     qb[i * PAGE + k], want);
		}
	free(buf);
	free(qb);
	unlink(path);
	unlink(qpath);
	close(fd);
	close(qfd);
}

/* ------------------------------------------------------------ the protocol, raw */

static int raw_connect(void)
{
	return path_connect(sock_path);
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

/* ATTACH with @uffd, the caller's pagemap and a pidfd of its own (after HELLO). */
static int raw_attach_uffd(int s, struct upc_msg *m, int uffd)
{
	int fds[3] = { uffd, open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC),
		       (int)syscall(SYS_pidfd_open, getpid(), 0) };
	long ret = fds[1] < 0 || fds[2] < 0 ? -errno : raw_req(s, UPC_MSG_ATTACH, NULL, 0, fds, 3, m);

	if (fds[1] >= 0)
		close(fds[1]);
	if (fds[2] >= 0)
		close(fds[2]);
	return (int)ret;
}

/* hello and attach, by hand: a client that may do what the library would not. */
static int raw_attach(int s, struct upc_msg *m)
{
	uint64_t hello[3] = { UPC_PROTO_VERSION, UPC_CACHE_SHARED, 0 };
	long ret = raw_req(s, UPC_MSG_HELLO, hello, 3, NULL, 0, m);
	int uffd;

	if (ret < 0)
		return (int)ret;
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
	if (uffd < 0)
		return -ENOSYS;		/* no userfaultfd for this user: the caller skips */
	{
		/* without fork events, which need CAP_SYS_PTRACE (as the library does: connect.c) */
		struct uffdio_api api = { .api = UFFD_API, .features = m->args[2] & ~(uint64_t)UFFD_FEATURE_EVENT_FORK };

		if (ioctl(uffd, UFFDIO_API, &api) < 0) {
			close(uffd);
			return -ENOSYS;
		}
	}
	ret = raw_attach_uffd(s, m, uffd);
	close(uffd);
	return (int)ret;
}

/*
 * A client may keep the descriptors of an earlier daemon's memfds as long
 * as it likes, and hand them to a later daemon: that must not bring back
 * pages older than the file (review of the restart: the file rolled back).
 * Here the daemon stopped cleanly with the file cached, the file changed
 * behind it, and a raw client hands the old memfds to the next daemon.
 */
Test(shared, an_earlier_daemons_memfds_bring_back_nothing_older_than_the_file, .timeout = 60)
{
	/* Under --async clean pages are adopted (a client's PTE may say written): upcd(8), BUGS. */
	if (track_flags())
		cr_skip_test("an asynchronously tracking daemon adopts clean pages too (upcd(8), BUGS)");
	struct upc_msg *m = malloc(sizeof(*m));
	char path[64];
	int fd = tmpfile_pattern(4 * PAGE, path), s, memfd, ptfd, rw;
	uint64_t args[5] = { 0, 4 * PAGE, PROT_READ | PROT_WRITE };
	unsigned char buf[4 * PAGE], b = 'B';
	struct upc_cache *c;
	long ret;
	void *q;

	upcd_start(NULL);
	/* cached through the daemon */
	c = shared_cache();
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	/* a client keeps the memfds of a map it never finishes */
	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_attach(s, m), 0);
	rw = open_rw(path);
	ret = raw_req(s, UPC_MSG_MAP, args, 3, &rw, 1, m);
	cr_assert(ret == 0 && m->nfds == 2, "map: %ld", ret);
	memfd = m->fds[0];
	ptfd = m->fds[1];
	args[0] = m->args[1];
	args[1] = 0;		/* abandoned */
	cr_assert_eq(raw_req(s, UPC_MSG_MAP_DONE, args, 5, NULL, 0, m), 0);
	close(s);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	/* the file changes behind every cache */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pwrite(fd, &b, 1, (off_t)i * PAGE), 1);
	upcd_spawn(NULL);
	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_attach(s, m), 0);
	q = mmap(NULL, 4 * PAGE, PROT_NONE, MAP_SHARED, memfd, 0);
	cr_assert_neq(q, MAP_FAILED);
	{
		uint64_t ad[4] = { (uintptr_t)q, 4 * PAGE, 0, PROT_READ | PROT_WRITE };
		int fds[3] = { rw, memfd, ptfd };

		ret = raw_req(s, UPC_MSG_ADOPT, ad, 4, fds, 3, m);
		cr_assert(ret == 0 || ret == -ESTALE, "adopt: %ld", ret);
	}
	/* what any client reads through the new daemon is the file's */
	c = shared_cache();
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (int i = 0; i < 4; i++)
		cr_assert_eq(buf[i * PAGE], 'B', "page %d: %#x, an earlier daemon's page", i, buf[i * PAGE]);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(s);
	upcd_stop();
	cr_assert_eq(pread(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (int i = 0; i < 4; i++)
		cr_assert_eq(buf[i * PAGE], 'B', "page %d in the file: %#x", i, buf[i * PAGE]);
	munmap(q, 4 * PAGE);
	close(memfd);
	close(ptfd);
	close(rw);
	close(fd);
	unlink(path);
	free(m);
}

/*
 * A read-only descriptor maps read-only (upcd(8), SECURITY): a private
 * mapping of the memfd whose pages the daemon fills through its staging
 * mapping, so that they are the cache's pages, and a store by any other
 * process is seen at once.  Writing is refused (upc_protect: -EACCES), and
 * a write after a raw mprotect(2) is the process's own copy: it never
 * reaches the cache or the file.
 */
Test(shared, a_read_only_descriptor_maps_and_sees_every_store, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(8 * PAGE, path), rofd = open(path, O_RDONLY | O_CLOEXEC), status;
	volatile unsigned char *ro;
	struct upc_cache *c;
	unsigned char b;
	pid_t w;

	cr_assert_geq(rofd, 0);
	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, rofd, 0, 8 * PAGE, PROT_READ, 0, (void **)&ro), 0);
	cr_assert_eq(ro[3 * PAGE + 7], pat(3 * PAGE + 7));
	/* another process writes a cached page and one nobody has read yet */
	w = fork_child();
	cr_assert_geq(w, 0);
	if (w == 0) {
		struct upc_cache *wc = shared_cache();
		int wfd = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(wc, wfd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[3 * PAGE] = 'X';
		p[5 * PAGE] = 'Y';
		_exit(upc_cache_destroy(wc) ? 11 : 0);	/* msync'd and gone */
	}
	cr_assert_eq(waitpid(w, &status, 0), w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer: status %#x", status);
	cr_assert_eq(ro[3 * PAGE], 'X', "a store to a page mapped here: %#x", ro[3 * PAGE]);
	cr_assert_eq(ro[5 * PAGE], 'Y', "a store to a page read here after it: %#x", ro[5 * PAGE]);
	/* no way to write through it */
	cr_assert_eq(upc_protect(c, (void *)ro, 8 * PAGE, PROT_READ | PROT_WRITE), -EACCES);
	cr_assert_eq(mprotect((void *)ro, 8 * PAGE, PROT_READ | PROT_WRITE), 0);
	ro[6 * PAGE] = 'Z';
	ro[3 * PAGE + 1] = 'Z';
	cr_assert_eq(upc_pread(c, fd, &b, 1, 6 * PAGE), 1);
	cr_assert_eq(b, pat(6 * PAGE), "a private write reached the cache: %#x", b);
	cr_assert_eq(upc_pread(c, fd, &b, 1, 3 * PAGE + 1), 1);
	cr_assert_eq(b, pat(3 * PAGE + 1), "a private write reached the cache: %#x", b);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	cr_assert_eq(pread(fd, &b, 1, 6 * PAGE), 1);
	cr_assert_eq(b, pat(6 * PAGE), "a private write reached the file: %#x", b);
	cr_assert_eq(pread(fd, &b, 1, 3 * PAGE), 1);
	cr_assert_eq(b, 'X');
	close(rofd);
	close(fd);
	unlink(path);
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
	 * A private mapping of the memfd, which is what a read-only client
	 * maps (client.c, client_map): the daemon fills the memfd through its
	 * staging mapping and only wakes us, so the page is the memfd's and
	 * its descriptor's "cached" is true (were the fill a copy into our
	 * private page, the daemon's own next read of the hole would be its
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
		/* The file's data (no SIGBUS expected; one would be ignored, the check is the read's). */
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
	reader = fork_child();
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

/* ------------------------------------------------------------ what a writer can do to the memfd it is handed */

/*
 * A client that may write a file gets a read-write descriptor of the
 * cache's memfd.  Before it was sealed, an ftruncate(2) of it killed the
 * daemon with SIGBUS (its staging mapping lost the pages past the new
 * size), and every client's unwritten data with it.  Now: every shrink is
 * refused, no seal can be added, growth is harmless; a hole punched in a
 * cached page and a page written into a hole do not take the daemon down
 * either, and the other client's data reaches the file.
 */
Test(shared, a_writer_cannot_shrink_the_memfd_nor_take_the_daemon_down, .timeout = 60)
{
	const size_t size = 16 * PAGE;
	struct upc_msg *m = malloc(sizeof(*m));
	char path[64];
	int fd = tmpfile_pattern(size, path), s, memfd, rw;
	uint64_t args[3] = { 0, size, PROT_READ | PROT_WRITE };
	struct upc_cache *c, *c2;
	unsigned char *p, *q, buf[PAGE];
	struct stat st;
	long ret;

	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);

	/* The raw client: a writable map of the same file, its memfd descriptor. */
	s = raw_connect();
	cr_assert_geq(s, 0);
	ret = raw_attach(s, m);
	cr_assert_eq(ret, 0, "attach: %s", strerror((int)-ret));
	rw = open_rw(path);
	ret = raw_req(s, UPC_MSG_MAP, args, 3, &rw, 1, m);
	cr_assert(ret == 0 && m->nfds == 2, "map: %ld, %u descriptors", ret, m->nfds);
	memfd = m->fds[0];
	close(m->fds[1]);	/* the page table's: read-only (a_read_only_client_cannot_write_by_any_path) */
	cr_assert_eq(fcntl(memfd, F_GETFL) & O_ACCMODE, O_RDWR);
	cr_assert_eq(fcntl(memfd, F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_SEAL);

	/* Every shrink: refused. */
	cr_assert_eq(ftruncate(memfd, 0), -1);
	cr_assert_eq(errno, EPERM, "%s", strerror(errno));
	cr_assert_eq(ftruncate(memfd, 4 * PAGE + 7), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(fallocate(memfd, FALLOC_FL_COLLAPSE_RANGE, 0, PAGE), -1);
	cr_assert_eq(fallocate(memfd, FALLOC_FL_INSERT_RANGE, 0, PAGE), -1);
	/* No seal can be added (GROW or FUTURE_WRITE would stop the engine), none removed. */
	cr_assert_eq(fcntl(memfd, F_ADD_SEALS, F_SEAL_GROW), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(fcntl(memfd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
	cr_assert_eq(fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	cr_assert_eq(fcntl(memfd, F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_SEAL);
	/* ... nor through a descriptor opened again through /proc */
	{
		char proc[64];
		int again;

		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", memfd);
		again = open(proc, O_RDWR);
		if (again >= 0) {
			cr_assert_eq(ftruncate(again, 0), -1);
			cr_assert_eq(errno, EPERM);
			close(again);
		}
	}
	/* Growing it: allowed, and harmless (the engine needs it long, not short). */
	cr_assert_eq(fstat(memfd, &st), 0);
	cr_assert_eq(ftruncate(memfd, st.st_size + 64 * PAGE), 0);
	memset(buf, 'G', sizeof(buf));
	cr_assert_eq(pwrite(memfd, buf, PAGE, st.st_size + 100 * PAGE), PAGE);
	cr_assert_eq(ftruncate(memfd, st.st_size + 64 * PAGE), -1, "shrinking back");
	/*
	 * A page written into a hole of the cache (nothing of the file is
	 * cached yet): the other client's first access to it is a MINOR fault
	 * on a page the cache does not hold, which once faulted for ever.  It
	 * reads the file's page.
	 */
	memset(buf, 'Z', sizeof(buf));
	cr_assert_eq(pwrite(memfd, buf, PAGE, 12 * PAGE), PAGE);
	cr_assert_eq(p[12 * PAGE + 5], pat(12 * PAGE + 5), "a page a client wrote into a hole of the memfd was read");
	cr_assert_eq(p[12 * PAGE + 4095], pat(12 * PAGE + 4095));
	/* A hole punched in a cached, dirty page. */
	for (size_t i = 0; i < 8; i++)
		memset(p + i * PAGE + 100, 'A' + (int)i, 50);	/* dirty, not written back */
	cr_assert_eq(fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * PAGE, PAGE), 0);

	/*
	 * The daemon lives through its own access to the punched page (upc_pread
	 * and upc_pwrite copy through its staging mapping), and the other
	 * client is served all along.
	 */
	cr_assert_eq(upc_pread(c, fd, buf, 16, 3 * PAGE + 200), 16);
	cr_assert_eq(upc_pwrite(c, fd, "after the punch", 15, 3 * PAGE + 300), 15);
	for (size_t i = 8; i < 16; i++)
		memset(p + i * PAGE + 100, 'A' + (int)i, 50);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	close(s);
	close(memfd);
	close(rw);
	/* A new client is served too. */
	c2 = shared_cache();
	cr_assert_eq(upc_map(c2, fd, 0, size, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(q[5 * PAGE + 100], 'A' + 5);
	cr_assert_eq(upc_cache_destroy(c2), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();		/* exits 0: it wrote everything back */
	/* Everything the well-behaved client wrote is in the file, but the page punched under it. */
	for (size_t i = 0; i < 16; i++) {
		cr_assert_eq(pread(fd, buf, PAGE, (off_t)(i * PAGE)), PAGE);
		if (i == 3) {
			cr_assert_eq(memcmp(buf + 300, "after the punch", 15), 0);
			continue;
		}
		for (size_t j = 0; j < PAGE; j++)
			cr_assert_eq(buf[j], j >= 100 && j < 150 ? 'A' + (int)i : pat(i * PAGE + j),
				     "page %zu byte %zu", i, j);
	}
	free(m);
	unlink(path);
	close(fd);
}

/* ------------------------------------------------------------ past end of file, in shared mode */

/*
 * The memfd is sealed against shrinking, so the end-of-file fence of an
 * embedded cache (the memfd cut at end of file) is not there: a client's
 * access past end of file is refused with a poison marker in its own PTE
 * (remote.c).  The kernel's semantics all the same: SIGBUS with BUS_ADRERR
 * and the exact address for a user-mode access, EFAULT and no signal for a
 * kernel-mode one; and once the file grows over the page, the page reads.
 */
static sigjmp_buf eof_jmp;
static volatile void *eof_addr;
static volatile int eof_code, eof_hits;

static void on_eof_bus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	eof_addr = si->si_addr;
	eof_code = si->si_code;
	eof_hits++;
	siglongjmp(eof_jmp, 1);
}

/* Does this access get the kernel's SIGBUS for @p: BUS_ADRERR, si_addr @p? */
static bool eof_sigbus(volatile unsigned char *p, bool write)
{
	eof_code = 0;
	eof_addr = NULL;
	if (sigsetjmp(eof_jmp, 1) == 0) {
		if (write)
			*p = 1;
		else
			(void)*p;
		return false;
	}
	return eof_code == BUS_ADRERR && eof_addr == (void *)p;
}

/* Does write(2) from @p fail with EFAULT, without a signal? */
static bool eof_efault(int pfd, const volatile unsigned char *p)
{
	int hits = eof_hits;
	ssize_t n;

	errno = 0;
	n = write(pfd, (const void *)p, 16);
	return n == -1 && errno == EFAULT && eof_hits == hits;
}

static void eof_handler(struct sigaction *old)
{
	struct sigaction sa = { .sa_sigaction = on_eof_bus, .sa_flags = SA_SIGINFO };

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGBUS, &sa, old), 0);
}

Test(shared, past_eof_a_client_gets_the_kernels_sigbus_and_efault, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(PAGE + 10, path), pfd[2], status;
	struct sigaction old;
	struct upc_cache *c;
	volatile unsigned char *p;
	bool ok = false;
	pid_t pid;

	/* Not under --async: the daemon declines poison markers for writable mappings there (upcd(8), BUGS). */
	if (track_flags())
		cr_skip_test("past end of file, an asynchronously tracking daemon falls back to a plain SIGBUS (upcd(8), BUGS)");
	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(pipe(pfd), 0);
	eof_handler(&old);
	cr_assert_eq(p[PAGE + 9], pat(PAGE + 9));
	cr_assert_eq(p[PAGE + 10], 0, "the last page's tail reads zeros");
	/* kernel-mode first, on a page nothing touched yet; then user-mode there */
	cr_assert(eof_efault(pfd[1], p + 3 * PAGE), "write(2) from page 3: %s", strerror(errno));
	cr_assert(eof_efault(pfd[1], p + 3 * PAGE + 100));
	cr_assert(eof_sigbus(p + 3 * PAGE + 5, false), "read page 3: code %d addr %p", eof_code, eof_addr);
	/* user-mode first, on another page; then kernel-mode there */
	cr_assert(eof_sigbus(p + 2 * PAGE + 7, true), "write page 2: code %d addr %p", eof_code, eof_addr);
	cr_assert(eof_sigbus(p + 2 * PAGE + 7, false));
	cr_assert(eof_efault(pfd[1], p + 2 * PAGE + 8));
	cr_assert(eof_sigbus(p + 5 * PAGE, false));

	/* The file grows by this client's own call: the pages read when the call returns. */
	cr_assert_eq(upc_pwrite(c, fd, "grown", 5, 3 * PAGE), 5);
	cr_assert(!eof_sigbus(p + 2 * PAGE + 7, true), "SIGBUS after the file grew over page 2");
	cr_assert_eq(p[3 * PAGE], 'g');
	cr_assert_eq(p[2 * PAGE + 8], 0);
	cr_assert(eof_sigbus(p + 4 * PAGE + 1, false), "page 4 is still past the end");
	cr_assert(eof_efault(pfd[1], p + 4 * PAGE));

	/* By another client's: its relay signal reaches this process, and the pages read soon after. */
	pid = fork_child();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct upc_cache *c2 = shared_cache();
		int fd2 = open_rw(path);

		if (upc_ftruncate(c2, fd2, 6 * PAGE) != 0)
			_exit(1);
		_exit(upc_cache_destroy(c2) ? 2 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
	for (int i = 0; i < 200 && !ok; i++) {
		ok = !eof_sigbus(p + 5 * PAGE, false);
		if (!ok)
			usleep(10000);
	}
	cr_assert(ok, "page 5 still SIGBUS 2 s after the file grew over it");
	cr_assert_eq(p[5 * PAGE + 9], 0);
	cr_assert_eq(p[4 * PAGE + 1], 0);
	cr_assert(eof_sigbus(p + 6 * PAGE, false), "page 6 is past the end");
	sigaction(SIGBUS, &old, NULL);
	p[4 * PAGE + 2] = 'x';
	cr_assert_eq(upc_msync(c, (void *)p, 8 * PAGE, UPC_MS_SYNC), 0);
	{
		char b[8];

		cr_assert_eq(pread(fd, b, 5, 3 * PAGE), 5);
		cr_assert_eq(memcmp(b, "grown", 5), 0);
		cr_assert_eq(pread(fd, b, 1, 4 * PAGE + 2), 1);
		cr_assert_eq(b[0], 'x');
		cr_assert_eq(pread(fd, b, 1, 2 * PAGE + 7), 1);
		cr_assert_eq(b[0], 1, "the write to page 2 after the growth");
	}
	close(pfd[0]);
	close(pfd[1]);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	unlink(path);
	close(fd);
}

/*
 * A client whose relay signal is taken ($UPC_RELAY_SIGNAL=0 here, an
 * application's own handler in real life): the same answers, and its
 * poison markers go at its next request after the file grew.
 */
Test(shared, past_eof_a_client_without_a_relay_signal_is_lifted_at_its_next_request, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(PAGE + 10, path), to_child[2], to_parent[2], status;
	pid_t pid;
	char b;

	/* Not under --async: the daemon declines poison markers for writable mappings there (upcd(8), BUGS). */
	if (track_flags())
		cr_skip_test("past end of file, an asynchronously tracking daemon falls back to a plain SIGBUS (upcd(8), BUGS)");
	upcd_start(NULL);
	cr_assert_eq(pipe(to_child), 0);
	cr_assert_eq(pipe(to_parent), 0);
	pid = fork_child();		/* before this process makes a cache: the child's relay is still to be set up */
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct upc_stats st = { .sz = sizeof(st) };
		struct sigaction old;
		struct upc_cache *c2;
		volatile unsigned char *q;
		int fd2 = open_rw(path), pfd[2];

		setenv("UPC_RELAY_SIGNAL", "0", 1);
		c2 = shared_cache();
		if (upc_map(c2, fd2, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&q) || pipe(pfd))
			_exit(1);
		eof_handler(&old);
		if (!eof_sigbus(q + 3 * PAGE + 3, false) || !eof_efault(pfd[1], q + 2 * PAGE) ||
		    !eof_sigbus(q + 2 * PAGE + 1, true))
			_exit(2);
		if (write(to_parent[1], "t", 1) != 1 || read(to_child[0], &b, 1) != 1)
			_exit(3);
		/* grown by the parent; its markers stay until a request of its own */
		if (upc_stats(c2, &st) != 0)
			_exit(4);
		if (eof_sigbus(q + 3 * PAGE + 3, false) || q[3 * PAGE] != 'g' || eof_sigbus(q + 2 * PAGE + 1, true))
			_exit(5);
		if (upc_msync(c2, (void *)q, 4 * PAGE, UPC_MS_SYNC) || upc_cache_destroy(c2))
			_exit(6);
		_exit(0);
	}
	{
		struct upc_cache *c;

		cr_assert_eq(read(to_parent[0], &b, 1), 1);
		c = shared_cache();
		cr_assert_eq(upc_pwrite(c, fd, "grown", 5, 3 * PAGE), 5);
		cr_assert_eq(write(to_child[1], "g", 1), 1);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
		cr_assert_eq(upc_cache_destroy(c), 0);
	}
	cr_assert_eq(pread(fd, &b, 1, 2 * PAGE + 1), 1);
	cr_assert_eq(b, 1);
	upcd_stop();
	unlink(path);
	close(fd);
}

/* ------------------------------------------------------------ pins die with their client */

/*
 * A client pins pages (one range held back from write-back, one pinned for
 * writing, written through the pin where tracking does not see it) and is
 * killed.  Its pins go with it, as a process's pin_user_pages() pins go at
 * its exit (seed 001, Hubbard): the pages are written back, the write pin's
 * data included, and can be dropped.  Before, they stayed pinned until the
 * daemon exited, held back from write-back for good.  Another client may
 * not unpin pins it did not take.
 */
Test(shared, a_killed_clients_pins_go_with_it, .timeout = 60)
{
	const size_t size = 16 * PAGE;
	char path[64];
	int fd = tmpfile_pattern(size, path), ready[2], status;
	struct upc_cache *c;
	unsigned char *p, buf[PAGE];
	struct upc_stats st = { .sz = sizeof(st) };
	pid_t pid;
	char b;

	upcd_start(NULL);
	cr_assert_eq(pipe(ready), 0);
	pid = fork_child();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct upc_cache *c2 = shared_cache();
		int fd2 = open_rw(path);
		unsigned char *q;

		if (upc_map(c2, fd2, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&q))
			_exit(1);
		memset(q + 100, 'N', 50);			/* pages 0-3: held back */
		memset(q + 3 * PAGE + 100, 'N', 50);
		if (upc_pin(c2, q, 4 * PAGE, UPC_PIN_NOWRITEBACK) ||
		    upc_pin(c2, q + 8 * PAGE, 4 * PAGE, UPC_PIN_WRITE) ||
		    upc_pin(c2, q + 8 * PAGE, 2 * PAGE, 0))	/* 8-9 twice */
			_exit(2);
		memset(q + 8 * PAGE + 100, 'W', 50);		/* through the write pin */
		memset(q + 11 * PAGE + 100, 'W', 50);
		if (write(ready[1], "p", 1) != 1)
			_exit(3);
		pause();
		_exit(4);
	}
	cr_assert_eq(read(ready[0], &b, 1), 1);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_pinned, 8);
	/* not this client's to unpin */
	cr_assert_eq(upc_unpin(c, p, 4 * PAGE), -EINVAL);
	cr_assert_eq(upc_unpin(c, p + 8 * PAGE, PAGE), -EINVAL);
	/* held back while the client lives */
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 2, "the two held pages");
	cr_assert_eq(pread(fd, buf, 1, 100), 1);
	cr_assert_eq(buf[0], pat(100));

	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);
	for (int i = 0; i < 500; i++) {
		cr_assert_eq(upc_stats(c, &st), 0);
		if (!st.pages_pinned)
			break;
		usleep(10000);
	}
	cr_assert_eq(st.pages_pinned, 0, "a dead client's pins stayed");
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	for (size_t i = 0; i < 16; i++) {
		cr_assert_eq(pread(fd, buf, PAGE, (off_t)(i * PAGE)), PAGE);
		for (size_t j = 0; j < PAGE; j++) {
			int want = pat(i * PAGE + j);

			if ((i == 0 || i == 3) && j >= 100 && j < 150)
				want = 'N';
			if ((i == 8 || i == 11) && j >= 100 && j < 150)
				want = 'W';
			cr_assert_eq(buf[j], want, "page %zu byte %zu", i, j);
		}
	}
	/* and the pages can go: dropped, as clean unpinned pages */
	cr_assert_eq(upc_unmap(c, p, size), 0);
	cr_assert_geq(upc_drop(c, 0), 0);
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_cached, 0, "%lu pages stayed", (unsigned long)st.pages_cached);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	unlink(path);
	close(fd);
}

/* ------------------------------------------------------------ forked children */

/* The permissions /proc/self/maps gives the mapping at @addr ("rw-s"), or "" if none. */
static void maps_perms(const void *addr, char out[8])
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];

	out[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && (uintptr_t)addr >= lo &&
		    (uintptr_t)addr < hi) {
			strcpy(out, perms);
			break;
		}
	}
	if (f)
		fclose(f);
}

/*
 * A forked child of a client is a client of its own: it maps again what its
 * parent mapped (same addresses, offsets, protection), sees what the parent
 * wrote, the parent sees what it writes, and it goes on after the parent is
 * killed: its writes, its msync and its other calls are its own, and the
 * file holds everything.  Before, it shared its parent's connection, and
 * every call it made after the parent's death returned -ENOTCONN.
 */
static const char *task_waits(pid_t pid);

Test(shared, a_forked_child_is_a_client_of_its_own_and_outlives_its_parent, .timeout = 60)
{
	const size_t size = 16 * PAGE;
	char path[64];
	int fd = tmpfile_pattern(size, path), ready[2], go[2], status;
	/* how far the child got: said if it hangs (it timed out once in CI, 0a734ce's parent) */
	_Atomic int *step = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned char buf[PAGE];
	pid_t parent, child;
	char b;

	upcd_start(NULL);
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);	/* the grandchild is ours to wait for */
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	parent = fork();
	cr_assert_geq(parent, 0);
	if (parent == 0) {
		struct upc_cache *c = shared_cache();
		int c2p[2];
		unsigned char *p;
		pid_t kid;

		if (upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p) || pipe(c2p))
			_exit(10);
		for (size_t i = 0; i < 4; i++)
			memset(p + i * PAGE + 100, 'P', 50);
		if (upc_protect(c, p + 12 * PAGE, 4 * PAGE, PROT_READ))
			_exit(11);
		kid = fork();
		if (kid < 0)
			_exit(12);
		if (kid == 0) {
			struct upc_stats st = { .sz = sizeof(st) };
			char perms[8];

			/* its own mappings, where the parent's were, as they were */
			maps_perms(p, perms);
			if (strcmp(perms, "rw-s"))
				_exit(20);
			maps_perms(p + 12 * PAGE, perms);
			if (strcmp(perms, "r--s"))
				_exit(21);
			if (p[100] != 'P' || p[3 * PAGE + 149] != 'P' || p[5 * PAGE] != pat(5 * PAGE))
				_exit(22);
			for (size_t i = 4; i < 8; i++)
				memset(p + i * PAGE + 100, 'C', 50);
			if (upc_stats(c, &st) || st.nr_mappings != 2)	/* its own: two, the protect split it */
				_exit(23);
			atomic_store(step, 1);
			if (write(c2p[1], "c", 1) != 1 || read(go[0], &b, 1) != 1)
				_exit(24);
			/* the parent is dead */
			atomic_store(step, 2);
			for (size_t i = 8; i < 12; i++)
				memset(p + i * PAGE + 100, 'D', 50);
			if (p[4 * PAGE + 100] != 'C' || p[100] != 'P')
				_exit(25);
			atomic_store(step, 3);
			if (upc_msync(c, p, size, UPC_MS_SYNC))
				_exit(26);
			atomic_store(step, 4);
			{
				/* two calls: upc_unmap(3) takes a range within one mapping (-EINVAL), as embedded */
				int r = upc_unmap(c, p, 12 * PAGE) ?: upc_unmap(c, p + 12 * PAGE, 4 * PAGE);

				if (r) {
					fprintf(stderr, "child: upc_unmap: %s\n", upc_strerror(r));
					_exit(27);
				}
				atomic_store(step, 5);
				r = upc_cache_destroy(c);
				if (r) {
					fprintf(stderr, "child: upc_cache_destroy: %s\n", upc_strerror(r));
					_exit(28);
				}
			}
			_exit(0);
		}
		/* the child's writes, seen here */
		if (read(c2p[0], &b, 1) != 1 || p[4 * PAGE + 100] != 'C' || p[7 * PAGE + 149] != 'C')
			_exit(13);
		if (write(ready[1], &kid, sizeof(kid)) != sizeof(kid))
			_exit(14);
		pause();
		_exit(15);
	}
	cr_assert_eq(read(ready[0], &child, sizeof(child)), sizeof(child));
	cr_assert_eq(kill(parent, SIGKILL), 0);
	cr_assert_eq(waitpid(parent, &status, 0), parent);
	cr_assert(WIFSIGNALED(status), "the parent: status %#x", status);
	usleep(100000);		/* the daemon sees it go */
	cr_assert_eq(write(go[1], "g", 1), 1);
	for (int i = 0; i < 4000 && waitpid(child, &status, WNOHANG) == 0; i++)
		usleep(10000);
	if (waitpid(child, &status, WNOHANG) == 0) {
		/* (task_waits' buffer is static: the two in turn) */
		char cw[1024];

		snprintf(cw, sizeof(cw), "%s", task_waits(child));
		kill(child, SIGKILL);	/* (it holds the case's output) */
		cr_assert_fail("the child hung after step %d (1: written, 2: the parent dead, 3: checked, 4: msync, 5: unmap); "
			       "its threads wait in: %s; upcd's: %s", atomic_load(step), cw, task_waits(upcd_pid));
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child: status %#x", status);
	upcd_stop();
	for (size_t i = 0; i < 16; i++) {
		int mark = i < 4 ? 'P' : i < 8 ? 'C' : i < 12 ? 'D' : 0;

		cr_assert_eq(pread(fd, buf, PAGE, (off_t)(i * PAGE)), PAGE);
		for (size_t j = 0; j < PAGE; j++)
			cr_assert_eq(buf[j], mark && j >= 100 && j < 150 ? mark : pat(i * PAGE + j), "page %zu byte %zu",
				     i, j);
	}
	unlink(path);
	close(fd);
}

/* A child forked after the daemon went away: it has none of the mappings, and its calls say so. */
Test(shared, a_child_forked_without_a_daemon_has_no_mappings_and_says_so, .timeout = 60)
{
	int fd = tmpfile_pattern(4 * PAGE, NULL), status;
	struct upc_cache *c;
	unsigned char *p;
	pid_t pid;

	setenv("UPC_RECONNECT", "0", 1);	/* no wait for a restarted daemon: gone is gone */

	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 'x';
	upcd_stop();
	for (int i = 0; i < 500 && upc_msync(c, p, PAGE, UPC_MS_SYNC) != -ENOTCONN; i++)
		usleep(10000);
	cr_assert_eq(upc_msync(c, p, PAGE, UPC_MS_SYNC), -ENOTCONN);
	pid = fork_child();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct upc_stats st = { .sz = sizeof(st) };
		char perms[8];

		maps_perms(p, perms);
		if (perms[0])
			_exit(1);	/* not inherited, and not mapped again */
		_exit(upc_stats(c, &st) == -ENOTCONN ? 0 : 2);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child: status %#x", status);
	upc_cache_destroy(c);
	close(fd);
}

/*
 * The relay signal's requests: UPC_MSG_RELAY takes 0 or a real-time signal,
 * after attach only; and a lift request (sigbus.c) for a range that is not a
 * mapping of the cache, as one sent before an unmap and delivered after the
 * address was reused, destroys nothing.
 */
Test(shared, relay_requests_are_checked, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int s;
	long ret;

	upcd_start(NULL);
	s = raw_connect();
	cr_assert_geq(s, 0);
	ret = raw_req(s, UPC_MSG_RELAY, (uint64_t[]){ 0 }, 1, NULL, 0, m);
	cr_assert_eq(ret, -EPROTO, "relay before attach: %ld", ret);
	close(s);
	s = raw_connect();
	cr_assert_eq(raw_attach(s, m), 0);
	cr_assert_eq(raw_req(s, UPC_MSG_RELAY, (uint64_t[]){ SIGBUS }, 1, NULL, 0, m), -EINVAL);
	cr_assert_eq(raw_req(s, UPC_MSG_RELAY, (uint64_t[]){ 1ULL << 40 }, 1, NULL, 0, m), -EINVAL);
	cr_assert_eq(raw_req(s, UPC_MSG_RELAY, (uint64_t[]){ (uint64_t)SIGRTMAX }, 1, NULL, 0, m), 0);
	cr_assert_eq(raw_req(s, UPC_MSG_RELAY, (uint64_t[]){ 0 }, 1, NULL, 0, m), 0);
	close(s);
	{
		struct upc_cache *c = shared_cache();	/* installs the relay (SIGRTMAX here) */
		unsigned char *anon = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		siginfo_t si;

		cr_assert_neq(anon, MAP_FAILED);
		memset(anon, 0x77, 4 * PAGE);
		memset(&si, 0, sizeof(si));
		si.si_signo = SIGRTMAX;
		si.si_code = SI_QUEUE;
		si.si_pid = getpid();
		si.si_errno = 0x75706c66;	/* RELAY_LIFT_TAG */
		si.si_uid = 4;
		si.si_value.sival_ptr = anon;
		cr_assert_eq(syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), SIGRTMAX, &si), 0);
		for (size_t i = 0; i < 4 * PAGE; i += PAGE)
			cr_assert_eq(anon[i], 0x77, "a lift request zapped memory that is not the cache's");
		munmap(anon, 4 * PAGE);
		cr_assert_eq(upc_cache_destroy(c), 0);
	}
	upcd_stop();
	free(m);
}

/*
 * The reclaim channel's request (upcd(8), "Memory"): after attach only, one
 * descriptor that is a Unix SOCK_SEQPACKET socket whose peer is the client
 * itself, once a connection; the connection is served on after a refusal.
 */
Test(shared, reclaim_channel_requests_are_checked, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int s, sv[2], st[2], pp[2];
	long ret;
	char path[64];
	int fd = tmpfile_pattern(4 * PAGE, path);

	cr_assert(m);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, st), 0);
	cr_assert_eq(pipe2(pp, O_CLOEXEC), 0);
	upcd_start(NULL);
	s = raw_connect();
	cr_assert_geq(s, 0);
	ret = raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &sv[1], 1, m);
	cr_assert_eq(ret, -EPROTO, "a reclaim channel before attach: %ld", ret);
	close(s);
	s = raw_connect();
	cr_assert_eq(raw_attach(s, m), 0);
	cr_assert_eq(raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &fd, 1, m), -EINVAL, "a regular file");
	cr_assert_eq(raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &st[1], 1, m), -EINVAL, "a stream socket");
	cr_assert_eq(raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &pp[1], 1, m), -EINVAL, "a pipe");
	{
		/* a SEQPACKET socket connected to another process (the daemon's own listener here) */
		int other = raw_connect();

		cr_assert_geq(other, 0);
		cr_assert_eq(raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &other, 1, m), -EINVAL, "a socket to another process");
		close(other);
	}
	cr_assert_eq(raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &sv[1], 1, m), 0);
	cr_assert_eq(raw_req(s, UPC_MSG_RECLAIM, NULL, 0, &sv[1], 1, m), -EBUSY, "a second channel");
	/* served on, and a channel nobody answers on costs nothing while nothing is evicted */
	cr_assert_eq(raw_req(s, UPC_MSG_STATS, NULL, 0, NULL, 0, m), 0);
	close(s);
	upcd_stop();
	for (int i = 0; i < 2; i++) {
		close(sv[i]);
		close(st[i]);
		close(pp[i]);
	}
	close(fd);
	unlink(path);
	free(m);
}

/*
 * A daemon of the test's own, on sock_path, for what upcd would never send:
 * it answers hello (asynchronous tracking, a reclaim channel taken), attach,
 * the relay signal and the channel, keeps the channel's descriptor, maps
 * its own memfd for a MAP (plain shared memory: no fault reaches anyone),
 * takes a PWRITE as written whole, takes ONCE, and refuses anything else.  Until the
 * client hangs up; or, for each of the first @hangups PWRITEs, it hangs up
 * itself instead of answering, as a daemon that dies, and serves the next
 * connection.
 */
struct fake_daemon {
	int ls;
	_Atomic int channel;
	int memfds[2];		/* what a MAP is answered with: the data's, the page table's */
	pthread_t thread;
	unsigned int hangups;
	uint64_t pwrites[4];	/* the sequence numbers of the PWRITEs it got */
	_Atomic unsigned int npwrites;
	_Atomic unsigned int nonce;	/* UPC_MSG_ONCEs */
};

static void *fake_daemon_main(void *arg)
{
	struct fake_daemon *fd = arg;
	struct upc_msg *m = malloc(sizeof(*m));
	int conn = accept4(fd->ls, NULL, NULL, SOCK_CLOEXEC);

	while (m && conn >= 0 && upc_msg_recv(conn, m, UPC_FROM_CLIENT) == 0) {
		uint64_t r[5] = { (uint64_t)-ENOSYS };
		unsigned int n = 1;

		if (m->h.type == UPC_MSG_PWRITE) {
			unsigned int i = atomic_load(&fd->npwrites);

			if (i < sizeof(fd->pwrites) / sizeof(fd->pwrites[0])) {
				fd->pwrites[i] = m->h.seq;
				atomic_store(&fd->npwrites, i + 1);
			}
			r[0] = m->dlen;
			if (fd->hangups) {
				fd->hangups--;
				upc_msg_close_fds(m);
				close(conn);
				conn = accept4(fd->ls, NULL, NULL, SOCK_CLOEXEC);
				continue;
			}
		}

		if (m->h.type == UPC_MSG_HELLO) {
			r[0] = 0, r[1] = UPC_PROTO_VERSION, r[2] = 0, r[3] = UPC_TRACK_ASYNC;
			r[4] = UPC_DAEMON_F_RECLAIM | UPC_DAEMON_F_ONCE;
			n = 5;
		} else if (m->h.type == UPC_MSG_ATTACH || m->h.type == UPC_MSG_RELAY) {
			r[0] = 0;
		} else if (m->h.type == UPC_MSG_ONCE) {
			atomic_fetch_add(&fd->nonce, 1);
			r[0] = 0;
		} else if (m->h.type == UPC_MSG_RECLAIM) {
			int old = atomic_exchange(&fd->channel, fcntl(m->fds[0], F_DUPFD_CLOEXEC, 0));

			if (old >= 0)
				close(old);	/* an earlier connection's */
			r[0] = 0;
		} else if (m->h.type == UPC_MSG_MAP) {
			/* its own memfd, mapped shared and served by the kernel: nothing registered */
			r[0] = 0, r[1] = 1, r[2] = PROT_READ | PROT_WRITE;
			n = 3;
		} else if (m->h.type == UPC_MSG_MAP_DONE || m->h.type == UPC_MSG_MSYNC) {
			r[0] = 0;
		}
		upc_msg_close_fds(m);
		if (upc_msg_send(conn, UPC_MSG_REPLY, m->h.seq, r, n, NULL, 0, m->h.type == UPC_MSG_MAP ? fd->memfds : NULL,
				 m->h.type == UPC_MSG_MAP ? 2 : 0) < 0)
			break;
	}
	if (conn >= 0)
		close(conn);
	free(m);
	return NULL;
}

/* @fd's thread, serving on a socket of its own at sock_path; and a cache of the library's, its client. */
static struct upc_cache *fake_daemon_start(struct fake_daemon *fd)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	struct upc_cache *c = NULL;
	int ret;

	fd->ls = listen_here();
	cr_assert_eq(pthread_create(&fd->thread, NULL, fake_daemon_main, fd), 0);
	ret = upc_cache_create(&o, &c);
	cr_assert_eq(ret, 0, "upc_cache_create against the fake daemon: %s", upc_strerror(ret));
	return c;
}

/* A zap on the channel @ch, and the client's answer to it. */
static long fake_zap(int ch, uint64_t dev, uint64_t ino, uintptr_t addr, size_t len, uint64_t pgoff, struct upc_msg *m)
{
	uint64_t args[2] = { dev, ino }, t[3] = { addr, len, pgoff };
	struct pollfd pfd = { .fd = ch, .events = POLLIN };

	if (upc_msg_send(ch, UPC_MSG_ZAP, 9, args, 2, t, sizeof(t), NULL, 0) < 0 || poll(&pfd, 1, 5000) != 1 ||
	    upc_msg_recv(ch, m, UPC_FROM_CLIENT) < 0 || m->h.type != UPC_MSG_ZAP_DONE || m->h.seq != 9)
		return -EBADMSG;
	return (long)(int64_t)m->args[0];
}

/* Is the PTE of @p present (/proc/self/pagemap, bit 63)? */
static bool pte_present(const volatile void *p)
{
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t e = 0;

	cr_assert_geq(pm, 0);
	cr_assert_eq(pread(pm, &e, sizeof(e), (off_t)((uintptr_t)p / PAGE * sizeof(e))), (ssize_t)sizeof(e));
	close(pm);
	return e >> 63;
}

/*
 * The client's side of the reclaim channel (connect.c, zap_serve): it zaps
 * only where it maps, writable, the memfd and the file page a range names.
 * The daemon's look may be older than an unmap and a new mmap at the
 * address: anything may be there now, another memfd, another page of it,
 * or the program's own memory, and such a zap is refused (-ESTALE) and
 * zaps nothing; a range that is not whole pages is refused (-EINVAL);
 * anything but a zap ends the channel (and only it).
 */
Test(shared, a_zap_of_what_the_client_does_not_map_so_is_refused, .timeout = 60)
{
	struct fake_daemon fd = { .channel = -1 };
	struct upc_msg *m = malloc(sizeof(*m));
	struct upc_cache *c;
	unsigned char *anon = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	volatile unsigned char *p;
	char path[64];
	int file = tmpfile_pattern(4 * PAGE, path);
	uint64_t dev, ino;
	struct stat st;
	int ch;
	char b;

	cr_assert(m && anon != MAP_FAILED);
	sock_dir_make();
	fd.memfds[0] = memfd_create("fake-data", MFD_CLOEXEC);
	fd.memfds[1] = memfd_create("fake-state", MFD_CLOEXEC);
	cr_assert(fd.memfds[0] >= 0 && fd.memfds[1] >= 0);
	cr_assert_eq(ftruncate(fd.memfds[0], 4 * PAGE), 0);
	cr_assert_eq(fstat(fd.memfds[0], &st), 0);
	dev = (uint64_t)st.st_dev;
	ino = (uint64_t)st.st_ino;
	c = fake_daemon_start(&fd);
	ch = atomic_load(&fd.channel);
	cr_assert_geq(ch, 0, "the client opened no reclaim channel");
	cr_assert_eq(upc_map(c, file, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < 4; i++)
		p[i * PAGE] = (unsigned char)(0x11 + i);
	memset(anon, 0x5a, 2 * PAGE);

	/* another memfd, another page of it, past the mapping's end, the program's own memory */
	cr_assert_eq(fake_zap(ch, dev, ino + 1, (uintptr_t)p, PAGE, 0, m), -ESTALE);
	cr_assert_eq(fake_zap(ch, dev, ino, (uintptr_t)p, PAGE, 1, m), -ESTALE);
	cr_assert_eq(fake_zap(ch, dev, ino, (uintptr_t)p + 3 * PAGE, 2 * PAGE, 3, m), -ESTALE);
	cr_assert_eq(fake_zap(ch, dev, ino, (uintptr_t)anon, 2 * PAGE, 0, m), -ESTALE);
	cr_assert_eq(fake_zap(ch, dev, ino, (uintptr_t)p + 1, PAGE, 0, m), -EINVAL);
	cr_assert_eq(fake_zap(ch, dev, ino, (uintptr_t)p, 0, 0, m), -EINVAL);
	for (size_t i = 0; i < 4; i++)
		cr_assert(pte_present(p + i * PAGE), "a refused zap zapped page %zu of the mapping", i);
	for (size_t i = 0; i < 2 * PAGE; i++)
		cr_assert_eq(anon[i], 0x5a, "a refused zap zapped the program's memory at %zu", i);
	/* what it does map so: zapped, and the data is the memfd's still */
	cr_assert_eq(fake_zap(ch, dev, ino, (uintptr_t)p + PAGE, 2 * PAGE, 1, m), 0);
	cr_assert(pte_present(p) && !pte_present(p + PAGE) && !pte_present(p + 2 * PAGE) && pte_present(p + 3 * PAGE),
		  "a zap of pages 1-2 zapped other pages, or not those");
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(p[i * PAGE], 0x11 + i, "page %zu after the zap", i);

	/* not a zap: the client ends the channel */
	cr_assert_eq(upc_msg_send(ch, UPC_MSG_CALL, 10, (uint64_t[]){ 0, 0, 0, 0 }, 4, NULL, 0, NULL, 0), 0);
	{
		struct pollfd pfd = { .fd = ch, .events = POLLIN };

		cr_assert_eq(poll(&pfd, 1, 5000), 1);
		cr_assert_eq(read(ch, &b, 1), 0, "the channel is still open after a message that is not a zap");
	}
	/* (the fake daemon refuses the unmap: destroy unmaps it itself, and says so) */
	upc_cache_destroy(c);
	pthread_join(fd.thread, NULL);
	close(ch);
	close(fd.ls);
	close(fd.memfds[0]);
	close(fd.memfds[1]);
	close(file);
	unlink(path);
	munmap(anon, 2 * PAGE);
	free(m);
}

/*
 * A request the daemon did not answer (it died) is sent again to the next
 * with the number it had, so that a daemon that applied it already
 * answers it without applying it again (struct upc_once, internal.h); a
 * new request gets a new number.  Against a fake daemon that hangs up on
 * the first PWRITE.
 */
Test(shared, a_request_sent_again_keeps_its_number, .timeout = 60)
{
	struct fake_daemon fd = { .channel = -1, .hangups = 1 };
	struct upc_cache *c;
	char path[64], buf[100];
	int file = tmpfile_pattern(4 * PAGE, path);
	ssize_t n;

	sock_dir_make();
	setenv("UPC_RECONNECT", "10", 1);
	fd.memfds[0] = fd.memfds[1] = -1;
	c = fake_daemon_start(&fd);
	memset(buf, 'X', sizeof(buf));
	n = upc_pwrite(c, file, buf, sizeof(buf), 100);
	cr_assert_eq(n, (ssize_t)sizeof(buf), "a pwrite sent again after a hang-up: %zd", n);
	n = upc_pwrite(c, file, buf, sizeof(buf), 200);
	cr_assert_eq(n, (ssize_t)sizeof(buf));
	cr_assert_eq(atomic_load(&fd.npwrites), 3, "the daemons got %u PWRITEs, not 3", atomic_load(&fd.npwrites));
	cr_assert_eq(fd.pwrites[1], fd.pwrites[0], "sent again as %#llx, first as %#llx",
		     (unsigned long long)fd.pwrites[1], (unsigned long long)fd.pwrites[0]);
	cr_assert_neq(fd.pwrites[2], fd.pwrites[1], "a new request with the number of the one before");
	cr_assert_eq(atomic_load(&fd.nonce), 2, "the client said it numbers its requests on %u connections of 2",
		     atomic_load(&fd.nonce));
	upc_cache_destroy(c);
	pthread_join(fd.thread, NULL);
	close(fd.ls);
	close(file);
	unlink(path);
}

/* ------------------------------------------------------------ UPC_MAP_FIXED */

/* Is [p, p + len) wholly unmapped? (mincore(2) fails with ENOMEM on an unmapped page.) */
static bool unmapped(const void *p, size_t len)
{
	unsigned char v;

	for (size_t o = 0; o < len; o += PAGE)
		if (mincore((char *)p + o, PAGE, &v) == 0 || errno != ENOMEM)
			return false;
	return true;
}

/* Over a plain anonymous mapping: replaced in the range only, as mmap(MAP_FIXED). */
Test(shared, a_fixed_mapping_replaces_an_anonymous_one, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(16 * PAGE, path);
	struct upc_cache *c;
	unsigned char *anon, *p;
	char b[5];

	upcd_start(NULL);
	c = shared_cache();
	anon = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(anon, MAP_FAILED);
	memset(anon, 'A', 16 * PAGE);
	p = anon + 4 * PAGE;
	cr_assert_eq(upc_map(c, fd, 2 * PAGE, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&p), 0);
	cr_assert_eq(p, anon + 4 * PAGE, "not at the address asked for");
	for (size_t i = 0; i < 8 * PAGE; i += 511)
		cr_assert_eq(p[i], pat(2 * PAGE + i), "offset %zu", i);
	cr_assert_eq(anon[4 * PAGE - 1], 'A');
	cr_assert_eq(anon[12 * PAGE], 'A');
	memcpy(p + 100, "fixed", 5);
	cr_assert_eq(upc_msync(c, p, 8 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, b, 5, 2 * PAGE + 100), 5);
	cr_assert_eq(memcmp(b, "fixed", 5), 0);
	{
		struct upc_stats st = { .sz = sizeof(st) };

		cr_assert_eq(upc_stats(c, &st), 0);
		cr_assert_eq(st.nr_mappings, 1);
	}
	cr_assert_eq(upc_unmap(c, p, 8 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	munmap(anon, 16 * PAGE);
	unlink(path);
	close(fd);
}

/*
 * Over an upcache mapping of this client with dirty pages: the old
 * mapping's middle is replaced, its two ends stay mapped and served, and
 * every page written through the replaced part reaches the file (I5: the
 * daemon keeps them dirty when it forgets the mapping).
 */
Test(shared, a_fixed_mapping_over_an_upcache_one_keeps_its_dirty_pages, .timeout = 60)
{
	char apath[64], bpath[64];
	int afd = tmpfile_pattern(16 * PAGE, apath), bfd = tmpfile_pattern(16 * PAGE, bpath);
	unsigned char *p, *q, buf[16 * PAGE];
	struct upc_stats st = { .sz = sizeof(st) };
	struct upc_cache *c;

	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, afd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < 16; i++)
		memset(p + i * PAGE + 8, 'D', 64);	/* dirty, not written back */
	q = p + 4 * PAGE;
	cr_assert_eq(upc_map(c, bfd, 8 * PAGE, 8 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&q), 0);
	cr_assert_eq(q, p + 4 * PAGE);
	for (size_t i = 0; i < 8; i++)
		cr_assert_eq(q[i * PAGE + 8], pat((8 + i) * PAGE + 8), "page %zu is not b's", i);
	/* the ends are a's still, dirty data included, and still served */
	cr_assert_eq(p[3 * PAGE + 8], 'D');
	cr_assert_eq(p[12 * PAGE + 8], 'D');
	p[PAGE + 200] = 'E';
	p[13 * PAGE + 200] = 'F';
	q[300] = 'G';
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.nr_mappings, 3, "%u mappings", st.nr_mappings);
	/* the client's list of its mappings follows: destroy writes back and unmaps all three */
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert(unmapped(p, 16 * PAGE));
	upcd_stop();
	cr_assert_eq(pread(afd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (size_t i = 0; i < 16; i++)
		cr_assert_eq(buf[i * PAGE + 8], 'D', "a's page %zu lost its dirty data", i);
	cr_assert_eq(buf[PAGE + 200], 'E');
	cr_assert_eq(buf[13 * PAGE + 200], 'F');
	cr_assert_eq(pread(bfd, buf, PAGE, 8 * PAGE), (ssize_t)PAGE);
	cr_assert_eq(buf[300], 'G');
	unlink(apath);
	unlink(bpath);
	close(afd);
	close(bfd);
}

/*
 * What refuses a fixed mapping, and what a refusal leaves: bad arguments,
 * a bad descriptor and a pinned page change nothing; an mmap that fails
 * after the daemon cleared the range (the address-space limit, here)
 * leaves the whole range unmapped, as a failed mmap(MAP_FIXED) may, and
 * the cleared mapping's dirty pages still reach the file.
 */
Test(shared, a_refused_fixed_mapping_changes_nothing_a_failed_one_unmaps, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(16 * PAGE, path), status;
	struct upc_cache *c;
	unsigned char *p, *q, b;
	pid_t pid;

	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[5 * PAGE] = 'D';
	q = NULL;
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED, (void **)&q), -EINVAL);
	q = p + 1;
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED, (void **)&q), -EINVAL);
	q = p;
	cr_assert_eq(upc_map(c, fd, 0, PAGE, PROT_READ, UPC_MAP_FIXED | UPC_MAP_HINT, (void **)&q), -EINVAL);
	q = p + 4 * PAGE;
	cr_assert_eq(upc_map(c, -1, 0, PAGE, PROT_READ, UPC_MAP_FIXED, (void **)&q), -EBADF);
	cr_assert_eq(p[5 * PAGE], 'D', "a refused descriptor changed the mapping");
	cr_assert_eq(upc_pin(c, p + 5 * PAGE, PAGE, 0), 0);
	cr_assert_eq(upc_map(c, fd, 0, 4 * PAGE, PROT_READ, UPC_MAP_FIXED, (void **)&q), -EBUSY);
	cr_assert_eq(p[5 * PAGE], 'D', "a pinned page's mapping changed");
	p[4 * PAGE] = 'P';
	cr_assert_eq(upc_unpin(c, p + 5 * PAGE, PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);

	/*
	 * The failed mmap, in a child of its own with RLIMIT_AS just above
	 * what it uses: its mapping of 16 pages is replaced by one of 256 MiB
	 * over a reservation of that size (so that nothing else of the
	 * child's is in the range), grown past the limit.
	 */
	pid = fork_child();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		const size_t big = 256UL << 20;
		struct upc_cache *c2 = shared_cache();
		int cfd = open_rw(path);
		struct upc_stats st = { .sz = sizeof(st) };
		struct rlimit rl;
		unsigned char *r, *m;
		char line[256];
		FILE *f;
		long vm = 0;

		/*
		 * The size first: from the munmap of the reservation's tail to
		 * the failed map, nothing here allocates (no mmap can land in
		 * the tail, which the failure unmaps whole).
		 */
		f = fopen("/proc/self/status", "r");
		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "VmSize: %ld kB", &vm) == 1)
				break;
		if (f)
			fclose(f);
		if (!vm)
			_exit(12);
		r = mmap(NULL, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		m = r;
		if (r == MAP_FAILED || munmap(r + 16 * PAGE, big - 16 * PAGE))
			_exit(10);
		if (upc_map(c2, cfd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&m) || m != r)
			_exit(11);
		m[7 * PAGE] = 'K';		/* dirty */
		/* 16 pages more than before, and 64 MiB of room: not the 256 MiB the map grows by */
		rl.rlim_cur = rl.rlim_max = (rlim_t)vm * 1024 + 16 * PAGE + (64UL << 20);
		if (setrlimit(RLIMIT_AS, &rl))
			_exit(13);
		m = r;
		if (upc_map(c2, cfd, 0, big, PROT_READ, UPC_MAP_FIXED, (void **)&m) != -ENOMEM)
			_exit(14);
		if (!unmapped(r, big))
			_exit(15);		/* half of the old contents left */
		if (upc_stats(c2, &st) || st.nr_mappings != 0)
			_exit(16);
		_exit(upc_cache_destroy(c2) ? 17 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	upcd_stop();
	cr_assert_eq(pread(fd, &b, 1, 5 * PAGE), 1);
	cr_assert_eq(b, 'D');
	cr_assert_eq(pread(fd, &b, 1, 4 * PAGE), 1);
	cr_assert_eq(b, 'P');
	cr_assert_eq(pread(fd, &b, 1, 7 * PAGE), 1);
	cr_assert_eq(b, 'K', "the cleared mapping's dirty page was lost");
	unlink(path);
	close(fd);
}

/* ------------------------------------------------------------ large pwrite */

/* Bytes of @b (the range) that are not wholly the pattern of the writer its first byte is of. */
static size_t mixed_bytes(const unsigned char *b, size_t len)
{
	int k = b[0] >= 0xb0;
	size_t mixed = 0;

	for (size_t i = 0; i < len; i++)
		mixed += b[i] != (unsigned char)(k ? 0xb0 + (i % 7) : 0xa0 + (i % 5));
	return mixed;
}

/*
 * Two processes write 1 MiB of their own pattern at the same offset, 200
 * times each, at the same time (both let go together at each round):
 * every write is one upc_pwrite under the file's io_lock in the daemon,
 * so after each round, and at the end in the file, the range is wholly
 * one pattern, as with write(2) under the inode's lock.  (Sent in pieces
 * of a message each, rounds ended mixed: checked by hand, 2026-12-03.)
 */
Test(shared, a_large_pwrite_is_atomic_against_another_processes_write, .timeout = 180)
{
	const size_t len = 1 << 20;
	const off_t off = 3 * PAGE + 123;	/* not page-aligned: partial edge pages too */
	const int rounds = 200;
	char path[64];
	int fd = tmpfile_pattern(2 * len, path), mixed_rounds = 0;
	unsigned char *buf = malloc(len);
	_Atomic int *sync = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct upc_cache *c;
	pid_t pids[2];

	cr_assert_neq(sync, MAP_FAILED);
	atomic_store(&sync[0], -1);	/* the round the writers may start */
	atomic_store(&sync[1], 0);	/* writes done */
	upcd_start(NULL);
	for (int k = 0; k < 2; k++) {
		pids[k] = fork_child();
		cr_assert_geq(pids[k], 0);
		if (pids[k] == 0) {
			struct upc_cache *wc = shared_cache();
			int cfd = open_rw(path);
			unsigned char *mine = malloc(len);

			for (size_t i = 0; i < len; i++)
				mine[i] = (unsigned char)(k ? 0xb0 + (i % 7) : 0xa0 + (i % 5));
			for (int r = 0; r < rounds; r++) {
				while (atomic_load(&sync[0]) < r)
					;
				if (upc_pwrite(wc, cfd, mine, len, off) != (ssize_t)len)
					_exit(3);
				atomic_fetch_add(&sync[1], 1);
			}
			_exit(upc_cache_destroy(wc) ? 4 : 0);
		}
	}
	c = shared_cache();
	for (int r = 0; r < rounds; r++) {
		atomic_store(&sync[0], r);
		while (atomic_load(&sync[1]) < 2 * (r + 1))
			usleep(100);
		cr_assert_eq(upc_pread(c, fd, buf, len, off), (ssize_t)len);
		mixed_rounds += mixed_bytes(buf, len) != 0;
	}
	cr_assert_eq(mixed_rounds, 0, "%d rounds of %d left the range mixed", mixed_rounds, rounds);
	for (int k = 0; k < 2; k++) {
		int status;

		cr_assert_eq(waitpid(pids[k], &status, 0), pids[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d: status %#x", k, status);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	cr_assert_eq(pread(fd, buf, len, off), (ssize_t)len);
	cr_assert_eq(mixed_bytes(buf, len), 0, "the file's range is mixed");
	cr_assert_eq(pread(fd, buf, 1, off - 1), 1);
	cr_assert_eq(buf[0], pat(off - 1));
	cr_assert_eq(pread(fd, buf, 1, off + len), 1);
	cr_assert_eq(buf[0], pat(off + len));
	munmap(sync, PAGE);
	free(buf);
	unlink(path);
	close(fd);
}

/* A memfd of @len bytes of @c, sealed with @seals (0: none). */
static int data_memfd(size_t len, int c, unsigned int seals)
{
	int mfd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	char *b = malloc(len);

	cr_assert_geq(mfd, 0);
	memset(b, c, len);
	cr_assert_eq(pwrite(mfd, b, len, 0), (ssize_t)len);
	free(b);
	if (seals)
		cr_assert_eq(fcntl(mfd, F_ADD_SEALS, seals), 0);
	return mfd;
}

/*
 * The daemon checks what a large write's data comes in: not a memfd, not
 * sealed against shrinking and writing, not the length said, or bad
 * lengths and offsets are each refused with an error (the connection
 * stays), and the file is unchanged; the right one writes.
 */
Test(shared, a_large_pwrites_data_descriptor_is_checked, .timeout = 60)
{
	const unsigned int sealed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	const size_t len = 3 * PAGE;
	struct upc_msg *m = malloc(sizeof(*m));
	char path[64], other[64];
	int fd = tmpfile_pattern(8 * PAGE, path), ofd = tmpfile_pattern(len, other), pfd[2], s, rofd;
	unsigned char buf[3 * PAGE];
	struct {
		const char *what;
		int mfd;
		uint64_t off, len;
		long want;
	} cases[16];
	unsigned int n = 0;
	long ret;

	upcd_start(NULL);
	s = raw_connect();
	cr_assert_geq(s, 0);
	ret = raw_attach(s, m);
	if (ret == -ENOSYS)
		cr_skip_test("userfaultfd is not available");
	cr_assert_eq(ret, 0, "attach: %s", strerror((int)-ret));
	cr_assert_eq(pipe(pfd), 0);
	cases[n++] = (typeof(cases[0])){ "unsealed", data_memfd(len, 'x', 0), PAGE, len, -EINVAL };
	cases[n++] = (typeof(cases[0])){ "not sealed against writing", data_memfd(len, 'x', F_SEAL_SHRINK),
					 PAGE, len, -EINVAL };
	cases[n++] = (typeof(cases[0])){ "not sealed against shrinking", data_memfd(len, 'x', F_SEAL_WRITE),
					 PAGE, len, -EINVAL };
	cases[n++] = (typeof(cases[0])){ "shorter than said", data_memfd(len, 'x', sealed), PAGE, len + 1,
					 -EINVAL };
	cases[n++] = (typeof(cases[0])){ "longer than said", data_memfd(len, 'x', sealed), PAGE, len - 1,
					 -EINVAL };
	cases[n++] = (typeof(cases[0])){ "length 0", data_memfd(len, 'x', sealed), PAGE, 0, -EINVAL };
	cases[n++] = (typeof(cases[0])){ "length past the maximum", data_memfd(len, 'x', sealed), PAGE,
					 (uint64_t)UPC_PROTO_MAX_WRITE + PAGE, -EINVAL };
	cases[n++] = (typeof(cases[0])){ "negative offset", data_memfd(len, 'x', sealed), (uint64_t)-PAGE, len,
					 -EINVAL };
	cases[n++] = (typeof(cases[0])){ "a pipe", pfd[0], PAGE, len, -EBADF };
	cases[n++] = (typeof(cases[0])){ "a regular file", ofd, PAGE, len, 1 /* any error */ };
	for (unsigned int i = 0; i < n; i++) {
		int fds[2] = { fd, cases[i].mfd };
		uint64_t a[2] = { cases[i].off, cases[i].len };

		ret = raw_req(s, UPC_MSG_PWRITE_FD, a, 2, fds, 2, m);
		if (cases[i].want == 1)
			cr_assert(ret < 0 && ret != -EPROTO, "%s: %ld", cases[i].what, ret);
		else
			cr_assert_eq(ret, cases[i].want, "%s: %ld", cases[i].what, ret);
		close(cases[i].mfd);
	}
	close(pfd[1]);
	/* through a read-only descriptor of the file: refused too */
	rofd = open(path, O_RDONLY | O_CLOEXEC);
	{
		int fds[2] = { rofd, data_memfd(len, 'x', sealed) };
		uint64_t a[2] = { PAGE, len };

		ret = raw_req(s, UPC_MSG_PWRITE_FD, a, 2, fds, 2, m);
		cr_assert(ret < 0 && ret != -EPROTO, "through O_RDONLY: %ld", ret);
		close(fds[1]);
	}
	cr_assert_eq(pread(fd, buf, len, PAGE), (ssize_t)len);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(buf[i], pat(PAGE + i), "the file changed at %zu", PAGE + i);
	/* the right one: written, and the connection served all along */
	{
		int fds[2] = { fd, data_memfd(len, 'y', sealed) };
		uint64_t a[2] = { PAGE, len };

		cr_assert_eq(raw_req(s, UPC_MSG_PWRITE_FD, a, 2, fds, 2, m), (long)len);
		close(fds[1]);
		cr_assert_eq(raw_req(s, UPC_MSG_FSYNC, (uint64_t[]){ 1 }, 1, &fd, 1, m), 0);
	}
	cr_assert_eq(pread(fd, buf, len, PAGE), (ssize_t)len);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(buf[i], 'y', "at %zu", PAGE + i);
	close(s);
	upcd_stop();
	free(m);
	unlink(path);
	unlink(other);
	close(rofd);
	close(ofd);
	close(fd);
}

/* ------------------------------------------------------------ with no daemon: the calls' contracts */

/* The first line of /proc/@pid/task/@tid/@what, without its newline; "" if it cannot be read. */
static void task_read(pid_t pid, const char *tid, const char *what, char *buf, size_t len)
{
	char path[320];
	FILE *f;

	buf[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/task/%s/%s", (int)pid, tid, what);
	if ((f = fopen(path, "re"))) {
		if (!fgets(buf, (int)len, f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
}

/*
 * What @pid's threads wait in, "comm:wchan ...", for a message about a
 * hang: a case that fails kills its children, and with them the evidence.
 */
static const char *task_waits(pid_t pid)
{
	static char out[1024];
	char path[64], comm[32], wchan[64];
	size_t len = 0;
	struct dirent *e;
	DIR *d;

	out[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return "(gone)";
	while ((e = readdir(d)) && len < sizeof(out) - 100) {
		if (e->d_name[0] == '.')
			continue;
		task_read(pid, e->d_name, "comm", comm, sizeof(comm));
		task_read(pid, e->d_name, "wchan", wchan, sizeof(wchan));
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s:%s ", comm, wchan);
	}
	closedir(d);
	return out;
}

/* The tid of @pid's thread named @comm, or -1. */
static pid_t thread_named(pid_t pid, const char *comm)
{
	char path[64], name[32];
	struct dirent *e;
	pid_t tid = -1;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	while (d && (e = readdir(d)) && tid < 0) {
		if (e->d_name[0] == '.')
			continue;
		task_read(pid, e->d_name, "comm", name, sizeof(name));
		if (strcmp(name, comm) == 0)
			tid = (pid_t)atoi(e->d_name);
	}
	if (d)
		closedir(d);
	return tid;
}

struct nd_shared {
	_Atomic int ready, killed, done, writer_done, writer_ready;
	_Atomic int unmap_ret, foreign_mapped, read_ok, eof_bus;
	_Atomic int step;	/* how far a client's calls got: a hang says where */
	_Atomic int resident_a, resident_b;	/* pages two clients found cached (resident()) */
};

/*
 * While no daemon runs, a client keeps every contract it has with one
 * (review of 36c145e): a read of a page nobody cached through a mapping
 * that was never writable completes (no write-protected fill where the
 * range is not registered for it); an access past end of file through a
 * mapping made writable by upc_protect() is the kernel's SIGBUS (the
 * write-protect marker there is removed before the poison marker goes in);
 * upc_unmap() of memory that is no mapping of the cache is -EINVAL and
 * unmaps nothing.  And a process that writes and exits without
 * upc_cache_destroy() or an msync loses nothing: the journal names its
 * page to the next daemon.
 */
Test(shared, with_no_daemon_a_client_keeps_its_contracts_and_an_exit_loses_nothing, .timeout = 90)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64], epath[64];
	int fd = tmpfile_pattern(16 * PAGE, path), efd = tmpfile_pattern(4 * PAGE, epath), status;
	unsigned char b;
	pid_t x, y;

	cr_assert(sh != MAP_FAILED);
	if (track_flags())
		cr_skip_test("under asynchronous tracking no client serves itself (takeover.c)");
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path), e = open_rw(epath);
		volatile unsigned char *r, *p;
		char *mine = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct sigaction old;

		if (mine == MAP_FAILED || upc_map(c, f, 0, 16 * PAGE, PROT_READ, 0, (void **)&r) ||
		    upc_map(c, e, 0, 8 * PAGE, PROT_READ, 0, (void **)&p) ||
		    upc_protect(c, (void *)p, 8 * PAGE, PROT_READ | PROT_WRITE))
			_exit(10);
		(void)r[0];
		p[0] = 'p';
		mine[0] = 'm';
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		atomic_store(&sh->step, 1);
		atomic_store(&sh->read_ok, r[8 * PAGE + 5] == pat(8 * PAGE + 5));
		atomic_store(&sh->step, 2);
		eof_handler(&old);
		atomic_store(&sh->eof_bus, eof_sigbus(p + 6 * PAGE, false));
		sigaction(SIGBUS, &old, NULL);
		atomic_store(&sh->step, 3);
		atomic_store(&sh->unmap_ret, upc_unmap(c, mine, 4 * PAGE));
		atomic_store(&sh->step, 4);
		atomic_store(&sh->foreign_mapped, msync(mine, PAGE, MS_ASYNC) == 0 && mine[0] == 'm');
		atomic_store(&sh->done, 1);
		while (atomic_load(&sh->done) != 2)
			usleep(1000);
		_exit(upc_cache_destroy(c) ? 11 : 0);
	}
	y = fork_child();
	cr_assert_geq(y, 0);
	if (y == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		atomic_store(&sh->writer_ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		p[12 * PAGE] = 'H';	/* a page nobody has: filled by this process itself */
		p[0] = 'h';		/* a page another process has cached */
		atomic_store(&sh->writer_done, 1);
		_exit(0);		/* neither msync nor upc_cache_destroy */
	}
	for (int i = 0; i < 3000 && !(atomic_load(&sh->ready) && atomic_load(&sh->writer_ready)); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready) && atomic_load(&sh->writer_ready));
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	atomic_store(&sh->killed, 1);
	cr_assert_eq(waitpid(y, &status, 0), y);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the exiting writer: status %#x", status);
	for (int i = 0; i < 3000 && !atomic_load(&sh->done); i++)
		usleep(10000);
	cr_assert(atomic_load(&sh->done),
		  "the calls with no daemon did not return (step %d: 0 before the read of an uncached page, 1 in it, "
		  "2 in the access past end of file, 3 in upc_unmap, 4 in msync; its threads wait in %s)",
		  atomic_load(&sh->step), task_waits(x));
	cr_assert(atomic_load(&sh->read_ok), "a read-only mapping's read of an uncached page with no daemon");
	cr_assert(atomic_load(&sh->eof_bus), "past end of file with no daemon: no SIGBUS BUS_ADRERR");
	cr_assert_eq(atomic_load(&sh->unmap_ret), -EINVAL, "upc_unmap of memory that is not the cache's: %d",
		     atomic_load(&sh->unmap_ret));
	cr_assert(atomic_load(&sh->foreign_mapped), "upc_unmap with no daemon unmapped the program's memory");

	upcd_spawn(NULL);
	atomic_store(&sh->done, 2);
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the reader: status %#x", status);
	upcd_stop();
	cr_assert_eq(pread(fd, &b, 1, 12 * PAGE), 1);
	cr_assert_eq(b, 'H', "a page written with no daemon by a process that exited: %#x", b);
	cr_assert_eq(pread(fd, &b, 1, 0), 1);
	cr_assert_eq(b, 'h', "a cached page written with no daemon by a process that exited: %#x", b);
	close(fd);
	close(efd);
	unlink(path);
	unlink(epath);
}

/*
 * A new daemon must not give a file a memfd of its own while a client of
 * the dead one still serves itself on the old one (review of 36c145e: the
 * new client's msync was undone by the old one's hand-back, and the old
 * one's mapping refused).  It adopts the old memfd from the process that
 * holds it (adopt.c, cache_find_orphans), after that client handed it back:
 * the new client sees the old one's write, and each keeps the other's.
 */
Test(shared, a_new_client_after_a_restart_shares_the_memfd_the_old_ones_serve_themselves, .timeout = 90)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64];
	int fd = tmpfile_pattern(4 * PAGE, path), status;
	unsigned char buf[PAGE];
	pid_t w, zs[2];

	cr_assert(sh != MAP_FAILED);
	if (track_flags())
		cr_skip_test("under asynchronous tracking no client serves itself (takeover.c)");
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	w = fork_child();
	cr_assert_geq(w, 0);
	if (w == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		(void)p[0];
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		memset((void *)p, 'W', 100);	/* served by itself, never msync'd */
		atomic_store(&sh->writer_done, 1);
		while (atomic_load(&sh->done) != 2)
			usleep(1000);
		_exit(upc_cache_destroy(c) ? 11 : 0);
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	atomic_store(&sh->killed, 1);
	for (int i = 0; i < 3000 && !atomic_load(&sh->writer_done); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->writer_done));
	/* the old client stops before it can notice the new daemon */
	cr_assert_eq(kill(w, SIGSTOP), 0);
	upcd_spawn(NULL);
	/*
	 * Two new clients, the second while the first one's map waits: it
	 * waits too, for that adoption, and gets the same memfd (review of
	 * dcfd6eb: it found the file's entries taken out of the list and gave
	 * the file a memfd of its own, which the first one got too).
	 */
	for (int k = 0; k < 2; k++) {
		zs[k] = fork_child();
		cr_assert_geq(zs[k], 0);
		if (zs[k] == 0) {
			struct upc_cache *c = shared_cache();
			int f = open_rw(path);
			volatile unsigned char *p;
			bool saw;

			if (upc_map(c, f, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
				_exit(10);
			saw = p[0] == 'W' && p[99] == 'W';
			memset((void *)(p + 200 + 100 * k), 'Z' + k, 100);
			if (upc_msync(c, (void *)p, 4 * PAGE, UPC_MS_SYNC))
				_exit(12);
			_exit(upc_cache_destroy(c) ? 11 : saw ? 0 : 13);
		}
		usleep(500 * 1000);	/* the new client's map waits for the old one */
	}
	cr_assert_eq(kill(w, SIGCONT), 0);
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(waitpid(zs[k], &status, 0), zs[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "new client %d: status %#x (13: it did not see the old one's write)", k, status);
	}
	atomic_store(&sh->done, 2);
	cr_assert_eq(waitpid(w, &status, 0), w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the old client: status %#x", status);
	upcd_stop();
	cr_assert_eq(pread(fd, buf, PAGE, 0), (ssize_t)PAGE);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(buf[i], 'W', "byte %d: %#x: the old client's write", i, buf[i]);
	for (int i = 200; i < 400; i++)
		cr_assert_eq(buf[i], i < 300 ? 'Z' : 'Z' + 1, "byte %d: %#x: a new client's msync'd write", i, buf[i]);
	close(fd);
	unlink(path);
}

/*
 * One process maps a file read-write and read-only (review of fdcd625):
 * each mapping keeps descriptors of its own (client.c, cfile_get), so with
 * no daemon the read-only (private) view shows the pages the writer fills
 * (the memfd's, never a copy of its own), and after a restart both are
 * adopted with their own access: the writable one stays writable, the
 * read-only one sees every later store.
 */
Test(shared, a_read_only_and_a_writable_mapping_in_one_process_survive_a_restart, .timeout = 90)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64];
	int fd = tmpfile_pattern(256 * PAGE, path), status;
	unsigned char b;
	pid_t x;

	cr_assert(sh != MAP_FAILED);
	if (track_flags())
		cr_skip_test("under asynchronous tracking no client serves itself (takeover.c)");
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path), rofd = open(path, O_RDONLY | O_CLOEXEC);
		volatile unsigned char *p, *ro;
		int bad = 0;

		if (rofd < 0 || upc_map(c, f, 0, 256 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p) ||
		    upc_map(c, rofd, 0, 256 * PAGE, PROT_READ, 0, (void **)&ro))
			_exit(10);
		bad += ro[0] != pat(0);
		p[0] = 'A';
		bad += ro[0] != 'A';
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		p[200 * PAGE] = 'Q';		/* no one had page 200: this process fills it itself */
		bad += (ro[200 * PAGE] != 'Q') << 1;
		atomic_store(&sh->done, 1);
		while (atomic_load(&sh->done) != 2)
			usleep(1000);
		if (upc_msync(c, (void *)p, PAGE, UPC_MS_SYNC))	/* through the new daemon: adopted */
			_exit(12);
		p[PAGE] = 'B';			/* still writable */
		p[201 * PAGE] = 'R';
		bad += (ro[201 * PAGE] != 'R') << 2;
		bad += (ro[240 * PAGE] != pat(240 * PAGE)) << 3;	/* uncached: the daemon's staged fill */
		p[240 * PAGE] = 'S';
		bad += (ro[240 * PAGE] != 'S') << 4;
		if (upc_cache_destroy(c))
			_exit(11);
		_exit(bad ? 20 + bad : 0);
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready));
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	atomic_store(&sh->killed, 1);
	for (int i = 0; i < 3000 && !atomic_load(&sh->done); i++)
		usleep(10000);
	cr_assert(atomic_load(&sh->done), "the writes and reads with no daemon did not return");
	upcd_spawn(NULL);
	atomic_store(&sh->done, 2);
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "status %#x (exit 20 + a mask: 1 before the kill, 2 with no daemon, 4/8/16 after the restart)", status);
	upcd_stop();
	cr_assert_eq(pread(fd, &b, 1, PAGE), 1);
	cr_assert_eq(b, 'B');
	cr_assert_eq(pread(fd, &b, 1, 200 * PAGE), 1);
	cr_assert_eq(b, 'Q');
	close(fd);
	unlink(path);
}

/*
 * The earlier daemon's memfds are found by their names in /proc, which
 * anyone can give: a process that names memfds for a file and then puts a
 * FIFO behind those descriptor numbers must not block the daemon (an open
 * of it through /proc did, for ever: review of fdcd625).  The descriptors
 * are taken with pidfd_getfd(2), which opens nothing, and checked.
 */
Test(shared, a_planted_orphan_memfd_cannot_block_the_daemon, .timeout = 60)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64], fifo[80];
	int fd = tmpfile_pattern(8 * PAGE, path), status;
	struct stat st;
	pid_t a, v;

	cr_assert(sh != MAP_FAILED);
	cr_assert_eq(fstat(fd, &st), 0);
	snprintf(fifo, sizeof(fifo), "%s.fifo", path);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	a = fork_child();
	cr_assert_geq(a, 0);
	if (a == 0) {
		char name[96];
		int m, p, ff;

		snprintf(name, sizeof(name), "upcache:%lx:%lu", (unsigned long)st.st_dev, (unsigned long)st.st_ino);
		m = memfd_create(name, 0);
		snprintf(name, sizeof(name), "upcache-pt:%lx:%lu", (unsigned long)st.st_dev, (unsigned long)st.st_ino);
		p = memfd_create(name, 0);
		if (m < 0 || p < 0)
			_exit(10);
		atomic_store(&sh->ready, 1);
		while (atomic_load(&sh->killed) != 1)	/* the daemon has read /proc */
			usleep(1000);
		ff = open(fifo, O_RDONLY | O_NONBLOCK);	/* no writer: a blocking open would wait */
		if (ff < 0 || dup2(ff, m) < 0 || dup2(ff, p) < 0)
			_exit(11);
		atomic_store(&sh->killed, 2);
		pause();
		_exit(0);
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	upcd_start(NULL);
	atomic_store(&sh->killed, 1);
	for (int i = 0; i < 3000 && atomic_load(&sh->killed) != 2; i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&sh->killed), 2);
	v = fork_child();
	cr_assert_geq(v, 0);
	if (v == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *q;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ, 0, (void **)&q))
			_exit(12);
		_exit(q[PAGE + 3] == pat(PAGE + 3) && upc_cache_destroy(c) == 0 ? 0 : 13);
	}
	{
		bool back = false;

		for (int i = 0; i < 1000 && !(back = waitpid(v, &status, WNOHANG) == v); i++)
			usleep(10000);
		if (!back) {
			kill(v, SIGKILL);
			waitpid(v, NULL, 0);
		}
		cr_assert(back, "the map of the file did not return in 10 s: the daemon is blocked");
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the map of the file: status %#x", status);
	}
	upcd_stop();
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);
	unlink(fifo);
	unlink(path);
	close(fd);
}

/*
 * The first descriptor of process @pid whose /proc link starts with
 * @prefix, or -1: with errno 0 if it has none, opendir's if its
 * descriptors cannot be listed.  (Called in a case's children too: no
 * assertion here.)
 */
static int proc_fd_linked(pid_t pid, const char *prefix)
{
	char dir[64], link[128];
	struct dirent *de;
	int fd = -1;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return -1;
	while (fd < 0 && (de = readdir(d))) {
		ssize_t n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);

		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!strncmp(link, prefix, strlen(prefix)))
			fd = atoi(de->d_name);
	}
	closedir(d);
	errno = 0;
	return fd;
}

/* The inode of the data memfd daemon @pid holds for @st's file, 0 if none. */
static ino_t daemon_memfd_ino(pid_t pid, const struct stat *st)
{
	char want[96], path[64];
	struct stat ms;
	int fd;

	snprintf(want, sizeof(want), "/memfd:upcache:%lx:%lu ", (unsigned long)st->st_dev, (unsigned long)st->st_ino);
	fd = proc_fd_linked(pid, want);
	cr_assert(fd >= 0 || errno == 0, "/proc/%d/fd: %s", (int)pid, strerror(errno));
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	return fd >= 0 && stat(path, &ms) == 0 ? ms.st_ino : 0;
}

/*
 * Two daemons on one machine (two sockets): a file that one serves is never
 * taken from it by the other, which finds its memfds in the first one's
 * clients (cache_find_orphans): the first one's write lock says so, read
 * through the second's own description of the page table, not through the
 * duplicate it takes from the client (review of dcfd6eb: it was taken after
 * a 10 s wait).
 */
Test(shared, a_second_daemon_never_takes_a_live_daemons_memfd, .timeout = 60)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64], first[108];
	int fd = tmpfile_pattern(8 * PAGE, path), status;
	struct stat st;
	pid_t da, a, b;
	uint64_t t0;
	ino_t ia, ib;

	cr_assert(sh != MAP_FAILED);
	cr_assert_eq(fstat(fd, &st), 0);
	upcd_start(NULL);
	da = upcd_pid;
	strcpy(first, sock_path);
	a = fork_child();
	cr_assert_geq(a, 0);
	if (a == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[0] = 'A';
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->done))
			usleep(1000);
		_exit(upc_cache_destroy(c) ? 11 : 0);
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready));
	ia = daemon_memfd_ino(da, &st);
	cr_assert_neq(ia, 0);
	/* the second daemon, on a socket of its own, beside the first */
	snprintf(sock_path, sizeof(sock_path), "%s2", first);
	upcd_spawn(NULL);
	t0 = (uint64_t)time(NULL);
	b = fork_child();
	cr_assert_geq(b, 0);
	if (b == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ, 0, (void **)&p))
			_exit(10);
		(void)p[PAGE];
		atomic_store(&sh->writer_ready, 1);
		while (atomic_load(&sh->done) != 2)
			usleep(1000);
		_exit(upc_cache_destroy(c) ? 11 : 0);
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->writer_ready); i++)
		usleep(10000);
	cr_assert(atomic_load(&sh->writer_ready), "the second daemon's client could not map the file");
	cr_assert_lt((uint64_t)time(NULL) - t0, 5, "the second daemon waited for the first one's lock");
	ib = daemon_memfd_ino(upcd_pid, &st);
	cr_assert_neq(ib, 0);
	cr_assert_neq(ia, ib, "the second daemon took the first one's memfd (inode %lu)", (unsigned long)ia);
	atomic_store(&sh->done, 2);
	cr_assert_eq(waitpid(b, &status, 0), b);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the second daemon's client: %#x", status);
	upcd_stop();
	upcd_pid = da;
	strcpy(sock_path, first);
	atomic_store(&sh->done, 1);
	cr_assert_eq(waitpid(a, &status, 0), a);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the first daemon's client: %#x", status);
	upcd_stop();
	close(fd);
	unlink(path);
}

/* Can a process connect to "<sock_path>.keeper"?  (Whether a keeper serves it.) */
static bool keeper_listens(void)
{
	char kpath[sizeof(sock_path) + sizeof(".keeper")];
	int s;

	strcpy(kpath, sock_path);
	strcat(kpath, ".keeper");
	cr_assert_lt(strlen(kpath), sizeof(((struct sockaddr_un *)0)->sun_path));
	s = path_connect(kpath);
	if (s >= 0)
		close(s);
	return s >= 0;
}

/*
 * A client that maps the first @npages pages of @path writable, writes
 * @byte at offset @off of @n pages from page @first, and exits without
 * msync: the daemon holds them dirty.  Returns when it has exited.
 */
static void write_and_exit(const char *path, size_t npages, size_t first, size_t n, size_t off, unsigned char byte)
{
	int status;
	pid_t x = fork_child();

	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, npages * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		for (size_t i = first; i < first + n; i++)
			p[i * PAGE + off] = byte;
		_exit(0);
	}
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a writer: status %#x", status);
}

/*
 * Of the cases that kill a daemon: a client that maps the 8 pages of
 * @path writable, writes 'B' at page 5 offset 9, and stays until it is
 * killed.  Returns it once it has written.
 */
static pid_t write_and_stay(struct nd_shared *sh, const char *path)
{
	pid_t y = fork_child();

	cr_assert_geq(y, 0);
	if (y == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[5 * PAGE + 9] = 'B';
		atomic_store(&sh->writer_ready, 1);
		for (;;)
			pause();
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->writer_ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->writer_ready));
	return y;
}

/*
 * The daemon killed, then the writer @y of write_and_stay(), once it has
 * noticed (it waits, async, or serves itself, sync); neither page 3
 * offset 7 of @afd (write_and_exit()'s 'A') nor @y's was written back.
 * Meanwhile the socket takes connections nobody answers, as a dying
 * daemon's does for a while after its clients' connections hung up, and
 * systemd's does while it restarts the service: a client hands back only
 * to a daemon that answers (connect.c, reconnect; it handed back on a
 * connect, and wrote y's page early: twice in the CI runs of 2026-12-04
 * and 05, in the ASan build).
 */
static void kill_daemon_then(pid_t y, int afd, int bfd)
{
	unsigned char a = 0, b = 0;
	int status, ls;

	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	ls = listen_here();
	usleep(200 * 1000);
	close(ls);		/* the connections in its backlog are reset */
	unlink(sock_path);
	cr_assert_eq(kill(y, SIGKILL), 0);
	cr_assert_eq(waitpid(y, &status, 0), y);
	cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
	cr_assert_eq(pread(bfd, &b, 1, 5 * PAGE + 9), 1);
	/* (which of the two, and with what, tells who wrote it: the exited writer's file, or the killed one's) */
	cr_assert_eq(a, pat(3 * PAGE + 7), "the test's premise: A's page was written back before the kill (%#x)", a);
	cr_assert_eq(b, pat(5 * PAGE + 9), "the test's premise: B's page was written back before the kill (%#x)", b);
}

/*
 * A socket that takes connections and never answers (a daemon stopped
 * with SIGSTOP after it accepted, systemd's socket while the service does
 * not start) is no daemon: the client's other calls still fail with
 * -ENOTCONN after $UPC_RECONNECT, and its mappings go on being served
 * (synchronous tracking: it serves itself).  The watcher waited for the
 * hello's answer for ever holding the client's lock, and every call with
 * it (connect.c, reconnect: HELLO_WAIT_MS).
 */
struct stats_call {
	struct upc_cache *c;
	_Atomic int ret;
};

static void *stats_call_main(void *arg)
{
	struct stats_call *sc = arg;
	struct upc_stats st = { .sz = sizeof(st) };

	atomic_store(&sc->ret, upc_stats(sc->c, &st));
	return NULL;
}

Test(shared, a_socket_that_never_answers_is_no_daemon, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(4 * PAGE, path), status, ls;
	struct stats_call sc = { .ret = 1 };
	volatile unsigned char *p;
	pthread_t t;
	int i;

	setenv("UPC_RECONNECT", "2", 1);
	upcd_start(NULL);
	sc.c = shared_cache();
	cr_assert_eq(upc_map(sc.c, fd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	p[0] = 'a';
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	ls = listen_here();	/* never accepts: every connect waits in its backlog */
	cr_assert_eq(pthread_create(&t, NULL, stats_call_main, &sc), 0);
	for (i = 0; i < 2000 && atomic_load(&sc.ret) == 1; i++)
		usleep(10 * 1000);
	cr_assert_eq(atomic_load(&sc.ret), -ENOTCONN, "a call %s after %d ms, with a socket that never answers (%d)",
		     atomic_load(&sc.ret) == 1 ? "still waits" : "returned", i * 10, atomic_load(&sc.ret));
	if (!track_flags()) {
		p[PAGE] = 'b';		/* served here: this process serves itself */
		cr_assert_eq(p[0], 'a');
	}
	close(ls);
	cr_assert_eq(pthread_join(t, NULL), 0);
	upc_cache_destroy(sc.c);
	close(fd);
	unlink(path);
}

/* Both pages reach their files once the new daemon has adopted them: in the background, so a sync writes them once it has. */
static void kept_pages_written(int afd, int bfd)
{
	unsigned char a = 0, b = 0;

	for (int i = 0; i < 300 && (a != 'A' || b != 'B'); i++) {
		usleep(100 * 1000);
		upcd_sync();
		cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
		cr_assert_eq(pread(bfd, &b, 1, 5 * PAGE + 9), 1);
	}
	cr_assert_eq(a, 'A', "a page written by a process that exited, after the daemon's kill: %#x", a);
	cr_assert_eq(b, 'B', "a page written by a process killed after the daemon: %#x", b);
}

/*
 * The daemon's memfds outlive it and every client (daemon/keeper.c): a
 * file written by a process that exited, and one whose writer is killed
 * after the daemon, while it waits or serves itself, both with their
 * pages never written back; then no process but the keeper holds the
 * memfds.  A new daemon takes them from the keeper and writes them back
 * unasked.  Both tracking modes: under asynchronous tracking the table
 * does not know the second file's page is dirty, and the kept memfd's
 * pages are all written back (adopt.c, file_adopt_pages).
 */
Test(shared, a_killed_daemons_dirty_pages_outlive_every_client_in_its_keeper, .timeout = 90)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char apath[64], bpath[64];
	int afd = tmpfile_pattern(8 * PAGE, apath), bfd = tmpfile_pattern(8 * PAGE, bpath);
	pid_t y;

	cr_assert(sh != MAP_FAILED);
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	write_and_exit(apath, 8, 3, 1, 7, 'A');
	y = write_and_stay(sh, bpath);
	cr_assert(keeper_listens(), "no keeper beside the daemon");
	/* only the keeper holds them now, and neither page was written back */
	kill_daemon_then(y, afd, bfd);

	upcd_spawn(NULL);
	/* adopted in the background: a sync writes them once they are */
	kept_pages_written(afd, bfd);
	cr_assert(keeper_listens(), "no keeper beside the new daemon");
	upcd_stop();
	/* BYE: a daemon that wrote everything back leaves no keeper behind */
	for (int i = 0; i < 200 && keeper_listens(); i++)
		usleep(10000);
	cr_assert(!keeper_listens(), "the keeper outlived a clean stop");
	close(afd);
	close(bfd);
	unlink(apath);
	unlink(bpath);
}

/* A request by hand, numbered @seq, with @dlen bytes of data and the descriptor @fd: its reply's result. */
static long raw_req_seq(int s, uint64_t seq, uint16_t type, const uint64_t *args, unsigned int argc,
			const void *data, size_t dlen, int fd, struct upc_msg *m)
{
	int ret = upc_msg_send(s, type, seq, args, argc, data, dlen, &fd, 1);

	if (ret < 0)
		return ret;
	ret = upc_msg_recv(s, m, UPC_FROM_DAEMON);
	if (ret < 0)
		return ret;
	upc_msg_close_fds(m);
	return m->h.type == UPC_MSG_REPLY && m->h.seq == seq ? (long)(int64_t)m->args[0] : -EBADMSG;
}

/*
 * Another process, one for the whole case, that writes with upc_pwrite
 * through the daemon what it is told: { offset, byte } on @cmd[1], 100
 * bytes each, and answers each with its result on @ack[0].  One process:
 * a process of its own for each write would take as many slots of the
 * file's notes (struct upc_once), and might take the case's own.
 */
struct other_writer {
	pid_t pid;
	int cmd[2], ack[2];
};

static void other_writer_start(struct other_writer *w, const char *path)
{
	cr_assert_eq(pipe2(w->cmd, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(w->ack, O_CLOEXEC), 0);
	w->pid = fork_child();
	cr_assert_geq(w->pid, 0);
	if (w->pid == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(path);
		uint64_t req[2];
		char buf[100];

		close(w->cmd[1]);	/* (its end of file: the case's close) */
		close(w->ack[0]);
		while (read(w->cmd[0], req, sizeof(req)) == (ssize_t)sizeof(req)) {
			ssize_t n;

			memset(buf, (int)req[1], sizeof(buf));
			n = upc_pwrite(c, f, buf, sizeof(buf), (off_t)req[0]);
			if (write(w->ack[1], &n, sizeof(n)) != (ssize_t)sizeof(n))
				_exit(11);
		}
		_exit(0);
	}
	/* the child's ends: a child that dies is an end of file here, not a hang */
	close(w->cmd[0]);
	close(w->ack[1]);
}

/* The other process writes 100 bytes @byte at @off of the file, through the daemon. */
static void other_writes(struct other_writer *w, off_t off, unsigned char byte)
{
	uint64_t req[2] = { (uint64_t)off, byte };
	ssize_t n = 0;

	cr_assert_eq(write(w->cmd[1], req, sizeof(req)), (ssize_t)sizeof(req));
	cr_assert_eq(read(w->ack[0], &n, sizeof(n)), (ssize_t)sizeof(n));
	cr_assert_eq(n, 100, "the other writer's upc_pwrite: %zd", n);
}

static void other_writer_stop(struct other_writer *w)
{
	int status;

	close(w->cmd[1]);
	cr_assert_eq(waitpid(w->pid, &status, 0), w->pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the other writer: status %#x", status);
	close(w->ack[0]);
}

/* Are the @n bytes at @off of @fd all @byte, once the daemon wrote back what it holds? */
static bool file_bytes_are(int fd, off_t off, size_t n, unsigned char byte)
{
	unsigned char buf[PAGE];

	upcd_sync();
	cr_assert_leq(n, sizeof(buf));
	cr_assert_eq(pread(fd, buf, n, off), (ssize_t)n, "the file is shorter than %lld bytes", (long long)(off + (off_t)n));
	for (size_t i = 0; i < n; i++)
		if (buf[i] != byte)
			return false;
	return true;
}

/*
 * A request that changes a file, which a daemon applied but did not
 * answer (it was killed), is sent again by the client to the next daemon
 * (client.c, request_fds), which may have let another process write the
 * range in between: it is answered with what the first daemon did, and
 * not applied again (struct upc_once, internal.h), or it would undo that
 * write.  A pwrite, a truncation and a hole punch, each sent again by hand
 * with the number it had, as the library sends its one request in flight
 * again: to the same daemon, and to the next after a kill -9, with the
 * other process's write made through the next.  A new number is a new
 * request; a client that did not say it numbers its requests so
 * (UPC_MSG_ONCE: an earlier library) gets every request applied.
 */
Test(shared, a_request_sent_again_to_the_next_daemon_is_applied_once, .timeout = 90)
{
	static const char *const what[3] = { "pwrite", "truncation", "hole punch" };
	struct upc_msg *m = malloc(sizeof(*m));
	struct other_writer w;
	char path[64], x[100];
	int fd = tmpfile_pattern(8 * PAGE, path), s, status;
	uint64_t seq = 0x5eed00;

	cr_assert(m);
	memset(x, 'X', sizeof(x));
	upcd_start(NULL);
	other_writer_start(&w, path);

	/* a client that does not number its requests: the same number twice is two requests */
	s = raw_connect();
	cr_assert_eq(raw_attach(s, m), 0);
	cr_assert_eq(raw_req_seq(s, seq, UPC_MSG_PWRITE, (uint64_t[]){ 3 * PAGE }, 1, x, sizeof(x), fd, m), 100);
	other_writes(&w, 3 * PAGE, 'Y');
	cr_assert_eq(raw_req_seq(s, seq, UPC_MSG_PWRITE, (uint64_t[]){ 3 * PAGE }, 1, x, sizeof(x), fd, m), 100);
	cr_assert(file_bytes_are(fd, 3 * PAGE, 100, 'X'), "a request of a client that does not number them was not applied");
	close(s);

	s = raw_connect();
	cr_assert_eq(raw_attach(s, m), 0);
	cr_assert_eq(raw_req(s, UPC_MSG_ONCE, NULL, 0, NULL, 0, m), 0);
	for (int restart = 0; restart < 2; restart++) {
		for (int k = 0; k < 3; k++) {
			/* a pwrite at page 3; a truncation to 2 pages; a hole of page 0 */
			static const uint64_t args[3][3] = { { 3 * PAGE }, { 2 * PAGE },
							     { FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE } };
			static const uint16_t type[3] = { UPC_MSG_PWRITE, UPC_MSG_FTRUNCATE, UPC_MSG_FALLOCATE };
			static const unsigned int argc[3] = { 1, 1, 3 };
			long want = k ? 0 : (long)sizeof(x), ret;

			seq++;
			ret = raw_req_seq(s, seq, type[k], args[k], argc[k], k ? NULL : x, k ? 0 : sizeof(x), fd, m);
			cr_assert_eq(ret, want, "the %s: %ld", what[k], ret);
			if (restart) {
				/* as far as the client knows, the daemon died before it answered */
				close(s);
				cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
				cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
				upcd_spawn(NULL);	/* it adopts the file from the keeper */
			}
			/* the other process writes page 3 (growing the file back past it) and page 0 */
			other_writes(&w, 3 * PAGE, 'Y');
			other_writes(&w, 10, 'Y');
			if (restart) {
				s = raw_connect();
				cr_assert_eq(raw_attach(s, m), 0);
				cr_assert_eq(raw_req(s, UPC_MSG_ONCE, NULL, 0, NULL, 0, m), 0);
			}
			ret = raw_req_seq(s, seq, type[k], args[k], argc[k], k ? NULL : x, k ? 0 : sizeof(x), fd, m);
			cr_assert_eq(ret, want, "the %s sent again%s: %ld", what[k], restart ? " to the next daemon" : "", ret);
			cr_assert(file_bytes_are(fd, 3 * PAGE, 100, 'Y') && file_bytes_are(fd, 10, 100, 'Y'),
				  "the %s sent again%s was applied again", what[k], restart ? " to the next daemon" : "");
		}
	}
	/* a new number: applied */
	cr_assert_eq(raw_req_seq(s, ++seq, UPC_MSG_PWRITE, (uint64_t[]){ 3 * PAGE }, 1, x, sizeof(x), fd, m), 100);
	cr_assert(file_bytes_are(fd, 3 * PAGE, 100, 'X'), "a new pwrite was not applied");
	close(s);
	other_writer_stop(&w);
	upcd_stop();
	free(m);
	close(fd);
	unlink(path);
}

/*
 * upcd under an RLIMIT_FSIZE (it inherits "ulimit -f"): a client's growth
 * of a file past the limit is -EFBIG, and the daemon goes on.  Before, the
 * kernel's SIGXFSZ for the store's truncation, or for a memfd grown past
 * the limit (the first file's), ended it: upcd ignores SIGXFSZ now, and
 * the library's memfds grow as far as the limit (upcd(8), BUGS).
 */
Test(shared, a_daemon_under_rlimit_fsize_refuses_growth_past_it_and_lives, .timeout = 60)
{
	const rlim_t limit = 1u << 20;
	struct rlimit fsz, small;
	char path[64];
	int fd = tmpfile_pattern(64 * PAGE, path), status;
	volatile unsigned char *p;
	unsigned char buf[100];
	struct upc_cache *c;

	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &fsz), 0);
	cr_assert(fsz.rlim_max == RLIM_INFINITY || fsz.rlim_max >= limit);
	small = (struct rlimit){ limit, fsz.rlim_max };	/* the soft limit only: raised again below */
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
	upcd_start(NULL);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &fsz), 0);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[5], pat(5));
	p[10 * PAGE] = 'w';
	cr_assert_eq(upc_msync(c, (void *)p, 64 * PAGE, UPC_MS_SYNC), 0);
	cr_assert(file_bytes_are(fd, 10 * PAGE, 1, 'w'));
	memset(buf, 'g', sizeof(buf));
	cr_assert_eq(upc_pwrite(c, fd, buf, sizeof(buf), 64 * PAGE), (ssize_t)sizeof(buf), "a growth below the limit");
	cr_assert_eq(upc_pwrite(c, fd, buf, sizeof(buf), (off_t)limit), -EFBIG);
	cr_assert_eq(upc_ftruncate(c, fd, (off_t)limit + PAGE), -EFBIG);
	cr_assert_eq(waitpid(upcd_pid, &status, WNOHANG), 0, "the daemon ended: status %#x", status);
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), 64 * PAGE), (ssize_t)sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 'g');
	cr_assert_eq(upc_fsync(c, fd), 0);
	cr_assert(file_bytes_are(fd, 64 * PAGE, sizeof(buf), 'g'));
	cr_assert_eq(upc_unmap(c, (void *)p, 64 * PAGE), 0);
	upc_cache_destroy(c);
	upcd_stop();
	close(fd);
	unlink(path);
}

/* A numbered pwrite request in a thread: its result, or 1 until it has one. */
struct seq_pwrite {
	int s, fd;
	uint64_t seq, at;
	const void *data;
	size_t len;
	struct upc_msg *m;
	_Atomic long ret;
};

static void *seq_pwrite_main(void *arg)
{
	struct seq_pwrite *w = arg;

	atomic_store(&w->ret, raw_req_seq(w->s, w->seq, UPC_MSG_PWRITE, &w->at, 1, w->data, w->len, w->fd, w->m));
	return NULL;
}

/*
 * A write past end of file puts its data in the cache, then grows the
 * store's file (fileio.c, store_grow); a daemon killed in between leaves
 * the store short of the cache's size, which the memfd's state page keeps.
 * The next daemon adopts the file with that size, and what lies between
 * the store's end and the data is a hole, zeros: not a shrink of the file
 * behind the cache's back, which would have dropped the data (f->store_behind
 * was the first daemon's only; review of the change).  UPC_DEBUG=grow-pause
 * holds the first daemon 1.5 s there.
 */
Test(shared, a_daemon_killed_before_a_writes_growth_of_the_file_keeps_the_write, .timeout = 90)
{
	const uint64_t at = 64 * PAGE + 10;
	struct upc_msg *m = malloc(sizeof(*m));
	char path[64], x[100];
	unsigned char buf[100];
	int fd = tmpfile_pattern(PAGE, path), status;
	struct seq_pwrite w = { .fd = fd, .seq = 0x6a0, .at = at, .data = x, .len = sizeof(x), .m = m, .ret = 1 };
	struct upc_cache *c;
	struct stat sb;
	ssize_t n = 0;
	pthread_t t;

	cr_assert(m);
	memset(x, 'X', sizeof(x));
	setenv("UPC_DEBUG", "grow-pause", 1);
	upcd_start(NULL);
	unsetenv("UPC_DEBUG");
	w.s = raw_connect();
	cr_assert_eq(raw_attach(w.s, m), 0);
	cr_assert_eq(raw_req(w.s, UPC_MSG_ONCE, NULL, 0, NULL, 0, m), 0);
	cr_assert_eq(pthread_create(&t, NULL, seq_pwrite_main, &w), 0);

	/* The data is in the cache (another client reads it), the store's file not grown: the daemon dies. */
	c = shared_cache();
	for (int i = 0; i < 150 && (n = upc_pread(c, fd, buf, sizeof(buf), (off_t)at)) != (ssize_t)sizeof(buf); i++)
		usleep(10000);
	cr_assert_eq(n, (ssize_t)sizeof(buf), "the write's data: %zd", n);
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(sb.st_size, PAGE, "the test's premise: the store's file grew before the kill");
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_neq(atomic_load(&w.ret), (long)sizeof(x), "the write was answered before the kill");
	close(w.s);
	upc_cache_destroy(c);

	upcd_spawn(NULL);	/* it adopts the file from the keeper */
	c = shared_cache();
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), 10 * PAGE), (ssize_t)sizeof(buf), "a read of the hole");
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 0);
	cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), (off_t)at), (ssize_t)sizeof(buf), "the data, after the hole");
	cr_assert_eq(memcmp(buf, x, sizeof(x)), 0);
	cr_assert_eq(upc_fsync(c, fd), 0);
	cr_assert(file_bytes_are(fd, (off_t)at, sizeof(x), 'X'), "the write did not reach the file");
	cr_assert(file_bytes_are(fd, 10 * PAGE, 100, 0));
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq((uint64_t)sb.st_size, at + sizeof(x));
	upc_cache_destroy(c);
	upcd_stop();
	free(m);
	close(fd);
	unlink(path);
}

/*
 * A file the keeper handed over is adopted by the first request for it,
 * even while the daemon's own adoption waits on another file (a client
 * serving itself there is stopped): the reader sees the page the dead
 * daemon held dirty, not the file's, and it reaches the file (review of
 * 3213905: the request gave the file a new memfd, the keeper's was let go).
 */
Test(shared, a_kept_file_asked_for_first_is_adopted_not_read_again, .timeout = 90)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char apath[64], bpath[64];
	int afd = tmpfile_pattern(8 * PAGE, apath), bfd = tmpfile_pattern(8 * PAGE, bpath), status;
	unsigned char a = 0;
	pid_t x, y, r;

	cr_assert(sh != MAP_FAILED);
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	y = fork_child();
	cr_assert_geq(y, 0);
	if (y == 0) {		/* B first: kept first, adopted first */
		struct upc_cache *c = shared_cache();
		int f = open_rw(bpath);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[5 * PAGE + 9] = 'B';
		atomic_store(&sh->writer_ready, 1);
		for (;;)
			pause();
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->writer_ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->writer_ready));
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {		/* A: written, and the writer exits without msync */
		struct upc_cache *c = shared_cache();
		int f = open_rw(apath);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[3 * PAGE + 7] = 'A';
		_exit(0);
	}
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer of A: status %#x", status);
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	usleep(300 * 1000);
	cr_assert_eq(kill(y, SIGSTOP), 0);	/* holds B's takeover lock (sync), or waits (async) */
	upcd_spawn(NULL);
	r = fork_child();
	cr_assert_geq(r, 0);
	if (r == 0) {		/* a reader of A, while the adoption waits on B */
		struct upc_cache *c = shared_cache();
		int f = open_rw(apath);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ, 0, (void **)&p))
			_exit(10);
		_exit(p[3 * PAGE + 7] == 'A' ? 0 : 20);
	}
	cr_assert_eq(waitpid(r, &status, 0), r);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the reader of A after the restart (20: it read the file, not the kept page): status %#x", status);
	cr_assert_eq(kill(y, SIGKILL), 0);
	cr_assert_eq(waitpid(y, &status, 0), y);
	upcd_stop();
	cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
	cr_assert_eq(a, 'A', "A's page on disk after the stop: %#x", a);
	close(afd);
	close(bfd);
	unlink(apath);
	unlink(bpath);
}

/*
 * A file nobody mapped when the daemon died, clean, changed on disk by
 * another program while no daemon ran: the next daemon writes nothing of
 * it back, in either mode (review of 3213905: under --async every cached
 * page of every kept file was written back, over the change).
 */
Test(shared, a_clean_kept_file_is_not_written_over_a_change, .timeout = 60)
{
	char apath[64];
	int afd = tmpfile_pattern(8 * PAGE, apath), status;
	unsigned char a = 0, z = 'Z';
	pid_t x;

	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c = shared_cache();
		int f = open_rw(apath);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[3 * PAGE + 7] = 'A';
		_exit(upc_cache_destroy(c) ? 11 : 0);	/* written back, unmapped */
	}
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer: status %#x", status);
	cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
	cr_assert_eq(a, 'A');
	cr_assert(keeper_listens());
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	cr_assert_eq(pwrite(afd, &z, 1, 3 * PAGE + 7), 1);	/* no daemon: another program writes */
	upcd_spawn(NULL);
	usleep(500 * 1000);	/* its adoption of the kept file, and a write-back if it wrongly made one */
	upcd_stop();		/* writes back whatever it holds dirty */
	cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
	cr_assert_eq(a, 'Z', "the kept clean page was written over the file's change: %#x", a);
	close(afd);
	unlink(apath);
}

/*
 * A new daemon that cannot take everything the keeper holds (here its
 * descriptor limit: the hand-over's descriptors do not fit) leaves it all
 * to the keeper, path included, and runs without one; the daemon after it
 * takes everything (review of 3213905: the first one replaced the keeper's
 * path, the keeper exited, and all 40 files' pages were lost).
 */
Test(shared, a_keeper_that_cannot_hand_everything_over_keeps_it, .timeout = 90)
{
	enum { N = 40 };
	char paths[N][64];
	int fds[N], status, ok = 0;
	pid_t x;

	for (int i = 0; i < N; i++)
		fds[i] = tmpfile_pattern(2 * PAGE, paths[i]);
	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c = shared_cache();

		for (int i = 0; i < N; i++) {
			volatile unsigned char *p;
			int f = open_rw(paths[i]);

			if (upc_map(c, f, 0, 2 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
				_exit(10);
			p[7] = 'K';
		}
		_exit(0);
	}
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer: status %#x", status);
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	spawn_nofile = 150;
	upcd_spawn(NULL);
	spawn_nofile = 0;
	upcd_stop();
	cr_assert(keeper_listens(), "the earlier keeper is gone after a hand-over that could not be done");
	/*
	 * Limits where the hand-over fits and the adoption runs out of
	 * descriptors part of the way (review of e2d7e5f: at 218 an entry
	 * whose descriptors could not be duplicated was closed, at 220 the
	 * new keeper started without its socket): after each clean stop,
	 * every page is on disk, or the keeper still holds it.
	 */
	for (rlim_t lim = 200; lim <= 240; lim++) {
		int on = 0;

		spawn_nofile = lim;
		upcd_spawn(NULL);
		spawn_nofile = 0;
		upcd_stop();
		for (int i = 0; i < N; i++) {
			unsigned char b;

			cr_assert_eq(pread(fds[i], &b, 1, 7), 1);
			on += b == 'K';
		}
		cr_assert(on == N || keeper_listens(), "limit %lu: %d of %d files on disk, and no keeper",
			  (unsigned long)lim, on, N);
	}
	upcd_spawn(NULL);
	for (int t = 0; t < 300 && ok < N; t++) {
		upcd_sync();
		ok = 0;
		for (int i = 0; i < N; i++) {
			unsigned char b;

			cr_assert_eq(pread(fds[i], &b, 1, 7), 1);
			ok += b == 'K';
		}
		if (ok < N)
			usleep(100 * 1000);
	}
	cr_assert_eq(ok, N, "%d of %d files' pages reached the file after the second restart", ok, N);
	upcd_stop();
	for (int i = 0; i < N; i++) {
		close(fds[i]);
		unlink(paths[i]);
	}
}

/*
 * A client's pins survive the daemon (client.c, "Pins across a restart"):
 * after a kill -9 and a new daemon, the pages are pinned as many times and
 * with the same flags, held back from every write-back (this client's
 * msync, another client's) until unpinned, and unpinned as before.
 */
Test(shared, a_clients_pins_survive_a_daemon_restart, .timeout = 90)
{
	const size_t size = 16 * PAGE;
	char path[64];
	int fd = tmpfile_pattern(size, path), status;
	struct upc_stats st = { .sz = sizeof(st) };
	struct upc_cache *c, *c2;
	unsigned char *p, *q, b;

	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	memset(p + 100, 'N', 50);			/* pages 0-3: held back */
	memset(p + 3 * PAGE + 100, 'N', 50);
	cr_assert_eq(upc_pin(c, p, 4 * PAGE, UPC_PIN_NOWRITEBACK), 0);
	cr_assert_eq(upc_pin(c, p + 8 * PAGE, 4 * PAGE, UPC_PIN_WRITE), 0);
	cr_assert_eq(upc_pin(c, p + 8 * PAGE, 2 * PAGE, 0), 0);	/* 8-9 twice */
	cr_assert_eq(upc_unpin(c, p + 3 * PAGE, PAGE), 0);		/* and 3 let go: 0-2 */
	cr_assert_eq(upc_pin(c, p + 3 * PAGE, PAGE, UPC_PIN_NOWRITEBACK), 0);	/* 0-3 again */
	memset(p + 8 * PAGE + 100, 'W', 50);
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_pinned, 8);

	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	upcd_spawn(NULL);
	/* the next request waits for the hand-back, after which the pins are the new daemon's */
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_pinned, 8, "%llu pages pinned after the restart",
		     (unsigned long long)st.pages_pinned);
	{
		int held = upc_msync(c, p, size, UPC_MS_SYNC);

		/*
		 * Under asynchronous tracking a file clients mapped writable
		 * comes back with every cached page dirty (adopt.c,
		 * file_adopt_pages: wmaps), so all four pinned pages count.
		 */
		if (track_flags())
			cr_assert(held >= 2 && held <= 4, "the held pages, held by the new daemon: %d", held);
		else
			cr_assert_eq(held, 2, "the two held pages, held by the new daemon: %d", held);
	}
	c2 = shared_cache();
	cr_assert_eq(upc_map(c2, fd, 0, size, PROT_READ, 0, (void **)&q), 0);
	cr_assert_eq(q[100], 'N');
	cr_assert_geq(upc_msync(c2, q, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &b, 1, 100), 1);
	cr_assert_eq(b, pat(100), "a page held back by a pin was written after the restart");
	cr_assert_eq(pread(fd, &b, 1, 8 * PAGE + 100), 1);
	cr_assert_eq(b, 'W', "a page under a write pin is written back (and stays dirty)");
	/* not the other client's to unpin; this one's, as many times as pinned */
	cr_assert_eq(upc_unpin(c2, q, PAGE), -EINVAL);
	cr_assert_eq(upc_unpin(c, p, 4 * PAGE), 0);
	cr_assert_eq(upc_unpin(c, p, 4 * PAGE), -EINVAL);
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &b, 1, 3 * PAGE + 100), 1);
	cr_assert_eq(b, 'N', "unpinned, the held page is written");
	cr_assert_eq(upc_unpin(c, p + 8 * PAGE, 2 * PAGE), 0);
	cr_assert_eq(upc_unpin(c, p + 8 * PAGE, 4 * PAGE), 0);
	cr_assert_eq(upc_unpin(c, p + 8 * PAGE, PAGE), -EINVAL);
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(st.pages_pinned, 0);
	cr_assert_eq(upc_cache_destroy(c2), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	close(fd);
	unlink(path);
}

/*
 * Pins are the file pages', in the daemon and in the library's record of
 * them (client.c, "Pins across a restart"): a page pinned through one
 * mapping and let go through another of the same file stays let go after
 * a restart (the record was by address: the pin came back, and was held
 * until the process exited), either way round.
 */
static uint64_t pinned_now(struct upc_cache *c)
{
	struct upc_stats st = { .sz = sizeof(st) };

	cr_assert_eq(upc_stats(c, &st), 0);
	return st.pages_pinned;
}

static void upcd_kill_spawn(void)
{
	int status;

	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	upcd_spawn(NULL);
}

Test(shared, pins_follow_the_file_pages_across_a_restart, .timeout = 90)
{
	const size_t size = 16 * PAGE;
	char path[64];
	int fd = tmpfile_pattern(size, path);
	struct upc_cache *c;
	unsigned char *p, *q;
	uint64_t n;

	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&q), 0);
	cr_assert_eq(upc_pin(c, p, 4 * PAGE, 0), 0);
	cr_assert_eq(upc_unpin(c, q, 4 * PAGE), 0, "pins are the pages': let go through another mapping");
	cr_assert_eq(upc_pin(c, q + 8 * PAGE, 2 * PAGE, 0), 0);
	cr_assert_eq(pinned_now(c), 2);

	upcd_kill_spawn();
	n = pinned_now(c);	/* (it waits for the hand-back and the pins again) */
	cr_assert_eq(n, 2, "%" PRIu64 " pages pinned after a restart, not 2: a pin let go through another mapping came back", n);

	/* pinned through q, let go through p */
	cr_assert_eq(upc_unpin(c, p + 8 * PAGE, 2 * PAGE), 0);
	cr_assert_eq(pinned_now(c), 0);
	cr_assert_eq(upc_unpin(c, q + 8 * PAGE, PAGE), -EINVAL);
	upcd_kill_spawn();
	n = pinned_now(c);
	cr_assert_eq(n, 0, "%" PRIu64 " pages pinned after a second restart, not 0", n);
	cr_assert_eq(upc_unmap(c, q, size), 0);
	cr_assert_eq(upc_unmap(c, p, size), 0);

	/*
	 * Pages pinned one by one through 20 mappings of a page each (one
	 * range of the record), and two more through a read-write mapping
	 * listed after a read-only one of the same pages (a write pin:
	 * not through the read-only one), in two files: all 22 again.
	 */
	{
		char path2[64];
		int fd2 = tmpfile_pattern(size, path2);
		unsigned char *w[20], *ro, *rw;

		for (int i = 0; i < 20; i++) {
			cr_assert_eq(upc_map(c, fd, (off_t)(i * PAGE) % (off_t)size, PAGE, PROT_READ, 0, (void **)&w[i]), 0);
			cr_assert_eq(upc_pin(c, w[i], PAGE, 0), 0);
		}
		cr_assert_eq(upc_map(c, fd2, 0, size, PROT_READ, 0, (void **)&ro), 0);
		cr_assert_eq(upc_map(c, fd2, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&rw), 0);
		cr_assert_eq(upc_pin(c, rw + 4 * PAGE, 2 * PAGE, UPC_PIN_WRITE), 0);
		cr_assert_eq(pinned_now(c), 18);	/* 16 pages of the first file, 4 of them twice; 2 of the second */
		upcd_kill_spawn();
		n = pinned_now(c);
		cr_assert_eq(n, 18, "%" PRIu64 " pages pinned after a restart, not 18", n);
		cr_assert_eq(upc_unpin(c, rw + 4 * PAGE, 2 * PAGE), 0, "the write pin was not pinned again");
		for (int i = 0; i < 20; i++)
			cr_assert_eq(upc_unpin(c, w[i], PAGE), 0, "window %d's pin was not pinned again", i);
		cr_assert_eq(pinned_now(c), 0);
		for (int i = 0; i < 20; i++)
			cr_assert_eq(upc_unmap(c, w[i], PAGE), 0);
		cr_assert_eq(upc_unmap(c, ro, size), 0);
		cr_assert_eq(upc_unmap(c, rw, size), 0);
		close(fd2);
		unlink(path2);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	close(fd);
	unlink(path);
}

/*
 * A clean mapping survives a restart with a keeper: the new daemon's
 * adoption of the kept file must not let the file go before its client
 * hands the mapping back (review of 70969e6: released clean at once, the
 * file refused the hand-back as one this daemon had let go, -ESTALE, and
 * the mapping became inaccessible).
 */
Test(shared, a_clean_mapping_survives_a_restart_with_a_keeper, .timeout = 60)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64];
	int fd = tmpfile_pattern(8 * PAGE, path), status;
	unsigned char b;
	pid_t x;

	cr_assert(sh != MAP_FAILED);
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c = shared_cache();
		struct upc_stats st = { .sz = sizeof(st) };
		int f = open_rw(path);
		volatile unsigned char *p;

		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		if (p[PAGE] != pat(PAGE))	/* cached, clean */
			_exit(11);
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		if (upc_stats(c, &st))		/* waits for the hand-back */
			_exit(12);
		usleep(300 * 1000);		/* past the adoption thread's pass */
		if (p[2 * PAGE] != pat(2 * PAGE))
			_exit(13);
		p[2 * PAGE] = 'C';
		if (upc_msync(c, (void *)p, 8 * PAGE, UPC_MS_SYNC))
			_exit(14);
		_exit(upc_cache_destroy(c) ? 15 : 0);
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready));
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	upcd_spawn(NULL);
	atomic_store(&sh->killed, 1);
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the client after the restart (a signal: its mapping was refused): status %#x", status);
	cr_assert_eq(pread(fd, &b, 1, 2 * PAGE), 1);
	cr_assert_eq(b, 'C');
	upcd_stop();
	close(fd);
	unlink(path);
}

/*
 * Pushing a kept memfd's pages out to swap (the next case).  The case
 * needs swap, and a memory cgroup of its own whose pages it can reclaim
 * whole: v1's memory.force_empty, or v2's memory.reclaim where the v2
 * hierarchy has the memory controller.  Without swap it makes a swap file
 * of its own, and takes it away at the end (swap_fini, also when the case
 * fails).  What it cannot have, it skips, and says why.
 */
static char swap_file[64];
static char memcg_dir[256], memcg_home[320];
static bool memcg_v2;

/* The memory cgroup directory @mount/<this process's cgroup> into @out. */
static bool memcg_own(const char *mount, bool v2, char *out, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/self/cgroup", "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *ctrl = strchr(line, ':'), *path = ctrl ? strchr(ctrl + 1, ':') : NULL;

		if (!path)
			continue;
		*path++ = '\0';
		path[strcspn(path, "\n")] = '\0';
		if (v2 ? strcmp(ctrl + 1, "") == 0 : strstr(ctrl + 1, "memory") != NULL) {
			snprintf(out, len, "%s%s", mount, path);
			found = true;
		}
	}
	fclose(f);
	return found;
}

static bool write_str(const char *dir, const char *name, const char *s)
{
	char path[400];
	int fd;
	bool ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok;
}

/* Swap on (the machine's, or a file of the case's); NULL, or why not. */
static const char *swap_ready(void)
{
	char line[256];
	FILE *f = fopen("/proc/swaps", "re");
	int lines = 0, fd;

	while (f && fgets(line, sizeof(line), f))
		lines++;
	if (f)
		fclose(f);
	if (lines > 1)
		return NULL;
	strcpy(swap_file, "/var/tmp/upc-test-swap.XXXXXX");
	fd = mkstemp(swap_file);
	if (fd < 0)
		return "no swap, and no swap file in /var/tmp";
	if (fallocate(fd, 0, 0, 64 << 20) < 0) {
		close(fd);
		return "no swap, and /var/tmp cannot allocate a swap file";
	}
	close(fd);
	snprintf(line, sizeof(line), "mkswap -q %s >/dev/null 2>&1", swap_file);
	if (system(line) != 0)
		return "no swap, and mkswap failed (util-linux)";
	if (syscall(SYS_swapon, swap_file, 0) < 0)
		return "no swap, and swapon(2) of a swap file failed";
	return NULL;
}

/* The case goes into a memory cgroup of its own (its children follow); NULL, or why not. */
static const char *memcg_enter(void)
{
	char pid[32];

	if (access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) == 0 &&
	    memcg_own("/sys/fs/cgroup/memory", false, memcg_home, sizeof(memcg_home))) {
		memcg_v2 = false;
	} else if (file_has("/sys/fs/cgroup/cgroup.subtree_control", "memory") &&
		   memcg_own("/sys/fs/cgroup", true, memcg_home, sizeof(memcg_home))) {
		memcg_v2 = true;
	} else {
		return "no memory cgroup to reclaim from (v1 at /sys/fs/cgroup/memory, or v2 at /sys/fs/cgroup "
		       "with the memory controller in its cgroup.subtree_control)";
	}
	snprintf(memcg_dir, sizeof(memcg_dir), "%.200s/upc-test-%d", memcg_v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory",
		 (int)getpid());
	if (mkdir(memcg_dir, 0755) < 0) {
		memcg_dir[0] = '\0';
		return "cannot make a memory cgroup";
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (!write_str(memcg_dir, "cgroup.procs", pid))
		return "cannot move into a memory cgroup";
	return NULL;
}

/* Every page charged to the case's cgroup that can go, gone (shmem to swap). */
static bool memcg_reclaim_all(void)
{
	return memcg_v2 ? write_str(memcg_dir, "memory.reclaim", "1G") || errno == EAGAIN
			: write_str(memcg_dir, "memory.force_empty", "0");
}

/* The cgroup's shmem, in bytes (memory.stat), or -1. */
static long memcg_shmem(void)
{
	char path[300], key[64];
	long v, ret = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/memory.stat", memcg_dir);
	f = fopen(path, "re");
	while (f && fscanf(f, "%63s %ld", key, &v) == 2)
		if (strcmp(key, "shmem") == 0) {
			ret = v;
			break;
		}
	if (f)
		fclose(f);
	return ret;
}

static void swap_fini(void)
{
	char pid[32];

	sock_dir_fini();
	if (memcg_dir[0]) {
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		write_str(memcg_home, "cgroup.procs", pid);
		/*
		 * What is left in it is the case's own (a daemon, its keeper,
		 * which leaves a moment after its daemon's BYE): given a
		 * second, then killed, so that the cgroup can go.
		 */
		for (int i = 0; i < 300 && rmdir(memcg_dir) < 0 && errno == EBUSY; i++) {
			if (i == 100) {
				char path[300];
				FILE *f;
				int left;

				snprintf(path, sizeof(path), "%s/cgroup.procs", memcg_dir);
				f = fopen(path, "re");
				while (f && fscanf(f, "%d", &left) == 1)
					kill(left, SIGKILL);
				if (f)
					fclose(f);
			}
			usleep(10000);
		}
		memcg_dir[0] = '\0';
	}
	if (swap_file[0]) {
		syscall(SYS_swapoff, swap_file);
		unlink(swap_file);
		swap_file[0] = '\0';
	}
}

/*
 * A dirty page of a killed daemon that the kernel swapped out of the kept
 * memfd is adopted dirty and written back (upcd(8), BUGS, until this case:
 * the adoption took residency from mincore(2), which calls a swapped-out
 * shmem page not cached, so it was dropped and punched; SEEK_DATA counts
 * it, as the kernel's mapping_seek_hole_data() counts a swap entry as data).
 * A writer writes 64 pages and exits without msync; the daemon is killed;
 * the keeper alone holds the memfd; its pages are pushed out to swap; a new
 * daemon must write every one.
 */
Test(shared, a_killed_daemons_dirty_pages_swapped_out_are_adopted, .timeout = 90, .fini = swap_fini)
{
	char path[64];
	int fd = tmpfile_pattern(64 * PAGE, path), status;
	const char *why;
	unsigned char b = 0;
	long shmem;
	int left = 64;

	require_upcache();
	why = swap_ready();
	if (why)
		cr_skip_test("%s", why);
	why = memcg_enter();
	if (why)
		cr_skip_test("%s", why);
	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	write_and_exit(path, 64, 0, 64, 11, 'S');
	cr_assert(keeper_listens(), "no keeper beside the daemon");
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	cr_assert_eq(pread(fd, &b, 1, 11), 1);
	cr_assert_eq(b, pat(11), "the test's premise: the pages were written back before the kill");
	cr_assert(memcg_reclaim_all(), "reclaim in the case's memory cgroup: %s", strerror(errno));
	shmem = memcg_shmem();
	cr_assert(shmem >= 0 && shmem < (long)(32 * PAGE),
		  "the test's premise: the kept memfd's pages went to swap (the cgroup's shmem is %ld bytes)", shmem);

	upcd_spawn(NULL);
	for (int i = 0; i < 300 && left; i++) {
		usleep(100 * 1000);
		upcd_sync();
		left = 0;
		for (int k = 0; k < 64; k++) {
			cr_assert_eq(pread(fd, &b, 1, k * PAGE + 11), 1);
			left += b != 'S';
		}
	}
	cr_assert_eq(left, 0, "%d of the 64 swapped-out dirty pages did not reach the file", left);
	upcd_stop();
	close(fd);
	unlink(path);
}

/*
 * A client clears O_NONBLOCK on its userfaultfd, whose open file
 * description the daemon shares (upcd(8), BUGS, until this case): poll(2)
 * on it then answers POLLERR at once, and the daemon's handler for the
 * client blocked in read(2) with nothing to read, so that the client's
 * exit was never cleaned up.  Now the handler sets the flag again and
 * reads with RWF_NOWAIT: the client is served, and gone from the daemon's
 * status after its exit; another client is served all along.
 */
Test(shared, a_client_that_clears_o_nonblock_on_its_userfaultfd_stalls_nothing, .timeout = 60)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64], who[64];
	int fd = tmpfile_pattern(16 * PAGE, path), status, gone = 0;
	struct upc_cache *c;
	volatile unsigned char *p;
	pid_t x;

	cr_assert(sh != MAP_FAILED);
	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *xc = shared_cache();
		int f = open_rw(path), u;
		volatile unsigned char *q;

		if (upc_map(xc, f, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&q))
			_exit(10);
		u = proc_fd_linked(getpid(), "anon_inode:[userfaultfd]");	/* the library's, for upcd */
		if (u < 0 || fcntl(u, F_SETFL, fcntl(u, F_GETFL) & ~O_NONBLOCK) < 0)
			_exit(11);
		usleep(100 * 1000);	/* the daemon's handler polls it meanwhile */
		if (q[3 * PAGE] != pat(3 * PAGE))
			_exit(12);
		q[4 * PAGE] = 'N';
		if (upc_msync(xc, (void *)q, 16 * PAGE, UPC_MS_SYNC))
			_exit(13);
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		_exit(0);	/* no upc_cache_destroy: the daemon cleans up after it */
	}
	for (int i = 0; i < 3000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready), "the client was not served after it cleared O_NONBLOCK");
	snprintf(who, sizeof(who), "\nclient pid %d ", (int)x);
	cr_assert(strstr(upcd_status(), who), "the client is not in the daemon's status");
	atomic_store(&sh->killed, 1);
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the client: status %#x", status);
	for (int i = 0; i < 500 && !gone; i++) {
		usleep(10 * 1000);
		gone = !strstr(upcd_status(), who);
	}
	cr_assert(gone, "the daemon did not clean up after the client in 5 s");

	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ, 0, (void **)&p), 0);
	cr_assert_eq(p[4 * PAGE], 'N');
	cr_assert_eq(p[5 * PAGE], pat(5 * PAGE));
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	close(fd);
}

/* Reads the fork event on the userfaultfd *@arg: *@arg becomes the child's userfaultfd, or -1. */
static void *fork_event_reader(void *arg)
{
	int *fd = arg;
	struct pollfd pf = { .fd = *fd, .events = POLLIN };
	struct uffd_msg msg;

	if (poll(&pf, 1, 10000) == 1 && read(*fd, &msg, sizeof(msg)) == (ssize_t)sizeof(msg) &&
	    msg.event == UFFD_EVENT_FORK)
		*fd = (int)msg.arg.fork.ufd;
	else
		*fd = -1;
	return NULL;
}

static bool reads_nowait(int fd)
{
	char b;
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };

	return preadv2(fd, &iov, 1, -1, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
}

/*
 * The daemon refuses a client's userfaultfd that cannot be read with
 * RWF_NOWAIT where its own can: one a fork event made, which has no
 * FMODE_NOWAIT (Linux 6.18), and with which a client that cleared
 * O_NONBLOCK could block its handler again (review of ad28970).  Another
 * client attaches as before.  (Such a descriptor has its parent's fork
 * event too, which the daemon now refuses first: the next case.)
 */
Test(shared, a_userfaultfd_that_cannot_be_read_without_blocking_is_refused, .timeout = 60)
{
	uint64_t hello[3] = { UPC_PROTO_VERSION, UPC_CACHE_SHARED, 0 };
	static struct upc_msg m;
	int s, uffd, fresh, child_uffd, ret;
	volatile char *area;
	pthread_t t;
	pid_t pid;

	upcd_start(NULL);
	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_req(s, UPC_MSG_HELLO, hello, 3, NULL, 0, &m), 0);
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	cr_assert_geq(uffd, 0, "userfaultfd: %s", strerror(errno));
	{
		struct uffdio_api api = { .api = UFFD_API, .features = m.args[2] | UFFD_FEATURE_EVENT_FORK };
		struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };

		cr_assert_eq(ioctl(uffd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
		area = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert(area != MAP_FAILED);
		reg.range.start = (uintptr_t)area;
		reg.range.len = PAGE;
		cr_assert_eq(ioctl(uffd, UFFDIO_REGISTER, &reg), 0, "UFFDIO_REGISTER: %s", strerror(errno));
	}
	if (!reads_nowait(uffd))
		cr_skip_test("this kernel's userfaultfd refuses RWF_NOWAIT: the daemon reads with read(2) (upcd(8), BUGS)");
	child_uffd = uffd;
	cr_assert_eq(pthread_create(&t, NULL, fork_event_reader, &child_uffd), 0);
	pid = fork_child();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (;;)
			pause();
	}
	pthread_join(t, NULL);
	cr_assert_geq(child_uffd, 0, "no fork event");
	if (reads_nowait(child_uffd)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		cr_skip_test("this kernel reads a fork event's userfaultfd with RWF_NOWAIT: nothing to refuse");
	}
	ret = raw_attach_uffd(s, &m, child_uffd);
	cr_assert_eq(ret, -EINVAL, "a fork event's userfaultfd attached: %d", ret);

	fresh = raw_connect();
	cr_assert_geq(fresh, 0);
	cr_assert_eq(raw_attach(fresh, &m), 0, "a client with a userfaultfd of its own is refused");
	close(fresh);
	close(s);
	close(child_uffd);
	close(uffd);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	upcd_stop();
	(void)area;
}

/* The "API:" line of the userfaultfd @fd's fdinfo, in @out. */
static bool uffd_api_line(int fd, char *out, size_t len)
{
	char path[64];
	bool found = false;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	fp = fopen(path, "re");
	if (!fp)
		return false;
	while (!found && fgets(out, (int)len, fp))
		found = !strncmp(out, "API:", 4);
	fclose(fp);
	return found;
}

/*
 * The daemon refuses a client's userfaultfd that the library would not
 * have made: one with a non-cooperative event (a munmap or madvise of the
 * client's would make the kernel refuse the daemon's page-table ioctls,
 * EAGAIN, until a handler read the event, and the handlers may wait for
 * the lock the refused request holds: review of edfc85e), and one not set
 * up at all (UFFDIO_API not done: the client could add events after the
 * attach).  A fork event's userfaultfd, refused above, has the parent's
 * events too.
 */
/* A connection after HELLO, and a userfaultfd not set up yet (*@uffd). */
static int hello_and_uffd(struct upc_msg *m, int *uffd)
{
	uint64_t hello[3] = { UPC_PROTO_VERSION, UPC_CACHE_SHARED, 0 };
	int s = raw_connect();

	cr_assert_geq(s, 0);
	cr_assert_eq(raw_req(s, UPC_MSG_HELLO, hello, 3, NULL, 0, m), 0);
	*uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
	cr_assert_geq(*uffd, 0, "userfaultfd: %s", strerror(errno));
	return s;
}

Test(shared, a_userfaultfd_with_events_or_not_set_up_is_refused, .timeout = 60)
{
	static struct upc_msg m;
	int s, uffd, ret;

	upcd_start(NULL);
	s = hello_and_uffd(&m, &uffd);
	{
		struct uffdio_api api = { .api = UFFD_API, .features = (m.args[2] & ~(uint64_t)UFFD_FEATURE_EVENT_FORK) |
								      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP };

		cr_assert_eq(ioctl(uffd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
	}
	ret = raw_attach_uffd(s, &m, uffd);
	cr_assert_eq(ret, -EINVAL, "a userfaultfd with munmap and madvise events attached: %d", ret);
	close(uffd);
	close(s);

	s = hello_and_uffd(&m, &uffd);
	{
		/* where fdinfo shows no "initialized" bit (before 6.1) the daemon cannot tell: nothing to refuse */
		struct uffdio_api api = { .api = UFFD_API };
		int probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1);
		char a[128], b[128];

		cr_assert_geq(probe, 0);
		cr_assert_eq(ioctl(probe, UFFDIO_API, &api), 0);
		cr_assert(uffd_api_line(uffd, a, sizeof(a)) && uffd_api_line(probe, b, sizeof(b)));
		close(probe);
		if (strcmp(a, b)) {
			ret = raw_attach_uffd(s, &m, uffd);
			cr_assert_eq(ret, -EINVAL, "a userfaultfd without UFFDIO_API attached: %d", ret);
		}
	}
	close(uffd);
	close(s);

	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_attach(s, &m), 0, "a userfaultfd as the library makes it is refused");
	close(s);
	upcd_stop();
}

/* ------------------------------------------------------------ a slow client */

/*
 * Requests that have the daemon call back into their client (UPC_MSG_CALL:
 * the client's own munmap, mprotect, madvise, or a placeholder mapping)
 * while it works on the client's mapping of a file.
 */
enum slow_op { SLOW_UNMAP, SLOW_PROTECT, SLOW_DONTNEED, SLOW_FIXED, SLOW_PIN };

struct slow_shared {
	_Atomic int held, go, done, bye;
	long reply;
	int lost;		/* the connection ended before the reply: the daemon gave up on it */
	int wp;			/* page 0's PTE write-protected when let go: 1, 0, or -1 (not present) */
};

/* Is the PTE of @addr write-protected (uffd-wp, pagemap bit 57)?  1, 0, or -1 if none is present. */
static int pte_uffd_wp(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t e = 0;
	ssize_t n = fd < 0 ? -1 : pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / PAGE * sizeof(e)));

	if (fd >= 0)
		close(fd);
	if (n != (ssize_t)sizeof(e) || !(e & (1ull << 63)))
		return -1;
	return (e >> 57) & 1;
}

/*
 * Does the slow client write page 1 again ('B') as it answers the held
 * call?  Only where that write cannot trap into a handler that waits for
 * the held request's mm->lock (held for writing by munmap, mprotect and
 * the placeholder): under asynchronous tracking, where writes do not
 * trap, or in a DONTNEED, which holds it for reading.  The write comes
 * after the daemon read the mapping's written state and after the test's
 * write-back of page 1, so it reaches the file only if the daemon reads
 * it again after the call (review of edfc85e).
 */
static bool slow_writes_again(enum slow_op op)
{
	return op == SLOW_DONTNEED || (track_flags() && op != SLOW_PIN);
}

/* The call a raw client is asked for, done. */
static int64_t slow_do_call(const struct upc_msg *m)
{
	void *a = (void *)(uintptr_t)m->args[1];
	size_t len = m->args[2];
	int arg = (int)m->args[3];

	switch (m->args[0]) {
	case UPC_CALL_MUNMAP:
		return munmap(a, len) < 0 ? -errno : 0;
	case UPC_CALL_MPROTECT:
		return mprotect(a, len, arg) < 0 ? -errno : 0;
	case UPC_CALL_MADVISE:
		return madvise(a, len, arg) < 0 ? -errno : 0;
	case UPC_CALL_PLACEHOLD:
		return mmap(a, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) ==
		       MAP_FAILED ? -errno : 0;
	}
	return -EINVAL;
}

/*
 * A raw client that maps the 8 pages of @path, asks for @op over the first
 * 4, and does not answer the call the daemon makes for it until the test
 * says go: a client that is stopped, swapped out, or hostile.  A pin's
 * first call, its populate, is answered -EFAULT (as a user-mode-only
 * userfaultfd has it), so that the daemon fills the pages itself and
 * calls again to map them (control.c, pin_map()): that second call is the
 * one held.  After the reply it asks once more, to show that it is still
 * connected.
 */
static void slow_client(struct slow_shared *sh, const char *path, enum slow_op op)
{
	struct upc_msg *m = malloc(sizeof(*m));
	bool ro = op == SLOW_PIN;	/* not registered MINOR: mapped by a call, not UFFDIO_CONTINUE */
	int prot = ro ? PROT_READ : PROT_READ | PROT_WRITE, calls = 0;
	int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC), s = raw_connect();
	uint64_t args[5] = { 0, 8 * PAGE, (uint64_t)prot };
	uint16_t type = UPC_MSG_PIN;
	unsigned int argc = 3;
	void *p;

	if (!m || fd < 0 || s < 0 || raw_attach(s, m) != 0)
		_exit(10);
	if (raw_req(s, UPC_MSG_MAP, args, 3, &fd, 1, m) != 0 || m->nfds != 2)
		_exit(11);
	/* as client_map(): a read-only descriptor's memfd maps MAP_PRIVATE */
	p = mmap(NULL, 8 * PAGE, prot, ro ? MAP_PRIVATE : MAP_SHARED, m->fds[0], 0);
	if (p == MAP_FAILED)
		_exit(12);
	close(m->fds[0]);
	close(m->fds[1]);
	args[0] = m->args[1];
	args[1] = (uintptr_t)p;
	args[2] = 8 * PAGE;
	args[3] = (uint64_t)prot;
	args[4] = 0;
	if (raw_req(s, UPC_MSG_MAP_DONE, args, 5, NULL, 0, m) != 0)
		_exit(13);
	if (!ro) {
		/* page 0 dirty, and writable here (the daemon serves the faults) */
		*(volatile char *)p = 'W';
		((volatile char *)p)[PAGE] = 'A';
	}
	args[0] = (uintptr_t)p;
	args[1] = 4 * PAGE;
	args[2] = 0;
	if (op == SLOW_UNMAP) {
		type = UPC_MSG_UNMAP;
		argc = 2;
	} else if (op == SLOW_PROTECT) {
		type = UPC_MSG_PROTECT;
		args[2] = PROT_READ;
	} else if (op == SLOW_DONTNEED) {
		type = UPC_MSG_ADVISE;
		args[2] = UPC_ADV_DONTNEED;
	} else if (op == SLOW_FIXED) {
		type = UPC_MSG_MAP_CLEAR;
		argc = 2;
	}
	if (upc_msg_send(s, type, 78, args, argc, NULL, 0, NULL, 0) < 0)
		_exit(14);
	for (;;) {
		int64_t r;

		if (upc_msg_recv(s, m, UPC_FROM_DAEMON) < 0) {
			sh->lost = 1;
			break;
		}
		if (m->h.type != UPC_MSG_CALL) {
			sh->reply = m->h.type == UPC_MSG_REPLY ? (long)(int64_t)m->args[0] : -EBADMSG;
			break;
		}
		if (op == SLOW_PIN && ++calls == 1) {
			r = -EFAULT;
		} else {
			int n = atomic_fetch_add(&sh->held, 1) + 1;

			while (atomic_load(&sh->go) < n)
				usleep(1000);
			if (n == 1) {	/* the first call: as the request began */
				sh->wp = pte_uffd_wp(p);
				if (slow_writes_again(op))
					((volatile char *)p)[PAGE] = 'B';
			}
			r = slow_do_call(m);
			/*
			 * DONTNEED: page 1 is faulted in again before the
			 * answer, while the daemon has not read what the zap
			 * emptied (write-protected by the fault, it would read
			 * as not written).
			 */
			if (op == SLOW_DONTNEED)
				(void)*(volatile char *)((char *)p + PAGE);
		}
		if (upc_msg_send(s, UPC_MSG_CALL_DONE, m->h.seq, (uint64_t *)&r, 1, NULL, 0, NULL, 0) < 0) {
			sh->lost = 1;
			break;
		}
	}
	/*
	 * Still served: a request after the reply.  The pin is let go by it,
	 * for the test's own unmap of the file: it would be refused over a
	 * page pinned until the daemon has seen this process die (I6).
	 */
	if (!sh->lost && (op == SLOW_PIN ? raw_req(s, UPC_MSG_UNPIN, args, 2, NULL, 0, m) != 0 :
			  raw_req(s, UPC_MSG_STATS, NULL, 0, NULL, 0, m) < 0))
		sh->lost = 1;
	atomic_store(&sh->done, 1);
	/*
	 * Alive until the test has checked the file: the pages of a client
	 * that died count as written (track.c, collect_unreadable()), which
	 * would hide a write the daemon failed to see.
	 */
	while (!atomic_load(&sh->bye))
		usleep(1000);
	_exit(0);
}

/*
 * The daemon calls into a client (its own munmap, mprotect, madvise, or a
 * placeholder) without its file's lock: another client of the file takes
 * a fault, writes and writes back while the slow one has not answered.
 * Holding the lock, the daemon kept every other client of the file
 * waiting until the slow one answered or its call timed out (10 s), and
 * then dropped it (upcd(8), BUGS, until this case).  Counted, not timed:
 * the slow client answers only after the other one is done, and must then
 * be neither dropped nor answered wrongly.
 */
static void slow_client_holds_up_nobody(enum slow_op op, long want, int wp)
{
	struct slow_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char path[64];
	int fd = tmpfile_pattern(8 * PAGE, path), status;
	struct upc_cache *c;
	volatile unsigned char *p;
	unsigned char b = 0;
	pid_t x;

	cr_assert(sh != MAP_FAILED);
	upcd_start(NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0)
		slow_client(sh, path, op);
	/*
	 * Each call the daemon makes for the request is held (under
	 * asynchronous tracking a munmap is two: the mapping made read-only,
	 * then unmapped), and meanwhile this client takes a fault, a write
	 * and a write-back of the same file: each takes its lock in the
	 * daemon.  The write-back takes the slow client's page 0 too, which
	 * that client wrote before it asked.
	 */
	for (int round = 0;; round++) {
		for (int i = 0; i < 20000 && atomic_load(&sh->held) <= atomic_load(&sh->go) && !atomic_load(&sh->done);
		     i++)
			usleep(1000);
		if (atomic_load(&sh->done))
			break;
		cr_assert_gt(atomic_load(&sh->held), atomic_load(&sh->go), "the slow client was not called again");
		cr_assert_lt(round, 4, "the daemon called the slow client %d times", round + 1);
		cr_assert_eq(p[(6 - round) * PAGE], pat((uint64_t)(6 - round) * PAGE));
		p[7 * PAGE] = (unsigned char)('S' + round);
		cr_assert_eq(upc_msync(c, (void *)p, 8 * PAGE, UPC_MS_SYNC), 0);
		cr_assert_eq(pread(fd, &b, 1, 7 * PAGE), 1);
		cr_assert_eq(b, 'S' + round);
		cr_assert_eq(pread(fd, &b, 1, 0), 1);
		cr_assert_eq(b, op == SLOW_PIN ? pat(0) : 'W');
		cr_assert(!atomic_load(&sh->done), "the slow client finished before it was let go");
		atomic_fetch_add(&sh->go, 1);
	}
	cr_assert_gt(atomic_load(&sh->held), 0, "the daemon did not call the slow client (lost %d, reply %ld)",
		     sh->lost, sh->reply);
	cr_assert(!sh->lost, "the daemon dropped the slow client: its call had timed out, the file's lock held");
	cr_assert_eq(sh->reply, want, "the slow client's request: %ld, not %ld", sh->reply, want);
	/*
	 * Page 0 is clean now: where the slow client could still write it
	 * (before its munmap, mprotect or placeholder), it must trap (I1).
	 */
	cr_assert_eq(sh->wp, wp, "the slow client's page 0, clean, had a PTE %s", sh->wp == 0 ? "writable" :
		     sh->wp > 0 ? "write-protected" : "not present");
	cr_assert_eq(upc_msync(c, (void *)p, 8 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &b, 1, PAGE), 1);
	if (slow_writes_again(op))
		cr_assert_eq(b, 'B', "a write the slow client made as it answered was lost (%#x)", b);
	else if (op != SLOW_PIN)
		cr_assert_eq(b, 'A', "%#x", b);
	atomic_store(&sh->bye, 1);
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the slow client: status %#x", status);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	close(fd);
}

Test(shared, a_client_slow_to_munmap_holds_up_no_other_client_of_the_file, .timeout = 60)
{
	slow_client_holds_up_nobody(SLOW_UNMAP, 0, 1);
}

Test(shared, a_client_slow_to_mprotect_holds_up_no_other_client_of_the_file, .timeout = 60)
{
	slow_client_holds_up_nobody(SLOW_PROTECT, 0, 1);
}

Test(shared, a_client_slow_to_madvise_holds_up_no_other_client_of_the_file, .timeout = 60)
{
	slow_client_holds_up_nobody(SLOW_DONTNEED, 0, 1);
}

Test(shared, a_client_slow_to_place_a_placeholder_holds_up_no_other_client_of_the_file, .timeout = 60)
{
	slow_client_holds_up_nobody(SLOW_FIXED, 1, 1);
}

Test(shared, a_client_slow_to_map_its_pin_holds_up_no_other_client_of_the_file, .timeout = 60)
{
	slow_client_holds_up_nobody(SLOW_PIN, 0, -1);
}

/* ------------------------------------------------------------ systemd's file descriptor store, played */

/*
 * The part of systemd a daemon with --fd-store talks to: a datagram
 * socket at $NOTIFY_SOCKET whose FDSTORE=1 and FDSTOREREMOVE=1 messages
 * it keeps (FDNAME= names each descriptor), and that hands what it holds
 * to the next daemon it starts (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES),
 * as systemd does for a unit with FileDescriptorStoreMax= set.
 */
#define FS_MAX 64

struct fake_store {
	int sock;
	char path[108];
	size_t n;
	char name[FS_MAX][64];
	int fd[FS_MAX];
};

static void fs_open(struct fake_store *st)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *slash;

	memset(st, 0, sizeof(*st));
	snprintf(st->path, sizeof(st->path), "%s", sock_path);
	slash = strrchr(st->path, '/');
	cr_assert(slash);
	strcpy(slash + 1, "notify");
	strcpy(sa.sun_path, st->path);
	st->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(st->sock, 0);
	cr_assert_eq(bind(st->sock, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind %s: %s", st->path, strerror(errno));
}

/* Every message sent so far, carried out. */
static void fs_drain(struct fake_store *st)
{
	for (;;) {
		char text[512], cbuf[CMSG_SPACE(8 * sizeof(int))], *nm;
		struct iovec iov = { .iov_base = text, .iov_len = sizeof(text) - 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		int got[8], ngot = 0;
		ssize_t r = recvmsg(st->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		char name[64] = "";

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		text[r] = '\0';
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				ngot = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
				memcpy(got, CMSG_DATA(cm), (size_t)ngot * sizeof(int));
			}
		if ((nm = strstr(text, "FDNAME=")))
			sscanf(nm + 7, "%63[^\n]", name);
		if (strstr(text, "FDSTORE=1")) {
			for (int i = 0; i < ngot; i++) {
				cr_assert_lt(st->n, FS_MAX, "the store is full");
				strcpy(st->name[st->n], name);
				st->fd[st->n++] = got[i];
			}
			continue;
		}
		for (int i = 0; i < ngot; i++)
			close(got[i]);
		if (strstr(text, "FDSTOREREMOVE=1"))
			for (size_t i = 0; i < st->n;) {
				if (strcmp(st->name[i], name)) {
					i++;
					continue;
				}
				close(st->fd[i]);
				st->n--;
				if (i == st->n)
					continue;
				st->fd[i] = st->fd[st->n];
				memcpy(st->name[i], st->name[st->n], sizeof(st->name[i]));
			}
	}
}

/* How many descriptors the store holds under names starting with @prefix. */
static size_t fs_count(const struct fake_store *st, const char *prefix)
{
	size_t k = 0;

	for (size_t i = 0; i < st->n; i++)
		k += !strncmp(st->name[i], prefix, strlen(prefix));
	return k;
}

/* How fs_spawn() starts upcd, as systemd would. */
enum {
	FS_STORE = 1,		/* --fd-store */
	FS_HAND = 2,		/* with what the store holds (LISTEN_FDS, LISTEN_FDNAMES) */
	FS_SOCKET = 4,		/* and its listening socket first, as upcd.socket passes it */
	FS_KEEPER = 8,		/* with a keeper (by default none) */
};

/* upcd, with $NOTIFY_SOCKET the fake store's, $FDSTORE @max if not NULL, as @how says. */
static void fs_spawn(const struct fake_store *st, unsigned int how, const char *max)
{
	const char *bd = getenv("UPC_TEST_BUILDDIR");
	char bin[512];
	int ls = -1;

	snprintf(bin, sizeof(bin), "%s/daemon/upcd", bd ? bd : ".");
	if (how & FS_SOCKET)
		ls = listen_here();
	upcd_pid = fork();
	cr_assert_geq(upcd_pid, 0);
	if (upcd_pid == 0) {
		char names[FS_MAX * 64 + 64] = "", num[32];
		int hi[FS_MAX + 1], n = 0;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		setenv("NOTIFY_SOCKET", st->path, 1);
		if (max)
			setenv("FDSTORE", max, 1);
		/* above every number they go to first, then down to 3, 4, ... */
		if (ls >= 0) {
			if ((hi[n++] = fcntl(ls, F_DUPFD_CLOEXEC, 3 + FS_MAX + 16)) < 0)
				_exit(125);
			strcpy(names, "upcd.socket");
		}
		for (size_t i = 0; (how & FS_HAND) && i < st->n; i++) {
			if ((hi[n++] = fcntl(st->fd[i], F_DUPFD_CLOEXEC, 3 + FS_MAX + 16)) < 0)
				_exit(125);
			if (names[0])
				strcat(names, ":");
			strcat(names, st->name[i]);
		}
		for (int i = 0; i < n; i++)
			if (dup2(hi[i], 3 + i) < 0)
				_exit(125);
		if (n) {
			snprintf(num, sizeof(num), "%d", n);
			setenv("LISTEN_FDS", num, 1);
			snprintf(num, sizeof(num), "%d", (int)getpid());
			setenv("LISTEN_PID", num, 1);
			setenv("LISTEN_FDNAMES", names, 1);
		}
		{
			char *argv[16] = { "upcd", "--foreground", "--socket", sock_path, "--mode", "0666", "--verbose" };
			int argc = 7;

			if (!(how & FS_KEEPER)) {
				argv[argc++] = "--keeper-socket";
				argv[argc++] = "none";
			}
			if (how & FS_STORE)
				argv[argc++] = "--fd-store";
			if (track_flags())
				argv[argc++] = "--async";
			argv[argc++] = (char *)fault_handlers_arg();
			argv[argc] = NULL;
			unsetenv("UPC_FAULT_HANDLERS");
			execv(bin, argv);
		}
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	if (ls >= 0)
		close(ls);
	for (int i = 0; i < 500; i++) {
		int s = path_connect(sock_path);
		struct upc_msg *m;

		if (s >= 0) {
			/* served, not only listened on (a passed socket is listening before upcd runs) */
			m = malloc(sizeof(*m));
			cr_assert(m);
			cr_assert_eq(upc_msg_send(s, UPC_MSG_STATUS, 1, NULL, 0, NULL, 0, NULL, 0), 0);
			cr_assert_eq(upc_msg_recv(s, m, UPC_FROM_DAEMON), 0, "upcd did not answer on %s", sock_path);
			free(m);
			close(s);
			return;
		}
		cr_assert_eq(waitpid(upcd_pid, NULL, WNOHANG), 0, "upcd exited at start");
		usleep(10000);
	}
	cr_assert_fail("upcd did not start listening on %s", sock_path);
}

/* A socket directory of the case's own, and the fake store in it. */
static void fs_setup(struct fake_store *st)
{
	sock_dir_make();
	fs_open(st);
}

/* A clean stop of the daemon leaves nothing in the store (as BYE lets the keeper go); @st goes. */
static void fs_stop_empty(struct fake_store *st)
{
	upcd_stop();
	fs_drain(st);
	cr_assert_eq(st->n, 0, "a clean stop left %zu descriptors in the store", st->n);
	close(st->sock);
	free(st);
}

/*
 * With --fd-store and no keeper at all, a killed daemon's dirty pages
 * outlive every process of it and every client, in systemd's store
 * (daemon/fdstore.c): the case the keeper cannot cover, where it is
 * killed too (systemctl kill).  A file written by a process that exited,
 * and one whose writer is killed after the daemon; systemd starts a new
 * daemon with what its store kept, which adopts both files and writes
 * them back, sending nothing again; a clean stop empties the store.  A
 * file the cache lets go before (it was unlinked) leaves the store then.
 */
Test(shared, a_killed_daemons_dirty_pages_outlive_everything_in_systemds_fd_store, .timeout = 90)
{
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char apath[64], bpath[64], cpath[64];
	int afd = tmpfile_pattern(8 * PAGE, apath), bfd = tmpfile_pattern(8 * PAGE, bpath);
	int cfd = tmpfile_pattern(8 * PAGE, cpath);
	struct fake_store *st = calloc(1, sizeof(*st));
	unsigned char cb = 0;
	pid_t y;

	cr_assert(sh != MAP_FAILED && st);
	fs_setup(st);
	setenv("UPC_RECONNECT", "60", 1);
	fs_spawn(st, FS_STORE, NULL);
	/* a file the cache lets go: unlinked, it is written back and released, and leaves the store */
	write_and_exit(cpath, 8, 2, 1, 0, 'C');
	fs_drain(st);
	cr_assert_eq(fs_count(st, "upc-mem."), 1, "the written file's memfd is not in the store");
	cr_assert_eq(unlink(cpath), 0);
	for (int i = 0; i < 3000 && fs_count(st, "upc-"); i++) {	/* the reaper's pass, about a second */
		usleep(10 * 1000);
		fs_drain(st);
	}
	cr_assert_eq(st->n, 0, "a file the cache let go left %zu descriptors in the store", st->n);
	cr_assert_eq(pread(cfd, &cb, 1, 2 * PAGE), 1);
	cr_assert_eq(cb, 'C', "the unlinked file was not written back before it left the cache: %#x", cb);
	write_and_exit(apath, 8, 3, 1, 7, 'A');
	y = write_and_stay(sh, bpath);
	fs_drain(st);
	cr_assert_eq(fs_count(st, "upc-mem."), 2, "the store holds %zu data memfds, not 2", fs_count(st, "upc-mem."));
	cr_assert_eq(fs_count(st, "upc-pt."), 2);
	cr_assert_eq(fs_count(st, "upc-file-rw."), 2, "the files' writable descriptors are not stored");
	cr_assert_eq(st->n, 6, "the store holds %zu descriptors, not 6", st->n);
	/* only the store holds them now, and neither page was written back */
	kill_daemon_then(y, afd, bfd);

	fs_drain(st);
	fs_spawn(st, FS_STORE | FS_HAND, NULL);
	kept_pages_written(afd, bfd);
	fs_drain(st);
	cr_assert_eq(st->n, 6, "the new daemon stored again what the store handed it: %zu descriptors", st->n);
	fs_stop_empty(st);
	close(afd);
	close(bfd);
	close(cfd);
}

/*
 * As systemd restarts upcd.service after a crash of the main process
 * (KillMode=process): the keeper lives, and the next upcd gets its socket
 * and the store (LISTEN_FDS: the socket first, then the store's, named).
 * A file both hand back is adopted once and written back; nothing is
 * stored again; a clean stop empties the store and lets the keeper go.
 */
Test(shared, a_restart_with_the_keeper_and_the_fd_store_stores_nothing_twice, .timeout = 90)
{
	char apath[64];
	int afd = tmpfile_pattern(8 * PAGE, apath), status;
	struct fake_store *st = calloc(1, sizeof(*st));
	unsigned char a = 0;

	cr_assert(st);
	fs_setup(st);
	setenv("UPC_RECONNECT", "60", 1);
	fs_spawn(st, FS_STORE | FS_KEEPER, NULL);
	write_and_exit(apath, 8, 3, 1, 7, 'A');
	fs_drain(st);
	cr_assert_eq(st->n, 3, "the store holds %zu descriptors, not 3", st->n);
	cr_assert(keeper_listens(), "no keeper beside the daemon");
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
	cr_assert_eq(a, pat(3 * PAGE + 7), "the test's premise: the page was written back before the kill");

	fs_spawn(st, FS_STORE | FS_KEEPER | FS_HAND | FS_SOCKET, NULL);
	for (int i = 0; i < 300 && a != 'A'; i++) {
		usleep(100 * 1000);
		upcd_sync();
		cr_assert_eq(pread(afd, &a, 1, 3 * PAGE + 7), 1);
	}
	cr_assert_eq(a, 'A', "the page the dead daemon held dirty: %#x", a);
	fs_drain(st);
	cr_assert_eq(st->n, 3, "the store holds %zu descriptors after the restart, not 3", st->n);
	cr_assert(keeper_listens(), "no keeper beside the new daemon");
	fs_stop_empty(st);
	for (int i = 0; i < 200 && keeper_listens(); i++)
		usleep(10000);
	cr_assert(!keeper_listens(), "the keeper outlived a clean stop");
	close(afd);
}

/*
 * systemd answers nothing to FDSTORE=1, and past FileDescriptorStoreMax=
 * it drops what it is sent: upcd counts against $FDSTORE and stores no
 * file that would not fit whole.  With room for one file, a second one is
 * not stored (its keeper keeps it).
 */
Test(shared, a_full_fd_store_gets_no_file_in_part, .timeout = 60)
{
	char apath[64], bpath[64];
	int afd = tmpfile_pattern(8 * PAGE, apath), bfd = tmpfile_pattern(8 * PAGE, bpath);
	struct fake_store *st = calloc(1, sizeof(*st));

	cr_assert(st);
	fs_setup(st);
	fs_spawn(st, FS_STORE | FS_KEEPER, "6");	/* a file takes 3, and room for a 4th while it changes */
	write_and_exit(apath, 8, 3, 1, 7, 'A');
	write_and_exit(bpath, 8, 3, 1, 7, 'B');
	fs_drain(st);
	cr_assert_eq(st->n, 3, "the store holds %zu descriptors, not the first file's 3", st->n);
	cr_assert_eq(fs_count(st, "upc-mem."), 1);
	cr_assert_eq(fs_count(st, "upc-pt."), 1);
	fs_stop_empty(st);
	close(afd);
	close(bfd);
}

/*
 * A request the daemon dies in the middle of is sent again to the next
 * one, but not an unmap whose munmap this process did already (the
 * daemon's call): sent again, the next daemon would not know the range
 * (the process no longer hands it back) and refuse it (-EINVAL), or
 * unmap what another thread mapped there since.  UPC_DEBUG=stop-at-call
 * stops the client as the daemon calls into it; the daemon is killed and
 * another started meanwhile.  Under asynchronous tracking the first call
 * is the read-only one (map.c, map_forget_remote): the unmap is sent again
 * and served, as any request.
 */
Test(shared, an_unmap_the_daemon_died_in_is_not_sent_again, .timeout = 90)
{
	char path[64];
	int fd = tmpfile_pattern(8 * PAGE, path), status;
	pid_t x;

	setenv("UPC_RECONNECT", "60", 1);
	upcd_start(NULL);
	x = fork_child();
	cr_assert_geq(x, 0);
	if (x == 0) {
		struct upc_cache *c;
		volatile unsigned char *p;
		void *q;
		int f, ret;

		setenv("UPC_DEBUG", "stop-at-call", 1);
		c = shared_cache();
		f = open_rw(path);
		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p))
			_exit(10);
		p[PAGE] = 'U';
		if (upc_msync(c, (void *)p, 8 * PAGE, UPC_MS_SYNC))
			_exit(11);
		ret = upc_unmap(c, (void *)p, 8 * PAGE);
		if (ret)
			_exit(ret == -EINVAL ? 12 : 13);
		/* gone from this process, and the new daemon serves it */
		if (msync((void *)p, PAGE, MS_ASYNC) == 0 || errno != ENOMEM)
			_exit(14);
		if (upc_map(c, f, 0, 8 * PAGE, PROT_READ, 0, &q) || ((volatile char *)q)[PAGE] != 'U')
			_exit(15);
		_exit(upc_cache_destroy(c) == 0 ? 0 : 16);
	}
	cr_assert_eq(waitpid(x, &status, WUNTRACED), x);
	cr_assert(WIFSTOPPED(status), "the client did not stop at the daemon's call: status %#x", status);
	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	upcd_spawn(NULL);
	cr_assert_eq(kill(x, SIGCONT), 0);
	cr_assert_eq(waitpid(x, &status, 0), x);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the client: status %#x (exit 12: the unmap was sent again, and refused)", status);
	upcd_stop();
	close(fd);
}

/*
 * A client that may write a file can hold its memfd's inode lock for as
 * long as it likes: write(2) into the memfd from a page whose fault nobody
 * serves.  Every hole punch of that memfd waits for the lock.  The daemon's
 * one reclaim thread punched evicted pages itself, so that client stopped
 * eviction for every client of the daemon (upcd(8), BUGS, until
 * punch.c's "Evictions punched without file->lock").  Here the held
 * file's pages are evicted while the lock is held, another file eight
 * times the memory limit is read through, and the cache stays within its
 * limit; a fault on a page of the held file waits for the punch, and reads
 * the file's data once the lock is let go.
 */
struct held_write {
	int memfd;
	void *buf;
	off_t off;
	_Atomic ssize_t ret;
};

static void *held_write_main(void *arg)
{
	struct held_write *hw = arg;

	atomic_store(&hw->ret, pwrite(hw->memfd, hw->buf, PAGE, hw->off));
	return NULL;
}

struct held_pwrite {
	struct upc_cache *c;
	int fd;
	unsigned char data[100];
	_Atomic int done;
	ssize_t ret;
};

static void *held_pwrite_main(void *arg)
{
	struct held_pwrite *hp = arg;

	hp->ret = upc_pwrite(hp->c, hp->fd, hp->data, sizeof(hp->data), 6 * PAGE + 100);
	atomic_store(&hp->done, 1);
	return NULL;
}

struct held_touch {
	unsigned char *p;
	_Atomic int done;
	unsigned char byte;
};

static void *held_touch_main(void *arg)
{
	struct held_touch *ht = arg;

	*(volatile unsigned char *)ht->p = ht->byte;
	atomic_store(&ht->done, 1);
	return NULL;
}

/* A raw client's writable map of a file, and the hold of its memfd's inode lock. */
struct held {
	struct upc_msg *m;
	struct held_write hw;
	int s, rw, uffd, statefd;
	pthread_t writer;
};

/* The hold's userfaultfd and message (a second hold beside the first: held_start for the first). */
static void held_prepare(struct held *h)
{
	h->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (h->uffd < 0)
		cr_skip_test("no userfaultfd serving kernel-mode faults for this user: %s", strerror(errno));
	h->m = malloc(sizeof(*h->m));
	h->hw.ret = -2;
}

/* Skips where the kernel or this user lacks what the hold needs; then the daemon, under a 4 MiB limit. */
static void held_start(struct held *h)
{
	struct io_uring_params par = { 0 };
	int ring = (int)syscall(__NR_io_uring_setup, 1, &par);

	if (ring < 0)
		cr_skip_test("no io_uring here (%s): upcd punches in its reclaim thread", strerror(errno));
	close(ring);
	held_prepare(h);
	upcd_start("--mem-limit=4M");
}

/* The raw client's writable map of @path: the memfd, read-write, and the page table's. */
static void held_map(struct held *h, const char *path, size_t size)
{
	uint64_t args[3] = { 0, size, PROT_READ | PROT_WRITE };
	long ret;

	h->s = raw_connect();
	cr_assert_geq(h->s, 0);
	ret = raw_attach(h->s, h->m);
	if (ret == -ENOSYS)
		cr_skip_test("no userfaultfd for this user");
	cr_assert_eq(ret, 0, "attach: %s", strerror((int)-ret));
	h->rw = open_rw(path);
	ret = raw_req(h->s, UPC_MSG_MAP, args, 3, &h->rw, 1, h->m);
	cr_assert(ret == 0 && h->m->nfds == 2, "map: %ld, %u descriptors", ret, h->m->nfds);
	h->hw.memfd = h->m->fds[0];
	h->statefd = h->m->fds[1];
}

/*
 * The memfd's inode lock, held: a write into it at @off from a page whose
 * fault nobody serves.  Held from the fault on, which this waits for.
 */
static void held_lock(struct held *h, off_t off)
{
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct uffdio_api api = { .api = UFFD_API };
	struct pollfd pfd = { .fd = h->uffd, .events = POLLIN };
	struct uffd_msg fault;

	cr_assert_eq(ioctl(h->uffd, UFFDIO_API, &api), 0);
	h->hw.buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(h->hw.buf, MAP_FAILED);
	h->hw.off = off;
	reg.range.start = (uintptr_t)h->hw.buf;
	reg.range.len = PAGE;
	cr_assert_eq(ioctl(h->uffd, UFFDIO_REGISTER, &reg), 0);
	cr_assert_eq(pthread_create(&h->writer, NULL, held_write_main, &h->hw), 0);
	cr_assert_eq(poll(&pfd, 1, 10000), 1, "the write did not fault");
	cr_assert_eq(read(h->uffd, &fault, sizeof(fault)), (ssize_t)sizeof(fault));
	cr_assert_eq(fault.arg.pagefault.address & ~(uint64_t)(PAGE - 1), (uintptr_t)h->hw.buf);
}

/* Let go: the fault served (zeros), the write done. */
static void held_let_go(struct held *h)
{
	struct uffdio_zeropage z = { .range = { (uintptr_t)h->hw.buf, PAGE } };

	cr_assert_eq(ioctl(h->uffd, UFFDIO_ZEROPAGE, &z), 0);
	cr_assert_eq(pthread_join(h->writer, NULL), 0);
	cr_assert_eq(atomic_load(&h->hw.ret), (ssize_t)PAGE);
}

static void held_fini(struct held *h)
{
	close(h->s);
	close(h->uffd);
	close(h->hw.memfd);
	close(h->statefd);
	close(h->rw);
	munmap(h->hw.buf, PAGE);
	free(h->m);
}

/* Reclaim goes on behind the reader: the cache is back under twice its limit soon after (30 s at most). */
static void held_settles(struct upc_cache *c, size_t limit, struct upc_stats *st)
{
	for (int i = 0; i < 3000; i++) {
		cr_assert_eq(upc_stats(c, st), 0);
		if (st->pages_cached <= 2 * limit / PAGE)
			break;
		usleep(10000);
	}
	cr_assert_leq(st->pages_cached, 2 * limit / PAGE, "%" PRIu64 " pages cached under a limit of %zu, 30 s on",
		      st->pages_cached, limit / PAGE);
}

/* Read all of @fd, @size bytes, through @c with upc_pread; returns the half-pages read wrong. */
static uint64_t held_read_all(struct upc_cache *c, int fd, size_t size)
{
	static unsigned char buf[1 << 20];
	uint64_t bad = 0;

	for (size_t off = 0; off < size; off += sizeof(buf)) {
		cr_assert_eq(upc_pread(c, fd, buf, sizeof(buf), (off_t)off), (ssize_t)sizeof(buf));
		for (size_t i = 0; i < sizeof(buf); i += PAGE / 2)
			bad += buf[i] != pat(off + i);
	}
	return bad;
}

/* Page @pgoff's flags in a file's page table (the memfd a map hands back beside the data's). */
static uint16_t pt_flags(int statefd, uint64_t pgoff)
{
	struct upc_page pg;

	cr_assert_eq(pread(statefd, &pg, sizeof(pg), pt_entry_off(pgoff)), (ssize_t)sizeof(pg));
	return pg.flags;
}

Test(shared, a_client_holding_its_memfds_lock_stops_no_eviction, .timeout = 120)
{
	const size_t xsize = 64 * PAGE, ysize = 32u << 20, limit = 4u << 20;
	struct held h = { 0 };
	struct held_touch ht = { 0 };
	struct upc_stats st = { .sz = sizeof(st) };
	char xpath[64], ypath[64];
	int xfd = tmpfile_pattern(xsize, xpath), yfd = tmpfile_pattern(ysize, ypath);
	unsigned char *xbuf = malloc(xsize), *xp;
	pthread_t toucher, pwriter;
	static struct held_pwrite hp;
	struct upc_cache *c;
	uint64_t bad = 0;

	held_start(&h);
	c = shared_cache();
	/* The held file: cached whole, mapped nowhere, so the clock's first victims. */
	cr_assert_eq(upc_pread(c, xfd, xbuf, xsize, 0), (ssize_t)xsize);
	for (size_t i = 0; i < xsize; i++)
		bad += xbuf[i] != pat(i);
	cr_assert_eq(bad, 0);
	held_map(&h, xpath, xsize);
	cr_assert(pt_flags(h.statefd, 5) & 1 /* PG_UPTODATE */, "page 5 of the held file is not cached");

	/*
	 * Under synchronous tracking, a client maps the pages before they are
	 * evicted: its PTEs stay, write-protected, until the punch zaps them
	 * (reclaim.c, shrink_file).  Under asynchronous tracking such pages
	 * are kept (upcd(8), BUGS): mapped only after.
	 */
	if (!track_flags()) {
		cr_assert_eq(upc_map(c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&xp), 0);
		for (size_t i = 0; i < xsize; i += PAGE)	/* all of them: the clock evicts them together */
			bad += xp[i + 7] != pat(i + 7);
		cr_assert_eq(bad, 0);
	}
	held_lock(&h, 0);

	/*
	 * Another file, eight times the limit, read with upc_pread (pages a
	 * client maps are another matter: upcd(8), BUGS).
	 */
	for (int round = 0; round < 2 || (round < 6 && (pt_flags(h.statefd, 5) & 1)); round++)	/* till the clock took page 5 */
		bad += held_read_all(c, yfd, ysize);
	cr_assert_eq(bad, 0, "%" PRIu64 " pages of the scanned file read wrong", bad);
	held_settles(c, limit, &st);
	cr_assert_geq(st.pages_evicted, (ysize - 2 * limit) / PAGE, "%" PRIu64 " pages evicted", st.pages_evicted);
	cr_assert_eq(atomic_load(&h.hw.ret), -2, "the held write returned");
	/* The held file was evicted (its punch waits for the lock) ... */
	cr_assert_not(pt_flags(h.statefd, 5) & 1, "page 5 of the held file was not evicted");

	/*
	 * ... and a write to one of its pages waits for the punch, through a
	 * PTE mapped before (synchronous tracking) or not (a read need not:
	 * the clean page may be mapped read-only meanwhile, and the punch
	 * takes it away again) ...
	 */
	if (track_flags())
		cr_assert_eq(upc_map(c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&xp), 0);
	ht.p = xp + 5 * PAGE + 7;
	ht.byte = (unsigned char)~pat(5 * PAGE + 7);
	cr_assert_eq(pthread_create(&toucher, NULL, held_touch_main, &ht), 0);
	/* ... as does a upc_pwrite, which would write into the page the punch then takes ... */
	hp.c = c;
	hp.fd = xfd;
	for (size_t i = 0; i < sizeof(hp.data); i++)
		hp.data[i] = (unsigned char)~pat(6 * PAGE + 100 + i);
	cr_assert_eq(pthread_create(&pwriter, NULL, held_pwrite_main, &hp), 0);
	usleep(300000);
	cr_assert_eq(atomic_load(&ht.done), 0, "a write to a page being punched did not wait for the punch");
	cr_assert_eq(atomic_load(&hp.done), 0, "a upc_pwrite into a page being punched did not wait for the punch");

	/* ... until the lock is let go: then the write, the punch, and the fault, with the file's data. */
	held_let_go(&h);
	cr_assert_eq(pthread_join(toucher, NULL), 0);
	cr_assert_eq(pthread_join(pwriter, NULL), 0);
	cr_assert_eq(hp.ret, (ssize_t)sizeof(hp.data));
	/*
	 * The write landed, and nothing else of the held file changed: the
	 * zeros written into the memfd's evicted page are not the file's.
	 */
	cr_assert_eq(upc_msync(c, xp, xsize, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(xfd, xbuf, xsize, 0), (ssize_t)xsize);
	for (size_t i = 0; i < xsize; i++) {
		unsigned char want = i == 5 * PAGE + 7 ? ht.byte : pat(i);

		if (i >= 6 * PAGE + 100 && i < 6 * PAGE + 100 + sizeof(hp.data))
			want = hp.data[i - (6 * PAGE + 100)];

		bad += xbuf[i] != want || xp[i] != want;
	}
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of the held file are wrong", bad);

	cr_assert_eq(upc_unmap(c, xp, xsize), 0);
	upc_cache_destroy(c);
	held_fini(&h);
	close(xfd);
	close(yfd);
	free(xbuf);
	upcd_stop();
}

/*
 * A client that maps a file eight times the daemon's memory limit, and
 * reads and writes all of it through the mapping: the daemon evicts what
 * the client maps (the hole punch tears the client's PTEs down, as
 * try_to_unmap does; under --async the client zaps them itself first, at
 * the daemon's request), the cache stays within its limit, and every write
 * reaches the file.  The daemon could not tear a client's PTEs down, and
 * kept every page a client mapped, whatever the limit (under --async until
 * the reclaim channel).
 */
Test(shared, what_a_client_maps_is_evicted_under_the_memory_limit, .timeout = 120)
{
	const size_t size = 32u << 20, limit = 4u << 20;
	struct upc_stats st = { .sz = sizeof(st) };
	static unsigned char buf[1 << 20];
	struct upc_cache *c;
	unsigned char *p;
	uint64_t bad = 0;
	char path[64];
	int fd;

	fd = tmpfile_pattern(size, path);
	upcd_start("--mem-limit=4M");
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	/* Every page read, every sixteenth written. */
	for (size_t off = 0; off < size; off += PAGE) {
		bad += p[off] != pat(off) || p[off + PAGE - 1] != pat(off + PAGE - 1);
		if ((off / PAGE) % 16 == 0)
			p[off + 1] = (unsigned char)~pat(off + 1);
	}
	cr_assert_eq(bad, 0, "%" PRIu64 " pages read wrong through the mapping", bad);
	held_settles(c, limit, &st);
	cr_assert_geq(st.pages_evicted, (size - 2 * limit) / PAGE, "%" PRIu64 " pages evicted", st.pages_evicted);
	/* The writes, in the file and through the mapping again (evicted pages fault back in). */
	cr_assert_eq(upc_msync(c, p, size, UPC_MS_SYNC), 0);
	for (size_t off = 0; off < size; off += sizeof(buf)) {
		cr_assert_eq(pread(fd, buf, sizeof(buf), (off_t)off), (ssize_t)sizeof(buf));
		for (size_t i = 0; i < sizeof(buf); i++) {
			size_t at = off + i;
			unsigned char want = (at % PAGE == 1 && (at / PAGE) % 16 == 0) ? (unsigned char)~pat(at) : pat(at);

			bad += buf[i] != want || p[at] != want;
		}
	}
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes wrong in the file or the mapping", bad);
	cr_assert_eq(upc_unmap(c, p, size), 0);
	upc_cache_destroy(c);
	close(fd);
	upcd_stop();
}

/*
 * Writes racing the eviction of the pages they write: two clients map a
 * file twice the daemon's limit, and for two seconds each counts up, at
 * random, a counter in pages of its own (every other page), reading one of
 * the other's each time, so that pages are written back, cleaned and
 * evicted from under mappings that write them all along.  Under --async a
 * write to a clean page does not trap: it must be seen in the PTE the
 * client zaps before the punch (zap.c, zap_elsewhere), or in the page
 * a fault maps while a zap is in flight (fault.c, handle_minor); under
 * synchronous tracking the writer waits for the punch.  Every counter in
 * the file afterwards is what its writer counted, and the rest of the file
 * is as it was.  (Measured: with the clients' PTEs punched unzapped under
 * --async, 20 counters short in one run of four of an earlier, slower
 * version of this case; see the commit for this version's.)
 */
static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

Test(shared, writes_racing_the_eviction_of_what_clients_map_are_kept, .timeout = 180)
{
	const size_t size = 8u << 20, npages = size / PAGE;	/* twice --mem-limit */
	uint32_t *expect = mmap(NULL, npages * sizeof(*expect), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				-1, 0);
	struct upc_stats st = { .sz = sizeof(st) };
	static unsigned char buf[1 << 20];
	struct upc_cache *c;
	uint64_t bad = 0, badcount = 0, writes = 0;
	pid_t w[2];
	char path[64];
	int fd, status;

	cr_assert(expect != MAP_FAILED);
	fd = tmpfile_pattern(size, path);
	upcd_start("--mem-limit=4M");
	for (int k = 0; k < 2; k++) {
		w[k] = fork_child();
		cr_assert_geq(w[k], 0);
		if (w[k] == 0) {
			struct upc_cache *wc = shared_cache();
			int f = open_rw(path);
			volatile unsigned char *p;
			uint64_t until = mono_ms() + 2000, x = 0x9e3779b97f4a7c15ull * (uint64_t)(k + 1);
			unsigned int sum = 0;

			if (upc_map(wc, f, 0, size, PROT_READ | PROT_WRITE, 0, (void **)&p))
				_exit(10);
			for (unsigned int i = 0; (i & 255) || mono_ms() < until; i++) {
				size_t pg;
				uint32_t v;

				x ^= x << 13, x ^= x >> 7, x ^= x << 17;	/* xorshift64 */
				pg = ((size_t)(x % (npages / 2)) * 2) + (size_t)k;
				v = ++expect[pg];
				memcpy((void *)(p + pg * PAGE + 16), &v, sizeof(v));
				sum += p[(pg ^ 1) * PAGE + 5];
			}
			if (upc_msync(wc, (void *)p, size, UPC_MS_SYNC))
				_exit(11);
			_exit(sum == 0xdeadbeef ? 12 : 0);	/* (the reads are not optimized away) */
		}
	}
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(waitpid(w[k], &status, 0), w[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d: status %#x", k, status);
	}
	c = shared_cache();
	cr_assert_eq(upc_stats(c, &st), 0);
	for (size_t pg = 0; pg < npages; pg++)
		writes += expect[pg];
	for (size_t off = 0; off < size; off += sizeof(buf)) {
		cr_assert_eq(pread(fd, buf, sizeof(buf), (off_t)off), (ssize_t)sizeof(buf));
		for (size_t i = 0; i < sizeof(buf); i += PAGE) {
			uint32_t v, want = expect[(off + i) / PAGE];

			memcpy(&v, buf + i + 16, sizeof(v));
			if (!want)
				memcpy(&want, (unsigned char[]){ pat(off + i + 16), pat(off + i + 17), pat(off + i + 18),
								 pat(off + i + 19) }, sizeof(want));
			if (v != want && badcount < 10)
				fprintf(stderr, "page %zu: %u in the file, %u counted\n", (off + i) / PAGE, v, want);
			badcount += v != want;
			for (size_t j = 0; j < PAGE; j++)
				bad += (j < 16 || j >= 20) && buf[i + j] != pat(off + i + j);
		}
	}
	cr_assert_eq(badcount, 0, "%" PRIu64 " counters short of what their writer counted in the file (%" PRIu64
		     " writes, %" PRIu64 " pages evicted)", badcount, writes, st.pages_evicted);
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes changed that nobody wrote", bad);
	cr_assert_geq(st.pages_evicted, npages, "%" PRIu64 " pages evicted under %" PRIu64 " writes", st.pages_evicted,
		      writes);
	upc_cache_destroy(c);
	munmap(expect, npages * sizeof(*expect));
	close(fd);
	upcd_stop();
}

/* Pages of [p, p + len) the memfd holds (mincore(2) of a shared mapping: the page cache's). */
static size_t resident(volatile unsigned char *p, size_t len)
{
	static unsigned char vec[4096];
	size_t n = 0;

	if (len / PAGE > sizeof(vec) || mincore((void *)p, len, vec) < 0)
		return (size_t)-1;
	for (size_t i = 0; i < len / PAGE; i++)
		n += vec[i] & 1;
	return n;
}

/* The reclaim state (UPC_RECLAIM_*) upcd shows for client @pid, as upcctl daemon clients does; -1: none. */
static int client_reclaim_state(pid_t pid)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int s = raw_connect(), state = -1;

	cr_assert(m && s >= 0);
	cr_assert_geq(raw_req(s, UPC_MSG_CLIENTS, (uint64_t[]){ 0 }, 1, NULL, 0, m), 0);
	for (size_t i = 0; i < m->dlen / sizeof(struct upc_client_info); i++) {
		struct upc_client_info ci;

		memcpy(&ci, m->data + i * sizeof(ci), sizeof(ci));
		if (ci.pid == pid)
			state = (int)ci.reclaim;
	}
	close(s);
	free(m);
	return state;
}

/*
 * client_reclaim_state(), once it is @want, or 3 s on: a zap the reclaim
 * thread did not get the answer of within its pass is given up on 1 s
 * after it was asked (zap.c, ZAP_TIMEOUT_MS), at the thread's next tick.
 */
static int client_reclaim_state_becomes(pid_t pid, int want)
{
	int state = client_reclaim_state(pid);

	for (int i = 0; i < 300 && state != want; i++) {
		usleep(10000);
		state = client_reclaim_state(pid);
	}
	return state;
}

/*
 * Bytes of the first @len of @fd that are not what the zap cases' writers
 * left: 'a' at offset 3 and 'b' at 4 of each page below @a_end, 'v' at 3
 * of each page from there on, the pattern elsewhere.
 */
static uint64_t writers_bytes_wrong(int fd, size_t len, size_t a_end)
{
	static unsigned char buf[1 << 20];
	uint64_t bad = 0;

	for (size_t off = 0; off < len; off += sizeof(buf)) {
		size_t n = len - off < sizeof(buf) ? len - off : sizeof(buf);

		cr_assert_eq(pread(fd, buf, n, (off_t)off), (ssize_t)n);
		for (size_t i = 0; i < n; i++) {
			size_t at = off + i;
			unsigned char want = at % PAGE == 3 ? (at < a_end ? 'a' : 'v') :
					     at % PAGE == 4 && at < a_end ? 'b' : pat(at);

			bad += buf[i] != want;
		}
	}
	return bad;
}

/*
 * In a child, a client: @path (@size bytes from @at) mapped writable, @byte written
 * at offset 3 of every page, and written back (so that its pages are clean,
 * and mapped: the ones a zap is for).  Exits 10 or 11 if it cannot.
 */
static volatile unsigned char *map_write_clean(struct upc_cache *c, const char *path, off_t at, size_t size,
					       unsigned char byte)
{
	int f = open_rw(path);
	volatile unsigned char *p;

	if (upc_map(c, f, at, size, PROT_READ | PROT_WRITE, 0, (void **)&p))
		_exit(10);
	for (size_t off = 0; off < size; off += PAGE)
		p[off + 3] = byte;
	if (upc_msync(c, (void *)p, size, UPC_MS_SYNC))
		_exit(11);
	return p;
}

/*
 * A client that does not answer its zaps (--async; stopped here, as one
 * that is traced or hostile would be): the reclaim thread waits for it at
 * most ZAP_PASS_MS (zap.c) once, and every client's pages are evicted
 * as ever, the silent one's too: they are taken from under it (capture.c;
 * it kept them past the memory limit before).  When it runs again, the zap
 * it was asked for lands late (its watcher reads it first), and what it
 * writes after is still kept: its faults map dirty from then on (struct
 * upc_zapper).  Nothing it wrote before or after is lost.
 */
Test(shared, a_client_that_does_not_answer_its_zaps_keeps_nothing_past_the_limit_and_stalls_no_one,
     .timeout = 120)
{
	const size_t wsize = 1u << 20, rsize = 32u << 20, limit = 4u << 20;
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct upc_stats st = { .sz = sizeof(st) };
	char wpath[64], rpath[64];
	int wfd, rfd, status;
	struct upc_cache *c;
	uint64_t bad = 0, t0;
	pid_t w, v;

	cr_assert(sh != MAP_FAILED);
	if (!track_flags())
		cr_skip_test("no zaps under synchronous tracking: a punch tears a client's PTEs down");
	/* one file, one reclaim visit (512 pages): the silent writer maps its first half, the other the second */
	wfd = tmpfile_pattern(2 * wsize, wpath);
	rfd = tmpfile_pattern(rsize, rpath);
	upcd_start("--mem-limit=4M");
	/* A writer that does answer: what it maps is evicted all the same. */
	v = fork_child();
	cr_assert_geq(v, 0);
	if (v == 0) {
		volatile unsigned char *p = map_write_clean(shared_cache(), wpath, (off_t)wsize, wsize, 'v');

		atomic_store(&sh->writer_ready, 1);
		while (!atomic_load(&sh->killed))
			usleep(1000);
		atomic_store(&sh->resident_b, (int)resident(p, wsize));
		_exit(0);
	}
	w = fork_child();
	cr_assert_geq(w, 0);
	if (w == 0) {
		struct upc_cache *wc = shared_cache();
		volatile unsigned char *p = map_write_clean(wc, wpath, 0, wsize, 'a');

		atomic_store(&sh->ready, 1);
		raise(SIGSTOP);
		atomic_store(&sh->resident_a, (int)resident(p, wsize));
		for (size_t off = 0; off < wsize; off += PAGE)
			p[off + 4] = 'b';
		if (upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC))
			_exit(12);
		_exit(upc_cache_destroy(wc) ? 13 : 0);
	}
	for (int i = 0; i < 3000 && !(atomic_load(&sh->ready) && atomic_load(&sh->writer_ready)); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready) && atomic_load(&sh->writer_ready));
	cr_assert_eq(waitpid(w, &status, WUNTRACED), w);
	cr_assert(WIFSTOPPED(status), "the writer: status %#x", status);
	c = shared_cache();
	t0 = mono_ms();
	for (int round = 0; round < 2; round++)
		bad += held_read_all(c, rfd, rsize);
	cr_assert_eq(bad, 0, "%" PRIu64 " half-pages read wrong", bad);
	held_settles(c, limit, &st);
	cr_assert_geq(st.pages_evicted, (2 * rsize - 2 * limit) / PAGE, "%" PRIu64 " pages evicted", st.pages_evicted);
	/* one wait of ZAP_PASS_MS, not one a pass (there are hundreds) */
	cr_assert_lt(mono_ms() - t0, 60000, "the reads took %" PRIu64 " ms", mono_ms() - t0);
	{
		/* as upcctl daemon clients shows them: the silent writer held, the other one asked */
		int held = client_reclaim_state_becomes(w, UPC_RECLAIM_HELD), ok = client_reclaim_state(v);

		cr_assert_eq(held, UPC_RECLAIM_HELD, "the silent writer's reclaim state: %d", held);
		cr_assert(ok == UPC_RECLAIM_OK || ok == UPC_RECLAIM_RESTING, "the answering writer's reclaim state: %d", ok);
	}
	atomic_store(&sh->killed, 1);
	cr_assert_eq(waitpid(v, &status, 0), v);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the answering writer: status %#x", status);
	cr_assert_leq(atomic_load(&sh->resident_b), (int)(wsize / PAGE / 8),
		      "%d of the answering writer's %zu pages still cached", atomic_load(&sh->resident_b), wsize / PAGE);
	cr_assert_eq(kill(w, SIGCONT), 0);
	cr_assert_eq(waitpid(w, &status, 0), w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer: status %#x", status);
	cr_assert_leq(atomic_load(&sh->resident_a), (int)(wsize / PAGE / 8),
		      "%d of the silent writer's %zu pages still cached", atomic_load(&sh->resident_a), wsize / PAGE);
	bad = writers_bytes_wrong(wfd, 2 * wsize, wsize);
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of the writers' file wrong", bad);
	upc_cache_destroy(c);
	close(wfd);
	close(rfd);
	unlink(wpath);
	unlink(rpath);
	upcd_stop();
}

/*
 * Clients of one user that do not answer their zaps, one after another, as
 * a user may open connection after connection: the reclaim thread waits
 * ZAP_PASS_MS (zap.c) for the first, and ZAP_SUSPECT_MS for each of that
 * user's after, as one of them kept it waiting (upcd.c, zap_suspect).
 * Each cost it ZAP_TIMEOUT_MS (1 s) before, and the reclaim of every file
 * waited meanwhile.  Its waits are upc_stats.zap_wait_ms.  Their pages are
 * evicted all the same (taken from under them), and what they write when
 * they run again reaches the file.
 */
Test(shared, clients_of_a_user_that_do_not_answer_their_zaps_hold_up_reclaim_briefly, .timeout = 120)
{
	enum { K = 6 };
	const size_t wsize = 1u << 20, rsize = 32u << 20, limit = 4u << 20;
	struct upc_stats st = { .sz = sizeof(st) };
	char wpath[K][64], rpath[64];
	int wfd[K], rfd, status;
	struct upc_cache *c;
	uint64_t bad = 0;
	pid_t w[K];

	if (!track_flags())
		cr_skip_test("no zaps under synchronous tracking: a punch tears a client's PTEs down");
	for (int i = 0; i < K; i++)
		wfd[i] = tmpfile_pattern(wsize, wpath[i]);	/* a file each: a reclaim visit each */
	rfd = tmpfile_pattern(rsize, rpath);
	upcd_start("--mem-limit=4M");
	for (int i = 0; i < K; i++) {
		w[i] = fork_child();
		cr_assert_geq(w[i], 0);
		if (w[i] == 0) {
			struct upc_cache *wc = shared_cache();
			volatile unsigned char *p = map_write_clean(wc, wpath[i], 0, wsize, 'a');

			raise(SIGSTOP);
			for (size_t off = 0; off < wsize; off += PAGE)
				p[off + 4] = 'b';
			if (upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC))
				_exit(12);
			_exit(upc_cache_destroy(wc) ? 13 : 0);
		}
		cr_assert_eq(waitpid(w[i], &status, WUNTRACED), w[i]);
		cr_assert(WIFSTOPPED(status), "writer %d: status %#x", i, status);
	}
	c = shared_cache();
	/* until every writer was asked, and given up on (1 s after its zap) */
	for (int round = 0, held = 0; held < K; round++) {
		cr_assert_lt(round, 20, "%d of %d writers given up on after %d reads of 32 MiB", held, K, round);
		bad += held_read_all(c, rfd, rsize);
		held = 0;
		for (int i = 0; i < K; i++)
			held += client_reclaim_state(w[i]) == UPC_RECLAIM_HELD;
	}
	cr_assert_eq(bad, 0, "%" PRIu64 " half-pages read wrong", bad);
	held_settles(c, limit, &st);
	/*
	 * 100 ms for the first writer, 10 ms at most for each of the others
	 * (150): 1 s for each before, 100 ms for each without the user's rule
	 * (600)
	 */
	cr_assert_geq(st.zap_wait_ms, 100, "the reclaim thread waited %" PRIu64 " ms for zaps", st.zap_wait_ms);
	cr_assert_lt(st.zap_wait_ms, 400, "the reclaim thread waited %" PRIu64 " ms for %d writers' zaps",
		     st.zap_wait_ms, K);
	for (int i = 0; i < K; i++) {
		cr_assert_eq(kill(w[i], SIGCONT), 0);
		cr_assert_eq(waitpid(w[i], &status, 0), w[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d: status %#x", i, status);
		bad = writers_bytes_wrong(wfd[i], wsize, wsize);
		cr_assert_eq(bad, 0, "%" PRIu64 " bytes of writer %d's file wrong", bad, i);
		close(wfd[i]);
		unlink(wpath[i]);
	}
	upc_cache_destroy(c);
	close(rfd);
	unlink(rpath);
	upcd_stop();
}

/*
 * Wait for the child @w to say it is ready (*@ready), then stop its
 * watcher thread with ptrace, so that the zaps it is asked for time out
 * while the rest of it runs on.  Returns the watcher's tid, for
 * PTRACE_DETACH; skips the test where ptrace is refused.
 */
static pid_t watcher_stop(pid_t w, _Atomic int *ready)
{
	pid_t watcher;
	int status;

	for (int i = 0; i < 5000 && !atomic_load(ready); i++)
		usleep(1000);
	cr_assert(atomic_load(ready));
	watcher = thread_named(w, "upc-watch");
	cr_assert_gt(watcher, 0, "no watcher thread in the writer");
	if (ptrace(PTRACE_SEIZE, watcher, NULL, NULL) < 0)	/* (the writer dies with this process) */
		cr_skip_test("PTRACE_SEIZE of the writer's watcher thread: %s (Yama's ptrace_scope?)", strerror(errno));
	cr_assert_eq(ptrace(PTRACE_INTERRUPT, watcher, NULL, NULL), 0);
	cr_assert_eq(waitpid(watcher, &status, __WALL), watcher);
	return watcher;
}

/* A child client that reads @fd (@size bytes) over and over, until *@stop; it exits 0 if it read right. */
static pid_t reader_start(int fd, size_t size, _Atomic int *stop)
{
	pid_t r = fork_child();

	cr_assert_geq(r, 0);
	if (r == 0) {
		struct upc_cache *rcache = shared_cache();
		uint64_t wrong = 0;

		while (!atomic_load(stop))
			wrong += held_read_all(rcache, fd, size);
		_exit(wrong ? 13 : upc_cache_destroy(rcache) ? 14 : 0);
	}
	return r;
}

/*
 * The writer of the late-zap cases, forked: a client that maps @wsize
 * bytes of @wpath writable and clean ('a', map_write_clean()), says it is
 * ready, and at sh->step 1 (its zap asked, and not waited for any more:
 * its watcher is stopped) writes 'b' at offset 4 of every page, through
 * clean PTEs that do not trap; at step 3 (its watcher runs again) it waits
 * until the late zap has emptied the first page's PTE (12 if it never
 * does), reads every page (faults map them again) and msyncs (11), then
 * ends its cache (13).
 */
static pid_t late_writer_start(struct nd_shared *sh, const char *wpath, size_t wsize)
{
	pid_t w = fork_child();

	cr_assert_geq(w, 0);
	if (w == 0) {
		struct upc_cache *wc = shared_cache();
		volatile unsigned char *p = map_write_clean(wc, wpath, 0, wsize, 'a');

		atomic_store(&sh->ready, 1);
		while (atomic_load(&sh->step) < 1)
			usleep(1000);
		for (size_t off = 0; off < wsize; off += PAGE)
			p[off + 4] = 'b';
		atomic_store(&sh->step, 2);
		while (atomic_load(&sh->step) < 3)
			usleep(1000);
		for (int i = 0; i < 5000 && pte_present(p); i++)
			usleep(1000);
		if (pte_present(p))
			_exit(12);
		for (size_t off = 0; off < wsize; off += PAGE)
			(void)p[off + 5];
		if (upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC))
			_exit(11);
		_exit(upc_cache_destroy(wc) ? 13 : 0);
	}
	return w;
}

/* The late-zap cases: their writer (late_writer_start), its file, a reader's, and the daemon. */
struct late_case {
	struct nd_shared *sh;
	size_t wsize, rsize;
	char wpath[64], rpath[64];
	int wfd, rfd;
	pid_t w, watcher;
	struct upc_cache *c;
};

/* upcd with a 4 MiB limit, the writer of @wsize bytes ready with its watcher stopped, a cache to read with. */
static void late_case_start(struct late_case *lc, size_t wsize)
{
	lc->sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(lc->sh != MAP_FAILED);
	if (!track_flags())
		cr_skip_test("no zaps under synchronous tracking: a punch tears a client's PTEs down");
	lc->wsize = wsize;
	lc->rsize = 32u << 20;
	lc->wfd = tmpfile_pattern(wsize, lc->wpath);
	lc->rfd = tmpfile_pattern(lc->rsize, lc->rpath);
	upcd_start("--mem-limit=4M");
	lc->w = late_writer_start(lc->sh, lc->wpath, wsize);
	lc->watcher = watcher_stop(lc->w, &lc->sh->ready);
	lc->c = shared_cache();
}

/* The writer writes through its clean PTEs (step 1, 2), then its watcher runs again. */
static void late_case_writes(struct late_case *lc)
{
	atomic_store(&lc->sh->step, 1);
	for (int i = 0; i < 5000 && atomic_load(&lc->sh->step) < 2; i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&lc->sh->step), 2);
	cr_assert_eq(ptrace(PTRACE_DETACH, lc->watcher, NULL, NULL), 0);
}

/* The writer reads its pages again, msyncs and exits (step 3): every write of it is in the file. */
static void late_case_written(struct late_case *lc, const char *how)
{
	uint64_t bad;
	int status;

	atomic_store(&lc->sh->step, 3);
	cr_assert_eq(waitpid(lc->w, &status, 0), lc->w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the writer: status %#x (12: the late zap was never made)", status);
	bad = writers_bytes_wrong(lc->wfd, lc->wsize, lc->wsize);
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of the writer's file wrong after %s", bad, how);
}

static void late_case_end(struct late_case *lc)
{
	upc_cache_destroy(lc->c);
	close(lc->wfd);
	close(lc->rfd);
	unlink(lc->wpath);
	unlink(lc->rpath);
	upcd_stop();
}

/*
 * A zap made late, after the daemon stopped waiting for it (--async): only
 * the client's watcher thread is stopped (ptrace), so the client itself
 * writes on - through clean, write-protected PTEs, which a write does not
 * trap - after the zap timed out; then the watcher runs and makes the zap,
 * which empties those written PTEs.  The client reads its pages again (the
 * faults map them) and msyncs: every write is in the file.  A daemon that
 * took a late zap for an answered one would map those pages again
 * write-protected, clean, and the msync would write none of them.
 */
Test(shared, a_zap_made_late_loses_no_write, .timeout = 120)
{
	struct late_case lc;
	uint64_t bad = 0;
	int state;

	late_case_start(&lc, 1u << 20);
	/* eviction: the writer is asked to zap, and does not answer (its watcher is stopped) */
	for (int round = 0; round < 2; round++)
		bad += held_read_all(lc.c, lc.rfd, lc.rsize);
	cr_assert_eq(bad, 0);
	state = client_reclaim_state_becomes(lc.w, UPC_RECLAIM_HELD);
	cr_assert_eq(state, UPC_RECLAIM_HELD, "the test's premise: the writer's zap timed out (%d)", state);
	late_case_writes(&lc);
	late_case_written(&lc, "a late zap");
	late_case_end(&lc);
}

/*
 * A zap answered after its pass, but in time (--async): the watcher thread
 * is stopped through the reclaim pass's wait (ZAP_PASS_MS, zap.c), the
 * client writes through its clean PTEs meanwhile, then the watcher runs
 * and makes the zap, within ZAP_TIMEOUT_MS of the ask.  The daemon reads
 * the answer at a tick (zap_late_poll), collects what the emptied PTEs
 * recorded, and lets the client's faults map clean again: the client is
 * resting, not given up on, and every write is in the file after its
 * msync.  2 MiB: more victims than a visit takes from under a client
 * (CAPTURE_MAX), so that some stay mapped through the zap.  A daemon that
 * let the faults map clean without the collection would map those pages
 * again clean, and the msync would write none of them.
 */
Test(shared, a_zap_answered_after_its_pass_is_collected_and_loses_no_write, .timeout = 120)
{
	const size_t chunk = 1u << 20;
	static unsigned char buf[1u << 20];
	struct late_case lc;
	uint64_t bad = 0, t0, detached;
	int state = -1;

	late_case_start(&lc, 2u << 20);
	/* eviction, until the writer is asked to zap and the pass stops waiting (resting) */
	for (int round = 0; round < 3 && state != UPC_RECLAIM_RESTING; round++)
		for (size_t off = 0; off < lc.rsize && state != UPC_RECLAIM_RESTING; off += chunk) {
			cr_assert_eq(upc_pread(lc.c, lc.rfd, buf, chunk, (off_t)off), (ssize_t)chunk);
			for (size_t i = 0; i < chunk; i += PAGE / 2)
				bad += buf[i] != pat(off + i);
			state = client_reclaim_state(lc.w);
		}
	cr_assert_eq(bad, 0);
	cr_assert_eq(state, UPC_RECLAIM_RESTING, "the test's premise: the writer's zap was late (%d)", state);
	t0 = mono_ms();
	late_case_writes(&lc);
	detached = mono_ms() - t0;
	/* the zap, a tick (100 ms) to read its answer: past the 1 s a client gets before it is given up on */
	usleep(1200000);
	state = client_reclaim_state(lc.w);
	late_case_written(&lc, "a zap answered late");
	/*
	 * Not given up on: resting (from the pass's end) is all the state
	 * says; that its zap was collected the bytes above say.  (Given up on
	 * all the same where the writer's writes took most of that second: a
	 * slow machine.)
	 */
	if (state == UPC_RECLAIM_HELD && detached > 700) {
		late_case_end(&lc);
		cr_skip_test("the watcher ran %" PRIu64 " ms after the pass: its zap was not late but given up on",
			     detached);
	}
	cr_assert_eq(state, UPC_RECLAIM_RESTING, "the writer's late answer was not read (%d)", state);
	late_case_end(&lc);
}

/* Is upcd's reclaim thread @tid asleep (capture-pause's usleep; it waits on futexes and polls otherwise)? */
static bool reclaim_sleeping(pid_t tid)
{
	char path[96], buf[64] = "";
	long nr;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)upcd_pid, (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	(void)!read(fd, buf, sizeof(buf) - 1);
	close(fd);
	nr = strtol(buf, NULL, 10);
	return nr == SYS_clock_nanosleep || nr == SYS_nanosleep;
}

/*
 * A client that does not answer its zaps (--async; here its watcher thread
 * is stopped, so that the zap it is asked for times out, and the client
 * itself runs on) keeps nothing past the memory limit: its pages are taken
 * from under it (capture.c), where they were kept before (upcd(8), BUGS).
 * UPC_DEBUG=capture-pause holds each such eviction 1.5 s between its last
 * look at the pages and their punch; meanwhile the client writes every page
 * it maps, once.  Its writes to the pages being taken land in pages the
 * daemon found clean and is about to punch: each comes back, dirty
 * (evictions_undone), and reaches the file.  A punch that took them lost
 * those writes: the file kept the bytes of before.  The writer then
 * msyncs at once, and what it wrote is in the file when its msync returns:
 * an msync that did not wait for the eviction to end wrote nothing of the
 * pages it took (review of capture.c).  Then the writer writes the pages it
 * did not map, and msyncs again.  With @fail (UPC_DEBUG=capture-fail) a
 * page cannot be put back: the loss is the first msync's -EIO, as a page
 * the kernel could not write is.
 */
static void silent_writer_case(bool fail)
{
	const size_t wsize = 2u << 20, rsize = 8u << 20;	/* under a limit of 1 MiB */
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct upc_stats st = { .sz = sizeof(st) };
	char wpath[64], rpath[64];
	int wfd, rfd, status, state = -1;
	struct upc_cache *c;
	pid_t w, r, watcher, rc;
	uint64_t bad;
	bool paused = false;

	cr_assert(sh != MAP_FAILED);
	if (!track_flags())
		cr_skip_test("no zaps under synchronous tracking: a punch tears a client's PTEs down");
	wfd = tmpfile_pattern(wsize, wpath);
	rfd = tmpfile_pattern(rsize, rpath);
	setenv("UPC_DEBUG", fail ? "capture-pause,capture-fail" : "capture-pause", 1);
	upcd_start("--mem-limit=1M");
	unsetenv("UPC_DEBUG");
	rc = thread_named(upcd_pid, "upc-reclaim");
	cr_assert_gt(rc, 0, "no reclaim thread in upcd");
	w = fork_child();
	cr_assert_geq(w, 0);
	if (w == 0) {
		struct upc_cache *wc = shared_cache();
		volatile unsigned char *p = map_write_clean(wc, wpath, 0, wsize, 'a');
		static uint64_t pm[512];
		int pmfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

		atomic_store(&sh->ready, 1);
		while (atomic_load(&sh->step) < 1)	/* an eviction of its pages waits before its punch */
			usleep(1000);
		unsigned char b;
		int lost = 0;

		/*
		 * The pages it maps first, then the others: a fault on one the
		 * daemon evicted waits for the file's lock, which the eviction
		 * holds through its pause.
		 */
		if (pmfd < 0 || pread(pmfd, pm, sizeof(pm), (off_t)((uintptr_t)p / PAGE * sizeof(pm[0]))) != sizeof(pm))
			_exit(10);
		for (size_t i = 0; i < wsize / PAGE; i++)
			if (pm[i] >> 63)
				p[i * PAGE + 5] = 'c';
		atomic_store(&sh->unmap_ret, upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC));
		for (size_t i = 0; i < wsize / PAGE; i++)
			if ((pm[i] >> 63) && (pread(wfd, &b, 1, (off_t)(i * PAGE + 5)) != 1 || b != 'c'))
				lost++;
		atomic_store(&sh->resident_b, lost);
		for (size_t i = 0; i < wsize / PAGE; i++)
			if (!(pm[i] >> 63))
				p[i * PAGE + 5] = 'c';
		atomic_store(&sh->step, 2);
		atomic_store(&sh->read_ok, upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC));
		upc_cache_destroy(wc);
		_exit(0);
	}
	watcher = watcher_stop(w, &sh->ready);
	/* The pressure: another client reads a file eight times the limit, over and over. */
	r = reader_start(rfd, rsize, &sh->killed);
	/* The writer's zap times out (1 s), then a visit takes its pages, and waits. */
	for (int i = 0; i < 60000 && !paused; i++) {
		paused = reclaim_sleeping(rc);
		if (!paused)
			usleep(1000);
	}
	cr_assert(paused, "no eviction took the silent writer's pages within 60 s");
	state = client_reclaim_state(w);
	atomic_store(&sh->step, 1);
	for (int i = 0; i < 30000 && atomic_load(&sh->step) < 2; i++)
		usleep(1000);
	cr_assert_eq(atomic_load(&sh->step), 2, "the writer did not write its pages in 30 s");
	atomic_store(&sh->killed, 1);
	cr_assert_eq(waitpid(r, &status, 0), r);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the reader: status %#x", status);
	cr_assert_eq(ptrace(PTRACE_DETACH, watcher, NULL, NULL), 0);
	cr_assert_eq(waitpid(w, &status, 0), w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer: status %#x", status);
	/* (resting: a zap it answered slowly while it wrote its pages first; not asked either) */
	cr_assert(state == UPC_RECLAIM_HELD || state == UPC_RECLAIM_RESTING,
		  "the test's premise: the writer is not asked to zap (%d)", state);
	c = shared_cache();
	cr_assert_eq(upc_stats(c, &st), 0);
	bad = 0;
	{
		static unsigned char buf[2u << 20];

		cr_assert_eq(pread(wfd, buf, wsize, 0), (ssize_t)wsize);
		for (size_t off = 0; off < wsize; off += PAGE)
			bad += buf[off + 3] != 'a' || buf[off + 5] != 'c';
	}
	if (fail) {
		cr_assert_gt(bad, 0, "the test's premise: a write landed between an eviction's last look and its punch");
		cr_assert_eq(st.evictions_undone, 0);
		cr_assert_eq(atomic_load(&sh->unmap_ret), -EIO,
			     "%" PRIu64 " pages' writes lost, and the writer's msync said %d", bad,
			     atomic_load(&sh->unmap_ret));
	} else {
		cr_assert_eq(atomic_load(&sh->resident_b), 0,
			     "%d pages the writer wrote were not in the file when its msync returned (%d)",
			     atomic_load(&sh->resident_b), atomic_load(&sh->unmap_ret));
		cr_assert_eq(bad, 0, "%" PRIu64 " of the writer's %zu pages lost a write (%" PRIu64 " evictions undone)",
			     bad, wsize / PAGE, st.evictions_undone);
		cr_assert_gt(st.evictions_undone, 0, "no write landed between an eviction's last look and its punch");
		cr_assert_eq(atomic_load(&sh->unmap_ret), 0, "the writer's msync: %d", atomic_load(&sh->unmap_ret));
		cr_assert_eq(atomic_load(&sh->read_ok), 0, "the writer's second msync: %d", atomic_load(&sh->read_ok));
	}
	upc_cache_destroy(c);
	close(wfd);
	close(rfd);
	unlink(wpath);
	unlink(rpath);
	upcd_stop();
}

Test(shared, a_write_to_a_page_taken_from_under_a_silent_client_is_not_lost, .timeout = 120)
{
	silent_writer_case(false);
}

Test(shared, a_write_to_a_page_taken_from_under_a_silent_client_that_cannot_go_back_is_an_error,
     .timeout = 120)
{
	silent_writer_case(true);
}

/* Is the page at @p (this process's mapping) part of a large folio?  -1: cannot tell (no PFN: not root). */
static int page_in_large_folio(const volatile void *p)
{
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), kpf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	uint64_t ent = 0, fl = 0;
	int ret = -1;

	(void)*(const volatile char *)p;
	if (pm >= 0 && kpf >= 0 &&
	    pread(pm, &ent, sizeof(ent), (off_t)((uintptr_t)p / PAGE * sizeof(ent))) == sizeof(ent) &&
	    (ent >> 63) && (ent & ((1ULL << 55) - 1)) &&
	    pread(kpf, &fl, sizeof(fl), (off_t)((ent & ((1ULL << 55) - 1)) * sizeof(fl))) == sizeof(fl))
		ret = !!(fl & (3ULL << 15));	/* KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL */
	if (pm >= 0)
		close(pm);
	if (kpf >= 0)
		close(kpf);
	return ret;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

/*
 * A page of a large folio is not taken from under a client that does not
 * zap (review of capture.c).  A punch of part of a large shmem folio zeroes
 * that part in place and then splits the folio, which fails while the
 * pipe holds a reference: the pipe read zeros, taken for a write, and put
 * the zeros back as the page's data, written back over the file's.  Here
 * the silent writer makes its memfd's pages one large folio with
 * MADV_COLLAPSE (which collapses a memfd's page cache even where it then
 * fails, on a range registered with userfaultfd: checked on Linux 6.18),
 * and reclaim goes round under another client's reads, 20 times once the
 * writer's zap has timed out: those pages stay cached, and no byte of the
 * file changes but what the writer writes after.
 */
Test(shared, a_large_folio_is_not_taken_from_under_a_silent_client, .timeout = 120)
{
	const size_t wsize = 2u << 20, rsize = 16u << 20;	/* under a limit of 4 MiB */
	struct nd_shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct upc_stats st = { .sz = sizeof(st) };
	char wpath[64], rpath[64];
	int wfd, rfd, status;
	struct upc_cache *c;
	pid_t w, r, watcher;
	uint64_t bad = 0, passes0;

	cr_assert(sh != MAP_FAILED);
	if (!track_flags())
		cr_skip_test("no zaps under synchronous tracking: a punch tears a client's PTEs down");
	wfd = tmpfile_pattern(wsize, wpath);
	rfd = tmpfile_pattern(rsize, rpath);
	upcd_start("--mem-limit=4M");
	w = fork_child();
	cr_assert_geq(w, 0);
	if (w == 0) {
		struct upc_cache *wc = shared_cache();
		char *raw = mmap(NULL, 2 * wsize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		volatile unsigned char *p = (void *)(((uintptr_t)raw + wsize - 1) & ~(wsize - 1));
		int f = open_rw(wpath);

		if (raw == MAP_FAILED || upc_map(wc, f, 0, wsize, PROT_READ | PROT_WRITE, UPC_MAP_FIXED, (void **)&p))
			_exit(10);
		for (size_t off = 0; off < wsize; off += PAGE)
			p[off + 3] = 'a';
		if (upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC))
			_exit(11);
		(void)madvise((void *)p, wsize, MADV_COLLAPSE);	/* (EINVAL, having collapsed the memfd's pages) */
		for (size_t off = 0; off < wsize; off += PAGE)	/* mapped again: the collapse unmapped them */
			(void)p[off];
		atomic_store(&sh->resident_a, page_in_large_folio(p + 5 * PAGE));
		atomic_store(&sh->ready, 1);
		while (atomic_load(&sh->step) < 1)	/* reclaim went round */
			usleep(1000);
		atomic_store(&sh->resident_b, (int)resident(p, wsize));
		for (size_t off = 0; off < wsize; off += PAGE)
			p[off + 5] = 'c';
		atomic_store(&sh->unmap_ret, upc_msync(wc, (void *)p, wsize, UPC_MS_SYNC));
		upc_cache_destroy(wc);
		_exit(0);
	}
	for (int i = 0; i < 10000 && !atomic_load(&sh->ready); i++)
		usleep(1000);
	cr_assert(atomic_load(&sh->ready));
	if (atomic_load(&sh->resident_a) != 1) {
		kill(w, SIGKILL);
		waitpid(w, NULL, 0);
		upcd_stop();
		cr_skip_test("MADV_COLLAPSE made no large folio of the memfd here (%d; -1: no PFN to look at)",
			     atomic_load(&sh->resident_a));
	}
	watcher = watcher_stop(w, &sh->ready);
	c = shared_cache();
	cr_assert_eq(upc_stats(c, &st), 0);
	passes0 = st.reclaim_passes;
	r = reader_start(rfd, rsize, &sh->killed);
	/* Rounds of the clock after the writer's zap timed out: each visits the writer's file. */
	for (int i = 0; i < 3000 && client_reclaim_state(w) != UPC_RECLAIM_HELD; i++)
		usleep(10000);
	cr_assert_eq(upc_stats(c, &st), 0);
	cr_assert_eq(client_reclaim_state(w), UPC_RECLAIM_HELD,
		     "the test's premise: the writer's zap timed out (state %d, %" PRIu64 " passes, %" PRIu64 " cached)",
		     client_reclaim_state(w), st.reclaim_passes - passes0, st.pages_cached);
	passes0 = st.reclaim_passes;
	for (int i = 0; i < 3000 && st.reclaim_passes < passes0 + 20; i++) {
		usleep(10000);
		cr_assert_eq(upc_stats(c, &st), 0);
	}
	cr_assert_geq(st.reclaim_passes, passes0 + 20, "%" PRIu64 " rounds of reclaim in 30 s", st.reclaim_passes - passes0);
	atomic_store(&sh->killed, 1);
	cr_assert_eq(waitpid(r, &status, 0), r);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the reader: status %#x", status);
	atomic_store(&sh->step, 1);
	cr_assert_eq(ptrace(PTRACE_DETACH, watcher, NULL, NULL), 0);
	cr_assert_eq(waitpid(w, &status, 0), w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer: status %#x", status);
	cr_assert_eq(atomic_load(&sh->unmap_ret), 0, "the writer's msync: %d", atomic_load(&sh->unmap_ret));
	cr_assert_geq(atomic_load(&sh->resident_b), (int)(wsize / PAGE * 3 / 4),
		      "only %d of the writer's %zu pages of a large folio stayed cached", atomic_load(&sh->resident_b),
		      wsize / PAGE);
	{
		static unsigned char buf[2u << 20];

		cr_assert_eq(pread(wfd, buf, wsize, 0), (ssize_t)wsize);
		for (size_t at = 0; at < wsize; at++) {
			unsigned char want = at % PAGE == 3 ? 'a' : at % PAGE == 5 ? 'c' : pat(at);

			bad += buf[at] != want;
		}
	}
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of the writer's file wrong", bad);
	upc_cache_destroy(c);
	close(wfd);
	close(rfd);
	unlink(wpath);
	unlink(rpath);
	upcd_stop();
}

/*
 * A call made in a thread, to see whether it waits (for a hold, a pause):
 * @ret is 1 until it returns, then what it returned.
 */
enum held_op { HELD_DROP, HELD_INVALIDATE, HELD_TRUNCATE, HELD_PUNCH, HELD_MAP_FAR, HELD_GROW, HELD_PIN, HELD_APPEND };

#define HELD_FAR	(5ULL << 30)	/* past the daemon's first staging mapping (4 GiB) and memfd_len */
#define HELD_APPEND_AT	(66 * PAGE + 50)	/* HELD_APPEND: 2 pages from @p here, past end of file */

struct held_call {
	enum held_op op;
	struct upc_cache *c;
	int fd;
	void *p;		/* HELD_MAP_FAR: the mapping made; HELD_PIN: the page to pin; HELD_APPEND: the data */
	pthread_t t;
	_Atomic long ret;
};

static void *held_call_main(void *arg)
{
	struct held_call *hc = arg;
	long r = -EINVAL;

	switch (hc->op) {
	case HELD_DROP:
		r = upc_drop(hc->c, 0);
		break;
	case HELD_INVALIDATE:
		r = upc_invalidate(hc->c, hc->fd, 0, 0);
		break;
	case HELD_TRUNCATE:
		r = upc_ftruncate(hc->c, hc->fd, 32 * PAGE);
		break;
	case HELD_PUNCH:
		r = upc_fallocate(hc->c, hc->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 * PAGE, 8 * PAGE);
		break;
	case HELD_MAP_FAR:
		r = upc_map(hc->c, hc->fd, 0, HELD_FAR, PROT_READ, 0, &hc->p);
		break;
	case HELD_GROW:
		r = upc_ftruncate(hc->c, hc->fd, (off_t)HELD_FAR);
		break;
	case HELD_PIN:
		r = upc_pin(hc->c, hc->p, PAGE, 0);
		break;
	case HELD_APPEND:
		r = upc_pwrite(hc->c, hc->fd, hc->p, 2 * PAGE, HELD_APPEND_AT);
		break;
	}
	atomic_store(&hc->ret, r);
	return NULL;
}

static void held_call_start(struct held_call *hc)
{
	atomic_store(&hc->ret, 1);
	cr_assert_eq(pthread_create(&hc->t, NULL, held_call_main, hc), 0);
}

/* Does @hc return within 10 s? */
static bool held_call_returns(struct held_call *hc)
{
	for (int i = 0; i < 1000 && atomic_load(&hc->ret) == 1; i++)
		usleep(10000);
	return atomic_load(&hc->ret) != 1;
}

/*
 * A drop or an invalidation takes clean pages from under every mapping of
 * them.  Under asynchronous tracking a client's write through a clean PTE
 * does not trap, and the daemon punched the page from under it: a write
 * between the drop's last look and its punch was lost (upcd(8), BUGS,
 * until reclaim.c's unmap_elsewhere; "dropping never drops dirty data").
 * Now the client zaps its PTEs first, as for an eviction.  UPC_DEBUG=
 * drop-pause holds the daemon 1.5 s between its last look and the punch;
 * the client writes the page meanwhile, and the write reaches the file,
 * for a drop of the whole cache as for an invalidation of the file.
 */
Test(shared, a_write_during_a_drop_or_an_invalidation_is_not_lost, .timeout = 60)
{
	char path[64];
	int fd = tmpfile_pattern(8 * PAGE, path);
	volatile unsigned char *p;
	struct upc_cache *c, *w;
	unsigned char b[2];

	if (!track_flags())
		cr_skip_test("no zaps under synchronous tracking: a write to a clean page traps, and waits for the punch");
	setenv("UPC_DEBUG", "drop-pause", 1);
	upcd_start(NULL);
	unsetenv("UPC_DEBUG");
	c = shared_cache();
	w = shared_cache();
	cr_assert_eq(upc_map(w, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (int round = 0; round < 2; round++) {
		volatile unsigned char *q = p + (3 + round) * PAGE;
		struct held_call d = { .op = round ? HELD_INVALIDATE : HELD_DROP, .c = c, .fd = fd };
		const char *what = round ? "an invalidation" : "a drop";
		int i;

		q[0] = (unsigned char)('a' + round);
		cr_assert_eq(upc_msync(w, (void *)p, 8 * PAGE, UPC_MS_SYNC), 0);
		cr_assert(pte_present(q), "the page written and cleaned is not mapped");
		held_call_start(&d);
		/*
		 * Zapped by its client, asked by the daemon (then come the
		 * daemon's last look, its pause, its punch), or 0.5 s on: the
		 * daemon is in its pause, with the PTE still there if nobody
		 * asked for the zap.  The write faults and waits for the punch,
		 * or, made before the zap, is collected with it.
		 */
		for (i = 0; i < 50 && pte_present(q); i++)
			usleep(10000);
		q[1] = (unsigned char)('A' + round);
		cr_assert_eq(pthread_join(d.t, NULL), 0);
		cr_assert_geq(atomic_load(&d.ret), round ? -EBUSY : 0, "%s: %ld", what, atomic_load(&d.ret));
		cr_assert(q[0] == 'a' + round && q[1] == 'A' + round, "through the mapping after %s: %#x %#x", what,
			  q[0], q[1]);
		cr_assert_eq(upc_msync(w, (void *)p, 8 * PAGE, UPC_MS_SYNC), 0);
		cr_assert_eq(pread(fd, b, 2, (off_t)(3 + round) * PAGE), 2);
		cr_assert(b[0] == 'a' + round && b[1] == 'A' + round, "the write made during %s was lost: %#x %#x",
			  what, b[0], b[1]);
	}
	cr_assert_eq(upc_unmap(w, (void *)p, 8 * PAGE), 0);
	upc_cache_destroy(w);
	upc_cache_destroy(c);
	upcd_stop();
	close(fd);
	unlink(path);
}

/*
 * The same hold, and then a truncation of that file, whose hole punch waits
 * for the lock.  It waited with the file's lock held, and every client of
 * that file waited with it; statistics, which the reclaim thread publishes
 * every second with the whole cache's lock held, waited for that file's
 * lock too: every client of the daemon stopped (measured: another client's
 * map of another file had not returned 37 s later).  So did the threads
 * that visit every file: the background writer stopped at that file for
 * good, and a sync or a drop of the whole cache wrote nothing after it.
 * Now the punch goes through the punch thread, and the truncation waits for
 * it without the file's lock (punch_settle): another client reads the file,
 * other files are mapped, read and evicted as ever, a file older in the
 * cache (walked after it) is written back by the writer, a sync and a drop
 * meanwhile, the sync returns, the drop waits for the held file's punch,
 * and the truncation completes once the lock is let go.
 */
/*
 * A client of its own that reads @size bytes of a file, in a thread (its
 * attach too may wait, for the cache's lock): done, and the half-pages
 * read wrong (UINT64_MAX: no cache, or a short read).  Its cache is the
 * test's to destroy.
 */
struct reader {
	struct upc_cache *c;
	int fd;
	size_t size;
	pthread_t t;
	_Atomic uint64_t bad;
	_Atomic int done;
};

static void *reader_main(void *arg)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	const size_t chunk = 1u << 20;
	struct reader *r = arg;
	unsigned char *buf = malloc(chunk);
	uint64_t bad = UINT64_MAX;

	if (buf && upc_cache_create(&o, &r->c) == 0) {
		bad = 0;
		for (size_t off = 0; off < r->size; off += chunk) {
			size_t n = r->size - off < chunk ? r->size - off : chunk;

			if (upc_pread(r->c, r->fd, buf, n, (off_t)off) != (ssize_t)n) {
				bad = UINT64_MAX;
				break;
			}
			for (size_t i = 0; i < n; i += PAGE / 2)
				bad += buf[i] != pat(off + i);
		}
	}
	free(buf);
	atomic_store(&r->bad, bad);
	atomic_store(&r->done, 1);
	return NULL;
}

/* Run @r and see it done within 10 s (@what: what it would have waited for), all read right. */
static void reader_passes(struct reader *r, const char *what)
{
	cr_assert_eq(pthread_create(&r->t, NULL, reader_main, r), 0);
	for (int i = 0; i < 1000 && !atomic_load(&r->done); i++)
		usleep(10000);
	cr_assert(atomic_load(&r->done), "a read of the file waited for %s", what);
	cr_assert_eq(pthread_join(r->t, NULL), 0);
	cr_assert_eq(atomic_load(&r->bad), 0);
	upc_cache_destroy(r->c);
}

/* An administrator's SYNC or DROP (UPC_DROP_WRITEBACK) of the whole cache, in a thread: its result, or 1 until it has one. */
struct held_admin {
	uint16_t type;
	_Atomic long ret;
};

static void *held_admin_main(void *arg)
{
	struct held_admin *a = arg;
	uint64_t flags = a->type == UPC_MSG_DROP ? UPC_DROP_WRITEBACK : 0;
	struct upc_msg *m = malloc(sizeof(*m));
	int s = path_connect(sock_path);
	long ret = -ENOMEM;

	if (m && s >= 0 && upc_msg_send(s, a->type, 1, &flags, 1, NULL, 0, NULL, 0) == 0)
		ret = upc_msg_recv(s, m, UPC_FROM_DAEMON) == 0 ? (long)(int64_t)m->args[0] : -EBADMSG;
	else if (s < 0)
		ret = -errno;
	if (s >= 0)
		close(s);
	free(m);
	atomic_store(&a->ret, ret);
	return NULL;
}

/* Does the file @fd say @byte at @off within @ms (written back by someone else meanwhile)? */
static bool held_byte_seen(int fd, off_t off, unsigned char byte, int ms)
{
	unsigned char b = 0;

	for (int i = 0; i <= ms / 10; i++) {
		cr_assert_eq(pread(fd, &b, 1, off), 1);
		if (b == byte)
			return true;
		usleep(10000);
	}
	return false;
}

/* ... within 10 s */
static bool held_reaches_file(int fd, off_t off, unsigned char byte)
{
	return held_byte_seen(fd, off, byte, 10000);
}

Test(shared, a_client_holding_its_memfds_lock_and_truncating_stalls_no_other_file, .timeout = 120)
{
	const size_t xsize = 64 * PAGE, ysize = 32u << 20, limit = 4u << 20;
	struct held h = { 0 };
	struct held_call ht = { .op = HELD_TRUNCATE };
	struct held_admin admin[2];
	pthread_t admins[2];
	volatile unsigned char *wp;
	struct upc_stats st = { .sz = sizeof(st) };
	char xpath[64], ypath[64], zpath[64], wpath[64];
	int xfd = tmpfile_pattern(xsize, xpath), yfd = tmpfile_pattern(ysize, ypath);
	int zfd = tmpfile_pattern(16 * PAGE, zpath), wfd = tmpfile_pattern(4 * PAGE, wpath);
	unsigned char *xbuf = malloc(xsize), *zp;
	struct upc_cache *c, *c2;
	uint64_t bad = 0;
	struct stat sb;

	held_start(&h);
	c = shared_cache();
	/* W, older in the cache than X: the walks of every file come to it after X */
	cr_assert_eq(upc_pread(c, wfd, xbuf, PAGE, 0), (ssize_t)PAGE);
	cr_assert_eq(upc_pread(c, xfd, xbuf, xsize, 0), (ssize_t)xsize);
	held_map(&h, xpath, xsize);
	held_lock(&h, 60 * PAGE);	/* past the truncation below: its zeros go with it */

	/* ... and a truncation of the file, which waits for it holding the file's lock. */
	ht.c = c;
	ht.fd = xfd;
	held_call_start(&ht);
	sleep(2);	/* statistics are published every second */
	cr_assert_eq(atomic_load(&ht.ret), 1, "the truncation did not wait for the memfd's lock");

	/*
	 * Another client reads what stays of X meanwhile: the truncation
	 * waits for its punch without the file's lock (punch_settle), where it
	 * held it and every fault and read of X waited with it.
	 */
	struct reader hr = { .fd = xfd, .size = 16 * PAGE };

	reader_passes(&hr, "its truncation's punch");

	/*
	 * The background writer (asked by an msync), a sync and a drop of the
	 * whole cache write W back meanwhile; before the cache is full (the
	 * eviction of a dirty page writes it back too).
	 */
	c2 = shared_cache();
	cr_assert_eq(upc_map(c2, wfd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&wp), 0);
	wp[PAGE + 3] = 'b';
	cr_assert_eq(upc_msync(c2, (void *)wp, 4 * PAGE, UPC_MS_ASYNC), 0);
	cr_assert(held_reaches_file(wfd, PAGE + 3, 'b'), "the background writer stopped at the held file");
	for (int i = 0; i < 2; i++) {
		admin[i].type = i ? UPC_MSG_DROP : UPC_MSG_SYNC;
		atomic_store(&admin[i].ret, 1);
		wp[2 * PAGE + i] = (unsigned char)('s' + i);
		cr_assert_eq(pthread_create(&admins[i], NULL, held_admin_main, &admin[i]), 0);
		cr_assert(held_reaches_file(wfd, 2 * PAGE + i, (unsigned char)('s' + i)),
			  "a %s of the whole cache stopped at the held file", i ? "drop" : "sync");
	}
	/*
	 * The sync returns: the truncation waits for X's punch without X's
	 * lock (punch_settle).  The drop waits for that punch, as a drop of a
	 * file waits for its pages to go.
	 */
	for (int i = 0; i < 1000 && atomic_load(&admin[0].ret) == 1; i++)
		usleep(10000);
	cr_assert_eq(atomic_load(&admin[0].ret), 0, "a sync of the whole cache waited for the held file's truncation");
	cr_assert_eq(atomic_load(&admin[1].ret), 1, "the drop returned while the lock was held");

	/* Another client maps and reads another file, and reads one eight times the limit. */
	cr_assert_eq(upc_map(c2, zfd, 0, 16 * PAGE, PROT_READ, 0, (void **)&zp), 0);
	for (size_t i = 0; i < 16 * PAGE; i += PAGE)
		bad += zp[i + 9] != pat(i + 9);
	bad += held_read_all(c2, yfd, ysize);
	cr_assert_eq(bad, 0);
	held_settles(c2, limit, &st);
	cr_assert_eq(atomic_load(&ht.ret), 1, "the truncation returned while the lock was held");

	/* Let go: the write, then the truncation and the drop. */
	held_let_go(&h);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(pthread_join(admins[i], NULL), 0);
		cr_assert_geq(atomic_load(&admin[i].ret), 0, "the %s: %s", i ? "drop" : "sync",
			      strerror((int)-atomic_load(&admin[i].ret)));
	}
	cr_assert_eq(upc_unmap(c2, (void *)wp, 4 * PAGE), 0);
	cr_assert_eq(pthread_join(ht.t, NULL), 0);
	cr_assert_eq(atomic_load(&ht.ret), 0, "truncate: %s", strerror((int)-atomic_load(&ht.ret)));
	cr_assert_eq(fstat(xfd, &sb), 0);
	cr_assert_eq(sb.st_size, 32 * PAGE);
	cr_assert_eq(upc_pread(c, xfd, xbuf, xsize, 0), (ssize_t)(32 * PAGE));
	for (size_t i = 0; i < 32 * PAGE; i++)
		bad += xbuf[i] != pat(i);
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of the truncated file are wrong", bad);

	cr_assert_eq(upc_unmap(c2, zp, 16 * PAGE), 0);
	upc_cache_destroy(c2);
	upc_cache_destroy(c);
	held_fini(&h);
	close(xfd);
	close(yfd);
	close(zfd);
	close(wfd);
	free(xbuf);
	upcd_stop();
}

/*
 * What else a client holding its memfd's inode lock (held_lock) held up for
 * every client of the file, beside evictions and truncations (above): the
 * daemon waited for that lock holding the file's lock (upcd(8), BUGS, until
 * punch.c's punch_stray and cache.c's file_memfd_span):
 *  - a mapping, or a growth, past the memfd's length as the daemon knew it
 *    (its first staging mapping's, 4 GiB): ftruncate(2) of the memfd, which
 *    takes the inode lock even to be refused (the memfd, sealed against
 *    shrinking, reaches the takeover journal already);
 *  - a fault on a page the client wrote into a hole of the memfd (not the
 *    cache's page: punched, and read from the store).
 * Now neither takes the inode lock under the file's lock: the mapping and
 * the growth return, the fault on that page waits for its punch alone, and
 * another client reads the file meanwhile.  Once the hold ends, the page
 * reads the store's data with the fault's write, never the client's bytes.
 */
Test(shared, a_client_holding_its_memfds_lock_stalls_no_map_growth_or_read_of_the_file, .timeout = 120)
{
	const size_t xsize = 64 * PAGE;
	struct held h = { 0 };
	struct held_touch ht = { .byte = 'T' };
	struct held_call far = { .op = HELD_MAP_FAR }, grow = { .op = HELD_GROW };
	struct reader hr = { .size = 16 * PAGE };
	unsigned char junk[PAGE], *xp;
	char xpath[64];
	int xfd = tmpfile_pattern(xsize, xpath);
	pthread_t toucher;
	struct upc_cache *c;
	uint64_t bad = 0;
	struct stat sb;

	held_start(&h);
	c = shared_cache();
	held_map(&h, xpath, xsize);
	/* Page 40: a hole of the memfd (nothing of X is cached), written by the client. */
	memset(junk, 'J', sizeof(junk));
	cr_assert_eq(pwrite(h.hw.memfd, junk, PAGE, 40 * PAGE), (ssize_t)PAGE);
	held_lock(&h, 60 * PAGE);

	/* A mapping and a growth past 4 GiB return while the lock is held ... */
	far.c = grow.c = c;
	far.fd = grow.fd = xfd;
	held_call_start(&far);
	cr_assert(held_call_returns(&far), "a mapping past the memfd's length waited for its inode lock");
	cr_assert_eq(atomic_load(&far.ret), 0, "map: %s", strerror((int)-atomic_load(&far.ret)));
	cr_assert_eq(((unsigned char *)far.p)[3 * PAGE + 1], pat(3 * PAGE + 1));
	held_call_start(&grow);
	cr_assert(held_call_returns(&grow), "a growth past the memfd's length waited for its inode lock");
	cr_assert_eq(atomic_load(&grow.ret), 0, "truncate: %s", strerror((int)-atomic_load(&grow.ret)));
	cr_assert_eq(fstat(xfd, &sb), 0);
	cr_assert_eq((uint64_t)sb.st_size, HELD_FAR);

	/* ... a write to page 40 waits for the page's punch, which waits for the lock ... */
	cr_assert_eq(upc_map(c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&xp), 0);
	ht.p = xp + 40 * PAGE + 5;
	cr_assert_eq(pthread_create(&toucher, NULL, held_touch_main, &ht), 0);
	sleep(1);
	cr_assert_eq(atomic_load(&ht.done), 0, "the write to the page written into a hole did not wait for its punch");

	/* ... and another client reads the file meanwhile. */
	hr.fd = xfd;
	reader_passes(&hr, "the punch of a page written into a hole");
	cr_assert_eq(atomic_load(&h.hw.ret), -2, "the held write returned");

	/* Let go: the punch, then the write, to the store's page. */
	held_let_go(&h);
	cr_assert_eq(pthread_join(toucher, NULL), 0);
	for (size_t i = 0; i < PAGE; i++)
		bad += xp[40 * PAGE + i] != (i == 5 ? 'T' : pat(40 * PAGE + i));
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of page 40 are not the store's (%#x: the client's)", bad,
		     xp[40 * PAGE + 6]);
	cr_assert_eq(upc_msync(c, xp, xsize, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(xfd, junk, PAGE, 40 * PAGE), (ssize_t)PAGE);
	cr_assert(junk[5] == 'T' && junk[6] == pat(40 * PAGE + 6), "page 40 of the file: %#x %#x", junk[5], junk[6]);

	cr_assert_eq(pthread_join(far.t, NULL), 0);
	cr_assert_eq(pthread_join(grow.t, NULL), 0);
	cr_assert_eq(upc_unmap(c, far.p, HELD_FAR), 0);
	cr_assert_eq(upc_unmap(c, xp, xsize), 0);
	cr_assert_eq(upc_ftruncate(c, xfd, (off_t)xsize), 0);
	upc_cache_destroy(c);
	held_fini(&h);
	close(xfd);
	upcd_stop();
}

/*
 * The threads that visit every file let go of a file's lock for their
 * write-back I/O, and then waited to take it again: a thread that took it
 * meanwhile, to wait with it for the memfd's inode lock a client holds,
 * stopped the background writer there, for every file (upcd(8), BUGS,
 * until writeback.c's wb_park).  Truncations did so until they waited for
 * their punches without the lock (punch_settle), and growths until they
 * asked fstat(2) first (file_memfd_span).  What still waits so is a growth
 * of a memfd that the daemon's RLIMIT_FSIZE kept short of the takeover
 * journal: the daemon runs with a limit of 1 TiB here, and another
 * client's mapping past 4 GiB waits for the lock.  UPC_DEBUG=visit-pause
 * holds the writer 1.5 s between its I/O and the lock: X's page is in the
 * file, its write-back not ended, when the mapping takes the lock.  The
 * writer parks X's write-back (X's page stays under write-back), passes X
 * by and writes W; once the lock is let go, X's write-back ends (an msync
 * of it returns, and its page is clean and no more under write-back).
 */
Test(shared, a_writer_back_from_its_io_passes_by_a_file_a_growth_holds, .timeout = 120)
{
	const size_t xsize = 64 * PAGE;
	struct held h = { 0 };
	struct held_call far = { .op = HELD_MAP_FAR };
	volatile unsigned char *wp, *xp;
	char xpath[64], wpath[64];
	int xfd = tmpfile_pattern(xsize, xpath), wfd = tmpfile_pattern(4 * PAGE, wpath);
	struct rlimit fsz, small;
	struct upc_cache *c, *c2;
	uint16_t fl;

	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &fsz), 0);
	small = (struct rlimit){ 1ULL << 40, fsz.rlim_max };	/* the soft limit only: raised again below */
	if (fsz.rlim_cur != RLIM_INFINITY && fsz.rlim_cur < small.rlim_cur)
		small.rlim_cur = fsz.rlim_cur;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
	setenv("UPC_DEBUG", "visit-pause", 1);
	held_start(&h);
	unsetenv("UPC_DEBUG");
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &fsz), 0);
	c = shared_cache();	/* the mapping's; c2 a connection of its own, whose calls do not queue behind it */
	c2 = shared_cache();
	/* W, older in the cache than X: the writer's pass comes to it after X */
	cr_assert_eq(upc_map(c2, wfd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&wp), 0);
	cr_assert_eq(wp[PAGE], pat(PAGE));
	cr_assert_eq(upc_map(c2, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&xp), 0);
	cr_assert_eq(xp[3], pat(3));
	held_map(&h, xpath, xsize);
	held_lock(&h, 60 * PAGE);

	/* X's page written back: the writer is in its pause, the lock not taken again. */
	xp[3] = 'x';
	cr_assert_eq(upc_msync(c2, (void *)xp, PAGE, UPC_MS_ASYNC), 0);
	cr_assert(held_reaches_file(xfd, 3, 'x'), "X's page was not written back");
	far.c = c;
	far.fd = xfd;
	held_call_start(&far);
	usleep(500000);
	cr_assert_eq(atomic_load(&far.ret), 1, "the mapping past 4 GiB did not wait for the memfd's lock "
		     "(the daemon's RLIMIT_FSIZE did not keep the memfd short?)");

	/* The writer comes back, cannot take X's lock, parks X's write-back and goes on to W. */
	wp[PAGE + 3] = 'b';
	cr_assert_eq(upc_msync(c2, (void *)wp, 4 * PAGE, UPC_MS_ASYNC), 0);
	cr_assert(held_reaches_file(wfd, PAGE + 3, 'b'),
		  "the background writer stopped at the held file, back from its I/O");
	fl = pt_flags(h.statefd, 0);
	cr_assert(fl & PG_WRITEBACK, "X's write-back was not parked (page 0: flags %#x)", fl);
	cr_assert_eq(atomic_load(&far.ret), 1, "the mapping returned while the lock was held");

	/* Let go: the mapping; X's write-back ends, and nothing of it is lost. */
	held_let_go(&h);
	cr_assert_eq(pthread_join(far.t, NULL), 0);
	cr_assert_eq(atomic_load(&far.ret), 0, "map: %s", strerror((int)-atomic_load(&far.ret)));
	cr_assert_eq(upc_unmap(c, far.p, HELD_FAR), 0);
	cr_assert_eq(upc_msync(c2, (void *)xp, xsize, UPC_MS_SYNC), 0);
	fl = pt_flags(h.statefd, 0);
	cr_assert_eq(fl & (PG_DIRTY | PG_WRITEBACK), 0, "X's page 0: flags %#x after an msync", fl);
	cr_assert(held_reaches_file(xfd, 3, 'x'));
	cr_assert_eq(upc_msync(c2, (void *)wp, 4 * PAGE, UPC_MS_SYNC), 0);

	cr_assert_eq(upc_unmap(c2, (void *)xp, xsize), 0);
	cr_assert_eq(upc_unmap(c2, (void *)wp, 4 * PAGE), 0);
	upc_cache_destroy(c2);
	upc_cache_destroy(c);
	held_fini(&h);
	close(xfd);
	close(wfd);
	upcd_stop();
}

/*
 * A restarted daemon adopts the earlier one's memfds (its keeper's here):
 * the adoption seeks through the data memfd and punches it, which takes
 * its inode lock, and a client that kept the memfd can hold that lock as
 * long as it likes (held_lock).  The adoption made the file with the
 * cache's lock held, and every lookup of every file, by every client,
 * waited with it (upcd(8), BUGS, until file_get_how made it without).  Now
 * only a lookup of that file waits; another client reads another file
 * meanwhile, and the held file's data is there once the lock is let go.
 */

Test(shared, an_adoption_waiting_for_a_held_memfd_stalls_no_other_file, .timeout = 120)
{
	const size_t size = 1u << 20;
	struct held h = { 0 };
	char xpath[64], ypath[64];
	int xfd = tmpfile_pattern(size, xpath), yfd = tmpfile_pattern(size, ypath), status;
	struct reader rx = { .fd = xfd, .size = size }, ry = { .fd = yfd, .size = size };
	pthread_t tx, ty;
	struct upc_cache *c;

	held_start(&h);
	c = shared_cache();
	cr_assert_eq(held_read_all(c, xfd, size), 0);	/* X cached, in the memfd the keeper keeps */
	upc_cache_destroy(c);
	held_map(&h, xpath, size);

	cr_assert_eq(kill(upcd_pid, SIGKILL), 0);
	cr_assert_eq(waitpid(upcd_pid, &status, 0), upcd_pid);
	held_lock(&h, (off_t)size + PAGE);	/* past the end of X: its zeros are no page of X */
	upcd_spawn("--mem-limit=4M");	/* adopts what the keeper kept: X waits for the memfd's lock */

	cr_assert_eq(pthread_create(&tx, NULL, reader_main, &rx), 0);
	cr_assert_eq(pthread_create(&ty, NULL, reader_main, &ry), 0);
	for (int i = 0; i < 1000 && !atomic_load(&ry.done); i++)
		usleep(10000);
	cr_assert(atomic_load(&ry.done), "a read of another file waited for the adoption of the held one");
	cr_assert_eq(atomic_load(&ry.bad), 0);
	cr_assert_eq(pthread_join(ty, NULL), 0);
	cr_assert_not(atomic_load(&rx.done), "the test's premise: X's adoption did not wait for the memfd's lock");

	held_let_go(&h);
	cr_assert_eq(pthread_join(tx, NULL), 0);
	cr_assert_eq(atomic_load(&rx.bad), 0, "X read wrong after its adoption");
	upc_cache_destroy(rx.c);
	upc_cache_destroy(ry.c);
	held_fini(&h);
	close(xfd);
	close(yfd);
	upcd_stop();
}

/*
 * A write to a file takes its inode lock, and a client that may write the
 * file can hold that lock as long as it likes (write(2) into the file from
 * a page whose fault it does not serve), as it can the memfd's.  The
 * background writer waited in that file's write-back I/O, and every other
 * file's dirty pages with it; and four write-backs of it so took the file
 * store's four rings, and every read of every file waited for a ring
 * (upcd(8), BUGS, until writeback.c's wb_io_offload and store.c's
 * ring_get), and past the pool's 64 rings, again (until store.c's
 * fs_submit_sync).  Here the writer passes X by after its wait and writes
 * W; SYNCERS clients' msyncs of X wait, more than the pool has rings, and
 * another client reads Y; once the lock is let go, X's pages are all
 * written.
 */
#define SYNCERS	66	/* past store.c's NR_RINGS_MAX (64), with the writer's own */
struct sync_page {
	volatile unsigned char *p;
	struct upc_cache *c;
	_Atomic int ret;
};

static void *sync_page_main(void *arg)
{
	struct sync_page *s = arg;

	atomic_store(&s->ret, upc_msync(s->c, (void *)s->p, PAGE, UPC_MS_SYNC));
	return NULL;
}

Test(shared, a_client_holding_a_files_inode_lock_stalls_no_other_files_io, .timeout = 120)
{
	const size_t xsize = 128 * PAGE, ysize = 1u << 20;
	struct held h = { 0 };
	struct sync_page sp[SYNCERS];
	struct reader ry = { .size = ysize };
	pthread_t st[SYNCERS], ty;
	volatile unsigned char *wp, *xp;
	char xpath[64], wpath[64], ypath[64];
	int xfd = tmpfile_pattern(xsize, NULL), wfd = tmpfile_pattern(4 * PAGE, wpath), memfd;
	struct upc_cache *c;

	/*
	 * X has no name: an unlink of it would wait for the held lock with its
	 * directory's locked (the removal at exit of a case that failed before
	 * it let go), and every test creating a file there with it.
	 */
	snprintf(xpath, sizeof(xpath), "/proc/self/fd/%d", xfd);
	ry.fd = tmpfile_pattern(ysize, ypath);
	held_start(&h);
	c = shared_cache();
	cr_assert_eq(upc_map(c, wfd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&wp), 0);
	cr_assert_eq(wp[PAGE], pat(PAGE));
	cr_assert_eq(upc_map(c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&xp), 0);
	for (size_t i = 0; i < xsize; i += PAGE)
		cr_assert_eq(xp[i + 3], pat(i + 3));	/* all of X cached: no read of it waits below */
	held_map(&h, xpath, xsize);
	memfd = h.hw.memfd;
	h.hw.memfd = h.rw;	/* the file's own inode lock, not its memfd's */
	held_lock(&h, (off_t)xsize);

	/* The writer's I/O of X waits for the lock; after a second it goes on to W. */
	xp[3] = 'x';
	cr_assert_eq(upc_msync(c, (void *)xp, PAGE, UPC_MS_ASYNC), 0);
	usleep(200 * 1000);
	wp[PAGE + 3] = 'b';
	cr_assert_eq(upc_msync(c, (void *)wp, 4 * PAGE, UPC_MS_ASYNC), 0);
	cr_assert(held_reaches_file(wfd, PAGE + 3, 'b'), "the background writer stopped in the held file's I/O");

	/* SYNCERS clients write back a page of X each, and wait; another reads Y. */
	for (int i = 0; i < SYNCERS; i++) {
		sp[i].c = shared_cache();
		atomic_store(&sp[i].ret, 1);
		cr_assert_eq(upc_map(sp[i].c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&sp[i].p), 0);
		sp[i].p += (10 + i) * PAGE;
		sp[i].p[5] = (unsigned char)('0' + i);
		cr_assert_eq(pthread_create(&st[i], NULL, sync_page_main, &sp[i]), 0);
	}
	usleep(500 * 1000);
	for (int i = 0; i < SYNCERS; i++)
		cr_assert_eq(atomic_load(&sp[i].ret), 1, "the test's premise: an msync of X did not wait for the lock");
	cr_assert_eq(pthread_create(&ty, NULL, reader_main, &ry), 0);
	for (int i = 0; i < 1000 && !atomic_load(&ry.done); i++)
		usleep(10000);
	cr_assert(atomic_load(&ry.done), "a read of another file waited for a ring of the store");
	cr_assert_eq(pthread_join(ty, NULL), 0);
	cr_assert_eq(atomic_load(&ry.bad), 0);

	/* A sync of the whole cache writes W, X's write-backs in flight waited for last. */
	struct held_admin admin = { .type = UPC_MSG_SYNC, .ret = 1 };
	pthread_t at;

	wp[PAGE + 4] = 'c';
	cr_assert_eq(pthread_create(&at, NULL, held_admin_main, &admin), 0);
	cr_assert(held_reaches_file(wfd, PAGE + 4, 'c'), "a sync of the whole cache stopped at the held file's write-back");
	cr_assert_eq(atomic_load(&admin.ret), 1, "the sync returned while X's write-backs waited");

	/* Let go: every write of X lands, and the sync returns. */
	held_let_go(&h);
	h.hw.memfd = memfd;
	cr_assert_eq(pthread_join(at, NULL), 0);
	cr_assert_eq(atomic_load(&admin.ret), 0, "sync: %s", strerror((int)-atomic_load(&admin.ret)));
	for (int i = 0; i < SYNCERS; i++) {
		cr_assert_eq(pthread_join(st[i], NULL), 0);
		cr_assert_eq(atomic_load(&sp[i].ret), 0, "msync: %s", strerror(-atomic_load(&sp[i].ret)));
		cr_assert(held_reaches_file(xfd, (off_t)(10 + i) * PAGE + 5, (unsigned char)('0' + i)));
		cr_assert_eq(upc_unmap(sp[i].c, (void *)(sp[i].p - (10 + i) * PAGE), xsize), 0);
		upc_cache_destroy(sp[i].c);
	}
	/* The thread's write of X landed, and the writer visits X again (no more passed by). */
	cr_assert(held_reaches_file(xfd, 3, 'x'), "the write-back left to a thread never landed");
	xp[7 * PAGE] = 'y';
	cr_assert_eq(upc_msync(c, (void *)(xp + 7 * PAGE), PAGE, UPC_MS_ASYNC), 0);
	cr_assert(held_reaches_file(xfd, 7 * PAGE, 'y'), "the background writer passes X by for good");
	cr_assert_eq(upc_msync(c, (void *)xp, xsize, UPC_MS_SYNC), 0);
	cr_assert_eq(pt_flags(h.statefd, 0) & (PG_DIRTY | PG_WRITEBACK), 0);
	cr_assert_eq(upc_unmap(c, (void *)xp, xsize), 0);
	cr_assert_eq(upc_unmap(c, (void *)wp, 4 * PAGE), 0);
	upc_cache_destroy(c);
	upc_cache_destroy(ry.c);
	held_fini(&h);
	close(xfd);
	close(wfd);
	close(ry.fd);
	upcd_stop();
}

/*
 * A client that may write a file can keep its write-back from ending as
 * long as it likes (it holds the file's inode lock: held_lock on the file
 * itself) and dirty the file's pages meanwhile: they filled the cache past
 * its hard margin, where reclaim cannot evict them, and every fault of
 * every client of the daemon then waited 200 ms in reclaim_throttle()
 * (upcd(8), BUGS, until dirtylimit.c).  Now its writes wait once its user
 * holds its share of dirty pages (half the limit, alone), and another user
 * reads a file twice the limit through a mapping and writes one with
 * upc_pwrite(), against a sixteenth of the limit; once the lock is let go
 * the writer goes on, and every page it wrote reaches the file.
 */
struct dirtier {
	volatile unsigned char *p;
	size_t pages;
	_Atomic size_t done;
};

static void *dirtier_main(void *arg)
{
	struct dirtier *d = arg;

	for (size_t i = 0; i < d->pages; i++) {
		d->p[i * PAGE + 1] = 'w';
		atomic_store(&d->done, i + 1);
	}
	return NULL;
}

struct other_user {
	int zfd, yfd, wfd;
	size_t zsize, ysize, wsize;
	bool async;
};

/*
 * As uid nobody: read all of Z through a mapping; hold 100 pages of W
 * written and pinned with UPC_PIN_NOWRITEBACK (more than its share of 64
 * while the other user holds its own: pinned pages are the pin limit's,
 * and counted here they held this user's writes for good); write all of Y
 * with upc_pwrite, and sync it; let W go.
 */
static int other_user_main(void *arg)
{
	struct other_user *o = arg;
	static unsigned char buf[64 * PAGE];
	volatile unsigned char *zp, *wp;
	struct upc_cache *c;
	uint64_t bad = 0;
	int ret;

	UPC_OPTS(upc_cache_opts, opts, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	ret = upc_cache_create(&opts, &c);
	nobody_check(ret == 0, "upc_cache_create: %s", upc_strerror(ret));
	ret = upc_map(c, o->zfd, 0, o->zsize, PROT_READ, 0, (void **)&zp);
	if (ret == -ENOSYS || ret == -EPERM)
		nobody_skip("no userfaultfd for this user: %s", upc_strerror(ret));
	nobody_check(ret == 0, "map: %s", upc_strerror(ret));
	for (size_t i = 0; i < o->zsize; i += PAGE)
		bad += zp[i + 9] != pat(i + 9);
	nobody_check(bad == 0, "%" PRIu64 " pages of Z read wrong", bad);
	nobody_check(upc_map(c, o->wfd, 0, o->wsize, PROT_READ | PROT_WRITE, 0, (void **)&wp) == 0, "map W");
	/*
	 * Not under asynchronous tracking, where the other user's writes go
	 * past its share (above) and the cache stays past its limit: a pin
	 * there can find a page reclaimed between its fault and its look, 8
	 * times over, and fail (-EFAULT, upc_pin(3)).
	 */
	if (!o->async) {
		ret = upc_pin(c, (void *)wp, o->wsize, UPC_PIN_NOWRITEBACK);
		nobody_check(ret == 0, "pin W: %s", upc_strerror(ret));
	}
	for (size_t i = 0; i < o->wsize; i += PAGE)
		wp[i] = 'p';
	memset(buf, 'y', sizeof(buf));
	for (size_t off = 0; off < o->ysize; off += sizeof(buf))
		nobody_check(upc_pwrite(c, o->yfd, buf, sizeof(buf), (off_t)off) == (ssize_t)sizeof(buf),
			     "upc_pwrite of Y at %zu", off);
	ret = upc_fsync(c, o->yfd);
	nobody_check(ret == 0, "upc_fsync: %s", upc_strerror(ret));
	nobody_check(o->async || upc_unpin(c, (void *)wp, o->wsize) == 0, "unpin W");
	ret = upc_msync(c, (void *)wp, o->wsize, UPC_MS_SYNC);
	nobody_check(ret == 0, "msync of W: %s", upc_strerror(ret));
	nobody_check(upc_unmap(c, (void *)wp, o->wsize) == 0, "unmap W");
	nobody_check(upc_unmap(c, (void *)zp, o->zsize) == 0, "unmap");
	nobody_check(upc_cache_destroy(c) == 0, "destroy");
	return 0;
}

Test(shared, a_user_whose_write_back_is_held_dirties_no_more_than_its_share, .timeout = 120)
{
	const size_t limit = 4u << 20, xsize = 2048 * PAGE, share = limit / 2 / PAGE;
	struct other_user o = { .zsize = 2 * limit, .ysize = 1u << 20, .wsize = 100 * PAGE, .async = track_flags() != 0 };
	struct dirtier d = { .pages = xsize / PAGE };
	struct upc_stats st = { .sz = sizeof(st) };
	struct held h = { 0 };
	char xpath[64], msg[512];
	size_t seen;
	pthread_t t;
	int xfd = tmpfile_pattern(xsize, NULL), memfd, status;
	unsigned char b;
	struct upc_cache *c;

	snprintf(xpath, sizeof(xpath), "/proc/self/fd/%d", xfd);	/* no name: see the case above */
	o.zfd = tmpfile_pattern(o.zsize, NULL);
	o.yfd = tmpfile_pattern(o.ysize, NULL);
	o.wfd = tmpfile_pattern(o.wsize, NULL);
	cr_assert_eq(fchmod(o.zfd, 0644), 0);
	cr_assert_eq(fchown(o.yfd, NOBODY, NOBODY), 0);
	cr_assert_eq(fchown(o.wfd, NOBODY, NOBODY), 0);
	held_start(&h);
	c = shared_cache();
	cr_assert_eq(upc_map(c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)&d.p), 0);
	held_map(&h, xpath, xsize);
	memfd = h.hw.memfd;
	h.hw.memfd = h.rw;	/* the file's own inode lock */
	held_lock(&h, (off_t)xsize);

	/* The writer dirties X until its user's share, and waits there. */
	cr_assert_eq(pthread_create(&t, NULL, dirtier_main, &d), 0);
	do {
		seen = atomic_load(&d.done);
		usleep(1000 * 1000);
	} while (atomic_load(&d.done) != seen);
	cr_assert_lt(seen, d.pages, "a writer dirtied all %zu pages of a file whose write-back is held", d.pages);
	cr_assert_eq(upc_stats(c, &st), 0);
	/*
	 * Under asynchronous tracking a page written is counted when a scan
	 * finds it (reclaim's, write-back's), and the writer goes past its
	 * share by what it maps meanwhile (upcd(8), BUGS): within the
	 * limit and its hard margin (limit + limit/8 + readahead's 256), where
	 * reclaim_throttle() would hold every client.
	 */
	cr_assert_leq(st.pages_dirty + st.pages_writeback, track_flags() ? limit / PAGE * 9 / 8 + 255 : share + 64,
		      "%" PRIu64 " + %" PRIu64 " pages dirty and under write-back, a user's share %zu",
		      st.pages_dirty, st.pages_writeback, share);
	cr_assert_gt(st.dirty_wait_ms, 0);

	/*
	 * A write pin of a page of X not written yet: its populate's fault
	 * does not wait at the limit (the daemon's call gives it 10 s, and the
	 * connection was lost after them), and is served while the writer's
	 * fault waits (in the synchronous run, by the client's one handler:
	 * the waiting fault is put aside), which still waits (below).
	 */
	cr_assert_eq(upc_pin(c, (void *)(d.p + xsize - PAGE), PAGE, UPC_PIN_WRITE), 0);
	cr_assert_eq(upc_unpin(c, (void *)(d.p + xsize - PAGE), PAGE), 0);

	/* Another user reads and writes meanwhile, past the limit. */
	status = run_as_nobody(other_user_main, &o, msg, sizeof(msg));
	nobody_report(status, msg);
	cr_assert_eq(pread(o.yfd, &b, 1, (off_t)o.ysize - 1), 1);
	cr_assert_eq(b, 'y');
	cr_assert_eq(pread(o.wfd, &b, 1, o.wsize - PAGE), 1);
	cr_assert_eq(b, 'p');
	cr_assert_eq(atomic_load(&d.done), seen, "the writer went on while the lock was held");

	/* Let go: the writer ends, and all it wrote reaches X. */
	held_let_go(&h);
	h.hw.memfd = memfd;
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(upc_msync(c, (void *)d.p, xsize, UPC_MS_SYNC), 0);
	for (size_t i = 0; i < d.pages; i++) {
		cr_assert_eq(pread(xfd, &b, 1, (off_t)(i * PAGE + 1)), 1);
		cr_assert_eq(b, 'w', "page %zu of X", i);
	}
	cr_assert_eq(upc_unmap(c, (void *)d.p, xsize), 0);
	upc_cache_destroy(c);
	held_fini(&h);
	close(xfd);
	close(o.zfd);
	close(o.yfd);
	close(o.wfd);
	upcd_stop();
}

/*
 * A change of the store's file that the kernel makes under the file's
 * inode lock: a truncation, a hole punch.  A client that may write the
 * file can hold that lock (held_lock on the file itself), and the daemon
 * waited for it holding the file's lock: every read and fault of the file,
 * in every client, waited with it (upcd(8), BUGS, until fileio.c's
 * store_unlock).  The kernel's readers do not wait for a truncation stuck
 * on i_rwsem.  Now the change waits alone (and the file's next writer
 * behind it, as behind i_rwsem), another client reads the file meanwhile,
 * a pin of a page the change takes waits for it (it checked for pins
 * before: I6), and the change is made once the lock is let go.
 */
/*
 * X (@xfd, named @xpath) mapped writable by @c at *@xpp, all of it cached
 * (no read of it waits below), and the file's own inode lock held by the
 * raw client (a write(2) at its end).  Returns the memfd, for h->hw.memfd
 * once the lock is let go.
 */
static int held_file(struct held *h, struct upc_cache *c, const char *xpath, int xfd, size_t xsize,
		     volatile unsigned char **xpp)
{
	int memfd;

	cr_assert_eq(upc_map(c, xfd, 0, xsize, PROT_READ | PROT_WRITE, 0, (void **)xpp), 0);
	for (size_t i = 0; i < xsize; i += PAGE)
		cr_assert_eq((*xpp)[i + 3], pat(i + 3));
	held_map(h, xpath, xsize);
	memfd = h->hw.memfd;
	h->hw.memfd = h->rw;	/* the file's own inode lock */
	held_lock(h, (off_t)xsize);
	return memfd;
}

/* @op: HELD_TRUNCATE (to 32 pages) or HELD_PUNCH (pages 8-15) */
static void held_store_change(enum held_op op)
{
	const char *what = op == HELD_TRUNCATE ? "truncation" : "hole punch";
	const size_t xsize = 64 * PAGE;
	struct held h = { 0 };
	struct held_call hs = { .op = op }, hp = { .op = HELD_PIN };
	struct reader hr = { .size = 16 * PAGE };
	volatile unsigned char *xp, *xp2;
	unsigned char buf[100];
	char xpath[64], why[64];
	int xfd = tmpfile_pattern(xsize, NULL), memfd;
	struct upc_cache *c;
	uint64_t bad = 0;
	struct stat sb;

	snprintf(xpath, sizeof(xpath), "/proc/self/fd/%d", xfd);	/* no name: as in the case above */
	held_start(&h);
	c = shared_cache();
	memfd = held_file(&h, c, xpath, xfd, xsize, &xp);

	hs.c = c;
	hs.fd = xfd;
	held_call_start(&hs);
	sleep(1);
	cr_assert_eq(atomic_load(&hs.ret), 1, "the %s did not wait for the file's inode lock", what);

	/* Another client reads the file meanwhile. */
	hr.fd = xfd;
	snprintf(why, sizeof(why), "a %s stuck on its inode lock", what);
	reader_passes(&hr, why);
	cr_assert_eq(atomic_load(&hs.ret), 1, "the %s returned while the lock was held", what);

	/*
	 * A pin of a page it takes (cached, mapped) waits for it; through a
	 * connection of its own, whose requests do not queue behind it.
	 */
	hp.c = shared_cache();
	cr_assert_eq(upc_map(hp.c, xfd, 0, xsize, PROT_READ, 0, (void **)&xp2), 0);
	hp.p = (void *)(xp2 + (op == HELD_TRUNCATE ? 40 : 10) * PAGE);
	held_call_start(&hp);
	usleep(300000);
	cr_assert_eq(atomic_load(&hp.ret), 1, "a pin of a page the %s takes did not wait for it: %ld", what,
		     atomic_load(&hp.ret));

	held_let_go(&h);
	h.hw.memfd = memfd;
	cr_assert_eq(pthread_join(hs.t, NULL), 0);
	cr_assert_eq(atomic_load(&hs.ret), 0, "the %s: %s", what, strerror((int)-atomic_load(&hs.ret)));
	cr_assert_eq(pthread_join(hp.t, NULL), 0);
	cr_assert_eq(fstat(xfd, &sb), 0);
	if (op == HELD_TRUNCATE) {
		/* the pin came after: past the new end of file */
		cr_assert_eq(atomic_load(&hp.ret), -EFAULT, "a pin past the new end: %ld", atomic_load(&hp.ret));
		cr_assert_eq(sb.st_size, 32 * PAGE);
		cr_assert_eq(upc_pread(c, xfd, buf, sizeof(buf), 40 * PAGE), 0, "a read past the new end");
		for (size_t i = 0; i < 32 * PAGE; i += PAGE / 2)
			bad += xp[i] != pat(i);
	} else {
		/* the pin came after: the hole's page, zeros */
		cr_assert_eq(atomic_load(&hp.ret), 0, "a pin in the hole: %ld", atomic_load(&hp.ret));
		cr_assert_eq(upc_unpin(hp.c, hp.p, PAGE), 0);
		cr_assert_eq(sb.st_size, (off_t)(xsize + PAGE));	/* and the held write's page */
		for (size_t i = 0; i < xsize; i += PAGE / 2)
			bad += xp[i] != (i >= 8 * PAGE && i < 16 * PAGE ? 0 : pat(i));
	}
	cr_assert_eq(bad, 0, "%" PRIu64 " half-pages wrong after the %s", bad, what);
	cr_assert_eq(upc_unmap(hp.c, (void *)xp2, xsize), 0);
	upc_cache_destroy(hp.c);
	cr_assert_eq(upc_unmap(c, (void *)xp, xsize), 0);
	upc_cache_destroy(c);
	held_fini(&h);
	close(xfd);
	upcd_stop();
}

Test(shared, a_truncation_stuck_on_the_files_inode_lock_stalls_no_read_of_it, .timeout = 60)
{
	held_store_change(HELD_TRUNCATE);
}

Test(shared, a_hole_punch_stuck_on_the_files_inode_lock_stalls_no_read_of_it, .timeout = 60)
{
	held_store_change(HELD_PUNCH);
}


/*
 * A write past end of file grew the store's file first, which the kernel
 * does under the file's inode lock: the daemon waited for a held one
 * holding the file's lock, and every read and fault of the file, in every
 * client, waited with it (upcd(8), BUGS, until fileio.c's grow_check and
 * store_grow).  Now the write waits alone, and another client reads the
 * file meanwhile (end of file where the write is to go, as the kernel's
 * readers find).  Then the data goes into the cache with the cache's size,
 * and the store's file grows after: UPC_DEBUG=grow-pause holds the daemon
 * 1.5 s between the two.  Meanwhile the store is short, and a page between
 * its end and the data is a hole, zeros (f->store_behind), not a shrink of
 * the file behind the cache's back, which would have lost the data (the
 * cache's size cut back under it, write-back leaving it out).
 */
Test(shared, a_write_past_end_of_file_stuck_on_the_files_inode_lock_stalls_no_read_of_it, .timeout = 60)
{
	const size_t xsize = 64 * PAGE, end = HELD_APPEND_AT + 2 * PAGE;
	const size_t gap = xsize + PAGE + 10;	/* past the held write's page, before the data */
	struct held h = { 0 };
	struct held_call hw = { .op = HELD_APPEND };
	struct reader hr = { .size = 16 * PAGE };
	unsigned char *data = malloc(2 * PAGE), buf[100];
	volatile unsigned char *xp, *rp;
	char xpath[64];
	int xfd = tmpfile_pattern(xsize, NULL), memfd;
	struct upc_cache *c, *r;
	uint64_t bad = 0;
	struct stat sb;
	ssize_t n = 0;

	cr_assert_not_null(data);
	for (size_t i = 0; i < 2 * PAGE; i++)
		data[i] = (unsigned char)('A' + i % 23);
	snprintf(xpath, sizeof(xpath), "/proc/self/fd/%d", xfd);	/* no name: as in the cases above */
	setenv("UPC_DEBUG", "grow-pause", 1);
	held_start(&h);
	unsetenv("UPC_DEBUG");
	c = shared_cache();
	r = shared_cache();
	cr_assert_eq(upc_map(r, xfd, 0, end, PROT_READ, 0, (void **)&rp), 0);
	memfd = held_file(&h, c, xpath, xfd, xsize, &xp);

	hw.c = c;
	hw.fd = xfd;
	hw.p = data;
	held_call_start(&hw);
	sleep(1);
	cr_assert_eq(atomic_load(&hw.ret), 1, "the write past end of file did not wait for the file's inode lock");
	hr.fd = xfd;
	reader_passes(&hr, "a write past end of file stuck on its inode lock");
	cr_assert_eq(upc_pread(r, xfd, buf, sizeof(buf), HELD_APPEND_AT), 0, "a read where the write goes");
	cr_assert_eq(atomic_load(&hw.ret), 1, "the write returned while the lock was held");

	/* Let go: the data goes in, and the daemon stops 1.5 s before the store's file grows. */
	held_let_go(&h);
	h.hw.memfd = memfd;
	for (int i = 0; i < 100 && (n = upc_pread(r, xfd, buf, sizeof(buf), HELD_APPEND_AT)) == 0; i++)
		usleep(10000);
	cr_assert_eq(n, (ssize_t)sizeof(buf), "the data: %zd", n);
	cr_assert_eq(memcmp(buf, data, sizeof(buf)), 0);
	/* The page between the store's end and the data: a hole (by a fault, then a read). */
	cr_assert_eq(rp[gap], 0);
	cr_assert_eq(upc_pread(r, xfd, buf, sizeof(buf), (off_t)gap), (ssize_t)sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		bad += buf[i] != 0;
	cr_assert_eq(rp[HELD_APPEND_AT + PAGE], data[PAGE]);
	cr_assert_eq(fstat(xfd, &sb), 0);
	cr_assert_lt((size_t)sb.st_size, end, "the test's premise: the store's file grew before the reads");
	cr_assert_eq(atomic_load(&hw.ret), 1, "the test's premise: the write returned before the reads");
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes of the hole read wrong", bad);

	cr_assert_eq(pthread_join(hw.t, NULL), 0);
	cr_assert_eq(atomic_load(&hw.ret), (long)(2 * PAGE), "the write: %ld", atomic_load(&hw.ret));
	cr_assert_eq(fstat(xfd, &sb), 0);
	cr_assert_eq((size_t)sb.st_size, end, "the store's file after the write: %lld", (long long)sb.st_size);
	/* Another client's mapping: the old bytes, the held write's zeros, the gap's, the data; and the file. */
	for (size_t i = 0; i < end; i += 97)
		bad += rp[i] != (i < xsize ? pat(i) : i < HELD_APPEND_AT ? 0 : data[i - HELD_APPEND_AT]);
	cr_assert_eq(bad, 0, "%" PRIu64 " bytes wrong after the write", bad);
	cr_assert_eq(upc_fsync(c, xfd), 0);
	cr_assert_eq(pread(xfd, buf, sizeof(buf), HELD_APPEND_AT + PAGE), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, data + PAGE, sizeof(buf)), 0);
	cr_assert_eq(upc_unmap(r, (void *)rp, end), 0);
	cr_assert_eq(upc_unmap(c, (void *)xp, xsize), 0);
	upc_cache_destroy(r);
	upc_cache_destroy(c);
	held_fini(&h);
	free(data);
	close(xfd);
	upcd_stop();
}

/*
 * A client of another user, that writes one byte of a file through upcd
 * when told (writer_as_run), and exits without a sync: what it wrote is a
 * dead client's, which the daemon writes back.  Forked before the test's
 * own cache has threads (writer_as_start), so that the child may call the
 * library; it drops to @uid when told.
 */
struct writer_as {
	pid_t pid;
	int go, done;
};

static void writer_as_start(struct writer_as *w, uid_t uid, const char *path, off_t off, unsigned char byte)
{
	int go[2], done[2];

	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(done), 0);
	w->pid = fork();
	cr_assert_geq(w->pid, 0);
	if (w->pid == 0) {
		struct upc_cache *c = NULL;
		long r = -EIO;
		char x;
		int fd;

		close(go[1]);
		close(done[0]);
		if (read(go[0], &x, 1) == 1 && become_uid(uid) == 0) {
			UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);

			prctl(PR_SET_DUMPABLE, 1);	/* its pagemap its own (run_as_nobody) */
			fd = open(path, O_RDWR | O_CLOEXEC);
			r = fd < 0 ? -errno : upc_cache_create(&o, &c);
			if (r == 0)
				r = upc_pwrite(c, fd, &byte, 1, off);
		}
		_exit(write(done[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
	}
	close(go[0]);
	close(done[1]);
	w->go = go[1];
	w->done = done[0];
}

/* Its upc_pwrite's result; the child is gone after. */
static long writer_as_run(struct writer_as *w)
{
	long r = -EPIPE;
	int status;

	cr_assert_eq(write(w->go, "g", 1), 1);
	if (read(w->done, &r, sizeof(r)) != (ssize_t)sizeof(r))
		r = -EPIPE;
	cr_assert_eq(waitpid(w->pid, &status, 0), w->pid);
	close(w->go);
	close(w->done);
	return r;
}

/*
 * The background writer gives each visited file's write I/O to a thread
 * of its own and waits for it a second (wbpark.c, wb_io_offload); at most
 * 256 I/Os so, and 16 for the files one user writes.  Past them it made
 * the I/O itself, and the next file whose inode lock a client held stopped
 * it there for good, and every other file's write-back with it (upcd(8),
 * BUGS, until writeback.c passed every file by then); and then one user
 * holding 64 files' locks left every user's dirty pages unwritten (until
 * the bound a user).  UPC_DEBUG=wb-io-few makes the bounds 3 and 2.  Held
 * files X0 and X1 are written by root, X2 by another user: three I/Os
 * wait in their threads, and the writer passes every file by, R (written
 * by root) and W (by a third user) alike.  X2 let go: W is written, R
 * still passed by (root's two threads wait).  X0 and X1 let go: R is
 * written.  Who owns a file does not count (review of 67c4692): all of
 * these are root's.
 */
#define HELD_FILES	3
#define HELD_USER2	NOBODY
#define HELD_USER3	(NOBODY - 1)

/* Is the byte at @off of @fd still not @byte after @ms? */
static bool held_stays_off_file(int fd, off_t off, unsigned char byte, int ms)
{
	return !held_byte_seen(fd, off, byte, ms);
}

Test(shared, a_writer_passes_by_the_files_whose_users_io_threads_or_all_wait, .timeout = 120)
{
	const size_t xsize = 16 * PAGE;
	struct held h[HELD_FILES] = { 0 };
	struct writer_as wx2, ww;
	volatile unsigned char *xp[HELD_FILES], *wp, *rp;
	char xpath[HELD_FILES][64], wpath[64], x2path[64];
	int xfd[HELD_FILES], wfd = tmpfile_pattern(4 * PAGE, wpath), rfd = tmpfile_pattern(4 * PAGE, NULL);
	int memfd[HELD_FILES];
	struct upc_cache *c;

	if (geteuid() != 0)
		cr_skip_test("needs root, to write as other users");
	xfd[2] = tmpfile_pattern(xsize, x2path);
	cr_assert_eq(fchmod(xfd[2], 0666), 0);
	cr_assert_eq(fchmod(wfd, 0666), 0);
	setenv("UPC_DEBUG", "wb-io-few", 1);
	held_start(&h[0]);
	unsetenv("UPC_DEBUG");
	writer_as_start(&wx2, HELD_USER2, x2path, 3, 'y');
	writer_as_start(&ww, HELD_USER3, wpath, PAGE + 3, 'w');
	c = shared_cache();
	cr_assert_eq(upc_map(c, wfd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&wp), 0);
	cr_assert_eq(upc_map(c, rfd, 0, 4 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&rp), 0);
	cr_assert_eq(wp[PAGE], pat(PAGE));
	cr_assert_eq(rp[PAGE], pat(PAGE));
	for (int i = 0; i < HELD_FILES; i++) {
		if (i < 2)
			xfd[i] = tmpfile_pattern(xsize, NULL);
		snprintf(xpath[i], sizeof(xpath[i]), "/proc/self/fd/%d", xfd[i]);	/* no name: as above */
		if (i)
			held_prepare(&h[i]);
		memfd[i] = held_file(&h[i], c, xpath[i], xfd[i], xsize, &xp[i]);
		if (i < 2)
			xp[i][3] = 'x';
		else	/* by the other user, after root mapped it writable: its write-back is that user's */
			cr_assert_eq(writer_as_run(&wx2), 1);
		cr_assert_eq(upc_msync(c, (void *)xp[i], PAGE, UPC_MS_ASYNC), 0);
	}
	/* Three I/Os wait in their threads (their pages under write-back): all of them. */
	int stuck = 0;

	for (int t = 0; t < 1000 && stuck < HELD_FILES; t++) {
		usleep(10000);
		stuck = 0;
		for (int i = 0; i < HELD_FILES; i++)
			stuck += !!(pt_flags(h[i].statefd, 0) & PG_WRITEBACK);
	}
	cr_assert_eq(stuck, HELD_FILES, "the writer's I/Os of the held files did not all wait: X0 %d, X1 %d, X2 %d",
		     !!(pt_flags(h[0].statefd, 0) & PG_WRITEBACK), !!(pt_flags(h[1].statefd, 0) & PG_WRITEBACK),
		     !!(pt_flags(h[2].statefd, 0) & PG_WRITEBACK));

	/* R and W written meanwhile: passed by, though W's user has no thread: none is left. */
	rp[PAGE + 3] = 'r';
	cr_assert_eq(writer_as_run(&ww), 1);
	cr_assert_eq(upc_msync(c, (void *)rp, 4 * PAGE, UPC_MS_ASYNC), 0);
	cr_assert_eq(upc_msync(c, (void *)wp, 4 * PAGE, UPC_MS_ASYNC), 0);
	cr_assert(held_stays_off_file(wfd, PAGE + 3, 'w', 2500),
		  "the writer made W's I/O with every I/O thread taken (itself, or in a thread past the bound)");
	cr_assert(held_stays_off_file(rfd, PAGE + 3, 'r', 0), "R written with every I/O thread taken");

	/* X2 (the other user's) let go: a thread is free, and W's user may have it; R's may not. */
	held_let_go(&h[2]);
	h[2].hw.memfd = memfd[2];
	cr_assert(held_reaches_file(wfd, PAGE + 3, 'w'), "W never written once a thread was free");
	cr_assert(held_stays_off_file(rfd, PAGE + 3, 'r', 2500),
		  "R written while both of its user's I/O threads wait");
	for (int i = 0; i < 2; i++)
		cr_assert(pt_flags(h[i].statefd, 0) & PG_WRITEBACK, "X%d's I/O no longer waits", i);

	/* X0 and X1 let go: R is written, and theirs. */
	for (int i = 0; i < 2; i++) {
		held_let_go(&h[i]);
		h[i].hw.memfd = memfd[i];
	}
	cr_assert(held_reaches_file(rfd, PAGE + 3, 'r'), "R never written once its user's threads were free");
	for (int i = 0; i < HELD_FILES; i++) {
		unsigned char want = i < 2 ? 'x' : 'y';

		cr_assert_eq(upc_msync(c, (void *)xp[i], xsize, UPC_MS_SYNC), 0);
		cr_assert(held_reaches_file(xfd[i], 3, want), "X%d's page never reached its file", i);
		cr_assert_eq(upc_unmap(c, (void *)xp[i], xsize), 0);
	}
	cr_assert_eq(upc_unmap(c, (void *)wp, 4 * PAGE), 0);
	cr_assert_eq(upc_unmap(c, (void *)rp, 4 * PAGE), 0);
	upc_cache_destroy(c);
	for (int i = 0; i < HELD_FILES; i++) {
		held_fini(&h[i]);
		close(xfd[i]);
	}
	close(wfd);
	close(rfd);
	upcd_stop();
}
