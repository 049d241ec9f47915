/* SPDX-License-Identifier: MIT */
/*
 * lmdb-work - a deterministic LMDB workload for the real-client tests of
 * upcache (issue 9).  It runs the same on the kernel and under upcache-run,
 * so that the databases the two runs leave can be compared with mdb_dump and
 * mdb_stat; and it checks itself as it goes.
 *
 * Every value names its key and its version and is filled with bytes
 * derived from both, so any value read back can be checked on its own.  The
 * program keeps a model (the version of every key, 0 = absent) and checks
 * cursor scans of the database against it.
 *
 * Usage:
 *   lmdb-work [-w] [-f] [-m mapsize] [-r] [-n txns] [-b batch] [-S seed] [DIR]
 *       the workload: txns write transactions of about batch puts and a few
 *       deletes each, in a main database and in a MDB_DUPSORT one ("dups");
 *       a cursor scan checked against the model every 7 transactions and at
 *       the end; MDB_NOSYNC with mdb_env_sync(force) every 5 transactions and
 *       at the end.  An existing database in DIR is read into the model
 *       first (every value checked), so runs can follow each other.
 *       -w MDB_WRITEMAP; -f MDB_FIXEDMAP; -m the map size (suffix K, M, G, T;
 *       default 64M); -r start with a 1 MiB map and grow it with
 *       mdb_env_set_mapsize() at MDB_MAP_FULL and, in any case, half way
 *       (not with -f: LMDB cannot promise the larger map the same address).
 *       Without DIR: in a new temporary directory, removed at the end.
 *   lmdb-work -K progress [-w] [-m mapsize] DIR
 *       a writer to be killed: synced commits (no MDB_NOSYNC) of one txn
 *       each, forever; after each commit returns, its number is appended to
 *       the file progress and fdatasync'd.  Its pid goes to progress.pid.
 *   lmdb-work -V progress DIR
 *       after the writer was killed: every commit named in progress must be
 *       in the database, and every value must check.
 * Exit status: 0 passed, 1 a check failed, 2 usage or LMDB error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NKEYS 20000u
#define NDUPKEYS 200u
#define MAXVAL 3000u

static uint64_t rng;
static uint32_t version[NKEYS];		/* the model: 0 = absent */
static uint32_t dups[NDUPKEYS];		/* per dup key, a bitmap of 32 duplicates present */
static unsigned long nput, ndel, nscan, nsync, nresize;

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "lmdb-work: FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define CHECK(call) do {						\
	int rc_ = (call);						\
	if (rc_) {							\
		fprintf(stderr, "lmdb-work: %s:%d: %s: %s\n", __FILE__,	\
			__LINE__, #call, mdb_strerror(rc_));		\
		exit(2);						\
	}								\
} while (0)

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static size_t val_len(uint32_t key, uint32_t ver)
{
	return 16 + (((uint64_t)key * 2654435761u + ver * 40503u) % (MAXVAL - 16));
}

/* The value of @key at @ver: "kkkkkkkk vvvvvv:" then bytes of (key, ver, i). */
static void make_val(uint32_t key, uint32_t ver, unsigned char *v, size_t len)
{
	snprintf((char *)v, 17, "%08x %06x:", key, ver & 0xffffff);
	for (size_t i = 16; i < len; i++)
		v[i] = (unsigned char)(key * 7 + ver * 13 + i * 31 + (i >> 8));
}

/* Check a value on its own; returns its version. */
static uint32_t check_val(uint32_t key, const MDB_val *v)
{
	unsigned char want[MAXVAL];
	unsigned int k, ver;
	char head[17];

	/* sscanf() reads to a NUL, and a value has none: a copy of its header, ended */
	if (v->mv_size >= 16) {
		memcpy(head, v->mv_data, 16);
		head[16] = 0;
	}
	if (v->mv_size < 16 || sscanf(head, "%8x %6x:", &k, &ver) != 2 || k != key)
		fail("key %u: value of %zu bytes does not name its key", key, v->mv_size);
	if (v->mv_size != val_len(key, ver))
		fail("key %u version %u: %zu bytes, expected %zu", key, ver, v->mv_size,
		     val_len(key, ver));
	make_val(key, ver, want, v->mv_size);
	if (memcmp(want, v->mv_data, v->mv_size)) {
		size_t i = 0;

		while (((unsigned char *)v->mv_data)[i] == want[i])
			i++;
		fail("key %u version %u: byte %zu is 0x%02x, expected 0x%02x", key, ver, i,
		     ((unsigned char *)v->mv_data)[i], want[i]);
	}
	return ver;
}

