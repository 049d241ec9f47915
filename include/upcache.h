/* SPDX-License-Identifier: MIT */
/*
 * upcache.h - a user-space page cache and mmap replacement for Linux.
 *
 * This header is the reference documentation of the library's API.  The
 * concepts (the kernel analogy, the ordering rules I1-I6) are explained in
 * upcache(7); each function has its own page in section 3.
 *
 * Conventions (liburing's):
 *  - every function returns 0, or a non-negative count, on success and a
 *    negative errno on failure; none of them sets errno;
 *  - options structs start with "size_t sz" and are declared with
 *    UPC_OPTS(); fields the library does not know must be zero, so new
 *    fields can be added without breaking old binaries (libbpf's OPTS_VALID);
 *  - the library never prints on its own; see upc_set_print().
 */
#ifndef UPCACHE_H
#define UPCACHE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct stat;

#ifdef __cplusplus
extern "C" {
#endif

#define UPC_VERSION_MAJOR 0
#define UPC_VERSION_MINOR 1

#ifndef UPC_API
#define UPC_API __attribute__((visibility("default")))
#endif

/* Declare and zero an options struct, setting its size: UPC_OPTS(upc_cache_opts, o, .flags = X). */
#define UPC_OPTS(TYPE, NAME, ...) \
	struct TYPE NAME = { .sz = sizeof(struct TYPE), __VA_ARGS__ }

struct upc_cache;
struct upc_store;

/* ---------------------------------------------------------------- cache */

/* upc_cache_opts.flags */
#define UPC_CACHE_SYNC_WP	0x0u	/* synchronous write-protect dirty tracking (default) */
#define UPC_CACHE_ASYNC_WP	0x1u	/* request async write-protect tracking (UFFD_FEATURE_WP_ASYNC) */
#define UPC_CACHE_NO_BGWB	0x2u	/* no background write-back thread: only msync/destroy write */
#define UPC_CACHE_DIRECT_IO	0x4u	/* the default file store opens files O_DIRECT */
#define UPC_CACHE_SHARED	0x8u	/* join upcd's cache, shared with other processes (upcd(8)) */
#define UPC_CACHE_FLAGS_ALL	0xfu

/* What a read_error callback is told: the page of a fault that the store failed to read. */
struct upc_read_error {
	dev_t dev;		/* the file (st_dev, st_ino) */
	ino_t ino;
	off_t offset;		/* of the page */
	int err;		/* negative errno from the store (-EIO for a short read) */
	unsigned int attempt;	/* 0 for the first failure of this fault */
};

/* read_error callback answers */
#define UPC_READ_ERROR_SIGBUS	0	/* the access gets SIGBUS (the default) */
#define UPC_READ_ERROR_RETRY	1	/* read again (at most 8 attempts, then SIGBUS) */
#define UPC_READ_ERROR_ZERO	2	/* map a page of zeros instead (clean: nothing is written) */

struct upc_cache_opts {
	size_t sz;			/* sizeof(struct upc_cache_opts) */
	size_t mem_limit;		/* cached bytes at most; 0: $UPC_MEM_LIMIT, else 1/4 of RAM */
	unsigned int flags;		/* UPC_CACHE_* */
	unsigned int dirty_expire_ms;	/* dirty pages older than this are written back; 0: 30000 */
	unsigned int writeback_interval_ms; /* background write-back period; 0: 5000 */
	unsigned int ra_max_pages;	/* readahead window ceiling in pages; 0: 512 (2 MiB) */
	struct upc_store *store;	/* backing store; NULL: the io_uring file store */
	/*
	 * Called from the fault handler thread when the store cannot read a
	 * page a fault needs; returns UPC_READ_ERROR_*.  NULL: SIGBUS.  It must
	 * not call upcache functions (the file's lock is held).
	 */
	int (*read_error)(void *arg, const struct upc_read_error *e);
	void *read_error_arg;
	/* UPC_CACHE_SHARED: upcd's socket; NULL: $UPC_SOCKET, else the default (upcd(8)) */
	const char *socket;
};

/*
 * upc_cache_create - create a cache (embedded mode: the fault handler and the
 * write-back engine run as threads of this process).
 * @opts:   options, may be NULL for all defaults.
 * @cachep: receives the cache.
 *
 * Returns 0 or a negative errno:
 *  -EINVAL   bad options (unknown flags, non-zero unknown trailing bytes);
 *  -ENOSYS   the kernel has no userfaultfd;
 *  -EPERM    userfaultfd is not accessible to this process (see upcache(7));
 *  -EOPNOTSUPP the kernel cannot write-protect shmem with PTE markers
 *             (UFFD_FEATURE_WP_HUGETLBFS_SHMEM, UFFD_FEATURE_WP_UNPOPULATED),
 *             or the page size is not 4096;
 *  -ENOMEM, -EMFILE, -EAGAIN  resources (memory, descriptors, threads);
 *  an io_uring setup error from the default store.
 * UPC_CACHE_ASYNC_WP falls back to synchronous tracking where the kernel lacks
 * it; upc_stats() reports the mode in use.
 */
UPC_API int upc_cache_create(const struct upc_cache_opts *opts, struct upc_cache **cachep);

/*
 * upc_cache_destroy - write back every dirty page, wait for it, unmap every
 * mapping still established and free the cache.
 * Returns 0, or the first write-back error not yet reported to anyone (the
 * data of pages that could not be written is lost after this call: the error
 * says so).  The cache is freed in both cases.
 */
UPC_API int upc_cache_destroy(struct upc_cache *cache);

/* ---------------------------------------------------------------- mappings */

/* upc_map flags */
#define UPC_MAP_POPULATE	0x1u	/* fault the whole range in before returning (like MAP_POPULATE) */
#define UPC_MAP_HINT		0x2u	/* *addrp on entry: a hint (mmap's addr without MAP_FIXED) */
#define UPC_MAP_FIXED_NOREPLACE	0x4u	/* exactly at *addrp, -EEXIST if anything is mapped there */
#define UPC_MAP_FIXED		0x8u	/* exactly at *addrp, replacing what is there (MAP_FIXED) */
#define UPC_MAP_FLAGS_ALL	0xfu

/*
 * upc_map - map @length bytes of the file open on @fd from @offset, with
 * MAP_SHARED semantics: every mapping of the same file (same st_dev/st_ino,
 * through any fd, at any offset) shares one set of cached pages.
 * @fd:     an open regular file; the cache keeps its own reference, @fd may
 *          be closed afterwards.  Write access follows @fd's access mode;
 *          its status flags (O_APPEND), then or later, do not matter.
 * @offset: multiple of the page size.
 * @length: any length, whatever the file's size (a map may be far larger
 *          than its file, and the file may grow into it): the part past
 *          end of file costs address space only, as with mmap(2).
 * @prot:   PROT_READ, PROT_READ|PROT_WRITE or PROT_NONE.
 * @flags:  UPC_MAP_POPULATE, and at most one of the address flags:
 *          UPC_MAP_HINT (*@addrp is a hint, NULL for none, as mmap(2)'s
 *          addr), UPC_MAP_FIXED_NOREPLACE (exactly at *@addrp, or -EEXIST
 *          if anything is mapped in the range, as MAP_FIXED_NOREPLACE),
 *          UPC_MAP_FIXED (exactly at *@addrp, replacing what is mapped
 *          there, as MAP_FIXED; upcache mappings in the range are unmapped
 *          as by upc_unmap(), their dirty pages kept dirty in the cache).
 * @addrp:  receives the address; with an address flag, holds the address
 *          asked for on entry.
 *
 * As with mmap(2), a page wholly beyond end of file raises SIGBUS, the part
 * of the last page beyond end of file reads as zeros and is never written
 * back, and a write to a mapping without PROT_WRITE raises SIGSEGV.
 * UPC_MAP_FIXED is not atomic as MAP_FIXED is: the upcache mappings in the
 * range go first, then the new mapping replaces the range, inaccessible
 * (an access by another thread meanwhile gets SIGSEGV) until it is ready;
 * upc_map(3) has the details.
 *
 * Returns 0 or a negative errno:
 *  -EINVAL  @length is 0, @offset is not page-aligned, unknown @prot bits or @flags;
 *           more than one address flag; with one, *@addrp not page-aligned
 *           or the range wrapping around; NULL with UPC_MAP_FIXED or
 *           UPC_MAP_FIXED_NOREPLACE;
 *  -EEXIST  UPC_MAP_FIXED_NOREPLACE and something is mapped in the range;
 *  -EBUSY   UPC_MAP_FIXED over an upcache mapping with a pinned page in the
 *           range (nothing changed; see upc_unmap());
 *           an O_APPEND @fd that the file store cannot open again for itself
 *           (see upc_store_file_create(3): it never writes through O_APPEND);
 *  -EBADF   @fd is not an open file descriptor;
 *  -ENODEV  @fd is not a regular file;
 *  -EACCES  PROT_WRITE on an fd not opened for writing, or any mapping of an
 *           fd opened O_WRONLY;
 *  -EOVERFLOW @offset + @length overflows;
 *  -ENOMEM  no address space for the range (or, with UPC_MAP_FIXED, the
 *           range is not in the user address space); memory;
 *  -EMFILE  descriptors.
 * A failure after UPC_MAP_FIXED unmapped what was in the range leaves the
 * range unmapped, as a failed mmap(MAP_FIXED) may.
 */
UPC_API int upc_map(struct upc_cache *cache, int fd, off_t offset, size_t length,
		    int prot, unsigned int flags, void **addrp);

/*
 * upc_unmap - unmap a range of a mapping created by upc_map().  The range
 * must lie within one mapping; unmapping its middle splits it.  Dirty pages
 * stay dirty in the cache and are written back later (I5).
 * Returns 0, -EINVAL (not page-aligned, zero length, not within one mapping),
 * -EBUSY (a page of the range is pinned - pins belong to the file's pages,
 * whichever mapping took them: unpin first), -ENOMEM (splitting the mapping).
 */
UPC_API int upc_unmap(struct upc_cache *cache, void *addr, size_t length);

/* ---------------------------------------------------------------- write-back */

/* upc_msync flags */
#define UPC_MS_ASYNC	0x1u	/* schedule write-back of the range and return */
#define UPC_MS_SYNC	0x2u	/* write back the range and make it durable (fdatasync) */
#define UPC_MS_FLAGS_ALL 0x3u

/*
 * upc_msync - write back the dirty pages of the files mapped in
 * [addr, addr+length), in the order of invariant I1: write-protect every
 * mapping of those pages, then mark them clean, then submit the writes
 * (sorted by offset, coalesced).  UPC_MS_SYNC also waits for write-back
 * already in flight over the range, then makes the data durable with
 * fdatasync.  UPC_MS_ASYNC marks the range's dirty pages as expired and wakes
 * the background writer (without it, it writes them itself and does not
 * wait for durability).
 *
 * Errors follow errseq_t semantics: a write-back error on a file is reported
 * once to every mapping of it through which msync is called after the
 * error, and the pages that failed stay dirty.
 *
 * Pages held by a UPC_PIN_NOWRITEBACK pin are not written.
 *
 * Returns 0 when every dirty page of the range was written (and, with
 * UPC_MS_SYNC, made durable); a positive count of dirty pages that were
 * held back by UPC_PIN_NOWRITEBACK pins and not written; or a negative errno:
 *  -EINVAL  both or neither flag, unknown flags, unaligned @addr, zero length;
 *  -ENOMEM  the range is not wholly covered by upcache mappings;
 *  -EIO, -ENOSPC, ...  a write-back error (see above).
 */
UPC_API int upc_msync(struct upc_cache *cache, void *addr, size_t length, int flags);

/* ---------------------------------------------------------------- file I/O */

/*
 * File I/O through the cache (upc_pread(3) and the pages it names), for a
 * file open on @fd: the same pages every mapping of the file maps, so a
 * write through either is seen at once through the other, as with the
 * kernel's page cache.  A file the cache does not hold yet is taken in (as
 * upc_map() takes it; it stays cached, unused, after the call).  @fd may
 * be any descriptor of the file; the cache never uses its file position
 * or status flags (O_APPEND is ignored: data goes at @off).
 */

/*
 * upc_pread - read up to @len bytes at @off into @buf, as pread(2): cached
 * data (dirty included) comes from the cache; pages not cached are read
 * from the store into the cache.  A read past the end of file the cache
 * knows looks at the file's size again first.
 * Returns the bytes read (fewer than @len at end of file, 0 past it), or,
 * when nothing was read, a negative errno:
 *  -EBADF   @fd is not open, or open O_WRONLY;
 *  -EINVAL  @off negative, @off + @len overflows, @buf NULL with @len;
 *  -ENODEV  @fd is not a regular file;
 *  -EIO, ...  the store's read failed (nothing of that read is cached);
 *  -ENOMEM, -EMFILE  resources.
 */
UPC_API ssize_t upc_pread(struct upc_cache *cache, int fd, void *buf, size_t len, off_t off);

/*
 * upc_pwrite - write @len bytes from @buf at @off, as pwrite(2), into the
 * cached pages, which become dirty and are written back later (upc_fsync(),
 * upc_msync() of a mapping, the background writer) in the order of I1.  A
 * page the write covers only in part is read from the store first, unless
 * it is cached or lies past end of file.  Writing past end of file extends
 * the file at once, in the cache and in the store (the backing file's
 * size is raised before the call returns, its data written back later).
 * Returns the bytes written, or, when nothing was written, a negative errno:
 *  -EBADF   @fd is not open, or open O_RDONLY;
 *  -EACCES  @fd is open O_WRONLY (the cache must be able to read the file);
 *  -EINVAL  @off negative, @buf NULL with @len;
 *  -EFBIG   @off + @len overflows, or the file would grow beyond what the
 *           address space can stage (nothing written then);
 *  -EOPNOTSUPP extending a file whose store cannot change its size;
 *  -ENODEV, -EIO, -ENOSPC, -ENOMEM, -EMFILE.
 */
UPC_API ssize_t upc_pwrite(struct upc_cache *cache, int fd, const void *buf, size_t len, off_t off);

/*
 * upc_ftruncate - set the file's size to @length, as ftruncate(2).
 * Shrinking drops the cached pages past the new end from every mapping and
 * from the cache without writing them back (a later access through any
 * mapping raises SIGBUS), zeroes the cached tail of the new last page, and
 * truncates the backing file.  Growing zeroes what mappings stored past the
 * old end in the old last page.
 * Returns 0 or a negative errno (nothing changes then):
 *  -EINVAL  @length negative, or @fd open O_RDONLY;
 *  -EBADF, -EACCES, -ENODEV  as upc_pwrite();
 *  -EBUSY   a page wholly past the new end is pinned (upc_pin());
 *  -EFBIG   @length beyond what the address space can stage (upc_pwrite());
 *  -EOPNOTSUPP the store cannot change the file's size;
 *  the store's error (-EIO, -EPERM, ...).
 */
UPC_API int upc_ftruncate(struct upc_cache *cache, int fd, off_t length);

/*
 * upc_fallocate - fallocate(2) through the cache.  @mode:
 *  0: allocate [@off, @off+@len) in the backing file, extending the file
 *     (in the cache too) if the range ends past it;
 *  FALLOC_FL_KEEP_SIZE: allocate, never extend;
 *  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: deallocate; cached pages
 *     wholly in the hole are dropped from every mapping without write-back,
 *     the parts of the edge pages in it read as zeros, in the cache and in
 *     the file.
 * Returns 0 or a negative errno (nothing changes then):
 *  -EOPNOTSUPP any other mode (PUNCH_HOLE without KEEP_SIZE included), or
 *           a store or file system that cannot do it;
 *  -EINVAL  @off negative, @len not positive;
 *  -EFBIG   @off + @len overflows, or mode 0 past what the address space
 *           can stage (upc_pwrite());
 *  -EBUSY   a page wholly in the hole is pinned;
 *  -EBADF   @fd not open, or open O_RDONLY; -EACCES, -ENODEV as upc_pwrite();
 *  the store's error (-ENOSPC, -EIO, ...).
 */
UPC_API int upc_fallocate(struct upc_cache *cache, int fd, int mode, off_t off, off_t len);

/*
 * upc_fsync, upc_fdatasync - write back every dirty page of the file (in
 * the I1 order), wait for write-back in flight, then make it durable with
 * fsync(2) or fdatasync(2) on the backing file (a store without the
 * optional fsync operation: fdatasync for both).
 * Errors follow errseq_t semantics with one cursor per file in the cache,
 * shared by every upc_fsync() and upc_fdatasync() of it through any
 * descriptor: a write-back error is reported once to these calls (and,
 * apart from them, once through every mapping's upc_msync()).
 * Returns 0; a positive count of dirty pages held back by
 * UPC_PIN_NOWRITEBACK pins (not written); or a negative errno:
 *  -EBADF   @fd is not open; -ENODEV not a regular file;
 *  -EACCES  @fd is open O_WRONLY and the cache does not hold the file;
 *  -EIO, -ENOSPC, ...  a write-back or sync error (see above).
 */
UPC_API int upc_fsync(struct upc_cache *cache, int fd);
UPC_API int upc_fdatasync(struct upc_cache *cache, int fd);

/*
 * upc_invalidate - drop the clean cached pages of [@off, @off+@len) (@len 0:
 * to end of file) from every mapping and from the cache, so that the next
 * access reads them from the store again: for a file written behind the
 * cache's back (pwrite(2), another program), as the kernel's
 * invalidate_inode_pages2_range().  It also takes the file's size again,
 * if it grew.  Dirty, pinned and under-write-back pages are kept.
 * Returns 0 when every cached page of the range was dropped, -EBUSY when
 * some were kept (the others are dropped), or a negative errno:
 *  -EINVAL  @off or @len negative;
 *  -EBADF, -ENODEV, -EACCES  as upc_fsync().
 */
UPC_API int upc_invalidate(struct upc_cache *cache, int fd, off_t off, off_t len);

/* ---------------------------------------------------------------- controls */

/* upc_pin flags */
#define UPC_PIN_NOWRITEBACK	0x1u	/* also hold the pages' dirty data back from write-back */
#define UPC_PIN_WRITE		0x2u	/* the pages will be written by the kernel or a device (O_DIRECT
					 * read into them, DMA): map them writable and keep them so
					 * until unpinned; they count as dirty the whole time (write-back
					 * writes them but does not clean them) and again at unpin */
