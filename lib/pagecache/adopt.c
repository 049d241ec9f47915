/* SPDX-License-Identifier: MIT */
/*
 * adopt.c - upcd after a restart: the memfds of an earlier daemon, taken
 * back with what they cache.
 *
 * A daemon that dies leaves each file's two memfds (the data, and the page
 * table with its header and takeover journal) in the processes that hold
 * them: its clients, which serve themselves meanwhile (lib/client/
 * takeover.c), its keeper (daemon/keeper.c), systemd's descriptor store.
 * The next daemon adopts them instead of making new ones, so that nothing
 * a client wrote is lost and every client of a file goes on sharing one
 * cache: a client hands back its mappings (remote.c, remote_adopt:
 * file_adopt_wait here), a keeper hands over what it kept
 * (cache_add_kept), and at start the daemon looks for the memfds other
 * processes hold (cache_find_orphans) so that a new process asking for
 * such a file gets the old memfd, not a second one beside it.
 *
 * Adopting a memfd (file_new, cache.c, with these): check that it is the
 * daemon's own (adopt_fd), mark dirty the pages the journal names as
 * written by clients that served themselves (file_adopt_journal), and
 * rebuild the cached and dirty state from what the memfd holds
 * (file_adopt_pages).  Only a serving cache (upcd) adopts; in an embedded
 * cache orphan_lookup() answers "not such a file" at once.
 */
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * A descriptor of the daemon's own memfd (@kind "upcache" for the data,
 * "upcache-pt" for the page table) of the file @st, as a client passed it
 * back: a memfd of that name, owned by the daemon's user (a client cannot
 * make a file owned by another user, so a client of a root daemon cannot
 * forge one; a client of the daemon's own user could, and is trusted with
 * everything anyway: upcd(8), SECURITY).  Reopened read-write: a client of
 * a read-only file holds a read-only one, and the inode's mode is 0400
 * (file_new), which its owner may change for a moment.
 */
int adopt_fd(int fd, const char *kind, const struct stat *st)
{
	char link[128], want[96], path[32];
	struct stat ms;
	ssize_t n;
	int ret;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	snprintf(want, sizeof(want), "/memfd:%s:%lx:%lu ", kind, (unsigned long)st->st_dev,
		 (unsigned long)st->st_ino);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	/* "/memfd:NAME (deleted)" */
	if (strncmp(link, want, strlen(want)) != 0 || fstat(fd, &ms) < 0 || ms.st_uid != geteuid() ||
	    !S_ISREG(ms.st_mode))
		return -EBADF;
	/* The data memfd as file_new() sealed it, no more (a seal cannot be removed, nor added after SEAL). */
	if (!strcmp(kind, "upcache") && fcntl(fd, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_SEAL))
		return -EBADF;
	if (geteuid() == 0)
		return sys_fd_reopen(fd, O_RDWR);
	if (fchmod(fd, 0600) < 0)
		return -errno;
	ret = sys_fd_reopen(fd, O_RDWR);
	fchmod(fd, 0400);
	return ret;
}

/*
 * Take the page table of an earlier daemon from its state memfd (adoption,
 * file_adopt): the rules that make it safe are the order in which that
 * daemon changed the flags, which a SIGKILL can have stopped anywhere.
 *
 *  - A page enters the memfd whole (UFFDIO_COPY into the staging mapping)
 *    before PG_UPTODATE says so (page_add): a page in the memfd without it
 *    is dropped, and read again from the store when it is next needed.  An
 *    upc_pwrite that was inserting it had not returned.
 *  - A page is dirtied (page_set_dirty) before any mapping may write it:
 *    PG_DIRTY is set before a write fault lifts the write protection
 *    (fault.c) and before upc_pwrite copies into a cached page (fileio.c).
 *  - Write-back sets PG_WRITEBACK before it clears PG_DIRTY, and clears it
 *    after the write completed (writeback.c): a page with either, or
 *    pinned for writing (PG_PINWRITE), is dirty here, and is written again.
 *
 * Only dirty pages are adopted (below).  Pins were the clients' of the dead
 * daemon: they go (upcd(8), BUGS).  A page without PG_UPTODATE that is not
 * in the memfd is nothing; one that
 * says PG_UPTODATE but is not in the memfd (punched between the punch and
 * the page table) is forgotten.  Caller is file_new, without c->lock.
 */
