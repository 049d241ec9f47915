/* SPDX-License-Identifier: MIT */
/*
 * upc-bench-floor.c - workload 8, the floor: what the hardware and the
 * kernel charge before upcache adds anything, measured in the same run as
 * the library so that its figures can be read as multiples of it.
 *
 *  - a bare userfaultfd MISSING round trip: a minimal handler thread that
 *    reads the fault message and answers with UFFDIO_COPY of one page, the
 *    handler unpinned, pinned to the faulting thread's CPU and to the other
 *    one, and one handler pinned to each CPU, all polling the userfaultfd,
 *    the faulting thread unpinned (-percpu: the library's own placement,
 *    every fault waking every handler); the same with a busy-polling
 *    handler and in-thread (SIGBUS), the levers of DESIGN.md "Where a fault
 *    is handled"; and with a 4 KiB pread in the handler, the least a cache
 *    must do to get the data;
 *  - a bare write-protect round trip: a fresh mapping of a populated memfd
 *    write-protected with PTE markers (WP_UNPOPULATED), a handler that only
 *    un-protects: exactly the situation of upcache's first write;
 *  - kernel shmem minor faults, with fault-around and one page per fault
 *    (a userfaultfd-registered range, where the kernel disables it);
 *  - a 4 KiB memcpy hot in cache and from DRAM, and a 4 KiB read of a cached
 *    file through io_uring and through pread (the store's cheapest read);
 *  - row D's floor (workload 4): cold random reads served by the per-CPU
 *    handlers, each fault a buffered pread of the cold file and UFFDIO_COPY;
 *  - row C's floors (workload 2): the cold file read in order into a fresh
 *    memfd mapping, 2 MiB a read: buffered, O_DIRECT, and O_DIRECT with two
 *    reads in flight (io_uring).
 */
#include "upc-bench.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"	/* uapi newer than the build host's headers */

static int populated_memfd(size_t npages);

#define MiB (1UL << 20)

/* PIN_PERCPU: at most this many handlers, one a CPU of the affinity mask (the library's design). */
#define MAX_PERCPU	8

/* ------------------------------------------------------------ userfaultfd helpers */

int uffd_open(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), ret;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int uffd_register(int uffd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = mode,
	};

	return ioctl(uffd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int uffd_wp(int uffd, void *addr, size_t len, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------ the minimal handler */

enum floor_mode { F_MISSING, F_WP, F_MINOR };

struct handler {
	int uffd, stop_efd, cpu;
	bool busy;
	atomic_bool stop;
	char *src;		/* the page UFFDIO_COPY inserts */
	int src_fd;		/* >= 0: pread the page from this file first */
	char *_Atomic base;	/* the mapping, for the file offset */
	size_t size;		/* of the mapping (a MINOR window stops at its end) */
	size_t win;		/* MINOR: pages per UFFDIO_CONTINUE (0: 1) */
	bool cont_wp;		/* MINOR: UFFDIO_CONTINUE_MODE_WP (a write-protected range) */
	pthread_t th;
	int err;
	/* PIN_PERCPU: who served the faults, and how often a read found another handler had been first. */
	_Atomic int *faulter_cpu;	/* the CPU the faulting thread last touched a page from */
	uint64_t served, served_here, empty;
};

static void handle_one(struct handler *h, const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address & ~(PG - 1);

	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (uffd_wp(h->uffd, (void *)addr, PG, false) < 0)
			h->err = -errno;
		return;
	}
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		uintptr_t end = (uintptr_t)atomic_load(&h->base) + h->size;
		size_t len = (h->win ? h->win : 1) * PG;
		struct uffdio_continue c = {
			.range = { .start = addr, .len = addr + len > end ? end - addr : len },
			.mode = h->cont_wp ? UFFDIO_CONTINUE_MODE_WP : 0,
		};

		/* A window meets pages mapped already: EEXIST (or EAGAIN after a part), as the library's. */
		if (ioctl(h->uffd, UFFDIO_CONTINUE, &c) < 0) {
			struct uffdio_range r = { .start = addr, .len = PG };

			if (errno != EEXIST && errno != EAGAIN)
				h->err = -errno;
			ioctl(h->uffd, UFFDIO_WAKE, &r);
		}
		return;
	}
	if (h->src_fd >= 0 &&
	    pread(h->src_fd, h->src, PG, (off_t)(addr - (uintptr_t)atomic_load(&h->base))) != (ssize_t)PG)
		h->err = -EIO;
	{
		struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)h->src, .len = PG, .mode = 0 };

		if (ioctl(h->uffd, UFFDIO_COPY, &c) < 0 && errno == EEXIST) {
			struct uffdio_range r = { .start = addr, .len = PG };

			ioctl(h->uffd, UFFDIO_WAKE, &r);
		}
	}
}

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct pollfd pfd[2] = {
		{ .fd = h->uffd, .events = POLLIN },
		{ .fd = h->stop_efd, .events = POLLIN },
	};
	struct uffd_msg msgs[16];

	if (h->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(h->cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	for (;;) {
		ssize_t n;

		if (h->busy) {
			if (atomic_load_explicit(&h->stop, memory_order_relaxed))
				break;
		} else {
			if (poll(pfd, 2, -1) < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (pfd[1].revents)
				break;
		}
		n = read(h->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			/* Another handler read the message first (per-CPU handlers all wake). */
			if (errno == EAGAIN && !h->busy)
				h->empty++;
			if (errno == EAGAIN || errno == EINTR)
				continue;
			break;
		}
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			h->served++;
			if (h->faulter_cpu &&
			    atomic_load_explicit(h->faulter_cpu, memory_order_relaxed) == h->cpu)
				h->served_here++;
			handle_one(h, &msgs[i]);
		}
	}
	return NULL;
}

static int handler_start(struct handler *h)
{
	h->stop_efd = eventfd(0, EFD_CLOEXEC);
	if (h->stop_efd < 0)
		return -errno;
	atomic_store(&h->stop, false);
	if (pthread_create(&h->th, NULL, handler_main, h) != 0) {
		close(h->stop_efd);
		return -EAGAIN;
	}
	return 0;
}

/*
 * A handler of the per-CPU set: another thread on @h's userfaultfd (and
 * store file), pinned to @cpu, with its own page to copy from.
 */
static int handler_start_on(struct handler *x, const struct handler *h, int cpu)
{
	int ret;

	*x = (struct handler){ .uffd = h->uffd, .src_fd = h->src_fd, .cpu = cpu, .size = h->size,
			       .win = h->win, .cont_wp = h->cont_wp, .faulter_cpu = h->faulter_cpu };
	x->src = aligned_alloc(PG, PG);
	if (!x->src)
		return -ENOMEM;
	memset(x->src, 0x3c, PG);
	ret = handler_start(x);
	if (ret < 0) {
		free(x->src);
		x->src = NULL;
	}
	return ret;
}

/* The CPUs of the process's affinity mask, at most @max: where the library puts its handlers. */
static int affinity_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (int i = 0; i < CPU_SETSIZE && n < max; i++)
		if (CPU_ISSET(i, &set))
			cpus[n++] = i;
	return n;
}

