/* SPDX-License-Identifier: MIT */
/*
 * store.c - where pages come from and go to (the kernel's ->readahead,
 * ->writepages and ->fsync of an address_space's a_ops).
 *
 * The file store does every I/O through io_uring (liburing): a batch of
 * reads or writes is one submission and one wait.  Several threads use it at
 * once (the fault handler fills while msync callers write back), so it keeps
 * a pool of rings, each owned by one caller at a time (ring_get).
 *
 * The fault-injection store wraps another store and fails chosen offsets:
 * every error path of the engine has a test through it.
 */
#include "internal.h"

#include <fcntl.h>
#include <liburing.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NR_RINGS	4	/* rings to start with */
#define NR_RINGS_MAX	64	/* and at most, when callers are stuck (ring_get) */
#define RING_DEPTH	64
#define DIO_ALIGN	512
#define WB_GAP_BUFFERED	8	/* store_cluster_gap(): clean pages between dirty runs */
#define WB_GAP_DIRECT	8

struct ring_slot {
	pthread_mutex_t lock;
	struct io_uring ring;
	bool ready;
};

struct file_store {
	struct upc_store base;
	unsigned int flags;
	_Atomic unsigned int next;
	_Atomic unsigned int nr_rings;	/* in use: NR_RINGS, growing up to NR_RINGS_MAX */
	struct ring_slot rings[NR_RINGS_MAX];
};

struct fs_handle {
	int fd;		/* O_DIRECT when the store is, else buffered */
	int fd_buf;	/* buffered, for unaligned O_DIRECT remainders; == fd otherwise */
	bool shared;	/* @fd_buf shares the caller's open file description (fallback) */
};

/*
 * A ring of the pool, for one caller.  None free: the pool grows by one, up
 * to NR_RINGS_MAX, rather than the caller waiting for a ring.  A caller can
 * hold its ring as long as its I/O waits, and an I/O can wait as long as
 * another process holds the file's inode lock: a buffered or O_DIRECT write
 * takes it (i_rwsem), and in upcd any client that may write a file can hold
 * it (write(2) into the file from a buffer whose page fault it does not let
 * finish).  Four write-backs stuck so took the four rings, and every read
 * of every file, for every client, waited behind them (upcd(8), BUGS).
 * Past NR_RINGS_MAX stuck callers, NULL and -EAGAIN: the caller does its
 * I/O itself, without a ring (fs_submit_sync), rather than waiting for a
 * ring that a stuck I/O holds (before, every read of every file waited
 * again past 64 of them).
 */
static struct ring_slot *ring_get(struct file_store *fs, int *errp)
{
	unsigned int start = atomic_fetch_add(&fs->next, 1), nr = atomic_load(&fs->nr_rings);
	struct ring_slot *s = NULL;
	int ret;

	for (unsigned int i = 0; i < nr; i++) {
		s = &fs->rings[(start + i) % nr];
		if (pthread_mutex_trylock(&s->lock) == 0)
			goto got;
	}
	while (nr < NR_RINGS_MAX) {
		if (atomic_compare_exchange_weak(&fs->nr_rings, &nr, nr + 1)) {
			s = &fs->rings[nr];
			if (pthread_mutex_trylock(&s->lock) == 0)
				goto got;
			nr++;
		}
	}
	*errp = -EAGAIN;
	return NULL;
got:
	if (!s->ready) {
		ret = io_uring_queue_init(RING_DEPTH, &s->ring, 0);
		if (ret < 0) {
			/*
			 * A ring cannot be had (EMFILE, ENOMEM): the caller does
			 * its I/O itself, as past NR_RINGS_MAX; waiting for the
			 * first ring, it could wait for a stuck I/O (review).
			 */
			pthread_mutex_unlock(&s->lock);
			*errp = -EAGAIN;
			return NULL;
		}
		s->ready = true;
	}
	return s;
}

