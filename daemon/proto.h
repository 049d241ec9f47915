/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the protocol between a client library and upcd (upcd(8),
 * PROTOCOL).  Compiled into both sides: this is the seam a reader crosses
 * from the address spaces (a client: its mappings, its userfaultfd) to the
 * page cache (the daemon: files, pages, write-back, reclaim).
 *
 * Transport: a SOCK_SEQPACKET Unix socket, so that one message is one
 * datagram, its descriptors (SCM_RIGHTS) arrive with it and a truncated
 * one is seen (MSG_TRUNC, MSG_CTRUNC).  Every message is a fixed header,
 * then @argc 64-bit arguments, then @len - 8 * @argc bytes of data:
 *
 *	struct upc_msg_hdr | uint64_t args[argc] | data
 *
 * The header says how long the rest is and how many descriptors came
 * with it; upc_msg_parse() checks both against what arrived, and checks
 * each type against the table in proto.c (argument count, data length,
 * descriptor count, who may send it).  A message that fails any check is
 * a protocol error: the daemon answers it with -EPROTO and disconnects
 * that client only.
 *
 * One request is in flight on a connection at a time.  While the daemon
 * serves it, it may call back into the client (UPC_MSG_CALL: an operation
 * only the process that owns an address space can do on it, munmap,
 * mprotect, madvise); the client answers each call before it reads the
 * reply to its request.
 *
 * The reclaim channel is the one thing the daemon asks unbidden: evicting
 * a page that a client maps writable under asynchronous tracking needs
 * that client to zap its own PTEs first (try_to_unmap, which only the
 * owner of an mm can do from user space: remote.c), at a time of the
 * daemon's choosing.  So a client hands the daemon one end of a socket
 * pair of its own (UPC_MSG_RECLAIM), and a thread of the client answers
 * each UPC_MSG_ZAP on it with UPC_MSG_ZAP_DONE, whatever its requests do.
 * Each range names the memfd and the file page it is meant for, and the
 * client zaps only where it still maps that: an address may have been
 * unmapped and mapped again since the daemon looked.  A daemon that has no
 * such channel does not say UPC_DAEMON_F_RECLAIM at hello, and is asked
 * for none.
 */
#ifndef UPC_PROTO_H
#define UPC_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define UPC_PROTO_MAGIC		0x31435055u	/* "UPC1", little-endian */
#define UPC_PROTO_VERSION	1u
#define UPC_PROTO_MAX_ARGS	8u
#define UPC_PROTO_MAX_DATA	(64u << 10)	/* data bytes a message carries */
#define UPC_PROTO_MAX_FDS	3u
#define UPC_PROTO_MAX_WRITE	(0x7fffffffu & ~4095u)	/* a PWRITE_FD's length at most: the kernel's MAX_RW_COUNT */
#define UPC_PROTO_MAX_MSG	(sizeof(struct upc_msg_hdr) + 8 * UPC_PROTO_MAX_ARGS + UPC_PROTO_MAX_DATA)
#define UPC_SOCKET_DEFAULT	"/run/upcd.sock"

struct upc_msg_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;		/* enum upc_msg_type */
	uint32_t len;		/* bytes after the header: 8 * argc + data */
	uint8_t argc;		/* 64-bit arguments */
	uint8_t nfds;		/* descriptors sent with it */
	uint16_t flags;		/* none defined: must be 0 */
	uint64_t seq;		/* a request's number; its reply and calls carry it */
};

