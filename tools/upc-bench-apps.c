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
 */
#include "upc-bench.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct db_ctx {
	const char *kind;
	const char *tracking;		/* NULL: the kernel, no shim */
	double scale;
};

static char worker[PATH_MAX + 64], runner[PATH_MAX + 64];	/* a name after a directory */

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

static int run_worker(const char *kind, const char *tracking, double scale, char *outbuf, size_t outlen)
{
	char sc[32], tr[32];
	int pfd[2], status;
	size_t got = 0;
	pid_t pid;

	snprintf(sc, sizeof(sc), "%g", scale);
	if (pipe(pfd) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
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
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return WIFEXITED(status) ? -WEXITSTATUS(status) : -EINTR;
	return 0;
}

static int db_pass(struct variant *v, struct sample *s)
{
	struct db_ctx *d = v->ctx;
	char out[256];
	unsigned long long ops;
	double ns;
	int ret;

	ret = run_worker(d->kind, d->tracking, d->scale, out, sizeof(out));
	if (ret < 0) {
		warn_variant(v, "the worker failed (%s%d): a wrong read exits 3", ret == -EINTR ? "signal, " : "exit ",
			     -ret);
		return -EIO;
	}
	if (sscanf(out, "ns=%lf ops=%llu", &ns, &ops) != 2) {
		warn_variant(v, "no timing from the worker: \"%s\"", out);
		return -EIO;
	}
	s->ns = ns;
	s->units = ops;
	return 0;
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
	int vk[4], vs[4], va[4];
	char out[256], nm[NAME_LEN];

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
	if (run_worker("lmdb-build", NULL, 1, out, sizeof(out)) ||
	    run_worker("sqlite-build", NULL, 1, out, sizeof(out))) {
		snprintf(w->skip, sizeof(w->skip), "could not build the read databases in %s", B.dir);
		return;
	}
	snprintf(w->setup, sizeof(w->setup), "files in %s; each pass a fresh process (tools/upc-bench-db) "
		 "timing its own work, opening included; the read databases (200k keys of 100 bytes) built "
		 "once; scale %s; %d reps", B.dir, B.quick ? "0.05 (writes), 0.1 (reads)" : "0.2 (writes), 1 (reads)", B.reps);
	for (int i = 0; i < 4; i++) {
		bool wr = strstr(kinds[i], "write") != NULL;
		double scale = B.quick ? (wr ? 0.05 : 0.1) : (wr ? 0.2 : 1);

		d[3 * i] = (struct db_ctx){ kinds[i], NULL, scale };
		d[3 * i + 1] = (struct db_ctx){ kinds[i], "sync", scale };
		d[3 * i + 2] = (struct db_ctx){ kinds[i], "async", scale };
		snprintf(nm, sizeof(nm), "kernel-%s", kinds[i]);
		vk[i] = add_variant(w, nm, db_pass, &d[3 * i], false, "%s, on the kernel", what[i]);
		snprintf(nm, sizeof(nm), "upc-sync-%s", kinds[i]);
		vs[i] = add_variant(w, nm, db_pass, &d[3 * i + 1], false, "the same under upcache-run "
				    "--tracking=sync");
		snprintf(nm, sizeof(nm), "upc-async-%s", kinds[i]);
		va[i] = add_variant(w, nm, db_pass, &d[3 * i + 2], false, "the same under upcache-run "
				    "--tracking=async");
	}
	run_variants(w);
	for (int i = 0; i < 4; i++) {
		char t[120];

		add_ratio(w, vs[i], vk[i]);
		add_ratio(w, va[i], vk[i]);
		snprintf(t, sizeof(t), "%s end to end (sync)", kinds[i]);
		add_target(9, t, vs[i], vk[i], 1.3, "issue 11, row G");
		snprintf(t, sizeof(t), "%s end to end (async)", kinds[i]);
		add_target(9, t, va[i], vk[i], 1.3, "issue 11, row G");
	}
}
