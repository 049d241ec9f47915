/* SPDX-License-Identifier: MIT */
/*
 * upc-trace --check is real: it passes on the racewrite-shaped workload, on
 * file I/O through the cache and on the randomized model test (run here
 * under the tracer, as the traced command), and it fails - with a
 * violation of I1 and the page's recent events - when UPC_DEBUG=break-i1
 * makes write-back clear dirty before it write-protects.  And UPC_DEBUG=dirty-backtrace's stacks reach
 * the timeline.
 *
 * Needs root, kernel BTF and bpf(); skips with the reason elsewhere.  In
 * the asynchronous run (tests/async/test_trace_check.async) the traced
 * workloads track asynchronously too; break-i1 and dirty backtraces are
 * synchronous-only, so those cases skip there.
 */
#include "trace-helpers.h"

static int traced(const char *env, const char *trace_opts, const char *prog, char **outp)
{
	char *cmd;
	int st;

	/* BXFI_MAP would make the traced Criterion program think it is one of our sandboxes. */
	cr_assert(asprintf(&cmd, "env -u BXFI_MAP %s %s %s -- %s", env, build_path("tools/upc-trace"), trace_opts,
			   build_path(prog)) > 0);
	st = run_capture(cmd, outp);
	free(cmd);
	return st;
}

static void show_tail(const char *what, const char *out)
{
	size_t n = strlen(out);

	fprintf(stderr, "--- %s (last lines)\n%s\n", what, n > 3000 ? out + n - 3000 : out);
}

Test(trace_check, racewrite_passes, .timeout = 300)
{
	char *out;
	int st;

	require_upc_trace();
	st = traced("UPC_TEST_SECONDS=1", "--check -q", "tests/test_racewrite", &out);
	if (st != 0 || !strstr(out, "check passed"))
		show_tail("upc-trace --check -- test_racewrite", out);
	cr_assert_eq(st, 0, "upc-trace --check on racewrite: exit %d", st);
	cr_assert(strstr(out, "check passed"));
	cr_assert(strstr(out, "Passing: 1"), "racewrite itself did not pass under the tracer");
	free(out);
}

/* File I/O through the cache keeps the order too: upc_pwrite dirties before it copies, truncation drops (clean how 3). */
Test(trace_check, fileio_passes, .timeout = 300)
{
	char *out;
	int st;

	require_upc_trace();
	st = traced("UPC_TEST_SECONDS=1", "--check -q", "tests/test_fileio", &out);
	if (st != 0 || !strstr(out, "check passed"))
		show_tail("upc-trace --check -- test_fileio", out);
	cr_assert_eq(st, 0, "upc-trace --check on test_fileio: exit %d", st);
	cr_assert(strstr(out, "check passed"));
	cr_assert(strstr(out, "Failing: 0"), "test_fileio itself did not pass under the tracer");
	free(out);
}

/*
 * Write-back clustering writes clean gap pages with the dirty ones (clean
 * how 4): the check accepts them, and every dirty page still goes through
 * protect and clean before its I/O.
 */
Test(trace_check, msync_with_clustered_gaps_passes, .timeout = 300)
{
	char *out;
	int st;

	require_upc_trace();
	st = traced("", "--check -q", "tests/test_msync", &out);
	if (st != 0 || !strstr(out, "check passed"))
		show_tail("upc-trace --check -- test_msync", out);
	cr_assert_eq(st, 0, "upc-trace --check on test_msync: exit %d", st);
	cr_assert(strstr(out, "check passed"));
	cr_assert(strstr(out, "Failing: 0"), "test_msync itself did not pass under the tracer");
	free(out);
}

Test(trace_check, model_passes, .timeout = 300)
{
	char *out;
	int st;

	require_upc_trace();
	st = traced("UPC_TEST_SEED=7", "--check -q", "tests/test_model", &out);
	if (st != 0 || !strstr(out, "check passed"))
		show_tail("upc-trace --check -- test_model", out);
	cr_assert_eq(st, 0, "upc-trace --check on the model test: exit %d", st);
	cr_assert(strstr(out, "check passed"));
	cr_assert(strstr(out, "Passing: 5"), "the model test itself did not pass under the tracer");
	free(out);
}

Test(trace_check, break_i1_knob_fails_the_check, .timeout = 300)
{
	char *out;
	int st;

	if (track_flags())
		cr_skip_test("UPC_DEBUG=break-i1 acts under synchronous tracking only (the asynchronous "
			     "collection protects as it finds): covered by the synchronous run");
	require_upc_trace();
	st = traced("UPC_TEST_SECONDS=1 UPC_DEBUG=break-i1", "--check -q", "tests/test_racewrite", &out);
	if (st != 3)
		show_tail("UPC_DEBUG=break-i1 upc-trace --check -- test_racewrite", out);
	cr_assert_eq(st, 3, "upc-trace --check must exit 3 on a violation, got %d", st);
	cr_assert(strstr(out, "VIOLATION I1: page cleaned before a write-protect covering it completed"));
	/* The report shows the page's history, ending with the clean that broke the rule. */
	cr_assert(strstr(out, "the page's recent events"));
	cr_assert(strstr(out, " clean "));
	cr_assert(strstr(out, "check FAILED"));
	free(out);
}

Test(trace_check, break_i1_knob_fails_the_check_on_the_model, .timeout = 300)
{
	char *out;
	int st;

	if (track_flags())
		cr_skip_test("UPC_DEBUG=break-i1 acts under synchronous tracking only: covered by the "
			     "synchronous run");
	require_upc_trace();
	st = traced("UPC_TEST_SEED=7 UPC_DEBUG=break-i1", "--check -q", "tests/test_model", &out);
	if (st != 3)
		show_tail("UPC_DEBUG=break-i1 upc-trace --check -- test_model", out);
	cr_assert_eq(st, 3, "upc-trace --check must exit 3 on a violation, got %d", st);
	cr_assert(strstr(out, "VIOLATION I1"));
	free(out);
}

Test(trace_check, summary_counts_and_histograms, .timeout = 300)
{
	char *out;
	int st;

	require_upc_trace();
	st = traced("", "--summary -q", "examples/upc-demo", &out);
	cr_assert_eq(st, 0, "exit %d:\n%s", st, out);
	cr_assert(strstr(out, "upc-trace summary:"), "%s", out);
	cr_assert(strstr(out, "wb_submit"), "%s", out);
	cr_assert(strstr(out, "fault (write-protect):"), "%s", out);
	cr_assert(strstr(out, "usecs"), "%s", out);
	free(out);
}

Test(trace_check, dirty_backtraces_reach_the_timeline, .timeout = 300)
{
	char *out;
	int st;

	if (track_flags())
		cr_skip_test("dirty backtraces need synchronous tracking (a first write must trap)");
	require_upc_trace();
	/* upc-demo writes one string into every 64th page from main(). */
	st = traced("UPC_DEBUG=dirty-backtrace", "-K", "examples/upc-demo", &out);
	cr_assert_eq(st, 0, "exit %d:\n%s", st, out);
	if (strstr(out, "dirty-backtrace: not available"))
		cr_skip_test("UPC_DEBUG=dirty-backtrace is not available in this build (libunwind)");
	cr_assert(strstr(out, "(backtrace #1)"), "no dirty event carried a backtrace id:\n%s", out);
	cr_assert(strstr(out, "backtrace      #1 thread"), "no backtrace event:\n%s", out);
	cr_assert(strstr(out, "main+0x"), "the backtrace does not name upc-demo's main:\n%s", out);
	free(out);
}
