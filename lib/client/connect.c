/* SPDX-License-Identifier: MIT */
/*
 * connect.c - a client's connection to upcd, and its connection again
 * after the daemon died: the handshake (hello, the userfaultfd and the
 * attach, the reclaim channel and its zaps under asynchronous tracking),
 * the watcher thread that sees the daemon go, and the hand-back to the
 * next one (each file written and write-protected, then every mapping
 * adopted, UPC_MSG_ADOPT, and the pins again).  While no daemon answers,
 * the process serves its own faults (takeover.c).  The requests
 * themselves, and the mappings they keep, are client.c's.
 */
#include "internal.h"
#include "client.h"
#include "proto.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static long handshake_attach(struct upc_client *cl, int sock);

/*
 * Hello on @sock: a daemon that answers, and serves our userfaultfd as
 * the first one did (once we have one).  cl->lock held (or the client is
 * not yet shared).
 */
static long hello(struct upc_client *cl, int sock, struct creply *rep)
{
	uint64_t args[3] = { UPC_PROTO_VERSION, cl->cache_flags, cl->mem_limit };
	long ret;

	ret = xfer(cl, sock, UPC_MSG_HELLO, args, 3, NULL, 0, NULL, 0, rep);
	if (ret == 0 && rep->argc < 3)
		ret = -EPROTO;
	if (ret == 0)
		cl->daemon_flags = rep->argc >= 4 ? rep->args[3] : 0;
	if (ret == 0 && atomic_load(&cl->uffd) >= 0 && rep->args[1] != cl->daemon_features)
		ret = -EPROTO;
	return ret;
}

/*
 * Hello, and attach with our userfaultfd if we have one, on @sock.
 * cl->lock held (or the client is not yet shared).
 */
static long handshake(struct upc_client *cl, int sock, struct creply *rep)
{
	long ret = hello(cl, sock, rep);

	if (ret < 0 || atomic_load(&cl->uffd) < 0)
		return ret;
	return handshake_attach(cl, sock);
}

/*
 * Under asynchronous tracking the daemon evicts a page this process maps
 * writable once this process zapped its own PTEs of it (a write through a
 * clean PTE does not trap: upcd(8), "Memory"), or else by taking it from
 * under this process, at the cost of a copy of the page; it asks through a
 * socket pair whose other end it is handed here (on @sock), by every daemon
 * that says it takes one, once this process's mappings are its own again
 * (after a reconnect's adoption: until then the watcher, which answers,
 * is busy reconnecting).  The old connection's end goes.  Best effort:
 * without a channel the daemon takes what this process maps from under it
 * (capture.c: a copy of each page), and a failure here fails nothing else
 * (but a lost connection, which the caller sees).
 */
static long reclaim_channel(struct upc_client *cl, int sock)
{
	int sv[2];
	long ret;

	if (cl->zap_sock >= 0) {
		close(cl->zap_sock);
		cl->zap_sock = -1;
	}
	if (cl->track_mode != UPC_TRACK_ASYNC || !(cl->daemon_flags & UPC_DAEMON_F_RECLAIM) || cl->no_zaps)
		return 0;
	if ((!cl->zap_msg && !(cl->zap_msg = malloc(sizeof(*cl->zap_msg)))) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		pr_warn("no reclaim channel (%s): upcd evicts what this process maps without its help\n", strerror(errno));
		return 0;
	}
	ret = xfer(cl, sock, UPC_MSG_RECLAIM, NULL, 0, NULL, 0, &sv[1], 1, NULL);
	close(sv[1]);
	if (ret < 0) {
		close(sv[0]);
		if (conn_lost(ret))
			return ret;
		pr_warn("upcd refused a reclaim channel (%s): it evicts what this process maps without its help\n",
			upc_strerror((int)ret));
		return 0;
	}
	cl->zap_sock = sv[0];
	return 0;
}

