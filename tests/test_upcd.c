/* SPDX-License-Identifier: MIT */
/*
 * upcd started the ways it is started: by systemd (socket activation and
 * readiness, done here by hand: no systemd needed) and on its own socket;
 * then asked for its status (UPC_MSG_STATUS, which needs no hello) and
 * stopped with SIGTERM, the unit's KillSignal.
 *
 * The systemd way, as sd_listen_fds(3) and sd_notify(3) define it: the
 * listening socket is descriptor 3, LISTEN_FDS=1, LISTEN_PID the daemon's
 * own pid (so the test forks, sets it in the child and execs: exec keeps
 * the pid), NOTIFY_SOCKET a datagram socket the test reads READY=1 and
 * STOPPING=1 from, with the sender's credentials, which must be the
 * daemon's (NotifyAccess=main).
 *
 * The daemon is $UPC_TEST_BUILDDIR/daemon/upcd.
 */
#include "helpers.h"
#include "proto.h"

#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>

static struct {
	char dir[256];		/* the test's temporary directory */
	pid_t pid;		/* upcd, while it runs */
	pid_t last;		/* upcd, after stop_upcd() too (its STOPPING=1) */
	int notify;		/* NOTIFY_SOCKET's receiving end */
} t = { .pid = -1, .notify = -1 };

static void setup(void)
{
	snprintf(t.dir, sizeof(t.dir), "%s/upc-upcd.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert(mkdtemp(t.dir), "mkdtemp: %s", strerror(errno));
}

static void teardown(void)
{
	char cmd[300];

	if (t.pid > 0) {		/* a failed case: do not leave a daemon behind */
		kill(t.pid, SIGKILL);
		waitpid(t.pid, NULL, 0);
	}
	if (t.notify >= 0)
		close(t.notify);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t.dir);
	if (t.dir[0] && system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", t.dir);
}

TestSuite(upcd, .init = setup, .fini = teardown, .timeout = 60);

static const char *upcd_path(void)
{
	static char path[512];
	const char *b = getenv("UPC_TEST_BUILDDIR");

	snprintf(path, sizeof(path), "%s/daemon/upcd", b && *b ? b : ".");
	if (access(path, X_OK) != 0)
		cr_skip_test("%s is not built", path);
	return path;
}

static void sun_of(struct sockaddr_un *sa, const char *name)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	cr_assert(snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s", t.dir, name) <
		  (int)sizeof(sa->sun_path), "path too long: %s/%s", t.dir, name);
}

/* A SOCK_SEQPACKET socket listening on @name, as upcd.socket makes it. */
static int listen_socket(const char *name)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	sun_of(&sa, name);
	cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s", strerror(errno));
	cr_assert(listen(fd, 8) == 0);
	return fd;
}

