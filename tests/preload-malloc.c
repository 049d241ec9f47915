/* SPDX-License-Identifier: MIT */
/*
 * preload-malloc - a program that interposes malloc itself (as jemalloc,
 * tcmalloc and debugging allocators do), with an allocator that maps
 * anonymous memory and writes to a descriptor: the shim's dlsym() during
 * start-up calls it, and it calls the shim's mmap and write.  Then it maps
 * FILE and checks a write through the map is seen by pread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char *arena, *next;
static size_t left;
static atomic_int calls;
static atomic_flag busy = ATOMIC_FLAG_INIT;	/* the library's threads allocate too */

void *malloc(size_t n)
{
	void *p;

	if (atomic_fetch_add(&calls, 1) == 0)
		(void)!write(2, "", 0);		/* a write from inside the first allocation */
	while (atomic_flag_test_and_set(&busy))
		;
	n = (n + 15) & ~(size_t)15;
	if (n > left) {
		size_t sz = n > (1 << 20) ? n : (1 << 20);

		arena = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (arena == MAP_FAILED) {
			atomic_flag_clear(&busy);
			return NULL;
		}
		next = arena;
		left = sz;
	}
	p = next;
	next += n;
	left -= n;
	atomic_flag_clear(&busy);
	return p;
}

void free(void *p)
{
}

void *calloc(size_t a, size_t b)
{
	void *p = malloc(a * b);

	/* a byte loop: gcc would make malloc+memset a call of calloc, this one */
	for (volatile char *q = p; q && q < (char *)p + a * b; q++)
		*q = 0;
	return p;
}

void *realloc(void *old, size_t n)
{
	void *p = malloc(n);

	if (p && old)
		memcpy(p, old, n);	/* bump allocator: the old block is at least as readable */
	return p;
}

int main(int argc, char **argv)
{
	int fd = argc > 1 ? open(argv[1], O_RDWR) : -1;
	char *p, buf[8];

	if (fd < 0)
		return 2;
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 3;
	memcpy(p, "malloced", 8);
	if (pread(fd, buf, 8, 0) != 8 || memcmp(buf, "malloced", 8))
		return 4;
	printf("malloc calls: %d\n", atomic_load(&calls));
	return 0;
}
