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
 * If the daemon goes away (a hang-up on the socket, seen by the watcher
 * thread: it was killed, crashed or stopped), nothing of the cache is lost
 * with it: its pages are in the memfds, and their page table - which pages
 * are cached, which dirty - is in a memfd of its own (cache.c, chunk_alloc),
 * and this process holds both for every file it maps (struct cfile).  So
 * the process serves its own faults on those memfds meanwhile (takeover.c),
 * the watcher waits for a daemon to come back on the socket (systemd
 * restarts it), this process hands its files back to it, written and
 * write-protected, and then every mapping (UPC_MSG_ADOPT): the new daemon
 * adopts the memfds with their page table, dirty pages dirty, and serves
 * the faults from then on.  A call of the API other than msync, fsync and
 * unmap waits for it ($UPC_RECONNECT seconds, 30 by default) and is then
 * sent again.  Where this process cannot serve itself (asynchronous
 * tracking), an access that needs a fault waits in the kernel, and if no
 * daemon comes back in time, every mapping of this cache is made
 * inaccessible: an access gets SIGSEGV, never a page of zeros for the
 * file's data.  The connection, the watcher and the hand-back are
 * connect.c's; the requests, the mappings and fork are here.
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
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef MFD_ALLOW_SEALING	/* compat.h's MFD_CLOEXEC hides glibc's */
#define MFD_ALLOW_SEALING	0x0002U
#endif

/* ------------------------------------------------------------ the local list of mappings */

void cfile_put(struct cfile **list, struct cfile *cf)
{
	if (--cf->refs)
		return;
	for (struct cfile **pp = list; *pp; pp = &(*pp)->next)
		if (*pp == cf) {
			*pp = cf->next;
			break;
		}
	close(cf->fd);
	close(cf->memfd);
	close(cf->statefd);
	if (cf->journal)
		munmap(cf->journal, cf->journal_len);
	free(cf);
}

/*
 * The cfile of the memfd @memfd maps: found by the memfd's inode, else new
 * with duplicates of @fd and the two memfds (which the caller keeps).
 * maps_lock held.
 */
static struct cfile *cfile_get(struct upc_client *cl, int fd, int memfd, int statefd)
{
	struct cfile *cf;
	struct stat st;

	int acc = fcntl(memfd, F_GETFL);

	if (fstat(memfd, &st) < 0 || acc < 0)
		return NULL;
	/*
	 * One record per memfd and access mode: a read-only mapping (its
	 * memfd descriptor read-only, mapped MAP_PRIVATE) and a read-write one
	 * of the same file keep descriptors of their own, which a restarted
	 * daemon is handed with each (adopt_one) and a forked child maps again
	 * (client_remap): shared, the second was handed the first's, and a
	 * writable range was refused or a read-only one served as writable
	 * (review of fdcd625).
	 */
	for (cf = cl->files; cf; cf = cf->next)
		if (cf->mdev == st.st_dev && cf->mino == st.st_ino && cf->acc == (acc & O_ACCMODE)) {
			cf->refs++;
			return cf;
		}
	cf = calloc(1, sizeof(*cf));
	if (!cf)
		return NULL;
	cf->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	cf->memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 0);
	cf->statefd = fcntl(statefd, F_DUPFD_CLOEXEC, 0);
	if (cf->fd < 0 || cf->memfd < 0 || cf->statefd < 0) {
		if (cf->fd >= 0)
			close(cf->fd);
		if (cf->memfd >= 0)
			close(cf->memfd);
		if (cf->statefd >= 0)
			close(cf->statefd);
		free(cf);
		return NULL;
	}
	cf->refs = 1;
	cf->acc = acc & O_ACCMODE;
	cf->mdev = st.st_dev;
	cf->mino = st.st_ino;
	cf->next = cl->files;
	cl->files = cf;
	return cf;
}

static int cmaps_room(struct upc_client *cl)
{
	if (cl->nmaps == cl->cap) {
		size_t cap = cl->cap ? 2 * cl->cap : 16;
		struct crange *n = realloc(cl->maps, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		cl->maps = n;
		cl->cap = cap;
	}
	return 0;
}

static int cmaps_add(struct upc_client *cl, uintptr_t start, uintptr_t end, uint64_t pgoff, int prot, int fd,
		     int memfd, int statefd, uint64_t gen)
{
	struct cfile *cf;
	int ret;

	pthread_mutex_lock(&cl->maps_lock);
	ret = cmaps_room(cl);
	if (ret == 0) {
		cf = cfile_get(cl, fd, memfd, statefd);
		if (cf)
			cl->maps[cl->nmaps++] = (struct crange){ .start = start, .end = end, .pgoff = pgoff, .prot = prot,
								 .cur_prot = prot, .gen = gen, .file = cf };
		else
			ret = -ENOMEM;
	}
	pthread_mutex_unlock(&cl->maps_lock);
	return ret;
}

/*
 * [start, end) is unmapped: cut it out of the list (a mapping may be split
 * in two).  Caller holds maps_lock.
 */
static void cmaps_cut_locked(struct upc_client *cl, uintptr_t start, uintptr_t end)
{
	for (size_t i = 0; i < cl->nmaps; i++) {
		struct crange *r = &cl->maps[i];

		if (r->end <= start || r->start >= end)
			continue;
		if (r->start < start && r->end > end) {
			struct crange tail = { .start = end, .end = r->end,
					       .pgoff = r->pgoff + ((end - r->start) >> UPC_PAGE_SHIFT), .prot = r->prot,
					       .cur_prot = r->cur_prot, .gen = r->gen, .nozap = r->nozap, .file = r->file };

			if (cmaps_room(cl) < 0) {
				/*
				 * Out of memory: kept whole.  A restarted daemon is
				 * handed the hole too, and refuses it (-EEXIST or a
				 * mapping that is not the memfd's), and at the
				 * daemon's death the hole is made PROT_NONE.  No zap
				 * is served in it: the hole may be anything's now.
				 */
				r->nozap = true;
				continue;
			}
			r = &cl->maps[i];
			r->end = start;
			r->file->refs++;
			cl->maps[cl->nmaps++] = tail;
		} else if (r->start < start) {
			r->end = start;
		} else if (r->end > end) {
			r->pgoff += (end - r->start) >> UPC_PAGE_SHIFT;
			r->start = end;
		} else {
			cfile_put(&cl->files, r->file);
			*r = cl->maps[--cl->nmaps];
			i--;
		}
	}
}

void cmaps_cut(struct upc_client *cl, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&cl->maps_lock);
	cmaps_cut_locked(cl, start, end);
	pthread_mutex_unlock(&cl->maps_lock);
}

