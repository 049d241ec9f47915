// SPDX-License-Identifier: MIT
/*
 * upc-trace - trace upcache's protocol steps live and check its ordering
 * rules on the trace (upc-trace(8)).
 *
 * The BPF side (upc-trace.bpf.c, loaded from a libbpf skeleton) attaches to
 * the library's USDT probes (lib/usdt.h) and to the kernel's tlb:tlb_flush
 * and io_uring tracepoints, and streams every event through a ring buffer.
 * This side prints the timeline, adds up the summary, and runs the checker:
 * a shadow of each page's state, rebuilt from the events, against which
 * each event is checked:
 *
 *   clean      the page was write-protected (a "protect" covering it)
 *              since it last became writable ("dirty", a write-protect
 *              fault, a write to a hole): I1;
 *   wb_submit  every page of the I/O was cleaned since its last write-back;
 *   evict      the page is not dirty, not pinned, not under write-back
 *              (I3, I6).
 *
 * Events from one process reach the ring buffer in the order of the
 * library's locks (each is reserved while the lock that orders it is held),
 * which is what makes checking order on them meaningful.  A page whose
 * history started before the tracer attached is only checked on what was
 * seen of it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/types.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "upc-trace.h"
#include "upc-trace-sym.h"
#include "upc-trace.skel.h"

#define EXIT_VIOLATION	3
#define EXIT_LOST	4
#define EXIT_SKIP	77

/* fault kinds, as lib/usdt.h */
#define FAULT_MISSING	0
#define FAULT_WP	1
#define FAULT_MINOR	2
#define FAULT_WRITE	0x100
/* clean's "how" */
#define CLEAN_WRITEBACK	0
#define CLEAN_LAZYFREE	1
#define CLEAN_PINNED	2
#define CLEAN_TRUNCATE	3
#define CLEAN_GAP	4

static const char *const ev_names[EV_MAX] = {
	[EV_FAULT] = "fault",		[EV_FAULT_DONE] = "fault_done",
	[EV_FILL_SUBMIT] = "fill_submit", [EV_FILL_DONE] = "fill_done",
	[EV_DIRTY] = "dirty",		[EV_PROTECT] = "protect",
	[EV_CLEAN] = "clean",		[EV_WB_SUBMIT] = "wb_submit",
	[EV_WB_DONE] = "wb_done",	[EV_TEARDOWN] = "teardown",
	[EV_UNMAP] = "unmap",		[EV_EVICT] = "evict",
	[EV_PIN] = "pin",		[EV_UNPIN] = "unpin",
	[EV_ERROR] = "error",		[EV_BACKTRACE] = "backtrace",
	[EV_FILE_RELEASE] = "file_release", [EV_TLB_FLUSH] = "tlb_flush",
	[EV_URING_SUBMIT] = "uring_submit", [EV_URING_COMPLETE] = "uring_complete",
};

static struct {
	pid_t pid;
	const char *lib;
	double duration;
	bool check, summary, quiet, verbose, probe, no_kernel;
	char **cmd;
} opt;

static volatile sig_atomic_t stop;
static uint64_t t0_ns;
static uint64_t nevents, counts[EV_MAX], fault_kinds[3];
static char last_libbpf_error[512];

/* ------------------------------------------------------------ libbpf output */

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	va_list aq;

	va_copy(aq, ap);
	if (level <= LIBBPF_WARN)
		vsnprintf(last_libbpf_error, sizeof(last_libbpf_error), fmt, aq);
	va_end(aq);
	if (!opt.verbose && level > LIBBPF_WARN)
		return 0;
	if (!opt.verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* ------------------------------------------------------------ small hash tables */

struct hnode {
	struct hnode *next;
	uint64_t k1, k2, k3;
};

struct htab {
	struct hnode **b;
	size_t nb, n;
};

static uint64_t hmix(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t h = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL) * 0xC2B2AE3D27D4EB4FULL ^ c * 0x165667B19E3779F9ULL;

	return h ^ (h >> 29);
}

static struct hnode *hget(struct htab *t, uint64_t k1, uint64_t k2, uint64_t k3, size_t size)
{
	struct hnode *n;
	size_t i;

	if (t->nb) {
		i = hmix(k1, k2, k3) & (t->nb - 1);
		for (n = t->b[i]; n; n = n->next)
			if (n->k1 == k1 && n->k2 == k2 && n->k3 == k3)
				return n;
	}
	if (!size)
		return NULL;
	if (t->n >= t->nb) {
		size_t nb = t->nb ? t->nb * 2 : 1024;
		struct hnode **b = calloc(nb, sizeof(*b));

		if (!b)
			return NULL;
		for (size_t j = 0; j < t->nb; j++)
			while (t->b[j]) {
				struct hnode *x = t->b[j];
				size_t k = hmix(x->k1, x->k2, x->k3) & (nb - 1);

				t->b[j] = x->next;
				x->next = b[k];
				b[k] = x;
			}
		free(t->b);
		t->b = b;
		t->nb = nb;
	}
	n = calloc(1, size);
	if (!n)
		return NULL;
	n->k1 = k1;
	n->k2 = k2;
	n->k3 = k3;
	i = hmix(k1, k2, k3) & (t->nb - 1);
	n->next = t->b[i];
	t->b[i] = n;
	t->n++;
	return n;
}

