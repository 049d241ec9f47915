/* SPDX-License-Identifier: MIT */
/*
 * upcd - one page cache shared by many processes (upcd(8)).
 *
 * The daemon holds an ordinary engine cache (lib/pagecache/), the page cache side of
 * the seam: files, page descriptors, write-back, reclaim, stores.  Each
 * client is an address space attached to it (lib/mm/remote.c): its faults are
 * served here through its userfaultfd, and its requests run the same
 * engine calls an embedded cache runs, on its mm.  This file is the
 * protocol's daemon end: the listening socket, a thread per client that
 * reads its requests in order, checks them (daemon/proto.c, then each
 * argument where it is used), serves them and replies; and the clean-up
 * when a client disconnects or dies.
 *
 * Nothing a client sends is trusted: a message that fails a check gets
 * -EPROTO and the client is disconnected, the daemon goes on serving the
 * others.  A client reaches only files it passed a descriptor of, with
 * that descriptor's access mode (remote_map_prepare()).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "keeper.h"
#include "placement.h"
#include "proto.h"

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define CLIENT_PENDING_MAX	16	/* maps between their two halves, per client */
#define CLIENT_MAPS_MAX		65536	/* mappings, per client */
#define USER_MAPS_MAX		(4 * CLIENT_MAPS_MAX)	/* ... and per user, its clients together */
#define CALL_TIMEOUT_MS		10000	/* a client that does not answer a call is dropped */
#define CLIENTS_PER_USER	64	/* --max-clients-per-user's default: connections of one user */
#define REFUSING_MAX		16	/* connections being refused at once; more are closed unanswered */
#define REFUSE_TIMEOUT_MS	2000	/* a refused connection's first request, waited for so long */

_Static_assert(UPC_CALL_MUNMAP == MM_CALL_MUNMAP && UPC_CALL_MPROTECT == MM_CALL_MPROTECT &&
	       UPC_CALL_MADVISE == MM_CALL_MADVISE && UPC_CALL_PLACEHOLD == MM_CALL_PLACEHOLD,
	       "call numbers differ between proto.h and the engine");

struct pending_map {
	struct upc_file *f;	/* NULL: free slot */
	uint64_t pgoff, len;
	int maxprot;
};

struct client {
	int sock, pidfd;
	struct ucred cred;		/* SO_PEERCRED at connect */
	uid_t account;			/* the user it counts as (client_account) */
	struct upc_mm *mm;		/* after attach */
	bool hello;
	bool broken;			/* a protocol error in a call: disconnect after the request */
	uint64_t seq;			/* the request being served */
	struct pending_map pend[CLIENT_PENDING_MAX];
	struct upc_msg *msg, *call_msg;
	pthread_t thread;
	struct client *next;
	uint64_t requests;
	/*
	 * Pages this client's pins hold: the pages of every PIN that succeeded
	 * minus those of every UNPIN that did, as the engine counts a page
	 * pinned twice twice (pincount).  Checked against d.max_pinned at PIN
	 * (serve()).  Written by the client's thread only, read by CLIENTS.
	 */
	uint64_t pinned;
	uint64_t map_bytes;		/* what its mappings spanned when CLIENTS last looked (d.lock) */
	bool once;			/* it numbers its requests to be applied once (UPC_MSG_ONCE) */
	int refuse;			/* a negative errno: answer the first request with it, and close */
};

static struct {
	struct upc_cache *c;
	int lsock;
	pthread_mutex_t lock;		/* @clients */
	pthread_cond_t gone;		/* a client left */
	bool socket_activated;
	struct client *clients;
	unsigned int nclients;
	uint64_t served, dropped, adopted;	/* requests; clients dropped for errors; mappings adopted */
	unsigned int refusing;		/* connections being refused (client_refuse()) */
	unsigned int max_per_user;	/* --max-clients-per-user; 0: no limit */
	uint64_t max_pinned;		/* --max-pinned-per-client, pages */
	uid_t euid;
	volatile sig_atomic_t stop;
	int stop_pipe[2];
	bool verbose;
	/*
	 * What the kernel does with the daemon's own userfaultfd, found once
	 * at start: what a client's must do too (serve_attach()).
	 */
	bool own_uffd_nowait;		/* read with RWF_NOWAIT (fault.c, uffd_reads_nowait) */
	bool own_uffd_shows_init;	/* fdinfo shows UFFD_SHOWN_INITIALIZED */
	struct placement place;		/* where clients' fault handlers run (placement.c) */
} d = { .lock = PTHREAD_MUTEX_INITIALIZER, .gone = PTHREAD_COND_INITIALIZER, .stop_pipe = { -1, -1 } };

#define logf(fmt, ...) do { if (d.verbose) fprintf(stderr, "upcd: " fmt "\n", ##__VA_ARGS__); } while (0)

/* ------------------------------------------------------------ calls into a client */

/*
 * mm_call() for a client: ask it to munmap, mprotect or madvise its own
 * address space, and wait for its answer.  Only while it waits for the
 * reply to the request this thread serves (remote.c).  A client that does
 * not answer within CALL_TIMEOUT_MS, dies, or answers with anything else
 * is broken: the call fails and the client is disconnected.
 */
static int client_call(struct upc_mm *mm, int op, uintptr_t addr, size_t len, int arg)
{
	struct client *cl = mm->call_arg;
	uint64_t args[4] = { (uint64_t)op, addr, len, (uint64_t)(int64_t)arg };
	struct pollfd pfd[2] = { { .fd = cl->sock, .events = POLLIN }, { .fd = cl->pidfd, .events = POLLIN } };
	int ret;

	if (cl->broken)
		return -EPIPE;
	/* Never blocking: a client that does not read its socket is broken (EAGAIN). */
	ret = upc_msg_send_flags(cl->sock, UPC_MSG_CALL, cl->seq, args, 4, NULL, 0, NULL, 0, MSG_DONTWAIT);
	if (ret < 0)
		goto broken;
	ret = poll(pfd, 2, CALL_TIMEOUT_MS);
	if (ret <= 0 || pfd[1].revents || !(pfd[0].revents & POLLIN)) {
		ret = ret == 0 ? -ETIMEDOUT : -EPIPE;
		goto broken;
	}
	ret = upc_msg_recv(cl->sock, cl->call_msg, UPC_FROM_CLIENT);
	if (ret < 0)
		goto broken;
	if (cl->call_msg->h.type != UPC_MSG_CALL_DONE || cl->call_msg->h.seq != cl->seq) {
		upc_msg_close_fds(cl->call_msg);
		ret = -EPROTO;
		goto broken;
	}
	ret = (int)(int64_t)cl->call_msg->args[0];
	return ret > 0 || ret < -4095 ? -EPROTO : ret;
broken:
	logf("client %d: call %d failed: %s", cl->cred.pid, op, strerror(-ret));
	cl->broken = true;
	return ret;
}

/* ------------------------------------------------------------ a client's reclaim channel */

/*
 * The daemon's end of a client's reclaim channel (struct upc_zapper,
 * zap.c: zap_elsewhere).  The reclaim thread asks, once a client a pass,
 * and so do drops and invalidations (reclaim.c, unmap_elsewhere), one
 * asker at a time (cache->zap_lock), and never a client whose zap is
 * still @pending; the client answers with the zap's seq.  A client that
 * does not answer in time (expired: zap.c), answers with anything else,
 * closes the channel or exits may zap later, or never: the channel is
 * @dead, and the zap stays counted in z.inflight for as long as the mm
 * lives (its faults map as struct upc_zapper says, and it is not asked
 * again).  One that answers, but slowly, is not asked again for
 * ZAP_QUIET_MS: it would hold up every reclaim pass.
 *
 * A wait holds up the reclaim of every file (the reclaim thread's, or a
 * drop's, which holds cache->zap_lock), and a user may open connection
 * after connection that do not answer (up to --max-clients-per-user at
 * once, any number in turn): so once one of a user's clients did not
 * answer a wait in time (slow, then, if it answers at all: it rests), or
 * broke its channel, that user's clients are waited for ZAP_SUSPECT_MS
 * only, for ZAP_QUIET_MS after the last such miss (zap_suspect): one that
 * answers later is read at a tick of the reclaim thread (zap.c,
 * zap_late_poll).
 */
#define ZAP_SLOW_MS	50	/* under a wait's 100 ms (zap.c, ZAP_PASS_MS): one just in time rests too */
#define ZAP_QUIET_MS	10000
#define ZAP_SUSPECT_MS	10	/* the wait for a client of such a user (a zap takes ~1 ms) */
#define ZAP_SUSPECTS	64	/* users remembered at once: the oldest goes */

struct zapchan {
	struct upc_zapper z;
	int fd, pidfd;
	pid_t pid;
	uid_t account;		/* the user it counts as (client_account) */
	uint64_t seq;
	uint64_t asked_at;
	_Atomic bool dead;
	_Atomic bool pending;	/* asked, its answer not read yet */
	struct upc_msg *msg;
};

static struct {
	pthread_mutex_t lock;
	struct {
		uid_t uid;
		uint64_t until;
	} u[ZAP_SUSPECTS];
} zap_suspects = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* To be waited for briefly: a client of a user another client of which let a zap go unanswered lately. */
static bool zap_suspect(uid_t uid)
{
	uint64_t now = now_ms();
	bool r = false;

	pthread_mutex_lock(&zap_suspects.lock);
	for (size_t i = 0; i < ZAP_SUSPECTS && !r; i++)
		r = zap_suspects.u[i].uid == uid && zap_suspects.u[i].until > now;
	pthread_mutex_unlock(&zap_suspects.lock);
	return r;
}

static void zap_suspect_add(uid_t uid)
{
	size_t k = 0;

	pthread_mutex_lock(&zap_suspects.lock);
	for (size_t i = 0; i < ZAP_SUSPECTS; i++) {
		if (zap_suspects.u[i].uid == uid || zap_suspects.u[i].until < zap_suspects.u[k].until)
			k = i;
		if (zap_suspects.u[i].uid == uid)
			break;
	}
	zap_suspects.u[k].uid = uid;
	zap_suspects.u[k].until = now_ms() + ZAP_QUIET_MS;
	pthread_mutex_unlock(&zap_suspects.lock);
}

