/* SPDX-License-Identifier: MIT */
/*
 * client.c - a cache created with UPC_CACHE_SHARED: this process is an
 * address space of upcd's cache (upcd(8)), and the page cache is the
 * daemon's.  The kernel analogy is the system-call boundary: what lives
 * here is what a process has of its own, its mappings and its
 * userfaultfd; files, pages, write-back and reclaim are on the other side.
 *
 * Every call of the API becomes one request on the connection (one at a
 * time: @lock); while the daemon serves it, it may ask this process to
 * munmap, mprotect or madvise its own addresses (UPC_MSG_CALL, which only
 * the owner of an mm can do: remote.c), and those calls are answered here
 * before the reply is read.
 *
 * upc_map() has two halves: the daemon checks the file descriptor passed
 * and hands back a descriptor of its memfd (read-only for a read-only
 * file), which is mapped here PROT_NONE; the daemon then registers the
 * range with this process's userfaultfd and write-protects it, and only
 * then does the mapping get its protection and its address returned.
 *
 * A forked child is a client of its own: it connects again and maps again
 * what its parent had (below, "fork").
 *
 * If the daemon goes away (a hangup on the socket, seen by the watcher
 * thread), every mapping of this cache is made inaccessible: an access
 * gets SIGSEGV, never a page of zeros for the file's data.  Taking the
 * faults over here (the embedded engine on the same memfds) is not done
 * yet: upcd(8), BUGS.
 */
#include "internal.h"
#include "../daemon/proto.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * A file this process maps: a descriptor of it of its own (a dup of the
 * caller's, read-write if any of them was), so that a forked child can map
 * it again through the daemon (client_fork_child).  Shared by the ranges
 * that map it.
 */
struct cfile {
	struct cfile *next;
	dev_t dev;
	ino_t ino;
	int fd;
	unsigned int refs;
};

/* One mapping of the cache in this process, as upc_map() made it. */
struct crange {
	uintptr_t start, end;
	uint64_t off;			/* file offset at @start */
	int map_prot;			/* the protection it was mapped with (what the daemon registered) */
	int prot;			/* its protection now (upc_protect) */
	struct cfile *file;
};

struct upc_client {
	int sock;
	_Atomic int uffd;
	uint64_t features;
	uint32_t track_mode;
	pthread_mutex_t lock;		/* one request at a time */
	uint64_t seq;
	struct upc_msg *msg;
	/* this process's mappings of the cache, for the daemon's death and for a forked child */
	pthread_mutex_t maps_lock;
	struct crange *maps;
	size_t nmaps, cap;
	struct cfile *files;
	_Atomic bool gone;
	pthread_t watcher;
	int watch_efd;
	char path[108];			/* the daemon's socket */
	uint64_t hello_flags, mem_limit;	/* what it said at hello, said again by a forked child */
	struct upc_client *next;	/* every shared cache of the process (the fork handlers) */
};

/* ------------------------------------------------------------ the local list of mappings */

static void cfile_put(struct upc_client *cl, struct cfile *cf)
{
	if (--cf->refs)
		return;
	for (struct cfile **pp = &cl->files; *pp; pp = &(*pp)->next)
		if (*pp == cf) {
			*pp = cf->next;
			break;
		}
	close(cf->fd);
	free(cf);
}

/* The cfile of the file open on @fd, a reference taken.  Caller holds maps_lock. */
static struct cfile *cfile_get(struct upc_client *cl, int fd)
{
	bool rw = (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR;
	struct cfile *cf;
	struct stat st;
	int dup;

	if (fstat(fd, &st) < 0)
		return NULL;
	for (cf = cl->files; cf; cf = cf->next)
		if (cf->dev == st.st_dev && cf->ino == st.st_ino)
			break;
	if (cf && (!rw || (fcntl(cf->fd, F_GETFL) & O_ACCMODE) == O_RDWR)) {
		cf->refs++;
		return cf;
	}
	dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dup < 0)
		return NULL;
	if (cf) {		/* a writable descriptor now: the child may map it writable */
		close(cf->fd);
		cf->fd = dup;
		cf->refs++;
		return cf;
	}
	cf = calloc(1, sizeof(*cf));
	if (!cf) {
		close(dup);
		return NULL;
	}
	*cf = (struct cfile){ .next = cl->files, .dev = st.st_dev, .ino = st.st_ino, .fd = dup, .refs = 1 };
	cl->files = cf;
	return cf;
}