static void key_of(uint32_t key, char out[16], MDB_val *k)
{
	snprintf(out, 16, "k%08u", key);
	k->mv_data = out;
	k->mv_size = 9;
}

/*
 * A scan of both databases, checked against the model; @load: fill the
 * model from what is found instead (values still checked).
 */
static void scan(MDB_env *env, MDB_dbi dbi, MDB_dbi ddbi, int load)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	uint32_t seen = 0, want = 0;
	int rc;

	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
	CHECK(mdb_cursor_open(txn, dbi, &cur));
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		char kbuf[16];
		unsigned int key;
		uint32_t ver;

		memcpy(kbuf, k.mv_data, k.mv_size < 15 ? k.mv_size : 15);
		kbuf[k.mv_size < 15 ? k.mv_size : 15] = 0;
		if (kbuf[0] == 'c')	/* commit markers of -K, checked by -V */
			continue;
		if (k.mv_size != 9 || sscanf(kbuf, "k%8u", &key) != 1 || key >= NKEYS)
			fail("scan: unexpected key '%s'", kbuf);
		ver = check_val(key, &v);
		if (load)
			version[key] = ver;
		else if (version[key] != ver)
			fail("scan: key %u has version %u, the model says %u", key, ver,
			     version[key]);
		seen++;
	}
	if (rc != MDB_NOTFOUND)
		CHECK(rc);
	mdb_cursor_close(cur);
	for (uint32_t i = 0; i < NKEYS; i++)
		want += version[i] != 0;
	if (seen != want)
		fail("scan: %u keys, the model has %u", seen, want);

	/* The duplicates: key "d%05u", data "x%02u" for each bit. */
	CHECK(mdb_cursor_open(txn, ddbi, &cur));
	if (load)
		memset(dups, 0, sizeof(dups));
	{
		uint32_t got[NDUPKEYS] = { 0 };

		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			unsigned int key, bit;
			char kbuf[8], vbuf[8];

			if (k.mv_size != 6 || v.mv_size != 3)
				fail("dups: entry of sizes %zu/%zu", k.mv_size, v.mv_size);
			memcpy(kbuf, k.mv_data, 6), kbuf[6] = 0;
			memcpy(vbuf, v.mv_data, 3), vbuf[3] = 0;
			if (sscanf(kbuf, "d%5u", &key) != 1 || key >= NDUPKEYS ||
			    sscanf(vbuf, "x%2u", &bit) != 1 || bit >= 32)
				fail("dups: unexpected entry %s/%s", kbuf, vbuf);
			got[key] |= 1u << bit;
		}
		if (rc != MDB_NOTFOUND)
			CHECK(rc);
		for (uint32_t i = 0; i < NDUPKEYS; i++) {
			if (load)
				dups[i] = got[i];
			else if (got[i] != dups[i])
				fail("dups: key %u has 0x%08x, the model says 0x%08x", i, got[i],
				     dups[i]);
		}
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	nscan++;
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long n = strtoull(s, &end, 0);

	switch (*end) {
	case 'T': case 't': n <<= 10; /* fall through */
	case 'G': case 'g': n <<= 10; /* fall through */
	case 'M': case 'm': n <<= 10; /* fall through */
	case 'K': case 'k': n <<= 10; break;
	case 0: break;
	default: fprintf(stderr, "lmdb-work: bad size %s\n", s); exit(2);
	}
	return (size_t)n;
}

