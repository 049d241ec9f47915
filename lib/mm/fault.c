/* SPDX-License-Identifier: MIT */
/*
 * fault.c - the fault path: the kernel's filemap_fault(), readahead and
 * do_wp_page()/page_mkwrite() for shared file mappings.
 *
 * Under synchronous tracking mappings are registered with userfaultfd for
 * MISSING faults (and write-protect), not MINOR: a page that is already
 * cached is mapped by the kernel itself, with no round trip to this handler.
 * (Asynchronous tracking adds MINOR: see track.c for why and handle_minor.)  Only a page that is not in the memfd
 * comes here.  It is read from the store into a bounce buffer, and then
 * inserted with UFFDIO_COPY, which adds a page that is already uptodate to
 * the memfd and maps it in one step.  Filling the memfd first and mapping
 * afterwards would be wrong: in the meantime, another thread or mapping
 * would take a kernel-served fault on a half-read page (the kernel avoids
 * this with PG_locked; an inserted page has no such lock in user space).
 *
 * Readahead grows per mapping as the kernel's file_ra_state does:
 * a fault that continues the previous window, or whose previous page is
 * cached, doubles the window (16 pages at least, up to ra_max); any other
 * fault reads one page.  Window pages inside the faulting mapping are
 * mapped write-protected right away; the rest go into the memfd through
 * the engine's staging mapping.
 *
 * A write-protect fault is the first write to a clean page through one
 * mapping: mark the page dirty, then remove the protection from that
 * mapping's PTE, both under file->lock (I1; see writeback.c).
 */
#include "internal.h"
#include "usdt.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/*
 * A page a fault may map around the faulting one: cached, and inside the
 * file (a page kept past a shrink because it is pinned or under write-back,
 * I6, is not mapped by a neighbour's fault: its own access gets SIGBUS).
 */
static inline bool page_in_window(struct upc_file *f, uint64_t pgoff)
{
	return pgoff < f->npages && page_uptodate(f, pgoff);
}

/*
 * Is file page @pgoff wholly past end of file?  Past the end the cache
 * knows, the file may have grown since (another process, a pwrite(2)
 * behind the cache's back): its size is looked at again before the answer
 * is yes, as the kernel's fault reads i_size.  The memfd is longer than
 * the file (file_grow), so such a fault does come here.  (The store's stat
 * allocates nothing and takes no lock.)  Caller holds f->lock.
 */
static bool past_eof(struct upc_file *f, uint64_t pgoff)
{
	if ((pgoff << UPC_PAGE_SHIFT) < (uint64_t)f->size)
		return false;
	file_size_refresh(f);
	return (pgoff << UPC_PAGE_SHIFT) >= (uint64_t)f->size;
}

static uint32_t ra_window(struct upc_cache *c, struct upc_map *m, struct upc_file *f, uint64_t pgoff)
{
	uint32_t win;

	if (m->ra_policy == UPC_ADV_RANDOM)
		return 1;
	if (m->ra_policy == UPC_ADV_SEQUENTIAL)
		return c->ra_max;
	if ((m->ra_win && pgoff == m->ra_next) || (pgoff > 0 && page_uptodate(f, pgoff - 1)))
		win = max_t(uint32_t, m->ra_win * 2, 16);
	else
		win = 1;
	return min_t(uint32_t, win, c->ra_max);
}

/*
 * Windows a scan keeps queued ahead: RA_AHEAD in a cache of 4 * RA_AHEAD
 * windows or more, RA_WORKERS in a smaller one (as before RA_AHEAD), where
 * windows read far ahead are what reclaim would take first.
 */
static uint64_t ra_ahead(const struct upc_cache *c)
{
	return (c->mem_limit >> UPC_PAGE_SHIFT) >= 4 * RA_AHEAD * (uint64_t)c->ra_max ? RA_AHEAD : RA_WORKERS;
}

/*
 * Asynchronous readahead, the kernel's PG_readahead marker: a fault in the
 * windows the background read last for this mapping (they end at
 * m->ra_async) queues the next one, so that the store is read while the
 * scan consumes this window, and the scan's next fault finds its window
 * cached (a MINOR fault) instead of reading it synchronously.  Without it
 * every second window of a scan was read in the fault while the store sat
 * idle as the scan used up the window read in the background (issue 11,
 * row C).  The kernel marks the first folio of the async window
 * (page_cache_async_ra()); here the worker maps the window into the
 * mapping that queued it but for its first page (ra_map_insert()), whose
 * MINOR fault is the only one in the window and comes at its start; a
 * window that went in through the staging mapping only is mapped whole by
 * that fault (handle_minor()).  ra_ahead() windows ahead: the workers read
 * without file->lock (control.c, fill_run), each its own window, so the
 * store has a read in flight while another is inserted, a worker done
 * with one window finds the next queued, and a fault of the scan on a
 * window already read does not wait behind the read of one further on.
 * Called with file->lock held.
 */
static void ra_async_marker(struct upc_cache *c, struct upc_map *m, struct upc_file *f, uint64_t pgoff)
{
	uint64_t first = m->ra_async, last;

	/*
	 * Not in a cache of fewer than 8 windows: reclaim takes a window read
	 * ahead and not mapped yet before the scan gets there (a 96 MiB scan
	 * under an 8 MiB limit read up to 1.75 times the file with the marker,
	 * 1.3 times without, and waited in as many faults).
	 */
	if (m->ra_policy == UPC_ADV_RANDOM || !first || c->ra_max < 16 || pgoff >= first ||
	    pgoff + ra_ahead(c) * c->ra_max < first || first >= f->npages ||
	    (c->mem_limit >> UPC_PAGE_SHIFT) < 8 * (uint64_t)c->ra_max)
		return;
	last = min_t(uint64_t, first + c->ra_max, f->npages) - 1;
	if (ra_queue(c, f, first, last, m) == 0)
		m->ra_async = last + 1;
}

/*
 * A resolving ioctl on @mm's userfaultfd answered EAGAIN: the process is
 * forking.  From dup_userfaultfd() until its UFFD_EVENT_FORK has been read
 * the kernel refuses to change its page tables (ctx->mmap_changing), and
 * nobody but this handler reads that event: read it into the queue (it is
 * handled after the fault at hand), let the forking task go on, retry.
 * (@h is NULL for the engine's own userfaultfd, which never forks.)
 */
static void uffd_eagain(struct upc_handler *h)
{
	if (h)
		handler_read_msgs(h, UFFD_QUEUE);
	sched_yield();
}

/*
 * A client of upcd says which of its address ranges map the memfd, and
 * MAP_SHARED (map_attach); nothing makes it true.  A UFFDIO_COPY into a
 * range that is not a shared mapping of the memfd (a private one, or
 * another file) fills an anonymous page of the client's and leaves the
 * memfd's page a hole, which the page table must not call cached: the
 * daemon's own next access to it through the staging mapping would be its
 * SIGBUS.  So after a client's fill the faulting page is looked for in the
 * memfd (mincore through the staging mapping: the page cache's residency),
 * and a fill that is not there fails (the faulting thread gets SIGBUS; a
 * window of pages copied with it lands in the same mapping, so the first
 * fault of a private mapping is caught).
 */
static bool inserted_in_memfd(struct upc_file *f, uint64_t pgoff, uint64_t n)
{
	unsigned char vec[256];

	for (uint64_t done = 0; done < n;) {
		uint64_t k = min_t(uint64_t, n - done, sizeof(vec));

		if (mincore(f->base + ((pgoff + done) << UPC_PAGE_SHIFT), k << UPC_PAGE_SHIFT, vec) < 0)
			return false;
		for (uint64_t i = 0; i < k; i++)
			if (!(vec[i] & 1)) {
				pr_warn("a client's fill did not reach the memfd: its range is not a shared "
					"mapping of it\n");
				return false;
			}
		done += k;
	}
	return true;
}

/*
 * Insert @len bytes from @src at @dst through @uffd (@h's mm's, or the engine's).  A
 * page that is already there (EEXIST: inserted by another path since we
 * looked) is skipped.  Returns the bytes inserted by us, or a negative errno.
 * With @woken, the copy that inserts the page at @dst also wakes its
 * faulting thread (one ioctl fewer a read fault), and *@woken says if it did.
 */
static long insert_pages(struct upc_handler *h, int uffd, uintptr_t dst, const char *src, size_t len,
			 bool wp, size_t *skipped, bool *woken, bool *dst_there)
{
	size_t done = 0;
	long r;

	*skipped = 0;
	if (dst_there)
		*dst_there = false;
	while (done < len) {
		r = sys_uffd_copy(uffd, dst + done, src + done, len - done, wp, woken && !done);
		if (r > 0) {
			if (woken && !done)
				*woken = true;
			done += (size_t)r;
		} else if (r == -EEXIST) {
			if (dst_there && !done)
				*dst_there = true;
			done += UPC_PAGE_SIZE;
			(*skipped)++;
		} else if (r == -EAGAIN) {
			uffd_eagain(h);
		} else {
			return done ? (long)done : r;
		}
	}
	return (long)done;
}

/* Insert @n filled pages at file page @pgoff through the staging mapping. Returns pages or -errno. */
long staging_insert(struct upc_file *f, uint64_t pgoff, uint64_t n, const char *buf, size_t *skipped)
{
	long r = insert_pages(NULL, f->cache->engine_uffd, (uintptr_t)f->base + (pgoff << UPC_PAGE_SHIFT), buf,
			      n << UPC_PAGE_SHIFT, false, skipped, NULL, NULL);

	return r < 0 ? r : r >> UPC_PAGE_SHIFT;
}

/*
 * Insert @n pages read ahead at file page @pgoff, as staging_insert() does,
 * but through the mapping whose scan queued the window (@t: ra_queue()),
 * where it still maps them: the copy puts each page in the memfd and maps
 * it there, write-protected where the mapping tracks writes, as a MISSING
 * fault's copy does.  Through the staging mapping only, a window cost the
 * scan a MINOR fault and a UFFDIO_CONTINUE under file->lock, which the
 * next window's insert waited for (issue 11, row C: 0.8 ms of 1.6 a 2 MiB
 * window, `upc-trace` of an O_DIRECT scan).
 *
 * The window's first page is left out of a mapping registered for MINOR
 * faults: its touch is the one fault in the window, and queues the next
 * window (handle_minor, ra_async_marker), as the kernel's fault-around
 * leaves a folio marked PG_readahead to filemap_fault().  A page the
 * mapping shows already (EEXIST: whatever its PTE holds) and whatever the
 * mapping does not cover, or cannot take now (the process is forking:
 * EAGAIN, which only the fault handler may answer), go in through the
 * staging mapping.  Caller holds f->lock; mm->lock is only tried (it
 * comes before f->lock): held by a writer, the window goes to staging.
 * Returns the pages inserted from @pgoff on, or a negative errno if none.
 */
long ra_map_insert(struct upc_file *f, const struct ra_target *t, uint64_t pgoff, uint64_t n, const char *buf)
{
	uintptr_t addr = t->addr + ((pgoff - t->first) << UPC_PAGE_SHIFT);
	uint64_t lead, in_map = 0, i;
	struct upc_map *m;
	size_t skipped;
	long r;

	if (pthread_rwlock_tryrdlock(&t->mm->lock))
		return staging_insert(f, pgoff, n, buf, &skipped);
	m = mm_find(t->mm, addr);
	if (m && m->file == f && m->prot != PROT_NONE &&
	    m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT) == pgoff)
		in_map = min_t(uint64_t, n, (m->end - addr) >> UPC_PAGE_SHIFT);
	lead = (pgoff == t->first && in_map && map_minor(m)) ? 1 : 0;
	if (in_map <= lead) {
		pthread_rwlock_unlock(&t->mm->lock);
		return staging_insert(f, pgoff, n, buf, &skipped);
	}
	r = lead ? staging_insert(f, pgoff, lead, buf, &skipped) : 0;
	if (r < 0 || (uint64_t)r < lead) {
		pthread_rwlock_unlock(&t->mm->lock);
		return r;
	}
	for (i = lead; i < in_map;) {
		r = sys_uffd_copy(t->mm->uffd, addr + (i << UPC_PAGE_SHIFT), buf + (i << UPC_PAGE_SHIFT),
				  (in_map - i) << UPC_PAGE_SHIFT, m->wp, true);
		if (r > 0) {
			i += (uint64_t)r >> UPC_PAGE_SHIFT;
			continue;
		}
		if (r != -EEXIST)
			break;
		r = staging_insert(f, pgoff + i, 1, buf + (i << UPC_PAGE_SHIFT), &skipped);
		if (r != 1)
			break;
		i++;
	}
	pthread_rwlock_unlock(&t->mm->lock);
	if (i < n) {
		r = staging_insert(f, pgoff + i, n - i, buf + (i << UPC_PAGE_SHIFT), &skipped);
		if (r > 0)
			i += (uint64_t)r;
	}
	return (long)i;
}