int floor_percpu_handlers(void)
{
	int cpus[MAX_PERCPU];

	return affinity_cpus(cpus, MAX_PERCPU);
}

static void handler_stop(struct handler *h)
{
	uint64_t one = 1;

	atomic_store(&h->stop, true);
	if (write(h->stop_efd, &one, sizeof(one)) != sizeof(one))
		fprintf(stderr, "upc-bench: cannot stop the floor handler\n");
	pthread_join(h->th, NULL);
	close(h->stop_efd);
}

/* In-thread resolution (UFFD_FEATURE_SIGBUS): the faulting thread fills its own fault. */
static int sig_uffd = -1;
static char *sig_src;

static void sigbus_fill(int sig, siginfo_t *si, void *uc)
{
	struct uffdio_copy c = {
		.dst = (uintptr_t)si->si_addr & ~(PG - 1), .src = (uintptr_t)sig_src, .len = PG,
		.mode = UFFDIO_COPY_MODE_DONTWAKE,
	};
	int e = errno;

	(void)sig;
	(void)uc;
	if (ioctl(sig_uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
		signal(SIGBUS, SIG_DFL);	/* the retried access dies: better than a loop */
	errno = e;
}

/* ------------------------------------------------------------ the uffd floor pass */

struct floor_ctx {
	enum floor_mode mode;
	int pin;
	bool busy, sigbus;
	const char *src_path;	/* F_MISSING: the handler preads the page from here */
	size_t npages;
	const uint32_t *order;	/* pages touched; NULL: all in order */
	size_t n;
	int memfd;		/* F_WP, F_MINOR: populated once */
	size_t win;		/* F_MINOR: pages per CONTINUE (0: 1) */
	bool wp;		/* F_MINOR: registered MISSING|WP|MINOR, write-protected (upcache's rw map) */
	bool cold;		/* F_MISSING: drop @src_path's page cache before the pass */
	bool copy;		/* copy each page out (a 4 KiB read), not one word */
	uint64_t expect;	/* checksum of the first words read; 0: not checked */
	/* PIN_PERCPU, summed over the passes: faults, served on the faulting CPU, EAGAIN reads */
	uint64_t pc_faults, pc_here, pc_empty;
	uint64_t pc_on[MAX_PERCPU];	/* touches made from the CPU cpus[i] */
	int pc_cpus[MAX_PERCPU], pc_ncpus;
};

static int floor_pass(struct variant *v, struct sample *s)
{
	struct floor_ctx *f = v->ctx;
	size_t size = f->npages * PG, n = f->order ? f->n : f->npages;
	struct handler h = { .uffd = -1, .src_fd = -1, .cpu = -1 }, more[MAX_PERCPU - 1];
	int cpus[MAX_PERCPU], ncpus = 0, nmore = 0;
	uint64_t on[MAX_PERCPU] = { 0 };
	_Atomic int fcpu = -1;
	struct sigaction sa, old_sa;
	cpu_set_t saved;
	bool pinned = false;
	int memfd = f->memfd, ret = 0;
	uint64_t feats;
	double t0, t1, t2;
	char *base = MAP_FAILED;
	volatile uint64_t sum = 0;
	char *buf = NULL;

	if ((f->pin == PIN_SAME && B.ncpus < 1) || (f->pin == PIN_OTHER && B.ncpus < 2)) {
		snprintf(v->skip, sizeof(v->skip), "not enough CPUs to pin to");
		return -EINVAL;
	}
	if (f->cold && f->src_path) {
		ret = drop_file_cache(f->src_path);
		if (ret < 0)
			return ret;
	}
	h.src = aligned_alloc(PG, PG);
	buf = aligned_alloc(PG, PG);
	if (!h.src || !buf) {
		free(h.src);
		free(buf);
		return -ENOMEM;
	}
	memset(h.src, 0x3c, PG);
	if (f->mode == F_MISSING) {
		memfd = memfd_create("upc-bench-floor", MFD_CLOEXEC);
		if (memfd < 0 || ftruncate(memfd, (off_t)size) < 0) {
			ret = -errno;
			goto out;
		}
		feats = f->sigbus ? UFFD_FEATURE_SIGBUS : 0;
	} else if (f->mode == F_WP) {
		feats = UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED;
	} else {
		feats = UFFD_FEATURE_MINOR_SHMEM |
			(f->wp ? UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED : 0);
	}
	h.win = f->win;
	h.cont_wp = f->wp;
	h.size = size;
	h.uffd = uffd_open(feats);
	if (h.uffd < 0) {
		ret = h.uffd;
		goto out;
	}
	if (f->src_path) {
		h.src_fd = open(f->src_path, O_RDONLY | O_CLOEXEC);
		if (h.src_fd < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (f->sigbus) {
		sig_uffd = h.uffd;
		sig_src = h.src;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = sigbus_fill;
		sa.sa_flags = SA_SIGINFO;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, &old_sa);
	} else {
		h.busy = f->busy;
		if (f->pin == PIN_SAME)
			h.cpu = B.cpus[0];
		else if (f->pin == PIN_OTHER)
			h.cpu = B.cpus[1];
		if (f->pin == PIN_PERCPU) {
			ncpus = affinity_cpus(cpus, MAX_PERCPU);
			h.faulter_cpu = &fcpu;
			if (ncpus < 1) {
				ret = -EINVAL;
				goto out;
			}
			h.cpu = cpus[0];
			for (int i = 1; i < ncpus; i++) {
				ret = handler_start_on(&more[nmore], &h, cpus[i]);
				if (ret < 0)
					goto out_more;
				nmore++;
			}
		}
		ret = handler_start(&h);
		if (ret < 0)
			goto out_more;
	}
	/* PIN_PERCPU leaves the faulting thread to the scheduler, as the library leaves the app's. */
	if (f->pin == PIN_SAME || f->pin == PIN_OTHER) {
		ret = pin_self(B.cpus[0], &saved);
		if (ret < 0)
			goto out_handler;
		pinned = true;
	}

	snap_begin(&s->c, NULL);
	t0 = now_ns();
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (base == MAP_FAILED) {
		ret = -errno;
		goto out_unpin;
	}
	atomic_store(&h.base, base);
	for (int i = 0; i < nmore; i++)
		atomic_store(&more[i].base, base);
	if (f->mode == F_MINOR && f->wp)
		ret = uffd_register(h.uffd, base, size, UFFDIO_REGISTER_MODE_MISSING |
				    UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR);
	else
		ret = uffd_register(h.uffd, base, size, f->mode == F_MINOR ? UFFDIO_REGISTER_MODE_MINOR :
				    UFFDIO_REGISTER_MODE_MISSING |
				    (f->mode == F_WP ? UFFDIO_REGISTER_MODE_WP : 0));
	if (!ret && (f->mode == F_WP || f->wp))
		ret = uffd_wp(h.uffd, base, size, true);
	if (ret < 0)
		goto out_unpin;
	t1 = now_ns();
	for (size_t i = 0; i < n; i++) {
		char *p = base + (f->order ? f->order[i] : i) * PG;

		if (f->pin == PIN_PERCPU) {
			/* Where the unpinned faulting thread is now: whose handler serves it. */
			int c = sched_getcpu();

			atomic_store_explicit(&fcpu, c, memory_order_relaxed);
			for (int k = 0; k < ncpus; k++)
				if (cpus[k] == c)
					on[k]++;
		}
		if (f->copy) {
			memcpy(buf, p, PG);
			__asm__ volatile("" : : "r"(buf) : "memory");
			sum += *(uint64_t *)buf;
		} else if (f->mode != F_WP) {
			sum += *(volatile uint64_t *)p;
		} else {
			*(volatile uint64_t *)(p + 8) = i;
		}
	}
	t2 = now_ns();
	snap_end(&s->c, NULL);
	s->ns = t2 - t0;
	s->map_ns = t1 - t0;
	s->units = n;
	if (f->expect && sum != f->expect)
		warn_variant(v, "data mismatch: read checksum %" PRIx64 ", file has %" PRIx64 " (rep %d)",
			     (uint64_t)sum, f->expect, B.cur_rep + 1);
out_unpin:
	if (pinned)
		unpin_self(&saved);
out_handler:
	if (f->sigbus)
		sigaction(SIGBUS, &old_sa, NULL);
	else
		handler_stop(&h);
	if (!ret && h.err)
		ret = h.err;
out_more:
	for (int i = 0; i < nmore; i++) {
		handler_stop(&more[i]);
		if (!ret && more[i].err)
			ret = more[i].err;
		free(more[i].src);
	}
	if (!ret && f->pin == PIN_PERCPU) {
		f->pc_ncpus = ncpus;
		memcpy(f->pc_cpus, cpus, (size_t)ncpus * sizeof(cpus[0]));
		for (int i = -1; i < nmore; i++) {
			const struct handler *x = i < 0 ? &h : &more[i];

			f->pc_faults += x->served;
			f->pc_here += x->served_here;
			f->pc_empty += x->empty;
		}
		for (int k = 0; k < ncpus; k++)
			f->pc_on[k] += on[k];
	}
out:
	if (base != MAP_FAILED)
		munmap(base, size);
	if (h.uffd >= 0)
		close(h.uffd);
	if (h.src_fd >= 0)
		close(h.src_fd);
	if (f->mode == F_MISSING && memfd >= 0)
		close(memfd);
	free(h.src);
	free(buf);
	(void)sum;
	return ret;
}

static const char *pin_desc(int pin)
{
	return pin == PIN_SAME ? "handler pinned to the faulting thread's CPU" :
	       pin == PIN_OTHER ? "handler pinned to the other CPU" :
	       pin == PIN_PERCPU ? "a handler pinned to each CPU, all polling the uffd; faulter unpinned" :
	       "handler and faulter unpinned";
}

/* A memfd of @npages written pages (uptodate, as upcache's are after a fill), or -1. */
static int populated_memfd(size_t npages)
{
	int mfd = memfd_create("upc-bench-floor", MFD_CLOEXEC);

	if (mfd >= 0) {
		/* Written, not fallocated: uptodate pages, as upcache's are after a fill. */
		char *pg = calloc(1, PG);

		if (!pg || ftruncate(mfd, (off_t)(npages * PG)) < 0)
			npages = 0;
		for (size_t i = 0; i < npages; i++) {
			*(uint64_t *)pg = page_word(i);
			if (pwrite(mfd, pg, PG, (off_t)(i * PG)) != (ssize_t)PG) {
				close(mfd);
				mfd = -1;
				break;
			}
		}
		free(pg);
	}
	return mfd;
}

int floor_wp_variant(struct workload *w, const char *name, int pin, bool info, size_t npages)
{
	struct floor_ctx *f = calloc(1, sizeof(*f));
	int vi, mfd;

	if (!f)
		exit(1);
	*f = (struct floor_ctx){ .mode = F_WP, .pin = pin, .npages = npages };
	mfd = populated_memfd(npages);
	f->memfd = mfd;
	vi = add_variant(w, name, floor_pass, f, info, "bare write-protect round trip: minimal handler "
			 "un-protects (%s)", pin_desc(pin));
	if (mfd < 0)
		skip_variant(w, vi, "memfd: %s", strerror(errno));
	return vi;
}

/*
 * The floor of a writable upcache mapping of cached pages: the kernel's
 * mapping of a populated memfd registered MISSING|WP|MINOR and
 * write-protected whole, as upcache registers a read-write mapping, and a
 * minimal handler that answers each MINOR fault with one UFFDIO_CONTINUE
 * (MODE_WP) of @win pages from the faulting one: the library's
 * fault-around (64) or map-ahead (512) without the library.
 */
int floor_minor_variant(struct workload *w, const char *name, bool info, int memfd, size_t npages,
			const uint32_t *order, size_t n, size_t win)
{
	struct floor_ctx *f = calloc(1, sizeof(*f));
	int vi;

	if (!f)
		exit(1);
	*f = (struct floor_ctx){ .mode = F_MINOR, .npages = npages, .order = order, .n = n,
				 .memfd = memfd, .win = win, .wp = true };
	vi = add_variant(w, name, floor_pass, f, info, "the memfd registered MISSING|WP|MINOR and "
			 "write-protected, a minimal handler that CONTINUEs %zu pages (MODE_WP) per MINOR "
			 "fault: upcache's writable mapping without the library", win);
	if (memfd < 0)
		skip_variant(w, vi, "memfd: %s", strerror(-memfd));
	return vi;
}

/*
 * A bare MINOR round trip: the mapping of a populated memfd registered
 * MINOR only, a minimal handler that CONTINUEs the faulting page, the
 * handler placed as @pin says.
 */
int floor_minor1_variant(struct workload *w, const char *name, int pin, bool info, size_t npages,
			 const uint32_t *order, size_t n)
{
	struct floor_ctx *f = calloc(1, sizeof(*f));
	int vi;

	if (!f)
		exit(1);
	*f = (struct floor_ctx){ .mode = F_MINOR, .pin = pin, .npages = npages, .order = order, .n = n,
				 .memfd = populated_memfd(npages) };
	vi = add_variant(w, name, floor_pass, f, info, "bare MINOR round trip, UFFDIO_CONTINUE of one "
			 "page (%s)", pin_desc(pin));
	if (f->memfd < 0)
		skip_variant(w, vi, "memfd: %s", strerror(errno));
	return vi;
}

/* ------------------------------------------------------------ UFFDIO_CONTINUE alone */

struct cont_ctx {
	int memfd;
	size_t npages, win;
	bool write_async;	/* then write a word into every page, UFFD_FEATURE_WP_ASYNC resolving it */
};

/*
 * What a user-space fault-around pays to map pages the cache holds,
 * without any fault: a fresh mapping of the populated memfd registered
 * MISSING|WP|MINOR and write-protected, as upcache registers a writable
 * mapping, then one UFFDIO_CONTINUE (MODE_WP) of @win pages after another
 * over the whole range.  Timed: map, register, the CONTINUEs; a unit is a
 * page mapped.  With @c->write_async, the userfaultfd tracks writes
 * asynchronously and a word is then written into every page, timed: the
 * first write to a cached page under upcache's asynchronous tracking,
 * without the library (its MINOR faults), a kernel write fault on a
 * write-protected PTE a page.
 */
static int continue_pass(struct variant *v, struct sample *s)
{
	struct cont_ctx *c = v->ctx;
	size_t size = c->npages * PG;
	char *base = MAP_FAILED;
	double t0, t1, t2;
	int uffd, ret;

	uffd = uffd_open(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
			 UFFD_FEATURE_WP_UNPOPULATED | (c->write_async ? UFFD_FEATURE_WP_ASYNC : 0));
	if (uffd < 0)
		return uffd;
	snap_begin(&s->c, NULL);
	t0 = now_ns();
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, c->memfd, 0);
	if (base == MAP_FAILED) {
		ret = -errno;
		goto out;
	}
	ret = uffd_register(uffd, base, size, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP |
			    UFFDIO_REGISTER_MODE_MINOR);
	if (!ret)
		ret = uffd_wp(uffd, base, size, true);
	if (ret < 0)
		goto out;
	t1 = now_ns();
	for (size_t pg = 0; pg < c->npages && !ret; pg += c->win) {
		size_t len = (c->npages - pg < c->win ? c->npages - pg : c->win) * PG;
		struct uffdio_continue cont = {
			.range = { .start = (uintptr_t)base + pg * PG, .len = len },
			.mode = UFFDIO_CONTINUE_MODE_WP,
		};

		if (ioctl(uffd, UFFDIO_CONTINUE, &cont) < 0)
			ret = -errno;
		else if ((size_t)cont.mapped != len)
			ret = -EIO;
	}
	for (size_t pg = 0; c->write_async && !ret && pg < c->npages; pg++)
		*(volatile uint64_t *)(base + pg * PG + 8) = pg + (uint64_t)B.cur_rep;	/* as the workload */
	t2 = now_ns();
	snap_end(&s->c, NULL);
	if (!ret && *(volatile uint64_t *)(base + (c->npages - 1) * PG) != page_word(c->npages - 1))
		ret = -EIO;	/* the last page is not the memfd's */
	s->ns = t2 - t0;
	s->map_ns = t1 - t0;
	s->units = ret ? 0 : c->npages;
out:
	if (base != MAP_FAILED)
		munmap(base, size);
	close(uffd);
	return ret;
}

/* A continue_pass() variant over @memfd, described by @desc. */
static int cont_variant(struct workload *w, const char *name, bool info, struct cont_ctx init, const char *desc)
{
	struct cont_ctx *c = malloc(sizeof(*c));
	int vi;

	if (!c)
		exit(1);
	*c = init;
	vi = add_variant(w, name, continue_pass, c, info, "%s", desc);
	if (c->memfd < 0)
		skip_variant(w, vi, "memfd: %s", strerror(-c->memfd));
	return vi;
}

int floor_continue_variant(struct workload *w, const char *name, bool info, int memfd, size_t npages,
			   size_t win)
{
	char desc[200];

	win = win ? win : 1;
	snprintf(desc, sizeof(desc), "UFFDIO_CONTINUE (MODE_WP) of %zu pages a call, no fault, over a "
		 "write-protected MISSING|WP|MINOR map of the memfd: a user-space fault-around's cost", win);
	return cont_variant(w, name, info, (struct cont_ctx){ .memfd = memfd, .npages = npages, .win = win },
			    desc);
}

/* Row B's floor under asynchronous tracking: continue_pass() with @write_async. */
int floor_wp_async_variant(struct workload *w, const char *name, bool info, int memfd, size_t npages)
{
	return cont_variant(w, name, info, (struct cont_ctx){ .memfd = memfd, .npages = npages, .win = 512,
							      .write_async = true },
			    "the memfd mapped as upcache maps a writable mapping under async tracking "
			    "(MISSING|WP|MINOR, write-protected, WP_ASYNC), its pages mapped write-protected "
			    "by UFFDIO_CONTINUE 512 at a time, then a word written into each: the kernel's "
			    "async write-protect fault without the library");
}

int floor_missing_variant(struct workload *w, const char *name, int pin, bool busy, bool sigbus,
			  const char *src_path, size_t npages, const uint32_t *order, size_t n, bool info)
{
	struct floor_ctx *f = calloc(1, sizeof(*f));

	if (!f)
		exit(1);
	*f = (struct floor_ctx){ .mode = F_MISSING, .pin = pin, .busy = busy, .sigbus = sigbus,
				 .src_path = src_path, .npages = npages, .order = order, .n = n };
	if (sigbus)
		return add_variant(w, name, floor_pass, f, info, "bare MISSING fault resolved in the "
				   "faulting thread (UFFD_FEATURE_SIGBUS, UFFDIO_COPY in the signal handler)");
	return add_variant(w, name, floor_pass, f, info, "bare MISSING round trip, UFFDIO_COPY of one "
			   "page%s%s (%s)", src_path ? " after a 4 KiB pread of a cached file" : "",
			   busy ? ", busy-polling handler" : "", pin_desc(pin));
}

char *floor_percpu_str(char *buf, size_t len, struct workload *w, int vi)
{
	const struct floor_ctx *f;
	uint64_t touches = 0;
	size_t n = strlen(buf);

	if (vi < 0 || vi >= w->nvar || w->var[vi].fn != floor_pass)
		return buf;
	f = w->var[vi].ctx;
	if (f->pin != PIN_PERCPU || !f->pc_faults)
		return buf;
	for (int k = 0; k < f->pc_ncpus; k++)
		touches += f->pc_on[k];
	if (n < len)
		n += (size_t)snprintf(buf + n, len - n, "; %s: the handler on the faulting thread's CPU "
				      "served %.0f%% of the faults; %.2f EAGAIN reads a fault (a poll that "
				      "returned after another handler read the message; a woken handler that "
				      "finds nothing pending sleeps again inside poll, uncounted); the faulting "
				      "thread on", w->var[vi].name,
				      100.0 * (double)f->pc_here / (double)f->pc_faults,
				      (double)f->pc_empty / (double)f->pc_faults);
	for (int k = 0; k < f->pc_ncpus && n < len; k++)
		n += (size_t)snprintf(buf + n, len - n, "%s CPU %d %.0f%%", k ? "," : "", f->pc_cpus[k],
				      touches ? 100.0 * (double)f->pc_on[k] / (double)touches : 0.0);
	return buf;
}

int floor_coldread_variant(struct workload *w, const char *name, const char *path, size_t npages,
			   const uint32_t *order, size_t n, bool info)
{
	struct floor_ctx *f = calloc(1, sizeof(*f));

	if (!f)
		exit(1);
	*f = (struct floor_ctx){ .mode = F_MISSING, .pin = PIN_PERCPU, .src_path = path, .cold = true,
				 .copy = true, .npages = npages, .order = order, .n = n,
				 .expect = expect_sum(order, n) };
	return add_variant(w, name, floor_pass, f, info, "rw map of a memfd registered MISSING; per-CPU "
			   "handlers pread the page from the cold file (buffered) and UFFDIO_COPY it; "
			   "faulter unpinned");
}

/* ------------------------------------------------------------ cold sequential reads into a memfd */

struct seq_ctx {
	const char *path;
	size_t size;
	enum seqread_how how;
	bool copy;		/* through a bounce buffer and UFFDIO_COPY */
};

#define SEQ_CHUNK	(2 * MiB)

/* Read [@off, @off + @len) of @fd into @dst whole (a buffered read may return short). */
static int pread_full(int fd, char *dst, size_t len, off_t off)
{
	while (len) {
		ssize_t r = pread(fd, dst, len, off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		dst += r;
		len -= (size_t)r;
		off += r;
	}
	return 0;
}

/*
 * Insert [@src, @src + @len) at @dst, a range registered MISSING|WP on
 * @uffd, whole, write-protected: a cache must see the first write to a
 * page it read, as upcache's writable mappings do (both tracking modes) and
 * as the kernel maps a clean page of a shared file read-only (writenotify).
 * Writable, the PTE costs more than the copy at its first touch where the
 * hypervisor shadows the guest's page tables (7.4 us against 1.1, the
 * machine of issue 11's second run).
 */
static int uffd_copy_full(int uffd, char *dst, const char *src, size_t len)
{
	while (len) {
		struct uffdio_copy cp = {
			.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = UFFDIO_COPY_MODE_WP,
		};

		if (ioctl(uffd, UFFDIO_COPY, &cp) < 0 && errno != EAGAIN)
			return -errno;
		if (cp.copy <= 0)
			return cp.copy < 0 && cp.copy != -EAGAIN ? (int)cp.copy : -EIO;
		dst += cp.copy;
		src += cp.copy;
		len -= (size_t)cp.copy;
	}
	return 0;
}

/*
 * Read a word of each page of a chunk just put in place, as the workload's
 * scan does (and the kernel's and upcache's passes, timed): the first touch
 * of a page is not free where the hypervisor shadows the guest's page
 * tables, and costs more the longer after the PTE's install it comes.
 */
static uint64_t touch_chunk(const char *p, size_t len)
{
	uint64_t sum = 0;

	for (size_t off = 0; off < len; off += PG)
		sum += *(const volatile uint64_t *)(p + off);
	return sum;
}

/*
 * Two O_DIRECT reads of SEQ_CHUNK in flight through io_uring, the next
 * queued as one completes: straight into @base, or (@uffd >= 0) into one of
 * the two halves of @bounce, inserted at @base with UFFDIO_COPY before that
 * half is read into again; each chunk's words are added to *@sum as it is
 * in (touch_chunk()).
 */
static int uring_qd2(struct io_uring *ring, int fd, char *base, size_t size, int uffd, char *bounce,
		     uint64_t *sum)
{
	size_t next = 0, inflight = 0;
	int ret = 0;

	while (!ret && (next < size || inflight)) {
		struct io_uring_cqe *cqe;
		uint64_t off, len;

		while (next < size && inflight < 2) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
			size_t n = size - next < SEQ_CHUNK ? size - next : SEQ_CHUNK;
			char *dst = uffd >= 0 ? bounce + (next / SEQ_CHUNK % 2) * SEQ_CHUNK : base + next;

			io_uring_prep_read(sqe, fd, dst, (unsigned int)n, next);
			io_uring_sqe_set_data64(sqe, next);	/* SEQ_CHUNK-aligned: its length follows */
			next += n;
			inflight++;
		}
		ret = io_uring_submit_and_wait(ring, 1);
		if (ret < 0)
			break;
		ret = io_uring_peek_cqe(ring, &cqe);
		if (ret < 0)
			break;
		off = io_uring_cqe_get_data64(cqe);
		len = size - off < SEQ_CHUNK ? size - off : SEQ_CHUNK;
		if (cqe->res < 0 || (uint64_t)cqe->res != len)
			ret = cqe->res < 0 ? cqe->res : -EIO;
		io_uring_cqe_seen(ring, cqe);
		inflight--;
		if (!ret && uffd >= 0)
			ret = uffd_copy_full(uffd, base + off, bounce + (off / SEQ_CHUNK % 2) * SEQ_CHUNK,
					     len);
		if (!ret)
			*sum += touch_chunk(base + off, len);
	}
	/* On an error a read may still be in flight: O_DIRECT pins its pages, so unmapping is safe. */
	return ret;
}

/*
 * The copy into cache memory any user-space cache on a file store must
 * make: the file's page cache dropped, a fresh MAP_SHARED mapping of a
 * memfd the size of the file, and the file read into it in order, 2 MiB a
 * read (buffered, or O_DIRECT one at a time or two in flight).  Straight
 * into the mapping, the read allocates the memfd's pages as it copies, a
 * shmem fault a page (zeroed, then written); with @c->copy it reads into a
 * bounce buffer (touched before the clock starts) and inserts each read
 * with UFFDIO_COPY, write-protected, into the mapping registered
 * MISSING|WP, as upcache's fills do: a copy more, and no fault or
 * zeroing.  Which is cheaper depends on the machine (a shmem fault costs
 * 5 us under the PVM hypervisor of
 * 2026-12-04's machine, and about 0.3 us on a plain KVM guest), so row C
 * reports both.  Timed: the mapping, its registration, the reads, and a
 * word read from each page once its chunk is in (touch_chunk()); a unit is
 * a page.
 */
static int seqread_pass(struct variant *v, struct sample *s)
{
	struct seq_ctx *c = v->ctx;
	bool direct = c->how != SEQ_BUFFERED, ring_up = false;
	size_t np = c->size / PG;
	struct io_uring ring;
	char *base = MAP_FAILED, *bounce = MAP_FAILED;
	int fd = -1, mfd = -1, uffd = -1, ret;
	uint64_t sum = 0;
	double t0, t1, t2;

	ret = drop_file_cache(c->path);
	if (ret < 0)
		return ret;
	if (c->copy) {
		uffd = uffd_open(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
		if (uffd < 0)
			return uffd;
		bounce = mmap(NULL, 2 * SEQ_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			      -1, 0);
		if (bounce == MAP_FAILED) {
			ret = -errno;
			goto out;
		}
		memset(bounce, 0, 2 * SEQ_CHUNK);
	}
	mfd = memfd_create("upc-bench-floor", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, (off_t)c->size) < 0) {
		ret = -errno;
		goto out;
	}
	fd = open(c->path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (c->how == SEQ_DIRECT_QD2) {
		ret = io_uring_queue_init(4, &ring, 0);
		if (ret < 0)
			goto out;
		ring_up = true;
	}
	snap_begin(&s->c, NULL);
	t0 = now_ns();
	base = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (base == MAP_FAILED) {
		ret = -errno;
		goto out;
	}
	if (c->copy)
		ret = uffd_register(uffd, base, c->size, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	t1 = now_ns();
	if (ret < 0) {
		/* nothing */
	} else if (c->how == SEQ_DIRECT_QD2) {
		ret = uring_qd2(&ring, fd, base, c->size, uffd, bounce, &sum);
	} else {
		for (size_t off = 0; off < c->size && !ret; off += SEQ_CHUNK) {
			size_t n = c->size - off < SEQ_CHUNK ? c->size - off : SEQ_CHUNK;

			ret = pread_full(fd, c->copy ? bounce : base + off, n, (off_t)off);
			if (!ret && c->copy)
				ret = uffd_copy_full(uffd, base + off, bounce, n);
			if (!ret)
				sum += touch_chunk(base + off, n);
		}
	}
	t2 = now_ns();
	snap_end(&s->c, NULL);
	if (ret < 0)
		goto out;
	if (sum != expect_sum(NULL, np))
		warn_variant(v, "data mismatch: read checksum %" PRIx64 ", file has %" PRIx64 " (rep %d)",
			     sum, expect_sum(NULL, np), B.cur_rep + 1);
	s->ns = t2 - t0;
	s->map_ns = t1 - t0;
	s->units = np;
out:
	if (ring_up)
		io_uring_queue_exit(&ring);
	if (base != MAP_FAILED)
		munmap(base, c->size);
	if (fd >= 0)
		close(fd);
	if (mfd >= 0)
		close(mfd);
	if (bounce != MAP_FAILED)
		munmap(bounce, 2 * SEQ_CHUNK);
	if (uffd >= 0)
		close(uffd);
	return ret;
}

int floor_seqread_variant(struct workload *w, const char *name, const char *path, size_t size,
			  enum seqread_how how, bool copy, bool info)
{
	struct seq_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		exit(1);
	*c = (struct seq_ctx){ .path = path, .size = size, .how = how, .copy = copy };
	return add_variant(w, name, seqread_pass, c, info, "the cold file read in order into a fresh "
			   "map of a memfd, 2 MiB a read: %s%s", how == SEQ_BUFFERED ? "pread, buffered "
			   "(readahead)" : how == SEQ_DIRECT ? "pread, O_DIRECT, one at a time" :
			   "io_uring, O_DIRECT, two in flight", copy ? ", into a bounce buffer, then "
			   "UFFDIO_COPY (MODE_WP) into the map (registered MISSING|WP)" : ", straight into the map");
}

/* ------------------------------------------------------------ memcpy and store reads */

struct mc_ctx {
	bool dram;
	char *src, *dst;
	size_t src_pages, n;
	const uint32_t *order;
};

static int memcpy_pass(struct variant *v, struct sample *s)
{
	struct mc_ctx *m = v->ctx;
	double t0, t1;

	memcpy(m->dst, m->src, PG);	/* hot: both pages in cache now */
	snap_begin(&s->c, NULL);
	t0 = now_ns();
	for (size_t i = 0; i < m->n; i++) {
		memcpy(m->dst, m->src + (m->dram ? (size_t)m->order[i] * PG : 0), PG);
		__asm__ volatile("" : : "r"(m->dst) : "memory");
	}
	t1 = now_ns();
	snap_end(&s->c, NULL);
	s->ns = t1 - t0;
	s->units = m->n;
	return 0;
}

struct rd_ctx {
	const char *path;
	bool uring;
	const uint32_t *order;
	size_t n;
};

static int read_pass(struct variant *v, struct sample *s)
{
	struct rd_ctx *r = v->ctx;
	struct io_uring ring;
	char *buf = aligned_alloc(PG, PG);
	int fd, ret = 0;
	double t0, t1;

	if (!buf)
		return -ENOMEM;
	fd = open(r->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	if (r->uring) {
		ret = io_uring_queue_init(8, &ring, 0);
		if (ret < 0)
			goto out;
	}
	snap_begin(&s->c, NULL);
	t0 = now_ns();
	for (size_t i = 0; i < r->n && !ret; i++) {
		off_t off = (off_t)r->order[i] * (off_t)PG;

		if (r->uring) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			struct io_uring_cqe *cqe;

			io_uring_prep_read(sqe, fd, buf, PG, (uint64_t)off);
			io_uring_submit(&ring);
			ret = io_uring_wait_cqe(&ring, &cqe);
			if (!ret && cqe->res != (int)PG)
				ret = -EIO;
			if (!ret)
				io_uring_cqe_seen(&ring, cqe);
		} else if (pread(fd, buf, PG, off) != (ssize_t)PG) {
			ret = -EIO;
		}
	}
	t1 = now_ns();
	snap_end(&s->c, NULL);
	if (r->uring)
		io_uring_queue_exit(&ring);
	s->ns = t1 - t0;
	s->units = r->n;
out:
	close(fd);
	free(buf);
	return ret;
}

/* ------------------------------------------------------------ 8. the floor */

/*
 * Row F's note: the served fault @vu against the bare round trips of its
 * kind with the handler on the faulting thread's CPU (@same, the row's
 * ratio), on the other CPU (@other) and unpinned (@unp), all of this run.
 */
void f_note(char *note, size_t len, struct workload *w, int vu, int same, int other, int unp)
{
	size_t n = strlen(note);

	snprintf(note + n, len - n, "the bare round trip of the same kind, handler on the faulting "
		 "thread's CPU (the row: where upcache's per-CPU handlers run): %.3g us; on the other CPU: "
		 "%.3g us (ratio %.2f); unpinned: %.3g us (ratio %.2f)", med_us(&w->var[same]),
		 med_us(&w->var[other]), ratio_med(w, vu, other), med_us(&w->var[unp]),
		 ratio_med(w, vu, unp));
}

void wl8_floor(struct workload *w)
{
	static char path[256], mpath[256];
	size_t size = 16 * MiB, np = size / PG, n, ndram, msize = B.quick ? 32 * MiB : 128 * MiB, mn;
	size_t dram_size = B.quick ? 64 * MiB : 256 * MiB;
	uint32_t *order, *dorder, *morder;
	struct mc_ctx *mc;
	struct rd_ctx *rd;
	struct acc t;
	int memfd, vf, vfs, vfo, vfb, vfg, vfr, vfrs, vus1, vsm1, vfm, vms, vmo, vw, vws, vwo, vka, vk1, vmh,
	    vmd, vru, vrp, vus, vua, vum, vsm, vfp, vfrp, vmp, vwp;
	struct upc_cache *ca, *cs, *c1;
	char nm[NAME_LEN];

	/* Cheap passes, and the most exposed to other processes' load: twice the repetitions. */
	w->reps = B.reps * 2 <= MAX_REPS ? B.reps * 2 : B.reps;
	snprintf(w->title, sizeof(w->title), "the floor");
	snprintf(w->unit, sizeof(w->unit), "fault");
	if (bench_file("floor", size, path, sizeof(path)) < 0) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	warm_file_cache(path);
	/* Every other page, in a random order: upcache's readahead never widens past one page. */
	order = random_order(np, 2, 8, &n);
	snprintf(w->setup, sizeof(w->setup), "%zu faults per pass (every other page of a %zu MiB "
		 "region, random order); timed: map + register + the faults (one word read or written "
		 "per page); the memcpy and store-read rows count copies and reads; %d reps", n,
		 size / MiB, w->reps);
	memfd = memfd_copy_of(path, size);

	vf = floor_missing_variant(w, "floor-missing", PIN_NONE, false, false, NULL, np, order, n, false);
	vfs = floor_missing_variant(w, "floor-missing-same-cpu", PIN_SAME, false, false, NULL, np, order,
				    n, false);
	vfo = floor_missing_variant(w, "floor-missing-other-cpu", PIN_OTHER, false, false, NULL, np,
				    order, n, false);
	vfb = floor_missing_variant(w, "floor-missing-busypoll", PIN_OTHER, true, false, NULL, np, order,
				    n, true);
	vfg = floor_missing_variant(w, "floor-missing-sigbus", PIN_NONE, false, true, NULL, np, order, n,
				    true);
	vfr = floor_missing_variant(w, "floor-missing+pread", PIN_NONE, false, false, path, np, order, n,
				    false);
	vfrs = floor_missing_variant(w, "floor-missing+pread-same-cpu", PIN_SAME, false, false, path, np,
				     order, n, false);
	/* The library's placement: one handler a CPU, all woken by every fault, the faulter unpinned. */
	vfp = floor_missing_variant(w, "floor-missing-percpu", PIN_PERCPU, false, false, NULL, np, order,
				    n, false);
	vfrp = floor_missing_variant(w, "floor-missing+pread-percpu", PIN_PERCPU, false, false, path, np,
				     order, n, false);
	vfm = floor_minor1_variant(w, "floor-minor", PIN_NONE, false, np, order, n);
	vms = floor_minor1_variant(w, "floor-minor-same-cpu", PIN_SAME, false, np, order, n);
	vmo = floor_minor1_variant(w, "floor-minor-other-cpu", PIN_OTHER, false, np, order, n);
	vmp = floor_minor1_variant(w, "floor-minor-percpu", PIN_PERCPU, false, np, order, n);
	vw = floor_wp_variant(w, "floor-wp", PIN_NONE, false, np);
	vws = floor_wp_variant(w, "floor-wp-same-cpu", PIN_SAME, false, np);
	vwo = floor_wp_variant(w, "floor-wp-other-cpu", PIN_OTHER, false, np);
	vwp = floor_wp_variant(w, "floor-wp-percpu", PIN_PERCPU, false, np);

	t = (struct acc){ .path = path, .size = size, .npages = np, .kind = K_MEMFD, .memfd = memfd };
	vka = add_acc(w, "kernel-minor-faultaround", false, &t, "kernel shmem minor faults, every "
		      "page in order, fault-around on (per page)");
	t.order = order;
	t.n = n;
	t.uffd_mode = UREG_WP;
	vk1 = add_acc(w, "kernel-minor-1pg", false, &t, "kernel shmem minor fault in a range registered "
		      "MISSING|WP and write-protected (no fault-around): what a cached upcache page costs");
	if (memfd < 0) {
		skip_variant(w, vka, "memfd: %s", strerror(-memfd));
		skip_variant(w, vk1, "memfd: %s", strerror(-memfd));
	}

	mc = calloc(2, sizeof(*mc));
	if (!mc)
		exit(1);
	mc[0].src = aligned_alloc(PG, dram_size);
	mc[0].dst = aligned_alloc(PG, PG);
	if (!mc[0].src || !mc[0].dst)
		exit(1);
	memset(mc[0].src, 1, dram_size);
	memset(mc[0].dst, 2, PG);
	dorder = random_order(dram_size / PG, 1, 9, &ndram);
	mc[1] = mc[0];
	mc[0].n = 65536;
	mc[1].dram = true;
	mc[1].order = dorder;
	mc[1].n = ndram < 65536 ? ndram : 65536;
	vmh = add_variant(w, "memcpy-4k-hot", memcpy_pass, &mc[0], false, "memcpy of 4 KiB, source in cache");
	vmd = add_variant(w, "memcpy-4k-dram", memcpy_pass, &mc[1], false, "memcpy of 4 KiB from a random "
			  "page of a %zu MiB buffer", dram_size / MiB);
	rd = calloc(2, sizeof(*rd));
	if (!rd)
		exit(1);
	rd[0] = (struct rd_ctx){ .path = path, .uring = true, .order = order, .n = n };
	rd[1] = rd[0];
	rd[1].uring = false;
	vru = add_variant(w, "store-read-io_uring", read_pass, &rd[0], false, "4 KiB read of a cached "
			  "file through io_uring, one at a time (submit + wait)");
	vrp = add_variant(w, "store-read-pread", read_pass, &rd[1], false, "4 KiB pread of a cached file");

	t = (struct acc){ .path = path, .size = size, .npages = np, .kind = K_UPC, .order = order, .n = n,
			  .fresh_cache = true, .cflags = UPC_CACHE_NO_BGWB,
			  .expect = expect_sum(order, n) };
	vus = add_acc(w, "upc-sync-missing", false, &t, "upcache MISSING faults, one page each, the "
		      "store's data in the kernel's page cache (a new cache per pass)");
	t.async = true;
	snprintf(nm, sizeof(nm), "%.32s-missing", B.async_label);
	vua = add_acc(w, nm, false, &t, "as upc-sync-missing, async tracking asked");
	t.async = false;
	t.one_cpu = B.cpus[0] + 1;
	vus1 = add_acc(w, "upc-sync-missing-1h", true, &t, "as upc-sync-missing, the thread pinned and "
		       "the cache with one fault handler on its CPU (UPC_FAULT_HANDLERS=1)");
	t.one_cpu = 0;
	/*
	 * A read-write mapping of cached pages takes MINOR faults in both
	 * modes.  The caches hold only the pages touched, one in every 64, so
	 * that the library's fault-around maps one page per fault whether it
	 * runs forward to the first page not cached or maps the cached pages
	 * of the aligned 64-page window around the fault: one MINOR fault per
	 * touch, the shape of floor-minor (which touches every other page).
	 */
	if (bench_file("minor", msize, mpath, sizeof(mpath)) < 0) {
		snprintf(w->skip, sizeof(w->skip), "cannot create the file in %s", B.dir);
		return;
	}
	warm_file_cache(mpath);
	morder = random_order(msize / PG, 64, 10, &mn);
	cs = cache_or_die(false, UPC_CACHE_NO_BGWB, 0);
	ca = cache_or_die(true, UPC_CACHE_NO_BGWB, 0);
	if (upc_new_one_handler(false, UPC_CACHE_NO_BGWB, B.cpus[0], &c1) < 0)
		c1 = NULL;
	upc_warm_pages(cs, mpath, msize, morder, mn);
	upc_warm_pages(ca, mpath, msize, morder, mn);
	if (c1)
		upc_warm_pages(c1, mpath, msize, morder, mn);
	t = (struct acc){ .kind = K_UPC, .path = mpath, .size = msize, .npages = msize / PG,
			  .order = morder, .n = mn, .expect = expect_sum(morder, mn) };
	t.fresh_cache = false;
	t.async = false;
	t.cache = cs;
	t.map_rw = true;	/* a read-only mapping takes kernel-served faults, not MINOR ones */
	vsm = add_acc(w, "upc-sync-minor", false, &t, "a page in 64 of a %zu MiB file cached, touched "
		      "through a fresh read-write mapping: one MINOR fault of one page a touch", msize / MiB);
	t.async = true;
	t.cache = ca;
	snprintf(nm, sizeof(nm), "%.32s-minor", B.async_label);
	vum = add_acc(w, nm, false, &t, "as upc-sync-minor, async tracking asked");
	t.async = false;
	t.cache = c1;
	t.one_cpu = B.cpus[0] + 1;
	vsm1 = add_acc(w, "upc-sync-minor-1h", true, &t, "as upc-sync-minor, the thread pinned and the "
		       "cache with one fault handler on its CPU (UPC_FAULT_HANDLERS=1)");
	if (!c1)
		skip_variant(w, vsm1, "no cache with one fault handler");

	run_variants(w);
	add_ratio(w, vus, vf);
	add_ratio(w, vua, vf);
	add_ratio(w, vsm, vfm);
	add_ratio(w, vum, vfm);
	add_ratio(w, vfm, vf);
	add_ratio(w, vus, vfr);
	add_ratio(w, vus, vfrs);
	add_ratio(w, vua, vfrs);
	add_ratio(w, vus1, vfrs);
	add_ratio(w, vsm1, vms);
	add_ratio(w, vus, vfs);
	add_ratio(w, vus, vfo);
	add_ratio(w, vfs, vf);
	add_ratio(w, vfo, vf);
	add_ratio(w, vfb, vf);
	add_ratio(w, vfg, vf);
	add_ratio(w, vms, vfm);
	add_ratio(w, vmo, vfm);
	add_ratio(w, vws, vw);
	add_ratio(w, vwo, vw);
	add_ratio(w, vfp, vfs);
	add_ratio(w, vfrp, vfrs);
	add_ratio(w, vmp, vms);
	add_ratio(w, vwp, vws);
	add_ratio(w, vka, vmh);
	add_ratio(w, vk1, vka);
	add_ratio(w, vru, vrp);
	add_ratio(w, vmd, vmh);
	{
		char note[300];
		struct ratio *r1 = find_ratio(w, vus, vfr), *r2 = find_ratio(w, vua, vf);

		snprintf(note, sizeof(note), "against the floor plus a 4 KiB pread in the handler "
			 "(floor-missing+pread): %.2f; %s: %.2f", r1 ? r1->med : -1,
			 w->var[vua].name, r2 ? r2->med : -1);
		add_target(8, "any fault the cache serves: MISSING (sync)", vus, vf, 1.3, note);
		add_target(8, "any fault the cache serves: MISSING (async)", vua, vf, 1.3, NULL);
		add_target(8, "any fault the cache serves: MINOR (async)", vum, vfm, 1.3,
			   "one MINOR fault of one page per touch (one page in 64 cached)");
	}
	{
		/*
		 * Issue 11, row F: every kind of served fault against the bare
		 * round trip of its kind with the handler on the faulting
		 * thread's CPU, where upcache's handlers run (one a CPU); the
		 * note gives the other placements of the same run.
		 */
		static const char *const what[4] = {
			"served MISSING fault (sync) vs bare round trip", "served MISSING fault (async)",
			"served MINOR fault (sync) vs bare round trip", "served MINOR fault (async)",
		};
		const int num[4] = { vus, vua, vsm, vum }, same[4] = { vfs, vfs, vms, vms };
		const int other[4] = { vfo, vfo, vmo, vmo }, unp[4] = { vf, vf, vfm, vfm };

		for (int k = 0; k < 4; k++) {
			char note[2000];

			note[0] = 0;
			f_note(note, sizeof(note), w, num[k], same[k], other[k], unp[k]);
			if (k < 2)
				snprintf(note + strlen(note), sizeof(note) - strlen(note), "; to the bare round "
					 "trip plus a 4 KiB pread in the handler, on the faulting CPU "
					 "(floor-missing+pread-same-cpu, what serving from the store adds to "
					 "the round trip): %.2f, unpinned: %.2f; the store's io_uring read / "
					 "pread: %.2f", ratio_med(w, num[k], vfrs), ratio_med(w, num[k], vfr),
					 ratio_med(w, vru, vrp));
			snprintf(note + strlen(note), sizeof(note) - strlen(note), "; the library with one "
				 "fault handler, on the faulting thread's CPU (%s, no other CPU's handler "
				 "woken): %.2f of %s", k < 2 ? "upc-sync-missing-1h" : "upc-sync-minor-1h",
				 k < 2 ? ratio_med(w, vus1, vfrs) : ratio_med(w, vsm1, vms),
				 k < 2 ? "floor-missing+pread-same-cpu" : "floor-minor-same-cpu");
			/*
			 * The library's own placement without the library: a
			 * handler pinned to each CPU, all polling the uffd, the
			 * faulting thread unpinned, so that every fault wakes
			 * every handler, and the faulting CPU's normally reads
			 * the message first.
			 */
			if (k < 2)
				snprintf(note + strlen(note), sizeof(note) - strlen(note), "; PER-CPU FLOOR "
					 "(upcache's design: a handler pinned to each of %d CPUs, all polling "
					 "the uffd, the faulting thread unpinned): floor-missing-percpu %.3g us "
					 "(%.2f of floor-missing-same-cpu), floor-missing+pread-percpu %.3g us "
					 "(%.2f of floor-missing+pread-same-cpu); %s / floor-missing+pread-percpu: "
					 "%.2f", floor_percpu_handlers(), med_us(&w->var[vfp]),
					 ratio_med(w, vfp, vfs), med_us(&w->var[vfrp]), ratio_med(w, vfrp, vfrs),
					 w->var[num[k]].name, ratio_med(w, num[k], vfrp));
			else
				snprintf(note + strlen(note), sizeof(note) - strlen(note), "; PER-CPU FLOOR "
					 "(upcache's design: a handler pinned to each of %d CPUs, all polling "
					 "the uffd, the faulting thread unpinned): floor-minor-percpu %.3g us "
					 "(%.2f of floor-minor-same-cpu); %s / floor-minor-percpu: %.2f",
					 floor_percpu_handlers(), med_us(&w->var[vmp]), ratio_med(w, vmp, vms),
					 w->var[num[k]].name, ratio_med(w, num[k], vmp));
			floor_percpu_str(note, sizeof(note), w, k < 2 ? vfrp : vmp);
			bound_str(note, sizeof(note), w, num[k]);
			bound_str(note, sizeof(note), w, same[k]);
			bound_str(note, sizeof(note), w, other[k]);
			add_target_row("F", 8, what[k], num[k], same[k], 1.1, note);
		}
	}
	upc_cache_destroy(cs);
	upc_cache_destroy(ca);
	if (c1)
		upc_cache_destroy(c1);
	free(morder);
	snprintf(w->note, sizeof(w->note), "the same-cpu and other-cpu rows pin the faulting thread "
		 "to one CPU and the handler to it or to the other; unpinned rows leave both to the "
		 "scheduler; issue 11's row F compares each served fault with the same-cpu round trip of "
		 "its kind (upcache's handlers run on the faulting CPU, one a CPU) and gives the other "
		 "placements in its note; the -percpu rows start a handler pinned to each CPU of the "
		 "affinity mask (at most 8), all polling the uffd, and leave the faulting thread unpinned, "
		 "as the library does: each fault wakes every handler, and a halted vCPU's wake-up (an "
		 "IPI) is paid where the guest does not halt-poll; busypoll and sigbus are levers, not "
		 "baselines");
	(void)vmd;
}