/*
 * The journal of the clients that served themselves while no daemon ran
 * (takeover.c; UPC_JOURNAL_OFF): each page they let be written, and that
 * the memfd holds, is marked cached and dirty in the page table, as the
 * dead daemon would have marked it, before file_adopt_pages() reads the
 * table.  Its data is newer than the file unless its writer handed it back
 * (written, and protected): then it is written once more.  A client killed
 * while it served itself loses nothing so.  The daemon holds the takeover
 * lock (file_new): no client marks the journal any more.  Then the journal
 * is punched.  Caller is file_new, without c->lock.
 */
int file_adopt_journal(struct upc_file *f)
{
	unsigned char buf[4096];
	struct stat st;
	off_t off, end;
	int ret = 0;

	if (fstat(f->memfd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size <= UPC_JOURNAL_OFF)
		return 0;
	for (off = (off_t)UPC_JOURNAL_OFF; ret == 0 && (off = lseek(f->memfd, off, SEEK_DATA)) >= 0; off = end) {
		end = lseek(f->memfd, off, SEEK_HOLE);
		if (end < 0)
			end = st.st_size;
		for (off_t o = off; ret == 0 && o < end;) {
			ssize_t n = pread(f->memfd, buf, (size_t)min_t(off_t, end - o, (off_t)sizeof(buf)), o);

			if (n <= 0) {
				ret = n < 0 ? -errno : -EIO;
				break;
			}
			for (ssize_t i = 0; i < n && ret == 0; i++) {
				uint64_t pgoff = (uint64_t)(o + i) - UPC_JOURNAL_OFF, ci = pgoff >> PT_CHUNK_SHIFT;
				off_t at = pt_entry_off(pgoff);
				struct upc_page pg = { 0 };

				if (!buf[i] || pgoff >= f->npages ||
				    lseek(f->memfd, (off_t)(pgoff << UPC_PAGE_SHIFT), SEEK_DATA) != (off_t)(pgoff << UPC_PAGE_SHIFT))
					continue;	/* not a page of the file, or not in the memfd: nothing */
				if ((uint64_t)at + sizeof(pg) > f->state_len) {
					uint64_t len = (uint64_t)chunk_off(ci) + UPC_PAGE_SIZE;

					ret = sys_ftruncate(f->statefd, (off_t)len);
					if (ret < 0)
						break;
					f->state_len = len;
				}
				if (pread(f->statefd, &pg, sizeof(pg), at) < 0) {
					ret = -errno;
					break;
				}
				pg.flags |= PG_UPTODATE | PG_DIRTY;
				if (pwrite(f->statefd, &pg, sizeof(pg), at) != (ssize_t)sizeof(pg))
					ret = -EIO;
			}
			o += n;
		}
	}
	if (ret == 0)
		ret = sys_punch(f->memfd, (off_t)UPC_JOURNAL_OFF, st.st_size - (off_t)UPC_JOURNAL_OFF);
	return ret;
}

/*
 * Does the memfd hold page @pgoff, which mincore(2) on the staging mapping
 * calls not cached?  It may: mincore() calls a page the kernel swapped
 * out of the memfd, and that has left the swap cache, not cached, and a
 * dirty page the daemon died with would be dropped (test_shared,
 * a_killed_daemons_dirty_pages_swapped_out_are_adopted).  SEEK_DATA counts
 * it (mapping_seek_hole_data() takes a swap entry for data).  Asked only
 * for the pages mincore() misses and the adoption would keep: lseek takes
 * the memfd's inode lock, which a client's write(2) to the memfd may hold.
 */
static bool memfd_holds_swapped(int memfd, uint64_t pgoff)
{
	off_t off = (off_t)(pgoff << UPC_PAGE_SHIFT);

	return lseek(memfd, off, SEEK_DATA) == off;
}

int file_adopt_pages(struct upc_file *f, bool wmapped)
{
	struct upc_cache *c = f->cache;
	uint32_t now = cache_ticks(c);
	unsigned char *vec = malloc(PT_CHUNK_PAGES);
	off_t off, end;

	if (!vec)
		return -ENOMEM;
	for (uint64_t ci = 0;; ci++) {
		struct upc_page *chunk;
		uint16_t used = 0;

		off = lseek(f->statefd, chunk_off(ci), SEEK_DATA);
		if (off < 0)
			break;		/* ENXIO: no chunk past @ci */
		ci = ((uint64_t)off >> UPC_PAGE_SHIFT) - 1;
		if (ci >= f->nchunks) {	/* past the file: its pages go below */
			sys_punch(f->statefd, off, (off_t)f->state_len - off);
			break;
		}
		chunk = chunk_map(f, ci);
		if (!chunk || mincore(f->base + (ci << (PT_CHUNK_SHIFT + UPC_PAGE_SHIFT)),
				      PT_CHUNK_PAGES << UPC_PAGE_SHIFT, vec) < 0) {
			if (chunk)
				munmap(chunk, UPC_PAGE_SIZE);
			free(vec);
			return -ENOMEM;
		}
		for (unsigned int i = 0; i < PT_CHUNK_PAGES; i++) {
			struct upc_page *pg = &chunk[i];
			uint64_t pgoff = (ci << PT_CHUNK_SHIFT) + i;
			uint16_t fl = pg->flags;

			/*
			 * Only what is newer than the store is taken: a clean page
			 * is read again when needed.  A memfd kept from an earlier
			 * daemon (a client may keep its descriptors as long as it
			 * likes) must not serve pages older than what the file
			 * holds now; what it may bring back is only data written
			 * through the cache and never written back (review of the
			 * restart: a read-only client rolled a file back).  Not
			 * under asynchronous tracking: there a page the table calls
			 * clean may be written in a client's PTE, which the adoption
			 * of its mapping reads (remote_adopt), so clean pages stay
			 * (upcd(8), BUGS: the roll-back stays possible there).
			 * But where clients mapped the file writable when the
			 * earlier daemon died (@wmapped, struct upc_state_hdr
			 * @wmaps), such a page is written back: a client whose
			 * PTE said it was written may be gone with its page
			 * table (killed while it waited for a daemon; the keeper
			 * kept the memfd, daemon/keeper.c).  A file nobody mapped
			 * writable had its writes collected into the table.
			 */
			if (!(fl & PG_UPTODATE) || pgoff >= f->npages ||
			    (!(fl & (PG_DIRTY | PG_WRITEBACK | PG_PINWRITE)) &&
			     (!f->state_hdr->async || (fl & PG_NOSTORE))) ||
			    (!(vec[i] & 1) && !memfd_holds_swapped(f->memfd, pgoff))) {
				memset(pg, 0, sizeof(*pg));
				continue;
			}
			pg->flags = fl & (PG_UPTODATE | PG_REFERENCED | PG_LAZYFREE | PG_NOSTORE);
			pg->pincount = 0;
			if ((fl & (PG_DIRTY | PG_WRITEBACK | PG_PINWRITE)) ||
			    (wmapped && f->state_hdr->async && !(fl & PG_NOSTORE))) {
				pg->flags = (pg->flags & ~PG_LAZYFREE) | PG_DIRTY;
				pg->dirtied = now;
				f->nr_dirty++;
			}
			used++;
		}
		if (!used) {
			munmap(chunk, UPC_PAGE_SIZE);
			sys_punch(f->statefd, chunk_off(ci), UPC_PAGE_SIZE);
			continue;
		}
		f->chunks[ci] = chunk;
		f->chunk_used[ci] = used;
		f->nr_cached += used;
		atomic_fetch_add(&c->nr_cached, used);
		atomic_fetch_add(&c->meta_bytes, PT_CHUNK_PAGES * sizeof(struct upc_page));
	}
	free(vec);
	/* What the memfd holds that the page table does not: dropped (see above). */
	for (off = 0; (off = lseek(f->memfd, off, SEEK_DATA)) >= 0; off = end) {
		end = lseek(f->memfd, off, SEEK_HOLE);
		if (end < 0)
			break;
		for (off_t p = off; p < end;) {
			off_t q = p;

			while (q < end && !page_uptodate(f, (uint64_t)q >> UPC_PAGE_SHIFT))
				q += UPC_PAGE_SIZE;
			if (q > p)
				sys_punch(f->memfd, p, q - p);
			p = q + UPC_PAGE_SIZE;
		}
	}
	dirty_account(f);	/* (to UPC_ACCOUNT_NONE until a client maps it writable) */
	return 0;
}

/* ------------------------------------------------------------ an earlier daemon's memfds */

/*
 * upcd, at start: the memfds of earlier daemons that processes still hold
 * (its clients, which serve themselves meanwhile: takeover.c), found
 * through /proc/<pid>/fd by their names, "upcache:<dev>:<ino>" and
 * "upcache-pt:<dev>:<ino>".  A file one of them is of is adopted from them
 * (file_get, file_adopt_wait) even when the first process to ask for the
 * file is a new one: otherwise the file would get a new memfd beside the
 * old one, whose clients still serve themselves, and both would write the
 * file (review of 36c145e: a new client's msync undone by an old client's
 * hand-back, and the old client's dirty pages lost when its memfd was
 * refused).
 *
 * The names are anyone's to give (memfd_create), and a process can put
 * anything behind a descriptor number once it was read here: so nothing
 * is ever opened by its /proc path (an open of a FIFO put there blocked a
 * daemon thread for ever, and a pty's became the daemon's controlling
 * terminal, whose hang-up killed it: review of fdcd625).  The holder is
 * kept as a pidfd from the scan on (no pid used again), and the descriptor
 * is taken with pidfd_getfd(2), which opens nothing: a duplicate of what
 * the process holds, then checked as a client's ADOPT is (adopt_fd: the
 * name, the daemon's own user, the seals).  Of several memfds of one file
 * (a client can keep one of any earlier daemon), the newest daemon's is
 * taken (struct upc_state_hdr @born), never an older one over it.  At most
 * ORPHANS_MAX are kept, for ORPHANS_TTL_MS: the clients that serve
 * themselves hand back within 100 ms of the start.
 */
static int file_adopt_lockwait(struct upc_cache *c, int fd, int memfd, int statefd, struct upc_file **fp);

#define ORPHANS_MAX	4096
#define ORPHANS_TTL_MS	(5 * 60 * 1000)

struct orphan {
	dev_t dev;
	ino_t ino;
	int pidfd;		/* the holder; -1: handed over by a keeper (cache_add_kept) */
	int memfd_no, pt_no;	/* its descriptors: numbers in the holder, or ours (pidfd -1) */
};

static void orphan_close(struct orphan *o)
{
	if (o->pidfd >= 0) {
		close(o->pidfd);
		return;
	}
	close(o->memfd_no);
	close(o->pt_no);
}

static bool orphan_name(const char *link, const char *kind, dev_t *dev, ino_t *ino)
{
	size_t k = strlen(kind);
	unsigned long d, i;
	int n = 0;

	if (strncmp(link, "/memfd:", 7) || strncmp(link + 7, kind, k) || link[7 + k] != ':')
		return false;
	link += 8 + k;
	if (sscanf(link, "%lx:%lu%n", &d, &i, &n) != 2 || !n || (link[n] && link[n] != ' '))
		return false;
	*dev = (dev_t)d;
	*ino = (ino_t)i;
	return true;
}

static void orphans_of(struct upc_cache *c, pid_t pid)
{
	struct orphan *mine = NULL;
	size_t nmine = 0;
	char path[64], link[128];
	struct dirent *de;
	int pidfd;
	DIR *dir;

	/* the holder first: its fds are read after, so they are this process's */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir) {
		close(pidfd);
		return;
	}
	while ((de = readdir(dir))) {
		ssize_t n = readlinkat(dirfd(dir), de->d_name, link, sizeof(link) - 1);
		struct stat ms;
		bool pt = false;
		dev_t dev;
		ino_t ino;
		size_t i;

		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!orphan_name(link, "upcache", &dev, &ino) && !(pt = orphan_name(link, "upcache-pt", &dev, &ino)))
			continue;
		/*
		 * Only a memfd of this daemon's user can be one of its kind
		 * (adopt_fd checks it again): what another user named so is
		 * dropped here, not counted (a user filled the list and the
		 * daemon's descriptors with them: review of dcfd6eb).  fstatat
		 * follows the link without opening anything.
		 */
		if (fstatat(dirfd(dir), de->d_name, &ms, 0) < 0 || !S_ISREG(ms.st_mode) || ms.st_uid != geteuid())
			continue;
		for (i = 0; i < nmine && !(mine[i].dev == dev && mine[i].ino == ino); i++)
			;
		if (i == nmine) {
			struct orphan *m = realloc(mine, (nmine + 1) * sizeof(*m));

			if (!m)
				break;
			mine = m;
			mine[nmine++] = (struct orphan){ dev, ino, -1, -1, -1 };
		}
		*(pt ? &mine[i].pt_no : &mine[i].memfd_no) = atoi(de->d_name);
	}
	closedir(dir);
	for (size_t i = 0; i < nmine; i++) {
		struct orphan *o;

		if (mine[i].memfd_no < 0 || mine[i].pt_no < 0 || c->norphans >= ORPHANS_MAX)
			continue;
		o = realloc(c->orphans, (c->norphans + 1) * sizeof(*o));
		if (!o)
			break;
		c->orphans = o;
		mine[i].pidfd = fcntl(pidfd, F_DUPFD_CLOEXEC, 0);
		if (mine[i].pidfd < 0)
			break;
		c->orphans[c->norphans++] = mine[i];
	}
	close(pidfd);
	free(mine);
}

