/* SPDX-License-Identifier: MIT */
/*
 * syscall.c - thin shims over the system calls and ioctls the engine uses.
 *
 * This is the only file that reads errno: every shim returns a value or a
 * negative errno (liburing's src/arch/generic/syscall.h convention).
 */
#include "internal.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int uffd_new(int flags, int *pathp)
{
	int fd, dev;

	/*
	 * The userfaultfd(2) syscall first; where vm.unprivileged_userfaultfd
	 * forbids it, /dev/userfaultfd (Linux 6.1, access by file mode); last,
	 * UFFD_USER_MODE_ONLY, which an unprivileged process may always ask
	 * for but which cannot serve faults taken in kernel mode (read(2)
	 * into a mapped buffer, O_DIRECT): those fail with EFAULT.
	 */
	fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd >= 0) {
		*pathp = UPC_FEAT_UFFD_SYSCALL;
		return fd;
	}
	if (errno == ENOSYS)
		return -ENOSYS;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
		if (fd >= 0) {
			*pathp = UPC_FEAT_UFFD_DEV;
			return fd;
		}
	}
	fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	if (fd >= 0) {
		*pathp = UPC_FEAT_USER_MODE_ONLY;
		return fd;
	}
	return -errno;
}

int sys_uffd_open(uint64_t want, uint64_t *got, int *pathp)
{
	struct uffdio_api api = { .api = UFFD_API, .features = want };
	int path = 0, fd, ret;

	fd = uffd_new(O_CLOEXEC | O_NONBLOCK, &path);
	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	if (got)
		*got = api.features;
	if (pathp)
		*pathp = path;
	return fd;
}

int sys_uffd_register(int uffd, uintptr_t start, size_t len, uint64_t mode)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = len },
		.mode = mode,
	};

	return ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int sys_uffd_wp(int uffd, uintptr_t start, size_t len, bool protect, bool wake)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = start, .len = len },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP :
			(wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
	};

	/* The kernel rejects WP|DONTWAKE: protecting never wakes anyone. */

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

