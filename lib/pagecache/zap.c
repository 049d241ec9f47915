/* SPDX-License-Identifier: MIT */
/*
 * zap.c - the try_to_unmap of pages that upcd's clients map writable under
 * asynchronous tracking (upcd(8), "Memory").
 *
 * The kernel's reclaim tears down every PTE of a victim itself, and the
 * dirty bit of each torn-down PTE moves to the folio in the same step
 * (zap_pte_range; Torvalds/Hansen/Kara, seeds/).  upcd cannot tear down a
 * client's PTEs (process_madvise does MADV_DONTNEED only on the caller:
 * DESIGN.md), and under asynchronous tracking a write through a clean PTE
 * does not trap, so a page a client maps writable could take a write
 * between the dirty check and the punch that nobody sees.  So the reclaim
 * thread (reclaim.c, shrink_file) asks each such client, through the
 * reclaim channel the client handed it (upcd.c, struct zapchan;
 * connect.c, zap_serve), to zap its own PTEs of the victims, then collects
 * what the zapped PTEs recorded (track.c) before it looks at dirty again.
 * A client that cannot be asked, or did not answer in time (map_held), has
 * what it maps taken from under it instead (capture.c), and its faults map
 * dirty from then on (struct upc_zapper, internal.h).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ZAP_TIMEOUT_MS	1000	/* a zap's answer, after which the client is given up on */
#define ZAP_PASS_MS	100	/* a pass's wait for its turn (zap_lock), for the answers, and for the file's lock after */

/*
 * Is mapping @m, a client's, one whose pages cannot go by a zap?  Under
 * asynchronous tracking a write through a clean PTE does not trap, so a
 * page a client maps writable goes after that client zapped its PTEs
 * itself (zap_elsewhere), through its reclaim channel: a client without
 * one, or that once did not answer a zap (struct upc_zapper), cannot be
 * asked, nor can one not to be asked again yet (slow to answer), and their
 * pages are taken from under them (capture.c).
 * Under synchronous tracking a write to a clean page traps and waits for
 * the punch, which tears the PTE down (try_to_unmap); a read-only mapping
 * cannot write at all.  Called by the reclaim thread between its zaps:
 * @inflight is the unanswered ones'.
 */
static bool held(struct upc_map *m, bool resting)
{
	struct upc_zapper *z;
	uint64_t quiet;

	if (!m->mm->remote || !m->wp || m->file->cache->track_mode != UPC_TRACK_ASYNC)
		return false;
	z = atomic_load(&m->mm->zapper);
	if (!z || atomic_load(&z->inflight))
		return true;
	quiet = atomic_load(&z->quiet_until);
	return quiet == UINT64_MAX || (resting && now_ms() < quiet);
}

bool map_held(struct upc_map *m)
{
	return held(m, true);
}

/*
 * The same, but not for a client only resting a while after a slow answer:
 * one with no reclaim channel, a zap unanswered, or given up on.
 */
bool map_unanswered(struct upc_map *m)
{
	return held(m, false);
}

/*
 * Zaps answered whose emptied PTEs are not collected yet: the file's lock
 * could not be taken again after them (zap_elsewhere).  The clients stay
 * counted in flight (their faults map dirty) until the file's next visit
 * collects file pages [zap_pend_lo, zap_pend_hi].  The reclaim thread's
 * only, and file_free()'s once no mapping of the file is left.
 */
static void zap_pend_add(struct upc_file *f, struct upc_zapper *z, uint64_t lo, uint64_t hi)
{
	struct upc_zapper **n;

	f->zap_pend_lo = min_t(uint64_t, f->nzap_pend ? f->zap_pend_lo : UINT64_MAX, lo);
	f->zap_pend_hi = max_t(uint64_t, f->nzap_pend ? f->zap_pend_hi : 0, hi);
	n = realloc(f->zap_pend, (f->nzap_pend + 1) * sizeof(*n));
	if (!n) {
		atomic_store(&z->quiet_until, UINT64_MAX);	/* never collected: held for good */
		zapper_put(z);
		return;
	}
	f->zap_pend = n;
	if (!f->nzap_pend)
		atomic_fetch_add(&f->cache->nr_zap_pend, 1);
	f->zap_pend[f->nzap_pend++] = z;
}

/* The collection zap_pend_add() put off.  Caller holds f->lock. */
void zap_settle(struct upc_file *f)
{
	if (!f->nzap_pend)
		return;
	track_collect(f, f->zap_pend_lo, f->zap_pend_hi);
	for (size_t i = 0; i < f->nzap_pend; i++) {
		atomic_fetch_sub(&f->zap_pend[i]->inflight, 1);
		zapper_put(f->zap_pend[i]);
	}
	f->nzap_pend = 0;
	atomic_fetch_sub(&f->cache->nr_zap_pend, 1);
}

