/* SPDX-License-Identifier: MIT */
/*
 * wbpark.c - upcd's write-back that waits for no client: a visitor of every
 * file (the background writer, the reaper, reclaim's write-back of dirty
 * victims, the first pass of a sync or drop of the whole cache) neither
 * waits to take a file's lock again after its I/O (wb_park), nor waits for
 * an I/O that a client's hold of the file's inode lock keeps (wb_io_offload,
 * the I/O threads).  A client that may write a file can hold either lock
 * as long as it likes (punch.c), and one such file stopped the write-back
 * of every other.
 */
#include "internal.h"
#include "usdt.h"

#include <stdlib.h>
#include <time.h>

/*
 * upcd: the account of the client whose requests this thread serves
 * (upcd.c sets it in each client's thread), and what it is charged for:
 * the write-back I/O of a file it maps writable or writes (below).
 */
__thread uid_t upc_current_account = UPC_ACCOUNT_NONE;

void file_account(struct upc_file *f)
{
	if (f->cache->serving && upc_current_account != UPC_ACCOUNT_NONE)
		atomic_store_explicit(&f->wb_account, upc_current_account, memory_order_relaxed);
}

/*
 * Write-back parked (WB_VISIT): a visitor of every file, back from the I/O
 * of a file whose lock it cannot take again within VISIT_LOCK_MS, does not
 * wait for it: a client of upcd can make a thread hold that lock as long as
 * it likes (a truncation that waits for the memfd's inode lock, punch.c),
 * and the flusher, or the reclaim thread, stopped there for the whole
 * cache (upcd(8), BUGS, until this).  It leaves the completion on the
 * file, whose pages stay PG_WRITEBACK meanwhile (I3: not dropped, not
 * punched; a data-integrity write-back waits for them), and goes on to the
 * next file.  The next holder of the lock who cares ends it: a visitor that
 * takes the lock (file_lock_visit), any write-back (writeback_range), any
 * wait for write-back (wb_wait), file_free.  A lock-free stack: pushed
 * without the lock, taken whole under it.  0, or -ENOMEM: not parked.
 */
int wb_park(struct upc_file *f, const struct wb_done *d)
{
	struct wb_done *p = malloc(sizeof(*p));

	if (!p)
		return -ENOMEM;
	*p = *d;
	p->next = atomic_load_explicit(&f->wb_parked, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&f->wb_parked, &p->next, p, memory_order_release,
						      memory_order_relaxed))
		;
	/* A waiter for write-back (wb_wait) looks again, and ends it once it holds the lock. */
	pthread_cond_broadcast(&f->wb_cond);
	return 0;
}

/* End the parked write-backs of @f (wb_park).  Returns whether there were any.  Caller holds f->lock. */
bool wb_finish_parked(struct upc_file *f)
{
	struct wb_done *d;

	if (!atomic_load_explicit(&f->wb_parked, memory_order_relaxed))
		return false;
	d = atomic_exchange_explicit(&f->wb_parked, NULL, memory_order_acquire);
	while (d) {
		struct wb_done *next = d->next;

		wb_complete(f, d);
		free(d->runs);
		free(d->gaps);
		free(d->ios);
		free(d);
		d = next;
	}
	return true;
}

/*
 * Wait for a write-back in flight to end, as the kernel's
 * folio_wait_writeback(); a parked one (wb_park) this holder of the lock
 * ends itself.  Its parker wakes the waiters without the lock (it could not
 * take it), so a waiter that looked just before misses that wakeup: in upcd
 * it looks again every WB_PARK_POLL_MS.  Caller holds f->lock, which the
 * wait lets go of, and looks at its pages again after it.
 */
#define WB_PARK_POLL_MS	50

void wb_wait(struct upc_file *f)
{
	if (wb_finish_parked(f))
		return;
	if (f->cache->serving)
		cond_wait_ms(&f->wb_cond, &f->lock, WB_PARK_POLL_MS);
	else
		pthread_cond_wait(&f->wb_cond, &f->lock);
}

