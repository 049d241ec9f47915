/* SPDX-License-Identifier: MIT */
/*
 * upcd's administrator and its per-client limits (upcd(8), ADMINISTRATION
 * and LIMITS): who may ask for other users' processes (CLIENTS), write
 * everything back (SYNC) or drop the whole cache (DROP), and what one
 * client may take from the others (pinned pages, connections per user).
 * Each test starts its own daemon on a socket of its own, as root; the
 * unprivileged side runs as uid nobody (run_as_nobody()) and speaks the
 * protocol by hand, with a user-mode-only userfaultfd (what nobody may
 * open where vm.unprivileged_userfaultfd is 0).
 */
#include "helpers.h"
#include "proto.h"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

static char sock_path[108];
static pid_t upcd_pid;
static uid_t upcd_uid;		/* the next upcd_start()'s user (0: root) */

static void upcd_start(const char *a1, const char *a2)
{
	const char *bd = getenv("UPC_TEST_BUILDDIR");
	char dir[] = "/tmp/upcd-admin.XXXXXX", bin[512];

	require_upcache();
	cr_assert(mkdtemp(dir));
	cr_assert_eq(chmod(dir, 0711), 0);	/* the socket's own mode (0666) decides who connects */
	if (upcd_uid)
		cr_assert_eq(chown(dir, upcd_uid, upcd_uid), 0);
	snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
	snprintf(bin, sizeof(bin), "%s/daemon/upcd", bd ? bd : ".");
	upcd_pid = fork();
	cr_assert_geq(upcd_pid, 0);
	if (upcd_pid == 0) {
		if (upcd_uid && become_uid(upcd_uid) < 0) {
			fprintf(stderr, "cannot drop to uid %u: %s\n", (unsigned int)upcd_uid, strerror(errno));
			_exit(126);
		}
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(bin, "upcd", "--foreground", "--socket", sock_path, "--mode", "0666", "--verbose", a1, a2,
		      (char *)NULL);
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

/* One request, its reply's result; the daemon's calls are answered on the way, as client.c does. */
static long raw_req(int s, uint16_t type, const uint64_t *args, unsigned int argc, const int *fds,
		    unsigned int nfds, struct upc_msg *m)
{
	int ret = upc_msg_send(s, type, 77, args, argc, NULL, 0, fds, nfds);

	if (ret < 0)
		return ret;
	for (;;) {
		int64_t r;

		ret = upc_msg_recv(s, m, UPC_FROM_DAEMON);
		if (ret < 0)
			return ret;
		if (m->h.type != UPC_MSG_CALL)
			break;
		switch (m->args[0]) {
		case UPC_CALL_MUNMAP:
			r = munmap((void *)(uintptr_t)m->args[1], m->args[2]) < 0 ? -errno : 0;
			break;
		case UPC_CALL_MPROTECT:
			r = mprotect((void *)(uintptr_t)m->args[1], m->args[2], (int)m->args[3]) < 0 ? -errno : 0;
			break;
		case UPC_CALL_MADVISE:
			r = madvise((void *)(uintptr_t)m->args[1], m->args[2], (int)m->args[3]) < 0 ? -errno : 0;
			break;
		default:
			r = -EINVAL;
		}
		upc_msg_send(s, UPC_MSG_CALL_DONE, m->h.seq, (uint64_t *)&r, 1, NULL, 0, NULL, 0);
	}
	return m->h.type == UPC_MSG_REPLY ? (long)(int64_t)m->args[0] : -EBADMSG;
}

static long raw_hello(int s, struct upc_msg *m)
{
	uint64_t hello[3] = { UPC_PROTO_VERSION, UPC_CACHE_SHARED, 0 };

	return raw_req(s, UPC_MSG_HELLO, hello, 3, NULL, 0, m);
}

/* hello and attach, by hand; -ENOSYS where this user has no userfaultfd (the caller skips). */
static int raw_attach(int s, struct upc_msg *m)
{
	int fds[3];
	long ret = raw_hello(s, m);

	if (ret < 0)
		return (int)ret;
	fds[0] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
	if (fds[0] < 0)
		return -ENOSYS;
	fds[1] = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	fds[2] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fds[1] < 0 || fds[2] < 0)
		return -errno;
	{
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

/* The daemon's counters, asked on a connection of its own (STATS needs no attach). */
static struct upc_stats daemon_stats(void)
{
	struct upc_msg *m = malloc(sizeof(*m));
	struct upc_stats st = { 0 };
	int s = raw_connect();

	cr_assert_geq(s, 0);
	cr_assert_eq(raw_req(s, UPC_MSG_STATS, NULL, 0, NULL, 0, m), 0);
	cr_assert_eq(m->dlen, sizeof(st));
	memcpy(&st, m->data, sizeof(st));
	close(s);
	free(m);
	return st;
}

/* ------------------------------------------------------------ who may ask what */

struct eperm_arg {
	pid_t root_client;
	uint64_t dirty, cached;
};

/*
 * As nobody, on a connection without attach: CLIENTS, SYNC, DROP (with and
 * without write-back) get -EPERM; the connection goes on (STATS works
 * after), STATUS lists no process of root's, and nothing changed.
 */
static int not_admin(void *argp)
{
	struct eperm_arg *a = argp;
	struct upc_msg *m = malloc(sizeof(*m));
	uint64_t zero = 0, wb = UPC_DROP_WRITEBACK;
	struct upc_stats st;
	char root_line[64];
	long ret;
	int s = raw_connect();

	nobody_check(s >= 0, "connect: %s", strerror(errno));
	ret = raw_req(s, UPC_MSG_CLIENTS, &zero, 1, NULL, 0, m);
	nobody_check(ret == -EPERM && m->dlen == 0, "clients: %ld, %zu bytes", ret, m->dlen);
	ret = raw_req(s, UPC_MSG_SYNC, &zero, 1, NULL, 0, m);
	nobody_check(ret == -EPERM, "sync: %ld", ret);
	ret = raw_req(s, UPC_MSG_DROP, &zero, 1, NULL, 0, m);
	nobody_check(ret == -EPERM, "drop: %ld", ret);
	ret = raw_req(s, UPC_MSG_DROP, &wb, 1, NULL, 0, m);
	nobody_check(ret == -EPERM, "drop with write-back: %ld", ret);
	ret = raw_req(s, UPC_MSG_STATUS, NULL, 0, NULL, 0, m);
	nobody_check(ret == 0, "status: %ld", ret);
	snprintf(root_line, sizeof(root_line), "client pid %d ", a->root_client);
	nobody_check(!memmem(m->data, m->dlen, root_line, strlen(root_line)), "status shows root's client to nobody");
	nobody_check(memmem(m->data, m->dlen, "uid 65534 ", 10), "status does not show nobody its own connection");
	ret = raw_req(s, UPC_MSG_STATS, NULL, 0, NULL, 0, m);
	nobody_check(ret == 0 && m->dlen == sizeof(st), "stats after the refusals: %ld", ret);
	memcpy(&st, m->data, sizeof(st));
	nobody_check(st.pages_dirty == a->dirty && st.pages_cached == a->cached,
		     "the refused requests changed the cache: dirty %lu -> %lu, cached %lu -> %lu",
		     (unsigned long)a->dirty, (unsigned long)st.pages_dirty, (unsigned long)a->cached,
		     (unsigned long)st.pages_cached);
	close(s);
	free(m);
	return 0;
}

/* Each case's socket directory goes with it (helpers.h, sock_dir_remove). */
static void sock_dir_fini(void)
{
	sock_dir_remove(sock_path);
	sock_path[0] = '\0';
}

TestSuite(upcd_admin, .fini = sock_dir_fini);

Test(upcd_admin, clients_sync_and_drop_are_the_administrators, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int fd = tmpfile_pattern(16 * PAGE, NULL), s, status;
	struct upc_cache *c;
	struct eperm_arg a;
	struct upc_stats st;
	uint64_t arg;
	char msg[512];
	unsigned char *p;
	unsigned char b;
	long ret;

	upcd_start(NULL, NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (size_t i = 0; i < 16; i++)
		p[i * PAGE] = 'x';
	st = daemon_stats();
	cr_assert_eq(st.pages_dirty, 16);
	a = (struct eperm_arg){ .root_client = getpid(), .dirty = st.pages_dirty, .cached = st.pages_cached };
	status = run_as_nobody(not_admin, &a, msg, sizeof(msg));
	nobody_report(status, msg);
	st = daemon_stats();
	cr_assert_eq(st.pages_dirty, 16, "nobody's refused requests changed the dirty pages");
	cr_assert_eq(pread(fd, &b, 1, 0), 1);
	cr_assert_eq(b, pat(0), "nobody's refused sync wrote the file");

	/* The administrator (root): CLIENTS from an index on, SYNC with a bad flag, then SYNC. */
	s = raw_connect();
	cr_assert_geq(s, 0);
	/* daemon_stats()'s connections leave on the daemon's own time */
	for (int i = 0; i < 200; i++) {
		arg = 0;
		ret = raw_req(s, UPC_MSG_CLIENTS, &arg, 1, NULL, 0, m);
		cr_assert_eq(ret, 0);
		cr_assert_eq(m->h.argc, 2);
		if (m->args[1] == 2)
			break;
		usleep(10000);
	}
	cr_assert_eq(m->args[1], 2, "clients: %lu, not this process's two connections", (unsigned long)m->args[1]);
	cr_assert_eq(m->dlen, 2 * sizeof(struct upc_client_info));
	{
		const struct upc_client_info *ci = (const void *)m->data;
		int att = ci[0].attached ? 0 : 1;

		cr_assert(ci[att].attached && !ci[!att].attached);
		cr_assert_eq(ci[att].pid, getpid());
		cr_assert_eq(ci[att].mappings, 1);
		cr_assert_eq(ci[att].map_bytes, 16 * PAGE);
		cr_assert_geq(ci[att].faults, 1);
		cr_assert_str_eq(ci[!att].comm, ci[att].comm);
	}
	arg = 1;
	cr_assert_eq(raw_req(s, UPC_MSG_CLIENTS, &arg, 1, NULL, 0, m), 0);
	cr_assert(m->args[1] == 2 && m->dlen == sizeof(struct upc_client_info), "clients from the second on");
	arg = 5;
	cr_assert_eq(raw_req(s, UPC_MSG_CLIENTS, &arg, 1, NULL, 0, m), 0);
	cr_assert(m->args[1] == 2 && m->dlen == 0, "clients past the end");
	arg = 1;
	cr_assert_eq(raw_req(s, UPC_MSG_SYNC, &arg, 1, NULL, 0, m), -EINVAL);
	cr_assert_eq(daemon_stats().pages_dirty, 16, "a refused sync wrote back");
	arg = 0;
	cr_assert_eq(raw_req(s, UPC_MSG_SYNC, &arg, 1, NULL, 0, m), 0);
	cr_assert(m->h.argc == 3 && m->args[1] == 1 && m->args[2] == 0, "sync: %u args, %lu files, %lu held",
		  m->h.argc, (unsigned long)m->args[1], (unsigned long)m->args[2]);
	st = daemon_stats();
	cr_assert_eq(st.pages_dirty + st.pages_writeback, 0);
	for (size_t i = 0; i < 16; i++) {
		cr_assert_eq(pread(fd, &b, 1, (off_t)(i * PAGE)), 1);
		cr_assert_eq(b, 'x', "page %zu not written back by sync", i);
	}
	/* DROP without attach, by the administrator: every clean page of the cache. */
	cr_assert_eq(raw_req(s, UPC_MSG_DROP, &arg, 1, NULL, 0, m), (long)st.pages_cached);
	cr_assert_eq(daemon_stats().pages_cached, 0);
	close(s);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	close(fd);
	free(m);
}

struct own_arg {
	int fd;		/* read-write: UFFDIO_REGISTER needs VM_MAYWRITE, which a read-only descriptor's mapping lacks */
};

/*
 * As nobody, attached, with 4 pages of a file of its own mapped and read:
 * its upc_drop() (DROP on an attached connection) drops those 4, no page
 * of root's file.
 */
static int drops_own(void *argp)
{
	struct own_arg *a = argp;
	struct upc_msg *m = malloc(sizeof(*m));
	uint64_t args[5] = { 0, 4 * PAGE, PROT_READ }, zero = 0;
	volatile unsigned char *p;
	unsigned long sum = 0;
	long ret;
	int s = raw_connect();

	nobody_check(s >= 0, "connect: %s", strerror(errno));
	ret = raw_attach(s, m);
	if (ret == -ENOSYS)
		nobody_skip("userfaultfd is not available to this user");
	nobody_check(ret == 0, "attach: %s", strerror((int)-ret));
	ret = raw_req(s, UPC_MSG_MAP, args, 3, &a->fd, 1, m);
	nobody_check(ret == 0 && m->nfds == 2, "map: %ld, %u descriptors", ret, m->nfds);
	p = mmap(NULL, 4 * PAGE, PROT_READ, MAP_SHARED, m->fds[0], 0);
	nobody_check(p != MAP_FAILED, "mmap: %s", strerror(errno));
	close(m->fds[0]);
	close(m->fds[1]);	/* the page table's (for a restarted daemon) */
	args[0] = m->args[1];
	args[1] = (uintptr_t)p;
	args[2] = 4 * PAGE;
	args[3] = PROT_READ;
	args[4] = 0;
	ret = raw_req(s, UPC_MSG_MAP_DONE, args, 5, NULL, 0, m);
	nobody_check(ret == 0, "map-done: %ld", ret);
	for (int i = 0; i < 4; i++)
		sum += p[i * PAGE];
	nobody_check(p[0] == pat(0) && p[3 * PAGE] == pat(3 * PAGE), "read the wrong data (%lu)", sum);
	ret = raw_req(s, UPC_MSG_DROP, &zero, 1, NULL, 0, m);
	nobody_check(ret == 4, "drop of its own file: %ld pages, not 4", ret);
	/* and the next access reads them again */
	nobody_check(p[2 * PAGE] == pat(2 * PAGE), "read after the drop");
	close(s);
	free(m);
	return 0;
}

Test(upcd_admin, a_client_that_is_not_the_administrator_drops_only_its_own_files, .timeout = 60)
{
	char path[64], msg[512];
	int fd = tmpfile_pattern(8 * PAGE, NULL), own = tmpfile_pattern(4 * PAGE, path), status;
	struct upc_cache *c;
	struct own_arg a;
	volatile unsigned char *p;
	unsigned long sum = 0;

	upcd_start(NULL, NULL);
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ, 0, (void **)&p), 0);
	for (size_t i = 0; i < 8; i++)
		sum += p[i * PAGE];
	cr_assert_eq(daemon_stats().pages_cached, 8, "(sum %lu)", sum);
	cr_assert_eq(fchmod(own, 0666), 0);	/* nobody's to write too */
	a.fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(a.fd, 0);
	status = run_as_nobody(drops_own, &a, msg, sizeof(msg));
	nobody_report(status, msg);
	/* root's 8 pages are all still in the cache (the memfd's pages, which mincore sees through the mapping) */
	{
		unsigned char vec[8];

		cr_assert_eq(mincore((void *)p, 8 * PAGE, vec), 0);
		for (int i = 0; i < 8; i++)
			cr_assert(vec[i] & 1, "nobody's drop took page %d of root's file", i);
		cr_assert_geq(daemon_stats().pages_cached, 9);
	}
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	unlink(path);
	close(a.fd);
	close(own);
	close(fd);
}

/* ------------------------------------------------------------ limits */

/*
 * A child process's own client: maps 8 pages of a file of its own (a pin
 * holds the page for every mapping of it: the parent's pins would keep
 * the child from unmapping the same file) and pins 4, its own limit; 0 or
 * the failing step.
 */
static int other_client_pins(int fd)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	struct upc_cache *c;
	void *p;

	if (upc_cache_create(&o, &c) < 0)
		return 1;
	if (upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, &p) < 0)
		return 2;
	if (upc_pin(c, p, 4 * PAGE, 0) != 0)
		return 3;
	if (upc_pin(c, (char *)p + 4 * PAGE, PAGE, 0) != -ENOMEM)
		return 4;
	if (upc_unpin(c, p, 4 * PAGE) != 0)
		return 5;
	return upc_cache_destroy(c) == 0 ? 0 : 6;
}