/* Another daemon (a live one: its memfds are its own) holds nothing to adopt. */
static bool is_upcd(pid_t pid)
{
	char path[32], comm[32] = "";
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	return n > 0 && !strncmp(comm, "upcd\n", 5);
}

void cache_find_orphans(struct upc_cache *c)
{
	struct dirent *de;
	DIR *dir = opendir("/proc");

	if (!dir)
		return;
	while ((de = readdir(dir)) && c->norphans < ORPHANS_MAX) {
		pid_t pid = (pid_t)atoi(de->d_name);

		if (pid > 0 && pid != getpid() && !is_upcd(pid))
			orphans_of(c, pid);
	}
	closedir(dir);
	c->orphans_until = c->norphans ? now_ms() + ORPHANS_TTL_MS : 0;
	if (c->norphans)
		pr_info("%zu memfds of an earlier daemon are held by processes: adopted when their file is asked for\n",
			c->norphans);
}

/* Every orphan entry of @st's file (or all, @all) out of the list, into @out (caller frees).  Under c->lock. */
static size_t orphans_take(struct upc_cache *c, const struct stat *st, bool all, struct orphan **out)
{
	size_t n = 0;

	*out = calloc(c->norphans ? c->norphans : 1, sizeof(**out));
	if (!*out)
		return 0;
	for (size_t i = 0; i < c->norphans;)
		if (all || (c->orphans[i].dev == st->st_dev && c->orphans[i].ino == st->st_ino)) {
			(*out)[n++] = c->orphans[i];
			c->orphans[i] = c->orphans[--c->norphans];
		} else {
			i++;
		}
	return n;
}

