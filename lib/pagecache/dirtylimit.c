/* SPDX-License-Identifier: MIT */
/*
 * dirtylimit.c - upcd's dirty limit a user: the kernel's
 * balance_dirty_pages() (mm/page-writeback.c), with its strictlimit.
 *
 * A page dirty, or under write-back, is one the reclaim thread cannot
 * evict until it is written; and a client that may write a file can keep
 * its write-back from ending as long as it likes: it holds the file's
 * inode lock (wbpark.c), or the file is a FUSE file it serves and answers
 * slowly.  Without a bound, such a client dirtied pages of that file until
 * the cache was over its hard margin with them, and reclaim_throttle()
 * then slowed every fault of every client of the daemon by 200 ms
 * (upcd(8), BUGS, until this).  The kernel met the same with FUSE: an
 * unprivileged server can stall the write-back of its files, and its bdi
 * gets BDI_CAP_STRICTLIMIT, so that a writer of it is throttled against
 * that bdi's own share of the dirty limit whatever the global count is.
 *
 * Here the share is a user's (an account: struct upc_file @wb_account,
 * the user behind the client that last mapped the file writable or wrote
 * it with a call, as for the write-back I/O threads, wbpark.c): the pages
 * dirty or under write-back, not pinned, in the files charged to an
 * account are counted (@charged, under the file's lock), and a client
 * that may dirty a page of a file waits - a write fault of it, any fault
 * of a writable mapping of it under asynchronous tracking (where a page
 * is written without a fault), a upc_pwrite() of it - while that file's
 * account holds
 *
 *	max(limit / 16, limit / 2 - what the other accounts hold)
 *
 * pages or more.  An account alone may hold half the memory limit dirty,
 * as the kernel's dirty_ratio lets its writers hold a share of memory;
 * others crowd it down to a sixteenth, never below, so that a user whose
 * files are stuck leaves every other user a sixteenth to write with: one
 * such user leaves 7/16 of the limit for clean pages, and it takes nine
 * users (accounts: a user's own user namespaces are that user, upcd.c's
 * client_account) to hold the whole limit so, as it takes sixteen to take
 * every write-back I/O thread.
 *
 * While it waits, the background writer writes every dirty page of the
 * files of accounts past their share, not only the expired ones (the
 * kernel's background write-back past its threshold; not every user's
 * files, whose hot pages would be written and protected again at each
 * wait: review of the first version); the wait ends as the account's
 * pages are written (a broadcast of @dirty_cond), or looks again every
 * DIRTY_WAIT_MS, and the fault or call goes on then.  Its time is counted
 * in upc_stats dirty_wait_ms.  Not bounded: a writer of a file whose
 * write-back never ends waits as long, as a write(2) of a file whose inode
 * lock is held does (and so does one whose write-back keeps failing: its
 * pages stay dirty, where the kernel's page_mkwrite() would give it
 * SIGBUS); a stop of the daemon, or of the client's address space, ends
 * a fault's wait.
 *
 * Past DIRTY_ACCT_SLOTS accounts with pages charged at once, the rest
 * share one (@dirty_rest).  An embedded cache has no accounts, and no
 * limit here: the one process that writes is the one that waits anyway.
 */
#include "internal.h"

#include <sys/mman.h>

#define DIRTY_WAIT_MS	100

static uint64_t dirty_floor(const struct upc_cache *c)
{
	return c->limit_pages / 16;
}

/*
 * The slot of account @uid, or the shared one when every slot is taken;
 * @find: only one in use, else NULL (the account holds nothing).  Caller
 * holds dirty_lock.
 */
static struct dirty_acct *acct_slot(struct upc_cache *c, uid_t uid, bool find)
{
	struct dirty_acct *free_slot = NULL;

	for (int i = 0; i < DIRTY_ACCT_SLOTS; i++) {
		struct dirty_acct *a = &c->dirty_accts[i];

		if (a->files && a->uid == uid)
			return a;
		if (!a->files && !free_slot)
			free_slot = a;
	}
	if (!free_slot)
		return &c->dirty_rest;
	if (find)
		return NULL;	/* (or its file is in the shared slot: dirty_exceeded looks there) */
	free_slot->uid = uid;
	return free_slot;
}

/*
 * The pages @f holds against its account: dirty or under write-back, less
 * those pins hold, which the pin limit bounds (upcd.c, req_pin) and a
 * UPC_PIN_NOWRITEBACK pin keeps from write-back: counted here, they held
 * their own user's writers for good, the log a database writes with
 * upc_pwrite() between its pin and its unpin among them (review of the
 * first version).  A page pinned and clean lets as many more be dirty.
 */
