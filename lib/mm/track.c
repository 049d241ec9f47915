/* SPDX-License-Identifier: MIT */
/*
 * track.c - asynchronous dirty tracking: where the kernel keeps the dirty
 * bit in the PTE (pte_dirty) and moves it to the page at the right moments
 * (page_mkclean, zap_pte_range, try_to_unmap), this engine keeps "written"
 * in the PTE's uffd-wp bit and moves it to the descriptor with PAGEMAP_SCAN.
 *
 * With UFFD_FEATURE_WP_ASYNC a write to a write-protected PTE is resolved by
 * the kernel without a trap: the PTE loses its uffd-wp bit, which
 * PAGEMAP_SCAN reports as PAGE_IS_WRITTEN.  A torn-down PTE keeps the
 * information too: a clean one leaves a uffd-wp marker, a written one
 * leaves an empty PTE, which scans as written.  track_collect() asks for the
 * written pages and write-protects them again in the same call
 * (PM_SCAN_WP_MATCHING, which flushes the TLB before it returns), and marks
 * their descriptors dirty.  It runs, with file->lock held:
 *
 *   - before write-back (the protect step of I1),
 *   - before munmap and mprotect (I5: the last unmapper transfers dirty),
 *   - after every teardown (I2: the written state of the torn-down PTEs
 *     travels with the batch to the page before it can be freed),
 *   - before statistics and at every flusher pass.
 *
 * Mappings are also registered for MINOR faults, so that a page torn down
 * by reclaim faults back through the handler (and waits for file->lock)
 * instead of being mapped by the kernel between the collect and the punch.
 * Such a fault is resolved with UFFDIO_CONTINUE, write-protected, over a
 * window of cached pages (fault-around).
 */
#include "internal.h"
#include "usdt.h"

#include <string.h>
#include <sys/mman.h>

/*
 * Walk file pages [first, last] of @f in mapping @m (this process's, a
 * forked child's with a pagemap, an upcd client's), through PAGEMAP_SCAN
 * as @tmpl asks, calling @fn for every page it reports.  A scan that asks
 * for swap-type entries of file pages (PAGE_IS_SWAPPED and PAGE_IS_FILE
 * in its return mask: a PTE being migrated, reclaim.c, presence_scan)
 * gets no other swap-type entry (a uffd-wp marker, which names no page):
 * PAGEMAP_SCAN itself cannot ask for "present, or swapped and a file's",
 * and two scans would miss a migration that starts between them.  One
 * scan may stop early (a full vector): the walk goes on from walk_end.
 * Returns 0, or the first scan's error.  Caller holds f->lock.
 */
static int walk_map(struct upc_map *m, uint64_t first, uint64_t last, const struct pm_scan_arg *tmpl,
		    void (*fn)(struct upc_file *f, uint64_t pgoff, void *arg), void *arg)
{
	struct upc_cache *c = m->file->cache;
	uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
	uint64_t s = max_t(uint64_t, first, m->pgoff), e = min_t(uint64_t, last + 1, mend);
	struct page_region regs[64];
	uintptr_t start, end;

	if (s >= e || m->mm->pagemap_fd < 0)
		return 0;
	start = m->start + ((s - m->pgoff) << UPC_PAGE_SHIFT);
	end = m->start + ((e - m->pgoff) << UPC_PAGE_SHIFT);
	while (start < end) {
		struct pm_scan_arg scan = *tmpl;
		long got;

		scan.size = sizeof(scan);
		scan.start = start;
		scan.end = end;
		scan.vec = (uintptr_t)regs;
		scan.vec_len = ARRAY_SIZE(regs);
		got = ioctl(m->mm->pagemap_fd, PAGEMAP_SCAN, &scan);
		if (scan.flags & PM_SCAN_WP_MATCHING)
			atomic_fetch_add(&c->st.wp_calls, 1);
		if (got < 0)
			return -errno;
		for (long i = 0; i < got; i++) {
			uint64_t cat = regs[i].categories;

			if ((tmpl->return_mask & PAGE_IS_SWAPPED) && (tmpl->return_mask & PAGE_IS_FILE) &&
			    (cat & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE)) == PAGE_IS_SWAPPED)
				continue;
			for (uintptr_t a = regs[i].start; a < regs[i].end; a += UPC_PAGE_SIZE)
				fn(m->file, m->pgoff + ((a - m->start) >> UPC_PAGE_SHIFT), arg);
		}
		if (scan.walk_end <= start || scan.walk_end >= end)
			break;
		start = scan.walk_end;
	}
	return 0;
}