/* The listed range that holds @addr, or NULL (ranges do not overlap).  Caller holds maps_lock. */
struct crange *cmaps_at(struct upc_client *cl, uintptr_t addr)
{
	for (size_t i = 0; i < cl->nmaps; i++)
		if (cl->maps[i].start <= addr && addr < cl->maps[i].end)
			return &cl->maps[i];
	return NULL;
}

/* No range holds both @addr - 1 and @addr.  -ENOMEM: left whole.  Caller holds maps_lock. */
static int cmaps_split(struct upc_client *cl, uintptr_t addr)
{
	for (size_t i = 0; i < cl->nmaps; i++) {
		struct crange *r = &cl->maps[i], tail;

		if (r->start >= addr || r->end <= addr)
			continue;
		if (cmaps_room(cl) < 0)
			return -ENOMEM;
		r = &cl->maps[i];
		tail = *r;
		tail.start = addr;
		tail.pgoff += (addr - r->start) >> UPC_PAGE_SHIFT;
		tail.file->refs++;
		r->end = addr;
		cl->maps[cl->nmaps++] = tail;
		return 0;
	}
	return 0;
}

/*
 * [start, end) has protection @prot now (upc_protect, or the daemon's
 * call): a forked child maps it so, and a range once writable is adopted
 * write-protected by a restarted daemon (reconnect).  Out of memory for a
 * split: the whole range counts as writable once, and keeps its old
 * protection for a child.
 */
static void cmaps_protect(struct upc_client *cl, uintptr_t start, uintptr_t end, int prot)
{
	bool split;

	pthread_mutex_lock(&cl->maps_lock);
	split = cmaps_split(cl, start) == 0 && cmaps_split(cl, end) == 0;
	for (size_t i = 0; i < cl->nmaps; i++) {
		struct crange *r = &cl->maps[i];

		if (r->end <= start || r->start >= end)
			continue;
		r->prot |= prot;
		if (split)
			r->cur_prot = prot;
	}
	pthread_mutex_unlock(&cl->maps_lock);
}

/* No daemon: no access to a mapping may read a hole of the memfd as data. */
void cmaps_revoke(struct upc_client *cl)
{
	pthread_mutex_lock(&cl->maps_lock);
	for (size_t i = 0; i < cl->nmaps; i++)
		mprotect((void *)cl->maps[i].start, cl->maps[i].end - cl->maps[i].start, PROT_NONE);
	pthread_mutex_unlock(&cl->maps_lock);
}

/* ------------------------------------------------------------ requests */

/* A call of the daemon's: an operation on this process's own address space. */
static void answer_call(struct upc_client *cl, int sock, const struct upc_msg *m)
{
	uintptr_t addr = (uintptr_t)m->args[1];
	size_t len = (size_t)m->args[2];
	int arg = (int)(int64_t)m->args[3];
	int64_t r;

	if (cl->stop_at_call) {	/* at the first call only: a test kills the daemon now (debug.c) */
		cl->stop_at_call = false;
		raise(SIGSTOP);
	}
	/*
	 * An unmap and its cut of the list are one step under maps_lock: the
	 * watcher zaps only what the list holds (zap_serve), and an address
	 * unmapped but still listed could be another mapping's by then.
	 */
	switch (m->args[0]) {
	case UPC_CALL_MUNMAP:
		pthread_mutex_lock(&cl->maps_lock);
		r = munmap((void *)addr, len) < 0 ? -errno : 0;
		if (r == 0) {
			cmaps_cut_locked(cl, addr, addr + len);
			cl->call_unmapped = true;
		}
		pthread_mutex_unlock(&cl->maps_lock);
		break;
	case UPC_CALL_MPROTECT:
		r = mprotect((void *)addr, len, arg) < 0 ? -errno : 0;
		if (r == 0)
			cmaps_protect(cl, addr, addr + len, arg);
		break;
	case UPC_CALL_MADVISE:
		r = sys_madvise((void *)addr, len, arg);
		break;
	case UPC_CALL_PLACEHOLD:
		/* UPC_MAP_FIXED (client_map): not a hole another thread's mmap could be given */
		pthread_mutex_lock(&cl->maps_lock);
		r = mmap((void *)addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
			 0) == MAP_FAILED ? -errno : 0;
		if (r == 0)
			cmaps_cut_locked(cl, addr, addr + len);
		pthread_mutex_unlock(&cl->maps_lock);
		break;
	default:
		r = -EINVAL;
	}
	upc_msg_send(sock, UPC_MSG_CALL_DONE, m->h.seq, (uint64_t *)&r, 1, NULL, 0, NULL, 0);
}

/* A lost connection (the daemon died or stopped), as opposed to an answer. */
bool conn_lost(long ret)
{
	return ret == -ECONNRESET || ret == -EPIPE || ret == -ENOTCONN;
}

/*
 * A request's sequence number: the next of this client's, never 0.  The
 * daemon knows a request that changes a file by it and the process
 * (struct upc_once, internal.h; UPC_MSG_ONCE), so a request sent again
 * keeps its number (request_fds), and each client starts at a random one
 * (seq_random): two clients of one process (two caches) do not count the
 * same numbers, nor does a forked child count its parent's, where the
 * daemon sees them as one process (a pid namespace it cannot see into:
 * SO_PEERCRED's pid 0).  cl->lock held.
 */
