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
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
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
		/*
		 * The faults a pin's populate makes in its range do not wait
		 * at the dirty limit (dirtylimit.c): the call is given 10 s,
		 * and a user whose write-back is held longer lost its
		 * connection.  Only there, and only for a populate: the
		 * client's faults elsewhere wait as ever (review: a writer
		 * beside a pin went past the limit), what a pin dirties is the
		 * pin limit's, and a DONTNEED the client answers late would
		 * have let it write a whole mapping unbounded (review of the
		 * next version).  @call_lo is set last and cleared first
		 * (fault_may_dirty).
		 */
		if (op != MM_CALL_MADVISE || (arg != MADV_POPULATE_READ && arg != MADV_POPULATE_WRITE))
			return mm->call(mm, op, addr, len, arg);
		atomic_store(&mm->call_hi, addr + len);
		atomic_store(&mm->call_lo, addr);
		r = mm->call(mm, op, addr, len, arg);
		atomic_store(&mm->call_lo, 0);
		atomic_store(&mm->call_hi, 0);
		return r;
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
 * mm_call() from under @f->lock, for a mapping of @f.  The process's own
 * munmap, mprotect or madvise runs with the lock held; a client of upcd
 * answers in its own time (up to CALL_TIMEOUT_MS, upcd.c: a stopped or
 * hostile client takes all of it), so for a client the lock is let go
 * while it does, and every other client's faults, write-backs, reads and
 * truncations of the file go on meanwhile.  The caller makes its call
 * safe without the lock (map.c: map_forget_remote(), upc_protect();
 * reclaim.c: dontneed_piece(); control.c: pin_map()), and finds @f
 * changed afterwards only as other mms, reclaim and write-back may change
 * it.
 * A client's own requests are served one at a time (upcd.c), so nothing
 * else of its mm changes meanwhile except through its fault handlers.
 */
int mm_call_file(struct upc_file *f, struct upc_mm *mm, int op, uintptr_t addr, size_t len, int arg)
{
	int r;

	if (!mm->remote)
		return mm_call(mm, op, addr, len, arg);
	pthread_mutex_unlock(&f->lock);
	r = mm_call(mm, op, addr, len, arg);
	pthread_mutex_lock(&f->lock);
	return r;
}

/*
 * A client attaches its address space: its userfaultfd (opened with
 * exactly cache->uffd_features, which the client learned at hello), its
 * pagemap and its pid.  The fds become the mm's.  Its fault handlers are
 * placed as upcd chose at start (daemon/placement.c, --fault-handlers):
 * as the process's own mm has them, one pinned to each CPU, all reading
 * the client's userfaultfd, or one unpinned (@c->remote_one_handler).
 * Which is cheaper depends on the machine, both ways: one unpinned
 * handler cost 7.4x an embedded fault on one (it slept on a halted vCPU),
 * one a CPU 2.3x on another (a switch to another process on the
 * faulting CPU: BENCHMARKS.md, issue 10).  Threads cost: one a CPU a
 * client, or one.  The one handler looks for the client's next fault for
 * REMOTE_LINGER_US after each before it sleeps (fault.c, handler_main):
 * the next fault of a thread that faults page after page comes 10-20 us
 * after it is woken, and a handler that slept must be woken on its CPU,
 * halted meanwhile (upc-bench-shared, one unpinned handler: a MISSING
 * fault 1.38x the embedded cache's without, 0.89x with 50 us).  During a
 * run of faults it costs no more CPU than one a CPU does (29.9 us of the
 * daemon's a fault, against 35.2); after the run's last fault, 50 us.
 */
#define REMOTE_LINGER_US	50
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
	pthread_mutex_init(&mm->pin_lock, NULL);
	mm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mm->stop_efd < 0) {
		ret = -errno;
		goto err;
	}
	{
		int cpus[CPU_SETSIZE];

		ret = mm_handlers_alloc(mm, c->remote_one_handler ? 1 : fault_handlers_wanted(cpus, CPU_SETSIZE),
					cpus);
		if (ret == 0 && c->remote_one_handler)
			mm->h[0].linger_us = REMOTE_LINGER_US;
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
	 * Its pins go with it, as a process's pin_user_pages() pins do when
	 * it exits (seed 001, Hubbard): its UPC_PIN_WRITE pages become dirty,
	 * its UPC_PIN_NOWRITEBACK pages may be written back, and all of them
	 * evicted, as at upc_unpin().  Before its mappings go: they hold the
	 * files the pins name (control.c, "Whose pins").
	 */
	pins_release(mm);
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
	/*
	 * No mapping of it is in any rmap now, so no reclaim pass can take a
	 * new reference to its reclaim channel (struct upc_zapper): the
	 * mm's goes.  One the reclaim thread holds keeps it until its zap
	 * returns.
	 */
	{
		struct upc_zapper *z = atomic_exchange(&mm->zapper, NULL);

		if (z)
			zapper_put(z);
	}
	mm_fini(mm);
	free(mm);
}