/*
 * @suspect: the client broke its channel (not an exit, not a close), or
 * filled it.  A close or an exit is one too where it ends a zap asked more
 * than ZAP_SUSPECT_MS before: a client that lets each wait run nearly out,
 * then closes, would be waited for in full connection after connection.
 */
static void zapchan_dead(struct zapchan *zc, const char *why, bool suspect)
{
	if (atomic_load(&zc->pending) && now_ms() - zc->asked_at > ZAP_SUSPECT_MS)
		suspect = true;
	logf("client %d: %s: what it maps is evicted from under it from now on", zc->pid, why);
	atomic_store(&zc->dead, true);
	atomic_store(&zc->pending, false);
	atomic_store(&zc->z.quiet_until, UINT64_MAX);
	if (suspect)
		zap_suspect_add(zc->account);
}

static int client_zap_ask(struct upc_zapper *z, uint64_t dev, uint64_t ino, const uint64_t *triples, size_t n)
{
	struct zapchan *zc = (struct zapchan *)z;
	uint64_t args[2] = { dev, ino };
	int r;

	/* one zap at a time: the answer to a pending one would not match the next seq (pending first: expire) */
	if (atomic_load(&zc->pending) || atomic_load(&zc->dead) || !n || n > UPC_ZAP_MAX_RANGES)
		return -EAGAIN;
	/* never blocking: a client that does not read its channel is not waited for */
	r = upc_msg_send_flags(zc->fd, UPC_MSG_ZAP, ++zc->seq, args, 2, triples, n * UPC_ZAP_TRIPLE, NULL, 0,
			       MSG_DONTWAIT);
	if (r < 0) {
		/* full: a client that does not read it; closed: one that exited, often */
		zapchan_dead(zc, r == -EPIPE || r == -ECONNRESET ? "its reclaim channel is closed" :
				 "its reclaim channel takes no more", r != -EPIPE && r != -ECONNRESET);
		return -EAGAIN;
	}
	zc->asked_at = now_ms();
	atomic_store(&zc->pending, true);
	return 0;
}

/* The answer waiting on @zc's channel: the client's result, or -EPIPE. */
static int client_zap_answer(struct zapchan *zc)
{
	int r;

	r = upc_msg_recv(zc->fd, zc->msg, UPC_FROM_CLIENT);
	if (r == -ECONNRESET) {
		zapchan_dead(zc, "its reclaim channel is closed", false);	/* an exit, often */
		return -EPIPE;
	}
	if (r < 0)
		goto broken;
	upc_msg_close_fds(zc->msg);
	if (zc->msg->h.type != UPC_MSG_ZAP_DONE || zc->msg->h.seq != zc->seq)
		goto broken;
	atomic_store(&zc->pending, false);
	r = (int)(int64_t)zc->msg->args[0];
	/* the client's own error, never one that would read as "no answer" */
	if (r > 0 || r < -4095 || r == -ETIMEDOUT || r == -EPIPE)
		r = -EPROTO;
	/*
	 * Slow, or failing (an mlock'd mapping cannot be zapped: EINVAL): not
	 * asked again for a while, rather than at every pass.  Not for
	 * -ESTALE: a range the client unmapped since the daemon looked, which
	 * is no fault of its own (the rest was zapped).  An answer read at a
	 * look after its wait rests the client from then on (it rested from
	 * the wait's end already).  A slow one also has its user waited for
	 * briefly (above): one just in time, connection after connection,
	 * would hold up every pass.
	 */
	if (now_ms() - zc->asked_at > ZAP_SLOW_MS || (r < 0 && r != -ESTALE)) {
		logf("client %d: answered a zap in %" PRIu64 " ms or less (%d): not asked again for %u s", zc->pid,
		     now_ms() - zc->asked_at, r, ZAP_QUIET_MS / 1000);
		atomic_store(&zc->z.quiet_until, now_ms() + ZAP_QUIET_MS);
		if (r >= 0 || r == -ESTALE)
			zap_suspect_add(zc->account);
	}
	return r;
broken:
	zapchan_dead(zc, "its reclaim channel is broken", true);
	return -EPIPE;
}

/*
 * Every channel at once: one client that does not answer delays the
 * others' answers, it does not lose them; one last look at the deadline
 * reads those that came meanwhile, from the clients waited for briefly
 * too (zap_suspect: ZAP_SUSPECT_MS at most).  At most UPC_ZAP_MAX_CLIENTS
 * (the caller asks no more at once).  A client not answered is left
 * pending (1), and its user is waited for briefly from then on.
 */
static void client_zap_wait(struct upc_zapper **zs, int *rets, size_t n, unsigned int timeout_ms)
{
	struct pollfd pfd[2 * UPC_ZAP_MAX_CLIENTS];
	uint64_t until[UPC_ZAP_MAX_CLIENTS], start = now_ms();
	bool last = false;

	for (size_t i = 0; i < n; i++)
		rets[i] = 1;	/* not answered yet */
	if (n > UPC_ZAP_MAX_CLIENTS)
		return;	/* (never: the callers ask no more at once) */
	for (size_t i = 0; i < n; i++) {
		struct zapchan *zc = (struct zapchan *)zs[i];
		bool brief = timeout_ms > ZAP_SUSPECT_MS && zap_suspect(zc->account);

		until[i] = start + (brief ? ZAP_SUSPECT_MS : timeout_ms);
	}
	while (n && !last) {
		uint64_t now = now_ms(), next = now;
		int r;

		for (size_t i = 0; i < n; i++)
			if (rets[i] == 1 && until[i] > next)
				next = until[i];	/* the latest deadline of those not answered */
		last = next <= now;
		for (size_t i = 0; i < n; i++) {
			struct zapchan *zc = (struct zapchan *)zs[i];

			/* the pidfd too: a client that exits does not answer, and its PTEs are gone with it */
			pfd[2 * i] = (struct pollfd){ .fd = rets[i] == 1 ? zc->fd : -1, .events = POLLIN };
			pfd[2 * i + 1] = (struct pollfd){ .fd = rets[i] == 1 ? zc->pidfd : -1, .events = POLLIN };
		}
		r = poll(pfd, 2 * n, last ? 0 : (int)(next - now));
		if (r < 0 && errno == EINTR) {
			last = false;
			continue;
		}
		if (r < 0)
			break;
		for (size_t i = 0; r > 0 && i < n; i++) {
			struct zapchan *zc = (struct zapchan *)zs[i];

			if (rets[i] != 1 || !(pfd[2 * i].revents | pfd[2 * i + 1].revents))
				continue;
			if (pfd[2 * i].revents & POLLIN) {
				rets[i] = client_zap_answer(zc);	/* (an answer before an exit is read) */
			} else {
				zapchan_dead(zc, pfd[2 * i + 1].revents ? "it exited" : "its reclaim channel is closed",
					     false);
				rets[i] = -EPIPE;
			}
		}
	}
	/*
	 * Not answered in a wait (a look at a late zap is no wait): resting
	 * (upcctl daemon clients) until it is given up on or rests its time,
	 * and its user waited for briefly from now on.
	 */
	for (size_t i = 0; i < n; i++)
		if (rets[i] == 1 && timeout_ms) {
			atomic_store(&zs[i]->quiet_until, now_ms() + ZAP_QUIET_MS);
			zap_suspect_add(((struct zapchan *)zs[i])->account);
		}
}

/* No answer in time (zap.c): given up on, and its user waited for briefly a while (above). */
static void client_zap_expire(struct upc_zapper *z)
{
	struct zapchan *zc = (struct zapchan *)z;

	zapchan_dead(zc, "no answer to a zap in time", true);
}

static void client_zap_release(struct upc_zapper *z)
{
	struct zapchan *zc = (struct zapchan *)z;

	close(zc->fd);
	close(zc->pidfd);
	free(zc->msg);
	free(zc);
}

/*
 * UPC_MSG_RECLAIM: the client's end of its reclaim channel, which its mm
 * keeps (remote_zapper_set) until it is detached.  One per connection.
 */
static int serve_reclaim(struct client *cl, int fd)
{
	struct zapchan *zc;
	struct stat st;
	int type = 0, ret;
	socklen_t tl = sizeof(type);
	struct sockaddr_un sa;
	socklen_t sl = sizeof(sa);
	struct ucred peer;
	socklen_t pl = sizeof(peer);

	/*
	 * A Unix SEQPACKET socket whose peer is the client itself (the other
	 * end of a pair it made): not one connected to some other service,
	 * which the daemon would then talk to in the client's name.
	 */
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 || sa.sun_family != AF_UNIX ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &pl) < 0 || peer.pid != cl->cred.pid)
		return -EINVAL;
	zc = calloc(1, sizeof(*zc));
	if (!zc || !(zc->msg = malloc(sizeof(*zc->msg)))) {
		free(zc);
		return -ENOMEM;
	}
	zc->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	zc->pidfd = fcntl(cl->pidfd, F_DUPFD_CLOEXEC, 0);
	if (zc->fd < 0 || zc->pidfd < 0) {
		ret = -errno;
		if (zc->fd >= 0)
			close(zc->fd);
		free(zc->msg);
		free(zc);
		return ret;
	}
	zc->pid = cl->cred.pid;
	zc->account = cl->account;
	atomic_init(&zc->z.refs, 1);
	zc->z.ask = client_zap_ask;
	zc->z.wait = client_zap_wait;
	zc->z.expire = client_zap_expire;
	zc->z.release = client_zap_release;
	ret = remote_zapper_set(cl->mm, &zc->z);
	if (ret < 0)
		client_zap_release(&zc->z);
	return ret;
}

/* ------------------------------------------------------------ checks of what a client passes */

/* Is @fd an anonymous inode of kind @kind ("[userfaultfd]", "[pidfd]")? */
static bool fd_is_anon(int fd, const char *kind)
{
	char path[64], link[128];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = 0;
	return strncmp(link, "anon_inode:", 11) == 0 && strcmp(link + 11, kind) == 0;
}

