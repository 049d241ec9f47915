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

#ifndef MFD_ALLOW_SEALING	/* compat.h's MFD_CLOEXEC hides glibc's */
#define MFD_ALLOW_SEALING	0x0002U
#endif

struct crange {
	uintptr_t start, end;
};

struct upc_client {
	int sock;
	_Atomic int uffd;
	uint64_t features;
	uint32_t track_mode;
	pthread_mutex_t lock;		/* one request at a time */
	uint64_t seq;
	struct upc_msg *msg;
	/* this process's mappings of the cache, for the daemon's death */
	pthread_mutex_t maps_lock;
	struct crange *maps;
	size_t nmaps, cap;
	_Atomic bool gone;
	pthread_t watcher;
	int watch_efd;
};

/* ------------------------------------------------------------ the local list of mappings */

static int cmaps_add(struct upc_client *cl, uintptr_t start, uintptr_t end)
{
	int ret = 0;

	pthread_mutex_lock(&cl->maps_lock);
	if (cl->nmaps == cl->cap) {
		size_t cap = cl->cap ? 2 * cl->cap : 16;
		struct crange *n = realloc(cl->maps, cap * sizeof(*n));

		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		cl->maps = n;
		cl->cap = cap;
	}
	cl->maps[cl->nmaps++] = (struct crange){ start, end };
out:
	pthread_mutex_unlock(&cl->maps_lock);
	return ret;
}

/* [start, end) is unmapped: cut it out of the list (a mapping may be split in two). */
static void cmaps_cut(struct upc_client *cl, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&cl->maps_lock);
	for (size_t i = 0; i < cl->nmaps; i++) {
		struct crange *r = &cl->maps[i];

		if (r->end <= start || r->start >= end)
			continue;
		if (r->start < start && r->end > end) {
			struct crange tail = { end, r->end };

			if (cl->nmaps == cl->cap) {
				struct crange *n = realloc(cl->maps, 2 * cl->cap * sizeof(*n));

				if (!n) {
					/*
					 * Out of memory: kept whole.  At the daemon's death
					 * the hole is made PROT_NONE too, with whatever the
					 * process has mapped there since.
					 */
					continue;
				}
				cl->maps = n;
				cl->cap *= 2;
				r = &cl->maps[i];
			}
			r->end = start;
			cl->maps[cl->nmaps++] = tail;
		} else if (r->start < start) {
			r->end = start;
		} else if (r->end > end) {
			r->start = end;
		} else {
			*r = cl->maps[--cl->nmaps];
			i--;
		}
	}
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
		break;
	case UPC_CALL_MADVISE:
		r = sys_madvise((void *)addr, len, arg);
		break;
	case UPC_CALL_PLACEHOLD:
		/* UPC_MAP_FIXED (client_map): not a hole another thread's mmap could be given */
		r = mmap((void *)addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
			 0) == MAP_FAILED ? -errno : 0;
		if (r == 0)
			cmaps_cut(cl, addr, addr + len);
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

int client_create(const struct upc_cache_opts *o, struct upc_cache **cachep)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct upc_cache *c = calloc(1, sizeof(*c));
	struct upc_client *cl = calloc(1, sizeof(*cl));
	uint64_t hello[3] = { UPC_PROTO_VERSION, o->flags, o->mem_limit };
	struct creply rep = { 0 };
	int fds[3] = { -1, -1, -1 };
	char path[sizeof(sa.sun_path) + 64];
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
	upc_socket_path(o->socket, path, sizeof(path));
	if (strlen(path) >= sizeof(sa.sun_path)) {
		ret = -ENAMETOOLONG;
		goto err;
	}
	strcpy(sa.sun_path, path);
	cl->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (cl->sock < 0 || connect(cl->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		goto err;
	}
	ret = request(cl, UPC_MSG_HELLO, hello, 3, NULL, 0, -1, &rep);
	if (ret == 0 && rep.argc < 3)
		ret = -EPROTO;
	if (ret < 0)
		goto err;
	cl->features = rep.args[1];
	cl->track_mode = (uint32_t)rep.args[2];
	/* Our userfaultfd, with exactly the features the daemon's engine serves. */
	ret = sys_uffd_open(cl->features, NULL, NULL);
	if (ret < 0 && (cl->features & UFFD_FEATURE_EVENT_FORK)) {
		/*
		 * Fork events need CAP_SYS_PTRACE (a client of a root daemon
		 * may lack it): without them a child does not inherit the
		 * mappings (MADV_DONTFORK: client_map), as in embedded mode.
		 */
		cl->features &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
		ret = sys_uffd_open(cl->features, NULL, NULL);
	}
	if (ret < 0)
		goto err;
	cl->uffd = fds[0] = (int)ret;
	fds[1] = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	fds[2] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fds[1] < 0 || fds[2] < 0) {
		ret = -errno;
		goto err;
	}
	ret = request_fds(cl, UPC_MSG_ATTACH, NULL, 0, NULL, 0, fds, 3, NULL);
	close(fds[1]);
	close(fds[2]);
	fds[1] = fds[2] = -1;
	if (ret < 0)
		goto err;
	cl->watch_efd = eventfd(0, EFD_CLOEXEC);
	if (cl->watch_efd < 0 || pthread_create(&cl->watcher, NULL, watcher_main, cl) != 0) {
		ret = -EAGAIN;
		goto err;
	}
	pthread_setname_np(cl->watcher, "upc-watch");
	*cachep = c;
	return 0;
