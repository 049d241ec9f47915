/* SPDX-License-Identifier: MIT */
/*
 * upcache-run(1) and libupcache-preload.so: ordinary programs
 * (tests/preload-prog.c, tests/preload-malloc.c) run under
 * preload/upcache-run, in the tracking mode of the run (make check runs
 * both).  Every case also checks, in $UPCACHE_RUN_LOG, that the shim took
 * the mapping over: a shim that left everything to the kernel would pass
 * the programs' own checks.
 */
#include "helpers.h"

#include <signal.h>

static const char *builddir(void)
{
	const char *e = getenv("UPC_TEST_BUILDDIR");

	return e && *e ? e : ".";
}

static char logpath[64], outpath[80];

/*
 * Start "upcache-run [--tracking=async] PROG CASE FILE [ARG]", its output
 * to outpath; a new log and output file unless @same_log (a second process
 * of the same test: both append to the first's).
 */
static pid_t start_arg(const char *prog, const char *name, const char *file, const char *arg, bool same_log)
{
	char run_path[4096], prog_path[4096];
	int fd;
	pid_t pid;

	require_upcache();
	snprintf(run_path, sizeof(run_path), "%s/preload/upcache-run", builddir());
	snprintf(prog_path, sizeof(prog_path), "%s/tests/%s", builddir(), prog);
	if (!same_log) {
		strcpy(logpath, "/var/tmp/upc-preload-log.XXXXXX");
		fd = mkstemp(logpath);
		cr_assert(fd >= 0);
		close(fd);
		snprintf(outpath, sizeof(outpath), "%s.out", logpath);
		tmp_remove_at_exit(logpath);
		tmp_remove_at_exit(outpath);
	}
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int out = open(outpath, O_WRONLY | O_CREAT | O_APPEND | (same_log ? 0 : O_TRUNC), 0644);

		dup2(out, 1);
		dup2(out, 2);
		setenv("UPCACHE_RUN_LOG", logpath, 1);
		if (track_flags())
			execl(run_path, run_path, "--tracking=async", "--stats", prog_path, name, file, arg, (char *)NULL);
		else
			execl(run_path, run_path, "--stats", prog_path, name, file, arg, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static pid_t start(const char *prog, const char *name, const char *file, bool same_log)
{
	return start_arg(prog, name, file, NULL, same_log);
}

static int reap(pid_t pid)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return st;
}

/* Run "upcache-run [--tracking=async] PROG CASE FILE"; returns the wait status. */
static int run(const char *prog, const char *name, const char *file)
{
	return reap(start(prog, name, file, false));
}

static void show(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "cat %s %s >&2", logpath, outpath);
	(void)!system(cmd);
}

/* The async run with a cache that fell back to sync would repeat the sync run. */
static void skip_unless_mode(void)
{
	if (track_flags() && file_has(logpath, "async asked for, not available"))
		cr_skip_test("asynchronous tracking is not available here");
}

static void expect_ok(int st)
{
	skip_unless_mode();
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		show();
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the program failed: status %#x (its output is above)", st);
	cr_assert(file_has(logpath, "upcache mapping at"), "the shim did not take the mapping over");
}

static void cleanup(const char *file)
{
	unlink(file);
	unlink(logpath);
	unlink(outpath);
}

/* Bytes of @path at @off equal @want. */
static void expect_bytes(const char *path, off_t off, const char *want)
{
	char buf[256] = { 0 };
	int fd = open(path, O_RDONLY);

	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, buf, strlen(want), off), (ssize_t)strlen(want));
	close(fd);
	cr_assert(!memcmp(buf, want, strlen(want)), "file at %lld: '%.*s', want '%s'", (long long)off,
		  (int)strlen(want), buf, want);
}

static void one(const char *name, size_t size)
{
	char file[64];
	int fd = tmpfile_pattern(size, file);

	close(fd);
	expect_ok(run("preload-prog", name, file));
	cleanup(file);
}