/* A field of /proc/self/fdinfo/@fd ("Pid:", "API:"), as text; 0 or -1. */
static int fdinfo_field(int fd, const char *key, char *out, size_t outlen)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	FILE *fp;
	int ret = -1;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	fp = fopen(path, "re");
	if (!fp)
		return -1;
	while (fgets(line, sizeof(line), fp))
		if (strncmp(line, key, kl) == 0) {
			size_t n = strnlen(line + kl, outlen - 1);

			memcpy(out, line + kl, n);
			out[n] = 0;
			ret = 0;
			break;
		}
	fclose(fp);
	return ret;
}

/*
 * ATTACH's descriptors: a userfaultfd, the client's own pagemap and a
 * pidfd of the client itself (SO_PEERCRED's pid).
 */
static int check_attach(struct client *cl, const int *fds)
{
	char buf[64], want[64], link[128], path[64];
	struct stat st;
	ssize_t n;

	if (!fd_is_anon(fds[0], "[userfaultfd]") || !fd_is_anon(fds[2], "[pidfd]"))
		return -EBADF;
	if (fdinfo_field(fds[2], "Pid:", buf, sizeof(buf)) < 0 || atoi(buf) != cl->cred.pid) {
		logf("client %d: attach: a pidfd of another process", cl->cred.pid);
		return -EPERM;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[1]);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0 || fstat(fds[1], &st) < 0)
		return -EBADF;
	link[n] = 0;
	snprintf(want, sizeof(want), "/proc/%d/pagemap", cl->cred.pid);
	if (strcmp(link, want) != 0 || !S_ISREG(st.st_mode)) {
		logf("client %d: attach: %s is not its pagemap", cl->cred.pid, link);
		return -EPERM;
	}
	return 0;
}

/*
 * The kernel's internal UFFD_FEATURE_INITIALIZED, set once UFFDIO_API is
 * done: fdinfo shows it among the features since Linux 6.1.
 */
#define UFFD_SHOWN_INITIALIZED	(1ull << 31)

/* The features fdinfo shows for the userfaultfd @fd: 0, or -1. */
static int uffd_features_shown(int fd, uint64_t *feat)
{
	char api[64];
	unsigned long long ver, f;

	if (fdinfo_field(fd, "API:", api, sizeof(api)) < 0 || sscanf(api, "%llx:%llx", &ver, &f) != 2)
		return -1;
	*feat = f;
	return 0;
}

/* ------------------------------------------------------------ the user behind a client */

/*
 * The user a client counts as, for what one user may not take from the
 * others: its connections (--max-clients-per-user) and the write-back
 * I/O threads of the files it writes (wbpark.c).  Its uid, unless it runs
 * in a user namespace that a user made: any user may make one, and map
 * into it the subordinate uids /etc/subuid gives it (newuidmap(1); 65536
 * by default), and each would count as a user of its own: every per-user
 * limit 65536 times over.  The kernel charges a namespace's processes to
 * its creator as well, at every level up to its own (kernel/ucount.c,
 * inc_ucount); the daemon counts such a client as the owner of the
 * outermost namespace between it and the daemon's that root did not make
 * (NS_GET_OWNER_UID answers as seen from the daemon's namespace).  In one
 * that root made (a container's), root chose the mapping: each of its
 * uids counts on its own, unless a user made a namespace inside it.  A
 * client in no namespace below the daemon's (the daemon runs in a
 * container, the client outside it) counts as its uid as the daemon sees
 * it.
 *
 * It fails closed: a client whose namespace cannot be read is refused
 * (the negative errno), not counted as its uid, which a process of a
 * user's namespace could otherwise arrange by connecting and exiting
 * before the daemon accepts (review of 762ae79).  The namespace is the
 * peer's, through its pidfd: the socket's (SO_PEERPIDFD, 6.5), asked with
 * PIDFD_GET_USER_NAMESPACE (6.11), or else /proc/<pid>/ns/user with the
 * pidfd checked alive after it (the pid could have been reused between);
 * before 6.5, a pidfd_open(2) of the pid SO_PEERCRED gave, which a reused
 * pid fools.
 */
static int client_account(int sock, const struct ucred *cred, uid_t *acctp)
{
	uid_t acct = cred->uid, owner;
	socklen_t sl = sizeof(int);
	struct stat own, st;
	int pidfd = -1, ns = -1, ret = 0;
	char path[64];

	*acctp = cred->uid;
	if (stat("/proc/self/ns/user", &own) < 0)
		return -errno;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &sl) < 0 || pidfd < 0) {
		if (errno != ENOPROTOOPT)
			return -errno;
		pidfd = (int)syscall(SYS_pidfd_open, cred->pid, 0);
		if (pidfd < 0)
			return -errno;
	}
	ns = ioctl(pidfd, PIDFD_GET_USER_NAMESPACE, 0);
	if (ns < 0 && (errno == ENOTTY || errno == EINVAL)) {
		snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)cred->pid);
		ns = open(path, O_RDONLY | O_CLOEXEC);
		if (ns >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0) {
			ret = -errno;	/* gone: the namespace may be another process's */
			goto out;
		}
	}
	if (ns < 0) {
		ret = -errno;
		goto out;
	}
	/* 32 levels: the kernel's bound on nested user namespaces */
	for (int depth = 0;; depth++) {
		int parent;

		if (depth > 32) {
			ret = -ELOOP;
			goto out;
		}
		if (fstat(ns, &st) < 0) {
			ret = -errno;
			goto out;
		}
		if (st.st_dev == own.st_dev && st.st_ino == own.st_ino)
			break;	/* reached the daemon's namespace */
		if (ioctl(ns, NS_GET_OWNER_UID, &owner) < 0) {
			ret = -errno;
			goto out;
		}
		if (owner != 0)
			acct = owner;	/* the outermost non-root owner so far */
		parent = ioctl(ns, NS_GET_PARENT, 0);
		if (parent < 0) {
			if (errno != EPERM) {
				ret = -errno;
				goto out;
			}
			acct = cred->uid;	/* the parent is above the daemon's: not below it */
			break;
		}
		close(ns);
		ns = parent;
	}
	*acctp = acct;
out:
	if (ns >= 0)
		close(ns);
	close(pidfd);
	return ret;
}

/* ------------------------------------------------------------ the administrator */

/*
 * Who may ask what reveals other users' processes (CLIENTS) or changes the
 * whole cache (SYNC, DROP of every file), and who is exempt from the
 * per-user connection limit: root and the user the daemon runs as, by the
 * SO_PEERCRED uid of the connection (upcd(8), ADMINISTRATION).  A uid, not
 * a capability: SO_PEERCRED gives none, and a per-user daemon's
 * administrator is its user.
 */
static bool is_admin(const struct client *cl)
{
	return cl->cred.uid == 0 || cl->cred.uid == d.euid;
}

/* ------------------------------------------------------------ requests */

static int pending_take(struct client *cl, uint64_t token, struct pending_map *out)
{
	if (token >= CLIENT_PENDING_MAX || !cl->pend[token].f)
		return -EINVAL;
	*out = cl->pend[token];
	cl->pend[token].f = NULL;
	return 0;
}

static void pending_drop_all(struct client *cl)
{
	for (unsigned int i = 0; i < CLIENT_PENDING_MAX; i++)
		if (cl->pend[i].f) {
			file_put(cl->pend[i].f);
			cl->pend[i].f = NULL;
		}
}

/* A regular file, or -EINVAL (the engine's own checks follow in the call). */
static int check_file(int fd)
{
	struct stat st;

	int fl = fcntl(fd, F_GETFL);

	/* O_PATH grants no access, and the store opens the file again with the daemon's rights */
	if (fl < 0 || (fl & O_PATH) || fstat(fd, &st) < 0)
		return -EBADF;
	return S_ISREG(st.st_mode) ? 0 : -EINVAL;
}

static uint64_t client_pinned(const struct client *cl)
{
	return __atomic_load_n(&cl->pinned, __ATOMIC_RELAXED);
}

static uint64_t client_nmaps(const struct client *cl)
{
	return cl->mm ? __atomic_load_n(&cl->mm->nmaps, __ATOMIC_RELAXED) : 0;
}

/*
 * What the clients of @cl's user hold together (@what of each), the
 * administrator's not counted (0): limits a user's clients share, so that
 * a user does not take --max-clients-per-user times a client's from the
 * others (review of 417d8da: 64 connections of one user pinned the cache
 * whole, and mapped 4 million mappings).  Checked
 * before the request, without holding anything after: two clients of one
 * user asking at once may pass it by one request each.
 */
static uint64_t user_total(const struct client *cl, uint64_t (*what)(const struct client *))
{
	uint64_t n = 0;

	if (is_admin(cl))
		return 0;
	pthread_mutex_lock(&d.lock);
	for (const struct client *o = d.clients; o; o = o->next)
		if (o->account == cl->account && !o->refuse && !is_admin(o))
			n += what(o);
	pthread_mutex_unlock(&d.lock);
	return n;
}

/* CLIENT_MAPS_MAX, or USER_MAPS_MAX (@user); 8 and 12 under UPC_DEBUG=maps-few, for a test */
static size_t maps_max(bool user)
{
	if (__builtin_expect(d.c->debug & UPC_DBG_MAPS_FEW, 0))
		return user ? 12 : 8;
	return user ? USER_MAPS_MAX : CLIENT_MAPS_MAX;
}

static int req_map(struct client *cl, struct upc_msg *m, uint64_t *rargs, int *rfd)
{
	struct upc_file *f;
	int memfd, statefd, maxprot, ret;
	unsigned int slot;

	ret = check_file(m->fds[0]);
	if (ret < 0)
		return ret;
	for (slot = 0; slot < CLIENT_PENDING_MAX && cl->pend[slot].f; slot++)
		;
	if (slot == CLIENT_PENDING_MAX)
		return -EAGAIN;
	if (m->args[2] > INT32_MAX)
		return -EINVAL;
	if (cl->mm->nmaps >= maps_max(false) || user_total(cl, client_nmaps) >= maps_max(true))
		return -ENOMEM;
	ret = remote_map_prepare(d.c, m->fds[0], m->args[0], m->args[1], (int)m->args[2], &f, &memfd,
				 &statefd, &maxprot);
	if (ret < 0)
		return ret;
	cl->pend[slot] = (struct pending_map){
		.f = f, .pgoff = m->args[0] >> UPC_PAGE_SHIFT, .len = pg_round_up(m->args[1]), .maxprot = maxprot,
	};
	rargs[0] = slot;
	rargs[1] = (uint64_t)maxprot;
	rfd[0] = memfd;
	rfd[1] = statefd;
	return 0;
}

