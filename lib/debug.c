/* SPDX-License-Identifier: MIT */
/*
 * debug.c - debugging aids that cost nothing unless asked for: the USDT
 * probes' semaphores (usdt.h), $UPC_DEBUG, and the dirty-page provenance of
 * UPC_DEBUG=dirty-backtrace, the counterpart of the kernel's page_owner
 * (which records the stack that allocated a page) for the write that
 * dirtied one.
 *
 * $UPC_DEBUG is read once, when a cache is created, as a comma-separated
 * list:
 *
 *   break-i1         TEST ONLY: write-back clears dirty *before* it
 *                    write-protects (the order I1 forbids), so that a test
 *                    can prove upc-trace --check catches it.  Synchronous
 *                    tracking only: under asynchronous tracking the
 *                    PAGEMAP_SCAN that finds a written page also protects
 *                    it, and there is no order to break.
 *   dirty-backtrace  record the stack of the thread whose write dirtied a
 *                    clean page (synchronous tracking: that write traps).
 *   stop-at-call     TEST ONLY: a process of a shared cache stops itself
 *                    (SIGSTOP) the first time upcd calls into it (munmap,
 *                    mprotect, madvise of its own addresses), so that a
 *                    test can kill the daemon in the middle of a request.
 *
 * How a backtrace is taken.  The write-protect fault is served by the
 * handler thread, not by the writer, so the handler cannot unwind the
 * writer's stack.  It sends the writer (the uffd message carries its thread
 * id, UFFD_FEATURE_THREAD_ID) a real-time signal before it resolves the
 * fault: the writer is asleep in the fault, interruptibly, so the signal
 * is delivered at the faulting instruction, and its handler unwinds its
 * own stack with libunwind into a slot reserved for it, fires the
 * "backtrace" probe and returns; the instruction is executed again and
 * completes.  A kernel-mode write (read(2) into a mapping, MADV_POPULATE_WRITE
 * for UPC_PIN_WRITE) takes the signal when the system call returns: its
 * backtrace shows the caller of that system call.
 *
 * libunwind is loaded with dlopen(RTLD_LOCAL) only when the feature is
 * asked for: linking it would put its _Unwind_* symbols in every program
 * that uses upcache, where they could take over C++ exception unwinding.
 */
#include "internal.h"
#include "usdt.h"
#include "stats-shm.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif

#if UPC_HAVE_USDT
/* The semaphores: the kernel counts the tracers attached to each probe here. */
#define UPC_PROBE_DEFINE(name) \
	__attribute__((section(".probes"), visibility("hidden"))) \
	volatile unsigned short UPC_PROBE_SEMA(name);
UPC_PROBE_LIST(UPC_PROBE_DEFINE)
#undef UPC_PROBE_DEFINE
#endif

/*
 * The probe sites, one per probe (usdt.h).  The arguments are widened to
 * 64 bits (signed where they can be negative), so that every tracer reads
 * them the same way.
 */
#define F(f) (uint64_t)(uintptr_t)(f), (uint64_t)(f)->ino

void __upc_trace_fault(struct upc_file *f, uint64_t pgoff, uintptr_t addr, unsigned int kind, uint32_t tid)
{
	UPC_PROBE(fault, F(f), pgoff, (uint64_t)addr, (uint64_t)kind, (uint64_t)tid);
}

void __upc_trace_fault_done(struct upc_file *f, uint64_t pgoff, unsigned int kind, long result)
{
	UPC_PROBE(fault_done, (uint64_t)(uintptr_t)f, pgoff, (uint64_t)kind, (int64_t)result);
}

void __upc_trace_fill_submit(struct upc_file *f, uint64_t off, uint64_t len)
{
	UPC_PROBE(fill_submit, F(f), off, len);
}

void __upc_trace_fill_done(struct upc_file *f, uint64_t off, uint64_t len, long res)
{
	UPC_PROBE(fill_done, F(f), off, len, (int64_t)res);
}

void __upc_trace_dirty(struct upc_file *f, uint64_t pgoff, uint32_t tid, uint64_t bt)
{
	UPC_PROBE(dirty, F(f), pgoff, (uint64_t)tid, bt);
}

void __upc_trace_protect(struct upc_file *f, uint64_t pgoff, uint64_t pages, unsigned int calls)
{
	UPC_PROBE(protect, F(f), pgoff, pages, (uint64_t)calls);
}

void __upc_trace_clean(struct upc_file *f, uint64_t pgoff, uint64_t pages, int how)
{
	UPC_PROBE(clean, F(f), pgoff, pages, (uint64_t)how);
}

