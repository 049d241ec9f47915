/* SPDX-License-Identifier: MIT */
/*
 * reclaim.c - page replacement and reclaim: the kernel's kswapd,
 * shrink_folio_list(), try_to_unmap() + mmu_gather, and drop_caches.
 *
 * Accessed bits.  A fault the kernel serves itself leaves no trace here, so
 * the engine samples PTE presence instead, the way MGLRU ages pages by
 * walking page tables: when the clock hand passes a page it asks
 * PAGEMAP_SCAN whether any mapping maps it, then tears those PTEs down.  A
 * page present at the next pass was accessed again in between.
 *
 * Replacement is a two-list CLOCK that resists scans (2Q): a page enters
 * inactive; it is promoted to active only when it is seen present on two
 * passes in a row, i.e. accessed again after a teardown.  Readahead maps
 * pages ahead of any access, so a readahead page's first presence only
 * clears PG_READAHEAD (the kernel, likewise, marks a readahead folio
 * accessed only when it is touched).  A page touched once
 * by a sequential scan is seen once and then evicted, so one pass over a
 * file many times the limit cannot push out a working set that is touched
 * again and again.  Active pages are demoted while the active list is over
 * half of the cache.  The active target is cache-wide (nr_active against
 * half of nr_cached), as the kernel balances its LRU lists per node.
 *
 * Freeing (I2, I3; seeds 003 and 000).  Victims are torn down in batches: one
 * MADV_DONTNEED per run and mapping (the mmu_gather), then the written state
 * the teardown collected is transferred to the page, then dirty is checked
 * again, and only then are clean pages punched out of the memfd, many per
 * fallocate(PUNCH_HOLE).  Under synchronous tracking the written state is
 * already in the descriptor: a write to a clean page traps and needs
 * file->lock, which reclaim holds from the check to the punch, so the writer
 * waits, finds the page gone, faults it in again and its write lands.
 * (upcd's reclaim thread lets go of file->lock before its punches
 * complete: the writer's fault then waits for them, handle_fault.)
 * Dirty, pinned (I6) and under-write-back pages are never freed.
 */
#include "internal.h"
#include "usdt.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCAN_BATCH	512	/* pages the hand passes per visit to a file */

/* A page that takes part in replacement: cached, not pinned, not in flight. */
static bool reclaimable(const struct upc_page *pg)
{
	return (pg->flags & PG_UPTODATE) && !pg->pincount && !(pg->flags & PG_WRITEBACK);
}

/*
 * PTE presence of file pages [first, first+n), as one byte per page: in
 * this process's mappings (@own), and in other processes' (@others: upcd's
 * clients; a forked child's mm has no pagemap here, and is not sampled).
 * In @others, ELSEWHERE_W marks a page a client maps writable under
 * asynchronous tracking, whose PTE that client must zap before a punch
 * (zap_elsewhere), and ELSEWHERE_HELD one a client maps so that cannot be
 * asked to (map_held): only capture.c takes such a page.
 */
struct presence {
	uint64_t first;
	uint8_t *present;
	uint8_t val;
};

static void mark_present(struct upc_file *f, uint64_t p, void *arg)
{
	struct presence *pr = arg;

	(void)f;
	pr->present[p - pr->first] |= pr->val;
}

static void presence_scan(struct upc_file *f, uint64_t first, uint64_t n, uint8_t *own, uint8_t *others)
{
	static const struct pm_scan_arg present_pages = {
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	/*
	 * A PTE being migrated (compaction) is a migration entry, which scans
	 * as swapped, not present: it maps the page again, writable as it was,
	 * when the migration ends.  Among swap-type entries it is the one of a
	 * file page (a uffd-wp marker is swap-type too, and names no page:
	 * walk_map, track.c, leaves those out).  Missed, such a page of a
	 * client that may write it unseen was a plain victim, punched with no
	 * zap and no copy (helper-65's review: with compaction running, 1-2
	 * of 4096 mapped pages missed in 3 % of scans).
	 */
	static const struct pm_scan_arg present_or_migrating = {
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE,
	};
	struct presence pown = { first, own, ELSEWHERE }, pothers = { first, others, ELSEWHERE };

	memset(own, 0, n);
	memset(others, 0, n);
	/*
	 * A failed scan leaves pages unseen: they only look less used.  But
	 * for another process's mapping under asynchronous tracking, where a
	 * page present there must be zapped first (shrink_file): the whole
	 * range counts as present there.
	 */
	for (struct upc_map *m = f->rmap; m; m = m->f_next) {
		bool mine = m->mm == &f->cache->self, unseen;
		uint64_t s = max_t(uint64_t, first, m->pgoff);
		uint64_t e = min_t(uint64_t, first + n, m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT));

		if (s >= e)
			continue;
		pothers.val = ELSEWHERE;
		unseen = !mine && m->mm->remote && m->wp && f->cache->track_mode == UPC_TRACK_ASYNC;
		if (unseen)
			pothers.val |= map_held(m) ? ELSEWHERE_HELD : ELSEWHERE_W;
		if (pagemap_walk_map(m, first, first + n - 1, unseen ? &present_or_migrating : &present_pages, mark_present,
				     mine ? &pown : &pothers) < 0 &&
		    !mine && f->cache->track_mode == UPC_TRACK_ASYNC)
			for (uint64_t i = s; i < e; i++)
				others[i - first] |= pothers.val;
	}
}

