/* SPDX-License-Identifier: MIT */
/*
 * upcctl daemon COMMAND [--socket PATH]: ask upcd (upcd(8)) over its socket.
 *
 *   status            its status, as text
 *   clients [--json]  one line per connection: pid, uid, comm, mappings,
 *                     bytes mapped, pages pinned, faults and requests served
 *   stats [--json]    the daemon-wide struct upc_stats, printed as
 *                     "upcctl stats PID" prints an embedded cache's
 *   drop [--writeback]  upc_drop(3) of the whole cache
 *   sync [--quiet]    write back every dirty page, with a progress bar on a
 *                     terminal
 *   top [-n COUNT] [-d SECONDS]
 *                     cache-wide and per-client rates, refreshed
 *
 * Each runs on a connection of its own with no hello and no attach: the
 * daemon serves these requests on any connection (upcd.c, serve_admin()),
 * so upcctl needs no userfaultfd and no cache.  clients, drop and sync are
 * the administrator's (root or the daemon's own user): anyone else gets
 * EPERM, and exit status 4.
 *
 * Exit status: 0 done; 3 no daemon (nothing listens on the socket: the
 * path is missing, or is a socket no one serves), as systemctl and LSB
 * init scripts say "not running"; 4 not permitted (LSB's "insufficient
 * privilege"); 1 any other error; 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <upcache.h>
#include "proto.h"
#include "upcctl.h"

#define ASK_TIMEOUT_S	10	/* a daemon that accepts but never answers a quick request */
#define EXIT_NODAEMON	3
#define EXIT_NOPERM	4

static const char daemon_usage[] =
	"usage: upcctl daemon status [--socket PATH]\n"
	"       upcctl daemon clients [--json] [--socket PATH]\n"
	"       upcctl daemon stats [--json] [--socket PATH]\n"
	"       upcctl daemon drop [--writeback] [--socket PATH]\n"
	"       upcctl daemon sync [--quiet] [--socket PATH]\n"
	"       upcctl daemon top [-n COUNT] [-d SECONDS] [--socket PATH]\n";

struct conn {
	int fd;
	uint64_t seq;
	bool quiet_eperm;		/* top: EPERM is an answer, not an error to print */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 64];
};

static struct upc_msg msg;		/* 64K of buffer: not on the stack */

/* Connect to upcd; 0, or an exit status after a message. */
static int dconnect(struct conn *c, const char *opt_path, bool timeout)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = ASK_TIMEOUT_S };

	c->seq = 0;
	c->quiet_eperm = false;
	upc_socket_path(opt_path, c->path, sizeof(c->path));
	if (strlen(c->path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "upcctl: socket path too long: %s\n", c->path);
		return 1;
	}
	strcpy(sa.sun_path, c->path);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		perror("upcctl: socket");
		return 1;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;

		close(c->fd);
		c->fd = -1;
		if (err == ENOENT || err == ECONNREFUSED) {
			fprintf(stderr, "upcctl: no upcd is running on %s (%s)\n", c->path, strerror(err));
			return EXIT_NODAEMON;
		}
		fprintf(stderr, "upcctl: cannot connect to upcd on %s: %s\n", c->path, strerror(err));
		return 1;
	}
	if (timeout)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return 0;
}

static int dsend(struct conn *c, uint16_t type, const uint64_t *args, unsigned int argc)
{
	int ret = upc_msg_send(c->fd, type, ++c->seq, args, argc, NULL, 0, NULL, 0);

	if (ret < 0) {
		fprintf(stderr, "upcctl: upcd on %s: %s: %s\n", c->path, upc_msg_name(type), strerror(-ret));
		return 1;
	}
	return 0;
}

