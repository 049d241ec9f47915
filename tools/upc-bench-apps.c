/* SPDX-License-Identifier: MIT */
/*
 * upc-bench-apps.c - workload 9: unmodified databases end to end.  LMDB and
 * SQLite run in a fresh process (tools/upc-bench-db.c), once on the kernel
 * and once under upcache-run(1) in each tracking mode; the timed region is
 * the database's own work (opening it included), measured by the worker,
 * so that process start-up and the shim's loading are not in it.
 *
 * Read workloads read databases built once, untimed, without the shim; a
 * fresh process under the shim starts with an empty cache (upcache's cache
 * lives in the process: embedded mode), so it reads what it touches from
 * the kernel's page cache through its store, where the kernel's variant
 * maps those pages directly.  That is what a new reader pays in embedded
 * mode, and the daemon (shared mode) is the answer to it.
 *
 * Counters: the kernel's (faults, storage bytes) come from the worker's
 * rusage (wait4); upcache's from the shim, which writes its cache's final
 * counters to the file $UPCACHE_RUN_STATS_FILE names when the worker exits
 * (upcache-run(1)).  Row G's notes put them next to bare round trips of the
 * same run (floors measured here, between the database passes): the traps
 * a database operation takes, times what a trap costs without the library.
 */
#include "upc-bench.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct db_ctx {
	const char *kind;
	const char *tracking;		/* NULL: the kernel, no shim */
	double scale;
	uint64_t commits;		/* write transactions a pass (the worker says) */
};

static char worker[PATH_MAX + 64], runner[PATH_MAX + 64];	/* a name after a directory */
static char stats_path[300];		/* $UPCACHE_RUN_STATS_FILE of the passes under the shim */

/* @name next to this program, else in @alt (relative to it); "" if neither is executable. */
static void find_tool(char *out, size_t len, const char *name, const char *alt)
{
	char exe[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	out[0] = 0;
	if (n <= 0)
		return;
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (!slash)
		return;
	*slash = 0;
	/* In the build tree, libtool runs the program from .libs/. */
	slash = strrchr(exe, '/');
	if (slash && !strcmp(slash, "/.libs"))
		*slash = 0;
	if ((size_t)snprintf(out, len, "%s/%s", exe, name) < len && access(out, X_OK) == 0)
		return;
	if (alt && (size_t)snprintf(out, len, "%s/%s/%s", exe, alt, name) < len && access(out, X_OK) == 0)
		return;
	out[0] = 0;
}

/*
 * Run the worker, its output into @outbuf; under upcache-run when @tracking
 * is set, with the shim's counters written to @stats when that is set.
 * @ru (may be NULL) gets the worker's rusage, *@pidp its pid.
 */
static int run_worker(const char *kind, const char *tracking, double scale, const char *stats,
		      char *outbuf, size_t outlen, struct rusage *ru, pid_t *pidp)
{
	char sc[32], tr[32];
	int pfd[2], status;
	struct rusage wru;
	size_t got = 0;
	pid_t pid;

	snprintf(sc, sizeof(sc), "%g", scale);
	if (pipe(pfd) < 0)
		return -errno;
	/* Set here, not in the child: setenv() may allocate, and this process has threads. */
	if (stats)
		setenv("UPCACHE_RUN_STATS_FILE", stats, 1);
	pid = fork();
	if (stats && pid != 0)
		unsetenv("UPCACHE_RUN_STATS_FILE");
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -errno;
	}
	if (pidp)
		*pidp = pid;
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		if (tracking) {
			snprintf(tr, sizeof(tr), "--tracking=%s", tracking);
			execl(runner, runner, tr, worker, kind, B.dir, sc, (char *)NULL);
		} else {
			execl(worker, worker, kind, B.dir, sc, (char *)NULL);
		}
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t r = read(pfd[0], outbuf + got, outlen - 1 - got);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	outbuf[got] = 0;
	close(pfd[0]);
	if (wait4(pid, &status, 0, &wru) < 0)
		return -errno;
	if (ru)
		*ru = wru;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return WIFEXITED(status) ? -WEXITSTATUS(status) : -EINTR;
	return 0;
}

