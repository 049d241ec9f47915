/* SPDX-License-Identifier: MIT */
/*
 * upc-bench-shared - shared mode (upcd) against embedded mode, in one run.
 *
 *   upc-bench-shared [--upcd PATH] [--reps N] [--mib N] [--dir DIR]
 *
 * Starts its own upcd on a private socket, then per repetition, embedded
 * and shared in alternating order, on one file (cached by the kernel, so
 * that a fill is a buffered read of memory):
 *   missing   served MISSING faults, one page each (UPC_ADV_RANDOM), random order
 *   wp        the first write to each of those cached pages (a write-protect trap)
 * each with its floor: the same faults served by bare userfaultfd handlers
 * (floor_pass), before any library code: one pinned to each CPU, threads
 * of the faulting process (what the embedded cache is) or processes of
 * their own (what upcd --fault-handlers=per-cpu is); and one unpinned
 * process that looks for the next fault 50 us before it sleeps (what upcd
 * --fault-handlers=one is).  Each process floor over the thread floor is
 * what a daemon's round trip costs on this machine beyond a thread's,
 * placed so; the quotient divides by the floor of the placement upcd
 * chose (upcctl daemon status, printed first);
 * and in shared mode only:
 *   second    a second process scanning the file the first one cached:
 *             its faults, and the store reads it caused (none expected)
 *   client    the daemon's memory and threads for each idle client
 * Prints us a page and the shared/embedded ratio of each repetition.
 */
#define _GNU_SOURCE
#include <upcache.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"	/* uapi newer than the build host's headers */

#define PAGE 4096UL

static char sock[108];
static pid_t upcd_pid;			/* the daemon serving now */
static double upcd_cpu_us, upcd_faults;	/* its CPU time during the shared passes' faults, and theirs */

