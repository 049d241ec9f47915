/* SPDX-License-Identifier: MIT */
/*
 * writeback.c - the kernel's writepages/fsync: page_mkclean() +
 * clear_page_dirty_for_io() + submission, the flusher thread, and errseq_t.
 *
 * I1 (seed 003, Torvalds/Hansen/Kara 2014, "Dirty/Access bits vs. page
 * content"): a page may be marked clean only after every writable mapping of
 * it has been write-protected and the call doing it has returned, which is
 * after the TLB flush.  Otherwise a CPU still holding a writable TLB entry
 * writes into a page already counted clean, and the write is lost once the
 * page is dropped.  UFFDIO_WRITEPROTECT returns only after flushing the TLB,
 * so the order here is:
 *
 *     1. write-protect every mapping (every mm) of the dirty pages;
 *     2. clear PG_DIRTY, set PG_WRITEBACK;
 *     3. submit the writes, reading the pages as they are now (with short
 *        gaps of clean pages between them: clustering, below).
 *
 * Steps 1 and 2 run under file->lock, which the write-protect fault handler
 * also holds from "mark dirty" to "un-protect" (fault.c).  A write that
 * lands after step 1 traps, waits for the lock, re-dirties the page and goes
 * on; whether or not step 3's I/O caught it, the page is dirty again and
 * written later.  Nothing is lost, and nothing is written clean that was
 * not protected first.
 *
 * Errors follow errseq_t (lib/errseq.c in the kernel): a failed write bumps
 * the file's error sequence and leaves the page dirty; each mapping samples
 * the sequence when it is created and on every msync through it, so every
 * msync caller after an error sees it exactly once.
 */
#include "internal.h"
#include "usdt.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/*
 * Protect across clean gaps up to this many pages (synchronous tracking:
 * a clean page is protected already, and protecting it again costs a PTE
 * walked, where each ioctl costs a TLB flush).  Issue 11's row E, 10 % of
 * a 256 MiB mapping dirty at random: 1093 ioctls a sync with 16, 6 with
 * 64, 1 with 256; upc-sync-10% went from 1.41-1.43 of floor-wp-pwrite-10%
 * to 1.23-1.26 with no bound, two alternating runs of `upc-bench --only 6
 * --match 10% --reps 4`.  Bounded all the same: a merged range may cover
 * empty PTEs of a mapping where a dirty page is not mapped, and protecting
 * those installs markers (UFFD_FEATURE_WP_UNPOPULATED), page tables and
 * all; under 512 pages a merge spans two page tables at most.
 */
#define WP_MERGE_GAP	256