static uint64_t file_held(const struct upc_file *f)
{
	uint64_t held = f->nr_dirty + f->nr_writeback;

	return held > f->nr_pinned ? held - f->nr_pinned : 0;
}

/*
 * @f lets go of its account, and of what it was charged: it holds nothing
 * now, or moves to another account, or leaves the cache (file_free: a
 * write-back that failed at the end leaves pages dirty).  Caller holds
 * f->lock, or is the file's last holder.
 */
void dirty_release(struct upc_file *f)
{
	struct upc_cache *c = f->cache;

	if (!f->dacct)
		return;
	pthread_mutex_lock(&c->dirty_lock);
	atomic_fetch_sub(&f->dacct->pages, f->charged);
	atomic_fetch_sub(&c->dirty_total, f->charged);
	f->dacct->files--;
	pthread_mutex_unlock(&c->dirty_lock);
	__atomic_store_n(&f->dacct, NULL, __ATOMIC_RELEASE);
	f->charged = 0;
	dirty_wake(c);
}

/*
 * @f's pages dirty or under write-back (or pinned) changed: charge them to
 * its account.  They move whole to the file's account of the moment when
 * they grow (the dirtier's, as cgroup write-back charges an inode to the
 * cgroup that dirties it), and the file lets go of its account once it
 * holds none.  Caller holds f->lock.
 */
void dirty_account(struct upc_file *f)
{
	struct upc_cache *c = f->cache;
	uint64_t held = file_held(f);
	uid_t uid;
	int64_t delta;

	if (!c->serving || held == f->charged)
		return;
	uid = atomic_load_explicit(&f->wb_account, memory_order_relaxed);
	if (f->dacct && (!held || (held > f->charged && f->dacct_uid != uid)))
		dirty_release(f);
	if (!held)
		return;
	if (!f->dacct) {
		struct dirty_acct *a;

		pthread_mutex_lock(&c->dirty_lock);
		a = acct_slot(c, uid, false);
		a->files++;
		pthread_mutex_unlock(&c->dirty_lock);
		__atomic_store_n(&f->dacct_uid, uid, __ATOMIC_RELAXED);
		__atomic_store_n(&f->dacct, a, __ATOMIC_RELEASE);
	}
	delta = (int64_t)held - (int64_t)f->charged;
	atomic_fetch_add(&f->dacct->pages, delta);
	atomic_fetch_add(&c->dirty_total, delta);
	f->charged = held;
	if (delta < 0)
		dirty_wake(c);
}

/*
 * Pages written: a dirtier waiting (dirty_wait) looks again.  Its count of
 * waiters and the accounts' counts are sequentially consistent: either
 * this sees it waiting, or it sees the pages written (dirty_wait).
 */
void dirty_wake(struct upc_cache *c)
{
	if (!atomic_load(&c->dirty_waiters))
		return;
	pthread_mutex_lock(&c->dirty_lock);
	pthread_cond_broadcast(&c->dirty_cond);
	pthread_mutex_unlock(&c->dirty_lock);
}

/* Does the account of slot @a (NULL: one that holds nothing) hold its share, or more? */
static bool acct_over(struct upc_cache *c, const struct dirty_acct *a)
{
	uint64_t total, mine, others, share, floor = dirty_floor(c);

	if (!a)
		return false;
	total = (uint64_t)atomic_load(&c->dirty_total);
	mine = (uint64_t)atomic_load(&a->pages);
	others = total > mine ? total - mine : 0;	/* (the two are not changed at once) */
	share = c->limit_pages / 2;
	share = others < share ? share - others : 0;
	return mine >= max_t(uint64_t, share, floor);
}

/*
 * Must a dirtier of @f wait?  The slot of its account if that holds its
 * share or more (the top of this file), else NULL.  Without a lock but
 * once the cache holds a sixteenth of its limit dirty, and then through
 * the file's own slot where it is its account's, else dirty_lock, briefly.
 * @f is held (a mapping of it, or a reference).
 */
struct dirty_acct *dirty_exceeded(struct upc_file *f)
{
	struct upc_cache *c = f->cache;
	struct dirty_acct *a;
	uid_t uid;

