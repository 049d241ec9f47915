/* SPDX-License-Identifier: MIT */
/*
 * fileio.c - file I/O through the cache, coherent with every mapping of the
 * file as the kernel's unified page cache is: filemap_read() (upc_pread),
 * generic_perform_write() (upc_pwrite), ->setattr with truncate_pagecache()
 * (upc_ftruncate), ->fallocate with truncate_pagecache_range()
 * (upc_fallocate), vfs_fsync_range() (upc_fsync, upc_fdatasync) and
 * invalidate_inode_pages2_range() (upc_invalidate).
 *
 * The data goes through the same pages the mappings map: a cached page is
 * read or written in place through the engine's staging mapping (f->base),
 * an uncached one is read from the store with fill_run() (the fault path's
 * and the WILLNEED worker's read) or, when a write covers it whole, built
 * in a buffer and inserted with UFFDIO_COPY without reading it.
 *
 * I1, the write side (writeback.c has the rule): upc_pwrite marks a page
 * dirty under file->lock *before* it changes its bytes, and changes them
 * under the same hold.  Write-back protects, cleans and picks its pages
 * under file->lock too, so it either sees the page dirty, or cleaned it
 * before the lock was ours and the page is dirty again now: a clean page
 * never holds bytes the store has not been sent.  A page under write-back
 * may be written (no stable pages): it is dirty again and written once
 * more, as a write through a mapping during I/O is.
 *
 * The caller's buffer is never touched with file->lock held.  It may be an
 * upcache mapping (of this file or another): its fault would wait for a
 * file lock, or for the one handler thread busy with a fault that waits
 * for ours.  Data crosses a bounce buffer instead, IO_CHUNK pages at a
 * time, laid out at the file's page offsets so that whole pages in it can
 * be inserted as they are.
 *
 * Dropping pages (truncate, punch hole) never writes them back: they are
 * marked clean (probe "clean", how UPC_CLEAN_TRUNCATE) and punched out of
 * the memfd, which unmaps them from every mapping in every process, then
 * the emptied PTEs are write-protected again (I1: a page that comes back
 * must not be mapped writable by a kernel-served read).  Write-back in
 * flight over them is waited for first, so that no write lands in the
 * backing file after its truncation; pinned pages (I6) make the call fail
 * with -EBUSY and change nothing.  upc_invalidate drops only what reclaim
 * may (I3): reclaim_runs() tears down, re-checks and punches.
 *
 * The store's own truncation or hole punch is made without file->lock,
 * holding file->io_lock (store_unlock): the backing file's inode lock,
 * which the kernel's truncate waits for, can be held as long as a writer
 * of the file likes (a write(2) from a buffer whose fault it never
 * serves), and with file->lock held every fault and read of the file, in
 * every client of upcd, waited with it (upcd(8), BUGS, until this).  The
 * kernel's readers and faults do not wait for a truncation stuck on
 * i_rwsem either; its writers do, and so do upcache's (io_lock).
 *
 * A write past end of file takes the same care (upc_pwrite): its checks
 * and the space for its last block are asked of the store first
 * (grow_check), then the cache's size rises with the data, piece by
 * piece, as the kernel raises i_size in write_end after each copy, and the
 * store's file grows last (store_grow), both calls without file->lock.
 * The store's size is never ahead of the cache's: a reader that took it
 * (file_size_refresh, file_get) would see the new size before the data,
 * and a process that fstat(2)s the file and then touches its mapping up to
 * that size would get SIGBUS.  Meanwhile the store is shorter than the
 * file: what a read finds short there is a hole (f->store_behind,
 * fill_valid), as ext4's on-disk size lags i_size until write-back.
 */
#include "internal.h"
#include "usdt.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define IO_CHUNK	64u			/* pages copied per hold of file->lock (256 KiB) */
#define MAX_RW		(INT_MAX & UPC_PAGE_MASK)	/* the kernel's MAX_RW_COUNT */

enum access { ACC_ANY, ACC_READ, ACC_WRITE };

/* ------------------------------------------------------------ applied once */

__thread struct upc_once *upc_once_cur;

_Static_assert(sizeof(struct upc_state_hdr) <= UPC_ONCE_OFF &&
	       UPC_ONCE_OFF + UPC_ONCE_SLOTS * sizeof(struct upc_once_slot) <= UPC_PAGE_SIZE &&
	       UPC_ONCE_SLOTS % UPC_ONCE_WAYS == 0,
	       "the once slots share the state page with its header");

/*
 * Before a request of upcd's client changes @f (struct upc_once, in
 * internal.h): true, and its result in *@result, if an earlier daemon
 * applied it already (then it is not applied again); else it is noted as
 * being applied, and @f is held until the reply is sent.  f->io_lock held,
 * which every change of a file's bytes or size through a request takes,
 * so that no two requests' notes cross.
 */
static bool once_begin(struct upc_file *f, long *result)
{
	struct upc_once *o = upc_once_cur;
	struct upc_once_slot *set, *sl = NULL;

	if (!o || !o->seq || !f->state_hdr || o->held)
		return false;
	set = (struct upc_once_slot *)((char *)f->state_hdr + UPC_ONCE_OFF) +
	      ((o->who * 0x9e3779b97f4a7c15ull) >> 32) % (UPC_ONCE_SLOTS / UPC_ONCE_WAYS) * UPC_ONCE_WAYS;
	for (unsigned int i = 0; i < UPC_ONCE_WAYS && !sl; i++)
		if (atomic_load(&set[i].who) == o->who && atomic_load(&set[i].seq))
			sl = &set[i];
	if (sl && atomic_load(&sl->seq) == o->seq) {
		int64_t r = atomic_load(&sl->result);

		if (r != UPC_ONCE_APPLYING) {
			*result = (long)r;
			return true;
		}
	}
	/* the process's own slot, else a free one, else the least recently taken of the set */
	for (unsigned int i = 0; i < UPC_ONCE_WAYS && !sl; i++)
		if (!atomic_load(&set[i].seq))
			sl = &set[i];
	if (!sl) {
		sl = set;
		for (unsigned int i = 1; i < UPC_ONCE_WAYS; i++)
			if (atomic_load(&set[i].used) < atomic_load(&sl->used))
				sl = &set[i];
	}
	/* seq first, and last: a daemon killed in between leaves a slot that matches nothing */
	atomic_store(&sl->seq, 0);
	atomic_store(&sl->result, UPC_ONCE_APPLYING);
	atomic_store(&sl->who, o->who);
	atomic_store(&sl->used, now_ms());
	atomic_store(&sl->seq, o->seq);
	o->slot = sl;
	file_hold(f);
	o->held = f;
	return false;
}

