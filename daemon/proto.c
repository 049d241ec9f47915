/* SPDX-License-Identifier: MIT */
/*
 * proto.c - framing and checking of the client/daemon messages (proto.h).
 * Both sides link it; the daemon trusts nothing that upc_msg_parse() did
 * not check, and checks the meaning of each argument where it uses it
 * (the engine's own argument checks, as for an embedded call).
 */
#define _GNU_SOURCE
#include "proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/*
 * What each type carries: its arguments (exactly), its data (at most
 * @maxdata bytes), its descriptors (exactly), and who sends it.
 */
static const struct msg_rule {
	const char *name;
	uint8_t argc, nfds, from;
	uint32_t maxdata;
} rules[UPC_MSG_TYPE_MAX] = {
	[UPC_MSG_HELLO]		= { "hello", 3, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_ATTACH]	= { "attach", 0, 3, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_MAP]		= { "map", 3, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_MAP_DONE]	= { "map-done", 5, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_UNMAP]		= { "unmap", 2, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_MSYNC]		= { "msync", 3, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_PROTECT]	= { "protect", 3, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_PIN]		= { "pin", 3, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_UNPIN]		= { "unpin", 2, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_ADVISE]	= { "advise", 3, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_PREAD]		= { "pread", 2, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_PWRITE]	= { "pwrite", 1, 1, UPC_FROM_CLIENT, UPC_PROTO_MAX_DATA },
	[UPC_MSG_FTRUNCATE]	= { "ftruncate", 1, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_FALLOCATE]	= { "fallocate", 3, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_FSYNC]		= { "fsync", 1, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_INVALIDATE]	= { "invalidate", 2, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_STATS]		= { "stats", 0, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_DROP]		= { "drop", 1, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_STATUS]	= { "status", 0, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_ADOPT]		= { "adopt", 4, 3, UPC_FROM_CLIENT, 0 },
	/* a reply's descriptor count varies (a map's reply has the memfd): checked below */
	[UPC_MSG_REPLY]		= { "reply", 1, 0, UPC_FROM_DAEMON, UPC_PROTO_MAX_DATA },
	[UPC_MSG_CALL]		= { "call", 4, 0, UPC_FROM_DAEMON, 0 },
	[UPC_MSG_CALL_DONE]	= { "call-done", 1, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_RELAY]		= { "relay", 1, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_MAP_CLEAR]	= { "map-clear", 2, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_PWRITE_FD]	= { "pwrite-fd", 2, 2, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_CLIENTS]	= { "clients", 1, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_SYNC]		= { "sync", 1, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_RECLAIM]	= { "reclaim", 0, 1, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_ZAP]		= { "zap", 2, 0, UPC_FROM_DAEMON, UPC_PROTO_MAX_DATA - 16 },
	[UPC_MSG_ZAP_DONE]	= { "zap-done", 1, 0, UPC_FROM_CLIENT, 0 },
	[UPC_MSG_ONCE]		= { "once", 0, 0, UPC_FROM_CLIENT, 0 },
};

const char *upc_msg_name(unsigned int type)
{
	return type < UPC_MSG_TYPE_MAX && rules[type].name ? rules[type].name : "unknown";
}

