/* SPDX-License-Identifier: MIT */
/*
 * upc-demo - map a real file through an embedded upcache, read it, write
 * it, msync it, and show what the cache did at each step.
 *
 *   upc-demo [FILE]     (default: a new 8 MiB file in $TMPDIR)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <upcache.h>

#define DIE(what, err) do { fprintf(stderr, "upc-demo: %s: %s\n", what, upc_strerror(err)); exit(1); } while (0)

static void show(struct upc_cache *c, const char *step)
{
	struct upc_stats st = { .sz = sizeof(st) };

	upc_stats(c, &st);
	printf("%-34s cached %6" PRIu64 "  dirty %5" PRIu64 "  missing-faults %4" PRIu64
	       "  wp-faults %4" PRIu64 "  read-ios %4" PRIu64 "  largest-window %3" PRIu64
	       "  written %5" PRIu64 " pages in %3" PRIu64 " ios, wp-calls %" PRIu64 "\n",
	       step, st.pages_cached, st.pages_dirty, st.faults_missing, st.faults_wp, st.fill_ios,
	       st.ra_max_window, st.pages_written, st.wb_ios, st.wp_calls);
}

int main(int argc, char **argv)
{
	const size_t size = 8 << 20;
	char path[] = "/tmp/upc-demo.XXXXXX";
	const char *file = argc > 1 ? argv[1] : NULL;
	struct upc_cache *c;
	unsigned char *p;
	uint64_t sum = 0;
	char buf[48];
	int fd, ret;

	if (file) {
		fd = open(file, O_RDWR);
	} else {
		char *pattern = malloc(size);

		fd = mkstemp(path);
		if (fd < 0 || !pattern)
			DIE("mkstemp", -12);
		for (size_t i = 0; i < size; i++)
			pattern[i] = (char)(i * 7 + i / 4096);
		if (pwrite(fd, pattern, size, 0) != (ssize_t)size)
			DIE("pwrite", -5);
		free(pattern);
		file = path;
	}
	if (fd < 0)
		DIE(file, -2);
	UPC_OPTS(upc_cache_opts, opts, .flags = UPC_CACHE_NO_BGWB);
	ret = upc_cache_create(&opts, &c);
	if (ret < 0)
		DIE("upc_cache_create", ret);
	printf("upcache demo on %s: an embedded cache, synchronous write-protect tracking\n\n", file);
	off_t fsize = lseek(fd, 0, SEEK_END);
	size_t len = (size_t)fsize;
	ret = upc_map(c, fd, 0, len, PROT_READ | PROT_WRITE, 0, (void **)&p);
	if (ret < 0)
		DIE("upc_map", ret);
	show(c, "mapped");

	for (size_t i = 0; i < len; i += 4096)
		sum += p[i];
	show(c, "read every page (sequential)");
	for (size_t i = 0; i < len; i += 4096)
		sum += p[i];
	show(c, "read again (kernel-served, no trap)");

	for (size_t i = 0; i < len; i += 64 * 4096) {
		snprintf(buf, sizeof(buf), "upcache was here %zu", i / 4096);
		memcpy(p + i, buf, strlen(buf) + 1);
	}
	show(c, "wrote every 64th page");

	ret = upc_msync(c, p, len, UPC_MS_SYNC);
	if (ret < 0)
		DIE("upc_msync", ret);
	show(c, "upc_msync(UPC_MS_SYNC)");

	memset(buf, 0, sizeof(buf));
	if (pread(fd, buf, sizeof(buf) - 1, 64 * 4096) < 0)
		DIE("pread", -5);
	printf("\npread() of page 64 behind the cache's back: \"%s\"\n", buf);
	printf("checksum of first bytes: %" PRIu64 "\n", sum);

	ret = upc_unmap(c, p, len);
	if (ret < 0)
		DIE("upc_unmap", ret);
	ret = upc_cache_destroy(c);
	if (ret < 0)
		DIE("upc_cache_destroy", ret);
	close(fd);
	if (argc <= 1)
		unlink(path);
	return strncmp(buf, "upcache was here 64", 19) != 0;
}
