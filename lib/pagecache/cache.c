/* SPDX-License-Identifier: MIT */
/*
 * cache.c - the cache and its address_spaces.
 *
 * Kernel analogy: one struct upc_file per backing file is the file's
 * struct address_space.  Its pages live in a memfd at the file's own
 * offsets: a page that is in the memfd is cached, a hole is not.  Every
 * mapping of the file, in any process, maps that memfd, so two mappings of
 * one file through any fds at any offsets see the same pages (MAP_SHARED
 * coherence comes from the memfd, not from copying).  The engine keeps its
 * own "staging" mapping of the memfd, which it uses as the source of
 * write-back and as the place to insert readahead pages no client maps.
 *
 * The page table (@chunks) holds an 8-byte struct upc_page per file page in
 * chunks of 512, allocated when a page of the chunk is first cached: the
 * kernel's struct page flags (uptodate, dirty, writeback, referenced,
 * active, lazyfree) and pin count, without the kernel's 64 bytes.
 *
 * Lifetime, as the kernel's inode cache (iput, the inode LRU, evict).  A
 * file is referenced by each of its mappings, in this process and in forked
 * children, and by every user working on it outside cache->lock (internal.h
 * has the rule).  When the last reference goes and the file has no dirty
 * page, no page under write-back and no pin, it is *unused*: it goes on the
 * cache's LRU of unused files and keeps its cached pages, so that a later
 * upc_map() of it finds them (and takes it off the list).  A file whose last
 * reference goes while it is dirty goes on the list too (and counts towards
 * its bound), but is not released before it is clean: the background
 * writer's pass, which holds a reference while it writes, re-examines it
 * when it lets go.  An unused file is released:
 *
 *   - when its backing file has been unlinked (st_nlink 0, through the
 *     store's optional stat op): when its last reference goes, or at the
 *     reaper's next pass (the reclaim thread, about every second) if the
 *     unlink came later.  The last reference asks at most once a second a
 *     file (NLINK_LOOK_MS): every upc_pread() or upc_pwrite() of a file
 *     nobody maps is a last reference, and the stat(2), under
 *     cache->lock, cost each a system call.  Dirty, it is written back
 *     first (another process may still have the file open), then released.
 *     (Not a question of identity: the file store's descriptor keeps the
 *     inode, so no other file gets its number while it is cached);
 *   - when it has nothing cached: reclaim or upc_drop() evicted its last
 *     page (their reference is the last one), or it never cached any;
 *   - when it is the least recently used one past the bound: at most
 *     max_unused = min(64, RLIMIT_NOFILE soft limit / 8) unused files are
 *     kept.  Each holds two descriptors (the store's and the memfd; three
 *     with O_DIRECT) and reserves twice its size, at least 4 GiB, of address
 *     space, so the files nobody maps take at most a quarter of the
 *     process's descriptors (3/8 with O_DIRECT), and the rest stays for the
 *     application and its mappings; 64 bounds the reserve (256 GiB) and the
 *     reaper's per-second fstat walk.  A dirty one past the bound is written
 *     back first, by upc_map() before a new file takes descriptors (as
 *     balance_dirty_pages() makes the dirtier pay) or by the reaper.
 *
 * Releasing takes the file off cache->files (and the clock hand) under
 * cache->lock with refs at 0, which no one can raise without that lock;
 * then, outside it, closes the store handle, unmaps the staging mapping
 * (which unregisters it from the engine's userfaultfd), closes the memfd
 * (its pages go with it) and frees the page table (file_free).  A write-back
 * error no msync saw is kept for upc_cache_destroy() to return.
 */
#include "internal.h"
#include "usdt.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

uint32_t cache_ticks(struct upc_cache *c)
{
	return (uint32_t)(now_ms() - c->t0_ms);
}

_Static_assert(PT_CHUNK_PAGES * sizeof(struct upc_page) == UPC_PAGE_SIZE,
	       "a chunk of the page table is one page of the state memfd");

/* Chunk @ci of the page table, mapped from a serving cache's state memfd (chunk_off). */
struct upc_page *chunk_map(struct upc_file *f, uint64_t ci)
{
	void *p = mmap(NULL, UPC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->statefd, chunk_off(ci));

	return p == MAP_FAILED ? NULL : p;
}

/*
 * A new chunk of the page table, all zeros.  In a serving cache, a page of
 * the state memfd (struct upc_file, @statefd): it was punched when last
 * freed, so it reads as zeros.  One mapping per chunk, so that a pointer to
 * a page descriptor stays valid for the chunk's life as with calloc(); a
 * chunk describes 2 MiB of cached data, so the daemon's mappings grow with
 * what it caches (vm.max_map_count: upcd(8)).
 */
static struct upc_page *chunk_alloc(struct upc_file *f, uint64_t ci)
{
	uint64_t need = (uint64_t)chunk_off(ci) + UPC_PAGE_SIZE;

	if (f->statefd < 0)
		return calloc(PT_CHUNK_PAGES, sizeof(struct upc_page));
	if (need > f->state_len) {
		uint64_t len = max_t(uint64_t, need, 2 * f->state_len);

		if (sys_ftruncate(f->statefd, (off_t)len) < 0)
			return NULL;
		f->state_len = len;
	}
	return chunk_map(f, ci);
}

static void chunk_free(struct upc_file *f, uint64_t ci)
{
	if (f->statefd < 0) {
		free(f->chunks[ci]);
	} else {
		munmap(f->chunks[ci], UPC_PAGE_SIZE);
		/*
		 * Zeros for its next use.  Not when upcd stops: its clients keep
		 * the memfds mapped, and the next daemon adopts them with this
		 * page table (written back whole by then: upc_cache_destroy).
		 */
		if (!atomic_load(&f->cache->dying))
			sys_punch(f->statefd, chunk_off(ci), UPC_PAGE_SIZE);
	}
	f->chunks[ci] = NULL;
}

/* f->size changes here, so that a serving cache's state memfd has it too (struct upc_state_hdr). */
void file_set_size(struct upc_file *f, off_t size)
{
	f->size = size;
	if (f->state_hdr)
		atomic_store(&f->state_hdr->size, (int64_t)size);
}

struct upc_page *pt_lookup(struct upc_file *f, uint64_t pgoff)
{
	uint64_t ci = pgoff >> PT_CHUNK_SHIFT;

	if (pgoff >= f->npages || !f->chunks[ci])
		return NULL;
	return &f->chunks[ci][pgoff & (PT_CHUNK_PAGES - 1)];
}

struct upc_page *pt_get(struct upc_file *f, uint64_t pgoff)
{
	uint64_t ci = pgoff >> PT_CHUNK_SHIFT;

	if (pgoff >= f->npages)
		return NULL;
	if (!f->chunks[ci]) {
		f->chunks[ci] = chunk_alloc(f, ci);
		if (!f->chunks[ci])
			return NULL;
		atomic_fetch_add(&f->cache->meta_bytes, PT_CHUNK_PAGES * sizeof(struct upc_page));
	}
	return &f->chunks[ci][pgoff & (PT_CHUNK_PAGES - 1)];
}

/* The page became dirty: the kernel's set_page_dirty().  Caller holds f->lock. */
void page_set_dirty(struct upc_file *f, struct upc_page *pg)
{
	/* I4: a lazily freed page written again is an ordinary dirty page. */
	pg->flags &= ~PG_LAZYFREE;
	if (pg->flags & PG_DIRTY)
		return;
	pg->flags |= PG_DIRTY;
	pg->dirtied = cache_ticks(f->cache);
	f->nr_dirty++;
	dirty_account(f);	/* upcd: against its account's dirty limit (dirtylimit.c) */
}

/* The page is now in the memfd with the store's data.  Caller holds f->lock. */
void page_add(struct upc_file *f, uint64_t pgoff, struct upc_page *pg)
{
	pg->flags = PG_UPTODATE;
	pg->pincount = 0;
	f->chunk_used[pgoff >> PT_CHUNK_SHIFT]++;
	f->nr_cached++;
	atomic_fetch_add(&f->cache->nr_cached, 1);
}

/*
 * The page left the memfd (the caller punched it): forget it, and free its
 * chunk of the page table when that was the chunk's last cached page, so
 * that metadata follows what is cached, not the file's size.
 */
void page_remove(struct upc_file *f, uint64_t pgoff)
{
	uint64_t ci = pgoff >> PT_CHUNK_SHIFT;
	struct upc_page *pg = pt_lookup(f, pgoff);

	if (!pg || !(pg->flags & PG_UPTODATE))
		return;
	if (pg->flags & PG_ACTIVE) {
		f->nr_active--;
		atomic_fetch_sub(&f->cache->nr_active, 1);
	}
	memset(pg, 0, sizeof(*pg));
	f->nr_cached--;
	atomic_fetch_sub(&f->cache->nr_cached, 1);
	if (--f->chunk_used[ci] == 0) {
		chunk_free(f, ci);
		atomic_fetch_sub(&f->cache->meta_bytes, PT_CHUNK_PAGES * sizeof(struct upc_page));
	}
}

/* The cache goes away: its pins and write-back holds go with it. */
void file_unpin_all(struct upc_file *f)
{
	pthread_mutex_lock(&f->lock);
	for (uint64_t p = 0; f->nr_pinned && p < f->npages; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;
			continue;
		}
		if (!pg->pincount)
			continue;
		if (pg->flags & PG_PINWRITE)
			page_set_dirty(f, pg);
		pg->pincount = 0;
		pg->flags &= ~(PG_NOWB | PG_PINWRITE);
		f->nr_pinned--;
		atomic_fetch_sub(&f->cache->nr_pinned, 1);
	}
	dirty_account(f);
	pthread_mutex_unlock(&f->lock);
}