/*
 * Write-back clustering: where the dirty runs of a write-back are separated
 * by short gaps of pages that are cached, uptodate and clean, the gap pages
 * are written too, so that one I/O covers several runs (the kernel gets the
 * same from writing whole large folios, of which a 4 KiB store dirtied one
 * page, and from merging adjacent bios).  The rules:
 *
 *  - Only the dirty pages go through I1 (seed 003): they alone are
 *    write-protected, cleaned and written as above.  A gap page is neither
 *    protected nor cleaned; its data is written as the memfd holds it,
 *    which for a clean page is the store's data.  A gap page written while
 *    its I/O is in flight is caught as any clean page is: under synchronous
 *    tracking a clean page is write-protected in every writable mapping, so
 *    the write traps and handle_wp() (fault.c) marks it dirty under
 *    file->lock before it un-protects; under asynchronous tracking the
 *    write clears the PTE's uffd-wp bit, and the next track_collect() -
 *    before any write-back, which also ran it for this range before these
 *    gaps were chosen - moves it to PG_DIRTY.  Either way the page is dirty
 *    and written again by a later write-back, whether or not this I/O
 *    caught the write ("(re-)mark the page dirty ... or hold the I/O",
 *    seed 003).
 *
 *  - A gap page is set PG_WRITEBACK for the time of the I/O (and nothing
 *    else of its state changes): reclaim, upc_drop and upc_invalidate leave
 *    a page under write-back alone (I3, seed 000), so the memfd page the
 *    I/O reads cannot be punched under it; truncation and hole punching wait
 *    for it, so the I/O cannot write past a new end of file; and a later
 *    write-back skips or waits for it, so that if the page is dirtied
 *    meanwhile, its newer data is not overtaken in the store by this older
 *    I/O (two O_DIRECT writes of one block are not ordered).
 *
 *  - Only pages whose memfd data is the store's are written: cached
 *    (PG_UPTODATE; a hole in the memfd is not the store's data), not dirty
 *    (a dirty page left out of this write-back - held by UPC_PIN_NOWRITEBACK,
 *    not yet expired, under write-back already - is not written early), not
 *    PG_LAZYFREE (its data was given up: I4, seed 001), not pinned
 *    UPC_PIN_NOWRITEBACK (a page of a database's next transaction must not
 *    reach the file before its log, even if it is clean now and written
 *    while this I/O is in flight) or UPC_PIN_WRITE (written unseen, seed
 *    001), not PG_NOSTORE (a read error the application answered with
 *    zeros: the store's data is not known), and wholly below end of file:
 *    a gap lies between two dirty pages, so it never extends the file.
 *
 *  - The bound is the store's (store_cluster_gap()); a store of the
 *    application's gets none, since its cost of a byte against an I/O is
 *    not known here (there is no pmem store in this tree).  The file
 *    store's, 8 pages buffered and O_DIRECT, is measured: upc-bench --only 6
 *    (msync of 10 % random dirty pages of a cached 256 MiB ext4 file), the
 *    median over runs of each run's median ratio to the kernel's
 *    mmap+msync, 2-vCPU VM with a load average of 2-8 from other
 *    engineers' builds (2026-12-03, runs of 6 and 12 repetitions):
 *
 *        gap bound          0      4      8     16     32     64
 *        buffered, sync   1.72   1.45   1.36   1.42   1.59   1.98
 *        buffered, async  1.68   1.31   1.29   1.36   1.46   1.81
 *        O_DIRECT, sync   0.95   0.69   0.73   0.80   1.04   1.10
 *        runs                6      3      6      5      3      1
 *
 *    At 10 % a bound of 8 turns 5 904 write I/Os into 2 534 and writes 3
 *    times the dirty bytes; 64 writes the whole file in 258 I/Os and costs
 *    more than it saves (a buffered write copies every byte, O_DIRECT
 *    sends it to the device).  4 and 8 are within the noise of each other;
 *    8 was measured twice as often.  The I/Os stay page-aligned, so O_DIRECT ones
 *    stay O_DIRECT; only one that ends at an unaligned end of file goes
 *    through the buffered descriptor, as an unjoined run there does.
 *
 * pages_written still counts the dirty pages written; wb_gap_pages counts
 * the gap pages.  A gap page's I/O failing changes nothing about it (its
 * data is still the store's, or it was dirtied and is written later); the
 * dirty pages of that I/O are dirty again and the error is reported, as for
 * any failed write.
 */
static bool gap_writable(struct upc_file *f, uint64_t from, uint64_t to)
{
	if ((to << UPC_PAGE_SHIFT) > (uint64_t)f->size || store_busy_in(f, from, to - 1))
		return false;
	for (uint64_t p = from; p < to; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg || (pg->flags & (PG_UPTODATE | PG_DIRTY | PG_WRITEBACK | PG_LAZYFREE | PG_NOWB |
					 PG_PINWRITE | PG_NOSTORE)) != PG_UPTODATE)
			return false;
	}
	return true;
}

/*
 * Join @runs (sorted, cleaned, PG_WRITEBACK) across gaps of at most @bound
 * pages that gap_writable() accepts: *@spansp gets the extents to write,
 * *@gapsp the gap pages, which are set PG_WRITEBACK here.  Returns 0 or
 * -ENOMEM (then nothing is joined).  Caller holds f->lock.
 */
static int cluster_runs(struct upc_file *f, const struct run *runs, size_t nr, uint64_t bound,
			struct run **spansp, size_t *nspans, struct run **gapsp, size_t *ngaps)
{
	struct run *spans = malloc(nr * sizeof(*spans)), *gaps = malloc(nr * sizeof(*gaps));
	size_t ns = 0, ng = 0;

	if (!spans || !gaps) {
		free(spans);
		free(gaps);
		return -ENOMEM;
	}
	spans[ns++] = runs[0];
	for (size_t i = 1; i < nr; i++) {
		struct run *s = &spans[ns - 1];
		uint64_t end = s->start + s->n;

		if (runs[i].start - end > bound || !gap_writable(f, end, runs[i].start)) {
			spans[ns++] = runs[i];
			continue;
		}
		gaps[ng++] = (struct run){ end, runs[i].start - end };
		for (uint64_t p = end; p < runs[i].start; p++)
			pt_lookup(f, p)->flags |= PG_WRITEBACK;
		f->nr_writeback += runs[i].start - end;
		dirty_account(f);
		UPC_TRACE(clean, f, end, runs[i].start - end, UPC_CLEAN_GAP);
		s->n = runs[i].start + runs[i].n - s->start;
	}
	*spansp = spans;
	*nspans = ns;
	*gapsp = gaps;
	*ngaps = ng;
	return 0;
}

