/* SPDX-License-Identifier: MIT */
/*
 * upcctl - control and inspect upcache.
 *
 *   upcctl probe [--json]   which kernel features upcache found, and the
 *                           modes they make available
 *   upcctl stats [--json] [--backtraces] PID
 *                           a live process's cache counters (upcctl-stats.c)
 *   upcctl top [-n N] [-d SECS] [-p PID]
 *                           the same for every process, refreshed like top
 *   upcctl daemon status|clients|stats|drop|sync|top [--socket PATH] ...
 *                           upcd's status, clients, counters, drop, sync and
 *                           rates, asked over its socket (upcctl-daemon.c)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <upcache.h>
#include "upcctl.h"

static const struct {
	uint64_t bit;
	const char *what;
} feats[] = {
	{ UPC_FEAT_UFFD_SYSCALL, "userfaultfd(2) syscall (full access)" },
	{ UPC_FEAT_UFFD_DEV, "/dev/userfaultfd (full access through the device)" },
	{ UPC_FEAT_USER_MODE_ONLY, "UFFD_USER_MODE_ONLY only (kernel-mode faults get EFAULT)" },
	{ UPC_FEAT_MISSING_SHMEM, "MISSING faults on shmem" },
	{ UPC_FEAT_MINOR_SHMEM, "MINOR faults on shmem" },
	{ UPC_FEAT_WP_SHMEM, "write-protect on shmem" },
	{ UPC_FEAT_COPY_WP, "UFFDIO_COPY_MODE_WP" },
	{ UPC_FEAT_WP_UNPOPULATED, "WP markers on unpopulated PTEs" },
	{ UPC_FEAT_WP_ASYNC, "asynchronous write-protect (WP_ASYNC)" },
	{ UPC_FEAT_PAGEMAP_SCAN, "PAGEMAP_SCAN ioctl" },
	{ UPC_FEAT_POISON, "UFFDIO_POISON (read errors as SIGBUS)" },
	{ UPC_FEAT_SIGBUS, "UFFD_FEATURE_SIGBUS (in-thread fault handling)" },
	{ UPC_FEAT_EVENT_FORK, "UFFD_EVENT_FORK" },
	{ UPC_FEAT_PROCESS_MADVISE, "process_madvise(2)" },
	{ UPC_FEAT_IO_URING, "io_uring (read, write, fsync)" },
};

static int cmd_probe(int json)
{
	uint64_t f = upc_probe();
	struct utsname u;
	int uffd = !!(f & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV | UPC_FEAT_USER_MODE_ONLY));
	int sync_ok = uffd && (f & UPC_FEAT_MISSING_SHMEM) && (f & UPC_FEAT_WP_SHMEM) &&
		      (f & UPC_FEAT_WP_UNPOPULATED) && (f & UPC_FEAT_IO_URING);
	int async_ok = sync_ok && (f & UPC_FEAT_WP_ASYNC) && (f & UPC_FEAT_PAGEMAP_SCAN) &&
		       (f & UPC_FEAT_MINOR_SHMEM);
	const char *access = (f & UPC_FEAT_UFFD_SYSCALL) ? "syscall" :
			     (f & UPC_FEAT_UFFD_DEV) ? "dev" :
			     (f & UPC_FEAT_USER_MODE_ONLY) ? "user-mode-only" : "none";

	uname(&u);
	if (json) {
		printf("{\"kernel\":\"%s\",\"uffd_access\":\"%s\",\"features\":{", u.release, access);
		for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
			printf("%s\"%s\":%s", i ? "," : "", upc_feature_name(feats[i].bit),
			       (f & feats[i].bit) ? "true" : "false");
		printf("},\"modes\":{\"sync_wp\":%s,\"async_wp\":%s,\"embedded\":%s}}\n",
		       sync_ok ? "true" : "false", async_ok ? "true" : "false",
		       sync_ok ? "true" : "false");
		return sync_ok ? 0 : 1;
	}
	printf("kernel %s, userfaultfd access: %s%s\n\n", u.release, access,
	       (f & UPC_FEAT_UFFD_DEV) && !(f & UPC_FEAT_UFFD_SYSCALL) ? "" :
	       (f & UPC_FEAT_UFFD_DEV) ? " (and /dev/userfaultfd)" : "");
	for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
		printf("  %-3s %-20s %s\n", (f & feats[i].bit) ? "yes" : "no",
		       upc_feature_name(feats[i].bit), feats[i].what);
	printf("\nmodes:\n");
	printf("  %-3s embedded cache, synchronous write-protect tracking%s\n", sync_ok ? "yes" : "no",
	       sync_ok ? "" : " (needs MISSING + WP on shmem, WP markers, io_uring)");
	printf("  %-3s asynchronous write-protect tracking%s\n", async_ok ? "yes" : "no",
	       async_ok ? "" : " (needs WP_ASYNC, PAGEMAP_SCAN and MINOR on shmem; falls back to synchronous)");
	printf("  %-3s read errors delivered as SIGBUS by poison PTE%s\n",
	       (f & UPC_FEAT_POISON) ? "yes" : "no",
	       (f & UPC_FEAT_POISON) ? "" : " (falls back to signalling the faulting thread)");
	if (f & UPC_FEAT_USER_MODE_ONLY)
		printf("\nnote: only user-mode faults can be served; read(2) or O_DIRECT into a\n"
		       "mapped range fails with EFAULT unless the range is populated first.\n");
	return sync_ok ? 0 : 1;
}

static void usage(FILE *o)
{
	fprintf(o, "usage: upcctl probe [--json]\n"
		   "       upcctl stats [--json] [--backtraces] PID\n"
		   "       upcctl top [-n ITERATIONS] [-d SECONDS] [-p PID]\n"
		   "       upcctl daemon status [--socket PATH]\n"
		   "       upcctl daemon clients [--json] [--socket PATH]\n"
		   "       upcctl daemon stats [--json] [--socket PATH]\n"
		   "       upcctl daemon drop [--writeback] [--socket PATH]\n"
		   "       upcctl daemon sync [--quiet] [--socket PATH]\n"
		   "       upcctl daemon top [-n COUNT] [-d SECONDS] [--socket PATH]\n");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "probe"))
		return cmd_probe(argc >= 3 && !strcmp(argv[2], "--json"));
	if (argc >= 2 && !strcmp(argv[1], "stats"))
		return upcctl_stats(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "top"))
		return upcctl_top(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "daemon"))
		return upcctl_daemon(argc - 2, argv + 2);
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