/*
 * The store failed the faulting page: the access gets SIGBUS, as a failed
 * ->read_folio gives it in the kernel.  UFFDIO_POISON (6.6) leaves a poison
 * marker in the PTE; without it, the faulting thread is signalled directly.
 *
 * A page past end of file is never poisoned (@poison false): the file may
 * grow, and then the next access must fault here again to see it, where a
 * poison marker would raise SIGBUS in the kernel for ever.  The thread of
 * this process gets the kernel's SIGBUS through the relay (sigbus.c); a
 * forked child's, or one whose application took SIGBUS over, through the
 * fence (cache.c, file_fence): the memfd is cut at end of file and the
 * thread woken, so that its access takes the kernel's own SIGBUS.  Only a
 * page neither reaches (one kept in the memfd past a shrink, I6, in a
 * child) has the thread signalled from here, without the address
 * (SI_TKILL).  Caller holds the file's lock.
 */
static void fault_fail(struct upc_handler *h, struct upc_map *m, uintptr_t addr, uint32_t ptid, bool poison)
{
	struct upc_mm *mm = h->mm;
	uint64_t pgoff = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);

	if (!poison && ptid && mm == &mm->cache->self &&
	    sigbus_relay((pid_t)ptid, (h->fault_exact & UPC_PAGE_MASK) == addr ? h->fault_exact : addr) == 0) {
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
		return;
	}
	/* upcd's client: a poison marker in its PTE, the fence's answer for that client (remote.c) */
	if (!poison && mm->remote && remote_refuse(m, addr) == 0)
		return;
	if (!poison && pgoff >= m->file->npages && file_fence(m->file) == 0) {
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
		return;
	}
	/*
	 * UFFDIO_POISON installs into an empty PTE only, and ours holds a
	 * uffd-wp marker (EEXIST): resolve the marker first.  The page is not
	 * cached, so nothing can be written through the PTE meanwhile; whoever
	 * later zaps the poison marker must write-protect the PTE again.
	 */
	if (poison && (mm->cache->uffd_features & UFFD_FEATURE_POISON) &&
	    (!m->wp || sys_uffd_wp(mm->uffd, addr, UPC_PAGE_SIZE, false, false) == 0) &&
	    sys_uffd_poison(mm->uffd, addr, UPC_PAGE_SIZE) == 0)
		return;
	if (ptid && mm->pid) {
		syscall(SYS_tgkill, mm->pid, ptid, SIGBUS);
	} else if (ptid) {	/* a forked child: its pid is not known, its thread id is */
		syscall(SYS_tkill, ptid, SIGBUS);
	}
	sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
}

#define READ_ERROR_RETRIES	8

/*
 * What to do about a page the store failed to read: SIGBUS for the access
 * (the kernel's answer), unless the application installed a read_error
 * callback; a RETRY answer is honoured READ_ERROR_RETRIES times at most.
 */
static int read_error_action(struct upc_cache *c, struct upc_file *f, uint64_t pgoff, int err,
			     unsigned int attempt)
{
	struct upc_read_error e = {
		.dev = f->dev,
		.ino = f->ino,
		.offset = (off_t)(pgoff << UPC_PAGE_SHIFT),
		.err = err,
		.attempt = attempt,
	};
	int action;

	if (!c->read_error)
		return UPC_READ_ERROR_SIGBUS;
	action = c->read_error(c->read_error_arg, &e);
	if (action == UPC_READ_ERROR_RETRY && attempt + 1 >= READ_ERROR_RETRIES)
		return UPC_READ_ERROR_SIGBUS;
	return action;
}