static void hdel(struct htab *t, struct hnode *x)
{
	size_t i = hmix(x->k1, x->k2, x->k3) & (t->nb - 1);

	for (struct hnode **pp = &t->b[i]; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			t->n--;
			free(x);
			return;
		}
}

/* ------------------------------------------------------------ printing */

static double rel_s(uint64_t ts)
{
	return ts >= t0_ns ? (double)(ts - t0_ns) / 1e9 : 0;
}

static const char *fault_kind(uint64_t k)
{
	switch (k & 0xff) {
	case FAULT_MISSING: return (k & FAULT_WRITE) ? "missing,write" : "missing";
	case FAULT_WP: return "wp";
	case FAULT_MINOR: return "minor";
	default: return "?";
	}
}

static const char *uring_op(uint64_t op)
{
	static const char *const names[] = { [0] = "NOP", [1] = "READV", [2] = "WRITEV", [3] = "FSYNC",
					     [22] = "READ", [23] = "WRITE" };

	return op < sizeof(names) / sizeof(names[0]) && names[op] ? names[op] : "op";
}

static const char *tlb_reason(uint64_t r)
{
	static const char *const names[] = { "flush_on_task_switch", "remote_shootdown", "local_shootdown",
					     "local_mm_shootdown", "remote_send_ipi", "remote_wrong_cpu" };

	return r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

/* The details of an event, without its time and task. */
static void describe(const struct upc_ev *e, const char *str, char *buf, size_t len)
{
	const uint64_t *a = e->args;

	switch (e->type) {
	case EV_FAULT:
		snprintf(buf, len, "%s ino %" PRIu64 " page %" PRIu64 " addr 0x%" PRIx64 " thread %" PRIu64,
			 fault_kind(a[4]), a[1], a[2], a[3], a[5]);
		break;
	case EV_FAULT_DONE:
		snprintf(buf, len, "%s page %" PRIu64 " result %" PRId64, fault_kind(a[2]), a[1], (int64_t)a[3]);
		break;
	case EV_FILL_SUBMIT:
	case EV_WB_SUBMIT:
		snprintf(buf, len, "ino %" PRIu64 " pages %" PRIu64 "+%" PRIu64 " (%" PRIu64 " bytes at %" PRIu64 ")",
			 a[1], a[2] >> 12, (a[3] + 4095) >> 12, a[3], a[2]);
		break;
	case EV_FILL_DONE:
	case EV_WB_DONE:
		snprintf(buf, len, "ino %" PRIu64 " pages %" PRIu64 "+%" PRIu64 " result %" PRId64, a[1], a[2] >> 12,
			 (a[3] + 4095) >> 12, (int64_t)a[4]);
		break;
	case EV_DIRTY:
		if (a[4])
			snprintf(buf, len, "ino %" PRIu64 " page %" PRIu64 " by thread %" PRIu64 " (backtrace #%" PRIu64 ")",
				 a[1], a[2], a[3], a[4]);
		else if (a[3])
			snprintf(buf, len, "ino %" PRIu64 " page %" PRIu64 " by thread %" PRIu64, a[1], a[2], a[3]);
		else
			snprintf(buf, len, "ino %" PRIu64 " page %" PRIu64, a[1], a[2]);
		break;
	case EV_PROTECT:
		snprintf(buf, len, "ino %" PRIu64 " pages %" PRIu64 "+%" PRIu64 " (%" PRIu64 " ioctls)", a[1], a[2],
			 a[3], a[4]);
		break;
	case EV_CLEAN:
		snprintf(buf, len, "ino %" PRIu64 " pages %" PRIu64 "+%" PRIu64 "%s", a[1], a[2], a[3],
			 a[4] == CLEAN_LAZYFREE ? " (lazy-free: dirty data dropped)" :
			 a[4] == CLEAN_PINNED ? " (pinned for write: written, stays dirty)" :
			 a[4] == CLEAN_TRUNCATE ? " (truncated: dirty data dropped with the page)" :
			 a[4] == CLEAN_GAP ? " (not cleaned: clean, written in a gap between dirty pages)" : "");
		break;
	case EV_TEARDOWN:
		snprintf(buf, len, "ino %" PRIu64 " from page %" PRIu64 ": %" PRIu64 " ranges, %" PRIu64 " pages",
			 a[1], a[2], a[3], a[4]);
		break;
	case EV_UNMAP:
	case EV_EVICT:
	case EV_UNPIN:
		snprintf(buf, len, "ino %" PRIu64 " pages %" PRIu64 "+%" PRIu64, a[1], a[2], a[3]);
		break;
	case EV_PIN:
		snprintf(buf, len, "ino %" PRIu64 " pages %" PRIu64 "+%" PRIu64 "%s%s", a[1], a[2], a[3],
			 (a[4] & 1) ? " nowriteback" : "", (a[4] & 2) ? " write" : "");
		break;
	case EV_ERROR:
		snprintf(buf, len, "%s: %s (ino %" PRIu64 " offset %" PRIu64 ")", str ? str : "?",
			 strerror((int)-(int64_t)a[1]), a[3], a[4]);
		break;
	case EV_BACKTRACE:
		snprintf(buf, len, "#%" PRIu64 " thread %" PRIu64 ", %" PRIu64 " frames:", a[0], a[1], a[2]);
		break;
	case EV_FILE_RELEASE:
		snprintf(buf, len, "ino %" PRIu64, a[1]);
		break;
	case EV_TLB_FLUSH:
		if ((int64_t)a[1] < 0)
			snprintf(buf, len, "%s, all pages", tlb_reason(a[0]));
		else
			snprintf(buf, len, "%s, %" PRId64 " pages", tlb_reason(a[0]), (int64_t)a[1]);
		break;
	case EV_URING_SUBMIT:
		snprintf(buf, len, "req 0x%" PRIx64 " %s user_data %" PRIu64, a[0], uring_op(a[1]), a[2]);
		break;
	case EV_URING_COMPLETE:
		snprintf(buf, len, "req 0x%" PRIx64 " result %" PRId64, a[0], (int64_t)a[1]);
		break;
	default:
		snprintf(buf, len, "?");
	}
}

static void print_event(FILE *o, const char *indent, const struct upc_ev *e, const char *str)
{
	char d[256];

	describe(e, str, d, sizeof(d));
	fprintf(o, "%s%12.6f %7u %7u %-15s %-14s %s\n", indent, rel_s(e->ts), e->pid, e->tid, e->comm,
		ev_names[e->type < EV_MAX ? e->type : 0] ? ev_names[e->type] : "?", d);
}

/* ------------------------------------------------------------ the checker */

#define PHIST 10

struct hist_ent {
	struct upc_ev ev;
};

struct page {
	struct hnode h;		/* k1: pid, k2: file, k3: page */
	uint64_t ino;
	bool known_dirty, dirty, known_wb, wb, known_pins, need_wp;
	uint32_t pins;
	unsigned int nh;	/* events recorded (the last PHIST kept) */
	struct upc_ev hist[PHIST];
};

struct file {
	struct hnode h;		/* k1: pid, k2: file */
	struct htab pages;
};

static struct htab files;
static uint64_t violations, violations_by_rule[4];
static const char *const rule_names[] = {
	"I1: page cleaned before a write-protect covering it completed",
	"page submitted for write-back before it was cleaned",
	"I3/I6: page evicted while dirty, pinned or under write-back",
	"",
};

static struct file *file_of(const struct upc_ev *e, bool create)
{
	return (struct file *)hget(&files, e->pid, e->args[0], 0, create ? sizeof(struct file) : 0);
}

static struct page *page_of(struct file *f, const struct upc_ev *e, uint64_t pg, bool create)
{
	struct page *p = (struct page *)hget(&f->pages, e->pid, e->args[0], pg, create ? sizeof(struct page) : 0);

	if (p && create && !p->ino)
		p->ino = e->args[1];
	return p;
}

static void remember(struct page *p, const struct upc_ev *e)
{
	p->hist[p->nh++ % PHIST] = *e;
}

static void violation(int rule, struct page *p, const struct upc_ev *e, const char *why)
{
	violations++;
	violations_by_rule[rule]++;
	if (violations_by_rule[rule] > 3) {
		if (violations_by_rule[rule] == 4)
			fprintf(stderr, "upc-trace: (further violations of this rule are counted, not shown)\n");
		return;
	}
	fprintf(stderr, "\nupc-trace: VIOLATION %s\n  pid %u, file ino %" PRIu64 ", page %" PRIu64 ": %s\n",
		rule_names[rule], e->pid, p->ino, p->h.k3, why);
	fprintf(stderr, "  the page's recent events, oldest first:\n");
	for (unsigned int i = p->nh > PHIST ? p->nh - PHIST : 0; i < p->nh; i++)
		print_event(stderr, "    ", &p->hist[i % PHIST], NULL);
}

/* Fresh in the cache: clean, not under write-back, not pinned, protected everywhere. */
static void page_reset(struct page *p)
{
	p->known_dirty = p->known_wb = p->known_pins = true;
	p->dirty = p->wb = p->need_wp = false;
	p->pins = 0;
}

/*
 * Apply @fn to the pages [first, first + n) of the event's file: each
 * existing one, or (@create) each one.  Large ranges over a file with few
 * known pages visit the known pages instead of the range.
 */
static void for_range(const struct upc_ev *e, uint64_t first, uint64_t n, bool create,
		      void (*fn)(struct page *p, const struct upc_ev *e))
{
	struct file *f = file_of(e, create);

	if (!f || !n)
		return;
	if (!create && n > f->pages.n) {
		for (size_t b = 0; b < f->pages.nb; b++)
			for (struct hnode *x = f->pages.b[b], *next; x; x = next) {
				next = x->next;
				if (x->k3 >= first && x->k3 - first < n)
					fn((struct page *)x, e);
			}
		return;
	}
	for (uint64_t pg = first; pg < first + n; pg++) {
		struct page *p = page_of(f, e, pg, create);

		if (p)
			fn(p, e);
	}
}

static void on_writable(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	p->need_wp = true;
}

static void on_dirty(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	p->dirty = p->known_dirty = true;
	p->need_wp = true;
}

static void on_protect(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	p->need_wp = false;
}

static void on_clean(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	if (e->args[4] == CLEAN_PINNED) {
		/* Pinned for a device write: written, but never marked clean (so I1 does not apply). */
		p->wb = p->known_wb = true;
		return;
	}
	if (e->args[4] == CLEAN_GAP) {
		/* A clean page written with its dirty neighbours: under write-back, stays clean. */
		if (p->known_dirty && p->dirty)
			violation(1, p, e, "added to a write-back I/O as a clean gap page, but it is dirty "
					   "(its data would be written without a clean)");
		p->wb = p->known_wb = true;
		return;
	}
	if (e->args[4] == CLEAN_TRUNCATE) {
		/* Past a new end of file or in a punched hole: the punch that follows unmaps it everywhere. */
		p->dirty = false;
		p->known_dirty = true;
		return;
	}
	if (p->need_wp)
		violation(0, p, e, "it became writable (or dirty) after its last write-protect, and no "
				   "write-protect covering it has completed since");
	p->dirty = false;
	p->known_dirty = true;
	if (e->args[4] == CLEAN_WRITEBACK)	/* PG_WRITEBACK is set too */
		p->wb = p->known_wb = true;
}

static void on_wb_submit(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	if (p->known_wb && !p->wb)
		violation(1, p, e, "submitted for write-back, but no clean of it since its last write-back");
}

static void on_wb_done(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	p->wb = false;
	p->known_wb = true;
}

static void on_evict(struct page *p, const struct upc_ev *e)
{
	char why[128];

	remember(p, e);
	why[0] = '\0';
	if (p->known_dirty && p->dirty)
		strcat(why, " dirty");
	if (p->known_pins && p->pins)
		strcat(why, " pinned");
	if (p->known_wb && p->wb)
		strcat(why, " under-write-back");
	if (why[0]) {
		char msg[160];

		snprintf(msg, sizeof(msg), "evicted while%s", why);
		violation(2, p, e, msg);
	}
	page_reset(p);
}

static void on_fill(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	page_reset(p);
}

static void on_pin(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	if (p->known_pins)
		p->pins++;
}

static void on_unpin(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
	if (p->known_pins && p->pins)
		p->pins--;
}

static void on_touch(struct page *p, const struct upc_ev *e)
{
	remember(p, e);
}

static void file_forget(const struct upc_ev *e)
{
	struct file *f = file_of(e, false);

	if (!f)
		return;
	for (size_t b = 0; b < f->pages.nb; b++)
		while (f->pages.b[b])
			hdel(&f->pages, f->pages.b[b]);
	free(f->pages.b);
	hdel(&files, &f->h);
}

static void check_event(const struct upc_ev *e)
{
	const uint64_t *a = e->args;

	switch (e->type) {
	case EV_FAULT:
		/* A write fault makes the page writable in that mapping. */
		if ((a[4] & 0xff) == FAULT_WP || (a[4] & FAULT_WRITE))
			for_range(e, a[2], 1, true, on_writable);
		else
			for_range(e, a[2], 1, false, on_touch);
		break;
	case EV_FILL_DONE:
		if ((int64_t)a[4] > 0)
			for_range(e, a[2] >> 12, ((uint64_t)a[4] + 4095) >> 12, true, on_fill);
		break;
	case EV_DIRTY:
		for_range(e, a[2], 1, true, on_dirty);
		break;
	case EV_PROTECT:
		for_range(e, a[2], a[3], false, on_protect);
		break;
	case EV_CLEAN:
		for_range(e, a[2], a[3], true, on_clean);
		break;
	case EV_WB_SUBMIT:
		for_range(e, a[2] >> 12, (a[3] + 4095) >> 12, true, on_wb_submit);
		break;
	case EV_WB_DONE:
		for_range(e, a[2] >> 12, (a[3] + 4095) >> 12, false, on_wb_done);
		break;
	case EV_EVICT:
		for_range(e, a[2], a[3], true, on_evict);
		break;
	case EV_PIN:
		for_range(e, a[2], a[3], false, on_pin);
		break;
	case EV_UNPIN:
		for_range(e, a[2], a[3], false, on_unpin);
		break;
	case EV_TEARDOWN:
	case EV_UNMAP:
		for_range(e, a[2], e->type == EV_UNMAP ? a[3] : 1, false, on_touch);
		break;
	case EV_FILE_RELEASE:
		file_forget(e);
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------ summary */

struct lat {
	const char *name;
	uint64_t n, sum_ns, max_ns;
	uint64_t slots[40];	/* log2 of microseconds */
};

enum { L_FAULT_MISSING, L_FAULT_WP, L_FAULT_MINOR, L_FILL, L_WB, L_URING, L_MAX };
static struct lat lats[L_MAX] = {
	{ .name = "fault (missing)" }, { .name = "fault (write-protect)" }, { .name = "fault (minor)" },
	{ .name = "fill (store read)" }, { .name = "write-back I/O" }, { .name = "io_uring request" },
};

struct start {
	struct hnode h;
	uint64_t ts;
};
static struct htab starts;

static void lat_begin(int kind, uint64_t k2, uint64_t k3, uint64_t ts)
{
	struct start *s = (struct start *)hget(&starts, (uint64_t)kind, k2, k3, sizeof(*s));

	if (s)
		s->ts = ts;
}

static void lat_end(int kind, int as, uint64_t k2, uint64_t k3, uint64_t ts)
{
	struct start *s = (struct start *)hget(&starts, (uint64_t)kind, k2, k3, 0);
	struct lat *l;
	uint64_t d, us;
	int slot = 0;

	if (!s)
		return;
	d = ts > s->ts ? ts - s->ts : 0;
	hdel(&starts, &s->h);
	l = &lats[as];
	l->n++;
	l->sum_ns += d;
	if (d > l->max_ns)
		l->max_ns = d;
	for (us = d / 1000; us; us >>= 1)
		slot++;
	l->slots[slot < 40 ? slot : 39]++;
}

static void summary_event(const struct upc_ev *e)
{
	const uint64_t *a = e->args;

	switch (e->type) {
	case EV_FAULT:
		if ((a[4] & 0xff) < 3)
			fault_kinds[a[4] & 0xff]++;
		lat_begin(L_FAULT_MISSING, e->tid, 0, e->ts);
		break;
	case EV_FAULT_DONE:
		lat_end(L_FAULT_MISSING, (a[2] & 0xff) == FAULT_WP ? L_FAULT_WP :
					 (a[2] & 0xff) == FAULT_MINOR ? L_FAULT_MINOR : L_FAULT_MISSING,
			e->tid, 0, e->ts);
		break;
	case EV_FILL_SUBMIT:
		lat_begin(L_FILL, e->tid, a[2], e->ts);
		break;
	case EV_FILL_DONE:
		lat_end(L_FILL, L_FILL, e->tid, a[2], e->ts);
		break;
	case EV_WB_SUBMIT:
		lat_begin(L_WB, ((uint64_t)e->pid << 32) ^ a[0], a[2], e->ts);
		break;
	case EV_WB_DONE:
		lat_end(L_WB, L_WB, ((uint64_t)e->pid << 32) ^ a[0], a[2], e->ts);
		break;
	case EV_URING_SUBMIT:
		lat_begin(L_URING, a[0], 0, e->ts);
		break;
	case EV_URING_COMPLETE:
		lat_end(L_URING, L_URING, a[0], 0, e->ts);
		break;
	default:
		break;
	}
}

static void print_hist(FILE *o, const struct lat *l)
{
	uint64_t maxc = 0;
	int first = -1, last = 0;

	for (int i = 0; i < 40; i++)
		if (l->slots[i]) {
			if (first < 0)
				first = i;
			last = i;
			if (l->slots[i] > maxc)
				maxc = l->slots[i];
		}
	fprintf(o, "\n%s: %" PRIu64 " measured, mean %.1f us, max %.1f us\n", l->name, l->n,
		(double)l->sum_ns / 1000.0 / (double)l->n, (double)l->max_ns / 1000.0);
	fprintf(o, "%20s : %-10s %s\n", "usecs", "count", "distribution");
	for (int i = first < 0 ? 0 : first; i <= last; i++) {
		uint64_t lo = i ? 1ULL << (i - 1) : 0, hi = (1ULL << i) - 1;
		int bar = maxc ? (int)(l->slots[i] * 40 / maxc) : 0;
		char range[48];

		snprintf(range, sizeof(range), "%" PRIu64 " -> %" PRIu64, lo, hi);
		fprintf(o, "%20s : %-10" PRIu64 " |%-40.*s|\n", range, l->slots[i], bar,
			"****************************************");
	}
}

static void print_summary(FILE *o, double secs, uint64_t nlost)
{
	fprintf(o, "\nupc-trace summary: %" PRIu64 " events in %.1f s (%" PRIu64 " lost)\n", nevents, secs, nlost);
	fprintf(o, "%-16s %10s\n", "event", "count");
	for (int t = 1; t < EV_MAX; t++) {
		if (!counts[t])
			continue;
		fprintf(o, "%-16s %10" PRIu64, ev_names[t], counts[t]);
		if (t == EV_FAULT)
			fprintf(o, "   (missing %" PRIu64 ", wp %" PRIu64 ", minor %" PRIu64 ")", fault_kinds[0],
				fault_kinds[1], fault_kinds[2]);
		fputc('\n', o);
	}
	for (int i = 0; i < L_MAX; i++)
		if (lats[i].n)
			print_hist(o, &lats[i]);
}

/* ------------------------------------------------------------ the event stream */

static int on_event(void *ctx, void *data, size_t size)
{
	const struct upc_ev *e = data;
	const struct upc_ev_ext *x = data;
	const char *str = NULL;

	(void)ctx;
	if (size < sizeof(*e) || e->type == 0 || e->type >= EV_MAX)
		return 0;
	if (!t0_ns)
		t0_ns = e->ts;
	nevents++;
	counts[e->type]++;
	if (e->type == EV_ERROR && size >= sizeof(*x))
		str = x->str;
	/* A backtrace follows: read the process's maps while it is certainly alive (in the fault). */
	if (e->type == EV_DIRTY && e->args[4] && !opt.quiet)
		sym_load(e->pid);
	if (!opt.quiet) {
		print_event(stdout, "", e, str);
		if (e->type == EV_BACKTRACE && size >= sizeof(*x)) {
			uint64_t n = e->args[2] < UPC_EV_FRAMES ? e->args[2] : UPC_EV_FRAMES;

			for (uint64_t i = 0; i < n; i++) {
				char name[256];

				sym_name((int)e->pid, x->ips[i], i > 0, name, sizeof(name));
				printf("%*s#%-2" PRIu64 " %s\n", 24, "", i, name);
			}
		}
	}
	if (opt.summary)
		summary_event(e);
	if (opt.check)
		check_event(e);
	return 0;
}

/* ------------------------------------------------------------ setup */

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static bool file_exists(const char *p)
{
	struct stat st;

	return p && stat(p, &st) == 0;
}

/*
 * The library of process @pid, from its maps; else its executable, which
 * holds the probes when it links the engine statically: upcd does
 * (Makefile.am, daemon_upcd_LDADD), and so does a program linked with
 * libupcache.a.  attach_usdt() finds no probe in any other.
 */
static char *lib_of_pid(pid_t pid)
{
	char path[64], line[4096];
	char *found = NULL;
	ssize_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return NULL;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, '/');

		line[strcspn(line, "\n")] = '\0';
		if (p && strstr(p, "/libupcache.so"))
			found = strdup(p);
	}
	fclose(f);
	if (found)
		return found;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, line, sizeof(line) - 1);
	if (n <= 0)
		return NULL;
	line[n] = '\0';
	return strdup(line);
}