static int cmaps_room(struct upc_client *cl, size_t extra)
{
	struct crange *n;
	size_t cap;

	if (cl->nmaps + extra <= cl->cap)
		return 0;
	cap = max_t(size_t, cl->cap ? 2 * cl->cap : 16, cl->nmaps + extra);
	n = realloc(cl->maps, cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	cl->maps = n;
	cl->cap = cap;
	return 0;
}

static int cmaps_add(struct upc_client *cl, uintptr_t start, uintptr_t end, int fd, uint64_t off, int prot)
{
	struct cfile *cf;
	int ret;

	pthread_mutex_lock(&cl->maps_lock);
	ret = cmaps_room(cl, 1);
	cf = ret == 0 ? cfile_get(cl, fd) : NULL;
	if (ret == 0 && !cf)
		ret = -ENOMEM;
	if (ret == 0)
		cl->maps[cl->nmaps++] = (struct crange){ .start = start, .end = end, .off = off, .map_prot = prot,
							 .prot = prot, .file = cf };
	pthread_mutex_unlock(&cl->maps_lock);
	return ret;
}

/* No range holds both @addr - 1 and @addr.  -ENOMEM: left whole.  Caller holds maps_lock. */
static int cmaps_split(struct upc_client *cl, uintptr_t addr)
{
	for (size_t i = 0; i < cl->nmaps; i++) {
		struct crange *r = &cl->maps[i], tail;

		if (r->start >= addr || r->end <= addr)
			continue;
		if (cmaps_room(cl, 1) < 0)
			return -ENOMEM;
		r = &cl->maps[i];
		tail = *r;
		tail.start = addr;
		tail.off += addr - r->start;
		tail.file->refs++;
		r->end = addr;
		cl->maps[cl->nmaps++] = tail;
		return 0;
	}
	return 0;
}

/*
 * [start, end) is unmapped: cut it out of the list (a mapping may be split
 * in two).  Out of memory for the split: kept whole; at the daemon's death
 * the hole is made PROT_NONE too, with whatever the process has mapped
 * there since, and a forked child cannot map it again (its address is
 * taken), so it goes without it.
 */
static void cmaps_cut(struct upc_client *cl, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&cl->maps_lock);
	if (cmaps_split(cl, start) == 0 && cmaps_split(cl, end) == 0)
		for (size_t i = 0; i < cl->nmaps; i++) {
			struct crange *r = &cl->maps[i];

			if (r->start >= start && r->end <= end) {
				cfile_put(cl, r->file);
				*r = cl->maps[--cl->nmaps];
				i--;
			}
		}
	pthread_mutex_unlock(&cl->maps_lock);
}

/* [start, end) has protection @prot now (the daemon's upc_protect): a forked child maps it so. */
static void cmaps_protect(struct upc_client *cl, uintptr_t start, uintptr_t end, int prot)
{
	pthread_mutex_lock(&cl->maps_lock);
	if (cmaps_split(cl, start) == 0 && cmaps_split(cl, end) == 0)
		for (size_t i = 0; i < cl->nmaps; i++)
			if (cl->maps[i].start >= start && cl->maps[i].end <= end)
				cl->maps[i].prot = prot;
	pthread_mutex_unlock(&cl->maps_lock);
}

/* The daemon is gone: no access to a mapping may read a hole of the memfd as data. */
static void cmaps_revoke(struct upc_client *cl)
{
	pthread_mutex_lock(&cl->maps_lock);
	for (size_t i = 0; i < cl->nmaps; i++)
		mprotect((void *)cl->maps[i].start, cl->maps[i].end - cl->maps[i].start, PROT_NONE);
	pthread_mutex_unlock(&cl->maps_lock);
}