/*
 * The request once_begin() let through is done, with @result.  One that
 * failed is not noted: sent again, it is tried again, which a failure
 * that changed nothing asks for (the daemon stopping under a pwrite:
 * -EIO), and which applies again one that failed half way (a truncation
 * whose file_grow() failed after the store's truncation: upcd(8), BUGS).
 * f->io_lock held.
 */
static void once_end(struct upc_file *f, long result)
{
	struct upc_once *o = upc_once_cur;

	if (!o || o->held != f || !o->slot)
		return;
	if (result < 0)
		atomic_store(&o->slot->seq, 0);
	else
		atomic_store(&o->slot->result, (int64_t)result);
	o->slot = NULL;
}

/* After the reply: the file once_begin() held may go (upcd.c, client_main). */
void upc_once_release(struct upc_once *o)
{
	if (o->held)
		file_put(o->held);
	o->held = NULL;
	o->slot = NULL;
}

/*
 * The file open on @fd, taken into the cache (file_get: created if the cache
 * does not hold it yet, grown if it grew), after checking that @fd allows
 * @acc.  A write needs write access, and @rdonly_err for O_RDONLY (what the
 * system call returns there); through an O_WRONLY @fd only to a file the
 * cache holds already with write access through another descriptor (as the
 * kernel's page cache does not ask which open file a write comes through;
 * LMDB writes its meta page through an O_WRONLY|O_DSYNC descriptor of the
 * file it maps): the cache reads what it caches, and cannot take a file in
 * through a descriptor it cannot read (-EACCES, as upc_map).  A read needs a
 * readable @fd (-EBADF, as read(2)).  ACC_ANY (fsync, invalidate): any
 * descriptor of a file the cache holds; one it does not hold yet must be
 * readable (-EACCES, as upc_map).  *@flp (if not NULL): @fd's file status
 * flags, as F_GETFL answered (upc_pwrite's O_DSYNC, which F_SETFL cannot
 * change after open(2)).
 */
static int fileio_get(struct upc_cache *c, int fd, enum access acc, int rdonly_err, struct upc_file **fp,
		      int *flp)
{
	int fl = sys_fd_flags(fd);
	int ret;

	if (flp)
		*flp = fl;

	/* O_PATH: no I/O, as read(2) says; the store would open the file again with more (upcd(8)) */
	if (fl < 0 || (fl & O_PATH))
		return -EBADF;
	fl &= O_ACCMODE;
	if (acc == ACC_READ && fl == O_WRONLY)
		return -EBADF;
	if (acc == ACC_WRITE && fl == O_RDONLY)
		return rdonly_err;
	if (acc == ACC_WRITE && fl == O_WRONLY) {
		ret = file_lookup(c, fd, fp);
		if (ret == 0 && !(*fp)->store_writable) {
			file_put(*fp);
			ret = -EACCES;
		}
		if (ret == 0)
			file_account(*fp);
		return ret == -ENOENT ? -EACCES : ret;
	}
	ret = file_get(c, fd, fp);
	if (ret == 0 && acc == ACC_WRITE && !(*fp)->store_writable) {
		file_put(*fp);
		ret = -EBADF;
	}
	if (ret == 0 && acc == ACC_WRITE)
		file_account(*fp);	/* upcd: its write-back counts against this client's user (wbpark.c) */
	return ret;
}

/* A bounce buffer for @pages pages (page-aligned: an O_DIRECT store reads into it too). */
static char *bounce_alloc(uint64_t pages)
{
	return aligned_alloc(UPC_PAGE_SIZE, pages << UPC_PAGE_SHIFT);
}

/* Pages a bounce buffer needs for @len bytes at @off: at most IO_CHUNK. */
static uint64_t bounce_pages(off_t off, size_t len)
{
	uint64_t span = (pg_round_up((uint64_t)off + len) - ((uint64_t)off & UPC_PAGE_MASK)) >> UPC_PAGE_SHIFT;

	return min_t(uint64_t, span, IO_CHUNK);
}

/* ------------------------------------------------------------ read */

