/* SPDX-License-Identifier: MIT */
/*
 * A randomized model test: random map/unmap (whole and partial), writes,
 * reads, msyncs, advice (DONTNEED, WILLNEED, RANDOM), drops, protection
 * changes and pins over several mappings of one file, under a memory limit
 * of a quarter of the file (eviction runs all the time), checked against a
 * shadow copy of what the file's pages must hold.  Fixed seeds, plus the
 * seed in $UPC_TEST_SEED (or one from the clock, printed, to replay).
 */
#include "helpers.h"

#include <time.h>

#define MAXMAPS	8
#define FPAGES	256
#define FSIZE	(FPAGES * PAGE - 3000)	/* the last page is partial */
#define NOPS	3000

struct mapping {
	unsigned char *addr;
	size_t pgoff, npages;
	int prot;
	int pinned;	/* pages [0, pinned) are pinned (UPC_PIN_NOWRITEBACK) */
};

struct model {
	unsigned int seed;	/* the generator's state */
	unsigned int seed0;	/* the seed the run started from, for messages */
	struct upc_cache *c;
	int fd;
	unsigned char shadow[FPAGES * PAGE];	/* memory view: past EOF stays in memory */
	struct mapping maps[MAXMAPS];
	int nmaps;
};

/* $UPC_TEST_MODEL_TRACE=PAGE prints every operation that covers that file page. */
static void trace(struct model *m, const char *op, size_t pgoff, size_t npages, long arg)
{
	static long page = -2;

	if (page == -2)
		page = getenv("UPC_TEST_MODEL_TRACE") ? atol(getenv("UPC_TEST_MODEL_TRACE")) : -1;
	if (page >= 0 && (size_t)page >= pgoff && (size_t)page < pgoff + npages)
		fprintf(stderr, "trace seed %u: %s pages %zu+%zu (%ld)\n", m->seed0, op, pgoff, npages, arg);
}

static size_t rnd(struct model *m, size_t n)
{
	return n ? (size_t)rand_r(&m->seed) % n : 0;
}

static void op_map(struct model *m)
{
	struct mapping *mp = &m->maps[m->nmaps];
	int ret;

	mp->pinned = 0;
	mp->pgoff = rnd(m, FPAGES);
	mp->npages = 1 + rnd(m, 64);
	if (mp->pgoff + mp->npages > FPAGES)
		mp->npages = FPAGES - mp->pgoff;
	mp->prot = rnd(m, 4) ? PROT_READ | PROT_WRITE : PROT_READ;
	ret = upc_map(m->c, m->fd, (off_t)(mp->pgoff * PAGE), mp->npages * PAGE, mp->prot, 0,
		      (void **)&mp->addr);
	trace(m, "map", mp->pgoff, mp->npages, mp->prot);
	cr_assert_eq(ret, 0, "seed %u: upc_map: %s", m->seed0, upc_strerror(ret));
	m->nmaps++;
}

static void unpin(struct model *m, struct mapping *mp)
{
	if (mp->pinned) {
		trace(m, "unpin", mp->pgoff, (size_t)mp->pinned, 0);
		cr_assert_eq(upc_unpin(m->c, mp->addr, (size_t)mp->pinned * PAGE), 0, "seed %u", m->seed0);
	}
	mp->pinned = 0;
}

static void op_unmap(struct model *m)
{
	int i = (int)rnd(m, (size_t)m->nmaps);
	struct mapping *mp = &m->maps[i];
	size_t a = rnd(m, mp->npages), n = 1 + rnd(m, mp->npages - a);

	if (mp->pinned)
		cr_assert_eq(upc_unmap(m->c, mp->addr, PAGE), -EBUSY, "seed %u: unmapped a pinned page", m->seed0);
	/* Pins are on file pages, whichever mapping took them: release them all. */
	for (int j = 0; j < m->nmaps; j++)
		unpin(m, &m->maps[j]);

	if (rnd(m, 2))
		a = 0, n = mp->npages;	/* whole, half of the time */
	trace(m, "unmap", mp->pgoff + a, n, 0);
	cr_assert_eq(upc_unmap(m->c, mp->addr + a * PAGE, n * PAGE), 0, "seed %u", m->seed0);
	if (a == 0 && n == mp->npages) {
		m->maps[i] = m->maps[--m->nmaps];
	} else if (a == 0) {
		mp->addr += n * PAGE;
		mp->pgoff += n;
		mp->npages -= n;
	} else if (a + n == mp->npages) {
		mp->npages = a;
	} else {
		struct mapping tail = { mp->addr + (a + n) * PAGE, mp->pgoff + a + n,
					mp->npages - a - n, mp->prot, 0 };

		mp->npages = a;
		if (m->nmaps < MAXMAPS)
			m->maps[m->nmaps++] = tail;
		else	/* no room to track it: unmap it too */
			cr_assert_eq(upc_unmap(m->c, tail.addr, tail.npages * PAGE), 0);
	}
}

