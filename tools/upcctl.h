/* SPDX-License-Identifier: MIT */
/* upcctl's subcommands that live in their own files. */
#ifndef UPCCTL_H
#define UPCCTL_H

/* upcctl-stats.c: argv holds the arguments after the subcommand's name. */
int upcctl_stats(int argc, char **argv);
int upcctl_top(int argc, char **argv);
/* upcctl-daemon.c: "daemon status [--socket PATH]" */
int upcctl_daemon(int argc, char **argv);

#endif