static void handle_missing(struct upc_handler *h, struct upc_map *m, uintptr_t addr, bool write,
			   uint32_t ptid)
{
	struct upc_mm *mm = h->mm;
	struct upc_cache *c = mm->cache;
	struct upc_file *f = m->file;
	uint64_t pgoff = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);
	uint64_t map_last = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
	uint64_t n, i, full, in_map;
	struct upc_page *pg;
	struct upc_io io;
	size_t skipped;
	bool woken = false, there = false;
	bool mark_write = write && c->track_mode != UPC_TRACK_ASYNC;
	uint32_t win;
	bool zeroed = false;
	long r;
	int ret;

	atomic_fetch_add(&c->st.faults_missing, 1);
	UPC_TRACE(fault, f, pgoff, addr, UPC_FAULT_MISSING | (write ? UPC_FAULT_WRITE : 0), ptid);
again:
	file_size_recheck(f, pgoff);
	if (past_eof(f, pgoff))
		goto beyond_eof;
	/*
	 * A readahead worker is reading the page without file->lock (control.c,
	 * fill_run): wait for it, as filemap_fault() waits on a locked folio,
	 * then look again.  The wait lets go of file->lock; mm->lock, held,
	 * keeps @m.
	 */
	if (!page_uptodate(f, pgoff) && fill_busy(f, pgoff, pgoff)) {
		while (fill_busy(f, pgoff, pgoff))
			pthread_cond_wait(&f->wb_cond, &f->lock);
		goto again;
	}
	/* Evicted by upcd's reclaim thread, its punch still in flight (punch.c): wait for it too. */
	if (punch_busy(f, pgoff, pgoff)) {
		if (!punch_wait(f, pgoff, pgoff, &h->mm->stopping))
			return;		/* the mm or the cache is going: the fault is left to it */
		goto again;
	}
	pg = pt_get(f, pgoff);
	if (!pg)
		goto fail;
	/*
	 * A MISSING fault on a page the descriptor says is cached: usually a
	 * fault raised just before another path filled the page, and waking
	 * the faulter is all it needs.  If the same page faults again, the
	 * descriptor is wrong and would make the fault come back for ever:
	 * read the page again (the copy finds it if it is there: EEXIST).
	 */
	if (pg->flags & PG_UPTODATE) {
		if (h->last_spurious != addr) {
			h->last_spurious = addr;
			/*
			 * Read in the background since the fault.  A mapping
			 * registered for MINOR faults queues the next window
			 * from the MINOR fault its retry takes, after mapping
			 * this one: queued here, a readahead thread would
			 * take file->lock for it first and that fault would
			 * wait for it (review of a5df1a3).
			 */
			if (!map_minor(m))
				ra_async_marker(c, m, f, pgoff);
			goto stale;
		}
		pr_debug("MISSING fault again on cached page %llu: reading it again\n",
			 (unsigned long long)pgoff);
	}
	h->last_spurious = 0;
	if (m->ra_win && pgoff == m->ra_next)
		atomic_fetch_add(&c->st.ra_hits, 1);	/* the last window was used up */
	/* Wholly past end of file (the file shrank, fill_valid()): SIGBUS, as mmap(2) says. */
	if ((pgoff << UPC_PAGE_SHIFT) >= (uint64_t)f->size)
		goto beyond_eof;
	win = (pg->flags & PG_UPTODATE) ? 1 : ra_window(c, m, f, pgoff);
	for (n = 1; n < win && pgoff + n < f->npages && !page_uptodate(f, pgoff + n) &&
	     !fill_busy(f, pgoff + n, pgoff + n) && !punch_busy(f, pgoff + n, pgoff + n); n++)
		;
	for (unsigned int attempt = 0;;) {
		io = (struct upc_io){
			.buf = h->bounce,
			.len = min_t(uint64_t, n << UPC_PAGE_SHIFT,
				     (uint64_t)f->size - (pgoff << UPC_PAGE_SHIFT)),
			.off = (off_t)(pgoff << UPC_PAGE_SHIFT),
		};
		UPC_TRACE(fill_submit, f, io.off, io.len);
		ret = c->store->ops->submit(c->store, f->store_h, UPC_IO_READ, &io, 1);
		atomic_fetch_add(&c->st.fill_ios, 1);
		UPC_TRACE(fill_done, f, io.off, io.len, ret < 0 ? ret : io.res);
		full = fill_valid(f, ret, &io);
		if (full)
			break;
		if (io.off >= f->size)	/* the file shrank below the faulting page */
			goto beyond_eof;
		/*
		 * The window failed, maybe for a page after the faulting one
		 * (readahead): read the faulting page alone, as the kernel's
		 * filemap_fault() falls back to ->read_folio.  Only that page's
		 * failure is the access's; the others are read by their faults.
		 */
		if (n > 1) {
			n = 1;
			continue;
		}
		/* The faulting page could not be read: ask the application, if it asked to be asked. */
		atomic_fetch_add(&c->st.read_errors, 1);
		switch (read_error_action(c, f, pgoff, ret < 0 ? ret : io.res < 0 ? (int)io.res : -EIO,
					  attempt)) {
		case UPC_READ_ERROR_RETRY:
			attempt++;
			continue;
		case UPC_READ_ERROR_ZERO:
			memset(h->bounce, 0, UPC_PAGE_SIZE);
			full = 1;
			zeroed = true;
			break;
		default:
			goto fail;
		}
		break;
	}
	n = min_t(uint64_t, n, full);

	/*
	 * A client that may only read the file maps the memfd MAP_PRIVATE
	 * (client.c, client_map: the kernel registers only mappings that may
	 * become writable, VM_MAYWRITE, and a shared mapping of a read-only
	 * descriptor is not one).  A copy into a private mapping would be the
	 * client's own page, not the memfd's: the pages go in through the
	 * staging mapping, and the woken thread faults again and is mapped
	 * the memfd's page by the kernel (read-only; a write of its own, after
	 * an mprotect(2), is copied on write into a page of its own, and never
	 * reaches the cache).
	 */
	in_map = (mm != &c->self && !(m->maxprot & PROT_WRITE)) ? 0 : min_t(uint64_t, n, map_last - pgoff);
	if (!in_map) {
		r = staging_insert(f, pgoff, n, h->bounce, &skipped);
		if (r < 0 || !inserted_in_memfd(f, pgoff, 1))
			goto fail;
		n = (uint64_t)r ? (uint64_t)r : 1;
		mark_write = false;
		goto inserted;
	}
	/*
	 * A read fault's thread is woken by the copy itself: the page is
	 * whole and mapped, and what follows (descriptors, readahead) is done
	 * under file->lock, which anything that looks at them takes.  A write
	 * fault's thread waits until its page is dirty and writable (I1).
	 * Under asynchronous tracking a write fault is woken as a read fault
	 * is: its write, retried on the protected page, is resolved by the
	 * kernel and seen by track_collect() like any other.  The message
	 * may be a stale second one of a write already served (below, at
	 * stale:) and the page one that a truncation dropped since: read
	 * again here, it must not count as written (test_maps' truncation
	 * case: page 40 refilled with zeros after the file regrew, and
	 * counted dirty).  Synchronous tracking keeps the shortcut (one trap
	 * fewer a first write to a hole): there such a stale message counts
	 * a page equal to the store dirty, and it is written back once.
	 */
	/*
	 * Not for a page table that outlives this process (a daemon's:
	 * f->state_hdr; a client serving itself after a daemon's death has
	 * its own fault path, takeover.c): the woken thread may write
	 * the page at once (asynchronous tracking takes no trap), and a kill
	 * of this process before PG_UPTODATE is set below would leave that
	 * write in a page the next daemon's adoption calls uncached and
	 * punches (file_adopt_pages).  test_shared's keeper case under
	 * --async lost it so, about once in ten runs under load, and every
	 * time with a 0.5 s sleep put after the copy.  There the thread is
	 * woken after the page table says the page is cached.
	 */
	r = insert_pages(h, mm->uffd, addr, h->bounce, in_map << UPC_PAGE_SHIFT, m->wp, &skipped,
			 (mark_write || f->state_hdr) ? NULL : &woken, &there);
	/*
	 * The faulting page, if this copy put it there (not one found there:
	 * EEXIST, which a PTE marker over a page a client punched also gives).
	 */
	if (r <= 0 || (mm != &c->self && !there && !inserted_in_memfd(f, pgoff, 1)))
		goto fail;
	/* Only what was inserted (or found there) is cached. */
	if ((uint64_t)r >> UPC_PAGE_SHIFT < in_map)
		n = in_map = (uint64_t)r >> UPC_PAGE_SHIFT;
	if (n > in_map) {
		size_t skipped2;

		r = staging_insert(f, pgoff + in_map, n - in_map, h->bounce + (in_map << UPC_PAGE_SHIFT),
				   &skipped2);
		if (r > 0)
			n = in_map + (uint64_t)r;
		else
			n = in_map;
	}
