/* SPDX-License-Identifier: MIT */
/*
 * log.c - the library never prints on its own (libbpf's libbpf_set_print):
 * messages go to a user-set callback, or to stderr when $UPC_LOG_LEVEL asks.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 2, 0)))
static int stderr_print(enum upc_print_level level, const char *fmt, va_list ap)
{
	static int max = -2;

	if (max == -2) {
		const char *e = getenv("UPC_LOG_LEVEL");

		max = -1;
		if (e && !strcmp(e, "warn"))
			max = UPC_WARN;
		else if (e && !strcmp(e, "info"))
			max = UPC_INFO;
		else if (e && !strcmp(e, "debug"))
			max = UPC_DEBUG;
	}
	if ((int)level > max)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static _Atomic(upc_print_fn_t) print_fn = stderr_print;

UPC_API upc_print_fn_t upc_set_print(upc_print_fn_t fn)
{
	return atomic_exchange(&print_fn, fn);
}

void __upc_pr(enum upc_print_level level, const char *fmt, ...)
{
	upc_print_fn_t fn = atomic_load(&print_fn);
	va_list ap;

	if (!fn)
		return;
	va_start(ap, fmt);
	fn(level, fmt, ap);
	va_end(ap);
}

UPC_API const char *upc_strerror(int err)
{
	const char *s;

	if (err > 0)
		err = -err;
	if (err == 0)
		return "Success";
	s = strerrordesc_np(-err);
	return s ? s : "Unknown error";
}
