/* SPDX-License-Identifier: MIT */
/*
 * upc-bench.h - shared declarations of the benchmark program (upc-bench(1)).
 *
 * The program is split in three:
 *   upc-bench.c        the driver: options, the alternating repetition
 *                      loop, ratios, targets, the table and the JSON;
 *   upc-bench-work.c   workloads 1-7 (upcache against the kernel's mmap of
 *                      the same file, and pread/pwrite where a database
 *                      would use them);
 *   upc-bench-floor.c  workload 8, the floor: bare userfaultfd round trips,
 *                      kernel minor faults, memcpy and a store read, measured
 *                      with the same harness so that every upcache figure can
 *                      also be read as a multiple of it.
 *
 * Method (DESIGN.md, "Measured on this machine kind"): every pass opens the
 * file anew (the kernel keeps readahead state per open file); the variants
 * of a workload run one after the other in each repetition, in the forward
 * order in even repetitions and reversed in odd ones, so that every pair of
 * variants runs in both orders equally often; every ratio is computed per
 * repetition between two passes of the same repetition, and reported as the
 * median with min and max.
 */
#ifndef UPC_BENCH_H
#define UPC_BENCH_H

#define _GNU_SOURCE
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <upcache.h>

#define PG		4096UL
#define MAX_REPS	64
#define MAX_VARIANTS	32
#define MAX_RATIOS	64
#define MAX_TARGETS	64
#define NR_WORKLOADS	9
#define NAME_LEN	48

/* Counters of one pass: getrusage() deltas, and upc_stats() deltas for upcache variants. */
struct bench_counters {
	uint64_t minflt, majflt;
	uint64_t dev_rd_kib, dev_wr_kib;	/* the device of --dir, whole device (other processes too) */
	uint64_t io_rd_kib, io_wr_kib;	/* this process's storage I/O (/proc/self/io read/write_bytes) */
	bool upc;			/* the upc_* fields below are meaningful */
	uint32_t track_mode;
	uint64_t faults_missing, faults_wp, faults_minor, fill_ios, pages_filled, ra_max_window;
	uint64_t wp_calls, wb_ios, pages_written, syncs, pages_evicted, pages_cached;
	uint64_t wb_gap_pages;		/* clean pages written between dirty ones (clustering) */
};

/* One timed pass. */
struct sample {
	double ns;			/* the timed region */
	double map_ns;			/* of which: creating the mapping (0 where none) */
	uint64_t units;			/* pages, reads, faults, dirty pages, ... */
	struct bench_counters c;
};

struct variant;
/* Run one pass: fill @s, return 0 or a negative errno (the variant is then skipped). */
typedef int (*pass_fn)(struct variant *v, struct sample *s);

struct variant {
	char name[NAME_LEN];		/* shown in the table and the JSON */
	char desc[160];			/* one line: what it is */
	pass_fn fn;
	void *ctx;
	bool info;			/* informational (a lever, a second baseline) */
	int nsamp;
	struct sample samp[MAX_REPS];
	char skip[240];			/* non-empty: not run, and why */
	char warn[240];			/* non-empty: something unexpected (data mismatch, ...) */
};

struct ratio {
	int num, den;			/* variant indices */
	int n;
	double r[MAX_REPS];
	double med, min, max;
};

struct workload {
	int id;
	char title[120];
	char setup[240];		/* sizes, file, what is timed */
	char unit[24];			/* what one unit is: "page", "read", ... */
	char note[1000];		/* shown under the table */
	char skip[300];			/* non-empty: the workload could not run */
	bool ran;
	int reps;			/* repetitions (B.reps, more for the cheap workloads) */
	int nvar;
	struct variant var[MAX_VARIANTS];
	int nratio;
	struct ratio ratio[MAX_RATIOS];
};

enum target_status { T_NOT_RUN = -2, T_NOT_AVAILABLE = -1, T_NOT_MET = 0, T_MET = 1 };

struct target {
	int wl;
	char row[4];			/* "" for issue 4's rows; "A".."G" for issue 11's */
	char what[120];			/* the target */
	char ratio[120];		/* "upc-sync / kernel-memfd" */
	double limit;
	double med, min, max;
	int status;
	char note[2000];		/* what bounds it, from counters of the same run */
};

struct bench {
	int reps;
	bool quick;
	const char *dir;
	unsigned int only;		/* bit N: run workload N; 0: all */
	double pass_timeout_s;
	const char *match;		/* --match: run only variants whose name contains this */
	uint32_t async_mode;		/* track_mode of a cache created with UPC_CACHE_ASYNC_WP */
	char async_label[NAME_LEN];	/* "upc-async" or "upc-async:sync" */
	int cur_rep;			/* the repetition running now (pairs passes across variants) */
	int ncpus;
	int cpus[2];			/* two CPUs we may run on (floor pinning) */
	struct workload wl[NR_WORKLOADS + 1];	/* indexed by id */
	int ntargets;
	struct target targets[MAX_TARGETS];
};

