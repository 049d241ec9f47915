/* SPDX-License-Identifier: MIT */
/*
 * keeper.c - what keeps a dead daemon's cache (upcd(8), "Restarts").
 *
 * The kernel's page cache does not die with the process that dirtied it;
 * upcd's memfds die with the last process that holds a descriptor of them.
 * While the daemon lives, that is the daemon; when it is killed, the
 * clients that map the file (each serves itself: lib/client/takeover.c);
 * when the last of those dies too, or when nobody mapped the file any more
 * (a process wrote it and exited, and the daemon was killed before the
 * write-back), the pages go, dirty or not.  So upcd starts a process of
 * its own, upcd-keeper, that holds, for every file the cache holds, a
 * descriptor of the file and of its two memfds, and nothing else:
 *
 *   daemon -> keeper   KEEP (the three descriptors), FORGET (the file left
 *                      the cache, clean), BYE (upcd exits after writing
 *                      everything back: the keeper exits too);
 *   keeper -> a new daemon, on its socket (--keeper-socket, by default
 *                      "<socket>.keeper") once its daemon died without
 *                      BYE: an ENTRY a file (copies of its descriptors),
 *                      END; the new daemon answers ATTACH, and from then
 *                      on the keeper is its keeper, the connection its
 *                      channel.  Nothing moves between keepers, so nothing
 *                      can be lost between two (review of e2d7e5f: a new
 *                      keeper that could not start, EMFILE, after the old
 *                      one had let go).  A hand-over that fails leaves the
 *                      keeper alone, with everything.
 *
 * The new daemon adopts every file so handed over (keeper_adopt), not only
 * when a process asks for it, because nobody may ever ask: then the reaper
 * writes the dirty pages back, as it writes back every unused dirty file.
 * The adoption is the one a client's hand-back takes (adopt.c,
 * file_adopt_wait, through the orphan list): it waits for the clients that
 * serve themselves, and marks dirty what the page table and the journal
 * say is dirty.
 *
 * The keeper holds descriptors of its own open file descriptions, opened
 * again through /proc/self/fd, never the daemon's: an OFD lock lives as
 * long as any descriptor of its description, and the daemon's takeover lock
 * on the page table (cache.c, file_new) must go with the daemon, or no
 * client would ever serve itself (takeover.c, rule 1).  For the same
 * reason it does not keep a client's description of the file (a client's
 * own OFD locks would outlive it), only where the file cannot be opened
 * again (then, as the store does: store.c, fs_open).
 *
 * Its lifetime: it lives as long as its daemon, then as long as it holds
 * anything and its socket's path still names its socket (removing it
 * gives the pages up; the test suite does so).  It is
 * its own session, with /dev/null for standard input and outputs, so that
 * neither a terminal's signals nor a pipe that a caller waits on tie it to
 * its launcher.  upcd.service kills only upcd (KillMode=process) and gives
 * the keeper's socket a runtime directory of its own.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "keeper.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

enum { KEEP_FILE = 1, KEEP_FORGET, KEEP_BYE, KEEP_ENTRY, KEEP_END, KEEP_ATTACH };

struct keep_msg {
	uint32_t op;
	uint32_t nfds;
	uint64_t key;
};

#define KEEPER_TAKE_TIMEOUT_MS	2000	/* a keeper that does not answer: its daemon lives */
#define KEEPER_DONE_TIMEOUT_MS	10000	/* the new daemon's DONE */
#define KEEPER_CHECK_MS		1000	/* the socket's path, checked so often once alone */

static int keep_chan = -1;		/* the daemon's end of its keeper's channel */
static bool keep_warned;
static pthread_t adopt_thread;		/* keeper_adopt's */
static bool adopting;
static pthread_mutex_t adopt_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t adopt_cond = PTHREAD_COND_INITIALIZER;
static bool adopt_stop;			/* keeper_adopt_wait: the daemon exits */