void __upc_trace_wb_submit(struct upc_file *f, uint64_t off, uint64_t len)
{
	UPC_PROBE(wb_submit, F(f), off, len);
}

void __upc_trace_wb_done(struct upc_file *f, uint64_t off, uint64_t len, long res)
{
	UPC_PROBE(wb_done, F(f), off, len, (int64_t)res);
}

void __upc_trace_teardown(struct upc_file *f, uint64_t pgoff, uint64_t ranges, uint64_t pages)
{
	UPC_PROBE(teardown, F(f), pgoff, ranges, pages);
}

void __upc_trace_unmap(struct upc_file *f, uint64_t pgoff, uint64_t pages)
{
	UPC_PROBE(unmap, F(f), pgoff, pages);
}

void __upc_trace_evict(struct upc_file *f, uint64_t pgoff, uint64_t pages)
{
	UPC_PROBE(evict, F(f), pgoff, pages);
}

void __upc_trace_pin(struct upc_file *f, uint64_t pgoff, uint64_t pages, unsigned int flags)
{
	UPC_PROBE(pin, F(f), pgoff, pages, (uint64_t)flags);
}

void __upc_trace_unpin(struct upc_file *f, uint64_t pgoff, uint64_t pages)
{
	UPC_PROBE(unpin, F(f), pgoff, pages);
}

void __upc_trace_error(const char *what, int err, struct upc_file *f, uint64_t off)
{
	UPC_PROBE(error, what, (int64_t)err, F(f), off);
}

void __upc_trace_file_release(struct upc_file *f)
{
	UPC_PROBE(file_release, F(f));
}
#undef F

/* $UPC_DEBUG's words (upcache(7), UPC_DEBUG) */
static const struct {
	const char *name;
	unsigned int flag;
} debug_words[] = {
	{ "break-i1", UPC_DBG_BREAK_I1 },		{ "dirty-backtrace", UPC_DBG_DIRTY_BT },
	{ "stop-at-call", UPC_DBG_STOP_AT_CALL },	{ "visit-pause", UPC_DBG_VISIT_PAUSE },
	{ "drop-pause", UPC_DBG_DROP_PAUSE },		{ "grow-pause", UPC_DBG_GROW_PAUSE },
	{ "capture-pause", UPC_DBG_CAPTURE_PAUSE },	{ "capture-fail", UPC_DBG_CAPTURE_FAIL },
	{ "no-zaps", UPC_DBG_NO_ZAPS },		{ "wb-io-few", UPC_DBG_WB_IO_FEW },
	{ "slow-zaps", UPC_DBG_SLOW_ZAPS },		{ "probe-fail", UPC_DBG_PROBE_FAIL },
	{ "maps-few", UPC_DBG_MAPS_FEW },
};

unsigned int debug_from_env(void)
{
	const char *e = getenv("UPC_DEBUG");
	unsigned int flags = 0;
	char buf[128], *tok, *save;

	if (!e || !*e)
		return 0;
	snprintf(buf, sizeof(buf), "%s", e);
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(debug_words) && strcmp(tok, debug_words[i].name); i++)
			;
		if (i < ARRAY_SIZE(debug_words))
			flags |= debug_words[i].flag;
		else
			pr_warn("UPC_DEBUG: unknown option \"%s\" ignored\n", tok);
	}
	if (flags & UPC_DBG_BREAK_I1)
		pr_warn("UPC_DEBUG=break-i1: write-back clears dirty before it write-protects "
			"(I1 broken on purpose, for tests)\n");
	return flags;
}

/* ------------------------------------------------------------ dirty backtraces */

enum { BT_FREE, BT_CLAIMED, BT_WANTED, BT_FILLING, BT_READY };

struct bt_slot {
	_Atomic uint32_t state;
	uint32_t tid;
	uint64_t id;
	const struct upc_cache *cache;
	uint64_t dev, ino, pgoff;
	uint64_t when_ms;		/* CLOCK_REALTIME */
	uint32_t nframes;
	uint64_t ips[UPC_BT_FRAMES];
};

static struct bt_slot bt_slots[UPC_BT_SLOTS];
static _Atomic uint64_t bt_next_id = 1;
static int bt_signo;			/* 0: backtraces unavailable */

#ifdef HAVE_LIBUNWIND
#define XSTR(x) STR(x)
#define STR(x) #x

