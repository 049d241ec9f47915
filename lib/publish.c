/* SPDX-License-Identifier: MIT */
/*
 * publish.c - live statistics: the kernel's /proc/vmstat and
 * /proc/<pid>/smaps for a page cache that lives in a process.
 *
 * Each cache keeps a small file, /dev/shm/upcache.<pid>.<n> (stats-shm.h),
 * with its counters, its files' cached, dirty, under-write-back and pinned
 * pages, and (UPC_DEBUG=dirty-backtrace) the stacks that dirtied pages.
 * upcctl stats and upcctl top map it read-only: reading a live process's
 * numbers neither stops it nor asks anything of it.  The reclaim thread,
 * which wakes at least once a second, refreshes it (at most four times a
 * second); the file is created by upc_cache_create() and removed by
 * upc_cache_destroy().  Files left by processes that died are removed when
 * the next cache of any process is created.
 *
 * Under asynchronous tracking the dirty counts are those of the last
 * collection (write-back, msync, upc_stats()): refreshing does not collect,
 * so that looking does not change what is looked at.
 *
 * Nothing here is necessary: when /dev/shm is missing or full, the cache
 * works the same, unpublished.
 */
#include "internal.h"
#include "stats-shm.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PUBLISH_EVERY_MS	250

struct path_cache {
	uint64_t dev, ino;
	char path[256];
};

struct upc_pub {
	char name[64];
	struct upc_shm *shm;
	uint64_t last_ms;
	struct path_cache paths[UPC_SHM_FILES];
	unsigned int npaths;
	struct upc_shm_bt bts[UPC_SHM_BTS];	/* symbolized, reused while the id is unchanged */
	unsigned int nbts;
};

static _Atomic uint32_t cache_no;

static uint64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Remove the files of processes that are gone (killed before upc_cache_destroy). */
static void remove_stale(void)
{
	static _Atomic bool done;
	struct dirent *de;
	DIR *d;

	if (atomic_exchange(&done, true))
		return;
	d = opendir(UPC_SHM_DIR);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[sizeof(UPC_SHM_DIR) + 256 + 1];
		unsigned int n;
		int pid;

		if (sscanf(de->d_name, UPC_SHM_PREFIX "%d.%u", &pid, &n) != 2 || pid <= 0)
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", UPC_SHM_DIR, de->d_name);
		unlink(path);
	}
	closedir(d);
}