/*
 * How long the files adopted from a keeper are held: as long as the
 * earlier daemons' memfds are listed for their clients (adopt.c,
 * ORPHANS_TTL_MS).  Let go at once, a clean file was released, and the
 * hand-back of a client that maps it was refused as a memfd of a file
 * this daemon had let go (-ESTALE: review of 70969e6, a clean mapping
 * became inaccessible at every restart).
 */
#define ADOPT_HOLD_MS	(5 * 60 * 1000)

static int send_fds(int s, const struct keep_msg *m, const int *fds, unsigned int nfds, int flags)
{
	ssize_t r = sys_send_fds(s, m, sizeof(*m), fds, nfds, flags);

	return r == (ssize_t)sizeof(*m) ? 0 : r < 0 ? (int)r : -EIO;
}

/* One message, with exactly its descriptors (3 for FILE and ENTRY, else none): else -EPROTO. */
static int recv_fds(int s, struct keep_msg *m, int *fds)
{
	unsigned int n;
	ssize_t r = sys_recv_fds(s, m, sizeof(*m), fds, 3, &n);

	if (r < 0)
		return (int)r;
	if (r != (ssize_t)sizeof(*m) || n != ((m->op == KEEP_FILE || m->op == KEEP_ENTRY) ? 3u : 0u)) {
		for (unsigned int i = 0; i < n; i++)
			close(fds[i]);
		return -EPROTO;
	}
	return 0;
}

/* ------------------------------------------------------------ the keeper process */

struct entry {
	uint64_t key;
	int fd[3];
};

static struct entry *ents;
static size_t nents;

static void entry_close(struct entry *e)
{
	for (int i = 0; i < 3; i++)
		close(e->fd[i]);
}

/* A description of our own for @fd (see the top of this file); @fd is consumed. */
static int reopen_own(int fd, bool file)
{
	char path[32];
	int fl = fcntl(fd, F_GETFL), nfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, (file && (fl & O_ACCMODE) == O_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (nfd < 0 && !file) {
		close(fd);	/* never the daemon's description of a memfd: its lock must die with it */
		return -1;
	}
	if (nfd < 0)
		return fd;
	close(fd);
	return nfd;
}

static void keep_file(uint64_t key, int *fds)
{
	struct entry e = { .key = key };
	size_t i;

	e.fd[0] = reopen_own(fds[0], true);
	e.fd[1] = reopen_own(fds[1], false);
	e.fd[2] = reopen_own(fds[2], false);
	if (e.fd[1] < 0 || e.fd[2] < 0) {
		for (int k = 0; k < 3; k++)
			if (e.fd[k] >= 0)
				close(e.fd[k]);
		return;
	}
	for (i = 0; i < nents && ents[i].key != key; i++)
		;
	if (i < nents) {		/* again, with a writable descriptor of the file */
		entry_close(&ents[i]);
		ents[i] = e;
		return;
	}
	{
		struct entry *n = realloc(ents, (nents + 1) * sizeof(*n));

		if (!n) {
			entry_close(&e);
			return;
		}
		ents = n;
		ents[nents++] = e;
	}
}

static void forget_file(uint64_t key)
{
	for (size_t i = 0; i < nents; i++)
		if (ents[i].key == key) {
			entry_close(&ents[i]);
			ents[i] = ents[--nents];
			return;
		}
}

/* A new daemon of our user takes everything: 0 when it said DONE. */
static int hand_over(int s)
{
	struct keep_msg m = { .op = KEEP_END };
	struct ucred cr;
	socklen_t len = sizeof(cr);
	struct pollfd p = { .fd = s, .events = POLLIN };
	struct timeval tv = { .tv_sec = KEEPER_DONE_TIMEOUT_MS / 1000 };
	int fds[3];

	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.uid != geteuid())
		return -EPERM;
	/* a peer that does not read does not hold the keeper for ever */
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	for (size_t i = 0; i < nents; i++) {
		struct keep_msg e = { .op = KEEP_ENTRY, .nfds = 3, .key = ents[i].key };

		if (send_fds(s, &e, ents[i].fd, 3, 0) < 0)
			return -EPIPE;
	}
	if (send_fds(s, &m, NULL, 0, 0) < 0)
		return -EPIPE;
	if (poll(&p, 1, KEEPER_DONE_TIMEOUT_MS) != 1 || recv_fds(s, &m, fds) < 0 || m.op != KEEP_ATTACH)
		return -ETIMEDOUT;
	/* the new daemon's channel from now on: its sends must not time out here */
	tv.tv_sec = 0;
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
}

