/* SPDX-License-Identifier: MIT */
/*
 * punch.c - upcd's hole punches of its data memfds, made without
 * file->lock by a thread of their own through an io_uring (evictions,
 * reclaim.c, reclaim_runs; truncations and hole punches, fileio.c,
 * file_drop_pages; drops and invalidations), and what waits for them.
 */
#include "internal.h"
#include "usdt.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

/*
 * Evictions punched without file->lock (upcd).  A client that may write a
 * file holds a read-write descriptor of its data memfd (remote.c, "What a
 * client can do to a memfd"), and with it the memfd's inode lock for as
 * long as it likes: write(2) into the memfd from a buffer whose page fault
 * it never lets finish (a userfaultfd of its own, a FUSE file it serves)
 * holds i_rwsem while the fault waits, and a hole punch takes i_rwsem
 * (shmem_fallocate).  The reclaim thread is the whole cache's: a punch of
 * that memfd from it, under file->lock, stopped eviction of every file, and
 * through reclaim_throttle() slowed every client's faults (upcd(8), BUGS,
 * until this).  So a serving cache's reclaim thread queues its punches for
 * a thread of their own, which makes them through an io_uring, where
 * IORING_OP_FALLOCATE always runs in an io-wq worker: the worker is what
 * waits for the inode lock.
 *
 *  - One chain a file.  io-wq does not serialize the fallocates of one
 *    inode: measured on Linux 6.18, twenty punches of a memfd whose lock
 *    was held took all eight bounded workers (4 per CPU), and the punches
 *    of eight other memfds queued behind them (docs/bench/issue10-punch/
 *    iowq.c).  So an eviction's runs go
 *    as one IOSQE_IO_HARDLINK chain, run one after the other by one
 *    worker, and a file with a chain in flight gets no other before it
 *    completes: a stuck memfd holds one worker, and the clock hand passes
 *    its file by.  PUNCH_WORKERS bounds the workers: a client that holds
 *    that many memfds' locks at once (as many files it may write, each with
 *    a thread stuck in a write) stops evictions again.  The pages of a
 *    stuck chain stay counted cached (at most a clock visit's, SCAN_BATCH,
 *    a file): with a few such files under a small limit, the cache stays
 *    over its hard margin, and reclaim_throttle() slows every fault.
 *  - The pages leave the page table when the chain is queued, and stay
 *    counted in nr_cached until it completes (their memory is not free
 *    before).  Nothing may put a page into the memfd where a punch in
 *    flight would take it away after: a fault on such a page waits for the
 *    chain (fault.c, handle_fault), a fill waits for it (punch_wait) or, if
 *    it is readahead, leaves the page out (punch_busy; control.c,
 *    fill_run, also after its read without the lock).
 *  - The punch thread does not wait for the file's lock, which a thread
 *    stuck on the same inode lock may hold (a truncation's punch): it
 *    counts the pages free, marks the chain done, and wakes the file's
 *    waiters, under the lock only if it gets it within 2 ms; the next
 *    holder of file->lock frees the record (punch_reap).  Its put of the
 *    chain's reference may release the file (cache.c, file_put), which
 *    takes locks, but only when nothing else uses the file.
 *  - The kernel ties io-wq work to the thread that submitted it, and a
 *    thread's exit waits for its work to finish.  The reclaim thread only
 *    queues, so it stops at once; the punch thread is joined only if its
 *    chains complete within a second of the cache's destruction.  If not,
 *    it is left running, and the cache with its files stays allocated for
 *    it (upc_cache_destroy): the process's exit then waits in the kernel
 *    for the client to let go of the lock, or to die.
 *
 * A truncation, a hole punch (upc_fallocate), a drop and an invalidation
 * queue theirs the same way (file_drop_pages, reclaim_runs), having waited
 * for the file's chain where they may let go of the lock, and wait for
 * their own without it (punch_settle), and so does the punch of a page a
 * client wrote into a hole of the memfd (punch_stray); a growth of the file
 * or a mapping past the memfd's length takes none (cache.c,
 * file_memfd_span).  What still waits for the memfd's inode lock is the
 * work that needs that page or range: a fault on a page being punched, a
 * truncation's or hole punch's caller (holding the file's I/O lock).  The
 * threads that visit every file pass such a file by: the clock hand
 * (shrink_file), the statistics, which hold cache->lock (publish_tick,
 * upc_stats), the background writer and the reaper (writeback_range,
 * WB_VISIT), also back from their I/O (wb_park); a sync or a drop of the
 * whole cache comes back to it after every other file, and waits
 * (files_walk).
 */
