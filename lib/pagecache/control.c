/* SPDX-License-Identifier: MIT */
/*
 * control.c - what a database asks of its page cache that the kernel's
 * never gave it: pin_user_pages() (upc_pin), madvise() (upc_advise) and
 * the asynchronous readahead worker behind UPC_ADV_WILLNEED.
 *
 * I6 (seed 004, Arcangeli 2005): a pinned page is never unmapped, evicted or
 * replaced while I/O into or out of it is in flight - "what you have to
 * prevent is the pte to be zeroed out, it must be kept writeable during the
 * whole I/O".  Here a pin is a count in the page descriptor, and every path
 * that tears down or frees (reclaim, drop, DONTNEED, PROT_NONE, unmap)
 * skips or refuses a page whose count is not zero.  A page pinned for a
 * kernel or device write (UPC_PIN_WRITE) is dirtied at pin and again at
 * unpin, since writes through a pin bypass write-protect tracking (seed
 * 001, Hubbard: gup + DMA is how a pinned page gets written unseen).
 *
 * I4 (seed 001, Hubbard/Wilcox 2021): a lazily freed page written again
 * before reclaim is dirty again and written back; page_set_dirty() clears
 * PG_LAZYFREE and reclaim re-checks dirty under file->lock before freeing.
 */
#include "internal.h"
#include "usdt.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PIN_PUNCH_WAIT_MS	1000	/* upc_pin: a punch in flight over the pages, waited for */

/* Walk [start, end) over this mm's mappings; -EINVAL unless wholly mapped.  mm->lock held. */
int mm_range_ok(struct upc_mm *mm, uintptr_t start, uintptr_t end)
{
	for (uintptr_t pos = start; pos < end;) {
		struct upc_map *m = mm_find(mm, pos);

		if (!m)
			return -EINVAL;
		pos = m->end;
	}
	return 0;
}

int range_args(struct upc_cache *c, void *addr, size_t length, uintptr_t *startp, uintptr_t *endp)
{
	uintptr_t start = (uintptr_t)addr, end;

	if (!c || !length || (start & (UPC_PAGE_SIZE - 1)))
		return -EINVAL;
	end = start + pg_round_up(length);
	if (end <= start)
		return -EINVAL;
	*startp = start;
	*endp = end;
	return 0;
}

static void piece(struct upc_map *m, uintptr_t start, uintptr_t end, uint64_t *first, uint64_t *last)
{
	uintptr_t s = max_t(uintptr_t, start, m->start), e = min_t(uintptr_t, end, m->end);

	*first = m->pgoff + ((s - m->start) >> UPC_PAGE_SHIFT);
	*last = m->pgoff + ((e - m->start) >> UPC_PAGE_SHIFT) - 1;
}

#define for_each_piece(mm_, m_, pos_, from_, to_) \
	for ((pos_) = (from_); (pos_) < (to_) && ((m_) = mm_find((mm_), (pos_))); (pos_) = (m_)->end)

/* Drop @n pins of file pages [first, last].  Caller holds f->lock. */
static void unpin_pages_n(struct upc_file *f, uint64_t first, uint64_t last, uint32_t n)
{
	UPC_TRACE(unpin, f, first, last - first + 1);
	for (uint64_t p = first; p <= last; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg || !pg->pincount)
			continue;
		pg->pincount -= (uint16_t)min_t(uint32_t, n, pg->pincount);
		if (pg->pincount)
			continue;
		f->nr_pinned--;
		atomic_fetch_sub(&f->cache->nr_pinned, 1);
		if (pg->flags & PG_PINWRITE) {
			trace_dirty(f, pg, p, 0, 0);
			page_set_dirty(f, pg);
		}
		pg->flags &= ~(PG_NOWB | PG_PINWRITE);
	}
	dirty_account(f);	/* upcd: pinned pages are not its account's (dirtylimit.c) */
	pthread_cond_broadcast(&f->wb_cond);
}

/* Drop one pin of file pages [first, last].  Caller holds f->lock. */
static void unpin_pages(struct upc_file *f, uint64_t first, uint64_t last)
{
	unpin_pages_n(f, first, last, 1);
}

/*
 * @mm is gone (a client of upcd that died or disconnected): every pin it
 * holds goes, as at upc_unpin() (see "Whose pins" above).  No lock held.
 */
void pins_release(struct upc_mm *mm)
{
	struct upc_pin_range *pins;
	size_t n;

	pthread_mutex_lock(&mm->pin_lock);
	pins = mm->pins;
	n = mm->npins;
	mm->pins = NULL;
	mm->npins = mm->pins_cap = 0;
	mm->nr_pinned = 0;
	pthread_mutex_unlock(&mm->pin_lock);
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&pins[i].f->lock);
		unpin_pages_n(pins[i].f, pins[i].first, pins[i].last, pins[i].count);
		pthread_mutex_unlock(&pins[i].f->lock);
	}
	free(pins);
}

/* ------------------------------------------------------------ whose pins */

/*
 * Whose pins.  A page's pin count (struct upc_page) says whether it may be
 * unmapped, evicted or written back (I6); who holds the pins is recorded
 * per address space, as the kernel's pin_user_pages() pins belong to the
 * caller and go when it unpins them or exits (seed 001, Hubbard: a pinned
 * page is the pinner's until it lets go).  So upcd releases a dead
 * client's pins (remote_detach), and a process unpins only what it pinned:
 * upc_unpin of a page another process pinned is -EINVAL, as for a page no
 * one pinned.
 *
 * The record is a sorted array of disjoint page ranges of a file with a
 * count each (an interval map): a pin adds one over its range, an unpin
 * takes one off, splitting a range at the call's edges and merging equal
 * neighbours again, so a run of pins of consecutive pages, or of one range
 * pinned many times, stays one entry.  Binary search finds the first range
 * a call touches; an insertion moves the tail of the array (memmove), so a
 * call costs O(log n + k) plus that move, for n ranges held and k touched.
 * Every call reserves its space first (at most k + 3 new entries), so that
 * it cannot fail half done.
 *
 * A range names its file without a reference: the pinning mm's own mapping
 * of the pages holds one, and cannot go while they are pinned (upc_unmap
 * and PROT_NONE refuse it, -EBUSY); at a client's death the pins are
 * released before its mappings (remote_detach), and an embedded cache's
 * destruction releases every pin with file_unpin_all() before anything
 * else.  Lock order: @pin_lock alone, never with file->lock held.
 */