#define UPC_PIN_FLAGS_ALL	0x3u

/*
 * upc_pin - fault in [addr, addr+length) and keep its pages resident: a
 * pinned page is never unmapped, evicted or replaced (I6).  Pins nest (a
 * count per page).  With UPC_PIN_NOWRITEBACK the pages' dirty data is also
 * held back from every write-back (upc_msync, the background writer,
 * reclaim) until the last pin of the page is released: a database pins its
 * data pages this way, writes its log, and unpins once the log is durable.
 * Pinning is also how a range becomes safe for kernel-mode access (read(2)
 * or O_DIRECT into the mapping) when userfaultfd cannot serve kernel faults
 * (UFFD_USER_MODE_ONLY): use UPC_PIN_WRITE for the kernel to write into it.
 * (There, upc_pin reads and maps the pages itself: see upc_pin(3).)
 * Returns 0 or a negative errno:
 *  -EINVAL  unaligned, zero length, unknown flags, not wholly mapped by upcache;
 *  -EACCES  UPC_PIN_WRITE on a mapping without PROT_WRITE;
 *  -EFAULT  a page could not be faulted in (read error; beyond end of file);
 *  -ENOMEM  pinning would exceed the memory limit.
 * On failure nothing is pinned.
 */
UPC_API int upc_pin(struct upc_cache *cache, void *addr, size_t length, unsigned int flags);

