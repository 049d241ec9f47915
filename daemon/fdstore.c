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
 * would not fit whole is not stored (store_max).  What systemd hands back
 * joins what the keeper hands back (keeper_adopt).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "keeper.h"

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
 * The keys in the store (open addressing, linear probing; 0 is no key:
 * no memfd has inode 0), and whether the file went in read-write.  Under
 * store_lock: keep runs under the cache's lock, forget without it (the
 * file is released outside it: cache.c, file_free).
 */
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
struct slot {
	uint64_t key;
	bool rw;
};

static struct slot *slots;
static size_t nslots, nkeys;

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
 * One sd_notify message, with @fd or none.  0 or a negative errno.
 * Stores never block (they run under the cache's lock): a store that is
 * slow costs that file its keeping there.  Removals wait a little
 * (STORE_REMOVE_MS, the socket's send timeout): one that is lost leaves a
 * clean file's memfds in systemd until the unit stops, handed to every
 * restart (review of 36133e3).
 */
#define STORE_REMOVE_MS	1000

static int store_send(const char *text, int fd, bool wait)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	if (fd >= 0) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do
		r = sendmsg(store_sock, &mh, MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

static int store_put(int kind, uint64_t key, int fd)
{
	char text[96];

	snprintf(text, sizeof(text), "FDSTORE=1\nFDNAME=%s.%" PRIu64 "\n", kind_name[kind], key);
	return store_send(text, fd, false);
}

static int store_remove(int kind, uint64_t key)
{
	char text[96];

	snprintf(text, sizeof(text), "FDSTOREREMOVE=1\nFDNAME=%s.%" PRIu64 "\n", kind_name[kind], key);
	return store_send(text, -1, true);
}

/* Every name of @key out of the store: 0, or the first error (the rest are sent all the same). */
static int store_remove_all(uint64_t key)
{
	int ret = 0;

	for (int k = 0; k < FD_KINDS; k++) {
		int r = store_remove(k, key);

		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
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
 * The descriptors in the store, counted against its maximum (systemd's
 * FileDescriptorStoreMax=, which it tells a service in $FDSTORE, systemd
 * 254 and later; upcd.service sets $FDSTORE itself for older ones).
 * systemd answers no FDSTORE=1: past the maximum it closes what it is
 * sent and logs, and upcd would not know.  So upcd stores no file that
 * would not fit whole (and the fourth descriptor a file holds while its
 * read-write one replaces its read-only one), and says so once.  0: no
 * maximum known.
 */
static size_t store_max, store_used;

/* The file @f (key @key), with @fd, its descriptor of the file: into the store, unless it is there. */
void fdstore_keep(struct upc_file *f, uint64_t key, int fd)
{
	bool rw = (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR;
	struct slot *s;
	int own[3] = { -1, -1, -1 }, file, ret = 0;

	if (store_sock < 0 || !key)
		return;
	pthread_mutex_lock(&store_lock);
	s = slot_find(key);
	if (s && (s->rw || !rw)) {
		pthread_mutex_unlock(&store_lock);
		return;
	}
	if (store_max && store_used + (s ? 1 : 4) > store_max) {
		ret = -ENOSPC;
		goto out;
	}
	/*
	 * The file as the keeper keeps it: a description of our own, or the
	 * caller's where it cannot be opened again (keeper.c, reopen_own).
	 * Again with a writable descriptor: the read-write one goes in before
	 * the read-only one comes out, so that the store always holds one.
	 */
	own[0] = reopen(fd, true);
	file = own[0] >= 0 ? own[0] : fd;
	if (!s) {
		own[1] = reopen(f->memfd, false);
		own[2] = reopen(f->statefd, false);
		if (own[1] < 0 || own[2] < 0) {
			ret = -errno;
			goto out;
		}
		ret = store_put(FD_MEM, key, own[1]);
		if (!ret)
			ret = store_put(FD_PT, key, own[2]);
		if (ret)
			goto undo;
	}
	ret = store_put(rw ? FD_FILE_RW : FD_FILE_RO, key, file);
	if (ret)
		goto undo;
	if (s) {
		store_used++;
		if (store_remove(FD_FILE_RO, key) == 0)
			store_used--;
		s->rw = true;
	} else {
		store_used += 3;
		s = slot_add(key);
		if (s) {
			s->rw = rw;
		} else {	/* not remembered, so nothing would remove it: out again, the keeper's alone */
			store_remove_all(key);
			store_used -= 3;
		}
	}
	goto out;
undo:
	if (!s)
		store_remove_all(key);
out:
	pthread_mutex_unlock(&store_lock);
	for (int i = 0; i < 3; i++)
		if (own[i] >= 0)
			close(own[i]);
	if (ret < 0)
		store_warn(f, ret == -ENOSPC ? "not stored: the store is full" : "not stored", ret);
}

/* The file of @key left the cache, clean: out of the store. */
void fdstore_forget(uint64_t key)
{
	struct slot *s;

	if (store_sock < 0)
		return;
	pthread_mutex_lock(&store_lock);
	s = slot_find(key);
	/* a removal that did not go through is tried again at a clean exit (fdstore_bye) */
	if (s && store_remove_all(key) == 0) {
		store_used -= 3;
		slot_del(s);
	}
	pthread_mutex_unlock(&store_lock);
}

/* Forget @key without touching the store: a file handed back that is not adopted now, left for the next start. */
void fdstore_leave(uint64_t key)
{
	struct slot *s;

	pthread_mutex_lock(&store_lock);
	s = slot_find(key);
	if (s) {
		store_used -= 3;
		slot_del(s);
	}
	pthread_mutex_unlock(&store_lock);
}

/* A clean exit, everything written back: the store is emptied (as BYE lets the keeper go). */
void fdstore_bye(void)
{
	pthread_mutex_lock(&store_lock);
	for (size_t i = 0; store_sock >= 0 && i < nslots; i++)
		if (slots[i].key)
			store_remove_all(slots[i].key);
	free(slots);
	slots = NULL;
	nslots = nkeys = 0;
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
	struct timeval tv = { .tv_sec = STORE_REMOVE_MS / 1000, .tv_usec = (STORE_REMOVE_MS % 1000) * 1000 };
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
static size_t nhanded;
static bool take_short;		/* a descriptor handed back was dropped: out of memory */

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
		return 1;
	}
	for (i = 0; i < nhanded && handed[i].key != key; i++)
		;
	if (i == nhanded) {
		struct handed *n = realloc(handed, (nhanded + 1) * sizeof(*n));

		if (!n) {
			close(fd);	/* still in the store: the next start has it */
			take_short = true;
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
	return nhanded || take_short;
}

/*
 * What systemd handed back, as the keeper hands it (keeper_adopt()):
 * *@out, *@n, a file each, with its read-write descriptor where the store
 * has one.  Each is remembered as stored (the store holds it still, and
 * the adoption's keep must not send it again; keeper_merge() forgets one
 * it drops: fdstore_leave()).  A file the store holds in part cannot be
 * adopted: it is closed, and removed from the store unless a part of it
 * was dropped here (out of memory: then the next start may find it whole).
 */
int fdstore_take_all(struct kept **out, size_t *n)
{
	struct kept *k = nhanded ? calloc(nhanded, sizeof(*k)) : NULL;
	int ret = 0;

	*out = NULL;
	*n = 0;
	for (size_t i = 0; i < nhanded; i++) {
		struct handed *h = &handed[i];
		int file = h->fd[FD_FILE_RW] >= 0 ? h->fd[FD_FILE_RW] : h->fd[FD_FILE_RO];
		bool whole = file >= 0 && h->fd[FD_MEM] >= 0 && h->fd[FD_PT] >= 0;
		struct slot *s;

		if (!whole || !k) {
			if (!k) {
				ret = -ENOMEM;	/* left in the store, for the next start */
			} else {
				pr_warn("fd store: memfd %" PRIu64 " handed back in part: not adopted\n", h->key);
				if (store_sock >= 0 && !take_short)
					store_remove_all(h->key);
			}
			for (int kind = 0; kind < FD_KINDS; kind++)
				if (h->fd[kind] >= 0)
					close(h->fd[kind]);
			continue;
		}
		if (file == h->fd[FD_FILE_RW] && h->fd[FD_FILE_RO] >= 0) {
			close(h->fd[FD_FILE_RO]);
			if (store_sock >= 0)
				store_remove(FD_FILE_RO, h->key);
		}
		k[(*n)++] = (struct kept){ h->key, file, h->fd[FD_MEM], h->fd[FD_PT] };
		pthread_mutex_lock(&store_lock);
		if (store_sock >= 0 && (s = slot_add(h->key))) {
			s->rw = file == h->fd[FD_FILE_RW];
			store_used += 3;
		}
		pthread_mutex_unlock(&store_lock);
	}
	free(handed);
	handed = NULL;
	nhanded = 0;
	*out = k;
	return ret;
}
