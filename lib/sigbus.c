/* SPDX-License-Identifier: MIT */
/*
 * sigbus.c - the kernel's SIGBUS for an access the cache refuses (past end
 * of file), delivered to the faulting thread with the kernel's siginfo:
 * si_code BUS_ADRERR and si_addr the faulting address, which signal
 * handlers (a JVM's, a database's that survives a truncated file) look at.
 *
 * The fault handler runs in another thread, and the kernel lets no thread
 * queue a signal with a positive si_code to another one
 * (do_rt_tgsigqueueinfo() refuses it with EPERM: only the kernel may
 * pretend to be the kernel); a thread may queue one to itself.  So the
 * handler relays, with a real-time signal of the library's own (SIGRTMAX,
 * or $UPC_RELAY_SIGNAL; 0 turns the relay off) and a slot per thread
 * (tid, address, state):
 *
 *  1. The first refusal of (thread, address) is a probe: the thread,
 *     interrupted in its fault, runs relay_action(), which only arms the
 *     slot and returns.  The fault was the thread's own access, or a
 *     kernel-mode one inside a system call (write(2) from the mapping),
 *     whose answer must be -EFAULT from the call and no signal.
 *  2. A user-mode access re-executes and faults again at once: the handler
 *     finds the slot armed and relays "deliver", and relay_action() queues
 *     SIGBUS, BUS_ADRERR, the address, to its own thread, unblocked and
 *     not ignored (as force_sig_fault() makes it).  It is delivered as the
 *     relay handler returns, in the faulting context, to whatever handles
 *     SIGBUS then: the application's handler, or the default action.
 *  3. A kernel-mode access does not return to user mode to take the
 *     probe: a signal that is not fatal does not end a kernel-mode fault
 *     (fault_signal_pending() looks at it for user mode only), so the
 *     kernel retries it, and each retry queues one more message of the
 *     same (thread, address) while the probe is pending.  The first such
 *     message marks the slot fenced and has the caller fence the file
 *     (cache.c, file_fence): the retry then fails in the kernel, and the
 *     call returns -EFAULT.  Every later message of that (thread,
 *     address) is one of those retries, read before the fence and served
 *     late (with two fault handlers, one handler's queue can hold them
 *     while the thread has long left the call): the fence answers it
 *     again, and relay_action() leaves a fenced slot alone.  Without the
 *     mark a late retry found the slot armed by the probe the thread took
 *     after the call, and relayed "deliver": a SIGBUS for a kernel-mode
 *     access, raised wherever the thread was by then (test_fileio's
 *     a_system_call_reading_a_mapping_past_eof_gets_efault_and_no_sigbus,
 *     about one run in 50 of the sanitizer build under load: four
 *     messages for one write(2), the last two served after the probe was
 *     taken).
 *
 * A shared cache's process (client.c) is refused by upcd instead, with a
 * poison marker in its own PTE (remote.c, remote_refuse): the kernel's
 * SIGBUS and EFAULT without a relay.  The relay signal serves it another
 * way: upcd queues it, SI_QUEUE with si_errno RELAY_LIFT_TAG, to ask the
 * process to zap the markers of a range the file has grown over
 * (relay_action, range_is_cache_memfd).
 *
 * SIGBUS itself stays the application's: nothing is installed for it, so
 * handlers set and reset around an access (sigsetjmp idioms) work as on
 * the kernel.  When the relay cannot be used (the signal is someone
 * else's, the thread blocks it, a forked child: the slots are in the
 * parent's memory), the caller falls back to the fence (cache.c,
 * file_fence), which has the kernel raise the signal itself.
 */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RELAY_SLOTS	64

enum { RELAY_PROBE, RELAY_ARMED, RELAY_DELIVER, RELAY_FENCED };

static struct {
	_Atomic pid_t tid;		/* 0: free */
	_Atomic uintptr_t addr;
	_Atomic int state;
} relay[RELAY_SLOTS];

static int relay_sig;		/* 0: no relay */

static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;