/*
 * upc_unpin - drop one pin of every page in [addr, addr+length).
 * Returns 0, or -EINVAL (bad range, or a page in it is not pinned: then
 * nothing is unpinned).
 */
UPC_API int upc_unpin(struct upc_cache *cache, void *addr, size_t length);

/* upc_advise advice */
#define UPC_ADV_NORMAL		0	/* adaptive readahead (the default) */
#define UPC_ADV_RANDOM		1	/* no readahead: one page per fault */
#define UPC_ADV_SEQUENTIAL	2	/* the largest readahead window from the first fault */
#define UPC_ADV_WILLNEED	3	/* read the range in the background; returns at once */
#define UPC_ADV_DONTNEED	4	/* tear down this process's PTEs of the range; data and dirty state stay */
#define UPC_ADV_FREE		5	/* the range's data may be discarded without write-back */

/*
 * upc_advise - advice about [addr, addr+length), which must be mapped by
 * upcache.  NORMAL, RANDOM and SEQUENTIAL set the readahead policy of the
 * mappings in the range.  WILLNEED queues asynchronous readahead.  DONTNEED
 * tears down this process's page-table entries (the pages stay cached and
 * dirty pages stay dirty, I2/I5; pinned pages are skipped, I6), so the next
 * access faults again.  FREE marks the pages lazily freeable, as MADV_FREE:
 * their dirty data is dropped now and the cache may discard them without
 * writing them back (the file keeps its older content) - unless a page is
 * written again before it is reclaimed, in which case it is dirty and
 * written back like any other (I4).
 * Returns 0 or a negative errno: -EINVAL (unknown advice, unaligned, zero
 * length, not wholly mapped), -EBUSY (FREE over a pinned page).
 */