/* NOTIFY_SOCKET: a datagram socket that receives the sender's credentials. */
static void notify_socket(void)
{
	struct sockaddr_un sa;
	int one = 1;

	t.notify = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert(t.notify >= 0);
	sun_of(&sa, "notify");
	cr_assert(bind(t.notify, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s", strerror(errno));
	cr_assert(setsockopt(t.notify, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0);
}

#define EXIT_NO_NAMESPACE	125	/* the child could not build the unit's view */

/*
 * What upcd.service's ProtectSystem=strict, PrivateTmp=yes and
 * NoNewPrivileges=yes make of the daemon's world, by hand: a mount
 * namespace of its own, the root read-only (/dev, /proc and /sys, mounts of
 * their own, stay as they are, as systemd leaves them), empty /tmp and
 * /var/tmp.  In the child, before exec; EXIT_NO_NAMESPACE where that is
 * not allowed here.
 */
static void enter_unit_namespace(void)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0 ||
	    mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777") < 0 ||
	    (access("/var/tmp", F_OK) == 0 && mount("tmpfs", "/var/tmp", "tmpfs", 0, "mode=1777") < 0) ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		_exit(EXIT_NO_NAMESPACE);
}

static bool hardened;		/* start_upcd(): in enter_unit_namespace()'s view */

/*
 * Start upcd --foreground with @args.  @lsock >= 0: pass it the systemd
 * way, as descriptor 3 with LISTEN_FDS=1 and LISTEN_PID=@listen_pid (0:
 * the daemon's own pid, what systemd does).  NOTIFY_SOCKET is set when
 * notify_socket() ran.
 */
static void start_upcd(int lsock, pid_t listen_pid, const char *const *args)
{
	const char *path = upcd_path();
	const char *argv[16] = { "upcd", "--foreground" };
	unsigned int n = 2;

	for (; args && *args && n < 15; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	t.pid = fork();
	cr_assert(t.pid >= 0);
	if (t.pid == 0) {
		char buf[300];

		/* the test's process dies (a failed case): so does the daemon */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		unsetenv("UPC_SOCKET");
		unsetenv("UPC_FAULT_HANDLERS");	/* the library's knob would be the daemon's too */
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_PID");
		if (lsock >= 0) {
			if (lsock == 3)
				fcntl(3, F_SETFD, 0);
			else if (dup2(lsock, 3) != 3)
				_exit(126);
			snprintf(buf, sizeof(buf), "%d", listen_pid ? (int)listen_pid : (int)getpid());
			setenv("LISTEN_PID", buf, 1);
			setenv("LISTEN_FDS", "1", 1);
		}
		if (t.notify >= 0) {
			snprintf(buf, sizeof(buf), "%s/notify", t.dir);
			setenv("NOTIFY_SOCKET", buf, 1);
		} else {
			unsetenv("NOTIFY_SOCKET");
		}
		if (hardened) {
			/* by descriptor: the build tree may be under the /tmp it hides */
			int exe = open(path, O_PATH | O_CLOEXEC);

			enter_unit_namespace();
			fexecve(exe, (char *const *)argv, environ);
			_exit(127);
		}
		execv(path, (char *const *)argv);
		_exit(127);
	}
	t.last = t.pid;
}

/* Wait for a notification with the line @want, sent by upcd itself. */
static void expect_notify(const char *want)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	char text[512];
	struct iovec iov = { text, sizeof(text) - 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	struct pollfd pfd = { .fd = t.notify, .events = POLLIN };
	struct ucred cred = { .pid = 0 };
	struct cmsghdr *cm;
	ssize_t n;

	cr_assert(poll(&pfd, 1, 20000) == 1, "no %s from upcd within 20 s", want);
	n = recvmsg(t.notify, &msg, 0);
	cr_assert(n > 0, "recvmsg: %s", strerror(errno));
	text[n] = 0;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS)
			memcpy(&cred, CMSG_DATA(cm), sizeof(cred));
	cr_expect_eq(cred.pid, t.last, "%s came from pid %d, not upcd's %d (NotifyAccess=main)", want,
		     (int)cred.pid, (int)t.last);
	/* sd_notify's message is newline-separated assignments */
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		if (strcmp(line, want) == 0)
			return;
	cr_assert_fail("upcd notified \"%s\", not %s", text, want);
}

static int connect_to(const char *name)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	sun_of(&sa, name);
	cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", sa.sun_path,
		  strerror(errno));
	return fd;
}

/* UPC_MSG_STATUS on a new connection, with no hello: upcd's text. */
static char *status_of(const char *name)
{
	static struct upc_msg m;
	struct timeval tv = { .tv_sec = 20 };
	int fd = connect_to(name), ret;
	char *text;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(upc_msg_send(fd, UPC_MSG_STATUS, 7, NULL, 0, NULL, 0, NULL, 0), 0);
	ret = upc_msg_recv(fd, &m, UPC_FROM_DAEMON);
	cr_assert_eq(ret, 0, "no status reply: %s", strerror(-ret));
	cr_assert_eq(m.h.type, UPC_MSG_REPLY, "a %s, not a reply", upc_msg_name(m.h.type));
	cr_assert_eq(m.h.seq, 7, "the reply is to request %lu, not 7", (unsigned long)m.h.seq);
	cr_assert_eq(m.nfds, 0);
	cr_assert_eq((int64_t)m.args[0], 0, "status failed: %s", strerror((int)-(int64_t)m.args[0]));
	cr_assert(m.dlen > 0 && memchr(m.data, 0, m.dlen) == NULL, "status text of %zu bytes", m.dlen);
	text = strndup((const char *)m.data, m.dlen);
	cr_assert(text);
	close(fd);
	return text;
}