/*
 * Completion: does one of @ios (sorted by offset, searched on from *@k,
 * where it is left) cover byte @off?  And did that I/O write all it had?
 */
static bool io_covers(const struct upc_io *ios, size_t nios, size_t *k, uint64_t off)
{
	while (*k < nios && (uint64_t)ios[*k].off + ios[*k].len <= off)
		(*k)++;
	return *k < nios && (uint64_t)ios[*k].off <= off;
}

static bool io_done(const struct upc_io *io)
{
	return io->res >= 0 && (size_t)io->res == io->len;
}

/* A write-back error, for the next msync or fsync to report (errseq_check).  Caller holds f->lock. */
void errseq_set(struct upc_file *f, int err)
{
	f->err = err;
	f->err_seq++;
	atomic_fetch_add(&f->cache->st.wb_errors, 1);
	UPC_TRACE(error, "writeback", err, f, 0);
	pr_warn("write-back error on file %lu: %s\n", (unsigned long)f->ino, upc_strerror(err));
}

/*
 * A new mapping's starting point in the error sequence: the current one,
 * unless the latest error was never reported to anyone (write-back by the
 * flusher or by reclaim failed): then the new mapping's first msync reports
 * it, as the kernel's errseq_sample() hands an unseen error to the next
 * sampler.  Caller holds f->lock.
 */
uint32_t errseq_sample(struct upc_file *f)
{
	return f->err_seq == f->err_reported ? f->err_seq : f->err_reported;
}

/* Report the file's latest error once per @seen.  Caller holds f->lock. */
int errseq_check(struct upc_file *f, uint32_t *seen)
{
	if (*seen == f->err_seq)
		return 0;
	*seen = f->err_seq;
	f->err_reported = f->err_seq;
	return f->err;
}

int runs_add(struct run **runs, size_t *nr, size_t *cap, uint64_t pgoff)
{
	if (*nr && (*runs)[*nr - 1].start + (*runs)[*nr - 1].n == pgoff) {
		(*runs)[*nr - 1].n++;
		return 0;
	}
	if (*nr == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct run *n = realloc(*runs, nc * sizeof(*n));

		if (!n)
			return -ENOMEM;
		*runs = n;
		*cap = nc;
	}
	(*runs)[(*nr)++] = (struct run){ pgoff, 1 };
	return 0;
}

/* May write-back's protect cover clean page @p of a gap between two runs? */
static bool gap_protectable(struct upc_file *f, uint64_t from, uint64_t to)
{
	for (uint64_t p = from; p < to; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		/* UPC_PIN_WRITE: "writable until unpinned" (I6, seed 004): never protected. */
		if (pg && (pg->flags & PG_PINWRITE))
			return false;
	}
	return true;
}

/*
 * Step 1: write-protect @runs in every mapping of @f, merging runs that are
 * close together into one ioctl (a protected clean page stays protected),
 * unless a page in the gap is pinned for write.  Not under asynchronous
 * tracking: there the uffd-wp bit *is* the written state, and protecting a
 * page in a gap would erase it without moving it to the descriptor, so
 * exactly the runs are protected.  Returns 0, -EAGAIN if a mapping's mm is
 * forking (fork.c: the caller must not clean now; the other mappings are
 * still protected), or another error.
 */
int protect_runs(struct upc_file *f, const struct run *runs, size_t nr)
{
	struct upc_cache *c = f->cache;
	const uint64_t gap = c->track_mode == UPC_TRACK_ASYNC ? 0 : WP_MERGE_GAP;
	unsigned int calls = 0;
	int err = 0;

	for (struct upc_map *m = f->rmap; m; m = m->f_next) {
		uint64_t mfirst = m->pgoff, mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
		uint64_t s = 0, e = 0;
		bool have = false;

		if (!m->wp)	/* read-only: nothing to protect */
			continue;
		for (size_t i = 0; i <= nr; i++) {
			uint64_t rs = 0, re = 0;

			if (i < nr) {
				rs = max_t(uint64_t, runs[i].start, mfirst);
				re = min_t(uint64_t, runs[i].start + runs[i].n, mend);
				if (rs >= re)
					continue;
				if (have && rs <= e + gap && gap_protectable(f, e, rs)) {
					e = re;
					continue;
				}
			}
			if (have) {
				int ret = sys_uffd_wp(m->mm->uffd, m->start + ((s - mfirst) << UPC_PAGE_SHIFT),
						      (e - s) << UPC_PAGE_SHIFT, true, false);

				atomic_fetch_add(&c->st.wp_calls, 1);
				calls++;
				/* ENOENT: not mapped there any more; ESRCH: a forked child that is gone. */
				if (ret == -EAGAIN)
					err = ret;
				else if (ret < 0 && ret != -ENOENT && ret != -ESRCH)
					return ret;
			}
			s = rs;
			e = re;
			have = i < nr;
		}
	}
	if (err)
		return err;
	/* Every mapping is protected now, and every ioctl has returned (after its TLB flush). */
	if (UPC_PROBE_ENABLED(protect))
		for (size_t i = 0; i < nr; i++)
			UPC_TRACE(protect, f, runs[i].start, runs[i].n, calls);
	return 0;
}