/*
 * The file shrank behind the cache's back to @size: the kernel's
 * truncate_pagecache().  The cached pages wholly past the new end go from
 * every mapping and the memfd, dirty ones without write-back (the data is
 * past end of file: the kernel discards it too), and the new last page's
 * tail is zeroed; otherwise a later growth would bring the old bytes back as
 * file data.  Pages pinned or under write-back stay (I6): they are past end
 * of file, so faults on them raise SIGBUS and write-back leaves them out,
 * until the file grows again.  Caller holds f->lock.
 */
static void file_shrunk(struct upc_file *f, off_t size)
{
	uint64_t keep = pg_round_up((uint64_t)size) >> UPC_PAGE_SHIFT;

	file_store_changed(f);	/* a readahead read in flight may hold pages past @size (fill_run) */
	file_set_size(f, size);
	if ((size & (off_t)(UPC_PAGE_SIZE - 1)) && page_uptodate(f, (uint64_t)size >> UPC_PAGE_SHIFT))
		memset(f->base + size, 0, UPC_PAGE_SIZE - ((uint64_t)size & (UPC_PAGE_SIZE - 1)));
	for (uint64_t p = keep; p < f->npages;) {
		uint64_t q = p;
		struct upc_page *pg;

		while (q < f->npages && !((pg = pt_lookup(f, q)) && (pg->pincount || (pg->flags & PG_WRITEBACK))))
			q++;
		if (q > p)
			file_drop_pages(f, p, q);
		p = q + 1;	/* past the page that stays */
	}
}

/*
 * How many pages of a fill read (@ret, @io) are valid: the whole pages read,
 * and a partial last page that ends at end of file, whose tail is zeroed
 * (mmap(2) semantics).  A read that came back short before the size the
 * cache knew may mean the file shrank behind its back: the store is asked
 * for the size, and if the file now ends where the read did, that was end of
 * file, not an error, and the cache takes the new size.  (Pages past it are
 * not dropped here, as truncate_pagecache() would; faults on them raise
 * SIGBUS and write-back leaves them out, as the kernel discards them.)
 * Unless a write past end of file raised the cache's size and has not
 * grown the store's file yet (f->store_behind, fileio.c): then, up to the
 * cache's size, what the store does not have is a hole, zeros.  Any other
 * short read leaves the pages after it uncached.  Caller holds f->lock.
 */
uint64_t fill_valid(struct upc_file *f, int ret, struct upc_io *io)
{
	struct upc_store *s = f->cache->store;
	uint64_t got, full;
	off_t now;

	if (ret < 0 || io->res < 0)
		return 0;
	got = (uint64_t)io->res;
	/*
	 * Past where the store ended when the cache's size went past it: the
	 * store grows meanwhile, without file->lock (store_grow; write-back of
	 * the pages past its end), maybe between the read and the look at
	 * its size.  What it has now is read again, a few times at most; where
	 * it still ends at the read, the rest is a hole up to the cache's size.
	 */
	for (int tries = 0; f->store_behind && got < io->len && io->off + (off_t)got < f->size &&
			    io->off + (off_t)got >= f->behind_from && tries < 3; tries++) {
		struct upc_io more = { .buf = (char *)io->buf + got, .len = io->len - got, .off = io->off + (off_t)got };

		if (store_size(s, f->store_h, &now) < 0)
			break;
		if (now <= io->off + (off_t)got) {
			uint64_t to = min_t(uint64_t, io->len, (uint64_t)(f->size - io->off));

			memset((char *)io->buf + got, 0, to - got);
			got = to;
			break;
		}
		if (s->ops->submit(s, f->store_h, UPC_IO_READ, &more, 1) < 0 || more.res <= 0)
			break;
		got += (uint64_t)more.res;
	}
	if (!f->store_behind && got < io->len && io->off + (off_t)got < f->size &&
	    store_size(s, f->store_h, &now) == 0 && now <= io->off + (off_t)got) {
		pr_debug("file %lu shrank from %lld to %lld bytes\n", (unsigned long)f->ino,
			 (long long)f->size, (long long)now);
		file_shrunk(f, now);
	}
	full = got >> UPC_PAGE_SHIFT;
	if ((got & (UPC_PAGE_SIZE - 1)) && io->off + (off_t)got >= f->size) {
		memset((char *)io->buf + got, 0, UPC_PAGE_SIZE - (got & (UPC_PAGE_SIZE - 1)));
		full++;
	}
	return full;
}

/*
 * A fault on the page that holds end of file, where the cache's size ends
 * within the page: has the file grown behind the cache's back?  Then grow
 * first (zeroing what was past the old end), so that a write after the
 * growth, which is file data, lands after the zeroing and not before it.
 * (A page already writable takes no fault: upc_map(3), "File size
 * changes".)  Caller holds f->lock.
 */
void file_size_recheck(struct upc_file *f, uint64_t pgoff)
{
	off_t now;

	if (!((uint64_t)f->size & (UPC_PAGE_SIZE - 1)) || pgoff != (uint64_t)f->size >> UPC_PAGE_SHIFT)
		return;
	if (store_size(f->cache->store, f->store_h, &now) == 0 && now > f->size)
		file_grow_seen(f, now);
}

/*
 * The file grew behind the cache's back to @newsize (another process's
 * write(2), seen by its size).  What the file now has past the old end in
 * the old last page is the writer's data, which the kernel's page cache
 * would hold in that very page: file_grow() zeroes the old tail (bytes a
 * mapping stored past end of file are never file data), then the store's
 * bytes are copied over it.  The page keeps its state: a clean one equals
 * the store again, a dirty one holds the cache's writes below the old end
 * and the file's bytes after it.  If the store cannot be read, a clean page
 * is dropped (the next access reads it), a dirty one keeps the zeros.
 * Caller holds f->lock.
 */
int file_grow_seen(struct upc_file *f, off_t newsize)
{
	uint64_t old = (uint64_t)f->size, pgoff = old >> UPC_PAGE_SHIFT, tail = old & (UPC_PAGE_SIZE - 1);
	bool merge = tail && (uint64_t)newsize > old && page_uptodate(f, pgoff);
	struct upc_store *s = f->cache->store;
	struct upc_page *pg;
	struct upc_io io;
	char *buf = NULL;
	int ret;

	if (merge) {
		buf = aligned_alloc(UPC_PAGE_SIZE, UPC_PAGE_SIZE);
		io = (struct upc_io){ .buf = buf, .len = UPC_PAGE_SIZE, .off = (off_t)(pgoff << UPC_PAGE_SHIFT) };
		if (!buf || s->ops->submit(s, f->store_h, UPC_IO_READ, &io, 1) < 0 || io.res < (ssize_t)tail)
			merge = false;
	}
	ret = file_grow(f, newsize);
	if (ret == 0 && tail && (uint64_t)f->size > old && page_uptodate(f, pgoff)) {
		uint64_t end = min_t(uint64_t, UPC_PAGE_SIZE, (uint64_t)newsize - (pgoff << UPC_PAGE_SHIFT));

		pg = pt_lookup(f, pgoff);
		if (merge && (uint64_t)io.res > tail) {
			memcpy(f->base + old, buf + tail, min_t(uint64_t, end, (uint64_t)io.res) - tail);
		} else if (!merge && pg && !(pg->flags & PG_DIRTY) && !pg->pincount && !(pg->flags & PG_WRITEBACK)) {
			file_drop_pages(f, pgoff, pgoff + 1);
		} else if (!merge) {
			pr_warn("page %llu: the file's bytes past its old end could not be read: zeros stay there\n",
				(unsigned long long)pgoff);
		}
	}
	free(buf);
	return ret;
}

/*
 * The file grew: extend the page table.  Bytes stored past the old end of
 * file in its last page (a mapping may write there; they are never written
 * back) must not become file data now: they are zeroed, as the kernel's
 * pagecache_isize_extended() sees to.  The file's own bytes there are zeros
 * too (a file extends with zeros), so the page keeps its clean or dirty
 * state.
 *
 * The memfd is not resized to the file: it is at least as long as the
 * staging mapping and every mapping of it (file_memfd_span), so that a
 * fault past end of file reaches the handler, which can look at the file's
 * size again, instead of being the kernel's SIGBUS (a shmem fault past
 * i_size never becomes a userfaultfd message).  End of file is the
 * handler's to enforce, and it leaves nothing in the PTE when it refuses a
 * page past it (no poison marker: fault.c), so the next access faults
 * again.
 *
 * The staging mapping grows first if the file outgrows it (file_reserve);
 * then every writable mapping is write-protected over the new pages
 * (file_wp_extend: I1 - a mapping is protected up to end of file only, so
 * that a terabyte map of a small file costs nothing for the part past it),
 * before the size says they exist.  That may let go of f->lock for a moment
 * (a fork in flight): then it starts over.  -EFBIG: no address space left
 * for the staging mapping.  Caller holds f->lock.
 */
