/* SPDX-License-Identifier: MIT */
/*
 * capture.c - eviction from under a client that does not zap (upcd,
 * asynchronous tracking; upcd(8), "Memory").
 *
 * Under asynchronous tracking a write through a clean PTE does not trap,
 * so a page a client maps writable goes only once that client has zapped
 * its PTEs of it (zap.c): a write made between the dirty check and the
 * punch would go with the page.  A client that cannot be asked (map_held:
 * no reclaim channel, or one that once did not answer, being stopped,
 * hung or hostile) kept every page it mapped so, past the daemon's memory
 * limit (upcd(8), BUGS, until this).
 *
 * The kernel needs no help from the mapper: try_to_unmap() clears the PTE
 * and moves its dirty bit to the folio in one step (Torvalds/Hansen/Kara,
 * seeds/), and the folio is still there to be looked at after.  upcd can
 * clear a client's PTE only by punching the page, but it can keep the page
 * itself: a page spliced from the memfd into a pipe is a reference to the
 * shmem folio, not a copy, and it outlives the hole punch, which first
 * unmaps it from every PTE (shmem_fallocate, unmap_mapping_range).  After
 * the punch no PTE can write to it, and read from the pipe it is the page
 * as the last write through any PTE left it (checked on Linux 6.18: a
 * write through a mapping after the splice, then a punch, reads back from
 * the pipe).  A kernel pin held over the punch (an O_DIRECT read into the
 * client's mapping in flight) can still write to it after, as with any
 * eviction.  Only a page of its own, not part of a large folio, is taken
 * (page_small).  So, for each such victim:
 *
 *   1. before the last look (track_collect, which write-protects again
 *      what it finds written), the page is copied (capture_start);
 *   2. if the look finds it clean, it is spliced into the pipe
 *      (capture_take), and punched with the others;
 *   3. once the punch is done, the page read back from the pipe is
 *      compared with the copy (capture_settle).  Equal: nothing was
 *      written after the look (or the same bytes were, which changes
 *      nothing).  Not: a write landed between the look and the punch, and
 *      the page goes back into the memfd, dirty, with that write in it.
 *
 * The copy comes before the look, not after it: a write after the previous
 * look and before the copy is found by this look (the page is then dirty,
 * and stays), and one after this look makes the page differ from the copy.
 *
 * Until step 3 the chain's pages are out of the page table, and every
 * fault, fill or write of them waits for the chain (punch.c), and so does
 * a sync of them (punch_wait_captured), so a page put back is found by the
 * first of them.  Step 3 runs under file->lock, in the punch thread if it
 * gets the lock within 2 ms, else at the lock's next holder that looks at
 * the chain (punch_reap).  Meanwhile a write made in the window is in the
 * punched folio (before the punch, still in the memfd, but out of the page
 * table), then only in the pipe: a daemon killed then loses it (upcd(8),
 * BUGS).  Each victim costs a copy of 4 KiB, at most CAPTURE_MAX pages a
 * visit.
 */
#include "internal.h"
#include "usdt.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAPTURE_MAX	256	/* pages a visit: a 1 MiB pipe (the default pipe-max-size) and 1 MiB of copies */

struct capture {
	int pipe[2];		/* [1] closed once the chain is queued (capture_sealed) */
	size_t n, cur;		/* pages copied; capture_take's cursor */
	size_t room;		/* pages the pipe holds */
	uint64_t *pgoff;	/* [n], ascending */
	uint8_t *state;		/* [n]: CAP_* */
	char *before;		/* [n] pages: each before the last look */
	bool spoiled;		/* the pipe holds what must not be punched around (capture_take) */
};

#define CAP_INPIPE	0x1	/* spliced into the pipe, in this order */
#define CAP_TAKEN	0x2	/* ... and punched with the chain */

/*
 * /proc/kpageflags, to tell a page of a large folio (below); -1 where it
 * cannot be read (a daemon that is not root: nothing is taken then).
 */
static int kpf_fd = -1;
static pthread_once_t kpf_once = PTHREAD_ONCE_INIT;