/* The path of the file @dev:@ino, found among this process's descriptors (the store keeps one). */
static const char *file_path(struct upc_pub *p, uint64_t dev, uint64_t ino)
{
	struct path_cache *pc = NULL;
	struct dirent *de;
	DIR *d;

	for (unsigned int i = 0; i < p->npaths; i++)
		if (p->paths[i].dev == dev && p->paths[i].ino == ino)
			return p->paths[i].path;
	pc = &p->paths[p->npaths < UPC_SHM_FILES ? p->npaths++ : (ino % UPC_SHM_FILES)];
	pc->dev = dev;
	pc->ino = ino;
	pc->path[0] = '\0';
	d = opendir("/proc/self/fd");
	if (!d)
		return pc->path;
	while ((de = readdir(d))) {
		char link[300];
		struct stat st;
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		if (stat(link, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_dev != dev ||
		    (uint64_t)st.st_ino != ino)
			continue;
		n = readlink(link, pc->path, sizeof(pc->path) - 1);
		pc->path[n > 0 ? n : 0] = '\0';
		break;
	}
	closedir(d);
	return pc->path;
}

void publish_create(struct upc_cache *c)
{
	struct upc_pub *p;
	int fd;

	remove_stale();
	p = calloc(1, sizeof(*p));
	if (!p)
		return;
	snprintf(p->name, sizeof(p->name), "%s/%s%d.%u", UPC_SHM_DIR, UPC_SHM_PREFIX, (int)getpid(),
		 atomic_fetch_add(&cache_no, 1));
	fd = open(p->name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		goto out_free;
	if (sys_ftruncate(fd, sizeof(struct upc_shm)) < 0)	/* no SIGXFSZ under a tiny RLIMIT_FSIZE */
		goto out_unlink;
	p->shm = mmap(NULL, sizeof(struct upc_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p->shm == MAP_FAILED)
		goto out_unlink;
	close(fd);
	/* Not inherited: a forked child must not write its copy of the counters over ours. */
	madvise(p->shm, sizeof(struct upc_shm), MADV_DONTFORK);
	p->shm->magic = UPC_SHM_MAGIC;
	p->shm->version = UPC_SHM_VERSION;
	p->shm->size = sizeof(struct upc_shm);
	p->shm->pid = (int32_t)getpid();
	sscanf(strrchr(p->name, '.') + 1, "%u", &p->shm->cache_no);
	p->shm->created_ms = realtime_ms();
	p->shm->debug = c->debug;
	p->shm->flags = c->flags;
	c->pub = p;
	publish_refresh(c);
	return;
out_unlink:
	close(fd);
	unlink(p->name);
out_free:
	pr_debug("live statistics not published (%s)\n", upc_strerror(-errno));
	free(p);
}

/*
 * Rewrite the file from the cache's state.  Called with no lock held; takes
 * cache->lock, then each file->lock, then mm->lock, one at a time.
 */
void publish_refresh(struct upc_cache *c)
{
	struct upc_pub *p = c->pub;
	struct upc_shm *s;
	struct upc_shm_file files[UPC_SHM_FILES];
	struct upc_shm_bt raw[UPC_SHM_BTS];
	unsigned int nf = 0, nall = 0, nbt;
	struct upc_stats st = { .sz = sizeof(st) };
	unsigned int budget = VISIT_LOCK_MS;
	struct upc_file *head;

	if (!p)
		return;
	s = p->shm;
	st.track_mode = c->track_mode;
	st.mem_limit = c->mem_limit;
	/*
	 * cache->lock across the walk, as upc_stats() does (it is outside
	 * file->lock): an unused file may be released otherwise (cache.c).
	 */
	pthread_mutex_lock(&c->lock);
	head = c->files;
	for (struct upc_file *f = head; f; f = f->next, nall++) {
		struct upc_shm_file fs = { .dev = f->dev, .ino = f->ino };

		/* Not for ever, cache->lock held: as upc_stats() (cache.c); the file is left out. */
		if (file_lock_walk(f, &budget) != 0)
			continue;
		fs.size = (uint64_t)f->size;
		fs.cached = f->nr_cached;
		fs.dirty = f->nr_dirty;
		fs.writeback = f->nr_writeback;
		fs.pinned = f->nr_pinned;
		fs.active = f->nr_active;
		for (struct upc_map *m = f->rmap; m; m = m->f_next)
			fs.mappings += m->mm == &c->self;
		pthread_mutex_unlock(&f->lock);
		st.pages_cached += fs.cached;
		st.pages_dirty += fs.dirty;
		st.pages_writeback += fs.writeback;
		st.pages_pinned += fs.pinned;
		st.pages_active += fs.active;
		/* Keep the most cached files. */
		if (nf < UPC_SHM_FILES) {
			files[nf++] = fs;
		} else {
			unsigned int lo = 0;

			for (unsigned int i = 1; i < nf; i++)
				if (files[i].cached < files[lo].cached)
					lo = i;
			if (fs.cached > files[lo].cached)
				files[lo] = fs;
		}
	}
	pthread_mutex_unlock(&c->lock);
	st.nr_files = (uint32_t)nall;
	stats_counters(c, &st);

	for (unsigned int i = 0; i < nf; i++)
		snprintf(files[i].path, sizeof(files[i].path), "%s", file_path(p, files[i].dev, files[i].ino));
	/* Sort by cached pages, most first (insertion sort: at most 64). */
	for (unsigned int i = 1; i < nf; i++)
		for (unsigned int j = i; j > 0 && files[j].cached > files[j - 1].cached; j--) {
			struct upc_shm_file t = files[j];

			files[j] = files[j - 1];
			files[j - 1] = t;
		}

	/* Backtraces: symbolize each new one once. */
	nbt = (c->debug & UPC_DBG_DIRTY_BT) ? dirty_bt_collect(c, raw, UPC_SHM_BTS) : 0;
	for (unsigned int i = 0; i < nbt; i++) {
		struct upc_shm_bt *old = NULL;

		for (unsigned int j = 0; j < p->nbts; j++)
			if (p->bts[j].id == raw[i].id)
				old = &p->bts[j];
		if (old) {
			memcpy(raw[i].sym, old->sym, sizeof(raw[i].sym));
			continue;
		}
		for (uint32_t k = 0; k < raw[i].nframes; k++)
			dirty_bt_symbolize(raw[i].ips[k], k > 0, raw[i].sym[k], UPC_BT_SYM);
	}
	memcpy(p->bts, raw, nbt * sizeof(raw[0]));
	p->nbts = nbt;

	atomic_fetch_add_explicit(&s->seq, 1, memory_order_acq_rel);	/* odd: writing */
	atomic_thread_fence(memory_order_release);
	s->updated_ms = realtime_ms();
	s->ra_hits = atomic_load(&c->st.ra_hits);
	s->st = st;
	s->nr_files = (uint32_t)nall;
	s->nr_files_listed = nf;
	memcpy(s->files, files, nf * sizeof(files[0]));
	s->nr_bts = nbt;
	memcpy(s->bts, raw, nbt * sizeof(raw[0]));
	atomic_thread_fence(memory_order_release);
	atomic_fetch_add_explicit(&s->seq, 1, memory_order_acq_rel);	/* even: done */
	p->last_ms = now_ms();
}

/* From the reclaim thread's loop, with no lock held: refresh if it is time. */
void publish_tick(struct upc_cache *c)
{
	if (c->pub && now_ms() - c->pub->last_ms >= PUBLISH_EVERY_MS)
		publish_refresh(c);
}

void publish_destroy(struct upc_cache *c)
{
	struct upc_pub *p = c->pub;

	if (!p)
		return;
	unlink(p->name);
	munmap(p->shm, sizeof(struct upc_shm));
	free(p);
	c->pub = NULL;
}