extern struct bench B;

/* upc-bench.c: harness */
double now_ns(void);
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int add_variant(struct workload *w, const char *name, pass_fn fn, void *ctx, bool info,
		const char *desc_fmt, ...) __attribute__((format(printf, 6, 7)));
void skip_variant(struct workload *w, int vi, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void warn_variant(struct variant *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void run_variants(struct workload *w);
int add_ratio(struct workload *w, int num, int den);
void add_target(int wl, const char *what, int num, int den, double limit, const char *note);
void add_target_na(int wl, const char *what, const char *ratio, double limit, const char *note);
/* The same for a row of issue 11 (@row "A".."G"): printed and plotted apart from issue 4's. */
void add_target_row(const char *row, int wl, const char *what, int num, int den, double limit,
		    const char *note);
void add_target_na_row(const char *row, int wl, const char *what, const char *ratio, double limit,
		       const char *note);
/* Medians over the passes of @v: time per unit, a counter per unit, time per counted event. */
#define CNT(f) offsetof(struct bench_counters, f)
double med_us(const struct variant *v);
double med_per_unit(const struct variant *v, size_t cnt_off);
double med_us_per(const struct variant *v, size_t cnt_off);
double med_cnt(const struct variant *v, size_t cnt_off);
/*
 * "NAME: X us/unit; per unit: N kernel faults, N MISSING (N pages each), N
 * fill I/Os, N MINOR (N pages each), N WP faults; ..." from the medians of
 * @w's variant @vi, appended to @buf: what bounds a target, from the
 * counters of the same run.  Returns @buf.
 */
char *bound_str(char *buf, size_t len, struct workload *w, int vi);
/* A ratio's median, or NAN. */
double ratio_med(struct workload *w, int num, int den);
struct ratio *find_ratio(struct workload *w, int num, int den);

/* upc-bench-work.c: helpers shared with the floor */
void snap_begin(struct bench_counters *c, struct upc_cache *cache);
void snap_end(struct bench_counters *c, struct upc_cache *cache);
int bench_file(const char *tag, size_t size, char *path, size_t pathlen);
/* The name bench_file() would give @tag, removed at exit like the files it makes; nothing created. */
void bench_file_name(const char *tag, char *path, size_t pathlen);
uint64_t page_word(uint64_t pg);
int drop_file_cache(const char *path);
int warm_file_cache(const char *path);
uint32_t *random_order(size_t npages, size_t stride, uint64_t seed, size_t *count);
uint64_t rnd64(uint64_t *s);
int upc_new(bool async, unsigned int flags, size_t mem_limit, struct upc_cache **cp);
struct upc_cache *cache_or_die(bool async, unsigned int flags, size_t mem_limit);
int upc_warm(struct upc_cache *c, const char *path, size_t size);
int upc_warm_pages(struct upc_cache *c, const char *path, size_t size, const uint32_t *order, size_t n);
int pin_self(int cpu, cpu_set_t *saved);
void unpin_self(const cpu_set_t *saved);
void cleanup_files(void);

/*
 * The generic access pass (upc-bench-work.c): map a file (or a memfd, or
 * nothing for pread), touch pages in a given order from 1 or more threads.
 */
enum acc_kind {
	K_FILE,		/* the kernel's mmap of the file (ext4 page cache) */
	K_MEMFD,	/* the kernel's mmap of a memfd holding the same data (shmem) */
	K_UPC,		/* upc_map() of the file */
	K_PREAD,	/* pread() into a private buffer */
};

struct acc {
	enum acc_kind kind;
	const char *path;
	size_t size, npages;
	int memfd;			/* K_MEMFD: a populated memfd */
	int uffd_mode;			/* K_MEMFD: register with userfaultfd: UREG_* */
	struct upc_cache *cache;	/* K_UPC: a cache kept across passes */
	bool fresh_cache;		/* K_UPC: a new cache for every pass (cold) */
	bool async;			/* K_UPC fresh cache: ask for async tracking */
	unsigned int cflags;		/* K_UPC fresh cache: UPC_CACHE_* */
	unsigned int mflags;		/* K_UPC: upc_map() flags */
	int uadv;			/* K_UPC: upc_advise() advice after mapping; 0: none */
	bool cold;			/* drop the kernel's page cache of the file first */
	const uint32_t *order;		/* pages to touch; NULL: every page in order */
	size_t n;			/* entries of @order (or npages) */
	int threads;
	bool copy;			/* copy each page out (a 4 KiB read), not one word */
	bool write;			/* write one word per page (after the page's tag word) */
	bool map_rw;			/* map read-write even when only reading */
	int madv;			/* madvise() advice for K_FILE; 0: none */
	size_t pread_pages;		/* K_PREAD: pages per pread (sequential when > 1) */
	bool clean_after;		/* msync the range after the pass (not timed) */
	uint64_t expect;		/* checksum of the tag words read; 0: not checked */
	int one_cpu;			/* K_UPC, one thread: CPU + 1 the pass runs on, and a fresh
					 * cache gets one fault handler, there too; 0: not pinned */
};

/* upc_new() with one fault handler, created from a thread pinned to @cpu (so it runs there). */
int upc_new_one_handler(bool async, unsigned int flags, int cpu, struct upc_cache **cp);

/* acc.uffd_mode: how a K_MEMFD mapping is registered (no handler: every page is present) */
#define UREG_NONE	0
#define UREG_MISSING	1	/* MISSING only: the kernel keeps fault-around */
#define UREG_WP		2	/* MISSING|WP, the range write-protected with PTE markers: upcache's shape */

int add_acc(struct workload *w, const char *name, bool info, const struct acc *tmpl,
	    const char *desc_fmt, ...) __attribute__((format(printf, 5, 6)));
int memfd_copy_of(const char *path, size_t size);
uint64_t expect_sum(const uint32_t *order, size_t n);

/* upc-bench-floor.c: userfaultfd helpers */
int uffd_open(uint64_t features);
int uffd_register(int uffd, void *addr, size_t len, uint64_t mode);
int uffd_wp(int uffd, void *addr, size_t len, bool protect);

void wl1_cached_seq(struct workload *w);
void wl2_cold_seq(struct workload *w);
void wl3_cached_rand(struct workload *w);
void wl4_cold_rand(struct workload *w);
void wl5_first_write(struct workload *w);
void wl6_msync(struct workload *w);
void wl7_evict(struct workload *w);
/* upc-bench-floor.c */
void wl8_floor(struct workload *w);
/* upc-bench-apps.c */
void wl9_databases(struct workload *w);
int floor_wp_variant(struct workload *w, const char *name, int pin, bool info, size_t npages);
int floor_minor_variant(struct workload *w, const char *name, bool info, int memfd, size_t npages,
			const uint32_t *order, size_t n, size_t win);
int floor_minor1_variant(struct workload *w, const char *name, int pin, bool info, size_t npages,
			 const uint32_t *order, size_t n);
int floor_missing_variant(struct workload *w, const char *name, int pin, bool busy, bool sigbus,
			  const char *src_path, size_t npages, const uint32_t *order, size_t n, bool info);
void f_note(char *note, size_t len, struct workload *w, int vu, int same, int other, int unp);
int floor_continue_variant(struct workload *w, const char *name, bool info, int memfd, size_t npages,
			   size_t win);
int floor_wp_async_variant(struct workload *w, const char *name, bool info, int memfd, size_t npages);

/* floor pinning */
#define PIN_NONE	0
#define PIN_SAME	1
#define PIN_OTHER	2
#define PIN_PERCPU	3	/* a handler pinned to each CPU (at most 8), the faulter unpinned */
/* How many handlers PIN_PERCPU starts: the CPUs of the affinity mask, at most 8. */
int floor_percpu_handlers(void);
/*
 * "; NAME: the handler on the faulting thread's CPU served N% of the
 * faults, N EAGAIN reads a fault, the faulting thread on CPU a N%, ..."
 * of a PIN_PERCPU floor @vi of @w, summed over its passes, appended to @buf.
 */
char *floor_percpu_str(char *buf, size_t len, struct workload *w, int vi);

/*
 * Row D's floor: cold random 4 KiB reads through a fresh read-write mapping
 * of a memfd registered MISSING, each fault served by per-CPU handlers with
 * a buffered pread of the page from the cold file and UFFDIO_COPY.
 */
int floor_coldread_variant(struct workload *w, const char *name, const char *path, size_t npages,
			   const uint32_t *order, size_t n, bool info);

/*
 * Row C's floors: the cold file read sequentially, 2 MiB a read, into a
 * memfd's mapping: straight into it (@copy false: the reads take a shmem
 * fault a page), or into a bounce buffer and then inserted with UFFDIO_COPY
 * (@copy true: as upcache's fills do, no fault and no zeroing).
 */
enum seqread_how {
	SEQ_BUFFERED,		/* pread(2), buffered: the kernel's readahead applies */
	SEQ_DIRECT,		/* pread(2) with O_DIRECT, one read at a time */
	SEQ_DIRECT_QD2,		/* io_uring, O_DIRECT, two reads in flight */
};
int floor_seqread_variant(struct workload *w, const char *name, const char *path, size_t size,
			  enum seqread_how how, bool copy, bool info);

#endif /* UPC_BENCH_H */