UPC_API ssize_t upc_pread(struct upc_cache *c, int fd, void *buf, size_t len, off_t off)
{
	struct upc_file *f;
	uint64_t bpages;
	bool refreshed = false;
	size_t done = 0;
	char *bounce;
	int err = 0;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_pread(c, fd, buf, len, off);

	if (!c || off < 0 || (!buf && len))
		return -EINVAL;
	len = min_t(size_t, len, MAX_RW);
	if ((uint64_t)off + len > (uint64_t)INT64_MAX)
		return -EINVAL;
	err = fileio_get(c, fd, ACC_READ, -EBADF, &f, NULL);
	if (err < 0)
		return err;
	if (!len)
		goto out_put;
	bpages = bounce_pages(off, len);
	bounce = bounce_alloc(bpages);
	if (!bounce) {
		err = -ENOMEM;
		goto out_put;
	}
	while (done < len) {
		uint64_t pos = (uint64_t)off + done, base = pos & UPC_PAGE_MASK;
		uint64_t end = min_t(uint64_t, (uint64_t)off + len, base + (bpages << UPC_PAGE_SHIFT));
		uint64_t first = pos >> UPC_PAGE_SHIFT, p, q, last;
		long r = 0;

		reclaim_throttle(c);
		pthread_mutex_lock(&f->lock);
		if (pos >= (uint64_t)f->size && !refreshed) {
			file_size_refresh(f);	/* past the end the cache knows: look again, once */
			refreshed = true;
		}
		end = min_t(uint64_t, end, (uint64_t)f->size);
		if (pos >= end) {
			pthread_mutex_unlock(&f->lock);
			break;
		}
		/* The uncached pages of the piece are read from the store (file->lock held: the page lock). */
		last = (end - 1) >> UPC_PAGE_SHIFT;
		/*
		 * Pages upcd's reclaim thread is still punching are read once
		 * the punch is done (punch.c); after the refresh above, which
		 * may let go of the lock (file_grow()).  The size is looked at
		 * again after the read.
		 */
		if (!punch_wait(f, first, last, NULL)) {
			pthread_mutex_unlock(&f->lock);
			err = -EIO;	/* the cache is going */
			break;
		}
		for (p = first; (r = fill_run(f, &p, last, bounce, bpages, false, NULL)) > 0; p += (uint64_t)r)
			;
		if (r < 0)
			err = (int)r;
		/* What is cached from @pos on is copied; a short read may have moved end of file. */
		end = min_t(uint64_t, end, (uint64_t)f->size);
		if (pos >= end && !err) {	/* the file shrank behind the cache's back: end of file */
			pthread_mutex_unlock(&f->lock);
			break;
		}
		for (q = first; q <= last && page_uptodate(f, q); q++)
			;
		end = min_t(uint64_t, end, q << UPC_PAGE_SHIFT);
		if (end > pos)
			memcpy(bounce, f->base + pos, end - pos);
		pthread_mutex_unlock(&f->lock);
		if (atomic_load(&c->nr_cached) > c->high_pages)
			reclaim_kick(c);
		if (end <= pos) {
			if (!err)
				err = -EIO;	/* not cached, not readable, and not past end of file */
			break;
		}
		memcpy((char *)buf + done, bounce, end - pos);
		done += end - pos;
		if (err)
			break;
	}
	free(bounce);
out_put:
	file_put(f);
	/* As read(2): the bytes read before an error, else the error. */
	return done ? (ssize_t)done : err;
}

/* ------------------------------------------------------------ write */

/*
 * Before a write ending at @off + *@lenp, past end of file, changes
 * anything: the checks the kernel makes before it copies
 * (generic_write_checks), and the space for the last block.
 * RLIMIT_FSIZE (this process's: upcd's, for its clients' writes): a
 * write from past the limit is -EFBIG, and *@xfsz says the caller is to
 * send the process SIGXFSZ, as the kernel sends the writer (with no lock
 * held: a handler may write the file; never upcd); one across it is cut
 * short at it (*@lenp).  Only writes that extend the file are checked;
 * the kernel checks every one.  Then fallocate(2) with
 * FALLOC_FL_KEEP_SIZE over the last byte, which changes no size: ENOSPC,
 * EFBIG (the file system's largest file), EIO come now, with nothing
 * written, as they came when the store's file grew first, and the growth
 * after the data (store_grow) finds its block there (if the write fails
 * in between, the block stays allocated past end of file, unused).  A
 * store or file system that has no such fallocate (EOPNOTSUPP, or EINVAL
 * for the mode) goes on, if the store can truncate; else -EOPNOTSUPP.
 * Caller holds f->io_lock, not f->lock: the store's call waits for the
 * backing file's inode lock, which a writer of the file can hold as long
 * as it likes (the top of this file).
 */
static int grow_check(struct upc_file *f, uint64_t off, size_t *lenp, bool *xfsz)
{
	struct upc_cache *c = f->cache;
	uint64_t limit = fsize_limit();
	int ret;

	if (off + *lenp > limit) {
		if (off >= limit) {
			*xfsz = !c->serving;
			return -EFBIG;
		}
		*lenp = (size_t)(limit - off);
	}
	ret = store_fallocate(c->store, f->store_h, FALLOC_FL_KEEP_SIZE, (off_t)(off + *lenp) - 1, 1);
	if ((ret == -EOPNOTSUPP || ret == -EINVAL) && store_has_truncate(c->store))
		ret = 0;
	else if (ret == -EINVAL)
		ret = -EOPNOTSUPP;
	return ret;
}

/*
 * The store's file grows to the size the write gave the cache, as the
 * kernel raises i_size: fallocate(mode 0) over the last byte, which only
 * ever extends (the file may have grown behind the cache's back, and a
 * truncate to a size read just before could cut off what another writer
 * appended meanwhile).  A store or file system without fallocate gets a
 * truncate, unless the file is already as long.  Without file->lock, as
 * grow_check: the write waits for a held inode lock here, nothing else
 * does.  If it fails (EIO; grow_check saw to the space), the data stays in
 * the cache, dirty, and the error is a write-back error, for the next
 * upc_fsync or msync to report: the store's file grows when the pages are
 * written back, and until one growth succeeds, what a read finds short
 * past the store's end stays a hole (f->store_behind).  Caller holds
 * f->io_lock, not f->lock.
 */
static void store_grow(struct upc_file *f)
{
	struct upc_store *s = f->cache->store;
	off_t size, now;
	int ret;

	pthread_mutex_lock(&f->lock);
	size = f->size;
	pthread_mutex_unlock(&f->lock);
	if (size <= 0)
		return;
	/* UPC_DEBUG=grow-pause, tests only: a read, an error rule between the data and the growth. */
	if (__builtin_expect(f->cache->debug & UPC_DBG_GROW_PAUSE, 0))
		usleep(1500000);
	ret = store_fallocate(s, f->store_h, 0, size - 1, 1);
	if (ret == -EOPNOTSUPP) {
		if (store_size(s, f->store_h, &now) == 0 && now >= size)
			ret = 0;
		else
			ret = store_truncate(s, f->store_h, size);
	}
	pthread_mutex_lock(&f->lock);
	if (ret < 0)
		errseq_set(f, ret);
	else
		f->store_behind = false;
	file_store_changed(f);	/* a readahead read meanwhile found the store short */
	pthread_mutex_unlock(&f->lock);
}