/* us of CPU @pid has used, all its threads (utime + stime), or -1 */
static double cpu_us(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');	/* the name may hold spaces */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static struct upc_cache *cache(bool shared)
{
	UPC_OPTS(upc_cache_opts, o, .flags = shared ? UPC_CACHE_SHARED : 0, .socket = sock);
	struct upc_cache *c;
	int ret = upc_cache_create(&o, &c);

	if (ret < 0) {
		fprintf(stderr, "upc_cache_create(%s): %s\n", shared ? "shared" : "embedded", upc_strerror(ret));
		exit(1);
	}
	return c;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* us a page: a read of each page in @perm's order (MISSING faults), then a write to each (first writes) */
static void touch_pages(volatile unsigned char *p, size_t npages, const uint32_t *perm, double *miss, double *wp)
{
	unsigned long sink = 0;
	double t = now_us();

	for (size_t i = 0; i < npages; i++)
		sink += p[(size_t)perm[i] * PAGE];
	*miss = (now_us() - t) / (double)npages;
	t = now_us();
	for (size_t i = 0; i < npages; i++)
		p[(size_t)perm[i] * PAGE + 1] = (unsigned char)sink;
	*wp = (now_us() - t) / (double)npages;
}

/* us a page for MISSING faults then first writes, one pass of one mode */
static void pass(bool shared, int fd, size_t npages, const uint32_t *perm, double *miss, double *wp)
{
	struct upc_cache *c = cache(shared);
	volatile unsigned char *p;

	if (upc_map(c, fd, 0, npages * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p) ||
	    upc_advise(c, (void *)p, npages * PAGE, UPC_ADV_RANDOM)) {
		fprintf(stderr, "map\n");
		exit(1);
	}
	{
		double before = shared ? cpu_us(upcd_pid) : -1;

		touch_pages(p, npages, perm, miss, wp);
		if (before >= 0) {
			upcd_cpu_us += cpu_us(upcd_pid) - before;
			upcd_faults += 2.0 * (double)npages;
		}
	}
	/* the daemon keeps what a client cached: write it back and drop it for the next pass */
	upc_msync(c, (void *)p, npages * PAGE, UPC_MS_SYNC);
	upc_unmap(c, (void *)p, npages * PAGE);
	upc_drop(c, 0);
	upc_cache_destroy(c);
}

/* ------------------------------------------------------------ the floor */

/*
 * A bare handler: reads the userfaultfd, and for a MISSING fault preads
 * the page from the file and copies it in write-protected (UFFDIO_COPY_MODE_WP,
 * as the engine fills a writable mapping under synchronous tracking), for
 * a write-protect fault lifts the protection (which wakes the writer).
 * As a thread it resolves faults of its own process; as a process of its
 * own it resolves them, through the descriptor it inherited, in another
 * process's address space, as upcd does through a client's.
 */
struct fhandler {
	int uffd, src_fd, stop_fd, cpu;
	unsigned int linger_us;		/* looks for the next fault that long before it sleeps */
	uintptr_t base;
	pthread_t th;
};

static void fh_loop(struct fhandler *h)
{
	struct pollfd pfd[2] = { { .fd = h->uffd, .events = POLLIN }, { .fd = h->stop_fd, .events = POLLIN } };
	char *page = aligned_alloc(PAGE, PAGE);
	struct uffd_msg msgs[16];
	double last = 0;
	cpu_set_t set;

	if (h->cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(h->cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	while (page) {
		ssize_t n;

		if (h->linger_us && now_us() - last < h->linger_us) {
			/* as upcd's one handler (lib/mm/fault.c, handler_main) */
			n = read(h->uffd, msgs, sizeof(msgs));
			if (n <= 0) {
				sched_yield();
				continue;
			}
		} else {
			if (poll(pfd, 2, -1) < 0 || pfd[1].revents)
				break;
			n = read(h->uffd, msgs, sizeof(msgs));
		}

		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			uintptr_t addr = (uintptr_t)msgs[i].arg.pagefault.address & ~(PAGE - 1);
			struct uffdio_range r = { .start = addr, .len = PAGE };

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
				struct uffdio_writeprotect wp = { .range = r, .mode = 0 };

				ioctl(h->uffd, UFFDIO_WRITEPROTECT, &wp);
			} else if (pread(h->src_fd, page, PAGE, (off_t)(addr - h->base)) == (ssize_t)PAGE) {
				struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)page, .len = PAGE,
							 .mode = UFFDIO_COPY_MODE_WP };

				if (ioctl(h->uffd, UFFDIO_COPY, &c) < 0 && errno == EEXIST)
					ioctl(h->uffd, UFFDIO_WAKE, &r);
			}
			if (h->linger_us)
				last = now_us();	/* after the fault, as the library's */
		}
	}
	free(page);
}

static void *fh_thread(void *arg)
{
	fh_loop(arg);
	return NULL;
}

/* Where a floor pass's handlers run. */
enum floor_how {
	FLOOR_THREADS,		/* threads of this process, one pinned to each CPU: the embedded cache */
	FLOOR_PROCESSES,	/* processes of their own, one pinned to each CPU: upcd --fault-handlers=per-cpu */
	FLOOR_ONE_PROCESS,	/* one unpinned process, lingering 50 us: upcd --fault-handlers=one */
};

/*
 * One floor pass: MISSING faults on a memfd mapping registered MISSING|WP,
 * in the random order of the library's passes, then the first write to
 * each page, served by handlers placed as @how says.  us a page into
 * *@miss, *@wp; false where the kernel cannot (no write-protection of
 * shmem).
 */
