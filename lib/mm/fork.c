/* SPDX-License-Identifier: MIT */
/*
 * fork.c - a forked child inherits MAP_SHARED mappings: the kernel's
 * dup_mmap() for VMAs that belong to a userfaultfd (dup_userfaultfd()).
 *
 * With UFFD_EVENT_FORK the kernel gives the parent's handler a new
 * userfaultfd for the child's copy of every registered mapping, and the
 * child's PTEs keep their write-protection.  The engine makes the child one
 * more mm: its mappings join each file's rmap, its faults are served by a
 * handler thread of its own (UFFDIO_COPY and UFFDIO_WRITEPROTECT work on the
 * child's address space through that descriptor), and write-back protects
 * the child's PTEs like the parent's (I1).  The child therefore reads and
 * writes the same pages as the parent, coherently, and its writes are
 * tracked and written back by the parent's engine.  A served child that
 * forks again is served the same way: its child's fork event arrives on the
 * child's userfaultfd, read by the child's handler here.
 *
 * I1 across a fork (seed 003; the rule of writeback.c).  The kernel copies
 * the forking mm's PTEs into the child - writable ones, of dirty pages,
 * included - before the engine can know the child: it learns of it when
 * its handler reads the UFFD_EVENT_FORK message.  Until the child is in the
 * rmap, a write-back that protects "every mapping" misses the child's
 * writable PTEs, and a page it then counts clean is written through them
 * unseen.  Two facts close the window, with no timeout anywhere:
 *
 *   1. from dup_userfaultfd() (before the PTEs are copied) until the fork
 *      event has been read, the kernel answers UFFDIO_WRITEPROTECT on the
 *      forking mm's userfaultfd with EAGAIN (ctx->mmap_changing);
 *   2. a reader counts itself in cache->reading before it reads, counts
 *      every fork event of what it read in cache->forks_pending, and only
 *      then leaves; the count drops when the child has joined the rmap.
 *
 * So write-back, after protecting every mm of the rmap and before cleaning
 * (fork_settled()), cleans only if no protect met EAGAIN, no reader is in
 * a read, and no fork event is pending; otherwise it lets go
 * of file->lock, waits for the child to join (fork_wait_settled()) and
 * starts over.  A fork whose copy came after our protect copied protected
 * PTEs; one whose copy came before it made our protect fail or is pending.
 *
 * Never a lock the fork holds.  glibc's fork() takes the malloc (and stdio
 * list) locks after the prepare handlers ran and before the clone, and the
 * kernel keeps the clone waiting until the fork event has been read (an
 * AddressSanitizer build takes its allocator's locks even before the prepare
 * handlers).  A handler that needs malloc, or a lock whose holder needs
 * malloc, for a fault queued before the event would wait for ever.  So a
 * second reader of the process's userfaultfd, the fork reader thread, reads
 * while a fork is in progress, into a stash allocated in advance: reading
 * takes no lock and allocates nothing, and the fault handler takes what it
 * read after the fork.  The atfork handlers themselves never wait on
 * anything that may wait on an allocation: fork_prepare() wakes the fork
 * reader (an eventfd write), takes mm->lock only if it can within a second,
 * and snapshots the mappings for the child into a buffer allocated before;
 * fork_parent() only lets go.  The snapshot is handed to the fork event by
 * whichever thread reads it (fork_event_read()).  Without it (a clone()
 * that runs no atfork handlers; mm->lock not had in time; no buffer) the
 * child gets the mappings as they are when its event is handled.
 *
 * Limits, stated in upcache(7): the child must not call upcache functions
 * (its copy of the engine's state is a snapshot with locks other threads
 * may have held at fork); the engine cannot sample the child's page tables
 * (no pagemap fd), so reclaim tears the child's PTEs down only by punching
 * the page.  When the child exits, ioctls on its descriptor fail with ESRCH:
 * its handler notices within a second and drops its mappings from the rmap;
 * the pages it dirtied stay dirty in the cache and are written back.  When
 * the parent destroys the cache, every page is written back and the memfds
 * are truncated, so a child still running gets SIGBUS on its next access to
 * an inherited mapping, never stale data.
 */