/*
 * The watcher's answer to one message on the reclaim channel: a UPC_MSG_ZAP
 * zaps each range it names - only where this process still maps, writable,
 * the memfd and the file pages the range names (the list, under maps_lock:
 * the daemon looked before it asked, and the address may have been
 * unmapped and mapped again since, to anything) - and is answered with the
 * first error, or 0.  A zapped PTE keeps what the daemon needs to know: a
 * clean page's write-protect marker, or nothing for a written one
 * (track.c).  Returns false if the channel is broken (the daemon is gone,
 * or spoke nonsense).
 */
static bool zap_serve(struct upc_client *cl)
{
	struct upc_msg *m = cl->zap_msg;
	int64_t r = 0;

	if (upc_msg_recv(cl->zap_sock, m, UPC_FROM_DAEMON) < 0)
		return false;
	upc_msg_close_fds(m);
	if (m->h.type != UPC_MSG_ZAP || m->dlen % UPC_ZAP_TRIPLE)
		return false;
	/* after the daemon's wait (100 ms), before it gives up (1 s): its late answers (zap.c) */
	if (cl->slow_zaps)
		usleep(150000 + (useconds_t)(m->h.seq % 4) * 100000);
	pthread_mutex_lock(&cl->maps_lock);
	for (size_t i = 0; i < m->dlen / UPC_ZAP_TRIPLE; i++) {
		uint64_t t[3];
		uintptr_t a, end;

		memcpy(t, m->data + UPC_ZAP_TRIPLE * i, sizeof(t));
		a = (uintptr_t)t[0];
		end = a + (uintptr_t)t[1];
		if ((a | end) & ~UPC_PAGE_MASK || end <= a) {
			r = r ? r : -EINVAL;
			continue;
		}
		/* every page of it in a writable range of that memfd at that page (ranges abut: upc_protect splits) */
		for (uintptr_t p = a; p < end;) {
			const struct crange *cr = cmaps_at(cl, p);

			if (!cr || !(cr->prot & PROT_WRITE) || cr->nozap || cr->file->mdev != (dev_t)m->args[0] ||
			    cr->file->mino != (ino_t)m->args[1] ||
			    cr->pgoff + ((p - cr->start) >> UPC_PAGE_SHIFT) != t[2] + ((p - a) >> UPC_PAGE_SHIFT)) {
				end = 0;
				break;
			}
			p = min_t(uintptr_t, end, cr->end);
		}
		if (!end) {
			r = r ? r : -ESTALE;
			continue;
		}
		if (madvise((void *)a, end - a, MADV_DONTNEED) < 0 && !r)
			r = -errno;
	}
	pthread_mutex_unlock(&cl->maps_lock);
	return upc_msg_send(cl->zap_sock, UPC_MSG_ZAP_DONE, m->h.seq, (uint64_t *)&r, 1, NULL, 0, NULL, 0) == 0;
}

/* Attach: our userfaultfd, pagemap and pidfd; then the relay signal and the reclaim channel. */
static long handshake_attach(struct upc_client *cl, int sock)
{
	int fds[3] = { atomic_load(&cl->uffd), -1, -1 };
	long ret = 0;

	fds[1] = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	fds[2] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fds[1] < 0 || fds[2] < 0)
		ret = -errno;
	else
		ret = xfer(cl, sock, UPC_MSG_ATTACH, NULL, 0, NULL, 0, fds, 3, NULL);
	/*
	 * The relay signal, through which the daemon asks this process to zap
	 * the poison markers of accesses it refused past end of file, once the
	 * file has grown over them (remote.c, sigbus.c); again to every daemon.
	 */
	if (ret == 0) {
		uint64_t sig;

		sigbus_install();
		sig = (uint64_t)sigbus_relay_signal();
		ret = xfer(cl, sock, UPC_MSG_RELAY, &sig, 1, NULL, 0, NULL, 0, NULL);
	}
	/* Our requests are numbered to be applied once (seq_next); again to every daemon that takes that. */
	if (ret == 0 && (cl->daemon_flags & UPC_DAEMON_F_ONCE))
		ret = xfer(cl, sock, UPC_MSG_ONCE, NULL, 0, NULL, 0, NULL, 0, NULL);
	if (fds[1] >= 0)
		close(fds[1]);
	if (fds[2] >= 0)
		close(fds[2]);
	return ret;
}