/*
 * walk_map() over the mappings of @f (@only, or every one; with @wp_only the
 * write-protect-registered ones), only where the file has cached pages, a
 * page-table chunk (2 MiB) at a time: a page written is a cached one, and a
 * scan that write-protects (PM_SCAN_WP_MATCHING) leaves markers in every
 * empty PTE it crosses, page tables and all - over a sparse 1 TiB file
 * (LMDB's MDB_WRITEMAP sizes its file to the map), 2 GiB of them.
 */
static void collect_one(struct upc_file *f, uint64_t p, void *arg);

/*
 * The written state of @m's pages [s, e) cannot be read: its process is
 * gone (a client of upcd that died: ESRCH, its PTEs went with it) or the
 * scan failed.  Every cached page it could have written is counted written
 * (data is never lost on a guess), and the mapping is write-protected the
 * synchronous way, in case its process is alive.  Caller holds f->lock.
 */
static void collect_unreadable(struct upc_map *m, uint64_t s, uint64_t e, void *arg)
{
	struct upc_file *f = m->file;
	uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);

	s = max_t(uint64_t, s, m->pgoff);
	e = min_t(uint64_t, e, mend);
	if (s >= e)
		return;
	sys_uffd_wp(m->mm->uffd, m->start + ((s - m->pgoff) << UPC_PAGE_SHIFT), (e - s) << UPC_PAGE_SHIFT, true,
		    false);
	for (uint64_t p = s; p < e; p++)
		collect_one(f, p, arg);
}

static int walk_cached(struct upc_file *f, struct upc_map *only, uint64_t first, uint64_t last, bool wp_only,
		       const struct pm_scan_arg *tmpl, void (*fn)(struct upc_file *f, uint64_t pgoff, void *arg),
		       void *arg)
{
	int err = 0, ret;

	if (!f->npages)
		return 0;
	last = min_t(uint64_t, last, f->npages - 1);
	for (uint64_t c = first >> PT_CHUNK_SHIFT; c <= last >> PT_CHUNK_SHIFT && c < f->nchunks; c++) {
		uint64_t s = max_t(uint64_t, first, c << PT_CHUNK_SHIFT), e;

		if (!f->chunks[c] || !f->chunk_used[c])
			continue;
		/* consecutive chunks with cached pages: one walk */
		while (c + 1 <= last >> PT_CHUNK_SHIFT && c + 1 < f->nchunks && f->chunks[c + 1] && f->chunk_used[c + 1])
			c++;
		e = min_t(uint64_t, last, ((c + 1) << PT_CHUNK_SHIFT) - 1);
		for (struct upc_map *m = only ? only : f->rmap; m; m = only ? NULL : m->f_next) {
			if (wp_only && !m->wp)
				continue;
			ret = walk_map(m, s, e, tmpl, fn, arg);
			/* A client of upcd, dead or not answering: see collect_unreadable(). */
			if (ret < 0 && fn == collect_one && m->mm != &f->cache->self) {
				collect_unreadable(m, s, e + 1, arg);
				ret = 0;
			}
			if (ret && !err)
				err = ret;
		}
	}
	return err;
}

int pagemap_walk(struct upc_file *f, uint64_t first, uint64_t last, bool wp_only,
		 const struct pm_scan_arg *tmpl, void (*fn)(struct upc_file *f, uint64_t pgoff, void *arg),
		 void *arg)
{
	return walk_cached(f, NULL, first, last, wp_only, tmpl, fn, arg);
}

/* The same over mapping @m only. */
int pagemap_walk_map(struct upc_map *m, uint64_t first, uint64_t last, const struct pm_scan_arg *tmpl,
		     void (*fn)(struct upc_file *f, uint64_t pgoff, void *arg), void *arg)
{
	return walk_cached(m->file, m, first, last, false, tmpl, fn, arg);
}

