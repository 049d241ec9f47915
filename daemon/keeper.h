/* SPDX-License-Identifier: MIT */
/* keeper.c: the process that keeps a dead daemon's cache. */
#ifndef UPCD_KEEPER_H
#define UPCD_KEEPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct upc_cache;

/* What an earlier daemon's keeper handed over: a file and its two memfds. */
struct kept {
	uint64_t key;			/* the data memfd's inode number */
	int fd, memfd, statefd;
};

int keeper_run(const char *path);
int keeper_takeover(struct upc_cache *c, const char *kpath, struct kept **out, size_t *n);
int keeper_start(struct upc_cache *c, const char *kpath);
int keeper_adopt(struct upc_cache *c, struct kept *k, size_t n);
void keeper_adopt_wait(void);
void keeper_bye(void);
void keeper_hooks(struct upc_cache *c);
void keeper_merge(struct kept **k, size_t *n, struct kept *more, size_t nmore);

/* fdstore.c: systemd's file descriptor store, a keeper that is no process */
struct upc_file;
int fdstore_start(size_t max);
int fdstore_take(int fd, const char *name);
bool fdstore_handed(void);
int fdstore_take_all(struct kept **out, size_t *n);
void fdstore_leave(uint64_t key);
void fdstore_keep(struct upc_file *f, uint64_t key, int fd);
void fdstore_forget(uint64_t key);
void fdstore_bye(void);

#endif