/*
 * Write [pos, end) from @data (whose byte 0 is file offset @base) into the
 * cache.  Caller holds f->lock, has filled the partial pages that need the
 * store's bytes and made the file long enough.  Returns the bytes written
 * (from @pos, whole pages first to last), or a negative errno.
 */
static long write_pages(struct upc_file *f, char *data, uint64_t base, uint64_t pos, uint64_t end)
{
	uint64_t first = pos >> UPC_PAGE_SHIFT, last = (end - 1) >> UPC_PAGE_SHIFT;

	for (uint64_t p = first; p <= last;) {
		uint64_t ps = p << UPC_PAGE_SHIFT, q, n;
		struct upc_page *pg = pt_get(f, p);
		size_t skipped;
		long r;

		if (!pg)
			return p > first ? (long)(ps - pos) : -ENOMEM;
		if (pg->flags & PG_UPTODATE) {
			uint64_t s = max_t(uint64_t, pos, ps), e = min_t(uint64_t, end, ps + UPC_PAGE_SIZE);

			/* Dirty first, then the bytes: see the top of this file (I1). */
			trace_dirty(f, pg, p, 0, 0);
			page_set_dirty(f, pg);
			memcpy(f->base + s, data + (s - base), e - s);
			p++;
			continue;
		}
		/*
		 * A run of uncached pages: built in @data and inserted whole.
		 * What the write does not cover of its first and last page
		 * lies past end of file (the caller filled the others): zeros.
		 */
		for (q = p + 1; q <= last && !page_uptodate(f, q); q++)
			;
		n = q - p;
		if (pos > ps)
			memset(data + (ps - base), 0, pos - ps);
		if (end < (q << UPC_PAGE_SHIFT))
			memset(data + (end - base), 0, (q << UPC_PAGE_SHIFT) - end);
		r = staging_insert(f, p, n, data + (ps - base), &skipped);
		if (r <= 0)
			return p > first ? (long)(ps - pos) : (r < 0 ? r : -EIO);
		n = (uint64_t)r;
		if (skipped)	/* a page was there after all: the write goes into it */
			memcpy(f->base + max_t(uint64_t, pos, ps), data + (max_t(uint64_t, pos, ps) - base),
			       min_t(uint64_t, end, (p + n) << UPC_PAGE_SHIFT) - max_t(uint64_t, pos, ps));
		for (uint64_t i = p; i < p + n; i++) {
			struct upc_page *ip = pt_get(f, i);

			if (!(ip->flags & PG_UPTODATE))
				page_add(f, i, ip);
			/* Nobody saw it clean with these bytes: the lock was held from the insert. */
			trace_dirty(f, ip, i, 0, 0);
			page_set_dirty(f, ip);
		}
		p += n;
	}
	return (long)(end - pos);
}

