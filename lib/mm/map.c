/* SPDX-License-Identifier: MIT */
/*
 * map.c - mappings: the kernel's VMAs, the per-file rmap (i_mmap) and the
 * per-process mm.
 *
 * A mapping is an mmap(MAP_SHARED) of the file's memfd at the file offset,
 * registered with its mm's userfaultfd for MISSING faults (a page that is
 * not cached), write-protect faults (the first write to a clean page) and,
 * where the kernel has them, MINOR faults (a cached page not yet mapped
 * here: mapped with its neighbours in one UFFDIO_CONTINUE, see fault.c).
 * The range up to end of file is write-protected before its address is
 * returned, which leaves a uffd-wp marker in every empty PTE (shmem always
 * uses markers: userfaultfd_wp_use_markers()): a read the kernel serves
 * itself then maps the page read-only, and the first write traps.  That is
 * the invariant the rest of the engine relies on: a page that is clean is
 * write-protected in every mapping of it (I1).
 *
 * Only up to end of file, because a marker needs a PTE to live in:
 * UFFDIO_WRITEPROTECT over an empty range allocates the page tables under
 * it (mm/mprotect.c, pgtable_populate_needed(): MM_CP_UFFD_WP on a vma that
 * uses markers), 2 GiB of them for a 1 TiB map.  Past end of file no page
 * can be mapped without the handler: no page past it is in the memfd (its
 * MISSING fault reaches the handler, which refuses it and leaves the PTE
 * empty, fault.c), so there is nothing to protect.  As the file grows,
 * file_grow() protects the new pages in every writable mapping of the file,
 * in every mm (forked children's included), before the size says they
 * exist (file_wp_extend); @wp_end records how far a mapping is protected,
 * rounded up to a page table's reach (2 MiB) so that a file growing a page
 * at a time costs one ioctl per mapping per 2 MiB.  A map of any length
 * over a file of any size therefore costs page tables for the file's part
 * only, like the kernel's own mmap.
 */
#include "internal.h"
#include "usdt.h"

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * @nh handlers for @mm, each with its fill buffer and message queue:
 * allocated once, never on the fault path.  Handler i is to be pinned to
 * @cpus[i] by fault_handler_start(); a single handler, or @cpus NULL: none.
 */