/* The reply to the request just sent, into @m; 0 or an exit status after a message. */
static int drecv(struct conn *c, uint16_t type, struct upc_msg *m)
{
	int ret = upc_msg_recv(c->fd, m, UPC_FROM_DAEMON);
	int64_t result;

	if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
		fprintf(stderr, "upcctl: upcd on %s did not answer within %d s\n", c->path, ASK_TIMEOUT_S);
		return 1;
	}
	if (ret == -ECONNRESET || ret == -EPIPE) {
		fprintf(stderr, "upcctl: upcd on %s closed the connection without an answer\n", c->path);
		return 1;
	}
	if (ret < 0) {
		fprintf(stderr, "upcctl: upcd on %s: %s\n", c->path, strerror(-ret));
		return 1;
	}
	upc_msg_close_fds(m);
	if (m->h.type != UPC_MSG_REPLY || m->h.seq != c->seq) {
		fprintf(stderr, "upcctl: upcd on %s answered with a %s to request %lu, not a reply to %lu\n", c->path,
			upc_msg_name(m->h.type), (unsigned long)m->h.seq, (unsigned long)c->seq);
		return 1;
	}
	result = (int64_t)m->args[0];
	if (result == -EPERM && c->quiet_eperm)
		return EXIT_NOPERM;
	if (result < 0) {
		fprintf(stderr, "upcctl: upcd on %s: %s: %s%s\n", c->path, upc_msg_name(type),
			result >= -4095 ? strerror((int)-result) : "bad result",
			result == -EPERM ? " (root or the user upcd runs as only)" : "");
		return result == -EPERM ? EXIT_NOPERM : 1;
	}
	return 0;
}

static int ask(struct conn *c, uint16_t type, const uint64_t *args, unsigned int argc, struct upc_msg *m)
{
	int ret = dsend(c, type, args, argc);

	return ret ? ret : drecv(c, type, m);
}