UPC_API int upc_advise(struct upc_cache *cache, void *addr, size_t length, int advice);

/*
 * upc_protect - change the protection of [addr, addr+length) (within
 * upcache mappings) to PROT_NONE, PROT_READ or PROT_READ|PROT_WRITE, as
 * mprotect(2).  Dirty state is never lost (I5): it lives in the page
 * descriptors, or (asynchronous tracking) is collected before the change.
 * Returns 0 or a negative errno: -EINVAL (bad prot, unaligned, zero
 * length, not wholly mapped), -EACCES (PROT_WRITE on a mapping whose fd was
 * not opened for writing), -EBUSY (PROT_NONE over a pinned page).
 */
UPC_API int upc_protect(struct upc_cache *cache, void *addr, size_t length, int prot);

/* upc_drop flags */
#define UPC_DROP_WRITEBACK	0x1u	/* write dirty pages back first (and wait), then drop */
#define UPC_DROP_FLAGS_ALL	0x1u

/*
 * upc_drop - drop every clean, unpinned page that is not under write-back
 * from the cache, tearing its mappings down first and checking dirty again
 * after (I3); dirty pages are never dropped.  Mappings stay valid: the next
 * access reads the page from the store again.
 * Returns the number of pages dropped, or -EINVAL (unknown flags), or the
 * first write-back error (UPC_DROP_WRITEBACK: the files whose write-back
 * failed keep their dirty pages; the others are still dropped).
 */