err:
	if (fds[1] >= 0)
		close(fds[1]);
	if (fds[2] >= 0)
		close(fds[2]);
	if (cl) {
		if (cl->watch_efd >= 0)
			close(cl->watch_efd);
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
	if (write(cl->watch_efd, &one, sizeof(one)) == sizeof(one))
		pthread_join(cl->watcher, NULL);
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

/* ------------------------------------------------------------ mappings */

int client_map(struct upc_cache *c, int fd, off_t offset, size_t length, int prot, unsigned int flags,
	       void **addrp)
{
	struct upc_client *cl = c->client;
	uint64_t args[5] = { (uint64_t)offset, length, (uint64_t)prot };
	struct creply rep = { 0 };
	uintptr_t want = 0;
	int mflags = MAP_SHARED;
	long cleared = 0;
	size_t len;
	void *addr;
	long ret;

	if (!addrp || !length || offset < 0 || (offset & (UPC_PAGE_SIZE - 1)) ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || (flags & ~UPC_MAP_FLAGS_ALL))
		return -EINVAL;
	len = pg_round_up(length);
	if (len < length || (uint64_t)offset + len > (uint64_t)INT64_MAX)
		return -EOVERFLOW;
	if (flags & (UPC_MAP_HINT | UPC_MAP_FIXED_NOREPLACE | UPC_MAP_FIXED)) {
		unsigned int where = flags & (UPC_MAP_HINT | UPC_MAP_FIXED_NOREPLACE | UPC_MAP_FIXED);

		if (where & (where - 1))
			return -EINVAL;		/* more than one address flag */
		want = (uintptr_t)*addrp;
		if (flags & (UPC_MAP_FIXED_NOREPLACE | UPC_MAP_FIXED)) {
			if ((want & (UPC_PAGE_SIZE - 1)) || !want || want + len < want)
				return -EINVAL;
			mflags |= (flags & UPC_MAP_FIXED) ? MAP_FIXED : MAP_FIXED_NOREPLACE;
		} else {
			want &= UPC_PAGE_MASK;
		}
	}
	/* No descriptor to send would be a malformed message, and the daemon would hang up. */
	if (fd < 0)
		return -EBADF;
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
	if (flags & UPC_MAP_FIXED) {
		/*
		 * MAP_FIXED replaces what is mapped at the address, and our own
		 * upcache mappings there are the daemon's to forget first: it
		 * collects their written state (I5: their dirty pages stay
		 * dirty in the cache) and has us put an inaccessible placeholder
		 * where each was, not a hole another thread's mmap could be
		 * given meanwhile (map.c, map_clear()).  Pinned pages there:
		 * -EBUSY, nothing changed, as in embedded mode.  The file's
		 * descriptor was checked first (UPC_MSG_MAP above), so a bad one
		 * changes nothing either.
		 */
		uint64_t clr[2] = { want, len };

		ret = request(cl, UPC_MSG_MAP_CLEAR, clr, 2, NULL, 0, -1, NULL);
		if (ret < 0)
			goto out_abandon;
		cleared = ret;		/* the mappings forgotten */
	}
	/* Inaccessible until the daemon has registered and protected it. */
	addr = mmap((void *)want, len, PROT_NONE, mflags, rep.fd, offset);
	if (addr == MAP_FAILED || ((flags & UPC_MAP_FIXED_NOREPLACE) && (uintptr_t)addr != want)) {
		ret = addr == MAP_FAILED ? -errno : -EEXIST;
		if (addr != MAP_FAILED)
			munmap(addr, len);
		goto out_abandon;
	}
	close(rep.fd);
	/* Without fork events a child would see the memfd unregistered: it gets SIGSEGV instead (map.c). */
	if (!(cl->features & UFFD_FEATURE_EVENT_FORK))
		madvise(addr, len, MADV_DONTFORK);
	args[1] = (uintptr_t)addr;
	args[2] = len;
	args[3] = (uint64_t)prot;
	args[4] = 0;
	ret = request(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, -1, NULL);
	if (ret == 0)
		ret = cmaps_add(cl, (uintptr_t)addr, (uintptr_t)addr + len);
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

out_abandon:
	close(rep.fd);
	args[1] = 0;
	request(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, -1, NULL);
	/*
	 * The mmap failed after the daemon had cleared upcache mappings from
	 * the range: the range is left unmapped, as a failed mmap(MAP_FIXED)
	 * may leave it (mmap(2)) and as an embedded upc_map() leaves it -
	 * what was cleared is gone (its dirty pages kept in the cache), and
	 * the rest of the range goes with it, so that no caller sees half of
	 * the old contents.  A refused descriptor, pinned pages (-EBUSY) or a
	 * range with no upcache mapping in it: nothing of ours was touched.
	 */
	if (cleared > 0)
		munmap((void *)want, len);
	return (int)ret;
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

	if (fd < 0)
		return -EBADF;		/* as client_map() */
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
 * A write larger than a message goes as one request all the same, its
 * data in a memfd sent with it (UPC_MSG_PWRITE_FD): the daemon makes it
 * one upc_pwrite() under the file's io_lock, so that it is atomic against
 * another process's write of the same range, as write(2) of a regular
 * file is under the inode's lock (i_rwsem).  Writing it in pieces of a
 * message each would let another process's write land between two
 * pieces.  The memfd is sealed before it is sent: the daemon reads it
 * through a mapping, and a shrink under that read would be its SIGBUS
 * (upcd.c, req_pwrite_fd()).  As write(2), at most UPC_PROTO_MAX_WRITE
 * bytes (the kernel's MAX_RW_COUNT) are written by one call.
 */
static ssize_t client_pwrite_memfd(struct upc_cache *c, int fd, const void *buf, size_t len, off_t off)
{
	uint64_t args[2] = { (uint64_t)off, len };
	int fds[2] = { fd, -1 };
	size_t done = 0;
	long ret;

	fds[1] = memfd_create("upc-pwrite", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fds[1] < 0)
		return -errno;
	/* The system call itself: never back into an LD_PRELOAD shim's pwrite (preload/shim.c). */
	while (done < len) {
		long n = syscall(SYS_pwrite64, fds[1], (const char *)buf + done, len - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* the caller's buffer not readable as write(2) would have it: -EFAULT */
			ret = n < 0 ? -errno : -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	if (fcntl(fds[1], F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto out;
	}
	ret = request_fds(c->client, UPC_MSG_PWRITE_FD, args, 2, NULL, 0, fds, 2, NULL);
out:
	close(fds[1]);
	return ret;
}

ssize_t client_pwrite(struct upc_cache *c, int fd, const void *buf, size_t len, off_t off)
{
	uint64_t args[1] = { (uint64_t)off };

	if (fd < 0)
		return -EBADF;		/* as client_map() */
	if (off < 0 || (!buf && len))
		return -EINVAL;
	len = min_t(size_t, len, UPC_PROTO_MAX_WRITE);
	if (len > UPC_PROTO_MAX_DATA)
		return client_pwrite_memfd(c, fd, buf, len, off);
	return request(c->client, UPC_MSG_PWRITE, args, 1, buf, len, fd, NULL);
}

long client_file_call(struct upc_cache *c, int type, int fd, const uint64_t *args, unsigned int argc)
{
	if (fd < 0)
		return -EBADF;		/* as client_map() */
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
