/* SPDX-License-Identifier: MIT */
/*
 * upcache-run - run a program with its shared file mappings on upcache
 * (upcache-run(1)): set the environment libupcache-preload.so reads, put
 * the library first in LD_PRELOAD, exec the program.
 *
 * The library is $UPCACHE_PRELOAD if set; else the one next to this
 * program in a build tree (preload/.libs/ under libtool) or beside it;
 * else the installed one in the library directory.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PRELOAD_NAME "libupcache-preload.so"

static void usage(FILE *f)
{
	fprintf(f, "usage: upcache-run [--mem-limit=SIZE] [--tracking=sync|async] [--stats] CMD [ARGS...]\n"
		   "Run CMD with its MAP_SHARED mappings of regular files on upcache (see upcache-run(1)).\n"
		   "  --mem-limit=SIZE  cached bytes at most (e.g. 512m, 4G; default: 1/4 of RAM)\n"
		   "  --tracking=MODE   dirty tracking: sync (the default) or async\n"
		   "  --stats           print the cache's counters on standard error at exit\n"
		   "Environment: UPCACHE_RUN_LOG=FILE lists what was taken over and what was left\n"
		   "to the kernel, and why; UPCACHE_PRELOAD=PATH names the preload library.\n");
}

/* SIZE as upc_cache_create(3) reads $UPC_MEM_LIMIT: digits and an optional k, m or g. */
static int size_ok(const char *s)
{
	char *end;

	errno = 0;
	if (!*s || strtoull(s, &end, 10) == 0 || errno)
		return 0;
	return !*end || (strchr("kKmMgG", *end) && !end[1]);
}

static int find_preload(char *out, size_t len)
{
	const char *e = getenv("UPCACHE_PRELOAD");
	char self[PATH_MAX];
	ssize_t n;
	char *slash;

	if (e && *e) {
		if (access(e, R_OK)) {
			fprintf(stderr, "upcache-run: UPCACHE_PRELOAD=%s: %s\n", e, strerror(errno));
			return -1;
		}
		snprintf(out, len, "%s", e);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(out, len, "%s/.libs/" PRELOAD_NAME, self) < (int)len && !access(out, R_OK))
				return 0;
			if (snprintf(out, len, "%s/" PRELOAD_NAME, self) < (int)len && !access(out, R_OK))
				return 0;
		}
	}
	snprintf(out, len, "%s/%s", UPC_PRELOAD_LIBDIR, PRELOAD_NAME);
	if (!access(out, R_OK))
		return 0;
	fprintf(stderr, "upcache-run: %s not found (next to this program or in %s); set UPCACHE_PRELOAD\n",
		PRELOAD_NAME, UPC_PRELOAD_LIBDIR);
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mem-limit", required_argument, NULL, 'm' },
		{ "tracking", required_argument, NULL, 't' },
		{ "stats", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char lib[PATH_MAX], *preload;
	const char *old;
	int c;

	/* "+": options stop at CMD, whose own options are its own */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (!size_ok(optarg)) {
				fprintf(stderr, "upcache-run: --mem-limit=%s: not a size (e.g. 512m, 4G)\n", optarg);
				return 2;
			}
			setenv("UPC_MEM_LIMIT", optarg, 1);
			break;
		case 't':
			if (strcmp(optarg, "sync") && strcmp(optarg, "async")) {
				fprintf(stderr, "upcache-run: --tracking=%s: sync or async\n", optarg);
				return 2;
			}
			setenv("UPCACHE_RUN_TRACKING", optarg, 1);
			break;
		case 's':
			setenv("UPCACHE_RUN_STATS", "1", 1);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if (find_preload(lib, sizeof(lib)))
		return 127;
	old = getenv("LD_PRELOAD");
#ifdef UPC_ASAN_RUNTIME
	/* A sanitizer build (configure --enable-sanitizers): the ASan runtime must be first. */
	if (asprintf(&preload, "%s %s%s%s", UPC_ASAN_RUNTIME, lib, old && *old ? " " : "", old ? old : "") < 0)
		return 127;
#else
	if (old && *old) {
		if (asprintf(&preload, "%s %s", lib, old) < 0)
			return 127;
	} else {
		preload = lib;
	}
#endif
	setenv("LD_PRELOAD", preload, 1);
	execvp(argv[optind], argv + optind);
	c = errno;
	if (preload != lib)
		free(preload);
	fprintf(stderr, "upcache-run: %s: %s\n", argv[optind], strerror(c));
	return c == ENOENT ? 127 : 126;
}
