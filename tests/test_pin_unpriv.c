/* SPDX-License-Identifier: MIT */
/*
 * Pins as an unprivileged process, where userfaultfd is UFFD_USER_MODE_ONLY
 * (vm.unprivileged_userfaultfd=0 and no access to /dev/userfaultfd): the
 * kernel's own accesses to a mapping (read(2) into it, write(2) from it)
 * cannot be served by the fault handler there, and pinning is how they are
 * made safe (upcache.h).  So upc_pin must succeed without taking a fault in
 * kernel mode itself, and the pinned range must then take kernel reads and
 * writes, across write-back too.
 */
#include "helpers.h"

#include <sys/mman.h>

#define SYSCTL_UFFD "/proc/sys/vm/unprivileged_userfaultfd"

/* The source file's byte at @off: unlike pat(), so a copy shows. */
static unsigned char src_pat(uint64_t off)
{
	return (unsigned char)((off * 13 + 5) ^ 0x3c);
}

struct files {
	char path[64];		/* the mapped file, 16 pages of pat() */
	char src[64];		/* 16 pages of src_pat(), read into pinned ranges */
};

static int pin_kernel_access(void *arg)
{
	const struct files *fl = arg;
	uint64_t feat = upc_probe();
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_cache *c;
	unsigned char buf[4 * PAGE], *p, *r, *q, x;
	int fd, rfd, src, out, ret;
	struct upc_stats st = { .sz = sizeof(st) };

	if (!(feat & UPC_FEAT_USER_MODE_ONLY) || (feat & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV)))
		nobody_skip("userfaultfd is not (only) UFFD_USER_MODE_ONLY for this user (%s%s%s)",
			    feat & UPC_FEAT_UFFD_SYSCALL ? "the syscall works " : "",
			    feat & UPC_FEAT_UFFD_DEV ? "/dev/userfaultfd is accessible " : "",
			    feat & UPC_FEAT_USER_MODE_ONLY ? "" : "no user-mode-only userfaultfd");
	c = nobody_cache(&o);
	fd = open(fl->path, O_RDWR);
	rfd = open(fl->path, O_RDONLY);
	src = open(fl->src, O_RDONLY);
	out = memfd_create("upc-test-out", 0);
	nobody_check(fd >= 0 && rfd >= 0 && src >= 0 && out >= 0, "open: %s", strerror(errno));
	ret = upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p);
	nobody_check(ret == 0, "upc_map: %s", upc_strerror(ret));

	/* A read pin: the kernel reads from the range (write(2) from it). */
	ret = upc_pin(c, p, 4 * PAGE, 0);
	nobody_check(ret == 0, "upc_pin: %s", upc_strerror(ret));
	nobody_check(write(out, p, 4 * PAGE) == 4 * PAGE, "write(2) from a pinned range: %s", strerror(errno));
	nobody_check(pread(out, buf, 4 * PAGE, 0) == 4 * PAGE, "pread");
	for (size_t i = 0; i < 4 * PAGE; i++)
		nobody_check(buf[i] == pat(i), "write(2) from the pin: byte %zu is %#x, not %#x", i, buf[i], pat(i));

	/* A write pin: the kernel writes into the range (read(2) into it). */
	ret = upc_pin(c, p + 4 * PAGE, 4 * PAGE, UPC_PIN_WRITE);
	nobody_check(ret == 0, "upc_pin(UPC_PIN_WRITE): %s", upc_strerror(ret));
	nobody_check(pread(src, p + 4 * PAGE, 4 * PAGE, 0) == 4 * PAGE, "pread(2) into a write pin: %s",
		     strerror(errno));
	for (size_t i = 0; i < 4 * PAGE; i++)
		nobody_check(p[4 * PAGE + i] == src_pat(i), "pread into the pin: byte %zu wrong", i);
	p[10 * PAGE + 1] = 0x77;	/* and a user-mode write elsewhere */
	ret = upc_msync(c, p, 16 * PAGE, UPC_MS_SYNC);
	nobody_check(ret == 0, "upc_msync: %s", upc_strerror(ret));
	nobody_check(pread(fd, buf, 4 * PAGE, 4 * PAGE) == 4 * PAGE, "pread");
	for (size_t i = 0; i < 4 * PAGE; i++)
		nobody_check(buf[i] == src_pat(i), "the file's byte %zu (page 4) is not the pinned write's",
			     4 * PAGE + i);
	nobody_check(pread(fd, &x, 1, 10 * PAGE + 1) == 1 && x == 0x77, "page 10 not written back");

	/* Still writable by the kernel after write-back. */
	nobody_check(pread(src, p + 4 * PAGE, 4 * PAGE, 8 * PAGE) == 4 * PAGE,
		     "pread(2) into a write pin after upc_msync: %s", strerror(errno));
	ret = upc_unpin(c, p, 8 * PAGE);
	nobody_check(ret == 0, "upc_unpin: %s", upc_strerror(ret));
	ret = upc_msync(c, p, 16 * PAGE, UPC_MS_SYNC);
	nobody_check(ret == 0, "upc_msync: %s", upc_strerror(ret));
	nobody_check(pread(fd, buf, 4 * PAGE, 4 * PAGE) == 4 * PAGE, "pread");
	for (size_t i = 0; i < 4 * PAGE; i++)
		nobody_check(buf[i] == src_pat(8 * PAGE + i), "the second pinned write: byte %zu wrong",
			     4 * PAGE + i);

	/* A read-only mapping of pages not cached yet. */
	ret = upc_map(c, rfd, 0, 16 * PAGE, PROT_READ, 0, (void **)&r);
	nobody_check(ret == 0, "upc_map: %s", upc_strerror(ret));
	ret = upc_pin(c, r + 12 * PAGE, 2 * PAGE, 0);
	nobody_check(ret == 0, "upc_pin of a read-only mapping: %s", upc_strerror(ret));
	nobody_check(pwrite(out, r + 12 * PAGE, 2 * PAGE, 0) == 2 * PAGE, "write(2) from a read-only pin: %s",
		     strerror(errno));
	nobody_check(pread(out, buf, 2 * PAGE, 0) == 2 * PAGE, "pread");
	for (size_t i = 0; i < 2 * PAGE; i++)
		nobody_check(buf[i] == pat(12 * PAGE + i), "write(2) from the read-only pin: byte %zu wrong", i);
	ret = upc_unpin(c, r + 12 * PAGE, 2 * PAGE);
	nobody_check(ret == 0, "upc_unpin: %s", upc_strerror(ret));

	/* Beyond end of file: -EFAULT, nothing pinned, no SIGBUS. */
	ret = upc_map(c, fd, 0, 20 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&q);
	nobody_check(ret == 0, "upc_map: %s", upc_strerror(ret));
	ret = upc_pin(c, q + 14 * PAGE, 4 * PAGE, UPC_PIN_WRITE);
	nobody_check(ret == -EFAULT, "upc_pin across end of file: %s, not -EFAULT", upc_strerror(ret));
	ret = upc_pin(c, q + 16 * PAGE, PAGE, 0);
	nobody_check(ret == -EFAULT, "upc_pin beyond end of file: %s, not -EFAULT", upc_strerror(ret));
	upc_stats(c, &st);
	nobody_check(st.pages_pinned == 0, "%llu pages pinned after failed pins",
		     (unsigned long long)st.pages_pinned);
	ret = upc_cache_destroy(c);
	nobody_check(ret == 0, "upc_cache_destroy: %s", upc_strerror(ret));
	close(fd);
	close(rfd);
	close(src);
	close(out);
	return 0;
}