/*
 * Step 2: clear PG_DIRTY and set PG_WRITEBACK on @runs; a page pinned with
 * UPC_PIN_WRITE stays dirty (below).  Caller holds f->lock.
 */
static void clean_runs(struct upc_file *f, const struct run *runs, size_t nr)
{
	for (size_t i = 0; i < nr; i++) {
		uint64_t from = runs[i].start;

		for (uint64_t p = runs[i].start; p < runs[i].start + runs[i].n; p++) {
			struct upc_page *pg = pt_lookup(f, p);

			pg->flags = (pg->flags & ~PG_URGENT) | PG_WRITEBACK;
			if (!(pg->flags & PG_PINWRITE)) {
				pg->flags &= ~PG_DIRTY;
				f->nr_dirty--;
			} else if (UPC_PROBE_ENABLED(clean)) {
				/* Not cleaned: written while it stays dirty (and unprotected). */
				if (p > from)
					__upc_trace_clean(f, from, p - from, UPC_CLEAN_WRITEBACK);
				__upc_trace_clean(f, p, 1, UPC_CLEAN_PINNED);
				from = p + 1;
			}
			f->nr_writeback++;
		}
		if (runs[i].start + runs[i].n > from)
			UPC_TRACE(clean, f, from, runs[i].start + runs[i].n - from, UPC_CLEAN_WRITEBACK);
	}
	dirty_account(f);	/* (a write-pinned page is dirty and under write-back: counted once more) */
}

/* Is a page of [first, last] under write-back?  Caller holds f->lock. */
bool has_writeback(struct upc_file *f, uint64_t first, uint64_t last)
{
	if (!f->nr_writeback)
		return false;
	for (uint64_t p = first; p <= last; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;	/* skip the empty chunk */
			continue;
		}
		if (pg->flags & PG_WRITEBACK)
			return true;
	}
	return false;
}

/*
 * Step 4, the completion of a write-back: end PG_WRITEBACK on its runs and
 * gap pages; a page whose I/O failed is dirty again, never lost, and the
 * error goes to the file's errseq.  Returns @d->ret, or the first error of
 * the I/Os.  Caller holds f->lock.
 */
int wb_complete(struct upc_file *f, const struct wb_done *d)
{
	struct upc_cache *c = f->cache;
	const struct run *runs = d->runs, *gaps = d->gaps;
	struct upc_io *ios = d->ios;
	size_t nios = d->nios;
	int ret = d->ret;

	if (nios)	/* a readahead read in flight meanwhile may hold the old data (fill_run) */
		file_store_changed(f);
	/* Completion: end write-back; a failed page is dirty again, never lost. */
	for (size_t i = 0, k = 0; i < d->nr; i++)
		for (uint64_t p = runs[i].start; p < runs[i].start + runs[i].n; p++) {
			struct upc_page *pg = pt_lookup(f, p);
			uint64_t off = p << UPC_PAGE_SHIFT;
			bool ok = false;

			if (io_covers(ios, nios, &k, off))
				ok = io_done(&ios[k]);
			else if (ios && off >= (uint64_t)f->size)
				ok = true;	/* wholly past EOF: nothing to write */
			pg->flags &= ~PG_WRITEBACK;
			f->nr_writeback--;
			if (ok) {
				pg->flags &= ~PG_NOSTORE;	/* the store has its data now */
				atomic_fetch_add(&c->st.pages_written, 1);
			} else {
				trace_dirty(f, pg, p, 0, 0);
				page_set_dirty(f, pg);
				if (!ret)
					ret = (k < nios && ios[k].res < 0) ? (int)ios[k].res : -EIO;
			}
		}
	/* Gap pages: only PG_WRITEBACK ends; dirty or clean, they are what they became meanwhile. */
	for (size_t i = 0, k = 0; i < d->ngaps; i++)
		for (uint64_t p = gaps[i].start; p < gaps[i].start + gaps[i].n; p++) {
			uint64_t off = p << UPC_PAGE_SHIFT;

			pt_lookup(f, p)->flags &= ~PG_WRITEBACK;
			f->nr_writeback--;
			if (io_covers(ios, nios, &k, off) && io_done(&ios[k]))
				atomic_fetch_add(&c->st.wb_gap_pages, 1);
		}
	for (size_t k = 0; k < nios; k++) {
		if (ios[k].res > 0)
			atomic_fetch_add(&c->st.bytes_written, (uint64_t)ios[k].res);
		/* PG_WRITEBACK is clear on the I/O's pages now. */
		UPC_TRACE(wb_done, f, ios[k].off, ios[k].len, ios[k].res);
	}
	if (ret < 0)
		errseq_set(f, ret);
	dirty_account(f);
	pthread_cond_broadcast(&f->wb_cond);
	return ret;
}