UPC_API ssize_t upc_pwrite(struct upc_cache *c, int fd, const void *buf, size_t len, off_t off)
{
	struct upc_file *f;
	uint64_t bpages;
	size_t done = 0;
	char *data, *fillbuf;
	bool grew = false, xfsz = false;
	long once;
	int err, fl;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_pwrite(c, fd, buf, len, off);

	if (!c || off < 0 || (!buf && len))
		return -EINVAL;
	len = min_t(size_t, len, MAX_RW);
	if ((uint64_t)off + len > (uint64_t)INT64_MAX)
		return -EFBIG;
	err = fileio_get(c, fd, ACC_WRITE, -EBADF, &f, &fl);
	if (err < 0)
		return err;
	if (!len)
		goto out_put;
	/*
	 * Address space to stage the whole write in first: -EFBIG before
	 * anything has changed.  Up to RLIMIT_FSIZE, where a file past it is
	 * refused: a write across it is cut short there (grow_check).
	 */
	pthread_mutex_lock(&f->lock);
	err = file_reserve(f, (uint64_t)off + len);
	if (err == -EFBIG) {
		uint64_t limit = fsize_limit();

		if ((uint64_t)off + len > limit)
			err = file_reserve(f, limit);
	}
	pthread_mutex_unlock(&f->lock);
	if (err < 0)
		goto out_put;
	bpages = bounce_pages(off, len);
	data = bounce_alloc(bpages + 1);
	if (!data) {
		err = -ENOMEM;
		goto out_put;
	}
	fillbuf = data + (bpages << UPC_PAGE_SHIFT);
	pthread_mutex_lock(&f->io_lock);
	if (once_begin(f, &once)) {
		/* applied by a daemon that died before it answered: not again (O_DSYNC below is) */
		if (once < 0)
			err = (int)once;
		else
			done = (size_t)once;
		len = 0;
	}
	/*
	 * Past end of file: the checks, and the space, first (grow_check).
	 * The size the cache knows: a file grown behind its back since is
	 * looked at in the loop, and its check asked for space it has.
	 */
	pthread_mutex_lock(&f->lock);
	grew = len && (uint64_t)off + len > (uint64_t)f->size;
	pthread_mutex_unlock(&f->lock);
	if (grew)
		err = grow_check(f, (uint64_t)off, &len, &xfsz);
	while (!err && done < len) {
		uint64_t pos = (uint64_t)off + done, base = pos & UPC_PAGE_MASK;
		uint64_t end = min_t(uint64_t, (uint64_t)off + len, base + (bpages << UPC_PAGE_SHIFT));
		uint64_t edges[2] = { pos >> UPC_PAGE_SHIFT, (end - 1) >> UPC_PAGE_SHIFT };
		long r = 0;
		bool busy;

		/* Outside the lock: the caller's buffer may be a mapping (the top of this file). */
		memcpy(data + (pos - base), (const char *)buf + done, end - pos);
		dirty_balance(f);	/* upcd: its user's dirty limit (dirtylimit.c) */
		reclaim_throttle(c);
		pthread_mutex_lock(&f->lock);
		/* Past the end the cache knows: the file may have grown behind its back, and the edges read what is there. */
		if (end > (uint64_t)f->size)
			file_size_refresh(f);
		/*
		 * The pages this write may add are write-protected in every
		 * mapping now, before the edges are read: file_grow() in step 2
		 * then has nothing left to protect, so it never lets go of the
		 * lock (a fork in flight, internal.h) between reading an edge
		 * and writing into it, where reclaim could take the page and
		 * the bytes of it that this write does not cover would be lost.
		 */
		if (end > (uint64_t)f->size) {
			bool yielded;

			/* as far as file_grow() will: never fewer pages than now */
			file_wp_extend(f, max_t(uint64_t, pg_round_up(end) >> UPC_PAGE_SHIFT, f->npages), &yielded);
		}
		/*
		 * Pages upcd is still punching (punch.c) are not read nor
		 * written into before the punch is done (below).
		 */
		busy = punch_busy(f, edges[0], edges[1]);
		/*
		 * 1. A partial page the store has bytes of, and the cache does not
		 * hold, is read first (the kernel's write_begin); a page wholly
		 * written, or past end of file, is not.
		 */
		for (int i = 0; i < 2 && r >= 0 && !busy; i++) {
			uint64_t p = edges[i], ps = p << UPC_PAGE_SHIFT;
			bool partial = pos > ps || end < ps + UPC_PAGE_SIZE;

			if ((i && p == edges[0]) || !partial || page_uptodate(f, p) || ps >= (uint64_t)f->size)
				continue;
			r = fill_run(f, &p, p, fillbuf, 1, false, NULL);
		}
		/*
		 * Nor does a punch that a fill queued, having found the file
		 * shrunk behind the cache (file_shrunk, file_drop_pages; review of
		 * 5ef6ea3): the piece starts again once it is done, as the wait
		 * let go of the lock.
		 */
		if (busy || (r >= 0 && punch_busy(f, edges[0], edges[1]))) {
			bool going = !punch_wait(f, edges[0], edges[1], NULL);

			pthread_mutex_unlock(&f->lock);
			if (going) {
				err = -EIO;
				break;
			}
			continue;
		}
		/*
		 * 2. Past end of file: the cache's size, under the same hold as
		 * the copy (the kernel's write_end); the store's file grows
		 * after (store_grow), and is short meanwhile.  A readahead read
		 * in flight since before would take that for a shrink.
		 */
		if (r >= 0 && end > (uint64_t)f->size) {
			off_t was = f->size;

			r = file_grow(f, (off_t)end);
			if (r >= 0 && !f->store_behind) {
				file_store_changed(f);
				f->store_behind = true;
				f->behind_from = was;
			}
			grew = true;
		}
		/* 3. Dirty, then copy. */
		if (r >= 0)
			r = write_pages(f, data, base, pos, end);
		pthread_mutex_unlock(&f->lock);
		if (atomic_load(&c->nr_cached) > c->high_pages)
			reclaim_kick(c);
		if (r < 0) {
			err = (int)r;
			break;
		}
		done += (size_t)r;
		if ((uint64_t)r < end - pos) {
			err = -ENOMEM;
			break;
		}
	}
	if (grew && f->store_behind)	/* without f->lock: set and cleared with io_lock held (or before the file is seen) */
		store_grow(f);
	if (len)
		once_end(f, done ? (long)done : err);
	pthread_mutex_unlock(&f->io_lock);
	free(data);
	/*
	 * An O_DSYNC or O_SYNC descriptor: the kernel's generic_write_sync().
	 * What was written is written back and made durable before the call
	 * returns; if that fails, the call fails (the bytes stay cached and
	 * dirty, and are written again later).  The flags are those
	 * fileio_get() read: F_SETFL cannot change O_DSYNC or O_SYNC.
	 */
	if (done && fl >= 0 && (fl & O_DSYNC)) {
		err = writeback_range(f, (uint64_t)off >> UPC_PAGE_SHIFT, ((uint64_t)off + done - 1) >> UPC_PAGE_SHIFT,
				      WB_SYNC | ((fl & O_SYNC) == O_SYNC ? WB_FSYNC : 0), NULL);
		if (err < 0)
			done = 0;
	}
out_put:
	file_put(f);
	if (xfsz)	/* past RLIMIT_FSIZE (grow_check), as generic_write_checks sends it; no lock held */
		raise(SIGXFSZ);
	/* As write(2): the bytes written before an error, else the error. */
	return done ? (ssize_t)done : err;
}

/* ------------------------------------------------------------ dropping pages */

/* Is a page of [first, last] pinned?  Caller holds f->lock. */
static bool range_has_pins(struct upc_file *f, uint64_t first, uint64_t last)
{
	if (!f->nr_pinned)
		return false;
	for (uint64_t p = first; p <= last && p < f->npages; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;
			continue;
		}
		if (pg->pincount)
			return true;
	}
	return false;
}

/*
 * Wait until no page of [wb_first, wb_last] is under write-back (a write in
 * flight must not land after the store's file is cut), then return 0, or
 * -EBUSY if a page of [pin_first, pin_last] is pinned (I6; an empty range
 * when pin_first > pin_last).  Caller holds f->lock, which the wait drops.
 */
static int range_quiesce(struct upc_file *f, uint64_t pin_first, uint64_t pin_last, uint64_t wb_first,
			 uint64_t wb_last)
{
	for (;;) {
		uint64_t l = min_t(uint64_t, wb_last, f->npages ? f->npages - 1 : 0);

		if (pin_first <= pin_last && range_has_pins(f, pin_first, pin_last))
			return -EBUSY;
		/* No punch chain of the file in flight either: the caller's punch may be one (file_drop_pages). */
		if (punch_busy(f, 0, UINT64_MAX)) {
			punch_settle(f);
			if (!punch_busy(f, 0, UINT64_MAX))
				continue;	/* look at pins and write-back again: the lock was let go */
		}
		if (!f->npages || wb_first > l || !has_writeback(f, wb_first, l))
			return 0;
		wb_wait(f);
	}
}