UPC_API int upc_drop(struct upc_cache *cache, unsigned int flags);

/* ---------------------------------------------------------------- errors, logs */

/* upc_strerror - a string for a negative errno returned by this library (thread-safe). */
UPC_API const char *upc_strerror(int err);

enum upc_print_level {
	UPC_WARN = 0,
	UPC_INFO = 1,
	UPC_DEBUG = 2,
};
typedef int (*upc_print_fn_t)(enum upc_print_level level, const char *fmt, va_list ap);

/*
 * upc_set_print - set the function that receives the library's messages, or
 * NULL for silence (the default, unless $UPC_LOG_LEVEL is warn, info or debug,
 * which prints to stderr).  Returns the previous function.
 */
UPC_API upc_print_fn_t upc_set_print(upc_print_fn_t fn);

/* ---------------------------------------------------------------- statistics */

#define UPC_TRACK_SYNC	0
#define UPC_TRACK_ASYNC	1

struct upc_stats {
	size_t sz;			/* set by the caller: sizeof(struct upc_stats) */
	uint32_t track_mode;		/* UPC_TRACK_SYNC or UPC_TRACK_ASYNC */
	uint32_t nr_files;		/* cache objects (one per backing file), in use or unused */
	uint32_t nr_mappings;		/* this process's mappings */
	uint32_t nr_children;		/* forked children whose inherited mappings the cache serves */
	uint64_t mem_limit;		/* bytes */
	uint64_t pages_cached;		/* pages present in the cache */
	uint64_t pages_dirty;
	uint64_t pages_writeback;
	uint64_t pages_pinned;
	uint64_t faults_missing;	/* userfaultfd MISSING faults handled */
	uint64_t faults_wp;		/* write-protect faults handled (sync tracking) */
	uint64_t faults_minor;		/* MINOR faults handled */
	uint64_t fill_ios;		/* read I/Os submitted to the store (faults and WILLNEED) */
	uint64_t pages_filled;		/* pages read from the store */
	uint64_t ra_pages;		/* pages filled beyond the faulting one (readahead, WILLNEED) */
	uint64_t ra_max_window;		/* largest readahead window used, pages */
	uint64_t wp_calls;		/* write-protect ioctls issued by write-back */
	uint64_t wb_ios;		/* write I/Os submitted to the store */
	uint64_t pages_written;		/* pages written back */
	uint64_t bytes_written;
	uint64_t syncs;			/* fdatasync calls */
	uint64_t wb_errors;		/* write-back errors */
	uint64_t read_errors;		/* failed reads of a faulting page (each attempt counts) */
	uint64_t pages_evicted;
	uint64_t meta_bytes;		/* bytes of per-page metadata allocated */
	uint64_t pages_active;		/* pages in the hot (active) list */
	uint64_t reclaim_passes;	/* rounds of the reclaim thread */
	uint64_t wb_gap_pages;		/* clean pages written with dirty ones around them */
	uint64_t evictions_undone;	/* upcd --async: pages written during their eviction, put back */
	uint64_t zap_wait_ms;		/* upcd --async: the reclaim thread's waits for clients' zaps, ms */
	uint64_t dirty_wait_ms;		/* upcd: writers' waits at their user's dirty limit, ms */
};