int file_grow(struct upc_file *f, off_t newsize)
{
	uint64_t npages, nchunks, tail;
	bool yielded;
	int ret;

again:
	/*
	 * Never fewer pages than before: after a shrink noticed by
	 * fill_valid(), the pages past the smaller size are still in the
	 * memfd and the page table, and must stay accounted for.
	 */
	npages = max_t(uint64_t, pg_round_up(newsize) >> UPC_PAGE_SHIFT, f->npages);
	nchunks = (npages + PT_CHUNK_PAGES - 1) >> PT_CHUNK_SHIFT;
	tail = (uint64_t)f->size & (UPC_PAGE_SIZE - 1);
	if (newsize <= f->size)
		return 0;
	ret = file_reserve(f, pg_round_up(newsize));
	if (ret < 0)
		return ret;
	file_unfence(f);
	if (f->fence)
		return -ENOMEM;	/* the memfd could not take the pages past the fence */
	if (nchunks > f->nchunks) {
		struct upc_page **nc = realloc(f->chunks, nchunks * sizeof(*nc));
		uint16_t *nu;

		if (!nc)
			return -ENOMEM;
		f->chunks = nc;
		nu = realloc(f->chunk_used, nchunks * sizeof(*nu));
		if (!nu)
			return -ENOMEM;
		f->chunk_used = nu;
		memset(nc + f->nchunks, 0, (nchunks - f->nchunks) * sizeof(*nc));
		memset(nu + f->nchunks, 0, (nchunks - f->nchunks) * sizeof(*nu));
		atomic_fetch_add(&f->cache->meta_bytes,
				 (nchunks - f->nchunks) * (sizeof(*nc) + sizeof(*nu)));
		f->nchunks = nchunks;
	}
	ret = file_wp_extend(f, npages, &yielded);
	if (ret < 0)
		return ret;
	if (yielded)
		goto again;	/* f->lock was let go: the size may have changed */
	if (tail && page_uptodate(f, (uint64_t)f->size >> UPC_PAGE_SHIFT))
		memset(f->base + f->size, 0,
		       min_t(uint64_t, UPC_PAGE_SIZE - tail, (uint64_t)(newsize - f->size)));
	/* upcd: the clients' poison markers past the old end go, as the fence does above (remote.c) */
	if (f->cache->serving)
		remote_lift(f);
	file_set_size(f, newsize);
	/* Never fewer: a file found shrunk by a short read (fill_valid) keeps its pages past the size. */
	f->npages = max_t(uint64_t, f->npages, npages);
	return 0;
}

/*
 * The backing file may have grown behind the cache's back (another process,
 * a write(2) that bypassed the cache): take its size from the store, as the
 * kernel's paths past end of file read i_size again.  A file that shrank is
 * left to fill_valid().  Caller holds f->lock.
 */
void file_size_refresh(struct upc_file *f)
{
	off_t now;

	if (store_size(f->cache->store, f->store_h, &now) == 0 && now > f->size)
		file_grow_seen(f, now);	/* -EFBIG (no address space): the size stays, faults past it SIGBUS */
}

/*
 * End of file, enforced by the kernel: the memfd is cut to the pages the
 * file has, so that the faulting access past them, woken, takes the
 * kernel's own SIGBUS for a shmem page past i_size (BUS_ADRERR with its
 * address, a signal handler sees what it sees on a kernel mapping; a
 * kernel-mode access gets -EFAULT and no signal).  Nothing else can raise
 * that signal for another thread: only the kernel, or the thread itself,
 * may queue a SIGBUS with a positive si_code (rt_tgsigqueueinfo refuses
 * it from another thread with EPERM).
 *
 * Nothing is lost in the cut: no page past npages is in the memfd
 * (file_shrunk and truncation punch them; a page kept past a shrink, pinned
 * or under write-back, is below npages).  While the fence stands, a fault
 * past it is the kernel's SIGBUS without a look at the file's size, so it
 * stands briefly: the file's next growth through the cache lifts it
 * (file_grow), and otherwise the reclaim thread does within a second
 * (files_unfence_stale).  If it is lifted before the woken thread ran
 * into it, the thread faults here again and is fenced again: a retry, never
 * a wrong answer.  Returns 0, or -errno (the caller signals the thread
 * itself).  Caller holds f->lock.
 */
int file_fence(struct upc_file *f)
{
	int ret;

	if (f->fence == f->npages)
		return 0;
	if (f->cache->serving)
		return -EPERM;	/* sealed against shrinking (file_new): remote_refuse() instead */
	ret = sys_ftruncate(f->memfd, (off_t)(f->npages << UPC_PAGE_SHIFT));
	if (ret < 0)
		return ret;
	if (!f->fence)
		atomic_fetch_add(&f->cache->nr_fenced, 1);
	f->fence = f->npages;
	f->fenced_at = now_ms();
	return 0;
}

/* The memfd back to its full length: faults past end of file reach the handler again. */
void file_unfence(struct upc_file *f)
{
	if (!f->fence)
		return;
	if (sys_ftruncate(f->memfd, (off_t)f->memfd_len) < 0)
		return;		/* it stays fenced: the next growth tries again */
	f->fence = 0;
	atomic_fetch_sub(&f->cache->nr_fenced, 1);
}

/*
 * Every page out of the memfd, for good (the cache goes, and a forked
 * child or a client may still map it): truncated, so that an access gets
 * SIGBUS, or, for a memfd sealed against shrinking (upcd's, file_new),
 * punched whole, which frees the pages as well: a client has made its
 * mappings inaccessible before it lets go of its userfaultfd (connect.c),
 * so no access reads the holes as data.
 */
void file_memfd_empty(struct upc_file *f)
{
	struct stat st;

	if (sys_ftruncate(f->memfd, 0) < 0 && fstat(f->memfd, &st) == 0 && st.st_size > 0)
		sys_punch(f->memfd, 0, st.st_size);	/* its size: a client may have grown it */
}

#define FENCE_MS	100	/* a fence older than this is lifted by the reclaim thread */

/* The reclaim thread's second tick: lift the fences that did their work.  Takes cache->lock. */
void files_unfence_stale(struct upc_cache *c)
{
	uint64_t now = now_ms();

	if (!atomic_load(&c->nr_fenced))
		return;
	pthread_mutex_lock(&c->lock);
	for (struct upc_file *f = c->files; f; f = f->next) {
		if (pthread_mutex_trylock(&f->lock))
			continue;	/* busy: the next tick */
		if (f->fence && now - f->fenced_at >= FENCE_MS)
			file_unfence(f);
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&c->lock);
}

/* ------------------------------------------------------------ staging */

#define STAGING_MIN	(4ULL << 30)

/*
 * A staging mapping the file outgrew.  Kept, mapped, until the file is
 * released (file_free): see file_reserve().
 */
struct staging_old {
	struct staging_old *next;
	char *base;
	size_t len;
};

/* Is @memfd @bytes long, or longer?  fstat(2): no inode lock. */
static bool memfd_spans(int memfd, uint64_t bytes)
{
	struct stat st;

	return fstat(memfd, &st) == 0 && (uint64_t)st.st_size >= bytes;
}

/*
 * The memfd must be at least @bytes long (when not fenced), so that a
 * mapping that ends there takes its faults past end of file to the handler
 * and not to the kernel's SIGBUS (file_grow).  Growing a memfd allocates
 * nothing.  While fenced, the cut stays: file_unfence() restores the full
 * length.
 *
 * RLIMIT_FSIZE bounds a memfd as it bounds a file (ftruncate(2) past it is
 * EFBIG, and SIGXFSZ, which sys_ftruncate takes back): a memfd grows as
 * far as the limit lets it, and no further, without an error: what is
 * asked past it is a mapping's reach past end of file, or the staging
 * mapping's room to grow, where a fault is then the kernel's SIGBUS.  A
 * file longer than the limit is not cached at all (file_reserve: -EFBIG;
 * upc_cache_create(3), NOTES; upcd(8), BUGS: upcd's limit bounds what it
 * caches for its clients, and its memfds then do not reach the takeover
 * journal, memfd_journal_span).  Caller holds f->lock, or is file_new().
 */
int file_memfd_span(struct upc_file *f, uint64_t bytes)
{
	uint64_t limit;
	int ret;

	if (bytes <= f->memfd_len)
		return 0;
	if (bytes > (uint64_t)INT64_MAX)
		return -EFBIG;
	limit = fsize_limit();	/* a size of exactly the limit is allowed, a partial last page too */
	if (bytes > limit) {
		bytes = limit;
		if (bytes <= f->memfd_len)
			return 0;
	}
	/*
	 * A served memfd reaches to the end of the takeover journal already
	 * (memfd_journal_span), or a client with write access grew it: long
	 * enough, as fstat(2) says without the inode lock.  ftruncate(2) takes
	 * that lock even to be refused (a served memfd is sealed against
	 * shrinking, file_new), and a client can hold it as long as it likes
	 * (punch.c): a map or a growth of the file waited for it under
	 * file->lock, and every client of the file with it (upcd(8), BUGS,
	 * until this).
	 */
	if (!f->fence && !(f->cache->serving && memfd_spans(f->memfd, bytes))) {
		ret = sys_ftruncate(f->memfd, (off_t)bytes);
		/* -EPERM: sealed, and grown past @bytes by a client meanwhile */
		if (ret < 0 && !(ret == -EPERM && f->cache->serving && memfd_spans(f->memfd, bytes)))
			return ret;
	}
	f->memfd_len = bytes;
	return 0;
}

static char *staging_map(struct upc_file *f, uint64_t len)
{
	struct upc_cache *c = f->cache;
	char *base;

	if (len > (uint64_t)INT64_MAX)
		return NULL;
	base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, f->memfd, 0);
	if (base == MAP_FAILED)
		return NULL;
	/*
	 * The staging mapping is registered MISSING with the engine's own
	 * userfaultfd, in SIGBUS mode: it is how a filled page enters the
	 * memfd atomically (UFFDIO_COPY inserts a page that is already
	 * uptodate), and an accidental engine access to a hole fails loudly
	 * instead of waiting for a handler that does not exist.  A forked
	 * child must not write through it (or fault holes into it).
	 */
	if (sys_uffd_register(c->engine_uffd, (uintptr_t)base, len, UFFDIO_REGISTER_MODE_MISSING) < 0 ||
	    madvise(base, len, MADV_DONTFORK) < 0) {
		munmap(base, len);
		return NULL;
	}
	return base;
}