static pid_t sigbus_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* In the faulting thread: the kernel's SIGBUS for @addr, as force_sig_fault() sends it. */
static void raise_sigbus(void *addr, void *uctx)
{
	struct sigaction sa;
	siginfo_t k;

	if (sigaction(SIGBUS, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
		signal(SIGBUS, SIG_DFL);
	memset(&k, 0, sizeof(k));
	k.si_signo = SIGBUS;
	k.si_code = BUS_ADRERR;
	k.si_addr = addr;
	syscall(SYS_rt_tgsigqueueinfo, getpid(), sigbus_gettid(), SIGBUS, &k);
	/* The mask restored as this handler returns: SIGBUS not in it. */
	sigdelset(&((ucontext_t *)uctx)->uc_sigmask, SIGBUS);
}

/*
 * Is [@start, @end) covered by mappings of a cache's memfd ("/memfd:upcache:"
 * in /proc/self/maps, one or several adjacent ones)?  The lift request is asynchronous: the range may
 * have been unmapped and reused for other memory since it was sent, whose
 * contents MADV_DONTNEED would destroy.  Async-signal-safe: open, read
 * and close only, on the stack.
 */
static bool range_is_cache_memfd(uintptr_t start, uintptr_t end)
{
	static const char tag[] = "/memfd:upcache:";
	char buf[4096], line[512];
	size_t ll = 0;
	bool found = false;
	ssize_t n;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	while (!found && (n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n && !found; i++) {
			unsigned long lo = 0, hi = 0;
			const char *p = line;

			if (buf[i] != '\n') {
				if (ll < sizeof(line) - 1)
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = 0;
			ll = 0;
			for (; *p && *p != '-'; p++)
				lo = lo * 16 + (unsigned long)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
			for (p += !!*p; *p && *p != ' '; p++)
				hi = hi * 16 + (unsigned long)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
			/* the lines are sorted by address: cover from @start on, without a gap */
			if (start >= lo && start < hi && strstr(line, tag)) {
				start = hi;
				found = start >= end;
			}
		}
	}
	close(fd);
	return found;
}

static void relay_action(int sig, siginfo_t *si, void *uctx)
{
	int saved = errno;
	pid_t me;

	(void)sig;
	if (si->si_code != SI_QUEUE || si->si_pid != getpid())
		return;		/* not ours: a stray real-time signal has no default to run */
	if (si->si_errno == RELAY_LIFT_TAG) {
		/*
		 * upcd asks this process to zap the poison markers its
		 * refusals of accesses past end of file left in a mapping, the
		 * file having grown over them (remote.c, remote_lift): a range
		 * of si_uid pages at si_value.  The PTEs become empty, and the
		 * next access faults to the daemon again.
		 */
		uintptr_t a = (uintptr_t)si->si_value.sival_ptr;
		size_t len = (size_t)si->si_uid << UPC_PAGE_SHIFT;

		if (!(a & ~UPC_PAGE_MASK) && len && range_is_cache_memfd(a, a + len))
			madvise((void *)a, len, MADV_DONTNEED);
		errno = saved;
		return;
	}
	me = sigbus_gettid();
	for (unsigned int i = 0; i < RELAY_SLOTS; i++) {
		if (atomic_load(&relay[i].tid) != me ||
		    atomic_load(&relay[i].addr) != (uintptr_t)si->si_value.sival_ptr)
			continue;
		int state = RELAY_PROBE;

		/* A probe: armed, unless a retry of a kernel-mode access fenced it (3). */
		if (atomic_compare_exchange_strong(&relay[i].state, &state, RELAY_ARMED))
			break;
		if (state == RELAY_DELIVER) {
			atomic_store(&relay[i].tid, 0);
			raise_sigbus(si->si_value.sival_ptr, uctx);
		}
		break;
	}
	errno = saved;
}

static void sigbus_install_once(void)
{
	const char *env = getenv("UPC_RELAY_SIGNAL");
	struct sigaction sa, old;
	int sig = SIGRTMAX;

	if (env && *env) {
		char *end;
		long v = strtol(env, &end, 10);

		if (*end || v < 0 || (v && (v < SIGRTMIN || v > SIGRTMAX))) {
			pr_warn("UPC_RELAY_SIGNAL=%s is not 0 or a real-time signal: the relay is off\n", env);
			return;
		}
		sig = (int)v;
	}
	if (!sig)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = relay_action;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	/*
	 * SIGBUS blocked while the relay runs: the SIGBUS it queues stays
	 * pending until the relay's sigreturn restores the faulting context
	 * (whose mask raise_sigbus() cleared of SIGBUS), and is delivered there,
	 * to a handler that sees the faulting instruction in its ucontext.
	 */
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGBUS);
	if (sigaction(sig, NULL, &old) < 0 || old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) {
		pr_info("signal %d is the application's: refused accesses are fenced (sigbus.c)\n", sig);
		return;
	}
	if (sigaction(sig, &sa, NULL) == 0)
		relay_sig = sig;
}

/* The relay's signal, 0 if there is none (upcd asks through it: remote.c). */
int sigbus_relay_signal(void)
{
	return relay_sig;
}

/* Once per process, from upc_cache_create(). */
void sigbus_install(void)
{
	pthread_once(&sigbus_once, sigbus_install_once);
}

/*
 * The slot of thread @tid: its own if it has one (a new slot has addr 0, no
 * fault's), else a free one, else one of a thread that is gone.  Only the
 * fault handler takes slots; the thread frees its own when it is delivered.
 * -1 if none is left.
 */
static int relay_slot(pid_t tid)
{
	for (int i = 0; i < RELAY_SLOTS; i++)
		if (atomic_load(&relay[i].tid) == tid)
			return i;
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < RELAY_SLOTS; i++) {
			pid_t t = atomic_load(&relay[i].tid);

			if (t && !(pass && syscall(SYS_tgkill, getpid(), t, 0) < 0 && errno == ESRCH))
				continue;
			if (!atomic_compare_exchange_strong(&relay[i].tid, &t, tid))
				continue;
			atomic_store(&relay[i].addr, 0);
			return i;
		}
	return -1;
}

/*
 * Have thread @tid of this process take the kernel's SIGBUS for @addr, as
 * described at the top.  The caller wakes the fault afterwards.  Returns 0
 * (also for a thread that is gone: nobody waits), or -errno when it cannot
 * (the relay signal is the application's, the same access faulted again
 * before its probe was taken or was fenced, no slot is left): the caller
 * has the kernel raise it (the fence).
 */
int sigbus_relay(pid_t tid, uintptr_t addr)
{
	struct sigaction cur;
	siginfo_t si;
	int i, state, ret;

	if (!relay_sig || sigaction(relay_sig, NULL, &cur) < 0 || !(cur.sa_flags & SA_SIGINFO) ||
	    cur.sa_sigaction != relay_action)
		return -ENOENT;
	i = relay_slot(tid);
	if (i < 0)
		return -EAGAIN;
	if (atomic_load(&relay[i].addr) == addr) {
		/*
		 * The probe is not taken yet, and the same access faulted
		 * again: a system call's kernel-mode access that retries with
		 * the probe pending (3), or a thread that blocks the relay.
		 * The fence ends either (the kernel's own answer: -EFAULT, or
		 * SIGBUS).  It stands until the file grows through the cache or
		 * the reclaim thread lifts it (cache.c, files_unfence_stale).
		 * The slot is marked before the fence goes up: the fence is
		 * what lets the call return, so the thread cannot arm the slot
		 * first.  A slot fenced already: a retry served late, the same
		 * answer.
		 */
		state = RELAY_PROBE;
		if (atomic_compare_exchange_strong(&relay[i].state, &state, RELAY_FENCED) ||
		    state == RELAY_FENCED)
			return -EAGAIN;
		state = RELAY_DELIVER;	/* armed: the access came back, a user-mode one */
	} else {
		state = RELAY_PROBE;	/* a new address: whatever the slot held is over */
	}
	atomic_store(&relay[i].state, state);
	atomic_store(&relay[i].addr, addr);
	memset(&si, 0, sizeof(si));
	si.si_signo = relay_sig;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_ptr = (void *)addr;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, relay_sig, &si) == 0)
		return 0;
	ret = -errno;
	atomic_store(&relay[i].tid, 0);
	/* A message of a thread that is gone (it left the fault, then exited): nobody to answer. */
	return ret == -ESRCH ? 0 : ret;
}