static int out_flush(void)
{
	if (fflush(stdout) != 0) {
		perror("upcctl: stdout");
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------ status */

static int cmd_status(struct conn *c)
{
	int ret = ask(c, UPC_MSG_STATUS, NULL, 0, &msg);

	if (ret)
		return ret;
	printf("socket %s\n", c->path);
	if (fwrite(msg.data, 1, msg.dlen, stdout) != msg.dlen) {
		perror("upcctl: stdout");
		return 1;
	}
	return out_flush();
}

/* ------------------------------------------------------------ stats */

static int get_stats(struct conn *c, struct upc_stats *st)
{
	int ret = ask(c, UPC_MSG_STATS, NULL, 0, &msg);

	if (ret)
		return ret;
	if (msg.dlen < offsetof(struct upc_stats, mem_limit)) {
		fprintf(stderr, "upcctl: upcd on %s: stats: a reply of %zu bytes\n", c->path, msg.dlen);
		return 1;
	}
	memset(st, 0, sizeof(*st));
	memcpy(st, msg.data, msg.dlen < sizeof(*st) ? msg.dlen : sizeof(*st));
	return 0;
}

static int cmd_stats(struct conn *c, bool json)
{
	struct upc_stats st;
	int ret = get_stats(c, &st);

	if (ret)
		return ret;
	if (json) {
		printf("{\"socket\":");
		upcctl_json_str(c->path);
		printf(",\"track_mode\":\"%s\",\"mem_limit\":%" PRIu64 ",\"nr_files\":%u,\"nr_mappings\":%u"
		       ",\"nr_children\":%u",
		       st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync", (uint64_t)st.mem_limit, st.nr_files,
		       st.nr_mappings, st.nr_children);
		upcctl_stats_json_fields(&st);
		printf("}\n");
	} else {
		printf("upcd on %s, every client's mappings\n", c->path);
		upcctl_stats_text(&st, -1, "");
	}
	return out_flush();
}

/* ------------------------------------------------------------ clients */

/* Every connection, in *@out (malloc'ed); the count, or -(exit status). */
static long get_clients(struct conn *c, struct upc_client_info **out)
{
	struct upc_client_info *v = NULL;
	uint64_t n = 0;

	*out = NULL;
	for (;;) {
		uint64_t first = n, total;
		size_t got;
		struct upc_client_info *nv;
		int ret = ask(c, UPC_MSG_CLIENTS, &first, 1, &msg);

		if (ret) {
			free(v);
			return -ret;
		}
		if (msg.h.argc < 2 || msg.dlen % sizeof(*v)) {
			fprintf(stderr, "upcctl: upcd on %s: clients: a malformed reply\n", c->path);
			free(v);
			return -1;
		}
		total = msg.args[1];
		got = msg.dlen / sizeof(*v);
		nv = realloc(v, (n + got + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			return -1;
		}
		v = nv;
		memcpy(v + n, msg.data, got * sizeof(*v));
		for (size_t i = 0; i < got; i++)
			v[n + i].comm[sizeof(v->comm) - 1] = 0;
		n += got;
		/* a list that shrank meanwhile ends early: what was seen is the answer */
		if (!got || n >= total)
			break;
	}
	*out = v;
	return (long)n;
}

static int cmp_pid(const void *a, const void *b)
{
	const struct upc_client_info *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/* upc_client_info.reclaim, for people (upcctl(1), "daemon clients") */
static const char *reclaim_name(uint32_t r)
{
	static const char *const names[] = { "-", "ok", "resting", "held" };

	return r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

static int cmd_clients(struct conn *c, bool json)
{
	struct upc_client_info *v;
	long n = get_clients(c, &v);
	char b1[32];

	if (n < 0)
		return (int)-n;
	qsort(v, (size_t)n, sizeof(*v), cmp_pid);
	if (json) {
		printf("{\"socket\":");
		upcctl_json_str(c->path);
		printf(",\"clients\":[");
		for (long i = 0; i < n; i++) {
			printf("%s{\"pid\":%d,\"uid\":%u,\"comm\":", i ? "," : "", v[i].pid, v[i].uid);
			upcctl_json_str(v[i].comm);
			printf(",\"attached\":%s,\"mappings\":%" PRIu64 ",\"map_bytes\":%" PRIu64 ",\"pinned\":%" PRIu64
			       ",\"faults\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"reclaim\":\"%s\"}",
			       v[i].attached ? "true" : "false", v[i].mappings, v[i].map_bytes, v[i].pinned,
			       v[i].faults, v[i].requests, v[i].reclaim ? reclaim_name(v[i].reclaim) : "none");
		}
		printf("]}\n");
	} else {
		printf("%7s %6s %-16s %5s %8s %8s %10s %10s %s\n", "PID", "UID", "COMMAND", "MAPS", "MAPPED", "PINNED",
		       "FAULTS", "REQUESTS", "RECLAIM");
		for (long i = 0; i < n; i++) {
			char maps[24] = "-";

			/* "-": a connection with no address space (upcctl, or a client before attach) */
			if (v[i].attached)
				snprintf(maps, sizeof(maps), "%" PRIu64, v[i].mappings);
			printf("%7d %6u %-16s %5s %8s %8" PRIu64 " %10" PRIu64 " %10" PRIu64 " %s\n", v[i].pid, v[i].uid,
			       v[i].comm[0] ? v[i].comm : "?", maps,
			       v[i].attached ? upcctl_mib(v[i].map_bytes, b1, sizeof(b1)) : "-", v[i].pinned,
			       v[i].faults, v[i].requests, reclaim_name(v[i].reclaim));
		}
	}
	free(v);
	return out_flush();
}

/* ------------------------------------------------------------ drop */

static int cmd_drop(struct conn *c, bool writeback)
{
	uint64_t flags = writeback ? UPC_DROP_WRITEBACK : 0;
	int ret;

	/* with --writeback it writes everything first: as long as that takes */
	ret = ask(c, UPC_MSG_DROP, &flags, 1, &msg);
	if (ret)
		return ret;
	printf("dropped %" PRIu64 " pages\n", msg.args[0]);
	return out_flush();
}

/* ------------------------------------------------------------ sync */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bar(bool tty, uint64_t done, uint64_t total, double t0)
{
	int pct = total ? (int)(done * 100 / total) : 100, width = 40, fill = pct * width / 100;

	if (tty) {
		printf("\r[%.*s%*s] %3d%%  %" PRIu64 " of %" PRIu64 " pages  %.1f s", fill,
		       "########################################", width - fill, "", pct, done, total,
		       now_s() - t0);
	} else {
		printf("sync: %" PRIu64 " of %" PRIu64 " pages written (%d%%), %.0f s\n", done, total, pct,
		       now_s() - t0);
	}
	fflush(stdout);
}

/*
 * SYNC on one connection; on a second one, while it runs, the cache's
 * dirty and under-write-back pages every 100 ms: the pages of the first
 * count that are neither any more are written.  Pages dirtied during the
 * sync raise the total.  On a terminal a bar redrawn in place, ending at
 * 100 %; else one line a second (none for a sync done within the first
 * second); nothing with --quiet.  Then "synced N files".
 */
static int cmd_sync(struct conn *c, const char *opt_path, bool quiet)
{
	struct conn poller;
	struct upc_stats st;
	uint64_t total, zero = 0;
	bool tty = isatty(STDOUT_FILENO), drawn = false;
	double t0 = now_s(), next_line = t0 + 1;
	int ret;

	ret = dconnect(&poller, opt_path, true);
	if (ret)
		return ret;
	ret = get_stats(&poller, &st);
	if (ret)
		goto out;
	total = st.pages_dirty + st.pages_writeback;
	ret = dsend(c, UPC_MSG_SYNC, &zero, 1);
	if (ret)
		goto out;
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		uint64_t left;

		if (poll(&pfd, 1, 100) != 0)
			break;		/* the reply (or an error, that drecv reads) */
		if (quiet)
			continue;
		ret = get_stats(&poller, &st);
		if (ret)
			goto out;
		left = st.pages_dirty + st.pages_writeback;
		if (left > total)
			total = left;
		if (tty || now_s() >= next_line) {
			bar(tty, total - left, total, t0);
			drawn = true;
			next_line += 1;
		}
	}
	ret = drecv(c, UPC_MSG_SYNC, &msg);
	/* on a terminal the bar ends at 100 %, even for a sync done before it was first drawn */
	if (tty && !quiet && (drawn || !ret)) {
		if (!ret)
			bar(tty, total, total, t0);
		printf("\n");
	}
	if (ret)
		goto out;
	printf("synced %" PRIu64 " files", msg.args[1]);
	if (msg.h.argc >= 3 && msg.args[2])
		printf("; %" PRIu64 " dirty pages held back by UPC_PIN_NOWRITEBACK pins", msg.args[2]);
	printf("\n");
	ret = out_flush();
out:
	close(poller.fd);
	return ret;
}

/* ------------------------------------------------------------ top */

static double rate(uint64_t now, uint64_t was, double dt)
{
	return dt > 0 && now >= was ? (double)(now - was) / dt : 0;
}

static const struct upc_client_info *find_pid(const struct upc_client_info *v, long n, int32_t pid)
{
	for (long i = 0; i < n; i++)
		if (v[i].pid == pid)
			return &v[i];
	return NULL;
}

/*
 * Refreshed like vmstat 1 and top: the cache-wide counters and rates, then
 * one line per client, by pid, with its rates between refreshes; q quits
 * where standard input is a terminal, as in upcctl top.
 * -n stops after COUNT screens (tests); on a terminal each screen replaces
 * the last, else they follow one another.  The client lines need the
 * administrator (CLIENTS): anyone else sees the cache's lines only.
 */
static int cmd_top(struct conn *c, long count, double delay)
{
	struct upc_client_info *prev = NULL;
	struct upc_stats was = { 0 };
	long nprev = 0;
	bool tty = isatty(STDOUT_FILENO), have_was = false, keys = upcctl_tty_raw();
	double last = 0;
	int ret = 0;

	c->quiet_eperm = true;
	for (long it = 0; count < 0 || it < count; it++) {
		struct upc_client_info *v = NULL;
		struct upc_stats st;
		double t = now_s(), dt = have_was ? t - last : 0;
		char clock[16], b1[32];
		time_t wall = time(NULL);
		struct tm tm;
		long n;

		ret = get_stats(c, &st);
		if (ret)
			break;
		n = get_clients(c, &v);
		if (n == -EXIT_NOPERM)
			n = -1;		/* not the administrator: no client lines, said below */
		else if (n < 0) {
			ret = (int)-n;
			break;
		}
		localtime_r(&wall, &tm);
		strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
		if (tty)
			printf("\033[H\033[2J");
		else if (it)
			printf("\n");
		printf("upcctl daemon top - %s, upcd on %s, every %.1f s%s\n", clock, c->path, delay,
		       keys ? "; q quits" : "");
		printf("cache    %" PRIu64 " pages (%s of %s)  dirty %" PRIu64 "  writeback %" PRIu64 "  pinned %" PRIu64
		       "  files %u  mappings %u  %s tracking\n",
		       (uint64_t)st.pages_cached, upcctl_mib(st.pages_cached * 4096, b1, sizeof(b1)),
		       upcctl_mib(st.mem_limit, (char[32]){ 0 }, 32), (uint64_t)st.pages_dirty,
		       (uint64_t)st.pages_writeback, (uint64_t)st.pages_pinned, st.nr_files, st.nr_mappings,
		       st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync");
		printf("per s    faults %.0f (missing %.0f, wp %.0f, minor %.0f)  read %.0f  written %.0f  evicted %.0f"
		       "  fdatasync %.0f\n",
		       rate(st.faults_missing + st.faults_wp + st.faults_minor,
			    was.faults_missing + was.faults_wp + was.faults_minor, dt),
		       rate(st.faults_missing, was.faults_missing, dt), rate(st.faults_wp, was.faults_wp, dt),
		       rate(st.faults_minor, was.faults_minor, dt), rate(st.pages_filled, was.pages_filled, dt),
		       rate(st.pages_written, was.pages_written, dt), rate(st.pages_evicted, was.pages_evicted, dt),
		       rate(st.syncs, was.syncs, dt));
		printf("\n");
		if (n < 0) {
			printf("(clients: root or the user upcd runs as only)\n");
		} else {
			printf("%7s %6s %-16s %5s %8s %8s %10s %10s %10s\n", "PID", "UID", "COMMAND", "MAPS", "MAPPED",
			       "PINNED", "FAULTS", "FAULTS/s", "REQS/s");
			qsort(v, (size_t)n, sizeof(*v), cmp_pid);
			for (long i = 0; i < n; i++) {
				const struct upc_client_info *p = find_pid(prev, nprev, v[i].pid);
				char maps[24] = "-";

				if (v[i].attached)
					snprintf(maps, sizeof(maps), "%" PRIu64, v[i].mappings);
				printf("%7d %6u %-16s %5s %8s %8" PRIu64 " %10" PRIu64 " %10.0f %10.0f\n",
				       v[i].pid, v[i].uid, v[i].comm[0] ? v[i].comm : "?", maps,
				       v[i].attached ? upcctl_mib(v[i].map_bytes, b1, sizeof(b1)) : "-", v[i].pinned, v[i].faults,
				       p ? rate(v[i].faults, p->faults, dt) : 0, p ? rate(v[i].requests, p->requests, dt) : 0);
			}
		}
		if (out_flush()) {
			free(v);
			ret = 1;
			break;
		}
		free(prev);
		prev = v;
		nprev = n < 0 ? 0 : n;
		was = st;
		have_was = true;
		last = t;
		if (count >= 0 && it + 1 >= count)
			break;
		if (upcctl_tty_wait(delay))
			break;
	}
	free(prev);
	upcctl_tty_restore();
	return ret;
}

/* ------------------------------------------------------------ arguments */

int upcctl_daemon(int argc, char **argv)
{
	static const char *const cmds[] = { "status", "clients", "stats", "drop", "sync", "top" };
	const char *path = NULL, *cmd;
	bool json = false, writeback = false, quiet = false;
	long count = -1;
	double delay = 1.0;
	struct conn c;
	size_t k;
	int ret;

	if (argc < 1) {
		fputs(daemon_usage, stderr);
		return 2;
	}
	cmd = argv[0];
	for (k = 0; k < sizeof(cmds) / sizeof(cmds[0]) && strcmp(cmd, cmds[k]); k++)
		;
	if (k == sizeof(cmds) / sizeof(cmds[0])) {
		fputs(daemon_usage, stderr);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char *end;

		if (!strcmp(a, "--socket") && i + 1 < argc)
			path = argv[++i];
		else if (!strncmp(a, "--socket=", 9))
			path = a + 9;
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(daemon_usage, stdout);
			return 0;
		} else if (!strcmp(a, "--json") && (!strcmp(cmd, "clients") || !strcmp(cmd, "stats")))
			json = true;
		else if (!strcmp(a, "--writeback") && !strcmp(cmd, "drop"))
			writeback = true;
		else if ((!strcmp(a, "--quiet") || !strcmp(a, "-q")) && !strcmp(cmd, "sync"))
			quiet = true;
		else if (!strcmp(a, "-n") && i + 1 < argc && !strcmp(cmd, "top")) {
			count = strtol(argv[++i], &end, 10);
			if (*end || count < 1)
				goto usage;
		} else if (!strcmp(a, "-d") && i + 1 < argc && !strcmp(cmd, "top")) {
			delay = strtod(argv[++i], &end);
			if (*end || !(delay >= 0.1 && delay <= 3600))
				goto usage;
		} else
			goto usage;
	}
	/* the quick requests time out; drop --writeback and sync take as long as the writing */
	ret = dconnect(&c, path, strcmp(cmd, "sync") && !(writeback && !strcmp(cmd, "drop")));
	if (ret)
		return ret;
	switch (k) {
	case 0: ret = cmd_status(&c); break;
	case 1: ret = cmd_clients(&c, json); break;
	case 2: ret = cmd_stats(&c, json); break;
	case 3: ret = cmd_drop(&c, writeback); break;
	case 4: ret = cmd_sync(&c, path, quiet); break;
	default: ret = cmd_top(&c, count, delay); break;
	}
	close(c.fd);
	return ret;
usage:
	fputs(daemon_usage, stderr);
	return 2;
}
