/* SPDX-License-Identifier: MIT */
/*
 * map.c - mappings: the kernel's VMAs, the per-file rmap (i_mmap) and the
 * per-process mm.
 *
 * A mapping is an mmap(MAP_SHARED) of the file's memfd at the file offset,
 * registered with its mm's userfaultfd for MISSING faults (a page that is
 * not cached) and write-protect faults (the first write to a clean page).
 * The whole range is write-protected before its address is returned, which
 * with UFFD_FEATURE_WP_UNPOPULATED leaves a uffd-wp marker in every empty
 * PTE: a read the kernel serves itself then maps the page read-only, and the
 * first write traps.  That is the invariant the rest of the engine relies
 * on: a page that is clean is write-protected in every mapping of it.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

int mm_init(struct upc_cache *c, struct upc_mm *mm)
{
	int ret;

	memset(mm, 0, sizeof(*mm));
	mm->cache = c;
	mm->uffd = mm->pagemap_fd = mm->stop_efd = -1;
	pthread_rwlock_init(&mm->lock, NULL);
	mm->pid = getpid();
	ret = sys_uffd_open(c->uffd_features, NULL, NULL);
	if (ret < 0)
		goto err;
	mm->uffd = ret;
	mm->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	mm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mm->stop_efd < 0) {
		ret = -errno;
		goto err;
	}
	mm->bounce = mmap(NULL, (size_t)c->ra_max * UPC_PAGE_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mm->bounce == MAP_FAILED) {
		mm->bounce = NULL;
		ret = -ENOMEM;
		goto err;
	}
	return 0;
err:
	mm_fini(mm);
	return ret;
}

void mm_fini(struct upc_mm *mm)
{
	if (mm->bounce)
		munmap(mm->bounce, (size_t)mm->cache->ra_max * UPC_PAGE_SIZE);
	if (mm->uffd >= 0)
		close(mm->uffd);
	if (mm->pagemap_fd >= 0)
		close(mm->pagemap_fd);
	if (mm->stop_efd >= 0)
		close(mm->stop_efd);
	free(mm->maps);
	mm->maps = NULL;
	mm->uffd = mm->pagemap_fd = mm->stop_efd = -1;
	pthread_rwlock_destroy(&mm->lock);
}

/* Index of the first mapping whose end is above @addr.  Caller holds mm->lock. */
static size_t mm_search(struct upc_mm *mm, uintptr_t addr)
{
	size_t lo = 0, hi = mm->nmaps;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (mm->maps[mid]->end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct upc_map *mm_find(struct upc_mm *mm, uintptr_t addr)
{
	size_t i = mm_search(mm, addr);

	if (i < mm->nmaps && mm->maps[i]->start <= addr)
		return mm->maps[i];
	return NULL;
}

static int mm_insert(struct upc_mm *mm, struct upc_map *m)
{
	size_t i;

	if (mm->nmaps == mm->cap) {
		size_t cap = mm->cap ? mm->cap * 2 : 16;
		struct upc_map **n = realloc(mm->maps, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		mm->maps = n;
		mm->cap = cap;
	}
	i = mm_search(mm, m->start);
	memmove(&mm->maps[i + 1], &mm->maps[i], (mm->nmaps - i) * sizeof(*mm->maps));
	mm->maps[i] = m;
	mm->nmaps++;
	return 0;
}

static void mm_remove(struct upc_mm *mm, struct upc_map *m)
{
	size_t i = mm_search(mm, m->start);

	memmove(&mm->maps[i], &mm->maps[i + 1], (mm->nmaps - i - 1) * sizeof(*mm->maps));
	mm->nmaps--;
}

static void rmap_add(struct upc_file *f, struct upc_map *m)
{
	m->f_prev = NULL;
	m->f_next = f->rmap;
	if (f->rmap)
		f->rmap->f_prev = m;
	f->rmap = m;
}

static void rmap_del(struct upc_file *f, struct upc_map *m)
{
	if (m->f_prev)
		m->f_prev->f_next = m->f_next;
	else
		f->rmap = m->f_next;
	if (m->f_next)
		m->f_next->f_prev = m->f_prev;
}

UPC_API int upc_map(struct upc_cache *c, int fd, off_t offset, size_t length, int prot,
		    unsigned int flags, void **addrp)
{
	struct upc_mm *mm;
	struct upc_file *f;
	struct upc_map *m;
	size_t len;
	void *addr;
	int acc, ret;

	if (!c || !addrp || !length || offset < 0 || (offset & (UPC_PAGE_SIZE - 1)) ||
	    (prot & ~(PROT_READ | PROT_WRITE)) || (flags & ~UPC_MAP_FLAGS_ALL))
		return -EINVAL;
	len = pg_round_up(length);
	if (len < length || (uint64_t)offset + len > (uint64_t)INT64_MAX)
		return -EOVERFLOW;
	acc = fcntl(fd, F_GETFL);
	if (acc < 0)
		return -EBADF;
	acc &= O_ACCMODE;
	if (acc == O_WRONLY || ((prot & PROT_WRITE) && acc != O_RDWR))
		return -EACCES;
	if (prot & PROT_WRITE)
		prot |= PROT_READ;	/* as on x86: write implies read */

	ret = file_get(c, fd, &f);
	if (ret < 0)
		return ret;
	if ((uint64_t)offset + len > f->base_len) {
		ret = -EFBIG;
		goto out_put;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		ret = -ENOMEM;
		goto out_put;
	}
	mm = &c->self;
	addr = mmap(NULL, len, prot, MAP_SHARED, f->memfd, offset);
	if (addr == MAP_FAILED) {
		ret = -ENOMEM;
		goto out_free;
	}
	m->mm = mm;
	m->file = f;
	m->start = (uintptr_t)addr;
	m->end = m->start + len;
	m->pgoff = (uint64_t)offset >> UPC_PAGE_SHIFT;
	m->prot = prot;

	/*
	 * Register and protect before anyone can know the address: until the
	 * range is protected, a read would map cached pages writable behind
	 * the engine's back.
	 */
	ret = sys_uffd_register(mm->uffd, m->start, len,
				UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	if (ret < 0)
		goto out_unmap;
	ret = sys_uffd_wp(mm->uffd, m->start, len, true, false);
	if (ret < 0)
		goto out_unmap;
	/*
	 * A child inherits a mapping without the userfaultfd registration
	 * (no UFFD_EVENT_FORK here): its read of an uncached page would
	 * allocate a zero page in the shared memfd, which every mapping then
	 * sees as the file's data.  So children do not inherit mappings: they
	 * get SIGSEGV, never wrong data.
	 */
	if (madvise(addr, len, MADV_DONTFORK) < 0) {
		ret = -errno;
		goto out_unmap;
	}

	pthread_rwlock_wrlock(&mm->lock);
	pthread_mutex_lock(&f->lock);
	m->err_seen = f->err_seq;
	ret = mm_insert(mm, m);
	if (ret == 0)
		rmap_add(f, m);
	pthread_mutex_unlock(&f->lock);
	pthread_rwlock_unlock(&mm->lock);
	if (ret < 0)
		goto out_unmap;

	if (flags & UPC_MAP_POPULATE)
		fault_populate(m);
	*addrp = addr;
	return 0;

out_unmap:
	munmap(addr, len);
out_free:
	free(m);
out_put:
	file_put(f);
	return ret;
}

/*
 * Unmapping keeps the dirty state (I5, seed 002, Piggin: "the last unmapper
 * transfers dirty").  In synchronous tracking a page is marked dirty in its
 * descriptor before any mapping can write it, so the PTEs torn down here
 * carry no state the descriptor lacks; munmap runs under file->lock so that
 * a write-back protecting this range never acts on a reused address.
 */
UPC_API int upc_unmap(struct upc_cache *c, void *addr, size_t length)
{
	uintptr_t start = (uintptr_t)addr, end;
	struct upc_mm *mm;
	struct upc_map *m, *m2 = NULL;
	struct upc_file *f;
	bool whole = false;
	int ret = 0;

	if (!c || !length || (start & (UPC_PAGE_SIZE - 1)))
		return -EINVAL;
	end = start + pg_round_up(length);
	if (end <= start)
		return -EINVAL;
	mm = &c->self;
	pthread_rwlock_wrlock(&mm->lock);
	m = mm_find(mm, start);
	if (!m || end > m->end) {
		ret = -EINVAL;
		goto out;
	}
	f = m->file;
	if (start > m->start && end < m->end) {
		m2 = calloc(1, sizeof(*m2));
		if (!m2) {
			ret = -ENOMEM;
			goto out;
		}
	}
	pthread_mutex_lock(&f->lock);
	munmap((void *)start, end - start);
	if (start == m->start && end == m->end) {
		rmap_del(f, m);
		mm_remove(mm, m);
		whole = true;
	} else if (start == m->start) {
		m->pgoff += (end - m->start) >> UPC_PAGE_SHIFT;
		m->start = end;
	} else if (end == m->end) {
		m->end = start;
	} else {
		*m2 = *m;
		m2->start = end;
		m2->pgoff = m->pgoff + ((end - m->start) >> UPC_PAGE_SHIFT);
		m->end = start;
		ret = mm_insert(mm, m2);
		if (ret == 0) {
			rmap_add(f, m2);
			pthread_mutex_lock(&c->lock);
			f->refs++;
			pthread_mutex_unlock(&c->lock);
			m2 = NULL;
		}
	}
	pthread_mutex_unlock(&f->lock);
out:
	pthread_rwlock_unlock(&mm->lock);
	free(m2);
	if (whole) {
		file_put(m->file);
		free(m);
	}
	return ret;
}

void map_destroy_all(struct upc_cache *c)
{
	struct upc_mm *mm = &c->self;

	pthread_rwlock_wrlock(&mm->lock);
	while (mm->nmaps) {
		struct upc_map *m = mm->maps[mm->nmaps - 1];
		struct upc_file *f = m->file;

		pthread_mutex_lock(&f->lock);
		munmap((void *)m->start, m->end - m->start);
		rmap_del(f, m);
		pthread_mutex_unlock(&f->lock);
		mm->nmaps--;
		file_put(f);
		free(m);
	}
	pthread_rwlock_unlock(&mm->lock);
}