/*
 * Let go of f->lock for a change of the store's file over pages [first,
 * last] (a truncation's, a hole punch's), made holding f->io_lock only
 * (above).  Until store_relock(), no write-back starts there (writeback.c:
 * a data-integrity one waits), and range_quiesce() has waited for those in
 * flight; pages read in meanwhile are dropped or zeroed after, as the
 * caller would have dropped and zeroed them, and a readahead read that
 * ends after it is not inserted (file_store_changed).  A pin of those
 * pages waits for it (control.c), as range_quiesce() refused the ones
 * before.  Caller holds f->lock and f->io_lock.
 */
static void store_unlock(struct upc_file *f, uint64_t first, uint64_t last)
{
	f->store_first = first;
	f->store_last = last;
	f->store_busy = true;
	pthread_mutex_unlock(&f->lock);
}

static void store_relock(struct upc_file *f)
{
	pthread_mutex_lock(&f->lock);
	/*
	 * A punch chain queued meanwhile (an eviction, a fault's stray page,
	 * punch.c) is waited for, without the lock, before the caller queues
	 * its own (one a file; else file_drop_pages punches under the lock),
	 * and with the mark still up: no write-back starts there meanwhile.
	 */
	punch_settle(f);
	f->store_busy = false;
	file_store_changed(f);	/* a readahead read in flight may hold what the file had before */
	pthread_cond_broadcast(&f->wb_cond);
}

/* Take the cached pages of [first, end) out of the page table.  Caller holds f->lock. */
static void pages_remove(struct upc_file *f, uint64_t first, uint64_t end)
{
	for (uint64_t p = first; p < end; p++) {
		if (!f->chunks[p >> PT_CHUNK_SHIFT]) {
			p |= PT_CHUNK_PAGES - 1;
			continue;
		}
		if (page_uptodate(f, p)) {
			UPC_TRACE(evict, f, p, 1);
			page_remove(f, p);
		}
	}
}

/*
 * Drop the cached pages of [first, end) (page offsets) without writing them
 * back: the kernel's truncate_inode_pages_range().  Dirty ones are counted
 * clean first; the punch unmaps them from every mapping in every process;
 * the emptied PTEs are write-protected again.  None is pinned or under
 * write-back (range_quiesce).  In upcd the punch goes through the punch
 * thread (punch.c, punch_settle), as an eviction's does: the pages leave
 * the page table now, a fault on one waits for the chain, and the caller
 * waits for it once it may let go of the lock (punch_settle).  Caller
 * holds f->lock.
 */
void file_drop_pages(struct upc_file *f, uint64_t first, uint64_t end)
{
	struct run r, *chain;

	end = min_t(uint64_t, end, f->npages);
	if (first >= end)
		return;
	for (uint64_t p = first; p < end; p++) {
		struct upc_page *pg = pt_lookup(f, p);

		if (!pg) {
			p |= PT_CHUNK_PAGES - 1;
			continue;
		}
		if ((pg->flags & PG_UPTODATE) && (pg->flags & PG_DIRTY)) {
			pg->flags &= ~(PG_DIRTY | PG_URGENT);
			f->nr_dirty--;
			UPC_TRACE(clean, f, p, 1, UPC_CLEAN_TRUNCATE);
		}
	}
	dirty_account(f);
	if (f->cache->punch && !f->punch && (chain = malloc(sizeof(*chain)))) {
		uint64_t pages = 0;

		*chain = (struct run){ first, end - first };
		for (uint64_t p = first; p < end; p++) {
			if (!f->chunks[p >> PT_CHUNK_SHIFT]) {
				p |= PT_CHUNK_PAGES - 1;
				continue;
			}
			pages += page_uptodate(f, p);
		}
		/* Out of the page table, still counted cached until the chain completes (reclaim_runs). */
		if (punch_queue(f, chain, 1, pages, NULL) == 0) {
			pages_remove(f, first, end);
			atomic_fetch_add(&f->cache->nr_cached, pages);
			protect_runs(f, chain, 1);	/* the markers before the punch, as reclaim_runs puts them */
			return;
		}
		free(chain);
	}
	/* The punch zaps every PTE of the pages, in every process. */
	if (sys_punch(f->memfd, (off_t)(first << UPC_PAGE_SHIFT), (off_t)((end - first) << UPC_PAGE_SHIFT)) < 0) {
		/* They stay cached and in the page table: forgotten, they would be unaccounted memory. */
		pr_warn("punch of pages %llu-%llu failed: they stay cached\n", (unsigned long long)first,
			(unsigned long long)end - 1);
		return;
	}
	pages_remove(f, first, end);
	r = (struct run){ first, end - first };
	protect_runs(f, &r, 1);
}

/* Zero [from, to) of the cached page that holds it, if it is cached.  Caller holds f->lock. */
static void zero_cached(struct upc_file *f, uint64_t from, uint64_t to)
{
	if (from < to && page_uptodate(f, from >> UPC_PAGE_SHIFT))
		memset(f->base + from, 0, to - from);
}

/* ------------------------------------------------------------ truncate */