inserted:
	for (i = 0; i < n; i++) {
		struct upc_page *p = pt_get(f, pgoff + i);

		if (p && !(p->flags & PG_UPTODATE)) {
			page_add(f, pgoff + i, p);
			if (i)
				p->flags |= PG_READAHEAD;
		}
	}
	if (zeroed)	/* clean, but not the store's data: never written with dirty neighbours */
		pg->flags |= PG_NOSTORE;
	atomic_fetch_add(&c->st.pages_filled, n);
	atomic_fetch_add(&c->st.ra_pages, n - 1);
	if (n > atomic_load(&c->st.ra_max_window))
		atomic_store(&c->st.ra_max_window, n);
	m->ra_next = pgoff + n;
	m->ra_win = (uint32_t)n;
	/*
	 * Asynchronous readahead (the kernel's PG_readahead): a scan running at
	 * the full window has the next ra_ahead() windows read in the
	 * background, by the workers, while it consumes this one.  A fault
	 * on a page being read waits for it, as on a locked page (above).
	 */
	if (n >= c->ra_max && m->ra_policy != UPC_ADV_RANDOM && pgoff + n < f->npages) {
		uint64_t end = min_t(uint64_t, pgoff + n + ra_ahead(c) * c->ra_max, f->npages);

		/* A scan started again (or elsewhere): the queue runs from here. */
		if (m->ra_async <= pgoff + n || m->ra_async > end + c->ra_max)
			m->ra_async = pgoff + n;
		while (m->ra_async < end &&
		       ra_queue(c, f, m->ra_async, min_t(uint64_t, m->ra_async + c->ra_max, end) - 1, m) == 0)
			m->ra_async = min_t(uint64_t, m->ra_async + c->ra_max, end);
	}
	if (atomic_load(&c->nr_cached) > c->high_pages)
		reclaim_kick(c);
	/* The faulting page was mapped already: no write of ours to mark (below). */
	if (there)
		goto stale;
	if (mark_write) {
		uint64_t bt = 0;

		/* UPC_DEBUG=dirty-backtrace: the writer's stack, asked for before it resumes (debug.c). */
		if (__builtin_expect(c->debug & UPC_DBG_DIRTY_BT, 0) && !(pg->flags & PG_DIRTY) && mm == &c->self)
			bt = dirty_bt_request(f, pgoff, ptid);
		/* A write to a hole: dirty first, then writable (I1). */
		trace_dirty(f, pg, pgoff, ptid, bt);
		page_set_dirty(f, pg);
		while (sys_uffd_wp(mm->uffd, addr, UPC_PAGE_SIZE, false, true) == -EAGAIN)
			uffd_eagain(h);
	} else if (!woken) {
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
	}
	UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MISSING, 1);
	return;
stale:
	/*
	 * The page was cached (or mapped here) before this fault was
	 * served: the message may be stale, and then it is no write.  One
	 * access can raise two MISSING messages, same address and thread
	 * (30 such pairs in about 4000 runs of test_maps' truncation case's
	 * steps under load, 6.18; a thread woken before its page is there
	 * retries the fault and queues another), and with two handlers the
	 * other one reads the second, then waits for file->lock for as long
	 * as the application holds it.  So the second one of a write to
	 * page 2 was served after upc_msync() had written the page back:
	 * marked dirty and made writable here, the page counted dirty with
	 * nothing written to it (that case, async, once in about 300 runs
	 * under CI's load).
	 * So only wake: a thread that does wait retries its write, which
	 * takes the MINOR and write-protect faults (or, under asynchronous
	 * tracking, the kernel's resolution, which track_collect() sees) that
	 * mark the page dirty because it is written (I1).
	 */
	sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
	UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MISSING, 0);
	return;
beyond_eof:
	UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MISSING, -EFAULT);
	fault_fail(h, m, addr, ptid, false);
	return;
fail:
	UPC_TRACE(error, "fill", -EIO, f, pgoff << UPC_PAGE_SHIFT);
	UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MISSING, -EIO);
	pr_warn("read of page %llu failed; the access gets SIGBUS\n", (unsigned long long)pgoff);
	fault_fail(h, m, addr, ptid, true);
}

#define FAULT_AROUND	64	/* pages mapped around a MINOR fault: random access */
#define MAP_AHEAD_MAX	512	/* ... at most: a scan, or a mapping touched densely */

/*
 * Which of the @n pages at @start are mapped in @mm (bit i of @present),
 * from its pagemap: one read for the window.  Returns 0, or -1 when the mm
 * has no pagemap (a forked child) or the read failed.
 */
static int pages_present(struct upc_mm *mm, uintptr_t start, unsigned int n, uint64_t *present)
{
	uint64_t ent[MAP_AHEAD_MAX];
	ssize_t r;

	if (mm->pagemap_fd < 0 || n > MAP_AHEAD_MAX)
		return -1;
	r = pread(mm->pagemap_fd, ent, n * sizeof(ent[0]), (off_t)((start >> UPC_PAGE_SHIFT) * sizeof(ent[0])));
	if (r != (ssize_t)(n * sizeof(ent[0])))
		return -1;
	memset(present, 0, ((n + 63) / 64) * sizeof(*present));
	for (unsigned int i = 0; i < n; i++)
		if (ent[i] >> 63)	/* PM_PRESENT */
			present[i / 64] |= 1ULL << (i % 64);
	return 0;
}

/*
 * Map [@addr, +@n pages) write-protected, waking the threads that wait in
 * what it maps if @wake; returns what UFFDIO_CONTINUE returned.
 */
static long continue_wp(struct upc_handler *h, uintptr_t addr, uint64_t n, bool wake)
{
	long r;

	while ((r = sys_uffd_continue(h->mm->uffd, addr, n << UPC_PAGE_SHIFT, true, wake)) == -EAGAIN)
		uffd_eagain(h);
	if (r < (long)UPC_PAGE_SIZE && r != -EEXIST)
		pr_debug("CONTINUE at %#lx, %llu pages: %ld\n", (unsigned long)addr, (unsigned long long)n, r);
	return r;
}

/* Is page @pgoff in @f's memfd (mincore of the staging mapping: no inode lock)? */
static bool page_in_memfd(struct upc_file *f, uint64_t pgoff)
{
	unsigned char vec = 0;

	if (pgoff >= (f->base_len >> UPC_PAGE_SHIFT))
		return false;
	return mincore(f->base + (pgoff << UPC_PAGE_SHIFT), UPC_PAGE_SIZE, &vec) == 0 && (vec & 1);
}

/*
 * A MINOR fault: the page is cached but not mapped through this mapping (a
 * fresh mapping of cached pages, or a PTE torn down by reclaim or
 * DONTNEED).  In a range registered for MINOR or write-protect faults the
 * kernel does no fault-around (uffd_disable_fault_around()), so it is done
 * here, write-protected so that writes are seen, with UFFDIO_CONTINUE:
 *
 *  - a scan that continues where the last window ended maps ahead: twice
 *    the last window, up to 512 pages, from the faulting page on (a PTE
 *    already present ends the window: EEXIST);
 *  - any other fault maps the cached pages of the window around it that
 *    are not mapped yet, as the kernel's do_fault_around() does (64 pages,
 *    aligned, where the kernel takes 16: each of our faults is a round
 *    trip, not a trap), one read of the pagemap telling which PTEs are
 *    there.  Once MINOR faults have mapped an eighth of the mapping this
 *    way the mapping is being read densely (a random walk over all of
 *    it): the window grows to 512 pages, so the rest costs a few faults.
 *    A sparse random reader never gets there and maps 64 pages a fault.
 *
 * A forked child's mm has no pagemap here: it maps from the faulting page
 * forward, up to the first page already mapped.
 */