static bool path_is(const char *path, const struct stat *bound)
{
	struct stat st;

	return stat(path, &st) == 0 && st.st_dev == bound->st_dev && st.st_ino == bound->st_ino;
}

/*
 * The keeper: upcd started again as "upcd --run-keeper PATH" (keeper_start),
 * with its channel at descriptor 3 and its listening socket at 4.
 */
int keeper_run(const char *path)
{
	const int lsock = 4;
	int chan = 3;
	bool alone = false;
	struct stat bound;

	prctl(PR_SET_NAME, "upcd-keeper");
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (fcntl(chan, F_SETFD, FD_CLOEXEC) < 0 || fcntl(lsock, F_SETFD, FD_CLOEXEC) < 0 ||
	    stat(path, &bound) < 0)
		return 1;
	for (;;) {
		struct pollfd p = { .fd = alone ? lsock : chan, .events = POLLIN };
		struct keep_msg m;
		int fds[3], r;

		r = poll(&p, 1, alone ? KEEPER_CHECK_MS : -1);
		if (alone && (!nents || !path_is(path, &bound)))
			break;
		if (r <= 0)
			continue;
		if (alone) {
			int s = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);

			if (s >= 0 && hand_over(s) == 0) {
				/* the new daemon's keeper now: the connection is its channel */
				chan = s;
				alone = false;
				continue;
			}
			if (s >= 0)
				close(s);
			continue;
		}
		r = recv_fds(chan, &m, fds);
		if (r == -EINTR || r == -EPROTO)
			continue;
		if (r < 0) {
			/* the daemon died without BYE: what it held is ours to hand over */
			alone = true;
			close(chan);
			continue;
		}
		if (m.op == KEEP_FILE)
			keep_file(m.key, fds);
		else if (m.op == KEEP_FORGET)
			forget_file(m.key);
		else if (m.op == KEEP_BYE)
			break;
	}
	if (path_is(path, &bound))
		unlink(path);
	return 0;
}

/* ------------------------------------------------------------ the daemon's side */

static uint64_t file_key(const struct upc_file *f)
{
	return f->state_hdr ? f->state_hdr->memfd_ino : 0;
}

/*
 * The cache holds @f now (file_new), or holds it again with a writable
 * descriptor @fd (file_get_how): the keeper keeps them.  While the file
 * is being made, or under its lock: never blocks (a keeper that is behind, or stopped, costs
 * this file its keeping, said once, never the daemon its progress).
 */
static void keep(struct upc_cache *c, struct upc_file *f, int fd)
{
	struct keep_msg m = { .op = KEEP_FILE, .nfds = 3, .key = file_key(f) };
	int fds[3] = { fd, f->memfd, f->statefd };
	int ret;

	(void)c;
	if (!m.key)
		return;
	fdstore_keep(f, m.key, fd);	/* --fd-store (fdstore.c) */
	if (keep_chan < 0)
		return;
	ret = send_fds(keep_chan, &m, fds, 3, MSG_DONTWAIT);
	if (ret < 0 && !keep_warned) {
		keep_warned = true;
		pr_warn("keeper: %lx:%lu is not kept (%s): its dirty pages die with this daemon\n",
			(unsigned long)f->dev, (unsigned long)f->ino, upc_strerror(ret));
	}
}