/*
 * The client opened its reclaim channel (UPC_MSG_RECLAIM): @z, whose
 * reference the mm takes.  -EBUSY if it has one already.
 */
int remote_zapper_set(struct upc_mm *mm, struct upc_zapper *z)
{
	struct upc_zapper *none = NULL;

	return atomic_compare_exchange_strong(&mm->zapper, &none, z) ? 0 : -EBUSY;
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
	if (acc & PROT_WRITE)
		file_account(f);	/* its write-back counts against this client's user (wbpark.c) */
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
 * Synchronous tracking: a PTE of the adopted mapping that is writable now
 * (the dead daemon lifted its protection for a write) must be protected
 * again before the mapping is served, and its page counted dirty first:
 * the page table may call it clean, because another client's msync, in
 * this daemon, wrote it back while this mapping was unknown here and so
 * not protected (I1: clean only after every writable mapping is gone; a
 * kill -9 test lost every later write to such a page, which kept its
 * writable PTE for good).  map_attach() protects nothing in synchronous
 * tracking (map.c, map_wp: a new mapping has no PTE), so it is done here:
 * the pages the client's pagemap shows present and not uffd-write-protected
 * (bit 57) are marked dirty, then protected, run by run; a page that
 * becomes present meanwhile goes through a fault, which waits for the
 * mapping to be attached.  Caller holds f->lock.
 */
static int adopt_run(void *arg, uintptr_t addr, uint64_t n)
{
	const struct upc_map *m = arg;
	uint64_t p = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);
	int ret;

	for (uint64_t k = 0; k < n; k++) {
		struct upc_page *pg = pt_lookup(m->file, p + k);

		if (pg && (pg->flags & PG_UPTODATE))
			page_set_dirty(m->file, pg);
	}
	ret = sys_uffd_wp(m->mm->uffd, addr, n << UPC_PAGE_SHIFT, true, false);
	return ret == -ENOENT ? 0 : ret;
}