Test(upcd_admin, pins_past_a_clients_limit_get_enomem_and_pin_nothing, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int fd = tmpfile_pattern(8 * PAGE, NULL), fd2 = tmpfile_pattern(8 * PAGE, NULL), s, status;
	struct upc_cache *c;
	uint64_t zero = 0;
	char *p;
	pid_t child;

	upcd_start("--max-pinned-per-client", "16K");	/* 4 pages */
	c = shared_cache();
	cr_assert_eq(upc_map(c, fd, 0, 8 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(upc_pin(c, p, 4 * PAGE, 0), 0);
	cr_assert_eq(upc_pin(c, p + 4 * PAGE, PAGE, 0), -ENOMEM);
	cr_assert_eq(upc_pin(c, p + 4 * PAGE, 4 * PAGE, UPC_PIN_WRITE), -ENOMEM);
	cr_assert_eq(daemon_stats().pages_pinned, 4, "a refused pin pinned something");
	cr_assert_eq(daemon_stats().pages_dirty, 0, "a refused write pin dirtied something");
	/* the engine's own errors stay the engine's: a length of 0 is -EINVAL, not -ENOMEM */
	cr_assert_eq(upc_pin(c, p, 0, 0), -EINVAL);
	/* a page pinned twice counts twice, as the engine's pincount */
	cr_assert_eq(upc_unpin(c, p, 2 * PAGE), 0);
	cr_assert_eq(upc_pin(c, p + 2 * PAGE, PAGE, 0), 0);
	cr_assert_eq(upc_pin(c, p + 4 * PAGE, PAGE, 0), 0);
	cr_assert_eq(upc_pin(c, p + 5 * PAGE, PAGE, 0), -ENOMEM);
	/* a failed unpin (a page of the range not pinned) gives nothing back */
	cr_assert_eq(upc_unpin(c, p + 4 * PAGE, 2 * PAGE), -EINVAL);
	cr_assert_eq(upc_pin(c, p + 5 * PAGE, PAGE, 0), -ENOMEM);
	/* CLIENTS counts this client's 4 */
	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_req(s, UPC_MSG_CLIENTS, &zero, 1, NULL, 0, m), 0);
	{
		const struct upc_client_info *ci = (const void *)m->data;
		size_t n = m->dlen / sizeof(*ci), i;

		for (i = 0; i < n && !ci[i].attached; i++)
			;
		cr_assert(i < n, "no attached client listed");
		cr_assert_eq(ci[i].pinned, 4);
	}
	close(s);
	/* The limit is per client: another process pins its own 4. */
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0)
		_exit(other_client_pins(fd2));
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the other client: status %#x", status);
	cr_assert_eq(upc_unpin(c, p + 2 * PAGE, 3 * PAGE), 0);
	cr_assert_eq(upc_pin(c, p + 4 * PAGE, 3 * PAGE, 0), 0, "unpinned pages were not given back");
	cr_assert_eq(upc_unpin(c, p + 4 * PAGE, 3 * PAGE), 0);
	cr_assert_eq(upc_unpin(c, p + 2 * PAGE, PAGE), 0);
	cr_assert_eq(daemon_stats().pages_pinned, 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	upcd_stop();
	close(fd2);
	close(fd);
	free(m);
}

/*
 * As nobody, two clients of one user: --max-pinned-per-client bounds what
 * they pin together too (review of 417d8da: each of a user's 64
 * connections pinned its own quarter of the cache, and the user the whole
 * of it), and pages one gives back the other may pin.  Root, the
 * administrator, is not counted so (above).
 */
static int user_pins(void *argp)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	int fd = *(int *)argp, ret;
	struct upc_cache *c1, *c2;
	char *p1, *p2;

	nobody_check(upc_cache_create(&o, &c1) == 0 && upc_cache_create(&o, &c2) == 0, "upc_cache_create");
	ret = upc_map(c1, fd, 0, 8 * PAGE, PROT_READ, 0, (void **)&p1);
	if (ret == -ENOSYS || ret == -EPERM)
		nobody_skip("no userfaultfd for this user: %s", upc_strerror(ret));
	nobody_check(ret == 0, "map: %s", upc_strerror(ret));
	nobody_check(upc_map(c2, fd, 0, 8 * PAGE, PROT_READ, 0, (void **)&p2) == 0, "the second client's map");
	nobody_check(upc_pin(c1, p1, 3 * PAGE, 0) == 0, "the first client's 3 pages");
	ret = upc_pin(c2, p2 + 3 * PAGE, 2 * PAGE, 0);
	nobody_check(ret == -ENOMEM, "the second client's 2 pages, past its user's 4: %s", upc_strerror(ret));
	nobody_check(upc_pin(c2, p2 + 3 * PAGE, PAGE, 0) == 0, "the second client's fourth page");
	ret = upc_pin(c1, p1 + 4 * PAGE, PAGE, 0);
	nobody_check(ret == -ENOMEM, "a fifth page: %s", upc_strerror(ret));
	nobody_check(upc_unpin(c1, p1, 3 * PAGE) == 0, "unpin");
	nobody_check(upc_pin(c2, p2 + 4 * PAGE, 3 * PAGE, 0) == 0, "the pages the first client gave back");
	nobody_check(upc_unpin(c2, p2 + 3 * PAGE, 4 * PAGE) == 0, "the second client's unpin");
	nobody_check(upc_unmap(c1, p1, 8 * PAGE) == 0 && upc_unmap(c2, p2, 8 * PAGE) == 0, "unmap");
	nobody_check(upc_cache_destroy(c1) == 0 && upc_cache_destroy(c2) == 0, "upc_cache_destroy");
	return 0;
}

