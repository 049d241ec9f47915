/* SPDX-License-Identifier: MIT */
/*
 * A randomized model test: random map/unmap (whole and partial), writes,
 * reads and msyncs over several mappings of one file, checked against a
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

static size_t rnd(struct model *m, size_t n)
{
	return n ? (size_t)rand_r(&m->seed) % n : 0;
}

static void op_map(struct model *m)
{
	struct mapping *mp = &m->maps[m->nmaps];
	int ret;

	mp->pgoff = rnd(m, FPAGES);
	mp->npages = 1 + rnd(m, 64);
	if (mp->pgoff + mp->npages > FPAGES)
		mp->npages = FPAGES - mp->pgoff;
	mp->prot = rnd(m, 4) ? PROT_READ | PROT_WRITE : PROT_READ;
	ret = upc_map(m->c, m->fd, (off_t)(mp->pgoff * PAGE), mp->npages * PAGE, mp->prot, 0,
		      (void **)&mp->addr);
	cr_assert_eq(ret, 0, "seed %u: upc_map: %s", m->seed0, upc_strerror(ret));
	m->nmaps++;
}

static void op_unmap(struct model *m)
{
	int i = (int)rnd(m, (size_t)m->nmaps);
	struct mapping *mp = &m->maps[i];
	size_t a = rnd(m, mp->npages), n = 1 + rnd(m, mp->npages - a);

	if (rnd(m, 2))
		a = 0, n = mp->npages;	/* whole, half of the time */
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
					mp->npages - a - n, mp->prot };

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
	for (size_t i = 0; i < len; i++)
		if (mp->addr[off + i] != m->shadow[mp->pgoff * PAGE + off + i])
			cr_assert_fail("seed %u: file offset %zu reads %u, model %u", m->seed0,
				       mp->pgoff * PAGE + off + i, mp->addr[off + i],
				       m->shadow[mp->pgoff * PAGE + off + i]);
}

static void check_file(struct model *m, size_t from, size_t to)
{
	static unsigned char buf[FPAGES * PAGE];

	if (to > FSIZE)
		to = FSIZE;
	if (from >= to)
		return;
	cr_assert_eq(pread(m->fd, buf, to - from, (off_t)from), (ssize_t)(to - from));
	for (size_t i = 0; i < to - from; i++)
		if (buf[i] != m->shadow[from + i])
			cr_assert_fail("seed %u: file offset %zu holds %u, model %u", m->seed0, from + i,
				       buf[i], m->shadow[from + i]);
}

static void op_msync(struct model *m)
{
	struct mapping *mp = &m->maps[rnd(m, (size_t)m->nmaps)];
	int ret = upc_msync(m->c, mp->addr, mp->npages * PAGE, rnd(m, 3) ? UPC_MS_SYNC : UPC_MS_ASYNC);

	cr_assert_eq(ret, 0, "seed %u: msync: %s", m->seed0, upc_strerror(ret));
	check_file(m, mp->pgoff * PAGE, (mp->pgoff + mp->npages) * PAGE);
}

static void run_model(unsigned int seed)
{
	static struct model m;
	struct stat st;

	memset(&m, 0, sizeof(m));
	m.seed = m.seed0 = seed;
	m.c = cache_new(UPC_CACHE_NO_BGWB);
	m.fd = tmpfile_pattern(FSIZE, NULL);
	for (size_t i = 0; i < FSIZE; i++)
		m.shadow[i] = pat(i);
	for (int op = 0; op < NOPS; op++) {
		size_t r = rnd(&m, 100);

		if (m.nmaps == 0 || (r < 8 && m.nmaps < MAXMAPS))
			op_map(&m);
		else if (r < 14)
			op_unmap(&m);
		else if (r < 55)
			op_write(&m);
		else if (r < 90)
			op_read(&m);
		else
			op_msync(&m);
	}
	cr_assert_eq(upc_cache_destroy(m.c), 0);
	check_file(&m, 0, FSIZE);
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
