/* SPDX-License-Identifier: MIT */
/*
 * upc-bench-db - the database end of upc-bench's workload 9: one timed
 * LMDB or SQLite workload, run by upc-bench in a fresh process on the
 * kernel and under upcache-run(1), so that what is compared is what a user
 * of an unmodified database sees.
 *
 *   upc-bench-db KIND DIR SCALE
 *
 * KIND:
 *   lmdb-build, sqlite-build   make the databases the read workloads read
 *                              (untimed, run once without the shim)
 *   lmdb-write    MDB_WRITEMAP, a synced commit (msync) every 50 puts
 *   lmdb-read     default mode (read-only map), random gets and a full
 *                 cursor scan of the database lmdb-build made
 *   sqlite-write  WAL, PRAGMA mmap_size over the database, synchronous=FULL,
 *                 a commit every 50 inserts, updates and deletes
 *   sqlite-read   mmap_size, random point selects and a full scan of the
 *                 database sqlite-build made
 * SCALE multiplies the operation counts (1 = the full run).
 *
 * The timed region starts before the database is opened (a fresh process
 * opening a database is part of what a reader pays) and ends after the last
 * commit; it is printed as "ns=N ops=N commits=N" on stdout (commits: the
 * write transactions), and upc-bench reads it.
 * Every workload checks what it reads; a wrong value exits 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH		50
#define VAL_LEN		100
#define READ_KEYS	200000u

static uint64_t commits;	/* write transactions committed in the timed region */

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "upc-bench-db: %s: %s\n", what, err);
	exit(2);
}

#define MDB(call) do { int rc_ = (call); if (rc_) die(#call, mdb_strerror(rc_)); } while (0)

/* The value stored under key @k: derived from it, so that a read can be checked. */
static void value_of(uint64_t k, char *v)
{
	for (int i = 0; i < VAL_LEN; i += 8) {
		uint64_t w = k * 0x9e3779b97f4a7c15ULL + (uint64_t)i;

		memcpy(v + i, &w, VAL_LEN - i < 8 ? (size_t)(VAL_LEN - i) : 8);
	}
}

static MDB_env *lmdb_open(const char *dir, unsigned int flags, size_t mapsize)
{
	MDB_env *env;

	MDB(mdb_env_create(&env));
	MDB(mdb_env_set_mapsize(env, mapsize));
	MDB(mdb_env_open(env, dir, flags | MDB_NOSUBDIR, 0644));
	return env;
}

static uint64_t lmdb_put_batches(MDB_env *env, uint64_t keys, uint64_t seed, bool deletes)
{
	uint64_t s = seed, ops = 0;
	char v[VAL_LEN];

	for (uint64_t done = 0; done < keys; done += BATCH) {
		MDB_txn *txn;
		MDB_dbi dbi;

		MDB(mdb_txn_begin(env, NULL, 0, &txn));
		MDB(mdb_dbi_open(txn, NULL, 0, &dbi));
		for (unsigned int i = 0; i < BATCH; i++) {
			uint64_t k = deletes ? rnd(&s) % (keys * 2) : done + i;
			MDB_val key = { sizeof(k), &k }, val = { VAL_LEN, v };
			int rc;

			if (deletes && (k & 7) == 0) {
				rc = mdb_del(txn, dbi, &key, NULL);
				if (rc && rc != MDB_NOTFOUND)
					die("mdb_del", mdb_strerror(rc));
			} else {
				value_of(k, v);
				MDB(mdb_put(txn, dbi, &key, &val, 0));
			}
			ops++;
		}
		MDB(mdb_txn_commit(txn));	/* synced: the env has neither MDB_NOSYNC nor MDB_NOMETASYNC */
		commits++;
	}
	return ops;
}

static void lmdb_build(const char *dir)
{
	char path[512];
	MDB_env *env;

	snprintf(path, sizeof(path), "%s/lmdb-read.mdb", dir);
	unlink(path);
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "-lock");
	unlink(path);
	snprintf(path, sizeof(path), "%s/lmdb-read.mdb", dir);
	env = lmdb_open(path, MDB_WRITEMAP | MDB_NOSYNC, 1UL << 30);
	lmdb_put_batches(env, READ_KEYS, 1, false);
	MDB(mdb_env_sync(env, 1));
	mdb_env_close(env);
}

static uint64_t lmdb_write(const char *dir, double scale)
{
	uint64_t keys = (uint64_t)(100000 * scale) / BATCH * BATCH, ops;
	char path[512], lock[600];
	MDB_env *env;

	snprintf(path, sizeof(path), "%s/lmdb-write.mdb", dir);
	snprintf(lock, sizeof(lock), "%s-lock", path);
	unlink(path);
	unlink(lock);
	env = lmdb_open(path, MDB_WRITEMAP, 1UL << 30);
	ops = lmdb_put_batches(env, keys, 7, false);
	ops += lmdb_put_batches(env, keys / 2, 11, true);
	mdb_env_close(env);
	return ops;
}