/*
 * The staging mapping covers every page of the file: make it cover @bytes.
 * It reserves twice what is needed (at least 4 GiB), so that a growing
 * file moves to a new one rarely; the kernel allocates page tables only
 * where pages are touched, so the reservation costs address space only.
 * Where twice does not fit in the address space, exactly what is needed.
 *
 * A file that outgrows its staging mapping gets a new, larger one, mapping
 * the same memfd from offset 0, and the old one stays mapped until the file
 * is released.  Not mremap(MREMAP_MAYMOVE): pointers into the old mapping
 * are held without f->lock - write-back I/O in flight reads its buffers
 * there (writeback.c, step 3: io_uring, after f->lock is let go) - and a
 * moved mapping would turn them into pointers to nothing, or to whatever
 * is mapped there next, with no error anywhere.  Nor a new mapping that
 * replaces the old one at once: the same, for the I/O in flight.  Nor a
 * mapping grown in place (mremap without MAYMOVE): the address space after
 * it is usually taken.  Both map the same pages, so a holder of the old
 * pointer reads and writes the same data; the old one is still registered
 * with the engine's userfaultfd, so a hole there is as loud as in the new
 * one.  The cost is address space, and the page tables of what was touched
 * through the old one: with doubling, all the old ones together are
 * smaller than the new one.  Returns 0, -EFBIG (no address space for it)
 * or -ENOMEM.  Caller holds f->lock, or is file_new().
 */
int file_reserve(struct upc_file *f, uint64_t bytes)
{
	uint64_t need = pg_round_up(bytes), len, limit;
	struct staging_old *old = NULL;
	char *base;
	int ret;

	/*
	 * A file longer than RLIMIT_FSIZE: its pages past the limit's could
	 * not be in the memfd (file_memfd_span; the page the limit ends in
	 * can, whole), so it is not cached (the shim leaves it to the kernel,
	 * which reads it).  @bytes may be rounded up to a page by the caller.
	 * Asked only where the memfd must grow: the limit may have been
	 * raised since it was cut at it.
	 */
	if (need > f->memfd_len && (limit = fsize_limit()) != UINT64_MAX && need > pg_round_up(limit))
		return -EFBIG;
	if (need <= f->base_len)
		return file_memfd_span(f, need);
	if (need > (uint64_t)INT64_MAX / 2)
		return -EFBIG;
	len = max_t(uint64_t, need * 2, STAGING_MIN);
	if (f->base) {
		old = malloc(sizeof(*old));
		if (!old)
			return -ENOMEM;
	}
	base = staging_map(f, len);
	if (!base && len > need)
		base = staging_map(f, len = need);
	if (!base) {
		free(old);
		return -EFBIG;
	}
	ret = file_memfd_span(f, len);
	if (ret < 0) {
		munmap(base, len);
		free(old);
		return ret;
	}
	if (old) {
		old->base = f->base;
		old->len = f->base_len;
		old->next = f->old_bases;
		f->old_bases = old;
	}
	f->base = base;
	f->base_len = len;
	return 0;
}

static void file_free(struct upc_file *f)
{
	struct upc_cache *c = f->cache;

	UPC_TRACE(file_release, f);
	punch_free(f);
	wb_finish_parked(f);	/* no other holder is left: ended as under the lock (wbpark.c) */
	dirty_release(f);
	/* zaps of mappings that are all gone now: nothing of them is left to collect */
	for (size_t i = 0; i < f->nzap_pend; i++) {
		atomic_fetch_sub(&f->zap_pend[i]->inflight, 1);
		zapper_put(f->zap_pend[i]);
	}
	if (f->nzap_pend)
		atomic_fetch_sub(&c->nr_zap_pend, 1);
	free(f->zap_pend);
	/* out of the cache clean: its keeper lets it go too (daemon/keeper.c); not at destruction */
	if (f->kept && c->forget && !atomic_load(&c->dying))
		c->forget(c, f);
	/* Uncounted first: once its descriptors are gone, nobody sees its pages counted. */
	for (uint64_t i = 0; i < f->nchunks; i++)
		if (f->chunks[i]) {
			chunk_free(f, i);
			atomic_fetch_sub(&c->meta_bytes, PT_CHUNK_PAGES * sizeof(struct upc_page));
		}
	atomic_fetch_sub(&c->meta_bytes, f->nchunks * (sizeof(*f->chunks) + sizeof(*f->chunk_used)));
	atomic_fetch_sub(&c->nr_cached, f->nr_cached);
	atomic_fetch_sub(&c->nr_active, f->nr_active);
	if (f->store_h)
		c->store->ops->close(c->store, f->store_h);
	if (f->stale_store_h)
		c->store->ops->close(c->store, f->stale_store_h);
	if (f->base)
		munmap(f->base, f->base_len);
	while (f->old_bases) {
		struct staging_old *old = f->old_bases;

		f->old_bases = old->next;
		munmap(old->base, old->len);
		free(old);
	}
	if (f->memfd >= 0)
		close(f->memfd);
	if (f->state_hdr)
		munmap(f->state_hdr, UPC_PAGE_SIZE);
	if (f->statefd >= 0)
		close(f->statefd);
	free(f->chunks);
	free(f->chunk_used);
	pthread_mutex_destroy(&f->lock);
	pthread_mutex_destroy(&f->io_lock);
	pthread_cond_destroy(&f->wb_cond);
	free(f);
}

/*
 * A served memfd reaches to the end of the takeover journal (holes), so
 * that a client marks the journal through a mapping, which its
 * RLIMIT_FSIZE does not limit, where a write(2) 2^62 bytes into the memfd
 * fails (takeover.c, journal_mark).  An adopted memfd too (an earlier
 * daemon may not have made it so long).  Sealed against shrinking, it
 * stays so.  A daemon whose own RLIMIT_FSIZE forbids it says so, and its
 * clients write the journal with write(2) again.
 */
static void memfd_journal_span(struct upc_file *f)
{
	const uint64_t want = UPC_JOURNAL_OFF + UPC_JOURNAL_LEN;
	struct stat st;
	int ret;

	if (fstat(f->memfd, &st) == 0 && (uint64_t)st.st_size >= want)
		return;
	if (fsize_limit() < want) {
		pr_warn("the takeover journal cannot be mapped (RLIMIT_FSIZE); a client serving itself writes it\n");
		return;
	}
	ret = sys_ftruncate(f->memfd, (off_t)want);
	if (ret < 0)
		pr_warn("the takeover journal cannot be mapped: %s\n", strerror(-ret));
}

/*
 * A new file of the cache.  @adopt, when not NULL, is the data memfd and
 * page-table memfd of an earlier daemon, which a client passed back
 * (file_adopt): the cache takes them over with what they hold (adopt.c).
 */
static int file_new(struct upc_cache *c, int fd, const struct stat *st, const struct adopt_fds *adopt,
		    struct upc_file **fp)
{
	struct upc_state_hdr *h;
	struct upc_file *f;
	off_t size = st->st_size;
	struct stat ms;
	char name[64];
	int ret;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->cache = c;
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->wb_account = UPC_ACCOUNT_NONE;
	f->memfd = f->statefd = -1;
	pthread_mutex_init(&f->lock, NULL);
	pthread_mutex_init(&f->io_lock, NULL);
	pthread_cond_init(&f->wb_cond, NULL);

