/* SPDX-License-Identifier: MIT */
/* placement.c: where upcd runs a client's fault handlers, measured at start. */
#ifndef UPCD_PLACEMENT_H
#define UPCD_PLACEMENT_H

#include <stdbool.h>

enum placement_mode {
	PLACE_AUTO,		/* measured at start (placement_probe) */
	PLACE_PER_CPU,		/* one handler pinned to each CPU, as the embedded cache runs them */
	PLACE_ONE,		/* one unpinned handler a client */
};

struct placement {
	enum placement_mode mode;	/* asked for (--fault-handlers) */
	bool one;			/* the outcome: one unpinned handler a client */
	/* PLACE_AUTO: us a page (a MISSING fault and a first write), each placement's median; 0: not measured */
	double per_cpu_us, one_us;
	const char *why;		/* PLACE_AUTO not measured: why */
};

int placement_parse(const char *s, enum placement_mode *mode);
void placement_probe(struct placement *p);
int placement_describe(const struct placement *p, char *buf, int len);

#endif