Test(upcd_admin, a_users_clients_pin_no_more_together_than_one_may, .timeout = 60)
{
	int fd = tmpfile_pattern(8 * PAGE, NULL), status;
	char msg[512];

	upcd_start("--max-pinned-per-client", "16K");	/* 4 pages */
	status = run_as_nobody(user_pins, &fd, msg, sizeof(msg));
	nobody_report(status, msg);
	cr_assert_eq(daemon_stats().pages_pinned, 0);
	upcd_stop();
	close(fd);
}

/*
 * The same for mappings: a client maps 65536 at most, and a user's clients
 * together four times as many (review of 417d8da: 64 connections of one
 * user held 4 million mappings, each costing the daemon's reclaim a look at
 * the client's page table a visit).  UPC_DEBUG=maps-few makes it 8 and 12.
 */
static int user_maps(void *argp)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = sock_path);
	int fd = *(int *)argp, ret;
	struct upc_cache *c1, *c2;
	void *p1[9], *p2[5];

	nobody_check(upc_cache_create(&o, &c1) == 0 && upc_cache_create(&o, &c2) == 0, "upc_cache_create");
	for (int i = 0; i < 8; i++) {
		ret = upc_map(c1, fd, (off_t)i * PAGE, PAGE, PROT_READ, 0, &p1[i]);
		if (ret == -ENOSYS || ret == -EPERM)
			nobody_skip("no userfaultfd for this user: %s", upc_strerror(ret));
		nobody_check(ret == 0, "the first client's map %d: %s", i, upc_strerror(ret));
	}
	ret = upc_map(c1, fd, 0, PAGE, PROT_READ, 0, &p1[8]);
	nobody_check(ret == -ENOMEM, "a client's ninth mapping: %s", upc_strerror(ret));
	for (int i = 0; i < 4; i++)
		nobody_check(upc_map(c2, fd, (off_t)i * PAGE, PAGE, PROT_READ, 0, &p2[i]) == 0,
			     "the second client's map %d", i);
	ret = upc_map(c2, fd, 4 * PAGE, PAGE, PROT_READ, 0, &p2[4]);
	nobody_check(ret == -ENOMEM, "the user's thirteenth mapping: %s", upc_strerror(ret));
	nobody_check(upc_unmap(c1, p1[7], PAGE) == 0, "unmap");
	ret = upc_map(c2, fd, 4 * PAGE, PAGE, PROT_READ, 0, &p2[4]);
	nobody_check(ret == 0, "the mapping given back: %s", upc_strerror(ret));
	nobody_check(*(volatile char *)p2[4] == (char)pat(4 * PAGE), "read through it");
	nobody_check(upc_cache_destroy(c1) == 0 && upc_cache_destroy(c2) == 0, "upc_cache_destroy");
	return 0;
}