/* A page the store cannot read: a clean error, nothing pinned, never SIGBUS. */
static int pin_read_error(void *arg)
{
	const struct files *fl = arg;
	UPC_OPTS(upc_cache_opts, o, .flags = UPC_CACHE_NO_BGWB);
	struct upc_stats st = { .sz = sizeof(st) };
	struct upc_store *s;
	struct upc_cache *c;
	unsigned char *p;
	int fd, ret;

	if (upc_probe() & (UPC_FEAT_UFFD_SYSCALL | UPC_FEAT_UFFD_DEV))
		nobody_skip("userfaultfd is not only UFFD_USER_MODE_ONLY for this user");
	ret = upc_store_inject_create(NULL, &s);
	nobody_check(ret == 0, "upc_store_inject_create: %s", upc_strerror(ret));
	o.store = s;
	c = nobody_cache(&o);
	ret = upc_store_inject_add(s, UPC_IO_READ, 9 * PAGE, PAGE, UPC_INJECT_ERROR, EIO, -1);
	nobody_check(ret == 0, "upc_store_inject_add: %s", upc_strerror(ret));
	fd = open(fl->path, O_RDWR);
	nobody_check(fd >= 0, "open: %s", strerror(errno));
	ret = upc_map(c, fd, 0, 16 * PAGE, PROT_READ | PROT_WRITE, 0, (void **)&p);
	nobody_check(ret == 0, "upc_map: %s", upc_strerror(ret));
	ret = upc_pin(c, p, 16 * PAGE, 0);
	nobody_check(ret == -EFAULT || ret == -EIO, "upc_pin over a read error: %s", upc_strerror(ret));
	ret = upc_pin(c, p + 8 * PAGE, 4 * PAGE, UPC_PIN_WRITE);
	nobody_check(ret == -EFAULT || ret == -EIO, "upc_pin(WRITE) over a read error: %s", upc_strerror(ret));
	upc_stats(c, &st);
	nobody_check(st.pages_pinned == 0, "%llu pages pinned after failed pins",
		     (unsigned long long)st.pages_pinned);
	ret = upc_pin(c, p, 8 * PAGE, 0);
	nobody_check(ret == 0, "upc_pin of readable pages: %s", upc_strerror(ret));
	ret = upc_cache_destroy(c);
	nobody_check(ret == 0, "upc_cache_destroy: %s", upc_strerror(ret));
	upc_store_destroy(s);
	close(fd);
	return 0;
}