/* Step 3's I/O: submit @ios and wait for them; each gets its result. */
void wb_submit(struct upc_file *f, struct upc_io *ios, size_t nios)
{
	struct upc_cache *c = f->cache;
	int err = c->store->ops->submit(c->store, f->store_h, UPC_IO_WRITE, ios, (unsigned int)nios);

	if (err < 0)
		for (size_t k = 0; k < nios; k++)
			if (ios[k].res >= 0 && (size_t)ios[k].res != ios[k].len)
				ios[k].res = err;
	atomic_fetch_add(&c->st.wb_ios, nios);
}

/*
 * Write back the dirty pages of @f in [@first, @last].  Returns 0 or the first
 * error this call met (which is also recorded in the file's errseq).  Dirty
 * pages held by UPC_PIN_NOWRITEBACK pins are skipped and counted in *@heldp.
 * With WB_VISIT, a thread that visits every file passes by one whose lock it
 * cannot take soon (file_lock_visit), or whose write-back it would wait
 * for: -EBUSY; its I/O may have been done then (wb_park, wb_io_offload).
 */
int writeback_range(struct upc_file *f, uint64_t first, uint64_t last, int how, uint64_t *heldp)
{
	struct upc_cache *c = f->cache;
	struct run *runs = NULL, *prot = NULL, *spans = NULL, *gaps = NULL;
	struct upc_io *ios = NULL;
	struct wb_done d;
	struct wb_ticket t = { -1 };
	size_t nr = 0, cap = 0, nios = 0, nprot = 0, pcap = 0, nspans = 0, ngaps = 0;
	uint64_t held0 = heldp ? *heldp : 0, gap;
	uint32_t now;
	int ret = 0, err, lost = 0;

	if (!(how & WB_VISIT)) {
		pthread_mutex_lock(&f->lock);
		wb_finish_parked(f);	/* (file_lock_visit ends them itself) */
		if (!(how & WB_SYNC)) {
			punch_reap(f);
		} else if (!punch_wait_captured(f, first, last)) {
			/*
			 * upcd stops with a write an eviction caught still out
			 * of the page table: said, as a write-back error, and
			 * the rest of the range written all the same (helper-66,
			 * helper-67).
			 */
			errseq_set(f, -EIO);
			lost = -EIO;
		}
	} else if (file_lock_visit(f) != 0) {
		return -EBUSY;
	} else if ((how & WB_SYNC) && punch_captured_busy(f, first, last)) {
		/* A sync's first pass (upcd's, files_walk) comes back to it, and then waits. */
		pthread_mutex_unlock(&f->lock);
		return -EBUSY;
	} else if (atomic_load(&f->wb_io_stuck) || (c->serving && !wb_io_reserve(c, f, &t))) {
		/*
		 * A visitor passes by a file whose last visitor's I/O still waits
		 * (wb_io_offload), and every file while all the I/O threads are
		 * taken, or all those of the file's account (by I/Os that wait,
		 * most likely: a visitor's I/O keeps a thread only a second
		 * otherwise), rather than do the I/O itself and wait in it
		 * (wbpark.c).  The place it took (@t) is given back at the end,
		 * unless its I/O took it.
		 */
		pthread_mutex_unlock(&f->lock);
		return -EBUSY;
	}
again:
	if (heldp)
		*heldp = held0;
	if (last >= f->npages)
		last = f->npages - 1;
	if (!f->npages || first > last)
		goto out_unlock;
	/* A data-integrity write waits for write-back in flight (wait_on_page_writeback). */
	if (how & WB_SYNC)
		while (has_writeback(f, first, last)) {
			/* A visitor waits for no file (its write-back may wait for a lock a client holds). */
			if (how & WB_VISIT) {
				pthread_mutex_unlock(&f->lock);
				wb_io_release(c, &t);
				return -EBUSY;
			}
			wb_wait(f);
		}
	/*
	 * A truncation or hole punch is changing the store's file without the
	 * lock (fileio.c, store_unlock): no write of its pages may land after
	 * it.  A data-integrity write waits for it, as the kernel's waits for
	 * i_rwsem (then looks again: the file may have shrunk), or, visiting
	 * every file, passes the file by to come back to it (files_walk); the
	 * others leave those pages dirty for a later pass.
	 */
	if ((how & WB_SYNC) && store_busy_in(f, first, last)) {
		if (how & WB_VISIT) {
			pthread_mutex_unlock(&f->lock);
			wb_io_release(c, &t);
			return -EBUSY;
		}
		while (store_busy_in(f, first, last))
			pthread_cond_wait(&f->wb_cond, &f->lock);
		goto again;
	}
	/* Async tracking: collecting the written PTEs also write-protects them (step 1). */
	track_collect(f, first, last);
	if (!f->nr_dirty)
		goto out_unlock;

	now = cache_ticks(c);
	for (uint64_t p = first; p <= last; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;
			continue;
		}
		if (!(pg->flags & PG_DIRTY) || (pg->flags & PG_WRITEBACK) || store_busy_in(f, p, p))
			continue;
		if (pg->flags & PG_NOWB) {
			if (heldp)
				(*heldp)++;
			continue;
		}
		if ((how & WB_EXPIRED) && !(pg->flags & PG_URGENT) && now - pg->dirtied < c->expire_ms)
			continue;
		ret = runs_add(&runs, &nr, &cap, p);
		/*
		 * A page pinned for a kernel or device write (UPC_PIN_WRITE) is
		 * written but neither protected nor cleaned while pinned: writes
		 * through the pin are not seen (seed 001), so it stays dirty, as
		 * the kernel keeps a page pinned for DMA dirty.
		 */
		if (ret == 0 && !(pg->flags & PG_PINWRITE))
			ret = runs_add(&prot, &nprot, &pcap, p);
		if (ret < 0)
			goto out_unlock;
	}
	if (!nr)
		goto out_unlock;

	if (__builtin_expect(c->debug & UPC_DBG_BREAK_I1, 0)) {
		/*
		 * UPC_DEBUG=break-i1, for tests only: the wrong order, clean
		 * and then protect, so that upc-trace --check has something
		 * to catch (tests/test_trace_check.c).
		 */
		clean_runs(f, runs, nr);
		if (c->track_mode == UPC_TRACK_SYNC)
			protect_runs(f, prot, nprot);
	} else {
		/* 1. protect every mapping; the ioctl returns after the TLB flush. */
		ret = c->track_mode == UPC_TRACK_SYNC ? protect_runs(f, prot, nprot) : 0;
		/*
		 * A forked child may hold writable PTEs of these pages that no
		 * protect reached yet (fork.c): let it join the rmap, then look
		 * at the pages again.  Its handler may need f->lock to join.
		 */
		if (ret == -EAGAIN || (ret == 0 && !fork_settled(f))) {
			pthread_mutex_unlock(&f->lock);
			fork_wait_settled(c);
			free(runs);
			free(prot);
			runs = prot = NULL;
			nr = cap = nprot = pcap = 0;
			ret = 0;
			if (!(how & WB_VISIT))
				pthread_mutex_lock(&f->lock);
			else if (file_lock_visit(f) != 0) {
				wb_io_release(c, &t);
				return -EBUSY;	/* nothing cleaned yet: passed by (wb_park) */
			}
			goto again;
		}
		if (ret < 0) {
			UPC_TRACE(error, "protect", ret, f, runs[0].start << UPC_PAGE_SHIFT);
			pr_warn("write-protect failed (%s): pages stay dirty\n", upc_strerror(ret));
			goto out_unlock;
		}
		/* 2. only now clean. */
		clean_runs(f, runs, nr);
	}
	/* 3. join runs across short clean gaps (clustering, above); no memory: unjoined. */
	gap = store_cluster_gap(c->store);
	if (!gap || cluster_runs(f, runs, nr, gap, &spans, &nspans, &gaps, &ngaps) < 0) {
		spans = runs;
		nspans = nr;
	}
	/* 3. build sorted, coalesced writes; the tail past EOF is never written. */
	for (size_t i = 0; i < nspans; i++)
		nios += (spans[i].n * UPC_PAGE_SIZE + UPC_WB_MAX_IO - 1) / UPC_WB_MAX_IO;
	ios = calloc(nios, sizeof(*ios));
	if (!ios) {
		ret = -ENOMEM;
		nios = 0;
	}
	for (size_t i = 0, k = 0; ios && i < nspans; i++) {
		uint64_t off = spans[i].start << UPC_PAGE_SHIFT;
		uint64_t end = min_t(uint64_t, (spans[i].start + spans[i].n) << UPC_PAGE_SHIFT, (uint64_t)f->size);

		while (off < end) {
			size_t len = min_t(uint64_t, end - off, UPC_WB_MAX_IO);

			ios[k++] = (struct upc_io){ .buf = f->base + off, .len = len, .off = (off_t)off };
			off += len;
		}
		nios = k;
	}
	pthread_mutex_unlock(&f->lock);
	d = (struct wb_done){ .runs = runs, .nr = nr, .gaps = gaps, .ngaps = ngaps, .ios = ios, .nios = nios,
			      .ret = ret };

	if (nios) {
		/* 3. submit: every page of these I/Os was cleaned above (upc-trace --check checks it). */
		if (UPC_PROBE_ENABLED(wb_submit))
			for (size_t k = 0; k < nios; k++)
				UPC_TRACE(wb_submit, f, ios[k].off, ios[k].len);
		if (!(how & WB_VISIT) || !c->serving)
			wb_submit(f, ios, nios);
		else if (wb_io_offload(f, &d, &t) == -EBUSY)
			goto handed;	/* to the I/O thread */
	}

	/*
	 * A visitor does not wait for the file's lock again either: a thread
	 * may have taken it during the I/O, to wait with it for the memfd's
	 * inode lock, which a client of upcd can hold as long as it likes
	 * (punch.c).  The completion is left to the file (wb_park); out of
	 * memory, it is waited for here, as before.  (UPC_DEBUG=visit-pause:
	 * a test takes the lock meanwhile.)
	 */
	if (__builtin_expect(c->debug & UPC_DBG_VISIT_PAUSE, 0) && (how & WB_VISIT) && c->serving)
		nanosleep(&(struct timespec){ .tv_sec = 1, .tv_nsec = 500000000 }, NULL);
	if (!(how & WB_VISIT) || file_lock_visit(f) != 0) {
		if ((how & WB_VISIT) && wb_park(f, &d) == 0)
			goto handed;	/* to the file */
		pthread_mutex_lock(&f->lock);
	}
	ret = wb_complete(f, &d);
