/* SPDX-License-Identifier: MIT */
/*
 * remote.c - address spaces of other processes: upcd's clients.  The
 * kernel analogy is current->mm: kernel code run on behalf of a process
 * acts on that process's mm, and the page cache under it does not care
 * whose mm it is.  Here a thread of the daemon serving a client's request
 * sets that client's mm as its current one (mm_current_set), and the same
 * upc_msync(), upc_unmap(), upc_protect(), upc_pin() and upc_advise() that
 * an embedded cache runs for its own process run for the client.
 *
 * What crosses the process boundary, and how (DESIGN.md, "Processes and
 * the daemon", checked on this kernel):
 *
 *   - faults: the client's userfaultfd, passed to the daemon, is read by a
 *     handler thread of the daemon (fault.c), and UFFDIO_CONTINUE, _COPY,
 *     _WRITEPROTECT and _REGISTER act on the client's mm through it;
 *   - written state: PAGEMAP_SCAN on the client's /proc/self/pagemap fd;
 *   - what only the owner of an mm can do to it (munmap, mprotect,
 *     madvise: process_madvise(MADV_DONTNEED) is refused for another
 *     process): mm_call(), which asks the client over its connection while
 *     the client waits for the reply to the request being served.  So such
 *     operations happen only inside a request of that client; the reclaim
 *     thread frees a client's pages by punching the memfd (the kernel then
 *     zaps every process's PTEs), as it does for forked children (fork.c).
 *
 * A client's mm lives from its attach to its disconnect or death (pidfd);
 * then its mappings are forgotten and its dirty pages stay in the cache
 * and are written back (I5: the last unmapper hands the dirty state on).
 */
#include "internal.h"

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

static __thread struct upc_mm *current_mm;

/* The mm this thread acts for in cache @c: a client's, or the process's own. */
struct upc_mm *mm_current(struct upc_cache *c)
{
	struct upc_mm *mm = current_mm;

	return mm && mm->cache == c ? mm : &c->self;
}

void mm_current_set(struct upc_mm *mm)
{
	current_mm = mm;
	if (mm) {
		mm->call_thread = pthread_self();
		mm->in_call = true;
	}
}

void mm_current_clear(struct upc_mm *mm)
{
	if (mm)
		mm->in_call = false;
	current_mm = NULL;
}

/*
 * munmap, mprotect or madvise on @mm's addresses: done here for the
 * process's own mm, asked of the client for another (see the top).
 * Returns 0 or a negative errno.
 */
int mm_call(struct upc_mm *mm, int op, uintptr_t addr, size_t len, int arg)
{
	int r;

	if (mm->remote) {
		if (!mm->call || !mm->in_call || !pthread_equal(mm->call_thread, pthread_self()))
			return -EOPNOTSUPP;
		return mm->call(mm, op, addr, len, arg);
	}
	switch (op) {
	case MM_CALL_MUNMAP:
		r = munmap((void *)addr, len);
		break;
	case MM_CALL_MPROTECT:
		r = mprotect((void *)addr, len, arg);
		break;
	case MM_CALL_MADVISE:
		return sys_madvise((void *)addr, len, arg);
	default:
		return -EINVAL;
	}
	return r < 0 ? -errno : 0;
}

/*
 * A client attaches its address space: its userfaultfd (opened with
 * exactly cache->uffd_features, which the client learned at hello), its
 * pagemap and its pid.  The fds become the mm's.  Fault handlers as the
 * process's own mm has them, one pinned to each CPU, all reading the
 * client's userfaultfd: with a single unpinned handler a fault cost
 * 7.4x an embedded one and a first write 14x (BENCHMARKS.md, issue 10:
 * the handler slept on a halted vCPU), with these 1.00x and 1.18x.
 * Threads cost: one a CPU a client.
 */
int remote_attach(struct upc_cache *c, int uffd, int pagemap_fd, pid_t pid,
		  int (*call)(struct upc_mm *, int, uintptr_t, size_t, int), void *call_arg,
		  struct upc_mm **mmp)
{
	struct upc_mm *mm = calloc(1, sizeof(*mm));
	int ret;

	if (!mm)
		return -ENOMEM;
	mm->cache = c;
	mm->uffd = uffd;
	mm->pagemap_fd = pagemap_fd;
	mm->pid = pid;
	mm->remote = true;
	mm->call = call;
	mm->call_arg = call_arg;
	pthread_rwlock_init(&mm->lock, NULL);
	mm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mm->stop_efd < 0) {
		ret = -errno;
		goto err;
	}
	{
		int cpus[CPU_SETSIZE];

		ret = mm_handlers_alloc(mm, fault_handlers_wanted(cpus, CPU_SETSIZE), cpus);
	}
	if (ret < 0)
		goto err;
	ret = fault_handler_start(mm);
	if (ret < 0)
		goto err;
	pthread_mutex_lock(&c->lock);
	mm->next_remote = c->remotes;
	c->remotes = mm;
	pthread_mutex_unlock(&c->lock);
	*mmp = mm;
	return 0;
err:
	mm->uffd = mm->pagemap_fd = -1;	/* the caller's still */
	mm_fini(mm);
	free(mm);
	return ret;
}

/*
 * The client is gone (disconnected or dead): stop serving its faults,
 * forget its mappings (nothing is unmapped: a live client unmaps them
 * itself when it notices), keep every page it dirtied.
 */