/*
 * The files with zaps to collect, at every tick of the reclaim thread
 * (every second, or 100 ms while zaps are late: zap_late_poll) and after
 * every round of the clock, whether or not the
 * cache is over its limit (the clock may not come back to them for a long
 * time, and their clients' faults map dirty and their pages are held
 * meanwhile).  A file whose lock is still not free in 20 ms waits.
 */
static bool zap_pending(const struct upc_file *f)
{
	return f->nzap_pend != 0;
}

void zap_settle_all(struct upc_cache *c)
{
	if (atomic_load(&c->nr_zap_pend))
		files_visit(c, zap_pending, zap_settle);
}

/*
 * A zap of file pages [lo, hi] of @f asked of @z and not answered within
 * its wait (zap_elsewhere): the asker's reference to @z goes to
 * cache->zap_late, with one to @f, until zap_late_poll() reads the answer
 * or gives the client up on at @until.  Meanwhile @z stays counted in
 * flight (its faults map dirty, its victims are taken from under it:
 * map_held).  Any thread, with or without f->lock.
 */
static void zap_late_add(struct upc_file *f, struct upc_zapper *z, uint64_t lo, uint64_t hi, uint64_t until)
{
	struct upc_cache *c = f->cache;

	file_hold(f);
	z->late_file = f;
	z->late_lo = lo;
	z->late_hi = hi;
	z->late_until = until;
	z->late_ret = 1;
	pthread_mutex_lock(&c->zap_late_lock);
	z->late_next = c->zap_late;
	c->zap_late = z;
	pthread_mutex_unlock(&c->zap_late_lock);
}

/*
 * The late zaps (zap_late_add), at every tick of the reclaim thread (every
 * 100 ms while there are some: a drop that adds one wakes it) and between
 * its visits: one look at every channel still unanswered, if
 * cache->zap_lock is free (a drop that waits for its own zaps holds it:
 * the reclaim thread does not wait for it; without a look, a zap is given
 * up on ZAP_TIMEOUT_MS later).  An
 * answered zap's range goes to its file's zaps to collect (zap_settle,
 * under the file's lock, at the file's next visit or the tick, before the
 * client's faults map clean again): no file lock is taken here.  One
 * still unanswered at its deadline is given up on, and stays counted in
 * flight for good (struct upc_zapper).  Returns whether any is left.  The
 * reclaim thread's.
 */
bool zap_late_poll(struct upc_cache *c)
{
	struct upc_zapper *late, *keep = NULL, **tail = &keep;
	bool looked = false, left;

	pthread_mutex_lock(&c->zap_late_lock);
	late = c->zap_late;
	c->zap_late = NULL;
	pthread_mutex_unlock(&c->zap_late_lock);
	if (!late)
		return false;
	if (pthread_mutex_trylock(&c->zap_lock) == 0) {
		for (struct upc_zapper *z = late; z;) {
			struct upc_zapper *zs[UPC_ZAP_MAX_CLIENTS];
			int rets[UPC_ZAP_MAX_CLIENTS];
			size_t n = 0;

			for (; z && n < UPC_ZAP_MAX_CLIENTS; z = z->late_next)
				zs[n++] = z;
			zs[0]->wait(zs, rets, n, 0);
			for (size_t j = 0; j < n; j++)
				zs[j]->late_ret = rets[j];
		}
		pthread_mutex_unlock(&c->zap_lock);
		looked = true;
	}
	while (late) {
		struct upc_zapper *z = late;
		struct upc_file *f = z->late_file;

		late = z->late_next;
		/* (without a look, ZAP_TIMEOUT_MS on: drops may keep zap_lock taken for good) */
		if (z->late_ret == 1 && now_ms() >= z->late_until + (looked ? 0 : ZAP_TIMEOUT_MS)) {
			z->expire(z);
			z->late_ret = -EPIPE;
		}
		if (z->late_ret == 1) {
			*tail = z;
			tail = &z->late_next;
			continue;
		}
		z->late_file = NULL;
		if (z->late_ret == -EPIPE) {
			zapper_put(z);	/* given up on, or gone: counted in flight for good */
		} else {
			/* answered: the reclaim thread's list, added to as in zap_elsewhere (@f is held) */
			zap_pend_add(f, z, z->late_lo, z->late_hi);
		}
		file_put(f);
	}
	*tail = NULL;
	pthread_mutex_lock(&c->zap_late_lock);
	*tail = c->zap_late;	/* after the ones added meanwhile */
	c->zap_late = keep;
	left = keep != NULL;
	pthread_mutex_unlock(&c->zap_late_lock);
	return left;
}