static int adopt_writable_ptes(const struct upc_map *m)
{
	uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);

	mend = min_t(uint64_t, mend, m->file->npages);
	if (mend <= m->pgoff)
		return 0;
	return pagemap_writable_runs(m->mm->pagemap_fd, m->start, mend - m->pgoff, adopt_run, (void *)m);
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
	ret = file_adopt_wait(c, fd, memfd, statefd, &f);
	if (ret < 0)
		return ret;
	if (acc & PROT_WRITE)
		file_account(f);
	pthread_mutex_lock(&f->lock);
	ret = file_memfd_span(f, (pgoff << UPC_PAGE_SHIFT) + len);
	if (ret == 0) {
		/* Asynchronous tracking: what it wrote unseen is dirty before the mapping is protected again. */
		struct upc_map tmp = { .mm = mm, .file = f, .start = addr, .end = addr + len, .pgoff = pgoff,
				       .prot = prot, .wp = true };

		if (c->track_mode == UPC_TRACK_ASYNC)
			track_collect_adopted(&tmp);
		else if (prot & PROT_WRITE)
			ret = adopt_writable_ptes(&tmp);
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

/* ------------------------------------------------------------ what a client can do to a memfd */

/*
 * What a client can do to a memfd.  A client that may write a file gets a
 * read-write descriptor of the file's memfd (it must map it writable), and
 * with it every system call on a shmem file.  None of them may take the
 * daemon down or cost another client its data beyond what writing the
 * file allows anyway (writing zeros over it):
 *
 *   - ftruncate(2) to a smaller size, and any shrink: refused (EPERM), the
 *     memfd is sealed with F_SEAL_SHRINK (cache.c, file_new).  Before the
 *     seal, the daemon's next access to a page past the new size, through
 *     its staging mapping, was SIGBUS, and the daemon died with every
 *     client's unwritten data (upcd(8)).  F_SEAL_SEAL refuses new seals
 *     (F_SEAL_GROW or F_SEAL_FUTURE_WRITE would stop the engine's own
 *     growth, writes and hole punches); seals cannot be removed.
 *   - fallocate(2) COLLAPSE_RANGE, INSERT_RANGE, ZERO_RANGE: shmem has
 *     none of them (EOPNOTSUPP).
 *   - growing it (ftruncate larger, a write past its end, fallocate):
 *     allowed and harmless: the memfd only needs to be at least as long as
 *     every mapping of it (cache.c, file_memfd_span, which accepts one a
 *     client made longer).
 *   - FALLOC_FL_PUNCH_HOLE: allowed (only F_SEAL_WRITE and
 *     F_SEAL_FUTURE_WRITE refuse it, and they would refuse the clients'
 *     writes too).  A punched page the cache thought cached reads as
 *     zeros: the engine's own accesses to it through the staging mapping
 *     are served a page of zeros (staging_main below: a staging hole in
 *     an embedded cache is a bug, SIGBUS; in upcd it is a client's punch),
 *     and a client's fault on it reads it from the store again (fault.c,
 *     "MISSING fault again on cached page").  What it held is lost, as if
 *     the punching client had written zeros there, which it may.
 *   - write(2) into a hole of the memfd (a page the cache does not hold):
 *     the page is not the cache's.  A client's MINOR fault on it punches
 *     it and reads the store's page instead (fault.c, handle_minor).
 *
 * Without the shrink, the end-of-file fence an embedded cache uses
 * (cache.c, file_fence: the memfd cut at end of file, so that the kernel
 * raises its own SIGBUS for the access) is gone too.  A client's access
 * past end of file is refused with a poison marker in that client's PTE
 * instead (remote_refuse): measured on this kernel (6.18), an access to it
 * is the kernel's own SIGBUS, BUS_ADRERR, with the exact faulting address
 * in si_addr, a kernel-mode access (write(2) from the mapping) fails with
 * EFAULT and no signal: the fence's semantics, for that client only.  A
 * poison marker stays until the process itself zaps the PTE (a hole
 * punched in the memfd does not remove it: the kernel zaps markers at
 * truncation only, and process_madvise(MADV_DONTNEED) of another process
 * is refused), so when the file grows over a poisoned page the client is
 * asked to zap it (remote_lift): by the relay signal its library
 * registered (UPC_MSG_RELAY; sigbus.c, relay_action), or, if it has none,
 * at the start of its next request (and the client that grew the file
 * itself, before the reply to that request).  Until then an access to
 * that page still gets SIGBUS: upcd(8), BUGS.
 */

static pthread_once_t zero_once = PTHREAD_ONCE_INIT;
static char *zero_page;

static void zero_page_alloc(void)
{
	zero_page = aligned_alloc(UPC_PAGE_SIZE, UPC_PAGE_SIZE);
	if (zero_page)
		memset(zero_page, 0, UPC_PAGE_SIZE);
}

/*
 * The engine's faults on its staging mappings, in a serving cache: a page
 * the cache thinks cached is a hole only if a client punched it (see
 * above).  It is served as zeros, the punch's own contents, instead of the
 * SIGBUS that would end the daemon.
 */
static void *staging_main(void *arg)
{
	struct upc_cache *c = arg;
	struct uffd_msg msg[16];

	for (;;) {
		struct pollfd pfd[2] = { { .fd = c->engine_uffd, .events = POLLIN },
					 { .fd = c->stage_efd, .events = POLLIN } };
		ssize_t n;

		if (poll(pfd, 2, -1) < 0)
			continue;
		if (pfd[1].revents)
			break;
		n = read(c->engine_uffd, msg, sizeof(msg));
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msg[0]); i++) {
			uintptr_t addr = (uintptr_t)msg[i].arg.pagefault.address & UPC_PAGE_MASK;
			long r;

			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			pr_warn("a page of a served memfd was punched behind the cache (a client's fallocate): "
				"it reads as zeros\n");
			r = sys_uffd_copy(c->engine_uffd, addr, zero_page, UPC_PAGE_SIZE, false, true);
			if (r < 0)
				sys_uffd_wake(c->engine_uffd, addr, UPC_PAGE_SIZE);	/* EEXIST: filled meanwhile */
		}
	}
	return NULL;
}