int mm_handlers_alloc(struct upc_mm *mm, unsigned int nh, const int *cpus)
{
	mm->h = calloc(nh, sizeof(*mm->h));
	if (!mm->h)
		return -ENOMEM;
	mm->nh = nh;
	for (unsigned int i = 0; i < nh; i++) {
		struct upc_handler *h = &mm->h[i];

		h->mm = mm;
		h->cpu = nh > 1 && cpus ? cpus[i] : -1;
		h->bounce = mmap(NULL, (size_t)mm->cache->ra_max * UPC_PAGE_SIZE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		h->q = mmap(NULL, UFFD_QUEUE * sizeof(*h->q), PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (h->bounce == MAP_FAILED || h->q == MAP_FAILED) {
			if (h->bounce == MAP_FAILED)
				h->bounce = NULL;
			if (h->q == MAP_FAILED)
				h->q = NULL;
			return -ENOMEM;
		}
	}
	return 0;
}

static void mm_handlers_free(struct upc_mm *mm)
{
	for (unsigned int i = 0; mm->h && i < mm->nh; i++) {
		if (mm->h[i].bounce)
			munmap(mm->h[i].bounce, (size_t)mm->cache->ra_max * UPC_PAGE_SIZE);
		if (mm->h[i].q)
			munmap(mm->h[i].q, UFFD_QUEUE * sizeof(*mm->h[i].q));
		free(mm->h[i].deferred);
	}
	free(mm->h);
	mm->h = NULL;
	mm->nh = 0;
}

int mm_init(struct upc_cache *c, struct upc_mm *mm)
{
	int cpus[CPU_SETSIZE];
	int ret;

	memset(mm, 0, sizeof(*mm));
	mm->cache = c;
	mm->uffd = mm->pagemap_fd = mm->stop_efd = -1;
	pthread_rwlock_init(&mm->lock, NULL);
	pthread_mutex_init(&mm->pin_lock, NULL);
	mm->pid = getpid();
	ret = sys_uffd_open(c->uffd_features, NULL, NULL);
	if (ret < 0)
		goto err;
	mm->uffd = ret;
	mm->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	mm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mm->stop_efd < 0) {
		ret = -errno;
		goto err;
	}
	ret = mm_handlers_alloc(mm, fault_handlers_wanted(cpus, CPU_SETSIZE), cpus);
	if (ret < 0)
		goto err;
	return 0;
err:
	mm_fini(mm);
	return ret;
}

void mm_fini(struct upc_mm *mm)
{
	mm_handlers_free(mm);
	if (mm->uffd >= 0)
		close(mm->uffd);
	if (mm->pagemap_fd >= 0)
		close(mm->pagemap_fd);
	if (mm->stop_efd >= 0)
		close(mm->stop_efd);
	free(mm->maps);
	mm->maps = NULL;
	free(mm->pins);		/* released already: pins_release() or file_unpin_all() */
	mm->pins = NULL;
	mm->npins = mm->pins_cap = 0;
	mm->uffd = mm->pagemap_fd = mm->stop_efd = -1;
	pthread_rwlock_destroy(&mm->lock);
}

/* Index of the first mapping whose end is above @addr.  Caller holds mm->lock. */
static size_t mm_search(struct upc_mm *mm, uintptr_t addr)
{
	size_t lo = 0, hi = mm->nmaps;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (mm->maps[mid]->end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct upc_map *mm_find(struct upc_mm *mm, uintptr_t addr)
{
	size_t i = mm_search(mm, addr);

	if (i < mm->nmaps && mm->maps[i]->start <= addr)
		return mm->maps[i];
	return NULL;
}

static int mm_insert(struct upc_mm *mm, struct upc_map *m)
{
	size_t i;

	if (mm->nmaps == mm->cap) {
		size_t cap = mm->cap ? mm->cap * 2 : 16;
		struct upc_map **n = realloc(mm->maps, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		mm->maps = n;
		mm->cap = cap;
	}
	i = mm_search(mm, m->start);
	memmove(&mm->maps[i + 1], &mm->maps[i], (mm->nmaps - i) * sizeof(*mm->maps));
	mm->maps[i] = m;
	mm->nmaps++;
	return 0;
}

static void mm_remove(struct upc_mm *mm, struct upc_map *m)
{
	size_t i = mm_search(mm, m->start);

	memmove(&mm->maps[i], &mm->maps[i + 1], (mm->nmaps - i - 1) * sizeof(*mm->maps));
	mm->nmaps--;
}

/* A client's mapping that may write, in the page table's header (struct upc_state_hdr @wmaps). */
static bool rmap_wmap(const struct upc_file *f, const struct upc_map *m)
{
	return f->state_hdr && m->mm->remote && (m->maxprot & PROT_WRITE);
}

static void rmap_add(struct upc_file *f, struct upc_map *m)
{
	if (rmap_wmap(f, m))
		atomic_fetch_add(&f->state_hdr->wmaps, 1);
	m->f_prev = NULL;
	m->f_next = f->rmap;
	if (f->rmap)
		f->rmap->f_prev = m;
	f->rmap = m;
}

static void rmap_del(struct upc_file *f, struct upc_map *m)
{
	if (rmap_wmap(f, m))
		atomic_fetch_sub(&f->state_hdr->wmaps, 1);
	if (m->f_prev)
		m->f_prev->f_next = m->f_next;
	else
		f->rmap = m->f_next;
	if (m->f_next)
		m->f_next->f_prev = m->f_prev;
}

/*
 * Register @m with its mm's userfaultfd.  A writable mapping: MISSING, WP
 * and (where the kernel has it) MINOR; the caller then write-protects it
 * up to end of file (map_wp_extend) before anything can access it.  A
 * read-only one: MISSING only.  Nothing can write through it, so there is
 * nothing to track, and a range without WP or MINOR keeps the kernel's
 * fault-around: a cached page is mapped with its neighbours by the kernel
 * itself (upc-bench workload 1: 0.99x a plain memfd mapping, against 4-5x
 * with WP registered).  upc_protect() upgrades it in place.
 */
static int map_register(struct upc_map *m, bool writable)
{
	struct upc_cache *c = m->mm->cache;
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING;
	int ret;

	if (writable)
		mode |= UFFDIO_REGISTER_MODE_WP |
			((c->uffd_features & UFFD_FEATURE_MINOR_SHMEM) ? UFFDIO_REGISTER_MODE_MINOR : 0);
	ret = sys_uffd_register(m->mm->uffd, m->start, m->end - m->start, mode);
	if (ret == 0 && writable) {
		m->wp = true;
		m->wp_end = m->pgoff;	/* nothing protected yet */
	}
	return ret;
}

/*
 * Write-protect @m over the file pages it has not protected yet, up to
 * @npages (end of file, in pages) rounded up to a page table's reach: I1
 * for pages the file gains.  The pages there are not in the memfd yet
 * (file_grow calls this before the size says they exist; upc_map before
 * the address is returned), so nothing written is erased, in either
 * tracking mode.  Returns 0, -EAGAIN (its mm is forking: fork.c; the
 * caller lets the reader of the fork event run and tries again) or another
 * error.  A forked child that is gone (ESRCH) needs nothing.  Caller holds
 * f->lock.
 */
static int map_wp(struct upc_map *m, uint64_t npages, bool present)
{
	uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
	uint64_t want = min_t(uint64_t, mend, (npages + PT_CHUNK_PAGES - 1) & ~(uint64_t)(PT_CHUNK_PAGES - 1));
	uint64_t from = max_t(uint64_t, m->wp_end, m->pgoff);
	int ret;

	if (!m->wp || from >= want)
		return 0;
	/*
	 * Synchronous tracking with MINOR faults registered: an empty PTE
	 * needs no marker.  Every fault on it reaches the handler (MISSING
	 * for a page the memfd does not have, MINOR for one it has:
	 * shmem_get_folio_gfp()), which maps the page write-protected, and the
	 * kernel maps nothing around it (uffd_disable_fault_around()).
	 * Markers cost page tables for the whole range, 2 GiB over a sparse
	 * 1 TiB file (LMDB's MDB_WRITEMAP sizes its file to the map).  Only
	 * PTEs the kernel may have mapped already (@present: a read-only
	 * mapping becoming writable) must be protected by the ioctl.
	 * Asynchronous tracking keeps them: PAGEMAP_SCAN reports an empty PTE
	 * without a marker as written, and a cached page this mapping never
	 * touched would be counted dirty.
	 */
	if (!present && m->mm->cache->track_mode == UPC_TRACK_SYNC &&
	    (m->mm->cache->uffd_features & UFFD_FEATURE_MINOR_SHMEM)) {
		m->wp_end = want;
		return 0;
	}
	ret = sys_uffd_wp(m->mm->uffd, m->start + ((from - m->pgoff) << UPC_PAGE_SHIFT),
			  (want - from) << UPC_PAGE_SHIFT, true, false);
	if (ret == 0 || ret == -ESRCH || ret == -ENOENT)
		m->wp_end = want;
	return ret == -ESRCH || ret == -ENOENT ? 0 : ret;
}

int map_wp_extend(struct upc_map *m, uint64_t npages)
{
	return map_wp(m, npages, false);
}

/*
 * map_wp_extend() for every mapping of @f, in every mm: the file is
 * growing to @npages pages.  A mapping whose mm is forking (EAGAIN) must
 * be protected all the same before the pages exist: the thread that reads
 * that mm's fork event may be waiting for f->lock, so let go of it for a
 * moment (fork_yield_file), or, if this thread is one of that mm's handlers, read
 * the event itself (as fault.c's uffd_eagain does); then start over, since
 * the rmap may have changed.  *@yielded says whether f->lock was let go.
 * Caller holds f->lock.
 */
int file_wp_extend(struct upc_file *f, uint64_t npages, bool *yielded)
{
	int ret;

	*yielded = false;
again:
	for (struct upc_map *m = f->rmap; m; m = m->f_next) {
		ret = map_wp_extend(m, npages);
		if (ret == -EAGAIN) {
			struct upc_handler *h = mm_handler_self(m->mm);

			if (h) {
				handler_read_msgs(h, UFFD_QUEUE);
				sched_yield();
			} else {
				fork_yield_file(f);
				*yielded = true;
			}
			goto again;
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * Split @m at @at, so that a range can be unmapped or re-protected as a
 * whole mapping (the kernel's split_vma).  The new mapping [at, end) is
 * returned in *@tailp.  Caller holds mm->lock for writing and f->lock.
 */
static int map_split(struct upc_mm *mm, struct upc_map *m, uintptr_t at, struct upc_map **tailp)
{
	struct upc_map *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	*t = *m;
	t->start = at;
	t->pgoff = m->pgoff + ((at - m->start) >> UPC_PAGE_SHIFT);
	m->end = at;
	ret = mm_insert(mm, t);
	if (ret < 0) {
		m->end = t->end;
		free(t);
		return ret;
	}
	rmap_add(m->file, t);
	atomic_fetch_add(&m->file->refs, 1);
	*tailp = t;
	return 0;
}

/* Make [start, end) (within one mapping) a mapping of its own. Returns it. */
static struct upc_map *map_isolate(struct upc_mm *mm, struct upc_map *m, uintptr_t start, uintptr_t end,
				   int *retp)
{
	struct upc_map *t;

	*retp = 0;
	if (start > m->start) {
		*retp = map_split(mm, m, start, &t);
		if (*retp < 0)
			return NULL;
		m = t;
	}
	if (end < m->end) {
		*retp = map_split(mm, m, end, &t);
		if (*retp < 0)
			return NULL;
	}
	return m;
}

static bool range_pinned(struct upc_map *m, uintptr_t start, uintptr_t end)
{
	uint64_t first = m->pgoff + ((start - m->start) >> UPC_PAGE_SHIFT);
	uint64_t last = m->pgoff + ((end - m->start) >> UPC_PAGE_SHIFT);

	/* Only what is cached: not a walk of every page of a terabyte map. */
	if (!m->file->nr_pinned)
		return false;
	last = min_t(uint64_t, last, m->file->npages);
	for (uint64_t p = first; p < last; p++) {
		struct upc_page *pg = pt_lookup(m->file, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;	/* a chunk with nothing cached */
			continue;
		}
		if (pg->pincount)
			return true;
	}
	return false;
}

/*
 * A client's mapping @m (isolated, its written state collected) is taken
 * down: the client is asked to munmap it or to put a placeholder over it
 * (@op), with file->lock let go while it answers (mm_call_file()).  A
 * write-back meanwhile must not count clean a page still writable through
 * @m (I1), and no write through @m may go unseen:
 *
 *   - synchronous tracking: @m stays in the rmap until the client has
 *     answered, so a write-back meanwhile protects it as any mapping, and
 *     a write after that traps; its handler, which needs mm->lock, finds
 *     no mapping once the caller lets go of it.  A protect of an address
 *     the client has unmapped by then fails (ENOENT, which write-back
 *     takes for gone: writeback.c, protect_runs()); no other mapping of
 *     ours can be there (mm->lock), and nothing else there is registered
 *     with the userfaultfd but by the client itself, on its own memory.
 *     (Protecting @m first instead, and taking it out of the rmap, cost
 *     a TLB flush more: BENCHMARKS.md, issue 10 at 9e483ed.)
 *   - asynchronous tracking, where writes do not trap and a write-back
 *     reads written state with PAGEMAP_SCAN, which on a range unmapped
 *     meanwhile would count every page written: the client is asked to
 *     make @m read-only first (a call of its own, without the lock), what
 *     it wrote until then is collected, and @m leaves the rmap before the
 *     munmap (review of edfc85e: a page written just before it stopped
 *     was otherwise written back by another client's msync and then
 *     rewritten unseen).
 *
 * Forgotten whatever the client answers (it is going away, or lies;
 * write-protected first, as before edfc85e, when it did not unmap; a lie
 * costs only its own writes; under asynchronous tracking, a client whose
 * mprotect fails, ENOMEM at vm.max_map_count, and that writes the range
 * while its own munmap runs may lose that write, as any such write could
 * be before edfc85e); returns the answer.  Caller holds mm->lock for
 * writing and f->lock, and frees @m.
 */
static int map_forget_remote(struct upc_mm *mm, struct upc_map *m, int op)
{
	struct upc_file *f = m->file;
	int r;

	if (m->wp && f->cache->track_mode == UPC_TRACK_ASYNC) {
		/* (one the client made read-only or inaccessible already cannot write) */
		if (m->prot & PROT_WRITE) {
			mm_call_file(f, mm, MM_CALL_MPROTECT, m->start, m->end - m->start, PROT_READ);
			track_collect_map(m);
		}
		UPC_TRACE(unmap, f, m->pgoff, (m->end - m->start) >> UPC_PAGE_SHIFT);
		rmap_del(f, m);
		mm_remove(mm, m);
		return mm_call_file(f, mm, op, m->start, m->end - m->start, 0);
	}
	r = mm_call_file(f, mm, op, m->start, m->end - m->start, 0);
	if (r < 0 && m->wp)	/* not unmapped: write-protected, so that no write goes unseen */
		sys_uffd_wp(mm->uffd, m->start, m->end - m->start, true, false);
	UPC_TRACE(unmap, f, m->pgoff, (m->end - m->start) >> UPC_PAGE_SHIFT);
	rmap_del(f, m);
	mm_remove(mm, m);
	return r;
}

/*
 * UPC_MAP_FIXED: unmap the upcache mappings in [start, end) as upc_unmap()
 * does - their written state collected first (I5), their dirty pages kept
 * dirty in the cache - leaving an inaccessible placeholder (an anonymous
 * PROT_NONE mapping) where each was, not a hole: between this and the
 * mmap(MAP_FIXED) that replaces the whole range, another thread's mmap()
 * could otherwise be given the hole, and then be replaced silently.  Each
 * goes under its file's lock, so that write-back never protects an address
 * that maps something else by then (a client's is replaced without the
 * lock, made safe otherwise: map_forget_remote()).  Refused, with nothing
 * changed, if a page of the range is pinned (-EBUSY, I6).  The files are handed back in
 * *@putp (*@nputp of them), for file_put() once mm->lock is let go.
 * Caller holds mm->lock for writing.
 */
static int map_clear_range(struct upc_mm *mm, uintptr_t start, uintptr_t end, struct upc_file ***putp,
			   size_t *nputp)
{
	struct upc_file **put;
	size_t n = 0, i;
	int ret = 0, err = 0;

	*putp = NULL;
	*nputp = 0;
	for (i = mm_search(mm, start); i < mm->nmaps && mm->maps[i]->start < end; i++) {
		struct upc_map *m = mm->maps[i];
		bool pinned;

		pthread_mutex_lock(&m->file->lock);
		pinned = range_pinned(m, max_t(uintptr_t, start, m->start), min_t(uintptr_t, end, m->end));
		pthread_mutex_unlock(&m->file->lock);
		if (pinned)
			return -EBUSY;
		n++;
	}
	if (!n)
		return 0;
	put = calloc(n, sizeof(*put));
	if (!put)
		return -ENOMEM;
	while ((i = mm_search(mm, start)) < mm->nmaps && mm->maps[i]->start < end) {
		struct upc_map *m = mm->maps[i];
		struct upc_file *f = m->file;
		uintptr_t s = max_t(uintptr_t, start, m->start), e = min_t(uintptr_t, end, m->end);

		pthread_mutex_lock(&f->lock);
		m = map_isolate(mm, m, s, e, &ret);
		if (m) {
			track_collect_map(m);
			if (mm->remote) {
				/*
				 * A client that did not put the placeholder there
				 * (going away, or lying): the request fails, and the
				 * client, broken, is disconnected.
				 */
				if (map_forget_remote(mm, m, MM_CALL_PLACEHOLD) < 0)
					err = -EIO;
			} else if (mmap((void *)s, e - s, PROT_NONE,
					MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) {
				ret = -ENOMEM;
			} else {
				UPC_TRACE(unmap, f, m->pgoff, (m->end - m->start) >> UPC_PAGE_SHIFT);
				rmap_del(f, m);
				mm_remove(mm, m);
			}
		}
		pthread_mutex_unlock(&f->lock);
		if (ret < 0)
			break;
		free(m);
		put[(*nputp)++] = f;	/* at most n: a split leaves only the part outside */
	}
	*putp = put;
	return ret < 0 ? ret : err;
}

/*
 * UPC_MSG_MAP_CLEAR, the first half of a client's UPC_MAP_FIXED (client.c):
 * the client's upcache mappings in [addr, addr + len) are forgotten as
 * map_clear_range() forgets them for an embedded upc_map(UPC_MAP_FIXED) -
 * their written state collected and their dirty pages left dirty in the
 * cache (I5), the client asked to put a placeholder where each was - so
 * that the client's mmap(MAP_FIXED) of the new memfd replaces no mapping
 * the daemon still serves.  -EBUSY with nothing changed if a page in the
 * range is pinned (I6).  On any other failure, what was cleared stays
 * cleared: the client unmaps the whole range, as a failed
 * mmap(MAP_FIXED) may leave it (upc_map(3)).  Returns the number of
 * mappings (or pieces of one) forgotten, or a negative errno.
 */
int map_clear(struct upc_mm *mm, uintptr_t addr, size_t len)
{
	struct upc_file **put = NULL;
	size_t nput = 0;
	int ret;

	if (!len || (addr & (UPC_PAGE_SIZE - 1)) || (len & (UPC_PAGE_SIZE - 1)) || addr + len < addr)
		return -EINVAL;
	pthread_rwlock_wrlock(&mm->lock);
	ret = map_clear_range(mm, addr, addr + len, &put, &nput);
	pthread_rwlock_unlock(&mm->lock);
	/* Outside mm->lock: the last reference may release the file (cache.c). */
	for (size_t i = 0; i < nput; i++)
		file_put(put[i]);
	free(put);
	return ret < 0 ? ret : (int)min_t(size_t, nput, INT32_MAX);
}

/* Check the address flags of upc_map(): *@wantp is the address asked for, or NULL. */
static int map_where(unsigned int flags, void *const *addrp, size_t len, uintptr_t *wantp)
{
	unsigned int where = flags & (UPC_MAP_HINT | UPC_MAP_FIXED | UPC_MAP_FIXED_NOREPLACE);
	uintptr_t want;

	*wantp = 0;
	if (!where)
		return 0;
	if (where & (where - 1))
		return -EINVAL;		/* at most one of them */
	want = (uintptr_t)*addrp;
	if (where == UPC_MAP_HINT) {
		/* As mmap(2)'s hint: rounded down to a page, and no hint at all where it cannot be. */
		want &= UPC_PAGE_MASK;
		*wantp = want + len < want ? 0 : want;
		return 0;
	}
	if ((want & (UPC_PAGE_SIZE - 1)) || want + len < want || !want)
		return -EINVAL;
	*wantp = want;
	return 0;
}

/*
 * What a mapping of @fd may allow (PROT_READ, or PROT_READ | PROT_WRITE
 * for O_RDWR), or -EBADF, or -EACCES if @prot asks for more: mmap(2)'s
 * rule, for upc_map() and for upcd's clients (remote.c).
 */
int fd_map_access(int fd, int prot)
{
	int acc = fcntl(fd, F_GETFL);

	/*
	 * O_PATH reads as O_RDONLY, but grants no access: mmap(2) says EBADF.
	 * The store opens the file again through /proc: from upcd, with the
	 * daemon's rights, which an O_PATH descriptor must not lend.
	 */
	if (acc < 0 || (acc & O_PATH))
		return -EBADF;
	acc &= O_ACCMODE;
	if (acc == O_WRONLY || ((prot & PROT_WRITE) && acc != O_RDWR))
		return -EACCES;
	return acc == O_RDWR ? PROT_READ | PROT_WRITE : PROT_READ;
}

/*
 * Put @m in its mm and its file's rmap, the memfd spanning it (a map may
 * reach past the memfd: it grows, so that faults past end of file reach
 * the handler).  Caller holds mm->lock for writing.
 */
static int map_link(struct upc_mm *mm, struct upc_map *m)
{
	struct upc_file *f = m->file;
	int ret;

	pthread_mutex_lock(&f->lock);
	ret = file_memfd_span(f, (m->pgoff << UPC_PAGE_SHIFT) + (m->end - m->start));
	m->err_seen = errseq_sample(f);
	if (ret == 0)
		ret = mm_insert(mm, m);
	if (ret == 0)
		rmap_add(f, m);
	pthread_mutex_unlock(&f->lock);
	return ret;
}

UPC_API int upc_map(struct upc_cache *c, int fd, off_t offset, size_t length, int prot,
		    unsigned int flags, void **addrp)
{
	bool fixed = flags & (UPC_MAP_FIXED | UPC_MAP_FIXED_NOREPLACE);
	struct upc_file **put = NULL;
	size_t len, pop_len, nput = 0;
	uintptr_t want = 0;
	struct upc_mm *mm;
	struct upc_file *f;
	struct upc_map *m;
	int acc, ret, mflags;
	bool yielded;
	void *addr;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_map(c, fd, offset, length, prot, flags, addrp);

	if (!c || !addrp || !length || offset < 0 || (offset & (UPC_PAGE_SIZE - 1)) ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || (flags & ~UPC_MAP_FLAGS_ALL))
		return -EINVAL;
	len = pg_round_up(length);
	if (len < length || (uint64_t)offset + len > (uint64_t)INT64_MAX)
		return -EOVERFLOW;
	ret = map_where(flags, addrp, len, &want);
	if (ret < 0)
		return ret;
	acc = fd_map_access(fd, prot);
	if (acc < 0)
		return acc;
	if (prot & PROT_WRITE)
		prot |= PROT_READ;	/* as on x86: write implies read */

	ret = file_get(c, fd, &f);
	if (ret < 0)
		return ret;
	m = calloc(1, sizeof(*m));
	if (!m) {
		ret = -ENOMEM;
		goto out_put;
	}
	mm = &c->self;
	/*
	 * mm->lock from the mmap until the mapping is in the rmap: a fork in
	 * between would give the child a registered mapping that the snapshot
	 * of our mappings taken for it (fork.c) does not have.
	 */
	pthread_rwlock_wrlock(&mm->lock);
	if (flags & UPC_MAP_FIXED) {
		ret = map_clear_range(mm, want, want + len, &put, &nput);
		if (ret < 0)
			goto out_fail;
	}
	/*
	 * At an address the caller chose, the mapping is made inaccessible
	 * and given its protection only once it is registered and protected:
	 * the caller's other threads may know the address already, and an
	 * access before the registration would map a cached page writable
	 * behind the engine's back, or put a page of zeros into a hole of the
	 * memfd, as if it were the file's data.  (Elsewhere nobody knows the
	 * address until it is returned.)
	 */
	mflags = MAP_SHARED | ((flags & UPC_MAP_FIXED) ? MAP_FIXED : 0) |
		 ((flags & UPC_MAP_FIXED_NOREPLACE) ? MAP_FIXED_NOREPLACE : 0);
	addr = mmap((void *)want, len, fixed ? PROT_NONE : prot, mflags, f->memfd, offset);
	if (addr == MAP_FAILED) {
		ret = -errno;
		goto out_fail;
	}
	if ((flags & UPC_MAP_FIXED_NOREPLACE) && (uintptr_t)addr != want) {
		/* A kernel before 4.17 takes MAP_FIXED_NOREPLACE for a hint. */
		munmap(addr, len);
		ret = -EEXIST;
		goto out_fail;
	}
	m->mm = mm;
	m->file = f;
	m->start = (uintptr_t)addr;
	m->end = m->start + len;
	m->pgoff = (uint64_t)offset >> UPC_PAGE_SHIFT;
	m->prot = prot;
	m->maxprot = acc;

	/*
	 * Register before anyone can know the address (or access it: see
	 * above); the write-protection follows under f->lock.
	 */
	ret = map_register(m, prot & PROT_WRITE);
	if (ret < 0)
		goto out_unmap;
	/*
	 * Without UFFD_EVENT_FORK (asynchronous tracking, or an old kernel) a
	 * child would inherit the mapping without the userfaultfd
	 * registration: its read of an uncached page would allocate a zero
	 * page in the shared memfd, which every mapping would then see as the
	 * file's data.  Such children do not inherit mappings: they get
	 * SIGSEGV, never wrong data.  With it, fork.c serves the child.
	 */
	if (!(c->uffd_features & UFFD_FEATURE_EVENT_FORK) && madvise(addr, len, MADV_DONTFORK) < 0) {
		ret = -errno;
		goto out_unmap;
	}

	ret = map_link(mm, m);
	if (ret < 0)
		goto out_unmap;
	pthread_rwlock_unlock(&mm->lock);
	for (size_t i = 0; i < nput; i++)
		file_put(put[i]);
	free(put);
	fork_spare_refill(c);

	/*
	 * I1: write-protect it up to end of file before the address is
	 * returned (map.c's top comment).  Without mm->lock: if a fork is in
	 * flight (EAGAIN), the handler that reads its event may need mm->lock
	 * first.  It is in the rmap already, so a growth meanwhile protects it
	 * too, and nothing accesses it yet.  Not m after this: once f->lock is
	 * let go, another thread may unmap it.
	 */
	pthread_mutex_lock(&f->lock);
	pop_len = f->npages <= m->pgoff ? 0 : min_t(uint64_t, len, (f->npages - m->pgoff) << UPC_PAGE_SHIFT);
	ret = file_wp_extend(f, f->npages, &yielded);
	pthread_mutex_unlock(&f->lock);
	if (ret == 0 && fixed && prot != PROT_NONE && mprotect(addr, len, prot) < 0)
		ret = -ENOMEM;
	if (ret < 0) {
		upc_unmap(c, addr, len);	/* takes the file reference with it */
		return ret;
	}
	/* Populating stops at end of file: past it the handler signals the thread (fault.c). */
	if (flags & UPC_MAP_POPULATE)
		fault_populate((uintptr_t)addr, pop_len, prot);
	*addrp = addr;
	return 0;

out_unmap:
	munmap(addr, len);
out_fail:
	/* Replaced mappings are gone, as a failed mmap(MAP_FIXED) may have unmapped the range. */
	if (nput)
		munmap((void *)want, len);
	pthread_rwlock_unlock(&mm->lock);
	for (size_t i = 0; i < nput; i++)
		file_put(put[i]);
	free(put);
	free(m);
out_put:
	file_put(f);
	return ret;
}

/*
 * The second half of a client's upc_map (remote.c has the first): the
 * client has mapped the memfd descriptor it was given at @addr, with
 * @prot, and nothing in it knows the address yet.  Register it with the
 * client's userfaultfd (the daemon can: UFFDIO_REGISTER acts on the mm
 * the userfaultfd belongs to), put it in the rmap, and write-protect it
 * up to end of file, as upc_map() does before it returns the address.
 * The file reference of remote_map_prepare() becomes the mapping's, or is
 * put on failure.
 */
int map_attach(struct upc_mm *mm, struct upc_file *f, uintptr_t addr, size_t len, uint64_t pgoff,
	       int prot, int maxprot)
{
	struct upc_map *m;
	bool yielded;
	int ret;

	if (!len || (addr & (UPC_PAGE_SIZE - 1)) || (len & (UPC_PAGE_SIZE - 1)) || addr + len < addr ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || (prot & ~maxprot)) {
		file_put(f);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		file_put(f);
		return -ENOMEM;
	}
	m->mm = mm;
	m->file = f;
	m->start = addr;
	m->end = addr + len;
	m->pgoff = pgoff;
	m->prot = prot;
	m->maxprot = maxprot;
	pthread_rwlock_wrlock(&mm->lock);
	/* An address the client still has mapped through the cache: it unmapped behind our back. */
	{
		size_t i = mm_search(mm, addr);

		if (i < mm->nmaps && mm->maps[i]->start < m->end) {
			ret = -EEXIST;
			goto out_free;
		}
	}
	ret = map_register(m, prot & PROT_WRITE);
	if (ret < 0)
		goto out_free;
	ret = map_link(mm, m);
	pthread_rwlock_unlock(&mm->lock);
	if (ret < 0) {
		file_put(f);
		free(m);
		return ret;
	}
	pthread_mutex_lock(&f->lock);
	ret = file_wp_extend(f, f->npages, &yielded);
	pthread_mutex_unlock(&f->lock);
	/* The caller serves @mm's request (mm_current_set): upc_unmap acts on @mm and asks it to unmap. */
	if (ret < 0 && mm_current(mm->cache) == mm)
		upc_unmap(mm->cache, (void *)addr, len);
	return ret;

out_free:
	pthread_rwlock_unlock(&mm->lock);
	file_put(f);
	free(m);
	return ret;
}

/*
 * Unmapping keeps the dirty state (I5, seed 002, Piggin: "the last unmapper
 * transfers dirty").  In synchronous tracking a page is marked dirty in its
 * descriptor before any mapping can write it, so the PTEs torn down here
 * carry no state the descriptor lacks; the process's own munmap runs under
 * file->lock so that a write-back protecting this range never acts on a
 * reused address (a client of upcd munmaps without it, made safe
 * otherwise: map_forget_remote()).  Pinned pages are not unmapped (I6):
 * -EBUSY.
 */
UPC_API int upc_unmap(struct upc_cache *c, void *addr, size_t length)
{
	uintptr_t start, end;
	struct upc_mm *mm;
	struct upc_map *m;
	struct upc_file *f = NULL;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_unmap(c, addr, length);

	ret = range_args(c, addr, length, &start, &end);
	if (ret < 0)
		return ret;
	mm = mm_current(c);
	pthread_rwlock_wrlock(&mm->lock);
	m = mm_find(mm, start);
	if (!m || end > m->end) {
		ret = -EINVAL;
		goto out;
	}
	f = m->file;
	pthread_mutex_lock(&f->lock);
	if (range_pinned(m, start, end)) {
		ret = -EBUSY;
		goto out_unlock;
	}
	m = map_isolate(mm, m, start, end, &ret);
	if (!m)
		goto out_unlock;
	/* Async tracking: the written state leaves with the PTEs unless collected now. */
	track_collect_map(m);
	if (mm->remote) {
		map_forget_remote(mm, m, MM_CALL_MUNMAP);
	} else {
		/* Failing, it leaves the mapping forgotten all the same, as it always did. */
		munmap((void *)m->start, m->end - m->start);
		UPC_TRACE(unmap, f, m->pgoff, (m->end - m->start) >> UPC_PAGE_SHIFT);
		rmap_del(f, m);
		mm_remove(mm, m);
	}
out_unlock:
	pthread_mutex_unlock(&f->lock);
	if (ret == 0)
		free(m);
out:
	pthread_rwlock_unlock(&mm->lock);
	/* Outside mm->lock: the last reference may release the file (cache.c). */
	if (ret == 0)
		file_put(f);
	return ret;
}

/*
 * I5 again (seed 002: "an mprotect() can change the pte to read-only and
 * we'd miss the dirty bit"): under synchronous tracking the dirty bit is in
 * the descriptor before the PTE is writable, so making the PTE read-only or
 * inaccessible loses nothing; mprotect keeps the uffd-wp bit of a clean
 * page's PTE, so raising the protection again does not make it writable.
 */
UPC_API int upc_protect(struct upc_cache *c, void *addr, size_t length, int prot)
{
	uintptr_t start, end, pos;
	struct upc_mm *mm;
	struct upc_map *m;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_protect(c, addr, length, prot);

	ret = range_args(c, addr, length, &start, &end);
	if (ret < 0 || (prot & ~(PROT_READ | PROT_WRITE)))
		return -EINVAL;
	if (prot & PROT_WRITE)
		prot |= PROT_READ;
	mm = mm_current(c);
	pthread_rwlock_wrlock(&mm->lock);
	ret = mm_range_ok(mm, start, end);
	if (ret < 0)
		goto out;
	/* Check everything first: a refused call changes nothing. */
	for (pos = start; pos < end; pos = m->end) {
		uintptr_t s, e;

		m = mm_find(mm, pos);
		s = max_t(uintptr_t, start, m->start);
		e = min_t(uintptr_t, end, m->end);
		if ((prot & PROT_WRITE) && !(m->maxprot & PROT_WRITE)) {
			ret = -EACCES;
			goto out;
		}
		pthread_mutex_lock(&m->file->lock);
		if (prot == PROT_NONE && range_pinned(m, s, e))
			ret = -EBUSY;
		pthread_mutex_unlock(&m->file->lock);
		if (ret < 0)
			goto out;
	}
	for (pos = start; pos < end && ret == 0; pos = m->end) {
		struct upc_file *f;
		uintptr_t s, e;

		m = mm_find(mm, pos);
		f = m->file;
		s = max_t(uintptr_t, start, m->start);
		e = min_t(uintptr_t, end, m->end);
		pthread_mutex_lock(&f->lock);
		m = map_isolate(mm, m, s, e, &ret);
		if (m && (prot & PROT_WRITE) && !m->wp) {
			/*
			 * A read-only mapping becomes writable: add WP (and MINOR)
			 * to its registration - same userfaultfd, so in place, with
			 * no moment unregistered - and write-protect every PTE the
			 * kernel mapped read-only meanwhile (up to end of file: no
			 * page past it is mapped), before mprotect lets a write
			 * through.  -EAGAIN: a fork in flight (fork.c).
			 */
			ret = map_register(m, true);
			if (ret == 0)
				ret = map_wp(m, f->npages, true);
			if (ret < 0)
				m->wp = false;	/* registered for WP, but not protected: not trusted */
		}
		if (m && ret == 0) {
			track_collect_map(m);
			/*
			 * A client of upcd mprotects without file->lock
			 * (mm_call_file()): @m stays in the rmap, and a
			 * write-back meanwhile protects and reads it as any
			 * mapping registered for WP, whatever its protection
			 * (track.c, walk_cached()).
			 */
			if (mm_call_file(f, mm, MM_CALL_MPROTECT, m->start, m->end - m->start, prot) == 0)
				m->prot = prot;
			else
				ret = -ENOMEM;
		}
		pthread_mutex_unlock(&f->lock);
		if (!m)
			break;
	}
out:
	pthread_rwlock_unlock(&mm->lock);
	return ret;
}

/*
 * The mappings of @mm as they are now, for a forked child (fork.c): copies,
 * each holding a reference to its file.  Caller holds mm->lock, or knows
 * that nothing changes @mm (a child's mm never changes).
 */
struct mm_snap {
	size_t n, cap;
	struct upc_map maps[];
};

struct mm_snap *mm_snap_alloc(size_t cap)
{
	struct mm_snap *snap = malloc(sizeof(*snap) + cap * sizeof(snap->maps[0]));

	if (snap) {
		snap->n = 0;
		snap->cap = cap;
	}
	return snap;
}

size_t mm_snap_cap(const struct mm_snap *snap)
{
	return snap ? snap->cap : 0;
}

/*
 * Fill @snap, allocated beforehand, without allocating: false if it is too
 * small.  (fork_prepare() may not allocate: see fork.c.)
 */
bool mm_snapshot_into(struct upc_mm *mm, struct mm_snap *snap)
{
	if (snap->cap < mm->nmaps)
		return false;
	snap->n = mm->nmaps;
	for (size_t i = 0; i < mm->nmaps; i++) {
		snap->maps[i] = *mm->maps[i];
		atomic_fetch_add(&mm->maps[i]->file->refs, 1);
	}
	return true;
}

struct mm_snap *mm_snapshot(struct upc_mm *mm)
{
	struct mm_snap *snap = mm_snap_alloc(mm->nmaps);

	if (snap)
		mm_snapshot_into(mm, snap);
	return snap;
}

/*
 * Give back the file references of a snapshot that was not used, while the
 * mappings it copies still hold theirs (so none of these is the last).
 */
void mm_snap_drop_refs(struct mm_snap *snap)
{
	for (size_t i = 0; i < snap->n; i++)
		atomic_fetch_sub(&snap->maps[i].file->refs, 1);
	snap->n = 0;
}

void mm_snap_free(struct mm_snap *snap)
{
	if (!snap)
		return;
	for (size_t i = 0; i < snap->n; i++)
		if (snap->maps[i].file)
			file_put(snap->maps[i].file);
	free(snap);
}

/*
 * Give @dst the mappings of @snap, which are the forking mm's at the fork:
 * they join each file's rmap, so that write-back protects them from now
 * on.  The snapshot's file references pass to the new mappings; @snap is
 * freed.  Caller holds no lock.
 */
int mm_clone_maps(struct upc_mm *dst, struct mm_snap *snap)
{
	int ret = 0;

	pthread_rwlock_wrlock(&dst->lock);
	for (size_t i = 0; i < snap->n && ret == 0; i++) {
		struct upc_map *m = &snap->maps[i], *n = malloc(sizeof(*n));
		struct upc_file *f = m->file;

		if (!n) {
			ret = -ENOMEM;
			break;
		}
		*n = *m;
		n->mm = dst;
		pthread_mutex_lock(&f->lock);
		ret = mm_insert(dst, n);
		if (ret == 0) {
			rmap_add(f, n);
			/*
			 * The file may have grown since the snapshot: the child's copy
			 * of the mapping is protected as far as the parent's was then
			 * (its PTEs were copied with their markers).  EAGAIN, the child
			 * forking in turn, cannot be waited for here (its handler,
			 * which would read the event, is not running yet): the gap is
			 * closed by the file's next growth, and until then, with MINOR
			 * faults registered, no page of it is mapped but by the
			 * handler, write-protected.
			 */
			map_wp_extend(n, f->npages);
		}
		pthread_mutex_unlock(&f->lock);
		if (ret < 0) {
			free(n);
			break;
		}
		m->file = NULL;	/* its reference is the new mapping's now */
	}
	pthread_rwlock_unlock(&dst->lock);
	mm_snap_free(snap);
	return ret;
}

/*
 * Forget every mapping of @mm (a child that is gone, or is no longer served); nothing is unmapped.
 * Each file is put outside mm->lock: the last reference may release it (cache.c).
 */
void mm_release_maps(struct upc_mm *mm)
{
	for (;;) {
		struct upc_map *m;
		struct upc_file *f;

		pthread_rwlock_wrlock(&mm->lock);
		if (!mm->nmaps) {
			pthread_rwlock_unlock(&mm->lock);
			break;
		}
		m = mm->maps[--mm->nmaps];
		f = m->file;
		pthread_mutex_lock(&f->lock);
		rmap_del(f, m);
		pthread_mutex_unlock(&f->lock);
		pthread_rwlock_unlock(&mm->lock);
		file_put(f);
		free(m);
	}
}

void map_destroy_all(struct upc_cache *c)
{
	struct upc_mm *mm = &c->self;

	pthread_rwlock_wrlock(&mm->lock);
	while (mm->nmaps) {
		struct upc_map *m = mm->maps[mm->nmaps - 1];
		struct upc_file *f = m->file;

		pthread_mutex_lock(&f->lock);
		track_collect_map(m);
		munmap((void *)m->start, m->end - m->start);
		rmap_del(f, m);
		pthread_mutex_unlock(&f->lock);
		mm->nmaps--;
		file_put(f);
		free(m);
	}
	pthread_rwlock_unlock(&mm->lock);
}
