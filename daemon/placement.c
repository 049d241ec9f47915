/* SPDX-License-Identifier: MIT */
/*
 * placement.c - where upcd runs a client's fault handlers (upcd(8),
 * --fault-handlers).  The embedded cache runs one handler pinned to each
 * CPU, all reading the userfaultfd (fault.c, fault_handlers_wanted): the
 * kernel wakes every reader, and the one on the faulting CPU runs there
 * at once, two context switches and no inter-processor interrupt.  For
 * threads of the faulting process that is the cheapest placement on every
 * machine measured here.  For a daemon's handler it depends on the
 * machine, both ways, by far more than the 1.3 that issue 10 allows a
 * served fault in shared mode against embedded mode:
 *
 *   - On the machine of 2026-12-03 (BENCHMARKS.md, issue 10 at f7aa7b8),
 *     one unpinned handler a client slept on a halted vCPU, and its
 *     faults cost 7.4x (MISSING) and 14x (first write) the embedded
 *     cache's; the same placement as the embedded cache cost 1.0x-1.2x.
 *
 *   - On the machine of 2026-12-05 (BENCHMARKS.md, issue 10, "one
 *     unpinned fault handler a client"), a context switch to another
 *     process on the same CPU costs 7.0 us against 3.7 us to a thread of
 *     the same one (a pipe's round trip; the guest switches page tables
 *     without PCID, under PTI), and a bare handler process on the
 *     faulting CPU served a fault in 37 us where a thread took 18; on the
 *     other CPU both took 28 (a throwaway program, not in the tree).  With
 *     one unpinned handler the scheduler keeps the handler and the
 *     faulting thread apart, and upcd's faults cost 1.28x-1.38x (MISSING)
 *     and 1.20x-1.27x (first write) the embedded cache's, against 2.13x
 *     and 2.16x with a handler on each CPU; with the handler looking for
 *     the next fault 50 us before it sleeps (remote.c, REMOTE_LINGER_US),
 *     0.89x and 0.82x (upc-bench-shared).
 *
 * So with --fault-handlers=auto (the default) upcd measures both at start,
 * as the kernel's raid6 code picks its algorithm at boot: a child process
 * faults on a memfd mapping registered as a client's is (MISSING, and
 * write-protect where the kernel has it), and threads of the daemon serve
 * its userfaultfd, placed one way then the other, in ABBA order, eight
 * rounds of 32 pages each, so that a load that comes and goes weighs on
 * both alike; one unpinned handler is taken unless its median is over
 * PLACE_MARGIN times the other's.  A fill here is a copy of a page, not a
 * store read: the store costs what it costs wherever the handler runs.
 * The bias to one handler: a load at start scatters the two medians both
 * ways (0.5 to 2.2 under make check, review of this file; 1.7 with fio
 * starting beside, where one handler then served LMDB faster than one a
 * CPU), where the machines measured differ by 1.6x one way and 7x the
 * other (a margin of 1.25 first: per-cpu under such loads); one handler
 * costs the daemon a thread a client, not one a CPU; and it looks for the
 * next fault before it sleeps (remote.c, REMOTE_LINGER_US), which the
 * probe leaves out and which makes it cheaper still for a thread that
 * faults page after page.  50-150 ms, after the daemon listens and before
 * it serves anyone (clients wait in the socket's backlog); the choice is
 * for every client of this daemon's life, and upcctl daemon status shows
 * it with what was measured.
 *
 * What one handler costs: the faults of one client are served one at a
 * time.  Those of one file are anyway (a fault holds its file's lock,
 * fault.c, handle_fault, through the store read); a client whose threads
 * fault on several files at once waits for the store once per file in
 * turn, where one handler a CPU would read them side by side.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "placement.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define PLACE_PAGES	32	/* faulted a round, each read then written */
#define PLACE_ROUNDS	16	/* ABBA ABBA ...: eight a placement */
#define PLACE_MARGIN	2.0	/* one handler a CPU only where one unpinned costs over twice as much */
#define PLACE_WAIT_MS	1000	/* a round (~3 ms idle) that takes longer is not a measurement */

int placement_parse(const char *s, enum placement_mode *mode)
{
	if (!strcmp(s, "auto"))
		*mode = PLACE_AUTO;
	else if (!strcmp(s, "per-cpu"))
		*mode = PLACE_PER_CPU;
	else if (!strcmp(s, "one"))
		*mode = PLACE_ONE;
	else
		return -EINVAL;
	return 0;
}

/* ------------------------------------------------------------ the faulting child */

struct child_hello {
	uintptr_t base;
	int wp;			/* registered for write-protect faults too */
	int err;		/* a negative errno: it could not set up */
};

static int send_hello(int sock, const struct child_hello *h, int fd)
{
	return sys_send_fds(sock, h, sizeof(*h), &fd, fd >= 0, 0) == (ssize_t)sizeof(*h) ? 0 : -1;
}

