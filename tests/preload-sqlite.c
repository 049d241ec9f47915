/* SPDX-License-Identifier: MIT */
/*
 * preload-sqlite - SQLite in WAL mode with PRAGMA mmap_size, as two
 * processes use it (tests/test_preload.c runs them under upcache-run):
 *
 *   preload-sqlite writer DB N   N inserts, one commit each; prints
 *                                "committed K" (the commits that returned
 *                                SQLITE_OK) and exits 0 if K == N
 *   preload-sqlite reader DB N   N times "select count(*)", 10 ms apart;
 *                                exits 0, or prints the error and exits 3
 *   preload-sqlite count DB      prints "rows R" and the integrity check
 *
 * Two caches of one file lost committed rows here (the reader's stale
 * wal-index, then its checkpoint at close): the rows left must be the
 * writer's commits, whatever else happened.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db;

	if (sqlite3_open(path, &db) != SQLITE_OK) {
		fprintf(stderr, "preload-sqlite: open %s: %s\n", path, sqlite3_errmsg(db));
		exit(3);
	}
	sqlite3_busy_timeout(db, 10000);
	return db;
}

static int exec(sqlite3 *db, const char *sql, const char *who)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK)
		fprintf(stderr, "preload-sqlite %s: %s: error %s\n", who, sql, err ? err : sqlite3_errstr(rc));
	sqlite3_free(err);
	return rc;
}

static long count(sqlite3 *db, int *rc)
{
	sqlite3_stmt *st;
	long n = -1;

	*rc = sqlite3_prepare_v2(db, "select count(*) from t", -1, &st, NULL);
	if (*rc != SQLITE_OK)
		return -1;
	*rc = sqlite3_step(st);
	if (*rc == SQLITE_ROW) {
		n = sqlite3_column_int64(st, 0);
		*rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return n;
}

int main(int argc, char **argv)
{
	sqlite3 *db;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: preload-sqlite writer|reader|count DB [N]\n");
		return 2;
	}
	alarm(100);
	db = open_db(argv[2]);
	if (!strcmp(argv[1], "writer") && argc > 3) {
		int n = atoi(argv[3]), done = 0;

		if (exec(db, "pragma journal_mode=wal", "writer") || exec(db, "pragma mmap_size=100000000", "writer") ||
		    exec(db, "create table if not exists t(k integer primary key, v text)", "writer"))
			return 3;
		/* the table exists: the test starts its reader now, not after a guessed delay */
		printf("ready\n");
		fflush(stdout);
		for (int i = 0; i < n; i++) {
			if (exec(db, "begin", "writer"))
				break;
			if (exec(db, "insert into t(v) values(printf('%.200c', 'x'))", "writer")) {
				exec(db, "rollback", "writer");
				break;
			}
			if (exec(db, "commit", "writer"))
				break;
			done++;
			usleep(2000);
		}
		printf("committed %d\n", done);
		rc = sqlite3_close(db);
		return done == n && rc == SQLITE_OK ? 0 : 3;
	}
	if (!strcmp(argv[1], "reader") && argc > 3) {
		int n = atoi(argv[3]);

		if (exec(db, "pragma mmap_size=100000000", "reader"))
			return 3;
		for (int i = 0; i < n; i++) {
			count(db, &rc);
			if (rc != SQLITE_OK) {
				fprintf(stderr, "preload-sqlite reader: select count(*): error %s\n", sqlite3_errmsg(db));
				sqlite3_close(db);
				return 3;
			}
			usleep(10000);
		}
		return sqlite3_close(db) == SQLITE_OK ? 0 : 3;
	}
	if (!strcmp(argv[1], "count")) {
		long n = count(db, &rc);

		if (rc != SQLITE_OK) {
			fprintf(stderr, "preload-sqlite count: %s\n", sqlite3_errmsg(db));
			return 3;
		}
		printf("rows %ld\n", n);
		rc = exec(db, "pragma integrity_check", "count");
		sqlite3_close(db);
		return rc ? 3 : 0;
	}
	fprintf(stderr, "preload-sqlite: unknown mode %s\n", argv[1]);
	return 2;
}