/*
 * A daemon is back: hand it every mapping (UPC_MSG_ADOPT, remote_adopt()).
 * A mapping it refuses cannot be served: made inaccessible, as when no
 * daemon comes back.  cl->lock held.
 */
/*
 * Hand the range @rp of the list to the daemon on @sock (UPC_MSG_ADOPT),
 * which knows it from then on as of connection @gen.  cl->lock and
 * maps_lock held; maps_lock is let go for the request (the daemon's calls
 * cut the list: answer_call), so @rp may be gone when it returns.  A
 * refused range is made inaccessible, if it is still ours.  Returns the
 * daemon's answer.
 */
long adopt_one(struct upc_client *cl, int sock, struct crange *rp, uint64_t gen)
{
	struct crange r = *rp;
	uint64_t args[4] = { r.start, r.end - r.start, r.pgoff, (uint64_t)r.prot };
	int fds[3] = { r.file->fd, r.file->memfd, r.file->statefd };
	long err;

	rp->gen = gen;
	r.file->refs++;		/* its descriptors stay while the lock is let go */
	pthread_mutex_unlock(&cl->maps_lock);
	err = xfer(cl, sock, UPC_MSG_ADOPT, args, 4, NULL, 0, fds, 3, NULL);
	pthread_mutex_lock(&cl->maps_lock);
	cfile_put(&cl->files, r.file);
	if (err < 0 && !conn_lost(err)) {
		pr_warn("upcd refused a mapping at %#lx: %s; it is no longer accessible\n", (unsigned long)r.start,
			upc_strerror((int)err));
		/*
		 * And forgotten, with its descriptors once no range needs them:
		 * a refused memfd (-ESTALE: another one serves the file now) must
		 * not be taken over at the next outage, where its pages, older
		 * than the file, would be written over it (review of 36c145e).
		 */
		for (size_t i = 0; i < cl->nmaps; i++)
			if (cl->maps[i].start == r.start && cl->maps[i].end == r.end) {
				mprotect((void *)r.start, r.end - r.start, PROT_NONE);
				cfile_put(&cl->files, cl->maps[i].file);
				cl->maps[i] = cl->maps[--cl->nmaps];
				break;
			}
	}
	return err;
}

static long adopt_all(struct upc_client *cl, int sock, uint64_t gen)
{
	long ret = 0;

	pthread_mutex_lock(&cl->maps_lock);
	for (;;) {
		size_t i;

		/*
		 * The first range the new daemon does not know yet: the list may
		 * change while adopt_one() lets go of the lock, so it is searched
		 * again each time.
		 */
		for (i = 0; i < cl->nmaps && cl->maps[i].gen == gen; i++)
			;
		if (i == cl->nmaps)
			break;
		ret = adopt_one(cl, sock, &cl->maps[i], gen);
		if (conn_lost(ret))
			break;
		ret = 0;
	}
	pthread_mutex_unlock(&cl->maps_lock);
	return ret;
}

/*
 * The daemon went away.  Until one is back on the socket, this process
 * serves the faults of its mappings itself (takeover.c), and its msyncs;
 * every other call waits for $UPC_RECONNECT seconds (request_fds), then
 * fails with -ENOTCONN.  The memfds and their page table stay as they are,
 * dirty pages included.  When a daemon answers, this process hands its
 * files back (takeover_end: what it wrote meanwhile is protected and in
 * the file), then the new daemon adopts every mapping.  Where this process
 * cannot serve itself (asynchronous tracking; a file whose takeover lock a
 * live daemon holds), an access that needs a fault waits in the kernel,
 * and after reconnect_ms without a daemon the mappings are made
 * inaccessible.  Returns the new connection, or -1: no daemon came back in
 * time, or the cache is being destroyed (@efd).
 */
#define HELLO_WAIT_MS	2000	/* a restarted daemon's answer to hello (reconnect) */