Test(preload, coherence, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(3 * PAGE + 512, file);
	struct stat st;

	close(fd);
	expect_ok(run("preload-prog", "coherence", file));
	/* written back at exit */
	expect_bytes(file, 100, "through-the-map");
	expect_bytes(file, PAGE + 7, "by-pwrite");
	expect_bytes(file, 3 * PAGE + 512, "APPENDED");
	cr_assert(stat(file, &st) == 0 && st.st_size == 3 * PAGE + 520);
	cr_assert(file_has(logpath, "written back before exit"));
	cr_assert(file_has(outpath, "maps taken 1"), "--stats printed the counters");
	cleanup(file);
}

/*
 * UPCACHE_RUN_STATS_FILE: the counters of the process upcache-run started
 * (not of a child it forks, which exits first here), "name value" lines in a
 * new file; a name taken already, here by a symbolic link, is neither
 * followed nor replaced, and the program runs as it would without it.
 */
Test(preload, stats_file, .timeout = 120)
{
	/* A forked child keeps its mappings under synchronous tracking only (upcache(7), FORK). */
	bool fork_case = !track_flags() && (upc_probe() & UPC_FEAT_EVENT_FORK);
	char file[64], stats[80], target[80], want[64], buf[4096] = { 0 };
	struct stat st;
	ssize_t n;
	pid_t pid;
	int fd;

	fd = tmpfile_pattern(fork_case ? 2 * PAGE : 3 * PAGE + 512, file);	/* the case's file */
	close(fd);
	snprintf(stats, sizeof(stats), "%s.stats", file);
	snprintf(target, sizeof(target), "%s.target", file);
	unlink(stats);
	setenv("UPCACHE_RUN_STATS_FILE", stats, 1);
	pid = start("preload-prog", fork_case ? "fork" : "coherence", file, false);
	unsetenv("UPCACHE_RUN_STATS_FILE");
	expect_ok(reap(pid));
	fd = open(stats, O_RDONLY);
	cr_assert(fd >= 0, "no counters in %s", stats);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_assert(n > 0);
	snprintf(want, sizeof(want), "pid %d\n", (int)pid);
	if (!strstr(buf, want) || !strstr(buf, "\ncache 1\n") || !strstr(buf, "\nmaps_taken 1\n") ||
	    !strstr(buf, "\nfaults_missing ") || !strstr(buf, "\ntrack_mode "))
		show();
	cr_assert(strstr(buf, want), "the counters of process %d, not of its child:\n%s", (int)pid, buf);
	cr_assert(strstr(buf, "\ncache 1\n") && strstr(buf, "\nmaps_taken 1\n") &&
		  strstr(buf, "\nfaults_missing ") && strstr(buf, "\ntrack_mode "), "%s", buf);
	cleanup(file);

	/* A symbolic link at the name: left alone, and standard error says so. */
	fd = tmpfile_pattern(3 * PAGE + 512, file);
	close(fd);
	unlink(stats);
	fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0 && write(fd, "x", 1) == 1);
	close(fd);
	cr_assert(symlink(target, stats) == 0);
	setenv("UPCACHE_RUN_STATS_FILE", stats, 1);
	pid = start("preload-prog", "coherence", file, false);
	unsetenv("UPCACHE_RUN_STATS_FILE");
	expect_ok(reap(pid));
	cr_assert(lstat(stats, &st) == 0 && S_ISLNK(st.st_mode), "the link was replaced");
	cr_assert(stat(target, &st) == 0 && st.st_size == 1, "written through the link");
	cr_assert(file_has(outpath, "UPCACHE_RUN_STATS_FILE="), "standard error does not say why");
	unlink(stats);
	unlink(target);
	cleanup(file);
}

Test(preload, size_changes, .timeout = 120)
{
	one("size", 4 * PAGE);
}

Test(preload, msync_then_kill, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(2 * PAGE, file), st;

	close(fd);
	st = run("preload-prog", "msync-kill", file);
	skip_unless_mode();
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %#x", st);
	cr_assert(file_has(logpath, "upcache mapping at"));
	/* no exit handler ran: what is in the file came from msync and fsync */
	expect_bytes(file, 10, "msynced");
	expect_bytes(file, PAGE + 10, "fsynced");
	cleanup(file);
}