static void *watcher_main(void *arg)
{
	struct upc_client *cl = arg;
	struct pollfd pfd[2] = { { .fd = cl->sock, .events = POLLRDHUP }, { .fd = cl->watch_efd, .events = POLLIN } };

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (pfd[1].revents)
			return NULL;
		if (pfd[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			atomic_store(&cl->gone, true);
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
}

/* ------------------------------------------------------------ requests */

/* A call of the daemon's: an operation on this process's own address space. */
static void answer_call(struct upc_client *cl, const struct upc_msg *m)
{
	uintptr_t addr = (uintptr_t)m->args[1];
	size_t len = (size_t)m->args[2];
	int arg = (int)(int64_t)m->args[3];
	int64_t r;

	switch (m->args[0]) {
	case UPC_CALL_MUNMAP:
		r = munmap((void *)addr, len) < 0 ? -errno : 0;
		if (r == 0)
			cmaps_cut(cl, addr, addr + len);
		break;
	case UPC_CALL_MPROTECT:
		r = mprotect((void *)addr, len, arg) < 0 ? -errno : 0;
		if (r == 0)
			cmaps_protect(cl, addr, addr + len, arg);
		break;
	case UPC_CALL_MADVISE:
		r = sys_madvise((void *)addr, len, arg);
		break;
	default:
		r = -EINVAL;
	}
	upc_msg_send(cl->sock, UPC_MSG_CALL_DONE, m->h.seq, (uint64_t *)&r, 1, NULL, 0, NULL, 0);
}

struct creply {
	uint64_t args[UPC_PROTO_MAX_ARGS];
	unsigned int argc;
	void *data;			/* where the reply's data goes */
	size_t dcap, dlen;
	int fd;
};

/*
 * Send a request with @nfds descriptors and wait for its reply, answering
 * the daemon's calls meanwhile.  Returns the reply's result (a value or a
 * negative errno), or -ENOTCONN once the daemon is gone.
 */
static long request_fds(struct upc_client *cl, uint16_t type, const uint64_t *args, unsigned int argc,
			const void *data, size_t dlen, const int *fds, unsigned int nfds, struct creply *rep)
{
	struct upc_msg *m = cl->msg;
	long ret;

	if (rep)
		rep->fd = -1;
	if (atomic_load(&cl->gone))
		return -ENOTCONN;
	pthread_mutex_lock(&cl->lock);
	cl->seq++;
	ret = upc_msg_send(cl->sock, type, cl->seq, args, argc, data, dlen, fds, nfds);
	while (ret == 0) {
		ret = upc_msg_recv(cl->sock, m, UPC_FROM_DAEMON);
		if (ret < 0)
			break;
		if (m->h.type == UPC_MSG_CALL && m->h.seq == cl->seq) {
			answer_call(cl, m);
			continue;
		}
		if (m->h.type != UPC_MSG_REPLY || m->h.seq != cl->seq) {
			upc_msg_close_fds(m);
			ret = -EPROTO;
			break;
		}
		ret = (long)(int64_t)m->args[0];
		if (rep) {
			rep->argc = m->h.argc - 1;
			memcpy(rep->args, m->args + 1, rep->argc * 8);
			rep->dlen = min_t(size_t, m->dlen, rep->dcap);
			if (rep->dlen)
				memcpy(rep->data, m->data, rep->dlen);
			if (m->nfds) {
				rep->fd = m->fds[0];
				m->fds[0] = -1;
			}
		}
		upc_msg_close_fds(m);
		break;
	}
	pthread_mutex_unlock(&cl->lock);
	if (ret == -ECONNRESET || ret == -EPIPE)
		ret = -ENOTCONN;
	return ret;
}

/* request_fds() with one descriptor, or none for @fd -1 */
static long request(struct upc_client *cl, uint16_t type, const uint64_t *args, unsigned int argc,
		    const void *data, size_t dlen, int fd, struct creply *rep)
{
	return request_fds(cl, type, args, argc, data, dlen, &fd, fd >= 0, rep);
}

/* ------------------------------------------------------------ create, destroy */

/*
 * Connect to the daemon at cl->path and become its client: hello, then
 * attach this process's own userfaultfd, pagemap and pidfd, then the relay
 * signal; and the watcher thread.  For client_create(), and for a forked
 * child's own connection (client_fork_child).
 */
static long client_connect(struct upc_client *cl, uint64_t flags, uint64_t mem_limit)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t hello[3] = { UPC_PROTO_VERSION, flags, mem_limit };
	struct creply rep = { 0 };
	int fds[3] = { -1, -1, -1 };
	long ret;

	strcpy(sa.sun_path, cl->path);
	cl->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (cl->sock < 0 || connect(cl->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	ret = request(cl, UPC_MSG_HELLO, hello, 3, NULL, 0, -1, &rep);
	if (ret == 0 && rep.argc < 3)
		ret = -EPROTO;
	if (ret < 0)
		return ret;
	/*
	 * Never fork events: a forked child is a client of its own, and maps
	 * again what it inherits (client_fork_child), so the mappings are
	 * not inherited at all (MADV_DONTFORK: client_map).
	 */
	cl->features = rep.args[1] & ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
	cl->track_mode = (uint32_t)rep.args[2];
	/* Our userfaultfd, with the features the daemon's engine serves. */
	ret = sys_uffd_open(cl->features, NULL, NULL);
	if (ret < 0)
		return ret;
	cl->uffd = fds[0] = (int)ret;
	fds[1] = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	fds[2] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fds[1] < 0 || fds[2] < 0) {
		ret = -errno;
		goto out;
	}
	ret = request_fds(cl, UPC_MSG_ATTACH, NULL, 0, NULL, 0, fds, 3, NULL);
	if (ret < 0)
		goto out;
	/*
	 * The relay signal, through which the daemon asks this process to zap
	 * the poison markers of accesses it refused past end of file, once the
	 * file has grown over them (remote.c, sigbus.c).
	 */
	sigbus_install();
	ret = request(cl, UPC_MSG_RELAY, (uint64_t[]){ (uint64_t)sigbus_relay_signal() }, 1, NULL, 0, -1, NULL);
	if (ret < 0)
		goto out;
	cl->watch_efd = eventfd(0, EFD_CLOEXEC);
	if (cl->watch_efd < 0 || pthread_create(&cl->watcher, NULL, watcher_main, cl) != 0) {
		if (cl->watch_efd >= 0)
			close(cl->watch_efd);
		cl->watch_efd = -1;
		ret = -EAGAIN;
		goto out;
	}
	pthread_setname_np(cl->watcher, "upc-watch");
out:
	if (fds[1] >= 0)
		close(fds[1]);
	if (fds[2] >= 0)
		close(fds[2]);
	return ret;
}

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upc_client *clients;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void fork_handlers_install(void);

int client_create(const struct upc_cache_opts *o, struct upc_cache **cachep)
{
	struct upc_cache *c = calloc(1, sizeof(*c));
	struct upc_client *cl = calloc(1, sizeof(*cl));
	long ret;

	if (!c || !cl || !(cl->msg = malloc(sizeof(*cl->msg)))) {
		ret = -ENOMEM;
		goto err;
	}
	if (o->store || o->read_error || (o->flags & (UPC_CACHE_NO_BGWB | UPC_CACHE_DIRECT_IO))) {
		ret = -EOPNOTSUPP;	/* the daemon's, set by its options: upcd(8) */
		goto err;
	}
	c->client = cl;
	c->flags = o->flags;
	cl->sock = cl->uffd = cl->watch_efd = -1;
	pthread_mutex_init(&cl->lock, NULL);
	pthread_mutex_init(&cl->maps_lock, NULL);
	{
		char path[sizeof(cl->path) + 64];

		upc_socket_path(o->socket, path, sizeof(path));
		if (strlen(path) >= sizeof(cl->path)) {
			ret = -ENAMETOOLONG;
			goto err;
		}
		strcpy(cl->path, path);
	}
	pthread_once(&atfork_once, fork_handlers_install);
	cl->hello_flags = o->flags;
	cl->mem_limit = o->mem_limit;
	ret = client_connect(cl, o->flags, o->mem_limit);
	if (ret < 0)
		goto err;
	pthread_mutex_lock(&clients_lock);
	cl->next = clients;
	clients = cl;
	pthread_mutex_unlock(&clients_lock);
	*cachep = c;
	return 0;
err:
	if (cl) {
		if (cl->uffd >= 0)
			close(cl->uffd);
		if (cl->sock >= 0)
			close(cl->sock);
		free(cl->msg);
		free(cl);
	}
	free(c);
	return (int)ret;
}

/*
 * As for an embedded cache: everything this process mapped is written
 * back and unmapped; the cache itself, and what other processes use of
 * it, stays the daemon's.
 */
int client_destroy(struct upc_cache *c)
{
	struct upc_client *cl = c->client;
	uint64_t one = 1;
	int ret = 0;

	for (;;) {
		struct crange r;
		uint64_t args[3];
		long err;

		pthread_mutex_lock(&cl->maps_lock);
		if (!cl->nmaps) {
			pthread_mutex_unlock(&cl->maps_lock);
			break;
		}
		r = cl->maps[cl->nmaps - 1];
		pthread_mutex_unlock(&cl->maps_lock);
		args[0] = r.start;
		args[1] = r.end - r.start;
		args[2] = UPC_MS_SYNC;
		err = request(cl, UPC_MSG_MSYNC, args, 3, NULL, 0, -1, NULL);
		if (err < 0 && !ret && err != -ENOTCONN)
			ret = (int)err;
		err = request(cl, UPC_MSG_UNMAP, args, 2, NULL, 0, -1, NULL);
		if (err < 0) {
			/* pinned (-EBUSY) or the daemon is gone: unmap it here all the same */
			munmap((void *)r.start, r.end - r.start);
			cmaps_cut(cl, r.start, r.end);
			if (!ret && err != -ENOTCONN)
				ret = (int)err;
		}
	}
	if (atomic_load(&cl->gone) && !ret)
		ret = -ENOTCONN;
	pthread_mutex_lock(&clients_lock);
	for (struct upc_client **pp = &clients; *pp; pp = &(*pp)->next)
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	pthread_mutex_unlock(&clients_lock);
	if (cl->watch_efd >= 0 && write(cl->watch_efd, &one, sizeof(one)) == sizeof(one))
		pthread_join(cl->watcher, NULL);
	if (cl->watch_efd >= 0)
		close(cl->watch_efd);
	close(cl->sock);
	if (cl->uffd >= 0)
		close(cl->uffd);
	free(cl->maps);
	free(cl->msg);
	free(cl);
	free(c);
	return ret;
}

/* ------------------------------------------------------------ fork */

/*
 * A forked child is a client of its own (issue 10: "forked children of
 * clients are ordinary clients and outlive their parent").  It cannot share
 * its parent's connection: requests of both would interleave on one
 * socket, and the daemon would serve the child's calls on the parent's
 * address space and end them with the parent.  Nor can it keep the
 * inherited mappings as the kernel copies them: with fork events the
 * daemon serves them through a userfaultfd of the child's that the event
 * hands it, but the event does not say which process the child is (no pid,
 * and a userfaultfd's fdinfo names none), so the daemon cannot tell which
 * of the connections that come later owns them (upcd(8)).  So the cache's
 * mappings are not inherited at all (MADV_DONTFORK, client_map), and the
 * child, before fork() returns in it, connects on its own (hello, attach
 * with its own userfaultfd, pagemap and pidfd) and maps every one of them
 * again at the same address, with the same file offset and protection,
 * through the descriptor of the file this process kept (struct cfile).  The
 * pages are the daemon's memfd's, so it sees at once everything the parent
 * wrote, and its own writes are tracked and written back as any client's,
 * whatever becomes of the parent.
 *
 * The prepare handler takes every connection's request lock and the list
 * of mappings, so that no request is half sent and the list is whole when
 * the child copies it; a fork waits for a request in flight in another
 * thread.  What it costs: a round trip to the daemon per mapping in every
 * child, also in a child that is about to exec (posix_spawn() and vfork()
 * run no fork handlers, and share the parent's address space until exec:
 * nothing to do there).  If the child cannot connect, or a mapping cannot
 * be made again, the child goes without it (an access is SIGSEGV, a call
 * -ENOTCONN or -EINVAL) and the library says so (pr_warn).
 */
static long client_remap(struct upc_client *cl, const struct crange *r)
{
	size_t len = r->end - r->start;
	uint64_t args[5] = { r->off, len, (uint64_t)r->map_prot };
	struct creply rep = { 0 };
	void *addr;
	long ret;

	ret = request(cl, UPC_MSG_MAP, args, 3, NULL, 0, r->file->fd, &rep);
	if (ret == 0 && (rep.argc < 2 || rep.fd < 0))
		ret = -EPROTO;
	if (ret < 0) {
		if (rep.fd >= 0)
			close(rep.fd);
		return ret;
	}
	args[0] = rep.args[0];		/* the token */
	addr = mmap((void *)r->start, len, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, rep.fd, (off_t)r->off);
	close(rep.fd);
	if (addr != (void *)r->start) {
		ret = addr == MAP_FAILED ? -errno : -EEXIST;
		if (addr != MAP_FAILED)
			munmap(addr, len);
		args[1] = 0;
		request(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, -1, NULL);
		return ret;
	}
	madvise(addr, len, MADV_DONTFORK);
	args[1] = r->start;
	args[2] = len;
	args[3] = (uint64_t)r->map_prot;
	args[4] = 0;
	ret = request(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, -1, NULL);
	if (ret == 0)
		ret = cmaps_add(cl, r->start, r->end, r->file->fd, r->off, r->map_prot);
	if (ret == 0 && r->map_prot != PROT_NONE && mprotect(addr, len, r->map_prot) < 0)
		ret = -ENOMEM;
	/* protected since it was mapped: so again, by the daemon, which keeps its view of it */
	if (ret == 0 && r->prot != r->map_prot) {
		uint64_t a[3] = { r->start, len, (uint64_t)r->prot };

		ret = request(cl, UPC_MSG_PROTECT, a, 3, NULL, 0, -1, NULL);
	}
	if (ret < 0) {
		uint64_t u[2] = { r->start, len };

		if (request(cl, UPC_MSG_UNMAP, u, 2, NULL, 0, -1, NULL) < 0)
			munmap(addr, len);
		cmaps_cut(cl, r->start, r->end);
	}
	return ret;
}

/* In the child, before fork() returns there.  Its copy of @cl is its own now. */
static void client_fork_child(struct upc_client *cl)
{
	struct crange *maps = cl->maps;
	size_t n = cl->nmaps;
	int u = atomic_exchange(&cl->uffd, -1);
	long ret;

	/* the parent's: its connection, its userfaultfd, its watcher (no thread of it is here) */
	close(cl->sock);
	cl->sock = -1;
	if (u >= 0)
		close(u);
	if (cl->watch_efd >= 0)
		close(cl->watch_efd);
	cl->watch_efd = -1;
	cl->maps = NULL;
	cl->nmaps = cl->cap = 0;
	ret = atomic_load(&cl->gone) ? -ENOTCONN : client_connect(cl, cl->hello_flags, cl->mem_limit);
	if (ret < 0) {
		atomic_store(&cl->gone, true);
		pr_warn("fork: the child cannot connect to upcd (%s): it has none of the shared mappings\n",
			strerror((int)-ret));
	}
	for (size_t i = 0; i < n; i++) {
		if (ret == 0) {
			long r = client_remap(cl, &maps[i]);

			if (r < 0)
				pr_warn("fork: the child cannot map %#lx-%#lx again: %s\n", (unsigned long)maps[i].start,
					(unsigned long)maps[i].end, strerror((int)-r));
		}
		cfile_put(cl, maps[i].file);
	}
	free(maps);
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&clients_lock);
	for (struct upc_client *cl = clients; cl; cl = cl->next) {
		pthread_mutex_lock(&cl->lock);
		pthread_mutex_lock(&cl->maps_lock);
	}
}

static void fork_parent(void)
{
	for (struct upc_client *cl = clients; cl; cl = cl->next) {
		pthread_mutex_unlock(&cl->maps_lock);
		pthread_mutex_unlock(&cl->lock);
	}
	pthread_mutex_unlock(&clients_lock);
}

static void fork_child(void)
{
	for (struct upc_client *cl = clients; cl; cl = cl->next) {
		pthread_mutex_unlock(&cl->maps_lock);
		pthread_mutex_unlock(&cl->lock);
		client_fork_child(cl);
	}
	pthread_mutex_unlock(&clients_lock);
}

static void fork_handlers_install(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ------------------------------------------------------------ mappings */

int client_map(struct upc_cache *c, int fd, off_t offset, size_t length, int prot, unsigned int flags,
	       void **addrp)
{
	struct upc_client *cl = c->client;
	uint64_t args[5] = { (uint64_t)offset, length, (uint64_t)prot };
	struct creply rep = { 0 };
	uintptr_t want = 0;
	int mflags = MAP_SHARED;
	size_t len;
	void *addr;
	long ret;

	if (!addrp || !length || offset < 0 || (offset & (UPC_PAGE_SIZE - 1)) ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || (flags & ~UPC_MAP_FLAGS_ALL))
		return -EINVAL;
	len = pg_round_up(length);
	if (len < length || (uint64_t)offset + len > (uint64_t)INT64_MAX)
		return -EOVERFLOW;
	/* Replacing mappings in place needs the daemon to unmap them first: not yet (upcd(8), BUGS). */
	if (flags & UPC_MAP_FIXED)
		return -EOPNOTSUPP;
	if (flags & (UPC_MAP_HINT | UPC_MAP_FIXED_NOREPLACE)) {
		if ((flags & UPC_MAP_HINT) && (flags & UPC_MAP_FIXED_NOREPLACE))
			return -EINVAL;
		want = (uintptr_t)*addrp;
		if (flags & UPC_MAP_FIXED_NOREPLACE) {
			if ((want & (UPC_PAGE_SIZE - 1)) || !want || want + len < want)
				return -EINVAL;
			mflags |= MAP_FIXED_NOREPLACE;
		} else {
			want &= UPC_PAGE_MASK;
		}
	}
	if (prot & PROT_WRITE)
		prot |= PROT_READ;
	args[2] = (uint64_t)prot;
	ret = request(cl, UPC_MSG_MAP, args, 3, NULL, 0, fd, &rep);
	if (ret == 0 && (rep.argc < 2 || rep.fd < 0))
		ret = -EPROTO;
	if (ret < 0) {
		if (rep.fd >= 0)
			close(rep.fd);
		return (int)ret;
	}
	args[0] = rep.args[0];		/* the token */
	/* Inaccessible until the daemon has registered and protected it. */
	addr = mmap((void *)want, len, PROT_NONE, mflags, rep.fd, offset);
	close(rep.fd);
	if (addr == MAP_FAILED || ((flags & UPC_MAP_FIXED_NOREPLACE) && (uintptr_t)addr != want)) {
		ret = addr == MAP_FAILED ? -errno : -EEXIST;
		if (addr != MAP_FAILED)
			munmap(addr, len);
		args[1] = 0;
		request(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, -1, NULL);
		return (int)ret;
	}
	/* Not inherited: a forked child maps it again, as a client of its own (client_fork_child). */
	madvise(addr, len, MADV_DONTFORK);
	args[1] = (uintptr_t)addr;
	args[2] = len;
	args[3] = (uint64_t)prot;
	args[4] = 0;
	ret = request(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, -1, NULL);
	if (ret == 0)
		ret = cmaps_add(cl, (uintptr_t)addr, (uintptr_t)addr + len, fd, (uint64_t)offset, prot);
	if (ret == 0 && prot != PROT_NONE && mprotect(addr, len, prot) < 0)
		ret = -ENOMEM;
	if (ret < 0) {
		uint64_t u[2] = { (uintptr_t)addr, len };

		if (request(cl, UPC_MSG_UNMAP, u, 2, NULL, 0, -1, NULL) < 0)
			munmap(addr, len);
		cmaps_cut(cl, (uintptr_t)addr, (uintptr_t)addr + len);
		return (int)ret;
	}
	if (flags & UPC_MAP_POPULATE) {
		struct stat st;
		size_t pop = 0;

		if (fstat(fd, &st) == 0 && st.st_size > offset)
			pop = min_t(uint64_t, len, pg_round_up((uint64_t)(st.st_size - offset)));
		if (pop)
			madvise(addr, pop, (prot & PROT_WRITE) ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
	}
	*addrp = addr;
	return 0;
}

/* ------------------------------------------------------------ everything else: one request each */

long client_call_range(struct upc_cache *c, int type, void *addr, size_t length, long arg, unsigned int argc)
{
	uint64_t args[3] = { (uintptr_t)addr, length, (uint64_t)(int64_t)arg };

	return request(c->client, (uint16_t)type, args, argc, NULL, 0, -1, NULL);
}

int client_stats(struct upc_cache *c, struct upc_stats *st)
{
	struct upc_stats full;
	struct creply rep = { .data = &full, .dcap = sizeof(full) };
	long ret = request(c->client, UPC_MSG_STATS, NULL, 0, NULL, 0, -1, &rep);

	if (ret == 0 && rep.dlen < offsetof(struct upc_stats, mem_limit))
		ret = -EPROTO;
	if (ret < 0)
		return (int)ret;
	memcpy((char *)st + sizeof(st->sz), (char *)&full + sizeof(full.sz),
	       min_t(size_t, st->sz, rep.dlen) - sizeof(st->sz));
	return 0;
}

ssize_t client_pread(struct upc_cache *c, int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	if (off < 0)
		return -EINVAL;
	while (done < len) {
		size_t n = min_t(size_t, len - done, UPC_PROTO_MAX_DATA);
		uint64_t args[2] = { n, (uint64_t)off + done };
		struct creply rep = { .data = (char *)buf + done, .dcap = n };
		long ret = request(c->client, UPC_MSG_PREAD, args, 2, NULL, 0, fd, &rep);

		if (ret < 0)
			return done ? (ssize_t)done : ret;
		done += (size_t)ret;
		if ((size_t)ret < n)
			break;		/* end of file */
	}
	return (ssize_t)done;
}

/*
 * In pieces of UPC_PROTO_MAX_DATA: a write larger than that is not atomic
 * against another process's write of the same range (upcd(8), BUGS).
 */
ssize_t client_pwrite(struct upc_cache *c, int fd, const void *buf, size_t len, off_t off)
{
	size_t done = 0;

	if (off < 0)
		return -EINVAL;
	do {
		size_t n = min_t(size_t, len - done, UPC_PROTO_MAX_DATA);
		uint64_t args[1] = { (uint64_t)off + done };
		long ret = request(c->client, UPC_MSG_PWRITE, args, 1, (const char *)buf + done, n, fd, NULL);

		if (ret < 0)
			return done ? (ssize_t)done : ret;
		done += (size_t)ret;
		if ((size_t)ret < n)
			break;
	} while (done < len);
	return (ssize_t)done;
}

long client_file_call(struct upc_cache *c, int type, int fd, const uint64_t *args, unsigned int argc)
{
	return request(c->client, (uint16_t)type, args, argc, NULL, 0, fd, NULL);
}

int client_unmap(struct upc_cache *c, void *addr, size_t len)
{
	return (int)client_call_range(c, UPC_MSG_UNMAP, addr, len, 0, 2);
}

int client_msync(struct upc_cache *c, void *addr, size_t len, int flags)
{
	return (int)client_call_range(c, UPC_MSG_MSYNC, addr, len, flags, 3);
}

int client_protect(struct upc_cache *c, void *addr, size_t len, int prot)
{
	return (int)client_call_range(c, UPC_MSG_PROTECT, addr, len, prot, 3);
}

int client_pin(struct upc_cache *c, void *addr, size_t len, unsigned int flags)
{
	return (int)client_call_range(c, UPC_MSG_PIN, addr, len, flags, 3);
}

int client_unpin(struct upc_cache *c, void *addr, size_t len)
{
	return (int)client_call_range(c, UPC_MSG_UNPIN, addr, len, 0, 2);
}

int client_advise(struct upc_cache *c, void *addr, size_t len, int advice)
{
	return (int)client_call_range(c, UPC_MSG_ADVISE, addr, len, advice, 3);
}

int client_drop(struct upc_cache *c, unsigned int flags)
{
	uint64_t a = flags;

	return (int)request(c->client, UPC_MSG_DROP, &a, 1, NULL, 0, -1, NULL);
}

int client_ftruncate(struct upc_cache *c, int fd, off_t length)
{
	uint64_t a = (uint64_t)length;

	return (int)client_file_call(c, UPC_MSG_FTRUNCATE, fd, &a, 1);
}

int client_fallocate(struct upc_cache *c, int fd, int mode, off_t off, off_t len)
{
	uint64_t a[3] = { (uint64_t)(int64_t)mode, (uint64_t)off, (uint64_t)len };

	return (int)client_file_call(c, UPC_MSG_FALLOCATE, fd, a, 3);
}

int client_fsync(struct upc_cache *c, int fd, bool datasync)
{
	uint64_t a = datasync;

	return (int)client_file_call(c, UPC_MSG_FSYNC, fd, &a, 1);
}

int client_invalidate(struct upc_cache *c, int fd, off_t off, off_t len)
{
	uint64_t a[2] = { (uint64_t)off, (uint64_t)len };

	return (int)client_file_call(c, UPC_MSG_INVALIDATE, fd, a, 2);
}
