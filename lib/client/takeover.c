/* SPDX-License-Identifier: MIT */
/*
 * takeover.c - while no daemon runs, a client serves its own faults.
 *
 * When upcd dies (kill -9, a crash) or stops (SIGTERM), its pages stay in
 * the memfds and their page table in the page-table memfds, and every
 * client holds descriptors of both for each file it maps (client.h, struct
 * cfile).  Until a daemon is back and adopts them (connect.c, reconnect()),
 * each client serves the faults of its own mappings itself, on the same
 * memfds, so that its threads carry on instead of waiting in the kernel:
 *
 *   - a MISSING fault (the page is in no one's memfd) is filled from the
 *     file with UFFDIO_COPY into the client's own mapping, which puts it in
 *     the memfd, so every other process of the file sees it at once; a
 *     read fills it write-protected, as the daemon does;
 *   - a MINOR fault (another process filled it) maps the memfd's page with
 *     UFFDIO_CONTINUE;
 *   - a write-protect fault lifts the protection: the page is written
 *     under the client's own PTE, which says so (the pagemap's uffd-wp bit,
 *     57, is clear) until the client hands its mappings back;
 *   - past the cache's end of file, UFFDIO_POISON: the kernel's SIGBUS
 *     (BUS_ADRERR) and EFAULT, as the daemon's refusal (remote.c).
 *
 * upc_msync, upc_fsync and upc_unmap are served here too: they write the
 * pages of the range that the page table calls dirty (the dead daemon's)
 * or that the journal names (written since, by any process: rule 5) to
 * the file, and fdatasync it; a clean page is never written (an older
 * memfd must not roll the file back).  Nothing is marked clean: the pages
 * are written again by each msync, and by the next daemon.  That is what
 * msync across processes promises (a store by any process before the call
 * is in the file after it).  Every other call waits for a daemon, for
 * $UPC_RECONNECT seconds, and fails with -ENOTCONN after that; the
 * mappings go on being served.  A client that may only read a file serves
 * nothing of it (its mapping is private: client.c) and takes no lock.
 *
 * The rules that make it safe, with the daemon's side in cache.c
 * (file_new) and remote.c (remote_adopt):
 *
 *  1. Never beside a daemon.  A daemon that holds a file holds an OFD
 *     write lock on byte 0 of its page-table memfd, through its own
 *     read-write open file description; a client takes over a file only
 *     under an OFD read lock on its own read-only description of that
 *     memfd (every MAP reply is a new open: remote_map_prepare).  The
 *     kernel drops a dead daemon's lock with its last descriptor, so the
 *     lock is free exactly when no daemon serves the file, and a client
 *     whose connection alone was lost (the daemon lives) takes nothing
 *     over.  A client whose lock is refused waits, as before takeover.
 *  2. A restarted daemon adopts a file only under its write lock: only
 *     when every client that took it over has handed it back, so nothing
 *     a client writes meanwhile can be dropped by the adoption (which
 *     keeps only the page table's dirty pages: adopt.c, file_adopt_pages)
 *     nor called clean under a writable PTE the daemon does not know (I1).
 *     It waits for the lock (adopt.c, file_adopt_wait), the clients
 *     notice the daemon within 100 ms and hand back; after 10 s it takes
 *     the file without the lock (a stopped client, or one holding the
 *     lock on purpose, must not stop every other client of the file).  A
 *     new daemon also adopts the old memfds of a file a new client asks
 *     for, from whichever process holds them (adopt.c,
 *     cache_find_orphans), so the file never gets a second memfd beside
 *     clients that still serve themselves on the first.
 *  3. Handing back (takeover_end) is the kernel's order for dirty PTEs
 *     (Torvalds/Hansen/Kara, seeds/: the dirty bit travels with the PTE,
 *     and a page is clean only once no PTE can write it): the takeover
 *     thread stops first, so no protection is lifted any more; then every
 *     PTE of the client's that is present and not protected (bit 57 clear)
 *     is protected again, and only then are those pages written to the
 *     file.  A write after the protection waits in the kernel for the new
 *     daemon, which has the data in the file already when it adopts.
 *  4. Two processes' write-backs of a page must not cross (one's older
 *     copy written after the other's newer one, whose msync returned): a
 *     POSIX write lock on the memfd's range of the write-back orders them
 *     between processes (POSIX locks are a process's own, which is what is
 *     wanted here: all writers share one open file description of the
 *     memfd), and @to_wb between this process's threads.
 *
 *  5. A client may die while it serves itself (kill -9), and its PTEs, the
 *     only record of what it wrote, die with it.  So before it lets a page
 *     be written (a protection lifted, or a page filled writable) it says
 *     so in the journal, a byte per page at UPC_JOURNAL_OFF in the data
 *     memfd, which every client that may write the file can write (the
 *     page table is read-only for clients), through a mapping (journal_mark:
 *     no RLIMIT_FSIZE applies to a store); the next daemon takes every
 *     page the journal names and the memfd holds as dirty (adopt.c,
 *     file_adopt_journal), under its lock, then clears the journal.  The
 *     order is the daemon's own: PG_DIRTY before the protection goes.  A
 *     client that may write the file can write any of its pages anyway,
 *     so a journal byte it forges costs nobody more than that (a page
 *     written back once more).  The data lives as long as some process
 *     holds the memfd: a file whose every client died while no daemon ran
 *     is gone with its memfd, dirty pages and all (upcd(8), BUGS).
 *
 * What it cannot do (upcd(8), BUGS): under asynchronous tracking no client
 * takes over (a write there lifts its own protection, in the kernel, so a
 * write between rule 3's protection and the adoption would be unseen).
 */