static int reconnect(struct upc_client *cl, int efd)
{
	uint64_t deadline = now_ms() + cl->reconnect_ms;
	unsigned int wait_ms = 10;
	bool refused = false;

	takeover_begin(cl);
	for (;;) {
		struct pollfd pfd = { .fd = efd, .events = POLLIN };
		struct creply rep = { 0 };
		int s;
		long ret;

		if (now_ms() >= deadline && !atomic_load(&cl->to_active))
			return -1;
		if (poll(&pfd, 1, (int)wait_ms) > 0)
			return -1;
		/* every 100 ms at most: a restarted daemon waits for the clients that serve themselves */
		wait_ms = wait_ms >= 1000 ? 1000 : min_t(unsigned int, 2 * wait_ms, 100);
		s = sys_seqpacket_connect(cl->path);
		if (s < 0) {
			takeover_begin(cl);	/* a file whose dying daemon still held its lock */
			continue;
		}
		/*
		 * Handed back only to a daemon that answers.  A connect alone
		 * proves nothing: a dying daemon's listening socket takes
		 * connections into its backlog until the kernel releases it,
		 * after the connection whose hang-up woke us (a dying process's
		 * descriptors are released last first: on Linux 6.18, connects
		 * made after the hang-up succeeded until the backlog was full),
		 * and a socket systemd holds (upcd.socket) takes them while no
		 * daemon runs at all.  Handed back on a connect, the pages
		 * written here went to the file early, and the faults waited
		 * for an answer that might never come instead of being served
		 * here (test_shared.c, kill_daemon_then).  And it answers within
		 * HELLO_WAIT_MS, or it is no daemon (stopped, SIGSTOP; a socket
		 * systemd holds while the service does not start): this thread
		 * holds cl->lock meanwhile, which every other call of this
		 * process and the cache's destruction wait for.
		 */
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ .tv_sec = HELLO_WAIT_MS / 1000 },
			   sizeof(struct timeval));
		pthread_mutex_lock(&cl->lock);
		ret = hello(cl, s, &rep);
		pthread_mutex_unlock(&cl->lock);
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 0 }, sizeof(struct timeval));
		if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
			close(s);
			takeover_begin(cl);	/* as with no socket: a file whose dying daemon still held its lock */
			continue;
		}
		/*
		 * A daemon that answered, even to refuse this process (its
		 * limits, another version), serves: it may adopt our files
		 * (from a keeper, or at another client's request), and must not
		 * find us serving them beside it.
		 */
		if (!conn_lost(ret))
			takeover_end(cl);
		pthread_mutex_lock(&cl->lock);
		if (ret == 0 && atomic_load(&cl->uffd) >= 0)
			ret = handshake_attach(cl, s);
		if (ret == 0)
			ret = adopt_all(cl, s, cl->gen + 1);
		if (ret == 0)
			ret = pins_replay(cl, s, cl->gen + 1);	/* before any other request: cl->lock is held */
		if (ret == 0)
			ret = reclaim_channel(cl, s);
		if (ret == 0) {
			close(cl->sock);
			cl->sock = s;
			cl->gen++;
			cl->state = CL_UP;
			pthread_cond_broadcast(&cl->up);
			pthread_mutex_unlock(&cl->lock);
			pr_info("upcd is back: %zu mappings adopted\n", cl->nmaps);
			return s;
		}
		/* the ranges this attempt handed over are unknown to the next daemon again */
		pthread_mutex_lock(&cl->maps_lock);
		for (size_t i = 0; i < cl->nmaps; i++)
			if (cl->maps[i].gen == cl->gen + 1)
				cl->maps[i].gen = cl->gen;
		pthread_mutex_unlock(&cl->maps_lock);
		pthread_mutex_unlock(&cl->lock);
		close(s);
		/*
		 * A daemon that answers serves, even one that refused us (its
		 * limits, another version): we handed back, and do not take
		 * over again while it answers (it may adopt the files under its
		 * lock at any moment, and a takeover taken back at once would
		 * only make it wait its 10 s and adopt them beside us).  Our
		 * faults wait meanwhile, for it to let us in, or for
		 * $UPC_RECONNECT (upcd(8), BUGS).
		 */
		if (!conn_lost(ret)) {
			if (!refused)
				pr_warn("upcd refused this process back: %s; asking again every second\n",
					upc_strerror((int)ret));
			refused = true;
			wait_ms = 1000;
			continue;
		}
		takeover_begin(cl);
	}
}