/*
 * upc_stats - fill @st with the cache's counters.  Set st->sz first; fields
 * beyond it are not written, so old callers keep working.
 * Returns 0 or -EINVAL (st->sz too small).
 */
UPC_API int upc_stats(struct upc_cache *cache, struct upc_stats *st);

/* ---------------------------------------------------------------- stores */

/*
 * A store is where cached pages come from and go to.  upcache ships the
 * io_uring file store (the default) and a fault-injection store for tests;
 * a network or object store implements the same operations.  The struct
 * starts with "size_t sz" (sizeof(struct upc_store_ops) when the store was
 * built) and grows at its end: an operation beyond @sz, or NULL, is one the
 * store does not have, and only optional operations are ever added.
 */
enum upc_io_dir { UPC_IO_READ = 0, UPC_IO_WRITE = 1 };

struct upc_io {
	void *buf;
	size_t len;
	off_t off;
	ssize_t res;	/* set by the store: bytes transferred or a negative errno */
};

struct upc_store_ops {
	size_t sz;
	const char *name;
	/* Open a per-file handle on @fd (borrowed; dup it to keep it). */
	int (*open)(struct upc_store *store, int fd, unsigned int flags, void **handlep);
	void (*close)(struct upc_store *store, void *handle);
	/* Perform @n I/Os; set each ios[i].res; return 0 or a negative errno for the whole batch. */
	int (*submit)(struct upc_store *store, void *handle, enum upc_io_dir dir,
		      struct upc_io *ios, unsigned int n);
	/* Make written data durable. */
	int (*sync)(struct upc_store *store, void *handle);
	void (*destroy)(struct upc_store *store);
	/*
	 * Optional (NULL, or absent from a store built before it: @sz tells):
	 * fstat(2) the backing file of @handle; return 0 or a negative errno.
	 * The cache uses st_size to tell a short read at a new end of file
	 * (the file shrank behind its back) from a short read that is an
	 * error, and st_nlink of files no mapping uses any more: one that is
	 * unlinked is released (written back first), so that its disk space
	 * is freed.  Without it, a short read is an error and unused files
	 * are released only by the bound on them (upcache(7), FILE LIFETIME).
	 */
	int (*stat)(struct upc_store *store, void *handle, struct stat *st);
	/*
	 * Optional: set the backing file's size, as ftruncate(2); return 0 or
	 * a negative errno.  Without it upc_ftruncate() and a upc_pwrite()
	 * past end of file fail with -EOPNOTSUPP.
	 */
	int (*truncate)(struct upc_store *store, void *handle, off_t length);
	/*
	 * Optional: fallocate(2) on the backing file (@mode: FALLOC_FL_KEEP_SIZE,
	 * FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, or 0).  Without it
	 * upc_fallocate() fails with -EOPNOTSUPP.
	 */
	int (*fallocate)(struct upc_store *store, void *handle, int mode, off_t off, off_t len);
	/*
	 * Optional: make written data and the file's metadata durable, as
	 * fsync(2) (@sync is fdatasync(2)).  Without it upc_fsync() uses @sync.
	 */
	int (*fsync)(struct upc_store *store, void *handle);
};