Test(upcd_admin, a_users_clients_map_no_more_together_than_one_may, .timeout = 60)
{
	int fd = tmpfile_pattern(8 * PAGE, NULL), status;
	char msg[512];

	cr_assert_eq(setenv("UPC_DEBUG", "maps-few", 1), 0);
	upcd_start(NULL, NULL);
	cr_assert_eq(unsetenv("UPC_DEBUG"), 0);
	status = run_as_nobody(user_maps, &fd, msg, sizeof(msg));
	nobody_report(status, msg);
	upcd_stop();
	close(fd);
}

/*
 * As nobody, with --max-clients-per-user 2: two connections are served,
 * the third gets -EUSERS at its first request and a hang-up; once one of
 * the two is closed a new one is served.
 */
static int per_user(void *argp)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int s1 = raw_connect(), s2 = raw_connect(), s3, s4 = -1;
	long ret;

	(void)argp;
	nobody_check(s1 >= 0 && s2 >= 0, "connect: %s", strerror(errno));
	nobody_check(raw_hello(s1, m) == 0 && raw_hello(s2, m) == 0, "the first two are refused");
	s3 = raw_connect();
	nobody_check(s3 >= 0, "connect: %s", strerror(errno));
	ret = raw_hello(s3, m);
	nobody_check(ret == -EUSERS, "the third: %ld, not -EUSERS", ret);
	ret = upc_msg_recv(s3, m, UPC_FROM_DAEMON);
	nobody_check(ret == -ECONNRESET, "the third was not closed: %ld", ret);
	close(s3);
	close(s1);
	/* the daemon sees s1 go on its own time: try again for a while */
	for (int i = 0; i < 500; i++) {
		s4 = raw_connect();
		nobody_check(s4 >= 0, "connect: %s", strerror(errno));
		ret = raw_hello(s4, m);
		if (ret == 0)
			break;
		nobody_check(ret == -EUSERS, "a fourth: %ld", ret);
		close(s4);
		s4 = -1;
		usleep(10000);
	}
	nobody_check(s4 >= 0, "a connection closed was not given back");
	/*
	 * Connections past the limit that say nothing: each waits for its
	 * first request at most 2 s, then is closed unanswered; while 16 wait,
	 * the next is closed at once (REFUSING_MAX: a user cannot hold a
	 * thread of the daemon per connection by connecting and keeping quiet).
	 */
	{
		int q[17];
		struct pollfd pfd;

		for (int i = 0; i < 17; i++) {
			q[i] = raw_connect();
			nobody_check(q[i] >= 0, "connect %d: %s", i, strerror(errno));
		}
		pfd = (struct pollfd){ .fd = q[16], .events = POLLIN };
		/* at once: well before the 2 s the 16 before it wait */
		nobody_check(poll(&pfd, 1, 1500) == 1, "the 17th silent connection was not closed at once");
		ret = upc_msg_recv(q[16], m, UPC_FROM_DAEMON);
		nobody_check(ret == -ECONNRESET, "the 17th: %ld, not a hang-up", ret);
		for (int i = 0; i < 16; i++) {
			pfd = (struct pollfd){ .fd = q[i], .events = POLLIN };
			nobody_check(poll(&pfd, 1, 10000) == 1, "silent connection %d never closed", i);
			ret = upc_msg_recv(q[i], m, UPC_FROM_DAEMON);
			nobody_check(ret == -ECONNRESET, "silent connection %d: %ld, not a hang-up", i, ret);
			close(q[i]);
		}
		close(q[16]);
	}
	/* and those refusals are over: the limit still lets one in once one leaves */
	close(s2);
	for (int i = 0; i < 500; i++) {
		s1 = raw_connect();
		nobody_check(s1 >= 0, "connect: %s", strerror(errno));
		ret = raw_hello(s1, m);
		if (ret == 0)
			break;
		close(s1);
		s1 = -1;
		usleep(10000);
	}
	nobody_check(s1 >= 0, "no connection after the refusals");
	close(s1);
	close(s4);
	free(m);
	return 0;
}

