/*
 * Does io-wq serialize IORING_OP_FALLOCATE punches of one inode?  A thread
 * holds a memfd's inode lock (write(2) into it from a page whose
 * userfaultfd fault is left waiting); twenty punches of that memfd are
 * submitted, then one punch of each of eight other memfds.
 *
 *   gcc -O2 -o iowq iowq.c -luring -lpthread && ./iowq
 *
 * On Linux 6.18, 2 vCPUs (2026-12-04): none of the eight other punches
 * completed in 3 s, and all eight bounded io-wq workers (4 a CPU) sat in
 * shmem_fallocate on the held inode; every punch completed once the lock
 * was let go (UFFDIO_ZEROPAGE), at 3.04 s.  Hence one IOSQE_IO_HARDLINK
 * chain a file in lib/pagecache/reclaim.c.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static int mfd; static char *buf;
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9;}
static void *writer(void *a) { (void)a; ssize_t r = write(mfd, buf, 4096); fprintf(stderr, "write returned %zd\n", r); return NULL; }
int main(void) {
  mfd = memfd_create("x", 0); ftruncate(mfd, 1 << 20);
  int m2[8]; for (int i=0;i<8;i++){ m2[i] = memfd_create("y", 0); ftruncate(m2[i], 1<<20); pwrite(m2[i], "abc", 3, 0);}
  int u = syscall(SYS_userfaultfd, O_CLOEXEC);
  struct uffdio_api api = { .api = UFFD_API }; ioctl(u, UFFDIO_API, &api);
  buf = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  struct uffdio_register reg = { .range = { (unsigned long)buf, 4096 }, .mode = UFFDIO_REGISTER_MODE_MISSING };
  if (ioctl(u, UFFDIO_REGISTER, &reg)) { perror("reg"); return 1; }
  pthread_t w; pthread_create(&w, NULL, writer, NULL); usleep(200000);
  struct io_uring ring; io_uring_queue_init(64, &ring, 0);
  double t0 = now();
  for (int k = 0; k < 20; k++) { struct io_uring_sqe *s = io_uring_get_sqe(&ring); io_uring_prep_fallocate(s, mfd, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE, k*4096, 4096); s->user_data = 100+k; }
  io_uring_submit(&ring);
  fprintf(stderr, "submitted stuck in %.3f ms\n", (now()-t0)*1e3);
  for (int i=0;i<8;i++){ struct io_uring_sqe *s = io_uring_get_sqe(&ring); io_uring_prep_fallocate(s, m2[i], FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE, 0, 4096); s->user_data = i; }
  io_uring_submit(&ring);
  int got = 0;
  for (int i=0;i<8;i++){ struct io_uring_cqe *c; struct __kernel_timespec ts = { .tv_sec = 3 }; if (io_uring_wait_cqe_timeout(&ring,&c,&ts)) break; got++; fprintf(stderr,"cqe %llu res %d at %.3f ms\n", (unsigned long long)c->user_data, c->res, (now()-t0)*1e3); io_uring_cqe_seen(&ring,c);}
  fprintf(stderr, "%d of the other 8 memfds' punches done in 3 s; io-wq workers: ", got); fflush(stderr);
  system("ps -L -o comm=,wchan:20= -p $PPID | grep iou-wrk | sort | uniq -c >&2");
  fprintf(stderr, "resolving\n");
  struct uffdio_zeropage z = { .range = { (unsigned long)buf, 4096 } }; ioctl(u, UFFDIO_ZEROPAGE, &z);
  for (int i=0;i<20+8-got;i++){ struct io_uring_cqe *c; io_uring_wait_cqe(&ring,&c); if(i==0||i==27-got) fprintf(stderr,"cqe %llu res %d at %.3f ms\n", (unsigned long long)c->user_data, c->res, (now()-t0)*1e3); io_uring_cqe_seen(&ring,c);}
  pthread_join(w, NULL); return 0; }