static void handle_minor(struct upc_handler *h, struct upc_map *m, uintptr_t addr, uint32_t ptid)
{
	struct upc_mm *mm = h->mm;
	struct upc_file *f = m->file;
	uint64_t pgoff = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);
	uint64_t map_last = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
	uint64_t map_pages = map_last - m->pgoff;
	uint64_t n, win = FAULT_AROUND, mapped = 0, cached = 0, present[MAP_AHEAD_MAX / 64];
	uintptr_t ws, we;
	bool woken = false;
	long r = 0;

	atomic_fetch_add(&mm->cache->st.faults_minor, 1);
	UPC_TRACE(fault, f, pgoff, addr, UPC_FAULT_MINOR, ptid);
	if (!page_uptodate(f, pgoff)) {
		/*
		 * Freed since the fault was raised: it faults again as MISSING.
		 * Unless the memfd holds a page the cache does not: in upcd, a
		 * client's write(2) into a hole of the memfd (remote.c, "What a
		 * client can do to a memfd"), which would fault MINOR for ever.
		 * It is not the cache's page: punched, by the punch thread
		 * (punch.c, punch_stray), and the retry waits for that without
		 * file->lock and reads the store's (a page freed meanwhile is a
		 * hole already).
		 */
		if (mm->cache->serving && page_in_memfd(f, pgoff) && !punch_stray(f, pgoff, &mm->stopping))
			return;		/* the mm or the cache is going: the fault is left to it */
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
		UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MINOR, 0);
		return;
	}
	/*
	 * Cached but wholly past end of file: a page kept in the memfd past a
	 * shrink because it is pinned or under write-back (I6).  It is not
	 * file data: SIGBUS, as a MISSING fault there gets.
	 */
	if (past_eof(f, pgoff)) {
		UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MINOR, -EFAULT);
		fault_fail(h, m, addr, ptid, false);
		return;
	}
	ra_async_marker(mm->cache, m, f, pgoff);
	/*
	 * The client is zapping PTEs of this mm without file->lock, at the
	 * reclaim thread's request (zap.c, zap_elsewhere) or in a run of
	 * @m it advised DONTNEED (reclaim.c, dontneed_piece): a PTE it empties
	 * is the only record of a write made before (track.c), and a page
	 * mapped here write-protected would read as clean.  A neighbour could
	 * be one the client wrote after a collect and zapped before this
	 * CONTINUE (review of 98e3b21), and even the faulting page: this fault
	 * may be stale, the page mapped by another handler since, written and
	 * zapped.  So the faulting page alone, and dirty first, then mapped
	 * writable: there is nothing left to hide (the order of I1: dirty
	 * before writable, as handle_wp).
	 */
	if ((mm_zapping(mm) || m->zap_hi != m->zap_lo) && m->wp) {
		struct upc_page *pg = pt_lookup(f, pgoff);

		trace_dirty(f, pg, pgoff, ptid, 0);
		page_set_dirty(f, pg);
		while ((r = sys_uffd_continue(mm->uffd, addr, UPC_PAGE_SIZE, false, true)) == -EAGAIN)
			uffd_eagain(h);
		if (r <= 0)
			sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
		UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MINOR, r > 0 ? 1 : r);
		return;
	}
	/*
	 * A window this mapping's scan had read ahead, reached: map it whole
	 * (up to its first page not cached).  Only the scan's own windows,
	 * the ra_ahead() queued before m->ra_async and the one the marker
	 * just queued: a page read ahead for another mapping, reached at
	 * random, gets the gap-filling window below.  (With two windows
	 * counted here, as before RA_AHEAD, a scan's fault at a window's
	 * start never matched once the marker had queued the next: review of
	 * 6998616.  A window the worker mapped into the scan's mapping
	 * (ra_map_insert) leaves only its first page to this fault.)
	 */
	if (m->ra_policy != UPC_ADV_RANDOM && pgoff < m->ra_async &&
	    pgoff + (ra_ahead(mm->cache) + 1) * mm->cache->ra_max >= m->ra_async &&
	    (pt_lookup(f, pgoff)->flags & PG_READAHEAD)) {
		win = max_t(uint64_t, MAP_AHEAD_MAX, mm->cache->ra_max);	/* the forward path reads no pagemap */
		goto forward;
	}
	if (m->ra_policy != UPC_ADV_RANDOM && pgoff == m->map_next) {
		win = min_t(uint64_t, max_t(uint64_t, (uint64_t)m->map_win * 2, FAULT_AROUND), MAP_AHEAD_MAX);
		goto forward;
	}
	if (m->map_around * 8 >= map_pages)
		win = MAP_AHEAD_MAX;
	ws = addr & ~((uintptr_t)(win << UPC_PAGE_SHIFT) - 1);	/* the aligned window, in the mapping */
	we = min_t(uintptr_t, m->end, ws + (uintptr_t)(win << UPC_PAGE_SHIFT));
	ws = max_t(uintptr_t, m->start, ws);
	/*
	 * The faulting page the only cached one of the window (a sparse
	 * reader): map it alone, without reading the pagemap (a few us).
	 */
	for (n = 0; ws + (n << UPC_PAGE_SHIFT) < we && cached < 2; n++)
		cached += page_in_window(f, m->pgoff + ((ws - m->start) >> UPC_PAGE_SHIFT) + n);
	if (cached < 2) {
		win = 1;
		goto forward;
	}
	if (pages_present(mm, ws, (unsigned int)((we - ws) >> UPC_PAGE_SHIFT), present) < 0)
		goto forward;
	/* Each run of cached pages not mapped yet, the faulting page's included. */
	for (uintptr_t a = ws; a < we;) {
		uint64_t i = (a - ws) >> UPC_PAGE_SHIFT, p = m->pgoff + ((a - m->start) >> UPC_PAGE_SHIFT);
		uintptr_t e = a;

		while (e < we && !(present[i / 64] & (1ULL << (i % 64))) && page_in_window(f, p)) {
			e += UPC_PAGE_SIZE;
			i++;
			p++;
		}
		if (e == a) {
			a += UPC_PAGE_SIZE;
			continue;
		}
		r = continue_wp(h, a, (e - a) >> UPC_PAGE_SHIFT, a <= addr && addr < e);
		if (r > 0)
			mapped += (uint64_t)r >> UPC_PAGE_SHIFT;
		if (r > 0 && a <= addr && addr < a + (uintptr_t)r)
			woken = true;
		a = e;
	}
	m->map_around += mapped > 0 ? mapped - 1 : 0;
	m->map_next = pgoff + 1;	/* a scan starting here maps ahead from its next fault */
	m->map_win = 0;
	goto done;
forward:
	for (n = 1; n < win && pgoff + n < map_last && page_in_window(f, pgoff + n); n++)
		;
	m->map_next = pgoff + n;
	m->map_win = (uint32_t)n;
	r = continue_wp(h, addr, n, true);
	mapped = r > 0 ? (uint64_t)r >> UPC_PAGE_SHIFT : 0;
	woken = r > 0;
done:
	if (!woken)	/* the page was mapped meanwhile (EEXIST), or the CONTINUE failed */
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
	UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_MINOR, mapped ? (long)mapped : r);
}

/*
 * A write-protect fault: the first write to a clean page through one
 * mapping (synchronous tracking).  Mark it dirty, then remove the
 * protection from that mapping's PTE.
 *
 * Dirty-ahead, in a range advised UPC_ADV_SEQUENTIAL.  A writer that goes
 * on where its last window ended (a sequential fill, a log) would take a
 * trap a page: the window doubles instead, from 16 up to 512 pages, and
 * every cached page of it is marked dirty and unprotected at once - what
 * the kernel's large folios, dirtied and written back whole, give ext4
 * (issue 11's row B: 39 write faults for 16 384 pages).  The price is
 * theirs too: pages of the window the writer does not reach are written
 * back unchanged (at most one window a sequential writer).  It is not the
 * default because that price falls on the writers it does not help: a
 * database writing a few new pages in order each commit (LMDB's page
 * allocation) would write up to 16 unchanged pages more per commit, and
 * pages_dirty would no longer count pages written.  A write anywhere else
 * marks one page.  The window stops at the first page that
 * is not cached, at end of file and at the end of the mapping; pages of it
 * not mapped here are only marked (an unprotect leaves an empty PTE
 * empty), which is what I1 asks: nothing becomes writable before it is
 * dirty.
 */