	if (adopt) {
		ret = adopt_fd(adopt->memfd, "upcache", st);
		if (ret < 0)
			goto out_free;
		f->memfd = ret;
		ret = adopt_fd(adopt->statefd, "upcache-pt", st);
		if (ret < 0)
			goto out_free;
		f->statefd = ret;
		if (fstat(f->memfd, &ms) < 0)
			goto out_errno;
		f->memfd_len = (uint64_t)ms.st_size;
		if (fstat(f->statefd, &ms) < 0)
			goto out_errno;
		f->state_len = (uint64_t)ms.st_size;
		ret = -EINVAL;		/* not a page table of ours */
		if (f->state_len < UPC_PAGE_SIZE)
			goto out_free;
	} else {
		snprintf(name, sizeof(name), "upcache:%lx:%lu", (unsigned long)st->st_dev,
			 (unsigned long)st->st_ino);
		ret = sys_memfd(name, c->serving);
		if (ret < 0)
			goto out_free;
		f->memfd = ret;
		/*
		 * upcd hands descriptors of the memfds to clients: mode 0400,
		 * so that a read-only one cannot be opened again read-write
		 * through /proc (remote.c; DESIGN.md, "Security facts").  The
		 * daemon's own descriptor keeps its write access.
		 */
		if (c->serving) {
			snprintf(name, sizeof(name), "upcache-pt:%lx:%lu", (unsigned long)st->st_dev,
				 (unsigned long)st->st_ino);
			ret = sys_memfd(name, false);
			if (ret < 0)
				goto out_free;
			f->statefd = ret;
			if (fchmod(f->memfd, 0400) < 0 || fchmod(f->statefd, 0400) < 0)
				goto out_errno;
			ret = sys_ftruncate(f->statefd, UPC_PAGE_SIZE);
			if (ret < 0)
				goto out_free;
			f->state_len = UPC_PAGE_SIZE;
		}
	}
	if (f->statefd >= 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

		/*
		 * The takeover lock (takeover.c, rules 1 and 2): held by the
		 * daemon that serves the file, through its own open file
		 * description of the page table, for as long as it holds the
		 * file; a client serves its own faults only while it can hold
		 * it for reading.  An adopted table whose lock a client holds
		 * is not taken yet: -EAGAIN, and remote_adopt() waits.
		 */
		if (fcntl(f->statefd, F_OFD_SETLK, &fl) < 0) {
			ret = errno == EAGAIN || errno == EACCES ? -EAGAIN : -errno;
			/*
			 * A write lock is a live daemon's (this machine may run
			 * another, on another socket): its memfds are never
			 * taken, after any wait.  Asked through this daemon's own
			 * open file description (adopt_fd opened it): through a
			 * duplicate of the holder's (pidfd_getfd), the holder's
			 * own lock is no conflict, and reads F_UNLCK (review of
			 * dcfd6eb: a second daemon took a live one's memfd).
			 */
			if (ret == -EAGAIN) {
				struct flock q = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

				if (fcntl(f->statefd, F_OFD_GETLK, &q) == 0 && q.l_type == F_WRLCK)
					ret = -EBUSY;
			}
			if (ret != -EAGAIN || !adopt || !adopt->force)
				goto out_free;
			/*
			 * A client has served itself on it for ADOPT_WAIT_MS
			 * (remote.c) and not handed it back: stopped, or holding
			 * the lock on purpose.  The file is taken without the
			 * lock, which is tried again at every lookup
			 * (file_get_how); meanwhile such a client may go on
			 * serving itself beside this daemon (upcd(8), BUGS).
			 */
			pr_warn("a client still serves itself on %lx:%lu: adopted without its takeover lock\n",
				(unsigned long)st->st_dev, (unsigned long)st->st_ino);
			f->pt_unlocked = true;
		}
		h = mmap(NULL, UPC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->statefd, 0);
		if (h == MAP_FAILED)
			goto out_errno;
		f->state_hdr = h;
		struct stat ms2;
		struct statx bx = { 0 };

		if (fstat(f->memfd, &ms2) < 0)
			goto out_errno;
		/* the file's birth time where the filesystem has one: an inode number is used again */
		if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &bx) < 0 || !(bx.stx_mask & STATX_BTIME))
			bx.stx_btime.tv_sec = 0, bx.stx_btime.tv_nsec = 0;
		if (adopt) {
			/*
			 * Not a page table of ours, or not of this memfd, or of an
			 * earlier file with this inode number: refused (-ESTALE),
			 * never taken for this file's.
			 */
			ret = -EINVAL;
			if (h->magic != UPC_STATE_MAGIC || h->page_size != UPC_PAGE_SIZE ||
			    h->entry_size != sizeof(struct upc_page) || atomic_load(&h->size) < 0)
				goto out_free;
			ret = -ESTALE;
			if (h->memfd_dev != (uint64_t)ms2.st_dev || h->memfd_ino != (uint64_t)ms2.st_ino ||
			    h->btime_sec != bx.stx_btime.tv_sec || h->btime_nsec != bx.stx_btime.tv_nsec)
				goto out_free;
			/*
			 * The cache's size: past the store's while an extending
			 * write waits for write-back, or for its growth of the
			 * store (fileio.c, store_grow): what lies past the
			 * store's end is a hole meanwhile (fill_valid).
			 */
			if ((off_t)atomic_load(&h->size) > size) {
				f->store_behind = true;
				f->behind_from = size;
				size = (off_t)atomic_load(&h->size);
			}
		} else {
			h->page_size = UPC_PAGE_SIZE;
			h->entry_size = sizeof(struct upc_page);
			h->memfd_dev = (uint64_t)ms2.st_dev;
			h->memfd_ino = (uint64_t)ms2.st_ino;
			h->btime_sec = bx.stx_btime.tv_sec;
			h->btime_nsec = bx.stx_btime.tv_nsec;
			h->async = c->track_mode == UPC_TRACK_ASYNC;
			h->born = c->born;
			h->magic = UPC_STATE_MAGIC;
		}
	}
	/* At least as long as the staging mapping: end of file is the fault handler's (file_grow). */
	ret = file_reserve(f, max_t(uint64_t, (uint64_t)size, 1));
	if (ret < 0)
		goto out_free;
	ret = file_grow(f, size);
	if (ret < 0)
		goto out_free;
	if (adopt) {
		bool wmapped = atomic_load(&f->state_hdr->wmaps) != 0;

		ret = file_adopt_journal(f);
		if (ret == 0)
			ret = file_adopt_pages(f, wmapped);
		if (ret < 0)
			goto out_free;
	}
	/*
	 * upcd hands read-write descriptors of the memfd to clients that may
	 * write the file, and any of them could ftruncate(2) it: the
	 * daemon's next access to a page past the new size, through the
	 * staging mapping, would be SIGBUS, and every client's unwritten
	 * data would die with the daemon.  Sealed against shrinking, no one
	 * can (the engine included: its own shrinks become hole punches and
	 * the end-of-file fence a poison marker in the client's mapping,
	 * remote.c), and F_SEAL_SEAL keeps a client from adding the seals
	 * that would stop the engine (F_SEAL_GROW, F_SEAL_FUTURE_WRITE).
	 * What a client can still do to the memfd, and why it harms no one
	 * else: remote.c, "What a client can do to a memfd".  An adopted
	 * memfd was sealed so by the daemon that made it (adopt_fd checks).
	 */
	if (c->serving && !adopt && fcntl(f->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto out_free;
	}
	if (c->serving)
		memfd_journal_span(f);
	ret = c->store->ops->open(c->store, fd, 0, &f->store_h);
	if (ret < 0) {
		f->store_h = NULL;
		goto out_free;
	}
	f->store_writable = (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR;
	if (adopt)	/* the dead daemon's clients' mappings: each one adopted counts again */
		atomic_store(&f->state_hdr->wmaps, 0);
	if (c->keep) {
		c->keep(c, f, fd);
		f->kept = true;
	}
	*fp = f;
	return 0;
out_errno:
	ret = -errno;
out_free:
	/* A page table that could not be adopted stays as it is for the next try: not punched. */
	for (uint64_t i = 0; adopt && f->statefd >= 0 && i < f->nchunks; i++)
		if (f->chunks[i]) {
			munmap(f->chunks[i], UPC_PAGE_SIZE);
			f->chunks[i] = NULL;
			atomic_fetch_sub(&c->meta_bytes, PT_CHUNK_PAGES * sizeof(struct upc_page));
		}
	file_free(f);
	return ret;
}

/* ------------------------------------------------------------ file lifetime */

#define REAP_BATCH	16	/* dirty unused files written back per reaper pass */

/* No dirty page, none under write-back, none pinned?  *@cachedp: pages cached. */
static bool file_clean(struct upc_file *f, uint64_t *cachedp)
{
	bool clean;

	pthread_mutex_lock(&f->lock);
	wb_finish_parked(f);	/* a parked write-back (wbpark.c) is not one in flight */
	punch_reap(f);		/* an eviction's page put back dirty (capture.c) is not clean */
	clean = !f->nr_dirty && !f->nr_writeback && !f->nr_pinned;
	if (cachedp)
		*cachedp = f->nr_cached;
	pthread_mutex_unlock(&f->lock);
	return clean;
}

/* Is the backing file unlinked?  false where the store cannot tell.  Refs 0, cache->lock held. */
static bool file_unlinked(struct upc_file *f)
{
	struct stat st;

	f->nlink_at = now_ms();
	return store_stat(f->cache->store, f->store_h, &st) == 0 && st.st_nlink == 0;
}

#define NLINK_LOOK_MS	1000	/* file_idle: the unlink of a file a last reference looks for */

static void lru_add(struct upc_cache *c, struct upc_file *f)
{
	f->lru_prev = NULL;
	f->lru_next = c->unused;
	if (c->unused)
		c->unused->lru_prev = f;
	else
		c->unused_tail = f;
	c->unused = f;
	f->unused = true;
	c->nr_unused++;
}

static void lru_del(struct upc_cache *c, struct upc_file *f)
{
	if (f->lru_prev)
		f->lru_prev->lru_next = f->lru_next;
	else
		c->unused = f->lru_next;
	if (f->lru_next)
		f->lru_next->lru_prev = f->lru_prev;
	else
		c->unused_tail = f->lru_prev;
	f->lru_next = f->lru_prev = NULL;
	f->unused = false;
	c->nr_unused--;
}

/*
 * Take @f, at refs 0, off the cache's lists (caller holds cache->lock) and
 * chain it on *@deadp, for files_free() once the lock is dropped.
 */
static void file_unlist(struct upc_cache *c, struct upc_file *f, struct upc_file **deadp)
{
	if (f->unused)
		lru_del(c, f);
	if (c->clock_file == f)
		c->clock_file = f->next;
	*f->pprev = f->next;
	if (f->next)
		f->next->pprev = f->pprev;
	c->nr_files--;
	pthread_mutex_lock(&f->lock);
	if (f->err_seq != f->err_reported && !c->released_err)
		c->released_err = f->err;	/* errseq: no msync saw it; upc_cache_destroy() will */
	pthread_mutex_unlock(&f->lock);
	f->next = *deadp;
	*deadp = f;
}

static void files_free(struct upc_file *f)
{
	while (f) {
		struct upc_file *next = f->next;

		file_free(f);
		f = next;
	}
}

/*
 * The last reference to @f is gone (cache->lock held, refs 0): release it if
 * it is clean and unlinked or caches nothing, else keep it on the unused
 * list.  Returns true when it needs the reaper: unlinked, but dirty.
 */
static bool file_idle(struct upc_cache *c, struct upc_file *f, struct upc_file **deadp)
{
	uint64_t cached;
	bool clean = file_clean(f, &cached);

	if (!f->evict && now_ms() - f->nlink_at >= NLINK_LOOK_MS && file_unlinked(f))
		f->evict = true;
	if (clean && (f->evict || !cached)) {
		file_unlist(c, f, deadp);
		return false;
	}
	if (!f->unused)
		lru_add(c, f);
	return f->evict;
}

/*
 * Bring the unused list back to max_unused, least recently used first:
 * release the clean files; mark the dirty ones for release once written
 * back, and hold up to @max of them in @wb for the caller to write back.
 * Files held right now (a write-back or reclaim pass) are skipped.  Returns
 * how many dirty ones there are.  Caller holds cache->lock.
 */
static unsigned int unused_trim(struct upc_cache *c, struct upc_file **deadp, struct upc_file **wb,
				unsigned int max)
{
	uint32_t excess = c->nr_unused > c->max_unused ? c->nr_unused - c->max_unused : 0;
	unsigned int dirty = 0;

	for (struct upc_file *f = c->unused_tail, *prev; f && excess; f = prev) {
		prev = f->lru_prev;
		if (atomic_load(&f->refs))
			continue;
		excess--;
		if (file_clean(f, NULL)) {
			file_unlist(c, f, deadp);
			continue;
		}
		f->evict = true;
		if (dirty < max) {
			file_hold(f);
			wb[dirty] = f;
		}
		dirty++;
	}
	return dirty;
}

/*
 * @fn over every file of @c, each held meanwhile, as a sync or a drop of
 * the whole cache walks it: first as a visitor (@visit: @fn returns -EBUSY
 * for a file whose lock it cannot take soon, file_lock_visit, or that it
 * would wait for: it may have written some of it), then, once every other
 * file is done, again for each
 * file passed by, waiting for its lock.  Under upcd a thread can hold a
 * file's lock while it waits for the memfd's inode lock, which a client
 * can hold as long as it likes (punch.c): the walk waited there, and every
 * file after that one waited with it.  Files added meanwhile (at the head)
 * are not visited.  Returns 0 or @fn's first error.
 */
int files_walk(struct upc_cache *c, int (*fn)(struct upc_file *f, bool visit, void *arg), void *arg)
{
	struct upc_file *f, **later = NULL;
	size_t nlater = 0, cap = 0;
	int err = 0, ret;

	pthread_mutex_lock(&c->lock);
	f = c->files;
	if (f)
		file_hold(f);
	pthread_mutex_unlock(&c->lock);
	while (f) {
		struct upc_file *next;
		bool kept = false;

		ret = fn(f, true, arg);
		if (ret == -EBUSY) {
			if (nlater == cap) {
				size_t ncap = cap ? 2 * cap : 8;
				struct upc_file **n = realloc(later, ncap * sizeof(*n));

				if (n) {
					later = n;
					cap = ncap;
				}
			}
			if (nlater < cap) {
				later[nlater++] = f;	/* its reference goes with it */
				kept = true;
				ret = 0;
			} else {
				ret = fn(f, false, arg);	/* no memory to put it off: waited for now */
			}
		}
		if (ret < 0 && !err)
			err = ret;
		/* the next one taken before this one is let go: its put may release it (file_put) */
		pthread_mutex_lock(&c->lock);
		next = f->next;
		if (next)
			file_hold(next);
		pthread_mutex_unlock(&c->lock);
		if (!kept)
			file_put(f);
		f = next;
	}
	for (size_t i = 0; i < nlater; i++) {
		ret = fn(later[i], false, arg);
		if (ret < 0 && !err)
			err = ret;
		file_put(later[i]);
	}
	free(later);
	return err;
}

/*
 * The reclaim thread's visit of the files @want picks (looked at under
 * cache->lock without the file's lock: a hint), each under its lock as the
 * clock hand takes it (file_lock_visit, which also ends parked write-backs
 * and reaps done punch chains), with @fn called then if it is not NULL.
 * Returns how many of them were passed by: a lock not free in time, or no
 * memory for the list.  (zap_settle_all, punch_settle_all)
 */
size_t files_visit(struct upc_cache *c, bool (*want)(const struct upc_file *f), void (*fn)(struct upc_file *f))
{
	struct upc_file **fs;
	size_t n = 0, missed = 0;

	pthread_mutex_lock(&c->lock);
	fs = calloc(c->nr_files ? c->nr_files : 1, sizeof(*fs));
	for (struct upc_file *f = c->files; f; f = f->next)
		if (want(f)) {
			if (fs) {
				file_hold(f);
				fs[n++] = f;
			} else {
				missed++;
			}
		}
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < n; i++) {
		if (file_lock_visit(fs[i]) == 0) {
			if (fn)
				fn(fs[i]);
			pthread_mutex_unlock(&fs[i]->lock);
		} else {
			missed++;
		}
		file_put(fs[i]);
	}
	free(fs);
	return missed;
}