/*
 * A client of an earlier daemon hands back one of its mappings (upcd(8),
 * "Restarts"): fds: the file, the memfd it maps, the page-table memfd;
 * args: addr, length, page offset, prot.  The memfds are checked to be an
 * earlier daemon's of that file (file_adopt()), write access follows the
 * file's descriptor, and the limit on mappings holds as for a map.
 */
static int req_adopt(struct client *cl, struct upc_msg *m)
{
	int ret = check_file(m->fds[0]);

	if (ret < 0)
		return ret;
	if (m->args[3] > INT32_MAX || m->args[1] > SIZE_MAX)
		return -EINVAL;
	/* (not its user's bound: a mapping made before a restart is not refused after it) */
	if (cl->mm->nmaps >= maps_max(false))
		return -ENOMEM;
	ret = remote_adopt(cl->mm, m->fds[0], m->fds[1], m->fds[2], (uintptr_t)m->args[0], (size_t)m->args[1],
			   m->args[2], (int)m->args[3]);
	if (ret == 0)
		__atomic_fetch_add(&d.adopted, 1, __ATOMIC_RELAXED);
	return ret;
}

static int req_map_done(struct client *cl, struct upc_msg *m)
{
	struct pending_map p;
	int ret = pending_take(cl, m->args[0], &p);

	if (ret < 0)
		return ret;
	if (!m->args[1]) {		/* the client could not map it */
		file_put(p.f);
		return 0;
	}
	if (m->args[2] != p.len || m->args[3] > INT32_MAX || m->args[4]) {
		file_put(p.f);
		return -EINVAL;
	}
	return map_attach(cl->mm, p.f, (uintptr_t)m->args[1], p.len, p.pgoff, (int)m->args[3], p.maxprot);
}

/*
 * A write larger than a message: the data comes in a memfd the client
 * made, sealed, and sent (client.c, client_pwrite()), so that the whole
 * of it is one upc_pwrite() under the file's io_lock - atomic against
 * any other client's write of the same range, as write(2) of a regular
 * file is under the inode's lock.  The memfd is checked before it is
 * read: a shmem file (F_GET_SEALS fails on anything else, so a FIFO, a
 * socket or a file of a FUSE server the client runs cannot block this
 * thread), sealed against shrinking and writing (a shrink would make
 * this daemon's read of it SIGBUS, with the file's io_lock held; a write
 * would make the data change under the copy), and exactly @length bytes
 * long.  It is read through a private read-only mapping: no copy of it
 * in this daemon's memory.
 */
static long req_pwrite_fd(struct upc_msg *m)
{
	uint64_t off = m->args[0], len = m->args[1];
	int mfd = m->fds[1], seals;
	struct stat st;
	void *p;
	long ret;

	if ((ret = check_file(m->fds[0])) < 0)
		return ret;
	if ((int64_t)off < 0 || !len || len > UPC_PROTO_MAX_WRITE)
		return -EINVAL;
	seals = fcntl(mfd, F_GET_SEALS);
	if (seals < 0 || fstat(mfd, &st) < 0 || !S_ISREG(st.st_mode))
		return -EBADF;
	if ((seals & (F_SEAL_SHRINK | F_SEAL_WRITE)) != (F_SEAL_SHRINK | F_SEAL_WRITE) ||
	    (uint64_t)st.st_size != len)
		return -EINVAL;
	p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, mfd, 0);
	if (p == MAP_FAILED)
		return errno == EACCES ? -EBADF : -errno;
	ret = upc_pwrite(d.c, m->fds[0], p, len, (off_t)off);
	munmap(p, len);
	return ret;
}

static int int_arg(uint64_t v, int *out)
{
	if ((int64_t)v > INT32_MAX || (int64_t)v < INT32_MIN)
		return -EINVAL;
	*out = (int)(int64_t)v;
	return 0;
}

/*
 * PIN and UNPIN, counted per client (struct client's @pinned): one client
 * cannot pin more than --max-pinned-per-client pages, so that it cannot
 * take the cache-wide limit (upc_pin(3): -ENOMEM past the cache's) from
 * every other client.  -ENOMEM past it too, as mlock(2) past
 * RLIMIT_MEMLOCK; nothing is pinned.  An argument the engine refuses is
 * left for it to refuse (range_args), so that the error is the engine's.
 */
static int req_pin(struct client *cl, void *addr, size_t len, unsigned int flags)
{
	uintptr_t start, end;
	uint64_t pages = 0, user;
	int ret;

	if (range_args(d.c, addr, len, &start, &end) == 0) {
		pages = (end - start) >> UPC_PAGE_SHIFT;
		if (pages > d.max_pinned || cl->pinned > d.max_pinned - pages) {
			logf("client %d: pin of %lu pages past its limit (%lu pinned, limit %lu)", cl->cred.pid,
			     (unsigned long)pages, (unsigned long)cl->pinned, (unsigned long)d.max_pinned);
			return -ENOMEM;
		}
		user = user_total(cl, client_pinned);
		if (user > d.max_pinned - pages) {
			logf("client %d: pin of %lu pages past its user's limit (%lu pinned, limit %lu)", cl->cred.pid,
			     (unsigned long)pages, (unsigned long)user, (unsigned long)d.max_pinned);
			return -ENOMEM;
		}
	}
	ret = upc_pin(d.c, addr, len, flags);
	if (ret == 0)
		__atomic_store_n(&cl->pinned, cl->pinned + pages, __ATOMIC_RELAXED);
	return ret;
}

static int req_unpin(struct client *cl, void *addr, size_t len)
{
	uintptr_t start, end;
	int ret = upc_unpin(d.c, addr, len);

	/* Every page of the range was pinned, or nothing changed (upc_unpin). */
	if (ret == 0 && range_args(d.c, addr, len, &start, &end) == 0) {
		uint64_t pages = (end - start) >> UPC_PAGE_SHIFT;

		__atomic_store_n(&cl->pinned, cl->pinned > pages ? cl->pinned - pages : 0, __ATOMIC_RELAXED);
	}
	return ret;
}

/*
 * upc_drop() for a client that is not the administrator: the files it maps
 * only, so that one user cannot empty the cache under every other user's
 * processes (upcd(8)).  Same result as upc_drop(): pages dropped, or the
 * first write-back error.
 */
static long drop_own_files(struct client *cl, unsigned int flags)
{
	struct upc_mm *mm = cl->mm;
	struct upc_file **files;
	uint64_t dropped = 0;
	size_t n = 0;
	int err = 0;

	if (flags & ~UPC_DROP_FLAGS_ALL)
		return -EINVAL;
	pthread_rwlock_rdlock(&mm->lock);
	files = calloc(mm->nmaps ? mm->nmaps : 1, sizeof(*files));
	if (!files) {
		pthread_rwlock_unlock(&mm->lock);
		return -ENOMEM;
	}
	for (size_t i = 0; i < mm->nmaps; i++) {
		struct upc_file *f = mm->maps[i]->file;
		size_t j;

		for (j = 0; j < n && files[j] != f; j++)
			;
		if (j == n) {
			file_hold(f);	/* from the mapping's reference, under mm->lock */
			files[n++] = f;
		}
	}
	pthread_rwlock_unlock(&mm->lock);
	for (size_t i = 0; i < n; i++) {
		int ret = file_drop(files[i], flags, &dropped);

		if (ret < 0 && !err)
			err = ret;
		file_put(files[i]);
	}
	free(files);
	if (err)
		return err;
	return dropped > INT32_MAX ? INT32_MAX : (long)dropped;
}

/*
 * CLIENTS: every connection from the @first-th on (newest first), as many
 * as one reply holds; rargs[0] the count of all.  comm is read after the
 * list lock is let go: a client gone since has an empty one.
 */
static long req_clients(uint64_t first, uint64_t *rargs, void *data, size_t *dlen)
{
	struct upc_client_info *ci = data;
	uint64_t i = 0, n = 0;

	pthread_mutex_lock(&d.lock);
	for (struct client *o = d.clients; o; o = o->next) {
		struct upc_client_info *x = &ci[n];

		if (o->refuse || i++ < first || n == UPC_CLIENTS_PER_MSG)
			continue;
		memset(x, 0, sizeof(*x));
		x->pid = o->cred.pid;
		x->uid = o->cred.uid;
		x->requests = __atomic_load_n(&o->requests, __ATOMIC_RELAXED);
		x->pinned = __atomic_load_n(&o->pinned, __ATOMIC_RELAXED);
		if (o->mm) {		/* o->mm is let go under d.lock (client_main) */
			struct upc_zapper *z = atomic_load(&o->mm->zapper);	/* the mm's until remote_detach */
			uint64_t quiet = z ? atomic_load(&z->quiet_until) : 0;

			x->attached = 1;
			x->reclaim = !z ? UPC_RECLAIM_NONE : quiet == UINT64_MAX ? UPC_RECLAIM_HELD :
				     now_ms() < quiet ? UPC_RECLAIM_RESTING : UPC_RECLAIM_OK;
			x->faults = atomic_load_explicit(&o->mm->nr_faults, memory_order_relaxed);
			x->mappings = o->mm->nmaps;
			/*
			 * Never wait for mm->lock under d.lock: its writer may
			 * be waiting up to CALL_TIMEOUT_MS for the client to
			 * munmap (upc_unmap), and d.lock stops every connect
			 * meanwhile.  Busy: the bytes seen last time.
			 */
			if (pthread_rwlock_tryrdlock(&o->mm->lock) == 0) {
				o->map_bytes = 0;
				for (size_t k = 0; k < o->mm->nmaps; k++)
					o->map_bytes += o->mm->maps[k]->end - o->mm->maps[k]->start;
				x->mappings = o->mm->nmaps;
				pthread_rwlock_unlock(&o->mm->lock);
			}
			x->map_bytes = o->map_bytes;
		}
		n++;
	}
	pthread_mutex_unlock(&d.lock);
	for (uint64_t k = 0; k < n; k++) {
		char path[64];
		ssize_t r;
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/comm", ci[k].pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		r = read(fd, ci[k].comm, sizeof(ci[k].comm) - 1);
		close(fd);
		if (r > 0)
			ci[k].comm[strcspn(ci[k].comm, "\n")] = 0;
	}
	rargs[0] = i;
	*dlen = n * sizeof(*ci);
	return 0;
}