static void kpf_open(void)
{
	kpf_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (kpf_fd < 0)
		pr_warn("/proc/kpageflags: %s: pages that clients which do not zap map writable stay cached\n",
			strerror(errno));
}

#define KPF_COMPOUND_HEAD	15
#define KPF_COMPOUND_TAIL	16
#define PM_PFN_MASK		((1ULL << 55) - 1)

/*
 * The PFN of file page @pgoff if it is a page of its own (a small folio),
 * else 0.  A punch of part of a large folio does not free that part: the
 * kernel zeroes it in place, then splits the folio, and a split fails
 * while anything else holds a reference - the pipe's, always
 * (truncate_inode_partial_folio).  Read back from the pipe, the zeros
 * would be taken for a write and put back as the page's data; and every
 * other page of that folio the chain punches would be left zeroed in the
 * memfd, out of the page table, where a fill takes it (EEXIST) for the
 * store's data (helper-63's and helper-64's reviews; both checked on Linux
 * 6.18).  The memfds' folios are small unless the machine's shmem_enabled
 * says otherwise, or a process that maps one asks (MADV_COLLAPSE collapses
 * a memfd's page cache even where it then fails with EINVAL).  Once the
 * pipe holds a page, no collapse can take it (a collapse needs every
 * reference accounted for).  The look needs the page's PFN, which pagemap
 * shows to CAP_SYS_ADMIN only.  Caller holds f->lock.
 */
static uint64_t page_small(struct upc_file *f, uint64_t pgoff)
{
	volatile const char *a = f->base + (pgoff << UPC_PAGE_SHIFT);
	uint64_t ent = 0, flags = 0;
	int pm = f->cache->self.pagemap_fd;

	if (kpf_fd < 0 || pm < 0)
		return 0;
	(void)*a;	/* mapped in the staging mapping (a page punched behind the cache reads as zeros: remote.c) */
	if (pread(pm, &ent, sizeof(ent), (off_t)((uintptr_t)a >> UPC_PAGE_SHIFT) * (off_t)sizeof(ent)) != sizeof(ent) ||
	    !(ent >> 63) || !(ent & PM_PFN_MASK))
		return 0;
	if (pread(kpf_fd, &flags, sizeof(flags), (off_t)(ent & PM_PFN_MASK) * (off_t)sizeof(flags)) != sizeof(flags) ||
	    (flags & ((1ULL << KPF_COMPOUND_HEAD) | (1ULL << KPF_COMPOUND_TAIL))))
		return 0;
	return ent & PM_PFN_MASK;
}

void capture_free(struct capture *cap)
{
	if (!cap)
		return;
	if (cap->pipe[0] >= 0)
		close(cap->pipe[0]);
	if (cap->pipe[1] >= 0)
		close(cap->pipe[1]);
	free(cap->pgoff);
	free(cap->state);
	free(cap->before);
	free(cap);
}

/*
 * Step 1: copy the pages of @held (sorted; up to CAPTURE_MAX of them),
 * before the last look.  NULL if nothing could be copied (no memory, no
 * pipe): then none of them is taken, and they stay cached.  Caller holds
 * f->lock.
 */
struct capture *capture_start(struct upc_file *f, const struct run *held, size_t nh)
{
	struct capture *cap = calloc(1, sizeof(*cap));
	size_t want = 0;
	int sz;