/*
 * A keeper's entries of @os that were not found stale (@stale, NULL: none
 * was), back on the list for another try: it alone may hold their memfds,
 * and one left listed keeps the keeper from being let go (review of
 * e2d7e5f: an entry whose descriptor could not be duplicated, EMFILE, was
 * closed and its dirty page lost).  Returns how many.
 */
static size_t orphans_relist_kept(struct upc_cache *c, struct orphan *os, size_t n, const bool *stale)
{
	size_t k = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < n; i++)
		if (os[i].pidfd < 0 && os[i].memfd_no >= 0 && !(stale && stale[i])) {
			struct orphan *no = realloc(c->orphans, (c->norphans + 1) * sizeof(*no));

			if (!no)
				break;
			c->orphans = no;
			c->orphans[c->norphans++] = os[i];
			os[i].memfd_no = os[i].pt_no = -1;
			k++;
		}
	pthread_mutex_unlock(&c->lock);
	return k;
}

/*
 * Before a file this daemon does not hold gets a memfd, or a client's
 * memfd of it is adopted (file_adopt_wait): the earlier daemons' memfds of
 * it that processes hold, the newest daemon's first.  0 and *@fp: adopted;
 * 1: not such a file, or none could be adopted (then it gets a memfd of
 * its own, or the client's is adopted); < 0: an error.  @st: @fd's
 * identity (sys_fstat_id).
 */