/*
 * The reaper.  From file_get(), before a new file takes descriptors: the
 * unused files past the bound go, the dirty ones written back here first.
 * From the reclaim thread (@all), about every second and when woken: also
 * the files whose backing file was unlinked, and those marked for release
 * that write-back has cleaned meanwhile.  The files written back here are
 * released by their last reference, in file_put().  No lock held.
 */
void file_reap(struct upc_cache *c, bool all)
{
	struct upc_file *dead = NULL, *wb[REAP_BATCH];
	unsigned int nwb;

	pthread_mutex_lock(&c->lock);
	if (atomic_load(&c->dying)) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	nwb = unused_trim(c, &dead, wb, REAP_BATCH);
	nwb = min_t(unsigned int, nwb, REAP_BATCH);	/* held: the first REAP_BATCH */
	for (struct upc_file *f = c->unused_tail, *prev; all && f; f = prev) {
		prev = f->lru_prev;
		if (atomic_load(&f->refs))
			continue;
		if (!f->evict && file_unlinked(f))
			f->evict = true;
		if (!f->evict)
			continue;
		if (file_clean(f, NULL)) {
			file_unlist(c, f, &dead);
		} else if (nwb < REAP_BATCH) {
			file_hold(f);
			wb[nwb++] = f;
		}
	}
	pthread_mutex_unlock(&c->lock);
	files_free(dead);
	for (unsigned int i = 0; i < nwb; i++) {
		/* Written back before it goes; a failed write, or a lock not free (WB_VISIT), keeps it for the next pass. */
		writeback_range(wb[i], 0, UINT64_MAX, WB_VISIT, NULL);
		file_put(wb[i]);
	}
}

/*
 * upcd's files, for adoption (file_adopt): a memfd of a file this daemon
 * held itself and let go is from before that (a client kept descriptors of
 * an earlier daemon's memfds, or of this one's), and the file may have
 * changed since: it is refused.  Under c->lock.  Out of memory, a file is
 * not recorded, and could be adopted from an earlier daemon once more.
 */
static bool file_held_before(struct upc_cache *c, dev_t dev, ino_t ino)
{
	for (size_t i = 0; i < c->nheld; i++)
		if (c->held[i].dev == dev && c->held[i].ino == ino)
			return true;
	return false;
}

static void file_held_add(struct upc_cache *c, dev_t dev, ino_t ino)
{
	if (file_held_before(c, dev, ino))
		return;
	if (c->nheld == c->held_cap) {
		size_t cap = c->held_cap ? 2 * c->held_cap : 64;
		struct file_id *n = realloc(c->held, cap * sizeof(*n));

		if (!n)
			return;
		c->held = n;
		c->held_cap = cap;
	}
	c->held[c->nheld++] = (struct file_id){ dev, ino };
}

/* Is the file of @st on the list @l (cache->making, cache->adopting)?  Under cache->lock. */
bool file_id_listed(const struct file_new_entry *l, const struct stat *st)
{
	for (; l; l = l->next)
		if (l->dev == st->st_dev && l->ino == st->st_ino)
			return true;
	return false;
}

/* Take @e off the list *@lp, and wake the lookups that wait for it.  Under cache->lock. */
void file_id_unlist(struct upc_cache *c, struct file_new_entry **lp, struct file_new_entry *e)
{
	while (*lp != e)
		lp = &(*lp)->next;
	*lp = e->next;
	pthread_cond_broadcast(&c->new_cond);
}

/*
 * Find or create the address_space of the file open on @fd and take a
 * reference.  A later writable fd upgrades the store handle, so that write
 * access always follows an fd the caller handed us.  An unused file found
 * here is revived: its cached pages are hits.  @create: else -ENOENT for a
 * file not held (file_lookup); @adopt: an earlier daemon's memfds (adopt.c).
 */
int file_get_how(struct upc_cache *c, int fd, bool create, const struct adopt_fds *adopt,
		 struct upc_file **fp)
{
	struct upc_file *f;
	struct stat st;
	void *wh = NULL;
	int ret = 0, fdfl;

	ret = sys_fstat_id(fd, &st);	/* not the timestamps: see there */
	if (ret < 0)
		return ret;
	if (!S_ISREG(st.st_mode))
		return -ENODEV;

	/* Unused files past the bound go (written back if dirty) before this one may take descriptors. */
	file_reap(c, false);
	pthread_mutex_lock(&c->lock);
again:
	for (f = c->files; f; f = f->next)
		if (f->dev == st.st_dev && f->ino == st.st_ino)
			break;
	/*
	 * Being made: wait_on_inode().  Being adopted (orphan_adopt_once), for a
	 * lookup that adopts nothing: it may have found the orphan window just
	 * closed by that adoption, and would make the file a memfd of its own.
	 */
	if (!f && (file_id_listed(c->making, &st) || (!adopt && file_id_listed(c->adopting, &st)))) {
		pthread_cond_wait(&c->new_cond, &c->lock);
		goto again;
	}
	if (!f && !create) {
		ret = -ENOENT;
		goto out;
	}
	if (f && adopt) {
		struct stat a, b;

		/* Adopted already (another client's): the same memfd, or a stale one of another daemon. */
		if (fstat(adopt->memfd, &a) < 0 || fstat(f->memfd, &b) < 0 || a.st_dev != b.st_dev ||
		    a.st_ino != b.st_ino) {
			ret = -ESTALE;
			goto out;
		}
	}
	if (!f && adopt && file_held_before(c, st.st_dev, st.st_ino)) {
		ret = -ESTALE;		/* this daemon held it, and let it go: what was kept of it is older */
		goto out;
	}
	if (!f) {
		/*
		 * Made without cache->lock, as the kernel's iget5_locked() makes
		 * an I_NEW inode: a lookup of this file waits for it, every other
		 * goes on.  An adoption seeks through the memfd and punches it,
		 * which takes its inode lock, and a client holding that lock
		 * (punch.c) stopped every lookup of the daemon with cache->lock
		 * (upcd(8), BUGS, until this); an open of the store may be slow.
		 */
		struct file_new_entry me = { st.st_dev, st.st_ino, c->making };

		c->making = &me;
		pthread_mutex_unlock(&c->lock);
		ret = file_new(c, fd, &st, adopt, &f);
		pthread_mutex_lock(&c->lock);
		file_id_unlist(c, &c->making, &me);
		if (ret < 0)
			goto out;
		if (c->serving)
			file_held_add(c, st.st_dev, st.st_ino);	/* best effort: see file_held_before() */
		f->next = c->files;
		if (c->files)
			c->files->pprev = &f->next;
		f->pprev = &c->files;
		c->files = f;
		c->nr_files++;
	} else if (f->unused) {
		lru_del(c, f);
	}
	if (f->pt_unlocked) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