	pthread_once(&kpf_once, kpf_open);
	if (kpf_fd < 0 || !cap) {
		free(cap);
		return NULL;
	}
	cap->pipe[0] = cap->pipe[1] = -1;
	for (size_t i = 0; i < nh; i++)
		want += held[i].n;
	want = min_t(size_t, want, CAPTURE_MAX);
	cap->pgoff = malloc(want * sizeof(*cap->pgoff));
	cap->state = calloc(want, sizeof(*cap->state));
	cap->before = malloc(want << UPC_PAGE_SHIFT);
	if (!cap->pgoff || !cap->state || !cap->before || pipe2(cap->pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		goto fail;
	/* As much as it takes; a pipe that stays smaller takes fewer (capture_take). */
	(void)fcntl(cap->pipe[1], F_SETPIPE_SZ, (int)(want << UPC_PAGE_SHIFT));
	sz = fcntl(cap->pipe[1], F_GETPIPE_SZ);
	cap->room = sz > 0 ? (size_t)sz >> UPC_PAGE_SHIFT : 0;
	for (size_t i = 0; i < nh && cap->n < want; i++) {
		uint64_t n = min_t(uint64_t, held[i].n, want - cap->n);
		size_t len = n << UPC_PAGE_SHIFT;
		/* A read of the memfd takes no lock a client can hold (its inode lock is a writer's). */
		ssize_t r = pread(f->memfd, cap->before + (cap->n << UPC_PAGE_SHIFT), len,
				  (off_t)(held[i].start << UPC_PAGE_SHIFT));

		if (r < 0)
			continue;
		for (uint64_t k = 0; k < (uint64_t)r >> UPC_PAGE_SHIFT; k++)
			cap->pgoff[cap->n++] = held[i].start + k;
	}
	if (!cap->n)
		goto fail;
	return cap;
fail:
	capture_free(cap);
	return NULL;
}

/*
 * Step 2: @pgoff was found clean at the last look; splice it into the pipe.
 * false: it was not copied before the look, it is part of a large folio,
 * or the pipe is full or failed, and the page stays cached.  The page is
 * looked at before the splice and again after (page_small): if what the
 * pipe then holds is not that small page (a collapse in between), or only
 * part of a page, the capture is spoiled (capture_spoiled): its reference
 * must not be held over any punch.  Called in ascending order.  Caller
 * holds f->lock.
 */
bool capture_take(struct capture *cap, struct upc_file *f, uint64_t pgoff)
{
	uint64_t pfn;
	size_t done = 0;

	if (!cap || cap->spoiled)
		return false;
	while (cap->cur < cap->n && cap->pgoff[cap->cur] < pgoff)
		cap->cur++;
	if (cap->cur == cap->n || cap->pgoff[cap->cur] != pgoff || !cap->room || !(pfn = page_small(f, pgoff)))
		return false;
	while (done < UPC_PAGE_SIZE) {
		off_t off = (off_t)(pgoff << UPC_PAGE_SHIFT) + (off_t)done;
		ssize_t r = splice(f->memfd, &off, cap->pipe[1], NULL, UPC_PAGE_SIZE - done, SPLICE_F_NONBLOCK);

		if (r <= 0) {
			cap->spoiled = done > 0;	/* part of a page in the pipe */
			return false;
		}
		done += (size_t)r;
	}
	cap->room--;
	cap->state[cap->cur] = CAP_INPIPE;
	if (page_small(f, pgoff) != pfn) {
		cap->spoiled = true;
		return false;
	}
	cap->state[cap->cur] |= CAP_TAKEN;
	return true;
}

/* Does the pipe hold anything but whole small pages that are taken?  Then nothing of it may be punched. */
bool capture_spoiled(const struct capture *cap)
{
	return cap && cap->spoiled;
}

/* Does the capture take a page of [first, last]?  (punch_captured_busy; reclaim_runs: any at all) */
bool capture_overlaps(const struct capture *cap, uint64_t first, uint64_t last)
{
	for (size_t i = 0; cap && i < cap->n; i++)
		if ((cap->state[i] & CAP_TAKEN) && cap->pgoff[i] >= first && cap->pgoff[i] <= last)
			return true;
	return false;
}

/* Read exactly one page from the pipe. */
static bool pipe_page(int fd, char *buf)
{
	size_t done = 0;

	while (done < UPC_PAGE_SIZE) {
		ssize_t r = read(fd, buf + done, UPC_PAGE_SIZE - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		done += (size_t)r;
	}
	return true;
}

/*
 * A page written between the last look and the punch (@dirty): back into
 * the memfd and the page table, dirty.  A page of a chain that failed
 * (@failed) is taken back whether written or not (!@dirty: clean), as
 * the client may still map it: if it is still there, as it is (what the
 * pipe read is that page, which the client may have written since).  A
 * page there after a punch that succeeded is one a client wrote into the
 * hole with write(2), which is not the cache's (punch_stray): the page
 * read back goes over it.  Caller holds f->lock.
 */
static int capture_restore(struct upc_file *f, uint64_t pgoff, const char *page, bool dirty, bool failed)
{
	struct upc_page *pg;
	size_t skipped;
	long r;

	if (pgoff >= f->npages || (pgoff << UPC_PAGE_SHIFT) >= (uint64_t)f->size)
		return 0;	/* truncated since: the write went with the page, as it would have with the kernel's */
	if (__builtin_expect(f->cache->debug & UPC_DBG_CAPTURE_FAIL, 0))
		return -ENOMEM;	/* UPC_DEBUG=capture-fail, tests only */
	pg = pt_get(f, pgoff);
	if (!pg)
		return -ENOMEM;
	if (!(pg->flags & PG_UPTODATE)) {
		r = staging_insert(f, pgoff, 1, page, &skipped);
		if (r < 0)
			return (int)r;
		if (skipped && !failed)
			memcpy(f->base + (pgoff << UPC_PAGE_SHIFT), page, UPC_PAGE_SIZE);
		page_add(f, pgoff, pg);
	} else {
		/* Cannot be: nothing fills a page of a chain in flight.  Said, not hidden. */
		pr_warn("page %" PRIu64 " was filled while its eviction was in flight\n", pgoff);
		return dirty ? -EEXIST : 0;
	}
	if (dirty) {
		trace_dirty(f, pg, pgoff, 0, 0);
		page_set_dirty(f, pg);
	}
	return 0;
}

/*
 * Step 3, once the chain's punches are done (@failed: one of them failed,
 * and its pages are still in the memfd, mapped by the client): the pages
 * written since the last look go back, dirty, and with @failed the others
 * too, clean.  A page that cannot (no memory for its page table chunk or
 * its insert), or that could not be read back (then none after it can be
 * matched with its copy), is lost data: a write-back error of the file
 * (EIO), which the next msync or fsync reports, as the kernel reports a
 * page it could not write.  Frees @cap.  Caller holds f->lock.
 */
void capture_settle(struct upc_file *f, struct capture *cap, bool failed)
{
	char page[UPC_PAGE_SIZE];
	uint64_t back = 0;

	if (!cap)
		return;
	for (size_t i = 0; i < cap->n; i++) {
		bool written;
		int err;

		if (!(cap->state[i] & CAP_INPIPE))
			continue;
		if (!pipe_page(cap->pipe[0], page)) {
			pr_warn("a page taken from under a client could not be read back: writes to it may be lost\n");
			errseq_set(f, -EIO);	/* (traced and logged there) */
			break;
		}
		if (!(cap->state[i] & CAP_TAKEN))
			continue;	/* (none: a capture with such a page is spoiled, and never settled) */
		written = memcmp(page, cap->before + (i << UPC_PAGE_SHIFT), UPC_PAGE_SIZE) != 0;
		if (!written && !failed)
			continue;
		err = capture_restore(f, cap->pgoff[i], page, written, failed);
		if (err && written) {
			pr_warn("page %" PRIu64 ", written during its eviction, could not be put back: %s\n",
				cap->pgoff[i], upc_strerror(err));
			errseq_set(f, -EIO);
		}
		if (err)
			continue;	/* (a clean one stays where the failed punch left it, as before) */
		back += written;
	}
	if (back)
		atomic_fetch_add(&f->cache->st.evictions_undone, back);
	capture_free(cap);
}

/* The chain is queued: no more pages go in, and the write end is not needed. */
void capture_sealed(struct capture *cap)
{
	if (cap && cap->pipe[1] >= 0) {
		close(cap->pipe[1]);
		cap->pipe[1] = -1;
	}
}
