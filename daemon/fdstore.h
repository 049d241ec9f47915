/* SPDX-License-Identifier: MIT */
/* fdstore.c: systemd's file descriptor store, a keeper that is no process. */
#ifndef UPCD_FDSTORE_H
#define UPCD_FDSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct upc_file;

/* What is handed back after a crash, by a keeper or by systemd's store: a file and its two memfds. */
struct kept {
	uint64_t key;			/* the data memfd's inode number */
	int fd, memfd, statefd;
};

int fdstore_start(size_t max);
int fdstore_take(int fd, const char *name);
bool fdstore_handed(void);
int fdstore_take_all(struct kept **out, size_t *n);
void fdstore_leave(uint64_t key);
void fdstore_keep(struct upc_file *f, uint64_t key, int fd);
void fdstore_forget(uint64_t key);
void fdstore_bye(void);

#endif