static void op_write(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];
	size_t len, off;

	if (!(mp->prot & PROT_WRITE))
		return;
	off = rnd(m, mp->npages * PAGE);
	len = 1 + rnd(m, rnd(m, 4) ? 64 : 3 * PAGE);
	if (off + len > mp->npages * PAGE)
		len = mp->npages * PAGE - off;
	/*
	 * Past EOF the last page is memory only: never written back, and zero
	 * again once the page is evicted (test_edges checks that).  Stay below.
	 */
	if (mp->pgoff * PAGE + off >= FSIZE)
		return;
	if (mp->pgoff * PAGE + off + len > FSIZE)
		len = FSIZE - mp->pgoff * PAGE - off;
	trace(m, "write", mp->pgoff + off / PAGE, (off % PAGE + len + PAGE - 1) / PAGE, (long)(off % PAGE));
	for (size_t i = 0; i < len; i++) {
		unsigned char v = (unsigned char)rand_r(&m->seed);

		mp->addr[off + i] = v;
		m->shadow[mp->pgoff * PAGE + off + i] = v;
	}
}

static void op_read(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];
	size_t off = rnd(m, mp->npages * PAGE), len = 1 + rnd(m, 2 * PAGE);

	if (off + len > mp->npages * PAGE)
		len = mp->npages * PAGE - off;
	if (mp->pgoff * PAGE + off + len > FSIZE)
		len = mp->pgoff * PAGE + off >= FSIZE ? 0 : FSIZE - mp->pgoff * PAGE - off;
	for (size_t i = 0; i < len; i++)
		if (mp->addr[off + i] != m->shadow[mp->pgoff * PAGE + off + i])
			cr_assert_fail("seed %u: file offset %zu reads %u, model %u", m->seed0,
				       mp->pgoff * PAGE + off + i, mp->addr[off + i],
				       m->shadow[mp->pgoff * PAGE + off + i]);
}

static void check_file(struct model *m, size_t from, size_t to, const char *when)
{
	static unsigned char buf[FPAGES * PAGE];

	if (to > FSIZE)
		to = FSIZE;
	if (from >= to)
		return;
	cr_assert_eq(pread(m->fd, buf, to - from, (off_t)from), (ssize_t)(to - from));
	for (size_t i = 0; i < to - from; i++)
		if (buf[i] != m->shadow[from + i])
			cr_assert_fail("seed %u: file offset %zu holds %u, model %u (%s)", m->seed0, from + i,
				       buf[i], m->shadow[from + i], when);
}

static bool any_pinned(struct model *m)
{
	for (int i = 0; i < m->nmaps; i++)
		if (m->maps[i].pinned)
			return true;
	return false;
}

static void op_msync(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];
	int flags = rnd(m, 3) ? UPC_MS_SYNC : UPC_MS_ASYNC;
	int ret = upc_msync(m->c, mp->addr, mp->npages * PAGE, flags);

	cr_assert_geq(ret, 0, "seed %u: msync: %s", m->seed0, upc_strerror(ret));
	trace(m, flags == UPC_MS_SYNC ? "msync-sync" : "msync-async", mp->pgoff, mp->npages, ret);
	/*
	 * Only UPC_MS_SYNC promises the file holds the data (UPC_MS_ASYNC does
	 * not wait for the write-back that reclaim has in flight); held pages
	 * (pinned NOWRITEBACK, through any mapping) may lag.
	 */
	if (flags == UPC_MS_SYNC && ret == 0 && !any_pinned(m))
		check_file(m, mp->pgoff * PAGE, (mp->pgoff + mp->npages) * PAGE, "after msync");
}