/*
 * The status of a daemon with pid @pid, asked by its only client: the
 * thread of a connection closed just before may not have gone yet, so
 * a count of more than one is asked again, for up to 5 s.  Returns the text.
 */
static char *expect_status(const char *name, pid_t pid)
{
	char *text = status_of(name), want[64];

	for (int i = 0; i < 100 && !strstr(text, "\nclients 1\n"); i++) {
		free(text);
		usleep(50000);
		text = status_of(name);
	}
	snprintf(want, sizeof(want), "pid %d\n", (int)pid);
	cr_expect(strncmp(text, want, strlen(want)) == 0, "status does not start with \"%s\":\n%s", want, text);
	/* the connection asking is a client, the only one */
	cr_expect(strstr(text, "\nclients 1\n"), "not one client in:\n%s", text);
	cr_expect(strstr(text, "\ntracking sync\n") || strstr(text, "\ntracking async\n"), "%s", text);
	return text;
}

/* SIGTERM, as systemd stops it: exit 0 within 20 s. */
static void stop_upcd(void)
{
	int st = 0;

	cr_assert_eq(kill(t.pid, SIGTERM), 0);
	for (int i = 0; i < 2000; i++) {
		pid_t p = waitpid(t.pid, &st, WNOHANG);

		cr_assert(p >= 0);
		if (p == t.pid) {
			t.pid = -1;
			cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "upcd ended with status 0x%x", st);
			return;
		}
		usleep(10000);
	}
	cr_assert_fail("upcd did not exit within 20 s of SIGTERM");
}

static bool exists(const char *name)
{
	struct sockaddr_un sa;

	sun_of(&sa, name);
	return access(sa.sun_path, F_OK) == 0;
}

Test(upcd, socket_activation)
{
	char defpath[256];
	bool def_before;
	int lsock;

	require_upcache();
	/* The path upcd would bind on its own: it must not, given a socket. */
	unsetenv("UPC_SOCKET");
	upc_socket_path(NULL, defpath, sizeof(defpath));
	def_before = access(defpath, F_OK) == 0;
	lsock = listen_socket("upcd.sock");
	notify_socket();
	start_upcd(lsock, 0, NULL);
	close(lsock);
	expect_notify("READY=1");
	free(expect_status("upcd.sock", t.pid));
	/* twice: the first connection's thread has gone, the count is back to one */
	free(expect_status("upcd.sock", t.pid));
	if (!def_before)
		cr_expect(access(defpath, F_OK) != 0, "upcd bound %s as well as the socket it was passed",
			  defpath);
	stop_upcd();
	expect_notify("STOPPING=1");
	/* systemd's socket: upcd.socket removes it (RemoveOnStop), not upcd */
	cr_expect(exists("upcd.sock"), "upcd removed the socket systemd passed it");
}

/* LISTEN_PID of another process: the descriptors are not upcd's (sd_listen_fds(3)). */
Test(upcd, socket_activation_other_pid)
{
	const char *args[] = { "--socket", NULL, NULL };
	char own[300];
	int lsock;

	require_upcache();
	snprintf(own, sizeof(own), "%s/own.sock", t.dir);
	args[1] = own;
	lsock = listen_socket("passed.sock");
	notify_socket();
	start_upcd(lsock, getpid(), args);
	close(lsock);
	expect_notify("READY=1");
	free(expect_status("own.sock", t.pid));
	stop_upcd();
	expect_notify("STOPPING=1");
	cr_expect(!exists("own.sock"), "upcd left its own socket behind");
}

/* upcd --foreground with @args (a --socket of upcd.sock in the case's directory), once it serves: its status */
static char *start_upcd_status(const char *const *args)
{
	start_upcd(-1, 0, args);
	expect_notify("READY=1");
	return expect_status("upcd.sock", t.pid);
}