static struct {
	__typeof__(unw_init_local2) *init_local2;
	__typeof__(unw_step) *step;
	__typeof__(unw_get_reg) *get_reg;
	__typeof__(unw_get_accessors) *get_accessors;
	__typeof__(unw_set_caching_policy) *set_caching_policy;
	unw_addr_space_t *local_as;
} uw;

/* The writer's signal handler: unwind the interrupted context into its slot. */
static void bt_signal(int sig, siginfo_t *si, void *ucv)
{
	int saved_errno = errno;
	uint32_t me = (uint32_t)syscall(SYS_gettid);
	struct bt_slot *s = NULL;
	unw_cursor_t cur;
	uint32_t n = 0;

	(void)sig;
	(void)si;
	for (unsigned int i = 0; i < UPC_BT_SLOTS; i++) {
		struct bt_slot *t = &bt_slots[i];

		if (atomic_load_explicit(&t->state, memory_order_acquire) == BT_WANTED && t->tid == me &&
		    (!s || t->id > s->id))
			s = t;
	}
	if (!s) {
		errno = saved_errno;
		return;
	}
	uint32_t want = BT_WANTED;
	if (!atomic_compare_exchange_strong(&s->state, &want, BT_FILLING)) {
		errno = saved_errno;
		return;
	}
	if (uw.init_local2(&cur, (unw_context_t *)ucv, UNW_INIT_SIGNAL_FRAME) == 0) {
		do {
			unw_word_t ip = 0;

			if (uw.get_reg(&cur, UNW_REG_IP, &ip) < 0 || !ip)
				break;
			s->ips[n++] = ip;
		} while (n < UPC_BT_FRAMES && uw.step(&cur) > 0);
	}
	s->nframes = n;
	atomic_store_explicit(&s->state, BT_READY, memory_order_release);
	UPC_PROBE(backtrace, s->id, (uint64_t)me, (uint64_t)n, s->ips);
	errno = saved_errno;
}

static bool bt_load(void)
{
	void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);

	if (!h)
		h = dlopen("libunwind.so", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		pr_warn("UPC_DEBUG=dirty-backtrace: cannot load libunwind: %s\n", dlerror());
		return false;
	}
	uw.init_local2 = (__typeof__(uw.init_local2))dlsym(h, XSTR(unw_init_local2));
	uw.step = (__typeof__(uw.step))dlsym(h, XSTR(unw_step));
	uw.get_reg = (__typeof__(uw.get_reg))dlsym(h, XSTR(unw_get_reg));
	uw.get_accessors = (__typeof__(uw.get_accessors))dlsym(h, XSTR(unw_get_accessors));
	uw.set_caching_policy = (__typeof__(uw.set_caching_policy))dlsym(h, XSTR(unw_set_caching_policy));
	uw.local_as = (unw_addr_space_t *)dlsym(h, XSTR(unw_local_addr_space));
	if (!uw.init_local2 || !uw.step || !uw.get_reg || !uw.local_as) {
		pr_warn("UPC_DEBUG=dirty-backtrace: libunwind lacks unw_init_local2 (needs 1.3 or later)\n");
		return false;
	}
	/* Unwinding from a signal handler: no global cache, no lock to deadlock on. */
	if (uw.set_caching_policy)
		uw.set_caching_policy(*uw.local_as, UNW_CACHE_PER_THREAD);
	return true;
}
#endif /* HAVE_LIBUNWIND */

/* Called at cache creation with UPC_DBG_DIRTY_BT.  Returns false if backtraces cannot be taken. */
bool dirty_bt_init(void)
{
#ifdef HAVE_LIBUNWIND
	static pthread_mutex_t bt_init_lock = PTHREAD_MUTEX_INITIALIZER;
	struct sigaction sa, old;
	bool ok;

	pthread_mutex_lock(&bt_init_lock);
	if (bt_signo) {
		pthread_mutex_unlock(&bt_init_lock);
		return true;
	}
	ok = bt_load();
	if (ok && sigaction(UPC_BT_SIGNAL, NULL, &old) == 0 &&
	    ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)) {
		pr_warn("UPC_DEBUG=dirty-backtrace: signal %d already has a handler; no backtraces\n",
			UPC_BT_SIGNAL);
		ok = false;
	}
	if (ok) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = bt_signal;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigfillset(&sa.sa_mask);
		ok = sigaction(UPC_BT_SIGNAL, &sa, NULL) == 0;
	}
	if (ok)
		bt_signo = UPC_BT_SIGNAL;
	pthread_mutex_unlock(&bt_init_lock);
	return ok;