Test(upcd_admin, connections_past_a_users_limit_get_eusers, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int s[3], status;
	char msg[512];

	upcd_start("--max-clients-per-user", "2");
	status = run_as_nobody(per_user, NULL, msg, sizeof(msg));
	nobody_report(status, msg);
	/* root, the administrator, is not counted */
	for (int i = 0; i < 3; i++) {
		s[i] = raw_connect();
		cr_assert_geq(s[i], 0);
		cr_assert_eq(raw_hello(s[i], m), 0, "root's connection %d refused", i);
	}
	for (int i = 0; i < 3; i++)
		close(s[i]);
	upcd_stop();
	free(m);
}

/*
 * Connections from a user namespace, each as another uid of it (seteuid
 * before each connect(2): SO_PEERCRED takes the euid): their HELLO results
 * in @res.  The namespace is made by @maker (root, or a user), and maps
 * its uids 0-7 to 300000-300007, as newuidmap(1) maps a user's
 * subordinate uids.  Returns 0, or 1 if this kernel or user cannot make
 * one (*@why says why).
 */
#define NS_BASE	300000

static int hello_from_userns(uid_t maker, long res[3], char *why, size_t whylen)
{
	int up[2], down[2], rpipe[2], status;
	char map[64], path[64], x;
	pid_t pid;
	int ret = 0;

	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(down), 0);
	cr_assert_eq(pipe(rpipe), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct upc_msg *m = malloc(sizeof(*m));
		long r[4] = { 0, 1, 1, 1 };	/* an errno that kept it from trying, then the three */
		int err = 0, s[3];

		if ((maker && become_uid(maker) < 0) || unshare(CLONE_NEWUSER))
			err = errno;
		if (write(up[1], &err, sizeof(err)) != (ssize_t)sizeof(err) || err || read(down[0], &x, 1) != 1)
			_exit(2);
		/* no capability in it (a kernel or LSM that restricts unprivileged namespaces): said, skipped */
		if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) {
			r[0] = errno;
			_exit(write(rpipe[1], r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 4);
		}
		for (int k = 0; k < 3; k++) {
			if (seteuid((uid_t)k + 1) < 0)
				_exit(3);
			s[k] = raw_connect();
			r[k + 1] = s[k] < 0 ? 1 : raw_hello(s[k], m);	/* 1: no connection */
			if (seteuid(0) < 0)
				_exit(3);
		}
		_exit(write(rpipe[1], r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 4);	/* the three held open */
	}
	close(up[1]);
	close(down[0]);
	close(rpipe[1]);
	{
		int err = -1;

		if (read(up[0], &err, sizeof(err)) != (ssize_t)sizeof(err) || err) {
			snprintf(why, whylen, "no user namespace made by uid %u here: %s", (unsigned int)maker,
				 err > 0 ? strerror(err) : "the child failed");
			ret = 1;
			goto out;
		}
	}
	for (int i = 0; i < 2; i++) {
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, i ? "gid_map" : "uid_map");
		snprintf(map, sizeof(map), "0 %d 8\n", NS_BASE);
		fd = open(path, O_WRONLY);
		cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
		cr_assert_eq(write(fd, map, strlen(map)), (ssize_t)strlen(map), "%s: %s", path, strerror(errno));
		close(fd);
	}
	cr_assert_eq(write(down[1], "g", 1), 1);
	{
		long r[4];

		cr_assert_eq(read(rpipe[0], r, sizeof(r)), (ssize_t)sizeof(r), "the namespace's child said nothing");
		if (r[0]) {
			snprintf(why, whylen, "no uid of its own in a user namespace made by uid %u here: %s",
				 (unsigned int)maker, strerror((int)r[0]));
			ret = 1;
		}
		memcpy(res, r + 1, 3 * sizeof(long));
	}