enum upc_msg_type {
	/* client -> daemon, requests (the daemon replies UPC_MSG_REPLY) */
	UPC_MSG_HELLO = 1,	/* args: version, cache flags, mem_limit; reply args: version, uffd features, track mode,
				 * and since the reclaim channel, the daemon's features (UPC_DAEMON_F_*) */
	UPC_MSG_ATTACH,		/* fds: userfaultfd, /proc/self/pagemap, pidfd */
	UPC_MSG_MAP,		/* fd: the file; args: offset, length, prot;
				 * reply fds: the memfd, the page-table memfd; args: token, max prot */
	UPC_MSG_MAP_DONE,	/* args: token, addr, length, prot, flags; token 0 .. ; addr 0: abandon */
	UPC_MSG_UNMAP,		/* args: addr, length */
	UPC_MSG_MSYNC,		/* args: addr, length, flags */
	UPC_MSG_PROTECT,	/* args: addr, length, prot */
	UPC_MSG_PIN,		/* args: addr, length, flags */
	UPC_MSG_UNPIN,		/* args: addr, length */
	UPC_MSG_ADVISE,		/* args: addr, length, advice */
	UPC_MSG_PREAD,		/* fd; args: length (<= MAX_DATA), offset; reply data */
	UPC_MSG_PWRITE,		/* fd; args: offset; data */
	UPC_MSG_FTRUNCATE,	/* fd; args: length */
	UPC_MSG_FALLOCATE,	/* fd; args: mode, offset, length */
	UPC_MSG_FSYNC,		/* fd; args: datasync */
	UPC_MSG_INVALIDATE,	/* fd; args: offset, length */
	UPC_MSG_STATS,		/* reply data: struct upc_stats */
	UPC_MSG_DROP,		/* args: flags */
	UPC_MSG_STATUS,		/* upcctl: reply data: text */
	UPC_MSG_ADOPT,		/* a mapping of an earlier daemon's: fds: the file, the memfd, the page-table
				 * memfd; args: addr, length, page offset, prot */
	/* daemon -> client */
	UPC_MSG_REPLY,		/* args: result (negative errno or a value), then the request's */
	UPC_MSG_CALL,		/* args: op, addr, length, arg: do it on your address space */
	/* client -> daemon, the answer to a call */
	UPC_MSG_CALL_DONE,	/* args: result */
	/* client -> daemon, requests added later (at the end: the numbers above stay) */
	UPC_MSG_RELAY,		/* after attach; args: the library's relay signal or 0 (sigbus.c) */
	UPC_MSG_MAP_CLEAR,	/* args: addr, length: forget this client's mappings there (UPC_MAP_FIXED) */
	UPC_MSG_PWRITE_FD,	/* fds: the file, a sealed memfd holding the data; args: offset, length */
	/* client -> daemon, administrative (upcctl daemon; the admin only: upcd(8)) */
	UPC_MSG_CLIENTS,	/* args: first (skip that many); reply args: total; data: struct upc_client_info[] */
	UPC_MSG_SYNC,		/* args: flags (0); reply args: files written back, pages held by pins */
	/* the reclaim channel (upcd(8), "Memory"): a client asks the daemon to open one after attach */
	UPC_MSG_RECLAIM,	/* client -> daemon request; fd: its end of a SOCK_SEQPACKET socketpair */
	UPC_MSG_ZAP,		/* daemon -> client, on the channel: zap your PTEs of these ranges
				 * (MADV_DONTNEED); args: the memfd's st_dev, st_ino; data:
				 * { addr, length, file page at addr } triples, 64-bit each */
	UPC_MSG_ZAP_DONE,	/* client -> daemon, on the channel, the ZAP's seq; args: result */
	/*
	 * client -> daemon request, after attach, to a daemon that says
	 * UPC_DAEMON_F_ONCE: this client numbers its requests so that one that
	 * changes a file (PWRITE, PWRITE_FD, FTRUNCATE, FALLOCATE) and is sent
	 * again, with its number, to this or a later daemon, is applied once
	 * (numbers start at random, never repeat, are never 0)
	 */
	UPC_MSG_ONCE,
	UPC_MSG_TYPE_MAX
};

/* The daemon's features, the fourth argument of HELLO's reply. */
#define UPC_DAEMON_F_RECLAIM	0x1u	/* it takes a reclaim channel (UPC_MSG_RECLAIM) */
#define UPC_DAEMON_F_ONCE	0x2u	/* it applies a numbered request once (UPC_MSG_ONCE) */
#define UPC_ZAP_TRIPLE		24u	/* bytes of one range of a UPC_MSG_ZAP */

/* UPC_MSG_CALL operations. */
enum upc_call_op {
	UPC_CALL_MUNMAP = 1,
	UPC_CALL_MPROTECT,	/* arg: prot */
	UPC_CALL_MADVISE,	/* arg: advice */
	UPC_CALL_PLACEHOLD,	/* an inaccessible anonymous placeholder over the range (UPC_MAP_FIXED) */
	UPC_CALL_OP_MAX
};