/*
 * upcd: a visitor's write I/O, in a thread of its own (wb_io_offload).  A
 * write to a file takes its inode lock (i_rwsem: buffered or O_DIRECT, the
 * file store's io_uring write too, in an io-wq worker), and any client
 * that may write the file can hold that lock as long as it likes, as it can
 * the memfd's (punch.c): the background writer waited in such a file's
 * write-back, and every other file's dirty pages waited with it (upcd(8),
 * BUGS, until this).  The kernel's flusher takes no inode lock to write a
 * page back (->writepages); this one cannot help it, so it does not wait
 * for the I/O longer than WB_IO_WAIT_MS: the I/O's thread completes it
 * (under the file's lock, or parked: wb_park), and visitors pass the file
 * by until it has (upc_file @wb_io_stuck).  Its pages stay PG_WRITEBACK
 * meanwhile, as for any write-back in flight.
 *
 * At most WB_IO_MAX I/Os so at once (a thread each), and, in a daemon
 * run as root (which serves many users), at most WB_IO_ACCOUNT_MAX of them
 * for the files of one account (struct upc_file @wb_account: the client
 * that last mapped the file through a descriptor open for writing, or
 * wrote it with a call, counted as the user behind it: upcd.c,
 * client_account).  A visitor takes its place before it
 * cleans a page (wb_io_reserve, writeback_range); with none left it passes
 * the file by, until an I/O of that account, or any, ends.  It made the
 * I/O itself before, and the next file whose inode lock a client held
 * stopped it there, with every other file's write-back (upcd(8), BUGS): a
 * client holding 65 files' locks stopped them all; then (2deab19) one user
 * holding 64 files' locks, of files it made, left every user's dirty pages
 * unwritten; now that takes sixteen users (WB_IO_MAX was 64 until the
 * bound a user: a thread that waits costs its stack's few pages, and the
 * file store's ring only up to its 64: store.c).  The account is the
 * writer's, not the file owner's, as cgroup writeback charges an inode to
 * the cgroup that dirties it (fs/fs-writeback.c, inode_switch_wbs), not to
 * its owner: a user can make files owned by any of its subordinate uids,
 * and a FUSE file it serves has the owner it says (review of 67c4692).  A
 * client that may write another user's file can still hold its lock after
 * that user wrote it last, and use that user's places.
 * UPC_DEBUG=wb-io-few makes the bounds 3 and 2 (and the second holds in a
 * daemon not run as root too), for a test.
 */
#define WB_IO_WAIT_MS	1000
#define WB_IO_ACCOUNT_MAX	16

static unsigned int wb_io_max(const struct upc_cache *c)
{
	return __builtin_expect(c->debug & UPC_DBG_WB_IO_FEW, 0) ? 3 : WB_IO_MAX;
}

static unsigned int wb_io_account_max(const struct upc_cache *c)
{
	if (__builtin_expect(c->debug & UPC_DBG_WB_IO_FEW, 0))
		return 2;
	return c->wb_per_account ? WB_IO_ACCOUNT_MAX : WB_IO_MAX;
}

/*
 * Take a place for a visitor's I/O of @f (wb_io_offload): one of
 * WB_IO_MAX, and one of its account's.  false: none left, @f is passed
 * by.  Caller holds f->lock (cache->wb_lock nests inside it); the place
 * goes with wb_io_release(), or to the I/O's thread.
 */
bool wb_io_reserve(struct upc_cache *c, struct upc_file *f, struct wb_ticket *t)
{
	uid_t acct = atomic_load_explicit(&f->wb_account, memory_order_relaxed);
	int slot = -1;

	t->slot = -1;
	pthread_mutex_lock(&c->wb_lock);
	if (atomic_load(&c->wb_io_running) >= wb_io_max(c))
		goto full;
	for (int i = 0; i < WB_ACCOUNT_SLOTS; i++)
		if (c->wb_accounts[i].n && c->wb_accounts[i].uid == acct) {
			slot = i;
			break;
		} else if (!c->wb_accounts[i].n && slot < 0) {
			slot = i;
		}
	/* (a free slot is there: no more places are taken than WB_ACCOUNT_SLOTS) */
	if (slot < 0 || c->wb_accounts[slot].n >= wb_io_account_max(c))
		goto full;
	c->wb_accounts[slot].uid = acct;
	c->wb_accounts[slot].n++;
	atomic_fetch_add(&c->wb_io_running, 1);
	t->slot = slot;
full:
	pthread_mutex_unlock(&c->wb_lock);
	return t->slot >= 0;
}

/* Give back the place of @t, if it holds one (and no I/O took it). */
void wb_io_release(struct upc_cache *c, struct wb_ticket *t)
{
	if (t->slot < 0)
		return;
	pthread_mutex_lock(&c->wb_lock);
	c->wb_accounts[t->slot].n--;
	atomic_fetch_sub(&c->wb_io_running, 1);
	pthread_mutex_unlock(&c->wb_lock);
	t->slot = -1;
}

struct wb_io {
	struct upc_file *f;
	struct wb_done d;
	struct wb_io *next;	/* wb_pool's queue */
	struct wb_ticket t;	/* its place (wb_io_reserve) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;		/* the I/O completed: the visitor completes it ... */
	bool left;		/* ... unless it went on: then the thread does */
};

static void wb_io_free(struct wb_io *j)
{
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	free(j);
}

static void wb_io_run(struct wb_io *j)
{
	struct upc_file *f = j->f;
	struct upc_cache *c = f->cache;
	struct wb_ticket t = j->t;	/* @j may be the visitor's, and freed, once done */
	bool left;

	wb_submit(f, j->d.ios, j->d.nios);
	pthread_mutex_lock(&j->lock);
	j->done = true;
	left = j->left;
	pthread_cond_signal(&j->cond);
	pthread_mutex_unlock(&j->lock);	/* not left: @j is the visitor's from here */
	if (left) {
		/* Completed here under the file's lock if it comes soon, else parked; no memory to park: waited for. */
		bool locked = file_lock_visit(f) == 0;

		if (locked || wb_park(f, &j->d) != 0) {
			if (!locked)
				pthread_mutex_lock(&f->lock);
			wb_complete(f, &j->d);
			pthread_mutex_unlock(&f->lock);
			free(j->d.runs);
			free(j->d.gaps);
			free(j->d.ios);
		}
		atomic_fetch_sub(&f->wb_io_stuck, 1);
		wb_io_free(j);
	}
	file_put(f);
	wb_io_release(c, &t);
}