static MDB_env *open_env(const char *dir, unsigned int flags, size_t mapsize, MDB_dbi *dbi,
			 MDB_dbi *ddbi)
{
	MDB_env *env;
	MDB_txn *txn;

	CHECK(mdb_env_create(&env));
	CHECK(mdb_env_set_mapsize(env, mapsize));
	CHECK(mdb_env_set_maxdbs(env, 4));
	CHECK(mdb_env_open(env, dir, flags, 0644));
	CHECK(mdb_txn_begin(env, NULL, flags & MDB_RDONLY, &txn));
	CHECK(mdb_dbi_open(txn, "main", flags & MDB_RDONLY ? 0 : MDB_CREATE, dbi));
	CHECK(mdb_dbi_open(txn, "dups", MDB_DUPSORT | (flags & MDB_RDONLY ? 0 : MDB_CREATE), ddbi));
	CHECK(mdb_txn_commit(txn));
	return env;
}

/* One write transaction of the workload; returns 0 or MDB_MAP_FULL (the txn then aborted). */
static int work_txn(MDB_env *env, MDB_dbi dbi, MDB_dbi ddbi, unsigned int batch, uint32_t txno,
		    uint32_t *nv, uint32_t *nd)
{
	unsigned char val[MAXVAL];
	MDB_txn *txn;
	int rc = 0;

	CHECK(mdb_txn_begin(env, NULL, 0, &txn));
	for (unsigned int i = 0; i < batch; i++) {
		uint32_t key = (uint32_t)(rnd() % NKEYS);
		/* Mostly one region per transaction, so pages fill and split. */
		if (i % 4)
			key = (uint32_t)((txno * 997 + rnd() % 500) % NKEYS);
		char kbuf[16];
		MDB_val k, v;

		key_of(key, kbuf, &k);
		if (rnd() % 8 == 0) {
			rc = mdb_del(txn, dbi, &k, NULL);
			if (rc && rc != MDB_NOTFOUND)
				goto out;
			if ((rc == 0) != (nv[key] != 0))
				fail("txn %u: delete of key %u: %s, the model has version %u", txno,
				     key, mdb_strerror(rc), nv[key]);
			rc = 0;
			nv[key] = 0;
			ndel++;
			continue;
		}
		nv[key] = (nv[key] + 1) & 0xffffff;
		if (!nv[key])
			nv[key] = 1;
		v.mv_size = val_len(key, nv[key]);
		make_val(key, nv[key], val, v.mv_size);
		v.mv_data = val;
		rc = mdb_put(txn, dbi, &k, &v, 0);
		if (rc)
			goto out;
		nput++;
	}
	for (unsigned int i = 0; i < batch / 8 + 1; i++) {
		uint32_t key = (uint32_t)(rnd() % NDUPKEYS), bit = (uint32_t)(rnd() % 32);
		char kbuf[8], vbuf[8];
		MDB_val k = { 6, kbuf }, v = { 3, vbuf };

		snprintf(kbuf, sizeof(kbuf), "d%05u", key);
		snprintf(vbuf, sizeof(vbuf), "x%02u", bit);
		if (nd[key] & (1u << bit)) {
			rc = mdb_del(txn, ddbi, &k, &v);
			if (rc)
				goto out;
			nd[key] &= ~(1u << bit);
		} else {
			rc = mdb_put(txn, ddbi, &k, &v, MDB_NODUPDATA);
			if (rc)
				goto out;
			nd[key] |= 1u << bit;
		}
	}
	rc = mdb_txn_commit(txn);
	if (rc == MDB_MAP_FULL)
		return rc;
	CHECK(rc);
	return 0;
out:
	mdb_txn_abort(txn);
	if (rc == MDB_MAP_FULL)
		return rc;
	CHECK(rc);
	return 0;
}

static void grow(MDB_env *env, size_t *mapsize)
{
	*mapsize *= 2;
	CHECK(mdb_env_set_mapsize(env, *mapsize));
	nresize++;
}