static void handle_wp(struct upc_handler *h, struct upc_map *m, uintptr_t addr, uint32_t ptid)
{
	struct upc_mm *mm = h->mm;
	struct upc_file *f = m->file;
	uint64_t pgoff = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);
	uint64_t map_last = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
	struct upc_page *pg = pt_lookup(f, pgoff);
	uint64_t bt = 0, n = 1, win = 1;

	atomic_fetch_add(&mm->cache->st.faults_wp, 1);
	UPC_TRACE(fault, f, pgoff, addr, UPC_FAULT_WP | UPC_FAULT_WRITE, ptid);
	file_size_recheck(f, pgoff);
	if (!pg || !(pg->flags & PG_UPTODATE)) {
		/*
		 * Evicted since the fault was raised: let it fault again.  In
		 * upcd, unless the memfd still holds the page: an eviction's
		 * punch that failed (punch.c, punch_complete) left it there,
		 * and a client's write-protected PTE to it, which would fault
		 * here for ever.  Punched (punch.c, punch_stray): the PTE goes
		 * with it.
		 */
		if (mm->cache->serving && page_in_memfd(f, pgoff) && !punch_stray(f, pgoff, &mm->stopping))
			return;		/* the mm or the cache is going: the fault is left to it */
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
		UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_WP, 0);
		return;
	}
	/* UPC_DEBUG=dirty-backtrace: the writer's stack, asked for before it resumes (debug.c). */
	if (__builtin_expect(mm->cache->debug & UPC_DBG_DIRTY_BT, 0) && !(pg->flags & PG_DIRTY) &&
	    mm == &mm->cache->self)
		bt = dirty_bt_request(f, pgoff, ptid);
	if (m->ra_policy == UPC_ADV_SEQUENTIAL && m->wp_win && pgoff == m->wp_next)
		win = min_t(uint64_t, max_t(uint64_t, (uint64_t)m->wp_win * 2, 16), MAP_AHEAD_MAX);
	/*
	 * I1, the write side: the pages are marked dirty before the PTEs are
	 * made writable, and both happen under file->lock, which write-back
	 * holds from write-protecting to clearing dirty.  So write-back either
	 * sees a page dirty, or protects it after we un-protected it and
	 * catches the write in its snapshot; it never sees it writable and clean.
	 */
	trace_dirty(f, pg, pgoff, ptid, bt);
	page_set_dirty(f, pg);
	for (; n < win && pgoff + n < map_last && page_in_window(f, pgoff + n); n++) {
		struct upc_page *p = pt_lookup(f, pgoff + n);

		trace_dirty(f, p, pgoff + n, ptid, 0);
		page_set_dirty(f, p);
	}
	m->wp_next = pgoff + n;
	m->wp_win = (uint32_t)n;
	while (sys_uffd_wp(mm->uffd, addr, n << UPC_PAGE_SHIFT, false, true) == -EAGAIN)
		uffd_eagain(h);
	UPC_TRACE(fault_done, f, pgoff, UPC_FAULT_WP, (long)n);
}

/*
 * upcd: faults put aside at the dirty limit (handle_fault), their threads
 * asleep, looked at again every DEFER_LOOK_MS by their handler, between
 * the client's other faults.  DEFER_MAX a handler: a client's threads
 * blocked so at once, past which a fault waits in the handler.
 */
#define DEFER_MAX	64
#define DEFER_LOOK_MS	10
#define DEFER_KICK_MS	100	/* the background writer kicked so often while some wait */

struct upc_deferred {
	struct uffd_msg msg;
	uint64_t since;		/* now_ms() when it was put aside */
};

/* May @h put the fault it handles aside?  Not once its mm or the daemon stops: then it is served. */
static bool defer_room(struct upc_handler *h)
{
	struct upc_mm *mm = h->mm;

	if (__atomic_load_n(&mm->stopping, __ATOMIC_RELAXED) || atomic_load(&mm->cache->dying) ||
	    atomic_load(&mm->cache->quitting))
		return false;
	if (h->retrying)
		return true;	/* (it keeps its place) */
	if (!h->deferred && !(h->deferred = calloc(DEFER_MAX, sizeof(*h->deferred))))
		return false;
	return h->ndeferred < DEFER_MAX;
}

/*
 * May this fault dirty a page?  A write; and under asynchronous tracking
 * any fault of a writable mapping, whose clean pages are mapped writable
 * (track.c) and written without a fault.
 */
static bool fault_may_dirty(const struct upc_cache *c, const struct upc_map *m, uintptr_t addr, uint64_t flags)
{
	uintptr_t lo;

	if (!c->serving)
		return false;	/* an embedded cache has no dirty limit: its fault path as before */
	lo = atomic_load(&m->mm->call_lo);
	if (lo && addr >= lo && addr < atomic_load(&m->mm->call_hi))
		return false;	/* a pin's populate, which has its own bounds (remote.c, mm_call) */
	if (c->track_mode == UPC_TRACK_ASYNC)
		return m->prot & PROT_WRITE;
	return flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE);
}

static bool handle_fault(struct upc_handler *h, const struct uffd_msg *msg)
{
	struct upc_mm *mm = h->mm;
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address & UPC_PAGE_MASK;

	h->fault_exact = (uintptr_t)msg->arg.pagefault.address;	/* for a SIGBUS's si_addr */
	uint64_t flags = msg->arg.pagefault.flags;
	struct upc_map *m;
	const struct dirty_acct *acct;

	if (!(flags & UFFD_PAGEFAULT_FLAG_WP) && !h->retrying)	/* (a fault put aside was throttled once) */
		reclaim_throttle(mm->cache);
	pthread_rwlock_rdlock(&mm->lock);
	m = mm_find(mm, addr);
	/*
	 * upcd: a fault that may dirty a page of a file whose user holds its
	 * share of dirty pages waits for their write-back (dirtylimit.c, the
	 * kernel's balance_dirty_pages()): put aside, its thread left asleep,
	 * while the handler serves the client's other faults (handler_main,
	 * defer_retry); a client with one handler had every fault wait behind
	 * it, a pin's populate too, whose call then timed out (review of
	 * 0665774).  Waited for here, holding nothing, where it cannot be put
	 * aside (DEFER_MAX of them are already, or no memory).
	 */
	while (m && fault_may_dirty(mm->cache, m, addr, flags) && (dirty_collect(m), (acct = dirty_exceeded(m->file)))) {
		bool waited;

		if (defer_room(h)) {
			uint64_t now = now_ms();

			pthread_rwlock_unlock(&mm->lock);
			/* the writer writes that user's files (dirtylimit.c), every DEFER_KICK_MS at most */
			if (!h->retrying && now >= h->defer_kick) {
				bgwb_kick_all(mm->cache);
				h->defer_kick = now + DEFER_KICK_MS;
			}
			return true;
		}
		pthread_rwlock_unlock(&mm->lock);
		waited = dirty_wait(mm->cache, acct, &mm->stopping);
		pthread_rwlock_rdlock(&mm->lock);
		m = mm_find(mm, addr);
		if (!waited)
			break;
	}
	if (!m) {
		/* Unmapped while the fault was queued. */
		pthread_rwlock_unlock(&mm->lock);
		sys_uffd_wake(mm->uffd, addr, UPC_PAGE_SIZE);
		return false;
	}
	atomic_fetch_add_explicit(&mm->nr_faults, 1, memory_order_relaxed);	/* upcctl daemon clients */
	pthread_mutex_lock(&m->file->lock);
	/*
	 * The page is being punched out of the memfd by upcd's reclaim thread
	 * (punch.c, "Evictions punched without file->lock"): whatever the
	 * fault is, it waits for the punch, as it would have waited for
	 * file->lock, and finds the page gone.  @m stays (mm->lock).
	 */
	if (m->file->punch) {
		uint64_t pgoff = m->pgoff + ((addr - m->start) >> UPC_PAGE_SHIFT);

		if (!punch_wait(m->file, pgoff, pgoff, &mm->stopping)) {
			pthread_mutex_unlock(&m->file->lock);
			pthread_rwlock_unlock(&mm->lock);
			return false;
		}
	}
	/*
	 * The client is zapping a run of @m without file->lock (reclaim.c,
	 * dontneed_piece): what it wrote there is in the PTEs it empties,
	 * and a page this fault maps again, write-protected, would hide it.
	 */
	if (m->zap_hi != m->zap_lo)
		track_collect(m->file, m->zap_lo, m->zap_hi - 1);
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		handle_wp(h, m, addr, msg->arg.pagefault.feat.ptid);
	else if (flags & UFFD_PAGEFAULT_FLAG_MINOR)
		handle_minor(h, m, addr, msg->arg.pagefault.feat.ptid);
	else
		handle_missing(h, m, addr, flags & UFFD_PAGEFAULT_FLAG_WRITE,
			       msg->arg.pagefault.feat.ptid);
	pthread_mutex_unlock(&m->file->lock);
	pthread_rwlock_unlock(&mm->lock);
	return false;
}

