/* SPDX-License-Identifier: MIT */
/*
 * fdstore.c - systemd's file descriptor store as a second keeper (upcd(8),
 * "The keeper").  The keeper is a process, and a process can be killed
 * with the daemon: "systemctl kill upcd" signals every process of the
 * unit, and then a file nobody maps loses its dirty pages.  The service
 * manager's store is no process of ours: with --fd-store, every file the
 * keeper is told to keep is also sent there (sd_notify "FDSTORE=1"), and
 * systemd hands the descriptors back to the next upcd it starts, in
 * LISTEN_FDS after its socket, named by LISTEN_FDNAMES.
 *
 * Four names a file, its key the data memfd's inode number (the keeper's
 * key too), none with ':' (the separator of LISTEN_FDNAMES):
 *
 *   upc-file-ro.KEY, upc-file-rw.KEY   the file (read-write once the cache
 *                                      has a writable descriptor of it)
 *   upc-mem.KEY, upc-pt.KEY            the data memfd, the page table's
 *
 * Each is a description of our own, opened again through /proc/self/fd,
 * never the daemon's, for the keeper's reason (keeper.c): the takeover
 * lock on the page table is an OFD lock, which must die with the daemon.
 * A file the cache lets go, clean, is removed from the store
 * ("FDSTOREREMOVE=1"), and so is everything at a clean exit, as BYE lets
 * the keeper go; a file already stored is not sent again, so a restart
 * adds nothing to the store.  systemd answers nothing: what is stored is
 * counted against the maximum it was given ($FDSTORE), and a file that
 * would not fit whole is not stored (store_max).  Nothing here waits for
 * systemd while a lock of the cache is held (keep runs under a file's lock
 * or while the file is being made, forget in the reclaim and flusher threads): a send
 * systemd's queue refuses is not waited for; a removal so refused is
 * tried again at the next keep or forget, and at exit, where it waits
 * (review of 98e3b21).  What systemd hands back joins what the keeper
 * hands back (keeper_adopt).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "fdstore.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { FD_FILE_RO, FD_FILE_RW, FD_MEM, FD_PT, FD_KINDS };

static const char *const kind_name[FD_KINDS] = { "upc-file-ro", "upc-file-rw", "upc-mem", "upc-pt" };

static int store_sock = -1;		/* a datagram socket, connected to $NOTIFY_SOCKET */
static bool store_warned;

/*
 * The files in the store (open addressing, linear probing, key 0 none: no
 * memfd has inode 0): how many of its descriptors the store holds, and
 * what is still to be removed.  store_used counts every descriptor the
 * store holds of ours, these and those left there untracked (@other: a
 * file handed back and not adopted now, for the next start), against
 * store_max ($FDSTORE; 0: not known).  All under store_lock.
 */
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;

struct slot {
	uint64_t key;
	uint8_t nfd;		/* its descriptors in the store */
	bool rw;		/* its file descriptor there is read-write */
	bool gone;		/* left the cache: every name to be removed */
	bool ro_left;		/* upc-file-ro to be removed (upc-file-rw is in) */
};

static struct slot *slots;
static size_t nslots, nkeys, npending;
static size_t store_max, store_used;

static struct slot *slot_find(uint64_t key)
{
	if (!nslots)
		return NULL;
	for (size_t i = key & (nslots - 1);; i = (i + 1) & (nslots - 1)) {
		if (slots[i].key == key)
			return &slots[i];
		if (!slots[i].key)
			return NULL;
	}
}

static struct slot *slot_add(uint64_t key)
{
	size_t i;

	if ((nkeys + 1) * 2 > nslots) {
		size_t n = nslots ? nslots * 2 : 64;
		struct slot *old = slots, *s = calloc(n, sizeof(*s));
		size_t oldn = nslots;

		if (!s)
			return NULL;
		slots = s;
		nslots = n;
		for (size_t k = 0; k < oldn; k++)
			if (old[k].key) {
				for (i = old[k].key & (n - 1); slots[i].key; i = (i + 1) & (n - 1))
					;
				slots[i] = old[k];
			}
		free(old);
	}
	for (i = key & (nslots - 1); slots[i].key; i = (i + 1) & (nslots - 1))
		if (slots[i].key == key)
			return &slots[i];
	slots[i] = (struct slot){ .key = key };
	nkeys++;
	return &slots[i];
}