static void seq_random(struct upc_client *cl)
{
	if (getrandom(&cl->seq, sizeof(cl->seq), GRND_NONBLOCK) != sizeof(cl->seq))
		cl->seq ^= now_us() ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)cl;
}

static uint64_t seq_next(struct upc_client *cl)
{
	if (!++cl->seq)
		cl->seq++;
	return cl->seq;
}

/*
 * Send one request on @sock, numbered @seq, and wait for its reply,
 * answering the daemon's calls meanwhile.  cl->lock held.  Returns the
 * reply's result (a value or a negative errno), or an error of the
 * connection (conn_lost()).
 */
static long xfer_seq(struct upc_client *cl, int sock, uint64_t seq, uint16_t type, const uint64_t *args,
		     unsigned int argc, const void *data, size_t dlen, const int *fds, unsigned int nfds,
		     struct creply *rep)
{
	struct upc_msg *m = cl->msg;
	long ret;

	if (rep)
		rep->fd = rep->fd2 = -1;
	cl->call_unmapped = false;
	ret = upc_msg_send(sock, type, seq, args, argc, data, dlen, fds, nfds);
	while (ret == 0) {
		ret = upc_msg_recv(sock, m, UPC_FROM_DAEMON);
		if (ret < 0)
			break;
		if (m->h.type == UPC_MSG_CALL && m->h.seq == seq) {
			answer_call(cl, sock, m);
			continue;
		}
		if (m->h.type != UPC_MSG_REPLY || m->h.seq != seq) {
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
			if (m->nfds > 0) {
				rep->fd = m->fds[0];
				m->fds[0] = -1;
			}
			if (m->nfds > 1) {
				rep->fd2 = m->fds[1];
				m->fds[1] = -1;
			}
		}
		upc_msg_close_fds(m);
		break;
	}
	return ret == -EPIPE ? -ECONNRESET : ret;
}

/* xfer_seq() numbered with the next number */
long xfer(struct upc_client *cl, int sock, uint16_t type, const uint64_t *args, unsigned int argc,
	  const void *data, size_t dlen, const int *fds, unsigned int nfds, struct creply *rep)
{
	return xfer_seq(cl, sock, seq_next(cl), type, args, argc, data, dlen, fds, nfds, rep);
}

/*
 * Wait for the daemon to be back, until cl->down_deadline ($UPC_RECONNECT
 * after it went).  cl->lock held.  0 (woken: look again) or -ETIMEDOUT.
 */
static int wait_up(struct upc_client *cl)
{
	uint64_t now = now_ms();

	if (now >= cl->down_deadline)
		return -ETIMEDOUT;
	return cond_wait_ms(&cl->up, &cl->lock, (unsigned int)min_t(uint64_t, cl->down_deadline - now, UINT32_MAX));
}

/*
 * Pins across a restart.  The daemon records whose pins a page holds
 * (control.c, "Whose pins") and a new daemon knows none of them, so this
 * process keeps the same record of its own: every PIN and UNPIN the daemon
 * answered with success, applied under @lock, in the same critical section
 * as the request (request_fds), and sent again, count by count, to a new
 * daemon once it has adopted every mapping and before any other request
 * (reconnect, pins_replay).  A request the dead daemon answered was
 * applied there and here; one it did not answer is sent again to the new
 * daemon after the replay, so every pin is held once.  Pins are the file
 * pages', as the daemon counts them, not the addresses': a page pinned
 * through one mapping and unpinned through another of the same file is
 * let go here too; a replay pins each page through whichever mapping of
 * it the process has then.  Flags are per page, as the engine keeps them
 * (PG_NOWB, PG_PINWRITE: set by any pin of the page, cleared at its last
 * unpin), so a range records the union of its pins' flags.
 */