/* upc_store_file_create flags */
#define UPC_STORE_DIRECT	0x1u	/* O_DIRECT */

/*
 * upc_store_file_create - the io_uring file store.
 * Returns 0, -EINVAL (unknown flags), -ENOMEM, or an io_uring setup error.
 */
UPC_API int upc_store_file_create(unsigned int flags, struct upc_store **storep);

/*
 * upc_store_inject_create - a fault-injection store that passes I/O to
 * @inner (NULL: a new file store, owned by this store) except where a rule
 * added with upc_store_inject_add() matches.
 */
UPC_API int upc_store_inject_create(struct upc_store *inner, struct upc_store **storep);

/* upc_store_inject_add kinds */
#define UPC_INJECT_ERROR	1	/* fail with -@arg (EIO, ENOSPC, ...) */
#define UPC_INJECT_SHORT	2	/* transfer only @arg bytes */
#define UPC_INJECT_DELAY	3	/* sleep @arg microseconds first */
#define UPC_INJECT_SYNC_ERROR	4	/* sync and fsync fail with -@arg (offsets ignored) */
#define UPC_INJECT_META_ERROR	5	/* truncate and fallocate fail with -@arg (offsets ignored) */
#define UPC_INJECT_DELAY_DONE	6	/* do the I/O, then sleep @arg microseconds before completing it */

