/* SPDX-License-Identifier: MIT */
/*
 * fuzz-proto.c - a libFuzzer target for upc_msg_parse() (proto.c), the
 * one function that reads what an untrusted peer sent before anything
 * else looks at it.  Built with clang -fsanitize=fuzzer,address,undefined
 * by "make fuzz" (which runs it for FUZZ_SECONDS on the seeds of
 * fuzz-seeds.c) and by make check (tests/test_fuzz_proto.sh: a short run).
 *
 * Input: one byte of context, then the message as it arrived.
 *   bits 0-2: the descriptor count that came with it (0-7: more than the
 *             protocol allows, too);
 *   bits 3-4: the sender: 0 a client, 1 the daemon, 2 either, 3 neither.
 * The message is copied to a buffer of exactly its size, so that a read
 * past its end is AddressSanitizer's (libFuzzer's own buffer would do,
 * but the context byte in front of it must not be readable as message).
 *
 * On success every promise of proto.h is checked, and the message is
 * built again from what the parser returned (header, arguments, data),
 * which must give back the bytes it came from: nothing was skipped,
 * nothing was read twice.  On failure the result must be -EPROTO or
 * -EPROTONOSUPPORT, the latter only for the right magic and another
 * version.  A broken promise is abort(): a crash libFuzzer reports.
 */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per message type: the sender, as proto.h's enum comments say. */
static int type_from(unsigned int type)
{
	return type == UPC_MSG_REPLY || type == UPC_MSG_CALL || type == UPC_MSG_ZAP ? UPC_FROM_DAEMON : UPC_FROM_CLIENT;
}

/*
 * Per message type: its arguments and descriptors, exactly, as proto.h's
 * comments give them (a second statement of proto.c's table, so that a
 * change of one without the other is found).  A reply: see below.
 */
static const struct {
	uint8_t argc, nfds;
} want[UPC_MSG_TYPE_MAX] = {
	[UPC_MSG_HELLO] = { 3, 0 },	[UPC_MSG_ATTACH] = { 0, 3 },	[UPC_MSG_MAP] = { 3, 1 },
	[UPC_MSG_MAP_DONE] = { 5, 0 },	[UPC_MSG_UNMAP] = { 2, 0 },	[UPC_MSG_MSYNC] = { 3, 0 },
	[UPC_MSG_PROTECT] = { 3, 0 },	[UPC_MSG_PIN] = { 3, 0 },	[UPC_MSG_UNPIN] = { 2, 0 },
	[UPC_MSG_ADVISE] = { 3, 0 },	[UPC_MSG_PREAD] = { 2, 1 },	[UPC_MSG_PWRITE] = { 1, 1 },
	[UPC_MSG_FTRUNCATE] = { 1, 1 },	[UPC_MSG_FALLOCATE] = { 3, 1 },	[UPC_MSG_FSYNC] = { 1, 1 },
	[UPC_MSG_INVALIDATE] = { 2, 1 },	[UPC_MSG_STATS] = { 0, 0 },	[UPC_MSG_DROP] = { 1, 0 },
	[UPC_MSG_STATUS] = { 0, 0 },	[UPC_MSG_ADOPT] = { 4, 3 },	[UPC_MSG_CALL] = { 4, 0 },	[UPC_MSG_CALL_DONE] = { 1, 0 },
	[UPC_MSG_RELAY] = { 1, 0 },	[UPC_MSG_MAP_CLEAR] = { 2, 0 },	[UPC_MSG_PWRITE_FD] = { 2, 2 },
	[UPC_MSG_CLIENTS] = { 1, 0 },	[UPC_MSG_SYNC] = { 1, 0 },	[UPC_MSG_RECLAIM] = { 0, 1 },
	[UPC_MSG_ZAP] = { 2, 0 },	[UPC_MSG_ZAP_DONE] = { 1, 0 },	[UPC_MSG_ONCE] = { 0, 0 },
};

/* Per message type: whether it carries data (pwrite's bytes, a reply's, a zap's ranges). */
static int type_has_data(unsigned int type)
{
	return type == UPC_MSG_PWRITE || type == UPC_MSG_REPLY || type == UPC_MSG_ZAP;
}

#define check(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "fuzz-proto: broken promise: %s (line %d)\n", \
				#cond, __LINE__);                                    \
			abort();                                                     \
		}                                                                    \
	} while (0)

static struct upc_msg m;		/* 64K of buffer: not on the stack */
static unsigned char again[UPC_PROTO_MAX_MSG];

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
	static const int froms[4] = { UPC_FROM_CLIENT, UPC_FROM_DAEMON, UPC_FROM_CLIENT | UPC_FROM_DAEMON, 0 };
	struct upc_msg_hdr h;
	unsigned char *buf;
	unsigned int nfds;
	size_t len, alen;
	int from, ret;

	if (size < 1)
		return 0;
	nfds = in[0] & 7;
	from = froms[(in[0] >> 3) & 3];
	len = size - 1;
	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, in + 1, len);
	memset(&m, 0xa5, sizeof(m));

	ret = upc_msg_parse(&m, buf, len, nfds, from);
	if (ret < 0) {
		check(ret == -EPROTO || ret == -EPROTONOSUPPORT);
		if (ret == -EPROTONOSUPPORT) {
			check(len >= sizeof(h));
			memcpy(&h, buf, sizeof(h));
			check(h.magic == UPC_PROTO_MAGIC && h.version != UPC_PROTO_VERSION);
		}
		free(buf);
		return 0;
	}
	check(ret == 0);

	/* The header it returns is the one that came, and it was checked. */
	check(len >= sizeof(h) && len <= UPC_PROTO_MAX_MSG);
	memcpy(&h, buf, sizeof(h));
	check(memcmp(&h, &m.h, sizeof(h)) == 0);
	check(h.magic == UPC_PROTO_MAGIC && h.version == UPC_PROTO_VERSION && h.flags == 0);
	check(h.type > 0 && h.type < UPC_MSG_TYPE_MAX && strcmp(upc_msg_name(h.type), "unknown") != 0);
	check(type_from(h.type) & from);
	check(h.nfds == nfds && nfds <= UPC_PROTO_MAX_FDS);
	check(h.argc <= UPC_PROTO_MAX_ARGS);
	if (h.type == UPC_MSG_REPLY)	/* its result, then up to the maximum; a map's two memfds */
		check(h.argc >= 1 && nfds <= 2);
	else
		check(h.argc == want[h.type].argc && nfds == want[h.type].nfds);

	/* header + 8 * argc + data is the whole message; the data lies in it, at its end. */
	alen = (size_t)h.argc * 8;
	check(m.dlen <= UPC_PROTO_MAX_DATA);
	check(m.dlen == 0 || type_has_data(h.type));
	check(sizeof(h) + alen + m.dlen == len);
	check((size_t)h.len == alen + m.dlen);
	check(m.data == buf + sizeof(h) + alen);
	check(m.data + m.dlen == buf + len);
	check(memcmp(m.args, buf + sizeof(h), alen) == 0);

	/* The message again, from the parts: the same bytes. */
	memcpy(again, &m.h, sizeof(m.h));
	memcpy(again + sizeof(m.h), m.args, alen);
	if (m.dlen)
		memcpy(again + sizeof(m.h) + alen, m.data, m.dlen);
	check(memcmp(again, buf, len) == 0);

	/* The same input, the same answer (pure: no state kept between calls). */
	check(upc_msg_parse(&m, buf, len, nfds, from) == 0);
	free(buf);
	return 0;
}