/*
 * Tear down this process's PTEs of @runs (and the staging mapping's): the
 * mmu_gather.  The pages stay in the memfd.  Afterwards every emptied PTE is
 * write-protected again (a uffd-wp marker), so that a kernel-served read
 * cannot map a clean page writable; that is done explicitly rather than
 * relying on the zap to leave markers behind.
 */
void teardown_runs(struct upc_file *f, const struct run *runs, size_t nr, bool staging)
{
	for (struct upc_map *m = f->rmap; m; m = m->f_next) {
		uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);

		if (m->mm != &f->cache->self)
			continue;
		for (size_t i = 0; i < nr; i++) {
			uint64_t s = max_t(uint64_t, runs[i].start, m->pgoff);
			uint64_t e = min_t(uint64_t, runs[i].start + runs[i].n, mend);

			if (s < e)
				madvise((void *)(m->start + ((s - m->pgoff) << UPC_PAGE_SHIFT)),
					(e - s) << UPC_PAGE_SHIFT, MADV_DONTNEED);
		}
	}
	if (staging)
		for (size_t i = 0; i < nr; i++)
			madvise(f->base + (runs[i].start << UPC_PAGE_SHIFT), runs[i].n << UPC_PAGE_SHIFT,
				MADV_DONTNEED);
	/*
	 * Async tracking: read the torn-down PTEs' written state back (an empty
	 * PTE was written, a marker was clean) and move it to the pages (I2).
	 * A re-access meanwhile traps as a MINOR fault and waits for f->lock.
	 * Sync tracking: write-protect the empty PTEs again.
	 */
	if (f->cache->track_mode == UPC_TRACK_ASYNC)
		for (size_t i = 0; i < nr; i++)
			track_collect(f, runs[i].start, runs[i].start + runs[i].n - 1);
	else
		protect_runs(f, runs, nr);
	if (UPC_PROBE_ENABLED(teardown) && nr) {
		uint64_t pages = 0;

		for (size_t i = 0; i < nr; i++)
			pages += runs[i].n;
		UPC_TRACE(teardown, f, runs[0].start, nr, pages);
	}
}

/* Is @p in @held (sorted), from run *@k on?  Moves *@k past the runs before @p. */
/* Does a client that does not answer map @f writable (map_unanswered)?  f->lock held.  (UPC_DEBUG=capture-pause) */
static bool held_unanswered(struct upc_file *f)
{
	for (struct upc_map *m = f->rmap; m; m = m->f_next)
		if (map_unanswered(m))
			return true;
	return false;
}

static bool in_runs(const struct run *held, size_t nh, size_t *k, uint64_t p)
{
	while (*k < nh && held[*k].start + held[*k].n <= p)
		(*k)++;
	return *k < nh && held[*k].start <= p;
}

/*
 * Free clean victims: tear down, re-check, punch, re-protect.  Returns the
 * pages freed.  With @unlocked (the reclaim thread of a serving cache) the
 * punches complete without file->lock (punch.c), and the pages are counted
 * cached until they do.  The victims in @held (sorted, a subset of @runs)
 * are mapped writable by clients that do not zap (shrink_file): they go
 * only as capture.c takes them, and only with @unlocked.  Caller holds
 * f->lock.
 */