Test(preload, o_dsync_and_rwf_dsync_writes_are_durable_at_once, .timeout = 120)
{
	char file[64], buf[4];
	int fd = tmpfile_pattern(2 * PAGE, file), st;

	close(fd);
	st = run("preload-prog", "dsync", file);
	skip_unless_mode();
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %#x", st);
	cr_assert(file_has(logpath, "upcache mapping at"));
	expect_bytes(file, 10, "o-dsync");
	expect_bytes(file, 100, "o-sync");
	expect_bytes(file, PAGE + 10, "rwfdsync");
	/* and the plain write died with the process (embedded mode: upcache-run(1)) */
	fd = open(file, O_RDONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, buf, 4, PAGE + 100), 4);
	cr_assert(memcmp(buf, "lost", 4), "a plain write reached the file without a sync");
	close(fd);
	cleanup(file);
}

Test(preload, mprotect, .timeout = 120)
{
	one("protect", 2 * PAGE);
}

Test(preload, madvise, .timeout = 120)
{
	one("advise", 4 * PAGE);
}

Test(preload, mremap, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(4 * PAGE, file);

	close(fd);
	expect_ok(run("preload-prog", "remap", file));
	cr_assert(file_has(logpath, "mremap of"), "the remap went through the cache");
	expect_bytes(file, 0, "first-page");
	expect_bytes(file, 3 * PAGE, "Z");
	cleanup(file);
}

Test(preload, munmap, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(3 * PAGE, file);

	close(fd);
	expect_ok(run("preload-prog", "unmap", file));
	expect_bytes(file, 0, "a");
	expect_bytes(file, PAGE, "b");
	expect_bytes(file, 2 * PAGE, "c");
	cleanup(file);
}

Test(preload, fork_child_coherent, .timeout = 120)
{
	char file[64];
	int fd;

	if (track_flags())
		cr_skip_test("forked children keep upcache mappings under synchronous tracking only (upcache(7), FORK)");
	if (!(upc_probe() & UPC_FEAT_EVENT_FORK))
		cr_skip_test("the kernel has no UFFD_EVENT_FORK");
	fd = tmpfile_pattern(2 * PAGE, file);
	close(fd);
	expect_ok(run("preload-prog", "fork", file));
	cr_assert(!file_has(logpath, "goes to the kernel"), "the child's pwrite went through its inherited mapping");
	expect_bytes(file, 0, "PC");
	expect_bytes(file, PAGE + 1, "c");
	cleanup(file);
}

Test(preload, exec_writes_back, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(PAGE, file);

	close(fd);
	expect_ok(run("preload-prog", "exec", file));
	cr_assert(file_has(logpath, "written back before exec"));
	cleanup(file);
}

Test(preload, spawn_vfork_system, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(PAGE, file);

	close(fd);
	expect_ok(run("preload-prog", "spawn", file));
	cr_assert(file_has(logpath, "written back before posix_spawn"));
	cr_assert(file_has(logpath, "written back before system"));
	expect_bytes(file, 0, "systemd");
	cleanup(file);
}

Test(preload, underscore_exit_writes_back, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(PAGE, file);

	close(fd);
	expect_ok(run("preload-prog", "_exit", file));
	cr_assert(file_has(logpath, "written back before _exit"));
	expect_bytes(file, 0, "by-_exit");
	cleanup(file);
}

Test(preload, kernel_access, .timeout = 120)
{
	one("kernel-access", 8 * PAGE);
}

Test(preload, threads, .timeout = 120)
{
	one("threads", 4 * PAGE);
}

Test(preload, private_left_to_kernel, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(PAGE, file), st;

	close(fd);
	st = run("preload-prog", "private", file);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	cr_assert(file_has(logpath, "left to the kernel: private mapping"));
	cr_assert(!file_has(logpath, "upcache mapping at"));
	cr_assert(!file_has(logpath, "cache created"), "no cache for a program that maps nothing shared");
	cleanup(file);
}