/*
 * The I/O threads: long-lived, since a thread's first io_uring submission
 * sets up its kernel state (a thread a write-back cost 185-336 us against
 * 6 us inline, review of 52441e0), started when no thread is idle, at most
 * WB_IO_MAX (wb_io_max); they end with the cache (wb_pool_stop).
 */
struct wb_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct wb_io *head, **tail;
	unsigned int threads, idle, queued;
	bool stop;
};

static void *wb_worker_main(void *arg)
{
	struct wb_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct wb_io *j;

		while (!p->head && !p->stop) {
			p->idle++;
			pthread_cond_wait(&p->cond, &p->lock);
			p->idle--;
		}
		if (!p->head)
			break;
		j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = &p->head;
		p->queued--;
		pthread_mutex_unlock(&p->lock);
		wb_io_run(j);
		pthread_mutex_lock(&p->lock);
	}
	p->threads--;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/*
 * Queue @j for an I/O thread, starting one unless an idle one is there for
 * every job queued (@idle is counted down only by the worker that wakes:
 * two jobs queued in a row both saw one idle thread, and the second waited
 * behind the first, which may wait for good; review of 762ae79).  false:
 * no thread for it (none could start).
 */
static bool wb_pool_queue(struct upc_cache *c, struct wb_io *j)
{
	struct wb_pool *p;
	bool ok;

	pthread_mutex_lock(&c->wb_lock);
	if (!c->wb_pool && (p = calloc(1, sizeof(*p)))) {
		pthread_mutex_init(&p->lock, NULL);
		pthread_cond_init(&p->cond, NULL);
		p->tail = &p->head;
		c->wb_pool = p;
	}
	p = c->wb_pool;
	pthread_mutex_unlock(&c->wb_lock);
	if (!p)
		return false;
	pthread_mutex_lock(&p->lock);
	if (p->queued + 1 > p->idle && p->threads < wb_io_max(c)) {
		pthread_attr_t attr;
		pthread_t t;

		if (pthread_attr_init(&attr) == 0) {
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
			if (pthread_create(&t, &attr, wb_worker_main, p) == 0) {
				pthread_setname_np(t, "upc-wb-io");
				p->threads++;
			}
			pthread_attr_destroy(&attr);
		}
	}
	ok = p->threads > 0;
	if (ok) {
		j->next = NULL;
		*p->tail = j;
		p->tail = &j->next;
		p->queued++;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return ok;
}

/* At destruction, once no I/O is queued or running (wb_io_running): the threads end. */
void wb_pool_stop(struct upc_cache *c)
{
	struct wb_pool *p = c->wb_pool;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	while (p->threads)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
	c->wb_pool = NULL;
}

/*
 * Run @d's I/O in a thread of its own, and wait for it WB_IO_WAIT_MS at
 * most: 0 when it completed (the results are in @d->ios), -EBUSY when the
 * thread goes on with it and completes it (it owns @d's arrays then).  The
 * place @t (wb_io_reserve) goes with it: there are no more jobs than
 * places, nor threads, so a thread is there for it, or about to be idle
 * (wb_pool_queue).  No thread at all, no memory: the I/O is done here.
 * Caller holds a reference to @f, not its lock.
 */
int wb_io_offload(struct upc_file *f, const struct wb_done *d, struct wb_ticket *t)
{
	struct upc_cache *c = f->cache;
	struct wb_io *j = NULL;
	struct timespec ts;
	bool left;

	if (!(j = calloc(1, sizeof(*j))))
		goto inline_io;
	j->f = f;
	j->t = *t;
	j->d = *d;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	file_hold(f);	/* the thread's */
	if (!wb_pool_queue(c, j)) {
		file_put(f);
		goto inline_io;
	}
	t->slot = -1;	/* the thread's now */
	deadline_ms(&ts, WB_IO_WAIT_MS);
	pthread_mutex_lock(&j->lock);
	while (!j->done && pthread_cond_timedwait(&j->cond, &j->lock, &ts) != ETIMEDOUT)
		;
	left = !j->done;
	if (left) {
		j->left = true;
		atomic_fetch_add(&f->wb_io_stuck, 1);	/* the thread takes it off once it completed */
	}
	pthread_mutex_unlock(&j->lock);
	if (left)
		return -EBUSY;
	wb_io_free(j);
	return 0;
inline_io:
	if (j)
		wb_io_free(j);
	wb_io_release(c, t);
	wb_submit(f, d->ios, d->nios);
	return 0;
}