uint64_t reclaim_runs(struct upc_file *f, struct run *runs, size_t nr, const struct run *held, size_t nh,
		      bool unlocked)
{
	struct upc_cache *c = f->cache;
	struct capture *capt = NULL;
	struct run *ok = NULL;
	size_t nok = 0, cap = 0, k = 0;
	uint64_t freed = 0;

	/* Copied before the last look (capture.c, step 1). */
	if (nh && unlocked && c->punch && !f->punch)
		capt = capture_start(f, held, nh);
	/* I2: tear every mapping down first; the written state moves to the page. */
	teardown_runs(f, runs, nr, true);
	/*
	 * I3: then re-check; a page dirty, pinned or in flight now is kept, and
	 * so is one a client that does not zap maps, unless it is taken
	 * (capture.c, step 2).  A capture spoiled on the way (a large folio
	 * in its pipe) is let go, and the look made again without it.
	 */
	for (int pass = 0; pass < 2; pass++) {
		nok = 0;
		k = 0;
		for (size_t i = 0; i < nr; i++)
			for (uint64_t p = runs[i].start; p < runs[i].start + runs[i].n; p++) {
				struct upc_page *pg = pt_lookup(f, p);

				if (!pg || !reclaimable(pg) || (pg->flags & PG_DIRTY))
					continue;
				if (in_runs(held, nh, &k, p) && !capture_take(capt, f, p))
					continue;
				if (runs_add(&ok, &nok, &cap, p) < 0)
					goto out;
			}
		if (!capture_spoiled(capt))
			break;
		capture_free(capt);
		capt = NULL;
	}
	if (!capture_overlaps(capt, 0, UINT64_MAX)) {	/* nothing taken: nothing to settle */
		capture_free(capt);
		capt = NULL;
	}
	/*
	 * UPC_DEBUG=capture-pause, tests only, once: a write between the last
	 * look and the punch by a client that does not answer (not one
	 * resting a while after a slow answer, which a loaded machine may make
	 * of any client).
	 */
	if (__builtin_expect(c->debug & UPC_DBG_CAPTURE_PAUSE, 0) && capt && held_unanswered(f) &&
	    !atomic_exchange(&c->capture_paused, true))
		usleep(1500000);
	/* UPC_DEBUG=drop-pause, tests only: a client's write between this last look and the punch. */
	if (__builtin_expect(c->debug & UPC_DBG_DROP_PAUSE, 0) && c->serving && nok)
		usleep(1500000);
	if (unlocked && nok && c->punch && !f->punch) {
		for (size_t i = 0; i < nok; i++)
			freed += ok[i].n;
		/* Out of the page table, still counted cached: queued first, as nothing can fail after. */
		if (punch_queue(f, ok, nok, freed, capt) < 0) {
			freed = 0;	/* no memory for the record: the victims stay cached this time */
			goto out;
		}
		for (size_t i = 0; i < nok; i++) {
			for (uint64_t p = ok[i].start; p < ok[i].start + ok[i].n; p++)
				page_remove(f, p);
			UPC_TRACE(evict, f, ok[i].start, ok[i].n);
		}
		atomic_fetch_add(&c->nr_cached, freed);
		/*
		 * The markers go back on the empty PTEs before the punch rather
		 * than after it: this process's PTEs were torn down above, and
		 * no fault maps these pages again before the chain completes
		 * (handle_fault waits for it).  A client's PTE that still maps
		 * one (synchronous tracking, shrink_file) is write-protected,
		 * as every clean page's is: a write traps and waits too; the
		 * punch zaps it, leaving a marker.  Under asynchronous tracking
		 * only a client that does not zap still maps one, and a write
		 * of it before the punch is caught in the page @capt holds
		 * (capture.c).
		 */
		protect_runs(f, ok, nok);
		atomic_fetch_add(&c->st.pages_evicted, freed);
		return freed;	/* @ok is the chain's */
	}
	for (size_t i = 0; i < nok; i++) {
		if (sys_punch(f->memfd, (off_t)(ok[i].start << UPC_PAGE_SHIFT),
			      (off_t)(ok[i].n << UPC_PAGE_SHIFT)) < 0) {
			ok[i].n = 0;
			continue;
		}
		for (uint64_t p = ok[i].start; p < ok[i].start + ok[i].n; p++)
			page_remove(f, p);
		/* upc-trace --check: none of these was dirty, pinned or under write-back (I3, I6). */
		UPC_TRACE(evict, f, ok[i].start, ok[i].n);
		freed += ok[i].n;
	}
	/*
	 * The punch zapped every PTE of those pages in every mapping.  Put the
	 * write-protect markers back on the empty PTEs, so that when a page
	 * comes back through another path (readahead into the staging mapping)
	 * a kernel-served read cannot map it writable.
	 */
	protect_runs(f, ok, nok);
	atomic_fetch_add(&c->st.pages_evicted, freed);
out:
	capture_free(capt);	/* (none here: taken only where the chain takes it) */
	free(ok);
	return freed;
}

/* Does a client map @f writable under asynchronous tracking (a write there need not trap)? */
static bool mapped_writable_elsewhere(struct upc_file *f)
{
	if (!f->cache->serving || f->cache->track_mode != UPC_TRACK_ASYNC)
		return false;
	for (struct upc_map *m = f->rmap; m; m = m->f_next)
		if (m->mm->remote && m->wp)
			return true;
	return false;
}

/*
 * The next window of victims to look at: from page *@first on, the first
 * page of @runs (sorted) there starts a window of up to SCAN_BATCH pages,
 * not past @npages; its victims go to @sub, clipped to it.  Returns how
 * many runs (0: no victim left), with *@first and *@n the window; *@i
 * moves past the runs that end before it.
 */
static size_t runs_window(const struct run *runs, size_t nr, size_t *i, uint64_t npages, uint64_t *first,
			  uint64_t *n, struct run *sub)
{
	size_t ns = 0;

	while (*i < nr && runs[*i].start + runs[*i].n <= *first)
		(*i)++;
	if (*i == nr)
		return 0;
	*first = max_t(uint64_t, *first, runs[*i].start);
	if (*first >= npages)
		return 0;
	*n = min_t(uint64_t, SCAN_BATCH, npages - *first);
	for (size_t j = *i; j < nr && runs[j].start < *first + *n; j++) {
		uint64_t s = max_t(uint64_t, runs[j].start, *first);
		uint64_t e = min_t(uint64_t, runs[j].start + runs[j].n, *first + *n);

		sub[ns++] = (struct run){ s, e - s };
	}
	return ns;
}