static void *watcher_main(void *arg)
{
	struct upc_client *cl = arg;

	for (;;) {
		struct pollfd pfd[3] = { { .fd = cl->sock, .events = POLLRDHUP }, { .fd = cl->watch_efd, .events = POLLIN },
					 { .fd = cl->zap_sock, .events = POLLIN } };

		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (pfd[1].revents)
			return NULL;
		/* A broken channel: the daemon asks no more (its connection's hang-up is below). */
		if (pfd[2].revents && !((pfd[2].revents & POLLIN) && zap_serve(cl))) {
			close(cl->zap_sock);
			cl->zap_sock = -1;
		}
		if (!(pfd[0].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			continue;
		pthread_mutex_lock(&cl->lock);
		if (cl->state == CL_UP) {
			cl->state = CL_DOWN;
			cl->down_deadline = now_ms() + cl->reconnect_ms;
		}
		pthread_mutex_unlock(&cl->lock);
		if (cl->reconnect_ms) {
			pr_warn("upcd went away: waiting up to %u ms for it to come back\n", cl->reconnect_ms);
			if (reconnect(cl, cl->watch_efd) >= 0)
				continue;
			takeover_end(cl);	/* destroyed: its mappings are gone already */
		}
		pthread_mutex_lock(&cl->lock);
		cl->state = CL_DEAD;
		pthread_cond_broadcast(&cl->up);
		pthread_mutex_unlock(&cl->lock);
		pr_warn("upcd went away: this process's shared mappings are no longer accessible\n");
		cmaps_revoke(cl);
		/*
		 * Threads already waiting in a fault would wait for ever:
		 * closing the last descriptor of the userfaultfd wakes them,
		 * and they fault again on PROT_NONE (SIGSEGV).
		 */
		close(atomic_exchange(&cl->uffd, -1));
		return NULL;
	}
}

/*
 * Connect to the daemon at cl->path and become its client: hello, our own
 * userfaultfd, attach (with the relay signal: handshake()), and the
 * watcher thread.  For client_create(), and for a forked child's own
 * connection (client_fork_child).
 */
long client_connect(struct upc_client *cl)
{
	struct creply rep = { 0 };
	long ret;

	ret = sys_seqpacket_connect(cl->path);
	if (ret < 0)
		return ret;
	cl->sock = (int)ret;
	atomic_store(&cl->uffd, -1);
	ret = handshake(cl, cl->sock, &rep);	/* hello only: no userfaultfd yet */
	if (ret < 0)
		return ret;
	cl->daemon_features = rep.args[1];
	/*
	 * Never fork events: a forked child is a client of its own, and maps
	 * again what it inherits (client_fork_child), so the mappings are
	 * not inherited at all (MADV_DONTFORK: client_map).
	 */
	cl->features = rep.args[1] & ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
	cl->track_mode = (uint32_t)rep.args[2];
	ret = sys_uffd_open(cl->features, NULL, NULL);
	if (ret < 0)
		return ret;
	atomic_store(&cl->uffd, (int)ret);
	ret = handshake_attach(cl, cl->sock);
	if (ret == 0)
		ret = reclaim_channel(cl, cl->sock);	/* before the watcher, which reads it */
	if (ret < 0)
		return ret;
	cl->state = CL_UP;
	cl->watch_efd = eventfd(0, EFD_CLOEXEC);
	if (cl->watch_efd < 0 || pthread_create(&cl->watcher, NULL, watcher_main, cl) != 0) {
		if (cl->watch_efd >= 0)
			close(cl->watch_efd);
		cl->watch_efd = -1;
		return -EAGAIN;
	}
	pthread_setname_np(cl->watcher, "upc-watch");
	return 0;
}
