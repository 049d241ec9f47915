/* SPDX-License-Identifier: MIT */
/* upcctl's subcommands that live in their own files. */
#ifndef UPCCTL_H
#define UPCCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* upcctl-stats.c: argv holds the arguments after the subcommand's name. */
int upcctl_stats(int argc, char **argv);
int upcctl_top(int argc, char **argv);
/* upcctl-daemon.c: "daemon status|clients|stats|drop|sync|top ..." */
int upcctl_daemon(int argc, char **argv);

/* upcctl-stats.c, shared with upcctl-daemon.c: how counters are printed */
struct upc_stats;
void upcctl_stats_text(const struct upc_stats *st, int64_t ra_hits, const char *note);
void upcctl_stats_json_fields(const struct upc_stats *st);
void upcctl_json_str(const char *s);
const char *upcctl_mib(uint64_t bytes, char *buf, size_t len);
/* top's keyboard on a terminal: raw mode (true: "q quits"), a wait that sees q, and back */
bool upcctl_tty_raw(void);
bool upcctl_tty_wait(double delay);
void upcctl_tty_restore(void);

#endif