static uint64_t lmdb_read(const char *dir, double scale)
{
	uint64_t gets = (uint64_t)(500000 * scale), s = 3, ops = 0, seen = 0;
	char path[512], v[VAL_LEN];
	MDB_cursor *cur;
	MDB_val key, val;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	snprintf(path, sizeof(path), "%s/lmdb-read.mdb", dir);
	env = lmdb_open(path, MDB_RDONLY, 1UL << 30);
	MDB(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
	MDB(mdb_dbi_open(txn, NULL, 0, &dbi));
	for (uint64_t i = 0; i < gets; i++, ops++) {
		uint64_t k = rnd(&s) % READ_KEYS;

		key = (MDB_val){ sizeof(k), &k };
		MDB(mdb_get(txn, dbi, &key, &val));
		value_of(k, v);
		if (val.mv_size != VAL_LEN || memcmp(val.mv_data, v, VAL_LEN)) {
			fprintf(stderr, "upc-bench-db: lmdb-read: key %" PRIu64 " reads wrong\n", k);
			exit(3);
		}
	}
	MDB(mdb_cursor_open(txn, dbi, &cur));
	while (mdb_cursor_get(cur, &key, &val, MDB_NEXT) == 0)
		seen++;
	if (seen != READ_KEYS) {
		fprintf(stderr, "upc-bench-db: lmdb-read: the scan saw %" PRIu64 " keys\n", seen);
		exit(3);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return ops + seen;
}

static void sql(sqlite3 *db, const char *q)
{
	char *err = NULL;

	if (sqlite3_exec(db, q, NULL, NULL, &err) != SQLITE_OK)
		die(q, err ? err : "?");
}

static sqlite3 *sqlite_open(const char *path, bool wal)
{
	sqlite3 *db;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		die(path, sqlite3_errmsg(db));
	sql(db, "PRAGMA mmap_size=1073741824");
	if (wal)
		sql(db, "PRAGMA journal_mode=WAL");
	sql(db, "PRAGMA synchronous=FULL");
	return db;
}

static uint64_t sqlite_fill(sqlite3 *db, uint64_t rows, uint64_t seed)
{
	sqlite3_stmt *ins, *upd, *del;
	uint64_t s = seed, ops = 0;
	char v[VAL_LEN];

	sql(db, "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, a INTEGER, v BLOB)");
	if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO t VALUES(?, ?, ?)", -1, &ins, NULL) ||
	    sqlite3_prepare_v2(db, "UPDATE t SET a = a + 1 WHERE k = ?", -1, &upd, NULL) ||
	    sqlite3_prepare_v2(db, "DELETE FROM t WHERE k = ?", -1, &del, NULL))
		die("prepare", sqlite3_errmsg(db));
	for (uint64_t done = 0; done < rows; done += BATCH) {
		sql(db, "BEGIN");
		for (unsigned int i = 0; i < BATCH; i++, ops++) {
			uint64_t k = done + i, r = rnd(&s);

			value_of(k, v);
			sqlite3_bind_int64(ins, 1, (sqlite3_int64)k);
			sqlite3_bind_int64(ins, 2, (sqlite3_int64)(r & 0xffff));
			sqlite3_bind_blob(ins, 3, v, VAL_LEN, SQLITE_STATIC);
			if (sqlite3_step(ins) != SQLITE_DONE)
				die("insert", sqlite3_errmsg(db));
			sqlite3_reset(ins);
			if (k > 100 && (r & 3) == 0) {		/* an update of an older row */
				sqlite3_bind_int64(upd, 1, (sqlite3_int64)(r % k));
				if (sqlite3_step(upd) != SQLITE_DONE)
					die("update", sqlite3_errmsg(db));
				sqlite3_reset(upd);
				ops++;
			}
			if (k > 100 && (r & 15) == 1) {		/* and a delete */
				sqlite3_bind_int64(del, 1, (sqlite3_int64)((r >> 8) % k));
				if (sqlite3_step(del) != SQLITE_DONE)
					die("delete", sqlite3_errmsg(db));
				sqlite3_reset(del);
				ops++;
			}
		}
		sql(db, "COMMIT");
		commits++;
	}
	sqlite3_finalize(ins);
	sqlite3_finalize(upd);
	sqlite3_finalize(del);
	return ops;
}

static void sqlite_unlink(const char *path)
{
	char p[600];

	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-journal", path);
	unlink(p);
}

static void sqlite_build(const char *dir)
{
	char path[512];
	sqlite3 *db;
	uint64_t s = 5;
	char v[VAL_LEN];
	sqlite3_stmt *ins;

	snprintf(path, sizeof(path), "%s/sqlite-read.db", dir);
	sqlite_unlink(path);
	db = sqlite_open(path, false);
	sql(db, "PRAGMA synchronous=OFF");
	sql(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, a INTEGER, v BLOB)");
	if (sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?, ?, ?)", -1, &ins, NULL))
		die("prepare", sqlite3_errmsg(db));
	sql(db, "BEGIN");
	for (uint64_t k = 0; k < READ_KEYS; k++) {
		value_of(k, v);
		sqlite3_bind_int64(ins, 1, (sqlite3_int64)k);
		sqlite3_bind_int64(ins, 2, (sqlite3_int64)(rnd(&s) & 0xffff));
		sqlite3_bind_blob(ins, 3, v, VAL_LEN, SQLITE_STATIC);
		if (sqlite3_step(ins) != SQLITE_DONE)
			die("insert", sqlite3_errmsg(db));
		sqlite3_reset(ins);
	}
	sql(db, "COMMIT");
	sql(db, "CREATE INDEX ta ON t(a)");
	sqlite3_finalize(ins);
	sqlite3_close(db);
}

static uint64_t sqlite_write(const char *dir, double scale)
{
	uint64_t rows = (uint64_t)(50000 * scale) / BATCH * BATCH, ops;
	char path[512];
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/sqlite-write.db", dir);
	sqlite_unlink(path);
	db = sqlite_open(path, true);
	ops = sqlite_fill(db, rows, 9);
	sql(db, "CREATE INDEX ta ON t(a)");
	sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	sqlite3_close(db);
	return ops + 2;
}

static uint64_t sqlite_read(const char *dir, double scale)
{
	uint64_t sel = (uint64_t)(200000 * scale), s = 13, ops = 0;
	char path[512], v[VAL_LEN];
	sqlite3_stmt *q, *scan;
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/sqlite-read.db", dir);
	db = sqlite_open(path, false);
	if (sqlite3_prepare_v2(db, "SELECT v FROM t WHERE k = ?", -1, &q, NULL) ||
	    sqlite3_prepare_v2(db, "SELECT count(*), sum(a) FROM t", -1, &scan, NULL))
		die("prepare", sqlite3_errmsg(db));
	for (uint64_t i = 0; i < sel; i++, ops++) {
		uint64_t k = rnd(&s) % READ_KEYS;

		sqlite3_bind_int64(q, 1, (sqlite3_int64)k);
		value_of(k, v);
		if (sqlite3_step(q) != SQLITE_ROW || sqlite3_column_bytes(q, 0) != VAL_LEN ||
		    memcmp(sqlite3_column_blob(q, 0), v, VAL_LEN)) {
			fprintf(stderr, "upc-bench-db: sqlite-read: row %" PRIu64 " reads wrong\n", k);
			exit(3);
		}
		sqlite3_reset(q);
	}
	if (sqlite3_step(scan) != SQLITE_ROW || sqlite3_column_int64(scan, 0) != READ_KEYS) {
		fprintf(stderr, "upc-bench-db: sqlite-read: the scan counted %lld rows\n",
			(long long)sqlite3_column_int64(scan, 0));
		exit(3);
	}
	sqlite3_finalize(q);
	sqlite3_finalize(scan);
	sqlite3_close(db);
	return ops + 1;
}

int main(int argc, char **argv)
{
	double scale, t0, t1;
	uint64_t ops = 0;
	const char *kind, *dir;

	if (argc != 4) {
		fprintf(stderr, "usage: upc-bench-db KIND DIR SCALE\n");
		return 2;
	}
	kind = argv[1];
	dir = argv[2];
	scale = strtod(argv[3], NULL);
	if (scale <= 0 || scale > 100)
		die("SCALE", "not in (0, 100]");
	if (!strcmp(kind, "lmdb-build")) {
		lmdb_build(dir);
		return 0;
	}
	if (!strcmp(kind, "sqlite-build")) {
		sqlite_build(dir);
		return 0;
	}
	commits = 0;
	t0 = now_ns();
	if (!strcmp(kind, "lmdb-write"))
		ops = lmdb_write(dir, scale);
	else if (!strcmp(kind, "lmdb-read"))
		ops = lmdb_read(dir, scale);
	else if (!strcmp(kind, "sqlite-write"))
		ops = sqlite_write(dir, scale);
	else if (!strcmp(kind, "sqlite-read"))
		ops = sqlite_read(dir, scale);
	else
		die(kind, "unknown workload");
	t1 = now_ns();
	printf("ns=%.0f ops=%" PRIu64 " commits=%" PRIu64 "\n", t1 - t0, ops, commits);
	return 0;
}
