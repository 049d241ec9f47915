/* SPDX-License-Identifier: MIT */
/*
 * upcache-run - run a program with its shared file mappings on upcache
 * (upcache-run(1)): set the environment libupcache-preload.so reads, put
 * the library first in LD_PRELOAD, exec the program.
 *
 * The library is $UPCACHE_PRELOAD if set; else the one next to this
 * program in a build tree (preload/.libs/ under libtool) or beside it;
 * else the installed one in the library directory.
 *
 * --shared: the program's cache is upcd's (UPC_CACHE_SHARED), on the
 * socket --socket names, else $UPC_SOCKET, else the default (upcd(8));
 * the choice goes to the program in $UPC_SOCKET, so that every program it
 * runs uses the same daemon.  No daemon listening there is an error
 * before the program starts (exit status 125), not a quiet fall-back to
 * a cache of the program's own: the programs sharing a file through the
 * daemon would then have two caches of it, which lose each other's
 * writes, and one that asked for the daemon asked for what it gives
 * (what a process wrote survives its kill -9).
 */
#define _GNU_SOURCE
#include "config.h"

#include "proto.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PRELOAD_NAME "libupcache-preload.so"

static void usage(FILE *f)
{
	fprintf(f, "usage: upcache-run [--mem-limit=SIZE] [--tracking=sync|async] [--stats] CMD [ARGS...]\n"
		   "       upcache-run --shared [--socket=PATH] [--stats] CMD [ARGS...]\n"
		   "Run CMD with its MAP_SHARED mappings of regular files on upcache (see upcache-run(1)).\n"
		   "  --mem-limit=SIZE  cached bytes at most (e.g. 512m, 4G; default: 1/4 of RAM)\n"
		   "  --tracking=MODE   dirty tracking: sync (the default) or async\n"
		   "  --shared          on upcd's cache, shared with every other process using it (upcd(8))\n"
		   "  --socket=PATH     upcd's socket (default: $UPC_SOCKET, else upcd's default)\n"
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

/*
 * --shared: a daemon must listen on @path.  A connection and nothing
 * more (upcd logs a client that came and went).  0, or -1 said on
 * standard error.
 */
static int daemon_check(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s, err;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "upcache-run: --shared: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(s);
		return 0;
	}
	err = errno;
	if (s >= 0)
		close(s);
	fprintf(stderr,
		"upcache-run: --shared: no upcd on %s (%s): start one (upcd --socket %s, upcd(8)), or run without "
		"--shared for a cache of the program's own\n",
		path, strerror(err), path);
	return -1;
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
		{ "shared", no_argument, NULL, 'S' },
		{ "socket", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char lib[PATH_MAX], *preload, sockbuf[PATH_MAX];
	const char *old, *sock = NULL, *daemon_opt = NULL;
	int c, shared = 0;

	/* "+": options stop at CMD, whose own options are its own */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			daemon_opt = "--mem-limit";
			if (!size_ok(optarg)) {
				fprintf(stderr, "upcache-run: --mem-limit=%s: not a size (e.g. 512m, 4G)\n", optarg);
				return 2;
			}
			setenv("UPC_MEM_LIMIT", optarg, 1);
			break;
		case 't':
			daemon_opt = "--tracking";
			if (strcmp(optarg, "sync") && strcmp(optarg, "async")) {
				fprintf(stderr, "upcache-run: --tracking=%s: sync or async\n", optarg);
				return 2;
			}
			setenv("UPCACHE_RUN_TRACKING", optarg, 1);
			break;
		case 's':
			setenv("UPCACHE_RUN_STATS", "1", 1);
			break;
		case 'S':
			shared = 1;
			break;
		case 'k':
			sock = optarg;
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
	if (sock && !shared) {
		fprintf(stderr, "upcache-run: --socket is for --shared (upcd's cache)\n");
		return 2;
	}
	if (shared && daemon_opt) {
		/* one cache for every client: its limit and tracking are upcd's own options (upcd(8)) */
		fprintf(stderr, "upcache-run: %s with --shared: the daemon's to set (upcd --mem-limit, upcd(8))\n",
			daemon_opt);
		return 2;
	}
	if (shared) {
		upc_socket_path(sock, sockbuf, sizeof(sockbuf));
		if (!*sockbuf || daemon_check(sockbuf))
			return 125;
		setenv("UPC_SOCKET", sockbuf, 1);
		setenv("UPCACHE_RUN_SHARED", "1", 1);
	} else {
		/* not from an outer upcache-run --shared: this one asked for a cache of its own */
		unsetenv("UPCACHE_RUN_SHARED");
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