/*
 * The try_to_unmap of a drop's or an invalidation's clean victims (@runs,
 * sorted) that clients map writable under asynchronous tracking, as
 * shrink_file() makes it for its own: each such client zaps its PTEs of
 * them (zap.c, zap_elsewhere), and what they recorded is collected before
 * reclaim_runs() checks dirty again and punches (I2, I3).  Before this the
 * punch took such a page from under a clean PTE a write goes through
 * without a trap, and a write between the last look (track_collect) and
 * the punch was lost (upcd(8), BUGS): "dropping never drops dirty data"
 * (seed 000: Wilcox 2019).
 *
 * The zaps let go of f->lock; the last look, window by window, does not,
 * and the caller punches under that same hold: a page then present in no
 * client's writable mapping cannot be mapped there again before the punch
 * (every fault of such a mapping needs the lock, track.c).  A page still
 * present in one (a client that does not answer, map_held; one that
 * mapped it again meanwhile) is kept, taken out of @runs, as the kernel's
 * invalidate_mapping_pages() keeps a mapped folio.  A punch chain queued
 * while the lock was let go is waited for first (one a file, punch.c).
 *
 * The zaps wait for the clients' answers and for the file's lock again: a
 * visitor (@visit: the first pass of a drop of the whole cache, which must
 * not wait on one file) passes such a file by, to the second pass, which
 * waits (files_walk): -EBUSY, f->lock let go.  Otherwise 0, f->lock held.
 * Caller holds f->lock.
 */
int unmap_elsewhere(struct upc_file *f, struct run **runs, size_t *nr, bool visit)
{
	uint8_t present[SCAN_BATCH], elsewhere[SCAN_BATCH];
	struct run sub[SCAN_BATCH], *keep = NULL;
	size_t i, ns, nk = 0, kcap = 0;
	uint64_t first, n;
	bool asked = false;

	if (!*nr || !mapped_writable_elsewhere(f))
		return 0;
	if (visit) {
		pthread_mutex_unlock(&f->lock);
		return -EBUSY;
	}
	/* Ask, window by window: each client zaps what it maps writable of the victims. */
	for (i = 0, first = 0; (ns = runs_window(*runs, *nr, &i, f->npages, &first, &n, sub)); first += n) {
		presence_scan(f, first, n, present, elsewhere);
		if (zap_elsewhere(f, sub, ns, first, elsewhere, false))
			asked = true;	/* the lock was let go */
	}
	if (asked)
		punch_settle(f);
	/* The last look, without letting go of the lock from here to the punch. */
	for (i = 0, first = 0; (ns = runs_window(*runs, *nr, &i, f->npages, &first, &n, sub)); first += n) {
		presence_scan(f, first, n, present, elsewhere);
		for (size_t j = 0; j < ns; j++)
			for (uint64_t p = sub[j].start; p < sub[j].start + sub[j].n; p++)
				if (!(elsewhere[p - first] & (ELSEWHERE_W | ELSEWHERE_HELD)) &&
				    runs_add(&keep, &nk, &kcap, p) < 0)
					goto nomem;
	}
	free(*runs);
	*runs = keep;
	*nr = nk;
	return 0;
nomem:
	*nr = 0;	/* nothing is dropped this time */
	free(keep);
	return 0;
}

/*
 * One visit of the clock hand to @f: sample and age up to SCAN_BATCH cached
 * pages, free the clean victims, and start write-back of the dirty ones (they
 * are freed at a later pass, once clean).  Returns the pages freed.
 */