static void forget(struct upc_cache *c, struct upc_file *f)
{
	struct keep_msg m = { .op = KEEP_FORGET, .key = file_key(f) };

	(void)c;
	if (!m.key)
		return;
	fdstore_forget(m.key);
	if (keep_chan >= 0)
		send_fds(keep_chan, &m, NULL, 0, MSG_DONTWAIT);
}

/* The cache tells keep() and forget() what to keep: the keeper, systemd's store, or both. */
void keeper_hooks(struct upc_cache *c)
{
	c->keep = keep;
	c->forget = forget;
}

/*
 * What systemd's store handed back (@more, consumed) joins what the keeper
 * did (*@k): a file both hand back is adopted once, from the keeper.
 */
void keeper_merge(struct kept **k, size_t *n, struct kept *more, size_t nmore)
{
	struct kept *all = nmore ? realloc(*k, (*n + nmore) * sizeof(*all)) : *k;

	for (size_t i = 0; i < nmore; i++) {
		bool dup = false;

		for (size_t j = 0; all && j < *n && !dup; j++)
			dup = all[j].key == more[i].key;
		if (dup || !all) {
			/*
			 * No room: left in the store, adopted at the next start
			 * (and not removed from it at a clean exit).
			 */
			if (!dup)
				fdstore_leave(more[i].key);
			close(more[i].fd);
			close(more[i].memfd);
			close(more[i].statefd);
			continue;
		}
		all[(*n)++] = more[i];
	}
	if (all)
		*k = all;
	free(more);
}

/*
 * The keeper of an earlier daemon on @kpath sends copies of what it holds
 * (*@out, *@n: the caller adopts them, keeper_adopt) and becomes this
 * daemon's keeper: 1.  No keeper there (or a stale path): 0, and the caller
 * starts one (keeper_start).  A keeper that does not answer (its daemon
 * lives: -EBUSY), another user's (-EACCES), or a hand-over that fails
 * part-way: < 0, the keeper keeps everything, and the caller runs without.
 */
int keeper_takeover(struct upc_cache *c, const char *kpath, struct kept **out, size_t *n)
{
	struct kept *k = NULL;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	struct timeval tv = { .tv_sec = KEEPER_TAKE_TIMEOUT_MS / 1000 };
	int s, ret = 0;

	*out = NULL;
	*n = 0;
	s = sys_seqpacket_connect(kpath);
	if (s == -ENAMETOOLONG || s == -EMFILE || s == -ENFILE || s == -ENOMEM)
		return s;
	if (s < 0)
		return 0;	/* none, or a stale path: keeper_start() replaces it */
	/*
	 * A keeper of our own user only: another one's descriptors are not
	 * ours to adopt.  (The credentials are those of the socket's listen(),
	 * the daemon that started the keeper: the same user.)
	 */
	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.uid != geteuid()) {
		close(s);
		return -EACCES;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		struct keep_msg m;
		int fds[3];

		ret = recv_fds(s, &m, fds);
		if (ret == -EAGAIN)	/* nothing at all: a keeper whose daemon lives (it answers only alone) */
			ret = *n ? -ETIMEDOUT : -EBUSY;
		if (ret < 0 || m.op == KEEP_END)
			break;
		if (m.op != KEEP_ENTRY) {
			ret = -EPROTO;
			break;
		}
		{
			struct kept *nk = realloc(k, (*n + 1) * sizeof(*nk));

			if (!nk) {
				for (int i = 0; i < 3; i++)
					close(fds[i]);
				ret = -ENOMEM;
				break;
			}
			k = nk;
			k[(*n)++] = (struct kept){ m.key, fds[0], fds[1], fds[2] };
		}
	}
	if (ret == 0) {
		struct keep_msg m = { .op = KEEP_ATTACH };
		int sndbuf = 4 << 20;

		/*
		 * ATTACH: the keeper keeps what it holds, and is this daemon's
		 * from now on, on its socket, the connection its channel
		 * (keeper_run): nothing of it moves, so nothing can be lost
		 * between two keepers (review of e2d7e5f: a new keeper that
		 * could not start after the old one let go).
		 */
		ret = send_fds(s, &m, NULL, 0, 0);
		if (ret == 0) {
			tv.tv_sec = 0;
			setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
			keep_chan = s;
			keeper_hooks(c);
			*out = k;
			return 1;
		}
	}
	{
		/*
		 * Taken over in part, or not at all: the keeper keeps all it
		 * holds, and its path (the caller starts no keeper over it).
		 */
		for (size_t i = 0; i < *n; i++) {
			close(k[i].fd);
			close(k[i].memfd);
			close(k[i].statefd);
		}
		free(k);
		*n = 0;
	}
	close(s);
	return ret;
}