#define PUNCH_RING	1024	/* > the runs of one eviction (SCAN_BATCH pages) */
#define PUNCH_WORKERS	64	/* io-wq workers: memfds whose locks can be waited for at once */
#define PUNCH_STUCK_MS	100	/* a chain this old: the file is passed by, not waited for */

struct punch {
	struct upc_file *f;
	struct run *runs;
	size_t nr;
	uint64_t pages;
	uint64_t t0;			/* now_ms() when queued */
	struct punch *next;		/* punch_ctl->queue */
	int err;			/* the first punch that failed (punch thread) */
	_Atomic size_t left;		/* completions to come: 0 once done */
	struct capture *cap;		/* pages taken from under clients that do not zap (capture.c) */
};

struct punch_ctl {
	struct upc_cache *cache;
	struct io_uring ring;
	int efd;			/* wakes the punch thread */
	pthread_mutex_t lock;		/* @queue, @stop: a leaf, taken under file->lock */
	struct punch *queue, **tail;
	bool stop;
	_Atomic unsigned int inflight;	/* chains queued or in flight */
	pthread_t thread;
};

/*
 * The chain of @f, if done: what it took from under clients that do not
 * zap is settled (capture.c: a page written meanwhile goes back, dirty),
 * and the record freed.  Every path that looks at the chain comes here
 * first (punch_busy, punch_pending), and so do the visitors, write-back and
 * the test for a clean file (file_lock_visit, writeback_range, file_clean).
 * Caller holds f->lock.
 */
void punch_reap(struct upc_file *f)
{
	struct punch *p = f->punch;

	if (p && atomic_load_explicit(&p->left, memory_order_acquire) == 0) {
		f->punch = NULL;
		capture_settle(f, p->cap, p->err != 0);
		free(p->runs);
		free(p);
	}
}

/*
 * At file_free: a chain still listed is done (its reference kept the file
 * until the punch thread let go of it), or the cache is being destroyed
 * after its punch thread ended.  An abandoned one frees no file at all.
 * A done chain's capture was settled before: a file goes only once clean
 * (file_clean reaps), and at destruction after its write-back (which
 * reaps); what is left is one never punched, whose pages are in the memfd.
 */
void punch_free(struct upc_file *f)
{
	if (f->punch) {
		capture_free(f->punch->cap);
		free(f->punch->runs);
		free(f->punch);
		f->punch = NULL;
	}
}

/*
 * file->lock, for a thread that visits every file (the clock hand,
 * statistics): in upcd given VISIT_LOCK_MS, as a thread can hold it while
 * it waits for the memfd's inode lock, which a client can hold (above);
 * the caller then passes the file by.  0, or -ETIMEDOUT.
 */
static int file_visit_locked(struct upc_file *f, int ret)
{
	if (ret == 0) {
		wb_finish_parked(f);	/* a visitor's write-back that could not end here (wb_park) */
		punch_reap(f);
	}
	return ret;
}

int file_lock_visit(struct upc_file *f)
{
	return file_visit_locked(f, mutex_lock_ms(&f->lock, f->cache->serving ? VISIT_LOCK_MS : 0));
}

/*
 * file_lock_visit() for a walk of every file with cache->lock held
 * (statistics: upc_stats, publish.c): in upcd the walk waits VISIT_LOCK_MS
 * in all, *@budget_ms what is left of it, and only tries the locks of the
 * files after.  A client holding K files' locks (a held inode lock, above)
 * held cache->lock K times 20 ms a walk, and with it every client's map,
 * read, write and connection (review of 417d8da).  0, or -ETIMEDOUT.
 */