#include "internal.h"
#include "client.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WB_CHUNK	(256u << 10)
#define TAKEOVER_SPIN_US	200	/* looking for the next fault before sleeping (takeover_main) */

static uint64_t npages_of(int64_t size)
{
	return pg_round_up((uint64_t)size) >> UPC_PAGE_SHIFT;
}

/* Rule 1: an OFD lock on byte 0 of the page-table memfd; @type F_RDLCK or F_UNLCK. */
static int takeover_lock(int statefd, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

	return fcntl(statefd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------ writing back */

#define WB_BATCH	(WB_CHUNK >> UPC_PAGE_SHIFT)

/*
 * Which of the @n pages from @pg to write: those the page table calls
 * dirty (the dead daemon's: PG_DIRTY, PG_WRITEBACK, PG_PINWRITE, as
 * file_adopt_pages() reads them) and those the journal names (written
 * while no daemon ran: rule 5, by any process).  A clean page is never
 * written: a memfd kept from before a newer one served the file must not
 * roll the file back with it (review of 36c145e: a refused memfd, taken
 * over again, wrote its stale page over a newer msync).  Pages pinned
 * with UPC_PIN_NOWRITEBACK are held back and counted in @held.
 */
static void wb_select(struct cfile *cf, uint64_t pg, size_t n, bool *sel, unsigned int *held)
{
	struct upc_page pt[WB_BATCH];
	unsigned char jr[WB_BATCH];
	ssize_t got;

	memset(pt, 0, sizeof(pt));
	memset(jr, 0, sizeof(jr));
	got = pread(cf->statefd, pt, n * sizeof(pt[0]), pt_entry_off(pg));
	if (got < 0)
		memset(pt, 0, sizeof(pt));
	got = pread(cf->memfd, jr, n, (off_t)(UPC_JOURNAL_OFF + pg));
	if (got < 0)
		memset(jr, 0, sizeof(jr));
	for (size_t i = 0; i < n; i++) {
		bool dirty = (pt[i].flags & (PG_DIRTY | PG_WRITEBACK | PG_PINWRITE)) || jr[i];

		sel[i] = dirty && !(pt[i].flags & PG_NOWB);
		if (dirty && (pt[i].flags & PG_NOWB))
			(*held)++;
	}
}

/*
 * Write the pages of @cf in file pages [p0, p1) that wb_select() picks and
 * the memfd holds, within the cache's size, to the file.  Rule 4.  Nothing
 * is marked anywhere: the pages stay what they were (dirty in the page
 * table, or named by the journal), and are written again by the daemon
 * that adopts them.  A client that may not write the file has nothing of
 * its own to write.  Returns 0 or a negative errno; *@held counts the
 * pages held back by pins.
 */
static int wb_range(struct upc_client *cl, struct cfile *cf, uint64_t p0, uint64_t p1, unsigned int *held)
{
	off_t end = (off_t)min_t(uint64_t, p1, npages_of(cf->size)) << UPC_PAGE_SHIFT;
	off_t off = (off_t)(p0 << UPC_PAGE_SHIFT);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = end - off };
	int ffl = sys_fd_flags(cf->fd), wfd = cf->fd, ret = 0;
	bool sel[WB_BATCH];
	char *buf;

	if (off >= end || ffl < 0 || (ffl & O_ACCMODE) == O_RDONLY ||
	    (sys_fd_flags(cf->memfd) & O_ACCMODE) == O_RDONLY)
		return 0;
	/* pwrite(2) appends on an O_APPEND descriptor, and O_DIRECT wants aligned lengths: an open of our own */
	if (ffl & (O_APPEND | O_DIRECT)) {
		wfd = sys_fd_reopen(cf->fd, O_RDWR);
		if (wfd < 0)
			return wfd;
	}
	buf = malloc(WB_CHUNK);
	if (!buf) {
		if (wfd != cf->fd)
			close(wfd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&cl->to_wb);
	while (fcntl(cf->memfd, F_SETLKW, &fl) < 0)
		if (errno != EINTR) {
			ret = -errno;
			goto out;
		}
	while (off < end && ret == 0) {
		off_t d = lseek(cf->memfd, off, SEEK_DATA), h;

		if (d < 0 || d >= end) {
			if (d < 0 && errno != ENXIO)
				ret = -errno;
			break;
		}
		h = lseek(cf->memfd, d, SEEK_HOLE);
		if (h < 0 || h > end)
			h = end;
		for (off = d; off < h && ret == 0;) {
			size_t n = (size_t)min_t(off_t, h - off, (off_t)WB_CHUNK) >> UPC_PAGE_SHIFT;

			if (!n)
				n = 1;		/* a last page short of the page: within the size */
			wb_select(cf, (uint64_t)off >> UPC_PAGE_SHIFT, n, sel, held);
			for (size_t i = 0; i < n && ret == 0;) {
				size_t j = i;
				off_t at = off + (off_t)(i << UPC_PAGE_SHIFT);
				size_t len, m;
				ssize_t r;

				while (j < n && sel[j])
					j++;
				if (j == i) {
					i++;
					continue;
				}
				len = (j - i) << UPC_PAGE_SHIFT;
				r = pread(cf->memfd, buf, len, at);
				if (r <= 0) {
					ret = r < 0 ? -errno : -EIO;
					break;
				}
				/* the last page only up to the end of the file */
				m = (size_t)min_t(int64_t, r, cf->size - at);
				for (size_t done = 0; done < m;) {
					ssize_t w = pwrite(wfd, buf + done, m - done, at + (off_t)done);

					if (w <= 0) {
						ret = w < 0 ? -errno : -EIO;
						break;
					}
					done += (size_t)w;
				}
				i = j;
			}
			off += (off_t)(n << UPC_PAGE_SHIFT);
		}
	}
	fl.l_type = F_UNLCK;
	fcntl(cf->memfd, F_SETLK, &fl);
out:
	pthread_mutex_unlock(&cl->to_wb);
	free(buf);
	if (wfd != cf->fd)
		close(wfd);
	if (ret < 0)
		pr_warn("write-back while upcd is away: %s\n", upc_strerror(ret));
	return ret;
}

/*
 * Rule 3 for [start, end) of the range @r (maps_lock held, the takeover
 * thread stopped or @r's pages served by no one else): protect every page
 * this process may have written, then write those pages.
 */
struct protect_arg {
	struct upc_client *cl;
	const struct crange *r;
	int uffd;
	unsigned int held;		/* pinned pages: written by the next daemon, pins gone */
};

static int protect_run(void *arg, uintptr_t addr, uint64_t n)
{
	struct protect_arg *pa = arg;
	uint64_t p = pa->r->pgoff + ((addr - pa->r->start) >> UPC_PAGE_SHIFT);
	int ret = sys_uffd_wp(pa->uffd, addr, n << UPC_PAGE_SHIFT, true, false);

	if (ret < 0 && ret != -ENOENT)
		return ret;
	return wb_range(pa->cl, pa->r->file, p, p + n, &pa->held);
}

static int protect_and_write(struct upc_client *cl, const struct crange *r, uintptr_t start, uintptr_t end)
{
	struct protect_arg pa = { .cl = cl, .r = r, .uffd = atomic_load(&cl->uffd) };
	int pfd, ret;

	if (!(r->prot & PROT_WRITE) || !r->file->taken)
		return 0;
	pfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	ret = pagemap_writable_runs(pfd, start, (end - start) >> UPC_PAGE_SHIFT, protect_run, &pa);
	close(pfd);
	return ret;
}

/* ------------------------------------------------------------ the faults */

/* The range of @addr, copied, if its file is taken over.  maps_lock taken here. */
static bool lookup(struct upc_client *cl, uintptr_t addr, struct crange *out)
{
	struct crange *r;
	bool found;

	pthread_mutex_lock(&cl->maps_lock);
	r = cmaps_at(cl, addr);
	found = r && r->file->taken;
	if (found) {
		*out = *r;
		out->file->refs++;	/* its descriptors stay while the fault is served */
	}
	pthread_mutex_unlock(&cl->maps_lock);
	return found;
}

static void lookup_done(struct upc_client *cl, struct crange *r)
{
	pthread_mutex_lock(&cl->maps_lock);
	cfile_put(&cl->files, r->file);
	pthread_mutex_unlock(&cl->maps_lock);
}

/*
 * The journal's byte of page @pgoff, mapped: a window of the memfd from
 * UPC_JOURNAL_OFF, remapped larger when @pgoff is past it.  A store there
 * is not a write(2), so no RLIMIT_FSIZE refuses it (the journal is 2^62
 * bytes into the memfd: a write(2) there fails, EFBIG, under any limit a
 * process would set).  NULL where the memfd does not reach that far (an
 * earlier upcd's, which did not make its memfds that long: cache.c,
 * memfd_journal_span) or the mapping fails.  Only the takeover thread
 * marks the journal; the cfile is held by the crange it serves.
 */
#define JOURNAL_WINDOW	(2ull << 20)	/* a window's bytes grow by this much: 8 GiB of file */

static unsigned char *journal_byte(struct cfile *cf, uint64_t pgoff)
{
	struct stat st;
	size_t len;
	void *p;

	if (cf->journal && pgoff < cf->journal_len)
		return cf->journal + pgoff;
	if (pgoff >= UPC_JOURNAL_LEN || fstat(cf->memfd, &st) < 0 ||
	    (uint64_t)st.st_size < UPC_JOURNAL_OFF + UPC_JOURNAL_LEN)
		return NULL;
	len = (size_t)((pgoff / JOURNAL_WINDOW + 1) * JOURNAL_WINDOW);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, cf->memfd, (off_t)UPC_JOURNAL_OFF);
	if (p == MAP_FAILED)
		return NULL;
	/* not a forked child's: it would hold the memfd with no descriptor (client.c, client_fork_child) */
	madvise(p, len, MADV_DONTFORK);
	if (cf->journal)
		munmap(cf->journal, cf->journal_len);
	cf->journal = p;
	cf->journal_len = len;
	return cf->journal + pgoff;
}

/*
 * Rule 5: the page at @pgoff may be written from now on: said in the
 * journal first (UPC_JOURNAL_OFF), where the next daemon reads it even if
 * this process dies before it hands back.  Through the mapping above, else
 * by pwrite(2).  If it cannot be said (the memfd's filesystem is full, or
 * an earlier daemon's memfd and this process's RLIMIT_FSIZE), the write
 * goes on, and only this process's death before the hand-back would lose
 * it: logged.
 */
static void journal_mark(struct cfile *cf, uint64_t pgoff)
{
	static const unsigned char one = 1;
	unsigned char *b = journal_byte(cf, pgoff);

	/* The memfd is on the kernel's internal tmpfs, which has no size limit: the store fails only as memory does. */
	if (b) {
		*(volatile unsigned char *)b = 1;
		return;
	}
	if (pwrite(cf->memfd, &one, 1, (off_t)(UPC_JOURNAL_OFF + pgoff)) != 1)
		pr_warn("takeover journal of page %llu: %s; written all the same\n", (unsigned long long)pgoff,
			strerror(errno));
}

/*
 * The access at @addr gets SIGBUS, as fault.c's fault_fail() gives it: a
 * poison marker (the kernel's own SIGBUS, BUS_ADRERR, and EFAULT for a
 * kernel-mode access), after the write-protect marker a PTE past end of
 * file may hold is removed (UFFDIO_POISON refuses to replace one: EEXIST,
 * and the fault came back for ever: review of 36c145e).  Without POISON,
 * the faulting thread @ptid is signalled (SI_TKILL, no address).
 */
static void refuse(struct upc_client *cl, int uffd, uintptr_t addr, uint32_t ptid)
{
	sys_uffd_wp(uffd, addr, UPC_PAGE_SIZE, false, false);
	if (sys_uffd_poison(uffd, addr, UPC_PAGE_SIZE) < 0) {
		if (ptid)
			syscall(SYS_tgkill, getpid(), (pid_t)ptid, SIGBUS);
		sys_uffd_wake(uffd, addr, UPC_PAGE_SIZE);
		return;
	}
	pthread_mutex_lock(&cl->maps_lock);
	if (cl->npoisoned == cl->poison_cap) {
		size_t cap = cl->poison_cap ? 2 * cl->poison_cap : 16;
		uintptr_t *n = realloc(cl->poisoned, cap * sizeof(*n));

		if (n) {
			cl->poisoned = n;
			cl->poison_cap = cap;
		}
	}
	if (cl->npoisoned < cl->poison_cap)
		cl->poisoned[cl->npoisoned++] = addr;
	pthread_mutex_unlock(&cl->maps_lock);
}

static void serve_one(struct upc_client *cl, int uffd, const struct uffd_msg *msg, const struct crange *rp,
		      void *page);

/* Returns whether it was this process's to serve. */
static bool serve_fault(struct upc_client *cl, int uffd, const struct uffd_msg *msg, void *page)
{
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address & ~(uintptr_t)(UPC_PAGE_SIZE - 1);
	struct crange r;

	/* Not ours to serve (no lock on its file): it waits for the daemon's adoption, which wakes it. */
	if (!lookup(cl, addr, &r))
		return false;
	serve_one(cl, uffd, msg, &r, page);
	lookup_done(cl, &r);
	return true;
}

static void serve_one(struct upc_client *cl, int uffd, const struct uffd_msg *msg, const struct crange *rp,
		      void *page)
{
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address & ~(uintptr_t)(UPC_PAGE_SIZE - 1);
	uint64_t fl = msg->arg.pagefault.flags;
	bool write = fl & UFFD_PAGEFAULT_FLAG_WRITE;
	const struct crange r = *rp;
	uint64_t pgoff;
	long ret;

	uint32_t ptid = msg->arg.pagefault.feat.ptid;
	/* protected fills only where the range is registered for it: once writable (map.c, map_register) */
	bool wp_ok = r.prot & PROT_WRITE;

	pgoff = r.pgoff + ((addr - r.start) >> UPC_PAGE_SHIFT);
	if (fl & UFFD_PAGEFAULT_FLAG_WP) {
		journal_mark(r.file, pgoff);
		sys_uffd_wp(uffd, addr, UPC_PAGE_SIZE, false, true);
		return;
	}
	if (pgoff >= npages_of(r.file->size)) {
		refuse(cl, uffd, addr, ptid);
		return;
	}
	/* a write fault of a writable mapping maps the page writable at once: rule 3 finds it */
	write = write && (r.cur_prot & PROT_WRITE);
	if (write)
		journal_mark(r.file, pgoff);
	if (fl & UFFD_PAGEFAULT_FLAG_MINOR) {
		ret = sys_uffd_continue(uffd, addr, UPC_PAGE_SIZE, !write && wp_ok, true);
	} else {
		ssize_t n;

		/*
		 * A read-only client's mapping is private (client.c, client_map):
		 * a copy would be a page of its own, which would never see
		 * another process's write.  It waits for the daemon.
		 */
		if ((sys_fd_flags(r.file->memfd) & O_ACCMODE) == O_RDONLY)
			return;
		n = pread(r.file->fd, page, UPC_PAGE_SIZE, (off_t)(pgoff << UPC_PAGE_SHIFT));

		if (n < 0) {
			pr_warn("reading page %llu while upcd is away: %s\n", (unsigned long long)pgoff,
				strerror(errno));
			refuse(cl, uffd, addr, ptid);	/* the engine's read error: SIGBUS */
			return;
		}
		memset((char *)page + n, 0, UPC_PAGE_SIZE - (size_t)n);
		ret = sys_uffd_copy(uffd, addr, page, UPC_PAGE_SIZE, !write && wp_ok, true);
	}
	/* Another process filled it meanwhile (-EEXIST), or it went: it faults again. */
	if (ret < 0)
		sys_uffd_wake(uffd, addr, UPC_PAGE_SIZE);
}

static void *takeover_main(void *arg)
{
	struct upc_client *cl = arg;
	int uffd = atomic_load(&cl->uffd);
	struct uffd_msg msgs[16];
	void *page = NULL;

	uint64_t last = 0;
	sigset_t xfsz;

	/*
	 * The journal is written far past the memfd's pages (UPC_JOURNAL_OFF):
	 * under an RLIMIT_FSIZE below that, write(2) sends SIGXFSZ, which
	 * kills the process (review of fdcd625).  Blocked here, the write
	 * fails with EFBIG instead, and the page goes unjournaled (logged).
	 */
	sigemptyset(&xfsz);
	sigaddset(&xfsz, SIGXFSZ);
	pthread_sigmask(SIG_BLOCK, &xfsz, NULL);
	if (posix_memalign(&page, UPC_PAGE_SIZE, UPC_PAGE_SIZE))
		return NULL;
	for (;;) {
		struct pollfd pfd[2] = { { .fd = uffd, .events = POLLIN }, { .fd = cl->to_efd, .events = POLLIN } };
		ssize_t n;

		/*
		 * A thread that faults page after page faults again a few
		 * microseconds after it is woken: looking again for a while
		 * (yielding the CPU) before sleeping in poll(2) saves a wake-up
		 * of this thread on the other CPU each time, 40-80 us on these
		 * machines (DESIGN.md; the engine pins a handler to each CPU for
		 * the same reason: fault.c).  upc-bench-shared: 87 us a MISSING
		 * fault without it, on an idle machine.
		 */
		if (atomic_load(&cl->to_stop))
			break;
		n = read(uffd, msgs, sizeof(msgs));
		if (n < 0 && errno == EAGAIN && now_us() - last < TAKEOVER_SPIN_US) {
			sched_yield();
			continue;
		}
		if (n < 0 && errno == EAGAIN) {
			if (poll(pfd, 2, -1) < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (pfd[1].revents)
				break;
			continue;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT && serve_fault(cl, uffd, &msgs[i], page))
				last = now_us();	/* only a fault served here is worth looking ahead for */
	}
	free(page);
	return NULL;
}

/* ------------------------------------------------------------ begin, end */

void takeover_init(struct upc_client *cl)
{
	pthread_rwlockattr_t a;

	/* the hand-back (a writer) must not wait behind a stream of msyncs (readers) */
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&cl->to_lock, &a);
	pthread_rwlockattr_destroy(&a);
	pthread_mutex_init(&cl->to_wb, NULL);
	cl->to_efd = -1;
	atomic_store(&cl->to_active, false);
}

void takeover_fini(struct upc_client *cl)
{
	free(cl->poisoned);
	cl->poisoned = NULL;
	cl->npoisoned = cl->poison_cap = 0;
}

/*
 * The daemon is away: take over every file whose lock is free (rule 1),
 * start serving faults if not yet, and wake the ranges of the files taken
 * now (a thread whose fault message the dead daemon had read waits for a
 * wake nobody else sends).  Called again while the daemon stays away, for
 * the files whose lock was still held (a daemon dies after its socket
 * hangs up).  Synchronous tracking only (see the top).  Returns the number
 * of files taken over, 0 if none.
 */
int takeover_begin(struct upc_client *cl)
{
	int uffd = atomic_load(&cl->uffd), taken = 0, fresh = 0;

	if (cl->track_mode != UPC_TRACK_SYNC || uffd < 0 || !cl->reconnect_ms)
		return 0;
	pthread_rwlock_wrlock(&cl->to_lock);
	pthread_mutex_lock(&cl->maps_lock);
	for (struct cfile *cf = cl->files; cf; cf = cf->next) {
		struct upc_state_hdr h;

		/*
		 * A client that may not write the file has nothing to serve
		 * itself: its mapping is private, and its faults wait for the
		 * daemon (serve_one); it takes no lock, which would only delay
		 * the next daemon.
		 */
		if ((sys_fd_flags(cf->memfd) & O_ACCMODE) == O_RDONLY)
			continue;
		if (!cf->taken && takeover_lock(cf->statefd, F_RDLCK) == 0) {
			if (pread(cf->statefd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) && h.magic == UPC_STATE_MAGIC &&
			    h.page_size == UPC_PAGE_SIZE && atomic_load(&h.size) >= 0) {
				cf->size = atomic_load(&h.size);
				cf->taken = true;
				fresh++;
			} else {
				takeover_lock(cf->statefd, F_UNLCK);
			}
		}
		taken += cf->taken;
	}
	pthread_mutex_unlock(&cl->maps_lock);
	if (fresh && !atomic_load(&cl->to_active)) {
		atomic_store(&cl->to_stop, false);
		cl->to_efd = eventfd(0, EFD_CLOEXEC);
		if (cl->to_efd >= 0 && pthread_create(&cl->to_thread, NULL, takeover_main, cl) == 0) {
			pthread_setname_np(cl->to_thread, "upc-takeover");
			atomic_store(&cl->to_active, true);
		} else {
			if (cl->to_efd >= 0)
				close(cl->to_efd);
			cl->to_efd = -1;
			pthread_rwlock_unlock(&cl->to_lock);
			takeover_end(cl);	/* lets the locks go: the faults wait for a daemon */
			return 0;
		}
	}
	if (fresh) {
		pthread_mutex_lock(&cl->maps_lock);
		for (size_t i = 0; i < cl->nmaps; i++)
			if (cl->maps[i].file->taken)
				sys_uffd_wake(uffd, cl->maps[i].start, cl->maps[i].end - cl->maps[i].start);
		pthread_mutex_unlock(&cl->maps_lock);
		pr_warn("upcd is away: this process serves its own faults on %d file%s\n", taken,
			taken == 1 ? "" : "s");
	}
	pthread_rwlock_unlock(&cl->to_lock);
	/* a call waiting for the daemon that is served here now: msync, fsync, unmap (request_fds) */
	pthread_mutex_lock(&cl->lock);
	pthread_cond_broadcast(&cl->up);
	pthread_mutex_unlock(&cl->lock);
	return taken;
}

/*
 * A daemon is back: hand every file taken over back to it (rule 3), before
 * this process's userfaultfd is attached to it.  Also when takeover_begin()
 * failed half way.
 */
void takeover_end(struct upc_client *cl)
{
	uint64_t one = 1;
	int err = 0;

	pthread_rwlock_wrlock(&cl->to_lock);
	if (atomic_load(&cl->to_active)) {
		atomic_store(&cl->to_stop, true);
		if (write(cl->to_efd, &one, sizeof(one)) == sizeof(one))
			pthread_join(cl->to_thread, NULL);
		close(cl->to_efd);
		cl->to_efd = -1;
		atomic_store(&cl->to_active, false);
	}
	pthread_mutex_lock(&cl->maps_lock);
	for (size_t i = 0; i < cl->nmaps; i++) {
		int r = protect_and_write(cl, &cl->maps[i], cl->maps[i].start, cl->maps[i].end);

		if (r < 0 && !err)
			err = r;
	}
	/* the poison markers of refused accesses: the daemon knows nothing of them */
	for (size_t i = 0; i < cl->npoisoned; i++)
		madvise((void *)cl->poisoned[i], UPC_PAGE_SIZE, MADV_DONTNEED);
	cl->npoisoned = 0;
	for (struct cfile *cf = cl->files; cf; cf = cf->next)
		if (cf->taken) {
			takeover_lock(cf->statefd, F_UNLCK);
			cf->taken = false;
		}
	pthread_mutex_unlock(&cl->maps_lock);
	pthread_rwlock_unlock(&cl->to_lock);
	/*
	 * A page that could not be written stays in the memfd, and the daemon
	 * drops it if its page table calls it clean: said, as a write-back
	 * error is (the file's write-back error is the daemon's to report).
	 */
	if (err < 0)
		pr_warn("handing back to upcd: a page written while it was away could not be written: %s\n",
		       upc_strerror(err));
}

/* ------------------------------------------------------------ calls served here */

/* Is [addr, addr+len) wholly covered by mappings?  maps_lock held. */
static bool covered(struct upc_client *cl, uintptr_t addr, uintptr_t end)
{
	while (addr < end) {
		bool hit = false;

		for (size_t i = 0; i < cl->nmaps; i++)
			if (cl->maps[i].start <= addr && addr < cl->maps[i].end) {
				addr = cl->maps[i].end;
				hit = true;
				break;
			}
		if (!hit)
			return false;
	}
	return true;
}

/* A call served here: true with @to_lock held for reading, if this process serves itself now. */
static bool to_enter(struct upc_client *cl)
{
	if (!atomic_load(&cl->to_active))
		return false;
	pthread_rwlock_rdlock(&cl->to_lock);
	if (atomic_load(&cl->to_active))
		return true;
	pthread_rwlock_unlock(&cl->to_lock);
	return false;
}

/* A call of this thread that must go to the daemon, not be served here (client.c, request_fds). */
__thread bool takeover_bypass;

/*
 * upc_msync while the daemon is away (see the top): the pages of the range
 * that are dirty in the page table or named by the journal are written;
 * UPC_MS_SYNC makes them durable.  False if this process does not serve
 * every file of the range now: the call goes to the daemon, and waits.
 * Returns, as upc_msync(3), the pages held back by UPC_PIN_NOWRITEBACK
 * pins, if any.
 */
bool takeover_msync(struct upc_client *cl, uintptr_t addr, size_t len, int flags, int *retp)
{
	uintptr_t end = addr + len;
	unsigned int held = 0;
	int ret = 0;

	if (!to_enter(cl))
		return false;
	pthread_mutex_lock(&cl->maps_lock);
	if ((flags & ~(int)UPC_MS_FLAGS_ALL) || (flags & UPC_MS_FLAGS_ALL) == 0 ||
	    (flags & UPC_MS_FLAGS_ALL) == UPC_MS_FLAGS_ALL || (addr & (UPC_PAGE_SIZE - 1)) || !len || end < addr)
		ret = -EINVAL;
	else if (pg_round_up(end) < end || !covered(cl, addr, pg_round_up(end)))
		ret = -ENOMEM;		/* the top page of the address space is never a mapping */
	for (size_t i = 0; i < cl->nmaps && ret == 0; i++) {
		struct crange *r = &cl->maps[i];

		/* a read-only range has nothing to write (its record is never taken) */
		if (r->start < pg_round_up(end) && r->end > addr && !r->file->taken && r->file->acc != O_RDONLY) {
			pthread_mutex_unlock(&cl->maps_lock);
			pthread_rwlock_unlock(&cl->to_lock);
			takeover_bypass = true;		/* the daemon's, and it waits for one */
			return false;
		}
	}
	for (size_t i = 0; i < cl->nmaps && ret == 0; i++) {
		struct crange *r = &cl->maps[i];
		uintptr_t s = max_t(uintptr_t, r->start, addr), e = min_t(uintptr_t, r->end, pg_round_up(end));

		struct cfile *wf = r->file;

		/*
		 * A read-only range is written through this process's writable
		 * record of the same memfd, if it has one (the pages are the
		 * same); else there is nothing this process may write.
		 */
		if (!wf->taken)
			for (wf = cl->files; wf && !(wf->taken && wf->mdev == r->file->mdev && wf->mino == r->file->mino);
			     wf = wf->next)
				;
		if (s >= e || !wf)
			continue;
		ret = wb_range(cl, wf, r->pgoff + ((s - r->start) >> UPC_PAGE_SHIFT),
			       r->pgoff + ((e - r->start) >> UPC_PAGE_SHIFT), &held);
		if (ret == 0 && (flags & UPC_MS_SYNC) && fdatasync(wf->fd) < 0 && errno != EBADF &&
		    errno != EINVAL)
			ret = -errno;
	}
	pthread_mutex_unlock(&cl->maps_lock);
	pthread_rwlock_unlock(&cl->to_lock);
	*retp = ret < 0 ? ret : (int)held;
	return true;
}

/* upc_fsync while the daemon is away: the whole file, as takeover_msync(). */
bool takeover_fsync(struct upc_client *cl, int fd, bool datasync, int *retp)
{
	struct stat st, cs;
	unsigned int held = 0;
	struct cfile *cf;
	int ret = 0;

	if (!to_enter(cl))
		return false;
	if (fstat(fd, &st) < 0) {
		pthread_rwlock_unlock(&cl->to_lock);
		*retp = -EBADF;		/* as the daemon answers, not after waiting for one */
		return true;
	}
	pthread_mutex_lock(&cl->maps_lock);
	for (cf = cl->files; cf; cf = cf->next)
		if (cf->taken && fstat(cf->fd, &cs) == 0 && cs.st_dev == st.st_dev && cs.st_ino == st.st_ino)
			break;
	if (cf) {
		ret = wb_range(cl, cf, 0, npages_of(cf->size), &held);
		if (ret == 0 && (datasync ? fdatasync(fd) : fsync(fd)) < 0)
			ret = -errno;
	}
	pthread_mutex_unlock(&cl->maps_lock);
	pthread_rwlock_unlock(&cl->to_lock);
	if (!cf)
		return false;
	*retp = ret < 0 ? ret : (int)held;	/* as upc_msync: the pages pins held back */
	return true;
}

/*
 * upc_unmap while the daemon is away, of a range wholly of mappings of
 * files taken over (else -EINVAL, as the daemon answers, or false: the
 * call waits for the daemon).  The range leaves the list first, so that
 * the takeover thread serves no fault in it any more (a write fault waits
 * until the munmap, then faults on nothing); what this process wrote in it
 * is protected and written (rule 3: once unmapped, nothing but the journal
 * says it was written); then it is unmapped.  The daemon that comes back
 * never hears of it.
 */
bool takeover_unmap(struct upc_client *cl, uintptr_t addr, size_t len, int *retp)
{
	uintptr_t end = pg_round_up(addr + len);
	struct crange *cut = NULL;
	size_t ncut = 0;
	int ret = 0;

	if (!to_enter(cl))
		return false;
	pthread_mutex_lock(&cl->maps_lock);
	if ((addr & (UPC_PAGE_SIZE - 1)) || !len || end < addr || !covered(cl, addr, end))
		ret = -EINVAL;
	for (size_t i = 0; i < cl->nmaps && ret == 0; i++)
		if (cl->maps[i].end > addr && cl->maps[i].start < end && !cl->maps[i].file->taken) {
			pthread_mutex_unlock(&cl->maps_lock);
			pthread_rwlock_unlock(&cl->to_lock);
			return false;
		}
	if (ret == 0) {
		cut = calloc(cl->nmaps, sizeof(*cut));
		if (!cut)
			ret = -ENOMEM;
	}
	for (size_t i = 0; i < cl->nmaps && ret == 0; i++) {
		struct crange *r = &cl->maps[i];

		if (r->end <= addr || r->start >= end)
			continue;
		cut[ncut] = *r;
		cut[ncut].start = max_t(uintptr_t, r->start, addr);
		cut[ncut].end = min_t(uintptr_t, r->end, end);
		cut[ncut].pgoff = r->pgoff + ((cut[ncut].start - r->start) >> UPC_PAGE_SHIFT);
		r->file->refs++;
		ncut++;
	}
	/* the poison markers there go with the mapping */
	for (size_t i = 0; i < cl->npoisoned;)
		if (ret == 0 && cl->poisoned[i] >= addr && cl->poisoned[i] < end)
			cl->poisoned[i] = cl->poisoned[--cl->npoisoned];
		else
			i++;
	pthread_mutex_unlock(&cl->maps_lock);
	if (ret == 0) {
		cmaps_cut(cl, addr, end);
		for (size_t i = 0; i < ncut; i++) {
			int r = protect_and_write(cl, &cut[i], cut[i].start, cut[i].end);

			if (r < 0 && !ret)
				ret = r;
		}
		munmap((void *)addr, end - addr);
		sys_uffd_wake(atomic_load(&cl->uffd), addr, end - addr);
		pthread_mutex_lock(&cl->maps_lock);
		for (size_t i = 0; i < ncut; i++)
			cfile_put(&cl->files, cut[i].file);
		pthread_mutex_unlock(&cl->maps_lock);
	}
	pthread_rwlock_unlock(&cl->to_lock);
	free(cut);
	*retp = ret;
	return true;
}