/*
 * Start this daemon's keeper on @kpath: upcd itself again
 * (/proc/self/exe), by posix_spawn: a fork of this process, whose threads
 * hold locks and whose engine has fork handlers of its own (fork.c), would
 * be a copy of all that; an exec is a process of its own.  Its own
 * session, /dev/null for its standard descriptors, no other descriptor.
 */
int keeper_start(struct upc_cache *c, const char *kpath)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none;
	int sv[2], ls = -1, sndbuf = 4 << 20, hi, ret;
	char *argv[] = { "upcd-keeper", "--run-keeper", sa.sun_path, NULL };
	pid_t pid;

	if (strlen(kpath) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, kpath);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ls = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (ls < 0)
		goto err;
	unlink(sa.sun_path);	/* a stale one: a keeper there would have answered (keeper_takeover) */
	{
		mode_t old = umask(0077);	/* connecting is its owner's only */
		int r = bind(ls, (struct sockaddr *)&sa, sizeof(sa));

		umask(old);
		if (r < 0 || listen(ls, 4) < 0)
			goto err;
	}
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	sigemptyset(&none);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
	posix_spawnattr_setsigmask(&at, &none);
	/*
	 * Through numbers above both and above 4 first, so that neither the
	 * standard descriptors nor 3 and 4 overwrite one of them.  Every
	 * action is checked: glibc refuses a number past the descriptor
	 * limit (EBADF), and a keeper without its socket would hold files
	 * nobody can take from it (review of e2d7e5f).
	 */
	hi = (sv[1] > ls ? sv[1] : ls) + 1;
	if (hi < 5)
		hi = 5;
	ret = posix_spawn_file_actions_adddup2(&fa, sv[1], hi);
	if (!ret)
		ret = posix_spawn_file_actions_adddup2(&fa, ls, hi + 1);
	if (!ret)
		ret = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
	if (!ret)
		ret = posix_spawn_file_actions_adddup2(&fa, 0, 1);
	if (!ret)
		ret = posix_spawn_file_actions_adddup2(&fa, 0, 2);
	if (!ret)
		ret = posix_spawn_file_actions_adddup2(&fa, hi, 3);
	if (!ret)
		ret = posix_spawn_file_actions_adddup2(&fa, hi + 1, 4);
	if (!ret)
		ret = posix_spawn_file_actions_addclosefrom_np(&fa, 5);
	if (!ret)
		ret = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (ret) {
		errno = ret;
		goto err;
	}
	close(sv[1]);
	close(ls);
	keep_chan = sv[0];
	keeper_hooks(c);
	pr_info("keeper: process %d keeps this daemon's files (%s)\n", (int)pid, sa.sun_path);
	return 0;
err:
	ret = -errno;
	if (ls >= 0)
		close(ls);
	close(sv[0]);
	close(sv[1]);
	return ret;
}

/*
 * upcd exits after writing everything back: its keeper holds nothing that
 * needs it.  Not sent when the write-back failed: then what the keeper
 * holds is the next daemon's to try again.
 */