/* Backward-shift deletion: no tombstones, so a lookup stops at the first hole. */
static void slot_del(struct slot *s)
{
	size_t i = (size_t)(s - slots), j = i;

	for (;;) {
		size_t home;

		j = (j + 1) & (nslots - 1);
		if (!slots[j].key)
			break;
		home = slots[j].key & (nslots - 1);
		/* slots[j] may move to i only if its home is not in (i, j] */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			slots[i] = slots[j];
			i = j;
		}
	}
	slots[i] = (struct slot){ 0 };
	nkeys--;
}

/*
 * One sd_notify message, with @fd or none.  0 or a negative errno.  Not
 * waiting for systemd unless @wait (then up to STORE_WAIT_MS, the
 * socket's send timeout): only where no lock of the cache is held.
 */
#define STORE_WAIT_MS	1000

static int store_send(const char *text, int fd, bool wait)
{
	ssize_t r = sys_send_fds(store_sock, text, strlen(text), &fd, fd >= 0, wait ? 0 : MSG_DONTWAIT);

	return r < 0 ? (int)r : 0;
}

static int store_put(int kind, uint64_t key, int fd)
{
	char text[96];

	snprintf(text, sizeof(text), "FDSTORE=1\nFDNAME=%s.%" PRIu64 "\n", kind_name[kind], key);
	return store_send(text, fd, false);
}

static int store_remove(int kind, uint64_t key, bool wait)
{
	char text[96];

	snprintf(text, sizeof(text), "FDSTOREREMOVE=1\nFDNAME=%s.%" PRIu64 "\n", kind_name[kind], key);
	return store_send(text, -1, wait);
}

/* Every name of @key out of the store: 0, or the first error (stopping there: the rest are tried again). */
static int store_remove_all(uint64_t key, bool wait)
{
	for (int k = 0; k < FD_KINDS; k++) {
		int r = store_remove(k, key, wait);

		if (r < 0)
			return r;
	}
	return 0;
}

/* What is still to be removed, tried (@wait: see store_send()).  Under store_lock. */
static void store_sweep(bool wait)
{
	for (size_t i = 0; npending && i < nslots;) {
		struct slot *s = &slots[i];

		if (s->key && s->gone) {
			if (store_remove_all(s->key, wait) < 0)
				return;		/* the queue is full: later */
			store_used -= s->nfd;
			npending--;
			slot_del(s);		/* another slot may have moved here: look at i again */
			continue;
		}
		if (s->key && s->ro_left) {
			if (store_remove(FD_FILE_RO, s->key, wait) < 0)
				return;
			s->ro_left = false;
			s->nfd--;
			store_used--;
			npending--;
		}
		i++;
	}
}

/* Mark @s to be removed whole. */
static void slot_gone(struct slot *s)
{
	if (!s->gone && !s->ro_left)
		npending++;
	s->ro_left = false;
	s->gone = true;
}

/* A description of our own of @fd (fdstore.c's top), read-write only if @fd's is and @rw asks. */
static int reopen(int fd, bool rw)
{
	char path[32];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, (rw && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC);
}

static void store_warn(const struct upc_file *f, const char *what, int err)
{
	if (store_warned)
		return;
	store_warned = true;
	pr_warn("fd store: %lx:%lu: %s: %s: only the keeper keeps it (and files after it, maybe)\n",
		(unsigned long)f->dev, (unsigned long)f->ino, what, upc_strerror(err));
}

/*
 * The file @f (key @key), with @fd, its descriptor of the file: into the
 * store, unless it is there.  The file as the keeper keeps it: a
 * description of our own, or the caller's where it cannot be opened again
 * (keeper.c, reopen_own).  Again with a writable descriptor: the
 * read-write one goes in before the read-only one comes out, so that the
 * store always holds one.  No file goes in that would not fit whole, with
 * room for that fourth descriptor.
 */