int file_lock_walk(struct upc_file *f, unsigned int *budget_ms)
{
	uint64_t t0;
	int ret;

	if (!f->cache->serving)
		return file_lock_visit(f);
	if (!*budget_ms)
		return file_visit_locked(f, pthread_mutex_trylock(&f->lock) ? -ETIMEDOUT : 0);
	t0 = now_ms();
	ret = mutex_lock_ms(&f->lock, *budget_ms);
	*budget_ms -= (unsigned int)min_t(uint64_t, now_ms() - t0, *budget_ms);
	return file_visit_locked(f, ret);
}

/*
 * Wait until no chain of @f is in flight (one a file), letting go of
 * f->lock meanwhile: a thread working for the file's clients (a
 * truncation, a hole punch, a drop, an invalidation) does so where it may
 * let go of the lock, and its punch then goes through the punch thread as
 * well (file_drop_pages, reclaim_runs): it held the lock while it waited
 * for the memfd's inode lock, which a client can hold as long as it likes,
 * and every client's fault of the file waited with it (upcd(8), BUGS, until
 * this).  No punch thread (an embedded cache, no io_uring): nothing to
 * wait for.  Caller holds f->lock.
 */
void punch_settle(struct upc_file *f)
{
	if (f->cache->punch)
		punch_wait(f, 0, UINT64_MAX, NULL);
}

/*
 * Does a chain in flight hold a page of [first, last] it took from under a
 * client that does not zap (capture.c)?  A write such a client made
 * between the chain's last look and its punch is in that page, out of the
 * page table, until the chain is done and reaped: a sync of the range must
 * wait for it (punch_wait_captured), or, a visitor's, come back to it
 * (writeback_range: an msync or fsync, or upcd's sync, that did not
 * returned with that write not written: helper-63's and helper-64's
 * reviews).  The chain's other pages no mapping could write.  Caller holds
 * f->lock.
 */
bool punch_captured_busy(struct upc_file *f, uint64_t first, uint64_t last)
{
	punch_reap(f);
	return f->punch && capture_overlaps(f->punch->cap, first, last);
}

/*
 * Wait for that (above): for the chain in flight when called, not for the
 * ones queued after (a write made before the call is found dirty by their
 * last look, and is not in them).  false, still waiting, if the cache is
 * going.  Caller holds f->lock.
 */
bool punch_wait_captured(struct upc_file *f, uint64_t first, uint64_t last)
{
	const struct punch *p0 = NULL;

	while (punch_captured_busy(f, first, last) && (!p0 || f->punch == p0)) {
		p0 = f->punch;	/* (a later chain at the same address is only waited for too) */
		if (atomic_load(&f->cache->dying) || atomic_load(&f->cache->quitting))
			return false;
		cond_wait_ms(&f->wb_cond, &f->lock, 5);
	}
	return true;
}

/*
 * The reclaim thread, at its tick (every second, and woken by
 * punch_complete): the chains with captures that ended while their file's
 * lock was busy are reaped, so that a write they caught goes back into the
 * page table (and the journal a next daemon adopts) within a second, not at
 * whatever next looks at the file (helper-66's review).  A file whose
 * lock is still not free in 20 ms is tried again at the next tick.
 */
static bool punch_listed(const struct upc_file *f)
{
	return __atomic_load_n(&f->punch, __ATOMIC_RELAXED) != NULL;	/* (a hint: the visit looks again) */
}

void punch_settle_all(struct upc_cache *c)
{
	/* the visit reaps (file_lock_visit) */
	if (atomic_exchange(&c->capture_unsettled, false) && files_visit(c, punch_listed, NULL))
		atomic_store(&c->capture_unsettled, true);
}

/*
 * At destruction, after the punch thread was left running (punch_stop):
 * does @f's chain, still stuck, hold pages taken from under clients, whose
 * writes in the window it would lose?  (upc_cache_destroy says so.)
 * Caller holds f->lock.
 */
bool punch_abandons_capture(struct upc_file *f)
{
	return f->punch && f->punch->cap && atomic_load(&f->punch->left);
}