static uint64_t shrink_file(struct upc_file *f, uint64_t active_target, bool *wrapped)
{
	struct run *zap = NULL, *victims = NULL, *dirty = NULL, *held = NULL;
	size_t nzap = 0, zcap = 0, nv = 0, vcap = 0, nd = 0, dcap = 0, nh = 0, hcap = 0;
	uint8_t present[SCAN_BATCH], elsewhere[SCAN_BATCH];
	uint64_t first, n, freed = 0;
	bool stuck, async = f->cache->track_mode == UPC_TRACK_ASYNC;

	*wrapped = true;
	/* Not taken in time (upcd, punch.c): the clock passes the file by, and goes on with the others. */
	if (file_lock_visit(f) != 0)
		return 0;
	zap_settle(f);
	/* Before the victims are chosen: the wait lets go of the lock, and a fault could map one. */
	stuck = punch_pending(f);
	if (!f->nr_cached || !f->npages)
		goto out;
	if (f->hand >= f->npages)
		f->hand = 0;
	/* Skip empty chunks to the next cached page; at the end the hand moves to the next file. */
	while (!f->chunks[f->hand >> PT_CHUNK_SHIFT]) {
		f->hand = ((f->hand >> PT_CHUNK_SHIFT) + 1) << PT_CHUNK_SHIFT;
		if (f->hand >= f->npages) {
			f->hand = 0;
			goto out;
		}
	}
	*wrapped = false;
	first = f->hand;
	n = min_t(uint64_t, SCAN_BATCH, f->npages - first);
	presence_scan(f, first, n, present, elsewhere);
	/*
	 * Pages other processes map (upcd's clients).  Their PTEs cannot be
	 * torn down to sample access, as this process's are (process_madvise
	 * MADV_DONTNEED works only on the caller's own), so after a first
	 * look their presence says nothing more: such a page gets one pass of
	 * the hand as a second chance, then is evicted, and its PTEs go with
	 * it (try_to_unmap).  Where a write to a clean page traps (synchronous
	 * tracking: the writer waits for the punch, I1) or cannot happen (a
	 * read-only mapping), the punch tears them down.  Under asynchronous
	 * tracking a write goes through a clean PTE without a trap, and would
	 * be lost to a punch after the dirty check (I3): the client zaps its
	 * own PTEs first, and the written state they held is collected
	 * (zap_elsewhere).  A page a client maps that cannot be asked so
	 * (map_held) is taken from under it (capture.c).
	 */
	for (uint64_t i = 0; i < n; i++) {
		struct upc_page *pg = pt_lookup(f, first + i);

		if (!pg || !reclaimable(pg))
			continue;
		if (present[i])
			runs_add(&zap, &nzap, &zcap, first + i);
		if (pg->flags & PG_ACTIVE) {
			if (!present[i] && atomic_load(&f->cache->nr_active) > active_target) {
				pg->flags &= ~(PG_ACTIVE | PG_REFERENCED);
				f->nr_active--;
				atomic_fetch_sub(&f->cache->nr_active, 1);
			}
			continue;
		}
		/* Not one a client that cannot be asked maps: a write there is not seen (capture.c takes it). */
		if ((pg->flags & PG_LAZYFREE) && !(pg->flags & PG_DIRTY) && !(elsewhere[i] & ELSEWHERE_HELD)) {
			runs_add(&victims, &nv, &vcap, first + i);
			continue;
		}
		if ((present[i] || elsewhere[i]) && (pg->flags & PG_READAHEAD)) {
			/* Mapped ahead of any access: this presence says nothing yet. */
			pg->flags &= ~PG_READAHEAD;
			continue;
		}
		if (present[i]) {
			if (pg->flags & PG_REFERENCED) {
				pg->flags = (pg->flags & ~PG_REFERENCED) | PG_ACTIVE;
				f->nr_active++;
				atomic_fetch_add(&f->cache->nr_active, 1);
			} else {
				pg->flags |= PG_REFERENCED;
			}
			continue;
		}
		if (elsewhere[i] && !(pg->flags & PG_REFERENCED)) {
			pg->flags |= PG_REFERENCED;	/* the second chance (above) */
			continue;
		}
		pg->flags &= ~PG_REFERENCED;
		if (pg->flags & PG_DIRTY)
			runs_add(&dirty, &nd, &dcap, first + i);
		else
			runs_add(&victims, &nv, &vcap, first + i);
	}
	f->hand = first + n;
	if (f->hand >= f->npages) {
		f->hand = 0;
		*wrapped = true;
	}
	/* Sample again at the next pass: what is present then was accessed since. */
	teardown_runs(f, zap, nzap, false);
	if (nv && !stuck && async && f->cache->serving) {
		/*
		 * Victims clients map writable: zapped by them, then looked at
		 * again under the lock.  A page still present in such a
		 * mapping (its zap failed or was late, or a fault mapped it
		 * meanwhile) stays; one that is not cannot be mapped there
		 * again before the punch without file->lock (every fault of a
		 * writable mapping needs it: MINOR faults, track.c).  What
		 * read-only mappings map, the punch tears down.  What only
		 * clients that cannot be asked map goes as capture.c takes
		 * it (@held).
		 */
		struct run *gone = NULL;
		size_t ng = 0, gcap = 0;
		bool nomem = false;
		int asked = zap_elsewhere(f, victims, nv, first, elsewhere, true);

		if (asked < 0) {
			free(zap);
			free(victims);
			free(dirty);
			return 0;	/* not locked: dirty runs are written at a later pass */
		}
		if (asked)
			presence_scan(f, first, n, present, elsewhere);
		for (size_t i = 0; i < nv && !nomem; i++)
			for (uint64_t p = victims[i].start; p < victims[i].start + victims[i].n && !nomem; p++) {
				uint8_t e = elsewhere[p - first];

				if (!(e & ELSEWHERE_W))
					nomem = runs_add(&gone, &ng, &gcap, p) < 0 ||
						((e & ELSEWHERE_HELD) && runs_add(&held, &nh, &hcap, p) < 0);
			}
		if (nomem)
			ng = nh = 0;	/* nothing goes this time */
		free(victims);
		victims = gone;
		nv = ng;
		stuck = f->punch != NULL;	/* the lock was let go: a chain may have been queued */
	}
	if (nv && !stuck)
		freed = reclaim_runs(f, victims, nv, held, nh, true);
out:
	pthread_mutex_unlock(&f->lock);
	/* (a file whose lock is taken meanwhile by a thread waiting for its memfd: passed by, WB_VISIT) */
	for (size_t i = 0; i < nd; i++)
		writeback_range(f, dirty[i].start, dirty[i].start + dirty[i].n - 1, WB_NOWAIT | WB_VISIT, NULL);
	free(zap);
	free(victims);
	free(dirty);
	free(held);
	return freed;
}