void remote_detach(struct upc_mm *mm)
{
	struct upc_cache *c = mm->cache;
	struct upc_mm **pp;

	pthread_mutex_lock(&c->lock);
	for (pp = &c->remotes; *pp; pp = &(*pp)->next_remote)
		if (*pp == mm) {
			*pp = mm->next_remote;
			break;
		}
	pthread_mutex_unlock(&c->lock);
	fault_handler_stop(mm);
	/*
	 * A client that is still alive (it broke the protocol, or stopped
	 * answering) keeps its PTEs: write-protect its writable mappings
	 * before they leave the rmap, so that no page is counted clean while
	 * writable through them (I1).  A dead one's fail with ESRCH: its PTEs
	 * are gone with it.
	 */
	pthread_rwlock_rdlock(&mm->lock);
	for (size_t i = 0; i < mm->nmaps; i++) {
		struct upc_map *m = mm->maps[i];

		if (m->wp) {
			pthread_mutex_lock(&m->file->lock);
			/*
			 * Asynchronous tracking: what it wrote since the last
			 * look is read first (and a dead one's pages are all
			 * counted written: track.c, collect_unreadable()).
			 */
			if (c->track_mode == UPC_TRACK_ASYNC)
				track_collect_map(m);
			else
				sys_uffd_wp(mm->uffd, m->start, m->end - m->start, true, false);
			pthread_mutex_unlock(&m->file->lock);
		}
	}
	pthread_rwlock_unlock(&mm->lock);
	mm_release_maps(mm);
	mm_fini(mm);
	free(mm);
}

/*
 * The first half of a client's upc_map: the checks upc_map() makes, the
 * file (a reference for the mapping to come), and a descriptor of its
 * memfd for the client to map: read-write if the client's descriptor of
 * the file is, else a new read-only open of it.  The memfd's inode mode is
 * 0400 (file_get(), for a serving cache), so that a read-only descriptor
 * cannot be reopened read-write through /proc/self/fd (DESIGN.md,
 * "Security facts").  The memfd spans the mapping, so that a fault in it
 * reaches the daemon's handler and not a SIGBUS.
 */
int remote_map_prepare(struct upc_cache *c, int fd, uint64_t offset, uint64_t length, int prot,
		       struct upc_file **fp, int *memfdp, int *statefdp, int *maxprotp)
{
	struct upc_file *f;
	uint64_t len;
	int acc, ret;

	if (!length || (offset & (UPC_PAGE_SIZE - 1)) || (prot & ~(PROT_READ | PROT_WRITE)))
		return -EINVAL;
	len = pg_round_up(length);
	if (len < length || offset > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - offset)
		return -EOVERFLOW;
	acc = fd_map_access(fd, prot);
	if (acc < 0)
		return acc;
	ret = file_get(c, fd, &f);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&f->lock);
	ret = file_memfd_span(f, offset + len);
	pthread_mutex_unlock(&f->lock);
	if (ret == 0)
		ret = (acc & PROT_WRITE) ? sys_fd_dup(f->memfd) : sys_fd_reopen(f->memfd, O_RDONLY);
	if (ret < 0) {
		file_put(f);
		return ret;
	}
	*memfdp = ret;
	/* The page table, read-only for every client: kept for a restarted daemon (remote_adopt). */
	ret = sys_fd_reopen(f->statefd, O_RDONLY);
	if (ret < 0) {
		close(*memfdp);
		file_put(f);
		return ret;
	}
	*statefdp = ret;
	*maxprotp = acc;
	*fp = f;
	return 0;
}

/*
 * A client of an earlier daemon, which died or was stopped, comes back to
 * this one with each of its mappings: the file's descriptor it holds, the
 * memfd it maps and the page-table memfd it was given (remote_map_prepare).
 * The file is adopted with what those memfds hold (file_adopt(): nothing
 * the client wrote is lost, every dirty page stays dirty), and the mapping
 * is attached as at map time: registered again with the client's
 * userfaultfd (the registration is still there: the kernel keeps it with
 * the client's VMA) and write-protected whole (I1: the dirty state of
 * every page it could write is in the page table already).  Then the whole
 * range is woken: a thread whose fault message the dead daemon had read
 * waits for a wake that nobody else will send; woken, it faults again.
 * Write access follows the file descriptor, as at map time.
 */
int remote_adopt(struct upc_mm *mm, int fd, int memfd, int statefd, uintptr_t addr, size_t len,
		 uint64_t pgoff, int prot)
{
	struct upc_cache *c = mm->cache;
	struct upc_file *f;
	int acc, ret;

	if (!len || (addr & (UPC_PAGE_SIZE - 1)) || (len & (UPC_PAGE_SIZE - 1)) || addr + len < addr ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || pgoff > ((uint64_t)INT64_MAX >> UPC_PAGE_SHIFT) ||
	    len > (uint64_t)INT64_MAX - (pgoff << UPC_PAGE_SHIFT))
		return -EINVAL;
	acc = fd_map_access(fd, prot);
	if (acc < 0)
		return acc;
	ret = file_adopt(c, fd, memfd, statefd, &f);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&f->lock);
	ret = file_memfd_span(f, (pgoff << UPC_PAGE_SHIFT) + len);
	if (ret == 0) {
		/* Asynchronous tracking: what it wrote unseen is dirty before the mapping is protected again. */
		struct upc_map tmp = { .mm = mm, .file = f, .start = addr, .end = addr + len, .pgoff = pgoff,
				       .prot = prot, .wp = true };

		track_collect_adopted(&tmp);
	}
	pthread_mutex_unlock(&f->lock);
	if (ret < 0) {
		file_put(f);
		return ret;
	}
	ret = map_attach(mm, f, addr, len, pgoff, prot, acc);
	if (ret == 0)
		sys_uffd_wake(mm->uffd, addr, len);
	return ret;
}
