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
 * tracked and written back by the parent's engine.
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

#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* Tell the fork in progress (fork_parent()) that its child is in the rmap. */
static void fork_event_done(struct upc_cache *c)
{
	pthread_mutex_lock(&c->fork_mutex);
	c->fork_events++;
	pthread_cond_broadcast(&c->fork_cond);
	pthread_mutex_unlock(&c->fork_mutex);
}

void fork_event(struct upc_mm *parent, int ufd)
{
	struct upc_cache *c = parent->cache;
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
	child->bounce = mmap(NULL, (size_t)c->ra_max * UPC_PAGE_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (child->stop_efd < 0 || child->bounce == MAP_FAILED) {
		if (child->bounce == MAP_FAILED)
			child->bounce = NULL;
		goto fail_child;
	}
	/* The child's mappings are the parent's as they were at the fork. */
	ret = mm_clone_maps(child, parent);
	if (ret < 0)
		goto fail_child;
	ret = fault_handler_start(child);
	if (ret < 0) {
		mm_release_maps(child);
		goto fail_child;
	}
	pthread_mutex_lock(&c->lock);
	child->next_child = c->children;
	c->children = child;
	pthread_mutex_unlock(&c->lock);
	pr_debug("fork: serving a child with %zu mappings\n", child->nmaps);
	fork_event_done(c);
	return;

fail_child:
	child->uffd = -1;
	mm_fini(child);
	free(child);
fail:
	/*
	 * Closing the descriptor unregisters the child's mappings: its
	 * uncached pages would then read as zeros.  Truncating would take the
	 * parent's pages too; so say it loudly.
	 */
	pr_warn("fork: cannot serve the child's inherited mappings (out of memory)\n");
	close(ufd);
	fork_event_done(c);
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
 * pthread_atfork handlers.  Write-back may not clean a page between the fork
 * and the moment the child's mappings join the rmap (writeback_range): the
 * child's PTEs were copied from the parent's, writable ones included, and a
 * protect that misses them would let the child write a page counted clean
 * (I1).  So the fork takes every cache's fork_lock for writing (waiting for
 * cleaning in progress), and releases it only once the fork event has been
 * handled.  caches_lock is held from prepare to parent, so no cache is
 * destroyed in between.
 */
static void fork_prepare(void)
{
	pthread_mutex_lock(&caches_lock);
	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		pthread_rwlock_wrlock(&c->fork_lock);
		pthread_rwlock_rdlock(&c->self.lock);
		c->fork_expect = c->fork_events + (c->self.nmaps ? 1 : 0);
		pthread_rwlock_unlock(&c->self.lock);
	}
}

static void fork_parent(void)
{
	for (struct upc_cache *c = caches; c; c = c->next_cache) {
		pthread_mutex_lock(&c->fork_mutex);
		/* Bounded: a fork with nothing registered sends no event. */
		for (int i = 0; i < 200 && c->fork_events < c->fork_expect; i++)
			cond_wait_ms(&c->fork_cond, &c->fork_mutex, 10);
		pthread_mutex_unlock(&c->fork_mutex);
		pthread_rwlock_unlock(&c->fork_lock);
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
