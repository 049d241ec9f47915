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
 *   2. the handler marks itself "reading" (mm->reading odd) before it reads,
 *      counts every fork event of what it read in cache->forks_pending, and
 *      only then clears the mark; the count drops when the child has joined
 *      the rmap.
 *
 * So write-back, after protecting every mm of the rmap and before cleaning
 * (fork_settled()), cleans only if no protect met EAGAIN, no handler of
 * those mms is in a read, and no fork event is pending; otherwise it lets go
 * of file->lock, waits for the child to join (fork_wait_settled()) and
 * starts over.  A fork whose copy came after our protect copied protected
 * PTEs; one whose copy came before it made our protect fail or is pending.
 *
 * Never a lock the fork holds.  glibc's fork() runs the prepare handlers,
 * then takes the malloc (and stdio list) locks, clones, and the kernel keeps
 * the clone waiting until the fork event has been read.  A handler that
 * needs malloc, or a lock whose holder needs malloc, for a fault queued
 * before the event would wait for ever.  So fork_prepare() parks the
 * process's own handler: it finishes the message at hand (no malloc lock is
 * held yet) and then only reads, into its preallocated queue, until
 * fork_parent() lets it go; reading takes no lock and allocates nothing.
 * The mappings the child gets are snapshotted in fork_prepare() under
 * mm->lock, held until fork_parent(), and handed to the fork event the
 * parked handler reads (fork_event_read()).  A clone() that runs no atfork
 * handlers gets the mappings as they are when its event is handled.
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
#include <unistd.h>

/* ------------------------------------------------------------ I1 across fork */

/*
 * The handler read a fork event into its queue (mm_read_msgs(), "reading"
 * mark held).  Count it, and if the process's fork is in progress under
 * fork_prepare(), give it the snapshot of the mappings taken there.  No
 * lock, no allocation: the forking thread may hold the malloc locks.
 */
void fork_event_read(struct upc_mm *mm, struct uffd_msg *msg)
{
	struct upc_cache *c = mm->cache;

	atomic_fetch_add(&c->forks_pending, 1);
	msg->arg.reserved.reserved2 = 0;
	if (mm == &c->self && mm->parked)
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
	/* A handler in a read may hold a fork event it has not counted yet: a few instructions. */
	for (struct upc_map *m = f->rmap; m; m = m->f_next)
		while (atomic_load(&m->mm->reading) & 1)
			sched_yield();
	return atomic_load(&c->forks_pending) == 0;
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

	if (!child)
		goto fail;
	child->cache = c;
	child->uffd = ufd;
	child->pagemap_fd = -1;	/* the child's pid is not known: no sampling */
	child->pid = 0;
	child->is_child = true;
	pthread_rwlock_init(&child->lock, NULL);
	child->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (child->stop_efd < 0 || mm_buffers(child) < 0)
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
	child->next_child = c->children;
	c->children = child;
	pthread_mutex_unlock(&c->lock);
	pr_debug("fork: serving a child with %zu mappings\n", child->nmaps);
	fork_event_done(c);
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

/*
 * The handler parks while its process forks: it only reads, into its queue,
 * until fork_parent() lifts @park_req.  Called by the handler itself.
 */
void handler_park(struct upc_mm *mm)
{
	struct upc_cache *c = mm->cache;
	struct pollfd pfd[2] = {
		{ .fd = mm->uffd, .events = POLLIN },
		{ .fd = mm->stop_efd, .events = POLLIN },
	};
	uint64_t v;

	pthread_mutex_lock(&c->fork_mutex);
	mm->parked = true;
	pthread_cond_broadcast(&c->fork_cond);
	pthread_mutex_unlock(&c->fork_mutex);
	while (atomic_load(&mm->park_req) && !mm->stopping) {
		if (poll(pfd, 2, -1) <= 0)
			continue;
		if (pfd[1].revents && read(mm->stop_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			break;
		if (pfd[0].revents)
			mm_read_msgs(mm);
	}
	pthread_mutex_lock(&c->fork_mutex);
	mm->parked = false;
	pthread_mutex_unlock(&c->fork_mutex);
}

/* Is the child whose address space @mm is gone?  Then drop its mappings. */
bool fork_child_gone(struct upc_mm *mm)
{
	/* Any range will do: a live mm answers ENOENT or 0, a dead one ESRCH. */
	if (sys_uffd_wp(mm->uffd, 1UL << 20, UPC_PAGE_SIZE, true, false) != -ESRCH)
		return false;
	mm_release_maps(mm);
	mm->dead = true;
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
		if (!c->children)
			continue;
		pthread_mutex_lock(&c->lock);	/* no file is released meanwhile */
		for (struct upc_file *f = c->files; f; f = f->next) {
			file_unpin_all(f);
			writeback_range(f, 0, UINT64_MAX, WB_SYNC, NULL);
			sys_ftruncate(f->memfd, 0);
		}
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&caches_lock);
}

/*
 * pthread_atfork handlers (see the top of this file).  Before glibc takes
 * its locks: park every cache's handler, hold its mm->lock so that no
 * mapping comes or goes until the clone, and snapshot the mappings for the
 * child.  After the fork, in the parent: a snapshot no fork event took (the
 * fork failed, or nothing was registered) is dropped, and the handlers go
 * on with what they queued.  caches_lock is held from prepare to parent, so
 * no cache is destroyed in between.
 */
static void park(struct upc_cache *c, bool on)
{
	uint64_t one = 1;
	struct upc_mm *mm = &c->self;

	if (!mm->handler_running || pthread_equal(pthread_self(), mm->handler))
		return;	/* a read_error callback that forks: nobody to park (upcache(7)) */
	atomic_store(&mm->park_req, on);
	if (write(mm->stop_efd, &one, sizeof(one)) != sizeof(one))
		return;
	if (!on)
		return;
	pthread_mutex_lock(&c->fork_mutex);
	while (!mm->parked)
		pthread_cond_wait(&c->fork_cond, &c->fork_mutex);
	pthread_mutex_unlock(&c->fork_mutex);
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&caches_lock);
	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		park(c, true);
		pthread_rwlock_rdlock(&c->self.lock);
		atomic_store(&c->fork_snap, c->self.nmaps ? mm_snapshot(&c->self) : NULL);
	}
}

static void fork_parent(void)
{
	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		mm_snap_free(atomic_exchange(&c->fork_snap, NULL));
		pthread_rwlock_unlock(&c->self.lock);
		park(c, false);
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
	struct upc_mm *mm, *next;

	pthread_mutex_lock(&c->lock);
	mm = c->children;
	c->children = NULL;
	pthread_mutex_unlock(&c->lock);
	for (; mm; mm = next) {
		next = mm->next_child;
		fault_handler_stop(mm);
		mm_release_maps(mm);
		mm_fini(mm);
		free(mm);
	}
}