/*
 * SYNC: write back every dirty page of the cache and fdatasync each file
 * (writeback_range(WB_SYNC), as msync(MS_SYNC) over all of it), file after
 * file as upc_drop() walks them (files_walk: a file whose lock is held by
 * a thread waiting for a client's hold of its memfd's inode lock is
 * waited for last).  rargs: files written back, dirty pages
 * left because a UPC_PIN_NOWRITEBACK pin holds them.  Returns 0 or the
 * first error; the other files are written back all the same.  upcctl
 * shows its progress from pages_dirty and pages_writeback, polled on a
 * connection of its own meanwhile.
 */
struct sync_walk {
	uint64_t files, held;
};

static int sync_one(struct upc_file *f, bool visit, void *arg)
{
	struct sync_walk *w = arg;
	uint64_t h = 0;
	int ret = writeback_range(f, 0, UINT64_MAX, WB_SYNC | (visit ? WB_VISIT : 0), &h);

	if (ret == -EBUSY && visit)
		return ret;	/* passed by, for now (files_walk) */
	w->held += h;
	w->files++;
	return ret;
}

static long req_sync(uint64_t *rargs)
{
	struct sync_walk w = { 0, 0 };
	int err = files_walk(d.c, sync_one, &w);

	rargs[0] = w.files;
	rargs[1] = w.held;
	return err;
}

/*
 * Serve one request.  Returns the result for the reply; *@rfd a
 * descriptor to send with it (closed after), @data/@dlen its data.
 */
static long serve(struct client *cl, struct upc_msg *m, uint64_t *rargs, unsigned int *rargc, int *rfd,
		  void *data, size_t *dlen)
{
	struct upc_cache *c = d.c;
	void *addr = (void *)(uintptr_t)m->args[0];
	size_t len = (size_t)m->args[1];
	int iarg;
	long ret;

	switch (m->h.type) {
	case UPC_MSG_MAP:
		*rargc = 2;
		return req_map(cl, m, rargs, rfd);
	case UPC_MSG_ADOPT:
		return req_adopt(cl, m);
	case UPC_MSG_MAP_DONE:
		return req_map_done(cl, m);
	case UPC_MSG_UNMAP:
		return upc_unmap(c, addr, len);
	case UPC_MSG_MSYNC:
		if (int_arg(m->args[2], &iarg) < 0)
			return -EINVAL;
		return upc_msync(c, addr, len, iarg);
	case UPC_MSG_PROTECT:
		if (int_arg(m->args[2], &iarg) < 0)
			return -EINVAL;
		return upc_protect(c, addr, len, iarg);
	case UPC_MSG_PIN:
		if (int_arg(m->args[2], &iarg) < 0)
			return -EINVAL;
		return req_pin(cl, addr, len, (unsigned int)iarg);
	case UPC_MSG_UNPIN:
		return req_unpin(cl, addr, len);
	case UPC_MSG_ADVISE:
		if (int_arg(m->args[2], &iarg) < 0)
			return -EINVAL;
		return upc_advise(c, addr, len, iarg);
	case UPC_MSG_PREAD:
		if ((ret = check_file(m->fds[0])) < 0)
			return ret;
		if (m->args[0] > UPC_PROTO_MAX_DATA || (int64_t)m->args[1] < 0)
			return -EINVAL;
		ret = upc_pread(c, m->fds[0], data, (size_t)m->args[0], (off_t)m->args[1]);
		*dlen = ret > 0 ? (size_t)ret : 0;
		return ret;
	case UPC_MSG_PWRITE:
		if ((ret = check_file(m->fds[0])) < 0)
			return ret;
		if ((int64_t)m->args[0] < 0)
			return -EINVAL;
		return upc_pwrite(c, m->fds[0], m->data, m->dlen, (off_t)m->args[0]);
	case UPC_MSG_FTRUNCATE:
		if ((ret = check_file(m->fds[0])) < 0)
			return ret;
		return upc_ftruncate(c, m->fds[0], (off_t)m->args[0]);
	case UPC_MSG_FALLOCATE:
		if ((ret = check_file(m->fds[0])) < 0)
			return ret;
		if (int_arg(m->args[0], &iarg) < 0)
			return -EINVAL;
		return upc_fallocate(c, m->fds[0], iarg, (off_t)m->args[1], (off_t)m->args[2]);
	case UPC_MSG_FSYNC:
		if ((ret = check_file(m->fds[0])) < 0)
			return ret;
		return m->args[0] ? upc_fdatasync(c, m->fds[0]) : upc_fsync(c, m->fds[0]);
	case UPC_MSG_INVALIDATE:
		if ((ret = check_file(m->fds[0])) < 0)
			return ret;
		return upc_invalidate(c, m->fds[0], (off_t)m->args[0], (off_t)m->args[1]);
	case UPC_MSG_ONCE:
		cl->once = true;
		return 0;
	case UPC_MSG_RELAY:
		if (int_arg(m->args[0], &iarg) < 0)
			return -EINVAL;
		return remote_relay_set(cl->mm, iarg);
	case UPC_MSG_MAP_CLEAR:
		return map_clear(cl->mm, (uintptr_t)m->args[0], len);
	case UPC_MSG_RECLAIM:
		return serve_reclaim(cl, m->fds[0]);
	case UPC_MSG_PWRITE_FD:
		return req_pwrite_fd(m);
	case UPC_MSG_STATS: {
		struct upc_stats st = { .sz = sizeof(st) };

		ret = upc_stats(c, &st);
		if (cl->mm) {		/* this client's mappings, as an embedded cache counts its own */
			pthread_rwlock_rdlock(&cl->mm->lock);
			st.nr_mappings = (uint32_t)cl->mm->nmaps;
			pthread_rwlock_unlock(&cl->mm->lock);
		}
		if (ret == 0) {
			memcpy(data, &st, sizeof(st));
			*dlen = sizeof(st);
		}
		return ret;
	}
	case UPC_MSG_DROP:
		if (int_arg(m->args[0], &iarg) < 0)
			return -EINVAL;
		return is_admin(cl) ? upc_drop(c, (unsigned int)iarg) : drop_own_files(cl, (unsigned int)iarg);
	}
	return -EPROTO;
}

/*
 * The requests that need no attach (upcctl daemon): STATUS and STATS for
 * anyone who may connect; CLIENTS, SYNC and DROP of the whole cache for the
 * administrator only (is_admin()), -EPERM and nothing done for anyone else.
 * CLIENTS and SYNC are served on an attached connection too.
 */
static long serve_admin(struct client *cl, struct upc_msg *m, uint64_t *rargs, unsigned int *rargc,
			void *data, size_t *dlen)
{
	struct upc_cache *c = d.c;
	int iarg;

	switch (m->h.type) {
	case UPC_MSG_STATS: {
		struct upc_stats st = { .sz = sizeof(st) };
		long ret = upc_stats(c, &st);

		if (ret < 0)
			return ret;
		/* the daemon's own mappings are none: every client's, as the cache's */
		st.nr_mappings = 0;
		pthread_mutex_lock(&d.lock);
		for (struct client *o = d.clients; o; o = o->next)
			if (o->mm)
				st.nr_mappings += (uint32_t)o->mm->nmaps;
		pthread_mutex_unlock(&d.lock);
		memcpy(data, &st, sizeof(st));
		*dlen = sizeof(st);
		return 0;
	}
	case UPC_MSG_CLIENTS:
		if (!is_admin(cl))
			return -EPERM;
		*rargc = 1;
		return req_clients(m->args[0], rargs, data, dlen);
	case UPC_MSG_SYNC:
		if (!is_admin(cl))
			return -EPERM;
		if (m->args[0])
			return -EINVAL;
		*rargc = 2;
		return req_sync(rargs);
	case UPC_MSG_DROP:
		if (!is_admin(cl))
			return -EPERM;
		if (int_arg(m->args[0], &iarg) < 0)
			return -EINVAL;
		return upc_drop(c, (unsigned int)iarg);
	case UPC_MSG_STATUS: {
		struct upc_stats st = { .sz = sizeof(st) };
		int n;

		upc_stats(c, &st);
		pthread_mutex_lock(&d.lock);
		n = snprintf(data, UPC_PROTO_MAX_DATA,
			     "pid %d\nclients %u\nrequests %lu\ndisconnected-for-errors %lu\nadopted-mappings %lu\n"
			     "tracking %s\nmem-limit %lu\ncached %lu\ndirty %lu\nfiles %u\nfault-handlers ",
			     getpid(), d.nclients, (unsigned long)d.served, (unsigned long)d.dropped,
			     (unsigned long)d.adopted,
			     st.track_mode == UPC_TRACK_ASYNC ? "async" : "sync", (unsigned long)st.mem_limit,
			     (unsigned long)st.pages_cached, (unsigned long)st.pages_dirty, st.nr_files);
		n += placement_describe(&d.place, (char *)data + n, (int)UPC_PROTO_MAX_DATA - n);
		n += snprintf((char *)data + n, UPC_PROTO_MAX_DATA - n, "\n");
		/* other users' processes are the administrator's to see (CLIENTS too) */
		for (struct client *o = d.clients; o && n < (int)UPC_PROTO_MAX_DATA - 128; o = o->next)
			if (!o->refuse && (is_admin(cl) || o->cred.uid == cl->cred.uid))
				n += snprintf((char *)data + n, UPC_PROTO_MAX_DATA - n,
					      "client pid %d uid %u mappings %zu requests %lu\n", o->cred.pid,
					      o->cred.uid, o->mm ? o->mm->nmaps : 0, (unsigned long)o->requests);
		pthread_mutex_unlock(&d.lock);
		*dlen = (size_t)n;
		return 0;
	}
	}
	return -EPROTO;
}