static struct files files_new(void)
{
	struct files fl;
	unsigned char buf[16 * PAGE];
	int fd = tmpfile_pattern(16 * PAGE, fl.path), sfd;

	close(fd);
	strcpy(fl.src, "/var/tmp/upc-test.XXXXXX");
	sfd = mkstemp(fl.src);
	cr_assert_geq(sfd, 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = src_pat(i);
	cr_assert_eq(pwrite(sfd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	close(sfd);
	/* Made by root before the drop: uid 65534 may read and write them. */
	cr_assert_eq(chmod(fl.path, 0666), 0);
	cr_assert_eq(chmod(fl.src, 0644), 0);
	return fl;
}

/*
 * Run @fn as uid 65534 with vm.unprivileged_userfaultfd=0, which makes
 * userfaultfd(2) refuse it (without UFFD_USER_MODE_ONLY), and put the
 * sysctl back before judging.
 */
static void as_nobody_user_mode_only(int (*fn)(void *))
{
	struct files fl = files_new();
	char msg[1024], old = 0;
	int status, sfd;

	sfd = open(SYSCTL_UFFD, O_RDWR);
	if (sfd < 0 || pread(sfd, &old, 1, 0) != 1)
		cr_skip_test("cannot read %s: %s", SYSCTL_UFFD, strerror(errno));
	if (old != '0' && pwrite(sfd, "0", 1, 0) != 1)
		cr_skip_test("cannot set %s to 0: %s", SYSCTL_UFFD, strerror(errno));
	status = run_as_nobody(fn, &fl, msg, sizeof(msg));
	if (old != '0')
		cr_assert_eq(pwrite(sfd, &old, 1, 0), 1, "cannot restore %s", SYSCTL_UFFD);
	close(sfd);
	unlink(fl.path);
	unlink(fl.src);
	nobody_report(status, msg);
}

Test(pin_unpriv, pinned_ranges_take_kernel_reads_and_writes, .timeout = 120)
{
	as_nobody_user_mode_only(pin_kernel_access);
}

Test(pin_unpriv, a_read_error_while_pinning_is_an_error_not_sigbus, .timeout = 60)
{
	as_nobody_user_mode_only(pin_read_error);
}