/*
 * A read of a userfaultfd that never blocks.  O_NONBLOCK alone is not
 * enough: it is the open file description's, which an upcd client shares
 * with the daemon and may clear after it attached; the daemon's handler
 * for it would then block in read(2) with nothing to read, and stop
 * neither at the client's disconnect nor at the daemon's.  preadv2's
 * RWF_NOWAIT does not block whatever the flag says, where the descriptor
 * has FMODE_NOWAIT (one userfaultfd(2) made on a kernel whose userfaultfd
 * has read_iter(), as Linux 6.18, the kernel here, has; a fork event's may
 * not): else EOPNOTSUPP, and that mm reads with read(2) from then on.
 * upcd refuses a client's descriptor that cannot (uffd_reads_nowait).
 */
static ssize_t uffd_read_nonblock(struct upc_mm *mm, void *buf, size_t len)
{
	if (!atomic_load_explicit(&mm->uffd_plain_read, memory_order_relaxed)) {
		struct iovec iov = { .iov_base = buf, .iov_len = len };
		ssize_t r = preadv2(mm->uffd, &iov, 1, -1, RWF_NOWAIT);

		if (r >= 0 || errno != EOPNOTSUPP)
			return r;
		atomic_store(&mm->uffd_plain_read, true);
	}
	return read(mm->uffd, buf, len);
}

/*
 * Can @uffd be read with RWF_NOWAIT?  A read of one byte, too short for a
 * message: EINVAL from the userfaultfd's read_iter() if the flag passed
 * the VFS, EOPNOTSUPP if not; nothing is consumed either way.
 */
bool uffd_reads_nowait(int uffd)
{
	char b;
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };

	return preadv2(uffd, &iov, 1, -1, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
}

/*
 * Read what @mm's userfaultfd holds into @q (room for @space messages),
 * without blocking, allocating or taking a lock.  Fork events are counted
 * while the reader is counted in cache->reading (fork.c: write-back must know
 * of a child from the moment the kernel let its fork go on, which is this
 * read).  Returns the messages read.
 */
unsigned int uffd_read_msgs(struct upc_mm *mm, struct uffd_msg *q, unsigned int space)
{
	unsigned int n = 0;
	ssize_t r;

	if (!space)
		return 0;
	atomic_fetch_add(&mm->cache->reading, 1);
	r = uffd_read_nonblock(mm, q, space * sizeof(*q));
	if (r > 0)
		n = (unsigned int)((size_t)r / sizeof(*q));
	for (unsigned int i = 0; i < n; i++)
		if (q[i].event == UFFD_EVENT_FORK)
			fork_event_read(mm, &q[i]);
	atomic_fetch_sub(&mm->cache->reading, 1);
	/*
	 * The kernel installs a forked child's userfaultfd in the read: out of
	 * descriptors, the event stays queued and the fork waits.  Say so, and
	 * do not spin on a descriptor that stays readable.
	 */
	if (r < 0 && (errno == EMFILE || errno == ENFILE)) {
		pr_warn("fault handler: no descriptor for a forked child's userfaultfd: the fork waits\n");
		usleep(10000);
	}
	return n;
}

/* The messages before qhead were taken: move the rest down.  Only @h's thread calls it. */
void handler_queue_compact(struct upc_handler *h)
{
	if (!h->qhead)
		return;
	memmove(h->q, h->q + h->qhead, (h->qtail - h->qhead) * sizeof(*h->q));
	h->qtail -= h->qhead;
	h->qhead = 0;
}

/* A handler reads into its own queue, at most @max messages.  Only @h's thread calls it. */
unsigned int handler_read_msgs(struct upc_handler *h, unsigned int max)
{
	unsigned int n;

	handler_queue_compact(h);
	n = uffd_read_msgs(h->mm, h->q + h->qtail, min_t(unsigned int, max, UFFD_QUEUE - h->qtail));
	h->qtail += n;
	return n;
}

/*
 * How many handler threads the process's own mm gets, and on which CPUs:
 * @cpus (room for @max) is filled when it returns more than 1 (a single
 * handler is not pinned).
 *
 * Where the handler runs decides the cost of a fault.  The faulting thread
 * sleeps in handle_userfault() until the handler's ioctl wakes it; on these
 * 2-vCPU machines a handler on the *other* CPU costs 49-106 us a round trip
 * (the faulting vCPU halts and must be woken by an IPI), one on the same
 * CPU 7-8 us (two context switches, no IPI: DESIGN.md, "Faults"; upc-bench
 * workload 8).  The kernel wakes every thread polling a userfaultfd when a
 * fault is queued (wake_up_poll() on fd_wqh, not exclusive), so a handler
 * pinned to each CPU means the one on the faulting CPU is runnable there at
 * once and takes the message before a remote one can be woken; the others
 * find the queue empty (EAGAIN) and sleep again.  That costs each fault a
 * wake-up per extra handler - an IPI to a halted CPU, 3-8 us of the
 * faulting thread's time here - so their number is capped: CPUs of the
 * process's affinity mask when the cache is created, at most
 * FAULT_HANDLERS_MAX; threads that fault on other CPUs are served from a
 * remote CPU, as with one handler.  (Only the handlers that served faults
 * recently listening, the others probing now and then, was tried and
 * lost: the kernel wakes a thread whose fault was resolved on an idle CPU
 * rather than the handler's, so an unpinned faulting thread changes CPU
 * every few faults and finds that CPU's handler not listening; upcache(7).)
 * $UPC_FAULT_HANDLERS overrides it (1: a
 * single unpinned handler, the old behaviour; more: pinned to the first
 * that many CPUs of the mask).  The alternative, UFFD_FEATURE_SIGBUS and
 * the fault resolved in the faulting thread's own signal handler (4.8-6.2
 * us), makes every kernel access to an unpopulated page - read(2) into a
 * mapped buffer, O_DIRECT, a futex - fail with EFAULT; the library does not
 * take it (upcache(7), "Fault handling").
 */
#define FAULT_HANDLERS_MAX	8

unsigned int fault_handlers_wanted(int *cpus, unsigned int max)
{
	const char *env = getenv("UPC_FAULT_HANDLERS");
	unsigned int want = FAULT_HANDLERS_MAX, n = 0;
	cpu_set_t set;

	if (env && *env) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);

		if (*end || v == 0) {
			pr_warn("UPC_FAULT_HANDLERS=%s: not a positive number; using the default\n", env);
		} else {
			want = (unsigned int)min_t(unsigned long, v, CPU_SETSIZE);
			if (want == 1)
				return 1;
		}
	}
	if (sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) < 2)
		return 1;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < want; cpu++) {
		if (!CPU_ISSET(cpu, &set))
			continue;
		if (n < max)
			cpus[n] = cpu;
		n++;
	}
	return n;
}

/*
 * A fault handle_fault() put aside: kept, to be looked at again
 * (defer_retry).  One a page: a thread put aside faults again when a
 * signal interrupts its wait (handle_userfault() sleeps interruptibly),
 * and the first entry would stay beside the second, counted as waiting,
 * taking a place; serving one entry of a page wakes every thread that
 * waits on it (review of the first version).
 */
static void defer_add(struct upc_handler *h, const struct uffd_msg *msg)
{
	uintptr_t page = (uintptr_t)msg->arg.pagefault.address & UPC_PAGE_MASK;
	unsigned int i;

	if (!h->ndeferred)
		h->defer_look = now_ms() + DEFER_LOOK_MS;
	for (i = 0; i < h->ndeferred; i++)
		if (((uintptr_t)h->deferred[i].msg.arg.pagefault.address & UPC_PAGE_MASK) == page)
			break;
	if (i < h->ndeferred) {
		h->deferred[i].msg = *msg;	/* (the latest flags: a write after a read) */
		return;
	}
	h->deferred[h->ndeferred++] = (struct upc_deferred){ .msg = *msg, .since = now_ms() };
}

/*
 * Look at the faults put aside again: each is served once its file's user
 * is under its share (or its mm stops); the others stay aside.  Their
 * waits are counted in upc_stats dirty_wait_ms.
 */
static void defer_retry(struct upc_handler *h)
{
	struct upc_cache *c = h->mm->cache;

	h->retrying = true;
	for (unsigned int i = 0; i < h->ndeferred;) {
		uint64_t now = now_ms();

		/* (counted as it goes: a wait that never ends shows too) */
		atomic_fetch_add(&c->st.dirty_wait_ms, now - h->deferred[i].since);
		h->deferred[i].since = now;
		if (handle_fault(h, &h->deferred[i].msg)) {
			i++;
			continue;
		}
		h->deferred[i] = h->deferred[--h->ndeferred];
	}
	h->retrying = false;
	h->defer_look = now_ms() + DEFER_LOOK_MS;
	if (h->ndeferred && h->defer_look >= h->defer_kick) {
		bgwb_kick_all(c);	/* the writer writes those users' files while they wait (dirtylimit.c) */
		h->defer_kick = h->defer_look - DEFER_LOOK_MS + DEFER_KICK_MS;
	}
}