/*
 * The counters the shim wrote for process @pid (upcache-run(1),
 * UPCACHE_RUN_STATS_FILE) into @c, and the file removed.  Returns 0, or a
 * negative errno with @why filled.
 */
static int read_shim_stats(pid_t pid, struct bench_counters *c, char *why, size_t wlen)
{
	static const struct { const char *name; size_t off; } fields[] = {
		{ "faults_missing", CNT(faults_missing) }, { "faults_wp", CNT(faults_wp) },
		{ "faults_minor", CNT(faults_minor) }, { "fill_ios", CNT(fill_ios) },
		{ "pages_filled", CNT(pages_filled) }, { "ra_max_window", CNT(ra_max_window) },
		{ "wp_calls", CNT(wp_calls) }, { "wb_ios", CNT(wb_ios) },
		{ "pages_written", CNT(pages_written) }, { "syncs", CNT(syncs) },
		{ "pages_evicted", CNT(pages_evicted) }, { "pages_cached", CNT(pages_cached) },
		{ "wb_gap_pages", CNT(wb_gap_pages) },
	};
	char buf[4096], *line, *save;
	struct bench_counters t = { .upc = true };
	long fpid = -1, cache = 0;
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(stats_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, wlen, "%s: %s", stats_path, strerror(errno));
		return -ENOENT;
	}
	/* Ours, and a plain file: the directory may be shared (/var/tmp). */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid()) {
		close(fd);
		snprintf(why, wlen, "%s: not a file of ours", stats_path);
		return -EPERM;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unlink(stats_path);
	if (n <= 0) {
		snprintf(why, wlen, "%s: empty", stats_path);
		return -ENODATA;
	}
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[48], val[32];

		if (sscanf(line, "%47s %31s", name, val) != 2)
			continue;
		if (!strcmp(name, "pid"))
			fpid = strtol(val, NULL, 10);
		else if (!strcmp(name, "cache"))
			cache = strtol(val, NULL, 10);
		else if (!strcmp(name, "track_mode"))
			t.track_mode = strcmp(val, "async") ? UPC_TRACK_SYNC : UPC_TRACK_ASYNC;
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			if (!strcmp(name, fields[i].name))
				*(uint64_t *)((char *)&t + fields[i].off) = strtoull(val, NULL, 10);
	}
	if (fpid != pid) {
		snprintf(why, wlen, "%s: the counters of process %ld, not of the worker (%d)", stats_path,
			 fpid, (int)pid);
		return -ESRCH;
	}
	if (!cache) {
		snprintf(why, wlen, "the worker made no cache (no mapping taken over)");
		return -ENODATA;
	}
	/* Keep the kernel's counters (rusage, device) taken already. */
	c->upc = true;
	c->track_mode = t.track_mode;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		*(uint64_t *)((char *)c + fields[i].off) = *(uint64_t *)((char *)&t + fields[i].off);
	return 0;
}

static int db_pass(struct variant *v, struct sample *s)
{
	struct db_ctx *d = v->ctx;
	char out[256], why[400];
	unsigned long long ops, commits = 0;
	struct rusage ru;
	double ns;
	pid_t pid = -1;
	int ret;

	if (d->tracking)
		unlink(stats_path);	/* the shim makes it new (O_EXCL) */
	snap_begin(&s->c, NULL);
	ret = run_worker(d->kind, d->tracking, d->scale, d->tracking ? stats_path : NULL, out, sizeof(out),
			 &ru, &pid);
	snap_end(&s->c, NULL);
	if (ret < 0) {
		warn_variant(v, "the worker failed (%s%d): a wrong read exits 3", ret == -EINTR ? "signal, " : "exit ",
			     -ret);
		return -EIO;
	}
	if (sscanf(out, "ns=%lf ops=%llu commits=%llu", &ns, &ops, &commits) < 2) {
		warn_variant(v, "no timing from the worker: \"%s\"", out);
		return -EIO;
	}
	/* The worker's own counters, not this process's (the device's stay: whole device). */
	s->c.minflt = (uint64_t)ru.ru_minflt;
	s->c.majflt = (uint64_t)ru.ru_majflt;
	s->c.io_rd_kib = (uint64_t)ru.ru_inblock / 2;	/* 512-byte blocks: read_bytes, write_bytes */
	s->c.io_wr_kib = (uint64_t)ru.ru_oublock / 2;
	if (d->tracking && read_shim_stats(pid, &s->c, why, sizeof(why)) < 0)
		warn_variant(v, "no upcache counters from the shim: %s", why);
	d->commits = commits;
	s->ns = ns;
	s->units = ops;
	return 0;
}

