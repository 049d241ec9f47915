/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the engine's objects and how they nest.
 *
 *   struct upc_cache     one per upc_cache_create(): options, the store, the
 *                        files, the background writer.  (The whole "mm" of
 *                        the kernel analogy: page cache + reclaim + flusher.)
 *   struct upc_file      one per backing file (st_dev/st_ino): the kernel's
 *                        struct address_space.  Its pages live in a memfd at
 *                        the file's offsets; @chunks is its page table of
 *                        struct upc_page descriptors; @rmap lists every
 *                        mapping of it (the kernel's i_mmap).  Reference
 *                        counted (@refs) and released when unused, like an
 *                        inode in the kernel's inode cache (below).
 *   struct upc_page      8 bytes per page of the file: the kernel's struct
 *                        page flags and counts.
 *   struct upc_mm        one per client address space: its userfaultfd, its
 *                        pagemap fd, its fault-handler thread and its
 *                        mappings sorted by address (the kernel's mm_struct).
 *                        Embedded mode has exactly one, the process itself;
 *                        nothing below assumes the faulting process is ours.
 *   struct upc_map       one mapping (the kernel's VMA): an address range of
 *                        one mm over one file at a page offset.
 *
 * Lock ordering (outermost first), in the style of mm/rmap.c:
 *
 *   cache->lock                      (files list, unused-file LRU, file->evict)
 *     mm->lock  (rwlock)             (an mm's mappings; read for faults and msync)
 *       file->lock                   (page table, rmap, counters, errseq)
 *         cache->wb_lock             (background writer's wakeup state)
 *         punch_ctl->lock            (upcd: evictions queued for the punch thread)
 *   cache->zap_lock                  (upcd: clients' reclaim channels, one zap at a
 *                                     time; taken with no other lock held: zap.c)
 *   cache->zap_late_lock             (a leaf: zaps answered late, zap.c)
 *   cache->rc_lock                   (a leaf: the reclaim thread's wake-ups; taken
 *                                     under file->lock too, reclaim_kick, reclaim_late)
 *   cache->dirty_lock                (a leaf: upcd's accounts of dirty pages; taken
 *                                     under file->lock and mm->lock too, dirtylimit.c)
 *
 * file->io_lock (the kernel's i_rwsem for writers) is taken before file->lock,
 * by upc_pwrite, upc_ftruncate and upc_fallocate, and held across a
 * truncation's or hole punch's call into the store, which can wait for the
 * backing file's inode lock as long as another writer holds it, with
 * file->lock let go (fileio.c, store_unlock): the pages it changes are
 * marked (file->store_busy), and a data-integrity write-back and a pin of
 * them wait on file->wb_cond until it is done.
 *
 * Fill I/O runs with file->lock held (that is what makes a page "locked"
 * while it is read: faults on the same file wait), but for the readahead
 * workers': they let go of it across the store's read, with the pages
 * they read listed in file->fill_busy (the kernel's locked pages: a MISSING
 * fault on one waits on file->wb_cond), and insert only if file->store_gen
 * has not moved meanwhile (control.c, fill_run).  Write-back I/O runs
 * without it, with PG_WRITEBACK set on the pages; msync(SYNC) waits on
 * file->wb_cond for write-back in flight, as write_cache_pages() waits on
 * PG_writeback.  File I/O (fileio.c) takes file->lock as a fault does; it
 * never touches the caller's buffer with it held (the buffer may be a
 * mapping, whose fault would need the lock), and truncation and hole
 * punching wait on file->wb_cond as msync(SYNC) does.  file_grow() may let
 * go of file->lock for a moment (a mapping's mm is forking while the new
 * pages are write-protected: map.c, file_wp_extend()), as the other
 * page-table changes that meet a fork do (fork_yield_file()): its callers
 * hold nothing across it that another holder of the lock may change
 * (upc_pwrite protects the new pages first, so that it does not).  So does
 * mm_call_file() (remote.c), while a client of upcd munmaps, mprotects or
 * madvises its own addresses, which it may take its time to do: what the
 * lock kept out is made safe before (map.c, map_forget_remote(); reclaim.c,
 * dontneed_piece()).  No thread the whole cache shares holds file->lock
 * across a system call that takes the data memfd's inode lock, which a
 * client of upcd can hold (punch.c, "Evictions punched without
 * file->lock"): upcd's reclaim thread, truncations, hole punches and drops
 * have their punches made by a thread of their own, through an io_uring
 * (punch_settle), and the pages of a punch in flight are
 * listed in file->punch (a fault on one waits on file->wb_cond, a fill
 * waits for it or leaves it out).
 *
 * File lifetime (the kernel's iget/iput and inode LRU; cache.c has the
 * policy).  file->refs counts every mapping (in any mm, forked children's
 * included) and every user of the file outside cache->lock: the background
 * writer's pass, the reclaim thread's clock hand, upc_drop's walk, queued
 * readahead work.  A reference is taken either from one the caller already
 * holds (a mapping, under mm->lock) or under cache->lock while the file is
 * on cache->files: so a file at refs 0 seen under cache->lock stays at 0,
 * and only then may it be released (taken off cache->files under the lock,
 * freed after it).  file_put() takes cache->lock when it may drop the last
 * reference: never call it with mm->lock or file->lock held, unless the
 * caller holds another reference.  Walking cache->files needs cache->lock
 * or a reference to the file one stands on.  At refs 0 a file goes on
 * cache->unused, the inode LRU, with its cached pages (dirty ones too, until
 * written back); it is released once clean if its backing file is unlinked,
 * if nothing of it is cached, or if it falls past max_unused =
 * min(64, RLIMIT_NOFILE soft limit / 8) - two descriptors and >= 4 GiB of
 * reserved address space each.
 */
#ifndef UPC_INTERNAL_H
#define UPC_INTERNAL_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "upcache.h"
#include "compat.h"

#define UPC_PAGE_SHIFT	12
#define UPC_PAGE_SIZE	(1UL << UPC_PAGE_SHIFT)
#define UPC_PAGE_MASK	(~(UPC_PAGE_SIZE - 1))

#define UPC_RA_MAX_DEFAULT	512u		/* 2 MiB */
/*
 * Readahead workers: two store reads in flight (issue 11, row C: the cold
 * file read into a memfd two O_DIRECT reads at a time costs 0.7 of one at
 * a time).  A scan queues RA_AHEAD windows ahead of the one it reads, in a
 * cache of 4 * RA_AHEAD windows or more (ra_ahead(), fault.c), so that a
 * worker done inserting one window finds the next queued instead of
 * waiting for the scan's next fault: `upc-bench --only 2 --match direct`,
 * O_DIRECT store, 1.02-1.26 of the two-reads floor with 4, 1.17-1.33 with
 * 2, two alternating runs.
 */
#define RA_WORKERS		2
#define RA_QUEUE_MAX		256	/* readahead windows queued at most (control.c, ra_queue) */
#define RA_AHEAD		4
#define UPC_EXPIRE_DEFAULT_MS	30000u
#define UPC_INTERVAL_DEFAULT_MS	5000u
#define UPC_WB_MAX_IO		(1UL << 20)	/* largest single write I/O */

#define __upc_hidden __attribute__((visibility("hidden")))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define min_t(t, a, b) ((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b) ((t)(a) > (t)(b) ? (t)(a) : (t)(b))

static inline uint64_t pg_round_up(uint64_t x)
{
	return (x + UPC_PAGE_SIZE - 1) & UPC_PAGE_MASK;
}

/* ------------------------------------------------------------ struct page */

#define PG_UPTODATE	0x0001	/* in the memfd with the store's data */
#define PG_DIRTY	0x0002	/* newer than the store */
#define PG_WRITEBACK	0x0004	/* a write of it is in flight */
#define PG_REFERENCED	0x0008	/* replacement: seen since the hand passed */
#define PG_ACTIVE	0x0010	/* replacement: in the hot set */
#define PG_LAZYFREE	0x0020	/* UPC_ADV_FREE: may be discarded unwritten */
#define PG_NOWB		0x0040	/* pinned with UPC_PIN_NOWRITEBACK */
#define PG_URGENT	0x0080	/* UPC_MS_ASYNC: write at the next flusher pass */
#define PG_PINWRITE	0x0100	/* pinned with UPC_PIN_WRITE: dirty again at unpin */
#define PG_READAHEAD	0x0200	/* read ahead, not yet accessed: mapped without a reference */
#define PG_NOSTORE	0x0400	/* clean, but not the store's data (a read error answered with zeros) */

struct upc_page {
	uint16_t flags;
	uint16_t pincount;
	uint32_t dirtied;	/* cache ticks (ms) when it became dirty */
};

/*
 * The first page of a serving cache's page-table memfd (struct upc_file,
 * @statefd).  What a restarted upcd needs beyond the page flags: the file's
 * size as the cache knew it, which is past the store's while a write that
 * extended the file waits for write-back.
 */
#define UPC_STATE_MAGIC		0x3154535043505521ull	/* "!UPCPST1" */
struct upc_state_hdr {
	uint64_t magic;
	uint64_t page_size;		/* UPC_PAGE_SIZE of the daemon that wrote it */
	uint64_t entry_size;		/* sizeof(struct upc_page) */
	_Atomic int64_t size;		/* struct upc_file @size */
	/* what it belongs to, checked at adoption (file_new) */
	uint64_t memfd_dev, memfd_ino;	/* the data memfd's inode */
	int64_t btime_sec;		/* the file's birth time (statx), 0 unknown: */
	uint32_t btime_nsec;		/* an inode number used again is another file */
	uint32_t async;			/* tracked asynchronously: a clean page may be written in a PTE */
	uint64_t born;			/* the daemon that made it: its start, ns since the epoch (0: older) */
	/*
	 * Clients' mappings of the file that may write (map.c, rmap_add):
	 * what a daemon that died left here says whether a client's PTEs may
	 * have held writes the table does not know (asynchronous tracking:
	 * adopt.c, file_adopt_pages).  Set to 0 by the adopting daemon.
	 */
	_Atomic uint32_t wmaps;
	uint32_t pad;
};

/*
 * Requests of upcd's clients that change a file - a pwrite, a truncation,
 * a fallocate - are applied once.  A daemon can die between applying one
 * and answering it, and the client then sends it again to the next daemon
 * (client.c, request_fds), which may have let another process write the
 * range meanwhile: applied again, the request would undo that write.  So
 * the daemon notes each such request in the file's state page (page 0 of
 * its page-table memfd, which outlives it with the memfd), in a slot of
 * the client's process, under the file's io_lock: (who, seq) and
 * UPC_ONCE_APPLYING before the file changes, the result after (fileio.c,
 * once_begin, once_end), and it holds the file until the reply is sent,
 * so that the note outlives the request.  @who is the client's pid as
 * SO_PEERCRED gave it, @seq the request's header sequence number, which
 * the library keeps for a request sent again, starts at a random number
 * for each client (and again in a forked child), and never makes 0; only
 * for a client that said so (UPC_MSG_ONCE: an earlier library numbers
 * from 1, and two caches of one process count the same numbers).  A
 * request found done is answered with its result and not applied; one
 * found applying (the daemon died in it) is applied again, as nothing
 * answered it yet; one that failed is not noted (sent again, it is tried
 * again).  The slots are sets of UPC_ONCE_WAYS, chosen by a hash of @who,
 * and a process takes the least recently used one of its set: a request
 * whose note was taken since is applied again (upcd(8), BUGS).
 */
struct upc_once_slot {
	_Atomic uint64_t who, seq;
	_Atomic int64_t result;		/* UPC_ONCE_APPLYING, or what the call returned */
	_Atomic uint64_t used;		/* now_ms() when taken (the choice of a slot to take) */
};
#define UPC_ONCE_OFF		512u	/* in the state page, past struct upc_state_hdr */
#define UPC_ONCE_SLOTS		96u
#define UPC_ONCE_WAYS		4u
#define UPC_ONCE_APPLYING	INT64_MIN
struct upc_once {
	uint64_t who, seq;
	struct upc_once_slot *slot;	/* once_begin()'s, for once_end() */
	struct upc_file *held;		/* held from once_begin() until upc_once_release() */
};

/*
 * The takeover journal (takeover.c): while no daemon runs, a client that
 * serves itself writes a byte at UPC_JOURNAL_OFF + the page's offset in the
 * data memfd before it lets a page be written, as the daemon sets PG_DIRTY
 * before it lifts a protection; the next daemon takes those pages as dirty
 * (adopt.c, file_adopt_journal), also those of a client that died in
 * between, and punches the journal.  Far past any page a file can have
 * (the staging mapping bounds a file far below it).
 */
#define UPC_JOURNAL_OFF	(1ull << 62)
/*
 * Its length: a byte for each page of a file of up to 2^58 bytes, more
 * than the staging mapping can hold.  upcd makes its memfds this much
 * longer (holes: cache.c, memfd_journal_span), so that a client marks the
 * journal through a mapping, where no RLIMIT_FSIZE of its own applies
 * (takeover.c, journal_mark).
 */
#define UPC_JOURNAL_LEN	(1ull << 46)

#define PT_CHUNK_SHIFT	9
#define PT_CHUNK_PAGES	(1u << PT_CHUNK_SHIFT)

/*
 * Where page @pgoff's descriptor is in a page-table memfd: after the header
 * page, chunk after chunk, one page each (chunk_off, below), so the
 * descriptors of consecutive pages are consecutive.
 */
static inline off_t pt_entry_off(uint64_t pgoff)
{
	return (off_t)(UPC_PAGE_SIZE + pgoff * sizeof(struct upc_page));
}

/* ------------------------------------------------------------ address_space */

struct upc_map;
struct punch;
struct punch_ctl;
struct mm_snap;
struct staging_old;
struct orphan;

struct wb_done;
struct wb_pool;
#define WB_IO_MAX		256	/* upcd: visitors' I/O threads (wbpark.c) */
#define WB_ACCOUNT_SLOTS	WB_IO_MAX	/* ... an account each at most */
#define DIRTY_ACCT_SLOTS	256	/* upcd: accounts with dirty pages counted apart (dirtylimit.c) */

struct upc_file {
	struct upc_cache *cache;
	struct upc_file *next;		/* cache->files */
	struct upc_file **pprev;	/* ... the pointer to this file there */
	dev_t dev;
	ino_t ino;
	/*
	 * upcd: the account (upc_current_account) of the client that last
	 * mapped the file writable or wrote it with a call: its write-back
	 * I/O threads count against that account (wbpark.c).
	 */
	_Atomic uid_t wb_account;
	/* upcd: the account its dirty and write-back pages are charged to (dirtylimit.c), under @lock */
	struct dirty_acct *dacct;
	uid_t dacct_uid;
	uint64_t charged;
	_Atomic int refs;		/* mappings + in-flight users: atomic, so that no one
				 * takes cache->lock under file->lock to change it */
	/* cache->lock: */
	struct upc_file *lru_next, *lru_prev;	/* cache->unused, most recently used first */
	bool unused;			/* on cache->unused: no mapping since its last use */
	bool evict;			/* release as soon as unused and clean (unlinked, or
					 * past the bound and being written back) */
	uint64_t nlink_at;		/* now_ms() when its unlink was last looked for (cache.c) */

	int memfd;
	uint64_t memfd_len;		/* the memfd's length when not fenced: >= @base_len and
					 * >= the end of every mapping of it (file_memfd_span) */
	char *base;			/* the engine's staging mapping of the memfd (file_reserve) */
	size_t base_len;		/* reserved length of @base: covers every page of the file */
	struct staging_old *old_bases;	/* earlier, smaller staging mappings, kept until file_free */
	void *store_h;			/* store handle */
	bool store_writable;
	bool kept;			/* upcd: its keeper holds it (daemon/keeper.c) */

	pthread_mutex_t lock;
	pthread_cond_t wb_cond;		/* broadcast when write-back or an unlocked fill completes */
	/*
	 * Readahead reads in flight without @lock (control.c, fill_run): pages
	 * [first, last] of each; at most one a readahead worker.
	 */
	struct { uint64_t first, last; } fill_busy[RA_WORKERS];
	unsigned int nr_fill_busy;
	/*
	 * upcd: the eviction whose hole punches are in flight without @lock
	 * (punch.c, punch_queue): its pages are out of the page table, and
	 * nothing may put a page into the memfd where it punches until it is
	 * done.  At most one a file.
	 */
	struct punch *punch;
	/*
	 * A truncation or hole punch changing the store's file without @lock
	 * (fileio.c, store_unlock): pages [store_first, store_last] while
	 * @store_busy.  No write-back starts there meanwhile (writeback.c).
	 */
	bool store_busy;
	uint64_t store_first, store_last;
	/*
	 * A upc_pwrite past end of file raised the cache's size with its data
	 * and grows the store's file after, without @lock (fileio.c,
	 * store_grow): meanwhile the store is shorter than the file, and what a
	 * read of it finds short there is a hole, not a shrink (fill_valid).
	 * Stays set if that growth failed (it is a write-back error then).
	 * @behind_from: the store's size when it was set; only a read that
	 * ends there or after can be short for that reason.
	 */
	bool store_behind;
	off_t behind_from;
	/* zaps answered, not collected yet: the reclaim thread's (zap.c, zap_pend_add) */
	struct upc_zapper **zap_pend;
	size_t nzap_pend;
	uint64_t zap_pend_lo, zap_pend_hi;
	void *stale_store_h;		/* a store handle swapped out while a readahead read used it */
	/* Moves whenever the store's data of the file may have changed (file_store_changed()). */
	uint64_t store_gen;
	/*
	 * The kernel's i_rwsem for writers: upc_pwrite, upc_ftruncate and
	 * upc_fallocate hold it across the whole call, so that two writes do
	 * not interleave (upc_pwrite lets go of @lock between chunks).  Taken
	 * before @lock, never by a fault.
	 */
	pthread_mutex_t io_lock;
	off_t size;			/* file size as last seen */
	uint64_t npages;		/* @size in pages, rounded up (the memfd is memfd_len long) */
	uint64_t fence;			/* non-zero: the memfd is cut to this many pages (fault.c) */
	uint64_t fenced_at;		/* ... since this now_ms() */
	struct upc_page **chunks;	/* page table: npages / 512 chunk pointers */
	/*
	 * A serving cache (upcd) keeps the page table in a memfd of its own,
	 * so that it outlives the daemon: chunk i is the page at (i + 1) *
	 * UPC_PAGE_SIZE of @statefd, mapped alone; page 0 is @state_hdr.  A
	 * restarted daemon adopts the memfd and its page table from the
	 * clients that map them (file_adopt()).  -1 in an embedded cache,
	 * whose chunks come from calloc().
	 */
	int statefd;
	uint64_t state_len;		/* @statefd's length */
	struct upc_state_hdr *state_hdr;
	bool pt_unlocked;		/* adopted without the takeover lock (file_new): tried again */
	uint16_t *chunk_used;		/* cached pages per chunk; a chunk is freed at 0 */
	uint64_t nchunks;
	uint64_t hand;			/* reclaim: the clock hand, a page offset */
	uint64_t nr_active;
	struct upc_map *rmap;		/* every mapping of this file */

	uint64_t nr_cached, nr_dirty, nr_writeback, nr_pinned;
	/* write-backs whose visitor could not take @lock again after the I/O (wbpark.c, wb_park) */
	_Atomic(struct wb_done *) wb_parked;
	_Atomic unsigned int wb_io_stuck;	/* upcd: visitors' write I/Os gone on without them (wb_io_offload) */

	/* errseq_t: @err_seq counts write-back errors, @err is the latest. */
	uint32_t err_seq;
	int err;
	uint32_t err_reported;		/* highest err_seq reported to some caller */
	uint32_t fsync_seen;		/* upc_fsync()'s errseq cursor (fileio.c) */
};

/* ------------------------------------------------------------ VMA, mm */

struct upc_mm;

struct upc_map {
	struct upc_mm *mm;
	struct upc_file *file;
	uintptr_t start, end;		/* [start, end) in mm's address space */
	uint64_t pgoff;			/* file page at @start */
	int prot;
	uint32_t err_seen;		/* errseq sampled at map time / last report */
	uint64_t ra_next;		/* readahead: page after the last window */
	uint32_t ra_win;		/* readahead: last window size, pages */
	uint64_t ra_async;		/* readahead: end of the window queued in the background */
	int ra_policy;			/* UPC_ADV_NORMAL, _SEQUENTIAL or _RANDOM */
	uint64_t map_next;		/* map-ahead (MINOR faults): page after the last window */
	uint32_t map_win;		/* map-ahead: last window, pages */
	uint64_t map_around;		/* pages MINOR faults mapped around the faulting one */
	uint64_t wp_next;		/* dirty-ahead (WP faults): page after the last window */
	uint32_t wp_win;		/* dirty-ahead: last window, pages */
	int maxprot;			/* what the fd allows: PROT_READ[|PROT_WRITE] */
	bool wp;			/* registered for write-protect (writable mappings) */
	_Atomic uint64_t dirty_looked;	/* upcd --async: now_ms() of its last count for the dirty limit (dirtylimit.c) */
	uint64_t wp_end;		/* file page: [pgoff, wp_end) was write-protected whole
					 * (markers); the rest follows end of file (map_wp_extend) */
	uint64_t poison_lo, poison_hi;	/* a client's: file pages [lo, hi) may hold poison markers,
					 * accesses past end of file refused (remote_refuse) */
	uint64_t zap_lo, zap_hi;	/* a client's, asynchronous tracking: file pages [lo, hi)
					 * it is zapping without file->lock (dontneed_piece) */
	struct upc_map *f_next, *f_prev;	/* file->rmap */
};

/* Is @m registered for MINOR faults (writable, and the kernel has them for shmem: map_register())? */
#define map_minor(m)	((m)->wp && ((m)->mm->cache->uffd_features & UFFD_FEATURE_MINOR_SHMEM))

/*
 * A fault handler thread of an mm (fault.c).  The process's own mm has one
 * per CPU it may run on (at most FAULT_HANDLERS_MAX), each pinned to its
 * CPU, so that a thread that faults finds a handler on its own CPU; a
 * forked child's mm has one, unpinned.
 */
struct upc_handler {
	struct upc_mm *mm;
	pthread_t thread;
	bool running;
	int cpu;			/* pinned there (fault_handler_start()), or -1 */
	char *bounce;			/* its fill buffer, ra_max pages */
	uintptr_t fault_exact;		/* the address of the fault being handled, not rounded */
	uintptr_t last_spurious;	/* the last MISSING fault on a page thought cached */
	unsigned int linger_us;		/* looks for the next fault that long before sleeping (handler_main) */
	uint64_t last_fault_us;		/* now_us() when it last handled a fault, with @linger_us */
	/*
	 * Messages read and not yet handled: q[qhead, qtail).  Preallocated,
	 * so that reading never allocates.
	 */
	struct uffd_msg *q;
	unsigned int qhead, qtail;
	/* upcd: faults put aside at the dirty limit (fault.c, defer_retry), allocated at the first */
	struct upc_deferred *deferred;
	unsigned int ndeferred;
	bool retrying;
	uint64_t defer_look;		/* now_ms() of the next look at them */
	uint64_t defer_kick;		/* ... and of the next kick of the background writer */
};

/* Pins an mm holds (control.c, "Whose pins"): file pages [first, last], each pinned @count times. */
struct upc_pin_range {
	struct upc_file *f;
	uint64_t first, last;
	uint32_t count;
};

struct upc_mm {
	struct upc_cache *cache;
	int uffd;
	int pagemap_fd;
	pid_t pid;
	pthread_rwlock_t lock;
	struct upc_map **maps;		/* sorted by start, non-overlapping */
	size_t nmaps, cap;
	struct upc_handler *h;		/* its fault handler threads (fault.c) */
	unsigned int nh;
	int stop_efd;			/* "look at your flags": @stopping, the fork stash */
	bool stopping;
	/* upcd: the range of a call of the daemon's its client runs (mm_call): no dirty wait there */
	_Atomic uintptr_t call_lo, call_hi;
	_Atomic bool uffd_plain_read;	/* @uffd refused RWF_NOWAIT: read(2) (fault.c) */
	/* The pins it took, sorted by (file, first), disjoint (control.c); @pin_lock */
	pthread_mutex_t pin_lock;
	struct upc_pin_range *pins;
	size_t npins, pins_cap;
	uint64_t nr_pinned;		/* pages it pins, each counted as often as it is pinned */
	bool is_child;			/* a forked child's address space (fork.c) */
	_Atomic bool dead;		/* that child is gone: the handler exits */
	struct upc_mm *next_child;	/* cache->children */
	/*
	 * A client of upcd (remote.c): an address space in another process,
	 * whose own operations on it (munmap, mprotect, madvise) the engine
	 * asks for through @call, and only from the thread serving that
	 * client's request (@call_thread).
	 */
	bool remote;
	int (*call)(struct upc_mm *mm, int op, uintptr_t addr, size_t len, int arg);
	void *call_arg;
	pthread_t call_thread;
	bool in_call;			/* @call_thread is serving a request of this client */
	int relay_sig;			/* the client library's relay signal (sigbus.c), or 0 */
	_Atomic bool poisoned;		/* some mapping may hold poison markers (remote_refuse) */
	struct upc_mm *next_remote;	/* cache->remotes */
	_Atomic uint64_t nr_faults;	/* faults served in this mm's mappings (handle_fault) */
	struct upc_zapper *_Atomic zapper;	/* its reclaim channel, or NULL (struct upc_zapper) */
};

/*
 * A client's reclaim channel (upcd.c, struct zapchan; upcd(8), "Memory"):
 * how the reclaim thread asks an upcd client to zap its own PTEs of pages
 * it maps writable under asynchronous tracking, which nothing else can tear
 * down safely (zap.c, zap_elsewhere).  The mm holds a reference from
 * the client's UPC_MSG_RECLAIM to remote_detach(); the reclaim thread
 * takes one under file->lock (the mm is alive while one of its mappings
 * is in the file's rmap) and asks without the lock.
 *
 * @inflight counts the zaps asked of the client whose emptied PTEs have
 * not been collected yet (track.c): meanwhile the client may empty a PTE at
 * any moment, and a page the daemon maps into this mm write-protected could
 * hide a write made before the zap (the empty PTE is the only record of it).
 * So meanwhile the mm's faults map the faulting page alone, dirty and
 * writable (fault.c, handle_minor; control.c, pin_map): nothing can be
 * hidden in a page that is dirty already.  A zap the client did not answer
 * stays counted as long as the mm lives.  The client is not asked again
 * before @quiet_until (now_ms(); UINT64_MAX: never), and what it maps
 * meanwhile is taken from under it (zap.c, map_held; capture.c).
 */
#define UPC_ZAP_MAX_CLIENTS	64	/* clients asked at once (zap_elsewhere) */
#define UPC_ZAP_MAX_RANGES	2730	/* ranges in one zap: (UPC_PROTO_MAX_DATA - 16) / 24 */

struct upc_zapper {
	_Atomic unsigned int refs;
	_Atomic int inflight;
	_Atomic uint64_t quiet_until;
	/*
	 * Ask for a zap of @n ranges of the memfd @dev/@ino: { addr, length,
	 * file page at addr } each.  0, or -EAGAIN if the client could not be
	 * asked (nothing will be zapped).
	 */
	int (*ask)(struct upc_zapper *z, uint64_t dev, uint64_t ino, const uint64_t *triples, size_t n);
	/*
	 * Wait up to @timeout_ms in all for the answers of the @n zappers @zs
	 * (of this kind, each asked once): @rets[i] is the client's answer (0,
	 * or its negative errno), -EPIPE if it cannot answer any more (it may
	 * zap later), or 1 if it has not answered yet: its zap is still
	 * asked, and a later wait (timeout 0: a look) or @expire ends it.  A
	 * client the daemon has reason to doubt (one of a user another of
	 * whose clients did not answer lately) is waited for briefly.  Sets
	 * @quiet_until of a client that answered slowly, or not within a wait.
	 */
	void (*wait)(struct upc_zapper **zs, int *rets, size_t n, unsigned int timeout_ms);
	/* Gives up on the client's unanswered zap: it is not asked again (quiet_until UINT64_MAX). */
	void (*expire)(struct upc_zapper *z);
	void (*release)(struct upc_zapper *z);	/* the last reference went */
	/*
	 * A zap not answered within its wait (zap.c, zap_late_add), while it
	 * is in cache->zap_late: file pages [late_lo, late_hi] of @late_file,
	 * to collect once it is answered; given up at @late_until.
	 * @late_ret: 1 until answered.  The reclaim thread's, once added.
	 */
	struct upc_zapper *late_next;
	struct upc_file *late_file;
	uint64_t late_lo, late_hi, late_until;
	int late_ret;
};

static inline struct upc_zapper *zapper_get(struct upc_zapper *z)
{
	atomic_fetch_add(&z->refs, 1);
	return z;
}

static inline void zapper_put(struct upc_zapper *z)
{
	if (atomic_fetch_sub(&z->refs, 1) == 1)
		z->release(z);
}

/* Are @mm's PTEs being zapped by its client right now (struct upc_zapper)? */
static inline bool mm_zapping(struct upc_mm *mm)
{
	struct upc_zapper *z = mm->remote ? atomic_load(&mm->zapper) : NULL;

	return z && atomic_load(&z->inflight);
}

/* ------------------------------------------------------------ the cache */

struct upc_counters {
	_Atomic uint64_t faults_missing, faults_wp, faults_minor;
	_Atomic uint64_t fill_ios, pages_filled, ra_pages, ra_max_window;
	_Atomic uint64_t wp_calls, wb_ios, pages_written, bytes_written, syncs;
	_Atomic uint64_t wb_errors, read_errors, pages_evicted;
	_Atomic uint64_t ra_hits;	/* faults that continued the previous readahead window */
	_Atomic uint64_t wb_gap_pages;	/* clean pages written between dirty runs (writeback.c) */
	_Atomic uint64_t evictions_undone;	/* pages written during their eviction, put back (capture.c) */
	_Atomic uint64_t zap_wait_ms;	/* the reclaim thread's waits for clients' zaps (zap.c) */
	_Atomic uint64_t dirty_wait_ms;	/* dirtiers' waits for their account's write-back (dirtylimit.c) */
};

struct upc_cache {
	unsigned int flags;
	size_t mem_limit;
	unsigned int expire_ms, interval_ms, ra_max;
	uint32_t track_mode;
	uint64_t uffd_features;		/* features enabled on client uffds */
	uint64_t t0_ms;			/* CLOCK_MONOTONIC at creation */

	struct upc_store *store;
	bool own_store;
	int (*read_error)(void *arg, const struct upc_read_error *e);
	void *read_error_arg;

	pthread_mutex_t lock;
	struct upc_file *files;
	uint32_t nr_files;		/* live files, on @files */
	/* the inode LRU: files no mapping uses, kept for their cached pages (cache.c) */
	struct upc_file *unused, *unused_tail;
	uint32_t nr_unused, max_unused;
	int released_err;		/* an unreported write-back error of a released file */
	_Atomic bool dying;		/* upc_cache_destroy() frees every file itself */
	_Atomic unsigned int wb_io_running;	/* upcd: visitors' places for an I/O thread, taken (wbpark.c) */
	struct wb_pool *wb_pool;	/* ... and the threads (wb_pool_queue), made under @wb_lock */
	/* ... and how many of them each account's files have (wb_io_reserve), under @wb_lock */
	struct wb_account { uid_t uid; unsigned int n; } wb_accounts[WB_ACCOUNT_SLOTS];
	bool wb_per_account;		/* upcd run as root, serving many users: the bound an account holds */
	/* upcd: the pages each account's files hold dirty or under write-back (dirtylimit.c) */
	pthread_mutex_t dirty_lock;	/* the slots' uid and files; a leaf, under file->lock */
	pthread_cond_t dirty_cond;	/* pages written: dirtiers look again */
	_Atomic unsigned int dirty_waiters;
	_Atomic int64_t dirty_total;
	struct dirty_acct {
		uid_t uid;
		unsigned int files;	/* files charged to it: the slot is free at 0 */
		_Atomic int64_t pages;
	} dirty_accts[DIRTY_ACCT_SLOTS], dirty_rest;

	struct upc_mm self;		/* embedded mode: this process */
	struct upc_mm *children;	/* forked children served by this cache (fork.c) */
	struct upc_mm *remotes;		/* upcd's clients (remote.c), under @lock */
	bool serving;			/* upcd's cache: memfds are handed to clients (remote.c) */
	bool remote_one_handler;	/* upcd: one unpinned fault handler a client (remote_attach) */
	/*
	 * upcd: every file this daemon has held (adopt.c, file_adopt): a
	 * memfd of one of them handed back later is stale, never adopted.
	 * Under @lock; 16 bytes a file, for the daemon's life.
	 */
	struct file_id { dev_t dev; ino_t ino; } *held;
	size_t nheld, held_cap;
	/*
	 * Files being made (file_get_how), not listed yet: the kernel's
	 * I_NEW inodes; and upcd's files being adopted from an earlier
	 * daemon's memfds (orphan_adopt).  A lookup of one waits on
	 * @new_cond; others go on.  Under @lock.
	 */
	struct file_new_entry { dev_t dev; ino_t ino; struct file_new_entry *next; } *making, *adopting;
	pthread_cond_t new_cond;
	struct orphan *orphans;		/* upcd: earlier daemons' memfds held by processes (adopt.c) */
	size_t norphans;
	uint64_t orphans_until;		/* now_ms(): after it the orphans are forgotten */
	uint64_t born;			/* upcd: when it started, ns since the epoch (struct upc_state_hdr) */
	/* upcd: its keeper (daemon/keeper.c) is told of each file the cache holds, and lets go */
	void (*keep)(struct upc_cache *c, struct upc_file *f, int fd);
	void (*forget)(struct upc_cache *c, struct upc_file *f);
	pthread_t stage_thread;		/* serving: the staging mappings' faults (remote.c, staging_main) */
	bool stage_running;
	int stage_efd;
	_Atomic unsigned int forks_pending;	/* fork events read whose child is not in the rmap yet */
	_Atomic unsigned int reading;	/* threads in a read of a uffd, counting fork events (fork.c) */
	pthread_mutex_t fork_mutex;	/* waiting for forks to settle */
	pthread_cond_t fork_cond;
	/* This process's forks (fork.c): the fork reader and the mappings snapshot */
	_Atomic bool forking;		/* between fork_prepare() and fork_parent() */
	bool fork_locked;		/* fork_prepare() holds self.lock */
	_Atomic(struct mm_snap *) fork_snap;	/* the mappings at the fork in progress */
	pthread_mutex_t snap_lock;	/* @snap_spare: held for pointer swaps only */
	struct mm_snap *snap_spare;	/* preallocated for the next fork */
	pthread_t fr_thread;
	bool fr_running;
	int fr_efd;			/* wakes the fork reader */
	pthread_mutex_t stash_lock;
	struct uffd_msg *stash;		/* what the fork reader read: handed to self's handler */
	_Atomic unsigned int nstash;
	struct upc_cache *next_cache;	/* every cache of the process, for the exit hook */
	int engine_uffd;		/* the staging mappings' uffd (SIGBUS mode) */

	/* memory: cached pages, watermarks, the reclaim thread (kswapd) */
	_Atomic uint64_t nr_cached;
	_Atomic unsigned int nr_zap_pend;	/* files with zaps to collect (zap.c, zap_pend_add) */
	pthread_mutex_t zap_late_lock;
	struct upc_zapper *zap_late;	/* zaps not answered in their wait (zap.c, zap_late_add) */
	pthread_mutex_t zap_lock;	/* clients' reclaim channels: one zap at a time (zap_elsewhere) */
	_Atomic uint64_t ra_reading;	/* pages readahead workers are reading (fill_run) */
	_Atomic uint64_t nr_active;	/* replacement: pages in the active list */
	_Atomic unsigned int nr_fenced;	/* files whose memfd is cut at end of file (fault.c) */
	uint64_t limit_pages, high_pages, low_pages, hard_pages;
	struct upc_file *clock_file;	/* reclaim visits files round-robin */
	pthread_t rc_thread;
	bool rc_running, rc_stop, rc_kick;
	bool rc_late;			/* a drop left a late zap (zap.c): tick in 100 ms (reclaim_late) */
	pthread_mutex_t rc_lock;
	pthread_cond_t rc_cond;		/* wakes the reclaim thread */
	pthread_cond_t rc_done;		/* reclaim made progress */
	uint64_t rc_passes;
	/* upcd: the reclaim thread's hole punches, through an io_uring (punch.c) */
	struct punch_ctl *punch;
	bool punch_abandoned;		/* at destruction, still stuck: the cache is left allocated */
	_Atomic bool quitting;		/* upcd stops: no more waiting for punches (punch_wait) */

	_Atomic uint64_t nr_pinned;

	/* Readahead (UPC_ADV_WILLNEED, a fault's next windows): a queue and workers started on first use */
	pthread_t ra_thread[RA_WORKERS];
	unsigned int ra_running;
	bool ra_stop;
	pthread_mutex_t ra_lock;
	pthread_cond_t ra_cond;
	struct ra_work *ra_queue;
	uint64_t ra_queued, ra_done;
	unsigned int ra_len;		/* windows on @ra_queue */

	/* background writer */
	pthread_t wb_thread;
	bool wb_running, wb_stop, wb_kick;
	bool wb_all;			/* the next pass writes all of the files of accounts past their share (dirtylimit.c) */
	pthread_mutex_t wb_lock;
	pthread_cond_t wb_cond;

	struct upc_counters st;
	_Atomic uint64_t meta_bytes;	/* page-table bytes allocated */

	unsigned int debug;		/* UPC_DBG_*: $UPC_DEBUG at creation (debug.c) */
	_Atomic bool capture_paused;	/* UPC_DBG_CAPTURE_PAUSE: paused once (reclaim.c) */
	_Atomic bool capture_unsettled;	/* a chain with a capture ended unreaped (punch.c, punch_settle_all) */
	struct upc_pub *pub;		/* live statistics for upcctl (publish.c), or NULL */
	struct upc_client *client;	/* UPC_CACHE_SHARED: everything above is upcd's (client.c) */
};

/* ------------------------------------------------------------ store */

struct upc_store {
	const struct upc_store_ops *ops;
};

/* ------------------------------------------------------------ helpers */

/* log.c */
__upc_hidden void __upc_pr(enum upc_print_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define pr_warn(fmt, ...)  __upc_pr(UPC_WARN, "upcache: " fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...)  __upc_pr(UPC_INFO, "upcache: " fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...) __upc_pr(UPC_DEBUG, "upcache: " fmt, ##__VA_ARGS__)

/* syscall.c: thin shims; the only code that reads errno. */
__upc_hidden int sys_uffd_open(uint64_t want_features, uint64_t *got_features, int *pathp);
__upc_hidden int sys_uffd_register(int uffd, uintptr_t start, size_t len, uint64_t mode);
__upc_hidden int sys_uffd_wp(int uffd, uintptr_t start, size_t len, bool protect, bool wake);
__upc_hidden int sys_uffd_wake(int uffd, uintptr_t start, size_t len);
__upc_hidden long sys_uffd_copy(int uffd, uintptr_t dst, const void *src, size_t len, bool wp, bool wake);
__upc_hidden int sys_uffd_poison(int uffd, uintptr_t start, size_t len);
__upc_hidden long sys_uffd_continue(int uffd, uintptr_t start, size_t len, bool wp, bool wake);
__upc_hidden int sys_fd_reopen(int fd, int flags);
__upc_hidden int sys_fd_dup(int fd);
#define SYS_MSG_FDS_MAX	4
__upc_hidden ssize_t sys_send_fds(int s, const void *buf, size_t len, const int *fds, unsigned int nfds, int flags);
__upc_hidden ssize_t sys_recv_fds(int s, void *buf, size_t len, int *fds, unsigned int max, unsigned int *nfds);
__upc_hidden int sys_fd_flags(int fd);
struct stat;
__upc_hidden int sys_fstat(int fd, struct stat *st);
__upc_hidden int sys_fstat_id(int fd, struct stat *st);
__upc_hidden int sys_madvise(void *addr, size_t len, int advice);
__upc_hidden int sys_memfd(const char *name, bool sealable);
__upc_hidden int sys_ftruncate(int fd, off_t len);
__upc_hidden uint64_t fsize_limit(void);
__upc_hidden int sys_punch(int fd, off_t off, off_t len);
__upc_hidden int sys_fallocate(int fd, int mode, off_t off, off_t len);
__upc_hidden int sys_seqpacket_connect(const char *path);
__upc_hidden uint64_t now_ms(void);
__upc_hidden uint64_t now_us(void);
__upc_hidden int pagemap_writable_runs(int pagemap_fd, uintptr_t start, uint64_t npages,
				       int (*fn)(void *arg, uintptr_t addr, uint64_t n), void *arg);
__upc_hidden int cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *lock, unsigned int ms);
__upc_hidden int mutex_lock_ms(pthread_mutex_t *lock, unsigned int ms);
struct timespec;
__upc_hidden void deadline_ms(struct timespec *ts, unsigned int ms);

/* probe.c */
__upc_hidden uint64_t __upc_uffd_features(void);

/* cache.c: page table */
__upc_hidden struct upc_page *pt_get(struct upc_file *f, uint64_t pgoff);
__upc_hidden struct upc_page *pt_lookup(struct upc_file *f, uint64_t pgoff);
__upc_hidden uint32_t cache_ticks(struct upc_cache *c);
__upc_hidden void page_set_dirty(struct upc_file *f, struct upc_page *pg);
/* dirtylimit.c: upcd's dirty limit an account */
__upc_hidden void dirty_account(struct upc_file *f);
__upc_hidden void dirty_wake(struct upc_cache *c);
__upc_hidden struct dirty_acct *dirty_exceeded(struct upc_file *f);
__upc_hidden bool dirty_pressed(struct upc_file *f);
__upc_hidden void dirty_collect(struct upc_map *m);
__upc_hidden bool dirty_wait(struct upc_cache *c, const struct dirty_acct *a, const bool *stop);
__upc_hidden void dirty_balance(struct upc_file *f);
__upc_hidden void dirty_release(struct upc_file *f);

/* Is a truncation or hole punch changing the store's file in [first, last]?  Caller holds f->lock. */
static inline bool store_busy_in(const struct upc_file *f, uint64_t first, uint64_t last)
{
	return f->store_busy && first <= f->store_last && f->store_first <= last;
}

/* Is file page @pgoff in the cache?  Caller holds f->lock. */
static inline bool page_uptodate(struct upc_file *f, uint64_t pgoff)
{
	struct upc_page *pg = pt_lookup(f, pgoff);

	return pg && (pg->flags & PG_UPTODATE);
}
__upc_hidden void page_add(struct upc_file *f, uint64_t pgoff, struct upc_page *pg);
__upc_hidden void page_remove(struct upc_file *f, uint64_t pgoff);
__upc_hidden int file_grow(struct upc_file *f, off_t newsize);
__upc_hidden int file_reserve(struct upc_file *f, uint64_t bytes);
__upc_hidden int file_memfd_span(struct upc_file *f, uint64_t bytes);
__upc_hidden void file_size_refresh(struct upc_file *f);
__upc_hidden int file_grow_seen(struct upc_file *f, off_t newsize);
__upc_hidden int file_lookup(struct upc_cache *c, int fd, struct upc_file **fp);
__upc_hidden int file_fence(struct upc_file *f);
__upc_hidden void sigbus_install(void);
__upc_hidden int sigbus_relay(pid_t tid, uintptr_t addr);
__upc_hidden int sigbus_relay_signal(void);

__upc_hidden void file_unfence(struct upc_file *f);
__upc_hidden void file_memfd_empty(struct upc_file *f);
__upc_hidden void files_unfence_stale(struct upc_cache *c);
struct upc_io;
__upc_hidden uint64_t fill_valid(struct upc_file *f, int ret, struct upc_io *io);
__upc_hidden void file_size_recheck(struct upc_file *f, uint64_t pgoff);
__upc_hidden void file_drop_pages(struct upc_file *f, uint64_t first, uint64_t end);
__upc_hidden void file_unpin_all(struct upc_file *f);
__upc_hidden void stats_counters(struct upc_cache *c, struct upc_stats *st);
__upc_hidden int file_get(struct upc_cache *c, int fd, struct upc_file **fp);
/* cache.c, for adopt.c: a lookup, or the making of a file, that adopts an earlier daemon's memfds */
/* Where chunk @ci of the page table lives in a serving cache's state memfd. */
static inline off_t chunk_off(uint64_t ci)
{
	return (off_t)((ci + 1) << UPC_PAGE_SHIFT);
}
__upc_hidden struct upc_page *chunk_map(struct upc_file *f, uint64_t ci);
/* What file_adopt() hands file_new(): an earlier daemon's memfds, and whether to wait for their lock. */
struct adopt_fds {
	int memfd, statefd;
	bool force;		/* take them without the takeover lock: waited long enough */
};
__upc_hidden int file_get_how(struct upc_cache *c, int fd, bool create, const struct adopt_fds *adopt,
			      struct upc_file **fp);
__upc_hidden bool file_id_listed(const struct file_new_entry *l, const struct stat *st);
__upc_hidden void file_id_unlist(struct upc_cache *c, struct file_new_entry **lp, struct file_new_entry *e);
/* adopt.c: upcd after a restart */
__upc_hidden int adopt_fd(int fd, const char *kind, const struct stat *st);
__upc_hidden int file_adopt_journal(struct upc_file *f);
__upc_hidden int file_adopt_pages(struct upc_file *f, bool wmapped);
__upc_hidden int orphan_lookup(struct upc_cache *c, int fd, struct upc_file **fp);
__upc_hidden void orphans_free(struct upc_cache *c);
__upc_hidden int file_adopt_wait(struct upc_cache *c, int fd, int memfd, int statefd, struct upc_file **fp);
__upc_hidden void cache_find_orphans(struct upc_cache *c);
__upc_hidden int cache_add_kept(struct upc_cache *c, int fd, int memfd, int statefd);
__upc_hidden int cache_adopt_orphans(struct upc_cache *c, int fd, struct upc_file **fp);
__upc_hidden size_t cache_kept_pending(struct upc_cache *c);
__upc_hidden void file_set_size(struct upc_file *f, off_t size);
__upc_hidden void file_put(struct upc_file *f);
__upc_hidden void file_reap(struct upc_cache *c, bool all);
__upc_hidden int files_walk(struct upc_cache *c, int (*fn)(struct upc_file *f, bool visit, void *arg), void *arg);
__upc_hidden size_t files_visit(struct upc_cache *c, bool (*want)(const struct upc_file *f),
				void (*fn)(struct upc_file *f));

/* Another reference: the caller holds one, or cache->lock with @f on cache->files. */
static inline void file_hold(struct upc_file *f)
{
	atomic_fetch_add(&f->refs, 1);
}

/* map.c */
__upc_hidden struct upc_map *mm_find(struct upc_mm *mm, uintptr_t addr);
__upc_hidden int mm_init(struct upc_cache *c, struct upc_mm *mm);
__upc_hidden void mm_fini(struct upc_mm *mm);
__upc_hidden void map_destroy_all(struct upc_cache *c);
__upc_hidden struct mm_snap *mm_snap_alloc(size_t cap);
__upc_hidden bool mm_snapshot_into(struct upc_mm *mm, struct mm_snap *snap);
__upc_hidden struct mm_snap *mm_snapshot(struct upc_mm *mm);
__upc_hidden size_t mm_snap_cap(const struct mm_snap *snap);
__upc_hidden void mm_snap_free(struct mm_snap *snap);
__upc_hidden void mm_snap_drop_refs(struct mm_snap *snap);
__upc_hidden int mm_clone_maps(struct upc_mm *dst, struct mm_snap *snap);
__upc_hidden void mm_release_maps(struct upc_mm *mm);
__upc_hidden int mm_handlers_alloc(struct upc_mm *mm, unsigned int nh, const int *cpus);
__upc_hidden unsigned int fault_handlers_wanted(int *cpus, unsigned int max);
__upc_hidden int map_wp_extend(struct upc_map *m, uint64_t npages);
__upc_hidden int file_wp_extend(struct upc_file *f, uint64_t npages, bool *yielded);

/* control.c */
__upc_hidden void pins_release(struct upc_mm *mm);
__upc_hidden int mm_range_ok(struct upc_mm *mm, uintptr_t start, uintptr_t end);
__upc_hidden int range_args(struct upc_cache *c, void *addr, size_t length, uintptr_t *startp,
			    uintptr_t *endp);
__upc_hidden void ra_stop(struct upc_cache *c);
/*
 * A readahead window queued by a mapping's scan also goes into that
 * mapping (fill_run, ra_map_insert): where the window's first page sits in
 * it.  Only the process's own mm (embedded mode), never a daemon's file.
 */
struct ra_target {
	struct upc_mm *mm;		/* NULL: into the cache only (the staging mapping) */
	uintptr_t addr;			/* the address of page @first in @mm */
	uint64_t first;
};
__upc_hidden int ra_queue(struct upc_cache *c, struct upc_file *f, uint64_t first, uint64_t last,
			  const struct upc_map *m);
__upc_hidden long fill_run(struct upc_file *f, uint64_t *pp, uint64_t last, char *buf, uint64_t bufpages,
			   bool ahead, const struct ra_target *t);
__upc_hidden bool fill_busy(const struct upc_file *f, uint64_t first, uint64_t last);
/*
 * The store's data of @f may have changed (a write-back completed, a
 * truncate, a hole, an extension, a shrink seen behind the cache's back),
 * or the cache promised to read it again (upc_invalidate, upc_drop): a
 * readahead read in flight since before is not inserted (fill_run).
 * Caller holds f->lock.
 */
static inline void file_store_changed(struct upc_file *f)
{
	f->store_gen++;
}

/* fault.c */
__upc_hidden long staging_insert(struct upc_file *f, uint64_t pgoff, uint64_t n, const char *buf,
				 size_t *skipped);
__upc_hidden long ra_map_insert(struct upc_file *f, const struct ra_target *t, uint64_t pgoff, uint64_t n,
				const char *buf);
__upc_hidden int fault_handler_start(struct upc_mm *mm);
__upc_hidden void fault_handler_stop(struct upc_mm *mm);
__upc_hidden struct upc_handler *mm_handler_self(struct upc_mm *mm);
__upc_hidden void fault_populate(uintptr_t start, size_t len, int prot);
__upc_hidden void handler_queue_compact(struct upc_handler *h);
__upc_hidden unsigned int handler_read_msgs(struct upc_handler *h, unsigned int max);
__upc_hidden unsigned int uffd_read_msgs(struct upc_mm *mm, struct uffd_msg *q, unsigned int space);
__upc_hidden bool uffd_reads_nowait(int uffd);
#define UFFD_QUEUE	1024	/* messages a handler holds: more than threads fault at once */

/* remote.c: the address spaces of other processes (upcd's clients) */
#define MM_CALL_MUNMAP		1	/* the values of proto.h's UPC_CALL_* */
#define MM_CALL_MPROTECT	2
#define MM_CALL_MADVISE		3
#define RELAY_LIFT_TAG		0x75706c66	/* si_errno of upcd's "zap your poison markers" (sigbus.c) */
#define MM_CALL_PLACEHOLD	4	/* an anonymous PROT_NONE placeholder over the range */
/*
 * upcd: the account of the client whose requests this thread serves (upcd.c,
 * client_account), or UPC_ACCOUNT_NONE; what file_account() records.
 */
#define UPC_ACCOUNT_NONE	((uid_t)-1)
extern __thread uid_t upc_current_account __upc_hidden;
__upc_hidden void file_account(struct upc_file *f);
/* fileio.c: the client request being served by this thread, if it changes a file (struct upc_once) */
extern __thread struct upc_once *upc_once_cur __upc_hidden;
__upc_hidden void upc_once_release(struct upc_once *o);
__upc_hidden struct upc_mm *mm_current(struct upc_cache *c);
__upc_hidden void mm_current_set(struct upc_mm *mm);
__upc_hidden void mm_current_clear(struct upc_mm *mm);
__upc_hidden int remote_attach(struct upc_cache *c, int uffd, int pagemap_fd, pid_t pid,
			       int (*call)(struct upc_mm *, int, uintptr_t, size_t, int), void *call_arg,
			       struct upc_mm **mmp);
__upc_hidden void remote_detach(struct upc_mm *mm);
__upc_hidden int remote_zapper_set(struct upc_mm *mm, struct upc_zapper *z);
__upc_hidden int cache_serve(struct upc_cache *c);
__upc_hidden void cache_serve_stop(struct upc_cache *c);
__upc_hidden int remote_refuse(struct upc_map *m, uintptr_t addr);
__upc_hidden void remote_lift(struct upc_file *f);
__upc_hidden void remote_lift_pending(struct upc_mm *mm);
__upc_hidden int remote_relay_set(struct upc_mm *mm, int sig);
__upc_hidden int remote_map_prepare(struct upc_cache *c, int fd, uint64_t offset, uint64_t length, int prot,
				    struct upc_file **fp, int *memfdp, int *statefdp, int *maxprotp);
__upc_hidden int remote_adopt(struct upc_mm *mm, int fd, int memfd, int statefd, uintptr_t addr, size_t len,
				uint64_t pgoff, int prot);
__upc_hidden int mm_call(struct upc_mm *mm, int op, uintptr_t addr, size_t len, int arg);
__upc_hidden int mm_call_file(struct upc_file *f, struct upc_mm *mm, int op, uintptr_t addr, size_t len,
				 int arg);
__upc_hidden int fd_map_access(int fd, int prot);
__upc_hidden int map_attach(struct upc_mm *mm, struct upc_file *f, uintptr_t addr, size_t len,
			    uint64_t pgoff, int prot, int maxprot);
__upc_hidden int map_clear(struct upc_mm *mm, uintptr_t addr, size_t len);

/* client.c: a cache created with UPC_CACHE_SHARED, served by upcd */
struct upc_client;
__upc_hidden int client_create(const struct upc_cache_opts *o, struct upc_cache **cachep);
__upc_hidden int client_destroy(struct upc_cache *c);
__upc_hidden int client_map(struct upc_cache *c, int fd, off_t offset, size_t length, int prot,
			    unsigned int flags, void **addrp);
__upc_hidden int client_unmap(struct upc_cache *c, void *addr, size_t len);
__upc_hidden int client_msync(struct upc_cache *c, void *addr, size_t len, int flags);
__upc_hidden int client_protect(struct upc_cache *c, void *addr, size_t len, int prot);
__upc_hidden int client_pin(struct upc_cache *c, void *addr, size_t len, unsigned int flags);
__upc_hidden int client_unpin(struct upc_cache *c, void *addr, size_t len);
__upc_hidden int client_advise(struct upc_cache *c, void *addr, size_t len, int advice);
__upc_hidden int client_drop(struct upc_cache *c, unsigned int flags);
__upc_hidden int client_stats(struct upc_cache *c, struct upc_stats *st);
__upc_hidden ssize_t client_pread(struct upc_cache *c, int fd, void *buf, size_t len, off_t off);
__upc_hidden ssize_t client_pwrite(struct upc_cache *c, int fd, const void *buf, size_t len, off_t off);
__upc_hidden int client_ftruncate(struct upc_cache *c, int fd, off_t length);
__upc_hidden int client_fallocate(struct upc_cache *c, int fd, int mode, off_t off, off_t len);
__upc_hidden int client_fsync(struct upc_cache *c, int fd, bool datasync);
__upc_hidden int client_invalidate(struct upc_cache *c, int fd, off_t off, off_t len);
__upc_hidden long client_call_range(struct upc_cache *c, int type, void *addr, size_t length, long arg,
				    unsigned int argc);
__upc_hidden long client_file_call(struct upc_cache *c, int type, int fd, const uint64_t *args,
				   unsigned int argc);

/* fork.c */
__upc_hidden void fork_event_read(struct upc_mm *mm, struct uffd_msg *msg);
__upc_hidden void fork_event(struct upc_mm *parent, const struct uffd_msg *msg);
__upc_hidden void fork_event_drop(struct upc_mm *mm, const struct uffd_msg *msg);
__upc_hidden bool fork_settled(struct upc_file *f);
__upc_hidden void fork_wait_settled(struct upc_cache *c);
__upc_hidden void fork_yield_file(struct upc_file *f);
__upc_hidden int fork_reader_start(struct upc_cache *c);
__upc_hidden void fork_reader_stop(struct upc_cache *c);
__upc_hidden void fork_stash_take(struct upc_handler *h);
__upc_hidden void fork_spare_refill(struct upc_cache *c);
__upc_hidden void fork_children_reap(struct upc_cache *c);
__upc_hidden bool fork_child_gone(struct upc_mm *mm);
__upc_hidden void fork_children_release(struct upc_cache *c);
__upc_hidden void fork_cache_add(struct upc_cache *c);
__upc_hidden void fork_cache_del(struct upc_cache *c);

/* writeback.c */
#define WB_SYNC		0x1	/* wait for write-back in flight, then fdatasync */
#define WB_EXPIRED	0x2	/* only pages dirty for longer than expire_ms */
#define WB_NOWAIT	0x4	/* skip pages under write-back instead of waiting */
#define WB_FSYNC	0x8	/* with WB_SYNC: fsync (data and metadata), not fdatasync */
#define WB_VISIT	0x10	/* a visitor of every file: -EBUSY if file_lock_visit() fails, before the I/O or after it (wb_park) */
#define DROP_VISIT	0x80000000u	/* file_drop(), beside UPC_DROP_*: as WB_VISIT */
__upc_hidden int file_drop(struct upc_file *f, unsigned int flags, uint64_t *dropped);
__upc_hidden int writeback_range(struct upc_file *f, uint64_t first, uint64_t last, int how,
				 uint64_t *heldp);
__upc_hidden int errseq_check(struct upc_file *f, uint32_t *seen);
__upc_hidden void errseq_set(struct upc_file *f, int err);
__upc_hidden bool has_writeback(struct upc_file *f, uint64_t first, uint64_t last);
/*
 * A write-back's completion (step 4): its runs, the gap pages joined to
 * them, its I/Os.  writeback.c ends it; wbpark.c parks it, or hands it to
 * an I/O thread, for a visitor that does not wait.
 */
struct wb_done {
	struct run *runs, *gaps;
	size_t nr, ngaps;
	struct upc_io *ios;
	size_t nios;
	int ret;			/* an error before the I/O (no memory for @ios) */
	struct wb_done *next;		/* f->wb_parked */
};
__upc_hidden int wb_complete(struct upc_file *f, const struct wb_done *d);
__upc_hidden void wb_submit(struct upc_file *f, struct upc_io *ios, size_t nios);
/* wbpark.c */
__upc_hidden int wb_park(struct upc_file *f, const struct wb_done *d);
struct wb_ticket { int slot; };	/* a visitor's place for an I/O thread (wbpark.c), -1: none */
__upc_hidden bool wb_io_reserve(struct upc_cache *c, struct upc_file *f, struct wb_ticket *t);
__upc_hidden void wb_io_release(struct upc_cache *c, struct wb_ticket *t);
__upc_hidden int wb_io_offload(struct upc_file *f, const struct wb_done *d, struct wb_ticket *t);
__upc_hidden void wb_wait(struct upc_file *f);
__upc_hidden bool wb_finish_parked(struct upc_file *f);
__upc_hidden void wb_pool_stop(struct upc_cache *c);
__upc_hidden uint32_t errseq_sample(struct upc_file *f);
__upc_hidden int bgwb_start(struct upc_cache *c);
__upc_hidden void bgwb_stop(struct upc_cache *c);
__upc_hidden void bgwb_kick(struct upc_cache *c);
__upc_hidden void bgwb_kick_all(struct upc_cache *c);

/* reclaim.c */
struct run {
	uint64_t start;
	uint64_t n;
};
__upc_hidden int runs_add(struct run **runs, size_t *nr, size_t *cap, uint64_t pgoff);
__upc_hidden int protect_runs(struct upc_file *f, const struct run *runs, size_t nr);
__upc_hidden int reclaim_start(struct upc_cache *c);
__upc_hidden void reclaim_stop(struct upc_cache *c);
__upc_hidden void reclaim_kick(struct upc_cache *c);
__upc_hidden void reclaim_throttle(struct upc_cache *c);
__upc_hidden void reclaim_wake(struct upc_cache *c);
__upc_hidden void reclaim_late(struct upc_cache *c);
__upc_hidden void teardown_runs(struct upc_file *f, const struct run *runs, size_t nr, bool staging);
/*
 * zap.c: upcd's clients' PTEs of victims.  What reclaim.c's presence_scan()
 * says of a page in other processes' mappings: present (ELSEWHERE); in a
 * client's mapping that may write it unseen, which that client must zap
 * before the punch (ELSEWHERE_W); and one that cannot be asked to
 * (ELSEWHERE_HELD, map_held()).
 */
#define ELSEWHERE	0x1
#define ELSEWHERE_W	0x2
#define ELSEWHERE_HELD	0x4
__upc_hidden bool map_held(struct upc_map *m);
__upc_hidden bool map_unanswered(struct upc_map *m);
__upc_hidden int zap_elsewhere(struct upc_file *f, const struct run *victims, size_t nv, uint64_t first,
			       const uint8_t *elsewhere, bool visit);
__upc_hidden void zap_settle(struct upc_file *f);
__upc_hidden void zap_settle_all(struct upc_cache *c);
__upc_hidden bool zap_late_poll(struct upc_cache *c);
__upc_hidden void zap_late_release(struct upc_cache *c);
__upc_hidden uint64_t reclaim_runs(struct upc_file *f, struct run *runs, size_t nr, const struct run *held,
				   size_t nh, bool unlocked);
/* capture.c: victims taken from under clients that do not zap */
struct capture;
__upc_hidden struct capture *capture_start(struct upc_file *f, const struct run *held, size_t nh);
__upc_hidden bool capture_take(struct capture *cap, struct upc_file *f, uint64_t pgoff);
__upc_hidden bool capture_spoiled(const struct capture *cap);
__upc_hidden bool capture_overlaps(const struct capture *cap, uint64_t first, uint64_t last);
__upc_hidden void capture_sealed(struct capture *cap);
__upc_hidden void capture_settle(struct upc_file *f, struct capture *cap, bool failed);
__upc_hidden void capture_free(struct capture *cap);
__upc_hidden int unmap_elsewhere(struct upc_file *f, struct run **runs, size_t *nr, bool visit);
/* punch.c */
__upc_hidden int punch_start(struct upc_cache *c);
__upc_hidden void punch_stop(struct upc_cache *c);
__upc_hidden int punch_queue(struct upc_file *f, struct run *runs, size_t nr, uint64_t pages,
			     struct capture *cap);
__upc_hidden void punch_reap(struct upc_file *f);
__upc_hidden bool punch_captured_busy(struct upc_file *f, uint64_t first, uint64_t last);
__upc_hidden bool punch_wait_captured(struct upc_file *f, uint64_t first, uint64_t last);
__upc_hidden bool punch_abandons_capture(struct upc_file *f);
__upc_hidden void punch_settle_all(struct upc_cache *c);
__upc_hidden bool punch_pending(struct upc_file *f);
__upc_hidden bool punch_busy(struct upc_file *f, uint64_t first, uint64_t last);
__upc_hidden bool punch_wait(struct upc_file *f, uint64_t first, uint64_t last, const bool *stop);
__upc_hidden void punch_free(struct upc_file *f);
__upc_hidden void punch_settle(struct upc_file *f);
__upc_hidden bool punch_stray(struct upc_file *f, uint64_t pgoff, const bool *stop);
#define VISIT_LOCK_MS	20	/* file_lock_visit(), and a walk's in all (file_lock_walk) */
__upc_hidden int file_lock_visit(struct upc_file *f);
__upc_hidden int file_lock_walk(struct upc_file *f, unsigned int *budget_ms);
__upc_hidden int dontneed_piece(struct upc_map *m, uintptr_t s, uintptr_t e, uint64_t first,
				uint64_t last);

/* track.c */
__upc_hidden uint64_t track_collect(struct upc_file *f, uint64_t first, uint64_t last);
__upc_hidden uint64_t track_collect_map(struct upc_map *m);
__upc_hidden uint64_t track_collect_adopted(struct upc_map *m);
__upc_hidden int pagemap_walk(struct upc_file *f, uint64_t first, uint64_t last, bool wp_only,
			      const struct pm_scan_arg *tmpl,
			      void (*fn)(struct upc_file *f, uint64_t pgoff, void *arg), void *arg);
__upc_hidden int pagemap_walk_map(struct upc_map *m, uint64_t first, uint64_t last, const struct pm_scan_arg *tmpl,
				 void (*fn)(struct upc_file *f, uint64_t pgoff, void *arg), void *arg);
__upc_hidden void track_collect_all(struct upc_file *f);

/* store.c */
__upc_hidden int store_default(unsigned int flags, struct upc_store **storep);
__upc_hidden int store_size(struct upc_store *s, void *h, off_t *sizep);
__upc_hidden int store_stat(struct upc_store *s, void *h, struct stat *st);
__upc_hidden int store_truncate(struct upc_store *s, void *h, off_t length);
__upc_hidden bool store_has_truncate(const struct upc_store *s);
__upc_hidden int store_fallocate(struct upc_store *s, void *h, int mode, off_t off, off_t len);
__upc_hidden int store_fsync(struct upc_store *s, void *h);
__upc_hidden uint64_t store_cluster_gap(struct upc_store *s);

/* debug.c: $UPC_DEBUG (upcache(7)) and dirty backtraces; usdt.h has the probes */
#define UPC_DBG_BREAK_I1	0x1u	/* tests only: write-back cleans before it protects */
#define UPC_DBG_DIRTY_BT	0x2u	/* record the stack of the write that dirtied a page */
#define UPC_DBG_STOP_AT_CALL	0x4u	/* tests only: a shared cache's process stops as upcd calls into it */
#define UPC_DBG_VISIT_PAUSE	0x8u	/* tests only: a visitor's write-back waits 1.5 s after its I/O */
#define UPC_DBG_DROP_PAUSE	0x10u	/* tests only: upcd's punch of clean pages waits 1.5 s after its last look */
#define UPC_DBG_GROW_PAUSE	0x20u	/* tests only: a write past end of file waits 1.5 s before it grows the store */
#define UPC_DBG_WB_IO_FEW	0x40u	/* tests only: upcd's visitors have 3 I/O threads, 2 an account (wbpark.c) */
#define UPC_DBG_CAPTURE_PAUSE	0x80u	/* tests only: the first eviction that takes pages of a client that does not answer (capture.c) waits 1.5 s before its punch */
#define UPC_DBG_CAPTURE_FAIL	0x100u	/* tests only: a page written during its eviction cannot be put back (capture.c) */
#define UPC_DBG_NO_ZAPS		0x200u	/* tests only: a shared cache hands upcd no reclaim channel (connect.c) */
#define UPC_DBG_SLOW_ZAPS	0x400u	/* tests only: a shared cache answers each zap 150-450 ms late (connect.c) */
#define UPC_DBG_PROBE_FAIL	0x800u	/* tests only: upcd's probe of where to run fault handlers fails (placement.c) */
#define UPC_DBG_MAPS_FEW	0x1000u	/* tests only: upcd's limit of mappings is 8 a client, 12 a user (upcd.c) */
#define UPC_BT_SIGNAL		(SIGRTMIN + 7)
struct upc_shm_bt;
__upc_hidden unsigned int debug_from_env(void);
__upc_hidden bool dirty_bt_init(void);
__upc_hidden uint64_t dirty_bt_request(struct upc_file *f, uint64_t pgoff, uint32_t tid);
__upc_hidden unsigned int dirty_bt_collect(const struct upc_cache *c, struct upc_shm_bt *out,
					   unsigned int max);
__upc_hidden void dirty_bt_symbolize(uint64_t ip, bool ret_addr, char *buf, size_t len);

/* publish.c: /dev/shm/upcache.<pid>.<n> for upcctl stats and top */
__upc_hidden void publish_create(struct upc_cache *c);
__upc_hidden void publish_refresh(struct upc_cache *c);
__upc_hidden void publish_tick(struct upc_cache *c);
__upc_hidden void publish_destroy(struct upc_cache *c);

#endif /* UPC_INTERNAL_H */