/* Does a punch in flight take a page of [first, last]?  Caller holds f->lock. */
bool punch_busy(struct upc_file *f, uint64_t first, uint64_t last)
{
	struct punch *p;

	punch_reap(f);
	p = f->punch;
	if (!p)
		return false;
	for (size_t i = 0; i < p->nr; i++)
		if (p->runs[i].start <= last && first < p->runs[i].start + p->runs[i].n)
			return true;
	return false;
}

/*
 * Wait until no punch in flight takes a page of [first, last], letting go
 * of f->lock meanwhile, as a fault waits for fill_busy.  The punch thread
 * wakes the waiters under file->lock if it gets it within 2 ms, else
 * without, and then a waiter can miss it: the wait looks again every 5 ms.
 * Returns false, still waiting, when *@stop (an mm's handlers stop) or the
 * cache is going (or upcd stopping: it waits for its clients' threads
 * first).  Caller holds f->lock.
 */
bool punch_wait(struct upc_file *f, uint64_t first, uint64_t last, const bool *stop)
{
	while (punch_busy(f, first, last)) {
		if (atomic_load(&f->cache->dying) || atomic_load(&f->cache->quitting) ||
		    (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)))
			return false;
		cond_wait_ms(&f->wb_cond, &f->lock, 5);
	}
	return true;
}

static void punch_complete(struct upc_cache *c, struct punch_ctl *pc, struct punch *p, int res)
{
	struct upc_file *f = p->f;
	bool captured = p->cap != NULL;	/* (@p may be freed by a lock holder once done, below) */
	uint64_t pages = p->pages, first = p->runs[0].start;
	bool locked;

	if (res < 0 && !p->err)
		p->err = res;
	/* Only this thread counts down. */
	if (atomic_load_explicit(&p->left, memory_order_relaxed) > 1) {
		atomic_fetch_sub_explicit(&p->left, 1, memory_order_relaxed);
		return;
	}
	/*
	 * A punch that failed leaves pages in the memfd the page table does
	 * not hold: a client's MINOR fault on one punches it (fault.c,
	 * handle_minor), a fill finds it there (EEXIST) and takes it as it is:
	 * a clean page, the store's data.
	 */
	if (p->err) {
		UPC_TRACE(error, "punch", p->err, f, first << UPC_PAGE_SHIFT);
		pr_warn("hole punch of an evicted run failed: %s\n", upc_strerror(p->err));
	}
	atomic_fetch_sub(&c->nr_cached, pages);
	locked = mutex_lock_ms(&f->lock, 2) == 0;
	atomic_store_explicit(&p->left, 0, memory_order_release);	/* @p is the lock holder's from here */
	if (locked && captured) {
		punch_reap(f);	/* a write the capture caught goes back at once (capture.c) */
	} else if (captured) {
		atomic_store(&c->capture_unsettled, true);	/* or within a second (punch_settle_all) */
		reclaim_wake(c);
	}
	pthread_cond_broadcast(&f->wb_cond);
	if (locked)
		pthread_mutex_unlock(&f->lock);
	file_put(f);	/* the chain's reference */
	atomic_fetch_sub(&pc->inflight, 1);
}

/* Put the chain of @p into the ring and submit it whole. */
static void punch_issue(struct punch_ctl *pc, struct punch *p)
{
	unsigned int done = 0;

	for (size_t i = 0; i < p->nr; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&pc->ring);	/* room: PUNCH_RING, and the ring is emptied below */

		io_uring_prep_fallocate(sqe, p->f->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)(p->runs[i].start << UPC_PAGE_SHIFT),
					(off_t)(p->runs[i].n << UPC_PAGE_SHIFT));
		io_uring_sqe_set_data(sqe, p);
		if (i + 1 < p->nr)
			sqe->flags |= IOSQE_IO_HARDLINK;	/* one after the other, failed or not */
	}
	/*
	 * All of it, however many calls that takes: what is left in the ring
	 * would go with the next chain, and its pages would wait meanwhile.
	 * A failure here is the ring's (its memory, a signal): tried again.
	 */
	for (unsigned int tries = 0; done < p->nr; tries++) {
		int ret = io_uring_submit(&pc->ring);

		if (ret > 0) {
			done += (unsigned int)ret;
			continue;
		}
		if (tries == 10)
			pr_warn("io_uring_submit of a hole punch: %s; trying again\n", upc_strerror(ret < 0 ? ret : -EAGAIN));
		usleep(tries < 10 ? 1000 : 100000);
	}
}