/*
 * The store writes at the offsets write-back asks for, so it needs an open
 * file description of its own: a duplicate (F_DUPFD) shares the caller's,
 * and with it the caller's status flags, then and later (fcntl F_SETFL).
 * Under O_APPEND every write, io_uring's included, goes to end of file: a
 * page written back would be appended, and msync would still return 0.  So
 * the file is opened again through /proc/self/fd (sys_fd_reopen: the same
 * inode, checked), with the access mode the caller's descriptor has and
 * none of its status flags.
 *
 * Where that is refused (no /proc: -ENOENT or -ENOTDIR; a /proc whose
 * file is another inode: -ESTALE; a file whose mode no longer allows its
 * access mode: -EACCES, -EPERM), the buffered descriptor falls back to a
 * duplicate, so that whatever the caller could map it still can: an
 * O_APPEND description is refused (-EINVAL) here, and fs_submit() refuses
 * to write if the caller sets O_APPEND on it later, so the store never
 * appends.  The O_DIRECT descriptor has no fallback (setting O_DIRECT on a
 * shared description would change the caller's): its open's error is
 * upc_map's.  upc_store_file_create(3) documents both.
 */
static bool reopen_refused(int err)
{
	return err == -ENOENT || err == -ENOTDIR || err == -ESTALE || err == -EACCES || err == -EPERM;
}

static int fs_open(struct upc_store *store, int fd, unsigned int flags, void **handlep)
{
	struct file_store *fs = (struct file_store *)store;
	struct fs_handle *h;
	int fl, acc, ret;

	(void)flags;
	fl = sys_fd_flags(fd);
	if (fl < 0)
		return fl;
	/* The store reads what it caches: a write-only descriptor cannot back it. */
	if ((fl & O_ACCMODE) == O_WRONLY)
		return -EACCES;
	acc = (fl & O_ACCMODE) == O_RDWR ? O_RDWR : O_RDONLY;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	ret = sys_fd_reopen(fd, acc);
	if (reopen_refused(ret)) {
		if (fl & O_APPEND) {
			pr_debug("file store: cannot reopen fd %d (%s) and it is O_APPEND\n", fd,
				 upc_strerror(ret));
			ret = -EINVAL;
			goto out_free;
		}
		h->shared = true;
		ret = sys_fd_dup(fd);
	}
	if (ret < 0)
		goto out_free;
	h->fd = h->fd_buf = ret;
	if (fs->flags & UPC_STORE_DIRECT) {
		ret = sys_fd_reopen(fd, acc | O_DIRECT);
		if (ret < 0) {
			close(h->fd_buf);
			goto out_free;
		}
		h->fd = ret;
	}
	*handlep = h;
	return 0;
out_free:
	free(h);
	return ret;
}

static void fs_close(struct upc_store *store, void *handle)
{
	struct fs_handle *h = handle;

	(void)store;
	if (h->fd != h->fd_buf)
		close(h->fd);
	close(h->fd_buf);
	free(h);
}

static int pick_fd(struct file_store *fs, struct fs_handle *h, const struct upc_io *io)
{
	if (!(fs->flags & UPC_STORE_DIRECT))
		return h->fd;
	if ((io->off | io->len | (uintptr_t)io->buf) & (DIO_ALIGN - 1))
		return h->fd_buf;
	return h->fd;
}

/*
 * Submit every SQE queued on @s; *@inflight counts the requests the kernel
 * took.  Returns 0 or a negative errno (the kernel may have taken some even
 * then: *@inflight says how many).
 */
static int ring_submit(struct ring_slot *s, unsigned int *inflight)
{
	while (io_uring_sq_ready(&s->ring)) {
		int ret = io_uring_submit(&s->ring);

		if (ret == -EINTR)
			continue;
		if (ret <= 0)
			return ret < 0 ? ret : -EAGAIN;
		*inflight += (unsigned int)ret;
	}
	return 0;
}

/*
 * Give @s back after an error with @inflight requests still in the kernel.
 * A ring goes back to the pool only empty: a request left in flight would
 * complete into the next owner's wait, which would take the completion for
 * one of its own (user_data is an index into the owner's array: a read
 * would be "done" before its data is there, or an index beyond the array
 * written), and an SQE queued but not taken would be submitted with the
 * next owner's.  So every request the kernel holds is reaped here: they
 * always complete, and waiting for them also keeps a late read from landing
 * in a buffer the caller has moved on from.  If the wait itself fails (a
 * sandbox that forbids it, or completions the kernel dropped: -EBADR), or
 * SQEs were left untaken, the ring is torn down instead and marked not
 * ready: the next ring_get() sets up a fresh one, and closing the ring makes
 * the kernel cancel what it has not started and finish the rest on its own.
 */
