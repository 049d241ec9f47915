/* SPDX-License-Identifier: MIT */
/* Helpers for the tests of the observability tools (upc-trace, upcctl stats). */
#ifndef UPC_TEST_TRACE_HELPERS_H
#define UPC_TEST_TRACE_HELPERS_H

#include "helpers.h"

#include <limits.h>
#include <sys/wait.h>

/*
 * The top of the build tree: $UPC_TEST_BUILDDIR (make check sets it), else
 * found from this program's path (tests/NAME or tests/.libs/lt-NAME).
 */
static inline const char *builddir(void)
{
	static char dir[PATH_MAX];
	const char *e = getenv("UPC_TEST_BUILDDIR");
	ssize_t n;
	char *s;

	if (e && *e)
		return e;
	if (dir[0])
		return dir;
	n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	cr_assert_gt(n, 0);
	dir[n] = '\0';
	for (int up = 0; up < 3 && (s = strrchr(dir, '/')); up++) {
		*s = '\0';
		if (strlen(dir) >= 6 && !strcmp(dir + strlen(dir) - 6, "/tests")) {
			dir[strlen(dir) - 6] = '\0';
			return dir;
		}
	}
	strcpy(dir, ".");
	return dir;
}

/* The path of a program of the build tree ("tools/upcctl"). */
static inline const char *build_path(const char *rel)
{
	static char path[4][PATH_MAX];
	static int next;
	char *p = path[next++ % 4];

	snprintf(p, PATH_MAX, "%s/%s", builddir(), rel);
	return p;
}

/*
 * Run @cmd with sh -c, standard output and error captured into a buffer
 * (malloc'ed, in *@outp).  Returns the exit status (128 + N when killed by
 * signal N).
 */
static inline int run_capture(const char *cmd, char **outp)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	char *full;
	FILE *f;
	int st;

	cr_assert(buf);
	cr_assert(asprintf(&full, "%s 2>&1", cmd) > 0);
	f = popen(full, "r");
	cr_assert(f, "popen %s: %s", cmd, strerror(errno));
	for (;;) {
		size_t n;

		if (cap - len < 4096) {
			cap *= 2;
			buf = realloc(buf, cap);
			cr_assert(buf);
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		if (!n)
			break;
		len += n;
	}
	buf[len] = '\0';
	st = pclose(f);
	free(full);
	*outp = buf;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Skip (with the reason) unless upc-trace was built and BPF tracing works here. */
static inline const char *require_upc_trace(void)
{
	const char *trace = build_path("tools/upc-trace");
	char *out, *cmd;
	int st;

	if (access(trace, X_OK) != 0)
		cr_skip_test("upc-trace was not built (configure needs libbpf-dev, libelf-dev, bpftool, clang, "
			     "systemtap-sdt-dev and /sys/kernel/btf/vmlinux: see ./configure's warnings)");
	if (geteuid() != 0)
		cr_skip_test("not root: upc-trace needs CAP_BPF and CAP_PERFMON");
	cr_assert(asprintf(&cmd, "%s --probe", trace) > 0);
	st = run_capture(cmd, &out);
	free(cmd);
	if (st == 77) {
		out[strcspn(out, "\n")] = '\0';
		cr_skip_test("BPF tracing is not available here: %s", out);
	}
	cr_assert_eq(st, 0, "upc-trace --probe: exit %d: %s", st, out);
	free(out);
	return trace;
}

#endif
