// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * upc-trace.bpf.c - the BPF side of upc-trace(8): one program per USDT probe
 * of libupcache (lib/usdt.h) and per kernel tracepoint it follows
 * (tlb:tlb_flush, io_uring:io_uring_submit_req, io_uring:io_uring_complete).
 * Each copies its arguments into a ring buffer; all the logic (timeline,
 * summary, the invariant checker) is in user space, in upc-trace.c.
 *
 * Which processes: every one (filter == 0), or those in @tgids (filter ==
 * 1), which follows forks of a traced process, so that "upc-trace -- CMD"
 * sees CMD's children too (Criterion runs each test in one).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>

#include "upc-trace.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

const volatile int filter = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} tgids SEC(".maps");

/* io_uring requests submitted by a traced task: their completion may run elsewhere. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} uring_reqs SEC(".maps");

/* [0]: events lost because the ring buffer was full. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/*
 * Wake the reader only once a megabyte is waiting (it also polls every
 * 100 ms): a wakeup per event would make the traced threads switch to the
 * tracer and back all the time, and show up in the trace as TLB flushes.
 */
static __always_inline void submit(void *e)
{
	long flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > (1 << 20) ? BPF_RB_FORCE_WAKEUP
										 : BPF_RB_NO_WAKEUP;

	bpf_ringbuf_submit(e, flags);
}

static __always_inline bool traced(__u32 tgid)
{
	return !filter || bpf_map_lookup_elem(&tgids, &tgid);
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void *reserve(__u64 size, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct upc_ev *e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e) {
		count_lost();
		return NULL;
	}
	e->ts = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->type = type;
	e->nargs = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

static __always_inline void usdt_args(struct pt_regs *ctx, struct upc_ev *e)
{
	int n = bpf_usdt_arg_cnt(ctx);

	for (int i = 0; i < UPC_EV_ARGS; i++) {
		long v = 0;

		if (i < n)
			bpf_usdt_arg(ctx, i, &v);
		e->args[i] = v;
	}
	e->nargs = n < 0 ? 0 : n;
}

static __always_inline int emit(struct pt_regs *ctx, __u32 type)
{
	struct upc_ev *e;

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;
	e = reserve(sizeof(*e), type);
	if (!e)
		return 0;
	usdt_args(ctx, e);
	submit(e);
	return 0;
}

#define UPC_USDT(name, type) \
	SEC("usdt") int on_##name(struct pt_regs *ctx) { return emit(ctx, type); }

UPC_USDT(fault, EV_FAULT)
UPC_USDT(fault_done, EV_FAULT_DONE)
UPC_USDT(fill_submit, EV_FILL_SUBMIT)
UPC_USDT(fill_done, EV_FILL_DONE)
UPC_USDT(dirty, EV_DIRTY)
UPC_USDT(protect, EV_PROTECT)
UPC_USDT(clean, EV_CLEAN)
UPC_USDT(wb_submit, EV_WB_SUBMIT)
UPC_USDT(wb_done, EV_WB_DONE)
UPC_USDT(teardown, EV_TEARDOWN)
UPC_USDT(unmap, EV_UNMAP)
UPC_USDT(evict, EV_EVICT)
UPC_USDT(pin, EV_PIN)
UPC_USDT(unpin, EV_UNPIN)
UPC_USDT(file_release, EV_FILE_RELEASE)

/* error(what, err, file, ino, off): what is a string in the library. */
SEC("usdt") int on_error(struct pt_regs *ctx)
{
	struct upc_ev_ext *e;
	long what = 0;

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;
	e = reserve(sizeof(*e), EV_ERROR);
	if (!e)
		return 0;
	usdt_args(ctx, &e->h);
	bpf_usdt_arg(ctx, 0, &what);
	if (bpf_probe_read_user_str(e->str, sizeof(e->str), (const void *)what) < 0)
		e->str[0] = 0;
	submit(e);
	return 0;
}

/* backtrace(id, tid, nframes, ips): ips points to UPC_EV_FRAMES words in the library. */
SEC("usdt") int on_backtrace(struct pt_regs *ctx)
{
	struct upc_ev_ext *e;
	long ips = 0;

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;
	e = reserve(sizeof(*e), EV_BACKTRACE);
	if (!e)
		return 0;
	usdt_args(ctx, &e->h);
	e->str[0] = 0;
	bpf_usdt_arg(ctx, 3, &ips);
	if (bpf_probe_read_user(e->ips, sizeof(e->ips), (const void *)ips) < 0)
		__builtin_memset(e->ips, 0, sizeof(e->ips));
	/* Now: the reader names the frames from the process's maps, while it lives. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* ------------------------------------------------------------ kernel */

SEC("tp_btf/tlb_flush")
int BPF_PROG(on_tlb_flush, int reason, unsigned long pages)
{
	struct upc_ev *e;

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;
	e = reserve(sizeof(*e), EV_TLB_FLUSH);
	if (!e)
		return 0;
	e->args[0] = reason;
	e->args[1] = pages;
	e->nargs = 2;
	submit(e);
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(on_uring_submit, struct io_kiocb *req)
{
	__u64 key = (__u64)req;
	__u8 one = 1;
	struct upc_ev *e;

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;
	bpf_map_update_elem(&uring_reqs, &key, &one, BPF_ANY);
	e = reserve(sizeof(*e), EV_URING_SUBMIT);
	if (!e)
		return 0;
	e->args[0] = key;
	e->args[1] = BPF_CORE_READ(req, opcode);
	e->args[2] = BPF_CORE_READ(req, cqe.user_data);
	e->nargs = 3;
	submit(e);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(on_uring_complete, void *ctx_, void *req, struct io_uring_cqe *cqe)
{
	__u64 key = (__u64)req;
	struct upc_ev *e;

	if (!bpf_map_lookup_elem(&uring_reqs, &key))
		return 0;
	bpf_map_delete_elem(&uring_reqs, &key);
	e = reserve(sizeof(*e), EV_URING_COMPLETE);
	if (!e)
		return 0;
	e->args[0] = key;
	e->args[1] = (__u64)(__s64)BPF_CORE_READ(cqe, res);
	e->args[2] = BPF_CORE_READ(cqe, user_data);
	e->nargs = 3;
	submit(e);
	return 0;
}

/* Follow the traced processes' children; forget processes that exit. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = bpf_get_current_pid_tgid() >> 32;
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u8 one = 1;

	if (filter && ctgid != ptgid && bpf_map_lookup_elem(&tgids, &ptgid))
		bpf_map_update_elem(&tgids, &ctgid, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_proc_exit, struct task_struct *p)
{
	__u32 pid = BPF_CORE_READ(p, pid), tgid = BPF_CORE_READ(p, tgid);

	if (filter && pid == tgid)
		bpf_map_delete_elem(&tgids, &tgid);
	return 0;
}
