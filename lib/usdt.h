/* SPDX-License-Identifier: MIT */
/*
 * usdt.h - the engine's static trace points: USDT probes (<sys/sdt.h>,
 * provider "upcache"), the user-space counterpart of the kernel's
 * tracepoints.  upc-trace(8) and bpftrace attach to them; nothing happens
 * when nobody does (each probe is one nop).
 *
 * Each probe fires in exactly one place, a small function of debug.c
 * (__upc_trace_<name>), which the step calls only while a tracer is
 * attached: every probe has a semaphore (_SDT_HAS_SEMAPHORES), a counter
 * the kernel raises while a tracer is attached to it, and
 *
 *	UPC_TRACE(protect, f, pgoff, pages, calls);
 *
 * is "if (semaphore) __upc_trace_protect(...)": with nobody attached, a
 * load and a branch not taken, and no argument is computed.  (One site per
 * probe also keeps attaching and detaching a tracer cheap: the kernel
 * detaches uprobe sites one RCU grace period at a time.)  A step that
 * fires a probe in a loop tests UPC_PROBE_ENABLED(name) once around it.
 *
 * Without <sys/sdt.h> (Debian: systemtap-sdt-dev) the probes compile to
 * nothing.
 *
 * The probes and their arguments (upc-trace(8) documents them for users;
 * "file" is the engine's struct upc_file pointer, an identifier of the
 * cached file unique while the cache lives; pgoff and pages count 4 KiB
 * pages; off and len are bytes):
 *
 *   fault        file, ino, pgoff, addr, kind, tid    a userfaultfd fault reached the handler
 *   fault_done   file, pgoff, kind, result            ... and was resolved (pages mapped or -errno)
 *   fill_submit  file, ino, off, len                  a read of the store for a fault or readahead
 *   fill_done    file, ino, off, len, res
 *   dirty        file, ino, pgoff, tid, bt            a clean page became dirty (bt: backtrace id or 0)
 *   protect      file, ino, pgoff, pages, calls       pages write-protected in every mapping (I1 step 1)
 *   clean        file, ino, pgoff, pages, how         PG_DIRTY cleared: how 0, for write-back (I1
 *                                                     step 2); 1, UPC_ADV_FREE dropped the data; 2,
 *                                                     not cleared: written while pinned UPC_PIN_WRITE;
 *                                                     3, truncated; 4, not cleared: a clean page
 *                                                     written in a gap between dirty ones (writeback.c)
 *   wb_submit    file, ino, off, len                  a write-back I/O, before it is submitted (step 3)
 *   wb_done      file, ino, off, len, res             ... completed and PG_WRITEBACK cleared
 *   teardown     file, ino, pgoff, ranges, pages      PTEs torn down (reclaim batch, DONTNEED)
 *   unmap        file, ino, pgoff, pages              upc_unmap() of a mapping
 *   evict        file, ino, pgoff, pages              pages punched out of the cache
 *   pin / unpin  file, ino, pgoff, pages[, flags]
 *   error        what, err, file, ino, off            what: a static string
 *   backtrace    id, tid, nframes, ips                UPC_DEBUG=dirty-backtrace: the writer's stack
 *   file_release file, ino                            the cache forgets a file (destroy)
 */
#ifndef UPC_USDT_H
#define UPC_USDT_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>

/* fault kinds (the "kind" argument) */
#define UPC_FAULT_MISSING	0
#define UPC_FAULT_WP		1
#define UPC_FAULT_MINOR		2
#define UPC_FAULT_WRITE		0x100	/* or-ed in: a write fault */

/* clean's "how" */
#define UPC_CLEAN_WRITEBACK	0	/* PG_DIRTY cleared, PG_WRITEBACK set */
#define UPC_CLEAN_LAZYFREE	1	/* UPC_ADV_FREE: dirty data dropped */
#define UPC_CLEAN_PINNED	2	/* UPC_PIN_WRITE: PG_WRITEBACK set, stays dirty and writable */
#define UPC_CLEAN_TRUNCATE	3	/* truncated or punched out: dirty data dropped with the page */
#define UPC_CLEAN_GAP		4	/* not cleaned: a clean page written between dirty ones, PG_WRITEBACK set */