UPC_API int upc_ftruncate(struct upc_cache *c, int fd, off_t length)
{
	struct upc_file *f;
	uint64_t newpages, keep;
	bool dropped = false;
	long once;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_ftruncate(c, fd, length);

	if (!c || length < 0)
		return -EINVAL;
	ret = fileio_get(c, fd, ACC_WRITE, -EINVAL, &f, NULL);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&f->lock);
	ret = file_reserve(f, (uint64_t)length);	/* -EFBIG before the store's file changes */
	pthread_mutex_unlock(&f->lock);
	if (ret < 0)
		goto out_put;
	newpages = pg_round_up((uint64_t)length) >> UPC_PAGE_SHIFT;
	pthread_mutex_lock(&f->io_lock);
	if (once_begin(f, &once)) {
		pthread_mutex_unlock(&f->io_lock);
		ret = (int)once;
		goto out_put;
	}
	pthread_mutex_lock(&f->lock);
	/*
	 * The pages kept: those below the new end, and below the size the
	 * cache knows (a file found shrunk behind its back by a short read
	 * keeps cached pages past its size, fill_valid(): they go too).
	 * Pinned pages past them make it -EBUSY, and nothing changes (I6); a
	 * pinned new last page stays, only its tail is zeroed.  Write-back in
	 * flight from the new last page on is waited for.
	 */
	keep = min_t(uint64_t, newpages, pg_round_up((uint64_t)f->size) >> UPC_PAGE_SHIFT);
	if (keep < f->npages || length < f->size)
		ret = range_quiesce(f, keep, UINT64_MAX,
				    min_t(uint64_t, (uint64_t)length, (uint64_t)f->size) >> UPC_PAGE_SHIFT, UINT64_MAX);
	/* The store's file first: if it fails, nothing has changed. */
	if (ret == 0) {
		store_unlock(f, min_t(uint64_t, (uint64_t)length, (uint64_t)f->size) >> UPC_PAGE_SHIFT, UINT64_MAX);
		ret = store_truncate(c->store, f->store_h, length);
		store_relock(f);
		if (ret == 0)
			f->store_behind = false;	/* its size is the file's again (a growth that failed: store_grow) */
	}
	keep = min_t(uint64_t, newpages, pg_round_up((uint64_t)f->size) >> UPC_PAGE_SHIFT);
	if (ret == 0 && (keep < f->npages || length < f->size)) {
		/*
		 * The kernel's truncate_setsize() + truncate_pagecache(): the new
		 * size first (a fault past it raises SIGBUS from now on), then the
		 * pages past it go from every mapping without write-back, then the
		 * tail of the new last page reads as zeros.
		 */
		uint64_t old = f->npages;
		bool shrink = length < f->size;

		if (shrink)
			file_set_size(f, length);
		file_drop_pages(f, keep, old);
		dropped = true;
		f->npages = keep;
		if (shrink && (length & (UPC_PAGE_SIZE - 1)))
			zero_cached(f, (uint64_t)length, pg_round_up((uint64_t)length));
	}
	/* Growing: file_grow() zeroes what mappings stored past the old end. */
	if (ret == 0 && length > f->size)
		ret = file_grow(f, length);
	if (dropped)
		punch_settle(f);	/* the punch of the pages past the end, without the lock (file_drop_pages) */
	pthread_mutex_unlock(&f->lock);
	once_end(f, ret);
	pthread_mutex_unlock(&f->io_lock);
out_put:
	file_put(f);
	/*
	 * Past RLIMIT_FSIZE the store's truncate is EFBIG, without the
	 * kernel's SIGXFSZ (sys_ftruncate takes it back: upcd must never get
	 * one): an embedded cache's process gets it here, with no lock held,
	 * as from ftruncate(2).
	 */
	if (ret == -EFBIG && !c->serving && fsize_limit() < (uint64_t)length)
		raise(SIGXFSZ);
	return ret;
}

/* ------------------------------------------------------------ fallocate */

/* FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: the kernel's truncate_pagecache_range(). */
static int punch_hole(struct upc_file *f, off_t off, off_t len)
{
	uint64_t start = (uint64_t)off, end = (uint64_t)off + (uint64_t)len;
	uint64_t full_first = pg_round_up(start) >> UPC_PAGE_SHIFT, full_end = end >> UPC_PAGE_SHIFT;
	int ret = 0;

	/*
	 * Pinned pages wholly in the hole: -EBUSY (I6).  Write-back in flight
	 * is waited for over the edge pages too: a write of their old bytes
	 * must not land after the punch.
	 */
	ret = full_first < full_end ?
	      range_quiesce(f, full_first, full_end - 1, start >> UPC_PAGE_SHIFT, (end - 1) >> UPC_PAGE_SHIFT) :
	      range_quiesce(f, 1, 0, start >> UPC_PAGE_SHIFT, (end - 1) >> UPC_PAGE_SHIFT);
	if (ret == 0) {
		store_unlock(f, start >> UPC_PAGE_SHIFT, (end - 1) >> UPC_PAGE_SHIFT);
		ret = store_fallocate(f->cache->store, f->store_h,
				      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
		store_relock(f);
	}
	if (ret < 0)
		return ret;
	/*
	 * Pages wholly in the hole go without write-back.  The edges are
	 * zeroed in place: the store zeroed the same bytes, so a clean edge
	 * page still equals the store and stays clean, and a dirty one is
	 * written back whole later, zeros included.
	 */
	if (full_first < full_end)
		file_drop_pages(f, full_first, full_end);
	if (full_first > full_end) {	/* the hole lies within one page */
		zero_cached(f, start, end);
	} else {
		zero_cached(f, start, min_t(uint64_t, end, full_first << UPC_PAGE_SHIFT));
		zero_cached(f, max_t(uint64_t, start, full_end << UPC_PAGE_SHIFT), end);
	}
	return 0;
}

UPC_API int upc_fallocate(struct upc_cache *c, int fd, int mode, off_t off, off_t len)
{
	struct upc_file *f;
	long once;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_fallocate(c, fd, mode, off, len);

	if (!c || off < 0 || len <= 0)
		return -EINVAL;
	/* As vfs_fallocate(): a hole punched must keep the size. */
	if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)))
		return -EOPNOTSUPP;
	if (off > INT64_MAX - len)
		return -EFBIG;
	ret = fileio_get(c, fd, ACC_WRITE, -EBADF, &f, NULL);
	if (ret < 0)
		return ret;
	if (mode == 0) {
		pthread_mutex_lock(&f->lock);
		ret = file_reserve(f, (uint64_t)off + (uint64_t)len);	/* before the store's file changes */
		pthread_mutex_unlock(&f->lock);
		if (ret < 0)
			goto out_put;
	}
	pthread_mutex_lock(&f->io_lock);
	if (once_begin(f, &once)) {
		pthread_mutex_unlock(&f->io_lock);
		ret = (int)once;
		goto out_put;
	}
	pthread_mutex_lock(&f->lock);
	if (mode & FALLOC_FL_PUNCH_HOLE) {
		ret = punch_hole(f, off, len);
		punch_settle(f);	/* its punch, without the lock (file_drop_pages) */
	} else {
		/* Allocation changes no byte of the file: without f->lock, and no page kept from write-back. */
		pthread_mutex_unlock(&f->lock);
		ret = store_fallocate(c->store, f->store_h, mode, off, len);
		pthread_mutex_lock(&f->lock);
		file_store_changed(f);
		/* Mode 0 extends the file, as the store's did. */
		if (ret == 0 && mode == 0)
			ret = file_grow(f, off + len);
	}
	pthread_mutex_unlock(&f->lock);
	once_end(f, ret);
	pthread_mutex_unlock(&f->io_lock);