static void *punch_main(void *arg)
{
	struct punch_ctl *pc = arg;
	struct upc_cache *c = pc->cache;

	for (;;) {
		struct pollfd pfd[2] = { { .fd = pc->ring.ring_fd, .events = POLLIN }, { .fd = pc->efd, .events = POLLIN } };
		struct io_uring_cqe *cqe;
		struct punch *q;
		uint64_t v;
		bool stop;

		while (io_uring_peek_cqe(&pc->ring, &cqe) == 0) {
			struct punch *p = io_uring_cqe_get_data(cqe);
			int res = cqe->res;

			io_uring_cqe_seen(&pc->ring, cqe);
			punch_complete(c, pc, p, res);
		}
		pthread_mutex_lock(&pc->lock);
		q = pc->queue;
		pc->queue = NULL;
		pc->tail = &pc->queue;
		stop = pc->stop;
		pthread_mutex_unlock(&pc->lock);
		while (q) {
			struct punch *next = q->next;

			punch_issue(pc, q);
			q = next;
		}
		if (stop && !atomic_load(&pc->inflight))
			break;
		if (poll(pfd, 2, -1) > 0 && (pfd[1].revents & POLLIN))
			(void)!read(pc->efd, &v, sizeof(v));
	}
	return NULL;
}

/*
 * The ring and its thread, when the cache starts serving.  Without a ring
 * (io_uring disabled: kernel.io_uring_disabled, a seccomp filter) the
 * reclaim thread punches as an embedded cache's does, and says so.
 */
int punch_start(struct upc_cache *c)
{
	unsigned int workers[2] = { PUNCH_WORKERS, 0 };
	struct punch_ctl *pc = calloc(1, sizeof(*pc));
	int ret;

	if (!pc)
		return -ENOMEM;
	pc->cache = c;
	pc->tail = &pc->queue;
	ret = io_uring_queue_init(PUNCH_RING, &pc->ring, 0);
	if (ret < 0) {
		free(pc);
		pr_warn("no io_uring for evictions (%s): a client holding a memfd's lock can stall reclaim\n",
			upc_strerror(ret));
		return 0;
	}
	io_uring_register_iowq_max_workers(&pc->ring, workers);	/* best effort: the default is 4 a CPU */
	pc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pc->efd < 0) {
		ret = -errno;
		goto fail;
	}
	pthread_mutex_init(&pc->lock, NULL);
	ret = -pthread_create(&pc->thread, NULL, punch_main, pc);
	if (ret)
		goto fail;
	pthread_setname_np(pc->thread, "upc-punch");
	c->punch = pc;
	return 0;
fail:
	if (pc->efd >= 0)
		close(pc->efd);
	io_uring_queue_exit(&pc->ring);
	free(pc);
	return ret;
}

/*
 * At destruction, after the reclaim thread and every client's thread (the
 * ones that queue) stopped: the punch thread ends once every chain
 * completed; given a second, or it is left (above, and c->punch_abandoned).
 */
void punch_stop(struct upc_cache *c)
{
	struct punch_ctl *pc = c->punch;
	uint64_t one = 1;
	struct timespec ts;

	if (!pc)
		return;
	pthread_mutex_lock(&pc->lock);
	pc->stop = true;
	pthread_mutex_unlock(&pc->lock);
	(void)!write(pc->efd, &one, sizeof(one));
	deadline_ms(&ts, 1000);
	if (pthread_timedjoin_np(pc->thread, NULL, &ts) != 0) {
		pr_warn("%u evictions' hole punches wait for a memfd's lock: left to finish as the process exits\n",
			atomic_load(&pc->inflight));
		pthread_detach(pc->thread);
		c->punch_abandoned = true;
		return;
	}
	close(pc->efd);
	io_uring_queue_exit(&pc->ring);
	pthread_mutex_destroy(&pc->lock);
	free(pc);
	c->punch = NULL;
}