int sys_uffd_wake(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_range r = { .start = start, .len = len };

	return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

/* Returns the bytes copied (maybe fewer than @len) or a negative errno if none were. */
long sys_uffd_copy(int uffd, uintptr_t dst, const void *src, size_t len, bool wp, bool wake)
{
	struct uffdio_copy cp = {
		.dst = dst,
		.src = (uintptr_t)src,
		.len = len,
		.mode = (wp ? UFFDIO_COPY_MODE_WP : 0) | (wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE),
	};

	if (ioctl(uffd, UFFDIO_COPY, &cp) < 0) {
		if (cp.copy > 0)
			return cp.copy;
		return cp.copy < 0 ? cp.copy : -errno;
	}
	return cp.copy;
}

/* Returns the bytes mapped (maybe fewer than @len) or a negative errno if none were. */
long sys_uffd_continue(int uffd, uintptr_t start, size_t len, bool wp, bool wake)
{
	struct uffdio_continue cont = {
		.range = { .start = start, .len = len },
		.mode = (wp ? UFFDIO_CONTINUE_MODE_WP : 0) | (wake ? 0 : UFFDIO_CONTINUE_MODE_DONTWAKE),
	};

	if (ioctl(uffd, UFFDIO_CONTINUE, &cont) < 0) {
		if (cont.mapped > 0)
			return cont.mapped;
		return cont.mapped < 0 ? cont.mapped : -errno;
	}
	return cont.mapped;
}

int sys_uffd_poison(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_poison p = { .range = { .start = start, .len = len } };

	return ioctl(uffd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}

/*
 * A new open file description of the file open on @fd, with @flags (an
 * access mode and O_DIRECT; O_CLOEXEC is added): open(2) of
 * /proc/self/fd/N follows the descriptor's file, not a name, so a rename or
 * an unlink does not matter.  What was opened is checked to be the same
 * inode (st_dev, st_ino): a /proc that is not procfs must not make the
 * caller write another file (-ESTALE then).  Otherwise the open's error:
 * -ENOENT without /proc, -EACCES where the file's mode no longer allows
 * @flags' access, -EINVAL for O_DIRECT on a file system without it.
 */
int sys_fd_reopen(int fd, int flags)
{
	struct stat a, b;
	char path[32];
	int nfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, flags | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	if (fstat(fd, &a) < 0 || fstat(nfd, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(nfd);
		return -ESTALE;
	}
	return nfd;
}

/*
 * sendmsg(2) of @len bytes from @buf with @nfds descriptors (SCM_RIGHTS,
 * at most SYS_MSG_FDS_MAX), again after EINTR (a signal of the daemon's
 * failed a keeper's hand-over in CI at 2745538), MSG_NOSIGNAL added to
 * @flags: the bytes sent, or -errno.
 */
ssize_t sys_send_fds(int s, const void *buf, size_t len, const int *fds, unsigned int nfds, int flags)
{
	union {		/* aligned for struct cmsghdr (review of 175ecf2) */
		struct cmsghdr align;
		char buf[CMSG_SPACE(SYS_MSG_FDS_MAX * sizeof(int))];
	} cbuf = { 0 };
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	if (nfds > SYS_MSG_FDS_MAX)
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	do
		r = sendmsg(s, &mh, MSG_NOSIGNAL | flags);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/*
 * recvmsg(2) of one message of at most @len bytes into @buf, with up to
 * @max descriptors (SCM_RIGHTS, MSG_CMSG_CLOEXEC; at most SYS_MSG_FDS_MAX)
 * into @fds and their number into *@nfds, again after EINTR; descriptors
 * past @max are closed.  The bytes read; -ECONNRESET at end of file;
 * -EPROTO for a message or a control part cut short (its descriptors
 * closed, and -1 in @fds; *@nfds 0); or -errno.
 */
ssize_t sys_recv_fds(int s, void *buf, size_t len, int *fds, unsigned int max, unsigned int *nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(SYS_MSG_FDS_MAX * sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf) };
	unsigned int n = 0;
	ssize_t r;

	*nfds = 0;
	do
		r = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ECONNRESET;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			unsigned int k = (unsigned int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int got[SYS_MSG_FDS_MAX];

			memcpy(got, CMSG_DATA(cm), k * sizeof(int));
			for (unsigned int i = 0; i < k; i++)
				if (n < max)
					fds[n++] = got[i];
				else
					close(got[i]);
		}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		for (unsigned int i = 0; i < n; i++) {
			close(fds[i]);
			fds[i] = -1;
		}
		return -EPROTO;
	}
	*nfds = n;
	return r;
}

int sys_fd_dup(int fd)
{
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	return nfd < 0 ? -errno : nfd;
}

/* The file status flags and access mode of @fd's open file description (F_GETFL). */
int sys_fd_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -errno : fl;
}

int sys_fstat(int fd, struct stat *st)
{
	return fstat(fd, st) < 0 ? -errno : 0;
}

/*
 * The identity, type, links and size of @fd's file (st_dev, st_ino,
 * st_mode, st_nlink, st_size; the rest zero), without asking for its timestamps.  Since
 * multigrain timestamps (Linux 6.13; ext4, xfs, btrfs, tmpfs), a stat that
 * returns the ctime flags the inode so that its next change takes a
 * fine-grained time: every write then changes mtime and dirties the inode,
 * where a write within the same clock tick would not have, and every
 * fdatasync(2) of it writes the inode too.  A program under upcache-run
 * paid one synchronous inode write a commit for it (SQLite in WAL mode:
 * 984 of 1 025 fdatasync calls of the WAL wrote its inode, against 109 on
 * the kernel; the shim stat'ed the descriptor of every read and write).
 * statx(2) without STATX_CTIME and STATX_MTIME does not flag it.  Where
 * statx fails for another reason than a bad descriptor (an old kernel, a
 * seccomp filter that refuses it), fstat(2) answers.
 */
int sys_fstat_id(int fd, struct stat *st)
{
	const unsigned int want = STATX_TYPE | STATX_MODE | STATX_INO | STATX_SIZE | STATX_NLINK;
	struct statx sx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, want, &sx) < 0)
		return errno == EBADF ? -EBADF : sys_fstat(fd, st);	/* no statx, or a filter that refuses it */
	if ((sx.stx_mask & want) != want)	/* a filesystem that could not say */
		return sys_fstat(fd, st);
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
	st->st_ino = sx.stx_ino;
	st->st_mode = sx.stx_mode;
	st->st_nlink = sx.stx_nlink;
	st->st_size = (off_t)sx.stx_size;
	return 0;
}

int sys_madvise(void *addr, size_t len, int advice)
{
	return madvise(addr, len, advice) < 0 ? -errno : 0;
}

int sys_memfd(const char *name, bool sealable)
{
	int fd = memfd_create(name, MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));

	return fd < 0 ? -errno : fd;
}