static bool floor_pass(enum floor_how how, int fd, size_t npages, const uint32_t *perm, double *miss, double *wp)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
	struct fhandler h[16];
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), memfd = memfd_create("floor", MFD_CLOEXEC);
	int stop[2] = { -1, -1 }, ncpu = 0, started = 0, cpus[16];
	pid_t pids[16];
	cpu_set_t set;
	volatile unsigned char *p;
	bool ok = false, cross = how != FLOOR_THREADS;

	*miss = *wp = NAN;	/* printed as such where the floor could not be measured */

	if (uffd < 0 || memfd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0 || ftruncate(memfd, (off_t)(npages * PAGE)) ||
	    pipe2(stop, O_CLOEXEC) < 0)
		goto out;
	p = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED)
		goto out;
	{
		struct uffdio_register reg = { .range = { .start = (uintptr_t)p, .len = npages * PAGE },
					       .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };

		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
			goto out_unmap;
	}
	sched_getaffinity(0, sizeof(set), &set);
	for (int i = 0; i < CPU_SETSIZE && ncpu < 16; i++)
		if (CPU_ISSET(i, &set))
			cpus[ncpu++] = i;
	if (how == FLOOR_ONE_PROCESS) {
		ncpu = 1;
		cpus[0] = -1;
	}
	for (int i = 0; i < ncpu; i++) {
		h[i] = (struct fhandler){ .uffd = uffd, .src_fd = fd, .stop_fd = stop[0], .cpu = cpus[i],
					  .base = (uintptr_t)p,
					  /* lib/mm/remote.c, REMOTE_LINGER_US */
					  .linger_us = how == FLOOR_ONE_PROCESS ? 50 : 0 };
		if (cross) {
			pids[i] = fork();
			if (pids[i] == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				close(stop[1]);
				fh_loop(&h[i]);
				_exit(0);
			}
			if (pids[i] < 0)
				break;
		} else if (pthread_create(&h[i].th, NULL, fh_thread, &h[i]) != 0) {
			break;
		}
		started++;
	}
	if (started == ncpu) {
		touch_pages(p, npages, perm, miss, wp);
		ok = true;
	}
	close(stop[1]);		/* every handler sees the hang-up */
	stop[1] = -1;
	for (int i = 0; i < started; i++) {
		if (cross)
			waitpid(pids[i], NULL, 0);
		else
			pthread_join(h[i].th, NULL);
	}
out_unmap:
	munmap((void *)p, npages * PAGE);
out:
	if (stop[1] >= 0)
		close(stop[1]);
	close(stop[0]);
	close(uffd);
	close(memfd);
	return ok;
}

static long rss_kib(pid_t pid, const char *key)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			v = atol(line + strlen(key));
	fclose(f);
	return v;
}

/*
 * upcd, started; with @ready, once it serves (after its start-up probe of
 * where to run fault handlers, which the bench's own work would disturb).
 */
static pid_t spawn_upcd(const char *upcd, bool ready)
{
	pid_t d = fork();

	if (d == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(upcd, "upcd", "--foreground", "--socket", sock, (char *)NULL);
		perror(upcd);
		_exit(127);
	}
	for (int i = 0; i < 500 && access(sock, F_OK); i++)
		usleep(1000);
	if (ready)
		upc_cache_destroy(cache(true));
	return d;
}

/*
 * What upcd says of its fault handlers (upcctl daemon status, beside this
 * program), as a comment line; true if it serves with one handler a client.
 */
static bool print_placement(const char *who)
{
	bool one = false;
	char exe[512], cmd[1024], line[512];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;
	FILE *f;

	if (n <= 0)
		return false;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return false;
	*slash = '\0';
	snprintf(cmd, sizeof(cmd), "'%s/upcctl' daemon status --socket '%s' 2>/dev/null", exe, sock);
	f = popen(cmd, "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "fault-handlers ", 15)) {
			printf("# %s fault handlers: %s", who, line + 15);
			one = !strncmp(line + 15, "one ", 4);
		}
	pclose(f);
	return one;
}