/*
 * Workload 9's floors: bare round trips of each kind of trap, with the
 * handler on the faulting CPU, on the other one, and as the library places
 * its handlers (one pinned to each CPU, all woken by each fault: row F's
 * per-CPU floor).
 */
enum { FL_WP, FL_MISSING, FL_MINOR, FL_KINDS };
#define FL_PLACES	3

/* What share of the difference @tu - @tk the traps' estimate @est is, for row G's note. */
static const char *diff_share(char *buf, size_t len, double est, double tu, double tk)
{
	if (tu > tk && est <= tu - tk)
		snprintf(buf, len, " (%.0f%% of the difference)", 100 * est / (tu - tk));
	else
		snprintf(buf, len, "%s", tu > tk ? " (more than the difference)" : "");
	return buf;
}

/*
 * Row G's note: what the upcache variant @vu pays over the kernel's @vk an
 * operation, the traps it took times the bare round trips of this run
 * (@fl[kind][0] with the handler on the faulting CPU, [1] on the other,
 * [2] a handler on each CPU),
 * what it wrote a commit against the kernel, then bound_str() of both.
 */
static void g_note(char *note, size_t len, struct workload *w, int vu, int vk, const struct db_ctx *d,
		   int fl[FL_KINDS][FL_PLACES])
{
	static const char *const kname[FL_KINDS] = { "WP", "MISSING", "MINOR" };
	static const size_t koff[FL_KINDS] = { CNT(faults_wp), CNT(faults_missing), CNT(faults_minor) };
	const struct variant *u = &w->var[vu], *k = &w->var[vk];
	double tu = med_us(u), tk = med_us(k), est[FL_PLACES] = { 0, 0, 0 }, per[FL_KINDS];
	char share[40];
	bool upc = false;
	size_t n = 0;

#define APP(...) do { if (n < len) n += (size_t)snprintf(note + n, len - n, __VA_ARGS__); } while (0)
	note[0] = 0;
	if (isnan(tu) || isnan(tk)) {
		APP("not run (--match, or a failed worker: see the table)");
		return;
	}
	for (int rep = 0; rep < MAX_REPS; rep++)
		if (u->samp[rep].units && u->samp[rep].c.upc)
			upc = true;
	APP("%+.3g us an operation over the kernel (%.3g against %.3g)", tu - tk, tu, tk);
	if (!upc) {
		APP("; no upcache counters: %s", u->warn[0] ? u->warn : "the passes did not run");
		return;
	}
	APP("; traps an operation:");
	for (int i = 0; i < FL_KINDS; i++) {
		per[i] = med_per_unit(u, koff[i]);
		APP("%s %.3g %s", i ? "," : "", per[i], kname[i]);
		for (int p = 0; p < FL_PLACES; p++)
			if (per[i] > 0)
				est[p] += per[i] * med_us(&w->var[fl[i][p]]);
	}
	if (isnan(est[0]) || isnan(est[1])) {
		APP("; the bare round trips did not run (--match)");
	} else {
		APP("; at this run's bare round trips (handler on the faulting CPU / the other CPU: WP "
		    "%.3g / %.3g, MISSING with a 4 KiB pread %.3g / %.3g, MINOR %.3g / %.3g us) the traps "
		    "cost %.3g us an operation", med_us(&w->var[fl[FL_WP][0]]),
		    med_us(&w->var[fl[FL_WP][1]]), med_us(&w->var[fl[FL_MISSING][0]]),
		    med_us(&w->var[fl[FL_MISSING][1]]), med_us(&w->var[fl[FL_MINOR][0]]),
		    med_us(&w->var[fl[FL_MINOR][1]]), est[0]);
		APP("%s, %.3g with the handler on the other CPU", diff_share(share, sizeof(share), est[0], tu, tk),
		    est[1]);
		if (isnan(est[2]))
			APP("; the per-CPU round trips did not run");
		else
			APP("; at the library's placement (a handler pinned to each CPU, all woken by each "
			    "fault: WP %.3g, MISSING with a 4 KiB pread %.3g, MINOR %.3g us) %.3g us an "
			    "operation%s", med_us(&w->var[fl[FL_WP][2]]), med_us(&w->var[fl[FL_MISSING][2]]),
			    med_us(&w->var[fl[FL_MINOR][2]]), est[2], diff_share(share, sizeof(share), est[2], tu, tk));
	}
	if (d->commits) {
		double c = (double)d->commits, wb = med_cnt(u, CNT(wb_ios));

		/*
		 * What was written, not write_bytes: that counts a buffered
		 * write's whole large folio when it is dirtied, which the
		 * store's 4 KiB writes into ext4's page cache inflate.
		 */
		APP("; a commit (%" PRIu64 " a pass): %.3g syncs, %.3g write-protect calls, %.3g write I/Os "
		    "of %.3g pages (%.4g KiB written back); the device wrote %.4g KiB a commit (the kernel's "
		    "passes: %.4g; whole device)", d->commits, med_cnt(u, CNT(syncs)) / c,
		    med_cnt(u, CNT(wp_calls)) / c, wb / c, wb > 0 ? med_cnt(u, CNT(pages_written)) / wb : 0.0,
		    med_cnt(u, CNT(pages_written)) * 4 / c, med_cnt(u, CNT(dev_wr_kib)) / c,
		    med_cnt(k, CNT(dev_wr_kib)) / c);
	}
#undef APP
	bound_str(note, len, w, vu);
	bound_str(note, len, w, vk);
}

