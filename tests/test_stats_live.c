/* SPDX-License-Identifier: MIT */
/*
 * upcctl stats and upcctl top read a live process's counters (published by
 * the cache in /dev/shm/upcache.<pid>.<n>, refreshed by the reclaim thread
 * at least once a second) without stopping it: here the live process is
 * the test itself, and upcctl runs beside it.
 */
#include "trace-helpers.h"

#include <dirent.h>

static char *upcctl(const char *args, int *stp)
{
	char *cmd, *out;

	cr_assert(asprintf(&cmd, "%s %s", build_path("tools/upcctl"), args) > 0);
	*stp = run_capture(cmd, &out);
	free(cmd);
	return out;
}

/* Poll "upcctl stats --json PID" until every @want substring is in it (5 s at most). */
static char *stats_until(const char *const *want, size_t n)
{
	char args[64], *out = NULL;
	int st = 0;

	snprintf(args, sizeof(args), "stats --json %d", (int)getpid());
	for (int tries = 0; tries < 50; tries++) {
		size_t ok = 0;

		free(out);
		out = upcctl(args, &st);
		for (size_t i = 0; i < n; i++)
			ok += strstr(out, want[i]) != NULL;
		if (st == 0 && ok == n)
			return out;
		usleep(100 * 1000);
	}
	cr_assert_fail("upcctl stats never showed what was expected (exit %d):\n%s", st, out);
	return out;
}

static void require_shm(void)
{
	if (access("/dev/shm", W_OK) != 0)
		cr_skip_test("/dev/shm is not writable here: caches do not publish statistics");
}

static int shm_files_of(pid_t pid)
{
	char prefix[64];
	struct dirent *de;
	DIR *d = opendir("/dev/shm");
	int n = 0;

	snprintf(prefix, sizeof(prefix), "upcache.%d.", (int)pid);
	while (d && (de = readdir(d)))
		n += !strncmp(de->d_name, prefix, strlen(prefix));
	if (d)
		closedir(d);
	return n;
}

Test(stats_live, counters_of_a_live_process, .timeout = 60)
{
	char path[64], want_path[128], *out, want_pid[32];
	unsigned char *p;
	int fd, st;

	require_shm();
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_cache *c = cache_new_opts(&o);

	fd = tmpfile_pattern(64 * PAGE, path);
	cr_assert_eq(upc_map(c, fd, 0, 64 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p), 0);
	for (int i = 0; i < 5; i++)
		p[(10 + i) * PAGE] = 0xa5;
	cr_assert_eq(upc_pin(c, p + 40 * PAGE, 2 * PAGE, 0), 0);
	stats_of(c);	/* asynchronous tracking: collect what was written */
	cr_assert_eq(shm_files_of(getpid()), 1);

	snprintf(want_path, sizeof(want_path), "\"path\":\"%s\"", path);
	snprintf(want_pid, sizeof(want_pid), "\"pid\":%d", (int)getpid());
	{
		const char *const want[] = { want_pid, "\"pages_dirty\":5,", "\"pages_pinned\":2,", want_path,
					     "\"nr_mappings\":1,", "\"faults_missing\":" };
		out = stats_until(want, sizeof(want) / sizeof(want[0]));
		cr_assert(strstr(out, track_flags() ? "\"track_mode\":\"async\"" : "\"track_mode\":\"sync\""), "%s",
			  out);
		free(out);
	}

	/* Write-back shows up, and nothing stopped the process meanwhile. */
	cr_assert_eq(upc_unpin(c, p + 40 * PAGE, 2 * PAGE), 0);
	cr_assert_eq(upc_msync(c, p, 64 * PAGE, UPC_MS_SYNC), 0);
	{
		const char *const want[] = { "\"pages_dirty\":0,", "\"pages_pinned\":0,", "\"pages_written\":5," };
		out = stats_until(want, sizeof(want) / sizeof(want[0]));
		free(out);
	}

	/* The text form names the file and the counters. */
	char args[64];

	snprintf(args, sizeof(args), "stats %d", (int)getpid());
	out = upcctl(args, &st);
	cr_assert_eq(st, 0, "%s", out);
	cr_assert(strstr(out, path), "%s", out);
	cr_assert(strstr(out, "write-back 5 pages"), "%s", out);
	free(out);

	/* top, bounded by -n, shows this process. */
	snprintf(args, sizeof(args), "top -n 2 -d 0.2 -p %d", (int)getpid());
	out = upcctl(args, &st);
	cr_assert_eq(st, 0, "%s", out);
	cr_assert(strstr(out, "upcctl top"), "%s", out);
	snprintf(want_pid, sizeof(want_pid), "%7d", (int)getpid());
	cr_assert(strstr(out, want_pid), "%s", out);
	cr_assert(strstr(out, path), "%s", out);
	free(out);

	/* Destroying the cache removes its file; upcctl then says so. */
	cr_assert_eq(upc_cache_destroy(c), 0);
	cr_assert_eq(shm_files_of(getpid()), 0);
	snprintf(args, sizeof(args), "stats %d", (int)getpid());
	out = upcctl(args, &st);
	cr_assert_eq(st, 1, "%s", out);
	cr_assert(strstr(out, "no upcache cache published"), "%s", out);
	free(out);
	close(fd);
	unlink(path);
}

Test(stats_live, two_caches_one_process, .timeout = 60)
{
	char args[64], *out;
	int st;

	require_shm();
	struct upc_cache *a = cache_new(UPC_CACHE_NO_BGWB), *b = cache_new(UPC_CACHE_NO_BGWB);

	cr_assert_eq(shm_files_of(getpid()), 2);
	snprintf(args, sizeof(args), "stats --json %d", (int)getpid());
	out = upcctl(args, &st);
	cr_assert_eq(st, 0, "%s", out);
	/* Two caches listed, one after the other. */
	char *first = strstr(out, "{\"cache\":");

	cr_assert(first && strstr(first + 1, "{\"cache\":"), "%s", out);
	free(out);
	cr_assert_eq(upc_cache_destroy(a), 0);
	cr_assert_eq(upc_cache_destroy(b), 0);
	cr_assert_eq(shm_files_of(getpid()), 0);
}

Test(stats_live, a_dead_process_file_is_ignored_and_cleaned, .timeout = 60)
{
	char stale[64], args[64], *out;
	pid_t dead;
	int st, fd;

	require_shm();
	/* A pid that is certainly gone: a child we reaped. */
	dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	snprintf(stale, sizeof(stale), "/dev/shm/upcache.%d.0", (int)dead);
	fd = open(stale, O_CREAT | O_RDWR, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	snprintf(args, sizeof(args), "stats %d", (int)dead);
	out = upcctl(args, &st);
	cr_assert_eq(st, 1, "%s", out);
	free(out);
	/* The next cache created by any process removes it. */
	struct upc_cache *c = cache_new(UPC_CACHE_NO_BGWB);

	upc_cache_destroy(c);
	if (access(stale, F_OK) == 0) {
		/* Another cache of this process was created first: removal runs once per process. */
		unlink(stale);
	}
}