/* hello: versions, and the client's cache flags (the daemon's options are its own). */
static long serve_hello(struct client *cl, struct upc_msg *m, uint64_t *rargs, unsigned int *rargc)
{
	struct upc_stats st = { .sz = sizeof(st) };

	if (m->args[0] != UPC_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	/* A cache shared by every client has one store and one flusher: see upcd(8). */
	if (m->args[1] & ~(uint64_t)(UPC_CACHE_SHARED | UPC_CACHE_ASYNC_WP))
		return -EOPNOTSUPP;
	upc_stats(d.c, &st);
	rargs[0] = UPC_PROTO_VERSION;
	rargs[1] = d.c->uffd_features;
	rargs[2] = st.track_mode;
	rargs[3] = UPC_DAEMON_F_RECLAIM | UPC_DAEMON_F_ONCE;
	*rargc = 4;
	cl->hello = true;
	return 0;
}

static long serve_attach(struct client *cl, struct upc_msg *m)
{
	int ret = check_attach(cl, m->fds);

	if (ret < 0)
		return ret;
	/*
	 * The handler reads it without blocking, whatever the client opened
	 * it with (a blocking read would keep the handler from its stop).
	 * The flag is the open file description's, shared with the client,
	 * which may clear it again: the handler reads with RWF_NOWAIT too
	 * (fault.c, uffd_read_nonblock); on a kernel that refuses that, such
	 * a client stalls its own handler (upcd(8), BUGS).
	 */
	if (fcntl(m->fds[0], F_SETFL, O_NONBLOCK) < 0)
		return -errno;
	/*
	 * Its features as the library asks for them: set (UFFDIO_API done,
	 * so that none can be added later), and no non-cooperative event.
	 * A fork, mremap, madvise or munmap event of the client's would make
	 * the kernel refuse the daemon's page-table ioctls (EAGAIN) until a
	 * handler reads it, and the handlers may be waiting for the mm's
	 * lock the refused request holds (review of edfc85e).  Read from
	 * fdinfo ("API:\t<api>:<features>:<ioctls>"); the kernel's own
	 * "initialized" bit is among them where the daemon's userfaultfd
	 * shows it (Linux 6.1 and later).
	 */
	{
		uint64_t feat;

		if (uffd_features_shown(m->fds[0], &feat) < 0 ||
		    (feat & (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
			     UFFD_FEATURE_EVENT_UNMAP)) ||
		    (d.own_uffd_shows_init && !(feat & UFFD_SHOWN_INITIALIZED))) {
			logf("client %d: attach: a userfaultfd not set up as the library sets it up", cl->cred.pid);
			return -EINVAL;
		}
	}
	/*
	 * One userfaultfd(2) made, as the library makes it: where the kernel
	 * reads the daemon's own with RWF_NOWAIT, the client's must read so
	 * too (a fork event's descriptor may not: fault.c, uffd_read_nonblock).
	 */
	if (d.own_uffd_nowait && !uffd_reads_nowait(m->fds[0])) {
		logf("client %d: attach: a userfaultfd that cannot be read without blocking", cl->cred.pid);
		return -EINVAL;
	}
	ret = remote_attach(d.c, m->fds[0], m->fds[1], cl->cred.pid, client_call, cl, &cl->mm);
	if (ret < 0)
		return ret;
	cl->pidfd = m->fds[2];
	m->fds[0] = m->fds[1] = m->fds[2] = -1;		/* the mm's and the client's now */
	return 0;
}

/*
 * A connection past its user's limit (client_new()): its first request is
 * answered with @cl->refuse (so that upc_cache_create() returns it, as it
 * returns a refused connect), then it is closed.  A client that sends
 * nothing within REFUSE_TIMEOUT_MS is closed unanswered.
 */
static void client_refuse(struct client *cl)
{
	struct pollfd pfd = { .fd = cl->sock, .events = POLLIN };

	if (poll(&pfd, 1, REFUSE_TIMEOUT_MS) == 1 && upc_msg_recv(cl->sock, cl->msg, UPC_FROM_CLIENT) == 0) {
		upc_msg_close_fds(cl->msg);
		upc_msg_send(cl->sock, UPC_MSG_REPLY, cl->msg->h.seq, (uint64_t[]){ (uint64_t)(int64_t)cl->refuse },
			     1, NULL, 0, NULL, 0);
	}
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	char *data = cl->refuse ? NULL : malloc(UPC_PROTO_MAX_DATA);

	upc_current_account = cl->account;	/* what it writes counts against its user (wbpark.c) */
	if (cl->refuse)
		client_refuse(cl);
	for (; data;) {
		struct pollfd pfd[2] = { { .fd = cl->sock, .events = POLLIN }, { .fd = cl->pidfd, .events = POLLIN } };
		uint64_t rargs[UPC_PROTO_MAX_ARGS];
		unsigned int rargc = 0;
		struct upc_msg *m = cl->msg;
		size_t dlen = 0;
		int rfd[2] = { -1, -1 };
		/*
		 * A request that changes a file is applied once, whatever daemon
		 * it is sent to again (struct upc_once, internal.h), for a client
		 * that numbers its requests so (UPC_MSG_ONCE): known by the
		 * client's process, which it cannot forge, and its number.
		 */
		struct upc_once once = { 0 };
		long ret;

		if (poll(pfd, cl->pidfd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (cl->pidfd >= 0 && pfd[1].revents) {
			logf("client %d: exited", cl->cred.pid);
			break;
		}
		ret = upc_msg_recv(cl->sock, m, UPC_FROM_CLIENT);
		if (ret == -ECONNRESET)
			break;
		if (ret < 0) {
			logf("client %d: bad message: %s", cl->cred.pid, strerror((int)-ret));
			upc_msg_send(cl->sock, UPC_MSG_REPLY, 0, (uint64_t[]){ (uint64_t)ret }, 1, NULL, 0, NULL, 0);
			__atomic_fetch_add(&d.dropped, 1, __ATOMIC_RELAXED);
			break;
		}
		cl->seq = m->h.seq;
		cl->requests++;
		__atomic_fetch_add(&d.served, 1, __ATOMIC_RELAXED);
		/* In order: hello, attach, then anything; upcctl's requests need no attach (serve_admin). */
		if (m->h.type == UPC_MSG_HELLO && !cl->hello) {
			ret = serve_hello(cl, m, rargs + 1, &rargc);
		} else if (m->h.type == UPC_MSG_STATUS || m->h.type == UPC_MSG_CLIENTS || m->h.type == UPC_MSG_SYNC ||
			   (!cl->mm && (m->h.type == UPC_MSG_STATS || m->h.type == UPC_MSG_DROP))) {
			ret = serve_admin(cl, m, rargs + 1, &rargc, data, &dlen);
		} else if (m->h.type == UPC_MSG_ATTACH && cl->hello && !cl->mm) {
			ret = serve_attach(cl, m);
		} else if (cl->mm && m->h.type != UPC_MSG_HELLO && m->h.type != UPC_MSG_ATTACH &&
			   m->h.type != UPC_MSG_CALL_DONE) {
			bool changes = m->h.type == UPC_MSG_PWRITE || m->h.type == UPC_MSG_PWRITE_FD ||
				       m->h.type == UPC_MSG_FTRUNCATE || m->h.type == UPC_MSG_FALLOCATE;

			once.who = (uint64_t)cl->cred.pid;
			once.seq = m->h.seq;
			mm_current_set(cl->mm);
			remote_lift_pending(cl->mm);	/* poison markers the file grew over (remote.c) */
			upc_once_cur = changes && cl->once ? &once : NULL;
			ret = serve(cl, m, rargs + 1, &rargc, rfd, data, &dlen);
			upc_once_cur = NULL;
			remote_lift_pending(cl->mm);
			mm_current_clear(cl->mm);
		} else {
			ret = -EPROTO;		/* out of order */
		}
		upc_msg_close_fds(m);
		rargs[0] = (uint64_t)ret;
		if (ret == -EPROTO || cl->broken ||
		    upc_msg_send(cl->sock, UPC_MSG_REPLY, cl->seq, rargs, rargc + 1, data, dlen,
				 rfd, (rfd[0] >= 0) + (rfd[1] >= 0)) < 0) {
			if (ret == -EPROTO)
				upc_msg_send(cl->sock, UPC_MSG_REPLY, cl->seq, rargs, 1, NULL, 0, NULL, 0);
			for (int i = 0; i < 2; i++)
				if (rfd[i] >= 0)
					close(rfd[i]);
			upc_once_release(&once);
			__atomic_fetch_add(&d.dropped, 1, __ATOMIC_RELAXED);
			break;
		}
		for (int i = 0; i < 2; i++)
			if (rfd[i] >= 0)
				close(rfd[i]);
		upc_once_release(&once);	/* answered: its note may go with the file */
	}
	free(data);
	/* Gone: its mappings are forgotten, its dirty pages stay (remote_detach). */
	pending_drop_all(cl);
	if (cl->mm) {
		struct upc_mm *mm = cl->mm;

		pthread_mutex_lock(&d.lock);	/* STATUS looks at cl->mm under it */
		cl->mm = NULL;
		pthread_mutex_unlock(&d.lock);
		remote_detach(mm);
	}
	pthread_mutex_lock(&d.lock);
	for (struct client **pp = &d.clients; *pp; pp = &(*pp)->next)
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	d.nclients--;
	if (cl->refuse)
		d.refusing--;
	pthread_cond_broadcast(&d.gone);
	pthread_mutex_unlock(&d.lock);
	logf("client %d: gone", cl->cred.pid);
	close(cl->sock);
	if (cl->pidfd >= 0)
		close(cl->pidfd);
	free(cl->msg);
	free(cl->call_msg);
	free(cl);
	return NULL;
}

static void client_new(int sock)
{
	struct client *cl = calloc(1, sizeof(*cl));
	socklen_t sl = sizeof(cl->cred);
	pthread_attr_t at;
	int account_err;

	if (!cl)
		goto fail;
	cl->sock = sock;
	cl->pidfd = -1;
	cl->msg = malloc(sizeof(*cl->msg));
	cl->call_msg = malloc(sizeof(*cl->call_msg));
	if (!cl->msg || !cl->call_msg || getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cl->cred, &sl) < 0)
		goto fail;
	account_err = client_account(sock, &cl->cred, &cl->account);
	pthread_mutex_lock(&d.lock);
	/*
	 * A daemon not run as root serves its own user, and root, only.  Its
	 * memfds are its user's inodes, whose mode any process of that user
	 * may change: a client of that user with a read-only descriptor of a
	 * file could make the memfd writable and write the pages another
	 * user's client writes back (upcd(8), SECURITY).  Among one user's
	 * processes a read-only descriptor separates nothing that the user
	 * could not undo anyway (they may ptrace one another, the daemon
	 * included); root, which may do all of it, is served.
	 */
	if (d.euid != 0 && cl->cred.uid != d.euid && cl->cred.uid != 0) {
		cl->refuse = -EACCES;
	} else if (account_err && !is_admin(cl)) {
		cl->refuse = account_err;	/* client_account: closed, not counted as its uid */
	} else if (!is_admin(cl) && d.max_per_user) {
		/*
		 * Connections per user (--max-clients-per-user): one user cannot
		 * take every thread and descriptor of the daemon from the others.
		 * The administrator is not counted (upcctl must always get in).
		 */
		unsigned int same = 0;

		for (struct client *o = d.clients; o; o = o->next)
			same += o->account == cl->account && !o->refuse && !is_admin(o);
		if (same >= d.max_per_user)
			cl->refuse = -EUSERS;
	}
	if (cl->refuse) {
		if (d.refusing >= REFUSING_MAX) {
			pthread_mutex_unlock(&d.lock);
			logf("client %d (uid %u) closed: refused (%s), and too many refused already",
			     cl->cred.pid, cl->cred.uid, strerror(-cl->refuse));
			goto fail;
		}
		d.refusing++;
	}
	cl->next = d.clients;
	d.clients = cl;
	d.nclients++;
	pthread_mutex_unlock(&d.lock);
	/* Before the thread starts: it frees @cl when the client goes. */
	if (cl->account != cl->cred.uid)
		logf("client %d (uid %u): counted as user %u, whose user namespace it runs in", cl->cred.pid,
		     cl->cred.uid, cl->account);
	logf("client %d (uid %u) connected%s", cl->cred.pid, cl->cred.uid,
	     cl->refuse == -EUSERS ? ", refused: its user's connections are at --max-clients-per-user" :
	     cl->refuse && cl->refuse == account_err ? ", refused: its user namespace cannot be read" :
	     cl->refuse ? ", refused: another user's, and this daemon is not root's" : "");
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&cl->thread, &at, client_main, cl) != 0) {
		pthread_attr_destroy(&at);
		pthread_mutex_lock(&d.lock);
		for (struct client **pp = &d.clients; *pp; pp = &(*pp)->next)
			if (*pp == cl) {
				*pp = cl->next;
				break;
			}
		d.nclients--;
		if (cl->refuse)
			d.refusing--;
		pthread_mutex_unlock(&d.lock);
		goto fail;
	}
	pthread_attr_destroy(&at);
	return;
fail:
	if (cl) {
		free(cl->msg);
		free(cl->call_msg);
		free(cl);
	}
	close(sock);
}