/* The first range of @f that ends at or after @pgoff (or of a later file): its index. */
static size_t pins_find(const struct upc_mm *mm, const struct upc_file *f, uint64_t pgoff)
{
	size_t lo = 0, hi = mm->npins;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct upc_pin_range *r = &mm->pins[mid];

		if ((uintptr_t)r->f < (uintptr_t)f || (r->f == f && r->last < pgoff))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool pins_in(const struct upc_mm *mm, size_t i, const struct upc_file *f, uint64_t last)
{
	return i < mm->npins && mm->pins[i].f == f && mm->pins[i].first <= last;
}

/* Room for @extra more ranges.  Caller holds mm->pin_lock. */
static int pins_reserve(struct upc_mm *mm, size_t extra)
{
	struct upc_pin_range *n;
	size_t cap;

	if (mm->npins + extra <= mm->pins_cap)
		return 0;
	cap = max_t(size_t, max_t(size_t, 16, mm->pins_cap * 2), mm->npins + extra);
	n = realloc(mm->pins, cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	mm->pins = n;
	mm->pins_cap = cap;
	return 0;
}

static void pins_insert(struct upc_mm *mm, size_t i, struct upc_pin_range r)
{
	memmove(&mm->pins[i + 1], &mm->pins[i], (mm->npins - i) * sizeof(r));
	mm->pins[i] = r;
	mm->npins++;
}

static void pins_remove(struct upc_mm *mm, size_t i)
{
	memmove(&mm->pins[i], &mm->pins[i + 1], (mm->npins - i - 1) * sizeof(mm->pins[0]));
	mm->npins--;
}

/* No range of @f holds both page @at - 1 and page @at (one entry of room). */
static void pins_split(struct upc_mm *mm, struct upc_file *f, uint64_t at)
{
	size_t i;

	if (!at)
		return;
	i = pins_find(mm, f, at);
	if (i < mm->npins && mm->pins[i].f == f && mm->pins[i].first < at) {
		struct upc_pin_range r = mm->pins[i];

		mm->pins[i].last = at - 1;
		r.first = at;
		pins_insert(mm, i + 1, r);
	}
}

/* Equal neighbours of @f around [first, last] become one range again. */
static void pins_merge(struct upc_mm *mm, struct upc_file *f, uint64_t first, uint64_t last)
{
	size_t i = pins_find(mm, f, first ? first - 1 : 0);

	while (i + 1 < mm->npins && mm->pins[i].f == f && pins_in(mm, i + 1, f, last + 1)) {
		struct upc_pin_range *a = &mm->pins[i], *b = &mm->pins[i + 1];

		if (a->last + 1 == b->first && a->count == b->count) {
			a->last = b->last;
			pins_remove(mm, i + 1);
		} else {
			i++;
		}
	}
}

/* Ranges of @f that [first, last] touches. */
static size_t pins_touched(const struct upc_mm *mm, const struct upc_file *f, uint64_t first, uint64_t last)
{
	size_t n = 0;

	for (size_t i = pins_find(mm, f, first); pins_in(mm, i, f, last); i++)
		n++;
	return n;
}

/* @mm pins file pages [first, last] once more.  Caller holds mm->pin_lock and made room (pins_touched + 3). */
static void pins_add(struct upc_mm *mm, struct upc_file *f, uint64_t first, uint64_t last)
{
	uint64_t pos = first;
	size_t i;

	pins_split(mm, f, first);
	pins_split(mm, f, last + 1);
	i = pins_find(mm, f, first);
	while (pos <= last) {
		if (pins_in(mm, i, f, last) && mm->pins[i].first == pos) {
			mm->pins[i].count++;
			pos = mm->pins[i++].last + 1;
		} else {
			uint64_t end = pins_in(mm, i, f, last) ? mm->pins[i].first - 1 : last;

			pins_insert(mm, i++, (struct upc_pin_range){ .f = f, .first = pos, .last = end, .count = 1 });
			pos = end + 1;
		}
	}
	mm->nr_pinned += last - first + 1;
	pins_merge(mm, f, first, last);
}

/* Does @mm pin every page of [first, last] of @f?  Caller holds mm->pin_lock. */
static bool pins_cover(const struct upc_mm *mm, const struct upc_file *f, uint64_t first, uint64_t last)
{
	uint64_t pos = first;

	for (size_t i = pins_find(mm, f, first); pos <= last; i++) {
		if (!pins_in(mm, i, f, pos))
			return false;
		pos = mm->pins[i].last + 1;
	}
	return true;
}

/* One pin less of [first, last], which @mm pins (pins_cover).  Caller holds mm->pin_lock and made room (2). */
static void pins_del(struct upc_mm *mm, struct upc_file *f, uint64_t first, uint64_t last)
{
	size_t i;

	pins_split(mm, f, first);
	pins_split(mm, f, last + 1);
	for (i = pins_find(mm, f, first); pins_in(mm, i, f, last);)
		if (--mm->pins[i].count == 0)
			pins_remove(mm, i);
		else
			i++;
	mm->nr_pinned -= last - first + 1;
	pins_merge(mm, f, first, last);
}

static int fill_range(struct upc_cache *c, struct upc_file *f, uint64_t first, uint64_t last,
		      char *buf, uint64_t bufpages, bool ahead, const struct ra_target *t);
static int pins_record(struct upc_mm *mm, uintptr_t start, uintptr_t end);
static int pins_forget(struct upc_mm *mm, uintptr_t start, uintptr_t end);

/*
 * Pinning under UFFD_USER_MODE_ONLY.  MADV_POPULATE_* faults the range in
 * from kernel mode, and a user-mode-only userfaultfd does not serve kernel
 * faults: every MISSING, MINOR or write-protect fault it would have to serve
 * fails, and the madvise with it (EFAULT).  That is the very mode in which
 * pinning is how kernel-mode access is made safe (upcache.h), so upc_pin
 * then does from here what the faults would have done: pin_fill() reads the
 * uncached pages into the cache through the staging mapping, as the WILLNEED
 * worker does (fill_range); once they are pinned, under file->lock,
 * pin_map() maps them.  A page the store cannot read is -EFAULT, as a fault
 * that fails is for MADV_POPULATE_*: nothing is pinned, nothing is signalled.
 */
static int pin_fill(struct upc_cache *c, struct upc_map *m, uint64_t first, uint64_t last)
{
	struct upc_file *f = m->file;
	uint64_t n = min_t(uint64_t, last - first + 1, c->ra_max);
	bool beyond;
	char *buf;
	int ret;

	if (!(m->prot & PROT_READ))
		return -EFAULT;		/* PROT_NONE: no access to make safe */
	pthread_mutex_lock(&f->lock);
	beyond = last >= f->npages;
	pthread_mutex_unlock(&f->lock);
	if (beyond)
		return -EFAULT;		/* as a fault beyond end of file: SIGBUS */
	buf = mmap(NULL, n << UPC_PAGE_SHIFT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return -ENOMEM;
	ret = fill_range(c, f, first, last, buf, n, false, NULL);
	munmap(buf, n << UPC_PAGE_SHIFT);
	return ret < 0 ? -EFAULT : 0;
}

/*
 * Map [s, e) of @m, whose pages are cached and pinned (caller holds
 * file->lock, so reclaim cannot take them: nothing below can fault on a
 * page that is not cached, and so nothing waits for the fault handler).  A
 * writable mapping is registered MINOR: UFFDIO_CONTINUE maps the pages,
 * write-protected as the MINOR fault handler maps them (a clean page is
 * write-protected everywhere); EEXIST is a page mapped already.  Without
 * MINOR, a cached page is the kernel's to map, even under a uffd-wp marker:
 * MADV_POPULATE_READ then faults nothing to the handler.
 */
static int pin_map(struct upc_map *m, uintptr_t s, uintptr_t e)
{
	if (map_minor(m)) {
		/*
		 * Its client is zapping PTEs of this mm (struct upc_zapper):
		 * what it maps here could hide a write the zap emptied a PTE
		 * of, so the pages are made dirty and mapped writable, as a
		 * MINOR fault maps them meanwhile (fault.c, handle_minor).
		 */
		bool wp = !mm_zapping(m->mm);

		for (uintptr_t a = s; !wp && a < e; a += UPC_PAGE_SIZE)
			page_set_dirty(m->file, pt_lookup(m->file, m->pgoff + ((a - m->start) >> UPC_PAGE_SHIFT)));
		for (uintptr_t a = s; a < e;) {
			long r = sys_uffd_continue(m->mm->uffd, a, e - a, wp, false);

			if (r > 0) {
				a += (uintptr_t)r;
			} else if (r == -EEXIST) {
				a += UPC_PAGE_SIZE;
			} else if (r == -EAGAIN) {
				/*
				 * The process is forking: until its fork event is read
				 * (by a reader that may need file->lock, fork.c) the
				 * kernel refuses.  The pages are pinned: let go of the
				 * lock meanwhile.
				 */
				fork_yield_file(m->file);
			} else {
				return -EFAULT;
			}
		}
		return 0;
	}
	/*
	 * A client of upcd populates without the lock (mm_call_file()): the
	 * pages are pinned, so neither reclaim nor a truncation takes them
	 * meanwhile.
	 */
	return mm_call_file(m->file, m->mm, MM_CALL_MADVISE, s, e - s, MADV_POPULATE_READ) < 0 ? -EFAULT : 0;
}

UPC_API int upc_pin(struct upc_cache *c, void *addr, size_t length, unsigned int flags)
{
	struct upc_mm *mm = c ? mm_current(c) : NULL;
	uintptr_t start, end, pos, done;
	uint64_t first, last;
	struct upc_map *m;
	int ret, tries;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_pin(c, addr, length, flags);

	ret = range_args(c, addr, length, &start, &end);
	if (ret < 0 || (flags & ~UPC_PIN_FLAGS_ALL))
		return -EINVAL;
	pthread_rwlock_rdlock(&mm->lock);
	ret = mm_range_ok(mm, start, end);
	if (ret < 0)
		goto out;
	for_each_piece(mm, m, pos, start, end)
		if ((flags & UPC_PIN_WRITE) && !(m->prot & PROT_WRITE)) {
			ret = -EACCES;
			goto out;
		}
	if (atomic_load(&c->nr_pinned) + ((end - start) >> UPC_PAGE_SHIFT) > c->limit_pages) {
		ret = -ENOMEM;
		goto out;
	}

	for_each_piece(mm, m, pos, start, end) {
		struct upc_file *f = m->file;
		uintptr_t s = max_t(uintptr_t, start, m->start), e = min_t(uintptr_t, end, m->end);
		bool all = false;

		piece(m, start, end, &first, &last);
		/*
		 * Past end of file: -EFAULT, before any fault is taken (the
		 * handler's answer there is a SIGBUS for the thread, fault.c).
		 */
		pthread_mutex_lock(&f->lock);
		if (last >= f->npages)
			file_size_refresh(f);
		tries = last >= f->npages ? 8 : 0;
		pthread_mutex_unlock(&f->lock);
		if (tries)
			ret = -EFAULT;
		/*
		 * Fault the pages in, then pin them under the lock if they are
		 * all still there (reclaim may take one in between: try again).
		 */
		for (; tries < 8 && !all; tries++) {
			int adv = (flags & UPC_PIN_WRITE) ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
			bool by_hand = false;

			ret = mm_call(mm, MM_CALL_MADVISE, s, e - s, adv);
			if (ret == -EFAULT) {
				/* UFFD_USER_MODE_ONLY (or a read error, or end of file): see pin_fill(). */
				ret = pin_fill(c, m, first, last);
				by_hand = true;
			}
			if (ret < 0) {
				ret = -EFAULT;
				break;
			}
			pthread_mutex_lock(&f->lock);
			/*
			 * A truncation or hole punch is changing the store there
			 * without the lock (fileio.c, store_unlock): it checked
			 * for pins before (I6: -EBUSY) and drops the pages after,
			 * so a pin waits for it, then looks again (past the new
			 * end of file: -EFAULT).  It needs no mm->lock.
			 */
			if (store_busy_in(f, first, last)) {
				while (store_busy_in(f, first, last))
					pthread_cond_wait(&f->wb_cond, &f->lock);
				if (last >= f->npages) {
					pthread_mutex_unlock(&f->lock);
					ret = -EFAULT;
					break;
				}
			}
			all = true;
			for (uint64_t p = first; p <= last && all; p++)
				all = page_uptodate(f, p);
			/*
			 * A page's pin count is 16 bits: pinned UINT16_MAX times
			 * it is pinned no more, -ENOMEM, as the kernel's
			 * try_grab_folio() refuses a reference count that would
			 * overflow.  It wrapped to 0 before: the page's pins were
			 * counted as none, and a UPC_PIN_NOWRITEBACK one held its
			 * write-back for good, anyone's (upcd(8), BUGS; review of
			 * 417d8da: a client with a read-only descriptor could).
			 */
			for (uint64_t p = first; p <= last && all; p++)
				if (pt_lookup(f, p)->pincount == UINT16_MAX) {
					all = false;
					ret = -ENOMEM;
					tries = 8;
				}
			if (all)
				for (uint64_t p = first; p <= last; p++) {
					struct upc_page *pg = pt_lookup(f, p);

					if (!pg->pincount++) {
						f->nr_pinned++;
						atomic_fetch_add(&c->nr_pinned, 1);
					}
					if (flags & UPC_PIN_NOWRITEBACK)
						pg->flags |= PG_NOWB;
					if (flags & UPC_PIN_WRITE) {
						pg->flags |= PG_PINWRITE;
						trace_dirty(f, pg, p, 0, 0);
						page_set_dirty(f, pg);
					}
				}
			if (all)
				dirty_account(f);	/* upcd: pinned pages are not its account's (dirtylimit.c) */
			/*
			 * Filled by hand: map the pages now that they are pinned,
			 * and for a write pin make them writable - after they were
			 * marked dirty just above, under the same lock (I1: dirty
			 * before writable; writes through the pin are not seen).
			 */
			if (all && by_hand) {
				ret = pin_map(m, s, e);
				while (ret == 0 && (flags & UPC_PIN_WRITE) && m->wp) {
					int r = sys_uffd_wp(mm->uffd, s, e - s, false, false);

					if (r != -EAGAIN) {
						ret = r < 0 ? -EFAULT : 0;
						break;
					}
					/* Forking, as in pin_map(); a write pin is never cleaned meanwhile. */
					fork_yield_file(f);
				}
				if (ret < 0) {
					unpin_pages(f, first, last);
					all = false;
					tries = 8;	/* not a race with reclaim: give up */
				}
			}
			/*
			 * A write-back in flight may be reading these pages (a
			 * dirty one, or a clean one written in a gap between
			 * dirty ones, writeback.c): a write made after the pin
			 * could still reach the store through it, before the log
			 * the pin waits for.  So a UPC_PIN_NOWRITEBACK pin
			 * returns once none is in flight, as the kernel waits on
			 * PG_writeback for a stable page; none starts afterwards
			 * (PG_NOWB is set).
			 */
			if (all && (flags & UPC_PIN_NOWRITEBACK))
				while (has_writeback(f, first, last))
					wb_wait(f);
			/*
			 * A page upcd is punching (punch.c: an eviction, a
			 * truncation's or hole punch's drop) is out of the page
			 * table while a client's PTE may still map it: populating
			 * again would find that PTE and fault nothing, and the
			 * tries would run out before the punch lands.  So the
			 * next try waits for it, up to PIN_PUNCH_WAIT_MS (a chain
			 * can wait for a memfd's inode lock that a client holds,
			 * punch.c): then -EFAULT, as when the tries run out.
			 */
			if (!all && punch_busy(f, first, last)) {
				for (int w = 0; w < PIN_PUNCH_WAIT_MS / 5 && punch_busy(f, first, last) &&
						!atomic_load(&c->dying) && !atomic_load(&c->quitting); w++)
					cond_wait_ms(&f->wb_cond, &f->lock, 5);
				if (punch_busy(f, first, last))
					tries = 8;	/* still punching, or the cache is going */
			}
			pthread_mutex_unlock(&f->lock);
		}
		if (!all) {
			if (!ret)
				ret = -EFAULT;
			/* Undo the pieces already pinned: on failure nothing is pinned. */
			for_each_piece(mm, m, done, start, s) {
				uint64_t a, b;

				piece(m, start, s, &a, &b);
				pthread_mutex_lock(&m->file->lock);
				unpin_pages(m->file, a, b);
				pthread_mutex_unlock(&m->file->lock);
			}
			goto out;
		}
	}
	ret = pins_record(mm, start, end);
out:
	pthread_rwlock_unlock(&mm->lock);
	return ret;
}

/*
 * The pins upc_pin() just took over [start, end), recorded as this mm's
 * ("Whose pins").  Room first, for the worst case (each piece may touch the
 * ranges an earlier piece of the same file added): without it, -ENOMEM and
 * the pins are dropped again, so that a failed call pins nothing.  Caller
 * holds mm->lock.
 */
static int pins_record(struct upc_mm *mm, uintptr_t start, uintptr_t end)
{
	uint64_t first, last;
	struct upc_map *m;
	size_t room = 0;
	uintptr_t pos;
	int ret;

	pthread_mutex_lock(&mm->pin_lock);
	for_each_piece(mm, m, pos, start, end) {
		piece(m, start, end, &first, &last);
		room += pins_touched(mm, m->file, first, last) + 3;
	}
	ret = pins_reserve(mm, 2 * room);
	if (ret == 0)
		for_each_piece(mm, m, pos, start, end) {
			piece(m, start, end, &first, &last);
			pins_add(mm, m->file, first, last);
		}
	pthread_mutex_unlock(&mm->pin_lock);
	if (ret < 0)
		for_each_piece(mm, m, pos, start, end) {
			piece(m, start, end, &first, &last);
			pthread_mutex_lock(&m->file->lock);
			unpin_pages(m->file, first, last);
			pthread_mutex_unlock(&m->file->lock);
		}
	return ret;
}

/*
 * Take this mm's pins of [start, end) off its record: -EINVAL, and the
 * record unchanged, unless it pins every page (a page another process
 * pinned is not this one's to unpin).  Caller holds mm->lock.
 */
static int pins_forget(struct upc_mm *mm, uintptr_t start, uintptr_t end)
{
	uint64_t first, last;
	struct upc_map *m;
	size_t room = 0;
	uintptr_t pos, done;
	int ret;

	pthread_mutex_lock(&mm->pin_lock);
	for_each_piece(mm, m, pos, start, end) {
		piece(m, start, end, &first, &last);
		room += pins_touched(mm, m->file, first, last) + 5;
	}
	ret = pins_reserve(mm, 2 * room);
	for_each_piece(mm, m, pos, start, end) {
		if (ret < 0)
			break;
		piece(m, start, end, &first, &last);
		if (!pins_cover(mm, m->file, first, last)) {
			/* two mappings of one page in the range count twice: put back what went */
			for_each_piece(mm, m, done, start, pos) {
				piece(m, start, pos, &first, &last);
				pins_add(mm, m->file, first, last);
			}
			ret = -EINVAL;
			break;
		}
		pins_del(mm, m->file, first, last);
	}
	pthread_mutex_unlock(&mm->pin_lock);
	return ret;
}

UPC_API int upc_unpin(struct upc_cache *c, void *addr, size_t length)
{
	struct upc_mm *mm = c ? mm_current(c) : NULL;
	uintptr_t start, end, pos;
	uint64_t first, last;
	struct upc_map *m;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_unpin(c, addr, length);

	ret = range_args(c, addr, length, &start, &end);
	if (ret < 0)
		return ret;
	pthread_rwlock_rdlock(&mm->lock);
	ret = mm_range_ok(mm, start, end);
	if (ret < 0)
		goto out;
	/* Every page must be pinned by this mm, or nothing changes. */
	ret = pins_forget(mm, start, end);
	if (ret < 0)
		goto out;
	for_each_piece(mm, m, pos, start, end) {
		piece(m, start, end, &first, &last);
		pthread_mutex_lock(&m->file->lock);
		unpin_pages(m->file, first, last);
		pthread_mutex_unlock(&m->file->lock);
	}
out:
	pthread_rwlock_unlock(&mm->lock);
	return ret;
}

/* ------------------------------------------------------------ WILLNEED worker */

struct ra_work {
	struct ra_work *next;
	struct upc_file *file;		/* held (a reference) until the work is done */
	uint64_t first, last;
	struct ra_target target;	/* the mapping that asked for it, if any (fill_run) */
};

/*
 * Read the uncached pages of [first, last] into the cache through the staging
 * mapping, @bufpages at a time through @buf.  A pin's fill (pin_fill, @ahead
 * false) holds file->lock across each read, as the fault path holds it (the
 * page lock of the kernel's readahead).  Readahead (@ahead: WILLNEED, a
 * fault's asynchronous windows, the workers' only) lets go of it across the
 * read, so that two workers, or a worker and a fault, read at once; see
 * fill_run() for what stands in for the lock.  Readahead pages are marked
 * PG_READAHEAD and counted as such; a pin's fill is an access.  Returns 0,
 * or the error of the read that failed (-EIO for one that read nothing, or
 * less than a page without reaching end of file): the pages before it are
 * cached, the others not.
 */
static int fill_range(struct upc_cache *c, struct upc_file *f, uint64_t first, uint64_t last,
		      char *buf, uint64_t bufpages, bool ahead, const struct ra_target *t)
{
	for (uint64_t p = first; p <= last;) {
		long r;

		reclaim_throttle(c);
		/*
		 * Readahead is a guess, and gives way under pressure, as the
		 * kernel's does (readahead_gfp_mask(): __GFP_NORETRY): with
		 * the cache still over limit + limit/8 after the throttle
		 * (reclaim is behind), the rest is left to the faults.  So the
		 * worker ends at the hard margin at most, and the cache goes
		 * past it only by the window of a fault that passed the
		 * throttle (hard_pages + ra_max).  Without this the worker's
		 * window and a fault's could both be read past it: a scan under
		 * a 4 MiB limit peaked at 1691 pages, 283 past the hard margin
		 * of 1408 (ra_max 256), in a CI-like run of the suite
		 * (test_eviction, once in about 570 runs).  The pages the
		 * other worker is reading, without file->lock, count as
		 * cached (c->ra_reading); two workers that check at the same
		 * instant can still both pass, one window more.
		 */
		if (ahead && atomic_load(&c->nr_cached) + atomic_load(&c->ra_reading) + bufpages > c->hard_pages)
			return 0;
		pthread_mutex_lock(&f->lock);
		if (!ahead && !punch_wait(f, p, last, NULL)) {
			pthread_mutex_unlock(&f->lock);
			return -EIO;	/* the cache is going */
		}
		r = fill_run(f, &p, last, buf, bufpages, ahead, t);
		pthread_mutex_unlock(&f->lock);
		if (r > 0 && atomic_load(&c->nr_cached) > c->high_pages)
			reclaim_kick(c);
		if (r <= 0)
			return (int)r;
		p += (uint64_t)r;
	}
	return 0;
}

/* Is a page of [first, last] being read by a readahead worker without f->lock?  Caller holds it. */
bool fill_busy(const struct upc_file *f, uint64_t first, uint64_t last)
{
	for (unsigned int i = 0; i < f->nr_fill_busy; i++)
		if (f->fill_busy[i].first <= last && first <= f->fill_busy[i].last)
			return true;
	return false;
}

/*
 * One read of fill_range(), with f->lock held (upc_pread and upc_pwrite
 * call it too, fileio.c): skip the cached pages from *@pp, then read the run
 * of uncached pages that starts there (at most @bufpages, up to @last and
 * end of file) into @buf and insert it.  *@pp is left at the run's first
 * page.  Returns the pages inserted, 0 if there was nothing to read (cached
 * up to @last, or end of file), or a negative errno (nothing inserted).
 *
 * Readahead (@ahead) lets go of f->lock across the store's read and takes
 * it again before it returns.  What the lock did for the read, two things
 * do instead:
 *  - the run is listed in f->fill_busy while it is read: another worker
 *    skips it, and a MISSING fault on one of its pages waits for the read
 *    (fault.c, handle_missing), as on the kernel's locked page, instead of
 *    reading it again;
 *  - the read is inserted only if f->store_gen has not moved since it was
 *    started.  What the lock kept from happening is a page faulted in
 *    (by a path that does not wait: upc_pwrite, a pin), written, written
 *    back and evicted while the read is in flight, and the read's older
 *    data inserted afterwards as an uptodate page; a completed write-back
 *    moves store_gen before any eviction can follow it, and so do a
 *    truncate, a hole, an extension, upc_invalidate, upc_drop and a
 *    shrink seen behind the cache's back (file_store_changed()): each
 *    promises that the next touch reads the file again.  A page
 *    that became uptodate meanwhile and is still there is kept, not
 *    overwritten (staging_insert skips it).  Nor is one evicted meanwhile
 *    whose hole punch upcd's punch thread has not made yet (punch.c):
 *    it is still there too, and would be skipped and taken away after.
 *    A read that lost either race is started again (without the pages
 *    being punched), twice at most, and then left to the faults.
 * A store handle swapped meanwhile (file_get: a writable one) is closed
 * by the last listed read, which may still be using it.
 */
long fill_run(struct upc_file *f, uint64_t *pp, uint64_t last, char *buf, uint64_t bufpages, bool ahead,
	      const struct ra_target *t)
{
	struct upc_cache *c = f->cache;
	uint64_t p, n, full, gen = 0;
	unsigned int tries = 0;
	bool unlocked;
	struct upc_io io;
	size_t skipped;
	long r;
	int ret;

again:
	p = *pp;
	n = 0;
	if (!f->npages)
		return 0;
	if (last >= f->npages)
		last = f->npages - 1;
	/*
	 * Readahead leaves out what another worker reads and what upcd's
	 * reclaim thread is still punching (punch.c); a fill that must read
	 * waited for the punches before (punch_wait), and holds the lock.
	 */
	while (p <= last && (page_uptodate(f, p) || (ahead && (fill_busy(f, p, p) || punch_busy(f, p, p)))))
		p++;
	*pp = p;
	while (p + n <= last && n < bufpages && !page_uptodate(f, p + n) &&
	       !(ahead && fill_busy(f, p + n, p + n)) && !punch_busy(f, p + n, p + n))
		n++;
	if (!n && p <= last && punch_busy(f, p, p))
		return -EBUSY;	/* a punch in flight the caller did not wait for: a bug */
	if (!n || (p << UPC_PAGE_SHIFT) >= (uint64_t)f->size)
		return 0;
	io = (struct upc_io){
		.buf = buf,
		.len = min_t(uint64_t, n << UPC_PAGE_SHIFT, (uint64_t)f->size - (p << UPC_PAGE_SHIFT)),
		.off = (off_t)(p << UPC_PAGE_SHIFT),
	};
	atomic_fetch_add(&c->st.fill_ios, 1);
	UPC_TRACE(fill_submit, f, io.off, io.len);
	unlocked = ahead && f->nr_fill_busy < RA_WORKERS;
	if (unlocked) {
		void *h = f->store_h;

		f->fill_busy[f->nr_fill_busy].first = p;
		f->fill_busy[f->nr_fill_busy].last = p + n - 1;
		f->nr_fill_busy++;
		gen = f->store_gen;
		atomic_fetch_add(&c->ra_reading, n);
		pthread_mutex_unlock(&f->lock);
		ret = c->store->ops->submit(c->store, h, UPC_IO_READ, &io, 1);
		pthread_mutex_lock(&f->lock);
		atomic_fetch_sub(&c->ra_reading, n);
		for (unsigned int i = 0; i < f->nr_fill_busy; i++) {
			if (f->fill_busy[i].first != p)
				continue;
			f->fill_busy[i] = f->fill_busy[--f->nr_fill_busy];
			break;
		}
		if (!f->nr_fill_busy && f->stale_store_h) {
			c->store->ops->close(c->store, f->stale_store_h);
			f->stale_store_h = NULL;
		}
		pthread_cond_broadcast(&f->wb_cond);
		/*
		 * Or a page of the run was filled meanwhile (a fault, a
		 * pread), evicted, and its punch is in flight: the copy would
		 * find the page still there (EEXIST), take it as inserted, and
		 * the punch would then take it away (punch.c).
		 */
		if (gen != f->store_gen || punch_busy(f, p, p + n - 1)) {
			UPC_TRACE(fill_done, f, io.off, io.len, -ESTALE);
			if (++tries > 2)
				return 0;
			goto again;
		}
	} else {
		ret = c->store->ops->submit(c->store, f->store_h, UPC_IO_READ, &io, 1);
	}
	/*
	 * Nothing read: the file may have shrunk below @p (fill_valid() asks):
	 * then end of file; or the pages lie past the end of a store that a
	 * write past end of file has not grown yet: a hole (fill_valid).
	 */
	full = fill_valid(f, ret, &io);	/* 0 for a failed read */
	if (ret == 0 && io.res == 0 && io.off >= f->size) {
		UPC_TRACE(fill_done, f, io.off, io.len, 0);
		return 0;
	}
	if (ret < 0 || (io.res <= 0 && !full)) {
		ret = ret < 0 ? ret : io.res < 0 ? (int)io.res : -EIO;
		UPC_TRACE(fill_done, f, io.off, io.len, ret);
		UPC_TRACE(error, ahead ? "readahead" : "fill", ret, f, io.off);
		return ret;
	}
	UPC_TRACE(fill_done, f, io.off, io.len, io.res);
	n = min_t(uint64_t, n, full);
	if (!n)
		r = -EIO;
	else if (t)
		r = ra_map_insert(f, t, p, n, buf);
	else
		r = staging_insert(f, p, n, buf, &skipped);
	for (uint64_t i = 0; r > 0 && i < (uint64_t)r; i++) {
		struct upc_page *pg = pt_get(f, p + i);

		if (pg && !(pg->flags & PG_UPTODATE)) {
			page_add(f, p + i, pg);
			atomic_fetch_add(&c->st.pages_filled, 1);
			if (ahead) {
				pg->flags |= PG_READAHEAD;
				atomic_fetch_add(&c->st.ra_pages, 1);
			}
		}
	}
	return r == 0 ? -EIO : r;
}

/* A readahead worker; RA_WORKERS of them share the queue. */
static void *ra_main(void *arg)
{
	struct upc_cache *c = arg;
	char *buf = mmap(NULL, (size_t)c->ra_max * UPC_PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	pthread_mutex_lock(&c->ra_lock);
	while (!c->ra_stop) {
		struct ra_work *w = c->ra_queue;

		if (!w) {
			pthread_cond_wait(&c->ra_cond, &c->ra_lock);
			continue;
		}
		c->ra_queue = w->next;
		c->ra_len--;
		pthread_mutex_unlock(&c->ra_lock);
		/* Best effort: a page it could not read is read again by its fault. */
		if (buf != MAP_FAILED)
			(void)fill_range(c, w->file, w->first, w->last, buf, c->ra_max, true,
					 w->target.mm ? &w->target : NULL);
		file_put(w->file);
		free(w);
		pthread_mutex_lock(&c->ra_lock);
		c->ra_done++;
		pthread_cond_broadcast(&c->ra_cond);
	}
	pthread_mutex_unlock(&c->ra_lock);
	if (buf != MAP_FAILED)
		munmap(buf, (size_t)c->ra_max * UPC_PAGE_SIZE);
	return NULL;
}

/*
 * Is every page of [first, last] (up to end of file) cached?  Caller holds
 * f->lock.
 */
static bool ra_range_cached(struct upc_file *f, uint64_t first, uint64_t last)
{
	if (last >= f->npages)
		last = f->npages - 1;
	for (uint64_t p = first; p <= last && f->npages; p++)
		if (!page_uptodate(f, p))
			return false;
	return true;
}

/*
 * Queue [first, last] of @f for the readahead worker.  Caller holds f->lock
 * and a reference to @f (a mapping).
 *
 * Work of @f still queued whose pages are all cached now is dropped first:
 * a scan whose background window was not started by the time it got there
 * read that window itself, in its MISSING fault, and queues the next one
 * from there.  Left in the queue it does nothing if the worker gets to it
 * at once; if the worker is starved of CPU (the scan's faults wait on the
 * store, the worker waits on the scheduler), a backlog of such windows
 * builds up, one per window of the scan, and is worked off after the scan
 * has moved on and reclaim has taken those pages: each is read a second
 * time, for nothing, and pushes the cache over its limit, in the middle of
 * whatever the application does next.  Under CI's load (two test programs
 * of two cases each on two vCPUs) a 64 MiB scan under an 8 MiB limit left
 * five such windows (2560 pages) to be read after it ended, with the cache
 * at 3584 pages against a hard margin of 2816 (test_eviction's hot-set
 * case counted them as hot pages read again).  The kernel has no such
 * queue: page_cache_async_ra() submits its reads at once.
 *
 * At most RA_QUEUE_MAX windows wait: past them the window is not queued,
 * -ENOSPC (readahead is a hint; the fault that gets there reads it).  In
 * upcd the workers are every client's, and a read of a file can wait as
 * long as a client likes (a FUSE file it serves; XFS's reads behind a
 * write holding the inode lock, wbpark.c): a client that asked for such a
 * file's windows again and again (UPC_ADV_WILLNEED) grew the queue without
 * bound, a file reference and an allocation each, and every queueing walked
 * it (review of 417d8da).
 */
int ra_queue(struct upc_cache *c, struct upc_file *f, uint64_t first, uint64_t last, const struct upc_map *m)
{
	struct ra_work *w = calloc(1, sizeof(*w)), **pp, *stale;
	int ret = 0;

	if (!w)
		return -ENOMEM;
	*w = (struct ra_work){ .file = f, .first = first, .last = last };
	/*
	 * A scan of this process's own mapping gets the window mapped too
	 * (fault.c, ra_map_insert).  Not a forked child's mm, nor a daemon's
	 * file: there a thread woken by the copy before PG_UPTODATE may write
	 * into a page a killed daemon's successor calls uncached (handle_missing).
	 */
	if (m && m->mm == &c->self && !f->state_hdr && first >= m->pgoff &&
	    first < m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT))
		w->target = (struct ra_target){ .mm = m->mm, .first = first,
						.addr = m->start + ((first - m->pgoff) << UPC_PAGE_SHIFT) };
	pthread_mutex_lock(&c->ra_lock);
	/*
	 * The cache is being destroyed (ra_stop() has run): a fault still
	 * served before the handlers stop must not start a worker that would
	 * see ra_stop, exit without the work and never be joined.
	 */
	if (c->ra_stop) {
		pthread_mutex_unlock(&c->ra_lock);
		free(w);
		return -ECANCELED;
	}
	while (c->ra_running < RA_WORKERS) {
		ret = pthread_create(&c->ra_thread[c->ra_running], NULL, ra_main, c);
		if (ret) {
			if (c->ra_running)
				break;	/* one worker serves, reading one window at a time */
			pthread_mutex_unlock(&c->ra_lock);
			free(w);
			return -ret;
		}
		pthread_setname_np(c->ra_thread[c->ra_running], "upc-readahead");
		c->ra_running++;
	}
	w->next = NULL;
	file_hold(f);	/* the caller's mapping holds one: no lock needed (internal.h) */
	pp = &c->ra_queue;
	while (*pp) {
		if ((*pp)->file != f || !ra_range_cached(f, (*pp)->first, (*pp)->last)) {
			pp = &(*pp)->next;
			continue;
		}
		stale = *pp;
		*pp = stale->next;
		file_put(f);	/* not the last reference: the caller holds one */
		free(stale);
		c->ra_done++;
		c->ra_len--;
	}
	if (c->ra_len >= RA_QUEUE_MAX) {
		pthread_mutex_unlock(&c->ra_lock);
		file_put(f);
		free(w);
		return -ENOSPC;
	}
	*pp = w;
	c->ra_len++;
	c->ra_queued++;
	pthread_cond_broadcast(&c->ra_cond);
	pthread_mutex_unlock(&c->ra_lock);
	return 0;
}

void ra_stop(struct upc_cache *c)
{
	pthread_mutex_lock(&c->ra_lock);
	c->ra_stop = true;
	pthread_cond_broadcast(&c->ra_cond);
	pthread_mutex_unlock(&c->ra_lock);
	for (unsigned int i = 0; i < c->ra_running; i++)
		pthread_join(c->ra_thread[i], NULL);
	while (c->ra_queue) {
		struct ra_work *w = c->ra_queue;

		c->ra_queue = w->next;
		file_put(w->file);	/* the cache is being destroyed: just a decrement */
		free(w);
	}
	c->ra_len = 0;
	c->ra_running = 0;
}

/* ------------------------------------------------------------ advice */

UPC_API int upc_advise(struct upc_cache *c, void *addr, size_t length, int advice)
{
	struct upc_mm *mm = c ? mm_current(c) : NULL;
	uintptr_t start, end, pos;
	uint64_t first, last;
	struct upc_map *m;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_advise(c, addr, length, advice);

	ret = range_args(c, addr, length, &start, &end);
	if (ret < 0 || advice < UPC_ADV_NORMAL || advice > UPC_ADV_FREE)
		return -EINVAL;
	pthread_rwlock_rdlock(&mm->lock);
	ret = mm_range_ok(mm, start, end);
	if (ret < 0)
		goto out;

	switch (advice) {
	case UPC_ADV_NORMAL:
	case UPC_ADV_RANDOM:
	case UPC_ADV_SEQUENTIAL:
		/* Per mapping, as the kernel's per-VMA VM_RAND_READ / VM_SEQ_READ. */
		for_each_piece(mm, m, pos, start, end) {
			pthread_mutex_lock(&m->file->lock);
			m->ra_policy = advice;
			m->ra_win = 0;
			pthread_mutex_unlock(&m->file->lock);
		}
		break;
	case UPC_ADV_WILLNEED:
		for_each_piece(mm, m, pos, start, end) {
			piece(m, start, end, &first, &last);
			pthread_mutex_lock(&m->file->lock);
			ret = ra_queue(c, m->file, first, last, NULL);	/* read, not mapped: madvise(2)'s WILLNEED */
			pthread_mutex_unlock(&m->file->lock);
			if (ret == -ENOSPC) {
				ret = 0;	/* the queue is full: a hint not taken, as madvise(2)'s */
				break;
			}
			if (ret < 0)
				break;
		}
		break;
	case UPC_ADV_DONTNEED:
		for_each_piece(mm, m, pos, start, end) {
			struct upc_file *f = m->file;
			uintptr_t s = max_t(uintptr_t, start, m->start), e = min_t(uintptr_t, end, m->end);

			piece(m, start, end, &first, &last);
			pthread_mutex_lock(&f->lock);
			/*
			 * Nothing is mapped past end of file (map.c): the part of a
			 * large map past it is left alone, for it would take page
			 * tables to write-protect again.
			 */
			if (last >= f->npages) {
				last = f->npages - 1;
				e = m->start + ((f->npages - m->pgoff) << UPC_PAGE_SHIFT);
			}
			if (first < f->npages)
				ret = dontneed_piece(m, s, e, first, last);
			pthread_mutex_unlock(&f->lock);
			if (ret < 0)
				break;
		}
		break;
	case UPC_ADV_FREE:
		for_each_piece(mm, m, pos, start, end) {
			piece(m, start, end, &first, &last);
			pthread_mutex_lock(&m->file->lock);
			for (uint64_t p = first; p <= last && p < m->file->npages && ret == 0; p++) {
				struct upc_page *pg = pt_lookup(m->file, p);

				if (pg && pg->pincount)
					ret = -EBUSY;
			}
			pthread_mutex_unlock(&m->file->lock);
			if (ret < 0)
				goto out;
		}
		for_each_piece(mm, m, pos, start, end) {
			struct upc_file *f = m->file;
			struct run r;

			piece(m, start, end, &first, &last);
			pthread_mutex_lock(&f->lock);
			/* Only up to end of file, as DONTNEED. */
			if (first >= f->npages) {
				pthread_mutex_unlock(&f->lock);
				continue;
			}
			last = min_t(uint64_t, last, f->npages - 1);
			r = (struct run){ first, last - first + 1 };
			for (;;) {
				track_collect(f, first, last);
				/*
				 * As write-back does (I1): protect every mapping
				 * first, so a later write traps and re-dirties the
				 * page, and no forked child unknown yet may write it
				 * (fork.c); only then forget the dirty data.
				 */
				ret = protect_runs(f, &r, 1);
				if (ret != -EAGAIN && (ret < 0 || fork_settled(f)))
					break;
				pthread_mutex_unlock(&f->lock);
				fork_wait_settled(c);
				pthread_mutex_lock(&f->lock);
			}
			if (ret == 0)
				for (uint64_t p = first; p <= last; p++) {
					struct upc_page *pg = pt_lookup(f, p);

					if (!pg || !(pg->flags & PG_UPTODATE))
						continue;
					if (pg->flags & PG_DIRTY) {
						pg->flags &= ~(PG_DIRTY | PG_URGENT);
						f->nr_dirty--;
						UPC_TRACE(clean, f, p, 1, UPC_CLEAN_LAZYFREE);
					}
					pg->flags |= PG_LAZYFREE;
				}
			dirty_account(f);
			pthread_mutex_unlock(&f->lock);
			if (ret < 0)
				break;
		}
		break;
	}
out:
	pthread_rwlock_unlock(&mm->lock);
	return ret;
}
