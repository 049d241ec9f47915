/* SPDX-License-Identifier: MIT */
/*
 * upcd-client - a client of upcd for the shell tests of upcctl daemon and
 * upc-trace -p (tests/test_upcctl_daemon_ops.sh, tests/test_trace_upcd.sh):
 *
 *   upcd-client SOCKET FILE PAGES [--write C] [--pin N] [--msync]
 *
 * Creates a UPC_CACHE_SHARED cache on SOCKET, maps PAGES pages of FILE
 * read-write, reads every page (a fault each), with --write C writes byte C
 * at the start of every page, with --pin N pins the first N pages, with
 * --msync msyncs the mapping, then prints "ready" and waits for a line (or
 * the end) on standard input.  Then it exits at once, without msync and
 * without destroying its cache: what it wrote is the daemon's to write back
 * (upcd(8): nothing a dead client wrote is lost).
 *
 * Exit status: 0, 77 when upcache cannot run here, 1 on an error (said on
 * standard error).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>

#include <upcache.h>

int main(int argc, char **argv)
{
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_SHARED);
	struct upc_cache *c;
	long pages, pin = 0, page = sysconf(_SC_PAGESIZE);
	int wr = -1, do_msync = 0, fd, ret;
	volatile unsigned char *p;
	void *addr;
	char line[16];
	unsigned long sum = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: upcd-client SOCKET FILE PAGES [--write C] [--pin N] [--msync]\n");
		return 2;
	}
	pages = atol(argv[3]);
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--write") && i + 1 < argc)
			wr = (unsigned char)argv[++i][0];
		else if (!strcmp(argv[i], "--pin") && i + 1 < argc)
			pin = atol(argv[++i]);
		else if (!strcmp(argv[i], "--msync"))
			do_msync = 1;
		else {
			fprintf(stderr, "upcd-client: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!(upc_probe() & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV | UPC_FEAT_USER_MODE_ONLY))) {
		fprintf(stderr, "upcd-client: no userfaultfd here\n");
		return 77;
	}
	o.socket = argv[1];
	ret = upc_cache_create(&o, &c);
	if (ret < 0) {
		fprintf(stderr, "upcd-client: upc_cache_create: %s\n", upc_strerror(ret));
		return 1;
	}
	fd = open(argv[2], O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	ret = upc_map(c, fd, 0, (size_t)(pages * page), PROT_READ | PROT_WRITE, 0, &addr);
	if (ret < 0) {
		fprintf(stderr, "upcd-client: upc_map: %s\n", upc_strerror(ret));
		return 1;
	}
	p = addr;
	for (long i = 0; i < pages; i++)
		sum += p[i * page];
	if (wr >= 0)
		for (long i = 0; i < pages; i++)
			p[i * page] = (unsigned char)wr;
	if (pin) {
		ret = upc_pin(c, addr, (size_t)(pin * page), 0);
		if (ret < 0) {
			fprintf(stderr, "upcd-client: upc_pin: %s\n", upc_strerror(ret));
			return 1;
		}
	}
	if (do_msync) {
		ret = upc_msync(c, addr, (size_t)(pages * page), UPC_MS_SYNC);
		if (ret < 0) {
			fprintf(stderr, "upcd-client: upc_msync: %s\n", upc_strerror(ret));
			return 1;
		}
	}
	printf("ready %lu\n", sum);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = 0;
	_exit(0);
}