/* upcd --foreground --socket PATH, as upcctl's test and a shell start it. */
Test(upcd, own_socket)
{
	const char *args[] = { "--socket", NULL, NULL };
	char path[300];

	require_upcache();
	snprintf(path, sizeof(path), "%s/upcd.sock", t.dir);
	args[1] = path;
	notify_socket();
	free(start_upcd_status(args));
	stop_upcd();
	cr_expect(!exists("upcd.sock"), "upcd left its socket behind");
}

/*
 * A message that fails upc_msg_parse() gets -EPROTO and its client is
 * disconnected; the daemon goes on serving the others (proto.h).
 */
Test(upcd, bad_message_disconnects_one_client)
{
	static struct upc_msg m;
	const char *args[] = { "--socket", NULL, NULL };
	char path[300], junk[40], *text;
	int fd, ret;

	require_upcache();
	snprintf(path, sizeof(path), "%s/upcd.sock", t.dir);
	args[1] = path;
	notify_socket();
	start_upcd(-1, 0, args);
	expect_notify("READY=1");
	fd = connect_to("upcd.sock");
	memset(junk, 0x5a, sizeof(junk));
	cr_assert_eq(send(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	ret = upc_msg_recv(fd, &m, UPC_FROM_DAEMON);
	cr_assert_eq(ret, 0, "no answer to a bad message: %s", strerror(-ret));
	cr_expect_eq((int64_t)m.args[0], -EPROTO);
	ret = upc_msg_recv(fd, &m, UPC_FROM_DAEMON);
	cr_expect_eq(ret, -ECONNRESET, "the connection was not closed: %s", strerror(-ret));
	close(fd);
	text = expect_status("upcd.sock", t.pid);
	cr_expect(strstr(text, "\ndisconnected-for-errors 1\n"), "%s", text);
	free(text);
	stop_upcd();
}

/*
 * upcd as upcd.service runs it (enter_unit_namespace()), serving a client
 * of the shared cache whose file it cannot see by path (in this test's
 * directory, under a /tmp the daemon has empty): ATTACH's checks of the
 * client's pagemap and pidfd pass across the namespaces, and the pages the
 * client writes reach the file, written by the daemon through the
 * client's descriptor, on the client's (writable) mount.  This is what
 * the unit's hardening comment relies on.
 */
Test(upcd, hardened_like_the_unit)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED);
	char sock[300], path[300], *text = NULL;
	unsigned char buf[2 * PAGE];
	struct upc_cache *c;
	int lsock, fd, st, ret;
	void *p;

	require_upcache();
	snprintf(sock, sizeof(sock), "%s/upcd.sock", t.dir);
	snprintf(path, sizeof(path), "%s/data", t.dir);
	/* by socket activation: the socket's path is hidden from the daemon too */
	lsock = listen_socket("upcd.sock");
	hardened = true;
	start_upcd(lsock, 0, NULL);
	/*
	 * The child builds the namespace before it execs upcd, at once: alive
	 * after a second, it did.  No NOTIFY_SOCKET (its path would be hidden):
	 * the status request waits in the socket's backlog until upcd serves it.
	 */
	for (int i = 0; i < 10; i++) {
		if (waitpid(t.pid, &st, WNOHANG) == t.pid) {
			t.pid = -1;
			if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_NO_NAMESPACE)
				cr_skip_test("no mount namespace here (unshare, mount: needs CAP_SYS_ADMIN)");
			cr_assert_fail("upcd ended with status 0x%x before it served", st);
		}
		usleep(100000);
	}
	text = status_of("upcd.sock");
	close(lsock);
	free(text);

	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 2 * PAGE), 0);
	o.socket = sock;
	ret = upc_cache_create(&o, &c);
	cr_assert_eq(ret, 0, "upc_cache_create(UPC_CACHE_SHARED): %s", upc_strerror(ret));
	ret = upc_map(c, fd, 0, 2 * PAGE, PROT_READ | PROT_WRITE, 0, &p);
	cr_assert_eq(ret, 0, "upc_map: %s", upc_strerror(ret));
	for (size_t i = 0; i < 2 * PAGE; i++)
		((unsigned char *)p)[i] = pat(i);
	ret = upc_msync(c, p, 2 * PAGE, UPC_MS_SYNC);
	cr_assert_eq(ret, 0, "upc_msync: %s", upc_strerror(ret));
	cr_assert_eq(pread(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], pat(i), "byte %zu of the file is %u, not %u", i, buf[i], pat(i));
	cr_assert_eq(upc_unmap(c, p, 2 * PAGE), 0);
	cr_assert_eq(upc_cache_destroy(c), 0);
	close(fd);
	stop_upcd();
}