void keeper_bye(void)
{
	struct keep_msg m = { .op = KEEP_BYE };

	fdstore_bye();
	if (keep_chan >= 0)
		send_fds(keep_chan, &m, NULL, 0, 0);
}

struct adopt_job {
	struct upc_cache *c;
	struct kept *k;
	size_t n;
};

static void *adopt_main(void *arg)
{
	struct adopt_job *j = arg;
	struct upc_file **held = calloc(j->n ? j->n : 1, sizeof(*held));
	size_t done = 0;
	uint64_t until;

	for (size_t i = 0; i < j->n; i++) {
		struct upc_file *f = NULL;
		int ret = cache_adopt_orphans(j->c, j->k[i].fd, &f);

		if (ret == 0) {
			/*
			 * In the cache now, its dirty pages written back as any
			 * are (when they expire, at a sync), not at once: a
			 * client that serves itself on the file hands it back
			 * and pins its pages again after the adoption (client.c,
			 * pins_replay), and a page it holds back from write-back
			 * must not be written in between (test_shared,
			 * a_clients_pins_survive_a_daemon_restart).
			 */
			if (held)
				held[done] = f;
			else
				file_put(f);
			done++;
		} else if (ret < 0) {
			/* listed still: a later lookup tries again, and the keeper is not let go at exit */
			pr_warn("keeper: the earlier daemon's memfd %llu is not adopted yet: %s\n",
				(unsigned long long)j->k[i].key, upc_strerror(ret));
		}
		/* 1: a lookup of the file adopted it first, or it was not this file's any more */
		close(j->k[i].fd);
	}
	pr_info("keeper: %zu of %zu files of the earlier daemon adopted here\n", done, j->n);
	until = now_ms() + ADOPT_HOLD_MS;
	pthread_mutex_lock(&adopt_mutex);
	while (!adopt_stop && held && now_ms() < until)
		cond_wait_ms(&adopt_cond, &adopt_mutex, 1000);
	pthread_mutex_unlock(&adopt_mutex);
	for (size_t i = 0; held && i < done; i++)
		file_put(held[i]);
	free(held);
	free(j->k);
	free(j);
	return NULL;
}

/*
 * Adopt what keeper_takeover() handed over.  The memfds join the cache's
 * orphan list at once (adopt.c, cache_add_kept), so that the first lookup
 * of such a file adopts them, whoever makes it; a thread of its own then
 * adopts the rest one by one, each maybe waiting for the clients that
 * serve themselves on the file (file_adopt_lockwait), while this daemon
 * already serves.  @k is consumed.
 */
int keeper_adopt(struct upc_cache *c, struct kept *k, size_t n)
{
	struct adopt_job *j;
	pthread_t t;

	for (size_t i = 0; i < n; i++) {
		int ret = cache_add_kept(c, k[i].fd, k[i].memfd, k[i].statefd);

		if (ret < 0)
			pr_warn("keeper: the earlier daemon's memfd %llu: %s\n", (unsigned long long)k[i].key,
				upc_strerror(ret));
	}
	if (!n) {
		free(k);
		return 0;
	}
	j = malloc(sizeof(*j));
	if (j)
		*j = (struct adopt_job){ c, k, n };
	if (!j || pthread_create(&t, NULL, adopt_main, j) != 0) {
		/* listed all the same: each is adopted at its file's first lookup */
		for (size_t i = 0; i < n; i++)
			close(k[i].fd);
		free(k);
		free(j);
		return j ? -EAGAIN : -ENOMEM;
	}
	adopt_thread = t;
	adopting = true;
	return 0;
}

/* Before the cache goes (upcd's exit): the adoptions keeper_adopt() started are done. */
void keeper_adopt_wait(void)
{
	pthread_mutex_lock(&adopt_mutex);
	adopt_stop = true;
	pthread_cond_broadcast(&adopt_cond);
	pthread_mutex_unlock(&adopt_mutex);
	if (adopting)
		pthread_join(adopt_thread, NULL);
	adopting = false;
}
