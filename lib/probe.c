/* SPDX-License-Identifier: MIT */
/*
 * probe.c - which kernel features are there (libbpf's features.c): probed
 * lazily, once per process, and cached.  ENOSYS, EPERM, EINVAL and ENOTTY
 * from a probe mean "absent", never an error.
 */
#include "internal.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static uint64_t probed;
static uint64_t probed_uffd_features;

static bool probe_register(uint64_t api_features, uint64_t mode)
{
	bool ok = false;
	int uffd, mfd;
	void *p;

	uffd = sys_uffd_open(api_features, NULL, NULL);
	if (uffd < 0)
		return false;
	mfd = sys_memfd("upcache-probe", false);
	if (mfd < 0)
		goto out_uffd;
	if (sys_ftruncate(mfd, UPC_PAGE_SIZE) < 0)
		goto out_mfd;
	p = mmap(NULL, UPC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED)
		goto out_mfd;
	ok = sys_uffd_register(uffd, (uintptr_t)p, UPC_PAGE_SIZE, mode) == 0;
	munmap(p, UPC_PAGE_SIZE);
out_mfd:
	close(mfd);
out_uffd:
	close(uffd);
	return ok;
}

static bool probe_dev_path(void)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC), fd;

	if (dev < 0)
		return false;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	close(dev);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static bool probe_pagemap_scan(void)
{
	struct page_region r;
	struct pm_scan_arg arg;
	char *p;
	int fd, ret;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	p = mmap(NULL, UPC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		close(fd);
		return false;
	}
	p[0] = 1;
	arg = (struct pm_scan_arg){
		.size = sizeof(arg),
		.start = (uintptr_t)p,
		.end = (uintptr_t)p + UPC_PAGE_SIZE,
		.vec = (uintptr_t)&r,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	ret = ioctl(fd, PAGEMAP_SCAN, &arg);
	munmap(p, UPC_PAGE_SIZE);
	close(fd);
	return ret == 1;
}

static void probe_all(void)
{
	uint64_t f = 0, feats = 0;
	struct io_uring ring;
	int path = 0, fd;

	fd = sys_uffd_open(0, &feats, &path);
	if (fd >= 0) {
		close(fd);
		f |= path;
		/* Report every access path that works, not only the first one tried. */
		if (probe_dev_path())
			f |= UPC_FEAT_UFFD_DEV;
		probed_uffd_features = feats;
		if (probe_register(0, UFFDIO_REGISTER_MODE_MISSING))
			f |= UPC_FEAT_MISSING_SHMEM;
		if ((feats & UFFD_FEATURE_MINOR_SHMEM) &&
		    probe_register(UFFD_FEATURE_MINOR_SHMEM, UFFDIO_REGISTER_MODE_MINOR))
			f |= UPC_FEAT_MINOR_SHMEM;
		if ((feats & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) &&
		    probe_register(UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
				   UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP))
			f |= UPC_FEAT_WP_SHMEM | UPC_FEAT_COPY_WP;
		if (feats & UFFD_FEATURE_WP_UNPOPULATED)
			f |= UPC_FEAT_WP_UNPOPULATED;
		if (feats & UFFD_FEATURE_WP_ASYNC)
			f |= UPC_FEAT_WP_ASYNC;
		if (feats & UFFD_FEATURE_POISON)
			f |= UPC_FEAT_POISON;
		if (feats & UFFD_FEATURE_SIGBUS)
			f |= UPC_FEAT_SIGBUS;
		/* Usable only with CAP_SYS_PTRACE: ask for it, don't trust the list. */
		if (feats & UFFD_FEATURE_EVENT_FORK) {
			fd = sys_uffd_open(UFFD_FEATURE_EVENT_FORK, NULL, NULL);
			if (fd >= 0) {
				close(fd);
				f |= UPC_FEAT_EVENT_FORK;
			}
		}
	}
	if (probe_pagemap_scan())
		f |= UPC_FEAT_PAGEMAP_SCAN;
	/* EBADF for pidfd -1 means the syscall exists. */
	if (syscall(SYS_process_madvise, -1, NULL, 0, MADV_COLD, 0) < 0 && errno == EBADF)
		f |= UPC_FEAT_PROCESS_MADVISE;
	if (io_uring_queue_init(2, &ring, 0) == 0) {
		io_uring_queue_exit(&ring);
		f |= UPC_FEAT_IO_URING;
	}
	probed = f;
}

UPC_API uint64_t upc_probe(void)
{
	pthread_once(&probe_once, probe_all);
	return probed;
}

uint64_t __upc_uffd_features(void)
{
	pthread_once(&probe_once, probe_all);
	return probed_uffd_features;
}

static const char *const feat_names[] = {
	"uffd-syscall", "uffd-dev", "uffd-user-mode-only", "missing-shmem",
	"minor-shmem", "wp-shmem", "wp-unpopulated", "wp-async", "pagemap-scan",
	"poison", "process-madvise", "io-uring", "sigbus", "event-fork", "copy-wp",
};

UPC_API const char *upc_feature_name(uint64_t bit)
{
	for (unsigned int i = 0; i < ARRAY_SIZE(feat_names); i++)
		if (bit == (1ull << i))
			return feat_names[i];
	return NULL;
}
