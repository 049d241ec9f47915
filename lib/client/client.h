/* SPDX-License-Identifier: MIT */
/*
 * client.h - what a process that is a client of upcd keeps of its own
 * (client.c), its connection to the daemon (connect.c) and what it serves
 * itself while no daemon runs (takeover.c).  Only those three files see it.
 */
#ifndef UPC_CLIENT_H
#define UPC_CLIENT_H

#include "internal.h"
#include "proto.h"

/*
 * A file this process maps through the daemon, held as the kernel's VMAs
 * hold their struct file: the process's descriptor of the file (a
 * duplicate), the memfd it maps and the page-table memfd, so that a
 * restarted daemon can adopt every mapping of it (reconnect()).  Three
 * descriptors per file, not per mapping.
 */
struct cfile {
	struct cfile *next;
	int refs;			/* mappings (struct crange) */
	dev_t mdev;
	ino_t mino;			/* the memfd's inode: one per file of the daemon */
	int acc;			/* the memfd descriptor's access mode: O_RDONLY for a read-only file */
	int fd, memfd, statefd;
	/* while the daemon is away (takeover.c): this process serves its faults */
	bool taken;			/* its takeover lock is held: see takeover.c */
	int64_t size;			/* the cache's size of the file when the daemon went */
	unsigned char *journal;		/* the takeover journal, mapped (takeover.c, journal_mark) */
	size_t journal_len;
};

struct crange {
	uintptr_t start, end;
	uint64_t pgoff;			/* file page at @start */
	int prot;			/* every protection it had: a write-protected range stays one */
	int cur_prot;			/* its protection now (upc_protect): a forked child maps it so */
	uint64_t gen;			/* the connection (upc_client @gen) whose daemon knows it */
	bool placeheld;			/* a forked child's copy: its address is held for it */
	bool nozap;			/* kept whole over a hole (cmaps_cut out of memory): zap_serve refuses it */
	struct cfile *file;
};

enum client_state {
	CL_UP,				/* connected */
	CL_DOWN,			/* the daemon went away: reconnecting */
	CL_DEAD,			/* gave up: the mappings are inaccessible */
};

struct upc_client {
	int sock;
	_Atomic int uffd;
	uint64_t features;		/* what our userfaultfd was opened with */
	uint64_t daemon_features;	/* what the daemon said at hello */
	uint64_t daemon_flags;		/* UPC_DAEMON_F_*, from the last hello */
	uint32_t track_mode;
	uint64_t cache_flags, mem_limit;
	char path[108];			/* the daemon's socket */
	unsigned int reconnect_ms;	/* how long to wait for a daemon to come back; 0: not at all */
	/*
	 * One request at a time, and the connection's state: a request waits
	 * on @up while the daemon is away, and is sent again on the new
	 * connection (request_fds).
	 */
	pthread_mutex_t lock;
	pthread_cond_t up;
	enum client_state state;
	uint64_t gen;			/* connections so far: a token of a map is the connection's */
	uint64_t seq;
	bool call_unmapped;		/* the request in flight had this process munmap (answer_call) */
	bool stop_at_call;		/* UPC_DEBUG=stop-at-call (debug.c): tests only */
	bool no_zaps;			/* UPC_DEBUG=no-zaps (debug.c): tests only */
	bool slow_zaps;			/* UPC_DEBUG=slow-zaps (debug.c): tests only */
	struct upc_msg *msg;
	/* this process's mappings of the cache, for the daemon's death */
	pthread_mutex_t maps_lock;
	struct crange *maps;
	size_t nmaps, cap;
	struct cfile *files;
	pthread_t watcher;
	int watch_efd;
	/*
	 * The reclaim channel (asynchronous tracking): our end of the socket
	 * pair whose other end the daemon holds (UPC_MSG_RECLAIM), on which
	 * the watcher thread zaps what the daemon's reclaim asks (zap_serve).
	 * Written by whoever connects (before the watcher runs, or the watcher
	 * itself at a reconnect), read by the watcher.  -1: none.
	 */
	int zap_sock;
	struct upc_msg *zap_msg;
	uint64_t down_deadline;		/* ms: a request waits for a daemon until then (request_fds) */
	/*
	 * Takeover (takeover.c): while no daemon serves this process, it
	 * serves its own faults on the files whose takeover lock it holds.
	 * @to_lock: taken shared by a call served here (msync, fsync, unmap),
	 * exclusively to begin and to end it.
	 */
	pthread_rwlock_t to_lock;
	_Atomic bool to_active;
	_Atomic bool to_stop;		/* the takeover thread is to stop (takeover_end) */
	pthread_t to_thread;
	int to_efd;
	pthread_mutex_t to_wb;		/* one write-back at a time in this process */
	uintptr_t *poisoned;		/* addresses refused past end of file, zapped at the end */
	size_t npoisoned, poison_cap;
	/*
	 * This process's pins, as the daemon holds them (client.c, "Pins
	 * across a restart"): ranges of file pages [start, end) of the file
	 * whose memfd is @mdev/@mino, with a count and the flags of their
	 * pins, sorted by file and page, disjoint.  Under @lock.
	 */
	struct cpin {
		uint64_t mdev, mino;
		uint64_t start, end;
		uint32_t count, flags;
	} *pins;
	size_t npins;
	struct upc_client *next;	/* every shared cache of the process (the fork handlers) */
};


/* takeover.c */
__upc_hidden int takeover_begin(struct upc_client *cl);
__upc_hidden void takeover_end(struct upc_client *cl);
__upc_hidden bool takeover_msync(struct upc_client *cl, uintptr_t addr, size_t len, int flags, int *ret);
__upc_hidden bool takeover_fsync(struct upc_client *cl, int fd, bool datasync, int *ret);
__upc_hidden bool takeover_unmap(struct upc_client *cl, uintptr_t addr, size_t len, int *ret);
__upc_hidden void takeover_init(struct upc_client *cl);
__upc_hidden void takeover_fini(struct upc_client *cl);
extern __thread bool takeover_bypass __attribute__((visibility("hidden")));

/* client.c, for takeover.c */
__upc_hidden void cmaps_cut(struct upc_client *cl, uintptr_t start, uintptr_t end);
__upc_hidden struct crange *cmaps_at(struct upc_client *cl, uintptr_t addr);
__upc_hidden void cfile_put(struct cfile **list, struct cfile *cf);

/* A reply to a request (client.c, xfer): its arguments, data and descriptors. */
struct creply {
	uint64_t args[UPC_PROTO_MAX_ARGS];
	unsigned int argc;
	void *data;			/* where the reply's data goes */
	size_t dcap, dlen;
	int fd, fd2;
	uint64_t gen;			/* the connection that replied (request_fds) */
};

/* client.c, for connect.c */
__upc_hidden void cmaps_revoke(struct upc_client *cl);
__upc_hidden bool conn_lost(long ret);
__upc_hidden long xfer(struct upc_client *cl, int sock, uint16_t type, const uint64_t *args, unsigned int argc,
		       const void *data, size_t dlen, const int *fds, unsigned int nfds, struct creply *rep);
__upc_hidden long pins_replay(struct upc_client *cl, int sock, uint64_t gen);
/* connect.c: the connection to upcd, and again after it died */
__upc_hidden long client_connect(struct upc_client *cl);
__upc_hidden long adopt_one(struct upc_client *cl, int sock, struct crange *rp, uint64_t gen);

#endif