void wl9_databases(struct workload *w)
{
	static const char *const kinds[4] = { "lmdb-write", "lmdb-read", "sqlite-write", "sqlite-read" };
	static const char *const what[4] = {
		"LMDB, MDB_WRITEMAP, a synced commit every 50 puts, then random deletes and puts",
		"LMDB, default mode (read-only map): 500k random gets and a full cursor scan, fresh process",
		"SQLite, WAL, mmap_size, synchronous=FULL: inserts, updates, deletes, 50 a commit, an index",
		"SQLite, mmap_size: 200k random point selects and a full scan, fresh process",
	};
	struct db_ctx *d = calloc(12, sizeof(*d));
	int vk[4], vs[4], va[4], fl[FL_KINDS][FL_PLACES];
	char out[256], nm[NAME_LEN];
	static char fpath[256];
	size_t fpages = 1024;

	snprintf(w->title, sizeof(w->title), "databases end to end: LMDB and SQLite under upcache-run");
	snprintf(w->unit, sizeof(w->unit), "operation");
	if (!d)
		exit(1);
	find_tool(worker, sizeof(worker), "upc-bench-db", NULL);
	find_tool(runner, sizeof(runner), "upcache-run", "../preload");
	if (getenv("UPCACHE_RUN"))
		snprintf(runner, sizeof(runner), "%s", getenv("UPCACHE_RUN"));
	if (!worker[0]) {
		snprintf(w->skip, sizeof(w->skip), "upc-bench-db was not built (configure found no "
			 "liblmdb-dev or libsqlite3-dev)");
		return;
	}
	if (!runner[0] || access(runner, X_OK)) {
		snprintf(w->skip, sizeof(w->skip), "no upcache-run next to upc-bench, in ../preload, or in "
			 "$UPCACHE_RUN");
		return;
	}
	if (run_worker("lmdb-build", NULL, 1, NULL, out, sizeof(out), NULL, NULL) ||
	    run_worker("sqlite-build", NULL, 1, NULL, out, sizeof(out), NULL, NULL)) {
		snprintf(w->skip, sizeof(w->skip), "could not build the read databases in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "files in %s; each pass a fresh process (tools/upc-bench-db) "
		 "timing its own work, opening included; the read databases (200k keys of 100 bytes) built "
		 "once; scale %s; %d reps", B.dir, B.quick ? "0.05 (writes), 0.1 (reads)" : "0.2 (writes), 1 (reads)", B.reps);
	for (int i = 0; i < 4; i++) {
		bool wr = strstr(kinds[i], "write") != NULL;
		double scale = B.quick ? (wr ? 0.05 : 0.1) : (wr ? 0.2 : 1);

		d[3 * i] = (struct db_ctx){ .kind = kinds[i], .tracking = NULL, .scale = scale };
		d[3 * i + 1] = (struct db_ctx){ .kind = kinds[i], .tracking = "sync", .scale = scale };
		d[3 * i + 2] = (struct db_ctx){ .kind = kinds[i], .tracking = "async", .scale = scale };
		snprintf(nm, sizeof(nm), "kernel-%s", kinds[i]);
		vk[i] = add_variant(w, nm, db_pass, &d[3 * i], false, "%s, on the kernel", what[i]);
		snprintf(nm, sizeof(nm), "upc-sync-%s", kinds[i]);
		vs[i] = add_variant(w, nm, db_pass, &d[3 * i + 1], false, "the same under upcache-run "
				    "--tracking=sync");
		snprintf(nm, sizeof(nm), "upc-async-%s", kinds[i]);
		va[i] = add_variant(w, nm, db_pass, &d[3 * i + 2], false, "the same under upcache-run "
				    "--tracking=async");
	}
	/*
	 * The bare round trips row G's notes price the traps at, run between
	 * the database passes: a write-protect trap, a MISSING fault whose
	 * handler reads the page from a cached file first (a fill from the
	 * kernel's page cache), a MINOR fault; the handler on the faulting
	 * thread's CPU, on the other one, and one on each CPU (the library's
	 * placement).  A unit of these rows is a fault.
	 */
	bench_file_name("stats", stats_path, sizeof(stats_path));
	if (bench_file("dbfloor", fpages * PG, fpath, sizeof(fpath)) == 0)
		warm_file_cache(fpath);
	for (int p = 0; p < FL_PLACES; p++) {
		static const int pins[FL_PLACES] = { PIN_SAME, PIN_OTHER, PIN_PERCPU };
		static const char *const places[FL_PLACES] = { "same-cpu", "other-cpu", "percpu" };
		int pin = pins[p];
		const char *where = places[p];

		snprintf(nm, sizeof(nm), "floor-wp-%s", where);
		fl[FL_WP][p] = floor_wp_variant(w, nm, pin, true, fpages);
		snprintf(nm, sizeof(nm), "floor-missing+pread-%s", where);
		fl[FL_MISSING][p] = floor_missing_variant(w, nm, pin, false, false, fpath, fpages, NULL,
							  fpages, true);
		snprintf(nm, sizeof(nm), "floor-minor-%s", where);
		fl[FL_MINOR][p] = floor_minor1_variant(w, nm, pin, true, fpages, NULL, fpages);
	}
	run_variants(w);
	for (int i = 0; i < 4; i++) {
		char t[120], note[1200];

		add_ratio(w, vs[i], vk[i]);
		add_ratio(w, va[i], vk[i]);
		snprintf(t, sizeof(t), "%s end to end (sync)", kinds[i]);
		g_note(note, sizeof(note), w, vs[i], vk[i], &d[3 * i + 1], fl);
		add_target(9, t, vs[i], vk[i], 1.3, note);
		snprintf(t, sizeof(t), "%s end to end (async)", kinds[i]);
		g_note(note, sizeof(note), w, va[i], vk[i], &d[3 * i + 2], fl);
		add_target(9, t, va[i], vk[i], 1.3, note);
	}
	snprintf(w->note, sizeof(w->note), "kernel counters from the worker's rusage, upcache's from the "
		 "shim at the worker's exit (UPCACHE_RUN_STATS_FILE; the exit's write-back included); the "
		 "floor rows (a unit: one fault) price row G's traps: a bare round trip of each kind, %zu "
		 "faults a pass, the handler on the faulting CPU or the other one", fpages);
	unlink(stats_path);
}
