/* SPDX-License-Identifier: MIT */
/* keeper.c: the process that keeps a dead daemon's cache. */
#ifndef UPCD_KEEPER_H
#define UPCD_KEEPER_H

#include <stddef.h>

#include "fdstore.h"	/* struct kept; the keeper tells systemd's store what it keeps */

struct upc_cache;

int keeper_run(const char *path);
int keeper_takeover(struct upc_cache *c, const char *kpath, struct kept **out, size_t *n);
int keeper_start(struct upc_cache *c, const char *kpath);
int keeper_adopt(struct upc_cache *c, struct kept *k, size_t n);
void keeper_adopt_wait(void);
void keeper_bye(void);
void keeper_hooks(struct upc_cache *c);
void keeper_merge(struct kept **k, size_t *n, struct kept *more, size_t nmore);

#endif