/*
 * The child: a mapping as a client's (a memfd, MAP_SHARED, registered for
 * MISSING and write-protect faults), its userfaultfd sent to the daemon;
 * then, for each round the daemon names, a read of each of that round's
 * pages in a scattered order, then a write to each: us a page back.
 */
static void __attribute__((noreturn)) child_main(int sock)
{
	size_t len = (size_t)PLACE_ROUNDS * PLACE_PAGES * UPC_PAGE_SIZE;
	struct child_hello h = { 0 };
	uint64_t got = 0;
	volatile unsigned char *p;
	unsigned long sink = 0;
	int uffd, memfd;
	uint32_t round;

	/* the daemon's handlers and mask are its own: a signal for the child alone ends it */
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	{
		sigset_t all;

		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
	}
	if (debug_from_env() & UPC_DBG_PROBE_FAIL) {
		h.err = -EPERM;		/* as where the daemon's user may have no userfaultfd */
		goto fail;
	}
	uffd = sys_uffd_open(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM, &got, NULL);
	if (uffd < 0)
		uffd = sys_uffd_open(UFFD_FEATURE_MISSING_SHMEM, &got, NULL);
	memfd = sys_memfd("upcd-placement", false);
	if (uffd < 0 || memfd < 0) {
		h.err = uffd < 0 ? uffd : memfd;
		goto fail;
	}
	if (ftruncate(memfd, (off_t)len) < 0) {
		h.err = -errno;
		goto fail;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED) {
		h.err = -errno;
		goto fail;
	}
	h.base = (uintptr_t)p;
	h.wp = (got & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) &&
	       sys_uffd_register(uffd, h.base, len, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP) == 0;
	if (!h.wp) {
		h.err = sys_uffd_register(uffd, h.base, len, UFFDIO_REGISTER_MODE_MISSING);
		if (h.err < 0)
			goto fail;
	}
	if (send_hello(sock, &h, uffd) < 0)
		_exit(1);
	close(uffd);
	while (read(sock, &round, sizeof(round)) == (ssize_t)sizeof(round) && round < PLACE_ROUNDS) {
		volatile unsigned char *r = p + (size_t)round * PLACE_PAGES * UPC_PAGE_SIZE;
		uint64_t t = now_us();
		double us;

		/* 13 is prime to PLACE_PAGES: every page once, no two neighbours in a row */
		for (unsigned int i = 0; i < PLACE_PAGES; i++)
			sink += r[(size_t)(i * 13 % PLACE_PAGES) * UPC_PAGE_SIZE];
		if (h.wp)
			for (unsigned int i = 0; i < PLACE_PAGES; i++)
				r[(size_t)(i * 13 % PLACE_PAGES) * UPC_PAGE_SIZE] = (unsigned char)sink;
		us = (double)(now_us() - t) / PLACE_PAGES;
		if (write(sock, &us, sizeof(us)) != (ssize_t)sizeof(us))
			break;
	}
	_exit(0);
fail:
	send_hello(sock, &h, -1);
	_exit(1);
}

/* ------------------------------------------------------------ the daemon's handlers */

struct handler {
	int uffd, stop_fd, cpu;
	bool wp;
	void *page;
	pthread_t thread;
};

/* A handler as fault.c's with more than one: one message a read; a fill copies a page. */
static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct pollfd pfd[2] = { { .fd = h->uffd, .events = POLLIN }, { .fd = h->stop_fd, .events = POLLIN } };
	struct uffd_msg msg;

	while (poll(pfd, 2, -1) >= 0 || errno == EINTR) {
		uintptr_t addr;

		if (pfd[1].revents)
			break;
		if (read(h->uffd, &msg, sizeof(msg)) != (ssize_t)sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		addr = (uintptr_t)msg.arg.pagefault.address & UPC_PAGE_MASK;
		if (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			sys_uffd_wp(h->uffd, addr, UPC_PAGE_SIZE, false, true);
		else if (sys_uffd_copy(h->uffd, addr, h->page, UPC_PAGE_SIZE, h->wp, true) == -EEXIST)
			sys_uffd_wake(h->uffd, addr, UPC_PAGE_SIZE);
	}
	return NULL;
}

/*
 * One round: handlers placed as @one says serve the child's faults on
 * round @round's pages.  us a page, or a negative errno.
 */
static double probe_round(int sock, int uffd, bool wp, bool one, uint32_t round)
{
	struct handler h[CPU_SETSIZE < 64 ? CPU_SETSIZE : 64];
	int cpus[CPU_SETSIZE], stop[2];
	unsigned int nh = one ? 1 : fault_handlers_wanted(cpus, CPU_SETSIZE), started = 0;
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	double us = -EIO;

	if (nh > sizeof(h) / sizeof(h[0]))
		nh = sizeof(h) / sizeof(h[0]);
	if (pipe2(stop, O_CLOEXEC) < 0)
		return -errno;
	for (; started < nh; started++) {
		pthread_attr_t attr;
		int r;

		h[started] = (struct handler){ .uffd = uffd, .stop_fd = stop[0], .wp = wp,
					       .cpu = nh > 1 ? cpus[started] : -1 };
		h[started].page = aligned_alloc(UPC_PAGE_SIZE, UPC_PAGE_SIZE);
		if (!h[started].page)
			break;
		memset(h[started].page, 0x5a, UPC_PAGE_SIZE);
		pthread_attr_init(&attr);
		if (h[started].cpu >= 0) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(h[started].cpu, &set);
			pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
		}
		r = pthread_create(&h[started].thread, &attr, handler_main, &h[started]);
		pthread_attr_destroy(&attr);
		if (r) {
			free(h[started].page);
			break;
		}
	}
	if (started == nh && write(sock, &round, sizeof(round)) == (ssize_t)sizeof(round)) {
		int r;

		while ((r = poll(&pfd, 1, PLACE_WAIT_MS)) < 0 && errno == EINTR)
			;

		if (r == 0)
			us = -ETIMEDOUT;
		else if (r > 0 && read(sock, &us, sizeof(us)) != (ssize_t)sizeof(us))
			us = -EIO;
	}
	close(stop[1]);		/* every handler sees the hang-up */
	for (unsigned int i = 0; i < started; i++) {
		pthread_join(h[i].thread, NULL);
		free(h[i].page);
	}
	close(stop[0]);
	return us;
}