/*
 * The cache becomes upcd's: its memfds are sealed and handed to clients
 * (cache.c, file_new), and its staging mappings are served by
 * staging_main() rather than failing with SIGBUS.  Before any file exists.
 */
int cache_serve(struct upc_cache *c)
{
	int uffd, ret;

	if (c->nr_files)
		return -EBUSY;
	pthread_once(&zero_once, zero_page_alloc);
	if (!zero_page)
		return -ENOMEM;
	uffd = sys_uffd_open(0, NULL, NULL);	/* not UFFD_FEATURE_SIGBUS: staging_main() serves it */
	if (uffd < 0)
		return uffd;
	c->stage_efd = eventfd(0, EFD_CLOEXEC);
	if (c->stage_efd < 0) {
		ret = -errno;
		close(uffd);
		return ret;
	}
	close(c->engine_uffd);
	c->engine_uffd = uffd;
	if (pthread_create(&c->stage_thread, NULL, staging_main, c) != 0) {
		close(c->stage_efd);
		c->stage_efd = -1;
		return -EAGAIN;
	}
	pthread_setname_np(c->stage_thread, "upc-staging");
	c->stage_running = true;
	ret = punch_start(c);	/* the reclaim thread's punches (punch.c): not stopped here on failure */
	if (ret < 0)
		return ret;
	c->serving = true;
	c->wb_per_account = geteuid() == 0;	/* serving many users (wbpark.c): a daemon not root's serves one */
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		c->born = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	}
	cache_find_orphans(c);
	return 0;
}

/* At cache destruction, after every file is freed. */
void cache_serve_stop(struct upc_cache *c)
{
	uint64_t one = 1;

	if (!c->stage_running)
		return;
	if (write(c->stage_efd, &one, sizeof(one)) == sizeof(one))
		pthread_join(c->stage_thread, NULL);
	close(c->stage_efd);
	c->stage_running = false;
}

/*
 * A client's access at @addr in @m, past end of file, refused: a poison
 * marker in its PTE (see the top of this section), which the kernel
 * answers with SIGBUS for a user-mode access and EFAULT for a kernel-mode
 * one, now and at every later access until the file grows over the page
 * (remote_lift).  Only where an empty PTE needs no write-protect marker
 * (synchronous tracking with MINOR faults: map.c, map_wp), since lifting
 * the poison leaves the PTE empty.  Returns 0 (the caller wakes the
 * fault), or -errno: the caller signals the thread itself.  Caller holds
 * f->lock.
 */
int remote_refuse(struct upc_map *m, uintptr_t addr)
{
	struct upc_mm *mm = m->mm;
	struct upc_cache *c = mm->cache;
	uint64_t pgoff = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);
	int ret;

	if (!(c->uffd_features & UFFD_FEATURE_POISON) ||
	    (m->wp && !(c->track_mode == UPC_TRACK_SYNC && (c->uffd_features & UFFD_FEATURE_MINOR_SHMEM))))
		return -EOPNOTSUPP;
	/* UFFDIO_POISON installs into an empty PTE only (EEXIST on a uffd-wp marker) */
	if (m->wp) {
		ret = sys_uffd_wp(mm->uffd, addr, UPC_PAGE_SIZE, false, false);
		if (ret < 0)
			return ret;
	}
	ret = sys_uffd_poison(mm->uffd, addr, UPC_PAGE_SIZE);
	if (ret < 0 && ret != -EEXIST)	/* EEXIST: a late message of an access poisoned already */
		return ret;
	atomic_store(&mm->poisoned, true);
	if (m->poison_lo == m->poison_hi) {
		m->poison_lo = pgoff;
		m->poison_hi = pgoff + 1;
	} else {
		m->poison_lo = min_t(uint64_t, m->poison_lo, pgoff);
		m->poison_hi = max_t(uint64_t, m->poison_hi, pgoff + 1);
	}
	if (ret == -EEXIST)
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
	return 0;
}