static int workload(const char *dir, unsigned int flags, size_t mapsize, int resize,
		    unsigned int ntxn, unsigned int batch)
{
	static uint32_t nv[NKEYS], nd[NDUPKEYS];
	MDB_dbi dbi, ddbi;
	MDB_env *env;
	MDB_envinfo info;

	if (resize)
		mapsize = 1 << 20;
	env = open_env(dir, flags | MDB_NOSYNC, mapsize, &dbi, &ddbi);
	mdb_env_info(env, &info);
	mapsize = info.me_mapsize;	/* an existing database keeps the larger of the two */
	scan(env, dbi, ddbi, 1);
	for (uint32_t t = 1; t <= ntxn; t++) {
		int rc;

		if (resize && t == ntxn / 2)
			grow(env, &mapsize);
		memcpy(nv, version, sizeof(nv));
		memcpy(nd, dups, sizeof(nd));
		uint64_t saved = rng;

		while ((rc = work_txn(env, dbi, ddbi, batch, t, nv, nd)) == MDB_MAP_FULL) {
			if (!resize)
				fail("txn %u: MDB_MAP_FULL with a map of %zu bytes", t, mapsize);
			/* the same transaction again, in a larger map */
			grow(env, &mapsize);
			memcpy(nv, version, sizeof(nv));
			memcpy(nd, dups, sizeof(nd));
			rng = saved;
		}
		memcpy(version, nv, sizeof(nv));
		memcpy(dups, nd, sizeof(nd));
		if (t % 5 == 0) {
			CHECK(mdb_env_sync(env, 1));
			nsync++;
		}
		if (t % 7 == 0)
			scan(env, dbi, ddbi, 0);
	}
	CHECK(mdb_env_sync(env, 1));
	nsync++;
	scan(env, dbi, ddbi, 0);
	mdb_env_close(env);

	/* Once more in a fresh environment: what was synced is what is read. */
	env = open_env(dir, flags | MDB_RDONLY, mapsize, &dbi, &ddbi);
	scan(env, dbi, ddbi, 0);
	mdb_env_close(env);
	printf("lmdb-work: %u transactions passed: %lu puts, %lu deletes, %lu checked scans, "
	       "%lu syncs, %lu map resizes (map %zu bytes)\n", ntxn, nput, ndel, nscan, nsync,
	       nresize, mapsize);
	return 0;
}

/* -K: synced commits until killed, each recorded in @progress after it returned. */
static int writer(const char *dir, const char *progress, unsigned int flags, size_t mapsize,
		  unsigned int batch)
{
	static uint32_t nv[NKEYS], nd[NDUPKEYS];
	MDB_dbi dbi, ddbi;
	MDB_env *env = open_env(dir, flags, mapsize, &dbi, &ddbi);
	int pfd = open(progress, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);

	if (pfd < 0) {
		perror(progress);
		return 2;
	}
	/* Our pid, for the script that kills us (upcache-run may not exec). */
	{
		char pidpath[4096];
		FILE *pf;

		snprintf(pidpath, sizeof(pidpath), "%s.pid", progress);
		pf = fopen(pidpath, "w");
		if (!pf || fprintf(pf, "%d\n", (int)getpid()) < 0 || fclose(pf)) {
			perror(pidpath);
			return 2;
		}
	}
	scan(env, dbi, ddbi, 1);
	memcpy(nv, version, sizeof(nv));
	memcpy(nd, dups, sizeof(nd));
	for (uint32_t t = 1;; t++) {
		unsigned char val[MAXVAL];
		char kbuf[16], line[32];
		MDB_txn *txn;
		MDB_val k = { 0, kbuf }, v;
		int len;

		/* A normal batch (in its own txn, committed without waiting)... */
		if (work_txn(env, dbi, ddbi, batch, t, nv, nd))
			fail("writer: MDB_MAP_FULL");
		/* ...and a commit marker, in a txn whose commit is synced. */
		CHECK(mdb_txn_begin(env, NULL, 0, &txn));
		k.mv_size = (size_t)snprintf(kbuf, sizeof(kbuf), "c%08u", t);
		v.mv_size = val_len(t, t);
		make_val(t, t, val, v.mv_size);
		v.mv_data = val;
		CHECK(mdb_put(txn, dbi, &k, &v, 0));
		CHECK(mdb_txn_commit(txn));
		len = snprintf(line, sizeof(line), "%u\n", t);
		if (write(pfd, line, (size_t)len) != len || fdatasync(pfd)) {
			perror("progress");
			return 2;
		}
	}
}