static double median(double *v, unsigned int n)
{
	for (unsigned int i = 1; i < n; i++)
		for (unsigned int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * --fault-handlers=auto: measure, choose, fill @p.  Never fails: where the
 * probe cannot run (no userfaultfd for the daemon's user, a round that
 * does not finish), the daemon keeps the embedded cache's placement, and
 * @p->why says why.  Runs before any thread of the engine exists (fork),
 * with SIGTERM and SIGINT blocked by the caller (a stop waits for it).
 */
void placement_probe(struct placement *p)
{
	double one[PLACE_ROUNDS / 2], per_cpu[PLACE_ROUNDS / 2];
	unsigned int none = 0, nper = 0;
	int cpus[1], sv[2], uffd = -1, status;
	unsigned int nfd = 0;
	cpu_set_t set;
	struct child_hello hello;
	struct pollfd pfd;
	pid_t pid, parent = getpid();

	p->one = false;
	p->per_cpu_us = p->one_us = 0;
	p->why = NULL;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) < 2) {
		p->one = true;
		p->why = "one CPU: one handler a CPU is one handler";
		return;
	}
	if (fault_handlers_wanted(cpus, 1) < 2) {
		p->one = true;
		p->why = "UPC_FAULT_HANDLERS=1: one handler a CPU is one handler";
		return;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		p->why = "no socket pair";
		return;
	}
	pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		p->why = "no process for the probe";
		return;
	}
	if (pid == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		child_main(sv[1]);
	}
	close(sv[1]);
	pfd = (struct pollfd){ .fd = sv[0], .events = POLLIN };
	if (poll(&pfd, 1, PLACE_WAIT_MS) <= 0 ||
	    sys_recv_fds(sv[0], &hello, sizeof(hello), &uffd, 1, &nfd) != (ssize_t)sizeof(hello)) {
		p->why = "the probe's process did not answer";
		goto out;
	}
	if (hello.err < 0 || !nfd) {
		p->why = "no userfaultfd for the probe";
		goto out;
	}
	for (uint32_t r = 0; r < PLACE_ROUNDS; r++) {
		bool try_one = ((r + 1) >> 1) & 1;	/* ABBA ABBA ...: a drift costs both alike */
		double us = probe_round(sv[0], uffd, hello.wp, try_one, r);

		if (us <= 0) {
			p->why = us == -ETIMEDOUT ? "a round of the probe took over 1 s" : "a round of the probe failed";
			goto out;
		}
		if (try_one)
			one[none++] = us;
		else
			per_cpu[nper++] = us;
	}
	p->one_us = median(one, none);
	p->per_cpu_us = median(per_cpu, nper);
	p->one = p->one_us <= PLACE_MARGIN * p->per_cpu_us;
out:
	if (p->why)
		kill(pid, SIGKILL);	/* maybe in a fault no one serves */
	if (uffd >= 0)
		close(uffd);
	close(sv[0]);		/* the child's read ends: it exits */
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

/* For upcctl daemon status and the log: "one", "per-cpu", and what decided it. */
int placement_describe(const struct placement *p, char *buf, int len)
{
	const char *how = p->one ? "one" : "per-cpu";

	if (p->mode != PLACE_AUTO)
		return snprintf(buf, (size_t)len, "%s (--fault-handlers=%s)", how, how);
	if (p->why)
		return snprintf(buf, (size_t)len, "%s (auto: %s)", how, p->why);
	return snprintf(buf, (size_t)len, "%s (auto: a fault and a first write %.1f us with one unpinned "
			"handler, %.1f us with one a CPU)", how, p->one_us, p->per_cpu_us);
}