static void op_advise(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];
	static const int advice[] = { UPC_ADV_DONTNEED, UPC_ADV_WILLNEED, UPC_ADV_RANDOM,
				      UPC_ADV_NORMAL, UPC_ADV_SEQUENTIAL };
	size_t a = rnd(m, mp->npages), n = 1 + rnd(m, mp->npages - a);
	int adv = advice[rnd(m, 5)];

	trace(m, "advise", mp->pgoff + a, n, adv);
	cr_assert_eq(upc_advise(m->c, mp->addr + a * PAGE, n * PAGE, adv), 0, "seed %u: advice %d",
		     m->seed0, adv);
}

static void op_drop(struct model *m)
{
	int ret = upc_drop(m->c, rnd(m, 4) ? 0 : UPC_DROP_WRITEBACK);

	trace(m, "drop", 0, FPAGES, ret);
	cr_assert_geq(ret, 0, "seed %u", m->seed0);
}

/* Flip a mapping between read-only and read-write (it is always readable). */
static void op_protect(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];
	int prot = mp->prot == PROT_READ ? PROT_READ | PROT_WRITE : PROT_READ;

	cr_assert_eq(upc_protect(m->c, mp->addr, mp->npages * PAGE, prot), 0, "seed %u", m->seed0);
	mp->prot = prot;
}

static void op_pin(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];

	if (mp->pinned) {
		unpin(m, mp);
		return;
	}
	mp->pinned = (int)(1 + rnd(m, mp->npages < 8 ? mp->npages : 8));
	unsigned int pf = rnd(m, 2) ? UPC_PIN_NOWRITEBACK : 0;

	trace(m, pf ? "pin-nowb" : "pin", mp->pgoff, (size_t)mp->pinned, 0);
	cr_assert_eq(upc_pin(m->c, mp->addr, (size_t)mp->pinned * PAGE, pf), 0, "seed %u", m->seed0);
}

/* $UPC_TEST_MODEL_SKIP lists operations to leave out ("advise,drop,protect,pin"), to bisect a failure. */
static bool skip_op(const char *name)
{
	const char *e = getenv("UPC_TEST_MODEL_SKIP");

	return e && strstr(e, name);
}

static void run_model(unsigned int seed)
{
	static struct model m;
	struct stat st;

	memset(&m, 0, sizeof(m));
	m.seed = m.seed0 = seed;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB, .mem_limit = FPAGES * PAGE / 4);
	m.c = cache_new_opts(&o);
	m.fd = tmpfile_pattern(FSIZE, NULL);
	for (size_t i = 0; i < FSIZE; i++)
		m.shadow[i] = pat(i);
	for (int op = 0; op < NOPS; op++) {
		size_t r = rnd(&m, 100);

		if (m.nmaps == 0 || (r < 8 && m.nmaps < MAXMAPS))
			op_map(&m);
		else if (r < 13)
			op_unmap(&m);
		else if (r < 50)
			op_write(&m);
		else if (r < 80)
			op_read(&m);
		else if (r < 88)
			op_msync(&m);
		else if (r < 93) {
			if (!skip_op("advise"))
				op_advise(&m);
		} else if (r < 95) {
			if (!skip_op("drop"))
				op_drop(&m);
		} else if (r < 97) {
			if (!skip_op("protect"))
				op_protect(&m);
		} else if (!skip_op("pin")) {
			op_pin(&m);
		}
	}
	for (int i = 0; i < m.nmaps; i++)
		unpin(&m, &m.maps[i]);
	cr_assert_eq(upc_cache_destroy(m.c), 0);
	check_file(&m, 0, FSIZE, "after destroy");
	cr_assert_eq(fstat(m.fd, &st), 0);
	cr_assert_eq(st.st_size, FSIZE);
	close(m.fd);
}

Test(model, seed_1, .timeout = 120) { run_model(1); }
Test(model, seed_2, .timeout = 120) { run_model(2); }
Test(model, seed_3, .timeout = 120) { run_model(3); }
Test(model, seed_4, .timeout = 120) { run_model(0xdecaf); }

Test(model, seed_from_environment, .timeout = 120)
{
	unsigned int seed = (unsigned int)env_ulong("UPC_TEST_SEED", (unsigned long)time(NULL));

	fprintf(stderr, "model: seed %u (replay with UPC_TEST_SEED=%u)\n", seed, seed);
	run_model(seed);
}