out_unlock:
	pthread_mutex_unlock(&f->lock);
	wb_io_release(c, &t);	/* no I/O took the visitor's place */
	if (spans != runs)
		free(spans);
	free(gaps);
	free(runs);
	free(prot);
	free(ios);

	if ((how & WB_SYNC) && f->store_writable) {
		err = (how & WB_FSYNC) ? store_fsync(c->store, f->store_h) :
					 c->store->ops->sync(c->store, f->store_h);
		atomic_fetch_add(&c->st.syncs, 1);
		if (err < 0) {
			pthread_mutex_lock(&f->lock);
			errseq_set(f, err);
			pthread_mutex_unlock(&f->lock);
			if (!ret)
				ret = err;
		}
	}
	return ret ? ret : lost;
handed:
	/* The runs, gaps and I/Os are the I/O thread's or the parked record's now: passed by. */
	wb_io_release(c, &t);
	if (spans != runs)
		free(spans);
	free(prot);
	return -EBUSY;
}

UPC_API int upc_msync(struct upc_cache *c, void *addr, size_t length, int flags)
{
	uintptr_t start = (uintptr_t)addr, end, pos;
	struct upc_mm *mm;
	uint64_t held = 0;
	int ret = 0, err;
	bool kick = false;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_msync(c, addr, length, flags);

	if (!c || !length || (start & (UPC_PAGE_SIZE - 1)) || (flags & ~UPC_MS_FLAGS_ALL) ||
	    (flags & UPC_MS_FLAGS_ALL) == 0 || (flags & UPC_MS_FLAGS_ALL) == UPC_MS_FLAGS_ALL)
		return -EINVAL;
	end = start + pg_round_up(length);
	if (end <= start)
		return -EINVAL;
	mm = mm_current(c);
	pthread_rwlock_rdlock(&mm->lock);
	/* Like msync(2): -ENOMEM unless the range is wholly mapped. */
	for (pos = start; pos < end;) {
		struct upc_map *m = mm_find(mm, pos);

		if (!m) {
			ret = -ENOMEM;
			goto out;
		}
		pos = m->end;
	}
	for (pos = start; pos < end;) {
		struct upc_map *m = mm_find(mm, pos);
		struct upc_file *f = m->file;
		uint64_t first = m->pgoff + ((pos - m->start) >> UPC_PAGE_SHIFT);
		uint64_t last = m->pgoff + ((min_t(uintptr_t, end, m->end) - m->start) >> UPC_PAGE_SHIFT) - 1;

		if (flags & UPC_MS_SYNC) {
			err = writeback_range(f, first, last, WB_SYNC, &held);
		} else {
			err = 0;
			pthread_mutex_lock(&f->lock);
			track_collect(f, first, last);
			for (uint64_t p = first; p <= last && p < f->npages; p++) {
				struct upc_page *pg = pt_lookup(f, p);

				if (!pg) {
					p |= PT_CHUNK_PAGES - 1;
					continue;
				}
				if ((pg->flags & PG_DIRTY) && (pg->flags & PG_NOWB))
					held++;
				else if (pg->flags & PG_DIRTY) {
					pg->flags |= PG_URGENT;
					kick = true;
				}
			}
			pthread_mutex_unlock(&f->lock);
			if (kick && (c->flags & UPC_CACHE_NO_BGWB))
				err = writeback_range(f, first, last, 0, NULL);
		}
		pthread_mutex_lock(&f->lock);
		if (!err)
			err = errseq_check(f, &m->err_seen);
		else	/* this call's own error is the one it reports */
			m->err_seen = f->err_reported = f->err_seq;
		pthread_mutex_unlock(&f->lock);
		if (err && !ret)
			ret = err;
		pos = m->end;
	}
out:
	pthread_rwlock_unlock(&mm->lock);
	if (kick && !(c->flags & UPC_CACHE_NO_BGWB))
		bgwb_kick(c);
	if (ret == 0 && held)
		ret = held > INT32_MAX ? INT32_MAX : (int)held;
	return ret;
}