#else
	pr_warn("UPC_DEBUG=dirty-backtrace: upcache was built without libunwind\n");
	return false;
#endif
}

/*
 * The handler thread found the first write to clean page @pgoff of @f by
 * thread @tid of this process: reserve a slot for its backtrace and signal
 * it (before resolving the fault, so that the signal finds it in the
 * fault).  Returns the backtrace id, or 0.  Caller holds f->lock.
 */
uint64_t dirty_bt_request(struct upc_file *f, uint64_t pgoff, uint32_t tid)
{
	struct bt_slot *s;
	struct timespec ts;
	uint64_t id;

	if (!bt_signo || !tid)
		return 0;
	id = atomic_fetch_add(&bt_next_id, 1);
	s = &bt_slots[id % UPC_BT_SLOTS];
	atomic_store(&s->state, BT_CLAIMED);
	clock_gettime(CLOCK_REALTIME, &ts);
	s->id = id;
	s->tid = tid;
	s->cache = f->cache;
	s->dev = f->dev;
	s->ino = f->ino;
	s->pgoff = pgoff;
	s->when_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	s->nframes = 0;
	atomic_store_explicit(&s->state, BT_WANTED, memory_order_release);
	if (syscall(SYS_tgkill, getpid(), (pid_t)tid, bt_signo) < 0) {
		atomic_store(&s->state, BT_FREE);
		return 0;
	}
	return id;
}

/*
 * Copy the backtraces of @c taken so far, newest first, into @out (at most
 * @max).  Returns how many.  Frames are raw instruction pointers;
 * dirty_bt_symbolize() names them.
 */
unsigned int dirty_bt_collect(const struct upc_cache *c, struct upc_shm_bt *out, unsigned int max)
{
	struct upc_shm_bt tmp;
	unsigned int n = 0;
	uint64_t next = atomic_load(&bt_next_id);

	for (uint64_t id = next - 1; id > 0 && id + UPC_BT_SLOTS >= next && n < max; id--) {
		struct bt_slot *s = &bt_slots[id % UPC_BT_SLOTS];

		if (atomic_load_explicit(&s->state, memory_order_acquire) != BT_READY || s->id != id ||
		    s->cache != c)
			continue;
		memset(&tmp, 0, sizeof(tmp));
		tmp.id = id;
		tmp.tid = s->tid;
		tmp.dev = s->dev;
		tmp.ino = s->ino;
		tmp.pgoff = s->pgoff;
		tmp.when_ms = s->when_ms;
		tmp.nframes = min_t(uint32_t, s->nframes, UPC_BT_FRAMES);
		memcpy(tmp.ips, s->ips, sizeof(tmp.ips));
		/* Reused while we copied it: skip. */
		if (atomic_load_explicit(&s->state, memory_order_acquire) != BT_READY || s->id != id)
			continue;
		out[n++] = tmp;
	}
	return n;
}

/* Name the code at @ip ("function+0xoff (object)"); a return address is looked up at ip - 1. */
void dirty_bt_symbolize(uint64_t ip, bool ret_addr, char *buf, size_t len)
{
	const char *obj = "?";
	Dl_info di;
	uint64_t at = ret_addr ? ip - 1 : ip;

	if (dladdr((void *)at, &di) && di.dli_fname) {
		obj = strrchr(di.dli_fname, '/');
		obj = obj ? obj + 1 : di.dli_fname;
	}
#ifdef HAVE_LIBUNWIND
	if (uw.get_accessors && uw.local_as) {
		unw_accessors_t *a = uw.get_accessors(*uw.local_as);
		unw_word_t off = 0;
		char name[128];

		if (a && a->get_proc_name &&
		    a->get_proc_name(*uw.local_as, (unw_word_t)at, name, sizeof(name), &off, NULL) == 0) {
			snprintf(buf, len, "%s+0x%llx (%s)", name,
				 (unsigned long long)(off + (ret_addr ? 1 : 0)), obj);
			return;
		}
	}
#endif
	if (dladdr((void *)at, &di) && di.dli_sname)
		snprintf(buf, len, "%s+0x%llx (%s)", di.dli_sname,
			 (unsigned long long)(ip - (uint64_t)(uintptr_t)di.dli_saddr), obj);
	else if (dladdr((void *)at, &di))
		snprintf(buf, len, "%s+0x%llx", obj, (unsigned long long)(ip - (uint64_t)(uintptr_t)di.dli_fbase));
	else
		snprintf(buf, len, "0x%llx", (unsigned long long)ip);
}