out:
	close(up[0]);
	close(down[1]);
	close(rpipe[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(ret || (WIFEXITED(status) && WEXITSTATUS(status) == 0), "the namespace's child: status %#x", status);
	return ret;
}

/*
 * A user may make a user namespace and map its subordinate uids into it
 * (65536 of them, /etc/subuid), and each of them was a user of its own to
 * the daemon: --max-clients-per-user 2 let 2 connections in for each.
 * They count as the user who made the namespace now (upcd.c,
 * client_account; the kernel charges them to that user too, ucounts): the
 * third is refused.  In a namespace root made (a container's), root chose
 * the uids: each counts on its own, and all three are served.
 */
Test(upcd_admin, connections_from_a_users_namespace_count_as_that_user, .timeout = 60)
{
	char why[256];
	long res[3];

	if (geteuid() != 0)
		cr_skip_test("needs root, to map uids into a namespace another user made");
	upcd_start("--max-clients-per-user", "2");
	if (hello_from_userns(NOBODY, res, why, sizeof(why)))
		cr_skip_test("%s", why);
	cr_assert_eq(res[0], 0, "the first: %ld", res[0]);
	cr_assert_eq(res[1], 0, "the second: %ld", res[1]);
	cr_assert_eq(res[2], -EUSERS, "the third connection of the user's namespace: %ld, not -EUSERS", res[2]);
	/* (the three are closed with the child: the daemon sees them go on its own time) */
	if (hello_from_userns(0, res, why, sizeof(why)))
		cr_skip_test("%s", why);
	for (int k = 0; k < 3; k++)
		cr_assert_eq(res[k], 0, "connection %d of root's namespace: %ld", k, res[k]);
	upcd_stop();
}

/*
 * A connection whose process is gone before the daemon accepted it: its
 * user namespace cannot be read, and it is refused, not counted as its
 * uid (which a process of a user's namespace could arrange, and count as a
 * user of its own: review of 762ae79).  The daemon is stopped while a
 * child of another user connects a socket of ours and exits, and is reaped.
 */
Test(upcd_admin, a_connection_whose_process_is_gone_is_refused, .timeout = 60)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct upc_msg *m = malloc(sizeof(*m));
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), status;
	long ret;
	pid_t pid;

	if (geteuid() != 0)
		cr_skip_test("needs root, to connect as another user");
	cr_assert_geq(s, 0);
	upcd_start(NULL, NULL);
	strcpy(sa.sun_path, sock_path);
	cr_assert_eq(kill(upcd_pid, SIGSTOP), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(become_uid(NOBODY) < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child did not connect: status %#x", status);
	cr_assert_eq(kill(upcd_pid, SIGCONT), 0);
	ret = raw_hello(s, m);
	cr_assert_lt(ret, 0, "a connection whose process is gone was served (%ld)", ret);
	cr_assert_neq(ret, -EUSERS);
	ret = upc_msg_recv(s, m, UPC_FROM_DAEMON);
	cr_assert_eq(ret, -ECONNRESET, "the refused connection was not closed: %ld", ret);
	close(s);
	/* and a connection of a process that is there is served */
	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_hello(s, m), 0);
	close(s);
	upcd_stop();
	free(m);
}