#include "internal.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ I1 across fork */

/*
 * A reader read a fork event (uffd_read_msgs(), counted in cache->reading).
 * Count it, and if the process's fork is in progress under fork_prepare(),
 * give it the snapshot of the mappings taken there.  No
 * lock, no allocation: the forking thread may hold the malloc locks.
 */
void fork_event_read(struct upc_mm *mm, struct uffd_msg *msg)
{
	struct upc_cache *c = mm->cache;

	atomic_fetch_add(&c->forks_pending, 1);
	msg->arg.reserved.reserved2 = 0;
	if (mm == &c->self && atomic_load(&c->forking))
		msg->arg.reserved.reserved2 = (uintptr_t)atomic_exchange(&c->fork_snap, NULL);
}

/* The fork event's child is in the rmap (or will never be): write-back may clean again. */
static void fork_event_done(struct upc_cache *c)
{
	pthread_mutex_lock(&c->fork_mutex);
	atomic_fetch_sub(&c->forks_pending, 1);
	pthread_cond_broadcast(&c->fork_cond);
	pthread_mutex_unlock(&c->fork_mutex);
}

/*
 * After protecting every mapping of @f (write-back, step 1): may its pages
 * be counted clean now?  Not while a fork of one of the mms that map @f may
 * have copied PTEs the protect did not reach (see the top of this file).
 * Caller holds f->lock; the protect's own EAGAIN is the caller's to see.
 */
bool fork_settled(struct upc_file *f)
{
	struct upc_cache *c = f->cache;

	if (!(c->uffd_features & UFFD_FEATURE_EVENT_FORK))
		return true;
	/*
	 * A reader in a read (of any mm's uffd: the mm that forked may have
	 * unmapped the file since) may hold a fork event it has not counted
	 * yet: a few instructions, no lock.
	 */
	while (atomic_load(&c->reading))
		sched_yield();
	return atomic_load(&c->forks_pending) == 0;
}

/*
 * A page-table ioctl on a mapping of @f answered EAGAIN: its mm is forking,
 * and the reader of the fork event may need file->lock (a handler blocked on
 * it).  Let go of the lock for a moment; the caller tries again.  For
 * callers whose pages cannot go meanwhile (pinned), or that redo their work
 * after it.  Caller holds f->lock.
 */
void fork_yield_file(struct upc_file *f)
{
	pthread_mutex_unlock(&f->lock);
	sched_yield();
	pthread_mutex_lock(&f->lock);
}

/*
 * Wait, holding no file lock, until every fork event read so far has its
 * child in the rmap; then a little more, for a fork whose event nobody has
 * read yet (its protect answered EAGAIN).
 */
void fork_wait_settled(struct upc_cache *c)
{
	pthread_mutex_lock(&c->fork_mutex);
	while (atomic_load(&c->forks_pending))
		cond_wait_ms(&c->fork_cond, &c->fork_mutex, 10);
	pthread_mutex_unlock(&c->fork_mutex);
	usleep(100);
}

/* ------------------------------------------------------------ serving a child */