/* ------------------------------------------------------------ the flusher */

static void *bgwb_main(void *arg)
{
	struct upc_cache *c = arg;
	struct upc_file **files = NULL;
	size_t nf, cap = 0;
	const int how = WB_EXPIRED | WB_NOWAIT | WB_VISIT;
	bool all;

	pthread_mutex_lock(&c->wb_lock);
	while (!c->wb_stop) {
		if (!c->wb_kick) {
			cond_wait_ms(&c->wb_cond, &c->wb_lock, c->interval_ms);
		}
		if (c->wb_stop)
			break;
		c->wb_kick = false;
		all = c->wb_all;
		c->wb_all = false;
		pthread_mutex_unlock(&c->wb_lock);

		/*
		 * Each file is held while it is written: an unused one could be
		 * released meanwhile otherwise, and the put after its write-back
		 * is what releases one that is clean now (cache.c).
		 */
		pthread_mutex_lock(&c->lock);
		if (c->nr_files > cap) {
			struct upc_file **n = realloc(files, c->nr_files * sizeof(*n));

			if (n) {
				files = n;
				cap = c->nr_files;
			}
		}
		nf = 0;
		for (struct upc_file *f = c->files; f && nf < cap; f = f->next) {
			file_hold(f);
			files[nf++] = f;
		}
		pthread_mutex_unlock(&c->lock);
		/*
		 * (write-back collects async-tracked written pages itself.)  A
		 * file whose lock a thread holds while it waits for the memfd's
		 * inode lock, which an upcd client can hold as long as it likes
		 * (punch.c), is passed by until the next pass: it stalled the
		 * write-back of every other file.
		 */
		for (size_t i = 0; i < nf; i++) {
			/* a dirtier waits for its account (dirtylimit.c): all of that account's files, not every user's */
			writeback_range(files[i], 0, UINT64_MAX,
					(all && dirty_pressed(files[i])) ? how & ~WB_EXPIRED : how, NULL);
			file_put(files[i]);
		}

		pthread_mutex_lock(&c->wb_lock);
	}
	pthread_mutex_unlock(&c->wb_lock);
	free(files);
	return NULL;
}

int bgwb_start(struct upc_cache *c)
{
	int ret = pthread_create(&c->wb_thread, NULL, bgwb_main, c);

	if (ret)
		return -ret;
	pthread_setname_np(c->wb_thread, "upc-flush");
	c->wb_running = true;
	return 0;
}

static void bgwb_wake(struct upc_cache *c, bool all)
{
	pthread_mutex_lock(&c->wb_lock);
	c->wb_kick = true;
	c->wb_all |= all;
	pthread_cond_signal(&c->wb_cond);
	pthread_mutex_unlock(&c->wb_lock);
}

void bgwb_kick(struct upc_cache *c)
{
	bgwb_wake(c, false);
}

/* A dirtier waits for its account's pages (dirtylimit.c): the next pass writes every dirty page of such accounts' files. */
void bgwb_kick_all(struct upc_cache *c)
{
	bgwb_wake(c, true);
}

void bgwb_stop(struct upc_cache *c)
{
	if (!c->wb_running)
		return;
	pthread_mutex_lock(&c->wb_lock);
	c->wb_stop = true;
	pthread_cond_signal(&c->wb_cond);
	pthread_mutex_unlock(&c->wb_lock);
	pthread_join(c->wb_thread, NULL);
	c->wb_running = false;
}