out_put:
	file_put(f);
	return ret;
}

/* ------------------------------------------------------------ fsync */

/*
 * vfs_fsync_range() over the whole file: write back every dirty page in
 * the I1 order and wait (writeback_range, WB_SYNC), then make it durable.
 * Errors are errseq_t's, with one cursor per file in the cache
 * (f->fsync_seen), which stands for the struct file's f_wb_err that
 * fsync(2) reads: every upc_fsync/upc_fdatasync of the file through this
 * cache shares it, whatever descriptor it is given.  An error is reported
 * once to them (and, separately, once through every mapping's msync), as
 * the kernel reports it once per open file description.  The cursor
 * starts where the cache took the file, and a file the cache releases
 * hands an unreported error to upc_cache_destroy() (cache.c).
 */
static int file_sync(struct upc_cache *c, int fd, int how)
{
	struct upc_file *f;
	uint64_t held = 0;
	int ret, err;

	if (!c)
		return -EINVAL;
	ret = fileio_get(c, fd, ACC_ANY, 0, &f, NULL);
	if (ret < 0)
		return ret;
	err = writeback_range(f, 0, UINT64_MAX, WB_SYNC | how, &held);
	pthread_mutex_lock(&f->lock);
	if (!err)
		err = errseq_check(f, &f->fsync_seen);
	else	/* this call's own error is the one it reports */
		f->fsync_seen = f->err_reported = f->err_seq;
	pthread_mutex_unlock(&f->lock);
	file_put(f);
	if (err)
		return err;
	return held > INT32_MAX ? INT32_MAX : (int)held;
}

UPC_API int upc_fsync(struct upc_cache *c, int fd)
{
	if (c && c->client)
		return client_fsync(c, fd, false);
	return file_sync(c, fd, WB_FSYNC);
}

UPC_API int upc_fdatasync(struct upc_cache *c, int fd)
{
	if (c && c->client)
		return client_fsync(c, fd, true);
	return file_sync(c, fd, 0);
}

/* ------------------------------------------------------------ invalidate */

UPC_API int upc_invalidate(struct upc_cache *c, int fd, off_t off, off_t len)
{
	struct run *runs = NULL;
	size_t nr = 0, cap = 0;
	uint64_t first, last;
	struct upc_file *f;
	bool busy = false;
	int ret;

	if (c && c->client)	/* UPC_CACHE_SHARED: upcd serves it (client.c) */
		return client_invalidate(c, fd, off, len);

	if (!c || off < 0 || len < 0)
		return -EINVAL;
	ret = fileio_get(c, fd, ACC_ANY, 0, &f, NULL);
	if (ret < 0)
		return ret;
	first = (uint64_t)off >> UPC_PAGE_SHIFT;
	last = len == 0 || off > INT64_MAX - len ? UINT64_MAX :
	       ((uint64_t)off + (uint64_t)len - 1) >> UPC_PAGE_SHIFT;
	pthread_mutex_lock(&f->lock);
	punch_settle(f);	/* one chain a file: its punch below is one (reclaim_runs) */
	wb_finish_parked(f);	/* a parked write-back (wbpark.c) is not one in flight; after the wait */
	file_store_changed(f);	/* a readahead read in flight holds what the file had before (fill_run) */
	file_size_refresh(f);
	if (first < f->npages) {
		last = min_t(uint64_t, last, f->npages - 1);
		/* Async tracking: a page written through a mapping is dirty, not clean. */
		track_collect(f, first, last);
		for (uint64_t p = first; p <= last; p++) {
			struct upc_page *pg = pt_lookup(f, p);

			if (!pg) {
				p |= PT_CHUNK_PAGES - 1;
				continue;
			}
			if (!(pg->flags & PG_UPTODATE))
				continue;
			if ((pg->flags & (PG_DIRTY | PG_WRITEBACK)) || pg->pincount)
				busy = true;
			else if (runs_add(&runs, &nr, &cap, p) < 0)
				busy = true;
		}
		/*
		 * I3: torn down first (what clients map writable under
		 * asynchronous tracking, by them: reclaim.c, unmap_elsewhere;
		 * a page one still maps is kept), dirty checked again after,
		 * then punched.
		 */
		unmap_elsewhere(f, &runs, &nr, false);
		if (nr)
			reclaim_runs(f, runs, nr, NULL, 0, true);
		for (uint64_t p = first; !busy && p <= last; p++) {
			if (!f->chunks[p >> PT_CHUNK_SHIFT]) {
				p |= PT_CHUNK_PAGES - 1;
				continue;
			}
			busy = page_uptodate(f, p);
		}
		if (nr)
			punch_settle(f);
	}
	pthread_mutex_unlock(&f->lock);
	free(runs);
	file_put(f);
	return busy ? -EBUSY : 0;
}