/* ------------------------------------------------------------ start-up */

static void on_signal(int sig)
{
	(void)sig;
	d.stop = 1;
	if (d.stop_pipe[1] >= 0 && write(d.stop_pipe[1], "x", 1) < 0)
		d.stop = 1;	/* the pipe is full: the loop wakes all the same */
}

/*
 * systemd: what it passed (LISTEN_FDS from 3 on, named by LISTEN_FDNAMES):
 * its socket, which is returned (or -1: none), and what its file
 * descriptor store kept for us (fdstore.c, fdstore_take()).  Anything
 * else is closed.  READY=1 and STOPPING=1 below (Type=notify).
 */
static int systemd_socket(void)
{
	const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS"), *names = getenv("LISTEN_FDNAMES");
	int lsock = -1, count;

	if (!pid || !n || atoi(pid) != getpid())
		return -1;
	count = atoi(n);
	for (int i = 0; i < count && i < 1 << 20; i++) {
		int fd = 3 + i, listening = 0;
		socklen_t sl = sizeof(listening);
		char name[256] = "";

		if (names) {	/* the i-th of them, ':' between */
			size_t len = strcspn(names, ":");

			if (len < sizeof(name))
				memcpy(name, names, len), name[len] = '\0';
			names = names[len] ? names + len + 1 : names + len;
		}
		if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
			continue;
		if (fdstore_take(fd, name))
			continue;
		if (lsock < 0 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) == 0 && listening)
			lsock = fd;
		else
			close(fd);
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return lsock;
}

static void systemd_notify(const char *what)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t sl;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	strcpy(sa.sun_path, path);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	sl = offsetof(struct sockaddr_un, sun_path) + strlen(path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, what, strlen(what), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl) < 0)
		logf("sd_notify: %s", strerror(errno));
	close(fd);
}

static int listen_on(const char *path, const char *group, mode_t mode)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "upcd: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(path);		/* a stale socket of an earlier run */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, mode) < 0)
		goto err;
	if (group) {
		struct group *g = getgrnam(group);

		if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0) {
			fprintf(stderr, "upcd: group %s: %s\n", group, g ? strerror(errno) : "no such group");
			goto err;
		}
	}
	if (listen(fd, 64) < 0)
		goto err;
	return fd;
err:
	fprintf(stderr, "upcd: %s: %s\n", path, strerror(errno));
	close(fd);
	return -1;
}