/*
 * upc_store_inject_add - fail the next @count I/Os in direction @dir that
 * overlap [@off, @off+@len) (@count < 0: all of them), as @kind says.
 * Returns 0, -EINVAL (not an inject store, bad kind), -ENOMEM.
 */
UPC_API int upc_store_inject_add(struct upc_store *store, enum upc_io_dir dir, off_t off,
				 size_t len, int kind, long arg, int count);

/* upc_store_inject_clear - remove every rule. Returns 0 or -EINVAL. */
UPC_API int upc_store_inject_clear(struct upc_store *store);

/*
 * upc_store_destroy - free a store created by upc_store_*_create().  A store
 * passed to a cache must outlive it.  Returns 0.
 */
UPC_API int upc_store_destroy(struct upc_store *store);

/* ---------------------------------------------------------------- features */

/* upc_probe bits */
#define UPC_FEAT_UFFD_SYSCALL	(1u << 0)	/* userfaultfd(2) usable */
#define UPC_FEAT_UFFD_DEV	(1u << 1)	/* /dev/userfaultfd usable (probed even when the syscall works) */
#define UPC_FEAT_USER_MODE_ONLY	(1u << 2)	/* only UFFD_USER_MODE_ONLY usable */
#define UPC_FEAT_MISSING_SHMEM	(1u << 3)
#define UPC_FEAT_MINOR_SHMEM	(1u << 4)
#define UPC_FEAT_WP_SHMEM	(1u << 5)
#define UPC_FEAT_WP_UNPOPULATED	(1u << 6)
#define UPC_FEAT_WP_ASYNC	(1u << 7)
#define UPC_FEAT_PAGEMAP_SCAN	(1u << 8)
#define UPC_FEAT_POISON		(1u << 9)
#define UPC_FEAT_PROCESS_MADVISE (1u << 10)
#define UPC_FEAT_IO_URING	(1u << 11)
#define UPC_FEAT_SIGBUS		(1u << 12)
#define UPC_FEAT_EVENT_FORK	(1u << 13)
#define UPC_FEAT_COPY_WP	(1u << 14)	/* UFFDIO_COPY_MODE_WP */

/*
 * upc_probe - the kernel features upcache found (UPC_FEAT_* bits), probed
 * once per process and cached.  Never fails: an absent feature is a 0 bit.
 */
UPC_API uint64_t upc_probe(void);

/* upc_feature_name - the name of one UPC_FEAT_* bit, or NULL. */
UPC_API const char *upc_feature_name(uint64_t bit);

#ifdef __cplusplus
}
#endif
#endif /* UPCACHE_H */