#define UPC_PROBE_LIST(X) \
	X(fault) X(fault_done) X(fill_submit) X(fill_done) X(dirty) X(protect) X(clean) \
	X(wb_submit) X(wb_done) X(teardown) X(unmap) X(evict) X(pin) X(unpin) X(error) \
	X(backtrace) X(file_release)

#if defined(HAVE_SYS_SDT_H) && !defined(UPC_NO_USDT)
#define _SDT_HAS_SEMAPHORES 1
#define SDT_USE_VARIADIC 1
#include <sys/sdt.h>

#define UPC_PROBE_SEMA(name) upcache_##name##_semaphore
#define UPC_PROBE_DECLARE(name) \
	extern volatile unsigned short UPC_PROBE_SEMA(name) __attribute__((visibility("hidden")));
UPC_PROBE_LIST(UPC_PROBE_DECLARE)
#undef UPC_PROBE_DECLARE

#define UPC_PROBE(name, ...)		STAP_PROBEV(upcache, name, ##__VA_ARGS__)
#define UPC_PROBE_ENABLED(name)		__builtin_expect(UPC_PROBE_SEMA(name) != 0, 0)
#define UPC_HAVE_USDT			1
#else
#define UPC_PROBE(name, ...)		do { } while (0)
#define UPC_PROBE_ENABLED(name)		0
#define UPC_HAVE_USDT			0
#endif

/* Fire probe @name where the step happens (see above). */
#define UPC_TRACE(name, ...) do {						\
	if (UPC_PROBE_ENABLED(name))						\
		__upc_trace_##name(__VA_ARGS__);				\
} while (0)

/* The dirty probe, on a clean -> dirty transition only: use just before page_set_dirty(). */
#define trace_dirty(f, pg, pgoff, tid, bt) do {					\
	if (UPC_PROBE_ENABLED(dirty) && !((pg)->flags & PG_DIRTY))		\
		__upc_trace_dirty((f), (pgoff), (tid), (bt));			\
} while (0)

struct upc_file;
#define UPC_TRACE_FN __attribute__((visibility("hidden"), noinline, cold))
UPC_TRACE_FN void __upc_trace_fault(struct upc_file *f, uint64_t pgoff, uintptr_t addr, unsigned int kind,
				    uint32_t tid);
UPC_TRACE_FN void __upc_trace_fault_done(struct upc_file *f, uint64_t pgoff, unsigned int kind, long result);
UPC_TRACE_FN void __upc_trace_fill_submit(struct upc_file *f, uint64_t off, uint64_t len);
UPC_TRACE_FN void __upc_trace_fill_done(struct upc_file *f, uint64_t off, uint64_t len, long res);
UPC_TRACE_FN void __upc_trace_dirty(struct upc_file *f, uint64_t pgoff, uint32_t tid, uint64_t bt);
UPC_TRACE_FN void __upc_trace_protect(struct upc_file *f, uint64_t pgoff, uint64_t pages, unsigned int calls);
UPC_TRACE_FN void __upc_trace_clean(struct upc_file *f, uint64_t pgoff, uint64_t pages, int how);
UPC_TRACE_FN void __upc_trace_wb_submit(struct upc_file *f, uint64_t off, uint64_t len);
UPC_TRACE_FN void __upc_trace_wb_done(struct upc_file *f, uint64_t off, uint64_t len, long res);
UPC_TRACE_FN void __upc_trace_teardown(struct upc_file *f, uint64_t pgoff, uint64_t ranges, uint64_t pages);
UPC_TRACE_FN void __upc_trace_unmap(struct upc_file *f, uint64_t pgoff, uint64_t pages);
UPC_TRACE_FN void __upc_trace_evict(struct upc_file *f, uint64_t pgoff, uint64_t pages);
UPC_TRACE_FN void __upc_trace_pin(struct upc_file *f, uint64_t pgoff, uint64_t pages, unsigned int flags);
UPC_TRACE_FN void __upc_trace_unpin(struct upc_file *f, uint64_t pgoff, uint64_t pages);
UPC_TRACE_FN void __upc_trace_error(const char *what, int err, struct upc_file *f, uint64_t off);
UPC_TRACE_FN void __upc_trace_file_release(struct upc_file *f);

#endif /* UPC_USDT_H */