	if (!c->serving || !c->limit_pages ||
	    (uint64_t)atomic_load_explicit(&c->dirty_total, memory_order_relaxed) < dirty_floor(c))
		return NULL;
	uid = atomic_load_explicit(&f->wb_account, memory_order_relaxed);
	a = __atomic_load_n(&f->dacct, __ATOMIC_ACQUIRE);
	if (!a || __atomic_load_n(&f->dacct_uid, __ATOMIC_RELAXED) != uid) {
		pthread_mutex_lock(&c->dirty_lock);
		a = acct_slot(c, uid, true);
		pthread_mutex_unlock(&c->dirty_lock);
	}
	/* (a slot given to another account meanwhile: one look wrong, one wait of DIRTY_WAIT_MS at most) */
	return acct_over(c, a) ? a : NULL;
}

/* Is the account of @f past its share?  The background writer writes all of the file then (bgwb_main). */
bool dirty_pressed(struct upc_file *f)
{
	struct upc_cache *c = f->cache;

	return c->serving && c->limit_pages && acct_over(c, __atomic_load_n(&f->dacct, __ATOMIC_ACQUIRE));
}

/*
 * Wait once, DIRTY_WAIT_MS at most, for the pages of the account of slot
 * @a to be written, if it still holds its share; the caller looks again
 * (dirty_exceeded), holding nothing meanwhile.  The background writer
 * writes every dirty page of the files of accounts past their share
 * meanwhile (bgwb_kick_all).  Returns false if it is not to wait: the
 * cache or the daemon stops, or *@stop (the client's address space stops)
 * is set.
 */
bool dirty_wait(struct upc_cache *c, const struct dirty_acct *a, const bool *stop)
{
	uint64_t t0;

	if (atomic_load(&c->dying) || atomic_load(&c->quitting) || (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)))
		return false;
	t0 = now_ms();
	bgwb_kick_all(c);
	pthread_mutex_lock(&c->dirty_lock);
	atomic_fetch_add(&c->dirty_waiters, 1);
	if (acct_over(c, a))
		cond_wait_ms(&c->dirty_cond, &c->dirty_lock, DIRTY_WAIT_MS);
	atomic_fetch_sub(&c->dirty_waiters, 1);
	pthread_mutex_unlock(&c->dirty_lock);
	atomic_fetch_add(&c->st.dirty_wait_ms, now_ms() - t0);
	return true;
}

/*
 * Under asynchronous tracking a page is written without a fault, and is
 * counted when a scan finds it (reclaim's, a write-back's): a client that
 * faulted pages into a writable mapping and wrote them went past its share
 * by all it mapped before such a scan (a test measured 1265 pages against
 * a share of 512, under a 4 MiB limit), and the cache past its limit with
 * pages that could not be written, where a pin of another user's could not
 * hold its pages against reclaim.  So while the cache is past its limit
 * and holds a sixteenth of it dirty, a fault of a writable mapping first
 * counts what that mapping has written, once every DIRTY_LOOK_MS a mapping
 * (a scan of its cached pages' PTEs, under the file's lock).
 * Caller holds mm->lock, not f->lock.
 */
#define DIRTY_LOOK_MS	10

void dirty_collect(struct upc_map *m)
{
	struct upc_file *f = m->file;
	struct upc_cache *c = f->cache;
	uint64_t now;

	if (!c->serving || c->track_mode != UPC_TRACK_ASYNC || !(m->prot & PROT_WRITE) ||
	    atomic_load_explicit(&c->nr_cached, memory_order_relaxed) < c->limit_pages ||
	    (uint64_t)atomic_load_explicit(&c->dirty_total, memory_order_relaxed) < dirty_floor(c))
		return;
	now = now_ms();
	if (now - atomic_load_explicit(&m->dirty_looked, memory_order_relaxed) < DIRTY_LOOK_MS)
		return;
	atomic_store_explicit(&m->dirty_looked, now, memory_order_relaxed);
	pthread_mutex_lock(&f->lock);
	track_collect_map(m);
	pthread_mutex_unlock(&f->lock);
}

/*
 * A upc_pwrite() that dirties @f: wait while its account holds its share.
 * Holding f->io_lock, as the kernel's balance_dirty_pages() is called
 * with i_rwsem held: the file's next upc_pwrite(), truncation or hole
 * punch waits behind it, whoever makes it.  A stop of the daemon ends the
 * wait; a client's death does not (its thread serves this call), and the
 * call goes on once its user's pages are written.
 */
void dirty_balance(struct upc_file *f)
{
	const struct dirty_acct *a;

	while ((a = dirty_exceeded(f)) && dirty_wait(f->cache, a, NULL))
		;
}