/* Exited: no such process, or a zombie its new parent (not us) has not reaped yet. */
static bool pid_gone(pid_t pid)
{
	char path[64], buf[256], *rp;
	FILE *f;
	bool gone;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	gone = !fgets(buf, sizeof(buf), f) || !(rp = strrchr(buf, ')')) || rp[1] != ' ' || rp[2] == 'Z';
	fclose(f);
	return gone;
}

/*
 * Without --foreground: the parent exits 0 once the daemon serves, and the
 * daemon, in the background, serves maps (daemon(3) after the cache was
 * made forked a daemon without the engine's threads, and every upc_map
 * failed with EFBIG: the forked child's staging faults went unserved).
 */
Test(upcd, in_the_background_it_serves_maps)
{
	char path[300], fpath[64], *text;
	const char *bin = upcd_path();
	int fd = tmpfile_pattern(64 * PAGE, fpath), st;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED, .socket = path);
	struct upc_cache *c = NULL;
	volatile unsigned char *p;
	unsigned char b;
	long pid = 0;
	pid_t starter;

	require_upcache();
	snprintf(path, sizeof(path), "%s/upcd.sock", t.dir);
	starter = fork();
	cr_assert_geq(starter, 0);
	if (starter == 0) {
		execl(bin, "upcd", "--socket", path, (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(waitpid(starter, &st, 0), starter);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "upcd in the background: status %#x", st);
	text = status_of("upcd.sock");
	cr_assert_eq(sscanf(text, "pid %ld\n", &pid), 1, "%s", text);
	free(text);
	cr_assert_neq(pid, starter, "the daemon is not in the background");

	cr_assert_eq(upc_cache_create(&o, &c), 0);
	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	cr_assert_eq(p[17 * PAGE + 3], pat(17 * PAGE + 3));
	p[40 * PAGE] = 0x5a;
	cr_assert_eq(upc_msync(c, (void *)p, 64 * PAGE, UPC_MS_SYNC), 0);
	cr_assert_eq(pread(fd, &b, 1, 40 * PAGE), 1);
	cr_assert_eq(b, 0x5a);
	cr_assert_eq(upc_cache_destroy(c), 0);

	cr_assert_eq(kill((pid_t)pid, SIGTERM), 0);
	for (int i = 0; i < 2000 && !pid_gone((pid_t)pid); i++)
		usleep(10000);
	cr_assert(pid_gone((pid_t)pid), "upcd did not exit within 20 s of SIGTERM");
	cr_expect(!exists("upcd.sock"), "upcd left its socket behind");
	close(fd);
	unlink(fpath);
}

/*
 * --keeper-socket: the keeper (daemon/keeper.c) listens where it says,
 * and not beside the socket; "none" starts none.  By default it is the
 * socket's path with ".keeper" (own_socket's daemon leaves none behind).
 */
Test(upcd, keeper_socket_option)
{
	const char *args[] = { "--socket", NULL, "--keeper-socket", NULL, NULL };
	char path[300], kpath[300];

	require_upcache();
	snprintf(path, sizeof(path), "%s/upcd.sock", t.dir);
	snprintf(kpath, sizeof(kpath), "%s/k.sock", t.dir);
	args[1] = path;
	args[3] = kpath;
	notify_socket();
	start_upcd(-1, 0, args);
	expect_notify("READY=1");
	cr_assert(exists("k.sock"), "no keeper socket where --keeper-socket said");
	cr_assert(!exists("upcd.sock.keeper"), "a keeper socket beside the daemon's too");
	close(connect_to("k.sock"));
	stop_upcd();
	for (int i = 0; i < 200 && exists("k.sock"); i++)
		usleep(10000);
	cr_expect(!exists("k.sock"), "the keeper outlived a clean stop");
	expect_notify("STOPPING=1");

	args[3] = "none";
	start_upcd(-1, 0, args);
	expect_notify("READY=1");
	free(expect_status("upcd.sock", t.pid));
	cr_assert(!exists("k.sock") && !exists("upcd.sock.keeper") && !exists("none"),
		  "a keeper with --keeper-socket none");
	stop_upcd();
}

/*
 * --fault-handlers: "auto" (the default) measures both placements of a
 * client's fault handlers at start and says what it measured and chose,
 * one unpinned handler unless it cost over twice as much as one a CPU
 * (daemon/placement.c, PLACE_MARGIN), or why it measured nothing; "one"
 * and "per-cpu" are taken as told; anything else is refused before the
 * daemon serves (exit status 2).
 */
Test(upcd, fault_handlers_option)
{
	const char *args[] = { "--socket", NULL, NULL, NULL };
	char path[300], *text, *line;
	double one_us, per_cpu_us;
	int st;

	require_upcache();
	snprintf(path, sizeof(path), "%s/upcd.sock", t.dir);
	args[1] = path;
	notify_socket();
	text = start_upcd_status(args);
	line = strstr(text, "\nfault-handlers ");
	cr_assert(line, "no fault-handlers line in the status:\n%s", text);
	line++;
	line[strcspn(line, "\n")] = '\0';
	if (sscanf(line, "fault-handlers %*s (auto: a fault and a first write %lf us with one unpinned handler, "
		   "%lf us with one a CPU)", &one_us, &per_cpu_us) == 2) {
		cr_expect(one_us > 0 && per_cpu_us > 0, "%s", line);
		/* one unless it cost over twice as much (placement.c), to the 0.1 us printed */
		if (one_us < 2 * per_cpu_us - 0.2)
			cr_expect(!strncmp(line, "fault-handlers one (", 20), "%s", line);
		else if (one_us > 2 * per_cpu_us + 0.2)
			cr_expect(!strncmp(line, "fault-handlers per-cpu (", 24), "%s", line);
	} else {
		cpu_set_t set;

		/* measured wherever there are two CPUs (any user has a userfaultfd: UFFD_USER_MODE_ONLY) */
		cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
		cr_expect(CPU_COUNT(&set) < 2, "upcd measured nothing: %s", line);
		cr_expect(!strncmp(line, "fault-handlers one (auto: ", 26), "%s", line);
	}
	free(text);
	stop_upcd();
	expect_notify("STOPPING=1");

	args[2] = "--fault-handlers=one";
	text = start_upcd_status(args);
	cr_expect(strstr(text, "\nfault-handlers one (--fault-handlers=one)\n"), "%s", text);
	free(text);
	stop_upcd();
	expect_notify("STOPPING=1");

	/* a probe that fails: the embedded cache's placement, and why */
	args[2] = NULL;
	setenv("UPC_DEBUG", "probe-fail", 1);
	text = start_upcd_status(args);
	unsetenv("UPC_DEBUG");
	cr_expect(strstr(text, "\nfault-handlers per-cpu (auto: no userfaultfd for the probe)\n") ||
		  strstr(text, "\nfault-handlers one (auto: one CPU: one handler a CPU is one handler)\n"), "%s",
		  text);
	free(text);
	stop_upcd();
	expect_notify("STOPPING=1");

	args[2] = "--fault-handlers=sideways";
	start_upcd(-1, 0, args);
	cr_assert_eq(waitpid(t.pid, &st, 0), t.pid);
	t.pid = -1;
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2, "upcd --fault-handlers=sideways: status %#x", st);
	cr_expect(!exists("upcd.sock"), "a refused option left a socket");
}