/* A written page: its state moves to the descriptor (and is counted). */
static void collect_one(struct upc_file *f, uint64_t p, void *arg)
{
	struct upc_page *pg = pt_lookup(f, p);

	if (pg && (pg->flags & PG_UPTODATE) && !(pg->flags & PG_DIRTY)) {
		trace_dirty(f, pg, p, 0, 0);
		page_set_dirty(f, pg);
		(*(uint64_t *)arg)++;
	}
}

static const struct pm_scan_arg scan_written = {
	.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
	.category_mask = PAGE_IS_WRITTEN,
	.return_mask = PAGE_IS_WRITTEN,
};

/*
 * Transfer the written state of file pages [first, last] from every mapping
 * of this process to the descriptors, re-protecting them.  Returns the pages
 * newly found dirty.  A no-op in synchronous mode.  Caller holds f->lock.
 */
uint64_t track_collect(struct upc_file *f, uint64_t first, uint64_t last)
{
	uint64_t found = 0;
	int err;

	if (f->cache->track_mode != UPC_TRACK_ASYNC)
		return 0;
	if (last >= f->npages)
		last = f->npages ? f->npages - 1 : 0;
	err = pagemap_walk(f, first, last, true, &scan_written, collect_one, &found);
	if (err) {
		UPC_TRACE(error, "pagemap_scan", err, f, first << UPC_PAGE_SHIFT);
		pr_warn("PAGEMAP_SCAN: %s\n", upc_strerror(err));
	}
	/*
	 * Every written page of the range was write-protected again by the
	 * scans (which flush the TLB before they return) and its state moved
	 * to the descriptor: the protect step of I1 for this range.
	 */
	if (!err && first <= last)
		UPC_TRACE(protect, f, first, last - first + 1, 0);
	return found;
}

/*
 * The same for one mapping about to be unmapped or re-protected (I5): its
 * PTEs are the only ones that change, so only they are scanned; the cost of
 * an unmap does not grow with the number of mappings of the file.
 * Caller holds f->lock.
 */
uint64_t track_collect_map(struct upc_map *m)
{
	struct upc_file *f = m->file;
	uint64_t found = 0;
	int err;
	uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);

	if (f->cache->track_mode != UPC_TRACK_ASYNC || !m->wp)
		return 0;
	/*
	 * Only up to end of file: no page past it is mapped (map.c), and the
	 * walk of a terabyte map of a small file would cost the terabyte.
	 */
	mend = min_t(uint64_t, mend, f->npages);
	if (mend <= m->pgoff)
		return 0;
	err = walk_cached(f, m, m->pgoff, mend - 1, false, &scan_written, collect_one, &found);
	if (err) {
		UPC_TRACE(error, "pagemap_scan", err, f, m->pgoff << UPC_PAGE_SHIFT);
		pr_warn("PAGEMAP_SCAN: %s\n", upc_strerror(err));
	}
	return found;
}

/* Every page of @f. */
void track_collect_all(struct upc_file *f)
{
	if (f->cache->track_mode == UPC_TRACK_ASYNC && f->npages)
		track_collect(f, 0, f->npages - 1);
}

/*
 * A mapping a restarted upcd adopts (remote_adopt()): its process may have
 * written it since the dead daemon's last look, and while no daemon ran
 * (asynchronous tracking lets writes through without a fault).  Collect
 * that before the mapping is protected again, with one scan that reads and
 * re-protects at once, so that no write slips between the two.  @m is not
 * linked yet.  Returns the pages found written.  Caller holds f->lock.
 */
uint64_t track_collect_adopted(struct upc_map *m)
{
	struct upc_file *f = m->file;
	uint64_t found = 0, mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
	int err;

	if (f->cache->track_mode != UPC_TRACK_ASYNC || !(m->prot & PROT_WRITE))
		return 0;
	mend = min_t(uint64_t, mend, f->npages);
	if (mend <= m->pgoff)
		return 0;
	err = walk_cached(f, m, m->pgoff, mend - 1, false, &scan_written, collect_one, &found);
	if (err)
		pr_warn("PAGEMAP_SCAN of an adopted mapping: %s\n", upc_strerror(err));
	return found;
}