/* Reclaim until the cache is under the low watermark, or no progress is possible.  Returns the pages freed. */
static uint64_t shrink_cache(struct upc_cache *c)
{
	unsigned int idle_rounds = 0;
	uint64_t total = 0;

	while (atomic_load(&c->nr_cached) > c->low_pages && idle_rounds < 3) {
		uint64_t freed = 0, active_target = atomic_load(&c->nr_cached) / 2;
		uint32_t nfiles;

		pthread_mutex_lock(&c->lock);
		nfiles = c->nr_files;
		pthread_mutex_unlock(&c->lock);
		/*
		 * One clock over all cached pages: the hand stays on a file until it
		 * wraps, then moves to the next, so every page is sampled as often as
		 * any other, whatever the size of its file.  A round is enough
		 * visits for the hand to go around the whole cache once.
		 */
		for (uint64_t v = 0; v < (uint64_t)nfiles + atomic_load(&c->nr_cached) / SCAN_BATCH + 1 &&
				     atomic_load(&c->nr_cached) > c->low_pages; v++) {
			struct upc_file *f;
			bool wrapped;

			pthread_mutex_lock(&c->lock);
			f = c->clock_file ? c->clock_file : c->files;
			c->clock_file = f;
			if (f)
				file_hold(f);	/* an unused file may be released meanwhile otherwise */
			pthread_mutex_unlock(&c->lock);
			if (!f)
				break;
			freed += shrink_file(f, active_target, &wrapped);
			if (wrapped) {
				pthread_mutex_lock(&c->lock);
				c->clock_file = f->next;
				pthread_mutex_unlock(&c->lock);
			}
			/* The last reference to an unused file with nothing left cached releases it. */
			file_put(f);
			zap_late_poll(c);	/* their clients' faults map dirty until then */
		}
		idle_rounds = freed ? 0 : idle_rounds + 1;
		total += freed;
		pthread_mutex_lock(&c->rc_lock);
		c->rc_passes++;
		pthread_cond_broadcast(&c->rc_done);
		pthread_mutex_unlock(&c->rc_lock);
	}
	return total;
}

/*
 * What every tick of the reclaim thread and every pass end with: the late
 * zaps looked at, what zaps and punches left to settle settled (not only
 * under the limit: their clients' faults map dirty until then), upcctl's
 * view refreshed.  Returns whether zaps are still late (zap_late_poll).
 */
static bool reclaim_settle(struct upc_cache *c)
{
	bool late = zap_late_poll(c);

	zap_settle_all(c);
	punch_settle_all(c);
	publish_tick(c);
	return late;
}

static void *reclaim_main(void *arg)
{
	struct upc_cache *c = arg;
	uint64_t freed;
	bool late = false;

	pthread_mutex_lock(&c->rc_lock);
	while (!c->rc_stop) {
		if (!c->rc_kick && atomic_load(&c->nr_cached) <= c->high_pages) {
			/* every 100 ms while zaps are late: their clients' faults map dirty until read */
			cond_wait_ms(&c->rc_cond, &c->rc_lock, late || c->rc_late ? 100 : 1000);
			c->rc_late = false;
			/*
			 * At least every second: release unused files that were
			 * unlinked or are past the bound (cache.c), and refresh
			 * upcctl's view (publish.c).  rc_lock is a leaf.
			 */
			pthread_mutex_unlock(&c->rc_lock);
			file_reap(c, true);
			files_unfence_stale(c);
			late = reclaim_settle(c);
			pthread_mutex_lock(&c->rc_lock);
			continue;
		}
		c->rc_kick = false;
		pthread_mutex_unlock(&c->rc_lock);
		freed = shrink_cache(c);
		file_reap(c, true);
		late = reclaim_settle(c);
		pthread_mutex_lock(&c->rc_lock);
		pthread_cond_broadcast(&c->rc_done);
		/*
		 * Over the limit and nothing freed (every page pinned, or dirty
		 * with its write-back passed by: upcd's I/O threads all waiting,
		 * wbpark.c): not round again at once, a busy loop, but at the
		 * next kick, or 100 ms on (review).
		 */
		if (!freed && !c->rc_stop && !c->rc_kick)
			cond_wait_ms(&c->rc_cond, &c->rc_lock, 100);
	}
	pthread_mutex_unlock(&c->rc_lock);
	return NULL;
}

