/* SPDX-License-Identifier: MIT */
/*
 * stats-shm.h - the layout of /dev/shm/upcache.<pid>.<n>, where each cache
 * publishes its counters for upcctl stats and upcctl top (publish.c writes
 * it, tools/upcctl.c maps it read-only).  Not a public API: upcctl and the
 * library come from the same build; the version field says when they do not.
 *
 * Consistency is a seqlock: the writer makes @seq odd, writes, makes it even
 * again; a reader copies the whole file and retries while @seq was odd or
 * changed under it.
 */
#ifndef UPC_STATS_SHM_H
#define UPC_STATS_SHM_H

#include <stdint.h>

#include "upcache.h"

#define UPC_SHM_DIR		"/dev/shm"
#define UPC_SHM_PREFIX		"upcache."
#define UPC_SHM_MAGIC		0x31304d4853435055ULL	/* "UPCSHM01" */
#define UPC_SHM_VERSION		5	/* 2: struct upc_stats has wb_gap_pages; 3: evictions_undone; 4: zap_wait_ms;
					 * 5: dirty_wait_ms */
#define UPC_SHM_FILES		64	/* files listed, the most cached first */
#define UPC_SHM_BTS		32	/* dirty backtraces listed, newest first */
#define UPC_BT_FRAMES		16
#define UPC_BT_SYM		96
#define UPC_BT_SLOTS		64	/* backtraces kept in the process (debug.c) */

struct upc_shm_file {
	uint64_t dev, ino;
	uint64_t size;			/* bytes, as last seen */
	uint64_t cached, dirty, writeback, pinned, active;	/* pages */
	uint32_t mappings;		/* in this process */
	uint32_t pad;
	char path[256];			/* "" if unknown */
};

struct upc_shm_bt {
	uint64_t id;			/* the id the "dirty" probe carried */
	uint64_t dev, ino, pgoff;	/* the page */
	uint64_t when_ms;		/* CLOCK_REALTIME, ms */
	uint32_t tid;			/* the writing thread */
	uint32_t nframes;
	uint64_t ips[UPC_BT_FRAMES];
	char sym[UPC_BT_FRAMES][UPC_BT_SYM];	/* "function+0xoff (object)" */
};

struct upc_shm {
	uint64_t magic;
	uint32_t version;
	uint32_t size;			/* sizeof(struct upc_shm) */
	_Atomic uint64_t seq;		/* odd while being written */
	int32_t pid;
	uint32_t cache_no;		/* <n> in the file name */
	uint64_t created_ms, updated_ms;	/* CLOCK_REALTIME, ms */
	uint32_t debug;			/* $UPC_DEBUG flags in force */
	uint32_t flags;			/* upc_cache_opts.flags */
	uint64_t ra_hits;		/* faults that continued a readahead window */
	struct upc_stats st;		/* as upc_stats() would return it (no async collection) */
	uint32_t nr_files;		/* files in the cache (may exceed UPC_SHM_FILES) */
	uint32_t nr_files_listed;
	uint32_t nr_bts;
	uint32_t pad;
	struct upc_shm_file files[UPC_SHM_FILES];
	struct upc_shm_bt bts[UPC_SHM_BTS];
};

#endif /* UPC_STATS_SHM_H */