/*
 * One client in UPC_MSG_CLIENTS's reply, fixed size so that a reply holds
 * UPC_CLIENTS_PER_MSG of them; upcctl asks again from where the last
 * reply ended while it gets fewer than the total.
 */
struct upc_client_info {
	int32_t pid;
	uint32_t uid;
	char comm[16];			/* /proc/PID/comm at the time of the reply, NUL-terminated */
	uint64_t mappings;
	uint64_t map_bytes;		/* the bytes its mappings span */
	uint64_t pinned;		/* pages its pins hold (PIN minus UNPIN, per page per pin) */
	uint64_t faults;		/* faults served in its mappings */
	uint64_t requests;		/* requests served on its connection */
	uint32_t attached;		/* 1: an address space (a cache); 0: upcctl or a client before attach */
	uint32_t reclaim;		/* its reclaim channel: UPC_RECLAIM_* (was padding, 0) */
};

/* upc_client_info.reclaim: may the daemon evict what the client maps writable (--async)? */
enum {
	UPC_RECLAIM_NONE,		/* no channel (synchronous tracking needs none): as HELD if --async */
	UPC_RECLAIM_OK,			/* asked, and answers */
	UPC_RECLAIM_RESTING,		/* answered slowly or with an error: not asked for a while */
	UPC_RECLAIM_HELD,		/* did not answer: evicted from under it for the rest of the connection */
};

#define UPC_CLIENTS_PER_MSG	(UPC_PROTO_MAX_DATA / sizeof(struct upc_client_info))

struct upc_msg {
	struct upc_msg_hdr h;
	uint64_t args[UPC_PROTO_MAX_ARGS];
	const unsigned char *data;	/* into @buf */
	size_t dlen;
	int fds[UPC_PROTO_MAX_FDS];
	unsigned int nfds;
	unsigned char buf[UPC_PROTO_MAX_MSG];
};

#define UPC_FROM_CLIENT	0x1
#define UPC_FROM_DAEMON	0x2

/*
 * Parse and check @len bytes that arrived as one message with @nfds
 * descriptors, as sent by @from (UPC_FROM_*).  Fills @m (args, data)
 * except its descriptors.  Returns 0 or -EPROTO (-EPROTONOSUPPORT for a
 * version this side does not speak).  Pure: no system call, no
 * allocation (the fuzz target calls it on anything).
 */
int upc_msg_parse(struct upc_msg *m, const void *buf, size_t len, unsigned int nfds, int from);

/*
 * Send one message.  Returns 0 or a negative errno (-EPIPE: the peer is
 * gone; -EMSGSIZE: too big for the protocol).
 */
int upc_msg_send(int sock, uint16_t type, uint64_t seq, const uint64_t *args, unsigned int argc,
		 const void *data, size_t dlen, const int *fds, unsigned int nfds);

/* The same, with sendmsg(2) @flags added (MSG_DONTWAIT). */
int upc_msg_send_flags(int sock, uint16_t type, uint64_t seq, const uint64_t *args, unsigned int argc,
		       const void *data, size_t dlen, const int *fds, unsigned int nfds, int flags);

/*
 * Receive one message into @m, from a peer of kind @from, checked by
 * upc_msg_parse().  Returns 0, -ECONNRESET at end of stream, -EPROTO for
 * a message that fails a check (its descriptors are closed), or another
 * negative errno.  The descriptors received are the caller's.
 */
int upc_msg_recv(int sock, struct upc_msg *m, int from);

/* Close the descriptors of @m that the caller did not take (set to -1). */
void upc_msg_close_fds(struct upc_msg *m);

const char *upc_msg_name(unsigned int type);

/*
 * The daemon's socket: @path if given, else $UPC_SOCKET, else the
 * default: /run/upcd.sock for root, $XDG_RUNTIME_DIR/upcd.sock (or
 * /tmp/upcd-UID.sock) for anyone else.  Written into @buf.
 */
const char *upc_socket_path(const char *path, char *buf, size_t len);

#endif /* UPC_PROTO_H */