/* The late zaps left when the reclaim thread has stopped: dropped, their clients held. */
void zap_late_release(struct upc_cache *c)
{
	struct upc_zapper *z = c->zap_late;

	c->zap_late = NULL;
	while (z) {
		struct upc_zapper *next = z->late_next;
		struct upc_file *f = z->late_file;

		z->late_file = NULL;
		zapper_put(z);
		file_put(f);
		z = next;
	}
}

/*
 * The try_to_unmap of victims that clients map writable under asynchronous
 * tracking (@elsewhere: presence_scan's, from file page @first): each such
 * client is asked, through its reclaim channel, to zap its PTEs of them.
 * Each zapped PTE keeps what it recorded - a write-protect marker for a
 * clean page, an empty PTE for a written one (track.c) - so the written
 * state travels with the teardown, as the kernel moves the dirty bit to
 * the folio at zap_pte_range() (Torvalds/Hansen/Kara, seeds/), and it is
 * collected here before the dirty check (I2, I3).  Each range names the
 * memfd and file page it is for: the client zaps nothing it does not map
 * so any more (an address unmapped and reused meanwhile).
 *
 * The clients are all asked at once, one message each, and answer without
 * file->lock (a stopped or hostile one must not stall every other client
 * of the file); their faults map meanwhile as struct upc_zapper says,
 * until the written state of what they zapped is collected here, under the
 * lock again.  A client that does not answer within ZAP_TIMEOUT_MS is
 * given up on: not asked again (map_held), and its pages are taken from
 * under it from then on (capture.c).  f->lock is held on entry.  Returns 0
 * if no client was asked (the lock was held throughout), 1 if some were
 * (the lock was let go, and is held again), or -1 if it could not be taken
 * again within ZAP_PASS_MS (file_lock_visit, again and again: a truncation
 * waiting for a memfd's inode lock holds it): the pass ends there, and
 * what was zapped is collected at the file's next visit (zap_settle);
 * those clients' faults map dirty until then.
 *
 * The reclaim thread's (@visit) waits ZAP_PASS_MS at most for zap_lock
 * (a drop holds it while it waits for its own zaps), then ZAP_PASS_MS for
 * the answers (both counted in upc_stats.zap_wait_ms), and briefly only
 * for the clients of a user another client of which kept a wait waiting
 * lately (upcd.c, client_zap_wait): the reclaim of every file waits
 * meanwhile, so a user that opens connection after connection that do not
 * answer must not make it wait a second for each (as it did).  A drop's
 * or an invalidation's (reclaim.c, unmap_elsewhere) waits for zap_lock as
 * long as it takes, ZAP_PASS_MS for the answers as well, then for the
 * lock as long as it takes, and collects what its zaps recorded at once.
 * A zap not answered within
 * its wait stays asked, its client held (map_held, its faults map dirty):
 * its answer is read at a later tick of the reclaim thread, and what it
 * zapped collected at the file's next visit or tick (zap_late_poll,
 * zap_settle), or the client is given up on at ZAP_TIMEOUT_MS.  A victim
 * such a client still maps at the look after goes as capture.c takes it
 * (a drop keeps it), as one of a client given up on.  A client's channel
 * takes one zap at a time (upcd.c, struct zapchan): the asks and the wait
 * for their answers are made under cache->zap_lock, which is taken with no
 * other lock held.
 */