Test(preload, program_interposing_malloc, .timeout = 120)
{
	char file[64];
	int fd;

#ifdef __SANITIZE_ADDRESS__
	/*
	 * In a sanitizer build the ASan runtime's start-up calls the program's
	 * malloc, which calls write(), which is the instrumented shim's, before
	 * ASan's shadow memory exists: the program dies before main().  (Run
	 * without the shim it starts.)  The normal build runs this case.
	 */
	cr_skip_test("a program with its own malloc cannot start under an ASan-instrumented preload library");
#endif
	fd = tmpfile_pattern(PAGE, file);
	close(fd);
	expect_ok(run("preload-malloc", file, file));
	expect_bytes(file, 0, "malloced");
	cleanup(file);
}

Test(preload, upcache_run_usage)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "%s/preload/upcache-run --tracking=bogus true 2>/dev/null", builddir());
	cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
	snprintf(cmd, sizeof(cmd), "%s/preload/upcache-run --mem-limit=lots true 2>/dev/null", builddir());
	cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
	snprintf(cmd, sizeof(cmd), "%s/preload/upcache-run /nonexistent/program 2>/dev/null", builddir());
	cr_assert_eq(WEXITSTATUS(system(cmd)), 127);
	snprintf(cmd, sizeof(cmd), "%s/preload/upcache-run --mem-limit=64m true", builddir());
	cr_assert_eq(WEXITSTATUS(system(cmd)), 0);
}

/* ---- one cache per file (the registry; upcache-run(1), ONE CACHE PER FILE) */

/* FILE.SUFFIX: wait (60 s at most) until it exists, make it, remove it. */
static void wait_file(const char *file, const char *suffix)
{
	char path[128];

	snprintf(path, sizeof(path), "%s.%s", file, suffix);
	for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
		usleep(10000);
	if (access(path, F_OK) != 0)
		show();
	cr_assert(access(path, F_OK) == 0, "%s never appeared", path);
}

static void make_file(const char *file, const char *suffix)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s.%s", file, suffix);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	cr_assert(fd >= 0);
	close(fd);
}

static void remove_files(const char *file)
{
	char path[128];

	snprintf(path, sizeof(path), "%s.ready", file);
	unlink(path);
	snprintf(path, sizeof(path), "%s.done", file);
	unlink(path);
}

static void expect_exit0(int st, const char *who)
{
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		show();
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed: status %#x (output above)", who, st);
}

Test(preload, second_process_cannot_cache_a_cached_file, .timeout = 120)
{
	char file[64], want[96];
	int fd = tmpfile_pattern(2 * PAGE, file);
	pid_t first;

	close(fd);
	first = start("preload-prog", "hold", file, false);
	wait_file(file, "ready");
	/* while the first caches the file: EAGAIN for the second's mmaps and writes */
	expect_exit0(reap(start("preload-prog", "second", file, true)), "the second process");
	snprintf(want, sizeof(want), "is cached by process %d (preload-prog)", (int)first);
	cr_assert(file_has(outpath, want), "stderr names the file, the holder and the way out");
	cr_assert(file_has(outpath, "without upcache-run"));
	cr_assert(file_has(logpath, "refused (EAGAIN)"));
	make_file(file, "done");
	expect_exit0(reap(first), "the first process");
	skip_unless_mode();
	/* nothing lost: all of the first's writes, none of the second's */
	expect_bytes(file, 0, "first-map");
	expect_bytes(file, PAGE + 5, "first-pwrite");
	expect_bytes(file, 100, "after-second");
	expect_bytes(file, PAGE + 100, "after-pwrite");
	/* the first is gone: a new process caches the file */
	expect_ok(run("preload-prog", "take", file));
	expect_bytes(file, 200, "third");
	expect_bytes(file, 0, "first-map");
	remove_files(file);
	cleanup(file);
}

Test(preload, no_cache_of_a_file_mapped_through_the_kernel_elsewhere, .timeout = 120)
{
	char file[64];
	int fd = tmpfile_pattern(PAGE, file);
	pid_t first;

	close(fd);
	first = start("preload-prog", "hold-kernel", file, false);
	wait_file(file, "ready");
	expect_exit0(reap(start("preload-prog", "second-kernel", file, true)), "the second process");
	cr_assert(file_has(logpath, "left to the kernel: PROT_EXEC"));
	cr_assert(file_has(logpath, "refused (EAGAIN)"));
	make_file(file, "done");
	expect_exit0(reap(first), "the first process");
	expect_bytes(file, 300, "kernel");
	expect_ok(run("preload-prog", "take", file));
	expect_bytes(file, 200, "third");
	remove_files(file);
	cleanup(file);
}

