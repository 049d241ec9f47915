/* SPDX-License-Identifier: MIT */
#ifndef UPC_TRACE_SYM_H
#define UPC_TRACE_SYM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Write "function+0xoff (object)" for @ip in process @pid; a return address is looked up at ip - 1. */
int sym_name(int pid, uint64_t ip, bool ret_addr, char *buf, size_t len);
/* Read /proc/@pid/maps again (a library was loaded since); keep the old map if it is gone. */
void sym_refresh(int pid);
/* Read /proc/@pid/maps if it was never read. */
void sym_load(int pid);

#endif