/*
 * A drop or an invalidation left a late zap (zap.c, zap_late_add): the
 * reclaim thread's next tick is within 100 ms, whether it waits now or
 * not (a wake-up alone is lost on a thread that is not waiting yet).
 */
void reclaim_late(struct upc_cache *c)
{
	pthread_mutex_lock(&c->rc_lock);
	c->rc_late = true;
	pthread_cond_signal(&c->rc_cond);
	pthread_mutex_unlock(&c->rc_lock);
}

/* Wake the reclaim thread for a tick: the unused-file reaper (cache.c) and the rest of it. */
void reclaim_wake(struct upc_cache *c)
{
	pthread_mutex_lock(&c->rc_lock);
	pthread_cond_signal(&c->rc_cond);
	pthread_mutex_unlock(&c->rc_lock);
}

void reclaim_kick(struct upc_cache *c)
{
	pthread_mutex_lock(&c->rc_lock);
	c->rc_kick = true;
	pthread_cond_signal(&c->rc_cond);
	pthread_mutex_unlock(&c->rc_lock);
}

/*
 * The fault path's throttle: far over the limit (the reclaim thread is
 * behind), wait for it to make progress, for a bounded time, so that a cache
 * full of pinned or dirty pages slows faults down rather than stopping them.
 */
void reclaim_throttle(struct upc_cache *c)
{
	if (atomic_load(&c->nr_cached) < c->hard_pages)
		return;
	pthread_mutex_lock(&c->rc_lock);
	c->rc_kick = true;
	pthread_cond_signal(&c->rc_cond);
	for (int i = 0; i < 20 && atomic_load(&c->nr_cached) >= c->hard_pages; i++) {
		cond_wait_ms(&c->rc_done, &c->rc_lock, 10);
	}
	pthread_mutex_unlock(&c->rc_lock);
}

int reclaim_start(struct upc_cache *c)
{
	int ret;

	c->limit_pages = max_t(uint64_t, c->mem_limit >> UPC_PAGE_SHIFT, 64);
	c->high_pages = c->limit_pages;
	c->low_pages = c->limit_pages - max_t(uint64_t, c->limit_pages / 32, 16);
	c->hard_pages = c->limit_pages + c->limit_pages / 8 + c->ra_max;
	pthread_mutex_init(&c->rc_lock, NULL);
	pthread_cond_init(&c->rc_cond, NULL);
	pthread_cond_init(&c->rc_done, NULL);
	ret = pthread_create(&c->rc_thread, NULL, reclaim_main, c);
	if (ret)
		return -ret;
	pthread_setname_np(c->rc_thread, "upc-reclaim");
	c->rc_running = true;
	return 0;
}

void reclaim_stop(struct upc_cache *c)
{
	if (!c->rc_running) {
		zap_late_release(c);	/* (a drop's, in a cache with no reclaim thread) */
		return;
	}
	pthread_mutex_lock(&c->rc_lock);
	c->rc_stop = true;
	pthread_cond_signal(&c->rc_cond);
	pthread_mutex_unlock(&c->rc_lock);
	pthread_join(c->rc_thread, NULL);
	c->rc_running = false;
	zap_late_release(c);
	punch_stop(c);
}

/*
 * UPC_ADV_DONTNEED over [s, e) of mapping @m (file pages [first, last]):
 * zap this process's PTEs, skipping pinned pages (I6).  Cached data and
 * dirty state stay (I2, I5).  The PTEs are write-protected again afterwards:
 * a zapped poison marker (a failed read) or a zapped writable PTE leaves an
 * empty PTE, and a kernel-served read must not map a clean page writable.
 * Caller holds f->lock.
 */