Test(preload, forked_child_shares_and_does_not_keep_the_entry, .timeout = 120)
{
	char file[64], path[128], buf[32] = { 0 };
	int fd;
	pid_t child;

	if (track_flags())
		cr_skip_test("forked children keep upcache mappings under synchronous tracking only (upcache(7), FORK)");
	if (!(upc_probe() & UPC_FEAT_EVENT_FORK))
		cr_skip_test("the kernel has no UFFD_EVENT_FORK");
	fd = tmpfile_pattern(2 * PAGE, file);
	close(fd);
	expect_ok(run("preload-prog", "fork-stay", file));
	expect_bytes(file, 0, "PC");
	expect_bytes(file, PAGE + 1, "c");
	snprintf(path, sizeof(path), "%s.ready", file);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	child = atoi(buf);
	cr_assert(child > 0 && kill(child, 0) == 0, "the forked child outlives its parent");
	/* the parent is gone, its child is not: the file is free to cache */
	expect_ok(run("preload-prog", "take", file));
	expect_bytes(file, 200, "third");
	make_file(file, "done");
	for (int i = 0; i < 6000 && kill(child, 0) == 0; i++)
		usleep(10000);
	remove_files(file);
	cleanup(file);
}

/*
 * SQLite in WAL mode with mmap_size: a writer commits 400 rows one by one
 * while a reader counts them, both under upcache-run.  Before the
 * registry the reader's cache kept a stale -shm wal-index and its
 * checkpoint at close (the last connection) threw committed rows away
 * (106 and 70 of 400 left).  Now the second process cannot cache the
 * files: it fails, loudly, and every committed row is in the database.
 */
Test(preload, sqlite_two_processes_never_lose_rows, .timeout = 200)
{
	char prog[4200], db[64], cmd[4400], line[256];
	long committed = -1, rows = -1;
	int st_w, st_r, fd;
	pid_t w, r;
	FILE *f;

	snprintf(prog, sizeof(prog), "%s/tests/preload-sqlite", builddir());
	if (access(prog, X_OK) != 0)
		cr_skip_test("tests/preload-sqlite is not built (configure found no sqlite3)");
	strcpy(db, "/var/tmp/upc-preload-db.XXXXXX");
	fd = mkstemp(db);
	cr_assert(fd >= 0);
	close(fd);
	unlink(db);	/* SQLite makes it */
	w = start_arg("preload-sqlite", "writer", db, "400", false);
	usleep(300000);
	r = start_arg("preload-sqlite", "reader", db, "300", true);
	st_r = reap(r);
	st_w = reap(w);
	skip_unless_mode();
	f = fopen(outpath, "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		sscanf(line, "committed %ld", &committed);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "%s count %s", prog, db);
	f = popen(cmd, "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		sscanf(line, "rows %ld", &rows);
	cr_assert_eq(WEXITSTATUS(pclose(f)), 0, "integrity check of %s", db);
	if (committed < 0 || rows != committed)
		show();
	cr_assert(committed > 0, "the writer committed nothing (output above)");
	cr_assert_eq(rows, committed, "committed %ld rows, %ld in the database", committed, rows);
	/* works, or fails loudly: a failing process said why */
	if (!WIFEXITED(st_w) || WEXITSTATUS(st_w) || !WIFEXITED(st_r) || WEXITSTATUS(st_r)) {
		cr_assert(file_has(outpath, "error"), "a process failed without a word");
		cr_assert(file_has(outpath, "is cached by process"), "the shim said which process caches it");
	}
	snprintf(cmd, sizeof(cmd), "rm -f %s %s-wal %s-shm", db, db, db);
	(void)!system(cmd);
	unlink(logpath);
	unlink(outpath);
}