int zap_elsewhere(struct upc_file *f, const struct run *victims, size_t nv, uint64_t first,
		  const uint8_t *elsewhere, bool visit)
{
	struct zap_req {
		struct upc_zapper *z;
		uint64_t *triples;
		size_t n, cap;
	} reqs[UPC_ZAP_MAX_CLIENTS];
	struct upc_zapper *zs[UPC_ZAP_MAX_CLIENTS];
	int rets[UPC_ZAP_MAX_CLIENTS];
	size_t nreq = 0, nasked = 0;
	uint64_t deadline, start, asked_at, lo, hi;
	struct stat st;
	bool locked, turn, woken = false;

	if (fstat(f->memfd, &st) < 0)
		return 0;
	for (struct upc_map *m = f->rmap; m; m = m->f_next) {
		uint64_t mend = m->pgoff + ((m->end - m->start) >> UPC_PAGE_SHIFT);
		struct zap_req *r = NULL;
		struct upc_zapper *z;

		if (!m->mm->remote || !m->wp || !(z = atomic_load(&m->mm->zapper)))
			continue;
		/* one message a client: another mapping of one asked already goes in the same */
		for (size_t i = 0; i < nreq; i++)
			if (reqs[i].z == z)
				r = &reqs[i];
		if (!r) {
			if (nreq == UPC_ZAP_MAX_CLIENTS || atomic_load(&z->inflight) ||
			    now_ms() < atomic_load(&z->quiet_until))
				continue;	/* held (map_held), or the next pass's */
			r = &reqs[nreq];
			*r = (struct zap_req){ z, NULL, 0, 0 };
		}
		for (size_t i = 0; i < nv; i++) {
			uint64_t s = max_t(uint64_t, victims[i].start, m->pgoff);
			uint64_t e = min_t(uint64_t, victims[i].start + victims[i].n, mend);

			for (uint64_t p = s; p < e; p++) {
				uintptr_t a = m->start + ((p - m->pgoff) << UPC_PAGE_SHIFT);
				uint64_t *t = r->n ? r->triples + 3 * (r->n - 1) : NULL;

				if (!(elsewhere[p - first] & ELSEWHERE_W))
					continue;
				if (t && t[0] + t[1] == a && t[2] + (t[1] >> UPC_PAGE_SHIFT) == p) {
					t[1] += UPC_PAGE_SIZE;
					continue;
				}
				/* (a page not asked for stays: it is still present at the look after) */
				if (r->n == UPC_ZAP_MAX_RANGES)
					break;
				if (r->n == r->cap) {
					size_t cap = r->cap ? 2 * r->cap : 16;
					uint64_t *n = realloc(r->triples, cap * 3 * sizeof(*n));

					if (!n)
						break;
					r->triples = n;
					r->cap = cap;
				}
				t = r->triples + 3 * r->n++;
				t[0] = a;
				t[1] = UPC_PAGE_SIZE;
				t[2] = p;
			}
		}
		if (r == &reqs[nreq] && r->n) {
			/* Before the lock goes: from now on its faults map dirty (struct upc_zapper). */
			zapper_get(z);
			atomic_fetch_add(&z->inflight, 1);
			nreq++;
		} else if (r == &reqs[nreq]) {
			free(r->triples);
		}
	}
	if (!nreq)
		return 0;
	pthread_mutex_unlock(&f->lock);
	start = now_ms();
	/*
	 * A drop or an invalidation waits for zap_lock as long as it takes; the
	 * reclaim thread ZAP_PASS_MS at most, as a drop holds it while it
	 * waits for its own zaps, and every file's reclaim would wait with it.
	 */
	turn = mutex_lock_ms(&f->cache->zap_lock, visit ? ZAP_PASS_MS : 0) == 0;
	for (size_t i = 0; i < nreq; i++) {
		/* (no turn: a drop holds it, waiting for its own zaps, and this pass asks no one) */
		if (turn && reqs[i].z->ask(reqs[i].z, (uint64_t)st.st_dev, (uint64_t)st.st_ino, reqs[i].triples,
					   reqs[i].n) == 0) {
			zs[nasked++] = reqs[i].z;
			continue;
		}
		atomic_fetch_sub(&reqs[i].z->inflight, 1);	/* not asked: nothing will be zapped */
		zapper_put(reqs[i].z);
	}
	asked_at = now_ms();
	if (nasked)
		zs[0]->wait(zs, rets, nasked, ZAP_PASS_MS);
	if (turn)
		pthread_mutex_unlock(&f->cache->zap_lock);
	if (visit)
		atomic_fetch_add(&f->cache->st.zap_wait_ms, now_ms() - start);
	for (size_t i = 0; i < nreq; i++)
		free(reqs[i].triples);	/* sent (ask copies them) */
	lo = victims[0].start;
	hi = victims[nv - 1].start + victims[nv - 1].n - 1;
	if (!visit) {
		pthread_mutex_lock(&f->lock);
		/* what the zaps emptied, collected before their clients' faults map clean again */
		track_collect(f, lo, hi);
		for (size_t i = 0; i < nasked; i++) {
			if (rets[i] == 1) {
				/* read, and what it zaps collected, by the reclaim thread (zap_late_poll) */
				zap_late_add(f, zs[i], lo, hi, asked_at + ZAP_TIMEOUT_MS);
				if (!woken && f->cache->rc_running) {
					reclaim_late(f->cache);	/* to read it within 100 ms; rc_lock is a leaf */
					woken = true;
				}
				continue;
			}
			if (rets[i] != -EPIPE)
				atomic_fetch_sub(&zs[i]->inflight, 1);	/* else counted in flight for good */
			zapper_put(zs[i]);
		}
		return 1;
	}
	deadline = now_ms() + ZAP_PASS_MS;
	while (!(locked = file_lock_visit(f) == 0) && now_ms() < deadline)
		;
	for (size_t i = 0; i < nasked; i++) {
		if (rets[i] == -EPIPE) {
			zapper_put(zs[i]);	/* counted in flight for good (struct upc_zapper) */
			continue;
		}
		if (rets[i] == 1) {
			zap_late_add(f, zs[i], lo, hi, asked_at + ZAP_TIMEOUT_MS);
			continue;
		}
		/* answered: collected below, or at the file's next visit (zap_settle) */
		zap_pend_add(f, zs[i], lo, hi);
	}
	if (locked)
		zap_settle(f);
	return locked ? 1 : -1;
}