/*
 * @m's client is asked to zap its poisoned PTEs: by its relay signal,
 * process-directed, whichever of its threads takes it (sigbus.c,
 * relay_action: MADV_DONTNEED of the range); the pages still past end of
 * file are poisoned again at their next access.  The range stays recorded
 * for remote_lift_pending() instead if the client has no relay signal, or
 * if this thread is serving its request (the file grows by its own
 * upc_pwrite or upc_ftruncate): then it is zapped before the reply, so
 * that the client's next access after its own call sees the pages.
 * Caller holds f->lock.
 */
/* @m's poisoned range, within @m (a split mapping keeps its original's range): false if none */
static bool map_poisoned(const struct upc_map *m, uintptr_t *startp, uint64_t *npagesp)
{
	uint64_t lo = max_t(uint64_t, m->poison_lo, m->pgoff);
	uint64_t hi = min_t(uint64_t, m->poison_hi, m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT));

	if (lo >= hi)
		return false;
	*startp = m->start + ((lo - m->pgoff) << UPC_PAGE_SHIFT);
	*npagesp = hi - lo;
	return true;
}

static void map_lift(struct upc_map *m)
{
	struct upc_mm *mm = m->mm;
	uintptr_t start;
	uint64_t n;
	siginfo_t si;

	if (!map_poisoned(m, &start, &n)) {
		m->poison_lo = m->poison_hi = 0;
		return;
	}
	if (!mm->relay_sig || !mm->pid || (mm->in_call && pthread_equal(mm->call_thread, pthread_self())))
		return;
	memset(&si, 0, sizeof(si));
	si.si_signo = mm->relay_sig;
	si.si_code = SI_QUEUE;
	si.si_pid = mm->pid;		/* relay_action() takes only its own process's (sigbus.c) */
	si.si_errno = RELAY_LIFT_TAG;
	si.si_uid = (uid_t)min_t(uint64_t, n, UINT32_MAX);	/* pages */
	si.si_value.sival_ptr = (void *)start;
	if (syscall(SYS_rt_sigqueueinfo, mm->pid, mm->relay_sig, &si) == 0 || errno == ESRCH)
		m->poison_lo = m->poison_hi = 0;
}

/*
 * The file grows over pages that were past its end: no client may keep a
 * poison marker there (remote_refuse).  From file_grow(), before the size
 * says the pages exist.  Caller holds f->lock.
 */
void remote_lift(struct upc_file *f)
{
	for (struct upc_map *m = f->rmap; m; m = m->f_next)
		if (m->mm->remote && m->poison_hi != m->poison_lo)
			map_lift(m);
}

/*
 * The poison markers of @mm that the file has grown over and map_lift()
 * left recorded are zapped now, by the client itself (mm_call): before
 * and after each of its requests.  No lock held; from the thread serving
 * the client's requests, with the client's mm current.
 */
void remote_lift_pending(struct upc_mm *mm)
{
	struct run lift[8];
	bool left = false;
	size_t n = 0;

	/* a hint, set by remote_refuse(): most requests of most clients find nothing to walk */
	if (!atomic_exchange(&mm->poisoned, false))
		return;
	pthread_rwlock_rdlock(&mm->lock);
	for (size_t i = 0; i < mm->nmaps; i++) {
		struct upc_map *m = mm->maps[i];

		if (m->poison_hi == m->poison_lo)
			continue;
		left = true;
		if (n == ARRAY_SIZE(lift))
			continue;
		pthread_mutex_lock(&m->file->lock);
		/* only what the file has grown over: the rest is still past its end */
		if ((m->poison_lo << UPC_PAGE_SHIFT) < (uint64_t)m->file->size) {
			uintptr_t start;

			if (map_poisoned(m, &start, &lift[n].n))
				lift[n++].start = start;
			m->poison_lo = m->poison_hi = 0;
		}
		pthread_mutex_unlock(&m->file->lock);
	}
	pthread_rwlock_unlock(&mm->lock);
	if (left)	/* still past end of file, or more than one pass takes */
		atomic_store(&mm->poisoned, true);
	for (size_t i = 0; i < n; i++)
		mm_call(mm, MM_CALL_MADVISE, (uintptr_t)lift[i].start, lift[i].n << UPC_PAGE_SHIFT, MADV_DONTNEED);
}

/* The client's relay signal (UPC_MSG_RELAY): 0, or a real-time signal. */
int remote_relay_set(struct upc_mm *mm, int sig)
{
	if (sig && (sig < SIGRTMIN || sig > SIGRTMAX))
		return -EINVAL;
	mm->relay_sig = sig;
	return 0;
}