static const char *default_lib(void)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	/* Run from the build tree: trace the library built next to it. */
	if (n > 0) {
		self[n] = '\0';
		if (!strncmp(self, UPC_BUILDDIR "/", strlen(UPC_BUILDDIR) + 1) && file_exists(UPC_BUILD_LIB))
			return UPC_BUILD_LIB;
	}
	if (file_exists(UPC_INSTALL_LIB))
		return UPC_INSTALL_LIB;
	return UPC_BUILD_LIB;
}

static bool kernel_has_tp(const struct btf *vmlinux, const char *tp)
{
	char name[128];

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	return vmlinux && btf__find_by_name_kind(vmlinux, name, BTF_KIND_TYPEDEF) > 0;
}

static const char *bpf_unavailable_reason(int err)
{
	static char buf[600];

	if (!file_exists("/sys/kernel/btf/vmlinux"))
		return "the kernel has no BTF (/sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF)";
	if (err == -EPERM || err == -EACCES)
		return geteuid() ? "not root: loading BPF needs CAP_BPF and CAP_PERFMON (run as root)"
				 : "bpf() is not permitted here (EPERM: a container, or kernel.unprivileged_bpf_disabled with no CAP_BPF)";
	snprintf(buf, sizeof(buf), "cannot load the BPF programs: %s%s%s", strerror(-err),
		 last_libbpf_error[0] ? "; libbpf: " : "", last_libbpf_error);
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

static void usage(FILE *o)
{
	fprintf(o,
		"usage: upc-trace [options] [-- COMMAND [ARG...]]\n"
		"  -p, --pid PID         trace one process (default: every process using the library)\n"
		"  -l, --lib PATH        the libupcache (or a program linking it statically) to attach to\n"
		"  -d, --duration SECS   stop after SECS seconds\n"
		"  -c, --check           check the ordering rules on the live trace; exit 3 on a violation\n"
		"  -s, --summary         print counts and latency histograms per event kind at the end\n"
		"  -q, --quiet           no timeline\n"
		"  -K, --no-kernel       leave out the kernel's tlb and io_uring tracepoints\n"
		"  -v, --verbose         libbpf's messages\n"
		"      --probe           only check that tracing works here (exit 0, or 77 and why)\n"
		"  -- COMMAND            run COMMAND, trace it and its children, stop when it exits\n");
}

static int parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, 'p' },   { "lib", required_argument, NULL, 'l' },
		{ "duration", required_argument, NULL, 'd' }, { "check", no_argument, NULL, 'c' },
		{ "summary", no_argument, NULL, 's' },     { "quiet", no_argument, NULL, 'q' },
		{ "no-kernel", no_argument, NULL, 'K' },   { "verbose", no_argument, NULL, 'v' },
		{ "probe", no_argument, NULL, 'P' },       { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "+p:l:d:csqKvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': opt.pid = (pid_t)atoi(optarg); break;
		case 'l': opt.lib = optarg; break;
		case 'd': opt.duration = atof(optarg); break;
		case 'c': opt.check = true; break;
		case 's': opt.summary = true; break;
		case 'q': opt.quiet = true; break;
		case 'K': opt.no_kernel = true; break;
		case 'v': opt.verbose = true; break;
		case 'P': opt.probe = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc)
		opt.cmd = &argv[optind];
	if (opt.cmd && opt.pid) {
		fprintf(stderr, "upc-trace: -p and a COMMAND exclude each other\n");
		return -1;
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static const char *const optional_tps[][2] = {
		{ "on_tlb_flush", "tlb_flush" },
		{ "on_uring_submit", "io_uring_submit_req" },
		{ "on_uring_complete", "io_uring_complete" },
	};
	struct upc_trace *skel = NULL;
	struct ring_buffer *rb = NULL;
	struct btf *vmlinux = NULL;
	struct bpf_program *prog;
	struct bpf_link *links[64];
	size_t nlinks = 0;
	int ret = 1, err, sync_pipe[2] = { -1, -1 }, attached = 0, status = 0;
	char *lib = NULL;
	pid_t child = 0;
	bool child_done = false;
	double start, end;
	uint64_t nlost = 0;
	__u32 zero = 0;

	if (parse_args(argc, argv) < 0)
		return 2;
	libbpf_set_print(libbpf_print);
	setvbuf(stdout, NULL, _IOLBF, 0);

	skel = upc_trace__open();
	if (!skel) {
		fprintf(stderr, "upc-trace: %s\n", bpf_unavailable_reason(-errno));
		return opt.probe ? EXIT_SKIP : 1;
	}
	skel->rodata->filter = opt.cmd || opt.pid ? 1 : 0;
	/* Leave out the kernel tracepoints this kernel does not have (or we were told to). */
	vmlinux = btf__load_vmlinux_btf();
	for (size_t i = 0; i < sizeof(optional_tps) / sizeof(optional_tps[0]); i++) {
		prog = bpf_object__find_program_by_name(skel->obj, optional_tps[i][0]);
		if (prog && (opt.no_kernel || !kernel_has_tp(vmlinux, optional_tps[i][1]))) {
			bpf_program__set_autoload(prog, false);
			if (!opt.no_kernel && !opt.probe)
				fprintf(stderr, "upc-trace: warning: no tracepoint %s in this kernel\n",
					optional_tps[i][1]);
		}
	}
	btf__free(vmlinux);
	err = upc_trace__load(skel);
	if (err && !opt.no_kernel) {
		/* An optional tracepoint's program may be what failed: retry without them. */
		upc_trace__destroy(skel);
		skel = upc_trace__open();
		if (skel) {
			skel->rodata->filter = opt.cmd || opt.pid ? 1 : 0;
			for (size_t i = 0; i < sizeof(optional_tps) / sizeof(optional_tps[0]); i++)
				bpf_program__set_autoload(
					bpf_object__find_program_by_name(skel->obj, optional_tps[i][0]), false);
			err = upc_trace__load(skel);
			if (!err && !opt.probe)
				fprintf(stderr, "upc-trace: warning: kernel tracepoints left out (they did not load)\n");
		} else {
			err = -errno;
		}
	}
	if (err) {
		fprintf(stderr, "upc-trace: %s\n", bpf_unavailable_reason(err));
		ret = opt.probe ? EXIT_SKIP : 1;
		goto out;
	}
	if (opt.probe) {
		printf("upc-trace: BPF tracing works here\n");
		ret = 0;
		goto out;
	}

	if (opt.lib)
		lib = strdup(opt.lib);
	else if (opt.pid && !(lib = lib_of_pid(opt.pid))) {
		fprintf(stderr, "upc-trace: process %d: neither its maps nor its executable can be read: %s\n",
			(int)opt.pid, strerror(errno));
		goto out;
	}
	if (!lib)
		lib = strdup(default_lib());
	if (!file_exists(lib)) {
		fprintf(stderr, "upc-trace: %s: %s (give the library with -l)\n", lib, strerror(errno));
		goto out;
	}

	if (opt.pid) {
		__u32 key = (__u32)opt.pid;
		__u8 one = 1;

		bpf_map__update_elem(skel->maps.tgids, &key, sizeof(key), &one, sizeof(one), BPF_ANY);
	}
	/* The USDT probes: program on_NAME attaches to upcache:NAME. */
	bpf_object__for_each_program(prog, skel->obj) {
		const char *name = bpf_program__name(prog);
		struct bpf_link *link;

		if (strncmp(name, "on_", 3) || bpf_program__type(prog) != BPF_PROG_TYPE_KPROBE)
			continue;
		link = bpf_program__attach_usdt(prog, opt.pid ? opt.pid : -1, lib, "upcache", name + 3, NULL);
		if (!link) {
			fprintf(stderr, "upc-trace: warning: probe upcache:%s not attached in %s: %s\n", name + 3,
				lib, strerror(errno));
			continue;
		}
		if (nlinks < sizeof(links) / sizeof(links[0]))
			links[nlinks++] = link;
		attached++;
	}
	if (!attached) {
		fprintf(stderr, "upc-trace: no USDT probe of provider \"upcache\" in %s (built without "
				"sys/sdt.h?)\n", lib);
		goto out;
	}
	/* The kernel tracepoints and the fork/exit followers. */
	bpf_object__for_each_program(prog, skel->obj) {
		if (bpf_program__type(prog) != BPF_PROG_TYPE_TRACING || !bpf_program__autoload(prog))
			continue;
		struct bpf_link *link = bpf_program__attach(prog);

		if (!link)
			fprintf(stderr, "upc-trace: warning: %s not attached: %s\n", bpf_program__name(prog),
				strerror(errno));
		else if (nlinks < sizeof(links) / sizeof(links[0]))
			links[nlinks++] = link;
	}
	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "upc-trace: ring buffer: %s\n", strerror(errno));
		goto out;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (opt.cmd) {
		if (pipe2(sync_pipe, O_CLOEXEC) < 0) {
			perror("upc-trace: pipe");
			goto out;
		}
		child = fork();
		if (child < 0) {
			perror("upc-trace: fork");
			goto out;
		}
		if (child == 0) {
			char c;

			close(sync_pipe[1]);
			/* Wait until the parent traces us. */
			if (read(sync_pipe[0], &c, 1) != 1)
				_exit(126);
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			execvp(opt.cmd[0], opt.cmd);
			fprintf(stderr, "upc-trace: %s: %s\n", opt.cmd[0], strerror(errno));
			_exit(127);
		}
		close(sync_pipe[0]);
		__u32 key = (__u32)child;
		__u8 one = 1;

		bpf_map__update_elem(skel->maps.tgids, &key, sizeof(key), &one, sizeof(one), BPF_ANY);
	}
	if (!opt.quiet)
		printf("%12s %7s %7s %-15s %-14s %s\n", "TIME(s)", "PID", "TID", "COMM", "EVENT", "DETAILS");
	fprintf(stderr, "upc-trace: %d probes attached to %s%s\n", attached, lib,
		opt.check ? "; checking I1, write-back after clean, I3/I6" : "");
	if (child && write(sync_pipe[1], "g", 1) != 1) {
		perror("upc-trace: release child");
		goto out;
	}
	if (child)
		close(sync_pipe[1]);

	start = now_s();
	end = opt.duration > 0 ? start + opt.duration : 0;
	while (!stop) {
		err = ring_buffer__poll(rb, 100);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "upc-trace: ring buffer: %s\n", strerror(-err));
			break;
		}
		if (child && !child_done && waitpid(child, &status, WNOHANG) == child) {
			child_done = true;
			break;
		}
		if (end && now_s() >= end)
			break;
	}
	/* Everything the traced processes fired is in the buffer by now: take it all. */
	while (ring_buffer__consume(rb) > 0)
		;
	if (child && !child_done) {
		kill(child, SIGTERM);
		waitpid(child, &status, 0);
		child_done = true;
	}
	bpf_map__lookup_elem(skel->maps.lost, &zero, sizeof(zero), &nlost, sizeof(nlost), 0);

	if (opt.summary)
		print_summary(stdout, now_s() - start, nlost);
	ret = 0;
	if (child_done)
		ret = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (opt.check) {
		if (violations) {
			fprintf(stderr, "\nupc-trace: check FAILED: %" PRIu64 " violations in %" PRIu64 " events",
				violations, nevents);
			for (int r = 0; r < 3; r++)
				if (violations_by_rule[r])
					fprintf(stderr, "; %" PRIu64 " x %s", violations_by_rule[r], rule_names[r]);
			fprintf(stderr, "\n");
			ret = EXIT_VIOLATION;
		} else if (nlost) {
			fprintf(stderr, "upc-trace: check INCONCLUSIVE: %" PRIu64 " events lost (ring buffer full)\n",
				nlost);
			if (!ret)
				ret = EXIT_LOST;
		} else {
			fprintf(stderr, "upc-trace: check passed: %" PRIu64 " events, no violation\n", nevents);
		}
	} else if (nlost) {
		fprintf(stderr, "upc-trace: %" PRIu64 " events lost (ring buffer full)\n", nlost);
	}
	if (child_done && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		fprintf(stderr, "upc-trace: %s %s %d\n", opt.cmd[0], WIFEXITED(status) ? "exited with" : "killed by signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
out:
	ring_buffer__free(rb);
	/* About 0.1 s each on 6.18 (the kernel waits for RCU per uprobe): one site per probe helps. */
	for (size_t i = 0; i < nlinks; i++)
		bpf_link__destroy(links[i]);
	upc_trace__destroy(skel);
	free(lib);
	return ret;
}