		/* adopted without its takeover lock (file_new): taken as soon as it is free */
		if (fcntl(f->statefd, F_OFD_SETLK, &fl) == 0)
			f->pt_unlocked = false;
	}
	f->evict = false;
	file_hold(f);
out:
	pthread_mutex_unlock(&c->lock);
	if (ret < 0)
		return ret;

	pthread_mutex_lock(&f->lock);
	/* The access mode asked for only while the store's handle is read-only: not on every upc_pread/upc_pwrite. */
	if (!f->store_writable && (fdfl = sys_fd_flags(fd)) >= 0 && (fdfl & O_ACCMODE) == O_RDWR) {
		ret = c->store->ops->open(c->store, fd, 0, &wh);
		if (ret == 0) {
			void *old = f->store_h;

			/*
			 * Wait for write-back through the old handle, then swap.
			 * Readahead reads through it are not waited for (two
			 * workers streaming a scan overlap, and the wait lasted
			 * until the queue ran dry): the last of them closes it
			 * (fill_run), or file_free.
			 */
			while (f->nr_writeback)
				wb_wait(f);
			f->store_h = wh;
			f->store_writable = true;
			if (f->nr_fill_busy)
				f->stale_store_h = old;	/* the last readahead read through it closes it */
			else
				c->store->ops->close(c->store, old);
			if (f->kept)
				c->keep(c, f, fd);	/* the keeper's descriptor of the file: writable too */
		}
	}
	if (ret == 0 && st.st_size > f->size) {
		/*
		 * A file larger than the address space can stage (-EFBIG): the
		 * cache keeps the size it knows, and calls that reach only that
		 * part (sync, invalidate, a shrinking truncate, I/O below it)
		 * must still work.
		 */
		ret = file_grow_seen(f, st.st_size);
		if (ret == -EFBIG)
			ret = 0;
	}
	pthread_mutex_unlock(&f->lock);
	if (ret < 0) {
		file_put(f);
		return ret;
	}
	*fp = f;
	return 0;
}

int file_get(struct upc_cache *c, int fd, struct upc_file **fp)
{
	int ret = orphan_lookup(c, fd, fp);	/* upcd: an earlier daemon's memfd of it (adopt.c) */

	return ret <= 0 ? ret : file_get_how(c, fd, true, NULL, fp);
}

/* As file_get(), for a file the cache holds already: -ENOENT if it does not. */
int file_lookup(struct upc_cache *c, int fd, struct upc_file **fp)
{
	return file_get_how(c, fd, false, NULL, fp);
}

/*
 * Drop a reference.  The last one decides, under cache->lock, whether @f
 * stays (unused, with its cached pages) or is released now (file_idle).
 * So the caller must not hold mm->lock or file->lock, unless it holds
 * another reference too (then this is one atomic decrement).
 */
void file_put(struct upc_file *f)
{
	struct upc_cache *c = f->cache;
	struct upc_file *dead = NULL;
	int r = atomic_load(&f->refs);
	bool reap = false;

	while (r > 1)
		if (atomic_compare_exchange_weak(&f->refs, &r, r - 1))
			return;
	/* upc_cache_destroy() frees every file itself, with mm->lock held here (map_destroy_all). */
	if (atomic_load(&c->dying)) {
		atomic_fetch_sub(&f->refs, 1);
		return;
	}
	pthread_mutex_lock(&c->lock);
	if (atomic_fetch_sub(&f->refs, 1) == 1 && !atomic_load(&c->dying)) {
		reap = file_idle(c, f, &dead);
		reap |= unused_trim(c, &dead, NULL, 0) > 0;
	}
	pthread_mutex_unlock(&c->lock);
	files_free(dead);
	if (reap)
		reclaim_wake(c);	/* dirty files to write back before they go */
}

/* At most min(64, RLIMIT_NOFILE soft limit / 8) unused files: see the top of this file. */
static uint32_t max_unused_files(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur / 8 >= 64)
		return 64;
	return (uint32_t)(rl.rlim_cur / 8);
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	switch (*end) {
	case 'g': case 'G': v <<= 10; /* fall through */
	case 'm': case 'M': v <<= 10; /* fall through */
	case 'k': case 'K': v <<= 10; break;
	default: break;
	}
	return (size_t)v;
}

static size_t default_mem_limit(void)
{
	const char *e = getenv("UPC_MEM_LIMIT");
	long pages = sysconf(_SC_PHYS_PAGES);

	if (e && *e && parse_size(e))
		return parse_size(e);
	return pages > 0 ? (size_t)pages * UPC_PAGE_SIZE / 4 : (1UL << 30);
}

/* libbpf's OPTS_VALID: a newer caller's fields beyond what we know must be zero. */
static bool opts_valid(const void *opts, size_t known)
{
	const struct upc_cache_opts *o = opts;
	const char *p = opts;

	if (!opts)
		return true;
	if (o->sz < sizeof(size_t))
		return false;
	for (size_t i = known; i < o->sz; i++)
		if (p[i])
			return false;
	return true;
}

UPC_API int upc_cache_create(const struct upc_cache_opts *opts, struct upc_cache **cachep)
{
	struct upc_cache_opts o = { .sz = sizeof(o) };
	struct upc_cache *c;
	uint64_t feats, want;
	int ret, path;

	if (!cachep || !opts_valid(opts, sizeof(o)))
		return -EINVAL;
	if (opts)
		memcpy(&o, opts, min_t(size_t, opts->sz, sizeof(o)));
	if (o.flags & ~UPC_CACHE_FLAGS_ALL)
		return -EINVAL;
	if (sysconf(_SC_PAGESIZE) != (long)UPC_PAGE_SIZE)
		return -EOPNOTSUPP;
	if (o.flags & UPC_CACHE_SHARED)
		return client_create(&o, cachep);

	feats = __upc_uffd_features();
	if (!(upc_probe() & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV | UPC_FEAT_USER_MODE_ONLY))) {
		ret = sys_uffd_open(0, NULL, &path);
		return ret < 0 ? ret : -ENOSYS;
	}
	if (!(upc_probe() & UPC_FEAT_WP_SHMEM) || !(feats & UFFD_FEATURE_WP_UNPOPULATED))
		return -EOPNOTSUPP;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	sigbus_install();	/* refused accesses get the kernel's SIGBUS (sigbus.c) */
	c->track_mode = UPC_TRACK_SYNC;
	c->flags = o.flags;
	c->mem_limit = o.mem_limit ? o.mem_limit : default_mem_limit();
	c->expire_ms = o.dirty_expire_ms ? o.dirty_expire_ms : UPC_EXPIRE_DEFAULT_MS;
	c->interval_ms = o.writeback_interval_ms ? o.writeback_interval_ms : UPC_INTERVAL_DEFAULT_MS;
	c->ra_max = o.ra_max_pages ? min_t(unsigned int, o.ra_max_pages, 4096) : UPC_RA_MAX_DEFAULT;
	/* A readahead window never takes more than a quarter of the cache. */
	c->ra_max = max_t(unsigned int, 1, min_t(uint64_t, c->ra_max, (c->mem_limit >> UPC_PAGE_SHIFT) / 4));
	c->read_error = o.read_error;
	c->read_error_arg = o.read_error_arg;
	c->t0_ms = now_ms();
	c->max_unused = max_unused_files();
	c->engine_uffd = -1;
	c->self.uffd = -1;
	c->fr_efd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->new_cond, NULL);
	pthread_mutex_init(&c->wb_lock, NULL);
	pthread_cond_init(&c->wb_cond, NULL);
	pthread_mutex_init(&c->dirty_lock, NULL);
	pthread_cond_init(&c->dirty_cond, NULL);
	pthread_mutex_init(&c->zap_lock, NULL);
	pthread_mutex_init(&c->zap_late_lock, NULL);

	/*
	 * Client userfaultfds: write-protect on shmem, with PTE markers on
	 * unpopulated PTEs.  Without the markers a read fault the kernel
	 * serves itself maps a shared shmem page writable and the next write
	 * is never seen (DESIGN.md, "checked on this kernel").
	 */
	want = UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED |
	       (feats & UFFD_FEATURE_POISON) | (feats & UFFD_FEATURE_THREAD_ID) |
	       (feats & UFFD_FEATURE_EXACT_ADDRESS);	/* SIGBUS's si_addr (sigbus.c) */
	/*
	 * Asynchronous tracking needs WP_ASYNC (6.7), PAGEMAP_SCAN and MINOR
	 * faults on shmem; without any of them the cache tracks synchronously
	 * (upc_stats() says which, upcctl probe says why).
	 */
	/*
	 * MINOR faults, where the kernel has them, in both modes: a cached page
	 * not yet mapped through a mapping traps once and is mapped with up to
	 * 512 neighbours in one UFFDIO_CONTINUE (fault.c).  Measured here, that
	 * beats letting the kernel serve the fault: in a write-protected
	 * userfaultfd range the kernel maps one page per fault (no fault-around)
	 * at ~2.5-3 us a fault on this VM, where a trap plus a 64-page CONTINUE
	 * comes to ~0.9 us a page (upc-bench workload 1, BENCHMARKS.md).
	 */
	want |= feats & UFFD_FEATURE_MINOR_SHMEM;
	if ((o.flags & UPC_CACHE_ASYNC_WP) && (feats & UFFD_FEATURE_WP_ASYNC) &&
	    (feats & UFFD_FEATURE_MINOR_SHMEM) && (upc_probe() & UPC_FEAT_PAGEMAP_SCAN)) {
		want |= UFFD_FEATURE_WP_ASYNC;
		c->track_mode = UPC_TRACK_ASYNC;
	} else {
		/*
		 * Synchronous tracking serves forked children (fork.c).  Not
		 * asynchronous tracking: the child's written PTEs could only be
		 * read through its pagemap, whose pid the fork event does not give.
		 */
		if (upc_probe() & UPC_FEAT_EVENT_FORK)	/* needs CAP_SYS_PTRACE */
			want |= UFFD_FEATURE_EVENT_FORK;
	}
	c->uffd_features = want;
	c->debug = debug_from_env();
	/* Backtraces need the first write to trap (sync tracking) and the writer's thread id. */
	if ((c->debug & UPC_DBG_DIRTY_BT) &&
	    (c->track_mode != UPC_TRACK_SYNC || !(want & UFFD_FEATURE_THREAD_ID) || !dirty_bt_init())) {
		pr_warn("UPC_DEBUG=dirty-backtrace: not available (%s)\n",
			c->track_mode != UPC_TRACK_SYNC ? "asynchronous tracking: first writes do not trap" :
			"no thread ids in faults, or no libunwind");
		c->debug &= ~UPC_DBG_DIRTY_BT;
	}

	if (o.store) {
		c->store = o.store;
	} else {
		ret = store_default(c->flags, &c->store);
		if (ret < 0)
			goto out_free;
		c->own_store = true;
	}
	ret = sys_uffd_open(feats & UFFD_FEATURE_SIGBUS, NULL, NULL);
	if (ret < 0)
		goto out_free;
	c->engine_uffd = ret;

	pthread_mutex_init(&c->ra_lock, NULL);
	pthread_cond_init(&c->ra_cond, NULL);
	pthread_mutex_init(&c->fork_mutex, NULL);
	pthread_cond_init(&c->fork_cond, NULL);
	ret = mm_init(c, &c->self);
	if (ret < 0)
		goto out_free;
	ret = fault_handler_start(&c->self);
	if (ret < 0)
		goto out_mm;
	ret = reclaim_start(c);
	if (ret < 0)
		goto out_handler;
	if (!(c->flags & UPC_CACHE_NO_BGWB)) {
		ret = bgwb_start(c);
		if (ret < 0)
			goto out_handler;
	}
	if (c->uffd_features & UFFD_FEATURE_EVENT_FORK) {
		ret = fork_reader_start(c);
		if (ret < 0)
			goto out_handler;
		fork_cache_add(c);
	}
	publish_create(c);
	*cachep = c;
	return 0;

