/* SPDX-License-Identifier: MIT */
/*
 * upcctl daemon status [--socket PATH]: ask upcd (upcd(8)) for its status
 * and print it.  One UPC_MSG_STATUS on a connection of its own, with no
 * hello and no attach: the daemon answers it at any point (upcd.c,
 * client_main()), so upcctl needs no userfaultfd and no cache.
 *
 * Exit status: 0 printed; 3 no daemon (nothing listens on the socket: the
 * path is missing, or is a socket no one serves), as systemctl and LSB
 * init scripts say "not running"; 1 any other error; 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"
#include "upcctl.h"

#define STATUS_TIMEOUT_S	10	/* a daemon that accepts but never answers */

static const char daemon_usage[] = "usage: upcctl daemon status [--socket PATH]\n";

static int daemon_status(const char *opt_path)
{
	static struct upc_msg m;		/* 64K of buffer: not on the stack */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = STATUS_TIMEOUT_S };
	char path[sizeof(sa.sun_path) + 64];
	int fd, ret;
	int64_t result;

	upc_socket_path(opt_path, path, sizeof(path));
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "upcctl: socket path too long: %s\n", path);
		return 1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("upcctl: socket");
		return 1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;

		close(fd);
		if (err == ENOENT || err == ECONNREFUSED) {
			fprintf(stderr, "upcctl: no upcd is running on %s (%s)\n", path, strerror(err));
			return 3;
		}
		fprintf(stderr, "upcctl: cannot connect to upcd on %s: %s\n", path, strerror(err));
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ret = upc_msg_send(fd, UPC_MSG_STATUS, 1, NULL, 0, NULL, 0, NULL, 0);
	if (ret == 0)
		ret = upc_msg_recv(fd, &m, UPC_FROM_DAEMON);
	close(fd);
	if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
		fprintf(stderr, "upcctl: upcd on %s did not answer within %d s\n", path, STATUS_TIMEOUT_S);
		return 1;
	}
	if (ret == -ECONNRESET || ret == -EPIPE) {
		fprintf(stderr, "upcctl: upcd on %s closed the connection without an answer\n", path);
		return 1;
	}
	if (ret < 0) {
		fprintf(stderr, "upcctl: upcd on %s: %s\n", path, strerror(-ret));
		return 1;
	}
	upc_msg_close_fds(&m);
	if (m.h.type != UPC_MSG_REPLY || m.h.seq != 1) {
		fprintf(stderr, "upcctl: upcd on %s answered with a %s to request %lu, not a reply to 1\n", path,
			upc_msg_name(m.h.type), (unsigned long)m.h.seq);
		return 1;
	}
	result = (int64_t)m.args[0];
	if (result < 0) {
		fprintf(stderr, "upcctl: upcd on %s: status: %s\n", path,
			result >= -4095 ? strerror((int)-result) : "bad result");
		return 1;
	}
	printf("socket %s\n", path);
	if (fwrite(m.data, 1, m.dlen, stdout) != m.dlen || fflush(stdout) != 0) {
		perror("upcctl: stdout");
		return 1;
	}
	return 0;
}

int upcctl_daemon(int argc, char **argv)
{
	const char *path = NULL;

	if (argc < 1 || strcmp(argv[0], "status") != 0) {
		fputs(daemon_usage, stderr);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			path = argv[++i];
		else if (!strncmp(argv[i], "--socket=", 9))
			path = argv[i] + 9;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(daemon_usage, stdout);
			return 0;
		} else {
			fputs(daemon_usage, stderr);
			return 2;
		}
	}
	return daemon_status(path);
}