void fdstore_keep(struct upc_file *f, uint64_t key, int fd)
{
	bool rw = (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR;
	int own[3] = { -1, -1, -1 }, file, ret = 0;
	struct slot *s;

	if (store_sock < 0 || !key)
		return;
	pthread_mutex_lock(&store_lock);
	store_sweep(false);
	s = slot_find(key);
	if (s && !s->gone && (s->rw || !rw))
		goto out;
	if (s && s->gone) {		/* a memfd's inode number used again: the old one's names first */
		ret = -EBUSY;
		goto out;
	}
	if (store_max && store_used + (s ? 1 : 4) > store_max) {
		ret = -ENOSPC;
		goto out;
	}
	own[0] = reopen(fd, true);
	file = own[0] >= 0 ? own[0] : fd;
	if (!s) {
		own[1] = reopen(f->memfd, false);
		own[2] = reopen(f->statefd, false);
		s = own[1] >= 0 && own[2] >= 0 ? slot_add(key) : NULL;
		if (!s) {
			ret = own[1] < 0 || own[2] < 0 ? -errno : -ENOMEM;
			goto out;
		}
		for (int k = 0; k < 2 && !ret; k++) {
			ret = store_put(k ? FD_PT : FD_MEM, key, own[1 + k]);
			if (!ret) {
				s->nfd++;
				store_used++;
			}
		}
		if (!ret)
			ret = store_put(rw ? FD_FILE_RW : FD_FILE_RO, key, file);
		if (ret) {
			slot_gone(s);		/* what went in comes out */
			store_sweep(false);
			goto out;
		}
		s->nfd++;
		store_used++;
		s->rw = rw;
		goto out;
	}
	ret = store_put(FD_FILE_RW, key, file);
	if (ret)
		goto out;
	s->nfd++;
	store_used++;
	s->rw = true;
	s->ro_left = true;
	npending++;
	store_sweep(false);
out:
	pthread_mutex_unlock(&store_lock);
	for (int i = 0; i < 3; i++)
		if (own[i] >= 0)
			close(own[i]);
	if (ret < 0)
		store_warn(f, ret == -ENOSPC ? "not stored: the store is full" : "not stored", ret);
}

/* The file of @key left the cache, clean: out of the store (now, or at a later sweep). */
void fdstore_forget(uint64_t key)
{
	struct slot *s;

	if (store_sock < 0)
		return;
	pthread_mutex_lock(&store_lock);
	s = slot_find(key);
	if (s)
		slot_gone(s);
	store_sweep(false);
	pthread_mutex_unlock(&store_lock);
}

/* @key, handed back and not adopted now: left in the store for the next start, untracked (but counted). */
void fdstore_leave(uint64_t key)
{
	struct slot *s;

	pthread_mutex_lock(&store_lock);
	s = slot_find(key);
	if (s) {
		if (s->gone || s->ro_left)
			npending--;
		slot_del(s);	/* its descriptors stay counted in store_used */
	}
	pthread_mutex_unlock(&store_lock);
}

/* A clean exit, everything written back: the store is emptied (as BYE lets the keeper go), waiting. */
void fdstore_bye(void)
{
	pthread_mutex_lock(&store_lock);
	for (size_t i = 0; store_sock >= 0 && i < nslots; i++)
		if (slots[i].key)
			store_remove_all(slots[i].key, true);
	free(slots);
	slots = NULL;
	nslots = nkeys = npending = 0;
	store_used = 0;
	pthread_mutex_unlock(&store_lock);
}

/*
 * Keep files in systemd's store from now on, through $NOTIFY_SOCKET,
 * counting against @max descriptors (0: not known).  0, or -ENOENT
 * without one (not started by systemd: the caller says so and runs with
 * the keeper alone).
 */
int fdstore_start(size_t max)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = STORE_WAIT_MS / 1000, .tv_usec = (STORE_WAIT_MS % 1000) * 1000 };
	socklen_t sl;
	int fd;

	if (store_sock >= 0)
		return 0;
	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return -ENOENT;
	strcpy(sa.sun_path, path);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sl) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	store_sock = fd;
	store_max = max;
	return 0;
}

/* ------------------------------------------------------------ what systemd hands back */

struct handed {
	uint64_t key;
	int fd[FD_KINDS];
};

static struct handed *handed;
static size_t nhanded, ndropped;	/* ndropped: handed back, but not taken (out of memory) */

/*
 * A descriptor systemd passed, named @name: 1 if it is one of the store's
 * (taken: fdstore_take_all() hands it over), 0 if not (the caller's: the
 * socket).  A name of ours that does not parse is closed.
 */