static int orphan_adopt(struct upc_cache *c, int fd, const struct stat *st, struct upc_file **fp)
{
	struct orphan *os;
	size_t n;
	int ret = 1;

	pthread_mutex_lock(&c->lock);
	if (now_ms() > c->orphans_until && c->orphans_until) {
		/* too late: every client has handed back; a keeper's entries stay until adopted */
		n = orphans_take(c, st, true, &os);
		if (os)		/* else nothing was taken: try again at the next lookup */
			c->orphans_until = 0;
		for (size_t i = 0; i < n; i++)
			if (os[i].pidfd < 0)	/* back where they were: the array still has the room */
				c->orphans[c->norphans++] = os[i];
			else
				orphan_close(&os[i]);
		pthread_mutex_unlock(&c->lock);
		free(os);
		if (!c->norphans)
			return 1;
		pthread_mutex_lock(&c->lock);
	}
	n = orphans_take(c, st, false, &os);
	pthread_mutex_unlock(&c->lock);
	{
		int (*fds)[2] = calloc(n ? n : 1, sizeof(*fds));
		uint64_t *born = calloc(n ? n : 1, sizeof(*born));
		bool *stale = calloc(n ? n : 1, sizeof(*stale));
		int err = 0;

		for (size_t i = 0; fds && i < n; i++)
			fds[i][0] = fds[i][1] = -1;	/* not descriptor 0, if the loop below does not run */

		if (!fds || !born || !stale) {
			if (orphans_relist_kept(c, os, n, NULL))
				ret = -ENOMEM;
			free(stale);
			stale = NULL;
		}
		for (size_t i = 0; i < n && fds && born && stale; i++) {
			struct upc_state_hdr h;

			char link[128], path[32];
			struct stat ms;
			ssize_t k;

			if (os[i].pidfd < 0) {	/* a keeper's: ours already */
				fds[i][0] = fcntl(os[i].memfd_no, F_DUPFD_CLOEXEC, 0);
				fds[i][1] = fcntl(os[i].pt_no, F_DUPFD_CLOEXEC, 0);
				if ((fds[i][0] < 0 || fds[i][1] < 0) && !err)
					err = -errno;
			} else {
				fds[i][0] = (int)syscall(SYS_pidfd_getfd, os[i].pidfd, os[i].memfd_no, 0);
				fds[i][1] = (int)syscall(SYS_pidfd_getfd, os[i].pidfd, os[i].pt_no, 0);
			}
			if (os[i].pidfd >= 0 && (fds[i][0] < 0 || fds[i][1] < 0) && errno == EPERM)
				pr_warn("pidfd_getfd refused (ptrace access: Yama's ptrace_scope?): the earlier daemon's "
					"memfd of %lx:%lu is not adopted\n", (unsigned long)st->st_dev, (unsigned long)st->st_ino);
			born[i] = 0;
			/* what is behind the number now is checked before it is read (adopt_fd again, after) */
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[i][1]);
			k = fds[i][1] >= 0 ? readlink(path, link, sizeof(link) - 1) : -1;
			if (k <= 0 || (link[k] = '\0', strncmp(link, "/memfd:upcache-pt:", 18)) ||
			    fstat(fds[i][1], &ms) < 0 || !S_ISREG(ms.st_mode) || ms.st_uid != geteuid()) {
				if (fds[i][1] >= 0)
					close(fds[i][1]);
				fds[i][1] = -1;
				continue;
			}
			if (pread(fds[i][1], &h, sizeof(h), 0) == (ssize_t)sizeof(h))
				born[i] = h.born;
		}
		/* the newest daemon's first: an older memfd's dirty pages are older than its */
		while (ret != 0 && fds && born && stale) {
			size_t best = n;

			for (size_t i = 0; i < n; i++)
				if (fds[i][0] >= 0 && fds[i][1] >= 0 && (best == n || born[i] > born[best]))
					best = i;
			if (best == n)
				break;
			ret = file_adopt_lockwait(c, fd, fds[best][0], fds[best][1], fp);
			if (ret == -ESTALE || ret == -EBADF || ret == -EINVAL || ret == -EPERM || ret == -EBUSY) {
				stale[best] = true;	/* not this file's, or a live daemon's: never */
			} else if (ret < 0) {
				/* a keeper's entries stay for another try */
				orphans_relist_kept(c, os, n, stale);
				break;
			}
			if (ret != 0)
				ret = 1;
			close(fds[best][0]);
			close(fds[best][1]);
			fds[best][0] = fds[best][1] = -1;
		}
		/* none adopted: what a keeper gave that was not found stale stays listed, and says so */
		if (ret == 1 && stale && orphans_relist_kept(c, os, n, stale))
			ret = err ? err : -EAGAIN;
		for (size_t i = 0; i < n; i++) {
			if (fds && fds[i][0] >= 0)
				close(fds[i][0]);
			if (fds && fds[i][1] >= 0)
				close(fds[i][1]);
			orphan_close(&os[i]);
		}
		free(fds);
		free(born);
		free(stale);
	}
	free(os);
	return ret;
}