/* -V: every commit @progress names is there, every value checks. */
static int verify(const char *dir, const char *progress)
{
	FILE *f = fopen(progress, "r");
	unsigned int t, last = 0, n = 0;
	MDB_dbi dbi, ddbi;
	MDB_env *env;
	MDB_txn *txn;

	if (!f) {
		perror(progress);
		return 2;
	}
	env = open_env(dir, 0, 1 << 20, &dbi, &ddbi);
	scan(env, dbi, ddbi, 1);	/* every value of the main and dup databases checks */
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
	while (fscanf(f, "%u", &t) == 1) {
		char kbuf[16];
		MDB_val k = { 0, kbuf }, v;
		int rc;

		if (t != last + 1)
			fail("progress file: %u after %u", t, last);
		last = t;
		k.mv_size = (size_t)snprintf(kbuf, sizeof(kbuf), "c%08u", t);
		rc = mdb_get(txn, dbi, &k, &v);
		if (rc == MDB_NOTFOUND)
			fail("synced commit %u is missing after kill -9", t);
		CHECK(rc);
		check_val(t, &v);
		n++;
	}
	fclose(f);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	if (!n)
		fail("the writer recorded no synced commit before it was killed");
	printf("lmdb-work: all %u synced commits are present after kill -9\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int flags = 0, ntxn = 300, batch = 40;
	const char *kill_progress = NULL, *verify_progress = NULL;
	size_t mapsize = 64 << 20;
	uint64_t seed = 1;
	int opt, resize = 0;

	while ((opt = getopt(argc, argv, "wfm:rn:b:S:K:V:")) != -1) {
		switch (opt) {
		case 'w': flags |= MDB_WRITEMAP; break;
		case 'f': flags |= MDB_FIXEDMAP; break;
		case 'm': mapsize = parse_size(optarg); break;
		case 'r': resize = 1; break;
		case 'n': ntxn = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'b': batch = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'S': seed = strtoull(optarg, NULL, 0); break;
		case 'K': kill_progress = optarg; break;
		case 'V': verify_progress = optarg; break;
		default: goto usage;
		}
	}
	if (optind + 1 < argc || (optind == argc && (kill_progress || verify_progress)))
		goto usage;
	rng = seed;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (optind == argc) {
		/* No DIR: the default workload in a temporary directory (make check runs it so). */
		char tmpl[] = "/var/tmp/upc-lmdb-work.XXXXXX", f[64];
		int ret;

		if (!mkdtemp(tmpl)) {
			perror("mkdtemp");
			return 2;
		}
		ret = workload(tmpl, flags, mapsize, resize, ntxn, batch);
		snprintf(f, sizeof(f), "%s/data.mdb", tmpl);
		unlink(f);
		snprintf(f, sizeof(f), "%s/lock.mdb", tmpl);
		unlink(f);
		rmdir(tmpl);
		return ret;
	}
	if (kill_progress)
		return writer(argv[optind], kill_progress, flags, mapsize, batch);
	if (verify_progress)
		return verify(argv[optind], verify_progress);
	return workload(argv[optind], flags, mapsize, resize, ntxn, batch);
usage:
	fprintf(stderr, "usage: lmdb-work [-w] [-f] [-m mapsize] [-r] [-n txns] [-b batch] "
		"[-S seed] [DIR]\n       lmdb-work -K progress [-w] [-m mapsize] DIR\n"
		"       lmdb-work -V progress DIR\n");
	return 2;
}