/*
 * A handler: wait for messages, read them into its queue, handle them in
 * order.  While the process forks, a second reader (fork.c) reads too, so
 * that the fork event the kernel waits for is read even if every handler is
 * blocked (on malloc, which glibc's fork holds); what it read joins the
 * queue of the first handler to look, after the fork.  With several
 * handlers each reads one message at a time, so that a fault is handled by
 * the handler that woke first - the one on the faulting CPU - and one
 * handler busy with a slow fill does not hold faults that others could
 * take.  Faults of one file are serialized by its lock, as before.  In
 * upcd a fault at its user's dirty limit is put aside and handled later,
 * out of order (defer_add, defer_retry).
 */
static void *handler_main(void *arg)
{
	struct upc_handler *h = arg;
	struct upc_mm *mm = h->mm;
	unsigned int batch = mm->nh > 1 ? 1 : UFFD_QUEUE;
	struct pollfd pfd[2] = {
		{ .fd = mm->uffd, .events = POLLIN },
		{ .fd = mm->stop_efd, .events = POLLIN },
	};
	uint64_t one = 1;
	unsigned int nonblock_lost = 0;

	for (;;) {
		struct uffd_msg msg;
		uint64_t v;
		int r, timeout;

		if (mm == &mm->cache->self && atomic_load(&mm->cache->nstash))
			fork_stash_take(h);
		if (h->ndeferred && now_ms() >= h->defer_look)
			defer_retry(h);
		if (h->qhead < h->qtail) {
			msg = h->q[h->qhead++];
			if (msg.event == UFFD_EVENT_PAGEFAULT) {
				if (handle_fault(h, &msg))
					defer_add(h, &msg);
				if (h->linger_us)
					h->last_fault_us = now_us();
			} else if (msg.event == UFFD_EVENT_FORK) {
				fork_event(mm, &msg);
			}
			if (mm->dead)
				break;
			continue;
		}
		/*
		 * A thread that faults page after page faults again a few
		 * microseconds after it is woken: a handler that is not on the
		 * faulting CPU (one unpinned handler, upcd --fault-handlers:
		 * daemon/placement.c) looks again for a while, yielding the
		 * CPU, before it sleeps in poll(2), and so saves a wake-up of
		 * itself on a halted CPU each time (as a client serving itself
		 * does: takeover.c, TAKEOVER_SPIN_US).  Not once a stop is
		 * asked: a client that faulted on without a pause would keep
		 * it here, and the stop waiting (review of ff7608e; not seen:
		 * a client told the daemon stops takes its faults over, and
		 * with this check left out upcd still stopped in 19 ms under a
		 * client faulting every 32 us).
		 */
		if (h->linger_us && now_us() - h->last_fault_us < h->linger_us &&
		    !__atomic_load_n(&mm->stopping, __ATOMIC_RELAXED)) {
			if (!handler_read_msgs(h, batch))
				sched_yield();
			continue;
		}
		timeout = mm->is_child ? 1000 : -1;
		if (h->ndeferred) {
			uint64_t now = now_ms();

			timeout = h->defer_look > now ? (int)min_t(uint64_t, h->defer_look - now, DEFER_LOOK_MS) : 0;
		}
		r = poll(pfd, 2, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			pr_warn("fault handler: poll: %s\n", upc_strerror(-errno));
			break;
		}
		if (pfd[1].revents) {
			if (read(mm->stop_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				break;
			if (mm->stopping) {
				/* The read took the stop from the other handlers: hand it on. */
				if (mm->nh > 1 && write(mm->stop_efd, &one, sizeof(one)) != sizeof(one))
					pr_warn("fault handler: cannot pass the stop on\n");
				break;
			}
			continue;	/* the fork reader handed messages over: taken above */
		}
		/*
		 * poll(2) on a userfaultfd without O_NONBLOCK answers POLLERR,
		 * at once and every time (userfaultfd_poll(): "poll() never
		 * guarantees that read won't block").  An upcd client can
		 * clear the flag on the description it shares with the
		 * daemon (upcd.c, attach): set it again; one that keeps
		 * clearing it only slows its own handler down.
		 */
		if (pfd[0].revents & POLLERR) {
			int fl = fcntl(mm->uffd, F_GETFL);

			if (fl < 0 || (fl & O_NONBLOCK) || fcntl(mm->uffd, F_SETFL, fl | O_NONBLOCK) < 0 ||
			    ++nonblock_lost > 1)
				usleep(10000);
		} else {
			nonblock_lost = 0;
		}
		/* A forked child's handler notices the child is gone (see fork.c). */
		if (r == 0) {
			if (mm->is_child && fork_child_gone(mm))
				break;
			continue;
		}
		handler_read_msgs(h, batch);
	}
	/* Fork events read and never handled: their children will not be served. */
	for (; h->qhead < h->qtail; h->qhead++)
		if (h->q[h->qhead].event == UFFD_EVENT_FORK)
			fork_event_drop(mm, &h->q[h->qhead]);
	/*
	 * Faults put aside: woken, to fault again, as those left in @q are
	 * not: the client that serves itself after a stop wakes its whole
	 * range anyway (takeover.c), and one that is gone needs nothing.
	 */
	for (unsigned int i = 0; i < h->ndeferred; i++)
		sys_uffd_wake(mm->uffd, (uintptr_t)h->deferred[i].msg.arg.pagefault.address & UPC_PAGE_MASK,
			      UPC_PAGE_SIZE);
	h->ndeferred = 0;
	return NULL;
}

/* The handler of @mm that is the calling thread, if it is one. */
struct upc_handler *mm_handler_self(struct upc_mm *mm)
{
	for (unsigned int i = 0; i < mm->nh; i++)
		if (mm->h[i].running && pthread_equal(mm->h[i].thread, pthread_self()))
			return &mm->h[i];
	return NULL;
}

int fault_handler_start(struct upc_mm *mm)
{
	int ret = 0;

	for (unsigned int i = 0; i < mm->nh; i++) {
		struct upc_handler *h = &mm->h[i];
		pthread_attr_t attr;
		char name[16];

		pthread_attr_init(&attr);
		if (h->cpu >= 0) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(h->cpu, &set);
			/* Pinned from its first instruction; a CPU gone offline since leaves it unpinned. */
			if (pthread_attr_setaffinity_np(&attr, sizeof(set), &set) != 0)
				h->cpu = -1;
		}
		ret = -pthread_create(&h->thread, &attr, handler_main, h);
		if (ret && h->cpu >= 0) {
			h->cpu = -1;
			ret = -pthread_create(&h->thread, NULL, handler_main, h);
		}
		pthread_attr_destroy(&attr);
		if (ret)
			break;
		h->running = true;
		if (h->cpu >= 0)
			snprintf(name, sizeof(name), "upc-fault/%u", (unsigned int)h->cpu % 10000);
		else
			snprintf(name, sizeof(name), "upc-fault");
		pthread_setname_np(h->thread, name);
	}
	if (ret)
		fault_handler_stop(mm);
	return ret;
}

void fault_handler_stop(struct upc_mm *mm)
{
	uint64_t one = 1;
	bool any = false;

	for (unsigned int i = 0; i < mm->nh; i++)
		any |= mm->h[i].running;
	if (!any)
		return;
	mm->stopping = true;
	if (write(mm->stop_efd, &one, sizeof(one)) != sizeof(one))
		pr_warn("fault handler: cannot signal stop\n");
	for (unsigned int i = 0; i < mm->nh; i++) {
		if (!mm->h[i].running)
			continue;
		pthread_join(mm->h[i].thread, NULL);
		mm->h[i].running = false;
	}
}

/* UPC_MAP_POPULATE: take every fault now (MADV_POPULATE_*, Linux 5.14). */
void fault_populate(uintptr_t start, size_t len, int prot)
{
	/* Read faults, as mm_populate() takes for a shared mapping: populating must not dirty. */
	if (prot == PROT_NONE || !len)
		return;
	if (madvise((void *)start, len, MADV_POPULATE_READ) < 0)
		pr_debug("populate: %s\n", upc_strerror(-errno));
}
