/* SPDX-License-Identifier: MIT */
/*
 * shim.h - the objects of libupcache-preload.so (preload/shim.c explains
 * what it does; upcache-run(1) what a user can expect).
 *
 *   shim_lock (a mutex; never held across file I/O)
 *     inodes[]   one per file the shim met in a MAP_SHARED mmap: routed
 *                through the cache (the file has or had upcache mappings,
 *                so its read/write go through upc_pread/upc_pwrite), or
 *                left to the kernel for the life of the process, or busy
 *                (another process's cache holds it: the registry)
 *     regions[]  the upcache mappings, sorted by address; each lies within
 *                one mapping of the library (records are split, never
 *                merged), so a piece of a record is a valid argument of
 *                upc_unmap, upc_protect, upc_advise and upc_msync
 *
 * Lock order: shim_lock, then the library's locks (taken inside upc_*).
 * The library's threads never take shim_lock: its calls of the interposed
 * functions are linked to the real ones (--wrap, see preload.am).
 */
#ifndef UPC_SHIM_H
#define UPC_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct shim_inode {
	dev_t si_dev;
	ino_t si_ino;
	int si_fd;		/* our descriptor of the file (O_CLOEXEC, high number), -1 for kernel ones */
	int si_accmode;		/* O_ACCMODE of si_fd */
	int si_regfd;		/* its registry entry, flock()ed: LOCK_EX routed, LOCK_SH kernel; or -1 */
	bool si_kernel;		/* a shared mapping of it was left to the kernel: never routed */
	bool si_busy;		/* another process caches it: no mapping, no write (EAGAIN) */
	bool si_busy_told;	/* stderr said so once */
	pid_t si_holder;	/* the process that caches it, when busy (0: not known) */
	bool si_child_logged;	/* a forked child logged that it cannot route it */
	char si_path[160];	/* for the log */
};

/*
 * From the library's copy linked into this object (lib/syscall.c, hidden
 * there): fstat(2) without the timestamps, for the paths that stat every
 * read and write.  0 or a negative errno.
 */
int sys_fstat_id(int fd, struct stat *st);

struct shim_region {
	uintptr_t sr_start, sr_end;
	off_t sr_off;		/* file offset of sr_start */
	int sr_prot;		/* PROT_NONE, PROT_READ or PROT_READ|PROT_WRITE */
	int sr_maxprot;		/* what the program's descriptor allows: more is EACCES, as mprotect(2) */
	struct shim_inode *sr_ino;
};

#endif /* UPC_SHIM_H */
