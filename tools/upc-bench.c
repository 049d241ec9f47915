/* SPDX-License-Identifier: MIT */
/*
 * upc-bench - upcache side by side with the kernel's mmap of the same file
 * and with the physical floor, measured in one run (issue 4).
 *
 *   upc-bench [--only N[,N...]] [--reps N] [--quick] [--json FILE] [--dir DIR]
 *
 * This file is the driver: the alternating repetition loop, ratios, targets,
 * the table (stdout), progress (stderr) and the JSON.  The workloads are in
 * upc-bench-work.c and upc-bench-floor.c; the method is described at the top
 * of upc-bench.h and in upc-bench(1).
 */
#include "upc-bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

struct bench B;

static const char *const target_status_name[] = {
	[0] = "not run", [1] = "n/a", [2] = "NOT MET", [3] = "met",
};
#define STATUS_NAME(s) target_status_name[(s) + 2]

static void (*const workloads[NR_WORKLOADS + 1])(struct workload *) = {
	NULL, wl1_cached_seq, wl2_cold_seq, wl3_cached_rand, wl4_cold_rand,
	wl5_first_write, wl6_msync, wl7_evict, wl8_floor, wl9_databases,
};

/* ------------------------------------------------------------ small helpers */

double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double t_start;

void progress(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[%6.1fs] ", (now_ns() - t_start) / 1e9);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median (mean of the two middle values for an even count), min and max. */
static void stats(const double *v, int n, double *med, double *min, double *max)
{
	double tmp[MAX_REPS];

	if (n <= 0) {
		*med = *min = *max = NAN;
		return;
	}
	memcpy(tmp, v, (size_t)n * sizeof(*v));
	qsort(tmp, (size_t)n, sizeof(*tmp), cmp_double);
	*min = tmp[0];
	*max = tmp[n - 1];
	*med = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static double per_unit(const struct sample *s)
{
	return s->units ? s->ns / (double)s->units : NAN;
}

/* ------------------------------------------------------------ variants and the repetition loop */

int add_variant(struct workload *w, const char *name, pass_fn fn, void *ctx, bool info,
		const char *desc_fmt, ...)
{
	struct variant *v;
	va_list ap;

	if (w->nvar >= MAX_VARIANTS) {
		fprintf(stderr, "upc-bench: too many variants in workload %d\n", w->id);
		exit(2);
	}
	v = &w->var[w->nvar];
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->fn = fn;
	v->ctx = ctx;
	v->info = info;
	va_start(ap, desc_fmt);
	vsnprintf(v->desc, sizeof(v->desc), desc_fmt, ap);
	va_end(ap);
	return w->nvar++;
}

void skip_variant(struct workload *w, int vi, const char *fmt, ...)
{
	va_list ap;

	if (vi < 0 || vi >= w->nvar)
		return;
	va_start(ap, fmt);
	vsnprintf(w->var[vi].skip, sizeof(w->var[vi].skip), fmt, ap);
	va_end(ap);
}

void warn_variant(struct variant *v, const char *fmt, ...)
{
	va_list ap;

	if (v->warn[0])
		return;	/* the first one says enough */
	va_start(ap, fmt);
	vsnprintf(v->warn, sizeof(v->warn), fmt, ap);
	va_end(ap);
	fprintf(stderr, "upc-bench: WARNING: %s: %s\n", v->name, v->warn);
}

/* The watchdog: a pass that takes longer than --timeout ends the program (a lost fault hangs forever). */
static _Atomic(double) pass_t0;
static char pass_what[96];

static void *watchdog(void *arg)
{
	(void)arg;
	for (;;) {
		double t0 = atomic_load(&pass_t0);

		sleep(1);
		if (t0 > 0 && t0 == atomic_load(&pass_t0) &&
		    (now_ns() - t0) / 1e9 > B.pass_timeout_s) {
			fprintf(stderr, "upc-bench: pass %s has run for more than %.0f s: giving up "
				"(a fault that is never resolved?)\n", pass_what, B.pass_timeout_s);
			cleanup_files();
			_exit(3);
		}
	}
	return NULL;
}

static const char *unit_fmt(double ns, char *buf, size_t len)
{
	if (isnan(ns))
		snprintf(buf, len, "-");
	else if (ns < 10000)
		snprintf(buf, len, "%.3f", ns / 1e3);
	else
		snprintf(buf, len, "%.1f", ns / 1e3);
	return buf;
}

void run_variants(struct workload *w)
{
	int order[MAX_VARIANTS];

	for (int rep = 0; rep < w->reps; rep++) {
		B.cur_rep = rep;
		for (int i = 0; i < w->nvar; i++)
			order[i] = rep % 2 ? w->nvar - 1 - i : i;
		for (int k = 0; k < w->nvar; k++) {
			struct variant *v = &w->var[order[k]];
			struct sample *s = &v->samp[rep];
			char b[32];
			int ret;

			memset(s, 0, sizeof(*s));
			if (v->skip[0] || (B.match && !strstr(v->name, B.match)))
				continue;
			snprintf(pass_what, sizeof(pass_what), "w%d %s rep %d", w->id, v->name, rep + 1);
			atomic_store(&pass_t0, now_ns());
			ret = v->fn(v, s);
			atomic_store(&pass_t0, 0.0);
			if (ret < 0) {
				if (!v->skip[0])
					snprintf(v->skip, sizeof(v->skip), "failed: %s", upc_strerror(ret));
				progress("w%d rep %d/%d %-24s %s", w->id, rep + 1, w->reps, v->name, v->skip);
				memset(s, 0, sizeof(*s));
				continue;
			}
			v->nsamp++;
			progress("w%d rep %d/%d %-24s %10s us/%s", w->id, rep + 1, w->reps, v->name,
				 unit_fmt(per_unit(s), b, sizeof(b)), w->unit);
		}
	}
	w->ran = true;
}

static void compute_ratio(struct workload *w, struct ratio *r)
{
	r->n = 0;
	for (int rep = 0; rep < MAX_REPS; rep++) {
		struct sample *a = &w->var[r->num].samp[rep], *b = &w->var[r->den].samp[rep];

		if (!a->units || !b->units)
			continue;
		r->r[r->n++] = per_unit(a) / per_unit(b);
	}
	stats(r->r, r->n, &r->med, &r->min, &r->max);
}

int add_ratio(struct workload *w, int num, int den)
{
	struct ratio *r;

	if (num < 0 || den < 0)
		return -1;
	r = find_ratio(w, num, den);
	if (r)
		return (int)(r - w->ratio);	/* already there (a target's note asked for it first) */
	if (w->nratio >= MAX_RATIOS)
		return -1;
	r = &w->ratio[w->nratio];
	memset(r, 0, sizeof(*r));
	r->num = num;
	r->den = den;
	compute_ratio(w, r);
	return w->nratio++;
}

struct ratio *find_ratio(struct workload *w, int num, int den)
{
	for (int i = 0; i < w->nratio; i++)
		if (w->ratio[i].num == num && w->ratio[i].den == den)
			return &w->ratio[i];
	return NULL;
}

static struct target *new_target(int wl, const char *what, double limit)
{
	struct target *t;

	if (B.ntargets >= MAX_TARGETS)
		return NULL;
	t = &B.targets[B.ntargets++];
	memset(t, 0, sizeof(*t));
	t->wl = wl;
	snprintf(t->what, sizeof(t->what), "%s", what);
	t->limit = limit;
	t->med = t->min = t->max = NAN;
	return t;
}

/* A target row: the median ratio num/den against @limit. */
void add_target(int wl, const char *what, int num, int den, double limit, const char *note)
{
	struct workload *w = &B.wl[wl];
	struct target *t = new_target(wl, what, limit);
	struct ratio *r;

	if (!t)
		return;
	snprintf(t->note, sizeof(t->note), "%s", note ? note : "");
	if (num < 0 || den < 0) {
		t->status = T_NOT_AVAILABLE;
		return;
	}
	snprintf(t->ratio, sizeof(t->ratio), "%s / %s", w->var[num].name, w->var[den].name);
	r = find_ratio(w, num, den);
	if (!r) {
		int ri = add_ratio(w, num, den);

		if (ri < 0) {
			t->status = T_NOT_AVAILABLE;
			snprintf(t->note, sizeof(t->note), "upc-bench: too many ratios in workload %d", wl);
			return;
		}
		r = &w->ratio[ri];
	}
	if (!r->n) {
		t->status = T_NOT_AVAILABLE;
		if (!t->note[0])
			snprintf(t->note, sizeof(t->note), "%s",
				 w->var[num].skip[0] ? w->var[num].skip : w->var[den].skip);
		return;
	}
	t->med = r->med;
	t->min = r->min;
	t->max = r->max;
	t->status = r->med <= limit ? T_MET : T_NOT_MET;
}

void add_target_na(int wl, const char *what, const char *ratio, double limit, const char *note)
{
	struct target *t = new_target(wl, what, limit);

	if (!t)
		return;
	snprintf(t->ratio, sizeof(t->ratio), "%s", ratio);
	snprintf(t->note, sizeof(t->note), "%s", note);
	t->status = T_NOT_AVAILABLE;
}

void add_target_row(const char *row, int wl, const char *what, int num, int den, double limit,
		    const char *note)
{
	int i = B.ntargets;

	add_target(wl, what, num, den, limit, note);
	if (B.ntargets > i)
		snprintf(B.targets[i].row, sizeof(B.targets[i].row), "%s", row);
}

void add_target_na_row(const char *row, int wl, const char *what, const char *ratio, double limit,
		       const char *note)
{
	int i = B.ntargets;

	add_target_na(wl, what, ratio, limit, note);
	if (B.ntargets > i)
		snprintf(B.targets[i].row, sizeof(B.targets[i].row), "%s", row);
}

double ratio_med(struct workload *w, int num, int den)
{
	struct ratio *r;
	int ri;

	if (num < 0 || den < 0)
		return NAN;
	r = find_ratio(w, num, den);
	if (!r) {
		ri = add_ratio(w, num, den);
		if (ri < 0)
			return NAN;
		r = &w->ratio[ri];
	}
	return r->n ? r->med : NAN;
}

/* ------------------------------------------------------------ output: the table */

/* The median over the passes of a counter; counters are nearly constant, the median hides a stray pass. */
static double counter_med(const struct variant *v, size_t off)
{
	double x[MAX_REPS], med, mn, mx;
	int n = 0;

	for (int rep = 0; rep < MAX_REPS; rep++)
		if (v->samp[rep].units)
			x[n++] = (double)*(const uint64_t *)((const char *)&v->samp[rep].c + off);
	stats(x, n, &med, &mn, &mx);
	return med;
}

/* The median over the passes of x(pass); NAN where no pass ran. */
static double pass_med(const struct variant *v, size_t off, int what)
{
	double x[MAX_REPS], med, mn, mx;
	int n = 0;

	if (!v)
		return NAN;
	for (int rep = 0; rep < MAX_REPS; rep++) {
		const struct sample *s = &v->samp[rep];
		double c;

		if (!s->units)
			continue;
		c = off == SIZE_MAX ? 0 : (double)*(const uint64_t *)((const char *)&s->c + off);
		switch (what) {
		case 0:		/* us per unit */
			x[n++] = s->ns / 1e3 / (double)s->units;
			break;
		case 1:		/* counter per unit */
			x[n++] = c / (double)s->units;
			break;
		case 2:		/* us per counted event */
			if (c > 0)
				x[n++] = s->ns / 1e3 / c;
			break;
		default:	/* the counter */
			x[n++] = c;
		}
	}
	stats(x, n, &med, &mn, &mx);
	return med;
}

double med_us(const struct variant *v)
{
	return pass_med(v, SIZE_MAX, 0);
}

double med_per_unit(const struct variant *v, size_t cnt_off)
{
	return pass_med(v, cnt_off, 1);
}

double med_us_per(const struct variant *v, size_t cnt_off)
{
	return pass_med(v, cnt_off, 2);
}

double med_cnt(const struct variant *v, size_t cnt_off)
{
	return pass_med(v, cnt_off, 3);
}

static bool variant_is_upc(const struct variant *v)
{
	for (int rep = 0; rep < MAX_REPS; rep++)
		if (v->samp[rep].units)
			return v->samp[rep].c.upc;
	return false;
}

char *bound_str(char *buf, size_t len, struct workload *w, int vi)
{
	const struct variant *v;
	size_t n = strlen(buf);
	double x, pages;

#define APP(...) do { if (n < len) n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__); } while (0)
	if (vi < 0 || vi >= w->nvar)
		return buf;
	v = &w->var[vi];
	if (isnan(med_us(v))) {
		APP("%s%s: no sample", n ? "; " : "", v->name);
		return buf;
	}
	APP("%s%s %.3g us/%s", n ? "; " : "", v->name, med_us(v), w->unit);
	x = med_per_unit(v, CNT(minflt)) + med_per_unit(v, CNT(majflt));
	if (x > 0)
		APP(", %.3g kernel faults a %s", x, w->unit);
	x = med_per_unit(v, CNT(io_rd_kib));
	if (x > 0)
		APP(", %.3g KiB read from storage a %s", x, w->unit);
	/* write_bytes counts a buffered write's whole (large) folio when it is dirtied. */
	x = med_per_unit(v, CNT(io_wr_kib));
	if (x > 0)
		APP(", %.3g KiB write_bytes a %s", x, w->unit);
	x = med_per_unit(v, CNT(dev_wr_kib));
	if (x >= 0.5)
		APP(", the device wrote %.3g KiB a %s (all processes)", x, w->unit);
	if (!variant_is_upc(v))
		return buf;
	/* A time per fault only where the faults are the work (about one a unit). */
	x = med_per_unit(v, CNT(faults_missing));
	if (x > 0) {
		pages = med_cnt(v, CNT(pages_filled)) / med_cnt(v, CNT(faults_missing));
		APP(", %.3g MISSING a %s (%.3g pages filled each", x, w->unit, pages);
		if (x >= 0.9)
			APP(", %.3g us each", med_us_per(v, CNT(faults_missing)));
		APP("), %.3g fill I/Os a %s", med_per_unit(v, CNT(fill_ios)), w->unit);
	}
	x = med_per_unit(v, CNT(faults_minor));
	if (x >= 0.9)
		APP(", %.3g MINOR a %s (%.3g us each)", x, w->unit, med_us_per(v, CNT(faults_minor)));
	else if (x > 0)
		APP(", 1 MINOR per %.0f %ss", 1 / x, w->unit);
	x = med_per_unit(v, CNT(faults_wp));
	if (x >= 0.9)
		APP(", %.3g WP faults a %s (%.3g us each)", x, w->unit, med_us_per(v, CNT(faults_wp)));
	else if (x > 0)
		APP(", 1 WP fault per %.0f %ss", 1 / x, w->unit);
	x = med_cnt(v, CNT(wp_calls));
	if (x > 0)
		APP(", %.0f wp calls a pass", x);
	x = med_cnt(v, CNT(wb_ios));
	if (x > 0)
		APP(", %.0f write I/Os a pass (%.3g pages each)", x, med_cnt(v, CNT(pages_written)) / x);
	x = med_cnt(v, CNT(wb_gap_pages));
	if (x > 0)
		APP(", %.3g clean gap pages written with them a dirty page", x / med_cnt(v, CNT(pages_written)));
#undef APP
	return buf;
}

#define CM(v, f) counter_med(v, offsetof(struct bench_counters, f))

static void counters_str(const struct variant *v, char *buf, size_t len)
{
	size_t n = 0;
	double miss, filled;

#define ADD(name, val) do { double _x = (val); \
		if (!isnan(_x) && _x >= 1 && n < len) \
			n += (size_t)snprintf(buf + n, len - n, "%s%s %.0f", n ? ", " : "", name, _x); \
	} while (0)
	buf[0] = 0;
	ADD("minflt", CM(v, minflt));
	ADD("majflt", CM(v, majflt));
	ADD("io-rd-KiB", CM(v, io_rd_kib));
	ADD("io-wr-KiB", CM(v, io_wr_kib));
	ADD("dev-rd-KiB", CM(v, dev_rd_kib));
	ADD("dev-wr-KiB", CM(v, dev_wr_kib));
	if (variant_is_upc(v)) {
		miss = CM(v, faults_missing);
		filled = CM(v, pages_filled);
		ADD("missing", miss);
		if (miss > 0 && n < len)
			n += (size_t)snprintf(buf + n, len - n, ", pages/missing %.1f", filled / miss);
		ADD("fill-ios", CM(v, fill_ios));
		ADD("ra-max", CM(v, ra_max_window));
		ADD("minor", CM(v, faults_minor));
		ADD("wp-faults", CM(v, faults_wp));
		ADD("wp-calls", CM(v, wp_calls));
		ADD("wb-ios", CM(v, wb_ios));
		ADD("written", CM(v, pages_written));
		ADD("gap-written", CM(v, wb_gap_pages));
		ADD("evicted", CM(v, pages_evicted));
	}
#undef ADD
}

static void print_workload(FILE *o, struct workload *w)
{
	char b1[32], b2[32], b3[32], b4[32], cs[300];

	fprintf(o, "\n== %d. %s ==\n", w->id, w->title);
	if (w->setup[0])
		fprintf(o, "   %s\n", w->setup);
	if (w->skip[0]) {
		fprintf(o, "   not available: %s\n", w->skip);
		return;
	}
	fprintf(o, "   %-26s %9s %9s %9s %9s  %s\n", "variant", "us/unit", "min", "max", "map us",
		"counters per pass (median)");
	for (int i = 0; i < w->nvar; i++) {
		struct variant *v = &w->var[i];
		double x[MAX_REPS], m[MAX_REPS], med, mn, mx, mmed, d1, d2;
		int n = 0;

		for (int rep = 0; rep < MAX_REPS; rep++)
			if (v->samp[rep].units) {
				m[n] = v->samp[rep].map_ns;
				x[n++] = per_unit(&v->samp[rep]);
			}
		if (!n) {
			fprintf(o, "   %-26s %s\n", v->name, v->skip[0] ? v->skip : "no sample");
			continue;
		}
		stats(x, n, &med, &mn, &mx);
		stats(m, n, &mmed, &d1, &d2);
		counters_str(v, cs, sizeof(cs));
		fprintf(o, "   %-26s %9s %9s %9s %9s  %s\n", v->name, unit_fmt(med, b1, sizeof(b1)),
			unit_fmt(mn, b2, sizeof(b2)), unit_fmt(mx, b3, sizeof(b3)),
			mmed > 0 ? unit_fmt(mmed, b4, sizeof(b4)) : "", cs);
		if (v->warn[0])
			fprintf(o, "   %-26s WARNING: %s\n", "", v->warn);
	}
	if (w->nratio) {
		fprintf(o, "   %-52s %7s %7s %7s  %s\n", "ratio (per repetition, same run)", "median",
			"min", "max", "pairs");
		for (int i = 0; i < w->nratio; i++) {
			struct ratio *r = &w->ratio[i];
			char name[NAME_LEN * 2 + 8];

			snprintf(name, sizeof(name), "%s / %s", w->var[r->num].name, w->var[r->den].name);
			if (!r->n)
				fprintf(o, "   %-52s %7s\n", name, "-");
			else
				fprintf(o, "   %-52s %7.2f %7.2f %7.2f  %d\n", name, r->med, r->min, r->max, r->n);
		}
	}
	fprintf(o, "   unit: one %s; variants:\n", w->unit);
	for (int i = 0; i < w->nvar; i++)
		fprintf(o, "     %-24s %s%s\n", w->var[i].name, w->var[i].desc,
			w->var[i].info ? " [info]" : "");
	if (w->note[0])
		fprintf(o, "   note: %s\n", w->note);
}

/* Issue 4's rows (no row letter) first, then issue 11's by row letter, each in the order added. */
static void print_targets(FILE *o)
{
	static const char *const rows[] = { "", "A", "B", "C", "D", "E", "F", "G" };
	bool head[2] = { false, false };

	fprintf(o, "\n== targets (upcache time / baseline time, same run, median [min, max]; lower is better) ==\n");
	for (size_t g = 0; g < sizeof(rows) / sizeof(rows[0]); g++) {
		for (int i = 0; i < B.ntargets; i++) {
			struct target *t = &B.targets[i];
			char mm[40], lim[16], col[8];

			if (strcmp(t->row, rows[g]))
				continue;
			if (!head[g > 0]) {
				fprintf(o, "   %s\n   %-3s %-46s %-40s %5s %7s %16s  %s\n",
					g ? "issue 11 (row letter and the workload that measures it):" :
					"issue 4:", g ? "row" : "wl", "target", "ratio", "limit", "median",
					"[min, max]", "status");
				head[g > 0] = true;
			}
			snprintf(lim, sizeof(lim), "%.1f", t->limit);
			if (isnan(t->med))
				snprintf(mm, sizeof(mm), "-");
			else
				snprintf(mm, sizeof(mm), "[%.2f, %.2f]", t->min, t->max);
			if (t->row[0])
				snprintf(col, sizeof(col), "%s%d", t->row, t->wl);
			else
				snprintf(col, sizeof(col), "%d", t->wl);
			fprintf(o, "   %-3s %-46s %-40s %5s %7.2f %16s  %s\n", col, t->what, t->ratio, lim,
				t->med, mm, STATUS_NAME(t->status));
			if (t->note[0])
				fprintf(o, "       %s\n", t->note);
		}
	}
}

/* ------------------------------------------------------------ output: JSON */

static void json_str(FILE *o, const char *s)
{
	fputc('"', o);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(o, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", o);
		else if (ch < 0x20)
			fprintf(o, "\\u%04x", ch);
		else
			fputc(ch, o);
	}
	fputc('"', o);
}

static void json_num(FILE *o, double x)
{
	if (isnan(x) || isinf(x))
		fputs("null", o);
	else
		fprintf(o, "%.6g", x);
}

static void json_counters(FILE *o, const struct bench_counters *c)
{
	fprintf(o, "{\"minflt\": %" PRIu64 ", \"majflt\": %" PRIu64 ", \"dev_rd_kib\": %" PRIu64
		", \"dev_wr_kib\": %" PRIu64 ", \"io_rd_kib\": %" PRIu64 ", \"io_wr_kib\": %" PRIu64,
		c->minflt, c->majflt, c->dev_rd_kib, c->dev_wr_kib, c->io_rd_kib, c->io_wr_kib);
	if (c->upc)
		fprintf(o, ", \"track_mode\": \"%s\", \"faults_missing\": %" PRIu64
			", \"faults_wp\": %" PRIu64 ", \"faults_minor\": %" PRIu64 ", \"fill_ios\": %" PRIu64
			", \"pages_filled\": %" PRIu64 ", \"ra_max_window\": %" PRIu64
			", \"wp_calls\": %" PRIu64 ", \"wb_ios\": %" PRIu64
			", \"pages_written\": %" PRIu64 ", \"wb_gap_pages\": %" PRIu64 ", \"syncs\": %" PRIu64
			", \"pages_evicted\": %" PRIu64 ", \"pages_cached\": %" PRIu64,
			c->track_mode == UPC_TRACK_ASYNC ? "async" : "sync", c->faults_missing,
			c->faults_wp, c->faults_minor, c->fill_ios, c->pages_filled, c->ra_max_window, c->wp_calls,
			c->wb_ios, c->pages_written, c->wb_gap_pages, c->syncs, c->pages_evicted, c->pages_cached);
	fputc('}', o);
}

static char load_start[64], load_end[64];

static void write_json(const char *path, int argc, char **argv)
{
	FILE *o = fopen(path, "w");
	struct utsname u;
	char date[64];
	time_t now = time(NULL);

	if (!o) {
		fprintf(stderr, "upc-bench: %s: %s\n", path, strerror(errno));
		return;
	}
	uname(&u);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S%z", localtime(&now));
	fprintf(o, "{\n  \"program\": \"upc-bench\",\n  \"upcache_version\": \"%d.%d\",\n",
		UPC_VERSION_MAJOR, UPC_VERSION_MINOR);
	fputs("  \"command\": ", o);
	{
		char cmd[1024];
		size_t n = 0;

		cmd[0] = 0;
		for (int i = 0; i < argc && n < sizeof(cmd); i++)
			n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "%s%s", i ? " " : "", argv[i]);
		json_str(o, cmd);
	}
	fprintf(o, ",\n  \"date\": \"%s\",\n  \"machine\": {\"nproc\": %ld, \"kernel\": ", date,
		sysconf(_SC_NPROCESSORS_ONLN));
	json_str(o, u.release);
	fprintf(o, ", \"arch\": ");
	json_str(o, u.machine);
	fprintf(o, ", \"mem_bytes\": %lld, \"loadavg_start\": \"%s\", \"loadavg_end\": \"%s\"},\n",
		(long long)sysconf(_SC_PHYS_PAGES) * (long long)sysconf(_SC_PAGESIZE), load_start, load_end);
	fprintf(o, "  \"reps\": %d,\n  \"quick\": %s,\n  \"dir\": ", B.reps, B.quick ? "true" : "false");
	json_str(o, B.dir);
	fprintf(o, ",\n  \"features\": \"0x%" PRIx64 "\",\n  \"async_requested_mode\": \"%s\",\n",
		upc_probe(), B.async_mode == UPC_TRACK_ASYNC ? "async" : "sync");
	fputs("  \"workloads\": [", o);
	for (int id = 1, first = 1; id <= NR_WORKLOADS; id++) {
		struct workload *w = &B.wl[id];

		if (!w->ran && !w->skip[0])
			continue;
		fprintf(o, "%s\n    {\"id\": %d, \"reps\": %d, \"title\": ", first ? "" : ",", id, w->reps);
		first = 0;
		json_str(o, w->title);
		fputs(", \"setup\": ", o);
		json_str(o, w->setup);
		fputs(", \"unit\": ", o);
		json_str(o, w->unit);
		fputs(", \"note\": ", o);
		json_str(o, w->note);
		fputs(", \"skip\": ", o);
		json_str(o, w->skip);
		fputs(",\n     \"variants\": [", o);
		for (int i = 0; i < w->nvar; i++) {
			struct variant *v = &w->var[i];
			double x[MAX_REPS], med, mn, mx;
			int n = 0;

			for (int rep = 0; rep < MAX_REPS; rep++)
				if (v->samp[rep].units)
					x[n++] = per_unit(&v->samp[rep]);
			stats(x, n, &med, &mn, &mx);
			fprintf(o, "%s\n      {\"name\": ", i ? "," : "");
			json_str(o, v->name);
			fputs(", \"desc\": ", o);
			json_str(o, v->desc);
			fprintf(o, ", \"info\": %s, \"skip\": ", v->info ? "true" : "false");
			json_str(o, v->skip);
			fputs(", \"warn\": ", o);
			json_str(o, v->warn);
			fputs(", \"ns_per_unit\": {\"median\": ", o);
			json_num(o, med);
			fputs(", \"min\": ", o);
			json_num(o, mn);
			fputs(", \"max\": ", o);
			json_num(o, mx);
			fputs("},\n       \"passes\": [", o);
			for (int rep = 0, f2 = 1; rep < MAX_REPS; rep++) {
				struct sample *s = &v->samp[rep];

				if (!s->units)
					continue;
				fprintf(o, "%s\n        {\"rep\": %d, \"ns\": ", f2 ? "" : ",", rep);
				f2 = 0;
				json_num(o, s->ns);
				fputs(", \"map_ns\": ", o);
				json_num(o, s->map_ns);
				fprintf(o, ", \"units\": %" PRIu64 ", \"counters\": ", s->units);
				json_counters(o, &s->c);
				fputc('}', o);
			}
			fputs("]}", o);
		}
		fputs("],\n     \"ratios\": [", o);
		for (int i = 0; i < w->nratio; i++) {
			struct ratio *r = &w->ratio[i];

			fprintf(o, "%s\n      {\"num\": ", i ? "," : "");
			json_str(o, w->var[r->num].name);
			fputs(", \"den\": ", o);
			json_str(o, w->var[r->den].name);
			fputs(", \"median\": ", o);
			json_num(o, r->med);
			fputs(", \"min\": ", o);
			json_num(o, r->min);
			fputs(", \"max\": ", o);
			json_num(o, r->max);
			fputs(", \"samples\": [", o);
			for (int k = 0; k < r->n; k++) {
				if (k)
					fputs(", ", o);
				json_num(o, r->r[k]);
			}
			fputs("]}", o);
		}
		fputs("]}", o);
	}
	fputs("\n  ],\n  \"targets\": [", o);
	for (int i = 0; i < B.ntargets; i++) {
		struct target *t = &B.targets[i];

		fprintf(o, "%s\n    {\"wl\": %d, \"row\": ", i ? "," : "", t->wl);
		json_str(o, t->row);
		fputs(", \"what\": ", o);
		json_str(o, t->what);
		fputs(", \"ratio\": ", o);
		json_str(o, t->ratio);
		fputs(", \"limit\": ", o);
		json_num(o, t->limit);
		fputs(", \"median\": ", o);
		json_num(o, t->med);
		fputs(", \"min\": ", o);
		json_num(o, t->min);
		fputs(", \"max\": ", o);
		json_num(o, t->max);
		fprintf(o, ", \"status\": \"%s\", \"note\": ", STATUS_NAME(t->status));
		json_str(o, t->note);
		fputc('}', o);
	}
	fputs("\n  ]\n}\n", o);
	if (fclose(o) != 0)
		fprintf(stderr, "upc-bench: %s: %s\n", path, strerror(errno));
}