void fork_event(struct upc_mm *parent, const struct uffd_msg *msg)
{
	struct upc_cache *c = parent->cache;
	struct mm_snap *snap = (struct mm_snap *)(uintptr_t)msg->arg.reserved.reserved2;
	int ufd = (int)msg->arg.fork.ufd;
	struct upc_mm *child = calloc(1, sizeof(*child));
	int ret;

	fork_children_reap(c);
	if (!child)
		goto fail;
	child->cache = c;
	child->uffd = ufd;
	child->pagemap_fd = -1;	/* the child's pid is not known: no sampling */
	child->pid = 0;
	child->is_child = true;
	pthread_rwlock_init(&child->lock, NULL);
	child->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (child->stop_efd < 0 || mm_handlers_alloc(child, 1, NULL) < 0)
		goto fail_child;
	/*
	 * The child's mappings are the forking mm's as they were at the fork:
	 * the snapshot fork_prepare() took, or (a clone without atfork
	 * handlers, or a forking child, whose mappings never change) as they
	 * are now.
	 */
	if (!snap) {
		pthread_rwlock_rdlock(&parent->lock);
		snap = mm_snapshot(parent);
		pthread_rwlock_unlock(&parent->lock);
		if (!snap)
			goto fail_child;
	}
	ret = mm_clone_maps(child, snap);
	snap = NULL;
	if (ret < 0)
		goto fail_release;
	ret = fault_handler_start(child);
	if (ret < 0)
		goto fail_release;
	pthread_mutex_lock(&c->lock);
	if (atomic_load(&c->dying)) {
		/* upc_cache_destroy() has let its children go: the memfds are truncated (SIGBUS). */
		pthread_mutex_unlock(&c->lock);
		fault_handler_stop(child);
		goto fail_release;
	}
	child->next_child = c->children;
	c->children = child;
	pthread_mutex_unlock(&c->lock);
	pr_debug("fork: serving a child with %zu mappings\n", child->nmaps);
	fork_event_done(c);
	if (parent == &c->self)
		fork_spare_refill(c);	/* the next fork's snapshot buffer */
	return;

fail_release:
	mm_release_maps(child);
fail_child:
	child->uffd = -1;
	mm_fini(child);
	free(child);
fail:
	mm_snap_free(snap);
	/*
	 * Closing the descriptor unregisters the child's mappings: its
	 * uncached pages would then read as zeros.  Truncating would take the
	 * parent's pages too; so say it loudly.
	 */
	pr_warn("fork: cannot serve the child's inherited mappings (out of memory)\n");
	close(ufd);
	fork_event_done(c);
}

/* A fork event read by a handler that stops before handling it. */
void fork_event_drop(struct upc_mm *mm, const struct uffd_msg *msg)
{
	mm_snap_free((struct mm_snap *)(uintptr_t)msg->arg.reserved.reserved2);
	close((int)msg->arg.fork.ufd);
	fork_event_done(mm->cache);
}

/* ------------------------------------------------------------ the fork reader */

#define STASH_SIZE	UFFD_QUEUE

/*
 * The fork reader: asleep except while this process forks, when it reads
 * the process's userfaultfd into the stash, so that the fork event is read
 * whatever the fault handler is waiting for.  After the fork it hands the
 * stash to the handler (a poke on its stop_efd).
 */
