/* SPDX-License-Identifier: MIT */
/*
 * fuzz-seeds.c - the seed corpus of fuzz-proto.c: one valid message of
 * every type, as its sender sends it (the argument and descriptor counts
 * of proto.c's table), with a few data lengths where a type carries data,
 * and a message of the next version.  Each is written to DIR/<name>, in
 * fuzz-proto.c's input format: the context byte (descriptor count, sender),
 * then the message.  Every seed but the version one is checked with
 * upc_msg_parse() here, so that a seed the parser refuses (the table
 * changed) fails the build of the corpus instead of seeding nothing.
 *
 * usage: fuzz-seeds DIR
 */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct seed {
	const char *name;
	uint16_t type;
	uint8_t argc, nfds;
	uint32_t dlen;
} seeds[] = {
	{ "hello", UPC_MSG_HELLO, 3, 0, 0 },
	{ "attach", UPC_MSG_ATTACH, 0, 3, 0 },
	{ "map", UPC_MSG_MAP, 3, 1, 0 },
	{ "map-done", UPC_MSG_MAP_DONE, 5, 0, 0 },
	{ "unmap", UPC_MSG_UNMAP, 2, 0, 0 },
	{ "msync", UPC_MSG_MSYNC, 3, 0, 0 },
	{ "protect", UPC_MSG_PROTECT, 3, 0, 0 },
	{ "pin", UPC_MSG_PIN, 3, 0, 0 },
	{ "unpin", UPC_MSG_UNPIN, 2, 0, 0 },
	{ "advise", UPC_MSG_ADVISE, 3, 0, 0 },
	{ "pread", UPC_MSG_PREAD, 2, 1, 0 },
	{ "pwrite-0", UPC_MSG_PWRITE, 1, 1, 0 },
	{ "pwrite-17", UPC_MSG_PWRITE, 1, 1, 17 },
	{ "pwrite-4096", UPC_MSG_PWRITE, 1, 1, 4096 },
	{ "pwrite-max", UPC_MSG_PWRITE, 1, 1, UPC_PROTO_MAX_DATA },
	{ "ftruncate", UPC_MSG_FTRUNCATE, 1, 1, 0 },
	{ "fallocate", UPC_MSG_FALLOCATE, 3, 1, 0 },
	{ "fsync", UPC_MSG_FSYNC, 1, 1, 0 },
	{ "invalidate", UPC_MSG_INVALIDATE, 2, 1, 0 },
	{ "stats", UPC_MSG_STATS, 0, 0, 0 },
	{ "drop", UPC_MSG_DROP, 1, 0, 0 },
	{ "status", UPC_MSG_STATUS, 0, 0, 0 },
	{ "adopt", UPC_MSG_ADOPT, 4, 3, 0 },
	{ "reply-1", UPC_MSG_REPLY, 1, 0, 0 },
	{ "reply-map", UPC_MSG_REPLY, 3, 2, 0 },
	{ "reply-hello", UPC_MSG_REPLY, 4, 0, 0 },
	{ "reply-status", UPC_MSG_REPLY, 1, 0, 200 },
	{ "reply-max", UPC_MSG_REPLY, UPC_PROTO_MAX_ARGS, 0, UPC_PROTO_MAX_DATA },
	{ "call", UPC_MSG_CALL, 4, 0, 0 },
	{ "call-done", UPC_MSG_CALL_DONE, 1, 0, 0 },
	{ "relay", UPC_MSG_RELAY, 1, 0, 0 },
	{ "map-clear", UPC_MSG_MAP_CLEAR, 2, 0, 0 },
	{ "pwrite-fd", UPC_MSG_PWRITE_FD, 2, 2, 0 },
	{ "clients", UPC_MSG_CLIENTS, 1, 0, 0 },
	{ "sync", UPC_MSG_SYNC, 1, 0, 0 },
	{ "reply-clients", UPC_MSG_REPLY, 2, 0, 3 * sizeof(struct upc_client_info) },
	{ "reply-sync", UPC_MSG_REPLY, 3, 0, 0 },
	{ "reclaim", UPC_MSG_RECLAIM, 0, 1, 0 },
	{ "zap", UPC_MSG_ZAP, 2, 0, 48 },
	{ "zap-max", UPC_MSG_ZAP, 2, 0, UPC_PROTO_MAX_DATA - 16 },
	{ "reply-hello-features", UPC_MSG_REPLY, 5, 0, 0 },
	{ "zap-done", UPC_MSG_ZAP_DONE, 1, 0, 0 },
	{ "once", UPC_MSG_ONCE, 0, 0, 0 },
};

static unsigned char msg[1 + UPC_PROTO_MAX_MSG];

/* The message of @s after the context byte; its length in all. */
static size_t build(const struct seed *s, uint16_t version)
{
	struct upc_msg_hdr h = {
		.magic = UPC_PROTO_MAGIC, .version = version, .type = s->type,
		.len = 8u * s->argc + s->dlen, .argc = s->argc, .nfds = s->nfds, .seq = 42,
	};
	int from = s->type == UPC_MSG_REPLY || s->type == UPC_MSG_CALL || s->type == UPC_MSG_ZAP ? 1 : 0;
	size_t n = 1;

	msg[0] = (unsigned char)(s->nfds | from << 3);
	memcpy(msg + n, &h, sizeof(h));
	n += sizeof(h);
	for (unsigned int i = 0; i < s->argc; i++) {
		/* small values, a page, a negative errno: what real messages hold */
		uint64_t v = i == 0 ? (uint64_t)-EINVAL : i == 1 ? 4096 : i;

		memcpy(msg + n, &v, 8);
		n += 8;
	}
	for (uint32_t i = 0; i < s->dlen; i++)
		msg[n++] = (unsigned char)("status\n"[i % 7]);
	return n;
}

static int put(const char *dir, const char *name, size_t n)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "wb");
	if (!fp || fwrite(msg, 1, n, fp) != n || fclose(fp) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct upc_msg m;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz-seeds DIR\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		const struct seed *s = &seeds[i];
		size_t n = build(s, UPC_PROTO_VERSION);
		int from = msg[0] & 8 ? UPC_FROM_DAEMON : UPC_FROM_CLIENT;
		int ret = upc_msg_parse(&m, msg + 1, n - 1, s->nfds, from);

		if (ret < 0) {
			fprintf(stderr, "fuzz-seeds: %s: the parser refuses it (%s)\n", s->name, strerror(-ret));
			return 1;
		}
		if (put(argv[1], s->name, n) < 0)
			return 1;
	}
	/* the next version: -EPROTONOSUPPORT's path */
	if (put(argv[1], "hello-v2", build(&seeds[0], UPC_PROTO_VERSION + 1)) < 0)
		return 1;
	return 0;
}