/* ------------------------------------------------------------ main */

/* /proc/loadavg's first three fields: how busy the machine was (other processes are noise). */

static void read_load(char *buf, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double a = 0, b = 0, c = 0;

	if (f && fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
		snprintf(buf, len, "%.2f %.2f %.2f", a, b, c);
	else
		snprintf(buf, len, "?");
	if (f)
		fclose(f);
}

static void usage(FILE *o)
{
	fputs("usage: upc-bench [--only N[,N...]] [--reps N] [--quick] [--json FILE] [--dir DIR]\n"
	      "                 [--timeout SECONDS] [--match STRING]\n"
	      "workloads: 1 cached sequential scan, 2 cold sequential scan, 3 cached random touch,\n"
	      "  4 cold random 4 KiB reads, 5 first write to clean cached pages, 6 msync,\n"
	      "  7 eviction churn, 8 the floor, 9 databases end to end.  See upc-bench(1).\n", o);
}

static void on_signal(int sig)
{
	cleanup_files();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int parse_only(const char *s)
{
	char *end;

	while (*s) {
		long n = strtol(s, &end, 10);

		if (end == s || n < 1 || n > NR_WORKLOADS)
			return -1;
		B.only |= 1u << n;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return B.only ? 0 : -1;
}

static void find_cpus(void)
{
	cpu_set_t set;

	B.ncpus = 0;
	B.cpus[0] = B.cpus[1] = -1;
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return;
	for (int i = 0; i < CPU_SETSIZE && B.ncpus < 2; i++)
		if (CPU_ISSET(i, &set))
			B.cpus[B.ncpus++] = i;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "only", required_argument, NULL, 'o' },
		{ "reps", required_argument, NULL, 'r' },
		{ "quick", no_argument, NULL, 'q' },
		{ "json", required_argument, NULL, 'j' },
		{ "dir", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "match", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *json = NULL;
	struct upc_cache *c;
	struct utsname u;
	pthread_t wd;
	int opt, reps = 0, ret;

	B.dir = "/var/tmp";
	B.pass_timeout_s = 120;
	while ((opt = getopt_long(argc, argv, "o:r:qj:d:t:m:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'o':
			if (parse_only(optarg) < 0) {
				fprintf(stderr, "upc-bench: --only wants workload numbers 1-%d, comma-separated\n",
					NR_WORKLOADS);
				return 2;
			}
			break;
		case 'r':
			reps = atoi(optarg);
			if (reps < 1 || reps > MAX_REPS) {
				fprintf(stderr, "upc-bench: --reps must be 1-%d\n", MAX_REPS);
				return 2;
			}
			break;
		case 'q':
			B.quick = true;
			break;
		case 'j':
			json = optarg;
			break;
		case 'd':
			B.dir = optarg;
			break;
		case 't':
			B.pass_timeout_s = atof(optarg);
			break;
		case 'm':
			B.match = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (!reps)
		reps = B.quick ? 2 : 6;
	/* An even number of passes: each variant runs first as often as second. */
	if (reps % 2) {
		reps++;
		if (reps > MAX_REPS)
			reps -= 2;
		fprintf(stderr, "upc-bench: using %d repetitions (an even number, so that every pair "
			"runs in both orders)\n", reps);
	}
	B.reps = reps;
	t_start = now_ns();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	atexit(cleanup_files);
	find_cpus();
	if (pthread_create(&wd, NULL, watchdog, NULL) == 0)
		pthread_detach(wd);

	/* Which mode does a cache that asks for async tracking get? */
	ret = upc_new(true, UPC_CACHE_NO_BGWB, 0, &c);
	if (ret < 0) {
		fprintf(stderr, "upc-bench: upc_cache_create: %s\n", upc_strerror(ret));
		return 1;
	}
	{
		struct upc_stats st = { .sz = sizeof(st) };

		upc_stats(c, &st);
		B.async_mode = st.track_mode;
		upc_cache_destroy(c);
	}
	snprintf(B.async_label, sizeof(B.async_label), "%s",
		 B.async_mode == UPC_TRACK_ASYNC ? "upc-async" : "upc-async:sync");
	uname(&u);
	read_load(load_start, sizeof(load_start));
	printf("upc-bench: %ld CPUs, Linux %s, %d repetitions per variant%s, files in %s, load average "
	       "%s\n", sysconf(_SC_NPROCESSORS_ONLN), u.release, B.reps, B.quick ? " (--quick sizes)" : "",
	       B.dir, load_start);
	printf("upcache %d.%d; a cache asking for async tracking runs in %s mode%s\n",
	       UPC_VERSION_MAJOR, UPC_VERSION_MINOR,
	       B.async_mode == UPC_TRACK_ASYNC ? "async" : "sync",
	       B.async_mode == UPC_TRACK_ASYNC ? "" : " (its rows are labelled upc-async:sync)");
	printf("every ratio is taken per repetition between passes of the same repetition; "
	       "variant order alternates\n");
	fflush(stdout);

	for (int id = 1; id <= NR_WORKLOADS; id++) {
		struct workload *w = &B.wl[id];
		int nt;

		w->id = id;
		w->reps = B.reps;
		if (B.only && !(B.only & (1u << id)))
			continue;
		progress("workload %d", id);
		nt = B.ntargets;
		workloads[id](w);
		/* Workload 9's targets are issue 11's row G. */
		for (int i = nt; id == 9 && i < B.ntargets; i++)
			if (!B.targets[i].row[0])
				snprintf(B.targets[i].row, sizeof(B.targets[i].row), "G");
		print_workload(stdout, w);
		fflush(stdout);
	}
	print_targets(stdout);
	read_load(load_end, sizeof(load_end));
	printf("\nload average at the end: %s (at the start: %s); total %.0f s\n", load_end, load_start,
	       (now_ns() - t_start) / 1e9);
	if (json)
		write_json(json, argc, argv);
	cleanup_files();
	progress("done");
	return 0;
}