static size_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	switch (*end) {
	case 'k': case 'K': v *= 1024; break;
	case 'm': case 'M': v *= 1024 * 1024; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
	case 0: break;
	default: return 0;
	}
	return v > 0 ? (size_t)v : 0;
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: upcd [--foreground] [--socket PATH] [--mem-limit SIZE] [--async]\n"
		"            [--group NAME] [--mode OCTAL] [--max-clients-per-user N]\n"
		"            [--max-pinned-per-client SIZE] [--keeper-socket PATH] [--fd-store]\n"
		"            [--fault-handlers auto|per-cpu|one] [--verbose]\n"
		"Holds one page cache for every process that creates its cache with\n"
		"UPC_CACHE_SHARED.  See upcd(8).\n"
		"  --foreground                 do not detach\n"
		"  --socket PATH                listen there (default: as clients find it)\n"
		"  --mem-limit SIZE             cached bytes at most, all clients together (K, M, G)\n"
		"  --group NAME, --mode OCTAL   the socket's group and mode (0600; 0660 with a group)\n"
		"  --max-clients-per-user N     connections of one user, root and upcd's own user\n"
		"                               not counted (default %u; 0: no limit)\n"
		"  --max-pinned-per-client SIZE what one client's upc_pin may hold (K, M, G;\n"
		"                               default a quarter of the memory limit)\n"
		"  --keeper-socket PATH         where this daemon's keeper waits for the next\n"
		"                               daemon after a crash (default SOCKET.keeper;\n"
		"                               \"none\": no keeper)\n"
		"  --fd-store                   keep the files in systemd's file descriptor\n"
		"                               store too (FileDescriptorStoreMax=)\n"
		"  --fault-handlers HOW         a client's: one pinned to each CPU (per-cpu),\n"
		"                               one unpinned (one), or, measured at start, one\n"
		"                               unless it costs over twice as much (auto, the\n"
		"                               default)\n"
		"  --verbose                    log clients and errors to standard error\n",
		CLIENTS_PER_USER);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "socket", required_argument, NULL, 's' },
		{ "mem-limit", required_argument, NULL, 'm' },
		{ "async", no_argument, NULL, 'a' },
		{ "group", required_argument, NULL, 'g' },
		{ "mode", required_argument, NULL, 'M' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "max-clients-per-user", required_argument, NULL, 'U' },
		{ "max-pinned-per-client", required_argument, NULL, 'P' },
		{ "keeper-socket", required_argument, NULL, 'K' },
		{ "fd-store", no_argument, NULL, 'S' },
		{ "fault-handlers", required_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	UPC_OPTS(upc_cache_opts, o);
	const char *path = NULL, *group = NULL, *kpath = NULL;
	char defpath[256];
	bool foreground = false, fd_store = false;
	long mode = -1;
	struct sigaction sa = { .sa_handler = on_signal };
	size_t max_pinned = 0;
	int ready_fd = -1;		/* without --foreground: the waiting parent's pipe */
	size_t pending;
	char *end;
	int opt, ret;

	/* the keeper of this daemon's files (keeper.c, keeper_start) */
	if (argc == 3 && !strcmp(argv[1], "--run-keeper"))
		return keeper_run(argv[2]);
	d.max_per_user = CLIENTS_PER_USER;
	d.euid = geteuid();
	while ((opt = getopt_long(argc, argv, "fs:m:ag:M:vU:P:K:SF:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'f': foreground = true; break;
		case 's': path = optarg; break;
		case 'm':
			o.mem_limit = parse_size(optarg);
			if (!o.mem_limit) {
				fprintf(stderr, "upcd: bad size: %s\n", optarg);
				return 2;
			}
			break;
		case 'a': o.flags |= UPC_CACHE_ASYNC_WP; break;
		case 'g': group = optarg; break;
		case 'M':
			mode = strtol(optarg, NULL, 8);
			if (mode <= 0 || mode > 0777) {
				fprintf(stderr, "upcd: bad mode: %s\n", optarg);
				return 2;
			}
			break;
		case 'v': d.verbose = true; break;
		case 'U': {
			unsigned long v = strtoul(optarg, &end, 10);

			if (!*optarg || *end || optarg[0] == '-' || v > 1000000) {
				fprintf(stderr, "upcd: bad number of clients: %s\n", optarg);
				return 2;
			}
			d.max_per_user = (unsigned int)v;
			break;
		}
		case 'P':
			max_pinned = parse_size(optarg);
			if (max_pinned < UPC_PAGE_SIZE) {
				fprintf(stderr, "upcd: bad size (a page at least): %s\n", optarg);
				return 2;
			}
			break;
		case 'K':
			if (!*optarg || strlen(optarg) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
				fprintf(stderr, "upcd: bad keeper socket: %s\n", optarg);
				return 2;
			}
			kpath = optarg;
			break;
		case 'S': fd_store = true; break;
		case 'F':
			if (placement_parse(optarg, &d.place.mode) < 0) {
				fprintf(stderr, "upcd: bad --fault-handlers (auto, per-cpu or one): %s\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!path)
		path = upc_socket_path(NULL, defpath, sizeof(defpath));
	if (pipe2(d.stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return 1;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/*
	 * Under an RLIMIT_FSIZE ("ulimit -f" where it was started), a write
	 * or truncation past it, a client's, its log's, is EFBIG and no more:
	 * the kernel's SIGXFSZ would end the daemon, and every client's
	 * unwritten data would wait for the next (upcd(8), BUGS).
	 */
	signal(SIGXFSZ, SIG_IGN);

	/*
	 * Into the background before the cache exists: daemon(3) after it
	 * forked a process without the engine's threads (its flusher, the
	 * staging fault handler), and every map failed.  The parent waits
	 * for the child to be ready, so that its exit status says whether
	 * the daemon serves, and start-up errors still reach the terminal.
	 */
	if (!foreground) {
		int rp[2];
		pid_t pid;

		if (pipe2(rp, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
			perror("upcd: fork");
			return 1;
		}
		if (pid > 0) {
			char ok;

			close(rp[1]);
			return read(rp[0], &ok, 1) == 1 ? 0 : 1;
		}
		close(rp[0]);
		ready_fd = rp[1];
		setsid();
	}
	d.lsock = systemd_socket();
	d.socket_activated = d.lsock >= 0;
	if (d.lsock < 0) {
		mode_t m = mode > 0 ? (mode_t)mode : group ? 0660 : 0600;

		if (d.euid != 0 && (m & 0066))
			fprintf(stderr, "upcd: not root: other users may connect to %s (mode %04o) but are refused "
				"(upcd(8), SECURITY)\n", path, (unsigned int)m);
		d.lsock = listen_on(path, group, m);
	}
	if (d.lsock < 0)
		return 1;
	/*
	 * Descriptors: two memfds a file, a pidfd per process holding an
	 * earlier daemon's memfds (adopt.c, cache_find_orphans), three per
	 * client.  The soft limit (1024, run by hand) is raised to the hard
	 * one, as upcd.service's LimitNOFILE does.
	 */
	{
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	/*
	 * Before the engine's threads: the probe forks.  After the socket
	 * listens: a client connecting meanwhile waits in its backlog.  A
	 * SIGTERM meanwhile is taken after it.
	 */
	if (d.place.mode == PLACE_AUTO) {
		sigset_t term, old;

		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		sigaddset(&term, SIGINT);
		sigprocmask(SIG_BLOCK, &term, &old);
		placement_probe(&d.place);
		sigprocmask(SIG_SETMASK, &old, NULL);
	} else {
		d.place.one = d.place.mode == PLACE_ONE;
	}
	ret = upc_cache_create(&o, &d.c);
	if (ret < 0) {
		fprintf(stderr, "upcd: cannot create the cache: %s\n", upc_strerror(ret));
		return 1;
	}
	d.c->remote_one_handler = d.place.one;
	{
		char how[160];

		placement_describe(&d.place, how, sizeof(how));
		logf("fault handlers: %s", how);
	}
	ret = cache_serve(d.c);
	if (ret < 0) {
		fprintf(stderr, "upcd: cannot serve the cache: %s\n", upc_strerror(ret));
		return 1;
	}
	if (d.c->engine_uffd >= 0) {
		uint64_t own;

		d.own_uffd_nowait = uffd_reads_nowait(d.c->engine_uffd);
		d.own_uffd_shows_init = uffd_features_shown(d.c->engine_uffd, &own) == 0 &&
					(own & UFFD_SHOWN_INITIALIZED);
	}
	/* a quarter of the cache's own pin limit (upc_pin(3): the memory limit), by default */
	d.max_pinned = max_pinned ? max_pinned >> UPC_PAGE_SHIFT : max_t(uint64_t, d.c->limit_pages / 4, 1);
	/*
	 * --fd-store, or systemd's $FDSTORE (254 and later set it to
	 * FileDescriptorStoreMax=, the maximum the store is counted against),
	 * or a store systemd handed back (it keeps one for this unit): every
	 * file goes to its store too, which no kill of the unit's processes
	 * empties (fdstore.c).
	 */
	{
		long max = getenv("FDSTORE") ? atol(getenv("FDSTORE")) : 0;

		if (fd_store || max > 0 || fdstore_handed()) {
			int r = fdstore_start(max > 0 ? (size_t)max : 0);

			if (r < 0)
				fprintf(stderr, "upcd: --fd-store: %s: the keeper alone keeps the files\n",
					r == -ENOENT ? "no $NOTIFY_SOCKET (not started by systemd)" : upc_strerror(r));
			else
				keeper_hooks(d.c);
		}
	}
	/*
	 * What an earlier daemon's keeper holds is adopted, then this one's
	 * keeper starts on the same path (keeper.c).  A daemon without one
	 * serves all the same: its dirty pages die with it, as they did.
	 */
	{
		struct kept *k, *sk;
		size_t nk, nsk;
		int kr;
		char kbuf[sizeof(((struct sockaddr_un *)0)->sun_path)];

		/* the socket systemd passed may be anywhere: by default the keeper's is beside it */
		if (!kpath && d.socket_activated) {
			struct sockaddr_un ka;
			socklen_t sl = sizeof(ka);

			if (getsockname(d.lsock, (struct sockaddr *)&ka, &sl) == 0 && ka.sun_family == AF_UNIX &&
			    sl > offsetof(struct sockaddr_un, sun_path) + 1 && ka.sun_path[0] &&
			    sl - offsetof(struct sockaddr_un, sun_path) < sizeof(defpath)) {
				memcpy(defpath, ka.sun_path, sl - offsetof(struct sockaddr_un, sun_path));
				defpath[sl - offsetof(struct sockaddr_un, sun_path)] = '\0';
				path = defpath;
			}
		}
		if (!kpath && (size_t)snprintf(kbuf, sizeof(kbuf), "%s.keeper", path) < sizeof(kbuf))
			kpath = kbuf;
		if (!kpath)
			fprintf(stderr, "upcd: no keeper: its socket's path (%s.keeper) is too long\n", path);
		ret = 0;
		nk = 0;
		k = NULL;
		if (kpath && strcmp(kpath, "none")) {
			ret = keeper_takeover(d.c, kpath, &k, &nk);
			if (ret < 0) {
				/* it keeps what it holds, on its path: this daemon runs without a keeper */
				fprintf(stderr, "upcd: the keeper on %s: %s: it keeps what it holds; no keeper here\n",
					kpath, ret == -EBUSY ? "its daemon lives" : upc_strerror(ret));
			} else if (ret == 1) {
				logf("the earlier daemon's keeper is this one's, with %zu files", nk);
				ret = 0;
			} else {
				/* before any file: every file is its to keep */
				kr = keeper_start(d.c, kpath);
				if (kr < 0)
					fprintf(stderr, "upcd: no keeper (%s): %s\n", kpath, upc_strerror(kr));
			}
		}
		/* and what systemd's store handed back (fdstore.c): a file the keeper has too, once */
		if (fdstore_take_all(&sk, &nsk) < 0)
			fprintf(stderr, "upcd: systemd's file descriptor store: out of memory: left there for the "
				"next start\n");
		if (nsk) {
			logf("systemd's file descriptor store handed back %zu files", nsk);
			keeper_merge(&k, &nk, sk, nsk);
		}
		if ((ret = keeper_adopt(d.c, k, nk)) < 0)
			fprintf(stderr, "upcd: adopting the kept files: %s\n", upc_strerror(ret));
	}
	systemd_notify("READY=1");
	logf("serving on %s", path);
	if (ready_fd >= 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (null < 0 || chdir("/") < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
		    write(ready_fd, "", 1) != 1)
			return 1;
		close(null);
		close(ready_fd);
	}
	while (!d.stop) {
		struct pollfd pfd[2] = { { .fd = d.lsock, .events = POLLIN }, { .fd = d.stop_pipe[0], .events = POLLIN } };
		int s;

		if (poll(pfd, 2, -1) < 0)
			continue;
		if (pfd[1].revents)
			break;
		s = accept4(d.lsock, NULL, NULL, SOCK_CLOEXEC);
		if (s >= 0)
			client_new(s);
	}
	/*
	 * SIGTERM: let every client go (each thread write-protects its
	 * client's mappings and forgets them: remote_detach()), then destroy
	 * the cache, which writes every dirty page back.  The memfds and
	 * their page tables stay as they are in the clients that map them:
	 * what is mapped stays readable, a fault waits in the client's
	 * userfaultfd, and the next daemon adopts them, clean
	 * (remote_adopt(); the client reconnects: connect.c).
	 */
	systemd_notify("STOPPING=1");
	logf("stopping");
	close(d.lsock);
	/* its own socket only: one systemd passed is systemd's (RemoveOnStop=) */
	if (!d.socket_activated)
		unlink(path);
	/* A client's request waiting for a punch stuck on a memfd's lock gives up (punch.c). */
	atomic_store(&d.c->quitting, true);
	pthread_mutex_lock(&d.lock);
	for (struct client *cl = d.clients; cl; cl = cl->next)
		shutdown(cl->sock, SHUT_RDWR);
	while (d.nclients)
		pthread_cond_wait(&d.gone, &d.lock);
	pthread_mutex_unlock(&d.lock);
	keeper_adopt_wait();
	pending = cache_kept_pending(d.c);
	ret = upc_cache_destroy(d.c);
	/* the keeper is let go only when it holds nothing the next daemon needs */
	if (ret < 0)
		fprintf(stderr, "upcd: write-back at exit: %s (the keeper keeps the files)\n", upc_strerror(ret));
	else if (pending)
		fprintf(stderr, "upcd: %zu files of an earlier daemon not adopted: the keeper keeps them\n", pending);
	else
		keeper_bye();
	return ret < 0 ? 1 : 0;
}