int main(int argc, char **argv)
{
	const char *upcd = "./daemon/upcd", *dir = "/var/tmp";
	int reps = 6, mib = 64, opt;
	char path[256], sdir[] = "/tmp/upc-bench-shared.XXXXXX";
	size_t npages;
	uint32_t *perm;
	pid_t d;
	int fd;

	while ((opt = getopt(argc, argv, "u:r:m:d:")) != -1) {
		switch (opt) {
		case 'u': upcd = optarg; break;
		case 'r': reps = atoi(optarg); break;
		case 'm': mib = atoi(optarg); break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: upc-bench-shared [-u UPCD] [-r REPS] [-m MIB] [-d DIR]\n");
			return 2;
		}
	}
	if (reps < 1 || reps > 100 || mib < 1)
		return 2;
	npages = (size_t)mib << 8;
	if (!mkdtemp(sdir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/s", sdir);
	d = upcd_pid = spawn_upcd(upcd, true);
	snprintf(path, sizeof(path), "%s/upc-bench-shared.XXXXXX", dir);
	fd = mkstemp(path);
	if (fd < 0)
		return 1;
	unlink(path);
	{
		char *buf = calloc(1, 1 << 20);

		for (int i = 0; i < mib; i++)
			if (pwrite(fd, buf, 1 << 20, (off_t)i << 20) != 1 << 20)
				return 1;
		free(buf);
		fsync(fd);
	}
	perm = malloc(npages * sizeof(*perm));
	for (size_t i = 0; i < npages; i++)
		perm[i] = (uint32_t)i;
	srandom(1);
	for (size_t i = npages - 1; i > 0; i--) {
		size_t j = (size_t)random() % (i + 1);
		uint32_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}

	double em_all[100];
	bool one_handler;

	printf("# upc-bench-shared: %d MiB file in %s (in the kernel's page cache), %d repetitions\n", mib, dir, reps);
	one_handler = print_placement("upcd's");
	printf("# rep  missing: embedded shared ratio | floor thread process ratio   "
	       "wp: embedded shared ratio | floor thread process ratio   (us a page)\n");
	{
		double rm[100], rw[100], em[100], sm[100], ew[100], sw[100];
		double fm[100], fw[100], tm[100], pm[100], tw[100], pw[100], km[100], kw[100];
		double om[100], ow[100], gm[100], gw[100];
		bool floor_ok = true;

		for (int r = 0; r < reps; r++) {
			bool order = r % 2;

			/* library passes and floor passes alternate, each pair in turn; the third floor first or last */
			if (order)
				floor_ok &= floor_pass(FLOOR_ONE_PROCESS, fd, npages, perm, &om[r], &ow[r]);
			pass(order, fd, npages, perm, order ? &sm[r] : &em[r], order ? &sw[r] : &ew[r]);
			floor_ok &= floor_pass(order ? FLOOR_PROCESSES : FLOOR_THREADS, fd, npages, perm,
					       order ? &pm[r] : &tm[r], order ? &pw[r] : &tw[r]);
			pass(!order, fd, npages, perm, !order ? &sm[r] : &em[r], !order ? &sw[r] : &ew[r]);
			floor_ok &= floor_pass(!order ? FLOOR_PROCESSES : FLOOR_THREADS, fd, npages, perm,
					       !order ? &pm[r] : &tm[r], !order ? &pw[r] : &tw[r]);
			if (!order)
				floor_ok &= floor_pass(FLOOR_ONE_PROCESS, fd, npages, perm, &om[r], &ow[r]);
			gm[r] = om[r] / tm[r];
			gw[r] = ow[r] / tw[r];
			rm[r] = sm[r] / em[r];
			rw[r] = sw[r] / ew[r];
			fm[r] = pm[r] / tm[r];
			fw[r] = pw[r] / tw[r];
			km[r] = rm[r] / (one_handler ? gm[r] : fm[r]);
			kw[r] = rw[r] / (one_handler ? gw[r] : fw[r]);
			printf("%5d  %8.2f %8.2f %5.2f | %6.2f %6.2f %5.2f   %8.2f %8.2f %5.2f | %6.2f %6.2f %5.2f\n", r,
			       em[r], sm[r], rm[r], tm[r], pm[r], fm[r], ew[r], sw[r], rw[r], tw[r], pw[r], fw[r]);
		}
		printf("median ratio shared/embedded: MISSING fault %.2f, first write %.2f\n", median(rm, reps),
		       median(rw, reps));
		if (floor_ok) {
			printf("median ratio of the floor, handler process/handler thread: MISSING fault %.2f, "
			       "first write %.2f\n", median(fm, reps), median(fw, reps));
			printf("median ratio of the floor, one unpinned handler process/handler thread: MISSING fault "
			       "%.2f (%.2f us), first write %.2f (%.2f us)\n", median(gm, reps), median(om, reps),
			       median(gw, reps), median(ow, reps));
			printf("median of each repetition's shared/embedded over its floor's (%s): "
			       "MISSING fault %.2f, first write %.2f\n",
			       one_handler ? "one unpinned handler process/thread" : "process/thread",
			       median(km, reps), median(kw, reps));
		} else {
			printf("floor: not measured (no userfaultfd write-protection of shmem here)\n");
		}
		memcpy(em_all, em, sizeof(em));
		if (upcd_faults > 0)
			printf("upcd's CPU time during the shared passes' faults: %.2f us a fault (all its threads; "
			       "the faulting thread's own time is not in it)\n", upcd_cpu_us / upcd_faults);
	}

	/* A second process scans what the first one cached. */
	{
		struct upc_cache *c = cache(true);
		volatile unsigned char *p;
		unsigned long sink = 0;
		int pfd[2];
		double res[2];

		upc_map(c, fd, 0, npages * PAGE, PROT_READ, 0, (void **)&p);
		for (size_t i = 0; i < npages; i++)
			sink += p[i * PAGE];
		if (pipe(pfd))
			return 1;
		if (fork() == 0) {
			struct upc_cache *c2 = cache(true);
			struct upc_stats a = { .sz = sizeof(a) }, b = { .sz = sizeof(b) };
			volatile unsigned char *q;
			double t;

			upc_map(c2, fd, 0, npages * PAGE, PROT_READ, 0, (void **)&q);
			upc_stats(c2, &a);
			t = now_us();
			for (size_t i = 0; i < npages; i++)
				sink += q[i * PAGE];
			res[0] = (now_us() - t) / (double)npages;
			upc_stats(c2, &b);
			res[1] = (double)(b.fill_ios - a.fill_ios);
			if (write(pfd[1], res, sizeof(res)) != sizeof(res))
				_exit(1);
			upc_cache_destroy(c2);
			_exit(0);
		}
		if (read(pfd[0], res, sizeof(res)) != sizeof(res))
			return 1;
		wait(NULL);
		printf("second process scanning the file the first cached: %.3f us a page, %.0f store reads (sink %lu)\n",
		       res[0], res[1], sink);
		upc_cache_destroy(c);
	}

	/*
	 * kill -9 of the daemon with half the file dirty in one client.  With no
	 * daemon, the client serves itself (lib/client/takeover.c): a MISSING
	 * fault on the other half, and an msync of the dirty half, each as a
	 * ratio to the embedded cache's MISSING fault above.  Then a new
	 * daemon: how long until the client's next call is served (its check
	 * for a daemon every 100 ms, its hand-back, the handshake, the
	 * adoption), and how long the write-back of the adopted dirty pages
	 * takes then.  The client is a child: this process, which starts the
	 * daemons, must not be one (a client's fork waits for the daemon).
	 */
	{
		int up[2], go[2];
		double t0, res[5], em_med;
		size_t half = npages / 2;
		pid_t w;

		if (pipe(up) || pipe(go))
			return 1;
		w = fork();
		if (w == 0) {
			struct upc_cache *c = cache(true);
			struct upc_stats st = { .sz = sizeof(st) };
			volatile unsigned char *p;
			unsigned long sink = 0;
			double t1, t2, t3;
			unsigned char b = 0;
			int ret;

			if (upc_map(c, fd, 0, npages * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p) ||
			    upc_advise(c, (void *)p, npages * PAGE, UPC_ADV_RANDOM))
				_exit(1);
			for (size_t i = 0; i < half; i++)
				p[i * PAGE] = 7;
			if (write(up[1], "r", 1) != 1 || read(go[0], &t0, sizeof(t0)) != sizeof(t0))
				_exit(1);
			/* no daemon: the first fault waits until this process serves itself; then the rest */
			sink += p[half * PAGE];
			t1 = now_us();
			for (size_t i = 0; i < npages; i++)	/* the other half, in the random order of the passes */
				if (perm[i] > half)
					sink += p[(size_t)perm[i] * PAGE];
			t2 = now_us();
			ret = upc_msync(c, (void *)p, half * PAGE, UPC_MS_SYNC);
			t3 = now_us();
			if (ret || pread(fd, &b, 1, (off_t)(half - 1) * PAGE) != 1 || b != 7) {
				fprintf(stderr, "with no daemon: msync %s, page %zu %u\n", upc_strerror(ret), half - 1, b);
				_exit(1);
			}
			res[0] = (t2 - t1) / (double)(npages - half - 1);
			res[1] = (t3 - t2) / (double)half;
			if (write(up[1], res, 2 * sizeof(res[0])) != 2 * sizeof(res[0]) ||
			    read(go[0], &t0, sizeof(t0)) != sizeof(t0))
				_exit(1);
			ret = upc_stats(c, &st);		/* waits for the new daemon */
			t1 = now_us();
			ret = ret ? ret : upc_msync(c, (void *)p, npages * PAGE, UPC_MS_SYNC);
			t2 = now_us();
			if (ret) {
				fprintf(stderr, "after the restart: %s\n", upc_strerror(ret));
				_exit(1);
			}
			res[2] = t1 - t0;
			res[3] = t2 - t1;
			res[4] = (double)(sink & 1);
			if (write(up[1], res + 2, 3 * sizeof(res[0])) != 3 * sizeof(res[0]))
				_exit(1);
			upc_cache_destroy(c);
			_exit(0);
		}
		if (read(up[0], res, 1) != 1)
			return 1;
		kill(d, SIGKILL);
		waitpid(d, NULL, 0);
		t0 = now_us();
		if (write(go[1], &t0, sizeof(t0)) != sizeof(t0) || read(up[0], res, 2 * sizeof(res[0])) != 2 * sizeof(res[0]))
			return 1;
		t0 = now_us();
		d = spawn_upcd(upcd, false);
		if (write(go[1], &t0, sizeof(t0)) != sizeof(t0) ||
		    read(up[0], res + 2, 3 * sizeof(res[0])) != 3 * sizeof(res[0]))
			return 1;
		waitpid(w, NULL, 0);
		em_med = median(em_all, reps);
		printf("daemon killed, no daemon: the client serves a MISSING fault itself in %.2f us (%.2fx the embedded "
		       "cache's %.2f us), msyncs its %zu dirty pages at %.2f us a page\n",
		       res[0], res[0] / em_med, em_med, half, res[1]);
		printf("new daemon: the client's next call served %.1f ms after it was started (with its probe of "
		       "where to serve faults, if it ran one), the adopted dirty pages written back in %.1f ms more\n",
		       res[2] / 1000, res[3] / 1000);
		print_placement("the new upcd's");
	}

	/* The daemon's cost per idle client: its own memory (RssAnon), not the shared memfds'. */
	{
		struct upc_cache *cs[32];
		long r0 = rss_kib(d, "RssAnon:"), t0 = rss_kib(d, "Threads:"), r1, t1;

		for (int i = 0; i < 32; i++)
			cs[i] = cache(true);
		usleep(100000);
		r1 = rss_kib(d, "RssAnon:");
		t1 = rss_kib(d, "Threads:");
		printf("daemon per idle client: %.1f KiB anonymous resident, %.1f threads (32 clients: %ld -> %ld KiB, %ld -> %ld threads)\n",
		       (double)(r1 - r0) / 32, (double)(t1 - t0) / 32, r0, r1, t0, t1);
		for (int i = 0; i < 32; i++)
			upc_cache_destroy(cs[i]);
	}
	kill(d, SIGTERM);
	waitpid(d, NULL, 0);
	rmdir(sdir);
	return 0;
}