int dontneed_piece(struct upc_map *m, uintptr_t s, uintptr_t e, uint64_t first, uint64_t last)
{
	struct upc_file *f = m->file;
	uint64_t p = first;
	int ret = 0;

	(void)e;
	while (p <= last && ret == 0) {
		uint64_t q = p;
		struct upc_page *pg;

		/* a run of unpinned pages */
		while (q <= last && !((pg = pt_lookup(f, q)) && pg->pincount))
			q++;
		if (q > p) {
			uintptr_t a = s + ((p - first) << UPC_PAGE_SHIFT);
			size_t len = (q - p) << UPC_PAGE_SHIFT;

			/*
			 * A client of upcd zaps its PTEs without the lock
			 * (mm_call_file()): a page pinned meanwhile is another
			 * mm's pin (this one's requests wait for this one), and
			 * another mm's pin keeps its own mapping, not ours.
			 * Under asynchronous tracking a written PTE zapped
			 * leaves an empty one, which scans as written (track.c),
			 * until a fault maps the page again, write-protected:
			 * the run is marked, and a fault in @m collects it
			 * before it maps anything (fault.c, handle_fault();
			 * review of edfc85e: a write before the DONTNEED was
			 * lost).
			 */
			bool mark = m->mm->remote && m->wp && f->cache->track_mode == UPC_TRACK_ASYNC;
			int r;

			if (mark) {
				m->zap_lo = p;
				m->zap_hi = q;
			}
			r = mm_call_file(f, m->mm, MM_CALL_MADVISE, a, len, MADV_DONTNEED);
			if (r < 0)
				ret = -EINVAL;
			/*
			 * Collected, or protected again, even when the call
			 * failed: a madvise(2) that fails part-way (a locked
			 * page, a hole) has zapped what came before (review of
			 * 98e3b21).
			 */
			if (!m->wp) {
				;	/* read-only: nothing to protect */
			} else if (f->cache->track_mode == UPC_TRACK_ASYNC) {
				track_collect(f, p, q - 1);	/* also re-protects */
			} else {
				/*
				 * EAGAIN: the process is forking, and the reader of
				 * its fork event may need file->lock (fork.c).  The
				 * range must end protected: let go, try again.
				 */
				while ((r = sys_uffd_wp(m->mm->uffd, a, len, true, false)) == -EAGAIN)
					fork_yield_file(f);
				if (r < 0 && !ret)
					ret = r;
			}
			if (mark)
				m->zap_lo = m->zap_hi = 0;
		}
		p = q + 1;	/* past the pinned page */
	}
	return ret;
}

/*
 * drop_caches, done right (I3, seed 000: Wilcox 2019): tear down first,
 * check dirty after.  One file of it: its clean pages, after its dirty ones
 * are written back with UPC_DROP_WRITEBACK.  The caller holds a reference
 * to @f.  Adds the pages dropped to *@dropped; returns 0 or the write-back
 * error (the clean pages are dropped all the same).  upc_drop() walks the
 * cache with it, and upcd the files a client maps (upcd(8): a client that
 * is not the administrator drops only its own files).
 */
int file_drop(struct upc_file *f, unsigned int flags, uint64_t *dropped)
{
	bool visit = flags & DROP_VISIT;
	struct run *runs = NULL;
	size_t nr = 0, cap = 0;
	int ret = 0;

	/* A visitor of every file (DROP_VISIT: files_walk) passes by one whose lock is not free: -EBUSY. */
	if (flags & UPC_DROP_WRITEBACK) {
		ret = writeback_range(f, 0, UINT64_MAX, WB_SYNC | (visit ? WB_VISIT : 0), NULL);
		if (ret == -EBUSY && visit)
			return ret;
	}
	if (!visit)
		pthread_mutex_lock(&f->lock);
	else if (file_lock_visit(f) != 0)
		return -EBUSY;
	/* One punch chain a file (punch.c): a visitor passes a file with one in flight by, others wait. */
	if (visit && punch_busy(f, 0, UINT64_MAX)) {
		pthread_mutex_unlock(&f->lock);
		return -EBUSY;
	}
	punch_settle(f);
	wb_finish_parked(f);	/* a parked write-back (wbpark.c) is not one in flight; after the wait */
	/*
	 * A readahead read in flight (control.c, fill_run) holds what the file
	 * had before the drop: the next touch must read the file again, so it
	 * is not inserted, as invalidate_mapping_pages() skips a locked folio
	 * only because its read is of the current data.
	 */
	file_store_changed(f);
	for (uint64_t p = 0; p < f->npages; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;
			continue;
		}
		if (reclaimable(pg) && !(pg->flags & PG_DIRTY) && runs_add(&runs, &nr, &cap, p) < 0)
			break;
	}
	/* What clients map writable under asynchronous tracking: zapped by them first. */
	if (unmap_elsewhere(f, &runs, &nr, visit) < 0) {
		free(runs);
		return -EBUSY;	/* passed by: the lock is let go */
	}
	*dropped += reclaim_runs(f, runs, nr, NULL, 0, true);
	if (!visit)
		punch_settle(f);	/* the punch, without the lock; a visitor does not wait for it */
	pthread_mutex_unlock(&f->lock);
	free(runs);
	return ret;
}

struct drop_walk {
	unsigned int flags;
	uint64_t dropped;
};

static int drop_one(struct upc_file *f, bool visit, void *arg)
{
	struct drop_walk *w = arg;

	return file_drop(f, w->flags | (visit ? DROP_VISIT : 0), &w->dropped);
}

UPC_API int upc_drop(struct upc_cache *c, unsigned int flags)
{
	struct drop_walk w = { flags, 0 };
	int err;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_drop(c, flags);

	if (!c || (flags & ~UPC_DROP_FLAGS_ALL))
		return -EINVAL;
	/*
	 * A file whose write-back fails keeps its dirty pages; the others are
	 * still dropped.  A file whose last page goes here, and that no
	 * mapping uses, is released by files_walk()'s put (cache.c).
	 */
	err = files_walk(c, drop_one, &w);
	if (err)
		return err;
	return w.dropped > INT32_MAX ? INT32_MAX : (int)w.dropped;
}