out_handler:
	bgwb_stop(c);
	reclaim_stop(c);
	fault_handler_stop(&c->self);
out_mm:
	mm_fini(&c->self);
out_free:
	if (c->engine_uffd >= 0)
		close(c->engine_uffd);
	if (c->own_store)
		upc_store_destroy(c->store);
	free(c);
	return ret;
}

UPC_API int upc_cache_destroy(struct upc_cache *c)
{
	struct upc_file *f, *next;
	int ret = 0, err;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_destroy(c);

	if (!c)
		return -EINVAL;
	/* From here on the last reference to a file releases nothing: every file is freed below. */
	pthread_mutex_lock(&c->lock);
	atomic_store(&c->dying, true);
	pthread_mutex_unlock(&c->lock);
	fork_cache_del(c);
	bgwb_stop(c);
	ra_stop(c);
	reclaim_stop(c);
	publish_destroy(c);

	/* Write everything back while the mappings still exist to protect. */
	for (f = c->files; f; f = f->next) {
		file_unpin_all(f);
		err = writeback_range(f, 0, UINT64_MAX, WB_SYNC, NULL);
		pthread_mutex_lock(&f->lock);
		if (!err && f->err_seq != f->err_reported)
			err = f->err;
		if (!err && f->nr_dirty)
			err = -EIO;	/* could not be written: say so */
		f->err_reported = f->err_seq;
		pthread_mutex_unlock(&f->lock);
		if (err && !ret)
			ret = err;
	}
	/*
	 * A punch left stuck at its memfd's lock (punch_stop) that took pages
	 * from under a client that does not zap (capture.c): what that client
	 * wrote in them before the punch is not in the page table the next
	 * daemon adopts.  Said, as a write-back error would be.
	 */
	for (f = c->punch_abandoned ? c->files : NULL; f; f = f->next) {
		bool lost;

		pthread_mutex_lock(&f->lock);	/* (the punch thread may end the chain meanwhile) */
		punch_reap(f);	/* one that ended meanwhile puts its pages back (helper-65) ... */
		lost = punch_abandons_capture(f);
		if (!lost && f->nr_dirty) {
			/* ... and they are written back here, as the others were (helper-66) */
			pthread_mutex_unlock(&f->lock);
			writeback_range(f, 0, UINT64_MAX, WB_SYNC, NULL);
			pthread_mutex_lock(&f->lock);
			lost = f->nr_dirty != 0;
		}
		pthread_mutex_unlock(&f->lock);
		if (lost) {
			pr_warn("file %lu: what a client wrote in pages an eviction took from under it may be lost "
				"(the punch still waits for the memfd's lock, or their write-back failed)\n",
				(unsigned long)f->ino);
			if (!ret)
				ret = -EIO;
		}
	}
	/* The I/O threads of visitors' write-backs (wbpark.c): their I/Os are done (above); they end now. */
	wb_pool_stop(c);
	/*
	 * A forked child may still map the memfds: truncated (while the child
	 * is still served, so no access in between reads a hole), its next
	 * access to an inherited mapping is SIGBUS, not stale data.  Not
	 * upcd's (@serving): its clients keep their mappings of the memfds,
	 * now clean, for the next daemon to adopt (remote_adopt()); an access
	 * that needs a fault served waits for it.
	 */
	if ((c->uffd_features & UFFD_FEATURE_EVENT_FORK) && !c->serving)	/* children, or a fork in flight */
		for (f = c->files; f; f = f->next)
			file_memfd_empty(f);
	fork_children_release(c);
	map_destroy_all(c);
	fault_handler_stop(&c->self);
	fork_reader_stop(c);
	mm_fini(&c->self);
	/*
	 * Hole punches of evictions still stuck on a client's hold of a memfd's
	 * lock (reclaim.c): their thread goes on, and may touch any file and
	 * the cache when they complete, so both stay; the process is exiting.
	 */
	for (f = c->punch_abandoned ? NULL : c->files; f; f = next) {
		next = f->next;
		file_free(f);
	}
	if (!ret)
		ret = c->released_err;
	cache_serve_stop(c);
	close(c->engine_uffd);
	if (c->own_store)
		upc_store_destroy(c->store);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->new_cond);
	pthread_mutex_destroy(&c->wb_lock);
	pthread_mutex_destroy(&c->zap_lock);
	pthread_mutex_destroy(&c->zap_late_lock);
	pthread_cond_destroy(&c->wb_cond);
	pthread_mutex_destroy(&c->dirty_lock);
	pthread_cond_destroy(&c->dirty_cond);
	free(c->held);
	orphans_free(c);
	if (!c->punch_abandoned)
		free(c);
	return ret;
}

/* The counters of @st that need no file lock: mappings and the cache's event counts. */
void stats_counters(struct upc_cache *c, struct upc_stats *st)
{
	pthread_rwlock_rdlock(&c->self.lock);
	st->nr_mappings = (uint32_t)c->self.nmaps;
	pthread_rwlock_unlock(&c->self.lock);
#define C(x) st->x = atomic_load(&c->st.x)
	C(faults_missing); C(faults_wp); C(faults_minor);
	C(fill_ios); C(pages_filled); C(ra_pages); C(ra_max_window);
	C(wp_calls); C(wb_ios); C(pages_written); C(bytes_written); C(syncs);
	C(wb_errors); C(read_errors); C(pages_evicted); C(wb_gap_pages); C(evictions_undone);
	C(zap_wait_ms); C(dirty_wait_ms);
#undef C
	st->meta_bytes = atomic_load(&c->meta_bytes);
	st->reclaim_passes = c->rc_passes;
}

UPC_API int upc_stats(struct upc_cache *c, struct upc_stats *out)
{
	struct upc_stats st = { .sz = sizeof(st) };
	unsigned int budget = VISIT_LOCK_MS;
	struct upc_file *f;

	if (!c || !out || out->sz < offsetof(struct upc_stats, mem_limit))
		return -EINVAL;
	if (c->client)
		return client_stats(c, out);
	st.track_mode = c->track_mode;
	st.mem_limit = c->mem_limit;
	pthread_mutex_lock(&c->lock);
	st.nr_files = c->nr_files;
	for (struct upc_mm *mm = c->children; mm; mm = mm->next_child)
		st.nr_children += !mm->dead;
	for (f = c->files; f; f = f->next) {
		/*
		 * upcd: not for ever, with cache->lock held, for a file whose
		 * lock a thread holds while it waits for the memfd's inode lock,
		 * which a client can hold (punch.c, file_lock_walk): its pages go uncounted.
		 */
		if (file_lock_walk(f, &budget) != 0)
			continue;
		track_collect_all(f);	/* async: count what was written since the last look */
		st.pages_cached += f->nr_cached;
		st.pages_dirty += f->nr_dirty;
		st.pages_writeback += f->nr_writeback;
		st.pages_pinned += f->nr_pinned;
		st.pages_active += f->nr_active;
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&c->lock);
	stats_counters(c, &st);
	memcpy(out, &st, min_t(size_t, out->sz, sizeof(st)));
	out->sz = min_t(size_t, out->sz, sizeof(st));
	return 0;
}
