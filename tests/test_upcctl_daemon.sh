#!/bin/sh
# SPDX-License-Identifier: MIT
# upcctl daemon status (tools/upcctl-daemon.c) against a upcd of its own:
# upcd --foreground --socket in a temporary directory, stopped with
# SIGTERM at the end (SIGKILL if the test dies first).  Checks the text it
# prints, the ways to name the socket (--socket PATH, --socket=PATH,
# $UPC_SOCKET), exit status 3 and the message when no daemon runs (no
# socket: ENOENT; a socket left by a killed daemon: ECONNREFUSED), and
# usage errors.  Skips where upcache cannot create a cache (upcctl probe).
. "$(dirname "$0")/sh-lib.sh"

UPCCTL=$B/tools/upcctl
UPCD=$B/daemon/upcd
W=$(mktemp -d "${TMPDIR:-/tmp}/upc-upcctl.XXXXXX") || exit 99
S=$W/upcd.sock
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
unset UPC_SOCKET

# expect NAME STATUS CMD...: CMD exits STATUS; its output in $W/out, $W/err.
expect() {
	name=$1 want=$2
	shift 2
	"$@" >"$W/out" 2>"$W/err"
	got=$?
	if [ "$got" = "$want" ]; then
		return 0
	fi
	fail "$name" "exit status $got, not $want: $*"
	sed 's/^/  stdout: /' "$W/out"
	sed 's/^/  stderr: /' "$W/err"
	return 1
}

# has NAME FILE TEXT: FILE has the line TEXT.
has() {
	grep -qxF "$3" "$2" && return 0
	fail "$1" "no line \"$3\" in:"
	sed 's/^/  /' "$2"
	return 1
}

# start: upcd on $S; waits until it answers (20 s at most).
start() {
	"$UPCD" --foreground --socket "$S" &
	pid=$!
	i=0
	while [ $i -lt 200 ]; do
		"$UPCCTL" daemon status --socket "$S" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

if ! "$UPCCTL" probe --json >/dev/null 2>&1; then
	skip all "upcache cannot create a cache here (upcctl probe): upcd cannot start"
	finish
fi

expect usage 2 "$UPCCTL" daemon && expect usage 2 "$UPCCTL" daemon start &&
	expect usage 2 "$UPCCTL" daemon status --bogus &&
	expect usage 0 "$UPCCTL" daemon status --help && pass usage

# No daemon, no socket: ENOENT.
expect no_daemon 3 "$UPCCTL" daemon status --socket "$S" &&
	has no_daemon "$W/err" "upcctl: no upcd is running on $S (No such file or directory)" &&
	[ ! -s "$W/out" ] && pass no_daemon

if ! start; then
	fail start "upcd --foreground --socket $S did not answer within 20 s"
	finish
fi

expect status 0 "$UPCCTL" daemon status --socket "$S" &&
	has status "$W/out" "socket $S" && has status "$W/out" "pid $pid" &&
	has status "$W/out" "clients 1" && has status "$W/out" "disconnected-for-errors 0" &&
	grep -qE '^tracking (sync|async)$' "$W/out" && grep -qE '^mem-limit [0-9]+$' "$W/out" &&
	[ ! -s "$W/err" ] && pass status

expect socket_eq 0 "$UPCCTL" daemon status --socket="$S" && has socket_eq "$W/out" "pid $pid" &&
	pass socket_eq
expect env 0 env UPC_SOCKET="$S" "$UPCCTL" daemon status && has env "$W/out" "socket $S" &&
	has env "$W/out" "pid $pid" && pass env

# SIGTERM: upcd exits 0 and removes its socket; then there is no daemon.
kill -TERM "$pid"
wait "$pid"
st=$?
pid=
if [ "$st" = 0 ] && [ ! -e "$S" ]; then
	pass sigterm
else
	fail sigterm "upcd exit status $st, socket $(test -e "$S" && echo left || echo removed)"
fi
expect stopped 3 "$UPCCTL" daemon status --socket "$S" && pass stopped

# A daemon killed outright leaves its socket: ECONNREFUSED, still "no upcd".
if start; then
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	pid=
	if [ -S "$S" ]; then
		expect stale_socket 3 "$UPCCTL" daemon status --socket "$S" &&
			has stale_socket "$W/err" "upcctl: no upcd is running on $S (Connection refused)" &&
			pass stale_socket
	else
		fail stale_socket "no socket left by the killed upcd"
	fi
else
	fail stale_socket "upcd did not start a second time"
fi
finish