static void ring_put_error(struct ring_slot *s, unsigned int inflight)
{
	struct io_uring_cqe *cqe;
	bool reset = io_uring_sq_ready(&s->ring) != 0;

	while (inflight) {
		int ret = io_uring_wait_cqe(&s->ring, &cqe);

		if (ret == -EINTR)
			continue;
		if (ret < 0) {
			reset = true;
			break;
		}
		io_uring_cqe_seen(&s->ring, cqe);
		inflight--;
	}
	if (reset) {
		pr_debug("file store: an I/O ring could not be drained, set up again\n");
		io_uring_queue_exit(&s->ring);
		s->ready = false;
	}
	pthread_mutex_unlock(&s->lock);
}

/*
 * @n I/Os in the calling thread, one after the other, with pread(2) and
 * pwrite(2), as the ring would make them (fs_submit: the same descriptor
 * for each, a short write continued, a short read left to the caller):
 * every ring of the pool is held by a caller whose I/O waits (ring_get).
 * Slower than a ring for a batch, and only then.  (In the LD_PRELOAD
 * shim's build the library's pread and pwrite are the kernel's: ld --wrap,
 * preload/shim.c.)
 */
static int fs_submit_sync(struct file_store *fs, struct fs_handle *h, enum upc_io_dir dir,
			  struct upc_io *ios, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		int fd = pick_fd(fs, h, &ios[i]);
		size_t done = 0;

		ios[i].res = 0;
		while (done < ios[i].len) {
			ssize_t r = dir == UPC_IO_READ ?
				pread(fd, (char *)ios[i].buf + done, ios[i].len - done, ios[i].off + (off_t)done) :
				pwrite(fd, (char *)ios[i].buf + done, ios[i].len - done, ios[i].off + (off_t)done);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				ios[i].res = -errno;
				break;
			}
			done += (size_t)r;
			ios[i].res = (ssize_t)done;
			if (dir == UPC_IO_READ)
				break;	/* a short read is end of file, the caller's to tell */
			if (r == 0) {
				ios[i].res = -EIO;
				break;
			}
			fd = h->fd_buf;	/* the rest of a short write: buffered, as fs_submit */
		}
	}
	return 0;
}

/*
 * Submit @n I/Os, RING_DEPTH at a time, and wait for all of them.  A short
 * write is continued (the kernel may stop early, e.g. near ENOSPC); a short
 * read is end of file and left to the caller.  On an error of the ring
 * itself (submit, wait) nothing is left in flight: see ring_put_error().
 */
static int fs_submit(struct upc_store *store, void *handle, enum upc_io_dir dir,
		     struct upc_io *ios, unsigned int n)
{
	struct file_store *fs = (struct file_store *)store;
	struct fs_handle *h = handle;
	struct io_uring_cqe *cqe;
	struct ring_slot *s;
	size_t *done;
	unsigned int i, batch, inflight = 0;
	int ret = 0;