static void *fork_reader_main(void *arg)
{
	struct upc_cache *c = arg;
	struct upc_mm *mm = &c->self;
	struct pollfd pfd[2] = {
		{ .fd = c->fr_efd, .events = POLLIN },
		{ .fd = mm->uffd, .events = POLLIN },
	};
	uint64_t v, one = 1;

	for (;;) {
		bool forking = atomic_load(&c->forking);

		/* Not forking: wait for fork_prepare() (or the stop) only. */
		if (poll(pfd, forking ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents && read(c->fr_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			break;
		if (mm->stopping)
			break;
		if (forking && pfd[1].revents) {
			pthread_mutex_lock(&c->stash_lock);
			atomic_fetch_add(&c->nstash, uffd_read_msgs(mm, c->stash + c->nstash,
								    STASH_SIZE - c->nstash));
			pthread_mutex_unlock(&c->stash_lock);
		}
		if (!atomic_load(&c->forking) && atomic_load(&c->nstash) &&
		    write(mm->stop_efd, &one, sizeof(one)) != sizeof(one))
			pr_warn("fork reader: cannot wake the fault handler\n");
	}
	return NULL;
}

/* The handler takes what the fork reader read, once the fork is over. */
void fork_stash_take(struct upc_handler *h)
{
	struct upc_cache *c = h->mm->cache;
	unsigned int n;

	if (atomic_load(&c->forking))
		return;
	pthread_mutex_lock(&c->stash_lock);
	handler_queue_compact(h);
	n = min_t(unsigned int, atomic_load(&c->nstash), UFFD_QUEUE - h->qtail);
	memcpy(h->q + h->qtail, c->stash, n * sizeof(*h->q));
	h->qtail += n;
	memmove(c->stash, c->stash + n, (c->nstash - n) * sizeof(*c->stash));
	atomic_fetch_sub(&c->nstash, n);
	pthread_mutex_unlock(&c->stash_lock);
}

int fork_reader_start(struct upc_cache *c)
{
	int ret;

	pthread_mutex_init(&c->stash_lock, NULL);
	pthread_mutex_init(&c->snap_lock, NULL);
	c->fr_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->stash = mmap(NULL, STASH_SIZE * sizeof(*c->stash), PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c->fr_efd < 0 || c->stash == MAP_FAILED) {
		ret = c->fr_efd < 0 ? -errno : -ENOMEM;
		goto err;
	}
	ret = -pthread_create(&c->fr_thread, NULL, fork_reader_main, c);
	if (ret)
		goto err;
	pthread_setname_np(c->fr_thread, "upc-fork");
	c->fr_running = true;
	fork_spare_refill(c);
	return 0;
err:
	if (c->stash != MAP_FAILED && c->stash)
		munmap(c->stash, STASH_SIZE * sizeof(*c->stash));
	c->stash = NULL;
	if (c->fr_efd >= 0)
		close(c->fr_efd);
	c->fr_efd = -1;
	return ret;
}

/* After the handler stopped (mm->stopping is set). */
void fork_reader_stop(struct upc_cache *c)
{
	uint64_t one = 1;

	if (!c->fr_running)
		return;
	if (write(c->fr_efd, &one, sizeof(one)) != sizeof(one))
		pr_warn("fork reader: cannot signal stop\n");
	pthread_join(c->fr_thread, NULL);
	c->fr_running = false;
	/* Fork events it read that no handler took: their children are not served. */
	for (unsigned int i = 0; i < c->nstash; i++)
		if (c->stash[i].event == UFFD_EVENT_FORK)
			fork_event_drop(&c->self, &c->stash[i]);
	munmap(c->stash, STASH_SIZE * sizeof(*c->stash));
	close(c->fr_efd);
	mm_snap_free(c->snap_spare);
	c->snap_spare = NULL;
}

/*
 * Keep a snapshot buffer for the next fork large enough for the mappings
 * (fork_prepare() cannot allocate).  Allocates with no lock held, swaps
 * under snap_lock.
 */
void fork_spare_refill(struct upc_cache *c)
{
	struct upc_mm *mm = &c->self;
	struct mm_snap *snap, *old = NULL;
	size_t want;

	if (!c->fr_running)
		return;
	pthread_rwlock_rdlock(&mm->lock);
	want = mm->nmaps + 1;
	pthread_rwlock_unlock(&mm->lock);
	pthread_mutex_lock(&c->snap_lock);
	old = c->snap_spare;
	pthread_mutex_unlock(&c->snap_lock);
	if (mm_snap_cap(old) >= want)
		return;
	snap = mm_snap_alloc(want * 2 + 8);
	if (!snap)
		return;
	/* snap_lock is held for pointer swaps only, never across an allocation. */
	pthread_mutex_lock(&c->snap_lock);
	old = NULL;
	if (mm_snap_cap(c->snap_spare) < mm_snap_cap(snap)) {
		old = c->snap_spare;
		c->snap_spare = snap;
		snap = NULL;
	}
	pthread_mutex_unlock(&c->snap_lock);
	free(snap);
	free(old);	/* a spare holds no file references */
}

/* Stop serving the children on the list @mm (off c->children already) and free them. */
static void child_free_list(struct upc_mm *mm)
{
	for (struct upc_mm *next; mm; mm = next) {
		next = mm->next_child;
		fault_handler_stop(mm);
		mm_release_maps(mm);	/* a child that is gone has none left */
		mm_fini(mm);
		free(mm);
	}
}

/*
 * Free the children that are gone: their handler noticed (fork_child_gone)
 * and has stopped or is stopping.  Their mappings left the rmap already.
 */
void fork_children_reap(struct upc_cache *c)
{
	struct upc_mm *dead = NULL, *mm, **pp;

	pthread_mutex_lock(&c->lock);
	for (pp = &c->children; (mm = *pp);) {
		if (atomic_load(&mm->dead)) {
			*pp = mm->next_child;
			mm->next_child = dead;
			dead = mm;
		} else {
			pp = &mm->next_child;
		}
	}
	pthread_mutex_unlock(&c->lock);
	child_free_list(dead);
}

/* Is the child whose address space @mm is gone?  Then drop its mappings. */
bool fork_child_gone(struct upc_mm *mm)
{
	/* Any range will do: a live mm answers ENOENT or 0, a dead one ESRCH. */
	if (sys_uffd_wp(mm->uffd, 1UL << 20, UPC_PAGE_SIZE, true, false) != -ESRCH)
		return false;
	mm_release_maps(mm);
	atomic_store(&mm->dead, true);
	pr_debug("fork: a child is gone; its dirty pages stay in the cache\n");
	return true;
}

/*
 * The parent exits (exit(3), or returns from main) with forked children
 * still mapping the cache and without destroying it.  Its descriptors close
 * with it, the kernel unregisters the children's mappings, and an uncached
 * page would then read as zeros.  So, at exit, write every cache that serves
 * children back and truncate its memfds: the children get SIGBUS.  A parent
 * that dies without running exit handlers (a crash, _exit(2), SIGKILL) cannot
 * do this; upcache(7) says so.
 */
static pthread_mutex_t caches_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upc_cache *caches;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void fork_atexit(void)
{
	pthread_mutex_lock(&caches_lock);
	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		struct upc_file **fs = NULL;
		size_t n = 0, cap = 0;
		bool pending;

		/*
		 * References taken under cache->lock, the write-back done
		 * without it: a served child's handler may need cache->lock to
		 * let a grandchild join, and write-back waits for that join.
		 *
		 * A child being joined counts as served: fork_event() starts
		 * its handler before it links it to c->children, and that
		 * handler may serve a write the child then finishes.  So the
		 * pending count is read first: it drops only after the link.
		 * It is raised after the read that let the fork go on
		 * (uffd_read_msgs), by a reader counted in c->reading
		 * meanwhile: wait for those first, as fork_settled() does.
		 */
		while (atomic_load(&c->reading))
			sched_yield();
		pending = atomic_load(&c->forks_pending) != 0;
		pthread_mutex_lock(&c->lock);
		if (!pending && !c->children) {
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		for (struct upc_file *f = c->files; f; f = f->next)
			cap++;
		fs = calloc(cap ? cap : 1, sizeof(*fs));
		for (struct upc_file *f = c->files; fs && f; f = f->next) {
			atomic_fetch_add(&f->refs, 1);
			fs[n++] = f;
		}
		pthread_mutex_unlock(&c->lock);
		for (size_t i = 0; i < n; i++) {
			file_unpin_all(fs[i]);
			writeback_range(fs[i], 0, UINT64_MAX, WB_SYNC, NULL);
			file_memfd_empty(fs[i]);
			file_put(fs[i]);
		}
		free(fs);
	}
	pthread_mutex_unlock(&caches_lock);
}

/*
 * pthread_atfork handlers (see the top of this file): nothing here may wait
 * on anything that can wait on an allocation, nor allocate.  Before the
 * fork: wake every cache's fork reader; hold its mm->lock (if it can be had
 * within a second: a writer holds it only for system calls, unless it waits
 * for a file lock) so that no mapping comes or goes until the clone, and
 * snapshot the mappings into the spare buffer.  After the fork, in the
 * parent: a snapshot no fork event took (the fork failed, or nothing was
 * registered) becomes the spare again; the fork reader hands what it read
 * to the handler.  caches_lock is held from prepare to parent, so no cache
 * is destroyed in between.
 */
static void fork_prepare(void)
{
	uint64_t one = 1;

	pthread_mutex_lock(&caches_lock);
	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		struct timespec ts;

		atomic_store(&c->forking, true);
		if (write(c->fr_efd, &one, sizeof(one)) != sizeof(one))
			pr_warn("fork: cannot wake the fork reader\n");
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		c->fork_locked = pthread_rwlock_timedrdlock(&c->self.lock, &ts) == 0;
		pthread_mutex_lock(&c->snap_lock);
		if (c->fork_locked && c->self.nmaps && c->snap_spare &&
		    mm_snapshot_into(&c->self, c->snap_spare)) {
			atomic_store(&c->fork_snap, c->snap_spare);
			c->snap_spare = NULL;
		}
		pthread_mutex_unlock(&c->snap_lock);
	}
}

static void fork_parent(void)
{
	uint64_t one = 1;

	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		struct mm_snap *snap;

		/*
		 * The fork event was read before fork() returned; the reader
		 * that read it may not have counted it (and taken the
		 * snapshot) yet: a few instructions, no lock.
		 */
		while (atomic_load(&c->reading))
			sched_yield();
		snap = atomic_exchange(&c->fork_snap, NULL);

		if (snap) {	/* not taken: it holds references the mappings also hold */
			mm_snap_drop_refs(snap);
			pthread_mutex_lock(&c->snap_lock);
			if (!c->snap_spare) {
				c->snap_spare = snap;
				snap = NULL;
			}
			pthread_mutex_unlock(&c->snap_lock);
			/* Never: fork_prepare() took the spare and no one refills during a fork. */
			if (snap)
				pr_warn("fork: a snapshot buffer leaks\n");
		}
		if (c->fork_locked)
			pthread_rwlock_unlock(&c->self.lock);
		c->fork_locked = false;
		atomic_store(&c->forking, false);
		if (write(c->fr_efd, &one, sizeof(one)) != sizeof(one))
			pr_warn("fork: cannot wake the fork reader\n");
	}
	pthread_mutex_unlock(&caches_lock);
}

/*
 * In the child: it owns no cache.  Its copies of the parent's caches are
 * snapshots that no thread serves (and whose locks other threads may have
 * held), so they are forgotten - not unlocked: a glibc rwlock unlocked by
 * another thread id than the one that write-locked it stays locked.  Nor
 * must the child's exit hook write anything back through the parent's
 * descriptors.
 */
static void fork_child(void)
{
	caches = NULL;
	pthread_mutex_init(&caches_lock, NULL);
}

static void atexit_register(void)
{
	atexit(fork_atexit);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void fork_cache_add(struct upc_cache *c)
{
	pthread_once(&atexit_once, atexit_register);
	pthread_mutex_lock(&caches_lock);
	c->next_cache = caches;
	caches = c;
	pthread_mutex_unlock(&caches_lock);
}

void fork_cache_del(struct upc_cache *c)
{
	pthread_mutex_lock(&caches_lock);
	for (struct upc_cache **pp = &caches; *pp; pp = &(*pp)->next_cache)
		if (*pp == c) {
			*pp = c->next_cache;
			break;
		}
	pthread_mutex_unlock(&caches_lock);
}

/*
 * At cache destruction, after everything was written back: stop serving the
 * children.  The memfds are truncated afterwards (cache.c), so an inherited
 * mapping still in use gets SIGBUS.
 */
void fork_children_release(struct upc_cache *c)
{
	struct upc_mm *mm;

	pthread_mutex_lock(&c->lock);
	mm = c->children;
	c->children = NULL;
	pthread_mutex_unlock(&c->lock);
	child_free_list(mm);
}