/* ------------------------------------------------------------ a daemon that is not root */

/* As uid @uid: HELLO's result on a connection of its own (a negative errno), or 1 if it cannot try. */
static long hello_as(uid_t uid)
{
	int pfd[2], status;
	long ret = 1;
	pid_t pid;

	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct upc_msg *m = malloc(sizeof(*m));
		long r = 1;
		int s;

		if (become_uid(uid) == 0 && m && (s = raw_connect()) >= 0)
			r = raw_hello(s, m);
		_exit(write(pfd[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
	}
	close(pfd[1]);
	if (read(pfd[0], &ret, sizeof(ret)) != (ssize_t)sizeof(ret))
		ret = 1;
	close(pfd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return ret;
}

/*
 * upcd run by a user serves that user and root, and refuses every other
 * user (-EACCES at the first request) even where the socket's mode lets
 * them connect: its memfds are its user's, whose processes may change
 * their mode, so a read-only descriptor could not be kept read-only for
 * them against another user's writes (upcd(8), SECURITY).
 */
Test(upcd_admin, a_daemon_that_is_not_root_serves_only_its_own_user, .timeout = 60)
{
	struct upc_msg *m = malloc(sizeof(*m));
	int s;

	if (geteuid() != 0)
		cr_skip_test("needs root, to run upcd as uid %d", NOBODY);
	upcd_uid = NOBODY;
	upcd_start(NULL, NULL);		/* --mode 0666: anyone may connect */
	upcd_uid = 0;
	cr_assert_eq(hello_as(NOBODY), 0, "the daemon's own user was refused");
	cr_assert_eq(hello_as(NOBODY - 1), -EACCES, "another user was not refused");
	s = raw_connect();
	cr_assert_geq(s, 0);
	cr_assert_eq(raw_hello(s, m), 0, "root was refused");
	/* a refused user does not count against the others: the daemon's user is served after */
	cr_assert_eq(hello_as(NOBODY - 1), -EACCES);
	cr_assert_eq(hello_as(NOBODY), 0);
	close(s);
	upcd_stop();
	free(m);
}