/*
 * One orphan adoption of a file at a time, and every first lookup of that
 * file waits for the one in flight: the entries of the file being adopted
 * are out of the list while it waits for the clients that serve themselves,
 * and a second request for that file found none and gave it a memfd of its
 * own (review of dcfd6eb).  Lookups of other files do not wait: the
 * adoption can wait for the memfd's inode lock, which a client that kept it
 * can hold, and one lock for every adoption stopped every first lookup of
 * every file with it (upcd(8), BUGS, until cache->adopting).  Only in the
 * ORPHANS_TTL_MS after a start that found orphans, and while a keeper's
 * entries are not adopted.
 */
static int orphan_adopt_once(struct upc_cache *c, int fd, struct upc_file **fp)
{
	struct file_new_entry me;
	struct stat st;
	int ret;

	if (sys_fstat_id(fd, &st) < 0)
		return 1;
	pthread_mutex_lock(&c->lock);
	while (file_id_listed(c->adopting, &st))
		pthread_cond_wait(&c->new_cond, &c->lock);
	me = (struct file_new_entry){ st.st_dev, st.st_ino, c->adopting };
	c->adopting = &me;
	pthread_mutex_unlock(&c->lock);
	ret = orphan_adopt(c, fd, &st, fp);
	pthread_mutex_lock(&c->lock);
	file_id_unlist(c, &c->adopting, &me);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

static bool orphan_window(struct upc_cache *c)
{
	/* and once after it, to let the entries and their pidfds go (orphan_adopt); a keeper's, until adopted */
	return c->serving && (c->norphans || (c->orphans_until && now_ms() < c->orphans_until));
}

/* At the cache's end: the memfds and pidfds still held for adoption. */
void orphans_free(struct upc_cache *c)
{
	for (size_t i = 0; i < c->norphans; i++)
		orphan_close(&c->orphans[i]);
	free(c->orphans);
	c->orphans = NULL;
	c->norphans = 0;
}

/*
 * file_get()'s first step, while earlier daemons' memfds may be about
 * (orphan_window): a file one of them is of is adopted from it.  1: not
 * such a file (or no window), for file_get() to look up or make.
 */
int orphan_lookup(struct upc_cache *c, int fd, struct upc_file **fp)
{
	return orphan_window(c) ? orphan_adopt_once(c, fd, fp) : 1;
}

/*
 * What an earlier daemon's keeper handed over (daemon/keeper.c): the
 * memfds @memfd and @statefd of the file @fd (both taken, even on error),
 * entries of the orphan list like the memfds processes hold, but ours and
 * with no end of life.  So the first lookup of that file, whoever makes
 * it, adopts them (orphan_adopt), before the file could get a new memfd
 * from the store beside them (review of 3213905: a client that asked for
 * the file first was given one, and the keeper's dirty pages were let go).
 */
int cache_add_kept(struct upc_cache *c, int fd, int memfd, int statefd)
{
	struct orphan *o;
	struct stat st;
	int ret = sys_fstat_id(fd, &st);

	if (ret < 0)
		goto out;
	pthread_mutex_lock(&c->lock);
	o = realloc(c->orphans, (c->norphans + 1) * sizeof(*o));
	if (o) {
		c->orphans = o;
		c->orphans[c->norphans++] = (struct orphan){ st.st_dev, st.st_ino, -1, memfd, statefd };
	}
	pthread_mutex_unlock(&c->lock);
	if (o)
		return 0;
	ret = -ENOMEM;
out:
	close(memfd);
	close(statefd);
	return ret;
}

/*
 * The file @fd, adopted from the orphan list if it is there: 0 and *@fp
 * (a reference); 1: not there (a lookup adopted it already, or none of its
 * memfds could be); < 0: an error, and a keeper's entries stay listed.
 */
int cache_adopt_orphans(struct upc_cache *c, int fd, struct upc_file **fp)
{
	return orphan_adopt_once(c, fd, fp);
}

/* A keeper's entries not adopted yet (upcd's exit: then its keeper is not let go). */
size_t cache_kept_pending(struct upc_cache *c)
{
	size_t n = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->norphans; i++)
		n += c->orphans[i].pidfd < 0;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/*
 * As file_get(), adopting the memfd @memfd and page-table memfd @statefd of
 * an earlier daemon if the cache does not hold the file yet (upcd restarted:
 * remote_adopt()).  -ESTALE: the cache holds the file with another memfd.
 */
static int file_adopt(struct upc_cache *c, int fd, int memfd, int statefd, bool force, struct upc_file **fp)
{
	struct adopt_fds adopt = { memfd, statefd, force };

	if (!c->serving)
		return -EINVAL;
	return file_get_how(c, fd, true, &adopt, fp);
}

/*
 * file_adopt(), waiting while other clients serve themselves on the file
 * (takeover.c, rule 2: its takeover lock is held for reading): they notice
 * this daemon within 100 ms, and hand the file back.  Each try opens the
 * memfds again (adopt_fd) and holds no lock of the cache while it waits.
 * After ADOPT_WAIT_MS the file is adopted without the lock (file_new): a
 * client that stopped (SIGSTOP), or one that holds the lock on purpose
 * (any client with a descriptor of the page table can), must not keep
 * every other client of the file waiting for ever (review of 36c145e).
 */
#define ADOPT_WAIT_MS	10000

static int file_adopt_lockwait(struct upc_cache *c, int fd, int memfd, int statefd, struct upc_file **fp)
{
	uint64_t until = now_ms() + ADOPT_WAIT_MS;
	int ret;

	/* -EBUSY: a live daemon's (file_new); -EAGAIN: clients serving themselves */
	while ((ret = file_adopt(c, fd, memfd, statefd, false, fp)) == -EAGAIN) {
		if (now_ms() >= until)
			return file_adopt(c, fd, memfd, statefd, true, fp);
		usleep(5 * 1000);
	}
	return ret;
}

/*
 * A client hands back a memfd of an earlier daemon (remote_adopt): the
 * newest of the earlier daemons' memfds of the file is adopted first
 * (orphan_adopt), so that a client that kept an older one cannot have it
 * taken instead; then the client's, which must be the one adopted.
 */
int file_adopt_wait(struct upc_cache *c, int fd, int memfd, int statefd, struct upc_file **fp)
{
	struct upc_file *of = NULL;
	int ret;

	if (orphan_window(c)) {
		ret = orphan_adopt_once(c, fd, &of);
		if (ret < 0)
			return ret;
		if (ret)
			of = NULL;
	}
	ret = file_adopt_lockwait(c, fd, memfd, statefd, fp);
	/* held until the client's is taken: unused meanwhile, it could have been let go */
	if (of)
		file_put(of);
	return ret;
}