int upc_msg_parse(struct upc_msg *m, const void *buf, size_t len, unsigned int nfds, int from)
{
	const struct msg_rule *r;
	struct upc_msg_hdr h;
	size_t alen;

	if (len < sizeof(h))
		return -EPROTO;
	memcpy(&h, buf, sizeof(h));
	if (h.magic != UPC_PROTO_MAGIC)
		return -EPROTO;
	if (h.version != UPC_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (h.type == 0 || h.type >= UPC_MSG_TYPE_MAX || h.flags || h.len != len - sizeof(h) ||
	    h.nfds != nfds || nfds > UPC_PROTO_MAX_FDS)
		return -EPROTO;
	r = &rules[h.type];
	if (!(r->from & from) || h.argc > UPC_PROTO_MAX_ARGS)
		return -EPROTO;
	/* A reply carries its result and up to the maximum of arguments; a map's reply, two descriptors. */
	if (h.type == UPC_MSG_REPLY ? h.argc < 1 || nfds > 2 : h.argc != r->argc || nfds != r->nfds)
		return -EPROTO;
	alen = (size_t)h.argc * 8;
	if (h.len < alen || h.len - alen > r->maxdata)
		return -EPROTO;
	m->h = h;
	memcpy(m->args, (const unsigned char *)buf + sizeof(h), alen);
	m->data = (const unsigned char *)buf + sizeof(h) + alen;
	m->dlen = h.len - alen;
	return 0;
}

int upc_msg_send(int sock, uint16_t type, uint64_t seq, const uint64_t *args, unsigned int argc,
		 const void *data, size_t dlen, const int *fds, unsigned int nfds)
{
	return upc_msg_send_flags(sock, type, seq, args, argc, data, dlen, fds, nfds, 0);
}

int upc_msg_send_flags(int sock, uint16_t type, uint64_t seq, const uint64_t *args, unsigned int argc,
		       const void *data, size_t dlen, const int *fds, unsigned int nfds, int flags)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * UPC_PROTO_MAX_FDS)];
	} ctl;
	struct upc_msg_hdr h = {
		.magic = UPC_PROTO_MAGIC,
		.version = UPC_PROTO_VERSION,
		.type = type,
		.argc = (uint8_t)argc,
		.nfds = (uint8_t)nfds,
		.seq = seq,
	};
	struct iovec iov[3] = {
		{ &h, sizeof(h) },
		{ (void *)args, (size_t)argc * 8 },
		{ (void *)data, dlen },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
	ssize_t n;

	if (argc > UPC_PROTO_MAX_ARGS || dlen > UPC_PROTO_MAX_DATA || nfds > UPC_PROTO_MAX_FDS)
		return -EMSGSIZE;
	h.len = (uint32_t)(argc * 8 + dlen);
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -EPIPE : -errno;
	return n == (ssize_t)(sizeof(h) + h.len) ? 0 : -EIO;
}

void upc_msg_close_fds(struct upc_msg *m)
{
	for (unsigned int i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0) {
			close(m->fds[i]);
			m->fds[i] = -1;
		}
	m->nfds = 0;
}

int upc_msg_recv(int sock, struct upc_msg *m, int from)
{
	union {
		struct cmsghdr align;
		/* room for more than the protocol allows, so that extra ones are seen and closed */
		char buf[CMSG_SPACE(sizeof(int) * 16)];
	} ctl;
	struct iovec iov = { m->buf, sizeof(m->buf) };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	bool bad = false;
	ssize_t n;
	int ret;

	m->nfds = 0;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -ECONNRESET : -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
			bad = true;
			continue;
		}
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (m->nfds < UPC_PROTO_MAX_FDS)
				m->fds[m->nfds++] = fd;
			else {
				close(fd);
				bad = true;
			}
		}
	}
	if (n == 0 && !m->nfds)
		return -ECONNRESET;
	if (bad || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		upc_msg_close_fds(m);
		return -EPROTO;
	}
	ret = upc_msg_parse(m, m->buf, (size_t)n, m->nfds, from);
	if (ret < 0)
		upc_msg_close_fds(m);
	return ret;
}

const char *upc_socket_path(const char *path, char *buf, size_t len)
{
	const char *env = getenv("UPC_SOCKET"), *run = getenv("XDG_RUNTIME_DIR");

	if (path && *path)
		snprintf(buf, len, "%s", path);
	else if (env && *env)
		snprintf(buf, len, "%s", env);
	else if (geteuid() == 0)
		snprintf(buf, len, "%s", UPC_SOCKET_DEFAULT);
	else if (run && *run)
		snprintf(buf, len, "%s/upcd.sock", run);
	else
		snprintf(buf, len, "/tmp/upcd-%u.sock", (unsigned int)geteuid());
	return buf;
}