	/*
	 * A description shared with the caller (fs_open's fallback) that the
	 * caller has made O_APPEND since: every write would append.  Refuse;
	 * the pages stay dirty and the error is reported as any write error.
	 */
	if (dir == UPC_IO_WRITE && h->shared) {
		int fl = sys_fd_flags(h->fd_buf);

		if (fl >= 0 && (fl & O_APPEND))
			fl = -EINVAL;
		if (fl < 0) {
			for (i = 0; i < n; i++)
				ios[i].res = fl;
			return fl;
		}
	}
	s = ring_get(fs, &ret);
	if (!s && ret == -EAGAIN)
		return fs_submit_sync(fs, h, dir, ios, n);
	if (!s)
		return ret;
	done = calloc(n, sizeof(*done));
	if (!done) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++)
		ios[i].res = 0;

	for (i = 0; i < n; i += batch) {
		batch = min_t(unsigned int, n - i, RING_DEPTH);
		for (unsigned int j = i; j < i + batch; j++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
			int fd = pick_fd(fs, h, &ios[j]);

			if (dir == UPC_IO_READ)
				io_uring_prep_read(sqe, fd, ios[j].buf, ios[j].len, ios[j].off);
			else
				io_uring_prep_write(sqe, fd, ios[j].buf, ios[j].len, ios[j].off);
			io_uring_sqe_set_data64(sqe, j);
		}
		ret = ring_submit(s, &inflight);
		if (ret < 0)
			goto out_err;
		while (inflight) {
			unsigned int j;
			int res;

			ret = io_uring_wait_cqe(&s->ring, &cqe);
			if (ret == -EINTR)
				continue;
			if (ret < 0)
				goto out_err;
			j = (unsigned int)io_uring_cqe_get_data64(cqe);
			res = cqe->res;
			io_uring_cqe_seen(&s->ring, cqe);
			inflight--;
			if (res < 0) {
				ios[j].res = res;
				continue;
			}
			done[j] += (size_t)res;
			ios[j].res = (ssize_t)done[j];
			if (dir == UPC_IO_WRITE && res > 0 && done[j] < ios[j].len) {
				struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

				io_uring_prep_write(sqe, h->fd_buf, (char *)ios[j].buf + done[j],
						    ios[j].len - done[j], ios[j].off + done[j]);
				io_uring_sqe_set_data64(sqe, j);
				ret = ring_submit(s, &inflight);
				if (ret < 0)
					goto out_err;
			} else if (dir == UPC_IO_WRITE && res == 0 && done[j] < ios[j].len) {
				ios[j].res = -EIO;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	free(done);
	return 0;
out_err:
	ring_put_error(s, inflight);
	free(done);
	return ret;
}

/*
 * fdatasync(2) and fsync(2) in the calling thread, not through the ring.
 * io_uring cannot start an fsync without blocking, so it hands every one
 * to an io-wq worker: the caller sleeps on the ring, the worker sleeps in
 * the filesystem, and the completion takes one wake-up more each way.  On
 * these VMs a wake-up across CPUs is tens of us; LMDB with synced commits
 * (two syncs a commit) under upcache-run, `upc-bench-db lmdb-write` at
 * scale 0.2, 10 alternating pairs: medians 1.24 s with the syscall, 1.34 s
 * through the ring.  Ordering is the caller's: the writes a sync covers
 * have completed (fs_submit() waits for every one) before it is called.
 */
static int fs_sync_flags(struct upc_store *store, void *handle, bool datasync)
{
	struct fs_handle *h = handle;

	(void)store;
	return (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? -errno : 0;
}

static int fs_sync(struct upc_store *store, void *handle)
{
	return fs_sync_flags(store, handle, true);
}

static int fs_fsync(struct upc_store *store, void *handle)
{
	return fs_sync_flags(store, handle, false);
}

/*
 * Size changes go through the buffered descriptor (the same inode as the
 * O_DIRECT one).  A description shared with the caller (fs_open's
 * fallback) is fine here: ftruncate and fallocate take no file position.
 */
static int fs_truncate(struct upc_store *store, void *handle, off_t length)
{
	struct fs_handle *h = handle;

	(void)store;
	return sys_ftruncate(h->fd_buf, length);
}

static int fs_fallocate(struct upc_store *store, void *handle, int mode, off_t off, off_t len)
{
	struct fs_handle *h = handle;

	(void)store;
	return sys_fallocate(h->fd_buf, mode, off, len);
}

/*
 * The buffered descriptor: O_DIRECT changes nothing fstat says.  Without
 * the timestamps (sys_fstat_id(): a stat that returns the ctime makes the
 * file's next write take a fine-grained time and dirty its inode): the
 * engine asks for the size on every write past end of file and every fault
 * on the last page, and for the link count; nothing else.
 */
static int fs_stat(struct upc_store *store, void *handle, struct stat *st)
{
	struct fs_handle *h = handle;

	(void)store;
	return sys_fstat_id(h->fd_buf, st);
}

static void fs_destroy(struct upc_store *store)
{
	struct file_store *fs = (struct file_store *)store;

	for (unsigned int i = 0; i < NR_RINGS_MAX; i++) {
		if (fs->rings[i].ready)
			io_uring_queue_exit(&fs->rings[i].ring);
		pthread_mutex_destroy(&fs->rings[i].lock);
	}
	free(fs);
}

static const struct upc_store_ops file_ops = {
	.sz = sizeof(struct upc_store_ops),
	.name = "file",
	.open = fs_open,
	.close = fs_close,
	.submit = fs_submit,
	.sync = fs_sync,
	.destroy = fs_destroy,
	.stat = fs_stat,
	.truncate = fs_truncate,
	.fallocate = fs_fallocate,
	.fsync = fs_fsync,
};

UPC_API int upc_store_file_create(unsigned int flags, struct upc_store **storep)
{
	struct file_store *fs;
	int ret;

	if (!storep || (flags & ~UPC_STORE_DIRECT))
		return -EINVAL;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->base.ops = &file_ops;
	fs->flags = flags;
	for (unsigned int i = 0; i < NR_RINGS_MAX; i++)
		pthread_mutex_init(&fs->rings[i].lock, NULL);
	atomic_init(&fs->nr_rings, NR_RINGS);
	/* One ring now, so that a kernel without io_uring is an error here, not a SIGBUS later. */
	ret = io_uring_queue_init(RING_DEPTH, &fs->rings[0].ring, 0);
	if (ret < 0) {
		fs_destroy(&fs->base);
		return ret;
	}
	fs->rings[0].ready = true;
	*storep = &fs->base;
	return 0;
}

int store_default(unsigned int flags, struct upc_store **storep)
{
	return upc_store_file_create(flags & UPC_CACHE_DIRECT_IO ? UPC_STORE_DIRECT : 0, storep);
}

/*
 * The optional stat op.  A store built before the operation existed has a
 * shorter ops->sz (the struct grows at its end, libbpf's OPTS_HAS):
 * -EOPNOTSUPP then, as for a store that leaves it NULL.
 */
int store_stat(struct upc_store *s, void *h, struct stat *st)
{
	const struct upc_store_ops *ops = s->ops;

	if (ops->sz < offsetof(struct upc_store_ops, stat) + sizeof(ops->stat) || !ops->stat)
		return -EOPNOTSUPP;
	return ops->stat(s, h, st);
}

/* Is optional operation @op (a field of struct upc_store_ops) there? */
#define STORE_HAS(ops, op) \
	((ops)->sz >= offsetof(struct upc_store_ops, op) + sizeof((ops)->op) && (ops)->op)

/* The optional truncate op: -EOPNOTSUPP where the store has none. */
int store_truncate(struct upc_store *s, void *h, off_t length)
{
	return STORE_HAS(s->ops, truncate) ? s->ops->truncate(s, h, length) : -EOPNOTSUPP;
}

bool store_has_truncate(const struct upc_store *s)
{
	return STORE_HAS(s->ops, truncate);
}

int store_fallocate(struct upc_store *s, void *h, int mode, off_t off, off_t len)
{
	return STORE_HAS(s->ops, fallocate) ? s->ops->fallocate(s, h, mode, off, len) : -EOPNOTSUPP;
}

/* fsync(2) through the optional fsync op; a store without one has only sync (fdatasync). */
int store_fsync(struct upc_store *s, void *h)
{
	return STORE_HAS(s->ops, fsync) ? s->ops->fsync(s, h) : s->ops->sync(s, h);
}

/* The backing file's current size, through the stat op. */
int store_size(struct upc_store *s, void *h, off_t *sizep)
{
	struct stat st;
	int ret = store_stat(s, h, &st);

	if (ret == 0)
		*sizep = st.st_size;
	return ret;
}

/* ------------------------------------------------------------ fault injection */

struct inject_rule {
	struct inject_rule *next;
	enum upc_io_dir dir;
	off_t off;
	size_t len;
	int kind;
	long arg;
	int count;	/* < 0: forever */
};

struct inject_store {
	struct upc_store base;
	struct upc_store *inner;
	bool own_inner;
	pthread_mutex_t lock;
	struct inject_rule *rules;
};

static const struct upc_store_ops inject_ops;

static struct inject_store *to_inject(struct upc_store *s)
{
	return s && s->ops == &inject_ops ? (struct inject_store *)s : NULL;
}

static int inj_open(struct upc_store *store, int fd, unsigned int flags, void **handlep)
{
	struct inject_store *is = to_inject(store);

	return is->inner->ops->open(is->inner, fd, flags, handlep);
}

static void inj_close(struct upc_store *store, void *handle)
{
	struct inject_store *is = to_inject(store);

	is->inner->ops->close(is->inner, handle);
}

/*
 * The first rule that matches @io, consuming one use of it; NULL if none.
 * @special: 0 for I/O, else the kind of rule an operation other than I/O
 * matches (UPC_INJECT_SYNC_ERROR, UPC_INJECT_META_ERROR), offsets ignored.
 */
static struct inject_rule *inj_match(struct inject_store *is, enum upc_io_dir dir, int special,
				     const struct upc_io *io, struct inject_rule *out)
{
	struct inject_rule *r;

	for (r = is->rules; r; r = r->next) {
		if (r->count == 0)
			continue;
		if (special ? r->kind != special :
		    r->kind == UPC_INJECT_SYNC_ERROR || r->kind == UPC_INJECT_META_ERROR)
			continue;
		if (!special && (r->dir != dir || io->off >= (off_t)(r->off + r->len) ||
				 io->off + (off_t)io->len <= r->off))
			continue;
		if (r->count > 0)
			r->count--;
		*out = *r;
		return out;
	}
	return NULL;
}

static int inj_submit(struct upc_store *store, void *handle, enum upc_io_dir dir,
		      struct upc_io *ios, unsigned int n)
{
	struct inject_store *is = to_inject(store);
	struct inject_rule rule, *r;
	int ret = 0;

	/* One I/O at a time, so that each can be failed on its own. */
	for (unsigned int i = 0; i < n && ret == 0; i++) {
		struct upc_io io = ios[i];

		pthread_mutex_lock(&is->lock);
		r = inj_match(is, dir, 0, &ios[i], &rule);
		pthread_mutex_unlock(&is->lock);
		if (r && r->kind == UPC_INJECT_ERROR) {
			ios[i].res = -r->arg;
			continue;
		}
		if (r && r->kind == UPC_INJECT_DELAY)
			usleep((useconds_t)r->arg);
		if (r && r->kind == UPC_INJECT_SHORT)
			io.len = min_t(size_t, io.len, (size_t)r->arg);
		ret = is->inner->ops->submit(is->inner, handle, dir, &io, 1);
		if (r && r->kind == UPC_INJECT_DELAY_DONE)
			usleep((useconds_t)r->arg);	/* a read that holds what it read, for now */
		ios[i].res = io.res;
		if (r && r->kind == UPC_INJECT_SHORT && dir == UPC_IO_WRITE && io.res >= 0)
			ios[i].res = -EIO;	/* what a persistent short write turns into */
	}
	return ret;
}

/* A rule of kind @special for an operation other than I/O: its error, or 0. */
static int inj_special(struct inject_store *is, int special)
{
	struct inject_rule rule, *r;
	struct upc_io none = { 0 };

	pthread_mutex_lock(&is->lock);
	r = inj_match(is, UPC_IO_WRITE, special, &none, &rule);
	pthread_mutex_unlock(&is->lock);
	return r ? (int)-r->arg : 0;
}

static int inj_sync(struct upc_store *store, void *handle)
{
	struct inject_store *is = to_inject(store);
	int ret = inj_special(is, UPC_INJECT_SYNC_ERROR);

	return ret ? ret : is->inner->ops->sync(is->inner, handle);
}

static int inj_fsync(struct upc_store *store, void *handle)
{
	struct inject_store *is = to_inject(store);
	int ret = inj_special(is, UPC_INJECT_SYNC_ERROR);

	return ret ? ret : store_fsync(is->inner, handle);
}

static int inj_truncate(struct upc_store *store, void *handle, off_t length)
{
	struct inject_store *is = to_inject(store);
	int ret = inj_special(is, UPC_INJECT_META_ERROR);

	return ret ? ret : store_truncate(is->inner, handle, length);
}

static int inj_fallocate(struct upc_store *store, void *handle, int mode, off_t off, off_t len)
{
	struct inject_store *is = to_inject(store);
	int ret = inj_special(is, UPC_INJECT_META_ERROR);

	return ret ? ret : store_fallocate(is->inner, handle, mode, off, len);
}

static int inj_stat(struct upc_store *store, void *handle, struct stat *st)
{
	return store_stat(to_inject(store)->inner, handle, st);
}

static void inj_destroy(struct upc_store *store)
{
	struct inject_store *is = to_inject(store);

	upc_store_inject_clear(store);
	if (is->own_inner)
		upc_store_destroy(is->inner);
	pthread_mutex_destroy(&is->lock);
	free(is);
}

static const struct upc_store_ops inject_ops = {
	.sz = sizeof(struct upc_store_ops),
	.name = "inject",
	.open = inj_open,
	.close = inj_close,
	.submit = inj_submit,
	.sync = inj_sync,
	.destroy = inj_destroy,
	.stat = inj_stat,
	.truncate = inj_truncate,
	.fallocate = inj_fallocate,
	.fsync = inj_fsync,
};

UPC_API int upc_store_inject_create(struct upc_store *inner, struct upc_store **storep)
{
	struct inject_store *is;
	int ret;

	if (!storep)
		return -EINVAL;
	is = calloc(1, sizeof(*is));
	if (!is)
		return -ENOMEM;
	if (!inner) {
		ret = upc_store_file_create(0, &inner);
		if (ret < 0) {
			free(is);
			return ret;
		}
		is->own_inner = true;
	}
	is->base.ops = &inject_ops;
	is->inner = inner;
	pthread_mutex_init(&is->lock, NULL);
	*storep = &is->base;
	return 0;
}

UPC_API int upc_store_inject_add(struct upc_store *store, enum upc_io_dir dir, off_t off,
				 size_t len, int kind, long arg, int count)
{
	struct inject_store *is = to_inject(store);
	struct inject_rule *r;

	if (!is || (dir != UPC_IO_READ && dir != UPC_IO_WRITE) || off < 0 || count == 0 ||
	    kind < UPC_INJECT_ERROR || kind > UPC_INJECT_DELAY_DONE || arg < 0 ||
	    ((kind == UPC_INJECT_ERROR || kind == UPC_INJECT_SYNC_ERROR || kind == UPC_INJECT_META_ERROR) &&
	     (arg == 0 || arg > 4095)))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct inject_rule){ .dir = dir, .off = off, .len = len, .kind = kind,
				   .arg = arg, .count = count };
	pthread_mutex_lock(&is->lock);
	/* Appended: rules match in the order they were added. */
	struct inject_rule **pp = &is->rules;
	while (*pp)
		pp = &(*pp)->next;
	*pp = r;
	pthread_mutex_unlock(&is->lock);
	return 0;
}

UPC_API int upc_store_inject_clear(struct upc_store *store)
{
	struct inject_store *is = to_inject(store);
	struct inject_rule *r;

	if (!is)
		return -EINVAL;
	pthread_mutex_lock(&is->lock);
	while ((r = is->rules)) {
		is->rules = r->next;
		free(r);
	}
	pthread_mutex_unlock(&is->lock);
	return 0;
}

UPC_API int upc_store_destroy(struct upc_store *store)
{
	if (store)
		store->ops->destroy(store);
	return 0;
}

/*
 * How many clean pages write-back may write between two dirty runs to make
 * one I/O of them (writeback.c: clustering, and the measurements behind
 * these bounds).  The file store's I/Os are bounded by their count more
 * than by their bytes: a buffered write is a copy into the page cache plus
 * ext4's write-back of it at fdatasync, an O_DIRECT one a device request;
 * both cost about as much for a few pages more.  The fault-injection store
 * clusters as the store it wraps (so that tests see what users get).  A
 * store of the application's is not clustered: whether a byte more costs
 * less than an I/O more there (a network store may pay by the byte) is not
 * known here.
 */
uint64_t store_cluster_gap(struct upc_store *s)
{
	struct inject_store *is = to_inject(s);

	if (is)
		return store_cluster_gap(is->inner);
	if (s->ops != &file_ops)
		return 0;
	return ((struct file_store *)s)->flags & UPC_STORE_DIRECT ? WB_GAP_DIRECT : WB_GAP_BUFFERED;
}