/*
 * Queue the punches of @runs (its pages out of the page table, counted
 * cached) as one chain, with @cap, the pages of it taken from under
 * clients that do not zap (capture.c), or NULL.  Takes @runs and @cap on
 * success.  Caller holds f->lock, and f->punch is NULL.
 */
int punch_queue(struct upc_file *f, struct run *runs, size_t nr, uint64_t pages, struct capture *cap)
{
	struct punch_ctl *pc = f->cache->punch;
	struct punch *p = malloc(sizeof(*p));
	uint64_t one = 1;

	if (!p)
		return -ENOMEM;
	capture_sealed(cap);
	*p = (struct punch){ .f = f, .runs = runs, .nr = nr, .pages = pages, .t0 = now_ms(), .cap = cap };
	atomic_init(&p->left, nr);
	file_hold(f);	/* the chain's: let go by the punch thread, once it is done */
	atomic_fetch_add(&pc->inflight, 1);
	f->punch = p;
	pthread_mutex_lock(&pc->lock);
	*pc->tail = p;
	pc->tail = &p->next;
	pthread_mutex_unlock(&pc->lock);
	(void)!write(pc->efd, &one, sizeof(one));
	return 0;
}

/*
 * A page the memfd holds and the page table does not (upcd): one a client
 * wrote into a hole of the memfd with write(2) (remote.c, "What a client
 * can do to a memfd"), or one an eviction's failed punch left there
 * (punch_complete).  A client's fault on it would fault MINOR (or, on a
 * write-protected PTE, WP) for ever: it is not the cache's page, and goes.
 * It went with a punch made here, under file->lock, where a client that
 * holds the memfd's inode lock (above) held every fault of the file with
 * it, in every client (upcd(8), BUGS, until this).  So it goes as an
 * eviction's does: a chain of one page for the punch thread.  The caller
 * wakes the fault, which comes back and waits for the chain without
 * file->lock (fault.c, handle_fault), as a fault on an evicted page does,
 * and then reads the store's page.  Only that page's faults wait, and,
 * for a chain of the file already in flight (below), the handler thread
 * of this fault's client: a chain stuck on a memfd lock that another
 * client holds parks it, where the punch under file->lock stalled every
 * client of the file.
 *
 * A chain of @f in flight is waited for first (one a file), letting go of
 * f->lock: the page may have been filled meanwhile, and is then the
 * cache's.  Without a punch thread (an embedded cache has no such page;
 * no io_uring), or out of memory, the punch is made here, as before.
 * Returns false if the wait was stopped (*@stop, the cache going): nothing
 * was punched, and the fault is left to whoever stops.  Caller holds
 * f->lock.
 */
bool punch_stray(struct upc_file *f, uint64_t pgoff, const bool *stop)
{
	struct run *r;

	if (f->cache->punch) {
		if (!punch_wait(f, 0, UINT64_MAX, stop))
			return false;
		/*
		 * A readahead read of the page in flight leaves it out (fill_run
		 * looks for a punch after its read): else its insert would find
		 * the client's bytes there (EEXIST) and take them for the store's.
		 */
		if (page_uptodate(f, pgoff))
			return true;	/* the cache's now */
		r = malloc(sizeof(*r));
		if (r) {
			*r = (struct run){ pgoff, 1 };
			if (punch_queue(f, r, 1, 0, NULL) == 0)	/* counted cached by no one */
				return true;
			free(r);
		}
	}
	sys_punch(f->memfd, (off_t)(pgoff << UPC_PAGE_SHIFT), UPC_PAGE_SIZE);
	return true;
}

/*
 * Does @f's last eviction still punch (upcd)?  Waited for a few
 * milliseconds: a chain takes microseconds, unless a client holds the
 * memfd's inode lock, and then the file's victims wait for a later visit.
 * Caller holds f->lock.
 */
bool punch_pending(struct upc_file *f)
{
	punch_reap(f);
	if (!f->punch)
		return false;
	if (now_ms() - f->punch->t0 < PUNCH_STUCK_MS)
		for (int i = 0; i < 5 && f->punch; i++) {
			cond_wait_ms(&f->wb_cond, &f->lock, 1);
			punch_reap(f);
		}
	return f->punch != NULL;
}