static int cpin_cmp(const void *a, const void *b)
{
	const struct cpin *x = a, *y = b;

	if (x->mdev != y->mdev)
		return x->mdev < y->mdev ? -1 : 1;
	if (x->mino != y->mino)
		return x->mino < y->mino ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Pages [s, e) of the file @mdev/@mino pinned once more (@delta 1, with @flags) or once less (-1). */
static int cpins_apply(struct upc_client *cl, uint64_t mdev, uint64_t mino, uint64_t s, uint64_t e, int delta,
		       uint32_t flags)
{
	struct cpin *out = malloc((4 * cl->npins + 4) * sizeof(*out));
	size_t n = 0;
	uint64_t pos = s;

	if (!out)
		return -ENOMEM;
#define EMIT(a, b, c, f) do { if ((a) < (b) && (c) > 0) out[n++] = (struct cpin){ mdev, mino, (a), (b), (c), (f) }; } while (0)
	for (size_t i = 0; i < cl->npins; i++) {
		struct cpin r = cl->pins[i];
		uint64_t lo, hi;

		if (r.mdev != mdev || r.mino != mino || r.end <= s || r.start >= e) {
			out[n++] = r;
			continue;
		}
		lo = max_t(uint64_t, r.start, s);
		hi = min_t(uint64_t, r.end, e);
		EMIT(r.start, s, r.count, r.flags);
		if (delta > 0)
			EMIT(pos, lo, 1u, flags);
		EMIT(lo, hi, (uint32_t)((int64_t)r.count + delta), delta > 0 ? r.flags | flags : r.flags);
		EMIT(e, r.end, r.count, r.flags);
		pos = hi;
	}
	if (delta > 0)
		EMIT(pos, e, 1u, flags);
#undef EMIT
	/* in order again, and neighbours alike one range again */
	qsort(out, n, sizeof(*out), cpin_cmp);
	if (n) {
		size_t j = 0;

		for (size_t i = 1; i < n; i++)
			if (out[j].mdev == out[i].mdev && out[j].mino == out[i].mino && out[j].end == out[i].start &&
			    out[j].count == out[i].count && out[j].flags == out[i].flags)
				out[j].end = out[i].end;
			else
				out[++j] = out[i];
		n = j + 1;
	}
	free(cl->pins);
	cl->pins = out;
	cl->npins = n;
	return 0;
}

/*
 * A PIN or UNPIN the daemon answered with success (@args: addr, length,
 * flags), under cl->lock: the file pages of every mapping it covered (the
 * daemon pins a page once per mapping of it the range covers, as here).
 */
static void cpins_note(struct upc_client *cl, uint16_t type, const uint64_t *args)
{
	uintptr_t s = (uintptr_t)args[0] & ~(uintptr_t)(UPC_PAGE_SIZE - 1);
	uintptr_t e = ((uintptr_t)args[0] + (uintptr_t)args[1] + UPC_PAGE_SIZE - 1) & ~(uintptr_t)(UPC_PAGE_SIZE - 1);
	struct cpin *pieces;
	size_t n = 0;
	int err = 0;

	/* the pieces under maps_lock, applied after it (zap_serve takes it) */
	pthread_mutex_lock(&cl->maps_lock);
	pieces = malloc((cl->nmaps + 1) * sizeof(*pieces));
	for (size_t i = 0; pieces && i < cl->nmaps; i++) {
		const struct crange *r = &cl->maps[i];
		uintptr_t lo = max_t(uintptr_t, s, r->start), hi = min_t(uintptr_t, e, r->end);

		if (lo < hi)
			pieces[n++] = (struct cpin){ (uint64_t)r->file->mdev, (uint64_t)r->file->mino,
						     r->pgoff + ((lo - r->start) >> UPC_PAGE_SHIFT),
						     r->pgoff + ((hi - r->start) >> UPC_PAGE_SHIFT), 0, 0 };
	}
	pthread_mutex_unlock(&cl->maps_lock);
	if (!pieces)
		err = -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (cpins_apply(cl, pieces[i].mdev, pieces[i].mino, pieces[i].start, pieces[i].end,
				type == UPC_MSG_PIN ? 1 : -1, type == UPC_MSG_PIN ? (uint32_t)args[2] : 0) < 0)
			err = -ENOMEM;
	free(pieces);
	if (err)
		pr_warn("pins: no memory to record a pin of %#lx: a restarted daemon will not know it\n",
			(unsigned long)s);
}

/* Can mapping @r be pinned through with @flags (upc_pin: -EACCES, -EFAULT otherwise)? */
static bool cpin_through(const struct crange *r, uint32_t flags)
{
	if (flags & UPC_PIN_WRITE)
		return (r->prot & PROT_WRITE) && (r->cur_prot & PROT_WRITE);
	return r->cur_prot != PROT_NONE;
}

/* A piece of a recorded range, as pins_replay() pins it again: an address range, and its file pages. */
struct cpin_piece {
	uintptr_t addr, len;
	uint64_t first, end;
	bool through;		/* cpin_through() its mapping */
};

/*
 * The pieces of @pin through which this process maps its pages now, in
 * @out, which has room for cl->nmaps: for each page a mapping the new
 * daemon knows (connection @gen) that can be pinned through with @pin's
 * flags if one maps it so, else any that maps it; a piece runs to the
 * end of its mapping, so none is chosen twice, and pieces that follow
 * each other in both address and page are one.  Pages no mapping covers
 * are left out.  maps_lock held.
 */
static size_t cpin_pieces(struct upc_client *cl, const struct cpin *pin, uint64_t gen, struct cpin_piece *out)
{
	uint64_t p = pin->start;
	size_t n = 0;

	while (p < pin->end) {
		const struct crange *best = NULL;
		uint64_t next = pin->end;

		for (size_t i = 0; i < cl->nmaps; i++) {
			const struct crange *r = &cl->maps[i];
			uint64_t rend = r->pgoff + ((r->end - r->start) >> UPC_PAGE_SHIFT);

			if ((uint64_t)r->file->mdev != pin->mdev || (uint64_t)r->file->mino != pin->mino ||
			    r->gen != gen)
				continue;
			if (r->pgoff <= p && p < rend) {
				if (!best || (!cpin_through(best, pin->flags) && cpin_through(r, pin->flags)))
					best = r;
			} else if (r->pgoff > p && r->pgoff < next) {
				next = r->pgoff;
			}
		}
		if (best) {
			uintptr_t a = best->start + ((p - best->pgoff) << UPC_PAGE_SHIFT);
			bool through = cpin_through(best, pin->flags);

			next = min_t(uint64_t, pin->end, best->pgoff + ((best->end - best->start) >> UPC_PAGE_SHIFT));
			/* one run where the mappings follow each other (upc_protect's pieces) alike */
			if (n && out[n - 1].addr + out[n - 1].len == a && out[n - 1].end == p && out[n - 1].through == through) {
				out[n - 1].len += (next - p) << UPC_PAGE_SHIFT;
				out[n - 1].end = next;
			} else {
				out[n++] = (struct cpin_piece){ a, (next - p) << UPC_PAGE_SHIFT, p, next, through };
			}
		}
		p = next;
	}
	return n;
}

/*
 * The record, pinned again on @sock, count by count, through the mappings
 * the new daemon knows (connection @gen).  What it does not hold
 * afterwards leaves the record: a page this process maps no more (the
 * record is by file page, a PIN by address), pins the daemon refused (its
 * own limits).
 */
long pins_replay(struct upc_client *cl, int sock, uint64_t gen)
{
	struct cpin *kept = NULL;
	size_t nkept = 0, cap = 0;
	long ret = 0;

	for (size_t i = 0; i < cl->npins; i++) {
		const struct cpin *r = &cl->pins[i];
		struct cpin_piece *pieces;
		uint64_t got = 0;
		size_t n = 0;

		/* (maps_lock let go before the requests: the daemon's calls take it, answer_call) */
		pthread_mutex_lock(&cl->maps_lock);
		pieces = malloc((cl->nmaps + 1) * sizeof(*pieces));
		if (pieces)
			n = cpin_pieces(cl, r, gen, pieces);
		pthread_mutex_unlock(&cl->maps_lock);
		if (!pieces || nkept + n > cap) {
			size_t ncap = max_t(size_t, 2 * cap, nkept + n + 16);
			struct cpin *k = realloc(kept, ncap * sizeof(*k));

			if (!pieces || !k) {
				pr_warn("pins: no memory to pin again what this process pinned: pages %llu-%llu of a "
					"file are let go\n", (unsigned long long)r->start, (unsigned long long)r->end - 1);
				free(pieces);
				if (k)
					kept = k, cap = ncap;
				continue;
			}
			kept = k;
			cap = ncap;
		}
		for (size_t j = 0; j < n; j++)
			got += pieces[j].end - pieces[j].first;
		if (got < r->end - r->start)
			pr_warn("pins: %llu of pages %llu-%llu of a file this process pinned are not mapped here "
				"now: the new daemon does not pin them\n", (unsigned long long)(r->end - r->start - got),
				(unsigned long long)r->start, (unsigned long long)r->end - 1);
		for (size_t j = 0; j < n; j++) {
			uint64_t args[3] = { pieces[j].addr, pieces[j].len, r->flags };
			uint32_t k;

			for (k = 0; k < r->count; k++) {
				ret = xfer(cl, sock, UPC_MSG_PIN, args, 3, NULL, 0, NULL, 0, NULL);
				if (conn_lost(ret)) {
					free(pieces);
					free(kept);
					return ret;
				}
				if (ret < 0)
					break;
			}
			if (ret < 0)
				pr_warn("pins: the new daemon refused a pin of pages %llu-%llu: %s; it is let go\n",
					(unsigned long long)pieces[j].first, (unsigned long long)pieces[j].end - 1,
					upc_strerror((int)ret));
			if (k)
				kept[nkept++] = (struct cpin){ r->mdev, r->mino, pieces[j].first, pieces[j].end, k, r->flags };
			ret = 0;
		}
		free(pieces);
	}
	free(cl->pins);
	cl->pins = kept;
	cl->npins = nkept;
	return 0;
}

/*
 * Send a request with @nfds descriptors and wait for its reply.  While the
 * daemon is away (a restart: reconnect()), the request waits, and one
 * the daemon died serving is sent again to the next, with the same
 * number: every request is one that may be repeated (an msync, a map
 * whose first half left nothing behind), or one that changes a file (a
 * pwrite, a truncation, a fallocate), which the daemons apply once by its
 * number (struct upc_once, internal.h: applied again, it could undo
 * another process's write made in between); except a map's second half,
 * whose token dies with the daemon (@gen: the connection the token is
 * of; sent on that one only, else -ENOTCONN, and client_map adopts the
 * mapping instead).  Returns the reply's result, or -ENOTCONN once no
 * daemon came back (or the connection was lost and @gen).
 */
static long request_fds(struct upc_client *cl, uint16_t type, const uint64_t *args, unsigned int argc,
			const void *data, size_t dlen, const int *fds, unsigned int nfds, struct creply *rep,
			const uint64_t *gen)
{
	bool this_conn = gen != NULL;
	uint64_t seq;
	long ret;

	pthread_mutex_lock(&cl->lock);
	seq = seq_next(cl);	/* the same each time it is sent: a daemon applies it once (seq_next) */
	for (;;) {
		ret = 0;
		while (cl->state == CL_DOWN && ret == 0) {
			/* this process serves itself now: an msync is done here (takeover.c, client_msync) */
			if (atomic_load(&cl->to_active) && type == UPC_MSG_MSYNC && !takeover_bypass)
				ret = -ESTRPIPE;
			else if (wait_up(cl) == -ETIMEDOUT)
				ret = -ENOTCONN;	/* waited $UPC_RECONNECT: the mappings stay served */
		}
		if (ret < 0)
			break;
		if (cl->state == CL_DEAD || (gen && *gen != cl->gen)) {
			ret = -ENOTCONN;
			break;
		}
		ret = xfer_seq(cl, cl->sock, seq, type, args, argc, data, dlen, fds, nfds, rep);
		if (rep)
			rep->gen = cl->gen;
		if (ret == 0 && (type == UPC_MSG_PIN || type == UPC_MSG_UNPIN))
			cpins_note(cl, type, args);
		if (!conn_lost(ret))
			break;
		/* The watcher sees the hang-up too and reconnects: wait for it, then again. */
		if (rep) {
			if (rep->fd >= 0)
				close(rep->fd);
			if (rep->fd2 >= 0)
				close(rep->fd2);
			rep->fd = rep->fd2 = -1;
		}
		if (cl->state == CL_UP) {
			cl->state = CL_DOWN;
			cl->down_deadline = now_ms() + cl->reconnect_ms;
		}
		/*
		 * An unmap whose munmap this process did (the daemon's call)
		 * is done, whatever the daemon did not get to reply: sent
		 * again, the next daemon would not know the range (this
		 * process no longer hands it back) and say -EINVAL, or unmap
		 * what another thread mapped there since (upcd(8), BUGS).
		 */
		if (type == UPC_MSG_UNMAP && cl->call_unmapped) {
			ret = 0;
			break;
		}
		if (this_conn || !cl->reconnect_ms) {
			ret = -ENOTCONN;
			break;
		}
	}
	pthread_mutex_unlock(&cl->lock);
	return ret;
}

/* request_fds() with one descriptor, or none for @fd -1 */
static long request(struct upc_client *cl, uint16_t type, const uint64_t *args, unsigned int argc,
		    const void *data, size_t dlen, int fd, struct creply *rep)
{
	return request_fds(cl, type, args, argc, data, dlen, &fd, fd >= 0, rep, NULL);
}

/* ------------------------------------------------------------ create, destroy */

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upc_client *clients;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void fork_handlers_install(void);

/* $UPC_RECONNECT: seconds to wait for a restarted daemon (upc_cache_create(3)); 0: none. */
static unsigned int reconnect_ms(void)
{
	const char *e = getenv("UPC_RECONNECT");
	char *end;
	unsigned long v;

	if (!e || !*e)
		return 30000;
	v = strtoul(e, &end, 10);
	if (*end || v > 86400) {
		pr_warn("UPC_RECONNECT=%s: not a number of seconds up to 86400; 30 it is\n", e);
		return 30000;
	}
	return (unsigned int)v * 1000;
}

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
	cl->stop_at_call = debug_from_env() & UPC_DBG_STOP_AT_CALL;
	cl->no_zaps = debug_from_env() & UPC_DBG_NO_ZAPS;
	cl->slow_zaps = debug_from_env() & UPC_DBG_SLOW_ZAPS;
	cl->sock = cl->uffd = cl->watch_efd = cl->zap_sock = -1;
	seq_random(cl);		/* where this client's request numbers start (seq_next) */
	cl->cache_flags = o->flags;
	cl->mem_limit = o->mem_limit;
	cl->reconnect_ms = reconnect_ms();
	pthread_mutex_init(&cl->lock, NULL);
	pthread_cond_init(&cl->up, NULL);
	pthread_mutex_init(&cl->maps_lock, NULL);
	takeover_init(cl);
	upc_socket_path(o->socket, cl->path, sizeof(cl->path));
	if (strlen(cl->path) >= sizeof(cl->path) - 1) {
		ret = -ENAMETOOLONG;
		goto err;
	}
	pthread_once(&atfork_once, fork_handlers_install);
	ret = client_connect(cl);
	if (ret < 0)
		goto err;
	pthread_mutex_lock(&clients_lock);
	cl->next = clients;
	clients = cl;
	pthread_mutex_unlock(&clients_lock);
	*cachep = c;
	return 0;
err:
	if (conn_lost(ret))
		ret = -ENOTCONN;
	if (cl) {
		if (cl->uffd >= 0)
			close(cl->uffd);
		if (cl->sock >= 0)
			close(cl->sock);
		if (cl->zap_sock >= 0)
			close(cl->zap_sock);
		free(cl->msg);
		free(cl->zap_msg);
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
		long err;

		pthread_mutex_lock(&cl->maps_lock);
		if (!cl->nmaps) {
			pthread_mutex_unlock(&cl->maps_lock);
			break;
		}
		r = cl->maps[cl->nmaps - 1];
		pthread_mutex_unlock(&cl->maps_lock);
		err = client_msync(c, (void *)r.start, r.end - r.start, UPC_MS_SYNC);
		if (err < 0 && !ret && err != -ENOTCONN)
			ret = (int)err;
		err = client_unmap(c, (void *)r.start, r.end - r.start);
		if (err < 0) {
			/* pinned (-EBUSY) or the daemon is gone: unmap it here all the same (listed no more first: zap_serve) */
			cmaps_cut(cl, r.start, r.end);
			munmap((void *)r.start, r.end - r.start);
			if (!ret && err != -ENOTCONN)
				ret = (int)err;
		}
	}
	if (cl->state == CL_DEAD && !ret)
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
	if (cl->zap_sock >= 0)
		close(cl->zap_sock);
	if (cl->uffd >= 0)
		close(cl->uffd);
	while (cl->files) {
		cl->files->refs = 1;
		cfile_put(&cl->files, cl->files);
	}
	takeover_fini(cl);
	free(cl->maps);
	free(cl->pins);
	free(cl->msg);
	free(cl->zap_msg);
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
 * thread, and for a reconnection in progress.  What it costs: a round trip
 * to the daemon per mapping in every child, also in a child that is about
 * to exec (posix_spawn() and vfork() run no fork handlers).  If the child
 * cannot connect (no daemon, or one away for a restart), or a mapping
 * cannot be made again, the child goes without it (an access is SIGSEGV, a
 * call -ENOTCONN or -EINVAL) and the library says so (pr_warn).
 */
static long client_remap(struct upc_client *cl, const struct crange *r)
{
	size_t len = r->end - r->start;
	uint64_t args[5] = { r->pgoff << UPC_PAGE_SHIFT, len, (uint64_t)r->prot };
	struct creply rep = { 0 };
	uint64_t gen = 0;
	void *addr;
	long ret;

	ret = request(cl, UPC_MSG_MAP, args, 3, NULL, 0, r->file->fd, &rep);
	gen = rep.gen;
	if (ret == 0 && (rep.argc < 2 || rep.fd < 0 || rep.fd2 < 0))
		ret = -EPROTO;
	if (ret < 0)
		goto out;
	args[0] = rep.args[0];		/* the token */
	addr = mmap((void *)r->start, len, PROT_NONE,
		    ((rep.args[1] & PROT_WRITE) ? MAP_SHARED : MAP_PRIVATE) |	/* as client_map() */
		    (r->placeheld ? MAP_FIXED : MAP_FIXED_NOREPLACE), rep.fd, (off_t)(r->pgoff << UPC_PAGE_SHIFT));
	if (addr != (void *)r->start) {
		ret = addr == MAP_FAILED ? -errno : -EEXIST;
		if (addr != MAP_FAILED)
			munmap(addr, len);
		args[1] = 0;
		request_fds(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, NULL, 0, NULL, &gen);
		goto out;
	}
	madvise(addr, len, MADV_DONTFORK);
	gen = rep.gen;
	ret = cmaps_add(cl, r->start, r->end, r->pgoff, r->prot, r->file->fd, rep.fd, rep.fd2, gen);
	if (ret < 0) {
		munmap(addr, len);
		args[1] = 0;
		request_fds(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, NULL, 0, NULL, &gen);
		goto out;
	}
	args[1] = r->start;
	args[2] = len;
	args[3] = (uint64_t)r->prot;
	args[4] = 0;
	ret = request_fds(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, NULL, 0, NULL, &gen);
	if (ret == 0 && mprotect(addr, len, r->cur_prot) < 0)
		ret = -ENOMEM;
	/* protected since it was mapped: so again, by the daemon, which keeps its view of it */
	if (ret == 0 && r->cur_prot != r->prot) {
		uint64_t a[3] = { r->start, len, (uint64_t)r->cur_prot };

		ret = request(cl, UPC_MSG_PROTECT, a, 3, NULL, 0, -1, NULL);
	}
	if (ret < 0) {
		uint64_t u[2] = { r->start, len };
		bool refused = request(cl, UPC_MSG_UNMAP, u, 2, NULL, 0, -1, NULL) < 0;

		cmaps_cut(cl, r->start, r->end);
		if (refused)
			munmap(addr, len);	/* listed no more before it is unmapped (zap_serve) */
	}
out:
	if (rep.fd >= 0)
		close(rep.fd);
	if (rep.fd2 >= 0)
		close(rep.fd2);
	return ret;
}

/* Is a mapping listed at @addr? */
static bool cmaps_has(struct upc_client *cl, uintptr_t addr)
{
	bool has;

	pthread_mutex_lock(&cl->maps_lock);
	has = cmaps_at(cl, addr) != NULL;
	pthread_mutex_unlock(&cl->maps_lock);
	return has;
}

/* In the child, before fork() returns there.  Its copy of @cl is its own now. */
static void client_fork_child(struct upc_client *cl)
{
	struct crange *maps = cl->maps;
	struct cfile *files = cl->files;
	size_t n = cl->nmaps;
	int u = atomic_exchange(&cl->uffd, -1);
	long ret;

	/* the parent's: its connection, its userfaultfd, its watcher (no thread of it is here) */
	/*
	 * First of all, before anything here allocates (a malloc may mmap into
	 * the holes the parent's mappings left, MADV_DONTFORK): the addresses
	 * are held with inaccessible placeholders, which the remaps replace.
	 */
	for (size_t i = 0; i < n; i++)
		maps[i].placeheld = mmap((void *)maps[i].start, maps[i].end - maps[i].start, PROT_NONE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1,
					 0) == (void *)maps[i].start;
	close(cl->sock);
	cl->sock = -1;
	if (u >= 0)
		close(u);
	if (cl->watch_efd >= 0)
		close(cl->watch_efd);
	cl->watch_efd = -1;
	if (cl->zap_sock >= 0)
		close(cl->zap_sock);
	cl->zap_sock = -1;
	cl->maps = NULL;
	cl->nmaps = cl->cap = 0;
	cl->files = NULL;
	cl->pins = NULL;	/* pins are not inherited (the parent's record stays the parent's) */
	cl->npins = 0;
	seq_random(cl);		/* not the parent's numbers (seq_next) */
	pthread_mutex_init(&cl->lock, NULL);
	pthread_cond_init(&cl->up, NULL);
	pthread_mutex_init(&cl->maps_lock, NULL);
	/* the parent's, if it serves itself now: its thread's eventfd, its poison list */
	if (cl->to_efd >= 0)
		close(cl->to_efd);
	cl->npoisoned = 0;
	takeover_init(cl);
	ret = cl->state != CL_UP ? -ENOTCONN : client_connect(cl);
	if (ret < 0) {
		cl->state = CL_DEAD;
		pr_warn("fork: the child cannot connect to upcd (%s): it has none of the shared mappings\n",
			strerror((int)-ret));
	}
	for (size_t i = 0; i < n; i++) {
		long r = ret < 0 ? ret : client_remap(cl, &maps[i]);

		if (r < 0) {
			if (ret == 0)
				pr_warn("fork: the child cannot map %#lx-%#lx again: %s\n",
					(unsigned long)maps[i].start, (unsigned long)maps[i].end, strerror((int)-r));
			/* a placeholder left where the map failed: the range is unmapped, as without it */
			if (maps[i].placeheld && !cmaps_has(cl, maps[i].start))
				munmap((void *)maps[i].start, maps[i].end - maps[i].start);
		}
	}
	/* the parent's list, copied: its descriptors are ours to close (its journal window is not here: MADV_DONTFORK) */
	while (files) {
		struct cfile *next = files->next;

		close(files->fd);
		close(files->memfd);
		close(files->statefd);
		free(files);
		files = next;
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
	for (struct upc_client *cl = clients; cl; cl = cl->next)
		client_fork_child(cl);
	pthread_mutex_unlock(&clients_lock);
}

static void fork_handlers_install(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ------------------------------------------------------------ mappings */

/*
 * The daemon went away between the two halves of a map of [addr, addr +
 * len): once a daemon is back, the mapping was handed to it with the others
 * (adopt_all) if it was listed by then; else it is handed over here.
 */
static long adopt_own(struct upc_client *cl, uintptr_t addr, size_t len)
{
	long ret = 0;

	pthread_mutex_lock(&cl->lock);
	for (;;) {
		size_t i;

		while (cl->state == CL_DOWN && ret == 0)
			if (wait_up(cl) == -ETIMEDOUT)	/* $UPC_RECONNECT, as every call's wait (request_fds) */
				ret = -ENOTCONN;
		if (ret < 0 || cl->state == CL_DEAD) {
			ret = -ENOTCONN;
			break;
		}
		pthread_mutex_lock(&cl->maps_lock);
		for (i = 0; i < cl->nmaps && !(cl->maps[i].start == addr && cl->maps[i].end == addr + len); i++)
			;
		if (i == cl->nmaps)
			ret = -ENOTCONN;	/* cut meanwhile: the daemon's call unmapped it */
		else if (cl->maps[i].gen != cl->gen)
			ret = adopt_one(cl, cl->sock, &cl->maps[i], cl->gen);
		pthread_mutex_unlock(&cl->maps_lock);
		/* Lost again: the next daemon is handed it with the others (adopt_all). */
		if (!conn_lost(ret))
			break;
		if (cl->state == CL_UP) {
			cl->state = CL_DOWN;
			cl->down_deadline = now_ms() + cl->reconnect_ms;
		}
		ret = 0;
	}
	pthread_mutex_unlock(&cl->lock);
	return ret;
}

int client_map(struct upc_cache *c, int fd, off_t offset, size_t length, int prot, unsigned int flags,
	       void **addrp)
{
	struct upc_client *cl = c->client;
	uint64_t args[5] = { (uint64_t)offset, length, (uint64_t)prot };
	struct creply rep = { 0 };
	uintptr_t want = 0;
	int mflags = MAP_SHARED;
	long cleared = 0;
	uint64_t gen;
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
	if (ret == 0 && (rep.argc < 2 || rep.fd < 0 || rep.fd2 < 0))
		ret = -EPROTO;
	if (ret < 0)
		goto out_fds;
	args[0] = rep.args[0];		/* the token, of connection @gen */
	gen = rep.gen;
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
	/*
	 * A read-only descriptor of the file gets a read-only descriptor of
	 * the memfd, which maps MAP_PRIVATE: the kernel registers a shared
	 * mapping with userfaultfd only if it may become writable
	 * (VM_MAYWRITE).  The daemon fills it through its staging mapping, so
	 * its pages are the memfd's, read-only (fault.c, handle_missing); a
	 * write after an mprotect(2) of our own copies the page for us alone.
	 */
	if (!(rep.args[1] & PROT_WRITE))
		mflags = (mflags & ~MAP_SHARED) | MAP_PRIVATE;
	/* Inaccessible until the daemon has registered and protected it. */
	addr = mmap((void *)want, len, PROT_NONE, mflags, rep.fd, offset);
	if (addr == MAP_FAILED || ((flags & UPC_MAP_FIXED_NOREPLACE) && (uintptr_t)addr != want)) {
		ret = addr == MAP_FAILED ? -errno : -EEXIST;
		if (addr != MAP_FAILED)
			munmap(addr, len);
		goto out_abandon;
	}
	/* Not inherited: a forked child maps it again, as a client of its own (client_fork_child). */
	madvise(addr, len, MADV_DONTFORK);
	/* Listed first: a daemon that dies from here on is handed it by reconnect(). */
	ret = cmaps_add(cl, (uintptr_t)addr, (uintptr_t)addr + len, (uint64_t)offset >> UPC_PAGE_SHIFT, prot, fd,
			rep.fd, rep.fd2, gen);
	if (ret < 0) {
		munmap(addr, len);
		goto out_abandon;
	}
	args[1] = (uintptr_t)addr;
	args[2] = len;
	args[3] = (uint64_t)prot;
	args[4] = 0;
	/*
	 * The token dies with the daemon: if it dies now, the next one was
	 * handed the mapping with the others (reconnect(), adopt_all()), or
	 * none came back.
	 */
	ret = request_fds(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, NULL, 0, NULL, &gen);
	if (ret == -ENOTCONN)
		ret = adopt_own(cl, (uintptr_t)addr, len);
	if (ret == 0 && prot != PROT_NONE && mprotect(addr, len, prot) < 0)
		ret = -ENOMEM;
	if (ret < 0) {
		uint64_t u[2] = { (uintptr_t)addr, len };
		bool refused = request(cl, UPC_MSG_UNMAP, u, 2, NULL, 0, -1, NULL) < 0;

		cmaps_cut(cl, (uintptr_t)addr, (uintptr_t)addr + len);
		if (refused)
			munmap(addr, len);	/* listed no more before it is unmapped (zap_serve) */
		goto out_fds;
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
	ret = 0;
	goto out_fds;

out_abandon:
	args[1] = 0;
	request_fds(cl, UPC_MSG_MAP_DONE, args, 5, NULL, 0, NULL, 0, NULL, &gen);
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
out_fds:
	if (rep.fd >= 0)
		close(rep.fd);
	if (rep.fd2 >= 0)
		close(rep.fd2);
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
	ret = request_fds(c->client, UPC_MSG_PWRITE_FD, args, 2, NULL, 0, fds, 2, NULL, NULL);
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

/*
 * unmap, msync and fsync are served here while this process serves its own
 * faults (takeover.c), on the files it serves itself; an msync that was
 * waiting for the daemon when that began says -ESTRPIPE (request_fds), and
 * is served here then.
 */
int client_unmap(struct upc_cache *c, void *addr, size_t len)
{
	int ret;

	if (takeover_unmap(c->client, (uintptr_t)addr, len, &ret))
		return ret;
	return (int)client_call_range(c, UPC_MSG_UNMAP, addr, len, 0, 2);
}

int client_msync(struct upc_cache *c, void *addr, size_t len, int flags)
{
	int ret;

	do {
		if (takeover_msync(c->client, (uintptr_t)addr, len, flags, &ret))
			return ret;
		ret = (int)client_call_range(c, UPC_MSG_MSYNC, addr, len, flags, 3);
		takeover_bypass = false;
	} while (ret == -ESTRPIPE);
	return ret;
}

int client_protect(struct upc_cache *c, void *addr, size_t len, int prot)
{
	int ret = (int)client_call_range(c, UPC_MSG_PROTECT, addr, len, prot, 3);

	if (ret == 0)
		cmaps_protect(c->client, (uintptr_t)addr, (uintptr_t)addr + len, prot);
	return ret;
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
	int ret;

	if (fd >= 0 && takeover_fsync(c->client, fd, datasync, &ret))
		return ret;
	return (int)client_file_call(c, UPC_MSG_FSYNC, fd, &a, 1);
}

int client_invalidate(struct upc_cache *c, int fd, off_t off, off_t len)
{
	uint64_t a[2] = { (uint64_t)off, (uint64_t)len };

	return (int)client_file_call(c, UPC_MSG_INVALIDATE, fd, a, 2);
}
