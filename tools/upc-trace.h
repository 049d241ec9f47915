/* SPDX-License-Identifier: MIT */
/*
 * upc-trace.h - the events upc-trace's BPF programs (upc-trace.bpf.c) put in
 * the ring buffer for the program (upc-trace.c).  Shared by both sides.
 */
#ifndef UPC_TRACE_H
#define UPC_TRACE_H

#ifdef __bpf__
typedef __u64 upc_u64;
typedef __u32 upc_u32;
#else
#include <stdint.h>
typedef uint64_t upc_u64;
typedef uint32_t upc_u32;
#endif

/* One per USDT probe of lib/usdt.h, then the kernel's tracepoints. */
enum upc_ev_type {
	EV_FAULT = 1,
	EV_FAULT_DONE,
	EV_FILL_SUBMIT,
	EV_FILL_DONE,
	EV_DIRTY,
	EV_PROTECT,
	EV_CLEAN,
	EV_WB_SUBMIT,
	EV_WB_DONE,
	EV_TEARDOWN,
	EV_UNMAP,
	EV_EVICT,
	EV_PIN,
	EV_UNPIN,
	EV_ERROR,
	EV_BACKTRACE,
	EV_FILE_RELEASE,
	EV_TLB_FLUSH,		/* tlb:tlb_flush: reason, pages */
	EV_URING_SUBMIT,	/* io_uring:io_uring_submit_req: req, opcode, user_data */
	EV_URING_COMPLETE,	/* io_uring:io_uring_complete: req, res, user_data */
	EV_MAX
};

#define UPC_EV_ARGS	6
#define UPC_EV_FRAMES	16
#define UPC_EV_STR	32

struct upc_ev {
	upc_u64 ts;		/* CLOCK_MONOTONIC, ns */
	upc_u32 pid, tid;		/* tgid and thread of the task that fired it */
	upc_u32 type;		/* enum upc_ev_type */
	upc_u32 nargs;
	upc_u64 args[UPC_EV_ARGS];
	char comm[16];
};

/* EV_ERROR carries the probe's string; EV_BACKTRACE the frames. */
struct upc_ev_ext {
	struct upc_ev h;
	char str[UPC_EV_STR];
	upc_u64 ips[UPC_EV_FRAMES];
};

#endif /* UPC_TRACE_H */