int fdstore_take(int fd, const char *name)
{
	const char *dot = strrchr(name, '.');
	uint64_t key;
	char *end;
	size_t i;
	int kind;

	if (strncmp(name, "upc-", 4))
		return 0;
	for (kind = 0; kind < FD_KINDS; kind++)
		if (dot && (size_t)(dot - name) == strlen(kind_name[kind]) &&
		    !strncmp(name, kind_name[kind], (size_t)(dot - name)))
			break;
	errno = 0;
	key = dot ? strtoull(dot + 1, &end, 10) : 0;
	if (kind == FD_KINDS || !key || errno || *end) {
		close(fd);
		ndropped++;
		return 1;
	}
	for (i = 0; i < nhanded && handed[i].key != key; i++)
		;
	if (i == nhanded) {
		struct handed *n = realloc(handed, (nhanded + 1) * sizeof(*n));

		if (!n) {
			close(fd);	/* still in the store: the next start has it */
			ndropped++;
			return 1;
		}
		handed = n;
		handed[nhanded++] = (struct handed){ key, { -1, -1, -1, -1 } };
	}
	if (handed[i].fd[kind] >= 0)
		close(handed[i].fd[kind]);	/* twice (a store that kept a duplicate): one is enough */
	handed[i].fd[kind] = fd;
	return 1;
}

/* Did systemd hand back anything of its store?  (Then it keeps one for this unit.) */
bool fdstore_handed(void)
{
	return nhanded || ndropped;
}

/*
 * What systemd handed back, as the keeper hands it (keeper_adopt()):
 * *@out, *@n, a file each, with its read-write descriptor where the store
 * has one.  Each is tracked as stored (the store holds it still, and the
 * adoption's keep must not send it again; keeper_merge() lets go of one it
 * drops: fdstore_leave()).  A file the store holds in part cannot be
 * adopted: it is closed and removed from the store, unless something
 * handed back was dropped here (out of memory, a name that did not parse:
 * then it is left there, counted).  Runs before any client: removals wait.
 */
int fdstore_take_all(struct kept **out, size_t *n)
{
	struct kept *k = nhanded ? calloc(nhanded, sizeof(*k)) : NULL;
	int ret = 0;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&store_lock);
	store_used += ndropped;
	for (size_t i = 0; i < nhanded; i++) {
		struct handed *h = &handed[i];
		int file = h->fd[FD_FILE_RW] >= 0 ? h->fd[FD_FILE_RW] : h->fd[FD_FILE_RO];
		bool whole = file >= 0 && h->fd[FD_MEM] >= 0 && h->fd[FD_PT] >= 0;
		uint8_t nfd = 0;
		struct slot *s;

		for (int kind = 0; kind < FD_KINDS; kind++)
			nfd += h->fd[kind] >= 0;
		if (whole && !k)
			ret = -ENOMEM;
		if (!whole && k)
			pr_warn("fd store: memfd %" PRIu64 " handed back in part: not adopted\n", h->key);
		if (!whole || !k) {
			/* out of the store if it can be (a part of it may have been dropped: then left) */
			if (k && !ndropped && store_sock >= 0 && store_remove_all(h->key, true) == 0)
				nfd = 0;
			store_used += nfd;
			for (int kind = 0; kind < FD_KINDS; kind++)
				if (h->fd[kind] >= 0)
					close(h->fd[kind]);
			continue;
		}
		k[(*n)++] = (struct kept){ h->key, file, h->fd[FD_MEM], h->fd[FD_PT] };
		s = store_sock >= 0 ? slot_add(h->key) : NULL;
		if (!s) {
			store_used += nfd;	/* in the store, untracked */
		} else {
			s->nfd = nfd;
			store_used += nfd;
			s->rw = file == h->fd[FD_FILE_RW];
			if (s->rw && h->fd[FD_FILE_RO] >= 0) {
				s->ro_left = true;
				npending++;
			}
		}
		if (file == h->fd[FD_FILE_RW] && h->fd[FD_FILE_RO] >= 0)
			close(h->fd[FD_FILE_RO]);
	}
	if (store_sock >= 0)
		store_sweep(true);
	pthread_mutex_unlock(&store_lock);
	free(handed);
	handed = NULL;
	nhanded = 0;
	*out = k;
	return ret;
}