/*
 * ftruncate(2) that leaves no SIGXFSZ: a size past RLIMIT_FSIZE is EFBIG,
 * and the kernel sends the thread SIGXFSZ too, whose default action ends
 * the process with a core dump.  The limit applies to a memfd as to a
 * file, and the memfds are the cache's memory, not a file the program
 * writes: under "ulimit -f" a program died at its first cached file
 * (upc_cache_create(3), NOTES).  The store's file through it too: upcd
 * must never take one; an embedded cache's upc_pwrite and upc_ftruncate
 * send it themselves, as the kernel's write and truncate would.  Blocked
 * for the call, the signal the kernel sends this thread for a size past
 * the limit (inode_newsize_ok: to the thread, not the process) stays
 * pending on it, and is taken back: sigtimedwait() takes a thread's own
 * pending signal before the process's.  An EFBIG within the limit (the
 * file system's largest file) sends none, and takes none back.
 */
int sys_ftruncate(int fd, off_t len)
{
	const struct timespec zero = { 0 };
	sigset_t xfsz, old;
	int ret;

	sigemptyset(&xfsz);
	sigaddset(&xfsz, SIGXFSZ);
	pthread_sigmask(SIG_BLOCK, &xfsz, &old);
	ret = ftruncate(fd, len) < 0 ? -errno : 0;
	if (ret == -EFBIG && (uint64_t)len > fsize_limit())
		sigtimedwait(&xfsz, NULL, &zero);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0)
		errno = -ret;	/* as ftruncate(2) left it, for callers that look */
	return ret;
}

/* This process's RLIMIT_FSIZE, in bytes: UINT64_MAX for none. */
uint64_t fsize_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_FSIZE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return UINT64_MAX;
	return (uint64_t)rl.rlim_cur;
}

int sys_punch(int fd, off_t off, off_t len)
{
	return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) < 0 ? -errno : 0;
}

int sys_fallocate(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len) < 0 ? -errno : 0;
}

/* CLOCK_REALTIME @ms milliseconds from now, as pthread's timed waits take it. */
void deadline_ms(struct timespec *ts, unsigned int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* Wait on @cond (holding @lock) for @ms milliseconds at most. */
int cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *lock, unsigned int ms)
{
	struct timespec ts;

	deadline_ms(&ts, ms);
	return -pthread_cond_timedwait(cond, lock, &ts);
}

/* Take @lock, waiting @ms milliseconds at most (0: as long as it takes).  0 or -ETIMEDOUT. */
int mutex_lock_ms(pthread_mutex_t *lock, unsigned int ms)
{
	struct timespec ts;

	if (!ms)
		return -pthread_mutex_lock(lock);
	deadline_ms(&ts, ms);
	return -pthread_mutex_timedlock(lock, &ts);
}

/*
 * The runs of pages from @start (@npages of them) whose PTEs in the
 * pagemap @pagemap_fd are present and not write-protected by userfaultfd
 * (bit 57): the pages a process may be writing now, unseen.  @fn gets each
 * run (its first address, its pages); a negative return of it stops the
 * walk and is returned.  Returns 0, or the pagemap read's error.  For a
 * restarted daemon's adoption of a client's mapping (remote.c) and a
 * client's hand-back to it (takeover.c).
 */
int pagemap_writable_runs(int pagemap_fd, uintptr_t start, uint64_t npages,
			  int (*fn)(void *arg, uintptr_t addr, uint64_t n), void *arg)
{
	uint64_t ent[512];

	for (uint64_t p = 0; p < npages;) {
		uint64_t n = npages - p < 512 ? npages - p : 512;
		uintptr_t a = start + (p << UPC_PAGE_SHIFT);
		ssize_t r = pread(pagemap_fd, ent, n * sizeof(ent[0]), (off_t)((a >> UPC_PAGE_SHIFT) * sizeof(ent[0])));

		if (r != (ssize_t)(n * sizeof(ent[0])))
			return r < 0 ? -errno : -EIO;
		for (uint64_t i = 0; i < n;) {
			uint64_t j = i;
			int ret;

			while (j < n && (ent[j] >> 63) && !((ent[j] >> 57) & 1))	/* present, not protected */
				j++;
			if (j > i) {
				ret = fn(arg, a + (i << UPC_PAGE_SHIFT), j - i);
				if (ret < 0)
					return ret;
			}
			i = j + 1;
		}
		p += n;
	}
	return 0;
}

/*
 * A SOCK_SEQPACKET connection to the Unix socket at @path: the descriptor,
 * or -errno (-ENAMETOOLONG for a path that does not fit).  A client to
 * upcd (connect.c), a daemon to an earlier daemon's keeper (daemon/keeper.c).
 */
int sys_seqpacket_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;

		close(s);
		return err;
	}
	return s;
}

uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
